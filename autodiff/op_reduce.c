/* op_reduce.c: sum, max, logsumexp along an axis or over everything;
 * softmax and log_softmax along an axis; the mean as a composite. */
#include "ad_internal.h"

#include <math.h>

/* The loop nest of a reduction: outer x n x inner, reducing n. */
typedef struct red_dims {
  int axis; /* -1: everything */
  int64_t outer, n, inner;
} red_dims;

static red_dims red_of(const ad_tensor *x, int64_t axis_attr) {
  red_dims r = {-1, 1, x->size, 1};
  if (axis_attr == AD_ALL_AXES) return r;
  r.axis = ad_norm_axis((int)axis_attr, x->ndim);
  r.outer = ad_shape_size(r.axis, x->shape);
  r.n = x->shape[r.axis];
  r.inner = ad_shape_size(x->ndim - r.axis - 1, x->shape + r.axis + 1);
  return r;
}

/* x's shape with the reduced axes set to 1 (keepdim form). */
static void keep_shape(const ad_tensor *x, int axis, int64_t *shape) {
  for (int k = 0; k < x->ndim; k++) shape[k] = (axis < 0 || k == axis) ? 1 : x->shape[k];
}

ad_status shape_reduce(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                       int *ndim, int64_t *shape) {
  (void)n;
  const ad_tensor *x = in[0];
  if (ad_check_float_same(ctx, ctx->applying, 1, in) != AD_OK) return ctx->status;
  int axis = -1;
  if (at->i[0] != AD_ALL_AXES && (axis = ad_norm_axis((int)at->i[0], x->ndim)) < 0) {
    char a[64];
    return ad_set_error(ctx, AD_ERR_ARG, "%s: axis %lld out of range for %s", ctx->applying,
                        (long long)at->i[0], ad_shape_str(x, a, sizeof a));
  }
  if (x->size == 0 || (axis >= 0 && x->shape[axis] == 0)) {
    char a[64];
    return ad_set_error(ctx, AD_ERR_SHAPE, "%s: nothing to reduce in %s", ctx->applying,
                        ad_shape_str(x, a, sizeof a));
  }
  *dt = x->dtype;
  if (at->i[1]) {
    *ndim = x->ndim;
    keep_shape(x, axis, shape);
  } else {
    *ndim = 0;
    for (int k = 0; axis >= 0 && k < x->ndim; k++)
      if (k != axis) shape[(*ndim)++] = x->shape[k];
  }
  return AD_OK;
}

/* Runs BODY for each (o, i) lane of the reduction with X pointing at its
 * first element (stride inner) and Y at its output. */
#define REDUCE_LANES(T, x, out, r, BODY)                                                           \
  do {                                                                                             \
    for (int64_t o = 0; o < (r).outer; o++)                                                        \
      for (int64_t i = 0; i < (r).inner; i++) {                                                    \
        const T *X = (const T *)(x)->data + o * (r).n * (r).inner + i;                             \
        T *Y = (T *)(out)->data + o * (r).inner + i;                                               \
        const int64_t S = (r).inner, N = (r).n;                                                    \
        BODY                                                                                       \
      }                                                                                            \
  } while (0)

#define SUM_BODY(T)                                                                                \
  {                                                                                                \
    double s = 0;                                                                                  \
    for (int64_t k = 0; k < N; k++) s += X[k * S];                                                 \
    *Y = (T)s;                                                                                     \
  }
#define MAX_BODY(T)                                                                                \
  {                                                                                                \
    T m = X[0];                                                                                    \
    for (int64_t k = 1; k < N; k++)                                                                \
      if (X[k * S] > m || X[k * S] != X[k * S]) m = X[k * S];                                      \
    *Y = m;                                                                                        \
  }
/* exp(x) for a lane of T: in float arithmetic for float tensors (glibc's
 * expf is several times faster than exp and within an ulp of float), in
 * double for double ones. Sums and logs stay in double. */
#define EXP_OF(T, x) (sizeof(T) == sizeof(float) ? (double)expf((float)(x)) : exp(x))

#define LSE_BODY(T)                                                                                \
  {                                                                                                \
    double m = X[0], s = 0;                                                                        \
    for (int64_t k = 1; k < N; k++)                                                                \
      if (X[k * S] > m) m = X[k * S];                                                              \
    if (isinf(m)) {                                                                                \
      *Y = (T)m;                                                                                   \
    } else {                                                                                       \
      for (int64_t k = 0; k < N; k++) s += EXP_OF(T, (double)X[k * S] - m);                        \
      *Y = (T)(m + log(s));                                                                        \
    }                                                                                              \
  }

void fwd_sum(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n;
  red_dims r = red_of(in[0], at->i[0]);
  if (out->dtype == AD_F32)
    REDUCE_LANES(float, in[0], out, r, SUM_BODY(float));
  else
    REDUCE_LANES(double, in[0], out, r, SUM_BODY(double));
}

