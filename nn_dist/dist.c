/* dist.c: nn_dist, data-parallel training on MPI: the start-up check and
 * broadcast, gradient buckets reduced during backward, the status
 * exchange, and rank-0 checkpoints. Uses only the public ad_ and nn_ APIs;
 * the only file of the project that includes mpi.h. */
#include "nn_dist.h"

#include "ad_ext.h"

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSG_LEN 512

/* ---------------------------------------------------------- init, handle */

static bool we_initialised;

ad_status nn_dist_init(int *argc, char ***argv) {
  int on = 0, provided = 0;
  MPI_Initialized(&on);
  if (on) {
    MPI_Query_thread(&provided);
  } else {
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      fprintf(stderr, "nn_dist_init: MPI_Init_thread failed\n");
      return AD_ERR_STATE;
    }
    we_initialised = true;
  }
  if (provided < MPI_THREAD_FUNNELED) {
    fprintf(stderr, "nn_dist_init: MPI gives thread level %d, below MPI_THREAD_FUNNELED\n",
            provided);
    return AD_ERR_STATE;
  }
  return AD_OK;
}

void nn_dist_finalize(void) {
  int done = 0;
  MPI_Finalized(&done);
  if (we_initialised && !done) MPI_Finalize();
  we_initialised = false;
}

/* One bucket: parameters ord[first..last) of the reverse order, packed
 * into buf (count elements of dtype); gath holds size * count for the
 * deterministic mode. */
typedef struct bucket {
  int first, last;
  int64_t count;
  ad_dtype dtype;
  void *buf, *gath;
  MPI_Request req;
  int pending; /* parameters whose gradient is not final yet */
  bool launched, done;
} bucket;

typedef struct lookup {
  uintptr_t key;
  int idx;
} lookup;

struct nn_dist {
  ad_ctx *ctx;
  MPI_Comm comm;
  int rank, size;
  nn_dist_opts o;
  nn_dist_ops ops;
  nn_model *model; /* of the last sync: its buffers follow rank 0 */
  /* the layout, for the parameter list p of np tensors t */
  nn_params *p;
  int np;
  ad_tensor **t;
  int *ord;        /* reverse parameter order */
  int *bucket_of;  /* parameter -> bucket */
  int64_t *offset; /* parameter -> element offset in its bucket */
  int *remaining;  /* uses by ops not yet differentiated in this backward */
  int *flags;      /* [failed rank code, unused, has grad per parameter] */
  lookup *look;    /* sorted by key */
  bucket *b;
  int nb, next;
  double scale;
  /* the walk over the recorded graph */
  uint8_t *seen;
  ad_tensor **stack;
  size_t walk_cap;
  ad_backward_hook prev;
  void *prev_ud;
  bool hooked, begun;
  nn_dist_stats stats;
};

static ad_status grad_begin(void *ud, nn_params *p, ad_tensor *loss, int64_t rows,
                            int64_t global_rows);
static ad_status grad_end(void *ud, nn_params *p, ad_status st);
static ad_status ops_sync(void *ud, nn_model *m, nn_optimizer *opt) {
  return nn_dist_sync(ud, m, opt);
}
static ad_status ops_sum(void *ud, double *v, int n) { return nn_dist_sum(ud, v, n); }

nn_dist *nn_dist_new(ad_ctx *ctx, const nn_dist_opts *opts) {
  if (!ctx) return NULL;
  int on = 0;
  MPI_Initialized(&on);
  if (!on) {
    ad_set_error(ctx, AD_ERR_STATE, "dist: MPI is not initialised (call nn_dist_init first)");
    return NULL;
  }
  nn_dist *d = ad_malloc(ctx, sizeof *d);
  if (!d) return NULL;
  memset(d, 0, sizeof *d);
  d->ctx = ctx;
  if (opts) d->o = *opts;
  if (d->o.bucket_bytes == 0) d->o.bucket_bytes = (size_t)4 << 20;
  MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
  MPI_Comm_rank(d->comm, &d->rank);
  MPI_Comm_size(d->comm, &d->size);
  d->ops = (nn_dist_ops){.ud = d,
                         .rank = d->rank,
                         .size = d->size,
                         .sync = ops_sync,
                         .grad_begin = grad_begin,
                         .grad_end = grad_end,
                         .sum = ops_sum};
  return d;
}

