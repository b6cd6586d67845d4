/* losses_reg.c: the regression and divergence losses (L1, smooth L1,
 * Huber, KL divergence), composed from ad_ ops as those of losses.c are:
 * the tape derives their gradients, to any order. Each reproduces
 * PyTorch 1.13's values and gradients at the points where the formula
 * alone leaves a choice (a kink, a switch point, NaN, a zero target). */
#include "nn_internal.h"

#include <float.h>
#include <math.h>

/* l = |p - t|; d|x|/dx = sign(x), 0 at x = 0 and at NaN, as PyTorch's
 * abs (ad_abs's rule). */
ad_tensor *nn_l1_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red) {
  const char *fn = "l1_loss";
  ad_tensor *t = nn_loss_target(ctx, fn, "prediction", pred, target);
  if (!t || !nn_loss_check_reduction(ctx, fn, red, false)) return NULL;
  return nn_loss_reduce(ctx, ad_abs(ctx, ad_sub(ctx, pred, t)), red, pred);
}

/* k as a tensor of dtype dt holds it (PyTorch converts beta and delta to
 * the tensors' dtype): for f32, a value beyond float's range rounds to
 * FLT_MAX up to half an ulp above it and to infinity from there (a C cast
 * would be undefined there). k >= 0 here. */
static double in_dtype(double k, ad_dtype dt) {
  if (dt != AD_F32) return k;
  if (k > FLT_MAX) return k < 0x1.ffffffp127 ? FLT_MAX : INFINITY;
  return (double)(float)k;
}

/* With d = p - t and k the parameter (beta, delta), as PyTorch 1.13's
 * kernels:
 *   smooth L1  l = |d| < k ? 0.5 d^2 / k : |d| - 0.5 k
 *   Huber      l = |d| < k ? 0.5 d^2     : k (|d| - 0.5 k)
 *   dl/dd      = |d| >= k ? s [k] : d / k [d],  s = d > 0 ? 1 : -1
 * so the switch point |d| = k takes the linear side (gradient +-1 or +-k,
 * second derivative 0), d = 0 with k = 0 gets s = -1 (the target -1 too),
 * and a NaN d (its
 * comparisons false) the quadratic side: NaN value and gradient.
 * The linear side is s d (s a constant of the tape, no gradient), equal to
 * |d| there. The quadratic side reads dq = where(linear, 0, d): where the
 * linear side is taken it is 0, so its gradient there is 0, not 0 * inf =
 * NaN at an infinite d, and nothing is computed that is not finite for
 * finite inputs (anomaly mode); with k = 0 it is reached only by NaN d,
 * and only d^2 (NaN) is taken, not 0/0. */
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
  ad_dtype dt = pred->dtype;
  k = in_dtype(k, dt); /* a tiny k may become 0 in f32, as in PyTorch */
  ad_tensor *d = ad_sub(ctx, pred, t), *zero = ad_scalar(ctx, dt, 0.0);
  ad_tensor *lin = ad_ge(ctx, ad_abs(ctx, d), ad_scalar(ctx, dt, k));
  ad_tensor *s =
      ad_where(ctx, ad_gt(ctx, d, zero), ad_scalar(ctx, dt, 1.0), ad_scalar(ctx, dt, -1.0));
  /* s d - 0.5 k; + 0.0 makes -0.5 * 0 a +0, so that d = +0 (s d = -0)
   * with k = 0 gives PyTorch's +0 */
  ad_tensor *sd = ad_mul(ctx, s, d);
  if (!huber && k == 0 && ad_tensor_requires_grad(t)) {
    /* PyTorch takes the target's gradient with the kernel on t - p, so at
     * d = 0 it is -1 as well, not -s = +1: e = u - detach(u), u = where(d
     * = 0, t, 0), is 0 and sends 1 to t only there, -2 e moves it to -1 */
    ad_tensor *u = ad_where(ctx, ad_eq(ctx, d, zero), t, zero);
    sd = ad_sub(ctx, sd, ad_mul_scalar(ctx, ad_sub(ctx, u, ad_detach(ctx, u)), 2.0));
  }
  ad_tensor *a = ad_add_scalar(ctx, sd, -0.5 * k + 0.0);
  ad_tensor *dq = ad_where(ctx, lin, zero, d);
  ad_tensor *q = huber || k > 0 ? ad_mul_scalar(ctx, ad_square(ctx, dq), 0.5) : ad_square(ctx, dq);
  if (huber)
    a = ad_mul_scalar(ctx, a, k);
  else if (k > 0)
    q = ad_div_scalar(ctx, q, k);
  return nn_loss_reduce(ctx, ad_where(ctx, lin, a, q), red, pred);
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
