/* parallel.c: the library's worker threads and ad_parallel_for.
 *
 * One process-wide pool of n - 1 workers (ad_set_num_threads(n)); the
 * calling thread is the n-th. A parallel loop is cut into chunks, and the
 * chunks into one run of consecutive chunks per thread, its home: the
 * caller's is the first, worker i's the (i + 2)-th. Each thread claims its
 * own chunks from the front, one at a time; a thread that has run out
 * takes the other threads' last chunks, from the back. So a worker that is
 * slow to wake (descheduled on a busy machine) never holds the loop up: the
 * threads that are running take its chunks, and the caller waits only for
 * chunks already claimed. This is the reason for a pool of our own rather
 * than OpenMP, whose loops end in a barrier that waits for every thread of
 * the team, running or not.
 *
 * Homes keep data on a core: while the threads keep pace, consecutive loops
 * over one range give each thread the same part of it, so what a chunk
 * wrote, the next loop's chunk finds in its own core's cache instead of
 * pulling it from another core (on CPUs whose cores pass cache lines
 * slowly, that costs more than reading memory). Claims from one shared
 * counter gave each chunk to whichever thread came first
 * (docs/performance.md, "Threads").
 *
 * Each home is one 64-bit atomic that packs the job's generation, the next
 * chunk and the end of the run: a claim is a compare-and-swap on all three,
 * and a thread reads the job's description only after a successful claim,
 * when the caller is still waiting for that chunk (the description cannot
 * change under it). Homes sit on cache lines of their own, so an owner's
 * claims stay in its core while nobody takes from it.
 *
 * A worker descheduled in the middle of a chunk (another process wants the
 * core) still stalls the caller until it runs again, for up to a scheduler
 * time slice. So when the caller has waited much longer than its own share
 * of a loop took, it runs the next loops alone for a while (an exponential
 * backoff): on a busy machine the library degrades to one thread instead of
 * to worse than one thread.
 *
 * Idle workers poll for about IDLE_SPIN_NS (a training step issues its
 * parallel loops microseconds apart), then sleep on a condition variable
 * until the next job. While they poll they yield the core now and then:
 * a worker that shares its core with the caller (a CPU quota, taskset)
 * would otherwise always be runnable and take half the core from the
 * caller, polling, and two threads would run at half the speed of one.
 * With OpenBLAS, ad_set_num_threads (matmul.c: the pool's size and the
 * products' side of it) sets it to one thread: the library splits large
 * products over its own threads instead, so BLAS threads never spin
 * beside these.
 *
 * fork() copies only the thread that calls it. A child of a process with
 * workers would otherwise keep a pool whose workers do not exist: every
 * loop run by the caller alone while ad_num_threads() still says n, and
 * ad_set_num_threads unable to start them again (it counts them as
 * started). So fork waits for a loop in progress to end (the prepare
 * handler takes the submit lock) and the child starts with a fresh pool
 * that starts its workers again at its first loop, as PyTorch's pool does
 * in a forked child. */
#include "kernels.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#define MAX_THREADS  64
#define IDLE_SPIN_NS 200000 /* how long an idle worker polls before sleeping */
/* A loop whose caller waited for claimed chunks longer than STALL_NS and
 * than twice its own share of the work had a worker descheduled mid-chunk
 * (another process wants the core); loops then run in the caller alone for
 * a backoff that starts at BACKOFF_MIN_NS, doubles with every further stall
 * up to BACKOFF_MAX_NS, and halves when four backoffs' time has passed since
 * the last stall. */
#define STALL_NS       200000
#define BACKOFF_MIN_NS 10000000
#define BACKOFF_MAX_NS 160000000

/* a home's word: generation (24 bits) | next chunk (20) | end (20) */
#define W_BITS    20
#define W_MASK    ((UINT64_C(1) << W_BITS) - 1)
#define W_NEXT(w) (((w) >> W_BITS) & W_MASK)
#define W_END(w)  ((w)&W_MASK)
#define W_GEN(w)  ((w) >> (2 * W_BITS))
#define W_MAKE(g, i, e)                                                                            \
  (((uint64_t)(g) << (2 * W_BITS)) | ((uint64_t)(i) << W_BITS) | (uint64_t)(e))
#define MAX_CHUNKS ((int64_t)W_MASK)

