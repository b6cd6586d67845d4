/* test_nn_fit.c: permutations, splits and batches; nn_fit against a loop
 * written by hand; validation, history, progress output, flat memory;
 * evaluate and predict; checkpoints of a model and its optimizer; a short
 * MNIST run. */
#include "nn.h"
#include "test_alloc.h"
#include "test_blobs.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TEST_CTX_SUITE(data);
TEST_CTX_SUITE_ALSO(fit);
TEST_CTX_SUITE_ALSO(checkpoint);
TEST_CTX_SUITE_ALSO(mnist);

/* ------------------------------------------------------------------- data */

Test(data, permutation_is_seeded) {
  int64_t a[100], b[100];
  ad_rng r1, r2;
  ad_rng_seed(&r1, 4);
  ad_rng_seed(&r2, 4);
  nn_permutation(&r1, 100, a);
  nn_permutation(&r2, 100, b);
  cr_assert_eq(memcmp(a, b, sizeof a), 0);
  bool seen[100] = {0};
  int moved = 0;
  for (int i = 0; i < 100; i++) {
    cr_assert(a[i] >= 0 && a[i] < 100 && !seen[a[i]]);
    seen[a[i]] = true;
    moved += a[i] != i;
  }
  cr_assert_gt(moved, 80);
  nn_permutation(NULL, 100, a); /* no rng: the identity */
  for (int i = 0; i < 100; i++) cr_assert_eq(a[i], i);
}

/* x[i] = (i, 10 i), y[i] = i: rows identify themselves. */
static void make_rows(ad_ctx *c, int64_t n, ad_tensor **x, ad_tensor **y) {
  int64_t s[2] = {n, 2};
  *x = ad_zeros(c, AD_F32, 2, s);
  *y = ad_zeros(c, AD_I32, 1, s);
  for (int64_t i = 0; i < n; i++) {
    ad_tensor_set(*x, 2 * i, (double)i);
    ad_tensor_set(*x, 2 * i + 1, 10.0 * (double)i);
    ad_tensor_set(*y, i, (double)i);
  }
}

Test(data, train_test_split) {
  ad_tensor *x, *y, *xa, *ya, *xb, *yb;
  make_rows(ctx, 50, &x, &y);
  cr_assert_eq(nn_train_test_split(ctx, x, y, 12, true, 9, &xa, &ya, &xb, &yb), AD_OK);
  cr_assert(xa->shape[0] == 38 && xb->shape[0] == 12 && ya->shape[0] == 38 && yb->shape[0] == 12);
  bool seen[50] = {0};
  for (int i = 0; i < 50; i++) {
    ad_tensor *xs = i < 38 ? xa : xb, *ys = i < 38 ? ya : yb;
    int k = i < 38 ? i : i - 38;
    int row = (int)ad_tensor_get(ys, k);
    cr_assert(!seen[row]);
    seen[row] = true;
    cr_assert_eq(ad_tensor_get(xs, 2 * k), row); /* x and y stay paired */
    cr_assert_eq(ad_tensor_get(xs, 2 * k + 1), 10 * row);
  }
  ad_tensor *xc, *xd;
  cr_assert_eq(nn_train_test_split(ctx, x, NULL, 12, false, 0, &xc, NULL, &xd, NULL), AD_OK);
  cr_assert_eq(ad_tensor_get(xd, 0), 38); /* unshuffled: the last rows test */
  ad_tensor *o1, *o2, *o3, *o4;
  cr_assert_eq(nn_train_test_split(ctx, x, y, 51, true, 9, &o1, &o2, &o3, &o4), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "n_test 51 is outside 0..50");
  cr_assert(!o1 && !o2 && !o3 && !o4);
  int64_t s[1] = {49};
  ad_tensor *short_y = ad_zeros(ctx, AD_I32, 1, s);
  cr_assert_eq(nn_train_test_split(ctx, x, short_y, 1, true, 9, &o1, &o2, &o3, &o4), AD_ERR_SHAPE);
  expect_status_msg(ctx, AD_ERR_SHAPE, "x [50,2] and y [49] have different numbers of rows");
  int64_t rows[2] = {3, 60};
  cr_assert_null(nn_take_rows(ctx, x, 2, rows));
  expect_status_msg(ctx, AD_ERR_ARG, "row 60 is outside 0..49");
  ad_tensor *all[] = {x, y, xa, ya, xb, yb, xc, xd, short_y};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ad_tensor_free(all[i]);
}

/* The batch tensors are overwritten in place by the next call: a loss
 * summed over two batches, then one backward, would differentiate the
 * first batch's ops at the second batch's rows (d/dw 14 for rows 1..4, not
 * 10). The overwrite is noted, so that backward refuses; a batch kept with
 * ad_tensor_clone gives the true gradient. */
Test(data, a_backward_over_an_overwritten_batch_is_refused) {
  int64_t xs[2] = {4, 1}, ws[2] = {1, 1};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 2, xs), *w = ad_ones(ctx, AD_F64, 2, ws);
  for (int i = 0; i < 4; i++) ad_tensor_set(x, i, i + 1);
  ad_tensor_set_requires_grad(w, true);
  nn_batcher *b = nn_batcher_new(ctx, x, NULL, 2, false, 0);
  for (int keep = 0; keep < 2; keep++) {
    ad_tensor *xb, *total = NULL, *kept[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
      cr_assert(nn_batcher_next(b, &xb, NULL));
      if (keep) xb = kept[k] = ad_tensor_clone(ctx, xb);
      ad_tensor *l = ad_sum(ctx, ad_matmul(ctx, xb, w, false, false));
      total = total ? ad_add(ctx, total, l) : l;
    }
    cr_assert(!nn_batcher_next(b, &xb, NULL)); /* the epoch's end */
    cr_assert_float_eq(ad_tensor_item(total), 10.0, 1e-12);
    if (!keep) {
      cr_assert_eq(ad_backward(ctx, total, NULL), AD_ERR_STATE);
      expect_status_msg(ctx, AD_ERR_STATE, "input 0 of matmul ([2,1]) was written after the op");
      cr_assert_null(w->grad);
    } else {
      cr_assert_eq(ad_backward(ctx, total, NULL), AD_OK, "%s", ad_last_error(ctx));
      cr_assert_float_eq(ad_tensor_get(w->grad, 0), 10.0, 1e-12);
    }
    ad_tape_reset(ctx);
    ad_tensor_free(kept[0]);
    ad_tensor_free(kept[1]);
  }
  nn_batcher_free(b);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

