/* bad_plugin: a plugin for `ad-gradcheck --load` that misbehaves as the
 * environment variable AD_BAD_PLUGIN says, so that tests/test_tools.sh can
 * check that every failure is reported with its reason:
 *   silent    ad_plugin_register returns AD_ERR_ARG and records nothing
 *   odd       it returns 12345 (no ad_status) and records nothing
 *   ignored   its one ad_op_register fails (unknown flags), which it
 *             ignores, and it returns AD_OK having registered nothing
 *   partial   as ignored, after registering one good op (copy2)
 *   (unset)   it registers wrong_on_2d, an op whose backward is right on
 *             its sample's variant 0 ([5]) and half again too large on
 *             variant 1 ([2,3]) */
#include "ad_ext.h"

#include <stdlib.h>
#include <string.h>

static void copy_forward(const ad_call *c) {
  for (int64_t i = 0; i < c->out->size; i++) ad_tensor_set(c->out, i, ad_tensor_get(c->in[0], i));
}

static ad_status copy_backward(const ad_call *c) { return ad_call_set_grad(c, 0, c->gout); }

static ad_status wrong_on_2d_backward(const ad_call *c) {
  ad_tensor *g = c->gout;
  if (g->ndim == 2) g = ad_mul_scalar(c->ctx, g, 1.5);
  return ad_call_set_grad(c, 0, g);
}

static int two_sample(const ad_sample_call *s) {
  static const int64_t shape[2][2] = {{5}, {2, 3}};
  if (s->variant > 1) return 0;
  s->in[0] = ad_rand(s->ctx, s->rng, s->dtype, s->variant + 1, shape[s->variant], -2, 2);
  return s->in[0] && ad_tensor_set_requires_grad(s->in[0], true) == AD_OK ? 1 : -1;
}

AD_PLUGIN_EXPORT ad_status ad_plugin_register(ad_ctx *ctx) {
  const char *mode = getenv("AD_BAD_PLUGIN");
  if (!mode) mode = "";
  if (strcmp(mode, "silent") == 0) return AD_ERR_ARG;
  if (strcmp(mode, "odd") == 0) return (ad_status)12345;
  ad_op_def def = {.name = "wrong_on_2d",
                   .arity = 1,
                   .flags = AD_OP_ELEMENTWISE,
                   .forward = copy_forward,
                   .backward = wrong_on_2d_backward,
                   .sample = two_sample};
  if (strcmp(mode, "partial") == 0) {
    def.name = "copy2";
    def.backward = copy_backward;
    if (ad_op_register(ctx, &def) < 0) return ad_last_status(ctx);
  }
  if (strcmp(mode, "ignored") == 0 || strcmp(mode, "partial") == 0) {
    def.name = "flagged";
    def.flags |= 0x40; /* no such flag: refused */
  }
  (void)ad_op_register(ctx, &def); /* its failure ignored, on purpose */
  return AD_OK;
}
