/* test_nn_history.c: the training history as data (gradient norms per
 * epoch, CSV) and early stopping in nn_fit. */
#include "nn.h"
#include "nn_internal.h" /* nn_grad_norms_add */
#include "test_alloc.h"
#include "test_blobs.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TEST_CTX_SUITE(history);
TEST_CTX_SUITE_ALSO(early_stopping);

static nn_model *mlp(ad_ctx *c, uint64_t seed) {
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  nn_dense_opts o = {.dtype = AD_F64};
  nn_model *m = nn_sequential_new(c);
  nn_model_add(m, nn_dense_new(c, 4, 16, &rng, &o));
  nn_model_add(m, nn_activation_new(c, NN_ACT_TANH));
  nn_model_add(m, nn_dense_new(c, 16, 3, &rng, &o));
  return m;
}

/* The model's parameters as one array of doubles (caller frees). */
static double *weights(const nn_model *m, int64_t *n) {
  nn_params *p = nn_model_params(m);
  *n = nn_params_numel(p);
  double *w = malloc((size_t)*n * sizeof *w), *o = w;
  for (int i = 0; i < nn_params_count(p); i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    memcpy(o, t->data, (size_t)t->size * sizeof(double));
    o += t->size;
  }
  return w;
}

/* The norms equal those of a loop written by hand: per step, after the
 * backward pass and before the optimizer step. */
Test(history, grad_norms_match_a_hand_written_loop) {
  ad_tensor *x, *y;
  test_blobs(ctx, 50, 1, &x, &y);
  nn_model *a = mlp(ctx, 5), *b = mlp(ctx, 5);
  nn_optimizer *oa = nn_sgd_new(nn_model_params(a), 0.1, 0.9, false, 0);
  nn_optimizer *ob = nn_sgd_new(nn_model_params(b), 0.1, 0.9, false, 0);
  nn_fit_opts fo = {.epochs = 2,
                    .batch_size = 16,
                    .seed = 3,
                    .lambda_l2 = 1e-3,
                    .verbose = -1,
                    .grad_norms = true};
  nn_history *h;
  cr_assert_eq(nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK, "%s",
               ad_last_error(ctx));
  nn_params *pb = nn_model_params(b);
  int np = nn_params_count(pb);
  cr_assert_eq(np, 4);
  cr_assert_eq(nn_history_key_count(h), 3 + 2 + np); /* loss lr seconds, 2, np */
  cr_assert_str_eq(nn_history_key(h, 0), "loss");
  cr_assert_str_eq(nn_history_key(h, 3), "grad_norm_mean");
  cr_assert_str_eq(nn_history_key(h, 4), "grad_norm_max");
  cr_assert_str_eq(nn_history_key(h, 5), "grad_norm/0.weight");
  cr_assert_str_eq(nn_history_key(h, 8), "grad_norm/2.bias");
  cr_assert_null(nn_history_key(h, 9));
  cr_assert_null(nn_history_key(h, -1));

  nn_batcher *bt = nn_batcher_new(ctx, x, y, 16, true, 3);
  for (int e = 0; e < 2; e++) {
    double sum = 0, max = 0, per[4] = {0};
    int steps = 0;
    ad_tensor *xb, *yb;
    while (nn_batcher_next(bt, &xb, &yb)) {
      ad_tape_reset(ctx);
      nn_params_zero_grad(pb);
      ad_tensor *l = nn_cross_entropy_loss(ctx, nn_model_forward(b, xb), yb, NN_MEAN);
      l = ad_add(ctx, l, nn_l2_penalty(ctx, pb, 1e-3));
      cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK);
      double total = 0;
      for (int i = 0; i < np; i++) {
        const ad_tensor *g = nn_params_tensor(pb, i)->grad;
        double sq = 0;
        for (int64_t k = 0; k < g->size; k++) sq += ad_tensor_get(g, k) * ad_tensor_get(g, k);
        per[i] += sqrt(sq);
        total += sq;
      }
      sum += sqrt(total);
      max = fmax(max, sqrt(total));
      steps++;
      cr_assert_eq(nn_optimizer_step(ob), AD_OK);
    }
    cr_assert_eq(steps, 4);
    cr_assert_float_eq(nn_history_get(h, "grad_norm_mean", e), sum / steps, 1e-12, "epoch %d", e);
    cr_assert_float_eq(nn_history_get(h, "grad_norm_max", e), max, 1e-12);
    for (int i = 0; i < np; i++) {
      char key[64];
      snprintf(key, sizeof key, "grad_norm/%s", nn_params_name(pb, i));
      cr_assert_float_eq(nn_history_get(h, key, e), per[i] / steps, 1e-12, "%s", key);
    }
  }
  cr_assert_gt(nn_history_get(h, "grad_norm_max", 0), nn_history_get(h, "grad_norm_mean", 0));
  nn_batcher_free(bt);
  nn_history_free(h);
  nn_optimizer_free(oa), nn_optimizer_free(ob);
  nn_model_free(a), nn_model_free(b);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* The epoch's largest gradient norm is NaN once a step's was, as its mean
 * is (and numpy's or torch's max): a later finite step took its place. */