static void layout_free(nn_dist *d) {
  ad_ctx *c = d->ctx;
  for (int i = 0; i < d->nb; i++) {
    size_t bytes = (size_t)d->b[i].count * ad_dtype_size(d->b[i].dtype);
    ad_free(c, d->b[i].buf, bytes);
    if (d->b[i].gath) ad_free(c, d->b[i].gath, bytes * (size_t)d->size);
  }
  size_t np = (size_t)d->np;
  ad_free(c, d->b, (size_t)d->nb * sizeof *d->b);
  ad_free(c, d->t, np * sizeof *d->t);
  ad_free(c, d->ord, np * sizeof *d->ord);
  ad_free(c, d->bucket_of, np * sizeof *d->bucket_of);
  ad_free(c, d->offset, np * sizeof *d->offset);
  ad_free(c, d->remaining, np * sizeof *d->remaining);
  ad_free(c, d->flags, (np + 2) * sizeof *d->flags);
  ad_free(c, d->look, np * sizeof *d->look);
  d->b = NULL, d->t = NULL, d->ord = d->bucket_of = d->remaining = d->flags = NULL;
  d->offset = NULL, d->look = NULL, d->nb = d->np = 0, d->p = NULL;
}

void nn_dist_free(nn_dist *d) {
  if (!d) return;
  if (d->hooked) ad_set_backward_hook(d->ctx, d->prev, d->prev_ud);
  layout_free(d);
  ad_free(d->ctx, d->seen, d->walk_cap);
  ad_free(d->ctx, d->stack, d->walk_cap * sizeof *d->stack);
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Comm_free(&d->comm);
  ad_free(d->ctx, d, sizeof *d);
}

int nn_dist_rank(const nn_dist *d) { return d ? d->rank : 0; }
int nn_dist_size(const nn_dist *d) { return d ? d->size : 1; }
const nn_dist_ops *nn_dist_fit_ops(nn_dist *d) { return d ? &d->ops : NULL; }

void nn_dist_get_stats(nn_dist *d, nn_dist_stats *stats, bool reset) {
  if (!d) return;
  if (stats) *stats = d->stats;
  if (reset) {
    int64_t nb = d->stats.buckets;
    memset(&d->stats, 0, sizeof d->stats);
    d->stats.buckets = nb;
  }
}

/* A failure that leaves the ranks unable to take part in the same
 * collectives (out of memory while building a bucket): print and end the
 * job (documented in docs/distributed.md). */
static void die(nn_dist *d, const char *what) {
  fprintf(stderr, "dist: rank %d: %s: %s; aborting every rank\n", d->rank, what,
          ad_last_error(d->ctx));
  MPI_Abort(d->comm, 1);
}

/* ------------------------------------------------------- small exchanges */

/* Broadcasts n bytes from rank 0 in pieces that an int counts. */
static void bcast_bytes(nn_dist *d, void *p, size_t n, int root) {
  for (size_t off = 0; off < n;) {
    size_t k = n - off < ((size_t)1 << 30) ? n - off : (size_t)1 << 30;
    MPI_Bcast((char *)p + off, (int)k, MPI_BYTE, root, d->comm);
    off += k;
  }
}

/* Makes every rank agree on a failure: failed says whether this rank
 * failed (its message is on the context). Returns the lowest failing
 * rank, or -1; on ranks other than it, sets the message "dist: rank R
 * <what>: <its message>" with its status. *status gets that status. */
static int agree(nn_dist *d, bool failed, ad_status own, const char *what, ad_status *status) {
  int code = failed ? d->size - d->rank : 0;
  MPI_Allreduce(MPI_IN_PLACE, &code, 1, MPI_INT, MPI_MAX, d->comm);
  if (code == 0) return -1;
  int root = d->size - code, st = own;
  char msg[MSG_LEN] = {0};
  if (d->rank == root) snprintf(msg, sizeof msg, "%s", ad_last_error(d->ctx));
  MPI_Bcast(&st, 1, MPI_INT, root, d->comm);
  MPI_Bcast(msg, MSG_LEN, MPI_CHAR, root, d->comm);
  if (d->rank != root) ad_set_error(d->ctx, (ad_status)st, "dist: rank %d %s: %s", root, what, msg);
  *status = (ad_status)st;
  return root;
}

