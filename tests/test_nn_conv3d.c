/* test_nn_conv3d.c: ad_conv3d, ad_conv_transpose3d and ad_conv_transpose1d
 * against PyTorch 1.13's F.conv3d, F.conv_transpose3d and
 * F.conv_transpose1d (tests/conv3d_fixtures.h, written by
 * tools/gen_conv3d_fixtures.py in float64 from inputs float32 holds
 * exactly: values and the gradients of sum(y * gy) in x, w and bias, f64 to
 * 1e-12 and f32 to 1e-5), gradcheck and gradgradcheck in float64, and the
 * errors of bad input; then the layers nn_conv3d_new,
 * nn_conv_transpose3d_new and nn_conv_transpose1d_new on the same cases,
 * their names, layouts, initialisation and reprs, PyTorch's state dicts
 * (tests/fixtures/torch_conv3d.safetensors, torch_convt1d.safetensors) and
 * their errors. */
#include "conv3d_fixtures.h"
#include "nn.h"
#include "nn_io.h"
#include "test_layer_values.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

TEST_TMPDIR_SUITE(conv3d, "nn-conv3d");

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
    QUICK_ASSERT(test_close(g, want[i], tol * (1 + fabs(want[i]))),
                 "%s %s[%lld] = %.17g, torch %.17g", cname, what, (long long)i, g, want[i]);
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

/* conv_transpose3d with the kernel's depth equal to its stride (no depth
 * padding, one group) folds the depth taps into one conv_transpose2d: the
 * same sums as the tap by tap path, which groups = 2 still takes. A
 * block-diagonal w with groups 1 (its zeros add nothing) gives the grouped
 * call's bits, and the same gradients. */
Test(conv3d, transpose_folding_depth_taps_gives_the_tap_by_tap_bits) {
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    double tol = d ? 1e-5 : 1e-12;
    int64_t xs[5] = {2, 4, 3, 3, 2}, wgs[5] = {4, 2, 2, 2, 2}, wds[5] = {4, 4, 2, 2, 2}, bs = 4;
    ad_tensor *x[2] = {leaf(dt, 5, xs, NULL), leaf(dt, 5, xs, NULL)};
    ad_tensor *wg = leaf(dt, 5, wgs, NULL), *wd = leaf(dt, 5, wds, NULL);
    ad_tensor *b[2] = {leaf(dt, 1, &bs, NULL), leaf(dt, 1, &bs, NULL)};
    for (int64_t i = 0; i < x[0]->size; i++) {
      double v = sin(0.7 * (double)i + 0.3);
      ad_tensor_set(x[0], i, v), ad_tensor_set(x[1], i, v);
    }
    for (int64_t i = 0; i < 4; i++) ad_tensor_set(b[0], i, 0.1 * (double)i - 0.2);
    for (int64_t i = 0; i < 4; i++) ad_tensor_set(b[1], i, 0.1 * (double)i - 0.2);
    for (int64_t i = 0; i < wg->size;
         i++) { /* w[c, o, k] = wg[c, o - 2 (c / 2), k] on the diagonal */
      int64_t c = i / 16, o = i / 8 % 2, k = i % 8;
      double v = cos(1.3 * (double)i);
      ad_tensor_set(wg, i, v);
      ad_tensor_set(wd, (c * 4 + 2 * (c / 2) + o) * 8 + k, v);
    }
    ad_conv3d_opts og = {.stride = {2, 2, 1}, .groups = 2}, od = {.stride = {2, 2, 1}};
    ad_tensor *y[2] = {ad_conv_transpose3d(ctx, x[0], wg, b[0], &og),
                       ad_conv_transpose3d(ctx, x[1], wd, b[1], &od)};
    cr_assert(y[0] && y[1], "%s", ad_last_error(ctx));
    cr_assert_eq(y[1]->shape[2], 6, "depth 3 at stride 2, kernel 2: 6");
    for (int64_t i = 0; i < y[0]->size; i++) {
      double a = ad_tensor_get(y[1], i), want = ad_tensor_get(y[0], i);
      QUICK_ASSERT(a == want, "dtype %d y[%lld]: %.17g, tap by tap %.17g", d, (long long)i, a,
                   want);
    }
    ad_tensor *gys[2];
    for (int v = 0; v < 2; v++) {
      ad_tensor *gy = gys[v] = leaf(dt, 5, y[v]->shape, NULL);
      for (int64_t i = 0; i < gy->size; i++) ad_tensor_set(gy, i, cos(0.37 * (double)i));
      cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y[v], gy)), NULL), AD_OK, "%s",
                   ad_last_error(ctx));
    }
    for (int64_t i = 0; i < x[0]->size; i++) {
      double a = ad_tensor_get(x[1]->grad, i), want = ad_tensor_get(x[0]->grad, i);
      QUICK_ASSERT(fabs(a - want) <= tol * (1 + fabs(want)), "dtype %d dx[%lld]: %.17g vs %.17g", d,
                   (long long)i, a, want);
    }
    for (int64_t i = 0; i < wg->size; i++) {
      int64_t c = i / 16, o = i / 8 % 2, k = i % 8;
      double a = ad_tensor_get(wd->grad, (c * 4 + 2 * (c / 2) + o) * 8 + k);
      double want = ad_tensor_get(wg->grad, i);
      QUICK_ASSERT(fabs(a - want) <= tol * (1 + fabs(want)), "dtype %d dw[%lld]: %.17g vs %.17g", d,
                   (long long)i, a, want);
    }
    for (int64_t i = 0; i < 4; i++)
      cr_assert_float_eq(ad_tensor_get(b[1]->grad, i), ad_tensor_get(b[0]->grad, i), tol * 100,
                         "db[%lld]", (long long)i);
    ad_tape_reset(ctx);
    for (int v = 0; v < 2; v++) ad_tensor_free(x[v]), ad_tensor_free(b[v]), ad_tensor_free(gys[v]);
    ad_tensor_free(wg), ad_tensor_free(wd);
  }
}

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

