/* test_misuse_tensorops.c: bad input to the tensor ops ported from PyTorch
 * (gather / scatter_add, ...): each is refused with a status and a message
 * that names the op and the bad argument, and nothing is computed. Their
 * values and gradients are in tests/fixtures/ops.txt (test_ops_values). */
#include "test_alloc.h"

#include <math.h>

TEST_CTX_SUITE(misuse_tensorops);

#define expect_error(...)    test_expect_error(ctx, __VA_ARGS__)
#define param(c, ...)        test_param(c, __VA_ARGS__)
#define expect_shape(t, ...) test_expect_shape(ctx, t, __VA_ARGS__)

/* An AD_I32 tensor of shape with values v. */
static ad_tensor *ints(ad_ctx *c, int ndim, const int64_t *shape, const int32_t *v) {
  ad_tensor *t = ad_from_data(c, AD_I32, ndim, shape, v);
  cr_assert_not_null(t, "%s", ad_last_error(c));
  return t;
}

/* ------------------------------------------------- gather, scatter_add */

Test(misuse_tensorops, gather_refuses_bad_input) {
  int64_t sx[2] = {3, 4}, si[2] = {2, 2}, s1[1] = {2}, s3[3] = {2, 2, 1}, slong[2] = {2, 5};
  const int32_t iv[4] = {0, 2, 1, 0}, bad[4] = {0, 1, 3, 0}, neg[4] = {0, -1, 1, 0};
  ad_tensor *x = param(ctx, 2, sx, NULL), *idx = ints(ctx, 2, si, iv);
  cr_assert_null(ad_gather(ctx, NULL, 0, idx));
  expect_error(AD_ERR_NULL, "gather", NULL);
  cr_assert_null(ad_gather(ctx, x, 0, NULL));
  expect_error(AD_ERR_NULL, "gather", NULL);
  ad_tensor *fidx = ad_zeros(ctx, AD_F64, 2, si);
  cr_assert_null(ad_gather(ctx, x, 0, fidx));
  expect_error(AD_ERR_DTYPE, "gather: index must be i32, got f64", NULL);
  cr_assert_null(ad_gather(ctx, idx, 0, idx));
  expect_error(AD_ERR_DTYPE, "gather", "i32", NULL);
  ad_tensor *i1 = ints(ctx, 1, s1, iv), *i3 = ints(ctx, 3, s3, iv);
  cr_assert_null(ad_gather(ctx, x, 0, i1));
  expect_error(AD_ERR_SHAPE, "gather: index [2] does not fit input [3,4]", NULL);
  cr_assert_null(ad_gather(ctx, x, 0, i3));
  expect_error(AD_ERR_SHAPE, "gather: index [2,2,1] does not fit input [3,4]", NULL);
  ad_tensor *ilong = ad_zeros(ctx, AD_I32, 2, slong);
  cr_assert_null(ad_gather(ctx, x, 0, ilong)); /* 5 > 4 off the axis */
  expect_error(AD_ERR_SHAPE, "gather: index [2,5] does not fit input [3,4] off axis 0", NULL);
  cr_assert_not_null(ad_gather(ctx, x, 1, ilong), "%s", ad_last_error(ctx)); /* on it: fine */
  cr_assert_null(ad_gather(ctx, x, 2, idx));
  expect_error(AD_ERR_ARG, "gather: axis 2 out of range for [3,4]", NULL);
  cr_assert_null(ad_gather(ctx, x, -3, idx));
  expect_error(AD_ERR_ARG, "gather: axis -3 out of range", NULL);
  ad_tensor *ib = ints(ctx, 2, si, bad), *in = ints(ctx, 2, si, neg);
  cr_assert_null(ad_gather(ctx, x, 0, ib));
  expect_error(AD_ERR_ARG,
               "gather: index 3 at [1,0] of index [2,2] is outside 0..2 (axis 0 of "
               "input [3,4])",
               NULL);
  cr_assert_null(ad_gather(ctx, x, -2, in)); /* negative indices do not count from the end */
  expect_error(AD_ERR_ARG, "gather: index -1 at [0,1] of index [2,2] is outside 0..2", NULL);
  /* a 0-d input has no axis */
  ad_tensor *x0 = param(ctx, 0, NULL, NULL), *i0 = ad_zeros(ctx, AD_I32, 0, NULL);
  cr_assert_null(ad_gather(ctx, x0, 0, i0));
  expect_error(AD_ERR_ARG, "gather: axis 0 out of range for []", NULL);
  ad_tensor *ts[] = {x, idx, fidx, i1, i3, ilong, ib, in, x0, i0};
  for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) ad_tensor_free(ts[k]);
}

Test(misuse_tensorops, scatter_add_refuses_bad_input) {
  int64_t sx[2] = {3, 4}, si[2] = {2, 2}, s3[2] = {2, 3}, sb[2] = {3, 3};
  const int32_t iv[4] = {0, 2, 1, 0}, bad[4] = {0, 4, 1, 0};
  ad_tensor *x = param(ctx, 2, sx, NULL), *idx = ints(ctx, 2, si, iv);
  ad_tensor *src = param(ctx, 2, si, NULL);
  cr_assert_null(ad_scatter_add(ctx, x, 0, idx, NULL));
  expect_error(AD_ERR_NULL, "scatter_add", NULL);
  cr_assert_null(ad_scatter_add(ctx, NULL, 0, idx, src));
  expect_error(AD_ERR_NULL, "scatter_add", NULL);
  ad_tensor *s32 = ad_zeros(ctx, AD_F32, 2, si);
  cr_assert_null(ad_scatter_add(ctx, x, 0, idx, s32));
  expect_error(AD_ERR_DTYPE, "scatter_add: src is f32, the input f64", NULL);
  ad_tensor *big = param(ctx, 2, s3, NULL); /* torch takes its leading [2,2]; refused here */
  cr_assert_null(ad_scatter_add(ctx, x, 0, idx, big));
  expect_error(AD_ERR_SHAPE, "scatter_add: src [2,3] is not shaped like index [2,2]", NULL);
  cr_assert_null(ad_scatter_add(ctx, x, 0, src, src));
  expect_error(AD_ERR_DTYPE, "scatter_add: index must be i32, got f64", NULL);
  ad_tensor *ib = ints(ctx, 2, si, bad);
  cr_assert_null(ad_scatter_add(ctx, x, 0, ib, src));
  expect_error(AD_ERR_ARG, "scatter_add: index 4 at [0,1] of index [2,2] is outside 0..2", NULL);
  cr_assert_null(ad_scatter_add(ctx, x, 5, idx, src));
  expect_error(AD_ERR_ARG, "scatter_add: axis 5 out of range", NULL);
  ad_tensor *xb = param(ctx, 2, sb, NULL);
  ad_tensor *ilong = ad_zeros(ctx, AD_I32, 2, (int64_t[]){2, 4}),
            *slong = param(ctx, 2, (int64_t[]){2, 4}, NULL);
  cr_assert_null(ad_scatter_add(ctx, xb, 0, ilong, slong));
  expect_error(AD_ERR_SHAPE, "scatter_add: index [2,4] does not fit input [3,3] off axis 0", NULL);
  ad_tensor *ts[] = {x, idx, src, s32, big, ib, xb, ilong, slong};
  for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) ad_tensor_free(ts[k]);
}

