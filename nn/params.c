/* params.c: named parameter lists, initializers, gradient clipping, L2, and
 * small helpers shared by the nn sources. */
#include "kernels/update.h"
#include "nn_internal.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

/* uthash reports an allocation failure through the entry instead of exiting;
 * its table and bucket arrays come from the list's context, as the entries
 * and names do (every use below has the list in p). */
#define uthash_malloc(sz)          ad_malloc(p->ctx, sz)
#define uthash_free(ptr, sz)       ad_free(p->ctx, ptr, sz)
#define HASH_NONFATAL_OOM          1
#define uthash_nonfatal_oom(entry) ((entry)->oom = true)
#include <uthash.h>

/* ---------------------------------------------------------------- helpers */

ad_status nn_null_arg(ad_ctx *ctx, const char *fn, const char *what) {
  return ad_set_null_error(ctx, "%s: %s is NULL", fn, what);
}

ad_status nn_check_input(ad_ctx *ctx, const char *fn, const char *what, const ad_tensor *t) {
  if (!t) return nn_null_arg(ctx, fn, what);
  if (!ad_tensor_is_valid(t))
    return ad_set_error(ctx, AD_ERR_STATE, "%s: %s was freed (or is not a tensor)", fn, what);
  if (ad_tensor_ctx(t) != ctx)
    return ad_set_error(ctx, AD_ERR_ARG, "%s: %s belongs to another context", fn, what);
  if (ad_tensor_is_temporary(t) && ad_tensor_generation(t) != ad_tape_generation(ctx))
    return ad_set_error(ctx, AD_ERR_STATE, "%s: %s is from a tape that was reset", fn, what);
  return AD_OK;
}

ad_status nn_check_persistent(ad_ctx *ctx, const char *fn, const char *what, const ad_tensor *t) {
  if (!t) return AD_OK;
  ad_status st = nn_check_input(ctx, fn, what, t);
  if (st != AD_OK || !ad_tensor_is_temporary(t)) return st;
  char a[64];
  return ad_set_error(ctx, AD_ERR_ARG,
                      "%s: %s %s is a temporary made by an op, freed by the next ad_tape_reset "
                      "while rows are still read from it; pass a persistent tensor "
                      "(ad_tensor_clone copies one)",
                      fn, what, ad_shape_str(t, a, sizeof a));
}

ad_ctx *nn_ctx_of(const nn_model *m, const nn_optimizer *opt) {
  ad_ctx *ctx = nn_model_ctx(m);
  return ctx ? ctx : nn_params_ctx(nn_optimizer_params(opt));
}

char *nn_strdup(ad_ctx *ctx, const char *s) {
  size_t n = strlen(s) + 1;
  char *d = ad_malloc(ctx, n);
  if (d) memcpy(d, s, n);
  return d;
}

void nn_strfree(ad_ctx *ctx, char *s) {
  if (s) ad_free(ctx, s, strlen(s) + 1);
}

bool nn_grow(ad_ctx *ctx, void **arr, int *cap, int need, size_t es) {
  if (need <= *cap) return true;
  int ncap = *cap ? *cap : 8;
  while (ncap < need) ncap *= 2;
  void *n = ad_malloc(ctx, (size_t)ncap * es);
  if (!n) return false;
  if (*arr) {
    memcpy(n, *arr, (size_t)*cap * es);
    ad_free(ctx, *arr, (size_t)*cap * es);
  }
  *arr = n;
  *cap = ncap;
  return true;
}

ad_tensor *nn_tmp_tensor(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape) {
  /* expand copies, so the result is a fresh arena tensor we may write */
  return ad_expand(ctx, ad_scalar(ctx, dtype, 0.0), ndim, shape);
}

double nn_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------- param list */

typedef struct param_entry {
  char *name; /* owned; also the hash key */
  int index;
  nn_store store; /* buffers: how checkpoints store it */
  bool oom;
  UT_hash_handle hh;
} param_entry;

struct nn_params {
  ad_ctx *ctx;
  bool buffers; /* a buffer list (nn_buffers_new) */
  bool held;    /* a layer's or a model's own list: freed with it, not alone */
  bool repeats; /* a tensor is listed twice (tied weights): see nn_params_repeat */
  int n, cap;
  char **names;        /* n names (the entries' strings) */
  ad_tensor **tensors; /* n tensors */
  bool *owned;
  param_entry **entries;
  param_entry *by_name;
};

nn_params *nn_params_new(ad_ctx *ctx) {
  if (!ctx) return NULL;
  nn_params *p = ad_malloc(ctx, sizeof *p);
  if (!p) return NULL;
  memset(p, 0, sizeof *p);
  p->ctx = ctx;
  return p;
}

void nn_params_hold(nn_params *p) {
  if (p) p->held = true;
}

