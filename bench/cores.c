/* cores: are two CPUs of this machine two cores right now?
 *
 * On a virtual machine the two CPUs the guest sees can be two hyperthreads
 * of one physical core, or share it with another guest, and the host can
 * move them between the two states from one second to the next. Then two
 * threads get about half a core each and no program scales, which makes a
 * two-thread speed-up measured at that moment say nothing about the code.
 * This probe measures it: the multiply-add throughput of one thread alone
 * on each CPU, then of two threads at once, one on each, and prints
 *
 *   alone_gflops: A B          each CPU alone
 *   together_gflops: C D       both at once
 *   pair_efficiency: E         min(C, D) / mean(A, B): about 1 when the
 *                              CPUs are two cores, about 0.5 when they
 *                              share one
 *
 * The work is independent chains of vector multiply-adds in registers (no
 * memory traffic), with the widest instructions the CPU has (AVX-512,
 * AVX2 with FMA, else the compiler's baseline vectors), which is what the
 * engine's matrix products keep busy. bench/compare.py runs it around its
 * two-thread measurements. Each phase lasts --ms milliseconds (default
 * 100), so a probe takes about 3 x that.
 *
 * Exit status 77 (a skip to meson's test runner) when the process may use
 * only one CPU, or its threads may not be pinned; 1 when a CPU given with
 * --cpus is not one the process may use. Linux only (thread affinity).
 *
 *   cores [--ms MS] [--cpus A,B]   (default: the first two CPUs allowed) */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define CORES_X86 1
#endif

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Twelve independent chains x <- x a + b per round, `rounds` rounds: 12
 * vectors' worth of multiply-adds, each chain waiting only on itself, so a
 * core with two units of four cycles' latency stays busy. The chains tend
 * to b / (1 - a), never to overflow or subnormals. Returns the flops done
 * and writes a value depending on every chain (so none is optimized out). */
#define CHAINS(V, SET1, FMA, LANES)                                                                \
  V a = SET1(0.999999f), b = SET1(1e-7f);                                                          \
  V x0 = SET1(0.1f), x1 = SET1(0.2f), x2 = SET1(0.3f), x3 = SET1(0.4f), x4 = SET1(0.5f),           \
    x5 = SET1(0.6f), x6 = SET1(0.7f), x7 = SET1(0.8f), x8 = SET1(0.9f), x9 = SET1(1.0f),           \
    x10 = SET1(1.1f), x11 = SET1(1.2f);                                                            \
  for (long r = 0; r < rounds; r++) {                                                              \
    x0 = FMA(x0, a, b), x1 = FMA(x1, a, b), x2 = FMA(x2, a, b), x3 = FMA(x3, a, b);                \
    x4 = FMA(x4, a, b), x5 = FMA(x5, a, b), x6 = FMA(x6, a, b), x7 = FMA(x7, a, b);                \
    x8 = FMA(x8, a, b), x9 = FMA(x9, a, b), x10 = FMA(x10, a, b), x11 = FMA(x11, a, b);            \
  }                                                                                                \
  V s = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9 + x10 + x11;                               \
  float out = 0;                                                                                   \
  for (int i = 0; i < (LANES); i++) out += s[i];                                                   \
  *sink = out;                                                                                     \
  return 12.0 * 2 * (LANES) * (double)rounds;

#ifdef CORES_X86
__attribute__((target("avx512f"))) static double chains_avx512(long rounds, float *sink) {
  CHAINS(__m512, _mm512_set1_ps, _mm512_fmadd_ps, 16)
}
__attribute__((target("avx2,fma"))) static double chains_avx2(long rounds, float *sink) {
  CHAINS(__m256, _mm256_set1_ps, _mm256_fmadd_ps, 8)
}
#endif

typedef float vec4 __attribute__((vector_size(16)));
static vec4 set1_4(float v) { return (vec4){v, v, v, v}; }
static vec4 muladd_4(vec4 x, vec4 a, vec4 b) { return x * a + b; }
static double chains_base(long rounds, float *sink) { CHAINS(vec4, set1_4, muladd_4, 4) }

typedef double (*chains_fn)(long rounds, float *sink);

/* The widest multiply-adds this CPU has, and their name in *name. */
static chains_fn pick_chains(const char **name) {
#ifdef CORES_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return *name = "AVX-512", chains_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return *name = "AVX2 with FMA", chains_avx2;
#endif
  return *name = "baseline vectors", chains_base;
}

typedef struct worker {
  int cpu;
  double ms;
  chains_fn fn;
  pthread_barrier_t *start; /* NULL: run at once */
  double gflops;            /* result */
  int err;                  /* nonzero: could not pin to cpu */
} worker;

