/* op_norm.c: normalisation. batch_norm is a composite of the engine's ops
 * (per-channel sums are sum_to to [1,C,1,...]), so its first and second
 * derivatives come from theirs, and a graph dump shows the statistics it
 * computes. Its running statistics are updated in place, outside the tape,
 * as PyTorch's buffers are. layer_norm is one op (a loop per row forward),
 * whose backward is written with the same ops, so it differentiates again. */
#include "ops.h"

#include <math.h>

/* ----------------------------------------------------------- batch_norm
 *
 *   training:  mu = mean_c(x), var = mean_c((x - mu)^2)       (biased)
 *              running_mean = (1 - m) running_mean + m mu
 *              running_var  = (1 - m) running_var  + m var M / (M - 1)
 *   eval:      mu = running_mean, var = running_var
 *   y = (x - mu) / sqrt(var + eps) * weight + bias
 *
 * mean_c is the mean over every dim but 1 (N, and H, W, ...), M elements
 * per channel. */

/* t ([C]) seen as [1, C, 1, ...] for x's rank. */
static ad_tensor *per_channel(ad_ctx *ctx, ad_tensor *t, int ndim, int64_t c) {
  int64_t shape[AD_MAX_DIMS];
  for (int k = 0; k < ndim; k++) shape[k] = k == 1 ? c : 1;
  return ad_reshape(ctx, t, ndim, shape);
}

/* Checks an optional per-channel tensor: [C], x's dtype. */
static bool check_vec(ad_ctx *ctx, const ad_tensor *t, const char *what, const ad_tensor *x) {
  char a[64], b[64];
  if (!t) return true;
  if (!ad_tensor_is_valid(t)) {
    ad_set_error(ctx, AD_ERR_STATE, "batch_norm: %s was freed", what);
    return false;
  }
  if (t->ndim != 1 || t->shape[0] != x->shape[1]) {
    ad_set_error(ctx, AD_ERR_SHAPE, "batch_norm: %s %s does not match the %lld channels of x %s",
                 what, ad_shape_str(t, a, sizeof a), (long long)x->shape[1],
                 ad_shape_str(x, b, sizeof b));
    return false;
  }
  if (t->dtype != x->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "batch_norm: %s is %s, x is %s", what, ad_dtype_name(t->dtype),
                 ad_dtype_name(x->dtype));
    return false;
  }
  return true;
}

/* running = (1 - m) running + m stat * scale, elementwise over C values. */
static void update_running(ad_tensor *running, const ad_tensor *stat, double m, double scale) {
  for (int64_t c = 0; c < running->size; c++)
    ad_tensor_set(running, c,
                  (1 - m) * ad_tensor_get(running, c) + m * ad_tensor_get(stat, c) * scale);
}

ad_tensor *ad_batch_norm(ad_ctx *ctx, ad_tensor *x, ad_tensor *weight, ad_tensor *bias,
                         ad_tensor *running_mean, ad_tensor *running_var, bool training,
                         double momentum, double eps) {
  if (!ctx) return NULL;
  if (!x) {
    ad_set_null_error(ctx, "batch_norm: x is NULL");
    return NULL;
  }
  char a[64];
  if (!ad_is_float(x->dtype) || x->ndim < 2) {
    ad_set_error(ctx, x->ndim < 2 ? AD_ERR_SHAPE : AD_ERR_DTYPE,
                 "batch_norm: x %s %s must be float with at least 2 dims [N, C, ...]",
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
    return NULL;
  }
  if (!check_vec(ctx, weight, "weight", x) || !check_vec(ctx, bias, "bias", x) ||
      !check_vec(ctx, running_mean, "running_mean", x) ||
      !check_vec(ctx, running_var, "running_var", x))
    return NULL;
  if (!(eps >= 0) || !isfinite(eps) || !(momentum >= 0 && momentum <= 1)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "batch_norm: eps %g must be finite and >= 0, momentum %g in [0, 1]", eps,
                 momentum);
    return NULL;
  }
  if ((running_mean == NULL) != (running_var == NULL)) {
    ad_set_error(ctx, AD_ERR_ARG, "batch_norm: give both running statistics or neither");
    return NULL;
  }
  int nd = x->ndim;
  int64_t C = x->shape[1], M = C ? x->size / C : 0;
  ad_tensor *mu, *var, *y;
  if (training) {
    if (M <= 1) { /* PyTorch refuses too: one value has no unbiased variance */
      ad_set_error(ctx, AD_ERR_SHAPE,
                   "batch_norm: x %s has %lld value(s) per channel; training needs more than 1",
                   ad_shape_str(x, a, sizeof a), (long long)M);
      return NULL;
    }
    int64_t st[AD_MAX_DIMS];
    for (int k = 0; k < nd; k++) st[k] = k == 1 ? C : 1;
    mu = ad_mul_scalar(ctx, ad_sum_to(ctx, x, nd, st), 1.0 / (double)M);
    ad_tensor *d = ad_sub(ctx, x, mu);
    var = ad_mul_scalar(ctx, ad_sum_to(ctx, ad_mul(ctx, d, d), nd, st), 1.0 / (double)M);
    y = ad_mul(ctx, d, ad_pow_scalar(ctx, ad_add_scalar(ctx, var, eps), -0.5));
  } else {
    if (!running_mean) {
      ad_set_error(ctx, AD_ERR_ARG, "batch_norm: evaluation mode needs the running statistics");
      return NULL;
    }
    mu = per_channel(ctx, running_mean, nd, C);
    var = per_channel(ctx, running_var, nd, C);
    y = ad_mul(ctx, ad_sub(ctx, x, mu), ad_pow_scalar(ctx, ad_add_scalar(ctx, var, eps), -0.5));
  }
  if (weight) y = ad_mul(ctx, y, per_channel(ctx, weight, nd, C));
  if (bias) y = ad_add(ctx, y, per_channel(ctx, bias, nd, C));
  if (y && training && running_mean) { /* buffers: in place, not recorded; only on success */
    update_running(running_mean, mu, momentum, 1.0);
    update_running(running_var, var, momentum, (double)M / (double)(M - 1));
  }
  return y;
}