void nn_params_free(nn_params *p) {
  if (!p) return;
  if (p->held) {
    ad_set_error(p->ctx, AD_ERR_STATE,
                 "params_free: the list belongs to a layer or a model and is freed with it "
                 "(nn_layer_free, nn_model_free)");
    return;
  }
  nn_params_release(p);
}

void nn_params_release(nn_params *p) {
  if (!p) return;
  ad_ctx *ctx = p->ctx;
  HASH_CLEAR(hh, p->by_name);
  for (int i = 0; i < p->n; i++) {
    if (p->owned[i]) ad_tensor_free(p->tensors[i]);
    nn_strfree(ctx, p->names[i]);
    ad_free(ctx, p->entries[i], sizeof *p->entries[i]);
  }
  ad_free(ctx, p->names, (size_t)p->cap * sizeof *p->names);
  ad_free(ctx, p->tensors, (size_t)p->cap * sizeof *p->tensors);
  ad_free(ctx, p->owned, (size_t)p->cap * sizeof *p->owned);
  ad_free(ctx, p->entries, (size_t)p->cap * sizeof *p->entries);
  ad_free(ctx, p, sizeof *p);
}

void nn_params_truncate(nn_params *p, int n) {
  if (!p || n < 0) return;
  while (p->n > n) {
    int i = --p->n;
    HASH_DEL(p->by_name, p->entries[i]);
    if (p->owned[i]) ad_tensor_free(p->tensors[i]);
    nn_strfree(p->ctx, p->names[i]);
    ad_free(p->ctx, p->entries[i], sizeof *p->entries[i]);
  }
  /* p->repeats may stay true: it only sends nn_params_repeat to its scan */
}

nn_params *nn_buffers_new(ad_ctx *ctx) {
  nn_params *p = nn_params_new(ctx);
  if (p) p->buffers = true;
  return p;
}

bool nn_params_is_buffers(const nn_params *p) { return p && p->buffers; }

ad_ctx *nn_params_ctx(const nn_params *p) { return p ? p->ctx : NULL; }

void nn_error_prefix(ad_ctx *ctx, const char *fmt, ...) {
  ad_status st = ad_last_status(ctx);
  if (!ctx || st == AD_OK) return;
  char pre[256], old[1024];
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(pre, sizeof pre, fmt, ap);
  va_end(ap);
  if (k < 0) return;
  const char *m = ad_last_error(ctx);
  size_t n = strlen(pre);
  if (strncmp(m, pre, n) == 0 && m[n] == ':') return; /* said already */
  /* the message lives in the buffer ad_set_error writes: copied first */
  snprintf(old, sizeof old, "%s", m);
  ad_set_error(ctx, st, "%s: %s", pre, old);
}

void nn_error_tensor(ad_ctx *ctx, const char *fn, const char *pfx, const char *name, int ndim,
                     const int64_t *shape) {
  char buf[256];
  nn_text t = {buf, sizeof buf, 0};
  buf[0] = '\0';
  nn_text_add(&t, "%s: %s%s [", fn, pfx ? pfx : "", name ? name : "(null)");
  for (int k = 0; shape && k < ndim; k++)
    nn_text_add(&t, "%s%lld", k ? ", " : "", (long long)shape[k]);
  nn_text_add(&t, "]");
  nn_error_prefix(ctx, "%s", buf);
}

ad_tensor *nn_param_new_at(nn_params *list, const char *fn, const char *pfx, const char *name,
                           ad_dtype dtype, int ndim, const int64_t *shape, nn_init init,
                           ad_rng *rng) {
  ad_ctx *ctx = nn_params_ctx(list);
  ad_tensor *t = ad_zeros(ctx, dtype, ndim, shape);
  bool ok = t && (init.kind == NN_INIT_ZEROS || nn_init_tensor(ctx, t, init, rng) == AD_OK);
  if (!ok)
    ad_tensor_free(t);
  else if (nn_params_add(list, name, t, true) == AD_OK) /* frees t when it fails */
    return t;
  nn_error_tensor(ctx, fn, pfx, name, ndim, shape);
  return NULL;
}

ad_tensor *nn_param_new(nn_params *list, const char *fn, const char *name, ad_dtype dtype, int ndim,
                        const int64_t *shape, nn_init init, ad_rng *rng) {
  return nn_param_new_at(list, fn, NULL, name, dtype, ndim, shape, init, rng);
}