Test(data, batcher_visits_every_row_once_per_epoch) {
  ad_tensor *x, *y;
  make_rows(ctx, 23, &x, &y);
  nn_batcher *b = nn_batcher_new(ctx, x, y, 5, true, 17);
  cr_assert_eq(nn_batcher_batches(b), 5);
  cr_assert_eq(nn_batcher_rows(b), 23);
  int64_t order[3][23];
  for (int e = 0; e < 3; e++) {
    ad_tensor *xb, *yb;
    int k = 0, batches = 0;
    bool seen[23] = {0};
    while (nn_batcher_next(b, &xb, &yb)) {
      cr_assert_eq(xb->shape[0], batches < 4 ? 5 : 3);
      cr_assert_eq(yb->shape[0], xb->shape[0]);
      for (int64_t i = 0; i < xb->shape[0]; i++) {
        int row = (int)ad_tensor_get(yb, i);
        cr_assert_eq(ad_tensor_get(xb, 2 * i + 1), 10 * row);
        cr_assert(!seen[row]);
        seen[row] = true;
        order[e][k++] = row;
      }
      batches++;
    }
    cr_assert_eq(k, 23);
    cr_assert_eq(batches, 5);
  }
  cr_assert_neq(memcmp(order[0], order[1], sizeof order[0]), 0); /* reshuffled */
  /* the same seed gives the same epochs */
  nn_batcher *c = nn_batcher_new(ctx, x, y, 5, true, 17);
  ad_tensor *yb;
  int k = 0;
  while (nn_batcher_next(c, NULL, &yb))
    for (int64_t i = 0; i < yb->shape[0]; i++) cr_assert_eq(ad_tensor_get(yb, i), order[0][k++]);
  cr_assert_eq(k, 23);
  /* a range, in order */
  nn_batcher *r = nn_batcher_new_range(ctx, x, NULL, 20, 23, 2, false, 0);
  ad_tensor *xb;
  cr_assert(nn_batcher_next(r, &xb, &yb));
  cr_assert_null(yb);
  cr_assert(ad_tensor_get(xb, 0) == 20 && ad_tensor_get(xb, 2) == 21);
  cr_assert(nn_batcher_next(r, &xb, NULL) && xb->shape[0] == 1);
  cr_assert(!nn_batcher_next(r, &xb, NULL));
  cr_assert_null(nn_batcher_new_range(ctx, x, y, 5, 30, 2, false, 0));
  expect_status_msg(ctx, AD_ERR_ARG, "batcher: rows [5, 30) of 23");
  nn_batcher_free(b), nn_batcher_free(c), nn_batcher_free(r), nn_batcher_free(NULL);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* With drop_last an epoch ends before its short batch: the rows left out
 * are the tail of that epoch's order, others each epoch. */
Test(data, batcher_drop_last_leaves_out_the_short_batch) {
  ad_tensor *x, *y;
  make_rows(ctx, 23, &x, &y);
  nn_batcher *b = nn_batcher_new(ctx, x, y, 5, true, 17),
             *all = nn_batcher_new(ctx, x, y, 5, true, 17);
  cr_assert_eq(nn_batcher_set_drop_last(b, true), AD_OK);
  cr_assert_eq(nn_batcher_set_drop_last(NULL, true), AD_ERR_NULL);
  cr_assert_eq(nn_batcher_batches(b), 4);
  cr_assert_eq(nn_batcher_rows(b), 20);
  int64_t left_out[2][3];
  for (int e = 0; e < 2; e++) {
    ad_tensor *xb, *yb, *ya;
    int batches = 0;
    while (nn_batcher_next(b, &xb, &yb)) {
      cr_assert(nn_batcher_next(all, NULL, &ya));
      cr_assert_eq(xb->shape[0], 5);
      for (int64_t i = 0; i < 5; i++) cr_assert_eq(ad_tensor_get(yb, i), ad_tensor_get(ya, i));
      batches++;
    }
    cr_assert_eq(batches, 4);
    cr_assert(nn_batcher_next(all, NULL, &ya) && ya->shape[0] == 3);
    for (int64_t i = 0; i < 3; i++) left_out[e][i] = (int64_t)ad_tensor_get(ya, i);
    cr_assert(!nn_batcher_next(all, NULL, &ya));
  }
  cr_assert_neq(memcmp(left_out[0], left_out[1], sizeof left_out[0]), 0);
  /* off again: the short batch is back */
  cr_assert_eq(nn_batcher_set_drop_last(b, false), AD_OK);
  cr_assert_eq(nn_batcher_batches(b), 5);
  cr_assert_eq(nn_batcher_rows(b), 23);
  /* a batch size above the rows: one batch of all of them, none when dropped */
  nn_batcher *big = nn_batcher_new(ctx, x, y, 40, false, 0);
  ad_tensor *xb;
  cr_assert(nn_batcher_next(big, &xb, NULL) && xb->shape[0] == 23);
  cr_assert(!nn_batcher_next(big, &xb, NULL));
  cr_assert_eq(nn_batcher_set_drop_last(big, true), AD_OK);
  cr_assert_eq(nn_batcher_batches(big), 0);
  cr_assert_eq(nn_batcher_rows(big), 0);
  cr_assert(!nn_batcher_next(big, &xb, NULL));
  cr_assert(!nn_batcher_next(big, &xb, NULL));
  nn_batcher_free(b), nn_batcher_free(all), nn_batcher_free(big);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* A batcher whose x or y was freed refuses the next batch: a freed x read
 * as a tensor of no bytes, so the batch kept the last one's rows and
 * nn_batcher_next returned true (and UBSan saw an offset added to NULL). */
Test(data, batcher_over_a_freed_tensor_refuses) {
  for (int k = 0; k < 2; k++) {
    ad_tensor *x, *y, *xb, *yb;
    make_rows(ctx, 10, &x, &y);
    nn_batcher *b = nn_batcher_new(ctx, x, y, 4, false, 0);
    cr_assert(nn_batcher_next(b, &xb, &yb));
    cr_assert_eq(ad_tensor_get(yb, 0), 0);
    ad_tensor_free(k ? y : x);
    cr_assert(!nn_batcher_next(b, &xb, &yb), "a batch from a freed %s", k ? "y" : "x");
    expect_status_msg(ctx, AD_ERR_STATE,
                      k ? "batcher_next: y was freed, but the batcher reads its rows"
                        : "batcher_next: x was freed, but the batcher reads its rows");
    nn_batcher_free(b);
    ad_tensor_free(k ? x : y);
  }
}

/* A loop that breaks out of an epoch: after nn_batcher_reset the next
 * batch starts a whole new epoch, the one a batcher that finished its
 * first epoch would give next. */
Test(data, batcher_reset_starts_a_new_epoch) {
  ad_tensor *x, *y;
  make_rows(ctx, 23, &x, &y);
  nn_batcher *b = nn_batcher_new(ctx, x, y, 5, true, 17),
             *c = nn_batcher_new(ctx, x, y, 5, true, 17);
  ad_tensor *yb, *yc;
  for (int k = 0; k < 2; k++) cr_assert(nn_batcher_next(b, NULL, &yb));
  nn_batcher_reset(b);
  nn_batcher_reset(NULL);
  while (nn_batcher_next(c, NULL, &yc)) continue; /* c's first epoch, whole */
  int batches = 0, rows = 0;
  bool seen[23] = {0};
  while (nn_batcher_next(b, NULL, &yb)) {
    cr_assert(nn_batcher_next(c, NULL, &yc));
    cr_assert_eq(yb->shape[0], yc->shape[0]);
    for (int64_t i = 0; i < yb->shape[0]; i++) {
      int row = (int)ad_tensor_get(yb, i);
      cr_assert_eq(row, (int)ad_tensor_get(yc, i), "batch %d, row %lld", batches, (long long)i);
      cr_assert(!seen[row]);
      seen[row] = true, rows++;
    }
    batches++;
  }
  cr_assert_eq(batches, 5);
  cr_assert_eq(rows, 23);
  nn_batcher_free(b), nn_batcher_free(c);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* A batch of 256 KB or more is gathered by the library's threads: every row
 * lands where one thread puts it (400 rows of 1000 floats, batches of 300
 * (1.2 MB) and the short last one, shuffled; 1, 2 and 3 threads). */
Test(data, large_batches_gathered_on_threads_hold_their_rows) {
  int64_t s[2] = {400, 1000};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 2, s);
  cr_assert_not_null(x);
  float *xv = x->data;
  for (int64_t e = 0; e < x->size; e++) xv[e] = (float)e;
  for (int threads = 1; threads <= 3; threads++) {
    cr_assert_eq(ad_set_num_threads(threads), AD_OK);
    nn_batcher *b = nn_batcher_new(ctx, x, NULL, 300, true, 5);
    ad_tensor *xb;
    bool seen[400] = {0};
    int rows = 0;
    while (nn_batcher_next(b, &xb, NULL)) {
      const float *v = xb->data;
      for (int64_t i = 0; i < xb->shape[0]; i++, rows++) {
        int64_t row = (int64_t)v[i * 1000] / 1000;
        cr_assert(row >= 0 && row < 400 && !seen[row], "%d threads: row %lld", threads,
                  (long long)row);
        seen[row] = true;
        for (int64_t k = 0; k < 1000; k++)
          if (v[i * 1000 + k] != (float)(row * 1000 + k))
            cr_assert_fail("%d threads: batch row %lld element %lld is %g", threads, (long long)i,
                           (long long)k, (double)v[i * 1000 + k]);
      }
    }
    cr_assert_eq(rows, 400);
    nn_batcher_free(b);
  }
  ad_set_num_threads(1);
  ad_tensor_free(x);
}

/* ------------------------------------------------------------------ fit */

static nn_model *mlp(ad_ctx *c, uint64_t seed, double dropout) {
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  nn_dense_opts o = {.dtype = AD_F64};
  nn_model *m = nn_sequential_new(c);
  nn_model_add(m, nn_dense_new(c, 4, 16, &rng, &o));
  nn_model_add(m, nn_activation_new(c, NN_ACT_TANH));
  if (dropout > 0) nn_model_add(m, nn_dropout_new(c, dropout, seed + 1));
  nn_model_add(m, nn_dense_new(c, 16, 3, &rng, &o));
  return m;
}

static bool params_equal(const nn_model *a, const nn_model *b) {
  nn_params *pa = nn_model_params(a), *pb = nn_model_params(b);
  for (int i = 0; i < nn_params_count(pa); i++) {
    ad_tensor *ta = nn_params_tensor(pa, i), *tb = nn_params_tensor(pb, i);
    if (memcmp(ta->data, tb->data, (size_t)ta->size * ad_dtype_size(ta->dtype))) return false;
  }
  return true;
}

/* nn_fit's history equals a loop written with the public pieces. */
Test(fit, history_matches_a_hand_written_loop) {
  ad_tensor *x, *y;
  test_blobs(ctx, 90, 1, &x, &y);
  nn_model *a = mlp(ctx, 5, 0.2), *b = mlp(ctx, 5, 0.2);
  nn_optimizer *oa = nn_adam_new(nn_model_params(a), 0.01);
  nn_optimizer *ob = nn_adam_new(nn_model_params(b), 0.01);
  nn_fit_opts fo = {.epochs = 3, .batch_size = 16, .seed = 7, .accuracy = true, .verbose = -1};
  nn_history *h;
  cr_assert_eq(nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(nn_history_epochs(h), 3);
  cr_assert_not_null(nn_history_values(h, "accuracy"));
  cr_assert_null(nn_history_values(h, "val_loss"));
  cr_assert_null(nn_history_values(h, "nope"));
  cr_assert(isnan(nn_history_get(h, "loss", 3)));
  cr_assert(!nn_model_training(a)); /* left in evaluation mode */

  nn_batcher *bt = nn_batcher_new(ctx, x, y, 16, true, 7);
  for (int e = 0; e < 3; e++) {
    double sum = 0;
    int64_t seen = 0, correct = 0;
    ad_tensor *xb, *yb;
    while (nn_batcher_next(bt, &xb, &yb)) {
      ad_tape_reset(ctx);
      nn_params_zero_grad(nn_model_params(b));
      nn_model_set_training(b, true);
      ad_tensor *pred = nn_model_forward(b, xb);
      ad_tensor *l = nn_cross_entropy_loss(ctx, pred, yb, NN_MEAN);
      cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK);
      cr_assert_eq(nn_optimizer_step(ob), AD_OK);
      sum += ad_tensor_item(l) * (double)xb->shape[0];
      seen += xb->shape[0];
      correct += nn_count_correct(pred, yb, 0.5);
    }
    cr_assert_eq(nn_history_get(h, "loss", e), sum / (double)seen, "epoch %d", e);
    cr_assert_eq(nn_history_get(h, "accuracy", e), (double)correct / (double)seen);
    cr_assert_eq(nn_history_get(h, "lr", e), 0.01);
    cr_assert_geq(nn_history_get(h, "seconds", e), 0.0);
  }
  cr_assert(params_equal(a, b), "parameters differ after the same steps");
  cr_assert_lt(nn_history_get(h, "loss", 2), nn_history_get(h, "loss", 0));
  nn_batcher_free(bt);
  nn_history_free(h);
  nn_optimizer_free(oa), nn_optimizer_free(ob);
  nn_model_free(a), nn_model_free(b);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* drop_last: nn_fit trains on the batches of a batcher with drop_last, and
 * a batch norm no longer meets a last batch of one row (PyTorch's
 * DataLoader(drop_last=True) for that case). */
Test(fit, drop_last_matches_a_hand_written_loop) {
  ad_tensor *x, *y;
  test_blobs(ctx, 90, 1, &x, &y); /* 5 batches of 16 and one of 10 */
  nn_model *a = mlp(ctx, 5, 0), *b = mlp(ctx, 5, 0), *c = mlp(ctx, 5, 0);
  nn_optimizer *oa = nn_adam_new(nn_model_params(a), 0.01);
  nn_optimizer *ob = nn_adam_new(nn_model_params(b), 0.01);
  nn_optimizer *oc = nn_adam_new(nn_model_params(c), 0.01);
  nn_fit_opts fo = {.epochs = 2, .batch_size = 16, .seed = 7, .verbose = -1, .drop_last = true};
  nn_history *h;
  cr_assert_eq(nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK, "%s",
               ad_last_error(ctx));
  nn_batcher *bt = nn_batcher_new(ctx, x, y, 16, true, 7);
  cr_assert_eq(nn_batcher_set_drop_last(bt, true), AD_OK);
  for (int e = 0; e < 2; e++) {
    double sum = 0;
    int64_t seen = 0;
    ad_tensor *xb, *yb;
    while (nn_batcher_next(bt, &xb, &yb)) {
      double l;
      cr_assert_eq(nn_train_step(b, ob, nn_cross_entropy_loss, xb, yb, 0, &l), AD_OK);
      sum += l * (double)xb->shape[0];
      seen += xb->shape[0];
    }
    cr_assert_eq(seen, 80);
    cr_assert_eq(nn_history_get(h, "loss", e), sum / (double)seen, "epoch %d", e);
  }
  cr_assert(params_equal(a, b), "parameters differ after the same steps");
  fo.drop_last = false; /* the short batches trained on: other parameters */
  cr_assert_eq(nn_fit(c, oc, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK);
  cr_assert(!params_equal(a, c));
  /* fewer rows to train on than a batch: nothing would train */
  fo.drop_last = true, fo.validation_split = 0.9;
  cr_assert_eq(nn_fit(c, oc, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "fit: drop_last with 9 rows to train on and batch size 16");
  nn_batcher_free(bt);
  nn_history_free(h);
  nn_optimizer_free(oa), nn_optimizer_free(ob), nn_optimizer_free(oc);
  nn_model_free(a), nn_model_free(b), nn_model_free(c);

  /* 33 rows in batches of 16: the last has one row, which a batch norm in
   * training mode refuses, as PyTorch's */
  int64_t first[33];
  for (int i = 0; i < 33; i++) first[i] = i;
  ad_tensor *x33 = nn_take_rows(ctx, x, 33, first), *y33 = nn_take_rows(ctx, y, 33, first);
  cr_assert(x33 && y33, "%s", ad_last_error(ctx));
  for (int k = 0; k < 2; k++) {
    ad_rng rng;
    ad_rng_seed(&rng, 3);
    nn_dense_opts d = {.dtype = AD_F64};
    nn_model *m = nn_sequential_new(ctx);
    nn_model_add(m, nn_dense_new(ctx, 4, 8, &rng, &d));
    nn_model_add(m, nn_batch_norm1d_new(ctx, 8, &(nn_batch_norm_opts){.dtype = AD_F64}));
    nn_model_add(m, nn_dense_new(ctx, 8, 3, &rng, &d));
    nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
    nn_fit_opts bo = {.epochs = 1, .batch_size = 16, .verbose = -1, .drop_last = k == 1};
    ad_status st = nn_fit(m, o, nn_cross_entropy_loss, x33, y33, &bo, NULL);
    if (k == 0) {
      cr_assert_eq(st, AD_ERR_SHAPE);
      expect_status_msg(ctx, AD_ERR_SHAPE, "1 value(s) per channel");
    } else {
      cr_assert_eq(st, AD_OK, "%s", ad_last_error(ctx));
    }
    nn_optimizer_free(o);
    nn_model_free(m);
  }
  ad_tensor_free(x33), ad_tensor_free(y33);
  ad_tensor_free(x), ad_tensor_free(y);
}

typedef struct mem_log {
  ad_ctx *ctx;
  test_alloc *c;
  int64_t live[8], allocs[8];
  size_t arena[8];
} mem_log;

static bool log_memory(int epoch, const nn_history *h, void *ud) {
  (void)h;
  mem_log *m = ud;
  m->live[epoch] = m->c->live_bytes;
  m->allocs[epoch] = m->c->requests;
  m->arena[epoch] = ad_arena_capacity(m->ctx);
  return true;
}

Test(fit, memory_stays_flat_over_epochs) {
  /* its own context: the allocator counts what training asks for */
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  ad_tensor *x, *y;
  test_blobs(c, 200, 2, &x, &y);
  nn_model *m = mlp(c, 3, 0.1);
  nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.01);
  mem_log log = {.ctx = c, .c = &ta};
  nn_fit_opts fo = {.epochs = 6,
                    .batch_size = 32,
                    .validation_split = 0.2,
                    .accuracy = true,
                    .verbose = -1,
                    .on_epoch_end = log_memory,
                    .ud = &log};
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK, "%s", ad_last_error(c));
  for (int e = 2; e < 6; e++) {
    cr_assert_eq(log.live[e], log.live[1], "epoch %d: %lld bytes live, %lld after epoch 2", e + 1,
                 (long long)log.live[e], (long long)log.live[1]);
    cr_assert_eq(log.arena[e], log.arena[1]);
  }
  /* after the first epochs nothing is allocated per step (only the
   * validation pass's tape, when it first grows, and nothing after) */
  cr_assert_eq(log.allocs[5], log.allocs[2], "allocations %lld -> %lld", (long long)log.allocs[2],
               (long long)log.allocs[5]);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
  ad_ctx_free(c);
  cr_assert_eq(ta.live_bytes, 0, "%lld bytes leaked", ta.live_bytes);
}

Test(fit, validation_split_and_evaluate_agree) {
  ad_tensor *x, *y;
  test_blobs(ctx, 100, 3, &x, &y);
  nn_model *m = mlp(ctx, 1, 0.3);
  nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.02);
  nn_fit_opts fo = {
      .epochs = 4, .batch_size = 8, .validation_split = 0.25, .accuracy = true, .verbose = -1};
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK);
  /* the last 25 rows were held out: evaluate them directly */
  int64_t rows[25];
  for (int i = 0; i < 25; i++) rows[i] = 75 + i;
  ad_tensor *xv = nn_take_rows(ctx, x, 25, rows), *yv = nn_take_rows(ctx, y, 25, rows);
  double loss, acc;
  cr_assert_eq(nn_evaluate(m, nn_cross_entropy_loss, xv, yv, 7, &loss, &acc), AD_OK);
  cr_assert_float_eq(nn_history_get(h, "val_loss", 3), loss, 1e-12);
  cr_assert_eq(nn_history_get(h, "val_accuracy", 3), acc);
  cr_assert_gt(acc, 0.7);

  /* evaluate equals the full-batch loss (batches of 7 weighted by size) */
  ad_tape_reset(ctx);
  bool old = ad_set_grad_enabled(ctx, false);
  ad_tensor *pred = nn_model_forward(m, xv);
  double full = ad_tensor_item(nn_cross_entropy_loss(ctx, pred, yv, NN_MEAN));
  ad_set_grad_enabled(ctx, old);
  cr_assert_float_eq(loss, full, 1e-12);
  /* predict returns the same outputs, row by row (it resets the tape, so
   * pred, a temporary, is kept in a copy) */
  pred = ad_tensor_clone(ctx, pred);
  ad_tensor *p = nn_predict(m, xv, 4);
  cr_assert(p && p->shape[0] == 25 && p->shape[1] == 3);
  for (int i = 0; i < 75; i++)
    cr_assert_float_eq(ad_tensor_get(p, i), ad_tensor_get(pred, i), 1e-14);
  ad_tensor_free(p), ad_tensor_free(pred);

  /* explicit validation data */
  nn_history *h2;
  fo.epochs = 1, fo.val_x = xv, fo.val_y = yv;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h2), AD_OK);
  cr_assert(!isnan(nn_history_get(h2, "val_loss", 0)));
  nn_history_free(h), nn_history_free(h2);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y), ad_tensor_free(xv), ad_tensor_free(yv);
}

