/* test_misuse_ops.c: ops at the edges of their domain, as PyTorch treats
 * them: reductions and softmax over empty dims (no element is read), pow at
 * a zero base, NaN through every op that compares, and cross-entropy labels
 * changed between forward and backward. The PyTorch reference values of
 * these cases are in tests/fixtures/ops.txt (test_ops_values); the tests
 * here check what a fixture cannot: that nothing is read, the errors and
 * their messages, exact zeros and NaNs. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, beside the build's _POSIX_C_SOURCE */
#include "test_alloc.h"

#include <errno.h>
#include <math.h>
#include <sys/mman.h>
#include <unistd.h>

TEST_CTX_SUITE(misuse_ops);

#define expect_error(...) test_expect_error(ctx, __VA_ARGS__)

#define param(c, ...)        test_param(c, __VA_ARGS__)
#define expect_shape(t, ...) test_expect_shape(ctx, t, __VA_ARGS__)

/* Element i of t is want: the same value (0 == -0), both NaN, or the same
 * infinity. */
static void expect_value(const ad_tensor *t, int64_t i, double want, const char *what) {
  double got = ad_tensor_get(t, i);
  bool ok = isnan(want) ? isnan(got) : got == want;
  cr_assert(ok, "%s[%lld] = %.17g, want %.17g", what, (long long)i, got, want);
}

/* ------------------------------------------- a guard for empty tensors */

/* An allocator that gives every 1-byte request (the engine asks for one
 * byte for the data of an empty tensor) a pointer to a page that faults
 * when touched, so an op that reads element 0 of an empty tensor crashes
 * the test instead of reading a neighbour's bytes unseen. Everything else
 * goes to test_alloc_fn. */
static void *guard_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  if (ptr && osize == 1) {
    cr_assert_eq(nsize, 0, "a 1-byte block was reallocated");
    munmap((char *)ptr - pg, 2 * pg);
    return NULL;
  }
  if (!ptr && nsize == 1) {
    char *p = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    cr_assert_eq(mprotect(p + pg, pg, PROT_NONE), 0);
    return p + pg;
  }
  return test_alloc_fn(ud, ptr, osize, nsize);
}

static test_alloc guard_counts;

static ad_ctx *guarded_ctx(void) {
  ad_ctx *c = ad_ctx_new_with_alloc(guard_alloc, &guard_counts);
  cr_assert_not_null(c);
  return c;
}

/* The guard works: the first byte of an empty tensor's data cannot be
 * read (the kernel refuses to copy it into a pipe: EFAULT, no signal). */
Test(misuse_ops, guard_refuses_empty_data) {
  ad_ctx *c = guarded_ctx();
  int64_t s[2] = {2, 0}, one = 1;
  ad_tensor *x = ad_zeros(c, AD_F64, 2, s), *y = ad_zeros(c, AD_F64, 1, &one);
  cr_assert(x && y);
  int fd[2];
  cr_assert_eq(pipe(fd), 0);
  errno = 0;
  cr_assert_eq(write(fd[1], x->data, 1), -1, "an empty tensor's data is readable");
  cr_assert_eq(errno, EFAULT);
  cr_assert_eq(write(fd[1], y->data, 1), 1, "control: a 1-element tensor's data");
  close(fd[0]);
  close(fd[1]);
  ad_tensor_free(x);
  ad_tensor_free(y);
  ad_ctx_free(c);
}

/* ------------------------------- item 3: softmax over an empty axis */

/* softmax and log_softmax over an axis of length 0 give an empty result,
 * forward and backward, without reading an element (PyTorch: the same). */
