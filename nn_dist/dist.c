/* dist.c: nn_dist, data-parallel training on MPI: the start-up check and
 * broadcast, gradient buckets reduced during backward (through an MPI-3
 * shared window between the ranks of a machine, MPI collectives between
 * machines and as the fallback), the status exchange, and rank-0
 * checkpoints. Uses only the public ad_ and nn_ APIs; the only file of the
 * project that includes mpi.h. */
#include "nn_dist.h"

#include "ad_ext.h"

#include <mpi.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#define MSG_LEN 512

/* The context's error (or none) before calls that may fail harmlessly (a
 * binding the tape refuses, a parameter freed since), to put back after
 * them: the caller's own error must not turn into theirs. */
typedef struct err_saved {
  ad_status st;
  char msg[MSG_LEN];
} err_saved;

static void err_keep(ad_ctx *c, err_saved *e) {
  e->st = ad_last_status(c);
  e->msg[0] = 0;
  if (e->st != AD_OK) snprintf(e->msg, sizeof e->msg, "%s", ad_last_error(c));
}

static void err_restore(ad_ctx *c, const err_saved *e) {
  if (e->st == AD_OK)
    ad_clear_error(c);
  else
    ad_set_error(c, e->st, "%s", e->msg);
}

/* ---------------------------------------------------------- init, handle */

static bool we_initialised;

ad_status nn_dist_init(int *argc, char ***argv) {
  int on = 0, provided = 0, done = 0;
  MPI_Finalized(&done);
  if (done) { /* MPI allows no call but a few then, and no second MPI_Init */
    fprintf(stderr, "nn_dist_init: MPI is finalised already; it cannot start again\n");
    return AD_ERR_STATE;
  }
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

/* The shared-memory path needs flags that work across processes: a
 * lock-free atomic is address-free (C11 7.17.5). */
#if ATOMIC_LLONG_LOCK_FREE == 2
#define SHM_POSSIBLE 1
#else
#define SHM_POSSIBLE 0
#endif

/* Seconds on the machine's monotonic clock: the same clock for every process
 * of a node (MPI_Wtime counts from each process's start), unless they live
 * in different time namespaces, which would only skew the chunk shares. */
static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The sums' blocks of elements (see reduce_range); dyn (see struct shm):
 * elements in a claimed chunk of a sum, and the bytes of a bucket's pair of
 * chunk counters. */
enum { SUM_BLK = 1024, CHUNK = 16384, CTR_BYTES = 64 };
_Static_assert(CHUNK % SUM_BLK == 0, "a chunk is whole blocks of the sum");

/* One bucket: parameters ord[first..last) of the reverse order, packed
 * into buf (count elements of dtype); gath holds size * count for the
 * deterministic mode. On the shared-memory path buf and gath are unused:
 * the bucket lives at byte soff of each rank's segment (see struct shm). */
typedef struct bucket {
  int first, last;
  int64_t count;
  ad_dtype dtype;
  void *buf, *gath;
  size_t soff;
  MPI_Request req, xreq;
  int pending; /* parameters whose gradient is not final yet */
  bool launched, done;
  bool xlaunched, xdone; /* shared-memory path: the allreduce between nodes */
  int64_t mine;          /* dyn: chunks this rank summed in this step */
} bucket;

/* A state tensor of the optimizer of the last sharded steps: its index j
 * among the optimizer's state tensors, which parameter's, and its kind
 * (the kind-th state tensor of that parameter: Adam's m, then v). */
typedef struct stale_state {
  ad_tensor *t;
  uint64_t serial;
  int j, param, kind;
} stale_state;

/* The shared-memory reduction among the lsize ranks of a node (a machine,
 * or a group forced by ranks_per_node). Each rank owns one segment of an
 * MPI-3 shared window: 2 nb flags (packed[k], reduced[k]: the step id that
 * last wrote them) and the other small fields below, then the buckets
 * twice (step parity; a bucket k at byte soff of each half). Rank r packs
 * its scaled gradients into its segment and sets packed[k]; when every
 * rank of the node packed bucket k, rank r sums slice r of it
 * ([count r / lsize, count (r+1) / lsize)) over the segments in rank order
 * into its own segment, allreduces that slice with the ranks of the same
 * local rank on the other nodes (cross, when there are several), and sets
 * reduced[k]; every rank then copies the slices into its gradients. The
 * halves alternate by step: a rank can be at most one step ahead of
 * another (the status exchange is collective), so it never writes the
 * half another still reads.
 *
 * Zero-copy (zc, when a node has several ranks): the gradients themselves
 * live in the rank's segment (ad_tensor_set_grad_buffer), so the backward
 * writes them there unscaled and nothing is packed; each rank publishes its
 * scale in its segment's head, sums its slice times the ranks' scales into
 * the node's reduced buffer (the first rank's segment, after its regions:
 * one per parity), and every rank then takes that buffer as its gradients
 * (bound without a copy: one copy per node, which the ranks only read).
 *
 * Claimed chunks (dyn: zc on a single node, the default there): the sums
 * are not cut into one slice per rank but into chunks of CHUNK elements,
 * which the ranks claim from a counter per bucket in the first segment's
 * head as they come free, counting each chunk summed in a second counter.
 * Each rank also publishes when it packed each bucket. In its backward's
 * hooks a rank sums at most its share of a bucket's chunks: more than
 * 1/lsize for a rank that packed it early, less for a late one, so that
 * the ranks reach grad_end together; there, all claim whatever is left.
 * The bits are the same whoever sums a chunk: every element is still
 * summed over the segments in rank order. Between nodes each rank's slice
 * is allreduced with the same slice on the other nodes, which needs fixed
 * slices: no chunks there. */
/* A parameter in the shared window, and where its values are there: a
 * tensor whose data is elsewhere by now (freed: NULL; its header reused;
 * bound by the caller) is left alone. */
typedef struct shared_param {
  ad_tensor *t;
  uint64_t serial; /* t's (ad_tensor_serial) */
  void *at;
  void *home;   /* the memory its values move back into (ad_tensor_adopt_data) */
  size_t bytes; /* of home */
} shared_param;

typedef struct shm {
  MPI_Comm node, cross; /* cross: MPI_COMM_NULL on one node */
  int lrank, lsize, nodes;
  bool wanted; /* the topology allows it (decided by nn_dist_new) */
  bool on;     /* the window of the current layout exists */
  MPI_Win win;
  char **seg;  /* lsize segment bases */
  size_t head; /* flag bytes at the start of a segment */
  size_t half; /* bucket bytes of one parity */
  int regions; /* of half bytes each: the two parities, [the shared copy] */
  int64_t step;
  int next_red, next_unp;
  bool zc;            /* zero-copy gradients (above) for this layout */
  bool dyn;           /* zc on one node: chunks of the sums claimed by whoever is free */
  size_t ctr;         /* dyn: byte offset of the chunk counters in segment 0 */
  double byte_s;      /* dyn: seconds this rank's sums take a byte (smoothed; 0: not yet) */
  size_t red;         /* zc: byte offset of the reduced buffer in segment 0 */
  uint8_t *copied;    /* per parameter: copied back (zc: bound to the sum) in this step */
  int64_t *lo, *hi;   /* per parameter: the elements of this rank's slices */
  int64_t *flo, *fhi; /* the same per entry of the list (none for a repeat), for the optimizer */
  /* sharded steps left an optimizer's state whole only in slices: its
   * per-parameter state tensors, known by serial, so that the optimizer
   * itself is never read again (it may be freed since, and another made
   * at its address); the record is allocated with the layout */
  bool stale;
  stale_state *st;
  int nst, stcap;
  int st_count;   /* the optimizer's state tensors, all of them */
  char dir[4096]; /* the node's first rank: MPI's backing directory (backing_directory) */
  /* with shard_optimizer: the parameters of the last sync, one copy per
   * node in a window of their own (the first rank's memory), which each
   * rank's sharded step updates in its slices (params_share) */
  MPI_Win pwin;
  bool pon;     /* the parameters are in pwin */
  bool plive;   /* pwin exists (the parameters may have left it: params_leave) */
  int pn, pcap; /* pt: pn bound of pcap allocated */
  shared_param *pt;
} shm;

/* The model of a sync, known by its tensors' serials, as it may be freed
 * since and another made at its addresses: a step over its parameters
 * broadcasts its buffers (BatchNorm's running statistics) from rank 0. */
typedef struct synced {
  uint64_t *ser;   /* np parameters' serials, then nb buffers' */
  ad_tensor **buf; /* the buffers */
  int np, nb;
} synced;

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
  synced ms; /* the model of the last sync */
  /* the layout, for a parameter list of nfull entries holding np distinct
   * tensors t, known by their serials (tser): a list is the layout's when
   * it holds those tensors. A tensor listed twice (tied weights) is one
   * parameter here, as in nn's optimizers: uidx maps each entry of the list
   * to its tensor's index, first_of each tensor to its first entry. */
  int np, nfull;
  int *uidx, *first_of;
  /* a sharded step of an optimizer whose list is not the model's (its
   * parameter groups, a part of the model, another order; opt_entries): its
   * entries' parameters in its order (nfull at most), a tensor's later
   * entries as -1 - parameter; oseen is scratch, one byte per parameter */
  int nopt;
  int *oidx;
  unsigned char *oseen;
  ad_tensor **t;
  uint64_t *tser;
  int *ord;        /* reverse parameter order */
  int *bucket_of;  /* parameter -> bucket */
  int64_t *offset; /* parameter -> element offset in its bucket */
  int64_t *tsize;  /* parameter -> its elements when the layout was built */
  void **ghome;    /* zc: parameter -> the memory its gradient moves back into, allocated with
                      the layout so that leaving the window cannot run out of memory */
  int *remaining;  /* uses by ops not yet differentiated in this backward */
  int *flags;      /* [failed rank code, unused, has a gradient per parameter, lacks one
                      that it requires per parameter] */
  lookup *look;    /* sorted by key */
  bucket *b;
  int nb, next;
  double scale;
  ad_tensor **gath_ts; /* gather_stale's per-parameter tensors and counts (no */
  int *gath_cnt;       /* allocation inside its collectives) */
  /* an error every rank agreed on in grad_begin, which its grad_end returns
   * without an exchange (every rank's step ended there) */
  ad_status begin_st;
  char begin_msg[MSG_LEN];
  /* a note of a write into a gradient (note_grad) that failed in this
   * step, inside the backward's hook: grad_end fails the step with it */
  ad_status note_st;
  char note_msg[MSG_LEN];
  bool layout_stale; /* nn_dist_sync: the next step builds the layout again */
  /* the walk over the recorded graph */
  uint8_t *seen;
  ad_tensor **stack;
  size_t walk_cap;
  ad_backward_hook prev;
  void *prev_ud;
  bool hooked, begun;
  shm sh;
  nn_dist_stats stats;
};

static ad_status grad_begin(void *ud, nn_params *p, ad_tensor *loss, int64_t rows,
                            int64_t global_rows);
static ad_status grad_end(void *ud, nn_params *p, ad_status st);
static bool bind_grad(nn_dist *d, ad_tensor *t, void *buf, bool copy);
static void node_barrier(shm *h);
static atomic_llong *chunk_ctr(const nn_dist *d, int s, int k, int which);
static void win_barrier(shm *h, MPI_Win w);
static void params_unshare(nn_dist *d);
static void synced_free(ad_ctx *c, synced *ms);
static void params_leave(nn_dist *d);
static void die(nn_dist *d, const char *what);
static size_t round_up64(size_t n);
static size_t home_bytes(const nn_dist *d, int i);
static bool zc_wanted(const nn_dist *d);
static void ghome_free(nn_dist *d);
static bool backing_room(const char *dir, size_t bytes);
static ad_status ops_step(void *ud, nn_optimizer *opt);
static ad_status gather_stale(nn_dist *d);
static bool stale_is(const nn_dist *d, const nn_optimizer *opt);
static ad_status ops_sync(void *ud, nn_model *m, nn_optimizer *opt) {
  return nn_dist_sync(ud, m, opt);
}
/* nn_fit's sums at the end of an epoch: the optimizer state is gathered
 * first, so that it is whole between epochs (on_epoch_end may save it). */
static ad_status ops_sum(void *ud, double *v, int n) {
  nn_dist *d = ud;
  gather_stale(d);
  return nn_dist_sum(ud, v, n);
}

/* The directory MPI keeps a shared window's backing file in, into dir:
 * Open MPI's MCA variable osc_sm_backing_directory, read through the MPI
 * tool interface; /dev/shm where there is no such variable (another MPI
 * library). Read once per process and kept: starting the tool interface
 * opens all of Open MPI's components and stopping it closes them (slow:
 * docs/distributed.md), and the variable is fixed when MPI starts. Only the thread that initialised
 * MPI calls here (MPI_THREAD_FUNNELED), so the copy needs no lock. */
static void backing_directory(char *dir, size_t cap) {
  static char kept[4096];
  static bool read;
  if (!read) {
    int provided, idx, count = 0;
    snprintf(kept, sizeof kept, "/dev/shm");
    if (MPI_T_init_thread(MPI_THREAD_SINGLE, &provided) == MPI_SUCCESS) {
      MPI_T_cvar_handle h;
      if (MPI_T_cvar_get_index("osc_sm_backing_directory", &idx) == MPI_SUCCESS &&
          MPI_T_cvar_handle_alloc(idx, NULL, &h, &count) == MPI_SUCCESS) {
        char *v = count > 0 ? calloc((size_t)count + 1, 1) : NULL;
        if (v && MPI_T_cvar_read(h, v) == MPI_SUCCESS && v[0] && strlen(v) < sizeof kept)
          memcpy(kept, v, strlen(v) + 1);
        free(v);
        MPI_T_cvar_handle_free(&h);
      }
      MPI_T_finalize();
    }
    read = true;
  }
  snprintf(dir, cap, "%s", kept);
}

/* The nodes: ranks that share memory (MPI_COMM_TYPE_SHARED), cut into
 * groups of ranks_per_node when it is set; whether the shared-memory path
 * can serve them (one node, or nodes of equal size outside the
 * deterministic mode, whose sums must not depend on MPI's algorithms);
 * and the communicator between nodes. Collective. */
