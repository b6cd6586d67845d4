/* test_mpi_dist.c: nn_dist under mpirun (-np 2, -np 3): every rank holds
 * the same bits after training, equal to one process training on the same
 * global batches (uneven and empty shards included); the deterministic
 * mode repeats its bits; mismatched models, a failing rank, dropout seeded
 * by rank, batch norm's per-rank statistics, rank-0 checkpoints. Not a
 * Criterion suite (Criterion forks each test; MPI must not be forked):
 * every rank runs every check, rank 0 prints TAP, and a check passes only
 * if it passes on every rank. argv[1]: a directory for files; then
 * options every nn_dist of the run takes, and the reduction path the run
 * must take: [--no-shm] [--ranks-per-node N] [--shard] [--expect
 * shm|mpi NODES]; --sums-only runs the checks of the sums' values alone
 * (against one process and against MPI's deterministic sum: for a run
 * under an emulated CPU, whose other checks the native runs make). */
#include "ad_ext.h"
#include "nn_dist.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

/* Under AddressSanitizer (CI's debug build, about 27x slower, these runs
 * one at a time) paths_same_bits trains one epoch instead of two. */
#if defined(__SANITIZE_ADDRESS__)
#define MPI_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MPI_SANITIZED 1
#endif
#endif
#ifndef MPI_SANITIZED
#define MPI_SANITIZED 0
#endif

static int rank, size, ntest, nfail;
static const char *tmpdir = "/tmp";
static nn_dist_opts base;      /* --no-shm, --ranks-per-node */
static bool expect_shm = true; /* --expect */
static bool sums_only;         /* --sums-only: the checks of the sums' values alone */
static int expect_nodes = 1;
static int fail_in = 0;      /* > 0: count_alloc fails the fail_in-th allocation from now */
static long long live_bytes; /* what count_alloc has handed out and not taken back */
static bool refuse_all;      /* count_alloc refuses every allocation */
/* While parking, count_alloc keeps the blocks freed and gives each to a
 * later allocation of its size, the last freed first, as malloc's caches
 * may (glibc's tcache): so a block freed last comes back at once. */
enum { PARK_MAX = 4096 };
static bool parking;
static void *parked[PARK_MAX];
static size_t parked_size[PARK_MAX];
static int nparked;

static bool own_shard; /* dist_new keeps o's shard_optimizer */

static ad_status ops_step_rows(const nn_dist_ops *ops, nn_model *m, ad_tensor *x, ad_tensor *y,
                               int64_t b, int64_t e, int64_t n, bool begin_twice);

/* Reports a check that cannot be made: the same on every rank. */
static void skip(const char *name, const char *why) {
  ntest++;
  if (rank == 0) printf("ok %d - %s (np %d) # SKIP %s\n", ntest, name, size, why);
  fflush(stdout);
}

/* Frees the blocks parked and not taken again. */
static void unpark(void) {
  for (int i = 0; i < nparked; i++) free(parked[i]);
  nparked = 0;
}

/* nn_dist_new with the run's options added to o (may be NULL). */
static nn_dist *dist_new(ad_ctx *c, const nn_dist_opts *o) {
  nn_dist_opts all = o ? *o : (nn_dist_opts){0};
  all.no_shm |= base.no_shm;
  if (!own_shard) all.shard_optimizer |= base.shard_optimizer;
  if (base.ranks_per_node) all.ranks_per_node = base.ranks_per_node;
  return nn_dist_new(c, &all);
}

/* Reports a check that must hold on every rank. */
static void check(bool ok, const char *name, const char *why) {
  if (!ok) fprintf(stderr, "rank %d: %s: %s\n", rank, name, why ? why : "failed");
  int all = ok;
  MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  ntest++;
  nfail += !all;
  if (rank == 0) printf("%sok %d - %s (np %d)\n", all ? "" : "not ", ntest, name, size);
  fflush(stdout);
}

/* The data: rows of 4 features, labels 0..2 from a fixed rule; the same on
 * every rank. */
static void make_data(ad_ctx *c, ad_dtype dt, int64_t n, ad_tensor **x, ad_tensor **y) {
  ad_rng r;
  ad_rng_seed(&r, 11);
  int64_t sx[2] = {n, 4}, sy[1] = {n};
  *x = ad_randn(c, &r, dt, 2, sx, 0, 1);
  *y = ad_zeros(c, AD_I32, 1, sy);
  for (int64_t i = 0; i < n; i++) {
    double a = ad_tensor_get(*x, 4 * i), b = ad_tensor_get(*x, 4 * i + 1);
    ad_tensor_set(*y, i, a + b > 0.5 ? 2 : a - b > 0 ? 1 : 0);
  }
}

enum { PLAIN, DROPOUT, BATCHNORM, TIED };

/* TIED's forward: x W, tanh, times W again, tanh, times V. */
static ad_tensor *tied_forward(nn_model *m, ad_tensor *x, void *ud) {
  (void)ud;
  ad_ctx *c = nn_model_ctx(m);
  ad_tensor *W = nn_model_param(m, "W"), *V = nn_model_param(m, "V");
  ad_tensor *h = ad_tanh(c, ad_matmul(c, x, W, false, false));
  h = ad_tanh(c, ad_matmul(c, h, W, false, false));
  return ad_matmul(c, h, V, false, false);
}

/* 4 -> hidden (tanh) [-> dropout | batch norm] -> 3, initialised from seed
 * 5 on every rank unless init_seed says otherwise; TIED: tied_forward, its
 * W [4, 4] listed a second time as "W_again" (tied weights: one tensor
 * twice in the list, which the optimizers step once). */
static nn_model *make_model(ad_ctx *c, ad_dtype dt, int hidden, int kind, uint64_t init_seed) {
  ad_rng r;
  ad_rng_seed(&r, init_seed);
  if (kind == TIED) {
    nn_model *m = nn_model_new(c, tied_forward, NULL);
    int64_t sw[2] = {4, 4}, sv[2] = {4, 3};
    nn_init xav = {.kind = NN_INIT_XAVIER_UNIFORM};
    ad_tensor *W = nn_model_add_param(m, "W", dt, 2, sw, xav, &r);
    nn_model_add_param(m, "V", dt, 2, sv, xav, &r);
    nn_params_add(nn_model_params(m), "W_again", W, false);
    return m;
  }
  nn_model *m = nn_sequential_new(c);
  nn_dense_opts o = {.activation = NN_ACT_TANH, .dtype = dt};
  nn_model_add(m, nn_dense_new(c, 4, hidden, &r, &o));
  if (kind == DROPOUT) /* each rank its own stream: seeded by rank */
    nn_model_add(m, nn_dropout_new(c, 0.3, 100 + (uint64_t)rank));
  if (kind == BATCHNORM) {
    nn_batch_norm_opts bo = {.dtype = dt};
    nn_model_add(m, nn_batch_norm1d_new(c, hidden, &bo));
  }
  nn_dense_opts o2 = {.dtype = dt};
  nn_model_add(m, nn_dense_new(c, hidden, 3, &r, &o2));
  return m;
}

/* Whether every rank's n tensors hold rank 0's bits. */
static bool same_bits_tensors(ad_tensor *const *ts, int n) {
  bool ok = true;
  for (int i = 0; i < n; i++) {
    ad_tensor *t = ts[i];
    size_t bytes = (size_t)t->size * ad_dtype_size(t->dtype);
    void *mine = malloc(bytes);
    memcpy(mine, t->data, bytes);
    MPI_Bcast(mine, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
    ok &= memcmp(mine, t->data, bytes) == 0;
    free(mine);
  }
  return ok;
}

/* Whether every rank's tensors of list p hold rank 0's bits. */
static bool same_bits_as_rank0(nn_params *p) {
  return same_bits_tensors(nn_params_tensors(p), nn_params_count(p));
}

/* Largest |a - b| / max(|b|, 1e-3) over the n tensors' elements: 0 for
 * equal ones (a plateau's best is inf in both), NaN for a NaN (which
 * then stays: a later element must not replace it). */
static double max_rel_tensors(ad_tensor *const *as, ad_tensor *const *bs, int n) {
  double worst = 0;
  for (int i = 0; i < n; i++) {
    ad_tensor *s = as[i], *t = bs[i];
    for (int64_t e = 0; e < s->size; e++) {
      double u = ad_tensor_get(s, e), v = ad_tensor_get(t, e);
      double r = u == v ? 0 : fabs(u - v) / fmax(fabs(v), 1e-3);
      if (isnan(r)) return r;
      if (r > worst) worst = r;
    }
  }
  return worst;
}

/* Largest |a - b| / max(|b|, 1e-3) over the lists' elements. */
static double max_rel(nn_params *a, nn_params *b) {
  return max_rel_tensors(nn_params_tensors(a), nn_params_tensors(b), nn_params_count(a));
}

typedef struct run {
  nn_model *m;
  nn_optimizer *opt;
  nn_history *h;
  ad_status st, sync_st;
  bool state_same; /* the optimizer state on every rank is rank 0's when nn_fit returns */
  nn_dist_stats stats;
} run;

static const nn_opt_config *train_cfg; /* non-NULL: train's optimizer */
static int train_hidden = 8;           /* train's hidden width */

/* Trains a fresh model on n rows, batch bs, for epochs; dist NULL: one
 * process on everything. */
static run train(ad_ctx *c, ad_dtype dt, int kind, bool adam, int64_t n, int64_t bs, int epochs,
                 const nn_dist_opts *dopts, bool dist) {
  run r = {0};
  ad_tensor *x, *y;
  make_data(c, dt, n, &x, &y);
  r.m = make_model(c, dt, train_hidden, kind, 5);
  r.opt = train_cfg ? nn_optimizer_new(nn_model_params(r.m), train_cfg)
          : adam    ? nn_adam_new(nn_model_params(r.m), 0.01)
                    : nn_sgd_new(nn_model_params(r.m), 0.1, 0.9, false, 0);
  nn_dist *d = dist ? dist_new(c, dopts) : NULL;
  nn_fit_opts fo = {.epochs = epochs,
                    .batch_size = bs,
                    .seed = 3,
                    .accuracy = true,
                    .verbose = -1,
                    .lambda_l2 = 1e-3,
                    .dist = d ? nn_dist_fit_ops(d) : NULL};
  r.st = nn_fit(r.m, r.opt, nn_cross_entropy_loss, x, y, &fo, &r.h);
  nn_dist_get_stats(d, &r.stats, false);
  if (d)
    r.state_same =
        same_bits_tensors(nn_optimizer_state_tensors(r.opt), nn_optimizer_state_count(r.opt));
  if (d) r.sync_st = nn_dist_sync(d, r.m, r.opt);
  nn_dist_free(d);
  ad_tensor_free(x);
  ad_tensor_free(y);
  return r;
}

static void run_free(run *r) {
  nn_history_free(r->h);
  nn_optimizer_free(r->opt);
  nn_model_free(r->m);
}

static char why[600];

/* Whether got matches want within bound: NaN for a NaN want, the same
 * infinity for an infinite want or got, else |got - want| <= bound (as
 * test_close of test_alloc.h, which needs Criterion): a bound of
 * tol |want| is inf for an infinite want and would take any got. */
static bool close_to(double got, double want, double bound) {
  if (isnan(want)) return isnan(got);
  if (isinf(want) || isinf(got)) return got == want;
  return fabs(got - want) <= bound;
}

/* Whether a reduced gradient v is want: exact with shares that are powers
 * of two, within rounding with 1/3 or 1/5 (5 ranks: 12 * (1/5) summed five
 * times is 12.000000000000002). */
static bool near(double v, double want) { return close_to(v, want, 1e-12 * fabs(want)); }

/* Data parallel equals one process on the global batches: 50 rows in
 * batches of 16 (16 = 8 + 8 = 5 + 5 + 6, the last batch of 2 leaves rank
 * 0 of 3 without rows). */
static void equals_single(ad_ctx *c, ad_dtype dt, bool adam, size_t bucket, double tol,
                          const char *name) {
  nn_dist_opts o = {.bucket_bytes = bucket};
  run one = train(c, dt, PLAIN, adam, 50, 16, 3, NULL, false);
  run dd = train(c, dt, PLAIN, adam, 50, 16, 3, &o, true);
  char n1[160];
  snprintf(why, sizeof why, "status %s: %s", ad_status_str(dd.st), ad_last_error(c));
  snprintf(n1, sizeof n1, "%s: trains", name);
  check(dd.st == AD_OK && one.st == AD_OK, n1, why);
  snprintf(n1, sizeof n1, "%s: bit-identical parameters on every rank", name);
  check(same_bits_as_rank0(nn_model_params(dd.m)), n1, NULL);
  double rel = max_rel(nn_model_params(dd.m), nn_model_params(one.m));
  snprintf(why, sizeof why, "max relative difference %g > %g", rel, tol);
  snprintf(n1, sizeof n1, "%s: parameters equal one process's (rel %g)", name, tol);
  check(rel <= tol, n1, why);
  snprintf(n1, sizeof n1, "%s: the optimizer state is the same on every rank after nn_fit", name);
  check(dd.state_same, n1, NULL);
  /* and equals one process's (after the sync, which also gathers) */
  int ns = nn_optimizer_state_count(one.opt);
  rel =
      max_rel_tensors(nn_optimizer_state_tensors(dd.opt), nn_optimizer_state_tensors(one.opt), ns);
  snprintf(why, sizeof why, "sync %s, max relative difference %g > %g", ad_status_str(dd.sync_st),
           rel, tol);
  snprintf(n1, sizeof n1, "%s: optimizer state equals one process's after nn_dist_sync", name);
  check(dd.sync_st == AD_OK && rel <= tol, n1, why);
  bool sharded = base.shard_optimizer && expect_shm && size / expect_nodes > 1;
  snprintf(why, sizeof why, "%lld sharded steps of %lld", (long long)dd.stats.sharded_steps,
           (long long)dd.stats.steps);
  snprintf(n1, sizeof n1, "%s: the optimizer steps are %s", name,
           sharded ? "sharded" : "not sharded");
  check(sharded ? dd.stats.sharded_steps == dd.stats.steps && dd.stats.steps > 0
                : dd.stats.sharded_steps == 0,
        n1, why);
  snprintf(n1, sizeof n1, "%s: the parameters are %s", name,
           sharded ? "one copy per node" : "each rank's own");
  check(dd.stats.shared_params == sharded, n1, NULL);
  double l1 = nn_history_get(one.h, "loss", 2), l2 = nn_history_get(dd.h, "loss", 2);
  double a1 = nn_history_get(one.h, "accuracy", 2), a2 = nn_history_get(dd.h, "accuracy", 2);
  snprintf(why, sizeof why, "loss %.17g vs %.17g, accuracy %g vs %g", l2, l1, a2, a1);
  snprintf(n1, sizeof n1, "%s: epoch loss and accuracy are over every rank's rows", name);
  check(close_to(l2, l1, tol * fabs(l1)) && a1 == a2, n1, why);
  snprintf(why, sizeof why, "shared memory %d on %d node(s), expected %d on %d",
           dd.stats.shared_memory, dd.stats.nodes, expect_shm, expect_nodes);
  snprintf(n1, sizeof n1, "%s: the reduction takes the expected path (%s, %d node(s))", name,
           expect_shm ? "shared memory" : "MPI collectives", expect_nodes);
  check(dd.stats.shared_memory == expect_shm && dd.stats.nodes == expect_nodes, n1, why);
  if (bucket && bucket < 1000 && size > 1) { /* several buckets, some launched in backward */
    snprintf(why, sizeof why, "%lld buckets, %lld launched from the hook in %lld steps",
             (long long)dd.stats.buckets, (long long)dd.stats.overlapped,
             (long long)dd.stats.steps);
    snprintf(n1, sizeof n1, "%s: buckets are launched from the backward hook", name);
    check(dd.stats.buckets == 4 && dd.stats.overlapped > 0 && dd.stats.steps == 12, n1, why);
  }
  run_free(&one);
  run_free(&dd);
}

/* Tied weights (a tensor listed twice, and used twice) train as in one
 * process, on every path: the reduction, the sharded optimizer step and
 * the shared parameters take the tensor once. Before, on a node of several
 * ranks, its gradient was bound and packed at both places (a bucket could
 * be summed while the backward still wrote it) and the sharded step took
 * its slices twice: wrong parameters, other bits on each rank. */
static void tied_weights(ad_ctx *c) {
  for (int several = 0; several < 2; several++) {
    nn_dist_opts o = {.bucket_bytes = several ? 8 : 0};
    run one = train(c, AD_F64, TIED, true, 50, 16, 3, NULL, false);
    run dd = train(c, AD_F64, TIED, true, 50, 16, 3, &o, true);
    double rel = max_rel(nn_model_params(dd.m), nn_model_params(one.m));
    int ns = nn_optimizer_state_count(one.opt);
    double srel = max_rel_tensors(nn_optimizer_state_tensors(dd.opt),
                                  nn_optimizer_state_tensors(one.opt), ns);
    bool sharded = base.shard_optimizer && expect_shm && size / expect_nodes > 1;
    snprintf(why, sizeof why,
             "status %s (%s), parameters rel %g, state rel %g (sync %s), %lld sharded steps of "
             "%lld, %lld buckets",
             ad_status_str(dd.st), ad_last_error(c), rel, srel, ad_status_str(dd.sync_st),
             (long long)dd.stats.sharded_steps, (long long)dd.stats.steps,
             (long long)dd.stats.buckets);
    bool ok = dd.st == AD_OK && one.st == AD_OK && rel <= 1e-12 && dd.sync_st == AD_OK &&
              srel <= 1e-12 && dd.state_same && same_bits_as_rank0(nn_model_params(dd.m)) &&
              (sharded ? dd.stats.sharded_steps == dd.stats.steps : dd.stats.sharded_steps == 0) &&
              (size == 1 || dd.stats.buckets == (several ? 2 : 1));
    check(ok,
          several ? "tied weights equal one process, bit-identical on every rank (a bucket each)"
                  : "tied weights equal one process, bit-identical on every rank (one bucket)",
          why);
    run_free(&one);
    run_free(&dd);
  }
}

/* An optimizer that clips the gradients in place (clip_value, then
 * clip_norm small enough to scale every step) equals one process: on the
 * shared-memory path the reduced gradients are one buffer per node, so
 * each rank clips a private copy; with private_gradients each has its own
 * from the start. */
static void clipping(ad_ctx *c) {
  nn_opt_config cfg = nn_opt_defaults(NN_OPT_ADAM, 0.01);
  cfg.clip_value = 0.05;
  cfg.clip_norm = 0.02;
  train_cfg = &cfg;
  for (int priv = 0; priv < 2; priv++) {
    nn_dist_opts o = {.bucket_bytes = 8, .private_gradients = priv};
    run one = train(c, AD_F64, PLAIN, true, 50, 16, 3, NULL, false);
    run dd = train(c, AD_F64, PLAIN, true, 50, 16, 3, &o, true);
    double rel = max_rel(nn_model_params(dd.m), nn_model_params(one.m));
    snprintf(why, sizeof why, "status %s, max relative difference %g", ad_status_str(dd.st), rel);
    check(dd.st == AD_OK && rel <= 1e-12 && same_bits_as_rank0(nn_model_params(dd.m)),
          priv ? "an optimizer that clips equals one process (private_gradients)"
               : "an optimizer that clips equals one process (gradients shared on a node)",
          why);
    run_free(&one);
    run_free(&dd);
  }
  train_cfg = NULL;
}

static void deterministic(ad_ctx *c) {
  nn_dist_opts o = {.deterministic = true, .bucket_bytes = 100};
  run a = train(c, AD_F32, PLAIN, true, 50, 16, 2, &o, true);
  run b = train(c, AD_F32, PLAIN, true, 50, 16, 2, &o, true);
  run one = train(c, AD_F32, PLAIN, true, 50, 16, 2, NULL, false);
  check(a.st == AD_OK && b.st == AD_OK, "deterministic: trains", ad_last_error(c));
  /* one node: the shared-memory sum is in rank order; across nodes the
   * mode gathers with MPI instead of an allreduce between nodes */
  bool want = expect_shm && expect_nodes == 1;
  snprintf(why, sizeof why, "shared memory %d, expected %d", a.stats.shared_memory, want);
  check(a.stats.shared_memory == want,
        want ? "deterministic: one node sums through shared memory"
             : "deterministic: several nodes (or no shared memory) gather with MPI",
        why);
  bool same = true;
  for (int i = 0; i < nn_params_count(nn_model_params(a.m)); i++) {
    ad_tensor *s = nn_params_tensor(nn_model_params(a.m), i);
    ad_tensor *t = nn_params_tensor(nn_model_params(b.m), i);
    same &= memcmp(s->data, t->data, (size_t)s->size * 4) == 0;
  }
  check(same, "deterministic: two runs give identical bits", NULL);
  check(same_bits_as_rank0(nn_model_params(a.m)), "deterministic: identical bits on every rank",
        NULL);
  double rel = max_rel(nn_model_params(a.m), nn_model_params(one.m));
  snprintf(why, sizeof why, "max relative difference %g", rel);
  check(rel <= 1e-5, "deterministic: f32 parameters equal one process's (1e-5)", why);
  run_free(&a);
  run_free(&b);
  run_free(&one);
}

/* One node's shared-memory sums give the bits of the deterministic MPI
 * path (gathered, summed in rank order from rank 0's term): each rounds
 * every rank's scaled gradient, then each partial sum, once; none contracts
 * into FMA in the vectorised clone this CPU runs. Both shared-memory sums:
 * the zero-copy one (scaled as it sums) and, with private_gradients, the
 * one over gradients each rank scaled as it packed them. In f32 and f64,
 * with batches of 16 (shares that are floats: 1/2 and 1/4, exact products,
 * in two and four ranks; 5/16 and 6/16 in three) and of 7 (3/7 and 4/7;
 * 2/7 and 3/7; 1/7 and 2/7: not floats), and a hidden layer of 10000 so
 * that the one bucket (80003 parameters) spans several of the claimed
 * chunks of the zero-copy sum and each rank's slice of the other sum
 * several of its blocks. Twice more with buckets of 64 KiB: then the
 * first bucket (2 chunks in f32) is summed in the backward's hooks, where
 * each rank sums its share, and the second (4) in grad_end. */
static void paths_same_bits(ad_ctx *c) {
  if (size < 2 || !expect_shm || expect_nodes != 1 || base.no_shm) return;
  train_hidden = 10000;
  nn_dist_opts mpi_o = {.deterministic = true, .no_shm = true};
  for (int k = 0; k < 10; k++) {
    ad_dtype dt = (k < 8 ? k % 4 < 2 : k == 8) ? AD_F32 : AD_F64;
    int64_t bs = k % 2 ? 7 : 16;
    bool priv = k >= 4 && k < 8;
    nn_dist_opts shm_o = {
        .deterministic = true, .private_gradients = priv, .bucket_bytes = k >= 8 ? 65536 : 0};
    /* under ASan (and under an emulated CPU: --sums-only) one epoch: its
     * steps take every path the second's do (the first step, a full and a
     * partial batch, the buckets and the shared windows used again); the
     * 10000-wide model's training was 70% of the -np 2 run under ASan */
    int epochs = MPI_SANITIZED || sums_only ? 1 : 2;
    run a = train(c, dt, PLAIN, true, 50, bs, epochs, &shm_o, true);
    run b = train(c, dt, PLAIN, true, 50, bs, epochs, &mpi_o, true);
    bool same = a.st == AD_OK && b.st == AD_OK && a.stats.shared_memory && !b.stats.shared_memory;
    nn_params *pa = nn_model_params(a.m), *pb = nn_model_params(b.m);
    int differs = -1;
    for (int i = 0; same && i < nn_params_count(pa); i++) {
      ad_tensor *s = nn_params_tensor(pa, i), *t = nn_params_tensor(pb, i);
      if (memcmp(s->data, t->data, (size_t)s->size * ad_dtype_size(dt)) != 0) differs = i;
      same = differs < 0;
    }
    char n1[200];
    snprintf(why, sizeof why, "status %s / %s, shared memory %d / %d, first parameter differing %d",
             ad_status_str(a.st), ad_status_str(b.st), a.stats.shared_memory, b.stats.shared_memory,
             differs);
    snprintf(n1, sizeof n1, "%s, batch %lld: the shared-memory sum%s gives the MPI path's bits",
             dt == AD_F32 ? "f32" : "f64", (long long)bs,
             priv     ? " (private gradients)"
             : k >= 8 ? " (zero-copy, 64 KiB buckets)"
                      : " (zero-copy)");
    check(same, n1, why);
    run_free(&a);
    run_free(&b);
  }
  train_hidden = 8;
}

/* TIES' forward: x A, tanh, times B, tanh, times the list's entry "C" (A
 * or B), tanh, times "out". */
static ad_tensor *ties_forward(nn_model *m, ad_tensor *x, void *ud) {
  (void)ud;
  ad_ctx *c = nn_model_ctx(m);
  ad_tensor *h = ad_tanh(c, ad_matmul(c, x, nn_model_param(m, "A"), false, false));
  h = ad_tanh(c, ad_matmul(c, h, nn_model_param(m, "B"), false, false));
  h = ad_tanh(c, ad_matmul(c, h, nn_model_param(m, "C"), false, false));
  return ad_matmul(c, h, nn_model_param(m, "out"), false, false);
}

/* Lists that tie other entries: [A, B, A, out] on every rank but the last,
 * [A, B, B, out] there (same names, dtypes and shapes). Their models
 * compute other functions; the start-up check passed them, and the
 * broadcast by entry gave the last rank's B rank 0's A. Now nn_fit fails
 * on every rank before a step, naming the entry; so does a step driven
 * without nn_dist_sync (the layouts' check), on every rank, without a
 * wait. */
static void ties_differ(ad_ctx *c) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 24, &x, &y);
  for (int k = 0; k < 2; k++) { /* 0: nn_fit, 1: the ops without sync */
    ad_rng r;
    ad_rng_seed(&r, 5);
    nn_model *m = nn_model_new(c, ties_forward, NULL);
    int64_t s4[2] = {4, 4}, s3[2] = {4, 3};
    nn_init xav = {.kind = NN_INIT_XAVIER_UNIFORM};
    ad_tensor *A = nn_model_add_param(m, "A", AD_F64, 2, s4, xav, &r);
    ad_tensor *B = nn_model_add_param(m, "B", AD_F64, 2, s4, xav, &r);
    nn_params_add(nn_model_params(m), "C", rank == size - 1 ? B : A, false);
    nn_model_add_param(m, "out", AD_F64, 2, s3, xav, &r);
    nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
    nn_dist *d = dist_new(c, NULL);
    ad_status st;
    if (k == 0) {
      nn_fit_opts fo = {.epochs = 1, .batch_size = 12, .verbose = -1, .dist = nn_dist_fit_ops(d)};
      st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
    } else {
      st = ops_step_rows(nn_dist_fit_ops(d), m, x, y, 12 * rank / size, 12 * (rank + 1) / size, 12,
                         false);
    }
    char want[300];
    snprintf(want, sizeof want,
             "dist: %srank %d differs from rank 0: parameter 2 'C' f64 [4,4] tied to parameter 1 "
             "on rank %d, parameter 2 'C' f64 [4,4] tied to parameter 0 on rank 0",
             k ? "the ranks' gradient buckets differ: " : "", size - 1, size - 1);
    snprintf(why, sizeof why, "case %d: status %s, %lld steps, message: %s", k, ad_status_str(st),
             (long long)nn_optimizer_steps(opt), ad_last_error(c));
    check(st == AD_ERR_SHAPE && nn_optimizer_steps(opt) == 0 &&
              strncmp(ad_last_error(c), want, strlen(want)) == 0,
          k ? "lists that tie other entries: a step without sync fails on every rank"
            : "lists that tie other entries: every rank gets the first difference",
          why);
    ad_clear_error(c);
    ad_tape_reset(c);
    nn_dist_free(d);
    nn_optimizer_free(opt);
    nn_model_free(m);
  }
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* An allocator whose new blocks hold 'Z's, not the zeros fresh pages
 * give: a string left unterminated in one reads as Zs and what follows. */
