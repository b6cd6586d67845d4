/* cnn: trains the network of examples/mnist_cnn on synthetic 28x28 images
 * through the nn layer (nn_sequential + nn_fit) and times the training loop.
 *
 *   cnn [--batch 64] [--epochs 1] [--samples 8000] [--threads 1] [--seed 1]
 *       [--optim adam|rmsprop] [--alpha 0.99]
 *
 * Model: Conv2d(1 -> 32, 3x3) relu, Conv2d(32 -> 32, 3x3) relu, MaxPool 2,
 * Dropout 0.2, Flatten, Dense(4608 -> 128) relu, Dropout 0.2,
 * Dense(128 -> 10); softmax cross-entropy, Adam lr 1e-3 (bench/compare.py
 * trains the same in PyTorch), or RMSprop lr 1e-3 with smoothing constant
 * --alpha (PyTorch's defaults otherwise; bench/compare_kann.py trains the
 * same in KANN, whose only optimizer it is). Data: --samples images of
 * uniform [0,1) pixels, labelled by which of ten fixed random 28x28
 * templates correlates best with the image, generated before the clock
 * starts; nn_fit with shuffled mini-batches, silent.
 *
 * GFLOPS counts the multiply-adds of the convolutions and dense products,
 * 2 flops each: per sample the forward products, the same again for the
 * weight gradients, and the input gradients of every layer but the first
 * (its input needs none). Bias, activation, pooling, loss and optimizer
 * work is not counted. The report is bench_util.h's, last line
 * "train_s: S". */
#include "bench_util.h"

#include <string.h>

typedef struct options {
  int64_t batch, samples;
  int epochs, threads;
  unsigned long long seed;
  bool rmsprop;
  double alpha; /* RMSprop's */
} options;

static bool parse(int argc, char **argv, options *o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    long long n;
    if (!strcmp(a, "--optim")) {
      if (strcmp(v, "adam") && strcmp(v, "rmsprop")) return false;
      o->rmsprop = !strcmp(v, "rmsprop");
      continue;
    }
    if (!strcmp(a, "--alpha")) {
      char *end;
      o->alpha = strtod(v, &end);
      if (!*v || *end || !(o->alpha >= 0 && o->alpha <= 1)) return false;
      continue;
    }
    if (!bench_parse_int(v, !strcmp(a, "--seed") ? 0 : 1, &n)) return false;
    if (!strcmp(a, "--batch"))
      o->batch = n;
    else if (!strcmp(a, "--epochs"))
      o->epochs = (int)n;
    else if (!strcmp(a, "--samples"))
      o->samples = n;
    else if (!strcmp(a, "--threads"))
      o->threads = (int)n;
    else if (!strcmp(a, "--seed"))
      o->seed = (unsigned long long)n;
    else
      return false;
  }
  return argc % 2 == 1;
}

/* Images uniform in [0,1) and labels argmax_c <x - 0.5, T_c> over ten random
 * templates T_c, written straight into the tensors. */
static bool make_data(ad_ctx *ctx, const options *o, ad_tensor **x, ad_tensor **y) {
  enum { PIX = 28 * 28, CLASSES = 10 };
  int64_t xs[4] = {o->samples, 1, 28, 28};
  ad_rng rng;
  ad_rng_seed(&rng, o->seed);
  *x = ad_zeros(ctx, AD_F32, 4, xs);
  *y = ad_zeros(ctx, AD_I32, 1, xs);
  if (!*x || !*y) return false;
  static double tmpl[CLASSES][PIX];
  for (int c = 0; c < CLASSES; c++)
    for (int k = 0; k < PIX; k++) tmpl[c][k] = ad_rng_normal(&rng);
  float *px = (*x)->data;
  int32_t *lab = (*y)->data;
  for (int64_t r = 0; r < o->samples; r++) {
    double score[CLASSES] = {0};
    for (int k = 0; k < PIX; k++) {
      double v = ad_rng_uniform(&rng);
      px[r * PIX + k] = (float)v;
      for (int c = 0; c < CLASSES; c++) score[c] += (v - 0.5) * tmpl[c][k];
    }
    int best = 0;
    for (int c = 1; c < CLASSES; c++)
      if (score[c] > score[best]) best = c;
    lab[r] = best;
  }
  return true;
}