/* A model y = x * w that counts the rows it sees in training mode and in
 * evaluation mode. */
static int64_t rows_trained, rows_validated;
static ad_tensor *counting_forward(nn_model *m, ad_tensor *x, void *ud) {
  (void)ud;
  *(nn_model_training(m) ? &rows_trained : &rows_validated) += x->shape[0];
  return ad_mul(nn_model_ctx(m), x, nn_model_param(m, "w"));
}

/* As Keras: floor(rows * (1 - split)) rows train, the rest validate, and a
 * split that leaves either part empty is an error (it held out
 * floor(rows * split) rows and skipped validation when that was 0). */
Test(fit, validation_split_follows_keras) {
  const struct {
    int64_t rows;
    double split;
    int64_t train; /* -1: refused */
  } cases[] = {
      {10, 0.25, 7}, {3, 0.1, 2},       {7, 0.2, 5}, {100, 0.25, 75}, {10, 0.9, 1}, {10, 0.3, 7},
      {10, 0.7, 3},  {1000, 0.07, 930}, {3, 0.5, 1}, {1, 0.5, -1},    {3, 0.7, -1}, {10, 1e-16, -1},
  };
  int64_t one[1] = {1};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    nn_model *m = nn_model_new(ctx, counting_forward, NULL);
    cr_assert_not_null(
        nn_model_add_param(m, "w", AD_F32, 1, one, nn_init_make(NN_INIT_CONSTANT, 1, 0), NULL));
    nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0, 0, false, 0);
    int64_t s[2] = {cases[c].rows, 1};
    ad_tensor *x = ad_zeros(ctx, AD_F32, 2, s), *y = ad_zeros(ctx, AD_F32, 2, s);
    rows_trained = rows_validated = 0;
    nn_fit_opts fo = {
        .epochs = 1, .batch_size = 1000, .verbose = -1, .validation_split = cases[c].split};
    nn_history *h;
    ad_status st = nn_fit(m, o, nn_mse_loss, x, y, &fo, &h);
    if (cases[c].train < 0) {
      cr_assert_eq(st, AD_ERR_ARG, "%lld rows, split %g", (long long)cases[c].rows, cases[c].split);
      expect_status_msg(ctx, AD_ERR_ARG, "each needs at least one");
      cr_assert_eq(rows_trained + rows_validated, 0);
    } else {
      cr_assert_eq(st, AD_OK, "%s", ad_last_error(ctx));
      cr_assert_eq(rows_trained, cases[c].train, "%lld rows, split %g: %lld trained",
                   (long long)cases[c].rows, cases[c].split, (long long)rows_trained);
      cr_assert_eq(rows_validated, cases[c].rows - cases[c].train,
                   "%lld rows, split %g: %lld validated", (long long)cases[c].rows, cases[c].split,
                   (long long)rows_validated);
      cr_assert(!isnan(nn_history_get(h, "val_loss", 0)));
    }
    nn_history_free(h);
    ad_tensor_free(x), ad_tensor_free(y);
    nn_optimizer_free(o);
    nn_model_free(m);
  }
  /* the message names the numbers */
  nn_model *m = nn_model_new(ctx, counting_forward, NULL);
  nn_model_add_param(m, "w", AD_F32, 1, one, nn_init_make(NN_INIT_CONSTANT, 1, 0), NULL);
  nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0, 0, false, 0);
  int64_t s[2] = {3, 1};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 2, s), *y = ad_zeros(ctx, AD_F32, 2, s);
  nn_fit_opts fo = {.verbose = -1, .validation_split = 0.7};
  cr_assert_eq(nn_fit(m, o, nn_mse_loss, x, y, &fo, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG,
                    "fit: validation split 0.7 of 3 rows leaves 0 to train on and 3 to validate");
  ad_tensor_free(x), ad_tensor_free(y);
  nn_optimizer_free(o);
  nn_model_free(m);
}

