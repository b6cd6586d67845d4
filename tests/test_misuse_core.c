/* test_misuse_core.c: the core refuses misuse with an error naming what is
 * wrong, and never reads or writes outside its memory: sizes that overflow,
 * bounds that overflow, values an int32 cannot hold, tensors of another
 * context, seeds of the wrong shape, a forgotten tape reset, retained
 * gradients over two passes. Built and run under the sanitizers in CI. */
#include "ad_ext.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

TEST_CTX_SUITE(misuse_core);

#define expect_error(...) test_expect_error(ctx, __VA_ARGS__)

static ad_tensor *leaf(ad_dtype dt, int ndim, const int64_t *shape, double v) {
  ad_tensor *t = ad_full(ctx, dt, ndim, shape, v);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  if (dt != AD_I32) cr_assert_eq(ad_tensor_set_requires_grad(t, true), AD_OK);
  return t;
}

/* ------------------------------------------------ sizes that overflow */

Test(misuse_core, empty_product_with_a_huge_result_is_refused) {
  int64_t sa[2] = {INT64_C(1) << 32, 0}, sb[2] = {0, INT64_C(1) << 32};
  ad_tensor *a = leaf(AD_F32, 2, sa, 0), *b = leaf(AD_F32, 2, sb, 0);
  cr_assert_eq(a->size, 0);
  cr_assert_null(ad_matmul(ctx, a, b, false, false));
  expect_error(AD_ERR_SHAPE, "matmul of [4294967296,0], [0,4294967296]",
               "[4294967296,4294967296] is too large", "2^40", NULL);
  /* the same through expand */
  int64_t e0[3] = {0, INT64_C(1) << 32, 1};
  ad_tensor *e = leaf(AD_F32, 3, e0, 0);
  int64_t big[3] = {0, INT64_C(1) << 32, INT64_C(1) << 32};
  cr_assert_null(ad_expand(ctx, e, 3, big));
  expect_error(AD_ERR_SHAPE, "expand", "too large", NULL);
}

Test(misuse_core, broadcast_of_two_large_shapes_is_refused) {
  int64_t sa[3] = {0, INT64_C(1) << 30, 1}, sb[3] = {1, 1, INT64_C(1) << 11};
  /* [0, 2^30, 1] + [1, 1, 2^11] is [0, 2^30, 2^11]: empty, yet its non-zero
   * dimensions pass the limit, as for a constructor */
  ad_tensor *a = leaf(AD_F32, 3, sa, 0), *b = leaf(AD_F32, 3, sb, 0);
  ad_tensor *s = ad_add(ctx, a, b);
  cr_assert_null(s);
  expect_error(AD_ERR_SHAPE, "add of [0,1073741824,1], [1,1,2048]", "too large", NULL);
}

Test(misuse_core, reshape_product_does_not_wrap) {
  int64_t s0[1] = {0};
  ad_tensor *x = leaf(AD_F32, 1, s0, 0);
  /* 2^62 * 2^62 * 0 wraps to 0 in int64: must not pass as "0 elements" */
  int64_t t[3] = {INT64_C(1) << 62, INT64_C(1) << 62, 0};
  cr_assert_null(ad_reshape(ctx, x, 3, t));
  expect_error(AD_ERR_SHAPE, "reshape: shape [4611686018427387904,4611686018427387904,0]",
               "too large", NULL);
  int64_t t2[3] = {INT64_C(1) << 62, -1, 0};
  cr_assert_null(ad_reshape(ctx, x, 3, t2));
  expect_error(AD_ERR_SHAPE, "reshape", NULL);
}

Test(misuse_core, padding_that_would_overflow_is_refused) {
  int64_t s[1] = {3};
  ad_tensor *x = leaf(AD_F64, 1, s, 1);
  cr_assert_null(ad_pad(ctx, x, 0, INT64_MAX, 1));
  expect_error(AD_ERR_SHAPE, "pad: padding 9223372036854775807, 1 is more than 2^40", NULL);
  cr_assert_null(ad_pad(ctx, x, 0, INT64_C(1) << 40, INT64_C(1) << 40));
  expect_error(AD_ERR_SHAPE, "pad of [3]", "too large", NULL);
}

/* ------------------------------------------------ bounds that overflow */

Test(misuse_core, narrow_start_near_int64_max_is_refused) {
  int64_t s[1] = {4};
  ad_tensor *x = leaf(AD_F64, 1, s, 1);
  cr_assert_null(ad_narrow(ctx, x, 0, INT64_MAX - 1, 3)); /* start + len wraps negative */
  expect_error(AD_ERR_ARG, "narrow: start 9223372036854775806, length 3 is outside 0..4", NULL);
  cr_assert_null(ad_narrow(ctx, x, 0, 2, INT64_MAX));
  expect_error(AD_ERR_ARG, "narrow", "outside", NULL);
  ad_tensor *ok = ad_narrow(ctx, x, 0, 4, 0);
  cr_assert_not_null(ok, "%s", ad_last_error(ctx));
  cr_assert_eq(ok->size, 0);
}

/* ------------------------------------------- values an i32 cannot hold */

Test(misuse_core, scalar_refuses_an_i32_value_it_cannot_hold) {
  /* a builder returns NULL on error, not a tensor with an unwritten value */
  cr_assert_null(ad_scalar(ctx, AD_I32, NAN));
  expect_error(AD_ERR_ARG, "scalar: nan cannot be stored in an i32 tensor", NULL);
  cr_assert_null(ad_scalar(ctx, AD_I32, 1e10));
  expect_error(AD_ERR_ARG, "scalar: 1e+10 cannot be stored", NULL);
  ad_tensor *sc = ad_scalar(ctx, AD_I32, -7.9); /* truncated toward zero */
  cr_assert_not_null(sc, "%s", ad_last_error(ctx));
  cr_assert_eq(((int32_t *)sc->data)[0], -7);
}

