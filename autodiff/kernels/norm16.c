/* norm16.c: layer_norm's backward (dx) over rows of exactly 16 float32
 * elements (bench/opscan's ln16; a Transformer head's 16 features), 16
 * rows at a time with AVX-512: the block transposed in registers (tr16.h)
 * so that each vector holds one element of 16 rows, and each row's sums
 * (its mean, then its squared deviations, dy and dy (x - mean)), taken
 * across the vectors in order i = 0 .. 15, are the chains the generic
 * rows (op_norm.c, LNB_ROW) add one row at a time: the same operations in
 * the same order, in double, so the same bits, but for the sign of a NaN
 * (inf - inf gives x86's default NaN, whose sign bit is set, where the
 * scalar code may keep an operand's: ad.h leaves NaN signs open); the
 * sixteen rows' chains run side by side instead of waiting on their own
 * latency. */
#include "kernels.h"
#include "tr16.h"

#ifdef AD_TR16
/* a vector of 16 floats as two of 8 doubles */
AD_TR16_ATTR static inline __attribute__((always_inline)) void ln16_widen(__m512 v, __m512d h[2]) {
  h[0] = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  h[1] = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* dx of the rows of blocks 16 x 16 blocks from x, g (dy) and w (NULL: none) */
AD_TR16_ATTR static void ln16_blocks(const float *x, const float *g, const float *w, float *dx,
                                     double eps, int64_t blocks) {
  const __m512d m = _mm512_set1_pd(16.0), e = _mm512_set1_pd(eps), one = _mm512_set1_pd(1.0);
  for (int64_t b = 0; b < blocks; b++, x += 256, g += 256, dx += 256) {
    __m512 xc[16], gc[16], yc[16];
    AD_TR16_UNROLL
    for (int k = 0; k < 16; k++)
      xc[k] = _mm512_loadu_ps(x + 16 * k), gc[k] = _mm512_loadu_ps(g + 16 * k);
    ad_tr16(xc);
    ad_tr16(gc);
    /* [h]: rows 8 h .. 8 h + 7 of the block, their chains side by side */
    __m512d mu[2], dev[2], mg[2], mgx[2], s[2], xv[16][2], gv[16][2];
    mu[0] = mu[1] = dev[0] = dev[1] = mg[0] = mg[1] = mgx[0] = mgx[1] = _mm512_setzero_pd();
    AD_TR16_UNROLL
    for (int i = 0; i < 16; i++) {
      ln16_widen(xc[i], xv[i]);
      ln16_widen(gc[i], gv[i]);
      if (w) {
        __m512d wi = _mm512_set1_pd((double)w[i]);
        gv[i][0] = _mm512_mul_pd(gv[i][0], wi), gv[i][1] = _mm512_mul_pd(gv[i][1], wi);
      }
      mu[0] = _mm512_add_pd(mu[0], xv[i][0]), mu[1] = _mm512_add_pd(mu[1], xv[i][1]);
    }
    for (int h = 0; h < 2; h++) mu[h] = _mm512_div_pd(mu[h], m);
    AD_TR16_UNROLL
    for (int i = 0; i < 16; i++)
      for (int h = 0; h < 2; h++) {
        __m512d d = _mm512_sub_pd(xv[i][h], mu[h]);
        dev[h] = _mm512_add_pd(dev[h], _mm512_mul_pd(d, d));
        mg[h] = _mm512_add_pd(mg[h], gv[i][h]);
        mgx[h] = _mm512_add_pd(mgx[h], _mm512_mul_pd(gv[i][h], d));
      }
    for (int h = 0; h < 2; h++) {
      s[h] = _mm512_div_pd(one, _mm512_sqrt_pd(_mm512_add_pd(_mm512_div_pd(dev[h], m), e)));
      mg[h] = _mm512_div_pd(mg[h], m);
      mgx[h] = _mm512_mul_pd(mgx[h], _mm512_div_pd(s[h], m));
    }
    AD_TR16_UNROLL
    for (int i = 0; i < 16; i++) { /* s ((gw - mg) - xhat mgx), xhat = (x - mu) s */
      __m256 yf[2];
      for (int h = 0; h < 2; h++) {
        __m512d xh = _mm512_mul_pd(_mm512_sub_pd(xv[i][h], mu[h]), s[h]);
        yf[h] = _mm512_cvtpd_ps(_mm512_mul_pd(
            s[h], _mm512_sub_pd(_mm512_sub_pd(gv[i][h], mg[h]), _mm512_mul_pd(xh, mgx[h]))));
      }
      yc[i] = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(yf[0])),
                                                  _mm256_castps_pd(yf[1]), 1));
    }
    ad_tr16(yc);
    AD_TR16_UNROLL
    for (int k = 0; k < 16; k++) _mm512_storeu_ps(dx + 16 * k, yc[k]);
  }
}
#endif

bool ad_ln16_backward(const float *x, const float *g, const float *w, float *dx, double eps,
                      int64_t blocks) {
#ifdef AD_TR16
  if (!__builtin_cpu_supports("avx512f")) return false;
  ln16_blocks(x, g, w, dx, eps, blocks);
  return true;
#else
  (void)x, (void)g, (void)w, (void)dx, (void)eps, (void)blocks;
  return false;
#endif
}
