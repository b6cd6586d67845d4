/* losses_pair.c: the likelihood, ranking and embedding losses (Gaussian
 * and Poisson NLL, margin ranking, hinge embedding, soft margin, cosine
 * embedding, triplet margin), composed from ad_ ops as losses_reg.c's: the
 * tape derives their gradients, to any order. Each reproduces PyTorch
 * 1.13's values and gradients where the formula leaves a choice (the kink
 * of a margin, a clamped variance, a zero vector, NaN). */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

/* 2 pi, as torch's 2 * c10::pi<double> and 2 * math.pi */
#define TWO_PI 6.283185307179586

/* x (named xn in messages) float; o (named on) of x's dtype and size,
 * viewed with x's shape. Returns the o to use, or NULL with the error set
 * (as nn_loss_target, which names its second argument "target"). */
static ad_tensor *like(ad_ctx *ctx, const char *fn, const char *xn, ad_tensor *x, const char *on,
                       ad_tensor *o) {
  char a[64], b[64];
  if (!ctx || !x || !o) {
    nn_null_arg(ctx, fn, x ? on : xn);
    return NULL;
  }
  if (nn_check_input(ctx, fn, xn, x) != AD_OK || nn_check_input(ctx, fn, on, o) != AD_OK)
    return NULL;
  if (x->dtype != AD_F32 && x->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: %s %s is %s; a float dtype is needed", fn, xn,
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
    return NULL;
  }
  if (o->dtype != x->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: %s %s is %s, the %s %s is %s", fn, on,
                 ad_shape_str(o, a, sizeof a), ad_dtype_name(o->dtype), xn,
                 ad_shape_str(x, b, sizeof b), ad_dtype_name(x->dtype));
    return NULL;
  }
  if (o->size != x->size) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: %s %s and %s %s differ in size", fn, xn,
                 ad_shape_str(x, a, sizeof a), on, ad_shape_str(o, b, sizeof b));
    return NULL;
  }
  bool same = o->ndim == x->ndim;
  for (int k = 0; same && k < x->ndim; k++) same = o->shape[k] == x->shape[k];
  return same ? o : ad_reshape(ctx, o, x->ndim, x->shape);
}

/* A scalar argument that must not be NaN (PyTorch takes one and returns
 * NaN): false with AD_ERR_ARG naming it. */
static bool not_nan(ad_ctx *ctx, const char *fn, const char *what, double v) {
  if (!isnan(v)) return true;
  ad_set_error(ctx, AD_ERR_ARG, "%s: %s is NaN", fn, what);
  return false;
}

/* eps finite and >= 0. */
static bool check_eps(ad_ctx *ctx, const char *fn, double eps) {
  if (eps >= 0 && isfinite(eps)) return true;
  ad_set_error(ctx, AD_ERR_ARG, "%s: eps %g must be finite and >= 0", fn, eps);
  return false;
}

/* The gradient PyTorch gives t where a term that was masked to 0 (its
 * value) holds log t or 1/t: NaN where t <= 0 (0 * inf, 0 * NaN), 0
 * elsewhere. A term of value 0 whose derivative there is dy * 0 / (2 sqrt
 * 0) (sqrt(u)^2, u = where(t <= 0, t - detach(t), 1), as kl_div's); only
 * when t requires a gradient on a recording tape. NULL: no such term. */
static ad_tensor *nan_grad_at_nonpositive(ad_ctx *ctx, ad_tensor *t) {
  if (!ad_tensor_requires_grad(t) || !ad_grad_enabled(ctx)) return NULL;
  ad_dtype dt = t->dtype;
  ad_tensor *zero = ad_scalar(ctx, dt, 0.0);
  ad_tensor *np = ad_le(ctx, t, zero);
  ad_tensor *u = ad_where(ctx, np, ad_sub(ctx, t, ad_detach(ctx, t)), ad_scalar(ctx, dt, 1.0));
  ad_tensor *r = ad_sqrt(ctx, u);
  return ad_where(ctx, np, ad_mul(ctx, r, r), zero);
}

