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

int main(int argc, char **argv) {
  int n_train = 500, n_val = 1000, epochs = 60;
  teach_opts o;
  teach_flag flags[] = {{"--train", 'i', &n_train, 1, 8000},
                        {"--val", 'i', &n_val, 1, 2000},
                        {"--epochs", 'i', &epochs, 1, 0}};
  if (!teach_parse(argc, argv, 3, flags, &o)) return 2;
  ad_ctx *ctx = ad_ctx_new();
  mnist_data d; /* the first n_train training and n_val test digits */
  bool ok = mnist_load(ctx, NULL, (uint64_t)o.seed, 2, &d);
  ad_tensor *x = ok ? teach_first_rows(ctx, d.x_train, n_train) : NULL;
  ad_tensor *y = ok ? teach_first_rows(ctx, d.y_train, n_train) : NULL;
  ad_tensor *xv = ok ? teach_first_rows(ctx, d.x_test, n_val) : NULL;
  ad_tensor *yv = ok ? teach_first_rows(ctx, d.y_test, n_val) : NULL;
  const char *runs[4] = {"none", "l2", "dropout", "early"},
             *keys[3] = {"loss", "val_loss", "val_accuracy"};
  teach_table *t = teach_table_new(epochs);
  double final_loss[4];
  for (int e = 0; e < epochs; e++) teach_col(t, "epoch")[e] = e + 1;
  printf("%-8s %7s %13s %12s %11s\n", "run", "epochs", "val accuracy", "best (epoch)", "train acc");
  for (int r = 0; ok && r < 4; r++) {
    nn_model *m = net(ctx, r == 2, (uint64_t)o.seed);
    nn_optimizer *opt = nn_adam_new(nn_model_params(m), 1e-3);
    nn_fit_opts fo = {.epochs = epochs,
                      .seed = (uint64_t)o.seed,
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
    int ran = nn_history_epochs(h), best = 0; /* after an early stop the rest stays NaN */
    for (int k = 0; k < 3; k++)
      for (int e = 0; e < ran; e++)
        teach_col(t, "%s_%s", runs[r], keys[k])[e] = nn_history_get(h, keys[k], e);
    for (int e = 0; e < ran; e++)
      if (nn_history_get(h, "val_accuracy", e) > nn_history_get(h, "val_accuracy", best)) best = e;
    double val_acc, train_acc; /* of the weights the run ends with */
    ok = ok &&
         nn_evaluate(m, nn_cross_entropy_loss, xv, yv, 256, &final_loss[r], &val_acc) == AD_OK &&
         nn_evaluate(m, nn_cross_entropy_loss, x, y, 256, NULL, &train_acc) == AD_OK;
    if (ok)
      printf("%-8s %7d %12.1f%% %7.1f%% (%2d) %10.1f%%\n", runs[r], ran, 100 * val_acc,
             100 * nn_history_get(h, "val_accuracy", best), best + 1, 100 * train_acc);
    nn_history_free(h);
    nn_optimizer_free(opt);
    nn_model_free(m);
  }
  if (!ok) fprintf(stderr, "overfitting: %s\n", ad_last_error(ctx));
  plot_opts lo = {"Training vs validation loss (500 digits)", "epoch", "cross-entropy",
                  .logy = false};
  plot_opts ao = {"Validation accuracy", "epoch", "accuracy", .logy = false};
  ok = ok && teach_save(t, &o, "overfitting.csv") &&
       teach_chart(t, &o, "overfitting.svg", lo, "epoch", "none_loss=none: training loss",
                   "*_val_loss", NULL) &&
       teach_chart(t, &o, "overfitting_acc.svg", ao, "epoch", "*_val_accuracy", NULL);
  teach_table_free(t);
  ad_tensor_free(x), ad_tensor_free(y), ad_tensor_free(xv), ad_tensor_free(yv);
  mnist_free(&d);
  ad_ctx_free(ctx);
  return ok && final_loss[3] <= final_loss[0] ? 0 : 1;
}
