/* tape.c: the op registry, running and recording ops, and the backward pass. */
#include "ad_internal.h"

#include <math.h>

/* uthash allocates its bucket tables through the context's allocator (every
 * use site has `ctx` in scope) and reports failure through the entry instead
 * of exiting the host. */
#define uthash_malloc(sz)          ad_malloc(ctx, sz)
#define uthash_free(ptr, sz)       ad_free(ctx, ptr, sz)
#define HASH_NONFATAL_OOM          1
#define uthash_nonfatal_oom(entry) ((entry)->oom = true)
#include <uthash.h>

/* Inputs of an op whose backward call the sweep (and anomaly messages)
 * keep on the stack; an op with more (a variadic concat or stack) gets its
 * arrays from the arena. */
#define AD_SWEEP_INLINE 8

/* The tape_idx of an accumulator that grad_into made (below) and that only
 * its node's gacc holds. Once that node's backward is done, nothing reads it:
 * the sweep hands it back (sweep_opts.spare) and grad_into stores the next
 * first contribution of that dtype and shape into it. A chain's backward then
 * writes into one hot block instead of a new arena block per op (on a long
 * tape those are cache misses, as many as the ops). The mark is dropped
 * (-1) where gout may be shared: given to an op's backward (which may pass
 * it on, as add's does) or handed on by lead_pass. retain and ad_grad's
 * inputs keep theirs (AD_NF_RETAIN, AD_NF_KEEP): never reused. */
#define GACC_OWN (-2)

/* ------------------------------------------------------------ registry */

struct ad_op_entry {
  char *name; /* owned copy */
  int id;
  bool oom; /* set by uthash when its table could not grow */
  UT_hash_handle hh;
};

void ad_registry_free(ad_ctx *ctx) {
  ad_op_entry *e, *tmp;
  HASH_ITER(hh, ctx->by_name, e, tmp) {
    HASH_DEL(ctx->by_name, e);
    ad_free(ctx, e->name, strlen(e->name) + 1);
    ad_free(ctx, e, sizeof *e);
  }
  ad_free(ctx, ctx->ops, (size_t)ctx->ops_cap * sizeof *ctx->ops);
  ctx->ops = NULL;
  ctx->nops = ctx->ops_cap = 0;
}

int ad_op_find(const ad_ctx *ctx, const char *name) {
  if (!ctx || !name) return -1;
  ad_op_entry *e;
  HASH_FIND_STR(ctx->by_name, name, e);
  return e ? e->id : -1;
}

int ad_op_register(ad_ctx *ctx, const ad_op_def *def) {
  if (!ctx) return -1;
  if (!def || !def->name || !def->name[0] || !def->forward ||
      (!def->shape && !(def->flags & AD_OP_ELEMENTWISE))) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "op_register: a definition needs a name, a forward and a shape rule (or the "
                 "AD_OP_ELEMENTWISE flag)");
    return -1;
  }
  if (def->flags & ~(AD_OP_VIEW | AD_OP_ELEMENTWISE | AD_OP_GRAD_INTO_TEMPS)) {
    /* a bit of a later version, or garbage: its meaning would be guessed */
    ad_set_error(ctx, AD_ERR_ARG, "op_register: %s: flags 0x%x has unknown bits 0x%x", def->name,
                 (unsigned)def->flags,
                 (unsigned)def->flags &
                     ~(unsigned)(AD_OP_VIEW | AD_OP_ELEMENTWISE | AD_OP_GRAD_INTO_TEMPS));
    return -1;
  }
  if ((def->flags & AD_OP_GRAD_INTO_TEMPS) && !def->grad_into) {
    ad_set_error(ctx, AD_ERR_ARG, "op_register: %s: AD_OP_GRAD_INTO_TEMPS needs a grad_into",
                 def->name);
    return -1;
  }
  if ((int)def->attrs < 0 || def->attrs >= AD_ATTRS_KIND_COUNT) {
    ad_set_error(ctx, AD_ERR_ARG, "op_register: %s: attrs kind %d out of range", def->name,
                 (int)def->attrs);
    return -1;
  }
  if (def->arity == 0 || def->arity > AD_MAX_SRC || def->arity < -1) { /* -1: variadic */
    ad_set_error(ctx, AD_ERR_ARG, "op_register: %s: arity %d out of range", def->name, def->arity);
    return -1;
  }
  if (def->min_arity && (def->arity < 0 || def->min_arity < 1 || def->min_arity > def->arity)) {
    ad_set_error(ctx, AD_ERR_ARG, "op_register: %s: min_arity %d out of range for arity %d",
                 def->name, def->min_arity, def->arity);
    return -1;
  }
  if (ad_op_find(ctx, def->name) >= 0) {
    ad_set_error(ctx, AD_ERR_ARG, "op_register: an op named '%s' exists", def->name);
    return -1;
  }
  if (ctx->nops > UINT16_MAX) { /* a node keeps its op's id in 16 bits (ad_node.op) */
    ad_set_error(ctx, AD_ERR_ARG, "op_register: %s: a context holds at most %d ops", def->name,
                 UINT16_MAX + 1);
    return -1;
  }
  if (ctx->nops == ctx->ops_cap) {
    int cap = ctx->ops_cap ? ctx->ops_cap * 2 : 64;
    ad_op_def *ops = ad_malloc(ctx, (size_t)cap * sizeof *ops);
    if (!ops) return -1;
    /* a row for each op while the op profile runs (ad_profile_start) */
    if (ctx->profiling && ad_prof_reserve(ctx, cap) != AD_OK) {
      ad_free(ctx, ops, (size_t)cap * sizeof *ops);
      return -1;
    }
    if (ctx->nops) memcpy(ops, ctx->ops, (size_t)ctx->nops * sizeof *ops);
    ad_free(ctx, ctx->ops, (size_t)ctx->ops_cap * sizeof *ops);
    ctx->ops = ops;
    ctx->ops_cap = cap;
  }
  size_t len = strlen(def->name) + 1;
  ad_op_entry *e = ad_malloc(ctx, sizeof *e);
  char *name = e ? ad_malloc(ctx, len) : NULL;
  if (!name) {
    ad_free(ctx, e, sizeof *e);
    return -1;
  }
  memcpy(name, def->name, len);
  e->name = name;
  e->id = ctx->nops;
  e->oom = false;
  HASH_ADD_KEYPTR(hh, ctx->by_name, e->name, len - 1, e);
  if (e->oom) { /* not added: the table could not grow */
    ad_free(ctx, name, len);
    ad_free(ctx, e, sizeof *e);
    ad_set_error(ctx, AD_ERR_OOM, "op_register: out of memory adding '%s'", def->name);
    return -1;
  }
  ctx->ops[ctx->nops] = *def;
  ctx->ops[ctx->nops].name = name;
  return ctx->nops++;
}

const char *ad_attrs_kind_name(ad_attrs_kind kind) {
  static const char *const names[AD_ATTRS_KIND_COUNT] = {
      "none",      "scalar",    "dtype",      "cmp",           "axis",    "rows",  "matmul",
      "reduce",    "narrow",    "pad",        "shape",         "permute", "conv",  "pool",
      "attention", "embedding", "layer_norm", "cross_entropy", "user",    "clamp", "pad_nd",
      "elu",       "index",     "cosine",     "threshold"};
  return (int)kind >= 0 && kind < AD_ATTRS_KIND_COUNT ? names[kind] : "?";
}

int ad_op_count(const ad_ctx *ctx) { return ctx ? ctx->nops : 0; }

const ad_op_def *ad_op_get(const ad_ctx *ctx, int id) {
  if (!ctx || id < 0 || id >= ctx->nops) return NULL;
  return &ctx->ops[id];
}

int ad_tensor_op(const ad_tensor *t) {
  if (!t) return -1;
  const ad_node *n = ad_node_of(t);
  return (n->flags & AD_NF_LEAF) ? -1 : n->op;
}

/* The input tools see for recorded input s: the caller's tensor where the
 * tape saved a copy of it (saved_input), else s. Only saved copies are
 * unrecorded leaves with an input. */
static ad_tensor *caller_input(ad_node *s) {
  return (s->flags & (AD_NF_LEAF | AD_NF_RECORDED)) == AD_NF_LEAF && s->nsrc == 1 ? &s->src.in[0]->t
                                                                                  : &s->t;
}

int ad_tensor_inputs(const ad_tensor *t, ad_tensor **srcs, int max) {
  if (!t) return 0;
  const ad_node *n = ad_node_of(t);
  if (!(n->flags & AD_NF_RECORDED)) return 0;
  ad_node *const *src = ad_node_src(n);
  int nsrc = ad_node_nsrc(n);
  for (int i = 0; i < nsrc && i < max; i++) srcs[i] = caller_input(src[i]);
  return nsrc;
}

bool ad_tensor_is_valid(const ad_tensor *t) { return t && ad_node_of(t)->magic == AD_NODE_MAGIC; }

ad_ctx *ad_tensor_ctx(const ad_tensor *t) {
  return ad_tensor_is_valid(t) ? ad_node_of(t)->ctx : NULL;
}

int64_t ad_tensor_tape_index(const ad_tensor *t) {
  if (!ad_tensor_is_valid(t)) return -1;
  const ad_node *n = ad_node_of(t);
  return (n->flags & AD_NF_RECORDED) && n->epoch == n->ctx->epoch ? n->tape_idx : -1;
}

