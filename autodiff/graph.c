/* graph.c: Graphviz dumps of the recorded graph and a step-by-step trace of
 * the backward pass, for teaching and debugging.
 *
 * A client of the extension API: the graph is read through the
 * introspection calls (ad_tensor_op, ad_tensor_inputs, ad_tensor_tape_index,
 * ad_tensor_generation, ad_tensor_attrs, ad_op_get) and backward is observed
 * through the backward hook. Nothing here runs an op or writes a tensor, so
 * a dump or a trace cannot change a value or a gradient. Memory comes from
 * the context's allocator; inside the hook an allocation failure only loses
 * a record (reported by ad_graph_trace_end), never the context's error. */
#include "ad_ext.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Allocation through the context's allocator that records nothing on
 * failure: the graph reports its own failures, and inside the hook it must
 * not replace the context's error. */
static void *galloc(ad_ctx *ctx, size_t n) {
  ad_alloc_fn fn;
  void *ud;
  ad_get_allocator(ctx, &fn, &ud);
  return fn(ud, NULL, 0, n ? n : 1);
}

/* uthash allocates through galloc (every use site has `ctx` in scope) and
 * reports failure through the entry instead of exiting the host. */
#define uthash_malloc(sz)          galloc(ctx, sz)
#define uthash_free(ptr, sz)       ad_free(ctx, ptr, sz)
#define HASH_NONFATAL_OOM          1
#define uthash_nonfatal_oom(entry) ((entry)->oom = true)
#include <uthash.h>

#define FULL_MAX 16 /* tensors of at most this many elements are shown in full */

/* ------------------------------------------------------------- state */

typedef struct name_ent {
  const ad_tensor *t; /* key */
  char *name;         /* owned, strlen + 1 bytes; NULL once removed */
  uint64_t gen;       /* for temporaries: the tape generation t belongs to */
  bool persistent;    /* t was persistent when named */
  bool oom;
  UT_hash_handle hh;
} name_ent;

/* What one backward step sent to one input: a pointer into the arena, or
 * for a contribution stored straight into a grad, an owned copy: a plain
 * view (read only by the value printer) and its data. */
typedef struct step_in {
  const ad_tensor *gin;
  ad_tensor snap;
  size_t snap_bytes;
} step_in;

/* What one backward step computed: cap entries in in[], n of them used (an
 * op's every input: a variadic op may have any number). */
typedef struct step_rec {
  const ad_tensor *out; /* key */
  const ad_tensor *gout;
  int n, cap;
  bool oom;
  UT_hash_handle hh;
  step_in in[];
} step_rec;

static size_t rec_bytes(int cap) { return sizeof(step_rec) + (size_t)cap * sizeof(step_in); }

struct ad_graph {
  ad_ctx *ctx;
  name_ent *names;
  int nauto[3]; /* made-up names so far: parameters, inputs, constants */
  step_rec *recs;
  uint64_t rec_gen; /* tape generation the records belong to */
  bool tracing, lost;
  FILE *trace;
  ad_backward_hook prev_hook; /* the hook ours replaced; called after ours */
  void *prev_ud;
  int pass, step;
  int64_t last_idx; /* tape index of the last traced step */
};

ad_graph *ad_graph_new(ad_ctx *ctx) {
  if (!ctx) return NULL;
  ad_graph *g = ad_malloc(ctx, sizeof *g);
  if (!g) return NULL;
  *g = (ad_graph){.ctx = ctx, .last_idx = -1};
  return g;
}

static void free_name(ad_ctx *ctx, name_ent *e) {
  if (e->name) ad_free(ctx, e->name, strlen(e->name) + 1);
  e->name = NULL;
}

static void free_snaps(ad_ctx *ctx, step_rec *r) {
  for (int k = 0; k < r->cap; k++) {
    if (r->in[k].snap.data) ad_free(ctx, r->in[k].snap.data, r->in[k].snap_bytes);
    r->in[k] = (step_in){0};
  }
}

/* The grad field of a snapshot: a plain view (no node of the engine's
 * behind it, which ad_tensor_get would refuse) whose data holds the
 * gradient's values as doubles, whatever its dtype field says (kept for
 * display). */
static ad_tensor snap_tag;

/* Value i of t: a snapshot's from its doubles, an engine tensor's through
 * ad_tensor_get (NaN once freed or from a tape that was reset). */
static double value_at(const ad_tensor *t, int64_t i) {
  if (t->grad != &snap_tag) return ad_tensor_get(t, i);
  return i >= 0 && i < t->size ? ((const double *)t->data)[i] : 0.0;
}

/* A copy of grad's values in r's snapshot k; NULL if none can be made. */
static const ad_tensor *snapshot(ad_ctx *ctx, step_rec *r, int k, const ad_tensor *grad) {
  size_t bytes = (size_t)grad->size * sizeof(double);
  double *p = galloc(ctx, bytes);
  if (!p) return NULL;
  for (int64_t i = 0; i < grad->size; i++) p[i] = ad_tensor_get(grad, i);
  r->in[k].snap = *grad;
  r->in[k].snap.data = p;
  r->in[k].snap.grad = &snap_tag;
  r->in[k].snap_bytes = bytes;
  return &r->in[k].snap;
}

static void clear_recs(ad_graph *g) {
  ad_ctx *ctx = g->ctx;
  step_rec *r, *tmp;
  HASH_ITER(hh, g->recs, r, tmp) {
    HASH_DEL(g->recs, r);
    free_snaps(ctx, r);
    ad_free(ctx, r, rec_bytes(r->cap));
  }
}

void ad_graph_free(ad_graph *g) {
  if (!g) return;
  ad_ctx *ctx = g->ctx;
  ad_graph_trace_end(g);
  name_ent *e, *tmp;
  HASH_ITER(hh, g->names, e, tmp) {
    HASH_DEL(g->names, e);
    free_name(ctx, e);
    ad_free(ctx, e, sizeof *e);
  }
  clear_recs(g);
  ad_free(ctx, g, sizeof *g);
}

static bool is_recorded(const ad_tensor *t) { return ad_tensor_tape_index(t) >= 0; }

enum { K_PARAM, K_INPUT, K_CONST, K_OP };

/* Parameters are leaves that require a gradient; inputs other persistent
 * leaves; constants are temporaries that were not recorded (ad_scalar, or
 * an op whose inputs needed no gradient). */
static int kind_of(const ad_tensor *t) {
  if (is_recorded(t)) return K_OP;
  if (!ad_tensor_is_temporary(t)) return ad_tensor_requires_grad(t) ? K_PARAM : K_INPUT;
  return K_CONST;
}

static const char *const kind_word[] = {"parameter", "input", "constant", "op"};
static const char *const kind_short[] = {"param", "input", "const", "op"};

/* The live entry for t, or NULL. Entries of temporaries from an earlier
 * tape generation (the address was reused) do not count. */
static name_ent *name_find(const ad_graph *g, const ad_tensor *t) {
  name_ent *e = NULL;
  if (g) HASH_FIND_PTR(g->names, &t, e);
  if (!e) return NULL;
  bool pers = !ad_tensor_is_temporary(t);
  if (e->persistent != pers || (!pers && e->gen != ad_tensor_generation(t))) return NULL;
  return e;
}

/* Stores name for t, reusing a stale or removed entry. */
static bool name_store(ad_graph *g, const ad_tensor *t, const char *name) {
  ad_ctx *ctx = g->ctx;
  size_t len = strlen(name) + 1;
  char *s = galloc(ctx, len);
  if (!s) return false;
  memcpy(s, name, len);
  name_ent *e;
  HASH_FIND_PTR(g->names, &t, e);
  if (!e) {
    if (!(e = galloc(ctx, sizeof *e))) goto oom;
    *e = (name_ent){.t = t};
    HASH_ADD_PTR(g->names, t, e);
    if (e->oom) {
      ad_free(ctx, e, sizeof *e);
      goto oom;
    }
  }
  free_name(ctx, e);
  e->name = s;
  e->persistent = !ad_tensor_is_temporary(t);
  e->gen = ad_tensor_generation(t);
  return true;
oom:
  ad_free(ctx, s, len);
  return false;
}

