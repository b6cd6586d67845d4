/* test_parallel.c: the library's threads (ad_set_num_threads) and
 * ad_parallel_for, and that ops split over threads give what one thread
 * gives: elementwise ops and sum_to bit for bit, matrix products to within
 * the last bits (OpenBLAS rounds differently on the parts of a split
 * product, as it does under its own threading; the built-in GEMM does not),
 * and parameter gradients that ad_backward adds straight into grad. */
#include "ad_ext.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_alloc.h"

TEST_CTX_SUITE(parallel);

Test(parallel, thread_count) {
  cr_assert_eq(ad_num_threads(), 1);
  cr_assert_eq(ad_set_num_threads(0), AD_ERR_ARG);
  cr_assert_eq(ad_set_num_threads(-3), AD_ERR_ARG);
  cr_assert_eq(ad_num_threads(), 1);
  cr_assert_eq(ad_set_num_threads(3), AD_OK);
  cr_assert_eq(ad_num_threads(), 3);
  cr_assert_eq(ad_set_num_threads(1), AD_OK);
  cr_assert_eq(ad_num_threads(), 1);
  cr_assert_eq(ad_set_num_threads(1000), AD_OK);
  cr_assert_eq(ad_num_threads(), 64);
  cr_assert_eq(ad_set_num_threads(1), AD_OK);
}

/* ---------------------------------------------------------- parallel_for */

typedef struct visit {
  _Atomic int *count; /* times each index was visited */
  int64_t grain, n;
  _Atomic int64_t short_ranges; /* ranges shorter than grain, but the last */
} visit;

static void mark(void *ud, int64_t b, int64_t e) {
  visit *v = ud;
  if (e - b < v->grain && e != v->n) atomic_fetch_add(&v->short_ranges, 1);
  for (int64_t i = b; i < e; i++) atomic_fetch_add(&v->count[i], 1);
}

/* Every index exactly once, in ranges of at least grain. */
static void check_cover(int64_t n, int64_t grain) {
  visit v = {calloc((size_t)(n ? n : 1), sizeof(_Atomic int)), grain, n, 0};
  cr_assert_not_null(v.count);
  ad_parallel_for(n, grain, mark, &v);
  for (int64_t i = 0; i < n; i++)
    QUICK_ASSERT(atomic_load(&v.count[i]) == 1, "n %lld grain %lld: index %lld visited %d times",
                 (long long)n, (long long)grain, (long long)i, atomic_load(&v.count[i]));
  cr_assert_eq(atomic_load(&v.short_ranges), 0, "n %lld grain %lld", (long long)n,
               (long long)grain);
  free(v.count);
}

Test(parallel, covers_every_index_once) {
  static const int threads[] = {1, 2, 4, 7};
  static const int64_t ns[] = {0, 1, 2, 3, 17, 100, 1000, 4097, 100000};
  static const int64_t grains[] = {1, 3, 64, 1000, 200000};
  for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
    cr_assert_eq(ad_set_num_threads(threads[t]), AD_OK);
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
      for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++) check_cover(ns[i], grains[g]);
  }
  ad_set_num_threads(1);
}

/* Many loops in a row: the job generations must not mix. */
Test(parallel, many_loops) {
  cr_assert_eq(ad_set_num_threads(2), AD_OK);
  for (int r = 0; r < 2000; r++) check_cover(64 + r % 7, 4);
  ad_set_num_threads(1);
}

/* Homes: a loop's ranges are dealt in runs of consecutive ranges, one per
 * thread (the caller's first); each thread runs its own run from the front,
 * then takes the other runs' last ranges, from the back. Every chunk sleeps,
 * so that all threads take part and interleave. Whatever the timing, in
 * each run the thread of its first range ran a prefix of it, in order and
 * one after the other, and every other range of the run went to a thread
 * that took its ranges there from the back (in descending order). And a
 * run's first range goes to one thread (its owner) in most loops: what
 * keeps a thread's part of a tensor in its core's cache. */
#define DEAL_MAX 64

static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct deal_rec {
  int64_t begin;
  int thread, seq; /* who ran it; the how-manieth range of that thread's in this loop */
} deal_rec;

typedef struct deal {
  int loop;
  _Atomic int count;
  deal_rec rec[DEAL_MAX];
} deal;

static _Atomic int deal_threads;
static _Thread_local int deal_tid = -1, deal_loop = -1, deal_seq;

static void dealt(void *ud, int64_t b, int64_t e) {
  deal *d = ud;
  (void)e;
  if (deal_tid < 0) deal_tid = atomic_fetch_add(&deal_threads, 1);
  if (deal_loop != d->loop) deal_loop = d->loop, deal_seq = 0;
  int k = atomic_fetch_add(&d->count, 1);
  if (k < DEAL_MAX) d->rec[k] = (deal_rec){b, deal_tid, deal_seq++};
  struct timespec ts = {0, 100000};
  nanosleep(&ts, NULL);
}

static int by_begin(const void *p, const void *q) {
  int64_t a = ((const deal_rec *)p)->begin, b = ((const deal_rec *)q)->begin;
  return (a > b) - (a < b);
}

/* With more threads than CPUs (3 and 4 here on 2), which thread reaches
 * a run's first range is the scheduler's choice, not the deal's: a
 * worker that the caller's wake-up finds preempted has its ranges taken by
 * the others, and under other load that happened in most loops (a suite
 * run, 2026-12-06). There the order within each run is still checked, and
 * the majority only logged. */
Test(parallel, each_thread_runs_its_own_ranges_first) {
  static const int threads[] = {2, 3, 4};
  long cpus = 1;
#ifdef _SC_NPROCESSORS_ONLN
  cpus = sysconf(_SC_NPROCESSORS_ONLN);
#endif
  int loop = 0;
  for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
    int T = threads[t], dealt_loops = 0;
    int first_by[4][8] = {{0}}; /* [run][thread]: loops whose run's first range it ran */
    cr_assert_eq(ad_set_num_threads(T), AD_OK);
    double t0 = wall_s();
    for (int r = 0; dealt_loops < 30 && wall_s() - t0 < 20; r++, loop++) {
      deal d = {.loop = loop};
      ad_parallel_for(64, 1, dealt, &d);
      int count = atomic_load(&d.count);
      if (count == 1) continue; /* run by the caller alone, backing off after a stall */
      dealt_loops++;
      cr_assert(count >= 2 * T && count <= DEAL_MAX, "%d threads: %d ranges", T, count);
      qsort(d.rec, (size_t)count, sizeof d.rec[0], by_begin);
      int caller = deal_tid;
      for (int h = 0; h < T; h++) {
        int s = (count * h + T - 1) / T, e = (count * (h + 1) + T - 1) / T, x = s + 1;
        if (d.rec[s].thread < 8) first_by[h][d.rec[s].thread]++;
        if (h == 0)
          cr_assert(d.rec[s].thread != caller || d.rec[s].seq == 0,
                    "%d threads, loop %d: the caller's first range is not its run's first", T, r);
        while (x < e && d.rec[x].thread == d.rec[s].thread && d.rec[x].seq == d.rec[x - 1].seq + 1)
          x++;
        for (int i = x; i < e; i++)
          for (int j = i + 1; j < e; j++)
            cr_assert(d.rec[i].thread != d.rec[j].thread || d.rec[i].seq > d.rec[j].seq,
                      "%d threads, loop %d, run %d (ranges %d-%d): ranges %d and %d taken in "
                      "ascending order by one thread after the owner's prefix (%d-%d)",
                      T, r, h, s, e - 1, i, j, s, x - 1);
      }
    }
    cr_assert(dealt_loops >= 5, "%d threads: %d loops dealt to the threads in 20 s", T,
              dealt_loops);
    for (int h = 0; h < T; h++) {
      int most = 0, owner = -1;
      for (int k = 0; k < 8; k++)
        if (first_by[h][k] > most) most = first_by[h][k], owner = k;
      if (T > cpus) {
        cr_log_info("%d threads on %ld CPUs, run %d: first range by one thread in %d of %d loops",
                    T, cpus, h, most, dealt_loops);
        continue;
      }
      cr_assert(2 * most > dealt_loops,
                "%d threads, run %d: no thread ran its first range in most loops (at most %d of "
                "%d)",
                T, h, most, dealt_loops);
      cr_assert(h == 0 ? owner == deal_tid : owner != deal_tid,
                "%d threads, run %d: mostly started by %s", T, h,
                h == 0 ? "a worker, not the caller" : "the caller, not its worker");
    }
  }
  ad_set_num_threads(1);
}

/* ad_thread_stats: loops handed out count, with the workers' time in their
 * chunks and the caller's; a reset zeroes them; a loop that runs whole in
 * the caller (one thread) counts nowhere. Each chunk sleeps, so a worker
 * has the time to claim some. */
static void sleepy(void *ud, int64_t b, int64_t e) {
  (void)ud;
  struct timespec ts = {0, 300000 * (long)(e - b)};
  nanosleep(&ts, NULL);
}

Test(parallel, thread_stats_count_the_workers_and_the_caller) {
  ad_thread_stats st;
  cr_assert_eq(ad_set_num_threads(1), AD_OK);
  ad_thread_stats_get(NULL, true);
  ad_parallel_for(16, 1, sleepy, NULL);
  ad_thread_stats_get(&st, false);
  cr_assert(st.loops == 0 && st.chunks == 0 && st.worker_busy_s == 0 && st.caller_busy_s == 0 &&
                st.caller_wait_s == 0,
            "one thread: nothing handed out, got %lld loops", (long long)st.loops);

  cr_assert_eq(ad_set_num_threads(2), AD_OK);
  double t0 = wall_s();
  int loops = 0;
  do { /* until a worker has run a chunk (a loaded machine may start it late) */
    ad_parallel_for(16, 1, sleepy, NULL);
    loops++;
    ad_thread_stats_get(&st, false);
  } while (st.chunks == 0 && loops < 200);
  double wall = wall_s() - t0;
  cr_assert_eq(st.loops, loops);
  cr_assert(st.chunks >= 1 && st.chunks <= 16LL * loops, "%lld chunks", (long long)st.chunks);
  /* each chunk sleeps 0.3 ms or more: at least that much per chunk run */
  cr_assert(st.worker_busy_s >= 0.0003 * (double)st.chunks && st.worker_busy_s <= wall,
            "worker busy %g s for %lld chunks in %g s", st.worker_busy_s, (long long)st.chunks,
            wall);
  cr_assert(st.caller_busy_s > 0 && st.caller_busy_s <= wall, "caller %g s", st.caller_busy_s);
  cr_assert(st.caller_wait_s >= 0 && st.caller_busy_s + st.caller_wait_s <= wall,
            "caller wait %g s", st.caller_wait_s);

  ad_thread_stats again;
  ad_thread_stats_get(&again, true); /* the same, then zeroed */
  cr_assert(again.loops == st.loops && again.chunks == st.chunks);
  ad_thread_stats_get(&st, false);
  cr_assert(st.loops == 0 && st.chunks == 0 && st.worker_busy_s == 0 && st.caller_busy_s == 0 &&
                st.caller_wait_s == 0,
            "after the reset: %lld loops", (long long)st.loops);
  ad_thread_stats_get(NULL, false); /* NULL: nothing to fill */
  ad_set_num_threads(1);
}

/* What a forked child of a process with workers finds (the pool's top
 * comment): ad_num_threads() as set, and workers of its own that run
 * chunks, also after ad_set_num_threads; the child's exit status says
 * which check failed (an alarm ends a child that hangs). */
static bool covers_once(int64_t n) { /* check_cover without Criterion, for a child */
  visit v = {calloc((size_t)n, sizeof(_Atomic int)), 1, n, 0};
  if (!v.count) return false;
  ad_parallel_for(n, 1, mark, &v);
  bool ok = true;
  for (int64_t i = 0; i < n; i++) ok &= atomic_load(&v.count[i]) == 1;
  free(v.count);
  return ok;
}

static int forked_pool_checks(int threads) {
  alarm(30);
  if (ad_num_threads() != threads) return 10;
  for (int round = 0; round < 2; round++) {
    ad_thread_stats st;
    ad_thread_stats_get(NULL, true);
    int loops = 0;
    do {
      if (!covers_once(1000)) return 14;
      ad_parallel_for(16, 1, sleepy, NULL);
      loops++;
      ad_thread_stats_get(&st, false);
    } while (st.chunks == 0 && loops < 200);
    if (st.chunks == 0) return 11 + round; /* no worker ever ran a chunk */
    if (ad_set_num_threads(1) != AD_OK || ad_set_num_threads(threads) != AD_OK) return 13;
  }
  return 0;
}

static void expect_child_ok(pid_t pid, const char *what) {
  cr_assert_gt(pid, 0, "%s: fork failed", what);
  int status = 0;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status), "%s: the child ended by signal %d (14: it hung)", what,
            WIFSIGNALED(status) ? WTERMSIG(status) : -1);
  cr_assert_eq(WEXITSTATUS(status), 0, "%s: the child's check %d failed", what,
               WEXITSTATUS(status));
}

/* Returns once every one of the pool's threads has run a chunk, so none is
 * still starting. A fork while a thread starts can catch it inside the
 * allocator: AddressSanitizer's (clang 14) is not locked across fork as
 * glibc's malloc is, and the child's new threads then wait for ever for
 * its lock (forked_child_has_workers_of_its_own failed so in half or
 * more of the runs of the clang 14 sanitizer build: check 11, no worker
 * of the child ever ran a chunk). */
typedef struct seen_threads {
  pthread_mutex_t mu;
  pthread_t t[8];
  int n;
} seen_threads;

static void note_thread(void *ud, int64_t b, int64_t e) {
  seen_threads *s = ud;
  pthread_mutex_lock(&s->mu);
  int k = 0;
  while (k < s->n && !pthread_equal(s->t[k], pthread_self())) k++;
  if (k == s->n && s->n < 8) s->t[s->n++] = pthread_self();
  pthread_mutex_unlock(&s->mu);
  sleepy(NULL, b, e);
}

static void settle_workers(void) {
  seen_threads s = {.mu = PTHREAD_MUTEX_INITIALIZER};
  for (int loops = 0; s.n < ad_num_threads(); loops++) {
    cr_assert_lt(loops, 2000, "%d of %d threads ran a chunk", s.n, ad_num_threads());
    ad_parallel_for(4 * ad_num_threads(), 1, note_thread, &s);
  }
}

Test(parallel, forked_child_has_workers_of_its_own, .timeout = 60) {
  cr_assert_eq(ad_set_num_threads(3), AD_OK);
  check_cover(1000, 1); /* the workers run */
  settle_workers();
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(forked_pool_checks(3));
  expect_child_ok(pid, "fork after loops");
  check_cover(1000, 1); /* the parent's pool is as it was */
  cr_assert_eq(ad_num_threads(), 3);
  ad_set_num_threads(1);
}

/* A fork while another thread is in a loop waits for that loop to end: the
 * child does not inherit a pool locked by a thread it does not have. */
typedef struct looper {
  _Atomic bool stop;
  _Atomic int64_t loops;
} looper;

static void *loops_until_stopped(void *arg) {
  looper *l = arg;
  while (!atomic_load(&l->stop)) {
    ad_parallel_for(8, 1, sleepy, NULL);
    atomic_fetch_add(&l->loops, 1);
  }
  return NULL;
}

Test(parallel, fork_during_another_threads_loop, .timeout = 60) {
  cr_assert_eq(ad_set_num_threads(2), AD_OK);
  settle_workers();
  looper lp = {false, 0};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, loops_until_stopped, &lp), 0);
  while (atomic_load(&lp.loops) == 0) { /* started: not inside the allocator (above) */
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
  }
  for (int i = 0; i < 5; i++) {
    struct timespec ts = {0, 700000};
    nanosleep(&ts, NULL); /* mid-loop, most of the time */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) _exit(forked_pool_checks(2));
    expect_child_ok(pid, "fork beside a loop");
  }
  atomic_store(&lp.stop, true);
  pthread_join(t, NULL);
  ad_set_num_threads(1);
}

/* A loop inside a loop runs in the thread that calls it, in one range. */
typedef struct nest {
  _Atomic int inner_calls, inner_ranges_of_all;
} nest;

static void inner(void *ud, int64_t b, int64_t e) {
  nest *s = ud;
  atomic_fetch_add(&s->inner_calls, 1);
  if (b == 0 && e == 50) atomic_fetch_add(&s->inner_ranges_of_all, 1);
}

static void outer(void *ud, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; i++) ad_parallel_for(50, 1, inner, ud);
}

Test(parallel, nested_loops_run_inline) {
  cr_assert_eq(ad_set_num_threads(2), AD_OK);
  nest s = {0, 0};
  ad_parallel_for(40, 1, outer, &s);
  cr_assert_eq(atomic_load(&s.inner_calls), 40);
  cr_assert_eq(atomic_load(&s.inner_ranges_of_all), 40);
  ad_set_num_threads(1);
}

/* Two application threads using the pool at once: one gets the workers,
 * the other runs its loop itself; both loops are complete. */
static void *two_callers(void *arg) {
  (void)arg;
  for (int r = 0; r < 300; r++) check_cover(1000, 10);
  return NULL;
}