/* --------------------------------------------------------------- layers */

/* The case's layer (its padding is symmetric, as the layers take it). */
static nn_layer *case_layer(const c3_case *c, ad_dtype dt) {
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  int64_t in = c->nd == wrank(c) ? c->xs[1] : c->xs[0];
  int64_t out = c->kind == 0 ? c->ws[0] : c->ws[1] * c->groups;
  if (c->kind == 2) {
    nn_conv_transpose1d_opts o = {.stride = c->stride[0],
                                  .padding = c->padding[0],
                                  .output_padding = c->output_padding[0],
                                  .dilation = c->dilation[0],
                                  .groups = c->groups,
                                  .no_bias = !c->b,
                                  .dtype = dt};
    return nn_conv_transpose1d_new(ctx, in, out, c->ws[2], &rng, &o);
  }
  nn_conv3d_opts o = {.same = c->same, .groups = c->groups, .no_bias = !c->b, .dtype = dt};
  for (int k = 0; k < 3; k++) {
    o.stride[k] = c->stride[k];
    o.padding[k] = c->padding[2 * k];
    o.dilation[k] = c->dilation[k];
    o.output_padding[k] = c->output_padding[k];
  }
  return (c->kind ? nn_conv_transpose3d_new : nn_conv3d_new)(ctx, in, out, c->ws[2], c->ws[3],
                                                             c->ws[4], &rng, &o);
}

