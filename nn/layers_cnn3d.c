/* layers_cnn3d.c: PyTorch's nn.Conv3d, nn.ConvTranspose3d and
 * nn.ConvTranspose1d over the public ops ad_conv3d, ad_conv_transpose3d and
 * ad_conv_transpose1d (composites, so every gradient is the tape's); this
 * file holds the parameters, PyTorch's initialisation and the checks that
 * name the layer. A Conv3d padding_mode other than zeros pads the input
 * first (nn_pad_spatial, padding.c) and convolves without padding, as
 * PyTorch's _conv_forward.
 *
 * Initialisation (PyTorch's reset_parameters): weight and bias uniform
 * within 1/sqrt(fan_in), fan_in = weight.shape[1] times the kernel's
 * volume (kaiming_uniform with a = sqrt(5) gives that bound for the
 * weight): in/groups for a convolution, out/groups for a transposed one. */
#include "nn_internal.h"

#include <math.h>

#define CONV_MAX_SIZE (INT64_C(1) << 40) /* the ops' limit on stride, padding, dilation */

typedef enum c3_kind { K_CONV3D, K_CONVT3D, K_CONVT1D } c3_kind;

typedef struct cnn3d_state {
  c3_kind kind;
  int64_t in, out, k[3]; /* 1-D: k[0] */
  ad_conv3d_opts o;      /* 1-D: stride[0], padding[0..1], dilation[0], output_padding[0] */
  nn_padding_mode mode;  /* not zeros: x padded by pad (F.pad's order), o unpadded */
  int64_t pad[6];
  bool same; /* for the description: the options as given */
  int64_t shown[3];
  ad_tensor *w, *b; /* b NULL without bias */
} cnn3d_state;

static ad_tensor *cnn3d_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)training;
  cnn3d_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  int nd = s->kind == K_CONVT1D ? 3 : 5; /* the batched rank */
  bool ok = (x->ndim == nd && x->shape[1] == s->in) || (x->ndim == nd - 1 && x->shape[0] == s->in);
  if (!ok) {
    nn_layer_who(l, who, sizeof who);
    if (nd == 3)
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be [N, %lld, L] or [%lld, L]", who,
                   ad_shape_str(x, a, sizeof a), (long long)s->in, (long long)s->in);
    else
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be [N, %lld, D, H, W] or [%lld, D, H, W]",
                   who, ad_shape_str(x, a, sizeof a), (long long)s->in, (long long)s->in);
    return NULL;
  }
  if (s->kind == K_CONVT1D) {
    ad_conv_transpose1d_opts o = {.stride = s->o.stride[0],
                                  .padding = {s->o.padding[0], s->o.padding[1]},
                                  .dilation = s->o.dilation[0],
                                  .groups = s->o.groups,
                                  .output_padding = s->o.output_padding[0]};
    return ad_conv_transpose1d(ctx, x, s->w, s->b, &o);
  }
  if (s->kind == K_CONVT3D) return ad_conv_transpose3d(ctx, x, s->w, s->b, &s->o);
  if (s->mode != NN_PADDING_ZEROS) {
    bool one = x->ndim == 4; /* unbatched: padded as a batch of one */
    if (one) {
      int64_t b[5] = {1, x->shape[0], x->shape[1], x->shape[2], x->shape[3]};
      x = ad_reshape(ctx, x, 5, b);
    }
    x = x ? nn_pad_spatial(ctx, nn_layer_who(l, who, sizeof who), x, 3, s->pad, s->mode) : NULL;
    if (x && one) x = ad_reshape(ctx, x, 4, x->shape + 1);
    if (!x) return NULL;
  }
  return ad_conv3d(ctx, x, s->w, s->b, &s->o);
}