static bool stop_after_two(int epoch, const nn_history *h, void *ud) {
  (void)h, (void)ud;
  return epoch < 1;
}

Test(fit, progress_lines_schedule_and_early_stop) {
  ad_tensor *x, *y;
  test_blobs(ctx, 40, 4, &x, &y);
  nn_model *m = mlp(ctx, 1, 0);
  nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0.1, 0.9, true, 0);
  nn_schedule s = {.kind = NN_SCHED_STEP, .step_size = 1, .gamma = 0.5};
  nn_optimizer_set_schedule(o, &s);
  char buf[4096] = {0};
  FILE *f = fmemopen(buf, sizeof buf - 1, "w"); /* not a terminal: one line per epoch */
  nn_fit_opts fo = {
      .epochs = 5, .batch_size = 10, .accuracy = true, .out = f, .on_epoch_end = stop_after_two};
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK);
  fclose(f);
  cr_assert_eq(nn_history_epochs(h), 2);
  cr_assert_eq(nn_history_get(h, "lr", 0), 0.1);
  cr_assert_eq(nn_history_get(h, "lr", 1), 0.05);
  cr_assert_eq(nn_optimizer_lr(o), 0.025);
  cr_assert(strncmp(buf, "epoch 1/5 - 4/4 - ", 18) == 0, "%s", buf);
  cr_assert(strstr(buf, " - loss ") && strstr(buf, " - accuracy "), "%s", buf);
  cr_assert(strstr(buf, "\nepoch 2/5 - 4/4 - "), "%s", buf);
  cr_assert_null(strchr(buf, '\r'), "no carriage returns off a terminal");
  int lines = 0;
  for (char *c = buf; *c; c++) lines += *c == '\n';
  cr_assert_eq(lines, 2);
  nn_history_free(h);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}

