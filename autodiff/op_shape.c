/* op_shape.c: reshape (a view), permute, expand / sum_to, narrow / pad,
 * concat, index_select / index_add, embedding (index_select with
 * PyTorch's padding row, whose gradient is index_add), and gather /
 * scatter_add along an axis, and flip. Each op's gradient is its
 * partner. */
#include "kernels/kernels.h"
#include "ops.h"

#include <float.h>
#include <limits.h>
#include <math.h>

/* -------------------------------------------------------------- helpers */

/* The attributes of reshape, expand and sum_to: a target shape. */
static ad_attrs shape_to_attrs(int ndim, const int64_t *shape) {
  ad_attrs at = {.shape = {.ndim = ndim}};
  for (int k = 0; k < ndim; k++) at.shape.dims[k] = shape[k];
  return at;
}

/* Sets c->out's ndim and shape to the target shape in attrs. */
static ad_status target_shape(const ad_call *c) {
  const ad_shape_attrs *t = &c->attrs->shape;
  if (t->ndim < 0 || t->ndim > AD_MAX_DIMS)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: ndim %d out of range 0..%d", c->name, t->ndim,
                        AD_MAX_DIMS);
  c->out->ndim = t->ndim;
  for (int k = 0; k < t->ndim; k++) c->out->shape[k] = t->dims[k];
  return AD_OK;
}

/* Normalises axis against c->in[0] (narrow, pad, concat) into *ax. */
static ad_status axis_arg(const ad_call *c, int axis, int *ax) {
  const ad_tensor *x = c->in[0];
  *ax = ad_norm_axis(axis, x->ndim);
  if (*ax < 0) {
    char a[64];
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: axis %d out of range for %s", c->name, axis,
                        ad_shape_str(x, a, sizeof a));
  }
  return AD_OK;
}

/* copy_axis's work: outer blocks of blk elements, each cut into pieces
 * of at most piece elements, for ad_parallel_for over outer * pieces. */
typedef struct copy_job {
  const char *src;
  char *dst;
  size_t es;
  int64_t sstride, dstride, blk, piece, pieces; /* in elements */
} copy_job;

/* memcpy of n bytes (a multiple of 4, as every dtype's size): rows of
 * less than 128 bytes (a narrow or a pad of a few elements per row) are
 * copied inline, since a library call per row costs more than such a
 * copy. */
static inline void copy_bytes(char *d, const char *s, size_t n) {
  if (n >= 128) {
    memcpy(d, s, n);
    return;
  }
  if (n & 64) memcpy(d, s, 64), d += 64, s += 64;
  if (n & 32) memcpy(d, s, 32), d += 32, s += 32;
  if (n & 16) memcpy(d, s, 16), d += 16, s += 16;
  if (n & 8) memcpy(d, s, 8), d += 8, s += 8;
  if (n & 4) memcpy(d, s, 4);
}

/* memset(d, 0, n), rows of less than 64 bytes inline. */
static inline void zero_bytes(char *d, size_t n) {
  static const char zeros[64];
  if (n >= 64)
    memset(d, 0, n);
  else
    copy_bytes(d, zeros, n);
}

static void copy_pieces(void *ud, int64_t b, int64_t e) {
  const copy_job *j = ud;
  if (j->pieces == 1) { /* whole blocks, one per outer index: no division per block */
    size_t n = (size_t)j->blk * j->es, ds = (size_t)j->dstride * j->es,
           ss = (size_t)j->sstride * j->es;
    if (n == 4) /* one float (a stack's or an unbind's slice along a last axis): a plain loop */
      for (int64_t o = b; o < e; o++) memcpy(j->dst + (size_t)o * ds, j->src + (size_t)o * ss, 4);
    else if (n == 8)
      for (int64_t o = b; o < e; o++) memcpy(j->dst + (size_t)o * ds, j->src + (size_t)o * ss, 8);
    else
      for (int64_t o = b; o < e; o++)
        copy_bytes(j->dst + (size_t)o * ds, j->src + (size_t)o * ss, n);
    return;
  }
  for (int64_t u = b; u < e; u++) {
    int64_t o = u / j->pieces, p0 = u % j->pieces * j->piece;
    int64_t len = j->blk - p0 < j->piece ? j->blk - p0 : j->piece;
    memcpy(j->dst + (size_t)(o * j->dstride + p0) * j->es,
           j->src + (size_t)(o * j->sstride + p0) * j->es, (size_t)len * j->es);
  }
}

/* Copies a block along axis: for each outer index, len*inner elements from
 * src at soff to dst at doff (offsets along axis); split over the
 * library's threads in pieces of 32768 elements or more. */
static void copy_axis(const ad_tensor *src, int64_t sn, int64_t soff, ad_tensor *dst, int64_t dn,
                      int64_t doff, int64_t len, int64_t outer, int64_t inner) {
  enum { PIECE = 32768 };
  int64_t blk = len * inner;
  if (blk == 0 || outer == 0) return;
  copy_job j = {(const char *)src->data + (size_t)(soff * inner) * ad_dsize(src->dtype),
                (char *)dst->data + (size_t)(doff * inner) * ad_dsize(src->dtype),
                ad_dsize(src->dtype),
                sn * inner,
                dn * inner,
                blk,
                blk < PIECE ? blk : PIECE,
                (blk + PIECE - 1) / PIECE};
  int64_t items = outer * j.pieces, grain = (PIECE + j.piece - 1) / j.piece;
  if (outer * blk <= PIECE)
    copy_pieces(&j, 0, items);
  else
    ad_parallel_for(items, grain, copy_pieces, &j);
}

/* Checks the indices of index_select / index_add: i32, each in 0..rows-1. */
static ad_status check_idx(const ad_call *c, const ad_tensor *idx, int64_t rows) {
  if (idx->dtype != AD_I32)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: indices must be i32, got %s", c->name,
                        ad_dtype_name(idx->dtype));
  const int32_t *p = idx->data;
  int64_t i = ad_idx_first_bad(p, idx->size, rows);
  if (i >= 0)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: index %d at position %lld is outside 0..%lld",
                        c->name, p[i], (long long)i, (long long)rows - 1);
  return AD_OK;
}

/* Random indices in 0..rows-1 for the index samples. */
static ad_tensor *sample_idx(const ad_sample_call *s, int ndim, const int64_t *shape,
                             int64_t rows) {
  ad_tensor *t = ad_zeros(s->ctx, AD_I32, ndim, shape);
  for (int64_t i = 0; t && i < t->size; i++)
    ((int32_t *)t->data)[i] = (int32_t)ad_rng_below(s->rng, (uint64_t)rows);
  return t;
}

/* -------------------------------------------------------------- reshape */

static ad_status reshape_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  ad_tensor *o = c->out;
  ad_status st = target_shape(c);
  if (st != AD_OK) return st;
  int infer = -1;
  for (int k = 0; k < o->ndim; k++) {
    if (o->shape[k] == -1 && infer < 0) {
      infer = k;
    } else if (o->shape[k] < 0) {
      return ad_set_error(c->ctx, AD_ERR_ARG, "%s: bad length %lld at dim %d", c->name,
                          (long long)o->shape[k], k);
    }
  }
  /* the product of the known lengths, checked: the -1 counts as 1 */
  int64_t dims[AD_MAX_DIMS], known;
  for (int k = 0; k < o->ndim; k++) dims[k] = k == infer ? 1 : o->shape[k];
  int bad = ad_shape_size_checked(o->ndim, dims, &known);
  if (bad >= 0) return ad_shape_size_error(c->ctx, AD_ERR_SHAPE, c->name, o->ndim, dims, bad);
  char a[64];
  if (infer >= 0) {
    if (known == 0 || x->size % known != 0)
      return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: cannot infer -1 for %s (%lld elements)",
                          c->name, ad_shape_str(x, a, sizeof a), (long long)x->size);
    o->shape[infer] = x->size / known;
    known *= o->shape[infer];
  }
  if (known != x->size)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: %s has %lld elements, the new shape %lld",
                        c->name, ad_shape_str(x, a, sizeof a), (long long)x->size,
                        (long long)known);
  o->dtype = x->dtype;
  return AD_OK;
}

/* y shares x's data */
static void reshape_fwd(const ad_call *c) { c->out->data = c->in[0]->data; }

static ad_status reshape_bwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  return ad_call_set_grad(c, 0, ad_reshape(c->ctx, c->gout, x->ndim, x->shape));
}

ad_tensor *ad_reshape(ad_ctx *ctx, ad_tensor *x, int ndim, const int64_t *shape) {
  if (!ctx) return NULL;
  if (ndim < 0 || ndim > AD_MAX_DIMS || (ndim && !shape)) {
    ad_set_error(ctx, AD_ERR_ARG, "reshape: ndim %d out of range 0..%d", ndim, AD_MAX_DIMS);
    return NULL;
  }
  ad_attrs at = shape_to_attrs(ndim, shape);
  return ad_apply1(ctx, AD_OP_RESHAPE, x, &at);
}

static int reshape_sample(const ad_sample_call *s) {
  if (s->variant > 0) return 0;
  int64_t sx[2] = {3, 4}, t[3] = {2, -1, 3};
  *s->attrs = shape_to_attrs(3, t);
  return (s->in[0] = ad_sample_tensor(s, 2, sx, -1, 1, true)) ? 1 : -1;
}

const ad_op_def ad_def_reshape = {
    .name = "reshape",
    .arity = 1,
    .flags = AD_OP_VIEW,
    .attrs = AD_ATTRS_SHAPE,
    .shape = reshape_shape,
    .forward = reshape_fwd,
    .backward = reshape_bwd,
    .sample = reshape_sample,
    .math = "y = x viewed with shape dims",
    .inputs = {"x"},
    .grads = {"reshape(dy, shape(x))"},
};

/* -------------------------------------------------------------- permute */

static ad_status permute_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  const ad_permute_attrs *at = &c->attrs->permute;
  if (at->ndim != x->ndim)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: %d axes given for a %d-d tensor", c->name,
                        at->ndim, x->ndim);
  bool seen[AD_MAX_DIMS] = {0};
  for (int k = 0; k < x->ndim; k++) {
    int p = ad_norm_axis(at->perm[k], x->ndim); /* negative counts from the end */
    if (p < 0 || seen[p])
      return ad_set_error(c->ctx, AD_ERR_ARG,
                          "%s: axis list is not a permutation of 0..%d (or -%d..-1)", c->name,
                          x->ndim - 1, x->ndim);
    seen[p] = true;
    c->out->shape[k] = x->shape[p];
  }
  c->out->ndim = x->ndim;
  c->out->dtype = x->dtype;
  return AD_OK;
}

/* permute's copy, as rows: out is walked in order through n dims (size-1
 * dims dropped; neighbours that stay neighbours in x, st[k-1] = st[k] *
 * size[k], merged), the last of which, len elements long, is a row read
 * from x with stride st[n-1]: a memcpy where that is 1 (a head split,
 * [B, T, H, d] -> [B, H, T, d], copies runs of d), else a gather in the
 * dtype's own C type. It was an odometer step and a memcpy call per element. */
typedef struct permute_job {
  const char *x;
  char *y;
  ad_dtype dt;
  size_t es;
  int n;
  int64_t size[AD_MAX_DIMS], st[AD_MAX_DIMS];
} permute_job;

#define GATHER_ROW(T, y, x, len, s)                                                                \
  do {                                                                                             \
    T *Y_ = (T *)(y);                                                                              \
    const T *X_ = (const T *)(x);                                                                  \
    for (int64_t i_ = 0; i_ < (len); i_++) Y_[i_] = X_[i_ * (s)];                                  \
  } while (0)

static void permute_rows(void *ud, int64_t b, int64_t e) {
  const permute_job *j = ud;
  int n = j->n;
  int64_t len = j->size[n - 1], s = j->st[n - 1], idx[AD_MAX_DIMS] = {0}, off = 0;
  for (int64_t k = n - 2, rest = b; k >= 0; rest /= j->size[k], k--) { /* row b's place in x */
    idx[k] = rest % j->size[k];
    off += idx[k] * j->st[k];
  }
  for (int64_t row = b; row < e; row++) {
    char *y = j->y + (size_t)(row * len) * j->es;
    const char *x = j->x + (size_t)off * j->es;
    if (s == 1)
      memcpy(y, x, (size_t)len * j->es);
    else if (j->dt == AD_F32) /* each dtype through its own type: no aliasing */
      GATHER_ROW(float, y, x, len, s);
    else if (j->dt == AD_F64)
      GATHER_ROW(double, y, x, len, s);
    else if (j->dt == AD_I32)
      GATHER_ROW(int32_t, y, x, len, s);
    else
      for (int64_t i = 0; i < len; i++)
        memcpy(y + (size_t)i * j->es, x + (size_t)(i * s) * j->es, j->es);
    for (int k = n - 2; k >= 0; k--) { /* odometer over the rows */
      off += j->st[k];
      if (++idx[k] < j->size[k]) break;
      off -= j->st[k] * idx[k];
      idx[k] = 0;
    }
  }
}

/* A permute whose last dim is strided in x (a transpose) gathers across x's
 * rows: each output row reads one element from every x row it crosses, a
 * cache line per element once x outgrows the cache. permute_tiled copies
 * it in tiles instead, between dim q (the dim with x's smallest stride,
 * its innermost) and the last dim: a tile takes a cache line's worth of
 * q (TILE_BYTES: 16 float32, 8 float64 elements) and the whole last dim,
 * a step of as many rows at a time: it reads that many runs of x's
 * consecutive elements (along q) and writes that many runs of y's. Where
 * q is x's innermost dim (stride 1), ad_transpose_blocks copies the tile
 * through registers (AVX2); else element by element. Few lines at once:
 * rows a power of two apart (4 KB) share the first-level cache's few ways
 * (tiles of 32 float32 rows thrashed them: a [1024, 1024] transpose took 3x
 * PyTorch's time). The other dims (planes) and q's tiles are split over
 * threads. */
enum { TILE_BYTES = 64 };
typedef struct tile_job {
  const permute_job *p;
  int q;                   /* the tiled dim besides the last */
  int64_t ys[AD_MAX_DIMS]; /* y's strides of the merged dims */
  int64_t tile;            /* elements of q per tile, and rows per step */
  int64_t qtiles;          /* tiles along q per plane */
} tile_job;

#define TILE_COPY(T)                                                                               \
  do {                                                                                             \
    const T *X_ = (const T *)(const void *)x;                                                      \
    T *Y_ = (T *)(void *)y;                                                                        \
    for (int64_t l0 = 0; l0 < len; l0 += tile) {                                                   \
      int64_t l1 = len - l0 < tile ? len : l0 + tile;                                              \
      for (int64_t iq = q0; iq < q1; iq++)                                                         \
        for (int64_t il = l0; il < l1; il++) Y_[iq * yq + il] = X_[iq * xq + il * s];              \
    }                                                                                              \
  } while (0)

static void permute_tiles(void *ud, int64_t b, int64_t e) {
  const tile_job *t = ud;
  const permute_job *j = t->p;
  int n = j->n, q = t->q;
  int64_t len = j->size[n - 1], s = j->st[n - 1], xq = j->st[q], yq = t->ys[q], tile = t->tile;
  for (int64_t u = b; u < e; u++) {
    int64_t plane = u / t->qtiles, q0 = u % t->qtiles * tile;
    int64_t q1 = j->size[q] - q0 < tile ? j->size[q] : q0 + tile;
    int64_t xo = 0, yo = 0;
    for (int k = n - 2; k >= 0; k--) { /* the plane's place in x and y */
      if (k == q) continue;
      xo += plane % j->size[k] * j->st[k];
      yo += plane % j->size[k] * t->ys[k];
      plane /= j->size[k];
    }
    const char *x = j->x + (size_t)xo * j->es;
    char *y = j->y + (size_t)yo * j->es;
    if (xq == 1 && ad_transpose_blocks(j->dt, x + (size_t)q0 * j->es, s,
                                       y + (size_t)(q0 * yq) * j->es, yq, q1 - q0, len))
      continue;
    if (j->dt == AD_F32) /* each dtype through its own type, as permute_rows */
      TILE_COPY(float);
    else if (j->dt == AD_F64)
      TILE_COPY(double);
    else if (j->dt == AD_I32)
      TILE_COPY(int32_t);
    else
      for (int64_t iq = q0; iq < q1; iq++)
        for (int64_t il = 0; il < len; il++)
          memcpy(y + (size_t)(iq * yq + il) * j->es, x + (size_t)(iq * xq + il * s) * j->es, j->es);
  }
}

/* Runs j's copy tiled when that pays: the last dim strided and another dim
 * at least a tile long with a smaller stride in x. Returns whether it ran. */
static bool permute_tiled(const permute_job *j, int64_t size) {
  int n = j->n, q = -1;
  int64_t tile = TILE_BYTES / (int64_t)j->es;
  for (int k = 0; k < n - 1; k++)
    if (j->size[k] >= tile && j->st[k] < j->st[n - 1] && (q < 0 || j->st[k] < j->st[q])) q = k;
  if (q < 0 || j->size[n - 1] < tile) return false;
  tile_job t = {j, q, {0}, tile, (j->size[q] + tile - 1) / tile};
  for (int64_t k = n - 1, st = 1; k >= 0; st *= j->size[k], k--) t.ys[k] = st;
  int64_t planes = size / (j->size[q] * j->size[n - 1]), items = planes * t.qtiles;
  int64_t per = tile * j->size[n - 1], grain = (32768 + per - 1) / per;
  if (items <= grain)
    permute_tiles(&t, 0, items);
  else
    ad_parallel_for(items, grain, permute_tiles, &t);
  return true;
}

