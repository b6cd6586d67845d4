/* op_elementwise.c: elementwise ops, binary (NumPy broadcasting), scalar
 * forms and unary, each forward beside its backward with the math above.
 * Backward formulas use the engine's own ops so they can be recorded. */
#include "ad_internal.h"

#include <math.h>

/* ------------------------------------------------------------- helpers */

/* Elements per chunk when an elementwise op is split over the library's
 * threads (ad_set_num_threads): tens of microseconds of work. */
#define ELEM_GRAIN 32768

bool ad_broadcast_shape(int na, const int64_t *sa, int nb, const int64_t *sb, int *nout,
                        int64_t *out) {
  int n = na > nb ? na : nb;
  for (int i = 0; i < n; i++) {
    int64_t da = i < n - na ? 1 : sa[i - (n - na)];
    int64_t db = i < n - nb ? 1 : sb[i - (n - nb)];
    if (da != db && da != 1 && db != 1) return false;
    out[i] = da == 1 ? db : da;
  }
  *nout = n;
  return true;
}

ad_status ad_check_float_same(ad_ctx *ctx, const char *op, int n, ad_tensor *const *in) {
  for (int i = 0; i < n; i++) {
    if (!ad_is_float(in[i]->dtype))
      return ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %d is %s; a float dtype is needed", op, i,
                          ad_dtype_name(in[i]->dtype));
    if (in[i]->dtype != in[0]->dtype)
      return ad_set_error(ctx, AD_ERR_DTYPE, "%s: dtypes differ: %s and %s", op,
                          ad_dtype_name(in[0]->dtype), ad_dtype_name(in[i]->dtype));
  }
  return AD_OK;
}

int ad_norm_axis(int axis, int ndim) {
  if (axis < 0) axis += ndim;
  return axis >= 0 && axis < ndim ? axis : -1;
}

/* Strides of x seen through out's shape (0 along broadcast dims). */
void ad_bc_strides(const ad_tensor *x, const ad_tensor *out, int64_t *st) {
  int off = out->ndim - x->ndim;
  int64_t s = 1;
  for (int d = out->ndim - 1; d >= 0; d--) {
    int xd = d - off;
    if (xd < 0 || x->shape[xd] == 1) {
      st[d] = 0;
    } else {
      st[d] = s;
    }
    if (xd >= 0) s *= x->shape[xd];
  }
}

void ad_bc_init(ad_bc_rows *it, int nin, ad_tensor *const *in, const ad_tensor *out) {
  it->nin = nin;
  for (int i = 0; i < nin; i++) ad_bc_strides(in[i], out, it->st[i]);
  it->len = out->ndim ? out->shape[out->ndim - 1] : 1;
  it->rows = it->len ? out->size / it->len : 0;
}

void ad_bc_row(const ad_bc_rows *it, const ad_tensor *out, int64_t r, int64_t *off) {
  for (int i = 0; i < it->nin; i++) off[i] = 0;
  for (int d = out->ndim - 2; d >= 0; d--) {
    int64_t idx = r % out->shape[d];
    r /= out->shape[d];
    for (int i = 0; i < it->nin; i++) off[i] += idx * it->st[i][d];
  }
}

/* ------------------------------------------------------ binary kernels */

ad_status shape_binary(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                       int *ndim, int64_t *shape) {
  (void)at, (void)n;
  const ad_tensor *a = in[0], *b = in[1];
  if (a->dtype != b->dtype || !ad_is_float(a->dtype)) {
    if (ad_check_float_same(ctx, ctx->applying, 2, in) != AD_OK) return ctx->status;
  }
  if (ad_same_shape(a, b)) { /* the common case */
    *ndim = a->ndim;
    for (int k = 0; k < a->ndim; k++) shape[k] = a->shape[k];
  } else if (!ad_broadcast_shape(a->ndim, a->shape, b->ndim, b->shape, ndim, shape)) {
    char sa[64], sb[64];
    return ad_set_error(ctx, AD_ERR_SHAPE, "%s: shapes do not broadcast: %s and %s", ctx->applying,
                        ad_shape_str(a, sa, sizeof sa), ad_shape_str(b, sb, sizeof sb));
  }
  *dt = a->dtype;
  return AD_OK;
}

/* Defines fwd_NAME running EXPR(x0, x1) with the three stride patterns the
 * inner loop meets (both contiguous, one broadcast scalar), for both types. */
#define BINARY_LOOP(T, EXPR)                                                                       \
  do {                                                                                             \
    const T *A = (const T *)a + oa, *B = (const T *)b + ob;                                        \
    T *Y = (T *)y + oy;                                                                            \
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
    else                                                                                           \
      for (int64_t i = 0; i < len; i++) {                                                          \
        T x0 = A[i * sa], x1 = B[i * sb];                                                          \
        Y[i] = (T)(EXPR);                                                                          \
      }                                                                                            \
  } while (0)