Test(misuse_ops, softmax_over_empty_axis_reads_nothing) {
  ad_ctx *c = guarded_ctx();
  int64_t s[2] = {2, 0}, t[2] = {0, 3};
  ad_tensor *xs[2] = {param(c, 2, s, NULL), param(c, 2, t, NULL)}, *ys[8];
  for (int k = 0; k < 8; k++) { /* the forwards first: each reads nothing */
    ad_tensor *x = xs[k / 4];
    int axis = k / 2 % 2;
    ys[k] = k % 2 ? ad_log_softmax(c, x, axis) : ad_softmax(c, x, axis);
    expect_shape(ys[k], 2, x->shape, k % 2 ? "log_softmax" : "softmax");
  }
  for (int k = 0; k < 8; k++) {
    ad_tensor *x = xs[k / 4];
    ad_tensor *g = NULL, *seed = ad_zeros(c, AD_F64, 2, x->shape);
    cr_assert_eq(ad_grad(c, ys[k], seed, 1, &x, &g, false), AD_OK, "%s", ad_last_error(c));
    expect_shape(g, 2, x->shape, "its gradient");
    ad_tensor_free(seed);
  }
  ad_tape_reset(c);
  ad_tensor_free(xs[0]);
  ad_tensor_free(xs[1]);
  ad_ctx_free(c);
}

/* logsumexp over an empty axis is log(0) = -inf per output element; over
 * the other axis of [2,0] an empty result. Nothing is read. */
Test(misuse_ops, logsumexp_over_empty_axis_is_minus_inf) {
  ad_ctx *c = guarded_ctx();
  int64_t s[2] = {2, 0}, two[1] = {2}, none[1] = {0};
  ad_tensor *x = param(c, 2, s, NULL);
  ad_tensor *y = ad_logsumexp(c, x, 1, false);
  expect_shape(y, 1, two, "logsumexp over axis 1");
  for (int i = 0; i < 2; i++) expect_value(y, i, -INFINITY, "logsumexp");
  cr_assert_eq(ad_backward(c, ad_sum(c, y), NULL), AD_OK, "%s", ad_last_error(c));
  expect_shape(x->grad, 2, s, "its gradient");
  expect_shape(ad_logsumexp(c, x, 0, false), 1, none, "logsumexp over axis 0");
  ad_tape_reset(c);
  ad_tensor_free(x);
  ad_ctx_free(c);
}

/* The maximum over an empty axis is an error naming the op and the shape,
 * as in PyTorch; over a non-empty axis of an empty tensor it is an empty
 * tensor. */
Test(misuse_ops, max_over_empty_axis) {
  int64_t s[2] = {2, 0}, none[1] = {0}, one[2] = {1, 0};
  ad_tensor *x = param(ctx, 2, s, NULL);
  cr_assert_null(ad_max_axis(ctx, x, 1, false));
  expect_error(AD_ERR_SHAPE, "max", "nothing to reduce", "[2,0]", NULL);
  cr_assert_null(ad_max(ctx, x));
  expect_error(AD_ERR_SHAPE, "max", "nothing to reduce", "[2,0]", NULL);
  ad_tensor *y = ad_max_axis(ctx, x, 0, false);
  expect_shape(y, 1, none, "max over axis 0");
  expect_shape(ad_max_axis(ctx, x, 0, true), 2, one, "max over axis 0, keepdim");
  ad_tensor *g = NULL, *seed = ad_zeros(ctx, AD_F64, 1, none);
  cr_assert_eq(ad_grad(ctx, y, seed, 1, &x, &g, false), AD_OK, "%s", ad_last_error(ctx));
  expect_shape(g, 2, s, "its gradient");
  ad_tape_reset(ctx);
  ad_tensor_free(seed);
  ad_tensor_free(x);
}

/* ---------------------------------------- item 14: empty reductions */

/* sum of nothing is 0 (each output element of an empty axis, too), and
 * its gradient is an empty gradient; nothing is read. */
