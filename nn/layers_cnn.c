/* layers_cnn.c: convolution and pooling layers, PyTorch's nn.Conv2d,
 * nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d and
 * nn.AdaptiveAvgPool2d(1). The arithmetic is the engine's ops (ad_conv2d,
 * ad_max_pool2d, ...), whose backward the tape runs; this file holds the
 * parameters, PyTorch's initialisation and the checks that name the layer.
 * A padding_mode other than zeros pads the input first (nn_pad_spatial,
 * padding.c) and convolves without padding, as PyTorch's _conv_forward.
 *
 * Initialisation (PyTorch's reset_parameters): weight and bias uniform in
 * [-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = weight.shape[1] * kh * kw
 * (kaiming_uniform with a = sqrt(5) gives that bound for the weight). */
#include "nn_internal.h"

#include <math.h>

#define CONV_MAX_SIZE (INT64_C(1) << 40) /* the ops' limit on stride, padding, dilation */

/* ---------------------------------------------------------- convolution */

typedef struct conv_state {
  bool transpose;
  int64_t in, out, kh, kw;
  ad_conv_opts o;
  nn_padding_mode mode; /* not zeros: x padded by pad (F.pad's order), o unpadded */
  int64_t pad[4];
  bool same;        /* for the description: 'same' padding in mode */
  int64_t shown[2]; /* for the description: the (h, w) padding given */
  ad_tensor *w, *b; /* b NULL without bias */
} conv_state;

static ad_tensor *conv_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)training;
  conv_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  bool one = x->ndim == 3 && x->shape[0] == s->in; /* unbatched [C, H, W], as PyTorch takes */
  if (!one && (x->ndim != 4 || x->shape[1] != s->in)) {
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be [N, %lld, H, W] or [%lld, H, W]", who,
                 ad_shape_str(x, a, sizeof a), (long long)s->in, (long long)s->in);
    return NULL;
  }
  if (one) { /* a batch of one, viewed */
    int64_t b[4] = {1, x->shape[0], x->shape[1], x->shape[2]};
    x = ad_reshape(ctx, x, 4, b);
  }
  if (s->mode != NN_PADDING_ZEROS)
    x = nn_pad_spatial(ctx, nn_layer_who(l, who, sizeof who), x, 2, s->pad, s->mode);
  ad_tensor *y = !x             ? NULL
                 : s->transpose ? ad_conv_transpose2d(ctx, x, s->w, s->b, &s->o)
                                : ad_conv2d(ctx, x, s->w, s->b, &s->o);
  return one && y ? ad_reshape(ctx, y, 3, y->shape + 1) : y;
}

