/* ad_internal.h: private structures shared by the autodiff sources. */
#ifndef AD_INTERNAL_H
#define AD_INTERNAL_H

#include "ad_ext.h"

#include <stdarg.h>
#include <string.h>

/* Broken internal invariant: abort with file:line and a hint. Never for
 * user input, which gets an ad_status. */
#define AD_ASSERT(cond, hint)                                                                      \
  do {                                                                                             \
    if (!(cond)) ad_internal_abort(__FILE__, __LINE__, #cond, hint);                               \
  } while (0)
_Noreturn void ad_internal_abort(const char *file, int line, const char *cond, const char *hint);

/* The op layer's entry point (ops.c): registers the built-in ops into a
 * new context and names the ones the tape applies itself (op_add, ...). */
ad_status ad_builtin_register(ad_ctx *ctx);

/* Whether st is a value of ad_status (AD_OK included); a user's function
 * may return anything. */
static inline bool ad_status_known(ad_status st) {
  return (int)st >= 0 && (int)st < AD_STATUS_COUNT;
}

/* Whether rng holds the all-zero state: an ad_rng never seeded (declared
 * "= {0}"). xoshiro256** never leaves it, so every draw would be 0 (every
 * normal 37.17): the entry points that take a context refuse it. */
static inline bool ad_rng_unseeded(const ad_rng *rng) {
  return !(rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3]);
}

/* node flags */
enum {
  AD_NF_REQUIRES_GRAD = 1, /* a gradient flows into it */
  AD_NF_LEAF = 2,          /* made by a constructor, not an op */
  AD_NF_PERSISTENT = 4,    /* malloc'd, survives tape reset */
  AD_NF_RETAIN = 8,        /* keep the gradient of an intermediate */
  AD_NF_RECORDED = 16,     /* on the tape */
  AD_NF_KEEP = 32,         /* ad_grad input: keep gacc after its backward ran */
  AD_NF_OWNED = 64,        /* another tensor's grad: freed with it, not alone */
  AD_NF_NAMED = 128        /* has an entry in ctx->names (ad_tensor_set_name) */
};

#define AD_NODE_MAGIC 0xAD7E5017u
#define AD_NODE_DEAD  0xDEADAD00u /* a freed persistent node, kept in its slab */
/* The flags of a dead node: its data is kept until ad_tape_reset, because
 * an op of the current tape (or a view) may still read it. */
#define AD_DEAD_KEEPS_DATA 1
/* Bits of a persistent leaf's op field (leaves have no op): its data is
 * the caller's memory (ad_tensor_set_data_buffer, ad_tensor_set_grad_buffer),
 * never freed by the engine. */
#define AD_LEAF_EXTERNAL 1

/* Every tensor is a node; the public view comes first. Kept small: a
 * scalar chain allocates a few of these per op, and is bound by the memory
 * they take. 152 bytes: with a 0-d tensor's data in the 8 bytes after it, one
 * 160-byte arena block (ad_tmp_new). Unary and binary ops (nearly all) keep
 * their inputs in the node, with no allocation; an op with more has them in
 * an arena list that also holds their count, so a variadic op (concat,
 * stack) takes any number of inputs while the node stays this size. */
#define AD_INLINE_SRC 2
#define AD_NSRC_LIST  (AD_INLINE_SRC + 1) /* nsrc: the inputs are in src.list */
struct ad_node;
typedef struct ad_src_list { /* the inputs of an op with more than AD_INLINE_SRC */
  int n;
  struct ad_node *in[]; /* n of them */
} ad_src_list;
typedef struct ad_node {
  ad_tensor t;
  uint32_t magic;
  uint16_t op; /* op id; for a persistent leaf, AD_LEAF_* bits */
  uint8_t flags;
  uint8_t nsrc;     /* inputs: 0..AD_INLINE_SRC in src.in, or AD_NSRC_LIST */
  uint32_t epoch;   /* tape generation it was made in (temporaries) */
  int32_t tape_idx; /* position on the tape; not recorded: -1, or for a temporary
                       ad_fresh_idx when made (-2 is tape.c's GACC_OWN) */
  ad_ctx *ctx;
  const ad_attrs *attrs;               /* NULL when all zero */
  ad_tensor *gacc;                     /* gradient accumulated during backward */
  union {                              /* the inputs; read them through ad_node_src */
    struct ad_node *in[AD_INLINE_SRC]; /* nsrc <= AD_INLINE_SRC */
    ad_src_list *list;                 /* nsrc == AD_NSRC_LIST: an arena list */
    ad_tensor *spare_grad;             /* a persistent leaf (never recorded): the buffer
                                          of a grad released by ad_tensor_zero_grad */
  } src;
} ad_node;

