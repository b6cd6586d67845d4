/* test_errors.c: every user-facing error is returned, not aborted on, and
 * its message names the op and the shapes. Out-of-memory is injected through
 * the pluggable allocator at every allocation of a small training program,
 * and of one small program per op family (also under an arena cap). */
#include "ad_ext.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

TEST_CTX_SUITE(errors);

/* expect_error(st, "text", ..., NULL): see test_expect_error */
#define expect_error(...) test_expect_error(ctx, __VA_ARGS__)

static ad_tensor *tensor(ad_dtype dt, int ndim, const int64_t *shape) {
  ad_tensor *t = ad_ones(ctx, dt, ndim, shape);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  return t;
}

static ad_tensor *grad_tensor(ad_dtype dt, int ndim, const int64_t *shape) {
  ad_tensor *t = tensor(dt, ndim, shape);
  cr_assert_eq(ad_tensor_set_requires_grad(t, true), AD_OK);
  return t;
}

/* -------------------------------------------------------------- shapes */

Test(errors, add_shapes_do_not_broadcast) {
  int64_t s[2] = {2, 3}, r[1] = {4};
  ad_tensor *a = tensor(AD_F32, 2, s), *b = tensor(AD_F32, 1, r);
  cr_assert_null(ad_add(ctx, a, b));
  expect_error(AD_ERR_SHAPE, "add", "[2,3]", "[4]", NULL);
  cr_assert_null(ad_mul(ctx, b, a));
  expect_error(AD_ERR_SHAPE, "mul", "[4]", "[2,3]", NULL);
  cr_assert_null(ad_maximum(ctx, a, b));
  expect_error(AD_ERR_SHAPE, "maximum", "[2,3]", "[4]", NULL);
  cr_assert_null(ad_gt(ctx, a, b));
  expect_error(AD_ERR_SHAPE, "[2,3]", "[4]", NULL);
  ad_tensor_free(a);
  ad_tensor_free(b);
}

Test(errors, matmul_inner_dimensions_exact_message) {
  int64_t sa[2] = {32, 784}, sb[2] = {64, 10};
  ad_tensor *a = tensor(AD_F32, 2, sa), *b = tensor(AD_F32, 2, sb);
  cr_assert_null(ad_matmul(ctx, a, b, false, false));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_SHAPE);
  cr_assert_str_eq(ad_last_error(ctx), "matmul: inner dimensions differ: [32,784] x [64,10]");
  ad_clear_error(ctx);
  /* transposes are shown */
  cr_assert_null(ad_matmul(ctx, a, b, true, false));
  expect_error(AD_ERR_SHAPE, "matmul", "[32,784]^T", "[64,10]", NULL);
  ad_tensor_free(a);
  ad_tensor_free(b);
}

Test(errors, matmul_rank_and_batch) {
  int64_t v[1] = {4}, m[2] = {3, 4}, b1[3] = {2, 3, 4}, b2[3] = {3, 4, 5};
  ad_tensor *x = tensor(AD_F64, 1, v), *w = tensor(AD_F64, 2, m);
  ad_tensor *p = tensor(AD_F64, 3, b1), *q = tensor(AD_F64, 3, b2);
  ad_tensor *s = tensor(AD_F64, 0, NULL);
  cr_assert_null(ad_matmul(ctx, x, w, false, false)); /* 1-D: a row [1,4] */
  expect_error(AD_ERR_SHAPE, "matmul", "[4]", "[3,4]", NULL);
  cr_assert_null(ad_matmul(ctx, s, w, false, false));
  expect_error(AD_ERR_SHAPE, "matmul", "at least 1 dim", "[]", "[3,4]", NULL);
  cr_assert_null(ad_matmul(ctx, p, q, false, false));
  expect_error(AD_ERR_SHAPE, "matmul", "batch", "[2,3,4]", "[3,4,5]", NULL);
  ad_tensor_free(x);
  ad_tensor_free(w);
  ad_tensor_free(p);
  ad_tensor_free(q);
  ad_tensor_free(s);
}

Test(errors, other_shape_mismatches) {
  int64_t s[2] = {2, 3}, t[2] = {3, 3}, u[2] = {3, 2};
  ad_tensor *a = tensor(AD_F64, 2, s), *b = tensor(AD_F64, 2, t), *c = tensor(AD_F64, 2, u);
  ad_tensor *xs[2] = {a, b};
  cr_assert_null(ad_concat(ctx, 2, xs, 1));
  expect_error(AD_ERR_SHAPE, "concat", "[2,3]", "[3,3]", NULL);
  cr_assert_null(ad_expand(ctx, a, 2, t));
  expect_error(AD_ERR_SHAPE, "expand", "[2,3]", NULL);
  cr_assert_null(ad_sum_to(ctx, a, 2, u));
  expect_error(AD_ERR_SHAPE, "sum_to", "[2,3]", NULL);
  int64_t cs[1] = {4};
  ad_tensor *cond = tensor(AD_F64, 1, cs);
  cr_assert_null(ad_where(ctx, cond, a, a));
  expect_error(AD_ERR_SHAPE, "where", "[4]", "[2,3]", NULL);
  int64_t e[2] = {2, 0};
  ad_tensor *empty = tensor(AD_F64, 2, e);
  cr_assert_null(ad_max(ctx, empty));
  expect_error(AD_ERR_SHAPE, "max", "[2,0]", NULL);
  /* copy_data needs equal sizes */
  cr_assert_eq(ad_tensor_copy_data(a, c), AD_OK);
  cr_assert_eq(ad_tensor_copy_data(a, b), AD_ERR_SHAPE);
  expect_error(AD_ERR_SHAPE, "copy_data", "[2,3]", "[3,3]", NULL);
  ad_tensor_free(a);
  ad_tensor_free(b);
  ad_tensor_free(c);
  ad_tensor_free(cond);
  ad_tensor_free(empty);
}

/* -------------------------------------------------------------- dtypes */

Test(errors, dtype_mismatch_f32_plus_f64) {
  int64_t s[2] = {2, 2};
  ad_tensor *a = tensor(AD_F32, 2, s), *b = tensor(AD_F64, 2, s);
  cr_assert_null(ad_add(ctx, a, b));
  expect_error(AD_ERR_DTYPE, "add", "f32", "f64", NULL);
  cr_assert_null(ad_matmul(ctx, a, b, false, false));
  expect_error(AD_ERR_DTYPE, "matmul", "f32", "f64", NULL);
  ad_tensor *xs[2] = {a, b};
  cr_assert_null(ad_concat(ctx, 2, xs, 0));
  expect_error(AD_ERR_DTYPE, "concat", NULL);
  ad_tensor_free(a);
  ad_tensor_free(b);
}

Test(errors, i32_tensor_in_a_float_op) {
  int64_t s[2] = {2, 3};
  ad_tensor *i = tensor(AD_I32, 2, s), *f = tensor(AD_F32, 2, s);
  cr_assert_null(ad_exp(ctx, i));
  expect_error(AD_ERR_DTYPE, "exp", "i32", NULL);
  cr_assert_null(ad_tanh(ctx, i));
  expect_error(AD_ERR_DTYPE, "tanh", "i32", NULL);
  cr_assert_null(ad_add(ctx, i, i));
  expect_error(AD_ERR_DTYPE, "add", "i32", NULL);
  cr_assert_null(ad_mul(ctx, f, i));
  expect_error(AD_ERR_DTYPE, "mul", NULL);
  cr_assert_null(ad_sum(ctx, i));
  expect_error(AD_ERR_DTYPE, "sum", "i32", NULL);
  cr_assert_null(ad_softmax(ctx, i, 1));
  expect_error(AD_ERR_DTYPE, "softmax", "i32", NULL);
  cr_assert_null(ad_log_softmax(ctx, i, 1));
  expect_error(AD_ERR_DTYPE, "log_softmax", "i32", NULL);
  cr_assert_null(ad_cast(ctx, f, AD_I32));
  expect_error(AD_ERR_DTYPE, "cast", NULL);
  /* indices must be i32 */
  ad_tensor *fi = tensor(AD_F32, 1, s);
  cr_assert_null(ad_index_select(ctx, f, fi));
  expect_error(AD_ERR_DTYPE, "index_select", "f32", NULL);
  /* an i32 leaf cannot require a gradient */
  cr_assert_eq(ad_tensor_set_requires_grad(i, true), AD_ERR_DTYPE);
  expect_error(AD_ERR_DTYPE, "set_requires_grad", "i32", NULL);
  cr_assert(!ad_tensor_requires_grad(i));
  ad_tensor_free(i);
  ad_tensor_free(f);
  ad_tensor_free(fi);
}

/* ------------------------------------------------------------ backward */

Test(errors, backward_non_scalar_without_seed) {
  int64_t s[2] = {2, 3}, r[1] = {3};
  ad_tensor *a = grad_tensor(AD_F64, 2, s);
  ad_tensor *y = ad_exp(ctx, a);
  cr_assert_eq(ad_backward(ctx, y, NULL), AD_ERR_SHAPE);
  expect_error(AD_ERR_SHAPE, "backward", "[2,3]", NULL);
  cr_assert_null(a->grad);
  /* a seed of the wrong size or dtype */
  ad_tensor *bad = tensor(AD_F64, 1, r);
  cr_assert_eq(ad_backward(ctx, y, bad), AD_ERR_SHAPE);
  expect_error(AD_ERR_SHAPE, "backward", "[3]", "[2,3]", NULL);
  ad_tensor *bad_dt = tensor(AD_F32, 2, s);
  cr_assert_eq(ad_backward(ctx, y, bad_dt), AD_ERR_DTYPE);
  expect_error(AD_ERR_DTYPE, "backward", "f32", "f64", NULL);
  ad_tensor *out;
  cr_assert_eq(ad_grad(ctx, y, NULL, 1, &a, &out, false), AD_ERR_SHAPE);
  expect_error(AD_ERR_SHAPE, "grad", "[2,3]", NULL);
  cr_assert_null(a->grad);
  ad_tensor_free(a);
  ad_tensor_free(bad);
  ad_tensor_free(bad_dt);
}