static void permute_fwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  ad_tensor *out = c->out;
  int nd = x->ndim;
  if (out->size == 0) return;
  int64_t xst[AD_MAX_DIMS];
  int64_t s = 1;
  for (int k = nd - 1; k >= 0; s *= x->shape[k], k--) xst[k] = s;
  permute_job j = {x->data, out->data, x->dtype, ad_dsize(x->dtype), 0, {0}, {0}};
  for (int k = 0; k < nd; k++) {
    int64_t size = out->shape[k], st = xst[ad_norm_axis(c->attrs->permute.perm[k], nd)];
    if (size == 1) continue;
    if (j.n > 0 && j.st[j.n - 1] == st * size) { /* still x's neighbour: one dim */
      j.size[j.n - 1] *= size;
      j.st[j.n - 1] = st;
    } else {
      j.size[j.n] = size;
      j.st[j.n++] = st;
    }
  }
  if (j.n == 0) j.size[j.n] = 1, j.st[j.n++] = 1; /* one element */
  if (j.st[j.n - 1] != 1 && permute_tiled(&j, out->size)) return;
  int64_t len = j.size[j.n - 1], rows = out->size / len;
  int64_t grain = (32768 + len - 1) / len;
  if (rows <= grain)
    permute_rows(&j, 0, rows);
  else
    ad_parallel_for(rows, grain, permute_rows, &j);
}

static ad_status permute_bwd(const ad_call *c) {
  const ad_permute_attrs *at = &c->attrs->permute;
  int inv[AD_MAX_DIMS];
  for (int k = 0; k < at->ndim; k++) inv[ad_norm_axis(at->perm[k], at->ndim)] = k;
  return ad_call_set_grad(c, 0, ad_permute(c->ctx, c->gout, inv));
}

ad_tensor *ad_permute(ad_ctx *ctx, ad_tensor *x, const int *perm) {
  if (!x || !ctx) return ad_apply1(ctx, AD_OP_PERMUTE, x, NULL);
  if (!ad_arg_ok(ctx, "permute", "input 0", x)) return NULL; /* before x->ndim is read */
  if (!perm) {
    ad_set_error(ctx, AD_ERR_NULL, "permute: perm is NULL");
    return NULL;
  }
  ad_attrs at = {.permute = {.ndim = x->ndim}};
  for (int k = 0; k < x->ndim; k++) at.permute.perm[k] = perm[k];
  return ad_apply1(ctx, AD_OP_PERMUTE, x, &at);
}

ad_tensor *ad_transpose(ad_ctx *ctx, ad_tensor *x, int d0, int d1) {
  if (!ctx || !ad_arg_ok(ctx, "transpose", "input 0", x)) return NULL;
  int a = ad_norm_axis(d0, x->ndim), b = ad_norm_axis(d1, x->ndim);
  if (a < 0 || b < 0) {
    ad_set_error(ctx, AD_ERR_ARG, "transpose: axes %d, %d out of range for %d dims", d0, d1,
                 x->ndim);
    return NULL;
  }
  int perm[AD_MAX_DIMS];
  for (int k = 0; k < x->ndim; k++) perm[k] = k;
  perm[a] = b;
  perm[b] = a;
  return ad_permute(ctx, x, perm);
}

static int permute_sample(const ad_sample_call *s) {
  int v = s->variant;
  if (v > 1) return 0;
  int64_t sx[3] = {2, 3, 4};
  s->attrs->permute = (ad_permute_attrs){.ndim = v ? 2 : 3, .perm = {v ? 1 : 2, 0, 1}};
  return (s->in[0] = ad_sample_tensor(s, v ? 2 : 3, v ? sx + 1 : sx, -1, 1, true)) ? 1 : -1;
}

const ad_op_def ad_def_permute = {
    .name = "permute",
    .arity = 1,
    .attrs = AD_ATTRS_PERMUTE,
    .shape = permute_shape,
    .forward = permute_fwd,
    .backward = permute_bwd,
    .sample = permute_sample,
    .math = "y[j] = x[perm(j)], out dim k = in dim perm[k]",
    .inputs = {"x"},
    .grads = {"permute(dy, inverse(perm))"},
};

/* --------------------------------------------------------------- expand */

static ad_status expand_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  ad_tensor *o = c->out;
  ad_status st = target_shape(c);
  if (st != AD_OK) return st;
  int lead = o->ndim - x->ndim; /* new leading dims */
  for (int k = lead < 0 ? o->ndim : lead; k < o->ndim; k++)
    if (o->shape[k] == -1) o->shape[k] = x->shape[k - lead]; /* torch.expand: -1 keeps x's */
  int64_t b[AD_MAX_DIMS];
  int nb;
  bool ok = ad_broadcast_shape(x->ndim, x->shape, o->ndim, o->shape, &nb, b) && nb == o->ndim;
  for (int k = 0; ok && k < nb; k++) ok = b[k] == o->shape[k];
  if (!ok) {
    char a[64];
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: %s does not broadcast to a %d-d shape", c->name,
                        ad_shape_str(x, a, sizeof a), o->ndim);
  }
  o->dtype = x->dtype;
  return AD_OK;
}

/* Rows [b, e) of an expand: out's rows of it.len elements, each a copy of
 * x's row (s = 1) or one element of x repeated (s = 0). Copies only, so a
 * split over threads changes no bit. */
typedef struct expand_job {
  const ad_call *c;
  ad_bc_rows it;
  int64_t s;
} expand_job;

static void expand_rows(void *ud, int64_t b, int64_t e) {
  const expand_job *j = ud;
  const ad_tensor *out = j->c->out;
  size_t es = ad_dsize(out->dtype);
  /* row b's index per outer dim and offset in x, then the next row's by
   * adding strides (an odometer) */
  if (b >= e) return; /* none (an empty out: one of its dims may be 0) */
  const int64_t *st = j->it.st[0];
  int64_t idx[AD_MAX_DIMS], off = 0, q = b, len = j->it.len;
  for (int d = j->it.nd - 1; d >= 0; d--) {
    idx[d] = q % out->shape[d];
    q /= out->shape[d];
    off += idx[d] * st[d];
  }
  for (int64_t r = b; r < e; r++) {
    if (r > b)
      for (int d = j->it.nd - 1; d >= 0; d--) {
        off += st[d];
        if (++idx[d] < out->shape[d]) break;
        off -= st[d] * out->shape[d];
        idx[d] = 0;
      }
    char *dst = (char *)out->data + (size_t)(r * len) * es;
    const char *src = (const char *)j->c->in[0]->data + (size_t)off * es;
    if (j->s == 1) {
      copy_bytes(dst, src, (size_t)len * es);
    } else if (out->dtype == AD_F64) {
      double v;
      memcpy(&v, src, sizeof v);
      for (int64_t i = 0; i < len; i++) ((double *)dst)[i] = v;
    } else if (es == 4) {
      uint32_t v; /* f32 and i32: the bits */
      memcpy(&v, src, sizeof v);
      for (int64_t i = 0; i < len; i++) memcpy(dst + (size_t)i * 4, &v, 4);
    } else {
      for (int64_t i = 0; i < len; i++) memcpy(dst + (size_t)i * es, src, es);
    }
  }
}

/* Elements [b, e) of an expand of one element: a fill of the flat out. */
static void expand_fill(void *ud, int64_t b, int64_t e) {
  const ad_call *c = ud;
  const ad_tensor *out = c->out;
  size_t es = ad_dsize(out->dtype);
  if (es == 8) {
    uint64_t v; /* f64: the bits */
    memcpy(&v, c->in[0]->data, sizeof v);
    uint64_t *d = out->data;
    for (int64_t i = b; i < e; i++) d[i] = v;
  } else if (es == 4) {
    uint32_t v; /* f32 and i32: the bits */
    memcpy(&v, c->in[0]->data, sizeof v);
    uint32_t *d = out->data;
    for (int64_t i = b; i < e; i++) d[i] = v;
  } else {
    for (int64_t i = b; i < e; i++) memcpy((char *)out->data + (size_t)i * es, c->in[0]->data, es);
  }
}

static void expand_fwd(const ad_call *c) {
  ad_tensor *out = c->out;
  if (c->in[0]->size == 1) { /* one element repeated (nn's temporaries): a flat fill */
    if (out->size <= 32768)
      expand_fill((void *)c, 0, out->size);
    else
      ad_parallel_for(out->size, 32768, expand_fill, (void *)c);
    return;
  }
  expand_job j = {.c = c};
  ad_bc_init(&j.it, 1, c->in, out);
  ad_bc_merge(&j.it, out); /* rows as long as x's layout allows */
  j.s = out->ndim ? j.it.st[0][out->ndim - 1] : 0;
  int64_t grain = j.it.len ? (32768 + j.it.len - 1) / j.it.len : j.it.rows;
  if (j.it.rows <= grain)
    expand_rows(&j, 0, j.it.rows);
  else
    ad_parallel_for(j.it.rows, grain, expand_rows, &j);
}

static ad_status expand_bwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  return ad_call_set_grad(c, 0, ad_sum_to(c->ctx, c->gout, x->ndim, x->shape));
}

ad_tensor *ad_expand(ad_ctx *ctx, ad_tensor *x, int ndim, const int64_t *shape) {
  if (!ctx) return NULL;
  if (ndim < 0 || ndim > AD_MAX_DIMS || (ndim && !shape)) {
    ad_set_error(ctx, AD_ERR_ARG, "expand: ndim %d out of range", ndim);
    return NULL;
  }
  ad_attrs at = shape_to_attrs(ndim, shape);
  return ad_apply1(ctx, AD_OP_EXPAND, x, &at);
}

static int expand_sample(const ad_sample_call *s) {
  if (s->variant > 1) return 0;
  int64_t sx[2] = {3, 1}, t[3] = {2, 3, 4};
  *s->attrs = shape_to_attrs(3, t);
  return (s->in[0] = ad_sample_tensor(s, s->variant ? 0 : 2, sx, -1, 1, true)) ? 1 : -1;
}

const ad_op_def ad_def_expand = {
    .name = "expand",
    .arity = 1,
    .attrs = AD_ATTRS_SHAPE,
    .shape = expand_shape,
    .forward = expand_fwd,
    .backward = expand_bwd,
    .sample = expand_sample,
    .math = "y = broadcast x to shape dims",
    .inputs = {"x"},
    .grads = {"sum_to(dy, shape(x))"},
};

/* --------------------------------------------------------------- sum_to */

static ad_status sum_to_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  ad_tensor *o = c->out;
  ad_status st = ad_check_float_same(c->ctx, c->name, 1, c->in); /* its loops are float's */
  if (st != AD_OK) return st;
  if ((st = target_shape(c)) != AD_OK) return st;
  int64_t b[AD_MAX_DIMS];
  int nb;
  bool ok = ad_broadcast_shape(x->ndim, x->shape, o->ndim, o->shape, &nb, b) && nb == x->ndim;
  for (int k = 0; ok && k < nb; k++) ok = b[k] == x->shape[k];
  if (!ok) {
    char a[64];
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: a %d-d shape does not broadcast to %s", c->name,
                        o->ndim, ad_shape_str(x, a, sizeof a));
  }
  o->dtype = x->dtype;
  return AD_OK;
}

/* sum_to where every row of x adds into all of out ([R,C] -> [C], a bias
 * gradient): columns [b, e) of every row, the rows in a fixed order, so a
 * split over columns changes no result. float32 columns are
 * summed in double, a block of SUM_COLS_BLK at a time (four rows added
 * in pairs, then into the block's sums), and rounded once:
 * a float running sum over a few hundred rows drifts by several ulp (more
 * than PyTorch's cascaded sum), a double one cannot at these sizes. */
typedef struct cols_job {
  const ad_tensor *x;
  ad_tensor *out;
  int64_t rows, len;
} cols_job;

enum { SUM_COLS_BLK = 256 };

/* Columns [b, e) of the rows x rows of len at X (x's dtype) summed into
 * Y (out's first element there): sum_cols' work on one block. */
static void sum_cols_of(const ad_tensor *x, const void *X, void *Y, int64_t rows, int64_t L,
                        int64_t b, int64_t e) {
  if (x->dtype == AD_F32) {
    for (int64_t c0 = b; c0 < e; c0 += SUM_COLS_BLK) {
      int64_t n = e - c0 < SUM_COLS_BLK ? e - c0 : SUM_COLS_BLK;
      double acc[SUM_COLS_BLK] = {0};
      const float *X0 = (const float *)X + c0;
      int64_t r = 0;
      for (; r + 4 <= rows; r += 4) { /* four rows per pass over acc */
        const float *Xr = X0 + r * L;
        for (int64_t i = 0; i < n; i++)
          acc[i] += ((double)Xr[i] + Xr[L + i]) + ((double)Xr[2 * L + i] + Xr[3 * L + i]);
      }
      for (; r < rows; r++)
        for (int64_t i = 0; i < n; i++) acc[i] += X0[r * L + i];
      float *Yc = (float *)Y + c0;
      for (int64_t i = 0; i < n; i++) Yc[i] = (float)acc[i];
    }
    return;
  }
  double *Yd = Y;
  for (int64_t i = b; i < e; i++) Yd[i] = 0;
  for (int64_t r = 0; r < rows; r++) {
    const double *Xr = (const double *)X + r * L;
    for (int64_t i = b; i < e; i++) Yd[i] += Xr[i];
  }
}

static void sum_cols(void *ud, int64_t b, int64_t e) {
  const cols_job *j = ud;
  sum_cols_of(j->x, j->x->data, j->out->data, j->rows, j->len, b, e);
}

/* sum_to of x seen as [A, R, L] into [A, L] (the axes of R summed between
 * kept ones: the gradient of pairwise differences [N, 1, D] - [1, M, D]
 * for the first operand): each block a of R rows summed as sum_cols sums
 * its rows. Over out's A L elements by offset; each element is one
 * thread's, so the bits do not depend on the thread count. */
typedef struct sum_blocks_job {
  const ad_tensor *x;
  ad_tensor *out;
  int64_t r, l; /* R and L */
} sum_blocks_job;

static void sum_blocks(void *ud, int64_t b, int64_t e) {
  const sum_blocks_job *j = ud;
  size_t es = ad_dsize(j->x->dtype);
  for (int64_t a = b / j->l, i = b; i < e; a++) {
    int64_t c0 = i - a * j->l, c1 = e - a * j->l < j->l ? e - a * j->l : j->l;
    sum_cols_of(j->x, (const char *)j->x->data + (size_t)(a * j->r * j->l) * es,
                (char *)j->out->data + (size_t)(a * j->l) * es, j->r, j->l, c0, c1);
    i += c1 - c0;
  }
}

/* Whether x's axes, those of size 1 aside, are a run kept in out, a run
 * summed, and a run kept: then *a, *r, *l are their products. */
static bool sum_to_blocks(const ad_tensor *x, const ad_tensor *out, int64_t *a, int64_t *r,
                          int64_t *l) {
  int lead = x->ndim - out->ndim, part = 0; /* 0: first kept run, 1: summed, 2: last kept */
  *a = *r = *l = 1;
  for (int k = 0; k < x->ndim; k++) {
    int64_t xd = x->shape[k], od = k < lead ? 1 : out->shape[k - lead];
    if (xd == 1) continue;
    bool kept = od == xd;
    if (part == 0 && !kept)
      part = 1;
    else if (part == 1 && kept)
      part = 2;
    else if (part == 2 && !kept)
      return false;
    *(part == 0 ? a : part == 1 ? r : l) *= xd;
  }
  return part == 2 && *a > 1 && x->size > 0;
}

/* The sum of a row of n values in 8 interleaved partial sums in double,
 * added in a fixed order: a row reduced to one value (a channel's sum: the
 * bias gradient of a convolution) runs at the adder's throughput, not its
 * latency, gives the same bits on every run, and a float32 row is not
 * rounded on the way. */
#define SUM_ROW_FN(NAME, T)                                                                        \
  static double NAME(const T *x, int64_t n) {                                                      \
    double acc[8] = {0};                                                                           \
    int64_t i = 0;                                                                                 \
    for (; i + 8 <= n; i += 8) AD_UNROLL_FULL for (int k = 0; k < 8; k++) acc[k] += x[i + k];      \
    for (int k = 0; i < n; i++, k++) acc[k] += x[i];                                               \
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));      \
  }
SUM_ROW_FN(sum_row_f32, float)
SUM_ROW_FN(sum_row_f64, double)

/* sum_to of x seen as [A, C, B] into the C kept elements (a convolution's
 * bias gradient: [N, C, H, W] -> [C, 1, 1]): out[c] = sum over a, in
 * order, of the sum of the row x[a, c, :] (sum_row). Each element is one
 * thread's, so the bits do not depend on the thread count. */
typedef struct mid_job {
  const ad_tensor *x;
  ad_tensor *out;
  int64_t a, c, b;
} mid_job;

