/* layers_cnn1d.c: PyTorch's nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d,
 * nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d and
 * nn.AdaptiveMaxPool2d. Composites of public ops
 * (ad_conv1d, ad_max_pool2d / ad_avg_pool2d over a [N, C, 1, L] view,
 * ad_global_avg_pool2d, ad_matmul), so every gradient is the tape's and
 * differentiable to any order; this file holds the parameters, PyTorch's
 * initialisation and the checks that name the layer.
 *
 * Conv1d's initialisation is Conv2d's (layers_cnn.c): weight and bias
 * uniform within 1/sqrt(fan_in), fan_in = in/groups * kernel_size.
 * A padding_mode other than zeros pads the input first (nn_pad_spatial,
 * padding.c) and convolves without padding, as PyTorch's _conv_forward.
 *
 * Adaptive average pooling: output i of an axis of length L pooled to n
 * averages x[start, end), start = floor(i L / n), end = ceil((i + 1) L / n)
 * (PyTorch's windows; they overlap when n does not divide L). Three ways,
 * each exact in its windows:
 *   n = 1 on every axis  ad_global_avg_pool2d (the same bits as the
 *                        global average pooling layer);
 *   n divides L on each  ad_avg_pool2d with kernel = stride = L / n (the
 *                        windows are then disjoint and of equal size);
 *   otherwise            ad_adaptive_avg_pool2d: one op, each window's
 *                        sum (in double) divided by its size, so an inf
 *                        or NaN reaches only its own windows, as in
 *                        PyTorch.
 *
 * Adaptive max pooling (nn.AdaptiveMaxPool1d/2d) takes the same windows:
 * ad_max_pool2d with kernel = stride = L / n when n divides each axis,
 * else ad_adaptive_max_pool2d; both send the gradient to the first maximum
 * in row-major order, or to the last NaN, as PyTorch's adaptive max
 * pooling does. */
#include "nn_internal.h"

#include <math.h>

/* The ops' limits on kernel, stride and dilation of a pooling (2^30), and
 * on a convolution's stride, dilation and padding (2^40): larger values are
 * refused when the layer is made. */
#define POOL_MAX_SIZE (INT64_C(1) << 30)
#define CONV_MAX_SIZE (INT64_C(1) << 40)
#define I32_MAX       INT64_C(2147483647)

/* ---------------------------------------------------------------- conv1d */

typedef struct conv1d_state {
  int64_t in, out, k;
  ad_conv1d_opts o;
  nn_padding_mode mode; /* not zeros: x padded by pad (left, right), o unpadded */
  int64_t pad[2];
  bool same;        /* for the description: 'same' padding in mode */
  int64_t shown;    /* for the description: the padding given */
  ad_tensor *w, *b; /* b NULL without bias */
} conv1d_state;

static ad_tensor *conv1d_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)training;
  conv1d_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  bool one = x->ndim == 2 && x->shape[0] == s->in; /* unbatched [C, L], as PyTorch takes */
  if (!one && (x->ndim != 3 || x->shape[1] != s->in)) {
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be [N, %lld, L] or [%lld, L]", who,
                 ad_shape_str(x, a, sizeof a), (long long)s->in, (long long)s->in);
    return NULL;
  }
  if (one) { /* a batch of one, viewed */
    int64_t b[3] = {1, x->shape[0], x->shape[1]};
    x = ad_reshape(ctx, x, 3, b);
  }
  if (s->mode != NN_PADDING_ZEROS)
    x = nn_pad_spatial(ctx, nn_layer_who(l, who, sizeof who), x, 1, s->pad, s->mode);
  ad_tensor *y = x ? ad_conv1d(ctx, x, s->w, s->b, &s->o) : NULL;
  return one && y ? ad_reshape(ctx, y, 2, y->shape + 1) : y;
}

static void conv1d_free(nn_layer *l) {
  conv1d_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* PyTorch's Conv1d extra_repr: channels, kernel_size and stride always (as
 * 1-tuples), the rest when not their defaults. */
