/* op_reduce.c: sum, max, logsumexp over a run of adjacent axes; softmax
 * and log_softmax along an axis; the mean, and the sum and mean over any
 * axes, as composites; cumsum along an axis; argmax and argmin (no
 * gradient); cosine_similarity along an axis and its fused gradient; min
 * (a composite), and var and std on sum_sq_dev (the sum of squared
 * deviations over a run of axes). */
#include "ops.h"
#include "softmax_exp.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

/* The loop nest of a reduction over the dims [lo, hi) of x: outer x n x
 * inner, reducing n. axes is read from its lowest dim up to its first gap:
 * lo is its lowest bit, hi the first bit after lo that is clear (both ndim
 * for an empty mask: n = 1, nothing is reduced). */
typedef struct red_dims {
  int lo, hi;
  int64_t outer, n, inner;
} red_dims;

static red_dims red_of(const ad_tensor *x, uint32_t axes) {
  red_dims r = {0, 0, 1, 1, 1};
  while (r.lo < x->ndim && !(axes >> r.lo & 1)) r.lo++;
  r.hi = r.lo;
  while (r.hi < x->ndim && (axes >> r.hi & 1)) r.hi++;
  r.outer = ad_shape_size(r.lo, x->shape);
  r.n = ad_shape_size(r.hi - r.lo, x->shape + r.lo);
  r.inner = ad_shape_size(x->ndim - r.hi, x->shape + r.hi);
  return r;
}

/* The lanes of a reduction are its outer x inner sequences of n elements,
 * inner apart. Where inner > 1 they are interleaved, and a lane read alone
 * strides inner elements (a cache line per element), so they are taken
 * LANE_BLOCK at a time: k outside, the block's lanes inside, x read row
 * by row. Each lane still sees its elements in order k = 0..n-1 through
 * the same operations as one lane alone, so the result is that loop's
 * bits; and a lane belongs to one thread, so the thread count changes no
 * bit. */
enum { LANE_BLOCK = 64 };

/* nb lanes (1 <= nb <= LANE_BLOCK) starting at x (NULL when n = 0) and
 * their outputs at y; element k of lane j at x[k * s + j]. */
typedef void (*lanes_fn)(const void *x, void *y, int64_t s, int64_t n, int64_t nb);

typedef struct lanes_job {
  const ad_tensor *x;
  ad_tensor *out;
  red_dims r;
  int64_t ystride; /* output elements between consecutive o */
  int64_t blocks;  /* lane blocks per o */
  int64_t group;   /* o's per unit (short lanes gathered), else 1 */
  lanes_fn fn;
} lanes_job;

/* The elements of a group's buffers for each of x and y (lanes_range_grouped:
 * 32 KiB of stack for the two). */
enum { LANES_GATHER_MAX = 2048 };

/* Units [b, e) of a walk whose inner (the lanes of one o) is short: group
 * o's at a time, their lanes gathered side by side into one block of
 * group x inner lanes (element k of lane p inner + j at buf[k w + p inner
 * + j], w the block's width), fn run once on it, and a y of x's layout
 * (softmax's) scattered back; a reduction's y (ystride = inner) is
 * already the block's layout. Each lane sees the same elements in the
 * same order through the same operations as in a block of its o alone:
 * the same bits, with a call for many o's instead of one each. */
static void lanes_range_grouped(const lanes_job *j, int64_t b, int64_t e) {
  size_t ds = ad_dsize(j->x->dtype);
  const int64_t n = j->r.n, in = j->r.inner;
  double xb[LANES_GATHER_MAX], yb[LANES_GATHER_MAX]; /* doubles: aligned for either dtype */
  bool ylay = j->ystride != in;                      /* y laid out as x */
  for (int64_t u = b; u < e; u++) {
    int64_t o0 = u * j->group, np = j->r.outer - o0 < j->group ? j->r.outer - o0 : j->group;
    int64_t w = np * in;
    const char *x = (const char *)j->x->data + (size_t)(o0 * n * in) * ds;
    char *y = (char *)j->out->data + (size_t)(o0 * j->ystride) * ds;
    for (int64_t p = 0; p < np; p++)
      for (int64_t k = 0; k < n; k++)
        memcpy((char *)xb + (size_t)(k * w + p * in) * ds, x + (size_t)((p * n + k) * in) * ds,
               (size_t)in * ds);
    j->fn(xb, ylay ? (void *)yb : (void *)y, w, n, w);
    if (ylay)
      for (int64_t p = 0; p < np; p++)
        for (int64_t k = 0; k < n; k++)
          memcpy(y + (size_t)((p * n + k) * in) * ds, (char *)yb + (size_t)(k * w + p * in) * ds,
                 (size_t)in * ds);
  }
}

static void lanes_range(void *ud, int64_t b, int64_t e) {
  const lanes_job *j = ud;
  if (j->group > 1) {
    lanes_range_grouped(j, b, e);
    return;
  }
  size_t ds = ad_dsize(j->x->dtype);
  for (int64_t u = b; u < e; u++) {
    int64_t o = u / j->blocks, i0 = u % j->blocks * LANE_BLOCK;
    int64_t nb = j->r.inner - i0 < LANE_BLOCK ? j->r.inner - i0 : LANE_BLOCK;
    const char *x =
        j->r.n ? (const char *)j->x->data + (size_t)(o * j->r.n * j->r.inner + i0) * ds : NULL;
    char *y = (char *)j->out->data + (size_t)(o * j->ystride + i0) * ds;
    j->fn(x, y, j->r.inner, j->r.n, nb);
  }
}

/* Runs fn over every lane of x's reduction r into out, whose lanes start
 * ystride elements apart for each o (inner for a reduction, n x inner for
 * a y of x's layout), on the library's threads. Lanes of 2 to
 * LANE_BLOCK / 2 per o are gathered several o's at a time (at least two,
 * within LANE_BLOCK lanes and LANES_GATHER_MAX elements). */
static void run_lanes(const ad_tensor *x, ad_tensor *out, red_dims r, int64_t ystride,
                      lanes_fn fn) {
  if (out->size == 0) return;
  lanes_job j = {x, out, r, ystride, (r.inner + LANE_BLOCK - 1) / LANE_BLOCK, 1, fn};
  if (r.inner > 1 && r.inner <= LANE_BLOCK / 2 && r.outer > 1 && r.n > 0 &&
      r.n * r.inner * 2 <= LANES_GATHER_MAX) {
    int64_t g = LANE_BLOCK / r.inner, fit = LANES_GATHER_MAX / (r.n * r.inner);
    j.group = g < fit ? g : fit;
    if (j.group > r.outer) j.group = r.outer;
  }
  if (j.group > 1) {
    int64_t units = (r.outer + j.group - 1) / j.group, per = r.n * r.inner * j.group;
    ad_parallel_for(units, (32768 + per - 1) / per, lanes_range, &j);
    return;
  }
  int64_t per = (r.n ? r.n : 1) * (r.inner < LANE_BLOCK ? r.inner : LANE_BLOCK);
  ad_parallel_for(r.outer * j.blocks, (32768 + per - 1) / per, lanes_range, &j);
}

/* Defines NAME_f32 and NAME_f64, lanes_fn's running ONE (the statement
 * for one lane: X, Y, S, N in scope) where nb = 1, else BLOCK (the
 * statement for the nb lanes), with the attributes ATTR: CELL_CLONES
 * where the block's loops vectorize (sum and max: the same bits on every
 * instruction set; the exp of the others is libm's, one call a value). */
#define LANES_FNS(NAME, ONE, BLOCK, ATTR)                                                          \
  LANES_FN(NAME##_f32, float, ONE, BLOCK, ATTR)                                                    \
  LANES_FN(NAME##_f64, double, ONE, BLOCK, ATTR)
#define LANES_FN(NAME, T, ONE, BLOCK, ATTR)                                                        \
  ATTR static void NAME(const void *xv, void *yv, int64_t S, int64_t N, int64_t nb) {              \
    const T *X = xv;                                                                               \
    T *Y = yv;                                                                                     \
    if (nb == 1) {                                                                                 \
      ONE(T)                                                                                       \
    } else {                                                                                       \
      BLOCK(T)                                                                                     \
    }                                                                                              \
  }

/* m[j] = the maximum of lane j of the block (NaN if one is NaN), as
 * ad_lane_max takes it: -inf for N = 0. */
#define BLOCK_MAX(T, m)                                                                            \
  for (int64_t j = 0; j < nb; j++) m[j] = -INFINITY;                                               \
  for (int64_t k = 0; k < N; k++) {                                                                \
    const T *row = X + k * S;                                                                      \
    for (int64_t j = 0; j < nb; j++) m[j] = AD_MAX_NAN((double)row[j], m[j]);                      \
  }

/* ------------------------------------------ float32 softmax family lanes */

/* The float32 lanes of softmax, log_softmax and logsumexp take e^(x - m)
 * as exp_diff and EXP_FIX (softmax_exp.h). The loops vectorize across
 * the lanes of a block (elements k S + j) or along one contiguous lane,
 * in double for the sums, and are compiled for each instruction set
 * (CELL_CLONES) with the same bits on each. */

enum { EXP_SOFTMAX, EXP_LOG_SOFTMAX, EXP_LSE };

/* SOFTMAX_BODY (EXP_SOFTMAX, EXP_LOG_SOFTMAX) and LSE_BODY (EXP_LSE, y
 * at Y[0..nb-1]) for nb float32 lanes of a block (or one strided lane),
 * element k of lane j at X[k S + j], the sums of each lane in order k = 0
 * .. N-1. softmax keeps e in y between its passes and multiplies it by 1
 * / sum in double (e / sum but for ties), as softmax_row_f32. */
CELL_ROW void exp_lanes_f32(const float *X, float *Y, int64_t S, int64_t N, int64_t nb, int kind) {
  float m[LANE_BLOCK], e[LANE_BLOCK], lo[LANE_BLOCK];
  double s[LANE_BLOCK];
  for (int64_t j = 0; j < nb; j++) m[j] = -INFINITY, s[j] = 0;
  for (int64_t k = 0; k < N; k++)
    for (int64_t j = 0; j < nb; j++) m[j] = AD_MAX_NAN(X[k * S + j], m[j]);
  for (int64_t k = 0; k < N; k++) {
    exp_diff(X + k * S, m, 1, nb, e, lo);
    for (int64_t j = 0; j < nb; j++) s[j] += EXP_FIX(e[j], lo[j]);
    if (kind == EXP_SOFTMAX)
      for (int64_t j = 0; j < nb; j++) Y[k * S + j] = e[j];
  }
  if (kind == EXP_LSE) {
    for (int64_t j = 0; j < nb; j++)
      Y[j] = (float)(isfinite(m[j]) ? (double)m[j] + log(s[j]) : (double)m[j]);
  } else if (kind == EXP_LOG_SOFTMAX) {
    for (int64_t j = 0; j < nb; j++) s[j] = log(s[j]);
    for (int64_t k = 0; k < N; k++)
      for (int64_t j = 0; j < nb; j++)
        Y[k * S + j] = (float)(((double)X[k * S + j] - (double)m[j]) - s[j]);
  } else {
    for (int64_t j = 0; j < nb; j++) s[j] = 1 / s[j];
    for (int64_t k = 0; k < N; k++)
      for (int64_t j = 0; j < nb; j++) {
        float x = X[k * S + j], d = x - m[j];
        Y[k * S + j] = (float)(EXP_FIX(Y[k * S + j], diff_err(x, m[j], d)) * s[j]);
      }
  }
}

/* x's shape with the reduced dims set to 1 (keepdim form). */
static void keep_shape(const ad_tensor *x, uint32_t axes, int64_t *shape) {
  for (int k = 0; k < x->ndim; k++) shape[k] = (axes >> k & 1) ? 1 : x->shape[k];
}

/* dy (and y) in keepdim form, so they broadcast against x. */
static ad_tensor *keep(ad_ctx *ctx, ad_tensor *t, const ad_tensor *x, const ad_reduce_attrs *ra) {
  if (ra->keepdim) return t;
  int64_t s[AD_MAX_DIMS];
  keep_shape(x, ra->axes, s);
  return ad_reshape(ctx, t, x->ndim, s);
}

/* The shape rule of sum and logsumexp (and, with a check, max). Reduced
 * dims of length 0 are fine, as in PyTorch: each output element reduces
 * no element, which gives the op's identity (sum 0, logsumexp -inf) and
 * reads nothing; an output with no element is an empty tensor. */
static ad_status shape_reduce(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  uint32_t axes = c->attrs->reduce.axes;
  char a[64];
  if (ad_check_float_same(c->ctx, c->name, 1, c->in) != AD_OK) return ad_last_status(c->ctx);
  red_dims r = red_of(x, axes);
  if (axes != (1u << r.hi) - (1u << r.lo)) /* a bit >= ndim, or a gap */
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: axes 0x%x out of range/not adjacent for %s",
                        c->name, (unsigned)axes, ad_shape_str(x, a, sizeof a));
  ad_tensor *o = c->out;
  o->dtype = x->dtype;
  o->ndim = 0;
  for (int k = 0; k < x->ndim; k++) {
    if (!(axes >> k & 1))
      o->shape[o->ndim++] = x->shape[k];
    else if (c->attrs->reduce.keepdim)
      o->shape[o->ndim++] = 1;
  }
  return AD_OK;
}

static ad_tensor *reduce(ad_ctx *ctx, int op, ad_tensor *x, uint32_t axes, bool keepdim) {
  ad_attrs at = {.reduce = {axes, keepdim}};
  return ad_apply1(ctx, op, x, &at);
}

/* Every dim of x (none for a 0-d x). A NULL x, or one that is not a live
 * tensor, is left to ad_op_apply to report. */
static uint32_t all_axes(const ad_tensor *x) {
  return x && (unsigned)x->ndim <= AD_MAX_DIMS ? (1u << x->ndim) - 1 : 0;
}

/* The reduction along one axis, normalised here. An axis out of range is
 * reported here, as the shape rule reported it when the axis was the
 * attribute; a NULL ctx or x, and an x that is not float (whose dtype is
 * reported first), go on to ad_op_apply, which reports them. */
static ad_tensor *reduce_axis(ad_ctx *ctx, int op, ad_tensor *x, int axis, bool keepdim) {
  if (ctx && x && !ad_arg_ok(ctx, ad_op_get(ctx, op)->name, "input 0", x)) return NULL;
  int k = ctx && x ? ad_norm_axis(axis, x->ndim) : 0;
  if (k < 0 && ad_is_float(x->dtype)) {
    char s[64];
    ad_set_error(ctx, AD_ERR_ARG, "%s: axis %d out of range for %s", ad_op_get(ctx, op)->name, axis,
                 ad_shape_str(x, s, sizeof s));
    return NULL;
  }
  return reduce(ctx, op, x, k < 0 ? 0 : 1u << k, keepdim);
}

/* Gradcheck cases of a reduction: all dims, axis 0 and axis -1 (keepdim)
 * of a [3,4] input, axis 1 of a [2,3,4] one. With apart, the values are
 * distinct and 0.25 apart: no ties within the FD step. */
static int sample_red(const ad_sample_call *s, bool apart) {
  static const uint32_t axes[] = {3, 1, 2, 2};
  static const bool keepdim[] = {false, false, true, false};
  int v = s->variant;
  if (v > 3) return 0;
  int64_t shape[3] = {2, 3, 4};
  s->attrs->reduce.axes = axes[v];
  s->attrs->reduce.keepdim = keepdim[v];
  ad_tensor *x = s->in[0] =
      ad_sample_tensor(s, v == 3 ? 3 : 2, v == 3 ? shape : shape + 1, -2, 2, true);
  if (x && apart) {
    for (int64_t i = 0; i < x->size; i++) ad_tensor_set(x, i, 0.25 * (double)i - 1.0);
    for (int64_t i = x->size - 1; i > 0; i--) {
      int64_t j = (int64_t)ad_rng_below(s->rng, (uint64_t)i + 1);
      double t = ad_tensor_get(x, i);
      ad_tensor_set(x, i, ad_tensor_get(x, j));
      ad_tensor_set(x, j, t);
    }
  }
  return x ? 1 : -1;
}

static int sample_reduce(const ad_sample_call *s) { return sample_red(s, false); }

/* The shape rule of softmax, log_softmax and cumsum: a float x, the axis
 * in range, y shaped like x. */
static ad_status shape_softmax(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  if (ad_check_float_same(c->ctx, c->name, 1, c->in) != AD_OK) return ad_last_status(c->ctx);
  if (ad_norm_axis(c->attrs->axis, x->ndim) < 0) {
    char a[64];
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: axis %d out of range for %s", c->name,
                        c->attrs->axis, ad_shape_str(x, a, sizeof a));
  }
  c->out->dtype = x->dtype;
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  return AD_OK;
}

/* log_softmax when LOG (y = x - lse), else softmax: y = e / sum e with
 * e = exp(x - max) kept in y between the two passes, one exp per element
 * (float64 lanes, on exp_d: exp_sum_d for one lane; float32 ones take
 * exp_lanes_f32 or softmax_row_f32).
 * log_softmax is (x - max) - log(sum e), as PyTorch's: x - (max + log(sum
 * e)) would round log(sum e) to max's precision first, losing a near-0
 * result (a confident class) and all of it for logits beyond ~1e16.
 * A lane holding a NaN is all NaN; a lane of no elements (an empty axis:
 * then y has no element either) is not read. */
