/* test_nn_losses_pair.c: the Gaussian and Poisson NLL, margin ranking,
 * hinge embedding, soft margin, cosine embedding and triplet margin losses,
 * and the multilabel soft margin and multi-class margin losses
 * against PyTorch 1.13 (values and the gradients of every differentiable
 * input, both reductions, f64 and f32, at the margins' kinks, clamped and
 * zero variances, zero and negative targets, y other than +-1, zero
 * vectors and distances, NaN), gradcheck and gradgradcheck off the kinks,
 * second derivatives against torch, errors, and a short nn_fit. */
#include "nn.h"
#include "test_alloc.h"
#include "test_layer_values.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_CTX_SUITE(losses_pair);

typedef enum kind { GAUSS, POISSON, MR, HINGE, SOFT, COS, TRIP, MLSM, MM } kind;

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
  case MLSM:
    return nn_multilabel_soft_margin_loss(c, in[0], in[1], pc->nin > 2 ? in[2] : NULL, red);
  case MM:
    return nn_multi_margin_loss(c, in[0], in[1], (int)pc->p, pc->margin, pc->nin > 2 ? in[2] : NULL,
                                red);
  }
  return NULL;
}

/* Runs case pc in dtype d (0 f64, 1 f32) with reduction r (0 mean, 1
 * sum) and checks the loss and the gradients against the fixture. */
static void check_case(const pair_case *pc, int d, int r) {
  ad_dtype dt = d ? AD_F32 : AD_F64;
  ad_tape_reset(ctx);
  ad_tensor *in[3] = {NULL, NULL, NULL};
  int64_t len = 1; /* {loss, grads} of one reduction */
  for (int j = 0; j < pc->nin; j++) {
    /* multi_margin's labels are i32 */
    in[j] = test_tensor_values(ctx, pc->k == MM && j == 1 ? AD_I32 : dt, pc->in[j].ndim,
                               pc->in[j].shape, pc->in[j].v);
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
  test_expect_near(ad_tensor_item(l), want[0], rtol, atol, what, 0);
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
      test_expect_near(g, w, rtol, atol * (fabs(w) > 1 ? fabs(w) : 1), what, (int)i);
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

/* Second order through the Gaussian NLL (full, eps 1e-6, NN_SUM), one var
 * below eps: g = (dl/dinput, dl/dvar) with create_graph, then the
 * gradients of sum(g) for input, target and var, as torch's. Where var is
 * clamped, torch differentiates 0.5 (1/v - d^2/v^2) at v = eps with dv/dvar
 * = 1 (the clamp ran under no_grad), so d2l/dvar2 there is about 9e17. */
Test(losses_pair, second_derivatives_of_gaussian_nll_match_torch) {
  int64_t n = 4;
  const double vv[4] = {0.5, 1e-8, 2.0, 0.25};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    const double *want = d ? GAUSS_SECOND_F32 : GAUSS_SECOND_F64;
    double rtol = d ? 3e-6 : 1e-13;
    ad_tape_reset(ctx);
    ad_tensor *x = test_tensor_values(ctx, dt, 1, &n, PAIR_CASES[0].in[0].v);
    ad_tensor *t = test_tensor_values(ctx, dt, 1, &n, PAIR_CASES[0].in[1].v),
              *v = test_tensor_values(ctx, dt, 1, &n, vv);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor_set_requires_grad(t, true);
    ad_tensor_set_requires_grad(v, true);
    ad_tensor *l = nn_gaussian_nll_loss(ctx, x, t, v, true, 1e-6, NN_SUM);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    ad_tensor *wrt[2] = {x, v}, *g[2];
    cr_assert_eq(ad_grad(ctx, l, NULL, 2, wrt, g, true), AD_OK, "%s", ad_last_error(ctx));
    for (int i = 0; i < 4; i++) {
      test_expect_near(ad_tensor_get(g[0], i), want[i], rtol, 0, "dl/dinput", i);
      test_expect_near(ad_tensor_get(g[1], i), want[4 + i], rtol, 0, "dl/dvar", i);
    }
    cr_assert_eq(ad_backward(ctx, ad_add(ctx, ad_sum(ctx, g[0]), ad_sum(ctx, g[1])), NULL), AD_OK,
                 "%s", ad_last_error(ctx));
    ad_tensor *in[3] = {x, t, v};
    const char *names[3] = {"d/dinput", "d/dtarget", "d/dvar"};
    for (int k = 0; k < 3; k++)
      for (int i = 0; i < 4; i++)
        test_expect_near(ad_tensor_get(in[k]->grad, i), want[8 + 4 * k + i], rtol, 0, names[k], i);
    ad_tensor_free(x), ad_tensor_free(t), ad_tensor_free(v);
  }
}

/* ------------------------------------------------------------- gradcheck */

/* A gradcheck case: the loss of pc on its differentiable inputs, the
 * others (y of hinge, soft margin, cosine) fixed in fixed[]. */
typedef struct gc_case {
  pair_case pc;
  nn_reduction red;
  ad_tensor *fixed[3];
} gc_case;

static ad_tensor *gc_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  const gc_case *g = ud;
  ad_tensor *all[3];
  for (int j = 0, k = 0; j < g->pc.nin; j++) all[j] = g->fixed[j] ? g->fixed[j] : in[k++];
  (void)n;
  return call(c, &g->pc, all, g->red);
}

/* Random f64 inputs in [lo, hi], signs +-1 for y where asked. */
static ad_tensor *rnd(ad_rng *rng, int ndim, const int64_t *s, double lo, double hi, bool sign) {
  ad_tensor *t = ad_rand(ctx, rng, AD_F64, ndim, s, lo, hi);
  cr_assert_not_null(t);
  if (sign)
    for (int64_t i = 0; i < t->size; i++) ad_tensor_set(t, i, ad_tensor_get(t, i) < 0 ? -1 : 1);
  return t;
}

/* First and second order of every loss, every differentiable input, both
 * reductions, off the kinks: the ranges keep each margin term, variance
 * and Poisson target clear of its switch point by more than the step. */
