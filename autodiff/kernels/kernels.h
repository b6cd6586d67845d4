/* kernels.h: the compute kernels behind the ops (private): the GEMM and
 * its dispatch between the built-in micro-kernels and BLAS (gemm.c), the
 * thread pool (parallel.c), and products split over the pool or computed
 * transposed (matmul.c). Kernels work on plain arrays: they know nothing of
 * contexts, tensors' nodes, the tape or ops. Why each choice is made, with
 * figures, is in docs/performance.md. */
#ifndef AD_KERNELS_H
#define AD_KERNELS_H

#include "ad_ext.h"

/* C = op(A) op(B) + beta C for dtype dt (alpha = 1): the built-in kernel
 * or BLAS, whichever ad_gemm_f32/f64 would pick. */
void ad_gemm(ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
             int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc);

/* One GEMM kernel, whatever ad_gemm_f32/f64 would pick (tests, bench): kernel 0 the best built-in
 * for the CPU, 1 portable, 2 AVX2, 3 AVX-512, -1 reference loop, -2 BLAS; + 16 always packs A,
 * + 32 never. Returns the kernel's name; NULL (nothing done) if the CPU or build lacks it. */
const char *ad_gemm_builtin(int kernel, ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n,
                            int64_t k, double alpha, const void *a, int64_t lda, const void *b,
                            int64_t ldb, double beta, void *c, int64_t ldc);

/* The dispatch rule for a CPU class (0 neither, 1 AVX2 and FMA, 2
 * AVX-512), the core OpenBLAS names (NULL when unknown) and whether BLAS
 * is linked: which size classes go to BLAS, and why, in words (what
 * ad_gemm_backend reports for this process). A pure function, so the
 * rule can be tested for every machine on any machine. */
typedef struct ad_gemm_rule {
  bool blas_small, blas_large; /* products of at most / more than 4M multiply-adds */
  char why[160];
} ad_gemm_rule;
ad_gemm_rule ad_gemm_decide(int cpu, const char *core, bool have_blas);

/* Keeps BLAS (OpenBLAS) at one thread, now if it is loaded, else as soon as
 * it is: the engine splits large products over its own threads. */
void ad_blas_single_thread(void);

/* ad_gemm, split over the library's threads (ad_set_num_threads) when the
 * product is large enough to pay for handing out the parts. */
void ad_gemm_split(ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
                   int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc);

/* op(B) (k x n, from b with row step ldb) packed once by the built-in
 * kernel, for many products C = op(A) op(B) + beta C of m rows that share
 * it: a recurrence's weight, step after step, which the kernel would
 * otherwise pack again at every call. Each product gives the bits ad_gemm
 * gives. NULL when the dispatch rule gives such products to BLAS, when no
 * vector kernel is built, or when memory is short: the caller then calls
 * ad_gemm_split. ad_gemm_packed_run splits the rows over the library's
 * threads when the product is large enough (the bits do not change); b
 * and ldb are read only by the reference loop the kernel falls back to
 * when it cannot have its scratch. */
typedef struct ad_gemm_packed ad_gemm_packed;
ad_gemm_packed *ad_gemm_pack(ad_dtype dt, bool tb, int64_t m, int64_t k, int64_t n, const void *b,
                             int64_t ldb);
void ad_gemm_packed_run(const ad_gemm_packed *p, bool ta, int64_t m, const void *a, int64_t lda,
                        const void *b, int64_t ldb, double beta, void *c, int64_t ldc);
void ad_gemm_packed_free(ad_gemm_packed *p);
/* Rows lo..hi of one such product, on this thread (gemm.c; the run above
 * splits the rows over the threads, matmul.c), and its multiply-adds for
 * m rows. */
void ad_gemm_packed_rows(const ad_gemm_packed *p, bool ta, int64_t lo, int64_t hi, const void *a,
                         int64_t lda, const void *b, int64_t ldb, double beta, void *c,
                         int64_t ldc);
int64_t ad_gemm_packed_macs(const ad_gemm_packed *p, int64_t m);

/* Whether Y = X W^T (m x n, X m x k, W n x k, row-major) is cheaper as
 * (W X^T)^T: ad_matmul_xwt then computes it with scratch of m * n
 * elements. */
bool ad_matmul_xwt_pays(bool ta, bool tb, int64_t m, int64_t n, int64_t k);
void ad_matmul_xwt(ad_dtype dt, int64_t m, int64_t n, int64_t k, const void *x, const void *w,
                   void *scratch, void *y);

#endif