Test(misuse_tensorops, gather_refuses_tensors_of_another_context_and_freed_ones) {
  ad_ctx *other = ad_ctx_new();
  int64_t sx[2] = {3, 4}, si[2] = {2, 2};
  const int32_t iv[4] = {0, 2, 1, 0};
  ad_tensor *x = param(ctx, 2, sx, NULL), *idx = ints(ctx, 2, si, iv);
  ad_tensor *fx = param(other, 2, sx, NULL), *fi = ints(other, 2, si, iv);
  cr_assert_null(ad_gather(ctx, fx, 0, idx));
  expect_error(AD_ERR_ARG, "gather: input 0 belongs to another context", NULL);
  cr_assert_null(ad_gather(ctx, x, 0, fi));
  expect_error(AD_ERR_ARG, "gather: input 1 belongs to another context", NULL);
  ad_tensor *src = param(other, 2, si, NULL);
  cr_assert_null(ad_scatter_add(ctx, x, 0, idx, src));
  expect_error(AD_ERR_ARG, "scatter_add: input 2 belongs to another context", NULL);
  ad_tensor *dead = ints(ctx, 2, si, iv);
  ad_tensor_free(dead);
  cr_assert_null(ad_gather(ctx, x, 0, dead));
  expect_error(AD_ERR_STATE, "gather", NULL);
  ad_tensor_free(x), ad_tensor_free(idx), ad_tensor_free(fx), ad_tensor_free(fi);
  ad_tensor_free(src);
  ad_ctx_free(other);
}

/* The indices are saved as recorded: changing them between the forward and
 * the backward changes nothing, and an index made out of range is never
 * read. Repeated indices add up in x's gradient. */
Test(misuse_tensorops, gather_indices_changed_before_backward) {
  int64_t sx[2] = {2, 3}, si[2] = {2, 3};
  const int32_t iv[6] = {1, 0, 1, 1, 1, 0};
  ad_tensor *x = param(ctx, 2, sx, NULL), *idx = ints(ctx, 2, si, iv);
  ad_tensor *r = ad_sum(ctx, ad_gather(ctx, x, 0, idx));
  cr_assert_not_null(r, "%s", ad_last_error(ctx));
  ((int32_t *)idx->data)[0] = 1000;
  cr_assert_eq(ad_backward(ctx, r, NULL), AD_OK, "%s", ad_last_error(ctx));
  const double want[6] = {0, 1, 1, 2, 1, 1};
  for (int i = 0; i < 6; i++)
    cr_assert_eq(ad_tensor_get(x->grad, i), want[i], "element %d: %g", i,
                 ad_tensor_get(x->grad, i));
  ad_tensor_free(x), ad_tensor_free(idx);
}

/* ----------------------------------------------------------------- flip */

Test(misuse_tensorops, flip_refuses_bad_axes) {
  int64_t s[3] = {2, 3, 4};
  ad_tensor *x = param(ctx, 3, s, NULL);
  int ax[3] = {0, -1, 2}, three[3] = {0, 1, 3};
  cr_assert_null(ad_flip(ctx, NULL, 1, ax));
  expect_error(AD_ERR_NULL, "flip", NULL);
  cr_assert_null(ad_flip(ctx, x, 1, NULL));
  expect_error(AD_ERR_NULL, "flip: axes is NULL", NULL);
  cr_assert_null(ad_flip(ctx, x, 3, three));
  expect_error(AD_ERR_ARG, "flip: axis 3 out of range for [2,3,4]", NULL);
  cr_assert_null(ad_flip(ctx, x, 3, ax)); /* -1 and 2 are one axis */
  expect_error(AD_ERR_ARG, "flip: axis 2 given twice for [2,3,4]", NULL);
  cr_assert_null(ad_flip(ctx, x, -1, ax));
  expect_error(AD_ERR_ARG, "flip: -1 axes for [2,3,4]", NULL);
  cr_assert_null(ad_flip(ctx, x, 4, ax));
  expect_error(AD_ERR_ARG, "flip: 4 axes for [2,3,4]", NULL);
  cr_assert_eq(ad_flip(ctx, x, 0, NULL), x, "no axis: x itself");
  ad_ctx *other = ad_ctx_new();
  ad_tensor *fx = param(other, 3, s, NULL);
  cr_assert_null(ad_flip(ctx, fx, 1, ax));
  expect_error(AD_ERR_ARG, "flip: input 0 belongs to another context", NULL);
  ad_tensor_free(fx);
  ad_ctx_free(other);
  ad_tensor_free(x);
}

