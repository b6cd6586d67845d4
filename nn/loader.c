/* loader.c: batches of a map-style data set produced by a callback, loaded
 * ahead by threads of the loader's own (PyTorch's DataLoader).
 *
 * The threads only call get into plain buffers (slots); the caller's thread
 * alone touches the context: it draws each epoch's order, copies a ready
 * slot into the batch tensors, and frees the slot for the next batch. Batch
 * k goes into slot k % prefetch, so batches come out in order whichever
 * thread finished first. Every hand-over (order, slots, counters) happens
 * under one mutex.
 *
 * fork() copies only the thread that calls it: in a forked child the
 * loader's workers are gone, and its mutex may be held by one of them. A
 * loader used in a child forked after it was made (fork_gen, counted by an
 * atfork handler, differs from the loader's) takes a fresh mutex and
 * conditions, frees every slot, and has the epoch's batches from the next
 * one it hands out loaded again by workers of the child's own (the same
 * batches: the epoch's order was copied with the rest of the process). */
#include "nn_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#define MAX_WORKERS 256

static _Atomic unsigned fork_gen; /* forks since the process started, in this process's line */
static void count_fork(void) { atomic_fetch_add(&fork_gen, 1); }
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static int fork_registered; /* pthread_atfork's result: 0 when the handler is in place */
static void register_fork_count(void) { fork_registered = pthread_atfork(NULL, NULL, count_fork); }

enum { SLOT_FREE, SLOT_BUSY, SLOT_READY };

typedef struct slot {
  int state;
  int64_t batch;               /* the batch it holds or loads */
  int64_t failed;              /* -1, or the index whose get failed */
  int rc;                      /* get's return value then */
  char msg[NN_SAMPLE_MSG_MAX]; /* and its message */
} slot;

struct nn_loader {
  ad_ctx *ctx;
  nn_dataset ds;
  nn_loader_opts opts;
  int64_t batch, nb, rows; /* batch size, batches and rows per epoch */
  bool shuffle;
  ad_rng rng;
  size_t xs, ys;  /* bytes of one sample's x and y */
  int64_t *order; /* the epoch's indices (ds.len of them) */
  int rank, size; /* the shard of each batch loaded (nn_loader_shard) */
  int64_t global; /* the rows of the last batch handed out, all shards */
  int workers, nslots;
  unsigned char *xbuf, *ybuf; /* nslots slots of batch samples */
  slot *slots;
  ad_tensor *bx, *by, *rx, *ry; /* a full batch's shard, the last one's (or NULL) */
  /* under mu */
  pthread_mutex_t mu;
  pthread_cond_t work, done; /* a slot to load; a slot loaded or a worker idle */
  bool sync_ok;              /* mu, work and done were initialised */
  bool in_epoch, quit;
  atomic_bool stop; /* the epoch ended or the loader is freed: the loads in
                       flight stop after their current get (read unlocked) */
  int64_t issued, consumed;
  int busy;
  pthread_t *th;
  int started;
  unsigned gen; /* fork_gen when the workers were started */
};

/* Rows [*b, *e) of batch k's positions in the epoch's order, for this
 * loader's shard: rows [n r / size, n (r + 1) / size) of its n (nn_fit's
 * sharding rule); *n gets n. */
static void batch_rows(const nn_loader *l, int64_t k, int64_t *b, int64_t *e, int64_t *n) {
  int64_t start = k * l->batch, rows = l->ds.len - start < l->batch ? l->ds.len - start : l->batch;
  *n = rows;
  *b = start + rows * l->rank / l->size;
  *e = start + rows * (l->rank + 1) / l->size;
}

/* Loads batch k into slot s (any thread; touches no context). */
static void load_batch(nn_loader *l, int64_t k, slot *s) {
  int64_t b, e, n;
  batch_rows(l, k, &b, &e, &n);
  unsigned char *x = l->xbuf + (size_t)(s - l->slots) * (size_t)l->batch * l->xs;
  unsigned char *y = l->ybuf + (size_t)(s - l->slots) * (size_t)l->batch * l->ys;
  s->failed = -1;
  for (int64_t i = b; i < e; i++) {
    /* a batch of an ended epoch is dropped: don't wait for its other gets */
    if (atomic_load_explicit(&l->stop, memory_order_relaxed)) return;
    int64_t idx = l->order[i];
    s->msg[0] = 0;
    int rc =
        l->ds.get(l->ds.ud, idx, x + (size_t)(i - b) * l->xs, y + (size_t)(i - b) * l->ys, s->msg);
    if (rc != 0) {
      s->failed = idx;
      s->rc = rc;
      s->msg[NN_SAMPLE_MSG_MAX - 1] = 0;
      return;
    }
  }
}