/* ad_set_num_threads on one thread while another runs loops: each loop is
 * dealt over the thread count it reads under the pool's lock (one read
 * before it dealt to workers that had stopped taking part, and its caller
 * waited for their chunks for ever: the timeout catches that). */
static void count_range(void *ud, int64_t b, int64_t e) {
  atomic_fetch_add((_Atomic int64_t *)ud, e - b);
}

static void *toggle_threads(void *arg) {
  _Atomic bool *stop = arg;
  for (int r = 0; !atomic_load(stop); r++) ad_set_num_threads(r % 2 ? 2 : 4);
  return NULL;
}

Test(parallel, thread_count_changed_during_loops, .timeout = 60) {
  cr_assert_eq(ad_set_num_threads(4), AD_OK);
  _Atomic bool stop = false;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, toggle_threads, &stop), 0);
  double t0 = wall_s();
  for (int r = 0; wall_s() - t0 < 2; r++) {
    _Atomic int64_t covered = 0;
    ad_parallel_for(64, 1, count_range, &covered);
    QUICK_ASSERT(atomic_load(&covered) == 64, "loop %d covered %lld of 64", r,
                 (long long)atomic_load(&covered));
  }
  for (int r = 0; r < 100; r++) check_cover(1000, 1);
  atomic_store(&stop, true);
  pthread_join(t, NULL);
  ad_set_num_threads(1);
}

Test(parallel, concurrent_callers) {
  cr_assert_eq(ad_set_num_threads(3), AD_OK);
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, two_callers, NULL), 0);
  two_callers(NULL);
  pthread_join(t, NULL);
  ad_set_num_threads(1);
}

/* ------------------------------------------------------- ops on threads */

/* The same op on 1 and on 3 threads; the worst difference relative to the
 * largest magnitude in the result (0 when bitwise equal). */
typedef ad_tensor *(*op_fn)(ad_ctx *, ad_tensor *, ad_tensor *);

static double compare_threads(op_fn f, ad_tensor *a, ad_tensor *b) {
  ad_set_num_threads(1);
  ad_tensor *y1 = f(ctx, a, b);
  cr_assert_eq(ad_set_num_threads(3), AD_OK);
  ad_tensor *y3 = f(ctx, a, b);
  ad_set_num_threads(1);
  cr_assert(y1 && y3, "%s", ad_last_error(ctx));
  cr_assert_eq(y1->size, y3->size);
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < y1->size; i++)
    if (fabs(ad_tensor_get(y1, i)) > scale) scale = fabs(ad_tensor_get(y1, i));
  for (int64_t i = 0; i < y1->size; i++) {
    double u = ad_tensor_get(y1, i), v = ad_tensor_get(y3, i);
    double d = u == v ? 0 : isnan(u) || isnan(v) ? INFINITY : fabs(u - v) / scale;
    if (d > worst) worst = d;
  }
  ad_tape_reset(ctx);
  return worst;
}

static ad_tensor *op_relu(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  (void)b;
  return ad_relu(c, a);
}
static ad_tensor *op_tanh(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  (void)b;
  return ad_tanh(c, a);
}
static ad_tensor *op_sum_to(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  return ad_sum_to(c, a, b->ndim, b->shape);
}
/* a expanded to b's shape */
static ad_tensor *op_expand(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  return ad_expand(c, a, b->ndim, b->shape);
}
static ad_tensor *op_mm(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  return ad_matmul(c, a, b, false, true);
}
static ad_tensor *op_mm_ta(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  return ad_matmul(c, a, b, true, false);
}

static ad_tensor *rand_tensor(ad_rng *rng, ad_dtype dt, int64_t r, int64_t c) {
  int64_t s[2] = {r, c};
  ad_tensor *t = ad_rand(ctx, rng, dt, c ? 2 : 1, s, -1, 1);
  cr_assert_not_null(t);
  return t;
}

Test(parallel, elementwise_and_sum_to_are_bitwise_equal) {
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    ad_tensor *x = rand_tensor(&rng, dt, 300, 1000), *y = rand_tensor(&rng, dt, 300, 1000);
    ad_tensor *row = rand_tensor(&rng, dt, 1000, 0), *s_keep = ad_full(ctx, dt, 0, NULL, 0.5);
    cr_assert_eq(compare_threads(ad_add, x, y), 0);      /* same shapes */
    cr_assert_eq(compare_threads(ad_mul, x, row), 0);    /* row broadcast */
    cr_assert_eq(compare_threads(ad_sub, x, s_keep), 0); /* scalar */
    cr_assert_eq(compare_threads(op_relu, x, NULL), 0);  /* unary */
    cr_assert_eq(compare_threads(op_tanh, x, NULL), 0);  /* unary, libm */
    cr_assert_eq(compare_threads(op_sum_to, x, row), 0); /* bias gradient */
    ad_tensor *col = rand_tensor(&rng, dt, 300, 1);
    cr_assert_eq(compare_threads(op_expand, row, x), 0); /* a row repeated, split */
    cr_assert_eq(compare_threads(op_expand, col, x), 0); /* an element per row */
    ad_tensor *ex = op_expand(ctx, col, x);
    cr_assert(ex && ad_tensor_get(ex, 5 * 1000 + 999) == ad_tensor_get(col, 5));
    cr_assert_eq(compare_threads(op_expand, s_keep, x), 0); /* one element: a flat fill */
    int64_t one[2] = {1, 1};
    ad_tensor *e11 = ad_full(ctx, dt, 2, one, -2.5);
    cr_assert_eq(ad_set_num_threads(3), AD_OK);
    ad_tensor *fill[2] = {op_expand(ctx, s_keep, x), op_expand(ctx, e11, x)};
    ad_set_num_threads(1);
    for (int k = 0; k < 2; k++) {
      cr_assert(fill[k] && fill[k]->size == x->size, "%s", ad_last_error(ctx));
      for (int64_t i = 0; i < x->size; i++)
        QUICK_ASSERT(ad_tensor_get(fill[k], i) == (k ? -2.5 : 0.5), "fill %d: element %lld is %g",
                     k, (long long)i, ad_tensor_get(fill[k], i));
    }
    ad_tensor_free(e11);
    ad_tape_reset(ctx);
    ad_tensor_free(col);
    ad_tensor_free(x), ad_tensor_free(y), ad_tensor_free(row), ad_tensor_free(s_keep);
  }
}

/* sum_to keeping a run of middle axes and summing those before and after
 * (a convolution's bias gradient, [N, C, H, W] -> [C, 1, 1], and a run of
 * two axes): the same bits on 1 and 3 threads, and each kept element the
 * sum of its values. */
Test(parallel, sum_to_middle_axes) {
  static const int64_t xs[4] = {5, 7, 9, 11}, targets[2][3] = {{7, 1, 1}, {7, 9, 1}};
  ad_rng rng;
  ad_rng_seed(&rng, 9);
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    ad_tensor *x = ad_rand(ctx, &rng, dt, 4, xs, -1, 1);
    for (int t = 0; t < 2; t++) {
      ad_tensor *shape = ad_zeros(ctx, dt, 3, targets[t]);
      cr_assert_eq(compare_threads(op_sum_to, x, shape), 0, "target %d", t);
      ad_tensor *y = ad_sum_to(ctx, x, 3, targets[t]);
      cr_assert(y, "%s", ad_last_error(ctx));
      int64_t kept = t ? 63 : 7, inner = t ? 11 : 99;
      for (int64_t k = 0; k < kept; k++) {
        double want = 0;
        for (int64_t a = 0; a < 5; a++)
          for (int64_t i = 0; i < inner; i++) want += ad_tensor_get(x, (a * kept + k) * inner + i);
        cr_assert(fabs(ad_tensor_get(y, k) - want) <= (d ? 1e-12 : 1e-4),
                  "%s target %d element %lld: %.9g, want %.9g", ad_dtype_name(dt), t, (long long)k,
                  ad_tensor_get(y, k), want);
      }
      ad_tape_reset(ctx);
      ad_tensor_free(shape);
    }
    ad_tensor_free(x);
  }
}

/* sum_to summing a run of axes between kept ones (x seen as [A, R, L] ->
 * [A, L]: the gradient of [N, 1, D] in pairwise differences, of a plane
 * [N, 1, H, W] added to every channel), with size-1 axes among them and a
 * leading axis dropped: each element the sum of its R values (float32 in
 * double, rounded once: within 1 ulp of the reference), the same bits on
 * 1 and 3 threads; an empty run gives zeros. */
Test(parallel, sum_to_a_run_between_kept_axes) {
  static const struct {
    int nx, nt;
    int64_t x[4], t[4], a, r, l;
  } cases[] = {
      {3, 3, {64, 64, 128}, {64, 1, 128}, 64, 64, 128},
      {4, 4, {32, 64, 32, 32}, {32, 1, 32, 32}, 32, 64, 1024},
      {4, 4, {5, 1, 7, 3}, {5, 1, 1, 3}, 5, 7, 3},
      {4, 3, {3, 7, 9, 1000}, {7, 1, 1000}, 7, 9, 1000}, /* the lead axis too: not this path */
      {4, 4, {2, 3, 0, 5}, {2, 3, 1, 5}, 6, 0, 5},
  };
  ad_rng rng;
  ad_rng_seed(&rng, 13);
  for (int d = 0; d < 2; d++)
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
      ad_dtype dt = d ? AD_F64 : AD_F32;
      ad_tensor *x = ad_rand(ctx, &rng, dt, cases[k].nx, cases[k].x, -1, 1);
      ad_tensor *shape = ad_zeros(ctx, dt, cases[k].nt, cases[k].t);
      cr_assert(x && shape, "%s", ad_last_error(ctx));
      cr_assert_eq(compare_threads(op_sum_to, x, shape), 0, "case %zu", k);
      ad_tensor *y = ad_sum_to(ctx, x, cases[k].nt, cases[k].t);
      cr_assert(y, "%s", ad_last_error(ctx));
      if (k == 3) { /* [3, 7, 9, 1000] -> [7, 1, 1000]: the reference sums axes 0 and 2 */
        for (int64_t c = 0; c < 7; c++)
          for (int64_t i = 0; i < 1000; i += 37) {
            double want = 0;
            for (int64_t a = 0; a < 3; a++)
              for (int64_t r = 0; r < 9; r++)
                want += ad_tensor_get(x, ((a * 7 + c) * 9 + r) * 1000 + i);
            cr_assert(fabs(ad_tensor_get(y, c * 1000 + i) - want) <= (d ? 1e-12 : 1e-5));
          }
      } else {
        int64_t A = cases[k].a, R = cases[k].r, L = cases[k].l;
        cr_assert_eq(y->size, A * L);
        for (int64_t a = 0; a < A; a++)
          for (int64_t i = 0; i < L; i++) {
            double want = 0;
            for (int64_t r = 0; r < R; r++) want += ad_tensor_get(x, (a * R + r) * L + i);
            double got = ad_tensor_get(y, a * L + i);
            cr_assert(d ? fabs(got - want) <= 1e-13
                        : got == (double)(float)want || fabs(got - want) <= ldexp(fabs(want), -23),
                      "%s case %zu element %lld: %.9g, want %.9g", ad_dtype_name(dt), k,
                      (long long)(a * L + i), got, want);
          }
      }
      ad_tape_reset(ctx);
      ad_tensor_free(x), ad_tensor_free(shape);
    }
}

/* The same with an empty summed axis (a convolution's bias gradient over
 * an empty batch): zeros, through the op and through a backward. */
Test(parallel, sum_to_middle_axes_of_empty_batch) {
  static const int64_t xs[4] = {0, 3, 4, 4}, bs[3] = {3, 1, 1};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 4, xs);
  ad_tensor *b = ad_ones(ctx, AD_F32, 3, bs);
  cr_assert(x && b, "%s", ad_last_error(ctx));
  ad_tensor_set_requires_grad(b, true);
  ad_tensor *y = ad_sum_to(ctx, x, 3, bs);
  cr_assert(y, "%s", ad_last_error(ctx));
  for (int k = 0; k < 3; k++) cr_assert_eq(ad_tensor_get(y, k), 0.0);
  ad_tensor *s = ad_sum(ctx, ad_add(ctx, x, b));
  cr_assert(s, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, s, NULL), AD_OK, "%s", ad_last_error(ctx));
  const ad_tensor *g = b->grad;
  cr_assert(g);
  for (int k = 0; k < 3; k++) cr_assert_eq(ad_tensor_get(g, k), 0.0);
  ad_tape_reset(ctx);
  ad_tensor_free(x), ad_tensor_free(b);
}

/* Reductions and softmax along an axis that is not the last: the lanes are
 * interleaved and taken a block at a time (op_reduce.c). Each must give
 * the bits of the same op along the last axis of the permuted copy, whose
 * lanes are read one at a time (float32 softmax and logsumexp within 2 ulp: the last
 * axis takes a vector path), on 1 and on 3 threads, for lane counts
 * around the block's 64, empty and one-element axes, axes of 17 and 40
 * (the last axis's rows of max: partial maxima and a tail), and NaN (payloads
 * told apart), infinities and signed zeros in the lanes. */
typedef ad_tensor *(*axis_fn)(ad_ctx *, ad_tensor *, int);
static ad_tensor *ax_sum(ad_ctx *c, ad_tensor *x, int a) { return ad_sum_axis(c, x, a, false); }
static ad_tensor *ax_max(ad_ctx *c, ad_tensor *x, int a) { return ad_max_axis(c, x, a, false); }
static ad_tensor *ax_lse(ad_ctx *c, ad_tensor *x, int a) { return ad_logsumexp(c, x, a, false); }

/* The same bits in a and b, but a NaN's payload and sign only where
 * payload: arithmetic on two NaNs returns either (the compiler may swap
 * the operands of an addition), a selection (max) the one it picks. */
static void same_bits(const ad_tensor *a, const ad_tensor *b, bool payload, const char *what) {
  cr_assert(a && b, "%s: %s", what, ad_last_error(ctx));
  cr_assert_eq(a->size, b->size, "%s", what);
  size_t ds = ad_dtype_size(a->dtype);
  for (int64_t i = 0; i < a->size; i++) {
    const char *p = (const char *)a->data + (size_t)i * ds,
               *q = (const char *)b->data + (size_t)i * ds;
    if (!payload && isnan(ad_tensor_get(a, i)) && isnan(ad_tensor_get(b, i))) continue;
    cr_assert(memcmp(p, q, ds) == 0, "%s: element %lld is %.17g, want %.17g", what, (long long)i,
              ad_tensor_get(a, i), ad_tensor_get(b, i));
  }
}

static ad_tensor *ax_min(ad_ctx *c, ad_tensor *x, int a) { return ad_min_axis(c, x, a, false); }
static ad_tensor *ax_softmax(ad_ctx *c, ad_tensor *x, int a) { return ad_softmax(c, x, a); }
static ad_tensor *ax_log_softmax(ad_ctx *c, ad_tensor *x, int a) { return ad_log_softmax(c, x, a); }
/* elu_backward (the fused gradient op) in float32 takes exp_v on rows of
 * unit stride; a broadcast g or x is gathered into such rows, so that
 * every layout gives the same bits: a column of g over rows of 4 (short
 * rows), 127 and 128 (a call per row), against g expanded. */
Test(parallel, elu_backward_same_bits_broadcast_or_not) {
  int id = ad_op_find(ctx, "elu_backward");
  cr_assert_geq(id, 0);
  ad_attrs at = {.elu = {.alpha = 1, .scale = 1, .input_scale = 1, .grad_input_scale = 1}};
  static const int64_t lens[] = {4, 127, 128, 300};
  for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
    int64_t sg[2] = {64, 1}, sx[2] = {64, lens[li]};
    ad_tensor *g = ad_zeros(ctx, AD_F32, 2, sg), *x = ad_zeros(ctx, AD_F32, 2, sx);
    cr_assert(g && x, "%s", ad_last_error(ctx));
    for (int64_t i = 0; i < g->size; i++) ad_tensor_set(g, i, 0.5 + 0.01 * (double)i);
    for (int64_t i = 0; i < x->size; i++) ad_tensor_set(x, i, -0.013 * (double)(i % 700 + 1));
    ad_tensor *ge = ad_expand(ctx, g, 2, sx);
    ad_tensor *y = ad_op_apply(ctx, id, 2, (ad_tensor *[]){g, x}, &at);
    ad_tensor *r = ge ? ad_op_apply(ctx, id, 2, (ad_tensor *[]){ge, x}, &at) : NULL;
    cr_assert(y && r, "%s", ad_last_error(ctx));
    cr_assert(memcmp(y->data, r->data, (size_t)y->size * sizeof(float)) == 0,
              "elu_backward, g [64,1] over rows of %lld: the bits differ from g expanded",
              (long long)lens[li]);
    ad_tape_reset(ctx);
    ad_tensor_free(g);
    ad_tensor_free(x);
  }
}

/* cumsum along axis 1 of [O, n, inner] (blocks of up to 512 lanes of one
 * outer index each, split over the threads; inner of 16 and more on the
 * clones for wider vectors; inner 1: the rows, eight interleaved) against
 * the definition: each lane summed in order in a double, each partial sum
 * rounded to the dtype; and its gradient for a seed g, cumsum_reverse:
 * each lane of g summed from the end (torch's flip(cumsum(flip(g)))); bit
 * for bit, with NaN and infinities, on 1 and 3 threads. */
