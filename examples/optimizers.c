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

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  int steps = 600, every = 10; /* the loss is recorded every 10 steps */
  double lr = 0.05;
  teach_opts o;
  teach_flag flags[] = {{"--steps", 'i', &steps, 10, 0}, {"--lr", 'd', &lr, 0, 0}};
  if (!teach_parse(argc, argv, 2, flags, &o)) return 2;
  ad_ctx *ctx = ad_ctx_new();
  ad_tensor *x, *y;
  teach_blobs(ctx, 1024, 32, 3, (uint64_t)o.seed, &x, &y);
  teach_table *t = teach_table_new(steps / every + 1);
  const char *runs[4] = {"gd", "sgd", "momentum", "adam"};
  double *step = teach_col(t, "step"), final[4];
  bool ok = true;
  printf("%-9s %10s %9s\n", "optimizer", "final loss", "seconds");
  for (int r = 0; ok && r < 4; r++) {
    nn_model *m = teach_mlp(ctx, (uint64_t)o.seed, NN_ACT_TANH, NULL, 2, (int64_t[]){32, 64, 3});
    nn_params *p = nn_model_params(m);
    nn_optimizer *opt = r == 3   ? nn_adam_new(p, lr / 10) /* Adam's usual rate is smaller */
                        : r == 2 ? nn_sgd_new(p, lr, 0.9, false, 0)
                                 : nn_sgd_new(p, lr, 0, false, 0);
    nn_batcher *b = nn_batcher_new(ctx, x, y, r == 0 ? 1024 : 32, true, (uint64_t)o.seed);
    double *loss = teach_col(t, "%s", runs[r]), *secs = teach_col(t, "%s_s", runs[r]), s0 = 0;
    ad_tensor *xb, *yb;
    for (int s = 0; ok && s <= steps; s++) {
      if (s % every == 0) { /* record the loss on all the data, and the time so far */
        step[s / every] = s, secs[s / every] = s0;
        ok = nn_evaluate(m, nn_cross_entropy_loss, x, y, 1024, &loss[s / every], NULL) == AD_OK;
      }
      if (s == steps || !ok) break;
      double t0 = now();
      if (!nn_batcher_next(b, &xb, &yb)) nn_batcher_next(b, &xb, &yb); /* a new epoch */
      ok = nn_train_step(m, opt, nn_cross_entropy_loss, xb, yb, 0, NULL) == AD_OK;
      s0 += now() - t0;
    }
    final[r] = loss[t->nrow - 1];
    if (ok) printf("%-9s %10.4f %9.3f\n", runs[r], final[r], s0);
    nn_batcher_free(b);
    nn_optimizer_free(opt);
    nn_model_free(m);
  }
  if (!ok) fprintf(stderr, "optimizers: %s\n", ad_last_error(ctx));
  plot_opts po = {"Loss on the training set", "parameter updates", "cross-entropy", .logy = true};
  ok = ok && teach_save(t, &o, "optimizers.csv") &&
       teach_chart(t, &o, "optimizers.svg", po, "step", "gd", "sgd", "momentum", "adam", NULL);
  plot_series by_time[4]; /* each run against its own clock */
  for (int r = 0; r < 4; r++)
    by_time[r] =
        (plot_series){runs[r], t->nrow, teach_col(t, "%s_s", runs[r]), teach_col(t, "%s", runs[r])};
  po.xlabel = "seconds of training", po.logx = true;
  ok = ok && teach_plot(&o, "optimizers_time.svg", &po, 4, by_time);
  teach_table_free(t);
  ad_tensor_free(x), ad_tensor_free(y);
  ad_ctx_free(ctx);
  return ok && final[2] < final[1] && final[3] < final[1] ? 0 : 1;
}
