/* test_nn_conv3d.c: ad_conv3d, ad_conv_transpose3d and ad_conv_transpose1d
 * against PyTorch 1.13's F.conv3d, F.conv_transpose3d and
 * F.conv_transpose1d (tests/conv3d_fixtures.h, written by
 * tools/gen_conv3d_fixtures.py in float64 from inputs float32 holds
 * exactly: values and the gradients of sum(y * gy) in x, w and bias, f64 to
 * 1e-12 and f32 to 1e-5), gradcheck and gradgradcheck in float64, and the
 * errors of bad input. */
#include "conv3d_fixtures.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

TEST_CTX_SUITE(conv3d);

#define N_CASES ((int)(sizeof c3_cases / sizeof c3_cases[0]))

static ad_tensor *leaf(ad_dtype dt, int nd, const int64_t *shape, const double *v) {
  ad_tensor *t = ad_zeros(ctx, dt, nd, shape);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  for (int64_t i = 0; v && i < t->size; i++) cr_assert_eq(ad_tensor_set(t, i, v[i]), AD_OK);
  ad_tensor_set_requires_grad(t, true);
  return t;
}

/* t's n values against want's, to tol (1 + |want|). */
static void expect_values(const ad_tensor *t, const double *want, int64_t n, double tol,
                          const char *cname, const char *what) {
  cr_assert_not_null(t, "%s %s: NULL (%s)", cname, what, ad_last_error(ctx));
  cr_assert_eq(t->size, n, "%s %s: %lld elements, want %lld", cname, what, (long long)t->size,
               (long long)n);
  for (int64_t i = 0; i < n; i++) {
    double g = ad_tensor_get(t, i);
    QUICK_ASSERT(fabs(g - want[i]) <= tol * (1 + fabs(want[i])), "%s %s[%lld] = %.17g, torch %.17g",
                 cname, what, (long long)i, g, want[i]);
  }
}

static int64_t count(int nd, const int64_t *s) {
  int64_t n = 1;
  for (int d = 0; d < nd; d++) n *= s[d];
  return n;
}

/* The case's op on x, w, b (b may be NULL). */
static ad_tensor *apply_case(const c3_case *c, ad_tensor *x, ad_tensor *w, ad_tensor *b) {
  if (c->kind == 2) {
    ad_conv_transpose1d_opts o = {.stride = c->stride[0],
                                  .padding = {c->padding[0], c->padding[1]},
                                  .dilation = c->dilation[0],
                                  .groups = c->groups,
                                  .output_padding = c->output_padding[0]};
    return ad_conv_transpose1d(ctx, x, w, b, &o);
  }
  ad_conv3d_opts o = {.groups = c->groups, .same = c->same};
  for (int k = 0; k < 3; k++) {
    o.stride[k] = c->stride[k];
    o.dilation[k] = c->dilation[k];
    o.output_padding[k] = c->output_padding[k];
  }
  for (int k = 0; k < 6; k++) o.padding[k] = c->padding[k];
  return c->kind ? ad_conv_transpose3d(ctx, x, w, b, &o) : ad_conv3d(ctx, x, w, b, &o);
}

static int wrank(const c3_case *c) { return c->kind == 2 ? 3 : 5; }

static void cases_match(ad_dtype dt) {
  double tol = dt == AD_F64 ? 1e-12 : 1e-5;
  for (int k = 0; k < N_CASES; k++) {
    const c3_case *c = &c3_cases[k];
    int wn = wrank(c);
    int64_t bs[1] = {c->kind == 0 ? c->ws[0] : c->ws[1] * c->groups};
    ad_tensor *x = leaf(dt, c->nd, c->xs, c->x), *w = leaf(dt, wn, c->ws, c->w);
    ad_tensor *b = c->b ? leaf(dt, 1, bs, c->b) : NULL;
    ad_tensor *y = apply_case(c, x, w, b);
    expect_values(y, c->y, c->ny, tol, c->name, "y");
    cr_assert_eq(y->ndim, c->nd, "%s: rank %d", c->name, y->ndim);
    ad_tensor *gy = leaf(dt, y->ndim, y->shape, c->gy);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, gy)), NULL), AD_OK, "%s",
                 ad_last_error(ctx));
    expect_values(x->grad, c->dx, count(c->nd, c->xs), tol, c->name, "dx");
    expect_values(w->grad, c->dw, count(wn, c->ws), tol, c->name, "dw");
    if (b) expect_values(b->grad, c->db, bs[0], tol, c->name, "db");
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(b), ad_tensor_free(gy);
  }
}