ad_status ad_graph_name(ad_graph *g, const ad_tensor *t, const char *name) {
  if (!g) return AD_ERR_NULL;
  if (!t) return ad_set_null_error(g->ctx, "graph_name: tensor is NULL");
  if (!ad_tensor_is_valid(t))
    return ad_set_error(g->ctx, AD_ERR_ARG, "graph_name: not a tensor (freed?)");
  /* its address could later be one of g's context's tensors */
  if (ad_tensor_ctx(t) != g->ctx)
    return ad_set_error(g->ctx, AD_ERR_ARG, "graph_name: the tensor belongs to another context");
  if (!name || !name[0]) {
    name_ent *e = name_find(g, t);
    if (e) free_name(g->ctx, e);
    return AD_OK;
  }
  if (!name_store(g, t, name))
    return ad_set_error(g->ctx, AD_ERR_OOM, "graph_name: out of memory naming '%s'", name);
  return AD_OK;
}

/* The name shown for t: the name given in g, else the tensor's own name
 * (ad_tensor_set_name); for a recorded op "<op>_<tape index>";
 * for a leaf a made-up "param1", "input2", "const3" (kept in g so trace and
 * dump agree), or with no graph the kind of leaf. */
static const char *tensor_name(ad_graph *g, const ad_tensor *t, char *buf, size_t n) {
  name_ent *e = name_find(g, t);
  if (e && e->name) return e->name;
  const char *own = ad_tensor_name(t);
  if (own) return own;
  int k = kind_of(t);
  if (k == K_OP) {
    const ad_op_def *def = ad_op_get(ad_tensor_ctx(t), ad_tensor_op(t));
    snprintf(buf, n, "%s_%d", def ? def->name : "op", (int)ad_tensor_tape_index(t));
    return buf;
  }
  if (!g) return kind_word[k];
  snprintf(buf, n, "%s%d", kind_short[k], g->nauto[k] + 1);
  if (name_store(g, t, buf)) g->nauto[k]++;
  return buf;
}

/* -------------------------------------------------------------- values */

/* Numbers to print: a itself, a / b elementwise, or a / b[0]. */
typedef struct vview {
  const ad_tensor *a, *b;
  int mode;
} vview;

enum { V_PLAIN, V_RATIO, V_RATIO_SCALAR };

/* A local derivative (gin / gout) of 0 prints as 0, never -0: the sign of
 * a zero ratio is the incoming gradient's, not the derivative's. */
static double vget(const vview *v, int64_t i) {
  double x = value_at(v->a, i);
  if (v->mode == V_PLAIN) return x;
  double r = x / value_at(v->b, v->mode == V_RATIO ? i : 0);
  return r == 0 ? 0.0 : r;
}

/* Values are laid out on one line (indent TEXT), or for DOT with the rows
 * of a matrix on lines of their own, indented by indent spaces. */
enum { TEXT = -1 };

static void put_break(FILE *f, int indent) {
  if (indent == TEXT)
    fputc(' ', f);
  else
    fprintf(f, "\\l%*s", indent, "");
}

/* Nested brackets; rows of more than one element each start a line. */
static void put_rec(FILE *f, const vview *v, const ad_tensor *shp, int dim, int64_t off,
                    int indent) {
  int64_t stride = 1;
  for (int i = dim + 1; i < shp->ndim; i++) stride *= shp->shape[i];
  bool rows = dim + 1 < shp->ndim && shp->shape[shp->ndim - 1] > 1;
  fputc('[', f);
  for (int64_t i = 0; i < shp->shape[dim]; i++) {
    if (i) {
      fputc(',', f);
      put_break(f, rows ? indent : TEXT);
    }
    if (dim + 1 == shp->ndim)
      fprintf(f, "%.6g", vget(v, off + i));
    else
      put_rec(f, v, shp, dim + 1, off + i * stride, indent);
  }
  fputc(']', f);
}

/* Values of v laid out in shp's shape: in full up to FULL_MAX elements,
 * else the first few, then min, max and mean. A NaN anywhere makes min and
 * max NaN (as torch.min and torch.max propagate it), so the summary never
 * hides one. */
static void put_vals(FILE *f, const vview *v, const ad_tensor *shp, int indent) {
  if (shp->ndim == 0) {
    fprintf(f, "%.6g", vget(v, 0));
  } else if (shp->size == 0) {
    fputs("[]", f);
  } else if (shp->size <= FULL_MAX) {
    put_rec(f, v, shp, 0, 0, indent);
  } else {
    double lo = vget(v, 0), hi = lo, sum = 0;
    for (int64_t i = 0; i < shp->size; i++) {
      double x = vget(v, i);
      /* once NaN, lo and hi stay NaN: every comparison with it is false */
      lo = x < lo || isnan(x) ? x : lo;
      hi = x > hi || isnan(x) ? x : hi;
      sum += x;
    }
    fprintf(f, "[%.6g, %.6g, %.6g, %.6g, ...]", vget(v, 0), vget(v, 1), vget(v, 2), vget(v, 3));
    put_break(f, indent);
    fprintf(f, "(%lld values: min %.6g, max %.6g, mean %.6g)", (long long)shp->size, lo, hi,
            sum / (double)shp->size);
  }
}

static void put_tensor(FILE *f, const ad_tensor *t, int indent) {
  put_vals(f, &(vview){t, NULL, V_PLAIN}, t, indent);
}

/* The length of the well-formed UTF-8 character at s (1 to 4 bytes), or 0
 * when s starts none (a stray byte, an overlong form, a surrogate). */
static int utf8_len(const unsigned char *s) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  int n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
  unsigned hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
  if (!n || s[1] < lo || s[1] > hi) return 0;
  for (int k = 2; k < n; k++)
    if (s[k] < 0x80 || s[k] > 0xBF) return 0;
  return n;
}

/* Writes s, escaped for a DOT double-quoted string when esc: a newline
 * ends a line; a control character or a byte that is not UTF-8, which
 * Graphviz would refuse or pass on into an invalid SVG, is shown as
 * "\xNN". */
static void put_str(FILE *f, const char *s, bool esc) {
  if (!esc) {
    fputs(s, f);
    return;
  }
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    int n = utf8_len(p);
    if (*p == '"' || *p == '\\')
      fputc('\\', f), fputc(*p++, f);
    else if (*p == '\n')
      fputs("\\l", f), p++;
    else if (!n || *p < 0x20 || *p == 0x7f)
      fprintf(f, "\\\\x%02X", *p++);
    else
      fwrite(p, 1, (size_t)n, f), p += n;
  }
}

static void put_esc(FILE *f, const char *s) { put_str(f, s, true); }

/* --------------------------------------------------------- rules
 * An op's definition names its inputs (inputs[k]; a variadic op's
 * inputs[0] names them all) and gives each input's contribution (grads[k]),
 * so the rule for input k reads "dV += <grads[k]>" with V its name. */

#define VAR_LEN 12

typedef struct rule_map {
  char outvar[VAR_LEN]; /* the output's name in the math: its first word */
  const ad_op_def *def; /* NULL: no rule */
  int n;                /* inputs of the call */
  bool mapped;          /* every input has a name */
  bool has_backward;
} rule_map;

/* Input k's name, NULL if the op gives none. A fixed-arity op names each
 * input; a variadic op's inputs[0] and grads[0] hold for every input. */
static const char *rm_var(const rule_map *rm, int k) {
  if (!rm->def || k < 0 || k >= rm->n) return NULL;
  return rm->def->inputs[rm->def->arity < 0 ? 0 : k];
}
/* Input k's contribution, NULL for none. */
static const char *rm_grad(const rule_map *rm, int k) {
  if (!rm->def || k < 0 || k >= rm->n) return NULL;
  return rm->def->grads[rm->def->arity < 0 ? 0 : k];
}

