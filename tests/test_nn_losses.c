/* test_nn_losses.c: every loss against PyTorch (value and gradient, mean and
 * sum), gradcheck of every loss, stability at extreme inputs, error messages,
 * and the accuracy count. */
#include "nn.h"
#include "nn_fixtures.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_CTX_SUITE(losses);

static ad_tensor *make(ad_ctx *c, ad_dtype dt, int64_t rows, int64_t cols, const double *v) {
  int64_t s[2] = {rows, cols};
  ad_tensor *t = ad_zeros(c, dt, 2, s);
  for (int64_t i = 0; i < rows * cols; i++) ad_tensor_set(t, i, v[i]);
  return t;
}

static ad_tensor *labels(ad_ctx *c) {
  int64_t n = 3;
  return ad_from_data(c, AD_I32, 1, &n, loss_labels);
}

/* Compares loss(x, target) and dloss/dx with want = {value, grad...}. */
static void check_loss(nn_loss_fn fn, const double *xv, bool int_target, const double *tv,
                       nn_reduction red, const double *want) {
  ad_tape_reset(ctx); /* a test runs several checks in its context */
  ad_tensor *x = make(ctx, AD_F64, 3, 4, xv);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *t = int_target ? labels(ctx) : make(ctx, AD_F64, 3, 4, tv);
  ad_tensor *l = fn(ctx, x, t, red);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_eq(l->ndim, 0);
  cr_assert_float_eq(ad_tensor_item(l), want[0], 1e-12, "value %.17g, torch %.17g",
                     ad_tensor_item(l), want[0]);
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
  for (int i = 0; i < 12; i++)
    cr_assert_float_eq(ad_tensor_get(x->grad, i), want[1 + i], 1e-12, "grad %d: %.17g, torch %.17g",
                       i, ad_tensor_get(x->grad, i), want[1 + i]);
  ad_tensor_free(x);
  ad_tensor_free(t);
}

Test(losses, mse_matches_torch) {
  check_loss(nn_mse_loss, loss_pred, false, loss_target, NN_MEAN, loss_mse_mean);
  check_loss(nn_mse_loss, loss_pred, false, loss_target, NN_SUM, loss_mse_sum);
}

Test(losses, bce_matches_torch) {
  check_loss(nn_bce_loss, loss_pred, false, loss_target, NN_MEAN, loss_bce_mean);
  check_loss(nn_bce_loss, loss_pred, false, loss_target, NN_SUM, loss_bce_sum);
}

Test(losses, bce_with_logits_matches_torch) {
  check_loss(nn_bce_with_logits_loss, loss_logits, false, loss_target, NN_MEAN,
             loss_bce_logits_mean);
  check_loss(nn_bce_with_logits_loss, loss_logits, false, loss_target, NN_SUM, loss_bce_logits_sum);
}

Test(losses, cross_entropy_with_labels_matches_torch) {
  check_loss(nn_cross_entropy_loss, loss_logits, true, NULL, NN_MEAN, loss_ce_labels_mean);
  check_loss(nn_cross_entropy_loss, loss_logits, true, NULL, NN_SUM, loss_ce_labels_sum);
}

Test(losses, cross_entropy_with_probabilities_matches_torch) {
  check_loss(nn_cross_entropy_loss, loss_logits, false, loss_probs, NN_MEAN, loss_ce_probs_mean);
  check_loss(nn_cross_entropy_loss, loss_logits, false, loss_probs, NN_SUM, loss_ce_probs_sum);
}

Test(losses, nll_matches_torch) {
  /* the input of torch's nll fixture was log_softmax(logits) */
  double logp[12];
  for (int r = 0; r < 3; r++) {
    double m = -INFINITY, s = 0;
    for (int c = 0; c < 4; c++) m = fmax(m, loss_logits[4 * r + c]);
    for (int c = 0; c < 4; c++) s += exp(loss_logits[4 * r + c] - m);
    for (int c = 0; c < 4; c++) logp[4 * r + c] = loss_logits[4 * r + c] - m - log(s);
  }
  check_loss(nn_nll_loss, logp, true, NULL, NN_MEAN, loss_nll_mean);
  check_loss(nn_nll_loss, logp, true, NULL, NN_SUM, loss_nll_sum);
}

/* One-hot targets give the same loss and gradient as integer labels. */
Test(losses, one_hot_equals_labels) {
  ad_tensor *z = make(ctx, AD_F64, 3, 4, loss_logits);
  double oh[12] = {0};
  for (int r = 0; r < 3; r++) oh[4 * r + loss_labels[r]] = 1;
  ad_tensor *t = make(ctx, AD_F64, 3, 4, oh), *lab = labels(ctx);
  double a = ad_tensor_item(nn_cross_entropy_loss(ctx, z, t, NN_MEAN));
  double b = ad_tensor_item(nn_cross_entropy_loss(ctx, z, lab, NN_MEAN));
  cr_assert_float_eq(a, b, 1e-14);
  cr_assert_float_eq(a, loss_ce_labels_mean[0], 1e-12);
  ad_tensor_free(z), ad_tensor_free(t), ad_tensor_free(lab);
}

/* ------------------------------------------------------------- gradcheck */

typedef struct loss_case {
  nn_loss_fn fn;
  nn_reduction red;
} loss_case;

static ad_tensor *loss_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  const loss_case *lc = ud;
  return lc->fn(c, in[0], in[1], lc->red);
}

/* gradcheck of fn with respect to the prediction (and float targets). */
static void gradcheck(nn_loss_fn fn, double lo, double hi, int target_kind) {
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  int64_t s[2] = {5, 4};
  for (int red = NN_MEAN; red <= NN_SUM; red++) {
    ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 2, s, lo, hi);
    ad_tensor *t;
    if (target_kind == 0) { /* float target in (0,1), checked too */
      t = ad_rand(ctx, &rng, AD_F64, 2, s, 0.05, 0.95);
      ad_tensor_set_requires_grad(t, true);
    } else {
      t = ad_zeros(ctx, AD_I32, 1, s);
      for (int i = 0; i < 5; i++) ad_tensor_set(t, i, (double)ad_rng_below(&rng, 4));
    }
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *in[2] = {x, t};
    loss_case c = {fn, (nn_reduction)red};
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(ctx, loss_fn, &c, 2, in, NULL, &rep), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(rep.passed, "input %d index %lld: analytic %g numeric %g", rep.input,
              (long long)rep.index, rep.analytic, rep.numeric);
    cr_assert_gt(rep.checked, 0);
    ad_tensor_free(x);
    ad_tensor_free(t);
  }
}

Test(losses, gradcheck_every_loss) {
  gradcheck(nn_mse_loss, -2, 2, 0);
  gradcheck(nn_bce_loss, 0.05, 0.95, 0);
  gradcheck(nn_bce_with_logits_loss, -4, 4, 0);
  gradcheck(nn_cross_entropy_loss, -3, 3, 0);
  gradcheck(nn_cross_entropy_loss, -3, 3, 1);
  gradcheck(nn_nll_loss, -3, -0.1, 1);
}

/* ------------------------------------------------------------- stability */

Test(losses, stable_at_extreme_inputs) {
  const double z[4] = {-800, 800, -30, 30}, t[4] = {1, 0, 0, 1};
  ad_tensor *zt = make(ctx, AD_F32, 1, 4, z), *tt = make(ctx, AD_F32, 1, 4, t);
  ad_tensor_set_requires_grad(zt, true);
  ad_tensor *l = nn_bce_with_logits_loss(ctx, zt, tt, NN_SUM);
  cr_assert_float_eq(ad_tensor_item(l), 1600.0, 1e-2);
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK);
  cr_assert(!ad_tensor_has_nonfinite(zt->grad));
  cr_assert_float_eq(ad_tensor_get(zt->grad, 0), -1.0, 1e-6); /* sigmoid(z) - t */
  cr_assert_float_eq(ad_tensor_get(zt->grad, 1), 1.0, 1e-6);

  /* probabilities of exactly 0 and 1: each log is clamped at -100 */
  const double p[4] = {0, 1, 0, 1};
  ad_tensor *pt = make(ctx, AD_F32, 1, 4, p);
  ad_tensor_set_requires_grad(pt, true);
  ad_tape_reset(ctx);
  l = nn_bce_loss(ctx, pt, tt, NN_SUM);
  cr_assert_float_eq(ad_tensor_item(l), 200.0, 1e-3); /* two confident mistakes */
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK);
  cr_assert(!ad_tensor_has_nonfinite(pt->grad));

  /* huge logits through cross-entropy */
  const double big[8] = {1000, -1000, 0, 500, -400, 900, 3, 2};
  int64_t n = 2;
  const int32_t lab[2] = {1, 1};
  ad_tensor *bz = make(ctx, AD_F32, 2, 4, big), *bl = ad_from_data(ctx, AD_I32, 1, &n, lab);
  ad_tape_reset(ctx);
  l = nn_cross_entropy_loss(ctx, bz, bl, NN_MEAN);
  cr_assert(isfinite(ad_tensor_item(l)));
  cr_assert_float_eq(ad_tensor_item(l), 1000.0, 1e-2); /* (2000 + 0) / 2 */
  ad_tensor_free(zt), ad_tensor_free(tt), ad_tensor_free(pt), ad_tensor_free(bz),
      ad_tensor_free(bl);
}

/* Infinite logits, reduction none, the gradients of the sum; PyTorch 1.13
 * (F.binary_cross_entropy_with_logits, float64 and float32) on z = [inf,
 * inf, -inf, 2], t = [0.25, 1, 0.75, 0.5]:
 *   loss  [inf, nan, nan, 1.1269280110429727]
 *   dz    [0.75, 0, -0.75, 0.3807970779778823]   dt [-inf, -inf, inf, -2]
 * and with pos_weight [2, 2, 0.5, 0.5]:
 *   loss  [inf, nan, nan, 1.0951960082822294]
 *   dz    [0.75, 0, -0.375, 0.41059780848341176]
 *   dt    [-inf, -inf, inf, -2.0634640055214866]
 * Here the loss at z = -inf is t inf = inf (PyTorch's form adds -inf and
 * inf: NaN; nn.h). Before, z = +inf gave NaN (inf - t inf) and, with
 * pos_weight below 1, t's gradient at z = -inf NaN (inf - 0.5 inf). */