#define DEFINE_BINARY(NAME, EXPR)                                                                  \
  static void NAME##_rows(ad_dtype dt, const void *a, int64_t oa, int64_t sa, const void *b,       \
                          int64_t ob, int64_t sb, void *y, int64_t oy, int64_t len,                \
                          const ad_attrs *at) {                                                    \
    (void)at;                                                                                      \
    if (dt == AD_F32)                                                                              \
      BINARY_LOOP(float, EXPR);                                                                    \
    else                                                                                           \
      BINARY_LOOP(double, EXPR);                                                                   \
  }                                                                                                \
  void fwd_##NAME(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {               \
    (void)n;                                                                                       \
    if (out->size == 1) { /* then a and b hold one element each: no row walk, no kernel call */    \
      if (out->dtype == AD_F32) {                                                                  \
        float x0 = *(const float *)in[0]->data, x1 = *(const float *)in[1]->data;                  \
        *(float *)out->data = (float)(EXPR);                                                       \
      } else {                                                                                     \
        double x0 = *(const double *)in[0]->data, x1 = *(const double *)in[1]->data;               \
        *(double *)out->data = (EXPR);                                                             \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    binary_run(in, out, at, NAME##_rows);                                                          \
  }

typedef void (*rows_fn)(ad_dtype, const void *, int64_t, int64_t, const void *, int64_t, int64_t,
                        void *, int64_t, int64_t, const ad_attrs *);

/* A binary op's work, cut into ranges of elements (same shapes, or b a
 * scalar) or of rows (broadcasting) for ad_parallel_for. */
typedef struct binary_job {
  ad_tensor *const *in;
  ad_tensor *out;
  const ad_attrs *at;
  rows_fn f;
  int64_t sb;      /* b's stride in the flat case: 1 or 0 */
  bool row_vector; /* a is out's shape, b one row of it (a bias): no offset arithmetic */
  ad_bc_rows it;
} binary_job;

static void binary_flat(void *ud, int64_t b, int64_t e) {
  const binary_job *j = ud;
  j->f(j->out->dtype, j->in[0]->data, b, 1, j->in[1]->data, j->sb ? b : 0, j->sb, j->out->data, b,
       e - b, j->at);
}

static void binary_rows(void *ud, int64_t b, int64_t e) {
  const binary_job *j = ud;
  int last = j->out->ndim - 1;
  int64_t sa = last >= 0 ? j->it.st[0][last] : 0, sb = last >= 0 ? j->it.st[1][last] : 0;
  for (int64_t r = b; r < e; r++) {
    int64_t off[2] = {r * j->it.len, 0};
    if (!j->row_vector) ad_bc_row(&j->it, j->out, r, off);
    j->f(j->out->dtype, j->in[0]->data, off[0], sa, j->in[1]->data, off[1], sb, j->out->data,
         r * j->it.len, j->it.len, j->at);
  }
}

static void binary_run(ad_tensor *const *in, ad_tensor *out, const ad_attrs *at, rows_fn f) {
  const ad_tensor *a = in[0], *b = in[1];
  bool same = ad_same_shape(a, b);
  if (same || (b->size == 1 && a->size == out->size)) {
    if (out->size <= ELEM_GRAIN) { /* small: no job (the scalar chain's case) */
      f(out->dtype, a->data, 0, 1, b->data, 0, same, out->data, 0, out->size, at);
      return;
    }
    binary_job j = {.in = in, .out = out, .at = at, .f = f, .sb = same};
    ad_parallel_for(out->size, ELEM_GRAIN, binary_flat, &j);
    return;
  }
  binary_job j = {.in = in, .out = out, .at = at, .f = f};
  ad_bc_init(&j.it, 2, in, out);
  int last = out->ndim - 1;
  j.row_vector = last >= 0 && a->size == out->size && b->size == j.it.len &&
                 j.it.st[0][last] == 1 && j.it.st[1][last] == 1;
  int64_t grain = j.it.len ? (ELEM_GRAIN + j.it.len - 1) / j.it.len : 1;
  ad_parallel_for(j.it.rows, grain, binary_rows, &j);
}

static inline double pow_d(double a, double b) { return pow(a, b); }
static inline double cmp_d(double a, double b, int64_t mode) {
  switch (mode) {
  case AD_CMP_EQ:
    return a == b;
  case AD_CMP_GT:
    return a > b;
  case AD_CMP_GE:
    return a >= b;
  case AD_CMP_LT:
    return a < b;
  default:
    return a <= b;
  }
}

DEFINE_BINARY(add, x0 + x1)
DEFINE_BINARY(sub, x0 - x1)
DEFINE_BINARY(mul, x0 *x1)
DEFINE_BINARY(div, x0 / x1)
DEFINE_BINARY(pow, pow_d(x0, x1))
DEFINE_BINARY(maximum, x0 > x1 ? x0 : x1)
DEFINE_BINARY(minimum, x0 < x1 ? x0 : x1)
DEFINE_BINARY(cmp, cmp_d(x0, x1, at->i[0]))
DEFINE_BINARY(tanh_backward, x0 *(1 - x1 * x1))
DEFINE_BINARY(sigmoid_backward, x0 *x1 *(1 - x1))
DEFINE_BINARY(relu_backward, x1 > 0 ? x0 : 0)

/* y = a + b;  da += dy; db += dy */
ad_status bwd_add(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)ctx, (void)n, (void)in, (void)at, (void)y, (void)needs;
  g[0] = g[1] = dy;
  return AD_OK;
}

/* y = a - b;  da += dy; db += -dy */
ad_status bwd_sub(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)in, (void)at, (void)y;
  g[0] = dy;
  if (needs[1] && !(g[1] = ad_neg(ctx, dy))) return ctx->status;
  return AD_OK;
}