static void sum_mid(void *ud, int64_t begin, int64_t end) {
  const mid_job *j = ud;
  for (int64_t c = begin; c < end; c++) {
    if (j->x->dtype == AD_F32) {
      const float *X = (const float *)j->x->data + c * j->b;
      double acc = 0; /* rounded once */
      for (int64_t a = 0; a < j->a; a++) acc += sum_row_f32(X + a * j->c * j->b, j->b);
      ((float *)j->out->data)[c] = (float)acc;
    } else {
      const double *X = (const double *)j->x->data + c * j->b;
      double acc = 0;
      for (int64_t a = 0; a < j->a; a++) acc += sum_row_f64(X + a * j->c * j->b, j->b);
      ((double *)j->out->data)[c] = acc;
    }
  }
}

/* Whether out keeps one run of x's axes whole and sums the axes before
 * and after it, the run not the last axis (the caller's row walk handles
 * that): then *a, *cc, *b are the products of the axes before, in and
 * after the run. */
static bool sum_to_mid(const ad_tensor *x, const ad_tensor *out, int64_t *a, int64_t *cc,
                       int64_t *b) {
  int lead = x->ndim - out->ndim, k0 = -1, k1 = -1;
  if (x->size == 0) return false; /* nothing to sum: the zero fill below */
  for (int k = 0; k < x->ndim; k++) {
    int64_t od = k < lead ? 1 : out->shape[k - lead];
    if (od == x->shape[k] && od > 1) {
      if (k1 >= 0 && k1 != k) return false; /* a second run */
      if (k0 < 0) k0 = k;
      k1 = k + 1;
    } else if (od != 1) {
      return false;
    }
  }
  if (k0 < 0 || k1 == x->ndim) return false;
  *a = *cc = *b = 1;
  for (int k = 0; k < x->ndim; k++) *(k < k0 ? a : k < k1 ? cc : b) *= x->shape[k];
  return *b > 1;
}

static void sum_to_fwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  ad_tensor *out = c->out;
  mid_job mj = {x, out, 1, 1, 1};
  if (sum_to_mid(x, out, &mj.a, &mj.c, &mj.b)) {
    int64_t grain = (32768 + mj.a * mj.b - 1) / (mj.a * mj.b);
    ad_parallel_for(mj.c, grain, sum_mid, &mj);
    return;
  }
  sum_blocks_job bj = {x, out, 1, 1};
  int64_t na;
  if (sum_to_blocks(x, out, &na, &bj.r, &bj.l)) {
    int64_t grain = (32768 + bj.r - 1) / bj.r; /* of out's elements */
    if (na * bj.l <= grain)
      sum_blocks(&bj, 0, na * bj.l);
    else
      ad_parallel_for(na * bj.l, grain, sum_blocks, &bj);
    return;
  }
  memset(out->data, 0, (size_t)out->size * ad_dsize(out->dtype));
  /* walk x row by row; out is seen through x's shape */
  ad_bc_rows it;
  ad_bc_init(&it, 1, &c->out, x);
  /* merged rows: [N, H, T, T] -> [T, T] is rows of T T (the column sums
   * below), anything -> [1] one row (summed once) */
  ad_bc_merge(&it, x);
  int64_t s = x->ndim ? it.st[0][x->ndim - 1] : 0;
  if (s == 1 && out->size == it.len) {
    cols_job j = {x, out, it.rows, it.len};
    int64_t grain = it.rows ? (32768 + it.rows - 1) / it.rows : it.len;
    if (it.len < 64 || it.len <= grain)
      sum_cols(&j, 0, it.len);
    else
      ad_parallel_for(it.len, grain, sum_cols, &j);
    return;
  }
  for (int64_t r = 0; r < it.rows; r++) {
    int64_t off;
    ad_bc_row(&it, x, r, &off);
    if (x->dtype == AD_F32) {
      const float *X = (const float *)x->data + r * it.len;
      float *Y = (float *)out->data + off;
      if (s == 0)
        Y[0] = (float)((double)Y[0] + sum_row_f32(X, it.len));
      else
        for (int64_t i = 0; i < it.len; i++) Y[i * s] += X[i];
    } else {
      const double *X = (const double *)x->data + r * it.len;
      double *Y = (double *)out->data + off;
      if (s == 0)
        Y[0] += sum_row_f64(X, it.len);
      else
        for (int64_t i = 0; i < it.len; i++) Y[i * s] += X[i];
    }
  }
}

static ad_status sum_to_bwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  return ad_call_set_grad(c, 0, ad_expand(c->ctx, c->gout, x->ndim, x->shape));
}

ad_tensor *ad_sum_to(ad_ctx *ctx, ad_tensor *x, int ndim, const int64_t *shape) {
  if (!ctx) return NULL;
  if (ndim < 0 || ndim > AD_MAX_DIMS || (ndim && !shape)) {
    ad_set_error(ctx, AD_ERR_ARG, "sum_to: ndim %d out of range", ndim);
    return NULL;
  }
  ad_attrs at = shape_to_attrs(ndim, shape);
  return ad_apply1(ctx, AD_OP_SUM_TO, x, &at);
}

static int sum_to_sample(const ad_sample_call *s) {
  int v = s->variant;
  if (v > 2) return 0;
  int64_t sx[3] = {2, 3, 4}, t[3][2] = {{3, 1}, {4, 0}, {0, 0}};
  *s->attrs = shape_to_attrs(2 - v, t[v]);
  return (s->in[0] = ad_sample_tensor(s, 3, sx, -1, 1, true)) ? 1 : -1;
}

const ad_op_def ad_def_sum_to = {
    .name = "sum_to",
    .arity = 1,
    .attrs = AD_ATTRS_SHAPE,
    .shape = sum_to_shape,
    .forward = sum_to_fwd,
    .backward = sum_to_bwd,
    .sample = sum_to_sample,
    .math = "y = x summed over broadcast dims down to shape dims",
    .inputs = {"x"},
    .grads = {"expand(dy, shape(x))"},
};

/* --------------------------------------------------------------- narrow */

/* The first index taken along an axis of length n: as torch.narrow, a
 * start in -n..-1 counts from the end. */
static int64_t narrow_start(const ad_narrow_attrs *at, int64_t n) {
  return at->start < 0 ? at->start + n : at->start;
}

static ad_status narrow_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  const ad_narrow_attrs *at = &c->attrs->narrow;
  int ax;
  ad_status st = axis_arg(c, at->axis, &ax);
  if (st != AD_OK) return st;
  /* start + len is never formed: it may overflow */
  int64_t n = x->shape[ax];
  if (at->start < -n || at->start > n || at->len < 0 || at->len > n - narrow_start(at, n)) {
    char a[64];
    return ad_set_error(c->ctx, AD_ERR_ARG,
                        "%s: start %lld, length %lld is outside 0..%lld of axis %d of %s (a "
                        "negative start counts from the end)",
                        c->name, (long long)at->start, (long long)at->len, (long long)n, ax,
                        ad_shape_str(x, a, sizeof a));
  }
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  c->out->shape[ax] = at->len;
  c->out->dtype = x->dtype;
  return AD_OK;
}

static void narrow_fwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  const ad_narrow_attrs *at = &c->attrs->narrow;
  int ax = ad_norm_axis(at->axis, x->ndim);
  copy_axis(x, x->shape[ax], narrow_start(at, x->shape[ax]), c->out, at->len, 0, at->len,
            ad_dims_span(x, 0, ax), ad_dims_span(x, ax + 1, x->ndim));
}

static ad_status narrow_bwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  const ad_narrow_attrs *at = &c->attrs->narrow;
  int ax = ad_norm_axis(at->axis, x->ndim);
  int64_t start = narrow_start(at, x->shape[ax]);
  return ad_call_set_grad(c, 0, ad_pad(c->ctx, c->gout, ax, start, x->shape[ax] - start - at->len));
}

ad_tensor *ad_narrow(ad_ctx *ctx, ad_tensor *x, int axis, int64_t start, int64_t len) {
  ad_attrs at = {.narrow = {.axis = axis, .start = start, .len = len}};
  return ad_apply1(ctx, AD_OP_NARROW, x, &at);
}

static int narrow_sample(const ad_sample_call *s) {
  int v = s->variant;
  if (v > 1) return 0;
  int64_t sx[2] = {4, 5};
  s->attrs->narrow = (ad_narrow_attrs){.axis = v ? -1 : 0, .start = 1, .len = v ? 3 : 2};
  return (s->in[0] = ad_sample_tensor(s, 2, sx, -1, 1, true)) ? 1 : -1;
}

const ad_op_def ad_def_narrow = {
    .name = "narrow",
    .arity = 1,
    .attrs = AD_ATTRS_NARROW,
    .shape = narrow_shape,
    .forward = narrow_fwd,
    .backward = narrow_bwd,
    .sample = narrow_sample,
    .math = "y = x[.., start:start+len, ..] on axis",
    .inputs = {"x"},
    .grads = {"pad(dy, axis, start, n - start - len), n = x's length on axis"},
};

/* ------------------------------------------------------------------ pad */

static ad_status pad_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  const ad_pad_attrs *at = &c->attrs->pad;
  int ax;
  ad_status st = axis_arg(c, at->axis, &ax);
  if (st != AD_OK) return st;
  if (at->before < 0 || at->after < 0)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: negative padding %lld, %lld", c->name,
                        (long long)at->before, (long long)at->after);
  if (at->before > AD_MAX_ELEMS || at->after > AD_MAX_ELEMS) /* the sum below cannot overflow */
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: padding %lld, %lld is more than 2^40", c->name,
                        (long long)at->before, (long long)at->after);
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  c->out->shape[ax] += at->before + at->after;
  c->out->dtype = x->dtype;
  return AD_OK;
}

/* pad's work over elements [b, e) of out, whose rows (one outer index)
 * are lo zeros, mid elements of x's row, then zeros: dealt by out's
 * element offset like the elementwise ops (narrow's backward pads the
 * gradient they just wrote; zeroing all of out on the caller first, then
 * copying on the threads, was no faster on two threads than on one). */
typedef struct pad1_job {
  const char *src;
  char *dst;
  size_t es;
  int64_t row, lo, mid; /* in elements */
} pad1_job;

/* rows whole rows of pad's out (row bytes each: lo zero bytes, mid of
 * src's row, then zeros), the sizes held in registers (a store through
 * char * would make the compiler reload a job's fields). */
static void pad_rows(char *d, const char *s, int64_t rows, size_t lo, size_t mid, size_t row) {
  if (row < 64) { /* short rows: all zeros, then the copies */
    memset(d, 0, (size_t)rows * row);
    for (int64_t r = 0; r < rows; r++, d += row, s += mid) copy_bytes(d + lo, s, mid);
    return;
  }
  for (int64_t r = 0; r < rows; r++, d += row, s += mid) {
    zero_bytes(d, lo);
    copy_bytes(d + lo, s, mid);
    zero_bytes(d + lo + mid, row - lo - mid);
  }
}

static void pad_range(void *ud, int64_t b, int64_t e) {
  const pad1_job *j = ud;
  if (b >= e) return;
  int64_t o = b / j->row, p = b - o * j->row; /* then carried: one division per range */
  for (int64_t i = b, n; i < e; i += n) {
    if (p == 0 && e - i >= j->row) { /* whole rows: their three parts without the span tests */
      int64_t rows = (e - i) / j->row;
      pad_rows(j->dst + (size_t)i * j->es, j->src + (size_t)(o * j->mid) * j->es, rows,
               (size_t)j->lo * j->es, (size_t)j->mid * j->es, (size_t)j->row * j->es);
      n = rows * j->row, o += rows;
      continue;
    }
    int64_t stop = p < j->lo ? j->lo : p < j->lo + j->mid ? j->lo + j->mid : j->row;
    n = stop - p < e - i ? stop - p : e - i;
    if (p >= j->lo && p < j->lo + j->mid)
      copy_bytes(j->dst + (size_t)i * j->es, j->src + (size_t)(o * j->mid + p - j->lo) * j->es,
                 (size_t)n * j->es);
    else
      zero_bytes(j->dst + (size_t)i * j->es, (size_t)n * j->es);
    if ((p += n) == j->row) p = 0, o++;
  }
}

static void pad_fwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  ad_tensor *out = c->out;
  int ax = ad_norm_axis(c->attrs->pad.axis, x->ndim);
  int64_t inner = ad_dims_span(x, ax + 1, x->ndim);
  pad1_job j = {x->data,
                out->data,
                ad_dsize(out->dtype),
                out->shape[ax] * inner,
                c->attrs->pad.before * inner,
                x->shape[ax] * inner};
  if (out->size <= 32768)
    pad_range(&j, 0, out->size);
  else
    ad_parallel_for(out->size, 32768, pad_range, &j);
}

static ad_status pad_bwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  int ax = ad_norm_axis(c->attrs->pad.axis, x->ndim);
  return ad_call_set_grad(c, 0, ad_narrow(c->ctx, c->gout, ax, c->attrs->pad.before, x->shape[ax]));
}

ad_tensor *ad_pad(ad_ctx *ctx, ad_tensor *x, int axis, int64_t before, int64_t after) {
  ad_attrs at = {.pad = {.axis = axis, .before = before, .after = after}};
  return ad_apply1(ctx, AD_OP_PAD, x, &at);
}

static int pad_sample(const ad_sample_call *s) {
  if (s->variant > 1) return 0;
  int64_t sx[2] = {3, 2};
  s->attrs->pad = (ad_pad_attrs){.axis = s->variant, .before = 1, .after = 2};
  return (s->in[0] = ad_sample_tensor(s, 2, sx, -1, 1, true)) ? 1 : -1;
}

const ad_op_def ad_def_pad = {
    .name = "pad",
    .arity = 1,
    .attrs = AD_ATTRS_PAD,
    .shape = pad_shape,
    .forward = pad_fwd,
    .backward = pad_bwd,
    .sample = pad_sample,
    .math = "y = [0]*before ++ x ++ [0]*after on axis",
    .inputs = {"x"},
    .grads = {"narrow(dy, axis, before, n), n = x's length on axis"},
};

/* --------------------------------------------------- pad_nd (F.pad's modes) */

/* The geometry of a pad_nd call: axis a = 0 is the last axis (F.pad's
 * order); d[a] its length in x, lo[a] and hi[a] the amounts, m[a] = d[a] +
 * lo[a] + hi[a] its length in y; outer the product of the unpadded axes. */
typedef struct pad_geom {
  int n;
  ad_pad_mode mode;
  int64_t d[3], lo[3], hi[3], m[3], outer;
} pad_geom;

/* xs: the tensor on the x side (x for pad_nd, the result for its
 * backward); ys: the y side. */
static pad_geom pad_geom_of(const ad_pad_nd_attrs *at, const ad_tensor *xs) {
  pad_geom g = {.n = at->n, .mode = at->mode, .outer = 1};
  for (int a = 0; a < g.n; a++) {
    g.d[a] = xs->shape[xs->ndim - 1 - a];
    g.lo[a] = at->pad[2 * a], g.hi[a] = at->pad[2 * a + 1];
    g.m[a] = g.d[a] + g.lo[a] + g.hi[a];
  }
  for (int k = 0; k < xs->ndim - g.n; k++) g.outer *= xs->shape[k];
  return g;
}

/* The element of x that output j of axis a reads, or -1 for the constant. */
static inline int64_t pad_src(const pad_geom *g, int a, int64_t j) {
  int64_t i = j - g->lo[a], d = g->d[a];
  if (i >= 0 && i < d) return i;
  switch (g->mode) {
  case AD_PAD_REFLECT:
    return i < 0 ? -i : 2 * (d - 1) - i;
  case AD_PAD_REPLICATE:
    return i < 0 ? 0 : d - 1;
  case AD_PAD_CIRCULAR:
    return i < 0 ? i + d : i - d;
  default:
    return -1;
  }
}

/* Checks the attributes against the x-side shape xs (n, amounts, mode),
 * naming the op. */
static ad_status pad_nd_check(const ad_call *c, const ad_pad_nd_attrs *at, const ad_tensor *xs) {
  char a[64];
  if (at->n < 1 || at->n > 3 || at->n > xs->ndim)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: %d padded axes for %s; 1..3 and at most its ndim",
                        c->name, at->n, ad_shape_str(xs, a, sizeof a));
  if ((unsigned)at->mode > AD_PAD_CIRCULAR)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: unknown mode %d", c->name, (int)at->mode);
  if (at->mode == AD_PAD_CONSTANT && xs->dtype == AD_F32 && isfinite(at->value) &&
      fabs(at->value) > FLT_MAX)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: value %.9g is outside float32's range", c->name,
                        at->value);
  for (int k = 0; k < at->n; k++) {
    int64_t lo = at->pad[2 * k], hi = at->pad[2 * k + 1], d = xs->shape[xs->ndim - 1 - k];
    const char *bad = NULL;
    if (lo < 0 || hi < 0)
      return ad_set_error(c->ctx, AD_ERR_ARG,
                          "%s: negative padding (%lld, %lld) of axis %d (crop with narrow)",
                          c->name, (long long)lo, (long long)hi, xs->ndim - 1 - k);
    if (lo > AD_MAX_ELEMS || hi > AD_MAX_ELEMS)
      bad = "is more than 2^40";
    else if (at->mode == AD_PAD_REFLECT && (lo || hi) && (lo >= d || hi >= d))
      bad = "must be less than the axis length in mode reflect";
    else if (at->mode == AD_PAD_REPLICATE && (lo || hi) && d == 0)
      bad = "pads an empty axis, which mode replicate cannot";
    else if (at->mode == AD_PAD_CIRCULAR && (lo > d || hi > d))
      bad = "must be at most the axis length in mode circular";
    if (bad)
      return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: input %s: padding (%lld, %lld) of axis %d %s",
                          c->name, ad_shape_str(xs, a, sizeof a), (long long)lo, (long long)hi,
                          xs->ndim - 1 - k, bad);
  }
  return AD_OK;
}

