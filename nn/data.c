/* data.c: permutations, row selection, train/test split and mini-batches. */
#include "nn_internal.h"

void nn_permutation(ad_rng *rng, int64_t n, int64_t *idx) {
  if (!idx) return;
  for (int64_t i = 0; i < n; i++) idx[i] = i;
  if (!rng) return;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)ad_rng_below(rng, (uint64_t)i + 1);
    int64_t t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
  }
}

/* Bytes of one row (axis 0) of x. */
static size_t row_bytes(const ad_tensor *x) {
  return x->shape[0] ? (size_t)(x->size / x->shape[0]) * ad_dtype_size(x->dtype) : 0;
}

typedef struct rows_job {
  ad_tensor *dst;
  const ad_tensor *src;
  const int64_t *rows;
  size_t rb;
} rows_job;

/* Rows b..e-1. Each row's copy streams once its first lines arrive, but
 * rows are scattered, so the copy of one row would wait for memory alone:
 * every line of the row two places on is requested while this one is
 * copied, so two rows' misses are in flight. */
#define GATHER_AHEAD 2

static void copy_range(void *ud, int64_t b, int64_t e) {
  const rows_job *j = ud;
  for (int64_t i = b; i < e; i++) {
#if defined(__GNUC__)
    if (i + GATHER_AHEAD < e) {
      const char *r = (const char *)j->src->data + (size_t)j->rows[i + GATHER_AHEAD] * j->rb;
      for (size_t o = 0; o < j->rb; o += 64) __builtin_prefetch(r + o, 0, 3);
    }
#endif
    memcpy((char *)j->dst->data + (size_t)i * j->rb,
           (const char *)j->src->data + (size_t)j->rows[i] * j->rb, j->rb);
  }
}

/* A batch of fewer bytes is gathered by the calling thread alone: the
 * batch then waits in its cache for the forward pass, which a worker's
 * share would have to cross cores for (docs/performance.md, "Threads"). */
#define GATHER_SPLIT_MIN (1 << 18)

/* Gathers rows: latency-bound when the rows are out of cache, so with the
 * library's threads (ad_set_num_threads) a large batch is shared out and
 * more misses are in flight at once. */
static void copy_rows(ad_tensor *dst, const ad_tensor *src, int64_t n, const int64_t *rows) {
  rows_job j = {dst, src, rows, row_bytes(src)};
  if (!j.rb) return;
  bool small = (double)n * (double)j.rb < GATHER_SPLIT_MIN;
  ad_parallel_for(n, small ? n : (int64_t)(32768 / j.rb) + 1, copy_range, &j);
}

/* Asks the memory system for the rows[0..n-1] of x that copy_rows will
 * read next: the next batch's rows (and labels) are scattered over the data
 * set (often out of cache), so their first lines are requested while the
 * current batch trains, and the hardware prefetcher streams the rest of
 * each row once the copy starts. (Requesting every line costs more in stalled prefetches than
 * it saves; measured with perf on the seed model.) */
static void prefetch_rows(const ad_tensor *x, int64_t n, const int64_t *rows) {
#if defined(__GNUC__)
  size_t rb = row_bytes(x), lim = rb < 512 ? rb : 512;
  for (int64_t i = 0; i < n; i++) {
    const char *r = (const char *)x->data + (size_t)rows[i] * rb;
    for (size_t o = 0; o < lim; o += 64) __builtin_prefetch(r + o, 0, 2);
  }
#else
  (void)x, (void)n, (void)rows;
#endif
}

/* A persistent tensor shaped like x with n rows. */
static ad_tensor *with_rows(ad_ctx *ctx, const ad_tensor *x, int64_t n) {
  int64_t s[AD_MAX_DIMS];
  memcpy(s, x->shape, sizeof s);
  s[0] = n;
  return ad_zeros(ctx, x->dtype, x->ndim, s);
}

ad_tensor *nn_take_rows(ad_ctx *ctx, const ad_tensor *x, int64_t n, const int64_t *rows) {
  if (!ctx) return NULL;
  if (!x || (n > 0 && !rows)) {
    nn_null_arg(ctx, "take_rows", x ? "rows" : "tensor");
    return NULL;
  }
  if (nn_check_input(ctx, "take_rows", "tensor", x) != AD_OK) return NULL;
  char a[64];
  if (x->ndim < 1 || n < 0) {
    ad_set_error(ctx, AD_ERR_ARG, "take_rows: cannot take %lld rows of %s", (long long)n,
                 ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  for (int64_t i = 0; i < n; i++)
    if (rows[i] < 0 || rows[i] >= x->shape[0]) {
      ad_set_error(ctx, AD_ERR_ARG, "take_rows: row %lld is outside 0..%lld of %s",
                   (long long)rows[i], (long long)x->shape[0] - 1, ad_shape_str(x, a, sizeof a));
      return NULL;
    }
  ad_tensor *t = with_rows(ctx, x, n);
  if (t) copy_rows(t, x, n, rows);
  return t;
}

/* Checks x (and y) for row-wise use; records an error naming fn. */
static bool check_xy(ad_ctx *ctx, const char *fn, const ad_tensor *x, const ad_tensor *y) {
  char a[64], b[64];
  if (nn_check_input(ctx, fn, "x", x) != AD_OK || (y && nn_check_input(ctx, fn, "y", y) != AD_OK))
    return false;
  if (x->ndim < 1 || (y && y->ndim < 1)) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: x %s and y %s need a row axis", fn,
                 ad_shape_str(x, a, sizeof a), ad_shape_str(y, b, sizeof b));
    return false;
  }
  if (y && y->shape[0] != x->shape[0]) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: x %s and y %s have different numbers of rows", fn,
                 ad_shape_str(x, a, sizeof a), ad_shape_str(y, b, sizeof b));
    return false;
  }
  return true;
}

