/* graph.c: Graphviz dumps of the recorded graph and a step-by-step trace of
 * the backward pass, for teaching and debugging.
 *
 * The graph is read through the introspection calls (ad_tensor_op,
 * ad_tensor_inputs, ad_op_get) and backward is observed through the
 * backward hook. Nothing here runs an op or writes a tensor, so a dump or a
 * trace cannot change a value or a gradient. Memory comes from the
 * context's allocator; inside the hook an allocation failure only loses a
 * record (reported by ad_graph_trace_end), never the context's error. */
#include "ad_internal.h"

#include <ctype.h>
#include <stdlib.h>

#define FULL_MAX 16 /* tensors of at most this many elements are shown in full */

/* ------------------------------------------------------ memory helpers */

static void *galloc(ad_ctx *ctx, size_t n) { return ctx->alloc(ctx->alloc_ud, NULL, 0, n ? n : 1); }

static void gfree(ad_ctx *ctx, void *p, size_t n) {
  if (p) ctx->alloc(ctx->alloc_ud, p, n ? n : 1, 0);
}

/* Grows *arr (elements of elem bytes, capacity *cap) to hold need. */
static bool grow(ad_ctx *ctx, void **arr, size_t *cap, size_t elem, size_t need) {
  if (need <= *cap) return true;
  size_t ncap = *cap ? *cap * 2 : 16;
  while (ncap < need) ncap *= 2;
  void *p = galloc(ctx, ncap * elem);
  if (!p) return false;
  if (*cap) memcpy(p, *arr, *cap * elem);
  gfree(ctx, *arr, *cap * elem);
  *arr = p;
  *cap = ncap;
  return true;
}

/* ------------------------------------------------ pointer -> index map
 * Open addressing with linear probing; no deletion (entries are cleared
 * all at once). */

typedef struct pmap {
  const void **key;
  int32_t *val;
  size_t cap, len; /* cap is 0 or a power of two */
} pmap;

static size_t pmap_slot(const pmap *m, const void *k) {
  uint64_t h = (uint64_t)(uintptr_t)k * UINT64_C(0x9E3779B97F4A7C15);
  return (size_t)(h >> 29) & (m->cap - 1);
}

static int32_t pmap_get(const pmap *m, const void *k) {
  if (!m->cap) return -1;
  for (size_t i = pmap_slot(m, k);; i = (i + 1) & (m->cap - 1)) {
    if (m->key[i] == k) return m->val[i];
    if (!m->key[i]) return -1;
  }
}

static void pmap_insert(pmap *m, const void *k, int32_t v) {
  for (size_t i = pmap_slot(m, k);; i = (i + 1) & (m->cap - 1)) {
    if (m->key[i] == k) {
      m->val[i] = v;
      return;
    }
    if (!m->key[i]) {
      m->key[i] = k;
      m->val[i] = v;
      m->len++;
      return;
    }
  }
}

static bool pmap_put(ad_ctx *ctx, pmap *m, const void *k, int32_t v) {
  if ((m->len + 1) * 2 > m->cap) {
    pmap old = *m;
    size_t cap = old.cap ? old.cap * 2 : 64;
    const void **key = galloc(ctx, cap * sizeof *key);
    int32_t *val = key ? galloc(ctx, cap * sizeof *val) : NULL;
    if (!val) {
      gfree(ctx, key, cap * sizeof *key);
      return false;
    }
    memset(key, 0, cap * sizeof *key);
    *m = (pmap){.key = key, .val = val, .cap = cap, .len = 0};
    for (size_t i = 0; i < old.cap; i++)
      if (old.key[i]) pmap_insert(m, old.key[i], old.val[i]);
    gfree(ctx, old.key, old.cap * sizeof *old.key);
    gfree(ctx, old.val, old.cap * sizeof *old.val);
  }
  pmap_insert(m, k, v);
  return true;
}

static void pmap_clear(pmap *m) {
  if (m->cap) memset(m->key, 0, m->cap * sizeof *m->key);
  m->len = 0;
}

static void pmap_free(ad_ctx *ctx, pmap *m) {
  gfree(ctx, m->key, m->cap * sizeof *m->key);
  gfree(ctx, m->val, m->cap * sizeof *m->val);
  *m = (pmap){0};
}

/* ------------------------------------------------------------- state */

