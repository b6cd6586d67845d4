/* test_pool.c: the pooling ops (autodiff/op_pool.c) beyond their PyTorch
 * values (tests/fixtures/ops.txt) and the registry's gradient checks: bad
 * input and its messages, NaN, ties, -inf windows, PyTorch's divisor and
 * ceil_mode rules on hand-computed values, the defaults of the options, 3-D
 * input, second derivatives through composites, threads, and the K x K,
 * stride K fast path against a reference, bit for bit. */
#include "test_alloc.h"

#include <math.h>

TEST_CTX_SUITE(pool);

#define expect_error(...) test_expect_error(ctx, __VA_ARGS__)

#define param(c, ...)        test_param(c, __VA_ARGS__)
#define expect_shape(t, ...) test_expect_shape(ctx, t, __VA_ARGS__)

/* Every element of t is want[i]: equal, both NaN, or the same infinity. */
static void expect_values(const ad_tensor *t, int64_t n, const double *want, const char *what) {
  cr_assert_not_null(t, "%s: no tensor (%s)", what, ad_last_error(ctx));
  cr_assert_eq(t->size, n, "%s: %lld elements, want %lld", what, (long long)t->size, (long long)n);
  for (int64_t i = 0; i < n; i++) {
    double got = ad_tensor_get(t, i);
    bool ok = isnan(want[i]) ? isnan(got) : got == want[i];
    cr_assert(ok, "%s[%lld] = %.17g, want %.17g", what, (long long)i, got, want[i]);
  }
}

/* ------------------------------------------------------------ bad input */

Test(pool, wrong_rank_and_dtype_are_refused) {
  int64_t s2[2] = {4, 4}, s5[5] = {1, 1, 1, 4, 4}, s4[4] = {1, 1, 4, 4};
  ad_tensor *x2 = param(ctx, 2, s2, NULL), *x5 = param(ctx, 5, s5, NULL);
  cr_assert_null(ad_max_pool2d(ctx, x2, 2, 2, NULL));
  expect_error(AD_ERR_SHAPE, "max_pool2d", "input [4,4]", "4-D (N, C, H, W) or 3-D", NULL);
  cr_assert_null(ad_avg_pool2d(ctx, x5, 2, 2, NULL));
  expect_error(AD_ERR_SHAPE, "avg_pool2d", "input [1,1,1,4,4]", "4-D", NULL);
  cr_assert_null(ad_global_avg_pool2d(ctx, x2));
  expect_error(AD_ERR_SHAPE, "global_avg_pool2d", "input [4,4]", "4-D", NULL);

  ad_tensor *xi = ad_zeros(ctx, AD_I32, 4, s4);
  cr_assert_null(ad_max_pool2d(ctx, xi, 2, 2, NULL));
  expect_error(AD_ERR_DTYPE, "max_pool2d", NULL);
  cr_assert_null(ad_avg_pool2d(ctx, xi, 2, 2, NULL));
  expect_error(AD_ERR_DTYPE, "avg_pool2d", NULL);
  cr_assert_null(ad_global_avg_pool2d(ctx, xi));
  expect_error(AD_ERR_DTYPE, "global_avg_pool2d", "i32", NULL);

  /* a NULL input (an earlier failure) gives NULL, as every op */
  cr_assert_null(ad_max_pool2d(ctx, NULL, 2, 2, NULL));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_NULL);
  ad_clear_error(ctx);
  cr_assert_null(ad_global_avg_pool2d(ctx, NULL));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_NULL);
  ad_clear_error(ctx);
  ad_tensor_free(x2);
  ad_tensor_free(x5);
  ad_tensor_free(xi);
}

/* A NULL, freed or foreign input of global_avg_pool2d was reported by the
 * sum it is built on ("sum: input 0 was freed"); found by fuzz/fuzz_ops. */
Test(pool, global_avg_pool2d_names_itself) {
  int64_t s4[4] = {1, 1, 2, 2};
  ad_ctx *other = ad_ctx_new();
  ad_tensor *x = param(ctx, 4, s4, NULL), *foreign = ad_zeros(other, AD_F32, 4, s4);
  cr_assert_null(ad_global_avg_pool2d(ctx, NULL));
  expect_error(AD_ERR_NULL, "global_avg_pool2d: input is NULL", NULL);
  cr_assert_null(ad_global_avg_pool2d(ctx, foreign));
  expect_error(AD_ERR_ARG, "global_avg_pool2d: input belongs to another context", NULL);
  ad_tensor_free(x);
  cr_assert_null(ad_global_avg_pool2d(ctx, x));
  expect_error(AD_ERR_STATE, "global_avg_pool2d: input was freed", NULL);
  ad_ctx_free(other);
}

Test(pool, bad_attributes_are_refused) {
  int64_t s[4] = {2, 3, 6, 6};
  ad_tensor *x = param(ctx, 4, s, NULL);
  cr_assert_null(ad_max_pool2d(ctx, x, 0, 2, NULL));
  expect_error(AD_ERR_ARG, "max_pool2d", "kernel 0x2 must be positive", NULL);
  cr_assert_null(ad_avg_pool2d(ctx, x, 2, -1, NULL));
  expect_error(AD_ERR_ARG, "avg_pool2d", "kernel 2x-1 must be positive", NULL);

  ad_pool2d_opts o = {.stride = {-1, 1}};
  cr_assert_null(ad_max_pool2d(ctx, x, 2, 2, &o));
  expect_error(AD_ERR_ARG, "max_pool2d", "stride -1x1 must be positive", NULL);

  o = (ad_pool2d_opts){.padding = {2, 0}};
  cr_assert_null(ad_max_pool2d(ctx, x, 3, 3, &o));
  expect_error(AD_ERR_ARG, "max_pool2d", "padding 2x0", "at most half the kernel 3x3", NULL);
  o = (ad_pool2d_opts){.padding = {0, -1}};
  cr_assert_null(ad_avg_pool2d(ctx, x, 3, 3, &o));
  expect_error(AD_ERR_ARG, "avg_pool2d", "padding 0x-1 must be >= 0", NULL);
  o = (ad_pool2d_opts){.padding = {1, 1}}; /* 1 is half of 2: allowed */
  cr_assert_not_null(ad_max_pool2d(ctx, x, 2, 2, &o), "%s", ad_last_error(ctx));

  o = (ad_pool2d_opts){.dilation = {1, -2}};
  cr_assert_null(ad_max_pool2d(ctx, x, 2, 2, &o));
  expect_error(AD_ERR_ARG, "max_pool2d", "dilation 1x-2 must be positive", NULL);
  o = (ad_pool2d_opts){.dilation = {2, 1}};
  cr_assert_null(ad_avg_pool2d(ctx, x, 2, 2, &o));
  expect_error(AD_ERR_ARG, "avg_pool2d", "dilation 2x1", "average pooling takes none", NULL);

  /* through the registry, attributes are explicit: zeros are refused */
  ad_attrs at;
  memset(&at, 0, sizeof at);
  at.pool.kernel[0] = at.pool.kernel[1] = 2;
  at.pool.dilation[0] = at.pool.dilation[1] = 1;
  cr_assert_null(ad_op_apply(ctx, ad_op_find(ctx, "max_pool2d"), 1, &x, &at));
  expect_error(AD_ERR_ARG, "max_pool2d", "stride 0x0 must be positive", NULL);
  at.pool.stride[0] = at.pool.stride[1] = 2;
  at.pool.dilation[1] = 0;
  cr_assert_null(ad_op_apply(ctx, ad_op_find(ctx, "max_pool2d"), 1, &x, &at));
  expect_error(AD_ERR_ARG, "max_pool2d", "dilation 1x0", NULL);
  at.pool.dilation[1] = 1;
  at.pool.kernel[0] = (int64_t)1 << 31;
  cr_assert_null(ad_op_apply(ctx, ad_op_find(ctx, "avg_pool2d"), 1, &x, &at));
  expect_error(AD_ERR_ARG, "avg_pool2d", "kernel 2147483648x2", "at most 2^30", NULL);
  ad_tensor_free(x);
}