/* ------------------------------------------------------- Gaussian NLL */

/* PyTorch 1.13's F.gaussian_nll_loss:
 *   l = 0.5 (log v + (x - t)^2 / v) [+ 0.5 log(2 pi)],  v = max(var, eps)
 * the clamp done in place under no_grad on a clone of var: v's value is
 * clamped but its gradient passes to var unmasked, also where var < eps
 * (dl/dvar = 0.5 (1/v - d^2/v^2) at v = eps there). Here v = where(c =
 * var, var, c + (var - detach(var))), c = clamp(detach(var), eps): c
 * exactly where clamped, with var's gradient 1 everywhere (NaN var: NaN,
 * gradient passed, as torch). var has input's shape, or input's without
 * its last dim (then viewed with a last dim 1), or input's with a last dim
 * 1 (both homoscedastic), as torch 1.13 takes it. */
ad_tensor *nn_gaussian_nll_loss(ad_ctx *ctx, ad_tensor *input, ad_tensor *target, ad_tensor *var,
                                bool full, double eps, nn_reduction red) {
  const char *fn = "gaussian_nll_loss";
  char a[64], b[64];
  ad_tensor *t = nn_loss_target(ctx, fn, "input", input, target);
  if (!t) return NULL;
  if (!var) {
    nn_null_arg(ctx, fn, "var");
    return NULL;
  }
  if (nn_check_input(ctx, fn, "var", var) != AD_OK) return NULL;
  if (var->dtype != input->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: var %s is %s, the input %s is %s", fn,
                 ad_shape_str(var, a, sizeof a), ad_dtype_name(var->dtype),
                 ad_shape_str(input, b, sizeof b), ad_dtype_name(input->dtype));
    return NULL;
  }
  int n = input->ndim;
  bool same = var->ndim == n, lead = n > 0 && var->ndim == n - 1;
  for (int k = 0; same && k < n; k++) same = var->shape[k] == input->shape[k];
  for (int k = 0; lead && k < n - 1; k++) lead = var->shape[k] == input->shape[k];
  bool last1 = n > 0 && var->ndim == n && var->shape[n - 1] == 1;
  for (int k = 0; last1 && k < n - 1; k++) last1 = var->shape[k] == input->shape[k];
  if (!same && !lead && !last1) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: var %s is neither input's shape %s nor that shape without its last dim or "
                 "with a last dim 1",
                 fn, ad_shape_str(var, a, sizeof a), ad_shape_str(input, b, sizeof b));
    return NULL;
  }
  if (!nn_loss_check_reduction(ctx, fn, red, false) || !check_eps(ctx, fn, eps) ||
      !nn_f32_setting_ok(ctx, fn, input, "eps", eps))
    return NULL;
  for (int64_t i = 0; i < var->size; i++) { /* torch.any(var < 0): NaN passes */
    if (ad_tensor_get(var, i) < 0) {
      ad_set_error(ctx, AD_ERR_ARG, "%s: var %g at element %lld of %s is negative", fn,
                   ad_tensor_get(var, i), (long long)i, ad_shape_str(var, a, sizeof a));
      return NULL;
    }
  }
  ad_tensor *v = var;
  if (lead) {
    int64_t s[AD_MAX_DIMS];
    for (int k = 0; k < n - 1; k++) s[k] = input->shape[k];
    s[n - 1] = 1;
    v = ad_reshape(ctx, var, n, s);
  }
  ad_tensor *c = ad_clamp(ctx, ad_detach(ctx, v), eps, INFINITY);
  v = ad_where(ctx, ad_eq(ctx, c, v), v, ad_add(ctx, c, ad_sub(ctx, v, ad_detach(ctx, v))));
  ad_tensor *q = ad_div(ctx, ad_square(ctx, ad_sub(ctx, input, t)), v);
  ad_tensor *l = ad_mul_scalar(ctx, ad_add(ctx, ad_log(ctx, v), q), 0.5);
  if (full) l = ad_add_scalar(ctx, l, 0.5 * log(TWO_PI));
  return nn_loss_reduce(ctx, l, red, input);
}

