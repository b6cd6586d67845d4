/* custom_op: a user-defined op used in a program and gradient-checked to
 * first and second order. The op (swish: y = x * sigmoid(x)) is defined in
 * examples/swish_op.c, which is also built as a plugin that the installed
 * checker loads: `ad-gradcheck --load build/examples/libswish_op.so`. Here
 * the program links it and registers it through the same entry point.
 *
 * Exits 0 when every check passes, 1 otherwise. */
#include "swish_op.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ---------------------------------------------------------- using it */

/* f(x, w) = swish(x w): the function handed to the gradcheckers. */
static ad_tensor *swish_layer(ad_ctx *ctx, int n, ad_tensor *const *in, void *ud) {
  (void)n, (void)ud;
  return swish(ctx, ad_matmul(ctx, in[0], in[1], false, false));
}

/* The same op written as a composite of built-ins, to compare against. */
static ad_tensor *swish_composite(ad_ctx *ctx, ad_tensor *x) {
  return ad_mul(ctx, x, ad_sigmoid(ctx, x));
}

static bool report(const char *what, ad_status st, const ad_check_report *r, ad_ctx *ctx) {
  if (st != AD_OK) {
    printf("%-34s ERROR %s: %s\n", what, ad_status_str(st), ad_last_error(ctx));
    return false;
  }
  printf("%-34s %s  worst abs %.2e rel %.2e (input %d, element %lld; %lld checked)\n", what,
         r->passed ? "PASS" : "FAIL", r->abs_err, r->rel_err, r->input, (long long)r->index,
         (long long)r->checked);
  return r->passed;
}

int main(void) {
  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  bool ok = true;

  /* 1. register, through the plugin's entry point */
  if (ad_plugin_register(ctx) != AD_OK) {
    fprintf(stderr, "custom_op: %s\n", ad_last_error(ctx));
    ad_ctx_free(ctx);
    return 1;
  }
  int swish_id = ad_op_find(ctx, "swish");
  const ad_op_def *def = ad_op_get(ctx, swish_id);
  printf("registered '%s' as op %d of %d: %s;  d%s += %s\n", def->name, swish_id, ad_op_count(ctx),
         def->math, def->inputs[0], def->grads[0]);
  if (ad_plugin_register(ctx) == AD_OK) {
    printf("FAIL: registering the same name twice was accepted\n");
    ok = false;
  } else {
    printf("registering it again is refused: %s\n", ad_last_error(ctx));
  }
  ad_clear_error(ctx);

  /* 2. use it: loss = mean(swish(x w)) with x [4,3] data and w [3,2] weights */
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  int64_t xs[2] = {4, 3}, ws[2] = {3, 2};
  ad_tensor *x = ad_randn(ctx, &rng, AD_F64, 2, xs, 0.0, 1.0);
  ad_tensor *w = ad_randn(ctx, &rng, AD_F64, 2, ws, 0.0, 1.0);
  if (!x || !w || ad_tensor_set_requires_grad(w, true) != AD_OK) {
    fprintf(stderr, "custom_op: %s\n", ad_last_error(ctx));
    return 1;
  }
  ad_tensor *in[2] = {x, w};
  ad_tensor *loss = ad_mean(ctx, swish_layer(ctx, 2, in, NULL));
  if (!loss || ad_backward(ctx, loss, NULL) != AD_OK) {
    fprintf(stderr, "custom_op: %s\n", ad_last_error(ctx));
    return 1;
  }
  double loss_value = ad_tensor_item(loss); /* loss lives until the reset below */
  printf("loss = mean(swish(x w)) = %.6f\n", loss_value);
  ad_tensor_print(stdout, "dloss/dw", w->grad);

  /* the same gradient through the composite x * sigmoid(x) */
  ad_tensor *gw = ad_tensor_clone(ctx, w->grad);
  ad_tensor_zero_grad(w);
  ad_tape_reset(ctx);
  ad_tensor *loss2 = ad_mean(ctx, swish_composite(ctx, ad_matmul(ctx, x, w, false, false)));
  if (!gw || !loss2 || ad_backward(ctx, loss2, NULL) != AD_OK) {
    fprintf(stderr, "custom_op: %s\n", ad_last_error(ctx));
    return 1;
  }
  double diff = fabs(loss_value - ad_tensor_item(loss2));
  for (int64_t i = 0; i < gw->size; i++) {
    double d = fabs(ad_tensor_get(gw, i) - ad_tensor_get(w->grad, i));
    if (d > diff) diff = d;
  }
  bool same = diff < 1e-12;
  printf("%-34s %s  max |difference| %.2e\n", "matches x*sigmoid(x) composite",
         same ? "PASS" : "FAIL", diff);
  ok &= same;
  ad_tensor_free(gw);
  ad_tape_reset(ctx);

  /* 3. gradient-check the layer, first and second order */
  ad_check_report r;
  ad_tensor_set_requires_grad(x, true); /* check d/dx too */
  ad_status st = ad_gradcheck(ctx, swish_layer, NULL, 2, in, NULL, &r);
  ok &= report("gradcheck swish(x w)", st, &r, ctx);
  st = ad_gradgradcheck(ctx, swish_layer, NULL, 2, in, NULL, &r);
  ok &= report("gradgradcheck swish(x w)", st, &r, ctx);

  /* 4. the op on its own through its sample function, as ad-gradcheck does */
  static const ad_dtype dts[2] = {AD_F64, AD_F32};
  for (int d = 0; d < 2; d++)
    for (int order = 1; order <= 2; order++) {
      char what[64];
      snprintf(what, sizeof what, "op_check swish %s order %d", ad_dtype_name(dts[d]), order);
      st = ad_op_check(ctx, swish_id, dts[d], order == 2, 1, &r);
      ok &= report(what, st, &r, ctx);
    }

  ad_tensor_free(x);
  ad_tensor_free(w);
  ad_ctx_free(ctx);
  printf("%s\n", ok ? "custom_op: all checks passed" : "custom_op: FAILED");
  return ok ? 0 : 1;
}