Test(errors, backward_after_reset_and_without_graph) {
  int64_t s[1] = {3};
  ad_tensor *a = grad_tensor(AD_F64, 1, s);
  ad_tensor *L = ad_sum(ctx, ad_square(ctx, a));
  ad_tape_reset(ctx);
  cr_assert_eq(ad_backward(ctx, L, NULL), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "backward", "reset", NULL);
  /* an op given a tensor from a reset tape refuses it */
  ad_tensor *c = tensor(AD_F64, 1, s);
  ad_tensor *k = ad_exp(ctx, c); /* not recorded: no input requires grad */
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, k), NULL), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "backward", "require", NULL);
  ad_tape_reset(ctx);
  cr_assert_null(ad_exp(ctx, k));
  expect_error(AD_ERR_STATE, "exp", "reset", NULL);
  /* a leaf root that needs no gradient */
  cr_assert_eq(ad_backward(ctx, c, NULL), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "backward", NULL);
  ad_tensor_free(a);
  ad_tensor_free(c);
}

/* ------------------------------------------------------------ NULL input */

Test(errors, null_inputs_name_the_op) {
  int64_t s[1] = {3};
  ad_tensor *a = tensor(AD_F64, 1, s);
  cr_assert_null(ad_exp(ctx, NULL));
  expect_error(AD_ERR_NULL, "exp", NULL);
  cr_assert_null(ad_add(ctx, a, NULL));
  expect_error(AD_ERR_NULL, "add", "input 1", NULL);
  cr_assert_null(ad_matmul(ctx, NULL, a, false, false));
  expect_error(AD_ERR_NULL, "matmul", "input 0", NULL);
  cr_assert_null(ad_reshape(ctx, NULL, 1, s));
  expect_error(AD_ERR_NULL, "reshape", NULL);
  cr_assert_null(ad_transpose(ctx, NULL, 0, 1));
  expect_error(AD_ERR_NULL, "transpose", NULL);
  cr_assert_null(ad_mean(ctx, NULL));
  expect_error(AD_ERR_NULL, "mean", NULL);
  cr_assert_null(ad_mean_axis(ctx, NULL, 0, false));
  expect_error(AD_ERR_NULL, "mean", NULL);
  cr_assert_null(ad_softmax_cross_entropy(ctx, a, NULL));
  expect_error(AD_ERR_NULL, "softmax_cross_entropy", NULL);
  ad_tensor *xs[2] = {a, NULL};
  cr_assert_null(ad_concat(ctx, 2, xs, 0));
  expect_error(AD_ERR_NULL, "concat", "input 1", NULL);
  cr_assert_null(ad_permute(ctx, a, NULL));
  expect_error(AD_ERR_NULL, "permute", NULL);
  cr_assert_null(ad_tensor_clone(ctx, NULL));
  expect_error(AD_ERR_NULL, "clone", NULL);
  cr_assert_eq(ad_backward(ctx, NULL, NULL), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, "backward", NULL);
  ad_tensor *out = a;
  cr_assert_eq(ad_grad(ctx, NULL, NULL, 1, &a, &out, false), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, "grad", NULL);
  ad_tensor_free(a);
}

