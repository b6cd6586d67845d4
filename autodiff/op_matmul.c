/* op_matmul.c: (batched) matrix product with transpose flags. */
#include "ad_internal.h"

/* -------------------------------------------------------- threaded GEMM */

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

/* --------------------------------------------------------------- matmul */

static ad_status matmul_shape(const ad_call *c) {
  const ad_tensor *a = c->in[0], *b = c->in[1];
  ad_tensor *o = c->out;
  char sa[64], sb[64];
  ad_status st = ad_check_float_same(c->ctx, c->name, 2, c->in);
  if (st != AD_OK) return st;
  if (a->ndim < 2 || b->ndim < 2)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: inputs need at least 2 dims: %s x %s", c->name,
                        ad_shape_str(a, sa, sizeof sa), ad_shape_str(b, sb, sizeof sb));
  bool ta = c->attrs->matmul.trans_a, tb = c->attrs->matmul.trans_b;
  int64_t m = a->shape[a->ndim - (ta ? 1 : 2)], ka = a->shape[a->ndim - (ta ? 2 : 1)];
  int64_t kb = b->shape[b->ndim - (tb ? 1 : 2)], nn = b->shape[b->ndim - (tb ? 2 : 1)];
  if (ka != kb)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: inner dimensions differ: %s%s x %s%s", c->name,
                        ad_shape_str(a, sa, sizeof sa), ta ? "^T" : "",
                        ad_shape_str(b, sb, sizeof sb), tb ? "^T" : "");
  const ad_tensor *lead = a->ndim >= b->ndim ? a : b;
  if (a->ndim > 2 && b->ndim > 2) {
    bool same = a->ndim == b->ndim;
    for (int i = 0; same && i < a->ndim - 2; i++) same = a->shape[i] == b->shape[i];
    if (!same)
      return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: batch dimensions differ: %s x %s", c->name,
                          ad_shape_str(a, sa, sizeof sa), ad_shape_str(b, sb, sizeof sb));
  }
  o->ndim = lead->ndim;
  for (int i = 0; i < lead->ndim - 2; i++) o->shape[i] = lead->shape[i];
  o->shape[lead->ndim - 2] = m;
  o->shape[lead->ndim - 1] = nn;
  o->dtype = a->dtype;
  return AD_OK;
}

/* Leading (batch) dims of x: all but the last two. */
static int64_t batch_of(const ad_tensor *x) { return ad_shape_size(x->ndim - 2, x->shape); }

/* A dense layer's product X W^T with a small batch (m rows) and a wide,
 * deep W (n x k), such as bench/mlp's first layer (32 x 64 x 784): the
 * built-in GEMM packs op(B) = W^T, transposing n x k values in registers
 * per call, while A is read in place. Computing Y^T = W X^T instead packs
 * only X^T (m x k) and reads W in place; the m x n result is then
 * transposed (the same products, summed in the same order). That pays
 * only when the packing saved, of n x k values rather than m x k, clearly
 * outweighs the extra pass over the m x n result: for n >= 2m and
 * k >= 256. BLAS-sized products (above gemm.c's 4M multiply-adds) go to
 * OpenBLAS, which packs both sides anyway. */
static bool swap_pays(bool ta, bool tb, int64_t m, int64_t n, int64_t k) {
  return !ta && tb && m <= 64 && n >= 2 * m && k >= 256 &&
         (double)m * (double)n * (double)k <= 4194304.0;
}

