/* ops.h: what the op family files share (private): the built-in op ids
 * and definitions generated from ops.def, and builder shorthands. The core
 * (tensor, tape, registry, errors: ad_internal.h) does not include it. */
#ifndef AD_OPS_H
#define AD_OPS_H

#include "ad_internal.h"

#include <math.h>
#include <stdio.h>

/* Built-in op ids and their definitions (each at the end of its op's
 * block in a family file), generated from the table. */
enum {
#define AD_OP(E, name, builder) AD_OP_##E,
#include "ops.def"
#undef AD_OP
  AD_OP_BUILTIN_COUNT
};
#define AD_OP(E, name, builder) extern const ad_op_def ad_def_##name;
#include "ops.def"
#undef AD_OP

/* The larger / smaller of a and b, NaN when either is: what every op that
 * picks a value by comparing (maximum, minimum, relu, the max reduction,
 * the max shifted out of logsumexp, softmax and cross-entropy) uses, so a
 * NaN propagates as in PyTorch and NumPy. A bare a > b ? a : b would drop a
 * NaN in a and keep one in b. Ties give b. */
#define AD_MAX_NAN(a, b) ((a) > (b) || (a) != (a) ? (a) : (b))
#define AD_MIN_NAN(a, b) ((a) < (b) || (a) != (a) ? (a) : (b))

/* Before a loop of a few iterations over an array of partial sums: full
 * unrolling, so that the array lives in registers, not in memory loaded
 * and stored at every step (which adds a store's forwarding latency to
 * each partial's chain). */
#if defined(__clang__)
#define AD_UNROLL_FULL _Pragma("unroll")
#else
#define AD_UNROLL_FULL _Pragma("GCC unroll 64")
#endif

/* The maximum of the n elements x[0], x[s], ..., x[(n-1) s] (NaN if one is
 * NaN), as a double; -inf for n = 0, so a lane of no elements is never
 * read. The rule is this chain of comparisons: of several NaNs the last is
 * the maximum, of zeros of both signs the first. */
static inline double ad_lane_max_chain_f32(const float *x, int64_t s, int64_t n) {
  double m = -INFINITY;
  for (int64_t k = 0; k < n; k++) m = AD_MAX_NAN((double)x[k * s], m);
  return m;
}
static inline double ad_lane_max_chain_f64(const double *x, int64_t s, int64_t n) {
  double m = -INFINITY;
  for (int64_t k = 0; k < n; k++) m = AD_MAX_NAN(x[k * s], m);
  return m;
}

/* The chain's result for a contiguous run of n >= AD_RUN_MAX elements,
 * vectorized (op_reduce.c): what ad_lane_max takes for such a lane. */
enum { AD_RUN_MAX = 32 };
double ad_run_max_f32(const float *x, int64_t n);
double ad_run_max_f64(const double *x, int64_t n);

static inline double ad_lane_max_f32(const float *x, int64_t s, int64_t n) {
  return s == 1 && n >= AD_RUN_MAX ? ad_run_max_f32(x, n) : ad_lane_max_chain_f32(x, s, n);
}
static inline double ad_lane_max_f64(const double *x, int64_t s, int64_t n) {
  return s == 1 && n >= AD_RUN_MAX ? ad_run_max_f64(x, n) : ad_lane_max_chain_f64(x, s, n);
}
#define AD_LANE_MAX(x, s, n)                                                                       \
  _Generic((x), const float * : ad_lane_max_f32, const double * : ad_lane_max_f64)(x, s, n)

/* Writes flat index i of t's shape as coordinates, "[1,2]", into buf (n
 * bytes) and returns buf: where a bad index or label is, for messages. */