Test(losses, bce_with_logits_infinite_logits) {
  static const double z[4] = {INFINITY, INFINITY, -INFINITY, 2}, t[4] = {0.25, 1, 0.75, 0.5};
  static const double pwv[4] = {2, 2, 0.5, 0.5};
  static const double l0[4] = {INFINITY, NAN, INFINITY, 1.1269280110429727};
  static const double l1[4] = {INFINITY, NAN, INFINITY, 1.0951960082822294};
  static const double gz0[4] = {0.75, 0, -0.75, 0.3807970779778823};
  static const double gz1[4] = {0.75, 0, -0.375, 0.41059780848341176};
  static const double gt0[4] = {-INFINITY, -INFINITY, INFINITY, -2};
  static const double gt1[4] = {-INFINITY, -INFINITY, INFINITY, -2.0634640055214866};
  for (int d = 0; d < 2; d++)
    for (int w = 0; w < 2; w++) {
      ad_dtype dt = d ? AD_F64 : AD_F32;
      double tol = d ? 1e-15 : 1e-7;
      ad_tensor *zt = make(ctx, dt, 1, 4, z), *tt = make(ctx, dt, 1, 4, t);
      ad_tensor *pw = make(ctx, dt, 1, 4, pwv);
      ad_tensor_set_requires_grad(zt, true), ad_tensor_set_requires_grad(tt, true);
      nn_bce_opts o = {.pos_weight = w ? pw : NULL};
      ad_tensor *l = nn_bce_with_logits_loss_ext(ctx, zt, tt, NN_NONE, &o);
      cr_assert_not_null(l, "%s", ad_last_error(ctx));
      cr_assert_eq(ad_backward(ctx, ad_sum(ctx, l), NULL), AD_OK, "%s", ad_last_error(ctx));
      const double *wl = w ? l1 : l0, *wz = w ? gz1 : gz0, *wt = w ? gt1 : gt0;
      for (int i = 0; i < 4; i++) {
        double v = ad_tensor_get(l, i), a = ad_tensor_get(zt->grad, i),
               b = ad_tensor_get(tt->grad, i);
        const char *n = ad_dtype_name(dt);
        if (isnan(wl[i]))
          cr_assert(isnan(v), "%s pw %d: loss[%d] %g, want NaN", n, w, i, v);
        else if (isinf(wl[i]))
          cr_assert_eq(v, wl[i], "%s pw %d: loss[%d] %g, want %g", n, w, i, v, wl[i]);
        else
          cr_assert_float_eq(v, wl[i], tol * 2, "%s pw %d: loss[%d] %.17g", n, w, i, v);
        cr_assert_float_eq(a, wz[i], tol, "%s pw %d: dz[%d] %.17g", n, w, i, a);
        if (isinf(wt[i]))
          cr_assert_eq(b, wt[i], "%s pw %d: dt[%d] %g, want %g", n, w, i, b, wt[i]);
        else
          cr_assert_float_eq(b, wt[i], tol * 4, "%s pw %d: dt[%d] %.17g", n, w, i, b);
      }
      if (!w) { /* the plain loss is the same */
        ad_tensor *l2 = nn_bce_with_logits_loss(ctx, zt, tt, NN_NONE);
        for (int i = 0; i < 4; i++)
          cr_assert(isnan(wl[i]) ? isnan(ad_tensor_get(l2, i))
                                 : ad_tensor_get(l2, i) == ad_tensor_get(l, i));
      }
      ad_tape_reset(ctx);
      ad_tensor_free(zt), ad_tensor_free(tt), ad_tensor_free(pw);
    }
}

/* BCE with logits and pos_weight as nn_bce_with_logits_loss_ext composed it
 * of 17 ops before the op binary_cross_entropy_logits_pw: the reference
 * whose bits the op's forward keeps. */
static ad_tensor *bcel_pw_composed(ad_ctx *c, ad_tensor *z, ad_tensor *t, ad_tensor *pw) {
  ad_tensor *zero = ad_scalar(c, z->dtype, 0.0), *pos = ad_gt(c, z, zero);
  ad_tensor *zp = ad_where(c, pos, z, zero), *zn = ad_where(c, pos, zero, z);
  ad_tensor *lw = ad_add_scalar(c, ad_mul(c, ad_sub_scalar(c, pw, 1.0), t), 1.0);
  ad_tensor *ptz = ad_mul(c, pw, ad_mul(c, t, zn));
  ad_tensor *sp = ad_softplus(c, ad_neg(c, zp)), *sn = ad_softplus(c, zn);
  ad_tensor *a = ad_add(c, ad_mul(c, ad_rsub_scalar(c, t, 1.0), zp), ad_mul(c, lw, sp));
  ad_tensor *b = ad_sub(c, ad_mul(c, lw, sn), ptz);
  return ad_where(c, pos, a, b);
}

/* test_uniform's values moved to [lo, hi). */
static ad_tensor *uniform_in(uint64_t seed, ad_dtype dt, int nd, const int64_t *shape, double lo,
                             double hi) {
  ad_tensor *t = test_uniform(ctx, seed, dt, nd, shape);
  for (int64_t i = 0; t && i < t->size; i++)
    ad_tensor_set(t, i, lo + (ad_tensor_get(t, i) + 1) / 2 * (hi - lo));
  return t;
}

/* Two tensors hold the same bits (any NaN matches any NaN). */
static void expect_bits(const ad_tensor *a, const ad_tensor *b, const char *what, int k) {
  cr_assert_not_null(a, "%s %d: %s", what, k, ad_last_error(ctx));
  cr_assert_not_null(b, "%s %d: %s", what, k, ad_last_error(ctx));
  cr_assert_eq(a->size, b->size, "%s %d", what, k);
  for (int64_t i = 0; i < a->size; i++) {
    double x = ad_tensor_get(a, i), y = ad_tensor_get(b, i);
    cr_assert((isnan(x) && isnan(y)) || memcmp(&x, &y, sizeof x) == 0,
              "%s %d, element %lld: %.17g against %.17g", what, k, (long long)i, x, y);
  }
}

/* The op gives the composition's values, bit for bit, in float32 and
 * float64, on 1 and 2 threads, for pw of every broadcast (per class, per
 * row, one, all of the output's shape, and every input broadcast), z
 * across exp_v's range, infinities, zeros and NaN; its plain backward (one
 * pass) gives the recorded one's bits for all three inputs. */
Test(losses, bce_pos_weight_op_is_the_composition) {
  static const double special[] = {INFINITY, -INFINITY, NAN,    0.0,  -0.0,  100, -100, 87.5,
                                   -87.5,    87.25,     -87.25, 88.8, -88.8, 20,  -20,  1e-30};
  static const struct {
    int nz, nt, nw;
    int64_t z[3], t[3], w[3];
  } cases[] = {{2, 2, 1, {300, 200}, {300, 200}, {200}},    /* per class */
               {2, 2, 2, {300, 200}, {300, 200}, {300, 1}}, /* per row */
               {2, 2, 1, {300, 200}, {300, 200}, {1}},      /* one */
               {2, 2, 2, {90, 70}, {90, 70}, {90, 70}},     /* the output's shape */
               {3, 2, 1, {4, 1, 7}, {5, 1}, {7}},           /* every input broadcast */
               {2, 2, 1, {7001, 3}, {7001, 3}, {3}},        /* few classes: a tile of pw */
               {2, 2, 1, {300, 4}, {300, 4}, {4}}};
  for (int d = 0; d < 2; d++)
    for (int k = 0; k < (int)(sizeof cases / sizeof cases[0]); k++) {
      ad_dtype dt = d ? AD_F64 : AD_F32;
      ad_tensor *z = uniform_in(11 + (uint64_t)k, dt, cases[k].nz, cases[k].z, -10, 10);
      ad_tensor *t = uniform_in(21 + (uint64_t)k, dt, cases[k].nt, cases[k].t, 0, 1);
      ad_tensor *pw = uniform_in(31 + (uint64_t)k, dt, cases[k].nw, cases[k].w, 0.25, 3);
      cr_assert(z && t && pw);
      for (int64_t i = 0; i < z->size; i += 7) /* specials spread over the rows */
        ad_tensor_set(z, i, special[(i / 7) % (int64_t)(sizeof special / sizeof special[0])]);
      for (int64_t i = 3; i < t->size; i += 5) ad_tensor_set(t, i, (double)(i % 2));
      if (pw->size > 4) ad_tensor_set(pw, 2, 0.0), ad_tensor_set(pw, 3, 1.0);
      ad_tensor *all[3] = {z, t, pw}, *ref = bcel_pw_composed(ctx, z, t, pw);
      ad_tensor *seed = ref ? test_uniform(ctx, 41 + (uint64_t)k, dt, ref->ndim, ref->shape) : NULL;
      cr_assert_not_null(seed, "%s", ad_last_error(ctx));
      /* which inputs need a gradient: all, each alone, t and pw */
      static const int masks[5] = {7, 1, 2, 4, 6};
      for (int mi = 0; mi < 5; mi++) {
        ad_tensor *in[3], *plain[2][3], *rec[3];
        int n = 0;
        for (int q = 0; q < 3; q++) {
          ad_tensor_set_requires_grad(all[q], (masks[mi] >> q) & 1);
          if ((masks[mi] >> q) & 1) in[n++] = all[q];
        }
        for (int th = 0; th < 2; th++) {
          cr_assert_eq(ad_set_num_threads(th + 1), AD_OK);
          ad_tensor *y = ad_binary_cross_entropy_logits_pw(ctx, z, t, pw);
          expect_bits(y, ref, "forward", k);
          cr_assert_eq(ad_grad(ctx, y, seed, n, in, plain[th], false), AD_OK, "%s",
                       ad_last_error(ctx));
        }
        ad_set_num_threads(1);
        ad_tensor *y = ad_binary_cross_entropy_logits_pw(ctx, z, t, pw);
        cr_assert_eq(ad_grad(ctx, y, seed, n, in, rec, true), AD_OK, "%s", ad_last_error(ctx));
        for (int q = 0; q < n; q++) {
          const char *what = in[q] == z ? "dz" : in[q] == t ? "dt" : "dpw";
          expect_bits(plain[0][q], rec[q], what, k * 10 + mi);
          expect_bits(plain[1][q], rec[q], what, 100 + k * 10 + mi);
        }
      }
      ad_tape_reset(ctx);
      ad_tensor_free(z), ad_tensor_free(t), ad_tensor_free(pw), ad_tensor_free(seed);
    }
}

/* The plain cross-entropy takes [N, C, d1, ...] logits as F.cross_entropy
 * does: the _ext form's bits without options, labels or probabilities,
 * each reduction (none: shaped [N, d1, ...]). */
Test(losses, plain_cross_entropy_takes_spatial_logits) {
  int64_t zs[4] = {2, 5, 3, 4}, ls[3] = {2, 3, 4};
  ad_tensor *z = test_uniform(ctx, 3, AD_F32, 4, zs), *p = test_uniform(ctx, 4, AD_F32, 4, zs);
  int32_t lv[24];
  for (int i = 0; i < 24; i++) lv[i] = (i * 7) % 5;
  ad_tensor *lab = ad_from_data(ctx, AD_I32, 3, ls, lv);
  cr_assert(z && p && lab);
  static const nn_reduction reds[3] = {NN_MEAN, NN_SUM, NN_NONE};
  for (int r = 0; r < 3; r++)
    for (int k = 0; k < 2; k++) {
      ad_tensor *t = k ? p : lab;
      ad_tensor *a = nn_cross_entropy_loss(ctx, z, t, reds[r]);
      ad_tensor *b = nn_cross_entropy_loss_ext(ctx, z, t, reds[r], NULL);
      cr_assert(a && b, "%s", ad_last_error(ctx));
      cr_assert_eq(a->size, b->size);
      if (reds[r] == NN_NONE && !k) cr_assert(a->ndim == 3 && a->shape[0] == 2 && a->shape[2] == 4);
      for (int64_t i = 0; i < a->size; i++) {
        double u = ad_tensor_get(a, i), v = ad_tensor_get(b, i);
        cr_assert(memcmp(&u, &v, sizeof u) == 0, "reduction %d target %d [%lld]: %g vs %g", r, k,
                  (long long)i, u, v);
      }
    }
  ad_tape_reset(ctx);
  ad_tensor_free(z), ad_tensor_free(p), ad_tensor_free(lab);
}