Test(misuse_ops, sum_of_empty_is_zero) {
  ad_ctx *c = guarded_ctx();
  int64_t s[3] = {2, 0, 3}, r[2] = {2, 3}, k[3] = {2, 1, 3}, e[2] = {0, 3};
  ad_tensor *x = param(c, 3, s, NULL);
  ad_tensor *y = ad_sum(c, x);
  cr_assert_not_null(y, "%s", ad_last_error(c));
  expect_shape(y, 0, NULL, "sum");
  expect_value(y, 0, 0.0, "sum");
  cr_assert_eq(ad_backward(c, y, NULL), AD_OK, "%s", ad_last_error(c));
  expect_shape(x->grad, 3, s, "grad of sum");
  ad_tensor *ya = ad_sum_axis(c, x, 1, false), *yk = ad_sum_axis(c, x, -2, true);
  expect_shape(ya, 2, r, "sum over the empty axis");
  expect_shape(yk, 3, k, "sum over the empty axis, keepdim");
  for (int i = 0; i < 6; i++) {
    expect_value(ya, i, 0.0, "sum_axis");
    expect_value(yk, i, 0.0, "sum_axis keepdim");
  }
  ad_tensor *g = NULL, *seed = ad_ones(c, AD_F64, 2, r);
  cr_assert_eq(ad_grad(c, ya, seed, 1, &x, &g, false), AD_OK, "%s", ad_last_error(c));
  expect_shape(g, 3, s, "grad of sum_axis");
  expect_shape(ad_sum_axis(c, x, 0, false), 2, e, "sum over a non-empty axis");
  ad_tape_reset(c);
  ad_tensor_free(seed);
  ad_tensor_free(x);
  ad_ctx_free(c);
}

/* The mean of nothing is NaN (0/0), as in PyTorch. */
Test(misuse_ops, mean_of_empty_is_nan) {
  ad_ctx *c = guarded_ctx();
  int64_t s[2] = {3, 0}, three[1] = {3}, none[1] = {0};
  ad_tensor *x = param(c, 2, s, NULL);
  ad_tensor *m = ad_mean(c, x), *ma = ad_mean_axis(c, x, 1, false);
  cr_assert_not_null(m, "%s", ad_last_error(c));
  expect_value(m, 0, NAN, "mean");
  expect_shape(ma, 1, three, "mean over the empty axis");
  for (int i = 0; i < 3; i++) expect_value(ma, i, NAN, "mean_axis");
  expect_shape(ad_mean_axis(c, x, 0, false), 1, none, "mean over a non-empty axis");
  cr_assert_eq(ad_backward(c, m, NULL), AD_OK, "%s", ad_last_error(c));
  expect_shape(x->grad, 2, s, "grad of mean");
  ad_tape_reset(c);
  ad_tensor_free(x);
  ad_ctx_free(c);
}

/* Cross-entropy over an empty batch is the mean of nothing: NaN. No
 * class is an error (no label can be valid). */
Test(misuse_ops, cross_entropy_of_empty_batch) {
  ad_ctx *c = guarded_ctx();
  int64_t s[2] = {0, 3}, n0[1] = {0}, sc[2] = {2, 0}, n2[1] = {2};
  ad_tensor *z = param(c, 2, s, NULL), *t = ad_zeros(c, AD_I32, 1, n0);
  ad_tensor *l = ad_softmax_cross_entropy(c, z, t);
  cr_assert_not_null(l, "%s", ad_last_error(c));
  expect_value(l, 0, NAN, "cross-entropy");
  cr_assert_eq(ad_backward(c, l, NULL), AD_OK, "%s", ad_last_error(c));
  expect_shape(z->grad, 2, s, "its gradient");
  ad_tensor *zc = param(c, 2, sc, NULL), *tc = ad_zeros(c, AD_I32, 1, n2);
  cr_assert_null(ad_softmax_cross_entropy(c, zc, tc));
  test_expect_error(c, AD_ERR_SHAPE, "softmax_cross_entropy", "[2,0]", "C >= 1", NULL);
  ad_tape_reset(c);
  ad_tensor_free(z);
  ad_tensor_free(t);
  ad_tensor_free(zc);
  ad_tensor_free(tc);
  ad_ctx_free(c);
}

/* ------------------------------------------- item 8: pow at a zero base */

/* pow_scalar(x, 0) is the constant 1: its gradient is 0 everywhere,
 * x = 0 included (0 * 0^-1 would be NaN). */