/* -------------------------------------------------------- Poisson NLL */

/* PyTorch 1.13's torch.poisson_nll_loss:
 *   l = exp(x) - t x                 (log_input)
 *   l = x - t log(x + eps)           (otherwise)
 * and with full the Stirling term t log t - t + 0.5 log(2 pi t) where t >
 * 1 (masked_fill(t <= 1, 0) elsewhere). The term is computed on ts =
 * where(t <= 1, 2, t), so no log of 0 or of a negative t is taken for
 * finite inputs (anomaly mode); torch's target gradient through the mask
 * is 0 where 0 < t <= 1 and NaN where t <= 0 (0 * log 0, 0 / 0), added
 * by nan_grad_at_nonpositive. A NaN t compares false: NaN term. */
ad_tensor *nn_poisson_nll_loss(ad_ctx *ctx, ad_tensor *input, ad_tensor *target, bool log_input,
                               bool full, double eps, nn_reduction red) {
  const char *fn = "poisson_nll_loss";
  ad_tensor *t = nn_loss_target(ctx, fn, "input", input, target);
  if (!t || !nn_loss_check_reduction(ctx, fn, red, false) || !check_eps(ctx, fn, eps)) return NULL;
  ad_dtype dt = input->dtype;
  ad_tensor *l;
  if (log_input)
    l = ad_sub(ctx, ad_exp(ctx, input), ad_mul(ctx, t, input));
  else
    l = ad_sub(ctx, input, ad_mul(ctx, t, ad_log(ctx, ad_add_scalar(ctx, input, eps))));
  if (full) {
    ad_tensor *small = ad_le(ctx, t, ad_scalar(ctx, dt, 1.0));
    ad_tensor *ts = ad_where(ctx, small, ad_scalar(ctx, dt, 2.0), t);
    ad_tensor *st = ad_sub(ctx, ad_mul(ctx, ts, ad_log(ctx, ts)), ts);
    st = ad_add(ctx, st, ad_mul_scalar(ctx, ad_log(ctx, ad_mul_scalar(ctx, ts, TWO_PI)), 0.5));
    l = ad_add(ctx, l, ad_where(ctx, small, ad_scalar(ctx, dt, 0.0), st));
    ad_tensor *g = nan_grad_at_nonpositive(ctx, t);
    if (g) l = ad_add(ctx, l, g);
  }
  return nn_loss_reduce(ctx, l, red, input);
}

/* ---------------------------------------------------- margin losses */

/* l = max(0, -y (x1 - x2) + margin), torch's clamp_min: at the kink
 * (value 0) the gradient passes (ad_clamp's inclusive bound), at NaN it
 * is 0. y may take any value and receives -(x1 - x2) where active. */
ad_tensor *nn_margin_ranking_loss(ad_ctx *ctx, ad_tensor *x1, ad_tensor *x2, ad_tensor *y,
                                  double margin, nn_reduction red) {
  const char *fn = "margin_ranking_loss";
  ad_tensor *b = like(ctx, fn, "x1", x1, "x2", x2);
  if (!b) return NULL;
  ad_tensor *t = like(ctx, fn, "x1", x1, "target", y);
  if (!t || !nn_loss_check_reduction(ctx, fn, red, false) || !not_nan(ctx, fn, "margin", margin))
    return NULL;
  ad_tensor *z = ad_add_scalar(ctx, ad_mul(ctx, ad_neg(ctx, t), ad_sub(ctx, x1, b)), margin);
  return nn_loss_reduce(ctx, ad_clamp(ctx, z, 0.0, INFINITY), red, x1);
}

/* torch 1.13's kernel: where(y != 1, max(0, margin - x), 0) + where(y !=
 * -1, x, 0), so a y other than +-1 (NaN too) takes both terms; at the kink
 * margin - x = 0 the gradient -1 passes (clamp_min's rule). No gradient
 * to y. */