Test(losses_pair, gradcheck_and_gradgradcheck) {
  const struct {
    kind k;
    double margin, p, eps;
    bool f1, f2;
    int nin;
    double lo[3], hi[3];
    bool fixed[3], sign[3];
  } cases[] = {
      {GAUSS, 0, 0, 1e-6, true, false, 3, {-2, -2, 0.3}, {2, 2, 2}, {0}, {0}},
      {POISSON, 0, 0, 1e-8, true, true, 2, {-1, 1.5}, {1, 4}, {0}, {0}},
      {POISSON, 0, 0, 0.5, false, true, 2, {0.2, 1.5}, {3, 4}, {0}, {0}},
      {POISSON, 0, 0, 1e-8, false, false, 2, {0.2, -1}, {3, 4}, {0}, {0}},
      {MR, 3, 0, 0, false, false, 3, {-1, -1, -1}, {1, 1, 1}, {0}, {0}},
      {HINGE, 5, 0, 0, false, false, 2, {-2, -1}, {2, 1}, {false, true}, {false, true}},
      {SOFT, 0, 0, 0, false, false, 2, {-3, -1}, {3, 1}, {false, true}, {false, true}},
      {COS,
       -1.5,
       0,
       0,
       false,
       false,
       3,
       {-1, -1, -1},
       {1, 1, 1},
       {false, false, true},
       {false, false, true}},
      {TRIP, 10, 2, 1e-6, true, false, 3, {-1, -1, -1}, {1, 1, 1}, {0}, {0}},
      {TRIP, 10, 3, 1e-6, false, false, 3, {-1, -1, -1}, {1, 1, 1}, {0}, {0}},
      {TRIP, 10, 1.5, 0, true, false, 3, {-1, -1, -1}, {1, 1, 1}, {0}, {0}},
      {MLSM, 0, 0, 0, false, false, 3, {-3, 0, 0.5}, {3, 1, 2}, {0}, {0}},
      {MLSM, 0, 0, 0, false, false, 2, {-3, -1}, {3, 2}, {0}, {0}},
      {MM, 5, 1, 0, false, false, 3, {-1, 0, 0.5}, {1, 0, 2}, {false, true, true}, {0}},
      {MM, 5, 2, 0, false, false, 2, {-1, 0}, {1, 0}, {false, true}, {0}},
  };
  int64_t s[2] = {4, 3};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (int r = 0; r < 2; r++) {
      ad_rng rng;
      ad_rng_seed(&rng, 21 + i);
      gc_case g = {{"gc",
                    cases[i].k,
                    cases[i].margin,
                    cases[i].p,
                    cases[i].eps,
                    cases[i].f1,
                    cases[i].f2,
                    cases[i].nin,
                    {{0}},
                    {NULL, NULL}},
                   r ? NN_SUM : NN_MEAN,
                   {NULL, NULL, NULL}};
      ad_tensor *in[3], *all[3];
      int n = 0;
      for (int j = 0; j < cases[i].nin; j++) {
        /* cosine's y is [4]; the rest [4,3] */
        /* cosine's y is [4], the class weights [3], multi_margin's labels
         * i32 [4]; the rest [4,3] */
        kind k = cases[i].k;
        int nd = (k == COS || k == MLSM || k == MM) && j == 2 ? 1 : 2;
        const int64_t *sh = (k == MLSM || k == MM) && j == 2 ? s + 1 : s;
        if (k == MM && j == 1) {
          all[j] = ad_zeros(ctx, AD_I32, 1, s);
          for (int q = 0; q < 4; q++) ad_tensor_set(all[j], q, (2 * q + 1) % 3);
        } else {
          all[j] = rnd(&rng, nd, sh, cases[i].lo[j], cases[i].hi[j], cases[i].sign[j]);
        }
        if (cases[i].fixed[j]) {
          g.fixed[j] = all[j];
        } else {
          ad_tensor_set_requires_grad(all[j], true);
          in[n++] = all[j];
        }
      }
      ad_check_report rep;
      cr_assert_eq(ad_gradcheck(ctx, gc_fn, &g, n, in, NULL, &rep), AD_OK, "%s",
                   ad_last_error(ctx));
      cr_assert(rep.passed, "case %zu red %d: input %d index %lld: analytic %g numeric %g", i, r,
                rep.input, (long long)rep.index, rep.analytic, rep.numeric);
      cr_assert_gt(rep.checked, 0);
      cr_assert_eq(ad_gradgradcheck(ctx, gc_fn, &g, n, in, NULL, &rep), AD_OK, "%s",
                   ad_last_error(ctx));
      cr_assert(rep.passed, "case %zu red %d (2nd order): input %d index %lld: %g numeric %g", i, r,
                rep.input, (long long)rep.index, rep.analytic, rep.numeric);
      for (int j = 0; j < cases[i].nin; j++) ad_tensor_free(all[j]);
    }
}

/* --------------------------------------------------------- special cases */

/* PyTorch: the mean of no element is NaN, the sum 0; the backward runs. */
Test(losses_pair, empty_batches_as_torch) {
  int64_t s0[2] = {0, 3}, n0 = 0;
  for (int d = 0; d < 2; d++)
    for (int k = GAUSS; k <= MM; k++)
      for (int r = 0; r < 2; r++) {
        ad_tape_reset(ctx);
        ad_dtype dt = d ? AD_F32 : AD_F64;
        ad_tensor *a = ad_zeros(ctx, dt, 2, s0), *b = ad_zeros(ctx, dt, 2, s0);
        ad_tensor *c = k == COS ? ad_zeros(ctx, dt, 1, &n0) : ad_zeros(ctx, dt, 2, s0);
        if (k == MM) ad_tensor_free(b), b = ad_zeros(ctx, AD_I32, 1, &n0);
        ad_tensor_set_requires_grad(a, true);
        /* 2 inputs for the multi-class losses: no weight */
        pair_case pc = {"empty", (kind)k,           1.0,   2.0,         1e-6, false,
                        false,   k >= MLSM ? 2 : 3, {{0}}, {NULL, NULL}};
        ad_tensor *in[3] = {a, b, c};
        ad_tensor *l = call(ctx, &pc, in, r ? NN_SUM : NN_MEAN);
        cr_assert_not_null(l, "kind %d: %s", k, ad_last_error(ctx));
        double v = ad_tensor_item(l);
        cr_assert(r ? v == 0 : isnan(v), "kind %d red %d: %g", k, r, v);
        cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
        cr_assert(!a->grad || a->grad->size == 0);
        ad_tensor_free(a), ad_tensor_free(b), ad_tensor_free(c);
      }
}

/* In anomaly mode, finite inputs make no NaN or infinity on the way: the
 * Poisson Stirling term at targets 0 and 1 (not taken), a zero variance
 * (clamped), a zero vector for cosine, a zero distance for triplet. A
 * target that requires no gradient adds no NaN-gradient term. */
