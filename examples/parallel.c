/* parallel: how is training parallelised, and does it change the result?
 *
 * Part 1, data parallelism (what libnn_dist does across processes with
 * MPI; here the workers take turns in one process, so the example needs
 * no MPI): one batch of 100 rows, split into shards for 1 to 8 workers.
 * Each worker holds the same model and computes the gradient of the mean
 * loss over its own shard. The mean over the whole batch is the mean of
 * the shards' means weighted by their rows, so averaging the workers'
 * gradients with those weights gives the whole batch's gradient, to
 * rounding (float64 here). The plain mean of the workers' gradients does
 * too when the shards are equal, and is wrong when they are not (100 rows
 * for 3 workers: 33, 33, 34).
 *
 * Part 2, threads inside one step (ad_set_num_threads): the same model
 * trained on 1, 2, ... threads. Each large product is cut into blocks of
 * its output, so every output element is still summed by one thread in
 * the same order: the trained parameters are the same bits on any number
 * of threads, and only the time changes.
 *
 * Prints both tables; writes parallel.csv (part 1) and
 * parallel_threads.csv, and with --plot parallel.svg. Exits 1 unless the
 * weighted average matches the whole batch's gradient to 1e-12 for every
 * worker count, the plain mean of uneven shards differs from it by more
 * than 1e-6, and the parameters are the same bits on every thread count
 * with the training's loops split over the threads (ad_thread_stats: on
 * 2 threads the first loop always is).
 *
 * Usage: parallel [--threads N] [--epochs 3] [--samples 4096] [--seed 1]
 *                 [--out DIR] [--plot]
 * (part 2: --threads, the most threads, default the CPUs online, at least
 * 2 and at most 8; a model 256 -> 512 -> 512 -> 10 trained by Adam in
 * batches of 256 for --epochs epochs of --samples rows, each timed) */
#include "teach.h"

#include <autodiff/ad_ext.h>

#include <time.h>
#include <unistd.h>

#define ROWS    100
#define WORKERS 8

/* The gradients of every parameter of ps, one after the other, into g. */
static void grads(nn_params *ps, double *g) {
  for (int i = 0, k = 0; i < nn_params_count(ps); i++) {
    const ad_tensor *t = nn_params_tensor(ps, i);
    for (int64_t j = 0; j < t->size; j++) g[k++] = t->grad ? ad_tensor_get(t->grad, j) : 0.0;
  }
}

/* The gradient of the mean loss of m over rows [b, e) of x, y, into g. */
static void shard_grad(nn_model *m, ad_tensor *x, ad_tensor *y, int64_t b, int64_t e, double *g) {
  ad_ctx *ctx = nn_model_ctx(m);
  int64_t rows[ROWS];
  for (int64_t i = b; i < e; i++) rows[i - b] = i;
  ad_tensor *xs = nn_take_rows(ctx, x, e - b, rows), *ys = nn_take_rows(ctx, y, e - b, rows);
  ad_tape_reset(ctx);
  nn_params_zero_grad(nn_model_params(m));
  ad_tensor *loss = nn_cross_entropy_loss(ctx, nn_model_forward(m, xs), ys, NN_MEAN);
  if (ad_backward(ctx, loss, NULL) != AD_OK) {
    fprintf(stderr, "parallel: %s\n", ad_last_error(ctx));
    exit(1);
  }
  grads(nn_model_params(m), g);
  ad_tape_reset(ctx);
  ad_tensor_free(xs), ad_tensor_free(ys);
}