static void topology(nn_dist *d) {
  shm *h = &d->sh;
  MPI_Comm shared;
  MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &shared);
  /* the largest ranks_per_node counts for all: a rank that splits while
   * another does not would wait in MPI_Comm_split for ever */
  MPI_Allreduce(MPI_IN_PLACE, &d->o.ranks_per_node, 1, MPI_INT, MPI_MAX, d->comm);
  if (d->o.ranks_per_node > 0) {
    int r;
    MPI_Comm_rank(shared, &r);
    MPI_Comm_split(shared, r / d->o.ranks_per_node, r, &h->node);
    MPI_Comm_free(&shared);
  } else {
    h->node = shared;
  }
  MPI_Comm_rank(h->node, &h->lrank);
  MPI_Comm_size(h->node, &h->lsize);
  MPI_Comm_set_errhandler(h->node, MPI_ERRORS_RETURN); /* a window that fails: fall back */
  h->nodes = h->lrank == 0;
  MPI_Allreduce(MPI_IN_PLACE, &h->nodes, 1, MPI_INT, MPI_SUM, d->comm);
  /* what the ranks must agree on (options given differently on some rank
   * would otherwise leave them in different exchanges): any rank's no_shm,
   * deterministic, private_gradients, or a rank without shard_optimizer
   * counts for all */
  int v[6] = {h->lsize,
              -h->lsize,
              !SHM_POSSIBLE || d->o.no_shm,
              d->o.deterministic,
              !d->o.shard_optimizer,
              d->o.private_gradients};
  MPI_Allreduce(MPI_IN_PLACE, v, 6, MPI_INT, MPI_MAX, d->comm);
  bool equal = v[0] == -v[1];
  d->o.deterministic = v[3] != 0;
  d->o.shard_optimizer = v[4] == 0;
  d->o.private_gradients = v[5] != 0;
  h->wanted = !v[2] && (h->nodes == 1 || (equal && !d->o.deterministic));
  h->cross = MPI_COMM_NULL;
  if (h->wanted && h->nodes > 1) MPI_Comm_split(d->comm, h->lrank, d->rank, &h->cross);
  /* here rather than at every layout (the first read starts MPI's tool
   * interface, see backing_directory) */
  if (h->wanted && h->lrank == 0) backing_directory(h->dir, sizeof h->dir);
  d->stats.nodes = h->nodes;
}