ad_status nn_train_test_split(ad_ctx *ctx, ad_tensor *x, ad_tensor *y, int64_t n_test, bool shuffle,
                              uint64_t seed, ad_tensor **x_train, ad_tensor **y_train,
                              ad_tensor **x_test, ad_tensor **y_test) {
  if (!ctx) return AD_ERR_NULL;
  if (!x_train || !x_test || (y && (!y_train || !y_test)))
    return ad_set_error(ctx, AD_ERR_NULL, "train_test_split: an output pointer is NULL");
  *x_train = *x_test = NULL;
  if (y_train) *y_train = NULL;
  if (y_test) *y_test = NULL;
  if (!check_xy(ctx, "train_test_split", x, y)) return ad_last_status(ctx);
  int64_t rows = x->shape[0];
  if (n_test < 0 || n_test > rows)
    return ad_set_error(ctx, AD_ERR_ARG, "train_test_split: n_test %lld is outside 0..%lld",
                        (long long)n_test, (long long)rows);
  size_t bytes = (size_t)(rows ? rows : 1) * sizeof(int64_t);
  int64_t *perm = ad_malloc(ctx, bytes);
  if (!perm) return AD_ERR_OOM;
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  nn_permutation(shuffle ? &rng : NULL, rows, perm);
  int64_t n_train = rows - n_test;
  *x_train = nn_take_rows(ctx, x, n_train, perm);
  *x_test = nn_take_rows(ctx, x, n_test, perm + n_train);
  if (y) {
    *y_train = nn_take_rows(ctx, y, n_train, perm);
    *y_test = nn_take_rows(ctx, y, n_test, perm + n_train);
  }
  ad_free(ctx, perm, bytes);
  if (!*x_train || !*x_test || (y && (!*y_train || !*y_test))) {
    ad_tensor_free(*x_train), ad_tensor_free(*x_test);
    *x_train = *x_test = NULL;
    if (y) {
      ad_tensor_free(*y_train), ad_tensor_free(*y_test);
      *y_train = *y_test = NULL;
    }
    return ad_last_status(ctx);
  }
  return AD_OK;
}

/* ---------------------------------------------------------------- batcher */

struct nn_batcher {
  ad_ctx *ctx;
  ad_tensor *x, *y;
  uint64_t sx, sy; /* their serials: 0, or another, once they were freed */
  int64_t begin, rows, batch;
  int64_t asked; /* the batch size asked for (batch is at most rows) */
  bool shuffle;
  bool drop_last; /* end the epoch before a batch of fewer than asked rows */
  ad_rng rng;
  int64_t *order;     /* rows of this epoch, absolute */
  int64_t pos;        /* next position in order; -1: start a new epoch */
  ad_tensor *bx, *by; /* full batches */
  ad_tensor *rx, *ry; /* the last, smaller batch (NULL if none) */
};

nn_batcher *nn_batcher_new_range(ad_ctx *ctx, ad_tensor *x, ad_tensor *y, int64_t begin,
                                 int64_t end, int64_t batch_size, bool shuffle, uint64_t seed) {
  if (!ctx) return NULL;
  if (!check_xy(ctx, "batcher", x, y)) return NULL;
  if (nn_check_persistent(ctx, "batcher", "x", x) != AD_OK ||
      nn_check_persistent(ctx, "batcher", "y", y) != AD_OK)
    return NULL;
  if (begin < 0 || end < begin || end > x->shape[0] || batch_size < 1) {
    ad_set_error(ctx, AD_ERR_ARG, "batcher: rows [%lld, %lld) of %lld, batch size %lld",
                 (long long)begin, (long long)end, (long long)x->shape[0], (long long)batch_size);
    return NULL;
  }
  nn_batcher *b = ad_malloc(ctx, sizeof *b);
  if (!b) return NULL;
  memset(b, 0, sizeof *b);
  b->ctx = ctx;
  b->x = x;
  b->y = y;
  b->sx = ad_tensor_serial(x);
  b->sy = ad_tensor_serial(y);
  b->begin = begin;
  b->rows = end - begin;
  b->batch = batch_size < b->rows ? batch_size : (b->rows ? b->rows : 1);
  b->asked = batch_size;
  b->shuffle = shuffle;
  b->pos = -1;
  ad_rng_seed(&b->rng, seed);
  b->order = ad_malloc(ctx, (size_t)(b->rows ? b->rows : 1) * sizeof *b->order);
  int64_t rest = b->rows % b->batch;
  bool ok = b->order && (b->bx = with_rows(ctx, x, b->batch)) &&
            (!y || (b->by = with_rows(ctx, y, b->batch)));
  if (ok && rest)
    ok = (b->rx = with_rows(ctx, x, rest)) && (!y || (b->ry = with_rows(ctx, y, rest)));
  if (!ok) {
    nn_batcher_free(b);
    return NULL;
  }
  return b;
}

