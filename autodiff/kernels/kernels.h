/* kernels.h: the compute kernels behind the ops (private): the GEMM and
 * its dispatch between the built-in micro-kernels and BLAS (gemm.c), the
 * thread pool (parallel.c), products split over the pool or computed
 * transposed (matmul.c), Winograd's transforms (winograd.c), permute's
 * transposed blocks (transpose.c) and layer_norm's backward over rows of
 * 16 (norm16.c). Kernels work on plain arrays: they know nothing of
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
 * for the CPU, 1 portable, 2 AVX2, 3 AVX-512, -1 reference loop, -2 BLAS; + 16 always packs A
 * and op(B), + 32 never packs A and reads B (not transposed) in place whatever its size; + 64
 * keeps the two-vector tile for panels of one vector's width or less (gemm.c, S_nbody); + 128
 * runs one row tile at a time across all the panels (gemm.c's row strips, which it otherwise
 * takes only for shallow products into C with rows 4 KiB apart). Returns the kernel's name;
 * NULL (nothing done) if the CPU or build lacks it. */
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

/* The kernel ad_gemm gives an m x n x k product in this process (the rule
 * above), numbered as for ad_gemm_builtin: -2 BLAS, -1 the reference loop,
 * 1 portable, 2 AVX2, 3 AVX-512. */
int ad_gemm_kernel_of(int64_t m, int64_t n, int64_t k);

/* y[i, j] = t[j, i] for the rows [i0, i1) of y (m x n; t is n x m, both
 * dense) with a kernel's in-register transposes, numbered as for
 * ad_gemm_builtin (0 the best this CPU has, -1 the plain loop; false,
 * nothing done, when the CPU or build lacks it). */
bool ad_transpose_builtin(int kernel, ad_dtype dt, int64_t m, int64_t n, const void *t, void *y,
                          int64_t i0, int64_t i1);

/* Keeps BLAS (OpenBLAS) at one thread, now if it is loaded, else as soon as
 * it is: the engine splits large products over its own threads. */
void ad_blas_single_thread(void);

/* The pool's part of ad_set_num_threads (parallel.c): n - 1 workers, with
 * its errors (AD_ERR_ARG for n < 1, AD_ERR_STATE inside a loop of the
 * pool, AD_ERR_OOM when a worker could not start). */
ad_status ad_pool_set_threads(int n);

/* ad_gemm, split over the library's threads (ad_set_num_threads) when the
 * product is large enough to pay for handing out the parts. */
void ad_gemm_split(ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
                   int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc);

/* op(B) (k x n, from b with row step ldb) packed once by the built-in
 * kernel, for many products C = op(A) op(B) + beta C of m rows that share
 * it: a recurrence's weight, step after step, which the kernel would
 * otherwise pack again at every call. Each product gives the bits ad_gemm
 * gives. NULL for n = 1 (ad_gemm's column product has an order of its
 * own), when the dispatch rule gives such products to BLAS, when no
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
bool ad_matmul_xwt_pays(ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k);
void ad_matmul_xwt(ad_dtype dt, int64_t m, int64_t n, int64_t k, const void *x, const void *w,
                   void *scratch, void *y);

/* Winograd F(4x4, 3x3) for f32 3x3 convolutions at stride 1, dilation 1,
 * one group (winograd.c): the geometry of conv2d's image x [n, c, h, w],
 * output [n, o, oh, ow] and top/left padding, cut into blocks of nb images
 * (fixed by the geometry, never by the thread count). Each block needs
 * scratch_floats of 64-byte aligned scratch; the transformed kernel U
 * takes u_floats. Rounding: each result differs from the exact sum by at
 * most about 1e-5 x the sum of |terms| (of |w x| for conv2d, |w dy| for
 * the input gradient, |x dy| for the weight gradient) where the input's
 * magnitudes are even, against about 1e-6 for the GEMM path; in general
 * relative to the largest values of the 6x6 input patch each output tile
 * reads (ad_conv2d's contract; tests/test_winograd.c checks both). */
typedef struct ad_wino {
  int64_t n, c, h, w, o, oh, ow, pt, pl;
  int64_t th, tw, t1, hp, wp, cp, op; /* tiles; padded image; channels rounded to 16 */
  int64_t nb, nblocks;                /* images per block, blocks */
  int64_t p_floats, v_floats, m_floats, q_floats, scratch_floats;
  int64_t u_floats, ut_floats; /* U [36, c, op] (and dU), its transpose [36, o, cp] */
  bool flip; /* U of the kernels flipped, channels swapped; no UT (ad_wino_init_transposed) */
} ad_wino;
void ad_wino_init(ad_wino *p, int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t oh,
                  int64_t ow, int64_t pt, int64_t pl);