ad_tensor *nn_hinge_embedding_loss(ad_ctx *ctx, ad_tensor *x, ad_tensor *y, double margin,
                                   nn_reduction red) {
  const char *fn = "hinge_embedding_loss";
  ad_tensor *t = nn_loss_target(ctx, fn, "input", x, y);
  if (!t || !nn_loss_check_reduction(ctx, fn, red, false) || !not_nan(ctx, fn, "margin", margin) ||
      !nn_f32_setting_ok(ctx, fn, x, "margin", margin))
    return NULL;
  ad_dtype dt = x->dtype;
  ad_tensor *zero = ad_scalar(ctx, dt, 0.0);
  ad_tensor *m = ad_clamp(ctx, ad_rsub_scalar(ctx, x, margin), 0.0, INFINITY);
  ad_tensor *lm = ad_where(ctx, ad_eq(ctx, t, ad_scalar(ctx, dt, 1.0)), zero, m);
  ad_tensor *lx = ad_where(ctx, ad_eq(ctx, t, ad_scalar(ctx, dt, -1.0)), zero, x);
  return nn_loss_reduce(ctx, ad_add(ctx, lm, lx), red, x);
}

/* l = log(1 + exp(-y x)) as softplus(-y x) (ad_softplus: torch's
 * threshold 20, within exp(-20) of torch's log1p(exp(-y x)), and finite
 * where torch's exp overflows to an infinite loss and a NaN gradient). */
ad_tensor *nn_soft_margin_loss(ad_ctx *ctx, ad_tensor *x, ad_tensor *y, nn_reduction red) {
  const char *fn = "soft_margin_loss";
  ad_tensor *t = nn_loss_target(ctx, fn, "input", x, y);
  if (!t || !nn_loss_check_reduction(ctx, fn, red, false)) return NULL;
  return nn_loss_reduce(ctx, ad_softplus(ctx, ad_mul(ctx, ad_neg(ctx, t), x)), red, x);
}

/* torch 1.13's kernel, per sample n (x1, x2 [N,D] and y [N], or [D] and a
 * 0-d y):
 *   cos = sum(x1 x2) / sqrt((sum(x1^2) + E) (sum(x2^2) + E))
 * with E torch's EPSILON, 1e-12 as a float (9.99999996e-13, also in f64:
 * its value and gradients at a zero vector show it),
 *   l = where(y = 1, 1 - cos, 0) + where(y = -1, max(0, cos - margin), 0)
 * so a zero vector has cos 0 (and a large, finite gradient), a y other
 * than +-1 gives 0; the clamp passes the gradient at its kink. */
