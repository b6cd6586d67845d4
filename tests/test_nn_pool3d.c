/* test_nn_pool3d.c: 3-D pooling, ad_max_pool3d / ad_avg_pool3d and the
 * layers nn_max_pool3d_new, nn_avg_pool3d_new, nn_adaptive_avg_pool3d_new.
 * Values and input gradients (of sum(y * gy)) against PyTorch 1.13 in
 * tests/pool3d_fixtures.h, written by tools/gen_pool3d_fixtures.py
 * (strides, padding, dilation, ceil_mode, count_include_pad,
 * divisor_override, unbatched inputs, ties, NaN and -inf): float64 to
 * 1e-12 and float32 against PyTorch's float32 run to 1e-5. Also first- and
 * second-order derivatives against central differences, the functional
 * ops against the layers, PyTorch's reprs, and bad arguments and inputs. */
#include "nn.h"
#include "pool3d_fixtures.h"
#include "test_alloc.h"
#include "test_layer_values.h"
#include "test_tensor_of.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define N_CASES ((int)(sizeof pool3d_cases / sizeof pool3d_cases[0]))

TEST_CTX_SUITE(pool3d);

static ad_pool3d_opts case_opts(const pool3d_case *c) {
  ad_pool3d_opts o = {.ceil_mode = c->ceil_mode,
                      .exclude_pad = c->exclude_pad,
                      .divisor_override = c->divisor_override};
  memcpy(o.stride, c->s, sizeof o.stride);
  memcpy(o.padding, c->p, sizeof o.padding);
  memcpy(o.dilation, c->d, sizeof o.dilation);
  return o;
}

static nn_layer *case_layer(const pool3d_case *c) {
  ad_pool3d_opts o = case_opts(c);
  switch (c->kind) {
  case 0:
    return nn_max_pool3d_new(ctx, c->k[0], c->k[1], c->k[2], &o);
  case 1:
    return nn_avg_pool3d_new(ctx, c->k[0], c->k[1], c->k[2], &o);
  default:
    return nn_adaptive_avg_pool3d_new(ctx, c->out[0], c->out[1], c->out[2]);
  }
}

static void cases_match(ad_dtype dt) {
  char what[96];
  for (int k = 0; k < N_CASES; k++) {
    const pool3d_case *c = &pool3d_cases[k];
    double tol = dt == AD_F64 ? 1e-12 : 1e-5;
    nn_layer *l = case_layer(c);
    cr_assert_not_null(l, "%s: %s", c->name, ad_last_error(ctx));
    ad_tensor *x = tensor_of(dt, c->nd, c->shape, c->x);
    cr_assert_eq(x->size, c->nx, "%s", c->name);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = nn_layer_forward(l, x, true);
    snprintf(what, sizeof what, "%s %s y", c->name, ad_dtype_name(dt));
    test_expect_values(ctx, y, dt == AD_F64 ? c->y : c->y32, c->ny, tol, what);
    cr_assert_eq(y->ndim, c->nd, "%s: rank %d", what, y->ndim);
    for (int d = 0; d < 3; d++)
      cr_assert_eq(y->shape[c->nd - 3 + d], c->out[d], "%s: output dim %d", what, d);
    ad_tensor *g = tensor_of(dt, y->ndim, y->shape, c->gy);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, g)), NULL), AD_OK, "%s",
                 ad_last_error(ctx));
    snprintf(what, sizeof what, "%s %s dx", c->name, ad_dtype_name(dt));
    test_expect_values(ctx, x->grad, dt == AD_F64 ? c->dx : c->dx32, c->nx, tol, what);
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(g);
    nn_layer_free(l);
  }
}

Test(pool3d, layers_match_pytorch_f64) { cases_match(AD_F64); }
Test(pool3d, layers_match_pytorch_f32) { cases_match(AD_F32); }

/* The functional ops are what the layers run: the same bits. */
Test(pool3d, functional_is_the_layer) {
  for (int k = 0; k < N_CASES; k++) {
    const pool3d_case *c = &pool3d_cases[k];
    if (c->kind == 2) continue;
    ad_pool3d_opts o = case_opts(c);
    nn_layer *l = case_layer(c);
    ad_tensor *x = tensor_of(AD_F32, c->nd, c->shape, c->x);
    ad_tensor *a = nn_layer_forward(l, x, false);
    ad_tensor *b = c->kind ? ad_avg_pool3d(ctx, x, c->k[0], c->k[1], c->k[2], &o)
                           : ad_max_pool3d(ctx, x, c->k[0], c->k[1], c->k[2], &o);
    cr_assert(a && b, "%s: %s", c->name, ad_last_error(ctx));
    cr_assert_eq(a->size, b->size);
    cr_assert(!memcmp(a->data, b->data, (size_t)a->size * sizeof(float)), "%s", c->name);
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    nn_layer_free(l);
  }
}