Test(conv3d, matches_pytorch_f64) { cases_match(AD_F64); }
Test(conv3d, matches_pytorch_f32) { cases_match(AD_F32); }

/* ------------------------------------------------------------ gradcheck */

static ad_tensor *run_case(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c;
  return apply_case(ud, in[0], in[1], n > 2 ? in[2] : NULL);
}

/* First and second order in x, w and bias, on each case's shapes, with
 * random values (the second derivatives of a bilinear op are not zero). */
Test(conv3d, gradcheck_first_and_second_order) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  for (int k = 0; k < N_CASES; k++) {
    const c3_case *c = &c3_cases[k];
    /* the second order on the smaller cases only: each element costs a
     * double backward */
    bool second = count(c->nd, c->xs) <= 300;
    int64_t bs[1] = {c->kind == 0 ? c->ws[0] : c->ws[1] * c->groups};
    ad_tensor *in[3] = {ad_rand(ctx, &rng, AD_F64, c->nd, c->xs, -1, 1),
                        ad_rand(ctx, &rng, AD_F64, wrank(c), c->ws, -1, 1),
                        c->b ? ad_rand(ctx, &rng, AD_F64, 1, bs, -1, 1) : NULL};
    int n = c->b ? 3 : 2;
    for (int i = 0; i < n; i++) ad_tensor_set_requires_grad(in[i], true);
    ad_check_report r;
    cr_assert_eq(ad_gradcheck(ctx, run_case, (void *)c, n, in, NULL, &r), AD_OK, "%s: %s", c->name,
                 ad_last_error(ctx));
    cr_assert(r.passed, "%s first order: input %d [%lld] %g vs %g", c->name, r.input,
              (long long)r.index, r.analytic, r.numeric);
    if (second) {
      cr_assert_eq(ad_gradgradcheck(ctx, run_case, (void *)c, n, in, NULL, &r), AD_OK, "%s: %s",
                   c->name, ad_last_error(ctx));
      cr_assert(r.passed, "%s second order: input %d [%lld] %g vs %g", c->name, r.input,
                (long long)r.index, r.analytic, r.numeric);
    }
    for (int i = 0; i < n; i++) ad_tensor_free(in[i]);
  }
}

/* --------------------------------------------------------------- misuse */