#define SOFTMAX_BODY(T, LOG)                                                                       \
  {                                                                                                \
    double m = AD_LANE_MAX(X, S, N);                                                               \
    if (LOG) {                                                                                     \
      double ls = log(exp_sum_d(X, S, N, m, NULL, 0));                                             \
      for (int64_t k = 0; k < N; k++) Y[k * S] = (T)(((double)X[k * S] - m) - ls);                 \
    } else {                                                                                       \
      double s = exp_sum_d(X, S, N, m, Y, S);                                                      \
      for (int64_t k = 0; k < N; k++) Y[k * S] = (T)((double)Y[k * S] / s);                        \
    }                                                                                              \
  }

/* softmax (log_softmax when log_) of one contiguous float32 lane, on
 * exp_row_f32 (e into y). */
/* A row's softmax from its maximum m, sum s and exponentials in y. */
CELL_ROW void softmax_finish_f32(const float *x, float *y, int64_t n, float m, double s,
                                 bool log_) {
  if (log_) {
    double ls = log(s);
    for (int64_t i = 0; i < n; i++) y[i] = (float)(((double)x[i] - (double)m) - ls);
  } else {
    double inv = 1 / s; /* e * (1/s) in double: rounded to float, e / s but for ties */
    for (int64_t i = 0; i < n; i++) y[i] = (float)((double)y[i] * inv);
  }
}

CELL_CLONES static void softmax_row_f32(const float *x, float *y, int64_t n, bool log_) {
  float m;
  double s = exp_row_f32(x, y, n, &m);
  softmax_finish_f32(x, y, n, m, s, log_);
}

#define SOFTMAX_ONE(T)     SOFTMAX_BODY(T, 0)
#define LOG_SOFTMAX_ONE(T) SOFTMAX_BODY(T, 1)
/* SOFTMAX_BODY for nb lanes at once (LANES_FN). */
#define SOFTMAX_BLOCK(T, LOG)                                                                      \
  {                                                                                                \
    double m[LANE_BLOCK], s[LANE_BLOCK];                                                           \
    BLOCK_MAX(T, m)                                                                                \
    for (int64_t j = 0; j < nb; j++) s[j] = 0;                                                     \
    if (LOG) {                                                                                     \
      for (int64_t k = 0; k < N; k++)                                                              \
        for (int64_t j = 0; j < nb; j++) s[j] += exp_d((double)X[k * S + j] - m[j]);               \
      for (int64_t j = 0; j < nb; j++) s[j] = log(s[j]);                                           \
      for (int64_t k = 0; k < N; k++)                                                              \
        for (int64_t j = 0; j < nb; j++) Y[k * S + j] = (T)(((double)X[k * S + j] - m[j]) - s[j]); \
    } else {                                                                                       \
      for (int64_t k = 0; k < N; k++)                                                              \
        for (int64_t j = 0; j < nb; j++) {                                                         \
          double e = exp_d((double)X[k * S + j] - m[j]);                                           \
          Y[k * S + j] = (T)e;                                                                     \
          s[j] += e;                                                                               \
        }                                                                                          \
      for (int64_t k = 0; k < N; k++)                                                              \
        for (int64_t j = 0; j < nb; j++) Y[k * S + j] = (T)((double)Y[k * S + j] / s[j]);          \
    }                                                                                              \
  }
#define SOFTMAX_BLOCK0(T) SOFTMAX_BLOCK(T, 0)
#define SOFTMAX_BLOCK1(T) SOFTMAX_BLOCK(T, 1)
LANES_FN(softmax_lanes_f64, double, SOFTMAX_ONE, SOFTMAX_BLOCK0, CELL_CLONES)
LANES_FN(log_softmax_lanes_f64, double, LOG_SOFTMAX_ONE, SOFTMAX_BLOCK1, CELL_CLONES)

/* float32 lanes: a contiguous one (a softmax along the last axis) on
 * softmax_row_f32, a block's or a strided one on exp_lanes_f32. */
CELL_CLONES static void softmax_lanes_f32(const void *x, void *y, int64_t S, int64_t N,
                                          int64_t nb) {
  if (nb == 1 && S == 1)
    softmax_row_f32(x, y, N, false);
  else
    exp_lanes_f32(x, y, S, N, nb, EXP_SOFTMAX);
}
CELL_CLONES static void log_softmax_lanes_f32(const void *x, void *y, int64_t S, int64_t N,
                                              int64_t nb) {
  if (nb == 1 && S == 1)
    softmax_row_f32(x, y, N, true);
  else
    exp_lanes_f32(x, y, S, N, nb, EXP_LOG_SOFTMAX);
}

/* float32 rows shorter than EXP_ROWS_SHORT along the last axis (a
 * classifier's classes, attention over a short sequence): rows [b, e) up
 * to 64 at a time through exp_rows_f32, which gives each row
 * exp_row_f32's bits with the exponentials vectorized across rows; then
 * softmax_finish_f32 per row. The same bits as a row at a time. */
typedef struct small_rows_job {
  const float *x;
  float *y;
  int64_t n;
  bool log_;
} small_rows_job;

CELL_CLONES static void softmax_small_rows(void *ud, int64_t b, int64_t e) {
  const small_rows_job *j = ud;
  enum { ROWS = 64 };
  float m[ROWS];
  double s[ROWS];
  int64_t n = j->n;
  for (int64_t r0 = b; r0 < e; r0 += ROWS) {
    int64_t nr = e - r0 < ROWS ? e - r0 : ROWS;
    const float *x = j->x + r0 * n;
    float *y = j->y + r0 * n;
    exp_rows_f32(x, y, nr, n, m, s);
    for (int64_t r = 0; r < nr; r++)
      softmax_finish_f32(x + r * n, y + r * n, n, m[r], s[r], j->log_);
  }
}

/* y's lanes lie where x's do: n * inner elements apart for each o. */
static void softmax_run(const ad_call *c, bool log_) {
  const ad_tensor *x = c->in[0];
  red_dims r = red_of(x, 1u << ad_norm_axis(c->attrs->axis, x->ndim));
  bool f32 = c->out->dtype == AD_F32;
  if (f32 && r.inner == 1 && r.n > 0 && r.n < EXP_ROWS_SHORT && r.outer > 1) {
    small_rows_job j = {x->data, c->out->data, r.n, log_};
    ad_parallel_for(r.outer, (32768 + r.n - 1) / r.n, softmax_small_rows, &j);
    return;
  }
  run_lanes(x, c->out, r, r.n * r.inner,
            log_ ? (f32 ? log_softmax_lanes_f32 : log_softmax_lanes_f64)
                 : (f32 ? softmax_lanes_f32 : softmax_lanes_f64));
}

static int sample_softmax(const ad_sample_call *s) {
  if (s->variant > 1) return 0;
  int64_t shape[3] = {2, 3, 4};
  s->attrs->axis = s->variant ? 1 : -1;
  return (s->in[0] = ad_sample_tensor(s, 3, shape, -2, 2, true)) ? 1 : -1;
}

/* ----------------------------------------------------------------- sum */

/* A long contiguous lane (SUM_LONG elements or more: a loss's mean, a
 * sum of everything) summed as one chain of double additions would be
 * bound by the adder's latency. It is cut into chunks instead, each
 * summed in 32 interleaved double partials added in a fixed tree
 * (sum_chunk), and the chunks' sums added in order. The chunks depend on n alone (SUM_CHUNK
 * elements, more when that would make over SUM_MAX_CHUNKS of them), so
 * the bits do not depend on the thread count, and one long lane's chunks
 * are summed on the library's threads. Shorter lanes keep the chain. */
enum { SUM_LONG = 256, SUM_CHUNK = 4096, SUM_MAX_CHUNKS = 1024 };

/* The sum (sq: of the squares of x - m, sum_sq_dev's) of n contiguous
 * elements in 32 partial sums, added as a tree. */
#define SUM_CHUNK_FN(NAME, T)                                                                      \
  CELL_CLONES static double NAME(const T *x, int64_t n, double m, bool sq) {                       \
    double acc[32] = {0};                                                                          \
    int64_t i = 0;                                                                                 \
    if (sq) {                                                                                      \
      for (; i + 32 <= n; i += 32) AD_UNROLL_FULL for (int k = 0; k < 32; k++) {                   \
          double d = (double)x[i + k] - m;                                                         \
          acc[k] += d * d;                                                                         \
        }                                                                                          \
      for (int k = 0; i < n; i++, k++) {                                                           \
        double d = (double)x[i] - m;                                                               \
        acc[k] += d * d;                                                                           \
      }                                                                                            \
    } else {                                                                                       \
      for (; i + 32 <= n; i += 32) AD_UNROLL_FULL for (int k = 0; k < 32; k++) acc[k] += x[i + k]; \
      for (int k = 0; i < n; i++, k++) acc[k] += x[i];                                             \
    }                                                                                              \
    for (int w = 16; w >= 1; w /= 2)                                                               \
      for (int k = 0; k < w; k++) acc[k] += acc[k + w];                                            \
    return acc[0];                                                                                 \
  }
SUM_CHUNK_FN(sum_chunk_f32, float)
SUM_CHUNK_FN(sum_chunk_f64, double)

/* The chunk length of a lane of n elements. */
static int64_t sum_chunk_len(int64_t n) {
  int64_t len = (n + SUM_MAX_CHUNKS - 1) / SUM_MAX_CHUNKS;
  return len > SUM_CHUNK ? len : SUM_CHUNK;
}

typedef struct sum_job {
  const void *x;
  bool f32, sq;
  double m;
  int64_t n, len;
  double *part;
} sum_job;

static void sum_chunks(void *ud, int64_t b, int64_t e) {
  const sum_job *j = ud;
  for (int64_t q = b; q < e; q++) {
    int64_t lo = q * j->len, cnt = j->n - lo < j->len ? j->n - lo : j->len;
    j->part[q] = j->f32 ? sum_chunk_f32((const float *)j->x + lo, cnt, j->m, j->sq)
                        : sum_chunk_f64((const double *)j->x + lo, cnt, j->m, j->sq);
  }
}

/* The sum (sq: of (x - m)^2) of a long contiguous lane, chunk by chunk (on
 * the library's threads when split), the chunks' sums added in order. */
static double sum_long_of(const void *x, bool f32, int64_t n, double m, bool sq, bool split) {
  double part[SUM_MAX_CHUNKS], s = 0;
  sum_job j = {x, f32, sq, m, n, sum_chunk_len(n), part};
  int64_t chunks = (n + j.len - 1) / j.len;
  if (split && chunks > 1)
    ad_parallel_for(chunks, 1, sum_chunks, &j);
  else
    sum_chunks(&j, 0, chunks);
  for (int64_t q = 0; q < chunks; q++) s += part[q];
  return s;
}

/* The sum of a long contiguous lane, its chunks on threads when split. */
static double sum_long(const void *x, bool f32, int64_t n, bool split) {
  return sum_long_of(x, f32, n, 0, false, split);
}

#define SUM_BODY(T)                                                                                \
  if (S == 1 && N >= SUM_LONG) {                                                                   \
    *Y = (T)sum_long(X, sizeof(T) == sizeof(float), N, false);                                     \
  } else {                                                                                         \
    double s = 0;                                                                                  \
    for (int64_t k = 0; k < N; k++) s += X[k * S];                                                 \
    *Y = (T)s;                                                                                     \
  }

#define SUM_BLOCK(T)                                                                               \
  {                                                                                                \
    double acc[LANE_BLOCK];                                                                        \
    for (int64_t j = 0; j < nb; j++) acc[j] = 0;                                                   \
    int64_t k = 0;                                                                                 \
    for (; k + 4 <= N; k += 4) {                                                                   \
      const T *r0 = X + k * S, *r1 = r0 + S, *r2 = r1 + S, *r3 = r2 + S;                           \
      for (int64_t j = 0; j < nb; j++) acc[j] = (((acc[j] + r0[j]) + r1[j]) + r2[j]) + r3[j];      \
    }                                                                                              \
    for (; k < N; k++)                                                                             \
      for (int64_t j = 0; j < nb; j++) acc[j] += X[k * S + j];                                     \
    for (int64_t j = 0; j < nb; j++) Y[j] = (T)acc[j];                                             \
  }
LANES_FNS(sum_lanes, SUM_BODY, SUM_BLOCK, CELL_CLONES)

/* Contiguous rows shorter than SUM_LONG (a reduction over the last dims:
 * inner = 1), SUM_ROWS at a time with their sums interleaved, so that one
 * row's additions do not wait for each other's latency; each row still
 * summed in order in one double (SUM_BODY's bits). Rows [b, e). */
enum { SUM_ROWS = 8 };
typedef struct sum_rows_job {
  const void *x;
  void *y;
  int64_t n;
} sum_rows_job;
#define SUM_ROWS_OF(T)                                                                             \
  do {                                                                                             \
    const T *X = j->x;                                                                             \
    T *Y = j->y;                                                                                   \
    int64_t n = j->n, r0 = b;                                                                      \
    for (; r0 + SUM_ROWS <= e; r0 += SUM_ROWS) {                                                   \
      double acc[SUM_ROWS] = {0};                                                                  \
      for (int64_t k = 0; k < n; k++)                                                              \
        for (int q = 0; q < SUM_ROWS; q++) acc[q] += X[(r0 + q) * n + k];                          \
      for (int q = 0; q < SUM_ROWS; q++) Y[r0 + q] = (T)acc[q];                                    \
    }                                                                                              \
    for (; r0 < e; r0++) {                                                                         \
      double acc = 0;                                                                              \
      for (int64_t k = 0; k < n; k++) acc += X[r0 * n + k];                                        \
      Y[r0] = (T)acc;                                                                              \
    }                                                                                              \
  } while (0)
CELL_CLONES static void sum_rows_f32(void *ud, int64_t b, int64_t e) {
  const sum_rows_job *j = ud;
  SUM_ROWS_OF(float);
}
CELL_CLONES static void sum_rows_f64(void *ud, int64_t b, int64_t e) {
  const sum_rows_job *j = ud;
  SUM_ROWS_OF(double);
}
#undef SUM_ROWS_OF

static void sum_fwd(const ad_call *c) {
  red_dims r = red_of(c->in[0], c->attrs->reduce.axes);
  if (r.inner == 1 && r.n > 0 && r.n < SUM_LONG && r.outer >= SUM_ROWS) {
    sum_rows_job j = {c->in[0]->data, c->out->data, r.n};
    int64_t grain = 32768 / r.n > SUM_ROWS ? 32768 / r.n : SUM_ROWS;
    ad_parallel_for(r.outer, grain, c->out->dtype == AD_F32 ? sum_rows_f32 : sum_rows_f64, &j);
    return;
  }
  if (r.outer == 1 && r.inner == 1 && r.n >= SUM_LONG) { /* one long lane: its chunks split */
    double s = sum_long(c->in[0]->data, c->out->dtype == AD_F32, r.n, true);
    if (c->out->dtype == AD_F32)
      *(float *)c->out->data = (float)s;
    else
      *(double *)c->out->data = s;
    return;
  }
  run_lanes(c->in[0], c->out, r, r.inner, c->out->dtype == AD_F32 ? sum_lanes_f32 : sum_lanes_f64);
}

static ad_status sum_bwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  ad_tensor *dy = keep(c->ctx, c->gout, x, &c->attrs->reduce);
  return ad_call_set_grad(c, 0, ad_expand(c->ctx, dy, x->ndim, x->shape));
}

/* The backward's expand of dy, written straight into x's gradient: element
 * (o, k, j) of x, seen as [outer, n, inner], takes dy[o, j], stored or
 * added. Over x's elements by offset on the library's threads from 32K
 * (the elementwise ops' chunks); one copy or one add per element, so the
 * bits of expand and then a copy or an add. */
typedef struct sum_into_job {
  ad_tensor *g;
  const ad_tensor *dy;
  red_dims r;
  bool add;
} sum_into_job;

#define SUM_INTO(T)                                                                                \
  do {                                                                                             \
    T *G = j->g->data;                                                                             \
    const T *D = j->dy->data;                                                                      \
    int64_t o = b / per, rem = b - o * per; /* element b: lane o's element rem */                  \
    for (int64_t i = b, len; i < e; i += len) {                                                    \
      if (in == 1) { /* a run of lane o's elements: one value */                                   \
        T v = D[o];                                                                                \
        len = per - rem < e - i ? per - rem : e - i;                                               \
        if (j->add)                                                                                \
          for (int64_t q = 0; q < len; q++) G[i + q] += v;                                         \
        else                                                                                       \
          for (int64_t q = 0; q < len; q++) G[i + q] = v;                                          \
      } else { /* a run of one row of dy (whole rows but the first) */                             \
        int64_t c0 = i == b ? rem % in : 0;                                                        \
        const T *src = D + o * in + c0;                                                            \
        len = in - c0 < e - i ? in - c0 : e - i;                                                   \
        if (j->add)                                                                                \
          for (int64_t q = 0; q < len; q++) G[i + q] += src[q];                                    \
        else                                                                                       \
          memcpy(G + i, src, (size_t)len * sizeof(T));                                             \
      }                                                                                            \
      if ((rem += len) == per) rem = 0, o++; /* the next lane: no division per run */              \
    }                                                                                              \
  } while (0)

