/* test_nn_loader.c: nn_loader (PyTorch's DataLoader over a map-style
 * data set): batches in the epoch's order and with nn_batcher's contents
 * for 0, 1 and 3 workers; drop_last and a last partial batch; dtypes; a
 * failing get (its message, no hang, the next epoch after it); reset and
 * free mid-epoch; misuse. The threads also run under ThreadSanitizer in CI
 * (tests/loader_threads.c). */
#define _GNU_SOURCE /* pthread_setattr_default_np */
#include "nn.h"
#include "test_alloc.h"
#include "test_blobs.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

TEST_CTX_SUITE(loader);
TEST_CTX_SUITE_ALSO(misuse_loader);

/* Sample i: x = (i, 10 i), y = i; get fails for index fail_at (-1: never),
 * with a message unless silent; jitter sleeps a little, differently per
 * index, so that workers finish out of order. */
typedef struct rows_ds {
  int64_t fail_at;
  bool silent, jitter;
  ad_dtype xd, yd;
} rows_ds;

static int get_row(void *ud, int64_t i, void *x, void *y, char *msg) {
  const rows_ds *d = ud;
  if (d->jitter) {
    struct timespec ts = {0, (long)((i * 7919) % 5) * 200000};
    nanosleep(&ts, NULL);
  }
  if (i == d->fail_at) {
    if (!d->silent) snprintf(msg, NN_SAMPLE_MSG_MAX, "bad record %lld", (long long)i);
    return 7;
  }
  if (d->xd == AD_F32)
    ((float *)x)[0] = (float)i, ((float *)x)[1] = 10.0f * (float)i;
  else
    ((double *)x)[0] = (double)i, ((double *)x)[1] = 10.0 * (double)i;
  if (d->yd == AD_I32)
    *(int32_t *)y = (int32_t)i;
  else if (d->yd == AD_F32)
    *(float *)y = (float)i;
  else
    *(double *)y = (double)i;
  return 0;
}

static nn_dataset rows_dataset(rows_ds *d, int64_t n) {
  nn_dataset ds = {.len = n,
                   .x_dtype = d->xd,
                   .x_ndim = 1,
                   .x_shape = {2},
                   .y_dtype = d->yd,
                   .y_ndim = 0,
                   .get = get_row,
                   .ud = d};
  return ds;
}

/* The same rows in memory, for nn_batcher. */
static void rows_tensors(ad_ctx *c, int64_t n, ad_tensor **x, ad_tensor **y) {
  int64_t s[2] = {n, 2};
  *x = ad_zeros(c, AD_F32, 2, s);
  *y = ad_zeros(c, AD_I32, 1, s);
  for (int64_t i = 0; i < n; i++) {
    ad_tensor_set(*x, 2 * i, (double)i);
    ad_tensor_set(*x, 2 * i + 1, 10.0 * (double)i);
    ad_tensor_set(*y, i, (double)i);
  }
}

static void same_batch(const ad_tensor *a, const ad_tensor *b) {
  cr_assert_not_null(a);
  cr_assert_not_null(b);
  cr_assert_eq(a->dtype, b->dtype);
  cr_assert_eq(a->ndim, b->ndim);
  cr_assert_eq(memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0]), 0);
  cr_assert_eq(memcmp(a->data, b->data, (size_t)a->size * ad_dtype_size(a->dtype)), 0);
}

/* Three epochs of the loader against nn_batcher over the same rows. */
static void against_batcher(int workers, int prefetch, bool shuffle, bool jitter) {
  enum { N = 23 };
  rows_ds d = {.fail_at = -1, .jitter = jitter, .xd = AD_F32, .yd = AD_I32};
  nn_dataset ds = rows_dataset(&d, N);
  nn_loader_opts o = {.batch_size = 5,
                      .shuffle = shuffle,
                      .seed = 11,
                      .num_workers = workers,
                      .prefetch = prefetch};
  nn_loader *l = nn_loader_new(ctx, &ds, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_loader_batches(l), 5);
  cr_assert_eq(nn_loader_rows(l), N);
  ad_tensor *x, *y, *xb, *yb, *bx, *by;
  rows_tensors(ctx, N, &x, &y);
  nn_batcher *b = nn_batcher_new(ctx, x, y, 5, shuffle, 11);
  for (int e = 0; e < 3; e++) {
    int batches = 0, moved = 0;
    while (nn_batcher_next(b, &bx, &by)) {
      cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK, "%s", ad_last_error(ctx));
      same_batch(xb, bx);
      same_batch(yb, by);
      cr_assert_eq(xb->shape[0], batches < 4 ? 5 : 3); /* the last batch holds the rest */
      for (int64_t i = 0; i < yb->size; i++) moved += ad_tensor_get(yb, i) != batches * 5 + i;
      batches++;
    }
    cr_assert_eq(batches, 5);
    cr_assert(shuffle ? moved > 10 : moved == 0);
    cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK); /* the epoch's end */
    cr_assert(!xb && !yb);
  }
  nn_batcher_free(b);
  nn_loader_free(l);
}

Test(loader, batches_as_the_batcher_in_order) {
  against_batcher(0, 0, false, false);
  against_batcher(0, 0, true, false);
}

Test(loader, one_worker_gives_the_same_batches) {
  against_batcher(1, 0, true, true);
  against_batcher(1, 1, true, false);
}