uint64_t ad_tensor_generation(const ad_tensor *t) {
  return ad_tensor_is_valid(t) ? ad_node_of(t)->epoch : 0;
}

uint64_t ad_tape_generation(const ad_ctx *ctx) { return ctx ? ctx->epoch : 0; }

void ad_get_backward_hook(const ad_ctx *ctx, ad_backward_hook *fn, void **ud) {
  if (fn) *fn = ctx ? ctx->hook : NULL;
  if (ud) *ud = ctx ? ctx->hook_ud : NULL;
}

const ad_attrs *ad_tensor_attrs(const ad_tensor *t) { return t ? ad_node_of(t)->attrs : NULL; }

/* ------------------------------------------------------------ applying */

static ad_status tape_push(ad_ctx *ctx, ad_node *n) {
  if (ctx->tape_len == ctx->tape_cap) {
    size_t cap = ctx->tape_cap ? ctx->tape_cap * 2 : 1024;
    ad_node **t = ctx->alloc(ctx->alloc_ud, ctx->tape, ctx->tape_cap * sizeof *t, cap * sizeof *t);
    if (!t) return ad_set_error(ctx, AD_ERR_OOM, "out of memory growing the tape to %zu ops", cap);
    ctx->tape = t;
    ctx->tape_cap = cap;
  }
  n->tape_idx = (int32_t)ctx->tape_len;
  ctx->tape[ctx->tape_len++] = n;
  return AD_OK;
}

static const ad_attrs zero_attrs;

/* Records why input i of def cannot be used. */
static void input_error(ad_ctx *ctx, const ad_op_def *def, int i, const ad_node *s) {
  if (!s)
    ad_set_null_error(ctx, "%s: input %d is NULL", def->name, i);
  else if (s->magic == AD_NODE_DEAD)
    ad_set_error(ctx, AD_ERR_STATE, "%s: input %d was freed", def->name, i);
  else if (s->magic != AD_NODE_MAGIC)
    ad_set_error(ctx, AD_ERR_ARG, "%s: input %d is not a tensor", def->name, i);
  else if (s->ctx != ctx)
    ad_set_error(ctx, AD_ERR_ARG, "%s: input %d belongs to another context", def->name, i);
  else
    ad_set_error(ctx, AD_ERR_STATE, "%s: input %d is from a tape that was reset", def->name, i);
}

/* Checks that x can be an input of fn (as ad_op_apply does for ops, but
 * before reading its shape, and named by fn); records the error. */
bool ad_arg_ok(ad_ctx *ctx, const char *fn, const char *what, const ad_tensor *x) {
  const ad_node *n = ad_node_of(x);
  if (!x)
    ad_set_null_error(ctx, "%s: %s is NULL", fn, what);
  else if (n->magic == AD_NODE_DEAD)
    ad_set_error(ctx, AD_ERR_STATE, "%s: %s was freed", fn, what);
  else if (n->magic != AD_NODE_MAGIC)
    ad_set_error(ctx, AD_ERR_ARG, "%s: %s is not a tensor", fn, what);
  else if (n->ctx != ctx)
    ad_set_error(ctx, AD_ERR_ARG, "%s: %s belongs to another context", fn, what);
  else if (n->epoch != ctx->epoch && !(n->flags & AD_NF_PERSISTENT))
    ad_set_error(ctx, AD_ERR_STATE, "%s: %s is from a tape that was reset", fn, what);
  else
    return true;
  return false;
}

/* Whether def applied to in[] is the common elementwise case: an
 * AD_OP_ELEMENTWISE op on inputs of one float dtype and one shape. Its
 * shape rule would then find exactly in[0]'s dtype and shape and report
 * nothing, so ad_op_apply skips the call, the local copy of the shape and
 * the product of its dims. Everything else (broadcasting, a dtype to
 * reject, other ops) takes the general path, which reports errors. */
static inline bool elementwise_same(const ad_op_def *def, int n, ad_tensor *const *in) {
  const ad_tensor *a = in[0];
  if (!(def->flags & AD_OP_ELEMENTWISE) || !ad_is_float(a->dtype)) return false;
  for (int k = 1; k < n; k++)
    if (in[k]->dtype != a->dtype || !ad_same_shape(a, in[k])) return false;
  return true;
}

/* Records that function fn of the user's op `op` returned st, which is no
 * ad_status (a code of the user's own, or garbage): AD_ERR_ARG, naming the
 * op, the function and the value, and keeping the message the function
 * recorded (said), if any. who: the pass that ran it, or NULL. */
static ad_status unknown_status(ad_ctx *ctx, const char *who, const char *op, const char *fn,
                                ad_status st, bool said) {
  char msg[sizeof ctx->err];
  snprintf(msg, sizeof msg, "%s", said ? ctx->err : "");
  char what[320];
  if (who)
    snprintf(what, sizeof what, "%s: the %s of %s", who, fn, op);
  else
    snprintf(what, sizeof what, "%s: the %s", op, fn);
  return ad_set_error(ctx, AD_ERR_ARG,
                      "%s returned %d, which is not an ad_status (AD_OK or an AD_ERR_ code)%s%s",
                      what, (int)st, said ? "; its message: " : "", msg);
}

/* The output of any other call: its shape rule describes it (and reports),
 * the engine checks the description and sizes the output. */
static ad_tensor *apply_shape(ad_ctx *ctx, int id, ad_call *c) {
  const ad_op_def *def = &ctx->ops[id];
  /* a user's rule must set ndim: one that set nothing would make a 0-d
   * output that its forward writes as if it had the input's size */
  bool user = id >= ctx->nbuiltin;
  ad_tensor d = {.dtype = c->in[0]->dtype, .ndim = user ? -1 : 0};
  c->out = &d;
  uint32_t nerrors = ctx->nerrors;
  ad_status st = def->shape ? def->shape(c) : ad_shape_elementwise(c);
  def = &ctx->ops[id]; /* a user's shape rule may have registered ops, moving the table */
  c->out = NULL;
  if (st != AD_OK) {
    if (!ad_status_known(st)) /* a user's rule returning a code of its own */
      unknown_status(ctx, NULL, def->name, "shape rule", st,
                     ctx->nerrors != nerrors && ctx->status != AD_OK);
    else if (ctx->nerrors == nerrors) /* a user's shape rule that said nothing */
      ad_set_error(ctx, st, "%s: the shape rule refused the inputs", def->name);
    return NULL;
  }
  if (user && d.ndim == -1) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: the shape rule returned AD_OK without setting the output's ndim", def->name);
    return NULL;
  }
  if (d.ndim < 0 || d.ndim > AD_MAX_DIMS ||
      (d.dtype != AD_F32 && d.dtype != AD_F64 && d.dtype != AD_I32)) { /* a user's rule */
    ad_set_error(ctx, AD_ERR_ARG, "%s: the shape rule described dtype %d with %d dims", def->name,
                 (int)d.dtype, d.ndim);
    return NULL;
  }
  int64_t size;
  int bad = ad_shape_size_checked(d.ndim, d.shape, &size);
  if (bad >= 0) { /* named by the op and its inputs' shapes */
    char who[320], a[96];
    int len = snprintf(who, sizeof who, "%s of", def->name);
    for (int k = 0; k < c->n && len > 0 && (size_t)len < sizeof who; k++)
      len += snprintf(who + len, sizeof who - (size_t)len, "%s %s", k ? "," : "",
                      ad_shape_str(c->in[k], a, sizeof a));
    ad_shape_size_error(ctx, AD_ERR_SHAPE, who, d.ndim, d.shape, bad);
    return NULL;
  }
  return (def->flags & AD_OP_VIEW) ? ad_tmp_header(ctx, d.dtype, d.ndim, d.shape)
                                   : ad_tmp_new(ctx, d.dtype, d.ndim, d.shape);
}

/* ------------------------------------------------------- anomaly mode */

bool ad_set_anomaly_mode(ad_ctx *ctx, bool on) {
  if (!ctx) return false;
  bool old = ctx->anomaly;
  ctx->anomaly = on;
  ctx->anomaly_fwd = on && ctx->sweeps == 0;
  return old;
}

bool ad_anomaly_mode(const ad_ctx *ctx) { return ctx && ctx->anomaly; }

/* v for a message: a NaN prints as "nan" whatever its sign bit. */
static double shown(double v) { return isnan(v) ? fabs(v) : v; }

/* Index of the first NaN or infinity of t, or -1 (always for AD_I32). */
static int64_t first_nonfinite(const ad_tensor *t) {
  if (t->dtype == AD_F32) {
    const float *p = t->data;
    for (int64_t i = 0; i < t->size; i++)
      if (!isfinite(p[i])) return i;
  } else if (t->dtype == AD_F64) {
    const double *p = t->data;
    for (int64_t i = 0; i < t->size; i++)
      if (!isfinite(p[i])) return i;
  }
  return -1;
}

/* "name of 'x' [2,3], [3]": op name and its inputs, into buf. */
static char *describe_call(const char *name, int n, ad_tensor *const *in, char *buf, size_t len) {
  char d[160];
  int off = snprintf(buf, len, "%s of", name);
  for (int k = 0; k < n && off > 0 && (size_t)off < len; k++)
    off += snprintf(buf + off, len - (size_t)off, "%s %s", k ? "," : "",
                    ad_tensor_describe(in[k], d, sizeof d));
  return buf;
}

