/* contexts_threads.c: separate contexts on separate application threads
 * are independent (ad.h, "Threading"), also while they share the
 * library's worker threads. Three models, an MLP (dense, batch norm,
 * dropout), a CNN (convolutions, pooling, dropout) and an LSTM (the fused
 * sequence op), each trained by nn_fit on a context of its own: first one
 * after the other on the main thread, then all at once on three threads,
 * then again at once while a fourth thread fills its own context with
 * errors. The parameters must be
 * the same bits each time (nn_fit's results do not depend on how many
 * workers a loop got), and no thread sees another's error.
 *
 * A plain program speaking TAP, not a Criterion suite, so that CI can run
 * it under ThreadSanitizer too (Criterion cannot start there).
 *   contexts_threads [--small] [--threads N]
 * --small: fewer samples (the sanitizer builds); --threads: the library's
 * threads (default 2). */
#include "ad_ext.h"
#include "nn.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t samples = 2048;
static int tests;
static int failed;

static void ok(bool pass, const char *what, const char *why) {
  printf("%s %d - %s\n", pass ? "ok" : "not ok", ++tests, what);
  if (!pass) {
    failed++;
    if (why && *why) printf("# %s\n", why);
  }
}

/* Both trainings of a round start together (NULL: alone). */
static pthread_barrier_t *start_line;

typedef struct job {
  int kind;          /* 0: the MLP, 1: the CNN, 2: the LSTM */
  double start, end; /* of the training, in seconds */
  unsigned long long hash;
  char err[256];
  ad_status st;
} job;

enum { MODELS = 3 };
static const char *const model_name[MODELS] = {"the MLP", "the CNN", "the LSTM"};

/* The LSTM's last step, [N, T, H] -> [N, H]. */
static ad_tensor *last_step(ad_ctx *ctx, ad_tensor *x, bool training, void *ud) {
  (void)training, (void)ud;
  int64_t s[2] = {x->shape[0], x->shape[2]};
  return ad_reshape(ctx, ad_narrow(ctx, x, 1, x->shape[1] - 1, 1), 2, s);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static unsigned long long params_hash(const nn_params *p) {
  unsigned long long h = 1469598103934665603ull;
  for (int i = 0; i < nn_params_count(p); i++) {
    const ad_tensor *t = nn_params_tensor(p, i);
    const unsigned char *b = t->data;
    for (size_t k = 0; k < (size_t)t->size * ad_dtype_size(t->dtype); k++)
      h = (h ^ b[k]) * 1099511628211ull;
  }
  return h;
}

/* Trains model j->kind on a new context of its own; its parameters' hash
 * and status (with the message on failure) into j. */
static void *train(void *arg) {
  job *j = arg;
  ad_ctx *ctx = ad_ctx_new();
  j->st = AD_ERR_OOM;
  snprintf(j->err, sizeof j->err, "no context");
  if (!ctx) return NULL;
  ad_rng rng;
  ad_rng_seed(&rng, 7 + (uint64_t)j->kind);
  int64_t xs_mlp[2] = {samples, 64}, xs_cnn[4] = {samples, 1, 12, 12}, ys[1] = {samples};
  int64_t xs_lstm[3] = {samples, 8, 6};
  ad_tensor *x = j->kind == 0   ? ad_randn(ctx, &rng, AD_F32, 2, xs_mlp, 0, 1)
                 : j->kind == 1 ? ad_randn(ctx, &rng, AD_F32, 4, xs_cnn, 0, 1)
                                : ad_randn(ctx, &rng, AD_F32, 3, xs_lstm, 0, 1);
  ad_tensor *y = ad_zeros(ctx, AD_I32, 1, ys);
  for (int64_t i = 0; x && y && i < samples; i++) /* a learnable rule: the sign of two inputs */
    ((int32_t *)y->data)[i] = (((float *)x->data)[i * x->size / samples] > 0) +
                              2 * (((float *)x->data)[i * x->size / samples + 1] > 0);
  nn_model *m = nn_sequential_new(ctx);
  if (j->kind == 0) {
    nn_model_add(m, nn_dense_new(ctx, 64, 256, &rng, NULL));
    nn_model_add(m, nn_batch_norm1d_new(ctx, 256, NULL));
    nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
    nn_model_add(m, nn_dropout_new(ctx, 0.2, 3));
    nn_model_add(m, nn_dense_new(ctx, 256, 256, &rng, NULL));
    nn_model_add(m, nn_activation_new(ctx, NN_ACT_TANH));
    nn_model_add(m, nn_dense_new(ctx, 256, 4, &rng, NULL));
  } else if (j->kind == 1) {
    nn_model_add(m, nn_conv2d_new(ctx, 1, 8, 3, 3, &rng, NULL));
    nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
    nn_model_add(m, nn_conv2d_new(ctx, 8, 8, 3, 3, &rng, NULL));
    nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
    nn_model_add(m, nn_max_pool2d_new(ctx, 2, 2, NULL));
    nn_model_add(m, nn_dropout_new(ctx, 0.2, 4));
    nn_model_add(m, nn_flatten_new(ctx));
    nn_model_add(m, nn_dense_new(ctx, 8 * 4 * 4, 4, &rng, NULL));
  } else {
    nn_model_add(m, nn_lstm_new(ctx, 6, 64, &rng, &(nn_rnn_opts){.batch_first = true}));
    nn_model_add(m, nn_lambda_new(ctx, "last_step", last_step, NULL));
    nn_model_add(m, nn_dense_new(ctx, 64, 4, &rng, NULL));
  }
  nn_optimizer *opt = m ? nn_adam_new(nn_model_params(m), 1e-3) : NULL;
  nn_fit_opts fo = {.epochs = 2, .batch_size = 64, .seed = 5, .verbose = -1};
  if (start_line) pthread_barrier_wait(start_line);
  j->start = now();
  j->st = x && y && opt ? nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL) : AD_ERR_OOM;
  j->end = now();
  snprintf(j->err, sizeof j->err, "%s", ad_last_error(ctx));
  j->hash = j->st == AD_OK ? params_hash(nn_model_params(m)) : 0;
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
  ad_ctx_free(ctx);
  return NULL;
}