/* ----------------------------------------------------------- layer_norm
 *
 *   mu = mean_k(x), var = mean_k((x - mu)^2)     (biased, over the last k dims)
 *   xhat = (x - mu) / sqrt(var + eps),  y = xhat * weight + bias
 *   dx = (g - mean_k(g) - xhat mean_k(g xhat)) / sqrt(var + eps),  g = dy * weight
 *   dweight = sum over rows of dy xhat,  dbias = sum over rows of dy
 *
 * mean_k is the mean over the normalized shape (the last k dims, M
 * elements), one per row. The forward is one loop per row; the backward
 * recomputes the statistics with the engine's ops (sum_to to [..., 1, ...,
 * 1]) and is written with them, so it can be differentiated again. */

/* Checks an optional weight or bias: the normalized shape, x's dtype. */
static ad_status check_affine(const ad_call *c, const ad_tensor *t, const char *what) {
  const ad_layer_norm_attrs *at = &c->attrs->layer_norm;
  const ad_tensor *x = c->in[0];
  char a[64], b[64];
  bool ok = t->ndim == at->ndim;
  for (int k = 0; ok && k < at->ndim; k++) ok = t->shape[k] == at->dims[k];
  if (!ok)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: %s %s is not the normalized shape (the last %d dims of x %s)", c->name,
                        what, ad_shape_str(t, a, sizeof a), at->ndim, ad_shape_str(x, b, sizeof b));
  if (t->dtype != x->dtype)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: %s is %s, x is %s", c->name, what,
                        ad_dtype_name(t->dtype), ad_dtype_name(x->dtype));
  return AD_OK;
}

static ad_status layer_norm_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  const ad_layer_norm_attrs *at = &c->attrs->layer_norm;
  char a[64], ns[160];
  if (ad_check_float_same(c->ctx, c->name, 1, c->in) != AD_OK) return ad_last_status(c->ctx);
  if (at->ndim < 1 || at->ndim > AD_MAX_DIMS)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: normalized_shape has %d dims; 1..%d are allowed",
                        c->name, at->ndim, AD_MAX_DIMS);
  int len = snprintf(ns, sizeof ns, "[");
  for (int k = 0; k < at->ndim && len > 0 && (size_t)len < sizeof ns; k++)
    len +=
        snprintf(ns + len, sizeof ns - (size_t)len, "%s%lld", k ? "," : "", (long long)at->dims[k]);
  if (len > 0 && (size_t)len < sizeof ns) snprintf(ns + len, sizeof ns - (size_t)len, "]");
  bool ok = at->ndim <= x->ndim;
  for (int k = 0; ok && k < at->ndim; k++) ok = x->shape[x->ndim - at->ndim + k] == at->dims[k];
  if (!ok)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: normalized_shape %s does not match the last %d dims of x %s", c->name,
                        ns, at->ndim, ad_shape_str(x, a, sizeof a));
  if (!(at->eps >= 0) || !isfinite(at->eps))
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: eps %g must be finite and >= 0", c->name, at->eps);
  static const char *const what[3] = {"x", "weight", "bias"};
  for (int k = 1; k < c->n; k++) {
    ad_status st = check_affine(c, c->in[k], what[k]);
    if (st != AD_OK) return st;
  }
  c->out->dtype = x->dtype;
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  return AD_OK;
}