Test(history, a_nan_gradient_norm_stays_the_largest) {
  nn_params *p = nn_params_new(ctx);
  int64_t s[1] = {2};
  ad_tensor *w = ad_ones(ctx, AD_F64, 1, s);
  cr_assert_eq(nn_params_add(p, "w", w, true), AD_OK);
  double norms[3] = {0, 0, 0}; /* w's, the global norm's sum, its largest */
  static const double c[2][2] = {{NAN, 1}, {3, 4}};
  for (int step = 0; step < 2; step++) {
    ad_tape_reset(ctx);
    nn_params_zero_grad(p);
    ad_tensor *k = ad_from_data(ctx, AD_F64, 1, s, c[step]);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, w, k)), NULL), AD_OK, "%s",
                 ad_last_error(ctx));
    nn_grad_norms_add(p, norms);
  }
  cr_assert(isnan(norms[0]) && isnan(norms[1]));
  cr_assert(isnan(norms[2]), "the largest norm is %g", norms[2]);
  /* and a finite one after finite steps */
  double fin[3] = {0, 0, 0};
  nn_grad_norms_add(p, fin); /* the last step's gradient (3, 4) */
  nn_grad_norms_add(p, fin);
  cr_assert(fin[0] == 10 && fin[1] == 10 && fin[2] == 5);
  ad_tape_reset(ctx);
  nn_params_free(p);
}

Test(history, grad_norms_are_opt_in) {
  ad_tensor *x, *y;
  test_blobs(ctx, 20, 1, &x, &y);
  nn_model *m = mlp(ctx, 5);
  nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.01);
  nn_fit_opts fo = {.epochs = 1, .verbose = -1};
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK);
  cr_assert_null(nn_history_values(h, "grad_norm_mean"));
  cr_assert_null(nn_history_values(h, "grad_norm/0.weight"));
  cr_assert_eq(nn_history_key_count(h), 3);
  cr_assert_eq(nn_history_best_epoch(h), -1);
  cr_assert_eq(nn_history_key_count(NULL), 0);
  cr_assert_null(nn_history_key(NULL, 0));
  nn_history_free(h);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}

static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "%s", path);
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  return buf;
}

