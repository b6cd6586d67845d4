/* test_nn_misc2.c: nn_unfold, nn_fold and their layers against PyTorch
 * 1.13 (values and gradients, f64 and f32, batched and unbatched, padding,
 * dilation, strides wider than the kernel, overlaps, NaN and infinities),
 * gradcheck and gradgradcheck, the reprs, and bad arguments and inputs. */
#include "ad_ext.h"
#include "nn.h"
#include "test_alloc.h"
#include "test_layer_values.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_CTX_SUITE(misc2);

/* A case of tools/gen_misc2_fixtures.py: x of shape, y of yshape; y[d]
 * and dx[d] (the gradient of sum(y * g)) for f64 (d = 0) and f32. */
typedef struct fold_case {
  const char *name;
  bool fold;
  int ndim;
  int64_t shape[4];
  int yndim;
  int64_t yshape[4];
  int64_t out_hw[2];
  nn_fold_opts o;
  const double *x, *g, *y[2], *dx[2];
} fold_case;

/* A bilinear case: x1 [s1], x2 [s2] (nd dims each), weight [out, in1,
 * in2], bias [out] when has_bias; y[d] and d[d], the gradients of x1, x2,
 * weight and bias in that order, of sum(y * g). */
typedef struct bil_case {
  const char *name;
  int nd;
  int64_t s1[3], s2[3];
  int64_t out;
  bool has_bias;
  const double *x1, *x2, *w, *b, *g, *y[2], *d[2];
} bil_case;

/* A glu case: x of shape, y[d] and dx[d] of sum(y * g), g linspace(-1, 1)
 * over y's elements. */
typedef struct glu_case {
  const char *name;
  int ndim;
  int64_t shape[3];
  int dim;
  const double *x, *y[2], *dx[2];
} glu_case;

/* A cosine_similarity (cos; arg is dim) or pairwise_distance (arg is p)
 * case: y[d] and d[d], the gradients of x1 then x2, of sum(y * g), g
 * linspace(-1, 1) over y's elements. */
typedef struct pair_case {
  const char *name;
  bool cos;
  int nd1;
  int64_t s1[3];
  int nd2;
  int64_t s2[3];
  int ndy;
  int64_t sy[3];
  double arg, eps;
  bool keepdim;
  const double *x1, *x2, *y[2], *d[2];
} pair_case;

/* An activation case: kind 0 softshrink(a), 1 hardshrink(a), 2
 * threshold(a, b), 3 softmin(dim a), 4 softmax2d; y[d] and dx[d] of sum(y
 * * g), g linspace(-1, 1). */
typedef struct act_case {
  const char *name;
  int kind, ndim;
  int64_t shape[4];
  double a, b;
  const double *x, *y[2], *dx[2];
} act_case;

/* A local_response_norm case: y[d] and dx[d] of sum(y * g), g
 * linspace(-1, 1). */
typedef struct lrn_case {
  const char *name;
  int ndim;
  int64_t shape[5];
  int64_t size;
  double alpha, beta, k;
  const double *x, *y[2], *dx[2];
} lrn_case;

/* The PyTorch values:
 * `/usr/bin/python3 tools/gen_misc2_fixtures.py > tests/misc2_fixtures.h`. */
#include "misc2_fixtures.h"

#define NFOLD (int)(sizeof FOLD_CASES / sizeof FOLD_CASES[0])
#define NBIL  (int)(sizeof BIL_CASES / sizeof BIL_CASES[0])
#define NGLU  (int)(sizeof GLU_CASES / sizeof GLU_CASES[0])
#define NPAIR (int)(sizeof PAIR_CASES / sizeof PAIR_CASES[0])
#define NACT  (int)(sizeof ACT_CASES / sizeof ACT_CASES[0])
#define NLRN  (int)(sizeof LRN_CASES / sizeof LRN_CASES[0])

static void expect_close(double got, double want, double rtol, const char *what, int i) {
  if (isnan(want) || isinf(want))
    cr_assert(isnan(want) ? isnan(got) : got == want, "%s %d: %.17g, torch %.17g", what, i, got,
              want);
  else
    cr_assert(fabs(got - want) <= rtol * (fabs(want) + 1), "%s %d: %.17g, torch %.17g", what, i,
              got, want);
}

/* ad_gradcheck and ad_gradgradcheck of fn over in[0..n-1] (float64);
 * label names the case in a failure. Returns the elements the first
 * order checked. */
static int64_t check_both_orders(ad_check_fn fn, void *ud, int n, ad_tensor *const *in,
                                 const char *label) {
  ad_check_report rep;
  cr_assert_eq(ad_gradcheck(ctx, fn, ud, n, in, NULL, &rep), AD_OK, "%s: %s", label,
               ad_last_error(ctx));
  cr_assert(rep.passed, "%s: input %d index %lld: %g numeric %g", label, rep.input,
            (long long)rep.index, rep.analytic, rep.numeric);
  int64_t checked = rep.checked;
  cr_assert_eq(ad_gradgradcheck(ctx, fn, ud, n, in, NULL, &rep), AD_OK, "%s: %s", label,
               ad_last_error(ctx));
  cr_assert(rep.passed, "%s (2nd order): input %d index %lld: %g numeric %g", label, rep.input,
            (long long)rep.index, rep.analytic, rep.numeric);
  return checked;
}

/* y against want_y, then x's gradient of sum(y g) against want_dx, both
 * to rtol; name and d (0: f64, 1: f32) label a failure. */
static void check_y_dx(ad_tensor *x, ad_tensor *y, ad_tensor *g, const double *want_y,
                       const double *want_dx, double rtol, const char *name, int d) {
  char what[96];
  snprintf(what, sizeof what, "%s %s y", name, d ? "f32" : "f64");
  for (int64_t i = 0; i < y->size; i++)
    expect_close(ad_tensor_get(y, i), want_y[i], rtol, what, (int)i);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, g)), NULL), AD_OK, "%s",
               ad_last_error(ctx));
  snprintf(what, sizeof what, "%s %s dx", name, d ? "f32" : "f64");
  for (int64_t i = 0; i < x->size; i++)
    expect_close(ad_tensor_get(x->grad, i), want_dx[i], rtol, what, (int)i);
}

/* check_y_dx, then the tape reset and l (NULL: none), x and g freed. */
static void check_y_dx_free(nn_layer *l, ad_tensor *x, ad_tensor *y, ad_tensor *g,
                            const double *want_y, const double *want_dx, double rtol,
                            const char *name, int d) {
  check_y_dx(x, y, g, want_y, want_dx, rtol, name, d);
  ad_tape_reset(ctx);
  nn_layer_free(l);
  ad_tensor_free(x), ad_tensor_free(g);
}

/* check(&cases[i], d, layer) for each of the n cases, in float64 (d 0)
 * and float32 (d 1), through the function (layer false) and the layer. */
#define CHECK_EVERY_CASE(check, cases, n)                                                          \
  for (int i_ = 0; i_ < (n); i_++)                                                                 \
    for (int d_ = 0; d_ < 2; d_++) {                                                               \
      check(&(cases)[i_], d_, false);                                                              \
      check(&(cases)[i_], d_, true);                                                               \
    }

/* The upstream gradient the generator uses: -1 to 1 in even steps over
 * y's elements (-1 for one element). */
static ad_tensor *ramp_like(ad_dtype dt, const ad_tensor *y) {
  ad_tensor *g = ad_zeros(ctx, dt, y->ndim, y->shape);
  cr_assert_not_null(g, "%s", ad_last_error(ctx));
  for (int64_t i = 0; i < g->size; i++)
    ad_tensor_set(g, i, g->size > 1 ? -1 + 2.0 * (double)i / (double)(g->size - 1) : -1);
  return g;
}

/* Case fc in dtype d (0 f64) through the function (layer false) or the
 * layer. */
static void check_fold_case(const fold_case *fc, int d, bool layer) {
  ad_dtype dt = d ? AD_F32 : AD_F64;
  ad_tape_reset(ctx);
  ad_tensor *x = test_tensor_values(ctx, dt, fc->ndim, fc->shape, fc->x);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y;
  nn_layer *l = NULL;
  if (layer) {
    l = fc->fold ? nn_fold_new(ctx, fc->out_hw, &fc->o) : nn_unfold_new(ctx, &fc->o);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    y = nn_layer_forward(l, x, true);
  } else {
    y = fc->fold ? nn_fold(ctx, x, fc->out_hw, &fc->o) : nn_unfold(ctx, x, &fc->o);
  }
  cr_assert_not_null(y, "%s: %s", fc->name, ad_last_error(ctx));
  cr_assert_eq(y->ndim, fc->yndim, "%s", fc->name);
  for (int k = 0; k < y->ndim; k++) cr_assert_eq(y->shape[k], fc->yshape[k], "%s", fc->name);
  ad_tensor *g = test_tensor_values(ctx, dt, fc->yndim, fc->yshape, fc->g);
  /* f32: fold sums up to kh kw terms in another order than PyTorch */
  check_y_dx_free(l, x, y, g, fc->y[d], fc->dx[d], d ? 2e-6 : 1e-14, fc->name, d);
}

Test(misc2, unfold_fold_match_pytorch) { CHECK_EVERY_CASE(check_fold_case, FOLD_CASES, NFOLD); }

/* fold(unfold(x)) is x times the number of blocks that hold each element
 * (PyTorch's documented identity with the divisor fold(unfold(ones))). */
Test(misc2, fold_of_unfold_counts_the_blocks) {
  int64_t s[4] = {2, 3, 6, 7};
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 4, s, -1, 1), *ones = ad_ones(ctx, AD_F64, 4, s);
  nn_fold_opts o = {{3, 2}, {1, 2}, {1, 0}, {3, 1}};
  ad_tensor *xx = nn_fold(ctx, nn_unfold(ctx, x, &o), (int64_t[2]){6, 7}, &o);
  ad_tensor *n = nn_fold(ctx, nn_unfold(ctx, ones, &o), (int64_t[2]){6, 7}, &o);
  cr_assert(xx && n, "%s", ad_last_error(ctx));
  bool zero = false, two = false;
  for (int64_t i = 0; i < x->size; i++) {
    double c = ad_tensor_get(n, i);
    cr_assert_float_eq(ad_tensor_get(xx, i), c * ad_tensor_get(x, i), 1e-14);
    zero = zero || c == 0, two = two || c >= 2;
  }
  cr_assert(zero && two, "the geometry skips some elements and overlaps others");
  ad_tensor_free(x), ad_tensor_free(ones);
}

/* ------------------------------------------------------------- gradcheck */

typedef struct gc_fold {
  bool fold;
  int64_t out_hw[2];
  nn_fold_opts o;
} gc_fold;

static ad_tensor *gc_fold_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  const gc_fold *g = ud;
  (void)n;
  /* squared, so the second derivative is not zero */
  ad_tensor *y = g->fold ? nn_fold(c, in[0], g->out_hw, &g->o) : nn_unfold(c, in[0], &g->o);
  return ad_mul(c, y, y);
}

