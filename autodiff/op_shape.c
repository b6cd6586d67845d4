/* op_shape.c: reshape (a view), permute, expand / sum_to, narrow / pad,
 * concat, index_select / index_add. Each op's gradient is its partner. */
#include "ad_internal.h"

/* Shapes travel in attrs as i[0] = ndim, i[1..ndim] = lengths. */
static void shape_to_attrs(ad_attrs *at, int ndim, const int64_t *shape) {
  at->i[0] = ndim;
  for (int k = 0; k < ndim; k++) at->i[1 + k] = shape[k];
}

static ad_status target_shape(ad_ctx *ctx, const char *op, const ad_attrs *at, int *ndim,
                              int64_t *shape) {
  if (at->i[0] < 0 || at->i[0] > AD_MAX_DIMS)
    return ad_set_error(ctx, AD_ERR_ARG, "%s: ndim %lld out of range 0..%d", op,
                        (long long)at->i[0], AD_MAX_DIMS);
  *ndim = (int)at->i[0];
  for (int k = 0; k < *ndim; k++) shape[k] = at->i[1 + k];
  return AD_OK;
}

/* Product of dims [from, to). */
static int64_t span(const ad_tensor *x, int from, int to) {
  int64_t n = 1;
  for (int k = from; k < to; k++) n *= x->shape[k];
  return n;
}

/* -------------------------------------------------------------- reshape */

ad_status shape_reshape(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                        int *ndim, int64_t *shape) {
  (void)n;
  if (target_shape(ctx, "reshape", at, ndim, shape) != AD_OK) return ctx->status;
  int infer = -1;
  int64_t known = 1;
  for (int k = 0; k < *ndim; k++) {
    if (shape[k] == -1 && infer < 0) {
      infer = k;
    } else if (shape[k] < 0) {
      return ad_set_error(ctx, AD_ERR_ARG, "reshape: bad length %lld at dim %d",
                          (long long)shape[k], k);
    } else {
      known *= shape[k];
    }
  }
  char a[64];
  if (infer >= 0) {
    if (known == 0 || in[0]->size % known != 0)
      return ad_set_error(ctx, AD_ERR_SHAPE, "reshape: cannot infer -1 for %s (%lld elements)",
                          ad_shape_str(in[0], a, sizeof a), (long long)in[0]->size);
    shape[infer] = in[0]->size / known;
    known *= shape[infer];
  }
  if (known != in[0]->size)
    return ad_set_error(ctx, AD_ERR_SHAPE, "reshape: %s has %lld elements, the new shape %lld",
                        ad_shape_str(in[0], a, sizeof a), (long long)in[0]->size, (long long)known);
  *dt = in[0]->dtype;
  return AD_OK;
}

/* y shares x's data */
void fwd_view(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n, (void)at;
  out->data = in[0]->data;
}

/* y = reshape(x);  dx += reshape(dy, shape(x)) */
ad_status bwd_reshape(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                      ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  return (g[0] = ad_reshape(ctx, dy, in[0]->ndim, in[0]->shape)) ? AD_OK : ctx->status;
}

ad_tensor *ad_reshape(ad_ctx *ctx, ad_tensor *x, int ndim, const int64_t *shape) {
  if (ctx && (ndim < 0 || ndim > AD_MAX_DIMS || (ndim && !shape))) {
    ad_set_error(ctx, AD_ERR_ARG, "reshape: ndim %d out of range 0..%d", ndim, AD_MAX_DIMS);
    return NULL;
  }
  ad_attrs at = {0};
  shape_to_attrs(&at, ndim, shape);
  return ad_apply1(ctx, AD_OP_RESHAPE, x, &at);
}

int sample_reshape(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  if (v > 0) return 0;
  int64_t s[2] = {3, 4}, t[3] = {2, -1, 3};
  shape_to_attrs(at, 3, t);
  return (in[0] = ad_sample_tensor(ctx, rng, dt, 2, s, -1, 1, true)) ? 1 : -1;
}

/* -------------------------------------------------------------- permute */

