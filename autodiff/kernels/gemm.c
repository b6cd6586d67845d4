/* gemm.c: C = alpha op(A) op(B) + beta C, row-major, through BLAS when the
 * build has it, else a built-in blocked kernel.
 *
 * The built-in GEMM (after Goto and van de Geijn, "Anatomy of
 * high-performance matrix multiplication", 2008; written from scratch here):
 *
 *   for jc over n in blocks of NC                 C panel of NC columns
 *     for pc over k in blocks of KC (balanced)    rank-KC update
 *       pack op(B)[pc:pc+kc, jc:jc+nc] into NR-wide micro-panels (or not)
 *       for ic over m in blocks of MC             A block stays in L2
 *         for jr over nc in steps of NR           B micro-panel stays in L1
 *           for ir over mc in steps of MR
 *             micro-kernel: MR x NR tile of C += A[ir, pc:pc+kc] * Bpanel
 *
 * The micro-kernel keeps the MR x NR tile in registers (MR rows of two
 * vectors, NR = 2 vector lengths) and per step of k broadcasts MR elements
 * of A and loads two vectors of B; edge rows get kernels of fewer rows,
 * edge columns a zero-padded panel, of which a panel of at most one
 * vector's width (a classifier's ten outputs) runs on a tile of one vector
 * per row (S_nbody) rather than spend most of the lanes on padding. MR is 6
 * with 16 vector registers (AVX2, SSE) and 8 with AVX-512's 32: batches are
 * mostly multiples of 8 (16, 32, 64, 256 rows fill whole 8-row tiles, where
 * 6 rows left tails of 4 or 2 rows), and 16 multiply-adds share 10 loads
 * instead of 12 sharing 8. Every element is the same sum in the same order
 * whatever the tile, so neither the tile's size (nor its width) nor where a
 * row falls in it, nor whether A or B is packed, changes a result bit, for
 * the engine's calls (alpha 1, beta 0 or 1). With another alpha and beta, a
 * compiler may contract alpha x + beta c into one FMA for some rows of a
 * tile and not others (clang does): then a row's bits can depend on its
 * place in the tile. B is packed so that each step of k reads NR contiguous
 * values, whatever the transpose flag (B^T is transposed in registers, VL x
 * VL at a time); B not transposed has them contiguous already, and a
 * product with few row tiles reads its whole panels in place (S_gemm's
 * rule). A is mostly read in place: a broadcast is a scalar load, so any
 * layout works through two strides, and small products save the packing. A
 * feeding many column panels is packed when that measured faster (see
 * S_gemm's rule): A^T, whose rows in place are far apart, and A in f64.
 *
 * The kernel is plain C with GCC vector extensions (and the FMA intrinsic for
 * its update where the instruction set has one). It is instantiated per
 * instruction set (AVX-512, AVX2+FMA, baseline) with target attributes, and
 * the best one the CPU has is picked at run time, so the default build needs
 * no -march flag. The packing buffer is per thread and grows once. If it
 * cannot be allocated, the unblocked reference loop runs instead.
 *
 * Measured on the 2-core AMD EPYC (AVX2, no AVX-512) this was written on,
 * one thread, f32: at the seed model's shapes 1.1-2.2x the GFLOPS of
 * OpenBLAS 0.3.21, at the wide model's 0.95-1.3x (bench/ops). So with BLAS,
 * small products stay here too (see GEMM_SMALL_MACS). */
#include "kernels.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#ifdef AD_HAVE_BLAS
#include <dlfcn.h>
#include <stdatomic.h>
#endif

/* ISO C modes turn off FMA contraction; the kernels need it. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#elif defined(__clang__)
#pragma clang fp contract(fast)
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define GEMM_X86 1
#endif
#if defined(__GNUC__)
#define GEMM_VEC 1
#endif
/* acc + x b (x a scalar, acc and b vectors of type V), the micro-kernels'
 * one update. Where the instruction set has FMA it is written as the FMA
 * intrinsic, so every tile rounds each update once whatever the compiler
 * decides about contraction (clang under the sanitizers and GCC can differ
 * on that, and two tiles that must give the same bits cannot). The portable
 * kernel leaves it to the compiler (fp-contract above; on a target with FMA
 * instructions it may fuse): it has only the one tile shape, so no second
 * tile can round otherwise. */
#define GEMM_FMA_PLAIN(V, acc, x, b) ((acc) + (x) * (b))
/* The same update for vectors a and b (S_gemv), and for scalars: the _V
 * and _S forms of each (named from the kernel's FMA by pasting). */
#define GEMM_FMA_PLAIN_V(V, acc, a, b) ((acc) + (a) * (b))
#define GEMM_FMA_PLAIN_S(acc, a, b)    ((acc) + (a) * (b))
#ifdef GEMM_X86
#include <immintrin.h>
#define GEMM_FMA_256_PS_V(V, acc, a, b)                                                            \
  ((V)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(acc)))
#define GEMM_FMA_256_PD_V(V, acc, a, b)                                                            \
  ((V)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(acc)))
#define GEMM_FMA_512_PS_V(V, acc, a, b)                                                            \
  ((V)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(acc)))
#define GEMM_FMA_512_PD_V(V, acc, a, b)                                                            \
  ((V)_mm512_fmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(acc)))
#define GEMM_FMA_256_PS_S(acc, a, b) __builtin_fmaf((a), (b), (acc))
#define GEMM_FMA_512_PS_S(acc, a, b) __builtin_fmaf((a), (b), (acc))
#define GEMM_FMA_256_PD_S(acc, a, b) __builtin_fma((a), (b), (acc))
#define GEMM_FMA_512_PD_S(acc, a, b) __builtin_fma((a), (b), (acc))
#define GEMM_FMA_256_PS(V, acc, x, b)                                                              \
  ((V)_mm256_fmadd_ps(_mm256_set1_ps(x), (__m256)(b), (__m256)(acc)))
#define GEMM_FMA_256_PD(V, acc, x, b)                                                              \
  ((V)_mm256_fmadd_pd(_mm256_set1_pd(x), (__m256d)(b), (__m256d)(acc)))
#define GEMM_FMA_512_PS(V, acc, x, b)                                                              \
  ((V)_mm512_fmadd_ps(_mm512_set1_ps(x), (__m512)(b), (__m512)(acc)))
#define GEMM_FMA_512_PD(V, acc, x, b)                                                              \
  ((V)_mm512_fmadd_pd(_mm512_set1_pd(x), (__m512d)(b), (__m512d)(acc)))
#endif
/* The micro-kernels' loops fully unrolled. Not in clang's sanitizer builds:
 * unrolled and then instrumented access by access, the six kernels took
 * most of those builds' compile time (docs/testing.md); unrolling changes
 * no operation or its order, so the bits are the same. */
#if defined(__clang__) && defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define GEMM_NO_UNROLL 1
#endif
#endif
#if defined(__clang__) && !defined(GEMM_NO_UNROLL)
#define GEMM_UNROLL _Pragma("unroll")
#elif defined(__clang__)
#define GEMM_UNROLL
#elif defined(__GNUC__)
#define GEMM_UNROLL _Pragma("GCC unroll 16")
#else
#define GEMM_UNROLL
#endif
/* Lane shuffles for the in-register transpose: zip of the low (high) halves. */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define GEMM_SHUFFLE  1
#define GEMM_ZIPLO_2  0, 2
#define GEMM_ZIPHI_2  1, 3
#define GEMM_ZIPLO_4  0, 4, 1, 5
#define GEMM_ZIPHI_4  2, 6, 3, 7
#define GEMM_ZIPLO_8  0, 8, 1, 9, 2, 10, 3, 11
#define GEMM_ZIPHI_8  4, 12, 5, 13, 6, 14, 7, 15
#define GEMM_ZIPLO_16 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define GEMM_ZIPHI_16 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
/* r[0..VL) (VL vectors of VL lanes, q a scratch of as many) transposed in
 * registers: log2(VL) rounds of zips of the low and high halves. */