static ad_status pad_nd_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  const ad_pad_nd_attrs *at = &c->attrs->pad_nd;
  ad_status st = ad_check_float_same(c->ctx, c->name, 1, c->in);
  if (st == AD_OK) st = pad_nd_check(c, at, x);
  if (st != AD_OK) return st;
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  for (int k = 0; k < at->n; k++)
    c->out->shape[x->ndim - 1 - k] += at->pad[2 * k] + at->pad[2 * k + 1];
  c->out->dtype = x->dtype;
  return AD_OK;
}

typedef struct pad_job {
  pad_geom g;
  const void *src;
  void *dst;
  double value;
  size_t es; /* the element's size (pad_crop_rows) */
} pad_job;

/* Output rows [b, e) of pad_nd: row r is (o, j[n-1], ..., j[1]) over the
 * outer and the padded axes but the last; each row is one row of x (or
 * the value) along the last axis, its borders filled by the mode. */
#define PAD_ROWS(T)                                                                                \
  static void pad_rows_##T(void *ud, int64_t b, int64_t e) {                                       \
    const pad_job *j = ud;                                                                         \
    const pad_geom *g = &j->g;                                                                     \
    const T *x = j->src;                                                                           \
    T *y = j->dst;                                                                                 \
    const T v = (T)j->value;                                                                       \
    int64_t d0 = g->d[0], lo0 = g->lo[0], m0 = g->m[0];                                            \
    for (int64_t r = b; r < e; r++) {                                                              \
      T *yr = y + r * m0;                                                                          \
      int64_t rest = r, src = 0, mul = 1, outside = 0;                                             \
      for (int a = 1; a < g->n; a++) {                                                             \
        int64_t s = pad_src(g, a, rest % g->m[a]);                                                 \
        rest /= g->m[a];                                                                           \
        outside |= s < 0;                                                                          \
        src += s * mul, mul *= g->d[a];                                                            \
      }                                                                                            \
      if (outside) {                                                                               \
        for (int64_t i = 0; i < m0; i++) yr[i] = v;                                                \
        continue;                                                                                  \
      }                                                                                            \
      const T *xr = x + (rest * mul + src) * d0;                                                   \
      for (int64_t i = 0; i < lo0; i++) {                                                          \
        int64_t s = pad_src(g, 0, i);                                                              \
        yr[i] = s < 0 ? v : xr[s];                                                                 \
      }                                                                                            \
      memcpy(yr + lo0, xr, (size_t)d0 * sizeof(T));                                                \
      for (int64_t i = lo0 + d0; i < m0; i++) {                                                    \
        int64_t s = pad_src(g, 0, i);                                                              \
        yr[i] = s < 0 ? v : xr[s];                                                                 \
      }                                                                                            \
    }                                                                                              \
  }
PAD_ROWS(float)
PAD_ROWS(double)

/* Row r's index along the padded axes 1..n-1 (len[a] long; axis 1 the
 * fastest) and over the outer ones, then the next row's by counting. */
static void pad_coords(const pad_geom *g, const int64_t *len, int64_t r, int64_t *j, int64_t *o) {
  for (int a = 1; a < g->n; a++) j[a] = r % len[a], r /= len[a];
  *o = r;
}
static inline void pad_next(const pad_geom *g, const int64_t *len, int64_t *j, int64_t *o) {
  for (int a = 1; a < g->n; a++) {
    if (++j[a] < len[a]) return;
    j[a] = 0;
  }
  ++*o;
}

/* pad_nd's rows [b, e) in mode constant (PAD_ROWS's, found by counting
 * rather than by a division per axis per row, and without the modes'
 * border rule): a row outside x along an axis but the last is the value,
 * any other is x's row between the value's borders. */
#define PAD_CONST_ROWS(T)                                                                          \
  static void pad_const_rows_##T(void *ud, int64_t b, int64_t e) {                                 \
    const pad_job *jb = ud;                                                                        \
    const pad_geom *g = &jb->g;                                                                    \
    const T *x = jb->src;                                                                          \
    T *y = jb->dst;                                                                                \
    const T v = (T)jb->value;                                                                      \
    int64_t d0 = g->d[0], lo0 = g->lo[0], m0 = g->m[0], j[3] = {0}, o;                             \
    if (b >= e) return;                                                                            \
    pad_coords(g, g->m, b, j, &o);                                                                 \
    for (int64_t r = b; r < e; r++, pad_next(g, g->m, j, &o)) {                                    \
      T *yr = y + r * m0;                                                                          \
      int64_t src = o;                                                                             \
      bool outside = false;                                                                        \
      for (int a = g->n - 1; a >= 1; a--) {                                                        \
        int64_t i = j[a] - g->lo[a];                                                               \
        outside |= i < 0 || i >= g->d[a];                                                          \
        src = src * g->d[a] + i;                                                                   \
      }                                                                                            \
      if (outside) {                                                                               \
        for (int64_t i = 0; i < m0; i++) yr[i] = v;                                                \
        continue;                                                                                  \
      }                                                                                            \
      for (int64_t i = 0; i < lo0; i++) yr[i] = v;                                                 \
      copy_bytes((char *)(yr + lo0), (const char *)(x + src * d0), (size_t)d0 * sizeof(T));        \
      for (int64_t i = lo0 + d0; i < m0; i++) yr[i] = v;                                           \
    }                                                                                              \
  }
PAD_CONST_ROWS(float)
PAD_CONST_ROWS(double)

/* Runs fn over rows of len elements each, on the library's threads from
 * 32K elements. */
static void pad_for(int64_t rows, int64_t len, void (*fn)(void *, int64_t, int64_t), void *job) {
  int64_t grain = len >= 32768 ? 1 : 32768 / (len ? len : 1);
  if (rows <= grain)
    fn(job, 0, rows);
  else
    ad_parallel_for(rows, grain, fn, job);
}

static void pad_nd_fwd(const ad_call *c) {
  pad_job j = {pad_geom_of(&c->attrs->pad_nd, c->in[0]), c->in[0]->data, c->out->data,
               c->attrs->pad_nd.value, ad_dsize(c->out->dtype)};
  if (c->out->size == 0) return;
  int64_t rows = c->out->size / j.g.m[0];
  bool cst = j.g.mode == AD_PAD_CONSTANT, f32 = c->out->dtype == AD_F32;
  pad_for(rows, j.g.m[0],
          cst ? (f32 ? pad_const_rows_float : pad_const_rows_double)
              : (f32 ? pad_rows_float : pad_rows_double),
          &j);
}

static ad_tensor *pad_nd_backward_of(ad_ctx *ctx, ad_tensor *dy, const ad_pad_nd_attrs *at);
static void pad_back_rows_float(void *ud, int64_t b, int64_t e);
static void pad_back_rows_double(void *ud, int64_t b, int64_t e);

/* pad_nd_backward's rows [b, e) of dx in mode constant, where each
 * element of dx is read by one of y (PAD_BACK_ROWS's sum of one term):
 * its row of dy without the borders, found by counting. */
static void pad_crop_rows(void *ud, int64_t b, int64_t e) {
  const pad_job *jb = ud;
  const pad_geom *g = &jb->g;
  int64_t d0 = g->d[0], j[3] = {0}, o;
  if (b >= e) return;
  pad_coords(g, g->d, b, j, &o);
  for (int64_t r = b; r < e; r++, pad_next(g, g->d, j, &o)) {
    int64_t row = o;
    for (int a = g->n - 1; a >= 1; a--) row = row * g->m[a] + j[a] + g->lo[a];
    copy_bytes((char *)jb->dst + (size_t)(r * d0) * jb->es,
               (const char *)jb->src + (size_t)(row * g->m[0] + g->lo[0]) * jb->es,
               (size_t)d0 * jb->es);
  }
}

/* Runs pad_nd_backward's rows from dy into dx (x's shape). */
static void pad_back(const ad_pad_nd_attrs *at, const ad_tensor *dy, ad_tensor *dx) {
  pad_job j = {pad_geom_of(at, dx), dy->data, dx->data, 0, ad_dsize(dx->dtype)};
  if (dx->size == 0) return;
  pad_for(dx->size / j.g.d[0], j.g.m[0],
          at->mode == AD_PAD_CONSTANT ? pad_crop_rows
          : dx->dtype == AD_F32       ? pad_back_rows_float
                                      : pad_back_rows_double,
          &j);
}

/* x's first gradient of a pass straight into its buffer (the backward's
 * rows, written there rather than into a tensor then copied): the same
 * bits. An addition into a gradient already there is declined. */
static bool pad_nd_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  if (k != 0 || !overwrite) return false;
  pad_back(&c->attrs->pad_nd, c->gout, grad);
  return true;
}

static ad_status pad_nd_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(c, 0, pad_nd_backward_of(c->ctx, c->gout, &c->attrs->pad_nd));
}

ad_tensor *ad_pad_nd(ad_ctx *ctx, ad_tensor *x, int n, const int64_t *pad, ad_pad_mode mode,
                     double value) {
  if (!ctx) return NULL;
  if (!pad) {
    ad_set_error(ctx, AD_ERR_NULL, "pad_nd: pad is NULL");
    return NULL;
  }
  ad_attrs at = {.pad_nd = {.n = n, .mode = mode, .value = value}};
  for (int k = 0; k < 2 * n && k < 6; k++) at.pad_nd.pad[k] = pad[k];
  return ad_apply1(ctx, AD_OP_PAD_ND, x, &at);
}

/* Variants: each mode on [2,3,4] padding the last two axes, and reflect on
 * the last axis alone of a [3,5] input. */
static int pad_nd_sample(const ad_sample_call *s) {
  int v = s->variant;
  if (v > 4) return 0;
  int64_t s3[3] = {2, 3, 4}, s2[2] = {3, 5};
  if (v == 4) {
    s->attrs->pad_nd = (ad_pad_nd_attrs){.n = 1, .mode = AD_PAD_REFLECT, .pad = {2, 3}};
    return (s->in[0] = ad_sample_tensor(s, 2, s2, -1, 1, true)) ? 1 : -1;
  }
  s->attrs->pad_nd =
      (ad_pad_nd_attrs){.n = 2, .mode = (ad_pad_mode)v, .value = 0.5, .pad = {2, 1, 1, 2}};
  return (s->in[0] = ad_sample_tensor(s, 3, s3, -1, 1, true)) ? 1 : -1;
}

const ad_op_def ad_def_pad_nd = {
    .name = "pad_nd",
    .arity = 1,
    .attrs = AD_ATTRS_PAD_ND,
    .shape = pad_nd_shape,
    .forward = pad_nd_fwd,
    .backward = pad_nd_bwd,
    .grad_into = pad_nd_grad_into,
    .sample = pad_nd_sample,
    .math = "y = F.pad(x, pad, mode, value): each element of y one element of x or the value",
    .inputs = {"x"},
    .grads = {"pad_nd_backward(dy): dy of every element of y that reads an element of x, added"},
};

/* ------------------------------------------------------- pad_nd_backward */

static ad_status pad_nd_backward_shape(const ad_call *c) {
  const ad_tensor *dy = c->in[0];
  const ad_pad_nd_attrs *at = &c->attrs->pad_nd;
  char a[64];
  ad_status st = ad_check_float_same(c->ctx, c->name, 1, c->in);
  if (st != AD_OK) return st;
  if (at->n < 1 || at->n > 3 || at->n > dy->ndim)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: %d padded axes for %s; 1..3 and at most its ndim",
                        c->name, at->n, ad_shape_str(dy, a, sizeof a));
  c->out->ndim = dy->ndim;
  memcpy(c->out->shape, dy->shape, sizeof(int64_t) * (size_t)dy->ndim);
  c->out->dtype = dy->dtype;
  for (int k = 0; k < at->n; k++) {
    int64_t lo = at->pad[2 * k], hi = at->pad[2 * k + 1], *d = &c->out->shape[dy->ndim - 1 - k];
    if (lo < 0 || hi < 0 || lo > *d || hi > *d - lo)
      return ad_set_error(
          c->ctx, AD_ERR_SHAPE, "%s: padding (%lld, %lld) of axis %d does not fit the gradient %s",
          c->name, (long long)lo, (long long)hi, dy->ndim - 1 - k, ad_shape_str(dy, a, sizeof a));
    *d -= lo + hi;
  }
  return pad_nd_check(c, at, c->out);
}

/* Input rows [b, e) of pad_nd_backward: row r = (o, s[n-1], ..., s[1]) of
 * dx is the sum of the rows of dy that read it, over every combination of
 * the axes' outputs j[a] with pad_src(j[a]) = s[a], each axis's center
 * first, then its border in increasing order; within a row, each element
 * takes its center, then its border elements in increasing order. */
#define PAD_BACK_ROWS(T)                                                                           \
  static void pad_back_rows_##T(void *ud, int64_t b, int64_t e) {                                  \
    const pad_job *jb = ud;                                                                        \
    const pad_geom *g = &jb->g;                                                                    \
    const T *dy = jb->src;                                                                         \
    T *dx = jb->dst;                                                                               \
    int64_t d0 = g->d[0], lo0 = g->lo[0], m0 = g->m[0];                                            \
    for (int64_t r = b; r < e; r++) {                                                              \
      T *xr = dx + r * d0;                                                                         \
      int64_t s[3] = {0}, rest = r;                                                                \
      for (int a = 1; a < g->n; a++) s[a] = rest % g->d[a], rest /= g->d[a];                       \
      /* the combinations: per axis a >= 1, its outputs k[a] = -1 (the                             \
       * center) then 0 .. lo + hi - 1 over the border, skipping those                             \
       * that do not read s[a] */                                                                  \
      int64_t k[3] = {-1, -1, -1};                                                                 \
      bool first = true;                                                                           \
      for (;;) {                                                                                   \
        bool ok = true;                                                                            \
        int64_t row = rest;                                                                        \
        for (int a = g->n - 1; a >= 1; a--) {                                                      \
          int64_t j = k[a] < 0 ? g->lo[a] + s[a] : k[a] < g->lo[a] ? k[a] : g->d[a] + k[a];        \
          ok = ok && (k[a] < 0 || pad_src(g, a, j) == s[a]);                                       \
          row = row * g->m[a] + j;                                                                 \
        }                                                                                          \
        if (ok) {                                                                                  \
          const T *yr = dy + row * m0;                                                             \
          if (first)                                                                               \
            memcpy(xr, yr + lo0, (size_t)d0 * sizeof(T));                                          \
          else                                                                                     \
            for (int64_t i = 0; i < d0; i++) xr[i] += yr[lo0 + i];                                 \
          first = false;                                                                           \
          for (int64_t i = 0; i < lo0; i++) {                                                      \
            int64_t t = pad_src(g, 0, i);                                                          \
            if (t >= 0) xr[t] += yr[i];                                                            \
          }                                                                                        \
          for (int64_t i = lo0 + d0; i < m0; i++) {                                                \
            int64_t t = pad_src(g, 0, i);                                                          \
            if (t >= 0) xr[t] += yr[i];                                                            \
          }                                                                                        \
        }                                                                                          \
        /* next combination: axis 1 fastest */                                                     \
        int a = 1;                                                                                 \
        while (a < g->n) {                                                                         \
          int64_t nb = g->mode == AD_PAD_CONSTANT ? 0 : g->lo[a] + g->hi[a];                       \
          if (++k[a] < nb) break;                                                                  \
          k[a] = -1, a++;                                                                          \
        }                                                                                          \
        if (a >= g->n) break;                                                                      \
      }                                                                                            \
    }                                                                                              \
  }
PAD_BACK_ROWS(float)
PAD_BACK_ROWS(double)

static void pad_nd_backward_fwd(const ad_call *c) { pad_back(&c->attrs->pad_nd, c->in[0], c->out); }

static ad_status pad_nd_backward_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  const ad_pad_nd_attrs *at = &c->attrs->pad_nd;
  return ad_call_set_grad(c, 0, ad_pad_nd(c->ctx, c->gout, at->n, at->pad, at->mode, 0.0));
}

static ad_tensor *pad_nd_backward_of(ad_ctx *ctx, ad_tensor *dy, const ad_pad_nd_attrs *at) {
  ad_attrs a = {.pad_nd = *at};
  a.pad_nd.value = 0;
  return ad_apply1(ctx, AD_OP_PAD_ND_BACKWARD, dy, &a);
}

/* The gradient of pad_nd's samples' outputs. */
static int pad_nd_backward_sample(const ad_sample_call *s) {
  int v = s->variant;
  if (v > 4) return 0;
  int64_t s3[3] = {2, 6, 7}, s2[2] = {3, 10};
  if (v == 4) {
    s->attrs->pad_nd = (ad_pad_nd_attrs){.n = 1, .mode = AD_PAD_REFLECT, .pad = {2, 3}};
    return (s->in[0] = ad_sample_tensor(s, 2, s2, -1, 1, true)) ? 1 : -1;
  }
  s->attrs->pad_nd = (ad_pad_nd_attrs){.n = 2, .mode = (ad_pad_mode)v, .pad = {2, 1, 1, 2}};
  return (s->in[0] = ad_sample_tensor(s, 3, s3, -1, 1, true)) ? 1 : -1;
}

