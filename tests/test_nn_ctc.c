/* test_nn_ctc.c: nn_ctc_loss against PyTorch 1.13's F.ctc_loss (values,
 * the gradient of the logits through log_softmax, and the true gradient of
 * the log-probabilities; both reductions, f64 and f32, padded and
 * concatenated targets, repeated labels, blank other than 0, empty
 * targets, input length 0, impossible alignments with and without
 * zero_infinity, unbatched input, NaN in frames past an input length),
 * gradcheck and gradgradcheck, errors, and a short training run. */
#include "nn.h"
#include "test_alloc.h"
#include "test_layer_values.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_CTX_SUITE(ctc);

/* A case of tools/gen_ctc_fixtures.py: S the targets' last dim (padded) or
 * size (concatenated); x logits [T,N,C] (direct: log-probabilities);
 * want[d] (d = 0 f64, 1 f32) is {loss, d/dlogits (not for direct),
 * d/dlog_probs} for NN_MEAN, then for NN_SUM, then for NN_NONE (there N
 * losses, 1 unbatched, and the gradients of sum_n (1 + n/2) l_n). */
typedef struct ctc_case {
  const char *name;
  int64_t T, N, C, S;
  int blank;
  bool zinf, padded, unbatched, direct;
  const double *x;
  const int32_t *tg;
  const int64_t *il, *tl;
  const double *want[2];
} ctc_case;

/* The PyTorch values:
 * `/usr/bin/python3 tools/gen_ctc_fixtures.py > tests/ctc_fixtures.h`
 * (its docstring says what each array holds). */
#include "ctc_fixtures.h"

#define NCASES (int)(sizeof CTC_CASES / sizeof CTC_CASES[0])

/* The targets of case k as an i32 tensor of its layout. */
static ad_tensor *targets_of(ad_ctx *c, const ctc_case *k) {
  int64_t s[2] = {k->N, k->S};
  return k->padded ? ad_from_data(c, AD_I32, 2, s, k->tg)
                   : ad_from_data(c, AD_I32, 1, s + 1, k->tg);
}

/* Runs case k in dtype d (0 f64, 1 f32) with reduction r (0 mean, 1 sum,
 * 2 none): logits -> log_softmax -> nn_ctc_loss (direct: log-probabilities
 * -> nn_ctc_loss), and checks the loss (none: the per-sample losses, [N] or
 * 0-d unbatched) and the gradients (none: of sum_n (1 + n/2) l_n) against
 * the fixture. */