Test(pool, too_small_inputs_are_refused) {
  int64_t s[4] = {1, 1, 2, 5}, e[4] = {1, 1, 0, 5};
  ad_tensor *x = param(ctx, 4, s, NULL), *ex = param(ctx, 4, e, NULL);
  cr_assert_null(ad_max_pool2d(ctx, x, 3, 3, NULL));
  expect_error(AD_ERR_SHAPE, "max_pool2d", "input [1,1,2,5] is too small", "output would be 0x1",
               "kernel 3x3", NULL);
  ad_pool2d_opts o = {.dilation = {1, 3}};
  cr_assert_null(ad_max_pool2d(ctx, x, 2, 3, &o)); /* taps 0, 3, 6 of a width 5 */
  expect_error(AD_ERR_SHAPE, "max_pool2d", "output would be 1x0", "dilation 1x3", NULL);
  cr_assert_null(ad_avg_pool2d(ctx, ex, 1, 1, NULL));
  expect_error(AD_ERR_SHAPE, "avg_pool2d", "input [1,1,0,5] has an empty plane", NULL);
  cr_assert_null(ad_global_avg_pool2d(ctx, ex));
  expect_error(AD_ERR_SHAPE, "global_avg_pool2d", "[1,1,0,5] has an empty plane", NULL);
  ad_tensor_free(x);
  ad_tensor_free(ex);
}

/* The partner ops check that their gradient input fits. */
Test(pool, partner_ops_check_their_inputs) {
  int64_t sx[4] = {1, 2, 4, 4}, sbad[4] = {1, 2, 3, 3}, sc[4] = {1, 3, 2, 2};
  ad_tensor *x = param(ctx, 4, sx, NULL), *bad = param(ctx, 4, sbad, NULL);
  ad_tensor *wrong_c = param(ctx, 4, sc, NULL);
  ad_attrs at;
  memset(&at, 0, sizeof at);
  at.pool = (ad_pool_attrs){{2, 2}, {2, 2}, {0, 0}, {1, 1}, false, true, {0, 0}, false};
  ad_tensor *in[2] = {bad, x};
  cr_assert_null(ad_op_apply(ctx, ad_op_find(ctx, "max_pool2d_backward"), 2, in, &at));
  expect_error(AD_ERR_SHAPE, "max_pool2d_backward", "dy [1,2,3,3] does not fit x [1,2,4,4]",
               "want H, W 2x2", NULL);
  in[0] = wrong_c;
  cr_assert_null(ad_op_apply(ctx, ad_op_find(ctx, "max_pool2d_backward"), 2, in, &at));
  expect_error(AD_ERR_SHAPE, "max_pool2d_backward", "dy [1,3,2,2]", NULL);
  in[0] = bad;
  cr_assert_null(ad_op_apply(ctx, ad_op_find(ctx, "max_pool2d_select"), 2, in, &at));
  expect_error(AD_ERR_SHAPE, "max_pool2d_select", "g [1,2,3,3] does not fit x [1,2,4,4]",
               "want H, W 4x4", NULL);
  ad_tensor *x32 = ad_cast(ctx, x, AD_F32);
  in[0] = ad_cast(ctx, ad_max_pool2d(ctx, x, 2, 2, NULL), AD_F64);
  in[1] = x32;
  cr_assert_null(ad_op_apply(ctx, ad_op_find(ctx, "max_pool2d_backward"), 2, in, &at));
  expect_error(AD_ERR_DTYPE, "max_pool2d_backward", NULL);

  at.pool.in_size[0] = at.pool.in_size[1] = 4;
  cr_assert_null(ad_op_apply(ctx, ad_op_find(ctx, "avg_pool2d_backward"), 1, &bad, &at));
  expect_error(AD_ERR_SHAPE, "avg_pool2d_backward", "dy [1,2,3,3] does not fit the input [1,2,4,4]",
               NULL);
  at.pool.in_size[0] = 1; /* an input of 1x4 pools to nothing */
  cr_assert_null(ad_op_apply(ctx, ad_op_find(ctx, "avg_pool2d_backward"), 1, &bad, &at));
  expect_error(AD_ERR_SHAPE, "avg_pool2d_backward", "the input [1,2,1,4] is too small", NULL);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(bad);
  ad_tensor_free(wrong_c);
}

/* pool_gather and pool_scatter (the max poolings' gradient at recorded
 * argmaxes): values on a hand-computed case, repeats adding up in index
 * order, and their checks, naming the op and the shapes. */
Test(pool, pool_gather_and_scatter) {
  int64_t sx[4] = {1, 2, 2, 3}, si[4] = {1, 2, 1, 2}, sbad[4] = {2, 2, 1, 2};
  double xv[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 4, sx), *idx = ad_zeros(ctx, AD_I32, 4, si);
  ad_tensor *g = ad_zeros(ctx, AD_F64, 4, si);
  cr_assert(x && idx && g);
  for (int64_t i = 0; i < 12; i++) ad_tensor_set(x, i, xv[i]);
  const int32_t iv[4] = {5, 5, 0, 3}; /* plane 0: 5 twice; plane 1: 0 and 3 */
  memcpy(idx->data, iv, sizeof iv);
  for (int64_t i = 0; i < 4; i++) ad_tensor_set(g, i, 0.5 + (double)i);
  ad_attrs at;
  memset(&at, 0, sizeof at);
  at.axis = -2;
  int gid = ad_op_find(ctx, "pool_gather"), sid = ad_op_find(ctx, "pool_scatter");
  cr_assert(gid >= 0 && sid >= 0);
  ad_tensor *in[3] = {x, idx, x};
  expect_values(ad_op_apply(ctx, gid, 2, in, &at), 4, (const double[]){5, 5, 6, 9}, "gather");
  in[0] = g;
  expect_values(ad_op_apply(ctx, sid, 3, in, &at), 12,
                (const double[]){0, 0, 0, 0, 0, 0.5 + 1.5, 2.5, 0, 0, 3.5, 0, 0}, "scatter");
  at.axis = 1; /* one plane of 12, the index's 4 into it */
  expect_values(ad_op_apply(ctx, sid, 3, in, &at), 12,
                (const double[]){2.5, 0, 0, 3.5, 0, 0.5 + 1.5, 0, 0, 0, 0, 0, 0}, "scatter axis 1");

  at.axis = -2;
  ((int32_t *)idx->data)[2] = 6; /* planes of 6 */
  in[0] = x;
  cr_assert_null(ad_op_apply(ctx, gid, 2, in, &at));
  expect_error(AD_ERR_ARG, "pool_gather: index 6 at [0,1,0,0] of index [1,2,1,2] is outside 0..5",
               "x [1,2,2,3] from axis 2", NULL);
  ((int32_t *)idx->data)[2] = 0;
  at.axis = 4;
  cr_assert_null(ad_op_apply(ctx, gid, 2, in, &at));
  expect_error(AD_ERR_ARG, "pool_gather: axis 4 out of range for x [1,2,2,3]", NULL);
  at.axis = -2;
  ad_tensor *ib = ad_zeros(ctx, AD_I32, 4, sbad), *f = ad_zeros(ctx, AD_F64, 4, si);
  in[1] = ib;
  cr_assert_null(ad_op_apply(ctx, gid, 2, in, &at));
  expect_error(AD_ERR_SHAPE, "pool_gather: index [2,2,1,2] does not fit x [1,2,2,3]", NULL);
  in[1] = f;
  cr_assert_null(ad_op_apply(ctx, gid, 2, in, &at));
  expect_error(AD_ERR_DTYPE, "pool_gather: index must be i32, got f64", NULL);
  in[0] = x, in[1] = idx, in[2] = x;
  cr_assert_null(ad_op_apply(ctx, sid, 3, in, &at));
  expect_error(AD_ERR_SHAPE, "pool_scatter: g [1,2,2,3] is not shaped like index [1,2,1,2]", NULL);
  in[0] = g, in[2] = ad_cast(ctx, x, AD_F32);
  cr_assert_null(ad_op_apply(ctx, sid, 3, in, &at));
  expect_error(AD_ERR_DTYPE, "pool_scatter: x is f32, in[0] f64", NULL);
  ad_tape_reset(ctx);
  ad_tensor_free(x), ad_tensor_free(idx), ad_tensor_free(g), ad_tensor_free(ib), ad_tensor_free(f);
}

