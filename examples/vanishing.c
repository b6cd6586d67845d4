/* vanishing: why do gradients vanish in a deep sigmoid network?
 *
 * The same 10-layer network (9 hidden layers of 32 units, then 3 classes)
 * is trained twice on the same data with plain SGD: with sigmoid and
 * Glorot init (Keras' default), and with ReLU and He init. After every
 * step we read the gradient norm of each layer's weight, ||dL/dW_l||.
 *
 * Backpropagation multiplies the gradient by W^T and by the activation's
 * derivative once per layer. sigmoid' is at most 1/4, so for sigmoid the
 * gradient shrinks layer after layer on its way back and the first layers
 * barely learn; relu' is 0 or 1, and He init keeps the scale, so for ReLU
 * every layer gets a gradient of the same order.
 *
 * Prints the mean norm per layer over the steps and the ratio first/last;
 * writes vanishing.csv (per step: the loss and the ten norms of each run)
 * and with --plot vanishing.svg (norm by layer) and vanishing_loss.svg.
 * Exits 1 unless first/last < 1e-2 for sigmoid and > 1e-1 for ReLU.
 *
 * Usage: vanishing [--steps 200] [--lr 0.1] [--seed 1] [--out DIR] [--plot] */
#include "teach.h"

#define LAYERS 10

int main(int argc, char **argv) {
  int steps = 200;
  double lr = 0.1;
  teach_opts o;
  teach_flag flags[] = {{"--steps", 'i', &steps, 1, 0}, {"--lr", 'd', &lr, 0, 0}};
  if (!teach_parse(argc, argv, 2, flags, &o)) return 2;
  ad_ctx *ctx = ad_ctx_new();
  ad_tensor *x, *y;
  teach_blobs(ctx, 256, 32, 3, (uint64_t)o.seed, &x, &y);
  int64_t sizes[LAYERS + 1] = {32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 3};
  teach_table *t = teach_table_new(steps), *by = teach_table_new(LAYERS);
  const nn_act acts[2] = {NN_ACT_SIGMOID, NN_ACT_RELU};
  bool ok = true;
  for (int s = 0; s < steps; s++) teach_col(t, "step")[s] = s + 1;
  for (int l = 0; l < LAYERS; l++) teach_col(by, "layer")[l] = l + 1;
  for (int r = 0; ok && r < 2; r++) {
    const char *a = nn_act_name(acts[r]);
    nn_dense_opts he = {.weight_init = nn_init_make(NN_INIT_HE_NORMAL, 0, 0)};
    nn_model *m = teach_mlp(ctx, (uint64_t)o.seed, acts[r], r ? &he : NULL, LAYERS, sizes);
    nn_optimizer *opt = nn_sgd_new(nn_model_params(m), lr, 0, false, 0);
    double *loss = teach_col(t, "%s_loss", a), *mean = teach_col(by, "%s", a);
    for (int s = 0; ok && s < steps; s++) { /* full-batch SGD, then read ||dL/dW|| */
      ok = nn_train_step(m, opt, nn_cross_entropy_loss, x, y, 0, &loss[s]) == AD_OK;
      for (int l = 0; ok && l < LAYERS; l++) {
        char name[32]; /* Dense layer l is the model's layer 2 l */
        snprintf(name, sizeof name, "%d.weight", 2 * l);
        double norm = teach_grad_norm(nn_model_param(m, name));
        teach_col(t, "%s_layer%d", a, l + 1)[s] = norm;
        mean[l] = (s ? mean[l] : 0) + norm / steps;
      }
    }
    nn_optimizer_free(opt);
    nn_model_free(m);
  }
  if (!ok) fprintf(stderr, "vanishing: %s\n", ad_last_error(ctx));
  double *sig = teach_col(by, "sigmoid"), *relu = teach_col(by, "relu");
  printf("mean ||dL/dW|| over %d steps\nlayer     sigmoid        relu\n", steps);
  for (int l = 0; ok && l < LAYERS; l++) printf("%5d  %10.3g  %10.3g\n", l + 1, sig[l], relu[l]);
  double ratio[2] = {sig[0] / sig[LAYERS - 1], relu[0] / relu[LAYERS - 1]};
  if (ok)
    printf("first/last %8.2g  %10.2g\nfinal loss %8.4f  %10.4f\n", ratio[0], ratio[1],
           teach_col(t, "sigmoid_loss")[steps - 1], teach_col(t, "relu_loss")[steps - 1]);
  plot_opts po = {"Gradient norm of each layer's weights (mean over the steps)",
                  "layer (1 = next to the input)", "||dL/dW||", .logy = true};
  plot_opts lo = {"Training loss", "step", "cross-entropy", .logy = false};
  ok = ok && teach_save(t, &o, "vanishing.csv") &&
       teach_chart(by, &o, "vanishing.svg", po, "layer", "sigmoid=sigmoid (Glorot init)",
                   "relu=ReLU (He init)", NULL) &&
       teach_chart(t, &o, "vanishing_loss.svg", lo, "step", "sigmoid_loss=sigmoid",
                   "relu_loss=ReLU", NULL);
  teach_table_free(t), teach_table_free(by);
  ad_tensor_free(x), ad_tensor_free(y);
  ad_ctx_free(ctx);
  return ok && ratio[0] < 1e-2 && ratio[1] > 1e-1 ? 0 : 1;
}