const ad_op_def ad_def_pad_nd_backward = {
    .name = "pad_nd_backward",
    .arity = 1,
    .attrs = AD_ATTRS_PAD_ND,
    .shape = pad_nd_backward_shape,
    .forward = pad_nd_backward_fwd,
    .backward = pad_nd_backward_bwd,
    .sample = pad_nd_backward_sample,
    .math = "y = pad_nd's adjoint: each element of g added into the element of x it reads",
    .inputs = {"g"},
    .grads = {"pad_nd(dy) with the value 0"},
};

/* --------------------------------------------------------------- concat */

static ad_status concat_shape(const ad_call *c) {
  ad_tensor *const *in = c->in;
  ad_tensor *o = c->out;
  ad_status st = ad_check_float_same(c->ctx, c->name, c->n, in);
  if (st != AD_OK) return st;
  int ax;
  if ((st = axis_arg(c, c->attrs->axis, &ax)) != AD_OK) return st;
  o->ndim = in[0]->ndim;
  memcpy(o->shape, in[0]->shape, sizeof(int64_t) * (size_t)in[0]->ndim);
  o->shape[ax] = 0;
  for (int k = 0; k < c->n; k++) {
    bool ok = in[k]->ndim == in[0]->ndim;
    for (int d = 0; ok && d < in[0]->ndim; d++) ok = d == ax || in[k]->shape[d] == in[0]->shape[d];
    if (!ok) {
      char a[64], b[64];
      return ad_set_error(c->ctx, AD_ERR_SHAPE,
                          "%s: input %d has shape %s, input 0 has %s: they differ off axis %d",
                          c->name, k, ad_shape_str(in[k], b, sizeof b),
                          ad_shape_str(in[0], a, sizeof a), ax);
    }
    /* each length is at most AD_MAX_ELEMS (a tensor's), so stopping once
     * the sum passes it keeps the sum, and concat's offsets, in int64 */
    if (in[k]->shape[ax] > AD_MAX_ELEMS - o->shape[ax]) {
      char a[64];
      return ad_set_error(c->ctx, AD_ERR_SHAPE,
                          "%s: the lengths along axis %d add up to more than 2^40: %lld by "
                          "input %d, whose shape is %s (of %d inputs)",
                          c->name, ax, (long long)o->shape[ax], k, ad_shape_str(in[k], a, sizeof a),
                          c->n);
    }
    o->shape[ax] += in[k]->shape[ax];
  }
  o->dtype = in[0]->dtype;
  return AD_OK;
}

static void concat_fwd(const ad_call *c) {
  ad_tensor *out = c->out;
  int ax = ad_norm_axis(c->attrs->axis, out->ndim);
  int64_t outer = ad_dims_span(out, 0, ax), inner = ad_dims_span(out, ax + 1, out->ndim), off = 0;
  for (int k = 0; k < c->n; k++) {
    const ad_tensor *x = c->in[k];
    copy_axis(x, x->shape[ax], 0, out, out->shape[ax], off, x->shape[ax], outer, inner);
    off += x->shape[ax];
  }
}

static ad_status concat_bwd(const ad_call *c) {
  int ax = ad_norm_axis(c->attrs->axis, c->out->ndim);
  int64_t off = 0;
  for (int k = 0; k < c->n; k++) {
    int64_t len = c->in[k]->shape[ax];
    if (c->needs[k]) {
      ad_status st = ad_call_set_grad(c, k, ad_narrow(c->ctx, c->gout, ax, off, len));
      if (st != AD_OK) return st;
    }
    off += len;
  }
  return AD_OK;
}

/* A new gradient of input k is its slice of dy copied straight into the
 * buffer: one pass, where the narrow and its copy into the gradient were
 * two. */
static bool concat_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  if (!overwrite) return false;
  const ad_tensor *dy = c->gout;
  int ax = ad_norm_axis(c->attrs->axis, dy->ndim);
  int64_t off = 0;
  for (int j = 0; j < k; j++) off += c->in[j]->shape[ax];
  int64_t len = c->in[k]->shape[ax];
  copy_axis(dy, dy->shape[ax], off, grad, len, 0, len, ad_dims_span(dy, 0, ax),
            ad_dims_span(dy, ax + 1, dy->ndim));
  return true;
}

ad_tensor *ad_concat(ad_ctx *ctx, int n, ad_tensor *const *xs, int axis) {
  ad_attrs at = {.axis = axis};
  return ad_op_apply(ctx, AD_OP_CONCAT, n, xs, &at);
}

static int concat_sample(const ad_sample_call *s) {
  if (s->variant > 2) return 0;
  if (s->variant == 2) { /* more inputs than a fixed arity may have, along axis -1 */
    s->attrs->axis = -1;
    for (int k = 0; k < AD_MAX_SRC + 1; k++) {
      int64_t sh[2] = {2, 1 + k % 2};
      if (!(s->in[k] = ad_sample_tensor(s, 2, sh, -1, 1, k != 3))) return -1;
    }
    return AD_MAX_SRC + 1;
  }
  int64_t sx[3][2] = {{2, 3}, {1, 3}, {4, 3}};
  s->attrs->axis = 0;
  if (s->variant) { /* along the last axis */
    int64_t t[3][2] = {{3, 2}, {3, 1}, {3, 4}};
    memcpy(sx, t, sizeof sx);
    s->attrs->axis = 1;
  }
  for (int k = 0; k < 3; k++)
    if (!(s->in[k] = ad_sample_tensor(s, 2, sx[k], -1, 1, true))) return -1;
  return 3;
}

const ad_op_def ad_def_concat = {
    .name = "concat",
    .arity = -1,
    .attrs = AD_ATTRS_AXIS,
    .shape = concat_shape,
    .forward = concat_fwd,
    .backward = concat_bwd,
    .grad_into = concat_grad_into,
    .sample = concat_sample,
    .math = "y = x1 ++ x2 ++ ... on axis",
    .inputs = {"xk"},
    .grads = {"narrow(dy, axis, offset_k, len_k)"},
};

/* --------------------------------------------------------- index_select */

/* index_select and index_add along an axis: x (index_select's input, or
 * index_add's output) seen as [outer, n, inner] with n its length on the
 * axis, the other tensor as [outer, m, inner] with m the index count. */
typedef struct take_job {
  const char *x; /* [outer, n, inner] */
  char *y;       /* [outer, m, inner] */
  const int32_t *p;
  int64_t n, m, inner;
  size_t es;
  ad_dtype dtype;
} take_job;

/* y[o, j] = x[o, p[j]] for the rows u = o m + j in [b, e): copies, so the
 * bits are x's; one element a row (the last axis) by a typed loop */
#define TAKE_ELEMS(T)                                                                              \
  do {                                                                                             \
    const T *x = (const T *)j->x;                                                                  \
    T *y = (T *)j->y;                                                                              \
    for (int64_t u = b; u < e;) {                                                                  \
      int64_t o = u / j->m, k = u % j->m, stop = (o + 1) * j->m < e ? (o + 1) * j->m : e;          \
      const T *xo = x + o * j->n;                                                                  \
      for (; u < stop; u++, k++) y[u] = xo[j->p[k]];                                               \
    }                                                                                              \
  } while (0)

static void take_rows(void *ud, int64_t b, int64_t e) {
  const take_job *j = ud;
  if (j->inner == 1 && j->es == 4) {
    TAKE_ELEMS(uint32_t);
    return;
  }
  if (j->inner == 1) {
    TAKE_ELEMS(uint64_t);
    return;
  }
  size_t row = (size_t)j->inner * j->es;
  for (int64_t u = b; u < e; u++)
    memcpy(j->y + (size_t)u * row, j->x + (size_t)(u / j->m * j->n + j->p[u % j->m]) * row, row);
}
#undef TAKE_ELEMS

/* x[o] = 0, then y[o, j] added into x[o, p[j]] in increasing j, for the
 * outer slices o in [b, e) (here x is the output): each element's sum in
 * one fixed order, whatever thread runs its slice */
#define PUT_ROWS(T)                                                                                \
  do {                                                                                             \
    T *x = (T *)j->x + b * j->n * j->inner;                                                        \
    const T *y = (const T *)j->y + b * j->m * j->inner;                                            \
    for (int64_t o = b; o < e; o++, x += j->n * j->inner, y += j->m * j->inner) {                  \
      if (j->inner == 1) {                                                                         \
        for (int64_t k = 0; k < j->m; k++) x[j->p[k]] += y[k];                                     \
        continue;                                                                                  \
      }                                                                                            \
      for (int64_t k = 0; k < j->m; k++) {                                                         \
        T *dp = x + j->p[k] * j->inner;                                                            \
        const T *sp = y + k * j->inner;                                                            \
        for (int64_t i = 0; i < j->inner; i++) dp[i] += sp[i];                                     \
      }                                                                                            \
    }                                                                                              \
  } while (0)

static void put_rows(void *ud, int64_t b, int64_t e) {
  const take_job *j = ud;
  memset((char *)j->x + (size_t)(b * j->n * j->inner) * j->es, 0,
         (size_t)((e - b) * j->n * j->inner) * j->es);
  if (j->dtype == AD_F32)
    PUT_ROWS(float);
  else
    PUT_ROWS(double);
}
#undef PUT_ROWS

/* One slice (outer 1) by ranges [b, e) of x's elements: the range zeroed,
 * then each row of y whose index lands in it added there, in increasing j:
 * every element the same sums in the same order as put_rows, but each
 * thread writes only its own range, the part of the result that the
 * elementwise chunks of a later copy or addition (into a gradient) have it
 * read, instead of the caller writing all of it for the other threads to
 * pull from its cache. Each range reads all of the indices, so this is
 * taken only where they are few beside the elements (at most 1/64 of x's
 * elements per thread). */
#define PUT_RANGE(T)                                                                               \
  do {                                                                                             \
    T *x = (T *)j->x;                                                                              \
    const T *y = (const T *)j->y;                                                                  \
    int64_t in = j->inner, r0 = b / in, r1 = (e + in - 1) / in;                                    \
    for (int64_t i = b; i < e; i++) x[i] = 0;                                                      \
    for (int64_t k = 0; k < j->m; k++) {                                                           \
      int64_t p = j->p[k];                                                                         \
      if (p < r0 || p >= r1) continue;                                                             \
      int64_t lo = p * in > b ? p * in : b, hi = (p + 1) * in < e ? (p + 1) * in : e;              \
      const T *yk = y + k * in;                                                                    \
      for (int64_t i = lo; i < hi; i++) x[i] += yk[i - p * in];                                    \
    }                                                                                              \
  } while (0)

static void put_range(void *ud, int64_t b, int64_t e) {
  const take_job *j = ud;
  if (j->dtype == AD_F32)
    PUT_RANGE(float);
  else
    PUT_RANGE(double);
}
#undef PUT_RANGE

/* The job of index_select (x its input, y its output) or index_add (x its
 * output, y its source) along axis a of x. */
static take_job take_job_of(const ad_tensor *x, const ad_tensor *y, const ad_tensor *idx, int a) {
  return (take_job){(const char *)x->data, (char *)y->data, idx->data,
                    x->shape[a],           idx->size,       ad_dims_span(x, a + 1, x->ndim),
                    ad_dsize(x->dtype),    x->dtype};
}

/* x (the output of index_add) = the sum of y's rows at idx along axis a:
 * split over the threads by outer slices of 32768 elements or more. */
static void index_put(ad_tensor *x, const ad_tensor *y, const ad_tensor *idx, int a) {
  take_job j = take_job_of(x, y, idx, a);
  int64_t outer = ad_dims_span(x, 0, a), per = (j.n > j.m ? j.n : j.m) * j.inner;
  if (!outer || !per) {
    memset(x->data, 0, (size_t)x->size * j.es);
    return;
  }
  int64_t grain = (32768 + per - 1) / per;
  int threads = ad_num_threads();
  if (outer == 1 && x->size > 32768 && threads > 1 && j.m * 64 * threads <= x->size)
    ad_parallel_for(x->size, 32768, put_range, &j);
  else if (outer <= grain)
    put_rows(&j, 0, outer);
  else
    ad_parallel_for(outer, grain, put_rows, &j);
}

static ad_status index_select_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0], *idx = c->in[1];
  ad_tensor *o = c->out;
  ad_status st = ad_check_float_same(c->ctx, c->name, 1, c->in);
  if (st != AD_OK) return st;
  char a[64], b[64];
  if (x->ndim < 1 || idx->ndim + x->ndim - 1 > AD_MAX_DIMS)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: cannot index %s with %s", c->name,
                        ad_shape_str(x, a, sizeof a), ad_shape_str(idx, b, sizeof b));
  int ax = ad_norm_axis(c->attrs->axis, x->ndim);
  if (ax < 0)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: axis %d out of range for %s", c->name,
                        c->attrs->axis, ad_shape_str(x, a, sizeof a));
  if ((st = check_idx(c, idx, x->shape[ax])) != AD_OK) return st;
  o->ndim = idx->ndim + x->ndim - 1;
  memcpy(o->shape, x->shape, sizeof(int64_t) * (size_t)ax);
  memcpy(o->shape + ax, idx->shape, sizeof(int64_t) * (size_t)idx->ndim);
  memcpy(o->shape + ax + idx->ndim, x->shape + ax + 1,
         sizeof(int64_t) * (size_t)(x->ndim - ax - 1));
  o->dtype = x->dtype;
  return AD_OK;
}

/* Rows of the output split over the threads, 32768 elements or more a
 * piece; each output element is a copy of one of x's. */
static void index_select_fwd(const ad_call *c) {
  const ad_tensor *x = c->in[0], *idx = c->in[1];
  int a = ad_norm_axis(c->attrs->axis, x->ndim);
  take_job j = take_job_of(x, c->out, idx, a);
  int64_t rows = ad_dims_span(x, 0, a) * j.m,
          grain = j.inner ? (32768 + j.inner - 1) / j.inner : rows;
  if (rows <= grain)
    take_rows(&j, 0, rows);
  else
    ad_parallel_for(rows, grain, take_rows, &j);
}

static ad_status index_select_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  const ad_tensor *x = c->in[0];
  int a = ad_norm_axis(c->attrs->axis, x->ndim);
  return ad_call_set_grad(c, 0, ad_index_add_axis(c->ctx, c->gout, a, c->in[1], x->shape[a]));
}

static void scatter_rows(ad_tensor *out, const ad_tensor *src, const ad_tensor *idx, int64_t skip);

/* x's first gradient of a pass straight into its buffer (no temporary
 * index_add output copied in): the same bits. An addition into a
 * gradient already there is declined (repeated indices would round in
 * another order). */
static bool index_select_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  if (k != 0 || !overwrite) return false;
  index_put(grad, c->gout, c->in[1], ad_norm_axis(c->attrs->axis, c->in[0]->ndim));
  return true;
}

ad_tensor *ad_index_select(ad_ctx *ctx, ad_tensor *x, ad_tensor *idx) {
  return ad_apply2(ctx, AD_OP_INDEX_SELECT, x, idx, NULL);
}

ad_tensor *ad_index_select_axis(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *idx) {
  ad_attrs at = {.axis = axis};
  return ad_apply2(ctx, AD_OP_INDEX_SELECT, x, idx, &at);
}

static int index_select_sample(const ad_sample_call *s) {
  int v = s->variant;
  if (v > 3) return 0;
  int64_t sx[2] = {5, 3}, si[2] = {2, 3}, sx3[3] = {2, 5, 3};
  if (v >= 2) { /* along axis 1 of [2, 5, 3] and the last axis of [5, 3] */
    s->attrs->axis = v == 2 ? 1 : -1;
    s->in[0] =
        v == 2 ? ad_sample_tensor(s, 3, sx3, -1, 1, true) : ad_sample_tensor(s, 2, sx, -1, 1, true);
    s->in[1] = sample_idx(s, v == 2 ? 2 : 1, v == 2 ? si : si + 1, v == 2 ? 5 : 3);
    return s->in[0] && s->in[1] ? 2 : -1;
  }
  s->in[0] = ad_sample_tensor(s, 2, sx, -1, 1, true);
  s->in[1] = sample_idx(s, v ? 2 : 1, v ? si : si + 1, 5); /* repeats exercise += */
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_index_select = {
    .name = "index_select",
    .arity = 2,
    .attrs = AD_ATTRS_AXIS,
    .shape = index_select_shape,
    .forward = index_select_fwd,
    .backward = index_select_bwd,
    .grad_into = index_select_grad_into,
    .sample = index_select_sample,
    .math = "y[..., j, ...] = x[..., idx[j], ...] (along axis)",
    .inputs = {"x", "idx"},
    .grads = {"index_add(dy, axis, idx, rows(x))", NULL},
};

/* ------------------------------------------------------------ index_add */

static ad_status index_add_shape(const ad_call *c) {
  const ad_tensor *src = c->in[0], *idx = c->in[1];
  ad_tensor *o = c->out;
  int64_t rows = c->attrs->index.rows;
  ad_status st = ad_check_float_same(c->ctx, c->name, 1, c->in);
  if (st != AD_OK) return st;
  char a[64], b[64];
  int ond = src->ndim - idx->ndim + 1; /* the result's dims */
  int ax = ond >= 1 ? ad_norm_axis(c->attrs->index.axis, ond) : 0;
  if (ond >= 1 && ax < 0)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: axis %d out of range for source %s with index %s",
                        c->name, c->attrs->index.axis, ad_shape_str(src, a, sizeof a),
                        ad_shape_str(idx, b, sizeof b));
  bool ok = src->ndim >= idx->ndim;
  for (int k = 0; ok && k < idx->ndim; k++) ok = src->shape[ax + k] == idx->shape[k];
  if (!ok || rows < 0)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        ax ? "%s: source %s does not have the index shape %s at axis %d"
                           : "%s: source %s does not start with the index shape %s",
                        c->name, ad_shape_str(src, a, sizeof a), ad_shape_str(idx, b, sizeof b),
                        ax);
  if (ond > AD_MAX_DIMS) /* a 0-d index adds a dim */
    return ad_set_error(
        c->ctx, AD_ERR_SHAPE, "%s: source %s with index %s gives a result of %d dims; at most %d",
        c->name, ad_shape_str(src, a, sizeof a), ad_shape_str(idx, b, sizeof b), ond, AD_MAX_DIMS);
  if ((st = check_idx(c, idx, rows)) != AD_OK) return st;
  o->ndim = ond;
  memcpy(o->shape, src->shape, sizeof(int64_t) * (size_t)ax);
  o->shape[ax] = rows;
  memcpy(o->shape + ax + 1, src->shape + ax + idx->ndim,
         sizeof(int64_t) * (size_t)(src->ndim - idx->ndim - ax));
  o->dtype = src->dtype;
  return AD_OK;
}