Test(history, csv_has_a_header_and_one_line_per_epoch) {
  ad_tensor *x, *y;
  test_blobs(ctx, 40, 2, &x, &y);
  nn_model *m = mlp(ctx, 5);
  nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.01);
  nn_fit_opts fo = {.epochs = 3,
                    .batch_size = 10,
                    .validation_split = 0.25,
                    .accuracy = true,
                    .verbose = -1,
                    .grad_norms = true};
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK);
  char dir[] = "/tmp/nn_history_XXXXXX", path[64];
  cr_assert_not_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/h.csv", dir);
  cr_assert_eq(nn_history_write_csv(h, path), AD_OK, "%s", ad_last_error(ctx));
  char *csv = read_all(path);
  const char *head = "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,grad_norm_mean,"
                     "grad_norm_max,grad_norm/0.weight,grad_norm/0.bias,grad_norm/2.weight,"
                     "grad_norm/2.bias\n";
  cr_assert(strncmp(csv, head, strlen(head)) == 0, "%s", csv);
  char *line = csv + strlen(head);
  for (int e = 0; e < 3; e++) {
    char *end;
    cr_assert_eq(strtol(line, &end, 10), e + 1);
    for (int i = 0; i < nn_history_key_count(h); i++) {
      cr_assert_eq(*end, ',');
      double v = strtod(end + 1, &end);
      cr_assert_eq(v, nn_history_get(h, nn_history_key(h, i), e), "epoch %d, %s", e + 1,
                   nn_history_key(h, i)); /* 17 digits read back exactly */
    }
    cr_assert_eq(*end, '\n');
    line = end + 1;
  }
  cr_assert_eq(*line, 0);
  /* rewriting replaces the file and leaves no temporary file behind */
  cr_assert_eq(nn_history_write_csv(h, path), AD_OK);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "test $(ls %s | wc -l) = 1", dir);
  cr_assert_eq(system(cmd), 0, "a temporary file was left in %s", dir);
  /* through a symbolic link: the link stays, its target is rewritten */
  char link[80];
  snprintf(link, sizeof link, "%s/link.csv", dir);
  cr_assert_eq(symlink("h.csv", link), 0);
  char *want = strdup(read_all(path)); /* read_all's buffer is reused */
  cr_assert_eq(truncate(path, 0), 0);
  cr_assert_eq(nn_history_write_csv(h, link), AD_OK, "%s", ad_last_error(ctx));
  struct stat lb;
  cr_assert(lstat(link, &lb) == 0 && S_ISLNK(lb.st_mode), "the link was replaced by a file");
  cr_assert_str_eq(read_all(path), want, "the target was not rewritten");
  free(want);
  cr_assert_eq(unlink(link), 0);

  /* errors: a folder that does not exist, NULL arguments */
  snprintf(path, sizeof path, "%s/no/h.csv", dir);
  cr_assert_eq(nn_history_write_csv(h, path), AD_ERR_IO);
  expect_status_msg(ctx, AD_ERR_IO, "history_write_csv /tmp/nn_history_");
  /* a FIFO (as a device such as /dev/null) is not replaced by a file */
  snprintf(path, sizeof path, "%s/fifo.csv", dir);
  cr_assert_eq(mkfifo(path, 0600), 0);
  cr_assert_eq(nn_history_write_csv(h, path), AD_ERR_IO);
  expect_status_msg(ctx, AD_ERR_IO, "not a regular file");
  struct stat sb;
  cr_assert(stat(path, &sb) == 0 && S_ISFIFO(sb.st_mode), "the FIFO was replaced");
  cr_assert_eq(nn_history_write_csv(h, NULL), AD_ERR_NULL);
  expect_status_msg(ctx, AD_ERR_NULL, "history_write_csv: path is NULL");
  cr_assert_eq(nn_history_write_csv(h, ""), AD_ERR_ARG); /* as the checkpoints' saves */
  expect_status_msg(ctx, AD_ERR_ARG, "history_write_csv: path is empty");
  cr_assert_eq(nn_history_write_csv(NULL, "x.csv"), AD_ERR_NULL);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_assert_eq(system(cmd), 0);
  nn_history_free(h);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* Each allocation of nn_history_write_csv refused in turn: AD_ERR_OOM saying
 * "out of memory" (not strerror's "Cannot allocate memory"), the file
 * written earlier kept whole, no temporary file left, nothing leaked. */
Test(history, csv_out_of_memory_everywhere) {
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  cr_assert_not_null(c);
  ad_tensor *x, *y;
  test_blobs(c, 12, 2, &x, &y);
  nn_model *m = mlp(c, 5);
  nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.01);
  nn_fit_opts fo = {.epochs = 2, .batch_size = 6, .verbose = -1};
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK, "%s", ad_last_error(c));
  char dir[] = "/tmp/nn_history_XXXXXX", path[64], cmd[128];
  cr_assert_not_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/h.csv", dir);
  cr_assert_eq(nn_history_write_csv(h, path), AD_OK, "%s", ad_last_error(c));
  char *want = strdup(read_all(path)); /* read_all's buffer is reused */
  long live = ta.live;
  bool written = false;
  for (long k = 0; !written; k++) {
    test_alloc_refuse_after(&ta, k);
    ta.refuse = TEST_ALLOC_REFUSE_ONLY;
    long refused = ta.refused;
    ad_status st = nn_history_write_csv(h, path);
    test_alloc_grant_all(&ta);
    written = ta.refused == refused;
    if (written) {
      cr_assert_eq(st, AD_OK, "%s", ad_last_error(c));
    } else {
      cr_assert_eq(st, AD_ERR_OOM, "k %ld: %s", k, ad_last_error(c));
      expect_status_msg(c, AD_ERR_OOM, "out of memory");
    }
    cr_assert_str_eq(read_all(path), want, "k %ld: the file changed", k);
    snprintf(cmd, sizeof cmd, "test $(ls %s | wc -l) = 1", dir);
    cr_assert_eq(system(cmd), 0, "k %ld: a temporary file was left in %s", k, dir);
    cr_assert_eq(ta.live, live, "k %ld: %ld blocks leaked", k, ta.live - live);
  }
  free(want);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_assert_eq(system(cmd), 0);
  nn_history_free(h);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0);
}