ad_status nn_dist_sum(nn_dist *d, double *v, int n) {
  if (!d) return AD_ERR_NULL;
  if (n <= 0) return AD_OK;
  ad_status st = !v ? ad_set_error(d->ctx, AD_ERR_NULL, "dist_sum: v is NULL") : AD_OK, other;
  if (agree(d, st != AD_OK, st, "failed", &other) >= 0) return st != AD_OK ? st : other;
  if (!d->o.deterministic) {
    MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, d->comm);
    return AD_OK;
  }
  size_t bytes = (size_t)n * (size_t)d->size * sizeof(double);
  double *all = ad_malloc(d->ctx, bytes);
  if (!all) die(d, "dist_sum");
  MPI_Allgather(v, n, MPI_DOUBLE, all, n, MPI_DOUBLE, d->comm);
  for (int i = 0; i < n; i++) {
    double s = 0;
    for (int r = 0; r < d->size; r++) s += all[(size_t)r * (size_t)n + (size_t)i];
    v[i] = s;
  }
  ad_free(d->ctx, all, bytes);
  return AD_OK;
}

/* ------------------------------------------------------------- start-up */

/* The description of a state list, one line per tensor. */
static size_t describe_list(char *out, size_t cap, const char *kind, int n,
                            const char *const *names, ad_tensor *const *ts) {
  size_t len = 0;
  for (int i = 0; i < n; i++) {
    char s[96];
    int k = snprintf(out ? out + len : NULL, out ? cap - len : 0, "%s %d '%s' %s %s\n", kind, i,
                     names[i], ad_dtype_name(ts[i]->dtype), ad_shape_str(ts[i], s, sizeof s));
    len += (size_t)k;
  }
  return len;
}

static size_t describe(char *out, size_t cap, nn_model *m, nn_optimizer *opt) {
  nn_params *p = nn_model_params(m), *b = nn_model_buffers(m);
  int np = nn_params_count(p), nb = nn_params_count(b);
  int ns = opt ? nn_optimizer_state_count(opt) : 0;
  size_t len = (size_t)snprintf(
      out, out ? cap : 0, "%d parameters, %d buffers, %d optimizer state tensors\n", np, nb, ns);
  len += describe_list(out ? out + len : NULL, out ? cap - len : 0, "parameter", np,
                       nn_params_names(p), nn_params_tensors(p));
  len += describe_list(out ? out + len : NULL, out ? cap - len : 0, "buffer", nb,
                       nn_params_names(b), nn_params_tensors(b));
  if (ns)
    len += describe_list(out ? out + len : NULL, out ? cap - len : 0, "optimizer state", ns,
                         nn_optimizer_state_names(opt), nn_optimizer_state_tensors(opt));
  return len;
}

/* The first line where mine and theirs differ, as a message. */
static bool first_difference(const char *mine, const char *theirs, int rank, char *msg, size_t n) {
  while (*mine || *theirs) {
    size_t a = strcspn(mine, "\n"), b = strcspn(theirs, "\n");
    if (a != b || memcmp(mine, theirs, a) != 0) {
      snprintf(msg, n, "%.*s on rank %d, %.*s on rank 0", (int)(a ? a : 6), a ? mine : "(none)",
               rank, (int)(b ? b : 6), b ? theirs : "(none)");
      return true;
    }
    mine += a + (mine[a] == '\n');
    theirs += b + (theirs[b] == '\n');
  }
  return false;
}

static void bcast_list(nn_dist *d, int n, ad_tensor *const *ts) {
  for (int i = 0; i < n; i++)
    bcast_bytes(d, ts[i]->data, (size_t)ts[i]->size * ad_dtype_size(ts[i]->dtype), 0);
}