static void *worker(void *arg) {
  nn_loader *l = arg;
  pthread_mutex_lock(&l->mu);
  while (!l->quit) {
    if (l->in_epoch && l->issued < l->nb && l->issued < l->consumed + l->nslots) {
      int64_t k = l->issued++;
      slot *s = &l->slots[k % l->nslots];
      s->state = SLOT_BUSY;
      s->batch = k;
      l->busy++;
      pthread_mutex_unlock(&l->mu);
      load_batch(l, k, s);
      pthread_mutex_lock(&l->mu);
      l->busy--;
      s->state = SLOT_READY;
      pthread_cond_broadcast(&l->done);
      continue;
    }
    pthread_cond_wait(&l->work, &l->mu);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

/* Ends the epoch: no new batch is issued, the loads in flight finish, every
 * slot is free. */
static void end_epoch(nn_loader *l) {
  if (l->workers) pthread_mutex_lock(&l->mu);
  l->in_epoch = false;
  atomic_store(&l->stop, true);
  while (l->workers && l->busy > 0) pthread_cond_wait(&l->done, &l->mu);
  for (int i = 0; i < l->nslots; i++) l->slots[i].state = SLOT_FREE;
  l->issued = l->consumed = 0;
  if (l->workers) pthread_mutex_unlock(&l->mu);
}

static void start_epoch(nn_loader *l) {
  if (l->workers) pthread_mutex_lock(&l->mu);
  nn_permutation(l->shuffle ? &l->rng : NULL, l->ds.len, l->order);
  l->issued = l->consumed = 0;
  l->in_epoch = true;
  atomic_store(&l->stop, false);
  if (l->workers) {
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
  }
}

/* The shard's tensors: of a full batch's rows, and of the last batch's when
 * it is smaller and its shard has other rows. */
static bool alloc_tensors(nn_loader *l) {
  ad_tensor_free(l->bx), ad_tensor_free(l->by), ad_tensor_free(l->rx), ad_tensor_free(l->ry);
  l->bx = l->by = l->rx = l->ry = NULL;
  int64_t sx[AD_MAX_DIMS], sy[AD_MAX_DIMS], b, e, n;
  memcpy(sx + 1, l->ds.x_shape, (size_t)l->ds.x_ndim * sizeof *sx);
  memcpy(sy + 1, l->ds.y_shape, (size_t)l->ds.y_ndim * sizeof *sy);
  for (int last = 0; last < 2; last++) {
    if (l->nb == 0 || (last && l->rows % l->batch == 0)) break;
    batch_rows(l, last ? l->nb - 1 : 0, &b, &e, &n);
    sx[0] = sy[0] = e - b;
    ad_tensor **tx = last ? &l->rx : &l->bx, **ty = last ? &l->ry : &l->by;
    if (!(*tx = ad_zeros(l->ctx, l->ds.x_dtype, l->ds.x_ndim + 1, sx)) ||
        !(*ty = ad_zeros(l->ctx, l->ds.y_dtype, l->ds.y_ndim + 1, sy))) {
      ad_tensor_free(l->bx), ad_tensor_free(l->by), ad_tensor_free(l->rx);
      l->bx = l->by = l->rx = NULL; /* none: nn_loader_next allocates again */
      return false;
    }
  }
  return true;
}

ad_status nn_loader_shard(nn_loader *l, int rank, int size) {
  end_epoch(l);
  l->rank = rank, l->size = size;
  return alloc_tensors(l) ? AD_OK : AD_ERR_OOM;
}

int64_t nn_loader_global_rows(const nn_loader *l) { return l->global; }

/* Bytes of one sample of ndim axes of shape in dtype into *bytes; false
 * for a bad dtype, axis count or dimension, or a size over INT64_MAX. */
static bool sample_bytes(ad_dtype dt, bool labels, int ndim, const int64_t *shape, size_t *bytes) {
  if (!(dt == AD_F32 || dt == AD_F64 || (labels && dt == AD_I32))) return false;
  if (ndim < 0 || ndim > AD_MAX_DIMS - 1) return false;
  int64_t n = (int64_t)ad_dtype_size(dt);
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0) return false;
    if (shape[d] > 0 && n > INT64_MAX / shape[d]) return false;
    n *= shape[d];
  }
  *bytes = (size_t)n;
  return true;
}