static int rank_in_world(void) {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

static int size_of_world(void) {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

nn_dist *nn_dist_new(ad_ctx *ctx, const nn_dist_opts *opts) {
  int on = 0, done = 0;
  MPI_Initialized(&on);
  MPI_Finalized(&done);
  if (!on || done) {
    if (ctx)
      ad_set_error(ctx, AD_ERR_STATE, "dist: MPI is %s",
                   done ? "finalised already" : "not initialised (call nn_dist_init first)");
    return NULL;
  }
  nn_dist *d = ctx ? ad_malloc(ctx, sizeof *d) : NULL;
  /* collective: a rank that returned here alone would leave the others
   * waiting in MPI_Comm_dup */
  int code = d ? 0 : size_of_world() - rank_in_world();
  MPI_Allreduce(MPI_IN_PLACE, &code, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (code) {
    int root = size_of_world() - code, st = ctx ? AD_ERR_OOM : AD_ERR_NULL;
    MPI_Bcast(&st, 1, MPI_INT, root, MPI_COMM_WORLD);
    if (d) {
      ad_free(ctx, d, sizeof *d);
      ad_set_error(ctx, (ad_status)st, "dist: rank %d failed: nn_dist_new: %s", root,
                   st == AD_ERR_NULL ? "ctx is NULL" : "out of memory");
    }
    return NULL;
  }
  memset(d, 0, sizeof *d);
  d->ctx = ctx;
  if (opts) d->o = *opts;
  if (d->o.bucket_bytes == 0) d->o.bucket_bytes = (size_t)4 << 20;
  MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
  MPI_Comm_rank(d->comm, &d->rank);
  MPI_Comm_size(d->comm, &d->size);
  if (d->o.ranks_per_node < 0) d->o.ranks_per_node = 0;
  topology(d);
  d->ops = (nn_dist_ops){.ud = d,
                         .rank = d->rank,
                         .size = d->size,
                         .sync = ops_sync,
                         .grad_begin = grad_begin,
                         .grad_end = grad_end,
                         .sum = ops_sum,
                         .step = ops_step};
  return d;
}

static void layout_free(nn_dist *d) {
  ad_ctx *c = d->ctx;
  for (int i = 0; i < d->nb; i++) {
    size_t bytes = (size_t)d->b[i].count * ad_dtype_size(d->b[i].dtype);
    if (d->b[i].buf) ad_free(c, d->b[i].buf, bytes ? bytes : 1);
    if (d->b[i].gath) ad_free(c, d->b[i].gath, (bytes ? bytes : 1) * (size_t)d->size);
  }
  size_t np = (size_t)d->nfull; /* the per-parameter arrays' capacity: entries of the list */
  shm *h = &d->sh;
  if (h->on) {
    int done = 0;
    MPI_Finalized(&done);
    if (!done && h->zc && d->ghome) /* the gradients back to the engine's memory, into the
                                       blocks set aside for them, values kept (also of a
                                       parameter frozen since; one freed since refuses, quietly) */
      for (int i = 0; i < d->np; i++) {
        /* a tensor freed since is not ours, nor one made in its header */
        ad_tensor *t = d->t[i];
        if (ad_tensor_serial(t) != d->tser[i]) continue;
        err_saved e;
        err_keep(d->ctx, &e);
        if (ad_tensor_adopt_grad(t, &d->ghome[i]) != AD_OK) err_restore(d->ctx, &e);
      }
    if (!done) {
      MPI_Win_unlock_all(h->win);
      MPI_Win_free(&h->win);
    }
    h->on = false;
  }
  size_t n1 = np ? np : 1; /* the sizes layout_build allocated */
  ghome_free(d);           /* the blocks no gradient took */
  ad_free(c, h->seg, (size_t)h->lsize * sizeof *h->seg);
  ad_free(c, h->copied, n1);
  ad_free(c, h->lo, n1 * sizeof *h->lo);
  ad_free(c, h->hi, n1 * sizeof *h->hi);
  ad_free(c, h->flo, n1 * sizeof *h->flo);
  ad_free(c, h->fhi, n1 * sizeof *h->fhi);
  h->seg = NULL, h->copied = NULL, h->lo = h->hi = h->flo = h->fhi = NULL;
  ad_free(c, d->b, n1 * sizeof *d->b);
  ad_free(c, d->t, np * sizeof *d->t);
  ad_free(c, d->ord, np * sizeof *d->ord);
  ad_free(c, d->bucket_of, np * sizeof *d->bucket_of);
  ad_free(c, d->offset, np * sizeof *d->offset);
  ad_free(c, d->tsize, np * sizeof *d->tsize);
  ad_free(c, d->tser, np * sizeof *d->tser);
  ad_free(c, d->remaining, np * sizeof *d->remaining);
  ad_free(c, d->flags, (2 * np + 2) * sizeof *d->flags);
  ad_free(c, d->look, np * sizeof *d->look);
  ad_free(c, d->uidx, np * sizeof *d->uidx);
  ad_free(c, d->first_of, np * sizeof *d->first_of);
  ad_free(c, d->oidx, np * sizeof *d->oidx);
  ad_free(c, d->oseen, np ? np : 1);
  ad_free(c, d->gath_ts, n1 * sizeof *d->gath_ts);
  ad_free(c, d->gath_cnt, n1 * sizeof *d->gath_cnt);
  ad_free(c, h->st, (size_t)h->stcap * sizeof *h->st);
  h->st = NULL, h->stcap = h->nst = h->st_count = 0, h->stale = false;
  d->b = NULL, d->t = NULL, d->ord = d->bucket_of = d->remaining = d->flags = NULL;
  d->offset = d->tsize = NULL, d->tser = NULL, d->look = NULL, d->nb = d->np = 0;
  d->uidx = d->first_of = d->oidx = NULL, d->nfull = d->nopt = 0;
  d->oseen = NULL;
  d->gath_ts = NULL, d->gath_cnt = NULL;
}

void nn_dist_free(nn_dist *d) {
  if (!d) return;
  if (d->hooked) ad_set_backward_hook(d->ctx, d->prev, d->prev_ud);
  /* the tape's views of the parameters, and of the gradients, read the
   * windows; and a gradient an op of the tape read cannot move out */
  if (d->sh.plive || (d->sh.on && d->sh.zc)) ad_tape_reset(d->ctx);
  params_unshare(d);
  layout_free(d);
  synced_free(d->ctx, &d->ms);
  ad_free(d->ctx, d->seen, d->walk_cap);
  ad_free(d->ctx, d->stack, d->walk_cap * sizeof *d->stack);
  int done = 0;
  MPI_Finalized(&done);
  if (!done) {
    if (d->sh.cross != MPI_COMM_NULL) MPI_Comm_free(&d->sh.cross);
    MPI_Comm_free(&d->sh.node);
    MPI_Comm_free(&d->comm);
  }
  ad_free(d->ctx, d, sizeof *d);
}

int nn_dist_rank(const nn_dist *d) { return d ? d->rank : 0; }
int nn_dist_size(const nn_dist *d) { return d ? d->size : 1; }
const nn_dist_ops *nn_dist_fit_ops(nn_dist *d) { return d ? &d->ops : NULL; }

void nn_dist_get_stats(nn_dist *d, nn_dist_stats *stats, bool reset) {
  if (!d) return;
  d->stats.shared_params = d->sh.pon;
  if (stats) *stats = d->stats;
  if (reset) {
    nn_dist_stats keep = d->stats;
    memset(&d->stats, 0, sizeof d->stats);
    d->stats.buckets = keep.buckets;
    d->stats.nodes = keep.nodes;
    d->stats.shared_memory = keep.shared_memory;
  }
}

/* A broken invariant on one rank, with no exchange after it to carry it
 * to the others (a gradient binding refused where the tape rules allow it,
 * a sharded step's ranges from the layout refused): print and end the job. */
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
 * <what>: <its message>" with its status. *status gets that status. In
 * the same exchange, range[0] and range[1] (range may be NULL) get the
 * smallest and the largest of the ranks' n. */
static int agree_n(nn_dist *d, bool failed, ad_status own, const char *what, ad_status *status,
                   long long n, long long *range) {
  long long v[3] = {failed ? d->size - d->rank : 0, -n, n};
  MPI_Allreduce(MPI_IN_PLACE, v, 3, MPI_LONG_LONG, MPI_MAX, d->comm);
  if (range) range[0] = -v[1], range[1] = v[2];
  int code = (int)v[0];
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

static int agree(nn_dist *d, bool failed, ad_status own, const char *what, ad_status *status) {
  return agree_n(d, failed, own, what, status, 0, NULL);
}

/* Every rank takes part in the first exchange whatever its n (also 0), so
 * that a rank whose n differs makes every rank fail instead of leaving
 * the others in a sum of another length (which MPI ends the job for). */
ad_status nn_dist_sum(nn_dist *d, double *v, int n) {
  if (!d) return AD_ERR_NULL;
  size_t bytes = n > 0 ? (size_t)n * (size_t)d->size * sizeof(double) : 0;
  double *all = NULL; /* the deterministic mode's, allocated before the ranks agree */
  ad_status st = AD_OK, other;
  long long range[2];
  if (n < 0)
    st = ad_set_error(d->ctx, AD_ERR_ARG, "dist_sum: n is %d", n);
  else if (n > 0 && !v)
    st = ad_set_error(d->ctx, AD_ERR_NULL, "dist_sum: v is NULL");
  else if (n > 0 && d->o.deterministic && !(all = ad_malloc(d->ctx, bytes)))
    st = AD_ERR_OOM;
  if (agree_n(d, st != AD_OK, st, "failed", &other, n, range) >= 0) {
    ad_free(d->ctx, all, bytes);
    return st != AD_OK ? st : other;
  }
  if (range[0] != range[1]) {
    ad_free(d->ctx, all, bytes);
    return ad_set_error(d->ctx, AD_ERR_SHAPE,
                        "dist_sum: the ranks pass different n (from %lld to %lld); every rank "
                        "sums the same number of values",
                        range[0], range[1]);
  }
  if (n == 0) return AD_OK;
  if (!d->o.deterministic) {
    MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, d->comm);
    return AD_OK;
  }
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

/* The description of a state list, one line per tensor; a parameter that
 * takes no gradient is "frozen" (one frozen on some ranks only would take
 * only the other ranks' gradient there, and the ranks' copies drift apart).
 * first (NULL: none): each entry's first entry of its tensor, an entry that
 * repeats one (tied weights) described as "tied to <kind> j": lists that
 * tie other entries ([a, b, a] and [a, b, b]) would compute other
 * functions, and the broadcast by entry would give b a's values. */
static size_t describe_list(char *out, size_t cap, const char *kind, int n,
                            const char *const *names, ad_tensor *const *ts, const int *first) {
  size_t len = 0;
  if (out && cap) *out = '\0'; /* an empty list: an empty string, not cap bytes unset */
  bool params = strcmp(kind, "parameter") == 0;
  for (int i = 0; i < n; i++) {
    char s[96], tie[48] = "";
    if (first && first[i] != i) snprintf(tie, sizeof tie, " tied to %s %d", kind, first[i]);
    int k = snprintf(out ? out + len : NULL, out ? cap - len : 0, "%s %d '%s' %s %s%s%s\n", kind, i,
                     names[i], ad_dtype_name(ts[i]->dtype), ad_shape_str(ts[i], s, sizeof s),
                     params && !ad_tensor_requires_grad(ts[i]) ? " frozen" : "", tie);
    len += (size_t)k;
  }
  return len;
}

static int cmp_lookup_idx(const void *a, const void *b);

/* first[i]: the first of the n entries ts that holds ts[i]'s tensor (i
 * itself for most), through look (n entries of scratch): sorted by
 * address, then index. */
static void first_entries(int n, ad_tensor *const *ts, lookup *look, int *first) {
  for (int i = 0; i < n; i++) look[i] = (lookup){(uintptr_t)ts[i], i};
  qsort(look, (size_t)n, sizeof *look, cmp_lookup_idx);
  for (int k = 0, f = 0; k < n; k++) {
    if (k == 0 || look[k].key != look[k - 1].key) f = look[k].idx;
    first[look[k].idx] = f;
  }
}

/* v in the fewest digits that read back as v (%.17g prints 0.9 as
 * 0.90000000000000002). */
static void exact(double v, char out[32]) {
  for (int p = 15; p <= 17; p++) {
    snprintf(out, 32, "%.*g", p, v);
    if (strtod(out, NULL) == v || v != v) return;
  }
}

/* The settings of parameter group g > 0 of opt (nn_optimizer_add_param_group)
 * that its state does not hold (its rates it does: rank 0's are sent) */
static size_t describe_group(char *out, size_t cap, nn_optimizer *opt, int g, bool cycled) {
  const nn_opt_config_ext *x = nn_optimizer_group_config_ext(opt, g);
  const nn_opt_config *o = &x->base;
  double v[] = {o->momentum,
                o->dampening,
                o->weight_decay,
                o->beta1,
                o->beta2,
                o->alpha,
                o->eps,
                o->lr_decay,
                o->initial_accumulator,
                x->momentum_decay,
                x->rho,
                x->lambd,
                x->asgd_alpha,
                x->t0,
                x->etaminus,
                x->etaplus,
                x->step_size_min,
                x->step_size_max};
  enum { NV = sizeof v / sizeof v[0] };
  char f[NV][32];
  for (int i = 0; i < NV; i++) exact(v[i], f[i]);
  if (cycled) /* follows the schedule's step, as group 0's (see describe) */
    snprintf(o->kind == NN_OPT_SGD || o->kind == NN_OPT_RMSPROP ? f[0] : f[3], sizeof f[0],
             "cycled");
  /* two short lines: a difference is then shown from the line's start,
   * the group's number with it (first_difference) */
  size_t len = (size_t)snprintf(out, out ? cap : 0,
                                "parameter group %d: momentum %s, dampening %s, nesterov %d, "
                                "weight_decay %s, betas %s %s, alpha %s, centered %d, eps %s, "
                                "lr_decay %s, initial_accumulator %s, amsgrad %d, maximize %d\n",
                                g, f[0], f[1], o->nesterov, f[2], f[3], f[4], f[5], o->centered,
                                f[6], f[7], f[8], o->amsgrad, o->maximize);
  return len + (size_t)snprintf(out ? out + len : NULL, out ? cap - len : 0,
                                "parameter group %d: momentum_decay %s, rho %s, lambd %s, "
                                "asgd_alpha %s, t0 %s, etas %s %s, step_sizes %s %s\n",
                                g, f[9], f[10], f[11], f[12], f[13], f[14], f[15], f[16], f[17]);
}

/* The settings nn_schedule_ext2 added with cyclic, sequential and chained
 * (a scale_fn, an address, only as present or not) */
static size_t describe_sched_more(char *out, size_t cap, const nn_schedule_ext2 *s,
                                  const char *label) {
  char b[32];
  exact(s->base_lr, b);
  return (size_t)snprintf(out, out ? cap : 0,
                          "%s base_lr %s, step_sizes %lld %lld, mode %d, scale_mode %d, scale_fn "
                          "%d, %d schedulers\n",
                          label, b, (long long)s->step_size_up, (long long)s->step_size_down,
                          (int)s->mode, (int)s->scale_mode, s->scale_fn != NULL, s->n_schedulers);
}

/* A sequential's or chained's child: every setting a child may read (its
 * lr_lambda, an address, not) */
static size_t describe_kid(char *out, size_t cap, const nn_schedule_ext2 *k, const char *label) {
  double v[] = {k->gamma, k->eta_min, k->start_factor, k->end_factor, k->factor, k->power};
  char f[6][32];
  for (int i = 0; i < 6; i++) exact(v[i], f[i]);
  size_t len = (size_t)snprintf(out, out ? cap : 0,
                                "%s kind %d, step_size %lld, gamma %s, t_max %lld, eta_min %s, "
                                "start_factor %s, end_factor %s, total_iters %lld, factor %s, "
                                "power %s, t_0 %lld, t_mult %lld, milestones",
                                label, (int)k->kind, (long long)k->step_size, f[0],
                                (long long)k->t_max, f[1], f[2], f[3], (long long)k->total_iters,
                                f[4], f[5], (long long)k->t_0, (long long)k->t_mult);
  for (int i = 0; i < k->n_milestones; i++)
    len += (size_t)snprintf(out ? out + len : NULL, out ? cap - len : 0, " %lld",
                            (long long)k->milestones[i]);
  return len + (size_t)snprintf(out ? out + len : NULL, out ? cap - len : 0, "\n");
}

/* first: the parameters' first entries, then the buffers' (first_entries). */
static size_t describe(char *out, size_t cap, nn_model *m, nn_optimizer *opt, const int *first) {
  nn_params *p = nn_model_params(m), *b = nn_model_buffers(m);
  int np = nn_params_count(p), nb = nn_params_count(b);
  int ns = opt ? nn_optimizer_state_count(opt) : 0;
  size_t len = (size_t)snprintf(
      out, out ? cap : 0, "%d parameters, %d buffers, %d optimizer state tensors\n", np, nb, ns);
  len += describe_list(out ? out + len : NULL, out ? cap - len : 0, "parameter", np,
                       nn_params_names(p), nn_params_tensors(p), first);
  len += describe_list(out ? out + len : NULL, out ? cap - len : 0, "buffer", nb,
                       nn_params_names(b), nn_params_tensors(b), first + np);
  if (ns)
    len += describe_list(out ? out + len : NULL, out ? cap - len : 0, "optimizer state", ns,
                         nn_optimizer_state_names(opt), nn_optimizer_state_tensors(opt), NULL);
  if (opt) { /* the settings the state does not hold (the rate it does: rank 0's is sent) */
    const nn_opt_config *o = nn_optimizer_config(opt);
    const nn_schedule *sc = nn_optimizer_schedule(opt);
    nn_schedule none = {0};
    if (!sc) sc = &none;
    double v[] = {
        o->momentum, o->dampening, o->weight_decay,        o->beta1,     o->beta2,      o->alpha,
        o->eps,      o->lr_decay,  o->initial_accumulator, o->clip_norm, o->clip_value, sc->gamma,
        sc->eta_min};
    enum { NV = sizeof v / sizeof v[0] };
    char f[NV][32];
    for (int i = 0; i < NV; i++) exact(v[i], f[i]);
    /* a onecycle's cycled momentum or beta1 follows its step, which is
     * state (rank 0's is sent, as the rate): its settings, base_momentum
     * and max_momentum, are compared below instead */
    const nn_schedule_ext2 *s2 = nn_optimizer_schedule_ext2(opt);
    if (s2 && (s2->kind == NN_SCHED_ONECYCLE || s2->kind == NN_SCHED_CYCLIC) && s2->cycle_momentum)
      snprintf(o->kind == NN_OPT_SGD || o->kind == NN_OPT_RMSPROP ? f[0] : f[3], sizeof f[0],
               "cycled");
    const nn_opt_config_ext *x = nn_optimizer_config_ext(opt);
    char mdf[32]; /* NAdam's, in nn_opt_config_ext */
    exact(x->momentum_decay, mdf);
    /* Adadelta's, ASGD's and Rprop's, in nn_opt_config_ext */
    double xv[] = {x->rho,      x->lambd,   x->asgd_alpha,    x->t0,
                   x->etaminus, x->etaplus, x->step_size_min, x->step_size_max};
    char xf[8][32];
    for (int i = 0; i < 8; i++) exact(xv[i], xf[i]);
    len += (size_t)snprintf(out ? out + len : NULL, out ? cap - len : 0,
                            "optimizer settings: momentum %s, dampening %s, nesterov %d, "
                            "weight_decay %s, betas %s %s, alpha %s, centered %d, eps %s, "
                            "lr_decay %s, initial_accumulator %s, clip_norm %s, clip_value %s, "
                            "amsgrad %d, maximize %d, momentum_decay %s\n"
                            "learning-rate schedule: kind %d, step_size %lld, gamma %s, t_max "
                            "%lld, eta_min %s\n",
                            f[0], f[1], o->nesterov, f[2], f[3], f[4], f[5], o->centered, f[6],
                            f[7], f[8], f[9], f[10], o->amsgrad, o->maximize, mdf, (int)sc->kind,
                            (long long)sc->step_size, f[11], (long long)sc->t_max, f[12]);
    len += (size_t)snprintf(out ? out + len : NULL, out ? cap - len : 0,
                            "optimizer settings: rho %s, lambd %s, asgd_alpha %s, t0 %s, etas %s "
                            "%s, step_sizes %s %s\n",
                            xf[0], xf[1], xf[2], xf[3], xf[4], xf[5], xf[6], xf[7]);
    bool cycled =
        s2 && (s2->kind == NN_SCHED_ONECYCLE || s2->kind == NN_SCHED_CYCLIC) && s2->cycle_momentum;
    for (int g = 1; g < nn_optimizer_group_count(opt); g++)
      len += describe_group(out ? out + len : NULL, out ? cap - len : 0, opt, g, cycled);
    /* the settings only nn_schedule_ext holds, and the plateau's */
    const nn_schedule_ext *se = nn_optimizer_schedule_ext(opt);
    if (se) {
      char sf[32], ef[32];
      exact(se->start_factor, sf), exact(se->end_factor, ef);
      len += (size_t)snprintf(out ? out + len : NULL, out ? cap - len : 0,
                              "schedule's start_factor %s, end_factor %s, total_iters %lld, "
                              "milestones",
                              sf, ef, (long long)se->total_iters);
      for (int i = 0; i < se->n_milestones; i++)
        len += (size_t)snprintf(out ? out + len : NULL, out ? cap - len : 0, " %lld",
                                (long long)se->milestones[i]);
      len += (size_t)snprintf(out ? out + len : NULL, out ? cap - len : 0, "\n");
    }
    /* and those only nn_schedule_ext2 holds (its lr_lambda, an address,
     * cannot be compared between processes) */
    if (s2) {
      char xf2[8][32];
      double v2[8] = {s2->max_lr,        s2->pct_start,    s2->div_factor, s2->final_div_factor,
                      s2->base_momentum, s2->max_momentum, s2->factor,     s2->power};
      for (int i = 0; i < 8; i++) exact(v2[i], xf2[i]);
      len += (size_t)snprintf(
          out ? out + len : NULL, out ? cap - len : 0,
          "schedule's step_per_batch %d, three_phase %d, cycle_momentum %d, anneal %d, max_lr %s, "
          "total_steps %lld, pct_start %s, div_factor %s, final_div_factor %s, momenta %s %s, "
          "t_0 %lld, t_mult %lld, factor %s, power %s\n",
          s2->step_per_batch, s2->three_phase, s2->cycle_momentum, (int)s2->anneal, xf2[0],
          (long long)s2->total_steps, xf2[1], xf2[2], xf2[3], xf2[4], xf2[5], (long long)s2->t_0,
          (long long)s2->t_mult, xf2[6], xf2[7]);
      len += describe_sched_more(out ? out + len : NULL, out ? cap - len : 0, s2, "schedule's");
      /* a sequential's or chained's children, one line each */
      for (int i = 0; i < s2->n_schedulers; i++) {
        char label[48];
        snprintf(label, sizeof label, "schedule's schedulers[%d]:", i);
        len += describe_kid(out ? out + len : NULL, out ? cap - len : 0, &s2->schedulers[i], label);
      }
    }
    const nn_plateau *pl = nn_optimizer_plateau(opt);
    if (pl) {
      char pf[4][32];
      double pv[4] = {pl->factor, pl->threshold, pl->min_lr, pl->eps};
      for (int i = 0; i < 4; i++) exact(pv[i], pf[i]);
      len += (size_t)snprintf(out ? out + len : NULL, out ? cap - len : 0,
                              "plateau: mode %d, factor %s, patience %d, threshold %s, "
                              "threshold_mode %d, cooldown %d, min_lr %s, eps %s\n",
                              (int)pl->mode, pf[0], pl->patience, pf[1], (int)pl->threshold_mode,
                              pl->cooldown, pf[2], pf[3]);
    }
  }
  return len;
}

/* The first line where mine and theirs differ, as a message. */
static bool first_difference(const char *mine, const char *theirs, int rank, char *msg, size_t n) {
  while (*mine || *theirs) {
    size_t a = strcspn(mine, "\n"), b = strcspn(theirs, "\n");
    if (a != b || memcmp(mine, theirs, a) != 0) {
      /* a long line (many milestones) is shown from shortly before where
       * the two first differ, each side cut to half the room, so that the
       * difference and rank 0's side stay in msg */
      size_t j = 0, room = (n > 64 ? n - 64 : 0) / 2, skip = 0;
      while (j < a && j < b && mine[j] == theirs[j]) j++;
      if ((a > room || b > room) && j > 40) skip = j - 40;
      size_t ka = a - skip < room ? a - skip : room, kb = b - skip < room ? b - skip : room;
      const char *dots = skip ? "..." : "";
      snprintf(msg, n, "%s%.*s on rank %d, %s%.*s on rank 0", a ? dots : "", (int)(a ? ka : 6),
               a ? mine + skip : "(none)", rank, b ? dots : "", (int)(b ? kb : 6),
               b ? theirs + skip : "(none)");
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

/* Frees the pt array and the homes no parameter took. */
static void params_free(nn_dist *d) {
  shm *h = &d->sh;
  if (!h->pt) return;
  for (int i = 0; i < h->pcap; i++)
    if (h->pt[i].home) ad_free(d->ctx, h->pt[i].home, h->pt[i].bytes);
  ad_free(d->ctx, h->pt, (size_t)h->pcap * sizeof *h->pt);
  h->pt = NULL, h->pn = h->pcap = 0;
}

/* Gives the parameters in the node's window back to this rank's memory
 * (values kept), into the homes params_share set aside, so that it cannot
 * run out of memory; the window itself stays until params_unshare: the
 * tape's views of them keep reading it. Not collective; nobody may write
 * the window from then on. */
static void params_leave(nn_dist *d) {
  shm *h = &d->sh;
  if (!h->pon) return;
  err_saved e;
  err_keep(d->ctx, &e);
  bool failed = false;
  for (int i = 0; i < h->pn; i++) { /* not one freed or moved since (see shared_param) */
    if (h->pt[i].t->data != h->pt[i].at) continue;
    failed |= ad_tensor_adopt_data(h->pt[i].t, &h->pt[i].home) != AD_OK;
  }
  if (failed) err_restore(d->ctx, &e);
  params_free(d);
  h->pon = false;
}

/* Gives the parameters in the node's window back to each rank's memory
 * (values kept: the ranks read the window at once, nobody writes it) and
 * frees the window. The tape's views of them read the window: reset it
 * first (see nn_dist_free). */
static void params_unshare(nn_dist *d) {
  shm *h = &d->sh;
  if (!h->plive) return;
  params_leave(d);
  int done = 0;
  MPI_Finalized(&done);
  if (!done) {
    win_barrier(h, h->pwin); /* nobody writes the window again before all have read it */
    MPI_Win_unlock_all(h->pwin);
    MPI_Win_free(&h->pwin);
  }
  h->plive = false;
}

/* With shard_optimizer on a node of several ranks: parameters p (the same
 * values on every rank) become one copy in the first rank's memory,
 * which every rank's tensors use (ad_tensor_set_data_buffer), so a sharded
 * step writes each rank's slices where every rank reads them, without the
 * exchange. Collective; where MPI or the tape does not allow it on some
 * rank, every rank keeps its own copy. */
static void params_share(nn_dist *d, nn_params *p) {
  shm *h = &d->sh;
  if (!h->wanted || h->lsize == 1 || !d->o.shard_optimizer || !p) return;
  int nf = nn_params_count(p), n = 0;
  ad_tensor *const *pts = nn_params_tensors(p);
  /* with the memory each parameter moves back into (params_leave), so that
   * leaving cannot fail: a rank without it shares nothing, nor do the others */
  h->pcap = nf ? nf : 1;
  h->pt = ad_malloc(d->ctx, (size_t)h->pcap * sizeof *h->pt);
  int ok = h->pt != NULL;
  if (ok) memset(h->pt, 0, (size_t)h->pcap * sizeof *h->pt);
  /* each tensor once, in the list's order: a tied weight, listed twice,
   * has one place in the window (and one index in the layout: layout_local) */
  size_t bytes = 0;
  for (int f = 0; ok && f < nf; f++) {
    bool seen = false;
    for (int j = 0; j < n && !seen; j++) seen = h->pt[j].t == pts[f];
    if (seen) continue;
    h->pt[n].t = pts[f];
    h->pt[n].bytes = (size_t)pts[f]->size * ad_dtype_size(pts[f]->dtype);
    bytes += round_up64(h->pt[n].bytes);
    ok = (h->pt[n].home = ad_malloc(d->ctx, h->pt[n].bytes)) != NULL;
    n++;
  }
  ok = ok && (h->lrank != 0 || backing_room(h->dir, bytes ? bytes : 64));
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, d->comm);
  if (!ok) {
    params_free(d);
    return;
  }
  MPI_Info info;
  MPI_Info_create(&info);
  MPI_Info_set(info, "alloc_shared_noncontig", "true");
  void *base = NULL;
  MPI_Aint mine = h->lrank == 0 ? (MPI_Aint)(bytes ? bytes : 64) : 0;
  ok = MPI_Win_allocate_shared(mine, 1, info, h->node, &base, &h->pwin) == MPI_SUCCESS;
  MPI_Info_free(&info);
  char *win = NULL;
  if (ok) {
    MPI_Aint sz;
    int unit;
    ok = MPI_Win_shared_query(h->pwin, 0, &sz, &unit, &win) == MPI_SUCCESS && win;
    if (ok) MPI_Win_lock_all(MPI_MODE_NOCHECK, h->pwin);
  }
  int all = ok;
  MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_MIN, d->comm);
  if (!all) {
    if (ok) {
      MPI_Win_unlock_all(h->pwin);
      MPI_Win_free(&h->pwin);
    }
    params_free(d);
    return;
  }
  /* the first rank's values into the window, then every rank takes it */
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    size_t b = h->pt[i].bytes;
    if (h->lrank == 0 && b) memcpy(win + off, h->pt[i].t->data, b);
    off += round_up64(b);
  }
  win_barrier(h, h->pwin);
  err_saved e;
  err_keep(d->ctx, &e);
  int bound = 0;
  off = 0;
  for (int i = 0; i < n; i++, bound++) {
    ad_tensor *t = h->pt[i].t;
    if (ad_tensor_set_data_buffer(t, win + off, false) != AD_OK) { /* the tape used it */
      err_restore(d->ctx, &e);
      break;
    }
    h->pt[i].serial = ad_tensor_serial(t), h->pt[i].at = win + off;
    off += round_up64(h->pt[i].bytes);
  }
  h->pon = h->plive = true, h->pn = bound;
  all = bound == n;
  MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_MIN, d->comm);
  if (!all) params_unshare(d); /* some rank could not: every rank its own copy */
}

/* The bytes of a record's arrays (at least one element each). */
static size_t ser_bytes(int np, int nb) {
  return (size_t)(np + nb ? np + nb : 1) * sizeof(uint64_t);
}
static size_t buf_bytes(int nb) { return (size_t)(nb ? nb : 1) * sizeof(ad_tensor *); }

static void synced_free(ad_ctx *c, synced *ms) {
  if (ms->ser) ad_free(c, ms->ser, ser_bytes(ms->np, ms->nb));
  if (ms->buf) ad_free(c, ms->buf, buf_bytes(ms->nb));
  *ms = (synced){0};
}

/* m's record; false when out of memory (nothing kept). */
static bool synced_new(ad_ctx *c, nn_model *m, synced *ms) {
  nn_params *p = nn_model_params(m), *b = nn_model_buffers(m);
  int np = nn_params_count(p), nb = nn_params_count(b);
  *ms = (synced){.ser = ad_malloc(c, ser_bytes(np, nb)),
                 .buf = ad_malloc(c, buf_bytes(nb)),
                 .np = np,
                 .nb = nb};
  if (!ms->ser || !ms->buf) {
    synced_free(c, ms);
    return false;
  }
  for (int i = 0; i < np; i++) ms->ser[i] = ad_tensor_serial(nn_params_tensor(p, i));
  for (int i = 0; i < nb; i++) {
    ms->buf[i] = nn_params_tensor(b, i);
    ms->ser[np + i] = ad_tensor_serial(ms->buf[i]);
  }
  return true;
}

/* Whether a step over p is over the synced model's parameters, that model
 * still live: p holds its parameters (by serial) and its buffers are
 * there. */
static bool synced_step(const nn_dist *d, const nn_params *p) {
  const synced *ms = &d->ms;
  if (!ms->ser || nn_params_count(p) != ms->np) return false;
  for (int i = 0; i < ms->np; i++) {
    ad_tensor *t = nn_params_tensor(p, i); /* (serials count in each context) */
    if (ad_tensor_ctx(t) != d->ctx || ad_tensor_serial(t) != ms->ser[i]) return false;
  }
  for (int i = 0; i < ms->nb; i++)
    if (ad_tensor_serial(ms->buf[i]) != ms->ser[ms->np + i]) return false;
  return true;
}

ad_status nn_dist_sync(nn_dist *d, nn_model *m, nn_optimizer *opt) {
  if (!d) return AD_ERR_NULL;
  ad_ctx *c = d->ctx;
  bool failed = false;
  ad_status st = AD_OK;
  char *mine = NULL, *theirs = NULL;
  size_t mlen = 0;
  long long tlen = 0;
  synced ms = {0};
  if (!m) {
    failed = true, st = ad_set_error(c, AD_ERR_NULL, "dist_sync: model is NULL");
  } else if (nn_model_ctx(m) != c) {
    /* its backward would not run the hook, nor could ensure_grads make
     * its gradients on c (that aborted the job) */
    failed = true;
    st = ad_set_error(c, AD_ERR_ARG, "dist_sync: the model is on another context than the nn_dist");
  } else {
    nn_params *mp = nn_model_params(m), *mb = nn_model_buffers(m);
    int np = nn_params_count(mp), nb = nn_params_count(mb);
    size_t nn = (size_t)(np > nb ? np : nb) + 1;
    lookup *look = ad_malloc(c, nn * sizeof *look);
    int *first = look ? ad_malloc(c, (size_t)(np + nb + 1) * sizeof *first) : NULL;
    if (first) {
      first_entries(np, nn_params_tensors(mp), look, first);
      first_entries(nb, nn_params_tensors(mb), look, first + np);
      mlen = describe(NULL, 0, m, opt, first) + 1;
    }
    if (!first || !(mine = ad_malloc(c, mlen)) || !synced_new(c, m, &ms))
      failed = true, st = AD_ERR_OOM;
    else
      describe(mine, mlen, m, opt, first);
    if (first) ad_free(c, first, (size_t)(np + nb + 1) * sizeof *first);
    if (look) ad_free(c, look, nn * sizeof *look);
    /* the broadcast writes the parameters, buffers and optimizer state
     * through their data (as nn_model_load, which notes them all): a
     * backward through ops recorded before would read the new values */
    nn_params *lists[2] = {nn_model_params(m), nn_model_buffers(m)};
    for (int l = 0; l < 2 && !failed; l++)
      for (int i = 0; i < nn_params_count(lists[l]) && !failed; i++)
        if ((st = ad_tensor_mark_modified(nn_params_tensors(lists[l])[i])) != AD_OK) failed = true;
    for (int i = 0; opt && i < nn_optimizer_state_count(opt) && !failed; i++)
      if ((st = ad_tensor_mark_modified(nn_optimizer_state_tensors(opt)[i])) != AD_OK)
        failed = true;
  }
  ad_status other;
  if (agree(d, failed, st, "failed", &other) >= 0) {
    synced_free(c, &ms);
    ad_free(c, mine, mlen);
    if (m && nn_model_ctx(m) != c) /* where nn_fit looks for it */
      ad_set_error(nn_model_ctx(m), failed ? st : other, "%s", ad_last_error(c));
    return failed ? st : other;
  }
  tlen = (long long)mlen;
  MPI_Bcast(&tlen, 1, MPI_LONG_LONG, 0, d->comm);
  theirs = d->rank == 0 ? mine : ad_malloc(c, (size_t)tlen);
  if (agree(d, !theirs, AD_ERR_OOM, "failed", &other) >= 0) { /* every rank still in step */
    if (d->rank != 0) ad_free(c, theirs, (size_t)tlen);       /* NULL where it failed */
    ad_free(c, mine, mlen);
    synced_free(c, &ms);
    return theirs ? other : AD_ERR_OOM;
  }
  bcast_bytes(d, theirs, (size_t)tlen, 0);
  char msg[MSG_LEN];
  bool differs = d->rank != 0 && first_difference(mine, theirs, d->rank, msg, sizeof msg);
  if (d->rank != 0) ad_free(c, theirs, (size_t)tlen);
  ad_free(c, mine, mlen);
  int code = differs ? d->size - d->rank : 0;
  MPI_Allreduce(MPI_IN_PLACE, &code, 1, MPI_INT, MPI_MAX, d->comm);
  if (code) {
    synced_free(c, &ms);
    int root = d->size - code;
    MPI_Bcast(msg, MSG_LEN, MPI_CHAR, root, d->comm);
    return ad_set_error(c, AD_ERR_SHAPE, "dist: rank %d differs from rank 0: %s", root, msg);
  }
  if (stale_is(d, opt))
    gather_stale(d); /* after sharded steps: whole before rank 0's is sent */
  else
    d->sh.stale = false;             /* another optimizer's (or none): taken for freed */
  if (d->sh.plive) ad_tape_reset(c); /* its views of the parameters read the window */
  params_unshare(d);                 /* each rank receives into its own memory */
  /* the next step builds the layout again on every rank (the parameters
   * may be the layout's, but the window's state is gone) */
  d->layout_stale = true;
  nn_params *p = nn_model_params(m), *b = nn_model_buffers(m);
  bcast_list(d, nn_params_count(p), nn_params_tensors(p));
  bcast_list(d, nn_params_count(b), nn_params_tensors(b));
  if (opt) bcast_list(d, nn_optimizer_state_count(opt), nn_optimizer_state_tensors(opt));
  synced_free(c, &d->ms);
  d->ms = ms;
  params_share(d, p);
  return AD_OK;
}

/* ---------------------------------------------------------- checkpoints */

ad_status nn_dist_save(nn_dist *d, const nn_model *m, const nn_optimizer *opt, const char *path) {
  if (!d) return AD_ERR_NULL;
  if (stale_is(d, opt)) gather_stale(d);
  ad_status st = d->rank == 0 ? nn_model_save(m, opt, path) : AD_OK, other = AD_OK;
  agree(d, st != AD_OK, st, "could not save", &other);
  return st != AD_OK ? st : other;
}

ad_status nn_dist_load(nn_dist *d, nn_model *m, nn_optimizer *opt, const char *path) {
  if (!d) return AD_ERR_NULL;
  ad_status st = d->rank == 0 ? nn_model_load(m, opt, path) : AD_OK, other = AD_OK;
  agree(d, st != AD_OK, st, "could not load", &other);
  if (st != AD_OK || other != AD_OK) return st != AD_OK ? st : other; /* still in slices */
  if (stale_is(d, opt)) d->sh.stale = false;                          /* rank 0 loaded it whole */
  return nn_dist_sync(d, m, opt);
}

/* --------------------------------------------------------------- layout */

static int cmp_lookup(const void *a, const void *b) {
  uintptr_t x = ((const lookup *)a)->key, y = ((const lookup *)b)->key;
  return x < y ? -1 : x > y;
}

/* By address, then by index: a tensor's first entry in a list first. */
static int cmp_lookup_idx(const void *a, const void *b) {
  int c = cmp_lookup(a, b);
  return c ? c
           : (((const lookup *)a)->idx > ((const lookup *)b)->idx) -
                 (((const lookup *)a)->idx < ((const lookup *)b)->idx);
}

static int find(const nn_dist *d, const ad_tensor *t) {
  lookup k = {(uintptr_t)t, 0};
  const lookup *r = bsearch(&k, d->look, (size_t)d->np, sizeof k, cmp_lookup);
  return r ? r->idx : -1;
}

/* Whether the layout is for p as it is now: p holds the layout's tensors
 * in its order (by address and serial: a tensor made in a freed one's
 * header is another, which an address alone cannot tell, and serials count
 * in each context), of the sizes and dtypes it was built for. Any list
 * object will do (a list made again in a freed one's place, or another
 * list of the same tensors): every rank that runs the same code judges
 * alike, whatever its allocator gave it. */
static bool layout_current(const nn_dist *d, const nn_params *p) {
  if (d->layout_stale || !d->b || !p || d->nfull != nn_params_count(p)) return false;
  ad_tensor *const *ts = nn_params_tensors(p);
  for (int f = 0; f < d->nfull; f++) {
    int i = d->uidx[f];
    if (ts[f] != d->t[i] || ad_tensor_serial(ts[f]) != d->tser[i] || ts[f]->size != d->tsize[i] ||
        ts[f]->dtype != d->b[d->bucket_of[i]].dtype)
      return false;
  }
  return true;
}

static size_t round_up64(size_t n) { return (n + 63) / 64 * 64; }

/* Frees the gradients' reserve (d->ghome) and the blocks still in it. */
static void ghome_free(nn_dist *d) {
  if (!d->ghome) return;
  for (int i = 0; i < d->np; i++)
    if (d->ghome[i]) ad_free(d->ctx, d->ghome[i], home_bytes(d, i));
  ad_free(d->ctx, d->ghome, (size_t)d->np * sizeof *d->ghome);
  d->ghome = NULL;
}

/* Whether a shared window's layout binds the gradients to it (zc); layout_local reserves their
 * memory for the way back (d->ghome) by the same rule. */
static bool zc_wanted(const nn_dist *d) { return d->sh.lsize > 1 && !d->o.private_gradients; }

/* The bytes of parameter i's gradient reserve (d->ghome), from the layout:
 * the tensor itself may have been freed since. */
static size_t home_bytes(const nn_dist *d, int i) {
  return (size_t)d->tsize[i] * ad_dtype_size(d->b[d->bucket_of[i]].dtype);
}

/* Whether the backing directory has room for a node's window of bytes
 * (with a quarter and 4 MiB to spare: MPI's own segments live there too).
 * Open MPI 4.1 fails a window whose backing file it cannot create (no such
 * directory; a container's default 64 MiB /dev/shm for a model of more
 * than about 3 M f32 parameters on 2 ranks) on the node's first rank only,
 * while the others wait inside MPI_Win_allocate_shared for that rank: so
 * the first rank looks before anyone asks. */
static bool backing_room(const char *dir, size_t bytes) {
  struct statvfs sv;
  if (statvfs(dir, &sv) != 0) return false;
  double avail = (double)sv.f_bavail * (double)sv.f_frsize;
  return avail >= (double)bytes * 1.25 + (double)(4 << 20);
}

/* The shared window of the current buckets (see struct shm), whose small
 * arrays layout_build allocated. Collective over every rank: a window that
 * MPI cannot give on some rank (no shared memory support) leaves every
 * rank on the MPI-collective path for good; no room for it in the backing
 * directory, for this layout. */
static void shm_build(nn_dist *d) {
  shm *h = &d->sh;
  size_t half = 0;
  for (int k = 0; k < d->nb; k++) {
    d->b[k].soff = half;
    half += round_up64((size_t)d->b[k].count * ad_dtype_size(d->b[k].dtype));
  }
  /* the flags, the rank's scale of each parity (zc) and when it packed
   * each bucket (dyn), then the chunk counters (dyn) */
  h->ctr =
      round_up64(2 * (size_t)d->nb * sizeof(atomic_llong) + (2 + (size_t)d->nb) * sizeof(double));
  h->head = h->ctr + (size_t)d->nb * CTR_BYTES; /* a line of its own for each bucket's pair */
  h->regions = d->o.shard_optimizer ? 3 : 2;    /* the third: parameters and state to share */
  h->half = half;
  h->zc = zc_wanted(d);
  h->dyn = h->zc && h->cross == MPI_COMM_NULL;
  size_t seg_bytes = h->head + (size_t)h->regions * half;
  h->red = seg_bytes;
  size_t red_bytes = h->zc ? 2 * half : 0; /* the first rank's: the reduced buffers */
  if (seg_bytes == 0) seg_bytes = 64;      /* no buckets: a window still, so the path stays on */
  int room = h->lrank == 0 ? backing_room(h->dir, seg_bytes * (size_t)h->lsize + red_bytes) : 1;
  MPI_Bcast(&room, 1, MPI_INT, 0, h->node);
  MPI_Allreduce(MPI_IN_PLACE, &room, 1, MPI_INT, MPI_MIN, d->comm);
  if (!room) return; /* every rank on the MPI-collective path for this layout */
  MPI_Info info;
  MPI_Info_create(&info);
  MPI_Info_set(info, "alloc_shared_noncontig", "true"); /* each segment on its own pages */
  void *base = NULL;
  int ok = MPI_Win_allocate_shared((MPI_Aint)(seg_bytes + (h->lrank == 0 ? red_bytes : 0)), 1, info,
                                   h->node, &base, &h->win) == MPI_SUCCESS;
  MPI_Info_free(&info);
  for (int s = 0; ok && s < h->lsize; s++) {
    MPI_Aint bytes;
    int unit;
    void *q = NULL;
    ok = MPI_Win_shared_query(h->win, s, &bytes, &unit, &q) == MPI_SUCCESS && q;
    h->seg[s] = q;
  }
  if (ok) {
    atomic_llong *f = (atomic_llong *)(void *)h->seg[h->lrank];
    for (int k = 0; k < 2 * d->nb; k++) atomic_init(&f[k], 0);
    for (int k = 0; k < d->nb; k++) { /* every segment has them; the first's are used */
      atomic_init(chunk_ctr(d, h->lrank, k, 0), 0);
      atomic_init(chunk_ctr(d, h->lrank, k, 1), 0);
    }
  }
  /* every rank's window (layout_build checked that the ranks' buckets,
   * and so their segments' layouts, are the same) */
  int all = ok;
  MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_MIN, d->comm); /* also: flags are zero */
  if (!all) {
    if (ok) MPI_Win_free(&h->win);
    h->wanted = false;
    if (h->cross != MPI_COMM_NULL) MPI_Comm_free(&h->cross);
    h->cross = MPI_COMM_NULL;
    return;
  }
  MPI_Win_lock_all(MPI_MODE_NOCHECK, h->win); /* a passive epoch for loads and stores */
  h->on = true;
}

/* The allocations and buckets of a layout over p, on this rank alone:
 * parameters in reverse order, a new bucket when the dtype changes or the
 * bucket holds bucket_bytes; a tensor listed twice (tied weights) is one
 * parameter, at its first entry. The per-parameter arrays hold one element
 * per entry of p (layout_free's sizes). Its error on the context. */
static ad_status layout_local(nn_dist *d, nn_params *p) {
  ad_ctx *c = d->ctx;
  int nf = nn_params_count(p);
  size_t n = (size_t)nf, n1 = n ? n : 1;
  shm *h = &d->sh;
  d->nfull = nf;
  d->np = 0;
  d->t = ad_malloc(c, n * sizeof *d->t);
  d->tser = ad_malloc(c, n * sizeof *d->tser);
  d->ord = ad_malloc(c, n * sizeof *d->ord);
  d->bucket_of = ad_malloc(c, n * sizeof *d->bucket_of);
  d->offset = ad_malloc(c, n * sizeof *d->offset);
  d->tsize = ad_malloc(c, n * sizeof *d->tsize);
  d->remaining = ad_malloc(c, n * sizeof *d->remaining);
  d->flags = ad_malloc(c, (2 * n + 2) * sizeof *d->flags);
  d->look = ad_malloc(c, n * sizeof *d->look);
  d->uidx = ad_malloc(c, n * sizeof *d->uidx);
  d->first_of = ad_malloc(c, n * sizeof *d->first_of);
  d->oidx = ad_malloc(c, n * sizeof *d->oidx);
  d->oseen = ad_malloc(c, n1);
  d->b = ad_malloc(c, n1 * sizeof *d->b);
  d->gath_ts = ad_malloc(c, n1 * sizeof *d->gath_ts);
  d->gath_cnt = ad_malloc(c, n1 * sizeof *d->gath_cnt);
  /* the sharded steps' record of optimizer state: nn's optimizers keep at
   * most three state tensors and a step counter per parameter; ops_step
   * also counts each parameter group's four and the optimizer's own */
  h->stcap = 8 * nf + 16;
  h->st = ad_malloc(c, (size_t)h->stcap * sizeof *h->st);
  d->nb = 0;
  if ((n && (!d->t || !d->tser || !d->ord || !d->bucket_of || !d->offset || !d->tsize ||
             !d->remaining || !d->look || !d->uidx || !d->first_of || !d->oidx)) ||
      !d->oseen || !d->flags || !d->b || !d->gath_ts || !d->gath_cnt || !h->st)
    return AD_ERR_OOM;
  if (h->wanted) { /* shm_build's, allocated before its collectives */
    h->seg = ad_malloc(c, (size_t)h->lsize * sizeof *h->seg);
    h->copied = ad_malloc(c, n1);
    h->lo = ad_malloc(c, n1 * sizeof *h->lo);
    h->hi = ad_malloc(c, n1 * sizeof *h->hi);
    h->flo = ad_malloc(c, n1 * sizeof *h->flo);
    h->fhi = ad_malloc(c, n1 * sizeof *h->fhi);
    if (!h->seg || !h->copied || !h->lo || !h->hi || !h->flo || !h->fhi) return AD_ERR_OOM;
  }
  memset(d->b, 0, n1 * sizeof *d->b);
  ad_tensor *const *ts = nn_params_tensors(p);
  for (int f = 0; f < nf; f++) {
    /* a tensor of another context would take gradient memory of this
     * one's allocator and free it through its own */
    if (ad_tensor_ctx(ts[f]) != c)
      return ad_set_error(c, ad_tensor_ctx(ts[f]) ? AD_ERR_ARG : AD_ERR_STATE,
                          "dist: parameter %d '%s' %s", f, nn_params_name(p, f),
                          ad_tensor_ctx(ts[f]) ? "is on another context than the nn_dist"
                                               : "was freed");
    d->look[f] = (lookup){(uintptr_t)ts[f], f};
  }
  /* each entry's first entry of its tensor (sorted by address, then
   * index), then the tensors numbered in the list's order */
  qsort(d->look, n, sizeof *d->look, cmp_lookup_idx);
  for (int k = 0, first = 0; k < nf; k++) {
    if (k == 0 || d->look[k].key != d->look[k - 1].key) first = d->look[k].idx;
    d->uidx[d->look[k].idx] = first;
  }
  for (int f = 0; f < nf; f++) {
    if (d->uidx[f] != f) {
      d->uidx[f] = d->uidx[d->uidx[f]]; /* the first entry's, numbered already */
      continue;
    }
    int i = d->np++;
    d->uidx[f] = i;
    d->first_of[i] = f;
    d->t[i] = ts[f];
    d->tser[i] = ad_tensor_serial(ts[f]);
    d->look[i] = (lookup){(uintptr_t)ts[f], i}; /* (entries below i are read already) */
  }
  int np = d->np;
  qsort(d->look, (size_t)np, sizeof *d->look, cmp_lookup);
  size_t bytes = 0;
  for (int j = 0; j < np; j++) {
    int i = np - 1 - j;
    ad_tensor *t = d->t[i];
    d->ord[j] = i;
    bucket *cur = d->nb ? &d->b[d->nb - 1] : NULL;
    if (!cur || cur->dtype != t->dtype || bytes >= d->o.bucket_bytes) {
      cur = &d->b[d->nb++];
      cur->first = j;
      cur->dtype = t->dtype;
      bytes = 0;
    }
    d->bucket_of[i] = d->nb - 1;
    d->offset[i] = cur->count;
    d->tsize[i] = t->size;
    cur->count += t->size;
    cur->last = j + 1;
    bytes += (size_t)t->size * ad_dtype_size(t->dtype);
  }
  for (int k = 0; k < d->nb; k++)
    if (d->b[k].count > INT32_MAX)
      return ad_set_error(c, AD_ERR_ARG, "dist: a gradient bucket of %lld elements is too large",
                          (long long)d->b[k].count);
  if (h->wanted && zc_wanted(d) && np) {
    d->ghome = ad_malloc(c, (size_t)np * sizeof *d->ghome);
    if (!d->ghome) return AD_ERR_OOM;
    memset(d->ghome, 0, (size_t)np * sizeof *d->ghome);
    for (int i = 0; i < np; i++)
      if (!(d->ghome[i] = ad_malloc(c, home_bytes(d, i)))) return AD_ERR_OOM;
  }
  return AD_OK;
}

/* After the ranks' layouts were found to differ: the first line where
 * this rank's description of p (as nn_dist_sync's, with the entries that
 * are one tensor) differs from rank 0's, of the lowest rank with one, into
 * msg on every rank, which returns that rank; -1 when they read alike
 * (bucket_bytes differs) or a rank has no memory for the descriptions.
 * Collective. */
static int layout_difference(nn_dist *d, nn_params *p, char *msg, size_t cap) {
  ad_ctx *c = d->ctx;
  err_saved e;
  err_keep(c, &e);
  int nf = d->nfull;
  for (int f = 0; f < nf; f++) d->remaining[f] = d->first_of[d->uidx[f]]; /* (scratch here) */
  size_t len = describe_list(NULL, 0, "parameter", nf, nn_params_names(p), nn_params_tensors(p),
                             d->remaining) +
               1;
  char *mine = ad_malloc(c, len), *theirs = NULL;
  if (mine)
    describe_list(mine, len, "parameter", nf, nn_params_names(p), nn_params_tensors(p),
                  d->remaining);
  long long tlen = mine ? (long long)len : 0;
  MPI_Bcast(&tlen, 1, MPI_LONG_LONG, 0, d->comm);
  int ok = mine && tlen > 0 && (d->rank == 0 || (theirs = ad_malloc(c, (size_t)tlen)));
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, d->comm);
  int code = 0;
  if (ok) {
    if (d->rank == 0) theirs = mine;
    bcast_bytes(d, theirs, (size_t)tlen, 0);
    code =
        d->rank != 0 && first_difference(mine, theirs, d->rank, msg, cap) ? d->size - d->rank : 0;
    MPI_Allreduce(MPI_IN_PLACE, &code, 1, MPI_INT, MPI_MAX, d->comm);
    if (code) MPI_Bcast(msg, (int)cap, MPI_CHAR, d->size - code, d->comm);
  }
  if (theirs && theirs != mine) ad_free(c, theirs, (size_t)tlen);
  ad_free(c, mine, len);
  err_restore(c, &e);
  return code ? d->size - code : -1;
}

/* The layout of p: its buckets, then the shared window or the buckets'
 * buffers. Collective, and every rank returns the same: a failure on one
 * rank (out of memory, buckets that differ) fails it on every rank, the
 * others with "dist: rank R could not build (or: allocate) its gradient
 * buckets: ...", and leaves no layout (the next call builds it again). */
static ad_status layout_build(nn_dist *d, nn_params *p) {
  gather_stale(d); /* while the old layout is there */
  layout_free(d);
  d->layout_stale = false;
  ad_ctx *c = d->ctx;
  ad_status own = layout_local(d, p), st = AD_OK;
  if (agree(d, own != AD_OK, own, "could not build its gradient buckets", &st) >= 0) {
    layout_free(d);
    return st;
  }
  /* the same buckets on every rank, on either path (an allreduce of
   * buckets that differ would sum unrelated gradients, or fail in MPI) */
  /* FNV-1a over the parameters' sizes, which entries of the list are one
   * tensor (lists [a, b, a] and [a, b, b] make the same buckets, but other
   * models), and the buckets' sizes and dtypes (lists of [5, 5] and [10]
   * make the same bucket) */
  unsigned long long hh = 1469598103934665603ull;
  long long total = 0;
  hh = (hh ^ (unsigned long long)d->np) * 1099511628211ull;
  hh = (hh ^ (unsigned long long)d->nfull) * 1099511628211ull;
  for (int i = 0; i < d->np; i++) hh = (hh ^ (unsigned long long)d->tsize[i]) * 1099511628211ull;
  for (int f = 0; f < d->nfull; f++) hh = (hh ^ (unsigned long long)d->uidx[f]) * 1099511628211ull;
  for (int k = 0; k < d->nb; k++) {
    hh = (hh ^ (unsigned long long)d->b[k].count) * 1099511628211ull;
    hh = (hh ^ (unsigned long long)d->b[k].dtype) * 1099511628211ull;
    total += (long long)((size_t)d->b[k].count * ad_dtype_size(d->b[k].dtype));
  }
  long long hash = (long long)(hh >> 2); /* >= 0: its negation fits */
  long long v[6] = {total, -total, d->nb, -d->nb, hash, -hash};
  MPI_Allreduce(MPI_IN_PLACE, v, 6, MPI_LONG_LONG, MPI_MAX, d->comm);
  if (v[0] != -v[1] || v[2] != -v[3] || v[4] != -v[5]) {
    char msg[MSG_LEN];
    int root = layout_difference(d, p, msg, sizeof msg);
    layout_free(d);
    if (root >= 0)
      return ad_set_error(c, AD_ERR_SHAPE,
                          "dist: the ranks' gradient buckets differ: rank %d differs from rank 0: "
                          "%s (the same parameters on every rank)",
                          root, msg);
    return ad_set_error(c, AD_ERR_SHAPE,
                        "dist: the ranks' gradient buckets differ (%lld to %lld bytes, %lld to "
                        "%lld buckets): the same parameters and bucket_bytes on every rank",
                        -v[1], v[0], -v[3], v[2]);
  }
  if (d->sh.wanted) shm_build(d);
  if (d->sh.on) return AD_OK;
  ghome_free(d); /* no window: the gradients stay in the engine's memory */
  for (int k = 0; k < d->nb && own == AD_OK; k++) {
    bucket *b = &d->b[k];
    size_t bb = (size_t)b->count * ad_dtype_size(b->dtype);
    if (!(b->buf = ad_malloc(c, bb ? bb : 1)) ||
        (d->o.deterministic && !(b->gath = ad_malloc(c, (bb ? bb : 1) * (size_t)d->size))))
      own = AD_ERR_OOM;
  }
  if (agree(d, own != AD_OK, own, "could not allocate its gradient buckets", &st) >= 0) {
    layout_free(d);
    return st;
  }
  return AD_OK;
}

/* ------------------------------------------------------------- buckets */

static MPI_Datatype mpi_type(ad_dtype t) { return t == AD_F64 ? MPI_DOUBLE : MPI_FLOAT; }

/* The sums below are compiled for AVX-512 and AVX2 besides the baseline
 * (SSE2 on x86-64), and the CPU's best is picked when the library loads
 * (GCC's target_clones, as the engine's row loops are). They run on the
 * whole gradient every step (a rank's slice of each bucket over every
 * segment of its node), from caches the products have just written. The
 * file is compiled without contraction into FMA, so every clone gives the
 * same bits. Not under ThreadSanitizer: a clone's resolver runs while the
 * dynamic loader relocates the library, before TSan's runtime is set up. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__ELF__) &&         \
    !defined(__SANITIZE_THREAD__)
#define SUM_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define SUM_CLONES
#endif

/* dst[e] = X, or with acc, acc[e] + X, for the element e's term X */
#define SCALED_LOOP(X)                                                                             \
  do {                                                                                             \
    if (acc)                                                                                       \
      for (int64_t e = 0; e < n; e++) dst[e] = acc[e] + (X);                                       \
    else                                                                                           \
      for (int64_t e = 0; e < n; e++) dst[e] = (X);                                                \
  } while (0)

/* dst[e] = src[e] * scale, or with acc, acc[e] + src[e] * scale; the
 * product rounded as in double. When scale is a float the float product
 * rounds the same exact value once (two 24-bit significands multiply
 * exactly in double's 53), so it gives the same bits and vectorises. The
 * packed path and the zero-copy sum both scale through these, so they give
 * the same bits. dst, acc and src do not overlap. */
SUM_CLONES static void scaled_f32(float *restrict dst, const float *restrict acc,
                                  const float *restrict src, int64_t n, double scale) {
  float f = (float)scale;
  if (scale == 1)
    SCALED_LOOP(src[e]);
  else if ((double)f == scale)
    SCALED_LOOP(src[e] * f);
  else
    SCALED_LOOP((float)((double)src[e] * scale));
}

SUM_CLONES static void scaled_f64(double *restrict dst, const double *restrict acc,
                                  const double *restrict src, int64_t n, double scale) {
  if (scale == 1)
    SCALED_LOOP(src[e]);
  else
    SCALED_LOOP(src[e] * scale);
}
#undef SCALED_LOOP

/* Packs bucket k into buf: each gradient times the shard's share, zeros
 * for none; records which parameters have a gradient here. */
static void pack(nn_dist *d, int k, char *buf) {
  bucket *b = &d->b[k];
  size_t es = ad_dtype_size(b->dtype);
  for (int j = b->first; j < b->last; j++) {
    int i = d->ord[j];
    ad_tensor *g = d->t[i]->grad;
    d->flags[2 + i] = g != NULL;
    char *dst = buf + (size_t)d->offset[i] * es;
    if (!g)
      memset(dst, 0, (size_t)d->t[i]->size * es);
    else if (d->sh.on && d->sh.zc)                 /* unscaled: the sum applies the ranks' scales */
      memmove(dst, g->data, (size_t)g->size * es); /* in place unless the binding was refused */
    else if (b->dtype == AD_F64)
      scaled_f64((double *)(void *)dst, NULL, g->data, g->size, d->scale);
    else
      scaled_f32((float *)(void *)dst, NULL, g->data, g->size, d->scale);
  }
}

static atomic_llong *packed_flag(const nn_dist *d, int s, int k) {
  return (atomic_llong *)(void *)d->sh.seg[s] + k;
}

static atomic_llong *reduced_flag(const nn_dist *d, int s, int k) {
  return (atomic_llong *)(void *)d->sh.seg[s] + d->nb + k;
}

/* dyn: when segment s's rank packed bucket k (now_s). */
static double *pack_time(const nn_dist *d, int s, int k) {
  return (double *)(void *)(d->sh.seg[s] + 2 * (size_t)d->nb * sizeof(atomic_llong)) + 2 + k;
}

/* dyn: bucket k's counter of claimed chunks (which 0) or of summed ones
 * (1) in segment s. Each holds (step tag << 32) | count: a tag other than
 * this step's counts as zero, so no one resets them between steps. */
static atomic_llong *chunk_ctr(const nn_dist *d, int s, int k, int which) {
  return (atomic_llong *)(void *)(d->sh.seg[s] + d->sh.ctr + (size_t)k * CTR_BYTES) + which;
}

/* Bucket k in segment s, in region r (0, 1: the steps' halves, 2: the
 * shared copy of parameters and optimizer state). */
static char *shm_region(const nn_dist *d, int s, int k, int r) {
  const shm *h = &d->sh;
  return h->seg[s] + h->head + (size_t)r * h->half + d->b[k].soff;
}

/* Bucket k in segment s, in the half of this step. */
static char *shm_bucket(const nn_dist *d, int s, int k) {
  return shm_region(d, s, k, (int)(d->sh.step & 1));
}

/* zc: segment s's scale for this step (its rank's share of the batch). */
static double *scale_slot(const nn_dist *d, int s) {
  return (double *)(void *)(d->sh.seg[s] + 2 * (size_t)d->nb * sizeof(atomic_llong)) +
         (d->sh.step & 1);
}

/* zc: bucket k of the node's reduced buffer of this step's parity. */
static char *red_bucket(const nn_dist *d, int k) {
  const shm *h = &d->sh;
  return h->seg[0] + h->red + (size_t)(h->step & 1) * h->half + d->b[k].soff;
}

/* ad_tensor_set_grad_buffer without leaving an error behind: a refusal
 * (an op of the tape read the gradient) costs only the copy it saves. */
static bool bind_grad(nn_dist *d, ad_tensor *t, void *buf, bool copy) {
  err_saved e;
  err_keep(d->ctx, &e);
  if (ad_tensor_set_grad_buffer(t, buf, copy) == AD_OK) return true;
  err_restore(d->ctx, &e);
  return false;
}

/* zc: parameter i's place in this rank's segment, for this step. */
static char *own_slot(const nn_dist *d, int i) {
  return shm_bucket(d, d->sh.lrank, d->bucket_of[i]) +
         (size_t)d->offset[i] * ad_dtype_size(d->t[i]->dtype);
}

/* zc: the gradients of this step go to this rank's segment. */
static void bind_step(nn_dist *d) {
  for (int i = 0; i < d->np; i++)
    if (ad_tensor_requires_grad(d->t[i])) bind_grad(d, d->t[i], own_slot(d, i), true);
}

/* zc: each rank's own copy of the reduced gradients, in its segment (whose
 * unscaled gradients every rank has summed by the time grad_end returns),
 * for code that changes them in place: the node's buffer is every rank's. */
static void privatize(nn_dist *d) {
  shm *h = &d->sh;
  if (!h->on || !h->zc) return;
  for (int i = 0; i < d->np; i++) {
    ad_tensor *t = d->t[i];
    if (!t->grad) continue;
    char *own = own_slot(d, i);
    if (t->grad->data != own && !bind_grad(d, t, own, true))
      die(d, "a private copy of the gradients"); /* refused only after an op read it */
  }
}

/* Notes that gradient g is about to be written in place through its data
 * (ad_tensor_mark_modified, as nn's clipping does), so that a backward
 * through an op recorded before, which read this rank's own gradient,
 * refuses instead of using the sum. A branch when no op of the tape read
 * g. Where the note cannot be kept (out of memory; possibly inside the
 * backward's hook, which cannot return it) it returns false, g is not to
 * be written, and grad_end fails the step on every rank with the message. */
static bool note_grad(nn_dist *d, ad_tensor *g) {
  if (d->note_st != AD_OK) return false;
  ad_status st = ad_tensor_mark_modified(g);
  if (st == AD_OK) return true;
  d->note_st = st;
  snprintf(d->note_msg, sizeof d->note_msg, "dist: %s", ad_last_error(d->ctx));
  return false;
}

/* zc: parameter i (of bucket k) takes the node's reduced gradient, bound
 * without a copy (copied where the binding is refused: an op read it; the
 * write noted unless noted already). */
static void take_reduced(nn_dist *d, int k, int i, bool noted) {
  ad_tensor *t = d->t[i];
  size_t es = ad_dtype_size(t->dtype);
  char *r = red_bucket(d, k) + (size_t)d->offset[i] * es;
  if (bind_grad(d, t, r, false)) return;
  if (t->grad && (noted || note_grad(d, t->grad))) memcpy(t->grad->data, r, (size_t)t->size * es);
}

/* Packs bucket k and starts its reduction: published in the shared
 * segment, or an MPI collective. */
static void launch(nn_dist *d, int k, bool from_hook) {
  bucket *b = &d->b[k];
  if (d->sh.on) {
    pack(d, k, shm_bucket(d, d->sh.lrank, k));
    if (d->sh.zc && k == 0) /* buckets launch in order: bucket 0's flag publishes it */
      *scale_slot(d, d->sh.lrank) = d->scale;
    if (d->sh.dyn) *pack_time(d, d->sh.lrank, k) = now_s(); /* published with the flag */
    atomic_store_explicit(packed_flag(d, d->sh.lrank, k), d->sh.step, memory_order_release);
  } else {
    pack(d, k, b->buf);
    int n = (int)b->count;
    if (d->o.deterministic)
      MPI_Iallgather(b->buf, n, mpi_type(b->dtype), b->gath, n, mpi_type(b->dtype), d->comm,
                     &b->req);
    else
      MPI_Iallreduce(MPI_IN_PLACE, b->buf, n, mpi_type(b->dtype), MPI_SUM, d->comm, &b->req);
  }
  b->launched = true;
  if (from_hook) d->stats.overlapped++;
  d->stats.bytes += (int64_t)((size_t)b->count * ad_dtype_size(b->dtype));
}

/* Slice r of a bucket of count elements among n ranks: [lo, hi). */
static int64_t slice_lo(int64_t count, int r, int n) { return count * r / n; }

/* Sums elements [lo, hi) of bucket k over the node's segments in rank
 * order: with zero-copy gradients each segment's values times its rank's
 * share, into the reduced buffer, the last segment's term added on the
 * way there; otherwise the segments' values (scaled as they were packed)
 * into this rank's own segment, one of the terms, so through a block and a
 * copy. In blocks of a few KiB, so that the partial sums stay in cache and
 * vectorise; two blocks take turns, so that no sum reads the block it
 * writes. */
static void reduce_range(nn_dist *d, int k, int64_t lo, int64_t hi) {
  shm *h = &d->sh;
  bucket *b = &d->b[k];
  int L = h->lsize;
  char *dst = h->zc ? red_bucket(d, k) : shm_bucket(d, h->lrank, k);
#define SCALED_SUM(T, scaled)                                                                      \
  for (int64_t e0 = lo; e0 < hi; e0 += SUM_BLK) {                                                  \
    int64_t n = hi - e0 < SUM_BLK ? hi - e0 : SUM_BLK;                                             \
    T part[2][SUM_BLK];                                                                            \
    const T *acc = NULL;                                                                           \
    for (int s = 0; s < L; s++) {                                                                  \
      T *out = h->zc && s == L - 1 ? (T *)(void *)dst + e0 : part[s & 1];                          \
      scaled(out, acc, (const T *)(void *)shm_bucket(d, s, k) + e0, n,                             \
             h->zc ? *scale_slot(d, s) : 1);                                                       \
      acc = out;                                                                                   \
    }                                                                                              \
    if (!h->zc) memcpy((T *)(void *)dst + e0, acc, (size_t)n * sizeof(T));                         \
  }
  if (b->dtype == AD_F64) {
    SCALED_SUM(double, scaled_f64)
  } else {
    SCALED_SUM(float, scaled_f32)
  }
#undef SCALED_SUM
}

/* Sums this rank's slice of bucket k (see struct shm). */
static void reduce_slice(nn_dist *d, int k) {
  const shm *h = &d->sh;
  int64_t count = d->b[k].count;
  if (h->lsize > 1)
    reduce_range(d, k, slice_lo(count, h->lrank, h->lsize),
                 slice_lo(count, h->lrank + 1, h->lsize));
}

/* dyn: chunks of bucket k, and this step's tag in its counters. */
static int64_t chunks_of(const bucket *b) { return (b->count + CHUNK - 1) / CHUNK; }
static long long step_tag(const shm *h) { return (long long)(h->step & 0x7fffffff) << 32; }
#define CTR_COUNT(w, tag) (((w) & ~0xffffffffLL) == (tag) ? (w)&0xffffffffLL : 0)

/* dyn: adds one to counter which of bucket k (this step's count) and
 * returns the count before, or -1 when it has reached limit already. */
static long long ctr_add(nn_dist *d, int k, int which, long long limit, memory_order order) {
  atomic_llong *c = chunk_ctr(d, 0, k, which);
  long long tag = step_tag(&d->sh), w = atomic_load_explicit(c, memory_order_relaxed);
  for (;;) {
    long long n = CTR_COUNT(w, tag);
    if (n >= limit) return -1;
    if (atomic_compare_exchange_weak_explicit(c, &w, tag | (n + 1), order, memory_order_relaxed))
      return n;
  }
}

/* dyn: sums chunks of bucket k that nobody has claimed yet, claiming each
 * first, until this rank has summed limit of them in this step or none is
 * left; each summed chunk is counted (release: its values before the
 * count). Returns whether every chunk is claimed. */
static bool reduce_chunks(nn_dist *d, int k, int64_t limit) {
  shm *h = &d->sh;
  bucket *b = &d->b[k];
  int64_t n = chunks_of(b);
  while (b->mine < limit) {
    long long c = ctr_add(d, k, 0, n, memory_order_relaxed);
    if (c < 0) return true;
    int64_t lo = (int64_t)c * CHUNK, hi = lo + CHUNK < b->count ? lo + CHUNK : b->count;
    double t0 = now_s();
    reduce_range(d, k, lo, hi);
    /* per byte: f32 and f64 buckets share it */
    double t = (now_s() - t0) / ((double)(hi - lo) * (double)ad_dtype_size(b->dtype));
    h->byte_s = h->byte_s > 0 ? 0.9 * h->byte_s + 0.1 * t : t;
    ctr_add(d, k, 1, n, memory_order_release);
    b->mine++;
  }
  long long w = atomic_load_explicit(chunk_ctr(d, 0, k, 0), memory_order_relaxed);
  return CTR_COUNT(w, step_tag(h)) == n;
}

/* dyn: how many chunks of bucket k (which every rank packed) this rank sums
 * in its backward: its slice's worth (the lsize slices of n add up to n),
 * plus the chunks it can sum in the time by which it packed the bucket
 * before the ranks' mean (fewer for a late rank). Then the ranks reach
 * grad_end together, if the rest of their backward takes them as long. */
static int64_t chunk_share(nn_dist *d, int k) {
  const shm *h = &d->sh;
  const bucket *b = &d->b[k];
  int64_t n = chunks_of(b);
  double mean = 0, mine = *pack_time(d, h->lrank, k);
  for (int s = 0; s < h->lsize; s++) mean += *pack_time(d, s, k);
  mean /= h->lsize;
  double chunk_s = h->byte_s * (double)CHUNK * (double)ad_dtype_size(b->dtype);
  double q = (double)(slice_lo(n, h->lrank + 1, h->lsize) - slice_lo(n, h->lrank, h->lsize)) +
             (chunk_s > 0 ? (mean - mine) / chunk_s : 0);
  return q <= 0 ? 0 : q >= (double)n ? n : (int64_t)(q + 0.5);
}

/* dyn: whether every chunk of bucket k is summed (acquire: their values
 * are visible then). */
static bool chunks_summed(const nn_dist *d, int k) {
  int64_t n = chunks_of(&d->b[k]);
  long long w = atomic_load_explicit(chunk_ctr(d, 0, k, 1), memory_order_acquire);
  return n == 0 || CTR_COUNT(w, step_tag(&d->sh)) == n;
}
#undef CTR_COUNT

/* Copies parameter i's reduced gradient (bucket k) from the slices'
 * owners into dst. */
static void copy_from(nn_dist *d, int k, int i, char *dst, int region, int skip) {
  bucket *b = &d->b[k];
  size_t es = ad_dtype_size(b->dtype);
  int L = d->sh.lsize, s = 0;
  int64_t off = d->offset[i], end = off + d->t[i]->size;
  for (int64_t e = off; e < end;) {
    while (slice_lo(b->count, s + 1, L) <= e) s++;
    int64_t hi = slice_lo(b->count, s + 1, L), m = (hi < end ? hi : end) - e;
    if (s != skip)
      memcpy(dst + (size_t)(e - off) * es, shm_region(d, s, k, region) + (size_t)e * es,
             (size_t)m * es);
    e += m;
  }
}

static void copy_param(nn_dist *d, int k, int i, char *dst) {
  copy_from(d, k, i, dst, (int)(d->sh.step & 1), -1);
}

/* The shared-memory reduction, as far as the other ranks let it go now
 * (never waits): sums this rank's part of the buckets that every rank of
 * the node packed (dyn: chunks, at most its share of each unless all;
 * else its slices, in bucket order, the order the allreduce between nodes
 * needs), moves those allreduces along, and takes or copies the buckets
 * that are wholly reduced into the gradients that exist here. Returns
 * whether every bucket is. */
static bool shm_progress(nn_dist *d, bool all) {
  shm *h = &d->sh;
  int64_t t = h->step;
  for (int k = h->next_red; h->dyn && k < d->next; k++) {
    bool ready = true;
    for (int s = 0; s < h->lsize && ready; s++)
      ready = atomic_load_explicit(packed_flag(d, s, k), memory_order_acquire) >= t;
    if (!ready) break;
    bool claimed = reduce_chunks(d, k, all ? INT64_MAX : chunk_share(d, k));
    if (claimed && k == h->next_red) h->next_red++;
  }
  while (!h->dyn && h->next_red < d->next) {
    int k = h->next_red;
    bool ready = true;
    for (int s = 0; s < h->lsize && ready; s++)
      ready = atomic_load_explicit(packed_flag(d, s, k), memory_order_acquire) >= t;
    if (!ready) break;
    reduce_slice(d, k);
    bucket *b = &d->b[k];
    if (h->cross != MPI_COMM_NULL) {
      int64_t lo = slice_lo(b->count, h->lrank, h->lsize);
      int n = (int)(slice_lo(b->count, h->lrank + 1, h->lsize) - lo);
      char *p = (h->zc ? red_bucket(d, k) : shm_bucket(d, h->lrank, k)) +
                (size_t)lo * ad_dtype_size(b->dtype);
      MPI_Iallreduce(MPI_IN_PLACE, p, n, mpi_type(b->dtype), MPI_SUM, h->cross, &b->xreq);
      b->xlaunched = true;
    } else {
      atomic_store_explicit(reduced_flag(d, h->lrank, k), t, memory_order_release);
    }
    h->next_red++;
  }
  for (int k = 0; k < h->next_red; k++) {
    bucket *b = &d->b[k];
    if (!b->xlaunched || b->xdone) continue;
    int flag = 0;
    MPI_Test(&b->xreq, &flag, MPI_STATUS_IGNORE);
    if (!flag) continue;
    b->xdone = true;
    atomic_store_explicit(reduced_flag(d, h->lrank, k), t, memory_order_release);
  }
  while (h->next_unp < h->next_red) {
    int k = h->next_unp;
    bool ready = true;
    if (h->dyn)
      ready = chunks_summed(d, k);
    else
      for (int s = 0; s < h->lsize && ready; s++)
        ready = atomic_load_explicit(reduced_flag(d, s, k), memory_order_acquire) >= t;
    if (!ready) break;
    bucket *b = &d->b[k];
    for (int j = b->first; j < b->last; j++) {
      int i = d->ord[j];
      ad_tensor *g = d->t[i]->grad;
      if (!d->flags[2 + i] || !g) continue;
      if (h->zc)
        take_reduced(d, k, i, false);
      else if (note_grad(d, g))
        copy_param(d, k, i, g->data);
      h->copied[i] = 1;
    }
    h->next_unp++;
  }
  return h->next_unp == d->nb;
}

/* Whether opt steps only tensors of the layout as it is now (as
 * layout_current judges a list), in any order and any of its parameter
 * groups: its entries, group after group, into d->oidx (d->nopt of them).
 * Allocates nothing, so every rank of a node, which synced the same model
 * and optimizer (the state's names, compared by nn_dist_sync, fix each
 * group's members), judges alike. */
static bool opt_entries(nn_dist *d, const nn_optimizer *opt) {
  if (d->layout_stale || !d->b) return false;
  memset(d->oseen, 0, d->np ? (size_t)d->np : 1);
  int k = 0;
  for (int g = 0; g < nn_optimizer_group_count(opt); g++) {
    nn_params *p = nn_optimizer_group_params(opt, g);
    ad_tensor *const *ts = nn_params_tensors(p);
    for (int f = 0; f < nn_params_count(p); f++) {
      int i = find(d, ts[f]);
      if (k == d->nfull || i < 0 || ad_tensor_serial(ts[f]) != d->tser[i] ||
          ts[f]->size != d->tsize[i] || ts[f]->dtype != d->b[d->bucket_of[i]].dtype)
        return false;
      d->oidx[k++] = d->oseen[i] ? -1 - i : i;
      d->oseen[i] = 1;
    }
  }
  d->nopt = k;
  return true;
}

/* The elements of parameter i in this rank's slice of its bucket:
 * [h->lo[i], h->hi[i]). */
static void own_ranges(nn_dist *d) {
  shm *h = &d->sh;
  for (int i = 0; i < d->np; i++) {
    bucket *b = &d->b[d->bucket_of[i]];
    int64_t off = d->offset[i], n = d->t[i]->size;
    int64_t a = slice_lo(b->count, h->lrank, h->lsize) - off;
    int64_t z = slice_lo(b->count, h->lrank + 1, h->lsize) - off;
    a = a < 0 ? 0 : a > n ? n : a;
    z = z < 0 ? 0 : z > n ? n : z;
    h->lo[i] = a, h->hi[i] = z > a ? z : a;
  }
  for (int f = 0; f < d->nfull; f++) { /* a repeat of a tensor: nothing (the optimizer skips it) */
    int i = d->uidx[f];
    bool first = d->first_of[i] == f;
    h->flo[f] = first ? h->lo[i] : 0, h->fhi[f] = first ? h->hi[i] : 0;
  }
}

/* The ranges of opt_entries' entries (after own_ranges). */
static void own_opt_ranges(nn_dist *d) {
  shm *h = &d->sh;
  for (int k = 0; k < d->nopt; k++) {
    int i = d->oidx[k];
    h->flo[k] = i >= 0 ? h->lo[i] : 0, h->fhi[k] = i >= 0 ? h->hi[i] : 0;
  }
}

/* A barrier over the node that also orders the window's loads and stores
 * (MPI_Barrier alone is not a memory fence in the standard: the unified
 * model's pattern is sync, barrier, sync). */
static void node_barrier(shm *h) { win_barrier(h, h->win); }

/* The same over window w. */
static void win_barrier(shm *h, MPI_Win w) {
  MPI_Win_sync(w);
  MPI_Barrier(h->node);
  MPI_Win_sync(w);
}

/* Every rank of the node gives the others its slices of the per-parameter
 * arrays ts[i] (the parameters, or one kind of optimizer state; NULL: none
 * for parameter i) through the shared region: each writes its own
 * elements, then copies the others'. The first barrier keeps a rank from
 * overwriting the region while another still reads the last exchange. */
static void share_slices(nn_dist *d, ad_tensor *const *ts, bool first_barrier) {
  shm *h = &d->sh;
  if (first_barrier) node_barrier(h);
  for (int i = 0; i < d->np; i++) {
    if (!ts[i] || h->hi[i] == h->lo[i]) continue;
    size_t es = ad_dtype_size(ts[i]->dtype);
    int k = d->bucket_of[i];
    memcpy(shm_region(d, h->lrank, k, 2) + (size_t)(d->offset[i] + h->lo[i]) * es,
           (char *)ts[i]->data + (size_t)h->lo[i] * es, (size_t)(h->hi[i] - h->lo[i]) * es);
  }
  node_barrier(h);
  for (int i = 0; i < d->np; i++)
    if (ts[i]) copy_from(d, d->bucket_of[i], i, ts[i]->data, 2, h->lrank);
}

/* Whether opt (live: the caller's) is the optimizer of the record: the
 * same number of state tensors, the record's at their places (by address
 * and serial: another optimizer, also one made at a freed one's address,
 * has other state tensors). */
static bool stale_is(const nn_dist *d, const nn_optimizer *opt) {
  const shm *h = &d->sh;
  /* (a parameter group added since appends state: the recorded stays) */
  if (!h->stale || !opt || nn_optimizer_state_count(opt) < h->st_count) return false;
  ad_tensor *const *st = nn_optimizer_state_tensors(opt);
  for (int k = 0; k < h->nst; k++)
    if (st[h->st[k].j] != h->st[k].t || ad_tensor_serial(st[h->st[k].j]) != h->st[k].serial)
      return false;
  return true;
}

/* Records opt's per-parameter state tensors after a sharded step, unless
 * the record is opt's already (the steps between two gathers); entries:
 * its parameters are opt_entries' (else the model list's). The record has
 * room: ops_step shards only then. */
static void stale_record(nn_dist *d, const nn_optimizer *opt, bool entries) {
  shm *h = &d->sh;
  if (stale_is(d, opt) && nn_optimizer_state_count(opt) == h->st_count) return;
  int ns = nn_optimizer_state_count(opt);
  ad_tensor *const *st = nn_optimizer_state_tensors(opt);
  memset(d->gath_cnt, 0, (d->np ? (size_t)d->np : 1) * sizeof *d->gath_cnt);
  h->nst = 0;
  h->st_count = ns;
  for (int j = 0; j < ns && h->nst < h->stcap; j++) {
    int f = nn_optimizer_state_param(opt, j); /* an entry of the list: its tensor's index */
    int i = entries ? (f >= 0 && f < d->nopt ? d->oidx[f] : -1)
                    : (f >= 0 && f < d->nfull ? d->uidx[f] : -1);
    if (i >= 0) /* (a tensor's later entries, -1 - i, have no state) */
      h->st[h->nst++] = (stale_state){st[j], ad_tensor_serial(st[j]), j, i, d->gath_cnt[i]++};
  }
  h->stale = true;
}

/* Gathers the recorded optimizer state: each rank's slices of every state
 * tensor to every rank of the node, one exchange per kind. Collective.
 * Dropped instead when the sharded steps' parameters or the state tensors
 * were freed since (a tensor without the serial it had): the optimizer is
 * then gone, or holds state for tensors that are. Every rank that runs the
 * same code decides alike. Allocates nothing (the layout's scratch
 * arrays), so it cannot fail on one rank. The writes into the state
 * tensors are noted (ad_tensor_mark_modified), so that a backward through
 * an op that read this rank's stale state refuses; a note refused for
 * memory (the engine's list of writes could not grow) leaves that write
 * unnoted, since the gather must go on on every rank of the node, and the
 * context's error as it was. */
static ad_status gather_stale(nn_dist *d) {
  shm *h = &d->sh;
  if (!h->stale || !h->on) return AD_OK;
  h->stale = false;
  for (int i = 0; i < d->np; i++)
    if (ad_tensor_serial(d->t[i]) != d->tser[i]) return AD_OK;
  for (int k = 0; k < h->nst; k++)
    if (ad_tensor_serial(h->st[k].t) != h->st[k].serial) return AD_OK;
  err_saved e;
  err_keep(d->ctx, &e);
  bool noted = true;
  for (int k = 0; k < h->nst; k++) noted &= ad_tensor_mark_modified(h->st[k].t) == AD_OK;
  if (!noted) err_restore(d->ctx, &e);
  size_t n1 = d->np ? (size_t)d->np : 1;
  ad_tensor **ts = d->gath_ts;
  own_ranges(d);
  for (int kind = 0;; kind++) {
    memset(ts, 0, n1 * sizeof *ts);
    int found = 0;
    for (int k = 0; k < h->nst; k++)
      if (h->st[k].kind == kind) ts[h->st[k].param] = h->st[k].t, found++;
    if (!found) break; /* the same on every rank: the same record */
    share_slices(d, ts, true);
  }
  return AD_OK;
}

/* Whether the parameters in the node's window (params_share) are the
 * layout's, in its order, each the same tensor (by serial: one made in a
 * freed one's header is another) with its values still there. */
static bool window_holds_layout(const nn_dist *d) {
  const shm *h = &d->sh;
  if (h->pn != d->np) return false;
  for (int i = 0; i < d->np; i++)
    if (h->pt[i].t != d->t[i] || h->pt[i].serial != d->tser[i] || d->t[i]->data != h->pt[i].at)
      return false;
  return true;
}

/* nn_dist_ops.step: with shard_optimizer, on the shared-memory path each
 * rank updates only the elements of its slices (the optimizer's sweep over
 * parameters, gradients and state is cut n ways on a node), then the ranks
 * share the updated parameters. Else nn_optimizer_step. */
static ad_status ops_step(void *ud, nn_optimizer *opt) {
  nn_dist *d = ud;
  shm *h = &d->sh;
  const nn_opt_config *cfg = opt ? nn_optimizer_config(opt) : NULL;
  if (cfg && (cfg->clip_value > 0 || cfg->clip_norm > 0)) privatize(d); /* clipped in place */
  /* ranges over the model's list when opt's is it, else over opt's
   * entries (parameter groups, a part of the model, another order) */
  bool direct =
      opt && nn_optimizer_group_count(opt) == 1 && layout_current(d, nn_optimizer_params(opt));
  bool shard = opt && d->o.shard_optimizer && h->on && h->lsize > 1 &&
               (direct || opt_entries(d, opt)) &&
               nn_optimizer_state_count(opt) <= h->stcap; /* (room to record its state) */
  /* a step that is not sharded reads every element of the state, and a
   * sharded one of another optimizer, or of more state (a group added),
   * records its own: the sharded steps' slices are gathered first (every
   * rank decides alike) */
  if (h->stale && !(shard && stale_is(d, opt) && nn_optimizer_state_count(opt) == h->st_count))
    gather_stale(d);
  /* a whole step on every rank (or an exchange of the slices) on one copy
   * of the parameters would take it once per rank: each its own copy; and
   * a sharded step over tensors not in the window (of a model made again
   * in a freed one's place, say) would leave each rank its own slices */
  if (h->pon && !(shard && window_holds_layout(d))) params_leave(d);
  if (!shard) return nn_optimizer_step(opt);
  own_ranges(d);
  if (!direct) own_opt_ranges(d);
  ad_status st = nn_optimizer_step_ranges(opt, h->flo, h->fhi);
  if (st != AD_OK) die(d, "the sharded optimizer step"); /* ranges from the layout: never */
  stale_record(d, opt, !direct);
  d->stats.sharded_steps++;
  if (h->pon)
    win_barrier(h, h->pwin); /* the slices were written where every rank reads them */
  else
    share_slices(d, d->t, false); /* the step's status exchange already separates the uses */
  return AD_OK;
}

/* Waits for the shared-memory reduction: polls, then yields the core (more
 * ranks than cores, other jobs). Every rank reaches grad_end each step,
 * also after an error, and packs every bucket there, so the flags this
 * waits for are always set; a rank that dies ends the job (mpirun). */
static void shm_wait(nn_dist *d) {
  unsigned spins = 0;
  while (!shm_progress(d, true))
    if (++spins > 64) sched_yield();
}

/* Launches, in bucket order (the same on every rank), the buckets whose
 * gradients are final. */
static void launch_ready(nn_dist *d, bool from_hook) {
  while (d->next < d->nb && d->b[d->next].pending == 0) launch(d, d->next++, from_hook);
}

/* Lets MPI move the launched reductions along (Open MPI has no progress
 * thread: a non-blocking collective advances inside MPI calls). */
static void progress(nn_dist *d) {
  if (d->sh.on) {
    shm_progress(d, false);
    return;
  }
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
    bucket *b = &d->b[k];
    b->pending = 0;
    b->launched = b->done = b->xlaunched = b->xdone = false;
    b->mine = 0;
  }
  for (int i = 0; i < d->np; i++) d->flags[2 + i] = 0;
  d->next = 0;
  d->note_st = AD_OK;
  if (d->sh.on) {
    d->sh.step++;
    d->sh.next_red = d->sh.next_unp = 0;
    memset(d->sh.copied, 0, (size_t)d->np);
  }
}

