/* matmul.c: products for the matmul op: split over the library's threads
 * (whose count ad_set_num_threads sets here), or computed transposed when
 * that packs less. */
#include "kernels.h"

/* ---------------------------------------------------------- threads */

/* The library's thread count: the pool's workers, and BLAS held to one
 * thread, since products are split over the pool here (ad.h). Here, not in
 * parallel.c, so that the pool below knows nothing of BLAS (gemm.c hands
 * its packing to the pool). BLAS is held to one thread for any n that the
 * pool takes, also where a worker could not start. */
ad_status ad_set_num_threads(int n) {
  ad_status st = ad_pool_set_threads(n);
  if (st == AD_OK || st == AD_ERR_OOM) ad_blas_single_thread();
  return st;
}

/* ------------------------------------------------------------ split */

/* Products of at least this many multiply-adds are split over the
 * library's threads (ad_set_num_threads). A part pays for its hand-over
 * and, more, for pulling its operands out of the caller's cache (the layer
 * before wrote them there): on CPUs whose cores multiply fast and pass
 * cache lines slowly, smaller products ran slower on two threads than on
 * one (docs/performance.md, "Threads"). With the built-in kernels the
 * split keeps every element's sum as it is, so the bits do not change;
 * OpenBLAS (where the dispatch rule picks it for the whole product but
 * not for a part) may round a part differently in the last bits. */
#define SPLIT_MACS 4194304.0

/* A product's work as the kernels do it, in multiply-adds: its narrower
 * side (m or n) counts as at least 32, a kernel's register tile being that
 * wide (a narrower product leaves part of it idle: a layer of 10 outputs
 * runs at under a third of the kernel's rate), and its depth k as at least
 * 32, below which loading and storing C's tiles outweighs the
 * multiply-adds. */
static double split_work(int64_t m, int64_t n, int64_t k) {
  int64_t lo = m < n ? m : n, hi = m < n ? n : m;
  return (double)((lo + 31) / 32 * 32) * (double)hi * (double)(k > 32 ? k : 32);
}

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
  size_t es = s->dt == AD_F64 ? sizeof(double) : sizeof(float);
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