Test(errors, null_keeps_the_root_cause_other_failures_replace) {
  int64_t s[2] = {4, 3}, r[2] = {3, 2};
  ad_tensor *w = tensor(AD_F32, 2, r), *x = tensor(AD_F32, 2, s);
  /* the first failure is in matmul; everything after sees NULL */
  ad_tensor *y =
      ad_sum(ctx, ad_tanh(ctx, ad_add(ctx, ad_matmul(ctx, NULL, w, false, false), ad_exp(ctx, x))));
  cr_assert_null(y);
  cr_assert_eq(ad_backward(ctx, y, NULL), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, "matmul: input 0 is NULL", NULL);
  /* a shape error first, then a NULL: the shape error is kept */
  ad_tensor *z = ad_add(ctx, x, w);
  cr_assert_null(ad_exp(ctx, z));
  cr_assert_null(ad_softmax(ctx, ad_exp(ctx, z), 1));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_SHAPE);
  cr_assert(strstr(ad_last_error(ctx), "[4,3]") && strstr(ad_last_error(ctx), "[3,2]"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
  /* any other failure replaces an error the caller ignored: the shape
   * error above is not cleared, yet a dtype error is reported as itself */
  cr_assert_null(ad_add(ctx, x, w));
  int64_t s2 = 2;
  ad_tensor *ix = ad_zeros(ctx, AD_I32, 1, &s2);
  cr_assert_null(ad_exp(ctx, ix));
  expect_error(AD_ERR_DTYPE, "exp: input 0 is i32", NULL);
  ad_tensor_free(ix);
  /* a NULL with no error before it is reported as itself */
  cr_assert_null(ad_exp(ctx, NULL));
  expect_error(AD_ERR_NULL, "exp: input 0 is NULL", NULL);
  /* ad_set_error replaces, ad_set_null_error keeps, AD_OK records nothing */
  cr_assert_eq(ad_set_error(ctx, AD_OK, "ignored"), AD_OK);
  cr_assert_eq(ad_last_status(ctx), AD_OK);
  cr_assert_eq(ad_set_error(ctx, AD_ERR_IO, "layer %d: %s", 3, "first"), AD_ERR_IO);
  cr_assert_eq(ad_set_null_error(ctx, "layer 4: input is NULL"), AD_ERR_NULL);
  cr_assert_str_eq(ad_last_error(ctx), "layer 3: first");
  cr_assert_eq(ad_last_status(ctx), AD_ERR_IO);
  cr_assert_eq(ad_set_error(ctx, AD_ERR_ARG, "second"), AD_ERR_ARG);
  cr_assert_str_eq(ad_last_error(ctx), "second");
  cr_assert_eq(ad_last_status(ctx), AD_ERR_ARG);
  ad_clear_error(ctx);
  cr_assert_eq(ad_set_null_error(ctx, "layer %d: input is NULL", 5), AD_ERR_NULL);
  cr_assert_str_eq(ad_last_error(ctx), "layer 5: input is NULL");
  ad_clear_error(ctx);
  ad_tensor_free(w);
  ad_tensor_free(x);
}

Test(errors, null_context_and_null_tensors_are_harmless) {
  int64_t s[1] = {2};
  ad_tensor *a = tensor(AD_F64, 1, s);
  cr_assert_null(ad_add(NULL, a, a));
  cr_assert_null(ad_exp(NULL, a));
  cr_assert_null(ad_mean(NULL, a));
  cr_assert_null(ad_zeros(NULL, AD_F64, 1, s));
  cr_assert_null(ad_arange(NULL, AD_F64, 0, 3, 1));
  cr_assert_null(ad_scalar(NULL, AD_F64, 1));
  cr_assert_null(ad_tensor_clone(NULL, a));
  cr_assert_eq(ad_backward(NULL, a, NULL), AD_ERR_NULL);
  cr_assert_null(ad_ctx_new_with_alloc(NULL, NULL));
  cr_assert_eq(ad_last_status(NULL), AD_ERR_NULL);
  cr_assert_eq(ad_op_count(NULL), 0);
  cr_assert_eq(ad_op_find(NULL, "add"), -1);
  cr_assert_eq(ad_op_find(ctx, NULL), -1);
  cr_assert_eq(ad_tape_size(NULL), 0);
  cr_assert_eq(ad_tensor_set_requires_grad(NULL, true), AD_ERR_NULL);
  cr_assert_eq(ad_tensor_retain_grad(NULL), AD_ERR_NULL);
  cr_assert_eq(ad_tensor_copy_data(NULL, a), AD_ERR_NULL);
  cr_assert(!ad_tensor_requires_grad(NULL));
  cr_assert(!ad_tensor_is_temporary(NULL));
  cr_assert(!ad_tensor_has_nonfinite(NULL));
  cr_assert_eq(ad_tensor_op(NULL), -1);
  cr_assert_eq(ad_tensor_inputs(NULL, NULL, 0), 0);
  cr_assert_null(ad_malloc(NULL, 16));
  ad_tensor_fill(NULL, 1.0);
  ad_tensor_zero_grad(NULL);
  ad_tensor_zero_grad(a); /* no grad yet: no-op */
  cr_assert_null(a->grad);
  ad_tensor_free(NULL);
  ad_ctx_free(NULL);
  ad_free(ctx, NULL, 0);
  ad_tape_reset(NULL);
  ad_clear_error(NULL);
  ad_set_backward_hook(NULL, NULL, NULL);
  ad_rng_seed(NULL, 1);
  cr_assert_eq(ad_last_status(ctx), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor_free(a);
}

/* ------------------------------------------------- arguments out of range */

Test(errors, constructor_arguments) {
  int64_t neg[2] = {2, -1}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  cr_assert_null(ad_zeros(ctx, AD_F32, 2, neg));
  expect_error(AD_ERR_ARG, "zeros: dimension 1 of [2,-1] is negative", NULL);
  cr_assert_null(ad_ones(ctx, AD_F32, 9, nine));
  expect_error(AD_ERR_ARG, "ndim 9", NULL);
  cr_assert_null(ad_from_data(ctx, AD_F32, -1, nine, NULL));
  expect_error(AD_ERR_ARG, "from_data", NULL);
  cr_assert_null(ad_zeros(ctx, AD_F32, 2, NULL));
  expect_error(AD_ERR_NULL, "zeros: shape is NULL for ndim 2", NULL);
  cr_assert_null(ad_zeros(ctx, (ad_dtype)7, 1, nine));
  expect_error(AD_ERR_DTYPE, "dtype 7", NULL);
  int64_t huge[2] = {INT64_C(1) << 30, INT64_C(1) << 30};
  cr_assert_null(ad_zeros(ctx, AD_F32, 2, huge));
  expect_error(AD_ERR_ARG, "zeros: shape [1073741824,1073741824] is too large",
               "multiply to 1.153e+18", "2^40", NULL);
  cr_assert_null(ad_arange(ctx, AD_F64, 0, 1, 0));
  expect_error(AD_ERR_ARG, "arange", NULL);
  cr_assert_null(ad_arange(ctx, AD_F64, 0, NAN, 1));
  expect_error(AD_ERR_ARG, "arange", NULL);
  cr_assert_null(ad_rand(ctx, NULL, AD_F32, 1, nine, 0, 1));
  expect_error(AD_ERR_NULL, "rand", NULL);
  cr_assert_null(ad_randn(ctx, NULL, AD_F32, 1, nine, 0, 1));
  expect_error(AD_ERR_NULL, "randn", NULL);
}

Test(errors, bad_reshape) {
  int64_t s[2] = {2, 3};
  ad_tensor *a = tensor(AD_F64, 2, s);
  int64_t t1[2] = {4, 2}, t2[2] = {-1, -1}, t3[2] = {-1, 4}, t4[2] = {3, -2};
  cr_assert_null(ad_reshape(ctx, a, 2, t1));
  expect_error(AD_ERR_SHAPE, "reshape", "[2,3]", "6", "8", NULL);
  cr_assert_null(ad_reshape(ctx, a, 2, t2));
  expect_error(AD_ERR_ARG, "reshape", NULL);
  cr_assert_null(ad_reshape(ctx, a, 2, t3));
  expect_error(AD_ERR_SHAPE, "reshape", "[2,3]", NULL);
  cr_assert_null(ad_reshape(ctx, a, 2, t4));
  expect_error(AD_ERR_ARG, "reshape", "-2", NULL);
  cr_assert_null(ad_reshape(ctx, a, 9, t1));
  expect_error(AD_ERR_ARG, "reshape", "ndim 9", NULL);
  cr_assert_null(ad_reshape(ctx, a, 0, NULL));
  expect_error(AD_ERR_SHAPE, "reshape", NULL);
  ad_tensor_free(a);
}

Test(errors, bad_axis) {
  int64_t s[2] = {2, 3};
  ad_tensor *a = tensor(AD_F64, 2, s);
  cr_assert_null(ad_sum_axis(ctx, a, 2, false));
  expect_error(AD_ERR_ARG, "sum", "axis 2", "[2,3]", NULL);
  cr_assert_null(ad_max_axis(ctx, a, -3, true));
  expect_error(AD_ERR_ARG, "max", "axis -3", "[2,3]", NULL);
  cr_assert_null(ad_mean_axis(ctx, a, 5, false));
  expect_error(AD_ERR_ARG, "mean", "axis 5", "[2,3]", NULL);
  cr_assert_null(ad_logsumexp(ctx, a, 127, false));
  expect_error(AD_ERR_ARG, "logsumexp", "[2,3]", NULL);
  cr_assert_null(ad_softmax(ctx, a, 2));
  expect_error(AD_ERR_ARG, "softmax", "axis 2", "[2,3]", NULL);
  cr_assert_null(ad_log_softmax(ctx, a, -3));
  expect_error(AD_ERR_ARG, "log_softmax", "[2,3]", NULL);
  cr_assert_null(ad_transpose(ctx, a, 0, 2));
  expect_error(AD_ERR_ARG, "transpose", NULL);
  cr_assert_null(ad_narrow(ctx, a, 2, 0, 1));
  expect_error(AD_ERR_ARG, "narrow", "axis 2", "[2,3]", NULL);
  cr_assert_null(ad_narrow(ctx, a, 1, 2, 2));
  expect_error(AD_ERR_ARG, "narrow", "[2,3]", NULL);
  cr_assert_null(ad_pad(ctx, a, -5, 1, 1));
  expect_error(AD_ERR_ARG, "pad", "[2,3]", NULL);
  ad_tensor *xs[2] = {a, a};
  cr_assert_null(ad_concat(ctx, 2, xs, 3));
  expect_error(AD_ERR_ARG, "concat", "[2,3]", NULL);
  int perm[2] = {0, 0};
  cr_assert_null(ad_permute(ctx, a, perm));
  expect_error(AD_ERR_ARG, "permute", NULL);
  cr_assert_null(ad_div_scalar(ctx, a, 0.0));
  expect_error(AD_ERR_ARG, "div_scalar", NULL);
  ad_tensor_free(a);
}

/* Through the registry a reduction takes a bit mask of axes, which must be
 * one run of the input's dimensions. */
Test(errors, reduce_axes_mask) {
  int64_t s[3] = {2, 3, 4};
  ad_tensor *a = tensor(AD_F64, 3, s);
  static const char *const ops[3] = {"sum", "max", "logsumexp"};
  for (int k = 0; k < 3; k++) {
    int id = ad_op_find(ctx, ops[k]);
    cr_assert_geq(id, 0, "%s is not registered", ops[k]);
    ad_attrs gap = {.reduce = {.axes = 5u}}, beyond = {.reduce = {.axes = 8u}};
    cr_assert_null(ad_op_apply(ctx, id, 1, &a, &gap), "%s: axes 0 and 2 accepted", ops[k]);
    expect_error(AD_ERR_ARG, ops[k], "[2,3,4]", NULL);
    cr_assert_null(ad_op_apply(ctx, id, 1, &a, &beyond), "%s: axis 3 of a 3-d x", ops[k]);
    expect_error(AD_ERR_ARG, ops[k], "[2,3,4]", NULL);
    ad_attrs run = {.reduce = {.axes = 6u, .keepdim = true}}; /* H, W of a CHW tensor */
    ad_tensor *y = ad_op_apply(ctx, id, 1, &a, &run);
    cr_assert_not_null(y, "%s over axes 1, 2: %s", ops[k], ad_last_error(ctx));
    cr_assert(y->ndim == 3 && y->shape[0] == 2 && y->shape[1] == 1 && y->shape[2] == 1,
              "%s over axes 1, 2 with keepdim: ndim %d", ops[k], y->ndim);
  }
  ad_tensor_free(a);
}

Test(errors, index_select_out_of_range) {
  int64_t s[2] = {5, 3}, n = 3;
  ad_tensor *x = grad_tensor(AD_F32, 2, s);
  int32_t bad[3] = {1, 7, 0}, neg[3] = {0, -1, 2};
  ad_tensor *i1 = ad_from_data(ctx, AD_I32, 1, &n, bad);
  ad_tensor *i2 = ad_from_data(ctx, AD_I32, 1, &n, neg);
  cr_assert_null(ad_index_select(ctx, x, i1));
  expect_error(AD_ERR_ARG, "index_select", "index 7", "0..4", NULL);
  cr_assert_null(ad_index_select(ctx, x, i2));
  expect_error(AD_ERR_ARG, "index_select", "-1", NULL);
  cr_assert_null(ad_index_add(ctx, x, i1, 5));
  expect_error(AD_ERR_SHAPE, "index_add", "[5,3]", "[3]", NULL);
  cr_assert_eq(ad_tape_size(ctx), 0, "failed ops are not recorded");
  ad_tensor_free(x);
  ad_tensor_free(i1);
  ad_tensor_free(i2);
}

/* Along an axis: the axis is checked against the input's (index_add:
 * the result's) dims, the indices against the length on that axis, and
 * index_add's source must hold the index shape at the axis. */
Test(errors, index_select_add_axis_misuse) {
  int64_t s[2] = {5, 3}, n = 3;
  ad_tensor *x = grad_tensor(AD_F32, 2, s);
  int32_t bad[3] = {1, 3, 0}, ok[3] = {2, 0, 2};
  ad_tensor *i1 = ad_from_data(ctx, AD_I32, 1, &n, bad);
  ad_tensor *i2 = ad_from_data(ctx, AD_I32, 1, &n, ok);
  cr_assert_null(ad_index_select_axis(ctx, x, 2, i2));
  expect_error(AD_ERR_ARG, "index_select", "axis 2", "[5,3]", NULL);
  cr_assert_null(ad_index_select_axis(ctx, x, -1, i1));
  expect_error(AD_ERR_ARG, "index_select", "index 3", "0..2", NULL);
  cr_assert_null(ad_index_add_axis(ctx, x, -3, i2, 4));
  expect_error(AD_ERR_ARG, "index_add", "axis -3", "[5,3]", NULL);
  cr_assert_null(ad_index_add_axis(ctx, x, 0, i2, 4));
  expect_error(AD_ERR_SHAPE, "index_add", "[5,3]", "[3]", NULL);
  cr_assert_eq(ad_tape_size(ctx), 0, "failed ops are not recorded");
  ad_tensor_free(x);
  ad_tensor_free(i1);
  ad_tensor_free(i2);
}

/* index_select_add names the index list at fault (src against x's length
 * on the axis, dst against rows), its dtype, src and dst of other sizes,
 * the axis and rows < 0; nothing is recorded. */
Test(errors, index_select_add_misuse) {
  int64_t s[2] = {5, 3}, n = 3, two = 2;
  ad_tensor *x = grad_tensor(AD_F32, 2, s);
  int32_t ok[3] = {2, 0, 2}, big[3] = {0, 1, 5};
  ad_tensor *i_ok = ad_from_data(ctx, AD_I32, 1, &n, ok),
            *i_big = ad_from_data(ctx, AD_I32, 1, &n, big);
  ad_tensor *i_two = ad_from_data(ctx, AD_I32, 1, &two, ok), *f = tensor(AD_F32, 1, &n);
  cr_assert_null(ad_index_select_add(ctx, x, 0, i_big, i_ok, 3));
  expect_error(AD_ERR_ARG, "index_select_add", "src[2] = 5", "0..4", "[5,3]", NULL);
  cr_assert_null(ad_index_select_add(ctx, x, 0, i_ok, i_ok, 2));
  expect_error(AD_ERR_ARG, "index_select_add", "dst[0] = 2", "0..1", "rows 2", NULL);
  cr_assert_null(ad_index_select_add(ctx, x, 1, i_big, i_ok, 4));
  expect_error(AD_ERR_ARG, "index_select_add", "src[2] = 5", "0..2", "axis 1", NULL);
  cr_assert_null(ad_index_select_add(ctx, x, 0, i_ok, f, 3));
  expect_error(AD_ERR_DTYPE, "index_select_add", "dst [3]", "f32", "i32", NULL);
  cr_assert_null(ad_index_select_add(ctx, x, 0, i_ok, i_two, 3));
  expect_error(AD_ERR_SHAPE, "index_select_add", "src [3]", "dst [2]", NULL);
  cr_assert_null(ad_index_select_add(ctx, x, -3, i_ok, i_ok, 3));
  expect_error(AD_ERR_ARG, "index_select_add", "axis -3", "[5,3]", NULL);
  cr_assert_null(ad_index_select_add(ctx, x, 0, i_ok, i_ok, -1));
  expect_error(AD_ERR_ARG, "index_select_add", "rows -1", NULL);
  cr_assert_eq(ad_tape_size(ctx), 0, "failed ops are not recorded");
  ad_tensor_free(x), ad_tensor_free(i_ok), ad_tensor_free(i_big), ad_tensor_free(i_two);
  ad_tensor_free(f);
}

Test(errors, resample_axis_misuse) {
  int64_t s[2] = {5, 3}, t2[2] = {2, 3}, t1[2] = {1, 3}, n3 = 3, t0[2] = {0, 3}, s4[2] = {4, 3};
  ad_tensor *x = grad_tensor(AD_F32, 2, s), *x4 = grad_tensor(AD_F32, 2, s4);
  int32_t ok[6] = {0, 1, 4, 1, 2, 4}, big[6] = {0, 1, 4, 1, 5, 4};
  ad_tensor *i_ok = ad_from_data(ctx, AD_I32, 2, t2, ok),
            *i_big = ad_from_data(ctx, AD_I32, 2, t2, big);
  ad_tensor *i_1d = ad_from_data(ctx, AD_I32, 1, &n3, ok),
            *i_0 = ad_from_data(ctx, AD_I32, 2, t0, ok);
  ad_tensor *w = tensor(AD_F32, 2, t2), *w1 = tensor(AD_F32, 2, t1), *w64 = tensor(AD_F64, 2, t2);
  ad_tensor *f = tensor(AD_F32, 2, t2);
  cr_assert_null(ad_resample_axis(ctx, x, 0, i_big, w));
  expect_error(AD_ERR_ARG, "resample_axis", "idx[1, 1] = 5", "0..4", "[5,3]", "axis 0", NULL);
  cr_assert_null(ad_resample_axis(ctx, x, 1, i_ok, w));
  expect_error(AD_ERR_ARG, "resample_axis", "idx[0, 2] = 4", "0..2", "axis 1", NULL);
  cr_assert_null(ad_resample_axis(ctx, x, 0, f, w));
  expect_error(AD_ERR_DTYPE, "resample_axis", "idx [2,3]", "f32", "i32", NULL);
  cr_assert_null(ad_resample_axis(ctx, x, 0, i_1d, w));
  expect_error(AD_ERR_SHAPE, "resample_axis", "idx [3]", "[taps, m]", NULL);
  cr_assert_null(ad_resample_axis(ctx, x, 0, i_0, w));
  expect_error(AD_ERR_SHAPE, "resample_axis", "idx [0,3]", "taps >= 1", NULL);
  cr_assert_null(ad_resample_axis(ctx, x, 0, i_ok, w1));
  expect_error(AD_ERR_SHAPE, "resample_axis", "w [1,3]", "idx's shape [2,3]", NULL);
  /* a dtype mismatch is AD_ERR_DTYPE, as mul's and batch_norm's */
  cr_assert_null(ad_resample_axis(ctx, x, 0, i_ok, w64));
  expect_error(AD_ERR_DTYPE, "resample_axis", "w [2,3] is f64", "x's dtype f32", NULL);
  cr_assert_null(ad_resample_axis_adjoint(ctx, x4, 1, i_ok, w64, 5));
  expect_error(AD_ERR_DTYPE, "resample_axis_adjoint", "w [2,3] is f64", "x's dtype f32", NULL);
  cr_assert_null(ad_resample_axis(ctx, i_big, 0, i_ok, w));
  expect_error(AD_ERR_DTYPE, "resample_axis", "x is i32", NULL);
  cr_assert_null(ad_resample_axis(ctx, x, 2, i_ok, w));
  expect_error(AD_ERR_ARG, "resample_axis", "axis 2", "[5,3]", NULL);
  cr_assert_null(ad_resample_axis(ctx, x, 0, NULL, w));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_NULL);
  /* the adjoint: x [m, 3] into rows */
  cr_assert_null(ad_resample_axis_adjoint(ctx, x, 0, i_ok, w, 5));
  expect_error(AD_ERR_SHAPE, "resample_axis_adjoint", "x [5,3]", "5 positions on axis 0",
               "idx [2,3]", NULL);
  cr_assert_null(ad_resample_axis_adjoint(ctx, x4, 1, i_ok, w, 4));
  expect_error(AD_ERR_ARG, "resample_axis_adjoint", "idx[0, 2] = 4", "0..3", "rows 4", NULL);
  cr_assert_null(ad_resample_axis_adjoint(ctx, x4, 1, i_ok, w, -1));
  expect_error(AD_ERR_ARG, "resample_axis_adjoint", "rows -1", NULL);
  cr_assert_eq(ad_tape_size(ctx), 0, "failed ops are not recorded");
  ad_tensor *y = ad_resample_axis_adjoint(ctx, x4, 1, i_ok, w, 5);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert(y->ndim == 2 && y->shape[0] == 4 && y->shape[1] == 5);
  ad_tensor_free(x), ad_tensor_free(x4), ad_tensor_free(i_ok), ad_tensor_free(i_big);
  ad_tensor_free(i_1d), ad_tensor_free(i_0), ad_tensor_free(w), ad_tensor_free(w1);
  ad_tensor_free(w64), ad_tensor_free(f);
}

Test(errors, index_add_result_beyond_max_dims) {
  /* a 0-d index adds the rows dim in front: an 8-d source would give 9 */
  int64_t s8[AD_MAX_DIMS] = {2, 1, 1, 1, 1, 1, 1, 1};
  ad_tensor *src = ad_ones(ctx, AD_F64, AD_MAX_DIMS, s8);
  int32_t one = 1;
  ad_tensor *idx = ad_from_data(ctx, AD_I32, 0, NULL, &one);
  cr_assert_null(ad_index_add(ctx, src, idx, 3));
  expect_error(AD_ERR_SHAPE, "index_add", "[2,1,1,1,1,1,1,1]", "[]", "9 dims", "at most 8", NULL);
  ad_tensor_free(src);
  ad_tensor_free(idx);
}

Test(errors, labels_out_of_range) {
  int64_t s[2] = {3, 3}, n = 3, m = 2;
  ad_tensor *z = grad_tensor(AD_F64, 2, s);
  int32_t high[3] = {0, 3, 1}, low[3] = {-1, 0, 0}, ok2[2] = {0, 1};
  ad_tensor *t1 = ad_from_data(ctx, AD_I32, 1, &n, high);
  ad_tensor *t2 = ad_from_data(ctx, AD_I32, 1, &n, low);
  ad_tensor *t3 = ad_from_data(ctx, AD_I32, 1, &m, ok2);
  ad_tensor *tf = tensor(AD_F64, 1, &n);
  cr_assert_null(ad_softmax_cross_entropy(ctx, z, t1));
  expect_error(AD_ERR_ARG, "softmax_cross_entropy", "label 3", "0..2", NULL);
  cr_assert_null(ad_softmax_cross_entropy(ctx, z, t2));
  expect_error(AD_ERR_ARG, "softmax_cross_entropy", "label -1", NULL);
  cr_assert_null(ad_softmax_cross_entropy(ctx, z, t3));
  expect_error(AD_ERR_SHAPE, "softmax_cross_entropy", "[3,3]", "[2]", NULL);
  cr_assert_null(ad_softmax_cross_entropy(ctx, z, tf));
  expect_error(AD_ERR_DTYPE, "softmax_cross_entropy", "f64", NULL);
  ad_tensor_free(z);
  ad_tensor_free(t1);
  ad_tensor_free(t2);
  ad_tensor_free(t3);
  ad_tensor_free(tf);
}

Test(errors, set_requires_grad_on_op_output) {
  int64_t s[1] = {3};
  ad_tensor *a = grad_tensor(AD_F64, 1, s);
  ad_tensor *y = ad_exp(ctx, a);
  cr_assert_eq(ad_tensor_set_requires_grad(y, true), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "set_requires_grad", "exp", NULL);
  ad_tensor *c = tensor(AD_F64, 1, s);
  ad_tensor *k = ad_sin(ctx, c); /* unrecorded op output: still not a leaf */
  cr_assert_eq(ad_tensor_set_requires_grad(k, true), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "set_requires_grad", "sin", NULL);
  cr_assert(!ad_tensor_requires_grad(k));
  /* an arena constant is no op output, but cannot hold a gradient either */
  ad_tensor *sc = ad_scalar(ctx, AD_F64, 2.0);
  cr_assert_eq(ad_tensor_set_requires_grad(sc, true), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "set_requires_grad", "ad_scalar", NULL);
  cr_assert(!ad_tensor_requires_grad(sc));
  /* turning it off on a leaf works */
  cr_assert_eq(ad_tensor_set_requires_grad(a, false), AD_OK);
  cr_assert(!ad_tensor_requires_grad(a));
  ad_tensor_free(a);
  ad_tensor_free(c);
}

/* --------------------------------------------------------- op registry */

static ad_status probe_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  c->out->dtype = x->dtype;
  c->out->ndim = x->ndim;
  for (int k = 0; k < x->ndim; k++) c->out->shape[k] = x->shape[k];
  return AD_OK;
}

