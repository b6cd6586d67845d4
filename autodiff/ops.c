/* ops.c: the op layer's entry point: the table of built-in ops, generated
 * from ops.def, registered into every new context. */
#include "ops.h"

static const ad_op_def *const builtin_ops[] = {
#define AD_OP(E, name, builder) &ad_def_##name,
#include "ops.def"
#undef AD_OP
};
_Static_assert(sizeof builtin_ops / sizeof builtin_ops[0] == AD_OP_BUILTIN_COUNT,
               "op table and enum disagree");

ad_status ad_builtin_register(ad_ctx *ctx) {
  for (int i = 0; i < AD_OP_BUILTIN_COUNT; i++) {
    int id = ad_op_register(ctx, builtin_ops[i]);
    if (id < 0) {
      ad_status st = ad_last_status(ctx);
      return st != AD_OK ? st : AD_ERR_OOM;
    }
    AD_ASSERT(id == i, "built-in ops register in table order into a new context (a name twice?)");
  }
  ctx->nbuiltin = AD_OP_BUILTIN_COUNT;
  ctx->op_add = AD_OP_ADD;
  ctx->op_reshape = AD_OP_RESHAPE;
  ctx->op_sum_to = AD_OP_SUM_TO;
  ctx->op_mul_scalar = AD_OP_MUL_SCALAR;
  ctx->op_narrow = AD_OP_NARROW;
  ctx->op_pad = AD_OP_PAD;
  ctx->op_lead[0] = AD_OP_LSTM_SEQ;
  ctx->op_lead[1] = AD_OP_GRU_SEQ;
  return AD_OK;
}