Test(loader, three_workers_give_the_same_batches_in_order) {
  against_batcher(3, 0, true, true);
  against_batcher(3, 1, true, true);
  against_batcher(3, 9, false, true);
}

Test(loader, drop_last_and_short_data) {
  rows_ds d = {.fail_at = -1, .xd = AD_F32, .yd = AD_I32};
  nn_dataset ds = rows_dataset(&d, 23);
  ad_tensor *xb, *yb;
  for (int w = 0; w < 2; w++) {
    nn_loader *l = nn_loader_new(
        ctx, &ds, &(nn_loader_opts){.batch_size = 5, .drop_last = true, .num_workers = 2 * w});
    cr_assert_not_null(l);
    cr_assert_eq(nn_loader_batches(l), 4);
    cr_assert_eq(nn_loader_rows(l), 20);
    for (int e = 0; e < 2; e++) {
      int n = 0;
      while (nn_loader_next(l, &xb, &yb) == AD_OK && xb) {
        cr_assert_eq(xb->shape[0], 5);
        cr_assert_eq(ad_tensor_get(yb, 4), 5 * n + 4);
        n++;
      }
      cr_assert_eq(n, 4);
    }
    nn_loader_free(l);
  }
  /* a batch larger than the data: one short batch, or none with drop_last */
  nn_loader *l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 40});
  cr_assert_eq(nn_loader_batches(l), 1);
  cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
  cr_assert_eq(xb->shape[0], 23);
  cr_assert_eq(ad_tensor_get(yb, 22), 22);
  nn_loader_free(l);
  l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 40, .drop_last = true});
  cr_assert_eq(nn_loader_batches(l), 0);
  cr_assert_eq(nn_loader_rows(l), 0);
  cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
  cr_assert_null(xb);
  nn_loader_free(l);
  /* the default batch size is DataLoader's, 1; an empty data set ends at once */
  l = nn_loader_new(ctx, &ds, NULL);
  cr_assert_eq(nn_loader_batches(l), 23);
  nn_loader_free(l);
  ds.len = 0;
  l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 4, .num_workers = 1});
  cr_assert_not_null(l);
  cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
  cr_assert_null(xb);
  nn_loader_free(l);
}

Test(loader, dtypes_and_shapes) {
  static const ad_dtype xds[] = {AD_F32, AD_F64, AD_F64}, yds[] = {AD_I32, AD_F32, AD_F64};
  for (int k = 0; k < 3; k++) {
    rows_ds d = {.fail_at = -1, .xd = xds[k], .yd = yds[k]};
    nn_dataset ds = rows_dataset(&d, 7);
    nn_loader *l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 4, .num_workers = k});
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    ad_tensor *xb, *yb;
    for (int b = 0; b < 2; b++) {
      cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
      int64_t n = b ? 3 : 4;
      cr_assert(xb->ndim == 2 && xb->shape[0] == n && xb->shape[1] == 2 && xb->dtype == xds[k]);
      cr_assert(yb->ndim == 1 && yb->shape[0] == n && yb->dtype == yds[k]);
      cr_assert(!ad_tensor_is_temporary(xb) && !ad_tensor_is_temporary(yb));
      for (int64_t i = 0; i < n; i++) {
        cr_assert_eq(ad_tensor_get(xb, 2 * i + 1), 10.0 * (double)(4 * b + i));
        cr_assert_eq(ad_tensor_get(yb, i), (double)(4 * b + i));
      }
    }
    nn_loader_free(l);
  }
}

/* A failing get ends the epoch with its message, for every worker count;
 * the next call starts a new epoch (which fails again at the same sample). */
Test(loader, failing_get_stops_the_epoch) {
  for (int w = 0; w < 3; w++) {
    rows_ds d = {.fail_at = 13, .jitter = w > 0, .xd = AD_F32, .yd = AD_I32};
    nn_dataset ds = rows_dataset(&d, 23);
    nn_loader *l = nn_loader_new(
        ctx, &ds,
        &(nn_loader_opts){.batch_size = 5, .num_workers = w * 2, .prefetch = w == 2 ? 5 : 0});
    cr_assert_not_null(l);
    ad_tensor *xb, *yb;
    for (int e = 0; e < 2; e++) {
      for (int b = 0; b < 2; b++) cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
      cr_assert_eq(ad_tensor_get(yb, 0), 5);
      ad_clear_error(ctx);
      cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_ERR_IO);
      cr_assert(!xb && !yb);
      test_expect_error(ctx, AD_ERR_IO, "loader: sample 13: bad record 13", NULL);
    }
    d.fail_at = -1; /* the data set mended: the next epoch runs through */
    int n = 0;
    while (nn_loader_next(l, &xb, &yb) == AD_OK && xb) n++;
    cr_assert_eq(n, 5);
    nn_loader_free(l);
  }
  rows_ds d = {.fail_at = 0, .silent = true, .xd = AD_F32, .yd = AD_I32};
  nn_dataset ds = rows_dataset(&d, 3);
  nn_loader *l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 2, .num_workers = 1});
  ad_tensor *xb, *yb;
  cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_ERR_IO);
  test_expect_error(ctx, AD_ERR_IO, "loader: sample 0: get returned 7", NULL);
  nn_loader_free(l);
}

/* reset drops the rest of the epoch: the next is the batcher's next epoch;
 * free with batches in flight joins the threads (no hang, no leak: the
 * context's teardown checks its blocks). */
