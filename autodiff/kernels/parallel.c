/* parallel.c: the library's worker threads and ad_parallel_for.
 *
 * One process-wide pool of n - 1 workers (ad_set_num_threads(n)); the
 * calling thread is the n-th. A parallel loop is cut into chunks that
 * threads claim one at a time from a shared counter, the caller included,
 * so a worker that is slow to wake (descheduled on a busy machine) never
 * holds the loop up: the threads that are running take its chunks, and the
 * caller waits only for chunks already claimed. This is the reason for a
 * pool of our own rather than OpenMP, whose loops end in a barrier that
 * waits for every thread of the team, running or not.
 *
 * The claim counter packs the job's generation, the next chunk and the
 * chunk count in one 64-bit atomic: a claim is a compare-and-swap on all
 * three, so a worker that wakes late can never take a chunk of a finished
 * job, and it reads the job's description only after a successful claim,
 * when the caller is still waiting for that chunk (the description cannot
 * change under it).
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
 * With OpenBLAS, ad_set_num_threads sets it to one thread: the library
 * splits large products over its own threads instead, so BLAS threads
 * never spin beside these. */
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

/* claim word: generation (24 bits) | next chunk (20) | chunk count (20) */
#define W_BITS     20
#define W_MASK     ((UINT64_C(1) << W_BITS) - 1)
#define W_NEXT(w)  (((w) >> W_BITS) & W_MASK)
#define W_COUNT(w) ((w)&W_MASK)
#define W_GEN(w)   ((w) >> (2 * W_BITS))
#define W_MAKE(g, i, c)                                                                            \
  (((uint64_t)(g) << (2 * W_BITS)) | ((uint64_t)(i) << W_BITS) | (uint64_t)(c))
#define MAX_CHUNKS ((int64_t)W_MASK)

static struct {
  pthread_mutex_t submit; /* one caller at a time */
  pthread_mutex_t sleep_mu;
  pthread_cond_t wake;
  _Atomic uint64_t word;
  _Atomic int64_t done; /* chunks finished of the current job */
  _Atomic int sleepers;
  _Atomic int active;  /* workers allowed to claim: threads - 1 */
  int started;         /* workers created */
  _Atomic int threads; /* ad_num_threads() */
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

/* Claims and runs chunks of the current job until none is left. A worker
 * adds each chunk's time to the statistics before it counts the chunk
 * done, so that they are complete when the caller returns. */
static void run_chunks(bool worker) {
  uint64_t w = atomic_load_explicit(&pool.word, memory_order_acquire);
  for (;;) {
    if (W_NEXT(w) >= W_COUNT(w)) return;
    if (!atomic_compare_exchange_weak_explicit(&pool.word, &w, w + (UINT64_C(1) << W_BITS),
                                               memory_order_acq_rel, memory_order_acquire))
      continue; /* w was reloaded */
    int64_t i = (int64_t)W_NEXT(w);
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
    w = atomic_load_explicit(&pool.word, memory_order_acquire);
  }
}

static bool work_available(uint64_t w) { return W_NEXT(w) < W_COUNT(w); }

static void *worker(void *arg) {
  int index = (int)(intptr_t)arg;
  for (;;) {
    /* poll for a while, then sleep until a job is published */
    int64_t t0 = now_ns();
    for (unsigned spins = 0;; spins++) {
      uint64_t w = atomic_load_explicit(&pool.word, memory_order_acquire);
      if (work_available(w) && index < atomic_load_explicit(&pool.active, memory_order_relaxed))
        break;
      if ((spins & 63) == 63)
        sched_yield(); /* a thread of ours on this core (the caller) runs instead */
      else
        cpu_relax();
      if ((spins & 255) == 255 && now_ns() - t0 > IDLE_SPIN_NS) {
        pthread_mutex_lock(&pool.sleep_mu);
        atomic_fetch_add(&pool.sleepers, 1);
        while (!work_available(atomic_load(&pool.word)) || index >= atomic_load(&pool.active))
          pthread_cond_wait(&pool.wake, &pool.sleep_mu);
        atomic_fetch_sub(&pool.sleepers, 1);
        pthread_mutex_unlock(&pool.sleep_mu);
        break;
      }
    }
    run_chunks(true);
  }
  return NULL;
}

ad_status ad_set_num_threads(int n) {
  if (n < 1) return AD_ERR_ARG;
  if (in_task) return AD_ERR_STATE; /* the pool is busy with the caller's own loop */
  if (n > MAX_THREADS) n = MAX_THREADS;
  ad_blas_single_thread(); /* the engine splits products over its own threads */
  pthread_mutex_lock(&pool.submit);
  ad_status st = AD_OK;
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
  int threads = ad_num_threads();
  if (threads <= 1 || n <= grain || in_task || pthread_mutex_trylock(&pool.submit) != 0) {
    fn(ud, 0, n);
    return;
  }
  int64_t t0 = now_ns();
  if (t0 < pool.serial_until) { /* backing off after a stall */
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
  uint64_t old = atomic_load_explicit(&pool.word, memory_order_relaxed);
  atomic_store(&pool.word, W_MAKE((W_GEN(old) + 1) & 0xFFFFFF, 0, count));
  if (atomic_load(&pool.sleepers) > 0) {
    pthread_mutex_lock(&pool.sleep_mu);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.sleep_mu);
  }
  run_chunks(false);
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
