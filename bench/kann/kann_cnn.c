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
#include "kann_bench.h"

enum { PIX = 28 * 28, CLASSES = 10 };

int main(int argc, char **argv) {
  kb_opts o = {.batch = 64, .epochs = 1, .samples = 8000, .threads = 1, .seed = 1, .decay = 0.9f};
  for (int i = 1; i < argc; i += 2) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (kb_parse_flag(argv[i], v, &o) != 1) {
      fprintf(stderr, "usage: kann_cnn [--batch 64] [--epochs 1] [--samples 8000] [--threads 1]\n"
                      "                [--seed 1] [--decay 0.9]\n");
      return 2;
    }
  }
  long samples = o.samples, seed = o.seed;

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
  double *epoch_loss = malloc((size_t)o.epochs * sizeof *epoch_loss);
  if (!epoch_loss) {
    fprintf(stderr, "kann_cnn: out of memory\n");
    return 1;
  }

  printf("kann_cnn: mnist_cnn's network, batch %ld, %ld epochs x %ld samples, rmsprop (lr 1e-3, "
         "decay %g), f32, KANN %s, %ld threads (kann_mt)\n",
         o.batch, o.epochs, samples, (double)o.decay, KANN_VERSION, o.threads);
  printf("parameters: %d\n", n_var);

  double quarter[4], cpu;
  long quarter_n[4];
  double secs = kb_train(ann, x, label, PIX, CLASSES, &o, epoch_loss, quarter, quarter_n, &cpu);
  if (secs < 0) return 1;

  double conv1 = 32.0 * 26 * 26 * 9, conv2 = 32.0 * 24 * 24 * 32 * 9, d1 = 4608.0 * 128,
         d2 = 128.0 * 10, fwd = conv1 + conv2 + d1 + d2;
  double flops = (double)samples * (double)o.epochs * 2 * (2 * fwd + fwd - conv1);
  printf("loss_quarters of epoch 1:");
  for (int q = 0; q < 4; q++) printf(" %.4f", quarter_n[q] ? quarter[q] / quarter_n[q] : 0.0);
  printf("\n");
  kb_report(&o, epoch_loss, secs, cpu, flops, "conv and dense flops");

  kann_delete(ann);
  free(x);
  free(label);
  free(epoch_loss);
  return 0;
}
