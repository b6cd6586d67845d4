/* core.c: errors, allocator, arena, RNG and tensors: the bottom layer,
 * which calls nothing else of the library. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* MADV_HUGEPAGE of <sys/mman.h> */
#endif
#include "ad_internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

/* uthash (the tensor names) allocates through the context's allocator and
 * reports failure through the entry, as in tape.c */
#define uthash_malloc(sz)          ad_malloc(ctx, sz)
#define uthash_free(ptr, sz)       ad_free(ctx, ptr, sz)
#define HASH_NONFATAL_OOM          1
#define uthash_nonfatal_oom(entry) ((entry)->oom = true)
#include <uthash.h>

static void names_clear(ad_ctx *ctx, bool all);
static void deferred_free(ad_ctx *ctx);

/* ------------------------------------------------------------- aborts */

_Noreturn void ad_internal_abort(const char *file, int line, const char *cond, const char *hint) {
  fprintf(stderr, "%s:%d: internal error: %s (%s)\n", file, line, cond, hint);
  abort();
}

/* ---------------------------------------------------------- allocator */

/* Default allocator: 64-byte aligned blocks for AVX-512 loads. A block of
 * AD_HUGE_PAGE bytes or more is aligned to AD_HUGE_PAGE and, on Linux, its
 * whole 2 MiB pages are advised for transparent huge pages (MADV_HUGEPAGE:
 * taken where the system's THP mode is "madvise" or "always", ignored
 * under "never"; the advice only, so its failure changes nothing). A
 * training step's arena chunks, its gradients and the optimizer's state are
 * such blocks, and the first step is what touches them: one page fault per
 * 4 KiB page there becomes one per 2 MiB (docs/performance.md, "Huge
 * pages"). The block's partial last page is not advised. What it costs: a
 * write anywhere in an advised 2 MiB page makes all of it resident, so a
 * large block written only in places takes more memory than before. The
 * advice is taken back when the block is freed (by its size, osize), so
 * that the C library's reuse of the memory for other blocks is not
 * advised. */
#define AD_HUGE_PAGE ((size_t)2 << 20)

/* The part of a block of n bytes at p (AD_HUGE_PAGE-aligned) that is
 * advised: its whole 2 MiB pages. */
static void advise_huge(void *p, size_t n, bool on) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p && n >= AD_HUGE_PAGE)
    (void)madvise(p, n & ~(AD_HUGE_PAGE - 1), on ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
#else
  (void)p, (void)n, (void)on;
#endif
}

/* A block of osize bytes is large when its 64-byte rounding is; such a
 * block is AD_HUGE_PAGE-aligned, which is checked before the advice is
 * taken back (a caller's wrong osize then changes nothing). */
static void free_block(void *ptr, size_t osize) {
  if (osize >= AD_HUGE_PAGE - 63 && osize <= SIZE_MAX - 63 && (uintptr_t)ptr % AD_HUGE_PAGE == 0)
    advise_huge(ptr, (osize + 63) & ~(size_t)63, false);
  free(ptr);
}

void *ad_default_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    free_block(ptr, osize);
    return NULL;
  }
  if (nsize > SIZE_MAX - 63) return NULL; /* the rounding would wrap */
  size_t rounded = (nsize + 63) & ~(size_t)63;
  void *p = NULL;
  if (rounded < AD_HUGE_PAGE)
    p = aligned_alloc(64, rounded);
  else if (posix_memalign(&p, AD_HUGE_PAGE, rounded) == 0)
    advise_huge(p, rounded, true);
  else
    p = NULL;
  if (p && ptr) {
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    free_block(ptr, osize);
  }
  return p;
}

void *ad_malloc(ad_ctx *ctx, size_t size) {
  if (!ctx) return NULL;
  void *p = ctx->alloc(ctx->alloc_ud, NULL, 0, size ? size : 1);
  if (!p) ad_set_error(ctx, AD_ERR_OOM, "out of memory allocating %zu bytes", size);
  return p;
}

void ad_get_allocator(const ad_ctx *ctx, ad_alloc_fn *fn, void **ud) {
  if (fn) *fn = ctx ? ctx->alloc : NULL;
  if (ud) *ud = ctx ? ctx->alloc_ud : NULL;
}

void ad_free(ad_ctx *ctx, void *ptr, size_t size) {
  if (ctx && ptr) ctx->alloc(ctx->alloc_ud, ptr, size ? size : 1, 0);
}

/* -------------------------------------------------------------- errors */

static const char *const status_names[AD_STATUS_COUNT] = {
    "ok",           "null pointer",   "shape mismatch", "dtype mismatch",
    "bad argument", "out of memory",  "invalid state",  "NaN or Inf",
    "I/O error",    "malformed file", "not found",
};

const char *ad_status_str(ad_status s) {
  if (!ad_status_known(s)) return "unknown status";
  return status_names[s];
}

/* format(printf, 3, 0): fmt is checked at the callers, which pass ap on */
__attribute__((format(printf, 3, 0))) static void record_error(ad_ctx *ctx, ad_status status,
                                                               const char *fmt, va_list ap) {
  ctx->status = status;
  ctx->nerrors++;
  vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
}

ad_status ad_set_error(ad_ctx *ctx, ad_status status, const char *fmt, ...) {
  if (status == AD_OK) return status;
  /* a value outside the enum (a user's op or layer returning its own
   * codes) would reach callers that no switch and no ad_status_str names */
  bool known = ad_status_known(status);
  if (!ctx) return known ? status : AD_ERR_ARG;
  va_list ap;
  va_start(ap, fmt);
  record_error(ctx, known ? status : AD_ERR_ARG, fmt, ap);
  va_end(ap);
  if (!known) {
    size_t len = strlen(ctx->err);
    snprintf(ctx->err + len, sizeof ctx->err - len,
             " (status %d, which is not an ad_status: recorded as AD_ERR_ARG)", (int)status);
  }
  return known ? status : AD_ERR_ARG;
}

ad_status ad_set_null_error(ad_ctx *ctx, const char *fmt, ...) {
  if (!ctx || ctx->status != AD_OK) return AD_ERR_NULL; /* the NULL is that error's consequence */
  va_list ap;
  va_start(ap, fmt);
  record_error(ctx, AD_ERR_NULL, fmt, ap);
  va_end(ap);
  return AD_ERR_NULL;
}

const char *ad_last_error(const ad_ctx *ctx) { return ctx ? ctx->err : "no context"; }
ad_status ad_last_status(const ad_ctx *ctx) { return ctx ? ctx->status : AD_ERR_NULL; }
void ad_clear_error(ad_ctx *ctx) {
  if (!ctx) return;
  ctx->status = AD_OK;
  ctx->err[0] = 0;
}

char *ad_shape_str(const ad_tensor *t, char *buf, size_t n) {
  if (!buf || n == 0) return buf;
  if (!t) {
    snprintf(buf, n, "(null)");
    return buf;
  }
  size_t off = 0;
  off += (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < t->ndim && off < n; i++)
    off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? "," : "", (long long)t->shape[i]);
  if (off < n) snprintf(buf + off, n - off, "]");
  return buf;
}

/* --------------------------------------------------------------- arena
 * A list of chunks filled in order; each new chunk is at least as large as
 * all before it together, so a step of B bytes needs O(log B) chunks. Reset
 * rewinds to the first chunk and keeps them all: a training loop repeats the
 * same allocation sequence, so after its first step it reuses the same
 * (already faulted-in) memory and never calls the allocator again. */

#define AD_ARENA_MIN_CHUNK ((size_t)1 << 20)

static size_t align_up(size_t n, size_t a) { return (n + a - 1) & ~(a - 1); }

static ad_arena_chunk *chunk_new(ad_ctx *ctx, size_t cap) {
  size_t hdr = align_up(sizeof(ad_arena_chunk), AD_ALIGN);
  ad_arena_chunk *c = ctx->alloc(ctx->alloc_ud, NULL, 0, hdr + cap);
  if (!c) return NULL;
  c->next = NULL;
  c->cap = cap;
  c->used = 0;
  ctx->arena_cap += cap;
  return c;
}

static char *chunk_base(ad_arena_chunk *c) {
  return (char *)c + align_up(sizeof(ad_arena_chunk), AD_ALIGN);
}

/* Makes c the chunk being filled, empty. */
static void arena_enter(ad_ctx *ctx, ad_arena_chunk *c) {
  ctx->cur = c;
  c->used = 0;
  ctx->bump = chunk_base(c);
  ctx->bump_end = ctx->bump + c->cap;
}