static void probe_forward(const ad_call *c) {
  for (int64_t i = 0; i < c->out->size; i++)
    ad_tensor_set(c->out, i, 3 * ad_tensor_get(c->in[0], i));
}

Test(errors, op_register_duplicate_and_missing_fields) {
  int before = ad_op_count(ctx);
  ad_op_def def = {.name = "add", .arity = 1, .shape = probe_shape, .forward = probe_forward};
  cr_assert_eq(ad_op_register(ctx, &def), -1);
  expect_error(AD_ERR_ARG, "op_register", "'add'", NULL);
  def.name = NULL;
  cr_assert_eq(ad_op_register(ctx, &def), -1);
  expect_error(AD_ERR_ARG, "op_register", "name", NULL);
  def.name = "";
  cr_assert_eq(ad_op_register(ctx, &def), -1);
  expect_error(AD_ERR_ARG, "op_register", NULL);
  def.name = "triple";
  def.shape = NULL;
  cr_assert_eq(ad_op_register(ctx, &def), -1);
  expect_error(AD_ERR_ARG, "op_register", "shape", NULL);
  def.shape = probe_shape;
  def.forward = NULL;
  cr_assert_eq(ad_op_register(ctx, &def), -1);
  expect_error(AD_ERR_ARG, "op_register", "forward", NULL);
  def.forward = probe_forward;
  def.arity = 0;
  cr_assert_eq(ad_op_register(ctx, &def), -1);
  expect_error(AD_ERR_ARG, "op_register", "triple", "arity 0", NULL);
  def.arity = AD_MAX_SRC + 1;
  cr_assert_eq(ad_op_register(ctx, &def), -1);
  expect_error(AD_ERR_ARG, "triple", "arity 9", NULL);
  cr_assert_eq(ad_op_register(ctx, NULL), -1);
  expect_error(AD_ERR_ARG, "op_register", NULL);
  cr_assert_eq(ad_op_count(ctx), before, "failed registrations add nothing");
  cr_assert_eq(ad_op_find(ctx, "triple"), -1);
  /* a valid definition registers once, and its name is copied */
  char name[16] = "triple";
  def.name = name;
  def.arity = 1;
  int id = ad_op_register(ctx, &def);
  cr_assert_eq(id, before);
  memset(name, 0, sizeof name);
  cr_assert_eq(ad_op_find(ctx, "triple"), id);
  cr_assert_str_eq(ad_op_get(ctx, id)->name, "triple");
  def.name = "triple";
  cr_assert_eq(ad_op_register(ctx, &def), -1);
  expect_error(AD_ERR_ARG, "'triple'", NULL);
  /* applying it: wrong arity and a bad id are errors; the right call works */
  int64_t s[1] = {2};
  ad_tensor *a = tensor(AD_F64, 1, s);
  ad_tensor *in[2] = {a, a};
  cr_assert_null(ad_op_apply(ctx, id, 2, in, NULL));
  expect_error(AD_ERR_ARG, "triple", "2", NULL);
  cr_assert_null(ad_op_apply(ctx, 9999, 1, in, NULL));
  expect_error(AD_ERR_ARG, "9999", NULL);
  cr_assert_null(ad_op_apply(ctx, -1, 1, in, NULL));
  expect_error(AD_ERR_ARG, "-1", NULL);
  cr_assert_null(ad_op_get(ctx, ad_op_count(ctx)));
  ad_tensor *y = ad_op_apply(ctx, id, 1, in, NULL);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(y, 1), 3.0);
  /* no backward: a graph through it cannot be differentiated */
  cr_assert_eq(ad_tensor_set_requires_grad(a, true), AD_OK);
  y = ad_op_apply(ctx, id, 1, in, NULL);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "backward", NULL);
  ad_tensor_free(a);
}

