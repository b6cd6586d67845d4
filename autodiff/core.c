/* core.c: errors, allocator, arena, RNG and tensors: the bottom layer,
 * which calls nothing else of the library. */
#include "ad_internal.h"

#include <math.h>
#include <stdlib.h>

/* ------------------------------------------------------------- aborts */

_Noreturn void ad_internal_abort(const char *file, int line, const char *cond, const char *hint) {
  fprintf(stderr, "%s:%d: internal error: %s (%s)\n", file, line, cond, hint);
  abort();
}

/* ---------------------------------------------------------- allocator */

/* Default allocator: 64-byte aligned blocks for AVX-512 loads. */
void *ad_default_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  size_t rounded = (nsize + 63) & ~(size_t)63;
  void *p = aligned_alloc(64, rounded);
  if (p && ptr) {
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    free(ptr);
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
  if ((int)s < 0 || s >= AD_STATUS_COUNT) return "unknown status";
  return status_names[s];
}

/* the va_list form of a printf format: clang's -Wformat-nonliteral wants it
 * said, gcc infers it */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 0)))
#endif
static void
record_error(ad_ctx *ctx, ad_status status, const char *fmt, va_list ap) {
  ctx->status = status;
  ctx->nerrors++;
  vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
}

ad_status ad_set_error(ad_ctx *ctx, ad_status status, const char *fmt, ...) {
  if (!ctx || status == AD_OK) return status;
  va_list ap;
  va_start(ap, fmt);
  record_error(ctx, status, fmt, ap);
  va_end(ap);
  return status;
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

size_t ad_arena_used(const ad_ctx *ctx) {
  if (!ctx || !ctx->cur) return 0;
  return ctx->arena_used_before_cur + (size_t)(ctx->bump - chunk_base(ctx->cur));
}

size_t ad_arena_capacity(const ad_ctx *ctx) { return ctx ? ctx->arena_cap : 0; }

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
  if (ctx->chunks) arena_enter(ctx, ctx->chunks);
  ctx->arena_used_before_cur = 0;
  ctx->tape_len = 0;
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

/* Validates a constructor's arguments; records AD_ERR_ARG. */
static bool check_new(ad_ctx *ctx, const char *fn, ad_dtype dt, int ndim, const int64_t *shape) {
  if (!ctx) return false;
  if (dt != AD_F32 && dt != AD_F64 && dt != AD_I32) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: unknown dtype %d", fn, (int)dt);
    return false;
  }
  if (ndim < 0 || ndim > AD_MAX_DIMS || (ndim > 0 && !shape)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: ndim %d out of range 0..%d", fn, ndim, AD_MAX_DIMS);
    return false;
  }
  int64_t n;
  int bad = ad_shape_size_checked(ndim, shape, &n);
  if (bad >= 0) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: dimension %d has bad length %lld", fn, bad,
                 (long long)shape[bad]);
    return false;
  }
  return true;
}

/* A persistent tensor with uninitialized data. */
static ad_tensor *persistent_new(ad_ctx *ctx, const char *fn, ad_dtype dt, int ndim,
                                 const int64_t *shape) {
  if (!check_new(ctx, fn, dt, ndim, shape)) return NULL;
  ad_node *n = ad_malloc(ctx, sizeof *n);
  if (!n) return NULL;
  ad_node_init(n, ctx, dt, ndim, shape, ad_shape_size(ndim, shape));
  n->flags = AD_NF_LEAF | AD_NF_PERSISTENT;
  n->src.spare_grad = NULL;
  n->t.data = ad_malloc(ctx, (size_t)n->t.size * ad_dsize(dt));
  if (!n->t.data) {
    ad_free(ctx, n, sizeof *n);
    return NULL;
  }
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
  n->t.data = ad_tmp_data(p, bytes);
  return &n->t;
}