Test(misuse_core, i32_stores_refuse_nan_and_out_of_range) {
  int64_t s[1] = {3};
  ad_tensor *t = ad_zeros(ctx, AD_I32, 1, s);
  cr_assert_not_null(t);
  cr_assert_eq(ad_tensor_set(t, 0, NAN), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "tensor_set: nan cannot be stored in an i32 tensor", NULL);
  cr_assert_eq(ad_tensor_set(t, 1, 3e9), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "3e+09", NULL);
  cr_assert_eq(ad_tensor_set(t, 1, -2147483648.5), AD_OK); /* truncates to INT32_MIN */
  cr_assert_eq(((int32_t *)t->data)[1], INT32_MIN);
  cr_assert_eq(ad_tensor_set(t, 2, 2147483647.9), AD_OK);
  cr_assert_eq(((int32_t *)t->data)[2], INT32_MAX);
  cr_assert_eq(ad_tensor_fill(t, INFINITY), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "tensor_fill: inf", NULL);
  cr_assert_eq(((int32_t *)t->data)[2], INT32_MAX, "a refused fill changes nothing");
  cr_assert_eq(ad_tensor_fill(NULL, 1), AD_ERR_NULL);

  cr_assert_null(ad_full(ctx, AD_I32, 1, s, NAN));
  expect_error(AD_ERR_ARG, "full: nan cannot be stored", NULL);
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  cr_assert_null(ad_rand(ctx, &rng, AD_I32, 1, s, 0, 1e12));
  expect_error(AD_ERR_ARG, "rand:", "i32", NULL);
  cr_assert_null(ad_randn(ctx, &rng, AD_I32, 1, s, 0, NAN));
  expect_error(AD_ERR_ARG, "randn:", NULL);
  cr_assert_null(ad_arange(ctx, AD_I32, 3e9, 3e9 + 2, 1));
  expect_error(AD_ERR_ARG, "arange:", NULL);

  float src[3] = {1.5f, NAN, 2};
  ad_tensor *f = ad_from_data(ctx, AD_F32, 1, s, src);
  ad_tensor_fill(t, 7);
  cr_assert_eq(ad_tensor_copy_data(t, f), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "copy_data: nan", NULL);
  cr_assert_eq(((int32_t *)t->data)[0], 7, "a refused copy changes nothing");
  ((float *)f->data)[1] = -3.7f;
  cr_assert_eq(ad_tensor_copy_data(t, f), AD_OK);
  cr_assert_eq(((int32_t *)t->data)[1], -3);
}

Test(misuse_core, arange_with_too_many_elements_is_refused) {
  cr_assert_null(ad_arange(ctx, AD_F32, 0, 1e30, 1));
  expect_error(AD_ERR_ARG, "arange: 0..1e+30 step 1 has 1e+30 elements, more than 2^40", NULL);
  cr_assert_null(ad_arange(ctx, AD_F64, -1e308, 1e308, 1e-300)); /* the count overflows to inf */
  expect_error(AD_ERR_ARG, "arange", "2^40", NULL);
  ad_tensor *e = ad_arange(ctx, AD_F64, 5, 0, 1);
  cr_assert_not_null(e);
  cr_assert_eq(e->size, 0);
}

/* --------------------------------------------- tensors of another context */

Test(misuse_core, an_op_refuses_a_tensor_of_another_context) {
  ad_ctx *other = ad_ctx_new();
  int64_t s[1] = {2};
  ad_tensor *a = leaf(AD_F64, 1, s, 1);
  ad_tensor *b = ad_full(other, AD_F64, 1, s, 2);
  cr_assert_eq(ad_tensor_set_requires_grad(b, true), AD_OK);
  cr_assert_null(ad_mul(ctx, a, b));
  expect_error(AD_ERR_ARG, "mul: input 1 belongs to another context", NULL);
  /* a temporary of the other context, too */
  ad_tensor *bt = ad_exp(other, b);
  cr_assert_not_null(bt);
  cr_assert_null(ad_add(ctx, bt, a));
  expect_error(AD_ERR_ARG, "add: input 0 belongs to another context", NULL);
  ad_tensor_free(b);
  ad_ctx_free(other);
}

/* ad_cast to x's own dtype is x itself, but only once x passes the checks
 * any cast does: another context's, a freed or an i32 tensor is refused. */
Test(misuse_core, cast_to_the_same_dtype_checks_its_input) {
  ad_ctx *other = ad_ctx_new();
  int64_t s[1] = {3};
  ad_tensor *a = leaf(AD_F64, 1, s, 1), *b = ad_full(other, AD_F64, 1, s, 2);
  cr_assert_eq(ad_cast(ctx, a, AD_F64), a, "%s", ad_last_error(ctx));
  cr_assert_null(ad_cast(ctx, b, AD_F64));
  expect_error(AD_ERR_ARG, "cast: input 0 belongs to another context", NULL);
  ad_tensor *i = ad_zeros(ctx, AD_I32, 1, s);
  cr_assert_null(ad_cast(ctx, i, AD_I32));
  expect_error(AD_ERR_DTYPE, "cast: input 0 is i32; a float dtype is needed", NULL);
  ad_tensor_free(a);
  cr_assert_null(ad_cast(ctx, a, AD_F64));
  expect_error(AD_ERR_STATE, "cast: input 0 was freed", NULL);
  cr_assert_null(ad_cast(NULL, b, AD_F64));
  ad_tensor_free(i);
  ad_tensor_free(b);
  ad_ctx_free(other);
}

Test(misuse_core, backward_and_grad_refuse_another_context) {
  ad_ctx *other = ad_ctx_new();
  int64_t s[1] = {2};
  ad_tensor *a = leaf(AD_F64, 1, s, 1);
  ad_tensor *b = ad_full(other, AD_F64, 1, s, 2);
  cr_assert_eq(ad_tensor_set_requires_grad(b, true), AD_OK);
  ad_tensor *lb = ad_sum(other, ad_mul(other, b, b));
  cr_assert_not_null(lb);
  /* backward of the other context's root in this one */
  cr_assert_eq(ad_backward(ctx, lb, NULL), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "backward: root belongs to another context", NULL);
  cr_assert_null(b->grad, "nothing was allocated for the other context's leaf");
  ad_tensor *la = ad_mul(ctx, a, a);
  ad_tensor *seed = ad_full(other, AD_F64, 1, s, 1);
  cr_assert_eq(ad_backward(ctx, la, seed), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "backward: seed belongs to another context", NULL);
  ad_tensor *out[1];
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, la), NULL, 1, &b, out, false), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "grad: input 0 belongs to another context", NULL);
  ad_tensor_free(b);
  ad_tensor_free(seed);
  ad_ctx_free(other);
}