static void *z_alloc(void *ud, void *p, size_t os, size_t ns) {
  (void)ud;
  if (ns == 0) {
    free(p);
    return NULL;
  }
  void *q = aligned_alloc(64, (ns + 63) / 64 * 64);
  if (!q) return NULL;
  memset(q, 'Z', ns);
  if (p) memcpy(q, p, os < ns ? os : ns);
  free(p);
  return q;
}

/* A step without nn_dist_sync where one rank passes an empty list (k = 0:
 * the last rank, 1: rank 0) and the others one parameter: the layouts'
 * check names "(none)" for the empty list's line, as nn_dist_sync would;
 * its description was an unterminated block, read past its end. */
static void empty_list_differs(void) {
  ad_ctx *c = ad_ctx_new_with_alloc(z_alloc, NULL);
  for (int k = 0; k < 2; k++) {
    int empty = k == 0 ? size - 1 : 0, other = k == 0 ? 0 : 1;
    nn_dist *d = dist_new(c, NULL);
    const nn_dist_ops *ops = nn_dist_fit_ops(d);
    nn_params *p = nn_params_new(c);
    int64_t s3[1] = {3};
    if (rank != empty) nn_params_add(p, "a", ad_zeros(c, AD_F64, 1, s3), true);
    ad_status st = ops->grad_begin(ops->ud, p, NULL, 0, 0);
    st = ops->grad_end(ops->ud, p, st);
    const char *line = "parameter 0 'a' f64 [3]";
    char want[300];
    snprintf(want, sizeof want,
             "dist: the ranks' gradient buckets differ: rank %d differs from rank 0: %s on rank "
             "%d, %s on rank 0",
             k == 0 ? empty : other, k == 0 ? "(none)" : line, k == 0 ? empty : other,
             k == 0 ? line : "(none)");
    snprintf(why, sizeof why, "case %d: status %s, message: %s", k, ad_status_str(st),
             ad_last_error(c));
    check(st == AD_ERR_SHAPE && strncmp(ad_last_error(c), want, strlen(want)) == 0,
          k == 0 ? "a step over an empty list on the last rank names it on every rank"
                 : "a step over an empty list on rank 0 names it on every rank",
          why);
    ad_clear_error(c);
    nn_params_free(p);
    nn_dist_free(d);
  }
  ad_ctx_free(c);
}

/* The last rank builds a wider hidden layer: every rank fails, naming it. */
static void mismatch(ad_ctx *c) {
  nn_model *m = make_model(c, AD_F64, rank == size - 1 ? 9 : 8, PLAIN, 5);
  nn_dist *d = dist_new(c, NULL);
  ad_status st = nn_dist_sync(d, m, NULL);
  char want[200];
  snprintf(want, sizeof want,
           "dist: rank %d differs from rank 0: parameter 0 '0.weight' f64 [9,4] on rank %d, "
           "parameter 0 '0.weight' f64 [8,4] on rank 0",
           size - 1, size - 1);
  snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(st), ad_last_error(c));
  check(st == AD_ERR_SHAPE && strcmp(ad_last_error(c), want) == 0,
        "mismatched models: every rank gets the first difference", why);
  ad_clear_error(c);
  nn_dist_free(d);
  nn_model_free(m);
  /* an optimizer on one rank only */
  m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = rank == 0 ? nn_adam_new(nn_model_params(m), 0.1) : NULL;
  d = dist_new(c, NULL);
  st = nn_dist_sync(d, m, opt);
  snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(st), ad_last_error(c));
  check(st == AD_ERR_SHAPE && strstr(ad_last_error(c), "rank 1 differs from rank 0") &&
            strstr(ad_last_error(c), "optimizer state tensors"),
        "mismatched optimizers: every rank names the counts", why);
  ad_clear_error(c);
  nn_dist_free(d);
  nn_optimizer_free(opt);
  nn_model_free(m);
  /* a parameter frozen on the last rank only: it took only the other
   * ranks' gradient there, and the ranks' copies drifted apart */
  ad_tensor *x, *y;
  make_data(c, AD_F64, 24, &x, &y);
  m = make_model(c, AD_F64, 8, PLAIN, 5);
  opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  if (rank == size - 1)
    ad_tensor_set_requires_grad(nn_params_tensors(nn_model_params(m))[2], false);
  d = dist_new(c, NULL);
  nn_fit_opts fo = {.epochs = 1, .batch_size = 12, .verbose = -1, .dist = nn_dist_fit_ops(d)};
  st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  snprintf(want, sizeof want,
           "dist: rank %d differs from rank 0: parameter 2 '1.weight' f64 [3,8] frozen on rank %d, "
           "parameter 2 '1.weight' f64 [3,8] on rank 0",
           size - 1, size - 1);
  snprintf(why, sizeof why, "status %s, %lld steps, message: %s", ad_status_str(st),
           (long long)nn_optimizer_steps(opt), ad_last_error(c));
  check(st == AD_ERR_SHAPE && nn_optimizer_steps(opt) == 0 && strcmp(ad_last_error(c), want) == 0,
        "a parameter frozen on one rank only: every rank gets the difference", why);
  ad_clear_error(c);
  nn_dist_free(d);
  nn_optimizer_free(opt);
  nn_model_free(m);
  /* optimizers whose settings differ on the last rank (the state, which
   * rank 0 sends, is alike): each rank stepped with its own, and the
   * copies drifted apart; so with a schedule on one rank only */
  /* (k 2: milestones that differ on the last rank; k 3: a plateau there
   * only; k 4: maximize there only; k 5: NAdam's momentum_decay, which
   * nn_opt_config_ext holds, differing there; k 6: Rprop's etaplus, also
   * there; k 7: a onecycle's total_steps, which nn_schedule_ext2 holds,
   * differing there; k 8: a cosine_restarts' t_mult, also there; k 9: a
   * sequential's second child's gamma, also there; k 10: a cyclic's
   * step_size_up, also there) */
  for (int k = 0; k < 11; k++) {
    bool last = rank == size - 1;
    m = make_model(c, AD_F64, 8, PLAIN, 5);
    nn_opt_config_ext oc = nn_opt_defaults_ext(k == 5   ? NN_OPT_NADAM
                                               : k == 6 ? NN_OPT_RPROP
                                                        : NN_OPT_SGD,
                                               0.1);
    oc.base.momentum = k == 5 || k == 6 ? 0 : k == 0 && last ? 0.5 : 0.9;
    oc.base.maximize = k == 4 && last;
    if (k == 5 && last) oc.momentum_decay = 5e-3;
    if (k == 6 && last) oc.etaplus = 1.3;
    opt = nn_optimizer_new_ext(nn_model_params(m), &oc);
    nn_schedule sched = {.kind = NN_SCHED_STEP, .step_size = 2, .gamma = 0.5};
    if (k == 1 && last) nn_optimizer_set_schedule(opt, &sched);
    int64_t miles[2] = {3, last ? 6 : 5};
    nn_schedule_ext multi = {
        .kind = NN_SCHED_MULTISTEP, .gamma = 0.5, .milestones = miles, .n_milestones = 2};
    nn_plateau plateau = nn_plateau_defaults();
    bool set = k != 2 || nn_optimizer_set_schedule_ext(opt, &multi) == AD_OK;
    set = set && (k != 3 || !last || nn_optimizer_set_plateau(opt, &plateau) == AD_OK);
    nn_schedule_ext2 oc2 = nn_schedule_ext2_defaults(NN_SCHED_ONECYCLE);
    oc2.max_lr = 0.1, oc2.total_steps = last ? 200 : 100;
    nn_schedule_ext2 wr = nn_schedule_ext2_defaults(NN_SCHED_COSINE_RESTARTS);
    wr.t_0 = 3, wr.t_mult = last ? 3 : 2;
    set = set && (k != 7 || nn_optimizer_set_schedule_ext2(opt, &oc2) == AD_OK);
    set = set && (k != 8 || nn_optimizer_set_schedule_ext2(opt, &wr) == AD_OK);
    nn_schedule_ext2 kids[2] = {nn_schedule_ext2_defaults(NN_SCHED_EXPONENTIAL),
                                nn_schedule_ext2_defaults(NN_SCHED_EXPONENTIAL)};
    kids[0].gamma = 0.9, kids[1].gamma = last ? 0.75 : 0.5;
    nn_schedule_ext2 seq = nn_schedule_ext2_defaults(NN_SCHED_SEQUENTIAL);
    int64_t sw[1] = {4};
    seq.schedulers = kids, seq.n_schedulers = 2, seq.milestones = sw, seq.n_milestones = 1;
    nn_schedule_ext2 cy = nn_schedule_ext2_defaults(NN_SCHED_CYCLIC);
    cy.base_lr = 0.01, cy.max_lr = 0.1, cy.step_size_up = last ? 7 : 5;
    set = set && (k != 9 || nn_optimizer_set_schedule_ext2(opt, &seq) == AD_OK);
    set = set && (k != 10 || nn_optimizer_set_schedule_ext2(opt, &cy) == AD_OK);
    check(set, "the schedule and plateau attached", ad_last_error(c)); /* on every rank */
    d = dist_new(c, NULL);
    fo = (nn_fit_opts){.epochs = 1, .batch_size = 12, .verbose = -1, .dist = nn_dist_fit_ops(d)};
    st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
    char head[64];
    snprintf(head, sizeof head, "dist: rank %d differs from rank 0: ", size - 1);
    snprintf(want, sizeof want, "%s%s", k < 4 ? head : "",
             k == 0   ? "optimizer settings: momentum 0.5, dampening 0, nesterov 0"
             : k == 1 ? "learning-rate schedule: kind 1, step_size 2, gamma 0.5, t_max 0"
             : k == 2 ? "schedule's start_factor 0, end_factor 0, total_iters 0, milestones 3 6 "
                        "on rank"
             : k == 3 ? "plateau: mode 1, factor 0.1, patience 10, threshold 0.0001"
             : k == 4 ? "maximize 1, momentum_decay 0"
             : k == 5 ? "momentum_decay 0.005"
             : k == 6 ? "etas 0.5 1.3, step_sizes"
             : k == 7 ? "total_steps 200"
             : k == 8 ? "t_mult 3"
             : k == 9 ? "gamma 0.75"
                      : "step_sizes 7 0");
    snprintf(why, sizeof why, "case %d: status %s, %lld steps, message: %s", k, ad_status_str(st),
             (long long)nn_optimizer_steps(opt), ad_last_error(c));
    /* (k 4 to 8: the difference ends a long line, which the message shows
     * from near it: this rank's value is in it) */
    check(st == AD_ERR_SHAPE && nn_optimizer_steps(opt) == 0 &&
              (k < 4 ? strncmp(ad_last_error(c), want, strlen(want)) == 0
                     : strstr(ad_last_error(c), want) != NULL),
          k == 0   ? "optimizer settings differ on one rank: every rank gets the difference"
          : k == 1 ? "a schedule on one rank only: every rank gets the difference"
          : k == 2 ? "milestones that differ on one rank: every rank gets the difference"
          : k == 3 ? "a plateau on one rank only: every rank gets the difference"
          : k == 4 ? "maximize on one rank only: every rank gets the difference"
          : k == 5 ? "NAdam's momentum_decay differs on one rank: every rank gets the difference"
          : k == 6 ? "Rprop's etaplus differs on one rank: every rank gets the difference"
          : k == 7 ? "a onecycle's total_steps differs on one rank: every rank gets the difference"
          : k == 8 ? "a cosine_restarts' t_mult differs on one rank: every rank gets the difference"
          : k == 9
              ? "a sequential's child's gamma differs on one rank: every rank gets the difference"
              : "a cyclic's step_size_up differs on one rank: every rank gets the difference",
          why);
    ad_clear_error(c);
    nn_dist_free(d);
    nn_optimizer_free(opt);
    nn_model_free(m);
  }
  /* 150 milestones, the last different on the last rank: the line is
   * longer than the message, which shows it from near the difference, with
   * both ranks' values */
  if (size > 1) {
    bool last = rank == size - 1;
    m = make_model(c, AD_F64, 8, PLAIN, 5);
    opt = nn_sgd_new(nn_model_params(m), 0.1, 0.9, false, 0);
    int64_t miles[150];
    for (int i = 0; i < 150; i++) miles[i] = 1000 + i;
    if (last) miles[149] = 7777;
    nn_schedule_ext multi = {
        .kind = NN_SCHED_MULTISTEP, .gamma = 0.5, .milestones = miles, .n_milestones = 150};
    check(nn_optimizer_set_schedule_ext(opt, &multi) == AD_OK, "150 milestones attached",
          ad_last_error(c));
    d = dist_new(c, NULL);
    fo = (nn_fit_opts){.epochs = 1, .batch_size = 12, .verbose = -1, .dist = nn_dist_fit_ops(d)};
    st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
    snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(st), ad_last_error(c));
    check(st == AD_ERR_SHAPE && strstr(ad_last_error(c), " 1148 7777 on rank") &&
              strstr(ad_last_error(c), " 1148 1149 on rank 0"),
          "many milestones that differ at the end: the message shows where", why);
    ad_clear_error(c);
    nn_dist_free(d);
    nn_optimizer_free(opt);
    nn_model_free(m);
  }
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* Different initial values: rank 0's are broadcast. */
static void broadcast_start(ad_ctx *c) {
  nn_model *m = make_model(c, AD_F32, 8, BATCHNORM, 5 + (uint64_t)rank);
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.1);
  nn_dist *d = dist_new(c, NULL);
  ad_status st = nn_dist_sync(d, m, opt);
  nn_model *ref = make_model(c, AD_F32, 8, BATCHNORM, 5);
  double rel = max_rel(nn_model_params(m), nn_model_params(ref));
  check(st == AD_OK && rel == 0, "start-up: every rank takes rank 0's parameters", NULL);
  nn_dist_free(d);
  nn_optimizer_free(opt);
  nn_model_free(m);
  nn_model_free(ref);
}