/* Runs chains on w->cpu for about w->ms milliseconds, in slices of 240,000
 * vector multiply-adds (about 0.05 ms on a 2.5 GHz core with two units),
 * and stores the throughput. (Its own clock: this probe does not link the
 * engine, whose benchmarks share bench_util.h.) */
static void *work(void *arg) {
  worker *w = arg;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(w->cpu, &set);
  w->err = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  if (w->start) pthread_barrier_wait(w->start);
  if (w->err) return NULL;
  float sink;
  w->fn(1000, &sink); /* wakes the vector units */
  double flops = 0, t0 = now_s(), t = t0;
  while (t - t0 < w->ms * 1e-3) {
    flops += w->fn(20000, &sink);
    t = now_s();
  }
  w->gflops = flops / (t - t0) * 1e-9;
  return NULL;
}

static int usage(void) {
  fprintf(stderr, "usage: cores [--ms MS] [--cpus A,B]\n");
  return 2;
}

/* A CPU number from text (the whole of it, with no sign), or -1. */
static int cpu_number(const char *s, const char *stop) {
  if (s == stop || *s < '0' || *s > '9') return -1;
  char *end;
  long v = strtol(s, &end, 10);
  return end == stop && v >= 0 && v < CPU_SETSIZE ? (int)v : -1;
}

int main(int argc, char **argv) {
  double ms = 100;
  int cpu[2] = {-1, -1};
  bool chosen = false;
  for (int i = 1; i < argc; i++) {
    char *end;
    if (!strcmp(argv[i], "--ms") && i + 1 < argc) {
      ms = strtod(argv[++i], &end);
      if (*end || !(ms >= 1 && ms <= 60000)) return usage();
    } else if (!strcmp(argv[i], "--cpus") && i + 1 < argc) {
      const char *a = argv[++i], *comma = strchr(a, ',');
      if (!comma) return usage();
      cpu[0] = cpu_number(a, comma), cpu[1] = cpu_number(comma + 1, comma + 1 + strlen(comma + 1));
      if (cpu[0] < 0 || cpu[1] < 0 || cpu[0] == cpu[1]) return usage();
      chosen = true;
    } else {
      return usage();
    }
  }
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed)) {
    perror("cores: sched_getaffinity");
    return 1;
  }
  if (!chosen) { /* the first two CPUs this process may use */
    for (int c = 0, k = 0; c < CPU_SETSIZE && k < 2; c++)
      if (CPU_ISSET(c, &allowed)) cpu[k++] = c;
    if (cpu[1] < 0) { /* 77: "skipped" to meson's test runner */
      fprintf(stderr, "cores: this process may use only one CPU: nothing to compare\n");
      return 77;
    }
  }
  for (int k = 0; k < 2; k++)
    if (!CPU_ISSET(cpu[k], &allowed)) {
      fprintf(stderr, "cores: this process may not run on CPU %d\n", cpu[k]);
      return 1;
    }
  const char *isa;
  chains_fn fn = pick_chains(&isa);
  worker alone[2], both[2];
  for (int k = 0; k < 2; k++) { /* each CPU alone, one after the other */
    alone[k] = (worker){.cpu = cpu[k], .ms = ms, .fn = fn};
    work(&alone[k]);
  }
  pthread_barrier_t start;
  if (pthread_barrier_init(&start, NULL, 2)) {
    fprintf(stderr, "cores: cannot create a barrier\n");
    return 1;
  }
  pthread_t th;
  for (int k = 0; k < 2; k++)
    both[k] = (worker){.cpu = cpu[k], .ms = ms, .fn = fn, .start = &start};
  if (pthread_create(&th, NULL, work, &both[1])) {
    fprintf(stderr, "cores: cannot start a thread\n");
    return 1;
  }
  work(&both[0]);
  pthread_join(th, NULL);
  pthread_barrier_destroy(&start);
  for (int k = 0; k < 2; k++)
    if (alone[k].err || both[k].err) { /* allowed, yet pinning was refused: the environment */
      fprintf(stderr, "cores: cannot pin a thread to CPU %d\n", cpu[k]);
      return chosen ? 1 : 77;
    }
  if (!(alone[0].gflops > 0 && alone[1].gflops > 0 && both[0].gflops > 0 && both[1].gflops > 0)) {
    fprintf(stderr, "cores: a phase measured no work (clock?)\n");
    return 1;
  }
  double mean = (alone[0].gflops + alone[1].gflops) / 2;
  double low = both[0].gflops < both[1].gflops ? both[0].gflops : both[1].gflops;
  printf("cores: CPUs %d and %d, %s\n", cpu[0], cpu[1], isa);
  printf("alone_gflops: %.1f %.1f\n", alone[0].gflops, alone[1].gflops);
  printf("together_gflops: %.1f %.1f\n", both[0].gflops, both[1].gflops);
  printf("pair_efficiency: %.2f\n", low / mean);
  return 0;
}