static inline const char *ad_coords_str(const ad_tensor *t, int64_t i, char *buf, size_t n) {
  int len = snprintf(buf, n, "[");
  for (int k = 0; k < t->ndim && len > 0 && (size_t)len < n; k++) {
    int64_t stride = 1;
    for (int j = k + 1; j < t->ndim; j++) stride *= t->shape[j];
    int64_t coord = stride && t->shape[k] ? (i / stride) % t->shape[k] : 0;
    len += snprintf(buf + len, n - (size_t)len, "%s%lld", k ? "," : "", (long long)coord);
  }
  if (len > 0 && (size_t)len < n) snprintf(buf + len, n - (size_t)len, "]");
  return buf;
}

/* Binary kernels (op_elementwise.c's, and any op of two broadcast
 * operands). NAME_rows computes len elements of the output from oy on,
 * reading a from oa with stride sa and b from ob with stride sb. */
typedef void (*ad_rows_fn)(const ad_call *c, int64_t oa, int64_t sa, int64_t ob, int64_t sb,
                           int64_t oy, int64_t len);

/* The stride patterns the inner loop meets (both contiguous, either one a
 * broadcast scalar: strides along a row are 1 or 0), for one type. */
#define BINARY_LOOP(T, EXPR)                                                                       \
  do {                                                                                             \
    const T *A = (const T *)c->in[0]->data + oa, *B = (const T *)c->in[1]->data + ob;              \
    T *Y = (T *)c->out->data + oy;                                                                 \
    if (len == 1) { /* scalars: skip the vector loop's set-up */                                   \
      T x0 = A[0], x1 = B[0];                                                                      \
      Y[0] = (T)(EXPR);                                                                            \
    } else if (sa == 1 && sb == 1)                                                                 \
      for (int64_t i = 0; i < len; i++) {                                                          \
        T x0 = A[i], x1 = B[i];                                                                    \
        Y[i] = (T)(EXPR);                                                                          \
      }                                                                                            \
    else if (sa == 1)                                                                              \
      for (int64_t i = 0; i < len; i++) {                                                          \
        T x0 = A[i], x1 = B[0];                                                                    \
        Y[i] = (T)(EXPR);                                                                          \
      }                                                                                            \
    else if (sb == 1)                                                                              \
      for (int64_t i = 0; i < len; i++) {                                                          \
        T x0 = A[0], x1 = B[i];                                                                    \
        Y[i] = (T)(EXPR);                                                                          \
      }                                                                                            \
    else                                                                                           \
      for (int64_t i = 0; i < len; i++) {                                                          \
        T x0 = A[i * sa], x1 = B[i * sb];                                                          \
        Y[i] = (T)(EXPR);                                                                          \
      }                                                                                            \
  } while (0)

/* Defines NAME_rows (baseline), NAME_rows_w (CELL_CLONES) and NAME_fwd
 * computing y = EXPR(x0, x1), x0 from a and x1 from b, for both float
 * types; EXPR may read the call's attributes as c->attrs. EXPR is IEEE
 * operations, rounded alike on every instruction set (no contraction:
 * -ffp-contract=off), so the two rows give the same bits, but for which
 * NaN payload an operation of two NaNs returns. */
#define BINARY_ROWS_FN(ATTR, NAME, EXPR)                                                           \
  ATTR static void NAME(const ad_call *c, int64_t oa, int64_t sa, int64_t ob, int64_t sb,          \
                        int64_t oy, int64_t len) {                                                 \
    if (c->out->dtype == AD_F32)                                                                   \
      BINARY_LOOP(float, EXPR);                                                                    \
    else                                                                                           \
      BINARY_LOOP(double, EXPR);                                                                   \
  }