Test(fit, errors_and_nan) {
  ad_tensor *x, *y;
  test_blobs(ctx, 30, 5, &x, &y);
  nn_model *m = mlp(ctx, 1, 0);
  nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  nn_fit_opts fo = {.verbose = -1, .validation_split = 1.0};
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "validation split 1");
  fo.validation_split = 0;
  int64_t rows[3] = {0, 1, 2};
  ad_tensor *y3 = nn_take_rows(ctx, y, 3, rows);
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y3, &fo, NULL), AD_ERR_SHAPE);
  expect_status_msg(ctx, AD_ERR_SHAPE, "fit: x [30,4] and y [3] have different numbers of rows");
  cr_assert_eq(nn_fit(m, o, NULL, x, y, &fo, NULL), AD_ERR_NULL);
  expect_status_msg(ctx, AD_ERR_NULL, "fit: loss is NULL");
  /* bad labels stop training with the loss's message */
  ad_tensor_set(y, 17, 5);
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "cross_entropy_loss: label 5 of sample");
  cr_assert_eq(nn_history_epochs(h), 0);
  nn_history_free(h);
  ad_tensor_set(y, 17, 1);
  /* a NaN input makes a NaN loss */
  ad_tensor_set(x, 0, NAN);
  fo.no_shuffle = true;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_NAN);
  expect_status_msg(ctx, AD_ERR_NAN, "fit: the loss is nan at epoch 1, batch 1");
  /* in anomaly mode the op that first saw it is named */
  ad_set_anomaly_mode(ctx, true);
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_NAN);
  expect_status_msg(ctx, AD_ERR_NAN,
                    "fit: at epoch 1, batch 1: dense '0': matmul: input 0 ([30,4]) carries a "
                    "non-finite value (nan "
                    "at element 0)");
  ad_set_anomaly_mode(ctx, false);
  /* the model works again afterwards */
  ad_tensor_set(x, 0, 0.5);
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_null(nn_predict(m, NULL, 4));
  expect_status_msg(ctx, AD_ERR_NULL, "predict");
  /* a negative batch size is an error (it was taken for the default 32) */
  double el = 0;
  cr_assert_eq(nn_evaluate(m, nn_cross_entropy_loss, x, y, -8, &el, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "evaluate: batch size -8; it must be >= 1 (0: 32)");
  cr_assert_null(nn_predict(m, x, -1));
  expect_status_msg(ctx, AD_ERR_ARG, "predict: batch size -1; it must be >= 1 (0: 32)");
  cr_assert_eq(nn_evaluate(m, nn_cross_entropy_loss, x, y, 0, &el, NULL), AD_OK, "%s",
               ad_last_error(ctx));
  /* no rows: an error, not a NaN loss (Keras' evaluate and fit raise) */
  int64_t s0[2] = {0, x->shape[1]}, t0[1] = {0};
  ad_tensor *x0 = ad_zeros(ctx, x->dtype, 2, s0), *y0 = ad_zeros(ctx, y->dtype, 1, t0);
  el = 1;
  cr_assert_eq(nn_evaluate(m, nn_cross_entropy_loss, x0, y0, 0, &el, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "evaluate: x [0,4] has no rows");
  cr_assert_eq(el, 1, "the loss is left as it was");
  nn_fit_opts f0 = {.epochs = 1, .batch_size = 4, .verbose = -1, .val_x = x0, .val_y = y0};
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &f0, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "fit: val_x [0,4] has no rows to validate on");
  ad_tensor_free(x0), ad_tensor_free(y0);
  ad_tensor *p0 = nn_predict(m, x, 0);
  cr_assert_not_null(p0, "%s", ad_last_error(ctx));
  ad_tensor_free(p0);
  cr_assert_eq(nn_evaluate(m, nn_mse_loss, x, y, 8, NULL, NULL), AD_ERR_DTYPE);
  expect_status_msg(ctx, AD_ERR_DTYPE, "mse_loss: target [8] is i32");
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y), ad_tensor_free(y3);
}