/* Closes the chunk being filled: its use counts toward arena_used. */
static void arena_leave(ad_ctx *ctx) {
  ad_arena_chunk *c = ctx->cur;
  c->used = (size_t)(ctx->bump - chunk_base(c));
  ctx->arena_used_before_cur += c->used;
}

void *ad_arena_alloc_slow(ad_ctx *ctx, size_t bytes) {
  bytes = align_up(bytes ? bytes : 1, AD_GRAIN);
  if ((size_t)(ctx->bump_end - ctx->bump) >= bytes) { /* fits after all */
    void *p = ctx->bump;
    ctx->bump += bytes;
    return p;
  }
  /* move on to the next kept chunk if it fits, else append a new one */
  ad_arena_chunk *c = ctx->cur;
  while (c && c->next) {
    arena_leave(ctx);
    c = c->next;
    arena_enter(ctx, c);
    if (bytes <= c->cap) {
      void *p = ctx->bump;
      ctx->bump += bytes;
      return p;
    }
  }
  size_t cap = ctx->arena_cap > AD_ARENA_MIN_CHUNK ? ctx->arena_cap : AD_ARENA_MIN_CHUNK;
  if (cap < bytes) cap = bytes;
  if (ctx->arena_limit) { /* a smaller chunk up to the limit, or an error */
    size_t room = ctx->arena_limit > ctx->arena_cap ? ctx->arena_limit - ctx->arena_cap : 0;
    if (bytes > room) {
      ad_set_error(ctx, AD_ERR_OOM,
                   "arena: %zu more bytes would pass the limit of %zu set by "
                   "ad_set_arena_limit (%zu in use since the last ad_tape_reset: is the tape "
                   "reset after each step?)",
                   bytes, ctx->arena_limit, ad_arena_used(ctx));
      return NULL;
    }
    if (cap > room) cap = room;
  }
  ad_arena_chunk *n = chunk_new(ctx, cap);
  if (!n) {
    ad_set_error(ctx, AD_ERR_OOM, "out of memory: arena needs %zu more bytes", bytes);
    return NULL;
  }
  if (c) {
    arena_leave(ctx);
    c->next = n;
  } else {
    ctx->chunks = n;
  }
  arena_enter(ctx, n);
  ctx->bump += bytes;
  return chunk_base(n);
}

void *ad_arena_try(ad_ctx *ctx, size_t bytes) {
  if (bytes > SIZE_MAX / 2) return NULL; /* no arena holds it; rounding up must not wrap */
  if (bytes && (size_t)(ctx->bump_end - ctx->bump) >= align_up(bytes, AD_GRAIN))
    return ad_arena_alloc(ctx, bytes);
  ad_status st = ctx->status;
  uint32_t nerr = ctx->nerrors;
  char err[sizeof ctx->err];
  memcpy(err, ctx->err, sizeof err);
  ad_arena_mark m = ad_arena_mark_get(ctx);
  void *p = ad_arena_alloc(ctx, bytes);
  if (!p) {
    ad_arena_rewind(ctx, &m); /* a failed walk must not leave the chunks it skipped */
    ctx->status = st;
    ctx->nerrors = nerr;
    memcpy(ctx->err, err, sizeof err);
  }
  return p;
}

size_t ad_arena_used(const ad_ctx *ctx) {
  if (!ctx || !ctx->cur) return 0;
  return ctx->arena_used_before_cur + (size_t)(ctx->bump - chunk_base(ctx->cur));
}

size_t ad_arena_capacity(const ad_ctx *ctx) { return ctx ? ctx->arena_cap : 0; }

ad_status ad_set_arena_limit(ad_ctx *ctx, size_t bytes) {
  if (!ctx) return AD_ERR_NULL;
  ctx->arena_limit = bytes;
  return AD_OK;
}

bool ad_arena_holds(const ad_ctx *ctx, const void *p, size_t bytes) {
  uintptr_t a = (uintptr_t)p;
  for (ad_arena_chunk *c = ctx->chunks; c; c = c->next) {
    uintptr_t b = (uintptr_t)chunk_base(c);
    if (a >= b && a - b <= c->cap && bytes <= c->cap - (a - b)) return true;
  }
  return false;
}

void ad_arena_free_all(ad_ctx *ctx) {
  size_t hdr = align_up(sizeof(ad_arena_chunk), AD_ALIGN);
  for (ad_arena_chunk *c = ctx->chunks, *n; c; c = n) {
    n = c->next;
    ctx->alloc(ctx->alloc_ud, c, hdr + c->cap, 0);
  }
  ctx->chunks = ctx->cur = NULL;
  ctx->bump = ctx->bump_end = NULL;
  ctx->arena_cap = ctx->arena_used_before_cur = 0;
}

void ad_tape_reset(ad_ctx *ctx) {
  if (!ctx) return;
  if (ctx->sweeps) { /* a backward hook: the running pass reads the tape and the arena */
    ad_set_error(ctx, AD_ERR_STATE,
                 "tape_reset: called during a backward pass (from a backward hook or an op's "
                 "backward); the tape "
                 "was kept");
    return;
  }
  if (ctx->in_user_fns) { /* the op being applied holds its inputs and result in the arena */
    ad_set_error(ctx, AD_ERR_STATE,
                 "tape_reset: called from a registered op's shape rule or forward; the tape was "
                 "kept");
    return;
  }
  if (ctx->temp_names) names_clear(ctx, false);
  if (ctx->deferred) deferred_free(ctx);
  if (ctx->chunks) arena_enter(ctx, ctx->chunks);
  ctx->arena_used_before_cur = 0;
  ctx->tape_len = 0;
  ctx->nwrites = 0;
  ctx->epoch++;
}

size_t ad_tape_size(const ad_ctx *ctx) { return ctx ? ctx->tape_len : 0; }

bool ad_set_grad_enabled(ad_ctx *ctx, bool on) {
  if (!ctx) return false;
  bool old = ctx->grad_enabled;
  ctx->grad_enabled = on;
  return old;
}

bool ad_grad_enabled(const ad_ctx *ctx) { return ctx && ctx->grad_enabled; }

/* ------------------------------------------------------------------ RNG
 * xoshiro256** (Blackman & Vigna), seeded through splitmix64. */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

ad_status ad_rng_seed(ad_rng *rng, uint64_t seed) {
  if (!rng) return AD_ERR_NULL;
  for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
  return AD_OK;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* One xoshiro256** step; the public functions check rng, then call this. */
static uint64_t rng_step(ad_rng *rng) {
  uint64_t *s = rng->s;
  uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return r;
}

static double rng_step_uniform(ad_rng *rng) { return (double)(rng_step(rng) >> 11) * 0x1.0p-53; }

uint64_t ad_rng_next(ad_rng *rng) { return rng ? rng_step(rng) : 0; }

double ad_rng_uniform(ad_rng *rng) { return rng ? rng_step_uniform(rng) : NAN; }

double ad_rng_normal(ad_rng *rng) {
  if (!rng) return NAN;
  double u1 = rng_step_uniform(rng), u2 = rng_step_uniform(rng);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t ad_rng_below(ad_rng *rng, uint64_t n) {
  if (!rng || n == 0) return 0; /* not n: callers index with the result */
  uint64_t lim = UINT64_MAX - UINT64_MAX % n, r;
  do r = rng_step(rng);
  while (r >= lim);
  return r % n;
}

/* -------------------------------------------------------------- tensors */

size_t ad_dtype_size(ad_dtype dt) { return ad_dsize(dt); }
const char *ad_dtype_name(ad_dtype dt) {
  return dt == AD_F32 ? "f32" : dt == AD_F64 ? "f64" : dt == AD_I32 ? "i32" : "?";
}

int64_t ad_shape_size(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

int ad_shape_size_checked(int ndim, const int64_t *shape, int64_t *size) {
  int64_t n = 1;
  bool empty = false;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return i;
    if (shape[i] == 0)
      empty = true;
    else if (n > AD_MAX_ELEMS / shape[i])
      return i; /* also for an empty result: [2^41, 0] */
    else
      n *= shape[i];
  }
  *size = empty ? 0 : n;
  return -1;
}

ad_status ad_shape_size_error(ad_ctx *ctx, ad_status st, const char *who, int ndim,
                              const int64_t *shape, int bad) {
  ad_tensor d = {.ndim = ndim};
  memcpy(d.shape, shape, sizeof(int64_t) * (size_t)ndim);
  char a[200];
  ad_shape_str(&d, a, sizeof a);
  if (shape[bad] < 0)
    return ad_set_error(ctx, st, "%s: dimension %d of %s is negative", who, bad, a);
  long double n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i] ? (long double)shape[i] : 1;
  return ad_set_error(ctx, st,
                      "%s: shape %s is too large: its non-zero dimensions multiply to %.4Lg, "
                      "more than the limit of 2^40 elements",
                      who, a, n);
}

/* Validates a constructor's arguments; records AD_ERR_ARG. */
static bool check_new(ad_ctx *ctx, const char *fn, ad_dtype dt, int ndim, const int64_t *shape) {
  if (!ctx) return false;
  if (dt != AD_F32 && dt != AD_F64 && dt != AD_I32) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: unknown dtype %d", fn, (int)dt);
    return false;
  }
  if (ndim < 0 || ndim > AD_MAX_DIMS) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: ndim %d out of range 0..%d", fn, ndim, AD_MAX_DIMS);
    return false;
  }
  if (ndim > 0 && !shape) {
    ad_set_error(ctx, AD_ERR_NULL, "%s: shape is NULL for ndim %d", fn, ndim);
    return false;
  }
  int64_t n;
  int bad = ad_shape_size_checked(ndim, shape, &n);
  if (bad >= 0) {
    ad_shape_size_error(ctx, AD_ERR_ARG, fn, ndim, shape, bad);
    return false;
  }
  return true;
}