ad_tensor *ad_tmp_header(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape) {
  ad_node *n = ad_arena_alloc(ctx, sizeof(ad_node));
  if (!n) return NULL;
  ad_node_init(n, ctx, dt, ndim, shape, ad_shape_size(ndim, shape));
  n->t.data = NULL;
  return &n->t;
}

void ad_tensor_fill(ad_tensor *t, double v) {
  if (!t) return;
  if (t->dtype == AD_F32)
    for (int64_t i = 0; i < t->size; i++) ((float *)t->data)[i] = (float)v;
  else if (t->dtype == AD_F64)
    for (int64_t i = 0; i < t->size; i++) ((double *)t->data)[i] = v;
  else
    for (int64_t i = 0; i < t->size; i++) ((int32_t *)t->data)[i] = (int32_t)v;
}

ad_tensor *ad_tmp_full(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape, double v) {
  ad_tensor *t = ad_tmp_new(ctx, dt, ndim, shape);
  if (!t) return NULL;
  ad_tensor_fill(t, v);
  ad_node_of(t)->flags |= AD_NF_LEAF; /* a constant, not made by an op */
  return t;
}

ad_tensor *ad_scalar(ad_ctx *ctx, ad_dtype dt, double v) {
  if (!check_new(ctx, "scalar", dt, 0, NULL)) return NULL;
  return ad_tmp_full(ctx, dt, 0, NULL, v);
}

ad_tensor *ad_full(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape, double v) {
  ad_tensor *t = persistent_new(ctx, "full", dt, ndim, shape);
  ad_tensor_fill(t, v);
  return t;
}

ad_tensor *ad_zeros(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape) {
  return ad_full(ctx, dt, ndim, shape, 0.0);
}