int main(int argc, char **argv) {
  options o = {.batch = 64, .samples = 8000, .epochs = 1, .threads = 1, .seed = 1, .alpha = 0.99};
  if (!parse(argc, argv, &o)) {
    fprintf(stderr, "usage: cnn [--batch 64] [--epochs 1] [--samples 8000] [--threads 1] "
                    "[--seed 1]\n"
                    "           [--optim adam|rmsprop] [--alpha 0.99]\n");
    return 2;
  }
  if (!bench_set_threads(o.threads)) {
    fprintf(stderr, "cnn: cannot start %d threads\n", o.threads);
    return 1;
  }
  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  ad_tensor *x = NULL, *y = NULL;
  if (!make_data(ctx, &o, &x, &y)) {
    fprintf(stderr, "cnn: %s\n", ad_last_error(ctx)[0] ? ad_last_error(ctx) : "out of memory");
    return 1;
  }
  ad_rng rng;
  ad_rng_seed(&rng, o.seed + 1);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_conv2d_new(ctx, 1, 32, 3, 3, &rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_conv2d_new(ctx, 32, 32, 3, 3, &rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_max_pool2d_new(ctx, 2, 2, NULL));
  nn_model_add(m, nn_dropout_new(ctx, 0.2, o.seed + 2));
  nn_model_add(m, nn_flatten_new(ctx));
  nn_model_add(m, nn_dense_new(ctx, 4608, 128, &rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_dropout_new(ctx, 0.2, o.seed + 3));
  nn_model_add(m, nn_dense_new(ctx, 128, 10, &rng, NULL));
  nn_opt_config cfg = nn_opt_defaults(o.rmsprop ? NN_OPT_RMSPROP : NN_OPT_ADAM, 1e-3);
  if (o.rmsprop) cfg.alpha = o.alpha;
  nn_optimizer *opt = nn_optimizer_new(nn_model_params(m), &cfg);
  if (!opt) {
    fprintf(stderr, "cnn: %s\n", ad_last_error(ctx));
    return 1;
  }
  printf("cnn: mnist_cnn's network, batch %lld, %d epochs x %lld samples, %s, f32, ",
         (long long)o.batch, o.epochs, (long long)o.samples, o.rmsprop ? "rmsprop" : "adam");
  bench_print_threads();
  printf("parameters: %lld\n", (long long)nn_params_numel(nn_model_params(m)));

  nn_fit_opts fo = {.epochs = o.epochs, .batch_size = o.batch, .seed = o.seed, .verbose = -1};
  nn_history *h = NULL;
  double c0 = bench_cpu_s(), t0 = bench_now_s();
  bench_threads_begin();
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, &h);
  double secs = bench_now_s() - t0, cpu = bench_cpu_s() - c0;
  bench_threads_end(secs, o.threads, false);
  if (st != AD_OK) {
    fprintf(stderr, "cnn: %s\n", ad_last_error(ctx));
    return 1;
  }
  /* multiply-adds per sample: forward of each product, weight gradients
   * alike, input gradients of all but the first convolution */
  double conv1 = 32.0 * 26 * 26 * 9, conv2 = 32.0 * 24 * 24 * 32 * 9, d1 = 4608.0 * 128,
         d2 = 128.0 * 10, fwd = conv1 + conv2 + d1 + d2;
  double total = (double)o.samples * o.epochs;
  bench_report(h, o.epochs, nn_model_params(m), total, total * 2 * (2 * fwd + fwd - conv1),
               "conv and dense", secs, cpu, o.threads);
  nn_history_free(h);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
  ad_ctx_free(ctx);
  return 0;
}