static void sum_into_range(void *ud, int64_t b, int64_t e) {
  const sum_into_job *j = ud;
  int64_t in = j->r.inner, per = j->r.n * in;
  if (b >= e) return; /* an empty x: per may be 0 */
  if (j->g->dtype == AD_F32)
    SUM_INTO(float);
  else
    SUM_INTO(double);
}
#undef SUM_INTO

static bool sum_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  const ad_tensor *x = c->in[0];
  uint32_t axes = c->attrs->reduce.axes;
  red_dims r = red_of(x, axes);
  for (int d = 0; d < x->ndim; d++) /* the axes one run, as the forward read them */
    if ((d >= r.lo && d < r.hi) != ((axes >> d & 1) != 0)) return false;
  (void)k;
  sum_into_job j = {grad, c->gout, r, !overwrite};
  if (x->size > 32768)
    ad_parallel_for(x->size, 32768, sum_into_range, &j);
  else
    sum_into_range(&j, 0, x->size);
  return true;
}

ad_tensor *ad_sum(ad_ctx *ctx, ad_tensor *x) {
  return reduce(ctx, AD_OP_SUM, x, all_axes(x), false);
}

ad_tensor *ad_sum_axis(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim) {
  return reduce_axis(ctx, AD_OP_SUM, x, axis, keepdim);
}

const ad_op_def ad_def_sum = {
    .name = "sum",
    .arity = 1,
    .attrs = AD_ATTRS_REDUCE,
    .shape = shape_reduce,
    .forward = sum_fwd,
    .backward = sum_bwd,
    .grad_into = sum_grad_into,
    .sample = sample_reduce,
    .math = "y = sum_axis x",
    .inputs = {"x"},
    .grads = {"expand(dy, shape(x))"},
};

/* ----------------------------------------------------------------- max */

/* A contiguous run's maximum (ad_lane_max, ops.h) in W partial maxima, one
 * vector of AVX-512, each taken with a max instruction (ROW_MAX_W with
 * MAX_NO_NAN, softmax_exp.h: no branch that random values mispredict); the
 * chain of comparisons runs instead for a run that holds a NaN (bad) or
 * whose maximum is a zero: only there can the partials pick another
 * element than the chain (another NaN, the other zero). Any other value
 * names one bit pattern, so the same bits as the chain. */
/* The clones are static behind a plain function: GCC exports an extern
 * target_clones function (its ifunc and resolver) from the shared library
 * whatever its visibility, which made these internals part of the ABI. */
#define RUN_MAX_FN(NAME, T, W, CHAIN)                                                              \
  CELL_CLONES static double NAME##_cells(const T *x, int64_t n) {                                  \
    T m = -INFINITY;                                                                               \
    int bad = 0;                                                                                   \
    if (n >= 16 * W) /* four vectors of partials: four chains of max in flight */                  \
      ROW_MAX_W(T, 4 * W, x, n, n / (4 * W) * (4 * W), MAX_NO_NAN, m, bad);                        \
    else                                                                                           \
      ROW_MAX_W(T, W, x, n, n / W * W, MAX_NO_NAN, m, bad);                                        \
    return bad || m == 0 ? CHAIN(x, 1, n) : (double)m;                                             \
  }                                                                                                \
  double NAME(const T *x, int64_t n) { return NAME##_cells(x, n); }
RUN_MAX_FN(ad_run_max_f32, float, 16, ad_lane_max_chain_f32)
RUN_MAX_FN(ad_run_max_f64, double, 8, ad_lane_max_chain_f64)

/* A NaN is the maximum of any lane that holds one. */
#define MAX_BODY(T) *Y = (T)AD_LANE_MAX(X, S, N);

/* The min op's lanes are max's of -x, negated: each element's sign flipped
 * as it is read, and the maximum's after, so the bits of -max(-x) (which
 * min was before it was an op: negation is exact; a NaN's payload is
 * kept, its sign flipped twice). This chain, ad_lane_max_chain's of -x. */
static inline double lane_max_neg_chain_f32(const float *x, int64_t s, int64_t n) {
  double m = -INFINITY;
  for (int64_t k = 0; k < n; k++) m = AD_MAX_NAN(-(double)x[k * s], m);
  return m;
}
static inline double lane_max_neg_chain_f64(const double *x, int64_t s, int64_t n) {
  double m = -INFINITY;
  for (int64_t k = 0; k < n; k++) m = AD_MAX_NAN(-x[k * s], m);
  return m;
}
#define LANE_MAX_NEG_CHAIN(x, s, n)                                                                \
  _Generic((x), const float * : lane_max_neg_chain_f32, const double * : lane_max_neg_chain_f64)(  \
      x, s, n)
#define MIN_BODY(T) *Y = -(T)LANE_MAX_NEG_CHAIN(X, S, N);

/* The shape rule of max: sum's, and the reduced dims must hold an element:
 * the maximum of nothing is undefined, and PyTorch refuses it too. */
static ad_status shape_max(const ad_call *c) {
  ad_status st = shape_reduce(c);
  if (st != AD_OK) return st;
  const ad_tensor *x = c->in[0];
  red_dims r = red_of(x, c->attrs->reduce.axes);
  if (r.n > 0) return AD_OK;
  char a[64];
  return ad_set_error(c->ctx, AD_ERR_SHAPE,
                      "%s: nothing to reduce: the reduced dims (axes 0x%x) of %s hold no element",
                      c->name, (unsigned)c->attrs->reduce.axes, ad_shape_str(x, a, sizeof a));
}

/* In T (a maximum is exact), four rows per pass over the block's maxima:
 * each lane still takes its elements in order k = 0..N-1, so the same
 * value as BLOCK_MAX's chain, and its NaN (in float32 a signalling one
 * quieted, as BLOCK_MAX's conversion to double did). */
#define MAXS_BLOCK(T, SGN)                                                                         \
  {                                                                                                \
    T m[LANE_BLOCK];                                                                               \
    for (int64_t j = 0; j < nb; j++) m[j] = -INFINITY;                                             \
    int64_t k = 0;                                                                                 \
    for (; k + 4 <= N; k += 4) {                                                                   \
      const T *r0 = X + k * S, *r1 = r0 + S, *r2 = r1 + S, *r3 = r2 + S;                           \
      for (int64_t j = 0; j < nb; j++) {                                                           \
        T v = AD_MAX_NAN(SGN r0[j], m[j]);                                                         \
        v = AD_MAX_NAN(SGN r1[j], v);                                                              \
        v = AD_MAX_NAN(SGN r2[j], v);                                                              \
        m[j] = AD_MAX_NAN(SGN r3[j], v);                                                           \
      }                                                                                            \
    }                                                                                              \
    for (; k < N; k++)                                                                             \
      for (int64_t j = 0; j < nb; j++) m[j] = AD_MAX_NAN(SGN X[k * S + j], m[j]);                  \
    for (int64_t j = 0; j < nb; j++) /* float32: a signalling NaN quieted, as (double) did */      \
      Y[j] = SGN(sizeof(T) == sizeof(float) && m[j] != m[j] ? m[j] + m[j] : m[j]);                 \
  }
#define MAX_BLOCK(T) MAXS_BLOCK(T, +)
/* -max(-x), as MIN_BODY; a lane whose minimum is NaN again by the chain:
 * the block's NaN came out with its sign flipped (GCC 12 folds the pair of
 * negations around the select as if a NaN's sign did not count), where
 * the composite -max(-x) this op replaced kept it */
#define MIN_BLOCK(T)                                                                               \
  {                                                                                                \
    MAXS_BLOCK(T, -)                                                                               \
    for (int64_t j = 0; j < nb; j++)                                                               \
      if (Y[j] != Y[j]) Y[j] = -(T)LANE_MAX_NEG_CHAIN(X + j, S, N);                                \
  }
LANES_FNS(max_lanes, MAX_BODY, MAX_BLOCK, CELL_CLONES)
LANES_FNS(min_lanes, MIN_BODY, MIN_BLOCK, CELL_CLONES)

/* Contiguous rows (inner 1), rows [b, e) of n elements each: each row's
 * maximum as ad_run_max takes it (W partial maxima, the chain where a NaN
 * or a zero maximum is found), but inline in one loop over the rows: for
 * short rows the calls per row (the lane function, ad_run_max and its
 * clone's dispatch) cost more than the row. The chain's value and NaN. */
typedef struct max_rows_job {
  const void *x;
  void *y;
  int64_t n;
} max_rows_job;
#define MAX_ROWS_OF(T, W, CHAIN, SGN)                                                              \
  do {                                                                                             \
    const T *X = j->x;                                                                             \
    T *Y = j->y;                                                                                   \
    int64_t n = j->n;                                                                              \
    for (int64_t r = b; r < e; r++) {                                                              \
      const T *x = X + r * n;                                                                      \
      T m = -INFINITY;                                                                             \
      int bad = 0;                                                                                 \
      if (n >= 16 * W) /* four vectors of partials: four chains of max in flight */                \
        ROW_MAX_WS(T, 4 * W, x, n, n / (4 * W) * (4 * W), MAX_NO_NAN, m, bad, SGN);                \
      else                                                                                         \
        ROW_MAX_WS(T, W, x, n, n / W * W, MAX_NO_NAN, m, bad, SGN);                                \
      Y[r] = SGN(bad || m == 0 ? (T)CHAIN(x, 1, n) : m);                                           \
    }                                                                                              \
  } while (0)
CELL_CLONES static void max_rows_f32(void *ud, int64_t b, int64_t e) {
  const max_rows_job *j = ud;
  MAX_ROWS_OF(float, 16, ad_lane_max_chain_f32, +);
}
CELL_CLONES static void max_rows_f64(void *ud, int64_t b, int64_t e) {
  const max_rows_job *j = ud;
  MAX_ROWS_OF(double, 8, ad_lane_max_chain_f64, +);
}
CELL_CLONES static void min_rows_f32(void *ud, int64_t b, int64_t e) {
  const max_rows_job *j = ud;
  MAX_ROWS_OF(float, 16, lane_max_neg_chain_f32, -);
}
CELL_CLONES static void min_rows_f64(void *ud, int64_t b, int64_t e) {
  const max_rows_job *j = ud;
  MAX_ROWS_OF(double, 8, lane_max_neg_chain_f64, -);
}
#undef MAX_ROWS_OF

/* max's and min's forward (min: -max(-x), with rows for one lane too, so
 * that min's every path is in this section) */
static void maxs_fwd(const ad_call *c, bool min) {
  red_dims r = red_of(c->in[0], c->attrs->reduce.axes);
  bool f32 = c->out->dtype == AD_F32;
  if (r.inner == 1 && (r.outer > 1 || min) && r.n > 0) {
    max_rows_job j = {c->in[0]->data, c->out->data, r.n};
    ad_range_fn fn =
        min ? (f32 ? min_rows_f32 : min_rows_f64) : (f32 ? max_rows_f32 : max_rows_f64);
    ad_parallel_for(r.outer, (32768 + r.n - 1) / r.n, fn, &j);
    return;
  }
  run_lanes(c->in[0], c->out, r, r.inner,
            min ? (f32 ? min_lanes_f32 : min_lanes_f64) : (f32 ? max_lanes_f32 : max_lanes_f64));
}

static void max_fwd(const ad_call *c) { maxs_fwd(c, false); }

/* Ties share the gradient: each of the count elements equal to the
 * maximum of its lane gets dy / count. In a lane whose maximum is NaN no
 * element equals it (count 0), so the whole lane gets NaN, as in
 * torch.amax. */
/* The plain backward (no create_graph) in one pass over x per lane block
 * (LANE_BLOCK lanes inner apart; one lane where inner is 1): each lane's
 * count of elements equal to y, then dy / count where x equals y and
 * (dy / count) * 0 elsewhere, each step rounded as the recorded ops (eq,
 * the sum, div, mul) round it: their bits, a NaN lane's NaN included.
 * Counts in int32 (vector lanes; a lane of 2^31 or more elements takes
 * the recorded ops). Units [b, e) of outer x lane blocks. */
typedef struct max_bwd_job {
  const ad_call *c;
  red_dims r;
  int64_t blocks;
  void *dx;
} max_bwd_job;

#define MAX_BWD_LANES(T)                                                                           \
  do {                                                                                             \
    const T *X = j->c->in[0]->data, *Y = j->c->out->data, *G = j->c->gout->data;                   \
    T *D = j->dx, g[LANE_BLOCK];                                                                   \
    int32_t cnt[LANE_BLOCK];                                                                       \
    for (int64_t u = b; u < e; u++) {                                                              \
      int64_t o = u / j->blocks, i0 = u % j->blocks * LANE_BLOCK;                                  \
      int64_t nb = S - i0 < LANE_BLOCK ? S - i0 : LANE_BLOCK, base = o * n * S + i0;               \
      const T *y = Y + o * S + i0, *x = X + base;                                                  \
      T *d = D + base;                                                                             \
      if (S == 1) { /* one contiguous lane: its loops vectorize along it */                        \
        T y0 = y[0];                                                                               \
        int32_t c1 = 0;                                                                            \
        for (int64_t k = 0; k < n; k++) c1 += x[k] == y0;                                          \
        T g1 = G[o] / (T)c1, z1 = g1 * (T)0;                                                       \
        for (int64_t k = 0; k < n; k++) d[k] = x[k] == y0 ? g1 : z1;                               \
        continue;                                                                                  \
      }                                                                                            \
      for (int64_t q = 0; q < nb; q++) cnt[q] = 0;                                                 \
      for (int64_t k = 0; k < n; k++)                                                              \
        for (int64_t q = 0; q < nb; q++) cnt[q] += x[k * S + q] == y[q];                           \
      for (int64_t q = 0; q < nb; q++) g[q] = G[o * S + i0 + q] / (T)cnt[q];                       \
      for (int64_t k = 0; k < n; k++)                                                              \
        for (int64_t q = 0; q < nb; q++) d[k * S + q] = x[k * S + q] == y[q] ? g[q] : g[q] * (T)0; \
    }                                                                                              \
  } while (0)

CELL_CLONES static void max_bwd_lanes(void *ud, int64_t b, int64_t e) {
  const max_bwd_job *j = ud;
  int64_t n = j->r.n, S = j->r.inner;
  if (j->c->in[0]->dtype == AD_F32)
    MAX_BWD_LANES(float);
  else
    MAX_BWD_LANES(double);
}
#undef MAX_BWD_LANES

/* Where the lanes are rows (inner 1) of at least MAXG_ROWS_SPLIT elements
 * (ad_max(x) of a whole tensor, a long row's maximum), the same values by
 * ranges of x's elements instead of by lanes, so that a row is split over
 * the threads in the chunks of the elementwise ops and of the copy of a
 * gradient into a leaf's (each thread then writes what it later reads):
 * each row's count (each range's count added to its row's: integers,
 * exact in any order), then each row's dy / count and its product by 0,
 * then the stores into dst. The bits of MAX_BWD_LANES. */
enum { MAXG_ROWS_SPLIT = 32768 };

typedef struct maxg_rows_job {
  const ad_call *c;
  int64_t n;            /* a row's length */
  _Atomic int64_t *cnt; /* per row */
  void *gz;             /* per row o: dy / count at 2o, its product by 0 at 2o + 1 */
  void *dst;
} maxg_rows_job;

#define MAXG_ROWS_COUNT(T)                                                                         \
  do {                                                                                             \
    const T *X = j->c->in[0]->data, *Y = j->c->out->data;                                          \
    for (int64_t i = b; i < e;) {                                                                  \
      int64_t o = i / j->n, hi = (o + 1) * j->n < e ? (o + 1) * j->n : e, c1 = 0;                  \
      T y0 = Y[o];                                                                                 \
      for (; i < hi; i++) c1 += X[i] == y0;                                                        \
      atomic_fetch_add_explicit(&j->cnt[o], c1, memory_order_relaxed);                             \
    }                                                                                              \
  } while (0)

#define MAXG_ROWS_STORE(T)                                                                         \
  do {                                                                                             \
    const T *X = j->c->in[0]->data, *Y = j->c->out->data, *GZ = j->gz;                             \
    T *D = j->dst;                                                                                 \
    for (int64_t i = b; i < e;) {                                                                  \
      int64_t o = i / j->n, hi = (o + 1) * j->n < e ? (o + 1) * j->n : e;                          \
      T y0 = Y[o], g = GZ[2 * o], z = GZ[2 * o + 1];                                               \
      for (; i < hi; i++) D[i] = X[i] == y0 ? g : z;                                               \
    }                                                                                              \
  } while (0)

CELL_CLONES static void maxg_rows_count(void *ud, int64_t b, int64_t e) {
  const maxg_rows_job *j = ud;
  if (j->c->in[0]->dtype == AD_F32)
    MAXG_ROWS_COUNT(float);
  else
    MAXG_ROWS_COUNT(double);
}

CELL_CLONES static void maxg_rows_store(void *ud, int64_t b, int64_t e) {
  const maxg_rows_job *j = ud;
  if (j->c->in[0]->dtype == AD_F32)
    MAXG_ROWS_STORE(float);
  else
    MAXG_ROWS_STORE(double);
}
#undef MAXG_ROWS_COUNT
#undef MAXG_ROWS_STORE

/* Whether maxg_rows takes c: the reduced axes one run at the end (rows)
 * of at least MAXG_ROWS_SPLIT elements and under 2^31 (as max_bwd's own
 * fast path: a longer row takes the recorded ops). */
static bool maxg_rows_fit(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  uint32_t axes = c->attrs->reduce.axes;
  red_dims r = red_of(x, axes);
  for (int d = 0; d < x->ndim; d++) /* the axes one run, as red_of reads them */
    if ((d >= r.lo && d < r.hi) != ((axes >> d & 1) != 0)) return false;
  return r.inner == 1 && r.n >= MAXG_ROWS_SPLIT && r.n < INT32_MAX && x->size > 0;
}

/* c's gradient (maxg_rows_fit) into dst. false, having written nothing,
 * when its scratch cannot be allocated. */
static bool maxg_rows(const ad_call *c, void *dst) {
  ad_ctx *ctx = c->ctx;
  const ad_tensor *x = c->in[0];
  int64_t n = red_of(x, c->attrs->reduce.axes).n, rows = x->size / n;
  size_t es = ad_dsize(x->dtype), bytes = (size_t)rows * (sizeof(int64_t) + 2 * es);
  char *scratch = ctx->alloc(ctx->alloc_ud, NULL, 0, bytes); /* no error recorded: declined */
  if (!scratch) return false;
  maxg_rows_job j = {c, n, (_Atomic int64_t *)(void *)scratch,
                     scratch + (size_t)rows * sizeof(int64_t), dst};
  for (int64_t o = 0; o < rows; o++) atomic_init(&j.cnt[o], 0);
  ad_parallel_for(x->size, MAXG_ROWS_SPLIT, maxg_rows_count, &j);
  for (int64_t o = 0; o < rows; o++) {
    int64_t k = atomic_load_explicit(&j.cnt[o], memory_order_relaxed);
    if (x->dtype == AD_F32) {
      float *gz = j.gz, g = ((const float *)c->gout->data)[o] / (float)k;
      gz[2 * o] = g, gz[2 * o + 1] = g * 0.0f;
    } else {
      double *gz = j.gz, g = ((const double *)c->gout->data)[o] / (double)k;
      gz[2 * o] = g, gz[2 * o + 1] = g * 0.0;
    }
  }
  ad_parallel_for(x->size, MAXG_ROWS_SPLIT, maxg_rows_store, &j);
  ctx->alloc(ctx->alloc_ud, scratch, bytes, 0);
  return true;
}

static ad_status max_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0];
  const ad_reduce_attrs *ra = &c->attrs->reduce;
  red_dims r = red_of(x, ra->axes);
  if (!ctx->grad_enabled && x->size > 0 && r.n < INT32_MAX) {
    ad_tensor *dx = ad_tmp_like(ctx, x);
    if (!dx) return ad_last_status(ctx);
    if (maxg_rows_fit(c) && maxg_rows(c, dx->data)) return ad_call_set_grad(c, 0, dx);
    max_bwd_job j = {c, r, (r.inner + LANE_BLOCK - 1) / LANE_BLOCK, dx->data};
    int64_t units = r.outer * j.blocks;
    int64_t per = 2 * r.n * (r.inner < LANE_BLOCK ? r.inner : LANE_BLOCK);
    int64_t grain = (32768 + per - 1) / per;
    if (units <= grain)
      max_bwd_lanes(&j, 0, units);
    else
      ad_parallel_for(units, grain, max_bwd_lanes, &j);
    return ad_call_set_grad(c, 0, dx);
  }
  ad_tensor *is_max = ad_eq(ctx, x, keep(ctx, c->out, x, ra));
  ad_tensor *count = reduce(ctx, AD_OP_SUM, is_max, ra->axes, true);
  return ad_call_set_grad(c, 0, ad_mul(ctx, ad_div(ctx, keep(ctx, c->gout, x, ra), count), is_max));
}