static void layers_match(ad_dtype dt) {
  double tol = dt == AD_F64 ? 1e-12 : 1e-5;
  for (int k = 0; k < N_CASES; k++) {
    const c3_case *c = &c3_cases[k];
    nn_layer *l = case_layer(c, dt);
    cr_assert_not_null(l, "%s: %s", c->name, ad_last_error(ctx));
    nn_params *p = nn_layer_params(l);
    ad_tensor *w = nn_params_find(p, "weight"), *b = nn_params_find(p, "bias");
    cr_assert(w && (b != NULL) == (c->b != NULL), "%s", c->name);
    cr_assert_eq(w->ndim, wrank(c), "%s", c->name);
    for (int d = 0; d < w->ndim; d++) cr_assert_eq(w->shape[d], c->ws[d], "%s dim %d", c->name, d);
    for (int64_t i = 0; i < w->size; i++) ad_tensor_set(w, i, c->w[i]);
    for (int64_t i = 0; b && i < b->size; i++) ad_tensor_set(b, i, c->b[i]);
    ad_tensor *x = leaf(dt, c->nd, c->xs, c->x);
    ad_tensor *y = nn_layer_forward(l, x, true);
    expect_values(y, c->y, c->ny, tol, c->name, "layer y");
    ad_tensor *gy = leaf(dt, y->ndim, y->shape, c->gy);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, gy)), NULL), AD_OK, "%s",
                 ad_last_error(ctx));
    expect_values(x->grad, c->dx, count(c->nd, c->xs), tol, c->name, "layer dx");
    expect_values(w->grad, c->dw, w->size, tol, c->name, "layer dweight");
    if (b) expect_values(b->grad, c->db, b->size, tol, c->name, "layer dbias");
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(gy);
    nn_layer_free(l);
  }
}

Test(conv3d, layers_match_pytorch_f64) { layers_match(AD_F64); }
Test(conv3d, layers_match_pytorch_f32) { layers_match(AD_F32); }

/* weight's and bias's names, shapes and PyTorch's default bound. */
static void expect_init(nn_layer *l, int nd, const int64_t *ws, int64_t nb, double fan_in) {
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), 2);
  cr_assert_str_eq(nn_params_name(p, 0), "weight");
  cr_assert_str_eq(nn_params_name(p, 1), "bias");
  ad_tensor *w = nn_params_tensor(p, 0), *b = nn_params_tensor(p, 1);
  test_expect_shape(ctx, w, nd, ws, "weight");
  test_expect_shape(ctx, b, 1, &nb, "bias");
  double bound = 1 / sqrt(fan_in), wmax = 0, bmax = 0;
  for (int64_t i = 0; i < w->size; i++) wmax = fmax(wmax, fabs(ad_tensor_get(w, i)));
  for (int64_t i = 0; i < b->size; i++) bmax = fmax(bmax, fabs(ad_tensor_get(b, i)));
  cr_assert(wmax <= bound && wmax > 0.8 * bound, "weights within 1/sqrt(fan_in): %g", wmax);
  cr_assert(bmax <= bound && bmax > 0, "biases within 1/sqrt(fan_in): %g", bmax);
  nn_layer_free(l);
}

Test(conv3d, layers_have_pytorch_names_layouts_and_init) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t w3[5] = {6, 2, 2, 3, 4}, wt3[5] = {4, 3, 2, 3, 4}, wt1[3] = {4, 3, 5};
  expect_init(nn_conv3d_new(ctx, 4, 6, 2, 3, 4, &rng, &(nn_conv3d_opts){.groups = 2}), 5, w3, 6,
              2.0 * 24);
  expect_init(nn_conv_transpose3d_new(ctx, 4, 6, 2, 3, 4, &rng, &(nn_conv3d_opts){.groups = 2}), 5,
              wt3, 6, 3.0 * 24);
  expect_init(nn_conv_transpose1d_new(ctx, 4, 6, 5, &rng, &(nn_conv_transpose1d_opts){.groups = 2}),
              3, wt1, 6, 3.0 * 5);
  nn_layer *l = nn_conv3d_new(
      ctx, 2, 2, 1, 1, 1, NULL,
      &(nn_conv3d_opts){.no_bias = true, .weight_init = nn_init_make(NN_INIT_CONSTANT, 0.5, 0)});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_params_count(nn_layer_params(l)), 1);
  cr_assert_eq(ad_tensor_get(nn_params_tensor(nn_layer_params(l), 0), 3), 0.5);
  nn_layer_free(l);
}