Test(misc2, unfold_fold_gradcheck_first_and_second_order) {
  const struct {
    gc_fold g;
    int ndim;
    int64_t shape[4];
  } cases[] = {
      {{false, {0, 0}, {{2, 3}, {1, 1}, {1, 0}, {1, 2}}}, 4, {2, 2, 4, 5}},
      {{false, {0, 0}, {{2, 2}, {2, 1}, {0, 1}, {0, 0}}}, 3, {2, 5, 4}},
      {{true, {5, 4}, {{2, 2}, {1, 1}, {1, 1}, {1, 1}}}, 3, {2, 8, 30}},
      {{true, {5, 6}, {{2, 3}, {2, 1}, {0, 1}, {2, 2}}}, 2, {6, 6}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ad_rng rng;
    ad_rng_seed(&rng, 11 + i);
    ad_tensor *x = ad_rand(ctx, &rng, AD_F64, cases[i].ndim, cases[i].shape, -1, 1);
    cr_assert_not_null(x);
    ad_tensor_set_requires_grad(x, true);
    char label[64];
    snprintf(label, sizeof label, "case %zu", i);
    cr_assert_eq(check_both_orders(gc_fold_fn, (void *)&cases[i].g, 1, &x, label), x->size);
    ad_tensor_free(x);
  }
}

/* An empty batch gives an empty output of the right shape, as PyTorch. */
Test(misc2, an_empty_batch_gives_an_empty_output) {
  nn_fold_opts o = {.kernel_size = {2, 2}};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 4, (int64_t[4]){0, 3, 4, 4});
  ad_tensor *y = nn_unfold(ctx, x, &o);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert(y->ndim == 3 && y->shape[0] == 0 && y->shape[1] == 12 && y->shape[2] == 9);
  ad_tensor *z = nn_fold(ctx, y, (int64_t[2]){4, 4}, &o);
  cr_assert_not_null(z, "%s", ad_last_error(ctx));
  cr_assert(z->ndim == 4 && z->shape[0] == 0 && z->shape[1] == 3 && z->shape[3] == 4);
  ad_tensor_free(x);
  /* bilinear too */
  ad_tensor *x1 = ad_zeros(ctx, AD_F32, 2, (int64_t[2]){0, 3}),
            *x2 = ad_zeros(ctx, AD_F32, 2, (int64_t[2]){0, 2}),
            *w = ad_ones(ctx, AD_F32, 3, (int64_t[3]){4, 3, 2});
  ad_tensor *yb = nn_bilinear(ctx, x1, x2, w, NULL);
  cr_assert_not_null(yb, "%s", ad_last_error(ctx));
  cr_assert(yb->ndim == 2 && yb->shape[0] == 0 && yb->shape[1] == 4);
  ad_tensor_free(x1), ad_tensor_free(x2), ad_tensor_free(w);
}

/* -------------------------------------------------------------- bilinear */

/* Case bc in dtype d through nn_bilinear, or through a layer whose
 * parameters are set to the case's. */
static void check_bil_case(const bil_case *bc, int d, bool layer) {
  ad_dtype dt = d ? AD_F32 : AD_F64;
  ad_tape_reset(ctx);
  int nd = bc->nd;
  int64_t in1 = bc->s1[nd - 1], in2 = bc->s2[nd - 1], ws[3] = {bc->out, in1, in2}, gs[3];
  for (int k = 0; k < nd - 1; k++) gs[k] = bc->s1[k];
  gs[nd - 1] = bc->out;
  ad_tensor *x1 = test_tensor_values(ctx, dt, nd, bc->s1, bc->x1),
            *x2 = test_tensor_values(ctx, dt, nd, bc->s2, bc->x2);
  ad_tensor *g = test_tensor_values(ctx, dt, nd, gs, bc->g), *w, *b = NULL, *y;
  nn_layer *l = NULL;
  if (layer) {
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    l = nn_bilinear_new(ctx, in1, in2, bc->out, bc->has_bias, dt, &rng);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    nn_params *p = nn_layer_params(l);
    cr_assert_eq(nn_params_count(p), bc->has_bias ? 2 : 1);
    cr_assert_str_eq(nn_params_name(p, 0), "weight");
    w = nn_params_tensor(p, 0);
    for (int64_t i = 0; i < w->size; i++) ad_tensor_set(w, i, bc->w[i]);
    if (bc->has_bias) {
      cr_assert_str_eq(nn_params_name(p, 1), "bias");
      b = nn_params_tensor(p, 1);
      for (int64_t i = 0; i < b->size; i++) ad_tensor_set(b, i, bc->b[i]);
    }
  } else {
    w = test_tensor_values(ctx, dt, 3, ws, bc->w);
    if (bc->has_bias) b = test_tensor_values(ctx, dt, 1, &bc->out, bc->b);
    ad_tensor_set_requires_grad(w, true);
    if (b) ad_tensor_set_requires_grad(b, true);
  }
  ad_tensor_set_requires_grad(x1, true), ad_tensor_set_requires_grad(x2, true);
  y = layer ? nn_bilinear_forward(l, x1, x2) : nn_bilinear(ctx, x1, x2, w, b);
  cr_assert_not_null(y, "%s: %s", bc->name, ad_last_error(ctx));
  cr_assert_eq(y->ndim, nd);
  for (int k = 0; k < nd; k++) cr_assert_eq(y->shape[k], gs[k]);
  char what[96];
  double rtol = d ? 3e-6 : 1e-13;
  snprintf(what, sizeof what, "%s %s y", bc->name, d ? "f32" : "f64");
  for (int64_t i = 0; i < y->size; i++)
    expect_close(ad_tensor_get(y, i), bc->y[d][i], rtol, what, (int)i);
  ad_tensor *loss = ad_sum(ctx, ad_mul(ctx, y, g));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  const double *want = bc->d[d];
  ad_tensor *ts[4] = {x1, x2, w, b};
  static const char *const names[4] = {"dx1", "dx2", "dweight", "dbias"};
  for (int k = 0; k < 4 && ts[k]; k++) {
    snprintf(what, sizeof what, "%s %s %s", bc->name, d ? "f32" : "f64", names[k]);
    for (int64_t i = 0; i < ts[k]->size; i++)
      expect_close(ad_tensor_get(ts[k]->grad, i), want[i], rtol, what, (int)i);
    want += ts[k]->size;
  }
  ad_tape_reset(ctx);
  if (layer)
    nn_layer_free(l);
  else
    ad_tensor_free(w), ad_tensor_free(b);
  ad_tensor_free(x1), ad_tensor_free(x2), ad_tensor_free(g);
}

Test(misc2, bilinear_matches_pytorch) { CHECK_EVERY_CASE(check_bil_case, BIL_CASES, NBIL); }

static ad_tensor *gc_bil_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)ud;
  return nn_bilinear(c, in[0], in[1], in[2], n > 3 ? in[3] : NULL);
}

Test(misc2, bilinear_gradcheck_first_and_second_order) {
  ad_rng rng;
  ad_rng_seed(&rng, 17);
  int64_t s1[3] = {2, 3, 4}, s2[3] = {2, 3, 2}, ws[3] = {3, 4, 2}, bs = 3;
  ad_tensor *in[4] = {
      ad_rand(ctx, &rng, AD_F64, 3, s1, -1, 1), ad_rand(ctx, &rng, AD_F64, 3, s2, -1, 1),
      ad_rand(ctx, &rng, AD_F64, 3, ws, -1, 1), ad_rand(ctx, &rng, AD_F64, 1, &bs, -1, 1)};
  for (int k = 0; k < 4; k++) {
    cr_assert_not_null(in[k]);
    ad_tensor_set_requires_grad(in[k], true);
  }
  for (int n = 3; n <= 4; n++) {
    char label[64];
    snprintf(label, sizeof label, "bilinear over %d inputs", n);
    check_both_orders(gc_bil_fn, NULL, n, in, label);
  }
  for (int k = 0; k < 4; k++) ad_tensor_free(in[k]);
}

/* PyTorch's init: both tensors uniform within 1 / sqrt(in1), so in a
 * large draw the extremes come close to the bound and never pass it. */
Test(misc2, bilinear_init_is_pytorch_uniform) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  nn_layer *l = nn_bilinear_new(ctx, 16, 5, 40, true, AD_F32, &rng);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  for (int k = 0; k < 2; k++) {
    ad_tensor *t = nn_params_tensor(p, k);
    cr_assert_eq(t->ndim, k ? 1 : 3);
    cr_assert_eq(t->shape[0], 40);
    if (!k) cr_assert(t->shape[1] == 16 && t->shape[2] == 5);
    double lo = 1, hi = -1;
    for (int64_t i = 0; i < t->size; i++) {
      double v = ad_tensor_get(t, i);
      lo = fmin(lo, v), hi = fmax(hi, v);
    }
    cr_assert(lo >= -0.25 && hi <= 0.25 && lo < -0.2 && hi > 0.2, "%s: [%g, %g]",
              nn_params_name(p, k), lo, hi);
  }
  nn_layer_free(l);
  l = nn_bilinear_new(ctx, 2, 3, 4, false, AD_F64, &rng);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_params_count(nn_layer_params(l)), 1);
  cr_assert_eq(nn_params_tensor(nn_layer_params(l), 0)->dtype, AD_F64);
  nn_layer_free(l);
}

/* ------------------------------------------------------------------- glu */

static void check_glu_case(const glu_case *gc, int d, bool layer) {
  ad_dtype dt = d ? AD_F32 : AD_F64;
  ad_tape_reset(ctx);
  ad_tensor *x = test_tensor_values(ctx, dt, gc->ndim, gc->shape, gc->x);
  ad_tensor_set_requires_grad(x, true);
  nn_layer *l = layer ? nn_glu_new(ctx, gc->dim) : NULL;
  ad_tensor *y = layer ? nn_layer_forward(l, x, true) : nn_glu(ctx, x, gc->dim);
  cr_assert_not_null(y, "%s: %s", gc->name, ad_last_error(ctx));
  int dd = gc->dim < 0 ? gc->dim + gc->ndim : gc->dim;
  for (int k = 0; k < gc->ndim; k++)
    cr_assert_eq(y->shape[k], k == dd ? gc->shape[k] / 2 : gc->shape[k]);
  ad_tensor *g = ramp_like(dt, y);
  check_y_dx_free(l, x, y, g, gc->y[d], gc->dx[d], d ? 2e-6 : 1e-14, gc->name, d);
}

Test(misc2, glu_matches_pytorch) { CHECK_EVERY_CASE(check_glu_case, GLU_CASES, NGLU); }

static ad_tensor *gc_glu_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  return nn_glu(c, in[0], *(const int *)ud);
}

Test(misc2, glu_gradcheck_first_and_second_order) {
  int64_t s[3] = {2, 4, 6};
  for (int dim = -3; dim < 3; dim++) {
    ad_rng rng;
    ad_rng_seed(&rng, 30 + dim);
    ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 3, s, -3, 3);
    cr_assert_not_null(x);
    ad_tensor_set_requires_grad(x, true);
    char label[64];
    snprintf(label, sizeof label, "dim %d", dim);
    check_both_orders(gc_glu_fn, &dim, 1, &x, label);
    ad_tensor_free(x);
  }
}