Test(loader, reset_and_free_mid_epoch) {
  rows_ds d = {.fail_at = -1, .jitter = true, .xd = AD_F32, .yd = AD_I32};
  nn_dataset ds = rows_dataset(&d, 23);
  ad_tensor *x, *y, *xb, *yb, *bx, *by;
  rows_tensors(ctx, 23, &x, &y);
  nn_batcher *b = nn_batcher_new(ctx, x, y, 5, true, 3);
  nn_loader *l = nn_loader_new(
      ctx, &ds,
      &(nn_loader_opts){
          .batch_size = 5, .shuffle = true, .seed = 3, .num_workers = 3, .prefetch = 4});
  cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
  nn_loader_reset(l);
  nn_loader_reset(l); /* twice is the same */
  while (nn_batcher_next(b, &bx, &by)) continue;
  cr_assert(nn_batcher_next(b, &bx, &by));
  cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
  same_batch(yb, by);
  nn_batcher_free(b);
  nn_loader_free(l);
  for (int w = 0; w < 4; w++) {
    l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 2, .num_workers = w});
    cr_assert_not_null(l);
    if (w & 1) cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
    nn_loader_free(l); /* 0, 2: before the first batch; 1, 3: mid-epoch */
  }
  nn_loader_reset(NULL);
  nn_loader_free(NULL);
  cr_assert_eq(nn_loader_batches(NULL), 0);
  cr_assert_eq(nn_loader_rows(NULL), 0);
}

/* A slow get (5 ms a sample, 100 samples a batch): reset and free with a
 * batch loading stop it after the get in flight instead of loading the
 * rest of it (which would take half a second each). */
static atomic_int slow_calls;
static int get_slow(void *ud, int64_t i, void *x, void *y, char *msg) {
  (void)ud, (void)msg;
  nanosleep(&(struct timespec){0, 5000000}, NULL);
  atomic_fetch_add(&slow_calls, 1);
  *(float *)x = (float)i;
  *(float *)y = (float)i;
  return 0;
}

Test(loader, reset_and_free_stop_a_batch_loading) {
  nn_dataset ds = {.len = 1000, .x_dtype = AD_F32, .y_dtype = AD_F32, .get = get_slow};
  for (int free_it = 0; free_it < 2; free_it++) {
    atomic_store(&slow_calls, 0);
    nn_loader *l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 100, .num_workers = 1});
    ad_tensor *xb, *yb;
    cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK); /* batch 1 is loading now */
    if (free_it)
      nn_loader_free(l);
    else
      nn_loader_reset(l);
    int calls = atomic_load(&slow_calls);
    cr_assert_lt(calls, 150, "%s waited for %d gets of batch 1", free_it ? "free" : "reset",
                 calls - 100);
    if (!free_it) {
      cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK); /* a new epoch, from batch 0 */
      cr_assert_eq(ad_tensor_get(yb, 0), 0.0);
      cr_assert_eq(ad_tensor_get(yb, 99), 99.0);
      nn_loader_free(l);
    }
  }
}

/* fork() copies only the calling thread (loader.c's top comment): a
 * loader with workers, used in a child forked mid-epoch while its workers
 * were loading, gives the rest of the epoch's batches (nn_batcher's, as
 * before the fork) and the next epoch's from workers of the child's own;
 * reset and free there do not wait for the parent's workers; the parent's
 * loader goes on. The child's exit status names the check that failed (an
 * alarm ends a child that hangs). */
static bool same_labels(const ad_tensor *yb, const ad_tensor *by) {
  if (!yb || !by || yb->size != by->size) return false;
  for (int64_t i = 0; i < yb->size; i++)
    if (ad_tensor_get(yb, i) != ad_tensor_get(by, i)) return false;
  return true;
}

static int forked_loader_checks(nn_loader *l, nn_loader *idle, nn_batcher *b,
                                const nn_dataset *ds) {
  alarm(30);
  ad_tensor *xb, *yb, *bx, *by;
  for (int epoch = 0; epoch < 2; epoch++) {
    while (nn_batcher_next(b, &bx, &by)) {
      if (nn_loader_next(l, &xb, &yb) != AD_OK) return 10;
      if (!same_labels(yb, by)) return 11;
    }
    if (nn_loader_next(l, &xb, &yb) != AD_OK || xb || yb) return 12; /* the epoch's end */
  }
  if (nn_loader_next(l, &xb, &yb) != AD_OK || !xb) return 13;
  nn_loader_reset(l);
  nn_loader_free(l);
  nn_loader_free(idle); /* its workers are the parent's: nothing to join */
  nn_loader *fresh = nn_loader_new(ctx, ds, &(nn_loader_opts){.batch_size = 4, .num_workers = 2});
  int batches = 0;
  for (; fresh && nn_loader_next(fresh, &xb, &yb) == AD_OK && xb; batches++)
    if (ad_tensor_get(yb, 0) != 4.0 * batches) return 14;
  nn_loader_free(fresh);
  return batches == 6 ? 0 : 15;
}

