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

/* One training step written out; *norm gets the gradient norm before
 * clipping (clip <= 0: no clipping). */
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

static void row(double *const c[5], int s) {
  printf("%5d %12.4g %12.4g %14.4g %14.4g\n", s + 1, c[1][s], c[2][s], c[3][s], c[4][s]);
}

int main(int argc, char **argv) {
  int steps = 300;
  double lr = 0.01, gain = 1.2;
  teach_opts o;
  teach_flag flags[] = {
      {"--steps", 'i', &steps, 2, 0}, {"--lr", 'd', &lr, 0, 0}, {"--gain", 'd', &gain, 0, 0}};
  if (!teach_parse(argc, argv, 3, flags, &o)) return 2;
  ad_ctx *ctx = ad_ctx_new();
  ad_set_anomaly_mode(ctx, true); /* stop at the first NaN or infinity */
  ad_tensor *x, *labels, *y = ad_zeros(ctx, AD_F32, 2, (int64_t[]){256, 1});
  teach_blobs(ctx, 256, 32, 2, (uint64_t)o.seed, &x, &labels);
  for (int64_t i = 0; i < 256; i++) ad_tensor_set(y, i, ad_tensor_get(labels, i)); /* 0 or 1 */
  /* He normal init is N(0, sqrt(2) / sqrt(fan_in)): --gain times larger */
  nn_dense_opts init = {.weight_init = nn_init_make(NN_INIT_HE_NORMAL, gain * sqrt(2), 0)};
  int64_t sizes[9] = {32, 32, 32, 32, 32, 32, 32, 32, 1};
  teach_table *t = teach_table_new(steps);
  double *c[5] = {teach_col(t, "step"), teach_col(t, "loss"), teach_col(t, "grad_norm"),
                  teach_col(t, "clipped_loss"), teach_col(t, "clipped_grad_norm")};
  bool failed = false, ok = true;
  for (int s = 0; s < steps; s++) c[0][s] = s + 1;
  for (int r = 0; r < 2; r++) { /* r = 0 without clipping, 1 clipped at norm 1 */
    nn_model *m = teach_mlp(ctx, (uint64_t)o.seed, NN_ACT_RELU, &init, 8, sizes);
    nn_optimizer *opt = nn_sgd_new(nn_model_params(m), lr, 0, false, 0);
    for (int s = 0; s < steps; s++) {
      if (step(m, opt, x, y, r ? 1.0 : 0, &c[1 + 2 * r][s], &c[2 + 2 * r][s]) != AD_OK) {
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
  int shown = -1; /* the last row printed */
  for (int s = 0; s < steps; s = s < 8 ? s + 1 : s * 2) row(c, shown = s);
  if (shown != steps - 1) row(c, steps - 1);
  plot_opts no = {"Global gradient norm (before clipping)", "step", "||grad||", .logy = true};
  plot_opts lo = {"Training loss", "step", "MSE", .logy = true};
  ok = ok && teach_save(t, &o, "exploding.csv") &&
       teach_chart(t, &o, "exploding.svg", no, "step", "grad_norm=no clipping",
                   "clipped_grad_norm=clipped at norm 1", NULL) &&
       teach_chart(t, &o, "exploding_loss.svg", lo, "step", "loss=no clipping",
                   "clipped_loss=clipped at norm 1", NULL);
  bool learned = isfinite(c[3][steps - 1]) && c[3][steps - 1] < c[3][0];
  teach_table_free(t);
  ad_tensor_free(x), ad_tensor_free(labels), ad_tensor_free(y);
  ad_ctx_free(ctx);
  return ok && failed && learned ? 0 : 1;
}
