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

/* The maximum of the n elements x[0], x[s], ..., x[(n-1) s] (NaN if one is
 * NaN), as a double; -inf for n = 0, so a lane of no elements is never
 * read. */
static inline double ad_lane_max_f32(const float *x, int64_t s, int64_t n) {
  double m = -INFINITY;
  for (int64_t k = 0; k < n; k++) m = AD_MAX_NAN((double)x[k * s], m);
  return m;
}
static inline double ad_lane_max_f64(const double *x, int64_t s, int64_t n) {
  double m = -INFINITY;
  for (int64_t k = 0; k < n; k++) m = AD_MAX_NAN(x[k * s], m);
  return m;
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