static void conv1d_describe(const nn_layer *l, nn_text *t) {
  const conv1d_state *s = nn_layer_state(l);
  const ad_conv1d_opts *o = &s->o;
  nn_text_add(t, "%lld, %lld, kernel_size=(%lld,), stride=(%lld,)", (long long)s->in,
              (long long)s->out, (long long)s->k, (long long)(o->stride ? o->stride : 1));
  if (s->same)
    nn_text_add(t, ", padding=same");
  else if (s->shown)
    nn_text_add(t, ", padding=(%lld,)", (long long)s->shown);
  if (o->dilation > 1) nn_text_add(t, ", dilation=(%lld,)", (long long)o->dilation);
  if (o->groups != 1) nn_text_add(t, ", groups=%lld", (long long)o->groups);
  if (!s->b) nn_text_add(t, ", bias=False");
  if (s->mode != NN_PADDING_ZEROS)
    nn_text_add(t, ", padding_mode=%s", nn_padding_mode_name(s->mode));
}

static const nn_layer_ops conv1d_ops = {conv1d_forward, conv1d_free, conv1d_describe};

/* nn_param_new with PyTorch's default for NN_INIT_DEFAULT: uniform within
 * +-bound. */
static ad_tensor *conv1d_param(nn_params *list, const char *fn, const char *name, ad_dtype dtype,
                               int ndim, const int64_t *shape, nn_init init, double bound,
                               ad_rng *rng) {
  if (init.kind == NN_INIT_DEFAULT) init = nn_init_make(NN_INIT_UNIFORM, -bound, bound);
  return nn_param_new(list, fn, name, dtype, ndim, shape, init, rng);
}