Test(losses, target_of_same_size_is_reshaped) {
  int64_t s2[2] = {4, 1}, s1[1] = {4};
  ad_tensor *p = ad_full(ctx, AD_F64, 2, s2, 0.5), *t = ad_zeros(ctx, AD_F64, 1, s1);
  ad_tensor *l = nn_mse_loss(ctx, p, t, NN_MEAN);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_float_eq(ad_tensor_item(l), 0.25, 1e-15);
  ad_tensor_free(p), ad_tensor_free(t);
}

/* ----------------------------------------------------------------- errors */

static void expect_error(ad_ctx *c, ad_tensor *l, ad_status st, const char *needle) {
  cr_assert_null(l);
  cr_assert_eq(ad_last_status(c), st, "status %s: %s", ad_status_str(ad_last_status(c)),
               ad_last_error(c));
  cr_assert(strstr(ad_last_error(c), needle), "message: %s", ad_last_error(c));
  ad_clear_error(c);
}

Test(losses, errors_name_the_loss_and_shapes) {
  int64_t s34[2] = {3, 4}, s33[2] = {3, 3}, s3[1] = {3}, s2[1] = {2};
  ad_tensor *p = ad_zeros(ctx, AD_F64, 2, s34), *q = ad_zeros(ctx, AD_F64, 2, s33);
  ad_tensor *pf = ad_zeros(ctx, AD_F32, 2, s34);
  expect_error(ctx, nn_mse_loss(ctx, p, q, NN_MEAN), AD_ERR_SHAPE,
               "mse_loss: prediction [3,4] and target [3,3] differ in size");
  expect_error(ctx, nn_bce_loss(ctx, p, pf, NN_MEAN), AD_ERR_DTYPE,
               "bce_loss: target [3,4] is f32, the prediction [3,4] is f64");
  expect_error(ctx, nn_mse_loss(ctx, p, NULL, NN_MEAN), AD_ERR_NULL, "mse_loss: target is NULL");
  expect_error(ctx, nn_mse_loss(ctx, p, p, (nn_reduction)9), AD_ERR_ARG, "unknown reduction 9");

  ad_tensor *lab = ad_zeros(ctx, AD_I32, 1, s3);
  ad_tensor_set(lab, 1, 7);
  expect_error(ctx, nn_cross_entropy_loss(ctx, p, lab, NN_MEAN), AD_ERR_ARG,
               "cross_entropy_loss: label 7 of sample 1 is outside 0..3");
  ad_tensor_set(lab, 1, -1);
  expect_error(ctx, nn_nll_loss(ctx, p, lab, NN_MEAN), AD_ERR_ARG,
               "nll_loss: label -1 of sample 1 is outside 0..3");
  ad_tensor *lab2 = ad_zeros(ctx, AD_I32, 1, s2);
  expect_error(ctx, nn_cross_entropy_loss(ctx, p, lab2, NN_MEAN), AD_ERR_SHAPE,
               "cross_entropy_loss: scores [3,4] and labels [2]: need [N,C] and [N]");
  ad_tensor *flab = ad_zeros(ctx, AD_F64, 1, s3);
  expect_error(ctx, nn_nll_loss(ctx, p, flab, NN_MEAN), AD_ERR_DTYPE,
               "nll_loss: labels [3] are f64; class labels must be i32");
  expect_error(ctx, nn_cross_entropy_loss(ctx, flab, flab, NN_MEAN), AD_ERR_SHAPE,
               "cross_entropy_loss: logits [3] must be [N,C]");
  /* a NULL prediction from an earlier failure keeps the first error */
  ad_set_error(ctx, AD_ERR_SHAPE, "matmul: first");
  cr_assert_null(nn_mse_loss(ctx, NULL, p, NN_MEAN));
  cr_assert_str_eq(ad_last_error(ctx), "matmul: first");
  ad_tensor_free(p), ad_tensor_free(q), ad_tensor_free(pf), ad_tensor_free(lab),
      ad_tensor_free(lab2), ad_tensor_free(flab);
}

/* --------------------------------------------------------------- accuracy */

Test(losses, count_correct) {
  const double sc[6] = {0.1, 0.7, 0.2, 0.5, 0.5, 0.0}; /* argmax 1, then 0 (first of a tie) */
  ad_tensor *p = make(ctx, AD_F64, 2, 3, sc);
  int64_t n = 2;
  const int32_t l1[2] = {1, 0}, l2[2] = {2, 0};
  ad_tensor *a = ad_from_data(ctx, AD_I32, 1, &n, l1), *b = ad_from_data(ctx, AD_I32, 1, &n, l2);
  cr_assert_eq(nn_count_correct(p, a, 0.5), 2);
  cr_assert_eq(nn_count_correct(p, b, 0.5), 1);
  const double oh[6] = {0, 1, 0, 0, 0, 1};
  ad_tensor *t = make(ctx, AD_F64, 2, 3, oh);
  cr_assert_eq(nn_count_correct(p, t, 0.5), 1);
  /* binary: probabilities against 0.5, logits against 0 */
  const double pr[4] = {0.2, 0.8, 0.6, -0.3}, tg[4] = {0, 1, 0, 0};
  ad_tensor *bp = make(ctx, AD_F64, 4, 1, pr), *bt = make(ctx, AD_F64, 4, 1, tg);
  cr_assert_eq(nn_count_correct(bp, bt, 0.5), 3);
  cr_assert_eq(nn_count_correct(bp, bt, 0.0), 2);
  cr_assert_eq(nn_count_correct(bp, a, 0.5), -1);
  ad_tensor_free(p), ad_tensor_free(a), ad_tensor_free(b), ad_tensor_free(t), ad_tensor_free(bp),
      ad_tensor_free(bt);
}

/* A NaN prediction is refused by BCE (torch 1.13's binary_cross_entropy:
 * "all elements of input should be between 0 and 1"; it was NaN, found by a
 * differential test against PyTorch), and argmax counts a NaN as the
 * largest value (the first one wins), both as in PyTorch. */
Test(losses, nan_predictions_as_pytorch) {
  const double p[3] = {0.25, NAN, 0.75}, t[3] = {0, 1, 1};
  ad_tensor *pt = make(ctx, AD_F64, 1, 3, p), *tt = make(ctx, AD_F64, 1, 3, t);
  expect_error(ctx, nn_bce_loss(ctx, pt, tt, NN_SUM), AD_ERR_ARG,
               "bce_loss: prediction nan at element 1 of [1,3] is outside [0, 1]");
  ad_tensor_set(pt, 1, 1.5);
  ad_tensor *f = ad_zeros(ctx, AD_F32, 1, (int64_t[]){3});
  ad_tensor_copy_data(f, pt);
  ad_tensor *ft = ad_zeros(ctx, AD_F32, 1, (int64_t[]){3});
  expect_error(ctx, nn_bce_loss(ctx, f, ft, NN_MEAN), AD_ERR_ARG,
               "bce_loss: prediction 1.5 at element 1 of [3] is outside [0, 1]");
  ad_tensor_set(f, 1, -0.0f);
  cr_assert_not_null(nn_bce_loss(ctx, f, ft, NN_MEAN), "%s", ad_last_error(ctx)); /* -0 is in */
  ad_tensor_free(f), ad_tensor_free(ft);
  ad_tensor *l;
  ad_tensor_set(pt, 1, 0.5);
  l = nn_bce_loss(ctx, pt, tt, NN_SUM);
  cr_assert_float_eq(ad_tensor_item(l), -log(0.75) - log(0.5) - log(0.75), 1e-12);
  /* predictions [[1, NaN, 3], [NaN, 5, NaN]]: argmaxes 1 and 0 */
  const double q[6] = {1, NAN, 3, NAN, 5, NAN};
  int64_t n = 2;
  const int32_t lab[2] = {1, 0};
  ad_tensor *qt = make(ctx, AD_F64, 2, 3, q), *lt = ad_from_data(ctx, AD_I32, 1, &n, lab);
  cr_assert_eq(nn_count_correct(qt, lt, 0.5), 2);
  ((int32_t *)lt->data)[0] = 2;
  cr_assert_eq(nn_count_correct(qt, lt, 0.5), 1);
  ad_tensor_free(pt), ad_tensor_free(tt), ad_tensor_free(qt), ad_tensor_free(lt);
}

/* Only logp[n, label_n] enters the loss and gets a gradient, as in
 * PyTorch's nll_loss: -inf (the log of a zero probability) or NaN in
 * another class left the loss NaN (0 * -inf in a one-hot product). Found
 * by a differential test against PyTorch. */
Test(losses, nll_ignores_non_finite_values_of_other_classes) {
  for (int dt = 0; dt < 2; dt++) {
    ad_tape_reset(ctx);
    double v[6] = {-0.5, -INFINITY, NAN, -1.25, -INFINITY, -2.0};
    ad_tensor *lp = make(ctx, dt ? AD_F64 : AD_F32, 2, 3, v);
    ad_tensor_set_requires_grad(lp, true);
    int64_t n = 2;
    int32_t lab[2] = {0, 2};
    ad_tensor *t = ad_from_data(ctx, AD_I32, 1, &n, lab);
    ad_tensor *l = nn_nll_loss(ctx, lp, t, NN_MEAN);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    cr_assert_float_eq(ad_tensor_item(l), 1.25, 1e-12, "loss %g, torch 1.25", ad_tensor_item(l));
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
    double want[6] = {-0.5, 0, 0, 0, 0, -0.5};
    for (int i = 0; i < 6; i++)
      cr_assert(ad_tensor_get(lp->grad, i) == want[i], "grad %d: %g, torch %g", i,
                ad_tensor_get(lp->grad, i), want[i]);
    l = nn_nll_loss(ctx, lp, t, NN_SUM);
    cr_assert_float_eq(ad_tensor_item(l), 2.5, 1e-12, "sum %g, torch 2.5", ad_tensor_item(l));
    ad_tensor_free(lp);
    ad_tensor_free(t);
  }
}

/* An empty batch is no error for cross-entropy and NLL, as in PyTorch:
 * the mean of no sample is NaN, the sum 0, and the gradient is empty.
 * They were refused ("N, C >= 1"). Found by a differential test against
 * PyTorch. */
Test(losses, empty_batch_as_torch) {
  int64_t s0[2] = {0, 3}, n0 = 0;
  for (int dt = 0; dt < 2; dt++)
    for (int k = 0; k < 3; k++)
      for (int red = NN_MEAN; red <= NN_SUM; red++) {
        ad_tape_reset(ctx);
        ad_tensor *z = ad_zeros(ctx, dt ? AD_F64 : AD_F32, 2, s0);
        ad_tensor_set_requires_grad(z, true);
        ad_tensor *t = k == 1 ? ad_zeros(ctx, z->dtype, 2, s0) : ad_zeros(ctx, AD_I32, 1, &n0);
        ad_tensor *l = k == 2 ? nn_nll_loss(ctx, z, t, (nn_reduction)red)
                              : nn_cross_entropy_loss(ctx, z, t, (nn_reduction)red);
        cr_assert_not_null(l, "loss %d: %s", k, ad_last_error(ctx));
        double v = ad_tensor_item(l);
        cr_assert(red == NN_MEAN ? isnan(v) : v == 0, "loss %d reduction %d: %g", k, red, v);
        cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
        cr_assert(!z->grad || z->grad->size == 0);
        ad_tensor_free(z);
        ad_tensor_free(t);
      }
}

