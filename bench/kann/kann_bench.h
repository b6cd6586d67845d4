/* kann_bench.h: what bench/kann's drivers share (header-only, compiled
 * with KANN's kann.c and kautodiff.c by bench/compare_kann.py): the
 * clocks, the flags every driver takes, the timed training loop and the
 * last lines of the report, which compare_kann.py reads. */
#ifndef KANN_BENCH_H
#define KANN_BENCH_H

#include "kann.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* The flags of every driver (their defaults are each driver's). */
typedef struct kb_opts {
  long batch, epochs, samples, threads, seed;
  float decay; /* RMSprop's */
} kb_opts;

static double kb_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double kb_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
         (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static int kb_parse_int(const char *v, long lo, long *out) {
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (!*v || *end || errno || n < lo || n > 1000000000L) return 0;
  *out = n;
  return 1;
}

/* Flag a with value v (NULL: none given) into o: 1 taken, 0 a bad value,
 * -1 not one of the common flags. */
static int kb_parse_flag(const char *a, const char *v, kb_opts *o) {
  static const struct {
    const char *name;
    long lo;
    size_t off;
  } ints[] = {{"--batch", 1, offsetof(kb_opts, batch)},
              {"--epochs", 1, offsetof(kb_opts, epochs)},
              {"--samples", 1, offsetof(kb_opts, samples)},
              {"--threads", 1, offsetof(kb_opts, threads)},
              {"--seed", 0, offsetof(kb_opts, seed)}};
  for (size_t k = 0; k < sizeof ints / sizeof *ints; k++)
    if (!strcmp(a, ints[k].name))
      return v && kb_parse_int(v, ints[k].lo, (long *)((char *)o + ints[k].off));
  if (!strcmp(a, "--decay")) {
    if (!v) return 0;
    char *end;
    o->decay = strtof(v, &end);
    return *v && !*end && o->decay >= 0.0f && o->decay < 1.0f;
  }
  return -1;
}

/* The timed loop, o->epochs epochs: shuffle, copy each batch of rows of x
 * (in floats each) and its one-hot labels, kann_cost over the threads of
 * kann_mt, one RMSprop step (lr 1e-3). epoch_loss[e] gets epoch e's mean
 * loss, quarter[q] / quarter_n[q] the summed loss and rows of the first
 * epoch's quarter q; *cpu the CPU seconds. Returns the wall seconds.
 * Returns -1 when out of memory, after a message. */
static double kb_train(kann_t *ann, const float *x, const int *label, int in, int classes,
                       const kb_opts *o, double *epoch_loss, double quarter[4], long quarter_n[4],
                       double *cpu) {
  long batch = o->batch, samples = o->samples;
  int n_var = kann_size_var(ann);
  float *r = calloc((size_t)n_var, sizeof *r);
  float *xb = malloc((size_t)batch * (size_t)in * sizeof *xb);
  float *yb = malloc((size_t)batch * (size_t)classes * sizeof *yb);
  int *shuf = malloc((size_t)samples * sizeof *shuf);
  if (!r || !xb || !yb || !shuf) {
    fprintf(stderr, "kann_bench: out of memory\n");
    free(r), free(xb), free(yb), free(shuf);
    return -1;
  }
  for (long i = 0; i < samples; i++) shuf[i] = (int)i;
  if (o->threads > 1) kann_mt(ann, (int)o->threads, (int)batch);
  kann_feed_bind(ann, KANN_F_IN, 0, &xb);
  kann_feed_bind(ann, KANN_F_TRUTH, 0, &yb);
  kann_switch(ann, 1);
  for (int q = 0; q < 4; q++) quarter[q] = 0, quarter_n[q] = 0;
  double c0 = kb_cpu_s(), t0 = kb_now_s();
  for (long e = 0; e < o->epochs; e++) {
    double sum = 0;
    kann_shuffle((int)samples, shuf);
    for (long s = 0; s < samples; s += batch) {
      int ms = (int)(samples - s < batch ? samples - s : batch);
      memset(yb, 0, (size_t)ms * (size_t)classes * sizeof *yb);
      for (int b = 0; b < ms; b++) {
        int row = shuf[s + b];
        memcpy(&xb[(long)b * in], &x[(long)row * in], (size_t)in * sizeof *xb);
        yb[(long)b * classes + label[row]] = 1.0f;
      }
      kann_set_batch_size(ann, ms);
      double cost = (double)kann_cost(ann, 0, 1) * ms;
      sum += cost;
      if (e == 0) quarter[4 * s / samples] += cost, quarter_n[4 * s / samples] += ms;
      kann_RMSprop(n_var, 1e-3f, NULL, o->decay, ann->g, ann->x, r);
    }
    epoch_loss[e] = sum / (double)samples;
  }
  double secs = kb_now_s() - t0;
  *cpu = kb_cpu_s() - c0;
  free(r), free(xb), free(yb), free(shuf);
  return secs;
}

/* The report's last lines: the first and last epoch's loss, samples/s,
 * GFLOPS of flops (what names the count), CPU seconds, peak RSS and
 * "train_s: S". */
static void kb_report(const kb_opts *o, const double *epoch_loss, double secs, double cpu,
                      double flops, const char *what) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double total = (double)o->samples * (double)o->epochs;
  printf("loss: epoch 1 %.4f, epoch %ld %.4f\n", epoch_loss[0], o->epochs,
         epoch_loss[o->epochs - 1]);
  printf("samples_per_s: %.0f\n", total / secs);
  printf("gflops: %.2f (%s %.3g)\n", flops / secs * 1e-9, what, flops);
  printf("cpu_s: %.4f (user + system, all threads)\n", cpu);
  printf("peak_rss_mb: %.1f\n", (double)ru.ru_maxrss / 1024.0);
  printf("train_s: %.4f\n", secs);
}

#endif /* KANN_BENCH_H */