ad_status shape_permute(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                        int *ndim, int64_t *shape) {
  (void)n;
  const ad_tensor *x = in[0];
  if (at->i[0] != x->ndim)
    return ad_set_error(ctx, AD_ERR_ARG, "permute: %lld axes given for a %d-d tensor",
                        (long long)at->i[0], x->ndim);
  bool seen[AD_MAX_DIMS] = {0};
  for (int k = 0; k < x->ndim; k++) {
    int64_t p = at->i[1 + k];
    if (p < 0 || p >= x->ndim || seen[p])
      return ad_set_error(ctx, AD_ERR_ARG, "permute: axis list is not a permutation of 0..%d",
                          x->ndim - 1);
    seen[p] = true;
    shape[k] = x->shape[p];
  }
  *ndim = x->ndim;
  *dt = x->dtype;
  return AD_OK;
}

void fwd_permute(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n;
  const ad_tensor *x = in[0];
  int nd = x->ndim;
  int64_t xst[AD_MAX_DIMS], st[AD_MAX_DIMS], idx[AD_MAX_DIMS] = {0};
  for (int k = nd - 1, s = 1; k >= 0; s *= (int)x->shape[k], k--) xst[k] = s;
  for (int k = 0; k < nd; k++) st[k] = xst[at->i[1 + k]];
  size_t es = ad_dsize(x->dtype);
  int64_t off = 0;
  for (int64_t o = 0; o < out->size; o++) {
    memcpy((char *)out->data + (size_t)o * es, (const char *)x->data + (size_t)off * es, es);
    for (int k = nd - 1; k >= 0; k--) { /* odometer over out's index */
      off += st[k];
      if (++idx[k] < out->shape[k]) break;
      off -= st[k] * idx[k];
      idx[k] = 0;
    }
  }
}

/* y = permute(x, p);  dx += permute(dy, p^-1) */
ad_status bwd_permute(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                      ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)in, (void)y, (void)needs;
  int inv[AD_MAX_DIMS];
  for (int k = 0; k < (int)at->i[0]; k++) inv[at->i[1 + k]] = k;
  return (g[0] = ad_permute(ctx, dy, inv)) ? AD_OK : ctx->status;
}

ad_tensor *ad_permute(ad_ctx *ctx, ad_tensor *x, const int *perm) {
  if (!x || !ctx) return ad_apply1(ctx, AD_OP_PERMUTE, x, NULL);
  if (!perm) {
    ad_set_error(ctx, AD_ERR_NULL, "permute: perm is NULL");
    return NULL;
  }
  ad_attrs at = {0};
  at.i[0] = x->ndim;
  for (int k = 0; k < x->ndim; k++) at.i[1 + k] = perm[k];
  return ad_apply1(ctx, AD_OP_PERMUTE, x, &at);
}