Test(parallel, cumsum_lanes_as_the_definition) {
  static const int64_t shapes[][3] = {{3000, 4, 4}, {5, 7, 130}, {700, 3, 64},  {2, 1000, 65},
                                      {40, 9, 15},  {40, 9, 16}, {3, 50, 1100}, {1, 64, 1024},
                                      {33, 300, 1}, {9, 31, 1}};
  ad_rng rng;
  ad_rng_seed(&rng, 53);
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
      const int64_t *sh = shapes[si], O = sh[0], n = sh[1], I = sh[2];
      ad_tensor *x = ad_rand(ctx, &rng, dt, 3, sh, -3, 3),
                *g = ad_rand(ctx, &rng, dt, 3, sh, -3, 3);
      cr_assert(x && g, "%s", ad_last_error(ctx));
      for (int64_t e = 7; e < x->size; e += 501) ad_tensor_set(x, e, e % 2 ? NAN : -INFINITY);
      for (int64_t e = 300; e < g->size; e += 709) ad_tensor_set(g, e, e % 2 ? INFINITY : NAN);
      cr_assert_eq(ad_tensor_set_requires_grad(x, true), AD_OK);
      for (int threads = 1; threads <= 3; threads += 2) {
        cr_assert_eq(ad_set_num_threads(threads), AD_OK);
        ad_tensor *y = ad_cumsum(ctx, x, 1);
        cr_assert(y, "%s", ad_last_error(ctx));
        ad_tensor_zero_grad(x);
        cr_assert_eq(ad_backward(ctx, y, g), AD_OK, "%s", ad_last_error(ctx));
        for (int64_t o = 0; o < O; o++)
          for (int64_t j = 0; j < I; j++) {
            double acc = 0;
            for (int64_t k = n - 1; k >= 0; k--) {
              int64_t at = (o * n + k) * I + j;
              acc += ad_tensor_get(g, at);
              double want = dt == AD_F32 ? (double)(float)acc : acc,
                     got = ad_tensor_get(x->grad, at);
              cr_assert(memcmp(&want, &got, sizeof want) == 0 || (want != want && got != got),
                        "cumsum's gradient %s [%lld,%lld,%lld] axis 1, %d thread(s): element "
                        "%lld is %.17g, the reversed scan's %.17g",
                        ad_dtype_name(dt), (long long)O, (long long)n, (long long)I, threads,
                        (long long)at, got, want);
            }
          }
        for (int64_t o = 0; o < O; o++)
          for (int64_t j = 0; j < I; j++) {
            double acc = 0;
            for (int64_t k = 0; k < n; k++) {
              int64_t at = (o * n + k) * I + j;
              acc += ad_tensor_get(x, at);
              double want = dt == AD_F32 ? (double)(float)acc : acc, got = ad_tensor_get(y, at);
              cr_assert(memcmp(&want, &got, sizeof want) == 0 || (want != want && got != got),
                        "cumsum %s [%lld,%lld,%lld] axis 1, %d thread(s): element %lld is %.17g, "
                        "the definition's %.17g",
                        ad_dtype_name(dt), (long long)O, (long long)n, (long long)I, threads,
                        (long long)at, got, want);
            }
          }
        ad_tape_reset(ctx);
      }
      ad_tensor_free(x);
      ad_tensor_free(g);
    }
  }
  cr_assert_eq(ad_set_num_threads(1), AD_OK);
}

/* Along a middle axis whose inner dims hold few lanes (2 to 32 per outer
 * index), several outer indices' lanes are gathered into one block
 * (op_reduce.c's lanes_range_grouped): against each outer index's slice
 * reduced alone (one outer index: the block of its own lanes), bit for
 * bit, with NaN, infinities and zeros of both signs, for sum, max, min,
 * logsumexp, softmax and log_softmax, float32 and float64, groups cut
 * short by the outer count and by the buffer's size (n 200), on 1 and 3
 * threads. */
Test(parallel, short_lanes_grouped_same_bits_as_each_slice) {
  static const axis_fn fns[] = {ax_sum, ax_max, ax_min, ax_lse, ax_softmax, ax_log_softmax};
  static const char *names[] = {"sum", "max", "min", "logsumexp", "softmax", "log_softmax"};
  static const int64_t shapes[][3] = {{300, 4, 4}, {7, 3, 2},   {129, 5, 3},  {40, 40, 16},
                                      {9, 200, 4}, {65, 1, 32}, {33, 17, 33}, {5, 2, 31}};
  ad_rng rng;
  ad_rng_seed(&rng, 47);
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
      const int64_t *sh = shapes[si];
      ad_tensor *x = ad_rand(ctx, &rng, dt, 3, sh, -20, 20);
      cr_assert(x, "%s", ad_last_error(ctx));
      for (int64_t e = 5; e < x->size; e += 23)
        ad_tensor_set(x, e, e % 4 == 0 ? NAN : e % 4 == 1 ? -INFINITY : e % 4 == 2 ? -0.0 : 0.0);
      for (size_t f = 0; f < sizeof fns / sizeof *fns; f++)
        for (int threads = 1; threads <= 3; threads += 2) {
          cr_assert_eq(ad_set_num_threads(threads), AD_OK);
          ad_tensor *y = fns[f](ctx, x, 1);
          cr_assert(y, "%s", ad_last_error(ctx));
          int64_t per = y->size / sh[0];
          size_t ds = ad_dtype_size(dt);
          for (int64_t o = 0; o < sh[0]; o++) {
            ad_tensor *yo = fns[f](ctx, ad_narrow(ctx, x, 0, o, 1), 1);
            cr_assert(yo && yo->size == per, "%s", ad_last_error(ctx));
            cr_assert(memcmp((const char *)y->data + (size_t)(o * per) * ds, yo->data,
                             (size_t)per * ds) == 0,
                      "%s %s [%lld,%lld,%lld] along axis 1, %d thread(s): outer index %lld's "
                      "bits differ from its slice's alone",
                      names[f], ad_dtype_name(dt), (long long)sh[0], (long long)sh[1],
                      (long long)sh[2], threads, (long long)o);
          }
          ad_tape_reset(ctx);
        }
      ad_tensor_free(x);
    }
  }
  cr_assert_eq(ad_set_num_threads(1), AD_OK);
}

/* a and b (float32) within 2 ulp of the larger magnitude plus 2^-50 (a
 * log_softmax near 0, -log of a sum near 1, keeps the sum's double
 * rounding), NaN where the other is NaN. */
static void close_f32(const ad_tensor *a, const ad_tensor *b, const char *what) {
  cr_assert(a && b, "%s: %s", what, ad_last_error(ctx));
  cr_assert_eq(a->size, b->size, "%s", what);
  for (int64_t i = 0; i < a->size; i++) {
    double u = ad_tensor_get(a, i), v = ad_tensor_get(b, i);
    if (isnan(u) || isnan(v)) {
      cr_assert(isnan(u) && isnan(v), "%s: element %lld is %g, want %g", what, (long long)i, u, v);
      continue;
    }
    double tol = 2 * ldexp(fmax(fabs(u), fabs(v)), -23) + 0x1p-50;
    cr_assert(u == v || test_close(u, v, tol), "%s: element %lld is %.9g, want %.9g", what,
              (long long)i, u, v);
  }
}

Test(parallel, reductions_across_lanes_same_bits_as_one_lane) {
  static const int64_t lanes[] = {2, 7, 63, 64, 65, 129, 200}, ns[] = {0, 1, 3, 17, 40};
  static const axis_fn red[] = {ax_sum, ax_max, ax_lse};
  static const char *red_name[] = {"sum", "max", "logsumexp"};
  static const int to_last[3] = {0, 2, 1};
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    for (size_t li = 0; li < sizeof lanes / sizeof *lanes; li++)
      for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
        int64_t shape[3] = {3, ns[ni], lanes[li]};
        ad_tensor *x = ad_rand(ctx, &rng, dt, 3, shape, -30, 30);
        cr_assert(x, "%s", ad_last_error(ctx));
        /* specials in a few lanes: two NaNs of other payloads in one lane
         * (the last one seen is the maximum), an infinity, zeros of both
         * signs in a lane of zeros */
        if (x->size > 0) {
          int64_t I = lanes[li], n = ns[ni];
          double nan2 = -NAN;
          ad_tensor_set(x, 0 * n * I + 0 * I + 1, NAN);
          ad_tensor_set(x, (n - 1) * I + 1, nan2);
          ad_tensor_set(x, 2 * n * I + 0 * I + 0, INFINITY);
          ad_tensor_set(x, n * I + (n - 1) * I + 0, -INFINITY);
          for (int64_t k = 0; k < n; k++)
            ad_tensor_set(x, 2 * n * I + k * I + I - 1, (k & 1) ? -0.0 : 0.0);
        }
        for (int threads = 1; threads <= 3; threads += 2) {
          cr_assert_eq(ad_set_num_threads(threads), AD_OK);
          ad_tensor *xt = ad_permute(ctx, x, to_last); /* [3, I, n], contiguous */
          cr_assert(xt, "%s", ad_last_error(ctx));
          char what[96];
          for (int r = 0; r < 3; r++) {
            if (r == 1 && ns[ni] == 0) continue; /* the max of nothing is refused */
            snprintf(what, sizeof what, "%s %s [3,%lld,%lld] %d threads", red_name[r],
                     ad_dtype_name(dt), (long long)ns[ni], (long long)lanes[li], threads);
            if (r == 2 && dt == AD_F32) /* the last axis's exp_row_f32 (op_reduce.c) */
              close_f32(red[r](ctx, x, 1), red[r](ctx, xt, 2), what);
            else
              same_bits(red[r](ctx, x, 1), red[r](ctx, xt, 2), r == 1, what);
          }
          for (int lg = 0; lg < 2; lg++) {
            snprintf(what, sizeof what, "%s %s [3,%lld,%lld] %d threads",
                     lg ? "log_softmax" : "softmax", ad_dtype_name(dt), (long long)ns[ni],
                     (long long)lanes[li], threads);
            ad_tensor *y = lg ? ad_log_softmax(ctx, x, 1) : ad_softmax(ctx, x, 1);
            ad_tensor *yt = lg ? ad_log_softmax(ctx, xt, 2) : ad_softmax(ctx, xt, 2);
            if (dt == AD_F64)
              same_bits(y, ad_permute(ctx, yt, to_last), false, what);
            else /* a last-axis float32 lane takes the vector path: within 2 ulp */
              close_f32(y, ad_permute(ctx, yt, to_last), what);
          }
          ad_tape_reset(ctx);
        }
        ad_set_num_threads(1);
        ad_tensor_free(x);
      }
  }
}

/* float32 softmax, log_softmax and logsumexp (exp_v with a correction for
 * the rounding of x - max, libm below exp_v's clamp: op_reduce.c) against
 * float64 references computed here from the same inputs: within 2 ulp of
 * the reference (log_softmax plus 2^-50: near 0, -log of a sum near 1
 * keeps the double sum's last bit), NaN where it is NaN, and the same bits
 * on 1 and on 3 threads. Along axis 1 of [3, n, I] (the lanes of blocks of
 * 64, a tail of fewer, one strided lane when I = 65) and along the last
 * axis (one contiguous lane), with lanes of length 1, values over
 * [-100, 100], a NaN, +inf, -inf in a finite lane, lanes of -inf alone,
 * and lanes whose values lie below exp_v's clamp relative to the maximum
 * (e subnormal or 0) or around it. */
static double ulp_f32(double v) {
  int e = 0;
  if (v != 0) frexp(v, &e);
  return ldexp(1, v != 0 && e - 24 > -149 ? e - 24 : -149);
}

/* The reference of lane (X[0], X[st], ... X[(n-1) st]): softmax (op 0),
 * log_softmax (1) of element k, logsumexp (2). */
static double softmax_ref(const float *X, int64_t st, int64_t n, int op, int64_t k) {
  double m = -INFINITY, s = 0;
  for (int64_t i = 0; i < n; i++) m = isnan(X[i * st]) || isnan(m) ? NAN : fmax(m, X[i * st]);
  if (!isfinite(m)) return op == 2 ? m : NAN;
  for (int64_t i = 0; i < n; i++) s += exp((double)X[i * st] - m);
  double x = X[k * st];
  return op == 0 ? exp(x - m) / s : op == 1 ? (x - m) - log(s) : m + log(s);
}

/* Special lanes of x [3, n, I] (lanes along axis 1 at (o, j), along axis
 * 2 at (o, k)). */
static void softmax_specials(float *X, int64_t n, int64_t I, ad_rng *rng) {
#define AT(o, k, j) X[((o)*n + (k)) * I + (j)]
  AT(0, n - 1, 0) = NAN;
  if (I > 1) AT(0, 0, 1) = INFINITY;
  if (I > 2) AT(0, n / 2, 2) = -INFINITY;
  for (int64_t k = 0; I > 3 && k < n; k++) AT(0, k, 3) = -INFINITY;
  for (int64_t k = 0; I > 4 && k < n; k++) /* 0, then -80 .. -105 */
    AT(0, k, 4) = k ? -80.0f - 25.0f * (float)ad_rng_uniform(rng) : 0.0f;
  for (int64_t k = 0; k < n; k++) /* around the clamp: 60, then 60 - 87.0 .. 60 - 87.6 */
    AT(1, k, I - 1) = k < n - 1 ? 60.0f - 87.0f - 0.6f * (float)ad_rng_uniform(rng) : 60.0f;
  for (int64_t j = 0; j < I; j++) AT(2, 0, j) = -INFINITY;
  for (int64_t j = 0; n > 1 && j < I; j++)
    AT(2, n - 1, j) = j ? 5.0f - 80.0f - 25.0f * (float)ad_rng_uniform(rng) : 5.0f;
#undef AT
}

/* log_softmax's plain backward along the last axis is one pass per row,
 * along axis 0 one pass per block of lanes; the recorded one
 * (create_graph) is four ops (sum, exp, mul, sub). Same bits in both
 * dtypes, on 1 and 3 threads, for rows shorter and longer than the sum's
 * chunked length (256), 3 or 100 lanes along axis 0 (one block, two with
 * a margin), with log-probabilities below exp_v's range (-80 .. -105),
 * -inf and NaN, and a NaN in a seed. */
Test(parallel, log_softmax_plain_backward_same_bits_as_recorded) {
  static const int64_t ns[] = {1, 7, 255, 256, 300, 1030}, rows[] = {3, 100};
  ad_rng rng;
  ad_rng_seed(&rng, 29);
  for (int ax = -1; ax <= 0; ax++)
    for (int d = 0; d < 2; d++)
      for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
        for (size_t ri = 0; ri < 2; ri++) {
          ad_dtype dt = d ? AD_F32 : AD_F64;
          int64_t n = ns[ni], shape[2] = {ax ? rows[ri] : n, ax ? n : rows[ri]};
          ad_tensor *x = ad_rand(ctx, &rng, dt, 2, shape, -30, 30),
                    *seed = ad_rand(ctx, &rng, dt, 2, shape, -1, 1);
          cr_assert(x && seed, "%s", ad_last_error(ctx));
          for (int64_t k = 0; k < n; k++) /* row 1: 0, then far below it */
            ad_tensor_set(x, n + k, k ? -80 - 25 * ad_rng_uniform(&rng) : 0);
          ad_tensor_set(x, 2 * n - 1, -INFINITY);
          ad_tensor_set(x, 0, NAN);
          ad_tensor_set(seed, 2 * n, NAN);
          ad_tensor_set_requires_grad(x, true);
          ad_tensor *g[3];
          for (int t = 0; t < 3; t++) {
            cr_assert_eq(ad_set_num_threads(t == 1 ? 3 : 1), AD_OK);
            ad_tensor *y = ad_log_softmax(ctx, x, ax);
            cr_assert_eq(ad_grad(ctx, y, seed, 1, &x, &g[t], t == 2), AD_OK, "%s",
                         ad_last_error(ctx));
          }
          ad_set_num_threads(1);
          for (int t = 1; t < 3; t++)
            for (int64_t i = 0; i < x->size; i++) {
              double a = ad_tensor_get(g[0], i), b = ad_tensor_get(g[t], i);
              QUICK_ASSERT(a == b ? signbit(a) == signbit(b) : a != a && b != b,
                           "%s [%lld,%lld] axis %d dx[%lld]: plain %.17g, %s %.17g",
                           ad_dtype_name(dt), (long long)shape[0], (long long)shape[1], ax,
                           (long long)i, a, t == 1 ? "on 3 threads" : "recorded", b);
            }
          ad_tape_reset(ctx);
          ad_tensor_free(x);
          ad_tensor_free(seed);
        }
}

/* max's and min's plain backward is one pass per lane block (a count of
 * the ties, then dy / count where x equals y); the recorded one
 * (create_graph) is four ops (eq, sum, div, mul). Same bits in both
 * dtypes, on 1 and 3 threads: contiguous lanes (the last axis, everything),
 * lanes inner apart in blocks of 64 and their margins, several axes, with
 * ties (zeros of both signs among them), NaN lanes, infinities and a NaN
 * and an infinity in the seed. */
