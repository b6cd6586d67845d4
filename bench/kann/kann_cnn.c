/* kann_cnn: bench/cnn's training run written against KANN's public API
 * (kann.h, kautodiff.h; github attractivechaos/kann, MIT), for
 * bench/compare_kann.py, which compiles it with KANN's kann.c and
 * kautodiff.c; meson never builds it (KANN is not part of this tree).
 *
 *   kann_cnn [--batch 64] [--epochs 1] [--samples 8000] [--threads 1]
 *            [--seed 1] [--decay 0.9]
 *
 * The same run as `bench/cnn --optim rmsprop --alpha 0.9`: the network of
 * examples/mnist_cnn (which is also KANN's examples/mnist-cnn's): a 1x28x28
 * input (kad_feed), Conv2d(1 -> 32, 3x3) relu, Conv2d(32 -> 32, 3x3) relu
 * (kann_layer_conv2d, stride 1, no padding), max-pool 2x2 stride 2
 * (kad_max2d), dropout 0.2 (kann_layer_dropout), dense 4608 -> 128 relu,
 * dropout 0.2, dense 128 -> 10 with softmax cross-entropy (kann_layer_cost,
 * KANN_C_CEM); RMSprop lr 1e-3 with --decay (kann_RMSprop). Data: as
 * bench/cnn's, from KANN's generator (other numbers, the same
 * distribution): images of uniform [0,1) pixels labelled by which of ten
 * random normal 28x28 templates T_c maximises <x - 0.5, T_c>, made before
 * the clock starts. The timed loop is kann_mlp.c's: shuffle, copy the
 * batch and its one-hot labels, kann_cost over --threads (kann_mt), one
 * RMSprop step.
 *
 * Prints the configuration, the mean loss of the epochs and of each
 * quarter of the first, GFLOPS (bench/cnn's count), CPU seconds, peak RSS
 * and last "train_s: S". */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "kann.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