ad_tensor *ad_transpose(ad_ctx *ctx, ad_tensor *x, int d0, int d1) {
  if (!x || !ctx) return ad_apply1(ctx, AD_OP_PERMUTE, x, NULL);
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

int sample_permute(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  if (v > 1) return 0;
  int64_t s[3] = {2, 3, 4};
  at->i[0] = v ? 2 : 3;
  at->i[1] = v ? 1 : 2;
  at->i[2] = v ? 0 : 0;
  at->i[3] = 1;
  return (in[0] = ad_sample_tensor(ctx, rng, dt, v ? 2 : 3, v ? s + 1 : s, -1, 1, true)) ? 1 : -1;
}

/* ------------------------------------------------------ expand / sum_to */

ad_status shape_expand(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                       int *ndim, int64_t *shape) {
  (void)n;
  if (target_shape(ctx, "expand", at, ndim, shape) != AD_OK) return ctx->status;
  int64_t b[AD_MAX_DIMS];
  int nb;
  bool ok = ad_broadcast_shape(in[0]->ndim, in[0]->shape, *ndim, shape, &nb, b) && nb == *ndim;
  for (int k = 0; ok && k < nb; k++) ok = b[k] == shape[k];
  if (!ok) {
    char a[64];
    return ad_set_error(ctx, AD_ERR_SHAPE, "expand: %s does not broadcast to a %d-d shape",
                        ad_shape_str(in[0], a, sizeof a), *ndim);
  }
  *dt = in[0]->dtype;
  return AD_OK;
}

void fwd_expand(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n, (void)at;
  ad_bc_rows it;
  ad_bc_init(&it, 1, in, out);
  size_t es = ad_dsize(out->dtype);
  int64_t s = out->ndim ? it.st[0][out->ndim - 1] : 0;
  for (int64_t r = 0; r < it.rows; r++) {
    int64_t off;
    ad_bc_row(&it, out, r, &off);
    char *dst = (char *)out->data + (size_t)(r * it.len) * es;
    const char *src = (const char *)in[0]->data + (size_t)off * es;
    if (s == 1)
      memcpy(dst, src, (size_t)it.len * es);
    else
      for (int64_t i = 0; i < it.len; i++) memcpy(dst + (size_t)i * es, src, es);
  }
}

/* y = expand(x, s);  dx += sum_to(dy, shape(x)) */
ad_status bwd_expand(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                     ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  return (g[0] = ad_sum_to(ctx, dy, in[0]->ndim, in[0]->shape)) ? AD_OK : ctx->status;
}

ad_tensor *ad_expand(ad_ctx *ctx, ad_tensor *x, int ndim, const int64_t *shape) {
  if (ctx && (ndim < 0 || ndim > AD_MAX_DIMS || (ndim && !shape))) {
    ad_set_error(ctx, AD_ERR_ARG, "expand: ndim %d out of range", ndim);
    return NULL;
  }
  ad_attrs at = {0};
  shape_to_attrs(&at, ndim, shape);
  return ad_apply1(ctx, AD_OP_EXPAND, x, &at);
}

int sample_expand(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  if (v > 1) return 0;
  int64_t s[2] = {3, 1}, t[3] = {2, 3, 4};
  shape_to_attrs(at, 3, t);
  return (in[0] = ad_sample_tensor(ctx, rng, dt, v ? 0 : 2, s, -1, 1, true)) ? 1 : -1;
}

ad_status shape_sum_to(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                       int *ndim, int64_t *shape) {
  (void)n;
  if (target_shape(ctx, "sum_to", at, ndim, shape) != AD_OK) return ctx->status;
  int64_t b[AD_MAX_DIMS];
  int nb;
  bool ok =
      ad_broadcast_shape(in[0]->ndim, in[0]->shape, *ndim, shape, &nb, b) && nb == in[0]->ndim;
  for (int k = 0; ok && k < nb; k++) ok = b[k] == in[0]->shape[k];
  if (!ok) {
    char a[64];
    return ad_set_error(ctx, AD_ERR_SHAPE, "sum_to: a %d-d shape does not broadcast to %s", *ndim,
                        ad_shape_str(in[0], a, sizeof a));
  }
  *dt = in[0]->dtype;
  return AD_OK;
}

/* sum_to where every row of x adds into all of out ([R,C] -> [C], a bias
 * gradient): columns [b, e) of every row, rows in order as in the serial
 * loop, so a split over columns changes no result. */
typedef struct cols_job {
  const ad_tensor *x;
  ad_tensor *out;
  int64_t rows, len;
} cols_job;

static void sum_cols(void *ud, int64_t b, int64_t e) {
  const cols_job *j = ud;
  for (int64_t r = 0; r < j->rows; r++) {
    if (j->x->dtype == AD_F32) {
      const float *X = (const float *)j->x->data + r * j->len;
      float *Y = j->out->data;
      for (int64_t i = b; i < e; i++) Y[i] += X[i];
    } else {
      const double *X = (const double *)j->x->data + r * j->len;
      double *Y = j->out->data;
      for (int64_t i = b; i < e; i++) Y[i] += X[i];
    }
  }
}

void fwd_sum_to(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n, (void)at;
  const ad_tensor *x = in[0];
  memset(out->data, 0, (size_t)out->size * ad_dsize(out->dtype));
  /* walk x row by row; out is seen through x's shape */
  ad_bc_rows it;
  ad_tensor *o = out;
  ad_bc_init(&it, 1, &o, x);
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
      for (int64_t i = 0; i < it.len; i++) Y[i * s] += X[i];
    } else {
      const double *X = (const double *)x->data + r * it.len;
      double *Y = (double *)out->data + off;
      for (int64_t i = 0; i < it.len; i++) Y[i * s] += X[i];
    }
  }
}