Test(misuse_ops, pow_scalar_zero_exponent_at_zero) {
  int64_t n = 3;
  const double v[3] = {0.0, 1.5, -2.0};
  ad_tensor *x = param(ctx, 1, &n, v);
  ad_tensor *y = ad_pow_scalar(ctx, x, 0.0), *g = NULL;
  for (int i = 0; i < 3; i++) expect_value(y, i, 1.0, "pow(x, 0)");
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 1, &x, &g, false), AD_OK, "%s",
               ad_last_error(ctx));
  for (int i = 0; i < 3; i++) {
    expect_value(g, i, 0.0, "d pow(x, 0) / dx");
    cr_assert(!signbit(ad_tensor_get(g, i)), "an exact +0, not %g", ad_tensor_get(g, i));
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* pow(a, b) at a = 0: d/da is 0 where b = 0, d/db is 0 where b >= 0
 * (PyTorch's masks); elsewhere the formulas: d/da = b a^(b-1) (1 for
 * b = 1, 0 for b = 2, inf for b = 0.5). Second order where it is finite in
 * PyTorch: d2/da2 of a^2 is 2 and of a^3 is 0; d2/dadb of a^1 is 1. */
Test(misuse_ops, pow_at_zero_base) {
  int64_t n = 6;
  const double av[6] = {0, 0, 0, 0, 0, 1.5}, bv[6] = {0, 1, 2, 3, 0.5, 0};
  const double da[6] = {0, 1, 0, 0, INFINITY, 0}, db[6] = {0, 0, 0, 0, 0, log(1.5)};
  ad_tensor *a = param(ctx, 1, &n, av), *b = param(ctx, 1, &n, bv), *in[2] = {a, b}, *g[2];
  ad_tensor *y = ad_pow(ctx, a, b);
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 2, in, g, true), AD_OK, "%s", ad_last_error(ctx));
  for (int i = 0; i < 6; i++) {
    expect_value(g[0], i, da[i], "d pow / da");
    cr_assert(fabs(ad_tensor_get(g[1], i) - db[i]) <= 1e-15, "d pow / db [%d] = %g, want %g", i,
              ad_tensor_get(g[1], i), db[i]);
  }
  ad_tensor *h[2];
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, g[0]), NULL, 2, in, h, false), AD_OK, "%s",
               ad_last_error(ctx));
  expect_value(h[0], 2, 2.0, "d2 a^2 / da2 at 0");
  expect_value(h[0], 3, 0.0, "d2 a^3 / da2 at 0");
  expect_value(h[1], 1, 1.0, "d2 a^1 / da db at 0");
  expect_value(h[1], 2, 0.0, "d2 a^2 / da db at 0");
  ad_tape_reset(ctx);
  ad_tensor_free(a);
  ad_tensor_free(b);
}

/* -------------------------------------- item 10: NaN through comparisons */

/* relu, maximum and minimum propagate NaN in either position; the
 * gradient at a NaN goes to both inputs in full (PyTorch's rule: no
 * comparison holds), at a tie half to each. */
Test(misuse_ops, nan_through_relu_maximum_minimum) {
  int64_t n = 4;
  const double av[4] = {NAN, 0, 1, 2}, bv[4] = {0, NAN, 1, 1};
  ad_tensor *a = param(ctx, 1, &n, av), *b = param(ctx, 1, &n, bv), *in[2] = {a, b}, *g[2];
  ad_tensor *r = ad_relu(ctx, a), *ga = NULL;
  expect_value(r, 0, NAN, "relu(NaN)");
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, r), NULL, 1, &a, &ga, false), AD_OK);
  const double relu_g[4] = {1, 0, 1, 1};
  for (int i = 0; i < 4; i++) expect_value(ga, i, relu_g[i], "relu'");
  static const struct {
    bool max;
    double y[4], ga[4], gb[4];
  } want[2] = {{true, {NAN, NAN, 1, 2}, {1, 1, 0.5, 1}, {1, 1, 0.5, 0}},
               {false, {NAN, NAN, 1, 1}, {1, 1, 0.5, 0}, {1, 1, 0.5, 1}}};
  for (int k = 0; k < 2; k++) {
    const char *name = want[k].max ? "maximum" : "minimum";
    ad_tensor *y = want[k].max ? ad_maximum(ctx, a, b) : ad_minimum(ctx, a, b);
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 2, in, g, false), AD_OK, "%s",
                 ad_last_error(ctx));
    for (int i = 0; i < 4; i++) {
      expect_value(y, i, want[k].y[i], name);
      expect_value(g[0], i, want[k].ga[i], name);
      expect_value(g[1], i, want[k].gb[i], name);
    }
  }
  ad_tape_reset(ctx);
  ad_tensor_free(a);
  ad_tensor_free(b);
}

