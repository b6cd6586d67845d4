/* overfitting: how do L2, dropout and early stopping fight overfitting?
 *
 * A network with far more weights than examples (784 -> 128 relu -> 10,
 * about 100,000 weights) trained on only 500 of the bundled digits learns
 * them by heart: the training loss goes to 0 while the loss on 1000 digits
 * it never sees (the validation set) turns and rises. Four runs of Adam
 * from the same start:
 *   none       no regularization
 *   l2         weight decay: loss + 1e-3 * sum(w^2) keeps weights small
 *   dropout    half of the hidden units are zeroed at random in training
 *   early      stop once val_loss has not improved for 5 epochs and take
 *              back the weights of its best epoch (nn_early_stopping)
 *
 * Prints the final and best validation accuracy of each; writes
 * overfitting.csv (per epoch: loss, val_loss and val_accuracy of each run)
 * and with --plot overfitting.svg (the losses) and overfitting_acc.svg.
 * Exits 1 unless early stopping ends with a validation loss no higher than
 * the unregularized run's.
 *
 * Usage: overfitting [--train 500] [--val 1000] [--epochs 60] [--seed 1]
 *                    [--out DIR] [--plot] */
#include "mnist_data.h"
#include "teach.h"

#define RUNS 4

static nn_model *net(ad_ctx *ctx, bool dropout, uint64_t seed) {
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_dense_new(ctx, 784, 128, &rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  if (dropout) nn_model_add(m, nn_dropout_new(ctx, 0.5, seed));
  nn_model_add(m, nn_dense_new(ctx, 128, 10, &rng, NULL));
  return m;
}

/* the first n rows of t */
static ad_tensor *first_rows(ad_ctx *ctx, ad_tensor *t, int64_t n) {
  int64_t *rows = malloc((size_t)n * sizeof *rows);
  for (int64_t i = 0; i < n; i++) rows[i] = i;
  ad_tensor *r = nn_take_rows(ctx, t, n, rows);
  free(rows);
  return r;
}

int main(int argc, char **argv) {
  int n_train = 500, n_val = 1000, epochs = 60, seed = 1;
  bool plot = false;
  const char *out = ".";
  teach_flag flags[] = {{"--train", 'i', &n_train}, {"--val", 'i', &n_val},
                        {"--epochs", 'i', &epochs}, {"--seed", 'i', &seed},
                        {"--out", 's', &out},       {"--plot", 'b', &plot}};
  if (!teach_parse(argc, argv, 6, flags) || n_train < 1 || n_train > 8000 || n_val < 1 ||
      n_val > 2000 || epochs < 1)
    return 2;
  ad_ctx *ctx = ad_ctx_new();
  mnist_data d;
  if (!mnist_load(ctx, NULL, (uint64_t)seed, 2, &d)) {
    fprintf(stderr, "overfitting: %s\n", ad_last_error(ctx));
    return 1;
  }
  ad_tensor *x = first_rows(ctx, d.x_train, n_train), *y = first_rows(ctx, d.y_train, n_train);
  ad_tensor *xv = first_rows(ctx, d.x_test, n_val), *yv = first_rows(ctx, d.y_test, n_val);

  const char *runs[RUNS] = {"none", "l2", "dropout", "early"};
  const char *keys[3] = {"loss", "val_loss", "val_accuracy"};
  const char *names[1 + 3 * RUNS];
  char name_buf[3 * RUNS][32];
  double *col[1 + 3 * RUNS], final_loss[RUNS];
  names[0] = "epoch";
  for (int c = 0; c < 1 + 3 * RUNS; c++) col[c] = calloc((size_t)epochs, sizeof(double));
  for (int e = 0; e < epochs; e++) col[0][e] = e + 1;
  printf("%-8s %7s %13s %12s %11s\n", "run", "epochs", "val accuracy", "best (epoch)", "train acc");
  bool ok = true;
  for (int r = 0; ok && r < RUNS; r++) {
    nn_model *m = net(ctx, r == 2, (uint64_t)seed);
    nn_optimizer *opt = nn_adam_new(nn_model_params(m), 1e-3);
    nn_fit_opts fo = {.epochs = epochs,
                      .seed = (uint64_t)seed,
                      .val_x = xv,
                      .val_y = yv,
                      .accuracy = true,
                      .lambda_l2 = r == 1 ? 1e-3 : 0,
                      .verbose = -1};
    if (r == 3)
      fo.early_stopping =
          (nn_early_stopping){.monitor = "val_loss", .patience = 5, .restore_best_weights = true};
    nn_history *h = NULL;
    ok = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, &h) == AD_OK;
    int ran = nn_history_epochs(h), best = 0;
    for (int k = 0; k < 3; k++) {
      snprintf(name_buf[3 * r + k], 32, "%s_%s", runs[r], keys[k]);
      names[1 + 3 * r + k] = name_buf[3 * r + k];
      for (int e = 0; e < epochs; e++) /* after an early stop: NaN, no point */
        col[1 + 3 * r + k][e] = e < ran ? nn_history_get(h, keys[k], e) : NAN;
    }
    for (int e = 0; e < ran; e++)
      if (nn_history_get(h, "val_accuracy", e) > nn_history_get(h, "val_accuracy", best)) best = e;
    double val_loss, val_acc, train_acc; /* of the weights the run ends with */
    ok = ok && nn_evaluate(m, nn_cross_entropy_loss, xv, yv, 256, &val_loss, &val_acc) == AD_OK &&
         nn_evaluate(m, nn_cross_entropy_loss, x, y, 256, NULL, &train_acc) == AD_OK;
    final_loss[r] = val_loss;
    if (ok)
      printf("%-8s %7d %12.1f%% %7.1f%% (%2d) %10.1f%%\n", runs[r], ran, 100 * val_acc,
             100 * nn_history_get(h, "val_accuracy", best), best + 1, 100 * train_acc);
    nn_history_free(h);
    nn_optimizer_free(opt);
    nn_model_free(m);
  }
  if (!ok) fprintf(stderr, "overfitting: %s\n", ad_last_error(ctx));

  ok = ok && teach_csv(teach_path(out, "overfitting.csv"), 1 + 3 * RUNS, names, epochs, col);
  if (ok && plot) {
    plot_series ls[RUNS + 1], as[RUNS];
    ls[0] = (plot_series){"none: training loss", epochs, col[0], col[1]};
    for (int r = 0; r < RUNS; r++) {
      ls[1 + r] = (plot_series){names[2 + 3 * r], epochs, col[0], col[2 + 3 * r]};
      as[r] = (plot_series){names[3 + 3 * r], epochs, col[0], col[3 + 3 * r]};
    }
    plot_opts lo = {.title = "Training vs validation loss (500 digits)",
                    .xlabel = "epoch",
                    .ylabel = "cross-entropy"};
    plot_opts ao = {.title = "Validation accuracy", .xlabel = "epoch", .ylabel = "accuracy"};
    ok = teach_plot(teach_path(out, "overfitting.svg"), &lo, RUNS + 1, ls) &&
         teach_plot(teach_path(out, "overfitting_acc.svg"), &ao, RUNS, as);
  }
  for (int c = 0; c < 1 + 3 * RUNS; c++) free(col[c]);
  ad_tensor_free(x), ad_tensor_free(y), ad_tensor_free(xv), ad_tensor_free(yv);
  mnist_free(&d);
  ad_ctx_free(ctx);
  return ok && final_loss[3] <= final_loss[0] ? 0 : 1;
}