ad_tensor *nn_cosine_embedding_loss(ad_ctx *ctx, ad_tensor *x1, ad_tensor *x2, ad_tensor *y,
                                    double margin, nn_reduction red) {
  const char *fn = "cosine_embedding_loss";
  char a[64], b[64];
  ad_tensor *o = like(ctx, fn, "x1", x1, "x2", x2);
  if (!o) return NULL;
  if (!y) {
    nn_null_arg(ctx, fn, "target");
    return NULL;
  }
  if (nn_check_input(ctx, fn, "target", y) != AD_OK) return NULL;
  if (x1->ndim != 1 && x1->ndim != 2) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: x1 %s: need [N,D] (or [D] for one pair)", fn,
                 ad_shape_str(x1, a, sizeof a));
    return NULL;
  }
  if (o != x2) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: x1 %s and x2 %s differ in shape", fn,
                 ad_shape_str(x1, a, sizeof a), ad_shape_str(x2, b, sizeof b));
    return NULL;
  }
  bool one = x1->ndim == 1;
  if (y->dtype != x1->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: target %s is %s, the x1 %s is %s", fn,
                 ad_shape_str(y, a, sizeof a), ad_dtype_name(y->dtype),
                 ad_shape_str(x1, b, sizeof b), ad_dtype_name(x1->dtype));
    return NULL;
  }
  if (one ? y->ndim != 0 : (y->ndim != 1 || y->shape[0] != x1->shape[0])) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: target %s does not fit x1 %s: need %s", fn,
                 ad_shape_str(y, a, sizeof a), ad_shape_str(x1, b, sizeof b),
                 one ? "a 0-d target for [D]" : "[N] for [N,D]");
    return NULL;
  }
  if (!nn_loss_check_reduction(ctx, fn, red, false) || !not_nan(ctx, fn, "margin", margin))
    return NULL;
  int ax = x1->ndim - 1;
  ad_dtype dt = x1->dtype;
  const double E = (double)1e-12f;
  ad_tensor *prod = ad_sum_axis(ctx, ad_mul(ctx, x1, x2), ax, false);
  ad_tensor *m1 = ad_add_scalar(ctx, ad_sum_axis(ctx, ad_mul(ctx, x1, x1), ax, false), E);
  ad_tensor *m2 = ad_add_scalar(ctx, ad_sum_axis(ctx, ad_mul(ctx, x2, x2), ax, false), E);
  ad_tensor *cos = ad_div(ctx, prod, ad_sqrt(ctx, ad_mul(ctx, m1, m2)));
  ad_tensor *zero = ad_scalar(ctx, dt, 0.0);
  ad_tensor *pos =
      ad_where(ctx, ad_eq(ctx, y, ad_scalar(ctx, dt, 1.0)), ad_rsub_scalar(ctx, cos, 1.0), zero);
  ad_tensor *neg = ad_clamp(ctx, ad_sub_scalar(ctx, cos, margin), 0.0, INFINITY);
  neg = ad_where(ctx, ad_eq(ctx, y, ad_scalar(ctx, dt, -1.0)), neg, zero);
  return nn_loss_reduce(ctx, ad_add(ctx, pos, neg), red, cos);
}

/* torch's pairwise_distance over the last dim: ||a - b + eps||_p, its
 * gradient 0 where the norm is 0 (torch's norm_backward mask; the sqrt or
 * pow of 0 would give inf * 0 here), p = 1 the sum of |d| (gradient
 * sign d), p = 2 sqrt(sum d^2), else (sum |d|^p)^(1/p). a and b
 * broadcast (the last dim of the result). */
ad_tensor *nn_pdist(ad_ctx *ctx, ad_tensor *a, ad_tensor *b, double p, double eps) {
  ad_dtype dt = a->dtype;
  ad_tensor *d = ad_add_scalar(ctx, ad_sub(ctx, a, b), eps);
  if (!d) return NULL;
  int ax = d->ndim - 1;
  if (p == 1) return ad_sum_axis(ctx, ad_abs(ctx, d), ax, false);
  ad_tensor *zero = ad_scalar(ctx, dt, 0.0), *s, *scale = NULL;
  if (p == 2) { /* d d, not square: where the square overflowed, sqrt
                 * passes dy = 0 and the slope dy d + dy d is 0, as torch's
                 * norm backward d (dy / n); square's (2 d) dy is inf * 0 */
    s = ad_sum_axis(ctx, ad_mul(ctx, d, d), ax, false);
  } else {
    /* |d|^p, for p < 1 with slope 0 times the upstream where d is 0
     * (torch's masked_fill of self == 0, so a NaN norm still gives NaN;
     * p |d|^(p - 1) is inf there, and inf * 0 NaN) */
    ad_tensor *ad = ad_abs(ctx, d);
    /* Rows whose largest |d|, m, is below 1: ||d||_p = m ||d / m||_p, m a
     * constant (the norm does not depend on it, to any order). The terms
     * are then at most 1 and their sum at least 1, so neither |d|^p
     * underflows nor sum^(1/p - 1) (the gradient) or sum^(1/p - 2) (the
     * second derivative) overflows for small distances, a large p or
     * float32 (p 30, |d| 0.04 in f32: the gradient was -inf, or NaN where
     * the loss was clamped; torch's is inf). Rows with m >= 1 (or 0, or
     * NaN) are left as they were, so a distance whose |d|^p overflows is
     * inf as torch's. */
    if (d->shape[ax] > 0) {
      ad_tensor *m = ad_max_axis(ctx, ad_detach(ctx, ad), ax, true);
      ad_tensor *one = ad_scalar(ctx, dt, 1.0);
      m = ad_where(ctx, ad_gt(ctx, m, zero), ad_where(ctx, ad_lt(ctx, m, one), m, one), one);
      ad = ad_div(ctx, ad, m);
      scale = m;
    }
    if (p < 1) {
      ad_tensor *dz = ad_eq(ctx, ad, zero);
      ad = ad_where(ctx, dz, ad_mul_scalar(ctx, ad, 0.0),
                    ad_pow_scalar(ctx, ad_where(ctx, dz, ad_scalar(ctx, dt, 1.0), ad), p));
    } else {
      ad = ad_pow_scalar(ctx, ad, p);
    }
    s = ad_sum_axis(ctx, ad, ax, false);
  }
  ad_tensor *z = ad_eq(ctx, s, zero);
  ad_tensor *sp = ad_where(ctx, z, ad_scalar(ctx, dt, 1.0), s);
  ad_tensor *n = p == 2 ? ad_sqrt(ctx, sp) : ad_pow_scalar(ctx, sp, 1.0 / p);
  if (scale && n) n = ad_mul(ctx, n, ad_reshape(ctx, scale, n->ndim, n->shape));
  return ad_where(ctx, z, zero, n);
}

