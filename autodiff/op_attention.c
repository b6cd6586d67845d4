/* op_attention.c: scaled dot-product attention, a composite of the
 * engine's ops (matmul with trans_b, mul_scalar, add, softmax, mul,
 * matmul), so its first and second derivatives come from theirs and a
 * graph dump shows each step.
 *
 *   scores  = q k^T * scale                      [..., L, S]
 *   scores  = scores + (j <= i ? 0 : -inf)       (causal)
 *   scores  = scores + mask                      (additive mask)
 *   weights = softmax(scores, -1)  (* dropout)
 *   out     = weights v                          [..., L, Ev]
 *
 * The masks and the dropout draws are data (not differentiated); a float
 * mask that requires a gradient gets one through add. */
#include "ops.h"

#include <math.h>

/* Checks q, k, v and the mask; records an error naming the shapes. */
static bool sdpa_check(ad_ctx *ctx, const ad_tensor *q, const ad_tensor *k, const ad_tensor *v,
                       const ad_attention_opts *o) {
  static const char *fn = "scaled_dot_product_attention";
  char a[64], b[64], c[64];
  ad_tensor *in[3] = {(ad_tensor *)q, (ad_tensor *)k, (ad_tensor *)v};
  if (ad_check_float_same(ctx, fn, 3, in) != AD_OK) return false;
  if (q->ndim < 2 || q->ndim != k->ndim || q->ndim != v->ndim) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: q %s, k %s and v %s must have the same number of dims, at least 2 "
                 "([..., L, E], [..., S, E], [..., S, Ev])",
                 fn, ad_shape_str(q, a, sizeof a), ad_shape_str(k, b, sizeof b),
                 ad_shape_str(v, c, sizeof c));
    return false;
  }
  int nd = q->ndim;
  int64_t batch[AD_MAX_DIMS]; /* the batch dims of q, k and v broadcast together */
  for (int i = 0; i < nd - 2; i++) {
    int64_t d = 1;
    const ad_tensor *t3[3] = {q, k, v};
    bool ok = true;
    for (int j = 0; j < 3; j++) {
      int64_t e = t3[j]->shape[i];
      if (e != 1 && d != 1 && e != d) ok = false;
      if (e != 1) d = e;
    }
    if (!ok) {
      ad_set_error(ctx, AD_ERR_SHAPE,
                   "%s: batch dimensions do not broadcast: q %s, k %s, v %s (each of the dims "
                   "but the last two must be equal or 1)",
                   fn, ad_shape_str(q, a, sizeof a), ad_shape_str(k, b, sizeof b),
                   ad_shape_str(v, c, sizeof c));
      return false;
    }
    batch[i] = d;
  }
  if (q->shape[nd - 1] != k->shape[nd - 1]) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: q %s and k %s have different embedding sizes (last dims %lld and %lld)", fn,
                 ad_shape_str(q, a, sizeof a), ad_shape_str(k, b, sizeof b),
                 (long long)q->shape[nd - 1], (long long)k->shape[nd - 1]);
    return false;
  }
  if (k->shape[nd - 2] != v->shape[nd - 2]) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: k %s and v %s have different source lengths (dim -2: %lld and %lld)", fn,
                 ad_shape_str(k, b, sizeof b), ad_shape_str(v, c, sizeof c),
                 (long long)k->shape[nd - 2], (long long)v->shape[nd - 2]);
    return false;
  }
  if (!isfinite(o->scale)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: scale %g must be finite", fn, o->scale);
    return false;
  }
  if (!(o->dropout_p >= 0 && o->dropout_p < 1)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: dropout_p %g is outside [0, 1)", fn, o->dropout_p);
    return false;
  }
  if (o->dropout_p > 0 && !o->rng) {
    ad_set_error(ctx, AD_ERR_NULL, "%s: dropout_p %g needs an rng", fn, o->dropout_p);
    return false;
  }
  if (o->dropout_p > 0 && ad_rng_unseeded(o->rng)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: rng is not seeded (its state is all zeros, which draws 0 for ever): call "
                 "ad_rng_seed first",
                 fn);
    return false;
  }
  const ad_tensor *m = o->mask;
  if (m) {
    /* the scores' shape [..., L, S] */
    int64_t ss[AD_MAX_DIMS];
    for (int i = 0; i < nd - 2; i++) ss[i] = batch[i];
    ss[nd - 2] = q->shape[nd - 2];
    ss[nd - 1] = k->shape[nd - 2];
    bool ok = ad_is_float(m->dtype) && m->ndim <= nd;
    for (int i = 0; ok && i < m->ndim; i++) {
      int64_t d = m->shape[m->ndim - 1 - i], want = ss[nd - 1 - i];
      ok = d == want || d == 1;
    }
    if (!ad_is_float(m->dtype)) {
      ad_set_error(ctx, AD_ERR_DTYPE, "%s: mask %s is %s; an additive float mask is needed", fn,
                   ad_shape_str(m, a, sizeof a), ad_dtype_name(m->dtype));
      return false;
    }
    if (!ok) {
      char s[64];
      ad_tensor tmp = {.ndim = nd};
      for (int i = 0; i < nd; i++) tmp.shape[i] = ss[i];
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: mask %s does not broadcast to the scores' shape %s", fn,
                   ad_shape_str(m, a, sizeof a), ad_shape_str(&tmp, s, sizeof s));
      return false;
    }
  }
  return true;
}