Test(misc2, glu_bad_inputs) {
  ad_ctx *other = ad_ctx_new();
  cr_assert_not_null(other);
  ad_tensor *x = ad_ones(ctx, AD_F32, 2, (int64_t[2]){3, 5});
  ad_tensor *x0 = ad_scalar(ctx, AD_F32, 1);
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 2, (int64_t[2]){3, 4});
  ad_tensor *gone = ad_ones(ctx, AD_F32, 2, (int64_t[2]){3, 4});
  ad_tensor *far = ad_ones(other, AD_F32, 2, (int64_t[2]){3, 4});
  cr_assert(x && x0 && xi && gone && far);
  ad_tensor_free(gone);
  cr_assert_null(nn_glu(ctx, x, 1));
  test_expect_error(ctx, AD_ERR_SHAPE, "glu: input [3,5]: the halving dim 1 must be even, but is 5",
                    NULL);
  cr_assert_null(nn_glu(ctx, x, -1));
  test_expect_error(ctx, AD_ERR_SHAPE, "the halving dim 1 must be even", NULL);
  cr_assert_null(nn_glu(ctx, x, 2));
  test_expect_error(ctx, AD_ERR_ARG, "glu: dim 2 is outside -2..1 for input [3,5]", NULL);
  cr_assert_null(nn_glu(ctx, x, -3));
  test_expect_error(ctx, AD_ERR_ARG, "glu: dim -3 is outside -2..1", NULL);
  cr_assert_null(nn_glu(ctx, x0, 0));
  test_expect_error(ctx, AD_ERR_SHAPE, "glu: a 0-d input has no halves", NULL);
  cr_assert_null(nn_glu(ctx, xi, 1));
  test_expect_error(ctx, AD_ERR_DTYPE, "glu: input [3,4] must be float, got i32", NULL);
  cr_assert_null(nn_glu(ctx, NULL, 0));
  test_expect_error(ctx, AD_ERR_NULL, "glu: input is NULL", NULL);
  cr_assert_null(nn_glu(ctx, gone, 0));
  test_expect_error(ctx, AD_ERR_STATE, "glu: input was freed", NULL);
  cr_assert_null(nn_glu(ctx, far, 0));
  test_expect_error(ctx, AD_ERR_ARG, "glu: input belongs to another context", NULL);
  cr_assert_null(nn_glu(NULL, x, 0));
  cr_assert_null(nn_glu_new(NULL, 0));
  nn_layer *l = nn_glu_new(ctx, 7);
  cr_assert_not_null(l);
  cr_assert_null(nn_layer_forward(l, x, true));
  test_expect_error(ctx, AD_ERR_ARG, "glu: dim 7 is outside -2..1", NULL);
  nn_layer_free(l);
  l = nn_glu_new(ctx, -1);
  cr_assert_null(nn_layer_forward(l, x, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "glu: input [3,5]: the halving dim 1 must be even", NULL);
  /* an empty half is fine, as in PyTorch */
  ad_tensor *e = ad_zeros(ctx, AD_F32, 2, (int64_t[2]){3, 0}), *y = nn_layer_forward(l, e, true);
  cr_assert(y && y->shape[0] == 3 && y->shape[1] == 0, "%s", ad_last_error(ctx));
  ad_tape_reset(ctx);
  nn_layer_free(l);
  ad_tensor_free(x), ad_tensor_free(x0), ad_tensor_free(xi), ad_tensor_free(e);
  ad_ctx_free(other);
}

/* ------------------------------------ cosine similarity, pairwise distance */

/* The gradient of a cosine, x2 / (c1 c2) - y x1 / c1^2 for x1 times g,
 * cancels where a short x1 nearly parallels x2: there it is accurate only
 * to the size of its terms, not of its value (cos_zero_and_tiny's dx2[10]
 * is -8.414310446123 (exact, mpmath) from terms of 3e4; PyTorch's own
 * float64 value is 2.3e-12 off, float32 2.2e-4). sc[k]: that size, |g|
 * (|x2| / (c1 c2) + |x1| / c1^2) for x1 (k 0; x2 likewise), in float64 and
 * summed to the input's shape as the gradient is; the tolerance of an
 * element is rtol (1 + sc) relative to (|want| + 1). */
static void cos_grad_scales(const pair_case *pc, const ad_tensor *y, ad_tensor **sc) {
  ad_tensor *x[2] = {test_tensor_values(ctx, AD_F64, pc->nd1, pc->s1, pc->x1),
                     test_tensor_values(ctx, AD_F64, pc->nd2, pc->s2, pc->x2)};
  ad_tensor *sum = ad_add(ctx, x[0], x[1]), *c[2], *e[2];
  cr_assert_not_null(sum, "%s", ad_last_error(ctx));
  int nd = sum->ndim, dim = (int)pc->arg < 0 ? (int)pc->arg + nd : (int)pc->arg;
  int64_t ks[AD_MAX_DIMS];
  memcpy(ks, sum->shape, sizeof(int64_t) * (size_t)nd);
  ks[dim] = 1;
  ad_tensor *ramp = ramp_like(AD_F64, y), *g = ad_abs(ctx, ad_reshape(ctx, ramp, nd, ks));
  for (int k = 0; k < 2; k++) {
    e[k] = ad_expand(ctx, x[k], nd, sum->shape);
    ad_tensor *s = ad_sum_axis(ctx, ad_square(ctx, e[k]), dim, true);
    c[k] = ad_sqrt(ctx, ad_maximum(ctx, s, ad_scalar(ctx, AD_F64, pc->eps * pc->eps)));
  }
  for (int k = 0; k < 2; k++) {
    ad_tensor *t = ad_add(ctx, ad_div(ctx, ad_abs(ctx, e[1 - k]), ad_mul(ctx, c[0], c[1])),
                          ad_div(ctx, ad_abs(ctx, e[k]), ad_square(ctx, c[k])));
    sc[k] = ad_sum_to(ctx, ad_mul(ctx, g, t), x[k]->ndim, x[k]->shape);
    cr_assert_not_null(sc[k], "%s", ad_last_error(ctx));
  }
  ad_tensor_free(x[0]), ad_tensor_free(x[1]), ad_tensor_free(ramp);
}

static void check_pair_case(const pair_case *pc, int d, bool layer) {
  ad_dtype dt = d ? AD_F32 : AD_F64;
  ad_tape_reset(ctx);
  ad_tensor *x1 = test_tensor_values(ctx, dt, pc->nd1, pc->s1, pc->x1),
            *x2 = test_tensor_values(ctx, dt, pc->nd2, pc->s2, pc->x2);
  ad_tensor_set_requires_grad(x1, true), ad_tensor_set_requires_grad(x2, true);
  nn_layer *l = NULL;
  ad_tensor *y;
  if (layer) {
    l = pc->cos ? nn_cosine_similarity_new(ctx, (int)pc->arg, pc->eps)
                : nn_pairwise_distance_new(ctx, pc->arg, pc->eps, pc->keepdim);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    y = nn_layer_forward2(l, x1, x2);
  } else {
    y = pc->cos ? nn_cosine_similarity(ctx, x1, x2, (int)pc->arg, pc->eps)
                : nn_pairwise_distance(ctx, x1, x2, pc->arg, pc->eps, pc->keepdim);
  }
  cr_assert_not_null(y, "%s: %s", pc->name, ad_last_error(ctx));
  cr_assert_eq(y->ndim, pc->ndy, "%s", pc->name);
  for (int k = 0; k < y->ndim; k++) cr_assert_eq(y->shape[k], pc->sy[k], "%s", pc->name);
  ad_tensor *g = ramp_like(dt, y);
  char what[96];
  double rtol = d ? 3e-6 : 1e-13;
  snprintf(what, sizeof what, "%s %s y", pc->name, d ? "f32" : "f64");
  for (int64_t i = 0; i < y->size; i++)
    expect_close(ad_tensor_get(y, i), pc->y[d][i], rtol, what, (int)i);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, g)), NULL), AD_OK, "%s",
               ad_last_error(ctx));
  ad_tensor *sc[2] = {NULL, NULL};
  if (pc->cos) cos_grad_scales(pc, y, sc);
  snprintf(what, sizeof what, "%s %s dx1", pc->name, d ? "f32" : "f64");
  for (int64_t i = 0; i < x1->size; i++)
    expect_close(ad_tensor_get(x1->grad, i), pc->d[d][i],
                 rtol * (1 + (sc[0] ? ad_tensor_get(sc[0], i) : 0)), what, (int)i);
  snprintf(what, sizeof what, "%s %s dx2", pc->name, d ? "f32" : "f64");
  for (int64_t i = 0; i < x2->size; i++)
    expect_close(ad_tensor_get(x2->grad, i), pc->d[d][x1->size + i],
                 rtol * (1 + (sc[1] ? ad_tensor_get(sc[1], i) : 0)), what, (int)i);
  ad_tape_reset(ctx);
  nn_layer_free(l);
  ad_tensor_free(x1), ad_tensor_free(x2), ad_tensor_free(g);
}

Test(misc2, cosine_similarity_and_pairwise_distance_match_pytorch) {
  CHECK_EVERY_CASE(check_pair_case, PAIR_CASES, NPAIR);
}

typedef struct gc_pair {
  bool cos;
  double arg, eps;
  bool keepdim;
} gc_pair;

static ad_tensor *gc_pair_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  const gc_pair *g = ud;
  (void)n;
  return g->cos ? nn_cosine_similarity(c, in[0], in[1], (int)g->arg, g->eps)
                : nn_pairwise_distance(c, in[0], in[1], g->arg, g->eps, g->keepdim);
}

Test(misc2, cosine_similarity_and_pairwise_distance_gradcheck) {
  const struct {
    gc_pair g;
    int nd2;
    int64_t s2[3];
  } cases[] = {
      {{true, 1, 1e-8, false}, 3, {3, 4, 2}},
      {{true, -1, 1e-8, false}, 1, {2}},
      {{true, 0, 0.01, false}, 3, {1, 4, 2}},
      /* off the clamp: its gradient is not its value's */ {{false, 2, 1e-6, false}, 3, {3, 4, 2}},
      {{false, 1.5, 1e-6, true}, 1, {2}},
      {{false, 3, 0, false}, 3, {3, 1, 2}},
  };
  int64_t s1[3] = {3, 4, 2};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ad_rng rng;
    ad_rng_seed(&rng, 40 + i);
    ad_tensor *in[2] = {ad_rand(ctx, &rng, AD_F64, 3, s1, -1, 1),
                        ad_rand(ctx, &rng, AD_F64, cases[i].nd2, cases[i].s2, -1, 1)};
    cr_assert(in[0] && in[1]);
    ad_tensor_set_requires_grad(in[0], true), ad_tensor_set_requires_grad(in[1], true);
    char label[64];
    snprintf(label, sizeof label, "case %zu", i);
    check_both_orders(gc_pair_fn, (void *)&cases[i].g, 2, in, label);
    ad_tensor_free(in[0]), ad_tensor_free(in[1]);
  }
}