typedef struct name_ent {
  const ad_tensor *t;
  char *name;      /* owned; NULL once removed */
  size_t name_cap; /* bytes allocated for name */
  uint32_t epoch;  /* for temporaries: the tape generation t belongs to */
  bool persistent; /* t was persistent when named */
  bool is_auto;    /* made up by the graph ("param1"), not given */
} name_ent;

/* What one backward step computed (pointers into the arena). */
typedef struct step_rec {
  const ad_tensor *out, *gout;
  int n;
  const ad_tensor *gin[AD_MAX_SRC];
} step_rec;

struct ad_graph {
  ad_ctx *ctx;
  name_ent *names;
  size_t nnames, names_cap;
  pmap name_map;
  int nauto[3]; /* made-up names so far: parameters, inputs, constants */
  step_rec *recs;
  size_t nrecs, recs_cap;
  ad_tensor **snaps; /* copies of contributions stored straight into a grad */
  size_t nsnaps, snaps_cap;
  pmap rec_map;
  uint32_t rec_epoch; /* tape generation the records belong to */
  bool tracing, lost;
  FILE *trace;
  ad_backward_hook prev_hook; /* the hook ours replaced; called after ours */
  void *prev_ud;
  int pass, step;
  int32_t last_idx; /* tape index of the last traced step */
};

ad_graph *ad_graph_new(ad_ctx *ctx) {
  if (!ctx) return NULL;
  ad_graph *g = ad_malloc(ctx, sizeof *g);
  if (!g) return NULL;
  memset(g, 0, sizeof *g);
  g->ctx = ctx;
  g->last_idx = -1;
  return g;
}

static void drop_snaps(ad_graph *g) {
  for (size_t i = 0; i < g->nsnaps; i++) ad_tensor_free(g->snaps[i]);
  g->nsnaps = 0;
}

void ad_graph_free(ad_graph *g) {
  if (!g) return;
  ad_ctx *ctx = g->ctx;
  ad_graph_trace_end(g);
  for (size_t i = 0; i < g->nnames; i++) gfree(ctx, g->names[i].name, g->names[i].name_cap);
  gfree(ctx, g->names, g->names_cap * sizeof *g->names);
  gfree(ctx, g->recs, g->recs_cap * sizeof *g->recs);
  drop_snaps(g);
  gfree(ctx, g->snaps, g->snaps_cap * sizeof *g->snaps);
  pmap_free(ctx, &g->name_map);
  pmap_free(ctx, &g->rec_map);
  ad_free(ctx, g, sizeof *g);
}

static bool is_tensor(const ad_tensor *t) { return t && ad_node_of(t)->magic == AD_NODE_MAGIC; }

static bool is_persistent(const ad_tensor *t) {
  return (ad_node_of(t)->flags & AD_NF_PERSISTENT) != 0;
}

static bool is_recorded(const ad_tensor *t) { return (ad_node_of(t)->flags & AD_NF_RECORDED) != 0; }

enum { K_PARAM, K_INPUT, K_CONST, K_OP };

/* Parameters are leaves that require a gradient; inputs other persistent
 * leaves; constants are temporaries that were not recorded (ad_scalar, or
 * an op whose inputs needed no gradient). */
static int kind_of(const ad_tensor *t) {
  if (is_recorded(t)) return K_OP;
  if (is_persistent(t)) return ad_tensor_requires_grad(t) ? K_PARAM : K_INPUT;
  return K_CONST;
}

static const char *const kind_word[] = {"parameter", "input", "constant", "op"};
static const char *const kind_short[] = {"param", "input", "const", "op"};

/* The live entry for t, or NULL. Entries of temporaries from an earlier
 * tape generation (the address was reused) do not count. */
static name_ent *name_find(const ad_graph *g, const ad_tensor *t) {
  if (!g) return NULL;
  int32_t i = pmap_get(&g->name_map, t);
  if (i < 0) return NULL;
  name_ent *e = &g->names[i];
  bool pers = is_persistent(t);
  if (e->persistent != pers || (!pers && e->epoch != ad_node_of(t)->epoch)) return NULL;
  return e;
}