/* Reproduction from a differential test against PyTorch 1.13: the gradient
 * of BCE came from the clamped logs, so a confident wrong prediction (p = 0
 * for t = 1, p = 1 for t = 0) got 0 and p = 1e-13 got -1e13; torch's is
 * (p - t) / max(p (1 - p), 1e-12) (its bound, the float 1e-12). Targets
 * that require a gradient get torch's log(1 - p) - log p. Values from
 * torch 1.13, f64 and f32, reduction 'sum'. */
static void expect_close(double got, double want, double rtol, const char *what, int i) {
  if (isinf(want) || want == 0)
    cr_assert(got == want, "%s %d: %.17g, torch %.17g", what, i, got, want);
  else
    cr_assert(fabs(got - want) <= rtol * fabs(want), "%s %d: %.17g, torch %.17g", what, i, got,
              want);
}

Test(losses, bce_gradient_at_saturated_predictions_as_pytorch) {
  const double p[4] = {0, 1, 1e-13, 1}, t[4] = {1, 0, 1, 1};
  static const struct {
    ad_dtype dt;
    double rtol, loss, dp[4], dt_[4];
  } want[2] = {
      {AD_F64,
       1e-13,
       229.93360620892258,
       {-1000000003995.8029, 1000000003995.8029, -1000000003995.7028, 0.0},
       {INFINITY, -INFINITY, 29.933606208922495, -INFINITY}},
      {AD_F32,
       1e-6,
       229.93360900878906,
       {-999999995904.0, 999999995904.0, -999999995904.0, 0.0},
       {INFINITY, -INFINITY, 29.93360710144043, -INFINITY}},
  };
  for (int k = 0; k < 2; k++) {
    ad_tape_reset(ctx);
    ad_tensor *pt = make(ctx, want[k].dt, 1, 4, p), *tt = make(ctx, want[k].dt, 1, 4, t);
    ad_tensor_set_requires_grad(pt, true);
    ad_tensor_set_requires_grad(tt, true);
    ad_tensor *l = nn_bce_loss(ctx, pt, tt, NN_SUM);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    expect_close(ad_tensor_item(l), want[k].loss, want[k].rtol, "loss", 0);
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
    for (int i = 0; i < 4; i++) {
      expect_close(ad_tensor_get(pt->grad, i), want[k].dp[i], want[k].rtol, "dp", i);
      expect_close(ad_tensor_get(tt->grad, i), want[k].dt_[i], want[k].rtol, "dt", i);
    }
    ad_tensor_free(pt), ad_tensor_free(tt);
  }
}

/* True when a and b are the same value and sign, or both NaN (of any sign:
 * C compilers keep no NaN's sign). */
static bool same_value(double a, double b) {
  return a == b ? signbit(a) == signbit(b) : a != a && b != b;
}

/* The op in float32 takes log_v (vexp.h) of p and 1 - p, libm where p is 0,
 * 1, subnormal, outside [0, 1] or NaN: within 3 ulp of the same formula in
 * double (1 - p rounded to float as the op rounds it), and the same values
 * as libm's at those points. Its plain backward (one pass) gives the same
 * bits as the recorded one (create_graph) in both dtypes, at those points
 * too, with a NaN target among them. 21000 elements: over the threads'
 * grain. */
Test(losses, bce_op_float32_and_its_plain_backward) {
  static const double special[] = {0,    1,        1e-13, 1e-40, NAN,  0.5,   1 - 0x1p-24,
                                   -0.0, 0x1p-126, 1.5,   -0.25, 1e-7, 0.9999};
  const int ns = (int)(sizeof special / sizeof *special);
  ad_rng rng;
  ad_rng_seed(&rng, 41);
  int64_t sh[2] = {70, 300};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    ad_tape_reset(ctx);
    ad_tensor *p = ad_rand(ctx, &rng, dt, 2, sh, 0, 1), *t = ad_rand(ctx, &rng, dt, 2, sh, 0, 1),
              *seed = ad_rand(ctx, &rng, dt, 2, sh, -1, 1);
    cr_assert(p && t && seed, "%s", ad_last_error(ctx));
    for (int k = 0; k < ns; k++) ad_tensor_set(p, 1000 * k + 7, special[k]);
    ad_tensor_set(t, 3, NAN);
    ad_tensor_set(t, 1000 * 4 + 7, 0.5);
    ad_tensor_set_requires_grad(p, true);
    ad_tensor_set_requires_grad(t, true);
    ad_tensor *in[2] = {p, t}, *plain[2], *rec[2];
    ad_tensor *y = ad_binary_cross_entropy(ctx, p, t);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_grad(ctx, y, seed, 2, in, plain, false), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_grad(ctx, y, seed, 2, in, rec, true), AD_OK, "%s", ad_last_error(ctx));
    for (int k = 0; k < 2; k++)
      for (int64_t i = 0; i < p->size; i++) {
        double a = ad_tensor_get(plain[k], i), b = ad_tensor_get(rec[k], i);
        QUICK_ASSERT(same_value(a, b), "%s d%s[%lld]: plain %.17g, recorded %.17g (p %.9g t %.9g)",
                     ad_dtype_name(dt), k ? "t" : "p", (long long)i, a, b, ad_tensor_get(p, i),
                     ad_tensor_get(t, i));
      }
    if (!d) continue;
    for (int64_t i = 0; i < p->size; i++) {
      float pf = (float)ad_tensor_get(p, i), tf = (float)ad_tensor_get(t, i);
      float got = (float)ad_tensor_get(y, i);
      if (!(pf >= 0x1p-126f && 1.0f - pf >= 0x1p-126f)) { /* libm's, as before */
        float lp = logf(pf), lq = logf(1.0f - pf);        /* a NaN log stays NaN */
        lp = lp < -100.0f ? -100.0f : lp;
        lq = lq < -100.0f ? -100.0f : lq;
        float want = (tf - 1.0f) * lq - tf * lp;
        QUICK_ASSERT(same_value(got, want), "p %.9g t %.9g: %.9g, libm's %.9g", pf, tf, got, want);
        continue;
      }
      double want = ((double)tf - 1) * log((double)(1.0f - pf)) - (double)tf * log((double)pf);
      QUICK_ASSERT(test_close(got, want, 3 * 0x1p-24 * fabs(want) + 1e-45),
                   "p %.9g t %.9g: %.9g, in double %.17g", pf, tf, got, want);
    }
  }
}

/* The op behind nn_bce_loss reports the elementwise rule's errors by its
 * name, and gives NaN (as log does) for a p outside [0, 1], which
 * nn_bce_loss refuses before. */