/* Y = op(A) op(B), batch by batch; a 2-D side is shared by every batch. */
static void matmul_fwd(const ad_call *c) {
  const ad_tensor *a = c->in[0], *b = c->in[1];
  ad_tensor *out = c->out;
  bool ta = c->attrs->matmul.trans_a, tb = c->attrs->matmul.trans_b;
  int64_t m = out->shape[out->ndim - 2], nn = out->shape[out->ndim - 1];
  int64_t k = a->shape[a->ndim - (ta ? 2 : 1)];
  int64_t batches = batch_of(out);
  size_t es = ad_dsize(out->dtype);
  void *t;
  if (batches == 1 && swap_pays(ta, tb, m, nn, k) &&
      (t = ad_arena_alloc(c->ctx, (size_t)(m * nn) * es))) {
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

/* A batched dY against a 2-D input gives a batched contribution, which the
 * engine sums over the batch. */
static ad_status matmul_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *a = c->in[0], *b = c->in[1], *dy = c->gout;
  bool ta = c->attrs->matmul.trans_a, tb = c->attrs->matmul.trans_b;
  if (c->needs[0]) {
    ad_status st = ad_call_set_grad(
        c, 0, !ta ? ad_matmul(ctx, dy, b, false, !tb) : ad_matmul(ctx, b, dy, tb, true));
    if (st != AD_OK) return st;
  }
  if (c->needs[1])
    return ad_call_set_grad(
        c, 1, !tb ? ad_matmul(ctx, a, dy, !ta, false) : ad_matmul(ctx, dy, a, true, ta));
  return AD_OK;
}

/* dst = op(x) op(w) for 2-D x, w (GEMM with beta = 0). */
static void gemm_store(ad_tensor *dst, const ad_tensor *x, bool tx, const ad_tensor *w, bool tw) {
  int64_t m = x->shape[tx ? 1 : 0], k = x->shape[tx ? 0 : 1], nn = w->shape[tw ? 0 : 1];
  gemm_mt(dst->dtype, tx, tw, m, nn, k, x->data, x->shape[1], w->data, w->shape[1], 0.0, dst->data,
          nn);
}

/* For 2-D A and B, the GEMM that makes input k's contribution stores a new
 * gradient straight into its buffer (beta = 0): no temporary, no clearing,
 * no copy. Adding to an existing one is declined: a GEMM with beta = 1
 * rounds differently from the product plus an add once k is blocked. */
static bool matmul_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  const ad_tensor *a = c->in[0], *b = c->in[1], *dy = c->gout;
  if (!overwrite || a->ndim != 2 || b->ndim != 2) return false;
  bool ta = c->attrs->matmul.trans_a, tb = c->attrs->matmul.trans_b;
  if (k == 0) {
    if (!ta)
      gemm_store(grad, dy, false, b, !tb);
    else
      gemm_store(grad, b, tb, dy, true);
  } else {
    if (!tb)
      gemm_store(grad, a, !ta, dy, false);
    else
      gemm_store(grad, dy, true, a, ta);
  }
  return true;
}

ad_tensor *ad_matmul(ad_ctx *ctx, ad_tensor *a, ad_tensor *b, bool trans_a, bool trans_b) {
  ad_attrs at = {.matmul = {.trans_a = trans_a, .trans_b = trans_b}};
  return ad_apply2(ctx, AD_OP_MATMUL, a, b, &at);
}

/* variants 0-3: the four transpose combinations of [3,4] x [4,5];
 * 4: batched x batched; 5: batched x shared 2-D */
static int matmul_sample(const ad_sample_call *s) {
  int v = s->variant;
  if (v > 5) return 0;
  int64_t m = 3, k = 4, nn = 5;
  if (v < 4) {
    bool ta = v & 1, tb = v & 2;
    s->attrs->matmul = (ad_matmul_attrs){.trans_a = ta, .trans_b = tb};
    int64_t sa[2] = {ta ? k : m, ta ? m : k}, sb[2] = {tb ? nn : k, tb ? k : nn};
    s->in[0] = ad_sample_tensor(s, 2, sa, -1, 1, true);
    s->in[1] = ad_sample_tensor(s, 2, sb, -1, 1, true);
  } else {
    int64_t sa[3] = {2, m, k}, sb[3] = {2, k, nn};
    s->in[0] = ad_sample_tensor(s, 3, sa, -1, 1, true);
    s->in[1] = v == 4 ? ad_sample_tensor(s, 3, sb, -1, 1, true)
                      : ad_sample_tensor(s, 2, sb + 1, -1, 1, true);
  }
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_matmul = {
    .name = "matmul",
    .arity = 2,
    .attrs = AD_ATTRS_MATMUL,
    .shape = matmul_shape,
    .forward = matmul_fwd,
    .backward = matmul_bwd,
    .grad_into = matmul_grad_into,
    .sample = matmul_sample,
    .math = "Y = op(A) op(B), op = transpose if trans_a / trans_b",
    .inputs = {"A", "B"},
    .grads = {"dY op(B)^T (or op(B) dY^T when transposed)", "op(A)^T dY (or dY^T op(A))"},
};