static ad_status grad_begin(void *ud, nn_params *p, ad_tensor *loss, int64_t rows,
                            int64_t global_rows) {
  nn_dist *d = ud;
  if (d->size == 1) return AD_OK; /* one rank: its gradients are the sums */
  if (d->begun)                   /* its reductions may still be in flight, and its hook is set */
    return ad_set_error(d->ctx, AD_ERR_STATE,
                        "dist: grad_begin before the last step's grad_end (call grad_end after "
                        "every grad_begin, also after an error)");
  d->begin_st = AD_OK;
  if (!layout_current(d, p)) {
    ad_status st = layout_build(d, p);
    if (st != AD_OK) { /* on every rank: their steps end here, also in grad_end */
      d->begin_st = st;
      snprintf(d->begin_msg, sizeof d->begin_msg, "%s", ad_last_error(d->ctx));
      return st;
    }
  }
  step_reset(d);
  if (d->sh.on && d->sh.zc) bind_step(d);
  d->begun = true;
  d->scale = global_rows > 0 ? (double)rows / (double)global_rows : 0;
  if (!loss || d->o.no_overlap) return AD_OK;
  err_saved e;
  err_keep(d->ctx, &e);
  if (count_uses(d, loss) != AD_OK) { /* no memory for the walk: no overlap in this step */
    err_restore(d->ctx, &e);
    return AD_OK;
  }
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
 * at a time (their dtypes may differ). Its error (out of memory) on the
 * context. */
static ad_status ensure_grads(nn_dist *d) {
  bool old = ad_set_grad_enabled(d->ctx, true);
  ad_status st = AD_OK;
  for (int i = 0; i < d->np && st == AD_OK; i++) {
    ad_tensor *t = d->t[i];
    if (!d->flags[2 + i] || t->grad || !ad_tensor_requires_grad(t)) continue;
    ad_tensor *z = ad_mul(d->ctx, ad_sum(d->ctx, t), ad_scalar(d->ctx, t->dtype, 0.0));
    st = z ? ad_backward(d->ctx, z, NULL) : ad_last_status(d->ctx);
  }
  ad_set_grad_enabled(d->ctx, old);
  return st;
}

/* Copies bucket k's reduced values into the gradients (the deterministic
 * mode sums the gathered contributions in rank order, from rank 0's term
 * as the shared-memory sum does: starting from +0 would turn a sum of -0
 * terms into +0). */
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
        double s = all[off + e];
        for (int r = 1; r < d->size; r++)
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
        float s = all[off + e];
        for (int r = 1; r < d->size; r++)
          s += all[(size_t)r * (size_t)b->count + (size_t)(off + e)];
        dst[e] = s;
      }
    }
  }
}