ad_tensor *ad_scaled_dot_product_attention(ad_ctx *ctx, ad_tensor *q, ad_tensor *k, ad_tensor *v,
                                           const ad_attention_opts *opts) {
  if (!ctx) return NULL;
  ad_attention_opts o = {0};
  if (opts) o = *opts;
  if (o.weights) *o.weights = NULL;
  static const char *fn = "scaled_dot_product_attention";
  if (!ad_arg_ok(ctx, fn, "q", q) || !ad_arg_ok(ctx, fn, "k", k) || !ad_arg_ok(ctx, fn, "v", v) ||
      (o.mask && !ad_arg_ok(ctx, fn, "mask", o.mask)))
    return NULL;
  if (!sdpa_check(ctx, q, k, v, &o)) return NULL;
  int nd = q->ndim;
  int64_t L = q->shape[nd - 2], S = k->shape[nd - 2], E = q->shape[nd - 1];
  double scale = o.scale != 0 ? o.scale : 1.0 / sqrt((double)(E > 0 ? E : 1));
  ad_tensor *s = ad_mul_scalar(ctx, ad_matmul(ctx, q, k, false, true), scale);
  /* The masks' -inf is their meaning, not an anomaly: anomaly mode checks
   * the scores before them and the weights after (a row with no key left
   * gives NaN weights, and softmax reports it), not the masked scores. */
  bool anomaly_fwd = ctx->anomaly_fwd;
  ctx->anomaly_fwd = false;
  if (o.causal && s) {
    /* bias[i, j] = 0 for j <= i (the top-left lower triangle), -inf above.
     * Added, as PyTorch adds its causal mask: a row that another mask
     * leaves with no key then sends NaN to every score of the row, where
     * a select would have stopped it at the causal positions. */
    int64_t ls[2] = {L, S};
    ad_tensor *bias = ad_tmp_full(ctx, q->dtype, 2, ls, -INFINITY);
    if (!bias) {
      ctx->anomaly_fwd = anomaly_fwd;
      return NULL;
    }
    for (int64_t i = 0; i < L; i++)
      for (int64_t j = 0; j <= i && j < S; j++) {
        if (bias->dtype == AD_F32)
          ((float *)bias->data)[i * S + j] = 0.0f;
        else
          ((double *)bias->data)[i * S + j] = 0.0;
      }
    s = ad_add(ctx, s, bias);
  }
  if (o.mask)
    s = ad_add(ctx, s, o.mask->dtype == q->dtype ? o.mask : ad_cast(ctx, o.mask, q->dtype));
  ctx->anomaly_fwd = anomaly_fwd;
  ad_tensor *w = ad_softmax(ctx, s, -1);
  if (o.dropout_p > 0 && w) {
    ad_tensor *keep = ad_tmp_new(ctx, w->dtype, w->ndim, w->shape);
    if (!keep) return NULL;
    double scale_keep = 1.0 / (1.0 - o.dropout_p);
    for (int64_t i = 0; i < keep->size; i++) {
      double d = ad_rng_uniform(o.rng) >= o.dropout_p ? scale_keep : 0.0;
      if (keep->dtype == AD_F32)
        ((float *)keep->data)[i] = (float)d;
      else
        ((double *)keep->data)[i] = d;
    }
    w = ad_mul(ctx, w, keep);
  }
  ad_tensor *out = ad_matmul(ctx, w, v, false, false);
  if (out && o.weights) *o.weights = w;
  return out;
}