Test(misc2, cosine_similarity_and_pairwise_distance_bad_inputs) {
  ad_ctx *other = ad_ctx_new();
  cr_assert_not_null(other);
  ad_tensor *x = ad_ones(ctx, AD_F32, 2, (int64_t[2]){3, 4});
  ad_tensor *y = ad_ones(ctx, AD_F32, 2, (int64_t[2]){3, 5});
  ad_tensor *yd = ad_ones(ctx, AD_F64, 2, (int64_t[2]){3, 4});
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 2, (int64_t[2]){3, 4});
  ad_tensor *s0 = ad_scalar(ctx, AD_F32, 1);
  ad_tensor *gone = ad_ones(ctx, AD_F32, 2, (int64_t[2]){3, 4});
  ad_tensor *far = ad_ones(other, AD_F32, 2, (int64_t[2]){3, 4});
  cr_assert(x && y && yd && xi && s0 && gone && far);
  ad_tensor_free(gone);
  static const char *const fn[2] = {"cosine_similarity", "pairwise_distance"};
  for (int k = 0; k < 2; k++) {
#define CALL(a, b)                                                                                 \
  (k ? nn_pairwise_distance(ctx, a, b, 2, 1e-6, false) : nn_cosine_similarity(ctx, a, b, 1, 1e-8))
    cr_assert_null(CALL(x, y));
    test_expect_error(ctx, AD_ERR_SHAPE, fn[k],
                      ": x1 [3,4] and x2 [3,5] must broadcast to one shape of at least 1 dim",
                      NULL);
    cr_assert_null(CALL(s0, s0));
    test_expect_error(ctx, AD_ERR_SHAPE, fn[k], "must broadcast to one shape of at least 1 dim",
                      NULL);
    cr_assert_null(CALL(x, yd));
    test_expect_error(ctx, AD_ERR_DTYPE, fn[k], ": x2 [3,4] is f64, x1 [3,4] is f32", NULL);
    cr_assert_null(CALL(xi, x));
    test_expect_error(ctx, AD_ERR_DTYPE, fn[k], ": x1 [3,4] must be float, got i32", NULL);
    cr_assert_null(CALL(NULL, x));
    test_expect_error(ctx, AD_ERR_NULL, fn[k], ": x1 is NULL", NULL);
    cr_assert_null(CALL(x, gone));
    test_expect_error(ctx, AD_ERR_STATE, fn[k], ": x2 was freed", NULL);
    cr_assert_null(CALL(far, x));
    test_expect_error(ctx, AD_ERR_ARG, fn[k], ": x1 belongs to another context", NULL);
#undef CALL
  }
  cr_assert_null(nn_cosine_similarity(ctx, x, x, 2, 1e-8));
  test_expect_error(ctx, AD_ERR_ARG, "cosine_similarity: dim 2 is outside -2..1", NULL);
  cr_assert_null(nn_cosine_similarity(ctx, x, x, 1, -1));
  test_expect_error(ctx, AD_ERR_ARG, "cosine_similarity: eps -1 must be finite and >= 0", NULL);
  cr_assert_null(nn_cosine_similarity(ctx, x, x, 1, NAN));
  test_expect_error(ctx, AD_ERR_ARG, "cosine_similarity: eps nan must be finite", NULL);
  cr_assert_null(nn_pairwise_distance(ctx, x, x, 0, 1e-6, false));
  test_expect_error(ctx, AD_ERR_ARG, "pairwise_distance: p 0 must be positive and finite", NULL);
  cr_assert_null(nn_pairwise_distance(ctx, x, x, INFINITY, 1e-6, false));
  test_expect_error(ctx, AD_ERR_ARG, "pairwise_distance: p inf must be positive", NULL);
  cr_assert_null(nn_pairwise_distance(ctx, x, x, 2, INFINITY, false));
  test_expect_error(ctx, AD_ERR_ARG, "pairwise_distance: eps inf must be finite", NULL);
  cr_assert_null(nn_cosine_similarity_new(ctx, 1, -1e-8));
  test_expect_error(ctx, AD_ERR_ARG, "cosine_similarity: eps", NULL);
  cr_assert_null(nn_pairwise_distance_new(ctx, -2, 1e-6, false));
  test_expect_error(ctx, AD_ERR_ARG, "pairwise_distance: p -2 must be positive", NULL);
  cr_assert_null(nn_cosine_similarity(NULL, x, x, 1, 1e-8));
  cr_assert_null(nn_pairwise_distance(NULL, x, x, 2, 1e-6, false));
  cr_assert_null(nn_cosine_similarity_new(NULL, 1, 1e-8));
  cr_assert_null(nn_pairwise_distance_new(NULL, 2, 1e-6, false));
  /* the layers */
  nn_layer *c = nn_cosine_similarity_new(ctx, 3, 1e-8), *p = nn_pairwise_distance_new(ctx, 2, 0, 1),
           *u = nn_identity_new(ctx);
  cr_assert(c && p && u, "%s", ad_last_error(ctx));
  cr_assert_null(nn_layer_forward2(c, x, x));
  test_expect_error(ctx, AD_ERR_ARG, "cosine_similarity: dim 3 is outside -2..1", NULL);
  cr_assert_null(nn_layer_forward(c, x, true));
  test_expect_error(ctx, AD_ERR_ARG,
                    "cosine_similarity: takes two inputs: call nn_layer_forward2(l, x1, x2), not "
                    "nn_layer_forward or a Sequential",
                    NULL);
  cr_assert_null(nn_layer_forward(p, x, true));
  test_expect_error(ctx, AD_ERR_ARG, "pairwise_distance: takes two inputs", NULL);
  cr_assert_null(nn_layer_forward2(p, x, y));
  test_expect_error(ctx, AD_ERR_SHAPE, "pairwise_distance: x1 [3,4] and x2 [3,5]", NULL);
  cr_assert_null(nn_layer_forward2(p, x, gone));
  test_expect_error(ctx, AD_ERR_STATE, "pairwise_distance: x2 was freed", NULL);
  cr_assert_null(nn_layer_forward2(p, NULL, x));
  test_expect_error(ctx, AD_ERR_NULL, "pairwise_distance: x1 is NULL", NULL);
  cr_assert_null(nn_layer_forward2(u, x, x));
  test_expect_error(ctx, AD_ERR_ARG, "layer_forward2: identity is not a layer of two inputs", NULL);
  cr_assert_null(nn_layer_forward2(NULL, x, x));
  ad_tensor *out = nn_layer_forward2(p, x, x);
  cr_assert(out && out->ndim == 2 && out->shape[1] == 1, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_layer_output_shape(p, NULL), 2);
  ad_tape_reset(ctx);
  nn_layer_free(c), nn_layer_free(p), nn_layer_free(u);
  ad_tensor_free(x), ad_tensor_free(y), ad_tensor_free(yd), ad_tensor_free(xi), ad_tensor_free(s0);
  ad_ctx_free(other);
}

/* ------------------------------------------ shrinks, softmin, softmax2d */

static ad_tensor *act_call(ad_ctx *c, int kind, ad_tensor *x, double a, double b) {
  switch (kind) {
  case 0:
    return nn_softshrink(c, x, a);
  case 1:
    return nn_hardshrink(c, x, a);
  case 2:
    return nn_threshold(c, x, a, b);
  case 3:
    return nn_softmin(c, x, (int)a);
  default:
    return nn_softmax2d(c, x);
  }
}

static nn_layer *act_layer(int kind, double a, double b) {
  switch (kind) {
  case 0:
    return nn_softshrink_new(ctx, a);
  case 1:
    return nn_hardshrink_new(ctx, a);
  case 2:
    return nn_threshold_new(ctx, a, b);
  case 3:
    return nn_softmin_new(ctx, (int)a);
  default:
    return nn_softmax2d_new(ctx);
  }
}

static void check_act_case(const act_case *ac, int d, bool layer) {
  ad_dtype dt = d ? AD_F32 : AD_F64;
  ad_tape_reset(ctx);
  ad_tensor *x = test_tensor_values(ctx, dt, ac->ndim, ac->shape, ac->x);
  ad_tensor_set_requires_grad(x, true);
  nn_layer *l = layer ? act_layer(ac->kind, ac->a, ac->b) : NULL;
  cr_assert(!layer || l, "%s", ad_last_error(ctx));
  ad_tensor *y = layer ? nn_layer_forward(l, x, true) : act_call(ctx, ac->kind, x, ac->a, ac->b);
  cr_assert_not_null(y, "%s: %s", ac->name, ad_last_error(ctx));
  cr_assert_eq(y->size, x->size);
  ad_tensor *g = ramp_like(dt, y);
  check_y_dx_free(l, x, y, g, ac->y[d], ac->dx[d], d ? 2e-6 : 1e-14, ac->name, d);
}

Test(misc2, shrinks_threshold_softmin_softmax2d_match_pytorch) {
  CHECK_EVERY_CASE(check_act_case, ACT_CASES, NACT);
}

/* NaN inputs: the slopes documented at nn_softshrink (PyTorch's kernels
 * differ between their vectorized and scalar code there). */
Test(misc2, shrinks_and_threshold_at_nan) {
  ad_tensor *x = ad_full(ctx, AD_F64, 1, (int64_t[1]){1}, NAN);
  ad_tensor_set_requires_grad(x, true);
  const double want_y[3] = {0, NAN, NAN}, want_d[3] = {0, 1, 1};
  for (int k = 0; k < 3; k++) {
    ad_tensor *y = act_call(ctx, k, x, 0.5, 20);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    double v = ad_tensor_get(y, 0);
    cr_assert(isnan(want_y[k]) ? isnan(v) : v == want_y[k], "kind %d: %g", k, v);
    ad_tensor_zero_grad(x);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_tensor_get(x->grad, 0), want_d[k], "kind %d", k);
    ad_tape_reset(ctx);
  }
  ad_tensor_free(x);
}

/* nn_threshold is one op each way (it was le and where, a mask written
 * and read again: 2.2x PyTorch's time in bench/layerscan): one node,
 * the op threshold of x itself, and PyTorch's values and slopes. */
Test(misc2, threshold_records_one_op) {
  const float xv[4] = {0.1f, 0.5f, -1.0f, 0.2f};
  ad_tensor *x = ad_from_data(ctx, AD_F32, 1, (int64_t[1]){4}, xv);
  cr_assert_not_null(x);
  ad_tensor_set_requires_grad(x, true);
  ad_tape_reset(ctx);
  ad_tensor *y = nn_threshold(ctx, x, 0.1, 20);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tape_size(ctx), 1, "nn_threshold recorded %zu ops", ad_tape_size(ctx));
  ad_tensor *src = NULL;
  cr_assert_eq(ad_tensor_op(y), ad_op_find(ctx, "threshold"), "made by %s",
               ad_op_get(ctx, ad_tensor_op(y)) ? ad_op_get(ctx, ad_tensor_op(y))->name : "?");
  cr_assert(ad_tensor_inputs(y, &src, 1) == 1 && src == x);
  const double want_y[4] = {20, 0.5, 20, 0.2f}, want_d[4] = {0, 1, 0, 1};
  cr_assert_eq(ad_backward(ctx, y, ad_full(ctx, AD_F32, 1, (int64_t[1]){4}, 1.0)), AD_OK, "%s",
               ad_last_error(ctx));
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(ad_tensor_get(y, i), want_y[i], "y[%d] = %g", i, ad_tensor_get(y, i));
    cr_assert_eq(ad_tensor_get(x->grad, i), want_d[i], "dx[%d] = %g", i, ad_tensor_get(x->grad, i));
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

static ad_tensor *gc_act_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  const act_case *ac = ud;
  (void)n;
  ad_tensor *y = act_call(c, ac->kind, in[0], ac->a, ac->b);
  return ad_mul(c, y, y); /* squared: a second derivative that is not 0 */
}

/* Off the kinks: inputs drawn from [-3, 3] stay more than the step away
 * from the kinks with these seeds (the check would fail at one). */