ad_status nn_dist_sync(nn_dist *d, nn_model *m, nn_optimizer *opt) {
  if (!d) return AD_ERR_NULL;
  ad_ctx *c = d->ctx;
  bool failed = false;
  ad_status st = AD_OK;
  char *mine = NULL, *theirs = NULL;
  size_t mlen = 0;
  long long tlen = 0;
  if (!m) {
    failed = true, st = ad_set_error(c, AD_ERR_NULL, "dist_sync: model is NULL");
  } else {
    mlen = describe(NULL, 0, m, opt) + 1;
    if (!(mine = ad_malloc(c, mlen)))
      failed = true, st = AD_ERR_OOM;
    else
      describe(mine, mlen, m, opt);
  }
  ad_status other;
  if (agree(d, failed, st, "failed", &other) >= 0) {
    ad_free(c, mine, mlen);
    return failed ? st : other;
  }
  tlen = (long long)mlen;
  MPI_Bcast(&tlen, 1, MPI_LONG_LONG, 0, d->comm);
  if (d->rank == 0)
    theirs = mine;
  else if (!(theirs = ad_malloc(c, (size_t)tlen)))
    die(d, "dist_sync");
  bcast_bytes(d, theirs, (size_t)tlen, 0);
  char msg[MSG_LEN];
  bool differs = d->rank != 0 && first_difference(mine, theirs, d->rank, msg, sizeof msg);
  if (d->rank != 0) ad_free(c, theirs, (size_t)tlen);
  ad_free(c, mine, mlen);
  int code = differs ? d->size - d->rank : 0;
  MPI_Allreduce(MPI_IN_PLACE, &code, 1, MPI_INT, MPI_MAX, d->comm);
  if (code) {
    int root = d->size - code;
    MPI_Bcast(msg, MSG_LEN, MPI_CHAR, root, d->comm);
    return ad_set_error(c, AD_ERR_SHAPE, "dist: rank %d differs from rank 0: %s", root, msg);
  }
  nn_params *p = nn_model_params(m), *b = nn_model_buffers(m);
  bcast_list(d, nn_params_count(p), nn_params_tensors(p));
  bcast_list(d, nn_params_count(b), nn_params_tensors(b));
  if (opt) bcast_list(d, nn_optimizer_state_count(opt), nn_optimizer_state_tensors(opt));
  d->model = m;
  return AD_OK;
}

/* ---------------------------------------------------------- checkpoints */

ad_status nn_dist_save(nn_dist *d, const nn_model *m, const nn_optimizer *opt, const char *path) {
  if (!d) return AD_ERR_NULL;
  ad_status st = d->rank == 0 ? nn_model_save(m, opt, path) : AD_OK, other = AD_OK;
  agree(d, st != AD_OK, st, "could not save", &other);
  return st != AD_OK ? st : other;
}

ad_status nn_dist_load(nn_dist *d, nn_model *m, nn_optimizer *opt, const char *path) {
  if (!d) return AD_ERR_NULL;
  ad_status st = d->rank == 0 ? nn_model_load(m, opt, path) : AD_OK, other = AD_OK;
  agree(d, st != AD_OK, st, "could not load", &other);
  if (st != AD_OK || other != AD_OK) return st != AD_OK ? st : other;
  return nn_dist_sync(d, m, opt);
}

/* --------------------------------------------------------------- layout */

static int cmp_lookup(const void *a, const void *b) {
  uintptr_t x = ((const lookup *)a)->key, y = ((const lookup *)b)->key;
  return x < y ? -1 : x > y;
}

static int find(const nn_dist *d, const ad_tensor *t) {
  lookup k = {(uintptr_t)t, 0};
  const lookup *r = bsearch(&k, d->look, (size_t)d->np, sizeof k, cmp_lookup);
  return r ? r->idx : -1;
}

/* Whether the layout is for p as it is now. */
static bool layout_current(const nn_dist *d, nn_params *p) {
  if (d->p != p || d->np != nn_params_count(p)) return false;
  ad_tensor *const *ts = nn_params_tensors(p);
  for (int i = 0; i < d->np; i++)
    if (ts[i] != d->t[i]) return false;
  return true;
}

/* Buckets over p: parameters in reverse order, a new bucket when the
 * dtype changes or the bucket holds bucket_bytes. */