static inline ad_node *ad_node_of(const ad_tensor *t) { return (ad_node *)t; }

/* The number of inputs of a recorded node, and the inputs. */
static inline int ad_node_nsrc(const ad_node *n) {
  return n->nsrc <= AD_INLINE_SRC ? n->nsrc : n->src.list->n;
}
static inline ad_node *const *ad_node_src(const ad_node *n) {
  return n->nsrc <= AD_INLINE_SRC ? n->src.in : n->src.list->in;
}

/* Registered op: the public definition plus a hash handle. */
typedef struct ad_op_entry ad_op_entry;

typedef struct ad_arena_chunk {
  struct ad_arena_chunk *next;
  size_t cap; /* usable bytes after the header */
  size_t used;
} ad_arena_chunk;

struct ad_ctx {
  ad_alloc_fn alloc;
  void *alloc_ud;
  ad_status status;
  char err[512];
  uint32_t nerrors; /* errors recorded so far: tells whether a call recorded one */
  /* arena */
  ad_arena_chunk *chunks; /* first chunk */
  ad_arena_chunk *cur;    /* chunk being filled */
  char *bump, *bump_end;  /* free space in cur */
  size_t arena_cap, arena_used_before_cur;
  size_t arena_limit; /* most bytes arena_cap may reach; 0: no limit */
  /* persistent nodes: slabs the context owns, so a freed node's header
   * stays readable (its magic says dead) until the node is reused, and the
   * context can free what is still live (core.c, "persistent nodes") */
  struct ad_node_slab *slabs;
  int slab_used;                  /* nodes handed out of the first slab */
  ad_node *dead_head, *dead_tail; /* freed nodes, oldest first */
  size_t dead_len, live_nodes;
  ad_node *deferred; /* freed nodes the tape may still read: data kept until reset */
  uint64_t serials;  /* serials given to persistent tensors (ad_tensor_serial) */
  /* tensor names (core.c): looked up only for nodes flagged AD_NF_NAMED,
   * so unnamed tensors cost nothing; temporaries' entries go at reset */
  struct ad_name_ent *names;
  size_t temp_names;
  bool anomaly;     /* anomaly mode: check every result and gradient (tape.c) */
  bool anomaly_fwd; /* check ops' results: anomaly mode, outside a backward sweep
                       (there the gradients sent are checked, and named) */
  bool in_user_fns; /* a registered op's shape rule or forward running (ad_op_apply;
                       a bool in the bools' padding: the tape's fields stay put) */
  bool profiling;   /* the op profile counts (profile.c; ctx->prof holds it) */
  int sweeps;       /* backward sweeps running (a hook may start another) */
  /* tape */
  ad_node **tape;
  size_t tape_len, tape_cap;
  uint32_t epoch;
  bool grad_enabled;
  /* backward scratch: leaves touched by the running pass */
  ad_node **touched;
  size_t touched_len, touched_cap;
  /* tensors the current tape used that were written since (ad_note_write),
   * each with the tape's length at its last write: an op recorded before
   * that has its backward refused (tape.c, precheck). Emptied at reset. */
  struct ad_write *writes;
  size_t nwrites, writes_cap;
  ad_backward_hook hook;
  void *hook_ud;
  /* where the op batch_norm's forward, applied by ad_batch_norm, leaves
   * each channel's mean and biased variance ([2][C] doubles) for the
   * running statistics; NULL otherwise (op_norm.c) */
  double *bn_stats;
  /* ops the tape applies while differentiating (accumulating an
   * intermediate's contributions, fitting a contribution to its input's
   * shape; ad_grad's copy of a result it does not own, x * 1), named by
   * the op layer: the core declares and calls no op */
  int op_add, op_reshape, op_sum_to, op_mul_scalar;
  /* a plain backward's narrowed gradient (tape.c: lead_pass): the narrow
   * op, pad, and the ops whose backward reads a gradient sent only to
   * their output's leading block along the last axis (op_lead; -1: none) */
  int op_narrow, op_pad, op_lead[2];
  /* the node whose gacc is such a gradient, its first elements along the
   * last axis only (the rest are zero), or NULL */
  ad_node *lead_node;
  /* registry */
  ad_op_def *ops;
  int nops, ops_cap;
  int nbuiltin; /* ops[0 .. nbuiltin) are the engine's own; above, a user's (ad_op_register) */
  ad_op_entry *by_name;
  /* scopes (scope.c): NULL until the first ad_scope_push */
  struct ad_scope_state *scopes;
  /* the op profile (profile.c): NULL until the first ad_profile_start */
  struct ad_prof *prof;
};