/* A NaN in a lane makes its max, logsumexp, softmax and cross-entropy NaN,
 * wherever it sits in the lane (first, after larger values, beside +inf:
 * logsumexp gave +inf there). */
Test(misuse_ops, nan_through_reductions) {
  int64_t s[2] = {4, 3}, n3 = 4;
  const double v[12] = {NAN, 1, 2, 5, 1, NAN, 1, 3, 3, INFINITY, NAN, 1};
  ad_tensor *x = param(ctx, 2, s, v);
  ad_tensor *mx = ad_max_axis(ctx, x, 1, false), *lse = ad_logsumexp(ctx, x, 1, false);
  ad_tensor *sm = ad_softmax(ctx, x, 1), *lsm = ad_log_softmax(ctx, x, 1);
  cr_assert(mx && lse && sm && lsm, "%s", ad_last_error(ctx));
  for (int r = 0; r < 4; r++) {
    bool nan = r != 2;
    expect_value(mx, r, nan ? NAN : 3.0, "max");
    if (nan) expect_value(lse, r, NAN, "logsumexp");
    for (int k = 0; nan && k < 3; k++) {
      expect_value(sm, r * 3 + k, NAN, "softmax");
      expect_value(lsm, r * 3 + k, NAN, "log_softmax");
    }
  }
  expect_value(ad_max(ctx, x), 0, NAN, "max of all");
  const int32_t lab[4] = {1, 0, 2, 2};
  ad_tensor *t = ad_from_data(ctx, AD_I32, 1, &n3, lab);
  expect_value(ad_softmax_cross_entropy(ctx, x, t), 0, NAN, "cross-entropy");
  /* a lane whose maximum is NaN sends NaN to every element (torch.amax) */
  ad_tensor *g = NULL;
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, mx), NULL, 1, &x, &g, false), AD_OK);
  for (int i = 0; i < 6; i++) expect_value(g, i, NAN, "max'");
  expect_value(g, 7, 0.5, "max' at a tie");
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(t);
}

/* ------------------------- item 11: labels changed after the forward */

/* The backward reads the labels again and checks them: one changed out of
 * range is reported with the op, the label and the sample, not used to
 * index the one-hot matrix. */
/* Labels and indices changed between forward and backward, in range or
 * out of it: the tape saved them as the forward saw them, so the gradient
 * is the forward's, never a read out of range. */
Test(misuse_ops, integer_inputs_changed_before_backward) {
  int64_t s[2] = {2, 3}, n = 2;
  const double zv[6] = {0.5, -1, 2, 1, 0, -0.5};
  const int32_t changed[4] = {4, -1, 2, 1000};
  double want[6];
  for (int k = 0; k < 5; k++) { /* k = 0: the reference, labels untouched */
    ad_tensor *z = param(ctx, 2, s, zv), *t = ad_zeros(ctx, AD_I32, 1, &n);
    ad_tensor_set_name(t, "labels");
    ad_tensor *l = ad_softmax_cross_entropy(ctx, z, t);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    ad_tensor *in[2];
    cr_assert_eq(ad_tensor_inputs(l, in, 2), 2);
    cr_assert_eq(in[1], t, "tools see the caller's labels");
    if (k > 0) ((int32_t *)t->data)[k % 2] = changed[k - 1];
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
    for (int i = 0; i < 6; i++) {
      if (k == 0)
        want[i] = ad_tensor_get(z->grad, i);
      else
        cr_assert_eq(ad_tensor_get(z->grad, i), want[i], "label changed to %d: element %d",
                     changed[k - 1], i);
    }
    ad_tape_reset(ctx);
    ad_tensor_free(z);
    ad_tensor_free(t);
  }
  /* index_select's indices likewise */
  int64_t sx[2] = {3, 2}, ni = 2;
  const double xv[6] = {1, 2, 3, 4, 5, 6};
  ad_tensor *x = param(ctx, 2, sx, xv), *idx = ad_zeros(ctx, AD_I32, 1, &ni);
  ((int32_t *)idx->data)[1] = 2;
  ad_tensor *r = ad_sum(ctx, ad_index_select(ctx, x, idx));
  ((int32_t *)idx->data)[1] = 7; /* out of range now */
  cr_assert_eq(ad_backward(ctx, r, NULL), AD_OK, "%s", ad_last_error(ctx));
  const double gx[6] = {1, 1, 0, 0, 1, 1};
  for (int i = 0; i < 6; i++) cr_assert_eq(ad_tensor_get(x->grad, i), gx[i], "element %d", i);
  ad_tensor_free(x);
  ad_tensor_free(idx);
}