/* Rows of M elements: mean and biased variance in double (two passes),
 * then y = (x - mu) rstd [* w] [+ b]. */
#define LN_FWD(T)                                                                                  \
  do {                                                                                             \
    const T *X = x->data, *W = w ? w->data : NULL, *B = b ? b->data : NULL;                        \
    T *Y = c->out->data;                                                                           \
    for (int64_t r = 0; r < rows; r++) {                                                           \
      const T *xr = X + r * M;                                                                     \
      T *yr = Y + r * M;                                                                           \
      double mu = 0, var = 0;                                                                      \
      for (int64_t i = 0; i < M; i++) mu += (double)xr[i];                                         \
      mu /= (double)M;                                                                             \
      for (int64_t i = 0; i < M; i++) var += ((double)xr[i] - mu) * ((double)xr[i] - mu);          \
      double rstd = 1.0 / sqrt(var / (double)M + eps);                                             \
      for (int64_t i = 0; i < M; i++) {                                                            \
        double v = ((double)xr[i] - mu) * rstd;                                                    \
        if (W) v *= (double)W[i];                                                                  \
        if (B) v += (double)B[i];                                                                  \
        yr[i] = (T)v;                                                                              \
      }                                                                                            \
    }                                                                                              \
  } while (0)

static void layer_norm_fwd(const ad_call *c) {
  const ad_tensor *x = c->in[0], *w = c->n > 1 ? c->in[1] : NULL, *b = c->n > 2 ? c->in[2] : NULL;
  const ad_layer_norm_attrs *at = &c->attrs->layer_norm;
  double eps = at->eps;
  int64_t M = 1;
  for (int k = 0; k < at->ndim; k++) M *= at->dims[k];
  if (M == 0 || x->size == 0) return; /* no element to write */
  int64_t rows = x->size / M;
  if (x->dtype == AD_F32)
    LN_FWD(float);
  else
    LN_FWD(double);
}

/* In float64 for float32 inputs (casts, which differentiate to casts):
 * dx is a difference of terms of order dy that cancel, and a dozen float32
 * roundings would leave it about 1e-7 off, as far as PyTorch's float32
 * kernel is from the exact value; this way it is the exact value rounded. */
static ad_status layer_norm_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0], *w = c->n > 1 ? c->in[1] : NULL, *dy = c->gout;
  const ad_layer_norm_attrs *at = &c->attrs->layer_norm;
  ad_dtype dt = x->dtype;
  if (dt == AD_F32) {
    x = ad_cast(ctx, x, AD_F64);
    w = w ? ad_cast(ctx, w, AD_F64) : NULL;
    dy = ad_cast(ctx, dy, AD_F64);
  }
  int nd = c->in[0]->ndim, k = at->ndim;
  int64_t st[AD_MAX_DIMS], M = 1;
  for (int d = 0; d < nd; d++) st[d] = d < nd - k ? c->in[0]->shape[d] : 1;
  for (int d = 0; d < k; d++) M *= at->dims[d];
  double inv = M ? 1.0 / (double)M : 0.0; /* M = 0: x is empty, and so is every gradient */
  /* the statistics again, as ops of x */
  ad_tensor *xc = ad_sub(ctx, x, ad_mul_scalar(ctx, ad_sum_to(ctx, x, nd, st), inv));
  ad_tensor *var = ad_mul_scalar(ctx, ad_sum_to(ctx, ad_mul(ctx, xc, xc), nd, st), inv);
  ad_tensor *rstd = ad_pow_scalar(ctx, ad_add_scalar(ctx, var, at->eps), -0.5);
  ad_tensor *xhat = ad_mul(ctx, xc, rstd);
  ad_tensor *g[3] = {NULL, NULL, NULL};
  if (c->needs[0]) {
    ad_tensor *gw = w ? ad_mul(ctx, dy, w) : dy;
    ad_tensor *mg = ad_mul_scalar(ctx, ad_sum_to(ctx, gw, nd, st), inv);
    ad_tensor *mgx = ad_mul_scalar(ctx, ad_sum_to(ctx, ad_mul(ctx, gw, xhat), nd, st), inv);
    g[0] = ad_mul(ctx, ad_sub(ctx, ad_sub(ctx, gw, mg), ad_mul(ctx, xhat, mgx)), rstd);
  }
  if (c->n > 1 && c->needs[1]) g[1] = ad_sum_to(ctx, ad_mul(ctx, dy, xhat), k, at->dims);
  if (c->n > 2 && c->needs[2]) g[2] = ad_sum_to(ctx, dy, k, at->dims);
  for (int j = 0; j < c->n; j++) {
    if (!c->needs[j]) continue;
    ad_status s = ad_call_set_grad(c, j, dt == AD_F32 ? ad_cast(ctx, g[j], dt) : g[j]);
    if (s != AD_OK) return s;
  }
  return AD_OK;
}

