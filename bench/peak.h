/* peak.h: the machine's single-core sgemm peak, which the benchmarks
 * divide their GFLOPS by, so that "close to the limit" is a number.
 *
 * The peak is the best of several timings of one large square f32 product
 * (1024 x 1024 x 1024, no transposes) on the calling thread, with each GEMM
 * kernel the build and CPU have (the best built-in one, and BLAS when
 * linked), whichever is faster, timed with the thread's CPU clock: time
 * spent descheduled on a busy machine is not the core's. Header-only, for
 * the programs in bench/. */
#ifndef BENCH_PEAK_H
#define BENCH_PEAK_H

#include "ad_ext.h"
#include "kernels/kernels.h"

#include <stdlib.h>
#include <time.h>

typedef struct bench_peak {
  double gflops;      /* best of the kernels; 0 if nothing could run */
  const char *kernel; /* which one reached it */
} bench_peak;

static inline double bench_peak_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Measures the peak: for each kernel, the best of `reps` products (one
 * warm-up first), the kernels taking turns product by product, so that a
 * busy moment of a shared machine slows one round of each rather than all
 * of one kernel's (which made the slower kernel's best the "peak"). BLAS is
 * held to one thread (ad_set_num_threads does so without changing the
 * library's own count). About 0.1 s per product on a core near 100 GFLOPS. */
static inline bench_peak bench_sgemm_peak(int reps) {
  enum { N = 1024 };
  bench_peak best = {0, "none"};
  float *a = malloc((size_t)N * N * sizeof *a), *b = malloc((size_t)N * N * sizeof *b),
        *c = malloc((size_t)N * N * sizeof *c);
  if (!a || !b || !c) goto done;
  for (size_t i = 0; i < (size_t)N * N; i++) {
    a[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    b[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
  }
  ad_set_num_threads(ad_num_threads()); /* OpenBLAS to one thread */
  const int kernels[2] = {0, -2};       /* the best built-in, BLAS */
  const char *names[2];
  for (int k = 0; k < 2; k++) /* the warm-up; NULL: not in this build or CPU */
    names[k] =
        ad_gemm_builtin(kernels[k], AD_F32, false, false, N, N, N, 1.0, a, N, b, N, 0.0, c, N);
  for (int r = 0; r < reps; r++)
    for (int k = 0; k < 2; k++) {
      if (!names[k]) continue;
      double t0 = bench_peak_now();
      ad_gemm_builtin(kernels[k], AD_F32, false, false, N, N, N, 1.0, a, N, b, N, 0.0, c, N);
      double gf = 2.0 * N * N * N * 1e-9 / (bench_peak_now() - t0);
      if (gf > best.gflops) best = (bench_peak){gf, names[k]};
    }
done:
  free(a), free(b), free(c);
  return best;
}

#endif