Test(loader, forked_child_loads_with_workers_of_its_own) {
  rows_ds d = {.fail_at = -1, .jitter = true, .xd = AD_F32, .yd = AD_I32};
  nn_dataset ds = rows_dataset(&d, 23);
  ad_tensor *x, *y, *xb, *yb, *bx, *by;
  rows_tensors(ctx, 23, &x, &y);
  nn_batcher *b = nn_batcher_new(ctx, x, y, 5, true, 3);
  nn_loader_opts o = {.batch_size = 5, .shuffle = true, .seed = 3, .num_workers = 3, .prefetch = 4};
  nn_loader *l = nn_loader_new(ctx, &ds, &o);
  nn_loader *idle = nn_loader_new(ctx, &ds, &o);
  cr_assert(l && idle);
  cr_assert(nn_batcher_next(b, &bx, &by));
  cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK); /* the workers load batches 1-4 now */
  same_batch(yb, by);
  cr_assert_eq(nn_loader_next(idle, &xb, &yb), AD_OK);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(forked_loader_checks(l, idle, b, &ds));
  cr_assert_gt(pid, 0);
  int status = 0;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status), "the child ended by signal %d (14: it hung)",
            WIFSIGNALED(status) ? WTERMSIG(status) : -1);
  cr_assert_eq(WEXITSTATUS(status), 0, "the child's check %d failed", WEXITSTATUS(status));
  cr_assert(nn_batcher_next(b, &bx, &by));
  cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
  same_batch(yb, by);
  nn_loader_free(idle);
  nn_loader_free(l);
  nn_batcher_free(b);
}

/* A batch handed out is overwritten by the next: a backward through an op
 * that read it refuses, as with nn_batcher. */
Test(loader, next_batch_is_a_write) {
  rows_ds d = {.fail_at = -1, .xd = AD_F64, .yd = AD_F64};
  nn_dataset ds = rows_dataset(&d, 4);
  nn_loader *l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 2});
  ad_tensor *xb, *yb;
  cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
  ad_tensor *w = ad_full(ctx, AD_F64, 0, NULL, 2.0);
  ad_tensor_set_requires_grad(w, true);
  ad_tensor *s = ad_sum(ctx, ad_mul(ctx, xb, w));
  cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
  cr_assert_eq(ad_backward(ctx, s, NULL), AD_ERR_STATE);
  nn_loader_free(l);
}

/* ----------------------------------------------------------------- misuse */

Test(misuse_loader, bad_arguments_are_refused) {
  rows_ds d = {.fail_at = -1, .xd = AD_F32, .yd = AD_I32};
  nn_dataset ds = rows_dataset(&d, 10);
  cr_assert_null(nn_loader_new(NULL, &ds, NULL));
  cr_assert_null(nn_loader_new(ctx, NULL, NULL));
  test_expect_error(ctx, AD_ERR_NULL, "loader_new: dataset is NULL", NULL);
  nn_dataset bad = ds;
  bad.get = NULL;
  cr_assert_null(nn_loader_new(ctx, &bad, NULL));
  test_expect_error(ctx, AD_ERR_NULL, "loader_new: get is NULL", NULL);
  static const nn_loader_opts opts[] = {
      {.batch_size = -1}, {.num_workers = -1}, {.num_workers = 257}, {.prefetch = -2}};
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
    ad_clear_error(ctx);
    cr_assert_null(nn_loader_new(ctx, &ds, &opts[i]));
    test_expect_error(ctx, AD_ERR_ARG, "loader_new: len 10, batch size", NULL);
  }
  ad_clear_error(ctx);
  cr_assert_null(nn_loader_new(ctx, &ds, &(nn_loader_opts){.prefetch = 2}));
  test_expect_error(ctx, AD_ERR_ARG, "loader_new: prefetch 2 needs num_workers > 0", NULL);
  bad = ds, bad.len = -1;
  cr_assert_null(nn_loader_new(ctx, &bad, NULL));
  test_expect_error(ctx, AD_ERR_ARG, "loader_new: len -1", NULL);
  nn_dataset shapes[5];
  for (int i = 0; i < 5; i++) shapes[i] = ds;
  shapes[0].x_dtype = AD_I32;      /* features are floats */
  shapes[1].y_dtype = (ad_dtype)7; /* no such dtype */
  shapes[2].x_ndim = AD_MAX_DIMS;  /* no room for the batch axis */
  shapes[3].x_shape[0] = -2;       /* a negative dimension */
  shapes[4].x_ndim = 3;            /* 2^62 * 2^62 * 1 elements */
  shapes[4].x_shape[0] = shapes[4].x_shape[1] = (int64_t)1 << 62, shapes[4].x_shape[2] = 1;
  for (int i = 0; i < 5; i++) {
    ad_clear_error(ctx);
    cr_assert_null(nn_loader_new(ctx, &shapes[i], NULL), "case %d", i);
    test_expect_error(ctx, AD_ERR_ARG, "loader_new: a sample's x", "is not one the loader takes",
                      NULL);
  }
  /* samples of 2^40 bytes in batches of 2^30: refused before allocating */
  bad = ds, bad.x_shape[0] = (int64_t)1 << 38, bad.len = (int64_t)1 << 31;
  cr_assert_null(nn_loader_new(ctx, &bad, &(nn_loader_opts){.batch_size = (int64_t)1 << 30}));
  test_expect_error(ctx, AD_ERR_ARG, "overflow the address space", NULL);
  /* but a batch size over len needs room for len samples only, and a
   * loader without batches for none (DataLoader takes both) */
  bad.len = 10, bad.x_shape[0] = 256;
  for (int k = 0; k < 3; k++) {
    nn_loader_opts big = {.batch_size = (int64_t)1 << 50, .drop_last = k == 0, .num_workers = k};
    bad.len = k == 2 ? 0 : 10;
    nn_loader *l = nn_loader_new(ctx, &bad, &big);
    cr_assert_not_null(l, "case %d: %s", k, ad_last_error(ctx));
    cr_assert_eq(nn_loader_batches(l), k == 1);
    cr_assert_eq(nn_loader_rows(l), k == 1 ? 10 : 0);
    ad_tensor *xb, *yb;
    cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
    cr_assert_eq(xb ? xb->shape[0] : 0, k == 1 ? 10 : 0);
    nn_loader_free(l);
  }
  /* 2^61 + 1 samples: their indices' 2^64 + 8 bytes wrapped to 8, which the
   * first epoch's order overran */
  bad = ds, bad.len = ((int64_t)1 << 61) + 1;
  cr_assert_null(nn_loader_new(ctx, &bad, NULL));
  test_expect_error(ctx, AD_ERR_ARG, "indices of 2305843009213693953 samples overflow", NULL);
  nn_loader *l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 3});
  cr_assert_not_null(l);
  ad_tensor *xb = (ad_tensor *)1, *yb = (ad_tensor *)1;
  cr_assert_eq(nn_loader_next(l, NULL, &yb), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "loader_next: xb is NULL", NULL);
  cr_assert_null(yb);
  cr_assert_eq(nn_loader_next(l, &xb, NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "loader_next: yb is NULL", NULL);
  cr_assert_null(xb);
  cr_assert_eq(nn_loader_next(NULL, &xb, &yb), AD_ERR_NULL);
  nn_loader_free(l);
}