nn_batcher *nn_batcher_new(ad_ctx *ctx, ad_tensor *x, ad_tensor *y, int64_t batch_size,
                           bool shuffle, uint64_t seed) {
  if (ctx && !x) {
    nn_null_arg(ctx, "batcher", "x");
    return NULL;
  }
  return nn_batcher_new_range(ctx, x, y, 0, x ? x->shape[0] : 0, batch_size, shuffle, seed);
}

bool nn_batcher_next(nn_batcher *b, ad_tensor **xb, ad_tensor **yb) {
  ad_tensor *x = NULL, *y = NULL;
  if (nn_batcher_fetch(b, &x, &y) != AD_OK || !x) return false;
  if (xb) *xb = x;
  if (yb) *yb = y;
  return true;
}

ad_status nn_batcher_fetch(nn_batcher *b, ad_tensor **xb, ad_tensor **yb) {
  *xb = *yb = NULL;
  if (!b) return AD_ERR_NULL;
  /* a freed x reads as no rows of no bytes: the batch kept the last rows */
  bool fx = ad_tensor_serial(b->x) != b->sx;
  if (fx || (b->y && ad_tensor_serial(b->y) != b->sy))
    return ad_set_error(b->ctx, AD_ERR_STATE,
                        "batcher_next: %s was freed, but the batcher reads its rows at every batch "
                        "(free the batcher first)",
                        fx ? "x" : "y");
  if (b->pos < 0) { /* a new epoch */
    nn_permutation(b->shuffle ? &b->rng : NULL, b->rows, b->order);
    for (int64_t i = 0; i < b->rows; i++) b->order[i] += b->begin;
    b->pos = 0;
  }
  if (b->pos >= b->rows) {
    b->pos = -1;
    return AD_OK;
  }
  int64_t n = b->rows - b->pos < b->batch ? b->rows - b->pos : b->batch;
  if (b->drop_last && n < b->asked) {
    b->pos = -1;
    return AD_OK;
  }
  ad_tensor *tx = n == b->batch ? b->bx : b->rx, *ty = n == b->batch ? b->by : b->ry;
  /* the batch tensors are overwritten in place: an op of the tape may have
   * read the last batch (a loss summed over batches before one backward) */
  ad_status st = ad_tensor_mark_modified(tx);
  if (st == AD_OK && b->y) st = ad_tensor_mark_modified(ty);
  if (st != AD_OK) return st;
  copy_rows(tx, b->x, n, b->order + b->pos);
  if (b->y) copy_rows(ty, b->y, n, b->order + b->pos);
  b->pos += n;
  int64_t ahead = b->rows - b->pos < b->batch ? b->rows - b->pos : b->batch;
  prefetch_rows(b->x, ahead, b->order + b->pos);
  if (b->y) prefetch_rows(b->y, ahead, b->order + b->pos);
  *xb = tx;
  *yb = b->y ? ty : NULL;
  return AD_OK;
}

ad_status nn_batcher_set_drop_last(nn_batcher *b, bool drop_last) {
  if (!b) return AD_ERR_NULL;
  b->drop_last = drop_last;
  return AD_OK;
}

int64_t nn_batcher_batches(const nn_batcher *b) {
  if (!b) return 0;
  return b->drop_last ? b->rows / b->asked : (b->rows + b->batch - 1) / b->batch;
}

int64_t nn_batcher_rows(const nn_batcher *b) {
  if (!b) return 0;
  return b->drop_last ? b->rows / b->asked * b->asked : b->rows;
}

void nn_batcher_reset(nn_batcher *b) {
  if (b) b->pos = -1;
}

void nn_batcher_free(nn_batcher *b) {
  if (!b) return;
  ad_ctx *ctx = b->ctx;
  ad_tensor_free(b->bx);
  ad_tensor_free(b->by);
  ad_tensor_free(b->rx);
  ad_tensor_free(b->ry);
  ad_free(ctx, b->order, (size_t)(b->rows ? b->rows : 1) * sizeof *b->order);
  ad_free(ctx, b, sizeof *b);
}