static void sums(ad_ctx *c) {
  nn_dist_opts o = {.deterministic = true};
  nn_dist *d = dist_new(c, NULL), *det = dist_new(c, &o);
  double v[2] = {rank, 1}, w[2] = {0.5, rank};
  ad_status st = nn_dist_sum(d, v, 2), st2 = nn_dist_sum(det, w, 2);
  double ranks = size * (size - 1) / 2.0;
  check(st == AD_OK && st2 == AD_OK && v[0] == ranks && v[1] == size && w[0] == 0.5 * size &&
            w[1] == ranks,
        "nn_dist_sum sums over the ranks (also deterministic)", NULL);
  if (size == 1) { /* a NULL on rank 1 needs a rank 1 */
    nn_dist_free(d);
    nn_dist_free(det);
    return;
  }
  st = nn_dist_sum(d, rank == 1 ? NULL : v, 2);
  snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(st), ad_last_error(c));
  check(st == AD_ERR_NULL && strstr(ad_last_error(c), "dist_sum: v is NULL") &&
            (rank == 1 || strstr(ad_last_error(c), "dist: rank 1 failed: ")),
        "nn_dist_sum with a NULL array on one rank fails on every rank", why);
  ad_clear_error(c);
  /* a length that differs on one rank (also 0, also in rank order): every
   * rank fails, none waits in a sum the others never join, v is kept */
  for (int k = 0; k < 4; k++) {
    nn_dist *dd = k & 1 ? det : d;
    int mine = rank == 1 ? (k < 2 ? 1 : 0) : 2;
    v[0] = 7, v[1] = 8;
    st = nn_dist_sum(dd, v, mine);
    snprintf(why, sizeof why, "case %d: status %s, message: %s", k, ad_status_str(st),
             ad_last_error(c));
    check(st == AD_ERR_SHAPE && strstr(ad_last_error(c), "the ranks pass different n (from ") &&
              v[0] == 7 && v[1] == 8,
          "nn_dist_sum with another n on one rank fails on every rank", why);
    ad_clear_error(c);
  }
  st = nn_dist_sum(d, rank == 1 ? v : NULL, rank == 1 ? -1 : 0);
  snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(st), ad_last_error(c));
  check(st == AD_ERR_ARG && strstr(ad_last_error(c), "dist_sum: n is -1") &&
            (rank == 1 || strstr(ad_last_error(c), "dist: rank 1 failed: ")),
        "nn_dist_sum with a negative n on one rank fails on every rank", why);
  ad_clear_error(c);
  st = nn_dist_sum(det, NULL, 0);
  check(st == AD_OK, "nn_dist_sum of 0 values on every rank sums nothing", ad_last_error(c));
  nn_dist_free(d);
  nn_dist_free(det);
}

/* A parameter used by 12 ops joined by one 12-input stack (an unrolled
 * RNN's steps): its bucket must wait for all 12 contributions (the walk
 * that counts uses once stopped at the 8th input, and the reduction then
 * sent a partial sum). Each rank's dW is 12 per element; scaled by 1 /
 * size and summed, the reduced one is 12 too, with and without overlap. */
static void wide_variadic_op(ad_ctx *c) {
  for (int overlap = 0; overlap < 2; overlap++) {
    nn_dist_opts o = {.no_overlap = !overlap};
    nn_dist *d = dist_new(c, &o);
    const nn_dist_ops *ops = nn_dist_fit_ops(d);
    int64_t s[1] = {2};
    ad_tensor *W = ad_ones(c, AD_F64, 1, s);
    ad_tensor_set_requires_grad(W, true);
    nn_params *p = nn_params_new(c);
    nn_params_add(p, "W", W, false);
    enum { T = 12 };
    ad_tensor *ys[T];
    for (int t = 0; t < T; t++) ys[t] = ad_mul_scalar(c, W, 1.0);
    ad_tensor *loss = ad_sum(c, ad_stack(c, T, ys, 0));
    ad_status st = ops->grad_begin(ops->ud, p, loss, 1, size);
    if (st == AD_OK) st = ad_backward(c, loss, NULL);
    st = ops->grad_end(ops->ud, p, st);
    double g0 = W->grad ? ((double *)W->grad->data)[0] : NAN;
    double g1 = W->grad ? ((double *)W->grad->data)[1] : NAN;
    snprintf(why, sizeof why, "status %s, dW = [%g %g]", ad_status_str(st), g0, g1);
    check(st == AD_OK && near(g0, 12) && near(g1, 12),
          overlap ? "a 12-input op's parameter is reduced whole (overlap)"
                  : "a 12-input op's parameter is reduced whole (no overlap)",
          why);
    ad_tape_reset(c);
    nn_params_free(p);
    ad_tensor_free(W);
    nn_dist_free(d);
  }
}

/* The last rank runs out of memory inside backward (its first gradient
 * allocation is refused: a leaf outside the parameters, U, whose gradient
 * the engine allocates also where the parameters' gradients live in the
 * shared window) while the others reduce: every rank still reaches
 * the status exchange (the failed rank packs zeros for what it lacks), and
 * every rank returns its error, the others with its message; nothing
 * waits for ever. Then a good step on the same buckets works. */
static void failure_inside_backward(ad_ctx *c) {
  for (int overlap = 0; overlap < 2; overlap++) {
    nn_dist_opts o = {.no_overlap = !overlap, .bucket_bytes = 8};
    nn_dist *d = dist_new(c, &o);
    const nn_dist_ops *ops = nn_dist_fit_ops(d);
    int64_t s[1] = {5};
    ad_tensor *W = ad_ones(c, AD_F32, 1, s), *V = ad_ones(c, AD_F32, 1, s);
    ad_tensor *U = ad_ones(c, AD_F32, 1, s);
    ad_tensor_set_requires_grad(W, true);
    ad_tensor_set_requires_grad(V, true);
    ad_tensor_set_requires_grad(U, true);
    nn_params *p = nn_params_new(c);
    nn_params_add(p, "W", W, false);
    nn_params_add(p, "V", V, false);
    ad_status st[2];
    double gw = NAN, gv = NAN;
    for (int step = 0; step < 2; step++) {
      ad_tensor *loss = ad_add(c, ad_sum(c, ad_mul(c, ad_mul_scalar(c, W, 2.0), V)),
                               ad_sum(c, ad_mul_scalar(c, U, 0.0)));
      st[step] = ops->grad_begin(ops->ud, p, loss, 1, size);
      if (step == 0 && rank == size - 1) fail_in = 1;
      if (st[step] == AD_OK) st[step] = ad_backward(c, loss, NULL);
      fail_in = 0;
      st[step] = ops->grad_end(ops->ud, p, st[step]);
      if (step == 0) {
        char want[64];
        snprintf(want, sizeof want, "dist: rank %d stopped: ", size - 1);
        snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(st[0]), ad_last_error(c));
        check(st[0] == AD_ERR_OOM && (rank == size - 1 || strstr(ad_last_error(c), want)),
              overlap ? "a rank failing inside backward stops every rank (overlap)"
                      : "a rank failing inside backward stops every rank (no overlap)",
              why);
        ad_clear_error(c);
      }
      if (step == 1) { /* dW = 2 V = 2, dV = 2 W = 2 on every rank, times 1 / size, summed */
        gw = W->grad ? ((float *)W->grad->data)[4] : NAN;
        gv = V->grad ? ((float *)V->grad->data)[0] : NAN;
      }
      ad_tape_reset(c);
      nn_params_zero_grad(p);
      ad_tensor_zero_grad(U);
    }
    snprintf(why, sizeof why, "status %s, dW %g, dV %g", ad_status_str(st[1]), gw, gv);
    check(st[1] == AD_OK && fabs(gw - 2) < 1e-6 && fabs(gv - 2) < 1e-6,
          "the next step after a failure inside backward reduces", why);
    nn_params_free(p);
    ad_tensor_free(W);
    ad_tensor_free(V);
    ad_tensor_free(U);
    nn_dist_free(d);
  }
}

/* One step of out_of_memory_anywhere on a fresh layout: rank `failer`
 * has its k-th allocation from here refused (k <= 0: none); with early, it
 * fails before grad_begin instead (its forward, say) while rank 0 has the
 * allocation refused. The last rank's loss does not use V, so grad_end
 * gives it a zero gradient where rank 0 has one. *used: the refusal
 * happened. */
static ad_status oom_step(ad_ctx *c, const nn_dist_ops *ops, nn_params *p, ad_tensor *W,
                          ad_tensor *V, int k, bool early, bool *used) {
  int failer = early ? 0 : size - 1;
  ad_tensor *w2 = ad_mul_scalar(c, W, 2.0);
  ad_tensor *loss =
      rank == size - 1 ? ad_sum(c, ad_mul_scalar(c, W, 3.0)) : ad_sum(c, ad_mul(c, w2, V));
  if (rank == failer) fail_in = k;
  ad_status st;
  if (early && rank == size - 1) {
    st = ops->grad_end(ops->ud, p, ad_set_error(c, AD_ERR_NAN, "the forward failed"));
  } else {
    st = loss ? ops->grad_begin(ops->ud, p, loss, 1, size) : AD_ERR_OOM;
    if (st == AD_OK) st = ad_backward(c, loss, NULL);
    st = ops->grad_end(ops->ud, p, st);
  }
  *used = rank == failer && k > 0 && fail_in == 0;
  fail_in = 0;
  ad_tape_reset(c);
  return st;
}

/* Out of memory at each allocation of a step in turn (building the
 * gradient buckets, the shared window's arrays, the deterministic mode's
 * buffers, the walk over the graph, the backward, zero gradients in
 * grad_end), on one rank, on a fresh layout (new parameters each time, one
 * nn_dist for each set of options): every rank ends the step with
 * the same status, the others with the failing rank's message; nothing
 * waits for ever; every byte nn_dist took comes back; and the next step on
 * the same nn_dist reduces correctly. Also with the failing rank's
 * allocations refused while another rank failed before grad_begin (so
 * that one builds the buckets in grad_end). These used to abort the job
 * (building the buckets, making zero gradients). */
static void out_of_memory_anywhere(ad_ctx *c) {
  const nn_dist_opts modes[3] = {{0},
                                 {.deterministic = true, .private_gradients = true},
                                 {.no_overlap = true, .bucket_bytes = 8}};
  const char *names[3] = {"", ", deterministic, private gradients", ", no overlap"};
  for (int early = 0; early < 2; early++)
    for (int m = 0; m < 3; m++) {
      if (early && size == 1) continue;
      bool ok = true;
      int refused = 0;
      char first[400] = "";
      nn_dist *d = dist_new(c, &modes[m]);
      ad_tensor *W = NULL, *V = NULL;
      nn_params *p = NULL;
      for (int k = -1; k < 400; k++) { /* -1 and 0: none refused */
        long long before = live_bytes;
        /* new parameters (a new layout) while the last ones still live, so
         * that none comes back at an address the layout knows */
        int64_t sh[1] = {5};
        ad_tensor *W1 = ad_ones(c, AD_F32, 1, sh), *V1 = ad_ones(c, AD_F32, 1, sh);
        ad_tensor_set_requires_grad(W1, true);
        ad_tensor_set_requires_grad(V1, true);
        nn_params *p1 = nn_params_new(c);
        nn_params_add(p1, "W", W1, false);
        nn_params_add(p1, "V", V1, false);
        nn_params_free(p);
        ad_tensor_free(W);
        ad_tensor_free(V);
        W = W1, V = V1, p = p1;
        bool used = false;
        ad_status st = oom_step(c, nn_dist_fit_ops(d), p, W, V, k, early, &used);
        char msg[160];
        snprintf(msg, sizeof msg, "%s", ad_last_error(c));
        /* every rank's status, whether the refusal happened anywhere */
        int v[4] = {(int)st, -(int)st, used, 0};
        MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        bool any = v[2] != 0, same = v[0] == -v[1];
        int root = early ? 0 : size - 1; /* whose message the others carry */
        char want[64];
        snprintf(want, sizeof want, "dist: rank %d ", root);
        /* dW = (2 (size - 1) + 3) / size, dV = 2 (size - 1) / size (none on
         * one rank alone) */
        double ew = (2.0 * (size - 1) + 3) / size, ev = size > 1 ? 2.0 * (size - 1) / size : NAN;
        double gw = W->grad ? ((float *)W->grad->data)[4] : NAN;
        double gv = V->grad ? ((float *)V->grad->data)[0] : NAN;
        bool grads = fabs(gw - ew) < 1e-6 && (size > 1 ? fabs(gv - ev) < 1e-6 : !V->grad);
        bool good = same;
        if (st == AD_OK) /* a refusal nn_dist absorbs (no overlap in that step) */
          good &= !early && grads;
        else if (st == AD_ERR_OOM)
          good &= any && (rank == root ? strstr(msg, "out of memory") : strstr(msg, want)) != NULL;
        else
          good &= early && st == AD_ERR_NAN && (rank == size - 1 || strstr(msg, "dist: rank "));
        ad_clear_error(c);
        nn_params_zero_grad(p);
        /* the next step on the same nn_dist */
        bool used2;
        ad_status st2 = oom_step(c, nn_dist_fit_ops(d), p, W, V, 0, false, &used2);
        gw = W->grad ? ((float *)W->grad->data)[4] : NAN;
        gv = V->grad ? ((float *)V->grad->data)[0] : NAN;
        good &=
            st2 == AD_OK && fabs(gw - ew) < 1e-6 && (size > 1 ? fabs(gv - ev) < 1e-6 : !V->grad);
        ad_tape_reset(c);
        good &= k < 1 || live_bytes == before; /* -1 and 0 warm the arena, settle the path */
        if (!good && ok)
          snprintf(first, sizeof first,
                   "allocation %d: status %s (%s), then %s dW %g dV %g; %lld bytes before, "
                   "%lld after",
                   k, ad_status_str(st), msg, ad_status_str(st2), gw, gv, before, live_bytes);
        ok &= good;
        ad_clear_error(c);
        if (k > 0 && !any) break; /* the step made fewer allocations */
        refused += k > 0;
      }
      nn_dist_free(d);
      nn_params_free(p);
      ad_tensor_free(W);
      ad_tensor_free(V);
      snprintf(why, sizeof why, "%d allocations refused in turn; first wrong: %s", refused,
               first[0] ? first : "(none)");
      char name[160];
      snprintf(
          name, sizeof name, "%s%s",
          early
              ? "a refused allocation while another rank failed before grad_begin stops every rank"
              : "a refused allocation anywhere in a step stops every rank, and the next step "
                "reduces",
          names[m]);
      check(ok && refused >= (size > 1 ? 8 : 1), name, why);
    }
}

/* Parameters freed and made again with other sizes and dtypes, in a list
 * made again: the engine reuses a freed tensor's header once 64 newer
 * ones wait behind it, and malloc the list's memory, so the new ones can
 * sit at the addresses the layout knows (here made to: 70 tensors freed
 * behind them, headers taken until the old ones come back, and the
 * allocator handing the list's block to the next list). The layout must
 * be built again for the new sizes; it once was taken as current and
 * packed 9 elements into room for 5. */
static void layout_after_params_replaced(ad_ctx *c) {
  nn_dist *d = dist_new(c, NULL);
  const nn_dist_ops *ops = nn_dist_fit_ops(d);
  bool ok = true;
  int same_place = 0;
  int64_t s1[1] = {1};
  ad_tensor *W = NULL, *V = NULL, *fill[70], *taken[400];
  nn_params *p = NULL;
  for (int round = 0; round < 3; round++) {
    ad_dtype dt = round == 2 ? AD_F64 : AD_F32;
    int64_t sw[1] = {5 + 4 * round}, sv[1] = {5 + 2 * round};
    void *old_p = p, *old_w = W, *old_v = V;
    int nt = 0;
    if (round > 0) {
      for (int i = 0; i < 70; i++) fill[i] = ad_zeros(c, AD_F32, 1, s1);
      ad_tape_reset(c);
      ad_tensor_free(W);
      ad_tensor_free(V);
      for (int i = 0; i < 70; i++) ad_tensor_free(fill[i]);
      W = V = NULL; /* (their gradients' headers wait between them) */
      while (nt < 399 && (W = ad_ones(c, dt, 1, sw)) && (void *)W != old_w) taken[nt++] = W;
      if ((void *)W != old_w) W = ad_ones(c, dt, 1, sw); /* (never came back: a check fails) */
      while (nt < 399 && (V = ad_ones(c, dt, 1, sv)) && (void *)V != old_v) taken[nt++] = V;
      if ((void *)V != old_v) V = ad_ones(c, dt, 1, sv);
      for (int i = 0; i < nt; i++) ad_tensor_free(taken[i]);
      parking = true; /* the list's own block is freed last: the next list's */
      nn_params_free(p);
      parking = false;
    } else {
      W = ad_ones(c, dt, 1, sw);
      V = ad_ones(c, dt, 1, sv);
    }
    ad_tensor_set_requires_grad(W, true);
    ad_tensor_set_requires_grad(V, true);
    p = nn_params_new(c);
    nn_params_add(p, "W", W, false);
    nn_params_add(p, "V", V, false);
    unpark();
    same_place += round > 0 && (void *)p == old_p && (void *)W == old_w && (void *)V == old_v;
    /* sum(2 W) + sum(3 V) on every rank: gradients 2 and 3 */
    ad_tensor *loss =
        ad_add(c, ad_sum(c, ad_mul_scalar(c, W, 2.0)), ad_sum(c, ad_mul_scalar(c, V, 3.0)));
    ad_status st = ops->grad_begin(ops->ud, p, loss, 1, size);
    if (st == AD_OK) st = ad_backward(c, loss, NULL);
    st = ops->grad_end(ops->ud, p, st);
    bool good = st == AD_OK && W->grad && V->grad;
    for (int64_t e = 0; good && e < W->size; e++) good &= near(ad_tensor_get(W->grad, e), 2);
    for (int64_t e = 0; good && e < V->size; e++) good &= near(ad_tensor_get(V->grad, e), 3);
    if (!good && ok)
      snprintf(why, sizeof why, "round %d: status %s (%s)", round, ad_status_str(st),
               ad_last_error(c));
    ok &= good;
  }
  if (ok) snprintf(why, sizeof why, "%d of 2 rounds at the old addresses", same_place);
  check(ok && same_place > 0, "parameters made again with other sizes get a new layout", why);
  ad_tape_reset(c);
  nn_params_free(p);
  ad_tensor_free(W);
  ad_tensor_free(V);
  nn_dist_free(d);
}

/* A sharded step driven by hand (shard_optimizer, Adam, 24 rows of which
 * each rank takes its own): its optimizer state is left in slices. */
typedef struct by_hand {
  ad_tensor *x, *y;
  nn_model *m;
  nn_optimizer *opt;
  nn_dist *d;
  const nn_dist_ops *ops;
  int64_t lo, hi; /* this rank's rows */
  ad_status st;
} by_hand;

static by_hand sharded_by_hand(ad_ctx *c) {
  nn_dist_opts o = {.shard_optimizer = true};
  own_shard = true;
  by_hand b;
  make_data(c, AD_F64, 24, &b.x, &b.y);
  b.m = make_model(c, AD_F64, 8, PLAIN, 5);
  b.opt = nn_adam_new(nn_model_params(b.m), 0.01);
  b.d = dist_new(c, &o);
  b.ops = nn_dist_fit_ops(b.d);
  b.lo = 24 * rank / size, b.hi = 24 * (rank + 1) / size;
  b.st = nn_dist_sync(b.d, b.m, b.opt);
  if (b.st == AD_OK) b.st = ops_step_rows(b.ops, b.m, b.x, b.y, b.lo, b.hi, 24, false);
  if (b.st == AD_OK) b.st = b.ops->step(b.ops->ud, b.opt);
  return b;
}

