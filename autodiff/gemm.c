/* gemm.c: C = alpha op(A) op(B) + beta C, row-major, through BLAS when the
 * build has it, else a portable blocked kernel. */
#include "ad_internal.h"

#ifdef AD_HAVE_BLAS
#include <cblas.h>
#endif

const char *ad_gemm_backend(void) {
#ifdef AD_HAVE_BLAS
  return "openblas";
#else
  return "builtin";
#endif
}

/* The portable kernel: C is scaled by beta, then for each row of C the
 * products are accumulated as axpy's over rows of op(B) (contiguous when B
 * is not transposed) or as dot products (B transposed), blocked over k so
 * the touched panel of B stays in cache. */
#define GEMM_REF(T, NAME)                                                                          \
  static void NAME(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T *a,         \
                   int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc) {              \
    for (int64_t i = 0; i < m; i++)                                                                \
      for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? (T)0 : beta * c[i * ldc + j];   \
    const int64_t KB = 256;                                                                        \
    for (int64_t p0 = 0; p0 < k; p0 += KB) {                                                       \
      int64_t p1 = p0 + KB < k ? p0 + KB : k;                                                      \
      for (int64_t i = 0; i < m; i++) {                                                            \
        T *ci = c + i * ldc;                                                                       \
        if (!tb) {                                                                                 \
          for (int64_t p = p0; p < p1; p++) {                                                      \
            T aip = alpha * (ta ? a[p * lda + i] : a[i * lda + p]);                                \
            const T *bp = b + p * ldb;                                                             \
            for (int64_t j = 0; j < n; j++) ci[j] += aip * bp[j];                                  \
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

void ad_gemm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                 int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
#ifdef AD_HAVE_BLAS
  if (k > 0) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
    return;
  }
#endif
  gemm_ref_f32(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void ad_gemm_f64(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double *a,
                 int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
#ifdef AD_HAVE_BLAS
  if (k > 0) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
    return;
  }
#endif
  gemm_ref_f64(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void ad_gemm(ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
             int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc) {
  if (dt == AD_F32)
    ad_gemm_f32(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, (float)beta, c, ldc);
  else
    ad_gemm_f64(ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
}
