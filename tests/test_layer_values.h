/* test_layer_values.h: what the tests of nn layers and losses against
 * PyTorch's values (the arrays of a fixture header in tests/) share.
 * Header-only; includes nn.h, test_alloc.h, test_tensor_of.h and
 * Criterion.
 *
 * test_expect_values(c, t, want, n, tol, what): t (made on c; NULL fails
 * with c's error) has n elements, each within tol max(1, |want[i]|) of
 * want[i] (test_close: a NaN or infinite want wants the same); the
 * messages name what.
 * test_layer_param(l, name), test_layer_buffer(l, name): l's parameter or
 * buffer of that name; the test fails if l has none.
 * test_set_values(t, v): t's elements set to v[0 .. t->size - 1].
 * test_layer_run(c, l, x, gy, training): y = l(x) on c, then the gradients
 * of sum(y * gy) in x and l's parameters (zeroed first); returns y.
 * test_expect_desc(c, l, want): l (made on c; NULL fails with c's error)
 * describes itself as want (nn_layer_describe: PyTorch's repr under our
 * kind's name); frees l.
 *
 * The attention and Transformer tests compare to tol (1 + |want|):
 * test_expect_case_close(c, got, want, n, tol, what, cs): got (made on c;
 * NULL fails with c's error) has n elements, each within
 * tol (1 + |want[i]|) of want[i] (test_close); the messages name the case
 * cs and what.
 * test_tensor_values(c, dt, ndim, shape, v): a new tensor of c of dtype dt
 * and shape holding v (ad_tensor_set, its status not checked).
 * test_tensor_from(c, dt, ndim, shape, v): the same, or NULL when v is
 * NULL.
 * test_max_diff(c, a, b): max |a[i] - b[i]| over a's elements (a and b made
 * on c; NULL fails with c's error).
 *
 * test_expect_near(got, want, rtol, atol, what, i): one value against
 * torch's: both NaN, the same infinity, or within rtol |want| + atol; the
 * message names what and i. */
#ifndef TEST_LAYER_VALUES_H
#define TEST_LAYER_VALUES_H

#include "nn.h"
#include "test_alloc.h"
#include "test_tensor_of.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

static inline void test_expect_values(ad_ctx *c, const ad_tensor *t, const double *want, int64_t n,
                                      double tol, const char *what) {
  cr_assert_not_null(t, "%s is NULL: %s", what, ad_last_error(c));
  cr_assert_eq(t->size, n, "%s has %lld elements, expected %lld", what, (long long)t->size,
               (long long)n);
  for (int64_t i = 0; i < n; i++) {
    double g = ad_tensor_get(t, i);
    QUICK_ASSERT(test_close(g, want[i], tol * fmax(1, fabs(want[i]))),
                 "%s[%lld] = %.17g, PyTorch %.17g", what, (long long)i, g, want[i]);
  }
}

static inline ad_tensor *test_layer_param(nn_layer *l, const char *name) {
  ad_tensor *t = nn_params_find(nn_layer_params(l), name);
  cr_assert_not_null(t, "no parameter %s", name);
  return t;
}

static inline ad_tensor *test_layer_buffer(nn_layer *l, const char *name) {
  ad_tensor *t = nn_params_find(nn_layer_buffers(l), name);
  cr_assert_not_null(t, "no buffer %s", name);
  return t;
}

static inline void test_set_values(ad_tensor *t, const double *v) {
  for (int64_t i = 0; i < t->size; i++) cr_assert_eq(ad_tensor_set(t, i, v[i]), AD_OK);
}

static inline ad_tensor *test_layer_run(ad_ctx *c, nn_layer *l, ad_tensor *x, const double *gy,
                                        bool training) {
  nn_params_zero_grad(nn_layer_params(l));
  ad_tensor_zero_grad(x);
  ad_tensor *y = nn_layer_forward(l, x, training);
  cr_assert_not_null(y, "%s", ad_last_error(c));
  ad_tensor *g = test_tensor_of(c, y->dtype, y->ndim, y->shape, gy);
  ad_tensor *loss = ad_sum(c, ad_mul(c, y, g));
  cr_assert_eq(ad_backward(c, loss, NULL), AD_OK, "%s", ad_last_error(c));
  ad_tensor_free(g);
  return y;
}

static inline void test_expect_desc(ad_ctx *c, nn_layer *l, const char *want) {
  char buf[256];
  cr_assert_not_null(l, "%s", ad_last_error(c));
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf), want);
  nn_layer_free(l);
}

static inline void test_expect_case_close(ad_ctx *c, const ad_tensor *got, const double *want,
                                          int64_t n, double tol, const char *what, const char *cs) {
  cr_assert_not_null(got, "%s %s is NULL: %s", cs, what, ad_last_error(c));
  cr_assert_eq(got->size, n, "%s %s: %lld values, PyTorch %lld", cs, what, (long long)got->size,
               (long long)n);
  for (int64_t i = 0; i < n; i++) {
    double g = ad_tensor_get(got, i), w = want[i];
    QUICK_ASSERT(test_close(g, w, tol * (1 + fabs(w))), "%s %s[%lld] = %.17g, PyTorch %.17g", cs,
                 what, (long long)i, g, w);
  }
}

static inline ad_tensor *test_tensor_values(ad_ctx *c, ad_dtype dt, int ndim, const int64_t *shape,
                                            const double *v) {
  ad_tensor *t = ad_zeros(c, dt, ndim, shape);
  cr_assert_not_null(t);
  for (int64_t i = 0; i < t->size; i++) ad_tensor_set(t, i, v[i]);
  return t;
}

static inline ad_tensor *test_tensor_from(ad_ctx *c, ad_dtype dt, int ndim, const int64_t *shape,
                                          const double *v) {
  return v ? test_tensor_values(c, dt, ndim, shape, v) : NULL;
}

static inline double test_max_diff(ad_ctx *c, const ad_tensor *a, const ad_tensor *b) {
  cr_assert(a && b, "%s", ad_last_error(c));
  double d = 0;
  for (int64_t i = 0; i < a->size; i++)
    d = fmax(d, fabs(ad_tensor_get(a, i) - ad_tensor_get(b, i)));
  return d;
}

static inline void test_expect_near(double got, double want, double rtol, double atol,
                                    const char *what, int i) {
  if (isnan(want) || isinf(want))
    cr_assert(isnan(want) ? isnan(got) : got == want, "%s %d: %.17g, torch %.17g", what, i, got,
              want);
  else
    cr_assert(fabs(got - want) <= rtol * fabs(want) + atol, "%s %d: %.17g, torch %.17g", what, i,
              got, want);
}

#endif
