/* swish_op: a user-defined op (swish, also called SiLU: y = x * sigmoid(x))
 * as a plugin: a shared library (build/examples/libswish_op.so) whose
 * ad_plugin_register registers it, so the installed checker tests it as it
 * tests the built-in ops:
 *
 *   ad-gradcheck --load build/examples/libswish_op.so
 *
 * Its derivative is dy/dx = s + x s (1 - s) with s = sigmoid(x). The
 * backward is written with ad_ ops rather than a private loop, so when the
 * backward pass is itself recorded (ad_grad with create_graph, as
 * ad_gradgradcheck does) it can be differentiated again. The forward is a
 * plain loop, as a fused kernel would be. examples/custom_op.c links this
 * file and uses the op in a program. */
#include "swish_op.h"

#include <math.h>

/* ---------------------------------------------------------------- swish */

/* The op is elementwise (AD_OP_ELEMENTWISE): the engine checks that the
 * input has a float dtype and shapes the output like it, so there is no
 * shape function. */

/* sigmoid without overflow for large |x| */
static double sigmoid_d(double x) {
  return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}
static float sigmoid_f(float x) {
  return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}

static void swish_forward(const ad_call *c) {
  const ad_tensor *out = c->out;
  if (out->dtype == AD_F32) {
    const float *x = c->in[0]->data;
    float *y = out->data;
    for (int64_t i = 0; i < out->size; i++) y[i] = x[i] * sigmoid_f(x[i]);
  } else {
    const double *x = c->in[0]->data;
    double *y = out->data;
    for (int64_t i = 0; i < out->size; i++) y[i] = x[i] * sigmoid_d(x[i]);
  }
}

/* Built from ad_ ops; a NULL anywhere propagates to ad_call_set_grad,
 * which then returns the error already recorded. */
static ad_status swish_backward(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0];
  ad_tensor *s = ad_sigmoid(ctx, x);
  ad_tensor *ds = ad_mul(ctx, s, ad_rsub_scalar(ctx, s, 1.0)); /* s (1 - s) */
  ad_tensor *d = ad_add(ctx, s, ad_mul(ctx, x, ds));
  return ad_call_set_grad(c, 0, ad_mul(ctx, c->gout, d));
}

/* Gradcheck inputs: a matrix, a 3-d tensor and a scalar, in [-4, 4] so both
 * tails of the sigmoid are exercised. */
static int swish_sample(const ad_sample_call *s) {
  static const int64_t shapes[3][3] = {{3, 4}, {2, 3, 2}, {0}};
  static const int ndims[3] = {2, 3, 0};
  if (s->variant >= 3) return 0;
  s->in[0] = ad_rand(s->ctx, s->rng, s->dtype, ndims[s->variant], shapes[s->variant], -4.0, 4.0);
  if (!s->in[0] || ad_tensor_set_requires_grad(s->in[0], true) != AD_OK) return -1;
  return 1;
}

static const ad_op_def swish_def = {
    .name = "swish",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = swish_forward,
    .backward = swish_backward,
    .sample = swish_sample,
    .math = "y = x * sigmoid(x)",
    .inputs = {"x"},
    .grads = {"dy * (s + x s (1 - s)), s = sigmoid(x)"},
};

/* The plugin's entry point: ad-gradcheck --load calls it, and so does a
 * program linked with this file (examples/custom_op.c). */
ad_status ad_plugin_register(ad_ctx *ctx) {
  return ad_op_register(ctx, &swish_def) >= 0 ? AD_OK : ad_last_status(ctx);
}

ad_tensor *swish(ad_ctx *ctx, ad_tensor *x) {
  int id = ad_op_find(ctx, "swish");
  if (id < 0) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "swish: not registered on this context (call ad_plugin_register)");
    return NULL;
  }
  return ad_op_apply(ctx, id, 1, &x, NULL);
}