/* out = 0, then row i of src added into row idx[i] of out, in order of
 * i, but for the rows whose index is skip (-1: none). Adding those would
 * add zeros (embedding's padding row), which change no bit here: a sum
 * that starts at +0 is never -0 in round-to-nearest, so + 0 keeps it. */
static void scatter_rows(ad_tensor *out, const ad_tensor *src, const ad_tensor *idx, int64_t skip) {
  int64_t row = ad_dims_span(out, 1, out->ndim);
  const int32_t *p = idx->data;
  memset(out->data, 0, (size_t)out->size * ad_dsize(out->dtype));
  for (int64_t i = 0; i < idx->size; i++) {
    if (p[i] == skip) continue;
    if (out->dtype == AD_F32) {
      float *d = (float *)out->data + p[i] * row;
      const float *s = (const float *)src->data + i * row;
      for (int64_t j = 0; j < row; j++) d[j] += s[j];
    } else {
      double *d = (double *)out->data + p[i] * row;
      const double *s = (const double *)src->data + i * row;
      for (int64_t j = 0; j < row; j++) d[j] += s[j];
    }
  }
}

static void index_add_fwd(const ad_call *c) {
  index_put(c->out, c->in[0], c->in[1], ad_norm_axis(c->attrs->index.axis, c->out->ndim));
}

static ad_status index_add_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  int a = ad_norm_axis(c->attrs->index.axis, c->out->ndim);
  return ad_call_set_grad(c, 0, ad_index_select_axis(c->ctx, c->gout, a, c->in[1]));
}

ad_tensor *ad_index_add(ad_ctx *ctx, ad_tensor *src, ad_tensor *idx, int64_t rows) {
  ad_attrs at = {.index = {.rows = rows}};
  return ad_apply2(ctx, AD_OP_INDEX_ADD, src, idx, &at);
}

ad_tensor *ad_index_add_axis(ad_ctx *ctx, ad_tensor *src, int axis, ad_tensor *idx, int64_t rows) {
  ad_attrs at = {.index = {.rows = rows, .axis = axis}};
  return ad_apply2(ctx, AD_OP_INDEX_ADD, src, idx, &at);
}

static int index_add_sample(const ad_sample_call *s) {
  if (s->variant > 1) return 0;
  if (s->variant == 1) { /* along the last axis of the result: [2, 4] -> [2, 3] */
    int64_t sx[2] = {2, 4}, si[1] = {4};
    s->attrs->index = (ad_index_attrs){.rows = 3, .axis = -1};
    s->in[0] = ad_sample_tensor(s, 2, sx, -1, 1, true);
    s->in[1] = sample_idx(s, 1, si, 3);
    return s->in[0] && s->in[1] ? 2 : -1;
  }
  int64_t sx[2] = {4, 3}, si[1] = {4};
  s->attrs->index.rows = 3;
  s->in[0] = ad_sample_tensor(s, 2, sx, -1, 1, true);
  s->in[1] = sample_idx(s, 1, si, 3);
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_index_add = {
    .name = "index_add",
    .arity = 2,
    .attrs = AD_ATTRS_INDEX,
    .shape = index_add_shape,
    .forward = index_add_fwd,
    .backward = index_add_bwd,
    .sample = index_add_sample,
    .math = "y = zeros(rows) (along axis); y[..., idx[j], ...] += x[..., j, ...]",
    .inputs = {"x", "idx"},
    .grads = {"index_select(dy, axis, idx)", NULL},
};

/* ----------------------------------------------------- index_select_add
 *
 *   y = zeros, rows long on axis;  y[.., dst[k], ..] += x[.., src[k], ..]
 *   for k = 0, 1, ... in order;    dx = index_select_add(dy, dst, src, rows(x))
 *
 * index_add(index_select(x, src), dst, rows) in one pass, without the
 * gathered [.., m, ..] tensor between them (embedding_bag's sum of each
 * bag's rows: m rows of a table summed into B). Each element of y is its
 * sum in the order of k, whatever the split, so the bits are those of the
 * two ops and the same on any thread count. Its gradient is the same op
 * with src and dst swapped: closed under differentiation. */

/* y[o, lo:hi, c0:c1] of a job: move_block below, one per dtype and ISA
 * (an ad_block_fn) */
typedef struct move_job {
  const char *x; /* [outer, n, inner] */
  char *y;       /* [outer, rows, inner] */
  const int32_t *src, *dst;
  int64_t n, rows, m, inner, outer;
} move_job;

/* dp[c0:c1] += x's rows src[k] for the entries k0..k1-1 of a run with one
 * dst, in order: 8 vectors of columns at a time summed in registers across
 * the run and stored once (an embedding bag's rows), each element's
 * additions in the same order as one entry at a time, so the same bits
 * (and the same in each ISA's copy: no sum is reassociated). Vectors of 16
 * bytes, or 32 in the AVX2 copy (GCC's and clang's extension), read and
 * written by memcpy at any alignment. */
#if defined(__GNUC__)
#define MOVE_VEC 1
typedef float move_vf __attribute__((vector_size(16)));
typedef double move_vd __attribute__((vector_size(16)));
typedef float move_vf2 __attribute__((vector_size(32)));
typedef double move_vd2 __attribute__((vector_size(32)));
#else
#define MOVE_VEC 0
typedef float move_vf; /* unused: MOVE_VEC 0 */
typedef double move_vd;
#endif
#define MOVE_RUN(T, V, NAME, ATTR)                                                                 \
  ATTR static inline void NAME(T *dp, const T *xo, const int32_t *src, int64_t k0, int64_t k1,     \
                               int64_t inner, int64_t c0, int64_t c1) {                            \
    enum { L = sizeof(V) / sizeof(T), W = 8 * L };                                                 \
    int64_t c = c0;                                                                                \
    for (; MOVE_VEC && k1 - k0 > 1 && c + W <= c1; c += W) {                                       \
      V a[8], b;                                                                                   \
      _Pragma("GCC unroll 8") for (int v = 0; v < 8; v++)                                          \
          memcpy(&a[v], dp + c + v * L, sizeof(V));                                                \
      for (int64_t k = k0; k < k1; k++) {                                                          \
        const T *sp = xo + (int64_t)src[k] * inner + c;                                            \
        _Pragma("GCC unroll 8") for (int v = 0; v < 8; v++) {                                      \
          memcpy(&b, sp + v * L, sizeof(V));                                                       \
          a[v] += b;                                                                               \
        }                                                                                          \
      }                                                                                            \
      _Pragma("GCC unroll 8") for (int v = 0; v < 8; v++)                                          \
          memcpy(dp + c + v * L, &a[v], sizeof(V));                                                \
    }                                                                                              \
    for (int64_t k = k0; k < k1 && c < c1; k++) {                                                  \
      const T *sp = xo + (int64_t)src[k] * inner;                                                  \
      for (int64_t i = c; i < c1; i++) dp[i] += sp[i];                                             \
    }                                                                                              \
  }

/* y[o, lo:hi, c0:c1] = 0, then the adds that land there, in order of k,
 * a run of consecutive entries with one dst at a time */
#define MOVE_BLOCK(T, RUN, NAME, ATTR)                                                             \
  ATTR static void NAME(const void *job, int64_t o, int64_t lo, int64_t hi, int64_t c0,            \
                        int64_t c1) {                                                              \
    const move_job *j = job;                                                                       \
    T *yo = (T *)j->y + o * j->rows * j->inner;                                                    \
    const T *xo = (const T *)j->x + o * j->n * j->inner;                                           \
    for (int64_t r = lo; r < hi; r++)                                                              \
      memset(yo + r * j->inner + c0, 0, (size_t)(c1 - c0) * sizeof(T));                            \
    for (int64_t k = 0, e; k < j->m; k = e) {                                                      \
      int64_t d = j->dst[k];                                                                       \
      for (e = k + 1; e < j->m && j->dst[e] == d;) e++;                                            \
      if (d >= lo && d < hi) RUN(yo + d * j->inner, xo, j->src, k, e, j->inner, c0, c1);           \
    }                                                                                              \
  }

MOVE_RUN(float, move_vf, move_run_f32, )
MOVE_RUN(double, move_vd, move_run_f64, )
MOVE_BLOCK(float, move_run_f32, move_block_f32, )
MOVE_BLOCK(double, move_run_f64, move_block_f64, )
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define MOVE_X86 1
MOVE_RUN(float, move_vf2, move_run_f32_avx2, __attribute__((target("avx2"))))
MOVE_RUN(double, move_vd2, move_run_f64_avx2, __attribute__((target("avx2"))))
MOVE_BLOCK(float, move_run_f32_avx2, move_block_f32_avx2, __attribute__((target("avx2"))))
MOVE_BLOCK(double, move_run_f64_avx2, move_block_f64_avx2, __attribute__((target("avx2"))))
#endif
#undef MOVE_RUN
#undef MOVE_BLOCK

static ad_block_fn *move_block_for(ad_dtype dt) {
#ifdef MOVE_X86
  if (__builtin_cpu_supports("avx2"))
    return dt == AD_F32 ? move_block_f32_avx2 : move_block_f64_avx2;
#endif
  return dt == AD_F32 ? move_block_f32 : move_block_f64;
}

/* ad_parallel_blocks' split: pieces of a run of units or of columns */
typedef struct blocks_job {
  int64_t outer, per, inner, pieces;
  ad_block_fn *fn;
  const void *job;
} blocks_job;

/* Piece p of j->pieces: a run of the outer x per row units, every column */
static void blocks_rows(void *ud, int64_t b, int64_t e) {
  const blocks_job *j = ud;
  int64_t units = j->outer * j->per;
  for (int64_t p = b; p < e; p++) {
    int64_t u0 = units * p / j->pieces, u1 = units * (p + 1) / j->pieces;
    for (int64_t o = u0 / j->per; o * j->per < u1; o++) {
      int64_t lo = u0 - o * j->per, hi = u1 - o * j->per;
      j->fn(j->job, o, lo > 0 ? lo : 0, hi < j->per ? hi : j->per, 0, j->inner);
    }
  }
}

/* Piece p of j->pieces: a run of columns (multiples of 16), every row */
static void blocks_cols(void *ud, int64_t b, int64_t e) {
  const blocks_job *j = ud;
  int64_t blocks = (j->inner + 15) / 16;
  for (int64_t p = b; p < e; p++) {
    int64_t c0 = blocks * p / j->pieces * 16, c1 = blocks * (p + 1) / j->pieces * 16;
    for (int64_t o = 0; o < j->outer; o++)
      j->fn(j->job, o, 0, j->per, c0, c1 < j->inner ? c1 : j->inner);
  }
}

void ad_parallel_blocks(int64_t outer, int64_t per, int64_t inner, double work, ad_block_fn *fn,
                        const void *job) {
  int64_t threads = ad_num_threads(), pieces = (int64_t)(work / 16384), units = outer * per;
  pieces = pieces < threads ? pieces : threads;
  blocks_job j = {outer, per, inner, pieces, fn, job};
  if (pieces < 2) {
    for (int64_t o = 0; o < outer; o++) fn(job, o, 0, per, 0, inner);
    return;
  }
  if (units < 4 * pieces && inner >= 64 * pieces) {
    ad_parallel_for(pieces, 1, blocks_cols, &j);
    return;
  }
  j.pieces = pieces < units ? pieces : units;
  ad_parallel_for(j.pieces, 1, blocks_rows, &j);
}

/* y = index_select_add(x, src, dst) along axis a: split over the threads
 * when the work (zeros and adds) is 16K elements a thread or more, by runs
 * of y's rows, each piece reading the whole index list for its own (whole
 * rows a thread: twice as fast as halves of every row in embedding_bag's
 * backward, which were slower than one thread); by columns when y has
 * fewer than 4 rows a thread and they are long enough for 64 columns a
 * thread (a bag that takes every entry is split too). */
static void index_move(ad_tensor *y, const ad_tensor *x, const ad_tensor *src, const ad_tensor *dst,
                       int a) {
  move_job j = {(const char *)x->data, (char *)y->data, src->data, dst->data,
                x->shape[a],           y->shape[a],     src->size, ad_dims_span(y, a + 1, y->ndim),
                ad_dims_span(y, 0, a)};
  if (!y->size) return;
  double work = (double)j.outer * (double)j.inner * (double)(j.rows + j.m);
  ad_parallel_blocks(j.outer, j.rows, j.inner, work, move_block_for(y->dtype), &j);
}

static ad_status index_select_add_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0], *src = c->in[1], *dst = c->in[2];
  ad_tensor *o = c->out;
  int64_t rows = c->attrs->index.rows;
  ad_status st = ad_check_float_same(c->ctx, c->name, 1, c->in);
  if (st != AD_OK) return st;
  char a[64], b[64];
  int ax = ad_norm_axis(c->attrs->index.axis, x->ndim);
  if (x->ndim < 1 || ax < 0)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: axis %d out of range for x %s", c->name,
                        c->attrs->index.axis, ad_shape_str(x, a, sizeof a));
  if (rows < 0)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: rows %lld must be >= 0", c->name, (long long)rows);
  if (src->size != dst->size)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: src %s and dst %s differ in size", c->name,
                        ad_shape_str(src, a, sizeof a), ad_shape_str(dst, b, sizeof b));
  for (int k = 1; k <= 2; k++) {
    const ad_tensor *t = c->in[k];
    const char *what = k == 1 ? "src" : "dst";
    int64_t lim = k == 1 ? x->shape[ax] : rows;
    if (t->dtype != AD_I32)
      return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: %s %s is %s; it must be i32", c->name, what,
                          ad_shape_str(t, a, sizeof a), ad_dtype_name(t->dtype));
    const int32_t *p = t->data;
    for (int64_t i = 0; i < t->size; i++) {
      if (p[i] >= 0 && p[i] < lim) continue;
      if (k == 2)
        return ad_set_error(c->ctx, AD_ERR_ARG, "%s: dst[%lld] = %d is outside 0..%lld (rows %lld)",
                            c->name, (long long)i, p[i], (long long)lim - 1, (long long)rows);
      return ad_set_error(c->ctx, AD_ERR_ARG,
                          "%s: src[%lld] = %d is outside 0..%lld (x %s on axis %d)", c->name,
                          (long long)i, p[i], (long long)lim - 1, ad_shape_str(x, b, sizeof b), ax);
    }
  }
  o->ndim = x->ndim;
  memcpy(o->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  o->shape[ax] = rows;
  o->dtype = x->dtype;
  return AD_OK;
}

static void index_select_add_fwd(const ad_call *c) {
  index_move(c->out, c->in[0], c->in[1], c->in[2],
             ad_norm_axis(c->attrs->index.axis, c->in[0]->ndim));
}

static ad_status index_select_add_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  const ad_tensor *x = c->in[0];
  int a = ad_norm_axis(c->attrs->index.axis, x->ndim);
  return ad_call_set_grad(c, 0,
                          ad_index_select_add(c->ctx, c->gout, a, c->in[2], c->in[1], x->shape[a]));
}

/* x's first gradient of a pass straight into its buffer: the same kernel
 * and bits. An addition into a gradient already there is declined. */
static bool index_select_add_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  if (k != 0 || !overwrite) return false;
  index_move(grad, c->gout, c->in[2], c->in[1], ad_norm_axis(c->attrs->index.axis, c->in[0]->ndim));
  return true;
}

ad_tensor *ad_index_select_add(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *src, ad_tensor *dst,
                               int64_t rows) {
  ad_attrs at = {.index = {.rows = rows, .axis = axis}};
  ad_tensor *in[3] = {x, src, dst};
  return ad_op_apply(ctx, AD_OP_INDEX_SELECT_ADD, 3, in, &at);
}