/* ------------------------------------------------------ op profile
 * profile.c. A measured region (an op's forward, a node's backward, the
 * hook, a pass) is timed from ad_prof_enter to ad_prof_leave; the time of
 * regions measured inside it (child_ns) is taken off its own, so each
 * row's time is its self time and the rows add up to no more than the
 * wall time (a pass's total is its whole time). */
typedef struct ad_prof_op {
  int64_t fwd_calls, bwd_calls;
  double fwd_ns, bwd_ns;
} ad_prof_op;

typedef struct ad_prof_range { /* a range's entry (ad_profile_range_push) */
  char *name;                  /* owned */
  int64_t calls;
  double ns;
} ad_prof_range;

typedef struct ad_prof {
  ad_prof_op *ops; /* one per op id below cap */
  int cap;
  double child_ns; /* time of the regions measured inside the running one */
  int64_t passes;
  double pass_ns, hook_ns;
  ad_prof_range *ranges; /* the ranges' entries, nranges of ranges_cap */
  int nranges, ranges_cap;
  struct {
    int entry; /* its index in ranges */
    double t0;
  } open[AD_PROFILE_RANGE_DEPTH]; /* the ranges open, innermost last */
  int depth;
} ad_prof;

typedef enum { AD_PROF_FWD, AD_PROF_BWD, AD_PROF_HOOK, AD_PROF_PASS } ad_prof_kind;

typedef struct ad_prof_mark {
  double t0, outer; /* the start, and the encloser's child_ns to restore */
} ad_prof_mark;

/* Now, in nanoseconds of CLOCK_MONOTONIC. */
double ad_prof_now(void);

/* Starts a region (ctx->profiling and ctx->prof set). */
static inline ad_prof_mark ad_prof_enter(ad_ctx *ctx) {
  ad_prof_mark m = {ad_prof_now(), ctx->prof->child_ns};
  ctx->prof->child_ns = 0;
  return m;
}

/* Ends a region begun by ad_prof_enter: its self time goes to op id's row
 * (FWD, BWD; id < 0: no row, a failed call) or to the hook's or the
 * passes' total; its whole time to the encloser's child_ns. */
void ad_prof_leave(ad_ctx *ctx, ad_prof_mark m, int id, ad_prof_kind kind);

/* Keeps a row for every op id below cap (ad_profile_start, and
 * ad_op_register as the table grows while the profile runs). AD_ERR_OOM,
 * recorded, if it could not. */
ad_status ad_prof_reserve(ad_ctx *ctx, int cap);

/* Frees the profile (ad_ctx_free). */
void ad_prof_free(ad_ctx *ctx);

/* The tape_idx of a temporary made now and not recorded: -3 - the tape's
 * length (-1 when that does not fit; -2 is tape.c's GACC_OWN), so that a
 * write into it can tell whether an op was recorded since. */
static inline int32_t ad_fresh_idx(const ad_ctx *ctx) {
  return ctx->tape_len <= (size_t)INT32_MAX - 3 ? -3 - (int32_t)ctx->tape_len : -1;
}

/* A write into a tensor the current tape used (ctx->writes). */
typedef struct ad_write {
  ad_node *n;
  size_t pos;       /* ctx->tape_len at the write: ops recorded before it read the old values */
  uintptr_t lo, hi; /* set by the backward's check: n's data [lo, hi), */
  uintptr_t reach;  /* and the largest hi of the entries sorted before it */
} ad_write;