static nn_layer *conv1d_new(ad_ctx *ctx, const char *fn, int64_t in, int64_t out,
                            int64_t kernel_size, ad_rng *rng, const nn_conv1d_opts *opts,
                            nn_padding_mode mode) {
  if (!ctx) return NULL;
  nn_conv1d_opts o = {0};
  if (opts) o = *opts;
  if (!nn_padding_mode_name(mode)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "conv1d: padding_mode %d is not one of zeros, reflect, replicate, circular",
                 (int)mode);
    return NULL;
  }
  int64_t k = kernel_size, groups = o.groups ? o.groups : 1;
  if (in < 1 || out < 1 || k < 1 || groups < 1 || in % groups || out % groups) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "conv1d: channels %lld -> %lld, kernel %lld and groups %lld: each must be >= 1 "
                 "and groups must divide both channel counts",
                 (long long)in, (long long)out, (long long)k, (long long)groups);
    return NULL;
  }
  if (o.dtype != AD_F32 && o.dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "conv1d: parameters must be float, got %s",
                 ad_dtype_name(o.dtype));
    return NULL;
  }
  /* what the op would refuse at the first forward, said now */
  const char *bad = NULL;
  if (o.stride < 0 || o.dilation < 0)
    bad = "stride and dilation must be >= 1 (0 means 1)";
  else if (o.padding < 0)
    bad = "padding must be >= 0";
  else if (o.stride > CONV_MAX_SIZE || o.dilation > CONV_MAX_SIZE || o.padding > CONV_MAX_SIZE)
    bad = "stride, dilation and padding must be at most 2^40";
  else if (o.same && o.stride > 1)
    bad = "padding 'same' needs stride 1";
  else if (o.same && mode != NN_PADDING_ZEROS &&
           k - 1 > CONV_MAX_SIZE / (o.dilation ? o.dilation : 1))
    bad = "padding 'same' (dilation x (kernel - 1)) must be at most 2^40";
  if (bad) {
    ad_set_error(ctx, AD_ERR_ARG, "conv1d: %s (stride %lld, padding %lld, dilation %lld%s)", bad,
                 (long long)o.stride, (long long)o.padding, (long long)o.dilation,
                 o.same ? ", same" : "");
    return NULL;
  }
  conv1d_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  *s = (conv1d_state){.in = in, .out = out, .k = k};
  s->o = (ad_conv1d_opts){.stride = o.stride,
                          .padding = {o.padding, o.padding},
                          .dilation = o.dilation,
                          .groups = groups,
                          .same = o.same};
  s->same = o.same;
  s->shown = o.padding;
  s->mode = mode;
  if (mode != NN_PADDING_ZEROS) { /* PyTorch's _reversed_padding_repeated_twice */
    int64_t total = o.same ? (o.dilation ? o.dilation : 1) * (k - 1) : 0; /* checked above */
    s->pad[0] = o.same ? total / 2 : o.padding;
    s->pad[1] = o.same ? total - total / 2 : o.padding;
    s->o.padding[0] = s->o.padding[1] = 0;
    s->o.same = false;
  }
  nn_layer *l = nn_layer_new_ext(ctx, "conv1d", &conv1d_ops, s);
  if (!l) {
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  /* PyTorch's layout [out, in/groups, k]; a kernel too large for a tensor
   * is refused by ad_zeros ("is too large") before any product is used */
  int64_t ws[3] = {out, in / groups, k}, bs[1] = {out};
  double bound = 1.0 / sqrt((double)ws[1] * (double)k);
  nn_params *p = nn_layer_params(l);
  bool ok = (s->w = conv1d_param(p, fn, "weight", o.dtype, 3, ws, o.weight_init, bound, rng));
  if (ok && !o.no_bias)
    ok = (s->b = conv1d_param(p, fn, "bias", o.dtype, 1, bs, o.bias_init, bound, rng));
  if (!ok) {
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

nn_layer *nn_conv1d_new(ad_ctx *ctx, int64_t in, int64_t out, int64_t kernel_size, ad_rng *rng,
                        const nn_conv1d_opts *opts) {
  return conv1d_new(ctx, "nn_conv1d_new", in, out, kernel_size, rng, opts, NN_PADDING_ZEROS);
}

nn_layer *nn_conv1d_new_ext(ad_ctx *ctx, int64_t in, int64_t out, int64_t kernel_size, ad_rng *rng,
                            const nn_conv1d_opts_ext *opts) {
  return conv1d_new(ctx, "nn_conv1d_new_ext", in, out, kernel_size, rng, opts ? &opts->base : NULL,
                    opts ? opts->padding_mode : NN_PADDING_ZEROS);
}

/* ------------------------------------------------------------- pool1d */

typedef enum pool1d_kind {
  POOL1D_MAX,
  POOL1D_AVG,
  POOL1D_ADAPTIVE,
  POOL2D_ADAPTIVE,
  POOL1D_ADAPTIVE_MAX,
  POOL2D_ADAPTIVE_MAX
} pool1d_kind;

typedef struct pool1d_state {
  pool1d_kind kind;
  int64_t k;      /* max / avg: the kernel */
  int64_t oh, ow; /* adaptive: the output size (1-D: ow, oh = 1) */
  ad_pool2d_opts o;
} pool1d_state;

/* When the op fails on the 4-D view, its message ("max_pool2d: output
 * 1x0 ...") is kept, after the 1-D input's shape. */
static void view_error(ad_ctx *ctx, const ad_tensor *x, const char *as) {
  char msg[512], a[64];
  snprintf(msg, sizeof msg, "%s", ad_last_error(ctx));
  ad_set_error(ctx, ad_last_status(ctx), "input %s (pooled as %s): %s",
               ad_shape_str(x, a, sizeof a), as, msg);
}

/* The start of window i of an axis of len pooled to n, floor(i len / n),
 * without overflow (i len = i (len / n) n + i (len % n), i <= n). */
static int64_t window_start(int64_t i, int64_t len, int64_t n) {
  return i * (len / n) + (i * (len % n)) / n;
}

/* Adaptive average pooling of the last two axes of x (3-D or 4-D) to oh x
 * ow; the three ways at the top of the file. */
ad_tensor *nn_adaptive_avg2d(ad_ctx *ctx, ad_tensor *x, int64_t oh, int64_t ow) {
  int hx = x->ndim - 2;
  int64_t len[2] = {x->shape[hx], x->shape[hx + 1]};
  if (oh == 1 && ow == 1) return ad_global_avg_pool2d(ctx, x);
  if (len[0] % oh == 0 && len[1] % ow == 0)
    return ad_avg_pool2d(ctx, x, len[0] / oh, len[1] / ow, NULL);
  return ad_adaptive_avg_pool2d(ctx, x, oh, ow);
}

/* Adaptive max pooling of the last two axes of x (3-D or 4-D) to oh x ow:
 * ad_max_pool2d with kernel = stride = the window when n divides the length
 * of each axis (its fast kernels), else ad_adaptive_max_pool2d. */
ad_tensor *nn_adaptive_max2d(ad_ctx *ctx, ad_tensor *x, int64_t oh, int64_t ow) {
  int hx = x->ndim - 2;
  int64_t len[2] = {x->shape[hx], x->shape[hx + 1]};
  if (len[0] % oh == 0 && len[1] % ow == 0)
    return ad_max_pool2d(ctx, x, len[0] / oh, len[1] / ow, NULL);
  return ad_adaptive_max_pool2d(ctx, x, oh, ow);
}

/* The checks of the forward that name the layer: x's rank, dtype and
 * pooled axes. */
static bool pool1d_input_ok(nn_layer *l, const ad_tensor *x) {
  const pool1d_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  bool two = s->kind == POOL2D_ADAPTIVE || s->kind == POOL2D_ADAPTIVE_MAX;
  int lo = two ? 3 : 2; /* the unbatched rank */
  if (x->ndim != lo && x->ndim != lo + 1) {
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be %s", who, ad_shape_str(x, a, sizeof a),
                 two ? "[N, C, H, W] or [C, H, W]" : "[N, C, L] or [C, L]");
    return false;
  }
  if (!nn_layer_float_input(l, x)) return false;
  for (int d = x->ndim - (two ? 2 : 1); d < x->ndim; d++) /* N and C may be 0 */
    if (x->shape[d] == 0) {
      nn_layer_who(l, who, sizeof who);
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s has an empty %s", who,
                   ad_shape_str(x, a, sizeof a), two ? "H or W" : "L");
      return false;
    }
  return true;
}