/* The same arguments (conv2d's geometry) for its input gradient,
 * conv_transpose2d, where dx [n, c, h, w] needs no more 4x4 tiles than dy
 * [n, o, oh, ow] (false, p untouched, otherwise): p is then the geometry
 * of the convolution of dy, padded by 2 - pt and 2 - pl, with the kernels
 * w [o, c, 3, 3] flipped and their channels swapped, into dx; run it with
 * ad_wino_weights and ad_wino_conv_block (x = dy, y = dx). It rounds as
 * conv2d does; ad_wino_convt_block, the adjoint, up to 10x worse for data
 * of one sign (winograd.c). */
bool ad_wino_init_transposed(ad_wino *p, int64_t n, int64_t c, int64_t h, int64_t w, int64_t o,
                             int64_t oh, int64_t ow, int64_t pt, int64_t pl);
/* The number of blocks of the kernel transforms below: 16 input x 16
 * output channels each (ceil(c / 16) ceil(o / 16)); blocks write disjoint
 * cache lines. */
int64_t ad_wino_kblocks(const ad_wino *p);
/* u (u_floats + ut_floats) = the kernels w [o, c, 3, 3] transformed,
 * U [36, c, op] then its transpose [36, o, cp], pad lanes zero, for the
 * channels of blocks [b0, b1) (p->flip: w [c, o, 3, 3] flipped, as
 * conv_transpose2d gets it, and no transpose). */
void ad_wino_weights(const ad_wino *p, const float *w, float *u, int64_t b0, int64_t b1);
/* Block blk of conv2d(x, w) (+ bias, may be NULL) into y: whole tensors. */
void ad_wino_conv_block(const ad_wino *p, int64_t blk, const float *u, const float *x,
                        const float *bias, float *y, float *scratch);
/* Block blk of conv_transpose2d(dy, w) (+ bias) into dx, shaped like x, by
 * the adjoint of conv2d's transforms (p from ad_wino_init). */
void ad_wino_convt_block(const ad_wino *p, int64_t blk, const float *u, const float *dy,
                         const float *bias, float *dx, float *scratch);
/* du (u_floats, the weight gradient in the transformed domain) = (first)
 * or += block blk's share. */
void ad_wino_weight_block(const ad_wino *p, int64_t blk, const float *x, const float *dy,
                          bool first, float *du, float *scratch);
/* Tests: on, the generic transforms and ad_gemm even where AVX-512 runs. */
void ad_wino_set_generic(bool on);

/* y[k ys + a] = x[a xs + k] for k < nq, a < nl (dt float32 or float64): a
 * transposed copy (transpose.c), blocks of 8 x 8 (float32) or 4 x 4
 * (float64) through registers where the CPU has AVX2, the margins element
 * by element. Returns false, copying nothing, where it has not, for
 * another dtype, or while ad_transpose_set_generic is on: the caller
 * copies. */
bool ad_transpose_blocks(ad_dtype dt, const void *x, int64_t xs, void *y, int64_t ys, int64_t nq,
                         int64_t nl);
/* Tests: on, ad_transpose_blocks declines (the callers' loops run). */
void ad_transpose_set_generic(bool on);
/* du[i] += the other nparts - 1 partial sums (u_floats apart), in order,
 * for i in [i0, i1). */
void ad_wino_du_sum(const ad_wino *p, float *du, int64_t nparts, int64_t i0, int64_t i1);
/* dw [o, c, 3, 3] from the summed du, for the channels of blocks [b0, b1)
 * (ad_wino_kblocks). */
void ad_wino_weight_grad(const ad_wino *p, const float *du, float *dw, int64_t b0, int64_t b1);

/* The convolutions' Winograd path (defined in op_conv.c), process-wide, for tests and
 * benchmarks: 0 (the default) where it pays (f32 3x3, stride 1, dilation 1,
 * one group, at least 16 channels on each side and 4x4 outputs), 1 wherever
 * the shape allows it (any channel count and size), -1 never. Returns the
 * previous mode. */
int ad_conv_winograd_mode(int mode);

/* layer_norm's backward dx over `blocks` blocks of 16 rows of exactly 16
 * float32 elements (x, g = dy and dx contiguous rows; w the weight, NULL
 * for none; eps the op's), with the bits of op_norm.c's generic rows
 * (norm16.c). Returns false, having done nothing, where the CPU has no
 * AVX-512F or the build no x86 intrinsics. */
bool ad_ln16_backward(const float *x, const float *g, const float *w, float *dx, double eps,
                      int64_t blocks);

#endif