/* ----------------------------------------------------- backward's seed */

Test(misuse_core, seed_of_the_wrong_shape_is_refused) {
  int64_t s[2] = {2, 3}, s6[1] = {6};
  ad_tensor *x = leaf(AD_F64, 2, s, 1);
  ad_tensor *y = ad_mul(ctx, x, x);
  ad_tensor *seed = ad_ones(ctx, AD_F64, 1, s6);
  cr_assert_eq(ad_backward(ctx, y, seed), AD_ERR_SHAPE);
  expect_error(AD_ERR_SHAPE, "backward: seed shape [6] does not match root [2,3]", NULL);
  cr_assert_null(x->grad);
  ad_tensor_free(seed);
}

/* ------------------------------------------------- retained gradients */

Test(misuse_core, retained_gradients_accumulate_over_passes) {
  int64_t s[1] = {2};
  ad_tensor *x = leaf(AD_F64, 1, s, 1);
  ad_tensor *h = ad_mul_scalar(ctx, x, 3);
  cr_assert_eq(ad_tensor_retain_grad(h), AD_OK);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, h), NULL), AD_OK);
  cr_assert_float_eq(ad_tensor_get(h->grad, 0), 1.0, 0);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul_scalar(ctx, h, 2)), NULL), AD_OK);
  cr_assert_float_eq(ad_tensor_get(h->grad, 0), 3.0, 0, "PyTorch gives 1 + 2");
  cr_assert_float_eq(ad_tensor_get(h->grad, 1), 3.0, 0);
  cr_assert_float_eq(ad_tensor_get(x->grad, 0), 9.0, 0);
  ad_tensor_zero_grad(h);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, h), NULL), AD_OK);
  cr_assert_float_eq(ad_tensor_get(h->grad, 0), 1.0, 0, "after zero_grad, one pass's worth");
}

/* --------------------------------------------------------- arena limit */

Test(misuse_core, a_forgotten_tape_reset_hits_the_arena_limit) {
  int64_t s[1] = {1024};
  ad_tensor *x = leaf(AD_F32, 1, s, 1);
  cr_assert_eq(ad_set_arena_limit(ctx, (size_t)8 << 20), AD_OK);
  int step = 0;
  ad_tensor *y = x;
  for (; step < 100000 && y; step++) y = ad_exp(ctx, x); /* never reset */
  cr_assert_null(y);
  cr_assert_gt(step, 1000, "the limit allows ~8 MiB of 4 KiB results");
  expect_error(AD_ERR_OOM, "arena", "limit of 8388608", "ad_tape_reset", NULL);
  cr_assert_leq(ad_arena_capacity(ctx), (size_t)8 << 20);
  /* with a reset per step the same loop runs within the limit */
  for (int i = 0; i < 5000; i++) {
    ad_tape_reset(ctx);
    cr_assert_not_null(ad_exp(ctx, x), "%s", ad_last_error(ctx));
  }
  cr_assert_eq(ad_set_arena_limit(NULL, 1), AD_ERR_NULL);
}

/* ------------------------------------------------ messages that mislead */

Test(misuse_core, messages_name_the_real_problem) {
  int64_t s[1] = {2};
  ad_tensor *a = leaf(AD_F64, 1, s, 1), *xs[9];
  for (int i = 0; i < 9; i++) xs[i] = a;
  cr_assert_null(ad_concat(ctx, 0, xs, 0));
  expect_error(AD_ERR_ARG, "concat: takes one or more inputs, got 0", NULL);
  int add = ad_op_find(ctx, "add");
  cr_assert_null(ad_op_apply(ctx, add, 2, NULL, NULL));
  expect_error(AD_ERR_NULL, "add: the array of inputs is NULL", NULL);
  cr_assert_null(ad_op_apply(ctx, add, 3, xs, NULL));
  expect_error(AD_ERR_ARG, "add: takes 2 inputs, got 3", NULL);
  cr_assert_null(ad_ones(ctx, AD_F32, 3, NULL));
  expect_error(AD_ERR_NULL, "ones: shape is NULL for ndim 3", NULL);
  int64_t neg[1] = {-4};
  cr_assert_null(ad_zeros(ctx, AD_F32, 1, neg));
  expect_error(AD_ERR_ARG, "zeros: dimension 0 of [-4] is negative", NULL);
  int64_t big[3] = {INT64_C(1) << 20, INT64_C(1) << 20, 2};
  cr_assert_null(ad_zeros(ctx, AD_F32, 3, big));
  expect_error(AD_ERR_ARG, "zeros: shape [1048576,1048576,2] is too large", "multiply to 2.199e+12",
               NULL);
}

/* ------------------------------------------- freed tensors and ownership */

/* The accessors refuse t (freed, or a temporary of a reset tape: why is
 * the message's end), reading NaN and writing nothing; live is another
 * tensor of t's size. */
static void accessors_refuse(ad_tensor *t, ad_tensor *live, const char *why) {
  char msg[96];
  cr_assert(isnan(ad_tensor_get(t, 0)));
  const char *fns[4] = {"tensor_set", "tensor_fill", "copy_data", "clone"};
  for (int k = 0; k < 4; k++) {
    ad_status st = k == 0   ? ad_tensor_set(t, 0, 42)
                   : k == 1 ? ad_tensor_fill(t, 1)
                   : k == 2 ? ad_tensor_copy_data(live, t)
                            : (ad_tensor_clone(ctx, t) ? AD_OK : ad_last_status(ctx));
    cr_assert_eq(st, AD_ERR_STATE, "%s", fns[k]);
    snprintf(msg, sizeof msg, "%s: the tensor %s", fns[k], why);
    expect_error(AD_ERR_STATE, msg, NULL);
  }
}