/* Anomaly mode's check of an op's result: AD_ERR_NAN naming the input that
 * carried a non-finite value, or the op that made one. */
static ad_status anomaly_forward(ad_ctx *ctx, const ad_call *c) {
  int64_t at = first_nonfinite(c->out);
  if (at < 0) return AD_OK;
  char call[400], d[160];
  for (int k = 0; k < c->n; k++) {
    int64_t j = first_nonfinite(c->in[k]);
    if (j >= 0)
      return ad_set_error(ctx, AD_ERR_NAN,
                          "%s: input %d (%s) carries a non-finite value (%g at element %lld)",
                          c->name, k, ad_tensor_describe(c->in[k], d, sizeof d),
                          shown(ad_tensor_get(c->in[k], j)), (long long)j);
  }
  /* made here: for inputs of the result's size, their values there */
  char vals[160] = "";
  int off = 0;
  for (int k = 0; k < c->n && (size_t)off < sizeof vals; k++)
    if (c->in[k]->size == c->out->size && ad_is_float(c->in[k]->dtype))
      off += snprintf(vals + off, sizeof vals - (size_t)off, "%s input %d is %g",
                      off ? "," : "; there", k, shown(ad_tensor_get(c->in[k], at)));
  return ad_set_error(ctx, AD_ERR_NAN, "%s made a non-finite value (%g at element %lld%s)",
                      describe_call(c->name, c->n, c->in, call, sizeof call),
                      shown(ad_tensor_get(c->out, at)), (long long)at, vals);
}

/* The input t as the recorded op keeps it: an integer tensor (labels,
 * indices) is saved as the forward saw it, in the arena, so changing the
 * caller's tensor before backward cannot change the gradient (PyTorch saves
 * such tensors for backward too). NULL on OOM. */
static ad_node *saved_input(ad_ctx *ctx, ad_tensor *t) {
  if (t->dtype != AD_I32) return ad_node_of(t);
  ad_tensor *c = ad_tmp_new(ctx, AD_I32, t->ndim, t->shape);
  if (!c) return NULL;
  memcpy(c->data, t->data, (size_t)t->size * sizeof(int32_t));
  ad_node *n = ad_node_of(c);
  n->flags |= AD_NF_LEAF;
  n->nsrc = 1; /* a saved copy (see caller_input): remembers the caller's tensor */
  n->src.in[0] = ad_node_of(t);
  return n;
}

/* Whether the data of view v, made by a user's AD_OP_VIEW op, lies in x's
 * (an empty view may point anywhere: it reads nothing). */
static bool view_inside(const ad_tensor *v, const ad_tensor *x) {
  if (v->size == 0) return true;
  uintptr_t p = (uintptr_t)v->data, b = (uintptr_t)x->data;
  size_t vb = (size_t)v->size * ad_dsize(v->dtype), xb = (size_t)x->size * ad_dsize(x->dtype);
  return v->data && x->data && p >= b && p - b <= xb && vb <= xb - (p - b);
}

/* Puts node (the output of def on in[0..n-1]) on the tape. */
static ad_status record(ad_ctx *ctx, const ad_op_def *def, ad_node *node, int n,
                        ad_tensor *const *in, const ad_attrs *attrs) {
  if (n <= AD_INLINE_SRC) { /* one or two pointers: no loop */
    node->src.in[0] = saved_input(ctx, in[0]);
    node->src.in[1] = n > 1 ? saved_input(ctx, in[1]) : node->src.in[0];
    if (!node->src.in[0] || !node->src.in[1]) return AD_ERR_OOM;
    node->nsrc = (uint8_t)n;
  } else {
    if ((size_t)n > (SIZE_MAX - sizeof(ad_src_list) - AD_GRAIN) / sizeof(ad_node *))
      return ad_set_error(ctx, AD_ERR_OOM, "%s: %d inputs are too many to record", def->name, n);
    ad_src_list *l = ad_arena_alloc(ctx, sizeof(ad_src_list) + (size_t)n * sizeof(ad_node *));
    if (!l) return AD_ERR_OOM;
    l->n = n;
    for (int i = 0; i < n; i++)
      if (!(l->in[i] = saved_input(ctx, in[i]))) return AD_ERR_OOM;
    node->src.list = l;
    node->nsrc = AD_NSRC_LIST;
  }
  if (def->attrs != AD_ATTRS_NONE) { /* the backward reads them later */
    ad_attrs *a = ad_arena_alloc(ctx, sizeof *a);
    if (!a) return AD_ERR_OOM;
    *a = *attrs;
    node->attrs = a;
  }
  node->flags |= AD_NF_REQUIRES_GRAD | AD_NF_RECORDED;
  return tape_push(ctx, node);
}

/* The end of ad_op_apply once the forward ran: anomaly mode's check, and
 * the record on the tape. */
static inline ad_tensor *finish(ad_ctx *ctx, int id, ad_call *c, unsigned any_flags) {
  const ad_op_def *def = &ctx->ops[id];
  if (ctx->anomaly_fwd && anomaly_forward(ctx, c) != AD_OK) return NULL;
  ad_node *node = ad_node_of(c->out);
  node->op = (uint16_t)id;
  /* an integer result has no gradient (ad_tensor_set_requires_grad refuses
   * one, as PyTorch does); only a user's op with a backward can make one */
  if ((any_flags & AD_NF_REQUIRES_GRAD) && ctx->grad_enabled && def->backward &&
      ad_is_float(c->out->dtype) && record(ctx, def, node, c->n, c->in, c->attrs) != AD_OK)
    return NULL;
  return c->out;
}

/* ad_op_apply for a registered (user's) op, whose functions are checked:
 * an error they leave fails the call, a view must point into input 0, and
 * ad_tape_reset from them is refused (it would free c->out and the
 * inputs). Apart from the built-ins' path, which pays for none of it. */
static ad_tensor *apply_user(ad_ctx *ctx, int id, ad_call *c, bool given, unsigned any_flags) {
  uint32_t nerrors = ctx->nerrors;
  bool was_in = ctx->in_user_fns;
  ctx->in_user_fns = true;
  const ad_op_def *def = &ctx->ops[id];
  if (elementwise_same(def, c->n, c->in)) {
    c->out = ad_tmp_like(ctx, c->in[0]);
  } else {
    c->out = apply_shape(ctx, id, c);
    def = &ctx->ops[id]; /* the shape rule may have registered ops, moving the table */
  }
  if (c->out) def->forward(c);
  ctx->in_user_fns = was_in;
  if (!c->out) return NULL;
  def = &ctx->ops[id]; /* the forward may have moved the table */
  /* an error its functions recorded and left (an op they ran failed, a
   * tape reset refused) fails the call, as in a backward (sweep_node) */
  if (ctx->nerrors != nerrors && ctx->status != AD_OK) return NULL;
  if ((def->flags & AD_OP_VIEW) && !view_inside(c->out, c->in[0])) {
    ad_set_error(ctx, AD_ERR_STATE,
                 "%s: the forward of a view (AD_OP_VIEW) %s; it must point out->data into input "
                 "0's data",
                 def->name,
                 c->out->data ? "pointed out->data outside input 0's data" : "left out->data NULL");
    return NULL;
  }
  /* a user's op that names no attribute member but was given attributes
   * keeps them (record keeps those of the member named), so that its
   * backward sees what its forward saw */
  ad_attrs *kept = NULL;
  if (given && def->attrs == AD_ATTRS_NONE && (any_flags & AD_NF_REQUIRES_GRAD) &&
      ctx->grad_enabled && def->backward) {
    if (!(kept = ad_arena_alloc(ctx, sizeof *kept))) return NULL;
    *kept = *c->attrs;
  }
  ad_tensor *out = finish(ctx, id, c, any_flags);
  if (out && kept && (ad_node_of(out)->flags & AD_NF_RECORDED)) ad_node_of(out)->attrs = kept;
  return out;
}

/* ad_op_apply's work, inlined in its two paths (the profile's and not) */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline ad_tensor *
op_apply(ad_ctx *ctx, int id, int n, ad_tensor *const *in, const ad_attrs *attrs) {
  if (id < 0 || id >= ctx->nops) {
    ad_set_error(ctx, AD_ERR_ARG, "op_apply: no op with id %d", id);
    return NULL;
  }
  const ad_op_def *def = &ctx->ops[id];
  int least = def->min_arity ? def->min_arity : def->arity;
  if ((def->arity >= 0 && (n < least || n > def->arity)) || n < 1) {
    if (def->min_arity)
      ad_set_error(ctx, AD_ERR_ARG, "%s: takes %d to %d inputs, got %d", def->name, least,
                   def->arity, n);
    else if (def->arity >= 0)
      ad_set_error(ctx, AD_ERR_ARG, "%s: takes %d input%s, got %d", def->name, def->arity,
                   def->arity == 1 ? "" : "s", n);
    else
      ad_set_error(ctx, AD_ERR_ARG, "%s: takes one or more inputs, got %d", def->name, n);
    return NULL;
  }
  if (!in) {
    ad_set_error(ctx, AD_ERR_NULL, "%s: the array of inputs is NULL", def->name);
    return NULL;
  }
  /* one pass over the inputs; the reasons for a failure are found out only
   * when there is one (input_error) */
  unsigned any_flags = 0;
  for (int i = 0; i < n; i++) {
    ad_node *s = (ad_node *)in[i];
    if (!s || s->magic != AD_NODE_MAGIC || s->ctx != ctx ||
        (s->epoch != ctx->epoch && !(s->flags & AD_NF_PERSISTENT))) {
      input_error(ctx, def, i, s);
      return NULL;
    }
    /* a temporary's epoch is already this one; a persistent tensor's now
     * says this tape uses it, so freeing it keeps its data until the reset
     * (core.c, "persistent nodes") */
    s->epoch = ctx->epoch;
    any_flags |= s->flags;
  }
  ad_call c = {
      .ctx = ctx, .name = def->name, .n = n, .in = in, .attrs = attrs ? attrs : &zero_attrs};
  if (id >= ctx->nbuiltin) return apply_user(ctx, id, &c, attrs != NULL, any_flags);
  c.out = elementwise_same(def, n, in) ? ad_tmp_like(ctx, in[0]) : apply_shape(ctx, id, &c);
  if (!c.out) return NULL;
  def->forward(&c);
  return finish(ctx, id, &c, any_flags);
}