/* Starts the workers that are not running (started counts those running,
 * which free joins: not one that could not be created). False when one
 * cannot be started. */
static bool start_workers(nn_loader *l) {
  l->gen = atomic_load(&fork_gen);
  while (l->started < l->workers) {
    if (pthread_create(&l->th[l->started], NULL, worker, l) != 0) return false;
    l->started++;
  }
  return true;
}

/* In a child forked since the workers started (see the top): forgets them,
 * with the lock, conditions and loads they may have held. The next
 * nn_loader_next starts new ones. */
static bool forget_parent_workers(nn_loader *l) {
  if (l->gen == atomic_load(&fork_gen)) return l->sync_ok;
  l->sync_ok = pthread_mutex_init(&l->mu, NULL) == 0;
  if (l->sync_ok && pthread_cond_init(&l->work, NULL) != 0) {
    pthread_mutex_destroy(&l->mu);
    l->sync_ok = false;
  }
  if (l->sync_ok && pthread_cond_init(&l->done, NULL) != 0) {
    pthread_cond_destroy(&l->work);
    pthread_mutex_destroy(&l->mu);
    l->sync_ok = false;
  }
  l->started = 0;
  l->busy = 0;
  l->issued = l->consumed;
  for (int i = 0; i < l->nslots; i++) l->slots[i].state = SLOT_FREE;
  l->gen = atomic_load(&fork_gen);
  return l->sync_ok;
}

