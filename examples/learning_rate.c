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

int main(int argc, char **argv) {
  int epochs = 15, range_steps = 200;
  teach_opts o;
  teach_flag flags[] = {{"--epochs", 'i', &epochs, 1, 0},
                        {"--range-steps", 'i', &range_steps, 10, 0}};
  if (!teach_parse(argc, argv, 2, flags, &o)) return 2;
  ad_ctx *ctx = ad_ctx_new();
  ad_tensor *x, *y;
  teach_blobs(ctx, 1024, 32, 3, (uint64_t)o.seed, &x, &y);
  int64_t sizes[3] = {32, 64, 3};

  /* part 1: the loss per epoch at each rate */
  const double rates[5] = {0.001, 0.01, 0.1, 1, 10};
  teach_table *t = teach_table_new(epochs);
  double final[5];
  for (int e = 0; e < epochs; e++) teach_col(t, "epoch")[e] = e + 1;
  printf("%-8s %10s\n", "rate", "final loss");
  for (int r = 0; r < 5; r++) {
    nn_model *m = teach_mlp(ctx, (uint64_t)o.seed, NN_ACT_TANH, NULL, 2, sizes);
    nn_optimizer *opt = nn_sgd_new(nn_model_params(m), rates[r], 0, false, 0);
    nn_fit_opts fo = {.epochs = epochs, .seed = (uint64_t)o.seed, .verbose = -1};
    nn_history *h = NULL;
    ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, &h);
    double *loss = teach_col(t, "lr=%g", rates[r]); /* epochs a diverged fit missed stay NaN */
    for (int e = 0; e < nn_history_epochs(h); e++) loss[e] = nn_history_get(h, "loss", e);
    final[r] = st == AD_OK ? loss[epochs - 1] : INFINITY;
    printf("%-8g %10.4f%s\n", rates[r], final[r], st == AD_OK ? "" : "  (diverged)");
    if (st != AD_OK) printf("         %s\n", ad_last_error(ctx));
    ad_clear_error(ctx);
    nn_history_free(h);
    nn_optimizer_free(opt);
    nn_model_free(m);
  }

  /* part 2: the range test, one SGD step per batch at lr = 1e-5 * (1e6)^(s / steps) */
  teach_table *rt = teach_table_new(range_steps);
  double *c[4] = {teach_col(rt, "step"), teach_col(rt, "lr"), teach_col(rt, "loss"),
                  teach_col(rt, "smoothed")};
  nn_model *m = teach_mlp(ctx, (uint64_t)o.seed, NN_ACT_TANH, NULL, 2, sizes);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 1e-5, 0, false, 0);
  nn_batcher *b = nn_batcher_new(ctx, x, y, 32, true, (uint64_t)o.seed);
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
    c[0][s] = s + 1, c[1][s] = lr, c[2][s] = loss, c[3][s] = smooth;
    if (smooth < best) best = smooth, best_lr = lr;
    if (smooth > 4 * best) break; /* diverging: the test is over */
  }
  ad_clear_error(ctx);
  rt->nrow = n;
  printf("range test: lowest smoothed loss %.4f at lr %.3g; suggested lr %.3g\n", best, best_lr,
         best_lr / 10);

  plot_opts po = {"Training loss at five learning rates (SGD)", "epoch", "cross-entropy",
                  .logy = true};
  plot_opts ro = {"Learning-rate range test", "learning rate", "cross-entropy", .logx = true};
  bool ok = teach_save(t, &o, "learning_rate.csv") &&
            teach_save(rt, &o, "learning_rate_range.csv") &&
            teach_chart(t, &o, "learning_rate.svg", po, "epoch", "lr=*", NULL) &&
            teach_chart(rt, &o, "learning_rate_range.svg", ro, "lr", "loss", "smoothed", NULL);
  double good = fmin(fmin(final[1], final[2]), final[3]);
  teach_table_free(t), teach_table_free(rt);
  nn_batcher_free(b);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
  ad_ctx_free(ctx);
  return ok && final[0] > good && final[4] > good ? 0 : 1;
}