/* A flag bit the engine does not know (a later version's, or garbage such
 * as -1) was accepted and ignored: the op then ran without what its author
 * asked for. It is refused, naming the bits; the known flags still pass. */
Test(errors, op_register_refuses_unknown_flags) {
  ad_op_def def = {.name = "flagged", .arity = 1, .shape = probe_shape, .forward = probe_forward};
  int before = ad_op_count(ctx);
  def.flags = 8;
  cr_assert_eq(ad_op_register(ctx, &def), -1);
  expect_error(AD_ERR_ARG, "op_register: flagged: flags 0x8 has unknown bits 0x8", NULL);
  def.flags = AD_OP_ELEMENTWISE | 0x100;
  cr_assert_eq(ad_op_register(ctx, &def), -1);
  expect_error(AD_ERR_ARG, "flagged", "unknown bits 0x100", NULL);
  cr_assert_eq(ad_op_count(ctx), before);
  cr_assert_eq(ad_op_find(ctx, "flagged"), -1);
  def.flags = AD_OP_VIEW | AD_OP_ELEMENTWISE;
  cr_assert_geq(ad_op_register(ctx, &def), 0, "%s", ad_last_error(ctx));
}

/* A shape rule that returns AD_OK having described nothing made a 0-d
 * output of input 0's dtype, which a forward written for the input's size
 * overran; it is refused. A rule that sets ndim 0 makes a scalar. */
static bool set_scalar;
static ad_status lazy_shape(const ad_call *c) {
  if (set_scalar) c->out->ndim = 0;
  return AD_OK;
}

Test(errors, a_shape_rule_that_describes_nothing_is_refused) {
  ad_op_def def = {.name = "lazy_shape", .arity = 1, .shape = lazy_shape, .forward = probe_forward};
  int id = ad_op_register(ctx, &def);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  int64_t s = 3;
  ad_tensor *x = tensor(AD_F64, 1, &s);
  set_scalar = false;
  cr_assert_null(ad_op_apply(ctx, id, 1, &x, NULL));
  expect_error(AD_ERR_ARG,
               "lazy_shape: the shape rule returned AD_OK without setting the output's ndim", NULL);
  set_scalar = true;
  ad_tensor *y = ad_op_apply(ctx, id, 1, &x, NULL);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert(y->ndim == 0 && y->size == 1 && y->dtype == AD_F64);
  cr_assert_eq(ad_tensor_item(y), 3.0);
  ad_tensor_free(x);
}

/* A view op (AD_OP_VIEW) whose forward left out->data NULL made a tensor
 * that the next op read through a NULL pointer (a crash), and one that
 * pointed it outside its input made a "view" of other memory; both are
 * refused. A view of the input's last two elements works. */
static int view_mode;
static double elsewhere[2];

static ad_status tail_shape(const ad_call *c) {
  c->out->dtype = c->in[0]->dtype;
  c->out->ndim = 1;
  c->out->shape[0] = 2;
  return AD_OK;
}

static void tail_forward(const ad_call *c) {
  double *x = c->in[0]->data;
  if (view_mode == 1) c->out->data = elsewhere;
  if (view_mode == 2) c->out->data = x + c->in[0]->size - 1; /* runs one past the end */
  if (view_mode == 3) c->out->data = x + c->in[0]->size - 2;
}

Test(errors, a_view_forward_must_point_into_its_input) {
  ad_op_def def = {.name = "tail2",
                   .arity = 1,
                   .flags = AD_OP_VIEW,
                   .shape = tail_shape,
                   .forward = tail_forward};
  int id = ad_op_register(ctx, &def);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  int64_t s = 4;
  ad_tensor *x = ad_from_data(ctx, AD_F64, 1, &s, (const double[]){1, 2, 3, 4});
  cr_assert_not_null(x);
  view_mode = 0;
  cr_assert_null(ad_op_apply(ctx, id, 1, &x, NULL));
  expect_error(AD_ERR_STATE, "tail2: the forward of a view (AD_OP_VIEW) left out->data NULL", NULL);
  view_mode = 1;
  cr_assert_null(ad_op_apply(ctx, id, 1, &x, NULL));
  expect_error(AD_ERR_STATE, "tail2", "pointed out->data outside input 0's data", NULL);
  view_mode = 2;
  cr_assert_null(ad_op_apply(ctx, id, 1, &x, NULL));
  expect_error(AD_ERR_STATE, "tail2", "outside input 0's data", NULL);
  view_mode = 3;
  ad_tensor *y = ad_op_apply(ctx, id, 1, &x, NULL);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_item(ad_sum(ctx, y)), 7.0);
  ad_tensor_free(x);
}

/* A registered op whose shape rule or forward called ad_tape_reset freed
 * its own inputs and result in the middle of the call: from the forward,
 * ad_op_apply returned a tensor of the reset tape; from the shape rule, a
 * result that looked fine, whose backward then gave x no gradient, with
 * AD_OK. The reset is now refused (the tape kept) and the call fails. */
static int reset_in;
static ad_status resetting_shape(const ad_call *c) {
  if (reset_in == 1) ad_tape_reset(c->ctx);
  return probe_shape(c);
}
static void resetting_forward(const ad_call *c) {
  if (reset_in == 2) ad_tape_reset(c->ctx);
  probe_forward(c);
}
static ad_status triple_backward(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_mul_scalar(c->ctx, c->gout, 3.0));
}

Test(errors, an_ops_shape_rule_or_forward_cannot_reset_the_tape) {
  ad_op_def def = {.name = "resetting",
                   .arity = 1,
                   .shape = resetting_shape,
                   .forward = resetting_forward,
                   .backward = triple_backward};
  int id = ad_op_register(ctx, &def);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  int64_t s = 2;
  ad_tensor *x = grad_tensor(AD_F64, 1, &s);
  for (reset_in = 1; reset_in <= 2; reset_in++) {
    ad_tensor *a = ad_mul_scalar(ctx, x, 2.0);
    size_t tape = ad_tape_size(ctx);
    cr_assert_null(ad_op_apply(ctx, id, 1, &a, NULL), "reset in %s",
                   reset_in == 1 ? "the shape rule" : "the forward");
    expect_error(AD_ERR_STATE,
                 "tape_reset: called from a registered op's shape rule or forward; the tape was "
                 "kept",
                 NULL);
    cr_assert_eq(ad_tape_size(ctx), tape, "the tape was kept");
    ad_tape_reset(ctx);
  }
  reset_in = 0; /* the same op, well behaved: dL/dx = 3 * 2 */
  ad_tensor *a = ad_mul_scalar(ctx, x, 2.0);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_op_apply(ctx, id, 1, &a, NULL)), NULL), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(x->grad, 1), 6.0);
  ad_tensor_free(x);
}

/* A registered op's shape rule or backward that returned a code of its
 * own (12345, -7), not an ad_status, passed it through: ad_op_apply's
 * caller, or ad_backward's, then held a status that no switch handles and
 * ad_status_str calls "unknown status". It becomes AD_ERR_ARG, the message
 * naming the op, the function and the value (and keeping the function's
 * own message); ad_set_error given such a value records AD_ERR_ARG too. */
static int odd_mode;
static ad_status odd_shape(const ad_call *c) {
  if (odd_mode == 1) return (ad_status)12345;
  if (odd_mode == 2) return (ad_status)-7;
  return probe_shape(c);
}
static void odd_forward(const ad_call *c) {
  probe_forward(c);
  if (odd_mode == 3) ad_set_error(c->ctx, (ad_status)999, "odd: the forward's own reason");
}
static ad_status odd_backward(const ad_call *c) {
  if (odd_mode == 4) return (ad_status)12345;
  if (odd_mode == 5) {
    ad_set_error(c->ctx, AD_ERR_SHAPE, "odd: the backward's own reason");
    return (ad_status)AD_STATUS_COUNT;
  }
  if (odd_mode == 6) return ad_set_error(c->ctx, (ad_status)-7, "odd: the backward's reason");
  return triple_backward(c);
}

Test(errors, a_status_outside_the_enum_becomes_ad_err_arg) {
  ad_op_def def = {.name = "odd",
                   .arity = 1,
                   .shape = odd_shape,
                   .forward = odd_forward,
                   .backward = odd_backward};
  int id = ad_op_register(ctx, &def);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  int64_t s = 2;
  ad_tensor *x = grad_tensor(AD_F64, 1, &s);
  odd_mode = 1;
  cr_assert_null(ad_op_apply(ctx, id, 1, &x, NULL));
  expect_error(AD_ERR_ARG, "odd: the shape rule returned 12345, which is not an ad_status", NULL);
  odd_mode = 2;
  cr_assert_null(ad_op_apply(ctx, id, 1, &x, NULL));
  expect_error(AD_ERR_ARG, "odd: the shape rule returned -7, which is not an ad_status", NULL);
  odd_mode = 3;
  cr_assert_null(ad_op_apply(ctx, id, 1, &x, NULL));
  expect_error(AD_ERR_ARG, "odd: the forward's own reason", "status 999", NULL);
  odd_mode = 4;
  ad_tensor *y = ad_op_apply(ctx, id, 1, &x, NULL);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_ERR_ARG);
  expect_error(AD_ERR_ARG,
               "backward: the backward of odd returned 12345, which is not an ad_status", NULL);
  cr_assert_null(x->grad);
  odd_mode = 5;
  ad_tensor *g = NULL;
  y = ad_op_apply(ctx, id, 1, &x, NULL);
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 1, &x, &g, false), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "grad: the backward of odd returned 11",
               "odd: the backward's own reason", NULL);
  odd_mode = 6;
  y = ad_op_apply(ctx, id, 1, &x, NULL);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "odd: the backward's reason", "status -7", NULL);
  cr_assert_eq(ad_set_error(ctx, (ad_status)-1, "direct"), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "direct (status -1, which is not an ad_status", NULL);
  cr_assert_eq(ad_set_error(NULL, (ad_status)77, "no context"), AD_ERR_ARG);
  odd_mode = 0; /* well behaved: dL/dx = 3 */
  y = ad_op_apply(ctx, id, 1, &x, NULL);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(x->grad, 0), 3.0);
  ad_tensor_free(x);
}