/* Stores name for t (auto or given), reusing a stale or removed entry. */
static bool name_store(ad_graph *g, const ad_tensor *t, const char *name, bool is_auto) {
  ad_ctx *ctx = g->ctx;
  int32_t i = pmap_get(&g->name_map, t);
  if (i < 0) {
    if (!grow(ctx, (void **)&g->names, &g->names_cap, sizeof *g->names, g->nnames + 1))
      return false;
    i = (int32_t)g->nnames;
    if (!pmap_put(ctx, &g->name_map, t, i)) return false;
    g->names[g->nnames++] = (name_ent){.t = t};
  }
  name_ent *e = &g->names[i];
  size_t len = strlen(name) + 1;
  if (len > e->name_cap) {
    char *s = galloc(ctx, len);
    if (!s) return false;
    gfree(ctx, e->name, e->name_cap);
    e->name = s;
    e->name_cap = len;
  }
  memcpy(e->name, name, len);
  e->persistent = is_persistent(t);
  e->epoch = ad_node_of(t)->epoch;
  e->is_auto = is_auto;
  return true;
}

ad_status ad_graph_name(ad_graph *g, const ad_tensor *t, const char *name) {
  if (!g) return AD_ERR_NULL;
  if (!t) return ad_set_error(g->ctx, AD_ERR_NULL, "graph_name: tensor is NULL");
  if (!is_tensor(t)) return ad_set_error(g->ctx, AD_ERR_ARG, "graph_name: not a tensor (freed?)");
  if (!name || !name[0]) {
    name_ent *e = name_find(g, t);
    if (e && e->name) e->name[0] = 0;
    return AD_OK;
  }
  if (!name_store(g, t, name, false))
    return ad_set_error(g->ctx, AD_ERR_OOM, "graph_name: out of memory naming '%s'", name);
  return AD_OK;
}

/* The name shown for t: a given name; for a recorded op "<op>_<tape index>";
 * for a leaf a made-up "param1", "input2", "const3" (kept in g so trace and
 * dump agree), or with no graph the kind of leaf. */
static const char *tensor_name(ad_graph *g, const ad_tensor *t, char *buf, size_t n) {
  name_ent *e = name_find(g, t);
  if (e && e->name && e->name[0]) return e->name;
  int k = kind_of(t);
  if (k == K_OP) {
    const ad_op_def *def = ad_op_get(ad_node_of(t)->ctx, ad_tensor_op(t));
    snprintf(buf, n, "%s_%d", def ? def->name : "op", (int)ad_node_of(t)->tape_idx);
    return buf;
  }
  if (!g) return kind_word[k];
  snprintf(buf, n, "%s%d", kind_short[k], g->nauto[k] + 1);
  if (!name_store(g, t, buf, true)) return buf;
  g->nauto[k]++;
  return buf;
}

/* -------------------------------------------------------------- values */

/* Numbers to print: a itself, a / b elementwise, or a / b[0]. */
typedef struct vview {
  const ad_tensor *a, *b;
  int mode;
} vview;

enum { V_PLAIN, V_RATIO, V_RATIO_SCALAR };

static double vget(const vview *v, int64_t i) {
  double x = ad_tensor_get(v->a, i);
  if (v->mode == V_RATIO) return x / ad_tensor_get(v->b, i);
  if (v->mode == V_RATIO_SCALAR) return x / ad_tensor_get(v->b, 0);
  return x;
}

static void put_num(FILE *f, double x) { fprintf(f, "%.6g", x); }

/* Layout of printed values: on one line (text), or for DOT with the rows
 * of a matrix on lines of their own, indented by indent spaces. */
typedef struct vfmt {
  bool dot;
  int indent;
} vfmt;

static void put_break(FILE *f, const vfmt *fm) {
  if (!fm->dot) {
    fputc(' ', f);
    return;
  }
  fputs("\\l", f);
  for (int i = 0; i < fm->indent; i++) fputc(' ', f);
}

/* Nested brackets; rows of more than one element each start a line. */
static void put_rec(FILE *f, const vview *v, const ad_tensor *shp, int dim, int64_t off,
                    const vfmt *fm) {
  int64_t stride = 1;
  for (int i = dim + 1; i < shp->ndim; i++) stride *= shp->shape[i];
  bool rows = dim + 1 < shp->ndim && shp->shape[shp->ndim - 1] > 1;
  fputc('[', f);
  for (int64_t i = 0; i < shp->shape[dim]; i++) {
    if (i) {
      fputc(',', f);
      if (rows)
        put_break(f, fm);
      else
        fputc(' ', f);
    }
    if (dim + 1 == shp->ndim)
      put_num(f, vget(v, off + i));
    else
      put_rec(f, v, shp, dim + 1, off + i * stride, fm);
  }
  fputc(']', f);
}