Test(parallel, max_plain_backward_same_bits_as_recorded) {
  static const struct {
    int nd;
    int64_t shape[4];
    int na;
    int axes[2];
  } cs[] = {{2, {5, 40}, 1, {1}},         {2, {3, 1030}, 1, {-1}},  {2, {1, 300}, 0, {0}},
            {2, {40, 3}, 1, {0}},         {3, {7, 65, 3}, 1, {1}},  {3, {4, 9, 130}, 1, {1}},
            {4, {2, 3, 4, 5}, 2, {2, 3}}, {3, {4, 5, 6}, 2, {0, 2}}};
  ad_rng rng;
  ad_rng_seed(&rng, 31);
  for (int mn = 0; mn < 2; mn++)
    for (int d = 0; d < 2; d++)
      for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
        ad_dtype dt = d ? AD_F32 : AD_F64;
        ad_tensor *x = ad_rand(ctx, &rng, dt, cs[ci].nd, cs[ci].shape, -2, 2);
        cr_assert(x, "%s", ad_last_error(ctx));
        for (int64_t i = 0; i < x->size; i++) { /* ties: values on a coarse grid */
          double v = ad_tensor_get(x, i);
          ad_tensor_set(x, i,
                        i % 7 == 3    ? 2.0
                        : i % 11 == 5 ? (i & 1 ? -0.0 : 0.0)
                                      : floor(v * 2) / 2);
        }
        ad_tensor_set(x, 1, NAN);
        ad_tensor_set(x, x->size - 2, INFINITY);
        ad_tensor_set_requires_grad(x, true);
        ad_tensor *g[3];
        for (int t = 0; t < 3; t++) {
          cr_assert_eq(ad_set_num_threads(t == 1 ? 3 : 1), AD_OK);
          ad_tensor *y = (mn ? ad_min_axes : ad_max_axes)(ctx, x, cs[ci].na, cs[ci].axes, false);
          cr_assert(y, "%s", ad_last_error(ctx));
          ad_tensor *seed = ad_full(ctx, dt, y->ndim, y->shape, -0.75);
          cr_assert(seed);
          if (seed->size > 2) ad_tensor_set(seed, 2, NAN);
          if (seed->size > 3) ad_tensor_set(seed, 3, -INFINITY);
          cr_assert_eq(ad_grad(ctx, y, seed, 1, &x, &g[t], t == 2), AD_OK, "%s",
                       ad_last_error(ctx));
        }
        ad_set_num_threads(1);
        for (int t = 1; t < 3; t++)
          for (int64_t i = 0; i < x->size; i++) {
            double a = ad_tensor_get(g[0], i), b = ad_tensor_get(g[t], i);
            QUICK_ASSERT(a == b ? signbit(a) == signbit(b) : a != a && b != b,
                         "%s %s case %zu dx[%lld]: plain %.17g, %s %.17g", mn ? "min" : "max",
                         ad_dtype_name(dt), ci, (long long)i, a,
                         t == 1 ? "on 3 threads" : "recorded", b);
          }
        ad_tape_reset(ctx);
        ad_tensor_free(x);
      }
}

Test(parallel, softmax_family_f32_within_2_ulp_of_f64) {
  static const int64_t lanes[] = {1, 2, 7, 63, 64, 65, 130}, ns[] = {1, 2, 5, 40, 300};
  static const char *op_name[] = {"softmax", "log_softmax", "logsumexp"};
  ad_rng rng;
  ad_rng_seed(&rng, 17);
  for (size_t li = 0; li < sizeof lanes / sizeof *lanes; li++)
    for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
      int64_t I = lanes[li], n = ns[ni], shape[3] = {3, n, I};
      ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 3, shape, -100, 100);
      cr_assert(x, "%s", ad_last_error(ctx));
      softmax_specials(x->data, n, I, &rng);
      const float *X = x->data;
      for (int axis = 1; axis <= 2; axis++)
        for (int op = 0; op < 3; op++) {
          ad_tensor *y[2];
          for (int t = 0; t < 2; t++) {
            cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
            y[t] = op == 0   ? ad_softmax(ctx, x, axis)
                   : op == 1 ? ad_log_softmax(ctx, x, axis)
                             : ad_logsumexp(ctx, x, axis, false);
            cr_assert(y[t], "%s", ad_last_error(ctx));
          }
          ad_set_num_threads(1);
          char what[96];
          snprintf(what, sizeof what, "%s [3,%lld,%lld] axis %d", op_name[op], (long long)n,
                   (long long)I, axis);
          cr_assert(memcmp(y[0]->data, y[1]->data, (size_t)y[0]->size * sizeof(float)) == 0,
                    "%s: 1 and 3 threads differ", what);
          /* lane q of o: len elements st apart from x's element base */
          const float *Y = y[0]->data;
          int64_t L = axis == 1 ? I : n, len = axis == 1 ? n : I, st = axis == 1 ? I : 1;
          for (int64_t o = 0; o < 3; o++)
            for (int64_t q = 0; q < L; q++) {
              int64_t base = axis == 1 ? o * n * I + q : (o * n + q) * I;
              for (int64_t k = 0; k < (op == 2 ? 1 : len); k++) {
                int64_t i = op == 2 ? o * L + q : base + k * st;
                double want = softmax_ref(X + base, st, len, op, k), got = Y[i];
                if (isnan(want)) {
                  cr_assert(isnan(got), "%s: element %lld is %g, want NaN", what, (long long)i,
                            got);
                  continue;
                }
                double tol = 2 * ulp_f32(want) + (op == 1 ? 0x1p-50 : 0);
                cr_assert(got == want || fabs(got - want) <= tol,
                          "%s: element %lld is %.9g, want %.17g (%.2f ulp)", what, (long long)i,
                          got, want, fabs(got - want) / ulp_f32(want));
              }
            }
        }
      ad_tape_reset(ctx);
      ad_tensor_free(x);
    }
}

/* float32 softmax, log_softmax and logsumexp of short rows along the last
 * axis (taken many rows at a time below 64 elements, op_reduce.c) give the bits of each row
 * alone (a [1, n] tensor: the one-row path), with NaN, infinities, rows of
 * -inf and values below exp_v's clamp among them, on 1 and 3 threads. */
Test(parallel, short_softmax_rows_same_bits_as_one_row) {
  ad_rng rng;
  ad_rng_seed(&rng, 31);
  for (int64_t n = 1; n < 70; n += n < 20 ? 1 : 7) {
    int64_t R = 300, sh[2] = {R, n}, one[2] = {1, n};
    ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, sh, -40, 40);
    cr_assert(x, "%s", ad_last_error(ctx));
    float *X = x->data;
    X[3 * n] = NAN, X[5 * n + n - 1] = INFINITY, X[7 * n] = -INFINITY, X[13 * n + n / 2] = NAN;
    X[15 * n + n / 3] = 0.0f, X[15 * n + n - 1] = -0.0f; /* zeros of both signs, maybe the max */
    for (int64_t k = 0; k < n; k++) X[9 * n + k] = -INFINITY, X[11 * n + k] = k ? -95.0f : 0.0f;
    static const char *const names[3] = {"softmax", "log_softmax", "logsumexp"};
    for (int op = 0; op < 3; op++)
      for (int t = 0; t < 2; t++) {
        cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
        ad_tensor *y = op == 2 ? ad_logsumexp(ctx, x, 1, false)
                       : op    ? ad_log_softmax(ctx, x, 1)
                               : ad_softmax(ctx, x, 1);
        cr_assert(y, "%s", ad_last_error(ctx));
        int64_t per = op == 2 ? 1 : n; /* a row's outputs */
        for (int64_t r = 0; r < R; r++) {
          ad_tensor *xr = ad_from_data(ctx, AD_F32, 2, one, X + r * n);
          ad_tensor *yr = op == 2 ? ad_logsumexp(ctx, xr, 1, false)
                          : op    ? ad_log_softmax(ctx, xr, 1)
                                  : ad_softmax(ctx, xr, 1);
          cr_assert(yr, "%s", ad_last_error(ctx));
          cr_assert(memcmp(yr->data, (float *)y->data + r * per, (size_t)per * sizeof(float)) == 0,
                    "%s n %lld row %lld: not the row's own bits", names[op], (long long)n,
                    (long long)r);
          ad_tensor_free(xr);
        }
        ad_tape_reset(ctx);
      }
    ad_set_num_threads(1);
    ad_tensor_free(x);
  }
}

/* logsumexp along rows shorter than 64 (op_reduce.c: many rows at a time
 * forward, and a plain backward of one pass, dy exp(x - y)): in both
 * dtypes each row's value is its own as a [1, n] tensor, and the plain
 * backward gives the recorded one's bits (sub, exp, mul), on 1 and 3
 * threads, with NaN, infinities, rows of -inf and values far below their
 * row's maximum, and a NaN and an infinity in the seed. */
Test(parallel, logsumexp_short_rows_as_one_row_and_as_recorded) {
  ad_rng rng;
  ad_rng_seed(&rng, 43);
  for (int d = 0; d < 2; d++)
    for (int64_t n = 1; n < 70; n += n < 20 ? 1 : 7) {
      ad_dtype dt = d ? AD_F64 : AD_F32;
      int64_t R = 300, sh[2] = {R, n}, one[2] = {1, n}, rs[1] = {R};
      size_t es = ad_dtype_size(dt);
      ad_tensor *x = ad_rand(ctx, &rng, dt, 2, sh, -40, 40),
                *seed = ad_rand(ctx, &rng, dt, 1, rs, -1, 1);
      cr_assert(x && seed, "%s", ad_last_error(ctx));
      ad_tensor_set(x, 3 * n, NAN), ad_tensor_set(x, 5 * n + n - 1, INFINITY);
      ad_tensor_set(x, 7 * n, -INFINITY), ad_tensor_set(x, 13 * n + n / 2, NAN);
      for (int64_t k = 0; k < n; k++)
        ad_tensor_set(x, 9 * n + k, -INFINITY), ad_tensor_set(x, 11 * n + k, k ? -95 : 0);
      ad_tensor_set(seed, 17, NAN), ad_tensor_set(seed, 19, INFINITY);
      ad_tensor_set_requires_grad(x, true);
      ad_tensor *g[3];
      for (int t = 0; t < 3; t++) {
        cr_assert_eq(ad_set_num_threads(t == 1 ? 3 : 1), AD_OK);
        ad_tensor *y = ad_logsumexp(ctx, x, 1, false);
        cr_assert(y, "%s", ad_last_error(ctx));
        for (int64_t r = 0; t == 1 && r < R; r++) {
          ad_tensor *xr = ad_from_data(ctx, dt, 2, one, (char *)x->data + (size_t)(r * n) * es);
          ad_tensor *yr = xr ? ad_logsumexp(ctx, xr, 1, false) : NULL;
          cr_assert(yr, "%s", ad_last_error(ctx));
          cr_assert(memcmp(yr->data, (char *)y->data + (size_t)r * es, es) == 0,
                    "%s n %lld row %lld: %.17g, the row alone %.17g", ad_dtype_name(dt),
                    (long long)n, (long long)r, ad_tensor_get(y, r), ad_tensor_get(yr, 0));
          ad_tensor_free(xr);
        }
        cr_assert_eq(ad_grad(ctx, y, seed, 1, &x, &g[t], t == 2), AD_OK, "%s", ad_last_error(ctx));
      }
      ad_set_num_threads(1);
      for (int t = 1; t < 3; t++)
        for (int64_t i = 0; i < x->size; i++) {
          double a = ad_tensor_get(g[0], i), b = ad_tensor_get(g[t], i);
          QUICK_ASSERT(a == b ? signbit(a) == signbit(b) : a != a && b != b,
                       "%s n %lld dx[%lld]: plain %.17g, %s %.17g", ad_dtype_name(dt), (long long)n,
                       (long long)i, a, t == 1 ? "on 3 threads" : "recorded", b);
        }
      ad_tape_reset(ctx);
      ad_tensor_free(x);
      ad_tensor_free(seed);
    }
}

/* Softmax cross-entropy on float32 [N, C] logits spread over [-30, 30]
 * (each row's e^(z - max) as the softmax op takes it): the mean loss
 * within 2 ulp of the float64 op's on the same values, and every element
 * of its gradient within 2 ulp of the float64 gradient (and 2 ulp of the
 * probability, which the label's p - 1 cancels), for class counts below
 * 64 (rows taken 256 / C at a time) and above a row chunk of 256, plain
 * and recorded backward alike (the same bits). A
 * NaN logit makes its row's gradients NaN. */
Test(parallel, float32_cross_entropy_within_2_ulp_of_f64) {
  static const int64_t classes[] = {2, 10, 17, 37, 300, 1500};
  ad_rng rng;
  ad_rng_seed(&rng, 23);
  for (size_t ci = 0; ci < sizeof classes / sizeof *classes; ci++) {
    int64_t C = classes[ci], N = C < 64 ? 70 : 6, zs[2] = {N, C},
            n1 = N; /* past a block of 64 rows */
    ad_tensor *z = ad_rand(ctx, &rng, AD_F32, 2, zs, -30, 30), *lab = ad_zeros(ctx, AD_I32, 1, &n1);
    cr_assert(z && lab, "%s", ad_last_error(ctx));
    for (int64_t r = 0; r < N; r++)
      ((int32_t *)lab->data)[r] = (int32_t)ad_rng_below(&rng, (uint64_t)C);
    ((float *)z->data)[(N - 1) * C + C / 2] = NAN; /* the last row's gradients are NaN */
    ad_tensor *z64 = ad_zeros(ctx, AD_F64, 2, zs); /* a leaf of the same values */
    cr_assert(z64, "%s", ad_last_error(ctx));
    for (int64_t i = 0; i < z->size; i++) ad_tensor_set(z64, i, ad_tensor_get(z, i));
    ad_tensor_set_requires_grad(z, true);
    ad_tensor_set_requires_grad(z64, true);
    ad_tensor *g64, *g[2],
        *l64 = ad_softmax_cross_entropy(ctx, ad_narrow(ctx, z64, 0, 0, N - 1),
                                        ad_narrow(ctx, lab, 0, 0, N - 1));
    cr_assert(l64, "%s", ad_last_error(ctx));
    double want = ad_tensor_item(l64);
    ad_tensor *l32 = ad_softmax_cross_entropy(ctx, ad_narrow(ctx, z, 0, 0, N - 1),
                                              ad_narrow(ctx, lab, 0, 0, N - 1));
    cr_assert(l32, "%s", ad_last_error(ctx));
    double got = ad_tensor_item(l32);
    cr_assert(fabs(got - want) <= 2 * ulp_f32(want), "C %lld: loss %.9g, want %.17g", (long long)C,
              got, want);
    ad_tensor *l = ad_softmax_cross_entropy(ctx, z64, lab);
    cr_assert_eq(ad_grad(ctx, l, NULL, 1, &z64, &g64, false), AD_OK, "%s", ad_last_error(ctx));
    for (int k = 0; k < 2; k++) {
      l = ad_softmax_cross_entropy(ctx, z, lab);
      cr_assert_eq(ad_grad(ctx, l, NULL, 1, &z, &g[k], k == 1), AD_OK, "%s", ad_last_error(ctx));
    }
    cr_assert(memcmp(g[0]->data, g[1]->data, (size_t)z->size * sizeof(float)) == 0,
              "C %lld: the plain and the recorded backward differ", (long long)C);
    for (int64_t r = 0; r < N; r++)
      for (int64_t k = 0; k < C; k++) {
        int64_t i = r * C + k;
        double gw = ad_tensor_get(g64, i), gg = ad_tensor_get(g[0], i);
        if (r == N - 1) {
          cr_assert(isnan(gg), "C %lld element %lld: %g, want NaN", (long long)C, (long long)i, gg);
          continue;
        }
        double p = gw * N + (k == ((int32_t *)lab->data)[r]); /* the probability */
        double tol = 2 * ulp_f32(gw) + 2 * ulp_f32(p) / N;
        cr_assert(fabs(gg - gw) <= tol, "C %lld element %lld: %.9g, want %.17g (%.2f ulp)",
                  (long long)C, (long long)i, gg, gw, fabs(gg - gw) / ulp_f32(gw));
      }
    ad_tape_reset(ctx);
    ad_tensor_free(z), ad_tensor_free(z64), ad_tensor_free(lab);
  }
}

/* The float32 cross-entropy's blocks of positions on 1 and 3 threads:
 * the same loss and gradient bits, with ignored positions, for class
 * counts below and above the short-row path (17 classes: blocks of 15
 * positions, the forward's runs of 1020), and position counts that end
 * mid-block and span several of the forward's runs; the larger shapes
 * must hand their loops to the workers. The loss is also checked against
 * the float64 op, so that a run dropped or counted twice shows on one
 * thread too. */