Test(losses_pair, anomaly_mode_passes_finite_inputs) {
  ad_set_anomaly_mode(ctx, true);
  int64_t s[2] = {2, 2};
  const double a[4] = {0, 0, 1, 2}, b[4] = {0, 1, 0.5, 2}, y[2] = {1, -1};
  int64_t two = 2;
  for (int k = GAUSS; k <= TRIP; k++) {
    ad_tape_reset(ctx);
    ad_tensor *x = test_tensor_values(ctx, AD_F64, 2, s, a),
              *t = test_tensor_values(ctx, AD_F64, 2, s, b);
    ad_tensor *c = k == COS ? test_tensor_values(ctx, AD_F64, 1, &two, y)
                            : test_tensor_values(ctx, AD_F64, 2, s, b);
    ad_tensor_set_requires_grad(x, true);
    /* Gaussian: var b holds 0; Poisson with log_input and full */
    pair_case pc = {"anomaly", (kind)k, 0.5, 2.0,   k == TRIP ? 0.0 : 1e-6,
                    true,      true,    3,   {{0}}, {NULL, NULL}};
    ad_tensor *in[3] = {x, t, c};
    ad_tensor *l = call(ctx, &pc, in, NN_SUM);
    cr_assert_not_null(l, "kind %d: %s", k, ad_last_error(ctx));
    cr_assert(isfinite(ad_tensor_item(l)), "kind %d", k);
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "kind %d: %s", k, ad_last_error(ctx));
    cr_assert(!ad_tensor_has_nonfinite(x->grad), "kind %d", k);
    ad_tensor_free(x), ad_tensor_free(t), ad_tensor_free(c);
  }
}

/* p-norm distances of small differences with a large p: a = [0, 0], pos =
 * [0.04, 0.04], neg = [1, 2], margin 3, p 30, eps 0. sum |d|^30 is 2e-42,
 * below float32's normal range, and its (1/30 - 1)th power overflowed: the
 * gradient was infinite (torch's float32 one is too). The exact values, torch's
 * in float64: loss 1.0409349556177827, d/da [-0.51168694413574, 0.48831305310134],
 * d/dpos 0.51168694599839 each, d/dneg [-1.86264515e-09, -0.99999999909972];
 * pairwise_distance(a, pos) 0.040934955679871 with d/da -0.51168694599839
 * each. */
Test(losses_pair, p_norm_of_small_differences_keeps_its_gradient) {
  int64_t s[2] = {1, 2};
  static const double av[2] = {0, 0}, pv[2] = {0.04, 0.04}, nv[2] = {1, 2};
  static const double want[3][2] = {{-0.5116869441357406, 0.48831305310133666},
                                    {0.5116869459983857, 0.5116869459983857},
                                    {-1.8626451475540593e-09, -0.9999999990997224}};
  static const char *const names[3] = {"d/da", "d/dpos", "d/dneg"};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    double tol = d ? 1e-5 : 1e-12;
    ad_tensor *a = test_tensor_values(ctx, dt, 2, s, av),
              *po = test_tensor_values(ctx, dt, 2, s, pv);
    ad_tensor *ne = test_tensor_values(ctx, dt, 2, s, nv), *in[3] = {a, po, ne}, *g[3];
    for (int i = 0; i < 3; i++) ad_tensor_set_requires_grad(in[i], true);
    ad_tensor *l = nn_triplet_margin_loss(ctx, a, po, ne, 3.0, 30.0, 0.0, false, NN_SUM);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    test_expect_near(ad_tensor_item(l), 1.0409349556177827, tol, 0, "loss", d);
    cr_assert_eq(ad_grad(ctx, l, NULL, 3, in, g, false), AD_OK, "%s", ad_last_error(ctx));
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 2; j++)
        test_expect_near(ad_tensor_get(g[i], j), want[i][j], tol, tol, names[i], j);
    ad_tensor *pd = nn_pairwise_distance(ctx, a, po, 30.0, 0.0, false);
    cr_assert_not_null(pd, "%s", ad_last_error(ctx));
    test_expect_near(ad_tensor_get(pd, 0), 0.040934955679871, tol, 0, "distance", d);
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, pd), NULL, 1, &a, g, false), AD_OK);
    for (int j = 0; j < 2; j++)
      test_expect_near(ad_tensor_get(g[0], j), -0.5116869459983857, tol, tol, "distance d/da", j);
    ad_tape_reset(ctx);
    for (int i = 0; i < 3; i++) ad_tensor_free(in[i]);
  }
}

/* Torch's NaN target gradient of Poisson's full term at t <= 0 comes only
 * with a target that requires a gradient; the input's gradient and the
 * value are the same either way. */
Test(losses_pair, poisson_constant_target_takes_the_plain_path) {
  int64_t n = 4;
  const double xv[4] = {0.5, -1, 0.25, 2}, tv[4] = {0, -0.5, 1, 3};
  double val[2], gx[2][4];
  for (int rg = 0; rg < 2; rg++) {
    ad_tape_reset(ctx);
    ad_tensor *x = test_tensor_values(ctx, AD_F64, 1, &n, xv),
              *t = test_tensor_values(ctx, AD_F64, 1, &n, tv);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor_set_requires_grad(t, rg);
    ad_tensor *l = nn_poisson_nll_loss(ctx, x, t, true, true, 1e-8, NN_SUM);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    val[rg] = ad_tensor_item(l);
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK);
    for (int i = 0; i < 4; i++) gx[rg][i] = ad_tensor_get(x->grad, i);
    if (rg) {
      cr_assert(isnan(ad_tensor_get(t->grad, 0)) && isnan(ad_tensor_get(t->grad, 1)));
      cr_assert_eq(ad_tensor_get(t->grad, 2), -0.25);
    }
    ad_tensor_free(x), ad_tensor_free(t);
  }
  cr_assert_eq(val[0], val[1]);
  for (int i = 0; i < 4; i++) cr_assert_eq(gx[0][i], gx[1][i], "%d", i);
}

/* A class weight that is inf or NaN weighs only the terms that count: a
 * sample whose margins all hold adds 0, as torch 1.13's kernel skips its
 * terms (before, 0 * inf made the whole loss NaN). torch:
 * F.multi_margin_loss(x, [0, 1], weight=[w0, 1, 1], reduction='sum') is
 * 0.5666666666666668 (x.grad row 0 zeros, row 1 [1/3, -2/3, 1/3]) for w0 inf
 * and NaN alike. */