/* torch 1.13's kernel: max(0, margin + d(a, p) - d(a, n)), d(a, n)
 * replaced by min(d(a, n), d(p, n)) with swap (ties share the gradient,
 * as torch's minimum); the clamp passes the gradient at its kink. */
ad_tensor *nn_triplet_margin_loss(ad_ctx *ctx, ad_tensor *anchor, ad_tensor *positive,
                                  ad_tensor *negative, double margin, double p, double eps,
                                  bool swap, nn_reduction red) {
  const char *fn = "triplet_margin_loss";
  char a[64], b[64];
  ad_tensor *ps = like(ctx, fn, "anchor", anchor, "positive", positive);
  if (!ps) return NULL;
  ad_tensor *ng = like(ctx, fn, "anchor", anchor, "negative", negative);
  if (!ng) return NULL;
  if (ps != positive || ng != negative || anchor->ndim == 0) {
    ad_tensor *bad = ps != positive ? positive : negative;
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: anchor %s and %s %s: need one shape of at least 1 dim", fn,
                 ad_shape_str(anchor, a, sizeof a), bad == positive ? "positive" : "negative",
                 ad_shape_str(bad, b, sizeof b));
    return NULL;
  }
  if (!nn_loss_check_reduction(ctx, fn, red, false) || !not_nan(ctx, fn, "margin", margin) ||
      !check_eps(ctx, fn, eps))
    return NULL;
  if (!(p > 0) || !isfinite(p)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: p %g must be positive and finite", fn, p);
    return NULL;
  }
  ad_tensor *dp = nn_pdist(ctx, anchor, positive, p, eps);
  ad_tensor *dn = nn_pdist(ctx, anchor, negative, p, eps);
  if (swap) dn = ad_minimum(ctx, dn, nn_pdist(ctx, positive, negative, p, eps));
  ad_tensor *z = ad_sub(ctx, ad_add_scalar(ctx, dp, margin), dn);
  return nn_loss_reduce(ctx, ad_clamp(ctx, z, 0.0, INFINITY), red, dp);
}

/* ------------------------------------------------ multi-class margins */

/* w broadcasts to x's shape (NumPy rules, the result x's shape). */
static bool broadcasts_to(const ad_tensor *w, const ad_tensor *x) {
  if (w->ndim > x->ndim) return false;
  for (int k = 1; k <= w->ndim; k++) {
    int64_t a = w->shape[w->ndim - k], b = x->shape[x->ndim - k];
    if (a != 1 && a != b) return false;
  }
  return true;
}