ad_tensor *ad_op_apply(ad_ctx *ctx, int id, int n, ad_tensor *const *in, const ad_attrs *attrs) {
  if (!ctx) return NULL;
  if (!ctx->profiling || ctx->sweeps) return op_apply(ctx, id, n, in, attrs);
  ad_prof_mark m = ad_prof_enter(ctx); /* an op's forward (ad_profile_start) */
  ad_tensor *y = op_apply(ctx, id, n, in, attrs);
  ad_prof_leave(ctx, m, y ? id : -1, AD_PROF_FWD);
  return y;
}

/* ------------------------------------------------------------ backward */

static ad_status touched_push(ad_ctx *ctx, ad_node *n) {
  if (ctx->touched_len == ctx->touched_cap) {
    size_t cap = ctx->touched_cap ? ctx->touched_cap * 2 : 64;
    ad_node **t =
        ctx->alloc(ctx->alloc_ud, ctx->touched, ctx->touched_cap * sizeof *t, cap * sizeof *t);
    if (!t) return ad_set_error(ctx, AD_ERR_OOM, "backward: out of memory");
    ctx->touched = t;
    ctx->touched_cap = cap;
  }
  ctx->touched[ctx->touched_len++] = n;
  return AD_OK;
}

/* dst += src (add) or dst = src for persistent leaf gradients (same size
 * and dtype), on the library's threads from ELEM_SPLIT elements in the
 * elementwise ops' chunks: src is usually an op's result those threads
 * just wrote, chunk by chunk, so each thread reads the part in its own
 * cache (one thread copying all of it read the other core's half from
 * afar: a plain backward on two threads was slower than on one). The same
 * bits on any thread count: each element is one add or one copy. */
#define ELEM_SPLIT 32768

typedef struct grad_job {
  ad_tensor *dst;
  const ad_tensor *src;
  bool add;
} grad_job;

static void grad_range(void *ud, int64_t i0, int64_t i1) {
  const grad_job *j = ud;
  size_t es = ad_dsize(j->dst->dtype);
  char *d = (char *)j->dst->data + (size_t)i0 * es;
  const char *s = (const char *)j->src->data + (size_t)i0 * es;
  if (!j->add) {
    memcpy(d, s, (size_t)(i1 - i0) * es);
  } else if (j->dst->dtype == AD_F32) {
    float *df = (float *)(void *)d;
    const float *sf = (const float *)(const void *)s;
    for (int64_t i = 0; i < i1 - i0; i++) df[i] += sf[i];
  } else {
    double *dd = (double *)(void *)d;
    const double *sd = (const double *)(const void *)s;
    for (int64_t i = 0; i < i1 - i0; i++) dd[i] += sd[i];
  }
}

static void grad_store(ad_tensor *dst, const ad_tensor *src, bool add) {
  grad_job j = {dst, src, add};
  if (dst->size > ELEM_SPLIT)
    ad_parallel_for(dst->size, ELEM_SPLIT, grad_range, &j);
  else
    grad_range(&j, 0, dst->size);
}

/* A scalar parameter (a bias, a gain) takes one add, without the loop's
 * set-up. */
static inline void add_into(ad_tensor *dst, const ad_tensor *src) {
  if (dst->size != 1)
    grad_store(dst, src, true);
  else if (dst->dtype == AD_F32)
    *(float *)dst->data += *(const float *)src->data;
  else
    *(double *)dst->data += *(const double *)src->data;
}

/* Adds gradient g (already shaped like n) into n's accumulator. In a plain
 * ad_backward (direct), leaves take it straight into their persistent grad:
 * no temporary per contribution. A leaf without a grad (none yet, or
 * released by ad_tensor_zero_grad) stores g: zero plus g, without the
 * zeros. A grad that an op of this tape read as a value is not added into
 * (a backward may read it still): the leaf takes a copy first
 * (ad_leaf_grad_add_target). */
/* A narrowed gradient, kept so in a plain backward (no create_graph, hook
 * or anomaly mode): the narrow y = x[..., 0:len] of the last axis sends dy
 * to x's gacc as it is, instead of padding it with zeros to x's shape,
 * when x is an op listed in op_lead (the whole-sequence recurrent ops,
 * whose output is mostly saved activations that take no gradient: the
 * zeros were the larger part of the buffer) that has no gradient yet and
 * whose gradient no caller will read (not retained, not an ad_grad
 * input). x's backward then sees a gout shaped like y. One node at a time
 * (ctx->lead_node); a second contribution to it pads the first
 * (lead_full). Returns whether dy was passed so. */
static bool lead_pass(ad_ctx *ctx, ad_node *n, ad_tensor *dy) {
  if (n->op != ctx->op_narrow || ctx->lead_node || !n->attrs) return false;
  ad_node *x = ad_node_src(n)[0];
  const ad_narrow_attrs *at = &n->attrs->narrow;
  int last = x->t.ndim - 1, ax = at->axis < 0 ? at->axis + x->t.ndim : at->axis;
  uint8_t want = AD_NF_REQUIRES_GRAD | AD_NF_RECORDED;
  if ((x->flags & (want | AD_NF_PERSISTENT | AD_NF_RETAIN | AD_NF_KEEP)) != want || x->gacc ||
      (x->op != ctx->op_lead[0] && x->op != ctx->op_lead[1]) || ax != last || at->start != 0 ||
      at->len >= x->t.shape[last])
    return false;
  x->gacc = dy;
  if (ad_node_of(dy)->tape_idx == GACC_OWN) ad_node_of(dy)->tape_idx = -1; /* see sweep_node */
  ctx->lead_node = x;
  return true;
}

/* Pads lead node n's narrowed gacc with zeros to n's shape. */
static ad_status lead_full(ad_ctx *ctx, ad_node *n) {
  ad_tensor *g = n->gacc;
  int last = g->ndim - 1;
  ad_attrs at = {.pad = {.axis = last, .before = 0, .after = n->t.shape[last] - g->shape[last]}};
  ad_tensor *full = ad_op_apply(ctx, ctx->op_pad, 1, &g, &at);
  ctx->lead_node = NULL;
  if (!full) return ctx->status ? ctx->status : AD_ERR_OOM;
  n->gacc = full;
  return AD_OK;
}

static ad_status accumulate_slow(ad_ctx *ctx, ad_node *n, ad_tensor *g, bool direct) {
  if (direct && (n->flags & AD_NF_PERSISTENT)) {
    if (n->t.grad) {
      ad_tensor *dst = ad_leaf_grad_add_target(ctx, n);
      if (!dst) return ctx->status ? ctx->status : AD_ERR_OOM;
      add_into(dst, g);
      return AD_OK;
    }
    ad_tensor *buf = ad_leaf_grad_take(ctx, n);
    if (!buf) return ctx->status ? ctx->status : AD_ERR_OOM;
    grad_store(buf, g, false);
    n->t.grad = buf;
    return AD_OK;
  }
  if (!n->gacc) {
    /* listed first: a leaf whose push failed must not keep a stale gacc */
    if (!(n->flags & AD_NF_RECORDED)) {
      ad_status st = touched_push(ctx, n);
      if (st != AD_OK) return st;
    }
    n->gacc = g;
    return AD_OK;
  }
  if (n == ctx->lead_node) { /* a second contribution: the first one padded to n's shape */
    ad_status st = lead_full(ctx, n);
    if (st != AD_OK) return st;
  }
  ad_tensor *sum[2] = {n->gacc, g};
  ad_tensor *s = ad_op_apply(ctx, ctx->op_add, 2, sum, NULL);
  if (!s) return ctx->status ? ctx->status : AD_ERR_OOM;
  n->gacc = s;
  return AD_OK;
}

/* accumulate_slow's two common cases inline: a leaf whose grad exists, and
 * the first contribution to a recorded node (the only one, in a chain). */
static inline ad_status accumulate(ad_ctx *ctx, ad_node *n, ad_tensor *g, bool direct) {
  if (direct && (n->flags & AD_NF_PERSISTENT) && n->t.grad &&
      ad_node_of(n->t.grad)->epoch != ctx->epoch) { /* else the tape reads it: slow */
    add_into(n->t.grad, g);
    return AD_OK;
  }
  if ((n->flags & (AD_NF_RECORDED | AD_NF_PERSISTENT)) == AD_NF_RECORDED && !n->gacc) {
    n->gacc = g;
    return AD_OK;
  }
  return accumulate_slow(ctx, n, g, direct);
}