Test(losses_pair, multi_margin_inactive_terms_ignore_an_infinite_weight) {
  int64_t s[2] = {2, 3}, c = 3, n = 2;
  const double xv[6] = {2, 0, 0.5, 0, 0.2, 0.1}, gw[6] = {0, 0, 0, 1. / 3, -2. / 3, 1. / 3};
  const int32_t lv[2] = {0, 1};
  for (int k = 0; k < 2; k++) {
    ad_tape_reset(ctx);
    const double wv[3] = {k ? NAN : INFINITY, 1, 1};
    ad_tensor *x = test_tensor_values(ctx, AD_F64, 2, s, xv),
              *w = test_tensor_values(ctx, AD_F64, 1, &c, wv);
    ad_tensor *lab = ad_from_data(ctx, AD_I32, 1, &n, lv);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *l = nn_multi_margin_loss(ctx, x, lab, 1, 1.0, w, NN_SUM);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    test_expect_near(ad_tensor_item(l), 0.5666666666666668, 1e-14, 0, "loss", k);
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
    for (int i = 0; i < 6; i++)
      test_expect_near(ad_tensor_get(x->grad, i), gw[i], 1e-14, 0, "grad", i);
    ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(lab);
  }
}

/* A second tensor of the first's size but another shape is viewed with
 * its shape (margin ranking's x2 and y, hinge's and soft margin's y, the
 * Gaussian target), and its gradient keeps its own shape. */
/* Infinite inputs: the terms -(t log sigmoid(x) + (1 - t) log sigmoid(-x))
 * give torch's inf and NaN (0 times an infinite log is NaN), though they
 * are computed as binary cross-entropy with logits; a finite row stays
 * close to the double form and its gradient finite. */
Test(losses_pair, multilabel_soft_margin_infinite_inputs_as_torch) {
  static const double x[6] = {INFINITY, INFINITY, -INFINITY, -INFINITY, 3, -2};
  static const double t[6] = {1, 0.5, 0, 1, 0.25, 1};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    int64_t s2[2] = {6, 1};
    ad_tensor *xt = ad_from_data(ctx, AD_F64, 2, s2, x), *tt = ad_from_data(ctx, AD_F64, 2, s2, t);
    cr_assert(xt && tt);
    if (d) {
      ad_tensor *a = ad_cast(ctx, xt, dt), *b = ad_cast(ctx, tt, dt);
      ad_tensor_free(xt), ad_tensor_free(tt);
      xt = ad_tensor_clone(ctx, a), tt = ad_tensor_clone(ctx, b);
      ad_tape_reset(ctx);
    }
    ad_tensor_set_requires_grad(xt, true);
    ad_tensor *l = nn_multilabel_soft_margin_loss(ctx, xt, tt, NULL, NN_NONE);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    for (int i = 0; i < 6; i++) {
      /* log sigmoid(v) = -(max(-v, 0) + log1p(e^-|v|)), torch's form */
      double lp = -(fmax(-x[i], 0) + log1p(exp(-fabs(x[i])))),
             ln = -(fmax(x[i], 0) + log1p(exp(-fabs(x[i]))));
      double want = -(t[i] * lp + (1 - t[i]) * ln), got = ad_tensor_get(l, i);
      if (isnan(want))
        cr_assert(isnan(got), "%s row %d: %g, want NaN", ad_dtype_name(dt), i, got);
      else if (isinf(want))
        cr_assert_eq(got, want, "%s row %d: %g, want %g", ad_dtype_name(dt), i, got, want);
      else
        cr_assert_float_eq(got, want, d ? 1e-6 : 1e-15, "%s row %d: %.17g, want %.17g",
                           ad_dtype_name(dt), i, got, want);
    }
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_narrow(ctx, l, 0, 4, 2)), NULL), AD_OK, "%s",
                 ad_last_error(ctx));
    for (int i = 4; i < 6; i++) { /* d/dx = sigmoid(x) - t */
      double want = 1 / (1 + exp(-x[i])) - t[i];
      cr_assert_float_eq(ad_tensor_get(xt->grad, i), want, d ? 1e-6 : 1e-15, "%s grad %d",
                         ad_dtype_name(dt), i);
    }
    ad_tape_reset(ctx);
    ad_tensor_free(xt), ad_tensor_free(tt);
  }
}

Test(losses_pair, tensors_of_the_same_size_are_reshaped) {
  int64_t s2[2] = {4, 1}, s1[1] = {4};
  const double v[4] = {0.5, -1, 2, 0.25};
  ad_tensor *x = test_tensor_values(ctx, AD_F64, 2, s2, v),
            *t = test_tensor_values(ctx, AD_F64, 1, s1, v);
  ad_tensor *var = ad_full(ctx, AD_F64, 2, s2, 0.5);
  ad_tensor_set_requires_grad(t, true);
  ad_tensor *l = nn_gaussian_nll_loss(ctx, x, t, var, false, 1e-6, NN_SUM);
  l = ad_add(ctx, l, nn_margin_ranking_loss(ctx, x, t, t, 1.0, NN_SUM));
  l = ad_add(ctx, l, nn_soft_margin_loss(ctx, x, t, NN_SUM));
  l = ad_add(ctx, l, nn_hinge_embedding_loss(ctx, x, t, 1.0, NN_MEAN));
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(t->grad->ndim, 1);
  cr_assert_eq(t->grad->shape[0], 4);
  ad_tensor_free(x), ad_tensor_free(t), ad_tensor_free(var);
}

/* ----------------------------------------------------------------- errors */