/* Records that live tensor n's data is about to be written in place: when
 * an op of the current tape may read it (n is a persistent tensor an op
 * used, ad_op_apply having stamped its epoch, an op's recorded result, or
 * a temporary made before the last recorded op or a view, ad_fresh_idx
 * telling), a backward through an op recorded before now that read that
 * memory refuses (tape.c). Returns
 * AD_OK, or AD_ERR_OOM recorded on the context (fn names the caller). A
 * branch or two for a tensor no op of the tape read. */
ad_status ad_note_write_slow(ad_node *n, const char *fn);
static inline ad_status ad_note_write(ad_node *n, const char *fn) {
  ad_ctx *ctx = n->ctx;
  if (!ctx->tape_len || n->epoch != ctx->epoch) /* nothing recorded; unused since the reset */
    return AD_OK;
  if (!(n->flags & (AD_NF_PERSISTENT | AD_NF_RECORDED)) && n->tape_idx == ad_fresh_idx(ctx))
    return AD_OK; /* a temporary no op recorded since it was made can have read */
  return ad_note_write_slow(n, fn);
}

/* The default allocator: 64-byte aligned blocks (core.c). */
void *ad_default_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* arena: bump allocation, 16-byte granularity; NULL + AD_ERR_OOM on failure */
void *ad_arena_alloc_slow(ad_ctx *ctx, size_t bytes);
static inline void *ad_arena_alloc(ad_ctx *ctx, size_t bytes) {
  bytes = (bytes + 15) & ~(size_t)15;
  if (bytes && (size_t)(ctx->bump_end - ctx->bump) >= bytes) {
    void *p = ctx->bump;
    ctx->bump += bytes;
    return p;
  }
  return ad_arena_alloc_slow(ctx, bytes);
}
/* Arena memory for scratch that has a path without it: NULL when the arena
 * cannot give it, recording no error (the caller's op succeeds by the other
 * path) and leaving the arena as it was. */
void *ad_arena_try(ad_ctx *ctx, size_t bytes);
void ad_arena_free_all(ad_ctx *ctx);
/* Whether bytes from p lie in one of ctx's arena chunks: a temporary's own
 * data or a view of one, not a persistent tensor's (or the caller's)
 * memory. */
bool ad_arena_holds(const ad_ctx *ctx, const void *p, size_t bytes);
/* A point in the arena to return to: ad_arena_rewind gives back what was
 * allocated after ad_arena_mark_get (whole chunks stay, for reuse). Only
 * for scratch that nothing reads once the caller returns. */
typedef struct ad_arena_mark {
  ad_arena_chunk *cur;
  char *bump, *bump_end;
  size_t used_before;
} ad_arena_mark;
static inline ad_arena_mark ad_arena_mark_get(const ad_ctx *ctx) {
  ad_arena_mark m = {ctx->cur, ctx->bump, ctx->bump_end, ctx->arena_used_before_cur};
  return m;
}
static inline void ad_arena_rewind(ad_ctx *ctx, const ad_arena_mark *m) {
  if (!m->cur) return; /* no chunk then: keep what came since */
  ctx->cur = m->cur;
  ctx->bump = m->bump;
  ctx->bump_end = m->bump_end;
  ctx->arena_used_before_cur = m->used_before;
}
/* Frees every persistent tensor still live and the slabs (ad_ctx_free). */
void ad_nodes_free_all(ad_ctx *ctx);
/* Writes "'name' [2,3]" (or "[2,3]" when unnamed) into buf; returns buf. */
char *ad_tensor_describe(const ad_tensor *t, char *buf, size_t n);

/* A temporary filled with v: a constant leaf (ad_tensor_op gives -1). */
ad_tensor *ad_tmp_full(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape, double v);

/* registry */
void ad_registry_free(ad_ctx *ctx);

/* scopes (scope.c): frees their state (ad_ctx_free) */
void ad_scope_free(ad_ctx *ctx);