/* any dtype: an i32 tensor (argmax's result) flips too, with no gradient */
Test(misuse_tensorops, flip_of_integers) {
  int64_t s[2] = {2, 3};
  const int32_t v[6] = {1, 2, 3, 4, 5, 6}, want[6] = {6, 5, 4, 3, 2, 1};
  ad_tensor *t = ints(ctx, 2, s, v);
  ad_tensor *y = ad_flip(ctx, t, 2, (int[]){1, 0});
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->dtype, AD_I32);
  for (int i = 0; i < 6; i++) cr_assert_eq(((const int32_t *)y->data)[i], want[i], "element %d", i);
  ad_tensor_free(t);
}

/* --------------------------------------------------------------- cumsum */

Test(misuse_tensorops, cumsum_refuses_bad_input) {
  int64_t s[2] = {2, 3};
  ad_tensor *x = param(ctx, 2, s, NULL), *t = ad_zeros(ctx, AD_I32, 2, s);
  cr_assert_null(ad_cumsum(ctx, NULL, 0));
  expect_error(AD_ERR_NULL, "cumsum", NULL);
  cr_assert_null(ad_cumsum(ctx, t, 0));
  expect_error(AD_ERR_DTYPE, "cumsum", "i32", NULL);
  cr_assert_null(ad_cumsum(ctx, x, 2));
  expect_error(AD_ERR_ARG, "cumsum: axis 2 out of range for [2,3]", NULL);
  cr_assert_null(ad_cumsum(ctx, x, -3));
  expect_error(AD_ERR_ARG, "cumsum: axis -3 out of range for [2,3]", NULL);
  ad_tensor *x0 = param(ctx, 0, NULL, NULL);
  cr_assert_null(ad_cumsum(ctx, x0, 0));
  expect_error(AD_ERR_ARG, "cumsum: axis 0 out of range for []", NULL);
  ad_ctx *other = ad_ctx_new();
  ad_tensor *fx = param(other, 2, s, NULL);
  cr_assert_null(ad_cumsum(ctx, fx, 0));
  expect_error(AD_ERR_ARG, "cumsum: input 0 belongs to another context", NULL);
  ad_tensor_free(fx);
  ad_ctx_free(other);
  ad_tensor_free(x), ad_tensor_free(t), ad_tensor_free(x0);
}

/* float32 lanes are summed in a double: 2^24 + 1 - 2^24 is 1, not 0, and
 * the gradient of sum(cumsum(x)) is n - k at position k */
Test(misuse_tensorops, cumsum_sums_float32_in_double) {
  int64_t n = 4;
  const float v[4] = {16777216.0f, 1.0f, -16777216.0f, 0.5f};
  ad_tensor *x = ad_from_data(ctx, AD_F32, 1, &n, v);
  cr_assert_eq(ad_tensor_set_requires_grad(x, true), AD_OK);
  ad_tensor *y = ad_cumsum(ctx, x, -1);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(y, 2), 1.0);
  cr_assert_eq(ad_tensor_get(y, 3), 1.5);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  for (int k = 0; k < 4; k++) cr_assert_eq(ad_tensor_get(x->grad, k), 4.0 - k, "element %d", k);
  ad_tensor_free(x);
}

/* ------------------------------------------------------- argmax, argmin */

Test(misuse_tensorops, argmax_refuses_bad_input) {
  int64_t s[2] = {2, 3}, e[2] = {2, 0};
  ad_tensor *x = param(ctx, 2, s, NULL), *t = ad_zeros(ctx, AD_I32, 2, s);
  ad_tensor *empty = param(ctx, 2, e, NULL), *x0 = param(ctx, 0, NULL, NULL);
  cr_assert_null(ad_argmax(ctx, NULL, 0, false));
  expect_error(AD_ERR_NULL, "argmax", NULL);
  cr_assert_null(ad_argmin(ctx, t, 0, false));
  expect_error(AD_ERR_DTYPE, "argmin", "i32", NULL);
  cr_assert_null(ad_argmax(ctx, x, 2, false));
  expect_error(AD_ERR_ARG, "argmax: axis 2 out of range for [2,3]", NULL);
  cr_assert_null(ad_argmin(ctx, x, -3, true));
  expect_error(AD_ERR_ARG, "argmin: axis -3 out of range for [2,3]", NULL);
  cr_assert_null(ad_argmax(ctx, x0, 0, false));
  expect_error(AD_ERR_ARG, "argmax: axis 0 out of range for []", NULL);
  cr_assert_null(ad_argmax(ctx, empty, 1, false)); /* torch refuses it too */
  expect_error(AD_ERR_SHAPE, "argmax: nothing to reduce", "[2,0]", NULL);
  cr_assert_null(ad_argmin(ctx, empty, -1, true));
  expect_error(AD_ERR_SHAPE, "argmin: nothing to reduce", "[2,0]", NULL);
  ad_ctx *other = ad_ctx_new();
  ad_tensor *fx = param(other, 2, s, NULL);
  cr_assert_null(ad_argmax(ctx, fx, 0, false));
  expect_error(AD_ERR_ARG, "argmax: input 0 belongs to another context", NULL);
  ad_tensor_free(fx);
  ad_ctx_free(other);
  ad_tensor_free(x), ad_tensor_free(t), ad_tensor_free(empty), ad_tensor_free(x0);
}

/* x requires a gradient; the i32 result does not, is not on the tape, and
 * a loss that uses it as an index still sends x its gradient through the
 * other path only */
Test(misuse_tensorops, argmax_sends_no_gradient) {
  int64_t s[2] = {2, 3};
  const double v[6] = {0.5, 2, -1, 3, 3, NAN};
  ad_tensor *x = param(ctx, 2, s, v);
  ad_tensor *i = ad_argmax(ctx, x, 1, true), *j = ad_argmin(ctx, x, -1, false);
  cr_assert_not_null(i, "%s", ad_last_error(ctx));
  cr_assert_not_null(j, "%s", ad_last_error(ctx));
  cr_assert_eq(i->dtype, AD_I32);
  cr_assert(!ad_tensor_requires_grad(i) && !ad_tensor_requires_grad(j));
  cr_assert_eq(ad_tensor_get(i, 0), 1);
  cr_assert_eq(ad_tensor_get(i, 1), 2); /* the NaN */
  cr_assert_eq(ad_tensor_get(j, 0), 2);
  cr_assert_eq(ad_tensor_get(j, 1), 2); /* the NaN */
  ad_tensor *y = ad_sum(ctx, ad_gather(ctx, x, 1, ad_narrow(ctx, i, 0, 0, 1)));
  cr_assert_eq(ad_backward(ctx, y, NULL), AD_OK, "%s", ad_last_error(ctx));
  const double want[6] = {0, 1, 0, 0, 0, 0};
  for (int k = 0; k < 6; k++) cr_assert_eq(ad_tensor_get(x->grad, k), want[k], "element %d", k);
  ad_tensor_free(x);
}