/* Notes the writes grad_end makes after the status exchange (where a
 * failure could no longer be agreed on): the gradients not yet taken from
 * the sum, and on ranks other than 0, with bufs, the buffers that rank 0's
 * overwrite. AD_OK, or the failure of a note (also one in the hook). */
static ad_status note_rest(nn_dist *d, bool bufs) {
  for (int i = 0; i < d->np; i++) {
    ad_tensor *g = d->t[i]->grad;
    if (g && !(d->sh.on && d->sh.copied[i])) note_grad(d, g);
  }
  for (int i = 0; bufs && d->rank != 0 && i < d->ms.nb && d->note_st == AD_OK; i++)
    if (ad_tensor_mark_modified(d->ms.buf[i]) != AD_OK) {
      d->note_st = ad_last_status(d->ctx);
      snprintf(d->note_msg, sizeof d->note_msg, "dist: %s", ad_last_error(d->ctx));
    }
  if (d->note_st == AD_OK) return AD_OK;
  return ad_set_error(d->ctx, d->note_st, "%s", d->note_msg);
}

static ad_status grad_end(void *ud, nn_params *p, ad_status st) {
  nn_dist *d = ud;
  if (d->size == 1) {
    d->stats.steps++;
    return st;
  }
  double t0 = MPI_Wtime();
  if (d->hooked) {
    ad_set_backward_hook(d->ctx, d->prev, d->prev_ud);
    d->hooked = false;
  }
  if (d->begin_st != AD_OK) { /* every rank's step ended in grad_begin */
    ad_status st0 = d->begin_st;
    d->begin_st = AD_OK;
    return ad_set_error(d->ctx, st0, "%s", d->begin_msg);
  }
  if (!d->begun) { /* the step failed before grad_begin */
    if (!layout_current(d, p)) {
      ad_status lst = layout_build(d, p); /* the others build it in grad_begin or here */
      if (lst != AD_OK) return lst;       /* on every rank: their steps end there */
    }
    step_reset(d);
  }
  d->begun = false;
  err_saved e; /* the caller's failure: its message, not a note's that failed since */
  if (st != AD_OK) err_keep(d->ctx, &e);
  while (d->next < d->nb) launch(d, d->next++, false);
  if (d->sh.on)
    shm_wait(d);
  else
    for (int k = 0; k < d->nb; k++)
      if (!d->b[k].done) MPI_Wait(&d->b[k].req, MPI_STATUS_IGNORE);
  bool bufs = synced_step(d, p);
  if (st == AD_OK)
    st = note_rest(d, bufs);
  else if (d->note_st != AD_OK)
    err_restore(d->ctx, &e);
  /* the status with the has-gradient flags: a rank that failed stops all */
  d->flags[0] = st != AD_OK ? d->size - d->rank : 0;
  d->flags[1] = 0;
  for (int i = 0; i < d->np; i++)
    d->flags[2 + d->np + i] = !d->flags[2 + i] && ad_tensor_requires_grad(d->t[i]);
  MPI_Allreduce(MPI_IN_PLACE, d->flags, 2 * d->np + 2, MPI_INT, MPI_MAX, d->comm);
  d->stats.steps++;
  d->stats.buckets = d->nb;
  d->stats.shared_memory = d->sh.on;
  if (d->flags[0]) {
    int root = d->size - d->flags[0], code = st;
    char msg[MSG_LEN] = {0};
    if (d->rank == root) snprintf(msg, sizeof msg, "%s", ad_last_error(d->ctx));
    MPI_Bcast(&code, 1, MPI_INT, root, d->comm);
    MPI_Bcast(msg, MSG_LEN, MPI_CHAR, root, d->comm);
    gather_stale(d); /* nn_fit stops here: leave it whole */
    d->stats.wait_seconds += MPI_Wtime() - t0;
    if (d->rank == root) return st;
    return ad_set_error(d->ctx, (ad_status)code, "dist: rank %d stopped: %s", root, msg);
  }
  /* a gradient where this rank has none and another has one (taken from
   * the sum, or a zero gradient made): an exchange when some rank makes
   * one, since that may fail for want of memory */
  bool made = false;
  for (int i = 0; i < d->np; i++) made |= d->flags[2 + i] && d->flags[2 + d->np + i];
  ad_status zst = AD_OK;
  if (d->sh.on && d->sh.zc) {
    for (int i = 0; i < d->np; i++)
      if (d->flags[2 + i] && !d->sh.copied[i] && ad_tensor_requires_grad(d->t[i])) {
        take_reduced(d, d->bucket_of[i], i, true);
        if (!d->t[i]->grad && zst == AD_OK)
          zst = ad_set_error(d->ctx, AD_ERR_OOM, "dist: out of memory for the gradient of %s",
                             nn_params_name(p, d->first_of[i]));
      }
  } else {
    zst = ensure_grads(d);
  }
  if (made && agree(d, zst != AD_OK, zst, "could not make zero gradients", &zst) >= 0) {
    gather_stale(d); /* as above */
    d->stats.wait_seconds += MPI_Wtime() - t0;
    return zst;
  }
  if (d->sh.on && !d->sh.zc) { /* the gradients that were not here before ensure_grads */
    for (int i = 0; i < d->np; i++)
      if (d->flags[2 + i] && d->t[i]->grad && !d->sh.copied[i])
        copy_param(d, d->bucket_of[i], i, d->t[i]->grad->data);
  } else if (!d->sh.on) {
    for (int k = 0; k < d->nb; k++) unpack(d, k);
  }
  /* buffers (BatchNorm's running statistics) follow rank 0: of the synced
   * model, in a step over its parameters (not a list of the caller's, made
   * perhaps after that model was freed) */
  if (bufs) bcast_list(d, d->ms.nb, d->ms.buf); /* (noted by note_rest) */
  d->stats.wait_seconds += MPI_Wtime() - t0;
  return AD_OK;
}
