/* test_tensor_of.h: a tensor holding given values, for the Criterion
 * tests. Header-only; includes nn.h and Criterion.
 *
 * test_tensor_of(c, dt, ndim, shape, v): a new tensor of c of dtype dt and
 * shape, element i set to v[i] (zeros when v is NULL); the test fails if it
 * cannot be made or a value cannot be set. tensor_of(dt, ndim, shape, v)
 * is the same on the including file's context, `ctx`. */
#ifndef TEST_TENSOR_OF_H
#define TEST_TENSOR_OF_H

#include "nn.h"

#include <criterion/criterion.h>

static inline ad_tensor *test_tensor_of(ad_ctx *c, ad_dtype dt, int ndim, const int64_t *shape,
                                        const double *v) {
  ad_tensor *t = ad_zeros(c, dt, ndim, shape);
  cr_assert_not_null(t, "%s", ad_last_error(c));
  for (int64_t i = 0; v && i < t->size; i++) cr_assert_eq(ad_tensor_set(t, i, v[i]), AD_OK);
  return t;
}

#define tensor_of(...) test_tensor_of(ctx, __VA_ARGS__)

#endif