/* -------------------------------------------------- min, var, std */

Test(misuse_tensorops, min_refuses_bad_input) {
  int64_t s[2] = {2, 3}, e[2] = {2, 0};
  ad_tensor *x = param(ctx, 2, s, NULL), *t = ad_zeros(ctx, AD_I32, 2, s);
  ad_tensor *empty = param(ctx, 2, e, NULL);
  cr_assert_null(ad_min(ctx, NULL));
  expect_error(AD_ERR_NULL, "min", NULL);
  cr_assert_null(ad_min_axis(ctx, t, 0, false));
  expect_error(AD_ERR_DTYPE, "min: input is i32", NULL);
  cr_assert_null(ad_min_axis(ctx, x, 2, false));
  expect_error(AD_ERR_ARG, "min: axis 2 out of range for [2,3]", NULL);
  cr_assert_null(ad_min(ctx, empty));
  expect_error(AD_ERR_SHAPE, "min: nothing to reduce: [2,0]", NULL);
  cr_assert_null(ad_min_axis(ctx, empty, -1, true));
  expect_error(AD_ERR_SHAPE, "min: nothing to reduce: axis 1 of [2,0]", NULL);
  ad_tensor *y = ad_min_axis(ctx, empty, 0, false); /* the other axis: an empty result */
  expect_shape(y, 1, (int64_t[]){0}, "min over axis 0");
  ad_ctx *other = ad_ctx_new();
  ad_tensor *fx = param(other, 2, s, NULL);
  cr_assert_null(ad_min(ctx, fx));
  expect_error(AD_ERR_ARG, "min: input 0 belongs to another context", NULL);
  ad_tensor_free(fx);
  ad_ctx_free(other);
  ad_tensor_free(x), ad_tensor_free(t), ad_tensor_free(empty);
}

Test(misuse_tensorops, var_refuses_bad_axes) {
  int64_t s[3] = {2, 3, 4};
  ad_tensor *x = param(ctx, 3, s, NULL), *t = ad_zeros(ctx, AD_I32, 3, s);
  int ax[3] = {0, -1, 2}, bad[1] = {3};
  cr_assert_null(ad_var(ctx, NULL, 1, ax, 1, false));
  expect_error(AD_ERR_NULL, "var", NULL);
  cr_assert_null(ad_std(ctx, t, 1, ax, 1, false));
  expect_error(AD_ERR_DTYPE, "std: input is i32", NULL);
  cr_assert_null(ad_var(ctx, x, 1, NULL, 1, false));
  expect_error(AD_ERR_NULL, "var: axes is NULL", NULL);
  cr_assert_null(ad_std(ctx, x, 1, bad, 1, true));
  expect_error(AD_ERR_ARG, "std: axis 3 out of range for [2,3,4]", NULL);
  cr_assert_null(ad_var(ctx, x, 3, ax, 0, false));
  expect_error(AD_ERR_ARG, "var: axis 2 given twice for [2,3,4]", NULL);
  cr_assert_null(ad_var(ctx, x, 4, ax, 0, false));
  expect_error(AD_ERR_ARG, "var: 4 axes for [2,3,4]", NULL);
  ad_ctx *other = ad_ctx_new();
  ad_tensor *fx = param(other, 3, s, NULL);
  cr_assert_null(ad_std(ctx, fx, 0, NULL, 1, false));
  expect_error(AD_ERR_ARG, "std: input 0 belongs to another context", NULL);
  ad_tensor_free(fx);
  ad_ctx_free(other);
  ad_tensor_free(x), ad_tensor_free(t);
}

/* The divisor is max(0, n - correction): 0 gives inf, or NaN for a lane of
 * zero spread (0/0); a lane of no element gives NaN. */
Test(misuse_tensorops, var_with_correction_past_n) {
  int64_t s[2] = {2, 3}, e[2] = {2, 0};
  const double v[6] = {1, 1, 1, 0.5, -1, 2};
  ad_tensor *x = param(ctx, 2, s, v), *empty = param(ctx, 2, e, NULL);
  for (int64_t c = 3; c <= 5; c += 2) {
    ad_tensor *y = ad_var(ctx, x, 1, (int[]){1}, c, false);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    cr_assert(isnan(ad_tensor_get(y, 0)), "correction %lld: constant lane", (long long)c);
    cr_assert(isinf(ad_tensor_get(y, 1)) && ad_tensor_get(y, 1) > 0, "correction %lld",
              (long long)c);
  }
  ad_tensor *z = ad_std(ctx, empty, 1, (int[]){-1}, 1, true);
  expect_shape(z, 2, (int64_t[]){2, 1}, "std over an empty axis");
  cr_assert(isnan(ad_tensor_get(z, 0)) && isnan(ad_tensor_get(z, 1)));
  ad_tensor_free(x), ad_tensor_free(empty);
}

/* A lane of no element has no variance for any correction: NaN, as
 * torch.var(torch.zeros(2, 0), 1, correction=-1) gives; a negative
 * correction divided its empty sum 0 by -correction and gave 0. */