static void rule_map_of(const ad_op_def *def, int n, rule_map *rm) {
  memset(rm, 0, sizeof *rm);
  /* a fixed arity's inputs are at most AD_MAX_SRC, named in inputs[] */
  if (!def || n < 1 || (def->arity >= 0 && n > AD_MAX_SRC)) return;
  rm->def = def;
  rm->n = n;
  rm->has_backward = def->backward != NULL;
  size_t len = 0;
  while (def->math && isalnum((unsigned char)def->math[len]) && len + 1 < VAR_LEN) len++;
  if (def->math) memcpy(rm->outvar, def->math, len);
  rm->mapped = true;
  for (int k = 0; k < n; k++) rm->mapped &= rm_var(rm, k) != NULL;
}

/* The rule of input k: "dV += ...", or "no gradient to V". */
static void put_rule_k(FILE *f, const rule_map *rm, int k, bool esc) {
  const char *var = rm_var(rm, k), *grad = rm_grad(rm, k);
  if (!var) {
    fputs("(the op gives no rule)", f);
    return;
  }
  fputs(grad ? "d" : "no gradient to ", f);
  put_str(f, var, esc);
  if (grad) {
    fputs(" += ", f);
    put_str(f, grad, esc);
  }
}

/* The whole rule: every input's, "; " between them (a variadic op's once). */
/* text (a rule) with each of its variables replaced by the tensor it
 * stands for in this step: the output's variable by names[0], input k's by
 * names[1 + k]; "d<var>" by "dL/d<name>"; with scalar (not NULL), the
 * scalar attribute's letter (s, p, alpha) by its value. Other words stay. */
static void put_subst(FILE *f, const char *text, const rule_map *rm, const char *const *names,
                      int n, const double *scalar) {
  int depth = 0;
  for (const char *p = text; *p;) {
    if (!(isalpha((unsigned char)*p) || *p == '_')) {
      depth += *p == '(' ? 1 : *p == ')' ? -1 : 0;
      /* the formula ends at a top-level ", " or at two spaces: the rest is
       * a remark ("none for p = 0"), whose letters stay letters */
      if (depth <= 0 && (!strncmp(p, ", ", 2) || !strncmp(p, "  ", 2))) scalar = NULL;
      fputc(*p++, f);
      continue;
    }
    const char *w = p;
    while (isalnum((unsigned char)*p) || *p == '_') p++;
    size_t len = (size_t)(p - w);
    bool d = len > 1 && w[0] == 'd';
    const char *hit = NULL;
    for (int pass = 0; pass < 2 && !hit; pass++) {
      /* pass 0: the word itself is a variable; pass 1: d + a variable */
      const char *word = pass ? w + 1 : w;
      size_t wl = pass ? len - 1 : len;
      if (pass && !d) break;
      if (strlen(rm->outvar) == wl && !strncmp(rm->outvar, word, wl)) hit = names[0];
      for (int k = 0; !hit && k < n; k++) {
        const char *v = rm_var(rm, k);
        if (v && strlen(v) == wl && !strncmp(v, word, wl)) hit = names[1 + k];
      }
      if (hit) fprintf(f, "%s%s", pass ? "dL/d" : "", hit);
    }
    if (!hit && scalar &&
        ((len == 1 && (*w == 's' || *w == 'p')) || (len == 5 && !strncmp(w, "alpha", 5)))) {
      fprintf(f, "%.6g", *scalar);
      continue;
    }
    if (!hit) fwrite(w, 1, len, f);
  }
}

static void put_rule(FILE *f, const ad_op_def *def, const rule_map *rm, int n, bool esc) {
  if (!rm->has_backward || !rm->mapped) {
    fputs("(the op gives no rule)", f);
    return;
  }
  int shown = def && def->arity < 0 ? 1 : n;
  for (int k = 0; k < shown; k++) {
    if (k) fputs("; ", f);
    put_rule_k(f, rm, k, esc);
  }
}

/* How the local derivative d out / d in_k can be shown exactly from the
 * gradients: for a one-element output, gin / gout is the row of the
 * Jacobian; for an elementwise op whose input has the output's shape,
 * gin / gout elementwise is the diagonal. V_PLAIN (0) when neither. */
static int local_mode(const ad_op_def *def, const ad_tensor *in, const ad_tensor *gout,
                      const ad_tensor *gin) {
  if (!gin || !gout) return V_PLAIN;
  if (gout->size == 1) return value_at(gout, 0) != 0 ? V_RATIO_SCALAR : V_PLAIN;
  bool elementwise = def && (def->flags & AD_OP_ELEMENTWISE);
  if (!elementwise || in->ndim != gout->ndim ||
      memcmp(in->shape, gout->shape, (size_t)in->ndim * sizeof *in->shape) ||
      gin->size != gout->size)
    return V_PLAIN;
  for (int64_t i = 0; i < gout->size; i++)
    if (value_at(gout, i) == 0) return V_PLAIN;
  return V_RATIO;
}

/* --------------------------------------------------------- attributes
 * An op's attributes (ad_tensor_attrs), compactly, read through the member
 * its definition names: "stride 1x1 pad 0,0,0,0 dil 1x1 groups 1" for a
 * convolution, "kernel 2x2 stride 1x1 pad 0x0 dil 1x1" for a pooling.
 * Settings at their neutral value that say nothing (a matmul without
 * transposes, zeros of a user op) are left out. */

/* A bounded text buffer: appends past the end are cut off. */
typedef struct sbuf {
  char s[192];
  size_t n;
} sbuf;