/* Makes errors on a context of its own until told to stop: each must be
 * its own, with its own message. */
static atomic_bool stop;
static atomic_int bad_errors, errors_made;

static void *make_errors(void *arg) {
  (void)arg;
  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) {
    atomic_fetch_add(&bad_errors, 1);
    return NULL;
  }
  int64_t a[2] = {3, 4}, b[2] = {5, 6};
  do { /* at least one, however late this thread starts */
    ad_tensor *x = ad_zeros(ctx, AD_F32, 2, a), *w = ad_zeros(ctx, AD_F32, 2, b);
    ad_tensor *y = ad_matmul(ctx, x, w, false, false); /* [3,4] x [5,6]: a shape error */
    if (y || ad_last_status(ctx) != AD_ERR_SHAPE || !strstr(ad_last_error(ctx), "[3,4]"))
      atomic_fetch_add(&bad_errors, 1);
    ad_clear_error(ctx);
    ad_tensor_free(x);
    ad_tensor_free(w);
    atomic_fetch_add(&errors_made, 1);
  } while (!atomic_load(&stop));
  ad_ctx_free(ctx);
  return NULL;
}

int main(int argc, char **argv) {
  int threads = 2;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--small") == 0)
      samples = 256;
    else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: contexts_threads [--small] [--threads N]\n");
      return 2;
    }
  }
  if (ad_set_num_threads(threads) != AD_OK) {
    fprintf(stderr, "contexts_threads: cannot use %d threads\n", threads);
    return 2;
  }
  printf("1..%d\n", 3 * MODELS + 1);
  job solo[MODELS];
  for (int k = 0; k < MODELS; k++) solo[k] = (job){.kind = k}, train(&solo[k]);
  char why[600], what[160];
  for (int k = 0; k < MODELS; k++) {
    snprintf(why, sizeof why, "status %s: %s", ad_status_str(solo[k].st), solo[k].err);
    snprintf(what, sizeof what, "%s trains on its own", model_name[k]);
    ok(solo[k].st == AD_OK, what, why);
  }
  for (int round = 0; round < 2; round++) {
    job all[MODELS];
    pthread_t t[MODELS], e;
    atomic_store(&stop, false);
    bool noisy = round == 1, started = !noisy || pthread_create(&e, NULL, make_errors, NULL) == 0;
    bool own[MODELS];
    int started_models = 0;
    pthread_barrier_t line;
    bool barrier = pthread_barrier_init(&line, NULL, MODELS) == 0;
    start_line = barrier ? &line : NULL;
    for (int k = 0; k < MODELS; k++) {
      all[k] = (job){.kind = k};
      own[k] = pthread_create(&t[k], NULL, train, &all[k]) == 0;
      started_models += own[k];
    }
    /* threads that could not start: the main thread stands in at the
     * barrier for them, then trains their models after the others */
    for (int k = started_models; barrier && started_models > 0 && k < MODELS; k++)
      pthread_barrier_wait(&line);
    for (int k = 0; k < MODELS; k++)
      if (own[k]) pthread_join(t[k], NULL);
    start_line = NULL;
    for (int k = 0; k < MODELS; k++)
      if (!own[k]) train(&all[k]); /* no thread: at least the result is checked */
    atomic_store(&stop, true);
    if (noisy && started) pthread_join(e, NULL);
    if (barrier) pthread_barrier_destroy(&line);
    double lo = all[0].start, hi = all[0].end;
    for (int k = 1; k < MODELS; k++) {
      lo = all[k].start > lo ? all[k].start : lo;
      hi = all[k].end < hi ? all[k].end : hi;
    }
    printf("# round %d: all %d trainings at once for %.3f s; they took", round + 1, MODELS,
           hi > lo ? hi - lo : 0.0);
    for (int k = 0; k < MODELS; k++) printf(" %.3f", all[k].end - all[k].start);
    printf(" s\n");
    for (int k = 0; k < MODELS; k++) {
      snprintf(why, sizeof why, "status %s: %s; hash %016llx, alone %016llx",
               ad_status_str(all[k].st), all[k].err, all[k].hash, solo[k].hash);
      snprintf(what, sizeof what, "%s trained beside the other models%s: the same bits as alone",
               model_name[k], noisy ? " and a thread making errors" : "");
      ok(all[k].st == AD_OK && all[k].hash == solo[k].hash && !all[k].err[0], what, why);
    }
    if (noisy) {
      snprintf(why, sizeof why, "%d of %d errors were not the thread's own",
               atomic_load(&bad_errors), atomic_load(&errors_made));
      ok(started && atomic_load(&bad_errors) == 0 && atomic_load(&errors_made) > 0,
         "each context keeps its own error", why);
    }
  }
  ad_set_num_threads(1);
  return failed ? 1 : 0;
}
