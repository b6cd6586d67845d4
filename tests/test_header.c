/* test_header.c: ad.h is self-contained: it is included first, with nothing
 * before it, and its types and macros are usable on their own. */
#include "ad.h"
#include "ad.h" /* include guard: a second inclusion is harmless */

#include <criterion/criterion.h>

Test(header, types_and_macros_are_usable) {
  ad_tensor t = {0};
  t.ndim = AD_MAX_DIMS;
  t.dtype = AD_F64;
  ad_attrs at = {.i = {1, 2}, .f = {0.5}};
  ad_rng rng = {{1, 2, 3, 4}};
  ad_check_opts opts = {.eps = 1e-6};
  ad_check_report rep = {.input = -1};
  ad_op_def def = {.name = "probe", .arity = 1, .flags = AD_OP_VIEW};
  ad_alloc_fn fn = NULL;
  ad_backward_hook hook = NULL;
  cr_assert_eq(t.ndim, 8);
  cr_assert_eq(AD_MAX_SRC, 8);
  cr_assert_eq(sizeof t.shape / sizeof t.shape[0], AD_MAX_DIMS);
  cr_assert_eq(sizeof at.i / sizeof at.i[0], AD_MAX_DIMS + 2);
  cr_assert_eq(at.f[0], 0.5);
  cr_assert_eq(rng.s[3], 4);
  cr_assert_eq(opts.eps, 1e-6);
  cr_assert_eq(rep.input, -1);
  cr_assert_str_eq(def.name, "probe");
  cr_assert_null(fn);
  cr_assert_null(hook);
  cr_assert_eq(AD_OK, 0);
  cr_assert_eq(AD_STATUS_COUNT, 11);
  cr_assert_str_eq(AD_VERSION, "0.1.0");
}

Test(header, functions_link) {
  ad_ctx *ctx = ad_ctx_new();
  cr_assert_not_null(ctx);
  cr_assert_gt(ad_op_count(ctx), 0);
  cr_assert_geq(ad_op_find(ctx, "matmul"), 0);
  const char *backend = ad_gemm_backend();
  cr_assert(strcmp(backend, "openblas") == 0 || strcmp(backend, "builtin") == 0, "%s", backend);
  ad_ctx_free(ctx);
}