/* Adaptive max pooling records one op (pool_gather; the argmax is found
 * without a gradient) and its backward is one pool_scatter: two ops, where
 * a gather over the flattened plane took reshapes, a zeros tensor, a
 * scatter_add over a copy of it and a copy into x's gradient. */
Test(pool, adaptive_max_records_one_op) {
  int64_t s[4] = {2, 3, 7, 5};
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 4, s, -1, 1);
  cr_assert(x && ad_tensor_set_requires_grad(x, true) == AD_OK);
  size_t before = ad_tape_size(ctx);
  ad_tensor *y = ad_adaptive_max_pool2d(ctx, x, 3, 2);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tape_size(ctx) - before, 1, "%zu ops recorded", ad_tape_size(ctx) - before);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  /* each window's 1 at its argmax: the gradient sums to the windows */
  double sum = 0;
  for (int64_t i = 0; i < x->size; i++) sum += ad_tensor_get(x->grad, i);
  cr_assert_eq(sum, (double)y->size);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* ------------------------------------------------- NaN, ties and -inf */

/* A window holding a NaN gives NaN and sends its gradient to the NaN, the
 * last one in row-major window order when there are several (PyTorch's CPU
 * kernel); a window of -inf gives -inf and sends it to its first element. */
Test(pool, max_pool_nan_and_neg_inf) {
  const double N = NAN, I = -INFINITY;
  const double v[16] = {1, N, 2, N, /**/ N, 0, 3, 1, /**/ I, I, 1, 1, /**/ I, I, 1, 0.5};
  int64_t s[4] = {1, 1, 4, 4};
  ad_tensor *x = param(ctx, 4, s, v);
  ad_tensor *y = ad_max_pool2d(ctx, x, 2, 2, NULL);
  expect_values(y, 4, (const double[]){N, N, I, 1}, "max_pool2d");
  int64_t s2[4] = {1, 1, 2, 2};
  const double dyv[4] = {1, 2, 3, 4};
  ad_tensor *dy = ad_from_data(ctx, AD_F64, 4, s2, dyv);
  cr_assert_eq(ad_backward(ctx, y, dy), AD_OK, "%s", ad_last_error(ctx));
  /* window 0: NaN at 1 and 4 (the last: 4); window 1: NaN at 3; window 2:
   * all -inf (the first: 8); window 3: 1 at 10 and 11 (the first: 10) */
  const double want[16] = {0, 0, 0, 2, 1, 0, 0, 0, 3, 0, 4, 0, 0, 0, 0, 0};
  expect_values(x->grad, 16, want, "dx");
  ad_tape_reset(ctx);

  /* the average of a window holding a NaN is NaN */
  y = ad_avg_pool2d(ctx, x, 2, 2, NULL);
  expect_values(y, 4, (const double[]){N, N, I, 0.875}, "avg_pool2d");
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(dy);
}

/* Ties: the first maximum in row-major window order takes the gradient
 * (not shared), and overlapping windows add up. */