/* Under the op profile nn_fit marks its step's phases as ranges, one
 * call each per batch (the batch's: one more per epoch, the fetch that
 * ends it), leaves none open, also when a NaN loss stops it, and does not
 * change what it trains. */
Test(fit, profile_ranges_mark_each_phase) {
  ad_tensor *x, *y;
  test_blobs(ctx, 40, 2, &x, &y);
  nn_model *a = mlp(ctx, 3, 0), *b = mlp(ctx, 3, 0);
  nn_optimizer *oa = nn_adam_new(nn_model_params(a), 0.01);
  nn_optimizer *ob = nn_adam_new(nn_model_params(b), 0.01);
  nn_fit_opts fo = {.epochs = 2, .batch_size = 16, .seed = 4, .verbose = -1, .grad_norms = true};
  cr_assert_eq(nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(ad_profile_start(ctx), AD_OK);
  cr_assert_eq(nn_fit(b, ob, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(params_equal(a, b), "the profile changed the training");
  static const char *const phases[] = {"nn_fit.zero_grad",  "nn_fit.forward",   "nn_fit.backward",
                                       "nn_fit.grad_norms", "nn_fit.optimizer", "nn_fit.batch"};
  ad_profile_range r[8];
  int64_t n = ad_profile_read_ranges(ctx, r, 8);
  cr_assert_eq(n, 6, "%lld ranges", (long long)n);
  for (int k = 0; k < 6; k++) {
    int64_t calls = -1;
    for (int64_t i = 0; i < n; i++)
      if (!strcmp(r[i].name, phases[k])) calls = r[i].calls;
    cr_assert_eq(calls, k < 5 ? 6 : 8, "%s: %lld calls", phases[k],
                 (long long)calls); /* 3 a epoch */
  }
  /* a NaN loss stops nn_fit inside its forward range: none left open */
  ad_tensor_set(x, 0, NAN);
  fo.no_shuffle = true;
  cr_assert_eq(nn_fit(b, ob, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_NAN);
  ad_clear_error(ctx);
  for (int k = 0; k < AD_PROFILE_RANGE_DEPTH; k++)
    cr_assert_eq(ad_profile_range_push(ctx, "user"), AD_OK, "range %d: %s", k, ad_last_error(ctx));
  for (int k = 0; k < AD_PROFILE_RANGE_DEPTH; k++) ad_profile_range_pop(ctx);
  cr_assert_eq(ad_profile_stop(ctx), AD_OK);
  nn_optimizer_free(oa), nn_optimizer_free(ob);
  nn_model_free(a), nn_model_free(b);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* Binary classification with logits: accuracy thresholds at 0. */
Test(fit, binary_logits_with_l2) {
  ad_rng rng;
  ad_rng_seed(&rng, 8);
  int64_t s[2] = {64, 2}, t[2] = {64, 1};
  ad_tensor *x = ad_randn(ctx, &rng, AD_F32, 2, s, 0, 1), *y = ad_zeros(ctx, AD_F32, 2, t);
  for (int i = 0; i < 64; i++) ad_tensor_set(y, i, ad_tensor_get(x, 2 * i) > 0 ? 1 : 0);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_dense_new(ctx, 2, 1, &rng, NULL));
  nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0.5, 0, false, 0);
  nn_fit_opts fo = {
      .epochs = 30, .batch_size = 16, .accuracy = true, .verbose = -1, .lambda_l2 = 1e-3};
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_bce_with_logits_loss, x, y, &fo, &h), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_gt(nn_history_get(h, "accuracy", 29), 0.95);
  double acc;
  nn_evaluate(m, nn_bce_with_logits_loss, x, y, 0, NULL, &acc);
  cr_assert_gt(acc, 0.95);
  nn_history_free(h);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* lambda_l2 NaN or infinite is refused before any step (NaN added no
 * penalty without a word; inf stepped every weight to inf while the loss
 * stayed finite, and nn_train_step returned AD_OK), and a penalty that
 * overflows (1e308 times the squares) stops the step before its backward,
 * the weights unchanged, as a non-finite loss does. */
Test(fit, l2_penalty_must_be_finite) {
  ad_tensor *x, *y;
  test_blobs(ctx, 16, 5, &x, &y);
  nn_model *m = mlp(ctx, 1, 0), *ref = mlp(ctx, 1, 0);
  nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  static const double bad[] = {NAN, INFINITY, -INFINITY};
  for (int i = 0; i < 3; i++) {
    double l = -1;
    cr_assert_eq(nn_train_step(m, o, nn_cross_entropy_loss, x, y, bad[i], &l), AD_ERR_ARG);
    expect_status_msg(ctx, AD_ERR_ARG, "train_step: lambda_l2 ");
    nn_fit_opts fo = {.batch_size = 4, .verbose = -1, .lambda_l2 = bad[i]};
    nn_history *h;
    cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_ERR_ARG);
    expect_status_msg(ctx, AD_ERR_ARG, "it must be finite (> 0 adds the L2 penalty)");
    cr_assert_null(h);
  }
  cr_assert(params_equal(m, ref));
  double l = -1;
  cr_assert_eq(nn_train_step(m, o, nn_cross_entropy_loss, x, y, 1e308, &l), AD_ERR_NAN);
  expect_status_msg(ctx, AD_ERR_NAN,
                    "train_step: the loss plus the L2 penalty (lambda_l2 1e+308) is inf");
  cr_assert(isfinite(l) && l > 0); /* the loss itself, without the penalty */
  nn_fit_opts fo = {.batch_size = 4, .verbose = -1, .lambda_l2 = 1e308};
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_NAN);
  expect_status_msg(ctx, AD_ERR_NAN, "fit: at epoch 1, batch 1: train_step: the loss plus the L2");
  cr_assert(params_equal(m, ref), "a step with an overflowing penalty moved the weights");
  fo.lambda_l2 = 1e-3; /* and a finite penalty trains */
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(!params_equal(m, ref));
  nn_optimizer_free(o);
  nn_model_free(m), nn_model_free(ref);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* on_epoch_end freeing the tensor ud points to */
static bool free_after_epoch(int epoch, const nn_history *h, void *ud) {
  (void)epoch, (void)h;
  ad_tensor_free(*(ad_tensor **)ud);
  *(ad_tensor **)ud = NULL;
  return true;
}

/* Data freed during nn_fit (by on_epoch_end; k = 0: the validation data,
 * 1: the training data) stops it with the batcher's AD_ERR_STATE: freed
 * validation data ended the pass at once as if it had no rows, so the
 * epoch's val_loss was NaN and nn_fit returned AD_OK. */
Test(fit, data_freed_by_on_epoch_end_stops_training) {
  for (int k = 0; k < 2; k++) {
    ad_tensor *x, *y, *vx, *vy;
    test_blobs(ctx, 24, 1, &x, &y);
    test_blobs(ctx, 8, 2, &vx, &vy);
    nn_model *m = mlp(ctx, 5, 0);
    nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
    ad_tensor *doomed = k ? x : vx;
    nn_fit_opts fo = {.epochs = 3,
                      .batch_size = 8,
                      .verbose = -1,
                      .val_x = vx,
                      .val_y = vy,
                      .on_epoch_end = free_after_epoch,
                      .ud = &doomed};
    nn_history *h;
    cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_ERR_STATE, "case %d", k);
    expect_status_msg(ctx, AD_ERR_STATE, "batcher_next: x was freed");
    cr_assert_eq(nn_history_epochs(h), 1);
    cr_assert(isfinite(nn_history_get(h, "val_loss", 0)));
    nn_history_free(h);
    nn_optimizer_free(o);
    nn_model_free(m);
    ad_tensor_free(k ? vx : x), ad_tensor_free(y), ad_tensor_free(vy);
  }
}

/* a lambda layer that frees the tensor ud points to on its first call */
static ad_tensor *free_on_first_call(ad_ctx *c, ad_tensor *x, bool training, void *ud) {
  (void)c, (void)training;
  ad_tensor_free(*(ad_tensor **)ud);
  *(ad_tensor **)ud = NULL;
  return x;
}

/* nn_predict whose data is freed under it (by a lambda layer) fails with
 * the batcher's AD_ERR_STATE: the refused batch ended the pass, and the
 * rows of the batches after it came back as zeros with a tensor, not NULL. */
Test(fit, predict_over_data_freed_under_it_fails) {
  ad_tensor *x, *y;
  test_blobs(ctx, 12, 1, &x, &y);
  ad_tensor *doomed = x;
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_lambda_new(ctx, NULL, free_on_first_call, &doomed));
  ad_tensor *p = nn_predict(m, x, 4);
  cr_assert_null(p, "a prediction with rows never computed");
  expect_status_msg(ctx, AD_ERR_STATE, "batcher_next: x was freed");
  ad_tensor_free(p);
  nn_model_free(m);
  ad_tensor_free(y);
}