/* An AD_OP_ELEMENTWISE op may leave its shape function NULL: the engine
 * applies the broadcasting rule, errors included. */
Test(errors, elementwise_op_without_shape_function) {
  ad_op_def def = {
      .name = "triple_ew", .arity = 1, .flags = AD_OP_ELEMENTWISE, .forward = probe_forward};
  int id = ad_op_register(ctx, &def);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  int64_t s[1] = {2};
  ad_tensor *a = tensor(AD_F64, 1, s), *i = tensor(AD_I32, 1, s);
  ad_tensor *y = ad_op_apply(ctx, id, 1, &a, NULL);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert(y->dtype == AD_F64 && y->ndim == 1 && y->shape[0] == 2);
  cr_assert_eq(ad_tensor_get(y, 1), 3.0);
  cr_assert_null(ad_op_apply(ctx, id, 1, &i, NULL));
  expect_error(AD_ERR_DTYPE, "triple_ew", "i32", NULL);
  ad_tensor_free(a);
  ad_tensor_free(i);
}

/* A triple op whose backward fails while fail_next is set. */
static bool fail_next;

static ad_status flaky_backward(const ad_call *c) {
  if (fail_next) {
    fail_next = false;
    return ad_set_error(c->ctx, AD_ERR_STATE, "flaky: refused on purpose");
  }
  return c->needs[0] ? ad_call_set_grad(c, 0, ad_mul_scalar(c->ctx, c->gout, 3.0)) : AD_OK;
}

/* A backward that fails part way leaves no partial gradient on the tape:
 * after zeroing the leaves' grads, a second ad_backward over the same tape
 * gives the gradients of a clean pass. Here a = x*w feeds both the flaky
 * op and tanh; tanh's backward (done before the failure) has already added
 * into a's accumulator, which the retry must not see again. */
Test(errors, failed_backward_leaves_no_stale_gradient) {
  ad_op_def def = {.name = "flaky_triple",
                   .arity = 1,
                   .shape = probe_shape,
                   .forward = probe_forward,
                   .backward = flaky_backward};
  int id = ad_op_register(ctx, &def);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  int64_t s = 3;
  ad_tensor *x = ad_from_data(ctx, AD_F64, 1, &s, (const double[]){0.5, -1, 2});
  ad_tensor *w = ad_from_data(ctx, AD_F64, 1, &s, (const double[]){0.25, 0.75, -0.5});
  cr_assert(x && w);
  ad_tensor_set_requires_grad(w, true);
  ad_tensor *a = ad_mul(ctx, x, w);
  ad_tensor *b = ad_op_apply(ctx, id, 1, &a, NULL);
  ad_tensor *t = ad_tanh(ctx, a);
  ad_tensor *loss = ad_sum(ctx, ad_add(ctx, b, t)); /* t after b: its backward runs first */
  cr_assert_not_null(loss, "%s", ad_last_error(ctx));
  fail_next = true;
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "refused on purpose", NULL);
  ad_tensor_zero_grad(w);
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  /* dL/dw = x * (3 + 1 - tanh(x w)^2) */
  for (int64_t i = 0; i < s; i++) {
    double xi = ad_tensor_get(x, i), ai = xi * ad_tensor_get(w, i), th = tanh(ai);
    double want = xi * (3 + 1 - th * th), got = ad_tensor_get(w->grad, i);
    cr_assert(fabs(got - want) <= 1e-14, "element %lld: %.17g, want %.17g", (long long)i, got,
              want);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

/* ---------------------------------------------------------- NaN policy */

Test(errors, nan_is_not_an_error_by_default) {
  int64_t s[1] = {3};
  double v[3] = {-1, 0, 2};
  ad_tensor *a = ad_from_data(ctx, AD_F64, 1, s, v);
  ad_tensor_set_requires_grad(a, true);
  ad_tensor *y = ad_log(ctx, a);
  cr_assert_not_null(y, "log of a negative number is not an error");
  cr_assert_eq(ad_last_status(ctx), AD_OK);
  cr_assert(isnan(ad_tensor_get(y, 0)), "log(-1) is NaN");
  cr_assert(isinf(ad_tensor_get(y, 1)) && ad_tensor_get(y, 1) < 0, "log(0) is -inf");
  cr_assert_float_eq(ad_tensor_get(y, 2), log(2.0), 1e-15);
  cr_assert(ad_tensor_has_nonfinite(y));
  cr_assert(!ad_tensor_has_nonfinite(a));
  /* the NaN flows through backward without an error: d log(x) = 1/x */
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(a->grad, 0), -1.0);
  cr_assert(isinf(ad_tensor_get(a->grad, 1)));
  cr_assert(ad_tensor_has_nonfinite(a->grad));
  ad_tensor *r = ad_sqrt(ctx, ad_scalar(ctx, AD_F32, -4));
  cr_assert(r && isnan(ad_tensor_item(r)));
  cr_assert_eq(ad_last_status(ctx), AD_OK);
  ad_tensor_free(a);
}

/* ---------------------------------------------------- out of memory */

enum { NPARAM = 4 };

typedef struct program {
  ad_ctx *c;
  ad_tensor *x, *labels, *p[NPARAM];
} program;

/* A forward + backward step of a small MLP (its arena outgrows one chunk),
 * plus a Hessian-vector product through ad_grad(create_graph) that also
 * reaches a leaf which is not among ad_grad's inputs. */
static ad_status step(program *pg) {
  ad_ctx *c = pg->c;
  ad_tensor *h = ad_tanh(c, ad_add(c, ad_matmul(c, pg->x, pg->p[0], false, false), pg->p[1]));
  ad_tensor *logits = ad_add(c, ad_matmul(c, h, pg->p[2], false, false), pg->p[3]);
  ad_tensor *loss = ad_softmax_cross_entropy(c, logits, pg->labels);
  if (!loss) return ad_last_status(c);
  ad_status st = ad_backward(c, loss, NULL);
  if (st != AD_OK) return st;
  /* p1's branch comes last on the tape, so backward reaches p1 first */
  ad_tensor *s3 = ad_sum(c, ad_pow_scalar(c, ad_tanh(c, pg->p[3]), 3.0));
  ad_tensor *f = ad_mul(c, s3, ad_mean(c, pg->p[1]));
  ad_tensor *g = NULL;
  if (!f) return ad_last_status(c);
  st = ad_grad(c, f, NULL, 1, &pg->p[3], &g, true);
  if (st != AD_OK) return st;
  return ad_backward(c, ad_sum(c, g), NULL);
}

static ad_status program_init(program *pg, test_alloc *fa) {
  memset(pg, 0, sizeof *pg);
  pg->c = ad_ctx_new_with_alloc(test_alloc_fn, fa);
  if (!pg->c) return AD_ERR_OOM;
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t sx[2] = {64, 32}, s0[2] = {32, 1024}, s1 = 1024, s2[2] = {1024, 5}, s3 = 5;
  pg->x = ad_randn(pg->c, &rng, AD_F64, 2, sx, 0, 1);
  pg->labels = ad_zeros(pg->c, AD_I32, 1, sx);
  pg->p[0] = ad_randn(pg->c, &rng, AD_F64, 2, s0, 0, 0.2);
  pg->p[1] = ad_randn(pg->c, &rng, AD_F64, 1, &s1, 0, 0.1);
  pg->p[2] = ad_randn(pg->c, &rng, AD_F64, 2, s2, 0, 0.05);
  pg->p[3] = ad_randn(pg->c, &rng, AD_F64, 1, &s3, 0, 1);
  if (!pg->x || !pg->labels) return ad_last_status(pg->c);
  for (int64_t i = 0; i < 64; i++) ((int32_t *)pg->labels->data)[i] = (int32_t)(i % 5);
  for (int k = 0; k < NPARAM; k++) {
    if (!pg->p[k]) return ad_last_status(pg->c);
    ad_tensor_set_requires_grad(pg->p[k], true);
  }
  return AD_OK;
}

static void program_free(program *pg) {
  ad_tensor_free(pg->x);
  ad_tensor_free(pg->labels);
  for (int k = 0; k < NPARAM; k++) ad_tensor_free(pg->p[k]);
  ad_ctx_free(pg->c);
}

/* Runs init, step, reset, step, reset. Returns the first error. */
static ad_status run_program(program *pg, test_alloc *fa) {
  ad_status st = program_init(pg, fa);
  if (st != AD_OK) return st;
  for (int s = 0; s < 2 && st == AD_OK; s++) {
    st = step(pg);
    ad_tape_reset(pg->c);
  }
  return st;
}

typedef struct grads {
  double *v[NPARAM];
  int64_t n[NPARAM];
} grads;

static void grads_save(grads *g, const program *pg) {
  for (int k = 0; k < NPARAM; k++) {
    cr_assert_not_null(pg->p[k]->grad);
    g->n[k] = pg->p[k]->size;
    g->v[k] = malloc((size_t)g->n[k] * sizeof(double));
    for (int64_t i = 0; i < g->n[k]; i++) g->v[k][i] = ad_tensor_get(pg->p[k]->grad, i);
  }
}

static void grads_check(const grads *g, const program *pg, double scale, long n) {
  for (int k = 0; k < NPARAM; k++) {
    cr_assert_not_null(pg->p[k]->grad, "N=%ld: param %d has no grad", n, k);
    for (int64_t i = 0; i < g->n[k]; i++) {
      double want = scale * g->v[k][i], got = ad_tensor_get(pg->p[k]->grad, i);
      cr_assert(test_close(got, want, 1e-12 * fmax(1, fabs(want))),
                "N=%ld: param %d element %lld: %.17g, want %.17g", n, k, (long long)i, got, want);
    }
  }
}