/* The attributes of a reshape or sum_to to x's shape. */
static ad_attrs shape_of(const ad_tensor *x) {
  ad_attrs at = {.shape = {.ndim = x->ndim}};
  memcpy(at.shape.dims, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  return at;
}

/* g reshaped to x's shape, through the op layer's reshape. */
static ad_tensor *reshape_like(ad_ctx *ctx, ad_tensor *g, const ad_tensor *x) {
  ad_attrs at = shape_of(x);
  return ad_op_apply(ctx, ctx->op_reshape, 1, &g, &at);
}

ad_tensor *ad_reduce_to(ad_ctx *ctx, ad_tensor *g, const ad_tensor *x) {
  if (!g) return NULL;
  if (ad_same_shape(g, x)) return g;
  if (g->size == x->size) return reshape_like(ctx, g, x);
  ad_attrs at = shape_of(x);
  return ad_op_apply(ctx, ctx->op_sum_to, 1, &g, &at);
}

void ad_set_backward_hook(ad_ctx *ctx, ad_backward_hook fn, void *ud) {
  if (!ctx) return;
  ctx->hook = fn;
  ctx->hook_ud = fn ? ud : NULL;
}

/* After an error at tape position i: drops the accumulators below it. */
static void clear_below(ad_ctx *ctx, size_t i) {
  while (i-- > 0) ctx->tape[i]->gacc = NULL;
}

/* Drops the accumulators of leaves touched by a pass. */
static void clear_touched(ad_ctx *ctx) {
  for (size_t i = 0; i < ctx->touched_len; i++) ctx->touched[i]->gacc = NULL;
  ctx->touched_len = 0;
}

/* Checks what a backward gave input k: x's dtype, and x's shape or one x
 * broadcasts to (reduced by ad_reduce_to), as the backward contract asks
 * (called only when the dtype or the shape differs from x's).
 * A registered op's backward could give another dtype, read then as x's
 * past the end of its data, or another shape of the same size, which the
 * reduction would only reshape. */
static ad_status check_contribution(ad_ctx *ctx, const char *who, const ad_op_def *def, int k,
                                    const ad_tensor *g, const ad_tensor *x) {
  char a[64], b[64];
  if (g->dtype != x->dtype)
    return ad_set_error(ctx, AD_ERR_DTYPE,
                        "%s: the backward of %s gave input %d a %s gradient; the input is %s", who,
                        def->name, k, ad_dtype_name(g->dtype), ad_dtype_name(x->dtype));
  if (ad_same_shape(g, x)) return AD_OK;
  int64_t bs[AD_MAX_DIMS];
  int nb;
  bool ok = ad_broadcast_shape(x->ndim, x->shape, g->ndim, g->shape, &nb, bs) && nb == g->ndim;
  for (int d = 0; ok && d < nb; d++) ok = bs[d] == g->shape[d];
  if (!ok)
    return ad_set_error(ctx, AD_ERR_SHAPE,
                        "%s: the backward of %s gave input %d a gradient %s; the input is %s, "
                        "which does not broadcast to it",
                        who, def->name, k, ad_shape_str(g, a, sizeof a),
                        ad_shape_str(x, b, sizeof b));
  return AD_OK;
}

/* Checks that what a backward gave input k is a live tensor of ctx (a
 * registered op's backward could give a freed tensor, another context's,
 * or a temporary of a tape that was reset, whose memory now holds other
 * values), as ad_op_apply checks its inputs. */
static ad_status check_gin(ad_ctx *ctx, const char *who, const ad_op_def *def, int k,
                           const ad_tensor *g) {
  const ad_node *n = ad_node_of(g);
  const char *why = n->magic == AD_NODE_DEAD    ? "a freed tensor"
                    : n->magic != AD_NODE_MAGIC ? "something that is not a tensor"
                    : n->ctx != ctx             ? "a tensor of another context"
                    : n->epoch != ctx->epoch && !(n->flags & AD_NF_PERSISTENT)
                        ? "a temporary of a tape that was reset"
                        : NULL;
  if (!why) return AD_OK;
  return ad_set_error(ctx, n->magic == AD_NODE_MAGIC && n->ctx == ctx ? AD_ERR_STATE : AD_ERR_ARG,
                      "%s: the backward of %s gave input %d %s as its gradient", who, def->name, k,
                      why);
}

/* Whether src[k] is also one of src[0..k-1]. */
static inline bool earlier_input(ad_node *const *src, int k) {
  for (int j = 0; j < k; j++)
    if (src[j] == src[k]) return true;
  return false;
}

/* Runs def's grad_into fast path for every persistent input of call c that
 * needs a gradient: a new gradient (none yet, or released) is stored into
 * the input's buffer; with add, an existing one is added to (a copy of it,
 * when an op of this tape read it: ad_leaf_grad_add_target). For an op
 * flagged AD_OP_GRAD_INTO_TEMPS and with add (no hook looks), also for a
 * recorded input shaped like the output that has no gradient yet in this
 * pass and is not an earlier input of the call too: its first contribution
 * is stored into a new temporary (or *spare, when it fits; GACC_OWN), which
 * becomes its accumulator, as the
 * backward's own result would (a chain of elementwise ops then runs no op
 * per step of its backward; the later contributions are added in the
 * inputs' order, as before). A temporary the op declines is given back.
 * Each input so served has needs[k] cleared (the backward skips it) and
 * direct[k] set. Returns whether some input still needs the backward. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline bool
grad_into(ad_ctx *ctx, const ad_op_def *def, const ad_call *c, ad_node *const *src, bool *needs,
          bool *direct, bool add, ad_node **spare, ad_status *st) {
  bool any = false, temps = (def->flags & AD_OP_GRAD_INTO_TEMPS) != 0;
  ad_grad_into_fn into = def->grad_into; /* a user's may register ops, moving the table (def) */
  for (int k = 0; k < c->n; k++) {
    ad_node *s = src[k];
    direct[k] = false;
    /* without add (a hook will look), a leaf that is also another input
     * takes the ordinary path: its grad would hold both contributions by
     * the time the hook reads one (x * x) */
    bool twice = false;
    for (int j = 0; !add && j < c->n; j++) twice |= j != k && src[j] == s;
    if (needs[k] && (s->flags & AD_NF_PERSISTENT) && (add || (!s->t.grad && !twice))) {
      ad_tensor *g = s->t.grad;
      bool fresh = !g;
      if (!(g = fresh ? ad_leaf_grad_take(ctx, s) : ad_leaf_grad_add_target(ctx, s))) {
        *st = ctx->status ? ctx->status : AD_ERR_OOM;
        return false;
      }
      if (into(c, k, g, fresh)) {
        if (fresh) s->t.grad = g;
        needs[k] = false;
        direct[k] = true;
      } else if (fresh) {
        ad_leaf_grad_untake(s, g); /* unused: the ordinary path takes it again */
      }
    } else if (needs[k] && add && temps && !s->gacc &&
               (s->flags & (AD_NF_RECORDED | AD_NF_PERSISTENT)) == AD_NF_RECORDED &&
               ad_same_shape(&s->t, c->gout) && !earlier_input(src, k)) {
      ad_arena_mark m = ad_arena_mark_get(ctx);
      ad_node *sp = *spare;
      bool reused = sp && sp->t.dtype == s->t.dtype && ad_same_shape(&sp->t, &s->t);
      ad_tensor *g;
      if (reused) {
        g = &sp->t; /* a done node's accumulator, made here too: same dtype, shape, fields */
        *spare = NULL;
      } else if (!(g = ad_tmp_like(ctx, &s->t))) {
        *st = ctx->status ? ctx->status : AD_ERR_OOM;
        return false;
      }
      if (into(c, k, g, true)) {
        s->gacc = g;
        ad_node_of(g)->tape_idx = GACC_OWN;
        needs[k] = false;
        direct[k] = true;
      } else if (reused) {
        *spare = sp; /* declined: the backward makes its own */
      } else {
        ad_arena_rewind(ctx, &m);
      }
    }
    any |= needs[k];
  }
  return any;
}

/* Whether gradient g is the tape's own: a temporary whose data is the
 * arena's. Not so: the caller's seed, or what a registered op's backward
 * passed on (its persistent input, a constant it keeps, a view of one),
 * which a caller given g as a result could write into or free. */
static bool tape_owns(const ad_ctx *ctx, const ad_tensor *g) {
  return !(ad_node_of(g)->flags & AD_NF_PERSISTENT) &&
         (g->size == 0 || ad_arena_holds(ctx, g->data, (size_t)g->size * ad_dsize(g->dtype)));
}

/* Adds a pass's gradient gout into retained intermediate n's grad: a later
 * backward over the same tape adds to what an earlier one left. */