/* Grows the four parallel arrays together. */
static bool params_reserve(nn_params *p, int need) {
  if (need <= p->cap) return true;
  int cap = p->cap ? p->cap * 2 : 8;
  while (cap < need) cap *= 2;
  ad_ctx *ctx = p->ctx;
  char **names = ad_malloc(ctx, (size_t)cap * sizeof *names);
  ad_tensor **tensors = names ? ad_malloc(ctx, (size_t)cap * sizeof *tensors) : NULL;
  bool *owned = tensors ? ad_malloc(ctx, (size_t)cap * sizeof *owned) : NULL;
  param_entry **entries = owned ? ad_malloc(ctx, (size_t)cap * sizeof *entries) : NULL;
  if (!entries) {
    ad_free(ctx, names, (size_t)cap * sizeof *names);
    ad_free(ctx, tensors, (size_t)cap * sizeof *tensors);
    ad_free(ctx, owned, (size_t)cap * sizeof *owned);
    return false;
  }
  if (p->n) {
    memcpy(names, p->names, (size_t)p->n * sizeof *names);
    memcpy(tensors, p->tensors, (size_t)p->n * sizeof *tensors);
    memcpy(owned, p->owned, (size_t)p->n * sizeof *owned);
    memcpy(entries, p->entries, (size_t)p->n * sizeof *entries);
  }
  ad_free(ctx, p->names, (size_t)p->cap * sizeof *names);
  ad_free(ctx, p->tensors, (size_t)p->cap * sizeof *tensors);
  ad_free(ctx, p->owned, (size_t)p->cap * sizeof *owned);
  ad_free(ctx, p->entries, (size_t)p->cap * sizeof *entries);
  p->names = names;
  p->tensors = tensors;
  p->owned = owned;
  p->entries = entries;
  p->cap = cap;
  return true;
}

/* Adds t to a parameter or buffer list (p->buffers): fn and what name the
 * caller in messages. */
static ad_status list_add(nn_params *p, const char *fn, const char *name, ad_tensor *t, bool own,
                          nn_store store) {
  ad_ctx *ctx = p->ctx;
  ad_status st = AD_OK;
  const char *what = p->buffers ? "buffer" : "parameter";
  char buf[64];
  if (!t)
    st = ad_set_null_error(ctx, "%s: tensor '%s' is NULL", fn, name ? name : "?");
  else if (!name || !name[0])
    st = ad_set_error(ctx, AD_ERR_ARG, "%s: a %s needs a non-empty name", fn, what);
  else if (ad_tensor_ctx(t) && ad_tensor_ctx(t) != ctx) /* NULL: freed, refused below */
    st = ad_set_error(ctx, AD_ERR_ARG,
                      "%s: '%s' was made on context %p and the list on context %p; a %s list "
                      "takes tensors of its own context",
                      fn, name, (void *)ad_tensor_ctx(t), (void *)ctx, what);
  else if (ad_tensor_is_temporary(t))
    st = ad_set_error(ctx, AD_ERR_ARG,
                      "%s: '%s' is a temporary made by an op; %ss must be persistent tensors", fn,
                      name, what);
  else if (!p->buffers && t->dtype != AD_F32 && t->dtype != AD_F64)
    st = ad_set_error(ctx, AD_ERR_DTYPE, "%s: '%s' %s is %s; parameters must be float", fn, name,
                      ad_shape_str(t, buf, sizeof buf), ad_dtype_name(t->dtype));
  else if (p->buffers && ad_tensor_requires_grad(t))
    st = ad_set_error(ctx, AD_ERR_ARG,
                      "%s: '%s' requires grad; a buffer is not trained (make it a parameter)", fn,
                      name);
  else if ((unsigned)store > NN_STORE_I64)
    st = ad_set_error(ctx, AD_ERR_ARG, "%s: '%s' has unknown store %d", fn, name, (int)store);
  else if (nn_params_find(p, name))
    st = ad_set_error(ctx, AD_ERR_ARG, "%s: a %s named '%s' exists", fn, what, name);
  int first = st == AD_OK ? nn_params_repeat(p, p->n, t) : -1;
  if (first >= 0 && own)
    st = ad_set_error(ctx, AD_ERR_ARG,
                      "%s: '%s' is the tensor listed as '%s'; a tensor listed twice (tied "
                      "weights) is owned by one entry at most, and not by the second",
                      fn, name, p->names[first]);
  if (st != AD_OK) {
    if (own && first < 0) ad_tensor_free(t); /* not one the list holds */
    return st;
  }
  param_entry *e = NULL;
  char *copy = NULL;
  if (!params_reserve(p, p->n + 1) || !(e = ad_malloc(ctx, sizeof *e)) ||
      !(copy = nn_strdup(ctx, name))) {
    ad_free(ctx, e, sizeof *e);
    if (own) ad_tensor_free(t);
    return AD_ERR_OOM;
  }
  memset(e, 0, sizeof *e);
  e->name = copy;
  e->index = p->n;
  e->store = store;
  HASH_ADD_KEYPTR(hh, p->by_name, e->name, strlen(e->name), e);
  if (e->oom) {
    nn_strfree(ctx, copy);
    ad_free(ctx, e, sizeof *e);
    if (own) ad_tensor_free(t);
    return ad_set_error(ctx, AD_ERR_OOM, "%s: out of memory growing the name map", fn);
  }
  /* the tensor takes the name, for messages and graph dumps: a layer's
   * "weight" becomes "0.weight" once a model lists it; last, so that a
   * call refused for memory leaves t's name as it was */
  ad_status named = ad_tensor_set_name(t, name);
  if (named != AD_OK) {
    HASH_DEL(p->by_name, e);
    nn_strfree(ctx, copy);
    ad_free(ctx, e, sizeof *e);
    if (own && named != AD_ERR_STATE) ad_tensor_free(t);
    return named;
  }
  if (!p->buffers) ad_tensor_set_requires_grad(t, true);
  p->repeats |= first >= 0;
  p->names[p->n] = copy;
  p->tensors[p->n] = t;
  p->owned[p->n] = own;
  p->entries[p->n] = e;
  p->n++;
  return AD_OK;
}