/* Rows of at least MAXG_ROWS_SPLIT elements straight into a leaf's first
 * gradient of a pass (no temporary to copy in). An addition into a
 * gradient already there is declined: where both hold a NaN, which of the
 * two the sum keeps depends on the operands' order, which the compiler
 * picks per loop (a vector body and its scalar tail differ), so it could
 * differ from tape.c's addition. */
static bool max_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  (void)k;
  return overwrite && maxg_rows_fit(c) && maxg_rows(c, grad->data);
}

ad_tensor *ad_max(ad_ctx *ctx, ad_tensor *x) {
  return reduce(ctx, AD_OP_MAX, x, all_axes(x), false);
}

ad_tensor *ad_max_axis(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim) {
  return reduce_axis(ctx, AD_OP_MAX, x, axis, keepdim);
}

/* Values kept apart: central differences across a tie would see a kink. */
static int max_sample(const ad_sample_call *s) { return sample_red(s, true); }

const ad_op_def ad_def_max = {
    .name = "max",
    .arity = 1,
    .attrs = AD_ATTRS_REDUCE,
    .shape = shape_max,
    .forward = max_fwd,
    .backward = max_bwd,
    .grad_into = max_grad_into,
    .sample = max_sample,
    .math = "y = max_axis x",
    .inputs = {"x"},
    .grads = {"expand(dy) * [x = y] / count(x = y)  (ties share)"},
};

/* ----------------------------------------------------------------- min
 *
 *   y = min_axis x = -max_axis(-x)       dx = expand(dy) [x = y] / count(x = y)
 *
 * torch.amin, max's kernels reading -x (the bits of the composite -max(-x)
 * that min was, in one pass: max's rules, ties share the gradient, a NaN
 * wins); the backward is max's, which reads only x and y. */
static void min_fwd(const ad_call *c) { maxs_fwd(c, true); }

const ad_op_def ad_def_min = {
    .name = "min",
    .arity = 1,
    .attrs = AD_ATTRS_REDUCE,
    .shape = shape_max,
    .forward = min_fwd,
    .backward = max_bwd,
    .grad_into = max_grad_into,
    .sample = max_sample,
    .math = "y = min_axis x = -max_axis(-x)",
    .inputs = {"x"},
    .grads = {"expand(dy) * [x = y] / count(x = y)  (ties share)"},
};

/* ----------------------------------------------------------- logsumexp */

/* m not finite: NaN (a lane holding a NaN), +inf, or -inf (every element
 * -inf, or none: the log of an empty sum) is the result. */
#define LSE_BODY(T)                                                                                \
  {                                                                                                \
    double m = AD_LANE_MAX(X, S, N);                                                               \
    if (!isfinite(m)) {                                                                            \
      *Y = (T)m;                                                                                   \
    } else {                                                                                       \
      *Y = (T)(m + log(exp_sum_d(X, S, N, m, NULL, 0)));                                           \
    }                                                                                              \
  }

/* LSE_BODY for nb lanes: the sums of a lane whose maximum is not finite
 * are taken and not used (float64 lanes). */
#define LSE_BLOCK(T)                                                                               \
  {                                                                                                \
    double m[LANE_BLOCK], s[LANE_BLOCK];                                                           \
    BLOCK_MAX(T, m)                                                                                \
    for (int64_t j = 0; j < nb; j++) s[j] = 0;                                                     \
    for (int64_t k = 0; k < N; k++)                                                                \
      for (int64_t j = 0; j < nb; j++) s[j] += exp_d((double)X[k * S + j] - m[j]);                 \
    for (int64_t j = 0; j < nb; j++) Y[j] = (T)(isfinite(m[j]) ? m[j] + log(s[j]) : m[j]);         \
  }
LANES_FN(lse_lanes_f64, double, LSE_BODY, LSE_BLOCK, CELL_CLONES)

/* float32 lanes on exp_lanes_f32; a contiguous one (logsumexp along the
 * last axis) on exp_row_f32, whose sum differs from a block lane's in the
 * last bits (see there). */
CELL_CLONES static void lse_lanes_f32(const void *xv, void *yv, int64_t S, int64_t N, int64_t nb) {
  if (nb > 1 || S != 1) {
    exp_lanes_f32(xv, yv, S, N, nb, EXP_LSE);
    return;
  }
  float m;
  double s = exp_row_f32(xv, NULL, N, &m); /* m not finite: the sum is not used */
  *(float *)yv = (float)(isfinite(m) ? (double)m + log(s) : (double)m);
}

/* float32 rows shorter than EXP_ROWS_SHORT along the last axis (a
 * logsumexp over a few choices): up to 64 rows at a time through
 * exp_rows_f32 (each row exp_row_f32's maximum and sum, so lse_lanes_f32's
 * bits), as softmax_small_rows, instead of a lane call per row. */
CELL_CLONES static void lse_small_rows(void *ud, int64_t b, int64_t e) {
  const small_rows_job *j = ud;
  enum { ROWS = 64 };
  float m[ROWS], ex[ROWS * EXP_ROWS_SHORT];
  double s[ROWS];
  for (int64_t r0 = b; r0 < e; r0 += ROWS) {
    int64_t nr = e - r0 < ROWS ? e - r0 : ROWS;
    exp_rows_f32(j->x + r0 * j->n, ex, nr, j->n, m, s);
    for (int64_t r = 0; r < nr; r++)
      j->y[r0 + r] = (float)(isfinite(m[r]) ? (double)m[r] + log(s[r]) : (double)m[r]);
  }
}

/* The same for float64 rows (LSE_BODY's bits: each row's maximum, its
 * exponentials in a run of rows with the maxima repeated beside them,
 * where they vectorise, each row's sum in order, as exp_sum_d adds). */
typedef struct small_rows_job_d {
  const double *x;
  double *y;
  int64_t n;
} small_rows_job_d;

CELL_CLONES static void lse_small_rows_d(void *ud, int64_t b, int64_t e) {
  const small_rows_job_d *j = ud;
  const int64_t n = j->n, per = 256 / n;
  double m[256], mrep[256], ex[256];
  for (int64_t r0 = b; r0 < e; r0 += per) {
    const int64_t nr = e - r0 < per ? e - r0 : per, len = nr * n;
    const double *x = j->x + r0 * n;
    for (int64_t r = 0; r < nr; r++) {
      m[r] = AD_LANE_MAX(x + r * n, 1, n);
      for (int64_t k = 0; k < n; k++) mrep[r * n + k] = m[r];
    }
    for (int64_t t = 0; t < len; t++) ex[t] = exp_d(x[t] - mrep[t]);
    for (int64_t r = 0; r < nr; r++) {
      double sr = 0;
      for (int64_t k = 0; k < n; k++) sr += ex[r * n + k];
      j->y[r0 + r] = isfinite(m[r]) ? m[r] + log(sr) : m[r];
    }
  }
}

static void logsumexp_fwd(const ad_call *c) {
  red_dims r = red_of(c->in[0], c->attrs->reduce.axes);
  if (r.inner == 1 && r.n > 0 && r.n < EXP_ROWS_SHORT && r.outer > 1) {
    if (c->out->dtype == AD_F32) {
      small_rows_job j = {c->in[0]->data, c->out->data, r.n, false};
      ad_parallel_for(r.outer, (32768 + r.n - 1) / r.n, lse_small_rows, &j);
    } else {
      small_rows_job_d j = {c->in[0]->data, c->out->data, r.n};
      ad_parallel_for(r.outer, (32768 + r.n - 1) / r.n, lse_small_rows_d, &j);
    }
    return;
  }
  run_lanes(c->in[0], c->out, r, r.inner, c->out->dtype == AD_F32 ? lse_lanes_f32 : lse_lanes_f64);
}

/* logsumexp's plain backward (no create_graph) along the last axis:
 * dx = dy * exp(x - y) over rows [b, e) of n elements, in one pass. Each
 * row's y and dy are repeated beside its elements, 256 elements at a time,
 * so that the loop vectorises across short rows; each element's
 * expressions are the recorded ops' (sub, exp with its fix outside
 * exp_v's range, mul): the same bits. */
typedef struct lse_bwd_job {
  const void *x, *y, *dy;
  void *dx;
  int64_t n;
} lse_bwd_job;

#define LSE_BWD_ROWS(NAME, T, EXP_BODY)                                                            \
  CELL_CLONES static void NAME(void *ud, int64_t b, int64_t e) {                                   \
    const lse_bwd_job *j = ud;                                                                     \
    const T *X = j->x, *Y = j->y, *G = j->dy;                                                      \
    T *D = j->dx, yr[256], gr[256];                                                                \
    const int64_t n = j->n;                                                                        \
    for (int64_t i0 = b * n, i1 = e * n; i0 < i1; i0 += 256) {                                     \
      const int64_t len = i1 - i0 < 256 ? i1 - i0 : 256;                                           \
      int64_t r = i0 / n, k = i0 - r * n;                                                          \
      for (int64_t t = 0; t < len; t++) {                                                          \
        yr[t] = Y[r], gr[t] = G[r];                                                                \
        if (++k == n) k = 0, r++;                                                                  \
      }                                                                                            \
      const T *x = X + i0;                                                                         \
      T *dx = D + i0;                                                                              \
      EXP_BODY                                                                                     \
    }                                                                                              \
  }
LSE_BWD_ROWS(lse_bwd_f32, float, {
  int out = 0;
  for (int64_t t = 0; t < len; t++) {
    float d = x[t] - yr[t];
    dx[t] = gr[t] * exp_v(d);
    out |= EXP_V_OUT(d);
  }
  if (out)
    for (int64_t t = 0; t < len; t++) {
      float d = x[t] - yr[t];
      if (EXP_V_OUT(d)) dx[t] = gr[t] * expf(d);
    }
})
LSE_BWD_ROWS(lse_bwd_f64, double, {
  for (int64_t t = 0; t < len; t++) dx[t] = gr[t] * exp_d(x[t] - yr[t]);
})

static ad_status logsumexp_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0];
  const ad_reduce_attrs *ra = &c->attrs->reduce;
  red_dims r = red_of(x, ra->axes);
  if (!ctx->grad_enabled && r.inner == 1 && r.n > 0 && r.n < EXP_ROWS_SHORT && c->needs[0]) {
    ad_tensor *dx = ad_tmp_like(ctx, x);
    if (!dx) return ad_last_status(ctx);
    lse_bwd_job j = {x->data, c->out->data, c->gout->data, dx->data, r.n};
    ad_parallel_for(r.outer, (32768 + r.n - 1) / r.n,
                    x->dtype == AD_F32 ? lse_bwd_f32 : lse_bwd_f64, &j);
    return ad_call_set_grad(c, 0, dx);
  }
  ad_tensor *p = ad_exp(ctx, ad_sub(ctx, x, keep(ctx, c->out, x, ra)));
  return ad_call_set_grad(c, 0, ad_mul(ctx, keep(ctx, c->gout, x, ra), p));
}

ad_tensor *ad_logsumexp(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim) {
  return reduce_axis(ctx, AD_OP_LOGSUMEXP, x, axis, keepdim);
}

const ad_op_def ad_def_logsumexp = {
    .name = "logsumexp",
    .arity = 1,
    .attrs = AD_ATTRS_REDUCE,
    .shape = shape_reduce,
    .forward = logsumexp_fwd,
    .backward = logsumexp_bwd,
    .sample = sample_reduce,
    .math = "y = m + log sum exp(x - m), m = max x",
    .inputs = {"x"},
    .grads = {"expand(dy) * exp(x - y)"},
};

/* ------------------------------------------------------------- softmax */

static void softmax_fwd(const ad_call *c) { softmax_run(c, false); }

static ad_status softmax_bwd(const ad_call *c) {
  ad_tensor *in[2] = {c->gout, c->out};
  return ad_call_set_grad(c, 0, ad_op_apply(c->ctx, AD_OP_SOFTMAX_BACKWARD, 2, in, c->attrs));
}

ad_tensor *ad_softmax(ad_ctx *ctx, ad_tensor *x, int axis) {
  ad_attrs at = {.axis = axis};
  return ad_apply1(ctx, AD_OP_SOFTMAX, x, &at);
}

const ad_op_def ad_def_softmax = {
    .name = "softmax",
    .arity = 1,
    .attrs = AD_ATTRS_AXIS,
    .shape = shape_softmax,
    .forward = softmax_fwd,
    .backward = softmax_bwd,
    .sample = sample_softmax,
    .math = "y = exp(x - lse(x)) along axis, lse = logsumexp",
    .inputs = {"x"},
    .grads = {"softmax_backward(dy, y) = y * (dy - sum_axis(dy * y))"},
};

/* ---------------------------------------------------- softmax_backward
 *
 *   y = s (g - m),  m = sum_axis(g s)     (softmax's dx for its dy = g, s = softmax(x))
 *   dg = softmax_backward(dy, s)          (the map g -> y is self-adjoint)
 *   ds = dy (g - m) - g sum_axis(dy s)    (of ops)
 *
 * One pass a lane for s and one for out, s in double, out computed in
 * double and rounded once; softmax's gradient was four ops (a product, a
 * sum, a difference, a product), each a pass over the tensor. */