/* test_alloc_fn filling each new block with 0xa5, as uninitialised memory
 * may hold anything */
static void *poison_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  void *p = test_alloc_fn(ud, ptr, osize, nsize);
  if (p && !ptr) memset(p, 0xa5, nsize);
  return p;
}

/* Threads that cannot be started (every thread's stack refused: no
 * address space holds 2^60 bytes): AD_ERR_STATE, and free joins only the
 * threads that did start. The thread that failed was counted as started,
 * so free joined a pthread_t never written (here 0xa5a5...: a crash). */
Test(misuse_loader, workers_that_cannot_start_are_refused) {
  rows_ds d = {.fail_at = -1, .xd = AD_F32, .yd = AD_I32};
  nn_dataset ds = rows_dataset(&d, 10);
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(poison_alloc, &ta);
  cr_assert_not_null(c);
  pthread_attr_t old, huge;
  cr_assert_eq(pthread_getattr_default_np(&old), 0);
  cr_assert_eq(pthread_attr_init(&huge), 0);
  cr_assert_eq(pthread_attr_setstacksize(&huge, (size_t)1 << 60), 0);
  cr_assert_eq(pthread_setattr_default_np(&huge), 0);
  nn_loader *l = nn_loader_new(c, &ds, &(nn_loader_opts){.batch_size = 2, .num_workers = 3});
  cr_assert_eq(pthread_setattr_default_np(&old), 0);
  pthread_attr_destroy(&huge);
  pthread_attr_destroy(&old);
  cr_assert_null(l);
  test_expect_error(c, AD_ERR_STATE, "loader_new: cannot start 3 worker threads", NULL);
  /* the threads start again once they can */
  l = nn_loader_new(c, &ds, &(nn_loader_opts){.batch_size = 2, .num_workers = 3});
  cr_assert_not_null(l, "%s", ad_last_error(c));
  ad_tensor *xb, *yb;
  cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK, "%s", ad_last_error(c));
  cr_assert_eq(ad_tensor_get(yb, 1), 1);
  nn_loader_free(l);
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0);
}

/* ---------------------------------------------------------- fit_loader */

TEST_CTX_SUITE_ALSO(fit_loader);

/* Rows of x ([n, 4] f64) and y ([n] i32) copied out of tensors, served by
 * get; calls counts the samples loaded. */
typedef struct mem_ds {
  int64_t n;
  double *x;
  int32_t *y;
  int64_t fail_at;
  _Atomic long calls;
} mem_ds;

static int get_mem(void *ud, int64_t i, void *x, void *y, char *msg) {
  mem_ds *d = ud;
  d->calls++;
  if (i == d->fail_at) {
    snprintf(msg, NN_SAMPLE_MSG_MAX, "unreadable");
    return 1;
  }
  memcpy(x, d->x + 4 * i, 4 * sizeof(double));
  *(int32_t *)y = d->y[i];
  return 0;
}

static mem_ds mem_of(const ad_tensor *x, const ad_tensor *y) {
  mem_ds d = {.n = x->shape[0], .x = x->data, .y = y->data, .fail_at = -1};
  return d;
}

static nn_dataset mem_dataset(mem_ds *d) {
  nn_dataset ds = {.len = d->n,
                   .x_dtype = AD_F64,
                   .x_ndim = 1,
                   .x_shape = {4},
                   .y_dtype = AD_I32,
                   .y_ndim = 0,
                   .get = get_mem,
                   .ud = d};
  return ds;
}

static nn_model *mlp(ad_ctx *c) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  nn_dense_opts o = {.dtype = AD_F64, .activation = NN_ACT_TANH};
  nn_model *m = nn_sequential_new(c);
  nn_model_add(m, nn_dense_new(c, 4, 6, &rng, &o));
  nn_model_add(m, nn_dropout_new(c, 0.2, 9));
  o.activation = NN_ACT_NONE;
  nn_model_add(m, nn_dense_new(c, 6, 3, &rng, &o));
  return m;
}