static double max_abs_diff(const double *a, const double *b, int64_t n) {
  double d = 0;
  for (int64_t k = 0; k < n; k++) d = fmax(d, fabs(a[k] - b[k]));
  return d;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* FNV-1a over the bytes of every parameter of ps: equal hashes, equal bits */
static uint64_t params_hash(nn_params *ps) {
  uint64_t h = 14695981039346656037u;
  for (int i = 0; i < nn_params_count(ps); i++) {
    const ad_tensor *t = nn_params_tensor(ps, i);
    const unsigned char *p = t->data;
    for (size_t j = 0; j < (size_t)t->size * sizeof(float); j++) h = (h ^ p[j]) * 1099511628211u;
  }
  return h;
}

int main(int argc, char **argv) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int max_threads = cpus < 2 ? 2 : cpus > 8 ? 8 : (int)cpus, epochs = 3, samples = 4096;
  teach_opts o;
  teach_flag flags[] = {{"--threads", 'i', &max_threads, 2, 64},
                        {"--epochs", 'i', &epochs, 1, 0},
                        {"--samples", 'i', &samples, 256, 0}};
  if (!teach_parse(argc, argv, 3, flags, &o)) return 2;
  ad_ctx *ctx = ad_ctx_new();

  /* part 1: the whole batch's gradient, then the workers' */
  ad_tensor *x32, *y;
  teach_blobs(ctx, ROWS, 32, 3, (uint64_t)o.seed, &x32, &y);
  ad_tensor *x = ad_tensor_clone(ctx, ad_cast(ctx, x32, AD_F64));
  int64_t sizes[3] = {32, 64, 3};
  nn_model *m =
      teach_mlp(ctx, (uint64_t)o.seed, NN_ACT_TANH, &(nn_dense_opts){.dtype = AD_F64}, 2, sizes);
  int64_t np = 0;
  for (int i = 0; i < nn_params_count(nn_model_params(m)); i++)
    np += nn_params_tensor(nn_model_params(m), i)->size;
  size_t bytes = (size_t)np * sizeof(double);
  double *whole = teach_alloc(bytes), *g = teach_alloc(bytes), *weighted = teach_alloc(bytes),
         *plain = teach_alloc(bytes);
  shard_grad(m, x, y, 0, ROWS, whole);
  double scale = 0; /* differences relative to the largest gradient element */
  for (int64_t k = 0; k < np; k++) scale = fmax(scale, fabs(whole[k]));

  teach_table *t = teach_table_new(WORKERS);
  double *c[3] = {teach_col(t, "workers"), teach_col(t, "weighted"), teach_col(t, "plain")};
  bool ok = true;
  printf("%-8s %-26s %14s %14s\n", "workers", "rows per worker", "weighted mean", "plain mean");
  for (int w = 1; w <= WORKERS; w++) {
    char shards[64] = "";
    memset(weighted, 0, bytes);
    memset(plain, 0, bytes);
    bool even = true;
    for (int r = 0; r < w; r++) { /* nn_fit's sharding rule: rows [N r / w, N (r + 1) / w) */
      int64_t b = (int64_t)ROWS * r / w, e = (int64_t)ROWS * (r + 1) / w;
      shard_grad(m, x, y, b, e, g);
      for (int64_t k = 0; k < np; k++) {
        weighted[k] += (double)(e - b) / ROWS * g[k];
        plain[k] += g[k] / w;
      }
      even &= (e - b) * w == ROWS;
      size_t used = strlen(shards);
      snprintf(shards + used, sizeof shards - used, "%s%lld", r ? " " : "", (long long)(e - b));
    }
    c[0][w - 1] = w;
    c[1][w - 1] = max_abs_diff(weighted, whole, np) / scale;
    c[2][w - 1] = max_abs_diff(plain, whole, np) / scale;
    printf("%-8d %-26s %14.1e %14.1e\n", w, shards, c[1][w - 1], c[2][w - 1]);
    ok &= c[1][w - 1] <= 1e-12 && (even || c[2][w - 1] > 1e-6);
  }
  printf("(largest difference from the whole batch's gradient, relative to its largest "
         "element)\n");

  /* part 2: the same training on 1 .. max_threads threads */
  ad_tensor *bx, *by;
  teach_blobs(ctx, samples, 256, 10, (uint64_t)o.seed, &bx, &by);
  int64_t wide[4] = {256, 512, 512, 10};
  teach_table *tt = teach_table_new(max_threads);
  double *d[3] = {teach_col(tt, "threads"), teach_col(tt, "seconds_per_epoch"),
                  teach_col(tt, "speedup")};
  uint64_t first = 0;
  int64_t split = 0; /* loops dealt to the threads with n > 1 */
  printf("\n%-8s %16s %8s  %s\n", "threads", "s per epoch", "speedup", "parameters");
  for (int n = 1; n <= max_threads; n++) {
    if (ad_set_num_threads(n) != AD_OK) {
      fprintf(stderr, "parallel: cannot start %d threads\n", n);
      return 1;
    }
    nn_model *wm = teach_mlp(ctx, (uint64_t)o.seed, NN_ACT_RELU, NULL, 3, wide);
    ad_thread_stats_get(NULL, true);
    nn_optimizer *opt = nn_adam_new(nn_model_params(wm), 1e-3);
    double best = INFINITY;
    for (int e = 0; e < epochs; e++) { /* one nn_fit per epoch, to time each */
      nn_fit_opts fo = {
          .epochs = 1, .batch_size = 256, .seed = (uint64_t)o.seed + (uint64_t)e, .verbose = -1};
      double t0 = now_s();
      if (nn_fit(wm, opt, nn_cross_entropy_loss, bx, by, &fo, NULL) != AD_OK) {
        fprintf(stderr, "parallel: %s\n", ad_last_error(ctx));
        return 1;
      }
      best = fmin(best, now_s() - t0);
    }
    ad_thread_stats st;
    ad_thread_stats_get(&st, false);
    split += n > 1 ? st.loops : 0;
    uint64_t h = params_hash(nn_model_params(wm));
    if (n == 1) first = h;
    d[0][n - 1] = n, d[1][n - 1] = best, d[2][n - 1] = d[1][0] / best;
    printf("%-8d %16.4f %7.2fx  %016llx %s\n", n, best, d[2][n - 1], (unsigned long long)h,
           h == first ? "(the same bits)" : "(DIFFERENT bits)");
    ok &= h == first;
    nn_optimizer_free(opt);
    nn_model_free(wm);
  }
  ad_set_num_threads(1);
  if (split == 0) { /* else the same bits would show nothing */
    fprintf(stderr, "parallel: no loop was split over the threads\n");
    ok = false;
  }

  plot_opts po = {"Workers' gradients averaged, against the whole batch's", "workers",
                  "largest relative difference", .logy = true};
  ok &= teach_save(t, &o, "parallel.csv") && teach_save(tt, &o, "parallel_threads.csv") &&
        teach_chart(t, &o, "parallel.svg", po, "workers", "weighted", "plain", NULL);
  teach_table_free(t), teach_table_free(tt);
  free(whole), free(g), free(weighted), free(plain);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(x32), ad_tensor_free(y), ad_tensor_free(bx), ad_tensor_free(by);
  ad_ctx_free(ctx);
  return ok ? 0 : 1;
}