Test(misuse_tensorops, var_of_no_element_is_nan_for_any_correction) {
  int64_t e[2] = {2, 0};
  ad_tensor *empty = param(ctx, 2, e, NULL);
  const int64_t cs[4] = {-1, -5, INT64_MIN, 0};
  for (int i = 0; i < 4; i++) {
    ad_tensor *y = ad_var(ctx, empty, 1, (int[]){1}, cs[i], false);
    ad_tensor *z = ad_std(ctx, empty, 0, NULL, cs[i], true);
    cr_assert(y && z, "%s", ad_last_error(ctx));
    expect_shape(y, 1, (int64_t[]){2}, "var over an empty axis");
    cr_assert(isnan(ad_tensor_get(y, 0)) && isnan(ad_tensor_get(y, 1)),
              "var, correction %lld: %g %g", (long long)cs[i], ad_tensor_get(y, 0),
              ad_tensor_get(y, 1));
    cr_assert(isnan(ad_tensor_get(z, 0)), "std, correction %lld: %g", (long long)cs[i],
              ad_tensor_get(z, 0));
  }
  ad_tensor_free(empty);
}

/* A negative correction divides by more than n, as torch's; near
 * INT64_MIN, n - correction overflowed int64 (UB; in practice a negative
 * divisor and a negative variance). Found by fuzz/fuzz_ops. */
Test(misuse_tensorops, var_with_extreme_corrections) {
  int64_t s[1] = {3};
  const double v[3] = {1, 2, 4}; /* sum of squared deviations 14/3 */
  ad_tensor *x = param(ctx, 1, s, v);
  const int64_t cs[4] = {-1, INT64_MIN, INT64_MIN + 1, INT64_MAX};
  const double want[4] = {14.0 / 3 / 4, 14.0 / 3 / (3 + 0x1p63), 14.0 / 3 / (2 + 0x1p63), INFINITY};
  for (int i = 0; i < 4; i++) {
    ad_tensor *y = ad_var(ctx, x, 0, NULL, cs[i], false);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    double got = ad_tensor_get(y, 0);
    cr_assert(test_close(got, want[i], 1e-15 * want[i]), "correction %lld: %.17g, want %.17g",
              (long long)cs[i], got, want[i]);
  }
  ad_tensor_free(x);
}

/* float32 var and std are taken in float64, as torch's kernels accumulate
 * them: in float32 the squares of deviations above 1.8e19 overflowed, and
 * so did their sum past FLT_MAX, giving inf for a finite variance and
 * standard deviation, and NaN gradients. Values from PyTorch 1.13:
 * torch.var(x, 1) of two rows of 2^63, -2^63 (50 each) is 50/49 2^126,
 * its gradient +-2^64/49; torch.std([2^64, -2^64], correction=0) is 2^64
 * (var is inf, beyond float32), its gradient +-0.5. */
Test(misuse_tensorops, var_and_std_of_float32_do_not_overflow_early) {
  int64_t s[2] = {2, 50}, s2[1] = {2};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 2, s), *x2 = ad_zeros(ctx, AD_F32, 1, s2);
  cr_assert(x && x2, "%s", ad_last_error(ctx));
  for (int i = 0; i < 100; i++) ((float *)x->data)[i] = i % 2 ? -0x1p63f : 0x1p63f;
  ((float *)x2->data)[0] = 0x1p64f, ((float *)x2->data)[1] = -0x1p64f;
  ad_tensor_set_requires_grad(x, true), ad_tensor_set_requires_grad(x2, true);
  ad_tensor *v = ad_var(ctx, x, 1, (int[]){1}, 1, false);
  cr_assert_not_null(v, "%s", ad_last_error(ctx));
  cr_assert_eq(v->dtype, AD_F32);
  const float want_v = (float)(50.0 / 49 * 0x1p126), want_g = (float)(0x1p64 / 49);
  for (int r = 0; r < 2; r++)
    cr_assert_eq(((float *)v->data)[r], want_v, "var[%d] = %g, want %g", r, ((float *)v->data)[r],
                 want_v);
  ad_tensor *g = NULL;
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, v), NULL, 1, &x, &g, false), AD_OK, "%s",
               ad_last_error(ctx));
  for (int i = 0; i < 100; i++)
    cr_assert_eq(((float *)g->data)[i], i % 2 ? -want_g : want_g, "dvar/dx[%d] = %g, want %g", i,
                 ((float *)g->data)[i], i % 2 ? -want_g : want_g);
  ad_tensor *sd = ad_std(ctx, x2, 0, NULL, 0, false), *v2 = ad_var(ctx, x2, 0, NULL, 0, false);
  cr_assert(sd && v2, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_item(sd), 0x1p64, "std = %g", ad_tensor_item(sd));
  cr_assert(isinf(ad_tensor_item(v2)), "var = %g, beyond float32", ad_tensor_item(v2));
  cr_assert_eq(ad_grad(ctx, sd, NULL, 1, &x2, &g, false), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(ad_tensor_get(g, 0) == 0.5 && ad_tensor_get(g, 1) == -0.5, "dstd/dx = %g %g",
            ad_tensor_get(g, 0), ad_tensor_get(g, 1));
  ad_tensor_free(x), ad_tensor_free(x2);
}

/* std's gradient for a lane of zero variance is 0, as torch's std_backward
 * gives (sqrt'(0) times a zero gradient of var would be NaN), to second
 * order; the other lane's as torch's (values from PyTorch 1.13). */
Test(misuse_tensorops, std_of_a_constant_lane_has_gradient_zero) {
  int64_t s[2] = {2, 3};
  const double v[6] = {1, 1, 1, 0.5, -1, 2}, want[6] = {0, 0, 0, 0, -0.5, 0.5};
  ad_tensor *x = param(ctx, 2, s, v);
  ad_tensor *y = ad_std(ctx, x, 1, (int[]){1}, 1, false);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(y, 0), 0.0);
  cr_assert_float_eq(ad_tensor_get(y, 1), 1.5, 1e-15);
  ad_tensor *g = NULL;
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 1, &x, &g, true), AD_OK, "%s",
               ad_last_error(ctx));
  for (int i = 0; i < 6; i++)
    cr_assert_float_eq(ad_tensor_get(g, i), want[i], 1e-15, "dstd/dx[%d] = %g, want %g", i,
                       ad_tensor_get(g, i), want[i]);
  ad_tensor *h = NULL;
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, ad_mul(ctx, g, g)), NULL, 1, &x, &h, false), AD_OK, "%s",
               ad_last_error(ctx));
  for (int i = 0; i < 6; i++)
    cr_assert_float_eq(ad_tensor_get(h, i), 0.0, 1e-15, "second order [%d] = %g, want 0", i,
                       ad_tensor_get(h, i));
  ad_tensor_free(x);
}

