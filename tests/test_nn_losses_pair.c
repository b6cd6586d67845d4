/* test_nn_losses_pair.c: the Gaussian and Poisson NLL, margin ranking,
 * hinge embedding, soft margin, cosine embedding and triplet margin losses
 * against PyTorch 1.13 (values and the gradients of every differentiable
 * input, both reductions, f64 and f32, at the margins' kinks, clamped and
 * zero variances, zero and negative targets, y other than +-1, zero
 * vectors and distances, NaN), gradcheck and gradgradcheck off the kinks,
 * second derivatives against torch, errors, and a short nn_fit. */
#include "nn.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_CTX_SUITE(losses_pair);

typedef enum kind { GAUSS, POISSON, MR, HINGE, SOFT, COS, TRIP } kind;

/* One input of a case: its shape, values and whether it requires a
 * gradient (then its gradient is in the fixture, in input order). */
typedef struct pair_input {
  int ndim;
  int64_t shape[2];
  const double *v;
  bool grad;
} pair_input;

/* A case of tools/gen_losses_pair_fixtures.py: flag1 is full (Gaussian),
 * log_input (Poisson) or swap (triplet), flag2 Poisson's full; want[d] is
 * {loss, gradients} for NN_MEAN then NN_SUM, f64 (d = 0) and f32. */
typedef struct pair_case {
  const char *name;
  kind k;
  double margin, p, eps;
  bool flag1, flag2;
  int nin;
  pair_input in[3];
  const double *want[2];
} pair_case;

/* The PyTorch values:
 * `/usr/bin/python3 tools/gen_losses_pair_fixtures.py > tests/losses_pair_fixtures.h`
 * (its docstring says what each array holds). */
#include "losses_pair_fixtures.h"

#define NCASES (int)(sizeof PAIR_CASES / sizeof PAIR_CASES[0])

/* --------------------------------------------------------------- helpers */

static ad_tensor *call(ad_ctx *c, const pair_case *pc, ad_tensor *const *in, nn_reduction red) {
  switch (pc->k) {
  case GAUSS:
    return nn_gaussian_nll_loss(c, in[0], in[1], in[2], pc->flag1, pc->eps, red);
  case POISSON:
    return nn_poisson_nll_loss(c, in[0], in[1], pc->flag1, pc->flag2, pc->eps, red);
  case MR:
    return nn_margin_ranking_loss(c, in[0], in[1], in[2], pc->margin, red);
  case HINGE:
    return nn_hinge_embedding_loss(c, in[0], in[1], pc->margin, red);
  case SOFT:
    return nn_soft_margin_loss(c, in[0], in[1], red);
  case COS:
    return nn_cosine_embedding_loss(c, in[0], in[1], in[2], pc->margin, red);
  case TRIP:
    return nn_triplet_margin_loss(c, in[0], in[1], in[2], pc->margin, pc->p, pc->eps, pc->flag1,
                                  red);
  }
  return NULL;
}

static ad_tensor *vec(ad_ctx *c, ad_dtype dt, int ndim, const int64_t *shape, const double *v) {
  ad_tensor *t = ad_zeros(c, dt, ndim, shape);
  cr_assert_not_null(t);
  for (int64_t i = 0; i < t->size; i++) ad_tensor_set(t, i, v[i]);
  return t;
}

/* got matches torch's want: both NaN, the same infinity, or within rtol
 * plus atol (for gradients that are 0 up to rounding). */
static void expect_close(double got, double want, double rtol, double atol, const char *what,
                         int i) {
  if (isnan(want) || isinf(want))
    cr_assert(isnan(want) ? isnan(got) : got == want, "%s %d: %.17g, torch %.17g", what, i, got,
              want);
  else
    cr_assert(fabs(got - want) <= rtol * fabs(want) + atol, "%s %d: %.17g, torch %.17g", what, i,
              got, want);
}

/* Runs case pc in dtype d (0 f64, 1 f32) with reduction r (0 mean, 1
 * sum) and checks the loss and the gradients against the fixture. */
static void check_case(const pair_case *pc, int d, int r) {
  ad_dtype dt = d ? AD_F32 : AD_F64;
  ad_tape_reset(ctx);
  ad_tensor *in[3] = {NULL, NULL, NULL};
  int64_t len = 1; /* {loss, grads} of one reduction */
  for (int j = 0; j < pc->nin; j++) {
    in[j] = vec(ctx, dt, pc->in[j].ndim, pc->in[j].shape, pc->in[j].v);
    ad_tensor_set_requires_grad(in[j], pc->in[j].grad);
    if (pc->in[j].grad) len += in[j]->size;
  }
  const double *want = pc->want[d] + r * len;
  ad_tensor *l = call(ctx, pc, in, r ? NN_SUM : NN_MEAN);
  cr_assert_not_null(l, "%s: %s", pc->name, ad_last_error(ctx));
  cr_assert_eq(l->ndim, 0);
  /* f32: torch and this engine round each op alike but may order sums
   * differently; values near 0 (cancellation) get an absolute slack */
  double rtol = d ? 3e-6 : 1e-13, atol = d ? 1e-6 : 1e-15;
  char what[128];
  snprintf(what, sizeof what, "%s %s %s loss", pc->name, d ? "f32" : "f64", r ? "sum" : "mean");
  expect_close(ad_tensor_item(l), want[0], rtol, atol, what, 0);
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
  int64_t at = 1;
  for (int j = 0; j < pc->nin; j++) {
    if (!pc->in[j].grad) continue;
    snprintf(what, sizeof what, "%s %s %s d/dinput%d", pc->name, d ? "f32" : "f64",
             r ? "sum" : "mean", j);
    cr_assert_not_null(in[j]->grad, "%s", what);
    for (int64_t i = 0; i < in[j]->size; i++) {
      double w = want[at + i], g = ad_tensor_get(in[j]->grad, i);
      /* gradients scale with the loss's inputs; the slack with the largest */
      expect_close(g, w, rtol, atol * (fabs(w) > 1 ? fabs(w) : 1), what, (int)i);
    }
    at += in[j]->size;
  }
  for (int j = 0; j < pc->nin; j++) ad_tensor_free(in[j]);
}

/* ------------------------------------------------------- against PyTorch */

/* Every case of the fixture: both dtypes, both reductions. */
Test(losses_pair, values_and_gradients_match_torch) {
  for (int c = 0; c < NCASES; c++)
    for (int d = 0; d < 2; d++)
      for (int r = 0; r < 2; r++) check_case(&PAIR_CASES[c], d, r);
}
