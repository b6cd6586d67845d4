/* op_resample.c: resample_axis and its adjoint, a linear map along one
 * axis given by taps: each output position takes a weighted sum of a few
 * input positions. The upsampling layers' linear, bilinear, trilinear and
 * bicubic modes are such maps, one axis at a time (nn/layers_resample.c).
 * Each op's gradient in x is the other op; the gradient in the weights is
 * composed of ops, so every order of derivative stays on the tape. */
#include "ops.h"

#include <string.h>

/* ------------------------------------------ resample_axis and its adjoint
 *
 *   resample_axis:          y[.., i, ..] = sum_t w[t, i] x[.., idx[t, i], ..]
 *                           dx = resample_axis_adjoint(dy, idx, w, rows(x))
 *                           dw[t, i] = sum over the other axes of
 *                                      dy[.., i, ..] x[.., idx[t, i], ..]
 *   resample_axis_adjoint:  y = zeros (rows on axis);
 *                           y[.., idx[t, i], ..] += w[t, i] x[.., i, ..]
 *                           for i = 0, 1, ..., and t = 0, 1, ... within i
 *                           dx = resample_axis(dy, idx, w)
 *                           dw[t, i] = sum of dy[.., idx[t, i], ..] x[.., i, ..]
 *
 * idx (i32) and w (x's dtype) are [T, m]: T taps for each of the m
 * positions. Every product is rounded before it is added, the taps in
 * order: resample_axis gives the bits of index_select, mul and add in that
 * order (the composite the layers used before: 5 passes over the output
 * for two taps, 9 for four), and the adjoint adds in PyTorch's
 * upsample backward order (by position, then tap), from zeros. Each
 * element's sum has one order whatever the split: the same bits on any
 * thread count. */

/* x viewed as [outer, len, inner] around the axis, y as [outer, ylen,
 * inner]; gather: len n, ylen m; adjoint: len m, ylen rows */
typedef struct rs_job {
  const char *x, *w;
  char *y;
  const int32_t *idx;
  int64_t taps, m, len, ylen, inner;
} rs_job;

/* gather: y[o, i0:i1, c0:c1] from its taps. An axis that is the last
 * (inner 1) sums each element's taps in a register; otherwise each row of
 * y is the first tap's product, then each later tap's added. */