/* float32 lanes whose sum passes FLT_MAX while their deviations do not:
 * std and var are finite (taken in double), and so is their gradient,
 * whose mean is taken in double where the float32 one overflows (it was
 * inf, so x - mean was -inf). Column 0 of x: {3e38, 3.2e38}, std 1e37;
 * column 1: {1, 2}, std 0.5; both lanes' gradient (x - mean) / (n std). */
Test(misuse_tensorops, var_of_float32_near_flt_max_has_a_finite_gradient) {
  int64_t s[2] = {2, 2}, s3[1] = {3};
  const float v[4] = {3e38f, 1, 3.2e38f, 2}, c[3] = {3e38f, 3e38f, 3e38f};
  const double want[4] = {-0.5, -0.5, 0.5, 0.5};
  for (int th = 0; th < 2; th++) {
    cr_assert_eq(ad_set_num_threads(th ? 3 : 1), AD_OK);
    ad_tensor *x = ad_from_data(ctx, AD_F32, 2, s, v), *x3 = ad_from_data(ctx, AD_F32, 1, s3, c);
    cr_assert(x && x3, "%s", ad_last_error(ctx));
    ad_tensor *in[2] = {x, x3}, *g[2] = {NULL, NULL};
    cr_assert_eq(ad_tensor_set_requires_grad(x, true), AD_OK);
    cr_assert_eq(ad_tensor_set_requires_grad(x3, true), AD_OK);
    ad_tensor *y = ad_std(ctx, x, 1, (int[]){0}, 0, false),
              *y3 = ad_var(ctx, x3, 0, NULL, 1, false);
    cr_assert(y && y3, "%s", ad_last_error(ctx));
    cr_assert(test_close(ad_tensor_get(y, 0), 1e37, 1e31), "std %g", ad_tensor_get(y, 0));
    cr_assert_eq(ad_tensor_get(y, 1), 0.5);
    cr_assert_eq(ad_tensor_get(y3, 0), 0.0);
    cr_assert_eq(ad_grad(ctx, ad_add(ctx, ad_sum(ctx, y), ad_sum(ctx, y3)), NULL, 2, in, g, true),
                 AD_OK, "%s", ad_last_error(ctx));
    for (int i = 0; i < 4; i++)
      cr_assert(test_close(ad_tensor_get(g[0], i), want[i], 1e-6), "dstd/dx[%d] = %g, want %g", i,
                ad_tensor_get(g[0], i), want[i]);
    for (int i = 0; i < 3; i++)
      cr_assert_eq(ad_tensor_get(g[1], i), 0.0, "dvar/dx[%d] = %g, want 0", i,
                   ad_tensor_get(g[1], i));
    ad_tensor *h = NULL; /* the double mean is differentiable again */
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, g[0]), NULL, 1, &x, &h, false), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(!ad_tensor_has_nonfinite(h), "second order not finite");
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(x3);
  }
  ad_set_num_threads(1);
}

/* ad_sum_axes, ad_mean_axes, ad_max_axes and ad_min_axes check their
 * axes as ad_var does, and name themselves (mean is built on the sum). */
Test(misuse_tensorops, reductions_over_axes_refuse_bad_axes) {
  int64_t s[3] = {2, 3, 4};
  ad_tensor *x = param(ctx, 3, s, NULL), *t = ad_zeros(ctx, AD_I32, 3, s);
  int ax[3] = {0, -1, 2}, bad[1] = {-4};
  cr_assert_null(ad_sum_axes(ctx, NULL, 1, ax, false));
  expect_error(AD_ERR_NULL, "sum: input 0 is NULL", NULL);
  cr_assert_null(ad_mean_axes(ctx, t, 1, ax, false));
  expect_error(AD_ERR_DTYPE, "mean: ", NULL);
  cr_assert_null(ad_sum_axes(ctx, x, 2, NULL, true));
  expect_error(AD_ERR_NULL, "sum: axes is NULL", NULL);
  cr_assert_null(ad_mean_axes(ctx, x, 1, bad, true));
  expect_error(AD_ERR_ARG, "mean: axis -4 out of range for [2,3,4]", NULL);
  cr_assert_null(ad_mean_axes(ctx, x, 3, ax, false));
  expect_error(AD_ERR_ARG, "mean: axis 2 given twice for [2,3,4]", NULL);
  cr_assert_null(ad_sum_axes(ctx, x, -1, ax, false));
  expect_error(AD_ERR_ARG, "sum: -1 axes for [2,3,4]", NULL);
  ad_ctx *other = ad_ctx_new();
  ad_tensor *fx = param(other, 3, s, NULL);
  cr_assert_null(ad_mean_axes(ctx, fx, 0, NULL, false));
  expect_error(AD_ERR_ARG, "mean: input 0 belongs to another context", NULL);
  ad_tensor_free(fx);
  ad_ctx_free(other);
  /* max_axes and min_axes: the same checks, and a reduced dim of length 0 */
  cr_assert_null(ad_max_axes(ctx, x, 3, ax, false));
  expect_error(AD_ERR_ARG, "max: axis 2 given twice for [2,3,4]", NULL);
  cr_assert_null(ad_min_axes(ctx, t, 1, ax, false));
  expect_error(AD_ERR_DTYPE, "min: input is i32", NULL);
  cr_assert_null(ad_min_axes(ctx, x, 1, NULL, false));
  expect_error(AD_ERR_NULL, "min: axes is NULL", NULL);
  int64_t se[3] = {2, 0, 4};
  ad_tensor *e = param(ctx, 3, se, NULL);
  cr_assert_null(ad_max_axes(ctx, e, 2, (int[]){0, 1}, true));
  expect_error(AD_ERR_SHAPE, "max: nothing to reduce: axis 1 of [2,0,4] holds no element", NULL);
  ad_tensor *me = ad_min_axes(ctx, e, 1, (int[]){2}, false); /* an empty result is fine */
  cr_assert(me && me->size == 0 && me->ndim == 2, "%s", ad_last_error(ctx));
  ad_tensor_free(e);
  /* a 0-d x: every dim is none; its sum is a new tensor holding x */
  ad_tensor *z = ad_scalar(ctx, AD_F64, 2.5), *zs = ad_mean_axes(ctx, z, 0, NULL, false);
  cr_assert(zs && zs != z && zs->ndim == 0 && ad_tensor_item(zs) == 2.5, "%s", ad_last_error(ctx));
  ad_tensor_free(x), ad_tensor_free(t);
}