int nn_params_repeat(const nn_params *p, int i, const ad_tensor *t) {
  if (!p || (i < p->n && !p->repeats)) return -1; /* the common list: no tensor twice */
  for (int j = 0; j < i && j < p->n; j++)
    if (p->tensors[j] == t) return j;
  return -1;
}

ad_status nn_params_add(nn_params *p, const char *name, ad_tensor *t, bool own) {
  if (!p) {
    if (own) ad_tensor_free(t);
    return AD_ERR_NULL;
  }
  return list_add(p, p->buffers ? "buffers_add" : "params_add", name, t, own, NN_STORE_NATIVE);
}

ad_status nn_buffers_add(nn_params *b, const char *name, ad_tensor *t, bool own, nn_store store) {
  if (!b) {
    if (own) ad_tensor_free(t);
    return AD_ERR_NULL;
  }
  if (!b->buffers) {
    if (own) ad_tensor_free(t);
    return ad_set_error(b->ctx, AD_ERR_ARG,
                        "buffers_add: '%s' goes to a parameter list; buffers need a list from "
                        "nn_buffers_new",
                        name ? name : "?");
  }
  return list_add(b, "buffers_add", name, t, own, store);
}

nn_store nn_params_store(const nn_params *p, int i) {
  return p && i >= 0 && i < p->n ? p->entries[i]->store : NN_STORE_NATIVE;
}

ad_tensor *nn_params_find(const nn_params *p, const char *name) {
  if (!p || !name) return NULL;
  param_entry *e;
  HASH_FIND_STR(p->by_name, name, e);
  return e ? p->tensors[e->index] : NULL;
}

int nn_params_count(const nn_params *p) { return p ? p->n : 0; }

ad_tensor *nn_params_tensor(const nn_params *p, int i) {
  return p && i >= 0 && i < p->n ? p->tensors[i] : NULL;
}

const char *nn_params_name(const nn_params *p, int i) {
  return p && i >= 0 && i < p->n ? p->names[i] : NULL;
}

const char *const *nn_params_names(const nn_params *p) {
  return p ? (const char *const *)p->names : NULL;
}

ad_tensor *const *nn_params_tensors(const nn_params *p) { return p ? p->tensors : NULL; }

int64_t nn_params_numel(const nn_params *p) {
  int64_t n = 0;
  for (int i = 0; p && i < p->n; i++)
    if (nn_params_repeat(p, i, p->tensors[i]) < 0) n += p->tensors[i]->size;
  return n;
}

void nn_params_zero_grad(nn_params *p) {
  if (p && p->buffers) return; /* buffers have no gradient */
  for (int i = 0; p && i < p->n; i++) ad_tensor_zero_grad(p->tensors[i]);
}

/* ------------------------------------------------------- clipping and L2 */

/* The sum of the squares of g's elements (nn_sum_squares' fixed order). */
static double sum_squares(const ad_tensor *g) { return nn_sum_squares(g->dtype, g->size, g->data); }

/* Whether ts[i] is an earlier ts[j]'s tensor (checked when dedupe). */
static bool seen_before(ad_tensor *const *ts, int i, bool dedupe) {
  for (int j = 0; dedupe && j < i; j++)
    if (ts[j] == ts[i]) return true;
  return false;
}

double nn_clip_norm_tensors(ad_tensor *const *ts, int n, bool dedupe, double max_norm,
                            ad_status *st) {
  double sq = 0;
  *st = AD_OK;
  for (int i = 0; i < n; i++)
    if (ts[i]->grad && !seen_before(ts, i, dedupe)) sq += sum_squares(ts[i]->grad);
  double norm = sqrt(sq);
  double coef = max_norm / (norm + 1e-6);
  if (coef >= 1.0) return norm;
  /* the gradients are scaled through their data: an op of the tape may
   * have read one as a value (its backward would use the new values) */
  for (int i = 0; i < n; i++)
    if (ts[i]->grad && (*st = ad_tensor_mark_modified(ts[i]->grad)) != AD_OK) return NAN;
  for (int i = 0; i < n; i++) {
    ad_tensor *g = ts[i]->grad;
    if (!g || seen_before(ts, i, dedupe)) continue;
    if (g->dtype == AD_F32)
      for (int64_t k = 0; k < g->size; k++) ((float *)g->data)[k] *= (float)coef;
    else
      for (int64_t k = 0; k < g->size; k++) ((double *)g->data)[k] *= coef;
  }
  return norm;
}