/* Ties go to the first element in (d, h, w) order, a NaN wins (the last
 * one), a window of -inf sends its gradient to its first element: torch's
 * rule, spelled out on one 2x2x2 window. */
Test(pool3d, max_tie_nan_and_neg_inf_rules) {
  int64_t s[5] = {1, 1, 2, 2, 2};
  double ties[8] = {0, 1, 0, 1, 1, 0, 1, 1}; /* first max at (0, 0, 1) */
  double nans[8] = {NAN, 0, 0, NAN, NAN, 0, 0, 0};
  double infs[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                    -INFINITY, -INFINITY, -INFINITY, -INFINITY};
  const double *in[3] = {ties, nans, infs};
  int64_t want[3] = {1, 4, 0};
  for (int k = 0; k < 6; k++) { /* float64, then float32 (the fast 2x2 and 2x1 argmax) */
    ad_tensor *x = tensor_of(k < 3 ? AD_F64 : AD_F32, 5, s, in[k % 3]);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = ad_max_pool3d(ctx, x, 2, 2, 2, NULL);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    /* without a gradient to take, the two-stage forward: the same value */
    bool was = ad_set_grad_enabled(ctx, false);
    ad_tensor *y0 = ad_max_pool3d(ctx, x, 2, 2, 2, NULL);
    ad_set_grad_enabled(ctx, was);
    cr_assert_not_null(y0, "%s", ad_last_error(ctx));
    double v = ad_tensor_get(y, 0), v0 = ad_tensor_get(y0, 0);
    cr_assert(v == v0 || (isnan(v) && isnan(v0)), "case %d: %g with a gradient, %g without", k, v,
              v0);
    cr_assert_eq(ad_backward(ctx, y, NULL), AD_OK, "%s", ad_last_error(ctx));
    for (int64_t i = 0; i < 8; i++)
      cr_assert_eq(ad_tensor_get(x->grad, i), i == want[k % 3] ? 1.0 : 0.0, "case %d, [%lld]", k,
                   (long long)i);
    ad_tape_reset(ctx);
    ad_tensor_free(x);
  }
}

/* Without dilation, max_pool3d records one op (pool_gather at the argmaxes,
 * found without a gradient), whose backward is one pool_scatter into x's
 * gradient, where the two 2-D stages took five ops and searched their
 * windows again going back. The gradient is each window's dy at its first
 * maximum in (d, h, w) order, added in window order where windows overlap
 * (a reference loop here, on ties). */