/* var's reduction (the op sum_sq_dev) on each of its paths: a long lane
 * split into chunks on the threads, contiguous lanes of 32 partial sums
 * and of fewer than 32 elements, strided lanes in blocks of 64 (one block
 * partly filled), axes that are not adjacent (a permute first); float32
 * around a large mean (1e4, spread 1: a one-pass sum of squares cancels).
 * Against a two-pass float64 reference per lane, and the same bits, values
 * and gradients, on 1 and 3 threads. */
Test(misuse_tensorops, var_on_every_path_as_a_two_pass_reference) {
  static const struct {
    int nd;
    int64_t shape[3];
    int na;
    int axes[2];
  } cs[] = {{1, {70000}, 0, {0}},     {2, {3, 5000}, 1, {1}}, {2, {40, 20}, 1, {-1}},
            {3, {70, 3, 5}, 1, {0}},  {2, {9, 130}, 1, {0}},  {3, {4, 5, 6}, 2, {0, 2}},
            {3, {6, 7, 8}, 2, {2, 1}}};
  for (int dt = 0; dt < 2; dt++)
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
      ad_tensor *ys[2] = {NULL, NULL}, *gs[2] = {NULL, NULL};
      for (int th = 0; th < 2; th++) {
        cr_assert_eq(ad_set_num_threads(th ? 3 : 1), AD_OK);
        ad_rng rng;
        ad_rng_seed(&rng, 11 + (uint64_t)c);
        ad_tensor *x = ad_randn(ctx, &rng, dt ? AD_F64 : AD_F32, cs[c].nd, cs[c].shape, 1e4, 1);
        cr_assert_not_null(x, "%s", ad_last_error(ctx));
        cr_assert_eq(ad_tensor_set_requires_grad(x, true), AD_OK);
        ad_tensor *y = ad_var(ctx, x, cs[c].na, cs[c].axes, 1, false);
        cr_assert_not_null(y, "%s", ad_last_error(ctx));
        cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
        if (th == 0) { /* the reference: lanes by (kept, reduced) index */
          int nd = cs[c].nd;
          bool red[3] = {cs[c].na == 0, cs[c].na == 0, cs[c].na == 0};
          for (int k = 0; k < cs[c].na; k++) red[(cs[c].axes[k] + nd) % nd] = true;
          int64_t n = 1;
          for (int d = 0; d < nd; d++) n *= red[d] ? cs[c].shape[d] : 1;
          double *sum = calloc((size_t)y->size, sizeof(double));
          double *sq = calloc((size_t)y->size, sizeof(double));
          cr_assert(sum && sq);
          for (int pass = 0; pass < 3; pass++)
            for (int64_t i = 0; i < x->size; i++) {
              int64_t rem = i, lane = 0;
              for (int d = nd - 1, mul = 1; d >= 0; d--) {
                int64_t id = rem % cs[c].shape[d];
                rem /= cs[c].shape[d];
                if (!red[d]) lane += id * mul, mul *= (int)cs[c].shape[d];
              }
              double v = ad_tensor_get(x, i), m = sum[lane] / (double)n;
              if (pass == 0) sum[lane] += v;
              if (pass == 1) sq[lane] += (v - m) * (v - m);
              if (pass == 2) { /* the gradient 2 (x - mean) / (n - 1) */
                double want = 2 * (v - m) / (double)(n - 1), got = ad_tensor_get(x->grad, i);
                cr_assert(
                    test_close(got, want, dt ? 1e-9 : 2e-3 / (double)(n - 1) + 1e-6 * fabs(want)),
                    "case %zu %s: dvar/dx[%lld] %.9g, want %.9g", c, dt ? "f64" : "f32",
                    (long long)i, got, want);
              }
            }
          for (int64_t l = 0; l < y->size; l++) {
            double want = sq[l] / (double)(n - 1), got = ad_tensor_get(y, l);
            cr_assert(test_close(got, want, (dt ? 1e-12 : 1e-6) * want),
                      "case %zu %s: var[%lld] %.17g, want %.17g", c, dt ? "f64" : "f32",
                      (long long)l, got, want);
          }
          free(sum), free(sq);
        }
        ys[th] = ad_tensor_clone(ctx, y);
        gs[th] = ad_tensor_clone(ctx, x->grad);
        cr_assert(ys[th] && gs[th]);
        ad_tape_reset(ctx);
        ad_tensor_free(x);
      }
      size_t es = dt ? sizeof(double) : sizeof(float);
      cr_assert_eq(memcmp(ys[0]->data, ys[1]->data, (size_t)ys[0]->size * es), 0, "case %zu", c);
      cr_assert_eq(memcmp(gs[0]->data, gs[1]->data, (size_t)gs[0]->size * es), 0, "case %zu", c);
      for (int th = 0; th < 2; th++) ad_tensor_free(ys[th]), ad_tensor_free(gs[th]);
    }
  ad_set_num_threads(1);
}

/* ------------------------------------------------------------------ pad_nd */