Test(losses_pair, errors_name_the_loss_and_the_shapes) {
  ad_ctx *other = ad_ctx_new();
  int64_t s34[2] = {3, 4}, s33[2] = {3, 3}, s3[1] = {3}, s4[1] = {4}, s31[2] = {3, 1};
  ad_tensor *p = ad_full(ctx, AD_F64, 2, s34, 0.5), *q = ad_zeros(ctx, AD_F64, 2, s33);
  ad_tensor *pf = ad_zeros(ctx, AD_F32, 2, s34), *pi = ad_zeros(ctx, AD_I32, 2, s34);
  ad_tensor *gone = ad_zeros(ctx, AD_F64, 2, s34), *far = ad_zeros(other, AD_F64, 2, s34);
  ad_tensor *y3 = ad_ones(ctx, AD_F64, 1, s3), *v3 = ad_ones(ctx, AD_F64, 1, s3);
  ad_tensor *v31 = ad_ones(ctx, AD_F64, 2, s31), *v4 = ad_ones(ctx, AD_F64, 1, s4);
  ad_tensor_free(gone);
  const char *names[7] = {"gaussian_nll_loss",    "poisson_nll_loss", "margin_ranking_loss",
                          "hinge_embedding_loss", "soft_margin_loss", "cosine_embedding_loss",
                          "triplet_margin_loss"};
  const char *first[7] = {"input", "input", "x1", "input", "input", "x1", "anchor"};
  const char *second[7] = {"target", "target", "x2", "target", "target", "x2", "positive"};
  char msg[160];
  for (int k = GAUSS; k <= TRIP; k++) {
    pair_case pc = {"err", (kind)k, 0.5, 2.0, 1e-6, false, false, 3, {{0}}, {NULL, NULL}};
    ad_tensor *third = k == COS ? y3 : p;
    /* the second tensor of another size, dtype; an i32 first; NULL; freed;
     * another context's */
    snprintf(msg, sizeof msg, "%s: %s [3,4] and %s [3,3] differ in size", names[k], first[k],
             second[k]);
    cr_assert_null(call(ctx, &pc, (ad_tensor *[]){p, q, third}, NN_MEAN));
    test_expect_error(ctx, AD_ERR_SHAPE, msg, NULL);
    snprintf(msg, sizeof msg, "%s: %s [3,4] is f32, the %s [3,4] is f64", names[k], second[k],
             first[k]);
    cr_assert_null(call(ctx, &pc, (ad_tensor *[]){p, pf, third}, NN_MEAN));
    test_expect_error(ctx, AD_ERR_DTYPE, msg, NULL);
    snprintf(msg, sizeof msg, "%s: %s [3,4] is i32; a float dtype is needed", names[k], first[k]);
    cr_assert_null(call(ctx, &pc, (ad_tensor *[]){pi, pi, pi}, NN_MEAN));
    test_expect_error(ctx, AD_ERR_DTYPE, msg, NULL);
    snprintf(msg, sizeof msg, "%s: %s is NULL", names[k], first[k]);
    cr_assert_null(call(ctx, &pc, (ad_tensor *[]){NULL, p, third}, NN_MEAN));
    test_expect_error(ctx, AD_ERR_NULL, msg, NULL);
    snprintf(msg, sizeof msg, "%s: %s is NULL", names[k], second[k]);
    cr_assert_null(call(ctx, &pc, (ad_tensor *[]){p, NULL, third}, NN_MEAN));
    test_expect_error(ctx, AD_ERR_NULL, msg, NULL);
    snprintf(msg, sizeof msg, "%s: %s was freed", names[k], second[k]);
    cr_assert_null(call(ctx, &pc, (ad_tensor *[]){p, gone, third}, NN_MEAN));
    test_expect_error(ctx, AD_ERR_STATE, msg, NULL);
    snprintf(msg, sizeof msg, "%s: %s belongs to another context", names[k], first[k]);
    cr_assert_null(call(ctx, &pc, (ad_tensor *[]){far, p, third}, NN_MEAN));
    test_expect_error(ctx, AD_ERR_ARG, msg, NULL);
    /* a NULL context: NULL, no crash */
    cr_assert_null(call(NULL, &pc, (ad_tensor *[]){p, p, third}, NN_MEAN));
    /* reductions */
    const nn_reduction bad[3] = {NN_BATCHMEAN, (nn_reduction)9, (nn_reduction)-1};
    for (int b = 0; b < 3; b++) {
      cr_assert_null(call(ctx, &pc, (ad_tensor *[]){p, p, third}, bad[b]));
      test_expect_error(ctx, AD_ERR_ARG, names[k], b ? "unknown reduction" : "NN_BATCHMEAN", NULL);
    }
    cr_assert_not_null(call(ctx, &pc, (ad_tensor *[]){p, p, third}, NN_SUM), "%s: %s", names[k],
                       ad_last_error(ctx));
    /* a NaN margin (the losses that take one) */
    if (k >= MR && k != SOFT) {
      pc.margin = NAN;
      snprintf(msg, sizeof msg, "%s: margin is NaN", names[k]);
      cr_assert_null(call(ctx, &pc, (ad_tensor *[]){p, p, third}, NN_MEAN));
      test_expect_error(ctx, AD_ERR_ARG, msg, NULL);
      pc.margin = 0.5;
    }
    /* eps negative, infinite or NaN (the losses that take one) */
    if (k == GAUSS || k == POISSON || k == TRIP) {
      const double bad_eps[3] = {-1e-6, INFINITY, NAN};
      for (int e = 0; e < 3; e++) {
        pc.eps = bad_eps[e];
        cr_assert_null(call(ctx, &pc, (ad_tensor *[]){p, p, third}, NN_MEAN));
        test_expect_error(ctx, AD_ERR_ARG, names[k], "eps", "must be finite and >= 0", NULL);
      }
      pc.eps = 1e-6;
    }
    /* the third tensor (margin ranking's y, Gaussian's var, triplet's
     * negative): NULL, another size */
    if (k == GAUSS || k == MR || k == TRIP) {
      const char *tn = k == GAUSS ? "var" : k == MR ? "target" : "negative";
      snprintf(msg, sizeof msg, "%s: %s is NULL", names[k], tn);
      cr_assert_null(call(ctx, &pc, (ad_tensor *[]){p, p, NULL}, NN_MEAN));
      test_expect_error(ctx, AD_ERR_NULL, msg, NULL);
      cr_assert_null(call(ctx, &pc, (ad_tensor *[]){p, p, q}, NN_MEAN));
      test_expect_error(ctx, AD_ERR_SHAPE, names[k], tn, "[3,3]", NULL);
      cr_assert_null(call(ctx, &pc, (ad_tensor *[]){p, p, pf}, NN_MEAN));
      test_expect_error(ctx, AD_ERR_DTYPE, names[k], tn, "f32", NULL);
    }
    /* a keep-first-error chain: a NULL from an earlier failure */
    ad_set_error(ctx, AD_ERR_SHAPE, "matmul: first");
    cr_assert_null(call(ctx, &pc, (ad_tensor *[]){NULL, p, third}, NN_MEAN));
    cr_assert_str_eq(ad_last_error(ctx), "matmul: first");
    ad_clear_error(ctx);
  }
  /* Gaussian: var shapes torch takes ([3], [3,1]) and not; a negative var */
  cr_assert_not_null(nn_gaussian_nll_loss(ctx, p, p, v3, false, 1e-6, NN_MEAN));
  cr_assert_not_null(nn_gaussian_nll_loss(ctx, p, p, v31, false, 1e-6, NN_MEAN));
  cr_assert_null(nn_gaussian_nll_loss(ctx, p, p, v4, false, 1e-6, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "gaussian_nll_loss: var [4] is neither input's shape [3,4] nor that shape "
                    "without its last dim or with a last dim 1",
                    NULL);
  ad_tensor *neg = ad_full(ctx, AD_F64, 2, s34, 0.5);
  ad_tensor_set(neg, 5, -0.25);
  cr_assert_null(nn_gaussian_nll_loss(ctx, p, p, neg, false, 1e-6, NN_MEAN));
  test_expect_error(ctx, AD_ERR_ARG,
                    "gaussian_nll_loss: var -0.25 at element 5 of [3,4] is negative", NULL);
  ad_tensor_set(neg, 5, NAN); /* torch.any(var < 0) lets NaN through */
  cr_assert_not_null(nn_gaussian_nll_loss(ctx, p, p, neg, false, 1e-6, NN_MEAN));
  /* cosine: inputs of 3 dims, x2 of x1's size but another shape, y that
   * does not fit */
  int64_t s322[3] = {3, 2, 2}, s43[2] = {4, 3}, s0[1] = {1};
  ad_tensor *p3 = ad_ones(ctx, AD_F64, 3, s322), *p43 = ad_ones(ctx, AD_F64, 2, s43);
  ad_tensor *y1 = ad_ones(ctx, AD_F64, 1, s0), *y0 = ad_scalar(ctx, AD_F64, 1.0);
  cr_assert_null(nn_cosine_embedding_loss(ctx, p3, p3, y3, 0, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE, "cosine_embedding_loss: x1 [3,2,2]: need [N,D]", NULL);
  cr_assert_null(nn_cosine_embedding_loss(ctx, p, p43, y3, 0, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "cosine_embedding_loss: x1 [3,4] and x2 [4,3] differ in shape", NULL);
  cr_assert_null(nn_cosine_embedding_loss(ctx, p, p, y1, 0, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "cosine_embedding_loss: target [1] does not fit x1 [3,4]: need [N] for [N,D]",
                    NULL);
  cr_assert_null(nn_cosine_embedding_loss(ctx, v4, v4, y1, 0, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE, "need a 0-d target for [D]", NULL);
  cr_assert_not_null(nn_cosine_embedding_loss(ctx, v4, v4, y0, 0, NN_MEAN));
  cr_assert_null(nn_cosine_embedding_loss(ctx, p, p, NULL, 0, NN_MEAN));
  test_expect_error(ctx, AD_ERR_NULL, "cosine_embedding_loss: target is NULL", NULL);
  cr_assert_null(nn_cosine_embedding_loss(ctx, p, p, ad_ones(ctx, AD_F32, 1, s3), 0, NN_MEAN));
  test_expect_error(ctx, AD_ERR_DTYPE, "cosine_embedding_loss: target [3] is f32", NULL);
  /* triplet: p not positive and finite, shapes that differ, 0-d inputs */
  const double bad_p[4] = {0, -1, INFINITY, NAN};
  for (int i = 0; i < 4; i++) {
    cr_assert_null(nn_triplet_margin_loss(ctx, p, p, p, 1, bad_p[i], 1e-6, false, NN_MEAN));
    test_expect_error(ctx, AD_ERR_ARG, "triplet_margin_loss: p", "must be positive and finite",
                      NULL);
  }
  cr_assert_null(nn_triplet_margin_loss(ctx, p, p, p43, 1, 2, 1e-6, false, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE, "triplet_margin_loss: anchor [3,4] and negative [4,3]",
                    NULL);
  cr_assert_null(nn_triplet_margin_loss(ctx, y0, y0, y0, 1, 2, 1e-6, false, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE, "need one shape of at least 1 dim", NULL);
  ad_tensor_free(p), ad_tensor_free(q), ad_tensor_free(pf), ad_tensor_free(pi);
  ad_tensor_free(y3), ad_tensor_free(v3), ad_tensor_free(v31), ad_tensor_free(v4);
  ad_tensor_free(neg), ad_tensor_free(p3), ad_tensor_free(p43), ad_tensor_free(y1);
  ad_tensor_free(y0);
  ad_ctx_free(other);
}

/* ----------------------------------------------------------------- nn_fit */

/* docs/custom-models.md's wrapper: pred [N,2], a mean and a log-variance. */
static ad_tensor *gaussian_nll(ad_ctx *c, ad_tensor *pred, ad_tensor *target, nn_reduction red) {
  ad_tensor *mean = ad_narrow(c, pred, 1, 0, 1);
  ad_tensor *var = ad_exp(c, ad_narrow(c, pred, 1, 1, 1));
  return nn_gaussian_nll_loss(c, mean, target, var, false, 1e-6, red);
}

static ad_tensor *hinge(ad_ctx *c, ad_tensor *pred, ad_tensor *target, nn_reduction red) {
  /* a classifier's margin: max(0, 0 - (y x - 1)), nothing from y x >= 1 on */
  ad_tensor *yx = ad_mul(c, pred, target);
  ad_tensor *minus1 = ad_full_like(c, yx, -1.0);
  return nn_hinge_embedding_loss(c, ad_sub_scalar(c, yx, 1.0), minus1, 0.0, red);
}

/* A few epochs of a Dense model: the loss goes down (the Gaussian NLL
 * learns a mean and a variance; the margins a sign). */
Test(losses_pair, losses_train_with_nn_fit) {
  nn_loss_fn fns[3] = {gaussian_nll, nn_soft_margin_loss, hinge}; /* y +-1 [N,1] */
  for (int k = 0; k < 3; k++) {
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    int64_t xs[2] = {32, 3}, ys[2] = {32, 1};
    ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 2, xs, -1, 1);
    ad_tensor *y = ad_zeros(ctx, AD_F64, 2, ys);
    for (int i = 0; i < 32; i++) {
      double v = ad_tensor_get(x, 3 * i) - 0.5 * ad_tensor_get(x, 3 * i + 1);
      ad_tensor_set(y, i, k == 0 ? 2 * v : (v > 0 ? 1 : -1));
    }
    nn_model *m = nn_sequential_new(ctx);
    nn_model_add(m, nn_dense_new(ctx, 3, k == 0 ? 2 : 1, &rng, &(nn_dense_opts){.dtype = AD_F64}));
    nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.05);
    nn_fit_opts fo = {.epochs = 20, .batch_size = 8, .seed = 1, .verbose = -1};
    nn_history *h = NULL;
    cr_assert_eq(nn_fit(m, opt, fns[k], x, y, &fo, &h), AD_OK, "loss %d: %s", k,
                 ad_last_error(ctx));
    const double *lv = nn_history_values(h, "loss");
    cr_assert_not_null(lv);
    cr_assert_lt(lv[19], lv[0] - 0.5 * fabs(lv[0]), "loss %d: %g -> %g", k, lv[0], lv[19]);
    nn_history_free(h);
    nn_optimizer_free(opt);
    nn_model_free(m);
    ad_tensor_free(x), ad_tensor_free(y);
  }
}

/* The multilabel loss records log sigmoid as one op each way (ad_logsigmoid)
 * and its sign in the division by -C: 9 ops for 'none' where -softplus(-x),
 * -softplus(x) and a negation made 12 (each a pass over [N, C] forward and
 * back), with torch's value and gradient. */
Test(losses_pair, multilabel_records_few_ops) {
  int64_t s23[2] = {2, 3};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 2, s23), *t = ad_zeros(ctx, AD_F64, 2, s23);
  const double xv[6] = {-2, 0.5, 30, -40, 1, 0}, tv[6] = {1, 0, 0.25, 1, 0.5, 0};
  for (int i = 0; i < 6; i++) ad_tensor_set(x, i, xv[i]), ad_tensor_set(t, i, tv[i]);
  ad_tensor_set_requires_grad(x, true);
  size_t before = ad_tape_size(ctx);
  ad_tensor *l = nn_multilabel_soft_margin_loss(ctx, x, t, NULL, NN_NONE);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_leq(ad_tape_size(ctx) - before, 9, "%zu ops", ad_tape_size(ctx) - before);
  for (int n = 0; n < 2; n++) { /* -sum_c (t log s(x) + (1 - t) log s(-x)) / 3, s(x) = 1/(1+e^-x) */
    double want = 0;
    for (int c = 0; c < 3; c++) {
      double v = xv[3 * n + c], w = tv[3 * n + c];
      want -= (w * -log1p(exp(-v)) + (1 - w) * -log1p(exp(v))) / 3;
    }
    cr_assert_float_eq(ad_tensor_get(l, n), want, 1e-12, "sample %d: %.17g, want %.17g", n,
                       ad_tensor_get(l, n), want);
  }
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, l), NULL), AD_OK, "%s", ad_last_error(ctx));
  for (int i = 0; i < 6; i++) /* (sigmoid(x) - t) / C */
    cr_assert_float_eq(ad_tensor_get(x->grad, i), (1 / (1 + exp(-xv[i])) - tv[i]) / 3, 1e-15,
                       "dx[%d] %.17g", i, ad_tensor_get(x->grad, i));
  ad_tape_reset(ctx);
  ad_tensor_free(x), ad_tensor_free(t);
}

/* A multilabel input with no class, [3, 0]: each sample's loss is 0 / 0,
 * NaN, as PyTorch 1.13's F.multilabel_soft_margin_loss gives ([nan, nan,
 * nan] with 'none', nan with 'mean' and 'sum'), and the backward runs
 * (an empty gradient). It was refused as "div_scalar: division by zero",
 * naming no loss. */
Test(losses_pair, multilabel_with_no_class_is_nan) {
  int64_t s30[2] = {3, 0};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    ad_tensor *x = ad_zeros(ctx, dt, 2, s30), *t = ad_zeros(ctx, dt, 2, s30);
    ad_tensor_set_requires_grad(x, true);
    const nn_reduction reds[3] = {NN_NONE, NN_MEAN, NN_SUM};
    for (int r = 0; r < 3; r++) {
      ad_tensor *l = nn_multilabel_soft_margin_loss(ctx, x, t, NULL, reds[r]);
      cr_assert_not_null(l, "%s", ad_last_error(ctx));
      cr_assert_eq(l->size, r ? 1 : 3);
      for (int64_t i = 0; i < l->size; i++)
        cr_assert(isnan(ad_tensor_get(l, i)), "%s red %d: [%lld] %g", ad_dtype_name(dt), r,
                  (long long)i, ad_tensor_get(l, i));
      cr_assert_eq(ad_backward(ctx, r ? l : ad_sum(ctx, l), NULL), AD_OK, "%s", ad_last_error(ctx));
      cr_assert_eq(x->grad->size, 0);
      ad_tape_reset(ctx);
    }
    ad_tensor_free(x), ad_tensor_free(t);
  }
}