static ad_status retain(ad_ctx *ctx, ad_node *n, ad_tensor *gout) {
  if (!n->t.grad && !tape_owns(ctx, gout)) { /* the caller's seed, say: its values */
    ad_tensor *copy = ad_tmp_new(ctx, gout->dtype, gout->ndim, gout->shape);
    if (!copy) return ctx->status ? ctx->status : AD_ERR_OOM;
    memcpy(copy->data, gout->data, (size_t)gout->size * ad_dsize(gout->dtype));
    gout = copy;
  }
  if (!n->t.grad) {
    if (ad_node_of(gout)->tape_idx == GACC_OWN) ad_node_of(gout)->tape_idx = -1; /* kept */
    n->t.grad = gout;
    return AD_OK;
  }
  ad_tensor *sum[2] = {n->t.grad, gout};
  ad_tensor *s = ad_op_apply(ctx, ctx->op_add, 2, sum, NULL); /* not recorded: no create_graph */
  if (!s) return ctx->status ? ctx->status : AD_ERR_OOM;
  n->t.grad = s;
  return AD_OK;
}

static int cmp_write(const void *a, const void *b) {
  uintptr_t x = ((const ad_write *)a)->lo, y = ((const ad_write *)b)->lo;
  return (x > y) - (x < y);
}

/* The bytes [lo, hi) of t's data (lo == hi: none). */
static void data_range(const ad_tensor *t, uintptr_t *lo, uintptr_t *hi) {
  *lo = (uintptr_t)t->data;
  *hi = t->data ? *lo + (size_t)t->size * ad_dsize(t->dtype) : *lo;
}

/* Sorts ctx->writes by where the written data lies, and returns the
 * latest write's position. A write is matched by memory, not by tensor:
 * an op may read a tensor through a view that no op recorded (conv1d's or
 * a dense layer's reshape of a data input that needs no gradient). */
static size_t writes_merge(ad_ctx *ctx) {
  ad_write *w = ctx->writes;
  size_t k = 0, top = 0;
  for (size_t i = 0; i < ctx->nwrites; i++) {
    data_range(&w[i].n->t, &w[i].lo, &w[i].hi);
    if (w[i].pos > top) top = w[i].pos;
    if (w[i].hi > w[i].lo) w[k++] = w[i]; /* an empty tensor's write changed nothing */
  }
  ctx->nwrites = k;
  qsort(w, k, sizeof *w, cmp_write);
  for (size_t i = 0; i < k; i++)
    w[i].reach = i && w[i - 1].reach > w[i].hi ? w[i - 1].reach : w[i].hi;
  return top;
}

/* Whether memory of t was written after the op at tape index i was
 * recorded (ctx->writes merged). */
static bool written_after(const ad_ctx *ctx, const ad_tensor *t, size_t i) {
  uintptr_t a, b;
  data_range(t, &a, &b);
  if (a == b) return false;
  const ad_write *w = ctx->writes;
  size_t l = 0, r = ctx->nwrites; /* the entries starting below b: [0, l) */
  while (l < r) {
    size_t m = l + (r - l) / 2;
    if (w[m].lo < b)
      l = m + 1;
    else
      r = m;
  }
  for (size_t j = l; j-- > 0 && w[j].reach > a;) /* reach: none before j ends above a */
    if (w[j].hi > a && w[j].pos > i) return true;
  return false;
}

/* Whether an op that the backward from root reaches has an input freed
 * since it was recorded, or an input or result written since (its
 * backward would read other values than its forward did, or differentiate
 * a function the program no longer computes): checked before the pass
 * writes anything, so a failed pass leaves no partial gradient. Only a
 * tensor the tape used keeps its data and header after ad_tensor_free,
 * and only writes into memory the tape may have read are noted
 * (ad_note_write), so this runs only when such a tensor was freed or
 * written. Reached nodes are marked through gacc (NULL outside a pass). */
static ad_status precheck(ad_ctx *ctx, ad_node *root, const char *who) {
  static ad_tensor reached;
  ad_status st = AD_OK;
  size_t top = ctx->nwrites ? writes_merge(ctx) : 0; /* ops from here on read the last values */
  char d[160];
  root->gacc = &reached;
  for (size_t i = (size_t)root->tape_idx + 1; i-- > 0;) {
    ad_node *n = ctx->tape[i];
    if (n->gacc != &reached) continue;
    n->gacc = NULL;
    ad_node *const *src = ad_node_src(n);
    for (int k = 0, nsrc = ad_node_nsrc(n); st == AD_OK && k < nsrc; k++) {
      if (src[k]->magic != AD_NODE_MAGIC)
        st = ad_set_error(ctx, AD_ERR_STATE,
                          "%s: input %d of %s was freed after the op was recorded; free "
                          "tensors after the backward passes that use them",
                          who, k, ctx->ops[n->op].name);
      else if (i < top && written_after(ctx, &src[k]->t, i))
        st = ad_set_error(ctx, AD_ERR_STATE,
                          "%s: input %d of %s (%s) was written after the op was recorded, and "
                          "its backward would use the new values; write tensors after the "
                          "backward passes that use them, or run the ops again",
                          who, k, ctx->ops[n->op].name,
                          ad_tensor_describe(caller_input(src[k]), d, sizeof d));
      else if (src[k]->flags & AD_NF_RECORDED)
        src[k]->gacc = &reached;
    }
    if (st == AD_OK && i < top && written_after(ctx, &n->t, i))
      st = ad_set_error(ctx, AD_ERR_STATE,
                        "%s: the result of %s (%s) was written after the op was recorded, so "
                        "the tape no longer computes the values used; write tensors after the "
                        "backward passes that use them, or run the ops again",
                        who, ctx->ops[n->op].name, ad_tensor_describe(&n->t, d, sizeof d));
  }
  return st; /* after an error the loop still ran to the bottom, clearing marks */
}

/* Anomaly mode's check of the gradient g that the backward of def (node n)
 * sends to its input k. */
static ad_status anomaly_backward(ad_ctx *ctx, const ad_op_def *def, const ad_node *n, int k,
                                  const ad_tensor *g) {
  int64_t at = first_nonfinite(g);
  if (at < 0) return AD_OK;
  ad_node *const *src = ad_node_src(n);
  /* the call's first inputs (as many as its description holds), with names */
  ad_tensor *in[AD_SWEEP_INLINE];
  int nsrc = ad_node_nsrc(n), shown_in = nsrc < AD_SWEEP_INLINE ? nsrc : AD_SWEEP_INLINE;
  for (int j = 0; j < shown_in; j++) in[j] = caller_input(src[j]);
  char call[400], d[160];
  return ad_set_error(ctx, AD_ERR_NAN,
                      "backward of %s (forward: %s%s) sent a non-finite gradient (%g at element "
                      "%lld) to input %d (%s)",
                      def->name, describe_call(def->name, shown_in, in, call, sizeof call),
                      nsrc > shown_in ? ", ..." : "", shown(ad_tensor_get(g, at)), (long long)at, k,
                      ad_tensor_describe(caller_input(src[k]), d, sizeof d));
}

/* What every node of one sweep shares. */
typedef struct sweep_opts {
  bool into, into_add, direct, anomaly, lead;
  uint32_t nerrors; /* errors recorded before the next backward runs (kept current) */
  const char *who;
  ad_node *spare; /* an accumulator grad_into may reuse (GACC_OWN), or NULL */
} sweep_opts;

/* Node n's backward is done and sent nothing that reads its accumulator
 * gout: if only n held it (GACC_OWN), it is the sweep's spare now. */
static inline void release(sweep_opts *sw, const ad_node *n, ad_tensor *gout) {
  if (ad_node_of(gout)->tape_idx == GACC_OWN && !(n->flags & (AD_NF_KEEP | AD_NF_RETAIN)))
    sw->spare = ad_node_of(gout);
}

/* Whether t's data lies in g's (a view of it, as a reshape makes). */
static bool inside(const ad_tensor *t, const ad_tensor *g) {
  uintptr_t p = (uintptr_t)t->data, b = (uintptr_t)g->data;
  return p >= b && p - b < (size_t)g->size * ad_dsize(g->dtype);
}

/* After node n's backward ran with gout, which only n held (GACC_OWN), and
 * its gradients gin were accumulated: where gout went. Sent as it is (a
 * pass-through: add's gradient) to one recorded input that took it as its
 * accumulator, that input now holds it alone: the mark moves with it. Sent
 * nowhere, or only added into other buffers, nothing holds it: the spare.
 * A gradient that is a view of gout (or gout kept twice) leaves it unmarked. */
static void pass_on(sweep_opts *sw, const ad_node *n, ad_tensor *gout, ad_node *const *src,
                    ad_tensor *const *gin, int nsrc) {
  int holders = 0;
  for (int k = 0; k < nsrc; k++) {
    if (!gin[k]) continue;
    if (gin[k] != gout) {
      if (inside(gin[k], gout)) return;
    } else if (src[k]->gacc == gout) {
      if (!(src[k]->flags & AD_NF_RECORDED) || earlier_input(src, k)) return;
      holders++;
    }
  }
  if (holders == 1)
    ad_node_of(gout)->tape_idx = GACC_OWN;
  else if (holders == 0 && !(n->flags & (AD_NF_KEEP | AD_NF_RETAIN)))
    sw->spare = ad_node_of(gout);
}