/* An op's result as data: nn_fit, nn_evaluate, nn_predict and the batcher
 * reset the tape while still reading rows from it, so they refuse it before
 * any step (they used to train on, or predict from, reused memory). */
Test(fit, temporary_data_is_refused) {
  ad_tensor *x, *y;
  test_blobs(ctx, 64, 9, &x, &y);
  nn_model *m = mlp(ctx, 1, 0);
  nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  ad_tensor *w = nn_params_find(nn_model_params(m), "0.weight");
  double w0 = ad_tensor_get(w, 0);
  ad_tensor *xt = ad_mul_scalar(ctx, x, 1.0), *yt = ad_reshape(ctx, y, 1, (int64_t[]){64});
  cr_assert(xt && yt && ad_tensor_is_temporary(xt) && ad_tensor_is_temporary(yt));
  nn_fit_opts fo = {.epochs = 2, .batch_size = 16, .verbose = -1, .no_shuffle = true};
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, xt, y, &fo, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "fit: x [64,4] is a temporary made by an op");
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, yt, &fo, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "fit: y [64] is a temporary");
  fo.val_x = xt, fo.val_y = y;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "fit: val_x [64,4] is a temporary");
  fo.val_x = x, fo.val_y = yt;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "fit: val_y [64] is a temporary");
  cr_assert_eq(ad_tensor_get(w, 0), w0, "no step was taken");
  cr_assert_eq(nn_optimizer_steps(o), 0);
  double loss = 0;
  cr_assert_eq(nn_evaluate(m, nn_cross_entropy_loss, xt, y, 8, &loss, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "evaluate: x [64,4] is a temporary");
  cr_assert_eq(nn_evaluate(m, nn_cross_entropy_loss, x, yt, 8, &loss, NULL), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "evaluate: y [64] is a temporary");
  cr_assert_null(nn_predict(m, xt, 8));
  expect_status_msg(ctx, AD_ERR_ARG, "predict: x [64,4] is a temporary");
  cr_assert_null(nn_batcher_new(ctx, xt, NULL, 8, false, 0));
  expect_status_msg(ctx, AD_ERR_ARG, "batcher: x [64,4] is a temporary");
  cr_assert_null(nn_batcher_new_range(ctx, x, yt, 0, 32, 8, false, 0));
  expect_status_msg(ctx, AD_ERR_ARG, "batcher: y [64] is a temporary");
  /* a persistent copy is the way */
  ad_tensor *xc = ad_tensor_clone(ctx, xt);
  fo.val_x = fo.val_y = NULL;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, xc, y, &fo, NULL), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(nn_evaluate(m, nn_cross_entropy_loss, xc, y, 8, &loss, NULL), AD_OK);
  cr_assert(isfinite(loss));
  ad_tensor *p = nn_predict(m, xc, 8);
  cr_assert(p && p->shape[0] == 64 && p->shape[1] == 3);
  ad_tensor_free(p), ad_tensor_free(xc);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* ------------------------------------------------------------ checkpoints */