/* Values of v laid out in shp's shape: in full up to FULL_MAX elements,
 * else the first few, then min, max and mean. */
static void put_vals(FILE *f, const vview *v, const ad_tensor *shp, const vfmt *fm) {
  if (shp->ndim == 0) {
    put_num(f, vget(v, 0));
  } else if (shp->size <= FULL_MAX) {
    if (shp->size == 0)
      fputs("[]", f);
    else
      put_rec(f, v, shp, 0, 0, fm);
  } else {
    double lo = vget(v, 0), hi = lo, sum = 0;
    for (int64_t i = 0; i < shp->size; i++) {
      double x = vget(v, i);
      lo = x < lo ? x : lo;
      hi = x > hi ? x : hi;
      sum += x;
    }
    fputc('[', f);
    for (int64_t i = 0; i < 4; i++) {
      put_num(f, vget(v, i));
      fputs(", ", f);
    }
    fputs("...]", f);
    put_break(f, fm);
    fprintf(f, "(%lld values: min ", (long long)shp->size);
    put_num(f, lo);
    fputs(", max ", f);
    put_num(f, hi);
    fputs(", mean ", f);
    put_num(f, sum / (double)shp->size);
    fputc(')', f);
  }
}

static const vfmt txt = {false, 0};

static void put_tensor(FILE *f, const ad_tensor *t, const vfmt *fm) {
  vview v = {t, NULL, V_PLAIN};
  put_vals(f, &v, t, fm);
}

/* Writes s for a DOT double-quoted string. */
static void put_esc(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fputc('\\', f), fputc(*s, f);
    else if (*s == '\n')
      fputs("\\l", f);
    else
      fputc(*s, f);
  }
}

/* --------------------------------------------------------- rules
 * An op's definition names its inputs (inputs[k]; a variadic op's
 * inputs[0] names them all) and gives each input's contribution (grads[k]),
 * so the rule for input k reads "dV += <grads[k]>" with V its name. */

#define VAR_LEN 12

typedef struct rule_map {
  char outvar[VAR_LEN];         /* the output's name in the math: its first word */
  const char *var[AD_MAX_SRC];  /* input k's name, NULL if the op gives none */
  const char *grad[AD_MAX_SRC]; /* input k's contribution, NULL for none */
  bool mapped;                  /* every input has a name */
  bool has_backward;
} rule_map;

static void rule_map_of(const ad_op_def *def, int n, rule_map *rm) {
  memset(rm, 0, sizeof *rm);
  if (!def || n < 1 || n > AD_MAX_SRC) return;
  rm->has_backward = def->backward != NULL;
  size_t len = 0;
  while (def->math && isalnum((unsigned char)def->math[len]) && len + 1 < VAR_LEN) len++;
  if (def->math) memcpy(rm->outvar, def->math, len);
  bool variadic = def->arity < 0;
  rm->mapped = true;
  for (int k = 0; k < n; k++) {
    rm->var[k] = def->inputs[variadic ? 0 : k];
    rm->grad[k] = def->grads[variadic ? 0 : k];
    rm->mapped &= rm->var[k] != NULL;
  }
}

/* Writes s, escaped for a DOT label when esc. */
static void put_str(FILE *f, const char *s, bool esc) {
  if (esc)
    put_esc(f, s);
  else
    fputs(s, f);
}

/* The rule of input k: "dV += ...", or "no gradient to V". */
static void put_rule_k(FILE *f, const rule_map *rm, int k, bool esc) {
  if (!rm->var[k]) {
    fputs("(the op gives no rule)", f);
    return;
  }
  if (rm->grad[k]) {
    fprintf(f, "d%s += ", rm->var[k]);
    put_str(f, rm->grad[k], esc);
  } else {
    fprintf(f, "no gradient to %s", rm->var[k]);
  }
}