Test(parallel, float32_cross_entropy_blocks_on_threads_same_bits) {
  static const int64_t shapes[][2] = {{9001, 3},  {70, 10},   {4500, 17}, {12289, 17},
                                      {2048, 64}, {9000, 64}, {300, 300}};
  ad_rng rng;
  ad_rng_seed(&rng, 29);
  ad_cross_entropy_opts o = {.ignore = true, .ignore_index = -100};
  for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
    int64_t N = shapes[si][0], C = shapes[si][1], zs[2] = {N, C};
    ad_tensor *z = ad_rand(ctx, &rng, AD_F32, 2, zs, -8, 8), *lab = ad_zeros(ctx, AD_I32, 1, &N);
    ad_tensor *z64 = ad_zeros(ctx, AD_F64, 2, zs);
    cr_assert(z && lab && z64, "%s", ad_last_error(ctx));
    for (int64_t r = 0; r < N; r++)
      ((int32_t *)lab->data)[r] =
          ad_rng_below(&rng, 7) == 0 ? -100 : (int32_t)ad_rng_below(&rng, (uint64_t)C);
    for (int64_t i = 0; i < z->size; i++) ad_tensor_set(z64, i, ad_tensor_get(z, i));
    ad_tensor_set_requires_grad(z, true);
    double want = ad_tensor_item(ad_softmax_cross_entropy_ext(ctx, z64, lab, &o));
    float loss[2];
    ad_tensor *g[2];
    for (int k = 0; k < 2; k++) {
      cr_assert_eq(ad_set_num_threads(k ? 3 : 1), AD_OK);
      /* On a loaded machine a stalled worker makes the pool run the next
       * loops in the caller for up to 160 ms (parallel.c): then the run is
       * repeated after that backoff, so that the bits compared below are
       * the workers' (a later attempt's result replaces the earlier one). */
      ad_thread_stats st[2];
      for (int attempt = 0;; attempt++) {
        ad_thread_stats_get(NULL, true);
        ad_tensor *l = ad_softmax_cross_entropy_ext(ctx, z, lab, &o);
        cr_assert(l, "%s", ad_last_error(ctx));
        ad_thread_stats_get(&st[0], true);
        loss[k] = *(const float *)l->data;
        cr_assert_eq(ad_grad(ctx, l, NULL, 1, &z, &g[k], false), AD_OK, "%s", ad_last_error(ctx));
        ad_thread_stats_get(&st[1], false);
        /* runs of the forward past the first, and the backward */
        if (!k || N * C < 100000 || (st[0].loops >= 2 && st[1].loops >= 1)) break;
        cr_assert(attempt < 20,
                  "N %lld C %lld: %lld forward and %lld backward loops on the workers",
                  (long long)N, (long long)C, (long long)st[0].loops, (long long)st[1].loops);
        nanosleep(&(struct timespec){0, 200000000}, NULL);
      }
    }
    ad_set_num_threads(1);
    cr_assert(memcmp(&loss[0], &loss[1], sizeof(float)) == 0, "N %lld C %lld: loss %.9g, %.9g",
              (long long)N, (long long)C, loss[0], loss[1]);
    cr_assert(fabs(loss[0] - want) <= 2 * ulp_f32(want), "N %lld C %lld: loss %.9g, want %.17g",
              (long long)N, (long long)C, loss[0], want);
    cr_assert(memcmp(g[0]->data, g[1]->data, (size_t)z->size * sizeof(float)) == 0,
              "N %lld C %lld: the gradients on 1 and 3 threads differ", (long long)N, (long long)C);
    for (int64_t r = 0; r < N; r += 97) /* an ignored position: exactly 0 */
      if (((int32_t *)lab->data)[r] == -100)
        cr_assert(ad_tensor_get(g[0], r * C) == 0 && ad_tensor_get(g[0], r * C + C - 1) == 0);
    ad_tape_reset(ctx);
    ad_tensor_free(z), ad_tensor_free(z64), ad_tensor_free(lab);
  }
}

/* max along the last axis (a contiguous lane: vector partial maxima, the
 * chain of comparisons again where the maximum is NaN or a zero,
 * op_reduce.c) gives the chain's bits: of several NaNs the last one seen
 * (payload and sign), of zeros of both signs the first, -inf for a lane of
 * -inf alone and for an empty lane (logsumexp's maximum: the empty sum's
 * log). Lanes of every length 0..300 hold random values, NaNs of random
 * payloads (float32 signalling ones too), zeros of both signs, infinities,
 * against the chain computed here, on 1 and 3 threads. */
static double chain_max(const ad_tensor *x, int64_t row, int64_t n) {
  double m = -INFINITY;
  for (int64_t k = 0; k < n; k++) {
    double v = ad_tensor_get(x, row * n + k);
    m = v > m || v != v ? v : m;
  }
  return m;
}

/* element i of a lane of kind kind: 0 random values in [-1, 1), 1 any of
 * those and NaN, zeros, infinities, 2 negative values and zeros of both
 * signs (the maximum a zero), 3 all but NaN, 4 -inf alone */
static void set_special(ad_tensor *x, int64_t i, int kind, ad_rng *rng) {
  uint64_t r = ad_rng_next(rng);
  int what = (int)(r % 8); /* 0-2 a value, 3 NaN, 4 +0, 5 -0, 6 -inf, 7 +inf */
  if (kind == 0 || (kind == 3 && what == 3)) what = 0;
  if (kind == 2) what = what == 4 || what == 5 ? what : 1;
  if (kind == 4) what = 6;
  double v = what == 1 ? -1 - ad_rng_uniform(rng) : ad_rng_uniform(rng) * 2 - 1;
  v = what == 4 ? 0.0 : what == 5 ? -0.0 : what == 6 ? -INFINITY : what == 7 ? INFINITY : v;
  if (x->dtype == AD_F32) {
    float *p = (float *)x->data + i;
    uint32_t b = (r >> 32 & 1) << 31 | 0x7f800000u | (uint32_t)(r >> 8 & 0x7fffff);
    if (what == 3 && !(b & 0x7fffff)) b |= 1;
    float f = (float)v;
    if (what == 3) memcpy(&f, &b, sizeof f);
    *p = f;
  } else {
    double *p = (double *)x->data + i;
    uint64_t b = (r >> 63) << 63 | 0x7ff8000000000000u | (r >> 13 & 0x7ffffffffffffu);
    if (what == 3) memcpy(&v, &b, sizeof v);
    *p = v;
  }
}

Test(parallel, max_of_contiguous_lanes_same_bits_as_the_chain) {
  ad_rng rng;
  ad_rng_seed(&rng, 19);
  enum { KINDS = 5, REPS = 3 };
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    size_t ds = ad_dtype_size(dt);
    for (int64_t n = 0; n <= 300; n++) {
      int64_t shape[2] = {KINDS * REPS, n};
      ad_tensor *x = ad_zeros(ctx, dt, 2, shape);
      cr_assert(x, "%s", ad_last_error(ctx));
      for (int64_t row = 0; row < shape[0]; row++)
        for (int64_t k = 0; k < n; k++) set_special(x, row * n + k, (int)(row % KINDS), &rng);
      for (int threads = 1; threads <= 3; threads += 2) {
        cr_assert_eq(ad_set_num_threads(threads), AD_OK);
        ad_tensor *y = n ? ad_max_axis(ctx, x, 1, false) : ad_logsumexp(ctx, x, 1, false);
        cr_assert(y, "%s", ad_last_error(ctx));
        for (int64_t row = 0; row < shape[0]; row++) {
          double want = chain_max(x, row, n);
          float wf = (float)want;
          const void *w = dt == AD_F32 ? (const void *)&wf : (const void *)&want;
          cr_assert(memcmp((const char *)y->data + (size_t)row * ds, w, ds) == 0,
                    "%s n %lld row %lld (kind %d), %d threads: %.17g, the chain %.17g",
                    ad_dtype_name(dt), (long long)n, (long long)row, (int)(row % KINDS), threads,
                    ad_tensor_get(y, row), want);
        }
        ad_tape_reset(ctx);
      }
      ad_set_num_threads(1);
      ad_tensor_free(x);
    }
  }
}

/* min is an op (op_reduce.c: max's kernels reading -x) that must give the
 * bits of the composite it replaced, -max(-x) (negations exact, NaN
 * payloads kept): along the last axis (rows, one lane alone), along the
 * first (lane blocks, their margins, one lane of a block alone) and over
 * everything, for lanes of random values, NaNs of random payloads (float32
 * signalling ones too), zeros of both signs, infinities, on 1 and 3
 * threads. */
Test(parallel, min_same_bits_as_neg_max_neg) {
  ad_rng rng;
  ad_rng_seed(&rng, 29);
  enum { KINDS = 5 };
  static const int64_t shapes[][2] = {{15, 1}, {15, 7}, {15, 40}, {15, 300}, {1, 300},
                                      {7, 65}, {40, 3}, {300, 2}, {130, 1},  {5, 129}};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    size_t ds = ad_dtype_size(dt);
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
      ad_tensor *x = ad_zeros(ctx, dt, 2, shapes[si]);
      cr_assert(x, "%s", ad_last_error(ctx));
      for (int64_t i = 0; i < x->size; i++)
        set_special(x, i, (int)(i / shapes[si][1] % KINDS), &rng);
      for (int threads = 1; threads <= 3; threads += 2) {
        cr_assert_eq(ad_set_num_threads(threads), AD_OK);
        for (int axis = -1; axis < 2; axis++) { /* -1: over everything */
          ad_tensor *y = axis < 0 ? ad_min(ctx, x) : ad_min_axis(ctx, x, axis, false);
          ad_tensor *nx = ad_neg(ctx, x);
          ad_tensor *w =
              ad_neg(ctx, axis < 0 ? ad_max(ctx, nx) : ad_max_axis(ctx, nx, axis, false));
          cr_assert(y && w, "%s", ad_last_error(ctx));
          cr_assert_eq(y->size, w->size);
          for (int64_t i = 0; i < y->size; i++)
            cr_assert(memcmp((const char *)y->data + (size_t)i * ds,
                             (const char *)w->data + (size_t)i * ds, ds) == 0,
                      "%s [%lld,%lld] axis %d, %d threads: min[%lld] %.17g, -max(-x) %.17g",
                      ad_dtype_name(dt), (long long)shapes[si][0], (long long)shapes[si][1], axis,
                      threads, (long long)i, ad_tensor_get(y, i), ad_tensor_get(w, i));
        }
        ad_tape_reset(ctx);
      }
      ad_set_num_threads(1);
      ad_tensor_free(x);
    }
  }
}

/* The same along the first axis: lanes L apart, taken in blocks four rows
 * at a time in the dtype (op_reduce.c's MAX_BLOCK): the chain's bits, a
 * signalling NaN quieted as the chain's double quiets it. */
Test(parallel, max_across_rows_same_bits_as_the_chain) {
  ad_rng rng;
  ad_rng_seed(&rng, 23);
  enum { KINDS = 5 };
  static const int64_t Ls[] = {1, 5, 64, 70, 130};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    size_t ds = ad_dtype_size(dt);
    for (size_t li = 0; li < sizeof Ls / sizeof *Ls; li++)
      for (int64_t n = 1; n <= 13; n++) {
        int64_t L = Ls[li], shape[2] = {n, L};
        ad_tensor *x = ad_zeros(ctx, dt, 2, shape);
        cr_assert(x, "%s", ad_last_error(ctx));
        for (int64_t k = 0; k < n; k++)
          for (int64_t j = 0; j < L; j++) set_special(x, k * L + j, (int)(j % KINDS), &rng);
        for (int threads = 1; threads <= 3; threads += 2) {
          cr_assert_eq(ad_set_num_threads(threads), AD_OK);
          ad_tensor *y = ad_max_axis(ctx, x, 0, false);
          cr_assert(y, "%s", ad_last_error(ctx));
          for (int64_t j = 0; j < L; j++) {
            double want = -INFINITY;
            for (int64_t k = 0; k < n; k++) {
              double v = ad_tensor_get(x, k * L + j);
              want = v > want || v != v ? v : want;
            }
            float wf = (float)want;
            const void *w = dt == AD_F32 ? (const void *)&wf : (const void *)&want;
            cr_assert(memcmp((const char *)y->data + (size_t)j * ds, w, ds) == 0,
                      "%s [%lld,%lld] lane %lld (kind %d), %d threads: %.17g, the chain %.17g",
                      ad_dtype_name(dt), (long long)n, (long long)L, (long long)j, (int)(j % KINDS),
                      threads, ad_tensor_get(y, j), want);
          }
          ad_tape_reset(ctx);
        }
        ad_set_num_threads(1);
        ad_tensor_free(x);
      }
  }
}

/* Sums of long contiguous lanes (a loss's mean, a sum of everything) are
 * cut into chunks fixed by the length alone and summed in interleaved
 * partials (op_reduce.c): the same bits on 1 and 3 threads, a long lane
 * alone (its chunks split over threads) and as one row of several (its
 * chunks on the row's thread) agree, and the value is within a few ulp of
 * the exact sum (a double-double sum here), for lengths around the
 * thresholds, including one long enough that the chunks grow. */
static double exact_sum(const ad_tensor *x, int64_t lo, int64_t n) {
  double hi = 0, lo_part = 0; /* Kahan-Babuska (Neumaier) in double */
  for (int64_t i = 0; i < n; i++) {
    double v = ad_tensor_get(x, lo + i), t = hi + v;
    lo_part += fabs(hi) >= fabs(v) ? (hi - t) + v : (v - t) + hi;
    hi = t;
  }
  return hi + lo_part;
}

Test(parallel, long_sums_are_deterministic_and_accurate) {
  static const int64_t lens[] = {255, 256, 257, 4095, 4096, 4097, 100003, 5000000};
  ad_rng rng;
  ad_rng_seed(&rng, 13);
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
      int64_t n = lens[li], sh[2] = {2, n};
      ad_tensor *x = ad_rand(ctx, &rng, dt, 2, sh, -1, 3);
      cr_assert_not_null(x, "%s", ad_last_error(ctx));
      ad_tensor *row = ad_narrow(ctx, x, 0, 1, 1); /* [1, n]: one lane alone */
      double sums[2][3];
      for (int t = 0; t < 2; t++) {
        cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
        ad_tensor *rows = ad_sum_axis(ctx, x, 1, false), *all = ad_sum(ctx, row);
        cr_assert(rows && all, "%s", ad_last_error(ctx));
        sums[t][0] = ad_tensor_get(rows, 0), sums[t][1] = ad_tensor_get(rows, 1);
        sums[t][2] = ad_tensor_get(all, 0);
      }
      ad_set_num_threads(1);
      for (int k = 0; k < 3; k++)
        cr_assert(memcmp(&sums[0][k], &sums[1][k], sizeof(double)) == 0,
                  "%s n %lld: 1 and 3 threads differ (%d)", ad_dtype_name(dt), (long long)n, k);
      cr_assert(sums[0][1] == sums[0][2], "%s n %lld: a row %.17g, the lane alone %.17g",
                ad_dtype_name(dt), (long long)n, sums[0][1], sums[0][2]);
      for (int r = 0; r < 2; r++) {
        double want = exact_sum(x, r * n, n), got = sums[0][r];
        double ulp = d ? ldexp(fabs(want), -52) : ldexp(fabs(want), -23);
        cr_assert(fabs(got - want) <= (d ? 64 : 1) * ulp, "%s n %lld row %d: %.17g, exact %.17g",
                  ad_dtype_name(dt), (long long)n, r, got, want);
      }
      ad_tape_reset(ctx);
      ad_tensor_free(x);
    }
  }
}

/* A float32 bias gradient (sum_to [R, C] -> [C], also of one output,
 * [R, 1] -> [1], of several trailing dims, and a convolution's [N, C, H,
 * W] -> [C, 1, 1]) is the
 * column's sum rounded once: within half an ulp of the exact sum (and a
 * hair for the double's own rounding), for row counts with and without a
 * tail of the four-row passes and columns past a block of 256, on 1 and 3
 * threads. A float running sum misses this by several ulp at a few hundred
 * rows. */