static ad_tensor *pool1d_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)training;
  pool1d_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  char a[64];
  bool two = s->kind == POOL2D_ADAPTIVE || s->kind == POOL2D_ADAPTIVE_MAX;
  if (!pool1d_input_ok(l, x)) return NULL;
  if (s->kind == POOL2D_ADAPTIVE) return nn_adaptive_avg2d(ctx, x, s->oh, s->ow);
  if (two) return nn_adaptive_max2d(ctx, x, s->oh, s->ow);
  /* the 4-D (3-D unbatched) view with H = 1 */
  int64_t v[4], len = x->shape[x->ndim - 1];
  for (int d = 0; d < x->ndim - 1; d++) v[d] = x->shape[d];
  v[x->ndim - 1] = 1;
  v[x->ndim] = len;
  ad_tensor *xv = ad_reshape(ctx, x, x->ndim + 1, v);
  if (!xv) return NULL;
  ad_tensor *y = NULL;
  switch (s->kind) {
  case POOL1D_MAX:
    y = ad_max_pool2d(ctx, xv, 1, s->k, &s->o);
    break;
  case POOL1D_AVG:
    y = ad_avg_pool2d(ctx, xv, 1, s->k, &s->o);
    break;
  case POOL1D_ADAPTIVE_MAX:
    y = nn_adaptive_max2d(ctx, xv, 1, s->ow);
    break;
  default:
    y = nn_adaptive_avg2d(ctx, xv, 1, s->ow);
    break;
  }
  if (!y) {
    view_error(ctx, x, ad_shape_str(xv, a, sizeof a));
    return NULL;
  }
  int64_t ys[3];
  for (int d = 0; d < x->ndim - 1; d++) ys[d] = y->shape[d];
  ys[x->ndim - 1] = y->shape[x->ndim];
  return ad_reshape(ctx, y, x->ndim, ys);
}