/* y = sum_to(x, s);  dx += expand(dy, shape(x)) */
ad_status bwd_sum_to(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                     ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  return (g[0] = ad_expand(ctx, dy, in[0]->ndim, in[0]->shape)) ? AD_OK : ctx->status;
}

ad_tensor *ad_sum_to(ad_ctx *ctx, ad_tensor *x, int ndim, const int64_t *shape) {
  if (ctx && (ndim < 0 || ndim > AD_MAX_DIMS || (ndim && !shape))) {
    ad_set_error(ctx, AD_ERR_ARG, "sum_to: ndim %d out of range", ndim);
    return NULL;
  }
  ad_attrs at = {0};
  shape_to_attrs(&at, ndim, shape);
  return ad_apply1(ctx, AD_OP_SUM_TO, x, &at);
}

int sample_sum_to(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  if (v > 2) return 0;
  int64_t s[3] = {2, 3, 4}, t[3][2] = {{3, 1}, {4, 0}, {0, 0}};
  shape_to_attrs(at, 2 - v, t[v]);
  return (in[0] = ad_sample_tensor(ctx, rng, dt, 3, s, -1, 1, true)) ? 1 : -1;
}

/* -------------------------------------------------------- narrow / pad */

static ad_status axis_arg(ad_ctx *ctx, const char *op, const ad_tensor *x, int64_t axis, int *ax) {
  *ax = ad_norm_axis((int)axis, x->ndim);
  if (*ax < 0) {
    char a[64];
    return ad_set_error(ctx, AD_ERR_ARG, "%s: axis %lld out of range for %s", op, (long long)axis,
                        ad_shape_str(x, a, sizeof a));
  }
  return AD_OK;
}

/* Copies a block along axis: for each outer index, len*inner elements from
 * src at soff to dst at doff (offsets along axis). */
static void copy_axis(const ad_tensor *src, int64_t sn, int64_t soff, ad_tensor *dst, int64_t dn,
                      int64_t doff, int64_t len, int64_t outer, int64_t inner) {
  size_t es = ad_dsize(src->dtype);
  for (int64_t o = 0; o < outer; o++)
    memcpy((char *)dst->data + (size_t)((o * dn + doff) * inner) * es,
           (const char *)src->data + (size_t)((o * sn + soff) * inner) * es,
           (size_t)(len * inner) * es);
}

ad_status shape_narrow(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                       int *ndim, int64_t *shape) {
  (void)n;
  const ad_tensor *x = in[0];
  int ax;
  if (axis_arg(ctx, "narrow", x, at->i[0], &ax) != AD_OK) return ctx->status;
  int64_t start = at->i[1], len = at->i[2];
  if (start < 0 || len < 0 || start + len > x->shape[ax]) {
    char a[64];
    return ad_set_error(ctx, AD_ERR_ARG,
                        "narrow: range %lld..%lld outside 0..%lld of axis %d of %s",
                        (long long)start, (long long)(start + len), (long long)x->shape[ax], ax,
                        ad_shape_str(x, a, sizeof a));
  }
  *ndim = x->ndim;
  memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  shape[ax] = len;
  *dt = x->dtype;
  return AD_OK;
}

void fwd_narrow(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n;
  const ad_tensor *x = in[0];
  int ax = ad_norm_axis((int)at->i[0], x->ndim);
  copy_axis(x, x->shape[ax], at->i[1], out, at->i[2], 0, at->i[2], span(x, 0, ax),
            span(x, ax + 1, x->ndim));
}