/* --------------------------------------------------------------- names */

typedef struct ad_name_ent {
  const ad_node *node; /* key */
  char *name;          /* owned copy */
  bool temp, oom;
  UT_hash_handle hh;
} ad_name_ent;

static void name_drop(ad_ctx *ctx, ad_name_ent *e) {
  HASH_DEL(ctx->names, e);
  if (e->temp) ctx->temp_names--;
  ad_free(ctx, e->name, strlen(e->name) + 1);
  ad_free(ctx, e, sizeof *e);
}

/* Removes n's name, if it has one. */
static void name_remove(ad_ctx *ctx, ad_node *n) {
  if (!(n->flags & AD_NF_NAMED)) return;
  ad_name_ent *e;
  HASH_FIND_PTR(ctx->names, &n, e);
  if (e) name_drop(ctx, e);
  n->flags &= (uint8_t)~AD_NF_NAMED;
}

/* Drops the names of temporaries (their nodes are gone) or of all. */
static void names_clear(ad_ctx *ctx, bool all) {
  ad_name_ent *e, *tmp;
  HASH_ITER(hh, ctx->names, e, tmp) {
    if (all || e->temp) name_drop(ctx, e);
  }
}

ad_status ad_tensor_set_name(ad_tensor *t, const char *name) {
  if (!t) return AD_ERR_NULL;
  ad_node *n = ad_node_of(t);
  if (n->magic == AD_NODE_DEAD)
    return ad_set_error(n->ctx, AD_ERR_STATE, "tensor_set_name: the tensor was freed");
  if (n->magic != AD_NODE_MAGIC) return AD_ERR_ARG;
  ad_ctx *ctx = n->ctx;
  if (!name || !name[0]) {
    name_remove(ctx, n);
    return AD_OK;
  }
  size_t len = strlen(name) + 1;
  ad_name_ent *e = NULL;
  if (n->flags & AD_NF_NAMED) HASH_FIND_PTR(ctx->names, &n, e);
  if (e) { /* a new name in its entry: refused, the old one stays */
    char *copy = ad_malloc(ctx, len);
    if (!copy)
      return ad_set_error(ctx, AD_ERR_OOM, "tensor_set_name: out of memory naming '%.64s'", name);
    memcpy(copy, name, len);
    ad_free(ctx, e->name, strlen(e->name) + 1);
    e->name = copy;
    return AD_OK;
  }
  e = ad_malloc(ctx, sizeof *e);
  char *copy = e ? ad_malloc(ctx, len) : NULL;
  if (!copy) {
    ad_free(ctx, e, sizeof *e);
    return ad_set_error(ctx, AD_ERR_OOM, "tensor_set_name: out of memory naming '%.64s'", name);
  }
  memcpy(copy, name, len);
  *e = (ad_name_ent){.node = n, .name = copy, .temp = !(n->flags & AD_NF_PERSISTENT)};
  HASH_ADD_PTR(ctx->names, node, e);
  if (e->oom) {
    ad_free(ctx, copy, len);
    ad_free(ctx, e, sizeof *e);
    return ad_set_error(ctx, AD_ERR_OOM, "tensor_set_name: out of memory naming '%.64s'", name);
  }
  if (e->temp) ctx->temp_names++;
  n->flags |= AD_NF_NAMED;
  return AD_OK;
}

const char *ad_tensor_name(const ad_tensor *t) {
  if (!t) return NULL;
  const ad_node *n = ad_node_of(t);
  if (n->magic != AD_NODE_MAGIC || !(n->flags & AD_NF_NAMED)) return NULL;
  ad_name_ent *e;
  HASH_FIND_PTR(n->ctx->names, &n, e);
  return e ? e->name : NULL;
}

char *ad_tensor_describe(const ad_tensor *t, char *buf, size_t n) {
  char sh[96];
  const char *name = ad_tensor_name(t);
  if (name)
    snprintf(buf, n, "'%s' %s", name, ad_shape_str(t, sh, sizeof sh));
  else
    snprintf(buf, n, "%s", ad_shape_str(t, sh, sizeof sh));
  return buf;
}

/* ---------------------------------------------------- persistent nodes
 * The headers of persistent tensors come from slabs the context owns, never
 * from the allocator one by one. ad_tensor_free marks the header dead and
 * queues it; so a freed tensor passed back in later is recognised by
 * reading memory the context still owns (ASan stays quiet). A tensor used
 * by an op of the current tape (ad_op_apply stamps its epoch) may still be
 * read by that tape or by a view of it: its data is kept until
 * ad_tape_reset and its header is not reused before then, so a backward
 * finds it dead and says so instead of reading freed memory or reaching a
 * new tensor at the same address. Other dead headers are reused once
 * AD_QUARANTINE newer ones wait behind them: while a header waits, its
 * stale pointers are caught; once it is reused they name the new tensor,
 * which C cannot tell apart. */

#define AD_SLAB_NODES 32
#define AD_QUARANTINE 64

/* A persistent node: the node and its serial (ad_tensor_serial), which
 * temporaries, made by the thousand per step, do without. */
typedef struct ad_pnode {
  ad_node n;
  uint64_t serial;
} ad_pnode;

typedef struct ad_node_slab {
  struct ad_node_slab *next;
  ad_pnode nodes[AD_SLAB_NODES];
} ad_node_slab;

/* A header for a new persistent tensor, or NULL (AD_ERR_OOM recorded). */
static ad_node *node_alloc(ad_ctx *ctx) {
  ad_node *n = ctx->dead_head;
  if (n && ctx->dead_len > AD_QUARANTINE && n->flags != AD_DEAD_KEEPS_DATA) {
    ctx->dead_head = n->src.in[0]; /* a dead node's src.in[0] links the queue */
    if (!ctx->dead_head) ctx->dead_tail = NULL;
    ctx->dead_len--;
  } else {
    if (!ctx->slabs || ctx->slab_used == AD_SLAB_NODES) {
      ad_node_slab *sl = ad_malloc(ctx, sizeof *sl);
      if (!sl) return NULL;
      sl->next = ctx->slabs;
      ctx->slabs = sl;
      ctx->slab_used = 0;
    }
    n = &ctx->slabs->nodes[ctx->slab_used++].n;
  }
  ((ad_pnode *)(void *)n)->serial = ++ctx->serials; /* a reused header too: a new tensor */
  ctx->live_nodes++;
  return n;
}

uint64_t ad_tensor_serial(const ad_tensor *t) {
  if (!t) return 0;
  const ad_node *n = ad_node_of(t);
  if (n->magic != AD_NODE_MAGIC || !(n->flags & AD_NF_PERSISTENT)) return 0;
  return ((const ad_pnode *)(const void *)n)->serial;
}

/* Frees a dead node's data. */
static void dead_data_free(ad_ctx *ctx, ad_node *n) {
  if (!(n->op & AD_LEAF_EXTERNAL))
    ad_free(ctx, n->t.data, (size_t)n->t.size * ad_dsize(n->t.dtype));
  n->t.data = NULL;
  n->t.size = 0; /* accessors that miss the magic find nothing to read */
  n->flags = 0;
}