#define DEFINE_BINARY(NAME, EXPR)                                                                  \
  BINARY_ROWS_FN(, NAME##_rows, EXPR)                                                              \
  BINARY_ROWS_FN(CELL_CLONES, NAME##_rows_w, EXPR)                                                 \
  BINARY_FWD_FN(NAME, EXPR, NAME##_rows)
/* DEFINE_BINARY for an op bound by its arithmetic, not by memory (a
 * division): the wide rows at every size. */
#define DEFINE_BINARY_WIDE(NAME, EXPR)                                                             \
  BINARY_ROWS_FN(CELL_CLONES, NAME##_rows_w, EXPR)                                                 \
  BINARY_FWD_FN(NAME, EXPR, NAME##_rows_w)
/* NAME_fwd: LARGE runs outputs above BINARY_WIDE_MAX bytes. */
#define BINARY_FWD_FN(NAME, EXPR, LARGE)                                                           \
  static void NAME##_fwd(const ad_call *c) {                                                       \
    if (c->out->size == 1) { /* then a and b hold one element each: no row walk, no kernel call */ \
      if (c->out->dtype == AD_F32) {                                                               \
        float x0 = *(const float *)c->in[0]->data, x1 = *(const float *)c->in[1]->data;            \
        *(float *)c->out->data = (float)(EXPR);                                                    \
      } else {                                                                                     \
        double x0 = *(const double *)c->in[0]->data, x1 = *(const double *)c->in[1]->data;         \
        *(double *)c->out->data = (EXPR);                                                          \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    ad_binary_run(c, LARGE, NAME##_rows_w);                                                        \
  }

/* The binary form of op_elementwise.c's UNARY_KERNEL_V (needs vexp.h's
 * CELL_CLONES): V32, OUT32, FIX32 and EXPR64 are expressions of x0 and x1
 * (the two operands). Rows where both are of unit stride take V32 in
 * chunks of 256 and FIX32 where OUT32 holds, after the chunk (NAME_row32,
 * vectorized); other strides (a broadcast operand) gathered into rows of
 * 256 for NAME_row32 (element by element in this baseline code, V32's
 * multiply-adds are calls of libm's fmaf: docs/performance.md, "A fourth
 * round"); float64 EXPR64, in rows compiled as the float32
 * ones (CELL_CLONES) for every stride, so that vexp.h's float64 functions
 * in it run in the clones, not in baseline code that calls libm's fma. */
#define BINARY_KERNEL_V(NAME, V32, OUT32, FIX32, EXPR64)                                           \
  BINARY_ROW32_V(NAME##_row32, V32, OUT32, FIX32)                                                  \
  BINARY_KERNEL_V_REST(NAME, EXPR64)
/* The float32 rows of BINARY_KERNEL_V as FN (for an op that picks among
 * several forms of them: gelu_backward). */
#define BINARY_ROW32_V(FN, V32, OUT32, FIX32)                                                      \
  CELL_CLONES static void FN(const float *A, const float *B, float *Y, int64_t len) {              \
    for (int64_t c0 = 0; c0 < len; c0 += 256) {                                                    \
      int64_t c1 = len - c0 < 256 ? len : c0 + 256;                                                \
      int out = 0;                                                                                 \
      for (int64_t i = c0; i < c1; i++) {                                                          \
        float x0 = A[i], x1 = B[i];                                                                \
        Y[i] = V32;                                                                                \
        out |= OUT32;                                                                              \
      }                                                                                            \
      if (out)                                                                                     \
        for (int64_t i = c0; i < c1; i++) {                                                        \
          float x0 = A[i], x1 = B[i];                                                              \
          if (OUT32) Y[i] = FIX32;                                                                 \
        }                                                                                          \
    }                                                                                              \
  }
/* The rest of BINARY_KERNEL_V, over a NAME##_row32 defined before. */
#define BINARY_KERNEL_V_REST(NAME, EXPR64)                                                         \
  CELL_CLONES static void NAME##_row64(const double *A, int64_t sa, const double *B, int64_t sb,   \
                                       double *Y, int64_t len) {                                   \
    if (sa == 1 && sb == 1)                                                                        \
      for (int64_t i = 0; i < len; i++) {                                                          \
        double x0 = A[i], x1 = B[i];                                                               \
        Y[i] = EXPR64;                                                                             \
      }                                                                                            \
    else                                                                                           \
      for (int64_t i = 0; i < len; i++) {                                                          \
        double x0 = A[i * sa], x1 = B[i * sb];                                                     \
        Y[i] = EXPR64;                                                                             \
      }                                                                                            \
  }                                                                                                \
  static void NAME##_rows(const ad_call *c, int64_t oa, int64_t sa, int64_t ob, int64_t sb,        \
                          int64_t oy, int64_t len) {                                               \
    if (c->out->dtype == AD_F64)                                                                   \
      NAME##_row64((const double *)c->in[0]->data + oa, sa, (const double *)c->in[1]->data + ob,   \
                   sb, (double *)c->out->data + oy, len);                                          \
    else if (c->out->dtype == AD_F32 && sa == 1 && sb == 1)                                        \
      NAME##_row32((const float *)c->in[0]->data + oa, (const float *)c->in[1]->data + ob,         \
                   (float *)c->out->data + oy, len);                                               \
    else if (c->out->dtype == AD_F32) { /* a broadcast operand: its values gathered into a row */  \
      const float *A = (const float *)c->in[0]->data + oa,                                         \
                  *B = (const float *)c->in[1]->data + ob;                                         \
      float *Y = (float *)c->out->data + oy, ta[256], tb[256];                                     \
      for (int64_t c0 = 0; c0 < len; c0 += 256) {                                                  \
        int64_t n = len - c0 < 256 ? len - c0 : 256;                                               \
        for (int64_t i = 0; i < n; i++) ta[i] = A[(c0 + i) * sa], tb[i] = B[(c0 + i) * sb];        \
        NAME##_row32(ta, tb, Y + c0, n);                                                           \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
  static void NAME##_fwd(const ad_call *c) { ad_binary_run(c, NAME##_rows, NULL); }

/* Runs a binary op's rows f over the broadcast output (flat when the
 * shapes allow, split over the library's threads when large):
 * op_elementwise.c. wide, when not NULL, is f compiled for AVX-512 and
 * AVX2 (CELL_CLONES), with f's bits: it runs outputs of at most
 * BINARY_WIDE_MAX bytes. */
void ad_binary_run(const ad_call *c, ad_rows_fn f, ad_rows_fn wide);

/* The product of x's dims [from, to) (1 for none). */
static inline int64_t ad_dims_span(const ad_tensor *x, int from, int to) {
  int64_t n = 1;
  for (int k = from; k < to; k++) n *= x->shape[k];
  return n;
}

/* A kernel over a block of a result viewed as [outer, per, inner]: rows
 * [lo, hi) of block o, columns [c0, c1) (op_shape.c's index_select_add,
 * op_resample.c's resample_axis and adjoint). */
typedef void ad_block_fn(const void *job, int64_t o, int64_t lo, int64_t hi, int64_t c0,
                         int64_t c1);
/* Runs fn over all of [outer, per, inner]: on the calling thread when the
 * work (elements read and written) is under 32K; else on the library's
 * threads, 16K elements of work a thread or more, by runs of the outer x
 * per row units, or by columns (multiples of 16) where there are fewer
 * than 4 units a thread and rows long enough for 64 columns a thread.
 * The split decides only who computes what, so a kernel whose elements
 * each have one order of operations gives the same bits on any thread
 * count. */
void ad_parallel_blocks(int64_t outer, int64_t per, int64_t inner, double work, ad_block_fn *fn,
                        const void *job);

/* Applies op id with attrs; shorthand used by the public builders. */
static inline ad_tensor *ad_apply1(ad_ctx *ctx, int op, ad_tensor *x, const ad_attrs *attrs) {
  return ad_op_apply(ctx, op, 1, &x, attrs);
}
static inline ad_tensor *ad_apply2(ad_ctx *ctx, int op, ad_tensor *a, ad_tensor *b,
                                   const ad_attrs *attrs) {
  ad_tensor *in[2] = {a, b};
  return ad_op_apply(ctx, op, 2, in, attrs);
}

#endif