static void same_params(nn_model *a, nn_model *b) {
  nn_params *pa = nn_model_params(a), *pb = nn_model_params(b);
  cr_assert_eq(nn_params_count(pa), nn_params_count(pb));
  for (int i = 0; i < nn_params_count(pa); i++) {
    ad_tensor *ta = nn_params_tensor(pa, i), *tb = nn_params_tensor(pb, i);
    cr_assert_eq(memcmp(ta->data, tb->data, (size_t)ta->size * 8), 0, "parameter %d", i);
  }
}

static void same_history(const nn_history *a, const nn_history *b) {
  cr_assert_eq(nn_history_epochs(a), nn_history_epochs(b));
  static const char *keys[] = {"loss", "accuracy", "val_loss", "val_accuracy", "lr"};
  for (int k = 0; k < 5; k++)
    for (int e = 0; e < nn_history_epochs(a); e++) {
      double va = nn_history_get(a, keys[k], e), vb = nn_history_get(b, keys[k], e);
      cr_assert(memcmp(&va, &vb, sizeof va) == 0, "%s at %d: %.17g, %.17g", keys[k], e, va, vb);
    }
}

/* The key property: nn_fit_loader over a data set serving x, y trains
 * exactly as nn_fit on x, y (the same batches, so the same steps), with 0,
 * 1 or 3 workers, shuffled or not, with validation and a schedule. */
Test(fit_loader, bit_identical_to_fit_in_memory) {
  ad_tensor *x, *y, *vx, *vy;
  test_blobs(ctx, 37, 3, &x, &y);
  test_blobs(ctx, 11, 4, &vx, &vy);
  for (int k = 0; k < 4; k++) {
    bool shuffle = k != 2, drop = k == 3; /* drop_last: 4 batches of 8, 5 rows left out */
    nn_model *a = mlp(ctx), *b = mlp(ctx);
    nn_optimizer *oa = nn_adam_new(nn_model_params(a), 0.01);
    nn_optimizer *ob = nn_adam_new(nn_model_params(b), 0.01);
    nn_schedule sched = {.kind = NN_SCHED_STEP, .step_size = 1, .gamma = 0.5};
    cr_assert_eq(nn_optimizer_set_schedule(oa, &sched), AD_OK);
    cr_assert_eq(nn_optimizer_set_schedule(ob, &sched), AD_OK);
    nn_fit_opts fo = {.epochs = 3,
                      .batch_size = 8,
                      .seed = 5,
                      .no_shuffle = !shuffle,
                      .accuracy = true,
                      .val_x = vx,
                      .val_y = vy,
                      .verbose = -1,
                      .drop_last = drop};
    nn_history *ha, *hb;
    cr_assert_eq(nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, &ha), AD_OK, "%s",
                 ad_last_error(ctx));
    mem_ds d = mem_of(x, y);
    nn_dataset ds = mem_dataset(&d);
    nn_loader *l = nn_loader_new(ctx, &ds,
                                 &(nn_loader_opts){.batch_size = 8,
                                                   .shuffle = shuffle,
                                                   .seed = 5,
                                                   .drop_last = drop,
                                                   .num_workers = k == 0 ? 0 : 2 * k - 1});
    cr_assert_not_null(l);
    fo.batch_size = 0, fo.seed = 0, fo.no_shuffle = false, fo.drop_last = false;
    cr_assert_eq(nn_fit_loader(b, ob, nn_cross_entropy_loss, l, &fo, &hb), AD_OK, "%s",
                 ad_last_error(ctx));
    same_params(a, b);
    same_history(ha, hb);
    cr_assert_eq(d.calls, 3 * (drop ? 32 : 37));
    nn_history_free(ha), nn_history_free(hb);
    nn_loader_free(l);
    nn_optimizer_free(oa), nn_optimizer_free(ob);
    nn_model_free(a), nn_model_free(b);
  }
}

/* An epoch of the loader the caller began (a batch looked at) is not
 * training's first: nn_fit_loader trains on whole epochs, as nn_fit. */
Test(fit_loader, an_epoch_begun_before_is_dropped) {
  ad_tensor *x, *y;
  test_blobs(ctx, 10, 3, &x, &y);
  nn_model *a = mlp(ctx), *b = mlp(ctx);
  nn_optimizer *oa = nn_sgd_new(nn_model_params(a), 0.1, 0, false, 0);
  nn_optimizer *ob = nn_sgd_new(nn_model_params(b), 0.1, 0, false, 0);
  nn_fit_opts fo = {.epochs = 2, .batch_size = 4, .no_shuffle = true, .verbose = -1};
  nn_history *ha, *hb;
  cr_assert_eq(nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, &ha), AD_OK);
  mem_ds d = mem_of(x, y);
  nn_dataset ds = mem_dataset(&d);
  nn_loader *l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 4});
  ad_tensor *xb, *yb;
  cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
  fo.batch_size = 0, fo.no_shuffle = false;
  cr_assert_eq(nn_fit_loader(b, ob, nn_cross_entropy_loss, l, &fo, &hb), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(d.calls, 4 + 2 * 10);
  same_params(a, b);
  same_history(ha, hb);
  nn_history_free(ha), nn_history_free(hb);
  nn_loader_free(l);
  nn_optimizer_free(oa), nn_optimizer_free(ob);
  nn_model_free(a), nn_model_free(b);
}