/* PyTorch 1.13's F.multilabel_soft_margin_loss over the last dim (C):
 *   l_n = -sum_c w (t log sigmoid(x) + (1 - t) log sigmoid(-x)) / C
 * the sum's terms by ad_binary_cross_entropy_logits (torch composes two
 * F.logsigmoid). The weight broadcasts to x's shape and gets its
 * gradient, as in torch (a composite there too). */
ad_tensor *nn_multilabel_soft_margin_loss(ad_ctx *ctx, ad_tensor *input, ad_tensor *target,
                                          ad_tensor *weight, nn_reduction red) {
  const char *fn = "multilabel_soft_margin_loss";
  char a[64], b[64];
  ad_tensor *t = nn_loss_target(ctx, fn, "input", input, target);
  if (!t) return NULL;
  if (input->ndim == 0) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s: need a class dim (the last)", fn,
                 ad_shape_str(input, a, sizeof a));
    return NULL;
  }
  if (weight) {
    if (nn_check_input(ctx, fn, "weight", weight) != AD_OK) return NULL;
    if (weight->dtype != input->dtype) {
      ad_set_error(ctx, AD_ERR_DTYPE, "%s: weight %s is %s, the input %s is %s", fn,
                   ad_shape_str(weight, a, sizeof a), ad_dtype_name(weight->dtype),
                   ad_shape_str(input, b, sizeof b), ad_dtype_name(input->dtype));
      return NULL;
    }
    if (!broadcasts_to(weight, input)) {
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: weight %s does not broadcast to input %s", fn,
                   ad_shape_str(weight, a, sizeof a), ad_shape_str(input, b, sizeof b));
      return NULL;
    }
  }
  if (!nn_loss_check_reduction(ctx, fn, red, false)) return NULL;
  int ax = input->ndim - 1;
  /* -(t log sigmoid(x) + (1 - t) log sigmoid(-x)) per element is binary
   * cross-entropy with logits: its op (one softplus an element, the
   * gradient one pass) in place of two logsigmoids; infinite x gives the
   * same inf and NaN as torch's form */
  ad_tensor *l = ad_binary_cross_entropy_logits(ctx, input, t);
  if (weight) l = ad_mul(ctx, l, weight);
  /* / C as a tensor: with no class (C = 0) each sample's 0 / 0 is NaN, as
   * in torch, where ad_div_scalar refuses a division by zero */
  l = ad_div(ctx, ad_sum_axis(ctx, l, ax, false),
             ad_scalar(ctx, input->dtype, (double)input->shape[ax]));
  return nn_loss_reduce(ctx, l, red, l);
}

/* PyTorch 1.13's multi_margin_loss kernel, per sample n with label y:
 *   l_n = sum_{i != y} w_y h(margin - x_y + x_i) / C,  h(z) = z or z^2
 * where z > 0 (strictly: at z = 0 neither value nor gradient, and a NaN z
 * is skipped, value and gradient, as the kernel's test z > 0 skips it).
 * x_y = sum(where(onehot, x, 0)), exact (an infinite x elsewhere stays
 * out); the one-hot mask is a temporary of the tape. */