Test(misuse_core, a_freed_tensor_is_refused_without_reading_freed_memory) {
  int64_t s[1] = {3};
  ad_tensor *a = leaf(AD_F64, 1, s, 1), *b = leaf(AD_F64, 1, s, 2);
  ad_tensor_free(a);
  cr_assert_null(ad_mul(ctx, a, b));
  expect_error(AD_ERR_STATE, "mul: input 0 was freed", NULL);
  ad_tensor_free(a); /* twice */
  expect_error(AD_ERR_STATE, "tensor_free: the tensor was already freed", NULL);
  accessors_refuse(a, b, "was freed");
  cr_assert_not(ad_tensor_is_valid(a));
  cr_assert_eq(ad_backward(ctx, a, NULL), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "backward: root was freed", NULL);
}

/* A temporary of a tape that was reset: its memory, header included,
 * belongs to later temporaries. The accessors read and wrote it (writes
 * landed in whatever tensor got the memory next), and functions that read
 * its ndim before applying an op walked past their stack arrays once a
 * later tensor's data covered the header. */
Test(misuse_core, a_temporary_of_a_reset_tape_is_refused) {
  int64_t s[2] = {2, 3};
  ad_tensor *p = leaf(AD_F32, 2, s, 1), *b = leaf(AD_F32, 2, s, 2);
  ad_tensor *x = ad_neg(ctx, p), *x0 = ad_sum(ctx, p);
  cr_assert(x && x0, "%s", ad_last_error(ctx));
  ad_tape_reset(ctx);
  accessors_refuse(x, b, "is from a tape that was reset");
  cr_assert(isnan(ad_tensor_item(x0)));
  cr_assert(ad_tensor_has_nonfinite(x));
  char buf[128] = "";
  FILE *f = fmemopen(buf, sizeof buf, "w");
  cr_assert_not_null(f);
  ad_tensor_print(f, "x", x);
  fclose(f);
  cr_assert_str_eq(buf, "x: (from a tape that was reset)\n");
  cr_assert_null(ad_transpose(ctx, x, 0, 1));
  expect_error(AD_ERR_STATE, "transpose: input 0 is from a tape that was reset", NULL);
  cr_assert_null(ad_permute(ctx, x, (const int[]){1, 0}));
  expect_error(AD_ERR_STATE, "permute: input 0 is from a tape that was reset", NULL);
  cr_assert_null(ad_sum_axis(ctx, x, 1, false));
  expect_error(AD_ERR_STATE, "sum: input 0 is from a tape that was reset", NULL);

  /* a later temporary's data over x's header: ndim reads 1000 */
  ad_tape_reset(ctx);
  int64_t n = 4096;
  ad_tensor *big = ad_zeros(ctx, AD_I32, 1, &n);
  ad_tensor *cover = ad_full_like(ctx, big, 1000);
  cr_assert_not_null(cover, "%s", ad_last_error(ctx));
  for (int k = 0; k < 3; k++) {
    ad_tensor *r = k == 0   ? ad_transpose(ctx, x, 0, 1)
                   : k == 1 ? ad_permute(ctx, x, (const int[]){1, 0})
                            : ad_sum_axis(ctx, x, 100, false);
    cr_assert_null(r, "call %d", k);
    cr_assert_neq(ad_last_status(ctx), AD_OK);
    ad_clear_error(ctx);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(p), ad_tensor_free(b), ad_tensor_free(big);
}

/* sum_to's loops are float's: an i32 input was read as doubles, past its
 * end. */
Test(misuse_core, sum_to_refuses_i32) {
  int64_t s[2] = {4, 3}, t[1] = {3};
  ad_tensor *x = ad_full(ctx, AD_I32, 2, s, 1);
  cr_assert_null(ad_sum_to(ctx, x, 1, t));
  expect_error(AD_ERR_DTYPE, "sum_to", NULL);
  ad_tensor_free(x);
}

/* Uniform values lie in [lo, hi) also once rounded to float32 (draws just
 * under 1 rounded onto hi); bounds and spreads that make no range are
 * refused, as PyTorch refuses them. */
Test(misuse_core, rand_stays_below_hi_and_refuses_bad_ranges) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  int64_t n = 400000;
  ad_tensor *u = ad_rand(ctx, &rng, AD_F32, 1, &n, 0, 1);
  cr_assert_not_null(u, "%s", ad_last_error(ctx));
  double lo = 1, hi = 0;
  for (int64_t i = 0; i < n; i++) {
    double v = ad_tensor_get(u, i);
    lo = v < lo ? v : lo, hi = v > hi ? v : hi;
  }
  cr_assert(lo >= 0 && hi < 1, "values in [%.9g, %.9g]", lo, hi);
  cr_assert_gt(hi, 0.99999);
  ad_tensor_free(u);
  ad_rng_seed(&rng, 1);
  u = ad_rand(ctx, &rng, AD_F32, 1, &n, 5, 6);
  for (int64_t i = 0; i < n; i++)
    cr_assert_lt(ad_tensor_get(u, i), 6.0, "element %lld", (long long)i);
  ad_tensor_free(u);
  int64_t one = 1;
  u = ad_rand(ctx, &rng, AD_F64, 1, &one, 2, 2);
  cr_assert(u && ad_tensor_get(u, 0) == 2.0, "lo == hi gives lo");
  ad_tensor_free(u);
  cr_assert_null(ad_rand(ctx, &rng, AD_F32, 1, &one, 1, 0));
  expect_error(AD_ERR_ARG, "rand: [1, 0) is not a finite range", NULL);
  cr_assert_null(ad_rand(ctx, &rng, AD_F32, 1, &one, NAN, 1));
  expect_error(AD_ERR_ARG, "rand:", NULL);
  cr_assert_null(ad_rand(ctx, &rng, AD_F64, 1, &one, -DBL_MAX, DBL_MAX));
  expect_error(AD_ERR_ARG, "rand:", NULL);
  cr_assert_null(ad_randn(ctx, &rng, AD_F32, 1, &one, 0, -1));
  expect_error(AD_ERR_ARG, "randn: mean 0 and std -1", NULL);
  cr_assert_null(ad_randn(ctx, &rng, AD_F32, 1, &one, NAN, 1));
  expect_error(AD_ERR_ARG, "randn:", NULL);
}