/* A batch size over the rows gives one batch of them all, but validation
 * runs in batches of the size asked for, as nn_fit's: the same bits. */
Test(fit_loader, validation_in_batches_of_the_size_asked_for) {
  ad_tensor *x, *y, *vx, *vy;
  test_blobs(ctx, 10, 3, &x, &y);
  test_blobs(ctx, 200, 4, &vx, &vy);
  nn_model *a = mlp(ctx), *b = mlp(ctx);
  nn_optimizer *oa = nn_sgd_new(nn_model_params(a), 0.1, 0, false, 0);
  nn_optimizer *ob = nn_sgd_new(nn_model_params(b), 0.1, 0, false, 0);
  nn_fit_opts fo = {
      .epochs = 3, .batch_size = 64, .no_shuffle = true, .verbose = -1, .val_x = vx, .val_y = vy};
  nn_history *ha, *hb;
  cr_assert_eq(nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, &ha), AD_OK);
  mem_ds d = mem_of(x, y);
  nn_dataset ds = mem_dataset(&d);
  nn_loader *l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 64});
  cr_assert_eq(nn_loader_batches(l), 1);
  fo.batch_size = 0, fo.no_shuffle = false;
  cr_assert_eq(nn_fit_loader(b, ob, nn_cross_entropy_loss, l, &fo, &hb), AD_OK, "%s",
               ad_last_error(ctx));
  same_params(a, b);
  same_history(ha, hb);
  nn_history_free(ha), nn_history_free(hb);
  nn_loader_free(l);
  nn_optimizer_free(oa), nn_optimizer_free(ob);
  nn_model_free(a), nn_model_free(b);
}

/* A fake rank (as tests/test_nn_dist_ops.c's): records the rows of each
 * step, reduces nothing. */
typedef struct fake {
  nn_dist_ops ops;
  int steps;
  int64_t rows[32], global[32];
} fake;

static ad_status f_sync(void *ud, nn_model *m, nn_optimizer *opt) {
  (void)ud, (void)m, (void)opt;
  return AD_OK;
}
static ad_status f_begin(void *ud, nn_params *p, ad_tensor *loss, int64_t rows, int64_t global) {
  fake *f = ud;
  (void)p, (void)loss;
  f->rows[f->steps] = rows, f->global[f->steps] = global;
  return AD_OK;
}
static ad_status f_end(void *ud, nn_params *p, ad_status st) {
  fake *f = ud;
  (void)p;
  f->steps++;
  return st;
}
static ad_status f_sum(void *ud, double *v, int n) {
  fake *f = ud;
  for (int i = 0; i < n; i++) v[i] *= f->ops.size; /* every rank alike */
  return AD_OK;
}

/* With dist, rank r loads only its shard of each global batch, and trains
 * as nn_fit's rank r on the whole data. */
Test(fit_loader, dist_loads_only_the_ranks_shard) {
  ad_tensor *x, *y;
  test_blobs(ctx, 10, 3, &x, &y);
  for (int rank = 0; rank < 3; rank++) {
    nn_model *a = mlp(ctx), *b = mlp(ctx);
    nn_optimizer *oa = nn_sgd_new(nn_model_params(a), 0.1, 0, false, 0);
    nn_optimizer *ob = nn_sgd_new(nn_model_params(b), 0.1, 0, false, 0);
    fake fa = {.ops = {.rank = rank,
                       .size = 3,
                       .sync = f_sync,
                       .grad_begin = f_begin,
                       .grad_end = f_end,
                       .sum = f_sum}};
    fake fb = fa;
    fa.ops.ud = &fa, fb.ops.ud = &fb;
    nn_fit_opts fo = {
        .epochs = 2, .batch_size = 4, .seed = 8, .accuracy = true, .verbose = -1, .dist = &fa.ops};
    cr_assert_eq(nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK, "%s",
                 ad_last_error(ctx));
    mem_ds d = mem_of(x, y);
    nn_dataset ds = mem_dataset(&d);
    nn_loader *l = nn_loader_new(
        ctx, &ds,
        &(nn_loader_opts){.batch_size = 4, .shuffle = true, .seed = 8, .num_workers = rank});
    fo.batch_size = 0, fo.seed = 0, fo.dist = &fb.ops;
    cr_assert_eq(nn_fit_loader(b, ob, nn_cross_entropy_loss, l, &fo, NULL), AD_OK, "%s",
                 ad_last_error(ctx));
    same_params(a, b);
    cr_assert_eq(fa.steps, 6);
    cr_assert_eq(fb.steps, 6);
    long rows = 0;
    for (int s = 0; s < 6; s++) {
      cr_assert_eq(fa.rows[s], fb.rows[s], "rank %d step %d", rank, s);
      cr_assert_eq(fa.global[s], fb.global[s]);
      rows += fb.rows[s];
    }
    cr_assert_eq(d.calls, rows); /* batches of 4, 4, 2: rank 1 loads 1 + 1 + 1 per epoch */
    cr_assert_lt(d.calls, 20);
    /* unsharded again afterwards: whole batches */
    ad_tensor *xb, *yb;
    cr_assert_eq(nn_loader_next(l, &xb, &yb), AD_OK);
    cr_assert_eq(xb->shape[0], 4);
    nn_loader_free(l);
    nn_optimizer_free(oa), nn_optimizer_free(ob);
    nn_model_free(a), nn_model_free(b);
  }
}