/* gx += dy * w over a range of elements (mul_into_grad). */
typedef struct mul_acc_job {
  ad_tensor *gx;
  const ad_tensor *dy, *w;
} mul_acc_job;

/* The product is rounded on its own, then added: the bits ad_mul and the
 * sweep's accumulation give (C's default: no contraction into an FMA). */
static void mul_acc_range(void *ud, int64_t b, int64_t e) {
  const mul_acc_job *j = ud;
  if (j->gx->dtype == AD_F32) {
    float *G = j->gx->data;
    const float *D = j->dy->data, *W = j->w->data;
    for (int64_t i = b; i < e; i++) {
      float p = D[i] * W[i];
      G[i] += p;
    }
  } else {
    double *G = j->gx->data;
    const double *D = j->dy->data, *W = j->w->data;
    for (int64_t i = b; i < e; i++) {
      double p = D[i] * W[i];
      G[i] += p;
    }
  }
}

static void mul_acc(ad_tensor *gx, const ad_tensor *dy, const ad_tensor *w) {
  mul_acc_job j = {gx, dy, w};
  if (dy->size <= ELEM_GRAIN)
    mul_acc_range(&j, 0, dy->size);
  else
    ad_parallel_for(dy->size, ELEM_GRAIN, mul_acc_range, &j);
}

/* In ad_backward, a parameter x of dy's shape whose grad exists takes
 * dx += dy * w straight into that grad, as matmul's GEMM does: no temporary,
 * no op applied, no accumulation pass (a scale or a gain in a network, a in
 * bench/scalar_chain). The grad sees its contributions in the order the
 * ordinary path adds them (the sweep's node order, then input order): in x *
 * x both inputs decide alike, before either is accumulated. Returns false,
 * having done nothing, in every other case (ad_grad, create_graph, a
 * backward hook, broadcasting, the first pass that allocates the grad). */
static inline bool mul_into_grad(ad_ctx *ctx, ad_tensor *x, ad_tensor *dy, ad_tensor *w) {
  ad_tensor *gx = ad_leaf_grad_existing(ctx, x);
  if (!gx || !ad_same_shape(x, dy) || !ad_same_shape(w, dy)) return false;
  if (dy->size != 1) {
    mul_acc(gx, dy, w);
  } else if (dy->dtype == AD_F32) { /* a scalar: no job, no loop set-up */
    float p = *(const float *)dy->data * *(const float *)w->data;
    *(float *)gx->data += p;
  } else {
    double p = *(const double *)dy->data * *(const double *)w->data;
    *(double *)gx->data += p;
  }
  return true;
}

/* y = a * b;  da += dy * b; db += dy * a */
ad_status bwd_mul(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y;
  if (needs[0] && !mul_into_grad(ctx, in[0], dy, in[1]) && !(g[0] = ad_mul(ctx, dy, in[1])))
    return ctx->status;
  if (needs[1] && !mul_into_grad(ctx, in[1], dy, in[0]) && !(g[1] = ad_mul(ctx, dy, in[0])))
    return ctx->status;
  return AD_OK;
}

/* y = a / b;  da += dy / b; db += -dy * a / b^2 = -(da) * y */
ad_status bwd_div(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y;
  ad_tensor *q = ad_div(ctx, dy, in[1]);
  if (!q) return ctx->status;
  g[0] = q;
  if (needs[1] && !(g[1] = ad_neg(ctx, ad_mul(ctx, q, ad_div(ctx, in[0], in[1])))))
    return ctx->status;
  return AD_OK;
}

/* y = a^b;  da += dy * b * a^(b-1); db += dy * y * log(a) */
ad_status bwd_pow(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y;
  ad_tensor *a = in[0], *b = in[1];
  if (needs[0] &&
      !(g[0] = ad_mul(ctx, dy, ad_mul(ctx, b, ad_pow(ctx, a, ad_add_scalar(ctx, b, -1.0))))))
    return ctx->status;
  /* y is recomputed from a and b so the second derivative sees it */
  if (needs[1] && !(g[1] = ad_mul(ctx, dy, ad_mul(ctx, ad_pow(ctx, a, b), ad_log(ctx, a)))))
    return ctx->status;
  return AD_OK;
}

/* Shares dy between a and b by masks: ma = [a > b] + [a = b]/2 (mode GT) */
static ad_status minmax_bwd(ad_ctx *ctx, ad_tensor *const *in, ad_tensor *dy, const bool *needs,
                            ad_tensor **g, ad_tensor *(*win)(ad_ctx *, ad_tensor *, ad_tensor *)) {
  ad_tensor *a = in[0], *b = in[1];
  ad_tensor *half_eq = ad_mul_scalar(ctx, ad_eq(ctx, a, b), 0.5);
  if (needs[0] && !(g[0] = ad_mul(ctx, dy, ad_add(ctx, win(ctx, a, b), half_eq))))
    return ctx->status;
  if (needs[1] && !(g[1] = ad_mul(ctx, dy, ad_add(ctx, win(ctx, b, a), half_eq))))
    return ctx->status;
  return AD_OK;
}

/* y = max(a, b);  da += dy * ([a > b] + [a = b]/2); db += dy * ([b > a] + [a = b]/2) */
ad_status bwd_maximum(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                      ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y;
  return minmax_bwd(ctx, in, dy, needs, g, ad_gt);
}