ad_status nn_clip_value_tensors(ad_tensor *const *ts, int n, double clip) {
  /* the tensors with an element outside, noted first (as nn_clip_norm_tensors'
   * writes) so that a failed note changes nothing, then clamped: the others
   * are left unwritten (the first 256 remembered, later ones tested again) */
  enum { KEPT = 256 };
  uint64_t hit[KEPT / 64] = {0};
  for (int i = 0; i < n; i++) {
    ad_tensor *g = ts[i]->grad;
    if (!g || !nn_clip_outside(g->dtype, g->size, g->data, clip)) continue;
    ad_status st = ad_tensor_mark_modified(g);
    if (st != AD_OK) return st;
    if (i < KEPT) hit[i / 64] |= (uint64_t)1 << (i % 64);
  }
  for (int i = 0; i < n; i++) { /* idempotent: a tensor listed twice is clipped alike */
    ad_tensor *g = ts[i]->grad;
    bool out = i < KEPT ? (hit[i / 64] >> (i % 64)) & 1
                        : g && nn_clip_outside(g->dtype, g->size, g->data, clip);
    if (out) nn_clip_clamp(g->dtype, g->size, g->data, clip); /* NaN kept */
  }
  return AD_OK;
}

double nn_clip_grad_norm(nn_params *p, double max_norm) {
  if (!p || p->buffers) return 0; /* buffers have no gradient */
  if (!(max_norm >= 0)) {         /* a negative factor would flip every gradient */
    ad_set_error(p->ctx, AD_ERR_ARG, "clip_grad_norm: max_norm %g must be >= 0", max_norm);
    return NAN;
  }
  ad_status st;
  return nn_clip_norm_tensors(p->tensors, p->n, p->repeats, max_norm, &st);
}

void nn_clip_grad_value(nn_params *p, double clip) {
  if (!p || p->buffers) return; /* buffers have no gradient */
  if (!(clip >= 0)) {           /* [-clip, clip] would be empty */
    ad_set_error(p->ctx, AD_ERR_ARG, "clip_grad_value: clip %g must be >= 0", clip);
    return;
  }
  nn_clip_value_tensors(p->tensors, p->n, clip);
}

ad_tensor *nn_l2_penalty(ad_ctx *ctx, const nn_params *p, double lambda) {
  if (!ctx) return NULL;
  if (!p) {
    nn_null_arg(ctx, "l2_penalty", "parameter list");
    return NULL;
  }
  ad_tensor *total = NULL;
  for (int i = 0; i < p->n; i++) {
    ad_tensor *w = p->tensors[i];
    if (!ad_tensor_requires_grad(w) || nn_params_repeat(p, i, w) >= 0) continue; /* once */
    if (total && w->dtype != total->dtype) {
      ad_set_error(ctx, AD_ERR_DTYPE, "l2_penalty: parameters mix %s and %s ('%s')",
                   ad_dtype_name(total->dtype), ad_dtype_name(w->dtype), p->names[i]);
      return NULL;
    }
    ad_tensor *s = ad_sum(ctx, ad_square(ctx, w));
    total = total ? ad_add(ctx, total, s) : s;
    if (!total) return NULL;
  }
  if (!total) {
    ad_set_error(ctx, AD_ERR_ARG, "l2_penalty: no parameter requires grad");
    return NULL;
  }
  return ad_mul_scalar(ctx, total, lambda);
}

/* ----------------------------------------------------------- initializers */

void nn_fans(const ad_tensor *t, int64_t *fan_in, int64_t *fan_out) {
  int64_t in = 1, out = 1;
  if (t && t->ndim == 1) {
    in = out = t->shape[0];
  } else if (t && t->ndim >= 2) {
    int64_t field = 1;
    for (int k = 2; k < t->ndim; k++) field *= t->shape[k];
    in = t->shape[1] * field;
    out = t->shape[0] * field;
  }
  if (fan_in) *fan_in = in;
  if (fan_out) *fan_out = out;
}

/* The standard normal's quantile function given the offset of p from the
 * median, Phi^-1(1/2 + q) for q in [-1/2, 1/2] (-inf and inf at the ends),
 * from its lower half by symmetry: P. J. Acklam's rational approximation
 * (relative error below 1.2e-9) and one step of Halley's method, which
 * brings it to double precision. Taking q, not p, keeps the central part
 * exact where q is tiny: a truncated normal much wider than its bounds
 * draws q within a few ulps of 0, which 1/2 + q would round away. */