#define RS_GATHER(T, NAME)                                                                         \
  static void NAME(const void *job, int64_t o, int64_t i0, int64_t i1, int64_t c0, int64_t c1) {   \
    const rs_job *j = job;                                                                         \
    const T *w = (const T *)j->w, *xo = (const T *)j->x + o * j->len * j->inner;                   \
    const int32_t *idx = j->idx;                                                                   \
    T *yo = (T *)j->y + o * j->ylen * j->inner;                                                    \
    int64_t inner = j->inner, m = j->m, taps = j->taps;                                            \
    if (inner == 1) {                                                                              \
      for (int64_t i = i0; i < i1; i++) {                                                          \
        T acc = w[i] * xo[idx[i]];                                                                 \
        for (int64_t t = 1; t < taps; t++) acc += w[t * m + i] * xo[idx[t * m + i]];               \
        yo[i] = acc;                                                                               \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    for (int64_t i = i0; i < i1; i++) {                                                            \
      T *yr = yo + i * inner;                                                                      \
      const T *xr = xo + (int64_t)idx[i] * inner;                                                  \
      T wt = w[i];                                                                                 \
      for (int64_t c = c0; c < c1; c++) yr[c] = wt * xr[c];                                        \
      for (int64_t t = 1; t < taps; t++) {                                                         \
        xr = xo + (int64_t)idx[t * m + i] * inner, wt = w[t * m + i];                              \
        for (int64_t c = c0; c < c1; c++) yr[c] += wt * xr[c];                                     \
      }                                                                                            \
    }                                                                                              \
  }

/* adjoint: y[o, :, c0:c1] = zeros, then every position's taps added where
 * they point (i0, i1 unused: a block is all of y's rows for one o) */
#define RS_SCATTER(T, NAME)                                                                        \
  static void NAME(const void *job, int64_t o, int64_t i0, int64_t i1, int64_t c0, int64_t c1) {   \
    (void)i0, (void)i1;                                                                            \
    const rs_job *j = job;                                                                         \
    const T *w = (const T *)j->w, *xo = (const T *)j->x + o * j->len * j->inner;                   \
    const int32_t *idx = j->idx;                                                                   \
    T *yo = (T *)j->y + o * j->ylen * j->inner;                                                    \
    int64_t inner = j->inner, m = j->m, taps = j->taps;                                            \
    for (int64_t r = 0; r < j->ylen; r++)                                                          \
      memset(yo + r * inner + c0, 0, (size_t)(c1 - c0) * sizeof(T));                               \
    if (inner == 1) {                                                                              \
      for (int64_t i = 0; i < m; i++)                                                              \
        for (int64_t t = 0; t < taps; t++) yo[idx[t * m + i]] += w[t * m + i] * xo[i];             \
      return;                                                                                      \
    }                                                                                              \
    for (int64_t i = 0; i < m; i++)                                                                \
      for (int64_t t = 0; t < taps; t++) {                                                         \
        T *yr = yo + (int64_t)idx[t * m + i] * inner, wt = w[t * m + i];                           \
        const T *xr = xo + i * inner;                                                              \
        for (int64_t c = c0; c < c1; c++) yr[c] += wt * xr[c];                                     \
      }                                                                                            \
  }

RS_GATHER(float, rs_gather_f32)
RS_GATHER(double, rs_gather_f64)
RS_SCATTER(float, rs_scatter_f32)
RS_SCATTER(double, rs_scatter_f64)
#undef RS_GATHER
#undef RS_SCATTER

/* y = resample_axis(x, idx, w) (adjoint false) or its adjoint along axis
 * a, split over the library's threads by ad_parallel_blocks: by runs of
 * the (o, i) row units of y (resample_axis) or of the o's (the adjoint,
 * whose block is all of y's rows for one o), or by columns. */
static void rs_run(ad_tensor *y, const ad_tensor *x, const ad_tensor *idx, const ad_tensor *w,
                   int a, bool adjoint) {
  bool f32 = y->dtype == AD_F32;
  rs_job j = {.x = x->data,
              .w = w->data,
              .y = y->data,
              .idx = idx->data,
              .taps = idx->shape[0],
              .m = idx->shape[1],
              .len = x->shape[a],
              .ylen = y->shape[a],
              .inner = ad_dims_span(y, a + 1, y->ndim)};
  int64_t outer = ad_dims_span(y, 0, a);
  if (!y->size) return;
  double work = (double)outer * (double)j.inner * (double)(j.taps * j.m + (adjoint ? j.ylen : 0));
  ad_parallel_blocks(outer, adjoint ? 1 : j.m, j.inner, work,
                     adjoint ? (f32 ? rs_scatter_f32 : rs_scatter_f64)
                             : (f32 ? rs_gather_f32 : rs_gather_f64),
                     &j);
}

/* Checks x, idx and w and sets the output's shape: x's with length m
 * (resample_axis) or rows (the adjoint) on the axis. The indices must lie
 * in 0..n-1 for x's length n on the axis (resample_axis) or in 0..rows-1,
 * and the adjoint's x must have length m there. */
static ad_status rs_shape(const ad_call *c, int axis, int64_t rows, bool adjoint) {
  const ad_tensor *x = c->in[0], *idx = c->in[1], *w = c->in[2];
  char a[64], b[64];
  if (!ad_is_float(x->dtype))
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: x is %s; it must be f32 or f64", c->name,
                        ad_dtype_name(x->dtype));
  int ax = ad_norm_axis(axis, x->ndim);
  if (x->ndim < 1 || ax < 0)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: axis %d out of range for x %s", c->name, axis,
                        ad_shape_str(x, a, sizeof a));
  if (idx->dtype != AD_I32)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: idx %s is %s; it must be i32", c->name,
                        ad_shape_str(idx, a, sizeof a), ad_dtype_name(idx->dtype));
  if (idx->ndim != 2 || idx->shape[0] < 1)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: idx %s must be [taps, m] with taps >= 1",
                        c->name, ad_shape_str(idx, a, sizeof a));
  if (w->dtype != x->dtype)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: w %s is %s; it must be x's dtype %s", c->name,
                        ad_shape_str(w, a, sizeof a), ad_dtype_name(w->dtype),
                        ad_dtype_name(x->dtype));
  if (w->ndim != 2 || w->shape[0] != idx->shape[0] || w->shape[1] != idx->shape[1])
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: w %s must be idx's shape %s", c->name,
                        ad_shape_str(w, a, sizeof a), ad_shape_str(idx, b, sizeof b));
  int64_t m = idx->shape[1], lim = adjoint ? rows : x->shape[ax];
  if (adjoint && x->shape[ax] != m)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: x %s has %lld positions on axis %d; idx %s has %lld", c->name,
                        ad_shape_str(x, a, sizeof a), (long long)x->shape[ax], ax,
                        ad_shape_str(idx, b, sizeof b), (long long)m);
  if (adjoint && rows < 0)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: rows %lld must be >= 0", c->name, (long long)rows);
  const int32_t *p = idx->data;
  for (int64_t k = 0; k < idx->size; k++) {
    if (p[k] >= 0 && p[k] < lim) continue;
    if (adjoint)
      return ad_set_error(
          c->ctx, AD_ERR_ARG, "%s: idx[%lld, %lld] = %d is outside 0..%lld (rows %lld)", c->name,
          (long long)(k / m), (long long)(k % m), p[k], (long long)lim - 1, (long long)lim);
    return ad_set_error(c->ctx, AD_ERR_ARG,
                        "%s: idx[%lld, %lld] = %d is outside 0..%lld (x %s on axis %d)", c->name,
                        (long long)(k / m), (long long)(k % m), p[k], (long long)lim - 1,
                        ad_shape_str(x, a, sizeof a), ax);
  }
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  c->out->shape[ax] = adjoint ? rows : m;
  c->out->dtype = x->dtype;
  return AD_OK;
}

