/* test_header.c: ad.h is self-contained: it is included first, with nothing
 * before it, and its types and macros are usable on their own. That this
 * file compiles is most of the test. */
#include "ad.h"
#include "ad.h" /* include guard: a second inclusion is harmless */

#include <criterion/criterion.h>

/* One function of each type of the op contract and a definition made of
 * them, at file scope: they compile against the header alone (including
 * its static inline ad_call_set_grad). */
static ad_status probe_shape(const ad_call *c) {
  c->out->dtype = c->in[0]->dtype;
  c->out->ndim = 0;
  return AD_OK;
}
static void probe_forward(const ad_call *c) { c->out->data = c->in[0]->data; }
static ad_status probe_backward(const ad_call *c) { return ad_call_set_grad(c, 0, c->gout); }
static int probe_sample(const ad_sample_call *s) { return s->variant ? 0 : -1; }

const ad_op_def header_probe_def = {.name = "probe",
                                    .arity = 1,
                                    .flags = AD_OP_VIEW,
                                    .attrs = AD_ATTRS_REDUCE,
                                    .shape = probe_shape,
                                    .forward = probe_forward,
                                    .backward = probe_backward,
                                    .grad_into = NULL,
                                    .sample = probe_sample,
                                    .math = "y = x",
                                    .inputs = {"x"},
                                    .grads = {"dy"}};
ad_grad_into_fn header_probe_grad_into = NULL;
ad_attrs header_probe_attrs = {.reduce = {.axes = 1u, .keepdim = true}};
ad_call header_probe_call = {.attrs = &header_probe_attrs};
ad_sample_call header_probe_sample_call = {.dtype = AD_F64, .attrs = &header_probe_attrs};
ad_cmp header_probe_cmp = AD_CMP_LE;
ad_tensor header_probe_tensor = {.ndim = AD_MAX_DIMS, .dtype = AD_F64};
ad_rng header_probe_rng = {{1, 2, 3, 4}};
ad_check_opts header_probe_opts = {.eps = 1e-6};
ad_check_report header_probe_report = {.input = -1};
ad_alloc_fn header_probe_alloc = NULL;
ad_backward_hook header_probe_hook = NULL;

Test(header, types_and_macros_are_usable) {
  cr_assert_eq(AD_MAX_DIMS, 8);
  cr_assert_eq(AD_MAX_SRC, 8);
  cr_assert_eq(sizeof header_probe_tensor.shape / sizeof header_probe_tensor.shape[0], AD_MAX_DIMS);
  cr_assert_eq(sizeof header_probe_def.grads / sizeof header_probe_def.grads[0], AD_MAX_SRC);
  cr_assert_eq(AD_OK, 0);
  cr_assert_eq(AD_STATUS_COUNT, 11);
  cr_assert_eq(AD_ATTRS_NONE, 0, "a zeroed definition must read no attributes");
  cr_assert_str_eq(AD_VERSION, AD_PROJECT_VERSION, "ad.h and meson.build disagree on the version");
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

/* The _free functions take NULL and do nothing. */
Test(header, free_null_is_harmless) {
  ad_ctx_free(NULL);
  ad_tensor_free(NULL);
  ad_graph_free(NULL);
}
