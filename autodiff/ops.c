/* ops.c: the table of built-in ops, generated from ops.def. */
#include "ad_internal.h"

const ad_op_def *const ad_builtin_ops[] = {
#define AD_OP(E, name, builder) &ad_def_##name,
#include "ops.def"
#undef AD_OP
};
_Static_assert(sizeof ad_builtin_ops / sizeof ad_builtin_ops[0] == AD_OP_BUILTIN_COUNT,
               "op table and enum disagree");