static struct {
  pthread_mutex_t submit; /* one caller at a time */
  pthread_mutex_t sleep_mu;
  pthread_cond_t wake;
  _Atomic uint64_t job; /* W_MAKE(the current job's generation, 0, 0): a new one wakes workers */
  _Atomic int64_t done; /* chunks finished of the current job */
  _Atomic int sleepers;
  _Atomic int active;  /* workers allowed to claim: threads - 1 */
  int started;         /* workers created */
  _Atomic int threads; /* ad_num_threads() */
  _Atomic bool lost;   /* a forked child whose workers stayed in the parent */
  bool fork_locked;    /* the prepare handler holds submit */
  /* the current job, stable while any of its chunks is outstanding */
  ad_range_fn fn;
  void *ud;
  int64_t n, chunk;
  unsigned flush; /* the caller's denormal bits (fp_flush_bits), for the workers */
  /* stall backoff (see ad_parallel_for), used under the submit lock */
  int64_t serial_until, backoff, last_stall; /* ns */
  /* ad_thread_stats (ns), on their own cache line: the workers write them
   * while others read the job's fields */
  struct {
    _Alignas(64) _Atomic int64_t loops;
    _Atomic int64_t chunks, worker_ns, caller_ns, wait_ns;
  } st;
  /* the threads' homes: 0 the caller's, i + 1 worker i's (see the top) */
  struct {
    _Alignas(64) _Atomic uint64_t word;
  } home[MAX_THREADS];
} pool = {.submit = PTHREAD_MUTEX_INITIALIZER,
          .sleep_mu = PTHREAD_MUTEX_INITIALIZER,
          .wake = PTHREAD_COND_INITIALIZER,
          .threads = 1};

static _Thread_local bool in_task; /* set while this thread runs a chunk */