/* helpers for op implementations */
int64_t ad_shape_size(int ndim, const int64_t *shape);
/* The most elements a tensor may have. */
#define AD_MAX_ELEMS (INT64_C(1) << 40)
/* *size = the product of shape and -1 when every length is >= 0 and the
 * product of the non-zero ones is at most AD_MAX_ELEMS; else the index of
 * the first dimension that breaks that (size untouched). */
int ad_shape_size_checked(int ndim, const int64_t *shape, int64_t *size);
/* Records why shape cannot be a tensor's (bad: ad_shape_size_checked's
 * answer): a negative dimension, or the total size, naming who. Returns st. */
ad_status ad_shape_size_error(ad_ctx *ctx, ad_status st, const char *who, int ndim,
                              const int64_t *shape, int bad);
/* A persistent tensor with uninitialized data (AD_ERR_ARG, AD_ERR_OOM). */
ad_tensor *ad_tensor_new_uninit(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape);
static inline bool ad_is_float(ad_dtype dt) { return dt == AD_F32 || dt == AD_F64; }
static inline size_t ad_dsize(ad_dtype dt) { return dt == AD_F64 ? 8 : 4; }

/* ----------------------------------------------------------- temporaries
 * A temporary's node header and its data come from one arena block. Data
 * that fits in the header block's rounding slack (one f64 or two f32: every
 * 0-d tensor) goes right after the node, 8-byte aligned, so a scalar costs
 * one 160-byte block rather than a header block and a data granule: a chain
 * of scalar ops is bound by the memory its nodes take. Other data starts at
 * the next 16-byte boundary, or on a 64-byte one from AD_BIG_DATA bytes on
 * for vector loads (the block may start on any 16-byte boundary, so that
 * reserves the slack). */
#define AD_ALIGN      64
#define AD_GRAIN      16  /* granularity of every arena block */
#define AD_BIG_DATA   256 /* data this large starts on a 64-byte boundary */
#define AD_NODE_BLOCK ((sizeof(ad_node) + AD_GRAIN - 1) & ~(size_t)(AD_GRAIN - 1))
#define AD_NODE_SLACK (AD_NODE_BLOCK - sizeof(ad_node)) /* 8 with today's node */
_Static_assert(sizeof(ad_node) % sizeof(double) == 0, "data after a node must be aligned");

/* Size of the arena block of a temporary with bytes of data. */
static inline size_t ad_tmp_block(size_t bytes) {
  if (bytes <= AD_NODE_SLACK) return AD_NODE_BLOCK;
  size_t pad = bytes >= AD_BIG_DATA ? AD_ALIGN - AD_GRAIN : 0;
  return (AD_NODE_BLOCK + pad + bytes + AD_GRAIN - 1) & ~(size_t)(AD_GRAIN - 1);
}

/* Where the data of that temporary starts in its block p. */
static inline void *ad_tmp_data(char *p, size_t bytes) {
  if (bytes <= AD_NODE_SLACK) return p + sizeof(ad_node);
  if (bytes < AD_BIG_DATA) return p + AD_NODE_BLOCK;
  return (void *)(((uintptr_t)(p + AD_NODE_BLOCK) + AD_ALIGN - 1) & ~(uintptr_t)(AD_ALIGN - 1));
}

/* Sets every field but data; size is the product of shape (the caller
 * knows it, or computes it once). src is left alone: a temporary's is read
 * only once recording has set it and nsrc; a persistent tensor's
 * (spare_grad) is set by its constructor. */
static inline void ad_node_init(ad_node *n, ad_ctx *ctx, ad_dtype dt, int ndim,
                                const int64_t *shape, int64_t size) {
  n->t.grad = NULL;
  n->t.size = size;
  for (int i = 0; i < ndim; i++) n->t.shape[i] = shape[i];
  n->t.ndim = ndim;
  n->t.dtype = dt;
  n->magic = AD_NODE_MAGIC;
  n->op = 0;
  n->flags = 0;
  n->nsrc = 0;
  n->epoch = ctx->epoch;
  n->tape_idx = -1;
  n->ctx = ctx;
  n->attrs = NULL;
  n->gacc = NULL;
}

/* A temporary (arena) tensor, uninitialized data, not recorded. */
ad_tensor *ad_tmp_new(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape);

/* ad_tmp_new with x's dtype and shape. Inline, as it makes the output of
 * every elementwise op: no size product, the arena's fast case written out
 * and anything else (a new chunk, OOM) left to ad_tmp_new. */
