/* mnist_mlp: the Keras MNIST model of our teaching material, rebuilt in C.
 *
 *   Dense(784 -> 64, relu) -> Dense(64 -> 64, relu) -> Dense(64 -> 10)
 *   softmax cross-entropy from the logits, Adam lr 0.001, batch 32, 5 epochs
 *
 * By default it trains on the 10,000 bundled digits (data/, see
 * data/README.md) split 8000/2000 with a seeded shuffle, in float32. With
 * --data DIR it uses the standard MNIST files in DIR instead
 * (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
 * t10k-labels-idx1-ubyte, each optionally .gz): 60,000 to train, 10,000 to
 * test.
 *
 * The parameters are named as in PyTorch's nn.Sequential(Linear, ReLU,
 * Linear, ReLU, Linear): "0.weight", "0.bias", "2.weight", ... so --save
 * writes a safetensors file whose model tensors torch's load_state_dict
 * takes (with strict=False: the file also holds the Adam state, under
 * "adam.*"), and --load reads one (plus the Adam state, when the file has
 * it, to resume: with the saved learning rate, unless --lr is given).
 *
 * Usage: mnist_mlp [--epochs N] [--batch N] [--seed N] [--lr X] [--data DIR]
 *                  [--save FILE] [--load FILE]
 * The last line printed is exactly "test accuracy: NN.NN%". */
#include "args.h"
#include "mnist_data.h"
#include <autodiff/nn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct options {
  int epochs;
  int64_t batch;
  unsigned long long seed;
  double lr;
  bool lr_given;
  const char *data, *save, *load;
} options;

static int usage(const char *prog) {
  fprintf(stderr,
          "usage: %s [--epochs N] [--batch N] [--seed N] [--lr X] [--data DIR] [--save FILE] "
          "[--load FILE]\n",
          prog);
  return 2;
}

static bool parse(int argc, char **argv, options *o) {
  for (int i = 1; i < argc; i += 2) { /* flag, value */
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) return false;
    bool ok = true;
    if (strcmp(a, "--epochs") == 0)
      ok = arg_int(v, &o->epochs);
    else if (strcmp(a, "--batch") == 0)
      ok = arg_i64(v, &o->batch);
    else if (strcmp(a, "--seed") == 0)
      ok = arg_u64(v, &o->seed);
    else if (strcmp(a, "--lr") == 0)
      ok = arg_double(v, &o->lr), o->lr_given = true;
    else if (strcmp(a, "--data") == 0)
      o->data = v;
    else if (strcmp(a, "--save") == 0)
      o->save = v;
    else if (strcmp(a, "--load") == 0)
      o->load = v;
    else
      return false;
    if (!ok) return false;
  }
  return o->epochs >= 0 && o->batch >= 1 && o->lr > 0;
}

int main(int argc, char **argv) {
  options o = {.epochs = 5, .batch = 32, .seed = 42, .lr = 0.001};
  if (!parse(argc, argv, &o)) return usage(argv[0]);

  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  mnist_data d;
  if (!mnist_load(ctx, o.data, o.seed, 2, &d)) {
    fprintf(stderr, "mnist_mlp: %s\n", ad_last_error(ctx));
    return 1;
  }
  ad_tensor *x_train = d.x_train, *y_train = d.y_train, *x_test = d.x_test, *y_test = d.y_test;
  printf("mnist_mlp: %lld training and %lld test digits from %s, seed %llu\n",
         (long long)x_train->shape[0], (long long)x_test->shape[0], d.source, o.seed);

  /* the model */
  ad_rng rng;
  ad_rng_seed(&rng, o.seed);
  int64_t in = x_train->shape[1];
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_dense_new(ctx, in, 64, &rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_dense_new(ctx, 64, 64, &rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_dense_new(ctx, 64, 10, &rng, NULL));
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), o.lr);
  if (!opt) {
    fprintf(stderr, "mnist_mlp: %s\n", ad_last_error(ctx));
    return 1;
  }

  /* resume from a checkpoint: the weights, and Adam's state if it is there */
  if (o.load) {
    nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, o.load);
    bool has_opt = info && nn_checkpoint_info_find(info, nn_optimizer_state_names(opt)[0]);
    nn_checkpoint_info_free(info);
    if (!info || nn_model_load(m, has_opt ? opt : NULL, o.load) != AD_OK) {
      fprintf(stderr, "mnist_mlp: %s\n", ad_last_error(ctx));
      return 1;
    }
    /* --lr goes over the saved rate */
    if (has_opt && o.lr_given && nn_optimizer_set_lr(opt, o.lr) != AD_OK) {
      fprintf(stderr, "mnist_mlp: %s\n", ad_last_error(ctx));
      return 1;
    }
    printf("loaded %s%s\n", o.load, has_opt ? " (weights and optimizer state)" : " (weights)");
  }

  double secs = 0;
  if (o.epochs > 0) {
    nn_fit_opts fo = {.epochs = o.epochs, .batch_size = o.batch, .seed = o.seed, .accuracy = true};
    nn_history *h = NULL;
    ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x_train, y_train, &fo, &h);
    for (int e = 0; e < nn_history_epochs(h); e++) secs += nn_history_get(h, "seconds", e);
    nn_history_free(h);
    if (st != AD_OK) {
      fprintf(stderr, "mnist_mlp: %s\n", ad_last_error(ctx));
      return 1;
    }
  }
  printf("training seconds: %.2f\n", secs);

  if (o.save) {
    if (nn_model_save(m, opt, o.save) != AD_OK) {
      fprintf(stderr, "mnist_mlp: %s\n", ad_last_error(ctx));
      return 1;
    }
    printf("saved %s\n", o.save);
  }

  double loss, acc;
  if (nn_evaluate(m, nn_cross_entropy_loss, x_test, y_test, 256, &loss, &acc) != AD_OK) {
    fprintf(stderr, "mnist_mlp: %s\n", ad_last_error(ctx));
    return 1;
  }
  printf("test loss: %.4f\n", loss);
  printf("test accuracy: %.2f%%\n", 100 * acc);

  nn_optimizer_free(opt);
  nn_model_free(m);
  mnist_free(&d);
  ad_ctx_free(ctx);
  return 0;
}