/* y = x[start:start+len];  dx += pad(dy, before = start, after = n - start - len) */
ad_status bwd_narrow(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                     ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)y, (void)needs;
  int ax = ad_norm_axis((int)at->i[0], in[0]->ndim);
  g[0] = ad_pad(ctx, dy, ax, at->i[1], in[0]->shape[ax] - at->i[1] - at->i[2]);
  return g[0] ? AD_OK : ctx->status;
}

ad_tensor *ad_narrow(ad_ctx *ctx, ad_tensor *x, int axis, int64_t start, int64_t len) {
  ad_attrs at = {.i = {axis, start, len}};
  return ad_apply1(ctx, AD_OP_NARROW, x, &at);
}

int sample_narrow(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  if (v > 1) return 0;
  int64_t s[2] = {4, 5};
  at->i[0] = v ? -1 : 0;
  at->i[1] = 1;
  at->i[2] = v ? 3 : 2;
  return (in[0] = ad_sample_tensor(ctx, rng, dt, 2, s, -1, 1, true)) ? 1 : -1;
}

ad_status shape_pad(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                    int *ndim, int64_t *shape) {
  (void)n;
  const ad_tensor *x = in[0];
  int ax;
  if (axis_arg(ctx, "pad", x, at->i[0], &ax) != AD_OK) return ctx->status;
  if (at->i[1] < 0 || at->i[2] < 0)
    return ad_set_error(ctx, AD_ERR_ARG, "pad: negative padding %lld, %lld", (long long)at->i[1],
                        (long long)at->i[2]);
  *ndim = x->ndim;
  memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  shape[ax] += at->i[1] + at->i[2];
  *dt = x->dtype;
  return AD_OK;
}

void fwd_pad(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n;
  const ad_tensor *x = in[0];
  int ax = ad_norm_axis((int)at->i[0], x->ndim);
  memset(out->data, 0, (size_t)out->size * ad_dsize(out->dtype));
  copy_axis(x, x->shape[ax], 0, out, out->shape[ax], at->i[1], x->shape[ax], span(x, 0, ax),
            span(x, ax + 1, x->ndim));
}

/* y = pad(x, before, after);  dx += narrow(dy, before, len(x)) */
ad_status bwd_pad(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)y, (void)needs;
  int ax = ad_norm_axis((int)at->i[0], in[0]->ndim);
  return (g[0] = ad_narrow(ctx, dy, ax, at->i[1], in[0]->shape[ax])) ? AD_OK : ctx->status;
}

ad_tensor *ad_pad(ad_ctx *ctx, ad_tensor *x, int axis, int64_t before, int64_t after) {
  ad_attrs at = {.i = {axis, before, after}};
  return ad_apply1(ctx, AD_OP_PAD, x, &at);
}

int sample_pad(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  if (v > 1) return 0;
  int64_t s[2] = {3, 2};
  at->i[0] = v;
  at->i[1] = 1;
  at->i[2] = 2;
  return (in[0] = ad_sample_tensor(ctx, rng, dt, 2, s, -1, 1, true)) ? 1 : -1;
}

/* --------------------------------------------------------------- concat */

ad_status shape_concat(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                       int *ndim, int64_t *shape) {
  if (ad_check_float_same(ctx, "concat", n, in) != AD_OK) return ctx->status;
  int ax;
  if (axis_arg(ctx, "concat", in[0], at->i[0], &ax) != AD_OK) return ctx->status;
  *ndim = in[0]->ndim;
  memcpy(shape, in[0]->shape, sizeof(int64_t) * (size_t)in[0]->ndim);
  shape[ax] = 0;
  for (int k = 0; k < n; k++) {
    bool ok = in[k]->ndim == in[0]->ndim;
    for (int d = 0; ok && d < in[0]->ndim; d++) ok = d == ax || in[k]->shape[d] == in[0]->shape[d];
    if (!ok) {
      char a[64], b[64];
      return ad_set_error(ctx, AD_ERR_SHAPE, "concat: %s and %s differ off axis %d",
                          ad_shape_str(in[0], a, sizeof a), ad_shape_str(in[k], b, sizeof b), ax);
    }
    shape[ax] += in[k]->shape[ax];
  }
  *dt = in[0]->dtype;
  return AD_OK;
}