static void check_case(const ctc_case *k, int d, int r) {
  ad_dtype dt = d ? AD_F32 : AD_F64;
  ad_tape_reset(ctx);
  int64_t TNC = k->T * k->N * k->C, s3[3] = {k->T, k->N, k->C}, s2[2] = {k->T, k->C};
  ad_tensor *x = ad_zeros(ctx, dt, 3, s3), *tg = targets_of(ctx, k);
  cr_assert(x && tg);
  for (int64_t i = 0; i < TNC; i++) ad_tensor_set(x, i, k->x[i]);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *lp = k->direct ? x : ad_log_softmax(ctx, x, 2);
  if (!k->direct) ad_tensor_retain_grad(lp);
  ad_tensor *in = k->unbatched ? ad_reshape(ctx, lp, 2, s2) : lp;
  static const nn_reduction reds[3] = {NN_MEAN, NN_SUM, NN_NONE};
  ad_tensor *l = nn_ctc_loss(ctx, in, tg, k->il, k->tl, k->blank, reds[r], k->zinf);
  cr_assert_not_null(l, "%s: %s", k->name, ad_last_error(ctx));
  bool none = r == 2;
  int nl = none ? (int)k->N : 1; /* the losses: N per-sample ones with none */
  cr_assert_eq(l->ndim, none && !k->unbatched ? 1 : 0, "%s: %d dims", k->name, l->ndim);
  cr_assert_eq(l->size, nl);
  int64_t len = 1 + (k->direct ? 1 : 2) * TNC;
  const double *want = k->want[d] + r * len;
  /* f32: torch's recursion and this one round alike per op but differ in
   * the order of some sums */
  double rtol = d ? 2e-5 : 1e-12, atol = d ? 2e-6 : 1e-14;
  char what[160];
  const char *tag = d ? "f32" : "f64", *red = r == 2 ? "none" : r ? "sum" : "mean";
  snprintf(what, sizeof what, "%s %s %s loss", k->name, tag, red);
  for (int n = 0; n < nl; n++) test_expect_near(ad_tensor_get(l, n), want[n], rtol, atol, what, n);
  if (none) { /* sum_n W_n l_n, the generator's weights */
    ad_tensor *w = ad_zeros(ctx, dt, l->ndim, l->shape);
    cr_assert_not_null(w);
    for (int n = 0; n < nl; n++) ad_tensor_set(w, n, 1.0 + 0.5 * n);
    ad_tensor *lw = ad_sum(ctx, ad_mul(ctx, l, w));
    cr_assert_not_null(lw, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_backward(ctx, lw, NULL), AD_OK, "%s", ad_last_error(ctx));
    ad_tensor_free(w);
  } else {
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
  }
  int at = nl;
  if (!k->direct) {
    snprintf(what, sizeof what, "%s %s %s d/dlogits", k->name, tag, red);
    for (int64_t i = 0; i < TNC; i++)
      test_expect_near(ad_tensor_get(x->grad, i), want[at + i], rtol, atol, what, (int)i);
    at += (int)TNC;
  }
  snprintf(what, sizeof what, "%s %s %s d/dlog_probs (true)", k->name, tag, red);
  cr_assert_not_null(lp->grad, "%s", what);
  for (int64_t i = 0; i < TNC; i++)
    test_expect_near(ad_tensor_get(lp->grad, i), want[at + i], rtol, atol, what, (int)i);
  ad_tensor_free(x), ad_tensor_free(tg);
}

Test(ctc, values_and_gradients_match_torch) {
  for (int c = 0; c < NCASES; c++)
    for (int d = 0; d < 2; d++)
      for (int r = 0; r < 3; r++) check_case(&CTC_CASES[c], d, r);
}

/* ------------------------------------------------------------- gradcheck */

typedef struct gc_case {
  int64_t T, N, C, S;
  bool padded, zinf;
  int blank;
  int32_t tg[8];
  int64_t il[3], tl[3];
  nn_reduction red;
  ad_tensor *targets;
} gc_case;

static ad_tensor *gc_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  const gc_case *g = ud;
  (void)n;
  return nn_ctc_loss(c, in[0], g->targets, g->il, g->tl, g->blank, g->red, g->zinf);
}

/* First and second order in the log-probabilities (any values: the true
 * derivative), and through log_softmax: padded targets with a repeat,
 * concatenated ones, blank 2, short inputs, an empty target, and an
 * impossible sample with zero_infinity (a constant 0). */