static void expect_desc(nn_layer *l, const char *want) { test_expect_desc(ctx, l, want); }

/* PyTorch 1.13's reprs of the same modules, under our kinds' names. */
Test(conv3d, describe_is_pytorch_repr) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  expect_desc(nn_conv3d_new(ctx, 2, 4, 3, 3, 3, &rng, NULL),
              "conv3d(2, 4, kernel_size=(3, 3, 3), stride=(1, 1, 1))");
  expect_desc(nn_conv3d_new(ctx, 4, 8, 2, 3, 3, &rng,
                            &(nn_conv3d_opts){.stride = {1, 2, 2},
                                              .padding = {1, 0, 1},
                                              .dilation = {2, 2, 2},
                                              .groups = 2,
                                              .no_bias = true}),
              "conv3d(4, 8, kernel_size=(2, 3, 3), stride=(1, 2, 2), padding=(1, 0, 1), "
              "dilation=(2, 2, 2), groups=2, bias=False)");
  expect_desc(nn_conv3d_new(ctx, 4, 8, 3, 3, 3, &rng, &(nn_conv3d_opts){.same = true}),
              "conv3d(4, 8, kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=same)");
  expect_desc(nn_conv_transpose3d_new(
                  ctx, 4, 8, 2, 2, 2, &rng,
                  &(nn_conv3d_opts){.stride = {2, 2, 2}, .output_padding = {1, 0, 1}, .groups = 4}),
              "conv_transpose3d(4, 8, kernel_size=(2, 2, 2), stride=(2, 2, 2), "
              "output_padding=(1, 0, 1), groups=4)");
  expect_desc(nn_conv_transpose1d_new(ctx, 2, 4, 3, &rng, NULL),
              "conv_transpose1d(2, 4, kernel_size=(3,), stride=(1,))");
  expect_desc(nn_conv_transpose1d_new(ctx, 2, 4, 3, &rng,
                                      &(nn_conv_transpose1d_opts){.stride = 2,
                                                                  .padding = 1,
                                                                  .output_padding = 1,
                                                                  .dilation = 2,
                                                                  .groups = 2,
                                                                  .no_bias = true}),
              "conv_transpose1d(2, 4, kernel_size=(3,), stride=(2,), padding=(1,), "
              "dilation=(2,), output_padding=(1,), groups=2, bias=False)");
}

/* ----------------------------------------------------------- checkpoint */

/* The generator's models (see tools/gen_conv3d_fixtures.py). */
static nn_model *ck_model(bool one_d) {
  ad_rng rng;
  ad_rng_seed(&rng, 9);
  nn_model *m = nn_sequential_new(ctx);
  if (one_d) {
    nn_model_add(m, nn_conv_transpose1d_new(ctx, 2, 4, 3, &rng,
                                            &(nn_conv_transpose1d_opts){
                                                .stride = 2, .padding = 1, .output_padding = 1}));
    nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
    cr_assert_eq(
        nn_model_add(m, nn_conv_transpose1d_new(ctx, 4, 2, 2, &rng,
                                                &(nn_conv_transpose1d_opts){
                                                    .groups = 2, .no_bias = true, .dilation = 2})),
        AD_OK, "%s", ad_last_error(ctx));
    return m;
  }
  nn_model_add(m, nn_conv3d_new(ctx, 2, 3, 2, 3, 3, &rng,
                                &(nn_conv3d_opts){.stride = {1, 2, 2}, .padding = {1, 1, 1}}));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_conv_transpose3d_new(
                      ctx, 3, 2, 2, 2, 2, &rng,
                      &(nn_conv3d_opts){.stride = {2, 2, 2}, .output_padding = {1, 0, 1}}));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  cr_assert_eq(
      nn_model_add(m, nn_conv3d_new(ctx, 2, 2, 3, 3, 3, &rng,
                                    &(nn_conv3d_opts){.same = true, .groups = 2, .no_bias = true})),
      AD_OK, "%s", ad_last_error(ctx));
  return m;
}