Test(misc2, shrinks_threshold_softmin_softmax2d_gradcheck) {
  const act_case cases[] = {
      {"soft", 0, 2, {3, 4}, 0.5, 0, NULL, {0}, {0}},
      {"hard", 1, 2, {3, 4}, 0.5, 0, NULL, {0}, {0}},
      {"thr", 2, 2, {3, 4}, 0.1, 20, NULL, {0}, {0}},
      {"softmin", 3, 3, {2, 3, 4}, 1, 0, NULL, {0}, {0}},
      {"softmax2d", 4, 4, {2, 3, 2, 2}, 0, 0, NULL, {0}, {0}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ad_rng rng;
    ad_rng_seed(&rng, 50 + i);
    ad_tensor *x = ad_rand(ctx, &rng, AD_F64, cases[i].ndim, cases[i].shape, -3, 3);
    cr_assert_not_null(x);
    ad_tensor_set_requires_grad(x, true);
    char label[64];
    snprintf(label, sizeof label, "%s", cases[i].name);
    check_both_orders(gc_act_fn, (void *)&cases[i], 1, &x, label);
    ad_tensor_free(x);
  }
}

Test(misc2, shrinks_threshold_softmin_softmax2d_bad_arguments) {
  ad_ctx *other = ad_ctx_new();
  cr_assert_not_null(other);
  ad_tensor *x = ad_ones(ctx, AD_F32, 2, (int64_t[2]){3, 4});
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 2, (int64_t[2]){3, 4});
  ad_tensor *gone = ad_ones(ctx, AD_F32, 2, (int64_t[2]){3, 4});
  ad_tensor *far = ad_ones(other, AD_F32, 2, (int64_t[2]){3, 4});
  cr_assert(x && xi && gone && far);
  ad_tensor_free(gone);
  static const char *const fn[5] = {"softshrink", "hardshrink", "threshold", "softmin",
                                    "softmax2d"};
  for (int k = 0; k < 5; k++) {
    double a = k == 3 ? 1 : 0.5;
    cr_assert_null(act_call(ctx, k, NULL, a, 0));
    test_expect_error(ctx, AD_ERR_NULL, fn[k], ": input is NULL", NULL);
    cr_assert_null(act_call(ctx, k, gone, a, 0));
    test_expect_error(ctx, AD_ERR_STATE, fn[k], ": input was freed", NULL);
    cr_assert_null(act_call(ctx, k, far, a, 0));
    test_expect_error(ctx, AD_ERR_ARG, fn[k], ": input belongs to another context", NULL);
    cr_assert_null(act_call(ctx, k, xi, a, 0));
    test_expect_error(ctx, AD_ERR_DTYPE, fn[k], ": input [3,4] must be float, got i32", NULL);
    cr_assert_null(act_call(NULL, k, x, a, 0));
    nn_layer *l = act_layer(k, a, 0);
    cr_assert_not_null(l);
    cr_assert_null(nn_layer_forward(l, xi, true));
    test_expect_error(ctx, AD_ERR_DTYPE, fn[k], ": input [3,4] must be float", NULL);
    nn_layer_free(l);
  }
  cr_assert_null(nn_softshrink(ctx, x, -0.5));
  test_expect_error(ctx, AD_ERR_ARG, "softshrink: lambd -0.5 must be >= 0", NULL);
  cr_assert_null(nn_softshrink_new(ctx, NAN));
  test_expect_error(ctx, AD_ERR_ARG, "softshrink: lambd nan must be >= 0", NULL);
  cr_assert_null(nn_hardshrink(ctx, x, NAN));
  test_expect_error(ctx, AD_ERR_ARG, "hardshrink: lambd is NaN", NULL);
  cr_assert_null(nn_hardshrink_new(ctx, NAN));
  test_expect_error(ctx, AD_ERR_ARG, "hardshrink: lambd is NaN", NULL);
  cr_assert_null(nn_threshold(ctx, x, NAN, 1));
  test_expect_error(ctx, AD_ERR_ARG, "threshold: threshold is NaN", NULL);
  cr_assert_null(nn_threshold_new(ctx, NAN, 1));
  test_expect_error(ctx, AD_ERR_ARG, "threshold: threshold is NaN", NULL);
  cr_assert_null(nn_softmin(ctx, x, 2));
  test_expect_error(ctx, AD_ERR_ARG, "softmin: dim 2 is outside -2..1 for input [3,4]", NULL);
  cr_assert_null(nn_softmin(ctx, x, -3));
  test_expect_error(ctx, AD_ERR_ARG, "softmin: dim -3 is outside", NULL);
  cr_assert_null(nn_softmax2d(ctx, x));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "softmax2d: input [3,4] must be 3-D [C, H, W] or 4-D [N, C, H, W]", NULL);
  nn_layer *sm = nn_softmin_new(ctx, 5);
  cr_assert_null(nn_layer_forward(sm, x, true));
  test_expect_error(ctx, AD_ERR_ARG, "softmin: dim 5 is outside -2..1", NULL);
  nn_layer_free(sm);
  /* infinite settings are fine, as in PyTorch */
  ad_tensor *y = nn_threshold(ctx, x, -INFINITY, 0), *z = nn_hardshrink(ctx, x, INFINITY);
  cr_assert(y && z && ad_tensor_get(y, 0) == 1 && ad_tensor_get(z, 0) == 0, "%s",
            ad_last_error(ctx));
  ad_tape_reset(ctx);
  ad_tensor_free(x), ad_tensor_free(xi);
  ad_ctx_free(other);
}

/* ---------------------------------------------------- local response norm */

static void check_lrn_case(const lrn_case *lc, int d, bool layer) {
  ad_dtype dt = d ? AD_F32 : AD_F64;
  ad_tape_reset(ctx);
  ad_tensor *x = test_tensor_values(ctx, dt, lc->ndim, lc->shape, lc->x);
  ad_tensor_set_requires_grad(x, true);
  nn_layer *l =
      layer ? nn_local_response_norm_new(ctx, lc->size, lc->alpha, lc->beta, lc->k) : NULL;
  cr_assert(!layer || l, "%s", ad_last_error(ctx));
  ad_tensor *y = layer ? nn_layer_forward(l, x, true)
                       : nn_local_response_norm(ctx, x, lc->size, lc->alpha, lc->beta, lc->k);
  cr_assert_not_null(y, "%s: %s", lc->name, ad_last_error(ctx));
  ad_tensor *g = ramp_like(dt, y);
  check_y_dx_free(l, x, y, g, lc->y[d], lc->dx[d], d ? 3e-6 : 1e-13, lc->name, d);
}

Test(misc2, local_response_norm_matches_pytorch) {
  CHECK_EVERY_CASE(check_lrn_case, LRN_CASES, NLRN);
}

static ad_tensor *gc_lrn_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  const lrn_case *lc = ud;
  (void)n;
  return nn_local_response_norm(c, in[0], lc->size, lc->alpha, lc->beta, lc->k);
}

Test(misc2, local_response_norm_gradcheck) {
  const lrn_case cases[] = {
      {"lrn3", 3, {2, 5, 3}, 3, 0.5, 0.75, 1, NULL, {0}, {0}},
      {"lrn4", 4, {1, 4, 2, 2}, 2, 1.0, 1.5, 0.5, NULL, {0}, {0}},
      {"lrn_wide", 3, {1, 2, 3}, 6, 2.0, 0.75, 1, NULL, {0}, {0}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ad_rng rng;
    ad_rng_seed(&rng, 60 + i);
    ad_tensor *x = ad_rand(ctx, &rng, AD_F64, cases[i].ndim, cases[i].shape, -2, 2);
    cr_assert_not_null(x);
    ad_tensor_set_requires_grad(x, true);
    char label[64];
    snprintf(label, sizeof label, "%s", cases[i].name);
    check_both_orders(gc_lrn_fn, (void *)&cases[i], 1, &x, label);
    ad_tensor_free(x);
  }
}

Test(misc2, local_response_norm_bad_arguments) {
  ad_ctx *other = ad_ctx_new();
  cr_assert_not_null(other);
  ad_tensor *x = ad_ones(ctx, AD_F32, 3, (int64_t[3]){1, 3, 4});
  ad_tensor *x2 = ad_ones(ctx, AD_F32, 2, (int64_t[2]){3, 4});
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 3, (int64_t[3]){1, 3, 4});
  ad_tensor *gone = ad_ones(ctx, AD_F32, 3, (int64_t[3]){1, 3, 4});
  ad_tensor *far = ad_ones(other, AD_F32, 3, (int64_t[3]){1, 3, 4});
  cr_assert(x && x2 && xi && gone && far);
  ad_tensor_free(gone);
  cr_assert_null(nn_local_response_norm(ctx, x, 0, 1e-4, 0.75, 1));
  test_expect_error(ctx, AD_ERR_ARG, "local_response_norm: size 0 must be in [1, 2^16]", NULL);
  cr_assert_null(nn_local_response_norm_new(ctx, INT64_MAX, 1e-4, 0.75, 1));
  test_expect_error(ctx, AD_ERR_ARG, "local_response_norm: size 9223372036854775807", NULL);
  cr_assert_null(nn_local_response_norm(ctx, x, 2, NAN, 0.75, 1));
  test_expect_error(ctx, AD_ERR_ARG, "local_response_norm: alpha nan, beta 0.75 and k 1 must be",
                    NULL);
  cr_assert_null(nn_local_response_norm_new(ctx, 2, 1e-4, INFINITY, 1));
  test_expect_error(ctx, AD_ERR_ARG, "must be finite", NULL);
  cr_assert_null(nn_local_response_norm(ctx, x2, 2, 1e-4, 0.75, 1));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "local_response_norm: input [3,4] must have at least 3 dims [N, C, ...]", NULL);
  cr_assert_null(nn_local_response_norm(ctx, xi, 2, 1e-4, 0.75, 1));
  test_expect_error(ctx, AD_ERR_DTYPE, "local_response_norm: input [1,3,4] must be float, got i32",
                    NULL);
  cr_assert_null(nn_local_response_norm(ctx, NULL, 2, 1e-4, 0.75, 1));
  test_expect_error(ctx, AD_ERR_NULL, "local_response_norm: input is NULL", NULL);
  cr_assert_null(nn_local_response_norm(ctx, gone, 2, 1e-4, 0.75, 1));
  test_expect_error(ctx, AD_ERR_STATE, "local_response_norm: input was freed", NULL);
  cr_assert_null(nn_local_response_norm(ctx, far, 2, 1e-4, 0.75, 1));
  test_expect_error(ctx, AD_ERR_ARG, "local_response_norm: input belongs to another context", NULL);
  cr_assert_null(nn_local_response_norm(NULL, x, 2, 1e-4, 0.75, 1));
  cr_assert_null(nn_local_response_norm_new(NULL, 2, 1e-4, 0.75, 1));
  nn_layer *l = nn_local_response_norm_new(ctx, 2, 1e-4, 0.75, 1);
  cr_assert_not_null(l);
  cr_assert_null(nn_layer_forward(l, x2, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "local_response_norm: input [3,4] must have", NULL);
  /* an empty input gives an empty output, as PyTorch's */
  ad_tensor *e = ad_zeros(ctx, AD_F32, 3, (int64_t[3]){0, 3, 4}), *y = nn_layer_forward(l, e, true);
  cr_assert(y && y->size == 0 && y->ndim == 3, "%s", ad_last_error(ctx));
  ad_tape_reset(ctx);
  nn_layer_free(l);
  ad_tensor_free(x), ad_tensor_free(x2), ad_tensor_free(xi), ad_tensor_free(e);
  ad_ctx_free(other);
}