/* Marks n dead and queues it for reuse, and frees its data unless the
 * current tape used it (then ad_tape_reset does). ctx, shape and dtype stay
 * for messages about it. */
static void node_release(ad_ctx *ctx, ad_node *n) {
  name_remove(ctx, n);
  bool keep = n->epoch == ctx->epoch; /* stamped by ad_op_apply when used */
  n->magic = AD_NODE_DEAD;
  if (keep) {
    n->flags = AD_DEAD_KEEPS_DATA;
    n->src.in[1] = ctx->deferred;
    ctx->deferred = n;
  } else {
    dead_data_free(ctx, n);
  }
  n->t.grad = NULL;
  n->src.in[0] = NULL;
  if (ctx->dead_tail)
    ctx->dead_tail->src.in[0] = n;
  else
    ctx->dead_head = n;
  ctx->dead_tail = n;
  ctx->dead_len++;
  ctx->live_nodes--;
}

/* At ad_tape_reset: the kept data of tensors freed during the tape. */
static void deferred_free(ad_ctx *ctx) {
  for (ad_node *n = ctx->deferred, *next; n; n = next) {
    next = n->src.in[1];
    dead_data_free(ctx, n);
  }
  ctx->deferred = NULL;
}

void ad_nodes_free_all(ad_ctx *ctx) {
  names_clear(ctx, true);
  for (ad_node_slab *sl = ctx->slabs, *next; sl; sl = next) {
    next = sl->next;
    int used = sl == ctx->slabs ? ctx->slab_used : AD_SLAB_NODES;
    for (int i = 0; i < used; i++) {
      ad_node *n = &sl->nodes[i].n;
      bool live =
          n->magic == AD_NODE_MAGIC || (n->magic == AD_NODE_DEAD && n->flags == AD_DEAD_KEEPS_DATA);
      if (live && !(n->op & AD_LEAF_EXTERNAL))
        ad_free(ctx, n->t.data, (size_t)n->t.size * ad_dsize(n->t.dtype));
      n->magic = 0;
    }
    ad_free(ctx, sl, sizeof *sl);
  }
  ctx->slabs = NULL;
  ctx->deferred = NULL;
  ctx->dead_head = ctx->dead_tail = NULL;
  ctx->dead_len = ctx->live_nodes = 0;
}

size_t ad_ctx_live_tensors(const ad_ctx *ctx) { return ctx ? ctx->live_nodes : 0; }

size_t ad_ctx_header_blocks(const ad_ctx *ctx) {
  size_t n = 0;
  for (const ad_node_slab *sl = ctx ? ctx->slabs : NULL; sl; sl = sl->next) n++;
  return n;
}

/* A persistent tensor with uninitialized data. */
static ad_tensor *persistent_new(ad_ctx *ctx, const char *fn, ad_dtype dt, int ndim,
                                 const int64_t *shape) {
  if (!check_new(ctx, fn, dt, ndim, shape)) return NULL;
  int64_t size = ad_shape_size(ndim, shape);
  void *data = ad_malloc(ctx, (size_t)size * ad_dsize(dt));
  ad_node *n = data ? node_alloc(ctx) : NULL;
  if (!n) {
    ad_free(ctx, data, (size_t)size * ad_dsize(dt));
    return NULL;
  }
  ad_node_init(n, ctx, dt, ndim, shape, size);
  n->epoch = 0; /* no tape has used it (ad_op_apply stamps the epoch of each use) */
  n->flags = AD_NF_LEAF | AD_NF_PERSISTENT;
  n->src.spare_grad = NULL;
  n->t.data = data;
  return &n->t;
}

ad_tensor *ad_tensor_new_uninit(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape) {
  return persistent_new(ctx, "grad", dt, ndim, shape);
}

ad_tensor *ad_tmp_new(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape) {
  int64_t size = ad_shape_size(ndim, shape);
  size_t bytes = (size_t)size * ad_dsize(dt);
  char *p = ad_arena_alloc(ctx, ad_tmp_block(bytes));
  if (!p) return NULL;
  ad_node *n = (ad_node *)p;
  ad_node_init(n, ctx, dt, ndim, shape, size);
  n->tape_idx = ad_fresh_idx(ctx);
  n->t.data = ad_tmp_data(p, bytes);
  return &n->t;
}

ad_tensor *ad_tmp_header(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape) {
  ad_node *n = ad_arena_alloc(ctx, sizeof(ad_node));
  if (!n) return NULL;
  ad_node_init(n, ctx, dt, ndim, shape, ad_shape_size(ndim, shape));
  n->t.data = NULL; /* a view's, often: memory ops may have read, so no ad_fresh_idx */
  return &n->t;
}

/* Whether the data of t (not NULL) may be read or written: a live tensor,
 * and for an op's result one of the current tape (after ad_tape_reset its
 * memory, header included, belongs to later temporaries). */
static bool usable(const ad_tensor *t) {
  const ad_node *n = ad_node_of(t);
  return n->magic == AD_NODE_MAGIC && ((n->flags & AD_NF_PERSISTENT) || n->epoch == n->ctx->epoch);
}

/* Whether t (not NULL) is unusable; if so, records on its context that fn
 * was given a freed tensor or one from a tape that was reset (a header
 * that is no tensor's has no context to record on) and sets *st. */
static bool unusable(const ad_tensor *t, const char *fn, ad_status *st) {
  if (usable(t)) return false;
  const ad_node *n = ad_node_of(t);
  if (n->magic == AD_NODE_DEAD)
    *st = ad_set_error(n->ctx, AD_ERR_STATE, "%s: the tensor was freed", fn);
  else if (n->magic == AD_NODE_MAGIC)
    *st = ad_set_error(n->ctx, AD_ERR_STATE, "%s: the tensor is from a tape that was reset", fn);
  else
    *st = AD_ERR_ARG;
  return true;
}

/* Whether t (not NULL) was freed; if so, records that fn was given it (for
 * functions that only touch t's flags, which a temporary keeps). */
static bool freed(const ad_tensor *t, const char *fn) {
  ad_status st;
  return ad_node_of(t)->magic == AD_NODE_DEAD && unusable(t, fn, &st);
}

/* Whether v converts to int32_t (truncated toward zero, as C and PyTorch
 * do) without undefined behaviour: not NaN, and inside (-2^31-1, 2^31). */
static bool i32_fits(double v) { return v > -2147483649.0 && v < 2147483648.0; }

/* The error of a value an i32 tensor cannot hold. */
static ad_status i32_error(const ad_tensor *t, const char *fn, double v) {
  return ad_set_error(ad_node_of(t)->ctx, AD_ERR_ARG,
                      "%s: %g cannot be stored in an i32 tensor (NaN, or outside the int32 "
                      "range)",
                      fn, v);
}

/* Elements [b, e) of a fill (for ad_parallel_for): a large fill (a
 * backward's zeros or seed of ones) is written on the threads in the
 * elementwise ops' chunks, so the op that reads it next finds each part
 * in its own thread's cache. */
typedef struct fill_job {
  ad_tensor *t;
  double v;
} fill_job;
static void fill_range(void *ud, int64_t b, int64_t e) {
  const fill_job *j = ud;
  ad_tensor *t = j->t;
  if (t->dtype == AD_F32)
    for (int64_t i = b; i < e; i++) ((float *)t->data)[i] = (float)j->v;
  else if (t->dtype == AD_F64)
    for (int64_t i = b; i < e; i++) ((double *)t->data)[i] = j->v;
  else
    for (int64_t i = b; i < e; i++) ((int32_t *)t->data)[i] = (int32_t)j->v;
}

ad_status ad_tensor_fill(ad_tensor *t, double v) {
  ad_status st;
  if (!t) return AD_ERR_NULL;
  if (unusable(t, "tensor_fill", &st)) return st;
  if (t->dtype == AD_I32 && !i32_fits(v)) return i32_error(t, "tensor_fill", v);
  if ((st = ad_note_write(ad_node_of(t), "tensor_fill")) != AD_OK) return st;
  fill_job j = {t, v};
  if (t->size > 32768)
    ad_parallel_for(t->size, 32768, fill_range, &j);
  else
    fill_range(&j, 0, t->size);
  return AD_OK;
}