Test(parallel, float32_bias_gradient_is_the_rounded_column_sum) {
  static const int64_t rows[] = {1, 3, 4, 257, 300, 1031}, cols[] = {1, 1000};
  ad_rng rng;
  ad_rng_seed(&rng, 21);
  for (size_t ci = 0; ci < 2; ci++)
    for (size_t ri = 0; ri < sizeof rows / sizeof *rows; ri++) {
      int64_t R = rows[ri], C = cols[ci], sh[2] = {R, C};
      ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, sh, -1, 3);
      cr_assert_not_null(x, "%s", ad_last_error(ctx));
      ad_tensor *col = ad_permute(ctx, x, (const int[]){1, 0}); /* [C, R]: each column a row */
      cr_assert_not_null(col, "%s", ad_last_error(ctx));
      ad_tensor *got[2];
      for (int t = 0; t < 2; t++) {
        cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
        got[t] = ad_sum_to(ctx, x, 1, &C);
        cr_assert_not_null(got[t], "%s", ad_last_error(ctx));
      }
      ad_set_num_threads(1);
      cr_assert(memcmp(got[0]->data, got[1]->data, (size_t)C * sizeof(float)) == 0,
                "rows %lld: 1 and 3 threads differ", (long long)R);
      double worst = 0;
      for (int64_t c = 0; c < C; c++) {
        double want = exact_sum(col, c * R, R), ulp = ldexp(1, ilogb(want) - 23);
        double err = fabs(ad_tensor_get(got[0], c) - want) / ulp;
        if (err > worst) worst = err;
      }
      cr_assert(worst <= 0.5 + 1e-6, "[%lld,%lld]: %.3f ulp off the exact column sum", (long long)R,
                (long long)C, worst);
      ad_tape_reset(ctx);
      ad_tensor_free(x);
    }
  /* the gradient of an addend broadcast over leading dims, [40, 8, 9, 7]
   * -> [9, 7] (its trailing dims merge into rows of 63: column sums), with
   * a dim of 1 in between ([9, 1, 7]) and a last dim of 1 ([63, 1]) */
  static const int64_t ls[3][5] = {{40, 8, 9, 7}, {40, 8, 9, 1, 7}, {40, 8, 63, 1}};
  static const int64_t lk[3][3] = {{9, 7}, {9, 1, 7}, {63, 1}};
  static const int lnd[3] = {4, 5, 4}, lkd[3] = {2, 3, 2};
  for (int v = 0; v < 3; v++) {
    ad_tensor *xl = ad_rand(ctx, &rng, AD_F32, lnd[v], ls[v], -1, 3), *yl[2];
    cr_assert_not_null(xl, "%s", ad_last_error(ctx));
    for (int t = 0; t < 2; t++) {
      cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
      yl[t] = ad_sum_to(ctx, xl, lkd[v], lk[v]);
      cr_assert_not_null(yl[t], "%s", ad_last_error(ctx));
    }
    ad_set_num_threads(1);
    cr_assert(memcmp(yl[0]->data, yl[1]->data, 63 * sizeof(float)) == 0);
    for (int64_t o = 0; o < 63; o++) {
      double hi = 0, lo = 0; /* Neumaier over the 320 addends of element o */
      for (int64_t r = 0; r < 320; r++) {
        double x = ad_tensor_get(xl, r * 63 + o), t = hi + x;
        lo += fabs(hi) >= fabs(x) ? (hi - t) + x : (x - t) + hi;
        hi = t;
      }
      double want = hi + lo,
             err = fabs(ad_tensor_get(yl[0], o) - want) / ldexp(1, ilogb(want) - 23);
      cr_assert(err <= 0.5 + 1e-6, "case %d element %lld: %.3f ulp off", v, (long long)o, err);
    }
    ad_tensor_free(xl);
  }
  /* a convolution's bias gradient: [N, C, H, W] -> [C, 1, 1], each
   * channel's sum rounded once */
  int64_t cs[4] = {9, 3, 23, 17}, keep[3] = {3, 1, 1};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 4, cs, -1, 3);
  cr_assert_not_null(x, "%s", ad_last_error(ctx));
  ad_tensor *y = ad_sum_to(ctx, x, 3, keep);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  for (int64_t c = 0; c < 3; c++) {
    double hi = 0, lo = 0; /* Neumaier over the channel's elements */
    for (int64_t n = 0; n < 9; n++)
      for (int64_t i = 0; i < 23 * 17; i++) {
        double v = ad_tensor_get(x, (n * 3 + c) * 23 * 17 + i), t = hi + v;
        lo += fabs(hi) >= fabs(v) ? (hi - t) + v : (v - t) + hi;
        hi = t;
      }
    double want = hi + lo, err = fabs(ad_tensor_get(y, c) - want) / ldexp(1, ilogb(want) - 23);
    cr_assert(err <= 0.5 + 1e-6, "channel %lld: %.3f ulp off", (long long)c, err);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* A broadcasting binary op whose trailing dims merge into long rows
 * (attention's [N, H, T, T] + [T, T], a channel scale [N, C, H, W] * [C,
 * 1, 1], either side broadcast) gives the bits of the same op on its
 * operands expanded to the output's shape (the flat path), for a plain
 * kernel (sub), a vectorized one (pow) and where, both dtypes, 1 and 3
 * threads. */
Test(parallel, broadcast_rows_merged_same_bits_as_expanded) {
  static const int64_t shapes[][2][4] = {
      {{2, 3, 5, 5}, {1, 1, 5, 5}}, {{2, 3, 4, 5}, {1, 3, 1, 1}}, {{1, 1, 5, 5}, {2, 3, 5, 5}},
      {{4, 1, 3, 2}, {1, 5, 3, 2}}, {{6, 7, 1, 9}, {1, 7, 8, 1}}, {{3, 64, 33, 17}, {1, 64, 1, 1}}};
  ad_rng rng;
  ad_rng_seed(&rng, 37);
  for (int d = 0; d < 2; d++)
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
      ad_dtype dt = d ? AD_F64 : AD_F32;
      ad_tensor *a = ad_rand(ctx, &rng, dt, 4, shapes[k][0], 0.5, 2);
      ad_tensor *b = ad_rand(ctx, &rng, dt, 4, shapes[k][1], -1.5, 1.5);
      cr_assert(a && b, "%s", ad_last_error(ctx));
      ad_tensor *cond = ad_rand(ctx, &rng, dt, 4, shapes[k][1], -1, 1); /* b's shape */
      cr_assert(cond, "%s", ad_last_error(ctx));
      for (int64_t i = 0; i < cond->size; i += 2) ad_tensor_set(cond, i, 0.0); /* half false */
      for (int op = 0; op < 3; op++)
        for (int t = 0; t < 2; t++) {
          cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
          ad_tensor *y = op == 2 ? ad_where(ctx, cond, a, b)
                         : op    ? ad_pow(ctx, a, b)
                                 : ad_sub(ctx, a, b);
          cr_assert(y, "%s", ad_last_error(ctx));
          ad_tensor *ae = ad_expand(ctx, a, y->ndim, y->shape),
                    *be = ad_expand(ctx, b, y->ndim, y->shape),
                    *ce = ad_expand(ctx, cond, y->ndim, y->shape);
          ad_tensor *w = op == 2 ? ad_where(ctx, ce, ae, be)
                         : op    ? ad_pow(ctx, ae, be)
                                 : ad_sub(ctx, ae, be);
          cr_assert(w, "%s", ad_last_error(ctx));
          cr_assert(memcmp(y->data, w->data, (size_t)y->size * ad_dtype_size(dt)) == 0,
                    "%s %s case %zu: not the expanded operands' bits", ad_dtype_name(dt),
                    op == 2 ? "where"
                    : op    ? "pow"
                            : "sub",
                    k);
          ad_tape_reset(ctx);
        }
      ad_set_num_threads(1);
      ad_tensor_free(a), ad_tensor_free(b), ad_tensor_free(cond);
    }
}

/* The copies of narrow, pad, pad_nd in mode constant and expand
 * (op_shape.c: short rows copied inline, a pad's whole rows zeroed then
 * filled, the rows of pad_nd and expand found by counting) against plain
 * loops over the elements, on one thread and three: rows of 1 to 20
 * elements in both dtypes (under and over 64 bytes) with enough of them
 * (70,003) that the threads' ranges start inside rows; a narrow's
 * backward is the pad of its gradient, pad_nd's a crop. */
Test(parallel, narrow_pad_expand_copies_as_plain_loops) {
  static const int64_t widths[] = {1, 2, 3, 4, 5, 8, 15, 16, 17, 20};
  const int64_t rows = 70003;
  ad_rng rng;
  ad_rng_seed(&rng, 41);
  for (int d = 0; d < 2; d++)
    for (size_t w = 0; w < sizeof widths / sizeof *widths; w++)
      for (int t = 0; t < 2; t++) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        int64_t n = widths[w], lo = n > 2 ? 1 : 0, len = n > 2 ? n - 2 : n, before = n % 3,
                after = 1 + n % 2, sh[2] = {rows, n};
        cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
        ad_tensor *x = ad_rand(ctx, &rng, dt, 2, sh, -1, 1);
        cr_assert(x && ad_tensor_set_requires_grad(x, true) == AD_OK, "%s", ad_last_error(ctx));
        ad_tensor *y = ad_narrow(ctx, x, 1, lo, len), *p = ad_pad(ctx, x, 1, before, after);
        cr_assert(y && p, "%s", ad_last_error(ctx));
        for (int64_t r = 0; r < rows; r++) {
          for (int64_t j = 0; j < len; j++)
            cr_assert_eq(ad_tensor_get(y, r * len + j), ad_tensor_get(x, r * n + lo + j),
                         "%s width %lld, %d threads: narrow at row %lld col %lld",
                         ad_dtype_name(dt), (long long)n, t ? 3 : 1, (long long)r, (long long)j);
          int64_t pw = n + before + after;
          for (int64_t j = 0; j < pw; j++) {
            double want =
                j < before || j >= before + n ? 0.0 : ad_tensor_get(x, r * n + j - before);
            cr_assert_eq(ad_tensor_get(p, r * pw + j), want,
                         "%s width %lld, %d threads: pad at row %lld col %lld", ad_dtype_name(dt),
                         (long long)n, t ? 3 : 1, (long long)r, (long long)j);
          }
        }
        /* narrow's backward: the seed (k + 1 at element k) padded back to x's width */
        ad_tensor *seed = ad_zeros_like(ctx, y);
        cr_assert(seed, "%s", ad_last_error(ctx));
        for (int64_t k = 0; k < seed->size; k++) ad_tensor_set(seed, k, (double)(k % 1000 + 1));
        cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s", ad_last_error(ctx));
        for (int64_t r = 0; r < rows; r++)
          for (int64_t j = 0; j < n; j++) {
            double want = j < lo || j >= lo + len ? 0.0 : (double)((r * len + j - lo) % 1000 + 1);
            cr_assert_eq(ad_tensor_get(x->grad, r * n + j), want,
                         "%s width %lld, %d threads: narrow's gradient at row %lld col %lld",
                         ad_dtype_name(dt), (long long)n, t ? 3 : 1, (long long)r, (long long)j);
          }
        ad_tape_reset(ctx);
        ad_tensor_free(x);
      }
  /* pad_nd in mode constant over three axes (rows found by counting) and its backward, a crop */
  for (int d = 0; d < 2; d++)
    for (int t = 0; t < 2; t++) {
      ad_dtype dt = d ? AD_F64 : AD_F32;
      const int64_t xs[4] = {40, 7, 33, 9}, pad[6] = {1, 2, 0, 1, 2, 0}, ys[4] = {40, 9, 34, 12};
      cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
      ad_tensor *x = ad_rand(ctx, &rng, dt, 4, xs, -1, 1);
      cr_assert(x && ad_tensor_set_requires_grad(x, true) == AD_OK, "%s", ad_last_error(ctx));
      ad_tensor *y = ad_pad_nd(ctx, x, 3, pad, AD_PAD_CONSTANT, 0.5);
      cr_assert(y, "%s", ad_last_error(ctx));
      for (int64_t i = 0; i < y->size; i++) {
        int64_t w = i % 12, h = i / 12 % 34, c = i / (12 * 34) % 9, n = i / (12 * 34 * 9);
        int64_t xw = w - 1, xh = h - 0, xc = c - 2; /* F.pad's order: the last axis first */
        bool in = xw >= 0 && xw < 9 && xh >= 0 && xh < 33 && xc >= 0 && xc < 7;
        double want = in ? ad_tensor_get(x, ((n * 7 + xc) * 33 + xh) * 9 + xw) : 0.5;
        cr_assert_eq(ad_tensor_get(y, i), want, "%s, %d threads: pad_nd at %lld", ad_dtype_name(dt),
                     t ? 3 : 1, (long long)i);
      }
      ad_tensor *seed = ad_zeros_like(ctx, y);
      cr_assert(seed, "%s", ad_last_error(ctx));
      for (int64_t k = 0; k < seed->size; k++) ad_tensor_set(seed, k, (double)(k % 1000 + 1));
      cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s", ad_last_error(ctx));
      for (int64_t i = 0; i < x->size; i++) {
        int64_t w = i % 9, h = i / 9 % 33, c = i / (9 * 33) % 7, n = i / (9 * 33 * 7);
        int64_t k = ((n * ys[1] + c + 2) * ys[2] + h) * ys[3] + w + 1;
        cr_assert_eq(ad_tensor_get(x->grad, i), (double)(k % 1000 + 1),
                     "%s, %d threads: pad_nd's gradient at %lld", ad_dtype_name(dt), t ? 3 : 1,
                     (long long)i);
      }
      ad_tape_reset(ctx);
      ad_tensor_free(x);
    }
  /* expand: a middle axis, a leading one, trailing ones after a kept one, one element */
  static const int64_t ex[][2][3] = {{{7, 1, 9}, {7, 3001, 9}},  {{1, 5, 3}, {4001, 5, 3}},
                                     {{6, 1, 1}, {6, 700, 11}},  {{1, 1, 1}, {300, 7, 9}},
                                     {{3, 1, 70}, {3, 900, 70}}, {{2, 9, 1}, {2, 9, 3001}}};
  for (int d = 0; d < 2; d++)
    for (size_t k = 0; k < sizeof ex / sizeof *ex; k++)
      for (int t = 0; t < 2; t++) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
        ad_tensor *x = ad_rand(ctx, &rng, dt, 3, ex[k][0], -1, 1);
        ad_tensor *y = x ? ad_expand(ctx, x, 3, ex[k][1]) : NULL;
        cr_assert(y, "%s", ad_last_error(ctx));
        const int64_t *xs = ex[k][0], *ys = ex[k][1];
        for (int64_t i = 0; i < ys[0]; i++)
          for (int64_t j = 0; j < ys[1]; j++)
            for (int64_t l = 0; l < ys[2]; l++) {
              int64_t xi = (xs[0] == 1 ? 0 : i) * xs[1] * xs[2] + (xs[1] == 1 ? 0 : j) * xs[2] +
                           (xs[2] == 1 ? 0 : l);
              cr_assert_eq(ad_tensor_get(y, (i * ys[1] + j) * ys[2] + l), ad_tensor_get(x, xi),
                           "%s expand case %zu, %d threads: element (%lld, %lld, %lld)",
                           ad_dtype_name(dt), k, t ? 3 : 1, (long long)i, (long long)j,
                           (long long)l);
            }
        ad_tape_reset(ctx);
        ad_tensor_free(x);
      }
  ad_set_num_threads(1);
}

/* Binary ops run their rows compiled for AVX-512 and AVX2 on outputs of
 * at most 4 MiB and the baseline's on larger ones (op_elementwise.c,
 * BINARY_WIDE_MAX; a division the wide ones at every size): the same bits
 * either way. Each op on operands of 1040 rows of 1024 (4.06 MiB in
 * float32: baseline rows) against the same op on their first 260 rows
 * (wide rows), same shapes and broadcast (a row, a column, a scalar, both
 * sides), values with infinities, zeros of both signs and a NaN on one
 * side. */
static ad_tensor *op_div(ad_ctx *c, ad_tensor *a, ad_tensor *b) { return ad_div(c, a, b); }
static ad_tensor *op_lt(ad_ctx *c, ad_tensor *a, ad_tensor *b) { return ad_lt(c, a, b); }
Test(parallel, binary_ops_same_bits_wide_and_baseline) {
  ad_tensor *(*const ops[])(ad_ctx *, ad_tensor *, ad_tensor *) = {
      ad_add, ad_sub, ad_mul, op_div, ad_maximum, ad_minimum, op_lt};
  static const char *const names[] = {"add", "sub", "mul", "div", "maximum", "minimum", "lt"};
  /* b's shape for a [R, 1024]: R is 1040 or 260 */
  static const int64_t bshape[][2] = {{-1, 1024}, {1, 1024}, {-1, 1}, {1, 1}};
  ad_rng rng;
  ad_rng_seed(&rng, 41);
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    ad_tensor *a = rand_tensor(&rng, dt, 1040, 1024);
    for (int64_t i = 0; i < a->size; i += 97)
      ad_tensor_set(a, i, i % 3 ? (i % 2 ? INFINITY : -0.0) : NAN);
    for (size_t k = 0; k < sizeof bshape / sizeof *bshape; k++) {
      ad_tensor *b = rand_tensor(&rng, dt, bshape[k][0] < 0 ? 1040 : 1, bshape[k][1]);
      for (int64_t i = 5; i < b->size; i += 89) ad_tensor_set(b, i, i % 2 ? 0.0 : -INFINITY);
      for (size_t o = 0; o < sizeof ops / sizeof *ops; o++)
        for (int swap = 0; swap < 2; swap++) { /* b on the left too: the other broadcast side */
          ad_tensor *big = swap ? ops[o](ctx, b, a) : ops[o](ctx, a, b);
          ad_tensor *a4 = ad_narrow(ctx, a, 0, 0, 260);
          ad_tensor *b4 = bshape[k][0] < 0 ? ad_narrow(ctx, b, 0, 0, 260) : b;
          ad_tensor *small = swap ? ops[o](ctx, b4, a4) : ops[o](ctx, a4, b4);
          cr_assert(big && small, "%s", ad_last_error(ctx));
          cr_assert_eq(small->size * 4, big->size);
          cr_assert(memcmp(small->data, big->data, (size_t)small->size * ad_dtype_size(dt)) == 0,
                    "%s %s, b of shape [%lld,%lld]%s: the wide rows' bits differ",
                    ad_dtype_name(dt), names[o], (long long)bshape[k][0], (long long)bshape[k][1],
                    swap ? " on the left" : "");
          ad_tape_reset(ctx);
        }
      ad_tensor_free(b);
    }
    ad_tensor_free(a);
  }
}