/* ------------------------------------------------------------------ rrelu */

/* Evaluation mode against PyTorch (RRELU_CASES reuse lrn_case: alpha is
 * lower, beta upper). */
Test(misc2, rrelu_eval_matches_pytorch) {
  int n = (int)(sizeof RRELU_CASES / sizeof RRELU_CASES[0]);
  for (int i = 0; i < n; i++)
    for (int d = 0; d < 2; d++)
      for (int layer = 0; layer < 2; layer++) {
        const lrn_case *rc = &RRELU_CASES[i];
        ad_dtype dt = d ? AD_F32 : AD_F64;
        ad_tape_reset(ctx);
        ad_tensor *x = test_tensor_values(ctx, dt, rc->ndim, rc->shape, rc->x);
        ad_tensor_set_requires_grad(x, true);
        nn_layer *l = layer ? nn_rrelu_new(ctx, rc->alpha, rc->beta, 1) : NULL;
        ad_tensor *y = layer ? nn_layer_forward(l, x, false)
                             : nn_rrelu(ctx, x, rc->alpha, rc->beta, false, NULL);
        cr_assert_not_null(y, "%s", ad_last_error(ctx));
        ad_tensor *g = ad_zeros(ctx, dt, y->ndim, y->shape);
        for (int64_t k = 0; k < g->size; k++)
          ad_tensor_set(g, k, -1 + 2.0 * (double)k / (double)(g->size - 1));
        double rtol = d ? 2e-6 : 1e-15;
        for (int64_t k = 0; k < y->size; k++)
          expect_close(ad_tensor_get(y, k), rc->y[d][k], rtol, rc->name, (int)k);
        cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, g)), NULL), AD_OK, "%s",
                     ad_last_error(ctx));
        for (int64_t k = 0; k < x->size; k++)
          expect_close(ad_tensor_get(x->grad, k), rc->dx[d][k], rtol, rc->name, (int)k);
        ad_tape_reset(ctx);
        nn_layer_free(l);
        ad_tensor_free(x), ad_tensor_free(g);
      }
}

/* Training: each x <= 0 gets its own slope in [lower, upper), the
 * gradient is that slope, x > 0 passes; the slopes spread over the range,
 * and two forwards draw different ones. */
Test(misc2, rrelu_training_draws_slopes_in_range) {
  int64_t n = 4000;
  ad_tensor *x = ad_zeros(ctx, AD_F64, 1, &n);
  cr_assert_not_null(x);
  for (int64_t i = 0; i < n; i++) ad_tensor_set(x, i, i % 4 == 3 ? 1.5 : -(double)(i % 4));
  ad_tensor_set_requires_grad(x, true);
  nn_layer *l = nn_rrelu_new(ctx, 0.125, 1.0 / 3, 7);
  cr_assert_not_null(l);
  double first = 0;
  for (int pass = 0; pass < 2; pass++) {
    ad_tensor *y = nn_layer_forward(l, x, true);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    ad_tensor_zero_grad(x);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
    double lo = 1, hi = 0, sum = 0;
    for (int64_t i = 0; i < n; i++) {
      double xv = ad_tensor_get(x, i), s = ad_tensor_get(x->grad, i);
      if (xv > 0) {
        cr_assert_eq(s, 1.0);
        cr_assert_eq(ad_tensor_get(y, i), xv);
        continue;
      }
      cr_assert(s >= 0.125 && s < 1.0 / 3, "slope %g", s);
      cr_assert_eq(ad_tensor_get(y, i), xv * s);
      lo = fmin(lo, s), hi = fmax(hi, s), sum += s;
    }
    cr_assert(lo < 0.13 && hi > 0.328, "[%g, %g]", lo, hi);
    double mean = sum / (double)(3 * n / 4);
    cr_assert(fabs(mean - (0.125 + 1.0 / 3) / 2) < 0.005, "mean %g", mean);
    if (pass)
      cr_assert_neq(ad_tensor_get(x->grad, 0), first);
    else
      first = ad_tensor_get(x->grad, 0);
    ad_tape_reset(ctx);
  }
  nn_layer_free(l);
  ad_tensor_free(x);
}

Test(misc2, rrelu_bad_arguments) {
  ad_tensor *x = ad_ones(ctx, AD_F32, 2, (int64_t[2]){3, 4});
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 2, (int64_t[2]){3, 4});
  ad_tensor *gone = ad_ones(ctx, AD_F32, 2, (int64_t[2]){3, 4});
  cr_assert(x && xi && gone);
  ad_tensor_free(gone);
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  cr_assert_null(nn_rrelu(ctx, x, 0.5, 0.2, true, &rng));
  test_expect_error(ctx, AD_ERR_ARG,
                    "rrelu: lower 0.5 and upper 0.2 must be finite with lower <= upper", NULL);
  cr_assert_null(nn_rrelu_new(ctx, NAN, 0.2, 1));
  test_expect_error(ctx, AD_ERR_ARG, "rrelu: lower nan and upper 0.2 must be finite", NULL);
  cr_assert_null(nn_rrelu_new(ctx, 0.1, INFINITY, 1));
  test_expect_error(ctx, AD_ERR_ARG, "rrelu: lower 0.1 and upper inf", NULL);
  cr_assert_null(nn_rrelu(ctx, x, 0.1, 0.2, true, NULL));
  test_expect_error(ctx, AD_ERR_NULL, "rrelu: rng is NULL", NULL);
  cr_assert_not_null(nn_rrelu(ctx, x, 0.1, 0.2, false, NULL), "%s", ad_last_error(ctx));
  cr_assert_null(nn_rrelu(ctx, xi, 0.1, 0.2, false, NULL));
  test_expect_error(ctx, AD_ERR_DTYPE, "rrelu: input [3,4] must be float, got i32", NULL);
  cr_assert_null(nn_rrelu(ctx, NULL, 0.1, 0.2, false, NULL));
  test_expect_error(ctx, AD_ERR_NULL, "rrelu: input is NULL", NULL);
  cr_assert_null(nn_rrelu(ctx, gone, 0.1, 0.2, false, NULL));
  test_expect_error(ctx, AD_ERR_STATE, "rrelu: input was freed", NULL);
  cr_assert_null(nn_rrelu(NULL, x, 0.1, 0.2, false, NULL));
  cr_assert_null(nn_rrelu_new(NULL, 0.1, 0.2, 1));
  ad_tape_reset(ctx);
  ad_tensor_free(x), ad_tensor_free(xi);
}

/* ------------------------------------------------------------------ repr */

static void expect_desc(nn_layer *l, const char *want) { test_expect_desc(ctx, l, want); }

/* PyTorch 1.13's reprs (of equal pairs given as one number). */
Test(misc2, describe_is_pytorch_repr) {
  expect_desc(nn_unfold_new(ctx, &(nn_fold_opts){{2, 2}, {0}, {1, 1}, {2, 2}}),
              "unfold(kernel_size=2, dilation=1, padding=1, stride=2)");
  expect_desc(nn_fold_new(ctx, (int64_t[2]){4, 5}, &(nn_fold_opts){.kernel_size = {2, 3}}),
              "fold(output_size=(4, 5), kernel_size=(2, 3), dilation=1, padding=0, stride=1)");
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  expect_desc(nn_bilinear_new(ctx, 3, 4, 2, true, AD_F32, &rng),
              "bilinear(in1_features=3, in2_features=4, out_features=2, bias=True)");
  expect_desc(nn_bilinear_new(ctx, 3, 4, 2, false, AD_F32, &rng),
              "bilinear(in1_features=3, in2_features=4, out_features=2, bias=False)");
  expect_desc(nn_glu_new(ctx, -1), "glu(dim=-1)");
  expect_desc(nn_glu_new(ctx, 2), "glu(dim=2)");
  expect_desc(nn_cosine_similarity_new(ctx, 1, 1e-8), "cosine_similarity()");
  expect_desc(nn_pairwise_distance_new(ctx, 2, 1e-6, false), "pairwise_distance()");
  expect_desc(nn_softshrink_new(ctx, 0.5), "softshrink(0.5)");
  expect_desc(nn_hardshrink_new(ctx, 0.5), "hardshrink(0.5)");
  expect_desc(nn_threshold_new(ctx, 0.1, 20), "threshold(threshold=0.1, value=20.0)");
  expect_desc(nn_softmin_new(ctx, 1), "softmin(dim=1)");
  expect_desc(nn_softmax2d_new(ctx), "softmax2d()");
  expect_desc(nn_local_response_norm_new(ctx, 2, 1e-4, 0.75, 1),
              "local_response_norm(2, alpha=0.0001, beta=0.75, k=1.0)");
  expect_desc(nn_rrelu_new(ctx, 0.125, 1.0 / 3, 1), "rrelu(lower=0.125, upper=0.3333333333333333)");
}

/* ---------------------------------------------------------------- misuse */