Test(ctc, gradcheck_and_gradgradcheck) {
  gc_case cases[] = {
      {5, 2, 4, 3, true, false, 0, {1, 1, 3, 2, 0, 0}, {5, 4}, {3, 1}, NN_MEAN, NULL},
      {5, 3, 3, 4, false, false, 2, {0, 1, 1, 0}, {5, 3, 2}, {2, 2, 0}, NN_SUM, NULL},
      {4, 2, 3, 3, true, true, 0, {1, 1, 1, 2, 0, 0}, {4, 4}, {3, 1}, NN_MEAN, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (int r = 0; r < 2; r++) {
      gc_case *g = &cases[i];
      g->red = r ? NN_SUM : NN_MEAN;
      int64_t s2[2] = {g->N, g->S}, s3[3] = {g->T, g->N, g->C};
      g->targets = g->padded ? ad_from_data(ctx, AD_I32, 2, s2, g->tg)
                             : ad_from_data(ctx, AD_I32, 1, s2 + 1, g->tg);
      ad_rng rng;
      ad_rng_seed(&rng, 5 + i);
      ad_tensor *lp = ad_rand(ctx, &rng, AD_F64, 3, s3, -3, 0);
      cr_assert(g->targets && lp);
      ad_tensor_set_requires_grad(lp, true);
      ad_check_report rep;
      cr_assert_eq(ad_gradcheck(ctx, gc_fn, g, 1, &lp, NULL, &rep), AD_OK, "%s",
                   ad_last_error(ctx));
      cr_assert(rep.passed, "case %zu red %d: index %lld: analytic %g numeric %g", i, r,
                (long long)rep.index, rep.analytic, rep.numeric);
      cr_assert_gt(rep.checked, 0);
      cr_assert_eq(ad_gradgradcheck(ctx, gc_fn, g, 1, &lp, NULL, &rep), AD_OK, "%s",
                   ad_last_error(ctx));
      cr_assert(rep.passed, "case %zu red %d (2nd order): index %lld: %g numeric %g", i, r,
                (long long)rep.index, rep.analytic, rep.numeric);
      ad_tensor_free(lp), ad_tensor_free(g->targets);
    }
}

/* ---------------------------------------------------------- special cases */

/* Input length 0: the empty target has probability 1 (loss 0, as torch's
 * -0), any other is impossible (inf; 0 with zero_infinity); no gradient
 * reaches log_probs from such a sample. All lengths 0 still makes a loss
 * on the tape whose backward gives zeros. */
Test(ctc, input_length_zero) {
  int64_t s3[3] = {3, 3, 4}, s2[2] = {3, 2};
  const int32_t tv[6] = {1, 2, 1, 0, 3, 3};
  const int64_t il[3] = {0, 0, 3}, tl[3] = {0, 1, 1}, il0[3] = {0, 0, 0};
  for (int z = 0; z < 2; z++) {
    ad_tape_reset(ctx);
    ad_tensor *lp = ad_full(ctx, AD_F64, 3, s3, log(0.25)),
              *tg = ad_from_data(ctx, AD_I32, 2, s2, tv);
    ad_tensor_set_requires_grad(lp, true);
    ad_tensor *l = nn_ctc_loss(ctx, lp, tg, il, tl, 0, NN_SUM, z);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    /* sample 2: label 3 over 3 frames, 6 of the 64 paths: -log(6/64) */
    double s2l = -log(6.0 / 64.0);
    if (z)
      cr_assert(fabs(ad_tensor_item(l) - s2l) < 1e-12, "%.17g", ad_tensor_item(l));
    else
      cr_assert(isinf(ad_tensor_item(l)) && ad_tensor_item(l) > 0);
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
    for (int64_t t = 0; t < 3; t++)
      for (int64_t n = 0; n < 2; n++)
        for (int64_t c = 0; c < 4; c++)
          cr_assert_eq(ad_tensor_get(lp->grad, (t * 3 + n) * 4 + c), 0.0);
    ad_tensor_zero_grad(lp);
    const int64_t tl0[3] = {0, 0, 0};
    l = nn_ctc_loss(ctx, lp, tg, il0, tl0, 0, NN_MEAN, z);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_tensor_item(l), 0.0);
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
    for (int64_t i = 0; i < lp->size; i++) cr_assert_eq(ad_tensor_get(lp->grad, i), 0.0);
    ad_tensor_free(lp), ad_tensor_free(tg);
  }
}

/* A log-probability of -inf (probability 0) on some paths: the loss is
 * that of the others and its gradient there is 0; on every path: the
 * sample is impossible, inf with NaN gradients on its frames (torch:
 * loss inf, gradient NaN), 0 and 0 with zero_infinity. */
Test(ctc, log_probability_minus_infinity) {
  int64_t s3[3] = {3, 1, 3}, one = 1;
  const int32_t tv[1] = {1};
  const int64_t il[1] = {3}, tl[1] = {1};
  for (int k = 0; k < 3; k++) {
    ad_tape_reset(ctx);
    ad_tensor *lp = ad_full(ctx, AD_F64, 3, s3, log(1.0 / 3)),
              *tg = ad_from_data(ctx, AD_I32, 1, &one, tv);
    /* k = 0: label 1 impossible at frame 0 (paths: 1 at frames 1, 2 only);
     * k > 0: label 1 impossible everywhere */
    for (int64_t t = 0; t < (k ? 3 : 1); t++) ad_tensor_set(lp, t * 3 + 1, -INFINITY);
    ad_tensor_set_requires_grad(lp, true);
    ad_tensor *l = nn_ctc_loss(ctx, lp, tg, il, tl, 0, NN_SUM, k == 2);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
    if (k == 0) {
      /* alignments b11 b b1 bb1 11b 1bb 111 1 1b1: without frame-0 ones
       * bb1 b1b b11 (3 of 27 at 1/27 each) */
      cr_assert(fabs(ad_tensor_item(l) + log(3.0 / 27)) < 1e-12, "%.17g", ad_tensor_item(l));
      cr_assert_eq(ad_tensor_get(lp->grad, 1), 0.0);
      cr_assert(!ad_tensor_has_nonfinite(lp->grad));
    } else if (k == 1) {
      cr_assert(isinf(ad_tensor_item(l)), "%g", ad_tensor_item(l));
      for (int64_t i = 0; i < lp->size; i++) cr_assert(isnan(ad_tensor_get(lp->grad, i)));
    } else {
      cr_assert_eq(ad_tensor_item(l), 0.0);
      for (int64_t i = 0; i < lp->size; i++) cr_assert_eq(ad_tensor_get(lp->grad, i), 0.0);
    }
    ad_tensor_free(lp), ad_tensor_free(tg);
  }
}

/* Learning: free logits [T,1,C] fitted by gradient descent to a target
 * with a repeated label; the loss falls and the best path, collapsed
 * (repeats merged, blanks dropped), spells the target. */
Test(ctc, gradient_descent_learns_an_alignment) {
  enum { T = 8, C = 4 };
  int64_t s3[3] = {T, 1, C}, three = 3;
  const int32_t tv[3] = {2, 2, 3};
  const int64_t il[1] = {T}, tl[1] = {3};
  ad_tensor *z = ad_zeros(ctx, AD_F64, 3, s3), *tg = ad_from_data(ctx, AD_I32, 1, &three, tv);
  ad_tensor_set_requires_grad(z, true);
  double first = 0, last = 0;
  for (int it = 0; it < 60; it++) {
    ad_tape_reset(ctx);
    ad_tensor *l = nn_ctc_loss(ctx, ad_log_softmax(ctx, z, 2), tg, il, tl, 0, NN_MEAN, false);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    last = ad_tensor_item(l);
    if (it == 0) first = last;
    ad_tensor_zero_grad(z);
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK);
    for (int64_t i = 0; i < z->size; i++)
      ad_tensor_set(z, i, ad_tensor_get(z, i) - 2.0 * ad_tensor_get(z->grad, i));
  }
  cr_assert_lt(last, 0.1 * first, "loss %g from %g", last, first);
  int32_t out[T], n = 0, prev = -1;
  for (int t = 0; t < T; t++) {
    int best = 0;
    for (int c = 1; c < C; c++)
      if (ad_tensor_get(z, t * C + c) > ad_tensor_get(z, t * C + best)) best = c;
    if (best != prev && best != 0) out[n++] = best;
    prev = best;
  }
  cr_assert_eq(n, 3);
  for (int i = 0; i < 3; i++) cr_assert_eq(out[i], tv[i], "label %d", i);
  ad_tensor_free(z), ad_tensor_free(tg);
}