/* The whole rule: every input's, "; " between them (a variadic op's once). */
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
  if (gout->size == 1) return ad_tensor_get(gout, 0) != 0 ? V_RATIO_SCALAR : V_PLAIN;
  bool elementwise = def && (def->flags & AD_OP_ELEMENTWISE);
  if (!elementwise || !ad_same_shape(in, gout) || gin->size != gout->size) return V_PLAIN;
  for (int64_t i = 0; i < gout->size; i++)
    if (ad_tensor_get(gout, i) == 0) return V_PLAIN;
  return V_RATIO;
}

/* --------------------------------------------------------------- trace */

static void trace_step(ad_graph *g, const ad_tensor *out, const ad_tensor *gout, int n,
                       const ad_tensor *const *gin) {
  FILE *f = g->trace;
  ad_tensor *in[AD_MAX_SRC];
  int nin = ad_tensor_inputs(out, in, AD_MAX_SRC);
  if (nin > n) nin = n;
  const ad_op_def *def = ad_op_get(g->ctx, ad_tensor_op(out));
  rule_map rm;
  rule_map_of(def, nin, &rm);
  char ob[64], ib[64], sb[64];
  char oname[64];
  snprintf(oname, sizeof oname, "%s", tensor_name(g, out, ob, sizeof ob));

  if (g->step == 0)
    fprintf(f, "%sbackward pass %d: from %s, ops in reverse tape order\n", g->pass > 1 ? "\n" : "",
            g->pass, oname);
  fprintf(f, "\nstep %d: %s = %s(", ++g->step, oname, def ? def->name : "?");
  for (int k = 0; k < nin; k++)
    fprintf(f, "%s%s", k ? ", " : "", tensor_name(g, in[k], ib, sizeof ib));
  fprintf(f, ")  %s %s\n", ad_shape_str(out, sb, sizeof sb), ad_dtype_name(out->dtype));
  fprintf(f, "  incoming   dL/d%s = ", oname);
  put_tensor(f, gout, &txt);
  fputs("\n  rule       ", f);
  put_rule(f, def, &rm, nin, false);
  fputc('\n', f);
  if (rm.outvar[0] && rm.mapped) { /* the rule's variables, named */
    fprintf(f, "             with %s = %s", rm.outvar, oname);
    for (int k = 0; k < nin; k++) {
      int uses = 0;
      for (int j = 0; j < nin; j++) uses += !strcmp(rm.var[j], rm.var[k]);
      if (uses == 1) fprintf(f, ", %s = %s", rm.var[k], tensor_name(g, in[k], ib, sizeof ib));
    }
    fputc('\n', f);
  }
  for (int k = 0; k < nin; k++) {
    char iname[64];
    snprintf(iname, sizeof iname, "%s", tensor_name(g, in[k], ib, sizeof ib));
    if (!gin[k]) {
      fprintf(f, "  -> %-7s no gradient (%s)\n", iname,
              ad_tensor_requires_grad(in[k]) ? "the op sends none" : "none needed");
      continue;
    }
    int mode = local_mode(def, in[k], gout, gin[k]);
    if (mode != V_PLAIN) {
      vview lv = {gin[k], gout, mode};
      fprintf(f, "  -> %-7s local d%s/d%s = ", iname, oname, iname);
      put_vals(f, &lv, in[k], &txt);
      fprintf(f, "\n             dL/d%s += dL/d%s * local = ", iname, oname);
    } else {
      fprintf(f, "  -> %-7s dL/d%s += ", iname, iname);
    }
    put_tensor(f, gin[k], &txt);
    fputc('\n', f);
  }
}

/* A copy of the contribution an op stored straight into t's grad (it is
 * the grad's value now; later contributions would change it), owned by g
 * until the next step; the grad itself if the copy cannot be made. */
static const ad_tensor *snapshot(ad_graph *g, const ad_tensor *grad) {
  ad_tensor *c = NULL;
  if (grow(g->ctx, (void **)&g->snaps, &g->snaps_cap, sizeof *g->snaps, g->nsnaps + 1) &&
      (c = ad_tensor_clone(g->ctx, grad)))
    g->snaps[g->nsnaps++] = c;
  else
    g->lost = true;
  return c ? c : grad;
}