/* A float32 tensor cannot hold a bound beyond float32's range: the draws
 * near it rounded to infinity ([-1e39, 1e39) gave -inf a third of the
 * time), where PyTorch refuses the bound. An i32 ad_rand takes integer
 * bounds (torch.randint's), an i32 ad_randn none. */
Test(misuse_core, rand_refuses_bounds_its_dtype_cannot_hold) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  int64_t n = 1000;
  cr_assert_null(ad_rand(ctx, &rng, AD_F32, 1, &n, -1e39, 1e39));
  expect_error(AD_ERR_ARG, "rand: [-1e+39, 1e+39) is outside float32's range", NULL);
  cr_assert_null(ad_rand(ctx, &rng, AD_F32, 1, &n, 0, 3.5e38));
  expect_error(AD_ERR_ARG, "rand:", "float32", NULL);
  ad_tensor *u = ad_rand(ctx, &rng, AD_F32, 1, &n, -FLT_MAX, FLT_MAX);
  cr_assert_not_null(u, "%s", ad_last_error(ctx));
  for (int64_t i = 0; i < n; i++)
    cr_assert(isfinite(ad_tensor_get(u, i)), "element %lld: %g", (long long)i, ad_tensor_get(u, i));
  ad_tensor_free(u);
  u = ad_rand(ctx, &rng, AD_F64, 1, &n, -1e39, 1e39); /* a double holds them */
  cr_assert_not_null(u, "%s", ad_last_error(ctx));
  ad_tensor_free(u);
  cr_assert_null(ad_rand(ctx, &rng, AD_I32, 1, &n, 0.5, 2.5));
  expect_error(AD_ERR_ARG, "rand: an i32 tensor takes integer bounds", "[0.5, 2.5)", NULL);
  cr_assert_null(ad_rand(ctx, &rng, AD_I32, 1, &n, 0, 2147483649.0));
  expect_error(AD_ERR_ARG, "rand: an i32 tensor", NULL);
  cr_assert_null(ad_randn(ctx, &rng, AD_I32, 1, &n, 0, 1));
  expect_error(AD_ERR_DTYPE, "randn: dtype i32", NULL);
}

/* An ad_rng never seeded ("= {0}") is the state xoshiro256** never leaves:
 * ad_randn gave 37.17 for every element, ad_rand lo. Refused where a
 * context can say so. */
Test(misuse_core, an_unseeded_rng_is_refused) {
  ad_rng zero = {{0, 0, 0, 0}};
  int64_t n = 4, s[3] = {1, 2, 2};
  cr_assert_null(ad_randn(ctx, &zero, AD_F64, 1, &n, 0, 1));
  expect_error(AD_ERR_ARG, "randn: rng is not seeded", "ad_rng_seed", NULL);
  cr_assert_null(ad_rand(ctx, &zero, AD_F32, 1, &n, 0, 1));
  expect_error(AD_ERR_ARG, "rand: rng is not seeded", NULL);
  ad_tensor *q = ad_zeros(ctx, AD_F64, 3, s);
  ad_attention_opts o = {.dropout_p = 0.5, .rng = &zero};
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, q, q, &o));
  expect_error(AD_ERR_ARG, "scaled_dot_product_attention: rng is not seeded", NULL);
  o.dropout_p = 0; /* no dropout draws nothing */
  cr_assert_not_null(ad_scaled_dot_product_attention(ctx, q, q, q, &o), "%s", ad_last_error(ctx));
  ad_tensor_free(q);
  ad_rng seeded;
  ad_rng_seed(&seeded, 0); /* seed 0 is a seed like any other */
  ad_tensor *t = ad_randn(ctx, &seeded, AD_F64, 1, &n, 0, 1);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  cr_assert_neq(ad_tensor_get(t, 0), ad_tensor_get(t, 1));
  ad_tensor_free(t);
}

/* The gradient settings of a freed tensor are reported on its context, as
 * ad_tensor_free promises for every accessor. */
Test(misuse_core, gradient_settings_of_a_freed_tensor_are_reported) {
  int64_t s[1] = {3};
  ad_tensor *a = leaf(AD_F64, 1, s, 1);
  ad_tensor_free(a);
  ad_clear_error(ctx);
  cr_assert_eq(ad_tensor_set_requires_grad(a, true), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "set_requires_grad: the tensor was freed", NULL);
  cr_assert_eq(ad_tensor_set_requires_grad(a, false), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "set_requires_grad: the tensor was freed", NULL);
  cr_assert_eq(ad_tensor_retain_grad(a), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "retain_grad: the tensor was freed", NULL);
  ad_tensor_zero_grad(a);
  expect_error(AD_ERR_STATE, "zero_grad: the tensor was freed", NULL);
  cr_assert_not(ad_tensor_requires_grad(a));
  cr_assert_eq(ad_tensor_set_requires_grad(NULL, true), AD_ERR_NULL);
  cr_assert_eq(ad_tensor_retain_grad(NULL), AD_ERR_NULL);
}

Test(misuse_core, a_leaf_freed_before_backward_is_reported_by_backward) {
  int64_t s[1] = {3};
  ad_tensor *w = leaf(AD_F64, 1, s, 1), *x = leaf(AD_F64, 1, s, 2);
  ad_tensor *loss = ad_sum(ctx, ad_mul(ctx, w, x));
  cr_assert_not_null(loss);
  ad_tensor_free(x);
  /* many more frees and allocations cannot reuse x's header: the tape still
   * names it */
  for (int i = 0; i < 500; i++) ad_tensor_free(leaf(AD_F64, 1, s, 0));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "backward: input 1 of mul was freed after the op was recorded", NULL);
  cr_assert_null(w->grad, "a failed pass leaves no partial gradient");
}