/* g and y (same shape, float) along axis; out of their shape. */
static ad_status shape_softmax_backward(const ad_call *c) {
  char a[64], b[64];
  if (ad_check_float_same(c->ctx, c->name, 2, c->in) != AD_OK) return ad_last_status(c->ctx);
  if (!ad_same_shape(c->in[0], c->in[1]))
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: g %s and s %s differ", c->name,
                        ad_shape_str(c->in[0], a, sizeof a), ad_shape_str(c->in[1], b, sizeof b));
  return shape_softmax(c);
}

typedef struct smb_job {
  const ad_call *c;
  red_dims r;
} smb_job;

/* The lanes of outer blocks [b, e): out = y (g - sum(g y)) along the
 * reduced dim, element k of lane j at k * inner + j; a contiguous lane
 * (inner 1) sums in 16 interleaved partials, the lanes of a block of 64
 * side by side (vectorized across them). */
#define SMB_LANES(T)                                                                               \
  do {                                                                                             \
    const T *G = c->in[0]->data, *Y = c->in[1]->data;                                              \
    T *O = c->out->data;                                                                           \
    for (int64_t u = b; u < e; u++) {                                                              \
      int64_t o = u / blocks, j0 = u % blocks * LANE_BLOCK;                                        \
      int64_t nb = inner - j0 < LANE_BLOCK ? inner - j0 : LANE_BLOCK;                              \
      const T *g = G + o * n * inner + j0, *y = Y + o * n * inner + j0;                            \
      T *out = O + o * n * inner + j0;                                                             \
      if (inner == 1) {                                                                            \
        double p[16] = {0}, sum = 0;                                                               \
        int64_t k = 0;                                                                             \
        for (; k + 16 <= n; k += 16)                                                               \
          for (int q = 0; q < 16; q++) p[q] += (double)g[k + q] * (double)y[k + q];                \
        for (; k < n; k++) p[k % 16] += (double)g[k] * (double)y[k];                               \
        for (int q = 0; q < 16; q++) sum += p[q];                                                  \
        for (k = 0; k < n; k++) out[k] = (T)((double)y[k] * ((double)g[k] - sum));                 \
      } else {                                                                                     \
        double sj[LANE_BLOCK];                                                                     \
        for (int64_t j = 0; j < nb; j++) sj[j] = 0;                                                \
        for (int64_t k = 0; k < n; k++)                                                            \
          for (int64_t j = 0; j < nb; j++)                                                         \
            sj[j] += (double)g[k * inner + j] * (double)y[k * inner + j];                          \
        for (int64_t k = 0; k < n; k++)                                                            \
          for (int64_t j = 0; j < nb; j++)                                                         \
            out[k * inner + j] =                                                                   \
                (T)((double)y[k * inner + j] * ((double)g[k * inner + j] - sj[j]));                \
      }                                                                                            \
    }                                                                                              \
  } while (0)

CELL_CLONES static void smb_range(void *ud, int64_t b, int64_t e) {
  const smb_job *job = ud;
  const ad_call *c = job->c;
  int64_t n = job->r.n, inner = job->r.inner, blocks = (inner + LANE_BLOCK - 1) / LANE_BLOCK;
  if (c->out->dtype == AD_F32)
    SMB_LANES(float);
  else
    SMB_LANES(double);
}

static void softmax_backward_fwd(const ad_call *c) {
  if (c->out->size == 0) return;
  smb_job j = {c, red_of(c->in[1], 1u << ad_norm_axis(c->attrs->axis, c->in[1]->ndim))};
  int64_t blocks = (j.r.inner + LANE_BLOCK - 1) / LANE_BLOCK;
  int64_t per = j.r.n * (j.r.inner < LANE_BLOCK ? j.r.inner : LANE_BLOCK);
  ad_parallel_for(j.r.outer * blocks, (32768 + per - 1) / per, smb_range, &j);
}

static ad_status softmax_backward_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *g = c->in[0], *y = c->in[1], *dy = c->gout;
  int axis = c->attrs->axis;
  ad_status st = AD_OK;
  if (c->needs[0]) {
    ad_tensor *in[2] = {dy, y};
    st = ad_call_set_grad(c, 0, ad_op_apply(ctx, AD_OP_SOFTMAX_BACKWARD, 2, in, c->attrs));
  }
  if (st == AD_OK && c->needs[1]) {
    ad_tensor *s = ad_sum_axis(ctx, ad_mul(ctx, g, y), axis, true);
    ad_tensor *t = ad_sum_axis(ctx, ad_mul(ctx, dy, y), axis, true);
    st = ad_call_set_grad(c, 1, ad_sub(ctx, ad_mul(ctx, dy, ad_sub(ctx, g, s)), ad_mul(ctx, g, t)));
  }
  return st;
}

/* g any, y a softmax of random values, along the last axis or axis 1 */
static int sample_softmax_backward(const ad_sample_call *s) {
  if (s->variant > 1) return 0;
  int64_t shape[3] = {2, 3, 4};
  s->attrs->axis = s->variant ? 1 : -1;
  s->in[0] = ad_sample_tensor(s, 3, shape, -2, 2, true);
  s->in[1] = ad_sample_tensor(s, 3, shape, 0.05, 0.5, true);
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_softmax_backward = {
    .name = "softmax_backward",
    .arity = 2,
    .attrs = AD_ATTRS_AXIS,
    .shape = shape_softmax_backward,
    .forward = softmax_backward_fwd,
    .backward = softmax_backward_bwd,
    .sample = sample_softmax_backward,
    .math = "y = s * (g - sum_axis(g * s))  (g incoming gradient, s = softmax(x))",
    .inputs = {"g", "s"},
    .grads = {"softmax_backward(dy, s)", "dy * (g - sum_axis(g * s)) - g * sum_axis(dy * s)"},
};

/* --------------------------------------------------------- log_softmax */

static void log_softmax_fwd(const ad_call *c) { softmax_run(c, true); }

/* The plain backward (no create_graph) along the last axis, a row at a
 * time: s = the row's sum of dy as the sum op takes it (sum_long's chunks
 * from SUM_LONG elements, the chain below) rounded to the dtype, then
 * dy - exp(y) s with exp as the exp op's (exp_v in float32 but outside
 * its range) and each step rounded as the recorded ops round it: the
 * same bits as the recorded form, in one pass instead of four ops. */
typedef struct lsm_job {
  const ad_call *c;
  int64_t n;
  void *dx;
} lsm_job;

#define LSM_ROW_SUM(T)                                                                             \
  const T *G = (const T *)j->c->gout->data + r * n, *Y = (const T *)j->c->out->data + r * n;       \
  T *D = (T *)j->dx + r * n;                                                                       \
  double sum = 0;                                                                                  \
  if (n >= SUM_LONG)                                                                               \
    sum = sum_long(G, sizeof(T) == sizeof(float), n, false);                                       \
  else                                                                                             \
    for (int64_t k = 0; k < n; k++) sum += G[k];                                                   \
  T s = (T)sum;

CELL_CLONES static void lsm_bwd_rows(void *ud, int64_t r0, int64_t r1) {
  const lsm_job *j = ud;
  int64_t n = j->n;
  for (int64_t r = r0; r < r1; r++) {
    if (j->c->out->dtype == AD_F64) {
      LSM_ROW_SUM(double)
      for (int64_t k = 0; k < n; k++) D[k] = G[k] - exp_d(Y[k]) * s;
      continue;
    }
    LSM_ROW_SUM(float)
    for (int64_t c0 = 0; c0 < n; c0 += 256) { /* exp_v, then expf where it is out of range */
      int64_t c1 = n - c0 < 256 ? n : c0 + 256;
      int out = 0;
      for (int64_t k = c0; k < c1; k++) {
        D[k] = G[k] - exp_v(Y[k]) * s;
        out |= EXP_V_OUT(Y[k]);
      }
      if (out)
        for (int64_t k = c0; k < c1; k++)
          if (EXP_V_OUT(Y[k])) D[k] = G[k] - expf(Y[k]) * s;
    }
  }
}

/* The same along another axis (lanes inner apart), LANE_BLOCK lanes at a
 * time as the sum op takes them (each lane's sum of dy in order k = 0..n-1
 * in double, rounded to the dtype), then dy - exp(y) s row by row of the
 * block: the recorded form's bits (sum, exp, mul, sub) in one pass over
 * dy and y instead of four ops. Units [b, e) of outer x lane blocks. */
typedef struct lsm_lanes_job {
  const ad_call *c;
  int64_t n, inner, blocks;
  void *dx;
} lsm_lanes_job;

#define LSM_LANES(T, EXPROW)                                                                       \
  do {                                                                                             \
    const T *G = (const T *)j->c->gout->data + off, *Y = (const T *)j->c->out->data + off;         \
    T *D = (T *)j->dx + off, s[LANE_BLOCK];                                                        \
    double acc[LANE_BLOCK];                                                                        \
    for (int64_t q = 0; q < nb; q++) acc[q] = 0;                                                   \
    for (int64_t k = 0; k < n; k++)                                                                \
      for (int64_t q = 0; q < nb; q++) acc[q] += G[k * S + q];                                     \
    for (int64_t q = 0; q < nb; q++) s[q] = (T)acc[q];                                             \
    for (int64_t k = 0; k < n; k++) EXPROW(G + k * S, Y + k * S, D + k * S);                       \
  } while (0)
#define LSM_ROW64(g, y, d)                                                                         \
  for (int64_t q = 0; q < nb; q++) (d)[q] = (g)[q] - exp_d((y)[q]) * s[q];
#define LSM_ROW32(g, y, d)                                                                         \
  {                                                                                                \
    int out = 0;                                                                                   \
    for (int64_t q = 0; q < nb; q++) {                                                             \
      (d)[q] = (g)[q] - exp_v((y)[q]) * s[q];                                                      \
      out |= EXP_V_OUT((y)[q]);                                                                    \
    }                                                                                              \
    if (out)                                                                                       \
      for (int64_t q = 0; q < nb; q++)                                                             \
        if (EXP_V_OUT((y)[q])) (d)[q] = (g)[q] - expf((y)[q]) * s[q];                              \
  }

CELL_CLONES static void lsm_bwd_lanes(void *ud, int64_t b, int64_t e) {
  const lsm_lanes_job *j = ud;
  int64_t n = j->n, S = j->inner;
  for (int64_t u = b; u < e; u++) {
    int64_t o = u / j->blocks, i0 = u % j->blocks * LANE_BLOCK;
    int64_t nb = S - i0 < LANE_BLOCK ? S - i0 : LANE_BLOCK, off = o * n * S + i0;
    if (j->c->out->dtype == AD_F64)
      LSM_LANES(double, LSM_ROW64);
    else
      LSM_LANES(float, LSM_ROW32);
  }
}
#undef LSM_LANES
#undef LSM_ROW64
#undef LSM_ROW32

static ad_status log_softmax_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  const ad_tensor *y = c->out;
  int ax = ad_norm_axis(c->attrs->axis, y->ndim);
  if (!ctx->grad_enabled && ax >= 0 && ax < y->ndim - 1 && y->shape[ax] > 0 && y->size > 0) {
    ad_tensor *dx = ad_tmp_like(ctx, y);
    if (!dx) return ad_last_status(ctx);
    int64_t inner = ad_dims_span(y, ax + 1, y->ndim), n = y->shape[ax];
    lsm_lanes_job j = {c, n, inner, (inner + LANE_BLOCK - 1) / LANE_BLOCK, dx->data};
    int64_t units = ad_dims_span(y, 0, ax) * j.blocks;
    int64_t per = n * (inner < LANE_BLOCK ? inner : LANE_BLOCK), grain = (32768 + per - 1) / per;
    if (units <= grain)
      lsm_bwd_lanes(&j, 0, units);
    else
      ad_parallel_for(units, grain, lsm_bwd_lanes, &j);
    return ad_call_set_grad(c, 0, dx);
  }
  if (!ctx->grad_enabled && ax == y->ndim - 1 && y->shape[y->ndim - 1] > 0) {
    ad_tensor *dx = ad_tmp_like(ctx, y);
    if (!dx) return ad_last_status(ctx);
    lsm_job j = {c, y->shape[y->ndim - 1], dx->data};
    int64_t rows = y->size / j.n, grain = (32768 + j.n - 1) / j.n;
    if (rows <= grain)
      lsm_bwd_rows(&j, 0, rows);
    else
      ad_parallel_for(rows, grain, lsm_bwd_rows, &j);
    return ad_call_set_grad(c, 0, dx);
  }
  ad_tensor *s = ad_sum_axis(ctx, c->gout, c->attrs->axis, true);
  return ad_call_set_grad(c, 0, ad_sub(ctx, c->gout, ad_mul(ctx, ad_exp(ctx, c->out), s)));
}

ad_tensor *ad_log_softmax(ad_ctx *ctx, ad_tensor *x, int axis) {
  ad_attrs at = {.axis = axis};
  return ad_apply1(ctx, AD_OP_LOG_SOFTMAX, x, &at);
}

const ad_op_def ad_def_log_softmax = {
    .name = "log_softmax",
    .arity = 1,
    .attrs = AD_ATTRS_AXIS,
    .shape = shape_softmax,
    .forward = log_softmax_fwd,
    .backward = log_softmax_bwd,
    .sample = sample_softmax,
    .math = "y = x - lse(x) along axis",
    .inputs = {"x"},
    .grads = {"dy - exp(y) * sum_axis(dy)"},
};

/* ---------------------------------------------------- mean (composite) */

/* sum / n, as PyTorch divides (sum * (1/n) differs from it in the last
 * bit, e.g. for the mean of {5, 0, 0}, and so does its gradient dy * (1/n));
 * no derivative code of its own. The mean of no element is NaN (0/0), as
 * in PyTorch. */
static ad_tensor *div_count(ad_ctx *ctx, ad_tensor *s, int64_t n) {
  return s ? ad_div(ctx, s, ad_scalar(ctx, s->dtype, (double)n)) : NULL;
}

/* The error the sum recorded (its count of errors was before), reported
 * as the mean's: "sum: input 0 is NULL" becomes "mean: input 0 is NULL". */
static void error_as_mean(ad_ctx *ctx, uint32_t before) {
  /* none, a NULL input that kept an earlier one, or out of memory (the
   * arena's message names no op) */
  if (!ctx || ctx->nerrors == before || ctx->status == AD_ERR_OOM) return;
  char msg[sizeof ctx->err];
  snprintf(msg, sizeof msg, "%s", ctx->err);
  ad_set_error(ctx, ctx->status, "mean: %s", strncmp(msg, "sum: ", 5) ? msg : msg + 5);
}

ad_tensor *ad_mean(ad_ctx *ctx, ad_tensor *x) {
  uint32_t before = ctx ? ctx->nerrors : 0;
  ad_tensor *s = ad_sum(ctx, x);
  if (!s) error_as_mean(ctx, before);
  return s ? div_count(ctx, s, x->size) : NULL;
}

ad_tensor *ad_mean_axis(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim) {
  uint32_t before = ctx ? ctx->nerrors : 0;
  ad_tensor *s = ad_sum_axis(ctx, x, axis, keepdim);
  if (!s) error_as_mean(ctx, before);
  return s ? div_count(ctx, s, x->shape[ad_norm_axis(axis, x->ndim)]) : NULL;
}

/* ------------------------------------------ sum and mean over axes */

/* red[d] = whether dim d of x is among the n_axes axes (negative counts
 * from the end; n_axes 0: every dim), or false with the error set, named
 * fn: n_axes outside 0..ndim, axes NULL, an axis out of range or given
 * twice. x is a live tensor. */
static bool axes_marked(ad_ctx *ctx, const char *fn, const ad_tensor *x, int n_axes,
                        const int *axes, bool *red) {
  char a[64];
  if (n_axes < 0 || n_axes > x->ndim) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: %d axes for %s", fn, n_axes, ad_shape_str(x, a, sizeof a));
    return false;
  }
  if (n_axes > 0 && !axes) {
    ad_set_error(ctx, AD_ERR_NULL, "%s: axes is NULL", fn);
    return false;
  }
  for (int d = 0; d < AD_MAX_DIMS; d++) red[d] = n_axes == 0 && d < x->ndim;
  for (int k = 0; k < n_axes; k++) {
    int d = ad_norm_axis(axes[k], x->ndim);
    if (d < 0 || red[d]) {
      ad_set_error(ctx, AD_ERR_ARG, "%s: axis %d %s for %s", fn, axes[k],
                   d < 0 ? "out of range" : "given twice", ad_shape_str(x, a, sizeof a));
      return false;
    }
    red[d] = true;
  }
  return true;
}

/* The sum over the axes: one sum op per run of adjacent reduced dims
 * (keepdim while more than one, then one reshape); with mean, divided by
 * the count of the elements each output sums. */
