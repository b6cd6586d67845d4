/* op_loss.c: fused softmax cross-entropy with integer class labels. */
#include "ops.h"

#include <math.h>

/* ------------------------------------------------ softmax_cross_entropy */

/* Checks every label against the C classes (the shape rule). The backward
 * reads the labels the tape saved when it recorded the op (integer inputs
 * are copied then), so they are the ones checked here. */
static ad_status check_labels(const ad_call *c) {
  const int32_t *lab = c->in[1]->data;
  int64_t C = c->in[0]->shape[1];
  for (int64_t i = 0; i < c->in[1]->size; i++)
    if (lab[i] < 0 || lab[i] >= C)
      return ad_set_error(c->ctx, AD_ERR_ARG, "%s: label %d of sample %lld is outside 0..%lld",
                          c->name, lab[i], (long long)i, (long long)C - 1);
  return AD_OK;
}

/* N = 0 is fine (the mean over no sample is NaN, as in PyTorch); C = 0 is
 * not (no label can be valid). */
static ad_status softmax_ce_shape(const ad_call *c) {
  const ad_tensor *z = c->in[0], *t = c->in[1];
  char a[64], b[64];
  if (ad_check_float_same(c->ctx, c->name, 1, c->in) != AD_OK) return ad_last_status(c->ctx);
  if (t->dtype != AD_I32)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: labels must be i32, got %s", c->name,
                        ad_dtype_name(t->dtype));
  if (z->ndim != 2 || t->ndim != 1 || t->shape[0] != z->shape[0] || z->shape[1] == 0)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: logits %s and labels %s: need [N,C] and [N], C >= 1", c->name,
                        ad_shape_str(z, a, sizeof a), ad_shape_str(t, b, sizeof b));
  ad_status st = check_labels(c);
  if (st != AD_OK) return st;
  c->out->dtype = z->dtype;
  c->out->ndim = 0;
  return AD_OK;
}

/* exp(x) in float arithmetic for float logits (glibc's expf is several
 * times faster than exp and within an ulp of float), else in double; the
 * sums and logs stay in double. */
#define EXP_OF(T, x) (sizeof(T) == sizeof(float) ? (double)expf((float)(x)) : exp(x))

/* The mean over rows of lse(z_n) - z_n[t_n], lse computed with the max
 * shifted out so large logits do not overflow (a NaN logit makes it NaN);
 * NaN for N = 0. */
#define CE_FWD(T)                                                                                  \
  do {                                                                                             \
    const T *Z = z->data;                                                                          \
    double total = 0;                                                                              \
    for (int64_t r = 0; r < N; r++) {                                                              \
      const T *zr = Z + r * C;                                                                     \
      double m = AD_LANE_MAX(zr, 1, C), s = 0;                                                     \
      for (int64_t k = 0; k < C; k++) s += EXP_OF(T, (double)zr[k] - m);                           \
      total += m + log(s) - (double)zr[lab[r]];                                                    \
    }                                                                                              \
    *(T *)out->data = (T)(N ? total / (double)N : NAN);                                            \
  } while (0)

static void softmax_ce_fwd(const ad_call *c) {
  const ad_tensor *z = c->in[0];
  const int32_t *lab = c->in[1]->data;
  ad_tensor *out = c->out;
  int64_t N = z->shape[0], C = z->shape[1];
  if (out->dtype == AD_F32)
    CE_FWD(float);
  else
    CE_FWD(double);
}

/* The labels take no gradient: they are class indices, the tape's copy of
 * those the forward checked. */
static ad_status softmax_ce_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  ad_ctx *ctx = c->ctx;
  ad_tensor *z = c->in[0];
  int64_t N = z->shape[0], C = z->shape[1];
  ad_tensor *onehot = ad_tmp_full(ctx, z->dtype, 2, z->shape, 0.0);
  if (!onehot) return ad_last_status(ctx);
  const int32_t *lab = c->in[1]->data;
  for (int64_t r = 0; r < N; r++) ad_tensor_set(onehot, r * C + lab[r], 1.0);
  ad_tensor *d = ad_sub(ctx, ad_softmax(ctx, z, 1), onehot);
  return ad_call_set_grad(c, 0,
                          ad_mul(ctx, d, ad_mul_scalar(ctx, c->gout, N ? 1.0 / (double)N : NAN)));
}

ad_tensor *ad_softmax_cross_entropy(ad_ctx *ctx, ad_tensor *logits, ad_tensor *labels) {
  return ad_apply2(ctx, AD_OP_SOFTMAX_CE, logits, labels, NULL);
}

static int softmax_ce_sample(const ad_sample_call *s) {
  if (s->variant > 0) return 0;
  int64_t shape[2] = {4, 5};
  s->in[0] = ad_sample_tensor(s, 2, shape, -3, 3, true);
  s->in[1] = ad_zeros(s->ctx, AD_I32, 1, shape);
  for (int64_t i = 0; s->in[1] && i < 4; i++)
    ((int32_t *)s->in[1]->data)[i] = (int32_t)ad_rng_below(s->rng, 5);
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_softmax_cross_entropy = {
    .name = "softmax_cross_entropy",
    .arity = 2,
    .shape = softmax_ce_shape,
    .forward = softmax_ce_fwd,
    .backward = softmax_ce_bwd,
    .sample = softmax_ce_sample,
    .math = "y = -(1/N) sum_n log softmax(z_n)[t_n]",
    .inputs = {"z", "t"},
    .grads = {"dy * (softmax(z) - onehot(t)) / N", NULL},
};