ad_tensor *ad_tmp_full(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape, double v) {
  ad_tensor *t = ad_tmp_new(ctx, dt, ndim, shape);
  if (!t || ad_tensor_fill(t, v) != AD_OK) return NULL; /* the arena takes it back at the reset */
  ad_node_of(t)->flags |= AD_NF_LEAF;                   /* a constant, not made by an op */
  return t;
}

ad_tensor *ad_scalar(ad_ctx *ctx, ad_dtype dt, double v) {
  if (!check_new(ctx, "scalar", dt, 0, NULL)) return NULL;
  if (dt == AD_I32 && !i32_fits(v)) {
    ad_set_error(ctx, AD_ERR_ARG, "scalar: %g cannot be stored in an i32 tensor", v);
    return NULL;
  }
  return ad_tmp_full(ctx, dt, 0, NULL, v);
}

/* ad_full_like under the name fn: a constant temporary shaped like x. */
static ad_tensor *full_like_named(ad_ctx *ctx, const char *fn, const ad_tensor *x, double v) {
  if (!ctx) return NULL;
  if (!x) {
    ad_set_null_error(ctx, "%s: x is NULL", fn);
    return NULL;
  }
  const ad_node *n = ad_node_of(x);
  if (n->magic == AD_NODE_DEAD)
    ad_set_error(ctx, AD_ERR_STATE, "%s: x was freed", fn);
  else if (n->magic != AD_NODE_MAGIC)
    ad_set_error(ctx, AD_ERR_ARG, "%s: x is not a tensor", fn);
  else if (n->ctx != ctx)
    ad_set_error(ctx, AD_ERR_ARG, "%s: x belongs to another context", fn);
  else if (n->epoch != ctx->epoch && !(n->flags & AD_NF_PERSISTENT))
    ad_set_error(ctx, AD_ERR_STATE, "%s: x is from a tape that was reset", fn);
  else if (x->dtype == AD_I32 && !i32_fits(v))
    ad_set_error(ctx, AD_ERR_ARG, "%s: %g cannot be stored in an i32 tensor", fn, v);
  else
    return ad_tmp_full(ctx, x->dtype, x->ndim, x->shape, v);
  return NULL;
}

ad_tensor *ad_full_like(ad_ctx *ctx, const ad_tensor *x, double value) {
  return full_like_named(ctx, "full_like", x, value);
}

ad_tensor *ad_zeros_like(ad_ctx *ctx, const ad_tensor *x) {
  return full_like_named(ctx, "zeros_like", x, 0.0);
}

/* ad_full under the name fn. */
static ad_tensor *full_named(ad_ctx *ctx, const char *fn, ad_dtype dt, int ndim,
                             const int64_t *shape, double v) {
  if (ctx && dt == AD_I32 && !i32_fits(v)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: %g cannot be stored in an i32 tensor", fn, v);
    return NULL;
  }
  ad_tensor *t = persistent_new(ctx, fn, dt, ndim, shape);
  if (t) ad_tensor_fill(t, v);
  return t;
}

ad_tensor *ad_full(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape, double v) {
  return full_named(ctx, "full", dt, ndim, shape, v);
}

ad_tensor *ad_zeros(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape) {
  return full_named(ctx, "zeros", dt, ndim, shape, 0.0);
}

ad_tensor *ad_ones(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape) {
  return full_named(ctx, "ones", dt, ndim, shape, 1.0);
}

ad_tensor *ad_from_data(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape, const void *src) {
  ad_tensor *t = persistent_new(ctx, "from_data", dt, ndim, shape);
  if (!t) return NULL;
  if (src)
    memcpy(t->data, src, (size_t)t->size * ad_dsize(dt));
  else
    memset(t->data, 0, (size_t)t->size * ad_dsize(dt));
  return t;
}

/* A uniform draw v in [lo, hi) as the float dtype dt stores it: rounding
 * can carry a draw just under hi onto hi (lo + (hi - lo) x rounds up for x
 * near 1; in float32 every x above 1 - 2^-25 of [0, 1) does), which
 * [lo, hi) excludes, as PyTorch's uniform_ does; such a value is moved to
 * the largest one of dt below hi, but not below lo. */
static double below_hi(double v, double lo, double hi, ad_dtype dt) {
  if (dt == AD_F32) {
    float f = (float)v;
    while ((double)f >= hi) {
      float g = nextafterf(f, -INFINITY);
      if ((double)g < lo) break;
      f = g;
    }
    return f;
  }
  if (dt == AD_F64 && v >= hi && lo < hi) return nextafter(hi, -INFINITY);
  return v;
}

/* Fills new tensor t with a + b * x_i, x_i = i (kind 0), uniform in [0, 1)
 * (1, kept below a + b by below_hi) or standard normal (2) from rng; frees
 * it and returns NULL when a value does not fit an i32 tensor. NULL t
 * stays NULL. */
static ad_tensor *fill_values(ad_tensor *t, const char *fn, double a, double b, ad_rng *rng,
                              int kind) {
  for (int64_t i = 0; t && i < t->size; i++) {
    double x = kind == 0 ? (double)i : kind == 1 ? ad_rng_uniform(rng) : ad_rng_normal(rng);
    double v = a + b * x;
    if (kind == 1) v = below_hi(v, a, a + b, t->dtype);
    if (t->dtype == AD_I32 && !i32_fits(v)) {
      i32_error(t, fn, v);
      ad_tensor_free(t);
      return NULL;
    }
    ad_tensor_set(t, i, v);
  }
  return t;
}

ad_tensor *ad_arange(ad_ctx *ctx, ad_dtype dt, double start, double stop, double step) {
  if (!ctx) return NULL;
  if (step == 0 || !isfinite(start) || !isfinite(stop) || !isfinite(step)) {
    ad_set_error(ctx, AD_ERR_ARG, "arange: bad range %g..%g step %g", start, stop, step);
    return NULL;
  }
  double cnt = ceil((stop - start) / step);
  if (!(cnt <= (double)AD_MAX_ELEMS)) { /* also an overflowing (stop - start) / step */
    ad_set_error(ctx, AD_ERR_ARG, "arange: %g..%g step %g has %g elements, more than 2^40", start,
                 stop, step, cnt);
    return NULL;
  }
  int64_t n = cnt > 0 ? (int64_t)cnt : 0;
  ad_tensor *t = persistent_new(ctx, "arange", dt, 1, &n);
  return fill_values(t, "arange", start, step, NULL, 0);
}

/* An i32 ad_rand: torch.randint(lo, hi), lo + a uniform integer below
 * hi - lo (exactly uniform: ad_rng_below), one per element in row-major
 * order; lo == hi gives lo. The bounds were checked by ad_rand. */
static ad_tensor *fill_randint(ad_tensor *t, ad_rng *rng, double lo, double hi) {
  for (int64_t i = 0; t && i < t->size; i++)
    ((int32_t *)t->data)[i] = (int32_t)(lo + (double)ad_rng_below(rng, (uint64_t)(hi - lo)));
  return t;
}

ad_tensor *ad_rand(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int ndim, const int64_t *shape, double lo,
                   double hi) {
  if (ctx && !rng) {
    ad_set_error(ctx, AD_ERR_NULL, "rand: rng is NULL");
    return NULL;
  }
  if (ctx && ad_rng_unseeded(rng)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "rand: rng is not seeded (its state is all zeros, which draws 0 for ever): "
                 "call ad_rng_seed first");
    return NULL;
  }
  if (ctx && !(isfinite(lo) && isfinite(hi) && lo <= hi && isfinite(hi - lo))) {
    ad_set_error(ctx, AD_ERR_ARG, "rand: [%g, %g) is not a finite range with lo <= hi", lo, hi);
    return NULL;
  }
  /* float32 cannot hold a bound beyond its range (PyTorch: "from is out
   * of bounds for float"); the draws near it would round to infinity */
  if (ctx && dt == AD_F32 && !(fabs(lo) <= FLT_MAX && fabs(hi) <= FLT_MAX)) {
    ad_set_error(ctx, AD_ERR_ARG, "rand: [%.9g, %.9g) is outside float32's range (dtype f32)", lo,
                 hi);
    return NULL;
  }
  if (ctx && dt == AD_I32) {
    if (!(lo == floor(lo) && hi == floor(hi) && lo >= -2147483648.0 && hi <= 2147483648.0)) {
      ad_set_error(ctx, AD_ERR_ARG,
                   "rand: an i32 tensor takes integer bounds within the int32 range (hi up to "
                   "2^31), got [%.17g, %.17g)",
                   lo, hi);
      return NULL;
    }
    return fill_randint(persistent_new(ctx, "rand", dt, ndim, shape), rng, lo, hi);
  }
  return fill_values(persistent_new(ctx, "rand", dt, ndim, shape), "rand", lo, hi - lo, rng, 1);
}

