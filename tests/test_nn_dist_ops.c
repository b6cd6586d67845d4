/* test_nn_dist_ops.c: the interface through which nn_fit hands out its
 * sharding and gradient reduction (nn_dist_ops, nn.h), faked in-process:
 * which rows each rank trains, what the reduction is given, the epoch sums,
 * errors from the reduction, and a one-rank fake that changes nothing.
 * libnn_dist fills the interface with MPI (tests/test_mpi_dist.c). */
#include "ad_ext.h"
#include "nn.h"
#include "test_alloc.h"
#include "test_blobs.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_CTX_SUITE(dist_ops);

static nn_model *mlp(ad_ctx *c) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  nn_dense_opts o = {.dtype = AD_F64, .activation = NN_ACT_TANH};
  nn_model *m = nn_sequential_new(c);
  nn_model_add(m, nn_dense_new(c, 4, 6, &rng, &o));
  o.activation = NN_ACT_NONE;
  nn_model_add(m, nn_dense_new(c, 6, 3, &rng, &o));
  return m;
}

/* A fake rank: records what nn_fit hands out; grad_end leaves the
 * gradients as they are (its own shard's), or fails at step fail_at. */
typedef struct fake {
  nn_dist_ops ops;
  int syncs, steps, begins_with_loss, sums, fail_at;
  int64_t rows[16], global[16];
  double epoch_v[8][3];
} fake;

static ad_status f_sync(void *ud, nn_model *m, nn_optimizer *opt) {
  fake *f = ud;
  cr_assert(m && opt);
  f->syncs++;
  return AD_OK;
}
static ad_status f_begin(void *ud, nn_params *p, ad_tensor *loss, int64_t rows, int64_t global) {
  fake *f = ud;
  cr_assert(p);
  f->rows[f->steps] = rows, f->global[f->steps] = global;
  f->begins_with_loss += loss != NULL;
  return AD_OK;
}
static ad_status f_end(void *ud, nn_params *p, ad_status st) {
  fake *f = ud;
  if (++f->steps == f->fail_at) /* as if another rank had failed */
    return ad_set_error(ad_tensor_ctx(nn_params_tensor(p, 0)), AD_ERR_IO,
                        "dist: rank 0 stopped: disk full");
  return st;
}
static ad_status f_sum(void *ud, double *v, int n) {
  fake *f = ud;
  if (n != 3) { /* nn_fit's start-up check: as if every rank had the same data */
    for (int i = 0; i < n; i++) v[i] *= f->ops.size;
    return AD_OK;
  }
  memcpy(f->epoch_v[f->sums++], v, sizeof f->epoch_v[0]);
  v[0] *= 2, v[1] *= 2, v[2] *= 2; /* as if another rank had the same sums */
  return AD_OK;
}

static fake fake_rank(int rank, int size) {
  fake f = {.ops = {.rank = rank,
                    .size = size,
                    .sync = f_sync,
                    .grad_begin = f_begin,
                    .grad_end = f_end,
                    .sum = f_sum}};
  return f;
}

/* 10 rows in batches of 4, 4, 2 as rank 1 of 3: rows [n/3, 2n/3) of each
 * batch of n: [1,2), [1,2), [0,1) (of 2 rows, rank 0 gets [0,0), rank 2
 * [1,2)). */
