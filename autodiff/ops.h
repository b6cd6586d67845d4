/* ops.h: what the op family files share (private): the built-in op ids
 * and definitions generated from ops.def, and builder shorthands. The core
 * (tensor, tape, registry, errors: ad_internal.h) does not include it. */
#ifndef AD_OPS_H
#define AD_OPS_H

#include "ad_internal.h"

/* Built-in op ids and their definitions (each at the end of its op's
 * block in a family file), generated from the table. */
enum {
#define AD_OP(E, name, builder) AD_OP_##E,
#include "ops.def"
#undef AD_OP
  AD_OP_BUILTIN_COUNT
};
#define AD_OP(E, name, builder) extern const ad_op_def ad_def_##name;
#include "ops.def"
#undef AD_OP

/* Applies op id with attrs; shorthand used by the public builders. */
static inline ad_tensor *ad_apply1(ad_ctx *ctx, int op, ad_tensor *x, const ad_attrs *attrs) {
  return ad_op_apply(ctx, op, 1, &x, attrs);
}
static inline ad_tensor *ad_apply2(ad_ctx *ctx, int op, ad_tensor *a, ad_tensor *b,
                                   const ad_attrs *attrs) {
  ad_tensor *in[2] = {a, b};
  return ad_op_apply(ctx, op, 2, in, attrs);
}

#endif