/* A failing get stops training with its message; the epochs done stay in
 * the history, and the loader can be used again. */
Test(fit_loader, failing_get_stops_training) {
  ad_tensor *x, *y;
  test_blobs(ctx, 20, 3, &x, &y);
  for (int w = 0; w < 2; w++) {
    nn_model *m = mlp(ctx);
    nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
    mem_ds d = mem_of(x, y);
    nn_dataset ds = mem_dataset(&d);
    nn_loader *l =
        nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 4, .num_workers = 2 * w});
    nn_fit_opts fo = {.epochs = 3, .verbose = -1};
    nn_history *h;
    d.fail_at = 9;
    cr_assert_eq(nn_fit_loader(m, opt, nn_cross_entropy_loss, l, &fo, &h), AD_ERR_IO);
    test_expect_error(ctx, AD_ERR_IO, "loader: sample 9: unreadable", NULL);
    cr_assert_eq(nn_history_epochs(h), 0);
    cr_assert_eq(nn_optimizer_steps(opt), 2);
    nn_history_free(h);
    d.fail_at = -1;
    cr_assert_eq(nn_fit_loader(m, opt, nn_cross_entropy_loss, l, &fo, &h), AD_OK);
    cr_assert_eq(nn_history_epochs(h), 3);
    cr_assert_eq(nn_optimizer_steps(opt), 2 + 15);
    nn_history_free(h);
    nn_loader_free(l);
    nn_optimizer_free(opt);
    nn_model_free(m);
  }
}

Test(misuse_loader, fit_loader_refuses_bad_arguments) {
  ad_tensor *x, *y;
  test_blobs(ctx, 8, 3, &x, &y);
  nn_model *m = mlp(ctx);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  mem_ds d = mem_of(x, y);
  nn_dataset ds = mem_dataset(&d);
  nn_loader *l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 4});
  nn_fit_opts quiet = {.verbose = -1};
  cr_assert_eq(nn_fit_loader(m, opt, nn_cross_entropy_loss, NULL, &quiet, NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "fit_loader: loader is NULL", NULL);
  cr_assert_eq(nn_fit_loader(NULL, opt, nn_cross_entropy_loss, l, &quiet, NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "fit_loader: model is NULL", NULL);
  cr_assert_eq(nn_fit_loader(m, opt, NULL, l, &quiet, NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "fit_loader: loss is NULL", NULL);
  static const nn_fit_opts bad[] = {{.batch_size = 4, .verbose = -1},
                                    {.seed = 1, .verbose = -1},
                                    {.no_shuffle = true, .verbose = -1},
                                    {.validation_split = 0.2, .verbose = -1},
                                    {.drop_last = true, .verbose = -1}};
  for (int i = 0; i < 5; i++) {
    ad_clear_error(ctx);
    cr_assert_eq(nn_fit_loader(m, opt, nn_cross_entropy_loss, l, &bad[i], NULL), AD_ERR_ARG);
    test_expect_error(ctx, AD_ERR_ARG, "fit_loader: batch_size", "leave them 0", NULL);
  }
  cr_assert_eq(nn_fit_loader(m, opt, nn_cross_entropy_loss, l, &(nn_fit_opts){.epochs = -1}, NULL),
               AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "fit_loader: epochs -1", NULL);
  cr_assert_eq(nn_fit_loader(m, opt, nn_cross_entropy_loss, l,
                             &(nn_fit_opts){.lambda_l2 = INFINITY, .verbose = -1}, NULL),
               AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "fit_loader: lambda_l2 inf; it must be finite", NULL);
  cr_assert_eq(nn_fit_loader(m, opt, nn_cross_entropy_loss, l,
                             &(nn_fit_opts){.val_x = x, .verbose = -1}, NULL),
               AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "fit_loader: validation data needs both", NULL);
  ad_tensor *tmp = ad_add(ctx, x, x);
  cr_assert_eq(nn_fit_loader(m, opt, nn_cross_entropy_loss, l,
                             &(nn_fit_opts){.val_x = tmp, .val_y = y, .verbose = -1}, NULL),
               AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "fit_loader: val_x [8,4] is a temporary", NULL);
  int64_t s0[2] = {0, 4}, t0[1] = {0};
  ad_tensor *vx0 = ad_zeros(ctx, AD_F32, 2, s0), *vy0 = ad_zeros(ctx, y->dtype, 1, t0);
  cr_assert_eq(nn_fit_loader(m, opt, nn_cross_entropy_loss, l,
                             &(nn_fit_opts){.val_x = vx0, .val_y = vy0, .verbose = -1}, NULL),
               AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "fit_loader: val_x [0,4] has no rows to validate on", NULL);
  ad_tensor_free(vx0), ad_tensor_free(vy0);
  nn_loader *none = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 9, .drop_last = true});
  cr_assert_eq(nn_fit_loader(m, opt, nn_cross_entropy_loss, none, &quiet, NULL), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "fit_loader: the loader has no rows to train on", NULL);
  ad_ctx *other = ad_ctx_new();
  nn_loader *far = nn_loader_new(other, &ds, NULL);
  cr_assert_eq(nn_fit_loader(m, opt, nn_cross_entropy_loss, far, &quiet, NULL), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "fit_loader: the loader belongs to another context", NULL);
  nn_loader_free(far);
  ad_ctx_free(other);
  nn_loader_free(none);
  nn_loader_free(l);
  nn_optimizer_free(opt);
  nn_model_free(m);
}