/* ---------------------------------------------------------- early stopping */

/* The weights after each epoch, kept by on_epoch_end. */
typedef struct snaps {
  const nn_model *m;
  double *w[8];
} snaps;

static bool keep_weights(int epoch, const nn_history *h, void *ud) {
  (void)h;
  snaps *s = ud;
  int64_t n;
  s->w[epoch] = weights(s->m, &n);
  return true;
}

/* The loss falls every epoch here, so monitoring it in NN_MODE_MAX makes
 * epoch 1 the best and nothing improve afterwards: with patience 2, Keras
 * stops after epoch 3 and restores epoch 1's weights. */
Test(early_stopping, stops_after_patience_and_restores_the_best_weights_exactly) {
  ad_tensor *x, *y;
  test_blobs(ctx, 60, 4, &x, &y);
  for (int restore = 0; restore < 2; restore++) {
    nn_model *m = mlp(ctx, 7);
    nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.01);
    snaps s = {.m = m};
    char buf[4096] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    nn_fit_opts fo = {.epochs = 8,
                      .batch_size = 10,
                      .seed = 1,
                      .out = f,
                      .verbose = 1,
                      .on_epoch_end = keep_weights,
                      .ud = &s,
                      .early_stopping = {.monitor = "loss",
                                         .mode = NN_MODE_MAX,
                                         .patience = 2,
                                         .restore_best_weights = restore}};
    nn_history *h;
    cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK, "%s",
                 ad_last_error(ctx));
    fclose(f);
    cr_assert_eq(nn_history_epochs(h), 3, "%s", buf);
    cr_assert_eq(nn_history_best_epoch(h), 0);
    cr_assert_lt(nn_history_get(h, "loss", 2), nn_history_get(h, "loss", 0));
    int64_t n;
    double *now = weights(m, &n);
    cr_assert_eq(memcmp(now, s.w[restore ? 0 : 2], (size_t)n * sizeof *now), 0,
                 "restore %d: the weights are not those of epoch %d", restore, restore ? 1 : 3);
    cr_assert_neq(memcmp(s.w[0], s.w[2], (size_t)n * sizeof *now), 0);
    cr_assert(strstr(buf, restore ? "early stopping: loss did not improve for 2 epochs; best epoch "
                                    "1, its weights restored\n"
                                  : "early stopping: loss did not improve for 2 epochs; best epoch "
                                    "1\n"),
              "%s", buf);
    for (int e = 0; e < 3; e++) free(s.w[e]);
    free(now);
    nn_history_free(h);
    nn_optimizer_free(o);
    nn_model_free(m);
  }
  ad_tensor_free(x), ad_tensor_free(y);
}

/* on_epoch_end records an op over the weights (grad enabled) and keeps
 * it; restoring the best weights after early stopping writes them, so a
 * backward through that op afterwards is refused (it would otherwise take
 * the restored values for the ones the op saw). */
typedef struct recorded {
  nn_model *m;
  ad_tensor *sum; /* of the first parameter, recorded at the last epoch end */
} recorded;

static bool record_sum(int epoch, const nn_history *h, void *ud) {
  (void)epoch, (void)h;
  recorded *r = ud;
  bool old = ad_set_grad_enabled(ctx, true);
  ad_tensor *w = nn_params_tensor(nn_model_params(r->m), 0);
  r->sum = ad_sum(ctx, ad_mul(ctx, w, w));
  ad_set_grad_enabled(ctx, old);
  return true;
}