/* y = min(a, b);  da += dy * ([a < b] + [a = b]/2); db likewise */
ad_status bwd_minimum(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                      ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y;
  return minmax_bwd(ctx, in, dy, needs, g, ad_lt);
}

/* ---------------------------------------------------------------- where */

ad_status shape_where(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                      int *ndim, int64_t *shape) {
  (void)n, (void)at;
  if (ad_check_float_same(ctx, "where", 2, in + 1) != AD_OK) return ctx->status;
  int64_t s1[AD_MAX_DIMS];
  int n1;
  char a[64], b[64], c[64];
  if (!ad_broadcast_shape(in[1]->ndim, in[1]->shape, in[2]->ndim, in[2]->shape, &n1, s1) ||
      !ad_broadcast_shape(in[0]->ndim, in[0]->shape, n1, s1, ndim, shape))
    return ad_set_error(ctx, AD_ERR_SHAPE, "where: shapes do not broadcast: %s, %s, %s",
                        ad_shape_str(in[0], a, sizeof a), ad_shape_str(in[1], b, sizeof b),
                        ad_shape_str(in[2], c, sizeof c));
  *dt = in[1]->dtype;
  return AD_OK;
}

void fwd_where(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n, (void)at;
  ad_bc_rows it;
  ad_bc_init(&it, 3, in, out);
  int last = out->ndim - 1;
  for (int64_t r = 0; r < it.rows; r++) {
    int64_t off[3], s[3];
    ad_bc_row(&it, out, r, off);
    for (int k = 0; k < 3; k++) s[k] = last >= 0 ? it.st[k][last] : 0;
    for (int64_t i = 0; i < it.len; i++) {
      double c = ad_tensor_get(in[0], off[0] + i * s[0]);
      int64_t o = r * it.len + i;
      if (out->dtype == AD_F32)
        ((float *)out->data)[o] =
            ((const float *)in[c != 0 ? 1 : 2]->data)[off[c != 0 ? 1 : 2] + i * s[c != 0 ? 1 : 2]];
      else
        ((double *)out->data)[o] =
            ((const double *)in[c != 0 ? 1 : 2]->data)[off[c != 0 ? 1 : 2] + i * s[c != 0 ? 1 : 2]];
    }
  }
}

/* y = c ? a : b;  da += where(c, dy, 0); db += where(c, 0, dy) */
ad_status bwd_where(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                    ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y;
  ad_tensor *zero = ad_scalar(ctx, dy->dtype, 0.0);
  if (needs[1] && !(g[1] = ad_where(ctx, in[0], dy, zero))) return ctx->status;
  if (needs[2] && !(g[2] = ad_where(ctx, in[0], zero, dy))) return ctx->status;
  return AD_OK;
}

/* --------------------------------------------------------- unary kernels */

ad_status shape_unary(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                      int *ndim, int64_t *shape) {
  (void)n, (void)at;
  if (ad_check_float_same(ctx, ctx->applying, 1, in) != AD_OK) return ctx->status;
  *dt = in[0]->dtype;
  *ndim = in[0]->ndim;
  memcpy(shape, in[0]->shape, sizeof(int64_t) * (size_t)in[0]->ndim);
  return AD_OK;
}

typedef struct unary_job {
  const ad_tensor *x;
  ad_tensor *y;
  double s;
} unary_job;