/* ----------------------------------------------------------------- errors */

Test(ctc, errors_name_the_loss) {
  ad_ctx *other = ad_ctx_new();
  int64_t s3[3] = {4, 2, 3}, s2[2] = {2, 2}, s22[2] = {3, 2}, s4[1] = {4}, s1[1] = {1};
  const int32_t tv[4] = {1, 2, 2, 0};
  const int64_t il[2] = {4, 3}, tl[2] = {2, 1};
  ad_tensor *lp = ad_full(ctx, AD_F64, 3, s3, -1.0), *tg = ad_from_data(ctx, AD_I32, 2, s2, tv);
  ad_tensor *gone = ad_zeros(ctx, AD_F64, 3, s3), *far = ad_zeros(other, AD_F64, 3, s3);
  ad_tensor *lpi = ad_zeros(ctx, AD_I32, 3, s3), *tgf = ad_zeros(ctx, AD_F64, 2, s2);
  ad_tensor *tg3 = ad_zeros(ctx, AD_I32, 2, s22), *cat4 = ad_from_data(ctx, AD_I32, 1, s4, tv);
  ad_tensor *lp1 = ad_zeros(ctx, AD_F64, 1, s4),
            *t0 = ad_zeros(ctx, AD_F64, 3, (int64_t[]){0, 2, 3});
  ad_tensor *c0 = ad_zeros(ctx, AD_F64, 3, (int64_t[]){4, 2, 0}),
            *tg1 = ad_zeros(ctx, AD_I32, 1, s1);
  ad_tensor_free(gone);
  const char *F = "ctc_loss";
  /* NULL arguments */
  cr_assert_null(nn_ctc_loss(ctx, NULL, tg, il, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_NULL, "ctc_loss: log_probs is NULL", NULL);
  cr_assert_null(nn_ctc_loss(ctx, lp, NULL, il, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_NULL, "ctc_loss: targets is NULL", NULL);
  cr_assert_null(nn_ctc_loss(ctx, lp, tg, NULL, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_NULL, "ctc_loss: input_lengths is NULL", NULL);
  cr_assert_null(nn_ctc_loss(ctx, lp, tg, il, NULL, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_NULL, "ctc_loss: target_lengths is NULL", NULL);
  cr_assert_null(nn_ctc_loss(NULL, lp, tg, il, tl, 0, NN_MEAN, false));
  /* freed, another context's */
  cr_assert_null(nn_ctc_loss(ctx, gone, tg, il, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_STATE, "ctc_loss: log_probs was freed", NULL);
  cr_assert_null(nn_ctc_loss(ctx, far, tg, il, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_ARG, "ctc_loss: log_probs belongs to another context", NULL);
  /* dtypes */
  cr_assert_null(nn_ctc_loss(ctx, lpi, tg, il, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_DTYPE, "ctc_loss: log_probs [4,2,3] is i32", NULL);
  cr_assert_null(nn_ctc_loss(ctx, lp, tgf, il, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_DTYPE, "ctc_loss: targets [2,2] are f64", NULL);
  /* shapes */
  ad_tensor *bad[3] = {lp1, t0, c0};
  for (int i = 0; i < 3; i++) {
    cr_assert_null(nn_ctc_loss(ctx, bad[i], tg, il, tl, 0, NN_MEAN, false));
    test_expect_error(ctx, AD_ERR_SHAPE, F, "need [T,N,C]", NULL);
  }
  cr_assert_null(nn_ctc_loss(ctx, lp, tg3, il, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_SHAPE, "ctc_loss: targets [3,2] do not fit log_probs [4,2,3]",
                    "[2,S]", NULL);
  cr_assert_null(nn_ctc_loss(ctx, lp, cat4, il, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_SHAPE, "ctc_loss: concatenated targets [4]", "sum to 3", NULL);
  /* lengths whose sum wraps around to the targets' size (2^64 - 1 twice, plus 6) */
  cr_assert_null(
      nn_ctc_loss(ctx, lp, cat4, il, (int64_t[]){INT64_MAX, INT64_MAX}, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_SHAPE, "ctc_loss: concatenated targets [4]",
                    "sum to more than their size (target_lengths[0] =", NULL);
  int64_t s3w[3] = {4, 3, 3};
  ad_tensor *lpw = ad_zeros(ctx, AD_F64, 3, s3w);
  cr_assert_null(nn_ctc_loss(ctx, lpw, cat4, (int64_t[]){4, 4, 4},
                             (int64_t[]){INT64_MAX, INT64_MAX, 6}, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_SHAPE, "sum to more than their size (target_lengths[0] =", NULL);
  ad_tensor_free(lpw);
  /* unbatched: 1-D targets are the whole target (torch's rule) */
  int64_t s2u[2] = {4, 3};
  ad_tensor *lpu = ad_reshape(ctx, ad_narrow(ctx, lp, 1, 0, 1), 2, s2u);
  cr_assert_null(nn_ctc_loss(ctx, lpu, cat4, il, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_SHAPE, "sum to 2, not their size", NULL);
  ad_tensor_set(tg1, 0, 2);
  cr_assert_not_null(nn_ctc_loss(ctx, lpu, tg1, il, (int64_t[]){1}, 0, NN_MEAN, false), "%s",
                     ad_last_error(ctx));
  /* lengths */
  cr_assert_null(nn_ctc_loss(ctx, lp, tg, (int64_t[]){4, 5}, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_ARG, "ctc_loss: input_lengths[1] = 5 is outside 0..4", NULL);
  cr_assert_null(nn_ctc_loss(ctx, lp, tg, (int64_t[]){-1, 2}, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_ARG, "ctc_loss: input_lengths[0] = -1", NULL);
  cr_assert_null(nn_ctc_loss(ctx, lp, tg, il, (int64_t[]){3, 1}, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_ARG, "ctc_loss: target_lengths[0] = 3 is outside 0..2", NULL);
  cr_assert_null(nn_ctc_loss(ctx, lp, cat4, il, (int64_t[]){-1, 5}, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_ARG, "ctc_loss: target_lengths[0] = -1 is negative", NULL);
  /* labels and blank */
  cr_assert_null(nn_ctc_loss(ctx, lp, tg, il, (int64_t[]){2, 2}, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_ARG, "ctc_loss: label 0 (target 1 of sample 1) is the blank", NULL);
  cr_assert_null(nn_ctc_loss(ctx, lp, tg, il, tl, 2, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_ARG, "ctc_loss: label 2 (target 1 of sample 0) is the blank", NULL);
  ad_tensor_set(tg, 0, 3);
  cr_assert_null(nn_ctc_loss(ctx, lp, tg, il, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_ARG, "ctc_loss: label 3 (target 0 of sample 0) is outside", NULL);
  ad_tensor_set(tg, 0, -1);
  cr_assert_null(nn_ctc_loss(ctx, lp, tg, il, tl, 0, NN_MEAN, false));
  test_expect_error(ctx, AD_ERR_ARG, "ctc_loss: label -1", NULL);
  ad_tensor_set(tg, 0, 1);
  const int blanks[2] = {-1, 3};
  for (int b = 0; b < 2; b++) {
    cr_assert_null(nn_ctc_loss(ctx, lp, tg, il, tl, blanks[b], NN_MEAN, false));
    test_expect_error(ctx, AD_ERR_ARG, F, "is outside the classes 0..2", NULL);
  }
  /* reductions */
  const nn_reduction red[3] = {NN_BATCHMEAN, (nn_reduction)9, (nn_reduction)-1};
  for (int r = 0; r < 3; r++) {
    cr_assert_null(nn_ctc_loss(ctx, lp, tg, il, tl, 0, red[r], false));
    test_expect_error(ctx, AD_ERR_ARG, F, r ? "unknown reduction" : "NN_BATCHMEAN", NULL);
  }
  /* the call that works */
  cr_assert_not_null(nn_ctc_loss(ctx, lp, tg, il, tl, 0, NN_MEAN, false), "%s", ad_last_error(ctx));
  ad_tensor *ts[] = {lp, lpi, tgf, tg3, cat4, lp1, t0, c0, tg, tg1};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) ad_tensor_free(ts[i]);
  ad_ctx_free(other);
}

/* An empty batch: NaN with NN_MEAN, 0 with NN_SUM, as torch; the
 * backward runs. */
Test(ctc, empty_batch) {
  int64_t s3[3] = {3, 0, 4}, s2[2] = {0, 2};
  ad_tensor *lp = ad_zeros(ctx, AD_F64, 3, s3), *tg = ad_zeros(ctx, AD_I32, 2, s2);
  ad_tensor_set_requires_grad(lp, true);
  for (int r = 0; r < 2; r++) {
    ad_tensor *l =
        nn_ctc_loss(ctx, lp, tg, (int64_t[]){0}, (int64_t[]){0}, 0, r ? NN_SUM : NN_MEAN, false);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    cr_assert(r ? ad_tensor_item(l) == 0 : isnan(ad_tensor_item(l)));
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
  }
  ad_tensor_free(lp), ad_tensor_free(tg);
}

/* ------------------------------------------------------------- ctc_alpha */

/* The op under nn_ctc_loss, from its start of 0 and -1e30: the plain (fused)
 * backward against the one made of ops (create_graph), f32 and f64, with a
 * seed on every row (also on states no path reaches, which hold the
 * constant -1e30 and pass no gradient); then its errors. */
Test(ctc, ctc_alpha_fused_backward_matches_the_recorded_one) {
  enum { T = 4, N = 2, L = 5 };
  static const int32_t sk[N * L] = {0, 0, 0, 1, 0, 0, 0, 0, 0, 0};
  int64_t es[3] = {T, N, L}, os[3] = {T + 1, N, L}, nl[2] = {N, L};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    ad_rng rng;
    ad_rng_seed(&rng, 11);
    ad_tensor *e = ad_rand(ctx, &rng, dt, 3, es, -3, 0), *dy = ad_rand(ctx, &rng, dt, 3, os, -1, 1);
    ad_tensor *skip = ad_from_data(ctx, AD_I32, 2, nl, sk), *a0 = ad_zeros(ctx, dt, 2, nl);
    cr_assert(e && dy && skip && a0);
    for (int64_t i = 0; i < N * L; i++) ad_tensor_set(a0, i, i % L ? -1e30 : 0.0);
    ad_tensor_set_requires_grad(e, true);
    ad_tensor *y = ad_ctc_alpha(ctx, e, skip, a0), *plain = NULL, *rec = NULL;
    cr_assert(y, "%s", ad_last_error(ctx));
    /* row 1 reaches s = 0, 1 only: the rest is exactly -1e30 */
    for (int64_t s = 2; s < L; s++)
      cr_assert_eq(ad_tensor_get(y, N * L + s), (double)(dt == AD_F32 ? (float)-1e30 : -1e30));
    cr_assert_eq(ad_grad(ctx, y, dy, 1, &e, &plain, false), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_grad(ctx, y, dy, 1, &e, &rec, true), AD_OK, "%s", ad_last_error(ctx));
    double worst = 0, mag = 0;
    for (int64_t i = 0; i < e->size; i++) {
      double p = ad_tensor_get(plain, i), r = ad_tensor_get(rec, i);
      cr_assert(isfinite(p), "element %lld: %g", (long long)i, p);
      worst = fmax(worst, fabs(p - r)), mag = fmax(mag, fabs(r));
    }
    cr_assert_gt(mag, 0.1);
    cr_assert_leq(worst, d ? 1e-12 : 1e-5, "%s: fused and recorded differ by %g", ad_dtype_name(dt),
                  worst);
    /* e_0 at s >= 2 feeds states no path reaches: gradient 0 */
    for (int64_t s = 2; s < L; s++) cr_assert_eq(ad_tensor_get(plain, s), 0.0);
    ad_tape_reset(ctx);
    ad_tensor_free(e), ad_tensor_free(dy), ad_tensor_free(skip), ad_tensor_free(a0);
  }
  int64_t bad[2] = {N, 4};
  ad_tensor *e = ad_zeros(ctx, AD_F64, 3, es), *kf = ad_zeros(ctx, AD_F64, 2, nl);
  ad_tensor *k = ad_zeros(ctx, AD_I32, 2, nl), *a0 = ad_zeros(ctx, AD_F64, 2, nl);
  ad_tensor *a32 = ad_zeros(ctx, AD_F32, 2, nl), *kb = ad_zeros(ctx, AD_I32, 2, bad);
  cr_assert(e && kf && k && a0 && a32 && kb);
  cr_assert_null(ad_ctc_alpha(ctx, e, kf, a0));
  test_expect_error(ctx, AD_ERR_DTYPE, "ctc_alpha: skip mask [2,5] is f64; it must be i32", NULL);
  cr_assert_null(ad_ctc_alpha(ctx, e, kb, a0));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "ctc_alpha: emissions [4,2,5], skip mask [2,4] and start [2,5]", NULL);
  cr_assert_null(ad_ctc_alpha(ctx, e, k, a32));
  test_expect_error(ctx, AD_ERR_DTYPE, "ctc_alpha: start [2,5] is f32, emissions f64", NULL);
  cr_assert_null(ad_ctc_alpha(ctx, k, k, a0));
  test_expect_error(ctx, AD_ERR_DTYPE, "ctc_alpha: emissions [2,5] are i32", NULL);
}

/* No frames (e [0, N, L]): the output is the start alone, and both
 * backwards pass dy's one row to the start and give e an empty gradient
 * (the recorded one stacked no rows: "stack: takes one or more inputs"). */
Test(ctc, ctc_alpha_of_no_frames) {
  enum { N = 2, L = 3 };
  int64_t es[3] = {0, N, L}, os[3] = {1, N, L}, nl[2] = {N, L};
  for (int cg = 0; cg < 2; cg++) {
    ad_rng rng;
    ad_rng_seed(&rng, 3);
    ad_tensor *e = ad_zeros(ctx, AD_F64, 3, es), *k = ad_zeros(ctx, AD_I32, 2, nl);
    ad_tensor *a0 = ad_rand(ctx, &rng, AD_F64, 2, nl, -1, 0),
              *dy = ad_rand(ctx, &rng, AD_F64, 3, os, 1, 2);
    cr_assert(e && k && a0 && dy);
    ad_tensor_set_requires_grad(e, true), ad_tensor_set_requires_grad(a0, true);
    ad_tensor *y = ad_ctc_alpha(ctx, e, k, a0), *in[2] = {e, a0}, *g[2] = {NULL, NULL};
    cr_assert(y, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_grad(ctx, y, dy, 2, in, g, cg), AD_OK, "create_graph %d: %s", cg,
                 ad_last_error(ctx));
    cr_assert(g[0]->ndim == 3 && g[0]->shape[0] == 0 && g[0]->shape[1] == N && g[0]->shape[2] == L);
    for (int64_t i = 0; i < N * L; i++)
      cr_assert_eq(ad_tensor_get(g[1], i), ad_tensor_get(dy, i), "create_graph %d, %lld", cg,
                   (long long)i);
    ad_tape_reset(ctx);
    ad_tensor_free(e), ad_tensor_free(k), ad_tensor_free(a0), ad_tensor_free(dy);
  }
}

/* A recorded backward (create_graph) through nn_ctc_loss, as a gradient
 * penalty's loop runs it: each step's constants live on the tape, so after
 * ad_tape_reset the context holds the persistent tensors it held before
 * (ctc_alpha's recorded backward made its shift row and zeros with
 * ad_full / ad_zeros: two persistent tensors leaked per step). */
Test(ctc, recorded_backward_leaves_no_persistent_tensor) {
  enum { T = 5, N = 2, C = 4, S = 2 };
  static const int32_t tg[N * S] = {1, 2, 3, 3};
  static const int64_t il[N] = {5, 4}, tl[N] = {2, 2};
  int64_t xs[3] = {T, N, C}, ts[2] = {N, S};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    ad_tensor *x = ad_rand(ctx, &rng, dt, 3, xs, -2, 2), *t = ad_from_data(ctx, AD_I32, 2, ts, tg);
    cr_assert(x && t);
    ad_tensor_set_requires_grad(x, true);
    size_t live = ad_ctx_live_tensors(ctx);
    for (int step = 0; step < 3; step++) {
      ad_tensor *lp = ad_log_softmax(ctx, x, 2), *g = NULL, *h = NULL;
      ad_tensor *loss = nn_ctc_loss(ctx, lp, t, il, tl, 0, NN_SUM, false);
      cr_assert(loss, "%s", ad_last_error(ctx));
      cr_assert_eq(ad_grad(ctx, loss, NULL, 1, &x, &g, true), AD_OK, "%s", ad_last_error(ctx));
      cr_assert_eq(ad_grad(ctx, ad_sum(ctx, ad_mul(ctx, g, g)), NULL, 1, &x, &h, false), AD_OK,
                   "%s", ad_last_error(ctx));
      double mag = 0;
      for (int64_t i = 0; i < h->size; i++) mag = fmax(mag, fabs(ad_tensor_get(h, i)));
      cr_assert_gt(mag, 0.0); /* the second order went through the recorded backward */
      ad_tape_reset(ctx);
      cr_assert_eq(ad_ctx_live_tensors(ctx), live,
                   "%s, step %d: %zu persistent tensors, %zu before", ad_dtype_name(dt), step,
                   ad_ctx_live_tensors(ctx), live);
    }
    ad_tensor_free(x), ad_tensor_free(t);
  }
}