Test(losses, binary_cross_entropy_op_errors) {
  const double v[3] = {0.25, 0.5, 1.5};
  ad_tensor *p = make(ctx, AD_F64, 1, 3, v), *t2 = make(ctx, AD_F64, 1, 2, v);
  ad_tensor *tf = ad_zeros(ctx, AD_F32, 2, (int64_t[]){1, 3});
  expect_error(ctx, ad_binary_cross_entropy(ctx, p, t2), AD_ERR_SHAPE,
               "binary_cross_entropy: shapes do not broadcast: [1,3] and [1,2]");
  cr_assert_null(ad_binary_cross_entropy(ctx, p, tf));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_DTYPE, "%s", ad_last_error(ctx));
  cr_assert_not_null(strstr(ad_last_error(ctx), "binary_cross_entropy"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tensor *l = ad_binary_cross_entropy(ctx, p, p);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_float_eq(ad_tensor_get(l, 0), -(0.25 * log(0.25) + 0.75 * log(0.75)), 1e-15);
  cr_assert(isnan(ad_tensor_get(l, 2)), "p = 1.5 gave %g", ad_tensor_get(l, 2));
  ad_tensor_free(p), ad_tensor_free(t2), ad_tensor_free(tf);
}

/* ------------------------------------------------------ losses with options */

/* PyTorch 1.13 fixtures of the *_ext losses, float64, produced by
 * /usr/bin/python3 with torch 1.13 from this script (each array is the loss,
 * then the gradients of the inputs in order, flattened):
 *   Z = [0.3,-1.2,2.0,0.5, 1.1,0.4,-0.7,0.0, -2.0,1.5,0.2,-0.3]  # [3,4] logits
 *   Y = [3,2,0]; W = [0.5,2.0,1.0,3.0]                            # labels, weights
 *   P = [.1,.2,.3,.4, .7,.1,.1,.1, .25,.25,.25,.25]               # [3,4] probabilities
 *   K = [0.5,-0.2,1.0,0.3,-1.5,0.8, 2.2,-0.4,0.1,0.9,-1.0,0.6]    # [2,3,2] logits
 *   KY = [[2,-100],[0,1]]; KW = [1.5,0.5,2.0]
 *   KP = softmax(K.view(2,3,2).flip(1), 1)                        # [2,3,2] probabilities
 *   B = [.2,.9,.5,.7, .05,.6,.3,.8, .45,.1,.95,.35]; T = [0,1,.3,.6, 1,0,.5,.9, .2,.4,1,0]
 *   BW = [[0.5],[2.0],[1.0]]; PW = [3.0,0.5,1.0,2.0]
 *   ce_w:         F.cross_entropy(Z, Y, weight=W)
 *   ce_ls:        F.cross_entropy(Z, Y, label_smoothing=0.2)
 *   ce_w_ls_ign:  F.cross_entropy(Z, [3,-100,0], weight=W, label_smoothing=0.2)
 *   ce_kdim:      F.cross_entropy(K, KY, weight=KW, label_smoothing=0.3)
 *   ce_prob_w_ls: F.cross_entropy(Z, P, weight=W, label_smoothing=0.2)  (grads Z, P)
 *   ce_prob_kdim: F.cross_entropy(K, KP, weight=KW)                     (grads K, KP)
 *   nll_w_ign:    F.nll_loss(log_softmax(Z, 1), [3,-100,0], weight=W)
 *   bce_w:        F.binary_cross_entropy(B, T, weight=W)                (grads B, T)
 *   bcel_w_pw:    F.binary_cross_entropy_with_logits(Z, T, weight=BW, pos_weight=PW)
 * each with reduction='mean' and 'sum'. */
static const double torch_ce_w_mean[13] = {
    2.2311287377614977,   0.084191238793855455, 0.018785604595167663, 0.46085841200190691,
    -0.56383525539093005, 0.11140325077872328,  0.055321217131302877, -0.20380738872422866,
    0.037082920814202544, -0.10882555206395611, 0.075687320824815885, 0.020627201254327633,
    0.012511029984812599};
static const double torch_ce_w_sum[13] = {
    10.04007931992674,   0.37886057457234956,  0.084535220678254488, 2.0738628540085813,
    -2.5372586492591855, 0.50131462850425479,  0.24894547709086295,  -0.91713324925902906,
    0.16687314366391146, -0.48971498428780252, 0.34059294371167148,  0.092822405644474359,
    0.056299634931656704};
static const double torch_ce_ls_mean[13] = {
    2.5712135763358335,   0.025428952730261065, -0.0072738643690828343, 0.21376253933428679,
    -0.23191762769546503, 0.15043820950141826,  0.066315159030287646,   -0.25571108308634299,
    0.038957714554637146, -0.27647665619186834, 0.21039529580778096,    0.045214937096316236,
    0.020866423287771135};
static const double torch_ce_ls_sum[13] = {
    7.7136407290075013,   0.076286858190783194, -0.021821593107248505, 0.64128761800286038,
    -0.69575288308639527, 0.4513146285042548,   0.19894547709086297,   -0.76713324925902915,
    0.11687314366391145,  -0.82942996857560514, 0.63118588742334314,   0.13564481128894876,
    0.062599269863313434};
static const double torch_ce_w_ls_ign_mean[13] = {2.0841171848908084,
                                                  0.091180482448538352,
                                                  -0.0066325260620720512,
                                                  0.52393107401651273,
                                                  -0.60847903040297902,
                                                  0,
                                                  0,
                                                  0,
                                                  0,
                                                  -0.11716763634780392,
                                                  0.11253136239483535,
                                                  0.024169282338425097,
                                                  -0.019533008385456505};
static const double torch_ce_w_ls_ign_sum[13] = {7.2944101471178309,
                                                 0.31913168856988422,
                                                 -0.023213841217252174,
                                                 1.8337587590577946,
                                                 -2.1296766064104271,
                                                 0,
                                                 0,
                                                 0,
                                                 0,
                                                 -0.41008672721731371,
                                                 0.39385976838192371,
                                                 0.084592488184487835,
                                                 -0.068365529349097787};
static const double torch_ce_kdim_mean[13] = {1.6905282584030816,
                                              0.12413464760214236,
                                              0,
                                              0.25399048158377163,
                                              0,
                                              -0.37812512918591396,
                                              0,
                                              0.011635310813955241,
                                              -0.012119559020654097,
                                              0.025661747079784806,
                                              -0.006871632491779172,
                                              -0.037297057893740007,
                                              0.01899119151243326};
static const double torch_ce_kdim_sum[13] = {6.7621130336123265,
                                             0.49653859040856946,
                                             0,
                                             1.0159619263350865,
                                             0,
                                             -1.5125005167436558,
                                             0,
                                             0.046541243255820965,
                                             -0.048478236082616387,
                                             0.10264698831913922,
                                             -0.027486529967116688,
                                             -0.14918823157496003,
                                             0.07596476604973304};
static const double torch_ce_prob_w_ls_mean[25] = {
    2.7153421541975509,    0.057683575896542119,  -0.12229456766905449,  0.33769238664513068,
    -0.27308139487261834,  0.079642123975705512,  0.0033686142145287717, -0.013363191815348828,
    -0.069647546374885363, -0.030524566311786058, 0.20230902235431075,   0.017224272781513887,
    -0.18900872882403857,  0.27589324098253581,   1.9035729639301431,    0.098453148631738222,
    1.4953594458952146,    0.092069516533451801,  0.74161139946714061,   0.66413903306690369,
    1.4324170992007108,    0.51785600635167917,   0.20475735874004988,   0.44904534603669161,
    1.7471360381100749};
static const double torch_ce_prob_w_ls_sum[25] = {
    8.1460264625926531,   0.17305072768962634,   -0.36688370300716344, 1.013077159935392,
    -0.81924418461785498, 0.23892637192711644,   0.010105842643586287, -0.040089575446046494,
    -0.20894263912465608, -0.091573698935358175, 0.60692706706293231,  0.051672818344541668,
    -0.56702618647211567, 0.82767972294760739,   5.7107188917904299,   0.29535944589521468,
    4.4860783376856439,   0.2762085496003554,    2.2248341984014219,   1.9924170992007111,
    4.2972512976021324,   1.5535680190550376,    0.61427207622014979,  1.347136038110075,
    5.2414081143302242};
static const double torch_ce_prob_kdim_mean[25] = {
    2.8874991708405635,   0.079415597413029962, -0.13002865450326778, 0.086963688244451581,
    0.060361378527373,    -0.16637928565748156, 0.069667275975894796, 0.37899683433141923,
    -0.10173923008229706, 0.034860572332835522, 0.070901301977370892, -0.41385740666425469,
    0.030837928104926169, 0.38396589606746534,  0.63010112649065042,  0.065488632022488447,
    0.14753370883021683,  1.5119545280899538,   0.3401348353208673,   0.056696567156034265,
    0.74992500307591425,  0.28139885571867812,  0.087475001025304755, 1.6755954228747125,
    0.49990000410121904};
static const double torch_ce_prob_kdim_sum[25] = {
    11.549996683362254,   0.31766238965211985,  -0.52011461801307113, 0.34785475297780633,
    0.241445514109492,    -0.66551714262992623, 0.27866910390357919,  1.5159873373256769,
    -0.40695692032918823, 0.13944228933134209,  0.28360520790948357,  -1.6554296266570188,
    0.12335171241970468,  1.5358635842698614,   2.5204045059626017,   0.26195452808995379,
    0.5901348353208673,   6.0478181123598151,   1.3605393412834692,   0.22678626862413706,
    2.999700012303657,    1.1255954228747125,   0.34990000410121902,  6.7023816914988501,
    1.9996000164048762};
static const double torch_nll_w_ign_mean[13] = {
    2.1570165559788146, 0, 0, 0, -0.8571428571428571, 0, 0, 0, 0, -0.14285714285714285, 0, 0, 0};
static const double torch_nll_w_ign_sum[13] = {
    7.5495579459258515, 0, 0, 0, -3, 0, 0, 0, 0, -0.5, 0, 0, 0};
static const double torch_bce_w_mean[25] = {0.99412008287694553,
                                            0.052083333333333322,
                                            -0.1851851851851852,
                                            0.066666666666666666,
                                            0.11904761904761901,
                                            -0.83333333333333337,
                                            0.41666666666666669,
                                            -0.079365079365079375,
                                            -0.15625,
                                            0.042087542087542083,
                                            -0.55555555555555558,
                                            -0.08771929824561403,
                                            0.38461538461538464,
                                            0.057762265046662105,
                                            -0.36620409622270328,
                                            0,
                                            -0.21182446509680086,
                                            0.12268495746526835,
                                            -0.067577518018027374,
                                            0.070608155032266973,
                                            -0.3465735902799727,
                                            0.008361278977589634,
                                            0.36620409622270317,
                                            -0.24536991493053661,
                                            0.1547598021015559};
static const double torch_bce_w_sum[25] = {11.929440994523347,
                                           0.62499999999999989,
                                           -2.2222222222222223,
                                           0.80000000000000004,
                                           1.4285714285714282,
                                           -10,
                                           5,
                                           -0.95238095238095244,
                                           -1.875,
                                           0.50505050505050497,
                                           -6.666666666666667,
                                           -1.0526315789473684,
                                           4.6153846153846159,
                                           0.69314718055994529,
                                           -4.3944491546724391,
                                           0,
                                           -2.5418935811616103,
                                           1.4722194895832201,
                                           -0.81093021621632855,
                                           0.84729786038720367,
                                           -4.1588830833596724,
                                           0.10033534773107561,
                                           4.3944491546724382,
                                           -2.9444389791664394,
                                           1.8571176252186707};
static const double torch_bcel_w_pw_mean[25] = {
    1.1097851352518353,     0.02393510486715246,   -0.016010932989562868, 0.024199878249078433,
    -0.0085027112532096907, -0.12486994720244111,  0.09978127668540869,   -0.028031295361361019,
    -0.14166666666666669,   -0.036092992430752958, 0.037838298412909574,  -0.037513833557293506,
    0.035463123599028416,   0.033696270372377261,  0.019514948597124347,  -0.083333333333333329,
    -0.0010801256591622215, -0.087554891628189732, -0.10941793769999604,  0.11666666666666665,
    0.11552453009332421,    0.52115466850716219,   -0.13339221991594802,  -0.016666666666666673,
    0.096196270372377268};
static const double torch_bcel_w_pw_sum[25] = {
    13.317421623022023,    0.28722125840582952,  -0.19213119587475441, 0.29039853898894119,
    -0.10203253503851628,  -1.4984393664292934,  1.1973753202249042,   -0.33637554433633221,
    -1.7000000000000002,   -0.43311590916903553, 0.45405958095491489,  -0.45016600268752205,
    0.42555748318834102,   0.40435524446852711,  0.23417938316549217,  -1,
    -0.012961507909946657, -1.0506586995382767,  -1.3130152523999525,  1.3999999999999999,
    1.3862943611198906,    6.2538560220859463,   -1.6007066389913762,  -0.20000000000000007,
    1.1543552444685272};
/* all_ignored_mean: nan grad [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0] */
/* all_ignored_sum: 0.0 grad [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0] */
/* zero_weights_mean: nan grad [nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan] */
/* zero_weights_sum: 0.0 grad [0.0, 0.0, 0.0, -0.0, 0.0, 0.0, -0.0, 0.0, -0.0, 0.0, 0.0, 0.0] */
/* zero_weights_ls_mean: nan grad [nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan] */
/* zero_weights_ls_sum: 0.0 grad [0.0, 0.0, 0.0, -0.0, 0.0, 0.0, -0.0, 0.0, -0.0, 0.0, 0.0, 0.0] */
/* nll_zero_weights_mean: nan grad [0.0, 0.0, 0.0, nan, 0.0, 0.0, nan, 0.0, nan, 0.0, 0.0, 0.0] */
/* nll_zero_weights_sum: 0.0 grad [0.0, 0.0, 0.0, -0.0, 0.0, 0.0, -0.0, 0.0, -0.0, 0.0, 0.0, 0.0] */
/* empty_mean: nan grad [] */
/* empty_sum: 0.0 grad [] */
/* empty_prob_mean: nan grad [] */
/* empty_prob_sum: -0.0 grad [] */
/* nan_kept_mean: nan grad [0.07091815301552983, -0.005158631381611595, 0.40750194645728766,
 * -0.47326146809120595, nan, nan, nan, nan, -0.0911303838260697, 0.0875243929737608,
 * 0.018798330707663957, -0.015192339855355064] */
/* nan_kept_sum: nan grad [0.3191316885698842, -0.023213841217252174, 1.8337587590577946,
 * -2.129676606410427, nan, nan, nan, nan, -0.4100867272173137, 0.3938597683819237,
 * 0.08459248818448784, -0.06836552934909779] */
/* nan_ignored_mean: 2.0841171848908084 grad [0.09118048244853835, -0.006632526062072051,
 * 0.5239310740165127, -0.608479030402979, nan, nan, nan, nan, -0.11716763634780392,
 * 0.11253136239483535, 0.024169282338425097, -0.019533008385456505] */
/* nan_ignored_sum: 7.294410147117831 grad [0.3191316885698842,
 * -0.023213841217252174, 1.8337587590577946, -2.129676606410427, nan, nan, nan, nan,
 * -0.4100867272173137, 0.3938597683819237, 0.08459248818448784, -0.06836552934909779] */

static const double opt_z[12] = {0.3, -1.2, 2.0, 0.5, 1.1, 0.4, -0.7, 0.0, -2.0, 1.5, 0.2, -0.3};
static const double opt_w[4] = {0.5, 2.0, 1.0, 3.0};
static const double opt_p[12] = {.1, .2, .3, .4, .7, .1, .1, .1, .25, .25, .25, .25};
static const double opt_k[12] = {0.5, -0.2, 1.0, 0.3, -1.5, 0.8, 2.2, -0.4, 0.1, 0.9, -1.0, 0.6};
static const double opt_kw[3] = {1.5, 0.5, 2.0};
static const double opt_b[12] = {.2, .9, .5, .7, .05, .6, .3, .8, .45, .1, .95, .35};
static const double opt_t[12] = {0, 1, .3, .6, 1, 0, .5, .9, .2, .4, 1, 0};
static const double opt_bw[3] = {0.5, 2.0, 1.0};
static const double opt_pw[4] = {3.0, 0.5, 1.0, 2.0};
static const int32_t opt_y[3] = {3, 2, 0}, opt_y_ign[3] = {3, -100, 0};
static const int32_t opt_ky[4] = {2, -100, 0, 1};

/* A tensor of dtype dt and shape s (nd dims) holding v. */
static ad_tensor *tens(ad_ctx *c, ad_dtype dt, int nd, const int64_t *s, const double *v) {
  ad_tensor *t = ad_zeros(c, dt, nd, s);
  for (int64_t i = 0; i < t->size; i++) ad_tensor_set(t, i, v[i]);
  return t;
}

static ad_tensor *ilabels(ad_ctx *c, int nd, const int64_t *s, const int32_t *v) {
  return ad_from_data(c, AD_I32, nd, s, v);
}

/* Checks l against want[0] and the gradients of in[0..n-1] (which require
 * them) against the rest of want, within rtol relative (an absolute tol
 * near 0). */
static void expect_torch(ad_tensor *l, int n, ad_tensor *const *in, const double *want,
                         double rtol) {
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_eq(l->ndim, 0);
  double v = ad_tensor_item(l);
  cr_assert(test_close(v, want[0], rtol * fmax(1, fabs(want[0]))), "value %.17g, torch %.17g", v,
            want[0]);
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
  const double *g = want + 1;
  for (int k = 0; k < n; k++) {
    cr_assert_not_null(in[k]->grad, "input %d has no gradient", k);
    for (int64_t i = 0; i < in[k]->size; i++, g++) {
      double got = ad_tensor_get(in[k]->grad, i);
      cr_assert(test_close(got, *g, rtol * fmax(1, fabs(*g))),
                "input %d grad %lld: %.17g, torch %.17g", k, (long long)i, got, *g);
    }
  }
}

static const double *pick(const double *mean, const double *sum, int red) {
  return red == NN_MEAN ? mean : sum;
}

Test(losses, cross_entropy_ext_labels_match_torch) {
  int64_t s[2] = {3, 4}, n = 3, nw = 4;
  for (int dt = 0; dt < 2; dt++)
    for (int red = NN_MEAN; red <= NN_SUM; red++)
      for (int k = 0; k < 3; k++) {
        ad_dtype d = dt ? AD_F64 : AD_F32;
        ad_tape_reset(ctx);
        ad_tensor *z = tens(ctx, d, 2, s, opt_z), *w = tens(ctx, d, 1, &nw, opt_w);
        ad_tensor *y = ilabels(ctx, 1, &n, k == 2 ? opt_y_ign : opt_y);
        ad_tensor_set_requires_grad(z, true);
        nn_cross_entropy_opts o = {.weight = k != 1 ? w : NULL,
                                   .label_smoothing = k ? 0.2 : 0,
                                   .ignore = k == 2,
                                   .ignore_index = -100};
        const double *want[3][2] = {{torch_ce_w_mean, torch_ce_w_sum},
                                    {torch_ce_ls_mean, torch_ce_ls_sum},
                                    {torch_ce_w_ls_ign_mean, torch_ce_w_ls_ign_sum}};
        expect_torch(nn_cross_entropy_loss_ext(ctx, z, y, (nn_reduction)red, &o), 1, &z,
                     want[k][red], dt ? 1e-12 : 2e-6);
        ad_tensor_free(z), ad_tensor_free(w), ad_tensor_free(y);
      }
}

/* [N, C, T] logits with labels [N, T], and the same as [N, T, C] with
 * class_last: torch's values, the gradient permuted. */
Test(losses, cross_entropy_ext_kdim_and_class_last_match_torch) {
  int64_t s[3] = {2, 3, 2}, sl[3] = {2, 2, 3}, sy[2] = {2, 2}, nw = 3;
  double kl[12];
  for (int a = 0; a < 2; a++)
    for (int c = 0; c < 3; c++)
      for (int t = 0; t < 2; t++) kl[(a * 2 + t) * 3 + c] = opt_k[(a * 3 + c) * 2 + t];
  for (int last = 0; last < 2; last++)
    for (int red = NN_MEAN; red <= NN_SUM; red++) {
      ad_tape_reset(ctx);
      ad_tensor *z = tens(ctx, AD_F64, 3, last ? sl : s, last ? kl : opt_k);
      ad_tensor *w = tens(ctx, AD_F64, 1, &nw, opt_kw), *y = ilabels(ctx, 2, sy, opt_ky);
      ad_tensor_set_requires_grad(z, true);
      nn_cross_entropy_opts o = {
          .weight = w, .label_smoothing = 0.3, .ignore = true, .ignore_index = -100};
      o.class_last = last;
      const double *src = pick(torch_ce_kdim_mean, torch_ce_kdim_sum, red);
      double want[13] = {src[0]};
      for (int a = 0; a < 2; a++)
        for (int c = 0; c < 3; c++)
          for (int t = 0; t < 2; t++)
            want[1 + (last ? (a * 2 + t) * 3 + c : (a * 3 + c) * 2 + t)] =
                src[1 + (a * 3 + c) * 2 + t];
      expect_torch(nn_cross_entropy_loss_ext(ctx, z, y, (nn_reduction)red, &o), 1, &z, want, 1e-12);
      ad_tensor_free(z), ad_tensor_free(w), ad_tensor_free(y);
    }
}

Test(losses, cross_entropy_ext_probabilities_match_torch) {
  int64_t s[2] = {3, 4}, sk[3] = {2, 3, 2}, nw = 4, nk = 3;
  for (int dt = 0; dt < 2; dt++)
    for (int red = NN_MEAN; red <= NN_SUM; red++) {
      ad_dtype d = dt ? AD_F64 : AD_F32;
      ad_tape_reset(ctx);
      ad_tensor *z = tens(ctx, d, 2, s, opt_z), *p = tens(ctx, d, 2, s, opt_p);
      ad_tensor *w = tens(ctx, d, 1, &nw, opt_w);
      ad_tensor_set_requires_grad(z, true), ad_tensor_set_requires_grad(p, true);
      nn_cross_entropy_opts o = {.weight = w, .label_smoothing = 0.2};
      ad_tensor *in[2] = {z, p};
      expect_torch(nn_cross_entropy_loss_ext(ctx, z, p, (nn_reduction)red, &o), 2, in,
                   pick(torch_ce_prob_w_ls_mean, torch_ce_prob_w_ls_sum, red), dt ? 1e-12 : 2e-6);
      ad_tensor_free(z), ad_tensor_free(p), ad_tensor_free(w);
      /* K-dim: softmax(K.flip(1), 1) as the target */
      ad_tape_reset(ctx);
      double kp[12];
      for (int a = 0; a < 2; a++)
        for (int t = 0; t < 2; t++) {
          double m = 0;
          for (int c = 0; c < 3; c++) m += exp(opt_k[(a * 3 + 2 - c) * 2 + t]);
          for (int c = 0; c < 3; c++)
            kp[(a * 3 + c) * 2 + t] = exp(opt_k[(a * 3 + 2 - c) * 2 + t]) / m;
        }
      z = tens(ctx, d, 3, sk, opt_k), p = tens(ctx, d, 3, sk, kp), w = tens(ctx, d, 1, &nk, opt_kw);
      ad_tensor_set_requires_grad(z, true), ad_tensor_set_requires_grad(p, true);
      nn_cross_entropy_opts ok = {.weight = w};
      ad_tensor *ink[2] = {z, p};
      expect_torch(nn_cross_entropy_loss_ext(ctx, z, p, (nn_reduction)red, &ok), 2, ink,
                   pick(torch_ce_prob_kdim_mean, torch_ce_prob_kdim_sum, red), dt ? 1e-12 : 2e-6);
      ad_tensor_free(z), ad_tensor_free(p), ad_tensor_free(w);
    }
}

Test(losses, nll_ext_matches_torch) {
  int64_t s[2] = {3, 4}, n = 3, nw = 4;
  double logp[12];
  for (int r = 0; r < 3; r++) {
    double m = 0;
    for (int c = 0; c < 4; c++) m += exp(opt_z[4 * r + c]);
    for (int c = 0; c < 4; c++) logp[4 * r + c] = opt_z[4 * r + c] - log(m);
  }
  logp[5] = NAN; /* an ignored row is not read */
  for (int dt = 0; dt < 2; dt++)
    for (int red = NN_MEAN; red <= NN_SUM; red++) {
      ad_dtype d = dt ? AD_F64 : AD_F32;
      ad_tape_reset(ctx);
      ad_tensor *x = tens(ctx, d, 2, s, logp), *w = tens(ctx, d, 1, &nw, opt_w);
      ad_tensor *y = ilabels(ctx, 1, &n, opt_y_ign);
      ad_tensor_set_requires_grad(x, true);
      nn_cross_entropy_opts o = {.weight = w, .ignore = true, .ignore_index = -100};
      expect_torch(nn_nll_loss_ext(ctx, x, y, (nn_reduction)red, &o), 1, &x,
                   pick(torch_nll_w_ign_mean, torch_nll_w_ign_sum, red), dt ? 1e-12 : 2e-6);
      ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(y);
    }
}

Test(losses, bce_ext_match_torch) {
  int64_t s[2] = {3, 4}, nw = 4, sbw[2] = {3, 1};
  for (int dt = 0; dt < 2; dt++)
    for (int red = NN_MEAN; red <= NN_SUM; red++) {
      ad_dtype d = dt ? AD_F64 : AD_F32;
      double tol = dt ? 1e-12 : 2e-6;
      ad_tape_reset(ctx);
      ad_tensor *b = tens(ctx, d, 2, s, opt_b), *t = tens(ctx, d, 2, s, opt_t);
      ad_tensor *w = tens(ctx, d, 1, &nw, opt_w);
      ad_tensor_set_requires_grad(b, true), ad_tensor_set_requires_grad(t, true);
      nn_bce_opts o = {.weight = w};
      ad_tensor *in[2] = {b, t};
      expect_torch(nn_bce_loss_ext(ctx, b, t, (nn_reduction)red, &o), 2, in,
                   pick(torch_bce_w_mean, torch_bce_w_sum, red), tol);
      ad_tensor_free(b), ad_tensor_free(t), ad_tensor_free(w);

      ad_tape_reset(ctx);
      ad_tensor *z = tens(ctx, d, 2, s, opt_z);
      t = tens(ctx, d, 2, s, opt_t);
      ad_tensor *bw = tens(ctx, d, 2, sbw, opt_bw), *pw = tens(ctx, d, 1, &nw, opt_pw);
      ad_tensor_set_requires_grad(z, true), ad_tensor_set_requires_grad(t, true);
      nn_bce_opts ol = {.weight = bw, .pos_weight = pw};
      ad_tensor *inl[2] = {z, t};
      expect_torch(nn_bce_with_logits_loss_ext(ctx, z, t, (nn_reduction)red, &ol), 2, inl,
                   pick(torch_bcel_w_pw_mean, torch_bcel_w_pw_sum, red), tol);
      ad_tensor_free(z), ad_tensor_free(t), ad_tensor_free(bw), ad_tensor_free(pw);
    }
}

/* The value and the gradient of x: the same bits from both losses. */
static void expect_same_bits(ad_tensor *a, ad_tensor *b, ad_tensor *x) {
  cr_assert_not_null(a, "%s", ad_last_error(ctx));
  cr_assert_not_null(b, "%s", ad_last_error(ctx));
  double va = ad_tensor_item(a), vb = ad_tensor_item(b);
  cr_assert(memcmp(&va, &vb, sizeof va) == 0, "%.17g vs %.17g", va, vb);
  cr_assert_eq(ad_backward(ctx, a, NULL), AD_OK);
  ad_tensor *ga = ad_tensor_clone(ctx, x->grad);
  ad_tensor_zero_grad(x);
  cr_assert_eq(ad_backward(ctx, b, NULL), AD_OK);
  cr_assert(memcmp(ga->data, x->grad->data, (size_t)x->size * ad_dtype_size(x->dtype)) == 0);
  ad_tensor_free(ga);
}

/* Without options (or with ignore only) the *_ext losses are the fused
 * paths of the plain ones, same bits. */
Test(losses, ext_without_options_is_the_plain_loss) {
  int64_t s[2] = {3, 4}, n = 3, sk[3] = {2, 3, 2}, sy[2] = {2, 2};
  for (int dt = 0; dt < 2; dt++)
    for (int red = NN_MEAN; red <= NN_SUM; red++) {
      ad_dtype d = dt ? AD_F64 : AD_F32;
      nn_reduction r = (nn_reduction)red;
      ad_tape_reset(ctx);
      ad_tensor *z = tens(ctx, d, 2, s, opt_z), *p = tens(ctx, d, 2, s, opt_p);
      ad_tensor *b = tens(ctx, d, 2, s, opt_b), *t = tens(ctx, d, 2, s, opt_t);
      ad_tensor *y = ilabels(ctx, 1, &n, opt_y);
      ad_tensor_set_requires_grad(z, true), ad_tensor_set_requires_grad(b, true);
      nn_cross_entropy_opts none = {0};
      expect_same_bits(nn_cross_entropy_loss_ext(ctx, z, y, r, &none),
                       nn_cross_entropy_loss(ctx, z, y, r), z);
      ad_tensor_zero_grad(z);
      expect_same_bits(nn_cross_entropy_loss_ext(ctx, z, p, r, NULL),
                       nn_cross_entropy_loss(ctx, z, p, r), z);
      ad_tensor_zero_grad(z);
      expect_same_bits(nn_nll_loss_ext(ctx, z, y, r, NULL), nn_nll_loss(ctx, z, y, r), z);
      ad_tensor_zero_grad(z);
      expect_same_bits(nn_bce_with_logits_loss_ext(ctx, z, t, r, NULL),
                       nn_bce_with_logits_loss(ctx, z, t, r), z);
      expect_same_bits(nn_bce_loss_ext(ctx, b, t, r, NULL), nn_bce_loss(ctx, b, t, r), b);
      ad_tensor *k = tens(ctx, d, 3, sk, opt_k), *ky = ilabels(ctx, 2, sy, opt_ky);
      ad_tensor_set_requires_grad(k, true);
      nn_cross_entropy_opts ign = {.ignore = true, .ignore_index = -100};
      nn_sequence_ce_opts sign = {.ignore = true, .ignore_index = -100};
      expect_same_bits(nn_cross_entropy_loss_ext(ctx, k, ky, r, &ign),
                       nn_sequence_cross_entropy_loss(ctx, k, ky, r, &sign), k);
      ad_tensor_free(z), ad_tensor_free(p), ad_tensor_free(b), ad_tensor_free(t);
      ad_tensor_free(y), ad_tensor_free(k), ad_tensor_free(ky);
    }
}

/* PyTorch 1.13 (same script): all targets ignored gives NaN (mean) or 0
 * (sum) and a zero gradient; weights that are all 0 give NaN and a NaN
 * gradient for the mean (nll_loss: NaN at the labels only) and 0 for the
 * sum; an empty batch gives NaN or 0; a NaN logit in a counted row makes
 * the loss NaN and that row's gradient NaN, the others' as torch's. A NaN
 * logit in an ignored row leaves the loss as it was and (unlike torch,
 * whose log_softmax backward gives that row NaN) its gradient 0, as
 * ad_softmax_cross_entropy_ext does. */
Test(losses, ext_edge_cases_as_torch) {
  int64_t s[2] = {3, 4}, n = 3, nw = 4, s0[2] = {0, 4}, n0 = 0;
  static const int32_t all_ign[3] = {-100, -100, -100};
  static const double zero_w[4] = {0, 0, 0, 0};
  /* torch's gradients of the NaN cases (reduction mean, sum): row 1 NaN */
  static const double nan_kept[2][12] = {
      {0.07091815301552983, -0.005158631381611595, 0.40750194645728766, -0.47326146809120595, NAN,
       NAN, NAN, NAN, -0.0911303838260697, 0.0875243929737608, 0.018798330707663957,
       -0.015192339855355064},
      {0.3191316885698842, -0.023213841217252174, 1.8337587590577946, -2.129676606410427, NAN, NAN,
       NAN, NAN, -0.4100867272173137, 0.3938597683819237, 0.08459248818448784,
       -0.06836552934909779}};
  for (int red = NN_MEAN; red <= NN_SUM; red++) {
    nn_reduction r = (nn_reduction)red;
    for (int ls = 0; ls < 2; ls++) {
      ad_tape_reset(ctx);
      ad_tensor *z = tens(ctx, AD_F64, 2, s, opt_z), *w = tens(ctx, AD_F64, 1, &nw, opt_w);
      ad_tensor *w0 = tens(ctx, AD_F64, 1, &nw, zero_w);
      ad_tensor *yi = ilabels(ctx, 1, &n, all_ign), *y = ilabels(ctx, 1, &n, opt_y);
      ad_tensor_set_requires_grad(z, true);
      nn_cross_entropy_opts o = {
          .weight = w, .label_smoothing = ls ? 0.2 : 0, .ignore = true, .ignore_index = -100};
      ad_tensor *l = nn_cross_entropy_loss_ext(ctx, z, yi, r, &o);
      cr_assert_not_null(l, "%s", ad_last_error(ctx));
      cr_assert(red == NN_MEAN ? isnan(ad_tensor_item(l)) : ad_tensor_item(l) == 0);
      cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK);
      for (int i = 0; i < 12; i++) cr_assert(ad_tensor_get(z->grad, i) == 0, "all ignored %d", i);
      ad_tensor_zero_grad(z);
      o.weight = w0;
      l = nn_cross_entropy_loss_ext(ctx, z, y, r, &o);
      cr_assert_not_null(l, "%s", ad_last_error(ctx));
      cr_assert(red == NN_MEAN ? isnan(ad_tensor_item(l)) : ad_tensor_item(l) == 0);
      cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK);
      for (int i = 0; i < 12; i++) {
        double g = ad_tensor_get(z->grad, i);
        cr_assert(red == NN_MEAN ? isnan(g) : g == 0, "zero weights %d: %g", i, g);
      }
      ad_tensor_zero_grad(z);
      if (!ls) {
        l = nn_nll_loss_ext(ctx, z, y, r, &o);
        cr_assert_not_null(l, "%s", ad_last_error(ctx));
        cr_assert(red == NN_MEAN ? isnan(ad_tensor_item(l)) : ad_tensor_item(l) == 0);
        cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK);
        for (int i = 0; i < 12; i++) {
          double g = ad_tensor_get(z->grad, i);
          bool at_label = i % 4 == opt_y[i / 4];
          cr_assert(red == NN_MEAN && at_label ? isnan(g) : g == 0, "nll zero weights %d: %g", i,
                    g);
        }
        ad_tensor_zero_grad(z);
      }
      /* empty batch, labels and probabilities */
      ad_tensor *e = ad_zeros(ctx, AD_F64, 2, s0), *ey = ad_zeros(ctx, AD_I32, 1, &n0);
      ad_tensor *ep = ad_zeros(ctx, AD_F64, 2, s0);
      ad_tensor_set_requires_grad(e, true);
      o.weight = w;
      for (int k = 0; k < 2; k++) {
        o.ignore = !k;
        l = nn_cross_entropy_loss_ext(ctx, e, k ? ep : ey, r, &o);
        cr_assert_not_null(l, "%s", ad_last_error(ctx));
        cr_assert(red == NN_MEAN ? isnan(ad_tensor_item(l)) : ad_tensor_item(l) == 0);
        cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
      }
      ad_tensor_free(z), ad_tensor_free(w), ad_tensor_free(w0), ad_tensor_free(yi);
      ad_tensor_free(y), ad_tensor_free(e), ad_tensor_free(ey), ad_tensor_free(ep);
    }
    /* NaN logits */
    ad_tape_reset(ctx);
    ad_tensor *z = tens(ctx, AD_F64, 2, s, opt_z), *w = tens(ctx, AD_F64, 1, &nw, opt_w);
    ad_tensor_set(z, 6, NAN);
    ad_tensor *y = ilabels(ctx, 1, &n, opt_y), *yi = ilabels(ctx, 1, &n, opt_y_ign);
    ad_tensor_set_requires_grad(z, true);
    nn_cross_entropy_opts o = {
        .weight = w, .label_smoothing = 0.2, .ignore = true, .ignore_index = -100};
    ad_tensor *l = nn_cross_entropy_loss_ext(ctx, z, y, r, &o);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    cr_assert(isnan(ad_tensor_item(l)));
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK);
    for (int i = 0; i < 12; i++) {
      double g = ad_tensor_get(z->grad, i), want = nan_kept[red][i];
      cr_assert(isnan(want) ? isnan(g) : fabs(g - want) <= 1e-12, "NaN kept %d: %.17g", i, g);
    }
    ad_tensor_zero_grad(z);
    ad_tensor *in = z;
    expect_torch(nn_cross_entropy_loss_ext(ctx, z, yi, r, &o), 1, &in,
                 pick(torch_ce_w_ls_ign_mean, torch_ce_w_ls_ign_sum, red), 1e-12);
    ad_tensor_free(z), ad_tensor_free(w), ad_tensor_free(y), ad_tensor_free(yi);
  }
}