/* Runs the backward of node n (gradient gout) and accumulates what it
 * sends into its inputs; arrays of the node's input count for the call
 * (in, gin), the hook (seen, into_grad) and the needs-grad mask. Inline,
 * so that with the sweep's stack arrays the common case (one to three
 * inputs) addresses them in its frame as before. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline ad_status
sweep_node(ad_ctx *ctx, sweep_opts *sw, ad_node *n, ad_tensor *gout, ad_tensor **in,
           ad_tensor **gin, ad_tensor **seen, bool *needs, bool *into_grad) {
  const ad_op_def *def = &ctx->ops[n->op];
  int nsrc = ad_node_nsrc(n);
  ad_node *const *src = ad_node_src(n);
  bool any = false, some_into = false;
  for (int k = 0; k < nsrc; k++) {
    in[k] = &src[k]->t;
    gin[k] = NULL;
    needs[k] = (src[k]->flags & AD_NF_REQUIRES_GRAD) != 0;
    any |= needs[k];
  }
  if (!any) {
    release(sw, n, gout);
    return AD_OK;
  }
  ad_call c = {.ctx = ctx,
               .name = def->name,
               .n = nsrc,
               .in = in,
               .attrs = n->attrs ? n->attrs : &zero_attrs,
               .out = &n->t,
               .gout = gout,
               .needs = needs,
               .gin = gin};
  ad_status st = AD_OK;
  if (sw->into && def->grad_into) {
    any = grad_into(ctx, def, &c, src, needs, into_grad, sw->into_add, &sw->spare, &st);
    some_into = true; /* into_grad[] is set for every input */
    if (st != AD_OK) return st;
    if (!any && !ctx->hook) { /* every input served: nothing sent */
      release(sw, n, gout);
      return AD_OK;
    }
    def = &ctx->ops[n->op]; /* a user's grad_into may have moved the table, as below */
  }
  /* the backward may pass gout on (add's does): see pass_on */
  bool own = ad_node_of(gout)->tape_idx == GACC_OWN;
  if (own) ad_node_of(gout)->tape_idx = -1;
  st = any ? def->backward(&c) : AD_OK;
  /* a user's op (the built-in ones are the engine's own): its backward may
   * have registered an op, moving the table, and what it gives is checked */
  bool user = n->op >= ctx->nbuiltin;
  if (user) def = &ctx->ops[n->op];
  if (user && !ad_status_known(st)) /* a code of its own: callers get one of the enum */
    st = unknown_status(ctx, sw->who, def->name, "backward", st,
                        ctx->nerrors != sw->nerrors && ctx->status != AD_OK);
  if (ctx->nerrors != sw->nerrors) { /* an error was recorded during the backward */
    if (st == AD_OK && ctx->status != AD_OK)
      return ctx->status; /* returned AD_OK after an op it ran failed (a NULL taken for a zero
                             gradient): the error stands */
    if (st == AD_OK) sw->nerrors = ctx->nerrors; /* recorded and cleared: handled */
  } else if (st != AD_OK) {
    ad_set_error(ctx, st, "%s: backward of %s failed", sw->who, def->name); /* it said nothing */
  }
  if (st != AD_OK) return st;
  for (int k = 0; k < nsrc; k++) {
    if (!needs[k] || !gin[k]) {
      gin[k] = NULL;
      continue;
    }
    if (user && (st = check_gin(ctx, sw->who, def, k, gin[k])) != AD_OK) return st;
    bool same = ad_same_shape(gin[k], in[k]);
    if ((!same || gin[k]->dtype != in[k]->dtype) &&
        (st = check_contribution(ctx, sw->who, def, k, gin[k], in[k])) != AD_OK)
      return st;
    ad_tensor *gk = same ? gin[k] : ad_reduce_to(ctx, gin[k], in[k]);
    if (!gk) return ctx->status ? ctx->status : AD_ERR_OOM;
    gin[k] = gk;
    if (sw->anomaly && (st = anomaly_backward(ctx, def, n, k, gk)) != AD_OK) return st;
    if ((st = accumulate(ctx, src[k], gk, sw->direct)) != AD_OK) return st;
  }
  if (own && sw->into_add) pass_on(sw, n, gout, src, gin, nsrc);
  if (ctx->hook) {
    for (int k = 0; k < nsrc; k++) seen[k] = caller_input(src[k]); /* not the saved copies */
    if (!some_into)
      for (int k = 0; k < nsrc; k++) into_grad[k] = false;
    ad_backward_step step = {&n->t, gout, nsrc, seen, gin, into_grad};
    if (ctx->profiling) {
      ad_prof_mark m = ad_prof_enter(ctx);
      ctx->hook(ctx->hook_ud, &step);
      ad_prof_leave(ctx, m, -1, AD_PROF_HOOK);
    } else {
      ctx->hook(ctx->hook_ud, &step);
    }
    sw->nerrors = ctx->nerrors; /* what the hook recorded (and cleared) is not the next op's */
  }
  return AD_OK;
}

/* The sweep reads each node's header (gacc, flags, inputs, shape) for the
 * first time when it reaches the node's first consumer: on a long tape of
 * small ops these are cache misses in a row, as many as the ops, which the
 * hardware prefetcher does not see coming (the nodes are found through the
 * tape's pointers). The header of the node SWEEP_AHEAD places down the
 * tape is asked for early: every line it touches (three or four, as it
 * falls). */
#define SWEEP_AHEAD 8
static inline void prefetch_node(const ad_node *n) {
#if defined(__GNUC__)
  const char *p = (const char *)n;
  __builtin_prefetch(p);
  __builtin_prefetch(p + 64);
  __builtin_prefetch(p + 128);
  __builtin_prefetch(p + sizeof(ad_node) - 1);
#else
  (void)n;
#endif
}

/* The reverse sweep shared by ad_backward and ad_grad: seeds root, then runs
 * each recorded op's backward from the root down, leaving every reached
 * node's gradient in its gacc. */
static ad_status sweep(ad_ctx *ctx, ad_node *root, const ad_tensor *seed, bool create_graph,
                       bool direct, const char *who) {
  char a[64], b[64];
  if (!(root->flags & AD_NF_REQUIRES_GRAD))
    return ad_set_error(ctx, AD_ERR_STATE,
                        "%s: the root does not require grad (no input requires grad, or it was "
                        "computed in no-grad mode)",
                        who);
  if (!(root->flags & AD_NF_PERSISTENT) &&
      (root->epoch != ctx->epoch || root->tape_idx < 0 || (size_t)root->tape_idx >= ctx->tape_len ||
       ctx->tape[root->tape_idx] != root))
    return ad_set_error(ctx, AD_ERR_STATE, "%s: the root is from a tape that was reset", who);
  if ((ctx->deferred || ctx->nwrites) && (root->flags & AD_NF_RECORDED)) {
    /* a tensor used by this tape was freed, or written */
    ad_status st = precheck(ctx, root, who);
    if (st != AD_OK) return st;
  }
  ad_tensor *g;
  if (seed) {
    if (ad_node_of(seed)->magic != AD_NODE_MAGIC)
      return ad_set_error(ctx, AD_ERR_ARG, "%s: seed is not a tensor (or was freed)", who);
    if (ad_node_of(seed)->ctx != ctx)
      return ad_set_error(ctx, AD_ERR_ARG, "%s: seed belongs to another context", who);
    if (ad_node_of(seed)->epoch != ctx->epoch && !(ad_node_of(seed)->flags & AD_NF_PERSISTENT))
      return ad_set_error(ctx, AD_ERR_STATE, "%s: seed is from a tape that was reset", who);
    if (!ad_same_shape(seed, &root->t))
      return ad_set_error(ctx, AD_ERR_SHAPE, "%s: seed shape %s does not match root %s", who,
                          ad_shape_str(seed, a, sizeof a), ad_shape_str(&root->t, b, sizeof b));
    if (seed->dtype != root->t.dtype)
      return ad_set_error(ctx, AD_ERR_DTYPE, "%s: seed is %s, root is %s", who,
                          ad_dtype_name(seed->dtype), ad_dtype_name(root->t.dtype));
    g = (ad_tensor *)seed;
    /* a persistent seed (a leaf's grad buffer, say) is read by the whole
     * pass: stamped as used, as ad_op_apply stamps inputs, so that a
     * gradient stored into that buffer forks it instead of writing into
     * the seed the later steps still read */
    if (ad_node_of(seed)->flags & AD_NF_PERSISTENT) ad_node_of(seed)->epoch = ctx->epoch;
  } else {
    if (root->t.size != 1)
      return ad_set_error(ctx, AD_ERR_SHAPE,
                          "%s: root has shape %s; a non-scalar root needs an output gradient", who,
                          ad_shape_str(&root->t, a, sizeof a));
    g = ad_tmp_full(ctx, root->t.dtype, root->t.ndim, root->t.shape, 1.0);
  }
  if (!g) return ctx->status ? ctx->status : AD_ERR_OOM;

  if (ctx->anomaly && first_nonfinite(g) >= 0)
    return ad_set_error(ctx, AD_ERR_NAN, "%s: the seed has a non-finite value (%g at element %lld)",
                        who, shown(ad_tensor_get(g, first_nonfinite(g))),
                        (long long)first_nonfinite(g));
  bool old = ctx->grad_enabled, anomaly = ctx->anomaly;
  ctx->grad_enabled = create_graph;
  ctx->anomaly_fwd = false; /* the gradients sent are checked instead */
  ctx->sweeps++;
  /* ops' grad_into fast paths: where the result goes to leaves' grad
   * fields (and, without a hook, to an intermediate's first accumulator);
   * adding into an existing grad only while no hook would miss the
   * contribution (storing a new one leaves it in the grad for the hook);
   * either way the bits are those of the ordinary path */
  bool into = direct && !create_graph && !anomaly, into_add = into && !ctx->hook;
  ctx->touched_len = 0;
  ad_node *outer_lead = ctx->lead_node; /* a hook's sweep inside another's keeps it */
  ctx->lead_node = NULL;
  sweep_opts sw = {.into = into,
                   .into_add = into_add,
                   .lead = !create_graph && !anomaly && !ctx->hook,
                   .direct = direct,
                   .anomaly = anomaly,
                   .nerrors = ctx->nerrors,
                   .who = who};
  ad_status st = accumulate(ctx, root, g, direct);
  size_t top = root->flags & AD_NF_RECORDED ? (size_t)root->tape_idx + 1 : 0;
  for (size_t i = top; st == AD_OK && i-- > 0;) {
    ad_node *n = ctx->tape[i];
    if (i >= SWEEP_AHEAD) prefetch_node(ctx->tape[i - SWEEP_AHEAD]);
    ad_tensor *gout = n->gacc;
    if (!gout) continue;
    /* the op profile's region for this node, ended below (ad_profile_start) */
    bool prof = ctx->profiling;
    ad_prof_mark pm = prof ? ad_prof_enter(ctx) : (ad_prof_mark){0, 0};
    /* this node is done with after this iteration: drop its accumulator now
     * rather than sweeping the tape again afterwards */
    if (!(n->flags & AD_NF_KEEP)) n->gacc = NULL;
    if (direct && (n->flags & AD_NF_RETAIN) && (st = retain(ctx, n, gout)) != AD_OK) {
      if (prof) ad_prof_leave(ctx, pm, -1, AD_PROF_BWD);
      clear_below(ctx, i);
      break;
    }
    if (n == ctx->lead_node) { /* its backward reads gout's shape */
      ctx->lead_node = NULL;
    } else if (sw.lead && lead_pass(ctx, n, gout)) {
      if (prof) ad_prof_leave(ctx, pm, n->op, AD_PROF_BWD);
      continue;
    }
    int nsrc = ad_node_nsrc(n);
    if (nsrc <= AD_SWEEP_INLINE) { /* the call's arrays on the stack */
      ad_tensor *in[AD_SWEEP_INLINE], *gin[AD_SWEEP_INLINE], *seen[AD_SWEEP_INLINE];
      bool needs[AD_SWEEP_INLINE], into_grad[AD_SWEEP_INLINE];
      st = sweep_node(ctx, &sw, n, gout, in, gin, seen, needs, into_grad);
    } else { /* from the arena: one block per op of that many, gone at the reset */
      /* three pointers and two bools per input; nsrc is an int, and an
       * arena list of that many was allocated when the op was recorded */
      size_t np = (size_t)nsrc * sizeof(ad_tensor *), nb = (size_t)nsrc * sizeof(bool);
      char *buf = ad_arena_alloc(ctx, 3 * np + 2 * nb);
      if (!buf) {
        st = ctx->status ? ctx->status : AD_ERR_OOM;
      } else {
        bool *needs = (bool *)(buf + 3 * np);
        st = sweep_node(ctx, &sw, n, gout, (ad_tensor **)buf, (ad_tensor **)(buf + np),
                        (ad_tensor **)(buf + 2 * np), needs, needs + nsrc);
      }
    }
    if (prof) ad_prof_leave(ctx, pm, st == AD_OK ? n->op : -1, AD_PROF_BWD);
    if (st != AD_OK) clear_below(ctx, i); /* nodes below may hold contributions of this pass */
  }
  ctx->lead_node = outer_lead;
  ctx->grad_enabled = old;
  if (--ctx->sweeps == 0) ctx->anomaly_fwd = ctx->anomaly; /* outside every sweep again */
  return st;
}

