/* loader_threads.c: nn_loader's worker threads, in a plain program
 * speaking TAP so that CI runs it under ThreadSanitizer too (Criterion
 * cannot start there; tests/test_nn_loader.c has the rest). With 1, 3 and
 * 8 workers and a get that sleeps unevenly (so workers finish out of
 * order): the batches are those of the caller's thread alone; a failing get
 * stops the epoch with its message; free with loads in flight joins the
 * threads; and nn_fit_loader trains as nn_fit does, bit for bit, while the
 * engine's own threads (ad_set_num_threads) run the steps.
 *   loader_threads [--threads N]   (the engine's threads, default 2) */
#include "ad_ext.h"
#include "nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int tests, failed;

static void ok(bool pass, const char *what, const char *why) {
  printf("%s %d - %s\n", pass ? "ok" : "not ok", ++tests, what);
  if (!pass) {
    failed++;
    if (why && *why) printf("# %s\n", why);
  }
}

/* x[i] = 4 features of row i of a fixed table, y[i] = i % 3; get fails at
 * fail_at. The table is read-only: workers share it. */
enum { N = 61, F = 4 };
static double table[N][F];
static int64_t fail_at = -1;

static int get(void *ud, int64_t i, void *x, void *y, char *msg) {
  (void)ud;
  struct timespec ts = {0, (long)((i * 7919) % 7) * 100000};
  nanosleep(&ts, NULL);
  if (i == fail_at) {
    snprintf(msg, NN_SAMPLE_MSG_MAX, "row %lld is corrupt", (long long)i);
    return 1;
  }
  memcpy(x, table[i], sizeof table[i]);
  *(int32_t *)y = (int32_t)(i % 3);
  return 0;
}

static const nn_dataset ds = {
    .len = N, .x_dtype = AD_F64, .x_ndim = 1, .x_shape = {F}, .y_dtype = AD_I32, .get = get};

/* A hash of three shuffled epochs' batches. */
static unsigned long long epochs_hash(ad_ctx *ctx, int workers, int prefetch) {
  nn_loader *l = nn_loader_new(ctx, &ds,
                               &(nn_loader_opts){.batch_size = 8,
                                                 .shuffle = true,
                                                 .seed = 4,
                                                 .num_workers = workers,
                                                 .prefetch = prefetch});
  if (!l) return 0;
  unsigned long long h = 1469598103934665603ull;
  ad_tensor *xb, *yb;
  for (int e = 0; e < 3; e++)
    while (nn_loader_next(l, &xb, &yb) == AD_OK && xb) {
      const unsigned char *b = xb->data;
      for (size_t k = 0; k < (size_t)xb->size * sizeof(double); k++)
        h = (h ^ b[k]) * 1099511628211ull;
    }
  nn_loader_free(l);
  return h;
}

static nn_model *mlp(ad_ctx *c) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  nn_dense_opts o = {.dtype = AD_F64, .activation = NN_ACT_TANH};
  nn_model *m = nn_sequential_new(c);
  nn_model_add(m, nn_dense_new(c, F, 32, &rng, &o));
  o.activation = NN_ACT_NONE;
  nn_model_add(m, nn_dense_new(c, 32, 3, &rng, &o));
  return m;
}

static bool same_params(nn_model *a, nn_model *b) {
  nn_params *pa = nn_model_params(a), *pb = nn_model_params(b);
  for (int i = 0; i < nn_params_count(pa); i++) {
    ad_tensor *ta = nn_params_tensor(pa, i), *tb = nn_params_tensor(pb, i);
    if (memcmp(ta->data, tb->data, (size_t)ta->size * sizeof(double)) != 0) return false;
  }
  return true;
}

int main(int argc, char **argv) {
  int threads = 2;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
  ad_set_num_threads(threads);
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  for (int i = 0; i < N; i++)
    for (int k = 0; k < F; k++) table[i][k] = (k == i % 3 ? 2.0 : 0.0) + ad_rng_normal(&rng);
  ad_ctx *ctx = ad_ctx_new();
  char why[300];

  unsigned long long alone = epochs_hash(ctx, 0, 0);
  static const int ws[][2] = {{1, 0}, {3, 0}, {3, 1}, {8, 3}};
  for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
    char what[96];
    snprintf(what, sizeof what, "%d workers, prefetch %d: the caller's batches, in order", ws[i][0],
             ws[i][1]);
    ok(alone && epochs_hash(ctx, ws[i][0], ws[i][1]) == alone, what, ad_last_error(ctx));
  }

  fail_at = 37;
  nn_loader *l = nn_loader_new(ctx, &ds, &(nn_loader_opts){.batch_size = 5, .num_workers = 4});
  ad_tensor *xb, *yb;
  int batches = 0;
  ad_status st;
  while ((st = nn_loader_next(l, &xb, &yb)) == AD_OK && xb) batches++;
  snprintf(why, sizeof why, "status %s, %d batches: %s", ad_status_str(st), batches,
           ad_last_error(ctx));
  ok(st == AD_ERR_IO && batches == 7 && strstr(ad_last_error(ctx), "sample 37: row 37 is corrupt"),
     "a failing get stops the epoch at its batch with its message", why);
  fail_at = -1;
  ad_clear_error(ctx);
  batches = 0;
  while ((st = nn_loader_next(l, &xb, &yb)) == AD_OK && xb) batches++;
  ok(st == AD_OK && batches == 13, "the next epoch runs through", ad_last_error(ctx));
  st = nn_loader_next(l, &xb, &yb);
  ok(st == AD_OK && xb, "and the one after starts", ad_last_error(ctx));
  nn_loader_free(l); /* mid-epoch, loads in flight */
  ok(true, "free mid-epoch joins the workers", NULL);

  int64_t sx[2] = {N, F}, sy[1] = {N};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 2, sx), *y = ad_zeros(ctx, AD_I32, 1, sy);
  memcpy(x->data, table, sizeof table);
  for (int i = 0; i < N; i++) ad_tensor_set(y, i, i % 3);
  nn_model *a = mlp(ctx), *b = mlp(ctx);
  nn_optimizer *oa = nn_adam_new(nn_model_params(a), 0.01);
  nn_optimizer *ob = nn_adam_new(nn_model_params(b), 0.01);
  nn_fit_opts fo = {.epochs = 3, .batch_size = 8, .seed = 6, .accuracy = true, .verbose = -1};
  ad_status sa = nn_fit(a, oa, nn_cross_entropy_loss, x, y, &fo, NULL);
  l = nn_loader_new(
      ctx, &ds, &(nn_loader_opts){.batch_size = 8, .shuffle = true, .seed = 6, .num_workers = 3});
  fo.batch_size = 0, fo.seed = 0;
  ad_status sb = nn_fit_loader(b, ob, nn_cross_entropy_loss, l, &fo, NULL);
  snprintf(why, sizeof why, "%s, %s: %s", ad_status_str(sa), ad_status_str(sb), ad_last_error(ctx));
  ok(sa == AD_OK && sb == AD_OK && same_params(a, b),
     "nn_fit_loader with 3 workers trains as nn_fit, bit for bit", why);
  nn_loader_free(l);
  nn_optimizer_free(oa), nn_optimizer_free(ob);
  nn_model_free(a), nn_model_free(b);
  ad_tensor_free(x), ad_tensor_free(y);
  ad_ctx_free(ctx);
  printf("1..%d\n", tests);
  return failed ? 1 : 0;
}