static ad_tensor *op_pow(ad_ctx *c, ad_tensor *a, ad_tensor *b) { return ad_pow(c, a, b); }
static ad_tensor *op_prelu(ad_ctx *c, ad_tensor *a, ad_tensor *b) { return ad_prelu(c, a, b); }
/* where(cond, a, b) with cond of shape c's and each dtype, a and b both
 * of out's shape or a of a's and b of out's, against the same on operands
 * expanded to out's shape, bit for bit (part of the test below). */
static void where_short_rows(ad_tensor *a, ad_tensor *c, size_t k) {
  static const ad_dtype cds[3] = {AD_F32, AD_F64, AD_I32};
  for (int ci = 0; ci < 3; ci++) {
    ad_tensor *cond = ad_zeros(ctx, cds[ci], c->ndim, c->shape);
    cr_assert_not_null(cond, "%s", ad_last_error(ctx));
    for (int64_t e = 0; e < cond->size; e++) /* zeros, NaN (holds) and others */
      ad_tensor_set(cond, e, e % 3 == 0 ? 0 : cds[ci] == AD_I32 ? e % 5 : ad_tensor_get(c, e));
    ad_tensor *ab = ad_add(ctx, a, c); /* out's shape */
    cr_assert_not_null(ab, "%s", ad_last_error(ctx));
    ad_tensor *y = ad_where(ctx, cond, a, ab);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    ad_tensor *ec = ad_expand(ctx, cond, y->ndim, y->shape);
    ad_tensor *ea = ad_expand(ctx, a, y->ndim, y->shape);
    ad_tensor *r = ec && ea ? ad_where(ctx, ec, ea, ab) : NULL;
    cr_assert_not_null(r, "%s", ad_last_error(ctx));
    cr_assert(memcmp(y->data, r->data, (size_t)y->size * ad_dtype_size(y->dtype)) == 0,
              "where, cond %s, shapes %zu: the gathered rows' bits differ from the expanded "
              "operands'",
              ad_dtype_name(cds[ci]), k);
    ad_tape_reset(ctx);
  }
}

/* Rows shorter than 16 after merging are gathered in blocks of 512 and
 * computed as one flat row (op_elementwise.c's binary_short): against the
 * same op on operands expanded to the output's shape (the flat path, no
 * broadcast), bit for bit, with NaN, infinities and -0 among the values:
 * rows of 1 to 15 (block edges inside rows), a column, a row, a middle
 * axis, both operands broadcast, on 1 and 3 threads; where too; and
 * longer rows walked a row per call (binary_rows), threads' chunks
 * starting inside rows. */
Test(parallel, short_broadcast_rows_same_bits_as_expanded) {
  ad_tensor *(*const ops[])(ad_ctx *, ad_tensor *, ad_tensor *) = {
      ad_add, ad_sub, ad_mul, op_div, ad_maximum, ad_minimum, op_lt, op_pow, op_prelu};
  static const char *const names[] = {"add",     "sub", "mul", "div",  "maximum",
                                      "minimum", "lt",  "pow", "prelu"};
  /* {a's shape, b's shape} (3-d, a dim of 0 ends a shape of fewer dims) */
  static const int64_t shapes[][2][3] = {
      {{9001, 4, 0}, {9001, 1, 0}},
      {{9001, 4, 0}, {1, 4, 0}},
      {{9001, 4, 0}, {4, 0, 0}},
      {{2500, 15, 0}, {2500, 1, 0}},
      {{40000, 1, 0}, {1, 0, 0}},
      {{7000, 3, 0}, {7000, 1, 0}},
      {{3001, 5, 0}, {1, 5, 0}},
      {{900, 7, 5}, {900, 1, 5}},
      {{900, 1, 5}, {1, 7, 1}},
      {{4097, 1, 0}, {1, 9, 0}},
      {{300, 9, 13}, {1, 9, 1}},
      {{700, 90, 0}, {700, 1, 0}},
      {{3000, 17, 0}, {1, 17, 0}}, /* the last two: rows of 16 or more */
      /* two outer dims by tables: groups in a block, blocks in a group (the
       * operand the same along the middle, or not), neither (D1 prime) */
      {{3000, 7, 5}, {3000, 1, 5}},
      {{64, 256, 8}, {64, 1, 8}},
      {{64, 256, 8}, {1, 256, 1}},
      {{40, 127, 8}, {40, 1, 8}},
      {{500, 48, 3}, {500, 1, 1}},
  };
  ad_rng rng;
  ad_rng_seed(&rng, 43);
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
      ad_tensor *x[2];
      int nd[2];
      for (int i = 0; i < 2; i++) {
        nd[i] = shapes[k][i][1] == 0 ? 1 : shapes[k][i][2] == 0 ? 2 : 3;
        x[i] = ad_rand(ctx, &rng, dt, nd[i], shapes[k][i], 0.25, 2);
        cr_assert_not_null(x[i], "%s", ad_last_error(ctx));
        for (int64_t e = 3 + i; e < x[i]->size; e += 41 + 6 * i)
          ad_tensor_set(x[i], e,
                        e % 4 == 0   ? NAN
                        : e % 4 == 1 ? INFINITY
                        : e % 4 == 2 ? -0.0
                                     : -1.5);
      }
      for (size_t o = 0; o <= sizeof ops / sizeof *ops; o++)
        for (int t = 0; t < 2; t++) {
          cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
          if (o == sizeof ops / sizeof *ops) { /* where: conds of each dtype, b of out's shape */
            where_short_rows(x[0], x[1], k);
            continue;
          }
          ad_tensor *y = ops[o](ctx, x[0], x[1]);
          cr_assert_not_null(y, "%s: %s", names[o], ad_last_error(ctx));
          ad_tensor *ea = ad_expand(ctx, x[0], y->ndim, y->shape);
          ad_tensor *eb = ad_expand(ctx, x[1], y->ndim, y->shape);
          ad_tensor *r = ea && eb ? ops[o](ctx, ea, eb) : NULL;
          cr_assert_not_null(r, "%s", ad_last_error(ctx));
          cr_assert(memcmp(y->data, r->data, (size_t)y->size * ad_dtype_size(dt)) == 0,
                    "%s %s, shapes %zu, %d thread(s): the gathered rows' bits differ from the "
                    "expanded operands'",
                    ad_dtype_name(dt), names[o], k, t ? 3 : 1);
          ad_tape_reset(ctx);
        }
      ad_tensor_free(x[0]);
      ad_tensor_free(x[1]);
    }
  }
  cr_assert_eq(ad_set_num_threads(1), AD_OK);
}

/* where reads cond, a and b in loops of their dtypes, rows split over
 * threads: cond of each dtype (a NaN cond holds), broadcast patterns (a
 * column of conds, a row of a, a scalar b), float32 and float64 values,
 * against the rule element by element, on 1 and 3 threads. */
Test(parallel, where_by_dtype_and_broadcast) {
  static const ad_dtype cds[3] = {AD_F32, AD_F64, AD_I32};
  ad_rng rng;
  ad_rng_seed(&rng, 17);
  for (int v = 0; v < 2; v++) {
    ad_dtype dt = v ? AD_F64 : AD_F32;
    for (int ci = 0; ci < 3; ci++)
      for (int pat = 0; pat < 3; pat++) {
        int64_t R = 700, M = 90, sc[2] = {R, pat == 1 ? 1 : M}, sa[2] = {pat == 2 ? 1 : R, M};
        ad_tensor *cond = ad_zeros(ctx, cds[ci], 2, sc);
        ad_tensor *a = ad_rand(ctx, &rng, dt, 2, sa, -1, 1);
        ad_tensor *b = pat == 0 ? ad_rand(ctx, &rng, dt, 2, (int64_t[2]){R, M}, -1, 1)
                                : ad_full(ctx, dt, 0, NULL, -7.5);
        cr_assert(cond && a && b, "%s", ad_last_error(ctx));
        for (int64_t i = 0; i < cond->size; i++)
          ad_tensor_set(cond, i, ad_rng_below(&rng, 3) == 0 ? 0.0 : (double)ad_rng_below(&rng, 5));
        if (cds[ci] != AD_I32) ad_tensor_set(cond, 3, NAN);
        ad_tensor *y[2];
        for (int t = 0; t < 2; t++) {
          cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
          y[t] = ad_where(ctx, cond, a, b);
          cr_assert_not_null(y[t], "%s", ad_last_error(ctx));
        }
        ad_set_num_threads(1);
        cr_assert(memcmp(y[0]->data, y[1]->data, (size_t)y[0]->size * ad_dtype_size(dt)) == 0);
        for (int64_t r = 0; r < R; r++)
          for (int64_t m = 0; m < M; m++) {
            double cv = ad_tensor_get(cond, pat == 1 ? r : r * M + m);
            double want = cv != 0 ? ad_tensor_get(a, pat == 2 ? m : r * M + m)
                                  : ad_tensor_get(b, pat == 0 ? r * M + m : 0);
            QUICK_ASSERT(ad_tensor_get(y[0], r * M + m) == want,
                         "%s cond %d pattern %d [%lld,%lld]: %g, want %g", ad_dtype_name(dt), ci,
                         pat, (long long)r, (long long)m, ad_tensor_get(y[0], r * M + m), want);
          }
        ad_tape_reset(ctx);
        ad_tensor_free(cond), ad_tensor_free(a), ad_tensor_free(b);
      }
  }
}

Test(parallel, matmul_split_matches) {
  ad_rng rng;
  ad_rng_seed(&rng, 8);
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    double tol = d ? 1e-12 : 1e-5;
    ad_tensor *x = rand_tensor(&rng, dt, 256, 784), *w = rand_tensor(&rng, dt, 1000, 784);
    ad_tensor *dy = rand_tensor(&rng, dt, 256, 1000);
    cr_assert_leq(compare_threads(op_mm, x, w), tol);     /* forward: split over columns */
    cr_assert_leq(compare_threads(op_mm_ta, dy, x), tol); /* weight gradient: over rows */
    /* the seed model's first product (under the split's 4M multiply-adds)
     * and one just over it */
    ad_tensor *xs = rand_tensor(&rng, dt, 32, 784), *ws = rand_tensor(&rng, dt, 64, 784);
    cr_assert_leq(compare_threads(op_mm, xs, ws), tol);
    ad_tensor *xo = rand_tensor(&rng, dt, 32, 260), *wo = rand_tensor(&rng, dt, 512, 260);
    cr_assert_leq(compare_threads(op_mm, xo, wo), tol);
    /* a layer of 10 outputs: 2.6M multiply-adds, split as a tile-wide 8.4M */
    ad_tensor *xn = rand_tensor(&rng, dt, 256, 1024), *wn = rand_tensor(&rng, dt, 10, 1024);
    cr_assert_leq(compare_threads(op_mm, xn, wn), tol);
    ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(dy), ad_tensor_free(xs),
        ad_tensor_free(ws), ad_tensor_free(xo), ad_tensor_free(wo), ad_tensor_free(xn),
        ad_tensor_free(wn);
  }
}

/* ---------------------------------------- gradients added straight to grad */

/* L = sum(relu(x W^T + b) * c): W's gradient (added by the GEMM into grad)
 * and b's (through the tape) accumulate over passes, agree with ad_grad
 * (which builds them as temporaries), and are the same on 3 threads. */
Test(parallel, direct_parameter_gradients) {
  ad_rng rng;
  ad_rng_seed(&rng, 9);
  ad_tensor *x = rand_tensor(&rng, AD_F64, 64, 200), *w = rand_tensor(&rng, AD_F64, 300, 200);
  ad_tensor *b = rand_tensor(&rng, AD_F64, 300, 0), *c = rand_tensor(&rng, AD_F64, 64, 300);
  ad_tensor_set_requires_grad(w, true);
  ad_tensor_set_requires_grad(b, true);
  ad_tensor *g[2] = {NULL, NULL}, *params[2] = {w, b};
  ad_tensor *first[2] = {NULL, NULL};
  for (int threads = 1; threads <= 3; threads += 2) {
    cr_assert_eq(ad_set_num_threads(threads), AD_OK);
    for (int pass = 0; pass < 2; pass++) {
      ad_tensor *h = ad_relu(ctx, ad_add(ctx, ad_matmul(ctx, x, w, false, true), b));
      ad_tensor *L = ad_sum(ctx, ad_mul(ctx, h, c));
      cr_assert_eq(ad_backward(ctx, L, NULL), AD_OK, "%s", ad_last_error(ctx));
      if (pass == 0 && threads == 1) { /* the reference: ad_grad's temporaries */
        cr_assert_eq(ad_grad(ctx, L, NULL, 2, params, g, false), AD_OK);
        for (int k = 0; k < 2; k++) first[k] = ad_tensor_clone(ctx, g[k]);
      }
      ad_tape_reset(ctx);
    }
    for (int k = 0; k < 2; k++)
      for (int64_t i = 0; i < params[k]->size; i++) {
        double want = 2 * ad_tensor_get(first[k], i), got = ad_tensor_get(params[k]->grad, i);
        QUICK_ASSERT(test_close(got, want, 1e-12 * (1 + fabs(want))),
                     "threads %d, param %d [%lld]: %.17g, want %.17g", threads, k, (long long)i,
                     got, want);
      }
    ad_tensor_zero_grad(w);
    ad_tensor_zero_grad(b);
  }
  ad_set_num_threads(1);
  for (int k = 0; k < 2; k++) ad_tensor_free(first[k]);
  ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(b), ad_tensor_free(c);
}

/* Workers compute with the flush mode of the thread that gives them work:
 * each chunk notes the mode it ran under and whether a worker ran it. */
typedef struct flush_seen {
  pthread_t caller;
  _Atomic int worker_chunks, wrong;
  bool want;
} flush_seen;

static void note_flush_mode(void *ud, int64_t b, int64_t e) {
  flush_seen *fs = ud;
  (void)b, (void)e;
  if (ad_flush_denormal() != fs->want) atomic_fetch_add(&fs->wrong, 1);
  volatile float tiny = 1e-20f, r = tiny * tiny; /* 1e-40: subnormal, or 0 when flushing */
  if ((r == 0.0f) != fs->want) atomic_fetch_add(&fs->wrong, 1);
  if (!pthread_equal(pthread_self(), fs->caller)) atomic_fetch_add(&fs->worker_chunks, 1);
  /* ~20 us per chunk: the worker joins while the caller runs its own
   * chunks (chunks of nanoseconds would all be done before it looks) */
  for (double t0 = wall_s(); wall_s() - t0 < 20e-6;) {
  }
}

Test(parallel, workers_follow_the_callers_flush_mode) {
  if (!ad_set_flush_denormal(false)) cr_skip_test("this CPU has no flush-to-zero mode");
  cr_assert_eq(ad_set_num_threads(2), AD_OK); /* the worker starts with subnormals kept */
  for (int flush = 1; flush >= 0; flush--) {
    cr_assert(ad_set_flush_denormal(flush));
    cr_assert_eq(ad_flush_denormal(), flush == 1);
    flush_seen fs = {.caller = pthread_self(), .want = flush == 1};
    /* until the worker took some chunks (on a busy machine the pool may
     * run loops in the caller alone for a while), at most ~12 s */
    for (int rep = 0; rep < 10000 && atomic_load(&fs.worker_chunks) < 8; rep++) {
      ad_parallel_for(64, 1, note_flush_mode, &fs);
      if (rep % 100 == 99) nanosleep(&(struct timespec){0, 100000000}, NULL);
    }
    cr_assert_geq(atomic_load(&fs.worker_chunks), 8, "the worker ran chunks");
    cr_assert_eq(atomic_load(&fs.wrong), 0, "flush %d: chunks ran in the wrong mode", flush);
  }
  ad_set_flush_denormal(false);
  ad_set_num_threads(1);
}

/* softmax's gradient, one op (softmax_backward): dx = y (dy - sum(dy y))
 * along the axis, against that formula in double, for contiguous lanes of
 * 1 to 100 (the 16 partial sums and their tails) and the middle axis of
 * [3, n, inner] with inner up to 130 (blocks of 64 lanes and a tail), in
 * both dtypes (float32 within 1e-6 of the largest |y dy| of the lane,
 * float64 1e-14), and the same bits on 1 and 3 threads. */