static ad_tensor *sum_axes_of(ad_ctx *ctx, const char *fn, ad_tensor *x, int n_axes,
                              const int *axes, bool keepdim, bool mean) {
  if (!ctx || !ad_arg_ok(ctx, fn, "input 0", x)) return NULL;
  bool red[AD_MAX_DIMS];
  if (!axes_marked(ctx, fn, x, n_axes, axes, red)) return NULL;
  int nd = x->ndim, runs = 0;
  int64_t n = 1, oshape[AD_MAX_DIMS];
  int no = 0;
  for (int d = 0; d < nd; d++) {
    runs += red[d] && (d == 0 || !red[d - 1]);
    if (red[d])
      n *= x->shape[d];
    else
      oshape[no++] = x->shape[d];
  }
  uint32_t before = ctx->nerrors;
  ad_tensor *y = runs ? x : reduce(ctx, AD_OP_SUM, x, 0, keepdim); /* a 0-d x: itself */
  for (int d = 0; d < nd && y; d++) {
    if (!red[d] || (d > 0 && red[d - 1])) continue;
    uint32_t run = 0;
    for (int e = d; e < nd && red[e]; e++) run |= 1u << e;
    y = reduce(ctx, AD_OP_SUM, y, run, runs == 1 ? keepdim : true);
  }
  if (y && runs > 1 && !keepdim) y = ad_reshape(ctx, y, no, oshape);
  if (!y && mean) error_as_mean(ctx, before);
  return mean ? div_count(ctx, y, n) : y;
}

ad_tensor *ad_sum_axes(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes, bool keepdim) {
  return sum_axes_of(ctx, "sum", x, n_axes, axes, keepdim, false);
}

ad_tensor *ad_mean_axes(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes, bool keepdim) {
  return sum_axes_of(ctx, "mean", x, n_axes, axes, keepdim, true);
}

/* -------------------------------------------------------------- cumsum */

/* y[.., k, ..] = x[.., 0, ..] + ... + x[.., k, ..] along the axis, as
 * torch.cumsum: each lane summed in order k = 0, 1, ... in one double
 * (float32 too, as torch's CPU kernel and the engine's sum do), each
 * partial sum rounded to the dtype. Its gradient is the reversed scan
 * cumsum_reverse (below): y[.., k, ..] = x[.., k, ..] + ... + x[.., n-1, ..],
 * summed from the end, whose gradient is cumsum again. That is torch's
 * flip(cumsum(flip(dy))) to the bit (the same additions in the same
 * order) in one pass over the data, where the two flips were two more
 * and ran on one thread. Both ops' shape rule is softmax's
 * (shape_softmax). */

/* Lane blocks [b, e) (CUMSUM_BLOCK lanes of one outer index each), read
 * row by row, each lane in its own double. The blocks are wider than the
 * reductions' LANE_BLOCK: every element is read and written, rows inner
 * apart, and a block's row segment of 64 lanes (256 bytes of float32)
 * left the prefetchers little to follow; two threads on neighbouring
 * segments of the same rows ran slower than one (docs/performance.md,
 * "Scans on a Zen 5 guest"). */
enum { CUMSUM_BLOCK = 512 };
typedef struct cumsum_lanes_job {
  const ad_tensor *x;
  ad_tensor *y;
  red_dims r;
  int64_t blocks; /* per outer index */
  bool rev;       /* cumsum_reverse: k from n - 1 down */
} cumsum_lanes_job;
#define CUMSUM_LANES(T)                                                                            \
  do {                                                                                             \
    const T *X = j->x->data;                                                                       \
    T *Y = j->y->data;                                                                             \
    const red_dims r = j->r;                                                                       \
    for (int64_t u = b; u < e; u++) {                                                              \
      int64_t o = u / j->blocks, j0 = u % j->blocks * CUMSUM_BLOCK;                                \
      int64_t nb = r.inner - j0 < CUMSUM_BLOCK ? r.inner - j0 : CUMSUM_BLOCK;                      \
      double acc[CUMSUM_BLOCK];                                                                    \
      for (int64_t q = 0; q < nb; q++) acc[q] = 0;                                                 \
      int64_t at = (o * r.n + (j->rev ? r.n - 1 : 0)) * r.inner + j0,                              \
              step = j->rev ? -r.inner : r.inner;                                                  \
      for (int64_t k = 0; k < r.n; k++, at += step)                                                \
        for (int64_t q = 0; q < nb; q++) Y[at + q] = (T)(acc[q] += X[at + q]);                     \
    }                                                                                              \
  } while (0)
static void cumsum_lanes(void *ud, int64_t b, int64_t e) {
  const cumsum_lanes_job *j = ud;
  if (j->x->dtype == AD_F32)
    CUMSUM_LANES(float);
  else
    CUMSUM_LANES(double);
}
/* cumsum_lanes compiled for the wider vectors too (CELL_CLONES: the same
 * bits, but for the sign of a NaN made from NaNs of both signs, which the
 * compiler's operand order picks in each loop, ad.h leaving it open), for
 * blocks of 16 lanes or more: for fewer their loops' setup cost more than
 * the baseline's. */
CELL_CLONES static void cumsum_lanes_wide(void *ud, int64_t b, int64_t e) {
  const cumsum_lanes_job *j = ud;
  if (j->x->dtype == AD_F32)
    CUMSUM_LANES(float);
  else
    CUMSUM_LANES(double);
}
#undef CUMSUM_LANES

/* Along the last axis (contiguous rows): CUMSUM_ROWS rows at a time, their
 * sums interleaved, so that the additions of one row do not wait for each
 * other's latency; each row still sums in order (from the end for
 * cumsum_reverse) in its own double. Rows [b, e) of outer rows of n. */
enum { CUMSUM_ROWS = 8 };
#define CUMSUM_ROWS_OF(T)                                                                          \
  do {                                                                                             \
    const T *X = j->x->data;                                                                       \
    T *Y = j->y->data;                                                                             \
    int64_t n = j->n, r0 = b;                                                                      \
    for (; r0 + CUMSUM_ROWS <= e; r0 += CUMSUM_ROWS) {                                             \
      double acc[CUMSUM_ROWS] = {0};                                                               \
      for (int64_t kk = 0; kk < n; kk++) {                                                         \
        int64_t k = j->rev ? n - 1 - kk : kk;                                                      \
        for (int q = 0; q < CUMSUM_ROWS; q++)                                                      \
          Y[(r0 + q) * n + k] = (T)(acc[q] += X[(r0 + q) * n + k]);                                \
      }                                                                                            \
    }                                                                                              \
    for (; r0 < e; r0++) {                                                                         \
      double acc = 0;                                                                              \
      for (int64_t kk = 0; kk < n; kk++) {                                                         \
        int64_t k = j->rev ? n - 1 - kk : kk;                                                      \
        Y[r0 * n + k] = (T)(acc += X[r0 * n + k]);                                                 \
      }                                                                                            \
    }                                                                                              \
  } while (0)

typedef struct cumsum_job {
  const ad_tensor *x;
  ad_tensor *y;
  int64_t n;
  bool rev; /* cumsum_reverse */
} cumsum_job;

static void cumsum_rows(void *ud, int64_t b, int64_t e) {
  const cumsum_job *j = ud;
  if (j->x->dtype == AD_F32)
    CUMSUM_ROWS_OF(float);
  else
    CUMSUM_ROWS_OF(double);
}
#undef CUMSUM_ROWS_OF

/* cumsum (rev false) or cumsum_reverse (rev true) of c's input */
static void cumsum_run(const ad_call *c, bool rev) {
  const ad_tensor *x = c->in[0];
  red_dims r = red_of(x, 1u << ad_norm_axis(c->attrs->axis, x->ndim));
  if (c->out->size == 0) return;
  if (r.inner == 1) {
    cumsum_job j = {x, c->out, r.n, rev};
    int64_t per = r.n > 0 ? r.n : 1; /* (n = 0: no element, returned above) */
    ad_parallel_for(r.outer, 32768 / per > CUMSUM_ROWS ? 32768 / per : CUMSUM_ROWS, cumsum_rows,
                    &j);
    return;
  }
  cumsum_lanes_job j = {x, c->out, r, (r.inner + CUMSUM_BLOCK - 1) / CUMSUM_BLOCK, rev};
  int64_t per = r.n * (r.inner < CUMSUM_BLOCK ? r.inner : CUMSUM_BLOCK); /* elements a unit */
  ad_parallel_for(r.outer * j.blocks, (32768 + per - 1) / per,
                  r.inner >= 16 ? cumsum_lanes_wide : cumsum_lanes, &j);
}

static void cumsum_fwd(const ad_call *c) { cumsum_run(c, false); }

static ad_status cumsum_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_apply1(c->ctx, AD_OP_CUMSUM_REVERSE, c->gout, c->attrs));
}

ad_tensor *ad_cumsum(ad_ctx *ctx, ad_tensor *x, int axis) {
  ad_attrs at = {.axis = axis};
  return ad_apply1(ctx, AD_OP_CUMSUM, x, &at);
}

/* [3,4] along axis 0 and axis -1; [2,3,4] along axis 1 */
static int cumsum_sample(const ad_sample_call *s) {
  static const int64_t shape[3] = {2, 3, 4};
  static const int axis[3] = {0, -1, 1};
  int v = s->variant;
  if (v > 2) return 0;
  s->attrs->axis = axis[v];
  return (s->in[0] = ad_sample_tensor(s, v == 2 ? 3 : 2, v == 2 ? shape : shape + 1, -1, 1, true))
             ? 1
             : -1;
}

const ad_op_def ad_def_cumsum = {
    .name = "cumsum",
    .arity = 1,
    .attrs = AD_ATTRS_AXIS,
    .shape = shape_softmax,
    .forward = cumsum_fwd,
    .backward = cumsum_bwd,
    .sample = cumsum_sample,
    .math = "y[.., k, ..] = sum_{j <= k} x[.., j, ..] on axis",
    .inputs = {"x"},
    .grads = {"cumsum_reverse(dy, axis)"},
};

/* ------------------------------------------------------ cumsum_reverse */

/* The reversed scan, cumsum's gradient (see cumsum above): no public
 * builder, as torch has none (ad_op_apply reaches it by name). */
static void cumsum_reverse_fwd(const ad_call *c) { cumsum_run(c, true); }

static ad_status cumsum_reverse_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_cumsum(c->ctx, c->gout, c->attrs->axis));
}

const ad_op_def ad_def_cumsum_reverse = {
    .name = "cumsum_reverse",
    .arity = 1,
    .attrs = AD_ATTRS_AXIS,
    .shape = shape_softmax,
    .forward = cumsum_reverse_fwd,
    .backward = cumsum_reverse_bwd,
    .sample = cumsum_sample,
    .math = "y[.., k, ..] = sum_{j >= k} x[.., j, ..] on axis, summed from the end",
    .inputs = {"x"},
    .grads = {"cumsum(dy, axis)"},
};

/* ------------------------------------------------------ argmax, argmin */

/* The index along the axis (AD_I32) of the first maximum (minimum) of each
 * lane, as torch.argmax / argmin: a NaN counts as the extreme, so a lane
 * holding one gives its first NaN's index. No gradient: the ops have no
 * backward, so they are never recorded and the result requires none. */
static ad_status shape_arg(const ad_call *c) {
  ad_status st = shape_max(c);
  if (st != AD_OK) return st;
  /* an index past INT32_MAX would wrap in the i32 result (not tested: an
   * input that long is 8 GiB) */
  red_dims r = red_of(c->in[0], c->attrs->reduce.axes);
  if (r.n > INT32_MAX) {
    char a[64];
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: an axis of %lld elements in %s; its indices do not fit in i32",
                        c->name, (long long)r.n, ad_shape_str(c->in[0], a, sizeof a));
  }
  c->out->dtype = AD_I32;
  return AD_OK;
}

/* The lanes of an argmax (argmin), on the library's threads: where inner
 * is 1, each lane a contiguous row (ARG_ROW, or short rows gathered side by
 * side); else in units of LANE_BLOCK lanes of one o (ARG_LANES). Either
 * way a lane's index is the first of its elements that the chain k =
 * 0..n-1 keeps: a NaN, after which nothing replaces it, else the first
 * that BETTER prefers to all before it (-0 and +0 equal), whatever the
 * block, the row's length or the thread count. BETTER(v, b): v replaces
 * the best so far b (b is not NaN). */
typedef struct arg_job {
  const ad_tensor *x;
  int32_t *y;
  red_dims r;
  int64_t blocks; /* lane blocks per o */
  bool min;
} arg_job;

/* Rows of at least ARG_ROW_MIN elements take ARG_ROW's two passes; shorter
 * ones are gathered LANE_BLOCK at a time. */
enum { ARG_ROW_W = 16, ARG_ROW_MIN = 2 * ARG_ROW_W };

/* nb lanes side by side (element k of lane q at x[k S + q]) into y[q]:
 * each lane's chain, in selects, so that the loop across the lanes
 * vectorizes (a branch per element would mispredict on random values). */
#define ARG_LANES(T, BETTER, x, S, N, nb, y)                                                       \
  do {                                                                                             \
    T bv[LANE_BLOCK];                                                                              \
    int32_t bk[LANE_BLOCK];                                                                        \
    for (int64_t q = 0; q < (nb); q++) bv[q] = (x)[q], bk[q] = 0;                                  \
    for (int64_t k = 1; k < (N); k++) {                                                            \
      const T *row = (x) + k * (S);                                                                \
      for (int64_t q = 0; q < (nb); q++) {                                                         \
        T v = row[q];                                                                              \
        bool take = bv[q] == bv[q] && (v != v || BETTER(v, bv[q]));                                \
        bv[q] = take ? v : bv[q];                                                                  \
        bk[q] = take ? (int32_t)k : bk[q];                                                         \
      }                                                                                            \
    }                                                                                              \
    for (int64_t q = 0; q < (nb); q++) (y)[q] = bk[q];                                             \
  } while (0)

/* Row x[0..N) (N >= ARG_ROW_MIN) into *y in two passes: its best value in
 * ARG_ROW_W partial bests (a NaN never replaces a best in BETTER's
 * selects, so NaNs are flagged apart), then the first element equal to it,
 * or the first NaN, found a block of ARG_ROW_W at a time: the chain's
 * index (no element before it is NaN or preferred to the best, so the
 * chain never moved past it). */
#define ARG_ROW(T, BETTER, x, N, y)                                                                \
  do {                                                                                             \
    T m[ARG_ROW_W];                                                                                \
    int bad[ARG_ROW_W];                                                                            \
    for (int q = 0; q < ARG_ROW_W; q++) m[q] = (x)[q], bad[q] = 0;                                 \
    int64_t k = 0, nv = (N) / ARG_ROW_W * ARG_ROW_W;                                               \
    for (; k < nv; k += ARG_ROW_W)                                                                 \
      for (int q = 0; q < ARG_ROW_W; q++) {                                                        \
        T v = (x)[k + q];                                                                          \
        m[q] = BETTER(v, m[q]) ? v : m[q];                                                         \
        bad[q] |= v != v;                                                                          \
      }                                                                                            \
    for (; k < (N); k++) {                                                                         \
      m[0] = BETTER((x)[k], m[0]) ? (x)[k] : m[0];                                                 \
      bad[0] |= (x)[k] != (x)[k];                                                                  \
    }                                                                                              \
    T best = m[0];                                                                                 \
    int nan = bad[0];                                                                              \
    for (int q = 1; q < ARG_ROW_W; q++) {                                                          \
      best = BETTER(m[q], best) ? m[q] : best;                                                     \
      nan |= bad[q];                                                                               \
    }                                                                                              \
    int64_t at = (N)-1; /* set below: some element is the best, or NaN */                          \
    for (k = 0; k < (N); k += ARG_ROW_W) {                                                         \
      int64_t kn = (N)-k < ARG_ROW_W ? (N)-k : ARG_ROW_W;                                          \
      const T *blk = (x) + k;                                                                      \
      int hit = 0;                                                                                 \
      if (nan)                                                                                     \
        for (int64_t q = 0; q < kn; q++) hit |= blk[q] != blk[q];                                  \
      else                                                                                         \
        for (int64_t q = 0; q < kn; q++) hit |= blk[q] == best;                                    \
      if (!hit) continue;                                                                          \
      int64_t q = 0;                                                                               \
      while (nan ? blk[q] == blk[q] : blk[q] != best) q++;                                         \
      at = k + q;                                                                                  \
      break;                                                                                       \
    }                                                                                              \
    *(y) = (int32_t)at;                                                                            \
  } while (0)

#define ARG_RUN(T, BETTER)                                                                         \
  do {                                                                                             \
    const T *X = j->x->data;                                                                       \
    const int64_t S = j->r.inner, N = j->r.n;                                                      \
    if (S == 1 && N >= ARG_ROW_MIN) {                                                              \
      for (int64_t o = b; o < e; o++) ARG_ROW(T, BETTER, X + o * N, N, j->y + o);                  \
    } else if (S == 1) { /* rows r0.. side by side: row p's element k at buf[k g + p] */           \
      T buf[ARG_ROW_MIN * LANE_BLOCK];                                                             \
      for (int64_t r0 = b; r0 < e; r0 += LANE_BLOCK) {                                             \
        int64_t g = e - r0 < LANE_BLOCK ? e - r0 : LANE_BLOCK;                                     \
        const T *x = X + r0 * N;                                                                   \
        for (int64_t p = 0; p < g; p++)                                                            \
          for (int64_t k = 0; k < N; k++) buf[k * g + p] = x[p * N + k];                           \
        ARG_LANES(T, BETTER, buf, g, N, g, j->y + r0);                                             \
      }                                                                                            \
    } else {                                                                                       \
      int64_t o = b / j->blocks, i0 = b % j->blocks * LANE_BLOCK; /* unit b's */                   \
      for (int64_t u = b; u < e; u++, i0 += LANE_BLOCK) {                                          \
        if (i0 >= S) o++, i0 = 0;                                                                  \
        int64_t nb = S - i0 < LANE_BLOCK ? S - i0 : LANE_BLOCK;                                    \
        ARG_LANES(T, BETTER, X + o * N * S + i0, S, N, nb, j->y + o * S + i0);                     \
      }                                                                                            \
    }                                                                                              \
  } while (0)