#define DEFINE_UNARY(NAME, EXPR32, EXPR64)                                                         \
  static void NAME##_range(void *ud, int64_t b, int64_t e) {                                       \
    const unary_job *j = ud;                                                                       \
    const double s = j->s;                                                                         \
    (void)s;                                                                                       \
    if (j->y->dtype == AD_F32) {                                                                   \
      const float *X = j->x->data;                                                                 \
      float *Y = j->y->data;                                                                       \
      for (int64_t i = b; i < e; i++) {                                                            \
        float x = X[i];                                                                            \
        Y[i] = (float)(EXPR32);                                                                    \
      }                                                                                            \
    } else {                                                                                       \
      const double *X = j->x->data;                                                                \
      double *Y = j->y->data;                                                                      \
      for (int64_t i = b; i < e; i++) {                                                            \
        double x = X[i];                                                                           \
        Y[i] = (EXPR64);                                                                           \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
  void fwd_##NAME(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {               \
    (void)n;                                                                                       \
    if (out->size == 1) { /* a scalar: no job, no loop set-up */                                   \
      const double s = at->f[0];                                                                   \
      (void)s;                                                                                     \
      if (out->dtype == AD_F32) {                                                                  \
        float x = *(const float *)in[0]->data;                                                     \
        *(float *)out->data = (float)(EXPR32);                                                     \
      } else {                                                                                     \
        double x = *(const double *)in[0]->data;                                                   \
        *(double *)out->data = (EXPR64);                                                           \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    unary_job j = {in[0], out, at->f[0]};                                                          \
    if (out->size <= ELEM_GRAIN)                                                                   \
      NAME##_range(&j, 0, out->size);                                                              \
    else                                                                                           \
      ad_parallel_for(out->size, ELEM_GRAIN, NAME##_range, &j);                                    \
  }

static inline double sigmoid_d(double x) {
  return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}
static inline float sigmoid_f(float x) {
  return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}
static inline double softplus_d(double x) { return (x > 0 ? x : 0) + log1p(exp(-fabs(x))); }
static inline float softplus_f(float x) { return (x > 0 ? x : 0) + log1pf(expf(-fabsf(x))); }
#define SQRT1_2 0.70710678118654752440

DEFINE_UNARY(add_scalar, x + (float)s, x + s)
DEFINE_UNARY(mul_scalar, x *(float)s, x *s)
DEFINE_UNARY(pow_scalar, powf(x, (float)s), pow(x, s))
DEFINE_UNARY(neg, -x, -x)
DEFINE_UNARY(exp, expf(x), exp(x))
DEFINE_UNARY(log, logf(x), log(x))
DEFINE_UNARY(sqrt, sqrtf(x), sqrt(x))
DEFINE_UNARY(abs, fabsf(x), fabs(x))
DEFINE_UNARY(sin, sinf(x), sin(x))
DEFINE_UNARY(cos, cosf(x), cos(x))
DEFINE_UNARY(tanh, tanhf(x), tanh(x))
DEFINE_UNARY(sigmoid, sigmoid_f(x), sigmoid_d(x))
DEFINE_UNARY(relu, x > 0 ? x : 0.0f, x > 0 ? x : 0.0)
DEFINE_UNARY(leaky_relu, x > 0 ? x : (float)s * x, x > 0 ? x : s * x)
DEFINE_UNARY(gelu, 0.5f * x * (1.0f + erff(x * (float)SQRT1_2)), 0.5 * x * (1.0 + erf(x * SQRT1_2)))
DEFINE_UNARY(softplus, softplus_f(x), softplus_d(x))
DEFINE_UNARY(erf, erff(x), erf(x))
DEFINE_UNARY(square, x *x, x *x)

/* y = x + s;  dx += dy */
ad_status bwd_add_scalar(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                         ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)ctx, (void)n, (void)in, (void)at, (void)y, (void)needs;
  g[0] = dy;
  return AD_OK;
}

/* y = x * s;  dx += dy * s */
ad_status bwd_mul_scalar(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                         ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)in, (void)y, (void)needs;
  return (g[0] = ad_mul_scalar(ctx, dy, at->f[0])) ? AD_OK : ctx->status;
}

/* y = x^p;  dx += dy * p * x^(p-1) */
ad_status bwd_pow_scalar(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                         ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)y, (void)needs;
  double p = at->f[0];
  ad_tensor *d = p == 2.0 ? ad_mul_scalar(ctx, in[0], 2.0)
                          : ad_mul_scalar(ctx, ad_pow_scalar(ctx, in[0], p - 1.0), p);
  return (g[0] = ad_mul(ctx, dy, d)) ? AD_OK : ctx->status;
}

/* y = -x;  dx += -dy */
ad_status bwd_neg(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)in, (void)at, (void)y, (void)needs;
  return (g[0] = ad_neg(ctx, dy)) ? AD_OK : ctx->status;
}

/* y = exp(x);  dx += dy * y */
ad_status bwd_exp(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)in, (void)at, (void)needs;
  return (g[0] = ad_mul(ctx, dy, y)) ? AD_OK : ctx->status;
}

/* y = log(x);  dx += dy / x */
ad_status bwd_log(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  return (g[0] = ad_div(ctx, dy, in[0])) ? AD_OK : ctx->status;
}

/* y = sqrt(x);  dx += dy / (2 y) */
ad_status bwd_sqrt(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                   ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)in, (void)at, (void)needs;
  return (g[0] = ad_div(ctx, dy, ad_mul_scalar(ctx, y, 2.0))) ? AD_OK : ctx->status;
}

/* y = |x|;  dx += dy * sign(x), sign(0) = 0 */
ad_status bwd_abs(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  ad_tensor *zero = ad_scalar(ctx, dy->dtype, 0.0);
  ad_tensor *sign = ad_sub(ctx, ad_gt(ctx, in[0], zero), ad_lt(ctx, in[0], zero));
  return (g[0] = ad_mul(ctx, dy, sign)) ? AD_OK : ctx->status;
}

/* y = sin(x);  dx += dy * cos(x) */
ad_status bwd_sin(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  return (g[0] = ad_mul(ctx, dy, ad_cos(ctx, in[0]))) ? AD_OK : ctx->status;
}

/* y = cos(x);  dx += -dy * sin(x) */
ad_status bwd_cos(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  return (g[0] = ad_mul(ctx, dy, ad_neg(ctx, ad_sin(ctx, in[0])))) ? AD_OK : ctx->status;
}

/* y = tanh(x);  dx += tanh_backward(dy, y) = dy * (1 - y^2) */
ad_status bwd_tanh(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                   ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)in, (void)at, (void)needs;
  return (g[0] = ad_apply2(ctx, AD_OP_TANH_BACKWARD, dy, y, NULL)) ? AD_OK : ctx->status;
}

/* y = sigmoid(x);  dx += sigmoid_backward(dy, y) = dy * y * (1 - y) */
ad_status bwd_sigmoid(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                      ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)in, (void)at, (void)needs;
  return (g[0] = ad_apply2(ctx, AD_OP_SIGMOID_BACKWARD, dy, y, NULL)) ? AD_OK : ctx->status;
}

/* y = max(x, 0);  dx += relu_backward(dy, x) = dy * [x > 0] */
ad_status bwd_relu(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                   ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  return (g[0] = ad_apply2(ctx, AD_OP_RELU_BACKWARD, dy, in[0], NULL)) ? AD_OK : ctx->status;
}

