/* tr16.h: the AVX-512 transpose of a 16x16 block of float32 in registers
 * (private, for the kernels): Winograd's layout changes (winograd.c) and
 * layer_norm's rows of 16 taken as columns (norm16.c). AD_TR16 is
 * defined where it is compiled (GCC or clang on x86); the functions that
 * use it carry AD_TR16_ATTR and run only where the CPU has AVX-512F. */
#ifndef AD_TR16_H
#define AD_TR16_H

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define AD_TR16 1
#include <immintrin.h>
#define AD_TR16_ATTR __attribute__((target("avx512f,avx2,fma")))
/* full unrolling, so that arrays of vectors become registers */
#if defined(__clang__)
#define AD_TR16_UNROLL _Pragma("unroll")
#else
#define AD_TR16_UNROLL _Pragma("GCC unroll 16")
#endif

/* r[i][j] = r[j][i] for the 16 vectors r (a 16x16 block). */
AD_TR16_ATTR static inline __attribute__((always_inline)) void ad_tr16(__m512 r[16]) {
  __m512 t[16], u[16];
  AD_TR16_UNROLL
  for (int k = 0; k < 8; k++) {
    t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  AD_TR16_UNROLL
  for (int k = 0; k < 4; k++) {
    __m512d a = _mm512_castps_pd(t[4 * k]), b = _mm512_castps_pd(t[4 * k + 1]);
    __m512d c = _mm512_castps_pd(t[4 * k + 2]), d = _mm512_castps_pd(t[4 * k + 3]);
    u[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  /* u[4 K + j], 128-bit lane L: rows 4 K .. 4 K + 3 of column 4 L + j */
  AD_TR16_UNROLL
  for (int j = 0; j < 4; j++) {
    __m512 v0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
    __m512 v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
    __m512 w0 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
    __m512 w1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
    r[j] = _mm512_shuffle_f32x4(v0, w0, 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
    r[4 + j] = _mm512_shuffle_f32x4(v1, w1, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
  }
}
#endif

#endif
