/* mnist_cnn: a convolutional network on the digits, PyTorch's layers in C.
 *
 *   Conv2d(1 -> 32, 3x3) relu -> Conv2d(32 -> 32, 3x3) relu -> MaxPool 2
 *   -> Dropout 0.2 -> Flatten -> Dense(4608 -> 128) relu -> Dropout 0.2
 *   -> Dense(128 -> 10); softmax cross-entropy from the logits, Adam lr
 *   0.001, batch 64, 5 epochs
 *
 * Data as examples/mnist_mlp: the 10,000 bundled digits split 8000/2000
 * with the same seeded shuffle, or with --data DIR the standard MNIST
 * files. The parameters are named as in the equivalent PyTorch
 * nn.Sequential ("0.weight", "2.weight", "7.weight", "10.weight"), so
 * --save writes a state dict PyTorch loads.
 *
 * Usage: mnist_cnn [--epochs N] [--batch N] [--seed N] [--lr X]
 *                  [--threads N] [--data DIR] [--save FILE]
 * The last line printed is exactly "test accuracy: NN.NN%". */
#include "args.h"
#include "mnist_data.h"
#include <autodiff/nn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct options {
  int epochs, threads;
  int64_t batch;
  unsigned long long seed;
  double lr;
  const char *data, *save;
} options;

static bool parse(int argc, char **argv, options *o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    bool ok = true;
    if (!strcmp(a, "--epochs"))
      ok = arg_int(v, &o->epochs);
    else if (!strcmp(a, "--batch"))
      ok = arg_i64(v, &o->batch);
    else if (!strcmp(a, "--seed"))
      ok = arg_u64(v, &o->seed);
    else if (!strcmp(a, "--lr"))
      ok = arg_double(v, &o->lr);
    else if (!strcmp(a, "--threads"))
      ok = arg_int(v, &o->threads);
    else if (!strcmp(a, "--data"))
      o->data = v;
    else if (!strcmp(a, "--save"))
      o->save = v;
    else
      return false;
    if (!ok) return false;
  }
  return argc % 2 == 1 && o->epochs >= 0 && o->batch >= 1 && o->lr > 0 && o->threads >= 1;
}

/* The network; NULL with the error on ctx. */
static nn_model *cnn(ad_ctx *ctx, ad_rng *rng) {
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_conv2d_new(ctx, 1, 32, 3, 3, rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_conv2d_new(ctx, 32, 32, 3, 3, rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_max_pool2d_new(ctx, 2, 2, NULL));
  nn_model_add(m, nn_dropout_new(ctx, 0.2, ad_rng_next(rng)));
  nn_model_add(m, nn_flatten_new(ctx));
  nn_model_add(m, nn_dense_new(ctx, 32 * 12 * 12, 128, rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_dropout_new(ctx, 0.2, ad_rng_next(rng)));
  if (nn_model_add(m, nn_dense_new(ctx, 128, 10, rng, NULL)) != AD_OK) {
    nn_model_free(m);
    return NULL;
  }
  return m;
}

int main(int argc, char **argv) {
  options o = {.epochs = 5, .threads = 1, .batch = 64, .seed = 42, .lr = 0.001};
  if (!parse(argc, argv, &o)) {
    fprintf(stderr,
            "usage: %s [--epochs N] [--batch N] [--seed N] [--lr X] [--threads N] [--data DIR] "
            "[--save FILE]\n",
            argv[0]);
    return 2;
  }
  if (ad_set_num_threads(o.threads) != AD_OK) {
    fprintf(stderr, "mnist_cnn: cannot start %d threads\n", o.threads);
    return 1;
  }
  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  mnist_data d;
  ad_rng rng;
  ad_rng_seed(&rng, o.seed);
  nn_model *m = mnist_load(ctx, o.data, o.seed, 4, &d) ? cnn(ctx, &rng) : NULL;
  nn_optimizer *opt = m ? nn_adam_new(nn_model_params(m), o.lr) : NULL;
  if (!opt) {
    fprintf(stderr, "mnist_cnn: %s\n", ad_last_error(ctx));
    return 1;
  }
  printf("mnist_cnn: %lld training and %lld test digits from %s, seed %llu, %d thread%s\n",
         (long long)d.x_train->shape[0], (long long)d.x_test->shape[0], d.source, o.seed, o.threads,
         o.threads == 1 ? "" : "s");
  nn_model_summary(m, stdout);

  double secs = 0;
  nn_fit_opts fo = {.epochs = o.epochs, .batch_size = o.batch, .seed = o.seed, .accuracy = true};
  nn_history *h = NULL;
  ad_status st =
      o.epochs ? nn_fit(m, opt, nn_cross_entropy_loss, d.x_train, d.y_train, &fo, &h) : AD_OK;
  for (int e = 0; e < nn_history_epochs(h); e++) secs += nn_history_get(h, "seconds", e);
  nn_history_free(h);
  if (st == AD_OK && o.save) st = nn_model_save(m, NULL, o.save);
  double loss, acc;
  if (st == AD_OK) st = nn_evaluate(m, nn_cross_entropy_loss, d.x_test, d.y_test, 256, &loss, &acc);
  if (st != AD_OK) {
    fprintf(stderr, "mnist_cnn: %s\n", ad_last_error(ctx));
    return 1;
  }
  printf("training seconds: %.2f\n", secs);
  if (o.save) printf("saved %s\n", o.save);
  printf("test loss: %.4f\n", loss);
  printf("test accuracy: %.2f%%\n", 100 * acc);
  nn_optimizer_free(opt);
  nn_model_free(m);
  mnist_free(&d);
  ad_ctx_free(ctx);
  return 0;
}