Test(early_stopping, restoring_the_best_weights_is_a_write) {
  ad_tensor *x, *y;
  test_blobs(ctx, 60, 4, &x, &y);
  nn_model *m = mlp(ctx, 7);
  nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.01);
  recorded r = {.m = m};
  nn_fit_opts fo = {
      .epochs = 8,
      .batch_size = 10,
      .seed = 1,
      .verbose = -1,
      .on_epoch_end = record_sum,
      .ud = &r,
      .early_stopping = {
          .monitor = "loss", .mode = NN_MODE_MAX, .patience = 2, .restore_best_weights = true}};
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_not_null(r.sum);
  ad_status st = ad_backward(ctx, r.sum, NULL);
  const char *msg = ad_last_error(ctx);
  cr_expect_eq(st, AD_ERR_STATE, "status %s: %s", ad_status_str(st), msg);
  cr_expect(strstr(msg, "was written after the op was recorded") != NULL, "%s", msg);
  ad_clear_error(ctx);
  ad_tape_reset(ctx);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* min_delta: an improvement smaller than it does not count. In NN_MODE_MIN
 * ("loss" in AUTO) with a huge min_delta nothing after epoch 1 improves;
 * with patience 0 training stops after epoch 2 (as Keras: never after the
 * first epoch). Without min_delta the falling loss never stops it. */
Test(early_stopping, min_delta_mode_and_patience) {
  ad_tensor *x, *y;
  test_blobs(ctx, 60, 4, &x, &y);
  double deltas[2] = {100, 0};
  int expect[2] = {2, 6};
  for (int k = 0; k < 2; k++) {
    nn_model *m = mlp(ctx, 7);
    nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.01);
    nn_fit_opts fo = {.epochs = 6,
                      .batch_size = 10,
                      .verbose = -1,
                      .early_stopping = {.monitor = "loss", .min_delta = deltas[k]}};
    nn_history *h;
    cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK);
    cr_assert_eq(nn_history_epochs(h), expect[k], "min_delta %g: %d epochs", deltas[k],
                 nn_history_epochs(h));
    cr_assert_eq(nn_history_best_epoch(h), k ? 5 : 0);
    nn_history_free(h);
    nn_optimizer_free(o);
    nn_model_free(m);
  }
  /* "val_accuracy" in AUTO is maximised: a model that reaches 100% keeps
   * the first epoch at 100% as the best (equal does not improve) */
  nn_model *m = mlp(ctx, 7);
  nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.05);
  nn_fit_opts fo = {.epochs = 30,
                    .batch_size = 10,
                    .accuracy = true,
                    .val_x = x,
                    .val_y = y,
                    .verbose = -1,
                    .early_stopping = {.monitor = "val_accuracy", .patience = 3}};
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK);
  int b = nn_history_best_epoch(h);
  cr_assert_eq(nn_history_epochs(h), b + 4, "best %d, epochs %d", b, nn_history_epochs(h));
  for (int e = 0; e < nn_history_epochs(h); e++)
    cr_assert_leq(nn_history_get(h, "val_accuracy", e), nn_history_get(h, "val_accuracy", b));
  nn_history_free(h);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}

Test(early_stopping, errors) {
  ad_tensor *x, *y;
  test_blobs(ctx, 20, 4, &x, &y);
  nn_model *m = mlp(ctx, 7);
  nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.01);
  nn_fit_opts fo = {.epochs = 2, .verbose = -1, .early_stopping = {.monitor = "val_loss"}};
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG,
                    "fit: early stopping monitors \"val_loss\", which this run does not record");
  cr_assert_eq(nn_history_epochs(h), 0);
  nn_history_free(h);
  fo.early_stopping = (nn_early_stopping){.monitor = "loss", .patience = -1};
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "fit: early stopping with min_delta 0, patience -1, mode 0");
  fo.early_stopping = (nn_early_stopping){.monitor = "loss", .min_delta = NAN};
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "min_delta nan");
  fo.early_stopping = (nn_early_stopping){.monitor = "loss", .min_delta = INFINITY};
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG,
                    "min_delta inf"); /* no change could count: it stopped at once */
  fo.early_stopping = (nn_early_stopping){.monitor = "loss", .mode = (nn_monitor_mode)7};
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "mode 7");
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}
