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
#include "kann_bench.h"

#define MAX_LAYERS 16

static int usage(void) {
  fprintf(stderr, "usage: kann_mlp [--layers 784,64,64,10] [--batch 32] [--epochs 5]\n"
                  "                [--samples 8000] [--threads 1] [--seed 1] [--decay 0.9]\n");
  return 2;
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
  kb_opts o = {.batch = 32, .epochs = 5, .samples = 8000, .threads = 1, .seed = 1, .decay = 0.9f};
  for (int i = 1; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int ok = !strcmp(a, "--layers") ? v && parse_layers(v, &nl, w) : kb_parse_flag(a, v, &o);
    if (ok != 1) return usage();
  }
  long samples = o.samples, seed = o.seed;
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
  double *epoch_loss = malloc((size_t)o.epochs * sizeof *epoch_loss);
  if (!epoch_loss) {
    fprintf(stderr, "kann_mlp: out of memory\n");
    return 1;
  }

  printf("kann_mlp: layers");
  for (int l = 0; l < nl; l++) printf("%c%d", l ? ',' : ' ', w[l]);
  printf(", batch %ld, %ld epochs x %ld samples, rmsprop (lr 1e-3, decay %g), f32, KANN %s, "
         "%ld threads (kann_mt)\n",
         o.batch, o.epochs, samples, (double)o.decay, KANN_VERSION, o.threads);
  printf("parameters: %d\n", n_var);

  double quarter[4], cpu;
  long quarter_n[4];
  double secs = kb_train(ann, x, label, in, classes, &o, epoch_loss, quarter, quarter_n, &cpu);
  if (secs < 0) return 1;

  double weights = 0, first = (double)w[0] * w[1];
  for (int l = 0; l + 1 < nl; l++) weights += (double)w[l] * w[l + 1];
  double flops = (double)samples * (double)o.epochs * (6.0 * weights - 2.0 * first);
  printf("loss_epochs:");
  for (long e = 0; e < o.epochs; e++) printf(" %.4f", epoch_loss[e]);
  printf("\n");
  kb_report(&o, epoch_loss, secs, cpu, flops, "matmul flops");

  kann_delete(ann);
  free(x);
  free(label);
  free(epoch_loss);
  return 0;
}