static void conv_free(nn_layer *l) {
  conv_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* PyTorch's Conv2d / ConvTranspose2d extra_repr: channels, kernel_size and
 * stride always, the rest when not their defaults. */
static void conv_describe(const nn_layer *l, nn_text *t) {
  const conv_state *s = nn_layer_state(l);
  const ad_conv_opts *o = &s->o;
  int64_t st[2], di[2];
  for (int k = 0; k < 2; k++) {
    st[k] = o->stride[k] ? o->stride[k] : 1;
    di[k] = o->dilation[k] ? o->dilation[k] : 1;
  }
  nn_text_add(t, "%lld, %lld, kernel_size=(%lld, %lld), stride=(%lld, %lld)", (long long)s->in,
              (long long)s->out, (long long)s->kh, (long long)s->kw, (long long)st[0],
              (long long)st[1]);
  if (s->same)
    nn_text_add(t, ", padding=same");
  else if (s->shown[0] || s->shown[1])
    nn_text_add(t, ", padding=(%lld, %lld)", (long long)s->shown[0], (long long)s->shown[1]);
  if (di[0] != 1 || di[1] != 1)
    nn_text_add(t, ", dilation=(%lld, %lld)", (long long)di[0], (long long)di[1]);
  if (o->output_padding[0] || o->output_padding[1])
    nn_text_add(t, ", output_padding=(%lld, %lld)", (long long)o->output_padding[0],
                (long long)o->output_padding[1]);
  if (o->groups != 1) nn_text_add(t, ", groups=%lld", (long long)o->groups);
  if (!s->b) nn_text_add(t, ", bias=False");
  if (s->mode != NN_PADDING_ZEROS)
    nn_text_add(t, ", padding_mode=%s", nn_padding_mode_name(s->mode));
}

static const nn_layer_ops conv_ops = {conv_forward, conv_free, conv_describe};

/* nn_param_new with PyTorch's default for NN_INIT_DEFAULT: uniform within
 * +-bound. */
static ad_tensor *conv_param(nn_params *list, const char *fn, const char *name, ad_dtype dtype,
                             int ndim, const int64_t *shape, nn_init init, double bound,
                             ad_rng *rng) {
  if (init.kind == NN_INIT_DEFAULT) init = nn_init_make(NN_INIT_UNIFORM, -bound, bound);
  return nn_param_new(list, fn, name, dtype, ndim, shape, init, rng);
}

static nn_layer *conv_new(ad_ctx *ctx, const char *fn, bool transpose, int64_t in, int64_t out,
                          int64_t kh, int64_t kw, ad_rng *rng, const nn_conv2d_opts *opts,
                          nn_padding_mode mode) {
  if (!ctx) return NULL;
  const char *kind = transpose ? "conv_transpose2d" : "conv2d";
  nn_conv2d_opts o = {0};
  if (opts) o = *opts;
  if (!nn_padding_mode_name(mode) || (transpose && mode != NN_PADDING_ZEROS)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: padding_mode %d is not %s", kind, (int)mode,
                 transpose ? "zeros, the only one PyTorch's ConvTranspose2d takes"
                           : "one of zeros, reflect, replicate, circular");
    return NULL;
  }
  int64_t groups = o.groups ? o.groups : 1;
  if (in < 1 || out < 1 || kh < 1 || kw < 1 || groups < 1 || in % groups || out % groups) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: channels %lld -> %lld, kernel %lldx%lld and groups %lld: each must be >= 1 "
                 "and groups must divide both channel counts",
                 kind, (long long)in, (long long)out, (long long)kh, (long long)kw,
                 (long long)groups);
    return NULL;
  }
  if (o.dtype != AD_F32 && o.dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: parameters must be float, got %s", kind,
                 ad_dtype_name(o.dtype));
    return NULL;
  }
  /* what the op would refuse at the first forward, and what PyTorch's
   * constructors refuse, said now */
  const char *bad = NULL;
  for (int k = 0; k < 2 && !bad; k++) {
    int64_t st = o.stride[k] ? o.stride[k] : 1, di = o.dilation[k] ? o.dilation[k] : 1;
    if (o.stride[k] < 0 || o.dilation[k] < 0)
      bad = "stride and dilation must be >= 1 (0 means 1)";
    else if (o.padding[k] < 0 || o.output_padding[k] < 0)
      bad = "padding and output_padding must be >= 0";
    else if (st > CONV_MAX_SIZE || di > CONV_MAX_SIZE || o.padding[k] > CONV_MAX_SIZE)
      bad = "stride, dilation and padding must be at most 2^40";
    else if (o.same && mode != NN_PADDING_ZEROS && (k ? kw : kh) - 1 > CONV_MAX_SIZE / di)
      bad = "padding 'same' (dilation x (kernel - 1)) must be at most 2^40";
    else if (!transpose && o.output_padding[k])
      bad = "output_padding is for conv_transpose2d only";
    else if (transpose && o.output_padding[k] >= (st > di ? st : di))
      bad = "output_padding must be smaller than the stride or the dilation";
    else if (o.same && (transpose || st != 1))
      bad = transpose ? "padding 'same' is for conv2d only" : "padding 'same' needs stride 1";
  }
  if (bad) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: %s (stride %lldx%lld, padding %lldx%lld, dilation %lldx%lld, "
                 "output_padding %lldx%lld%s)",
                 kind, bad, (long long)o.stride[0], (long long)o.stride[1], (long long)o.padding[0],
                 (long long)o.padding[1], (long long)o.dilation[0], (long long)o.dilation[1],
                 (long long)o.output_padding[0], (long long)o.output_padding[1],
                 o.same ? ", same" : "");
    return NULL;
  }
  conv_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  *s = (conv_state){.transpose = transpose, .in = in, .out = out, .kh = kh, .kw = kw};
  for (int k = 0; k < 2; k++) {
    s->o.stride[k] = o.stride[k];
    s->o.dilation[k] = o.dilation[k];
    s->o.padding[2 * k] = s->o.padding[2 * k + 1] = o.padding[k];
    s->o.output_padding[k] = o.output_padding[k];
  }
  s->o.groups = groups;
  s->o.same = o.same;
  s->same = o.same;
  s->shown[0] = o.padding[0];
  s->shown[1] = o.padding[1];
  s->mode = mode;
  if (mode != NN_PADDING_ZEROS) { /* PyTorch's _reversed_padding_repeated_twice */
    for (int k = 0; k < 2; k++) {
      int64_t lo = o.padding[k], hi = o.padding[k];
      if (o.same) { /* the total split as PyTorch: the extra one after */
        int64_t total = (o.dilation[k] ? o.dilation[k] : 1) * ((k ? kw : kh) - 1);
        lo = total / 2;
        hi = total - lo;
      }
      s->pad[2 * (1 - k)] = lo; /* (left, right, top, bottom) */
      s->pad[2 * (1 - k) + 1] = hi;
      s->o.padding[2 * k] = s->o.padding[2 * k + 1] = 0;
    }
    s->o.same = false;
  }
  nn_layer *l = nn_layer_new_ext(ctx, kind, &conv_ops, s);
  if (!l) {
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  /* PyTorch's layouts: Conv2d [out, in/groups, kh, kw], ConvTranspose2d
   * [in, out/groups, kh, kw]; fan_in is dim 1 times the kernel */
  int64_t ws[4] = {transpose ? in : out, (transpose ? out : in) / groups, kh, kw}, bs[1] = {out};
  double bound = 1.0 / sqrt((double)ws[1] * (double)kh * (double)kw); /* sizes checked below */
  nn_params *p = nn_layer_params(l);
  bool ok = (s->w = conv_param(p, fn, "weight", o.dtype, 4, ws, o.weight_init, bound, rng));
  if (ok && !o.no_bias)
    ok = (s->b = conv_param(p, fn, "bias", o.dtype, 1, bs, o.bias_init, bound, rng));
  if (!ok) {
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

nn_layer *nn_conv2d_new(ad_ctx *ctx, int64_t in, int64_t out, int64_t kh, int64_t kw, ad_rng *rng,
                        const nn_conv2d_opts *opts) {
  return conv_new(ctx, "nn_conv2d_new", false, in, out, kh, kw, rng, opts, NN_PADDING_ZEROS);
}

nn_layer *nn_conv2d_new_ext(ad_ctx *ctx, int64_t in, int64_t out, int64_t kh, int64_t kw,
                            ad_rng *rng, const nn_conv2d_opts_ext *opts) {
  return conv_new(ctx, "nn_conv2d_new_ext", false, in, out, kh, kw, rng, opts ? &opts->base : NULL,
                  opts ? opts->padding_mode : NN_PADDING_ZEROS);
}

nn_layer *nn_conv_transpose2d_new(ad_ctx *ctx, int64_t in, int64_t out, int64_t kh, int64_t kw,
                                  ad_rng *rng, const nn_conv2d_opts *opts) {
  return conv_new(ctx, "nn_conv_transpose2d_new", true, in, out, kh, kw, rng, opts,
                  NN_PADDING_ZEROS);
}

nn_layer *nn_conv_transpose2d_new_ext(ad_ctx *ctx, int64_t in, int64_t out, int64_t kh, int64_t kw,
                                      ad_rng *rng, const nn_conv2d_opts_ext *opts) {
  return conv_new(ctx, "nn_conv_transpose2d_new_ext", true, in, out, kh, kw, rng,
                  opts ? &opts->base : NULL, opts ? opts->padding_mode : NN_PADDING_ZEROS);
}

/* -------------------------------------------------------------- pooling */

typedef enum pool_kind { POOL_MAX, POOL_AVG, POOL_GLOBAL_AVG } pool_kind;

typedef struct pool_state {
  pool_kind kind;
  int64_t kh, kw;
  ad_pool2d_opts o;
} pool_state;

/* PyTorch's pooled length of an axis of n (dilation 1), < 1 when too small */
static int64_t pool_out_len(int64_t n, int64_t k, int64_t st, int64_t p, bool ceil_mode) {
  int64_t span = n + 2 * p - k;
  if (span < 0) return 0;
  int64_t len = (span + (ceil_mode ? st - 1 : 0)) / st + 1;
  return ceil_mode && (len - 1) * st >= n + p ? len - 1 : len;
}

/* Max pooling with overlapping windows: each window's argmax found once
 * (ad_max_pool2d_indices, the op's own rule: the first maximum, or the
 * last NaN), then x read there by the op pool_gather (as
 * ad_adaptive_max_pool2d and ad_max_pool3d do). The values are
 * ad_max_pool2d's bits and the gradient is pool_scatter, dy added in
 * window order straight into a leaf x's gradient (its gradient is the
 * gather again), where max_pool2d's backward would search every window
 * again (as PyTorch keeps its indices; 7.6x its backward for 3x3, stride
 * 2, padding 1, before any gather), and a gather along the flattened
 * plane made x's gradient in a temporary (zeros, a scatter_add, a copy):
 * 2x PyTorch's. Only with dilation 1 (every window then holds an element
 * of the input) on an input the op takes, with planes that the int32
 * indices reach, and when the result will carry a gradient (grad mode on
 * and x requiring one: else the indices' pass is wasted, and max_pool2d
 * alone gives the same values in one pass, 10% faster); NULL when it does
 * not apply (*used false). */
static ad_tensor *max_pool_gathered(ad_ctx *ctx, ad_tensor *x, const pool_state *s, bool *used) {
  const ad_pool2d_opts *o = &s->o;
  int64_t sh = o->stride[0] ? o->stride[0] : s->kh, sw = o->stride[1] ? o->stride[1] : s->kw;
  *used = false;
  const int64_t lim = INT64_C(1) << 30; /* the op's limit on kernel and stride */
  bool attrs_ok = s->kh <= lim && s->kw <= lim && sh >= 1 && sw >= 1 && sh <= lim && sw <= lim &&
                  o->padding[0] >= 0 && o->padding[1] >= 0 && o->padding[0] <= s->kh / 2 &&
                  o->padding[1] <= s->kw / 2 && (o->dilation[0] == 0 || o->dilation[0] == 1) &&
                  (o->dilation[1] == 0 || o->dilation[1] == 1);
  if (!attrs_ok || (sh >= s->kh && sw >= s->kw) || !x || !ad_grad_enabled(ctx) ||
      !ad_tensor_requires_grad(x) || (x->dtype != AD_F32 && x->dtype != AD_F64) ||
      (x->ndim != 3 && x->ndim != 4))
    return NULL;
  int nd = x->ndim;
  int64_t h = x->shape[nd - 2], w = x->shape[nd - 1];
  if (h < 1 || w < 1 || h > INT32_MAX / w) return NULL;
  int64_t oh = pool_out_len(h, s->kh, sh, o->padding[0], o->ceil_mode);
  int64_t ow = pool_out_len(w, s->kw, sw, o->padding[1], o->ceil_mode);
  if (oh < 1 || ow < 1) return NULL;
  *used = true;
  ad_tensor *in[2] = {x, ad_max_pool2d_indices(ctx, x, s->kh, s->kw, o)};
  return in[1] ? ad_op_apply(ctx, ad_op_find(ctx, "pool_gather"), 2, in, &(ad_attrs){.axis = -2})
               : NULL;
}

static ad_tensor *pool_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)training;
  pool_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  bool used;
  ad_tensor *y;
  switch (s->kind) {
  case POOL_MAX:
    y = max_pool_gathered(ctx, x, s, &used);
    return used ? y : ad_max_pool2d(ctx, x, s->kh, s->kw, &s->o);
  case POOL_AVG:
    return ad_avg_pool2d(ctx, x, s->kh, s->kw, &s->o);
  case POOL_GLOBAL_AVG:
    break;
  }
  return ad_global_avg_pool2d(ctx, x);
}