static inline ad_tensor *ad_tmp_like(ad_ctx *ctx, const ad_tensor *x) {
  size_t bytes = (size_t)x->size * ad_dsize(x->dtype), block = ad_tmp_block(bytes);
  if ((size_t)(ctx->bump_end - ctx->bump) < block)
    return ad_tmp_new(ctx, x->dtype, x->ndim, x->shape);
  char *p = ctx->bump;
  ctx->bump += block;
  ad_node *n = (ad_node *)p;
  ad_node_init(n, ctx, x->dtype, 0, NULL, x->size);
  /* x->shape is a whole AD_MAX_DIMS array: copying all of it (entries past
   * ndim are meaningless in both) is a few straight moves, cheaper than a
   * loop over ndim */
  memcpy(n->t.shape, x->shape, sizeof n->t.shape);
  n->t.ndim = x->ndim;
  n->t.data = ad_tmp_data(p, bytes);
  return &n->t;
}

/* Whether x can be an input of fn: not NULL, a live tensor of ctx, not from
 * a tape that was reset (ad_op_apply's checks, for functions that read a
 * shape before they apply an op); records an error naming fn and what. */
bool ad_arg_ok(ad_ctx *ctx, const char *fn, const char *what, const ad_tensor *x);
/* Checks that in[0..n-1] are float and share a dtype; records an error. */
ad_status ad_check_float_same(ad_ctx *ctx, const char *op, int n, ad_tensor *const *in);
/* The shape rule of AD_OP_ELEMENTWISE ops: float inputs of one dtype whose
 * shapes broadcast; out gets that dtype and the broadcast shape. */
ad_status ad_shape_elementwise(const ad_call *c);
/* NumPy broadcast of two shapes into out; AD_ERR_SHAPE when they clash. */
bool ad_broadcast_shape(int na, const int64_t *sa, int nb, const int64_t *sb, int *nout,
                        int64_t *out);
/* Element i of t's data as a double, 0 outside [0, size): no check of
 * what t is (ad_tensor_get checks, then reads with this). */
static inline double ad_value_at(const ad_tensor *t, int64_t i) {
  if (i < 0 || i >= t->size) return 0.0;
  switch (t->dtype) {
  case AD_F32:
    return ((const float *)t->data)[i];
  case AD_F64:
    return ((const double *)t->data)[i];
  default:
    return ((const int32_t *)t->data)[i];
  }
}
static inline bool ad_same_shape(const ad_tensor *a, const ad_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}
int ad_norm_axis(int axis, int ndim); /* -1 when out of range */
/* The buffer for a persistent leaf's new gradient (n->t.grad is NULL): the
 * one ad_tensor_zero_grad kept unless an op of the current tape used it
 * (then that one stays kept), or a new one. Uninitialized; the caller
 * stores into it, then sets n->t.grad, or gives it back with
 * ad_leaf_grad_untake. NULL (and an error) on OOM. */
ad_tensor *ad_leaf_grad_take(ad_ctx *ctx, ad_node *n);
/* Gives back a buffer of ad_leaf_grad_take left unused: kept for n, or
 * freed when n keeps another one. */
void ad_leaf_grad_untake(ad_node *n, ad_tensor *g);
/* Persistent leaf n's grad (n->t.grad set) when an op of the current tape
 * used it (its epoch stamp): the backward may still read those values, so
 * a contribution is not added into them. Gives n a new grad buffer holding
 * the same values and returns it; the old one stays intact, kept for n as
 * ad_tensor_zero_grad keeps a released grad. NULL (and an error) on OOM,
 * n unchanged. */
ad_tensor *ad_leaf_grad_fork(ad_ctx *ctx, ad_node *n);
/* n->t.grad, where a backward may add into it in place: a copy (above)
 * when an op of the current tape used it. NULL on OOM. */