static inline void cpu_relax(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_ia32_pause();
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* --------------------------------------------------- subnormal floats
 * Flush-to-zero (results) and denormals-are-zero (inputs): the MXCSR bits
 * FTZ and DAZ on x86, FPCR.FZ on AArch64 (which does both). Per thread: a
 * worker takes the bits of the thread that hands it a job. */

#if defined(__x86_64__) || defined(__i386__)
#define FLUSH_BITS 0x8040u /* FTZ | DAZ */
static unsigned fp_flush_bits(void) { return _mm_getcsr() & FLUSH_BITS; }
static void fp_set_flush_bits(unsigned bits) {
  unsigned csr = _mm_getcsr();
  if ((csr & FLUSH_BITS) != bits) _mm_setcsr((csr & ~FLUSH_BITS) | bits);
}
#elif defined(__aarch64__)
#define FLUSH_BITS (1u << 24) /* FPCR.FZ */
static unsigned fp_flush_bits(void) {
  uint64_t fpcr;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
  return (unsigned)fpcr & FLUSH_BITS;
}
static void fp_set_flush_bits(unsigned bits) {
  uint64_t fpcr;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
  if (((unsigned)fpcr & FLUSH_BITS) != bits)
    __asm__ __volatile__("msr fpcr, %0" ::"r"((fpcr & ~(uint64_t)FLUSH_BITS) | bits));
}
#else
#define FLUSH_BITS 0u /* not supported: subnormals are kept */
static unsigned fp_flush_bits(void) { return 0; }
static void fp_set_flush_bits(unsigned bits) { (void)bits; }
#endif

bool ad_set_flush_denormal(bool on) {
  if (!FLUSH_BITS) return false;
  fp_set_flush_bits(on ? FLUSH_BITS : 0);
  return true;
}

bool ad_flush_denormal(void) { return FLUSH_BITS && fp_flush_bits() == FLUSH_BITS; }

/* Claims a chunk of home h: from the front (its owner) or from the back
 * (another thread). False when the home has none left. */
static bool claim(int h, bool front, int64_t *chunk) {
  _Atomic uint64_t *word = &pool.home[h].word;
  uint64_t w = atomic_load_explicit(word, memory_order_acquire);
  while (W_NEXT(w) < W_END(w)) {
    uint64_t claimed = front ? w + (UINT64_C(1) << W_BITS) : w - 1;
    if (atomic_compare_exchange_weak_explicit(word, &w, claimed, memory_order_acq_rel,
                                              memory_order_acquire)) {
      *chunk = (int64_t)(front ? W_NEXT(w) : W_END(w) - 1);
      return true;
    } /* else w was reloaded */
  }
  return false;
}

/* Runs chunk i of the current job. A worker adds the chunk's time to the
 * statistics before it counts the chunk done, so that they are complete
 * when the caller returns. */
static void run_chunk(int64_t i, bool worker) {
  int64_t b = i * pool.chunk, e = b + pool.chunk < pool.n ? b + pool.chunk : pool.n;
  fp_set_flush_bits(pool.flush); /* the caller's: a no-op for the caller itself */
  int64_t t0 = worker ? now_ns() : 0;
  in_task = true;
  pool.fn(pool.ud, b, e);
  in_task = false;
  if (worker) {
    atomic_fetch_add_explicit(&pool.st.worker_ns, now_ns() - t0, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool.st.chunks, 1, memory_order_relaxed);
  }
  atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
}

/* Runs home h's chunks from the front, then those of homes 0 .. homes - 1
 * from the back (the next thread's first) until none is left. The caller
 * passes the count it dealt, so that it leaves no chunk behind; a worker
 * passes the thread count it reads, which may be a later job's: homes
 * beyond a job's count are empty (their last job is complete), a claim
 * from a later job is as right as one from this job, and a home the worker
 * does not visit the caller does. */
static void run_chunks(int h, int homes) {
  bool worker = h > 0;
  int64_t i;
  while (claim(h, true, &i)) run_chunk(i, worker);
  for (int k = 1; k < homes; k++)
    while (claim((h + k) % homes, false, &i)) run_chunk(i, worker);
}

/* A job that this worker has not joined (its generation is not seen), and
 * the worker may take part. The check before sleeping reads the job with
 * seq_cst order: with the caller's seq_cst store of the job and load of
 * pool.sleepers, either the caller sees this worker asleep or the worker
 * sees the job (acquire alone allows both to miss). */
static bool job_open(int index, uint64_t seen, memory_order order) {
  return W_GEN(atomic_load_explicit(&pool.job, order)) != seen &&
         index < atomic_load_explicit(&pool.active, memory_order_relaxed);
}

static void *worker(void *arg) {
  int index = (int)(intptr_t)arg;
  uint64_t seen = W_GEN(atomic_load(&pool.job)); /* the last job joined */
  for (;;) {
    /* poll for a while, then sleep until a job is published */
    int64_t t0 = now_ns();
    for (unsigned spins = 0;; spins++) {
      if (job_open(index, seen, memory_order_acquire)) break;
      if ((spins & 63) == 63)
        sched_yield(); /* a thread of ours on this core (the caller) runs instead */
      else
        cpu_relax();
      if ((spins & 255) == 255 && now_ns() - t0 > IDLE_SPIN_NS) {
        pthread_mutex_lock(&pool.sleep_mu);
        atomic_fetch_add(&pool.sleepers, 1);
        while (!job_open(index, seen, memory_order_seq_cst))
          pthread_cond_wait(&pool.wake, &pool.sleep_mu);
        atomic_fetch_sub(&pool.sleepers, 1);
        pthread_mutex_unlock(&pool.sleep_mu);
        break;
      }
    }
    seen = W_GEN(atomic_load(&pool.job));
    run_chunks(index + 1, atomic_load_explicit(&pool.threads, memory_order_relaxed));
  }
  return NULL;
}

/* fork's handlers (see the top), registered with the first worker. A fork
 * from inside a chunk (a range function that forks) cannot wait for its
 * own loop: then the child's pool is made fresh all the same, and only the
 * parent's loop goes on as it was. */
static void fork_prepare(void) {
  if (in_task) return;
  pthread_mutex_lock(&pool.submit);
  pool.fork_locked = true;
}

static void fork_parent(void) {
  if (!pool.fork_locked) return;
  pool.fork_locked = false;
  pthread_mutex_unlock(&pool.submit);
}

static void fork_child(void) {
  static const pthread_mutex_t mu0 = PTHREAD_MUTEX_INITIALIZER;
  static const pthread_cond_t cv0 = PTHREAD_COND_INITIALIZER;
  /* a worker may have held these: the child has none, and new locks */
  pool.submit = mu0;
  pool.sleep_mu = mu0;
  pool.wake = cv0;
  pool.fork_locked = false;
  atomic_store(&pool.sleepers, 0);
  atomic_store(&pool.active, 0);
  pool.started = 0;
  /* every chunk of a loop the parent had in flight is not this process's */
  for (int h = 0; h < MAX_THREADS; h++) atomic_store(&pool.home[h].word, 0);
  pool.serial_until = pool.backoff = pool.last_stall = 0;
  atomic_store(&pool.lost, atomic_load(&pool.threads) > 1);
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

/* Without the handlers (pthread_atfork out of memory) a forked child runs
 * its loops on the calling thread alone, as before them. */
static void register_fork_handlers(void) {
  (void)pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* Starts workers until there are n - 1 (or a thread cannot be started) and
 * lets min(n, workers + 1) threads take part. Called with submit held. */
static ad_status start_workers(int n) {
  ad_status st = AD_OK;
  if (pool.started < n - 1) pthread_once(&fork_once, register_fork_handlers);
  while (pool.started < n - 1) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, worker, (void *)(intptr_t)pool.started);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
      st = AD_ERR_OOM;
      break;
    }
    pool.started++;
  }
  int threads = pool.started + 1 < n ? pool.started + 1 : n;
  atomic_store(&pool.active, threads - 1);
  atomic_store(&pool.threads, threads);
  atomic_store(&pool.lost, false);
  return st;
}

ad_status ad_pool_set_threads(int n) {
  if (n < 1) return AD_ERR_ARG;
  if (in_task) return AD_ERR_STATE; /* the pool is busy with the caller's own loop */
  if (n > MAX_THREADS) n = MAX_THREADS;
  pthread_mutex_lock(&pool.submit);
  ad_status st = start_workers(n);
  pthread_mutex_unlock(&pool.submit);
  return st;
}