/* Frees what sharded_by_hand made but the model and optimizers, which the
 * tests free (or replace) themselves, first. */
static void by_hand_end(ad_ctx *c, by_hand *b) {
  ad_clear_error(c);
  nn_dist_free(b->d);
  ad_tape_reset(c);
  ad_tensor_free(b->x);
  ad_tensor_free(b->y);
  own_shard = false;
}

/* The same step in one process, on all of x's rows. */
static ad_status one_process_step(ad_ctx *c, nn_model *m, nn_optimizer *opt, ad_tensor *x,
                                  ad_tensor *y) {
  ad_tape_reset(c);
  nn_params_zero_grad(nn_model_params(m));
  ad_status st = ad_backward(c, nn_cross_entropy_loss(c, nn_model_forward(m, x), y, NN_MEAN), NULL);
  return st == AD_OK ? nn_optimizer_step(opt) : st;
}

/* A model freed, another of the same architecture made in its place (its
 * blocks at the freed one's addresses, its parameter list too) and
 * stepped through nn_dist_fit_ops without nn_dist_sync, with the sharded
 * optimizer: the parameters in the node's window were the freed model's,
 * so the step leaves the window and exchanges the updated slices. Before,
 * the list at the old address passed for the synced one: each rank
 * updated only its own slices of its own copy, and the ranks' parameters
 * differed after one step. The step equals one process's. */
static void model_made_again_in_place(ad_ctx *c) {
  by_hand b = sharded_by_hand(c);
  ad_tensor *x = b.x, *y = b.y;
  nn_model *m = b.m;
  nn_optimizer *opt = b.opt;
  nn_dist *d = b.d;
  const nn_dist_ops *ops = b.ops;
  int64_t lo = b.lo, hi = b.hi;
  ad_status st = b.st;
  nn_dist_stats stats;
  nn_dist_get_stats(d, &stats, false);
  void *old_list = nn_model_params(m), *old_opt = opt;
  parking = true; /* (their blocks poisoned: nothing may read them) */
  nn_optimizer_free(opt);
  nn_model_free(m);
  parking = false;
  /* the new model's parameter list at the freed one's address: lists are
   * made until that block comes back, which is then freed last, under
   * as many other lists' blocks as the new model's allocations of that
   * size take before its list (its own struct may be one) */
  nn_model *m2 = NULL;
  for (int decoys = 0; decoys < 4 && !m2; decoys++) {
    nn_params *lists[64], *back = NULL, *decoy[4];
    int nl = 0;
    while (nl < 64 && (back = nn_params_new(c)) && (void *)back != old_list) lists[nl++] = back;
    for (int k = 0; k < decoys; k++) decoy[k] = nn_params_new(c);
    parking = true;
    nn_params_free(back);
    for (int k = 0; k < decoys; k++) nn_params_free(decoy[k]);
    parking = false;
    m2 = make_model(c, AD_F64, 8, PLAIN, 6);
    for (int i = 0; i < nl; i++) nn_params_free(lists[i]);
    if (decoys < 3 && (void *)nn_model_params(m2) != old_list) { /* again, one more under it */
      parking = true;
      nn_model_free(m2);
      parking = false;
      m2 = NULL;
    }
  }
  int same_place = (void *)nn_model_params(m2) == old_list;
  MPI_Allreduce(MPI_IN_PLACE, &same_place, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  /* the new layout is built while the freed optimizer's blocks are still
   * poisoned (its sharded state, once gathered there, read them) */
  if (st == AD_OK) st = ops_step_rows(ops, m2, x, y, lo, hi, 24, false);
  nn_optimizer *o2 = nn_adam_new(nn_model_params(m2), 0.01); /* perhaps at opt's address */
  unpark();
  if (st == AD_OK) st = ops->step(ops->ud, o2);
  nn_model *ref = make_model(c, AD_F64, 8, PLAIN, 6);
  nn_optimizer *oref = nn_adam_new(nn_model_params(ref), 0.01);
  ad_status rst = one_process_step(c, ref, oref, x, y);
  double rel = max_rel(nn_model_params(m2), nn_model_params(ref));
  bool same = same_bits_as_rank0(nn_model_params(m2));
  snprintf(why, sizeof why,
           "status %s (%s), reference %s, shared parameters %d, optimizer at the old address %d, "
           "bit-identical on every rank %d, largest relative difference from one process %.3g",
           ad_status_str(st), ad_last_error(c), ad_status_str(rst), stats.shared_params,
           (void *)o2 == old_opt, same, rel);
  check(st == AD_OK && rst == AD_OK && same && rel <= 1e-12,
        "a model made again in a freed one's place steps as one process (sharded)", why);
  if (!same_place) /* (where nn's allocations take that block, the case above is not made) */
    skip("the new model's list at the freed one's address",
         "nn's allocations took that block elsewhere");
  by_hand_end(c, &b);
  nn_optimizer_free(o2);
  nn_optimizer_free(oref);
  nn_model_free(m2);
  nn_model_free(ref);
}

/* A step over a list whose parameter is on another context (on the last
 * rank only): every rank's step fails, that rank's naming the parameter
 * (its gradient would take memory of the nn_dist's context, freed through
 * the other's allocator); a freed parameter likewise. The next step over
 * a good list works. */
static void list_on_another_context(ad_ctx *c) {
  if (size == 1) return; /* (one rank has no layout to build) */
  nn_dist *d = dist_new(c, NULL);
  const nn_dist_ops *ops = nn_dist_fit_ops(d);
  ad_ctx *other = ad_ctx_new();
  int64_t s5[1] = {5};
  bool ok = true;
  for (int k = 0; k < 3; k++) { /* another context, a freed tensor, then good */
    bool odd = rank == size - 1 && k < 2;
    ad_ctx *tc = odd && k == 0 ? other : c;
    ad_tensor *W = ad_ones(tc, AD_F32, 1, s5), *gone = NULL;
    ad_tensor_set_requires_grad(W, true);
    nn_params *p = nn_params_new(tc); /* (a list takes only its own context's tensors) */
    if (odd && k == 1) {
      gone = ad_ones(c, AD_F32, 1, s5);
      nn_params_add(p, "W", gone, false);
      ad_tensor_free(gone);
    } else {
      nn_params_add(p, "W", W, false);
    }
    ad_tensor *loss = ad_sum(tc, W);
    ad_status st = ops->grad_begin(ops->ud, p, loss, 1, size);
    if (st == AD_OK) st = ad_backward(tc, loss, NULL);
    st = ops->grad_end(ops->ud, p, st);
    const char *want = k == 2                       ? NULL
                       : rank == size - 1 && k == 0 ? "parameter 0 'W' is on another context"
                       : rank == size - 1           ? "parameter 0 'W' was freed"
                                                    : "could not build its gradient buckets";
    bool good = want ? st != AD_OK && strstr(ad_last_error(c), want)
                     : st == AD_OK && W->grad && ad_tensor_get(W->grad, 0) == 1;
    if (!good && ok)
      snprintf(why, sizeof why, "case %d: status %s (%s)", k, ad_status_str(st), ad_last_error(c));
    ok &= good;
    ad_clear_error(c);
    ad_tape_reset(c);
    ad_tape_reset(tc);
    nn_params_free(p);
    ad_tensor_free(W);
  }
  check(ok, "a parameter of another context, or freed, fails every rank's step", why);
  nn_dist_free(d);
  ad_ctx_free(other);
}

/* A sharded step by hand, then the optimizer freed alone (its blocks
 * poisoned) without a sync while its model lives; then nn_fit's sum, a
 * sync with a new optimizer (perhaps made at the old one's address) and a
 * step with it. The slices of the freed optimizer's state are dropped
 * (its state tensors lost their serials), never read through the freed
 * optimizer (which crashed), and the new optimizer is not taken for the
 * old one. */
static void optimizer_freed_alone(ad_ctx *c) {
  by_hand b = sharded_by_hand(c);
  ad_tensor *x = b.x, *y = b.y;
  nn_model *m = b.m;
  nn_optimizer *opt = b.opt;
  nn_dist *d = b.d;
  const nn_dist_ops *ops = b.ops;
  int64_t lo = b.lo, hi = b.hi;
  ad_status st = b.st;
  void *old_opt = opt;
  parking = true;
  nn_optimizer_free(opt);
  parking = false;
  double v = 1;
  if (st == AD_OK) st = ops->sum(ops->ud, &v, 1);
  nn_optimizer *o2 = nn_adam_new(nn_model_params(m), 0.01);
  unpark();
  if (st == AD_OK) st = nn_dist_sync(d, m, o2);
  /* the reference: the same model's values, o2's step in one process */
  nn_model *ref = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_params *pm = nn_model_params(m), *pr = nn_model_params(ref);
  for (int i = 0; i < nn_params_count(pm); i++)
    ad_tensor_copy_data(nn_params_tensor(pr, i), nn_params_tensor(pm, i));
  nn_optimizer *oref = nn_adam_new(pr, 0.01);
  if (st == AD_OK) st = ops_step_rows(ops, m, x, y, lo, hi, 24, false);
  if (st == AD_OK) st = ops->step(ops->ud, o2);
  if (st == AD_OK) st = nn_dist_sync(d, m, o2); /* gathers o2's slices (then rank 0's sent) */
  ad_status rst = one_process_step(c, ref, oref, x, y);
  int nst = nn_optimizer_state_count(o2);
  double rel = fmax(max_rel(pm, pr), max_rel_tensors(nn_optimizer_state_tensors(o2),
                                                     nn_optimizer_state_tensors(oref), nst));
  snprintf(why, sizeof why,
           "status %s (%s), reference %s, sum %g, new optimizer at the old address %d, largest "
           "relative difference of parameters and state from one process %.3g",
           ad_status_str(st), ad_last_error(c), ad_status_str(rst), v, (void *)o2 == old_opt, rel);
  check(st == AD_OK && rst == AD_OK && v == size && rel <= 1e-12,
        "an optimizer freed alone after sharded steps: its slices are dropped, the next one's "
        "gathered",
        why);
  nn_optimizer_free(oref);
  nn_model_free(ref);
  by_hand_end(c, &b);
  nn_optimizer_free(o2);
  nn_model_free(m);
}

/* Rank 0 steps over another list object holding the same tensors, the
 * others over the first list: every rank judges by the tensors that the
 * layout is current. Before, rank 0 alone judged by the list's address and
 * built the layout again, a collective the others never entered. */
static void another_list_of_the_same_tensors(ad_ctx *c) {
  if (size == 1) return;
  nn_dist *d = dist_new(c, NULL);
  const nn_dist_ops *ops = nn_dist_fit_ops(d);
  int64_t s5[1] = {5};
  ad_tensor *W = ad_ones(c, AD_F32, 1, s5);
  ad_tensor_set_requires_grad(W, true);
  nn_params *p = nn_params_new(c), *q = nn_params_new(c);
  nn_params_add(p, "W", W, false);
  nn_params_add(q, "W", W, false);
  bool ok = true;
  ad_status st = AD_OK;
  for (int k = 0; k < 2 && st == AD_OK; k++) {
    nn_params *list = k == 1 && rank == 0 ? q : p;
    ad_tape_reset(c);
    nn_params_zero_grad(list);
    ad_tensor *loss = ad_sum(c, ad_mul_scalar(c, W, 2.0));
    st = ops->grad_begin(ops->ud, list, loss, 1, size);
    if (st == AD_OK) st = ad_backward(c, loss, NULL);
    st = ops->grad_end(ops->ud, list, st);
    for (int64_t e = 0; st == AD_OK && e < 5; e++)
      ok &= W->grad && near(ad_tensor_get(W->grad, e), 2);
  }
  snprintf(why, sizeof why, "status %s (%s)", ad_status_str(st), ad_last_error(c));
  check(st == AD_OK && ok, "a step over another list of the same tensors on one rank", why);
  ad_clear_error(c);
  nn_dist_free(d);
  ad_tape_reset(c);
  nn_params_free(p);
  nn_params_free(q);
  ad_tensor_free(W);
}

/* Lists that make the same bucket from other parameters ([5, 5] on rank
 * 0, [10] on the others): every rank fails the step with AD_ERR_SHAPE
 * (the buckets' fingerprint covers each parameter's size); before, the
 * step went on to exchanges of other lengths, which MPI ends the job for. */
static void same_bucket_other_params(ad_ctx *c) {
  if (size == 1) return;
  nn_dist *d = dist_new(c, NULL);
  const nn_dist_ops *ops = nn_dist_fit_ops(d);
  int64_t s5[1] = {5}, s10[1] = {10};
  ad_tensor *A = ad_ones(c, AD_F32, 1, rank == 0 ? s5 : s10);
  ad_tensor *B = rank == 0 ? ad_ones(c, AD_F32, 1, s5) : NULL;
  ad_tensor_set_requires_grad(A, true);
  nn_params *p = nn_params_new(c);
  nn_params_add(p, "A", A, false);
  if (B) {
    ad_tensor_set_requires_grad(B, true);
    nn_params_add(p, "B", B, false);
  }
  ad_tensor *loss = ad_sum(c, A);
  if (B) loss = ad_add(c, loss, ad_sum(c, B));
  ad_status st = ops->grad_begin(ops->ud, p, loss, 1, size);
  if (st == AD_OK) st = ad_backward(c, loss, NULL);
  st = ops->grad_end(ops->ud, p, st);
  snprintf(why, sizeof why, "status %s: %s", ad_status_str(st), ad_last_error(c));
  check(st == AD_ERR_SHAPE && strstr(ad_last_error(c), "gradient buckets differ"),
        "lists that make the same bucket from other parameters fail on every rank", why);
  ad_clear_error(c);
  ad_tape_reset(c);
  nn_params_free(p);
  ad_tensor_free(A);
  ad_tensor_free(B);
  nn_dist_free(d);
}

/* A loss that ignores the target's shape, so that only the accuracy
 * comparison (predictions [N,3], targets [N,2]) fails. */
static ad_tensor *mean_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red) {
  (void)target, (void)red;
  return ad_mean(ctx, pred);
}

static bool stop_on_rank1(int epoch, const nn_history *h, void *ud) {
  (void)epoch, (void)h, (void)ud;
  return rank != 1;
}

/* What only some ranks see still stops every rank: an accuracy comparison
 * that fails on the ranks with rows while a batch of 1 leaves the others
 * an empty shard, and an on_epoch_end that asks to stop on rank 1 only. */
static void partial_decisions(ad_ctx *c) {
  ad_tensor *x, *y3, *y;
  make_data(c, AD_F64, 6, &x, &y3);
  y = ad_zeros(c, AD_F64, 2, (int64_t[]){6, 2});
  nn_model *m = make_model(c, AD_F64, 4, PLAIN, 5);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  nn_dist *d = dist_new(c, NULL);
  nn_fit_opts fo = {.epochs = 2,
                    .batch_size = 1,
                    .no_shuffle = true,
                    .verbose = -1,
                    .accuracy = true,
                    .dist = nn_dist_fit_ops(d)};
  ad_status st = nn_fit(m, opt, mean_loss, x, y, &fo, NULL);
  const char *msg = ad_last_error(c);
  snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(st), msg);
  check(st != AD_OK && (strstr(msg, "cannot compare predictions [1,3] with targets [1,2]") ||
                        strstr(msg, "dist: rank")),
        "an accuracy comparison failing beside an empty shard stops every rank", why);
  ad_clear_error(c);

  nn_history *h = NULL;
  fo = (nn_fit_opts){.epochs = 3,
                     .batch_size = 3,
                     .verbose = -1,
                     .on_epoch_end = stop_on_rank1,
                     .dist = nn_dist_fit_ops(d)};
  st = nn_fit(m, opt, nn_cross_entropy_loss, x, y3, &fo, &h);
  snprintf(why, sizeof why, "status %s (%s), %d epochs", ad_status_str(st), ad_last_error(c),
           nn_history_epochs(h));
  check(st == AD_OK && nn_history_epochs(h) == (size > 1 ? 1 : 3),
        "on_epoch_end stopping on rank 1 alone stops every rank after that epoch", why);
  ad_clear_error(c);
  nn_history_free(h);
  nn_dist_free(d);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y3), ad_tensor_free(y);
}

/* A NaN in the last rank's shard of the first batch: every rank stops. */
static void failing_rank(ad_ctx *c) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 48, &x, &y);
  ad_tensor_set(x, 4 * 11, NAN); /* row 11: the last rank's rows of batch 0 */
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  nn_dist *d = dist_new(c, NULL);
  nn_fit_opts fo = {
      .epochs = 2, .batch_size = 12, .no_shuffle = true, .verbose = -1, .dist = nn_dist_fit_ops(d)};
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  char want[64];
  snprintf(want, sizeof want, "dist: rank %d stopped: ", size - 1);
  const char *msg = ad_last_error(c);
  bool ok = st == AD_ERR_NAN && strstr(msg, "loss is nan") &&
            (rank == size - 1 ? strstr(msg, "fit: the loss is nan at epoch 1, batch 1") != NULL
                              : strstr(msg, want) != NULL);
  snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(st), msg);
  check(ok, "a failing rank stops every rank with its message", why);
  ad_clear_error(c);
  nn_dist_free(d);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* A step that fails after sharded steps (a NaN in the third batch) leaves
 * the optimizer state whole on every rank when nn_fit returns. */
static void failure_leaves_state_whole(ad_ctx *c) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 48, &x, &y);
  ad_tensor_set(x, 4 * 35, NAN); /* row 35: the last rank's rows of batch 2 */
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.01);
  nn_dist *d = dist_new(c, NULL);
  nn_fit_opts fo = {
      .epochs = 1, .batch_size = 12, .no_shuffle = true, .verbose = -1, .dist = nn_dist_fit_ops(d)};
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  nn_dist_stats ds;
  nn_dist_get_stats(d, &ds, false);
  bool same = same_bits_tensors(nn_optimizer_state_tensors(opt), nn_optimizer_state_count(opt));
  snprintf(why, sizeof why, "status %s, %lld sharded steps, state the same: %d", ad_status_str(st),
           (long long)ds.sharded_steps, same);
  check(st == AD_ERR_NAN && nn_optimizer_steps(opt) == 2 && same &&
            ds.sharded_steps ==
                (base.shard_optimizer && expect_shm && size / expect_nodes > 1 ? 2 : 0),
        "a step failing after sharded steps leaves the optimizer state whole", why);
  ad_clear_error(c);
  nn_dist_free(d);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* Options given differently on some ranks (shard_optimizer on all but rank 0,
 * deterministic on the last only): any rank's counts for all, so the ranks
 * take the same exchanges (a sharded step on some ranks only waited for
 * ever) and train as one. */