/* dw[t, i] = sum over every axis but a of g[.., idx[t, i], ..] h[.., i, ..]
 * (g picked by tap t's indices, times h), of ops: [taps, m]. With no
 * position (m = 0) one tap's empty part, reshaped to [taps, 0], stands for
 * all (still of g and h on the tape; a part per tap took 4 ops each). */
static ad_tensor *rs_dw(ad_ctx *ctx, ad_tensor *g, ad_tensor *h, int a, const ad_tensor *idx) {
  int64_t taps = idx->shape[0], m = idx->shape[1], one[AD_MAX_DIMS], row[2] = {1, m};
  int64_t n = m ? taps : 1;
  for (int d = 0; d < h->ndim; d++) one[d] = d == a ? m : 1;
  ad_tensor **parts = ad_arena_alloc(ctx, (size_t)n * sizeof *parts);
  if (!parts) return NULL;
  for (int64_t t = 0; t < n; t++) {
    ad_tensor *it = ad_tmp_new(ctx, AD_I32, 1, &m);
    if (!it) return NULL;
    memcpy(it->data, (const int32_t *)idx->data + t * m, (size_t)m * sizeof(int32_t));
    ad_tensor *p = ad_mul(ctx, ad_index_select_axis(ctx, g, a, it), h);
    parts[t] = ad_reshape(ctx, ad_sum_to(ctx, p, h->ndim, one), 2, row);
    if (!parts[t]) return NULL;
  }
  if (!m) return taps == 1 ? parts[0] : ad_reshape(ctx, parts[0], 2, idx->shape);
  return taps == 1 ? parts[0] : ad_concat(ctx, (int)taps, parts, 0);
}

static ad_status resample_axis_shape(const ad_call *c) {
  return rs_shape(c, c->attrs->axis, 0, false);
}

static void resample_axis_fwd(const ad_call *c) {
  rs_run(c->out, c->in[0], c->in[1], c->in[2], ad_norm_axis(c->attrs->axis, c->in[0]->ndim), false);
}

static ad_status resample_axis_bwd(const ad_call *c) {
  ad_tensor *x = c->in[0], *idx = c->in[1], *w = c->in[2];
  int a = ad_norm_axis(c->attrs->axis, x->ndim);
  ad_status st = AD_OK;
  if (c->needs[0])
    st = ad_call_set_grad(c, 0, ad_resample_axis_adjoint(c->ctx, c->gout, a, idx, w, x->shape[a]));
  if (st == AD_OK && c->needs[2]) st = ad_call_set_grad(c, 2, rs_dw(c->ctx, x, c->gout, a, idx));
  return st;
}

/* x's first gradient of a pass straight into its buffer: the adjoint's
 * kernel and bits. An addition into a gradient already there, and w's
 * gradient, are declined. */
static bool resample_axis_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  if (k != 0 || !overwrite) return false;
  rs_run(grad, c->gout, c->in[1], c->in[2], ad_norm_axis(c->attrs->axis, c->in[0]->ndim), true);
  return true;
}

ad_tensor *ad_resample_axis(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *idx, ad_tensor *w) {
  ad_attrs at = {.axis = axis};
  ad_tensor *in[3] = {x, idx, w};
  return ad_op_apply(ctx, AD_OP_RESAMPLE_AXIS, 3, in, &at);
}

/* The samples of both ops: x [5, 3] along axis 0, two taps for 7
 * positions (indices repeated within and across taps, as upsampling's
 * are); x [2, 5, 3] along axis 1, four taps for 4 positions (bicubic's
 * count); x [4, 6] along the last axis (inner 1), one tap for 8 positions.
 * For the adjoint x is the result's shape and rows is the gather's length. */
