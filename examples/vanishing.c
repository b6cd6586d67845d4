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
#define WIDTH  32

/* 10 Dense layers, act between them; He init for ReLU. */
static nn_model *deep_net(ad_ctx *ctx, nn_act act, uint64_t seed) {
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  nn_dense_opts o = {0};
  if (act == NN_ACT_RELU) o.weight_init = nn_init_make(NN_INIT_HE_NORMAL, 0, 0);
  nn_model *m = nn_sequential_new(ctx);
  for (int l = 0; l < LAYERS; l++) {
    nn_model_add(m, nn_dense_new(ctx, WIDTH, l == LAYERS - 1 ? 3 : WIDTH, &rng, &o));
    if (l < LAYERS - 1) nn_model_add(m, nn_activation_new(ctx, act));
  }
  return m;
}

/* Trains for steps full-batch SGD steps; loss[s] and norm[l][s] per step. */
static bool run(ad_ctx *ctx, nn_act act, int steps, double lr, uint64_t seed, ad_tensor *x,
                ad_tensor *y, double *loss, double *norm[LAYERS]) {
  nn_model *m = deep_net(ctx, act, seed);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), lr, 0, false, 0);
  bool ok = opt != NULL;
  for (int s = 0; ok && s < steps; s++) {
    ok = nn_train_step(m, opt, nn_cross_entropy_loss, x, y, 0, &loss[s]) == AD_OK;
    for (int l = 0; ok && l < LAYERS; l++) { /* layer l is model layer 2 l: "2l.weight" */
      char name[32];
      snprintf(name, sizeof name, "%d.weight", 2 * l);
      norm[l][s] = teach_grad_norm(nn_model_param(m, name));
    }
  }
  if (!ok) fprintf(stderr, "vanishing: %s\n", ad_last_error(ctx));
  nn_optimizer_free(opt);
  nn_model_free(m);
  return ok;
}

static double mean(const double *v, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += v[i];
  return s / n;
}

int main(int argc, char **argv) {
  int steps = 200, seed = 1;
  double lr = 0.1;
  bool plot = false;
  const char *out = ".";
  teach_flag flags[] = {{"--steps", 'i', &steps},
                        {"--lr", 'd', &lr},
                        {"--seed", 'i', &seed},
                        {"--out", 's', &out},
                        {"--plot", 'b', &plot}};
  if (!teach_parse(argc, argv, 5, flags) || steps < 1) return 2;

  ad_ctx *ctx = ad_ctx_new();
  ad_tensor *x, *y;
  teach_blobs(ctx, 256, WIDTH, 3, (uint64_t)seed, &x, &y);
  /* columns: step, then per run (sigmoid, relu) its loss and 10 norms */
  double *col[1 + 2 * (1 + LAYERS)];
  const char *names[1 + 2 * (1 + LAYERS)];
  char name_buf[2 * (1 + LAYERS)][32];
  for (int c = 0; c < 1 + 2 * (1 + LAYERS); c++) col[c] = calloc((size_t)steps, sizeof(double));
  names[0] = "step";
  const nn_act acts[2] = {NN_ACT_SIGMOID, NN_ACT_RELU};
  for (int r = 0; r < 2; r++) {
    const char *a = nn_act_name(acts[r]);
    for (int c = 0; c <= LAYERS; c++) {
      char *n = name_buf[r * (1 + LAYERS) + c];
      c ? snprintf(n, 32, "%s_layer%d", a, c) : snprintf(n, 32, "%s_loss", a);
      names[1 + r * (1 + LAYERS) + c] = n;
    }
  }
  for (int s = 0; s < steps; s++) col[0][s] = s + 1;
  bool ok = true;
  for (int r = 0; ok && r < 2; r++)
    ok = run(ctx, acts[r], steps, lr, (uint64_t)seed, x, y, col[1 + r * (1 + LAYERS)],
             col + 2 + r * (1 + LAYERS));

  double by_layer[2][LAYERS], layer_no[LAYERS], ratio[2] = {0};
  printf("mean ||dL/dW|| over %d steps\nlayer     sigmoid        relu\n", steps);
  for (int l = 0; ok && l < LAYERS; l++) {
    layer_no[l] = l + 1;
    for (int r = 0; r < 2; r++) by_layer[r][l] = mean(col[2 + r * (1 + LAYERS) + l], steps);
    printf("%5d  %10.3g  %10.3g\n", l + 1, by_layer[0][l], by_layer[1][l]);
  }
  for (int r = 0; ok && r < 2; r++) ratio[r] = by_layer[r][0] / by_layer[r][LAYERS - 1];
  if (ok)
    printf("first/last %8.2g  %10.2g\nfinal loss %8.4f  %10.4f\n", ratio[0], ratio[1],
           col[1][steps - 1], col[2 + LAYERS][steps - 1]);

  ok = ok && teach_csv(teach_path(out, "vanishing.csv"), 1 + 2 * (1 + LAYERS), names, steps, col);
  if (ok && plot) {
    plot_series by[2] = {{"sigmoid (Glorot init)", LAYERS, layer_no, by_layer[0]},
                         {"ReLU (He init)", LAYERS, layer_no, by_layer[1]}};
    plot_opts o = {.title = "Gradient norm of each layer's weights (mean over the steps)",
                   .xlabel = "layer (1 = next to the input)",
                   .ylabel = "||dL/dW||",
                   .logy = true};
    plot_series loss[2] = {{"sigmoid", steps, col[0], col[1]},
                           {"ReLU", steps, col[0], col[2 + LAYERS]}};
    plot_opts lo = {.title = "Training loss", .xlabel = "step", .ylabel = "cross-entropy"};
    ok = teach_plot(teach_path(out, "vanishing.svg"), &o, 2, by) &&
         teach_plot(teach_path(out, "vanishing_loss.svg"), &lo, 2, loss);
  }
  for (int c = 0; c < 1 + 2 * (1 + LAYERS); c++) free(col[c]);
  ad_tensor_free(x), ad_tensor_free(y);
  ad_ctx_free(ctx);
  return ok && ratio[0] < 1e-2 && ratio[1] > 1e-1 ? 0 : 1;
}
