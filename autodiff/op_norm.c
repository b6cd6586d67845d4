/* op_norm.c: normalisation. batch_norm is a composite of the engine's ops
 * (per-channel sums are sum_to to [1,C,1,...]), so its first and second
 * derivatives come from theirs, and a graph dump shows the statistics it
 * computes. Its running statistics are updated in place, outside the tape,
 * as PyTorch's buffers are. */
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