void ad_thread_stats_get(ad_thread_stats *out, bool reset) {
  int64_t loops = reset ? atomic_exchange(&pool.st.loops, 0) : atomic_load(&pool.st.loops);
  int64_t chunks = reset ? atomic_exchange(&pool.st.chunks, 0) : atomic_load(&pool.st.chunks);
  int64_t wk = reset ? atomic_exchange(&pool.st.worker_ns, 0) : atomic_load(&pool.st.worker_ns);
  int64_t cl = reset ? atomic_exchange(&pool.st.caller_ns, 0) : atomic_load(&pool.st.caller_ns);
  int64_t wt = reset ? atomic_exchange(&pool.st.wait_ns, 0) : atomic_load(&pool.st.wait_ns);
  if (out)
    *out =
        (ad_thread_stats){loops, chunks, (double)wk * 1e-9, (double)cl * 1e-9, (double)wt * 1e-9};
}

int ad_num_threads(void) { return atomic_load_explicit(&pool.threads, memory_order_relaxed); }

void ad_parallel_for(int64_t n, int64_t grain, ad_range_fn fn, void *ud) {
  if (n <= 0 || !fn) return;
  if (grain < 1) grain = 1;
  if (ad_num_threads() <= 1 || n <= grain || in_task || pthread_mutex_trylock(&pool.submit) != 0) {
    fn(ud, 0, n);
    return;
  }
  if (atomic_load_explicit(&pool.lost, memory_order_relaxed))
    (void)start_workers(ad_num_threads()); /* a forked child: its own workers (on failure, fewer) */
  /* read under the lock: ad_set_num_threads may have changed it since the
   * check above, and a count larger than pool.threads would deal chunks to
   * workers that no longer take part */
  int threads = ad_num_threads();
  int64_t t0 = now_ns();
  if (threads <= 1 || t0 < pool.serial_until) { /* one thread, or backing off after a stall */
    pthread_mutex_unlock(&pool.submit);
    fn(ud, 0, n);
    return;
  }
  /* a few chunks per thread, so that threads finishing early take more */
  int64_t chunk = (n + 4 * (int64_t)threads - 1) / (4 * (int64_t)threads);
  if (chunk < grain) chunk = grain;
  if ((n + chunk - 1) / chunk > MAX_CHUNKS) chunk = (n + MAX_CHUNKS - 1) / MAX_CHUNKS;
  int64_t count = (n + chunk - 1) / chunk;
  /* the previous job is complete: nobody can claim, so the fields are ours */
  pool.fn = fn;
  pool.ud = ud;
  pool.n = n;
  pool.chunk = chunk;
  pool.flush = fp_flush_bits();
  atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
  uint64_t gen = (W_GEN(atomic_load_explicit(&pool.job, memory_order_relaxed)) + 1) & 0xFFFFFF;
  /* the last job's homes are all empty; with fewer chunks than threads,
   * the last homes get none (bounds rounded up) */
  for (int h = 0; h < threads; h++)
    atomic_store_explicit(
        &pool.home[h].word,
        W_MAKE(gen, (count * h + threads - 1) / threads, (count * (h + 1) + threads - 1) / threads),
        memory_order_release);
  atomic_store(&pool.job, W_MAKE(gen, 0, 0));
  if (atomic_load(&pool.sleepers) > 0) {
    pthread_mutex_lock(&pool.sleep_mu);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.sleep_mu);
  }
  run_chunks(0, threads);
  /* wait for the chunks other threads claimed */
  int64_t t1 = now_ns();
  for (unsigned spins = 0; atomic_load_explicit(&pool.done, memory_order_acquire) < count;
       spins++) {
    if (spins < 4096)
      cpu_relax();
    else
      sched_yield();
  }
  int64_t t2 = now_ns();
  atomic_fetch_add_explicit(&pool.st.loops, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&pool.st.caller_ns, t1 - t0, memory_order_relaxed);
  atomic_fetch_add_explicit(&pool.st.wait_ns, t2 - t1, memory_order_relaxed);
  if (t2 - t1 > STALL_NS && t2 - t1 > 2 * (t1 - t0)) {
    pool.backoff = pool.backoff < BACKOFF_MIN_NS       ? BACKOFF_MIN_NS
                   : 2 * pool.backoff > BACKOFF_MAX_NS ? BACKOFF_MAX_NS
                                                       : 2 * pool.backoff;
    pool.serial_until = t2 + pool.backoff;
    pool.last_stall = t2;
  } else if (pool.backoff && t2 - pool.last_stall > 4 * pool.backoff) {
    pool.backoff /= 2; /* quiet for a while: trust the workers again */
  }
  pthread_mutex_unlock(&pool.submit);
}