nn_loader *nn_loader_new(ad_ctx *ctx, const nn_dataset *ds, const nn_loader_opts *opts) {
  if (!ctx) return NULL;
  if (!ds || !ds->get) {
    nn_null_arg(ctx, "loader_new", ds ? "get" : "dataset");
    return NULL;
  }
  nn_loader_opts o = {0};
  if (opts) o = *opts;
  int64_t batch = o.batch_size ? o.batch_size : 1;
  size_t xs = 0, ys = 0;
  if (ds->len < 0 || o.batch_size < 0 || o.num_workers < 0 || o.num_workers > MAX_WORKERS ||
      o.prefetch < 0) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "loader_new: len %lld, batch size %lld, %d workers, prefetch %d (len >= 0, "
                 "batch size >= 0, 0 <= workers <= %d, prefetch >= 0)",
                 (long long)ds->len, (long long)o.batch_size, o.num_workers, o.prefetch,
                 MAX_WORKERS);
    return NULL;
  }
  if (o.prefetch > 0 && o.num_workers == 0) { /* PyTorch's ValueError */
    ad_set_error(ctx, AD_ERR_ARG,
                 "loader_new: prefetch %d needs num_workers > 0 (batches are loaded ahead "
                 "only by workers)",
                 o.prefetch);
    return NULL;
  }
  if (!sample_bytes(ds->x_dtype, false, ds->x_ndim, ds->x_shape, &xs) ||
      !sample_bytes(ds->y_dtype, true, ds->y_ndim, ds->y_shape, &ys)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "loader_new: a sample's x (dtype %d, %d axes) or y (dtype %d, %d axes) is "
                 "not one the loader takes: x f32 or f64, y f32, f64 or i32, 0..%d axes of "
                 "sizes >= 0, under 2^63 bytes",
                 (int)ds->x_dtype, ds->x_ndim, (int)ds->y_dtype, ds->y_ndim, AD_MAX_DIMS - 1);
    return NULL;
  }
  int nslots = o.num_workers == 0 ? 1 : o.prefetch ? o.prefetch : 2 * o.num_workers;
  int64_t nb = ds->len / batch + (!o.drop_last && ds->len % batch != 0);
  /* the rows a slot holds: a batch size over len gives one batch of len
   * rows (or none with drop_last); no batch needs none */
  if (batch > ds->len || nb == 0) batch = nb ? ds->len : 1;
  if ((uint64_t)ds->len > SIZE_MAX / sizeof(int64_t)) { /* the epoch's order */
    ad_set_error(ctx, AD_ERR_ARG,
                 "loader_new: the indices of %lld samples overflow the address space",
                 (long long)ds->len);
    return NULL;
  }
  size_t per = xs > ys ? xs : ys; /* the slots' bytes, and a batch tensor's elements */
  if ((per && (uint64_t)batch > (uint64_t)(INT64_MAX / 2) / per / (uint64_t)nslots)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "loader_new: batches of %lld samples of %zu and %zu bytes, %d in flight, "
                 "overflow the address space",
                 (long long)batch, xs, ys, nslots);
    return NULL;
  }
  nn_loader *l = ad_malloc(ctx, sizeof *l);
  if (!l) return NULL;
  memset(l, 0, sizeof *l);
  atomic_init(&l->stop, false);
  l->gen = atomic_load(&fork_gen);
  l->ctx = ctx;
  l->ds = *ds;
  l->opts = o;
  l->batch = batch;
  l->nb = nb;
  l->rows = o.drop_last ? nb * batch : ds->len;
  l->shuffle = o.shuffle;
  ad_rng_seed(&l->rng, o.seed);
  l->xs = xs, l->ys = ys;
  l->rank = 0, l->size = 1;
  l->workers = o.num_workers;
  l->nslots = nslots;
  size_t slot_bytes = (size_t)batch * (size_t)nslots;
  bool ok = (l->order = ad_malloc(ctx, (size_t)(ds->len ? ds->len : 1) * sizeof *l->order)) &&
            (l->slots = ad_malloc(ctx, (size_t)nslots * sizeof *l->slots)) &&
            (l->xbuf = ad_malloc(ctx, slot_bytes * xs + 1)) &&
            (l->ybuf = ad_malloc(ctx, slot_bytes * ys + 1)) &&
            (!l->workers || (l->th = ad_malloc(ctx, (size_t)l->workers * sizeof *l->th))) &&
            alloc_tensors(l);
  if (!ok) {
    nn_loader_free(l);
    return NULL;
  }
  memset(l->slots, 0, (size_t)nslots * sizeof *l->slots);
  if (l->workers) {
    pthread_once(&fork_once, register_fork_count);
    if (fork_registered != 0) {
      nn_loader_free(l);
      ad_set_error(ctx, AD_ERR_OOM,
                   "loader_new: cannot register the handler that keeps a "
                   "forked child's loader working (pthread_atfork)");
      return NULL;
    }
    if (pthread_mutex_init(&l->mu, NULL) != 0)
      ok = false;
    else if (pthread_cond_init(&l->work, NULL) != 0) {
      pthread_mutex_destroy(&l->mu);
      ok = false;
    } else if (pthread_cond_init(&l->done, NULL) != 0) {
      pthread_cond_destroy(&l->work);
      pthread_mutex_destroy(&l->mu);
      ok = false;
    }
    l->sync_ok = ok;
    if (!ok || !start_workers(l)) {
      nn_loader_free(l);
      ad_set_error(ctx, AD_ERR_STATE, "loader_new: cannot start %d worker threads", o.num_workers);
      return NULL;
    }
  }
  return l;
}