static ad_status check_root(ad_ctx *ctx, ad_tensor *root, const char *who) {
  if (!ctx) return AD_ERR_NULL;
  if (ctx->sweeps) /* from a hook: the running pass owns every node's accumulator */
    return ad_set_error(ctx, AD_ERR_STATE,
                        "%s: called during a backward pass (from a backward hook or an op's "
                        "backward); run it after "
                        "the pass returns",
                        who);
  if (!root) return ad_set_null_error(ctx, "%s: root is NULL", who);
  if (ad_node_of(root)->magic == AD_NODE_DEAD)
    return ad_set_error(ctx, AD_ERR_STATE, "%s: root was freed", who);
  if (ad_node_of(root)->magic != AD_NODE_MAGIC)
    return ad_set_error(ctx, AD_ERR_ARG, "%s: root is not a tensor", who);
  if (ad_node_of(root)->ctx != ctx)
    return ad_set_error(ctx, AD_ERR_ARG, "%s: root belongs to another context", who);
  return AD_OK;
}

ad_status ad_backward(ad_ctx *ctx, ad_tensor *root, const ad_tensor *seed) {
  ad_status st = check_root(ctx, root, "backward");
  if (st != AD_OK) return st;
  ad_node *r = ad_node_of(root);
  if (ctx->profiling) {
    ad_prof_mark m = ad_prof_enter(ctx);
    st = sweep(ctx, r, seed, false, true, "backward");
    ad_prof_leave(ctx, m, -1, AD_PROF_PASS);
  } else {
    st = sweep(ctx, r, seed, false, true, "backward");
  }
  clear_touched(ctx);
  return st;
}

/* A copy of gradient g (not the tape's own: see tape_owns) in the arena,
 * for ad_grad to return in its place: the caller may write into or free
 * its results as its own, which g is not. With create_graph, a g that
 * requires a gradient is copied by an op (x * 1, the same bits but a
 * signalling NaN's), so the result stays differentiable. */
static ad_tensor *grad_copy(ad_ctx *ctx, ad_tensor *g, bool create_graph) {
  if (create_graph && (ad_node_of(g)->flags & AD_NF_REQUIRES_GRAD)) {
    bool was = ctx->grad_enabled, fwd = ctx->anomaly_fwd;
    ctx->grad_enabled = true;
    ctx->anomaly_fwd = false; /* a gradient, not a forward value: checked in the pass */
    const ad_attrs one = {.scalar = 1.0};
    ad_tensor *c = ad_op_apply(ctx, ctx->op_mul_scalar, 1, &g, &one);
    ctx->grad_enabled = was;
    ctx->anomaly_fwd = fwd;
    return c;
  }
  ad_tensor *c = ad_tmp_new(ctx, g->dtype, g->ndim, g->shape);
  if (c && g->size) memcpy(c->data, g->data, (size_t)g->size * ad_dsize(g->dtype));
  return c;
}

ad_status ad_grad(ad_ctx *ctx, ad_tensor *root, const ad_tensor *seed, int n,
                  ad_tensor *const *inputs, ad_tensor **out, bool create_graph) {
  ad_status st = check_root(ctx, root, "grad");
  if (st != AD_OK) return st;
  if (n < 0 || (n > 0 && (!inputs || !out)))
    return ad_set_error(ctx, AD_ERR_NULL, "grad: inputs or out is NULL");
  for (int i = 0; i < n; i++) {
    out[i] = NULL;
    if (!inputs[i]) return ad_set_null_error(ctx, "grad: input %d is NULL", i);
    const ad_node *in = ad_node_of(inputs[i]);
    if (in->magic == AD_NODE_DEAD)
      return ad_set_error(ctx, AD_ERR_STATE, "grad: input %d was freed", i);
    if (in->magic != AD_NODE_MAGIC)
      return ad_set_error(ctx, AD_ERR_ARG, "grad: input %d is not a tensor", i);
    if (in->ctx != ctx)
      return ad_set_error(ctx, AD_ERR_ARG, "grad: input %d belongs to another context", i);
    if (in->epoch != ctx->epoch && !(in->flags & AD_NF_PERSISTENT))
      return ad_set_error(ctx, AD_ERR_STATE, "grad: input %d is from a tape that was reset", i);
  }
  for (int i = 0; i < n; i++) ad_node_of(inputs[i])->flags |= AD_NF_KEEP;
  /* the op profile's pass: the sweep and the copies below (grad_copy
   * applies an op, the pass's, not a forward call of the caller's) */
  bool prof = ctx->profiling;
  ad_prof_mark pm = prof ? ad_prof_enter(ctx) : (ad_prof_mark){0, 0};
  st = sweep(ctx, ad_node_of(root), seed, create_graph, false, "grad");
  ctx->profiling = false;
  /* an input listed twice gets its gradient in both places (as PyTorch's
   * autograd.grad): every out[i] is read before any accumulator is cleared */
  for (int i = 0; i < n && st == AD_OK; i++) {
    ad_node *in = ad_node_of(inputs[i]);
    ad_tensor *g = in->gacc;
    if (!g)
      g = ad_tmp_full(ctx, inputs[i]->dtype, inputs[i]->ndim, inputs[i]->shape, 0.0);
    else if (!tape_owns(ctx, g))
      g = grad_copy(ctx, g, create_graph);
    if (!(out[i] = g)) st = ctx->status ? ctx->status : AD_ERR_OOM;
  }
  ctx->profiling = prof;
  if (prof) ad_prof_leave(ctx, pm, -1, AD_PROF_PASS);
  for (int i = 0; i < n; i++) {
    ad_node *in = ad_node_of(inputs[i]);
    in->flags &= (uint8_t)~AD_NF_KEEP;
    in->gacc = NULL;
  }
  clear_touched(ctx);
  return st;
}