Test(misuse_core, freed_headers_are_not_reused_at_once) {
  int64_t s[1] = {1};
  ad_tensor *old[20], *fresh[20];
  for (int i = 0; i < 20; i++) old[i] = leaf(AD_F32, 1, s, i);
  for (int i = 0; i < 20; i++) ad_tensor_free(old[i]);
  ad_tape_reset(ctx);
  for (int i = 0; i < 20; i++) {
    fresh[i] = leaf(AD_F32, 1, s, i);
    for (int j = 0; j < 20; j++)
      cr_assert_neq(fresh[i], old[j], "a stale pointer names a new tensor");
  }
  for (int i = 0; i < 20; i++) cr_assert_not(ad_tensor_is_valid(old[i]));
  for (int i = 0; i < 20; i++) ad_tensor_free(fresh[i]);
}

/* Once a freed header is reused (after the quarantine) its address names
 * the new tensor; the serial tells the two apart. Serials rise in the
 * order tensors are made, gradients included, and are 0 for NULL, a
 * temporary and a freed tensor. */
Test(misuse_core, a_reused_header_gets_a_new_serial) {
  int64_t s[1] = {2};
  cr_assert_eq(ad_tensor_serial(NULL), 0);
  ad_tensor *a = leaf(AD_F32, 1, s, 1), *b = leaf(AD_F32, 1, s, 2);
  uint64_t sa = ad_tensor_serial(a), sb = ad_tensor_serial(b);
  cr_assert(sa > 0 && sb > sa, "serials %llu, %llu", (unsigned long long)sa,
            (unsigned long long)sb);
  ad_tensor *y = ad_sum(ctx, ad_mul(ctx, a, a));
  cr_assert_eq(ad_tensor_serial(y), 0, "a temporary has none");
  cr_assert_eq(ad_backward(ctx, y, NULL), AD_OK);
  cr_assert_gt(ad_tensor_serial(a->grad), sb, "a gradient is a new tensor");
  ad_tape_reset(ctx);
  void *old = a;
  ad_tensor_free(a);
  cr_assert_eq(ad_tensor_serial(old), 0, "a freed tensor has none");
  ad_tensor *fill[70]; /* made first, then freed: past the quarantine */
  for (int i = 0; i < 70; i++) fill[i] = leaf(AD_F32, 1, s, 0);
  for (int i = 0; i < 70; i++) ad_tensor_free(fill[i]);
  ad_tensor *again = NULL, *taken[400];
  int n = 0;
  while (n < 400 && (again = leaf(AD_F32, 1, s, 3)) && (void *)again != old) taken[n++] = again;
  cr_assert_eq((void *)again, old, "the header came back after %d tensors", n);
  cr_assert_gt(ad_tensor_serial(again), sb, "the same address, a new serial");
  for (int i = 0; i < n; i++) cr_assert_neq(ad_tensor_serial(taken[i]), ad_tensor_serial(again));
  for (int i = 0; i < n; i++) ad_tensor_free(taken[i]);
  ad_tensor_free(again);
  ad_tensor_free(b);
}

Test(misuse_core, a_gradient_is_freed_with_its_tensor_only) {
  int64_t s[1] = {2};
  ad_tensor *w = leaf(AD_F64, 1, s, 3);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, w, w)), NULL), AD_OK);
  ad_tensor *g = w->grad;
  cr_assert_not_null(g);
  ad_tensor_free(g);
  expect_error(AD_ERR_STATE, "tensor_free: this tensor is another tensor's gradient", NULL);
  cr_assert_eq(w->grad, g);
  cr_assert_float_eq(ad_tensor_get(w->grad, 0), 6.0, 0, "the gradient is intact");
  ad_tensor_free(w);
  cr_assert_not(ad_tensor_is_valid(g), "freed with w");
}

Test(misuse_core, freeing_the_context_frees_what_is_still_live) {
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  cr_assert_not_null(c);
  int64_t s[2] = {4, 5};
  size_t base = ad_ctx_live_tensors(c);
  ad_tensor *w = ad_ones(c, AD_F32, 2, s);
  ad_tensor_set_requires_grad(w, true);
  cr_assert_not_null(ad_zeros(c, AD_F64, 2, s));
  cr_assert_eq(ad_backward(c, ad_sum(c, ad_mul(c, w, w)), NULL), AD_OK);
  cr_assert_eq(ad_ctx_live_tensors(c), base + 3, "w, its grad and the zeros");
  ad_tensor_free(w);
  cr_assert_eq(ad_ctx_live_tensors(c), base + 1);
  ad_ctx_free(c); /* the zeros are still live */
  cr_assert_eq(ta.live, 0, "%ld blocks left", ta.live);
}

/* ------------------------------------------------------- tensor names */

TEST_CTX_SUITE_ALSO(names);

Test(names, set_get_remove_and_lifetime) {
  int64_t s[2] = {2, 3};
  ad_tensor *w = leaf(AD_F32, 2, s, 1);
  cr_assert_null(ad_tensor_name(w));
  cr_assert_eq(ad_tensor_set_name(w, "0.weight"), AD_OK);
  cr_assert_str_eq(ad_tensor_name(w), "0.weight");
  cr_assert_eq(ad_tensor_set_name(w, "renamed"), AD_OK);
  cr_assert_str_eq(ad_tensor_name(w), "renamed");
  cr_assert_eq(ad_tensor_set_name(w, ""), AD_OK);
  cr_assert_null(ad_tensor_name(w));
  cr_assert_eq(ad_tensor_set_name(NULL, "x"), AD_ERR_NULL);
  /* an op's result keeps its name until the reset; the arena reuses its
   * memory afterwards without the name */
  ad_tensor *h = ad_exp(ctx, w);
  cr_assert_eq(ad_tensor_set_name(h, "h1"), AD_OK);
  cr_assert_str_eq(ad_tensor_name(h), "h1");
  ad_tape_reset(ctx);
  ad_tensor *h2 = ad_exp(ctx, w);
  cr_assert_eq(h2, h, "the arena gives the same block again");
  cr_assert_null(ad_tensor_name(h2), "a name does not pass to the next tensor there");
  /* a name goes with its tensor */
  cr_assert_eq(ad_tensor_set_name(w, "w"), AD_OK);
  ad_tensor_free(w);
  cr_assert_eq(ad_tensor_set_name(w, "again"), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "tensor_set_name: the tensor was freed", NULL);
}