static void check_checkpoint(bool one_d, const char *file, int nd, const int64_t *xs,
                             const double *x, const double *y, int64_t ny, int np,
                             const char *const *names) {
  nn_model *m = ck_model(one_d);
  cr_assert_eq(nn_params_count(nn_model_params(m)), np);
  for (int i = 0; i < np; i++) cr_assert_str_eq(nn_params_name(nn_model_params(m), i), names[i]);
  cr_assert_eq(nn_model_load(m, NULL, file), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor *xt = leaf(AD_F32, nd, xs, x);
  nn_model_set_training(m, false);
  expect_values(nn_model_forward(m, xt), y, ny, 1e-5, file, "loaded model");
  ad_tape_reset(ctx);
  const char *path = test_path("ck.safetensors");
  cr_assert_eq(nn_model_save(m, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  nn_model *m2 = ck_model(one_d);
  cr_assert_eq(nn_model_load(m2, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  nn_model_set_training(m2, false);
  ad_tensor *y1 = nn_model_forward(m, xt), *y2 = nn_model_forward(m2, xt);
  cr_assert(y1 && y2, "%s", ad_last_error(ctx));
  cr_assert_eq(memcmp(y1->data, y2->data, (size_t)y1->size * sizeof(float)), 0);
  ad_tape_reset(ctx);
  ad_tensor_free(xt);
  nn_model_free(m);
  nn_model_free(m2);
}

/* PyTorch's state dicts load under its names and give PyTorch's outputs;
 * saved and loaded into fresh models, the same outputs again. */
Test(conv3d, pytorch_state_dicts_load_and_round_trip) {
  static const char *const n3[] = {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight"};
  static const char *const n1[] = {"0.weight", "0.bias", "2.weight"};
  int64_t x3[5] = {2, 2, 3, 5, 4}, x1[3] = {2, 2, 5};
  check_checkpoint(false, "tests/fixtures/torch_conv3d.safetensors", 5, x3, ck_x, ck_y,
                   (int64_t)(sizeof ck_y / sizeof ck_y[0]), 5, n3);
  check_checkpoint(true, "tests/fixtures/torch_convt1d.safetensors", 3, x1, ck1_x, ck1_y,
                   (int64_t)(sizeof ck1_y / sizeof ck1_y[0]), 3, n1);
}

/* -------------------------------------------------------- layer misuse */

Test(conv3d, layer_arguments_are_refused_when_made) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  cr_assert_null(nn_conv3d_new(ctx, 3, 4, 3, 3, 3, &rng, &(nn_conv3d_opts){.groups = 2}));
  expect_status_msg(ctx, AD_ERR_ARG, "conv3d: channels 3 -> 4, kernel 3x3x3 and groups 2");
  cr_assert_null(nn_conv_transpose3d_new(ctx, 3, 4, 3, 0, 3, &rng, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "conv_transpose3d: channels 3 -> 4, kernel 3x0x3");
  cr_assert_null(nn_conv_transpose1d_new(ctx, 0, 4, 3, &rng, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "conv_transpose1d: channels 0 -> 4, kernel 3");
  cr_assert_null(nn_conv3d_new(ctx, 3, 4, 1, 1, 1, &rng, &(nn_conv3d_opts){.dtype = AD_I32}));
  expect_status_msg(ctx, AD_ERR_DTYPE, "conv3d: parameters must be float, got i32");
  cr_assert_null(nn_conv3d_new(ctx, 3, 4, 1, 1, 1, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "rng");
  static const struct {
    int kind; /* 0 conv3d, 1 conv_transpose3d */
    nn_conv3d_opts o;
    const char *want;
  } bad[] = {
      {0, {.stride = {1, -1, 1}}, "conv3d: stride and dilation must be >= 1 (0 means 1) (axis 1"},
      {0, {.padding = {0, 0, -1}}, "conv3d: padding and output_padding must be >= 0 (axis 2"},
      {1, {.dilation = {INT64_C(1) << 41}}, "conv_transpose3d: stride, dilation and padding must"},
      {0, {.output_padding = {1}}, "conv3d: output_padding is for transposed convolutions only"},
      {1, {.stride = {2, 2, 2}, .output_padding = {0, 2}}, "output_padding must be smaller"},
      {0, {.same = true, .stride = {1, 1, 2}}, "conv3d: padding 'same' needs stride 1"},
      {1, {.same = true}, "conv_transpose3d: padding 'same' is for conv3d only"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    nn_layer *l = bad[k].kind ? nn_conv_transpose3d_new(ctx, 2, 2, 2, 2, 2, &rng, &bad[k].o)
                              : nn_conv3d_new(ctx, 2, 2, 2, 2, 2, &rng, &bad[k].o);
    cr_assert_null(l, "case %zu", k);
    expect_status_msg(ctx, AD_ERR_ARG, bad[k].want);
  }
  cr_assert_null(nn_conv_transpose1d_new(ctx, 2, 2, 3, &rng,
                                         &(nn_conv_transpose1d_opts){.output_padding = 1}));
  expect_status_msg(ctx, AD_ERR_ARG, "conv_transpose1d: output_padding must be smaller");
  /* a kernel too large for a tensor: the error, without overflow first */
  int64_t big = INT64_C(1) << 40;
  cr_assert_null(nn_conv3d_new(ctx, 1, 1, big, big, big, &rng, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "is too large");
  cr_assert_null(nn_conv_transpose1d_new(ctx, big, 1, INT64_MAX, &rng, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "is too large");
  cr_assert_null(nn_conv3d_new(NULL, 1, 1, 1, 1, 1, &rng, NULL));
  cr_assert_null(nn_conv_transpose3d_new(NULL, 1, 1, 1, 1, 1, &rng, NULL));
  cr_assert_null(nn_conv_transpose1d_new(NULL, 1, 1, 1, &rng, NULL));
}

Test(conv3d, layer_inputs_are_checked_naming_the_layer) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_conv3d_new(ctx, 3, 4, 3, 3, 3, &rng, NULL));
  nn_layer *t1 = nn_conv_transpose1d_new(ctx, 2, 2, 3, &rng, NULL);
  cr_assert_not_null(t1);
  int64_t s1[5] = {2, 1, 4, 4, 4}, s2[3] = {3, 4, 4}, s3[5] = {1, 3, 2, 4, 4}, s4[3] = {2, 3, 5};
  ad_tensor *x1 = ad_ones(ctx, AD_F32, 5, s1), *x2 = ad_ones(ctx, AD_F32, 3, s2),
            *x3 = ad_ones(ctx, AD_F32, 5, s3), *x4 = ad_ones(ctx, AD_F32, 3, s4);
  cr_assert_null(nn_model_forward(m, x1));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "conv3d '0': input [2,1,4,4,4] must be [N, 3, D, H, W] or [3, D, H, W]");
  cr_assert_null(nn_model_forward(m, x2));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv3d '0': input [3,4,4] must be");
  cr_assert_null(nn_model_forward(m, x3)); /* a kernel of 3 over D = 2 */
  expect_status_msg(ctx, AD_ERR_SHAPE, "spans more than the padded input along D");
  cr_assert_null(nn_layer_forward(t1, x4, true));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "conv_transpose1d: input [2,3,5] must be [N, 2, L] or [2, L]");
  /* an unbatched input gives an unbatched output */
  int64_t u[4] = {3, 3, 4, 5}, want[4] = {4, 1, 2, 3};
  ad_tensor *xu = ad_ones(ctx, AD_F32, 4, u);
  test_expect_shape(ctx, nn_model_forward(m, xu), 4, want, "unbatched");
  ad_tape_reset(ctx);
  nn_model_free(m);
  nn_layer_free(t1);
  ad_tensor_free(x1), ad_tensor_free(x2), ad_tensor_free(x3), ad_tensor_free(x4),
      ad_tensor_free(xu);
}