ad_tensor *nn_adaptive_max_indices(ad_ctx *ctx, ad_tensor *x, int nax, const int64_t *n) {
  int nd = x->ndim;
  int64_t planes = 1, len[3], shape[AD_MAX_DIMS], outs = 1, ins = 1;
  for (int d = 0; d < nd - nax; d++) planes *= x->shape[d];
  memcpy(shape, x->shape, sizeof(int64_t) * (size_t)nd);
  for (int a = 0; a < nax; a++) {
    len[a] = x->shape[nd - nax + a];
    shape[nd - nax + a] = n[a];
    outs *= n[a];
    ins *= len[a];
  }
  if (ins - 1 > I32_MAX) {
    char s[64];
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "input %s: an index into a plane of %lld elements would not fit the int32 "
                 "indices (at most 2^31 - 1)",
                 ad_shape_str(x, s, sizeof s), (long long)ins);
    return NULL;
  }
  ad_tensor *out = nn_tmp_tensor(ctx, AD_I32, nd, shape);
  if (!out) return NULL;
  int32_t *O = out->data;
  /* up to three axes: the missing leading ones have length 1, one window */
  int64_t L[3] = {1, 1, 1}, N[3] = {1, 1, 1};
  for (int a = 0; a < nax; a++) L[3 - nax + a] = len[a], N[3 - nax + a] = n[a];
  bool f32 = x->dtype == AD_F32;
  for (int64_t p = 0; p < planes; p++) {
    const char *base = (const char *)x->data + (size_t)(p * ins) * (f32 ? 4 : 8);
    for (int64_t o = 0; o < outs; o++) {
      int64_t i[3] = {o / (N[1] * N[2]), o / N[2] % N[1], o % N[2]}, lo[3], hi[3];
      for (int a = 0; a < 3; a++) {
        lo[a] = window_start(i[a], L[a], N[a]);
        hi[a] = L[a] - window_start(N[a] - 1 - i[a], L[a], N[a]);
      }
      /* PyTorch's: the first element, then any above the best or a NaN */
      int64_t arg = (lo[0] * L[1] + lo[1]) * L[2] + lo[2];
      double best = -INFINITY;
      for (int64_t u = lo[0]; u < hi[0]; u++)
        for (int64_t v = lo[1]; v < hi[1]; v++)
          for (int64_t w = lo[2]; w < hi[2]; w++) {
            int64_t k = (u * L[1] + v) * L[2] + w;
            double val = f32 ? (double)((const float *)base)[k] : ((const double *)base)[k];
            if (val > best || isnan(val)) best = val, arg = k;
          }
      O[p * outs + o] = (int32_t)arg;
    }
  }
  return out;
}

static const nn_layer_ops pool1d_ops;