/* y = g (1 - t^2);  dg += dy (1 - t^2) = tanh_backward(dy, t); dt += -2 dy g t */
ad_status bwd_tanh_backward(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at,
                            ad_tensor *y, ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y;
  if (needs[0] && !(g[0] = ad_apply2(ctx, AD_OP_TANH_BACKWARD, dy, in[1], NULL)))
    return ctx->status;
  if (needs[1] && !(g[1] = ad_mul(ctx, ad_mul(ctx, dy, in[0]), ad_mul_scalar(ctx, in[1], -2.0))))
    return ctx->status;
  return AD_OK;
}

/* y = g s (1 - s);  dg += dy s (1 - s) = sigmoid_backward(dy, s); ds += dy g (1 - 2 s) */
ad_status bwd_sigmoid_backward(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at,
                               ad_tensor *y, ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y;
  if (needs[0] && !(g[0] = ad_apply2(ctx, AD_OP_SIGMOID_BACKWARD, dy, in[1], NULL)))
    return ctx->status;
  if (needs[1] && !(g[1] = ad_mul(ctx, ad_mul(ctx, dy, in[0]),
                                  ad_add_scalar(ctx, ad_mul_scalar(ctx, in[1], -2.0), 1.0))))
    return ctx->status;
  return AD_OK;
}

/* y = g [x > 0];  dg += relu_backward(dy, x); x gets none (the mask is piecewise constant) */
ad_status bwd_relu_backward(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at,
                            ad_tensor *y, ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y;
  if (needs[0] && !(g[0] = ad_apply2(ctx, AD_OP_RELU_BACKWARD, dy, in[1], NULL)))
    return ctx->status;
  return AD_OK;
}

/* y = x > 0 ? x : alpha x;  dx += dy * (x > 0 ? 1 : alpha) */
ad_status bwd_leaky_relu(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                         ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)y, (void)needs;
  double alpha = at->f[0];
  ad_tensor *mask = ad_gt(ctx, in[0], ad_scalar(ctx, dy->dtype, 0.0));
  /* slope = alpha + (1 - alpha) [x > 0] */
  ad_tensor *slope = ad_add_scalar(ctx, ad_mul_scalar(ctx, mask, 1.0 - alpha), alpha);
  return (g[0] = ad_mul(ctx, dy, slope)) ? AD_OK : ctx->status;
}

/* y = x Phi(x);  dx += dy * (Phi(x) + x phi(x)), phi(x) = exp(-x^2/2)/sqrt(2 pi) */
ad_status bwd_gelu(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                   ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  ad_tensor *x = in[0];
  ad_tensor *Phi =
      ad_mul_scalar(ctx, ad_add_scalar(ctx, ad_erf(ctx, ad_mul_scalar(ctx, x, SQRT1_2)), 1.0), 0.5);
  ad_tensor *phi = ad_mul_scalar(ctx, ad_exp(ctx, ad_mul_scalar(ctx, ad_square(ctx, x), -0.5)),
                                 0.3989422804014327);
  return (g[0] = ad_mul(ctx, dy, ad_add(ctx, Phi, ad_mul(ctx, x, phi)))) ? AD_OK : ctx->status;
}

/* y = log(1 + exp(x));  dx += dy * sigmoid(x) */
ad_status bwd_softplus(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                       ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  return (g[0] = ad_mul(ctx, dy, ad_sigmoid(ctx, in[0]))) ? AD_OK : ctx->status;
}

/* y = erf(x);  dx += dy * 2/sqrt(pi) exp(-x^2) */
ad_status bwd_erf(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                  ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  ad_tensor *d =
      ad_mul_scalar(ctx, ad_exp(ctx, ad_neg(ctx, ad_square(ctx, in[0]))), 1.1283791670955126);
  return (g[0] = ad_mul(ctx, dy, d)) ? AD_OK : ctx->status;
}

/* y = x^2;  dx += dy * 2x */
ad_status bwd_square(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                     ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  return (g[0] = ad_mul(ctx, dy, ad_mul_scalar(ctx, in[0], 2.0))) ? AD_OK : ctx->status;
}

/* ----------------------------------------------------------------- cast */

ad_status shape_cast(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_dtype *dt,
                     int *ndim, int64_t *shape) {
  if (shape_unary(ctx, n, in, at, dt, ndim, shape) != AD_OK) return ctx->status;
  if (at->i[0] != AD_F32 && at->i[0] != AD_F64)
    return ad_set_error(ctx, AD_ERR_DTYPE, "cast: target dtype %lld is not a float dtype",
                        (long long)at->i[0]);
  *dt = (ad_dtype)at->i[0];
  return AD_OK;
}

void fwd_cast(int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *out) {
  (void)n, (void)at;
  ad_tensor_copy_data(out, in[0]);
}

/* y = (T) x;  dx += (type of x) dy */
ad_status bwd_cast(ad_ctx *ctx, int n, ad_tensor *const *in, const ad_attrs *at, ad_tensor *y,
                   ad_tensor *dy, const bool *needs, ad_tensor **g) {
  (void)n, (void)at, (void)y, (void)needs;
  return (g[0] = ad_cast(ctx, dy, in[0]->dtype)) ? AD_OK : ctx->status;
}