static void graph_hook(void *ud, const ad_backward_step *st) {
  ad_graph *g = ud;
  ad_ctx *ctx = g->ctx;
  const ad_tensor *out = st->out, *gout = st->gout;
  int n = st->n < AD_MAX_SRC ? st->n : AD_MAX_SRC;
  int32_t idx = ad_node_of(out)->tape_idx;
  if (g->rec_epoch != ctx->epoch) { /* a new step: earlier records are gone */
    g->nrecs = 0;
    drop_snaps(g);
    pmap_clear(&g->rec_map);
    g->rec_epoch = ctx->epoch;
    g->last_idx = -1;
  }
  if (idx >= g->last_idx) { /* backward walks down the tape: this is a new pass */
    g->pass++;
    g->step = 0;
  }
  g->last_idx = idx;

  const ad_tensor *gin[AD_MAX_SRC];
  for (int k = 0; k < n; k++)
    gin[k] = st->gin[k] ? st->gin[k] : st->direct[k] ? snapshot(g, st->in[k]->grad) : NULL;
  int32_t r = pmap_get(&g->rec_map, out);
  if (r < 0) {
    if (grow(ctx, (void **)&g->recs, &g->recs_cap, sizeof *g->recs, g->nrecs + 1) &&
        pmap_put(ctx, &g->rec_map, out, (int32_t)g->nrecs))
      r = (int32_t)g->nrecs++;
    else
      g->lost = true;
  }
  if (r >= 0) {
    step_rec *s = &g->recs[r];
    s->out = out;
    s->gout = gout;
    s->n = n;
    for (int k = 0; k < n; k++) s->gin[k] = gin[k];
  }
  if (g->trace) {
    trace_step(g, out, gout, n, gin);
    fflush(g->trace);
  }
  if (g->prev_hook) g->prev_hook(g->prev_ud, st);
}

ad_status ad_graph_trace_begin(ad_graph *g, FILE *f) {
  if (!g) return AD_ERR_NULL;
  if (g->tracing) return ad_set_error(g->ctx, AD_ERR_STATE, "graph_trace_begin: already tracing");
  ad_ctx *ctx = g->ctx;
  g->prev_hook = ctx->hook;
  g->prev_ud = ctx->hook_ud;
  g->trace = f;
  g->tracing = true;
  g->lost = false;
  g->pass = 0;
  g->step = 0;
  g->last_idx = -1; /* the first step starts pass 1 */
  ad_set_backward_hook(ctx, graph_hook, g);
  return AD_OK;
}

ad_status ad_graph_trace_end(ad_graph *g) {
  if (!g) return AD_ERR_NULL;
  if (!g->tracing) return AD_OK;
  ad_ctx *ctx = g->ctx;
  if (ctx->hook == graph_hook && ctx->hook_ud == g) {
    ad_set_backward_hook(ctx, g->prev_hook, g->prev_ud);
  } else if (ctx->hook == graph_hook) {
    /* another graph traces on top of us: unlink g from its chain */
    for (ad_graph *h = ctx->hook_ud; h;) {
      if (h->prev_hook == graph_hook && h->prev_ud == g) {
        h->prev_hook = g->prev_hook;
        h->prev_ud = g->prev_ud;
        break;
      }
      h = h->prev_hook == graph_hook ? h->prev_ud : NULL;
    }
  }
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
  return AD_OK;
}

/* --------------------------------------------------------------- dot */

static const step_rec *rec_of(const ad_graph *g, const ad_tensor *t) {
  if (!g || g->rec_epoch != g->ctx->epoch) return NULL;
  int32_t r = pmap_get(&g->rec_map, t);
  return r >= 0 ? &g->recs[r] : NULL;
}

/* The gradient known for t: its grad field (leaves, retained
 * intermediates), else what a traced pass sent into it. */
static const ad_tensor *grad_of(const ad_graph *g, const ad_tensor *t) {
  if (t->grad) return t->grad;
  const step_rec *s = rec_of(g, t);
  return s ? s->gout : NULL;
}