static void options_disagree(ad_ctx *c) {
  nn_dist_opts o = {.shard_optimizer = rank != 0, .deterministic = rank == size - 1};
  own_shard = true;
  run r = train(c, AD_F64, PLAIN, true, 50, 16, 1, &o, true);
  own_shard = false;
  snprintf(why, sizeof why, "status %s, %lld sharded steps", ad_status_str(r.st),
           (long long)r.stats.sharded_steps);
  check(r.st == AD_OK && r.stats.sharded_steps == 0 && same_bits_as_rank0(nn_model_params(r.m)),
        "shard_optimizer missing or deterministic on one rank counts for every rank", why);
  run_free(&r);
  /* ranks_per_node on rank 0 only: rank 0 split its node while the others
   * did not, and nn_dist_new waited for ever */
  nn_dist_opts q = {.ranks_per_node = rank == 0 ? 1 : 0};
  nn_dist *d = nn_dist_new(c, &q);
  nn_dist_stats ds = {0};
  nn_dist_get_stats(d, &ds, false);
  int nodes[2] = {ds.nodes, -ds.nodes};
  MPI_Allreduce(MPI_IN_PLACE, nodes, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  snprintf(why, sizeof why, "%d node(s) here, %d to %d over the ranks", ds.nodes, -nodes[1],
           nodes[0]);
  check(d && ds.nodes == size && nodes[0] == -nodes[1],
        "ranks_per_node on one rank counts for every rank (no hang)", why);
  nn_dist_free(d);
}

/* Steps over an empty parameter list, then one over a parameter: it still
 * takes the run's path (the empty layout's window of no bytes once turned
 * the shared-memory path off for good). */
static void empty_list_keeps_path(ad_ctx *c) {
  nn_dist *d = dist_new(c, NULL);
  const nn_dist_ops *ops = nn_dist_fit_ops(d);
  nn_params *e = nn_params_new(c), *p = nn_params_new(c);
  int64_t shape[1] = {5};
  ad_tensor *w = ad_zeros(c, AD_F64, 1, shape);
  ad_status st = d && e && p && w ? AD_OK : AD_ERR_OOM;
  if (st == AD_OK) ad_tensor_set_requires_grad(w, true);
  if (st == AD_OK) st = nn_params_add(p, "w", w, true);
  for (int t = 0; t < 2 && st == AD_OK; t++)
    st = ops->grad_end(ops->ud, e, ops->grad_begin(ops->ud, e, NULL, 1, size));
  if (st == AD_OK) st = ops->grad_end(ops->ud, p, ops->grad_begin(ops->ud, p, NULL, 1, size));
  nn_dist_stats ds = {0};
  nn_dist_get_stats(d, &ds, false);
  bool want = expect_shm && size > 1;
  snprintf(why, sizeof why, "status %s, shared memory %d, expected %d", ad_status_str(st),
           ds.shared_memory, want);
  check(st == AD_OK && ds.shared_memory == want,
        "a step over an empty parameter list leaves the next one on the run's path", why);
  nn_params_free(e);
  nn_params_free(p);
  nn_dist_free(d);
}

/* One step of m over rows [b, e) of x, y driven through ops: grad_begin,
 * backward, grad_end (on every rank, also after an error). */
static ad_status ops_step_rows(const nn_dist_ops *ops, nn_model *m, ad_tensor *x, ad_tensor *y,
                               int64_t b, int64_t e, int64_t n, bool begin_twice) {
  ad_ctx *c = nn_model_ctx(m);
  nn_params *p = nn_model_params(m);
  ad_tape_reset(c);
  nn_params_zero_grad(p);
  ad_tensor *l = NULL;
  if (e > b)
    l = nn_cross_entropy_loss(c, nn_model_forward(m, ad_narrow(c, x, 0, b, e - b)),
                              ad_narrow(c, y, 0, b, e - b), NN_MEAN);
  ad_status st = ops->grad_begin(ops->ud, p, l, e - b, n);
  if (begin_twice) {
    ad_status again = ops->grad_begin(ops->ud, p, l, e - b, n);
    bool want = size > 1
                    ? again == AD_ERR_STATE &&
                          strstr(ad_last_error(c), "grad_begin before the last step's grad_end")
                    : again == AD_OK;
    ad_clear_error(c);
    if (st == AD_OK && !want)
      st = ad_set_error(c, AD_ERR_STATE, "second grad_begin: %s", ad_status_str(again));
  }
  if (st == AD_OK && l) st = ad_backward(c, l, NULL);
  return ops->grad_end(ops->ud, p, st);
}

/* nn_dist_new is collective: an allocation refused on the last rank, or a
 * NULL context on rank 0, makes it NULL on every rank (the others once
 * waited for ever in MPI_Comm_dup), and the next one works. */
static void new_fails_on_one_rank(ad_ctx *c) {
  char want[96];
  bool ok = true;
  for (int k = 0; k < 2; k++) { /* k = 0: out of memory, 1: NULL context */
    int root = k == 0 ? size - 1 : 0;
    if (k == 0 && rank == root) fail_in = 1;
    nn_dist *d = nn_dist_new(k == 1 && rank == root ? NULL : c, NULL);
    fail_in = 0;
    snprintf(want, sizeof want, "dist: rank %d failed: nn_dist_new: %s", root,
             k == 0 ? "out of memory" : "ctx is NULL");
    ad_status st = ad_last_status(c);
    const char *msg = ad_last_error(c);
    bool here = d == NULL &&
                (rank != root ? st == (k == 0 ? AD_ERR_OOM : AD_ERR_NULL) && strcmp(msg, want) == 0
                 : k == 0     ? st == AD_ERR_OOM && strstr(msg, "out of memory")
                              : true);
    if (!here)
      snprintf(why, sizeof why, "case %d: handle %p, status %s, message: %s", k, (void *)d,
               ad_status_str(st), msg);
    ok &= here;
    nn_dist_free(d);
    ad_clear_error(c);
  }
  nn_dist *d = dist_new(c, NULL);
  check(ok && d != NULL, "nn_dist_new failing on one rank is NULL on every rank (no hang)",
        ok ? "the next nn_dist_new failed" : why);
  nn_dist_free(d);
}

/* An nn_dist on another context than the model's: nn_fit fails before any
 * step on every rank, with the message on the model's context. Training
 * went on without the backward hook, and with private gradients or MPI
 * collectives a rank without rows (batches of 1) aborted the job making
 * zero gradients on the nn_dist's context. */
static void model_on_another_context(ad_ctx *c) {
  ad_ctx *c2 = ad_ctx_new();
  ad_tensor *x, *y;
  make_data(c, AD_F64, 6, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  nn_dist_opts o = {.private_gradients = true};
  nn_dist *d = dist_new(c2, &o);
  nn_fit_opts fo = {.epochs = 1, .batch_size = 1, .verbose = -1, .dist = nn_dist_fit_ops(d)};
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  snprintf(why, sizeof why, "status %s, %lld steps, message: %s", ad_status_str(st),
           (long long)nn_optimizer_steps(opt), ad_last_error(c));
  check(st == AD_ERR_ARG && nn_optimizer_steps(opt) == 0 &&
            strstr(ad_last_error(c), "dist_sync: the model is on another context") != NULL,
        "a model on another context than the nn_dist's fails before any step", why);
  ad_clear_error(c);
  nn_dist_free(d);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
  ad_ctx_free(c2);
}

/* The last rank with its own part of the data (as with PyTorch's
 * DistributedSampler), or shuffling with a seed of its own: nn_fit fails
 * on every rank before any step, naming what differs. The ranks once made as
 * many steps as their own batches and waited for each other for ever (or
 * trained on rows of unrelated batches). */
static void batches_differ(ad_ctx *c) {
  bool ok = true;
  /* k = 0: rows, 1: seed, 2: validation data on the last rank only (one
   * more sum per epoch there), 3: early stopping's patience; as many rows
   * but 4: one feature, 5: one label other on the last rank (its own part
   * of the data, as a DistributedSampler would give it), 6: drop_last on
   * the last rank only */
  static const char *const wants[7] = {"fit: the ranks' rows to train on differ (here: ",
                                       "fit: the ranks' shuffles (seed or no_shuffle) differ",
                                       "fit: the ranks' validation (data or split, or none) differ",
                                       "fit: the ranks' early-stopping options differ",
                                       "fit: the ranks' training data (x) differ",
                                       "fit: the ranks' training targets (y) differ",
                                       "fit: the ranks' batch sizes (or drop_last) differ"};
  for (int k = 0; k < 7 && size > 1; k++) {
    ad_tensor *x, *y;
    bool last = rank == size - 1;
    make_data(c, AD_F64, k == 0 && last ? 30 : 24, &x, &y);
    if (k == 4 && last) ad_tensor_set(x, 4 * 23 + 3, ad_tensor_get(x, 4 * 23 + 3) + 1e-9);
    if (k == 5 && last) ad_tensor_set(y, 7, ((int)ad_tensor_get(y, 7) + 1) % 3);
    nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
    nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
    nn_dist *d = dist_new(c, NULL);
    nn_fit_opts fo = {
        .epochs = 2,
        .batch_size = 12,
        .seed = k == 1 ? (uint64_t)rank << 40 : 0,
        .val_x = k == 2 && last ? x : NULL,
        .val_y = k == 2 && last ? y : NULL,
        .early_stopping = {.monitor = k == 3 ? "loss" : NULL, .patience = k == 3 && last ? 2 : 0},
        .verbose = -1,
        .dist = nn_dist_fit_ops(d),
        .drop_last = k == 6 && last};
    ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
    const char *want = wants[k];
    bool here = st == AD_ERR_ARG && nn_optimizer_steps(opt) == 0 && strstr(ad_last_error(c), want);
    if (k == 6) /* the message gives this rank's drop_last */
      here &= (strstr(ad_last_error(c), "batch size 12 (drop_last),") != NULL) == last;
    if (!here)
      snprintf(why, sizeof why, "case %d: status %s, %lld steps, message: %s", k, ad_status_str(st),
               (long long)nn_optimizer_steps(opt), ad_last_error(c));
    ok &= here;
    ad_clear_error(c);
    nn_dist_free(d);
    nn_optimizer_free(opt);
    nn_model_free(m);
    ad_tensor_free(x);
    ad_tensor_free(y);
  }
  check(ok, "other data or options on one rank: nn_fit fails on every rank (no hang)", why);
}

/* Each rank validates on its own part of the validation rows (rank r on
 * 2 + r of them, as with PyTorch's DistributedSampler), with early
 * stopping on val_loss: the metrics are those of all the parts together,
 * so every rank stops at the same epoch with the same weights (a rank
 * that stopped alone left the others waiting in the next step's sum). */
static void validation_parts(ad_ctx *c) {
  ad_tensor *x, *y;
  int64_t total = 0, first = 0;
  for (int r = 0; r < size; r++) total += 2 + r, first += r < rank ? 2 + r : 0;
  make_data(c, AD_F64, 24 + total, &x, &y);
  int64_t rows[64];
  for (int64_t i = 0; i < 2 + rank; i++) rows[i] = 24 + first + i;
  ad_tensor *vx = nn_take_rows(c, x, 2 + rank, rows), *vy = nn_take_rows(c, y, 2 + rank, rows);
  for (int64_t i = 0; i < total; i++) rows[i] = 24 + i;
  ad_tensor *ax = nn_take_rows(c, x, total, rows), *ay = nn_take_rows(c, y, total, rows);
  for (int64_t i = 0; i < 24; i++) rows[i] = i;
  ad_tensor *tx = nn_take_rows(c, x, 24, rows), *ty = nn_take_rows(c, y, 24, rows);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 2.0, 0.9, false, 0); /* overshoots */
  nn_dist *d = dist_new(c, NULL);
  nn_fit_opts fo = {.epochs = 12,
                    .batch_size = 8,
                    .seed = 1,
                    .accuracy = true,
                    .val_x = vx,
                    .val_y = vy,
                    .early_stopping = {.monitor = "val_loss", .patience = 1},
                    .verbose = -1,
                    .dist = nn_dist_fit_ops(d)};
  nn_history *h = NULL;
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, tx, ty, &fo, &h);
  double all = NAN, mine[2] = {nn_history_epochs(h), 0};
  if (st == AD_OK) mine[1] = nn_history_get(h, "val_loss", nn_history_epochs(h) - 1);
  double theirs[2];
  memcpy(theirs, mine, sizeof mine);
  MPI_Bcast(theirs, 2, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  ad_status se = nn_evaluate(m, nn_cross_entropy_loss, ax, ay, 0, &all, NULL);
  snprintf(why, sizeof why,
           "status %s (%s), %g epochs (rank 0: %g), val_loss %.17g (rank 0: %.17g, "
           "all the parts: %.17g)",
           ad_status_str(st), ad_last_error(c), mine[0], theirs[0], mine[1], theirs[1], all);
  check(st == AD_OK && se == AD_OK && mine[0] == theirs[0] && mine[0] < 12 &&
            mine[1] == theirs[1] && close_to(mine[1], all, 1e-12 * fabs(all)) &&
            same_bits_as_rank0(nn_model_params(m)),
        "own validation parts: metrics over all parts, every rank stops at the same epoch", why);
  ad_clear_error(c);
  nn_history_free(h);
  nn_dist_free(d);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor *ts[8] = {x, y, vx, vy, ax, ay, tx, ty};
  for (int i = 0; i < 8; i++) ad_tensor_free(ts[i]);
}

/* nn_dist_sum in the deterministic mode out of memory on the last rank
 * (for the gathered values): every rank fails with that rank's message
 * (it aborted the job), and the next sum works. */
static void sum_out_of_memory(ad_ctx *c) {
  nn_dist_opts o = {.deterministic = true};
  nn_dist *d = dist_new(c, &o);
  double v[3] = {1, 2, rank};
  if (rank == size - 1) fail_in = 1;
  ad_status st = nn_dist_sum(d, v, 3);
  fail_in = 0;
  char want[64];
  snprintf(want, sizeof want, "dist: rank %d failed: out of memory", size - 1);
  bool ok = st == AD_ERR_OOM && (rank == size - 1 ? strstr(ad_last_error(c), "out of memory")
                                                  : strstr(ad_last_error(c), want));
  snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(st), ad_last_error(c));
  ad_clear_error(c);
  ad_status again = nn_dist_sum(d, v, 3);
  ok &= again == AD_OK && v[0] == size && v[2] == size * (size - 1) / 2.0;
  check(ok, "deterministic nn_dist_sum out of memory on one rank fails on every rank", why);
  nn_dist_free(d);
}

/* nn_dist_sync out of memory on the last rank for rank 0's description
 * (its second allocation): every rank fails with that rank's message (it
 * aborted the job), and the next sync works. */
static void sync_out_of_memory(ad_ctx *c) {
  if (size == 1) return;
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_dist *d = dist_new(c, NULL);
  long long before = live_bytes; /* every rank gets back what the failed sync took */
  if (rank == size - 1) fail_in = 2;
  ad_status st = nn_dist_sync(d, m, NULL);
  fail_in = 0;
  bool kept = live_bytes == before;
  char want[64];
  snprintf(want, sizeof want, "dist: rank %d failed: out of memory", size - 1);
  bool ok = st == AD_ERR_OOM && (rank == size - 1 ? strstr(ad_last_error(c), "out of memory")
                                                  : strstr(ad_last_error(c), want));
  snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(st), ad_last_error(c));
  ad_clear_error(c);
  ad_status again = nn_dist_sync(d, m, NULL);
  if (!kept) snprintf(why, sizeof why, "%lld bytes kept by the failed sync", live_bytes - before);
  check(ok && kept && again == AD_OK, "nn_dist_sync out of memory on one rank fails on every rank",
        why);
  nn_dist_free(d);
  nn_model_free(m);
}

/* nn_fit failing on the last rank before the start-up sync (out of memory
 * for its first allocation, the batcher's; a bad batch size in its
 * checks; x NULL): that rank returned alone while the others waited in the sync
 * for ever; now every rank stops there. */
static void fit_setup_fails_on_one_rank(ad_ctx *c) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 24, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  nn_dist *d = dist_new(c, NULL);
  bool ok = true;
  for (int k = 0; k < 3;
       k++) { /* k = 0: out of memory, 1: a bad batch size (its checks), 2: no x */
    nn_fit_opts fo = {.epochs = 1,
                      .batch_size = k == 1 && rank == size - 1 ? -1 : 12,
                      .verbose = -1,
                      .dist = nn_dist_fit_ops(d)};
    if (k == 0 && rank == size - 1) fail_in = 1;
    ad_status st =
        nn_fit(m, opt, nn_cross_entropy_loss, k == 2 && rank == size - 1 ? NULL : x, y, &fo, NULL);
    fail_in = 0;
    bool here =
        nn_optimizer_steps(opt) == 0 &&
        (rank == size - 1 ? st == (k == 0   ? AD_ERR_OOM
                                   : k == 1 ? AD_ERR_ARG
                                            : AD_ERR_NULL)
                          : st == AD_ERR_STATE &&
                                strcmp(ad_last_error(c),
                                       "fit: 1 other rank(s) failed before the first step") == 0);
    if (!here)
      snprintf(why, sizeof why, "case %d: status %s, %lld steps, message: %s", k, ad_status_str(st),
               (long long)nn_optimizer_steps(opt), ad_last_error(c));
    ok &= here;
    ad_clear_error(c);
  }
  check(ok, "nn_fit failing on one rank before the first step stops every rank", why);
  nn_dist_free(d);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* nn_fit (which syncs a model with batch norm), the model freed, then a
 * step through nn_dist_ops over a list of the caller's: grad_end once
 * broadcast the freed model's buffers (a use after free). */
static void step_after_synced_model_freed(ad_ctx *c) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 24, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, BATCHNORM, 5);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  nn_dist *d = dist_new(c, NULL);
  nn_fit_opts fo = {.epochs = 1, .batch_size = 12, .verbose = -1, .dist = nn_dist_fit_ops(d)};
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  nn_optimizer_free(opt);
  nn_model_free(m);
  const nn_dist_ops *ops = nn_dist_fit_ops(d);
  nn_params *p = nn_params_new(c);
  int64_t shape[1] = {5};
  ad_tensor *w = ad_zeros(c, AD_F64, 1, shape);
  if (st == AD_OK) st = p && w ? nn_params_add(p, "w", w, true) : AD_ERR_OOM;
  if (st == AD_OK) st = ad_tensor_set_requires_grad(w, true);
  ad_tensor *l = st == AD_OK ? ad_sum(c, w) : NULL;
  if (st == AD_OK) st = ops->grad_begin(ops->ud, p, l, 1, size);
  if (st == AD_OK) st = ad_backward(c, l, NULL);
  st = ops->grad_end(ops->ud, p, st);
  bool ones = st == AD_OK && w->grad;
  for (int64_t i = 0; ones && i < 5; i++) ones = ad_tensor_get(w->grad, i) == 1;
  snprintf(why, sizeof why, "status %s: %s", ad_status_str(st), ad_last_error(c));
  check(st == AD_OK && ones, "a step over another list after the synced model was freed", why);
  ad_clear_error(c);
  nn_dist_free(d);
  ad_tape_reset(c);
  nn_params_free(p);
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* A grad_begin before the last one's grad_end (code driving nn_dist_ops
 * itself): AD_ERR_STATE, and the step goes on as the first grad_begin
 * started it. It once took its own backward hook for the caller's, which
 * then called itself until the stack overflowed. */
static void grad_begin_twice(ad_ctx *c) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 24, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_dist *d = dist_new(c, NULL);
  const nn_dist_ops *ops = nn_dist_fit_ops(d);
  int64_t b = 24 * rank / size, e = 24 * (rank + 1) / size;
  ad_status st = nn_dist_sync(d, m, NULL);
  ad_status st2 = st == AD_OK ? ops_step_rows(ops, m, x, y, b, e, 24, true) : st;
  nn_params *p = nn_model_params(m);
  ad_tensor *g = nn_params_tensors(p)[0]->grad;
  ad_tensor *g1 = g ? ad_tensor_clone(c, g) : NULL;
  ad_status st3 = st2 == AD_OK ? ops_step_rows(ops, m, x, y, b, e, 24, false) : st2;
  g = nn_params_tensors(p)[0]->grad;
  bool same = g1 && g && memcmp(g1->data, g->data, (size_t)g->size * sizeof(double)) == 0;
  nn_dist_free(d);
  ad_tape_reset(c); /* a backward after nn_dist_free: no hook of d's is left */
  ad_tensor *l = nn_cross_entropy_loss(c, nn_model_forward(m, x), y, NN_MEAN);
  ad_status st4 = l ? ad_backward(c, l, NULL) : AD_ERR_OOM;
  snprintf(why, sizeof why, "statuses %s %s %s, gradients the same %d: %s", ad_status_str(st2),
           ad_status_str(st3), ad_status_str(st4), same, ad_last_error(c));
  check(st2 == AD_OK && st3 == AD_OK && st4 == AD_OK && same,
        "grad_begin twice is AD_ERR_STATE, and the step goes on", why);
  ad_clear_error(c);
  ad_tensor_free(g1);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* Sharded steps driven through nn_dist_ops, then an nn_dist_load that
 * fails (no file): the optimizer state is still in slices, and the next
 * nn_dist_sync must gather it (it once took rank 0's slices-only state for
 * everyone's) and equal the whole steps'. */
static void failed_load_keeps_state_to_gather(ad_ctx *c) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 24, &x, &y);
  nn_model *m[2];
  nn_optimizer *o[2];
  ad_status st = AD_OK;
  for (int k = 0; k < 2; k++) { /* k = 0: whole steps, 1: sharded */
    m[k] = make_model(c, AD_F64, 8, PLAIN, 5);
    o[k] = nn_adam_new(nn_model_params(m[k]), 0.01);
    nn_dist_opts dopt = {.shard_optimizer = k == 1};
    own_shard = true;
    nn_dist *d = dist_new(c, &dopt);
    own_shard = false;
    const nn_dist_ops *ops = nn_dist_fit_ops(d);
    int64_t b = 24 * rank / size, e = 24 * (rank + 1) / size;
    for (int t = 0; t < 3 && st == AD_OK; t++) {
      st = ops_step_rows(ops, m[k], x, y, b, e, 24, false);
      if (st == AD_OK) st = ops->step(ops->ud, o[k]);
    }
    ad_tape_reset(c);
    char path[512];
    snprintf(path, sizeof path, "%s/no_such_checkpoint_np%d.safetensors", tmpdir, size);
    ad_status lst = nn_dist_load(d, m[k], o[k], path);
    ad_clear_error(c);
    if (st == AD_OK && lst == AD_OK) st = AD_ERR_STATE; /* the load must fail */
    if (st == AD_OK) st = nn_dist_sync(d, m[k], o[k]);
    nn_dist_free(d);
  }
  double rel = max_rel_tensors(nn_optimizer_state_tensors(o[1]), nn_optimizer_state_tensors(o[0]),
                               nn_optimizer_state_count(o[0]));
  snprintf(why, sizeof why, "status %s, state relative difference %g", ad_status_str(st), rel);
  check(st == AD_OK && rel == 0,
        "a failed nn_dist_load leaves the sharded state to be gathered by nn_dist_sync", why);
  for (int k = 0; k < 2; k++) nn_optimizer_free(o[k]), nn_model_free(m[k]);
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* Sharded steps leave each rank only its slices of the optimizer state;
 * a later step of the same optimizer that cannot be sharded (a group over
 * a tensor outside the model added since) must first gather it, as the
 * whole step reads every element, and so must nn_dist_sync though the
 * group added state (sync_after: the group added after the last step):
 * the parameters and state then equal whole steps' on every rank. */