Test(names, names_are_freed_with_tensors_and_context) {
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  int64_t s[1] = {4};
  ad_tensor *a = ad_ones(c, AD_F64, 1, s), *b = ad_ones(c, AD_F64, 1, s);
  cr_assert_not_null(ad_exp(c, a)); /* the arena's first chunk, kept from here on */
  ad_tape_reset(c);
  long base = ta.live - (long)ad_ctx_header_blocks(c);
  cr_assert_eq(ad_tensor_set_name(a, "a"), AD_OK);
  cr_assert_eq(ad_tensor_set_name(b, "b"), AD_OK);
  cr_assert_eq(ad_tensor_set_name(ad_exp(c, a), "tmp"), AD_OK);
  ad_tape_reset(c);
  ad_tensor_free(a);
  cr_assert_eq(ad_tensor_set_name(b, NULL), AD_OK);
  cr_assert_eq(ta.live - (long)ad_ctx_header_blocks(c), base - 1,
               "%ld vs %ld: "
               "a's data is gone, and every name with its table: a's with a, tmp's at the "
               "reset, b's removed",
               ta.live - (long)ad_ctx_header_blocks(c), base - 1);
  cr_assert_eq(ad_tensor_set_name(b, "b"), AD_OK);
  ad_ctx_free(c); /* b and its name still live */
  cr_assert_eq(ta.live, 0);
}

Test(names, graph_dumps_show_tensor_names) {
  int64_t s[1] = {2};
  ad_tensor *w = leaf(AD_F64, 1, s, 1);
  ad_tensor_set_name(w, "0.weight");
  ad_tensor *y = ad_sum(ctx, ad_tanh(ctx, w));
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_eq(ad_graph_dot(NULL, f, y, 0), AD_OK);
  fclose(f);
  cr_assert_not_null(strstr(buf, "0.weight"), "%s", buf);
  free(buf);
}

/* ------------------------------------------------------- anomaly mode */

TEST_CTX_SUITE_ALSO(anomaly);

Test(anomaly, off_by_default_and_nan_flows) {
  int64_t s[1] = {2};
  cr_assert_not(ad_anomaly_mode(ctx));
  ad_tensor *x = leaf(AD_F64, 1, s, -1);
  ad_tensor *y = ad_sqrt(ctx, x);
  cr_assert_not_null(y);
  cr_assert(isnan(ad_tensor_get(y, 0)));
  cr_assert_eq(ad_last_status(ctx), AD_OK);
}

Test(anomaly, forward_names_the_op_that_made_it) {
  int64_t s[2] = {2, 2};
  ad_tensor *h = leaf(AD_F64, 2, s, 4);
  ad_tensor_set(h, 3, -9);
  ad_tensor_set_name(h, "h1");
  cr_assert_not(ad_set_anomaly_mode(ctx, true));
  cr_assert(ad_anomaly_mode(ctx));
  ad_tensor *r = ad_sqrt(ctx, h);
  cr_assert_null(r);
  expect_error(AD_ERR_NAN, "sqrt of 'h1' [2,2] made a non-finite value (nan at element 3",
               "there input 0 is -9", NULL);
  /* a leaf that carries it is named as such */
  ad_tensor *x = leaf(AD_F64, 2, s, 1);
  ad_tensor_set(x, 1, NAN);
  ad_tensor_set_name(x, "x");
  cr_assert_null(ad_mul(ctx, h, x));
  expect_error(AD_ERR_NAN, "mul: input 1 ('x' [2,2]) carries a non-finite value (nan at element 1)",
               NULL);
  /* overflow to infinity counts too */
  cr_assert_null(ad_exp(ctx, ad_mul_scalar(ctx, h, 1000)));
  expect_error(AD_ERR_NAN, "exp of [2,2] made a non-finite value (inf at element 0", NULL);
  cr_assert(ad_set_anomaly_mode(ctx, false));
  cr_assert_not_null(ad_sqrt(ctx, h));
}

Test(anomaly, backward_names_the_rule_and_the_forward_op) {
  int64_t s[2] = {3, 4};
  ad_tensor *h = leaf(AD_F32, 2, s, 1);
  ad_tensor_set(h, 5, 0); /* sqrt is 0 there; its derivative 1 / (2 sqrt h) is inf */
  ad_tensor_set_name(h, "h1");
  ad_set_anomaly_mode(ctx, true);
  ad_tensor *loss = ad_sum(ctx, ad_sqrt(ctx, h));
  cr_assert_not_null(loss, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_ERR_NAN);
  expect_error(AD_ERR_NAN,
               "backward of sqrt (forward: sqrt of 'h1' [3,4]) sent a non-finite gradient (inf at "
               "element 5) to input 0 ('h1' [3,4])",
               NULL);
  cr_assert_null(h->grad, "nothing reached the leaf");
  /* ad_grad too, and a bad seed */
  ad_tensor *out[1];
  cr_assert_eq(ad_grad(ctx, loss, NULL, 1, &h, out, false), AD_ERR_NAN);
  expect_error(AD_ERR_NAN, "backward of sqrt", NULL);
  ad_tensor *y = ad_mul(ctx, h, h);
  ad_tensor *seed = ad_ones(ctx, AD_F32, 2, s);
  ad_tensor_set(seed, 2, INFINITY);
  cr_assert_eq(ad_backward(ctx, y, seed), AD_ERR_NAN);
  expect_error(AD_ERR_NAN, "backward: the seed has a non-finite value (inf at element 2)", NULL);
  ad_tensor_free(seed);
}