Test(pool, max_pool_ties_go_to_the_first_maximum) {
  const double v[9] = {1, 1, 1, 1, 1, 2, 0, 2, 2};
  int64_t s[4] = {1, 1, 3, 3};
  ad_tensor *x = param(ctx, 4, s, v);
  ad_pool2d_opts o = {.stride = {1, 1}};
  ad_tensor *y = ad_max_pool2d(ctx, x, 2, 2, &o);
  expect_values(y, 4, (const double[]){1, 2, 2, 2}, "max_pool2d");
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  /* window (0,0): the 1 at 0; (0,1) and (1,1): the 2 at 5; (1,0): the 2 at 7 */
  expect_values(x->grad, 9, (const double[]){1, 0, 0, 0, 0, 2, 0, 1, 0}, "dx");
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* ---------------------------------------------- PyTorch's window rules */

/* Ones through a 3x3, stride 2, padding 1 ceil_mode pooling of a 4x4
 * input: the divisor counts the padding inside the padded input (the last
 * window, clipped to it, holds 2x2 of which 1x1 is input), or only the
 * input (exclude_pad). Values from torch.nn.functional.avg_pool2d. */
Test(pool, avg_pool_divisors) {
  int64_t s[4] = {1, 1, 4, 4}, so[4] = {1, 1, 3, 3};
  ad_tensor *x = ad_ones(ctx, AD_F64, 4, s);
  ad_pool2d_opts o = {.stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true};
  ad_tensor *y = ad_avg_pool2d(ctx, x, 3, 3, &o);
  expect_shape(y, 4, so, "avg_pool2d");
  const double want[9] = {4.0 / 9, 6.0 / 9, 2.0 / 6, 6.0 / 9, 1, 3.0 / 6, 2.0 / 6, 3.0 / 6, 0.25};
  for (int i = 0; i < 9; i++)
    cr_assert_float_eq(ad_tensor_get(y, i), want[i], 1e-15, "element %d: %.17g, want %.17g", i,
                       ad_tensor_get(y, i), want[i]);
  o.exclude_pad = true;
  y = ad_avg_pool2d(ctx, x, 3, 3, &o);
  expect_values(y, 9, (const double[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, "exclude_pad");
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* global_avg_pool2d divides the sum by H W, as ad_mean and PyTorch's
 * adaptive_avg_pool2d(x, 1) do: f32 {5, 0, 0} gives 1.6666666269 (5 / 3
 * rounded once), not 1.6666667461 (5 times 1/3 rounded). */
Test(pool, global_avg_pool_divides_as_mean_does) {
  int64_t s[3] = {1, 1, 3};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 3, s);
  ad_tensor_set(x, 0, 5);
  ad_tensor *y = ad_global_avg_pool2d(ctx, x), *m = ad_mean(ctx, x);
  cr_assert(y && m, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_item(y), (double)(5.0f / 3.0f), "%.10f", ad_tensor_item(y));
  cr_assert_eq(ad_tensor_item(y), ad_tensor_item(m));
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* Output sizes: the default stride is the kernel; ceil_mode counts a
 * partial last window but not one that would start in the right padding
 * (5 + 2 - 1 - 1 = 5 over stride 2 is 3.5: 4 windows by the ceiling, the
 * last starting at 6 - 1 = 5, past the input, so 3). */
/* Kernels of the largest size the attributes allow, mostly over padding:
 * every window covers the whole 16 x 16 image. No overflow in the work
 * estimate (UBSan), and the max kernels visit only the taps inside the
 * input (a loop over all 2^30 columns of each window row took minutes). */
Test(pool, huge_kernels_over_padding, .timeout = 60) {
  int64_t xs[4] = {1, 1, 16, 16}, os[4] = {1, 1, 17, 17}, k = INT64_C(1) << 30;
  ad_tensor *x = param(ctx, 4, xs, NULL);
  for (int64_t i = 0; i < x->size; i++) ad_tensor_set(x, i, (double)i);
  ad_pool2d_opts o = {.padding = {k / 2, k / 2}, .stride = {1, 1}};
  ad_tensor *m = ad_max_pool2d(ctx, x, k, k, &o);
  expect_shape(m, 4, os, "max_pool2d");
  for (int64_t i = 0; i < m->size; i++) cr_assert_eq(ad_tensor_get(m, i), 255.0);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, m), NULL), AD_OK, "%s", ad_last_error(ctx));
  for (int64_t i = 0; i < x->size; i++)
    cr_assert_eq(ad_tensor_get(x->grad, i), i == 255 ? 289.0 : 0.0, "grad[%lld]", (long long)i);
  o.exclude_pad = true;
  ad_tensor *a = ad_avg_pool2d(ctx, x, k, k, &o);
  expect_shape(a, 4, os, "avg_pool2d");
  for (int64_t i = 0; i < a->size; i++) cr_assert_eq(ad_tensor_get(a, i), 127.5);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

Test(pool, output_sizes_and_defaults) {
  int64_t s[4] = {2, 3, 24, 24}, s12[4] = {2, 3, 12, 12};
  ad_tensor *x = param(ctx, 4, s, NULL);
  ad_pool2d_opts zero = {0};
  expect_shape(ad_max_pool2d(ctx, x, 2, 2, NULL), 4, s12, "NULL opts");
  ad_tensor *y = ad_max_pool2d(ctx, x, 2, 2, &zero);
  expect_shape(y, 4, s12, "zero opts");
  const ad_attrs *at = ad_tensor_attrs(y);
  cr_assert_not_null(at);
  cr_assert(at->pool.stride[0] == 2 && at->pool.stride[1] == 2 && at->pool.dilation[0] == 1 &&
                at->pool.dilation[1] == 1 && !at->pool.ceil_mode,
            "recorded stride %lldx%lld dilation %lldx%lld", (long long)at->pool.stride[0],
            (long long)at->pool.stride[1], (long long)at->pool.dilation[0],
            (long long)at->pool.dilation[1]);
  cr_assert(ad_tensor_attrs(ad_avg_pool2d(ctx, x, 2, 2, NULL))->pool.count_include_pad,
            "count_include_pad is PyTorch's default");
  ad_tape_reset(ctx);

  int64_t s5[4] = {1, 1, 5, 5}, s3[4] = {1, 1, 3, 3}, s2[4] = {1, 1, 2, 2};
  ad_tensor *x5 = param(ctx, 4, s5, NULL);
  ad_pool2d_opts o = {.padding = {1, 1}, .ceil_mode = true};
  expect_shape(ad_max_pool2d(ctx, x5, 2, 2, &o), 4, s3, "ceil_mode, padding 1");
  o = (ad_pool2d_opts){.ceil_mode = true};
  expect_shape(ad_avg_pool2d(ctx, x5, 2, 2, &o), 4, s3, "ceil_mode");
  expect_shape(ad_avg_pool2d(ctx, x5, 2, 2, NULL), 4, s2, "floor");
  /* an empty batch pools to an empty batch */
  int64_t s0[4] = {0, 3, 4, 4}, s0o[4] = {0, 3, 2, 2};
  ad_tensor *x0 = param(ctx, 4, s0, NULL);
  expect_shape(ad_max_pool2d(ctx, x0, 2, 2, NULL), 4, s0o, "N = 0");
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(x5);
  ad_tensor_free(x0);
}

/* A 3-D (C, H, W) input pools as the 4-D one with N = 1, gradients too. */
Test(pool, chw_input_is_one_image) {
  int64_t s3[3] = {2, 5, 6}, s4[4] = {1, 2, 5, 6};
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  ad_tensor *a = ad_randn(ctx, &rng, AD_F64, 3, s3, 0, 1);
  ad_tensor *b = ad_from_data(ctx, AD_F64, 4, s4, a->data);
  ad_tensor_set_requires_grad(a, true);
  ad_tensor_set_requires_grad(b, true);
  ad_pool2d_opts o = {.stride = {2, 1}, .padding = {1, 0}, .ceil_mode = true};
  for (int avg = 0; avg < 2; avg++) {
    ad_tensor *ya = avg ? ad_avg_pool2d(ctx, a, 3, 2, &o) : ad_max_pool2d(ctx, a, 3, 2, &o);
    ad_tensor *yb = avg ? ad_avg_pool2d(ctx, b, 3, 2, &o) : ad_max_pool2d(ctx, b, 3, 2, &o);
    cr_assert(ya && yb, "%s", ad_last_error(ctx));
    cr_assert_eq(ya->ndim, 3);
    cr_assert_eq(ya->size, yb->size);
    for (int64_t i = 0; i < ya->size; i++)
      cr_assert_eq(ad_tensor_get(ya, i), ad_tensor_get(yb, i), "avg %d: element %lld", avg,
                   (long long)i);
    ad_tensor_zero_grad(a);
    ad_tensor_zero_grad(b);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_square(ctx, ya)), NULL), AD_OK);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_square(ctx, yb)), NULL), AD_OK);
    for (int64_t i = 0; i < a->size; i++)
      cr_assert_eq(ad_tensor_get(a->grad, i), ad_tensor_get(b->grad, i), "avg %d: grad %lld", avg,
                   (long long)i);
    ad_tape_reset(ctx);
  }
  ad_tensor_free(a);
  ad_tensor_free(b);
}

/* ------------------------------------------------------ adaptive pools */

/* ad_adaptive_max_pool2d and ad_adaptive_avg_pool2d against a loop over
 * PyTorch's windows (rows floor(i H / oh) to ceil((i + 1) H / oh)):
 * overlapping windows (7 -> 3, 5 -> 2), more outputs than inputs (3 -> 5),
 * a NaN, an inf, -inf and ties (the first maximum, or the last NaN, takes
 * the gradient; overlapping windows add theirs in window order). f64 and
 * f32; the mean is the window's sum in double over its size. */