Test(losses, ext_errors) {
  int64_t s[2] = {3, 4}, n = 3, n3 = 3, n4 = 4, sk[3] = {2, 3, 2}, sy[2] = {2, 2};
  ad_tensor *z = tens(ctx, AD_F64, 2, s, opt_z), *y = ilabels(ctx, 1, &n, opt_y);
  ad_tensor *p = tens(ctx, AD_F64, 2, s, opt_p), *b = tens(ctx, AD_F64, 2, s, opt_b);
  ad_tensor *w3 = ad_ones(ctx, AD_F64, 1, &n3), *wf = ad_ones(ctx, AD_F32, 1, &n4);
  ad_tensor *w = ad_ones(ctx, AD_F64, 1, &n4);
  nn_cross_entropy_opts o = {.weight = w3};
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, z, y, NN_MEAN, &o), AD_ERR_SHAPE,
               "cross_entropy_loss: weight [3] must be [C] = [4], one per class");
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, z, p, NN_MEAN, &o), AD_ERR_SHAPE,
               "cross_entropy_loss: weight [3] must be [C] = [4]");
  o.weight = wf;
  expect_error(ctx, nn_nll_loss_ext(ctx, z, y, NN_MEAN, &o), AD_ERR_DTYPE,
               "nll_loss: weight [4] is f32, the prediction [3,4] is f64");
  ad_tensor_set_requires_grad(w, true);
  o.weight = w;
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, z, y, NN_MEAN, &o), AD_ERR_ARG,
               "cross_entropy_loss: weight [4] requires a gradient; the loss is not "
               "differentiable in it");
  /* with probability targets the weight gets its gradient, as in torch */
  ad_tensor *l = nn_cross_entropy_loss_ext(ctx, z, p, NN_MEAN, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK);
  cr_assert_not_null(w->grad);
  ad_tensor_set_requires_grad(w, false);
  o = (nn_cross_entropy_opts){.label_smoothing = -0.1};
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, z, y, NN_MEAN, &o), AD_ERR_ARG,
               "cross_entropy_loss: label_smoothing -0.1 is outside [0, 1]");
  o.label_smoothing = 1.5;
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, z, p, NN_MEAN, &o), AD_ERR_ARG,
               "label_smoothing 1.5 is outside [0, 1]");
  o.label_smoothing = NAN;
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, z, y, NN_MEAN, &o), AD_ERR_ARG,
               "label_smoothing nan is outside [0, 1]");
  o.label_smoothing = 0.1;
  expect_error(ctx, nn_nll_loss_ext(ctx, z, y, NN_MEAN, &o), AD_ERR_ARG,
               "nll_loss: label_smoothing 0.1 is given; it is an option of cross_entropy_loss");
  o = (nn_cross_entropy_opts){.ignore = true, .ignore_index = -100};
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, z, p, NN_MEAN, &o), AD_ERR_ARG,
               "cross_entropy_loss: ignore_index applies to class labels, not to a float target "
               "[3,4]");
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, z, y, (nn_reduction)7, &o), AD_ERR_ARG,
               "cross_entropy_loss: unknown reduction 7");
  ad_tensor *k = tens(ctx, AD_F64, 3, sk, opt_k), *ky = ilabels(ctx, 2, sy, opt_ky);
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, k, ky, NN_MEAN, NULL), AD_ERR_ARG,
               "cross_entropy_loss: label -100 at position 1 ([0,1] of labels [2,2]) is outside "
               "0..2");
  o.ignore_index = 0;
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, k, ky, NN_MEAN, &o), AD_ERR_ARG,
               "is outside 0..2 and is not ignore_index 0");
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, k, y, NN_MEAN, NULL), AD_ERR_SHAPE,
               "cross_entropy_loss: logits [2,3,2] and labels [3]: need [N,C,T...] and [N,T...]");
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, k, p, NN_MEAN, NULL), AD_ERR_SHAPE,
               "cross_entropy_loss: a float target [3,4] must have the logits' shape [2,3,2]");
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, z, NULL, NN_MEAN, NULL), AD_ERR_NULL,
               "cross_entropy_loss: target is NULL");
  /* a weight of another context, and a freed one */
  ad_ctx *other = ad_ctx_new();
  ad_tensor *wo = ad_ones(other, AD_F64, 1, &n4);
  o = (nn_cross_entropy_opts){.weight = wo};
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, z, y, NN_MEAN, &o), AD_ERR_ARG,
               "cross_entropy_loss: weight belongs to another context");
  ad_ctx_free(other);
  ad_tensor *gone = ad_ones(ctx, AD_F64, 1, &n4);
  ad_tensor_free(gone);
  o.weight = gone;
  expect_error(ctx, nn_cross_entropy_loss_ext(ctx, z, y, NN_MEAN, &o), AD_ERR_STATE,
               "cross_entropy_loss: weight was freed");
  /* binary losses */
  nn_bce_opts bo = {.pos_weight = w};
  expect_error(ctx, nn_bce_loss_ext(ctx, b, p, NN_MEAN, &bo), AD_ERR_ARG,
               "bce_loss: pos_weight is given; it is an option of bce_with_logits_loss");
  bo = (nn_bce_opts){.weight = w3};
  expect_error(ctx, nn_bce_loss_ext(ctx, b, p, NN_MEAN, &bo), AD_ERR_SHAPE,
               "bce_loss: weight [3] does not broadcast to the prediction's shape [3,4]");
  bo = (nn_bce_opts){.pos_weight = wf};
  expect_error(ctx, nn_bce_with_logits_loss_ext(ctx, z, p, NN_MEAN, &bo), AD_ERR_DTYPE,
               "bce_with_logits_loss: pos_weight [4] is f32, the prediction [3,4] is f64");
  ad_tensor_set_requires_grad(w, true);
  bo = (nn_bce_opts){.pos_weight = w};
  expect_error(ctx, nn_bce_with_logits_loss_ext(ctx, z, p, NN_MEAN, &bo), AD_ERR_ARG,
               "bce_with_logits_loss: pos_weight [4] requires a gradient");
  bo = (nn_bce_opts){.weight = k};
  expect_error(ctx, nn_bce_with_logits_loss_ext(ctx, z, p, NN_MEAN, &bo), AD_ERR_SHAPE,
               "bce_with_logits_loss: weight [2,3,2] does not broadcast to the prediction's "
               "shape [3,4]");
  ad_tensor_free(z), ad_tensor_free(y), ad_tensor_free(p), ad_tensor_free(b);
  ad_tensor_free(w3), ad_tensor_free(wf), ad_tensor_free(w), ad_tensor_free(k), ad_tensor_free(ky);
}

