/* transpose.c: the transposed copy behind permute (op_shape.c's tiles):
 * blocks of 8 x 8 float32 or 4 x 4 float64 elements loaded as rows and
 * stored as columns through registers (AVX2), where element-by-element
 * loops read or write one element per cache line. A copy: the same bits
 * on every path. */
#include "kernels.h"

#include <stdatomic.h>

static _Atomic bool force_generic;

void ad_transpose_set_generic(bool on) { atomic_store(&force_generic, on); }

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define TR_AVX2 __attribute__((target("avx2")))

/* y[k ys + a] = x[a xs + k] for k, a < 8 */
TR_AVX2 static inline __attribute__((always_inline)) void tr8_f32(const float *x, int64_t xs,
                                                                  float *y, int64_t ys) {
  __m256 r0 = _mm256_loadu_ps(x), r1 = _mm256_loadu_ps(x + xs), r2 = _mm256_loadu_ps(x + 2 * xs),
         r3 = _mm256_loadu_ps(x + 3 * xs), r4 = _mm256_loadu_ps(x + 4 * xs),
         r5 = _mm256_loadu_ps(x + 5 * xs), r6 = _mm256_loadu_ps(x + 6 * xs),
         r7 = _mm256_loadu_ps(x + 7 * xs);
  /* pairs of rows interleaved, then pairs of pairs, then the 128-bit halves */
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(y, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(y + ys, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(y + 2 * ys, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(y + 3 * ys, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(y + 4 * ys, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(y + 5 * ys, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(y + 6 * ys, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(y + 7 * ys, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* y[k ys + a] = x[a xs + k] for k, a < 4 */
TR_AVX2 static inline __attribute__((always_inline)) void tr4_f64(const double *x, int64_t xs,
                                                                  double *y, int64_t ys) {
  __m256d r0 = _mm256_loadu_pd(x), r1 = _mm256_loadu_pd(x + xs), r2 = _mm256_loadu_pd(x + 2 * xs),
          r3 = _mm256_loadu_pd(x + 3 * xs);
  __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
  __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
  _mm256_storeu_pd(y, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(y + ys, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(y + 2 * ys, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(y + 3 * ys, _mm256_permute2f128_pd(t1, t3, 0x31));
}

/* The blocks B x B of [nq, nl] (rows of B along nl outside, so that the
 * rows of x a step reads are used up across the q blocks before the next
 * step), then the margins element by element. */
#define TR_BLOCKS(T, B, BLOCK)                                                                     \
  do {                                                                                             \
    const T *X = xv;                                                                               \
    T *Y = yv;                                                                                     \
    int64_t fq = nq / B * B, fl = nl / B * B;                                                      \
    for (int64_t a = 0; a < fl; a += B)                                                            \
      for (int64_t k = 0; k < fq; k += B) BLOCK(X + a * xs + k, xs, Y + k * ys + a, ys);           \
    for (int64_t k = 0; k < nq; k++)                                                               \
      for (int64_t a = k < fq ? fl : 0; a < nl; a++) Y[k * ys + a] = X[a * xs + k];                \
  } while (0)

TR_AVX2 static void tr_f32(const void *xv, int64_t xs, void *yv, int64_t ys, int64_t nq,
                           int64_t nl) {
  TR_BLOCKS(float, 8, tr8_f32);
}

TR_AVX2 static void tr_f64(const void *xv, int64_t xs, void *yv, int64_t ys, int64_t nq,
                           int64_t nl) {
  TR_BLOCKS(double, 4, tr4_f64);
}
#endif

bool ad_transpose_blocks(ad_dtype dt, const void *x, int64_t xs, void *y, int64_t ys, int64_t nq,
                         int64_t nl) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  if (atomic_load(&force_generic) || !__builtin_cpu_supports("avx2")) return false;
  if (dt == AD_F32)
    tr_f32(x, xs, y, ys, nq, nl);
  else if (dt == AD_F64)
    tr_f64(x, xs, y, ys, nq, nl);
  else
    return false;
  return true;
#else
  (void)dt, (void)x, (void)xs, (void)y, (void)ys, (void)nq, (void)nl;
  return false;
#endif
}
