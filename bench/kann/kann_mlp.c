/* kann_mlp: bench/mlp's training run written against KANN's public API
 * (kann.h, kautodiff.h; github attractivechaos/kann, MIT), for
 * bench/compare_kann.py. KANN is not part of this tree and meson never
 * builds this file: compare_kann.py compiles it with KANN's kann.c and
 * kautodiff.c from a directory the user names.
 *
 *   kann_mlp [--layers 784,64,64,10] [--batch 32] [--epochs 5]
 *            [--samples 8000] [--threads 1] [--seed 1] [--decay 0.9]
 *
 * The same run as `bench/mlp --optim rmsprop`: dense layers of the given
 * widths with ReLU between them (kann_layer_dense, kad_relu), softmax
 * cross-entropy on the last (kann_layer_cost with KANN_C_CEM), RMSprop at
 * lr 1e-3 (kann_RMSprop; decay 0.9, the value of KANN's own
 * kann_train_fnn1, given to ours as --alpha; KANN's formula has its eps
 * 1e-6 inside the square root, ours adds 1e-8 to the root).
 * Data: as bench/mlp's, from KANN's generator (other numbers, the same
 * distribution): --samples rows of uniform [0,1) features and labels
 * argmax_c ((x - 0.5) T)_c for a teacher T of normal entries, made before
 * the clock starts. Training, timed: each epoch shuffles the rows
 * (kann_shuffle), then per mini-batch copies the rows and one-hot labels
 * into the bound input and truth buffers, computes the cost and the
 * gradients (kann_cost; over --threads threads with kann_mt, which splits
 * the batch) and takes an RMSprop step, as KANN's own kann_train_fnn1
 * does (without its validation split). The last batch of an epoch is
 * smaller when the batch does not divide the samples, as in nn_fit.
 *
 * Prints the configuration, the mean loss of every epoch, the loss of the
 * first and last epoch, samples/s, GFLOPS (bench/mlp's count), the CPU
 * seconds of the loop, peak RSS and last "train_s: S", the wall seconds
 * of the training loop alone. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "kann.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_LAYERS 16

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

static int usage(void) {
  fprintf(stderr, "usage: kann_mlp [--layers 784,64,64,10] [--batch 32] [--epochs 5]\n"
                  "                [--samples 8000] [--threads 1] [--seed 1] [--decay 0.9]\n");
  return 2;
}

static int parse_int(const char *v, long lo, long *out) {
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (!*v || *end || errno || n < lo || n > 1000000000L) return 0;
  *out = n;
  return 1;
}

static int parse_layers(const char *v, int *nl, int *w) {
  *nl = 0;
  while (*v) {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (end == v || errno || n < 1 || n > 1000000L || *nl > MAX_LAYERS) return 0;
    w[(*nl)++] = (int)n;
    if (*end == ',')
      v = end + 1;
    else if (*end == 0)
      v = end;
    else
      return 0;
  }
  return *nl >= 2;
}

int main(int argc, char **argv) {
  int nl = 4, w[MAX_LAYERS + 1] = {784, 64, 64, 10};
  long batch = 32, epochs = 5, samples = 8000, threads = 1, seed = 1;
  float decay = 0.9f;
  for (int i = 1; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int ok = v != NULL;
    if (ok && !strcmp(a, "--layers"))
      ok = parse_layers(v, &nl, w);
    else if (ok && !strcmp(a, "--batch"))
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
    if (!ok) return usage();
  }
  int in = w[0], classes = w[nl - 1];

  /* data: features and labels, before the clock */
  kann_srand((uint64_t)seed);
  float *x = malloc((size_t)samples * (size_t)in * sizeof *x);
  int *label = malloc((size_t)samples * sizeof *label);
  double *teacher = malloc((size_t)in * (size_t)classes * sizeof *teacher);
  double *score = malloc((size_t)classes * sizeof *score);
  if (!x || !label || !teacher || !score) {
    fprintf(stderr, "kann_mlp: out of memory for the data\n");
    return 1;
  }
  for (long i = 0; i < (long)in * classes; i++) teacher[i] = kad_drand_normal(0);
  for (long r = 0; r < samples; r++) {
    for (int c = 0; c < classes; c++) score[c] = 0;
    for (int k = 0; k < in; k++) {
      double u = kad_drand(0);
      x[r * in + k] = (float)u;
      for (int c = 0; c < classes; c++) score[c] += (u - 0.5) * teacher[(long)k * classes + c];
    }
    int best = 0;
    for (int c = 1; c < classes; c++)
      if (score[c] > score[best]) best = c;
    label[r] = best;
  }
  free(teacher);
  free(score);

  /* the network, KANN's way */
  kann_srand((uint64_t)seed + 1);
  kad_node_t *t = kann_layer_input(in);
  for (int l = 1; l + 1 < nl; l++) t = kad_relu(kann_layer_dense(t, w[l]));
  kann_t *ann = kann_new(kann_layer_cost(t, classes, KANN_C_CEM), 0);
  if (!ann) {
    fprintf(stderr, "kann_mlp: kann_new failed\n");
    return 1;
  }
  int n_var = kann_size_var(ann);
  float *r = calloc((size_t)n_var, sizeof *r);
  float *xb = malloc((size_t)batch * (size_t)in * sizeof *xb);
  float *yb = malloc((size_t)batch * (size_t)classes * sizeof *yb);
  int *shuf = malloc((size_t)samples * sizeof *shuf);
  double *epoch_loss = malloc((size_t)epochs * sizeof *epoch_loss);
  if (!r || !xb || !yb || !shuf || !epoch_loss) {
    fprintf(stderr, "kann_mlp: out of memory\n");
    return 1;
  }
  for (long i = 0; i < samples; i++) shuf[i] = (int)i;
  if (threads > 1) kann_mt(ann, (int)threads, (int)batch);
  kann_feed_bind(ann, KANN_F_IN, 0, &xb);
  kann_feed_bind(ann, KANN_F_TRUTH, 0, &yb);
  kann_switch(ann, 1);

  printf("kann_mlp: layers");
  for (int l = 0; l < nl; l++) printf("%c%d", l ? ',' : ' ', w[l]);
  printf(", batch %ld, %ld epochs x %ld samples, rmsprop (lr 1e-3, decay %g), f32, KANN %s, "
         "%ld threads (kann_mt)\n",
         batch, epochs, samples, (double)decay, KANN_VERSION, threads);
  printf("parameters: %d\n", n_var);

  double c0 = cpu_s(), t0 = now_s();
  for (long e = 0; e < epochs; e++) {
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
      sum += (double)kann_cost(ann, 0, 1) * ms;
      kann_RMSprop(n_var, 1e-3f, NULL, decay, ann->g, ann->x, r);
    }
    epoch_loss[e] = sum / (double)samples;
  }
  double secs = now_s() - t0, cpu = cpu_s() - c0;

  double weights = 0, first = (double)w[0] * w[1];
  for (int l = 0; l + 1 < nl; l++) weights += (double)w[l] * w[l + 1];
  double total = (double)samples * (double)epochs;
  double flops = total * (6.0 * weights - 2.0 * first);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("loss_epochs:");
  for (long e = 0; e < epochs; e++) printf(" %.4f", epoch_loss[e]);
  printf("\nloss: epoch 1 %.4f, epoch %ld %.4f\n", epoch_loss[0], epochs, epoch_loss[epochs - 1]);
  printf("samples_per_s: %.0f\n", total / secs);
  printf("gflops: %.2f (matmul flops %.3g)\n", flops / secs * 1e-9, flops);
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