/* Settings a float32 input cannot hold, which PyTorch 1.13 refuses for
 * an f32 tensor ("value cannot be converted to type float without
 * overflow"): F.hinge_embedding_loss's and F.multi_margin_loss's margin,
 * F.gaussian_nll_loss's eps, F.cosine_similarity's eps and F.pad's
 * constant value, each 1e39. They were taken and gave inf, 0 or a border
 * of inf. A float64 input takes them. */
Test(losses_pair, f32_settings_beyond_float_range) {
  int64_t s3[1] = {3}, s13[2] = {1, 3}, s131[3] = {1, 3, 1}, n1 = 1;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    ad_tensor *x = ad_full(ctx, dt, 1, s3, 0.5), *one = ad_full(ctx, dt, 1, s3, 1);
    ad_tensor *x2 = ad_full(ctx, dt, 2, s13, 0.5), *x3 = ad_full(ctx, dt, 3, s131, 0.5);
    ad_tensor *lab = ad_zeros(ctx, AD_I32, 1, &n1);
    ad_tensor *r[5];
    r[0] = nn_hinge_embedding_loss(ctx, x, one, 1e39, NN_MEAN);
    if (!d)
      test_expect_error(ctx, AD_ERR_ARG,
                        "hinge_embedding_loss: margin 1e+39 is outside float32's range (x is f32)",
                        NULL);
    r[1] = nn_multi_margin_loss(ctx, x2, lab, 1, -1e39, NULL, NN_MEAN);
    if (!d)
      test_expect_error(ctx, AD_ERR_ARG,
                        "multi_margin_loss: margin -1e+39 is outside float32's range", NULL);
    r[2] = nn_gaussian_nll_loss(ctx, x, one, one, false, 1e39, NN_MEAN);
    if (!d)
      test_expect_error(ctx, AD_ERR_ARG, "gaussian_nll_loss: eps 1e+39 is outside float32's range",
                        NULL);
    r[3] = nn_cosine_similarity(ctx, x, one, 0, 1e39);
    if (!d)
      test_expect_error(ctx, AD_ERR_ARG, "cosine_similarity: eps 1e+39 is outside float32's range",
                        NULL);
    int64_t pad[2] = {1, 0};
    nn_layer *l = nn_constant_pad1d_new(ctx, pad, 1e39);
    r[4] = nn_layer_forward(l, x3, false);
    if (!d)
      test_expect_error(ctx, AD_ERR_ARG, "constant_pad1d: value 1e+39 is outside float32's range",
                        NULL);
    for (int i = 0; i < 5; i++)
      cr_assert(d ? r[i] != NULL : r[i] == NULL, "%s call %d: %s", ad_dtype_name(dt), i,
                ad_last_error(ctx));
    if (d) cr_assert_eq(ad_tensor_get(r[4], 0), 1e39);
    ad_tape_reset(ctx);
    nn_layer_free(l);
    ad_tensor_free(x), ad_tensor_free(one), ad_tensor_free(x2), ad_tensor_free(x3),
        ad_tensor_free(lab);
  }
}

