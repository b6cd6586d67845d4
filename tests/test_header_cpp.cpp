/* test_header_cpp.cpp: ad_ext.h (and with it ad.h) compiles as C++ (included first, on its own),
 * and its functions link with C linkage: without extern "C" the calls below
 * would reference mangled names and fail to link. */
#include "ad_ext.h"

#include <criterion/criterion.h>
#include <cstring>

Test(header_cpp, compiles_and_links_as_cpp) {
  /* inline: a check of the header alone, in C++ (test_alloc.h is C) */
  ad_ctx *ctx = ad_ctx_new();
  cr_assert_not_null(ctx);
  ad_tensor *x = ad_arange(ctx, AD_F64, 0, 3, 1);
  cr_assert_not_null(x);
  cr_assert_eq(ad_tensor_set_requires_grad(x, true), AD_OK);
  ad_tensor *y = ad_sum(ctx, ad_mul(ctx, x, x));
  cr_assert_eq(ad_backward(ctx, y, nullptr), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(x->grad, 2), 4.0);
  cr_assert_eq(std::strcmp(ad_status_str(AD_ERR_SHAPE), "shape mismatch"), 0);
  /* typed attributes (a member of an anonymous union) through the registry */
  ad_attrs at = {};
  at.scalar = 0.5;
  ad_tensor *h = ad_op_apply(ctx, ad_op_find(ctx, "mul_scalar"), 1, &x, &at);
  cr_assert_not_null(h, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(h, 2), 1.0);
  ad_tensor_free(x);
  ad_ctx_free(ctx);
}