static int rs_sample(const ad_sample_call *s, bool adjoint) {
  static const int32_t i0[14] = {0, 0, 1, 2, 3, 4, 4, 1, 1, 2, 3, 4, 4, 4};
  static const int32_t i1[16] = {4, 0, 2, 1, 0, 1, 3, 2, 1, 2, 4, 3, 2, 3, 0, 4};
  static const int32_t i2[8] = {5, 0, 0, 2, 3, 5, 1, 1};
  static const int32_t *const ids[3] = {i0, i1, i2};
  static const int64_t taps[3] = {2, 4, 1}, m[3] = {7, 4, 8}, n[3] = {5, 5, 6};
  static const int axes[3] = {0, 1, -1};
  int v = s->variant;
  if (v > 2) return 0;
  int64_t sx[3][3] = {{5, 3}, {2, 5, 3}, {4, 6}}, nd[3] = {2, 3, 2};
  int ax = axes[v] < 0 ? (int)nd[v] + axes[v] : axes[v];
  if (adjoint) sx[v][ax] = m[v];
  int64_t si[2] = {taps[v], m[v]};
  s->in[0] = ad_sample_tensor(s, (int)nd[v], sx[v], -1, 1, true);
  s->in[1] = ad_from_data(s->ctx, AD_I32, 2, si, ids[v]);
  s->in[2] = ad_sample_tensor(s, 2, si, -1, 1, true);
  if (adjoint)
    s->attrs->index = (ad_index_attrs){.rows = n[v], .axis = axes[v]};
  else
    s->attrs->axis = axes[v];
  return s->in[0] && s->in[1] && s->in[2] ? 3 : -1;
}

static int resample_axis_sample(const ad_sample_call *s) { return rs_sample(s, false); }

const ad_op_def ad_def_resample_axis = {
    .name = "resample_axis",
    .arity = 3,
    .attrs = AD_ATTRS_AXIS,
    .shape = resample_axis_shape,
    .forward = resample_axis_fwd,
    .backward = resample_axis_bwd,
    .grad_into = resample_axis_grad_into,
    .sample = resample_axis_sample,
    .math = "y[.., i, ..] = sum_t w[t, i] x[.., idx[t, i], ..] (along axis)",
    .inputs = {"x", "idx", "w"},
    .grads = {"resample_axis_adjoint(dy, axis, idx, w, rows(x))", NULL,
              "sum of dy[.., i, ..] x[.., idx[t, i], ..] over the other axes"},
};

static ad_status resample_axis_adjoint_shape(const ad_call *c) {
  return rs_shape(c, c->attrs->index.axis, c->attrs->index.rows, true);
}

static void resample_axis_adjoint_fwd(const ad_call *c) {
  rs_run(c->out, c->in[0], c->in[1], c->in[2], ad_norm_axis(c->attrs->index.axis, c->in[0]->ndim),
         true);
}

static ad_status resample_axis_adjoint_bwd(const ad_call *c) {
  ad_tensor *x = c->in[0], *idx = c->in[1], *w = c->in[2];
  int a = ad_norm_axis(c->attrs->index.axis, x->ndim);
  ad_status st = AD_OK;
  if (c->needs[0]) st = ad_call_set_grad(c, 0, ad_resample_axis(c->ctx, c->gout, a, idx, w));
  if (st == AD_OK && c->needs[2]) st = ad_call_set_grad(c, 2, rs_dw(c->ctx, c->gout, x, a, idx));
  return st;
}

/* as resample_axis's: x's first gradient of a pass by the gather's kernel */
static bool resample_axis_adjoint_grad_into(const ad_call *c, int k, ad_tensor *grad,
                                            bool overwrite) {
  if (k != 0 || !overwrite) return false;
  rs_run(grad, c->gout, c->in[1], c->in[2], ad_norm_axis(c->attrs->index.axis, c->in[0]->ndim),
         false);
  return true;
}

ad_tensor *ad_resample_axis_adjoint(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *idx,
                                    ad_tensor *w, int64_t rows) {
  ad_attrs at = {.index = {.rows = rows, .axis = axis}};
  ad_tensor *in[3] = {x, idx, w};
  return ad_op_apply(ctx, AD_OP_RESAMPLE_AXIS_ADJOINT, 3, in, &at);
}

static int resample_axis_adjoint_sample(const ad_sample_call *s) { return rs_sample(s, true); }

const ad_op_def ad_def_resample_axis_adjoint = {
    .name = "resample_axis_adjoint",
    .arity = 3,
    .attrs = AD_ATTRS_INDEX,
    .shape = resample_axis_adjoint_shape,
    .forward = resample_axis_adjoint_fwd,
    .backward = resample_axis_adjoint_bwd,
    .grad_into = resample_axis_adjoint_grad_into,
    .sample = resample_axis_adjoint_sample,
    .math = "y = zeros (rows on axis); y[.., idx[t, i], ..] += w[t, i] x[.., i, ..] by i, then t",
    .inputs = {"x", "idx", "w"},
    .grads = {"resample_axis(dy, axis, idx, w)", NULL,
              "sum of dy[.., idx[t, i], ..] x[.., i, ..] over the other axes"},
};