static ad_status layout_build(nn_dist *d, nn_params *p) {
  layout_free(d);
  ad_ctx *c = d->ctx;
  int np = nn_params_count(p);
  size_t n = (size_t)np;
  d->np = np;
  d->p = p;
  d->t = ad_malloc(c, n * sizeof *d->t);
  d->ord = ad_malloc(c, n * sizeof *d->ord);
  d->bucket_of = ad_malloc(c, n * sizeof *d->bucket_of);
  d->offset = ad_malloc(c, n * sizeof *d->offset);
  d->remaining = ad_malloc(c, n * sizeof *d->remaining);
  d->flags = ad_malloc(c, (n + 2) * sizeof *d->flags);
  d->look = ad_malloc(c, n * sizeof *d->look);
  d->b = ad_malloc(c, (n ? n : 1) * sizeof *d->b);
  d->nb = 0;
  if ((n && (!d->t || !d->ord || !d->bucket_of || !d->offset || !d->remaining || !d->look)) ||
      !d->flags || !d->b)
    return AD_ERR_OOM;
  memset(d->b, 0, (n ? n : 1) * sizeof *d->b);
  ad_tensor *const *ts = nn_params_tensors(p);
  size_t bytes = 0;
  for (int j = 0; j < np; j++) {
    int i = np - 1 - j;
    ad_tensor *t = ts[i];
    d->t[i] = t;
    d->ord[j] = i;
    d->look[i] = (lookup){(uintptr_t)t, i};
    bucket *cur = d->nb ? &d->b[d->nb - 1] : NULL;
    if (!cur || cur->dtype != t->dtype || bytes >= d->o.bucket_bytes) {
      cur = &d->b[d->nb++];
      cur->first = j;
      cur->dtype = t->dtype;
      bytes = 0;
    }
    d->bucket_of[i] = d->nb - 1;
    d->offset[i] = cur->count;
    cur->count += t->size;
    cur->last = j + 1;
    bytes += (size_t)t->size * ad_dtype_size(t->dtype);
  }
  qsort(d->look, n, sizeof *d->look, cmp_lookup);
  for (int k = 0; k < d->nb; k++) {
    bucket *b = &d->b[k];
    if (b->count > INT32_MAX)
      return ad_set_error(c, AD_ERR_ARG, "dist: a gradient bucket of %lld elements is too large",
                          (long long)b->count);
    size_t bb = (size_t)b->count * ad_dtype_size(b->dtype);
    if (!(b->buf = ad_malloc(c, bb ? bb : 1))) return AD_ERR_OOM;
    if (d->o.deterministic && !(b->gath = ad_malloc(c, (bb ? bb : 1) * (size_t)d->size)))
      return AD_ERR_OOM;
  }
  return AD_OK;
}

/* ------------------------------------------------------------- buckets */

static MPI_Datatype mpi_type(ad_dtype t) { return t == AD_F64 ? MPI_DOUBLE : MPI_FLOAT; }

/* Packs bucket k (each gradient times the shard's share, zeros for none)
 * and starts its reduction. */
static void launch(nn_dist *d, int k, bool from_hook) {
  bucket *b = &d->b[k];
  for (int j = b->first; j < b->last; j++) {
    int i = d->ord[j];
    ad_tensor *g = d->t[i]->grad;
    d->flags[2 + i] = g != NULL;
    if (b->dtype == AD_F64) {
      double *dst = (double *)b->buf + d->offset[i];
      if (!g)
        memset(dst, 0, (size_t)d->t[i]->size * sizeof *dst);
      else
        for (int64_t e = 0; e < g->size; e++) dst[e] = ((const double *)g->data)[e] * d->scale;
    } else {
      float *dst = (float *)b->buf + d->offset[i];
      if (!g)
        memset(dst, 0, (size_t)d->t[i]->size * sizeof *dst);
      else
        for (int64_t e = 0; e < g->size; e++)
          dst[e] = (float)((double)((const float *)g->data)[e] * d->scale);
    }
  }
  int n = (int)b->count;
  if (d->o.deterministic)
    MPI_Iallgather(b->buf, n, mpi_type(b->dtype), b->gath, n, mpi_type(b->dtype), d->comm, &b->req);
  else
    MPI_Iallreduce(MPI_IN_PLACE, b->buf, n, mpi_type(b->dtype), MPI_SUM, d->comm, &b->req);
  b->launched = true;
  if (from_hook) d->stats.overlapped++;
  d->stats.bytes += (int64_t)((size_t)b->count * ad_dtype_size(b->dtype));
}

/* Launches, in bucket order (the same on every rank), the buckets whose
 * gradients are final. */
static void launch_ready(nn_dist *d, bool from_hook) {
  while (d->next < d->nb && d->b[d->next].pending == 0) launch(d, d->next++, from_hook);
}

/* Lets MPI move the launched reductions along (Open MPI has no progress
 * thread: a non-blocking collective advances inside MPI calls). */
static void progress(nn_dist *d) {
  for (int k = 0; k < d->next; k++) {
    bucket *b = &d->b[k];
    if (b->launched && !b->done) {
      int flag = 0;
      MPI_Test(&b->req, &flag, MPI_STATUS_IGNORE);
      b->done = flag != 0;
    }
  }
}

