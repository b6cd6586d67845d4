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

/* ----------------------------------------------------- threaded GEMM */

/* Products of at least this many multiply-adds are split over the
 * library's threads (ad_set_num_threads): about 15 us of one core's work,
 * well above the cost of handing out the parts. */
#define SPLIT_MACS 1000000.0

/* One product cut into parts along the larger of m and n; each part is an
 * independent GEMM on a block of C's rows or columns, at a multiple of 16
 * (the micro-kernels' width) from the start. */
typedef struct gemm_split {
  ad_dtype dt;
  bool ta, tb, by_rows;
  int64_t m, n, k, lda, ldb, ldc, parts;
  const char *a, *b;
  char *c;
  double beta;
} gemm_split;

static void gemm_parts(void *ud, int64_t lo, int64_t hi) {
  const gemm_split *s = ud;
  size_t es = ad_dsize(s->dt);
  int64_t dim = s->by_rows ? s->m : s->n;
  for (int64_t p = lo; p < hi; p++) {
    int64_t b = dim * p / s->parts / 16 * 16, e = dim * (p + 1) / s->parts / 16 * 16;
    if (p + 1 == s->parts) e = dim;
    if (e <= b) continue;
    if (s->by_rows) /* rows b..e of op(A) and C */
      ad_gemm(s->dt, s->ta, s->tb, e - b, s->n, s->k, s->a + (size_t)(s->ta ? b : b * s->lda) * es,
              s->lda, s->b, s->ldb, s->beta, s->c + (size_t)(b * s->ldc) * es, s->ldc);
    else /* columns b..e of op(B) and C */
      ad_gemm(s->dt, s->ta, s->tb, s->m, e - b, s->k, s->a, s->lda,
              s->b + (size_t)(s->tb ? b * s->ldb : b) * es, s->ldb, s->beta, s->c + (size_t)b * es,
              s->ldc);
  }
}

/* ad_gemm, split over the library's threads when the product is large. */
static void gemm_mt(ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
                    int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc) {
  int threads = ad_num_threads();
  bool by_rows = m > n;
  int64_t dim = by_rows ? m : n;
  if (threads <= 1 || (double)m * (double)n * (double)k < SPLIT_MACS || dim < 32) {
    ad_gemm(dt, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  int64_t parts = dim / 16 < threads ? dim / 16 : threads;
  gemm_split s = {dt, ta, tb, by_rows, m, n, k, lda, ldb, ldc, parts, a, b, c, beta};
  ad_parallel_for(parts, 1, gemm_parts, &s);
}

/* A dense layer's product X W^T with a small batch (m rows) and a wide,
 * deep W (n x k): the built-in GEMM packs op(B) = W^T, transposing n x k
 * values in registers per call, while A is read in place. Computing
 * Y^T = W X^T instead packs only X^T (m x k) and reads W in place; the
 * m x n result is then transposed (the same products, summed in the same
 * order). bench/mlp's first layer (32 x 64 x 784): 50.8 -> 43.8 us with the
 * transpose; no gain for k < 256 or n < 2m, and BLAS-sized products (above
 * gemm.c's 4M multiply-adds) go to OpenBLAS, which packs both sides anyway. */
static bool swap_pays(bool ta, bool tb, int64_t m, int64_t n, int64_t k) {
  return !ta && tb && m <= 64 && n >= 2 * m && k >= 256 &&
         (double)m * (double)n * (double)k <= 4194304.0;
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
  void *t;
  if (batches == 1 && swap_pays(ta, tb, m, nn, k) &&
      (t = ad_arena_alloc(ad_node_of(out)->ctx, (size_t)(m * nn) * es))) {
    gemm_mt(out->dtype, false, true, nn, m, k, b->data, k, a->data, k, 0.0, t, m);
    if (out->dtype == AD_F32)
      for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < nn; j++) ((float *)out->data)[i * nn + j] = ((float *)t)[j * m + i];
    else
      for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < nn; j++)
          ((double *)out->data)[i * nn + j] = ((double *)t)[j * m + i];
    return;
  }
  int64_t sa = a->ndim > 2 ? m * k : 0, sb = b->ndim > 2 ? k * nn : 0;
  for (int64_t i = 0; i < batches; i++)
    gemm_mt(out->dtype, ta, tb, m, nn, k, (const char *)a->data + (size_t)(i * sa) * es, ta ? m : k,
            (const char *)b->data + (size_t)(i * sb) * es, tb ? k : nn, 0.0,
            (char *)out->data + (size_t)(i * m * nn) * es, nn);
}

/* c += op(x) op(w) for 2-D x, w (GEMM with beta = 1). */
static void gemm_into(ad_tensor *c, const ad_tensor *x, bool tx, const ad_tensor *w, bool tw) {
  int64_t m = x->shape[tx ? 1 : 0], k = x->shape[tx ? 0 : 1], nn = w->shape[tw ? 0 : 1];
  gemm_mt(c->dtype, tx, tw, m, nn, k, x->data, x->shape[1], w->data, w->shape[1], 1.0, c->data, nn);
}

/* Y = op(A) op(B):
 *   A B     : dA = dY B^T,    dB = A^T dY
 *   A B^T   : dA = dY B,      dB = dY^T A
 *   A^T B   : dA = B dY^T,    dB = A dY
 *   A^T B^T : dA = B^T dY^T,  dB = dY^T A^T
 * A batched dY against a 2-D input is summed over the batch by the caller.
 * In ad_backward (ad_leaf_grad), a 2-D parameter's gradient is added by the
 * GEMM itself (beta = 1) straight into its grad: no temporary, no separate
 * add pass. */
ad_status bwd_matmul(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                     ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)y;
  ad_tensor *a = in[0], *b = in[1];
  bool ta = at->i[0] != 0, tb = at->i[1] != 0;
  bool flat = a->ndim == 2 && b->ndim == 2;
  ad_tensor *ga = NULL, *gb = NULL;
  ad_status st = AD_OK;
  if (flat && needs[0]) st = ad_leaf_grad(ctx, a, &ga);
  if (flat && needs[1] && st == AD_OK) st = ad_leaf_grad(ctx, b, &gb);
  if (st != AD_OK) return st;
  if (ga) {
    if (!ta)
      gemm_into(ga, dy, false, b, !tb);
    else
      gemm_into(ga, b, tb, dy, true);
  } else if (needs[0]) {
    g[0] = !ta ? ad_matmul(ctx, dy, b, false, !tb) : ad_matmul(ctx, b, dy, tb, true);
    if (!g[0]) return ctx->status;
  }
  if (gb) {
    if (!tb)
      gemm_into(gb, a, !ta, dy, false);
    else
      gemm_into(gb, dy, true, a, ta);
  } else if (needs[1]) {
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