/* Training 2 epochs straight equals 1 epoch, a checkpoint of the model and
 * Adam's state, a fresh model and optimizer loading it, and 1 more epoch. */
Test(checkpoint, save_load_resumes_training_exactly) {
  ad_tensor *x, *y;
  test_blobs(ctx, 60, 6, &x, &y);
  char path[] = "/tmp/nn_fit_ckpt_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  close(fd);

  nn_model *a = mlp(ctx, 2, 0);
  nn_optimizer *oa = nn_adam_new(nn_model_params(a), 0.01);
  nn_fit_opts fo = {.epochs = 2, .batch_size = 8, .seed = 3, .verbose = -1};
  cr_assert_eq(nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK);

  nn_model *b = mlp(ctx, 2, 0);
  nn_optimizer *ob = nn_adam_new(nn_model_params(b), 0.01);
  fo.epochs = 1;
  cr_assert_eq(nn_fit(b, ob, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK);
  cr_assert_eq(nn_model_save(b, ob, path), AD_OK, "%s", ad_last_error(ctx));

  nn_model *c = mlp(ctx, 99, 0); /* different initial weights */
  nn_optimizer *oc = nn_adam_new(nn_model_params(c), 0.01);
  cr_assert(!params_equal(b, c));
  cr_assert_eq(nn_model_load(c, oc, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(params_equal(b, c));
  cr_assert_eq(nn_optimizer_steps(oc), 8);
  /* the second epoch uses the second permutation of seed 3: skip one */
  nn_batcher *skip = nn_batcher_new(ctx, x, y, 8, true, 3);
  while (nn_batcher_next(skip, NULL, NULL)) continue;
  ad_tensor *xb, *yb;
  while (nn_batcher_next(skip, &xb, &yb))
    cr_assert_eq(nn_train_step(c, oc, nn_cross_entropy_loss, xb, yb, 0, NULL), AD_OK);
  cr_assert(params_equal(a, c), "resumed training differs from the straight run");

  /* weights only, into a model without the optimizer */
  nn_model *d = mlp(ctx, 7, 0);
  cr_assert_eq(nn_model_load(d, NULL, path), AD_OK);
  cr_assert(params_equal(b, d));
  /* a missing file is an error */
  cr_assert_neq(nn_model_load(d, NULL, "/nonexistent/dir/x.safetensors"), AD_OK);
  ad_clear_error(ctx);
  unlink(path);
  nn_batcher_free(skip);
  nn_optimizer_free(oa), nn_optimizer_free(ob), nn_optimizer_free(oc);
  nn_model_free(a), nn_model_free(b), nn_model_free(c), nn_model_free(d);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* ------------------------------------------------------------------ MNIST */

/* One epoch on 2000 bundled digits (the test runs from the source root). */
Test(mnist, one_epoch_on_2000_digits) {
  ad_tensor *img = nn_idx_load(ctx, "data/mnist10k-images-idx3-ubyte.gz", AD_F32, 1.0 / 255);
  ad_tensor *lab = nn_idx_load(ctx, "data/mnist10k-labels-idx1-ubyte.gz", AD_I32, 1);
  cr_assert(img && lab, "%s", ad_last_error(ctx));
  int64_t rows[2500];
  for (int i = 0; i < 2500; i++) rows[i] = i;
  ad_tensor *x = nn_take_rows(ctx, img, 2500, rows), *y = nn_take_rows(ctx, lab, 2500, rows);
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_flatten_new(ctx));
  nn_model_add(m, nn_dense_new(ctx, 784, 64, &rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_dense_new(ctx, 64, 10, &rng, NULL));
  nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.001);
  nn_fit_opts fo = {
      .epochs = 1, .batch_size = 32, .validation_split = 0.2, .accuracy = true, .verbose = -1};
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_gt(nn_history_get(h, "val_accuracy", 0), 0.8, "val accuracy %g",
               nn_history_get(h, "val_accuracy", 0));
  nn_history_free(h);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(img), ad_tensor_free(lab), ad_tensor_free(x), ad_tensor_free(y);
}

/* on_epoch_end: records whether subnormals flush while nn_fit runs */
static bool note_flush(int epoch, const nn_history *h, void *ud) {
  (void)epoch, (void)h;
  *(int *)ud = ad_flush_denormal() ? 1 : 0;
  return true;
}

Test(fit, flushes_subnormals_while_it_runs_and_restores_the_mode) {
  if (!ad_set_flush_denormal(false)) cr_skip_test("this CPU has no flush-to-zero mode");
  ad_tensor *x, *y;
  test_blobs(ctx, 20, 4, &x, &y);
  nn_model *m = mlp(ctx, 1, 0);
  nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  int seen = -1;
  nn_fit_opts fo = {
      .epochs = 1, .batch_size = 10, .verbose = -1, .on_epoch_end = note_flush, .ud = &seen};
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK);
  cr_assert_eq(seen, 1, "flushing inside nn_fit");
  cr_assert_not(ad_flush_denormal(), "the caller's mode is back");
  fo.keep_denormals = true;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK);
  cr_assert_eq(seen, 0, "keep_denormals keeps them");
  cr_assert(ad_set_flush_denormal(true));
  fo.keep_denormals = false;
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK);
  cr_assert(ad_flush_denormal(), "a caller that flushed still does");
  ad_set_flush_denormal(false);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}

Test(fit, anomaly_reports_name_the_parameters) {
  ad_tensor *x, *y;
  test_blobs(ctx, 20, 4, &x, &y);
  nn_model *m = mlp(ctx, 1, 0);
  ad_tensor *w = nn_model_param(m, "2.weight");
  cr_assert_str_eq(ad_tensor_name(w), "2.weight");
  cr_assert_str_eq(ad_tensor_name(nn_model_param(m, "0.bias")), "0.bias");
  ad_tensor_set(w, 4, INFINITY);
  nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  nn_fit_opts fo = {.epochs = 1, .batch_size = 10, .verbose = -1, .no_shuffle = true};
  ad_set_anomaly_mode(ctx, true);
  cr_assert_eq(nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_NAN);
  expect_status_msg(
      ctx, AD_ERR_NAN,
      "fit: at epoch 1, batch 1: dense '2': matmul: input 1 ('2.weight' [3,16]) carries a "
      "non-finite value (inf at element 4)");
  ad_set_anomaly_mode(ctx, false);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}