#define ARG_GT(v, b) ((v) > (b))
#define ARG_LT(v, b) ((v) < (b))

CELL_CLONES static void arg_lanes(void *ud, int64_t b, int64_t e) {
  const arg_job *j = ud;
  if (j->x->dtype == AD_F32) {
    if (j->min)
      ARG_RUN(float, ARG_LT);
    else
      ARG_RUN(float, ARG_GT);
  } else {
    if (j->min)
      ARG_RUN(double, ARG_LT);
    else
      ARG_RUN(double, ARG_GT);
  }
}
#undef ARG_RUN
#undef ARG_ROW
#undef ARG_LANES

static void arg_fwd(const ad_call *c, bool min) {
  if (c->out->size == 0) return;
  red_dims r = red_of(c->in[0], c->attrs->reduce.axes);
  arg_job j = {c->in[0], c->out->data, r, (r.inner + LANE_BLOCK - 1) / LANE_BLOCK, min};
  int64_t per = r.n * (r.inner < LANE_BLOCK ? r.inner : LANE_BLOCK); /* elements a unit */
  ad_parallel_for(r.outer * j.blocks, (32768 + per - 1) / per, arg_lanes, &j);
}

static void argmax_fwd(const ad_call *c) { arg_fwd(c, false); }

static void argmin_fwd(const ad_call *c) { arg_fwd(c, true); }

ad_tensor *ad_argmax(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim) {
  return reduce_axis(ctx, AD_OP_ARGMAX, x, axis, keepdim);
}

ad_tensor *ad_argmin(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim) {
  return reduce_axis(ctx, AD_OP_ARGMIN, x, axis, keepdim);
}

const ad_op_def ad_def_argmax = {
    .name = "argmax",
    .arity = 1,
    .attrs = AD_ATTRS_REDUCE,
    .shape = shape_arg,
    .forward = argmax_fwd,
    .math = "y = index of the first max along axis (NaN counts as max; i32)",
    .inputs = {"x"},
};

const ad_op_def ad_def_argmin = {
    .name = "argmin",
    .arity = 1,
    .attrs = AD_ATTRS_REDUCE,
    .shape = shape_arg,
    .forward = argmin_fwd,
    .math = "y = index of the first min along axis (NaN counts as min; i32)",
    .inputs = {"x"},
};

/* ---------------------------------------------------- cosine_similarity
 *
 *   y = sum_axis(a b) / (ca cb),  ca = sqrt(max(sum_axis(a^2), eps^2)), cb likewise
 *   da = cosine_similarity_backward(dy, a, b),  db = cosine_similarity_backward(dy, b, a)
 *
 * PyTorch 1.13's F.cosine_similarity along one axis of two tensors of one
 * shape (nn_cosine_similarity broadcasts them first): each vector over its
 * own norm clamped at eps, the clamp made without its gradient (1.13
 * clamps under no_grad), so where sum(a^2) < eps^2 the norm's value is
 * eps but its gradient is a / ca as if unclamped (0 for a zero vector).
 * One pass a lane: the three sums in double (float32 too), the norms
 * rounded to the dtype as the sum and sqrt ops round them (so a float32
 * norm overflows where PyTorch's does: y 0 there), then dot / ca / cb in
 * double, rounded once. An axis of length 0 gives 0. It was eight ops
 * forward (squares, sums, clamps, sqrt, quotients, product, sum) and
 * thirteen back. */

/* x1 and x2 float of one dtype and shape (at least 1-D), the axis in
 * range, eps >= 0 and finite; out: the shape without the axis. */
static ad_status shape_cos(const ad_call *c) {
  char a[64], b[64];
  const ad_tensor *x1 = c->in[0], *x2 = c->in[1];
  if (ad_check_float_same(c->ctx, c->name, 2, c->in) != AD_OK) return ad_last_status(c->ctx);
  if (!ad_same_shape(x1, x2))
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: x1 %s and x2 %s differ", c->name,
                        ad_shape_str(x1, a, sizeof a), ad_shape_str(x2, b, sizeof b));
  int ax = ad_norm_axis(c->attrs->cosine.axis, x1->ndim);
  if (ax < 0)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: axis %d out of range for %s", c->name,
                        c->attrs->cosine.axis, ad_shape_str(x1, a, sizeof a));
  double eps = c->attrs->cosine.eps;
  if (!(eps >= 0) || !isfinite(eps))
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: eps %g must be finite and >= 0", c->name, eps);
  c->out->dtype = x1->dtype;
  c->out->ndim = x1->ndim - 1;
  for (int k = 0, j = 0; k < x1->ndim; k++)
    if (k != ax) c->out->shape[j++] = x1->shape[k];
  return AD_OK;
}

/* The three sums of nb lanes (element k of lane j at k * S + j) into s1,
 * s2, p: sum a^2, sum b^2, sum a b, in double; a contiguous lane (nb 1, S
 * 1) in 8 interleaved partials each. */
#define COS_SUMS(T, A, B, S, N, NB, s1, s2, p)                                                     \
  do {                                                                                             \
    if ((S) == 1) {                                                                                \
      double q1[8] = {0}, q2[8] = {0}, qp[8] = {0};                                                \
      int64_t k = 0;                                                                               \
      for (; k + 8 <= (N); k += 8)                                                                 \
        for (int q = 0; q < 8; q++) {                                                              \
          double va = (double)(A)[k + q], vb = (double)(B)[k + q];                                 \
          q1[q] += va * va, q2[q] += vb * vb, qp[q] += va * vb;                                    \
        }                                                                                          \
      for (int q = 0; k < (N); k++, q++) {                                                         \
        double va = (double)(A)[k], vb = (double)(B)[k];                                           \
        q1[q] += va * va, q2[q] += vb * vb, qp[q] += va * vb;                                      \
      }                                                                                            \
      for (int w = 4; w >= 1; w /= 2)                                                              \
        for (int q = 0; q < w; q++) q1[q] += q1[q + w], q2[q] += q2[q + w], qp[q] += qp[q + w];    \
      s1[0] = q1[0], s2[0] = q2[0], p[0] = qp[0];                                                  \
    } else {                                                                                       \
      for (int64_t j = 0; j < (NB); j++) s1[j] = s2[j] = p[j] = 0;                                 \
      for (int64_t k = 0; k < (N); k++)                                                            \
        for (int64_t j = 0; j < (NB); j++) {                                                       \
          double va = (double)(A)[k * (S) + j], vb = (double)(B)[k * (S) + j];                     \
          s1[j] += va * va, s2[j] += vb * vb, p[j] += va * vb;                                     \
        }                                                                                          \
    }                                                                                              \
  } while (0)

/* A norm from its sum of squares s, rounded to T as the sum op rounds s
 * and the sqrt op its root (so a float32 s past FLT_MAX is inf); e2 is
 * eps^2 in T. NaN stays NaN. */
#define COS_NORM(T, s, e2) ((double)cos_root_##T((T)(s) < (e2) ? (e2) : (T)(s)))
static inline float cos_root_float(float v) { return sqrtf(v); }
static inline double cos_root_double(double v) { return sqrt(v); }

typedef struct cos_job {
  const ad_call *c;
  red_dims r;
  bool bwd; /* cosine_similarity_backward: in g, a, b */
} cos_job;

/* Lane blocks [b, e) of cosine_similarity (y) or of its backward: out =
 * g (b / (ca cb) - y a / ca^2) along the axis, computed as (g / (ca cb))
 * (b - (dot / ca^2) a), ca^2 the clamped sum of squares in double (not
 * rounded to float32) and the difference one fma: where the difference
 * cancels (a small vector nearly parallel to the other) only dot / ca^2
 * rounds before it, nearer the exact value than PyTorch's chain of ops. */
#define COS_LANES(T)                                                                               \
  do {                                                                                             \
    const T *G = job->bwd ? c->in[0]->data : NULL;                                                 \
    const T *XA = c->in[job->bwd]->data, *XB = c->in[job->bwd + 1]->data;                          \
    T *O = c->out->data;                                                                           \
    const T e2 = (T)(c->attrs->cosine.eps * c->attrs->cosine.eps);                                 \
    double s1[LANE_BLOCK], s2[LANE_BLOCK], p[LANE_BLOCK];                                          \
    for (int64_t u = b; u < e; u++) {                                                              \
      int64_t o = u / blocks, j0 = u % blocks * LANE_BLOCK;                                        \
      int64_t nb = inner - j0 < LANE_BLOCK ? inner - j0 : LANE_BLOCK;                              \
      const T *xa = XA + o * n * inner + j0, *xb = XB + o * n * inner + j0;                        \
      COS_SUMS(T, xa, xb, inner, n, nb, s1, s2, p);                                                \
      for (int64_t j = 0; j < nb; j++) {                                                           \
        double ca = COS_NORM(T, s1[j], e2), cb = COS_NORM(T, s2[j], e2);                           \
        if (!job->bwd) {                                                                           \
          O[o * inner + j0 + j] = (T)(n ? p[j] / ca / cb : 0);                                     \
          continue;                                                                                \
        }                                                                                          \
        double sa = (T)s1[j] < e2 ? (double)e2 : s1[j];                                            \
        double kb = (double)G[o * inner + j0 + j] / ca / cb, r = p[j] / sa;                        \
        T *out = O + o * n * inner + j0 + j;                                                       \
        for (int64_t k = 0; k < n; k++)                                                            \
          out[k * inner] =                                                                         \
              (T)(kb * fma(-r, (double)xa[k * inner + j], (double)xb[k * inner + j]));             \
      }                                                                                            \
    }                                                                                              \
  } while (0)

CELL_CLONES static void cos_range(void *ud, int64_t b, int64_t e) {
  const cos_job *job = ud;
  const ad_call *c = job->c;
  int64_t n = job->r.n, inner = job->r.inner, blocks = (inner + LANE_BLOCK - 1) / LANE_BLOCK;
  if (c->out->dtype == AD_F32)
    COS_LANES(float);
  else
    COS_LANES(double);
}

static void cos_run(const ad_call *c, bool bwd) {
  if (c->out->size == 0) return;
  const ad_tensor *x = c->in[bwd];
  cos_job j = {c, red_of(x, 1u << ad_norm_axis(c->attrs->cosine.axis, x->ndim)), bwd};
  int64_t blocks = (j.r.inner + LANE_BLOCK - 1) / LANE_BLOCK;
  int64_t per = (j.r.n ? j.r.n : 1) * (j.r.inner < LANE_BLOCK ? j.r.inner : LANE_BLOCK);
  ad_parallel_for(j.r.outer * blocks, (32768 + per - 1) / per, cos_range, &j);
}

static void cos_fwd(const ad_call *c) { cos_run(c, false); }

static ad_status cos_bwd(const ad_call *c) {
  ad_status st = AD_OK;
  for (int k = 0; k < 2 && st == AD_OK; k++)
    if (c->needs[k]) {
      ad_tensor *in[3] = {c->gout, c->in[k], c->in[1 - k]};
      st = ad_call_set_grad(c, k,
                            ad_op_apply(c->ctx, AD_OP_COSINE_SIMILARITY_BACKWARD, 3, in, c->attrs));
    }
  return st;
}

/* A new gradient of a persistent input is cosine_similarity_backward's
 * kernel run straight into it (its bits, without a temporary and a copy);
 * adding to an existing one is declined (the backward's op is added). */
static void cos_backward_fwd(const ad_call *c);

static bool cos_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  if (!overwrite) return false;
  ad_tensor *in[3] = {c->gout, c->in[k], c->in[1 - k]};
  ad_call kc = {.ctx = c->ctx, .name = c->name, .n = 3, .in = in, .attrs = c->attrs, .out = grad};
  cos_backward_fwd(&kc);
  return true;
}

ad_tensor *ad_cosine_similarity(ad_ctx *ctx, ad_tensor *x1, ad_tensor *x2, int axis, double eps) {
  ad_attrs at = {.cosine = {axis, eps}};
  return ad_apply2(ctx, AD_OP_COSINE_SIMILARITY, x1, x2, &at);
}

/* [2,3,4] pairs in (-2, 2) (norms far above eps: the gradient of the
 * clamp is not its value's), along the last axis and axis 1 */
static int sample_cos(const ad_sample_call *s) {
  if (s->variant > 1) return 0;
  int64_t shape[3] = {2, 3, 4};
  s->attrs->cosine = (ad_cosine_attrs){s->variant ? 1 : -1, 1e-8};
  s->in[0] = ad_sample_tensor(s, 3, shape, -2, 2, true);
  s->in[1] = ad_sample_tensor(s, 3, shape, -2, 2, true);
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_cosine_similarity = {
    .name = "cosine_similarity",
    .arity = 2,
    .attrs = AD_ATTRS_COSINE,
    .shape = shape_cos,
    .forward = cos_fwd,
    .backward = cos_bwd,
    .grad_into = cos_grad_into,
    .sample = sample_cos,
    .math = "y = sum_axis(a * b) / (ca * cb), ca = sqrt(max(sum_axis(a^2), eps^2)) (its value "
            "only: the gradient as if unclamped), cb likewise",
    .inputs = {"a", "b"},
    .grads = {"cosine_similarity_backward(dy, a, b) = dy * (b / (ca cb) - y a / ca^2)",
              "cosine_similarity_backward(dy, b, a)"},
};

/* ------------------------------------------- cosine_similarity_backward
 *
 *   y = g (ub - t ua) / ca,  ua = a / ca, ub = b / cb, t = sum_axis(ua ub)
 *   with G = dy, Gu = sum_axis(G ua), Gb = sum_axis(G ub), h = g / ca:
 *   dg = (Gb - t Gu) / ca
 *   da = -(h / ca) (t G + Gu ub + (Gb - 3 t Gu) ua)
 *   db = (h / cb) (G - Gu ua - (Gb - t Gu) ub)                 (of ops)
 *
 * The norms in the ops' backward are the forward's: the clamp's value
 * with the gradient of the unclamped sum, so every order agrees with the
 * composite nn_cosine_similarity was. */

/* g shaped as cosine_similarity(a, b)'s result, a and b as its inputs */
static ad_status shape_cos_backward(const ad_call *c) {
  char a[64], b[64];
  ad_status st = shape_cos(&(ad_call){
      .ctx = c->ctx, .name = c->name, .n = 2, .in = c->in + 1, .attrs = c->attrs, .out = c->out});
  if (st != AD_OK) return st;
  const ad_tensor *g = c->in[0];
  bool ok = ad_check_float_same(c->ctx, c->name, 2, c->in) == AD_OK;
  if (!ok) return ad_last_status(c->ctx);
  ok = g->ndim == c->out->ndim;
  for (int k = 0; ok && k < g->ndim; k++) ok = g->shape[k] == c->out->shape[k];
  if (!ok)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: g %s does not fit a %s without axis %d", c->name,
                        ad_shape_str(g, a, sizeof a), ad_shape_str(c->in[1], b, sizeof b),
                        c->attrs->cosine.axis);
  c->out->ndim = c->in[1]->ndim;
  memcpy(c->out->shape, c->in[1]->shape, sizeof(int64_t) * (size_t)c->in[1]->ndim);
  return AD_OK;
}

static void cos_backward_fwd(const ad_call *c) { cos_run(c, true); }

/* sqrt(max(sum_axis(x^2), eps^2)) with keepdim, the clamp's value without
 * its gradient mask: where s < eps^2, s - detach(s) + eps^2 */
static ad_tensor *cos_norm(ad_ctx *ctx, ad_tensor *x, int axis, double eps) {
  ad_tensor *s = ad_sum_axis(ctx, ad_square(ctx, x), axis, true);
  if (!s) return NULL;
  ad_tensor *e2 = ad_scalar(ctx, s->dtype, eps * eps);
  ad_tensor *low = ad_add(ctx, ad_sub(ctx, s, ad_detach(ctx, s)), e2);
  return ad_sqrt(ctx, ad_where(ctx, ad_ge(ctx, s, e2), s, low));
}