/* gradcheck, first and second order, of the losses with options */
typedef struct ext_case {
  int kind; /* 0 ce labels, 1 ce probabilities, 2 nll, 3 bce, 4 bce with logits */
  nn_reduction red;
  const nn_cross_entropy_opts *co;
  const nn_bce_opts *bo;
} ext_case;

static ad_tensor *ext_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  const ext_case *e = ud;
  switch (e->kind) {
  case 0:
  case 1:
    return nn_cross_entropy_loss_ext(c, in[0], in[1], e->red, e->co);
  case 2:
    return nn_nll_loss_ext(c, in[0], in[1], e->red, e->co);
  case 3:
    return nn_bce_loss_ext(c, in[0], in[1], e->red, e->bo);
  default:
    return nn_bce_with_logits_loss_ext(c, in[0], in[1], e->red, e->bo);
  }
}

Test(losses, ext_gradcheck_first_and_second_order) {
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  int64_t sk[3] = {3, 4, 2}, sy[2] = {3, 2}, s[2] = {5, 4}, nc = 4, sbw[2] = {5, 1};
  ad_tensor *cw = ad_rand(ctx, &rng, AD_F64, 1, &nc, 0.2, 2.0);
  ad_tensor *bw = ad_rand(ctx, &rng, AD_F64, 2, sbw, 0.2, 2.0);
  ad_tensor *pw = ad_rand(ctx, &rng, AD_F64, 1, &nc, 0.2, 3.0);
  ad_tensor *ky = ad_zeros(ctx, AD_I32, 2, sy);
  for (int i = 0; i < 6; i++) ad_tensor_set(ky, i, i == 3 ? -1 : (double)ad_rng_below(&rng, 4));
  nn_cross_entropy_opts co = {
      .weight = cw, .label_smoothing = 0.25, .ignore = true, .ignore_index = -1};
  nn_cross_entropy_opts no = {.weight = cw, .ignore = true, .ignore_index = -1};
  nn_bce_opts bo = {.weight = bw}, lo = {.weight = bw, .pos_weight = pw};
  for (int kind = 0; kind < 5; kind++)
    for (int red = NN_MEAN; red <= NN_SUM; red++) {
      ad_tensor *x, *t;
      if (kind <= 2) {
        x = ad_rand(ctx, &rng, AD_F64, 3, sk, kind == 2 ? -3 : -3, kind == 2 ? -0.1 : 3);
        if (kind == 1) {
          t = ad_rand(ctx, &rng, AD_F64, 3, sk, 0.05, 0.95);
          ad_tensor_set_requires_grad(t, true);
        } else {
          t = ad_tensor_clone(ctx, ky);
        }
      } else {
        x = ad_rand(ctx, &rng, AD_F64, 2, s, kind == 3 ? 0.05 : -4, kind == 3 ? 0.95 : 4);
        t = ad_rand(ctx, &rng, AD_F64, 2, s, 0.05, 0.95);
        ad_tensor_set_requires_grad(t, true);
      }
      ad_tensor_set_requires_grad(x, true);
      ad_tensor *in[2] = {x, t};
      nn_cross_entropy_opts po = {.weight = cw, .label_smoothing = 0.25};
      ext_case e = {kind, (nn_reduction)red,
                    kind == 0   ? &co
                    : kind == 1 ? &po
                                : &no,
                    kind == 3 ? &bo : &lo};
      for (int order = 1; order <= 2; order++) {
        ad_check_report rep;
        ad_status st = order == 1 ? ad_gradcheck(ctx, ext_fn, &e, 2, in, NULL, &rep)
                                  : ad_gradgradcheck(ctx, ext_fn, &e, 2, in, NULL, &rep);
        cr_assert_eq(st, AD_OK, "kind %d order %d: %s", kind, order, ad_last_error(ctx));
        cr_assert(rep.passed,
                  "kind %d red %d order %d: input %d index %lld: analytic %g numeric %g", kind, red,
                  order, rep.input, (long long)rep.index, rep.analytic, rep.numeric);
        cr_assert_gt(rep.checked, 0);
      }
      ad_tensor_free(x), ad_tensor_free(t);
    }
  ad_tensor_free(cw), ad_tensor_free(bw), ad_tensor_free(pw), ad_tensor_free(ky);
}