/* ------------------------------------------------------- public builders */

ad_tensor *ad_add(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(c, AD_OP_ADD, a, b, NULL);
}
ad_tensor *ad_sub(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(c, AD_OP_SUB, a, b, NULL);
}
ad_tensor *ad_mul(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(c, AD_OP_MUL, a, b, NULL);
}
ad_tensor *ad_div(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(c, AD_OP_DIV, a, b, NULL);
}
ad_tensor *ad_pow(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(c, AD_OP_POW, a, b, NULL);
}
ad_tensor *ad_maximum(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(c, AD_OP_MAXIMUM, a, b, NULL);
}
ad_tensor *ad_minimum(ad_ctx *c, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(c, AD_OP_MINIMUM, a, b, NULL);
}

static ad_tensor *cmp(ad_ctx *c, ad_tensor *a, ad_tensor *b, int mode) {
  ad_attrs at = {.i = {mode}};
  return ad_apply2(c, AD_OP_CMP, a, b, &at);
}
ad_tensor *ad_eq(ad_ctx *c, ad_tensor *a, ad_tensor *b) { return cmp(c, a, b, AD_CMP_EQ); }
ad_tensor *ad_gt(ad_ctx *c, ad_tensor *a, ad_tensor *b) { return cmp(c, a, b, AD_CMP_GT); }
ad_tensor *ad_ge(ad_ctx *c, ad_tensor *a, ad_tensor *b) { return cmp(c, a, b, AD_CMP_GE); }
ad_tensor *ad_lt(ad_ctx *c, ad_tensor *a, ad_tensor *b) { return cmp(c, a, b, AD_CMP_LT); }
ad_tensor *ad_le(ad_ctx *c, ad_tensor *a, ad_tensor *b) { return cmp(c, a, b, AD_CMP_LE); }

ad_tensor *ad_where(ad_ctx *c, ad_tensor *cond, ad_tensor *a, ad_tensor *b) {
  ad_tensor *in[3] = {cond, a, b};
  return ad_op_apply(c, AD_OP_WHERE, 3, in, NULL);
}

static ad_tensor *with_scalar(ad_ctx *c, int op, ad_tensor *x, double s) {
  ad_attrs at = {.f = {s}};
  return ad_apply1(c, op, x, &at);
}
ad_tensor *ad_add_scalar(ad_ctx *c, ad_tensor *x, double s) {
  return with_scalar(c, AD_OP_ADD_SCALAR, x, s);
}
ad_tensor *ad_mul_scalar(ad_ctx *c, ad_tensor *x, double s) {
  return with_scalar(c, AD_OP_MUL_SCALAR, x, s);
}
ad_tensor *ad_pow_scalar(ad_ctx *c, ad_tensor *x, double p) {
  return with_scalar(c, AD_OP_POW_SCALAR, x, p);
}
ad_tensor *ad_sub_scalar(ad_ctx *c, ad_tensor *x, double s) { return ad_add_scalar(c, x, -s); }
ad_tensor *ad_rsub_scalar(ad_ctx *c, ad_tensor *x, double s) {
  return ad_add_scalar(c, ad_neg(c, x), s);
}
ad_tensor *ad_div_scalar(ad_ctx *c, ad_tensor *x, double s) {
  if (c && s == 0) {
    ad_set_error(c, AD_ERR_ARG, "div_scalar: division by zero");
    return NULL;
  }
  return ad_mul_scalar(c, x, 1.0 / s);
}
ad_tensor *ad_leaky_relu(ad_ctx *c, ad_tensor *x, double alpha) {
  return with_scalar(c, AD_OP_LEAKY_RELU, x, alpha);
}
ad_tensor *ad_cast(ad_ctx *c, ad_tensor *x, ad_dtype dt) {
  if (x && x->dtype == dt) return x;
  ad_attrs at = {.i = {dt}};
  return ad_apply1(c, AD_OP_CAST, x, &at);
}

#define UNARY_BUILDER(NAME, OP)                                                                    \
  ad_tensor *ad_##NAME(ad_ctx *c, ad_tensor *x) { return ad_apply1(c, OP, x, NULL); }
UNARY_BUILDER(neg, AD_OP_NEG)
UNARY_BUILDER(exp, AD_OP_EXP)
UNARY_BUILDER(log, AD_OP_LOG)
UNARY_BUILDER(sqrt, AD_OP_SQRT)
UNARY_BUILDER(abs, AD_OP_ABS)
UNARY_BUILDER(sin, AD_OP_SIN)
UNARY_BUILDER(cos, AD_OP_COS)
UNARY_BUILDER(tanh, AD_OP_TANH)
UNARY_BUILDER(sigmoid, AD_OP_SIGMOID)
UNARY_BUILDER(relu, AD_OP_RELU)
UNARY_BUILDER(gelu, AD_OP_GELU)
UNARY_BUILDER(softplus, AD_OP_SOFTPLUS)
UNARY_BUILDER(erf, AD_OP_ERF)
UNARY_BUILDER(square, AD_OP_SQUARE)

/* ------------------------------------------------------ gradcheck samples */

ad_tensor *ad_sample_tensor(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int ndim, const int64_t *shape,
                            double lo, double hi, bool grad) {
  ad_tensor *t = ad_rand(ctx, rng, dt, ndim, shape, lo, hi);
  if (t && grad) ad_tensor_set_requires_grad(t, true);
  return t;
}