ad_tensor *nn_pool1d_layer_indices(nn_layer *l, ad_tensor *x, bool *mine) {
  const pool1d_state *s = nn_layer_runs(l, &pool1d_ops) ? nn_layer_state(l) : NULL;
  *mine = s && (s->kind == POOL1D_MAX || s->kind == POOL1D_ADAPTIVE_MAX ||
                s->kind == POOL2D_ADAPTIVE_MAX);
  if (!*mine || !pool1d_input_ok(l, x)) return NULL;
  ad_ctx *ctx = nn_layer_ctx(l);
  if (s->kind != POOL1D_MAX) {
    int64_t n[2] = {s->oh, s->ow};
    return s->kind == POOL2D_ADAPTIVE_MAX ? nn_adaptive_max_indices(ctx, x, 2, n)
                                          : nn_adaptive_max_indices(ctx, x, 1, n + 1);
  }
  /* max_pool2d_indices on the [N, C, 1, L] view: h = 0, so the index is l */
  int64_t v[4], len = x->shape[x->ndim - 1];
  for (int d = 0; d < x->ndim - 1; d++) v[d] = x->shape[d];
  v[x->ndim - 1] = 1;
  v[x->ndim] = len;
  char a[64];
  ad_tensor *xv = ad_reshape(ctx, ad_detach(ctx, x), x->ndim + 1, v);
  ad_tensor *iv = xv ? ad_max_pool2d_indices(ctx, xv, 1, s->k, &s->o) : NULL;
  if (!iv) {
    if (xv) view_error(ctx, x, ad_shape_str(xv, a, sizeof a));
    return NULL;
  }
  int64_t ys[3];
  for (int d = 0; d < x->ndim - 1; d++) ys[d] = iv->shape[d];
  ys[x->ndim - 1] = iv->shape[x->ndim];
  ad_tensor *y = nn_tmp_tensor(ctx, AD_I32, x->ndim, ys);
  if (y) memcpy(y->data, iv->data, sizeof(int32_t) * (size_t)iv->size);
  return y;
}

static void pool1d_free(nn_layer *l) {
  pool1d_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* PyTorch's reprs: MaxPool1d prints ints ("kernel_size=2, stride=2,
 * padding=0, dilation=1, ceil_mode=False"), AvgPool1d 1-tuples
 * ("kernel_size=(2,), stride=(2,), padding=(0,)", with ceil_mode and
 * count_include_pad added when not the defaults, as the 2-D layer's),
 * AdaptiveAvgPool1d "output_size=3", AdaptiveAvgPool2d "output_size=3" or
 * "output_size=(3, 4)". */
static void pool1d_describe(const nn_layer *l, nn_text *t) {
  const pool1d_state *s = nn_layer_state(l);
  const ad_pool2d_opts *o = &s->o;
  long long k = (long long)s->k, st = (long long)(o->stride[1] ? o->stride[1] : s->k),
            p = (long long)o->padding[1];
  switch (s->kind) {
  case POOL1D_MAX:
    nn_text_add(t, "kernel_size=%lld, stride=%lld, padding=%lld, dilation=%lld, ceil_mode=%s", k,
                st, p, (long long)(o->dilation[1] ? o->dilation[1] : 1), nn_py_bool(o->ceil_mode));
    break;
  case POOL1D_AVG:
    nn_text_add(t, "kernel_size=(%lld,), stride=(%lld,), padding=(%lld,)", k, st, p);
    if (o->ceil_mode) nn_text_add(t, ", ceil_mode=True");
    if (o->exclude_pad) nn_text_add(t, ", count_include_pad=False");
    break;
  case POOL1D_ADAPTIVE:
  case POOL1D_ADAPTIVE_MAX:
    nn_text_add(t, "output_size=%lld", (long long)s->ow);
    break;
  case POOL2D_ADAPTIVE:
  case POOL2D_ADAPTIVE_MAX:
    if (s->oh == s->ow)
      nn_text_add(t, "output_size=%lld", (long long)s->oh);
    else
      nn_text_add(t, "output_size=(%lld, %lld)", (long long)s->oh, (long long)s->ow);
    break;
  }
}

static const nn_layer_ops pool1d_ops = {pool1d_forward, pool1d_free, pool1d_describe};

static nn_layer *pool1d_layer(ad_ctx *ctx, const char *kind, const pool1d_state *init) {
  return nn_layer_new_copy(ctx, kind, &pool1d_ops, init, sizeof *init);
}

static nn_layer *pool1d_new(ad_ctx *ctx, pool1d_kind kind, int64_t k, const nn_pool1d_opts *opts) {
  if (!ctx) return NULL;
  const char *name = kind == POOL1D_MAX ? "max_pool1d" : "avg_pool1d";
  nn_pool1d_opts o = {0};
  if (opts) o = *opts;
  /* what the op would refuse at the first forward, or PyTorch's
   * constructor or first forward refuses, said now */
  const char *bad = NULL;
  if (k < 1 || k > POOL_MAX_SIZE)
    bad = "kernel must be in [1, 2^30]";
  else if (o.stride < 0 || o.stride > POOL_MAX_SIZE)
    bad = "stride must be in [1, 2^30] (0 means the kernel)";
  else if (o.dilation < 0 || o.dilation > POOL_MAX_SIZE)
    bad = "dilation must be in [1, 2^30] (0 means 1)";
  else if (kind == POOL1D_AVG && o.dilation > 1)
    bad = "dilation is for max_pool1d only";
  else if (kind == POOL1D_MAX && o.exclude_pad)
    bad = "exclude_pad (count_include_pad=False) is for avg_pool1d only";
  else if (o.padding < 0 || o.padding > k / 2)
    bad = "padding must be >= 0 and at most half the kernel";
  if (bad) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: %s (kernel %lld, stride %lld, padding %lld, dilation %lld)",
                 name, bad, (long long)k, (long long)o.stride, (long long)o.padding,
                 (long long)o.dilation);
    return NULL;
  }
  pool1d_state s = {.kind = kind, .k = k, .oh = 1};
  s.o = (ad_pool2d_opts){.stride = {1, o.stride},
                         .padding = {0, o.padding},
                         .dilation = {1, o.dilation},
                         .ceil_mode = o.ceil_mode,
                         .exclude_pad = o.exclude_pad};
  return pool1d_layer(ctx, name, &s);
}