static void dot_node(FILE *f, ad_graph *g, const ad_tensor *t, int id, bool is_root) {
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
    const ad_op_def *def = ad_op_get(g ? g->ctx : ad_node_of(t)->ctx, ad_tensor_op(t));
    ad_tensor *in[AD_MAX_SRC];
    int n = ad_tensor_inputs(t, in, AD_MAX_SRC);
    fprintf(f, " = %s(", def ? def->name : "?");
    for (int i = 0; i < n && i < AD_MAX_SRC; i++) {
      if (i) fputs(", ", f);
      put_esc(f, tensor_name(g, in[i], ib, sizeof ib));
    }
    fputc(')', f);
  } else if (name != kind_word[k]) { /* no graph: the name is the kind */
    fprintf(f, "  (%s)", kind_word[k]);
  }
  fprintf(f, "\\l%s %s\\lvalue ", ad_shape_str(t, sb, sizeof sb), ad_dtype_name(t->dtype));
  put_tensor(f, t, &(vfmt){true, 7});
  const ad_tensor *gr = grad_of(g, t);
  if (gr) {
    fputs("\\ldL/d", f);
    put_esc(f, name);
    fputs(" = ", f);
    put_tensor(f, gr, &(vfmt){true, (int)strlen(name) + 8});
  }
  fputs("\\l\"];\n", f);
}

static void dot_edge(FILE *f, ad_graph *g, const ad_tensor *out, int from, int to, int k, int n,
                     const rule_map *rm, int flags) {
  fprintf(f, "  n%d -> n%d", from, to);
  bool back = (flags & AD_DOT_BACKWARD) != 0;
  if (!back) {
    if (n > 1 && rm->var[k]) fprintf(f, " [label=\" %s \"]", rm->var[k]);
    fputs(";\n", f);
    return;
  }
  const ad_op_def *def = ad_op_get(ad_node_of(out)->ctx, ad_tensor_op(out));
  ad_tensor *in[AD_MAX_SRC];
  ad_tensor_inputs(out, in, AD_MAX_SRC);
  const step_rec *s = rec_of(g, out);
  const ad_tensor *gin = s && k < s->n ? s->gin[k] : NULL;
  char ob[64], ib[64], oname[64];
  snprintf(oname, sizeof oname, "%s", tensor_name(g, out, ob, sizeof ob));
  const char *iname = tensor_name(g, in[k], ib, sizeof ib);
  fputs(" [dir=back, color=\"#b03020\", fontcolor=\"#b03020\", label=\"", f);
  put_rule_k(f, rm, k, true);
  if (s && !gin) {
    fputs("\\l(no gradient sent)", f);
  } else if (gin) {
    int mode = local_mode(def, in[k], s->gout, gin);
    if (mode != V_PLAIN) {
      vview lv = {gin, s->gout, mode};
      fputs("\\llocal d", f);
      put_esc(f, oname);
      fputs("/d", f);
      put_esc(f, iname);
      fputs(" = ", f);
      put_vals(f, &lv, in[k], &(vfmt){true, (int)(strlen(oname) + strlen(iname)) + 13});
    }
    fputs("\\lsends dL/d", f);
    put_esc(f, iname);
    fputs(" += ", f);
    put_tensor(f, gin, &(vfmt){true, (int)strlen(iname) + 15});
  }
  fputs("\\l\"];\n", f);
}

static int cmp_tape(const void *a, const void *b) {
  int32_t x = ad_node_of(*(ad_tensor *const *)a)->tape_idx;
  int32_t y = ad_node_of(*(ad_tensor *const *)b)->tape_idx;
  return (x > y) - (x < y);
}

