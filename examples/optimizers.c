/* optimizers: how do gradient descent, SGD, momentum and Adam differ?
 *
 * One model (32 -> 64 tanh -> 3) and one data set (1024 points), trained
 * for the same number of parameter updates four ways:
 *   gd        full-batch gradient descent: each step sees all 1024 points
 *             (the exact gradient, but 32 times the work of a mini-batch)
 *   sgd       stochastic gradient descent on mini-batches of 32
 *   momentum  SGD whose step is a running sum of gradients (v = 0.9 v + g)
 *   adam      a per-parameter step from running means of g and g^2
 * Every few steps the loss on the whole training set is recorded, with
 * the seconds spent training so far.
 *
 * Prints the final loss and time of each; writes optimizers.csv and with
 * --plot optimizers.svg (loss against steps) and optimizers_time.svg (loss
 * against seconds, log scales). Exits 1 unless momentum and Adam end below plain SGD.
 *
 * Usage: optimizers [--steps 600] [--lr 0.05] [--seed 1] [--out DIR] [--plot] */
#include "teach.h"

#include <time.h>

#define RUNS  4
#define EVERY 10 /* steps between two records */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static nn_model *small_net(ad_ctx *ctx, uint64_t seed) {
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_dense_new(ctx, 32, 64, &rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_TANH));
  nn_model_add(m, nn_dense_new(ctx, 64, 3, &rng, NULL));
  return m;
}

int main(int argc, char **argv) {
  int steps = 600, seed = 1;
  double lr = 0.05;
  bool plot = false;
  const char *out = ".";
  teach_flag flags[] = {{"--steps", 'i', &steps},
                        {"--lr", 'd', &lr},
                        {"--seed", 'i', &seed},
                        {"--out", 's', &out},
                        {"--plot", 'b', &plot}};
  if (!teach_parse(argc, argv, 5, flags) || steps < EVERY) return 2;

  ad_ctx *ctx = ad_ctx_new();
  ad_tensor *x, *y;
  teach_blobs(ctx, 1024, 32, 3, (uint64_t)seed, &x, &y);
  const char *names[1 + 2 * RUNS] = {"step", "gd",    "sgd",        "momentum", "adam",
                                     "gd_s", "sgd_s", "momentum_s", "adam_s"};
  int rows = steps / EVERY + 1;
  double *col[1 + 2 * RUNS];
  for (int c = 0; c < 1 + 2 * RUNS; c++) col[c] = calloc((size_t)rows, sizeof(double));
  bool ok = true;
  printf("%-9s %10s %9s\n", "optimizer", "final loss", "seconds");
  for (int r = 0; ok && r < RUNS; r++) {
    nn_model *m = small_net(ctx, (uint64_t)seed);
    nn_params *p = nn_model_params(m);
    nn_optimizer *opt = r == 3   ? nn_adam_new(p, lr / 10) /* Adam's usual rate is smaller */
                        : r == 2 ? nn_sgd_new(p, lr, 0.9, false, 0)
                                 : nn_sgd_new(p, lr, 0, false, 0);
    nn_batcher *b = nn_batcher_new(ctx, x, y, r == 0 ? 1024 : 32, true, (uint64_t)seed);
    double seconds = 0;
    ad_tensor *xb, *yb;
    for (int s = 0; ok && s <= steps; s++) {
      if (s % EVERY == 0) { /* record the loss on all the data */
        int row = s / EVERY;
        col[0][row] = s;
        col[5 + r][row] = seconds;
        ok = nn_evaluate(m, nn_cross_entropy_loss, x, y, 1024, &col[1 + r][row], NULL) == AD_OK;
      }
      if (s == steps || !ok) break;
      double t0 = now();
      if (!nn_batcher_next(b, &xb, &yb)) nn_batcher_next(b, &xb, &yb); /* a new epoch */
      ok = nn_train_step(m, opt, nn_cross_entropy_loss, xb, yb, 0, NULL) == AD_OK;
      seconds += now() - t0;
    }
    if (ok) printf("%-9s %10.4f %9.3f\n", names[1 + r], col[1 + r][rows - 1], seconds);
    nn_batcher_free(b);
    nn_optimizer_free(opt);
    nn_model_free(m);
  }
  if (!ok) fprintf(stderr, "optimizers: %s\n", ad_last_error(ctx));

  ok = ok && teach_csv(teach_path(out, "optimizers.csv"), 1 + 2 * RUNS, names, rows, col);
  if (ok && plot) {
    plot_series by_step[RUNS], by_time[RUNS];
    for (int r = 0; r < RUNS; r++) {
      by_step[r] = (plot_series){names[1 + r], rows, col[0], col[1 + r]};
      by_time[r] = (plot_series){names[1 + r], rows, col[5 + r], col[1 + r]};
    }
    plot_opts o = {.title = "Loss on the training set",
                   .xlabel = "parameter updates",
                   .ylabel = "cross-entropy",
                   .logy = true};
    plot_opts t = {.title = "Loss on the training set",
                   .xlabel = "seconds of training",
                   .ylabel = "cross-entropy",
                   .logx = true,
                   .logy = true};
    ok = teach_plot(teach_path(out, "optimizers.svg"), &o, RUNS, by_step) &&
         teach_plot(teach_path(out, "optimizers_time.svg"), &t, RUNS, by_time);
  }
  double sgd = col[2][rows - 1], momentum = col[3][rows - 1], adam = col[4][rows - 1];
  for (int c = 0; c < 1 + 2 * RUNS; c++) free(col[c]);
  ad_tensor_free(x), ad_tensor_free(y);
  ad_ctx_free(ctx);
  return ok && momentum < sgd && adam < sgd ? 0 : 1;
}