void fwd_max(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n;
  red_dims r = red_of(in[0], at->i[0]);
  if (out->dtype == AD_F32)
    REDUCE_LANES(float, in[0], out, r, MAX_BODY(float));
  else
    REDUCE_LANES(double, in[0], out, r, MAX_BODY(double));
}

void fwd_logsumexp(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n;
  red_dims r = red_of(in[0], at->i[0]);
  if (out->dtype == AD_F32)
    REDUCE_LANES(float, in[0], out, r, LSE_BODY(float));
  else
    REDUCE_LANES(double, in[0], out, r, LSE_BODY(double));
}

/* dy (and y) in keepdim form, so they broadcast against x. */
static ad_tensor *keep(ad_ctx *ctx, ad_tensor *t, const ad_tensor *x, const ad_attrs *at) {
  if (at->i[1]) return t;
  int64_t s[AD_MAX_DIMS];
  red_dims r = red_of(x, at->i[0]);
  keep_shape(x, r.axis, s);
  return ad_reshape(ctx, t, x->ndim, s);
}

/* y = sum x;  dx += expand(dy, shape(x)) */
ad_status bwd_sum(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)y, (void)needs;
  g[0] = ad_expand(ctx, keep(ctx, dy, in[0], at), in[0]->ndim, in[0]->shape);
  return g[0] ? AD_OK : ctx->status;
}

/* y = max x;  dx += dy * [x = y] / count(x = y): ties share the gradient */
ad_status bwd_max(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)needs;
  ad_tensor *x = in[0];
  ad_tensor *mask = ad_eq(ctx, x, keep(ctx, y, x, at));
  ad_tensor *count = mask && at->i[0] == AD_ALL_AXES ? ad_sum(ctx, mask)
                                                     : ad_sum_axis(ctx, mask, (int)at->i[0], true);
  g[0] = ad_mul(ctx, ad_div(ctx, keep(ctx, dy, x, at), count), mask);
  return g[0] ? AD_OK : ctx->status;
}

/* y = logsumexp x;  dx += dy * exp(x - y) */
ad_status bwd_logsumexp(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                        ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)needs;
  ad_tensor *x = in[0];
  ad_tensor *p = ad_exp(ctx, ad_sub(ctx, x, keep(ctx, y, x, at)));
  return (g[0] = ad_mul(ctx, keep(ctx, dy, x, at), p)) ? AD_OK : ctx->status;
}

static ad_tensor *reduce(ad_ctx *ctx, int op, ad_tensor *x, int axis, bool keepdim) {
  ad_attrs at = {.i = {axis, keepdim}};
  return ad_apply1(ctx, op, x, &at);
}

ad_tensor *ad_sum(ad_ctx *ctx, ad_tensor *x) { return reduce(ctx, AD_OP_SUM, x, AD_ALL_AXES, 0); }
ad_tensor *ad_sum_axis(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim) {
  if (axis == AD_ALL_AXES) axis = INT32_MAX; /* never confuse a user axis with the marker */
  return reduce(ctx, AD_OP_SUM, x, axis, keepdim);
}
ad_tensor *ad_max(ad_ctx *ctx, ad_tensor *x) { return reduce(ctx, AD_OP_MAX, x, AD_ALL_AXES, 0); }
ad_tensor *ad_max_axis(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim) {
  if (axis == AD_ALL_AXES) axis = INT32_MAX;
  return reduce(ctx, AD_OP_MAX, x, axis, keepdim);
}
ad_tensor *ad_logsumexp(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim) {
  if (axis == AD_ALL_AXES) axis = INT32_MAX;
  return reduce(ctx, AD_OP_LOGSUMEXP, x, axis, keepdim);
}

/* mean = sum / n (a composite: no derivative code of its own) */
ad_tensor *ad_mean(ad_ctx *ctx, ad_tensor *x) {
  ad_tensor *s = ad_sum(ctx, x);
  return s ? ad_mul_scalar(ctx, s, 1.0 / (double)x->size) : NULL;
}

ad_tensor *ad_mean_axis(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim) {
  ad_tensor *s = ad_sum_axis(ctx, x, axis, keepdim);
  return s ? ad_mul_scalar(ctx, s, 1.0 / (double)x->shape[ad_norm_axis(axis, x->ndim)]) : NULL;
}

static int sample_red(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at,
                      bool apart) {
  static const int64_t axis[] = {AD_ALL_AXES, 0, -1, 1};
  static const int64_t kd[] = {0, 0, 1, 0};
  if (v > 3) return 0;
  int64_t s[3] = {2, 3, 4};
  at->i[0] = axis[v];
  at->i[1] = kd[v];
  in[0] = ad_sample_tensor(ctx, rng, dt, v == 3 ? 3 : 2, v == 3 ? s : s + 1, -2, 2, true);
  if (in[0] && apart) { /* distinct values 0.25 apart: no ties within the FD step */
    for (int64_t i = 0; i < in[0]->size; i++) ad_tensor_set(in[0], i, 0.25 * (double)i - 1.0);
    for (int64_t i = in[0]->size - 1; i > 0; i--) {
      int64_t j = (int64_t)ad_rng_below(rng, (uint64_t)i + 1);
      double t = ad_tensor_get(in[0], i);
      ad_tensor_set(in[0], i, ad_tensor_get(in[0], j));
      ad_tensor_set(in[0], j, t);
    }
  }
  return in[0] ? 1 : -1;
}