Test(misc2, unfold_fold_bad_arguments) {
  nn_fold_opts ok = {.kernel_size = {2, 2}};
  int64_t hw[2] = {4, 4};
  ad_tensor *x = ad_ones(ctx, AD_F32, 4, (int64_t[4]){1, 2, 4, 4});
  cr_assert_not_null(x);
  static const struct {
    nn_fold_opts o;
    const char *want;
  } bad[] = {
      {{{0, 2}, {0}, {0}, {0}}, "kernel_size (0, 2) must be in [1, 2^31 - 1]"},
      {{{2, -1}, {0}, {0}, {0}}, "kernel_size (2, -1) must be in [1, 2^31 - 1]"},
      {{{INT64_C(1) << 31, 1}, {0}, {0}, {0}},
       "kernel_size (2147483648, 1) must be in [1, 2^31 - 1]"},
      {{{2, 2}, {-1, 1}, {0}, {0}}, "dilation (-1, 1) must be in [0, 2^31 - 1]"},
      {{{2, 2}, {1, 1}, {0, -2}, {0}}, "padding (0, -2) must be in [0, 2^31 - 1]"},
      {{{2, 2}, {1, 1}, {0, 0}, {INT64_MAX, 1}}, "stride (9223372036854775807, 1) must be in"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    cr_assert_null(nn_unfold(ctx, x, &bad[k].o));
    test_expect_error(ctx, AD_ERR_ARG, "unfold: ", bad[k].want, NULL);
    cr_assert_null(nn_unfold_new(ctx, &bad[k].o));
    test_expect_error(ctx, AD_ERR_ARG, "unfold: ", bad[k].want, NULL);
    cr_assert_null(nn_fold(ctx, x, hw, &bad[k].o));
    test_expect_error(ctx, AD_ERR_ARG, "fold: ", bad[k].want, NULL);
    cr_assert_null(nn_fold_new(ctx, hw, &bad[k].o));
    test_expect_error(ctx, AD_ERR_ARG, "fold: ", bad[k].want, NULL);
  }
  cr_assert_null(nn_unfold(ctx, x, NULL));
  test_expect_error(ctx, AD_ERR_NULL, "unfold: opts is NULL", NULL);
  cr_assert_null(nn_unfold_new(ctx, NULL));
  test_expect_error(ctx, AD_ERR_NULL, "unfold: opts is NULL", NULL);
  cr_assert_null(nn_fold_new(ctx, NULL, &ok));
  test_expect_error(ctx, AD_ERR_NULL, "fold: output_size is NULL", NULL);
  cr_assert_null(nn_fold(ctx, x, hw, NULL));
  test_expect_error(ctx, AD_ERR_NULL, "fold: opts is NULL", NULL);
  cr_assert_null(nn_fold(ctx, x, (int64_t[2]){0, 4}, &ok));
  test_expect_error(ctx, AD_ERR_ARG, "fold: output_size (0, 4) must be in [1, 2^31 - 1]", NULL);
  cr_assert_null(nn_fold_new(ctx, (int64_t[2]){4, INT64_C(1) << 31}, &ok));
  test_expect_error(ctx, AD_ERR_ARG, "fold: output_size (4, 2147483648) must be in", NULL);
  cr_assert_null(nn_unfold(NULL, x, &ok));
  cr_assert_null(nn_fold(NULL, x, hw, &ok));
  cr_assert_null(nn_unfold_new(NULL, &ok));
  cr_assert_null(nn_fold_new(NULL, hw, &ok));
  ad_tensor_free(x);
}

Test(misc2, unfold_fold_bad_inputs) {
  nn_fold_opts ok = {.kernel_size = {2, 2}};
  int64_t hw[2] = {4, 4};
  ad_ctx *other = ad_ctx_new();
  cr_assert_not_null(other);
  ad_tensor *x4 = ad_ones(ctx, AD_F32, 4, (int64_t[4]){1, 2, 4, 4});
  ad_tensor *x2 = ad_ones(ctx, AD_F32, 2, (int64_t[2]){4, 4});
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 4, (int64_t[4]){1, 2, 4, 4});
  ad_tensor *x0 = ad_zeros(ctx, AD_F32, 4, (int64_t[4]){1, 0, 4, 4});
  ad_tensor *gone = ad_ones(ctx, AD_F32, 4, (int64_t[4]){1, 2, 4, 4});
  ad_tensor *far = ad_ones(other, AD_F32, 4, (int64_t[4]){1, 2, 4, 4});
  ad_tensor *c3 = ad_ones(ctx, AD_F64, 3, (int64_t[3]){1, 8, 9});
  ad_tensor *c5 = ad_ones(ctx, AD_F64, 3, (int64_t[3]){1, 6, 9});
  ad_tensor *c8 = ad_ones(ctx, AD_F64, 3, (int64_t[3]){1, 8, 8});
  ad_tensor *ci = ad_zeros(ctx, AD_I32, 3, (int64_t[3]){1, 8, 9});
  cr_assert(x4 && x2 && xi && x0 && gone && far && c3 && c5 && c8 && ci);
  ad_tensor_free(gone);
  nn_layer *un = nn_unfold_new(ctx, &ok), *fo = nn_fold_new(ctx, hw, &ok);
  cr_assert(un && fo, "%s", ad_last_error(ctx));
  /* unfold */
  cr_assert_null(nn_unfold(ctx, NULL, &ok));
  test_expect_error(ctx, AD_ERR_NULL, "unfold: input is NULL", NULL);
  cr_assert_null(nn_unfold(ctx, gone, &ok));
  test_expect_error(ctx, AD_ERR_STATE, "unfold: input was freed", NULL);
  cr_assert_null(nn_unfold(ctx, far, &ok));
  test_expect_error(ctx, AD_ERR_ARG, "unfold: input belongs to another context", NULL);
  cr_assert_null(nn_unfold(ctx, x2, &ok));
  test_expect_error(ctx, AD_ERR_SHAPE, "unfold: input [4,4] must be [N, C, H, W] or [C, H, W]",
                    NULL);
  cr_assert_null(nn_unfold(ctx, xi, &ok));
  test_expect_error(ctx, AD_ERR_DTYPE, "unfold: input [1,2,4,4] must be float, got i32", NULL);
  cr_assert_null(nn_unfold(ctx, x0, &ok));
  test_expect_error(ctx, AD_ERR_SHAPE, "unfold: input [1,0,4,4]: C, H and W must be >= 1", NULL);
  cr_assert_null(nn_unfold(ctx, x4, &(nn_fold_opts){.kernel_size = {5, 2}}));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "unfold: input [1,2,4,4] with kernel_size (5, 2), dilation (1, 1), padding "
                    "(0, 0) has (0, 3) sliding blocks: each must be at least one",
                    NULL);
  cr_assert_null(nn_unfold(ctx, x4, &(nn_fold_opts){{2, 2}, {4, 1}, {0}, {0}}));
  test_expect_error(ctx, AD_ERR_SHAPE, "has (0, 3) sliding blocks", NULL);
  cr_assert_null(nn_unfold(ctx, x4, &(nn_fold_opts){{1, 1}, {1, 1}, {INT64_C(1) << 30, 1}, {0}}));
  test_expect_error(ctx, AD_ERR_SHAPE, "unfold: input [1,2,4,4]: the padded plane", "above 2^31",
                    NULL);
  /* a padded side near 2^32: the plane's size, computed as a product,
   * overflowed int64 and passed the check (then an arena OOM) */
  int64_t big = INT64_C(2147483647);
  ad_tensor *x11 = ad_ones(ctx, AD_F32, 3, (int64_t[3]){1, 1, 1});
  cr_assert_not_null(x11);
  cr_assert_null(nn_unfold(ctx, x11, &(nn_fold_opts){{1, 1}, {1, 1}, {big, big}, {0}}));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "unfold: input [1,1,1]: the padded plane 4294967295 x 4294967295 is above "
                    "2^31 - 1",
                    NULL);
  ad_tensor_free(x11);
  cr_assert_null(nn_layer_forward(un, x2, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "unfold: input [4,4] must be", NULL);
  cr_assert_null(nn_layer_forward(un, xi, true));
  test_expect_error(ctx, AD_ERR_DTYPE, "unfold: input [1,2,4,4] must be float", NULL);
  cr_assert_null(nn_layer_forward(un, gone, true));
  test_expect_error(ctx, AD_ERR_STATE, "was freed", NULL);
  cr_assert_null(nn_layer_forward(un, far, true));
  test_expect_error(ctx, AD_ERR_ARG, "another context", NULL);
  /* fold */
  cr_assert_null(nn_fold(ctx, NULL, hw, &ok));
  test_expect_error(ctx, AD_ERR_NULL, "fold: input is NULL", NULL);
  cr_assert_null(nn_fold(ctx, gone, hw, &ok));
  test_expect_error(ctx, AD_ERR_STATE, "fold: input was freed", NULL);
  cr_assert_null(nn_fold(ctx, far, hw, &ok));
  test_expect_error(ctx, AD_ERR_ARG, "fold: input belongs to another context", NULL);
  cr_assert_null(nn_fold(ctx, x4, hw, &ok));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "fold: input [1,2,4,4] must be [N, C kh kw, L] or [C kh kw, L]", NULL);
  cr_assert_null(nn_fold(ctx, ci, hw, &ok));
  test_expect_error(ctx, AD_ERR_DTYPE, "fold: input [1,8,9] must be float, got i32", NULL);
  cr_assert_null(nn_fold(ctx, c5, (int64_t[2]){4, 4}, &(nn_fold_opts){.kernel_size = {2, 2}}));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "fold: input [1,6,9]: dim 1 (6) must be a positive multiple of the kernel's "
                    "size 2 x 2",
                    NULL);
  cr_assert_null(nn_fold(ctx, c8, hw, &ok));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "fold: input [1,8,8]: output_size (4, 4) with kernel_size (2, 2), dilation "
                    "(1, 1), padding (0, 0), stride (1, 1) has 3 x 3 sliding blocks, not the 8 "
                    "of dim 2",
                    NULL);
  cr_assert_null(nn_fold(ctx, c3, (int64_t[2]){1, 4}, &ok));
  test_expect_error(ctx, AD_ERR_SHAPE, "has 0 x 3 sliding blocks, not the 9 of dim 2", NULL);
  /* blocks counted in the billions: their product overflowed int64 (UB) */
  cr_assert_null(
      nn_fold(ctx, c3, (int64_t[2]){big, big}, &(nn_fold_opts){{1, 1}, {1, 1}, {big, big}, {0}}));
  test_expect_error(ctx, AD_ERR_SHAPE, "has 6442450941 x 6442450941 sliding blocks, not the 9",
                    NULL);
  cr_assert_null(nn_fold(ctx, c3, (int64_t[2]){1, 1}, &(nn_fold_opts){{2, 2}, {0}, {1, 1}, {0}}));
  test_expect_error(ctx, AD_ERR_SHAPE, "has 2 x 2 sliding blocks, not the 9", NULL);
  cr_assert_null(nn_layer_forward(fo, c8, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "fold: input [1,8,8]: output_size (4, 4)", NULL);
  cr_assert_null(nn_layer_forward(fo, x4, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "fold: input [1,2,4,4] must be", NULL);
  cr_assert_not_null(nn_layer_forward(fo, c3, true), "%s", ad_last_error(ctx));
  ad_tape_reset(ctx);
  nn_layer_free(un), nn_layer_free(fo);
  ad_tensor_free(x4), ad_tensor_free(x2), ad_tensor_free(xi), ad_tensor_free(x0);
  ad_tensor_free(c3), ad_tensor_free(c5), ad_tensor_free(c8), ad_tensor_free(ci);
  ad_ctx_free(other);
}

Test(misc2, bilinear_bad_arguments_and_inputs) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  ad_ctx *other = ad_ctx_new();
  cr_assert_not_null(other);
  cr_assert_null(nn_bilinear_new(ctx, 0, 4, 2, true, AD_F32, &rng));
  test_expect_error(ctx, AD_ERR_ARG,
                    "bilinear: in1_features 0, in2_features 4 and out_features 2 must be in [1, "
                    "2^31 - 1]",
                    NULL);
  cr_assert_null(nn_bilinear_new(ctx, 3, 4, -1, true, AD_F32, &rng));
  test_expect_error(ctx, AD_ERR_ARG, "out_features -1 must be", NULL);
  cr_assert_null(nn_bilinear_new(ctx, 3, INT64_MAX, 1, true, AD_F32, &rng));
  test_expect_error(ctx, AD_ERR_ARG, "in2_features 9223372036854775807", NULL);
  cr_assert_null(nn_bilinear_new(ctx, 3, 4, 2, true, AD_I32, &rng));
  test_expect_error(ctx, AD_ERR_DTYPE, "bilinear: parameters must be float, got i32", NULL);
  cr_assert_null(nn_bilinear_new(ctx, 3, 4, 2, true, AD_F32, NULL));
  test_expect_error(ctx, AD_ERR_NULL, "bilinear: rng is NULL", NULL);
  cr_assert_null(nn_bilinear_new(NULL, 3, 4, 2, true, AD_F32, &rng));
  ad_tensor *x1 = ad_ones(ctx, AD_F32, 2, (int64_t[2]){4, 3});
  ad_tensor *x2 = ad_ones(ctx, AD_F32, 2, (int64_t[2]){4, 5});
  ad_tensor *x2b = ad_ones(ctx, AD_F32, 2, (int64_t[2]){3, 5});
  ad_tensor *x2c = ad_ones(ctx, AD_F32, 3, (int64_t[3]){1, 4, 5});
  ad_tensor *x2d = ad_ones(ctx, AD_F64, 2, (int64_t[2]){4, 5});
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 2, (int64_t[2]){4, 3});
  ad_tensor *w = ad_ones(ctx, AD_F32, 3, (int64_t[3]){2, 3, 5});
  ad_tensor *w2 = ad_ones(ctx, AD_F32, 3, (int64_t[3]){2, 5, 3});
  ad_tensor *w2d = ad_ones(ctx, AD_F32, 2, (int64_t[2]){3, 5});
  ad_tensor *b = ad_ones(ctx, AD_F32, 1, (int64_t[1]){2});
  ad_tensor *b3 = ad_ones(ctx, AD_F32, 1, (int64_t[1]){3});
  ad_tensor *gone = ad_ones(ctx, AD_F32, 2, (int64_t[2]){4, 3});
  ad_tensor *far = ad_ones(other, AD_F32, 2, (int64_t[2]){4, 3});
  cr_assert(x1 && x2 && x2b && x2c && x2d && xi && w && w2 && w2d && b && b3 && gone && far);
  ad_tensor_free(gone);
  cr_assert_not_null(nn_bilinear(ctx, x1, x2, w, b), "%s", ad_last_error(ctx));
  cr_assert_null(nn_bilinear(ctx, NULL, x2, w, b));
  test_expect_error(ctx, AD_ERR_NULL, "bilinear: input1 is NULL", NULL);
  cr_assert_null(nn_bilinear(ctx, x1, NULL, w, b));
  test_expect_error(ctx, AD_ERR_NULL, "bilinear: input2 is NULL", NULL);
  cr_assert_null(nn_bilinear(ctx, x1, x2, NULL, b));
  test_expect_error(ctx, AD_ERR_NULL, "bilinear: weight is NULL", NULL);
  cr_assert_null(nn_bilinear(ctx, gone, x2, w, b));
  test_expect_error(ctx, AD_ERR_STATE, "bilinear: input1 was freed", NULL);
  cr_assert_null(nn_bilinear(ctx, x1, x2, w, far));
  test_expect_error(ctx, AD_ERR_ARG, "bilinear: bias belongs to another context", NULL);
  cr_assert_null(nn_bilinear(ctx, x1, x2b, w, b));
  test_expect_error(ctx, AD_ERR_SHAPE,
                    "bilinear: input1 [4,3] and input2 [3,5] must be [..., in1] and [..., in2] "
                    "with the same batch dims",
                    NULL);
  cr_assert_null(nn_bilinear(ctx, x1, x2c, w, b));
  test_expect_error(ctx, AD_ERR_SHAPE, "input1 [4,3] and input2 [1,4,5]", NULL);
  cr_assert_null(nn_bilinear(ctx, x1, x2d, w, b));
  test_expect_error(ctx, AD_ERR_DTYPE, "bilinear: input2 [4,5] is f64, input1 [4,3] is f32", NULL);
  cr_assert_null(nn_bilinear(ctx, xi, x2, w, b));
  test_expect_error(ctx, AD_ERR_DTYPE, "bilinear: input1 [4,3] must be float, got i32", NULL);
  cr_assert_null(nn_bilinear(ctx, x1, x2, w2, b));
  test_expect_error(ctx, AD_ERR_SHAPE, "bilinear: weight [2,5,3] must be [out, 3, 5] for input1",
                    NULL);
  cr_assert_null(nn_bilinear(ctx, x1, x2, w2d, b));
  test_expect_error(ctx, AD_ERR_SHAPE, "bilinear: weight [3,5] must be [out, 3, 5]", NULL);
  cr_assert_null(nn_bilinear(ctx, x1, x2, w, b3));
  test_expect_error(ctx, AD_ERR_SHAPE, "bilinear: bias [3] must be [2]", NULL);
  cr_assert_null(nn_bilinear(NULL, x1, x2, w, b));
  /* the layer */
  nn_layer *l = nn_bilinear_new(ctx, 3, 5, 2, true, AD_F32, &rng), *u = nn_identity_new(ctx);
  cr_assert(l && u, "%s", ad_last_error(ctx));
  cr_assert_not_null(nn_bilinear_forward(l, x1, x2), "%s", ad_last_error(ctx));
  cr_assert_eq(nn_layer_output_shape(l, NULL), 2);
  cr_assert_null(nn_layer_forward(l, x1, true));
  test_expect_error(ctx, AD_ERR_ARG,
                    "bilinear: takes two inputs: call nn_bilinear_forward(l, x1, x2), not "
                    "nn_layer_forward or a Sequential",
                    NULL);
  cr_assert_null(nn_bilinear_forward(u, x1, x2));
  test_expect_error(ctx, AD_ERR_ARG, "bilinear_forward: identity is not a Bilinear", NULL);
  cr_assert_null(nn_bilinear_forward(l, x1, x2b));
  test_expect_error(ctx, AD_ERR_SHAPE, "bilinear: input1 [4,3] and input2 [3,5]", NULL);
  cr_assert_null(nn_bilinear_forward(l, x2, x1));
  test_expect_error(ctx, AD_ERR_SHAPE, "bilinear: weight [2,3,5] must be [out, 5, 3]", NULL);
  cr_assert_null(nn_bilinear_forward(l, gone, x2));
  test_expect_error(ctx, AD_ERR_STATE, "bilinear: input1 was freed", NULL);
  cr_assert_null(nn_bilinear_forward(l, x1, far));
  test_expect_error(ctx, AD_ERR_ARG, "bilinear: input2 belongs to another context", NULL);
  cr_assert_null(nn_bilinear_forward(l, x1, NULL));
  test_expect_error(ctx, AD_ERR_NULL, "bilinear: input2 is NULL", NULL);
  cr_assert_null(nn_bilinear_forward(NULL, x1, x2));
  ad_tape_reset(ctx);
  nn_layer_free(l), nn_layer_free(u);
  ad_tensor *ts[] = {x1, x2, x2b, x2c, x2d, xi, w, w2, w2d, b, b3};
  for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) ad_tensor_free(ts[k]);
  ad_ctx_free(other);
}