ad_tensor *ad_randn(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int ndim, const int64_t *shape,
                    double mean, double std) {
  if (ctx && !rng) {
    ad_set_error(ctx, AD_ERR_NULL, "randn: rng is NULL");
    return NULL;
  }
  if (ctx && ad_rng_unseeded(rng)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "randn: rng is not seeded (its state is all zeros, which draws 0 for ever): "
                 "call ad_rng_seed first");
    return NULL;
  }
  if (ctx && !(isfinite(mean) && isfinite(std) && std >= 0)) {
    ad_set_error(ctx, AD_ERR_ARG, "randn: mean %g and std %g must be finite, std >= 0", mean, std);
    return NULL;
  }
  /* truncated normal draws are no distribution anyone asks for (PyTorch's
   * normal_ refuses integer tensors too) */
  if (ctx && dt == AD_I32) {
    ad_set_error(ctx, AD_ERR_DTYPE, "randn: dtype i32; normal draws need f32 or f64");
    return NULL;
  }
  return fill_values(persistent_new(ctx, "randn", dt, ndim, shape), "randn", mean, std, rng, 2);
}

ad_tensor *ad_tensor_clone(ad_ctx *ctx, const ad_tensor *t) {
  if (!ctx) return NULL;
  if (!t) {
    ad_set_null_error(ctx, "clone: tensor is NULL");
    return NULL;
  }
  ad_status st;
  if (unusable(t, "clone", &st)) {
    if (st == AD_ERR_ARG) ad_set_error(ctx, st, "clone: the tensor is not a tensor");
    return NULL;
  }
  return ad_from_data(ctx, t->dtype, t->ndim, t->shape, t->data);
}

static bool is_node(const ad_tensor *t) { return t && ad_node_of(t)->magic == AD_NODE_MAGIC; }

/* Frees persistent node n, its grad and its kept grad buffer. */
static void persistent_free(ad_node *n) {
  ad_ctx *ctx = n->ctx;
  if (n->t.grad) persistent_free(ad_node_of(n->t.grad));
  if (n->src.spare_grad) persistent_free(ad_node_of(n->src.spare_grad));
  node_release(ctx, n);
}

void ad_tensor_free(ad_tensor *t) {
  if (!t) return;
  ad_node *n = ad_node_of(t);
  if (n->magic == AD_NODE_DEAD) {
    ad_set_error(n->ctx, AD_ERR_STATE, "tensor_free: the tensor was already freed");
    return;
  }
  if (n->magic != AD_NODE_MAGIC || !(n->flags & AD_NF_PERSISTENT)) return;
  if (n->flags & AD_NF_OWNED) {
    ad_set_error(n->ctx, AD_ERR_STATE,
                 "tensor_free: this tensor is another tensor's gradient and is freed with it "
                 "(ad_tensor_zero_grad releases it)");
    return;
  }
  persistent_free(n);
}

ad_status ad_tensor_set_requires_grad(ad_tensor *t, bool on) {
  if (t && freed(t, "set_requires_grad")) return AD_ERR_STATE;
  if (!is_node(t)) return AD_ERR_NULL;
  ad_node *n = ad_node_of(t);
  if (!(n->flags & AD_NF_LEAF))
    return ad_set_error(n->ctx, AD_ERR_STATE,
                        "set_requires_grad: only leaves can be marked; this tensor was made by %s",
                        n->ctx->ops[n->op].name);
  if (on && !(n->flags & AD_NF_PERSISTENT))
    return ad_set_error(n->ctx, AD_ERR_STATE,
                        "set_requires_grad: a temporary constant (ad_scalar) cannot hold a "
                        "gradient; make a persistent tensor with ad_full");
  if (on && !ad_is_float(t->dtype))
    return ad_set_error(n->ctx, AD_ERR_DTYPE, "set_requires_grad: %s tensors have no gradient",
                        ad_dtype_name(t->dtype));
  if (on)
    n->flags |= AD_NF_REQUIRES_GRAD;
  else
    n->flags &= (uint8_t)~AD_NF_REQUIRES_GRAD;
  return AD_OK;
}

bool ad_tensor_requires_grad(const ad_tensor *t) {
  return is_node(t) && (ad_node_of(t)->flags & AD_NF_REQUIRES_GRAD);
}

ad_status ad_tensor_retain_grad(ad_tensor *t) {
  if (t && freed(t, "retain_grad")) return AD_ERR_STATE;
  if (!is_node(t)) return AD_ERR_NULL;
  ad_node_of(t)->flags |= AD_NF_RETAIN;
  return AD_OK;
}

bool ad_tensor_is_temporary(const ad_tensor *t) {
  return is_node(t) && !(ad_node_of(t)->flags & AD_NF_PERSISTENT);
}

/* Keeps g, a gradient buffer persistent leaf n no longer uses as its grad,
 * for n's next pass. When n keeps one already (ad_leaf_grad_take declined
 * it, or ad_leaf_grad_fork replaced the grad), one of the two is kept, the
 * caller's bound buffer if either is, else g, and the other freed: its data
 * stays until ad_tape_reset when the tape used it. */
static void keep_spare(ad_node *n, ad_tensor *g) {
  ad_tensor *spare = n->src.spare_grad;
  if (spare) {
    if ((ad_node_of(spare)->op & AD_LEAF_EXTERNAL) && !(ad_node_of(g)->op & AD_LEAF_EXTERNAL)) {
      spare = g; /* the caller's buffer stays bound */
      g = n->src.spare_grad;
    }
    persistent_free(ad_node_of(spare));
  }
  n->src.spare_grad = g;
}

void ad_tensor_zero_grad(ad_tensor *t) {
  if (t && freed(t, "zero_grad")) return;
  if (!is_node(t) || !t->grad) return;
  ad_node *n = ad_node_of(t);
  if (n->flags & AD_NF_PERSISTENT) keep_spare(n, t->grad); /* for the next pass */
  t->grad = NULL; /* a retained intermediate's grad is arena memory */
}

ad_tensor *ad_leaf_grad_fork(ad_ctx *ctx, ad_node *n) {
  ad_tensor *old = n->t.grad, *g = ad_tensor_new_uninit(ctx, n->t.dtype, n->t.ndim, n->t.shape);
  if (!g) return NULL;
  ad_node_of(g)->flags |= AD_NF_OWNED;
  memcpy(g->data, old->data, (size_t)old->size * ad_dsize(old->dtype));
  n->t.grad = g;
  keep_spare(n, old);
  return g;
}

ad_tensor *ad_leaf_grad_take(ad_ctx *ctx, ad_node *n) {
  ad_tensor *g = n->src.spare_grad;
  /* an op of the current tape used the kept buffer (g = W->grad;
   * zero_grad(W); ... g * W): its backward may still read the values, so
   * they are not overwritten; the buffer stays kept for a later pass */
  if (g && ad_node_of(g)->epoch != ctx->epoch) {
    n->src.spare_grad = NULL;
    return g;
  }
  g = ad_tensor_new_uninit(ctx, n->t.dtype, n->t.ndim, n->t.shape);
  if (g) ad_node_of(g)->flags |= AD_NF_OWNED;
  return g;
}

void ad_leaf_grad_untake(ad_node *n, ad_tensor *g) {
  if (n->src.spare_grad)
    persistent_free(ad_node_of(g)); /* a new one: the tape has not used it */
  else
    n->src.spare_grad = g;
}

/* The checks of the two buffer setters: t a live persistent tensor and
 * buf aligned for its dtype. Returns t's node, or NULL with the error in
 * *st (recorded on the context where there is one). */