enum { PIX = 28 * 28, CLASSES = 10 };

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
         (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static int parse_int(const char *v, long lo, long *out) {
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (!*v || *end || errno || n < lo || n > 1000000000L) return 0;
  *out = n;
  return 1;
}

int main(int argc, char **argv) {
  long batch = 64, epochs = 1, samples = 8000, threads = 1, seed = 1;
  float decay = 0.9f;
  for (int i = 1; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int ok = v != NULL;
    if (ok && !strcmp(a, "--batch"))
      ok = parse_int(v, 1, &batch);
    else if (ok && !strcmp(a, "--epochs"))
      ok = parse_int(v, 1, &epochs);
    else if (ok && !strcmp(a, "--samples"))
      ok = parse_int(v, 1, &samples);
    else if (ok && !strcmp(a, "--threads"))
      ok = parse_int(v, 1, &threads);
    else if (ok && !strcmp(a, "--seed"))
      ok = parse_int(v, 0, &seed);
    else if (ok && !strcmp(a, "--decay")) {
      char *end;
      decay = strtof(v, &end);
      ok = *v && !*end && decay >= 0.0f && decay < 1.0f;
    } else
      ok = 0;
    if (!ok) {
      fprintf(stderr, "usage: kann_cnn [--batch 64] [--epochs 1] [--samples 8000] [--threads 1]\n"
                      "                [--seed 1] [--decay 0.9]\n");
      return 2;
    }
  }

  /* data, before the clock */
  kann_srand((uint64_t)seed);
  float *x = malloc((size_t)samples * PIX * sizeof *x);
  int *label = malloc((size_t)samples * sizeof *label);
  double(*tmpl)[PIX] = malloc(CLASSES * sizeof *tmpl);
  if (!x || !label || !tmpl) {
    fprintf(stderr, "kann_cnn: out of memory for the data\n");
    return 1;
  }
  for (int c = 0; c < CLASSES; c++)
    for (int k = 0; k < PIX; k++) tmpl[c][k] = kad_drand_normal(0);
  for (long r = 0; r < samples; r++) {
    double score[CLASSES] = {0};
    for (int k = 0; k < PIX; k++) {
      double u = kad_drand(0);
      x[r * PIX + k] = (float)u;
      for (int c = 0; c < CLASSES; c++) score[c] += (u - 0.5) * tmpl[c][k];
    }
    int best = 0;
    for (int c = 1; c < CLASSES; c++)
      if (score[c] > score[best]) best = c;
    label[r] = best;
  }
  free(tmpl);

  /* the network */
  kann_srand((uint64_t)seed + 1);
  kad_node_t *t = kad_feed(4, 1, 1, 28, 28);
  t->ext_flag |= KANN_F_IN;
  t = kad_relu(kann_layer_conv2d(t, 32, 3, 3, 1, 1, 0, 0));
  t = kad_relu(kann_layer_conv2d(t, 32, 3, 3, 1, 1, 0, 0));
  t = kad_max2d(t, 2, 2, 2, 2, 0, 0);
  t = kann_layer_dropout(t, 0.2f);
  t = kad_relu(kann_layer_dense(t, 128));
  t = kann_layer_dropout(t, 0.2f);
  kann_t *ann = kann_new(kann_layer_cost(t, CLASSES, KANN_C_CEM), 0);
  if (!ann) {
    fprintf(stderr, "kann_cnn: kann_new failed\n");
    return 1;
  }
  int n_var = kann_size_var(ann);
  float *r = calloc((size_t)n_var, sizeof *r);
  float *xb = malloc((size_t)batch * PIX * sizeof *xb);
  float *yb = malloc((size_t)batch * CLASSES * sizeof *yb);
  int *shuf = malloc((size_t)samples * sizeof *shuf);
  double *epoch_loss = malloc((size_t)epochs * sizeof *epoch_loss);
  if (!r || !xb || !yb || !shuf || !epoch_loss) {
    fprintf(stderr, "kann_cnn: out of memory\n");
    return 1;
  }
  if (threads > 1) kann_mt(ann, (int)threads, (int)batch);
  kann_feed_bind(ann, KANN_F_IN, 0, &xb);
  kann_feed_bind(ann, KANN_F_TRUTH, 0, &yb);
  kann_switch(ann, 1);

  printf("kann_cnn: mnist_cnn's network, batch %ld, %ld epochs x %ld samples, rmsprop (lr 1e-3, "
         "decay %g), f32, KANN %s, %ld threads (kann_mt)\n",
         batch, epochs, samples, (double)decay, KANN_VERSION, threads);
  printf("parameters: %d\n", n_var);

  double quarter[4] = {0};
  long quarter_n[4] = {0};
  double c0 = cpu_s(), t0 = now_s();
  for (long e = 0; e < epochs; e++) {
    double sum = 0;
    kann_shuffle((int)samples, shuf);
    for (long s = 0; s < samples; s += batch) {
      int ms = (int)(samples - s < batch ? samples - s : batch);
      memset(yb, 0, (size_t)ms * CLASSES * sizeof *yb);
      for (int b = 0; b < ms; b++) {
        int row = shuf[s + b];
        memcpy(&xb[(long)b * PIX], &x[(long)row * PIX], PIX * sizeof *xb);
        yb[(long)b * CLASSES + label[row]] = 1.0f;
      }
      kann_set_batch_size(ann, ms);
      double cost = (double)kann_cost(ann, 0, 1) * ms;
      sum += cost;
      if (e == 0) quarter[4 * s / samples] += cost, quarter_n[4 * s / samples] += ms;
      kann_RMSprop(n_var, 1e-3f, NULL, decay, ann->g, ann->x, r);
    }
    epoch_loss[e] = sum / (double)samples;
  }
  double secs = now_s() - t0, cpu = cpu_s() - c0;

  double conv1 = 32.0 * 26 * 26 * 9, conv2 = 32.0 * 24 * 24 * 32 * 9, d1 = 4608.0 * 128,
         d2 = 128.0 * 10, fwd = conv1 + conv2 + d1 + d2;
  double total = (double)samples * (double)epochs, flops = total * 2 * (2 * fwd + fwd - conv1);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("loss_quarters of epoch 1:");
  for (int q = 0; q < 4; q++) printf(" %.4f", quarter_n[q] ? quarter[q] / quarter_n[q] : 0.0);
  printf("\nloss: epoch 1 %.4f, epoch %ld %.4f\n", epoch_loss[0], epochs, epoch_loss[epochs - 1]);
  printf("samples_per_s: %.0f\n", total / secs);
  printf("gflops: %.2f (conv and dense flops %.3g)\n", flops / secs * 1e-9, flops);
  printf("cpu_s: %.4f (user + system, all threads)\n", cpu);
  printf("peak_rss_mb: %.1f\n", (double)ru.ru_maxrss / 1024.0);
  printf("train_s: %.4f\n", secs);

  kann_delete(ann);
  free(x);
  free(label);
  free(r);
  free(xb);
  free(yb);
  free(shuf);
  free(epoch_loss);
  return 0;
}