static double normal_quantile(double q) {
  static const double a[6] = {-3.969683028665376e+01, 2.209460984245205e+02,
                              -2.759285104469687e+02, 1.383577518672690e+02,
                              -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[5] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                              6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[6] = {-7.784894002430293e-03, -3.223964580411365e-01,
                              -2.400758277161838e+00, -2.549732539343734e+00,
                              4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[4] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                              3.754408661907416e+00};
  if (!(q > -0.5)) return -INFINITY;
  if (!(q < 0.5)) return INFINITY;
  if (q > 0) return -normal_quantile(-q);
  double x, e;
  if (q < 0.02425 - 0.5) { /* the tail, p < 0.02425 */
    double p = 0.5 + q;    /* exact: q is in [-1/2, -1/4] */
    double t = sqrt(-2 * log(p));
    x = (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) /
        ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1);
    e = 0.5 * erfc(-x / sqrt(2.0)) - p; /* Phi(x) - p */
  } else {
    double r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    e = 0.5 * erf(x / sqrt(2.0)) - q; /* Phi(x) - p, without forming p */
  }
  double u = e * 2.5066282746310002 * exp(x * x / 2); /* sqrt(2 pi) */
  return x - u / (1 + x * u / 2);
}

/* x -= beta (v . x) v over the elements k..m-1: the Householder reflection
 * I - beta v v^T applied to the column x. */
static void reflect(const double *v, double beta, double *x, int64_t k, int64_t m) {
  double dot = 0;
  for (int64_t i = k; i < m; i++) dot += v[i] * x[i];
  dot *= beta;
  for (int64_t i = k; i < m; i++) x[i] -= dot * v[i];
}

/* PyTorch's orthogonal_ on t seen as rows x cols (t->size > 0, rows =
 * shape[0]): standard normal draws, row-major, form the matrix, taken
 * transposed when rows < cols so that the factored matrix T is tall, m x n;
 * Householder reflections give T = Q R; each column of Q is multiplied by
 * the sign of R's diagonal entry (the factorization with R's diagonal
 * positive, which is unique, so LAPACK's and this one agree), and Q, or
 * its transpose, times gain is the result. Column-major work arrays, so
 * every reflection runs along contiguous memory. t is written only once
 * everything succeeded. */
static ad_status init_orthogonal(ad_ctx *ctx, ad_tensor *t, double gain, ad_rng *rng) {
  int64_t size = t->size, rows = t->shape[0], cols = size / rows;
  bool wide = rows < cols;
  int64_t m = wide ? cols : rows, n = wide ? rows : cols;
  if ((uint64_t)size > SIZE_MAX / (4 * sizeof(double)))
    return ad_set_error(ctx, AD_ERR_OOM, "init: orthogonal of %lld elements is too large",
                        (long long)size);
  size_t bytes = (size_t)(2 * size + 2 * n) * sizeof(double);
  double *a = ad_malloc(ctx, bytes); /* T; then v_k from R's diagonal down */
  if (!a) return AD_ERR_OOM;
  /* the write is noted before the first draw, so that a failure to note it
   * (AD_ERR_OOM) leaves the generator as well as t untouched */
  ad_status marked = ad_tensor_mark_modified(t); /* written through its data below */
  if (marked != AD_OK) {
    ad_free(ctx, a, bytes);
    return marked;
  }
  double *q = a + size, *beta = q + size, *diag = beta + n; /* Q; 2 / |v_k|^2; R_kk */
  for (int64_t r = 0; r < rows; r++)                        /* T = the draws, or their transpose */
    for (int64_t c = 0; c < cols; c++) a[wide ? r * cols + c : c * rows + r] = ad_rng_normal(rng);
  for (int64_t k = 0; k < n; k++) {
    double *v = a + k * m, norm2 = 0, vnorm2 = 0;
    for (int64_t i = k; i < m; i++) norm2 += v[i] * v[i];
    double alpha = v[k] >= 0 ? -sqrt(norm2) : sqrt(norm2);
    diag[k] = alpha, beta[k] = 0;
    if (norm2 == 0) continue; /* nothing to reflect; PyTorch's sign(0) zeroes the column */
    v[k] -= alpha;            /* v = x - alpha e_k: the reflection maps x to alpha e_k */
    for (int64_t i = k; i < m; i++) vnorm2 += v[i] * v[i];
    beta[k] = 2 / vnorm2;
    for (int64_t j = k + 1; j < n; j++) reflect(v, beta[k], a + j * m, k, m);
  }
  /* Q = H_0 H_1 ... H_{n-1} applied to the first n columns of I, the last
   * reflection first; H_k leaves the columns before k (still e_j) alone. */
  memset(q, 0, (size_t)size * sizeof(double));
  for (int64_t j = 0; j < n; j++) q[j * m + j] = 1;
  for (int64_t k = n - 1; k >= 0; k--) {
    const double *v = a + k * m;
    if (beta[k] == 0) continue;
    for (int64_t j = k; j < n; j++) reflect(v, beta[k], q + j * m, k, m);
  }
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      int64_t j = wide ? r : c, at = wide ? r * cols + c : c * rows + r; /* Q^T or Q */
      double sign = diag[j] > 0 ? 1 : diag[j] < 0 ? -1 : 0;
      double w = gain * sign * q[at];
      if (t->dtype == AD_F32)
        ((float *)t->data)[r * cols + c] = (float)w;
      else
        ((double *)t->data)[r * cols + c] = w;
    }
  ad_free(ctx, a, bytes);
  return AD_OK;
}