/* ------------------ composites validate their inputs before their shapes */

/* scaled_dot_product_attention and softmax_cross_entropy read shapes before
 * they apply an op: a tensor of another context, or one from a tape that
 * was reset, is named as such, not misread as a shape mismatch. */
Test(misuse_ops, composites_check_inputs_first) {
  ad_ctx *other = ad_ctx_new();
  int64_t s3[3] = {2, 3, 4}, s2[2] = {3, 4}, s1[1] = {3};
  ad_tensor *q = ad_zeros(ctx, AD_F32, 3, s3), *foreign = ad_zeros(other, AD_F32, 3, s3);
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, foreign, q, NULL));
  expect_error(AD_ERR_ARG, "scaled_dot_product_attention: k belongs to another context", NULL);
  ad_tensor *mask = ad_exp(ctx, ad_zeros(ctx, AD_F32, 2, (int64_t[]){3, 3}));
  cr_assert_not_null(mask);
  ad_tape_reset(ctx);
  ad_attention_opts o = {.mask = mask};
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, q, q, &o));
  expect_error(AD_ERR_STATE, "scaled_dot_product_attention: mask is from a tape that was reset",
               NULL);
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, NULL, q, NULL));
  expect_error(AD_ERR_NULL, "scaled_dot_product_attention: k is NULL", NULL);

  ad_tensor *z = ad_zeros(other, AD_F32, 2, s2), *t = ad_zeros(ctx, AD_I32, 1, s1);
  cr_assert_null(ad_softmax_cross_entropy(ctx, z, t));
  expect_error(AD_ERR_ARG, "softmax_cross_entropy: logits belongs to another context", NULL);
  cr_assert_null(ad_softmax_cross_entropy(ctx, t, NULL));
  expect_error(AD_ERR_NULL, "softmax_cross_entropy: labels is NULL", NULL);
  ad_tensor_free(q), ad_tensor_free(t), ad_tensor_free(foreign), ad_tensor_free(z);
  ad_ctx_free(other);
}

/* ---------------------------- composites name themselves in their errors */

/* A NULL input of transpose was reported by the permute it is built on
 * ("permute: input 0 is NULL"); found by fuzz/fuzz_ops. */
Test(misuse_ops, transpose_names_itself) {
  cr_assert_null(ad_transpose(ctx, NULL, 0, 1));
  expect_error(AD_ERR_NULL, "transpose: input 0 is NULL", NULL);
}

/* mean and mean_axis reported the errors of the sum they are built on
 * ("sum: axis 5 out of range ..."); found by fuzz/fuzz_ops. */
Test(misuse_ops, mean_names_itself) {
  int64_t s2[2] = {2, 3};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 2, s2), *xi = ad_zeros(ctx, AD_I32, 2, s2);
  cr_assert_null(ad_mean(ctx, NULL));
  expect_error(AD_ERR_NULL, "mean: input 0 is NULL", NULL);
  cr_assert_null(ad_mean_axis(ctx, x, 5, false));
  expect_error(AD_ERR_ARG, "mean: ", "5", NULL);
  cr_assert_null(ad_mean_axis(ctx, xi, 0, true));
  cr_assert_not_null(strstr(ad_last_error(ctx), "mean: "), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  /* a NULL input from an earlier failure keeps that failure's message */
  cr_assert_null(ad_mean_axis(ctx, x, 7, false));
  cr_assert_null(ad_mean(ctx, NULL));
  expect_error(AD_ERR_ARG, "mean: ", "7", NULL);
  ad_tensor_free(x), ad_tensor_free(xi);
}