static void grads_free(grads *g) {
  for (int k = 0; k < NPARAM; k++) free(g->v[k]);
}

/* The reference run: no failures. Returns the number of allocations and
 * the gradients of one step. */
static long reference(grads *one) {
  test_alloc fa = {0};
  program pg;
  cr_assert_eq(program_init(&pg, &fa), AD_OK);
  cr_assert_eq(step(&pg), AD_OK, "%s", ad_last_error(pg.c));
  grads_save(one, &pg);
  ad_tape_reset(pg.c);
  cr_assert_eq(step(&pg), AD_OK, "%s", ad_last_error(pg.c));
  grads_check(one, &pg, 2.0, -1);
  ad_tape_reset(pg.c);
  long total = fa.requests;
  program_free(&pg);
  cr_assert_eq(fa.live, 0);
  cr_assert_eq(fa.refused, 0);
  /* the same program counted from the start gives the same count */
  test_alloc fb = {0};
  program pb;
  cr_assert_eq(run_program(&pb, &fb), AD_OK);
  program_free(&pb);
  cr_assert_eq(fb.requests, total);
  return total;
}

Test(errors, oom_every_allocation_fails_cleanly) {
  grads one;
  long total = reference(&one);
  cr_assert_gt(total, 50, "the program allocates (%ld)", total);
  for (long n = 0; n <= total; n++) {
    test_alloc fa = {.refuse = TEST_ALLOC_REFUSE_FROM, .fail_at = n};
    program pg;
    ad_status st = run_program(&pg, &fa);
    if (n < total) {
      cr_assert_geq(fa.refused, 1, "N=%ld: no allocation was refused", n);
      cr_assert_eq(st, AD_ERR_OOM, "N=%ld: status %s (%s)", n, ad_status_str(st),
                   pg.c ? ad_last_error(pg.c) : "no context");
      if (pg.c)
        cr_assert(strstr(ad_last_error(pg.c), "out of memory"), "N=%ld: %s", n,
                  ad_last_error(pg.c));
    } else {
      cr_assert_eq(fa.refused, 0);
      cr_assert_eq(st, AD_OK, "%s", ad_last_error(pg.c));
      grads_check(&one, &pg, 2.0, n);
    }
    program_free(&pg);
    cr_assert_eq(fa.live, 0, "N=%ld: %ld blocks leaked", n, fa.live);
  }
  grads_free(&one);
}

Test(errors, oom_once_then_recover) {
  grads one;
  long total = reference(&one);
  for (long n = 0; n < total; n++) {
    test_alloc fa = {.refuse = TEST_ALLOC_REFUSE_ONLY, .fail_at = n};
    program pg;
    ad_status st = program_init(&pg, &fa);
    if (st == AD_OK) {
      for (int s = 0; s < 2 && st == AD_OK; s++) {
        st = step(&pg);
        ad_tape_reset(pg.c);
      }
      if (st == AD_OK) {
        /* the refusal hit a call that reports nothing (the arena's
         * coalescing at a reset): the result must still be right */
        grads_check(&one, &pg, 2.0, n);
      } else {
        cr_assert_eq(st, AD_ERR_OOM, "N=%ld: %s", n, ad_last_error(pg.c));
        /* recovery: the context stays usable and leaves no stale state */
        ad_clear_error(pg.c);
        ad_tape_reset(pg.c);
        for (int k = 0; k < NPARAM; k++) ad_tensor_zero_grad(pg.p[k]);
        cr_assert_eq(step(&pg), AD_OK, "N=%ld: after recovery: %s", n, ad_last_error(pg.c));
        grads_check(&one, &pg, 1.0, n);
        ad_tape_reset(pg.c);
      }
    } else {
      cr_assert_eq(st, AD_ERR_OOM, "N=%ld", n);
    }
    cr_assert_eq(fa.refused, 1);
    program_free(&pg);
    cr_assert_eq(fa.live, 0, "N=%ld: %ld blocks leaked", n, fa.live);
  }
  grads_free(&one);
}

/* ------------------------------------------- out of memory: op families */

/* One small program for each family of ops the MLP above does not reach:
 * convolutions (Winograd's f32 path, a transposed and a grouped f64 one),
 * pooling, batch and layer norm, the fused LSTM and GRU cells and sequence
 * ops, attention, the losses, the tensor ops (gather, scatter_add, flip,
 * cumsum, argmax, min, var, std). A step is forward and backward, or with
 * `second` ad_grad(create_graph) and a backward through the gradients. */
enum { FAM_CONV, FAM_POOL, FAM_NORM, FAM_RNN, FAM_ATTN, FAM_LOSS, FAM_TENSOR, NFAM, FAM_MAXP = 10 };

typedef struct fam_prog {
  ad_ctx *c;
  int fam, np, nk;
  bool second;
  ad_tensor *p[FAM_MAXP], *k[2]; /* parameters; constants (running stats, masks) */
} fam_prog;

static ad_tensor *fam_tensor(fam_prog *g, ad_rng *rng, bool param, ad_dtype dt, int ndim, int64_t a,
                             int64_t b, int64_t c, int64_t d) {
  int64_t s[4] = {a, b, c, d};
  ad_tensor *t = ad_randn(g->c, rng, dt, ndim, s, 0, 0.5);
  if (!t) return NULL;
  if (param) {
    ad_tensor_set_requires_grad(t, true);
    g->p[g->np++] = t;
  } else {
    g->k[g->nk++] = t;
  }
  return t;
}

static void fam_free(fam_prog *g) {
  for (int i = 0; i < g->np; i++) ad_tensor_free(g->p[i]);
  for (int i = 0; i < g->nk; i++) ad_tensor_free(g->k[i]);
  ad_ctx_free(g->c);
}

static ad_status fam_init(fam_prog *g, test_alloc *ta, int fam, bool second) {
  memset(g, 0, sizeof *g);
  g->fam = fam;
  g->second = second;
  if (!(g->c = ad_ctx_new_with_alloc(test_alloc_fn, ta))) return AD_ERR_OOM;
  ad_rng rng;
  ad_rng_seed(&rng, 11 + (uint64_t)fam);
  bool ok = true;
#define T(...) ok = ok && fam_tensor(g, &rng, __VA_ARGS__)
  switch (fam) {
  case FAM_CONV: /* x, w, bias (Winograd: f32, 3x3, 16 channels); w of convT; f64 x, w */
    T(true, AD_F32, 4, 2, 16, 6, 6), T(true, AD_F32, 4, 16, 16, 3, 3),
        T(true, AD_F32, 1, 16, 0, 0, 0);
    T(true, AD_F32, 4, 16, 4, 3, 3), T(true, AD_F64, 4, 2, 4, 5, 5), T(true, AD_F64, 4, 6, 2, 3, 3);
    break;
  case FAM_POOL:
    T(true, AD_F64, 4, 2, 3, 8, 8);
    break;
  case FAM_NORM: /* x, weight, bias, layer norm's weight; running mean and var */
    T(true, AD_F64, 4, 4, 3, 5, 5), T(true, AD_F64, 1, 3, 0, 0, 0), T(true, AD_F64, 1, 3, 0, 0, 0);
    T(true, AD_F64, 2, 5, 5, 0, 0), T(false, AD_F64, 1, 3, 0, 0, 0),
        T(false, AD_F64, 1, 3, 0, 0, 0);
    break;
  case FAM_RNN: /* lstm gates, state; gru a, b; lstm_seq xp, w_hh, b; gru_seq ...; mask */
    T(true, AD_F64, 2, 3, 16, 0, 0), T(true, AD_F64, 2, 3, 4, 0, 0),
        T(true, AD_F64, 2, 3, 12, 0, 0);
    T(true, AD_F64, 2, 3, 12, 0, 0), T(true, AD_F64, 3, 5, 3, 16, 0),
        T(true, AD_F64, 2, 16, 4, 0, 0);
    T(true, AD_F64, 1, 16, 0, 0, 0), T(true, AD_F64, 3, 5, 3, 12, 0),
        T(true, AD_F64, 2, 12, 4, 0, 0);
    T(true, AD_F64, 1, 12, 0, 0, 0), T(false, AD_F64, 2, 5, 3, 0, 0);
    break;
  case FAM_ATTN: /* q, k, v; an additive mask */
    T(true, AD_F64, 4, 2, 2, 5, 4), T(true, AD_F64, 4, 2, 2, 6, 4), T(true, AD_F64, 4, 2, 2, 6, 3);
    T(false, AD_F64, 2, 5, 6, 0, 0);
    break;
  case FAM_LOSS:
    T(true, AD_F64, 2, 6, 5, 0, 0), T(true, AD_F64, 2, 6, 5, 0, 0);
    break;
  case FAM_TENSOR: /* x, src */
    T(true, AD_F64, 2, 3, 4, 0, 0), T(true, AD_F64, 2, 2, 4, 0, 0);
    break;
  }
#undef T
  if (!ok) return ad_last_status(g->c);
  if (fam == FAM_NORM) /* a variance */
    for (int64_t i = 0; i < 3; i++)
      ad_tensor_set(g->k[1], i, 0.5 + fabs(ad_tensor_get(g->k[1], i)));
  if (fam == FAM_RNN) /* a 0/1 mask */
    for (int64_t i = 0; i < 15; i++) ad_tensor_set(g->k[0], i, i % 4 != 3);
  return AD_OK;
}

static ad_tensor *sum_sq(ad_ctx *c, ad_tensor *x) { return ad_sum(c, ad_mul(c, x, x)); }