Test(conv3d, bad_inputs_are_refused_with_the_op_named) {
  int64_t xs[5] = {1, 2, 4, 4, 4}, ws[5] = {3, 2, 2, 2, 2}, w4[4] = {3, 2, 2, 2};
  int64_t wt[5] = {2, 3, 2, 2, 2}, bs[1] = {3}, b4[1] = {4};
  ad_tensor *x = ad_ones(ctx, AD_F32, 5, xs), *w = ad_ones(ctx, AD_F32, 5, ws);
  ad_tensor *wbad = ad_ones(ctx, AD_F32, 4, w4), *wtr = ad_ones(ctx, AD_F32, 5, wt);
  ad_tensor *b = ad_ones(ctx, AD_F32, 1, bs), *bbad = ad_ones(ctx, AD_F32, 1, b4);
  ad_tensor *x64 = ad_ones(ctx, AD_F64, 5, xs), *xi = ad_zeros(ctx, AD_I32, 5, xs);
  cr_assert(x && w && wbad && wtr && b && bbad && x64 && xi);
  /* NULL */
  cr_assert_null(ad_conv3d(NULL, x, w, NULL, NULL));
  cr_assert_null(ad_conv3d(ctx, NULL, w, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "conv3d: x is NULL");
  cr_assert_null(ad_conv_transpose3d(ctx, x, NULL, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "conv_transpose3d: w is NULL");
  cr_assert_null(ad_conv_transpose1d(ctx, NULL, w, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "conv_transpose1d: x is NULL");
  /* ranks, channels, groups, bias */
  cr_assert_null(ad_conv3d(ctx, x, wbad, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv3d: x must be [N, C, D, H, W] or [C, D, H, W]");
  cr_assert_null(ad_conv3d(ctx, wbad, w, NULL, NULL)); /* a 4-D x: 3 channels, w takes 2 */
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv3d: x [3,2,2,2] has 3 channels");
  cr_assert_null(ad_conv3d(ctx, x, wtr, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv3d: x [1,2,4,4,4] has 2 channels, but w [2,3,2,2,2]");
  cr_assert_null(ad_conv3d(ctx, x, w, NULL, &(ad_conv3d_opts){.groups = 2}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv3d: groups 2 must divide");
  cr_assert_null(ad_conv3d(ctx, x, w, bbad, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv3d: bias [4] must be [3]");
  cr_assert_null(ad_conv_transpose3d(ctx, x, w, NULL, NULL)); /* w [3,...] on 2 channels */
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv_transpose3d: x [1,2,4,4,4] has 2 channels");
  cr_assert_null(ad_conv_transpose3d(ctx, x, wtr, NULL, &(ad_conv3d_opts){.groups = 4}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv_transpose3d: groups 4 must divide");
  cr_assert_null(ad_conv_transpose3d(ctx, x, wtr, b, &(ad_conv3d_opts){.groups = 2}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv_transpose3d: bias [3] must be [6]");
  /* dtypes */
  cr_assert_null(ad_conv3d(ctx, x64, w, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_DTYPE, "conv3d: dtypes differ");
  cr_assert_null(ad_conv3d(ctx, xi, w, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_DTYPE, "conv3d: input 0 is i32");
  /* a kernel larger than the padded input, an empty output */
  int64_t big[5] = {3, 2, 5, 2, 2};
  ad_tensor *wbig = ad_ones(ctx, AD_F32, 5, big);
  cr_assert_null(ad_conv3d(ctx, x, wbig, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "spans more than the padded input along D");
  cr_assert_null(ad_conv3d(ctx, x, w, NULL, &(ad_conv3d_opts){.dilation = {1, 1, 4}}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "along W");
  cr_assert_null(ad_conv_transpose3d(ctx, x, wtr, NULL, &(ad_conv3d_opts){.padding = {3, 3}}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "gives an output of -1x5x5");
  /* options */
  static const struct {
    bool transpose;
    ad_conv3d_opts o;
    const char *want;
  } bad[] = {
      {false, {.stride = {1, -1, 1}}, "conv3d: stride (1, -1, 1) and dilation (0, 0, 0) must be"},
      {false, {.dilation = {0, 0, -2}}, "must be at least 1"},
      {false, {.padding = {0, 0, 0, 0, -1, 0}}, "conv3d: padding (0, 0, 0, 0, -1, 0)"},
      {false, {.groups = -1}, "conv3d: groups -1 must be in 1..2^40"},
      {false, {.stride = {INT64_MAX, 1, 1}}, "conv3d: stride 9223372036854775807 is out of range"},
      {true, {.padding = {INT64_C(1) << 41}}, "conv_transpose3d: padding 2199023255552 is out"},
      {false, {.same = true, .stride = {1, 2, 1}}, "conv3d: 'same' padding needs stride 1"},
      {true, {.same = true}, "conv_transpose3d: 'same' padding is not defined"},
      {false, {.output_padding = {0, 1, 0}}, "applies to conv_transpose3d only"},
      {true, {.output_padding = {1, 0, 0}}, "conv_transpose3d: output_padding (1, 0, 0) must be"},
      {true, {.stride = {2, 2, 2}, .output_padding = {0, 0, -1}}, "output_padding (0, 0, -1)"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    ad_tensor *y = bad[k].transpose ? ad_conv_transpose3d(ctx, x, wtr, NULL, &bad[k].o)
                                    : ad_conv3d(ctx, x, w, NULL, &bad[k].o);
    cr_assert_null(y, "case %zu", k);
    expect_status_msg(ctx, AD_ERR_ARG, bad[k].want);
  }
  /* an output too large for a tensor, without overflow (UBSan) on the way */
  cr_assert_null(ad_conv_transpose3d(
      ctx, x, wtr, NULL, &(ad_conv3d_opts){.stride = {INT64_C(1) << 40, INT64_C(1) << 40, 1}}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "too large for a tensor");
  cr_assert_null(ad_conv3d(ctx, x, w, NULL,
                           &(ad_conv3d_opts){.padding = {INT64_C(1) << 40, INT64_C(1) << 40,
                                                         INT64_C(1) << 40, INT64_C(1) << 40}}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "too large for a tensor");
  cr_assert_null(ad_conv3d(ctx, x, wbig, NULL,
                           &(ad_conv3d_opts){.same = true, .dilation = {INT64_C(1) << 40}}));
  expect_status_msg(ctx, AD_ERR_ARG, "'same' padding of a 5x2x2 kernel");
  /* the largest dilation with 'same': only the middle taps reach x */
  ad_tensor *ys =
      ad_conv3d(ctx, x, w, b, &(ad_conv3d_opts){.same = true, .dilation = {INT64_C(1) << 40}});
  int64_t want_s[5] = {1, 3, 4, 4, 4};
  test_expect_shape(ctx, ys, 5, want_s, "same at dilation 2^40");
  /* empty kernel or volume */
  int64_t e[5] = {1, 2, 0, 4, 4}, ek[5] = {3, 2, 2, 0, 2};
  ad_tensor *xe = ad_zeros(ctx, AD_F32, 5, e), *we = ad_zeros(ctx, AD_F32, 5, ek);
  cr_assert_null(ad_conv3d(ctx, xe, w, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv3d: the volume of x [1,2,0,4,4] is empty");
  cr_assert_null(ad_conv3d(ctx, x, we, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv3d: the kernel of w [3,2,2,0,2] is empty");
  /* an empty batch is an empty output, as PyTorch */
  int64_t z[5] = {0, 2, 4, 4, 4};
  ad_tensor *xz = ad_zeros(ctx, AD_F32, 5, z);
  ad_tensor *yz = ad_conv3d(ctx, xz, w, b, NULL);
  int64_t want_z[5] = {0, 3, 3, 3, 3};
  test_expect_shape(ctx, yz, 5, want_z, "empty batch");
  /* freed tensors and another context's */
  ad_ctx *other = ad_ctx_new();
  cr_assert_not_null(other);
  ad_tensor *xo = ad_ones(other, AD_F32, 5, xs);
  cr_assert_null(ad_conv3d(ctx, xo, w, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "conv3d: x belongs to another context");
  cr_assert_null(ad_conv_transpose3d(ctx, x, wtr, xo, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "conv_transpose3d: bias belongs to another context");
  cr_assert_null(ad_conv_transpose1d(ctx, xo, w, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "conv_transpose1d: x belongs to another context");
  ad_ctx_free(other);
  ad_tensor *dead = ad_ones(ctx, AD_F32, 5, ws);
  ad_tensor_free(dead);
  cr_assert_null(ad_conv3d(ctx, x, dead, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_STATE, "conv3d: w was freed");
  /* conv_transpose1d: ranks, and conv_transpose2d's errors in 1-D terms */
  int64_t x1s[3] = {2, 3, 5}, w1s[3] = {3, 2, 3}, w1b[3] = {4, 2, 3};
  ad_tensor *x1 = ad_ones(ctx, AD_F32, 3, x1s), *w1 = ad_ones(ctx, AD_F32, 3, w1s),
            *w1bad = ad_ones(ctx, AD_F32, 3, w1b);
  cr_assert_null(ad_conv_transpose1d(ctx, x1, w, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv_transpose1d: x must be [N, C, L] or [C, L]");
  cr_assert_null(ad_conv_transpose1d(ctx, x1, w1bad, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv_transpose1d of x [2,3,5], w [4,2,3] (as 4-D, H = 1)");
  cr_assert_null(
      ad_conv_transpose1d(ctx, x1, w1, NULL, &(ad_conv_transpose1d_opts){.output_padding = 1}));
  expect_status_msg(ctx, AD_ERR_ARG, "output_padding");
  cr_assert_null(ad_conv_transpose1d(ctx, x1, w1, NULL, &(ad_conv_transpose1d_opts){.stride = -2}));
  expect_status_msg(ctx, AD_ERR_ARG, "conv_transpose1d of x [2,3,5]");
  ad_tape_reset(ctx);
}