ad_tensor *nn_multi_margin_loss(ad_ctx *ctx, ad_tensor *input, ad_tensor *labels, int p,
                                double margin, ad_tensor *weight, nn_reduction red) {
  const char *fn = "multi_margin_loss";
  char a[64], b[64];
  if (!ctx || !input || !labels) {
    nn_null_arg(ctx, fn, input ? "labels" : "input");
    return NULL;
  }
  if (nn_check_input(ctx, fn, "input", input) != AD_OK ||
      nn_check_input(ctx, fn, "labels", labels) != AD_OK)
    return NULL;
  if (input->dtype != AD_F32 && input->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %s is %s; a float dtype is needed", fn,
                 ad_shape_str(input, a, sizeof a), ad_dtype_name(input->dtype));
    return NULL;
  }
  if (labels->dtype != AD_I32) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: labels %s are %s; class labels must be i32", fn,
                 ad_shape_str(labels, a, sizeof a), ad_dtype_name(labels->dtype));
    return NULL;
  }
  bool one = input->ndim == 1;
  if ((input->ndim != 1 && input->ndim != 2) || input->shape[input->ndim - 1] == 0 ||
      (one ? labels->size != 1 || labels->ndim > 1
           : labels->ndim != 1 || labels->shape[0] != input->shape[0])) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input %s and labels %s: need [N,C] and [N], or [C] and one", fn,
                 ad_shape_str(input, a, sizeof a), ad_shape_str(labels, b, sizeof b));
    return NULL;
  }
  int64_t C = input->shape[input->ndim - 1], N = one ? 1 : input->shape[0];
  const int32_t *lab = labels->data;
  for (int64_t i = 0; i < N; i++)
    if (lab[i] < 0 || lab[i] >= C) {
      ad_set_error(ctx, AD_ERR_ARG, "%s: label %d of sample %lld is outside 0..%lld", fn, lab[i],
                   (long long)i, (long long)C - 1);
      return NULL;
    }
  if (weight) {
    if (nn_check_input(ctx, fn, "weight", weight) != AD_OK) return NULL;
    if (weight->dtype != input->dtype || weight->ndim != 1 || weight->shape[0] != C) {
      ad_set_error(ctx, weight->dtype != input->dtype ? AD_ERR_DTYPE : AD_ERR_SHAPE,
                   "%s: weight %s %s: need [%lld] %s (one per class)", fn,
                   ad_shape_str(weight, a, sizeof a), ad_dtype_name(weight->dtype), (long long)C,
                   ad_dtype_name(input->dtype));
      return NULL;
    }
    if (ad_tensor_requires_grad(weight)) {
      ad_set_error(ctx, AD_ERR_ARG, "%s: weight requires a gradient; PyTorch gives it none", fn);
      return NULL;
    }
  }
  if (p != 1 && p != 2) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: p %d: only p = 1 and p = 2 are supported", fn, p);
    return NULL;
  }
  if (!nn_loss_check_reduction(ctx, fn, red, false) || !not_nan(ctx, fn, "margin", margin) ||
      !nn_f32_setting_ok(ctx, fn, input, "margin", margin))
    return NULL;
  ad_dtype dt = input->dtype;
  int64_t s[2] = {N, C};
  ad_tensor *x = one ? ad_reshape(ctx, input, 2, s) : input;
  ad_tensor *oh = nn_tmp_tensor(ctx, dt, 2, s);
  if (!x || !oh) return NULL;
  memset(oh->data, 0, (size_t)oh->size * ad_dtype_size(dt));
  for (int64_t i = 0; i < N; i++) ad_tensor_set(oh, i * C + lab[i], 1.0);
  ad_tensor *zero = ad_scalar(ctx, dt, 0.0);
  ad_tensor *xy = ad_sum_axis(ctx, ad_where(ctx, oh, x, zero), 1, true);
  ad_tensor *z = ad_add(ctx, ad_rsub_scalar(ctx, xy, margin), x);
  ad_tensor *on = ad_mul(ctx, ad_gt(ctx, z, zero), ad_rsub_scalar(ctx, oh, 1.0));
  ad_tensor *h = ad_where(ctx, on, z, zero);
  if (p == 2) h = ad_square(ctx, h);
  /* w_y only on the terms that count: an inactive term adds 0 also where w_y
   * is inf or NaN (0 w_y would be NaN), as the kernel skips it */
  if (weight)
    h = ad_mul(ctx, h,
               ad_where(ctx, on, ad_sum_axis(ctx, ad_where(ctx, oh, weight, zero), 1, true), zero));
  ad_tensor *l = ad_div_scalar(ctx, ad_sum_axis(ctx, h, 1, false), (double)C);
  /* one sample: its loss shaped as its label (0-d or [1]), as torch's */
  if (one && l) l = ad_reshape(ctx, l, labels->ndim, labels->shape);
  return nn_loss_reduce(ctx, l, red, l);
}