/* A number init uses for a float32 tensor t within float32's range; false
 * with AD_ERR_ARG naming it otherwise (PyTorch refuses to convert such a
 * constant, uniform bound or trunc_normal bound; its values would be
 * infinite). */
static bool f32_fits(ad_ctx *ctx, const ad_tensor *t, const char *what, double v) {
  if (t->dtype != AD_F32 || fabs(v) <= FLT_MAX) return true;
  /* %.9g: 3.4028235e+38 (refused) reads apart from FLT_MAX (taken) */
  ad_set_error(ctx, AD_ERR_ARG, "init: %s %.9g is outside float32's range (the tensor is f32)",
               what, v);
  return false;
}

/* A uniform draw v of [lo, hi) as float32: rounding carries every draw
 * within 2^-25 (hi - lo) of hi onto a float at or above hi (1 in [0, 1):
 * one draw in 3e7), which [lo, hi) excludes, as PyTorch's uniform_ and
 * ad_rand do; such a value becomes the largest float below hi, but not
 * below lo. */
static float below_hi_f32(double v, double lo, double hi) {
  float f = (float)v;
  while ((double)f >= hi) {
    float g = nextafterf(f, -INFINITY);
    if ((double)g < lo) break;
    f = g;
  }
  return f;
}

ad_status nn_init_tensor(ad_ctx *ctx, ad_tensor *t, nn_init init, ad_rng *rng) {
  if (!ctx) return AD_ERR_NULL;
  if (!t) return nn_null_arg(ctx, "init", "tensor");
  /* freed, of another context, or a temporary of a tape that was reset
   * (its memory may be another tensor's now, which the fill would write) */
  ad_status ok = nn_check_input(ctx, "init", "tensor", t);
  if (ok != AD_OK) return ok;
  if (t->dtype != AD_F32 && t->dtype != AD_F64)
    return ad_set_error(ctx, AD_ERR_DTYPE, "init: tensor is %s; a float dtype is needed",
                        ad_dtype_name(t->dtype));
  int64_t fan_in, fan_out;
  nn_fans(t, &fan_in, &fan_out);
  bool uniform = true;
  double lo = 0, hi = 0, mean = 0, sd = 0;
  switch (init.kind) {
  case NN_INIT_ZEROS:
    return ad_tensor_fill(t, 0.0); /* AD_ERR_OOM when the write cannot be noted */
  case NN_INIT_CONSTANT:
    if (!isfinite(init.a))
      return ad_set_error(ctx, AD_ERR_ARG, "init: constant %g is not finite", init.a);
    if (!f32_fits(ctx, t, "constant", init.a)) return AD_ERR_ARG;
    return ad_tensor_fill(t, init.a);
  case NN_INIT_UNIFORM:
    if (!(init.b >= init.a && isfinite(init.a) && isfinite(init.b) && isfinite(init.b - init.a)))
      return ad_set_error(ctx, AD_ERR_ARG, "init: uniform needs finite a <= b, got [%g, %g)",
                          init.a, init.b);
    if (!f32_fits(ctx, t, "uniform bound", init.a) || !f32_fits(ctx, t, "uniform bound", init.b))
      return AD_ERR_ARG;
    lo = init.a, hi = init.b;
    break;
  case NN_INIT_NORMAL:
    if (!(init.b >= 0 && isfinite(init.b) && isfinite(init.a)))
      return ad_set_error(ctx, AD_ERR_ARG,
                          "init: normal needs a finite mean and std >= 0, got "
                          "%g and %g",
                          init.a, init.b);
    uniform = false, mean = init.a, sd = init.b;
    break;
  case NN_INIT_XAVIER_UNIFORM:
  case NN_INIT_XAVIER_NORMAL: {
    double gain = init.a ? init.a : 1.0;
    /* a negative gain (PyTorch refuses the bounds or std < 0 it makes) too */
    if (!(gain > 0) || !isfinite(gain))
      return ad_set_error(ctx, AD_ERR_ARG, "init: gain %g must be positive and finite", gain);
    if (fan_in + fan_out == 0)
      return ad_set_error(ctx, AD_ERR_ARG, "init: xavier needs a non-empty fan");
    double base = 2.0 / (double)(fan_in + fan_out);
    uniform = init.kind == NN_INIT_XAVIER_UNIFORM;
    hi = gain * sqrt(3.0 * base), lo = -hi; /* sqrt(6 / (fan_in + fan_out)) */
    if (uniform && !f32_fits(ctx, t, "xavier bound", hi)) return AD_ERR_ARG;
    sd = gain * sqrt(base);
    break;
  }
  case NN_INIT_HE_UNIFORM:
  case NN_INIT_HE_NORMAL:
  case NN_INIT_HE_UNIFORM_FAN_OUT:
  case NN_INIT_HE_NORMAL_FAN_OUT: {
    double gain = init.a ? init.a : sqrt(2.0);
    bool out = init.kind == NN_INIT_HE_UNIFORM_FAN_OUT || init.kind == NN_INIT_HE_NORMAL_FAN_OUT;
    int64_t fan = out ? fan_out : fan_in;
    if (!(gain > 0) || !isfinite(gain))
      return ad_set_error(ctx, AD_ERR_ARG, "init: gain %g must be positive and finite", gain);
    if (fan == 0)
      return ad_set_error(ctx, AD_ERR_ARG, "init: he needs %s > 0", out ? "fan_out" : "fan_in");
    uniform = init.kind == NN_INIT_HE_UNIFORM || init.kind == NN_INIT_HE_UNIFORM_FAN_OUT;
    sd = gain / sqrt((double)fan);
    hi = sqrt(3.0) * sd, lo = -hi;
    if (uniform && !f32_fits(ctx, t, "he bound", hi)) return AD_ERR_ARG;
    break;
  }
  case NN_INIT_ORTHOGONAL: {
    double gain = init.a ? init.a : 1.0;
    if (!isfinite(gain)) return ad_set_error(ctx, AD_ERR_ARG, "init: gain %g is not finite", gain);
    if (t->ndim < 2)
      return ad_set_error(ctx, AD_ERR_SHAPE, "init: orthogonal needs 2 or more dimensions, got %d",
                          t->ndim);
    if (!rng) return ad_set_error(ctx, AD_ERR_NULL, "init: a random initializer needs an rng");
    if (!nn_rng_seeded(ctx, "init", rng)) return AD_ERR_ARG;
    return t->size == 0 ? AD_OK : init_orthogonal(ctx, t, gain, rng);
  }
  case NN_INIT_TRUNC_NORMAL: {
    double bound = init.b ? init.b : 2.0;
    if (!(init.a > 0 && isfinite(init.a) && bound > 0 && isfinite(bound)))
      return ad_set_error(ctx, AD_ERR_ARG,
                          "init: trunc_normal needs a finite std > 0 and bound >= 0, got %g and %g",
                          init.a, init.b);
    if (!f32_fits(ctx, t, "trunc_normal bound", bound)) return AD_ERR_ARG;
    if (!rng) return ad_set_error(ctx, AD_ERR_NULL, "init: a random initializer needs an rng");
    if (!nn_rng_seeded(ctx, "init", rng)) return AD_ERR_ARG;
    ad_status marked = ad_tensor_mark_modified(t); /* written through its data below */
    if (marked != AD_OK) return marked;
    /* PyTorch's inverse transform: u uniform between Phi(-bound/std) and
     * Phi(bound/std), x = std Phi^-1(u), clamped against rounding. u is
     * formed as its offset from 1/2, uniform within +-h, h = Phi(bound/std)
     * - 1/2 (through erf, exact however small): 1/2 + that offset would
     * round to a handful of values when std is 1e14 times the bound. */
    double h = 0.5 * erf(bound / init.a / sqrt(2.0));
    for (int64_t i = 0; i < t->size; i++) {
      double x = init.a * normal_quantile(h * (2 * ad_rng_uniform(rng) - 1));
      x = x < -bound ? -bound : x > bound ? bound : x;
      if (t->dtype == AD_F32)
        ((float *)t->data)[i] = (float)x;
      else
        ((double *)t->data)[i] = x;
    }
    return AD_OK;
  }
  default:
    return ad_set_error(ctx, AD_ERR_ARG, "init: unknown or default initializer kind %d",
                        (int)init.kind);
  }
  if (!rng) return ad_set_error(ctx, AD_ERR_NULL, "init: a random initializer needs an rng");
  if (!nn_rng_seeded(ctx, "init", rng)) return AD_ERR_ARG;
  ad_status marked = ad_tensor_mark_modified(t); /* written through its data below */
  if (marked != AD_OK) return marked;
  if (t->dtype == AD_F32) {
    float *d = t->data;
    for (int64_t i = 0; i < t->size; i++)
      d[i] = uniform ? below_hi_f32(lo + (hi - lo) * ad_rng_uniform(rng), lo, hi)
                     : (float)(mean + sd * ad_rng_normal(rng));
  } else {
    double *d = t->data;
    for (int64_t i = 0; i < t->size; i++) {
      double v = uniform ? lo + (hi - lo) * ad_rng_uniform(rng) : mean + sd * ad_rng_normal(rng);
      d[i] = uniform && v >= hi && lo < hi ? nextafter(hi, -INFINITY) : v;
    }
  }
  return AD_OK;
}