Test(parallel, softmax_backward_against_its_formula) {
  ad_rng rng;
  ad_rng_seed(&rng, 33);
  static const int64_t inners[] = {1, 1, 1, 5, 64, 130};
  for (int d = 0; d < 2; d++)
    for (int trial = 0; trial < 24; trial++) {
      ad_dtype dt = d ? AD_F64 : AD_F32;
      int64_t inner = inners[trial % 6], n = 1 + (int64_t)ad_rng_below(&rng, 100);
      int64_t shape[3] = {3, n, inner};
      ad_tensor *x = ad_rand(ctx, &rng, dt, 3, shape, -3, 3);
      ad_tensor *seed = ad_rand(ctx, &rng, dt, 3, shape, -1, 1);
      cr_assert(x && seed, "%s", ad_last_error(ctx));
      ad_tensor_set_requires_grad(x, true);
      ad_tensor *g[2] = {NULL, NULL};
      for (int t = 0; t < 2; t++) {
        cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
        ad_tensor *y = ad_softmax(ctx, x, 1);
        cr_assert_eq(ad_grad(ctx, y, seed, 1, &x, &g[t], false), AD_OK, "%s", ad_last_error(ctx));
      }
      ad_set_num_threads(1);
      cr_assert(memcmp(g[0]->data, g[1]->data, (size_t)g[0]->size * ad_dtype_size(dt)) == 0,
                "%s n %lld inner %lld: 3 threads give other bits", ad_dtype_name(dt), (long long)n,
                (long long)inner);
      ad_tensor *y = ad_softmax(ctx, x, 1);
      for (int64_t o = 0; o < 3; o++)
        for (int64_t j = 0; j < inner; j++) {
          double s = 0, big = 0;
          for (int64_t k = 0; k < n; k++) {
            int64_t i = (o * n + k) * inner + j;
            s += ad_tensor_get(seed, i) * ad_tensor_get(y, i);
            big = fmax(big, fabs(ad_tensor_get(seed, i) * ad_tensor_get(y, i)));
          }
          for (int64_t k = 0; k < n; k++) {
            int64_t i = (o * n + k) * inner + j;
            double want = ad_tensor_get(y, i) * (ad_tensor_get(seed, i) - s);
            double got = ad_tensor_get(g[0], i);
            QUICK_ASSERT(fabs(got - want) <= (d ? 1e-14 : 1e-6) * (big + 1e-30),
                         "%s n %lld inner %lld: dx[%lld] %.17g, want %.17g", ad_dtype_name(dt),
                         (long long)n, (long long)inner, (long long)i, got, want);
          }
        }
      ad_tape_reset(ctx);
      ad_tensor_free(x);
      ad_tensor_free(seed);
    }
}

/* float32 gelu and its gradient (gelu_backward: dy GELU'(x)) with AVX-512
 * or AVX2 take each element through one half of erf (the series or the
 * erfc tail: values gathered and put back per chunk of 256), without them
 * through both: every element the bits of the element alone (a 1-element
 * tensor takes gelu_v or gelu_grad_v itself), for standard normal values
 * scaled by 2 with the edges sprinkled among them (NaN, the infinities,
 * +-13 and beyond, -0, subnormals, the floats around |x| / sqrt 2 = 0.9),
 * dy standard normal with an infinity and a NaN now and then, over lengths
 * that leave partial vectors and chunks, on 1 and 3 threads. */
Test(parallel, gelu_split_same_bits_as_whole) {
  static const float edges[] = {NAN,        INFINITY,    -INFINITY,   13.0f,       -13.0f,
                                13.5f,      -13.000001f, -0.0f,       0.0f,        1e-40f,
                                -1e-40f,    1.2727922f,  -1.2727922f, 1.27279234f, -1.27279234f,
                                1.2727921f, -1.2727921f, 9.0f,        -9.0f,       -5.3f};
  static const int64_t lens[] = {1, 7, 15, 16, 17, 31, 255, 256, 257, 271, 4099, 70001};
  ad_rng rng;
  cr_assert_eq(ad_rng_seed(&rng, 17), AD_OK);
  int gb = ad_op_find(ctx, "gelu_backward");
  cr_assert_geq(gb, 0);
  for (size_t L = 0; L < sizeof lens / sizeof *lens; L++) {
    int64_t n = lens[L];
    ad_tensor *x = ad_zeros(ctx, AD_F32, 1, &n);
    cr_assert_not_null(x, "%s", ad_last_error(ctx));
    float *xv = x->data;
    ad_tensor *dy = ad_zeros(ctx, AD_F32, 1, &n);
    cr_assert_not_null(dy, "%s", ad_last_error(ctx));
    float *gv = dy->data;
    for (int64_t i = 0; i < n; i++) {
      xv[i] = ad_rng_below(&rng, 8) == 0 ? edges[ad_rng_below(&rng, sizeof edges / sizeof *edges)]
                                         : (float)(2 * ad_rng_normal(&rng));
      uint32_t r = ad_rng_below(&rng, 64);
      gv[i] = r == 0 ? INFINITY : r == 1 ? NAN : (float)ad_rng_normal(&rng);
    }
    for (int threads = 1; threads <= 3; threads += 2) {
      cr_assert_eq(ad_set_num_threads(threads), AD_OK);
      ad_tensor *y = ad_gelu(ctx, x), *in2[2] = {dy, x};
      ad_tensor *d = ad_op_apply(ctx, gb, 2, in2, NULL);
      ad_set_num_threads(1);
      cr_assert(y && d, "%s", ad_last_error(ctx));
      float *yv = malloc(2 * (size_t)n * sizeof *yv), *dv = yv + n; /* y, d go with the resets */
      cr_assert_not_null(yv);
      memcpy(yv, y->data, (size_t)n * sizeof *yv);
      memcpy(dv, d->data, (size_t)n * sizeof *dv);
      for (int64_t i = 0; i < n; i++) {
        int64_t one = 1;
        ad_tensor *xi = ad_full(ctx, AD_F32, 1, &one, (double)xv[i]);
        ad_tensor *gi = ad_full(ctx, AD_F32, 1, &one, (double)gv[i]), *in1[2] = {gi, xi};
        ad_tensor *yi = ad_gelu(ctx, xi), *di = ad_op_apply(ctx, gb, 2, in1, NULL);
        cr_assert(yi && di, "%s", ad_last_error(ctx));
        float a = ((const float *)yi->data)[0], b = ((const float *)di->data)[0];
        QUICK_ASSERT(memcmp(&a, &yv[i], sizeof a) == 0,
                     "n %lld, %d threads: gelu(%a) alone %a, element %lld of the tensor %a",
                     (long long)n, threads, (double)xv[i], (double)a, (long long)i, (double)yv[i]);
        QUICK_ASSERT(memcmp(&b, &dv[i], sizeof b) == 0,
                     "n %lld, %d threads: gelu_backward(%a, %a) alone %a, element %lld of the "
                     "tensor %a",
                     (long long)n, threads, (double)gv[i], (double)xv[i], (double)b, (long long)i,
                     (double)dv[i]);
        ad_tensor_free(xi);
        ad_tensor_free(gi);
        if (i % 4096 == 4095) ad_tape_reset(ctx);
      }
      free(yv);
      ad_tape_reset(ctx);
    }
    ad_tensor_free(x);
    ad_tensor_free(dy);
  }
}

/* layer_norm and its backward take rows of up to 256 elements sixteen at
 * a time (each row's sums and coefficients as one row alone computes them):
 * y and dx of [R, M] against each row as a [1, M] tensor of its own (one
 * row: no block), bit for bit, without and with the affine parameters (dx
 * by layer_norm_backward, or by the one-pass plain backward), both dtypes.
 * R = 37 for rows of 1 to 257 (the short rows' chains, the 16 partials,
 * past the blocks' limit): blocks of 16 and rows left over. Then more rows,
 * so that the plain backward's groups of 16 rows are whole blocks and 3
 * threads split the rows where a block would start (the rows' grain, 32768
 * / M, is odd for M = 15 and 255): those against 1 thread, dweight and
 * dbias too, and every 13th row and the last 9 against the row alone. */
Test(parallel, layer_norm_row_blocks_same_bits_as_each_row_alone) {
  ad_rng rng;
  ad_rng_seed(&rng, 36);
  static const int64_t cases[11][2] = {{37, 1},    {37, 3},    {37, 16},  {37, 17},
                                       {37, 64},   {37, 100},  {37, 256}, {37, 257},
                                       {301, 255}, {2300, 15}, {1037, 64}};
  for (int ci = 0; ci < 11; ci++)
    for (int d = 0; d < 2; d++)
      for (int aff = 0; aff < 3; aff++) {
        ad_dtype dt = d ? AD_F32 : AD_F64;
        size_t es = d ? sizeof(float) : sizeof(double);
        int64_t R = cases[ci][0], M = cases[ci][1], xs[2] = {R, M}, rs[2] = {1, M};
        ad_tensor *x = ad_rand(ctx, &rng, dt, 2, xs, -3, 9),
                  *seed = ad_rand(ctx, &rng, dt, 2, xs, -1, 1);
        ad_tensor *w = aff ? ad_rand(ctx, &rng, dt, 1, &M, 0.5, 1.5) : NULL;
        ad_tensor *b = aff > 1 ? ad_rand(ctx, &rng, dt, 1, &M, -1, 1) : NULL;
        cr_assert(x && seed && (!aff || w) && (aff < 2 || b), "%s", ad_last_error(ctx));
        ad_tensor_set_requires_grad(x, true);
        if (w) ad_tensor_set_requires_grad(w, true);
        if (b) ad_tensor_set_requires_grad(b, true);
        ad_tensor *in[3] = {x, w, b}, *y[2], *g[2][3];
        int nin = 1 + (w != NULL) + (b != NULL);
        for (int th = 0; th < 2; th++) {
          cr_assert_eq(ad_set_num_threads(th ? 3 : 1), AD_OK);
          y[th] = ad_layer_norm(ctx, x, 1, &M, w, b, 1e-5);
          cr_assert(y[th] && ad_grad(ctx, y[th], seed, nin, in, g[th], false) == AD_OK, "%s",
                    ad_last_error(ctx));
        }
        ad_set_num_threads(1);
        cr_assert(memcmp(y[0]->data, y[1]->data, (size_t)(R * M) * es) == 0,
                  "%s [%lld,%lld] affine %d: y differs on 3 threads", ad_dtype_name(dt),
                  (long long)R, (long long)M, aff);
        for (int k = 0; k < nin; k++)
          cr_assert(memcmp(g[0][k]->data, g[1][k]->data, (size_t)(k ? M : R * M) * es) == 0,
                    "%s [%lld,%lld] affine %d: the gradient of input %d differs on 3 threads",
                    ad_dtype_name(dt), (long long)R, (long long)M, aff, k);
        for (int64_t r = 0; r < R; r++) {
          if (R > 64 && r % 13 && r < R - 9) continue;
          ad_tensor *xr = ad_zeros(ctx, dt, 2, rs), *sr = ad_zeros(ctx, dt, 2, rs);
          cr_assert(xr && sr, "%s", ad_last_error(ctx));
          memcpy(xr->data, (char *)x->data + (size_t)(r * M) * es, (size_t)M * es);
          memcpy(sr->data, (char *)seed->data + (size_t)(r * M) * es, (size_t)M * es);
          ad_tensor_set_requires_grad(xr, true);
          ad_tensor *rin[2] = {xr, w}, *rg[2];
          ad_tensor *yr = ad_layer_norm(ctx, xr, 1, &M, w, b, 1e-5);
          cr_assert(yr && ad_grad(ctx, yr, sr, w ? 2 : 1, rin, rg, false) == AD_OK, "%s",
                    ad_last_error(ctx));
          cr_assert(memcmp(yr->data, (char *)y[0]->data + (size_t)(r * M) * es, (size_t)M * es) ==
                        0,
                    "%s [%lld,%lld] affine %d: y of row %lld differs from the row alone",
                    ad_dtype_name(dt), (long long)R, (long long)M, aff, (long long)r);
          cr_assert(memcmp(rg[0]->data, (char *)g[0][0]->data + (size_t)(r * M) * es,
                           (size_t)M * es) == 0,
                    "%s [%lld,%lld] affine %d: dx of row %lld differs from the row alone",
                    ad_dtype_name(dt), (long long)R, (long long)M, aff, (long long)r);
          ad_tensor_free(xr);
          ad_tensor_free(sr);
        }
        ad_tape_reset(ctx);
        ad_tensor_free(x);
        ad_tensor_free(seed);
        ad_tensor_free(w);
        ad_tensor_free(b);
      }
}

/* Rows of exactly 16 float32 elements take kernels/norm16.c for dx where
 * the CPU has AVX-512 (blocks of 16 rows transposed in registers): dx
 * against each row alone (no block), bit for bit (NaN signs aside),
 * without a weight, with a weight that wants no gradient, and with one
 * that does under create_graph (both through layer_norm_backward with the
 * weight); 37 and 4111 rows (blocks and rows left over; 4111 past the
 * rows' grain of 2048, so that 3 threads split them), 1 and 3 threads. */
Test(parallel, layer_norm_rows_of_16_same_bits_as_each_row_alone) {
  ad_rng rng;
  ad_rng_seed(&rng, 37);
  static const int64_t rows[2] = {37, 4111};
  int64_t M = 16, rs[2] = {1, 16};
  for (int ri = 0; ri < 2; ri++)
    for (int aff = 0; aff < 3; aff++)
      for (int th = 1; th <= 3; th += 2) {
        int64_t R = rows[ri], xs[2] = {R, M};
        cr_assert_eq(ad_set_num_threads(th), AD_OK);
        ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, xs, -3, 9),
                  *seed = ad_rand(ctx, &rng, AD_F32, 2, xs, -1, 1);
        ad_tensor *w = aff ? ad_rand(ctx, &rng, AD_F32, 1, &M, 0.5, 1.5) : NULL;
        cr_assert(x && seed && (!aff || w), "%s", ad_last_error(ctx));
        ad_tensor_set(x, 5 * M + 3, NAN); /* a NaN row among the block's */
        ad_tensor_set_requires_grad(x, true);
        if (aff == 2) ad_tensor_set_requires_grad(w, true);
        ad_tensor *in[2] = {x, w}, *g[2];
        ad_tensor *y = ad_layer_norm(ctx, x, 1, &M, w, NULL, 1e-5);
        cr_assert(y && ad_grad(ctx, y, seed, aff == 2 ? 2 : 1, in, g, aff == 2) == AD_OK, "%s",
                  ad_last_error(ctx));
        for (int64_t r = 0; r < R; r++) {
          if (R > 64 && r % 29 && r < R - 9 && (r < 2040 || r > 2060)) continue;
          ad_tensor *xr = ad_zeros(ctx, AD_F32, 2, rs), *sr = ad_zeros(ctx, AD_F32, 2, rs);
          cr_assert(xr && sr, "%s", ad_last_error(ctx));
          memcpy(xr->data, (float *)x->data + r * M, (size_t)M * sizeof(float));
          memcpy(sr->data, (float *)seed->data + r * M, (size_t)M * sizeof(float));
          ad_tensor_set_requires_grad(xr, true);
          ad_tensor *rin[2] = {xr, w}, *rg[2];
          ad_tensor *yr = ad_layer_norm(ctx, xr, 1, &M, w, NULL, 1e-5);
          cr_assert(yr && ad_grad(ctx, yr, sr, aff == 2 ? 2 : 1, rin, rg, aff == 2) == AD_OK, "%s",
                    ad_last_error(ctx));
          for (int64_t i = 0; i < M; i++) {
            float a = ((float *)rg[0]->data)[i], b = ((float *)g[0]->data)[r * M + i];
            cr_assert(
                (a != a && b != b) || memcmp(&a, &b, sizeof a) == 0,
                "[%lld,16] weight %d, %d thread(s): dx[%lld][%lld] %.9g, the row alone's %.9g",
                (long long)R, aff, th, (long long)r, (long long)i, b, a);
          }
          ad_tensor_free(xr);
          ad_tensor_free(sr);
        }
        ad_tape_reset(ctx);
        ad_tensor_free(x);
        ad_tensor_free(seed);
        ad_tensor_free(w);
      }
  ad_set_num_threads(1);
}

/* layer_norm and its backward split their rows over threads (100 rows of
 * 1024: over the 33-row grain), with the same bits on 1 and 3 threads. */
Test(parallel, layer_norm_rows_on_threads_same_bits) {
  ad_rng rng;
  ad_rng_seed(&rng, 35);
  int64_t xs[2] = {100, 1024}, ns[1] = {1024};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, xs, -2, 5),
            *seed = ad_rand(ctx, &rng, AD_F32, 2, xs, -1, 1);
  ad_tensor *w = ad_rand(ctx, &rng, AD_F32, 1, ns, 0.5, 1.5),
            *b = ad_rand(ctx, &rng, AD_F32, 1, ns, -1, 1);
  cr_assert(x && seed && w && b, "%s", ad_last_error(ctx));
  ad_tensor_set_requires_grad(x, true);
  ad_tensor_set_requires_grad(w, true);
  ad_tensor *y[2], *g[2][2];
  for (int t = 0; t < 2; t++) {
    cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
    y[t] = ad_layer_norm(ctx, x, 1, ns, w, b, 1e-5);
    ad_tensor *in[2] = {x, w};
    cr_assert_eq(ad_grad(ctx, y[t], seed, 2, in, g[t], false), AD_OK, "%s", ad_last_error(ctx));
  }
  ad_set_num_threads(1);
  size_t bytes = (size_t)x->size * sizeof(float);
  cr_assert(memcmp(y[0]->data, y[1]->data, bytes) == 0, "y differs on 3 threads");
  cr_assert(memcmp(g[0][0]->data, g[1][0]->data, bytes) == 0, "dx differs on 3 threads");
  cr_assert(memcmp(g[0][1]->data, g[1][1]->data, 1024 * sizeof(float)) == 0,
            "dweight differs on 3 threads");
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(seed);
  ad_tensor_free(w);
  ad_tensor_free(b);
}