/* sub_scalar and rsub_scalar reported the errors of the add_scalar and neg
 * they are built on; found by fuzz/fuzz_ops. */
Test(misuse_ops, sub_scalar_names_itself) {
  int64_t s1[1] = {3};
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 1, s1);
  cr_assert_null(ad_sub_scalar(ctx, NULL, 1));
  expect_error(AD_ERR_NULL, "sub_scalar: input 0 is NULL", NULL);
  cr_assert_null(ad_rsub_scalar(ctx, NULL, 1));
  expect_error(AD_ERR_NULL, "rsub_scalar: input 0 is NULL", NULL);
  cr_assert_null(ad_sub_scalar(ctx, xi, 1));
  expect_error(AD_ERR_DTYPE, "sub_scalar: ", NULL);
  cr_assert_null(ad_rsub_scalar(ctx, xi, 1));
  expect_error(AD_ERR_DTYPE, "rsub_scalar: ", NULL);
  /* div_scalar reported an integer x as mul_scalar's */
  cr_assert_null(ad_div_scalar(ctx, xi, 2));
  expect_error(AD_ERR_DTYPE, "div_scalar: x is i32", NULL);
  ad_tensor_free(xi);
}

/* eq, gt, ge, lt and le are one op, compare, and their errors said
 * "compare"; each names itself now. */
Test(misuse_ops, comparisons_name_themselves) {
  int64_t s2[1] = {2}, s3[1] = {3};
  ad_tensor *a = ad_zeros(ctx, AD_F32, 1, s2), *b = ad_zeros(ctx, AD_F32, 1, s3);
  ad_tensor *(*const fn[])(ad_ctx *, ad_tensor *, ad_tensor *) = {ad_eq, ad_gt, ad_ge, ad_lt,
                                                                  ad_le};
  const char *const name[] = {"eq: ", "gt: ", "ge: ", "lt: ", "le: "};
  for (int k = 0; k < 5; k++) {
    cr_assert_null(fn[k](ctx, a, b));
    expect_error(AD_ERR_SHAPE, name[k], "[2]", "[3]", NULL);
    cr_assert_null(fn[k](ctx, NULL, b));
    expect_error(AD_ERR_NULL, name[k], "input 0 is NULL", NULL);
  }
  ad_tensor *y = ad_le(ctx, a, a);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  ad_tensor_free(y), ad_tensor_free(a), ad_tensor_free(b);
}

/* ------------------------------------------ concat's length along axis */

/* 2^24 empty [2^40, 0] inputs: their lengths along axis 0 add up to 2^64,
 * which int64 cannot hold (it wrapped to 0 and the result was accepted as
 * [0, 0]). The sum is refused once it passes a tensor's largest length,
 * 2^40; two inputs already do. */
Test(misuse_ops, concat_length_beyond_the_limit) {
  int64_t s[2] = {INT64_C(1) << 40, 0};
  ad_tensor *e = ad_zeros(ctx, AD_F64, 2, s);
  cr_assert_not_null(e, "%s", ad_last_error(ctx));
  int n = 1 << 24;
  ad_tensor **xs = malloc(sizeof *xs * (size_t)n);
  cr_assert_not_null(xs);
  for (int i = 0; i < n; i++) xs[i] = e;
  cr_assert_null(ad_concat(ctx, n, xs, 0));
  expect_error(AD_ERR_SHAPE, "concat: the lengths along axis 0 add up to more than 2^40",
               "1099511627776 by input 1", "[1099511627776,0]", "of 16777216 inputs", NULL);
  cr_assert_null(ad_concat(ctx, 2, xs, -2));
  expect_error(AD_ERR_SHAPE, "concat", "more than 2^40", NULL);
  cr_assert_eq(ad_tape_size(ctx), 0);
  /* up to the limit it is an empty tensor */
  ad_tensor *y = ad_concat(ctx, 1, xs, 0);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert(y->ndim == 2 && y->shape[0] == s[0] && y->shape[1] == 0 && y->size == 0);
  free(xs);
  ad_tensor_free(e);
}