nn_layer *nn_max_pool1d_new(ad_ctx *ctx, int64_t kernel_size, const nn_pool1d_opts *opts) {
  return pool1d_new(ctx, POOL1D_MAX, kernel_size, opts);
}

nn_layer *nn_avg_pool1d_new(ad_ctx *ctx, int64_t kernel_size, const nn_pool1d_opts *opts) {
  return pool1d_new(ctx, POOL1D_AVG, kernel_size, opts);
}

static nn_layer *adaptive_new(ad_ctx *ctx, pool1d_kind kind, int64_t oh, int64_t ow) {
  if (!ctx) return NULL;
  const char *name = kind == POOL1D_ADAPTIVE       ? "adaptive_avg_pool1d"
                     : kind == POOL2D_ADAPTIVE     ? "adaptive_avg_pool2d"
                     : kind == POOL1D_ADAPTIVE_MAX ? "adaptive_max_pool1d"
                                                   : "adaptive_max_pool2d";
  if (oh < 1 || ow < 1 || oh > POOL_MAX_SIZE || ow > POOL_MAX_SIZE) {
    if (kind == POOL1D_ADAPTIVE || kind == POOL1D_ADAPTIVE_MAX)
      ad_set_error(ctx, AD_ERR_ARG, "%s: output size %lld must be in [1, 2^30]", name,
                   (long long)ow);
    else
      ad_set_error(ctx, AD_ERR_ARG, "%s: output size %lldx%lld must be in [1, 2^30] on each side",
                   name, (long long)oh, (long long)ow);
    return NULL;
  }
  pool1d_state s = {.kind = kind, .oh = oh, .ow = ow};
  return pool1d_layer(ctx, name, &s);
}

nn_layer *nn_adaptive_avg_pool1d_new(ad_ctx *ctx, int64_t output_size) {
  return adaptive_new(ctx, POOL1D_ADAPTIVE, 1, output_size);
}

nn_layer *nn_adaptive_avg_pool2d_new(ad_ctx *ctx, int64_t oh, int64_t ow) {
  return adaptive_new(ctx, POOL2D_ADAPTIVE, oh, ow);
}

nn_layer *nn_adaptive_max_pool1d_new(ad_ctx *ctx, int64_t output_size) {
  return adaptive_new(ctx, POOL1D_ADAPTIVE_MAX, 1, output_size);
}

nn_layer *nn_adaptive_max_pool2d_new(ad_ctx *ctx, int64_t oh, int64_t ow) {
  return adaptive_new(ctx, POOL2D_ADAPTIVE_MAX, oh, ow);
}
