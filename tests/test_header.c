/* test_header.c: ad.h is self-contained: it is included first, with nothing
 * before it, and its types and macros are usable on their own. That this
 * file compiles is most of the test; test_header_ext.c does the same for
 * the extension header. */
#include "ad.h"
#include "ad.h" /* include guard: a second inclusion is harmless */

#include <criterion/criterion.h>

ad_tensor header_probe_tensor = {.ndim = AD_MAX_DIMS, .dtype = AD_F64};
ad_rng header_probe_rng = {{1, 2, 3, 4}};
ad_check_opts header_probe_opts = {.eps = 1e-6};
ad_check_report header_probe_report = {.input = -1};

Test(header, types_and_macros_are_usable) {
  cr_assert_eq(AD_MAX_DIMS, 8);
  cr_assert_eq(AD_MAX_SRC, 8);
  cr_assert_eq(sizeof header_probe_tensor.shape / sizeof header_probe_tensor.shape[0], AD_MAX_DIMS);
  cr_assert_eq(AD_OK, 0);
  cr_assert_eq(AD_STATUS_COUNT, 11);
  cr_assert_str_eq(AD_VERSION, AD_PROJECT_VERSION, "ad.h and meson.build disagree on the version");
}

Test(header, functions_link) {
  /* inline: test_alloc.h would bring ad_ext.h into a test of ad.h alone */
  ad_ctx *ctx = ad_ctx_new();
  cr_assert_not_null(ctx);
  int64_t n = 2;
  ad_tensor *x = ad_ones(ctx, AD_F64, 1, &n);
  cr_assert_eq(ad_tensor_item(ad_sum(ctx, x)), 2.0);
  ad_tensor_free(x);
  ad_ctx_free(ctx);
}

/* The _free functions take NULL and do nothing. */
Test(header, free_null_is_harmless) {
  ad_ctx_free(NULL);
  ad_tensor_free(NULL);
  ad_graph_free(NULL);
}