static ad_status cos_backward_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *a = c->in[1], *b = c->in[2], *G = c->gout;
  int ax = ad_norm_axis(c->attrs->cosine.axis, a->ndim);
  double eps = c->attrs->cosine.eps;
  int64_t ks[AD_MAX_DIMS];
  memcpy(ks, a->shape, sizeof(int64_t) * (size_t)a->ndim);
  ks[ax] = 1;
  ad_tensor *ca = cos_norm(ctx, a, ax, eps), *cb = cos_norm(ctx, b, ax, eps);
  ad_tensor *ua = ad_div(ctx, a, ca), *ub = ad_div(ctx, b, cb);
  ad_tensor *t = ad_reshape(ctx, ad_cosine_similarity(ctx, a, b, ax, eps), a->ndim, ks);
  ad_tensor *g = ad_reshape(ctx, c->in[0], a->ndim, ks);
  ad_tensor *gu = ad_sum_axis(ctx, ad_mul(ctx, G, ua), ax, true);
  ad_tensor *gb = ad_sum_axis(ctx, ad_mul(ctx, G, ub), ax, true);
  ad_tensor *gbt = ad_sub(ctx, gb, ad_mul(ctx, t, gu)); /* Gb - t Gu */
  ad_tensor *h = ad_div(ctx, g, ca);
  ad_status st = AD_OK;
  if (c->needs[0])
    st = ad_call_set_grad(c, 0,
                          ad_reshape(ctx, ad_div(ctx, gbt, ca), c->in[0]->ndim, c->in[0]->shape));
  if (st == AD_OK && c->needs[1]) {
    ad_tensor *w =
        ad_add(ctx, ad_add(ctx, ad_mul(ctx, t, G), ad_mul(ctx, gu, ub)),
               ad_mul(ctx, ad_sub(ctx, gbt, ad_mul_scalar(ctx, ad_mul(ctx, t, gu), 2)), ua));
    st = ad_call_set_grad(c, 1, ad_neg(ctx, ad_mul(ctx, ad_div(ctx, h, ca), w)));
  }
  if (st == AD_OK && c->needs[2]) {
    ad_tensor *w = ad_sub(ctx, ad_sub(ctx, G, ad_mul(ctx, gu, ua)), ad_mul(ctx, gbt, ub));
    st = ad_call_set_grad(c, 2, ad_mul(ctx, ad_div(ctx, h, cb), w));
  }
  return st;
}

/* g [2,3] or [2,4] any, a and b [2,3,4] as sample_cos's */
static int sample_cos_backward(const ad_sample_call *s) {
  if (s->variant > 1) return 0;
  int64_t shape[3] = {2, 3, 4}, gs[2] = {2, s->variant ? 4 : 3};
  s->attrs->cosine = (ad_cosine_attrs){s->variant ? 1 : -1, 1e-8};
  s->in[0] = ad_sample_tensor(s, 2, gs, -2, 2, true);
  s->in[1] = ad_sample_tensor(s, 3, shape, -2, 2, true);
  s->in[2] = ad_sample_tensor(s, 3, shape, -2, 2, true);
  return s->in[0] && s->in[1] && s->in[2] ? 3 : -1;
}

const ad_op_def ad_def_cosine_similarity_backward = {
    .name = "cosine_similarity_backward",
    .arity = 3,
    .attrs = AD_ATTRS_COSINE,
    .shape = shape_cos_backward,
    .forward = cos_backward_fwd,
    .backward = cos_backward_bwd,
    .sample = sample_cos_backward,
    .math = "y = g * (ub - t * ua) / ca along axis, ua = a / ca, ub = b / cb, t = "
            "sum_axis(ua * ub) (ca, cb: cosine_similarity's norms)",
    .inputs = {"g", "a", "b"},
    .grads = {"(Gb - t Gu) / ca, Gu = sum_axis(dy * ua), Gb = sum_axis(dy * ub)",
              "-(g / ca^2) (t dy + Gu ub + (Gb - 3 t Gu) ua)",
              "(g / (ca cb)) (dy - Gu ua - (Gb - t Gu) ub)"},
};

/* ------------------------------------- min, var, std (composites) */

/* Whether x can be the input of the composite fn: a live float tensor. */
static bool float_in_ok(ad_ctx *ctx, const char *fn, const ad_tensor *x) {
  if (!ctx || !ad_arg_ok(ctx, fn, "input 0", x)) return false;
  if (ad_is_float(x->dtype)) return true;
  ad_set_error(ctx, AD_ERR_DTYPE, "%s: input is %s; a float dtype is needed", fn,
               ad_dtype_name(x->dtype));
  return false;
}

/* min (the op, -max(-x) in one pass): max's rules (ties share the
 * gradient, NaN wins, nothing to reduce is an error), checked here first
 * so the errors name min as before. */
ad_tensor *ad_min(ad_ctx *ctx, ad_tensor *x) {
  if (!float_in_ok(ctx, "min", x)) return NULL;
  if (x->size == 0) {
    char a[64];
    ad_set_error(ctx, AD_ERR_SHAPE, "min: nothing to reduce: %s holds no element",
                 ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  return reduce(ctx, AD_OP_MIN, x, all_axes(x), false);
}

ad_tensor *ad_min_axis(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim) {
  if (!float_in_ok(ctx, "min", x)) return NULL;
  int k = ad_norm_axis(axis, x->ndim);
  char a[64];
  if (k < 0) {
    ad_set_error(ctx, AD_ERR_ARG, "min: axis %d out of range for %s", axis,
                 ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  if (x->shape[k] == 0) {
    ad_set_error(ctx, AD_ERR_SHAPE, "min: nothing to reduce: axis %d of %s holds no element", k,
                 ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  return reduce(ctx, AD_OP_MIN, x, 1u << k, keepdim);
}

/* ---------------------------------------------------------- sum_sq_dev
 *
 *   y = sum_r (x - mean_r x)^2        r: a run of adjacent axes (reduce)
 *   dx = 2 (x - mean_r x) expand(dy)
 *
 * The reduction under var and std (which divide it by n - correction and
 * take the root on the reduced shape): each lane's mean and then its sum
 * of squared deviations, two passes in double, so y is float64 for either
 * float dtype of x, as torch's var accumulates a float32 input in double:
 * no square or sum overflows float32 before the variance would. Each lane
 * is summed in an order fixed by its length (a contiguous lane of 32
 * elements or more in 32 partial sums, SUM_CHUNK elements a chunk; a
 * strided one in order), and belongs to one thread: the thread count
 * changes no bit. The gradient is ops in x's dtype (torch's var_backward:
 * 2 (x - mean) dy / dof), so differentiable again. */

/* The sum (sq: of (x - m)^2) of a contiguous lane of n elements: in
 * order below 32 elements, else chunk by chunk (on the library's threads
 * when split), the chunks' sums added in order. */
static double ssd_lane(const void *x, bool f32, int64_t n, double m, bool sq, bool split) {
  if (n < 32) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
      double v = f32 ? (double)((const float *)x)[i] : ((const double *)x)[i];
      s += sq ? (v - m) * (v - m) : v;
    }
    return s;
  }
  return sum_long_of(x, f32, n, m, sq, split);
}

/* Lanes of x's reduction r into y (float64): contiguous lanes (inner 1)
 * one by one, strided ones LANE_BLOCK at a time (x read row by row, as
 * run_lanes), units [b, e) of lanes or lane blocks. */
typedef struct ssd_job {
  const ad_tensor *x;
  double *y;
  red_dims r;
  int64_t blocks; /* lane blocks per outer index (inner > 1) */
} ssd_job;

#define SSD_BLOCK(T)                                                                               \
  do {                                                                                             \
    const T *X = (const T *)j->x->data + o * n * S + i0;                                           \
    double s[LANE_BLOCK], m[LANE_BLOCK];                                                           \
    for (int64_t q = 0; q < nb; q++) s[q] = 0;                                                     \
    for (int64_t k = 0; k < n; k++)                                                                \
      for (int64_t q = 0; q < nb; q++) s[q] += X[k * S + q];                                       \
    for (int64_t q = 0; q < nb; q++) m[q] = s[q] / (double)n, s[q] = 0;                            \
    for (int64_t k = 0; k < n; k++)                                                                \
      for (int64_t q = 0; q < nb; q++) {                                                           \
        double d = (double)X[k * S + q] - m[q];                                                    \
        s[q] += d * d;                                                                             \
      }                                                                                            \
    for (int64_t q = 0; q < nb; q++) Y[q] = s[q];                                                  \
  } while (0)

CELL_CLONES static void ssd_range(void *ud, int64_t b, int64_t e) {
  const ssd_job *j = ud;
  bool f32 = j->x->dtype == AD_F32;
  int64_t n = j->r.n, S = j->r.inner;
  size_t ds = ad_dsize(j->x->dtype);
  for (int64_t u = b; u < e; u++) {
    if (S == 1) { /* lane u, contiguous */
      const char *x = (const char *)j->x->data + (size_t)(u * n) * ds;
      double m = ssd_lane(x, f32, n, 0, false, false) / (double)n;
      j->y[u] = n ? ssd_lane(x, f32, n, m, true, false) : 0;
      continue;
    }
    int64_t o = u / j->blocks, i0 = u % j->blocks * LANE_BLOCK;
    int64_t nb = S - i0 < LANE_BLOCK ? S - i0 : LANE_BLOCK;
    double *Y = j->y + o * S + i0;
    if (f32)
      SSD_BLOCK(float);
    else
      SSD_BLOCK(double);
  }
}
#undef SSD_BLOCK

static ad_status sum_sq_dev_shape(const ad_call *c) {
  ad_status st = shape_reduce(c);
  if (st == AD_OK) c->out->dtype = AD_F64;
  return st;
}

static void sum_sq_dev_fwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  red_dims r = red_of(x, c->attrs->reduce.axes);
  double *y = c->out->data;
  if (c->out->size == 0) return;
  if (r.outer == 1 && r.inner == 1) { /* one lane: its chunks on the threads */
    bool f32 = x->dtype == AD_F32;
    double m = ssd_lane(x->data, f32, r.n, 0, false, true) / (double)r.n;
    *y = r.n ? ssd_lane(x->data, f32, r.n, m, true, true) : 0;
    return;
  }
  ssd_job j = {x, y, r, (r.inner + LANE_BLOCK - 1) / LANE_BLOCK};
  int64_t units = r.inner == 1 ? r.outer : r.outer * j.blocks;
  int64_t per = 2 * (r.n ? r.n : 1) * (r.inner < LANE_BLOCK ? r.inner : LANE_BLOCK);
  ad_parallel_for(units, (32768 + per - 1) / per, ssd_range, &j);
}

/* dx = 2 (x - mean_r x) expand(dy), in x's dtype. A float32 lane's mean
 * is its sum rounded to float32, divided; where that sum passes FLT_MAX
 * (a lane near it: the mean inf, every x - mean -inf, where the forward's
 * double gave a finite y) the mean is taken in double instead, which
 * always fits (it lies between the lane's extremes). Only then, so the
 * bits are otherwise torch's (x - x.mean()) and no pass is added. */
static ad_status sum_sq_dev_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0];
  const ad_reduce_attrs *ra = &c->attrs->reduce;
  red_dims r = red_of(x, ra->axes);
  ad_tensor *dy = ad_cast(ctx, keep(ctx, c->gout, x, ra), x->dtype);
  ad_tensor *m = div_count(ctx, reduce(ctx, AD_OP_SUM, x, ra->axes, true), r.n);
  if (m && x->dtype == AD_F32 && ad_tensor_has_nonfinite(m))
    m = ad_cast(
        ctx, div_count(ctx, reduce(ctx, AD_OP_SUM, ad_cast(ctx, x, AD_F64), ra->axes, true), r.n),
        AD_F32);
  return ad_call_set_grad(c, 0, ad_mul(ctx, ad_sub(ctx, x, m), ad_mul_scalar(ctx, dy, 2)));
}

const ad_op_def ad_def_sum_sq_dev = {
    .name = "sum_sq_dev",
    .arity = 1,
    .attrs = AD_ATTRS_REDUCE,
    .shape = sum_sq_dev_shape,
    .forward = sum_sq_dev_fwd,
    .backward = sum_sq_dev_bwd,
    .sample = sample_reduce,
    .math = "y = sum_axis (x - mean_axis x)^2, float64",
    .inputs = {"x"},
    .grads = {"2 (x - mean_axis x) expand(dy)"},
};

/* x with the dims marked in red as one run of adjacent dims, for a
 * reduction op over them: x itself where they are one already, else x
 * permuted (a copy) so that they come last, in order, after the others in
 * theirs; *mask gets the run's dims in the result. NULL for a NULL x, or
 * when the permute fails (its error set). */
static ad_tensor *as_one_run(ad_ctx *ctx, ad_tensor *x, const bool *red, uint32_t *mask) {
  int nr = 0, perm[AD_MAX_DIMS], np = 0, nd = x ? x->ndim : 0;
  *mask = 0;
  for (int d = 0; d < nd; d++)
    if (red[d])
      *mask |= 1u << d, nr++;
    else
      perm[np++] = d;
  red_dims r = x ? red_of(x, *mask) : (red_dims){0, 0, 1, 1, 1};
  if (r.hi - r.lo == nr) return x;
  for (int d = 0; d < nd; d++)
    if (red[d]) perm[np++] = d;
  *mask = ((1u << nr) - 1) << (nd - nr);
  return ad_permute(ctx, x, perm);
}

/* max or min (op) over the axes as ad_var takes them: one op over one
 * run of the reduced dims (as_one_run), then keepdim's shape. The
 * reduced dims must hold an element. */
static ad_tensor *maxs_axes_of(ad_ctx *ctx, const char *fn, int op, ad_tensor *x, int n_axes,
                               const int *axes, bool keepdim) {
  if (!float_in_ok(ctx, fn, x)) return NULL;
  bool red[AD_MAX_DIMS];
  if (!axes_marked(ctx, fn, x, n_axes, axes, red)) return NULL;
  int64_t kshape[AD_MAX_DIMS];
  char a[64];
  for (int d = 0; d < x->ndim; d++) {
    kshape[d] = red[d] ? 1 : x->shape[d];
    if (red[d] && x->shape[d] == 0) {
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: nothing to reduce: axis %d of %s holds no element", fn,
                   d, ad_shape_str(x, a, sizeof a));
      return NULL;
    }
  }
  uint32_t mask;
  ad_tensor *xr = as_one_run(ctx, x, red, &mask);
  if (xr == x) return reduce(ctx, op, x, mask, keepdim);
  ad_tensor *y = reduce(ctx, op, xr, mask, false);
  return keepdim && y ? ad_reshape(ctx, y, x->ndim, kshape) : y;
}

ad_tensor *ad_max_axes(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes, bool keepdim) {
  return maxs_axes_of(ctx, "max", AD_OP_MAX, x, n_axes, axes, keepdim);
}

ad_tensor *ad_min_axes(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes, bool keepdim) {
  return maxs_axes_of(ctx, "min", AD_OP_MIN, x, n_axes, axes, keepdim);
}

/* var = sum((x - mean)^2) / max(0, n - correction) over the axes (every
 * dim for none), as torch.var; std its square root (with take_sqrt), taken
 * before the result is rounded back to x's dtype. fn names the errors.
 * The sum is sum_sq_dev's, in float64 for either dtype (as torch's CPU
 * kernels accumulate float32 in a double: in float32 the squares
 * overflow for |x - mean| above 1.8e19, and their sum whenever it passes
 * FLT_MAX, where torch's variance (and a standard deviation up to 1.8e38)
 * comes out finite); axes that are not one run of adjacent dims are
 * brought to the end first (a permute). */
static ad_tensor *var_of(ad_ctx *ctx, const char *fn, ad_tensor *x, int n_axes, const int *axes,
                         int64_t correction, bool keepdim, bool take_sqrt) {
  if (!float_in_ok(ctx, fn, x)) return NULL;
  bool red[AD_MAX_DIMS];
  if (!axes_marked(ctx, fn, x, n_axes, axes, red)) return NULL;
  int64_t n = 1, kshape[AD_MAX_DIMS];
  for (int d = 0; d < x->ndim; d++) {
    kshape[d] = red[d] ? 1 : x->shape[d];
    if (red[d]) n *= x->shape[d];
  }
  ad_dtype dtype = x->dtype;
  uint32_t mask;
  ad_tensor *xr = as_one_run(ctx, x, red, &mask); /* sets mask: before reduce reads it */
  ad_tensor *q = reduce(ctx, AD_OP_SUM_SQ_DEV, xr, mask, false);
  /* in double: n - correction overflows int64 for a correction near
   * INT64_MIN (torch takes negative ones: a divisor above n). A lane of
   * no element divides its sum 0 by 0 whatever the correction: NaN, as
   * torch (a negative correction gave 0 / -correction = 0). */
  double dof = (double)n - (double)correction;
  ad_tensor *v = q ? ad_div(ctx, q, ad_scalar(ctx, q->dtype, n > 0 && dof > 0 ? dof : 0)) : NULL;
  if (v && take_sqrt) {
    /* sqrt'(0) is inf, and a lane of zero variance would get inf * 0 =
     * NaN; torch's std_backward gives 0 there. So where v is 0 the result
     * is a selected 0 and the square root is taken of 1 (the double select
     * keeps every order of gradient finite and 0 there); elsewhere
     * sqrt(v), NaN and inf included. */
    ad_tensor *zero = ad_scalar(ctx, v->dtype, 0), *one = ad_scalar(ctx, v->dtype, 1);
    ad_tensor *z = ad_eq(ctx, v, zero);
    v = ad_where(ctx, z, zero, ad_sqrt(ctx, ad_where(ctx, z, one, v)));
  }
  return ad_cast(ctx, keepdim && v ? ad_reshape(ctx, v, x->ndim, kshape) : v, dtype);
}

ad_tensor *ad_var(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes, int64_t correction,
                  bool keepdim) {
  return var_of(ctx, "var", x, n_axes, axes, correction, keepdim, false);
}

ad_tensor *ad_std(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes, int64_t correction,
                  bool keepdim) {
  return var_of(ctx, "std", x, n_axes, axes, correction, keepdim, true);
}