void fwd_concat(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  int ax = ad_norm_axis((int)at->i[0], out->ndim);
  int64_t outer = span(out, 0, ax), inner = span(out, ax + 1, out->ndim), off = 0;
  for (int k = 0; k < n; k++) {
    copy_axis(in[k], in[k]->shape[ax], 0, out, out->shape[ax], off, in[k]->shape[ax], outer, inner);
    off += in[k]->shape[ax];
  }
}

/* y = x1 ++ x2 ++ ...;  dxk += narrow(dy, offset_k, len_k) */
ad_status bwd_concat(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                     ad_tensor *dy, const bool *needs, ad_tensor **g) {
  int ax = ad_norm_axis((int)at->i[0], y->ndim);
  int64_t off = 0;
  for (int k = 0; k < n; k++) {
    if (needs[k] && !(g[k] = ad_narrow(ctx, dy, ax, off, in[k]->shape[ax]))) return ctx->status;
    off += in[k]->shape[ax];
  }
  return AD_OK;
}

ad_tensor *ad_concat(ad_ctx *ctx, int n, ad_tensor *const *xs, int axis) {
  ad_attrs at = {.i = {axis}};
  return ad_op_apply(ctx, AD_OP_CONCAT, n, xs, &at);
}

int sample_concat(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  if (v > 1) return 0;
  int64_t s[3][2] = {{2, 3}, {1, 3}, {4, 3}};
  at->i[0] = 0;
  if (v) { /* along the last axis */
    int64_t t[3][2] = {{3, 2}, {3, 1}, {3, 4}};
    memcpy(s, t, sizeof s);
    at->i[0] = 1;
  }
  for (int k = 0; k < 3; k++)
    if (!(in[k] = ad_sample_tensor(ctx, rng, dt, 2, s[k], -1, 1, true))) return -1;
  return 3;
}

/* ------------------------------------------------- index_select / add */

static ad_status check_idx(ad_ctx *ctx, const char *op, const ad_tensor *idx, int64_t rows) {
  if (idx->dtype != AD_I32)
    return ad_set_error(ctx, AD_ERR_DTYPE, "%s: indices must be i32, got %s", op,
                        ad_dtype_name(idx->dtype));
  const int32_t *p = idx->data;
  for (int64_t i = 0; i < idx->size; i++)
    if (p[i] < 0 || p[i] >= rows)
      return ad_set_error(ctx, AD_ERR_ARG, "%s: index %d at position %lld is outside 0..%lld", op,
                          p[i], (long long)i, (long long)rows - 1);
  return AD_OK;
}

ad_status shape_index_select(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at,
                             ad_dtype *dt, int *ndim, int64_t *shape) {
  (void)n, (void)at;
  const ad_tensor *x = in[0], *idx = in[1];
  if (ad_check_float_same(ctx, "index_select", 1, in) != AD_OK) return ctx->status;
  if (x->ndim < 1 || idx->ndim + x->ndim - 1 > AD_MAX_DIMS) {
    char a[64], b[64];
    return ad_set_error(ctx, AD_ERR_SHAPE, "index_select: cannot index %s with %s",
                        ad_shape_str(x, a, sizeof a), ad_shape_str(idx, b, sizeof b));
  }
  if (check_idx(ctx, "index_select", idx, x->shape[0]) != AD_OK) return ctx->status;
  *ndim = idx->ndim + x->ndim - 1;
  memcpy(shape, idx->shape, sizeof(int64_t) * (size_t)idx->ndim);
  memcpy(shape + idx->ndim, x->shape + 1, sizeof(int64_t) * (size_t)(x->ndim - 1));
  *dt = x->dtype;
  return AD_OK;
}

void fwd_index_select(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n, (void)at;
  const ad_tensor *x = in[0], *idx = in[1];
  size_t row = (size_t)span(x, 1, x->ndim) * ad_dsize(x->dtype);
  const int32_t *p = idx->data;
  for (int64_t i = 0; i < idx->size; i++)
    memcpy((char *)out->data + (size_t)i * row, (const char *)x->data + (size_t)p[i] * row, row);
}

