/* op_matmul.c: (batched) matrix product with transpose flags. */
#include "ad_internal.h"

/* Leading (batch) dims of x: all but the last two. */
static int64_t batch_of(const ad_tensor *x) { return ad_shape_size(x->ndim - 2, x->shape); }

ad_status shape_matmul(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                       int *ndim, int64_t *shape) {
  (void)n;
  const ad_tensor *a = in[0], *b = in[1];
  char sa[64], sb[64];
  if (ad_check_float_same(ctx, "matmul", 2, in) != AD_OK) return ctx->status;
  if (a->ndim < 2 || b->ndim < 2)
    return ad_set_error(ctx, AD_ERR_SHAPE, "matmul: inputs need at least 2 dims: %s x %s",
                        ad_shape_str(a, sa, sizeof sa), ad_shape_str(b, sb, sizeof sb));
  bool ta = at->i[0] != 0, tb = at->i[1] != 0;
  int64_t m = a->shape[a->ndim - (ta ? 1 : 2)], ka = a->shape[a->ndim - (ta ? 2 : 1)];
  int64_t kb = b->shape[b->ndim - (tb ? 1 : 2)], nn = b->shape[b->ndim - (tb ? 2 : 1)];
  if (ka != kb)
    return ad_set_error(ctx, AD_ERR_SHAPE, "matmul: inner dimensions differ: %s%s x %s%s",
                        ad_shape_str(a, sa, sizeof sa), ta ? "^T" : "",
                        ad_shape_str(b, sb, sizeof sb), tb ? "^T" : "");
  const ad_tensor *lead = a->ndim >= b->ndim ? a : b;
  if (a->ndim > 2 && b->ndim > 2) {
    bool same = a->ndim == b->ndim;
    for (int i = 0; same && i < a->ndim - 2; i++) same = a->shape[i] == b->shape[i];
    if (!same)
      return ad_set_error(ctx, AD_ERR_SHAPE, "matmul: batch dimensions differ: %s x %s",
                          ad_shape_str(a, sa, sizeof sa), ad_shape_str(b, sb, sizeof sb));
  }
  *ndim = lead->ndim;
  for (int i = 0; i < lead->ndim - 2; i++) shape[i] = lead->shape[i];
  shape[lead->ndim - 2] = m;
  shape[lead->ndim - 1] = nn;
  *dt = a->dtype;
  return AD_OK;
}

/* Y = op(A) op(B), batch by batch; a 2-D side is shared by every batch. */
void fwd_matmul(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n;
  const ad_tensor *a = in[0], *b = in[1];
  bool ta = at->i[0] != 0, tb = at->i[1] != 0;
  int64_t m = out->shape[out->ndim - 2], nn = out->shape[out->ndim - 1];
  int64_t k = a->shape[a->ndim - (ta ? 2 : 1)];
  int64_t batches = batch_of(out);
  size_t es = ad_dsize(out->dtype);
  int64_t sa = a->ndim > 2 ? m * k : 0, sb = b->ndim > 2 ? k * nn : 0;
  for (int64_t i = 0; i < batches; i++)
    ad_gemm(out->dtype, ta, tb, m, nn, k, (const char *)a->data + (size_t)(i * sa) * es, ta ? m : k,
            (const char *)b->data + (size_t)(i * sb) * es, tb ? k : nn, 0.0,
            (char *)out->data + (size_t)(i * m * nn) * es, nn);
}

/* Y = op(A) op(B):
 *   A B     : dA = dY B^T,    dB = A^T dY
 *   A B^T   : dA = dY B,      dB = dY^T A
 *   A^T B   : dA = B dY^T,    dB = A dY
 *   A^T B^T : dA = B^T dY^T,  dB = dY^T A^T
 * A batched dY against a 2-D input is summed over the batch by the caller. */
ad_status bwd_matmul(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                     ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)y;
  ad_tensor *a = in[0], *b = in[1];
  bool ta = at->i[0] != 0, tb = at->i[1] != 0;
  if (needs[0]) {
    g[0] = !ta ? ad_matmul(ctx, dy, b, false, !tb) : ad_matmul(ctx, b, dy, tb, true);
    if (!g[0]) return ctx->status;
  }
  if (needs[1]) {
    g[1] = !tb ? ad_matmul(ctx, a, dy, !ta, false) : ad_matmul(ctx, dy, a, true, ta);
    if (!g[1]) return ctx->status;
  }
  return AD_OK;
}

ad_tensor *ad_matmul(ad_ctx *ctx, ad_tensor *a, ad_tensor *b, bool trans_a, bool trans_b) {
  ad_attrs at = {.i = {trans_a, trans_b}};
  return ad_apply2(ctx, AD_OP_MATMUL, a, b, &at);
}

int sample_matmul(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  /* variants 0-3: the four transpose combinations of [3,4] x [4,5];
   * 4: batched x batched; 5: batched x shared 2-D */
  if (v > 5) return 0;
  int64_t m = 3, k = 4, nn = 5;
  if (v < 4) {
    bool ta = v & 1, tb = v & 2;
    at->i[0] = ta;
    at->i[1] = tb;
    int64_t sa[2] = {ta ? k : m, ta ? m : k}, sb[2] = {tb ? nn : k, tb ? k : nn};
    in[0] = ad_sample_tensor(ctx, rng, dt, 2, sa, -1, 1, true);
    in[1] = ad_sample_tensor(ctx, rng, dt, 2, sb, -1, 1, true);
  } else {
    int64_t sa[3] = {2, m, k}, sb[3] = {2, k, nn};
    in[0] = ad_sample_tensor(ctx, rng, dt, 3, sa, -1, 1, true);
    in[1] = v == 4 ? ad_sample_tensor(ctx, rng, dt, 3, sb, -1, 1, true)
                   : ad_sample_tensor(ctx, rng, dt, 2, sb + 1, -1, 1, true);
  }
  return in[0] && in[1] ? 2 : -1;
}