Test(dist_ops, shards_and_epoch_sums) {
  ad_tensor *x, *y;
  test_blobs(ctx, 10, 3, &x, &y);
  nn_model *m = mlp(ctx);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  fake f = fake_rank(1, 3);
  f.ops.ud = &f;
  nn_fit_opts fo = {
      .epochs = 2, .batch_size = 4, .accuracy = true, .verbose = 1, .out = stderr, .dist = &f.ops};
  nn_history *h;
  cr_assert_eq(nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(f.syncs, 1);
  cr_assert_eq(f.steps, 6);
  cr_assert_eq(f.begins_with_loss, 6);
  int64_t want_rows[3] = {1, 1, 1}, want_global[3] = {4, 4, 2};
  for (int s = 0; s < 6; s++) {
    cr_assert_eq(f.rows[s], want_rows[s % 3], "step %d", s);
    cr_assert_eq(f.global[s], want_global[s % 3], "step %d", s);
  }
  cr_assert_eq(f.sums, 2);
  for (int e = 0; e < 2; e++) {
    cr_assert_eq(f.epoch_v[e][1], 3.0); /* this rank's rows */
    /* the history takes the reduced sums: loss sum / rows, correct / rows */
    cr_assert_eq(nn_history_get(h, "loss", e), f.epoch_v[e][0] / f.epoch_v[e][1]);
    cr_assert_eq(nn_history_get(h, "accuracy", e), f.epoch_v[e][2] / f.epoch_v[e][1]);
  }
  nn_history_free(h);
  /* rank 0 of 3 has no rows of a batch of 2: no forward, no loss, but the
   * reduction is still called */
  f = fake_rank(0, 3);
  f.ops.ud = &f;
  fo.epochs = 1;
  cr_assert_eq(nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(f.steps, 3);
  cr_assert_eq(f.begins_with_loss, 2);
  cr_assert_eq(f.rows[2], 0);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* One rank that reduces nothing trains exactly as without the interface. */
Test(dist_ops, one_rank_changes_nothing) {
  ad_tensor *x, *y;
  test_blobs(ctx, 30, 3, &x, &y);
  nn_model *a = mlp(ctx), *b = mlp(ctx);
  nn_optimizer *oa = nn_adam_new(nn_model_params(a), 0.01);
  nn_optimizer *ob = nn_adam_new(nn_model_params(b), 0.01);
  fake f = fake_rank(0, 1);
  f.ops.ud = &f;
  f.ops.sum = NULL;
  nn_fit_opts fo = {.epochs = 2, .batch_size = 8, .seed = 2, .verbose = -1, .dist = &f.ops};
  cr_assert_eq(nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(ctx), "fit: dist has rank 0 of size 1 and a NULL function"), "%s",
            ad_last_error(ctx));
  f.ops.sum = f_sum;
  f.ops.rank = 1;
  cr_assert_eq(nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(ctx), "fit: dist has rank 1 of size 1;"), "%s",
            ad_last_error(ctx));
  f.ops.rank = 0;
  cr_assert_eq(nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK);
  fo.dist = NULL;
  cr_assert_eq(nn_fit(b, ob, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK);
  nn_params *pa = nn_model_params(a), *pb = nn_model_params(b);
  for (int i = 0; i < nn_params_count(pa); i++) {
    ad_tensor *ta = nn_params_tensor(pa, i), *tb = nn_params_tensor(pb, i);
    cr_assert_eq(memcmp(ta->data, tb->data, (size_t)ta->size * 8), 0, "parameter %d", i);
  }
  nn_optimizer_free(oa), nn_optimizer_free(ob);
  nn_model_free(a), nn_model_free(b);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* An error from the reduction stops training with it; the history keeps
 * the epochs done. */
Test(dist_ops, reduction_error_stops_fit) {
  ad_tensor *x, *y;
  test_blobs(ctx, 10, 3, &x, &y);
  nn_model *m = mlp(ctx);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  fake f = fake_rank(1, 2);
  f.ops.ud = &f;
  f.fail_at = 5;
  nn_fit_opts fo = {.epochs = 3, .batch_size = 4, .verbose = -1, .dist = &f.ops};
  nn_history *h;
  cr_assert_eq(nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, &h), AD_ERR_IO);
  cr_assert_str_eq(ad_last_error(ctx), "dist: rank 0 stopped: disk full");
  cr_assert_eq(f.steps, 5);
  cr_assert_eq(nn_history_epochs(h), 1);
  cr_assert_eq(nn_optimizer_steps(opt), 4);
  nn_history_free(h);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* A loss plus L2 penalty that overflows (lambda_l2 1e308) fails the step
 * before its backward on this rank, and grad_end still gets the status
 * (so that the other ranks stop too); no weight moves. */
Test(dist_ops, overflowing_penalty_reaches_grad_end) {
  ad_tensor *x, *y;
  test_blobs(ctx, 10, 3, &x, &y);
  nn_model *m = mlp(ctx), *ref = mlp(ctx);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  fake f = fake_rank(1, 2);
  f.ops.ud = &f;
  nn_fit_opts fo = {.batch_size = 4, .verbose = -1, .lambda_l2 = 1e308, .dist = &f.ops};
  cr_assert_eq(nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL), AD_ERR_NAN);
  test_expect_error(ctx, AD_ERR_NAN, "fit: at epoch 1, batch 1: train_step: the loss plus the L2",
                    NULL);
  cr_assert_eq(f.steps, 1);
  cr_assert_eq(f.begins_with_loss, 0);
  cr_assert_eq(nn_optimizer_steps(opt), 0);
  nn_params *pa = nn_model_params(m), *pb = nn_model_params(ref);
  for (int i = 0; i < nn_params_count(pa); i++) {
    ad_tensor *ta = nn_params_tensor(pa, i), *tb = nn_params_tensor(pb, i);
    cr_assert_eq(memcmp(ta->data, tb->data, (size_t)ta->size * 8), 0, "parameter %d", i);
  }
  nn_optimizer_free(opt);
  nn_model_free(m), nn_model_free(ref);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* One run of the sweep below: nn_fit of a model of 16 parameter tensors
 * (the optimizer's notes of its writes fill the context's list, so that
 * the batcher's note of its next batch grows it) as rank 0 of 1, with
 * request k refused (k < 0: none); the parameters' bytes into sum. */
static bool deep_fit_run(long k, double *sum) {
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  cr_assert_not_null(c);
  ad_tensor *x, *y;
  test_blobs(c, 12, 3, &x, &y);
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  nn_dense_opts o = {.dtype = AD_F64};
  nn_model *m = nn_sequential_new(c);
  for (int i = 0; i < 8; i++) nn_model_add(m, nn_dense_new(c, i ? 3 : 4, 3, &rng, &o));
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  fake f = fake_rank(0, 1);
  f.ops.ud = &f;
  nn_fit_opts fo = {.epochs = 2, .batch_size = 4, .verbose = -1, .dist = &f.ops};
  ad_tape_reset(c);
  if (k >= 0) ta.refuse = TEST_ALLOC_REFUSE_ONLY, ta.fail_at = ta.requests + k;
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  test_alloc_grant_all(&ta);
  bool refused = ta.refused > 0;
  if (refused && st != AD_OK)
    cr_assert_eq(st, AD_ERR_OOM, "refuse %ld: %s", k, ad_last_error(c));
  else
    cr_assert_eq(st, AD_OK, "refuse %ld: %s", k, ad_last_error(c));
  *sum = 0;
  nn_params *p = nn_model_params(m);
  for (int i = 0; i < nn_params_count(p); i++)
    for (int64_t j = 0; j < nn_params_tensor(p, i)->size; j++)
      *sum = *sum * 1.5 + ad_tensor_get(nn_params_tensor(p, i), j);
  if (st != AD_OK) *sum = NAN;
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
  ad_ctx_free(c);
  return refused;
}

/* Out of memory anywhere in nn_fit with dist is an error, or changes
 * nothing: the batcher's note of a batch's write, refused, ended the epoch
 * as if it were done (AD_OK, other weights). */
Test(dist_ops, out_of_memory_mid_epoch_is_an_error) {
  double want, got;
  deep_fit_run(-1, &want);
  for (long k = 0; deep_fit_run(k, &got); k++)
    if (!isnan(got)) cr_assert_eq(got, want, "refuse %ld: AD_OK but other weights", k);
}