static ad_node *buffer_target(ad_tensor *t, const void *buf, const char *fn, ad_status *st) {
  *st = AD_ERR_NULL;
  if (!t) return NULL;
  ad_node *n = ad_node_of(t);
  if (n->magic == AD_NODE_DEAD) {
    *st = ad_set_error(n->ctx, AD_ERR_STATE, "%s: the tensor was freed", fn);
    return NULL;
  }
  *st = AD_ERR_ARG;
  if (n->magic != AD_NODE_MAGIC) return NULL;
  if (!(n->flags & AD_NF_PERSISTENT)) {
    *st = ad_set_error(n->ctx, AD_ERR_STATE,
                       "%s: a temporary (made by an op) keeps its data in the tape's arena", fn);
    return NULL;
  }
  if (n->flags & AD_NF_OWNED) {
    *st = ad_set_error(n->ctx, AD_ERR_STATE,
                       "%s: this tensor is another tensor's gradient; bind that tensor's "
                       "with ad_tensor_set_grad_buffer",
                       fn);
    return NULL;
  }
  if ((uintptr_t)buf % ad_dsize(t->dtype)) {
    *st = ad_set_error(n->ctx, AD_ERR_ARG, "%s: buf %p is not aligned for %s elements", fn, buf,
                       ad_dtype_name(t->dtype));
    return NULL;
  }
  *st = AD_OK;
  return n;
}

/* Points persistent node g's data at buf (NULL: memory of its own, with
 * the values when keep: *home when home is given, which is then NULL, else
 * allocated now). The old memory is freed when it was the engine's.
 * AD_ERR_OOM leaves g unchanged. */
static ad_status rebind(ad_node *g, void *buf, bool keep, void **home) {
  ad_ctx *ctx = g->ctx;
  size_t bytes = (size_t)g->t.size * ad_dsize(g->t.dtype);
  bool ext = g->op & AD_LEAF_EXTERNAL;
  if (!buf) {
    if (!ext) return AD_OK;
    void *mine = home ? *home : ad_malloc(ctx, bytes);
    if (!mine) return AD_ERR_OOM;
    if (home) *home = NULL;
    if (keep && bytes) memcpy(mine, g->t.data, bytes);
    g->t.data = mine;
    g->op &= (uint16_t)~AD_LEAF_EXTERNAL;
    return AD_OK;
  }
  if (keep && buf != g->t.data && bytes) memmove(buf, g->t.data, bytes);
  if (!ext) ad_free(ctx, g->t.data, bytes);
  g->t.data = buf;
  g->op |= AD_LEAF_EXTERNAL;
  return AD_OK;
}

ad_status ad_tensor_set_data_buffer(ad_tensor *t, void *buf, bool copy) {
  ad_status st;
  ad_node *n = buffer_target(t, buf, "set_data_buffer", &st);
  if (!n) return st;
  if (buf && buf == t->data && !(n->op & AD_LEAF_EXTERNAL)) /* rebind would free it */
    return ad_set_error(n->ctx, AD_ERR_ARG,
                        "set_data_buffer: buf %p is the engine's memory of the tensor, not "
                        "the caller's",
                        buf);
  if (n->epoch == n->ctx->epoch && buf && !(n->op & AD_LEAF_EXTERNAL))
    return ad_set_error(n->ctx, AD_ERR_STATE,
                        "set_data_buffer: an op of the current tape used the tensor (its "
                        "views may still read the memory this would free); bind it after "
                        "ad_tape_reset");
  if (n->epoch == n->ctx->epoch && buf && buf != t->data && !copy)
    return ad_set_error(n->ctx, AD_ERR_STATE,
                        "set_data_buffer: an op of the current tape used the tensor (its "
                        "backward reads the values where they are); move it with copy, or "
                        "bind it after ad_tape_reset");
  st = rebind(n, buf, copy || !buf, NULL);
  return st == AD_OK ? AD_OK : ad_set_error(n->ctx, st, "set_data_buffer: out of memory");
}

ad_status ad_tensor_adopt_data(ad_tensor *t, void **mem) {
  if (t && (!mem || !*mem)) t = NULL; /* nothing to move into */
  ad_status st;
  ad_node *n = buffer_target(t, mem ? *mem : NULL, "adopt_data", &st);
  return n ? rebind(n, NULL, true, mem) : st; /* never short of memory */
}

/* ad_tensor_set_grad_buffer, and with buf NULL and home given
 * ad_tensor_adopt_grad (fn the caller's name). */
static ad_status set_grad(ad_tensor *t, void *buf, bool copy, void **home, const char *fn) {
  ad_status st;
  ad_node *n = buffer_target(t, home ? *home : buf, fn, &st);
  if (!n) return st;
  ad_ctx *ctx = n->ctx;
  if (!ad_is_float(t->dtype))
    return ad_set_error(ctx, AD_ERR_DTYPE, "%s: %s tensors have no gradient", fn,
                        ad_dtype_name(t->dtype));
  ad_tensor *g = t->grad ? t->grad : n->src.spare_grad;
  if (buf && g && buf == g->data && !(ad_node_of(g)->op & AD_LEAF_EXTERNAL))
    return ad_set_error(ctx, AD_ERR_ARG,
                        "set_grad_buffer: buf %p is the engine's memory of the gradient, not "
                        "the caller's",
                        buf);
  bool used = g && ad_node_of(g)->epoch == ctx->epoch;
  if (used && buf && buf != g->data && !copy)
    return ad_set_error(ctx, AD_ERR_STATE,
                        "set_grad_buffer: an op of the current tape used the gradient (its "
                        "backward reads the values where they are); move it with copy, or bind "
                        "it after ad_tape_reset");
  if (used && buf && !(ad_node_of(g)->op & AD_LEAF_EXTERNAL))
    return ad_set_error(ctx, AD_ERR_STATE,
                        "set_grad_buffer: an op of the current tape used the gradient (its views "
                        "may still read the memory this would free); bind it after ad_tape_reset");
  if (!g && !buf) return AD_OK; /* no gradient and no buffer: engine memory when one comes */
  if (!g) {                     /* a header for the caller's memory */
    ad_node *h = node_alloc(ctx);
    if (!h) return ad_set_error(ctx, AD_ERR_OOM, "set_grad_buffer: out of memory");
    ad_node_init(h, ctx, t->dtype, t->ndim, t->shape, t->size);
    h->epoch = 0;
    h->flags = AD_NF_LEAF | AD_NF_PERSISTENT | AD_NF_OWNED;
    h->src.spare_grad = NULL;
    h->t.data = buf;
    h->op = AD_LEAF_EXTERNAL;
    g = &h->t;
    n->src.spare_grad = g;
  } else if ((st = rebind(ad_node_of(g), buf, (copy || !buf) && (t->grad || used), home)) !=
             AD_OK) { /* a kept buffer the tape read keeps its values too */
    return ad_set_error(ctx, st, "%s: out of memory", fn);
  }
  if (buf && !copy && !t->grad) { /* buf's contents are the gradient now */
    t->grad = g;
    n->src.spare_grad = NULL;
  }
  /* unbound while a backward that read t->grad as a value keeps the caller's buffer aside for
   * the next pass (keep_spare): released too, or that pass would store into it */
  ad_tensor *kept = n->src.spare_grad;
  if (!buf && t->grad && kept && (ad_node_of(kept)->op & AD_LEAF_EXTERNAL)) {
    n->src.spare_grad = NULL;
    persistent_free(ad_node_of(kept)); /* the header: the memory is the caller's */
  }
  return AD_OK;
}

ad_status ad_tensor_set_grad_buffer(ad_tensor *t, void *buf, bool copy) {
  return set_grad(t, buf, copy, NULL, "set_grad_buffer");
}

ad_status ad_tensor_adopt_grad(ad_tensor *t, void **mem) {
  if (t && (!mem || !*mem)) t = NULL; /* nothing to move into */
  return set_grad(t, NULL, false, mem, "adopt_grad");
}

static int cmp_write_node(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)((const ad_write *)a)->n, y = (uintptr_t)((const ad_write *)b)->n;
  return (x > y) - (x < y);
}