static void sb_put(sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void sb_put(sbuf *b, const char *fmt, ...) {
  if (b->n + 1 >= sizeof b->s) return;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(b->s + b->n, sizeof b->s - b->n, fmt, ap);
  va_end(ap);
  if (k > 0) b->n += (size_t)k < sizeof b->s - b->n ? (size_t)k : sizeof b->s - b->n - 1;
}

static void sb_pair(sbuf *b, const char *what, const int64_t *v) {
  sb_put(b, " %s %lldx%lld", what, (long long)v[0], (long long)v[1]);
}

/* The attributes t's op was called with, into out (empty when there is
 * nothing to show). */
static void attrs_str(const ad_op_def *def, const ad_tensor *t, sbuf *out) {
  static const char *const cmp[] = {"eq", "gt", "ge", "lt", "le"};
  sbuf b = {.n = 0};
  b.s[0] = 0;
  out->n = 0;
  out->s[0] = 0;
  const ad_attrs *a = ad_tensor_attrs(t);
  if (!def || !a) return;
  switch (def->attrs) {
  case AD_ATTRS_SCALAR:
    sb_put(&b, " scalar %.6g", a->scalar);
    break;
  case AD_ATTRS_DTYPE:
    sb_put(&b, " to %s", ad_dtype_name(a->dtype));
    break;
  case AD_ATTRS_CMP:
    sb_put(&b, " %s", (unsigned)a->cmp < 5 ? cmp[a->cmp] : "?");
    break;
  case AD_ATTRS_AXIS:
    sb_put(&b, " axis %d", a->axis);
    break;
  case AD_ATTRS_ROWS:
    sb_put(&b, " rows %lld", (long long)a->rows);
    break;
  case AD_ATTRS_INDEX:
    sb_put(&b, " rows %lld", (long long)a->index.rows);
    if (a->index.axis) sb_put(&b, " axis %d", a->index.axis);
    break;
  case AD_ATTRS_MATMUL:
    if (a->matmul.trans_a) sb_put(&b, " A^T");
    if (a->matmul.trans_b) sb_put(&b, " B^T");
    break;
  case AD_ATTRS_REDUCE:
    sb_put(&b, " axes ");
    if (!a->reduce.axes) sb_put(&b, "none");
    for (int k = 0, first = 1; k < 32; k++)
      if (a->reduce.axes >> k & 1u) sb_put(&b, "%s%d", first ? "" : ",", k), first = 0;
    if (a->reduce.keepdim) sb_put(&b, " keepdim");
    break;
  case AD_ATTRS_NARROW:
    sb_put(&b, " axis %d start %lld len %lld", a->narrow.axis, (long long)a->narrow.start,
           (long long)a->narrow.len);
    break;
  case AD_ATTRS_PAD:
    sb_put(&b, " axis %d before %lld after %lld", a->pad.axis, (long long)a->pad.before,
           (long long)a->pad.after);
    break;
  case AD_ATTRS_SHAPE:
    sb_put(&b, " shape [");
    for (int k = 0; k < a->shape.ndim && k < AD_MAX_DIMS; k++)
      sb_put(&b, "%s%lld", k ? "," : "", (long long)a->shape.dims[k]);
    sb_put(&b, "]");
    break;
  case AD_ATTRS_PERMUTE:
    sb_put(&b, " perm ");
    for (int k = 0; k < a->permute.ndim && k < AD_MAX_DIMS; k++)
      sb_put(&b, "%s%d", k ? "," : "", a->permute.perm[k]);
    break;
  case AD_ATTRS_CONV: {
    const ad_conv_attrs *c = &a->conv;
    sb_pair(&b, "stride", c->stride);
    if (c->same)
      sb_put(&b, " pad same");
    else
      sb_put(&b, " pad %lld,%lld,%lld,%lld", (long long)c->padding[0], (long long)c->padding[1],
             (long long)c->padding[2], (long long)c->padding[3]);
    sb_pair(&b, "dil", c->dilation);
    sb_put(&b, " groups %lld", (long long)c->groups);
    if (c->output_padding[0] || c->output_padding[1])
      sb_pair(&b, "output_padding", c->output_padding);
    if (c->kernel[0] || c->kernel[1]) sb_pair(&b, "kernel", c->kernel);
    break;
  }
  case AD_ATTRS_POOL: {
    const ad_pool_attrs *p = &a->pool;
    sb_pair(&b, "kernel", p->kernel);
    sb_pair(&b, "stride", p->stride);
    sb_pair(&b, "pad", p->padding);
    sb_pair(&b, "dil", p->dilation);
    if (p->ceil_mode) sb_put(&b, " ceil_mode");
    if (p->count_include_pad && !strncmp(def->name, "avg", 3)) /* max pooling ignores it */
      sb_put(&b, " count_include_pad");
    if (p->in_size[0] || p->in_size[1]) sb_pair(&b, "in_size", p->in_size);
    if (p->adaptive) sb_put(&b, " adaptive");
    break;
  }
  case AD_ATTRS_ATTENTION:
    sb_put(&b, " scale %.6g%s", a->attention.scale, a->attention.causal ? " causal" : "");
    break;
  case AD_ATTRS_EMBEDDING:
    if (a->embedding.padding) sb_put(&b, " padding_idx %lld", (long long)a->embedding.padding_idx);
    if (a->embedding.scale_grad_by_freq) sb_put(&b, " scale_grad_by_freq");
    break;
  case AD_ATTRS_LAYER_NORM:
    sb_put(&b, " normalized_shape [");
    for (int k = 0; k < a->layer_norm.ndim && k < AD_MAX_DIMS; k++)
      sb_put(&b, "%s%lld", k ? "," : "", (long long)a->layer_norm.dims[k]);
    sb_put(&b, "] eps %.6g", a->layer_norm.eps);
    break;
  case AD_ATTRS_CROSS_ENTROPY:
    if (a->cross_entropy.ignore) sb_put(&b, " ignore_index %d", (int)a->cross_entropy.ignore_index);
    if (a->cross_entropy.sum) sb_put(&b, " sum");
    break;
  case AD_ATTRS_CLAMP:
    sb_put(&b, " lo %.6g hi %.6g%s", a->clamp.lo, a->clamp.hi, a->clamp.inner ? " hardtanh" : "");
    break;
  case AD_ATTRS_PAD_ND: {
    static const char *const modes[] = {"constant", "reflect", "replicate", "circular"};
    sb_put(&b, " pad (");
    for (int k = 0; k < 2 * a->pad_nd.n && k < 6; k++)
      sb_put(&b, "%s%lld", k ? "," : "", (long long)a->pad_nd.pad[k]);
    sb_put(&b, ") %s", (unsigned)a->pad_nd.mode < 4 ? modes[a->pad_nd.mode] : "?");
    if (a->pad_nd.mode == AD_PAD_CONSTANT && a->pad_nd.value != 0)
      sb_put(&b, " value %.6g", a->pad_nd.value);
    break;
  }
  case AD_ATTRS_ELU:
    sb_put(&b, " alpha %.9g scale %.9g input_scale %.9g", a->elu.alpha, a->elu.scale,
           a->elu.input_scale);
    if (a->elu.grad_input_scale != a->elu.input_scale)
      sb_put(&b, " grad_input_scale %.9g", a->elu.grad_input_scale);
    break;
  case AD_ATTRS_COSINE:
    sb_put(&b, " axis %d eps %.6g", a->cosine.axis, a->cosine.eps);
    break;
  case AD_ATTRS_THRESHOLD:
    sb_put(&b, " threshold %.9g value %.9g", a->threshold.threshold, a->threshold.value);
    break;
  case AD_ATTRS_USER:
    for (int k = 0; k < 6; k++)
      if (a->user.i[k]) sb_put(&b, " i%d %lld", k, (long long)a->user.i[k]);
    for (int k = 0; k < 4; k++)
      if (a->user.f[k] != 0) sb_put(&b, " f%d %.6g", k, a->user.f[k]);
    break;
  default:
    break;
  }
  if (b.n) sb_put(out, "%s", b.s + 1); /* without the leading space */
}

/* ------------------------------------------------------------ in words
 * The local rule of the convolution and pooling ops explained for a
 * student, one sentence per line, for the trace. The op table's grads
 * strings say what is computed; these say why. Keyed by the built-in op's
 * name; an op not listed (a user op) gets none. */

typedef struct words {
  const char *op;
  const char *text[10]; /* lines; NULL ends */
} words;

static const words op_words[] = {
    {"conv2d",
     {"forward: the kernel w slides over x; each output pixel is the sum of w times the x",
      "patch under it (a correlation: the kernel is not flipped).",
      "dx: an x pixel lies in the windows of several output pixels and met a different weight",
      "in each, so it collects the sum of dy times that weight: a transposed convolution (with",
      "stride 1 and no padding, the kernel flipped and slid over dy padded with zeros: the",
      "full convolution of dy with w).",
      "dw: w[o,c,u,v] met the pixel at offset (u,v) of every window, so it collects the sum of",
      "that pixel times dy: the correlation of x with dy. db: b was added to every output",
      "pixel of its channel, so it collects the sum of dy."}},
    {"conv_transpose2d",
     {"forward: each x pixel stamps a copy of the kernel, scaled by its value, into y (overlaps",
      "add): the transpose of conv2d.",
      "dx: the stamp of an x pixel covered one kernel-sized window of y, so it collects dy over",
      "that window times w: an ordinary convolution (correlation) of dy with w.",
      "dw: w[c,o,u,v] joined every x pixel to the y pixel at offset (u,v) of its stamp: the",
      "correlation of dy with x. db: b was added to every output pixel, so it sums dy."}},
    {"conv2d_weight",
     {"forward: the weight gradient of a conv2d, the correlation of x with g (each weight sums",
      "x pixel times g over every window).",
      "it is linear in each input: dx spreads dy (kernel-shaped) back over the pixels through",
      "g, a transposed convolution; dg correlates x with dy, a conv2d of x with dy as kernel."}},
    {"max_pool2d",
     {"forward: each window passes on only its largest element.",
      "dx: so only that element (its argmax) changed the output: it gets the window's dy, the",
      "others 0. On a tie the first maximum in row-major order wins (as PyTorch); an element",
      "that is the maximum of several overlapping windows adds their dy."}},
    {"max_pool2d_backward",
     {"forward: routes each window's g to its argmax in x (overlapping windows add).",
      "dg: the routing is linear in g: each window reads dy back at its argmax.",
      "x only picks the positions, which do not move for a small change: no gradient."}},
    {"max_pool2d_select",
     {"forward: reads g at each window's argmax in x.",
      "dg: the transpose: each window's dy goes back to its argmax (overlaps add).",
      "x only picks the positions: no gradient."}},
    {"avg_pool2d",
     {"forward: each window passes on the mean of its elements.",
      "dx: each element counts 1/divisor in the mean of every window that covers it, so it gets",
      "dy / divisor from each of them."}},
    {"avg_pool2d_backward",
     {"forward: spreads each window's g evenly over it, g / divisor per element.",
      "dg: linear, and its transpose averages dy over each window: an avg_pool2d."}},
};

static const words *words_of(const ad_op_def *def) {
  if (!def || !def->name || (def->attrs != AD_ATTRS_CONV && def->attrs != AD_ATTRS_POOL))
    return NULL;
  for (size_t i = 0; i < sizeof op_words / sizeof *op_words; i++)
    if (!strcmp(op_words[i].op, def->name)) return &op_words[i];
  return NULL;
}

/* --------------------------------------------------------------- trace */

/* The labels of group and the groups enclosing it, outermost first:
 * "lstm.l0 / t=3". */
static void put_scope_path(FILE *f, ad_ctx *ctx, int group, bool esc) {
  int parent = ad_scope_parent(ctx, group);
  if (parent >= 0) {
    put_scope_path(f, ctx, parent, esc);
    fputs(" / ", f);
  }
  put_str(f, ad_scope_label(ctx, group), esc);
}

/* Traces one backward step: out's n inputs in[] got gin[] (NULL: none). */
static void trace_step(ad_graph *g, const ad_tensor *out, const ad_tensor *gout, int nin,
                       ad_tensor *const *in, const ad_tensor *const *gin) {
  FILE *f = g->trace;
  const ad_op_def *def = ad_op_get(g->ctx, ad_tensor_op(out));
  rule_map rm;
  rule_map_of(def, nin, &rm);
  char ob[64], ib[64], sb[64];
  const char *oname = tensor_name(g, out, ob, sizeof ob);

  if (g->step == 0)
    fprintf(f, "%sbackward pass %d: from %s, ops in reverse tape order\n", g->pass > 1 ? "\n" : "",
            g->pass, oname);
  fprintf(f, "\nstep %d: %s = %s(", ++g->step, oname, def ? def->name : "?");
  for (int k = 0; k < nin; k++)
    fprintf(f, "%s%s", k ? ", " : "", tensor_name(g, in[k], ib, sizeof ib));
  fprintf(f, ")  %s %s\n", ad_shape_str(out, sb, sizeof sb), ad_dtype_name(out->dtype));
  int scope = ad_tensor_scope(out);
  if (scope >= 0) {
    fputs("  scope      ", f);
    put_scope_path(f, g->ctx, scope, false);
    fputc('\n', f);
  }
  sbuf at;
  attrs_str(def, out, &at);
  if (at.n) fprintf(f, "  attrs      %s\n", at.s);
  fprintf(f, "  incoming   dL/d%s = ", oname);
  put_tensor(f, gout, TEXT);
  fputs("\n  rule       ", f);
  put_rule(f, def, &rm, nin, false);
  fputc('\n', f);
  if (rm.outvar[0] && rm.mapped && rm.has_backward && def->arity >= 0) {
    /* the rule with this step's tensors in place of its variables, all
     * replaced at once, so a tensor named like a variable ("y") cannot be
     * mistaken for it */
    const char *names[1 + AD_MAX_SRC];
    char nb[1 + AD_MAX_SRC][64];
    names[0] = oname;
    int nv = nin < AD_MAX_SRC ? nin : AD_MAX_SRC;
    for (int k = 0; k < nv; k++) names[1 + k] = tensor_name(g, in[k], nb[1 + k], sizeof nb[1 + k]);
    const ad_attrs *at_v = ad_tensor_attrs(out);
    const double *scalar = def->attrs == AD_ATTRS_SCALAR && at_v ? &at_v->scalar : NULL;
    fputs("  here       ", f);
    for (int k = 0; k < nv; k++) {
      if (k) fputs("; ", f);
      const char *grad = rm_grad(&rm, k);
      if (grad) {
        fprintf(f, "dL/d%s += ", names[1 + k]);
        put_subst(f, grad, &rm, names, nv, scalar);
      } else {
        fprintf(f, "no gradient to %s", names[1 + k]);
      }
    }
    fputc('\n', f);
  }
  const words *w = words_of(def);
  for (int i = 0; w && i < 10 && w->text[i]; i++)
    fprintf(f, "  %-10s %s\n", i ? "" : "in words", w->text[i]);
  for (int k = 0; k < nin; k++) {
    const char *iname = tensor_name(g, in[k], ib, sizeof ib);
    if (!gin[k]) {
      fprintf(f, "  -> %-7s no gradient (%s)\n", iname,
              ad_tensor_requires_grad(in[k]) ? "the op sends none" : "none needed");
      continue;
    }
    int mode = local_mode(def, in[k], gout, gin[k]);
    if (mode != V_PLAIN) {
      fprintf(f, "  -> %-7s local d%s/d%s = ", iname, oname, iname);
      put_vals(f, &(vview){gin[k], gout, mode}, in[k], TEXT);
      fprintf(f, "\n             dL/d%s += dL/d%s * local = ", iname, oname);
    } else {
      fprintf(f, "  -> %-7s dL/d%s += ", iname, iname);
    }
    put_tensor(f, gin[k], TEXT);
    fputc('\n', f);
  }
}

/* The record of out, new or (a second pass over the same tape) emptied;
 * NULL if it cannot be made. */
static step_rec *rec_put(ad_graph *g, const ad_tensor *out, int n) {
  ad_ctx *ctx = g->ctx;
  step_rec *r;
  HASH_FIND_PTR(g->recs, &out, r);
  if (r) {
    free_snaps(ctx, r);
    if (r->cap >= n) return r;
    HASH_DEL(g->recs, r); /* the same op has the same inputs; made anew all the same */
    ad_free(ctx, r, rec_bytes(r->cap));
  }
  if (!(r = galloc(ctx, rec_bytes(n)))) return NULL;
  memset(r, 0, rec_bytes(n));
  r->out = out;
  r->cap = n;
  HASH_ADD_PTR(g->recs, out, r);
  if (!r->oom) return r;
  ad_free(ctx, r, rec_bytes(n));
  return NULL;
}

static void graph_hook(void *ud, const ad_backward_step *st) {
  ad_graph *g = ud;
  ad_ctx *ctx = g->ctx;
  const ad_tensor *out = st->out, *gout = st->gout;
  int n = st->n;
  int64_t idx = ad_tensor_tape_index(out);
  if (g->rec_gen != ad_tape_generation(ctx)) { /* a new step: earlier records are gone */
    clear_recs(g);
    g->rec_gen = ad_tape_generation(ctx);
    g->last_idx = -1;
  }
  if (idx >= g->last_idx) { /* backward walks down the tape: this is a new pass */
    g->pass++;
    g->step = 0;
  }
  g->last_idx = idx;

  step_rec *r = rec_put(g, out, n);
  if (!r) g->lost = true;
  /* what each input got; a contribution stored straight into a grad is in
   * the grad now, and later ones would change it, so the record keeps a
   * copy (the grad itself if none can be made) */
  const ad_tensor *gin_s[AD_MAX_SRC], **gin = gin_s;
  if (n > AD_MAX_SRC) { /* a variadic op's: the trace needs them in one array */
    gin = galloc(ctx, (size_t)n * sizeof *gin);
    if (!gin) g->lost = true;
  }
  for (int k = 0; k < n; k++) {
    const ad_tensor *gk = st->gin[k];
    if (!gk && st->direct[k]) {
      gk = st->in[k]->grad;
      const ad_tensor *copy = r ? snapshot(ctx, r, k, gk) : NULL;
      if (copy)
        gk = copy;
      else if (r)
        g->lost = true;
    }
    if (r) r->in[k].gin = gk;
    if (gin) gin[k] = gk;
  }
  if (r) {
    r->gout = gout;
    r->n = n;
  }
  if (g->trace && gin) {
    trace_step(g, out, gout, n, st->in, gin);
    fflush(g->trace);
  }
  if (gin != gin_s) ad_free(ctx, (void *)gin, (size_t)n * sizeof *gin);
  if (g->prev_hook) g->prev_hook(g->prev_ud, st);
}

ad_status ad_graph_trace_begin(ad_graph *g, FILE *f) {
  if (!g) return AD_ERR_NULL;
  if (g->tracing) return ad_set_error(g->ctx, AD_ERR_STATE, "graph_trace_begin: already tracing");
  ad_get_backward_hook(g->ctx, &g->prev_hook, &g->prev_ud);
  g->trace = f;
  g->tracing = true;
  g->lost = false;
  g->pass = 0;
  g->step = 0;
  g->last_idx = -1; /* the first step starts pass 1 */
  ad_set_backward_hook(g->ctx, graph_hook, g);
  return AD_OK;
}

ad_status ad_graph_trace_end(ad_graph *g) {
  if (!g) return AD_ERR_NULL;
  if (!g->tracing) return AD_OK;
  ad_ctx *ctx = g->ctx;
  ad_backward_hook hook;
  void *hook_ud;
  ad_get_backward_hook(ctx, &hook, &hook_ud);
  if (hook == graph_hook && hook_ud == g) {
    ad_set_backward_hook(ctx, g->prev_hook, g->prev_ud);
  } else if (hook == graph_hook) {
    /* another graph traces on top of us: unlink g from its chain */
    for (ad_graph *h = hook_ud; h; h = h->prev_hook == graph_hook ? h->prev_ud : NULL) {
      if (h->prev_hook == graph_hook && h->prev_ud == g) {
        h->prev_hook = g->prev_hook;
        h->prev_ud = g->prev_ud;
        break;
      }
    }
  }
  bool io = g->trace && ferror(g->trace); /* the hook flushed every step */
  g->tracing = false;
  g->trace = NULL;
  g->prev_hook = NULL;
  g->prev_ud = NULL;
  if (g->lost) {
    g->lost = false;
    return ad_set_error(ctx, AD_ERR_OOM,
                        "graph_trace_end: out of memory; some steps were not "
                        "recorded for ad_graph_dot");
  }
  if (io) return ad_set_error(ctx, AD_ERR_IO, "graph_trace_end: write error on the trace");
  return AD_OK;
}

/* --------------------------------------------------------------- dot */

static const step_rec *rec_of(const ad_graph *g, const ad_tensor *t) {
  step_rec *r = NULL;
  if (g && g->rec_gen == ad_tape_generation(g->ctx)) HASH_FIND_PTR(g->recs, &t, r);
  return r;
}

/* The gradient known for t: its grad field (leaves, retained
 * intermediates), else what a traced pass sent into it. */
static const ad_tensor *grad_of(const ad_graph *g, const ad_tensor *t) {
  if (t->grad) return t->grad;
  const step_rec *s = rec_of(g, t);
  return s ? s->gout : NULL;
}

/* The node of t, whose inputs (an op's) are in[0..nin-1]. */
static void dot_node(FILE *f, ad_graph *g, const ad_tensor *t, ad_tensor *const *in, int nin,
                     int id, bool is_root) {
  static const char *const style[] = {
      "shape=box, style=\"filled,bold\", color=\"#1f5fa8\", fillcolor=\"#d6e9ff\"",
      "shape=note, style=filled, color=\"#555555\", fillcolor=\"#eeeeee\"",
      "shape=box, style=\"filled,dashed\", color=\"#777777\", fillcolor=\"#f8f8f8\"",
      "shape=box, style=\"rounded,filled\", color=\"#9a6b00\", fillcolor=\"#fff3d6\"",
  };
  char nb[64], ib[64], sb[64];
  int k = kind_of(t);
  const char *name = tensor_name(g, t, nb, sizeof nb);
  fprintf(f, "  n%d [%s%s, label=\"", id, style[k], is_root ? ", peripheries=2" : "");
  put_esc(f, name);
  if (k == K_OP) {
    const ad_op_def *def = ad_op_get(ad_tensor_ctx(t), ad_tensor_op(t));
    fputs(" = ", f);
    put_esc(f, def ? def->name : "?");
    fputc('(', f);
    for (int i = 0; i < nin; i++) {
      if (i) fputs(", ", f);
      put_esc(f, tensor_name(g, in[i], ib, sizeof ib));
    }
    fputc(')', f);
    sbuf at;
    attrs_str(def, t, &at);
    if (at.n) {
      fputs("\\l", f);
      put_esc(f, at.s);
    }
  } else if (name != kind_word[k]) { /* no graph: the name is the kind */
    fprintf(f, "  (%s)", kind_word[k]);
  }
  fprintf(f, "\\l%s %s\\lvalue ", ad_shape_str(t, sb, sizeof sb), ad_dtype_name(t->dtype));
  put_tensor(f, t, 7);
  const ad_tensor *gr = grad_of(g, t);
  if (gr) {
    fputs("\\ldL/d", f);
    put_esc(f, name);
    fputs(" = ", f);
    put_tensor(f, gr, (int)strlen(name) + 8);
  }
  fputs("\\l\"];\n", f);
}

/* The edge from in[k] (node from) to out (node to), which has n inputs. */
static void dot_edge(FILE *f, ad_graph *g, const ad_tensor *out, ad_tensor *const *in, int k, int n,
                     int from, int to, int flags) {
  const ad_op_def *def = ad_op_get(ad_tensor_ctx(out), ad_tensor_op(out));
  rule_map rm;
  rule_map_of(def, n, &rm);
  fprintf(f, "  n%d -> n%d", from, to);
  if (!(flags & AD_DOT_BACKWARD)) {
    if (n > 1 && rm_var(&rm, k)) {
      fputs(" [label=\" ", f);
      put_esc(f, rm_var(&rm, k));
      fputs(" \"]", f);
    }
    fputs(";\n", f);
    return;
  }
  const step_rec *s = rec_of(g, out);
  const ad_tensor *gin = s && k < s->n ? s->in[k].gin : NULL;
  char ob[64], ib[64];
  const char *oname = tensor_name(g, out, ob, sizeof ob);
  const char *iname = tensor_name(g, in[k], ib, sizeof ib);
  fputs(" [dir=back, color=\"#b03020\", fontcolor=\"#b03020\", label=\"", f);
  put_rule_k(f, &rm, k, true);
  if (s && !gin) {
    fputs("\\l(no gradient sent)", f);
  } else if (gin) {
    int mode = local_mode(def, in[k], s->gout, gin);
    if (mode != V_PLAIN) {
      fputs("\\llocal d", f);
      put_esc(f, oname);
      fputs("/d", f);
      put_esc(f, iname);
      fputs(" = ", f);
      put_vals(f, &(vview){gin, s->gout, mode}, in[k], (int)(strlen(oname) + strlen(iname)) + 13);
    }
    fputs("\\lsends dL/d", f);
    put_esc(f, iname);
    fputs(" += ", f);
    put_tensor(f, gin, (int)strlen(iname) + 15);
  }
  fputs("\\l\"];\n", f);
}

/* A tensor reaching the root, and its node number once placed. */
typedef struct vert {
  ad_tensor *t; /* key */
  int id;       /* -1 until placed */
  int scope;    /* ad_tensor_scope */
  struct vert *next_in_scope;
  bool oom;
  UT_hash_handle hh;
} vert;

static vert *vert_find(vert *set, const ad_tensor *t) {
  vert *v;
  HASH_FIND_PTR(set, &t, v);
  return v;
}

static bool vert_add(ad_ctx *ctx, vert **set, ad_tensor *t) {
  vert *v = galloc(ctx, sizeof *v);
  if (!v) return false;
  *v = (vert){.t = t, .id = -1};
  HASH_ADD_PTR(*set, t, v);
  if (!v->oom) return true;
  ad_free(ctx, v, sizeof *v);
  return false;
}

static int by_tape(const vert *a, const vert *b) {
  int64_t x = ad_tensor_tape_index(a->t), y = ad_tensor_tape_index(b->t);
  return (x > y) - (x < y);
}

/* t's inputs (ad_tensor_inputs) in *buf, grown as needed (*cap entries);
 * -1 when it cannot grow. */
static int inputs_of(ad_ctx *ctx, const ad_tensor *t, ad_tensor ***buf, int *cap) {
  int n = ad_tensor_inputs(t, NULL, 0);
  if (n > *cap) {
    ad_tensor **p = galloc(ctx, (size_t)n * sizeof *p);
    if (!p) return -1;
    if (*buf) ad_free(ctx, *buf, (size_t)*cap * sizeof **buf);
    *buf = p;
    *cap = n;
  }
  return ad_tensor_inputs(t, *buf, n);
}

/* Numbers v and writes its node (whose inputs are in[0..nin-1]). */
static void place(FILE *f, ad_graph *g, vert *v, ad_tensor *const *in, int nin, int *id,
                  const ad_tensor *root) {
  v->id = (*id)++;
  dot_node(f, g, v->t, in, nin, v->id, v->t == root);
}

/* --------------------------------------------------------- scope groups
 * Ops recorded inside ad_scope_push / ad_scope_pop are drawn grouped: as
 * Graphviz clusters nested like the scopes around the usual nodes, or
 * (AD_DOT_COLLAPSE) as one box per group with edges where tensors cross
 * from one group to another. Leaves, constants and ops outside every scope
 * are drawn as without scopes. */

typedef struct group {
  vert *head, *tail;  /* the group's own ops, in tape order */
  int child, sibling; /* first group inside it, next one of the same parent; -1: none */
  bool shown;         /* it or a group inside it has an op in the dump */
} group;

/* The groups of ctx, with set's ops (in tape order) filed under their own
 * group. NULL on OOM. */
static group *groups_make(ad_ctx *ctx, vert *set, int n) {
  group *gs = galloc(ctx, (size_t)n * sizeof *gs);
  if (!gs) return NULL;
  for (int i = 0; i < n; i++) gs[i] = (group){.child = -1, .sibling = -1};
  for (int i = n - 1; i >= 0; i--) { /* prepending in reverse: children in id order */
    int p = ad_scope_parent(ctx, i);
    if (p >= 0) {
      gs[i].sibling = gs[p].child;
      gs[p].child = i;
    }
  }
  for (vert *v = set; v; v = v->hh.next) {
    if (v->scope < 0) continue;
    group *gr = &gs[v->scope];
    if (gr->tail)
      gr->tail->next_in_scope = v;
    else
      gr->head = v;
    gr->tail = v;
    for (int p = v->scope; p >= 0 && !gs[p].shown; p = ad_scope_parent(ctx, p)) gs[p].shown = true;
  }
  return gs;
}

static void cluster_open(FILE *f, ad_ctx *ctx, int gi, int ind) {
  fprintf(f, "%*ssubgraph cluster_g%d {\n%*s  label=\"", ind, "", gi, ind, "");
  put_esc(f, ad_scope_label(ctx, gi));
  fprintf(f, "\"; labeljust=l; style=rounded; color=\"#7a7a7a\";\n");
}

/* Group gi as a cluster listing its ops' nodes, its inner groups nested. */
static void dot_cluster(FILE *f, ad_ctx *ctx, const group *gs, int gi, int ind) {
  cluster_open(f, ctx, gi, ind);
  if (gs[gi].head) {
    fprintf(f, "%*s ", ind, "");
    for (const vert *v = gs[gi].head; v; v = v->next_in_scope) fprintf(f, " n%d;", v->id);
    fputc('\n', f);
  }
  for (int c = gs[gi].child; c >= 0; c = gs[c].sibling)
    if (gs[c].shown) dot_cluster(f, ctx, gs, c, ind + 2);
  fprintf(f, "%*s}\n", ind, "");
}

/* Group gi's own ops as one box: its label, then how many ops of which
 * kind, in order of first appearance ("4 ops: matmul x2, add, tanh"). */
static void dot_box(FILE *f, ad_ctx *ctx, const group *gs, int gi, int ind, const ad_tensor *root) {
  enum { KINDS = 24 };
  int op[KINDS], cnt[KINDS], nk = 0, nops = 0;
  bool more = false, has_root = false;
  for (const vert *v = gs[gi].head; v; v = v->next_in_scope) {
    int o = ad_tensor_op(v->t), k = 0;
    nops++;
    has_root |= v->t == root;
    while (k < nk && op[k] != o) k++;
    if (k == nk && nk < KINDS) op[nk] = o, cnt[nk++] = 0;
    if (k < nk)
      cnt[k]++;
    else
      more = true;
  }
  fprintf(f,
          "%*sg%d [shape=box, style=\"rounded,filled,bold\", color=\"#9a6b00\", "
          "fillcolor=\"#ffe7b0\"%s, label=\"",
          ind, "", gi, has_root ? ", peripheries=2" : "");
  put_esc(f, ad_scope_label(ctx, gi));
  fprintf(f, "\\l%d op%s:", nops, nops == 1 ? "" : "s");
  for (int k = 0; k < nk; k++) {
    const ad_op_def *def = ad_op_get(ctx, op[k]);
    fputs(k ? ", " : " ", f);
    put_esc(f, def ? def->name : "?");
    if (cnt[k] > 1) fprintf(f, " x%d", cnt[k]);
  }
  fprintf(f, "%s\\l\"];\n", more ? ", ..." : "");
}

/* Group gi collapsed: its box, in a cluster with its inner groups when it
 * has any. */
static void dot_collapsed_group(FILE *f, ad_ctx *ctx, const group *gs, int gi, int ind,
                                const ad_tensor *root) {
  bool inner = false;
  for (int c = gs[gi].child; c >= 0; c = gs[c].sibling) inner |= gs[c].shown;
  if (!inner) {
    dot_box(f, ctx, gs, gi, ind, root);
    return;
  }
  cluster_open(f, ctx, gi, ind);
  if (gs[gi].head) dot_box(f, ctx, gs, gi, ind + 2, root);
  for (int c = gs[gi].child; c >= 0; c = gs[c].sibling)
    if (gs[c].shown) dot_collapsed_group(f, ctx, gs, c, ind + 2, root);
  fprintf(f, "%*s}\n", ind, "");
}

/* An edge of the collapsed view between a box and a box or a node;
 * endpoints are node numbers, or -1 - group for a box. */
typedef struct bedge {
  struct {
    int from, to;
  } key;
  int tensors; /* distinct tensors that flow along it */
  bool oom;
  UT_hash_handle hh;
} bedge;

/* A tensor seen flowing into endpoint to, so it is counted once per edge. */
typedef struct bflow {
  struct {
    const ad_tensor *t;
    int to;
  } key;
  bool oom;
  UT_hash_handle hh;
} bflow;

static int endpoint(const vert *v) { return v->scope >= 0 ? -1 - v->scope : v->id; }

static void put_endpoint(FILE *f, int e) {
  if (e >= 0)
    fprintf(f, "n%d", e);
  else
    fprintf(f, "g%d", -1 - e);
}

/* Counts tensor t flowing from endpoint a to b; false on OOM. */
static bool bedge_add(ad_ctx *ctx, bedge **edges, bflow **flows, const ad_tensor *t, int a, int b) {
  bflow key, *fl;
  memset(&key, 0, sizeof key);
  key.key.t = t;
  key.key.to = b;
  HASH_FIND(hh, *flows, &key.key, sizeof key.key, fl);
  if (fl) return true;
  if (!(fl = galloc(ctx, sizeof *fl))) return false;
  *fl = key;
  HASH_ADD(hh, *flows, key, sizeof fl->key, fl);
  if (fl->oom) {
    ad_free(ctx, fl, sizeof *fl);
    return false;
  }
  bedge ek, *e;
  memset(&ek, 0, sizeof ek);
  ek.key.from = a;
  ek.key.to = b;
  HASH_FIND(hh, *edges, &ek.key, sizeof ek.key, e);
  if (!e) {
    if (!(e = galloc(ctx, sizeof *e))) return false;
    *e = ek;
    HASH_ADD(hh, *edges, key, sizeof e->key, e);
    if (e->oom) {
      ad_free(ctx, e, sizeof *e);
      return false;
    }
  }
  e->tensors++;
  return true;
}

/* The collapsed view's nodes, boxes and edges (set sorted, in tape order). */
static ad_status dot_collapsed(FILE *f, ad_graph *g, vert *set, const group *gs, int ngroups,
                               ad_tensor *root, int flags) {
  ad_ctx *ctx = ad_tensor_ctx(root);
  int id = 0, cap = 0;
  ad_tensor **in = NULL; /* an op's inputs (inputs_of) */
  bool ok = true;
  for (vert *v = set; v && ok; v = v->hh.next) {
    if (!is_recorded(v->t)) continue;
    int n = inputs_of(ctx, v->t, &in, &cap);
    ok = n >= 0;
    for (int k = 0; k < n; k++) {
      vert *w = vert_find(set, in[k]);
      if (w->id < 0 && !is_recorded(in[k])) place(f, g, w, NULL, 0, &id, root);
    }
    if (ok && v->scope < 0) place(f, g, v, in, n, &id, root);
  }
  for (int i = 0; i < ngroups; i++)
    if (gs[i].shown && ad_scope_parent(ctx, i) < 0) dot_collapsed_group(f, ctx, gs, i, 2, root);
  bedge *edges = NULL, *e, *etmp;
  bflow *flows = NULL, *fl, *ftmp;
  for (vert *v = set; v && ok; v = v->hh.next) {
    int n = inputs_of(ctx, v->t, &in, &cap);
    ok = n >= 0;
    for (int k = 0; k < n && ok; k++) {
      const vert *w = vert_find(set, in[k]);
      int a = endpoint(w), b = endpoint(v);
      if (a >= 0 && b >= 0)
        dot_edge(f, g, v->t, in, k, n, a, b, flags);
      else if (a != b)
        ok = bedge_add(ctx, &edges, &flows, in[k], a, b);
    }
  }
  HASH_ITER(hh, edges, e, etmp) {
    if (ok) {
      fputs("  ", f);
      put_endpoint(f, e->key.from);
      fputs(" -> ", f);
      put_endpoint(f, e->key.to);
      if (flags & AD_DOT_BACKWARD) fputs(" [dir=back, color=\"#b03020\", fontcolor=\"#b03020\"", f);
      if (e->tensors > 1)
        fprintf(f, "%slabel=\" %d tensors \"", flags & AD_DOT_BACKWARD ? ", " : " [", e->tensors);
      if ((flags & AD_DOT_BACKWARD) || e->tensors > 1) fputc(']', f);
      fputs(";\n", f);
    }
    HASH_DEL(edges, e);
    ad_free(ctx, e, sizeof *e);
  }
  HASH_ITER(hh, flows, fl, ftmp) {
    HASH_DEL(flows, fl);
    ad_free(ctx, fl, sizeof *fl);
  }
  if (in) ad_free(ctx, in, (size_t)cap * sizeof *in);
  return ok ? AD_OK : AD_ERR_OOM;
}

ad_status ad_graph_dot(ad_graph *g, FILE *f, ad_tensor *root, int flags) {
  if (!root) return g ? ad_set_null_error(g->ctx, "graph_dot: root is NULL") : AD_ERR_NULL;
  if (!ad_tensor_is_valid(root)) {
    if (g) ad_set_error(g->ctx, AD_ERR_ARG, "graph_dot: root is not a tensor (freed?)");
    return AD_ERR_ARG;
  }
  ad_ctx *ctx = ad_tensor_ctx(root);
  if (g && g->ctx != ctx)
    return ad_set_error(ctx, AD_ERR_ARG, "graph_dot: the graph belongs to another context");
  if (!f) return ad_set_error(ctx, AD_ERR_NULL, "graph_dot: file is NULL");
  if (flags & ~(AD_DOT_BACKWARD | AD_DOT_COLLAPSE))
    return ad_set_error(ctx, AD_ERR_ARG,
                        "graph_dot: unknown flags 0x%x (AD_DOT_BACKWARD, AD_DOT_COLLAPSE)",
                        (unsigned)flags);
  if (ad_tensor_is_temporary(root) && ad_tensor_generation(root) != ad_tape_generation(ctx))
    return ad_set_error(ctx, AD_ERR_STATE, "graph_dot: the root is from a tape that was reset");

  /* every tensor reaching root, breadth first: the walk follows the
   * table's insertion order while it appends inputs seen for the first time */
  vert *set = NULL;
  ad_tensor **in = NULL; /* the inputs of one tensor at a time */
  int cap = 0;
  ad_status st = vert_add(ctx, &set, root) ? AD_OK : AD_ERR_OOM;
  for (vert *v = set; v && st == AD_OK; v = v->hh.next) {
    int n = inputs_of(ctx, v->t, &in, &cap);
    if (n < 0) st = AD_ERR_OOM;
    for (int k = 0; k < n && st == AD_OK; k++)
      if (!vert_find(set, in[k]) && !vert_add(ctx, &set, in[k])) st = AD_ERR_OOM;
  }
  /* every later inputs_of fits in the buffer the walk grew */

  /* the ops' scope groups, when any was recorded */
  int ngroups = ad_scope_count(ctx);
  group *gs = NULL;
  bool scoped = false;
  for (vert *v = set; v; v = v->hh.next) scoped |= (v->scope = ad_tensor_scope(v->t)) >= 0;
  if (st == AD_OK) {
    HASH_SRT(hh, set, by_tape); /* leaves (index -1) first, then ops in tape order */
    if (scoped && !(gs = groups_make(ctx, set, ngroups))) st = AD_ERR_OOM;
  }

  if (st == AD_OK) {
    char rb[64];
    fputs("digraph autodiff {\n", f);
    fputs("  graph [rankdir=TB, ordering=in, fontname=\"Helvetica\", fontsize=12, labelloc=t, "
          "label=\"",
          f);
    if (flags & AD_DOT_BACKWARD) {
      fputs("backward: gradients flow along the red arrows, from ", f);
      put_esc(f, tensor_name(g, root, rb, sizeof rb));
      fputs(" to the parameters", f);
    } else {
      fputs("forward: values flow from the inputs and parameters to ", f);
      put_esc(f, tensor_name(g, root, rb, sizeof rb));
    }
    fputs("\"];\n", f);
    fputs("  node [fontname=\"Helvetica\", fontsize=10];\n", f);
    fputs("  edge [fontname=\"Helvetica\", fontsize=9];\n", f);
    int id = 0;
    if ((flags & AD_DOT_COLLAPSE) && scoped) {
      st = dot_collapsed(f, g, set, gs, ngroups, root, flags);
      goto done;
    }
    /* nodes in data-flow order: each leaf just before its first consumer */
    for (vert *v = set; v; v = v->hh.next) {
      if (!is_recorded(v->t)) continue;
      int n = inputs_of(ctx, v->t, &in, &cap);
      for (int k = 0; k < n; k++) {
        vert *w = vert_find(set, in[k]);
        if (w->id < 0 && !is_recorded(in[k])) place(f, g, w, NULL, 0, &id, root);
      }
      place(f, g, v, in, n, &id, root);
    }
    if (!id) place(f, g, set, NULL, 0, &id, root); /* no op: root is a leaf */
    for (int i = 0; scoped && i < ngroups; i++)
      if (gs[i].shown && ad_scope_parent(ctx, i) < 0) dot_cluster(f, ctx, gs, i, 2);
    for (vert *v = set; v; v = v->hh.next) {
      int n = inputs_of(ctx, v->t, &in, &cap);
      for (int k = 0; k < n; k++)
        dot_edge(f, g, v->t, in, k, n, vert_find(set, in[k])->id, v->id, flags);
    }
  done:
    fputs("}\n", f);
    if (st != AD_OK)
      ad_set_error(ctx, st, "graph_dot: out of memory");
    else if (fflush(f) != 0 || ferror(f)) /* a full disk shows when the buffer goes out */
      st = ad_set_error(ctx, AD_ERR_IO, "graph_dot: write error");
  } else {
    ad_set_error(ctx, AD_ERR_OOM, "graph_dot: out of memory");
  }
  if (in) ad_free(ctx, in, (size_t)cap * sizeof *in);
  if (gs) ad_free(ctx, gs, (size_t)ngroups * sizeof *gs);
  vert *v, *tmp;
  HASH_ITER(hh, set, v, tmp) {
    HASH_DEL(set, v);
    ad_free(ctx, v, sizeof *v);
  }
  return st;
}