/* y[j] = x[idx[j]];  dx += index_add(dy, idx, rows(x)) */
ad_status bwd_index_select(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at,
                           ad_tensor *y, ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y;
  if (needs[0] && !(g[0] = ad_index_add(ctx, dy, in[1], in[0]->shape[0]))) return ctx->status;
  return AD_OK;
}

ad_tensor *ad_index_select(ad_ctx *ctx, ad_tensor *x, ad_tensor *idx) {
  return ad_apply2(ctx, AD_OP_INDEX_SELECT, x, idx, NULL);
}

static ad_tensor *sample_idx(ad_ctx *ctx, ad_rng *rng, int ndim, const int64_t *shape,
                             int64_t rows) {
  ad_tensor *t = ad_zeros(ctx, AD_I32, ndim, shape);
  for (int64_t i = 0; t && i < t->size; i++)
    ((int32_t *)t->data)[i] = (int32_t)ad_rng_below(rng, (uint64_t)rows);
  return t;
}

int sample_index_select(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in,
                        ad_attrs *at) {
  (void)at;
  if (v > 1) return 0;
  int64_t s[2] = {5, 3}, is[2] = {2, 3};
  in[0] = ad_sample_tensor(ctx, rng, dt, 2, s, -1, 1, true);
  in[1] = sample_idx(ctx, rng, v ? 2 : 1, v ? is : is + 1, 5); /* repeats exercise += */
  return in[0] && in[1] ? 2 : -1;
}

ad_status shape_index_add(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at,
                          ad_dtype *dt, int *ndim, int64_t *shape) {
  (void)n;
  const ad_tensor *src = in[0], *idx = in[1];
  if (ad_check_float_same(ctx, "index_add", 1, in) != AD_OK) return ctx->status;
  bool ok = src->ndim >= idx->ndim;
  for (int k = 0; ok && k < idx->ndim; k++) ok = src->shape[k] == idx->shape[k];
  if (!ok || at->i[0] < 0) {
    char a[64], b[64];
    return ad_set_error(ctx, AD_ERR_SHAPE,
                        "index_add: source %s does not start with the index shape %s",
                        ad_shape_str(src, a, sizeof a), ad_shape_str(idx, b, sizeof b));
  }
  if (check_idx(ctx, "index_add", idx, at->i[0]) != AD_OK) return ctx->status;
  *ndim = src->ndim - idx->ndim + 1;
  shape[0] = at->i[0];
  memcpy(shape + 1, src->shape + idx->ndim, sizeof(int64_t) * (size_t)(src->ndim - idx->ndim));
  *dt = src->dtype;
  return AD_OK;
}

void fwd_index_add(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n, (void)at;
  const ad_tensor *src = in[0], *idx = in[1];
  int64_t row = span(out, 1, out->ndim);
  const int32_t *p = idx->data;
  memset(out->data, 0, (size_t)out->size * ad_dsize(out->dtype));
  for (int64_t i = 0; i < idx->size; i++) {
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

/* y = zeros; y[idx[j]] += x[j];  dx += index_select(dy, idx) */
ad_status bwd_index_add(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                        ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y;
  if (needs[0] && !(g[0] = ad_index_select(ctx, dy, in[1]))) return ctx->status;
  return AD_OK;
}

ad_tensor *ad_index_add(ad_ctx *ctx, ad_tensor *src, ad_tensor *idx, int64_t rows) {
  ad_attrs at = {.i = {rows}};
  return ad_apply2(ctx, AD_OP_INDEX_ADD, src, idx, &at);
}

int sample_index_add(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  if (v > 0) return 0;
  int64_t s[2] = {4, 3}, is[1] = {4};
  at->i[0] = 3;
  in[0] = ad_sample_tensor(ctx, rng, dt, 2, s, -1, 1, true);
  in[1] = sample_idx(ctx, rng, 1, is, 3);
  return in[0] && in[1] ? 2 : -1;
}