static void unsharded_after_sharded_variant(ad_ctx *c, bool sync_after) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 24, &x, &y);
  nn_model *m[2];
  nn_optimizer *o[2];
  nn_params *extra[2];
  ad_tensor *s[2];
  ad_status st = AD_OK;
  long long sharded = 0;
  for (int k = 0; k < 2; k++) { /* k = 0: whole steps, 1: sharded */
    m[k] = make_model(c, AD_F64, 8, PLAIN, 5);
    o[k] = nn_adam_new(nn_model_params(m[k]), 0.01);
    extra[k] = nn_params_new(c);
    s[k] = ad_zeros(c, AD_F64, 1, (int64_t[1]){3});
    nn_dist_opts dopt = {.shard_optimizer = k == 1};
    own_shard = true;
    nn_dist *d = dist_new(c, &dopt);
    own_shard = false;
    const nn_dist_ops *ops = nn_dist_fit_ops(d);
    int64_t b = 24 * rank / size, e = 24 * (rank + 1) / size;
    for (int t = 0; t < 5 && st == AD_OK; t++) {
      if (t == (sync_after ? 4 : 3)) { /* a group over a tensor outside the model (no gradient) */
        nn_opt_config_ext g = nn_opt_defaults_ext(NN_OPT_ADAM, 0.01);
        st = s[k] && extra[k] && ad_tensor_set_requires_grad(s[k], true) == AD_OK &&
                     nn_params_add(extra[k], "scale", s[k], false) == AD_OK
                 ? nn_optimizer_add_param_group(o[k], extra[k], &g)
                 : AD_ERR_OOM;
        if (st != AD_OK || sync_after) break;
      }
      st = ops_step_rows(ops, m[k], x, y, b, e, 24, false);
      if (st == AD_OK && t < 4) st = ops->step(ops->ud, o[k]);
    }
    ad_tape_reset(c);
    if (st == AD_OK) st = nn_dist_sync(d, m[k], o[k]);
    nn_dist_stats stats;
    nn_dist_get_stats(d, &stats, false);
    if (k == 1) sharded = stats.sharded_steps;
    nn_dist_free(d);
  }
  double rel = max_rel(nn_model_params(m[1]), nn_model_params(m[0]));
  int ns = nn_optimizer_state_count(o[0]);
  double srel =
      ns == nn_optimizer_state_count(o[1])
          ? max_rel_tensors(nn_optimizer_state_tensors(o[1]), nn_optimizer_state_tensors(o[0]), ns)
          : 1;
  snprintf(why, sizeof why,
           "status %s, relative difference %g (parameters), %g (state), %lld sharded steps",
           ad_status_str(st), rel, srel, sharded);
  check(st == AD_OK && rel <= 1e-12 && srel <= 1e-12 && same_bits_as_rank0(nn_model_params(m[1])),
        sync_after ? "nn_dist_sync after a group was added to sharded steps gathers the state"
                   : "a whole step after sharded ones gathers the optimizer state first",
        why);
  for (int k = 0; k < 2; k++) {
    nn_optimizer_free(o[k]), nn_model_free(m[k]), nn_params_free(extra[k]);
    ad_tensor_free(s[k]);
  }
  ad_tensor_free(x);
  ad_tensor_free(y);
}

static void unsharded_after_sharded(ad_ctx *c) {
  unsharded_after_sharded_variant(c, false);
  unsharded_after_sharded_variant(c, true);
}

/* Sharded steps of optimizers whose entries are not the model's list:
 * SGD with momentum clipped by norm over a part of the model in two
 * groups in another order; AdamW over a tied model listing the tied
 * weight twice; Adam of two groups. The parameters and the state after
 * nn_dist_sync, and a checkpoint nn_dist_save wrote mid-run, equal whole
 * steps' on every rank. */
static nn_optimizer *part_sgd(nn_model *m, nn_params **l) {
  nn_params *p = nn_model_params(m);
  l[0] = nn_params_new(nn_model_ctx(m)), l[1] = nn_params_new(nn_model_ctx(m));
  nn_params_add(l[0], nn_params_name(p, 3), nn_params_tensor(p, 3), false); /* 1.bias */
  nn_params_add(l[0], nn_params_name(p, 0), nn_params_tensor(p, 0), false); /* 0.weight */
  nn_params_add(l[1], nn_params_name(p, 2), nn_params_tensor(p, 2), false); /* 1.weight */
  nn_opt_config_ext x = nn_opt_defaults_ext(NN_OPT_SGD, 0.1);
  x.base.momentum = 0.9;
  x.base.clip_norm = 0.05;
  nn_optimizer *o = nn_optimizer_new_ext(l[0], &x);
  x.base.lr = 0.05;
  x.base.weight_decay = 0.01;
  if (o && nn_optimizer_add_param_group(o, l[1], &x) != AD_OK) nn_optimizer_free(o), o = NULL;
  return o;
}
static nn_optimizer *tied_adamw(nn_model *m, nn_params **l) {
  nn_params *p = nn_model_params(m);
  l[0] = nn_params_new(nn_model_ctx(m)), l[1] = nn_params_new(nn_model_ctx(m));
  for (int i = nn_params_count(p) - 1; i >= 0; i--) /* W_again, V, W */
    nn_params_add(l[0], nn_params_name(p, i), nn_params_tensor(p, i), false);
  return nn_adamw_new(l[0], 0.01, 0.1);
}
static nn_optimizer *two_adam(nn_model *m, nn_params **l) {
  nn_params *p = nn_model_params(m);
  l[0] = nn_params_new(nn_model_ctx(m)), l[1] = nn_params_new(nn_model_ctx(m));
  for (int i = 0; i < nn_params_count(p); i++)
    nn_params_add(l[i % 2], nn_params_name(p, i), nn_params_tensor(p, i), false);
  nn_optimizer *o = nn_adam_new(l[1], 0.01);
  nn_opt_config_ext x = nn_opt_defaults_ext(NN_OPT_ADAM, 0.02);
  if (o && nn_optimizer_add_param_group(o, l[0], &x) != AD_OK) nn_optimizer_free(o), o = NULL;
  return o;
}

static void sharded_entries_variant(ad_ctx *c, int kind,
                                    nn_optimizer *(*make)(nn_model *, nn_params **),
                                    const char *what) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 30, &x, &y);
  nn_model *m[4] = {0};
  nn_optimizer *o[4] = {0};
  nn_params *l[4][2] = {{0}};
  ad_status st = AD_OK;
  long long sharded = 0;
  char path[2][512];
  for (int k = 0; k < 2; k++) { /* k = 0: whole steps, 1: sharded */
    snprintf(path[k], sizeof path[k], "%s/entries_%d_np%d_%d.safetensors", tmpdir, kind, size, k);
    m[k] = make_model(c, AD_F64, 8, kind, 5);
    o[k] = make(m[k], l[k]);
    nn_dist_opts dopt = {.shard_optimizer = k == 1};
    own_shard = true;
    nn_dist *d = dist_new(c, &dopt);
    own_shard = false;
    const nn_dist_ops *ops = nn_dist_fit_ops(d);
    int64_t b = 30 * rank / size, e = 30 * (rank + 1) / size;
    if (!o[k]) st = AD_ERR_OOM;
    for (int t = 0; t < 5 && st == AD_OK; t++) {
      st = ops_step_rows(ops, m[k], x, y, b, e, 30, false);
      if (st == AD_OK) st = ops->step(ops->ud, o[k]);
      if (st == AD_OK && t == 2) st = nn_dist_save(d, m[k], o[k], path[k]);
    }
    ad_tape_reset(c);
    if (st == AD_OK) st = nn_dist_sync(d, m[k], o[k]);
    nn_dist_stats stats;
    nn_dist_get_stats(d, &stats, false);
    if (k == 1) sharded = stats.sharded_steps;
    nn_dist_free(d);
  }
  for (int k = 2; k < 4 && st == AD_OK; k++) { /* the checkpoints, loaded in one process */
    m[k] = make_model(c, AD_F64, 8, kind, 6);
    o[k] = make(m[k], l[k]);
    st = o[k] ? nn_model_load(m[k], o[k], path[k - 2]) : AD_ERR_OOM;
  }
  int ns = o[0] ? nn_optimizer_state_count(o[0]) : 0;
  double rel = st == AD_OK ? max_rel(nn_model_params(m[1]), nn_model_params(m[0])) : 1;
  double srel = st == AD_OK ? max_rel_tensors(nn_optimizer_state_tensors(o[1]),
                                              nn_optimizer_state_tensors(o[0]), ns)
                            : 1;
  double crel = st == AD_OK ? fmax(max_rel(nn_model_params(m[3]), nn_model_params(m[2])),
                                   max_rel_tensors(nn_optimizer_state_tensors(o[3]),
                                                   nn_optimizer_state_tensors(o[2]), ns))
                            : 1;
  bool want_sharded = expect_shm && size / expect_nodes > 1; /* (k 1 asks for it) */
  snprintf(why, sizeof why,
           "status %s (%s), relative difference %g (parameters), %g (state), %g (checkpoint), "
           "%lld sharded steps",
           ad_status_str(st), st == AD_OK ? "" : ad_last_error(c), rel, srel, crel, sharded);
  char name[160];
  snprintf(name, sizeof name, "%s: sharded steps equal whole ones", what);
  check(st == AD_OK && rel <= 1e-12 && srel <= 1e-12 && crel <= 1e-12 &&
            same_bits_as_rank0(nn_model_params(m[1])) && (sharded > 0) == want_sharded,
        name, why);
  for (int k = 0; k < 4; k++) {
    nn_optimizer_free(o[k]), nn_model_free(m[k]);
    nn_params_free(l[k][0]), nn_params_free(l[k][1]);
  }
  ad_tensor_free(x);
  ad_tensor_free(y);
}

static void sharded_entries(ad_ctx *c) {
  sharded_entries_variant(c, PLAIN, part_sgd, "SGD momentum, clipped, two groups over a part");
  sharded_entries_variant(c, TIED, tied_adamw, "AdamW over a tied weight listed twice");
  sharded_entries_variant(c, PLAIN, two_adam, "Adam of two interleaved groups, checkpoint");
}

static void dropout_and_batchnorm(ad_ctx *c) {
  nn_dist_opts o = {0};
  run dr = train(c, AD_F32, DROPOUT, false, 48, 12, 2, &o, true);
  check(dr.st == AD_OK && same_bits_as_rank0(nn_model_params(dr.m)),
        "dropout seeded by rank: parameters stay identical on every rank", ad_last_error(c));
  run bn = train(c, AD_F32, BATCHNORM, false, 48, 12, 2, &o, true);
  nn_params *buf = nn_model_buffers(bn.m);
  check(bn.st == AD_OK && same_bits_as_rank0(nn_model_params(bn.m)) && same_bits_as_rank0(buf),
        "batch norm: parameters and running statistics identical on every rank", ad_last_error(c));
  /* per-rank batch statistics: with more than one rank the step differs
   * from one process's on the whole batch */
  run one = train(c, AD_F32, BATCHNORM, false, 48, 12, 2, NULL, false);
  double rel = max_rel(nn_model_params(bn.m), nn_model_params(one.m));
  snprintf(why, sizeof why, "relative difference %g", rel);
  if (size > 1) check(rel > 1e-4, "batch norm: statistics are per rank (not synchronised)", why);
  run_free(&dr);
  run_free(&bn);
  run_free(&one);
}

static void checkpoints(ad_ctx *c) {
  char path[512];
  snprintf(path, sizeof path, "%s/mpi_dist_np%d.safetensors", tmpdir, size);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5 + (uint64_t)rank);
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.1);
  nn_dist *d = dist_new(c, NULL);
  ad_status st = nn_dist_save(d, m, opt, path);
  nn_model *ref = make_model(c, AD_F64, 8, PLAIN, 5); /* rank 0's values */
  nn_model *other = make_model(c, AD_F64, 8, PLAIN, 77);
  nn_optimizer *oo = nn_adam_new(nn_model_params(other), 0.1);
  ad_status st2 = nn_dist_load(d, other, oo, path);
  check(st == AD_OK && st2 == AD_OK && max_rel(nn_model_params(other), nn_model_params(ref)) == 0,
        "checkpoint written by rank 0 loads on every rank", ad_last_error(c));
  if (rank == 0) remove(path);
  MPI_Barrier(MPI_COMM_WORLD);
  st = nn_dist_load(d, other, oo, path);
  snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(st), ad_last_error(c));
  check(st == AD_ERR_IO && strstr(ad_last_error(c), "mpi_dist_np") &&
            (rank == 0 || strstr(ad_last_error(c), "dist: rank 0 could not load")),
        "a checkpoint missing on rank 0: every rank gets its error", why);
  ad_clear_error(c);
  nn_dist_free(d);
  nn_optimizer_free(opt);
  nn_optimizer_free(oo);
  nn_model_free(m);
  nn_model_free(ref);
  nn_model_free(other);
}

/* A counting allocator (64-byte aligned blocks, as the contract asks): the
 * bytes nn_dist holds go back to the context when it is freed. */

static void *count_alloc(void *ud, void *p, size_t os, size_t ns) {
  (void)ud;
  if (ns > 0 && (refuse_all || (fail_in > 0 && --fail_in == 0))) return NULL;
  if (ns == 0) {
    if (p) live_bytes -= (long long)os;
    if (p && parking && nparked < PARK_MAX) {
      memset(p, 0x5A, os); /* what was there is gone (counts read from it are large) */
      parked[nparked] = p, parked_size[nparked++] = os;
      return NULL;
    }
    free(p);
    return NULL;
  }
  void *q = NULL;
  for (int i = nparked - 1; !p && !parking && i >= 0; i--)
    if (parked_size[i] == ns) {
      q = parked[i];
      memmove(&parked[i], &parked[i + 1], (size_t)(nparked - i - 1) * sizeof *parked);
      memmove(&parked_size[i], &parked_size[i + 1],
              (size_t)(nparked - i - 1) * sizeof *parked_size);
      nparked--;
      break;
    }
  if (!q) q = aligned_alloc(64, (ns + 63) / 64 * 64);
  if (!q) return NULL;
  if (p) {
    memcpy(q, p, os < ns ? os : ns);
    free(p);
    live_bytes -= (long long)os;
  }
  live_bytes += (long long)ns;
  return q;
}

static void memory_returns(ad_ctx *c) {
  nn_dist_opts o = {.bucket_bytes = 8, .deterministic = true};
  run warm = train(c, AD_F64, BATCHNORM, true, 48, 12, 1, &o, true); /* arena, grads sized */
  ad_tensor *x, *y;
  make_data(c, AD_F64, 48, &x, &y);
  long long before = live_bytes;
  nn_dist *d = dist_new(c, &o);
  nn_fit_opts fo = {.epochs = 1, .batch_size = 12, .verbose = -1, .dist = nn_dist_fit_ops(d)};
  ad_status st = nn_fit(warm.m, warm.opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  nn_dist_free(d);
  ad_tape_reset(c);
  snprintf(why, sizeof why, "status %s; %lld bytes before, %lld after", ad_status_str(st), before,
           live_bytes);
  check(st == AD_OK && live_bytes == before, "nn_dist_free returns every byte it took", why);
  ad_tensor_free(x);
  ad_tensor_free(y);
  run_free(&warm);
}

/* Leaving the node's windows needs no memory: nn_dist_free moves the
 * gradients (zero-copy) and the parameters (sharded optimizer) back into
 * blocks set aside when they went in. With every allocation refused from
 * nn_dist_free on, it used to call MPI_Abort; now every value comes back
 * with its bits, the windows go, and training on without nn_dist (which
 * would write a freed window otherwise) gives the same parameters on every
 * rank. */
static bool leaving_once(ad_ctx *c) {
  nn_dist_opts o = {.shard_optimizer = true};
  ad_tensor *x, *y;
  make_data(c, AD_F64, 24, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.01);
  ad_tape_reset(c);
  nn_dist *d = dist_new(c, &o);
  nn_fit_opts fo = {.epochs = 2, .batch_size = 6, .verbose = -1, .dist = nn_dist_fit_ops(d)};
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  nn_dist_stats stats;
  nn_dist_get_stats(d, &stats, false);
  /* each value and gradient now, to compare after the move */
  nn_params *p = nn_model_params(m);
  int n = nn_params_count(p);
  ad_tensor *const *ts = nn_params_tensors(p);
  double sum0 = 0, gsum0 = 0;
  for (int i = 0; i < n; i++)
    for (int64_t e = 0; e < ts[i]->size; e++) {
      sum0 += ad_tensor_get(ts[i], e) * (double)(e + i + 1);
      if (ts[i]->grad) gsum0 += ad_tensor_get(ts[i]->grad, e) * (double)(e + i + 1);
    }
  ad_tape_reset(c);
  refuse_all = true;
  nn_dist_free(d); /* MPI_Abort here before */
  refuse_all = false;
  double sum1 = 0, gsum1 = 0;
  for (int i = 0; i < n; i++)
    for (int64_t e = 0; e < ts[i]->size; e++) {
      sum1 += ad_tensor_get(ts[i], e) * (double)(e + i + 1);
      if (ts[i]->grad) gsum1 += ad_tensor_get(ts[i]->grad, e) * (double)(e + i + 1);
    }
  /* on without nn_dist: the same data and steps on every rank */
  nn_fit_opts solo = {.epochs = 1, .batch_size = 6, .verbose = -1};
  ad_status st2 = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &solo, NULL);
  double h = 0;
  for (int i = 0; i < n; i++)
    for (int64_t e = 0; e < ts[i]->size; e++) h += ad_tensor_get(ts[i], e) * (double)(e + 1);
  double lo = h, hi = h;
  MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  snprintf(why, sizeof why,
           "status %s then %s; %lld sharded steps; values %.17g then %.17g, gradients %.17g then "
           "%.17g; after: ranks from %.17g to %.17g",
           ad_status_str(st), ad_status_str(st2), (long long)stats.sharded_steps, sum0, sum1, gsum0,
           gsum1, lo, hi);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
  ad_tape_reset(c);
  return st == AD_OK && st2 == AD_OK && sum0 == sum1 && gsum0 == gsum1 && lo == hi &&
         (!(expect_shm && size / expect_nodes > 1) || stats.sharded_steps > 0);
}

/* Twice: the first warms the arena, the second must give back every byte
 * (the blocks set aside, adopted or not). */
static void leaving_needs_no_memory(ad_ctx *c) {
  bool ok = leaving_once(c);
  long long warm = live_bytes;
  char first[sizeof why];
  snprintf(first, sizeof first, "%s", why);
  ok &= leaving_once(c);
  char both[sizeof why + 64];
  snprintf(both, sizeof both, "%s; %lld bytes after the first round, %lld after the second",
           ok ? why : first, warm, live_bytes);
  check(ok && live_bytes == warm,
        "nn_dist_free moves parameters and gradients out of the windows without memory", both);
}

/* nn_dist_sync on a tape that used the parameters (a forward, no reset):
 * they cannot move to the shared window (ad_tensor_set_data_buffer refuses
 * memory of the engine's that the tape read), so each rank keeps its own
 * copy; nn_dist_free still returns every byte. */