/* The multi-class losses' own errors: labels, weights, p, shapes. */
Test(losses_pair, multi_class_errors) {
  int64_t s34[2] = {3, 4}, s3[1] = {3}, s4[1] = {4}, s2[1] = {2}, s33[2] = {3, 3};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 2, s34), *lab = ad_zeros(ctx, AD_I32, 1, s3);
  ad_tensor *labf = ad_zeros(ctx, AD_F64, 1, s3), *lab2 = ad_zeros(ctx, AD_I32, 1, s2);
  ad_tensor *w4 = ad_ones(ctx, AD_F64, 1, s4), *w3 = ad_ones(ctx, AD_F64, 1, s3);
  ad_tensor *w4f = ad_ones(ctx, AD_F32, 1, s4), *wg = ad_ones(ctx, AD_F64, 1, s4);
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 2, s34), *x33 = ad_zeros(ctx, AD_F64, 2, s33);
  ad_tensor_set_requires_grad(wg, true);
  cr_assert_not_null(nn_multi_margin_loss(ctx, x, lab, 1, 1.0, w4, NN_MEAN), "%s",
                     ad_last_error(ctx));
  cr_assert_null(nn_multi_margin_loss(ctx, x, NULL, 1, 1.0, NULL, NN_MEAN));
  test_expect_error(ctx, AD_ERR_NULL, "multi_margin_loss: labels is NULL", NULL);
  cr_assert_null(nn_multi_margin_loss(ctx, NULL, lab, 1, 1.0, NULL, NN_MEAN));
  test_expect_error(ctx, AD_ERR_NULL, "multi_margin_loss: input is NULL", NULL);
  cr_assert_null(nn_multi_margin_loss(ctx, x, labf, 1, 1.0, NULL, NN_MEAN));
  test_expect_error(ctx, AD_ERR_DTYPE, "multi_margin_loss: labels [3] are f64", NULL);
  cr_assert_null(nn_multi_margin_loss(ctx, xi, lab, 1, 1.0, NULL, NN_MEAN));
  test_expect_error(ctx, AD_ERR_DTYPE, "multi_margin_loss: input [3,4] is i32", NULL);
  cr_assert_null(nn_multi_margin_loss(ctx, x, lab2, 1, 1.0, NULL, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "multi_margin_loss: input [3,4] and labels [2]: need [N,C] and [N]", NULL);
  ad_tensor_set(lab, 1, 4);
  cr_assert_null(nn_multi_margin_loss(ctx, x, lab, 1, 1.0, NULL, NN_MEAN));
  test_expect_error(ctx, AD_ERR_ARG, "multi_margin_loss: label 4 of sample 1 is outside 0..3",
                    NULL);
  ad_tensor_set(lab, 1, -1);
  cr_assert_null(nn_multi_margin_loss(ctx, x, lab, 1, 1.0, NULL, NN_MEAN));
  test_expect_error(ctx, AD_ERR_ARG, "label -1 of sample 1", NULL);
  ad_tensor_set(lab, 1, 0);
  const int bad_p[3] = {0, 3, -1};
  for (int i = 0; i < 3; i++) {
    cr_assert_null(nn_multi_margin_loss(ctx, x, lab, bad_p[i], 1.0, NULL, NN_MEAN));
    test_expect_error(ctx, AD_ERR_ARG, "multi_margin_loss: p", "only p = 1 and p = 2", NULL);
  }
  cr_assert_null(nn_multi_margin_loss(ctx, x, lab, 2, NAN, NULL, NN_MEAN));
  test_expect_error(ctx, AD_ERR_ARG, "multi_margin_loss: margin is NaN", NULL);
  cr_assert_null(nn_multi_margin_loss(ctx, x, lab, 2, 1.0, w3, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE, "multi_margin_loss: weight [3] f64: need [4] f64", NULL);
  cr_assert_null(nn_multi_margin_loss(ctx, x, lab, 2, 1.0, w4f, NN_MEAN));
  test_expect_error(ctx, AD_ERR_DTYPE, "multi_margin_loss: weight [4] f32: need [4] f64", NULL);
  cr_assert_null(nn_multi_margin_loss(ctx, x, lab, 2, 1.0, wg, NN_MEAN));
  test_expect_error(ctx, AD_ERR_ARG, "multi_margin_loss: weight requires a gradient", NULL);
  cr_assert_null(nn_multi_margin_loss(ctx, x, lab, 2, 1.0, NULL, NN_BATCHMEAN));
  test_expect_error(ctx, AD_ERR_ARG, "multi_margin_loss: reduction NN_BATCHMEAN", NULL);
  cr_assert_null(nn_multi_margin_loss(ctx, w4, lab, 2, 1.0, NULL, NN_SUM));
  test_expect_error(ctx, AD_ERR_SHAPE, "need [N,C] and [N], or [C] and one", NULL);
  /* multilabel: 0-d input, weight that does not broadcast, dtypes, sizes */
  cr_assert_not_null(nn_multilabel_soft_margin_loss(ctx, x, x, wg, NN_MEAN), "%s",
                     ad_last_error(ctx));
  cr_assert_null(nn_multilabel_soft_margin_loss(ctx, x, x, w3, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "multilabel_soft_margin_loss: weight [3] does not broadcast to input [3,4]",
                    NULL);
  cr_assert_null(nn_multilabel_soft_margin_loss(ctx, x, x, w4f, NN_MEAN));
  test_expect_error(ctx, AD_ERR_DTYPE, "multilabel_soft_margin_loss: weight [4] is f32", NULL);
  cr_assert_null(nn_multilabel_soft_margin_loss(ctx, x, x33, NULL, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "multilabel_soft_margin_loss: input [3,4] and target [3,3] differ in size",
                    NULL);
  ad_tensor *z0 = ad_scalar(ctx, AD_F64, 0.5);
  cr_assert_null(nn_multilabel_soft_margin_loss(ctx, z0, z0, NULL, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE, "multilabel_soft_margin_loss: input []:", "class dim", NULL);
  cr_assert_null(nn_multilabel_soft_margin_loss(ctx, x, NULL, NULL, NN_MEAN));
  test_expect_error(ctx, AD_ERR_NULL, "multilabel_soft_margin_loss: target is NULL", NULL);
  cr_assert_null(nn_multilabel_soft_margin_loss(ctx, x, x, NULL, (nn_reduction)7));
  test_expect_error(ctx, AD_ERR_ARG, "multilabel_soft_margin_loss: unknown reduction 7", NULL);
  ad_tensor_free(x), ad_tensor_free(lab), ad_tensor_free(labf), ad_tensor_free(lab2);
  ad_tensor_free(w4), ad_tensor_free(w3), ad_tensor_free(w4f), ad_tensor_free(wg);
  ad_tensor_free(xi), ad_tensor_free(x33);
}