ad_tensor *ad_ones(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape) {
  return ad_full(ctx, dt, ndim, shape, 1.0);
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

ad_tensor *ad_arange(ad_ctx *ctx, ad_dtype dt, double start, double stop, double step) {
  if (!ctx) return NULL;
  if (step == 0 || !isfinite(start) || !isfinite(stop) || !isfinite(step)) {
    ad_set_error(ctx, AD_ERR_ARG, "arange: bad range %g..%g step %g", start, stop, step);
    return NULL;
  }
  double cnt = ceil((stop - start) / step);
  int64_t n = cnt > 0 ? (int64_t)cnt : 0;
  ad_tensor *t = persistent_new(ctx, "arange", dt, 1, &n);
  for (int64_t i = 0; t && i < n; i++) ad_tensor_set(t, i, start + (double)i * step);
  return t;
}

ad_tensor *ad_rand(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int ndim, const int64_t *shape, double lo,
                   double hi) {
  if (ctx && !rng) {
    ad_set_error(ctx, AD_ERR_NULL, "rand: rng is NULL");
    return NULL;
  }
  ad_tensor *t = persistent_new(ctx, "rand", dt, ndim, shape);
  for (int64_t i = 0; t && i < t->size; i++)
    ad_tensor_set(t, i, lo + (hi - lo) * ad_rng_uniform(rng));
  return t;
}

ad_tensor *ad_randn(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int ndim, const int64_t *shape,
                    double mean, double std) {
  if (ctx && !rng) {
    ad_set_error(ctx, AD_ERR_NULL, "randn: rng is NULL");
    return NULL;
  }
  ad_tensor *t = persistent_new(ctx, "randn", dt, ndim, shape);
  for (int64_t i = 0; t && i < t->size; i++) ad_tensor_set(t, i, mean + std * ad_rng_normal(rng));
  return t;
}

ad_tensor *ad_tensor_clone(ad_ctx *ctx, const ad_tensor *t) {
  if (!ctx) return NULL;
  if (!t) {
    ad_set_null_error(ctx, "clone: tensor is NULL");
    return NULL;
  }
  return ad_from_data(ctx, t->dtype, t->ndim, t->shape, t->data);
}

static bool is_node(const ad_tensor *t) { return t && ad_node_of(t)->magic == AD_NODE_MAGIC; }

void ad_tensor_free(ad_tensor *t) {
  if (!is_node(t)) return;
  ad_node *n = ad_node_of(t);
  if (!(n->flags & AD_NF_PERSISTENT)) return;
  ad_ctx *ctx = n->ctx;
  if (t->grad) ad_tensor_free(t->grad);
  if (n->src.spare_grad) ad_tensor_free(n->src.spare_grad);
  n->magic = 0;
  ad_free(ctx, t->data, (size_t)t->size * ad_dsize(t->dtype));
  ad_free(ctx, n, sizeof *n);
}

ad_status ad_tensor_set_requires_grad(ad_tensor *t, bool on) {
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
  if (!is_node(t)) return AD_ERR_NULL;
  ad_node_of(t)->flags |= AD_NF_RETAIN;
  return AD_OK;
}

bool ad_tensor_is_temporary(const ad_tensor *t) {
  return is_node(t) && !(ad_node_of(t)->flags & AD_NF_PERSISTENT);
}

void ad_tensor_zero_grad(ad_tensor *t) {
  if (!is_node(t) || !t->grad) return;
  ad_node *n = ad_node_of(t);
  if (n->flags & AD_NF_PERSISTENT) { /* keep the buffer for the next pass */
    if (n->src.spare_grad) ad_tensor_free(n->src.spare_grad); /* never both; for safety */
    n->src.spare_grad = t->grad;
  }
  t->grad = NULL; /* a retained intermediate's grad is arena memory */
}

ad_tensor *ad_leaf_grad_take(ad_ctx *ctx, ad_node *n) {
  ad_tensor *g = n->src.spare_grad;
  if (g) {
    n->src.spare_grad = NULL;
    return g;
  }
  return ad_tensor_new_uninit(ctx, n->t.dtype, n->t.ndim, n->t.shape);
}

double ad_tensor_get(const ad_tensor *t, int64_t i) {
  if (!t || i < 0 || i >= t->size) return 0.0;
  switch (t->dtype) {
  case AD_F32:
    return ((const float *)t->data)[i];
  case AD_F64:
    return ((const double *)t->data)[i];
  default:
    return ((const int32_t *)t->data)[i];
  }
}

ad_status ad_tensor_set(ad_tensor *t, int64_t i, double v) {
  if (!t) return AD_ERR_NULL;
  if (i < 0 || i >= t->size) return AD_ERR_ARG;
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
  if (!t || t->size != 1) return NAN;
  return ad_tensor_get(t, 0);
}

ad_status ad_tensor_copy_data(ad_tensor *dst, const ad_tensor *src) {
  if (!dst || !src) return AD_ERR_NULL;
  if (dst->size != src->size) {
    char a[64], b[64];
    return ad_set_error(ad_node_of(dst)->ctx, AD_ERR_SHAPE,
                        "copy_data: sizes differ: %s (%lld) <- %s (%lld)",
                        ad_shape_str(dst, a, sizeof a), (long long)dst->size,
                        ad_shape_str(src, b, sizeof b), (long long)src->size);
  }
  if (dst->dtype == src->dtype)
    memmove(dst->data, src->data, (size_t)src->size * ad_dsize(src->dtype));
  else
    for (int64_t i = 0; i < src->size; i++) ad_tensor_set(dst, i, ad_tensor_get(src, i));
  return AD_OK;
}

bool ad_tensor_has_nonfinite(const ad_tensor *t) {
  if (!t || !ad_is_float(t->dtype)) return false;
  for (int64_t i = 0; i < t->size; i++)
    if (!isfinite(ad_tensor_get(t, i))) return true;
  return false;
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
  fprintf(f, "%s %s\n", ad_shape_str(t, buf, sizeof buf), ad_dtype_name(t->dtype));
  if (t->ndim == 0)
    fprintf(f, "%.6g", ad_tensor_get(t, 0));
  else if (t->size == 0)
    fprintf(f, "[]");
  else
    print_rec(f, t, 0, 0, 0);
  fputc('\n', f);
}