static void hook(void *ud, const ad_backward_step *s) {
  nn_dist *d = ud;
  for (int k = 0; k < s->n; k++) {
    int i = find(d, s->in[k]);
    if (i >= 0 && d->remaining[i] > 0 && --d->remaining[i] == 0) d->b[d->bucket_of[i]].pending--;
  }
  launch_ready(d, true);
  progress(d);
  if (d->prev) d->prev(d->prev_ud, s);
}

/* Counts, for each parameter, the uses by ops that backward from loss will
 * differentiate: a walk over the recorded graph (inputs come before their
 * op on the tape, so a tape index bounds the walk). */
static ad_status count_uses(nn_dist *d, ad_tensor *loss) {
  memset(d->remaining, 0, (size_t)d->np * sizeof *d->remaining);
  int64_t top = ad_tensor_tape_index(loss);
  if (top < 0) return AD_OK;
  size_t need = (size_t)top + 1;
  if (need > d->walk_cap) {
    size_t cap = need * 2;
    uint8_t *seen = ad_malloc(d->ctx, cap);
    ad_tensor **stack = ad_malloc(d->ctx, cap * sizeof *stack);
    if (!seen || !stack) {
      ad_free(d->ctx, seen, cap);
      ad_free(d->ctx, stack, cap * sizeof *stack);
      return AD_ERR_OOM;
    }
    ad_free(d->ctx, d->seen, d->walk_cap);
    ad_free(d->ctx, d->stack, d->walk_cap * sizeof *d->stack);
    d->seen = seen, d->stack = stack, d->walk_cap = cap;
  }
  memset(d->seen, 0, need);
  size_t sp = 0;
  d->stack[sp++] = loss;
  d->seen[top] = 1;
  ad_tensor *inl[AD_MAX_SRC], **in = inl; /* a variadic op's inputs may be more */
  size_t in_cap = AD_MAX_SRC;
  ad_status st = AD_OK;
  while (sp && st == AD_OK) {
    ad_tensor *t = d->stack[--sp];
    int n = ad_tensor_inputs(t, NULL, 0);
    if ((size_t)n > in_cap) {
      ad_tensor **bigger = ad_malloc(d->ctx, (size_t)n * sizeof *bigger);
      if (!bigger) {
        st = AD_ERR_OOM;
        break;
      }
      if (in != inl) ad_free(d->ctx, in, in_cap * sizeof *in);
      in = bigger, in_cap = (size_t)n;
    }
    n = ad_tensor_inputs(t, in, n);
    for (int k = 0; k < n; k++) {
      int i = find(d, in[k]);
      if (i >= 0) {
        d->remaining[i]++;
        continue;
      }
      int64_t ti = ad_tensor_tape_index(in[k]);
      if (ti >= 0 && ti <= top && !d->seen[ti]) {
        d->seen[ti] = 1;
        d->stack[sp++] = in[k];
      }
    }
  }
  if (in != inl) ad_free(d->ctx, in, in_cap * sizeof *in);
  return st;
}

/* Resets the buckets for a step. */
static void step_reset(nn_dist *d) {
  for (int k = 0; k < d->nb; k++) {
    d->b[k].pending = 0;
    d->b[k].launched = d->b[k].done = false;
  }
  for (int i = 0; i < d->np; i++) d->flags[2 + i] = 0;
  d->next = 0;
}

static ad_status grad_begin(void *ud, nn_params *p, ad_tensor *loss, int64_t rows,
                            int64_t global_rows) {
  nn_dist *d = ud;
  if (!layout_current(d, p) && layout_build(d, p) != AD_OK) die(d, "gradient buckets");
  step_reset(d);
  d->begun = true;
  d->scale = global_rows > 0 ? (double)rows / (double)global_rows : 0;
  if (!loss || d->o.no_overlap) return AD_OK;
  if (count_uses(d, loss) != AD_OK) die(d, "gradient buckets");
  for (int i = 0; i < d->np; i++)
    if (d->remaining[i] > 0) d->b[d->bucket_of[i]].pending++;
  ad_get_backward_hook(d->ctx, &d->prev, &d->prev_ud);
  ad_set_backward_hook(d->ctx, hook, d);
  d->hooked = true;
  launch_ready(d, true); /* buckets that no op of this backward uses */
  return AD_OK;
}

