/* swish_op.h: the swish op of examples/swish_op.c, for programs that link
 * it (examples/custom_op.c). */
#ifndef SWISH_OP_H
#define SWISH_OP_H

#include <autodiff/ad_ext.h>

/* y = x * sigmoid(x) elementwise, f32 or f64, recorded on the tape. The op
 * must have been registered on ctx (ad_plugin_register); NULL with
 * AD_ERR_ARG if not, or the error of the op. */
ad_tensor *swish(ad_ctx *ctx, ad_tensor *x);

#endif