ad_status nn_loader_next(nn_loader *l, ad_tensor **xb, ad_tensor **yb) {
  if (xb) *xb = NULL;
  if (yb) *yb = NULL;
  if (!l) return AD_ERR_NULL;
  if (!xb || !yb) return nn_null_arg(l->ctx, "loader_next", !xb ? "xb" : "yb");
  if (l->workers && (!forget_parent_workers(l) || !start_workers(l)))
    return ad_set_error(l->ctx, AD_ERR_STATE,
                        "loader_next: cannot start %d worker threads in this process (forked "
                        "since the loader was made; %d running)",
                        l->workers, l->started);
  if (!l->in_epoch) start_epoch(l);
  int64_t k = l->consumed;
  if (k >= l->nb) {
    end_epoch(l);
    return AD_OK;
  }
  if (!l->bx && !alloc_tensors(l)) return ad_last_status(l->ctx);
  slot *s = &l->slots[k % l->nslots];
  if (!l->workers) {
    if (s->state != SLOT_READY) {
      load_batch(l, k, s);
      s->state = SLOT_READY;
    }
  } else {
    pthread_mutex_lock(&l->mu);
    while (s->state != SLOT_READY || s->batch != k) pthread_cond_wait(&l->done, &l->mu);
    pthread_mutex_unlock(&l->mu);
  }
  if (s->failed >= 0) {
    int64_t idx = s->failed;
    char msg[NN_SAMPLE_MSG_MAX];
    if (s->msg[0])
      snprintf(msg, sizeof msg, "%s", s->msg);
    else
      snprintf(msg, sizeof msg, "get returned %d", s->rc);
    end_epoch(l);
    return ad_set_error(l->ctx, AD_ERR_IO, "loader: sample %lld: %s", (long long)idx, msg);
  }
  int64_t b, e, n;
  batch_rows(l, k, &b, &e, &n);
  bool last = n < l->batch && l->rx;
  ad_tensor *tx = last ? l->rx : l->bx, *ty = last ? l->ry : l->by;
  /* overwritten in place: an op of the tape may have read the last batch */
  if (ad_tensor_mark_modified(tx) != AD_OK || ad_tensor_mark_modified(ty) != AD_OK)
    return ad_last_status(l->ctx);
  size_t i = (size_t)(s - l->slots) * (size_t)l->batch;
  if (e > b) { /* a rank's shard may be empty */
    memcpy(tx->data, l->xbuf + i * l->xs, (size_t)(e - b) * l->xs);
    memcpy(ty->data, l->ybuf + i * l->ys, (size_t)(e - b) * l->ys);
  }
  l->global = n;
  if (l->workers) pthread_mutex_lock(&l->mu);
  s->state = SLOT_FREE;
  l->consumed++;
  if (l->workers) {
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
  }
  *xb = tx;
  *yb = ty;
  return AD_OK;
}

void nn_loader_reset(nn_loader *l) {
  if (!l) return;
  if (l->workers && !forget_parent_workers(l)) { /* no lock in the child: nothing waits on it */
    l->in_epoch = false;
    l->issued = l->consumed = 0;
    return;
  }
  end_epoch(l);
}

int64_t nn_loader_batches(const nn_loader *l) { return l ? l->nb : 0; }

int64_t nn_loader_rows(const nn_loader *l) { return l ? l->rows : 0; }

/* The batch size asked for: l->batch may be smaller (len, which gives the
 * same batches), but nn_fit_loader validates in batches of this size, as
 * nn_fit does. */
int64_t nn_loader_batch_size(const nn_loader *l) {
  return l->opts.batch_size ? l->opts.batch_size : 1;
}

const nn_loader_opts *nn_loader_options(const nn_loader *l) { return &l->opts; }

ad_ctx *nn_loader_ctx(const nn_loader *l) { return l->ctx; }

void nn_loader_free(nn_loader *l) {
  if (!l) return;
  ad_ctx *ctx = l->ctx;
  if (l->workers) (void)forget_parent_workers(l); /* a forked child joins none */
  if (l->sync_ok) {
    pthread_mutex_lock(&l->mu);
    l->quit = true;
    atomic_store(&l->stop, true);
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->started; i++) pthread_join(l->th[i], NULL);
    pthread_cond_destroy(&l->done);
    pthread_cond_destroy(&l->work);
    pthread_mutex_destroy(&l->mu);
  }
  size_t slot_bytes = (size_t)l->batch * (size_t)l->nslots;
  ad_tensor_free(l->bx), ad_tensor_free(l->by), ad_tensor_free(l->rx), ad_tensor_free(l->ry);
  if (l->th) ad_free(ctx, l->th, (size_t)l->workers * sizeof *l->th);
  if (l->ybuf) ad_free(ctx, l->ybuf, slot_bytes * l->ys + 1);
  if (l->xbuf) ad_free(ctx, l->xbuf, slot_bytes * l->xs + 1);
  if (l->slots) ad_free(ctx, l->slots, (size_t)l->nslots * sizeof *l->slots);
  if (l->order) ad_free(ctx, l->order, (size_t)(l->ds.len ? l->ds.len : 1) * sizeof *l->order);
  ad_free(ctx, l, sizeof *l);
}
