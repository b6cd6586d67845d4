/* exploding: why do gradients explode, and what does clipping do?
 *
 * A deep ReLU network (8 Dense layers of 32) whose weights start 1.2
 * times larger than He init: He init keeps the size of the signal, and of
 * the gradient on its way back, the same from layer to layer; 1.2 times
 * larger multiplies both by about 1.2 per layer, 1.2^8 = 4.3 over the
 * network, so the first gradients are large. Plain SGD takes a large step,
 * the weights grow, the next gradient is larger still, and within a few
 * steps a value overflows to infinity and the loss becomes NaN. Anomaly mode (ad_set_anomaly_mode)
 * stops at the first op that makes a non-finite value and names it.
 *
 * The same run with gradient clipping (nn_clip_grad_norm: when the global
 * norm of the gradients exceeds 1 they are scaled down to norm 1) takes
 * bounded steps in the same direction, and converges.
 *
 * The training step is written out (zero the gradients, forward, loss,
 * backward, clip, update) to show where clipping goes. Prints the loss and
 * gradient norm of the first steps; writes exploding.csv and with --plot
 * exploding.svg (gradient norms) and exploding_loss.svg. Exits 1 unless
 * the unclipped run fails and the clipped run ends with a finite loss
 * below its first.
 *
 * Usage: exploding [--steps 300] [--lr 0.01] [--gain 1.2] [--seed 1]
 *                  [--out DIR] [--plot] */
#include "teach.h"

#define LAYERS 8
#define WIDTH  32

static nn_model *deep_net(ad_ctx *ctx, double gain, uint64_t seed) {
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  /* He normal: N(0, gain / sqrt(fan_in)); the default gain is sqrt(2) */
  nn_dense_opts o = {.weight_init = nn_init_make(NN_INIT_HE_NORMAL, gain * sqrt(2), 0)};
  nn_model *m = nn_sequential_new(ctx);
  for (int l = 0; l < LAYERS; l++) {
    nn_model_add(m, nn_dense_new(ctx, WIDTH, l == LAYERS - 1 ? 1 : WIDTH, &rng, &o));
    if (l < LAYERS - 1) nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  }
  return m;
}

/* One training step by hand; *norm gets the gradient norm before clipping
 * (clip <= 0: no clipping). */
static ad_status step(nn_model *m, nn_optimizer *opt, ad_tensor *x, ad_tensor *y, double clip,
                      double *loss, double *norm) {
  ad_ctx *ctx = nn_model_ctx(m);
  ad_tape_reset(ctx);
  nn_params_zero_grad(nn_model_params(m));
  ad_tensor *l = nn_mse_loss(ctx, nn_model_forward(m, x), y, NN_MEAN);
  if (!l) return ad_last_status(ctx); /* anomaly mode: a non-finite value in forward */
  *loss = ad_tensor_item(l);
  ad_status st = ad_backward(ctx, l, NULL);
  if (st != AD_OK) return st;
  *norm = nn_clip_grad_norm(nn_model_params(m), clip > 0 ? clip : INFINITY);
  return nn_optimizer_step(opt);
}

int main(int argc, char **argv) {
  int steps = 300, seed = 1;
  double lr = 0.01, gain = 1.2;
  bool plot = false;
  const char *out = ".";
  teach_flag flags[] = {{"--steps", 'i', &steps}, {"--lr", 'd', &lr},   {"--gain", 'd', &gain},
                        {"--seed", 'i', &seed},   {"--out", 's', &out}, {"--plot", 'b', &plot}};
  if (!teach_parse(argc, argv, 6, flags) || steps < 2) return 2;
  ad_ctx *ctx = ad_ctx_new();
  ad_set_anomaly_mode(ctx, true); /* stop at the first NaN or infinity */
  ad_tensor *x, *labels, *y;
  teach_blobs(ctx, 256, WIDTH, 2, (uint64_t)seed, &x, &labels);
  int64_t shape[2] = {256, 1}; /* regression target: the label as 0 or 1 */
  y = ad_zeros(ctx, AD_F32, 2, shape);
  for (int64_t i = 0; i < 256; i++) ad_tensor_set(y, i, ad_tensor_get(labels, i));

  const char *names[5] = {"step", "loss", "grad_norm", "clipped_loss", "clipped_grad_norm"};
  double *col[5];
  for (int c = 0; c < 5; c++) col[c] = calloc((size_t)steps, sizeof(double));
  for (int s = 0; s < steps; s++) col[0][s] = s + 1, col[1][s] = col[2][s] = NAN;
  bool failed = false, ok = true;
  for (int r = 0; r < 2; r++) { /* r = 0 without clipping, 1 with */
    nn_model *m = deep_net(ctx, gain, (uint64_t)seed);
    nn_optimizer *opt = nn_sgd_new(nn_model_params(m), lr, 0, false, 0);
    for (int s = 0; s < steps; s++) {
      double loss = NAN, norm = NAN;
      ad_status st = step(m, opt, x, y, r ? 1.0 : 0, &loss, &norm);
      col[1 + 2 * r][s] = loss, col[2 + 2 * r][s] = norm;
      if (st != AD_OK) {
        printf("%s: step %d failed: %s\n", r ? "clipped" : "unclipped", s + 1, ad_last_error(ctx));
        ad_clear_error(ctx);
        failed |= r == 0, ok &= r == 0;
        break;
      }
    }
    nn_optimizer_free(opt);
    nn_model_free(m);
  }
  printf("%5s %12s %12s %14s %14s\n", "step", "loss", "grad norm", "clipped loss", "clipped norm");
  for (int s = 0; s < steps; s = s < 8 ? s + 1 : s * 2)
    printf("%5d %12.4g %12.4g %14.4g %14.4g\n", s + 1, col[1][s], col[2][s], col[3][s], col[4][s]);
  printf("%5d %12.4g %12.4g %14.4g %14.4g\n", steps, col[1][steps - 1], col[2][steps - 1],
         col[3][steps - 1], col[4][steps - 1]);

  ok = ok && teach_csv(teach_path(out, "exploding.csv"), 5, names, steps, col);
  if (ok && plot) {
    plot_series ns[2] = {{"no clipping", steps, col[0], col[2]},
                         {"clipped at norm 1", steps, col[0], col[4]}};
    plot_series ls[2] = {{"no clipping", steps, col[0], col[1]},
                         {"clipped at norm 1", steps, col[0], col[3]}};
    plot_opts no = {.title = "Global gradient norm (before clipping)",
                    .xlabel = "step",
                    .ylabel = "||grad||",
                    .logy = true};
    plot_opts lo = {.title = "Training loss", .xlabel = "step", .ylabel = "MSE", .logy = true};
    ok = teach_plot(teach_path(out, "exploding.svg"), &no, 2, ns) &&
         teach_plot(teach_path(out, "exploding_loss.svg"), &lo, 2, ls);
  }
  double first = col[3][0], last = col[3][steps - 1];
  for (int c = 0; c < 5; c++) free(col[c]);
  ad_tensor_free(x), ad_tensor_free(labels), ad_tensor_free(y);
  ad_ctx_free(ctx);
  return ok && failed && isfinite(last) && last < first ? 0 : 1;
}
