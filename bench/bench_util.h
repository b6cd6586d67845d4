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

/* Where the threads' time went in the timed run (ad_thread_stats): call
 * bench_threads_begin as it starts and bench_threads_end with its wall
 * seconds and --threads as it ends, which prints one "threads_time:" line
 * when there is more than one thread. The workers' idle time is the run's serial part
 * (code on the calling thread alone) plus their waits for work; the
 * caller's wait is time lost at the ends of loops to a slower or late
 * worker. Alternating runs (--alternate) leave the workers idle in their
 * one-thread blocks, which the line then says. */
static inline void bench_threads_begin(void) { ad_thread_stats_get(NULL, true); }
static inline void bench_threads_end(double secs, int threads, bool alternating) {
  int workers = (threads < 64 ? threads : 64) - 1; /* ad_set_num_threads caps it at 64 */
  if (workers < 1 || secs <= 0) return;
  ad_thread_stats st;
  ad_thread_stats_get(&st, false);
  printf("threads_time: workers busy %.1f%% of the run%s, the caller %.3f s handing out loops "
         "and in its own chunks and %.3f s (%.1f%%) waiting at loop ends for the workers', %lld "
         "loops\n",
         100.0 * st.worker_busy_s / (workers * secs),
         alternating ? " (which alternates with one thread)" : "", st.caller_busy_s,
         st.caller_wait_s, 100.0 * st.caller_wait_s / secs, (long long)st.loops);
}

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

/* --alternate K (bench/mlp, bench/rnn): the training loop runs blocks of K
 * steps on one thread and on --threads threads in turn, in one process, so
 * that both see the same moments of a shared machine (whole runs a minute
 * apart can differ by more than the speed-up measured). The bits do not
 * depend on the thread count, so the training is the same. bench_alt_report
 * prints each mode's median time per step and the median over neighbouring
 * blocks (one thread, then threads) of their ratio. */
typedef struct bench_alt {
  int k, threads; /* k == 0: off */
  int n, cap;     /* blocks timed, room for */
  double *secs;   /* block i's seconds: even i one thread, odd i threads */
  double t0;
  bool failed; /* out of memory for the blocks, or the pool refused a count */
} bench_alt;

/* Starts the first block (one thread). */
static inline void bench_alt_begin(bench_alt *a) {
  if (!a->k) return;
  a->failed = ad_set_num_threads(1) != AD_OK;
  a->t0 = bench_now_s();
}

/* After step number done (1-based): ends a block every k steps and
 * switches the thread count for the next. */
static inline void bench_alt_step(bench_alt *a, long done) {
  if (!a->k || done % a->k) return;
  double t = bench_now_s();
  if (a->n == a->cap) {
    int cap = a->cap ? 2 * a->cap : 64;
    double *p = realloc(a->secs, (size_t)cap * sizeof *p);
    if (!p) {
      a->failed = true;
      return;
    }
    a->secs = p;
    a->cap = cap;
  }
  a->secs[a->n++] = t - a->t0;
  if (ad_set_num_threads(a->n % 2 ? a->threads : 1) != AD_OK) a->failed = true;
  a->t0 = bench_now_s();
}

static inline int bench_cmp_double(const void *p, const void *q) {
  double x = *(const double *)p, y = *(const double *)q;
  return (x > y) - (x < y);
}

/* The median of v[0..n-1] (sorts v). */
static inline double bench_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Prints the comparison (nothing when off), restores --threads threads
 * and frees the blocks. The first pair (a warm-up) is left out. Returns
 * false, saying why, when there was none to print. */
static inline bool bench_alt_report(bench_alt *a) {
  if (!a->k) return true;
  int pairs = a->n / 2 - 1;
  bool ok = false;
  if (a->failed || pairs < 1) {
    printf("alternate: %s\n", a->failed ? "failed (memory, or the thread pool)"
                                        : "too few steps for two pairs of blocks");
  } else {
    double *one = malloc(3 * (size_t)pairs * sizeof *one), *many = one + pairs,
           *ratio = many + pairs;
    if (one) {
      for (int i = 0; i < pairs; i++) {
        one[i] = a->secs[2 * i + 2];
        many[i] = a->secs[2 * i + 3];
        ratio[i] = one[i] / many[i];
      }
      double r = bench_median(ratio, pairs), lo = ratio[pairs / 4], hi = ratio[(3 * pairs) / 4];
      printf("alternate_ms_per_step: 1 thread %.3f, %d threads %.3f (medians of %d blocks of %d "
             "steps each)\n",
             1e3 * bench_median(one, pairs) / a->k, a->threads,
             1e3 * bench_median(many, pairs) / a->k, pairs, a->k);
      printf("alternate_speedup: %.3f (median over %d neighbouring pairs; middle half %.3f-%.3f)\n",
             r, pairs, lo, hi);
      free(one);
      ok = true;
    }
  }
  free(a->secs);
  a->secs = NULL;
  ad_set_num_threads(a->threads);
  return ok;
}

#endif