void ad_gemm_split(ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
                   int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc) {
  int threads = ad_num_threads();
  bool by_rows = m > n;
  int64_t dim = by_rows ? m : n;
  if (threads <= 1 || split_work(m, n, k) < SPLIT_MACS || dim < 32) {
    ad_gemm(dt, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  int64_t parts = dim / 16 < threads ? dim / 16 : threads;
  gemm_split s = {dt, ta, tb, by_rows, m, n, k, lda, ldb, ldc, parts, a, b, c, beta};
  ad_parallel_for(parts, 1, gemm_parts, &s);
}

/* ------------------------------------------------------- packed B */

/* A product with a B packed once (ad_gemm_pack), its rows split over the
 * threads as ad_gemm_split splits its parts. */
typedef struct packed_job {
  const ad_gemm_packed *p;
  bool ta;
  int64_t m, lda, ldb, ldc, parts;
  const void *a, *b;
  void *c;
  double beta;
} packed_job;

static void packed_parts(void *ud, int64_t lo, int64_t hi) {
  const packed_job *j = ud;
  for (int64_t q = lo; q < hi; q++)
    ad_gemm_packed_rows(j->p, j->ta, j->m * q / j->parts, j->m * (q + 1) / j->parts, j->a, j->lda,
                        j->b, j->ldb, j->beta, j->c, j->ldc);
}

void ad_gemm_packed_run(const ad_gemm_packed *p, bool ta, int64_t m, const void *a, int64_t lda,
                        const void *b, int64_t ldb, double beta, void *c, int64_t ldc) {
  if (m <= 0) return;
  int threads = ad_num_threads();
  int64_t parts = threads < m / 8 ? threads : m / 8;
  if (parts <= 1 || (double)ad_gemm_packed_macs(p, m) < SPLIT_MACS) {
    ad_gemm_packed_rows(p, ta, 0, m, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  packed_job j = {p, ta, m, lda, ldb, ldc, parts, a, b, c, beta};
  ad_parallel_for(parts, 1, packed_parts, &j);
}

/* -------------------------------------------------------- transposed */

/* A dense layer's product X W^T with a small batch (m rows) and a wide,
 * deep W (n x k), such as bench/mlp's first layer (32 x 64 x 784): the
 * built-in GEMM packs op(B) = W^T, transposing n x k values in registers
 * per call, while A is read in place. Computing Y^T = W X^T instead packs
 * only X^T (m x k) and reads W in place; the m x n result is then
 * transposed (the same products, summed in the same order). That pays
 * only when the packing saved, of n x k values rather than m x k, clearly
 * outweighs the extra pass over the m x n result: for n >= 2m and
 * k >= 256, for products of at most gemm.c's 4M multiply-adds; larger
 * ones when a built-in kernel computes them (BLAS packs both sides anyway),
 * with m a multiple of 32 (whole column panels of W X^T for every kernel:
 * a partial panel wastes more than the packing saves) and n >= 4m: with
 * any kernel for m <= 64 with k >= 512 or m <= 128 with k >= 768; with the
 * AVX-512 kernel in f32, whose W^T packing costs most, for m <= 512 with
 * k >= 512, and for m <= 128 already from n >= 2m (measured later, in one
 * process: 4-15% faster for 32 x 64 x 4608 up to 128 x 256 x 4096; 256 x
 * 512 x 784 tied). Those are the shapes where it won on every kernel and
 * dtype measured (docs/performance.md, "GEMM dispatch"). Since the narrow
 * tile runs a last panel of at most 16 columns at full width, the AVX-512
 * kernel in f32 also wins for other row counts up to 160 with n >= 4m (a
 * batch of 100, or a rank's uneven shard); past 160 rows it ties. Never
 * for one row (a batch of one): W X^T is then a column, which ad_gemm sums
 * in an order of its own (gemm.c's S_gemv), so the row's bits would differ
 * from the plain product's, from the same row's in a larger batch, and
 * from matmul_grad_into's (which calls ad_gemm directly). */
bool ad_matmul_xwt_pays(ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k) {
  if (ta || !tb || m < 2) return false;
  if (m <= 64 && n >= 2 * m && k >= 256 && (double)m * (double)n * (double)k <= 4194304.0)
    return true;
  if (m <= 0 || k < 512 || m > 512) return false;
  int kernel = ad_gemm_kernel_of(n, m, k);
  if (kernel < 1) return false;
  bool avx512_f32 = kernel == 3 && dt == AD_F32;
  if (m % 32 != 0) return avx512_f32 && m <= 160 && n >= 4 * m;
  if (n < 4 * m) return avx512_f32 && m <= 128 && n >= 2 * m;
  if (avx512_f32) return true;
  return m <= 64 || (m <= 128 && k >= 768);
}

/* The transposition back, its rows split over the threads when there are
 * enough of them (at least 16 rows a part). */
typedef struct xwt_job {
  ad_dtype dt;
  int64_t m, n, parts;
  const void *t;
  void *y;
} xwt_job;

static void xwt_rows(void *ud, int64_t lo, int64_t hi) {
  const xwt_job *x = ud;
  for (int64_t p = lo; p < hi; p++)
    ad_transpose_builtin(0, x->dt, x->m, x->n, x->t, x->y, x->m * p / x->parts,
                         x->m * (p + 1) / x->parts);
}

void ad_matmul_xwt(ad_dtype dt, int64_t m, int64_t n, int64_t k, const void *x, const void *w,
                   void *t, void *y) {
  ad_gemm_split(dt, false, true, n, m, k, w, k, x, k, 0.0, t, m); /* t = W X^T, n x m */
  int64_t threads = ad_num_threads(), parts = m / 16 < threads ? m / 16 : threads;
  xwt_job j = {dt, m, n, parts > 1 && m * n >= 65536 ? parts : 1, t, y};
  if (j.parts == 1)
    xwt_rows(&j, 0, 1);
  else
    ad_parallel_for(j.parts, 1, xwt_rows, &j);
}