ad_tensor *ad_layer_norm(ad_ctx *ctx, ad_tensor *x, int ndim, const int64_t *normalized_shape,
                         ad_tensor *weight, ad_tensor *bias, double eps) {
  if (!ctx) return NULL;
  if (!x) {
    ad_set_null_error(ctx, "layer_norm: x is NULL");
    return NULL;
  }
  if (ndim < 1 || ndim > AD_MAX_DIMS || !normalized_shape) {
    ad_set_error(ctx, normalized_shape ? AD_ERR_ARG : AD_ERR_NULL,
                 "layer_norm: normalized_shape %s with %d dims; 1..%d are allowed",
                 normalized_shape ? "given" : "is NULL", ndim, AD_MAX_DIMS);
    return NULL;
  }
  ad_attrs at = {.layer_norm = {.ndim = ndim, .eps = eps}};
  for (int k = 0; k < ndim; k++) at.layer_norm.dims[k] = normalized_shape[k];
  ad_tensor *in[3] = {x, weight, bias};
  if (weight || !bias)
    return ad_op_apply(ctx, AD_OP_LAYER_NORM, bias ? 3 : weight ? 2 : 1, in, &at);
  /* a bias without a weight: the op's optional inputs are trailing */
  ad_tensor *y = ad_op_apply(ctx, AD_OP_LAYER_NORM, 1, in, &at);
  if (!y) return NULL;
  char a[64], b[64];
  bool ok = bias->ndim == ndim;
  for (int d = 0; ok && d < ndim; d++) ok = bias->shape[d] == normalized_shape[d];
  if (!ok) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "layer_norm: bias %s is not the normalized shape (the last %d dims of x %s)",
                 ad_shape_str(bias, a, sizeof a), ndim, ad_shape_str(x, b, sizeof b));
    return NULL;
  }
  if (bias->dtype != x->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "layer_norm: bias is %s, x is %s", ad_dtype_name(bias->dtype),
                 ad_dtype_name(x->dtype));
    return NULL;
  }
  return ad_add(ctx, y, bias);
}

/* x [3,4] over the last dim with weight and bias; [2,3,4] over the last two;
 * [2,5] without affine; [2,3,4] with a weight only */
static int layer_norm_sample(const ad_sample_call *s) {
  static const int64_t s2[2] = {3, 4}, s3[3] = {2, 3, 4}, s5[2] = {2, 5};
  static const struct {
    int xnd, k, n;
    const int64_t *xs;
  } v[4] = {{2, 1, 3, s2}, {3, 2, 3, s3}, {2, 1, 1, s5}, {3, 1, 2, s3}};
  if (s->variant > 3) return 0;
  int xnd = v[s->variant].xnd, k = v[s->variant].k, n = v[s->variant].n;
  const int64_t *xs = v[s->variant].xs;
  s->attrs->layer_norm = (ad_layer_norm_attrs){.ndim = k, .eps = 1e-5};
  for (int d = 0; d < k; d++) s->attrs->layer_norm.dims[d] = xs[xnd - k + d];
  s->in[0] = ad_sample_tensor(s, xnd, xs, -2, 2, true);
  for (int j = 1; j < n; j++)
    s->in[j] = ad_sample_tensor(s, k, xs + xnd - k, j == 1 ? 0.5 : -1, j == 1 ? 1.5 : 1, true);
  for (int j = 0; j < n; j++)
    if (!s->in[j]) return -1;
  return n;
}

const ad_op_def ad_def_layer_norm = {
    .name = "layer_norm",
    .arity = 3,
    .min_arity = 1,
    .attrs = AD_ATTRS_LAYER_NORM,
    .shape = layer_norm_shape,
    .forward = layer_norm_fwd,
    .backward = layer_norm_bwd,
    .sample = layer_norm_sample,
    .math = "y = (x - mean_k(x)) / sqrt(var_k(x) + eps) * w + b",
    .inputs = {"x", "w", "b"},
    .grads = {"(g - mean_k(g) - xhat mean_k(g xhat)) / sqrt(var_k(x) + eps), g = dy * w",
              "sum_rows(dy * xhat)", "sum_rows(dy)"},
};
