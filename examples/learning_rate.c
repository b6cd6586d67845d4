/* learning_rate: how do I choose a learning rate?
 *
 * Part 1: the same model (32 -> 64 tanh -> 3) and data trained by SGD
 * (mini-batches of 32) at five learning rates from 0.001 to 10, four orders
 * of magnitude. Too small and the loss creeps down; too large and each step
 * overshoots the minimum, so the loss jumps about or grows without bound
 * (nn_fit stops at a non-finite loss).
 *
 * Part 2: a learning-rate range test (L. Smith, "Cyclical learning rates",
 * 2017): one short run whose rate grows geometrically from 1e-5 to 10, one
 * step at each; the loss (smoothed) falls once the rate is large enough to
 * learn and shoots up when it is too large. A good rate is about a tenth of
 * the rate where the smoothed loss was lowest.
 *
 * Prints the final loss per rate and the suggested rate; writes
 * learning_rate.csv (loss per epoch per rate), learning_rate_range.csv and
 * with --plot learning_rate.svg and learning_rate_range.svg. Exits 1 unless
 * the smallest and the largest rate end above the best one.
 *
 * Usage: learning_rate [--epochs 15] [--range-steps 200] [--seed 1]
 *                      [--out DIR] [--plot] */
#include "teach.h"

#define RATES 5

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
  int epochs = 15, range_steps = 200, seed = 1;
  bool plot = false;
  const char *out = ".";
  teach_flag flags[] = {{"--epochs", 'i', &epochs},
                        {"--range-steps", 'i', &range_steps},
                        {"--seed", 'i', &seed},
                        {"--out", 's', &out},
                        {"--plot", 'b', &plot}};
  if (!teach_parse(argc, argv, 5, flags) || epochs < 1 || range_steps < 10) return 2;
  ad_ctx *ctx = ad_ctx_new();
  ad_tensor *x, *y;
  teach_blobs(ctx, 1024, 32, 3, (uint64_t)seed, &x, &y);

  /* part 1: loss per epoch at each rate */
  const double rates[RATES] = {0.001, 0.01, 0.1, 1, 10};
  const char *names[1 + RATES] = {"epoch", "lr=0.001", "lr=0.01", "lr=0.1", "lr=1", "lr=10"};
  double *col[1 + RATES], final[RATES];
  for (int c = 0; c <= RATES; c++) col[c] = calloc((size_t)epochs, sizeof(double));
  for (int e = 0; e < epochs; e++) col[0][e] = e + 1;
  printf("%-8s %10s\n", "rate", "final loss");
  for (int r = 0; r < RATES; r++) {
    nn_model *m = small_net(ctx, (uint64_t)seed);
    nn_optimizer *opt = nn_sgd_new(nn_model_params(m), rates[r], 0, false, 0);
    nn_fit_opts fo = {.epochs = epochs, .seed = (uint64_t)seed, .verbose = -1};
    nn_history *h = NULL;
    ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, &h);
    for (int e = 0; e < epochs; e++) /* epochs not run (a diverged fit) stay NaN */
      col[1 + r][e] = e < nn_history_epochs(h) ? nn_history_get(h, "loss", e) : NAN;
    final[r] = st == AD_OK ? col[1 + r][epochs - 1] : INFINITY;
    printf("%-8g %10.4f%s\n", rates[r], final[r], st == AD_OK ? "" : "  (diverged)");
    if (st != AD_OK) printf("         %s\n", ad_last_error(ctx));
    ad_clear_error(ctx);
    nn_history_free(h);
    nn_optimizer_free(opt);
    nn_model_free(m);
  }

  /* part 2: the range test, lr = 1e-5 * (1e6)^(s / steps) */
  const char *rnames[4] = {"step", "lr", "loss", "smoothed"};
  double *rc[4];
  for (int c = 0; c < 4; c++) rc[c] = calloc((size_t)range_steps, sizeof(double));
  nn_model *m = small_net(ctx, (uint64_t)seed);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 1e-5, 0, false, 0);
  nn_batcher *b = nn_batcher_new(ctx, x, y, 32, true, (uint64_t)seed);
  double avg = 0, best = INFINITY, best_lr = 0;
  int n = 0;
  for (int s = 0; s < range_steps; s++, n++) {
    ad_tensor *xb, *yb;
    double lr = 1e-5 * pow(1e6, (double)s / (range_steps - 1)), loss;
    nn_optimizer_set_lr(opt, lr);
    if (!nn_batcher_next(b, &xb, &yb)) nn_batcher_next(b, &xb, &yb); /* a new epoch */
    if (nn_train_step(m, opt, nn_cross_entropy_loss, xb, yb, 0, &loss) != AD_OK) break;
    avg = 0.9 * avg + 0.1 * loss; /* exponential moving average, bias-corrected: */
    double smooth = avg / (1 - pow(0.9, s + 1));
    rc[0][s] = s + 1, rc[1][s] = lr, rc[2][s] = loss, rc[3][s] = smooth;
    if (smooth < best) best = smooth, best_lr = lr;
    if (smooth > 4 * best) break; /* diverging: the test is over */
  }
  ad_clear_error(ctx);
  printf("range test: lowest smoothed loss %.4f at lr %.3g; suggested lr %.3g\n", best, best_lr,
         best_lr / 10);

  bool ok = teach_csv(teach_path(out, "learning_rate.csv"), 1 + RATES, names, epochs, col) &&
            teach_csv(teach_path(out, "learning_rate_range.csv"), 4, rnames, n, rc);
  if (ok && plot) {
    plot_series s[RATES];
    for (int r = 0; r < RATES; r++) s[r] = (plot_series){names[1 + r], epochs, col[0], col[1 + r]};
    plot_opts o = {.title = "Training loss at five learning rates (SGD)",
                   .xlabel = "epoch",
                   .ylabel = "cross-entropy",
                   .logy = true};
    plot_series rs[2] = {{"loss", n, rc[1], rc[2]}, {"smoothed", n, rc[1], rc[3]}};
    plot_opts ro = {.title = "Learning-rate range test",
                    .xlabel = "learning rate",
                    .ylabel = "cross-entropy",
                    .logx = true};
    ok = teach_plot(teach_path(out, "learning_rate.svg"), &o, RATES, s) &&
         teach_plot(teach_path(out, "learning_rate_range.svg"), &ro, 2, rs);
  }
  double good = fmin(fmin(final[1], final[2]), final[3]);
  for (int c = 0; c <= RATES; c++) free(col[c]);
  for (int c = 0; c < 4; c++) free(rc[c]);
  nn_batcher_free(b);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
  ad_ctx_free(ctx);
  return ok && final[0] > good && final[RATES - 1] > good ? 0 : 1;
}