ad_status ad_graph_dot(ad_graph *g, FILE *f, ad_tensor *root, int flags) {
  if (!root) return g ? ad_set_error(g->ctx, AD_ERR_NULL, "graph_dot: root is NULL") : AD_ERR_NULL;
  if (!is_tensor(root)) {
    if (g) ad_set_error(g->ctx, AD_ERR_ARG, "graph_dot: root is not a tensor (freed?)");
    return AD_ERR_ARG;
  }
  ad_ctx *ctx = ad_node_of(root)->ctx;
  if (g && g->ctx != ctx)
    return ad_set_error(ctx, AD_ERR_ARG, "graph_dot: the graph belongs to another context");
  if (!f) return ad_set_error(ctx, AD_ERR_NULL, "graph_dot: file is NULL");
  if (!is_persistent(root) && ad_node_of(root)->epoch != ctx->epoch)
    return ad_set_error(ctx, AD_ERR_STATE, "graph_dot: the root is from a tape that was reset");

  /* every tensor reaching root: ops (recorded) and leaves */
  pmap seen = {0};
  ad_tensor **ops = NULL, **stack = NULL, **order = NULL;
  size_t nops = 0, ops_cap = 0, nstack = 0, stack_cap = 0, norder = 0, order_cap = 0;
  ad_status st = AD_OK;
  if (!pmap_put(ctx, &seen, root, 0) || !grow(ctx, (void **)&stack, &stack_cap, sizeof *stack, 1)) {
    st = AD_ERR_OOM;
    goto done;
  }
  stack[nstack++] = root;
  while (nstack) {
    ad_tensor *t = stack[--nstack];
    if (!is_recorded(t)) continue;
    if (!grow(ctx, (void **)&ops, &ops_cap, sizeof *ops, nops + 1)) {
      st = AD_ERR_OOM;
      goto done;
    }
    ops[nops++] = t;
    ad_tensor *in[AD_MAX_SRC];
    int n = ad_tensor_inputs(t, in, AD_MAX_SRC);
    for (int k = 0; k < n && k < AD_MAX_SRC; k++) {
      if (pmap_get(&seen, in[k]) >= 0) continue;
      if (!pmap_put(ctx, &seen, in[k], 0) ||
          !grow(ctx, (void **)&stack, &stack_cap, sizeof *stack, nstack + 1)) {
        st = AD_ERR_OOM;
        goto done;
      }
      stack[nstack++] = in[k];
    }
  }
  if (nops > 1) qsort(ops, nops, sizeof *ops, cmp_tape); /* ops is NULL when empty */

  /* data-flow order: each leaf just before its first consumer */
  pmap_clear(&seen);
  if (!grow(ctx, (void **)&order, &order_cap, sizeof *order, seen.len + nops * AD_MAX_SRC + 1)) {
    st = AD_ERR_OOM;
    goto done;
  }
  for (size_t i = 0; i < nops; i++) {
    ad_tensor *in[AD_MAX_SRC];
    int n = ad_tensor_inputs(ops[i], in, AD_MAX_SRC);
    for (int k = 0; k < n && k < AD_MAX_SRC; k++)
      if (!is_recorded(in[k]) && pmap_get(&seen, in[k]) < 0) {
        if (!pmap_put(ctx, &seen, in[k], (int32_t)norder)) {
          st = AD_ERR_OOM;
          goto done;
        }
        order[norder++] = in[k];
      }
    if (!pmap_put(ctx, &seen, ops[i], (int32_t)norder)) {
      st = AD_ERR_OOM;
      goto done;
    }
    order[norder++] = ops[i];
  }
  if (!nops) {
    if (!pmap_put(ctx, &seen, root, 0)) {
      st = AD_ERR_OOM;
      goto done;
    }
    order[norder++] = root;
  }

  bool back = (flags & AD_DOT_BACKWARD) != 0;
  char rb[64];
  fputs("digraph autodiff {\n", f);
  fputs(
      "  graph [rankdir=TB, ordering=in, fontname=\"Helvetica\", fontsize=12, labelloc=t, label=\"",
      f);
  if (back) {
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
  for (size_t i = 0; i < norder; i++) dot_node(f, g, order[i], (int)i, order[i] == root);
  for (size_t i = 0; i < norder; i++) {
    ad_tensor *t = order[i];
    if (!is_recorded(t)) continue;
    ad_tensor *in[AD_MAX_SRC];
    int n = ad_tensor_inputs(t, in, AD_MAX_SRC);
    rule_map rm;
    rule_map_of(ad_op_get(ctx, ad_tensor_op(t)), n, &rm);
    for (int k = 0; k < n && k < AD_MAX_SRC; k++)
      dot_edge(f, g, t, pmap_get(&seen, in[k]), (int)i, k, n, &rm, flags);
  }
  fputs("}\n", f);
  if (ferror(f)) st = ad_set_error(ctx, AD_ERR_IO, "graph_dot: write error");

done:
  if (st == AD_ERR_OOM) ad_set_error(ctx, AD_ERR_OOM, "graph_dot: out of memory");
  pmap_free(ctx, &seen);
  gfree(ctx, ops, ops_cap * sizeof *ops);
  gfree(ctx, stack, stack_cap * sizeof *stack);
  gfree(ctx, order, order_cap * sizeof *order);
  return st;
}