static void cnn3d_free(nn_layer *l) {
  cnn3d_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* A PyTorch tuple of n entries: "(3,)" or "(1, 2, 2)". */
static void tuple(nn_text *t, const char *name, const int64_t *v, int step, int n) {
  nn_text_add(t, "%s=(", name);
  for (int k = 0; k < n; k++) nn_text_add(t, k ? ", %lld" : "%lld", (long long)v[k * step]);
  nn_text_add(t, n == 1 ? ",)" : ")");
}

static bool any(const int64_t *v, int step, int n, int64_t dflt) {
  for (int k = 0; k < n; k++)
    if ((v[k * step] ? v[k * step] : dflt) != dflt) return true;
  return false;
}

/* PyTorch's extra_repr: channels, kernel_size and stride always, then
 * padding, dilation, output_padding, groups and bias when not the
 * defaults. */
static void cnn3d_describe(const nn_layer *l, nn_text *t) {
  const cnn3d_state *s = nn_layer_state(l);
  const ad_conv3d_opts *o = &s->o;
  int n = s->kind == K_CONVT1D ? 1 : 3;
  int64_t st[3], di[3];
  for (int k = 0; k < 3; k++) {
    st[k] = o->stride[k] ? o->stride[k] : 1;
    di[k] = o->dilation[k] ? o->dilation[k] : 1;
  }
  nn_text_add(t, "%lld, %lld, ", (long long)s->in, (long long)s->out);
  tuple(t, "kernel_size", s->k, 1, n);
  tuple(t, ", stride", st, 1, n);
  if (s->same)
    nn_text_add(t, ", padding=same");
  else if (any(s->shown, 1, n, 0))
    tuple(t, ", padding", s->shown, 1, n);
  if (any(di, 1, n, 1)) tuple(t, ", dilation", di, 1, n);
  if (any(o->output_padding, 1, n, 0)) tuple(t, ", output_padding", o->output_padding, 1, n);
  if (o->groups != 1) nn_text_add(t, ", groups=%lld", (long long)o->groups);
  if (!s->b) nn_text_add(t, ", bias=False");
  if (s->mode != NN_PADDING_ZEROS)
    nn_text_add(t, ", padding_mode=%s", nn_padding_mode_name(s->mode));
}

static const nn_layer_ops cnn3d_ops = {cnn3d_forward, cnn3d_free, cnn3d_describe};

static ad_tensor *cnn3d_param(nn_params *list, const char *fn, const char *name, ad_dtype dtype,
                              int ndim, const int64_t *shape, nn_init init, double bound,
                              ad_rng *rng) {
  if (init.kind == NN_INIT_DEFAULT) init = nn_init_make(NN_INIT_UNIFORM, -bound, bound);
  return nn_param_new(list, fn, name, dtype, ndim, shape, init, rng);
}

/* The settings common to the three layers, as the 3-D options (n axes). */
typedef struct cnn3d_args {
  ad_conv3d_opts o;
  bool no_bias;
  nn_init weight_init, bias_init;
  ad_dtype dtype;
  nn_padding_mode mode;
} cnn3d_args;

static nn_layer *cnn3d_new(ad_ctx *ctx, c3_kind kind, int64_t in, int64_t out, const int64_t *ks,
                           ad_rng *rng, const cnn3d_args *a) {
  static const char *const kinds[3] = {"conv3d", "conv_transpose3d", "conv_transpose1d"};
  static const char *const fns[3] = {"nn_conv3d_new", "nn_conv_transpose3d_new",
                                     "nn_conv_transpose1d_new"};
  const char *name = kinds[kind], *fn = fns[kind];
  int n = kind == K_CONVT1D ? 1 : 3;
  bool transpose = kind != K_CONV3D;
  const ad_conv3d_opts *o = &a->o;
  int64_t groups = o->groups ? o->groups : 1;
  if (!nn_padding_mode_name(a->mode) || (transpose && a->mode != NN_PADDING_ZEROS)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: padding_mode %d is not %s", name, (int)a->mode,
                 transpose ? "zeros, the only one PyTorch's transposed convolutions take"
                           : "one of zeros, reflect, replicate, circular");
    return NULL;
  }
  bool kbad = false;
  for (int k = 0; k < n; k++) kbad |= ks[k] < 1;
  if (in < 1 || out < 1 || kbad || groups < 1 || in % groups || out % groups) {
    if (n == 1)
      ad_set_error(ctx, AD_ERR_ARG,
                   "%s: channels %lld -> %lld, kernel %lld and groups %lld: each must be >= 1 and "
                   "groups must divide both channel counts",
                   name, (long long)in, (long long)out, (long long)ks[0], (long long)groups);
    else
      ad_set_error(ctx, AD_ERR_ARG,
                   "%s: channels %lld -> %lld, kernel %lldx%lldx%lld and groups %lld: each must "
                   "be >= 1 and groups must divide both channel counts",
                   name, (long long)in, (long long)out, (long long)ks[0], (long long)ks[1],
                   (long long)ks[2], (long long)groups);
    return NULL;
  }
  if (a->dtype != AD_F32 && a->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: parameters must be float, got %s", name,
                 ad_dtype_name(a->dtype));
    return NULL;
  }
  /* what the op would refuse at the first forward, and what PyTorch's
   * constructors refuse, said now */
  const char *bad = NULL;
  int axis = 0;
  for (int k = 0; k < n && !bad; k++) {
    int64_t st = o->stride[k] ? o->stride[k] : 1, di = o->dilation[k] ? o->dilation[k] : 1;
    axis = k;
    if (o->stride[k] < 0 || o->dilation[k] < 0)
      bad = "stride and dilation must be >= 1 (0 means 1)";
    else if (o->padding[2 * k] < 0 || o->output_padding[k] < 0)
      bad = "padding and output_padding must be >= 0";
    else if (st > CONV_MAX_SIZE || di > CONV_MAX_SIZE || o->padding[2 * k] > CONV_MAX_SIZE)
      bad = "stride, dilation and padding must be at most 2^40";
    else if (o->same && a->mode != NN_PADDING_ZEROS && ks[k] - 1 > CONV_MAX_SIZE / di)
      bad = "padding 'same' (dilation x (kernel - 1)) must be at most 2^40";
    else if (!transpose && o->output_padding[k])
      bad = "output_padding is for transposed convolutions only";
    else if (transpose && o->output_padding[k] >= (st > di ? st : di))
      bad = "output_padding must be smaller than the stride or the dilation";
    else if (o->same && (transpose || st != 1))
      bad = transpose ? "padding 'same' is for conv3d only" : "padding 'same' needs stride 1";
  }
  if (bad) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: %s (axis %d: stride %lld, padding %lld, dilation %lld, output_padding "
                 "%lld%s)",
                 name, bad, axis, (long long)o->stride[axis], (long long)o->padding[2 * axis],
                 (long long)o->dilation[axis], (long long)o->output_padding[axis],
                 o->same ? ", same" : "");
    return NULL;
  }
  cnn3d_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  *s = (cnn3d_state){.kind = kind, .in = in, .out = out, .o = *o, .mode = a->mode, .same = o->same};
  s->o.groups = groups;
  for (int k = 0; k < n; k++) {
    s->k[k] = ks[k];
    s->shown[k] = o->padding[2 * k];
  }
  if (a->mode != NN_PADDING_ZEROS) { /* PyTorch's _reversed_padding_repeated_twice */
    for (int k = 0; k < 3; k++) {
      int64_t lo = o->padding[2 * k], hi = o->padding[2 * k + 1];
      if (o->same) { /* the total split as PyTorch: the extra one after */
        int64_t total = (o->dilation[k] ? o->dilation[k] : 1) * (ks[k] - 1);
        lo = total / 2;
        hi = total - lo;
      }
      s->pad[2 * (2 - k)] = lo; /* (left, right, top, bottom, front, back) */
      s->pad[2 * (2 - k) + 1] = hi;
      s->o.padding[2 * k] = s->o.padding[2 * k + 1] = 0;
    }
    s->o.same = false;
  }
  nn_layer *l = nn_layer_new_ext(ctx, name, &cnn3d_ops, s);
  if (!l) {
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  /* PyTorch's layouts: [out, in/groups, k...] and, transposed, [in,
   * out/groups, k...]; fan_in is dim 1 times the kernel's volume. A kernel
   * too large for a tensor is refused by ad_zeros ("is too large") before
   * any product is used. */
  int64_t ws[5] = {transpose ? in : out, (transpose ? out : in) / groups}, bs[1] = {out};
  double fan = (double)ws[1];
  for (int k = 0; k < n; k++) {
    ws[2 + k] = ks[k];
    fan *= (double)ks[k];
  }
  double bound = 1.0 / sqrt(fan);
  nn_params *p = nn_layer_params(l);
  bool ok = (s->w = cnn3d_param(p, fn, "weight", a->dtype, 2 + n, ws, a->weight_init, bound, rng));
  if (ok && !a->no_bias)
    ok = (s->b = cnn3d_param(p, fn, "bias", a->dtype, 1, bs, a->bias_init, bound, rng));
  if (!ok) {
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

static nn_layer *conv3d_layer(ad_ctx *ctx, c3_kind kind, int64_t in, int64_t out, int64_t kd,
                              int64_t kh, int64_t kw, ad_rng *rng, const nn_conv3d_opts *opts) {
  if (!ctx) return NULL;
  nn_conv3d_opts o = {0};
  if (opts) o = *opts;
  cnn3d_args a = {.o = {.groups = o.groups, .same = o.same},
                  .no_bias = o.no_bias,
                  .weight_init = o.weight_init,
                  .bias_init = o.bias_init,
                  .dtype = o.dtype,
                  .mode = o.padding_mode};
  for (int k = 0; k < 3; k++) {
    a.o.stride[k] = o.stride[k];
    a.o.dilation[k] = o.dilation[k];
    a.o.output_padding[k] = o.output_padding[k];
    a.o.padding[2 * k] = a.o.padding[2 * k + 1] = o.padding[k];
  }
  int64_t ks[3] = {kd, kh, kw};
  return cnn3d_new(ctx, kind, in, out, ks, rng, &a);
}

nn_layer *nn_conv3d_new(ad_ctx *ctx, int64_t in, int64_t out, int64_t kd, int64_t kh, int64_t kw,
                        ad_rng *rng, const nn_conv3d_opts *opts) {
  return conv3d_layer(ctx, K_CONV3D, in, out, kd, kh, kw, rng, opts);
}

nn_layer *nn_conv_transpose3d_new(ad_ctx *ctx, int64_t in, int64_t out, int64_t kd, int64_t kh,
                                  int64_t kw, ad_rng *rng, const nn_conv3d_opts *opts) {
  return conv3d_layer(ctx, K_CONVT3D, in, out, kd, kh, kw, rng, opts);
}

nn_layer *nn_conv_transpose1d_new(ad_ctx *ctx, int64_t in, int64_t out, int64_t kernel_size,
                                  ad_rng *rng, const nn_conv_transpose1d_opts *opts) {
  if (!ctx) return NULL;
  nn_conv_transpose1d_opts o = {0};
  if (opts) o = *opts;
  cnn3d_args a = {.o = {.stride = {o.stride},
                        .padding = {o.padding, o.padding},
                        .dilation = {o.dilation},
                        .groups = o.groups,
                        .output_padding = {o.output_padding}},
                  .no_bias = o.no_bias,
                  .weight_init = o.weight_init,
                  .bias_init = o.bias_init,
                  .dtype = o.dtype};
  int64_t ks[3] = {kernel_size};
  return cnn3d_new(ctx, K_CONVT1D, in, out, ks, rng, &a);
}