/* x [5, 3] with 5 entries into 3 rows (repeats on both sides add up);
 * x [2, 5, 3] along axis 1, 4 entries into 4 rows (one gets none); x
 * [4, 6] along the last axis, a 2-D src and dst. */
static int index_select_add_sample(const ad_sample_call *s) {
  int v = s->variant;
  if (v > 2) return 0;
  static const int32_t src0[5] = {0, 2, 2, 4, 1}, dst0[5] = {1, 0, 1, 1, 2};
  static const int32_t src1[4] = {4, 0, 4, 2}, dst1[4] = {3, 0, 3, 1};
  static const int32_t src2[4] = {5, 0, 3, 5}, dst2[4] = {1, 1, 0, 2};
  int64_t sx0[2] = {5, 3}, sx1[3] = {2, 5, 3}, sx2[2] = {4, 6}, n0 = 5, n1 = 4, s2[2] = {2, 2};
  if (v == 0) {
    s->attrs->index = (ad_index_attrs){.rows = 3};
    s->in[0] = ad_sample_tensor(s, 2, sx0, -1, 1, true);
    s->in[1] = ad_from_data(s->ctx, AD_I32, 1, &n0, src0);
    s->in[2] = ad_from_data(s->ctx, AD_I32, 1, &n0, dst0);
  } else if (v == 1) {
    s->attrs->index = (ad_index_attrs){.rows = 4, .axis = 1};
    s->in[0] = ad_sample_tensor(s, 3, sx1, -1, 1, true);
    s->in[1] = ad_from_data(s->ctx, AD_I32, 1, &n1, src1);
    s->in[2] = ad_from_data(s->ctx, AD_I32, 1, &n1, dst1);
  } else {
    s->attrs->index = (ad_index_attrs){.rows = 3, .axis = -1};
    s->in[0] = ad_sample_tensor(s, 2, sx2, -1, 1, true);
    s->in[1] = ad_from_data(s->ctx, AD_I32, 2, s2, src2);
    s->in[2] = ad_from_data(s->ctx, AD_I32, 2, s2, dst2);
  }
  return s->in[0] && s->in[1] && s->in[2] ? 3 : -1;
}

const ad_op_def ad_def_index_select_add = {
    .name = "index_select_add",
    .arity = 3,
    .attrs = AD_ATTRS_INDEX,
    .shape = index_select_add_shape,
    .forward = index_select_add_fwd,
    .backward = index_select_add_bwd,
    .grad_into = index_select_add_grad_into,
    .sample = index_select_add_sample,
    .math = "y = zeros (rows on axis); y[.., dst[k], ..] += x[.., src[k], ..] in order of k",
    .inputs = {"x", "src", "dst"},
    .grads = {"index_select_add(dy, axis, dst, src, rows(x))", NULL, NULL},
};

/* ---------------------------------------------------------------- detach */

/* y = x, sharing its data; no gradient flows back to x (stop-gradient):
 * the op has no backward, so it is never recorded and y requires none */
static ad_status detach_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  c->out->dtype = x->dtype;
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  return AD_OK;
}

static void detach_fwd(const ad_call *c) { c->out->data = c->in[0]->data; }

ad_tensor *ad_detach(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_DETACH, x, NULL); }

const ad_op_def ad_def_detach = {
    .name = "detach",
    .arity = 1,
    .flags = AD_OP_VIEW,
    .shape = detach_shape,
    .forward = detach_fwd,
    .math = "y = x (stop-gradient)",
    .inputs = {"x"},
};

/* ------------------------------------------------------- stack, unstack
 * Composites with no op of their own: stack is the concat of its inputs
 * along the axis viewed as [.., n, len, ..] (after the last dim: of its
 * inputs each viewed with a length-1 axis), unstack narrows halving x down to
 * each slice (unstack_split) viewed without the axis, so their gradients are those ops' and a graph
 * dump shows reshape, concat and narrow nodes. */

/* Inputs whose views ad_stack keeps on the stack; more are allocated. */
#define STACK_INLINE 16

ad_tensor *ad_stack(ad_ctx *ctx, int n, ad_tensor *const *xs, int axis) {
  if (!ctx) return NULL;
  if (n < 1) {
    ad_set_error(ctx, AD_ERR_ARG, "stack: takes one or more inputs, got %d", n);
    return NULL;
  }
  if (!xs) {
    ad_set_error(ctx, AD_ERR_NULL, "stack: the array of inputs is NULL");
    return NULL;
  }
  char what[32], a[64], b[64];
  for (int k = 0; k < n; k++) {
    snprintf(what, sizeof what, "input %d", k);
    if (!ad_arg_ok(ctx, "stack", what, xs[k])) return NULL;
    if (k && !ad_same_shape(xs[k], xs[0])) {
      ad_set_error(ctx, AD_ERR_SHAPE,
                   "stack: input %d has shape %s, input 0 has %s (stack needs "
                   "one shape)",
                   k, ad_shape_str(xs[k], b, sizeof b), ad_shape_str(xs[0], a, sizeof a));
      return NULL;
    }
  }
  if (ad_check_float_same(ctx, "stack", n, xs) != AD_OK) return NULL;
  const ad_tensor *x0 = xs[0];
  if (x0->ndim + 1 > AD_MAX_DIMS) {
    ad_set_error(ctx, AD_ERR_SHAPE, "stack: inputs %s: the result would have more than %d dims",
                 ad_shape_str(x0, a, sizeof a), AD_MAX_DIMS);
    return NULL;
  }
  int ax = ad_norm_axis(axis, x0->ndim + 1);
  if (ax < 0) {
    ad_set_error(ctx, AD_ERR_ARG, "stack: axis %d out of range -%d..%d for inputs %s", axis,
                 x0->ndim + 1, x0->ndim, ad_shape_str(x0, a, sizeof a));
    return NULL;
  }
  int64_t shape[AD_MAX_DIMS];
  if (ax < x0->ndim) { /* the concat along ax, seen as [.., n, len, ..]: one reshape */
    for (int d = 0, k = 0; d <= x0->ndim; d++) shape[d] = d == ax ? n : x0->shape[k++];
    return ad_reshape(ctx, ad_concat(ctx, n, xs, ax), x0->ndim + 1, shape);
  }
  /* after the last dim: each input as [.., 1], concatenated */
  for (int d = 0, k = 0; d <= x0->ndim; d++) shape[d] = d == ax ? 1 : x0->shape[k++];
  ad_tensor *inl[STACK_INLINE], **v = inl;
  size_t bytes = (size_t)n * sizeof *v; /* no overflow: the tape records n pointers alike */
  if (n > STACK_INLINE && !(v = ad_malloc(ctx, bytes))) return NULL;
  ad_tensor *y = NULL;
  int k = 0;
  while (k < n && (v[k] = ad_reshape(ctx, xs[k], x0->ndim + 1, shape))) k++;
  if (k == n) y = ad_concat(ctx, n, v, ax);
  if (v != inl) ad_free(ctx, v, bytes);
  return y;
}

/* Slices first..first+len-1 of piece p (slices of x along ax, first at
 * its start) into out[first..], halving p: a narrow's gradient is its
 * slice padded to the piece it was cut from, so the backward pads and adds
 * about 3 x's worth per level, log2(n) levels, rather than x's size once
 * per slice (n^2 / 2 in all when each slice is narrowed from x itself,
 * which dominated an LSTM over an embedded sequence). */
static bool unstack_split(ad_ctx *ctx, ad_tensor *p, int ax, int64_t first, int64_t len,
                          const int64_t *shape, ad_tensor **out) {
  if (len == 1) return (out[first] = ad_reshape(ctx, p, p->ndim - 1, shape)) != NULL;
  int64_t a = len / 2;
  ad_tensor *lo = ad_narrow(ctx, p, ax, 0, a), *hi = ad_narrow(ctx, p, ax, a, len - a);
  return lo && hi && unstack_split(ctx, lo, ax, first, a, shape, out) &&
         unstack_split(ctx, hi, ax, first + a, len - a, shape, out);
}

ad_status ad_unstack(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor **out) {
  if (!ctx) return AD_ERR_NULL;
  if (!ad_arg_ok(ctx, "unstack", "x", x)) return ad_last_status(ctx);
  if (!out) return ad_set_error(ctx, AD_ERR_NULL, "unstack: out is NULL");
  char a[64];
  int ax = ad_norm_axis(axis, x->ndim);
  if (ax < 0)
    return ad_set_error(ctx, AD_ERR_ARG, "unstack: axis %d out of range for %s", axis,
                        ad_shape_str(x, a, sizeof a));
  int64_t n = x->shape[ax];
  if (n > INT_MAX)
    return ad_set_error(ctx, AD_ERR_ARG, "unstack: %lld slices of %s are more than an int counts",
                        (long long)n, ad_shape_str(x, a, sizeof a));
  int64_t shape[AD_MAX_DIMS];
  for (int d = 0, k = 0; d < x->ndim; d++)
    if (d != ax) shape[k++] = x->shape[d];
  if (n > 0 && !unstack_split(ctx, x, ax, 0, n, shape, out)) {
    ad_status st = ad_last_status(ctx);
    for (int64_t j = 0; j < n; j++) out[j] = NULL;
    return st != AD_OK ? st : AD_ERR_OOM;
  }
  return AD_OK;
}
/* ------------------------------------------------------------ embedding
 *
 *   y[j] = w[idx[j]]                   (rows of w [num, dim]; idx any shape)
 *   dw   = index_add(dy masked, idx)   (rows at padding_idx get nothing)
 *          with scale_grad_by_freq, dy[j] / count(idx[j]) in place of dy[j]
 *
 * index_select with PyTorch's padding_idx and an error that names the bad
 * index, where it is and the vocabulary size. */

/* The padding row in 0..num-1, or -1 for none. */
static int64_t padding_row(const ad_embedding_attrs *at, int64_t num) {
  if (!at->padding) return -1;
  return at->padding_idx < 0 ? at->padding_idx + num : at->padding_idx;
}

static ad_status embedding_shape(const ad_call *c) {
  const ad_tensor *w = c->in[0], *idx = c->in[1];
  const ad_embedding_attrs *at = &c->attrs->embedding;
  ad_tensor *o = c->out;
  char a[64], b[64];
  if (ad_check_float_same(c->ctx, c->name, 1, c->in) != AD_OK) return ad_last_status(c->ctx);
  if (idx->dtype != AD_I32)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: indices %s are %s; they must be i32", c->name,
                        ad_shape_str(idx, a, sizeof a), ad_dtype_name(idx->dtype));
  if (w->ndim != 2 || idx->ndim + 1 > AD_MAX_DIMS)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: weight %s must be [num_embeddings, embedding_dim] and indices %s "
                        "at most %d-d",
                        c->name, ad_shape_str(w, a, sizeof a), ad_shape_str(idx, b, sizeof b),
                        AD_MAX_DIMS - 1);
  int64_t num = w->shape[0];
  if (at->padding && num == 0)
    return ad_set_error(c->ctx, AD_ERR_ARG,
                        "%s: padding_idx %lld names a row of weight %s, which has none", c->name,
                        (long long)at->padding_idx, ad_shape_str(w, a, sizeof a));
  if (at->padding && (at->padding_idx < -num || at->padding_idx >= num))
    return ad_set_error(
        c->ctx, AD_ERR_ARG, "%s: padding_idx %lld is outside -%lld..%lld for %lld embeddings",
        c->name, (long long)at->padding_idx, (long long)num, (long long)num - 1, (long long)num);
  const int32_t *p = idx->data;
  for (int64_t i = 0; i < idx->size; i++) {
    if (p[i] >= 0 && p[i] < num) continue;
    char pos[192];
    return ad_set_error(c->ctx, AD_ERR_ARG,
                        "%s: index %d at position %lld (%s of indices %s) is outside the "
                        "vocabulary of %lld (0..%lld)",
                        c->name, p[i], (long long)i, ad_coords_str(idx, i, pos, sizeof pos),
                        ad_shape_str(idx, a, sizeof a), (long long)num, (long long)num - 1);
  }
  o->ndim = idx->ndim + 1;
  memcpy(o->shape, idx->shape, sizeof(int64_t) * (size_t)idx->ndim);
  o->shape[idx->ndim] = w->shape[1];
  o->dtype = w->dtype;
  return AD_OK;
}

static void embedding_fwd(const ad_call *c) {
  const ad_tensor *w = c->in[0], *idx = c->in[1];
  size_t row = (size_t)w->shape[1] * ad_dsize(w->dtype);
  const int32_t *p = idx->data;
  for (int64_t i = 0; i < idx->size; i++)
    memcpy((char *)c->out->data + (size_t)i * row, (const char *)w->data + (size_t)p[i] * row, row);
}

/* 1 / count(idx[j]) for each position j, [idx.shape, 1] (a constant of
 * the tape): the factors of scale_grad_by_freq. */
static ad_tensor *freq_scale(ad_ctx *ctx, ad_dtype dt, const ad_tensor *idx, int64_t num) {
  int64_t ms[AD_MAX_DIMS];
  memcpy(ms, idx->shape, sizeof(int64_t) * (size_t)idx->ndim);
  ms[idx->ndim] = 1;
  size_t bytes = (size_t)num * sizeof(int64_t);
  int64_t *count = ad_malloc(ctx, bytes ? bytes : 1);
  if (!count) return NULL;
  memset(count, 0, bytes);
  const int32_t *p = idx->data;
  for (int64_t i = 0; i < idx->size; i++) count[p[i]]++;
  ad_tensor *s = ad_tmp_full(ctx, dt, idx->ndim + 1, ms, 1.0);
  for (int64_t i = 0; s && i < idx->size; i++) ad_tensor_set(s, i, 1.0 / (double)count[p[i]]);
  ad_free(ctx, count, bytes ? bytes : 1);
  return s;
}

/* The rows of dy whose index is the padding row are replaced by zeros
 * (where, not a product: a NaN there sends nothing either), scaled by
 * 1 / count with scale_grad_by_freq (PyTorch's dw[i] += dy[j] / count),
 * then added up per index. */
static ad_status embedding_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  ad_ctx *ctx = c->ctx;
  ad_tensor *w = c->in[0], *idx = c->in[1], *g = c->gout;
  int64_t pad = padding_row(&c->attrs->embedding, w->shape[0]);
  const int32_t *p = idx->data;
  bool hit = false;
  for (int64_t i = 0; pad >= 0 && i < idx->size && !hit; i++) hit = p[i] == pad;
  if (hit) {
    int64_t ms[AD_MAX_DIMS];
    memcpy(ms, idx->shape, sizeof(int64_t) * (size_t)idx->ndim);
    ms[idx->ndim] = 1;
    ad_tensor *keep = ad_tmp_full(ctx, g->dtype, idx->ndim + 1, ms, 1.0);
    if (!keep) return ad_last_status(ctx);
    for (int64_t i = 0; i < idx->size; i++)
      if (p[i] == pad) ad_tensor_set(keep, i, 0.0);
    g = ad_where(ctx, keep, g, ad_scalar(ctx, g->dtype, 0.0));
  }
  if (c->attrs->embedding.scale_grad_by_freq && idx->size > 0) {
    ad_tensor *s = freq_scale(ctx, g ? g->dtype : w->dtype, idx, w->shape[0]);
    if (!s) return ad_last_status(ctx);
    g = ad_mul(ctx, g, s);
  }
  return ad_call_set_grad(c, 0, ad_index_add(ctx, g, idx, w->shape[0]));
}

/* As index_select's, the padding row's dy left out (scatter_rows: the
 * same bits as the zeros the backward puts there). Declined with
 * scale_grad_by_freq (the backward scales dy). */
static bool embedding_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  if (k != 0 || !overwrite || c->attrs->embedding.scale_grad_by_freq) return false;
  scatter_rows(grad, c->gout, c->in[1], padding_row(&c->attrs->embedding, c->in[0]->shape[0]));
  return true;
}

ad_tensor *ad_embedding(ad_ctx *ctx, ad_tensor *weight, ad_tensor *indices, int64_t padding_idx) {
  ad_attrs at = {.embedding = {.padding = padding_idx != AD_NO_PADDING,
                               .padding_idx = padding_idx == AD_NO_PADDING ? 0 : padding_idx}};
  return ad_apply2(ctx, AD_OP_EMBEDDING, weight, indices, &at);
}

ad_tensor *ad_embedding_ext(ad_ctx *ctx, ad_tensor *weight, ad_tensor *indices,
                            const ad_embedding_opts *opts) {
  ad_embedding_opts o = {0};
  if (opts) o = *opts;
  ad_attrs at = {.embedding = {.padding = o.padding,
                               .padding_idx = o.padding ? o.padding_idx : 0,
                               .scale_grad_by_freq = o.scale_grad_by_freq}};
  return ad_apply2(ctx, AD_OP_EMBEDDING, weight, indices, &at);
}

/* [5, 3] weights; indices [2, 3] that repeat rows (+= in the backward),
 * without padding, with padding_idx 3 and with -2 (row 3 too). The padding
 * row's gradient is 0 by definition, not the derivative (the row is looked
 * up all the same), so central differences would disagree: the samples keep
 * it out of the indices; the value fixture and tests/test_seq.c check it.
 * So is scale_grad_by_freq's for a repeated row: variant 3 scales with
 * indices that name each row once (count 1: the derivative), its path
 * checked to the second order; tests/test_nn_embbag.c checks the counts
 * against PyTorch. */