static void pool_free(nn_layer *l) {
  pool_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* An int when both sides agree ("2"), as PyTorch prints what it was given
 * in the common case, else a pair ("(2, 3)"). */
static void pool_pair(nn_text *t, const char *name, int64_t h, int64_t w) {
  if (h == w)
    nn_text_add(t, "%s=%lld", name, (long long)h);
  else
    nn_text_add(t, "%s=(%lld, %lld)", name, (long long)h, (long long)w);
}

/* PyTorch's MaxPool2d and AvgPool2d extra_repr (with ceil_mode and
 * count_include_pad also for the average when they are not the
 * defaults); the global average is AdaptiveAvgPool2d(output_size=1). */
static void pool_describe(const nn_layer *l, nn_text *t) {
  const pool_state *s = nn_layer_state(l);
  const ad_pool2d_opts *o = &s->o;
  if (s->kind == POOL_GLOBAL_AVG) {
    nn_text_add(t, "output_size=1");
    return;
  }
  pool_pair(t, "kernel_size", s->kh, s->kw);
  pool_pair(t, ", stride", o->stride[0] ? o->stride[0] : s->kh,
            o->stride[1] ? o->stride[1] : s->kw);
  pool_pair(t, ", padding", o->padding[0], o->padding[1]);
  if (s->kind == POOL_MAX) {
    pool_pair(t, ", dilation", o->dilation[0] ? o->dilation[0] : 1,
              o->dilation[1] ? o->dilation[1] : 1);
    nn_text_add(t, ", ceil_mode=%s", nn_py_bool(o->ceil_mode));
    return;
  }
  if (o->ceil_mode) nn_text_add(t, ", ceil_mode=True");
  if (o->exclude_pad) nn_text_add(t, ", count_include_pad=False");
}

static const nn_layer_ops pool_ops = {pool_forward, pool_free, pool_describe};

ad_tensor *nn_pool2d_layer_indices(nn_layer *l, ad_tensor *x, bool *mine) {
  const pool_state *s = nn_layer_runs(l, &pool_ops) ? nn_layer_state(l) : NULL;
  *mine = s && s->kind == POOL_MAX;
  return *mine ? ad_max_pool2d_indices(nn_layer_ctx(l), x, s->kh, s->kw, &s->o) : NULL;
}

static nn_layer *pool_new(ad_ctx *ctx, pool_kind kind, const char *name, int64_t kh, int64_t kw,
                          const ad_pool2d_opts *opts) {
  if (!ctx) return NULL;
  if (kind != POOL_GLOBAL_AVG && (kh < 1 || kw < 1)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: kernel %lldx%lld must be at least 1x1", name, (long long)kh,
                 (long long)kw);
    return NULL;
  }
  pool_state s = {.kind = kind, .kh = kh, .kw = kw};
  if (opts) s.o = *opts;
  return nn_layer_new_copy(ctx, name, &pool_ops, &s, sizeof s);
}

nn_layer *nn_max_pool2d_new(ad_ctx *ctx, int64_t kh, int64_t kw, const ad_pool2d_opts *opts) {
  return pool_new(ctx, POOL_MAX, "max_pool2d", kh, kw, opts);
}

nn_layer *nn_avg_pool2d_new(ad_ctx *ctx, int64_t kh, int64_t kw, const ad_pool2d_opts *opts) {
  return pool_new(ctx, POOL_AVG, "avg_pool2d", kh, kw, opts);
}

nn_layer *nn_global_avg_pool2d_new(ad_ctx *ctx) {
  return pool_new(ctx, POOL_GLOBAL_AVG, "global_avg_pool2d", 1, 1, NULL);
}
