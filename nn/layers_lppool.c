/* layers_lppool.c: PyTorch's nn.LPPool1d and nn.LPPool2d (F.lp_pool1d,
 * F.lp_pool2d), power-average pooling, with torch 1.13's formula step for
 * step:
 *   out = avg_pool(x^p, kernel, stride, padding 0, ceil_mode)
 *   y   = (sign(out) relu(|out|) kh kw)^(1/p)
 * as a composite of public ops (ad_pow_scalar, ad_avg_pool2d, ad_sign,
 * ad_abs, ad_relu, ad_mul, ad_mul_scalar), so its values, its NaN (a
 * negative window sum under a fractional 1/p) and its gradients (0 for a
 * window of zeros: relu's gradient at 0 masks the infinite one of ^(1/p))
 * are PyTorch's, to any order. 1-D pools the [N, C, 1, L] view with a 1 x
 * kernel window. */
#include "nn_internal.h"

#include <math.h>

#define LP_MAX_SIZE (INT64_C(1) << 30)

typedef struct lp_state {
  bool two;       /* LPPool2d */
  double p;       /* norm_type */
  int64_t kh, kw; /* 1-D: kh = 1 */
  int64_t sh, sw; /* 0: the kernel (PyTorch's stride=None) */
  bool ceil_mode;
} lp_state;

static ad_tensor *lp_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)training;
  const lp_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  int lo = s->two ? 3 : 2; /* the unbatched rank */
  if (x->ndim != lo && x->ndim != lo + 1) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be %s", nn_layer_who(l, who, sizeof who),
                 ad_shape_str(x, a, sizeof a),
                 s->two ? "[N, C, H, W] or [C, H, W]" : "[N, C, L] or [C, L]");
    return NULL;
  }
  if (!nn_layer_float_input(l, x)) return NULL;
  for (int d = x->ndim - (s->two ? 2 : 1); d < x->ndim; d++) /* N and C may be 0 */
    if (x->shape[d] == 0) {
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s has an empty %s",
                   nn_layer_who(l, who, sizeof who), ad_shape_str(x, a, sizeof a),
                   s->two ? "H or W" : "L");
      return NULL;
    }
  ad_tensor *v = x;
  int64_t vs[4];
  if (!s->two) { /* the [.., 1, L] view */
    for (int d = 0; d < x->ndim - 1; d++) vs[d] = x->shape[d];
    vs[x->ndim - 1] = 1;
    vs[x->ndim] = x->shape[x->ndim - 1];
    v = ad_reshape(ctx, x, x->ndim + 1, vs);
  }
  ad_pool2d_opts o = {.stride = {s->sh, s->sw}, .ceil_mode = s->ceil_mode};
  ad_tensor *out = ad_avg_pool2d(ctx, ad_pow_scalar(ctx, v, s->p), s->kh, s->kw, &o);
  ad_tensor *y = ad_mul(ctx, ad_sign(ctx, out), ad_relu(ctx, ad_abs(ctx, out)));
  y = ad_pow_scalar(ctx, ad_mul_scalar(ctx, y, (double)(s->kh * s->kw)), 1.0 / s->p);
  if (!y || s->two) return y;
  int64_t ys[3];
  for (int d = 0; d < x->ndim - 1; d++) ys[d] = y->shape[d];
  ys[x->ndim - 1] = y->shape[x->ndim];
  return ad_reshape(ctx, y, x->ndim, ys);
}

static void lp_free(nn_layer *l) {
  lp_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* PyTorch's reprs: "norm_type=2, kernel_size=3, stride=None,
 * ceil_mode=False"; a 2-D kernel or stride that differs per axis as a
 * pair. norm_type prints as %g (PyTorch prints what it was given: 2 or
 * 2.0). */
static void lp_pair(nn_text *t, const char *name, int64_t h, int64_t w, bool two) {
  if (!two || h == w)
    nn_text_add(t, "%s=%lld", name, (long long)w);
  else
    nn_text_add(t, "%s=(%lld, %lld)", name, (long long)h, (long long)w);
}

static void lp_describe(const nn_layer *l, nn_text *t) {
  const lp_state *s = nn_layer_state(l);
  nn_text_add(t, "norm_type=%g, ", s->p);
  lp_pair(t, "kernel_size", s->kh, s->kw, s->two);
  if (!s->sh && !s->sw)
    nn_text_add(t, ", stride=None");
  else
    lp_pair(t, ", stride", s->sh ? s->sh : s->kh, s->sw ? s->sw : s->kw, s->two);
  nn_text_add(t, ", ceil_mode=%s", nn_py_bool(s->ceil_mode));
}

static const nn_layer_ops lp_ops = {lp_forward, lp_free, lp_describe};

static nn_layer *lp_new(ad_ctx *ctx, const lp_state *s) {
  if (!ctx) return NULL;
  const char *name = s->two ? "lp_pool2d" : "lp_pool1d";
  const char *bad = NULL;
  if (!isfinite(s->p) || s->p == 0)
    bad = "norm_type must be finite and not 0";
  else if (s->kh < 1 || s->kw < 1 || s->kh > LP_MAX_SIZE || s->kw > LP_MAX_SIZE)
    bad = "kernel must be in [1, 2^30]";
  else if (s->sh < 0 || s->sw < 0 || s->sh > LP_MAX_SIZE || s->sw > LP_MAX_SIZE)
    bad = "stride must be in [1, 2^30] (0 means the kernel)";
  if (bad) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: %s (norm_type %g, kernel %lldx%lld, stride %lldx%lld)", name,
                 bad, s->p, (long long)s->kh, (long long)s->kw, (long long)s->sh, (long long)s->sw);
    return NULL;
  }
  return nn_layer_new_copy(ctx, name, &lp_ops, s, sizeof *s);
}

nn_layer *nn_lp_pool1d_new(ad_ctx *ctx, double norm_type, int64_t kernel_size,
                           const nn_lp_pool_opts *opts) {
  nn_lp_pool_opts o = {0};
  if (opts) o = *opts;
  lp_state s = {.p = norm_type,
                .kh = 1,
                .kw = kernel_size,
                .sh = o.stride[0] ? 1 : 0,
                .sw = o.stride[0],
                .ceil_mode = o.ceil_mode};
  return lp_new(ctx, &s);
}

nn_layer *nn_lp_pool2d_new(ad_ctx *ctx, double norm_type, int64_t kh, int64_t kw,
                           const nn_lp_pool_opts *opts) {
  nn_lp_pool_opts o = {0};
  if (opts) o = *opts;
  lp_state s = {.two = true,
                .p = norm_type,
                .kh = kh,
                .kw = kw,
                .sh = o.stride[0],
                .sw = o.stride[1],
                .ceil_mode = o.ceil_mode};
  return lp_new(ctx, &s);
}