Test(pool3d, max_records_one_op_and_scatters_in_window_order) {
  int64_t s[5] = {2, 2, 4, 5, 4};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 5, s);
  cr_assert(x && ad_tensor_set_requires_grad(x, true) == AD_OK);
  for (int64_t i = 0; i < x->size; i++) ad_tensor_set(x, i, (double)((i * 7) % 5)); /* ties */
  ad_pool3d_opts o = {.stride = {1, 2, 1}, .padding = {1, 1, 0}, .ceil_mode = true};
  size_t before = ad_tape_size(ctx);
  ad_tensor *y = ad_max_pool3d(ctx, x, 2, 3, 2, &o);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tape_size(ctx) - before, 1, "%zu ops recorded", ad_tape_size(ctx) - before);
  ad_tensor *dy = ad_zeros(ctx, AD_F64, y->ndim, y->shape);
  for (int64_t i = 0; i < dy->size; i++) ad_tensor_set(dy, i, 0.25 + (double)(i % 13));
  cr_assert_eq(ad_backward(ctx, y, dy), AD_OK, "%s", ad_last_error(ctx));
  double want[320] = {0};
  const int64_t k[3] = {2, 3, 2}, st[3] = {1, 2, 1}, pd[3] = {1, 1, 0}, in[3] = {4, 5, 4};
  int64_t j = 0;
  for (int64_t p = 0; p < 4; p++)
    for (int64_t a = 0; a < y->shape[2]; a++)
      for (int64_t b = 0; b < y->shape[3]; b++)
        for (int64_t c = 0; c < y->shape[4]; c++, j++) {
          int64_t best = -1, o3[3] = {a, b, c};
          double bv = 0;
          for (int64_t t = 0; t < k[0] * k[1] * k[2]; t++) {
            int64_t q[3] = {t / (k[1] * k[2]), t / k[2] % k[1], t % k[2]}, e = 0;
            bool inside = true;
            for (int d = 0; d < 3; d++) {
              int64_t v = o3[d] * st[d] - pd[d] + q[d];
              inside = inside && v >= 0 && v < in[d];
              e = e * in[d] + v;
            }
            if (!inside) continue;
            double v = ad_tensor_get(x, p * 80 + e);
            if (best < 0 || v > bv) best = p * 80 + e, bv = v;
          }
          cr_assert_eq(ad_tensor_get(y, j), bv, "y[%lld]", (long long)j);
          want[best] += ad_tensor_get(dy, j);
        }
  for (int64_t i = 0; i < x->size; i++)
    cr_assert_eq(ad_tensor_get(x->grad, i), want[i], "dx[%lld] = %g, want %g", (long long)i,
                 ad_tensor_get(x->grad, i), want[i]);
  /* x without requires_grad takes the two-stage forward: the same values */
  ad_tensor_set_requires_grad(x, false);
  ad_tensor *y0 = ad_max_pool3d(ctx, x, 2, 3, 2, &o);
  cr_assert_not_null(y0, "%s", ad_last_error(ctx));
  for (int64_t i = 0; i < y->size; i++)
    cr_assert_eq(ad_tensor_get(y0, i), ad_tensor_get(y, i), "y[%lld]", (long long)i);
  ad_tape_reset(ctx);
  ad_tensor_free(x), ad_tensor_free(dy);
}

/* N = 0 gives an empty output, as PyTorch; so does C = 0 for the adaptive
 * layer's unbatched input (PyTorch's rule: only dim 0 may be empty). */
Test(pool3d, empty_batch) {
  int64_t s5[5] = {0, 2, 3, 4, 4}, s4[4] = {0, 3, 4, 4};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 5, s5), *u = ad_zeros(ctx, AD_F32, 4, s4);
  ad_tensor *y = ad_max_pool3d(ctx, x, 2, 2, 2, NULL);
  cr_assert(y && y->size == 0 && y->shape[2] == 1 && y->shape[4] == 2, "%s", ad_last_error(ctx));
  y = ad_avg_pool3d(ctx, x, 1, 2, 2, NULL);
  cr_assert(y && y->size == 0 && y->shape[2] == 3 && y->shape[4] == 2, "%s", ad_last_error(ctx));
  nn_layer *l = nn_adaptive_avg_pool3d_new(ctx, 2, 3, 1);
  y = nn_layer_forward(l, u, false);
  cr_assert(y && y->size == 0 && y->ndim == 4 && y->shape[1] == 2 && y->shape[2] == 3, "%s",
            ad_last_error(ctx));
  nn_layer_free(l);
  ad_tensor_free(x), ad_tensor_free(u);
}

/* Overlapping adaptive windows (n not dividing L): an inf or NaN reaches
 * only the outputs whose windows hold it, as in PyTorch (a product with an
 * averaging matrix gave 0 * inf = NaN for every window of the row). Along
 * W, H and D of the 3-D layer, and the 2-D layer the 3-D one runs on. The
 * gradient of the sum is each element's 1 / count summed over its
 * windows. */
Test(pool3d, adaptive_inf_and_nan_stay_in_their_windows) {
  static const double inf = INFINITY;
  static const double xs[3][3] = {{inf, 1, 2}, {1, 2, NAN}, {-inf, 4, 6}};
  static const double want[3][2] = {{inf, 1.5}, {1.5, NAN}, {-inf, 5}};
  static const double dx[3] = {0.5, 1, 0.5};
  for (int axis = 0; axis < 3; axis++)
    for (int v = 0; v < 3; v++) {
      int64_t s5[5] = {1, 1, 1, 1, 1}, o[3] = {1, 1, 1};
      s5[2 + axis] = 3, o[axis] = 2;
      ad_tensor *x = tensor_of(AD_F64, 5, s5, xs[v]);
      ad_tensor_set_requires_grad(x, true);
      nn_layer *l = nn_adaptive_avg_pool3d_new(ctx, o[0], o[1], o[2]);
      ad_tensor *y = nn_layer_forward(l, x, true);
      char what[64];
      snprintf(what, sizeof what, "axis %d, input %d: y", axis, v);
      test_expect_values(ctx, y, want[v], 2, 1e-15, what);
      cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
      snprintf(what, sizeof what, "axis %d, input %d: dx", axis, v);
      test_expect_values(ctx, x->grad, dx, 3, 1e-15, what);
      ad_tape_reset(ctx);
      nn_layer_free(l);
      ad_tensor_free(x);
    }
  /* the 2-D layer: [1, 3, 3] to 2 x 2, an inf in the corner */
  int64_t s3[3] = {1, 3, 3};
  double x2[9] = {inf, 1, 2, 3, 4, 5, 6, 7, 8}, w2[4] = {inf, 3, 5, 6};
  ad_tensor *x = tensor_of(AD_F32, 3, s3, x2);
  nn_layer *l = nn_adaptive_avg_pool2d_new(ctx, 2, 2);
  test_expect_values(ctx, nn_layer_forward(l, x, false), w2, 4, 1e-7, "2-D y");
  ad_tape_reset(ctx);
  nn_layer_free(l);
  ad_tensor_free(x);
}