static void adaptive_reference(const double *x, int64_t h, int64_t w, int64_t oh, int64_t ow,
                               const double *dy, double *ymax, double *yavg, double *dmax) {
  for (int64_t k = 0; k < h * w; k++) dmax[k] = 0;
  for (int64_t i = 0; i < oh; i++)
    for (int64_t j = 0; j < ow; j++) {
      int64_t h0 = i * h / oh, h1 = ((i + 1) * h + oh - 1) / oh;
      int64_t w0 = j * w / ow, w1 = ((j + 1) * w + ow - 1) / ow;
      int64_t arg = h0 * w + w0;
      double best = -INFINITY, sum = 0;
      for (int64_t y = h0; y < h1; y++)
        for (int64_t c = w0; c < w1; c++) {
          double v = x[y * w + c];
          sum += v;
          if (v > best || isnan(v)) best = v, arg = y * w + c;
        }
      ymax[i * ow + j] = best;
      yavg[i * ow + j] = sum / (double)((h1 - h0) * (w1 - w0));
      dmax[arg] += dy[i * ow + j];
    }
}

Test(pool, adaptive_pools_take_pytorchs_windows) {
  static const int64_t sz[3][4] = {{7, 5, 3, 2}, {3, 4, 5, 3}, {5, 7, 5, 7}};
  for (int dti = 0; dti < 2; dti++) {
    ad_dtype dt = dti ? AD_F32 : AD_F64;
    for (int c = 0; c < 3; c++) {
      int64_t h = sz[c][0], w = sz[c][1], oh = sz[c][2], ow = sz[c][3];
      double xv[35], dyv[35], ymax[35], yavg[35], dmax[35];
      for (int64_t k = 0; k < h * w; k++) xv[k] = (double)((k * 7) % 5) - 2; /* ties */
      xv[3] = NAN, xv[h * w - 2] = INFINITY, xv[h * w - 1] = -INFINITY;
      for (int64_t k = 0; k < oh * ow; k++) dyv[k] = 0.5 + (double)k;
      adaptive_reference(xv, h, w, oh, ow, dyv, ymax, yavg, dmax);
      int64_t s[4] = {1, 1, h, w}, so[4] = {1, 1, oh, ow};
      ad_tensor *x = ad_zeros(ctx, dt, 4, s), *dy = ad_zeros(ctx, dt, 4, so);
      cr_assert(x && dy && ad_tensor_set_requires_grad(x, true) == AD_OK);
      for (int64_t k = 0; k < h * w; k++) ad_tensor_set(x, k, xv[k]);
      for (int64_t k = 0; k < oh * ow; k++) ad_tensor_set(dy, k, dyv[k]);
      ad_tensor *y = ad_adaptive_max_pool2d(ctx, x, oh, ow);
      expect_shape(y, 4, so, "adaptive_max_pool2d");
      expect_values(y, oh * ow, ymax, "adaptive_max_pool2d");
      cr_assert_eq(ad_backward(ctx, y, dy), AD_OK, "%s", ad_last_error(ctx));
      expect_values(x->grad, h * w, dmax, "adaptive_max_pool2d's dx");
      ad_tape_reset(ctx);
      /* the mean of f32 rounds the double mean once */
      for (int64_t k = 0; k < oh * ow; k++) yavg[k] = dti ? (double)(float)yavg[k] : yavg[k];
      y = ad_adaptive_avg_pool2d(ctx, x, oh, ow);
      expect_shape(y, 4, so, "adaptive_avg_pool2d");
      expect_values(y, oh * ow, yavg, "adaptive_avg_pool2d");
      ad_tape_reset(ctx);
      ad_tensor_free(x);
      ad_tensor_free(dy);
    }
  }
  /* a window wider than the kernel's span (600 columns to 1: one window
   * at a time) and windows the span holds two of (600 to 3), the same rule */
  static double xw[600], yw[3], ya[3], dw[600], dyw[3] = {1, 2, 3};
  for (int64_t k = 0; k < 600; k++) xw[k] = (double)((k * 37) % 101);
  xw[450] = NAN;
  int64_t sw[4] = {1, 1, 1, 600};
  for (int64_t ow = 1; ow <= 3; ow += 2) {
    int64_t sow[4] = {1, 1, 1, ow};
    adaptive_reference(xw, 1, 600, 1, ow, dyw, yw, ya, dw);
    ad_tensor *x = param(ctx, 4, sw, xw), *dy = ad_from_data(ctx, AD_F64, 4, sow, dyw);
    ad_tensor *y = ad_adaptive_max_pool2d(ctx, x, 1, ow);
    expect_values(y, ow, yw, "adaptive_max_pool2d, wide windows");
    cr_assert_eq(ad_backward(ctx, y, dy), AD_OK, "%s", ad_last_error(ctx));
    expect_values(x->grad, 600, dw, "adaptive_max_pool2d's dx, wide windows");
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(dy);
  }

  int64_t s3[3] = {2, 4, 4};
  ad_tensor *x = param(ctx, 3, s3, NULL);
  cr_assert_null(ad_adaptive_max_pool2d(ctx, x, 0, 2));
  expect_error(AD_ERR_ARG, "adaptive_max_pool2d: output size 0x2 must be in [1, 2^30]", NULL);
  cr_assert_null(ad_adaptive_avg_pool2d(ctx, x, 3, (int64_t)1 << 31));
  expect_error(AD_ERR_ARG, "adaptive_avg_pool2d: output size 3x2147483648", NULL);
  cr_assert_null(ad_adaptive_max_pool2d(ctx, NULL, 2, 2));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_NULL);
  ad_clear_error(ctx);
  expect_shape(ad_adaptive_avg_pool2d(ctx, x, 3, 5), 3, (const int64_t[]){2, 3, 5}, "CHW");
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* Second derivatives of both, to any order: the maximum's gradient is a
 * scatter_add (its own gradient the gather), the mean's avg_pool2d's
 * partner with the adaptive attributes. */
static ad_tensor *adaptive_sq(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n, (void)ud;
  ad_tensor *xy = ad_mul(c, in[0], in[1]);
  ad_tensor *m =
      ad_mul(c, ad_adaptive_max_pool2d(c, xy, 3, 4), ad_adaptive_max_pool2d(c, in[0], 3, 4));
  ad_tensor *a = ad_square(c, ad_adaptive_avg_pool2d(c, xy, 3, 4));
  return ad_add(c, m, a);
}

Test(pool, adaptive_pools_second_order) {
  int64_t s[4] = {2, 2, 7, 6};
  ad_rng rng;
  ad_rng_seed(&rng, 12);
  ad_tensor *in[2] = {ad_zeros(ctx, AD_F64, 4, s), ad_rand(ctx, &rng, AD_F64, 4, s, 0.5, 1.5)};
  cr_assert(in[0] && in[1]);
  for (int64_t i = 0; i < in[0]->size; i++)
    ad_tensor_set(in[0], i, 0.25 * (double)((i * 37) % in[0]->size) - 5);
  ad_tensor_set_requires_grad(in[0], true);
  ad_tensor_set_requires_grad(in[1], true);
  ad_check_report r;
  for (int second = 0; second < 2; second++) {
    ad_status st = second ? ad_gradgradcheck(ctx, adaptive_sq, NULL, 2, in, NULL, &r)
                          : ad_gradcheck(ctx, adaptive_sq, NULL, 2, in, NULL, &r);
    cr_assert_eq(st, AD_OK, "%s", ad_last_error(ctx));
    cr_assert(r.passed, "order %d: input %d [%lld] analytic %.10g numeric %.10g", second + 1,
              r.input, (long long)r.index, r.analytic, r.numeric);
    cr_assert_gt(r.checked, 0);
  }
  ad_tensor_free(in[0]);
  ad_tensor_free(in[1]);
}