static void sync_on_a_used_tape(ad_ctx *c) {
  nn_dist_opts o = {.bucket_bytes = 8};
  ad_tensor *x, *y;
  make_data(c, AD_F64, 12, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.01);
  ad_tape_reset(c);
  long long before = live_bytes;
  nn_dist *d = dist_new(c, &o);
  ad_tensor *pred = nn_model_forward(m, x);
  ad_status st = pred ? nn_dist_sync(d, m, opt) : AD_ERR_ARG;
  nn_dist_stats stats;
  nn_dist_get_stats(d, &stats, false);
  nn_dist_free(d);
  ad_tape_reset(c);
  snprintf(why, sizeof why, "status %s, shared parameters %d; %lld bytes before, %lld after",
           ad_status_str(st), stats.shared_params, before, live_bytes);
  check(st == AD_OK && !stats.shared_params && live_bytes == before,
        "nn_dist_sync on a used tape: parameters each rank's own, every byte returned", why);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* nn_dist_sync writes rank 0's optimizer state (here the learning rate,
 * 0.1 on rank 0 and 0.2 elsewhere) through its data, as nn_model_load
 * does in one process: an op that read it before then refuses its
 * backward, as after nn_model_load, instead of taking dz/dv = 0.1 for a z
 * computed with 0.2. */
static void sync_notes_optimizer_state(ad_ctx *c) {
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), rank == 0 ? 0.1 : 0.2, 0.9, false, 0);
  ad_tensor *lr = NULL;
  for (int k = 0; k < nn_optimizer_state_count(opt); k++)
    if (strcmp(nn_optimizer_state_names(opt)[k], "sgd.lr") == 0)
      lr = nn_optimizer_state_tensors(opt)[k];
  nn_dist *d = dist_new(c, NULL);
  ad_tape_reset(c);
  ad_tensor *v = lr ? ad_ones(c, lr->dtype, lr->ndim, lr->shape) : NULL;
  ad_tensor_set_requires_grad(v, true);
  ad_tensor *z = ad_sum(c, ad_mul(c, lr, v));
  ad_status st = nn_dist_sync(d, m, opt);
  ad_status bst = z ? ad_backward(c, z, NULL) : AD_ERR_NULL;
  snprintf(why, sizeof why, "sync %s, lr %g, backward %s (%s)", ad_status_str(st),
           lr ? ad_tensor_get(lr, 0) : NAN, ad_status_str(bst), ad_last_error(c));
  check(st == AD_OK && ad_tensor_get(lr, 0) == 0.1 && bst == AD_ERR_STATE &&
            strstr(ad_last_error(c), "was written after the op was recorded"),
        "nn_dist_sync notes its writes into the optimizer state (as nn_model_load)", why);
  ad_clear_error(c);
  ad_tape_reset(c);
  nn_dist_free(d);
  ad_tensor_free(v);
  nn_optimizer_free(opt);
  nn_model_free(m);
}

/* nn_dist_sync again while the tape holds a view of a parameter (reshape
 * shares the parameter's memory): with shard_optimizer the first sync put
 * the parameters in a shared window, which the second frees; so it resets
 * the tape (as nn_dist_free does), and a backward through the view is
 * refused instead of reading the freed window. Without the window the
 * sync writes rank 0's values into the parameter, and that backward is
 * refused as after any write into a tensor the tape used. */
static void sync_resets_views(ad_ctx *c) {
  nn_dist_opts o = {.bucket_bytes = 8};
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.01);
  nn_dist *d = dist_new(c, &o);
  ad_tape_reset(c);
  ad_status st = nn_dist_sync(d, m, opt);
  ad_tensor *w = nn_params_tensor(nn_model_params(m), 0);
  int64_t n = w->size;
  ad_tensor *v = ad_reshape(c, w, 1, &n);
  ad_tensor *loss = ad_sum(c, ad_mul(c, v, v)); /* its backward reads v */
  if (st == AD_OK) st = nn_dist_sync(d, m, opt);
  bool shared = base.shard_optimizer && expect_shm && size / expect_nodes > 1;
  ad_status bst = loss ? ad_backward(c, loss, NULL) : AD_ERR_NULL;
  snprintf(why, sizeof why, "sync %s, backward %s (\"%s\")", ad_status_str(st), ad_status_str(bst),
           ad_last_error(c));
  /* otherwise the sync wrote rank 0's values into the parameters an op of
   * the tape read: that backward refuses too (ad_tensor_mark_modified) */
  check(st == AD_OK && bst == AD_ERR_STATE &&
            strstr(ad_last_error(c), shared ? "reset" : "was written after the op was recorded"),
        "nn_dist_sync with the parameters shared resets the tape (its views read the window)", why);
  ad_clear_error(c);
  nn_dist_free(d);
  ad_tape_reset(c);
  nn_params_zero_grad(nn_model_params(m));
  nn_optimizer_free(opt);
  nn_model_free(m);
}

/* An op that read this rank's own gradient (or buffer) before grad_end
 * wrote the sum (rank 0's running statistics) over it: a backward through
 * that op then refuses, as after nn_clip_grad_norm in one process, instead
 * of differentiating with values the op did not read. The buckets launch
 * in grad_end (no_overlap), so the op reads the gradient before any write;
 * one rank has nothing to write (its gradients are the sums). With
 * oom, the last rank's note of the write runs out of memory (a context of
 * its own, whose list of writes is not there yet): every rank fails the
 * step with its message. */
static void reduced_writes_noted(bool oom) {
  ad_ctx *c = ad_ctx_new_with_alloc(count_alloc, NULL);
  nn_dist_opts o = {.bucket_bytes = 8, .no_overlap = true};
  ad_tensor *x, *y;
  make_data(c, AD_F64, 12, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, BATCHNORM, 5);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  nn_dist *d = dist_new(c, &o);
  const nn_dist_ops *ops = nn_dist_fit_ops(d);
  nn_params *p = nn_model_params(m);
  ad_status st = ops->sync(ops->ud, m, opt);
  ad_tensor *w = nn_params_tensor(p, 0), *rm = nn_params_tensor(nn_model_buffers(m), 0);
  int64_t b = 12 * rank / size, e = 12 * (rank + 1) / size;
  ad_tape_reset(c);
  nn_params_zero_grad(p);
  ad_tensor *l = nn_cross_entropy_loss(c, nn_model_forward(m, ad_narrow(c, x, 0, b, e - b)),
                                       ad_narrow(c, y, 0, b, e - b), NN_MEAN);
  if (st == AD_OK) st = ops->grad_begin(ops->ud, p, l, e - b, 12);
  if (st == AD_OK) st = ad_backward(c, l, NULL);
  ad_tensor *vs[2] = {NULL, NULL}, *read[2] = {w->grad, rm}, *z[2] = {NULL, NULL};
  double was[2] = {NAN, NAN};
  for (int k = 0; k < 2 && st == AD_OK; k++) { /* sum(read * v): its backward reads read */
    vs[k] = ad_ones(c, AD_F64, read[k]->ndim, read[k]->shape);
    ad_tensor_set_requires_grad(vs[k], true);
    z[k] = ad_sum(c, ad_mul(c, read[k], vs[k]));
    was[k] = ad_tensor_get(read[k], 0);
  }
  if (oom && rank == size - 1) fail_in = 1;
  st = ops->grad_end(ops->ud, p, st);
  fail_in = 0;
  char msg[256];
  snprintf(msg, sizeof msg, "%s", ad_last_error(c));
  bool ok = true;
  int refused = 0;
  for (int k = 0; k < 2 && !oom; k++) {
    bool changed = ad_tensor_get(read[k], 0) != was[k];
    ad_status bst = z[k] ? ad_backward(c, z[k], NULL) : AD_ERR_NULL;
    bool here = changed ? bst == AD_ERR_STATE &&
                              strstr(ad_last_error(c), "was written after the op was recorded")
                        : bst == AD_OK && ad_tensor_get(vs[k]->grad, 0) == was[k];
    refused += changed;
    if (!here)
      snprintf(why, sizeof why, "%s: grad_end %s, changed %d, backward %s (%s)",
               k ? "running mean" : "gradient", ad_status_str(st), changed, ad_status_str(bst),
               ad_last_error(c));
    ok &= here;
    ad_clear_error(c);
  }
  if (oom) {
    char want[64];
    snprintf(want, sizeof want, "dist: rank %d stopped: dist: ", size - 1);
    ok = size == 1 ? st == AD_OK
                   : st == AD_ERR_OOM && strstr(msg, "out of memory (to note") &&
                         (rank == size - 1 ? strncmp(msg, "dist: ", 6) == 0
                                           : strncmp(msg, want, strlen(want)) == 0);
    snprintf(why, sizeof why, "grad_end %s: %s", ad_status_str(st), msg);
  } else {
    /* ranks other than 0 take rank 0's statistics; every rank the sum */
    ok &= size == 1 ? refused == 0 : refused == (rank == 0 ? 1 : 2);
    if (!ok && why[0] == 0) snprintf(why, sizeof why, "%d refused", refused);
  }
  check(st == (oom && size > 1 ? AD_ERR_OOM : AD_OK) && ok,
        oom ? "a note of a reduced gradient's write out of memory fails the step on every rank"
            : "a backward through an op that read a gradient or buffer grad_end wrote refuses",
        why);
  why[0] = 0;
  ad_tape_reset(c);
  nn_dist_free(d);
  for (int k = 0; k < 2; k++) ad_tensor_free(vs[k]);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
  ad_ctx_free(c);
}

/* After nn_fit on the shared-memory path the gradients are the node's
 * reduced buffer in the window; an op that reads one (a norm computed with
 * ops) keeps it from moving on this tape. nn_dist_free must still leave the
 * gradients readable (in each rank's memory, the reduced values). */
static void free_after_an_op_read_a_gradient(ad_ctx *c) {
  nn_dist_opts o = {.bucket_bytes = 8};
  ad_tensor *x, *y;
  make_data(c, AD_F64, 24, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  nn_dist *d = dist_new(c, &o);
  nn_fit_opts fo = {.epochs = 1, .batch_size = 12, .verbose = -1, .dist = nn_dist_fit_ops(d)};
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  ad_tensor *g = nn_params_tensor(nn_model_params(m), 0)->grad;
  ad_tensor *sq = g ? ad_sum(c, ad_mul(c, g, g)) : NULL;
  double want = sq ? ad_tensor_item(sq) : NAN;
  nn_dist_free(d);
  g = nn_params_tensor(nn_model_params(m), 0)->grad;
  double got = 0;
  for (int64_t i = 0; g && i < g->size; i++) got += ad_tensor_get(g, i) * ad_tensor_get(g, i);
  snprintf(why, sizeof why, "status %s, sum of squares %.17g then %.17g", ad_status_str(st), want,
           got);
  check(st == AD_OK && got == want,
        "nn_dist_free after an op read a gradient: the gradients stay readable", why);
  ad_tape_reset(c);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* An optimizer over its own list of the model's parameters (not
 * nn_model_params itself): nn_dist_ops.step cannot shard it, so every rank
 * takes the whole step; with shard_optimizer the parameters must then still
 * be each rank's own (one copy per node would take the step once per rank). */
static void optimizer_own_list(ad_ctx *c) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 48, &x, &y);
  nn_model *m[2];
  nn_optimizer *opt[2];
  nn_params *lists[2];
  for (int k = 0; k < 2; k++) {
    m[k] = make_model(c, AD_F64, 8, PLAIN, 5);
    nn_params *mp = nn_model_params(m[k]);
    lists[k] = nn_params_new(c);
    for (int i = 0; i < nn_params_count(mp); i++)
      nn_params_add(lists[k], nn_params_name(mp, i), nn_params_tensor(mp, i), false);
    opt[k] = nn_sgd_new(lists[k], 0.1, 0.9, false, 0);
  }
  nn_dist_opts o = {.bucket_bytes = 8};
  nn_dist *d = dist_new(c, &o);
  nn_fit_opts fo = {.epochs = 2, .batch_size = 12, .seed = 3, .verbose = -1};
  ad_status s1 = nn_fit(m[0], opt[0], nn_cross_entropy_loss, x, y, &fo, NULL);
  fo.dist = nn_dist_fit_ops(d);
  ad_status s2 = nn_fit(m[1], opt[1], nn_cross_entropy_loss, x, y, &fo, NULL);
  double rel = max_rel(nn_model_params(m[1]), nn_model_params(m[0]));
  snprintf(why, sizeof why, "status %s %s, max relative difference %g", ad_status_str(s1),
           ad_status_str(s2), rel);
  check(s1 == AD_OK && s2 == AD_OK && rel <= 1e-12,
        "an optimizer over its own list of the parameters equals one process", why);
  nn_dist_free(d);
  for (int k = 0; k < 2; k++) {
    nn_optimizer_free(opt[k]);
    nn_params_free(lists[k]);
    nn_model_free(m[k]);
  }
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* After a sharded step each rank holds its slices of the optimizer state;
 * nn_dist_save gathers the others' slices into its state tensors through
 * their data. An op that read such a tensor before (here one of Adam's
 * moments) then refuses its backward, as after nn_dist_sync, instead of
 * differentiating at the gathered values it did not read. */
static void gather_notes_optimizer_state(ad_ctx *c) {
  nn_dist_opts o = {.bucket_bytes = 8, .shard_optimizer = true};
  own_shard = true;
  char path[512];
  snprintf(path, sizeof path, "%s/mpi_gather_np%d.safetensors", tmpdir, size);
  ad_tensor *x, *y;
  make_data(c, AD_F64, 12, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.1);
  nn_dist *d = dist_new(c, &o);
  const nn_dist_ops *ops = nn_dist_fit_ops(d);
  ad_status st = ops->sync(ops->ud, m, opt);
  if (st == AD_OK)
    st = ops_step_rows(ops, m, x, y, 12 * rank / size, 12 * (rank + 1) / size, 12, false);
  if (st == AD_OK) st = ops->step(ops->ud, opt);
  ad_tensor *m1 = NULL; /* the largest moment: sliced over the ranks of a node */
  for (int k = 0; k < nn_optimizer_state_count(opt); k++) {
    ad_tensor *t = nn_optimizer_state_tensors(opt)[k];
    if (nn_optimizer_state_param(opt, k) >= 0 && (!m1 || t->size > m1->size)) m1 = t;
  }
  ad_tape_reset(c);
  ad_tensor *v = m1 ? ad_ones(c, AD_F64, m1->ndim, m1->shape) : NULL;
  ad_tensor_set_requires_grad(v, true);
  ad_tensor *z = ad_sum(c, ad_mul(c, m1, v));
  double before = 0, after = 0;
  for (int64_t i = 0; m1 && i < m1->size; i++) before += fabs(ad_tensor_get(m1, i));
  ad_status sst = nn_dist_save(d, m, opt, path);
  for (int64_t i = 0; m1 && i < m1->size; i++) after += fabs(ad_tensor_get(m1, i));
  bool changed = before != after;
  ad_status bst = z ? ad_backward(c, z, NULL) : AD_ERR_NULL;
  snprintf(why, sizeof why, "step %s, save %s, state changed %d, backward %s (%s)",
           ad_status_str(st), ad_status_str(sst), changed, ad_status_str(bst), ad_last_error(c));
  check(st == AD_OK && sst == AD_OK &&
            (changed ? bst == AD_ERR_STATE &&
                           strstr(ad_last_error(c), "was written after the op was recorded")
                     : bst == AD_OK),
        "nn_dist_save's gather of the sharded optimizer state is noted", why);
  ad_clear_error(c);
  if (rank == 0) remove(path);
  ad_tape_reset(c);
  nn_dist_free(d);
  ad_tensor_free(v);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
  own_shard = false;
}

/* The model and optimizer freed before nn_dist_free (as bench/dist_mlp
 * does): the bindings of their gradients and (sharded, on a node of
 * several ranks) parameters to the windows are dropped without an error. */
static void model_freed_first(ad_ctx *c) {
  nn_dist_opts o = {.bucket_bytes = 8, .shard_optimizer = true};
  own_shard = true;
  ad_tensor *x, *y;
  make_data(c, AD_F64, 48, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.01);
  nn_dist *d = dist_new(c, &o);
  nn_fit_opts fo = {.epochs = 1, .batch_size = 12, .verbose = -1, .dist = nn_dist_fit_ops(d)};
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  nn_dist_stats stats;
  nn_dist_get_stats(d, &stats, false);
  nn_optimizer_free(opt);
  nn_model_free(m);
  /* new tensors in the freed parameters' headers, with values in the
   * caller's memory: not nn_dist's to move. Headers are reused oldest
   * first while more than 64 are dead: 80 more dead ones push the
   * parameters' out of that reserve, and enough new tensors reach them. */
  enum { MINE = 6000 };
  int64_t one = 1;
  for (int i = 0; i < 80; i++) ad_tensor_free(ad_zeros(c, AD_F64, 1, &one));
  static ad_tensor *mine[MINE];
  static double vals[MINE];
  bool bound = true;
  for (int i = 0; i < MINE; i++) {
    mine[i] = ad_zeros(c, AD_F64, 1, &one);
    bound &= mine[i] && ad_tensor_set_data_buffer(mine[i], &vals[i], true) == AD_OK;
  }
  ad_set_error(c, AD_ERR_ARG, "the caller's own error"); /* kept by nn_dist_free */
  nn_dist_free(d);
  for (int i = 0; i < MINE; i++) {
    bound &= mine[i]->data == (void *)&vals[i];
    ad_tensor_free(mine[i]);
  }
  check(bound, "nn_dist_free leaves tensors made in freed parameters' headers alone", NULL);
  snprintf(why, sizeof why, "status %s, shared parameters %d, then \"%s\"", ad_status_str(st),
           stats.shared_params, ad_last_error(c));
  check(st == AD_OK && ad_last_status(c) == AD_ERR_ARG &&
            !strcmp(ad_last_error(c), "the caller's own error") &&
            stats.shared_params == (expect_shm && size / expect_nodes > 1),
        "nn_dist_free after the model was freed (the caller's error kept)", why);
  ad_clear_error(c);
  ad_tensor_free(x);
  ad_tensor_free(y);
  own_shard = false;
}

/* A parameter frozen after training, then nn_dist_free, then trained
 * again: its gradient buffer was in the freed window unless nn_dist_free
 * moved it out whether or not the parameter still required a gradient. */
static void frozen_then_freed(ad_ctx *c) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 48, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.01);
  nn_dist *d = dist_new(c, NULL);
  nn_fit_opts fo = {.epochs = 1, .batch_size = 12, .verbose = -1, .dist = nn_dist_fit_ops(d)};
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  ad_tensor *w = nn_params_tensors(nn_model_params(m))[0];
  ad_tensor_set_requires_grad(w, false);
  nn_dist_free(d);
  ad_tensor_set_requires_grad(w, true);
  nn_params_zero_grad(nn_model_params(m));
  ad_tape_reset(c);
  ad_tensor *l = nn_cross_entropy_loss(c, nn_model_forward(m, x), y, NN_MEAN);
  ad_status bs = l ? ad_backward(c, l, NULL) : AD_ERR_ARG;
  snprintf(why, sizeof why, "fit %s, backward %s: %s", ad_status_str(st), ad_status_str(bs),
           ad_last_error(c));
  check(st == AD_OK && bs == AD_OK && w->grad && isfinite(ad_tensor_get(w->grad, 0)),
        "a parameter frozen before nn_dist_free trains again afterwards", why);
  ad_tape_reset(c);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* --kill DIR: trains for ever, rank 0 saving DIR/kill.safetensors after
 * every epoch (nn_dist_save); after the save of epoch 4 the last rank
 * kills itself (SIGKILL). mpirun must then end the job, non-zero
 * (tests/test_mpi_kill.sh times it). --check FILE: the checkpoint loads
 * and is epoch 4's (16 optimizer steps). */
typedef struct killer {
  nn_dist *d;
  nn_model *m;
  nn_optimizer *opt;
  char path[512];
} killer;

static bool save_then_die(int epoch, const nn_history *h, void *ud) {
  (void)h;
  killer *k = ud;
  if (nn_dist_save(k->d, k->m, k->opt, k->path) != AD_OK) return false;
  if (epoch == 3 && rank == size - 1) {
    fprintf(stderr, "rank %d: killing itself after the checkpoint of epoch %d\n", rank, epoch + 1);
    fflush(stderr);
    raise(SIGKILL);
  }
  return true;
}

