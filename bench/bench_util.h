/* bench_util.h: what the training benchmarks (bench/mlp, bench/cnn) share,
 * header-only: clocks, argument parsing, threads, a hash of the trained
 * parameters, and the report whose last line is "train_s: S". */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include "nn.h"
#include "peak.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

/* Present when the program is linked with OpenMP, else NULL. */
extern void omp_set_num_threads(int n) __attribute__((weak));

/* User + system CPU seconds of the process so far (all threads). */
static inline double bench_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
         (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static inline double bench_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* v as an integer >= lo into *out; false if it is not one. */
static inline bool bench_parse_int(const char *v, long long lo, long long *out) {
  char *end;
  errno = 0;
  long long n = v ? strtoll(v, &end, 10) : 0;
  if (!v || !*v || *end || errno || n < lo) return false;
  *out = n;
  return true;
}

/* The engine's threads (which also sets OpenBLAS to one thread: the engine
 * splits large products over its own threads), and OpenMP's when linked. */
static inline bool bench_set_threads(int n) {
  char buf[16];
  snprintf(buf, sizeof buf, "%d", n);
  setenv("OMP_NUM_THREADS", buf, 1);
  if (omp_set_num_threads) omp_set_num_threads(n);
  return ad_set_num_threads(n) == AD_OK;
}

/* "N engine threads" for the header line. The GEMM dispatch is printed by
 * bench_report, after the peak RSS is read: ad_gemm_backend loads OpenBLAS
 * to name its core, which a training run on AVX-512 never maps. */
static inline void bench_print_threads(void) { printf("%d engine threads\n", ad_num_threads()); }

/* FNV-1a over the bytes of every parameter: equal across runs, thread
 * counts and GEMM paths exactly when training computed the same bits. */
static inline unsigned long long bench_params_hash(const nn_params *p) {
  unsigned long long h = 1469598103934665603ULL;
  for (int i = 0; i < nn_params_count(p); i++) {
    const ad_tensor *t = nn_params_tensor(p, i);
    const unsigned char *b = t->data;
    for (size_t k = 0; k < (size_t)t->size * ad_dtype_size(t->dtype); k++)
      h = (h ^ b[k]) * 1099511628211ULL;
  }
  return h;
}

/* The report after training: the loss of the first and last epoch, the
 * parameters' hash, samples/s, GFLOPS (flops counted by the caller) and
 * its share of threads x the core's sgemm peak (measured now, after the
 * timed loop), the GEMM dispatch, CPU seconds, peak RSS (read before the
 * peak measurement and the dispatch report load anything), and last
 * "train_s: S". */
static inline void bench_report(const nn_history *h, int epochs, const nn_params *params,
                                double samples, double flops, const char *what, double secs,
                                double cpu, int threads) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  if (h) /* else the caller printed its own */
    printf("loss: epoch 1 %.4f, epoch %d %.4f\n", nn_history_get(h, "loss", 0), epochs,
           nn_history_get(h, "loss", epochs - 1));
  printf("params_hash: %016llx\n", bench_params_hash(params));
  printf("samples_per_s: %.0f\n", samples / secs);
  bench_peak pk = bench_sgemm_peak(3);
  double gf = flops / secs * 1e-9;
  printf("gflops: %.2f (%s flops %.3g; %.0f%% of %d x the core's sgemm peak of %.1f, %s)\n", gf,
         what, flops, pk.gflops > 0 ? 100.0 * gf / (pk.gflops * threads) : 0.0, threads, pk.gflops,
         pk.kernel);
  printf("gemm: %s\n", ad_gemm_backend());
  printf("cpu_s: %.4f (user + system, all threads)\n", cpu);
  printf("peak_rss_mb: %.1f\n", (double)ru.ru_maxrss / 1024.0);
  printf("train_s: %.4f\n", secs);
}

#endif