/* --------------------------------------------------- second derivatives */

/* Composites whose second derivative is not zero: the double backward of
 * max_pool2d runs max_pool2d_select, that of avg_pool2d avg_pool2d again. */
static ad_tensor *max_sq(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  const ad_pool2d_opts *o = ud;
  return ad_mul(c, ad_max_pool2d(c, ad_mul(c, in[0], in[1]), 3, 3, o),
                ad_max_pool2d(c, in[0], 3, 3, o));
}

static ad_tensor *avg_sq(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  const ad_pool2d_opts *o = ud;
  ad_tensor *y = ad_avg_pool2d(c, ad_mul(c, in[0], in[1]), 3, 3, o);
  return ad_add(c, ad_square(c, y), ad_global_avg_pool2d(c, ad_square(c, in[0])));
}

Test(pool, second_order_through_composites) {
  int64_t s[4] = {2, 2, 7, 6};
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  ad_tensor *in[2] = {ad_zeros(ctx, AD_F64, 4, s), ad_rand(ctx, &rng, AD_F64, 4, s, 0.5, 1.5)};
  cr_assert(in[0] && in[1]);
  /* distinct values 0.25 apart: no tie moves within the difference step */
  for (int64_t i = 0; i < in[0]->size; i++)
    ad_tensor_set(in[0], i, 0.25 * (double)((i * 37) % in[0]->size) - 5);
  ad_tensor_set_requires_grad(in[0], true);
  ad_tensor_set_requires_grad(in[1], true);
  ad_pool2d_opts o = {.stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true};
  ad_check_report r;
  for (int avg = 0; avg < 2; avg++) {
    for (int second = 0; second < 2; second++) {
      ad_status st = second ? ad_gradgradcheck(ctx, avg ? avg_sq : max_sq, &o, 2, in, NULL, &r)
                            : ad_gradcheck(ctx, avg ? avg_sq : max_sq, &o, 2, in, NULL, &r);
      cr_assert_eq(st, AD_OK, "%s", ad_last_error(ctx));
      cr_assert(r.passed, "avg %d order %d: input %d [%lld] analytic %.10g numeric %.10g", avg,
                second + 1, r.input, (long long)r.index, r.analytic, r.numeric);
      cr_assert_gt(r.checked, 0);
    }
    o.exclude_pad = true;
  }
  ad_tensor_free(in[0]);
  ad_tensor_free(in[1]);
}

/* ------------------------------------------------------------- threads */

/* The planes are split over threads: the same bits as one thread, forward
 * and backward, in both dtypes. */
Test(pool, threads_give_the_same_bits) {
  int64_t s[4] = {8, 16, 24, 24};
  ad_pool2d_opts o = {.stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true};
  for (int dti = 0; dti < 2; dti++) {
    ad_dtype dt = dti ? AD_F64 : AD_F32;
    ad_tensor *y1[2] = {0}, *g1[2] = {0};
    for (int threads = 1; threads <= 2; threads++) {
      cr_assert_eq(ad_set_num_threads(threads), AD_OK);
      ad_rng rng;
      ad_rng_seed(&rng, 5);
      ad_tensor *x = ad_randn(ctx, &rng, dt, 4, s, 0, 1);
      ad_tensor_set_requires_grad(x, true);
      for (int avg = 0; avg < 2; avg++) {
        ad_tensor *y = avg ? ad_avg_pool2d(ctx, x, 3, 3, &o) : ad_max_pool2d(ctx, x, 3, 3, &o);
        ad_tensor_zero_grad(x);
        cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_square(ctx, y)), NULL), AD_OK, "%s",
                     ad_last_error(ctx));
        if (threads == 1) {
          y1[avg] = ad_tensor_clone(ctx, y);
          g1[avg] = ad_tensor_clone(ctx, x->grad);
        } else {
          cr_assert_eq(memcmp(y->data, y1[avg]->data, (size_t)y->size * ad_dtype_size(dt)), 0,
                       "%s avg %d: outputs differ with 2 threads", ad_dtype_name(dt), avg);
          cr_assert_eq(memcmp(x->grad->data, g1[avg]->data, (size_t)x->size * ad_dtype_size(dt)), 0,
                       "%s avg %d: gradients differ with 2 threads", ad_dtype_name(dt), avg);
        }
        ad_tape_reset(ctx);
      }
      ad_tensor_free(x);
    }
    for (int k = 0; k < 2; k++) {
      ad_tensor_free(y1[k]);
      ad_tensor_free(g1[k]);
    }
  }
  cr_assert_eq(ad_set_num_threads(1), AD_OK);
}

/* ------------------------------------------- the K x K, stride K fast path */

/* Fills t (f32 or f64) with values from a small set, so that windows hold
 * ties, signed zeros, infinities and NaNs of different payloads. */
static void fill_tricky(ad_tensor *t, ad_rng *rng) {
  for (int64_t i = 0; i < t->size; i++) {
    int r = (int)(ad_rng_uniform(rng) * 16);
    double v = r < 4    ? 1
               : r < 6  ? 0
               : r < 8  ? -0.0
               : r < 10 ? 2
               : r < 11 ? -INFINITY
               : r < 12 ? INFINITY
               : r < 14 ? -1
                        : NAN;
    if (t->dtype == AD_F32) {
      float f = (float)v;
      if (r == 15) { /* a second NaN payload, to tell the last NaN from the first */
        uint32_t b = 0x7fc00001u + (uint32_t)i;
        memcpy(&f, &b, sizeof f);
      }
      ((float *)t->data)[i] = f;
    } else {
      if (r == 15) {
        uint64_t b = 0x7ff8000000000001u + (uint64_t)i;
        memcpy(&v, &b, sizeof v);
      }
      ((double *)t->data)[i] = v;
    }
  }
}

/* The argmax (flat index into the plane) of window (oy, ox) of a k x k,
 * stride k pooling: the first maximum in row-major order, or the last NaN. */
static int64_t ref_argmax(const ad_tensor *x, int64_t base, int64_t iw, int64_t kh, int64_t kw,
                          int64_t oy, int64_t ox) {
  int64_t arg = -1;
  double best = 0;
  for (int64_t t = 0; t < kh; t++)
    for (int64_t u = 0; u < kw; u++) {
      int64_t i = (oy * kh + t) * iw + ox * kw + u;
      double v = ad_tensor_get(x, base + i);
      if (arg < 0 || v > best || isnan(v)) arg = i, best = v;
    }
  return arg;
}

static void expect_bits(const ad_tensor *got, const ad_tensor *want, const char *what) {
  cr_assert_not_null(got, "%s: %s", what, ad_last_error(ctx));
  cr_assert_eq(got->size, want->size, "%s: size", what);
  size_t es = ad_dtype_size(got->dtype);
  for (int64_t i = 0; i < got->size; i++)
    cr_assert_eq(memcmp((const char *)got->data + (size_t)i * es,
                        (const char *)want->data + (size_t)i * es, es),
                 0, "%s: element %lld differs (%.17g, want %.17g)", what, (long long)i,
                 ad_tensor_get(got, i), ad_tensor_get(want, i));
}