/* ---------------------------------------------------------- derivatives */

static ad_tensor *run_layer(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c, (void)n;
  return nn_layer_forward(ud, in[0], true);
}

/* Every fixture case with finite, distinct inputs (not the ties, NaN and
 * -inf ones), first and second order, in float64 on random inputs (the
 * maximum's argmax does not move within the step: values differ by far
 * more than it). */
Test(pool3d, gradcheck_first_and_second_order) {
  int checked = 0;
  for (int k = 0; k < N_CASES; k++) {
    const pool3d_case *c = &pool3d_cases[k];
    bool finite = !strstr(c->name, "ties");
    for (int64_t i = 0; finite && i < c->nx; i++) finite = isfinite(c->x[i]);
    if (!finite) continue;
    nn_layer *l = case_layer(c);
    cr_assert_not_null(l);
    ad_rng rng;
    ad_rng_seed(&rng, 4 + (uint64_t)k);
    ad_tensor *x = ad_rand(ctx, &rng, AD_F64, c->nd, c->shape, -2, 2);
    cr_assert_not_null(x);
    ad_tensor_set_requires_grad(x, true);
    ad_check_report r;
    cr_assert_eq(ad_gradcheck(ctx, run_layer, l, 1, &x, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
    cr_assert(r.passed, "%s: first order, [%lld] %g vs %g", c->name, (long long)r.index, r.analytic,
              r.numeric);
    cr_assert_eq(ad_gradgradcheck(ctx, run_layer, l, 1, &x, NULL, &r), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(r.passed, "%s: second order, [%lld] %g vs %g", c->name, (long long)r.index,
              r.analytic, r.numeric);
    ad_tensor_free(x);
    nn_layer_free(l);
    checked++;
  }
  cr_assert_geq(checked, 20);
}

/* ------------------------------------------------------------- describe */

static void expect_desc(nn_layer *l, const char *want) { test_expect_desc(ctx, l, want); }

/* PyTorch 1.13's reprs under our kinds' names (AvgPool3d also shows
 * ceil_mode, count_include_pad and divisor_override when set, as our 2-D
 * layer; PyTorch's leaves them out). */
Test(pool3d, describe_is_pytorch_repr) {
  expect_desc(nn_max_pool3d_new(ctx, 2, 2, 2, NULL),
              "max_pool3d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)");
  expect_desc(nn_max_pool3d_new(ctx, 1, 2, 3,
                                &(ad_pool3d_opts){.stride = {1, 1, 1},
                                                  .padding = {0, 1, 1},
                                                  .dilation = {2, 2, 2},
                                                  .ceil_mode = true}),
              "max_pool3d(kernel_size=(1, 2, 3), stride=1, padding=(0, 1, 1), dilation=2, "
              "ceil_mode=True)");
  expect_desc(nn_avg_pool3d_new(ctx, 2, 2, 2, NULL),
              "avg_pool3d(kernel_size=2, stride=2, padding=0)");
  expect_desc(nn_avg_pool3d_new(
                  ctx, 2, 3, 1,
                  &(ad_pool3d_opts){.ceil_mode = true, .exclude_pad = true, .divisor_override = 2}),
              "avg_pool3d(kernel_size=(2, 3, 1), stride=(2, 3, 1), padding=0, ceil_mode=True, "
              "count_include_pad=False, divisor_override=2)");
  expect_desc(nn_adaptive_avg_pool3d_new(ctx, 2, 2, 2), "adaptive_avg_pool3d(output_size=2)");
  expect_desc(nn_adaptive_avg_pool3d_new(ctx, 2, 3, 4),
              "adaptive_avg_pool3d(output_size=(2, 3, 4))");
}

/* ---------------------------------------------------------------- misuse */

/* The constructors refuse what PyTorch's refuse, naming the layer. */
Test(pool3d, bad_arguments_are_refused_when_made) {
  struct {
    int64_t k[3];
    ad_pool3d_opts o;
    bool avg;
    const char *msg;
  } bad[] = {
      {{0, 2, 2}, {.ceil_mode = false}, false, "max_pool3d: kernel must be in [1, 2^30]"},
      {{2, 2, -1}, {.ceil_mode = false}, true, "avg_pool3d: kernel must be in [1, 2^30]"},
      {{2, 2, (INT64_C(1) << 30) + 1}, {.ceil_mode = false}, false, "kernel must be in [1, 2^30]"},
      {{2, 2, 2}, {.stride = {1, -1, 1}}, false, "stride must be in"},
      {{2, 2, 2}, {.dilation = {1, 1, -2}}, false, "dilation must be in"},
      {{2, 2, 2}, {.dilation = {2, 1, 1}}, true, "avg_pool3d: dilation is for max_pool3d only"},
      {{2, 2, 2}, {.padding = {0, 2, 0}}, false, "padding must be >= 0 and at most half"},
      {{3, 3, 3}, {.padding = {0, 0, -1}}, true, "padding must be >= 0"},
      {{2, 2, 2}, {.exclude_pad = true}, false, "for avg_pool3d only"},
      {{2, 2, 2}, {.divisor_override = 3}, false, "for avg_pool3d only"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    nn_layer *l = bad[i].avg
                      ? nn_avg_pool3d_new(ctx, bad[i].k[0], bad[i].k[1], bad[i].k[2], &bad[i].o)
                      : nn_max_pool3d_new(ctx, bad[i].k[0], bad[i].k[1], bad[i].k[2], &bad[i].o);
    cr_assert_null(l, "case %zu", i);
    expect_status_msg(ctx, AD_ERR_ARG, bad[i].msg);
  }
  int64_t sz[][3] = {{0, 1, 1}, {1, -1, 1}, {1, 1, (INT64_C(1) << 30) + 1}};
  for (size_t i = 0; i < 3; i++) {
    cr_assert_null(nn_adaptive_avg_pool3d_new(ctx, sz[i][0], sz[i][1], sz[i][2]));
    expect_status_msg(ctx, AD_ERR_ARG, "adaptive_avg_pool3d: output size");
  }
  cr_assert_null(nn_max_pool3d_new(NULL, 2, 2, 2, NULL));
  cr_assert_null(nn_adaptive_avg_pool3d_new(NULL, 2, 2, 2));
}

/* The functional ops check the same, and the input, naming the op. */
Test(pool3d, bad_inputs_name_the_op_and_shapes) {
  int64_t s5[5] = {1, 2, 4, 4, 4}, s3[3] = {2, 4, 4}, s6[6] = {1, 1, 2, 4, 4, 4};
  int64_t se[5] = {1, 0, 4, 4, 4}, sd[5] = {1, 2, 0, 4, 4}, su[4] = {0, 4, 4, 4};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 5, s5);
  ad_tensor *r3 = ad_zeros(ctx, AD_F32, 3, s3), *r6 = ad_zeros(ctx, AD_F32, 6, s6);
  ad_tensor *e = ad_zeros(ctx, AD_F32, 5, se), *ed = ad_zeros(ctx, AD_F32, 5, sd);
  ad_tensor *eu = ad_zeros(ctx, AD_F32, 4, su), *xi = ad_zeros(ctx, AD_I32, 5, s5);
  cr_assert_null(ad_max_pool3d(ctx, NULL, 2, 2, 2, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "max_pool3d: input is NULL");
  cr_assert_null(ad_max_pool3d(NULL, x, 2, 2, 2, NULL));
  cr_assert_null(ad_avg_pool3d(ctx, r3, 2, 2, 2, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "avg_pool3d: input [2,4,4] must be 5-D");
  cr_assert_null(ad_max_pool3d(ctx, r6, 2, 2, 2, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "must be 5-D (N, C, D, H, W) or 4-D (C, D, H, W)");
  cr_assert_null(ad_max_pool3d(ctx, e, 2, 2, 2, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "max_pool3d: input [1,0,4,4,4] has an empty C");
  cr_assert_null(ad_avg_pool3d(ctx, ed, 1, 1, 1, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "has an empty C, D, H or W");
  cr_assert_null(ad_max_pool3d(ctx, eu, 1, 1, 1, NULL)); /* unbatched: C = 0 */
  expect_status_msg(ctx, AD_ERR_SHAPE, "has an empty");
  cr_assert_null(ad_max_pool3d(ctx, xi, 2, 2, 2, NULL));
  expect_status_msg(ctx, AD_ERR_DTYPE, "max_pool3d: input is i32");
  cr_assert_null(ad_max_pool3d(ctx, x, 2, 0, 2, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "max_pool3d: kernel 2x0x2 must be positive");
  cr_assert_null(ad_max_pool3d(ctx, x, 2, 2, INT64_MAX, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "kernel");
  cr_assert_null(ad_avg_pool3d(ctx, x, 2, 2, 2, &(ad_pool3d_opts){.stride = {-1, 1, 1}}));
  expect_status_msg(ctx, AD_ERR_ARG, "avg_pool3d: stride -1x1x1 must be positive");
  cr_assert_null(ad_max_pool3d(ctx, x, 2, 2, 2, &(ad_pool3d_opts){.dilation = {1, 1, -1}}));
  expect_status_msg(ctx, AD_ERR_ARG, "max_pool3d: dilation 1x1x-1 must be positive");
  cr_assert_null(ad_avg_pool3d(ctx, x, 2, 2, 2, &(ad_pool3d_opts){.dilation = {1, 2, 1}}));
  expect_status_msg(ctx, AD_ERR_ARG, "avg_pool3d: dilation 1x2x1: average pooling takes none");
  cr_assert_null(ad_max_pool3d(ctx, x, 2, 3, 2, &(ad_pool3d_opts){.padding = {0, 2, 0}}));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "padding 0x2x0 must be >= 0 and at most half the kernel 2x3x2");
  cr_assert_null(ad_max_pool3d(ctx, x, 5, 2, 2, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "max_pool3d: input [1,2,4,4,4] is too small: the output would be 0x2x2");
  /* dilation reaching past the input: PyTorch's "Output size is too small" */
  cr_assert_null(ad_max_pool3d(ctx, x, 2, 2, 2, &(ad_pool3d_opts){.dilation = {1, 4, 1}}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "too small");
  /* overflow-sized attributes are refused, not multiplied */
  cr_assert_null(ad_max_pool3d(ctx, x, INT64_C(1) << 30, 2, 2,
                               &(ad_pool3d_opts){.dilation = {INT64_C(1) << 30, 1, 1}}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "too small");
  /* another context's tensor, a freed one, a reset tape's */
  ad_ctx *other = ad_ctx_new();
  ad_tensor *xo = ad_zeros(other, AD_F32, 5, s5);
  cr_assert_null(ad_avg_pool3d(ctx, xo, 2, 2, 2, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "avg_pool3d: input belongs to another context");
  ad_tensor_free(xo);
  ad_ctx_free(other);
  ad_tensor *t = ad_mul_scalar(ctx, x, 2.0);
  ad_tape_reset(ctx);
  cr_assert_null(ad_max_pool3d(ctx, t, 2, 2, 2, NULL));
  expect_status_msg(ctx, AD_ERR_STATE, "max_pool3d: input is from a tape that was reset");
  ad_tensor_free(r3);
  cr_assert_null(ad_max_pool3d(ctx, r3, 2, 2, 2, NULL));
  expect_status_msg(ctx, AD_ERR_STATE, "max_pool3d: input was freed");
  /* the adaptive layer names itself */
  nn_layer *l = nn_adaptive_avg_pool3d_new(ctx, 2, 2, 2);
  cr_assert_null(nn_layer_forward(l, r6, false));
  expect_status_msg(ctx, AD_ERR_SHAPE, "adaptive_avg_pool3d");
  cr_assert_null(nn_layer_forward(l, e, false));
  expect_status_msg(ctx, AD_ERR_SHAPE, "has an empty dim 1");
  cr_assert_null(nn_layer_forward(l, xi, false));
  expect_status_msg(ctx, AD_ERR_DTYPE, "adaptive_avg_pool3d");
  nn_layer_free(l);
  ad_tensor_free(x), ad_tensor_free(r6), ad_tensor_free(e), ad_tensor_free(ed);
  ad_tensor_free(eu), ad_tensor_free(xi);
}