/* Gives a zero gradient to the parameters that have none here but a
 * reduced one (another rank's): the backward of 0 * sum(p), one parameter
 * at a time (their dtypes may differ). */
static void ensure_grads(nn_dist *d) {
  bool old = ad_set_grad_enabled(d->ctx, true);
  for (int i = 0; i < d->np; i++) {
    ad_tensor *t = d->t[i];
    if (!d->flags[2 + i] || t->grad || !ad_tensor_requires_grad(t)) continue;
    ad_tensor *z = ad_mul(d->ctx, ad_sum(d->ctx, t), ad_scalar(d->ctx, t->dtype, 0.0));
    if (!z || ad_backward(d->ctx, z, NULL) != AD_OK) die(d, "zero gradients");
  }
  ad_set_grad_enabled(d->ctx, old);
}

/* Copies bucket k's reduced values into the gradients (the deterministic
 * mode sums the gathered contributions in rank order). */
static void unpack(nn_dist *d, int k) {
  bucket *b = &d->b[k];
  for (int j = b->first; j < b->last; j++) {
    int i = d->ord[j];
    ad_tensor *g = d->t[i]->grad;
    if (!d->flags[2 + i] || !g) continue;
    int64_t off = d->offset[i], n = g->size;
    if (b->dtype == AD_F64) {
      double *dst = g->data;
      if (!d->o.deterministic) {
        memcpy(dst, (double *)b->buf + off, (size_t)n * sizeof *dst);
        continue;
      }
      const double *all = b->gath;
      for (int64_t e = 0; e < n; e++) {
        double s = 0;
        for (int r = 0; r < d->size; r++)
          s += all[(size_t)r * (size_t)b->count + (size_t)(off + e)];
        dst[e] = s;
      }
    } else {
      float *dst = g->data;
      if (!d->o.deterministic) {
        memcpy(dst, (float *)b->buf + off, (size_t)n * sizeof *dst);
        continue;
      }
      const float *all = b->gath;
      for (int64_t e = 0; e < n; e++) {
        float s = 0;
        for (int r = 0; r < d->size; r++)
          s += all[(size_t)r * (size_t)b->count + (size_t)(off + e)];
        dst[e] = s;
      }
    }
  }
}

static ad_status grad_end(void *ud, nn_params *p, ad_status st) {
  nn_dist *d = ud;
  double t0 = MPI_Wtime();
  if (d->hooked) {
    ad_set_backward_hook(d->ctx, d->prev, d->prev_ud);
    d->hooked = false;
  }
  if (!d->begun) { /* the step failed before grad_begin */
    if (!layout_current(d, p) && layout_build(d, p) != AD_OK) die(d, "gradient buckets");
    step_reset(d);
  }
  d->begun = false;
  while (d->next < d->nb) launch(d, d->next++, false);
  for (int k = 0; k < d->nb; k++)
    if (!d->b[k].done) MPI_Wait(&d->b[k].req, MPI_STATUS_IGNORE);
  /* the status with the has-gradient flags: a rank that failed stops all */
  d->flags[0] = st != AD_OK ? d->size - d->rank : 0;
  d->flags[1] = 0;
  MPI_Allreduce(MPI_IN_PLACE, d->flags, d->np + 2, MPI_INT, MPI_MAX, d->comm);
  d->stats.steps++;
  d->stats.buckets = d->nb;
  if (d->flags[0]) {
    int root = d->size - d->flags[0], code = st;
    char msg[MSG_LEN] = {0};
    if (d->rank == root) snprintf(msg, sizeof msg, "%s", ad_last_error(d->ctx));
    MPI_Bcast(&code, 1, MPI_INT, root, d->comm);
    MPI_Bcast(msg, MSG_LEN, MPI_CHAR, root, d->comm);
    d->stats.wait_seconds += MPI_Wtime() - t0;
    if (d->rank == root) return st;
    return ad_set_error(d->ctx, (ad_status)code, "dist: rank %d stopped: %s", root, msg);
  }
  ensure_grads(d);
  for (int k = 0; k < d->nb; k++) unpack(d, k);
  if (d->model) { /* buffers (BatchNorm's running statistics) follow rank 0 */
    nn_params *b = nn_model_buffers(d->model);
    bcast_list(d, nn_params_count(b), nn_params_tensors(b));
  }
  d->stats.wait_seconds += MPI_Wtime() - t0;
  return AD_OK;
}