/* max_pool2d, max_pool2d_backward and max_pool2d_select with a 2x2, 3x3,
 * 1x2, 1x3, 2x1 or 3x1 kernel (the last four: the 1-D pools and the depth
 * stage of the 3-D ones), stride = kernel, no padding (the fast path, in
 * both dtypes), give every bit of a plain reference, and of the general
 * kernels (reached with ceil_mode on a size it does not change), on data
 * full of ties and NaNs, and max_pool2d_indices its argmaxes; also with H,
 * W not multiples of the kernel (rows and columns no window covers). */
Test(pool, fast_path_gives_the_general_bits) {
  static const int64_t shapes[][4] = {{2, 3, 8, 10}, {1, 2, 7, 9}, {2, 2, 9, 12}, {1, 3, 10, 11}};
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  int max_id = ad_op_find(ctx, "max_pool2d"), back_id = ad_op_find(ctx, "max_pool2d_backward");
  int sel_id = ad_op_find(ctx, "max_pool2d_select");
  for (int dti = 0; dti < 2; dti++)
    for (int ki = 0; ki < 6; ki++)
      for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        static const int64_t ks[6][2] = {{2, 2}, {3, 3}, {1, 2}, {1, 3}, {2, 1}, {3, 1}};
        const int64_t kh = ks[ki][0], kw = ks[ki][1];
        ad_dtype dt = dti ? AD_F64 : AD_F32;
        const int64_t *s = shapes[si];
        int64_t oh = s[2] / kh, ow = s[3] / kw, so[4] = {s[0], s[1], oh, ow};
        ad_tensor *x = ad_zeros(ctx, dt, 4, s), *gx = ad_zeros(ctx, dt, 4, s);
        ad_tensor *dy = ad_zeros(ctx, dt, 4, so);
        fill_tricky(x, &rng);
        fill_tricky(gx, &rng);
        fill_tricky(dy, &rng);
        /* the reference: y, the scatter and the select at each argmax */
        ad_tensor *ry = ad_zeros(ctx, dt, 4, so), *rb = ad_zeros(ctx, dt, 4, s);
        ad_tensor *rs = ad_zeros(ctx, dt, 4, so), *ri = ad_zeros(ctx, AD_I32, 4, so);
        size_t es = ad_dtype_size(dt);
        for (int64_t p = 0; p < s[0] * s[1]; p++)
          for (int64_t oy = 0; oy < oh; oy++)
            for (int64_t ox = 0; ox < ow; ox++) {
              int64_t a = p * s[2] * s[3] + ref_argmax(x, p * s[2] * s[3], s[3], kh, kw, oy, ox);
              int64_t w = (p * oh + oy) * ow + ox;
              ((int32_t *)ri->data)[w] = (int32_t)(a - p * s[2] * s[3]);
              memcpy((char *)ry->data + (size_t)w * es, (char *)x->data + (size_t)a * es, es);
              memcpy((char *)rs->data + (size_t)w * es, (char *)gx->data + (size_t)a * es, es);
              if (dt == AD_F32)
                ((float *)rb->data)[a] = 0.0f + ((float *)dy->data)[w];
              else
                ((double *)rb->data)[a] = 0.0 + ((double *)dy->data)[w];
            }
        for (int ceil = 0; ceil < 2; ceil++) {
          bool even = s[2] % kh == 0 && s[3] % kw == 0;
          if (ceil && !even) continue;
          ad_attrs at;
          memset(&at, 0, sizeof at);
          at.pool = (ad_pool_attrs){{kh, kw}, {kh, kw}, {0, 0}, {1, 1}, ceil, true, {0, 0}, false};
          char what[96];
          snprintf(what, sizeof what, "%s k %lldx%lld shape %zu ceil %d", ad_dtype_name(dt),
                   (long long)kh, (long long)kw, si, ceil);
          ad_tensor *in[2] = {dy, x};
          expect_bits(ad_op_apply(ctx, max_id, 1, &x, &at), ry, what);
          expect_bits(ad_op_apply(ctx, back_id, 2, in, &at), rb, what);
          in[0] = gx;
          expect_bits(ad_op_apply(ctx, sel_id, 2, in, &at), rs, what);
          expect_bits(ad_max_pool2d_indices(ctx, x, kh, kw, &(ad_pool2d_opts){.ceil_mode = ceil}),
                      ri, what);
        }
        ad_tape_reset(ctx);
      }
}

/* Overlapping and padded windows, dilated ones, ceil_mode's partial last
 * window (the general kernel, whose windows of a row run side by side):
 * max_pool2d's values and max_pool2d_indices' argmaxes against a plain
 * scan of each window in row-major order (the first maximum, or the last
 * NaN) on data full of ties, signed zeros, infinities and NaNs of
 * different payloads; rows as wide as a block of windows and wider. */
Test(pool, overlapping_windows_as_the_plain_scan) {
  static const struct {
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    bool ceil;
  } gs[] = {{3, 3, 1, 1, 1, 1, 1, 1, false}, {3, 3, 2, 2, 1, 1, 1, 1, false},
            {2, 2, 1, 1, 0, 0, 1, 1, false}, {3, 3, 2, 2, 1, 1, 2, 2, false},
            {5, 3, 3, 2, 2, 1, 1, 1, true},  {1, 3, 1, 1, 0, 1, 1, 1, false}};
  static const int64_t shapes[][4] = {{2, 3, 13, 37}, {1, 2, 9, 300}};
  ad_rng rng;
  ad_rng_seed(&rng, 19);
  for (int dti = 0; dti < 2; dti++)
    for (size_t gi = 0; gi < sizeof gs / sizeof *gs; gi++)
      for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        ad_dtype dt = dti ? AD_F64 : AD_F32;
        const int64_t *s = shapes[si];
        ad_pool2d_opts o = {.stride = {gs[gi].sh, gs[gi].sw},
                            .padding = {gs[gi].ph, gs[gi].pw},
                            .dilation = {gs[gi].dh, gs[gi].dw},
                            .ceil_mode = gs[gi].ceil};
        ad_tensor *x = ad_zeros(ctx, dt, 4, s);
        cr_assert_not_null(x);
        fill_tricky(x, &rng);
        ad_tensor *y = ad_max_pool2d(ctx, x, gs[gi].kh, gs[gi].kw, &o);
        ad_tensor *ix = ad_max_pool2d_indices(ctx, x, gs[gi].kh, gs[gi].kw, &o);
        cr_assert(y && ix, "%s", ad_last_error(ctx));
        int64_t oh = y->shape[2], ow = y->shape[3], plane = s[2] * s[3];
        size_t es = ad_dtype_size(dt);
        for (int64_t p = 0; p < s[0] * s[1]; p++)
          for (int64_t oy = 0; oy < oh; oy++)
            for (int64_t ox = 0; ox < ow; ox++) {
              int64_t arg = -1;
              double best = 0;
              for (int64_t t = 0; t < gs[gi].kh; t++)
                for (int64_t u = 0; u < gs[gi].kw; u++) {
                  int64_t r = oy * gs[gi].sh - gs[gi].ph + t * gs[gi].dh;
                  int64_t c = ox * gs[gi].sw - gs[gi].pw + u * gs[gi].dw;
                  if (r < 0 || r >= s[2] || c < 0 || c >= s[3]) continue;
                  double v = ad_tensor_get(x, p * plane + r * s[3] + c);
                  if (arg < 0 || v > best || isnan(v)) arg = r * s[3] + c, best = v;
                }
              int64_t w = (p * oh + oy) * ow + ox;
              cr_assert(arg >= 0, "geometry %zu: a window with no tap", gi);
              cr_assert_eq(((const int32_t *)ix->data)[w], arg,
                           "%s geometry %zu shape %zu: window (%lld, %lld, %lld) index %d, want "
                           "%lld",
                           ad_dtype_name(dt), gi, si, (long long)p, (long long)oy, (long long)ox,
                           ((const int32_t *)ix->data)[w], (long long)arg);
              cr_assert_eq(memcmp((const char *)y->data + (size_t)w * es,
                                  (const char *)x->data + (size_t)(p * plane + arg) * es, es),
                           0, "%s geometry %zu shape %zu: window (%lld, %lld, %lld) value",
                           ad_dtype_name(dt), gi, si, (long long)p, (long long)oy, (long long)ox);
            }
        ad_tape_reset(ctx);
        ad_tensor_free(x);
      }
}