int sample_reduce(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  return sample_red(ctx, rng, dt, v, in, at, false);
}

int sample_reduce_apart(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in,
                        ad_attrs *at) {
  return sample_red(ctx, rng, dt, v, in, at, true);
}

/* ------------------------------------------------ softmax, log_softmax */

ad_status shape_softmax(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                        int *ndim, int64_t *shape) {
  (void)n;
  const ad_tensor *x = in[0];
  if (ad_check_float_same(ctx, ctx->applying, 1, in) != AD_OK) return ctx->status;
  if (ad_norm_axis((int)at->i[0], x->ndim) < 0) {
    char a[64];
    return ad_set_error(ctx, AD_ERR_ARG, "%s: axis %lld out of range for %s", ctx->applying,
                        (long long)at->i[0], ad_shape_str(x, a, sizeof a));
  }
  *dt = x->dtype;
  *ndim = x->ndim;
  memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  return AD_OK;
}

/* log_softmax when LOG (y = x - lse), else softmax: y = e / sum e with
 * e = exp(x - max) kept in y between the two passes, one exp per element */
#define SOFTMAX_BODY(T, LOG)                                                                       \
  {                                                                                                \
    T *Yw = (T *)out->data + o * r.n * r.inner + i;                                                \
    (void)Y;                                                                                       \
    double m = X[0], s = 0;                                                                        \
    for (int64_t k = 1; k < N; k++)                                                                \
      if (X[k * S] > m) m = X[k * S];                                                              \
    if (LOG) {                                                                                     \
      for (int64_t k = 0; k < N; k++) s += EXP_OF(T, (double)X[k * S] - m);                        \
      double lse = m + log(s);                                                                     \
      for (int64_t k = 0; k < N; k++) Yw[k * S] = (T)((double)X[k * S] - lse);                     \
    } else {                                                                                       \
      for (int64_t k = 0; k < N; k++) {                                                            \
        double e = EXP_OF(T, (double)X[k * S] - m);                                                \
        Yw[k * S] = (T)e;                                                                          \
        s += e;                                                                                    \
      }                                                                                            \
      for (int64_t k = 0; k < N; k++) Yw[k * S] = (T)((double)Yw[k * S] / s);                      \
    }                                                                                              \
  }

static void softmax_run(ad_tensor *const *in, const ad_attrs *at, ad_tensor *out, bool log_) {
  red_dims r = red_of(in[0], at->i[0]);
  if (out->dtype == AD_F32)
    REDUCE_LANES(float, in[0], out, r, SOFTMAX_BODY(float, log_));
  else
    REDUCE_LANES(double, in[0], out, r, SOFTMAX_BODY(double, log_));
}

void fwd_softmax(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n;
  softmax_run(in, at, out, false);
}

void fwd_log_softmax(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n;
  softmax_run(in, at, out, true);
}

/* y = softmax(x);  dx += y * (dy - sum_axis(dy * y)) */
ad_status bwd_softmax(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                      ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)in, (void)needs;
  ad_tensor *s = ad_sum_axis(ctx, ad_mul(ctx, dy, y), (int)at->i[0], true);
  return (g[0] = ad_mul(ctx, y, ad_sub(ctx, dy, s))) ? AD_OK : ctx->status;
}

/* y = log_softmax(x);  dx += dy - exp(y) * sum_axis(dy) */
ad_status bwd_log_softmax(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at,
                          ad_tensor *y, ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)in, (void)needs;
  ad_tensor *s = ad_sum_axis(ctx, dy, (int)at->i[0], true);
  return (g[0] = ad_sub(ctx, dy, ad_mul(ctx, ad_exp(ctx, y), s))) ? AD_OK : ctx->status;
}

ad_tensor *ad_softmax(ad_ctx *ctx, ad_tensor *x, int axis) {
  ad_attrs at = {.i = {axis}};
  return ad_apply1(ctx, AD_OP_SOFTMAX, x, &at);
}

ad_tensor *ad_log_softmax(ad_ctx *ctx, ad_tensor *x, int axis) {
  ad_attrs at = {.i = {axis}};
  return ad_apply1(ctx, AD_OP_LOG_SOFTMAX, x, &at);
}

int sample_softmax(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  if (v > 1) return 0;
  int64_t s[3] = {2, 3, 4};
  at->i[0] = v ? 1 : -1;
  return (in[0] = ad_sample_tensor(ctx, rng, dt, 3, s, -2, 2, true)) ? 1 : -1;
}
