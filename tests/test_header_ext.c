/* test_header_ext.c: ad_ext.h is self-contained: it is included first,
 * with nothing before it (it brings ad.h), and one function of each type of
 * the op contract and a definition made of them compile against it at file
 * scope, including its static inline ad_call_set_grad. */
#include "ad_ext.h"
#include "ad_ext.h" /* include guard: a second inclusion is harmless */

#include <criterion/criterion.h>
#include <string.h>

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
ad_alloc_fn header_probe_alloc = NULL;
ad_backward_hook header_probe_hook = NULL;
ad_range_fn header_probe_range = NULL;

Test(header_ext, types_and_macros_are_usable) {
  cr_assert_eq(sizeof header_probe_def.grads / sizeof header_probe_def.grads[0], AD_MAX_SRC);
  cr_assert_eq(AD_ATTRS_NONE, 0, "a zeroed definition must read no attributes");
  cr_assert_str_eq(ad_attrs_kind_name(AD_ATTRS_REDUCE), "reduce");
  cr_assert_str_eq(ad_attrs_kind_name(AD_ATTRS_KIND_COUNT), "?");
}

Test(header_ext, functions_link) {
  /* inline: this file includes the header under test and nothing of ours */
  ad_ctx *ctx = ad_ctx_new();
  cr_assert_not_null(ctx);
  cr_assert_gt(ad_op_count(ctx), 0);
  cr_assert_geq(ad_op_find(ctx, "matmul"), 0);
  const char *backend = ad_gemm_backend();
  cr_assert(strstr(backend, "kernel") || strstr(backend, "OpenBLAS"), "%s", backend);
  /* the probe definition registers and runs (a view: y shares x's data) */
  int id = ad_op_register(ctx, &header_probe_def);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  int64_t n = 3;
  ad_tensor *x = ad_ones(ctx, AD_F64, 1, &n);
  ad_tensor *y = ad_op_apply(ctx, id, 1, &x, &header_probe_attrs);
  cr_assert(y && y->data == x->data && y->ndim == 0, "%s", ad_last_error(ctx));
  ad_tensor_free(x);
  ad_ctx_free(ctx);
}