/* avg_pool2d_backward with stride = kernel and no padding (its tiled
 * path: each element written once) gives the general loop's bits (reached
 * with ceil_mode on sizes it does not change) and 0 + dy / (kh kw) in each
 * window, 0 where no window reaches: NaN, infinities and -0 in dy (0 + -0
 * is +0, as the general loop adds into zeros), H, W not multiples. */
Test(pool, tiled_avg_backward_gives_the_general_bits) {
  static const int64_t shapes[][4] = {{2, 3, 12, 12}, {1, 2, 7, 9}, {2, 1, 6, 10}};
  static const int64_t ks[][2] = {{2, 2}, {3, 3}, {1, 2}, {2, 1}, {3, 1}, {2, 3}};
  ad_rng rng;
  ad_rng_seed(&rng, 13);
  int back_id = ad_op_find(ctx, "avg_pool2d_backward");
  for (int dti = 0; dti < 2; dti++)
    for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++)
      for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        ad_dtype dt = dti ? AD_F64 : AD_F32;
        const int64_t *s = shapes[si], kh = ks[ki][0], kw = ks[ki][1];
        int64_t oh = s[2] / kh, ow = s[3] / kw, so[4] = {s[0], s[1], oh, ow};
        ad_tensor *dy = ad_zeros(ctx, dt, 4, so), *want = ad_zeros(ctx, dt, 4, s);
        fill_tricky(dy, &rng);
        for (int64_t p = 0; p < s[0] * s[1]; p++)
          for (int64_t i = 0; i < oh * kh; i++)
            for (int64_t j = 0; j < ow * kw; j++) {
              int64_t w = (p * oh + i / kh) * ow + j / kw, e = (p * s[2] + i) * s[3] + j;
              if (dt == AD_F32)
                ((float *)want->data)[e] =
                    0.0f + (float)((double)((float *)dy->data)[w] / (double)(kh * kw));
              else
                ((double *)want->data)[e] = 0.0 + ((double *)dy->data)[w] / (double)(kh * kw);
            }
        for (int ceil = 0; ceil < 2; ceil++) {
          if (ceil && (s[2] % kh || s[3] % kw)) continue;
          ad_attrs at;
          memset(&at, 0, sizeof at);
          at.pool =
              (ad_pool_attrs){{kh, kw}, {kh, kw}, {0, 0}, {1, 1}, ceil, true, {s[2], s[3]}, false};
          char what[96];
          snprintf(what, sizeof what, "%s k %lldx%lld shape %zu ceil %d", ad_dtype_name(dt),
                   (long long)kh, (long long)kw, si, ceil);
          expect_bits(ad_op_apply(ctx, back_id, 1, &dy, &at), want, what);
        }
        ad_tape_reset(ctx);
        ad_tensor_free(dy);
        ad_tensor_free(want);
      }
}

/* Adaptive max pooling picks the element the row-major scan picks (the
 * first maximum, or the last NaN: NaNs of distinct payloads tell which),
 * bit for bit, on data full of ties, +-0, +-inf and NaNs, over windows that
 * overlap in both axes, f32 and f64; its gradient goes there. */
Test(pool, adaptive_max_takes_the_row_major_scans_element) {
  static const int64_t sz[][4] = {{32, 32, 7, 7}, {9, 40, 4, 13}, {5, 3, 8, 7}, {17, 600, 3, 5}};
  ad_rng rng;
  ad_rng_seed(&rng, 17);
  for (int dti = 0; dti < 2; dti++)
    for (size_t c = 0; c < sizeof sz / sizeof *sz; c++) {
      ad_dtype dt = dti ? AD_F64 : AD_F32;
      int64_t h = sz[c][0], w = sz[c][1], oh = sz[c][2], ow = sz[c][3];
      int64_t s[4] = {2, 1, h, w};
      ad_tensor *x = ad_zeros(ctx, dt, 4, s);
      fill_tricky(x, &rng);
      cr_assert_eq(ad_tensor_set_requires_grad(x, true), AD_OK);
      ad_tensor *y = ad_adaptive_max_pool2d(ctx, x, oh, ow);
      cr_assert_not_null(y, "%s", ad_last_error(ctx));
      cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
      size_t es = ad_dtype_size(dt);
      ad_tensor *want_dx = ad_zeros(ctx, dt, 4, s);
      for (int64_t p = 0; p < 2; p++)
        for (int64_t i = 0; i < oh; i++)
          for (int64_t j = 0; j < ow; j++) {
            int64_t h0 = i * h / oh, h1 = ((i + 1) * h + oh - 1) / oh;
            int64_t w0 = j * w / ow, w1 = ((j + 1) * w + ow - 1) / ow;
            int64_t arg = p * h * w + h0 * w + w0;
            for (int64_t yy = h0; yy < h1; yy++)
              for (int64_t cc = w0; cc < w1; cc++) {
                int64_t e = p * h * w + yy * w + cc;
                double v = ad_tensor_get(x, e), b = ad_tensor_get(x, arg);
                if (v > b || isnan(v)) arg = e;
              }
            int64_t o = (p * oh + i) * ow + j;
            QUICK_ASSERT(
                !memcmp((char *)y->data + (size_t)o * es, (char *)x->data + (size_t)arg * es, es),
                "case %zu %s: output %lld is not x[%lld]", c, ad_dtype_name(dt), (long long)o,
                (long long)arg);
            ad_tensor_set(want_dx, arg, ad_tensor_get(want_dx, arg) + 1);
          }
      for (int64_t e = 0; e < x->size; e++)
        QUICK_ASSERT(ad_tensor_get(x->grad, e) == ad_tensor_get(want_dx, e),
                     "case %zu %s: dx[%lld] = %g, want %g", c, ad_dtype_name(dt), (long long)e,
                     ad_tensor_get(x->grad, e), ad_tensor_get(want_dx, e));
      ad_tape_reset(ctx);
      ad_tensor_free(x);
      ad_tensor_free(want_dx);
    }
}