/* Values of magnitude in [lo, hi] with random signs. */
static ad_tensor *sample_signed(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int ndim,
                                const int64_t *shape, double lo, double hi) {
  ad_tensor *t = ad_sample_tensor(ctx, rng, dt, ndim, shape, lo, hi, true);
  for (int64_t i = 0; t && i < t->size; i++)
    if (ad_rng_uniform(rng) < 0.5) ad_tensor_set(t, i, -ad_tensor_get(t, i));
  return t;
}

/* Broadcasting shape pairs that binary samples walk through. */
static const struct {
  int na, nb;
  int64_t a[3], b[3];
} bin_cases[] = {
    {2, 2, {3, 4}, {3, 4}},    /* same shape */
    {2, 1, {3, 4}, {4}},       /* row broadcast */
    {3, 2, {2, 1, 3}, {4, 1}}, /* both sides broadcast */
    {0, 2, {0}, {2, 3}},       /* scalar on the left */
};

static int sample_binary_range(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in,
                               double alo, double ahi, double blo, double bhi, bool signed_b) {
  if (v >= (int)(sizeof bin_cases / sizeof bin_cases[0])) return 0;
  in[0] = ad_sample_tensor(ctx, rng, dt, bin_cases[v].na, bin_cases[v].a, alo, ahi, true);
  in[1] = signed_b
              ? sample_signed(ctx, rng, dt, bin_cases[v].nb, bin_cases[v].b, blo, bhi)
              : ad_sample_tensor(ctx, rng, dt, bin_cases[v].nb, bin_cases[v].b, blo, bhi, true);
  return in[0] && in[1] ? 2 : -1;
}

int sample_binary(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  (void)at;
  return sample_binary_range(ctx, rng, dt, v, in, -2, 2, -2, 2, false);
}

int sample_div(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  (void)at;
  return sample_binary_range(ctx, rng, dt, v, in, -2, 2, 0.5, 2, true);
}

int sample_pow(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  (void)at;
  return sample_binary_range(ctx, rng, dt, v, in, 0.5, 2, -2, 2, false);
}

/* a far from b so that max/min have no ties within the FD step */
int sample_apart(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  (void)at;
  int k = sample_binary_range(ctx, rng, dt, v, in, 1, 2, -0.5, 0.5, false);
  for (int64_t i = 0; k > 0 && i < in[0]->size; i++)
    if (ad_rng_uniform(rng) < 0.5) ad_tensor_set(in[0], i, -ad_tensor_get(in[0], i));
  return k;
}

/* x (the second input) kept away from the kink at 0 */
int sample_relu_backward(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in,
                         ad_attrs *at) {
  (void)at;
  return sample_binary_range(ctx, rng, dt, v, in, -2, 2, 0.2, 2, true);
}

int sample_where(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  (void)at;
  if (v > 1) return 0;
  int64_t s[2] = {3, 4}, r[1] = {4};
  in[0] = ad_sample_tensor(ctx, rng, dt, 2, s, 0, 1, false);
  for (int64_t i = 0; in[0] && i < in[0]->size; i++)
    ad_tensor_set(in[0], i, ad_tensor_get(in[0], i) < 0.5);
  in[1] = ad_sample_tensor(ctx, rng, dt, 2, s, -2, 2, true);
  in[2] = ad_sample_tensor(ctx, rng, dt, v ? 1 : 2, v ? r : s, -2, 2, true);
  return in[0] && in[1] && in[2] ? 3 : -1;
}

static const struct {
  int n;
  int64_t s[3];
} un_cases[] = {{2, {3, 4}}, {3, {2, 3, 2}}, {0, {0}}};

static int sample_unary_range(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in,
                              double lo, double hi, bool sign) {
  if (v >= (int)(sizeof un_cases / sizeof un_cases[0])) return 0;
  in[0] = sign ? sample_signed(ctx, rng, dt, un_cases[v].n, un_cases[v].s, lo, hi)
               : ad_sample_tensor(ctx, rng, dt, un_cases[v].n, un_cases[v].s, lo, hi, true);
  return in[0] ? 1 : -1;
}

int sample_unary(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  at->f[0] = 0.75; /* the scalar of add_scalar / mul_scalar */
  return sample_unary_range(ctx, rng, dt, v, in, -2, 2, false);
}

int sample_positive(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  (void)at;
  return sample_unary_range(ctx, rng, dt, v, in, 0.5, 2, false);
}

int sample_nonzero(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  (void)at;
  return sample_unary_range(ctx, rng, dt, v, in, 0.2, 2, true);
}

int sample_leaky(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  at->f[0] = 0.1;
  return sample_unary_range(ctx, rng, dt, v, in, 0.2, 2, true);
}

int sample_pow_scalar(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  static const double p[] = {2.0, -1.5, 3.5};
  if (v >= 3) return 0;
  at->f[0] = p[v];
  return sample_unary_range(ctx, rng, dt, v, in, 0.5, 2, false);
}

int sample_cast(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int v, ad_tensor **in, ad_attrs *at) {
  (void)dt;
  /* checked toward float64, where central differences are exact enough */
  at->i[0] = AD_F64;
  return sample_unary_range(ctx, rng, dt, v, in, -2, 2, false);
}
