/* op_loss.c: fused softmax cross-entropy with integer class labels. */
#include "ad_internal.h"

#include <math.h>

ad_status shape_softmax_ce(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at,
                           ad_dtype *dt, int *ndim, int64_t *shape) {
  (void)n, (void)at, (void)shape;
  const ad_tensor *z = in[0], *t = in[1];
  char a[64], b[64];
  if (ad_check_float_same(ctx, "softmax_cross_entropy", 1, in) != AD_OK) return ctx->status;
  if (t->dtype != AD_I32)
    return ad_set_error(ctx, AD_ERR_DTYPE, "softmax_cross_entropy: labels must be i32, got %s",
                        ad_dtype_name(t->dtype));
  if (z->ndim != 2 || t->ndim != 1 || t->shape[0] != z->shape[0] || z->shape[0] == 0 ||
      z->shape[1] == 0)
    return ad_set_error(ctx, AD_ERR_SHAPE,
                        "softmax_cross_entropy: logits %s and labels %s: need [N,C] and [N]",
                        ad_shape_str(z, a, sizeof a), ad_shape_str(t, b, sizeof b));
  const int32_t *lab = t->data;
  for (int64_t i = 0; i < t->size; i++)
    if (lab[i] < 0 || lab[i] >= z->shape[1])
      return ad_set_error(ctx, AD_ERR_ARG,
                          "softmax_cross_entropy: label %d of sample %lld is outside 0..%lld",
                          lab[i], (long long)i, (long long)z->shape[1] - 1);
  *dt = z->dtype;
  *ndim = 0;
  return AD_OK;
}

/* exp(x) in float arithmetic for float logits (glibc's expf is several
 * times faster than exp and within an ulp of float), else in double; the
 * sums and logs stay in double. */
#define EXP_OF(T, x) (sizeof(T) == sizeof(float) ? (double)expf((float)(x)) : exp(x))

/* y = (1/N) sum_n (lse(z_n) - z_n[t_n]), lse computed with the max shifted
 * out so large logits do not overflow. */
#define CE_FWD(T)                                                                                  \
  do {                                                                                             \
    const T *Z = z->data;                                                                          \
    double total = 0;                                                                              \
    for (int64_t r = 0; r < N; r++) {                                                              \
      const T *zr = Z + r * C;                                                                     \
      double m = zr[0], s = 0;                                                                     \
      for (int64_t c = 1; c < C; c++)                                                              \
        if (zr[c] > m) m = zr[c];                                                                  \
      for (int64_t c = 0; c < C; c++) s += EXP_OF(T, (double)zr[c] - m);                           \
      total += m + log(s) - (double)zr[lab[r]];                                                    \
    }                                                                                              \
    *(T *)out->data = (T)(total / (double)N);                                                      \
  } while (0)

void fwd_softmax_ce(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n, (void)at;
  const ad_tensor *z = in[0];
  const int32_t *lab = in[1]->data;
  int64_t N = z->shape[0], C = z->shape[1];
  if (out->dtype == AD_F32)
    CE_FWD(float);
  else
    CE_FWD(double);
}

/* dz += dy * (softmax(z) - onehot(t)) / N */
ad_status bwd_softmax_ce(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                         ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y;
  if (!needs[0]) return AD_OK;
  ad_tensor *z = in[0];
  int64_t N = z->shape[0], C = z->shape[1];
  ad_tensor *onehot = ad_tmp_full(ctx, z->dtype, 2, z->shape, 0.0);
  if (!onehot) return ctx->status;
  const int32_t *lab = in[1]->data;
  for (int64_t r = 0; r < N; r++) ad_tensor_set(onehot, r * C + lab[r], 1.0);
  ad_tensor *d = ad_sub(ctx, ad_softmax(ctx, z, 1), onehot);
  return (g[0] = ad_mul(ctx, d, ad_mul_scalar(ctx, dy, 1.0 / (double)N))) ? AD_OK : ctx->status;
}

ad_tensor *ad_softmax_cross_entropy(ad_ctx *ctx, ad_tensor *logits, ad_tensor *labels) {
  return ad_apply2(ctx, AD_OP_SOFTMAX_CE, logits, labels, NULL);
}

int sample_softmax_ce(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  (void)at;
  if (v > 0) return 0;
  int64_t s[2] = {4, 5};
  in[0] = ad_sample_tensor(ctx, rng, dt, 2, s, -3, 3, true);
  in[1] = ad_zeros(ctx, AD_I32, 1, s);
  for (int64_t i = 0; in[1] && i < 4; i++)
    ((int32_t *)in[1]->data)[i] = (int32_t)ad_rng_below(rng, 5);
  return in[0] && in[1] ? 2 : -1;
}