static inline ad_tensor *ad_leaf_grad_add_target(ad_ctx *ctx, ad_node *n) {
  ad_tensor *g = n->t.grad;
  return ad_node_of(g)->epoch != ctx->epoch ? g : ad_leaf_grad_fork(ctx, n);
}
/* Makes gradient g fit input x: sum_to over broadcast dims, or NULL. */
ad_tensor *ad_reduce_to(ad_ctx *ctx, ad_tensor *g, const ad_tensor *x);
/* Strides of x seen through out's (broadcast) shape: 0 along broadcast dims. */
void ad_bc_strides(const ad_tensor *x, const ad_tensor *out, int64_t *st);
/* Visits out row by row (its last dim); for row r, ad_bc_row gives each
 * input's element offset; st[i][ndim-1] is its stride along the row. nd:
 * out's dims outside a row (ndim - 1, fewer after ad_bc_merge). */
typedef struct ad_bc_rows {
  int nin, nd;
  int64_t st[3][AD_MAX_DIMS];
  int64_t rows, len;
} ad_bc_rows;
void ad_bc_init(ad_bc_rows *it, int nin, ad_tensor *const *in, const ad_tensor *out);
void ad_bc_row(const ad_bc_rows *it, const ad_tensor *out, int64_t r, int64_t *off);
/* Merges out's trailing dims into the rows while every input continues
 * along them as along the row (its stride there the row's stride times
 * the row's length: contiguous, or broadcast across all of them), so that
 * short last dims ([N, H, T, T] + [T, T], [N, C, H, W] * [C, 1, 1]) are
 * walked as long rows. Dims of size 1 are skipped; a row of one element
 * takes the next dim's strides as the row's (st[i][ndim-1]); otherwise
 * each input's stride along a row is unchanged. For elementwise walks
 * only: a row then spans several of out's dims. */
void ad_bc_merge(ad_bc_rows *it, const ad_tensor *out);
/* The span of out's elements from flat index e to the end of its row or
 * to end, whichever comes first: each input's offset of element e into
 * off[] and the span's length into *n. For loops dealt by element offset
 * (ad_parallel_for over out->size), so that a broadcasting op's chunks are
 * the same elements as the flat elementwise ops' (what one wrote, the next
 * finds in its thread's cache) and a merged walk of one long row still
 * splits. The cursor keeps the last span's row (its index per dim and
 * each input's offset), so that a loop walking its spans in order finds
 * the next row by adding strides (an odometer) instead of a division per
 * dim; any e is still right (a jump is computed afresh). Start each loop
 * with AD_BC_CURSOR_NONE. */
typedef struct ad_bc_cursor {
  int64_t r;                /* the row base[] belongs to; -1: none yet */
  int64_t idx[AD_MAX_DIMS]; /* its index in each of out's outer dims */
  int64_t base[3];          /* each input's offset of the row's first element */
} ad_bc_cursor;
#define AD_BC_CURSOR_NONE ((ad_bc_cursor){.r = -1})
void ad_bc_next_span(const ad_bc_rows *it, const ad_tensor *out, ad_bc_cursor *cu, int64_t e,
                     int64_t end, int64_t *off, int64_t *n);
/* A temporary header whose data pointer is set by the caller (views). */
ad_tensor *ad_tmp_header(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape);
/* The position of the first of the n int32 indices p[] outside
 * 0..lim-1, or -1 when every one is inside: a pass without branches first
 * (it vectorises; a loop that stops at the first bad index does not), the
 * search only when one is out. */
static inline int64_t ad_idx_first_bad(const int32_t *p, int64_t n, int64_t lim) {
  uint32_t l = lim > INT32_MAX ? (uint32_t)INT32_MAX + 1 : lim < 0 ? 0 : (uint32_t)lim;
  uint32_t any = 0;
  for (int64_t i = 0; i < n; i++) any |= (uint32_t)p[i] >= l;
  for (int64_t i = 0; any && i < n; i++)
    if ((uint32_t)p[i] >= l) return i;
  return -1;
}
/* A persistent sample input for gradcheck: uniform in [lo, hi), with
 * requires_grad when grad. */
static inline ad_tensor *ad_sample_tensor(const ad_sample_call *s, int ndim, const int64_t *shape,
                                          double lo, double hi, bool grad) {
  ad_tensor *t = ad_rand(s->ctx, s->rng, s->dtype, ndim, shape, lo, hi);
  if (t && grad) ad_tensor_set_requires_grad(t, true);
  return t;
}

#endif