static int embedding_sample(const ad_sample_call *s) {
  static const int32_t v[4][6] = {
      {0, 2, 2, 4, 1, 0}, {2, 1, 2, 4, 0, 1}, {4, 2, 1, 4, 4, 0}, {4, 2, 1, 0}};
  int k = s->variant;
  if (k > 3) return 0;
  int64_t sw[2] = {5, 3}, si[2] = {2, k == 3 ? 2 : 3};
  s->attrs->embedding = (ad_embedding_attrs){
      .padding = k == 1 || k == 2, .padding_idx = k == 1 ? 3 : -2, .scale_grad_by_freq = k == 3};
  s->in[0] = ad_sample_tensor(s, 2, sw, -1, 1, true);
  s->in[1] = ad_from_data(s->ctx, AD_I32, 2, si, v[k]);
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_embedding = {
    .name = "embedding",
    .arity = 2,
    .attrs = AD_ATTRS_EMBEDDING,
    .shape = embedding_shape,
    .forward = embedding_fwd,
    .backward = embedding_bwd,
    .grad_into = embedding_grad_into,
    .sample = embedding_sample,
    .math = "y[j] = w[idx[j]] (rows)",
    .inputs = {"w", "idx"},
    .grads = {"index_add(dy[j] (0 where idx[j] = padding_idx; / count(idx[j]) with "
              "scale_grad_by_freq), idx, rows(w))",
              NULL},
};

/* --------------------------------------------------- gather, scatter_add
 * torch.gather and torch.scatter_add along one axis: index (i32) has x's
 * number of dims and is at most x's length off the axis; element i of
 * index, at coordinates (.., j, ..) with j on the axis, names x's element
 * at the same coordinates but index[i] on the axis. gather reads there,
 * scatter_add adds src[i] there. Each is the other's gradient: the pair is
 * closed under differentiation. */

/* Checks x (float), index (i32, x's rank, each length off the axis at most
 * x's, each value in 0..n-1 for x's length n on the axis), sets *ax. */
static ad_status check_gather(const ad_call *c, const ad_tensor *x, const ad_tensor *idx, int *ax) {
  ad_status st = ad_check_float_same(c->ctx, c->name, 1, c->in);
  if (st != AD_OK) return st;
  if (idx->dtype != AD_I32)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: index must be i32, got %s", c->name,
                        ad_dtype_name(idx->dtype));
  if ((st = axis_arg(c, c->attrs->axis, ax)) != AD_OK) return st;
  char a[64], b[64];
  bool ok = idx->ndim == x->ndim;
  for (int d = 0; ok && d < x->ndim; d++) ok = d == *ax || idx->shape[d] <= x->shape[d];
  if (!ok)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: index %s does not fit input %s off axis %d (it needs as many dims, "
                        "each at most as long)",
                        c->name, ad_shape_str(idx, b, sizeof b), ad_shape_str(x, a, sizeof a), *ax);
  const int32_t *p = idx->data;
  int64_t n = x->shape[*ax], i = ad_idx_first_bad(p, idx->size, n);
  if (i >= 0) {
    char at[64];
    return ad_set_error(c->ctx, AD_ERR_ARG,
                        "%s: index %d at %s of index %s is outside 0..%lld (axis %d of input "
                        "%s)",
                        c->name, p[i], ad_coords_str(idx, i, at, sizeof at),
                        ad_shape_str(idx, b, sizeof b), (long long)n - 1, *ax,
                        ad_shape_str(x, a, sizeof a));
  }
  return AD_OK;
}

/* Runs BODY for every element i of idx, in idx's order, with off the flat
 * offset into x that it names: the walk both ops share. idx's last dim is
 * walked as a run (the offsets of a run differ by its index and, off the
 * axis, by x's last stride); the dims before it by counting. */
#define GATHER_WALK(x, idx, ax, BODY)                                                              \
  do {                                                                                             \
    int64_t xs_[AD_MAX_DIMS], co_[AD_MAX_DIMS] = {0}, base_ = 0;                                   \
    for (int64_t d_ = (x)->ndim - 1, s_ = 1; d_ >= 0; s_ *= (x)->shape[d_], d_--) xs_[d_] = s_;    \
    const int32_t *p_ = (idx)->data;                                                               \
    const int last_ = (idx)->ndim - 1;                                                             \
    const int64_t run_ = last_ >= 0 ? (idx)->shape[last_] : 1, sa_ = xs_[ax];                      \
    const int64_t sl_ = last_ >= 0 && last_ != (ax) ? xs_[last_] : 0;                              \
    for (int64_t i0_ = 0; i0_ < (idx)->size; i0_ += run_) {                                        \
      for (int64_t k_ = 0; k_ < run_; k_++) {                                                      \
        const int64_t i = i0_ + k_, off = base_ + p_[i] * sa_ + k_ * sl_;                          \
        BODY;                                                                                      \
      }                                                                                            \
      for (int d_ = last_ - 1; d_ >= 0; d_--) {                                                    \
        if (d_ != (ax)) base_ += xs_[d_];                                                          \
        if (++co_[d_] < (idx)->shape[d_]) break;                                                   \
        if (d_ != (ax)) base_ -= xs_[d_] * co_[d_];                                                \
        co_[d_] = 0;                                                                               \
      }                                                                                            \
    }                                                                                              \
  } while (0)

/* ---- gather: y[i] = x[.., index[i], ..] (index's shape) */

static ad_status gather_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0], *idx = c->in[1];
  int ax;
  ad_status st = check_gather(c, x, idx, &ax);
  if (st != AD_OK) return st;
  c->out->ndim = idx->ndim;
  memcpy(c->out->shape, idx->shape, sizeof(int64_t) * (size_t)idx->ndim);
  c->out->dtype = x->dtype;
  return AD_OK;
}

static void gather_fwd(const ad_call *c) {
  const ad_tensor *x = c->in[0], *idx = c->in[1];
  int ax = ad_norm_axis(c->attrs->axis, x->ndim);
  if (x->dtype == AD_F32) {
    const float *X = x->data;
    float *Y = c->out->data;
    GATHER_WALK(x, idx, ax, Y[i] = X[off]);
  } else {
    const double *X = x->data;
    double *Y = c->out->data;
    GATHER_WALK(x, idx, ax, Y[i] = X[off]);
  }
}

static ad_status gather_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  ad_ctx *ctx = c->ctx;
  ad_tensor *z = ad_zeros_like(ctx, c->in[0]);
  return ad_call_set_grad(c, 0, ad_scatter_add(ctx, z, c->attrs->axis, c->in[1], c->gout));
}

/* x's first gradient of a pass straight into its buffer: zeros, then dy
 * added in index order, as scatter_add into zeros_like(x) adds it (the
 * same bits, without the zeros tensor, scatter_add's copy of it and the
 * copy into the gradient: nll_loss's backward). An addition into a
 * gradient already there is declined (repeated indices would round in
 * another order). */
static bool gather_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  if (k != 0 || !overwrite) return false;
  const ad_tensor *idx = c->in[1];
  int ax = ad_norm_axis(c->attrs->axis, grad->ndim);
  if (grad->size) memset(grad->data, 0, (size_t)grad->size * ad_dsize(grad->dtype));
  if (grad->dtype == AD_F32) {
    const float *S = c->gout->data;
    float *Y = grad->data;
    GATHER_WALK(grad, idx, ax, Y[off] += S[i]);
  } else {
    const double *S = c->gout->data;
    double *Y = grad->data;
    GATHER_WALK(grad, idx, ax, Y[off] += S[i]);
  }
  return true;
}

ad_tensor *ad_gather(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *index) {
  ad_attrs at = {.axis = axis};
  return ad_apply2(ctx, AD_OP_GATHER, x, index, &at);
}

/* x [4,5] by index [3,5] on axis 0, [4,3] on axis -1 (shorter off the
 * axis), x [2,3,4] by [2,5,3] on axis 1: repeats exercise the += of the
 * gradient */
static int gather_sample(const ad_sample_call *s) {
  static const int64_t sx[3][3] = {{4, 5}, {4, 5}, {2, 3, 4}},
                       si[3][3] = {{3, 5}, {3, 3}, {2, 5, 3}};
  static const int nd[3] = {2, 2, 3}, axis[3] = {0, -1, 1};
  int v = s->variant;
  if (v > 2) return 0;
  s->attrs->axis = axis[v];
  s->in[0] = ad_sample_tensor(s, nd[v], sx[v], -1, 1, true);
  s->in[1] = sample_idx(s, nd[v], si[v], sx[v][ad_norm_axis(axis[v], nd[v])]);
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_gather = {
    .name = "gather",
    .arity = 2,
    .attrs = AD_ATTRS_AXIS,
    .shape = gather_shape,
    .forward = gather_fwd,
    .backward = gather_bwd,
    .grad_into = gather_grad_into,
    .sample = gather_sample,
    .math = "y[i] = x[i with index[i] on axis]",
    .inputs = {"x", "index"},
    .grads = {"scatter_add(zeros_like(x), axis, index, dy)", NULL},
};

/* ---- scatter_add: y = x; y[i with index[i] on axis] += src[i] */

static ad_status scatter_add_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0], *idx = c->in[1], *src = c->in[2];
  int ax;
  ad_status st = check_gather(c, x, idx, &ax);
  if (st != AD_OK) return st;
  if (src->dtype != x->dtype)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: src is %s, the input %s", c->name,
                        ad_dtype_name(src->dtype), ad_dtype_name(x->dtype));
  bool ok = src->ndim == idx->ndim;
  for (int d = 0; ok && d < idx->ndim; d++) ok = src->shape[d] == idx->shape[d];
  if (!ok) {
    char a[64], b[64];
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: src %s is not shaped like index %s", c->name,
                        ad_shape_str(src, a, sizeof a), ad_shape_str(idx, b, sizeof b));
  }
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  c->out->dtype = x->dtype;
  return AD_OK;
}

/* in index order, in the dtype (as torch's CPU kernel adds) */
static void scatter_add_fwd(const ad_call *c) {
  const ad_tensor *x = c->in[0], *idx = c->in[1], *src = c->in[2];
  int ax = ad_norm_axis(c->attrs->axis, x->ndim);
  if (x->size) memcpy(c->out->data, x->data, (size_t)x->size * ad_dsize(x->dtype));
  if (x->dtype == AD_F32) {
    const float *S = src->data;
    float *Y = c->out->data;
    GATHER_WALK(x, idx, ax, Y[off] += S[i]);
  } else {
    const double *S = src->data;
    double *Y = c->out->data;
    GATHER_WALK(x, idx, ax, Y[off] += S[i]);
  }
}

static ad_status scatter_add_bwd(const ad_call *c) {
  if (c->needs[0]) {
    ad_status st = ad_call_set_grad(c, 0, c->gout);
    if (st != AD_OK) return st;
  }
  if (!c->needs[2]) return AD_OK;
  return ad_call_set_grad(c, 2, ad_gather(c->ctx, c->gout, c->attrs->axis, c->in[1]));
}

ad_tensor *ad_scatter_add(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *index, ad_tensor *src) {
  ad_attrs at = {.axis = axis};
  ad_tensor *in[3] = {x, index, src};
  return ad_op_apply(ctx, AD_OP_SCATTER_ADD, 3, in, &at);
}

/* x [3,4] and src [5,4] by index [5,4] on axis 0 (repeats add up); x
 * [4,5] with src [2,3] on axis -1 */
static int scatter_add_sample(const ad_sample_call *s) {
  static const int64_t sx[2][2] = {{3, 4}, {4, 5}}, si[2][2] = {{5, 4}, {2, 3}};
  int v = s->variant;
  if (v > 1) return 0;
  s->attrs->axis = v ? -1 : 0;
  s->in[0] = ad_sample_tensor(s, 2, sx[v], -1, 1, true);
  s->in[1] = sample_idx(s, 2, si[v], sx[v][v]);
  s->in[2] = ad_sample_tensor(s, 2, si[v], -1, 1, true);
  return s->in[0] && s->in[1] && s->in[2] ? 3 : -1;
}

const ad_op_def ad_def_scatter_add = {
    .name = "scatter_add",
    .arity = 3,
    .attrs = AD_ATTRS_AXIS,
    .shape = scatter_add_shape,
    .forward = scatter_add_fwd,
    .backward = scatter_add_bwd,
    .sample = scatter_add_sample,
    .math = "y = x; y[i with index[i] on axis] += src[i]",
    .inputs = {"x", "index", "src"},
    .grads = {"dy", NULL, "gather(dy, axis, index)"},
};

/* ----------------------------------------------------------------- flip
 * torch.flip along one axis: y[.., k, ..] = x[.., n-1-k, ..]. Its own
 * gradient. ad_flip over several axes flips them one after the other. */

static ad_status flip_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  int ax;
  ad_status st = axis_arg(c, c->attrs->axis, &ax);
  if (st != AD_OK) return st;
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  c->out->dtype = x->dtype;
  return AD_OK;
}

/* Rows of n elements of type T reversed: y[o, k] = x[o, n-1-k]. */
#define FLIP_ROWS(T)                                                                               \
  do {                                                                                             \
    const T *s_ = x->data;                                                                         \
    T *d_ = y->data;                                                                               \
    for (int64_t o = 0; o < outer; o++)                                                            \
      for (int64_t k = 0; k < n; k++) d_[o * n + k] = s_[o * n + n - 1 - k];                       \
  } while (0)

/* y = x flipped along axis ax (y shaped as x, its own buffer). */
static void flip_into(const ad_tensor *x, ad_tensor *y, int ax) {
  int64_t outer = ad_dims_span(x, 0, ax), n = x->shape[ax],
          inner = ad_dims_span(x, ax + 1, x->ndim);
  size_t es = ad_dsize(x->dtype), blk = (size_t)inner * es;
  const char *src = x->data;
  char *dst = y->data;
  if (y->size == 0) return;
  if (inner == 1) { /* the last axis: elements reversed in a loop of the dtype (not through
                     * another type: strict aliasing), not a copy call each */
    if (x->dtype == AD_F32)
      FLIP_ROWS(float);
    else if (x->dtype == AD_F64)
      FLIP_ROWS(double);
    else
      FLIP_ROWS(int32_t);
    return;
  }
  for (int64_t o = 0; o < outer; o++)
    for (int64_t k = 0; k < n; k++)
      memcpy(dst + (size_t)(o * n + k) * blk, src + (size_t)(o * n + n - 1 - k) * blk, blk);
}
#undef FLIP_ROWS

static void flip_fwd(const ad_call *c) {
  flip_into(c->in[0], c->out, ad_norm_axis(c->attrs->axis, c->in[0]->ndim));
}

/* A new gradient of x is dy flipped straight into its buffer: a copy each
 * way (one pass, where the backward's flip and its copy into the gradient
 * were two, and the copy split over threads fetched the flip's output
 * across cores). */
static bool flip_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  if (k != 0 || !overwrite) return false;
  flip_into(c->gout, grad, ad_norm_axis(c->attrs->axis, c->gout->ndim));
  return true;
}

static ad_status flip_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_flip(c->ctx, c->gout, 1, &c->attrs->axis));
}

ad_tensor *ad_flip(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes) {
  if (!ctx || !x) return ad_apply1(ctx, AD_OP_FLIP, x, NULL); /* reports the NULL */
  if (!ad_arg_ok(ctx, "flip", "input 0", x)) return NULL;
  char a[64];
  if (n_axes < 0 || n_axes > x->ndim) {
    ad_set_error(ctx, AD_ERR_ARG, "flip: %d axes for %s", n_axes, ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  if (n_axes > 0 && !axes) {
    ad_set_error(ctx, AD_ERR_NULL, "flip: axes is NULL");
    return NULL;
  }
  bool seen[AD_MAX_DIMS] = {0};
  for (int k = 0; k < n_axes; k++) {
    int d = ad_norm_axis(axes[k], x->ndim);
    if (d < 0 || seen[d]) {
      ad_set_error(ctx, AD_ERR_ARG, "flip: axis %d %s for %s", axes[k],
                   d < 0 ? "out of range" : "given twice", ad_shape_str(x, a, sizeof a));
      return NULL;
    }
    seen[d] = true;
  }
  ad_tensor *y = x;
  for (int k = 0; y && k < n_axes; k++) {
    ad_attrs at = {.axis = axes[k]};
    y = ad_apply1(ctx, AD_OP_FLIP, y, &at);
  }
  return y;
}

/* [3,4] on axis 0, on axis -1; [2,3,4] on axis 1 */
static int flip_sample(const ad_sample_call *s) {
  static const int64_t shape[3] = {2, 3, 4};
  static const int axis[3] = {0, -1, 1};
  int v = s->variant;
  if (v > 2) return 0;
  s->attrs->axis = axis[v];
  return (s->in[0] = ad_sample_tensor(s, v == 2 ? 3 : 2, v == 2 ? shape : shape + 1, -1, 1, true))
             ? 1
             : -1;
}

const ad_op_def ad_def_flip = {
    .name = "flip",
    .arity = 1,
    .attrs = AD_ATTRS_AXIS,
    .shape = flip_shape,
    .forward = flip_fwd,
    .backward = flip_bwd,
    .grad_into = flip_grad_into,
    .sample = flip_sample,
    .math = "y[.., k, ..] = x[.., n-1-k, ..] on axis",
    .inputs = {"x"},
    .grads = {"flip(dy, axis)"},
};