static int kill_mode(ad_ctx *c, const char *mode, const char *arg) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 48, &x, &y);
  killer k = {.m = make_model(c, AD_F64, 8, PLAIN, 5)};
  k.opt = nn_adam_new(nn_model_params(k.m), 0.01);
  int rc = 1;
  if (strcmp(mode, "--check") == 0) {
    ad_status st = nn_model_load(k.m, k.opt, arg);
    printf("load %s: %s, %lld steps%s%s\n", arg, ad_status_str(st),
           (long long)nn_optimizer_steps(k.opt), st ? ": " : "", st ? ad_last_error(c) : "");
    rc = st == AD_OK && nn_optimizer_steps(k.opt) == 16 ? 0 : 1;
  } else {
    k.d = dist_new(c, NULL);
    snprintf(k.path, sizeof k.path, "%s/kill.safetensors", arg);
    nn_fit_opts fo = {.epochs = 1000000,
                      .batch_size = 12,
                      .verbose = -1,
                      .dist = nn_dist_fit_ops(k.d),
                      .on_epoch_end = save_then_die,
                      .ud = &k};
    nn_fit(k.m, k.opt, nn_cross_entropy_loss, x, y, &fo, NULL);
    fprintf(stderr, "rank %d: nn_fit returned: %s\n", rank, ad_last_error(c));
    nn_dist_free(k.d);
  }
  nn_optimizer_free(k.opt);
  nn_model_free(k.m);
  ad_tensor_free(x);
  ad_tensor_free(y);
  return rc;
}

/* --buckets: the ranks ask for different bucket sizes, so their gradient
 * buckets differ: the first step must fail on every rank with a message
 * naming it (a rank reading another's segment by its own offsets would
 * read the wrong gradients or past the end; an allreduce of other lengths
 * fails in MPI), not train on, and the job must be able to go on with
 * buckets that agree. Exit status 0 when this rank saw all that;
 * tests/test_mpi_buckets.sh checks it and the messages. */
static int buckets_mode(ad_ctx *c) {
  ad_tensor *x, *y;
  make_data(c, AD_F64, 48, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  nn_dist_opts o = {.bucket_bytes = rank == 0 ? 8 : 0, .no_shm = base.no_shm};
  nn_dist *d = nn_dist_new(c, &o);
  nn_fit_opts fo = {.epochs = 1, .batch_size = 12, .verbose = -1, .dist = nn_dist_fit_ops(d)};
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  printf("rank %d: nn_fit returned %s: %s\n", rank, ad_status_str(st), ad_last_error(c));
  bool ok = st == AD_ERR_SHAPE && nn_optimizer_steps(opt) == 0 &&
            strstr(ad_last_error(c), "the ranks' gradient buckets differ") != NULL;
  nn_dist_free(d);
  /* the same buckets on every rank: the job goes on and trains */
  ad_clear_error(c);
  o.bucket_bytes = 0;
  d = nn_dist_new(c, &o);
  fo.dist = nn_dist_fit_ops(d);
  st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL);
  printf("rank %d: then with the same buckets: %s, %lld steps\n", rank, ad_status_str(st),
         (long long)nn_optimizer_steps(opt));
  ok &= st == AD_OK && nn_optimizer_steps(opt) == 4;
  printf("rank %d: %s\n", rank, ok ? "as expected" : "NOT as expected");
  nn_dist_free(d);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
  return ok ? 0 : 1;
}

/* After nn_dist_finalize, nn_dist_new and nn_dist_init are AD_ERR_STATE
 * (both called MPI after MPI_Finalize, which ended the job). No MPI to
 * agree through: each rank checks its own, rank 0 prints, and a rank that
 * fails makes its exit status (and so mpirun's) non-zero. */
static void after_finalize(void) {
  ad_ctx *c = ad_ctx_new();
  nn_dist *d = nn_dist_new(c, NULL);
  bool ok = d == NULL && ad_last_status(c) == AD_ERR_STATE &&
            strstr(ad_last_error(c), "finalised") != NULL;
  ok &= nn_dist_init(NULL, NULL) == AD_ERR_STATE;
  if (!ok) fprintf(stderr, "rank %d: after nn_dist_finalize: %s\n", rank, ad_last_error(c));
  ntest++;
  nfail += !ok;
  if (rank == 0)
    printf(
        "%sok %d - nn_dist_new and nn_dist_init after nn_dist_finalize are AD_ERR_STATE (np %d)\n",
        ok ? "" : "not ", ntest, size);
  ad_ctx_free(c);
}

/* A onecycle's cycled momentum follows the schedule's step, which is
 * state: rank 0 resumed (here: stepped) alone, the others fresh, the sync
 * takes rank 0's step, as it takes its rate, and its momentum with it,
 * instead of refusing the momentum as a setting that differs. */
static void sync_takes_rank0_cycle(ad_ctx *c) {
  for (int k = 0; k < 2; k++) {
    nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
    nn_optimizer *opt = k ? nn_adam_new(nn_model_params(m), 0.1)
                          : nn_sgd_new(nn_model_params(m), 0.1, 0.9, false, 0);
    nn_schedule_ext2 s = nn_schedule_ext2_defaults(NN_SCHED_ONECYCLE);
    s.max_lr = 0.1, s.total_steps = 20;
    ad_status st = nn_optimizer_set_schedule_ext2(opt, &s);
    for (int t = 0; t < 5 && rank == 0 && st == AD_OK; t++) st = nn_optimizer_schedule_step(opt);
    nn_dist *d = dist_new(c, NULL);
    if (st == AD_OK) st = nn_dist_sync(d, m, opt);
    const nn_opt_config *cf = nn_optimizer_config(opt);
    double mom = k ? cf->beta1 : cf->momentum;
    snprintf(why, sizeof why, "%s: status %s, lr %.17g, momentum %.17g (%s)", k ? "adam" : "sgd",
             ad_status_str(st), nn_optimizer_lr(opt), mom, ad_last_error(c));
    check(st == AD_OK && nn_optimizer_lr(opt) == nn_schedule_ext2_lr(&s, 0.1, 5) &&
              mom == nn_schedule_ext2_momentum(&s, 5),
          "a onecycle stepped on rank 0 only: the sync takes its step, rate and momentum", why);
    ad_clear_error(c);
    nn_dist_free(d);
    nn_optimizer_free(opt);
    nn_model_free(m);
  }
}

/* An optimizer with two parameter groups (nn_optimizer_add_param_group:
 * the weights at Adam's lr 0.01 with weight decay, the biases at 0.001
 * without) trains under nn_fit as in one process, on every path, its
 * steps sharded where the model's are (--shard on a node of several ranks:
 * nn_optimizer_step_ranges' ranges then follow the groups' lists, whose
 * entries interleave in the model's); a group's settings differing on the
 * last rank are refused on every rank, naming the group. */
static nn_optimizer *grouped_adam(nn_model *m, nn_params **lists, double bias_wd) {
  nn_params *p = nn_model_params(m);
  lists[0] = nn_params_new(nn_model_ctx(m)), lists[1] = nn_params_new(nn_model_ctx(m));
  for (int i = 0; i < nn_params_count(p); i++)
    nn_params_add(lists[strstr(nn_params_name(p, i), "bias") != NULL], nn_params_name(p, i),
                  nn_params_tensor(p, i), false);
  nn_opt_config_ext a = nn_opt_defaults_ext(NN_OPT_ADAM, 0.01), b = a;
  a.base.weight_decay = 0.1;
  b.base.lr = 0.001, b.base.weight_decay = bias_wd;
  nn_optimizer *o = nn_optimizer_new_ext(lists[0], &a);
  if (o && nn_optimizer_add_param_group(o, lists[1], &b) != AD_OK) nn_optimizer_free(o), o = NULL;
  return o;
}

/* A tensor the optimizer steps outside the model (here a group over a
 * tensor the model never reads) would keep each rank's own gradient, since
 * only the model's are summed: nn_fit refuses it on every rank, naming it,
 * before the first step. */
static void outside_tensor_refused(ad_ctx *c) {
  if (size < 2) return; /* one rank: its gradients are the sums */
  ad_tensor *x, *y, *s = ad_zeros(c, AD_F64, 1, (int64_t[1]){3});
  make_data(c, AD_F64, 50, &x, &y);
  nn_model *m = make_model(c, AD_F64, 8, PLAIN, 5);
  nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.01);
  nn_params *extra = nn_params_new(c);
  nn_opt_config_ext g = nn_opt_defaults_ext(NN_OPT_ADAM, 0.01);
  ad_status st = s && o && extra && ad_tensor_set_requires_grad(s, true) == AD_OK &&
                         nn_params_add(extra, "scale", s, false) == AD_OK
                     ? nn_optimizer_add_param_group(o, extra, &g)
                     : AD_ERR_OOM;
  nn_dist *d = dist_new(c, NULL);
  nn_fit_opts fo = {
      .epochs = 1, .batch_size = 16, .seed = 3, .verbose = -1, .dist = nn_dist_fit_ops(d)};
  if (st == AD_OK) st = nn_fit(m, o, nn_cross_entropy_loss, x, y, &fo, NULL);
  snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(st), ad_last_error(c));
  check(st == AD_ERR_ARG && strstr(ad_last_error(c), "steps 'scale', which is not among the "
                                                     "model's parameters"),
        "a group over a tensor outside the model: nn_fit refuses it on every rank", why);
  ad_clear_error(c);
  nn_dist_free(d);
  nn_optimizer_free(o);
  nn_params_free(extra);
  nn_model_free(m);
  ad_tensor_free(s);
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* One group over the model's parameters in reverse order: sharded as the
 * model's list is (its ranges follow the optimizer's entries). */
static nn_optimizer *reversed_adam(nn_model *m, nn_params **lists, double unused) {
  (void)unused;
  nn_params *p = nn_model_params(m);
  lists[0] = nn_params_new(nn_model_ctx(m)), lists[1] = nn_params_new(nn_model_ctx(m));
  for (int i = nn_params_count(p) - 1; i >= 0; i--)
    nn_params_add(lists[0], nn_params_name(p, i), nn_params_tensor(p, i), false);
  return nn_adam_new(lists[0], 0.01);
}

static void param_groups_variant(ad_ctx *c, bool reversed) {
  const char *what = reversed ? "one group in reverse order" : "parameter groups";
  ad_tensor *x, *y;
  make_data(c, AD_F64, 50, &x, &y);
  nn_model *m[2];
  nn_optimizer *o[2];
  nn_params *lists[2][2];
  nn_history *h[2] = {NULL, NULL};
  ad_status st[2];
  nn_dist *d = NULL;
  for (int k = 0; k < 2; k++) { /* k 0: one process; 1: every rank */
    m[k] = make_model(c, AD_F64, 8, PLAIN, 5);
    o[k] = (reversed ? reversed_adam : grouped_adam)(m[k], lists[k], 0);
    if (k) d = dist_new(c, NULL);
    nn_fit_opts fo = {.epochs = 3,
                      .batch_size = 16,
                      .seed = 3,
                      .verbose = -1,
                      .dist = k ? nn_dist_fit_ops(d) : NULL};
    st[k] = o[k] ? nn_fit(m[k], o[k], nn_cross_entropy_loss, x, y, &fo, &h[k]) : AD_ERR_ARG;
  }
  nn_dist_stats stats;
  nn_dist_get_stats(d, &stats, false);
  snprintf(why, sizeof why, "status %s %s: %s", ad_status_str(st[0]), ad_status_str(st[1]),
           ad_last_error(c));
  char name[160];
  snprintf(name, sizeof name, "%s: trains", what);
  check(st[0] == AD_OK && st[1] == AD_OK, name, why);
  double rel = max_rel(nn_model_params(m[1]), nn_model_params(m[0]));
  bool sharded = base.shard_optimizer && expect_shm && size / expect_nodes > 1;
  snprintf(why, sizeof why, "max relative difference %g, %lld sharded steps of %lld", rel,
           (long long)stats.sharded_steps, (long long)stats.steps);
  check(rel <= 1e-12 && same_bits_as_rank0(nn_model_params(m[1])) &&
            (sharded ? stats.sharded_steps == stats.steps && stats.steps > 0
                     : stats.sharded_steps == 0),
        strcat(strcpy(name, what), ": parameters equal one process's on every rank"), why);
  int ns = nn_optimizer_state_count(o[0]);
  rel = max_rel_tensors(nn_optimizer_state_tensors(o[1]), nn_optimizer_state_tensors(o[0]), ns);
  snprintf(why, sizeof why, "max relative difference %g", rel);
  check(ns == nn_optimizer_state_count(o[1]) && rel <= 1e-12,
        strcat(strcpy(name, what), ": optimizer state equals one process's"), why);
  for (int k = 0; k < 2; k++) {
    nn_history_free(h[k]);
    nn_optimizer_free(o[k]);
    nn_params_free(lists[k][0]), nn_params_free(lists[k][1]);
    nn_model_free(m[k]);
  }
  nn_dist_free(d);
  if (size > 1 && !reversed) { /* the biases' weight decay differs on the last rank */
    nn_model *mm = make_model(c, AD_F64, 8, PLAIN, 5);
    nn_params *l[2];
    nn_optimizer *oo = grouped_adam(mm, l, rank == size - 1 ? 0.5 : 0);
    d = dist_new(c, NULL);
    ad_status s = nn_dist_sync(d, mm, oo);
    snprintf(why, sizeof why, "status %s, message: %s", ad_status_str(s), ad_last_error(c));
    check(s == AD_ERR_SHAPE &&
              strstr(ad_last_error(c), "differs from rank 0: parameter group 1: ") &&
              strstr(ad_last_error(c), "weight_decay 0.5"),
          "parameter groups: a group's settings differing on one rank: every rank names it", why);
    ad_clear_error(c);
    nn_dist_free(d);
    nn_optimizer_free(oo);
    nn_params_free(l[0]), nn_params_free(l[1]);
    nn_model_free(mm);
  }
  ad_tensor_free(x);
  ad_tensor_free(y);
}

static void param_groups(ad_ctx *c) {
  param_groups_variant(c, false);
  param_groups_variant(c, true);
}

static void other_checks(ad_ctx *c);

int main(int argc, char **argv) {
  if (nn_dist_init(&argc, &argv) != AD_OK) return 1;
  if (argc > 1 && strcmp(argv[1], "--buckets") == 0) { /* [--no-shm] */
    base.no_shm = argc > 2 && strcmp(argv[2], "--no-shm") == 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    ad_set_num_threads(1);
    ad_ctx *c = ad_ctx_new();
    int rc = buckets_mode(c);
    ad_ctx_free(c);
    nn_dist_finalize();
    return rc;
  }
  if (argc > 2 && (strcmp(argv[1], "--kill") == 0 || strcmp(argv[1], "--check") == 0)) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    ad_set_num_threads(1);
    ad_ctx *c = ad_ctx_new();
    int rc = kill_mode(c, argv[1], argv[2]);
    ad_ctx_free(c);
    nn_dist_finalize();
    return rc;
  }
  if (argc > 1) tmpdir = argv[1];
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--no-shm") == 0) {
      base.no_shm = true;
    } else if (strcmp(argv[i], "--shard") == 0) {
      base.shard_optimizer = true;
    } else if (strcmp(argv[i], "--sums-only") == 0) {
      sums_only = true;
    } else if (strcmp(argv[i], "--ranks-per-node") == 0 && i + 1 < argc) {
      base.ranks_per_node = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--expect") == 0 && i + 2 < argc) {
      expect_shm = strcmp(argv[i + 1], "shm") == 0;
      expect_nodes = atoi(argv[i + 2]);
      i += 2;
    } else {
      fprintf(stderr, "test_mpi_dist: unknown argument %s\n", argv[i]);
      nn_dist_finalize();
      return 2;
    }
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  ad_set_num_threads(1); /* ranks share the cores */
  ad_ctx *c = ad_ctx_new_with_alloc(count_alloc, NULL);
  equals_single(c, AD_F64, false, 8, 1e-12, "f64 sgd, a bucket per parameter");
  equals_single(c, AD_F64, true, 0, 1e-12, "f64 adam, one bucket");
  equals_single(c, AD_F32, true, 8, 1e-5, "f32 adam, a bucket per parameter");
  clipping(c);
  tied_weights(c);
  deterministic(c);
  paths_same_bits(c);
  if (!sums_only) other_checks(c);
  ad_ctx_free(c);
  nn_dist_finalize();
  after_finalize();
  if (rank == 0) printf("1..%d\n", ntest);
  return nfail ? 1 : 0;
}

/* The checks after main's first seven, those of the sums' values (one
 * process's, with clipping, with tied weights, the deterministic mode's,
 * the shared-memory paths' against MPI's), which --sums-only runs alone. */
/* Under the op profile the distributed step marks its phases on every
 * rank, one call each a step (the backward's on ranks with rows), the
 * reduction's wait included and no batch range (the fetch is every
 * rank's); the parameters are the bits trained without it. */
static void profile_ranges(ad_ctx *c) {
  run a = train(c, AD_F64, PLAIN, true, 24, 8, 2, &base, true);
  ad_status st = ad_profile_start(c);
  run b = train(c, AD_F64, PLAIN, true, 24, 8, 2, &base, true);
  if (st == AD_OK) st = ad_profile_stop(c);
  check(st == AD_OK && a.st == AD_OK && b.st == AD_OK &&
            max_rel(nn_model_params(a.m), nn_model_params(b.m)) == 0,
        "the op profile's ranges leave the distributed training's bits", ad_last_error(c));
  static const char *const names[] = {"nn_fit.zero_grad", "nn_fit.forward",  "nn_fit.reduce",
                                      "nn_fit.optimizer", "nn_fit.backward", "nn_fit.batch"};
  ad_profile_range r[8];
  int64_t n = ad_profile_read_ranges(c, r, 8);
  bool ok = n >= 4 && n <= 5;
  for (int k = 0; k < 6 && ok; k++) {
    int64_t calls = 0;
    for (int64_t i = 0; i < n; i++)
      if (!strcmp(r[i].name, names[k])) calls = r[i].calls;
    ok = k < 4 ? calls == 6 : k == 4 ? calls <= 6 : calls == 0; /* 3 batches of 8, 2 epochs */
    if (!ok)
      snprintf(why, sizeof why, "%s: %lld calls (%lld ranges)", names[k], (long long)calls,
               (long long)n);
  }
  check(ok, "nn_fit's distributed step marks its phases, the reduction's wait among them", why);
  run_free(&a);
  run_free(&b);
  /* a range that cannot open before the reduction (rank 0's ranges
   * already AD_PROFILE_RANGE_DEPTH deep) fails that step on every rank */
  st = ad_profile_start(c);
  for (int k = 0; rank == 0 && k < AD_PROFILE_RANGE_DEPTH; k++)
    if (st == AD_OK) st = ad_profile_range_push(c, "held");
  run f = train(c, AD_F64, PLAIN, true, 24, 8, 1, &base, true);
  snprintf(why, sizeof why, "status %s: %s", ad_status_str(f.st), ad_last_error(c));
  check(st == AD_OK && f.st != AD_OK &&
            (rank != 0 || (f.st == AD_ERR_STATE && strstr(ad_last_error(c), "profile_range_push"))),
        "a range nn_fit cannot open before the reduction stops every rank", why);
  ad_clear_error(c);
  ad_profile_stop(c);
  run_free(&f);
}

static void other_checks(ad_ctx *c) {
  profile_ranges(c);
  if (size > 1) mismatch(c); /* (these need another rank to differ) */
  if (size > 1) ties_differ(c);
  if (size > 1) empty_list_differs();
  broadcast_start(c);
  sums(c);
  wide_variadic_op(c);
  failure_inside_backward(c);
  out_of_memory_anywhere(c);
  layout_after_params_replaced(c);
  same_bucket_other_params(c);
  model_made_again_in_place(c);
  another_list_of_the_same_tensors(c);
  list_on_another_context(c);
  optimizer_freed_alone(c);
  failing_rank(c);
  failure_leaves_state_whole(c);
  options_disagree(c);
  empty_list_keeps_path(c);
  param_groups(c);
  outside_tensor_refused(c);
  unsharded_after_sharded(c);
  sharded_entries(c);
  grad_begin_twice(c);
  new_fails_on_one_rank(c);
  model_on_another_context(c);
  batches_differ(c);
  validation_parts(c);
  fit_setup_fails_on_one_rank(c);
  sync_out_of_memory(c);
  sum_out_of_memory(c);
  step_after_synced_model_freed(c);
  failed_load_keeps_state_to_gather(c);
  partial_decisions(c);
  dropout_and_batchnorm(c);
  checkpoints(c);
  memory_returns(c);
  leaving_needs_no_memory(c);
  model_freed_first(c);
  frozen_then_freed(c);
  optimizer_own_list(c);
  sync_on_a_used_tape(c);
  sync_resets_views(c);
  sync_notes_optimizer_state(c);
  sync_takes_rank0_cycle(c);
  gather_notes_optimizer_state(c);
  free_after_an_op_read_a_gradient(c);
  reduced_writes_noted(false);
  reduced_writes_noted(true);
}
