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
      QUICK_ASSERT(want != want ? got != got : fabs(got - want) <= 3 * 0x1p-24 * fabs(want) + 1e-45,
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