/* A loss with options inside nn_fit, through a wrapper of nn_loss_fn's
 * signature: class weights and label smoothing on separable data. */
static ad_tensor *fit_weights;

static ad_tensor *weighted_smoothed_ce(ad_ctx *c, ad_tensor *pred, ad_tensor *target,
                                       nn_reduction red) {
  nn_cross_entropy_opts o = {.weight = fit_weights, .label_smoothing = 0.1};
  return nn_cross_entropy_loss_ext(c, pred, target, red, &o);
}

Test(losses, ext_loss_trains_in_nn_fit) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t sx[2] = {60, 2}, n = 60, nc = 3;
  ad_tensor *x = ad_randn(ctx, &rng, AD_F32, 2, sx, 0, 1), *y = ad_zeros(ctx, AD_I32, 1, &n);
  for (int64_t i = 0; i < n; i++) {
    double a = ad_tensor_get(x, 2 * i), b = ad_tensor_get(x, 2 * i + 1);
    ad_tensor_set(y, i, a > 0 ? 0 : b > 0 ? 1 : 2);
  }
  static const double wv[3] = {1.0, 2.0, 0.5};
  fit_weights = tens(ctx, AD_F32, 1, &nc, wv);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_dense_new(ctx, 2, 3, &rng, NULL));
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.05);
  nn_fit_opts fo = {.epochs = 40, .batch_size = 16, .seed = 1, .verbose = -1};
  nn_history *h = NULL;
  cr_assert_eq(nn_fit(m, opt, weighted_smoothed_ce, x, y, &fo, &h), AD_OK, "%s",
               ad_last_error(ctx));
  const double *loss = nn_history_values(h, "loss");
  cr_assert_not_null(loss);
  cr_assert(loss[39] < 0.6 * loss[0], "loss %g -> %g", loss[0], loss[39]);
  double lv, acc;
  cr_assert_eq(nn_evaluate(m, weighted_smoothed_ce, x, y, 0, &lv, &acc), AD_OK);
  cr_assert_gt(acc, 0.8, "accuracy %g loss %g, history %g -> %g", acc, lv, loss[0], loss[39]);
  nn_history_free(h);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y), ad_tensor_free(fit_weights);
}