/* p < 1 with a difference exactly 0 (eps 0): torch's norm backward masks
 * those elements (slope 0); |d|^p's slope p |d|^(p - 1) is inf there and
 * gave NaN, also in a row whose norm is 0 and in triplet_margin_loss,
 * which shares the distance. */
Test(misc2, pairwise_distance_p_below_one_at_zero_differences) {
  ad_tensor *x1 = ad_from_data(ctx, AD_F64, 2, (int64_t[2]){2, 3}, (double[6]){1, 0, 2, 0, 0, 0});
  ad_tensor *x2 = ad_from_data(ctx, AD_F64, 2, (int64_t[2]){2, 3}, (double[6]){0, 0, 1, 0, 0, 0});
  ad_tensor *x3 = ad_from_data(ctx, AD_F64, 2, (int64_t[2]){1, 3}, (double[3]){3, 0, 0});
  cr_assert(x1 && x2 && x3, "%s", ad_last_error(ctx));
  ad_tensor_set_requires_grad(x1, true);
  ad_tensor_set_requires_grad(x2, true);
  ad_tensor_set_requires_grad(x3, true);
  ad_tensor *y = nn_pairwise_distance(ctx, x1, x2, 0.5, 0.0, false);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_float_eq(ad_tensor_get(y, 0), 4.0, 1e-12);
  cr_assert_float_eq(ad_tensor_get(y, 1), 0.0, 0.0);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  const double want[6] = {2, 0, 2, 0, 0, 0};
  for (int i = 0; i < 6; i++) {
    cr_expect_float_eq(ad_tensor_get(x1->grad, i), want[i], 1e-12, "x1 %d: %g", i,
                       ad_tensor_get(x1->grad, i));
    cr_expect_float_eq(ad_tensor_get(x2->grad, i), -want[i], 1e-12, "x2 %d: %g", i,
                       ad_tensor_get(x2->grad, i));
  }
  ad_tape_reset(ctx);
  ad_tensor_zero_grad(x1), ad_tensor_zero_grad(x2);
  /* torch: triplet_margin_loss(a, p, n, margin=10, p=0.5, eps=0, 'sum') is
   * 6, gradients [4, 0, 0], [-2, 0, -2], [-2, 0, 2] */
  ad_tensor *a = ad_narrow(ctx, x1, 0, 0, 1), *p = ad_narrow(ctx, x2, 0, 0, 1);
  ad_tensor *l = nn_triplet_margin_loss(ctx, a, p, x3, 10, 0.5, 0, false, NN_SUM);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_float_eq(ad_tensor_get(l, 0), 6.0, 1e-12);
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
  const double ga[3] = {4, 0, 0}, gp[3] = {-2, 0, -2}, gn[3] = {-2, 0, 2};
  for (int i = 0; i < 3; i++) {
    cr_expect_float_eq(ad_tensor_get(x1->grad, i), ga[i], 1e-12, "anchor %d", i);
    cr_expect_float_eq(ad_tensor_get(x2->grad, i), gp[i], 1e-12, "positive %d", i);
    cr_expect_float_eq(ad_tensor_get(x3->grad, i), gn[i], 1e-12, "negative %d", i);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x1), ad_tensor_free(x2), ad_tensor_free(x3);
}

/* p = 2 where a difference's square overflows (f32 3e38, f64 1e200): the
 * distance is inf and torch's norm backward d (dy / inf) gives slope 0;
 * 2 d dy would overflow first (inf * 0 = NaN). p = 3 gives NaN there in
 * torch too (its |d|^(p-2) d dy / n^(p-1) is inf / inf). */
Test(misc2, pairwise_distance_p2_where_the_square_overflows) {
  for (int dd = 0; dd < 2; dd++) {
    ad_dtype dt = dd ? AD_F64 : AD_F32;
    double big = dd ? 1e200 : 3e38;
    ad_tensor *x1 = ad_zeros(ctx, dt, 2, (int64_t[2]){1, 2});
    ad_tensor *x2 = ad_zeros(ctx, dt, 2, (int64_t[2]){1, 2});
    cr_assert(x1 && x2, "%s", ad_last_error(ctx));
    ad_tensor_set(x1, 0, big);
    ad_tensor_set(x1, 1, 1);
    ad_tensor_set_requires_grad(x1, true);
    for (int k = 0; k < 2; k++) {
      double p = k ? 3 : 2;
      ad_tensor *y = nn_pairwise_distance(ctx, x1, x2, p, 1e-6, false);
      cr_assert_not_null(y, "%s", ad_last_error(ctx));
      cr_assert(isinf(ad_tensor_get(y, 0)), "p %g: %g", p, ad_tensor_get(y, 0));
      cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
      double g0 = ad_tensor_get(x1->grad, 0), g1 = ad_tensor_get(x1->grad, 1);
      if (k)
        cr_assert(isnan(g0) && g1 == 0, "%s p 3: %g %g, torch nan 0", ad_dtype_name(dt), g0, g1);
      else
        cr_assert(g0 == 0 && g1 == 0, "%s p 2: %g %g, torch 0 0", ad_dtype_name(dt), g0, g1);
      ad_tape_reset(ctx);
      ad_tensor_zero_grad(x1);
    }
    ad_tensor_free(x1), ad_tensor_free(x2);
  }
}