static ad_tensor *fam_forward(fam_prog *g) {
  ad_ctx *c = g->c;
  ad_tensor **p = g->p, **k = g->k;
  switch (g->fam) {
  case FAM_CONV: {
    ad_conv_opts same = {.padding = {1, 1, 1, 1}};
    ad_conv_opts up = {.stride = {2, 2}, .padding = {1, 1, 1, 1}, .output_padding = {1, 1}};
    ad_conv_opts grouped = {.groups = 2, .stride = {2, 1}};
    ad_tensor *y = ad_tanh(c, ad_conv2d(c, p[0], p[1], p[2], &same));
    ad_tensor *z = ad_conv_transpose2d(c, y, p[3], NULL, &up);
    ad_tensor *u = ad_conv2d(c, p[4], p[5], NULL, &grouped);
    ad_tensor *v = ad_conv_transpose2d(c, u, p[5], NULL, &grouped);
    return ad_add(c, ad_cast(c, sum_sq(c, z), AD_F64), ad_add(c, sum_sq(c, u), sum_sq(c, v)));
  }
  case FAM_POOL: {
    ad_pool2d_opts ceil = {.stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true};
    ad_pool2d_opts dil = {.dilation = {2, 2}};
    ad_pool2d_opts excl = {.stride = {2, 2}, .padding = {1, 1}, .exclude_pad = true};
    ad_tensor *a = ad_max_pool2d(c, p[0], 3, 3, &ceil), *b = ad_max_pool2d(c, p[0], 2, 2, &dil);
    ad_tensor *d = ad_avg_pool2d(c, ad_tanh(c, p[0]), 3, 3, &excl);
    ad_tensor *e = ad_global_avg_pool2d(c, ad_mul(c, p[0], p[0]));
    return ad_add(c, ad_add(c, sum_sq(c, a), sum_sq(c, b)), ad_add(c, sum_sq(c, d), sum_sq(c, e)));
  }
  case FAM_NORM: {
    int64_t ns[2] = {5, 5};
    ad_tensor *y = ad_batch_norm(c, p[0], p[1], p[2], k[0], k[1], true, 0.1, 1e-5);
    ad_tensor *z = ad_layer_norm(c, ad_tanh(c, y), 2, ns, p[3], NULL, 1e-5);
    ad_tensor *w = ad_batch_norm(c, z, NULL, NULL, NULL, NULL, true, 0.1, 1e-5);
    return ad_add(c, sum_sq(c, ad_mul(c, z, p[0])), sum_sq(c, ad_sin(c, w)));
  }
  case FAM_RNN: {
    ad_tensor *a = ad_lstm_cell(c, p[0], p[1]), *b = ad_gru_cell(c, p[2], p[3], p[1]);
    ad_tensor *s = ad_lstm_seq(c, p[4], p[5], p[6], p[1], p[1], k[0], false);
    ad_tensor *u = ad_gru_seq(c, p[7], p[8], p[9], p[9], p[1], k[0], false);
    return ad_add(
        c, ad_add(c, sum_sq(c, ad_narrow(c, a, 1, 0, 8)), sum_sq(c, ad_narrow(c, b, 1, 0, 4))),
        ad_add(c, sum_sq(c, ad_narrow(c, s, 2, 0, 8)), sum_sq(c, ad_narrow(c, u, 2, 0, 4))));
  }
  case FAM_ATTN: {
    ad_tensor *w = NULL;
    ad_attention_opts masked = {.mask = k[0], .weights = &w},
                      causal = {.causal = true, .scale = 0.3};
    ad_tensor *y = ad_scaled_dot_product_attention(c, p[0], p[1], p[2], &masked);
    ad_tensor *y2 = ad_scaled_dot_product_attention(c, p[0], p[0], p[0], &causal);
    return ad_add(c, ad_add(c, sum_sq(c, y), sum_sq(c, w)), sum_sq(c, y2));
  }
  case FAM_TENSOR: {
    int64_t si[2] = {2, 4};
    const int32_t iv[8] = {2, 0, 1, 2, 0, 0, 2, 1};
    int ax[2] = {0, -1};
    ad_tensor *idx = ad_from_data(c, AD_I32, 2, si, iv);
    ad_tensor *a = ad_gather(c, ad_tanh(c, p[0]), 0, idx);
    ad_tensor *b = ad_scatter_add(c, p[0], -2, idx, ad_mul(c, a, p[1]));
    ad_tensor *d = ad_cumsum(c, ad_flip(c, b, 2, ax), 1);
    ad_tensor *m = ad_gather(c, d, 1, ad_argmax(c, d, 1, true));
    ad_tensor *v = ad_add(c, ad_sum(c, ad_var(c, d, 1, ax, 1, false)),
                          ad_sum(c, ad_std(c, p[0], 0, NULL, 0, true)));
    ad_tensor_free(idx);
    return ad_add(c, ad_add(c, sum_sq(c, m), sum_sq(c, ad_min_axis(c, d, 0, false))), v);
  }
  default: {
    int64_t n = 6;
    int32_t lv[6] = {0, 1, 4, 2, -100, 3};
    ad_tensor *labels = ad_from_data(c, AD_I32, 1, &n, lv);
    ad_cross_entropy_opts ignore = {.ignore = true, .ignore_index = -100};
    ad_tensor *a = ad_softmax_cross_entropy_ext(c, p[0], labels, &ignore);
    ad_tensor *b = ad_sum(c, ad_binary_cross_entropy(c, ad_sigmoid(c, p[0]), ad_sigmoid(c, p[1])));
    ad_tensor *d = ad_sum(c, ad_logsumexp(c, p[1], 1, false));
    ad_tensor *e = ad_sum(c, ad_log_softmax(c, p[1], 1));
    ad_tensor_free(labels);
    return ad_add(c, ad_add(c, a, b), ad_add(c, d, e));
  }
  }
}

/* Runs a step; returns the context's status (a builder given an earlier
 * failure's NULL keeps it). */
static ad_status fam_step(fam_prog *g) {
  ad_ctx *c = g->c;
  ad_tensor *loss = fam_forward(g);
  if (!g->second) {
    if (loss) ad_backward(c, loss, NULL);
    return ad_last_status(c);
  }
  ad_tensor *gr[FAM_MAXP];
  if (!loss || ad_grad(c, loss, NULL, g->np, g->p, gr, true) != AD_OK) return ad_last_status(c);
  ad_tensor *s = ad_cast(c, loss, AD_F64);
  for (int i = 0; i < g->np; i++) s = ad_add(c, s, ad_cast(c, sum_sq(c, gr[i]), AD_F64));
  if (s) ad_backward(c, s, NULL);
  return ad_last_status(c);
}

/* The parameters' gradients, in order, into v (n doubles at most). */
static int fam_grads(const fam_prog *g, double *v, int n) {
  int m = 0;
  for (int i = 0; i < g->np; i++) {
    cr_assert_not_null(g->p[i]->grad, "family %d: parameter %d has no gradient", g->fam, i);
    for (int64_t j = 0; j < g->p[i]->size; j++) {
      cr_assert_lt(m, n);
      v[m++] = ad_tensor_get(g->p[i]->grad, j);
    }
  }
  return m;
}

/* After a failed step: the context works again and gives ref's bits. */
static void fam_recover(fam_prog *g, const double *ref, int nref, const char *what, long n) {
  static double got[8192];
  ad_clear_error(g->c);
  ad_tape_reset(g->c);
  for (int i = 0; i < g->np; i++) ad_tensor_zero_grad(g->p[i]);
  cr_assert_eq(fam_step(g), AD_OK, "family %d %s %ld: after recovery: %s", g->fam, what, n,
               ad_last_error(g->c));
  cr_assert_eq(fam_grads(g, got, 8192), nref);
  cr_assert(memcmp(got, ref, (size_t)nref * sizeof *ref) == 0,
            "family %d %s %ld: other gradients after recovery", g->fam, what, n);
  ad_tape_reset(g->c);
}

/* Every allocation a step makes refused, once and from there on, on one
 * thread and on two: each failure is AD_ERR_OOM with "out of memory",
 * nothing leaks, and the context then gives the undisturbed run's bits.
 * Then the arena capped at 12 sizes up to what the step uses: the same,
 * with the cap's message (the convolutions may take their scratch-free
 * paths under a cap, whose bits differ: only those are not compared). */
Test(errors, oom_in_every_op_family) {
  static double ref[8192];
  for (int threads = 1; threads <= 2; threads++) {
    cr_assert_eq(ad_set_num_threads(threads), AD_OK);
    for (int fam = 0; fam < NFAM; fam++)
      for (int second = 0; second < 2; second++) {
        test_alloc ta = {0};
        fam_prog g;
        cr_assert_eq(fam_init(&g, &ta, fam, second), AD_OK);
        long first = ta.requests; /* the step's requests come after these */
        cr_assert_eq(fam_step(&g), AD_OK, "family %d: %s", fam, ad_last_error(g.c));
        long last = ta.requests;
        cr_assert_gt(last, first, "family %d: the step allocates nothing", fam);
        size_t used = ad_arena_used(g.c);
        int nref = fam_grads(&g, ref, 8192);
        fam_free(&g);
        cr_assert_eq(ta.live, 0);
        for (long n = first; n < last; n++)
          for (int only = 0; only < 2; only++) {
            test_alloc tb = {.refuse = only ? TEST_ALLOC_REFUSE_ONLY : TEST_ALLOC_REFUSE_FROM,
                             .fail_at = n};
            cr_assert_eq(fam_init(&g, &tb, fam, second), AD_OK);
            ad_status st = fam_step(&g);
            if (st != AD_OK) {
              cr_assert_eq(st, AD_ERR_OOM, "family %d, request %ld: %s", fam, n,
                           ad_last_error(g.c));
              cr_assert(strstr(ad_last_error(g.c), "out of memory"), "%s", ad_last_error(g.c));
              if (only) fam_recover(&g, ref, nref, "request", n);
            } else {
              cr_assert(only, "family %d: request %ld refused, yet no error", fam, n);
            }
            fam_free(&g);
            cr_assert_eq(tb.live, 0, "family %d, request %ld: %ld blocks leaked", fam, n, tb.live);
          }
        int capped = 0; /* caps the step failed under */
        for (int i = 1; i <= 12; i++) {
          size_t cap = used * (size_t)i / 12 + 16;
          test_alloc tb = {0};
          cr_assert_eq(fam_init(&g, &tb, fam, second), AD_OK);
          ad_set_arena_limit(g.c, cap);
          if (fam_step(&g) != AD_OK) {
            capped++;
            test_expect_error(g.c, AD_ERR_OOM, "ad_set_arena_limit", NULL);
            ad_set_arena_limit(g.c, 0);
            fam_recover(&g, ref, nref, "cap", (long)cap);
          } else if (fam != FAM_CONV) {
            static double got[8192];
            cr_assert_eq(fam_grads(&g, got, 8192), nref);
            cr_assert(memcmp(got, ref, (size_t)nref * sizeof *ref) == 0, "family %d, cap %zu", fam,
                      cap);
          }
          fam_free(&g);
          cr_assert_eq(tb.live, 0, "family %d, cap %zu: %ld blocks leaked", fam, cap, tb.live);
        }
        cr_assert_gt(capped, 0, "family %d: no cap was too small", fam);
      }
  }
  cr_assert_eq(ad_set_num_threads(1), AD_OK);
}