Test(misuse_tensorops, pad_nd_refuses_bad_input) {
  int64_t sx[3] = {2, 3, 4}, s0[3] = {2, 0, 4};
  ad_tensor *x = param(ctx, 3, sx, NULL);
  const int64_t p2[4] = {1, 1, 1, 1};
  cr_assert_null(ad_pad_nd(ctx, NULL, 2, p2, AD_PAD_REFLECT, 0));
  expect_error(AD_ERR_NULL, "pad_nd", NULL);
  cr_assert_null(ad_pad_nd(ctx, x, 2, NULL, AD_PAD_REFLECT, 0));
  expect_error(AD_ERR_NULL, "pad_nd: pad is NULL", NULL);
  cr_assert_null(ad_pad_nd(NULL, x, 2, NULL, AD_PAD_REFLECT, 0)); /* no context: nothing read */
  cr_assert_null(ad_pad_nd(ctx, x, 0, p2, AD_PAD_REFLECT, 0));
  expect_error(AD_ERR_ARG, "pad_nd: 0 padded axes for [2,3,4]; 1..3 and at most its ndim", NULL);
  cr_assert_null(ad_pad_nd(ctx, x, 4, (const int64_t[8]){0}, AD_PAD_CONSTANT, 0));
  expect_error(AD_ERR_ARG, "pad_nd: 4 padded axes", NULL);
  cr_assert_null(ad_pad_nd(ctx, x, 2, (const int64_t[4]){1, -1, 0, 0}, AD_PAD_CONSTANT, 0));
  expect_error(AD_ERR_ARG, "pad_nd: negative padding (1, -1) of axis 2 (crop with narrow)", NULL);
  cr_assert_null(ad_pad_nd(ctx, x, 2, (const int64_t[4]){1, 1, 3, 0}, AD_PAD_REFLECT, 0));
  expect_error(AD_ERR_SHAPE,
               "pad_nd: input [2,3,4]: padding (3, 0) of axis 1 must be less than the axis "
               "length in mode reflect",
               NULL);
  cr_assert_not_null(ad_pad_nd(ctx, x, 2, (const int64_t[4]){4, 4, 3, 3}, AD_PAD_CIRCULAR, 0), "%s",
                     ad_last_error(ctx)); /* wraps around once at most */
  cr_assert_null(ad_pad_nd(ctx, x, 1, (const int64_t[2]){5, 0}, AD_PAD_CIRCULAR, 0));
  expect_error(AD_ERR_SHAPE, "must be at most the axis length in mode circular", NULL);
  cr_assert_not_null(ad_pad_nd(ctx, x, 1, (const int64_t[2]){9, 0}, AD_PAD_REPLICATE, 0), "%s",
                     ad_last_error(ctx)); /* replicate has no bound */
  ad_tensor *e = ad_zeros(ctx, AD_F32, 3, s0);
  cr_assert_null(ad_pad_nd(ctx, e, 2, (const int64_t[4]){0, 0, 1, 0}, AD_PAD_REPLICATE, 0));
  expect_error(AD_ERR_SHAPE, "pads an empty axis, which mode replicate cannot", NULL);
  cr_assert_not_null(ad_pad_nd(ctx, e, 2, (const int64_t[4]){1, 0, 1, 0}, AD_PAD_CONSTANT, 2), "%s",
                     ad_last_error(ctx));
  cr_assert_null(ad_pad_nd(ctx, x, 1, p2, (ad_pad_mode)7, 0));
  expect_error(AD_ERR_ARG, "pad_nd: unknown mode 7", NULL);
  ad_tensor *x32 = ad_zeros(ctx, AD_F32, 3, sx);
  cr_assert_null(ad_pad_nd(ctx, x32, 1, p2, AD_PAD_CONSTANT, 1e39));
  expect_error(AD_ERR_ARG, "pad_nd: value 1e+39 is outside float32's range", NULL);
  ad_tensor *y = ad_pad_nd(ctx, x32, 1, p2, AD_PAD_CONSTANT, INFINITY); /* inf is a value */
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert(isinf(ad_tensor_get(y, 0)));
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 3, sx);
  cr_assert_null(ad_pad_nd(ctx, xi, 1, p2, AD_PAD_CONSTANT, 0));
  expect_error(AD_ERR_DTYPE, "pad_nd", NULL);
  ad_tensor *ts[] = {x, e, x32, xi};
  for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) ad_tensor_free(ts[k]);
}

/* pad_nd and its gradient split their rows over the threads: the same bits
 * on one thread and on three, in every mode (the gradient adds several
 * elements of dy into the border's sources, in a fixed order). */
Test(misuse_tensorops, pad_nd_same_bits_on_any_thread_count) {
  ad_rng rng;
  int64_t sx[4] = {4, 8, 40, 40};
  const int64_t pads[4] = {3, 2, 1, 3};
  for (int dt = 0; dt < 2; dt++)
    for (int mode = 0; mode < 4; mode++) {
      ad_tensor *ys[2] = {NULL, NULL}, *gs[2] = {NULL, NULL};
      for (int t = 0; t < 2; t++) {
        cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
        ad_rng_seed(&rng, 7);
        ad_tensor *x = ad_randn(ctx, &rng, dt ? AD_F64 : AD_F32, 4, sx, 0, 1);
        cr_assert_not_null(x);
        cr_assert_eq(ad_tensor_set_requires_grad(x, true), AD_OK);
        ad_tensor *y = ad_pad_nd(ctx, x, 2, pads, (ad_pad_mode)mode, 0.25);
        cr_assert_not_null(y, "%s", ad_last_error(ctx));
        ad_tensor *dy = ad_randn(ctx, &rng, x->dtype, y->ndim, y->shape, 0, 1);
        cr_assert_eq(ad_backward(ctx, y, dy), AD_OK, "%s", ad_last_error(ctx));
        ys[t] = ad_tensor_clone(ctx, y);
        gs[t] = ad_tensor_clone(ctx, x->grad);
        cr_assert(ys[t] && gs[t]);
        ad_tape_reset(ctx);
        ad_tensor_free(x);
        ad_tensor_free(dy);
      }
      size_t es = dt ? sizeof(double) : sizeof(float);
      cr_assert_eq(memcmp(ys[0]->data, ys[1]->data, (size_t)ys[0]->size * es), 0, "mode %d", mode);
      cr_assert_eq(memcmp(gs[0]->data, gs[1]->data, (size_t)gs[0]->size * es), 0, "mode %d", mode);
      for (int t = 0; t < 2; t++) ad_tensor_free(ys[t]), ad_tensor_free(gs[t]);
    }
  ad_set_num_threads(1);
}
