/* xor: the classic 2-3-1 sigmoid network learns XOR with SGD.
 *
 *   h = sigmoid(x W1^T + b1)     W1 [3,2], b1 [3]
 *   y = sigmoid(h W2^T + b2)     W2 [1,3], b2 [1]
 *   L = mean (y - t)^2           over the four input pairs
 *
 * The model is written as a plain C function over named parameters
 * (nn_model_new with a forward callback); the gradients come from the tape.
 * Prints the loss every few hundred epochs and the four predictions, and
 * exits 0 when the final loss is below 0.01, 1 otherwise.
 *
 * Usage: xor [--epochs N] [--lr X] [--seed N] */
#include "args.h"
#include <autodiff/nn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* forward pass of the 2-3-1 network */
static ad_tensor *xor_forward(nn_model *m, ad_tensor *x, void *ud) {
  (void)ud;
  ad_ctx *ctx = nn_model_ctx(m);
  ad_tensor *z1 = ad_matmul(ctx, x, nn_model_param(m, "hidden.weight"), false, true);
  ad_tensor *h = ad_sigmoid(ctx, ad_add(ctx, z1, nn_model_param(m, "hidden.bias")));
  ad_tensor *z2 = ad_matmul(ctx, h, nn_model_param(m, "output.weight"), false, true);
  return ad_sigmoid(ctx, ad_add(ctx, z2, nn_model_param(m, "output.bias")));
}

static int usage(const char *prog) {
  fprintf(stderr, "usage: %s [--epochs N] [--lr X] [--seed N]\n", prog);
  return 2;
}

int main(int argc, char **argv) {
  int epochs = 5000;
  double lr = 2.0;
  unsigned long long seed = 1;
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "--epochs") == 0 && arg_int(v, &epochs))
      i++;
    else if (strcmp(argv[i], "--lr") == 0 && arg_double(v, &lr))
      i++;
    else if (strcmp(argv[i], "--seed") == 0 && arg_u64(v, &seed))
      i++;
    else
      return usage(argv[0]);
  }
  if (epochs < 1 || lr <= 0) return usage(argv[0]);

  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  ad_rng rng;
  ad_rng_seed(&rng, seed);

  /* the four input pairs and their XOR */
  const double xs[8] = {0, 0, 0, 1, 1, 0, 1, 1}, ts[4] = {0, 1, 1, 0};
  int64_t xshape[2] = {4, 2}, tshape[2] = {4, 1};
  ad_tensor *x = ad_from_data(ctx, AD_F64, 2, xshape, xs);
  ad_tensor *t = ad_from_data(ctx, AD_F64, 2, tshape, ts);

  /* the model: parameters drawn from U(-1, 1), as in the classic example */
  nn_model *m = nn_model_new(ctx, xor_forward, NULL);
  nn_init init = nn_init_make(NN_INIT_UNIFORM, -1, 1);
  int64_t w1[2] = {3, 2}, b1[1] = {3}, w2[2] = {1, 3}, b2[1] = {1};
  nn_model_add_param(m, "hidden.weight", AD_F64, 2, w1, init, &rng);
  nn_model_add_param(m, "hidden.bias", AD_F64, 1, b1, init, &rng);
  nn_model_add_param(m, "output.weight", AD_F64, 2, w2, init, &rng);
  nn_model_add_param(m, "output.bias", AD_F64, 1, b2, init, &rng);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), lr, 0.0, false, 0.0);
  if (!x || !t || !opt) {
    fprintf(stderr, "xor: %s\n", ad_last_error(ctx));
    return 1;
  }

  /* full-batch gradient descent */
  double loss = 0;
  for (int e = 1; e <= epochs; e++) {
    if (nn_train_step(m, opt, nn_mse_loss, x, t, 0.0, &loss) != AD_OK) {
      fprintf(stderr, "xor: %s\n", ad_last_error(ctx));
      return 1;
    }
    if (e % 500 == 0 || e == 1) printf("epoch %5d  loss %.6f\n", e, loss);
  }

  /* the four predictions, with the trained weights */
  ad_tensor *y = nn_predict(m, x, 4);
  if (!y) {
    fprintf(stderr, "xor: %s\n", ad_last_error(ctx));
    return 1;
  }
  double final_loss = 0;
  for (int i = 0; i < 4; i++) {
    double p = ad_tensor_get(y, i), d = p - ts[i];
    final_loss += d * d / 4;
    printf("%g xor %g = %.4f  (target %g)\n", xs[2 * i], xs[2 * i + 1], p, ts[i]);
  }
  printf("final loss: %.6f\n", final_loss);

  ad_tensor_free(y);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(t);
  ad_ctx_free(ctx);
  return final_loss < 0.01 ? 0 : 1;
}
