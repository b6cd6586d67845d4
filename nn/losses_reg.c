/* losses_reg.c: the regression and divergence losses (L1, smooth L1,
 * Huber, KL divergence), made of ad_ ops as those of losses.c are (smooth
 * L1 and Huber of one op each, ad_smooth_l1 and ad_huber): the tape
 * derives their gradients, to any order. Each reproduces
 * PyTorch 1.13's values and gradients at the points where the formula
 * alone leaves a choice (a kink, a switch point, NaN, a zero target). */
#include "nn_internal.h"

#include <math.h>

/* l = |p - t|; d|x|/dx = sign(x), 0 at x = 0 and at NaN, as PyTorch's
 * abs (ad_abs's rule). */
ad_tensor *nn_l1_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red) {
  const char *fn = "l1_loss";
  ad_tensor *t = nn_loss_target(ctx, fn, "prediction", pred, target);
  if (!t || !nn_loss_check_reduction(ctx, fn, red, false)) return NULL;
  return nn_loss_reduce(ctx, ad_abs(ctx, ad_sub(ctx, pred, t)), red, pred);
}

/* PyTorch 1.13's smooth L1 and Huber losses, one op each (ad_smooth_l1,
 * ad_huber: their kernels' choices at the switch point |d| = k, at d = 0
 * with k = 0, for a NaN d, and k rounded to the dtype, are there), then
 * the reduction. */
static ad_tensor *piecewise(ad_ctx *ctx, const char *fn, ad_tensor *pred, ad_tensor *target,
                            nn_reduction red, double k, bool huber) {
  ad_tensor *t = nn_loss_target(ctx, fn, "prediction", pred, target);
  if (!t || !nn_loss_check_reduction(ctx, fn, red, false)) return NULL;
  /* PyTorch refuses beta < 0 and delta <= 0, NaN either way */
  if (huber ? !(k > 0) : !(k >= 0)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: %s %g must be %s", fn, huber ? "delta" : "beta", k,
                 huber ? "positive" : ">= 0");
    return NULL;
  }
  ad_tensor *l = huber ? ad_huber(ctx, pred, t, k) : ad_smooth_l1(ctx, pred, t, k);
  return nn_loss_reduce(ctx, l, red, pred);
}

ad_tensor *nn_smooth_l1_loss_beta(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red,
                                  double beta) {
  return piecewise(ctx, "smooth_l1_loss", pred, target, red, beta, false);
}

ad_tensor *nn_smooth_l1_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red) {
  return piecewise(ctx, "smooth_l1_loss", pred, target, red, 1.0, false);
}

ad_tensor *nn_huber_loss_delta(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red,
                               double delta) {
  return piecewise(ctx, "huber_loss", pred, target, red, delta, true);
}

ad_tensor *nn_huber_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red) {
  return piecewise(ctx, "huber_loss", pred, target, red, 1.0, true);
}

/* PyTorch 1.13's kl_div, with x log-probabilities:
 *   l = xlogy(t, t) - t x         (xlogy(t, t) = t log t, 0 at t = 0)
 *   l = exp(t) (t - x)            (log_target)
 * dl/dx = -t, or -exp(t); dl/dt = log t + 1 - x, or exp(t) (t - x + 1).
 * xlogy(t, t) is t log(where(t = 0, 1, t)): 0 at t = 0 with no infinite
 * log on the way (anomaly mode), NaN for t < 0 or NaN. Its gradient at
 * t = 0 is PyTorch's NaN (its xlogy's derivative there holds t / t =
 * 0/0): a term of value 0 whose gradient is 0/0 exactly there is added
 * when t requires a gradient (sqrt(u)^2, u = where(t = 0, t, 1): dy * 0 /
 * (2 sqrt 0) at t = 0, 0 elsewhere). A value 0 * -inf (t = 0, x = -inf)
 * is NaN, as in PyTorch. */
ad_tensor *nn_kl_div_loss(ad_ctx *ctx, ad_tensor *input, ad_tensor *target, nn_reduction red,
                          bool log_target) {
  const char *fn = "kl_div_loss";
  ad_tensor *t = nn_loss_target(ctx, fn, "input", input, target);
  if (!t || !nn_loss_check_reduction(ctx, fn, red, true)) return NULL;
  ad_tensor *l;
  if (log_target) {
    l = ad_mul(ctx, ad_exp(ctx, t), ad_sub(ctx, t, input));
  } else {
    ad_dtype dt = input->dtype;
    ad_tensor *one = ad_scalar(ctx, dt, 1.0);
    ad_tensor *tz = ad_eq(ctx, t, ad_scalar(ctx, dt, 0.0));
    ad_tensor *xl = ad_mul(ctx, t, ad_log(ctx, ad_where(ctx, tz, one, t)));
    if (ad_tensor_requires_grad(t) && ad_grad_enabled(ctx)) {
      ad_tensor *r = ad_sqrt(ctx, ad_where(ctx, tz, t, one));
      xl = ad_add(ctx, xl, ad_where(ctx, tz, ad_mul(ctx, r, r), ad_scalar(ctx, dt, 0.0)));
    }
    l = ad_sub(ctx, xl, ad_mul(ctx, t, input));
  }
  return nn_loss_reduce(ctx, l, red, input);
}