ad_status ad_note_write_slow(ad_node *n, const char *fn) {
  ad_ctx *ctx = n->ctx;
  /* a loop of writes into n, or into a few tensors in turn (a batch norm's
   * two statistics): the entry is there already */
  for (size_t i = ctx->nwrites, k = 0; i-- > 0 && k < 8; k++)
    if (ctx->writes[i].n == n) {
      ctx->writes[i].pos = ctx->tape_len;
      return AD_OK;
    }
  /* full: first merge the entries of one tensor (writes into more tensors
   * in turn than the scan above sees), so that the list grows with the
   * tensors written, not with the writes; grown when that leaves it a
   * quarter full or more, so the merges cost O(log) per write */
  if (ctx->nwrites == ctx->writes_cap) {
    if (ctx->nwrites) {
      qsort(ctx->writes, ctx->nwrites, sizeof *ctx->writes, cmp_write_node);
      size_t k = 0;
      for (size_t i = 0; i < ctx->nwrites; i++)
        if (k && ctx->writes[k - 1].n == ctx->writes[i].n) {
          if (ctx->writes[i].pos > ctx->writes[k - 1].pos)
            ctx->writes[k - 1].pos = ctx->writes[i].pos;
        } else {
          ctx->writes[k++] = ctx->writes[i];
        }
      ctx->nwrites = k;
      for (size_t i = 0; i < k; i++)
        if (ctx->writes[i].n == n) { /* to the end, which the scan above reads first */
          ad_write e = ctx->writes[i];
          memmove(&ctx->writes[i], &ctx->writes[i + 1], (k - i - 1) * sizeof e);
          e.pos = ctx->tape_len;
          ctx->writes[k - 1] = e;
          return AD_OK;
        }
    }
    if (ctx->nwrites >= ctx->writes_cap / 4) {
      size_t cap = ctx->writes_cap ? ctx->writes_cap * 2 : 16;
      ad_write *w =
          ctx->alloc(ctx->alloc_ud, ctx->writes, ctx->writes_cap * sizeof *w, cap * sizeof *w);
      if (!w)
        return ad_set_error(ctx, AD_ERR_OOM,
                            "%s: out of memory (to note that a tensor the tape used was written)",
                            fn);
      ctx->writes = w;
      ctx->writes_cap = cap;
    }
  }
  ctx->writes[ctx->nwrites++] = (ad_write){.n = n, .pos = ctx->tape_len};
  return AD_OK;
}

ad_status ad_tensor_mark_modified(ad_tensor *t) {
  ad_status st;
  if (!t) return AD_ERR_NULL;
  if (unusable(t, "tensor_mark_modified", &st)) return st;
  return ad_note_write(ad_node_of(t), "tensor_mark_modified");
}

double ad_tensor_get(const ad_tensor *t, int64_t i) {
  if (!t) return 0.0;
  return usable(t) ? ad_value_at(t, i) : NAN;
}

ad_status ad_tensor_set(ad_tensor *t, int64_t i, double v) {
  ad_status st;
  if (!t) return AD_ERR_NULL;
  if (unusable(t, "tensor_set", &st)) return st;
  if (i < 0 || i >= t->size) return AD_ERR_ARG;
  if (t->dtype == AD_I32 && !i32_fits(v)) return i32_error(t, "tensor_set", v);
  if ((st = ad_note_write(ad_node_of(t), "tensor_set")) != AD_OK) return st;
  switch (t->dtype) {
  case AD_F32:
    ((float *)t->data)[i] = (float)v;
    break;
  case AD_F64:
    ((double *)t->data)[i] = v;
    break;
  default:
    ((int32_t *)t->data)[i] = (int32_t)v;
    break;
  }
  return AD_OK;
}

double ad_tensor_item(const ad_tensor *t) {
  if (!t || !usable(t) || t->size != 1) return NAN;
  return ad_tensor_get(t, 0);
}

/* dst[i] = src[i] for a float dst of another dtype than src (the values
 * ad_tensor_set(dst, i, ad_tensor_get(src, i)) stores: a float64 rounded
 * once to float32, the others exact), in loops of the two C types, over
 * elements [b, e) (for ad_parallel_for). */
typedef struct convert_job {
  ad_tensor *dst;
  const ad_tensor *src;
} convert_job;
static void convert_range(void *ud, int64_t b, int64_t e) {
  const convert_job *j = ud;
  ad_tensor *dst = j->dst;
  const ad_tensor *src = j->src;
#define CONVERT(TD, TS)                                                                            \
  do {                                                                                             \
    TD *d = dst->data;                                                                             \
    const TS *x = src->data;                                                                       \
    for (int64_t i = b; i < e; i++) d[i] = (TD)x[i];                                               \
  } while (0)
  if (dst->dtype == AD_F32 && src->dtype == AD_F64)
    CONVERT(float, double);
  else if (dst->dtype == AD_F32)
    CONVERT(float, int32_t);
  else if (src->dtype == AD_F32)
    CONVERT(double, float);
  else
    CONVERT(double, int32_t);
#undef CONVERT
}

ad_status ad_tensor_copy_data(ad_tensor *dst, const ad_tensor *src) {
  ad_status st;
  if (!dst || !src) return AD_ERR_NULL;
  if (unusable(dst, "copy_data", &st) || unusable(src, "copy_data", &st)) return st;
  if (dst->size != src->size) {
    char a[64], b[64];
    return ad_set_error(ad_node_of(dst)->ctx, AD_ERR_SHAPE,
                        "copy_data: sizes differ: %s (%lld) <- %s (%lld)",
                        ad_shape_str(dst, a, sizeof a), (long long)dst->size,
                        ad_shape_str(src, b, sizeof b), (long long)src->size);
  }
  if (dst->dtype == AD_I32 && src->dtype != AD_I32) /* checked first: a refused copy leaves dst */
    for (int64_t i = 0; i < src->size; i++) {
      double v = ad_value_at(src, i);
      if (!i32_fits(v)) return i32_error(dst, "copy_data", v);
    }
  if ((st = ad_note_write(ad_node_of(dst), "copy_data")) != AD_OK) return st;
  if (dst->dtype == src->dtype)
    memmove(dst->data, src->data, (size_t)src->size * ad_dsize(src->dtype));
  else if (dst->dtype != AD_I32) {
    convert_job j = {dst, src};
    ad_parallel_for(src->size, 32768, convert_range, &j);
  } else
    for (int64_t i = 0; i < src->size; i++)
      ((int32_t *)dst->data)[i] = (int32_t)ad_value_at(src, i);
  return AD_OK;
}

bool ad_tensor_has_nonfinite(const ad_tensor *t) {
  if (!t) return false;
  if (!usable(t)) return true; /* ad_tensor_get's NaNs */
  if (!ad_is_float(t->dtype)) return false;
  int bad = 0; /* an OR over the whole tensor: no early exit, so the loops vectorize */
  if (t->dtype == AD_F32) {
    const float *x = t->data;
    for (int64_t i = 0; i < t->size; i++) bad |= !isfinite(x[i]);
  } else {
    const double *x = t->data;
    for (int64_t i = 0; i < t->size; i++) bad |= !isfinite(x[i]);
  }
  return bad != 0;
}

/* ------------------------------------------------------------- printing */

static void print_rec(FILE *f, const ad_tensor *t, int dim, int64_t off, int indent) {
  const int64_t edge = 3;
  int64_t n = t->shape[dim];
  int64_t stride = 1;
  for (int i = dim + 1; i < t->ndim; i++) stride *= t->shape[i];
  fputc('[', f);
  for (int64_t i = 0; i < n; i++) {
    if (n > 2 * edge && i == edge) {
      /* the separator before it is already out: "...", then the next one */
      fputs("...", f);
      i = n - edge - 1;
      fputs(dim + 1 == t->ndim ? ", " : ",\n", f);
      if (dim + 1 < t->ndim) fprintf(f, "%*s", indent + 1, "");
      continue;
    }
    if (dim + 1 == t->ndim) {
      if (t->dtype == AD_I32)
        fprintf(f, "%d", ((const int32_t *)t->data)[off + i]);
      else
        fprintf(f, "%.6g", ad_tensor_get(t, off + i));
    } else {
      print_rec(f, t, dim + 1, off + i * stride, indent + 1);
    }
    if (i + 1 < n) {
      fputs(dim + 1 == t->ndim ? ", " : ",\n", f);
      if (dim + 1 < t->ndim) fprintf(f, "%*s", indent + 1, "");
    }
  }
  fputc(']', f);
}

void ad_tensor_print(FILE *f, const char *name, const ad_tensor *t) {
  if (!f) return;
  char buf[128];
  if (name) fprintf(f, "%s: ", name);
  if (!t) {
    fprintf(f, "(null)\n");
    return;
  }
  if (!usable(t)) {
    const ad_node *n = ad_node_of(t);
    fprintf(f, "(%s)\n",
            n->magic == AD_NODE_DEAD    ? "freed"
            : n->magic == AD_NODE_MAGIC ? "from a tape that was reset"
                                        : "not a tensor");
    return;
  }
  fprintf(f, "%s %s\n", ad_shape_str(t, buf, sizeof buf), ad_dtype_name(t->dtype));
  if (t->ndim == 0)
    fprintf(f, "%.6g", ad_tensor_get(t, 0));
  else if (t->size == 0)
    fprintf(f, "[]");
  else
    print_rec(f, t, 0, 0, 0);
  fputc('\n', f);
}