Test(anomaly, fast_paths_into_gradients_are_checked_too) {
  /* matmul and mul write leaves' gradients directly when nothing watches;
   * in anomaly mode their contributions are checked like any other */
  int64_t sa[2] = {2, 3}, sb[2] = {3, 2};
  ad_tensor *a = leaf(AD_F32, 2, sa, 1), *b = leaf(AD_F32, 2, sb, 1e30f);
  ad_tensor_set_name(a, "a");
  ad_set_anomaly_mode(ctx, true);
  ad_tensor *p = ad_matmul(ctx, a, b, false, false);
  cr_assert_not_null(p, "%s", ad_last_error(ctx));
  ad_tensor *seed = ad_full(ctx, AD_F32, 2, (int64_t[]){2, 2}, 1e10f);
  cr_assert_eq(ad_backward(ctx, p, seed), AD_ERR_NAN);
  expect_error(AD_ERR_NAN, "backward of matmul", "to input 0 ('a' [2,3])", NULL);
  cr_assert_null(a->grad);
  ad_tensor_free(seed);
}

/* ------------------------------- freed tensors the current tape still uses */

Test(misuse_core, a_view_of_a_freed_tensor_reads_kept_data) {
  int64_t s[2] = {2, 3}, f[1] = {6};
  const double v[6] = {1, 2, 3, 4, 5, 6};
  ad_tensor *a = ad_from_data(ctx, AD_F64, 2, s, v);
  ad_tensor *view = ad_reshape(ctx, a, 1, f); /* shares a's data */
  cr_assert_not_null(view);
  ad_tensor_free(a); /* the tape used a: its data stays until the reset */
  ad_tensor *sum = ad_sum(ctx, view);
  cr_assert_not_null(sum, "%s", ad_last_error(ctx));
  cr_assert_float_eq(ad_tensor_item(sum), 21.0, 0);
  cr_assert_null(ad_exp(ctx, a));
  expect_error(AD_ERR_STATE, "exp: input 0 was freed", NULL);
  ad_tape_reset(ctx); /* frees the kept data (the leak checks of ASan see it) */
}

Test(misuse_core, backward_through_a_view_of_a_freed_leaf_writes_nothing) {
  int64_t s[2] = {2, 3}, f[1] = {6};
  ad_tensor *p = leaf(AD_F64, 2, s, 1), *c = leaf(AD_F64, 1, f, 2);
  ad_tensor *y = ad_sum(ctx, ad_mul(ctx, ad_reshape(ctx, p, 1, f), c));
  cr_assert_not_null(y);
  ad_tensor_free(p);
  cr_assert_eq(ad_backward(ctx, y, NULL), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "backward: input 0 of reshape was freed after the op was recorded",
               NULL);
  cr_assert_null(c->grad, "the pass failed before writing any gradient");
}

Test(misuse_core, a_failed_pass_leaves_no_partial_gradient) {
  int64_t s[1] = {3};
  ad_tensor *w = leaf(AD_F64, 1, s, 1), *x = leaf(AD_F64, 1, s, 2);
  ad_tensor *v = leaf(AD_F64, 1, s, 5), *u = leaf(AD_F64, 1, s, 1);
  ad_tensor *loss = ad_add(ctx, ad_sum(ctx, ad_mul(ctx, w, x)), ad_sum(ctx, ad_mul(ctx, v, u)));
  ad_tensor_free(x);
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "input 1 of mul was freed", NULL);
  cr_assert_null(v->grad, "v's branch runs first in reverse order: nothing may reach it");
  cr_assert_null(u->grad);
  cr_assert_null(w->grad);
  /* a pass that does not reach the freed tensor still runs */
  ad_tensor *l2 = ad_sum(ctx, ad_mul(ctx, v, u));
  cr_assert_eq(ad_backward(ctx, l2, NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_float_eq(ad_tensor_get(v->grad, 0), 1.0, 0);
}

Test(misuse_core, a_header_the_tape_uses_is_not_reused_before_the_reset) {
  int64_t s[1] = {2};
  ad_tensor *p = leaf(AD_F64, 1, s, 1), *c = leaf(AD_F64, 1, s, 3);
  ad_tensor *y = ad_sum(ctx, ad_mul(ctx, p, c));
  ad_tensor_free(p);
  ad_tensor *kept[300];
  for (int i = 0; i < 300; i++) { /* many frees, then many live allocations */
    ad_tensor_free(leaf(AD_F64, 1, s, 0));
  }
  for (int i = 0; i < 300; i++) {
    kept[i] = leaf(AD_F64, 1, s, 0);
    cr_assert_neq(kept[i], p, "a new tensor at the freed leaf's address while the tape uses it");
  }
  cr_assert_eq(ad_backward(ctx, y, NULL), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "input 0 of mul was freed", NULL);
  for (int i = 0; i < 300; i++) ad_tensor_free(kept[i]);
}

Test(misuse_core, freed_headers_are_reused_so_memory_stays_bounded) {
  int64_t s[1] = {4};
  ad_tensor *w = leaf(AD_F64, 1, s, 1);
  size_t blocks = 0;
  for (int step = 0; step < 2000; step++) {
    ad_tensor *x = leaf(AD_F64, 1, s, step); /* made, used by the tape, freed */
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, w, x)), NULL), AD_OK);
    ad_tensor_free(x);
    ad_tape_reset(ctx);
    if (step == 200) blocks = ad_ctx_header_blocks(ctx);
  }
  cr_assert_eq(ad_ctx_header_blocks(ctx), blocks, "no slab after the quarantine fills: %zu vs %zu",
               ad_ctx_header_blocks(ctx), blocks);
  cr_assert_leq(blocks, 4, "%zu slabs of 32 headers", blocks);
}

Test(misuse_core, a_retained_roots_gradient_is_not_the_callers_seed) {
  int64_t s[1] = {2};
  ad_tensor *x = leaf(AD_F64, 1, s, 1);
  ad_tensor *y = ad_mul_scalar(ctx, x, 2);
  ad_tensor_retain_grad(y);
  ad_tensor *seed = ad_full(ctx, AD_F64, 1, s, 3);
  cr_assert_eq(ad_backward(ctx, y, seed), AD_OK);
  cr_assert_neq(y->grad, seed);
  ad_tensor_fill(seed, 5);
  cr_assert_float_eq(ad_tensor_get(y->grad, 0), 3.0, 0, "the seed's later values do not show");
  ad_tensor_free(seed);
  cr_assert_eq(ad_backward(ctx, y, NULL), AD_ERR_SHAPE); /* a [2] root needs a seed */
  ad_clear_error(ctx);
}