#define GEMM_ZIPS(VL)                                                                              \
  GEMM_UNROLL for (int round = 1; round < (VL); round *= 2) {                                      \
    GEMM_UNROLL for (int i = 0; i < (VL) / 2; i++) {                                               \
      q[2 * i] = __builtin_shufflevector(r[i], r[i + (VL) / 2], GEMM_ZIPLO_##VL);                  \
      q[2 * i + 1] = __builtin_shufflevector(r[i], r[i + (VL) / 2], GEMM_ZIPHI_##VL);              \
    }                                                                                              \
    GEMM_UNROLL for (int i = 0; i < (VL); i++) r[i] = q[i];                                        \
  }
/* Inside S_pack_b: the first HALVES * VL rows of B^T at s, columns p.. (whole blocks of VL), as
 * VL x VL blocks transposed by log2(VL) rounds of zips into d; p ends after the last block. */
#define GEMM_TPOSE(VL, HALVES)                                                                     \
  for (; p + (VL) <= kc; p += (VL))                                                                \
    for (int h = 0; h < (HALVES); h++) {                                                           \
      V r[VL], q[VL];                                                                              \
      GEMM_UNROLL for (int i = 0; i < (VL); i++) {                                                 \
        r[i] = *(const V *)(s + (h * (VL) + i) * ldb + p);                                         \
      }                                                                                            \
      GEMM_ZIPS(VL)                                                                                \
      GEMM_UNROLL for (int i = 0; i < (VL); i++) { *(V *)(d + (p + i) * NR + h * (VL)) = r[i]; }   \
    }
/* Inside S_xpose: y[i, j] = t[j, i] for a VL x VL tile, rows ib.. of y and
 * columns jb.. (t has m columns, y has n): VL rows of t loaded as vectors,
 * transposed by the zips above, stored as VL rows of y. */
#define GEMM_XPOSE(VL)                                                                             \
  {                                                                                                \
    V r[VL], q[VL];                                                                                \
    GEMM_UNROLL for (int i = 0; i < (VL); i++) r[i] = *(const V *)(t + (jb + i) * m + ib);         \
    GEMM_ZIPS(VL)                                                                                  \
    GEMM_UNROLL for (int i = 0; i < (VL); i++) * (V *)(y + (ib + i) * n + jb) = r[i];              \
  }
#define GEMM_SHUFFLE_ON 1
#else
#define GEMM_TPOSE(VL, HALVES)
#define GEMM_XPOSE(VL)                                                                             \
  {}
#define GEMM_SHUFFLE_ON 0
#endif

/* Thread exit frees the packing buffer when C11 threads are in libc. */
#if !defined(__STDC_NO_THREADS__) &&                                                               \
    (!defined(__GLIBC__) || __GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
#include <stdatomic.h>
#include <threads.h>
#define GEMM_TSS 1
#endif

/* ------------------------------------------------------------ reference */

/* The unblocked reference: C is scaled by beta, then for each row of C the
 * products are accumulated as axpy's over rows of op(B) (contiguous when B
 * is not transposed) or as dot products (B transposed), blocked over k so
 * the touched panel of B stays in cache. Used when no buffer can be had.
 * Each block's products are summed from 0 (the axpy's in a tile of RN
 * columns on the stack) and the block's sum added to C, as the kernels
 * sum a k-block in registers: accumulating the products into C itself
 * made a deep product's rounding error grow with k, not with k / KB + KB
 * (f32, k = 1e5: 10-20x the kernels' error). */
#define GEMM_REF(T, NAME)                                                                          \
  static void NAME(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T *a,         \
                   int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc) {              \
    for (int64_t i = 0; i < m; i++)                                                                \
      for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? (T)0 : beta * c[i * ldc + j];   \
    if (alpha == 0) return;                                                                        \
    const int64_t KB = 256;                                                                        \
    enum { RN = 64 };                                                                              \
    for (int64_t p0 = 0; p0 < k; p0 += KB) {                                                       \
      int64_t p1 = p0 + KB < k ? p0 + KB : k;                                                      \
      for (int64_t i = 0; i < m; i++) {                                                            \
        T *ci = c + i * ldc;                                                                       \
        if (!tb) {                                                                                 \
          for (int64_t j0 = 0; j0 < n; j0 += RN) {                                                 \
            int64_t nj = n - j0 < RN ? n - j0 : RN;                                                \
            T s[RN] = {0};                                                                         \
            for (int64_t p = p0; p < p1; p++) {                                                    \
              T aip = ta ? a[p * lda + i] : a[i * lda + p];                                        \
              const T *bp = b + p * ldb + j0;                                                      \
              for (int64_t j = 0; j < nj; j++) s[j] += aip * bp[j];                                \
            }                                                                                      \
            for (int64_t j = 0; j < nj; j++) ci[j0 + j] += alpha * s[j];                           \
          }                                                                                        \
        } else {                                                                                   \
          for (int64_t j = 0; j < n; j++) {                                                        \
            const T *bj = b + j * ldb;                                                             \
            T s = 0;                                                                               \
            if (!ta)                                                                               \
              for (int64_t p = p0; p < p1; p++) s += a[i * lda + p] * bj[p];                       \
            else                                                                                   \
              for (int64_t p = p0; p < p1; p++) s += a[p * lda + i] * bj[p];                       \
            ci[j] += alpha * s;                                                                    \
          }                                                                                        \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
  }

GEMM_REF(float, gemm_ref_f32)
GEMM_REF(double, gemm_ref_f64)

/* C = beta C (k == 0 or alpha == 0): C is not read when beta is 0. */
#define GEMM_SCALE(T, NAME)                                                                        \
  static void NAME(int64_t m, int64_t n, T beta, T *c, int64_t ldc) {                              \
    for (int64_t i = 0; i < m; i++)                                                                \
      for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? (T)0 : beta * c[i * ldc + j];   \
  }

GEMM_SCALE(float, gemm_scale_f32)
GEMM_SCALE(double, gemm_scale_f64)

/* Whether a kernel packs A, and op(B) where it may read B in place: by its
 * own rule, always, never (for tests); flags beside them, for tests:
 * GEMM_WIDE_ONLY keeps the 2VL-wide tile also for panels of VL columns or
 * fewer, which the narrow tile otherwise takes (S_nbody); GEMM_STRIPS runs
 * every block one row tile at a time across the panels, which S_gemm does
 * by its own rule only for shallow blocks of C with rows 4 KiB apart. */
enum { GEMM_PACK_AUTO, GEMM_PACK_ALWAYS, GEMM_PACK_NEVER, GEMM_WIDE_ONLY = 4, GEMM_STRIPS = 8 };

/* ------------------------------------------------------- packing buffer */

#ifdef GEMM_VEC
typedef struct gemm_buf {
  void *p;
  size_t cap;
} gemm_buf;

static _Thread_local gemm_buf tl_buf;

#ifdef GEMM_TSS
/* buf_key_ok is atomic although call_once already orders it: glibc's
 * call_once is invisible to ThreadSanitizer, which would report a race. */
static tss_t buf_key;
static atomic_bool buf_key_ok;
static once_flag buf_once = ONCE_FLAG_INIT;
static void buf_release(void *p) { free(p); }
static void buf_key_init(void) {
  atomic_store_explicit(&buf_key_ok, tss_create(&buf_key, buf_release) == thrd_success,
                        memory_order_release);
}
#endif

/* This thread's scratch of at least bytes, 64-byte aligned; NULL on OOM
 * (the old buffer, if any, is kept). */
static void *gemm_scratch(size_t bytes) {
  if (bytes <= tl_buf.cap) return tl_buf.p;
  size_t cap = (bytes + 4095) & ~(size_t)4095;
  void *p = aligned_alloc(64, cap);
  if (!p) return NULL;
  free(tl_buf.p);
  tl_buf.p = p;
  tl_buf.cap = cap;
#ifdef GEMM_TSS
  call_once(&buf_once, buf_key_init);
  if (atomic_load_explicit(&buf_key_ok, memory_order_acquire)) tss_set(buf_key, p);
#endif
  return p;
}

/* ------------------------------------------------------- blocked kernel */

/* The cases of S_nrows: the narrow tile for each row count (1..8). */
#define GEMM_NCASE(S, R)                                                                           \
  case R:                                                                                          \
    S##_nbody(R, kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                \
    break;
#define GEMM_NCASES(S)                                                                             \
  GEMM_NCASE(S, 8)                                                                                 \
  GEMM_NCASE(S, 7)                                                                                 \
  GEMM_NCASE(S, 6)                                                                                 \
  GEMM_NCASE(S, 5)                                                                                 \
  GEMM_NCASE(S, 4)                                                                                 \
  GEMM_NCASE(S, 3)                                                                                 \
  GEMM_NCASE(S, 2)                                                                                 \
  GEMM_NCASE(S, 1)

/* Micro-panels per unit of a packing that threads share (S_pack_part). */
#define GEMM_UNIT_PANELS 4

/* Inside S_gemm: the row tiles of one column panel, by FULL (a tile of MR
 * rows) and ROWS (a tile of the rows given first): whole tiles, then the
 * tail, in two tiles when it is longer than MR (see S_gemm). */
#define GEMM_ROW_TILES(MR, FULL, ROWS)                                                             \
  for (int64_t ir = 0; ir < full; ir++, ai += pstep, ci += (MR)*ldc)                               \
    FULL(kc, ai, ars, acs, bpanel, bcs, ci, ldc, nr, alpha, be);                                   \
  if (tail > (MR)) {                                                                               \
    int t1 = (int)(tail + 1) / 2;                                                                  \
    ROWS(t1, kc, ai, ars, acs, bpanel, bcs, ci, ldc, nr, alpha, be);                               \
    ai += t1 * ars, ci += t1 * ldc, tail -= t1;                                                    \
  }                                                                                                \
  ROWS((int)tail, kc, ai, ars, acs, bpanel, bcs, ci, ldc, nr, alpha, be);

/* S_gemv's chains per row (a multiple of every kernel's VL, so that each
 * kernel with FMA gives the same bits) and the products per block, after
 * which a row's chains are added up and their sum added to the row's. */
#define GEMV_LANES 32
#define GEMV_BLOCK 4096

/* One instruction set S for element type T: VL lanes per vector, tiles of
 * MR x 2VL (MR 6, or 8 where there are 32 vector registers: the tile's 2MR
 * accumulators, two vectors of B and a broadcast must fit), blocks KC (k),
 * MC (rows, a multiple of MR), NC (columns); FMA the update (GEMM_FMA_*),
 * NARROW whether panels of VL columns or fewer take the one-vector tile
 * (S_nbody: only where FMA is an intrinsic, so both tiles round alike).
 * Defines
 *   static int S_gemm(pack, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
 * returning 0 when the packing buffer cannot be had (nothing written), and
 * the packing of op(B) once for many products (S_packed_size, S_pack_units,
 * S_pack_part). */
#define GEMM_KERNEL(S, ATTR, T, VL, KC, MC, NC, MR, FMA, NARROW)                                   \
  typedef T S##_v __attribute__((vector_size((VL) * sizeof(T)), aligned(sizeof(T))));              \
                                                                                                   \
  /* tile[i][j] (i < mr, j < nr) into C: C = alpha tile + beta C */                                \
  static inline __attribute__((always_inline))                                                     \
  ATTR void S##_store(const T *tile, int mr, int nr, T *c, int64_t ldc, T alpha, T beta) {         \
    for (int i = 0; i < mr; i++) {                                                                 \
      T *ci = c + i * ldc;                                                                         \
      const T *ti = tile + i * 2 * (VL);                                                           \
      if (beta == 0)                                                                               \
        for (int j = 0; j < nr; j++) ci[j] = alpha * ti[j];                                        \
      else                                                                                         \
        for (int j = 0; j < nr; j++) ci[j] = alpha * ti[j] + beta * ci[j];                         \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* MR_ x 2VL tile: C[i][j] = alpha sum_p A[i*ars + p*acs] B[p*bcs + j] + beta C (bcs: 2VL for a  \
   * packed panel, B's row step in place); only the first mr (== MR_) rows and nr columns are      \
   * written. */                                                                                   \
  static inline __attribute__((always_inline))                                                     \
  ATTR void S##_body(const int MR_, int64_t kc, const T *a, int64_t ars, int64_t acs, const T *b,  \
                     int64_t bcs, T *c, int64_t ldc, int nr, T alpha, T beta) {                    \
    typedef S##_v V;                                                                               \
    V z = {0}, c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z,    \
      c41 = z, c50 = z, c51 = z, c60 = z, c61 = z, c70 = z, c71 = z;                               \
    for (int64_t p = 0; p < kc; p++) {                                                             \
      V b0 = *(const V *)b, b1 = *(const V *)(b + (VL));                                           \
      T x = a[0];                                                                                  \
      c00 = FMA(V, c00, x, b0);                                                                    \
      c01 = FMA(V, c01, x, b1);                                                                    \
      if (MR_ > 1) {                                                                               \
        x = a[ars];                                                                                \
        c10 = FMA(V, c10, x, b0);                                                                  \
        c11 = FMA(V, c11, x, b1);                                                                  \
      }                                                                                            \
      if (MR_ > 2) {                                                                               \
        x = a[2 * ars];                                                                            \
        c20 = FMA(V, c20, x, b0);                                                                  \
        c21 = FMA(V, c21, x, b1);                                                                  \
      }                                                                                            \
      if (MR_ > 3) {                                                                               \
        x = a[3 * ars];                                                                            \
        c30 = FMA(V, c30, x, b0);                                                                  \
        c31 = FMA(V, c31, x, b1);                                                                  \
      }                                                                                            \
      if (MR_ > 4) {                                                                               \
        x = a[4 * ars];                                                                            \
        c40 = FMA(V, c40, x, b0);                                                                  \
        c41 = FMA(V, c41, x, b1);                                                                  \
      }                                                                                            \
      if (MR_ > 5) {                                                                               \
        x = a[5 * ars];                                                                            \
        c50 = FMA(V, c50, x, b0);                                                                  \
        c51 = FMA(V, c51, x, b1);                                                                  \
      }                                                                                            \
      if (MR_ > 6) {                                                                               \
        x = a[6 * ars];                                                                            \
        c60 = FMA(V, c60, x, b0);                                                                  \
        c61 = FMA(V, c61, x, b1);                                                                  \
      }                                                                                            \
      if (MR_ > 7) {                                                                               \
        x = a[7 * ars];                                                                            \
        c70 = FMA(V, c70, x, b0);                                                                  \
        c71 = FMA(V, c71, x, b1);                                                                  \
      }                                                                                            \
      a += acs;                                                                                    \
      b += bcs;                                                                                    \
    }                                                                                              \
    if (nr == 2 * (VL)) {                                                                          \
      V *r;                                                                                        \
      if (beta == 0) {                                                                             \
        r = (V *)c, r[0] = alpha * c00, r[1] = alpha * c01;                                        \
        if (MR_ > 1) r = (V *)(c + ldc), r[0] = alpha * c10, r[1] = alpha * c11;                   \
        if (MR_ > 2) r = (V *)(c + 2 * ldc), r[0] = alpha * c20, r[1] = alpha * c21;               \
        if (MR_ > 3) r = (V *)(c + 3 * ldc), r[0] = alpha * c30, r[1] = alpha * c31;               \
        if (MR_ > 4) r = (V *)(c + 4 * ldc), r[0] = alpha * c40, r[1] = alpha * c41;               \
        if (MR_ > 5) r = (V *)(c + 5 * ldc), r[0] = alpha * c50, r[1] = alpha * c51;               \
        if (MR_ > 6) r = (V *)(c + 6 * ldc), r[0] = alpha * c60, r[1] = alpha * c61;               \
        if (MR_ > 7) r = (V *)(c + 7 * ldc), r[0] = alpha * c70, r[1] = alpha * c71;               \
      } else {                                                                                     \
        r = (V *)c, r[0] = alpha * c00 + beta * r[0], r[1] = alpha * c01 + beta * r[1];            \
        if (MR_ > 1)                                                                               \
          r = (V *)(c + ldc), r[0] = alpha * c10 + beta * r[0], r[1] = alpha * c11 + beta * r[1];  \
        if (MR_ > 2)                                                                               \
          r = (V *)(c + 2 * ldc), r[0] = alpha * c20 + beta * r[0],                                \
          r[1] = alpha * c21 + beta * r[1];                                                        \
        if (MR_ > 3)                                                                               \
          r = (V *)(c + 3 * ldc), r[0] = alpha * c30 + beta * r[0],                                \
          r[1] = alpha * c31 + beta * r[1];                                                        \
        if (MR_ > 4)                                                                               \
          r = (V *)(c + 4 * ldc), r[0] = alpha * c40 + beta * r[0],                                \
          r[1] = alpha * c41 + beta * r[1];                                                        \
        if (MR_ > 5)                                                                               \
          r = (V *)(c + 5 * ldc), r[0] = alpha * c50 + beta * r[0],                                \
          r[1] = alpha * c51 + beta * r[1];                                                        \
        if (MR_ > 6)                                                                               \
          r = (V *)(c + 6 * ldc), r[0] = alpha * c60 + beta * r[0],                                \
          r[1] = alpha * c61 + beta * r[1];                                                        \
        if (MR_ > 7)                                                                               \
          r = (V *)(c + 7 * ldc), r[0] = alpha * c70 + beta * r[0],                                \
          r[1] = alpha * c71 + beta * r[1];                                                        \
      }                                                                                            \
    } else {                                                                                       \
      V tile[16];                                                                                  \
      tile[0] = c00, tile[1] = c01, tile[2] = c10, tile[3] = c11, tile[4] = c20, tile[5] = c21;    \
      tile[6] = c30, tile[7] = c31, tile[8] = c40, tile[9] = c41, tile[10] = c50, tile[11] = c51;  \
      tile[12] = c60, tile[13] = c61, tile[14] = c70, tile[15] = c71;                              \
      S##_store((const T *)tile, MR_, nr, c, ldc, alpha, beta);                                    \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* y = alpha A x + beta y for R rows of A (not transposed, rows lda apart) from row i and a      \
   * contiguous x (S##_gemv) */                                                                    \
  static inline __attribute__((always_inline)) ATTR void S##_gemv_rows(                            \
      const int R, int64_t k, T alpha, const T *a, int64_t lda, const T *x, T beta, T *y) {        \
    typedef S##_v V;                                                                               \
    enum { NV = GEMV_LANES / (VL) };                                                               \
    T tot[4] = {0}, lane[4][GEMV_LANES];                                                           \
    for (int64_t p0 = 0; p0 < k; p0 += GEMV_BLOCK) {                                               \
      int64_t p1 = k - p0 < GEMV_BLOCK ? k : p0 + GEMV_BLOCK;                                      \
      int64_t pv = p0 + (p1 - p0) / GEMV_LANES * GEMV_LANES, p = p0;                               \
      V z = {0}, acc[4][NV];                                                                       \
      GEMM_UNROLL for (int r = 0; r < R; r++) GEMM_UNROLL for (int v = 0; v < NV; v++) acc[r][v] = \
          z;                                                                                       \
      for (; p < pv; p += GEMV_LANES) {                                                            \
        V xv[NV];                                                                                  \
        GEMM_UNROLL for (int v = 0; v < NV; v++) xv[v] = *(const V *)(x + p + v * (VL));           \
        GEMM_UNROLL for (int r = 0; r < R; r++) GEMM_UNROLL for (int v = 0; v < NV; v++)           \
            acc[r][v] = FMA##_V(V, acc[r][v], *(const V *)(a + r * lda + p + v * (VL)), xv[v]);    \
      }                                                                                            \
      for (int r = 0; r < R; r++) {                                                                \
        T *s = lane[r];                                                                            \
        for (int v = 0; v < NV; v++) memcpy(s + v * (VL), &acc[r][v], sizeof(V));                  \
        for (int64_t q = p; q < p1; q++) s[q - p] = FMA##_S(s[q - p], a[r * lda + q], x[q]);       \
        for (int w = GEMV_LANES / 2; w >= 1; w /= 2)                                               \
          for (int j = 0; j < w; j++) s[j] = s[j] + s[j + w];                                      \
        tot[r] = p0 == 0 ? s[0] : tot[r] + s[0];                                                   \
      }                                                                                            \
    }                                                                                              \
    for (int r = 0; r < R; r++) y[r] = beta == 0 ? alpha * tot[r] : alpha * tot[r] + beta * y[r];  \
  }                                                                                                \
  /* y = alpha A x + beta y, A m x k not transposed, x contiguous: a column product (n = 1). Each  \
   * row's products in GEMV_LANES chains, lane j taking the products p = j (mod GEMV_LANES) of a   \
   * block of GEMV_BLOCK in order (whole vectors of x side by side, the block's last p mod         \
   * GEMV_LANES one by one into their lanes); at the block's end the lanes are added pairwise (16  \
   * + 16, 8 + 8, ..., 1 + 1) and the sum added to the row's. Rows in groups that share x's loads. \
   * A row's sum depends on nothing else: the same bits for any split of the rows. */              \
  __attribute__((unused)) static ATTR void S##_gemv(int64_t m, int64_t k, T alpha, const T *a,     \
                                                    int64_t lda, const T *x, T beta, T *y) {       \
    enum { NV = GEMV_LANES / (VL), GR = NV <= 2 ? 4 : NV <= 4 ? 2 : 1 };                           \
    int64_t i = 0;                                                                                 \
    for (; i + GR <= m; i += GR) S##_gemv_rows(GR, k, alpha, a + i * lda, lda, x, beta, y + i);    \
    for (; i < m; i++) S##_gemv_rows(1, k, alpha, a + i * lda, lda, x, beta, y + i);               \
  }                                                                                                \
                                                                                                   \
  /* 1 x 8VL: one row of C across four whole panels (ps apart in b), where a 1 x 2VL tile would    \
   * wait on its two chains' FMA latency: the same products summed in the same order as S##_body   \
   * sums them, and stored as it stores a whole panel: the same bits. */                           \
  static inline __attribute__((always_inline))                                                     \
  ATTR void S##_row4(int64_t kc, const T *a, int64_t acs, const T *b, int64_t bcs, int64_t ps,     \
                     T *c, T alpha, T beta) {                                                      \
    typedef S##_v V;                                                                               \
    V z = {0}, acc[8] = {z, z, z, z, z, z, z, z};                                                  \
    for (int64_t p = 0; p < kc; p++) {                                                             \
      T x = a[0];                                                                                  \
      GEMM_UNROLL for (int q = 0; q < 4; q++) {                                                    \
        acc[2 * q] = FMA(V, acc[2 * q], x, *(const V *)(b + q * ps));                              \
        acc[2 * q + 1] = FMA(V, acc[2 * q + 1], x, *(const V *)(b + q * ps + (VL)));               \
      }                                                                                            \
      a += acs;                                                                                    \
      b += bcs;                                                                                    \
    }                                                                                              \
    V *r = (V *)c;                                                                                 \
    if (beta == 0)                                                                                 \
      GEMM_UNROLL for (int q = 0; q < 8; q++) r[q] = alpha * acc[q];                               \
    else                                                                                           \
      GEMM_UNROLL for (int q = 0; q < 8; q++) r[q] = alpha * acc[q] + beta * r[q];                 \
  }                                                                                                \
  __attribute__((unused)) static ATTR void S##_row4s(int64_t kc, const T *a, int64_t acs,          \
                                                     const T *b, int64_t bcs, int64_t ps, T *c,    \
                                                     T alpha, T beta) {                            \
    S##_row4(kc, a, acs, b, bcs, ps, c, alpha, beta);                                              \
  }                                                                                                \
                                                                                                   \
  /* 7 and 8 rows: only where MR is 8 */                                                           \
  __attribute__((unused)) static ATTR void S##_k8(int64_t kc, const T *a, int64_t ars,             \
                                                  int64_t acs, const T *b, int64_t bcs, T *c,      \
                                                  int64_t ldc, int nr, T alpha, T beta) {          \
    S##_body(8, kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                 \
  }                                                                                                \
  __attribute__((unused)) static ATTR void S##_k7(int64_t kc, const T *a, int64_t ars,             \
                                                  int64_t acs, const T *b, int64_t bcs, T *c,      \
                                                  int64_t ldc, int nr, T alpha, T beta) {          \
    S##_body(7, kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                 \
  }                                                                                                \
  static ATTR void S##_k6(int64_t kc, const T *a, int64_t ars, int64_t acs, const T *b,            \
                          int64_t bcs, T *c, int64_t ldc, int nr, T alpha, T beta) {               \
    S##_body(6, kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                 \
  }                                                                                                \
  static ATTR void S##_k5(int64_t kc, const T *a, int64_t ars, int64_t acs, const T *b,            \
                          int64_t bcs, T *c, int64_t ldc, int nr, T alpha, T beta) {               \
    S##_body(5, kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                 \
  }                                                                                                \
  static ATTR void S##_k4(int64_t kc, const T *a, int64_t ars, int64_t acs, const T *b,            \
                          int64_t bcs, T *c, int64_t ldc, int nr, T alpha, T beta) {               \
    S##_body(4, kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                 \
  }                                                                                                \
  static ATTR void S##_k3(int64_t kc, const T *a, int64_t ars, int64_t acs, const T *b,            \
                          int64_t bcs, T *c, int64_t ldc, int nr, T alpha, T beta) {               \
    S##_body(3, kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                 \
  }                                                                                                \
  static ATTR void S##_k2(int64_t kc, const T *a, int64_t ars, int64_t acs, const T *b,            \
                          int64_t bcs, T *c, int64_t ldc, int nr, T alpha, T beta) {               \
    S##_body(2, kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                 \
  }                                                                                                \
  static ATTR void S##_k1(int64_t kc, const T *a, int64_t ars, int64_t acs, const T *b,            \
                          int64_t bcs, T *c, int64_t ldc, int nr, T alpha, T beta) {               \
    S##_body(1, kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                 \
  }                                                                                                \
  /* the kernel for mr (0..MR) rows */                                                             \
  static inline ATTR void S##_krows(int mr, int64_t kc, const T *a, int64_t ars, int64_t acs,      \
                                    const T *b, int64_t bcs, T *c, int64_t ldc, int nr, T alpha,   \
                                    T beta) {                                                      \
    switch (mr) {                                                                                  \
    case 8:                                                                                        \
      S##_k8(kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                    \
      break;                                                                                       \
    case 7:                                                                                        \
      S##_k7(kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                    \
      break;                                                                                       \
    case 6:                                                                                        \
      S##_k6(kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                    \
      break;                                                                                       \
    case 5:                                                                                        \
      S##_k5(kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                    \
      break;                                                                                       \
    case 4:                                                                                        \
      S##_k4(kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                    \
      break;                                                                                       \
    case 3:                                                                                        \
      S##_k3(kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                    \
      break;                                                                                       \
    case 2:                                                                                        \
      S##_k2(kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                    \
      break;                                                                                       \
    case 1:                                                                                        \
      S##_k1(kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                    \
      break;                                                                                       \
    default:                                                                                       \
      break;                                                                                       \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* MR_ x VL tile, for a panel of nr <= VL columns (a narrow product, or the last panel of one    \
   * whose width leaves so few): S##_body with one vector per row, so half the multiply-adds of a  \
   * 2VL-wide tile are not spent on padding. The same products summed in the same order and        \
   * stored by S##_store, as S##_body stores a partial panel: the same bits. */                    \
  static inline __attribute__((always_inline))                                                     \
  ATTR void S##_nbody(const int MR_, int64_t kc, const T *a, int64_t ars, int64_t acs, const T *b, \
                      int64_t bcs, T *c, int64_t ldc, int nr, T alpha, T beta) {                   \
    typedef S##_v V;                                                                               \
    V z = {0}, acc[8] = {z, z, z, z, z, z, z, z}, tile[16];                                        \
    for (int64_t p = 0; p < kc; p++) {                                                             \
      V b0 = *(const V *)b;                                                                        \
      GEMM_UNROLL for (int i = 0; i < MR_; i++) acc[i] = FMA(V, acc[i], a[i * ars], b0);           \
      a += acs;                                                                                    \
      b += bcs;                                                                                    \
    }                                                                                              \
    GEMM_UNROLL for (int i = 0; i < MR_; i++) tile[2 * i] = acc[i];                                \
    S##_store((const T *)tile, MR_, nr, c, ldc, alpha, beta);                                      \
  }                                                                                                \
  /* the narrow tile for mr (0..MR) rows */                                                        \
  __attribute__((unused)) static ATTR void S##_nrows(int mr, int64_t kc, const T *a, int64_t ars,  \
                                                     int64_t acs, const T *b, int64_t bcs, T *c,   \
                                                     int64_t ldc, int nr, T alpha, T beta) {       \
    switch (mr) {                                                                                  \
      GEMM_NCASES(S)                                                                               \
    default:                                                                                       \
      break;                                                                                       \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* whole tiles of MR rows, of either width */                                                    \
  static inline __attribute__((always_inline))                                                     \
  ATTR void S##_kfull(int64_t kc, const T *a, int64_t ars, int64_t acs, const T *b, int64_t bcs,   \
                      T *c, int64_t ldc, int nr, T alpha, T beta) {                                \
    if ((MR) == 8)                                                                                 \
      S##_k8(kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                    \
    else                                                                                           \
      S##_k6(kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                                    \
  }                                                                                                \
  static inline __attribute__((always_inline))                                                     \
  ATTR void S##_nfull(int64_t kc, const T *a, int64_t ars, int64_t acs, const T *b, int64_t bcs,   \
                      T *c, int64_t ldc, int nr, T alpha, T beta) {                                \
    S##_nrows((MR), kc, a, ars, acs, b, bcs, c, ldc, nr, alpha, beta);                             \
  }                                                                                                \
                                                                                                   \
  /* op(B)[0:kc, 0:nc] (b points at its first element) into micro-panels of 2VL columns, each kc   \
   * rows of 2VL contiguous values, the last one zero-padded. B is read row by row (B) or in VL x  \
   * VL blocks transposed in registers (B^T). */                                                   \
  static ATTR void S##_pack_b(bool tb, int64_t kc, int64_t nc, const T *b, int64_t ldb, T *dst) {  \
    typedef S##_v V;                                                                               \
    const int NR = 2 * (VL);                                                                       \
    int64_t nfull = nc / NR * NR;                                                                  \
    int nr = (int)(nc - nfull);                                                                    \
    if (!tb) {                                                                                     \
      for (int64_t p = 0; p < kc; p++) {                                                           \
        const T *s = b + p * ldb;                                                                  \
        T *d = dst + p * NR;                                                                       \
        for (int64_t j0 = 0; j0 < nfull; j0 += NR, d += kc * NR) {                                 \
          ((V *)d)[0] = ((const V *)(s + j0))[0];                                                  \
          ((V *)d)[1] = ((const V *)(s + j0))[1];                                                  \
        }                                                                                          \
        if (nr) { /* zeros, then a whole vector if there is one, then single values */             \
          V z = {0};                                                                               \
          int j = 0;                                                                               \
          ((V *)d)[0] = z, ((V *)d)[1] = z;                                                        \
          if (nr >= (VL)) ((V *)d)[0] = *(const V *)(s + nfull), j = (VL);                         \
          for (; j < nr; j++) d[j] = s[nfull + j];                                                 \
        }                                                                                          \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    for (int64_t j0 = 0; j0 < nfull; j0 += NR) {                                                   \
      T *d = dst + j0 * kc;                                                                        \
      const T *s = b + j0 * ldb;                                                                   \
      int64_t p = 0;                                                                               \
      GEMM_TPOSE(VL, 2)                                                                            \
      for (; p < kc; p++)                                                                          \
        for (int j = 0; j < NR; j++) d[p * NR + j] = s[j * ldb + p];                               \
    }                                                                                              \
    if (nr) { /* the first VL rows by blocks if there are that many, the rest one by one */        \
      T *d = dst + nfull * kc;                                                                     \
      const T *s = b + nfull * ldb;                                                                \
      int64_t p = 0;                                                                               \
      if (nr >= (VL)) {                                                                            \
        GEMM_TPOSE(VL, 1)                                                                          \
      }                                                                                            \
      V z = {0};                                                                                   \
      for (int64_t pb = p, q = 0; q < kc; q++) {                                                   \
        if (q >= pb) ((V *)(d + q * NR))[0] = z;                                                   \
        ((V *)(d + q * NR))[1] = z;                                                                \
        for (int j = q < pb ? (VL) : 0; j < nr; j++) d[q * NR + j] = s[j * ldb + q];               \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
  /* y[i, j] = t[j, i] (y m x n, t n x m) for rows [i0, i1) of y: VL x VL tiles in registers, the  \
   * edges one by one */                                                                           \
  static ATTR void S##_xpose(int64_t m, int64_t n, const T *t, T *y, int64_t i0, int64_t i1) {     \
    typedef S##_v V;                                                                               \
    int64_t ib = i0;                                                                               \
    for (; GEMM_SHUFFLE_ON && ib + (VL) <= i1; ib += (VL)) {                                       \
      int64_t jb = 0;                                                                              \
      for (; jb + (VL) <= n; jb += (VL)) GEMM_XPOSE(VL)                                            \
      for (int64_t i = ib; i < ib + (VL); i++)                                                     \
        for (int64_t j = jb; j < n; j++) y[i * n + j] = t[j * m + i];                              \
    }                                                                                              \
    for (int64_t i = ib; i < i1; i++)                                                              \
      for (int64_t j = 0; j < n; j++) y[i * n + j] = t[j * m + i];                                 \
  }                                                                                                \
  /* op(A)[0:mc, 0:kc] (a at its first element) into panels of MR rows: element (MR r + i, p) at   \
   * dst[MR r kc + MR p + i]; the last panel has the mc % MR rows left (same strides). */          \
  static ATTR void S##_pack_a(bool ta, int64_t mc, int64_t kc, const T *a, int64_t lda, T *dst) {  \
    if (ta) { /* 8 rows of A^T at a time, so that each panel gets whole lines */                   \
      for (int64_t p0 = 0; p0 < kc; p0 += 8) {                                                     \
        int pb = kc - p0 < 8 ? (int)(kc - p0) : 8;                                                 \
        T *d = dst + p0 * (MR);                                                                    \
        int64_t i0 = 0;                                                                            \
        for (; i0 + (MR) <= mc; i0 += (MR), d += (MR)*kc)                                          \
          for (int q = 0; q < pb; q++)                                                             \
            for (int i = 0; i < (MR); i++) d[q * (MR) + i] = a[(p0 + q) * lda + i0 + i];           \
        for (int q = 0; q < pb; q++)                                                               \
          for (int i = 0; i < mc - i0; i++) d[q * (MR) + i] = a[(p0 + q) * lda + i0 + i];          \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    for (int64_t i0 = 0; i0 < mc; i0 += (MR), dst += (MR)*kc) {                                    \
      int mr = mc - i0 < (MR) ? (int)(mc - i0) : (MR);                                             \
      for (int i = 0; i < mr; i++) {                                                               \
        const T *s = a + (i0 + i) * lda;                                                           \
        for (int64_t p = 0; p < kc; p++) dst[p * (MR) + i] = s[p];                                 \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* op(B) of every (jc, pc) block, packed in loop order (S##_pack_part), takes this many          \
   * elements */                                                                                   \
  static ATTR size_t S##_packed_size(int64_t k, int64_t n) {                                       \
    int64_t nkb = (k + (KC)-1) / (KC), kcs = (k + nkb - 1) / nkb, ncs = n < (NC) ? n : (NC);       \
    size_t size = 0;                                                                               \
    for (int64_t jc = 0; jc < n; jc += ncs)                                                        \
      for (int64_t pc = 0; pc < k; pc += kcs) {                                                    \
        int64_t nc = n - jc < ncs ? n - jc : ncs, kc = k - pc < kcs ? k - pc : kcs;                \
        size += (size_t)(kc * ((nc + 2 * (VL)-1) / (2 * (VL)) * 2 * (VL)));                        \
      }                                                                                            \
    return size;                                                                                   \
  }                                                                                                \
  /* That packing in units that threads can share: each (jc, pc) block's micro-panels in groups    \
   * of GEMM_UNIT_PANELS, numbered in loop order (S##_pack_units counts them and gives the size    \
   * of the largest); S##_pack_part packs units [u0, u1) into dst, each where the whole packing    \
   * has it. */                                                                                    \
  static ATTR int64_t S##_pack_units(int64_t k, int64_t n, int64_t *unit_elems) {                  \
    int64_t nkb = (k + (KC)-1) / (KC), kcs = (k + nkb - 1) / nkb, ncs = n < (NC) ? n : (NC);       \
    int64_t cols = GEMM_UNIT_PANELS * 2 * (VL), units = 0;                                         \
    *unit_elems = cols * kcs; /* the largest unit's */                                             \
    for (int64_t jc = 0; jc < n; jc += ncs)                                                        \
      for (int64_t pc = 0; pc < k; pc += kcs)                                                      \
        units += ((n - jc < ncs ? n - jc : ncs) + cols - 1) / cols;                                \
    return units;                                                                                  \
  }                                                                                                \
  static ATTR void S##_pack_part(bool tb, int64_t k, int64_t n, const T *b, int64_t ldb, T *dst,   \
                                 int64_t u0, int64_t u1) {                                         \
    int64_t nkb = (k + (KC)-1) / (KC), kcs = (k + nkb - 1) / nkb, ncs = n < (NC) ? n : (NC);       \
    int64_t cols = GEMM_UNIT_PANELS * 2 * (VL), u = 0;                                             \
    for (int64_t jc = 0; jc < n && u < u1; jc += ncs)                                              \
      for (int64_t pc = 0; pc < k && u < u1; pc += kcs) {                                          \
        int64_t nc = n - jc < ncs ? n - jc : ncs, kc = k - pc < kcs ? k - pc : kcs;                \
        const T *src = tb ? b + jc * ldb + pc : b + pc * ldb + jc;                                 \
        for (int64_t j0 = 0; j0 < nc; j0 += cols, u++)                                             \
          if (u >= u0 && u < u1)                                                                   \
            S##_pack_b(tb, kc, nc - j0 < cols ? nc - j0 : cols, src + (tb ? j0 * ldb : j0), ldb,   \
                       dst + j0 * kc);                                                             \
        dst += kc * ((nc + 2 * (VL)-1) / (2 * (VL)) * 2 * (VL));                                   \
      }                                                                                            \
  }                                                                                                \
                                                                                                   \
  /* pb: op(B) packed whole by S##_pack_part, or NULL to pack it here */                           \
  static ATTR int S##_gemm(int pack, bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha,   \
                           const T *a, int64_t lda, const T *b, int64_t ldb, T beta, T *c,         \
                           int64_t ldc, const T *pb) {                                             \
    const int NR = 2 * (VL);                                                                       \
    int64_t nkb = (k + (KC)-1) / (KC), kcs = (k + nkb - 1) / nkb;                                  \
    int64_t ncs = n < (NC) ? n : (NC);                                                             \
    /* packing A pays off over many column panels: measured, for A^T always, for A in f64. The     \
     * AVX-512 kernels (8-row tiles) read A^T in place while the kc rows a block reads span at     \
     * most 16 KiB of memory (kc times A^T's row step: close rows share lines and pages), and also \
     * pack it for fewer columns when its rows are more than 2 KiB apart (at most two share a 4    \
     * KiB page) and k is not tiny: measured on an Intel core, docs/performance.md. A's layout     \
     * changes no sum (see the top of the file). B (not transposed, nor packed beforehand) is read \
     * in place, but for a last partial panel, when few row tiles reuse each panel: m <= 64, or m  \
     * <= 128 with one k block (the m of this call: each part of a product that ad_gemm_split cuts \
     * by rows is judged by its own); and B's rows span at most 8 MiB (a larger B comes from       \
     * memory, where the packing's reads in row order ran as fast or faster). Packing a panel that \
     * four or eight tiles read costs about what they do (docs/performance.md, "B in place"). */   \
    _Static_assert((MC) % (MR) == 0, "a packed A block holds whole MR-row panels");                \
    size_t arow = (size_t)lda * sizeof(T);                                                         \
    bool auto_a = (MR) == 8 && ta ? (size_t)kcs * arow > 16384 &&                                  \
                                        (n >= 256 || (n >= 32 && k >= 64 && arow > 2048))          \
                                  : n >= 256 && (ta || sizeof(T) == 8);                            \
    bool wide_only = (pack & GEMM_WIDE_ONLY) != 0; /* tests: no narrow tile (S##_nbody) */         \
    int how = pack & 3;                                                                            \
    bool pack_a = how == GEMM_PACK_AUTO ? auto_a : how == GEMM_PACK_ALWAYS;                        \
    bool direct_b =                                                                                \
        !pb && !tb && how != GEMM_PACK_ALWAYS &&                                                   \
        (how == GEMM_PACK_NEVER ||                                                                 \
         ((m <= 64 || (m <= 128 && k <= (KC))) &&                                                  \
          ((size_t)(k - 1) * (size_t)ldb + (size_t)n) * sizeof(T) <= ((size_t)8 << 20)));          \
    size_t bsize = (size_t)(kcs * ((ncs + NR - 1) / NR * NR) + 15) / 16 * 16;                      \
    size_t asize = pack_a ? (size_t)((MC)*kcs) : 0;                                                \
    T *bp = gemm_scratch((bsize + asize) * sizeof(T));                                             \
    if (!bp) return 0;                                                                             \
    T *ap = bp + bsize;                                                                            \
    for (int64_t jc = 0; jc < n; jc += ncs) {                                                      \
      int64_t nc = n - jc < ncs ? n - jc : ncs;                                                    \
      for (int64_t pc = 0; pc < k; pc += kcs) {                                                    \
        int64_t kc = k - pc < kcs ? k - pc : kcs;                                                  \
        const T *bk = pb ? pb : bp, *bsrc = tb ? b + jc * ldb + pc : b + pc * ldb + jc;            \
        int64_t nfull = nc / NR * NR;                                                              \
        if (pb)                                                                                    \
          pb += kc * ((nc + NR - 1) / NR * NR);                                                    \
        else if (!direct_b)                                                                        \
          S##_pack_b(tb, kc, nc, bsrc, ldb, bp);                                                   \
        else if (nfull < nc) /* only the last, partial panel, where the packing puts it */         \
          S##_pack_b(tb, kc, nc - nfull, bsrc + nfull, ldb, bp + nfull * kc);                      \
        T be = pc == 0 ? beta : (T)1;                                                              \
        /* C's rows 4 KiB apart (a power-of-two width) and a shallow block (kc <= 32): a panel's   \
         * tiles would store into one L1 set row after row (lines 4 KiB apart share it), faster    \
         * than so few multiply-adds hide. Then one row tile at a time crosses all the panels      \
         * instead, storing C row by row (a last block of fewer than 2MR rows stays whole, split   \
         * as always). Each element is the same chain of multiply-adds: the same bits. */          \
        bool strips = (pack & GEMM_STRIPS) ||                                                      \
                      (kc <= 32 && nc >= 4 * NR && (size_t)ldc * sizeof(T) % 4096 == 0);           \
        for (int64_t ic = 0, mc; ic < m; ic += mc) {                                               \
          mc = strips ? (m - ic < 2 * (MR) ? m - ic : (MR)) : (m - ic < (MC) ? m - ic : (MC));     \
          /* A in place (ars, acs: strides of a row and a column of op(A)) or packed */            \
          int64_t ars = ta ? 1 : lda, acs = ta ? lda : 1, pstep = (MR)*ars;                        \
          const T *ac = ta ? a + pc * lda + ic : a + ic * lda + pc;                                \
          if (pack_a) {                                                                            \
            S##_pack_a(ta, mc, kc, ac, lda, ap);                                                   \
            ac = ap, ars = 1, acs = (MR), pstep = (MR)*kc;                                         \
          }                                                                                        \
          int64_t jr0 = 0;                                                                         \
          if (mc == 1) /* one row: four whole panels at a time */                                  \
            for (; jr0 + 4 * NR <= nfull; jr0 += 4 * NR)                                           \
              S##_row4s(kc, ac, acs, direct_b ? bsrc + jr0 : bk + jr0 * kc, direct_b ? ldb : NR,   \
                        direct_b ? NR : NR * kc, c + ic * ldc + jc + jr0, alpha, be);              \
          for (int64_t jr = jr0; jr < nc; jr += NR) {                                              \
            int nr = nc - jr < NR ? (int)(nc - jr) : NR;                                           \
            const T *bpanel = bk + jr * kc, *ai = ac;                                              \
            int64_t bcs = NR;                                                                      \
            if (direct_b && jr < nfull) bpanel = bsrc + jr, bcs = ldb;                             \
            T *ci = c + ic * ldc + jc + jr;                                                        \
            /* whole panels of MR rows; in place, a tail of 1-3 rows joins the last panel and      \
             * the two are split evenly (a 1-3 row kernel waits on FMA latency) */                 \
            int64_t full = mc / (MR), tail = mc % (MR);                                            \
            if (!pack_a && full > 0 && tail > 0 && tail < 4) full--, tail += (MR);                 \
            if ((NARROW) && nr <= (VL) && !wide_only) { /* the narrow tile, same row tiles */      \
              GEMM_ROW_TILES(MR, S##_nfull, S##_nrows)                                             \
            } else {                                                                               \
              GEMM_ROW_TILES(MR, S##_kfull, S##_krows)                                             \
            }                                                                                      \
          }                                                                                        \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
    return 1;                                                                                      \
  }

#define GEMM_ATTR_GENERIC
GEMM_KERNEL(gen_f32, GEMM_ATTR_GENERIC, float, 4, 256, 96, 2048, 6, GEMM_FMA_PLAIN, 0)
GEMM_KERNEL(gen_f64, GEMM_ATTR_GENERIC, double, 2, 256, 96, 2048, 6, GEMM_FMA_PLAIN, 0)
#ifdef GEMM_X86
#define GEMM_ATTR_AVX2 __attribute__((target("avx2,fma")))
GEMM_KERNEL(avx2_f32, GEMM_ATTR_AVX2, float, 8, 256, 96, 2048, 6, GEMM_FMA_256_PS, 1)
GEMM_KERNEL(avx2_f64, GEMM_ATTR_AVX2, double, 4, 256, 96, 2048, 6, GEMM_FMA_256_PD, 1)
#define GEMM_ATTR_AVX512 __attribute__((target("avx512f,avx2,fma")))
GEMM_KERNEL(avx512_f32, GEMM_ATTR_AVX512, float, 16, 256, 96, 2048, 8, GEMM_FMA_512_PS, 1)
GEMM_KERNEL(avx512_f64, GEMM_ATTR_AVX512, double, 8, 256, 96, 2048, 8, GEMM_FMA_512_PD, 1)
#endif
#endif /* GEMM_VEC */

/* ------------------------------------------------------------- dispatch */

typedef int (*gemm_f32_fn)(int pack, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                           const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                           float *c, int64_t ldc, const float *pb);
typedef int (*gemm_f64_fn)(int pack, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                           double alpha, const double *a, int64_t lda, const double *b, int64_t ldb,
                           double beta, double *c, int64_t ldc, const double *pb);

typedef size_t (*gemm_size_fn)(int64_t k, int64_t n);

typedef void (*gemv_f32_fn)(int64_t m, int64_t k, float alpha, const float *a, int64_t lda,
                            const float *x, float beta, float *y);
typedef void (*gemv_f64_fn)(int64_t m, int64_t k, double alpha, const double *a, int64_t lda,
                            const double *x, double beta, double *y);

typedef int64_t (*gemm_units_fn)(int64_t k, int64_t n, int64_t *unit_elems);
typedef void (*gemm_part_f32_fn)(bool tb, int64_t k, int64_t n, const float *b, int64_t ldb,
                                 float *dst, int64_t u0, int64_t u1);
typedef void (*gemm_part_f64_fn)(bool tb, int64_t k, int64_t n, const double *b, int64_t ldb,
                                 double *dst, int64_t u0, int64_t u1);

typedef void (*gemm_xpose_f32_fn)(int64_t m, int64_t n, const float *t, float *y, int64_t i0,
                                  int64_t i1);
typedef void (*gemm_xpose_f64_fn)(int64_t m, int64_t n, const double *t, double *y, int64_t i0,
                                  int64_t i1);

/* Indexed by the kernel number of ad_gemm_builtin (1..3); NULL: not built. */
static const struct {
  gemm_f32_fn f32;
  gemm_f64_fn f64;
  const char *name_f32, *name_f64;
  gemm_size_fn size_f32, size_f64;
  gemm_xpose_f32_fn xpose_f32;
  gemm_xpose_f64_fn xpose_f64;
  gemm_units_fn units_f32, units_f64;
  gemm_part_f32_fn part_f32;
  gemm_part_f64_fn part_f64;
  gemv_f32_fn gemv_f32;
  gemv_f64_fn gemv_f64;
} kernels[4] = {
    {0},
#ifdef GEMM_VEC
    {gen_f32_gemm, gen_f64_gemm, "builtin-generic-6x8", "builtin-generic-6x4", gen_f32_packed_size,
     gen_f64_packed_size, gen_f32_xpose, gen_f64_xpose, gen_f32_pack_units, gen_f64_pack_units,
     gen_f32_pack_part, gen_f64_pack_part, gen_f32_gemv, gen_f64_gemv},
#else
    {0},
#endif
#ifdef GEMM_X86
    {avx2_f32_gemm, avx2_f64_gemm, "builtin-avx2-6x16", "builtin-avx2-6x8", avx2_f32_packed_size,
     avx2_f64_packed_size, avx2_f32_xpose, avx2_f64_xpose, avx2_f32_pack_units, avx2_f64_pack_units,
     avx2_f32_pack_part, avx2_f64_pack_part, avx2_f32_gemv, avx2_f64_gemv},
    {avx512_f32_gemm, avx512_f64_gemm, "builtin-avx512-8x32", "builtin-avx512-8x16",
     avx512_f32_packed_size, avx512_f64_packed_size, avx512_f32_xpose, avx512_f64_xpose,
     avx512_f32_pack_units, avx512_f64_pack_units, avx512_f32_pack_part, avx512_f64_pack_part,
     avx512_f32_gemv, avx512_f64_gemv},
#endif
};

enum { K_BLAS = -2, K_REF = -1, K_AUTO = 0, K_AVX2 = 2, K_AVX512 = 3 };

/* The best kernel this CPU runs. */
static int kernel_best(void) {
#ifdef GEMM_X86
  if (__builtin_cpu_supports("avx512f")) return K_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return K_AVX2;
#endif
  return kernels[1].f32 ? 1 : K_REF;
}

static bool kernel_available(int kernel) {
  if (kernel == K_REF) return true;
  if (kernel < 1 || kernel > 3 || !kernels[kernel].f32) return false;
#ifdef GEMM_X86
  if (kernel == K_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (kernel == K_AVX512) return __builtin_cpu_supports("avx512f");
#endif
  return true;
}

/* C = beta C when there is nothing to multiply, else the kernel, else (no
 * kernel, or no buffer) the reference loop. */
#define GEMM_BUILTIN(T, SFX)                                                                       \
  static void builtin_##SFX(int kernel, int pack, bool ta, bool tb, int64_t m, int64_t n,          \
                            int64_t k, T alpha, const T *a, int64_t lda, const T *b, int64_t ldb,  \
                            T beta, T *c, int64_t ldc) {                                           \
    if (m <= 0 || n <= 0) return;                                                                  \
    if (k <= 0 || alpha == 0) {                                                                    \
      gemm_scale_##SFX(m, n, beta, c, ldc);                                                        \
      return;                                                                                      \
    }                                                                                              \
    /* a column C (n = 1, a matrix times a vector) from A's rows and a contiguous vector: the      \
     * kernel's S_gemv (its own order of the products: S_gemv's comment). Else (A transposed, or   \
     * a strided vector) as the row C^T = op(B)^T op(A)^T, the same memory: op(A) becomes the      \
     * kernel's B, read in place (ta) or packed with its transposes, and the kernel's one-row      \
     * tile puts m columns in each vector instead of one column padded to a whole vector per       \
     * row; each element is then the same chain of multiply-adds as in a wider product (a_ip b_p   \
     * in order, the same k blocks): the same bits. */                                             \
    if (n == 1 && ldc == 1 && !ta && (tb || ldb == 1) && kernel >= 1 && kernels[kernel].SFX) {     \
      kernels[kernel].gemv_##SFX(m, k, alpha, a, lda, b, beta, c);                                 \
      return;                                                                                      \
    }                                                                                              \
    if (n == 1 && ldc == 1 && m > 1 && kernel >= 1 && kernels[kernel].SFX &&                       \
        kernels[kernel].SFX(pack, !tb, !ta, 1, m, k, alpha, b, ldb, a, lda, beta, c, m, NULL))     \
      return;                                                                                      \
    if (kernel >= 1 && kernels[kernel].SFX &&                                                      \
        kernels[kernel].SFX(pack, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, NULL))     \
      return;                                                                                      \
    gemm_ref_##SFX(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);                          \
  }

GEMM_BUILTIN(float, f32)
GEMM_BUILTIN(double, f64)

/* ------------------------------------------------------------ dispatch
 * Which kernel runs a product is a fixed rule of the CPU's instructions,
 * the core OpenBLAS says it runs (its kernels for that core) and the
 * product's size class; never of timings taken at run time, which would
 * flip between runs on a busy machine and change result bits. The rule,
 * from the measurements in docs/performance.md:
 *   - AVX-512: the built-in AVX-512 kernel for every product; it is faster
 *     than OpenBLAS's own AVX-512 kernels, about twice as fast as its AVX2
 *     ones (which it runs where OPENBLAS_CORETYPE asks for them), and far
 *     faster than the generic ones OpenBLAS 0.3.21 falls back to on CPUs
 *     it does not know.
 *   - AVX2 and FMA: the built-in AVX2 kernel for products of at most
 *     GEMM_SMALL_MACS multiply-adds (OpenBLAS spends much of a small call
 *     packing); larger ones on OpenBLAS when its core has AVX2 kernels
 *     (Haswell, Zen, SkylakeX, ...), else on the built-in kernel.
 *   - neither: OpenBLAS for every product when linked (its SSE and AVX
 *     kernels beat the portable built-in one), else the built-in kernel. */
#define GEMM_SMALL_MACS 4194304.0

/* The class of a CPU or of an OpenBLAS core: what its kernels use. */
enum { ISA_OTHER = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

/* OpenBLAS's kernels for a core it names (openblas_get_corename). Cores
 * not listed (Prescott, Nehalem, Sandybridge, ... or unknown) count as
 * older than AVX2. */
static int core_isa(const char *core) {
  static const char *const avx512[] = {"skylakex", "cooperlake", "sapphirerapids"};
  static const char *const avx2[] = {"haswell", "zen", "skylake", "alderlake"};
  char low[32] = "";
  for (size_t i = 0; core && core[i] && i + 1 < sizeof low; i++)
    low[i] = (char)(core[i] >= 'A' && core[i] <= 'Z' ? core[i] - 'A' + 'a' : core[i]);
  for (size_t i = 0; i < sizeof avx512 / sizeof *avx512; i++)
    if (!strcmp(low, avx512[i])) return ISA_AVX512;
  for (size_t i = 0; i < sizeof avx2 / sizeof *avx2; i++)
    if (!strcmp(low, avx2[i])) return ISA_AVX2;
  return ISA_OTHER;
}

ad_gemm_rule ad_gemm_decide(int cpu, const char *core, bool have_blas) {
  ad_gemm_rule r = {.blas_small = false, .blas_large = false};
  int isa = core_isa(core);
  if (cpu >= ISA_AVX512) {
    snprintf(r.why, sizeof r.why, "the built-in AVX-512 kernel for every product%s%s%s",
             have_blas ? " (OpenBLAS reports " : "", have_blas ? (core ? core : "no core") : "",
             have_blas ? (isa >= ISA_AVX512 ? "; measured slower)"
                          : isa == ISA_AVX2 ? ": its AVX2 kernels, measured slower)"
                                            : ", a generic core here)")
                       : "");
  } else if (cpu == ISA_AVX2) {
    r.blas_large = have_blas && isa >= ISA_AVX2;
    if (r.blas_large)
      snprintf(r.why, sizeof r.why,
               "the built-in AVX2 kernel up to %.0f multiply-adds, OpenBLAS (%s) above",
               GEMM_SMALL_MACS, core);
    else
      snprintf(r.why, sizeof r.why, "the built-in AVX2 kernel for every product%s%s%s",
               have_blas ? " (OpenBLAS reports " : "", have_blas ? (core ? core : "no core") : "",
               have_blas ? ", a generic core here)" : "");
  } else {
    r.blas_small = r.blas_large = have_blas;
    snprintf(r.why, sizeof r.why, "%s for every product (no AVX2 on this CPU)",
             have_blas ? "OpenBLAS" : "the portable built-in kernel");
  }
  return r;
}

#ifdef AD_HAVE_BLAS
/* BLAS is loaded at run time (dlopen), and only when something needs it:
 * the rule on a CPU without AVX-512 (which asks OpenBLAS for its core),
 * ad_gemm_backend, or a caller that asks for BLAS by kernel id. On AVX-512
 * the rule never uses BLAS, so a training run there never maps it (about
 * 2 MB of resident memory, and OpenBLAS's thread pool, which it starts when
 * it is loaded). Without the library at run time, the built-in kernels run
 * every product. The CBLAS constants are the standard's values. */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
typedef void (*cblas_sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                               const float *, int, float, float *, int);
typedef void (*cblas_dgemm_fn)(int, int, int, int, int, int, double, const double *, int,
                               const double *, int, double, double *, int);
static struct {
  cblas_sgemm_fn sgemm;
  cblas_dgemm_fn dgemm;
  char *(*corename)(void);      /* OpenBLAS only */
  void (*set_num_threads)(int); /* OpenBLAS only */
  _Atomic bool loaded;          /* sgemm and dgemm are set */
  _Atomic bool single;          /* the engine asked for one BLAS thread */
  const char *soname;           /* the library loaded, or NULL */
} blas;
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

/* dlsym's object pointer as a function pointer (POSIX allows it; ISO C
 * has no cast between the two). */
static void sym(void *h, const char *name, void *fn, size_t size) {
  void *p = dlsym(h, name);
  if (p) memcpy(fn, &p, size);
}

static void blas_load(void) {
  /* the library the build found first, then the usual sonames */
  static const char *const names[] = {AD_BLAS_SONAME, "libopenblas.so.0", "libcblas.so.3",
                                      "libblas.so.3"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) continue;
    sym(h, "cblas_sgemm", &blas.sgemm, sizeof blas.sgemm);
    sym(h, "cblas_dgemm", &blas.dgemm, sizeof blas.dgemm);
    if (!blas.sgemm || !blas.dgemm) {
      blas.sgemm = NULL;
      blas.dgemm = NULL;
      dlclose(h);
      continue;
    }
    sym(h, "openblas_get_corename", &blas.corename, sizeof blas.corename);
    sym(h, "openblas_set_num_threads", &blas.set_num_threads, sizeof blas.set_num_threads);
    blas.soname = names[i];
    atomic_store(&blas.loaded, true);
    if (atomic_load(&blas.single) && blas.set_num_threads) blas.set_num_threads(1);
    return; /* the handle stays open for the process */
  }
}

static bool blas_ready(void) {
  pthread_once(&blas_once, blas_load);
  return atomic_load(&blas.loaded);
}

void ad_blas_single_thread(void) {
  atomic_store(&blas.single, true);
  if (atomic_load(&blas.loaded) && blas.set_num_threads) blas.set_num_threads(1);
}
#else
void ad_blas_single_thread(void) {}
#endif

/* The CPU's class for the rule. */
static int cpu_isa(void) {
  int k = kernel_best();
  return k == K_AVX512 ? ISA_AVX512 : k == K_AVX2 ? ISA_AVX2 : ISA_OTHER;
}

/* The rule for this process, made once. On AVX-512 it does not depend on
 * BLAS, which is then not loaded; elsewhere it asks the library (loading
 * it) for its core. */
#ifdef AD_HAVE_BLAS
static ad_gemm_rule the_rule;
static pthread_once_t rule_once = PTHREAD_ONCE_INIT;
#endif

static ad_gemm_rule decide_now(bool load) {
  int cpu = cpu_isa();
  const char *core = NULL;
  bool have = false;
#ifdef AD_HAVE_BLAS
  if (load || cpu < ISA_AVX512) {
    have = blas_ready();
    if (have && blas.corename) core = blas.corename();
  } else {
    have = true; /* not consulted on AVX-512 */
  }
#endif
  (void)load;
  return ad_gemm_decide(cpu, core, have);
}

#ifdef AD_HAVE_BLAS /* without BLAS, nothing consults it */
static void rule_init(void) { the_rule = decide_now(false); }

static const ad_gemm_rule *rule(void) {
  pthread_once(&rule_once, rule_init);
  return &the_rule;
}
#endif

/* ad_gemm_backend's words: the same decision, with the core named (so it
 * loads BLAS where the rule itself did not need it). */
static ad_gemm_rule backend_rule;
static pthread_once_t backend_once = PTHREAD_ONCE_INIT;
static void backend_init(void) { backend_rule = decide_now(true); }

const char *ad_gemm_backend(void) {
  pthread_once(&backend_once, backend_init);
  return backend_rule.why;
}

#ifdef AD_HAVE_BLAS
static bool use_blas(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc) {
  if (k <= 0 || m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
      ldc > INT_MAX)
    return false; /* cblas takes int */
  const ad_gemm_rule *r = rule();
  bool want = (double)m * (double)n * (double)k > GEMM_SMALL_MACS ? r->blas_large : r->blas_small;
  return want && blas_ready();
}

static void blas_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                     int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  blas.sgemm(CBLAS_ROW_MAJOR, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, tb ? CBLAS_TRANS : CBLAS_NO_TRANS,
             (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

static void blas_f64(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                     const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                     double *c, int64_t ldc) {
  blas.dgemm(CBLAS_ROW_MAJOR, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, tb ? CBLAS_TRANS : CBLAS_NO_TRANS,
             (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}
#endif

bool ad_transpose_builtin(int kernel, ad_dtype dt, int64_t m, int64_t n, const void *t, void *y,
                          int64_t i0, int64_t i1) {
  if (kernel == K_AUTO) kernel = kernel_best();
  if (!kernel_available(kernel)) return false;
  if (kernel >= 1 && dt == AD_F32)
    kernels[kernel].xpose_f32(m, n, t, y, i0, i1);
  else if (kernel >= 1)
    kernels[kernel].xpose_f64(m, n, t, y, i0, i1);
  else if (dt == AD_F32)
    for (int64_t i = i0; i < i1; i++)
      for (int64_t j = 0; j < n; j++) ((float *)y)[i * n + j] = ((const float *)t)[j * m + i];
  else
    for (int64_t i = i0; i < i1; i++)
      for (int64_t j = 0; j < n; j++) ((double *)y)[i * n + j] = ((const double *)t)[j * m + i];
  return true;
}

int ad_gemm_kernel_of(int64_t m, int64_t n, int64_t k) {
#ifdef AD_HAVE_BLAS
  if (use_blas(m, n, k, k, k, n)) return K_BLAS;
#else
  (void)m, (void)n, (void)k;
#endif
  return kernel_best();
}

const char *ad_gemm_builtin(int kernel, ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n,
                            int64_t k, double alpha, const void *a, int64_t lda, const void *b,
                            int64_t ldb, double beta, void *c, int64_t ldc) {
  if (kernel == K_BLAS) {
#ifdef AD_HAVE_BLAS
    if (!blas_ready()) return NULL;
    if (m > 0 && n > 0 && k > 0) {
      if (dt == AD_F32)
        blas_f32(ta, tb, m, n, k, (float)alpha, a, lda, b, ldb, (float)beta, c, ldc);
      else
        blas_f64(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } else if (m > 0 && n > 0) {
      ad_gemm_builtin(K_REF, dt, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    return "openblas";
#else
    return NULL;
#endif
  }
  int pack = kernel >= 0 ? (kernel >> 4) & 3 : GEMM_PACK_AUTO;
  if (kernel >= 0 && (kernel & 64)) pack |= GEMM_WIDE_ONLY;
  if (kernel >= 0 && (kernel & 128)) pack |= GEMM_STRIPS;
  if (kernel >= 0 && (kernel & ~(15 | 48 | 64 | 128))) return NULL;
  if (kernel >= 0) kernel &= 15;
  if ((pack & 3) > GEMM_PACK_NEVER) return NULL;
  if (kernel == K_AUTO) kernel = kernel_best();
  if (!kernel_available(kernel)) return NULL;
  if (dt == AD_F32)
    builtin_f32(kernel, pack, ta, tb, m, n, k, (float)alpha, a, lda, b, ldb, (float)beta, c, ldc);
  else
    builtin_f64(kernel, pack, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  return kernel == K_REF ? "builtin-reference"
         : dt == AD_F32  ? kernels[kernel].name_f32
                         : kernels[kernel].name_f64;
}

/* ----------------------------------------------------------- public API */

void ad_gemm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                 int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
#ifdef AD_HAVE_BLAS
  if (use_blas(m, n, k, lda, ldb, ldc)) {
    blas_f32(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
#endif
  builtin_f32(kernel_best(), GEMM_PACK_AUTO, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void ad_gemm_f64(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double *a,
                 int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
#ifdef AD_HAVE_BLAS
  if (use_blas(m, n, k, lda, ldb, ldc)) {
    blas_f64(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
#endif
  builtin_f64(kernel_best(), GEMM_PACK_AUTO, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void ad_gemm(ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
             int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc) {
  if (dt == AD_F32)
    ad_gemm_f32(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, (float)beta, c, ldc);
  else
    ad_gemm_f64(ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
}

/* ------------------------------------------------------- packed B */

struct ad_gemm_packed {
  ad_dtype dt;
  int kernel;
  bool tb;
  int64_t k, n;
  void *p; /* op(B), packed for the kernel */
};

int64_t ad_gemm_packed_macs(const ad_gemm_packed *p, int64_t m) { return m * p->n * p->k; }

/* A packing of at least this many bytes is split over the library's
 * threads (in units of GEMM_UNIT_PANELS micro-panels; the bits do not
 * depend on who packs what). */
#define PACK_SPLIT_MIN ((size_t)256 << 10)

typedef struct pack_job {
  const ad_gemm_packed *p;
  const void *b;
  int64_t ldb;
} pack_job;

static void pack_units(void *ud, int64_t u0, int64_t u1) {
  const pack_job *j = ud;
  const ad_gemm_packed *p = j->p;
  if (p->dt == AD_F64)
    kernels[p->kernel].part_f64(p->tb, p->k, p->n, j->b, j->ldb, p->p, u0, u1);
  else
    kernels[p->kernel].part_f32(p->tb, p->k, p->n, j->b, j->ldb, p->p, u0, u1);
}

ad_gemm_packed *ad_gemm_pack(ad_dtype dt, bool tb, int64_t m, int64_t k, int64_t n, const void *b,
                             int64_t ldb) {
  if (m <= 0 || k <= 0 || n <= 1) return NULL; /* n = 1: ad_gemm's column product (S_gemv) */
#ifdef AD_HAVE_BLAS
  if (use_blas(m, n, k, tb ? ldb : n, ldb, n)) return NULL; /* the rule gives these to BLAS */
#endif
  int kernel = kernel_best();
  if (kernel < 1 || !kernels[kernel].f32) return NULL;
  size_t es = dt == AD_F64 ? sizeof(double) : sizeof(float);
  size_t elems = dt == AD_F64 ? kernels[kernel].size_f64(k, n) : kernels[kernel].size_f32(k, n);
  ad_gemm_packed *p = malloc(sizeof *p);
  void *buf = p ? aligned_alloc(64, (elems * es + 63) / 64 * 64) : NULL;
  if (!buf) {
    free(p);
    return NULL;
  }
  *p = (ad_gemm_packed){dt, kernel, tb, k, n, buf};
  int64_t unit, units = dt == AD_F64 ? kernels[kernel].units_f64(k, n, &unit)
                                     : kernels[kernel].units_f32(k, n, &unit);
  size_t unit_bytes = (size_t)unit * es;
  pack_job j = {p, b, ldb};
  ad_parallel_for(units, (int64_t)((PACK_SPLIT_MIN + unit_bytes - 1) / unit_bytes), pack_units, &j);
  return p;
}

/* The kernel fails only when it cannot have its A buffer; the reference
 * loop then reads B itself. */
void ad_gemm_packed_rows(const ad_gemm_packed *p, bool ta, int64_t lo, int64_t hi, const void *a,
                         int64_t lda, const void *b, int64_t ldb, double beta, void *c,
                         int64_t ldc) {
  size_t es = p->dt == AD_F64 ? sizeof(double) : sizeof(float);
  const char *ar = (const char *)a + (size_t)(ta ? lo : lo * lda) * es;
  char *cr = (char *)c + (size_t)(lo * ldc) * es;
  int64_t m = hi - lo;
  if (p->dt == AD_F64) {
    if (!kernels[p->kernel].f64(GEMM_PACK_AUTO, ta, p->tb, m, p->n, p->k, 1.0, (const double *)ar,
                                lda, b, ldb, beta, (double *)cr, ldc, p->p))
      gemm_ref_f64(ta, p->tb, m, p->n, p->k, 1.0, (const double *)ar, lda, b, ldb, beta,
                   (double *)cr, ldc);
  } else {
    if (!kernels[p->kernel].f32(GEMM_PACK_AUTO, ta, p->tb, m, p->n, p->k, 1.0f, (const float *)ar,
                                lda, b, ldb, (float)beta, (float *)cr, ldc, p->p))
      gemm_ref_f32(ta, p->tb, m, p->n, p->k, 1.0f, (const float *)ar, lda, b, ldb, (float)beta,
                   (float *)cr, ldc);
  }
}

void ad_gemm_packed_free(ad_gemm_packed *p) {
  if (!p) return;
  free(p->p);
  free(p);
}
