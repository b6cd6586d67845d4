/* op_norm.c: normalisation. batch_norm in training mode is an op (below,
 * after layer_norm's: one pass for the statistics and y, its plain
 * backward one for the sums and one for dx), whose backward under
 * create_graph is made of ops; in evaluation mode it is a composite of the
 * engine's ops. Its running statistics are updated in place, outside the
 * tape, as PyTorch's buffers are. layer_norm and its gradient layer_norm_backward
 * are ops (a loop per row each), whose derivatives are made of the two and
 * of sums, so they differentiate to any order. */
#include "kernels/kernels.h"
#include "ops.h"
#include "vexp.h"

#include <math.h>

/* --------------------------------------------- shared by the ops below
 *
 * Pieces that batch_norm's and group_norm's op blocks (and layer_norm's
 * backward, where it is the same) would otherwise each write out: the
 * shape rule's checks of x and eps, the sample inputs, and storing and
 * setting the gradients. */

/* x (c->in[0]) float with at least nd dims (layout names them), every
 * input of its dtype. */
static ad_status norm_check_x(const ad_call *c, int nd, const char *layout) {
  const ad_tensor *x = c->in[0];
  char a[64];
  if (ad_check_float_same(c->ctx, c->name, c->n, c->in) != AD_OK) return ad_last_status(c->ctx);
  if (x->ndim < nd)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: x %s must have at least %d dims %s", c->name,
                        ad_shape_str(x, a, sizeof a), nd, layout);
  return AD_OK;
}

/* eps (the scalar attribute) finite and >= 0; then y of x's shape and
 * dtype. */
static ad_status norm_out_like_x(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  double eps = c->attrs->scalar;
  if (!(eps >= 0) || !isfinite(eps))
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: eps %g must be finite and >= 0", c->name, eps);
  c->out->dtype = x->dtype;
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  return AD_OK;
}

/* One sample variant: x of nd dims xs, with n - 1 affine inputs (a weight,
 * then a bias) of the affine_nd dims after x's first. */
typedef struct norm_variant {
  int nd, n;
  const int64_t *xs;
} norm_variant;

/* Variant s->variant of the nv in v: x in [-2, 2), the weight in [0.5,
 * 1.5), the bias in [-1, 1), eps 1e-5; 0 past the last. */
static int norm_sample(const ad_sample_call *s, const norm_variant *v, int nv, int affine_nd) {
  if (s->variant >= nv) return 0;
  const int64_t *xs = v[s->variant].xs;
  int n = v[s->variant].n;
  s->attrs->scalar = 1e-5;
  s->in[0] = ad_sample_tensor(s, v[s->variant].nd, xs, -2, 2, true);
  for (int k = 1; k < n; k++)
    s->in[k] = ad_sample_tensor(s, affine_nd, xs + 1, k == 1 ? 0.5 : -1, k == 1 ? 1.5 : 1, true);
  for (int k = 0; k < n; k++)
    if (!s->in[k]) return -1;
  return n;
}

/* t[i] = v in t's dtype (float32 or float64); nothing when t is NULL (a
 * gradient not wanted). Plain stores: fresh results, nothing to note. */
static void norm_store(ad_tensor *t, int64_t i, double v) {
  if (!t) return;
  if (t->dtype == AD_F32)
    ((float *)t->data)[i] = (float)v;
  else
    ((double *)t->data)[i] = v;
}

/* Sets the gradient gin[k] of each input k that needs one, in order, cast
 * to float32 first where to_f32 (a create_graph backward that computed a
 * float32 op's in float64). */
static ad_status norm_set_grads(const ad_call *c, ad_tensor *const *gin, bool to_f32) {
  for (int k = 0; k < c->n; k++) {
    if (!c->needs[k]) continue;
    ad_status r = ad_call_set_grad(c, k, to_f32 ? ad_cast(c->ctx, gin[k], AD_F32) : gin[k]);
    if (r != AD_OK) return r;
  }
  return AD_OK;
}

/* ----------------------------------------------------------- batch_norm
 *
 *   training:  mu = mean_c(x), var = mean_c((x - mu)^2)       (biased)
 *              running_mean = (1 - m) running_mean + m mu
 *              running_var  = (1 - m) running_var  + m var M / (M - 1)
 *   y = (x - mu) / sqrt(var + eps) * weight + bias
 *   eval:      alpha = weight / sqrt(running_var + eps),
 *              y = (x - running_mean) alpha + bias
 *
 * mean_c is the mean over every dim but 1 (N, and H, W, ...), M elements
 * per channel. Training mode is the op batch_norm (the end of the file). */

/* t ([C]) seen as [1, C, 1, ...] for x's rank. */
static ad_tensor *per_channel(ad_ctx *ctx, ad_tensor *t, int ndim, int64_t c) {
  int64_t shape[AD_MAX_DIMS];
  for (int k = 0; k < ndim; k++) shape[k] = k == 1 ? c : 1;
  return ad_reshape(ctx, t, ndim, shape);
}

/* Checks an optional per-channel tensor: a live tensor of ctx, [C], x's
 * dtype. A running statistic that training updates must also be
 * persistent (a buffer): the update writes it in place, outside the tape,
 * so ad_op_apply's checks never see it, and a temporary's memory may hold
 * another tensor after a reset, or be saved for a backward pass. */
static bool check_vec(ad_ctx *ctx, const ad_tensor *t, const char *what, const ad_tensor *x,
                      bool updated) {
  char a[64], b[64];
  if (!t) return true;
  if (!ad_arg_ok(ctx, "batch_norm", what, t)) return false;
  if (updated && !(ad_node_of(t)->flags & AD_NF_PERSISTENT)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "batch_norm: %s is updated in place in training mode, so it must be a "
                 "persistent tensor (a buffer), not an op's result",
                 what);
    return false;
  }
  if (t->ndim != 1 || t->shape[0] != x->shape[1]) {
    ad_set_error(ctx, AD_ERR_SHAPE, "batch_norm: %s %s does not match the %lld channels of x %s",
                 what, ad_shape_str(t, a, sizeof a), (long long)x->shape[1],
                 ad_shape_str(x, b, sizeof b));
    return false;
  }
  if (t->dtype != x->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "batch_norm: %s is %s, x is %s", what, ad_dtype_name(t->dtype),
                 ad_dtype_name(x->dtype));
    return false;
  }
  return true;
}

/* running = (1 - m) running + m stat * scale, elementwise over C values. */
static void update_running(ad_tensor *running, const double *stat, double m, double scale) {
  for (int64_t c = 0; c < running->size; c++)
    ad_tensor_set(running, c, (1 - m) * ad_tensor_get(running, c) + m * stat[c] * scale);
}

/* 1 / sqrt(var + eps) of the batch's biased variance var ([1, C, 1, ...]),
 * but 0 for a channel whose var + eps is 0 (eps 0 and equal values), as
 * PyTorch's training mode: that channel's y is then its bias, and its
 * gradients finite (0 to x and weight). The mask is a constant, so the
 * derivative through var is that of the pow where it is kept, 0 where not. */
static ad_tensor *inv_std(ad_ctx *ctx, ad_tensor *var, double eps) {
  ad_tensor *v = ad_add_scalar(ctx, var, eps);
  bool any = false;
  for (int64_t c = 0; v && c < v->size; c++) any |= ad_tensor_get(v, c) == 0;
  if (!any) return ad_pow_scalar(ctx, v, -0.5);
  ad_tensor *zero = ad_zeros_like(ctx, v), *keep = ad_zeros_like(ctx, v);
  if (!zero || !keep) return NULL;
  for (int64_t c = 0; c < v->size; c++) {
    bool z = ad_tensor_get(v, c) == 0;
    ad_tensor_set(zero, c, z), ad_tensor_set(keep, c, !z);
  }
  return ad_mul(ctx, ad_pow_scalar(ctx, ad_add(ctx, v, zero), -0.5), keep);
}

ad_tensor *ad_batch_norm(ad_ctx *ctx, ad_tensor *x, ad_tensor *weight, ad_tensor *bias,
                         ad_tensor *running_mean, ad_tensor *running_var, bool training,
                         double momentum, double eps) {
  if (!ctx) return NULL;
  if (!ad_arg_ok(ctx, "batch_norm", "x", x)) return NULL;
  char a[64];
  if (!ad_is_float(x->dtype) || x->ndim < 2) {
    ad_set_error(ctx, x->ndim < 2 ? AD_ERR_SHAPE : AD_ERR_DTYPE,
                 "batch_norm: x %s %s must be float with at least 2 dims [N, C, ...]",
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
    return NULL;
  }
  if (!check_vec(ctx, weight, "weight", x, false) || !check_vec(ctx, bias, "bias", x, false) ||
      !check_vec(ctx, running_mean, "running_mean", x, training) ||
      !check_vec(ctx, running_var, "running_var", x, training))
    return NULL;
  if (!(eps >= 0) || !isfinite(eps) || !(momentum >= 0 && momentum <= 1)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "batch_norm: eps %g must be finite and >= 0, momentum %g in [0, 1]", eps,
                 momentum);
    return NULL;
  }
  if ((running_mean == NULL) != (running_var == NULL)) {
    ad_set_error(ctx, AD_ERR_ARG, "batch_norm: give both running statistics or neither");
    return NULL;
  }
  if (training && running_mean &&
      (running_mean == running_var || running_mean == x || running_mean == weight ||
       running_mean == bias || running_var == x || running_var == weight || running_var == bias)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "batch_norm: the running statistics are updated in place in training mode, so "
                 "they must be two tensors other than x, weight and bias");
    return NULL;
  }
  int nd = x->ndim;
  int64_t C = x->shape[1], M = C ? x->size / C : 0;
  ad_tensor *y;
  bool stats = training && x->size > 0; /* an empty batch has none, and changes nothing */
  if (training && M == 1) { /* PyTorch refuses too: one value has no unbiased variance */
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "batch_norm: x %s has 1 value(s) per channel; training needs more than 1",
                 ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  double *st = NULL; /* the batch's mean and variance, for the running statistics */
  if (training && !stats) {
    y = ad_mul_scalar(ctx, x, 1.0); /* empty, as PyTorch's: a result, not x itself */
    if (weight) y = ad_mul(ctx, y, per_channel(ctx, weight, nd, C)); /* (their gradients: 0) */
    if (bias) y = ad_add(ctx, y, per_channel(ctx, bias, nd, C));
  } else if (training) {
    if (running_mean && !(st = ad_arena_alloc(ctx, 2 * (size_t)C * sizeof(double)))) return NULL;
    ad_attrs at = {.scalar = eps};
    ad_tensor *in[3] = {x, weight, bias};
    ctx->bn_stats = st;
    y = ad_op_apply(ctx, AD_OP_BATCH_NORM, bias && weight ? 3 : weight ? 2 : 1, in, &at);
    ctx->bn_stats = NULL;
    if (bias && !weight) y = ad_add(ctx, y, per_channel(ctx, bias, nd, C));
  } else {
    if (!running_mean) {
      ad_set_error(ctx, AD_ERR_ARG, "batch_norm: evaluation mode needs the running statistics");
      return NULL;
    }
    /* per channel alpha = weight / sqrt(var + eps), then y = (x - mean)
     * alpha + bias: one pass over x (channel_affine; four for (x - mean) s
     * weight + bias). Not PyTorch's CPU inference form x alpha + (bias - mean
     * alpha) (two passes): weight's gradient there is s (sum dy x - mean
     * sum dy), which cancels where the mean is large against the spread
     * (float32, mean 3000, spread 1: 0.7% off; PyTorch's backward takes
     * x - mean), and so does y. */
    ad_tensor *alpha = ad_pow_scalar(ctx, ad_add_scalar(ctx, running_var, eps), -0.5);
    if (weight) alpha = ad_mul(ctx, weight, alpha);
    /* (x - mean) alpha + bias in one pass: the op channel_affine */
    ad_tensor *in[4] = {x, running_mean, alpha, bias};
    y = ad_op_apply(ctx, AD_OP_CHANNEL_AFFINE, bias ? 4 : 3, in, NULL);
  }
  if (y && st) { /* buffers: in place, not recorded; only on success */
    /* noted first (an op of this tape may have read them: tape.c's check),
     * so that the writes below cannot fail */
    if (ad_note_write(ad_node_of(running_mean), "batch_norm") != AD_OK ||
        ad_note_write(ad_node_of(running_var), "batch_norm") != AD_OK)
      return NULL;
    update_running(running_mean, st, momentum, 1.0);
    update_running(running_var, st + C, momentum, (double)M / (double)(M - 1));
  }
  return y;
}

/* ----------------------------------------------------------- layer_norm
 *
 *   mu = mean_k(x), var = mean_k((x - mu)^2)     (biased, over the last k dims)
 *   xhat = (x - mu) s,  s = 1 / sqrt(var + eps),  y = xhat * weight + bias
 *   dx = layer_norm_backward(dy, x, weight)
 *   dweight = sum over rows of dy xhat,  dbias = sum over rows of dy
 *
 * mean_k is the mean over the normalized shape (the last k dims, M
 * elements), one per row. Both ops are one loop per row, in double for
 * either dtype; xhat in the backward is layer_norm(x) without affine. */

/* Checks an optional weight or bias: the normalized shape, x's dtype. */
static ad_status check_affine(const ad_call *c, const ad_tensor *x, const ad_tensor *t,
                              const char *what) {
  const ad_layer_norm_attrs *at = &c->attrs->layer_norm;
  char a[64], b[64];
  bool ok = t->ndim == at->ndim;
  for (int k = 0; ok && k < at->ndim; k++) ok = t->shape[k] == at->dims[k];
  if (!ok)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: %s %s is not the normalized shape (the last %d dims of x %s)", c->name,
                        what, ad_shape_str(t, a, sizeof a), at->ndim, ad_shape_str(x, b, sizeof b));
  if (t->dtype != x->dtype)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: %s is %s, x is %s", c->name, what,
                        ad_dtype_name(t->dtype), ad_dtype_name(x->dtype));
  return AD_OK;
}

/* The shape rule of both ops: x float, ending with the normalized shape,
 * eps finite and >= 0; the inputs before x (layer_norm_backward's dy) of
 * x's shape and dtype, those after it (weight, bias) of the normalized
 * shape. */
static ad_status ln_shape(const ad_call *c, int xi) {
  const ad_tensor *x = c->in[xi];
  const ad_layer_norm_attrs *at = &c->attrs->layer_norm;
  char a[64], b[64], ns[160];
  if (ad_check_float_same(c->ctx, c->name, xi + 1, c->in) != AD_OK) return ad_last_status(c->ctx);
  if (at->ndim < 1 || at->ndim > AD_MAX_DIMS)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: normalized_shape has %d dims; 1..%d are allowed",
                        c->name, at->ndim, AD_MAX_DIMS);
  int len = snprintf(ns, sizeof ns, "[");
  for (int k = 0; k < at->ndim && len > 0 && (size_t)len < sizeof ns; k++)
    len +=
        snprintf(ns + len, sizeof ns - (size_t)len, "%s%lld", k ? "," : "", (long long)at->dims[k]);
  if (len > 0 && (size_t)len < sizeof ns) snprintf(ns + len, sizeof ns - (size_t)len, "]");
  bool ok = at->ndim <= x->ndim;
  for (int k = 0; ok && k < at->ndim; k++) ok = x->shape[x->ndim - at->ndim + k] == at->dims[k];
  if (!ok)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: normalized_shape %s does not match the last %d dims of x %s", c->name,
                        ns, at->ndim, ad_shape_str(x, a, sizeof a));
  if (!(at->eps >= 0) || !isfinite(at->eps))
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: eps %g must be finite and >= 0", c->name, at->eps);
  if (xi && !ad_same_shape(c->in[0], x))
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: dy %s and x %s differ", c->name,
                        ad_shape_str(c->in[0], a, sizeof a), ad_shape_str(x, b, sizeof b));
  static const char *const what[2] = {"weight", "bias"};
  for (int k = xi + 1; k < c->n; k++) {
    ad_status st = check_affine(c, x, c->in[k], what[k - xi - 1]);
    if (st != AD_OK) return st;
  }
  c->out->dtype = x->dtype;
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  return AD_OK;
}

static ad_status layer_norm_shape(const ad_call *c) { return ln_shape(c, 0); }

/* Elements per row (M) and rows of x for attrs at; 0 rows when M is 0. */
static int64_t ln_rows(const ad_tensor *x, const ad_layer_norm_attrs *at, int64_t *M) {
  *M = 1;
  for (int k = 0; k < at->ndim; k++) *M *= at->dims[k];
  return *M ? x->size / *M : 0;
}

/* The sum of f(i) for i in 0..n-1 in double, in 16 interleaved partial
 * sums (element i in partial i mod 16) added pairwise at the end
 * (LN_FOLD): the loop over the 16 vectorizes, in the row functions' clones
 * for AVX-512 and AVX2 (CELL_CLONES, vexp.h) as in the baseline, with the
 * same bits on each and on every run. f reads the index i. A row of at
 * most 16 is summed as the chain f(0) + f(1) + ... from +0 (which NaN an
 * addition of two NaNs returns is the compiler's choice of operand order,
 * in these loops as in the others): for rows of 16 and fewer the
 * partials' setup was most of the work. */
#define LN_SUM(out, n, f)                                                                          \
  do {                                                                                             \
    if ((n) <= 16) {                                                                               \
      double s_ = 0;                                                                               \
      for (int64_t i = 0; i < (n); i++) s_ += (f);                                                 \
      (out) = s_;                                                                                  \
      break;                                                                                       \
    }                                                                                              \
    double p_[16] = {0};                                                                           \
    int64_t b_ = 0;                                                                                \
    for (; b_ + 16 <= (n); b_ += 16)                                                               \
      for (int k_ = 0; k_ < 16; k_++) {                                                            \
        int64_t i = b_ + k_;                                                                       \
        p_[k_] += (f);                                                                             \
      }                                                                                            \
    for (int64_t i = b_; i < (n); i++) p_[i - b_] += (f);                                          \
    LN_FOLD(out, p_);                                                                              \
  } while (0)

/* out = the sum of the 16 partials p_: partial k plus partial k + 8, then
 * k + 4, k + 2 and k + 1 of those, a tree of depth 4 (a row's next pass
 * waits on it, and a chain of 15 additions takes 15 additions' latency). */
#define LN_FOLD(out, p_)                                                                           \
  do {                                                                                             \
    double h_[8];                                                                                  \
    for (int k_ = 0; k_ < 8; k_++) h_[k_] = (p_)[k_] + (p_)[k_ + 8];                               \
    for (int k_ = 0; k_ < 4; k_++) h_[k_] += h_[k_ + 4];                                           \
    for (int k_ = 0; k_ < 2; k_++) h_[k_] += h_[k_ + 2];                                           \
    (out) = h_[0] + h_[1];                                                                         \
  } while (0)

/* LN_SUM of f, g and h in one pass. */
#define LN_SUM3(outf, outg, outh, n, f, g, h)                                                      \
  do {                                                                                             \
    if ((n) <= 16) {                                                                               \
      double a_ = 0, b2_ = 0, c_ = 0;                                                              \
      for (int64_t i = 0; i < (n); i++) a_ += (f), b2_ += (g), c_ += (h);                          \
      (outf) = a_, (outg) = b2_, (outh) = c_;                                                      \
      break;                                                                                       \
    }                                                                                              \
    double p_[16] = {0}, q_[16] = {0}, u_[16] = {0};                                               \
    int64_t b_ = 0;                                                                                \
    for (; b_ + 16 <= (n); b_ += 16)                                                               \
      for (int k_ = 0; k_ < 16; k_++) {                                                            \
        int64_t i = b_ + k_;                                                                       \
        p_[k_] += (f);                                                                             \
        q_[k_] += (g);                                                                             \
        u_[k_] += (h);                                                                             \
      }                                                                                            \
    for (int64_t i = b_; i < (n); i++) p_[i - b_] += (f), q_[i - b_] += (g), u_[i - b_] += (h);    \
    LN_FOLD(outf, p_);                                                                             \
    LN_FOLD(outg, q_);                                                                             \
    LN_FOLD(outh, u_);                                                                             \
  } while (0)

/* The row functions of layer_norm and layer_norm_backward take rows of at
 * most LN_MID_MAX elements LN_RB at a time (LN_ROWS_SHORT and
 * LNB_ROWS_SHORT for rows of at most 16, LN_ROWS_BLK and LNB_ROWS_BLK
 * above): each row's sums and coefficients are computed as one row alone
 * computes them, so the bits are the same (but for the sign of a NaN made
 * from NaNs of both signs, which the compiler's operand order picks, and
 * ad.h's reproducibility rule leaves open). Only the order changes: the
 * block's means first, then its other sums, then its outputs, so that the
 * rows' chains (of additions, a division, a square root) are independent
 * and overlap, where a row's steps wait on each other; the block stays in
 * the first- or second-level cache between the passes. LN_RB is the plain
 * backward's LN_GROUP: each of its groups of rows is one block. */
enum { LN_RB = 16, LN_MID_MAX = 256 };

/* The mean and 1 / sqrt(var + eps) of a row of M values, in double (two
 * passes: no cancellation in the variance). */
#define LN_STATS(xr, M, eps, mu, s)                                                                \
  do {                                                                                             \
    double sum_, q_;                                                                               \
    LN_SUM(sum_, M, (double)(xr)[i]);                                                              \
    (mu) = sum_ / (double)(M);                                                                     \
    LN_SUM(q_, M, ((double)(xr)[i] - (mu)) * ((double)(xr)[i] - (mu)));                            \
    (s) = 1.0 / sqrt(q_ / (double)(M) + (eps));                                                    \
  } while (0)

/* y = (x - mu) s [* w [+ b]], row by row (a bias comes with a weight:
 * ad_layer_norm adds a bias alone after the op): the affine parts chosen
 * per call, not per element, so that the loop vectorizes. */
#define LN_ROWS(T, EXPR)                                                                           \
  {                                                                                                \
    int64_t r = r0;                                                                                \
    if (M <= 16)                                                                                   \
      LN_ROWS_SHORT(T, EXPR)                                                                       \
    else if (M <= LN_MID_MAX)                                                                      \
      LN_ROWS_BLK(T, EXPR)                                                                         \
    for (; r < r1; r++) {                                                                          \
      const T *xr = X + r * M;                                                                     \
      T *yr = Y + r * M;                                                                           \
      double mu, s;                                                                                \
      LN_STATS(xr, M, at->eps, mu, s);                                                             \
      LN_Y(T, EXPR)                                                                                \
    }                                                                                              \
  }
/* Row yr's y (xr and its mu and s in scope). */
#define LN_Y(T, EXPR)                                                                              \
  for (int64_t i = 0; i < M; i++) {                                                                \
    double v = ((double)xr[i] - mu) * s;                                                           \
    yr[i] = (T)(EXPR);                                                                             \
  }
/* LN_ROWS' rows of at most 16 elements LN_RB at a time from r on, their
 * chains taken across the block's rows (LNB_ROWS_SHORT's reason). */
#define LN_ROWS_SHORT(T, EXPR)                                                                     \
  for (; r + LN_RB <= r1; r += LN_RB) {                                                            \
    double muB[LN_RB] = {0}, sB[LN_RB] = {0};                                                      \
    for (int64_t i = 0; i < M; i++)                                                                \
      for (int k = 0; k < LN_RB; k++) muB[k] += (double)X[(r + k) * M + i];                        \
    for (int k = 0; k < LN_RB; k++) muB[k] /= (double)M;                                           \
    for (int64_t i = 0; i < M; i++)                                                                \
      for (int k = 0; k < LN_RB; k++) {                                                            \
        double d = (double)X[(r + k) * M + i] - muB[k];                                            \
        sB[k] += d * d;                                                                            \
      }                                                                                            \
    LN_BLK_Y(T, EXPR)                                                                              \
  }
/* muB: the means of the block's LN_RB rows from r, each row's LN_SUM. */
#define LN_BLK_MEANS(T)                                                                            \
  for (int k = 0; k < LN_RB; k++) {                                                                \
    const T *xr = X + (r + k) * M;                                                                 \
    LN_SUM(muB[k], M, (double)xr[i]);                                                              \
  }                                                                                                \
  for (int k = 0; k < LN_RB; k++) muB[k] /= (double)M;
/* LN_ROWS' rows LN_RB at a time from r on (r advanced past them): the
 * block's means, then its 1 / sqrt(var + eps), then its y, each row's as
 * LN_STATS computes them (LNB_ROWS_BLK's reason). */
#define LN_ROWS_BLK(T, EXPR)                                                                       \
  for (; r + LN_RB <= r1; r += LN_RB) {                                                            \
    double muB[LN_RB], sB[LN_RB];                                                                  \
    LN_BLK_MEANS(T)                                                                                \
    for (int k = 0; k < LN_RB; k++) {                                                              \
      const T *xr = X + (r + k) * M;                                                               \
      double mu = muB[k];                                                                          \
      LN_SUM(sB[k], M, ((double)xr[i] - mu) * ((double)xr[i] - mu));                               \
    }                                                                                              \
    LN_BLK_Y(T, EXPR)                                                                              \
  }
/* The y of a block's LN_RB rows from r, from their means muB and sums of
 * squared deviations sB (turned into 1 / sqrt(var + eps) for all the rows
 * first), as LN_ROWS'. */
#define LN_BLK_Y(T, EXPR)                                                                          \
  for (int k = 0; k < LN_RB; k++) sB[k] = 1.0 / sqrt(sB[k] / (double)M + at->eps);                 \
  for (int k = 0; k < LN_RB; k++) {                                                                \
    const T *xr = X + (r + k) * M;                                                                 \
    T *yr = Y + (r + k) * M;                                                                       \
    double mu = muB[k], s = sB[k];                                                                 \
    LN_Y(T, EXPR)                                                                                  \
  }
#define LN_FWD(T)                                                                                  \
  do {                                                                                             \
    const T *X = x->data, *W = w ? w->data : NULL, *B = b ? b->data : NULL;                        \
    T *Y = c->out->data;                                                                           \
    if (W && B)                                                                                    \
      LN_ROWS(T, v *(double)W[i] + (double)B[i])                                                   \
    else if (W)                                                                                    \
      LN_ROWS(T, v *(double)W[i])                                                                  \
    else                                                                                           \
      LN_ROWS(T, v)                                                                                \
  } while (0)

/* Rows [r0, r1) of an op of the family (a range of ad_parallel_for). */
typedef struct ln_job {
  const ad_call *c;
  int64_t M;
} ln_job;

/* Runs fn over rows rows of M elements, on the library's threads when
 * there are enough (rows are independent: the same bits either way). */
static void ln_run(int64_t rows, int64_t M, ad_range_fn fn, ln_job *job) {
  int64_t grain = M ? (32768 + M - 1) / M : rows;
  if (rows <= grain)
    fn(job, 0, rows);
  else
    ad_parallel_for(rows, grain, fn, job);
}

CELL_CLONES static void layer_norm_rows(void *ud, int64_t r0, int64_t r1) {
  const ln_job *j = ud;
  const ad_call *c = j->c;
  const ad_tensor *x = c->in[0], *w = c->n > 1 ? c->in[1] : NULL, *b = c->n > 2 ? c->in[2] : NULL;
  const ad_layer_norm_attrs *at = &c->attrs->layer_norm;
  int64_t M = j->M;
  if (x->dtype == AD_F32)
    LN_FWD(float);
  else
    LN_FWD(double);
}

static void layer_norm_fwd(const ad_call *c) {
  ln_job j = {c, 0};
  int64_t rows =
      ln_rows(c->in[0], &c->attrs->layer_norm, &j.M); /* sets j.M: before ln_run reads it */
  ln_run(rows, j.M, layer_norm_rows, &j);
}

static bool ln_plain_fits(const ad_call *c);
static ad_status layer_norm_bwd_plain(const ad_call *c);

/* dx by the partner op; xhat (for the weight) is layer_norm without affine.
 * The plain backward (no create_graph) of an affine layer_norm takes all
 * three in one pass instead where it can (layer_norm_bwd_plain). */
static ad_status layer_norm_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0], *w = c->n > 1 ? c->in[1] : NULL, *dy = c->gout;
  const ad_layer_norm_attrs *at = &c->attrs->layer_norm;
  ad_status st = AD_OK;
  if (!ctx->grad_enabled && w && (c->needs[1] || (c->n > 2 && c->needs[2])) && ln_plain_fits(c))
    return layer_norm_bwd_plain(c);
  if (c->needs[0]) {
    ad_tensor *in[3] = {dy, x, w};
    st = ad_call_set_grad(c, 0,
                          ad_op_apply(ctx, AD_OP_LAYER_NORM_BACKWARD, w ? 3 : 2, in, c->attrs));
  }
  if (st == AD_OK && c->n > 1 && c->needs[1]) {
    ad_tensor *xhat = ad_op_apply(ctx, AD_OP_LAYER_NORM, 1, &x, c->attrs);
    st = ad_call_set_grad(c, 1, ad_sum_to(ctx, ad_mul(ctx, dy, xhat), at->ndim, at->dims));
  }
  if (st == AD_OK && c->n > 2 && c->needs[2])
    st = ad_call_set_grad(c, 2, ad_sum_to(ctx, dy, at->ndim, at->dims));
  return st;
}

ad_tensor *ad_layer_norm(ad_ctx *ctx, ad_tensor *x, int ndim, const int64_t *normalized_shape,
                         ad_tensor *weight, ad_tensor *bias, double eps) {
  if (!ctx) return NULL;
  if (!x) {
    ad_set_null_error(ctx, "layer_norm: x is NULL");
    return NULL;
  }
  if (ndim < 1 || ndim > AD_MAX_DIMS || !normalized_shape) {
    ad_set_error(ctx, normalized_shape ? AD_ERR_ARG : AD_ERR_NULL,
                 "layer_norm: normalized_shape %s with %d dims; 1..%d are allowed",
                 normalized_shape ? "given" : "is NULL", ndim, AD_MAX_DIMS);
    return NULL;
  }
  ad_attrs at = {.layer_norm = {.ndim = ndim, .eps = eps}};
  for (int k = 0; k < ndim; k++) at.layer_norm.dims[k] = normalized_shape[k];
  ad_tensor *in[3] = {x, weight, bias};
  if (weight || !bias)
    return ad_op_apply(ctx, AD_OP_LAYER_NORM, bias ? 3 : weight ? 2 : 1, in, &at);
  /* a bias without a weight: the op's optional inputs are trailing */
  ad_tensor *y = ad_op_apply(ctx, AD_OP_LAYER_NORM, 1, in, &at);
  if (!y) return NULL;
  char a[64], b[64];
  bool ok = bias->ndim == ndim;
  for (int d = 0; ok && d < ndim; d++) ok = bias->shape[d] == normalized_shape[d];
  if (!ok) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "layer_norm: bias %s is not the normalized shape (the last %d dims of x %s)",
                 ad_shape_str(bias, a, sizeof a), ndim, ad_shape_str(x, b, sizeof b));
    return NULL;
  }
  if (bias->dtype != x->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "layer_norm: bias is %s, x is %s", ad_dtype_name(bias->dtype),
                 ad_dtype_name(x->dtype));
    return NULL;
  }
  return ad_add(ctx, y, bias);
}

/* x [3,4] over the last dim with weight and bias; [2,3,4] over the last two;
 * [2,5] without affine; [2,3,4] with a weight only */
static int layer_norm_sample(const ad_sample_call *s) {
  static const int64_t s2[2] = {3, 4}, s3[3] = {2, 3, 4}, s5[2] = {2, 5};
  static const struct {
    int xnd, k, n;
    const int64_t *xs;
  } v[4] = {{2, 1, 3, s2}, {3, 2, 3, s3}, {2, 1, 1, s5}, {3, 1, 2, s3}};
  if (s->variant > 3) return 0;
  int xnd = v[s->variant].xnd, k = v[s->variant].k, n = v[s->variant].n;
  const int64_t *xs = v[s->variant].xs;
  s->attrs->layer_norm = (ad_layer_norm_attrs){.ndim = k, .eps = 1e-5};
  for (int d = 0; d < k; d++) s->attrs->layer_norm.dims[d] = xs[xnd - k + d];
  s->in[0] = ad_sample_tensor(s, xnd, xs, -2, 2, true);
  for (int j = 1; j < n; j++)
    s->in[j] = ad_sample_tensor(s, k, xs + xnd - k, j == 1 ? 0.5 : -1, j == 1 ? 1.5 : 1, true);
  for (int j = 0; j < n; j++)
    if (!s->in[j]) return -1;
  return n;
}

const ad_op_def ad_def_layer_norm = {
    .name = "layer_norm",
    .arity = 3,
    .min_arity = 1,
    .attrs = AD_ATTRS_LAYER_NORM,
    .shape = layer_norm_shape,
    .forward = layer_norm_fwd,
    .backward = layer_norm_bwd,
    .sample = layer_norm_sample,
    .math = "y = xhat * w + b, xhat = (x - mean_k(x)) / sqrt(var_k(x) + eps): mean_k, var_k "
            "(biased) over the last k dims (normalized_shape), sum_rows over the others",
    .inputs = {"x", "w", "b"},
    .grads = {"layer_norm_backward(dy, x, w)", "sum_rows(dy * xhat)", "sum_rows(dy)"},
};

/* -------------------------------------------------- layer_norm_backward
 *
 *   y = s (gw - mean_k(gw) - xhat mean_k(gw xhat)),  gw = g * weight
 *       (layer_norm's dx for its dy = g; s and xhat as there, of x)
 *   dg = weight * L,  dweight = sum over rows of g L,
 *       L = layer_norm_backward(dy, x) (no weight; dy the incoming gradient)
 *   dx = -(s/M) (rowsum(dy y) xhat + rowsum(dy xhat) y) - s mean_k(gw xhat) L
 *
 * y is linear in gw, and its adjoint in gw is the same map (the Jacobian of
 * xhat in x is symmetric), so L serves dy and weight. In x: s changes by
 * -s^2 xhat / M, xhat by that Jacobian, mean_k(g xhat) by y / M. Those
 * gradients are made of the family's ops (L, layer_norm for xhat) and
 * sums, so every order exists; they are computed in float64 for float32
 * inputs, as second derivatives are rare and their terms cancel. */

static ad_status layer_norm_backward_shape(const ad_call *c) { return ln_shape(c, 1); }

/* Rows [r0, r1) with gw = GW, the incoming gradient times the weight or
 * not (chosen per call, so that the loops vectorize). */
#define LNB_ROWS(T, GW) LNB_ROWS_ACC(T, GW, )
/* LNB_ROWS with the statement ACC after each element's dx (xh: its xhat
 * in double, i its index in the row, gr the row's incoming gradient). */
#define LNB_ROWS_ACC(T, GW, ACC)                                                                   \
  {                                                                                                \
    int64_t r = r0;                                                                                \
    if (M <= 16)                                                                                   \
      LNB_ROWS_SHORT(T, GW, ACC)                                                                   \
    else if (M <= LN_MID_MAX)                                                                      \
      LNB_ROWS_BLK(T, GW, ACC)                                                                     \
    for (; r < r1; r++) LNB_ROW(T, GW, ACC)                                                        \
  }
/* Row yr's dx (xr, gr and its mu, s, mg, mgx in scope), ACC after each
 * element. */
#define LNB_DX(T, GW, ACC)                                                                         \
  for (int64_t i = 0; i < M; i++) {                                                                \
    double xh = ((double)xr[i] - mu) * s;                                                          \
    yr[i] = (T)(s * ((GW)-mg - xh * mgx));                                                         \
    ACC                                                                                            \
  }
/* One row r of LNB_ROWS_ACC. */
#define LNB_ROW(T, GW, ACC)                                                                        \
  {                                                                                                \
    const T *xr = X + r * M, *gr = G + r * M;                                                      \
    T *yr = Y + r * M;                                                                             \
    double mu, s, dev, mg, mgx;                                                                    \
    LN_SUM(mu, M, (double)xr[i]);                                                                  \
    mu /= (double)M;                                                                               \
    LN_SUM3(dev, mg, mgx, M, ((double)xr[i] - mu) * ((double)xr[i] - mu), GW,                      \
            (GW) * ((double)xr[i] - mu));                                                          \
    s = 1.0 / sqrt(dev / (double)M + at->eps);                                                     \
    mg /= (double)M;                                                                               \
    mgx *= s / (double)M;                                                                          \
    LNB_DX(T, GW, ACC)                                                                             \
  }
/* The dx of a block's LN_RB rows from r, from their sums muB (the means),
 * devB, mgB and mgxB (turned into LNB_ROW's s, mg and mgx for all the
 * rows first: their divisions and square roots overlap), in order, as
 * LNB_ROW's. */
#define LNB_BLK_DX(T, GW, ACC)                                                                     \
  for (int k = 0; k < LN_RB; k++) devB[k] = 1.0 / sqrt(devB[k] / (double)M + at->eps);             \
  for (int k = 0; k < LN_RB; k++) mgB[k] /= (double)M, mgxB[k] *= devB[k] / (double)M;             \
  for (int k = 0; k < LN_RB; k++) {                                                                \
    const T *xr = X + (r + k) * M, *gr = G + (r + k) * M;                                          \
    T *yr = Y + (r + k) * M;                                                                       \
    double mu = muB[k], s = devB[k], mg = mgB[k], mgx = mgxB[k];                                   \
    LNB_DX(T, GW, ACC)                                                                             \
  }
/* Rows of at most 16 elements, LN_RB at a time from r on (r advanced past
 * them): each row's sums are LN_SUM's and LN_SUM3's chains (rows of at
 * most 16), the same operations in the same order, so the same bits,
 * but taken across the block's rows element by element, so that the
 * rows' chains are independent and overlap (one row's chain of additions
 * waits on itself; docs/performance.md, "The op scan's second round",
 * for the block sizes tried). Then the rows' dx in order, as LNB_ROW's. */
#define LNB_ROWS_SHORT(T, GW, ACC)                                                                 \
  for (; r + LN_RB <= r1; r += LN_RB) {                                                            \
    double muB[LN_RB] = {0}, devB[LN_RB] = {0}, mgB[LN_RB] = {0}, mgxB[LN_RB] = {0};               \
    for (int64_t i = 0; i < M; i++)                                                                \
      for (int k = 0; k < LN_RB; k++) muB[k] += (double)X[(r + k) * M + i];                        \
    for (int k = 0; k < LN_RB; k++) muB[k] /= (double)M;                                           \
    for (int64_t i = 0; i < M; i++)                                                                \
      for (int k = 0; k < LN_RB; k++) {                                                            \
        const T *xr = X + (r + k) * M, *gr = G + (r + k) * M;                                      \
        double d = (double)xr[i] - muB[k];                                                         \
        devB[k] += d * d, mgB[k] += GW, mgxB[k] += (GW)*d;                                         \
      }                                                                                            \
    LNB_BLK_DX(T, GW, ACC)                                                                         \
  }
/* Rows of at most LN_MID_MAX elements, LN_RB at a time from r on (r
 * advanced past them): each row's sums LN_SUM's and LN_SUM3's, so the
 * same bits as LNB_ROW's, but the block's means first, then its other
 * sums, then its dx: the rows' folds of their 16 partials and their
 * divisions are independent and overlap, where a row's steps wait on each
 * other. */
#define LNB_ROWS_BLK(T, GW, ACC)                                                                   \
  for (; r + LN_RB <= r1; r += LN_RB) {                                                            \
    double muB[LN_RB], devB[LN_RB], mgB[LN_RB], mgxB[LN_RB];                                       \
    LN_BLK_MEANS(T)                                                                                \
    for (int k = 0; k < LN_RB; k++) {                                                              \
      const T *xr = X + (r + k) * M, *gr = G + (r + k) * M;                                        \
      double mu = muB[k];                                                                          \
      LN_SUM3(devB[k], mgB[k], mgxB[k], M, ((double)xr[i] - mu) * ((double)xr[i] - mu), GW,        \
              (GW) * ((double)xr[i] - mu));                                                        \
    }                                                                                              \
    LNB_BLK_DX(T, GW, ACC)                                                                         \
  }
#define LNB_FWD(T)                                                                                 \
  do {                                                                                             \
    const T *G = g->data, *X = x->data, *W = w ? w->data : NULL;                                   \
    T *Y = c->out->data;                                                                           \
    if (W)                                                                                         \
      LNB_ROWS(T, (double)gr[i] * (double)W[i])                                                    \
    else                                                                                           \
      LNB_ROWS(T, (double)gr[i])                                                                   \
  } while (0)

CELL_CLONES static void layer_norm_backward_rows(void *ud, int64_t r0, int64_t r1) {
  const ln_job *j = ud;
  const ad_call *c = j->c;
  const ad_tensor *g = c->in[0], *x = c->in[1], *w = c->n > 2 ? c->in[2] : NULL;
  const ad_layer_norm_attrs *at = &c->attrs->layer_norm;
  int64_t M = j->M;
  if (x->dtype == AD_F32)
    LNB_FWD(float);
  else
    LNB_FWD(double);
}

/* Rows of exactly 16 float32 elements: whole blocks of 16 rows by
 * kernels/norm16.c (AVX-512, the same bits), the rest as above. */
static void layer_norm_backward_rows16(void *ud, int64_t r0, int64_t r1) {
  const ln_job *j = ud;
  const ad_call *c = j->c;
  const float *g = c->in[0]->data, *x = c->in[1]->data, *w = c->n > 2 ? c->in[2]->data : NULL;
  int64_t blocks = (r1 - r0) / 16;
  if (!ad_ln16_backward(x + r0 * 16, g + r0 * 16, w, (float *)c->out->data + r0 * 16,
                        c->attrs->layer_norm.eps, blocks))
    blocks = 0;
  if (r0 + blocks * 16 < r1) layer_norm_backward_rows(ud, r0 + blocks * 16, r1);
}

static void layer_norm_backward_fwd(const ad_call *c) {
  ln_job j = {c, 0};
  int64_t rows = ln_rows(c->in[1], &c->attrs->layer_norm, &j.M); /* sets j.M first */
  ln_run(rows, j.M,
         j.M == 16 && c->in[1]->dtype == AD_F32 ? layer_norm_backward_rows16
                                                : layer_norm_backward_rows,
         &j);
}

/* The plain backward of an affine layer_norm (the weight's or the bias's
 * gradient wanted, a frozen weight's too) in one pass over the rows:
 * dx as layer_norm_backward computes it (the same expressions, so the
 * same bits), and dweight = sum over rows of dy xhat, dbias = sum of dy,
 * in double from xhat in double (the recorded form rounds xhat and the
 * product to the dtype first: the two differ in the last bits). Rows go
 * in groups of LN_GROUP (fewer where there are few rows, more where there
 * are many, so that the partials stay within LN_MAX_GROUPS x 2 M doubles:
 * the groups depend on the shape alone); each group sums its rows' dy
 * xhat and dy into its own partials while the row is in cache, and the groups'
 * partials are added in order at the end, so the bits do not depend on
 * the thread count. Used where a group's partials (2 M doubles) fit in
 * a core's second-level cache beside the rows, M <= LN_PLAIN_MAX_M (at
 * 16384 features the one pass still beat the ops' five; at 65536 it no
 * longer did); the others take the ops. */
enum { LN_GROUP = 16, LN_MAX_GROUPS = 256, LN_PLAIN_MAX_M = 16384 };

typedef struct ln_plain_job {
  const ad_call *c;
  int64_t M, rows, group; /* rows per group */
  void *dx;               /* NULL: dx is not needed */
  double *part;           /* [groups][2][M]: sums of dy xhat, of dy */
} ln_plain_job;

static bool ln_plain_fits(const ad_call *c) {
  int64_t M, rows = ln_rows(c->in[0], &c->attrs->layer_norm, &M);
  return M > 0 && M <= LN_PLAIN_MAX_M && rows > 0;
}

#define LNB_PLAIN(T)                                                                               \
  do {                                                                                             \
    const T *G = c->gout->data, *X = c->in[0]->data, *W = c->in[1]->data;                          \
    for (int64_t q = q0; q < q1; q++) {                                                            \
      int64_t r0 = q * j->group, r1 = r0 + j->group < j->rows ? r0 + j->group : j->rows;           \
      double *pw = j->part + q * 2 * M, *pb = pw + M;                                              \
      for (int64_t i = 0; i < 2 * M; i++) pw[i] = 0;                                               \
      if (j->dx) {                                                                                 \
        T *Y = j->dx;                                                                              \
        LNB_ROWS_ACC(T, (double)gr[i] * (double)W[i], pw[i] += (double)gr[i] * xh;                 \
                     pb[i] += (double)gr[i];)                                                      \
      } else {                                                                                     \
        for (int64_t r = r0; r < r1; r++) {                                                        \
          const T *xr = X + r * M, *gr = G + r * M;                                                \
          double mu, s;                                                                            \
          LN_STATS(xr, M, at->eps, mu, s);                                                         \
          for (int64_t i = 0; i < M; i++) {                                                        \
            pw[i] += (double)gr[i] * (((double)xr[i] - mu) * s);                                   \
            pb[i] += (double)gr[i];                                                                \
          }                                                                                        \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
  } while (0)

CELL_CLONES static void ln_plain_groups(void *ud, int64_t q0, int64_t q1) {
  const ln_plain_job *j = ud;
  const ad_call *c = j->c;
  const ad_layer_norm_attrs *at = &c->attrs->layer_norm;
  int64_t M = j->M;
  if (c->in[0]->dtype == AD_F32)
    LNB_PLAIN(float);
  else
    LNB_PLAIN(double);
}

static ad_status layer_norm_bwd_plain(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  const ad_tensor *x = c->in[0], *w = c->in[1];
  ln_plain_job j = {c, 0, 0, LN_GROUP, NULL, NULL};
  j.rows = ln_rows(x, &c->attrs->layer_norm, &j.M);
  if (j.rows < 8 * LN_GROUP) /* at least 8 groups where there are 8 rows */
    j.group = (j.rows + 7) / 8;
  else if (j.rows > LN_MAX_GROUPS * LN_GROUP) /* the partials at most LN_MAX_GROUPS x 2 M */
    j.group = (j.rows + LN_MAX_GROUPS - 1) / LN_MAX_GROUPS;
  int64_t groups = (j.rows + j.group - 1) / j.group;
  ad_tensor *dx = c->needs[0] ? ad_tmp_like(ctx, x) : NULL;
  ad_tensor *dw = c->needs[1] ? ad_tmp_like(ctx, w) : NULL;
  ad_tensor *db = c->n > 2 && c->needs[2] ? ad_tmp_like(ctx, c->in[2]) : NULL;
  int64_t pshape[1] = {groups * 2 * j.M};
  ad_tensor *part = ad_tmp_new(ctx, AD_F64, 1, pshape);
  if ((c->needs[0] && !dx) || (c->needs[1] && !dw) || (c->n > 2 && c->needs[2] && !db) || !part)
    return ad_last_status(ctx);
  j.dx = dx ? dx->data : NULL;
  j.part = part->data;
  int64_t grain = (32768 + j.group * j.M - 1) / (j.group * j.M);
  if (groups <= grain)
    ln_plain_groups(&j, 0, groups);
  else
    ad_parallel_for(groups, grain, ln_plain_groups, &j);
  double *sum = j.part; /* the groups' partials added in order into the first's */
  for (int64_t q = 1; q < groups; q++)
    for (int64_t i = 0; i < 2 * j.M; i++) sum[i] += j.part[q * 2 * j.M + i];
  for (int64_t i = 0; i < j.M; i++) norm_store(dw, i, sum[i]), norm_store(db, i, sum[j.M + i]);
  return norm_set_grads(c, (ad_tensor *[3]){dx, dw, db}, false);
}

static ad_status layer_norm_backward_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  const ad_layer_norm_attrs *at = &c->attrs->layer_norm;
  ad_dtype dt = c->in[1]->dtype;
  ad_tensor *g = c->in[0], *x = c->in[1], *w = c->n > 2 ? c->in[2] : NULL, *y = c->out;
  ad_tensor *dy = c->gout;
  if (dt == AD_F32) {
    g = ad_cast(ctx, g, AD_F64);
    x = ad_cast(ctx, x, AD_F64);
    w = w ? ad_cast(ctx, w, AD_F64) : NULL;
    y = ad_cast(ctx, y, AD_F64);
    dy = ad_cast(ctx, dy, AD_F64);
  }
  int nd = x ? x->ndim : 0, k = at->ndim;
  int64_t st[AD_MAX_DIMS], M;
  ln_rows(c->in[1], at, &M);
  for (int d = 0; d < nd; d++) st[d] = d < nd - k ? x->shape[d] : 1;
  double inv = M ? 1.0 / (double)M : 0.0;
  ad_tensor *in2[2] = {dy, x};
  ad_tensor *L = ad_op_apply(ctx, AD_OP_LAYER_NORM_BACKWARD, 2, in2, c->attrs);
  ad_tensor *gin[3] = {NULL, NULL, NULL};
  if (c->needs[0]) gin[0] = w ? ad_mul(ctx, L, w) : L;
  if (c->n > 2 && c->needs[2]) gin[2] = ad_sum_to(ctx, ad_mul(ctx, g, L), k, at->dims);
  if (c->needs[1]) {
    ad_tensor *xhat = ad_op_apply(ctx, AD_OP_LAYER_NORM, 1, &x, c->attrs);
    ad_tensor *xc = ad_sub(ctx, x, ad_mul_scalar(ctx, ad_sum_to(ctx, x, nd, st), inv));
    ad_tensor *var = ad_mul_scalar(ctx, ad_sum_to(ctx, ad_mul(ctx, xc, xc), nd, st), inv);
    ad_tensor *s = ad_pow_scalar(ctx, ad_add_scalar(ctx, var, at->eps), -0.5);
    ad_tensor *gw = w ? ad_mul(ctx, g, w) : g;
    ad_tensor *mgx = ad_mul_scalar(ctx, ad_sum_to(ctx, ad_mul(ctx, gw, xhat), nd, st), inv);
    ad_tensor *ry = ad_sum_to(ctx, ad_mul(ctx, dy, y), nd, st);
    ad_tensor *rx = ad_sum_to(ctx, ad_mul(ctx, dy, xhat), nd, st);
    ad_tensor *t = ad_add(ctx, ad_mul(ctx, ry, xhat), ad_mul(ctx, rx, y));
    t = ad_mul(ctx, t, ad_mul_scalar(ctx, s, -inv));
    gin[1] = ad_sub(ctx, t, ad_mul(ctx, ad_mul(ctx, s, mgx), L));
  }
  return norm_set_grads(c, gin, dt == AD_F32);
}

/* g, x [2,3,4] over the last dim (with a weight) and over the last two */
static int layer_norm_backward_sample(const ad_sample_call *s) {
  static const int64_t xs[3] = {2, 3, 4};
  if (s->variant > 1) return 0;
  int k = s->variant ? 2 : 1;
  s->attrs->layer_norm = (ad_layer_norm_attrs){.ndim = k, .eps = 1e-5};
  for (int d = 0; d < k; d++) s->attrs->layer_norm.dims[d] = xs[3 - k + d];
  s->in[0] = ad_sample_tensor(s, 3, xs, -1, 1, true);
  s->in[1] = ad_sample_tensor(s, 3, xs, -2, 2, true);
  int n = 2;
  if (!s->variant) s->in[n++] = ad_sample_tensor(s, 1, xs + 2, 0.5, 1.5, true);
  for (int j = 0; j < n; j++)
    if (!s->in[j]) return -1;
  return n;
}

const ad_op_def ad_def_layer_norm_backward = {
    .name = "layer_norm_backward",
    .arity = 3,
    .min_arity = 2,
    .attrs = AD_ATTRS_LAYER_NORM,
    .shape = layer_norm_backward_shape,
    .forward = layer_norm_backward_fwd,
    .backward = layer_norm_backward_bwd,
    .sample = layer_norm_backward_sample,
    .math = "y = s (gw - mean_k(gw) - xhat mean_k(gw xhat)), gw = g * w, s = 1 / sqrt(var_k(x) + "
            "eps), xhat = (x - mean_k(x)) s",
    .inputs = {"g", "x", "w"},
    .grads = {"w * L, L = layer_norm_backward(dy, x)",
              "-s (mean_k(dy y) xhat + mean_k(dy xhat) y) - s mean_k(gw xhat) L",
              "sum_rows(g * L)"},
};

/* ------------------------------ shared by the batch_norm and group_norm ops
 *
 * Both run the same passes over a channel (batch_norm) or a row
 * (group_norm) of M values: the mean mu, then the sums of (x - mu)^2, g
 * and g (x - mu) (g the incoming gradient, times the weight), then y or
 * dx from a few coefficients. */

/* Of a channel or row: dx = dy a - b0 - (x - mu) k2 (a: s times its weight)
 * from sg, the sum of g, and sgxs, the sum of g (x - mu) s, over its M
 * values: dx = s (g - mean(g) - xhat mean(g xhat)). */
static void norm_dx_coef(double s, double sg, double sgxs, int64_t M, double *b0, double *k2) {
  double mg = M ? sg / (double)M : 0, mgx = M ? sgxs / (double)M : 0;
  *b0 = s * mg, *k2 = s * s * mgx;
}

/* What the loops of either op read and write. */
typedef struct norm_data {
  double eps;
  bool f32;
  const void *x, *dy, *w, *b; /* dy NULL: the forward */
  void *y;                    /* the forward's y, or the backward's dx (NULL: not wanted) */
} norm_data;

/* The forward's data of call c (x, weight, bias; y). */
static void norm_fwd_data(const ad_call *c, norm_data *d) {
  d->x = c->in[0]->data;
  d->w = c->n > 1 ? c->in[1]->data : NULL;
  d->b = c->n > 2 ? c->in[2]->data : NULL;
  d->y = c->out->data;
}

/* The plain backward's results of call c, g = {dx, dw, db} (NULL where not
 * wanted), and a scratch of n doubles, allocated in the order dx, scratch,
 * dw, db; then its data (x, dy, weight; dx as y). */
static ad_status norm_bwd_data(const ad_call *c, ad_tensor *g[3], int64_t n, double **scratch,
                               norm_data *d) {
  ad_ctx *ctx = c->ctx;
  g[0] = c->needs[0] ? ad_tmp_like(ctx, c->in[0]) : NULL;
  ad_tensor *t = ad_tmp_new(ctx, AD_F64, 1, &n);
  g[1] = c->n > 1 && c->needs[1] ? ad_tmp_like(ctx, c->in[1]) : NULL;
  g[2] = c->n > 2 && c->needs[2] ? ad_tmp_like(ctx, c->in[2]) : NULL;
  if ((c->needs[0] && !g[0]) || !t || (c->n > 1 && c->needs[1] && !g[1]) ||
      (c->n > 2 && c->needs[2] && !g[2]))
    return ad_last_status(ctx);
  *scratch = t->data;
  d->x = c->in[0]->data;
  d->dy = c->gout->data;
  d->w = c->n > 1 ? c->in[1]->data : NULL;
  d->y = g[0] ? g[0]->data : NULL;
  return AD_OK;
}

/* t, u, v: the sums of (x - mu)^2, dy and dy (x - mu) over the n values of
 * xr and dr (of type T) in one pass (LN_SUM3's order). */
#define NORM_SUMS(t, u, v, n, xr, dr, mu)                                                          \
  LN_SUM3(t, u, v, n, ((double)(xr)[i] - (mu)) * ((double)(xr)[i] - (mu)), (double)(dr)[i],        \
          (double)(dr)[i] * ((double)(xr)[i] - (mu)))

/* y = (x - mu) a + b0 over n values of xr into yr (of type T). */
#define NORM_Y(T, yr, xr, n, mu, a, b0)                                                            \
  for (int64_t i = 0; i < (n); i++) (yr)[i] = (T)(((double)(xr)[i] - (mu)) * (a) + (b0))

/* dx = dy a - b0 - (x - mu) k2 over n values of dr and xr into yr (of
 * type T). */
#define NORM_DX(T, yr, dr, xr, n, mu, a, b0, k2)                                                   \
  for (int64_t i = 0; i < (n); i++)                                                                \
  (yr)[i] = (T)((double)(dr)[i] * (a) - (b0) - ((double)(xr)[i] - (mu)) * (k2))

/* ------------------------------------------------------ batch_norm (op)
 *
 *   y = (x - mu) s w + b,  mu = mean_c(x),  s = 1 / sqrt(var_c(x) + eps)
 *       (var biased; s = 0 where var + eps is 0: y is then b, as PyTorch)
 *   dx = s (g - mean_c(g) - xhat mean_c(g xhat)),  g = dy w,  xhat = (x - mu) s
 *   dw = sum_c(dy xhat),  db = sum_c(dy)
 *
 * ad_batch_norm's training mode (the batch's statistics), one op where the
 * composite was about twenty passes over x forward and back. x is viewed
 * as [N, C, S], S the product of the dims after 1; the statistics and sums
 * are in double for either dtype, each channel's in an order fixed by the
 * shape (the same bits on any number of threads). Where S >= BN_RUN a
 * channel is N runs of S values, all handled by one thread (the mean, the
 * deviations, then y, while its values are in cache); shorter runs
 * (BatchNorm1d's [N, C]) go down the rows in blocks of at most BN_COLS
 * columns with one partial sum per column, in row order, a channel's the
 * sum of its columns'. The backward without create_graph is the same
 * loops: the mean again, the sums of (x - mu)^2, dy and dy (x - mu) in
 * one pass, then dx. With create_graph it is the formulas above made of
 * ops (the composite's derivative), so every order exists. ad_batch_norm
 * reads the statistics for the running ones from the forward
 * (ctx->bn_stats). */

enum { BN_RUN = 16, BN_COLS = 64 };

typedef struct bn_job {
  norm_data d;
  int64_t N, C, S, cb; /* cb: channels per block of columns (S < BN_RUN) */
  double *stats;       /* forward: [2][C] mean and biased variance, or NULL */
  double *sums;        /* backward: [2][C] dw and db */
} bn_job;

/* The channel's coefficients from its sums over its M values: s, and for
 * y = (x - mu) a + b0 (forward) or dx = dy k1 - k0 - (x - mu) k2 (backward). */
static void bn_coef(const bn_job *j, int64_t c, double wc, double bc, double mu, double dev,
                    double sg, double sgx, double *a, double *b0, double *k2) {
  int64_t M = j->N * j->S;
  double var = M ? dev / (double)M : 0, ve = var + j->d.eps, s = ve == 0 ? 0 : 1.0 / sqrt(ve);
  if (!j->d.dy) {
    if (j->stats) j->stats[c] = mu, j->stats[j->C + c] = var;
    *a = s * wc, *b0 = bc, *k2 = 0;
    return;
  }
  j->sums[c] = sgx * s, j->sums[j->C + c] = sg;
  *a = s * wc;
  norm_dx_coef(s, sg * wc, sgx * s * wc, M, b0, k2);
}

#define BN_KERNELS(T)                                                                              \
  do {                                                                                             \
    const T *X = j->d.x, *G = j->d.dy, *W = j->d.w, *B = j->d.b;                                   \
    T *Y = j->d.y;                                                                                 \
    int64_t N = j->N, C = j->C, S = j->S, M = N * S;                                               \
    double Md = M ? (double)M : 1.0;                                                               \
    if (S >= BN_RUN) {                                                                             \
      for (int64_t c = u0; c < u1; c++) {                                                          \
        double mu = 0, dev = 0, sg = 0, sgx = 0, t, u, v, a, b0, k2;                               \
        for (int64_t n = 0; n < N; n++) {                                                          \
          const T *xr = X + (n * C + c) * S;                                                       \
          LN_SUM(t, S, (double)xr[i]);                                                             \
          mu += t;                                                                                 \
        }                                                                                          \
        mu /= Md;                                                                                  \
        for (int64_t n = 0; n < N; n++) {                                                          \
          const T *xr = X + (n * C + c) * S;                                                       \
          if (!G) {                                                                                \
            LN_SUM(t, S, ((double)xr[i] - mu) * ((double)xr[i] - mu));                             \
          } else {                                                                                 \
            const T *gr = G + (n * C + c) * S;                                                     \
            NORM_SUMS(t, u, v, S, xr, gr, mu);                                                     \
            sg += u, sgx += v;                                                                     \
          }                                                                                        \
          dev += t;                                                                                \
        }                                                                                          \
        bn_coef(j, c, W ? (double)W[c] : 1.0, B ? (double)B[c] : 0.0, mu, dev, sg, sgx, &a, &b0,   \
                &k2);                                                                              \
        for (int64_t n = 0; Y && n < N; n++) {                                                     \
          const T *xr = X + (n * C + c) * S;                                                       \
          T *yr = Y + (n * C + c) * S;                                                             \
          if (!G)                                                                                  \
            NORM_Y(T, yr, xr, S, mu, a, b0);                                                       \
          else {                                                                                   \
            const T *gr = G + (n * C + c) * S;                                                     \
            NORM_DX(T, yr, gr, xr, S, mu, a, b0, k2);                                              \
          }                                                                                        \
        }                                                                                          \
      }                                                                                            \
    } else {                                                                                       \
      for (int64_t q = u0; q < u1; q++) {                                                          \
        int64_t c0 = q * j->cb, c1 = c0 + j->cb < C ? c0 + j->cb : C, K = (c1 - c0) * S;           \
        double p[BN_COLS], r[BN_COLS], h[BN_COLS], mc[BN_COLS], ac[BN_COLS], bc[BN_COLS],          \
            kc[BN_COLS];                                                                           \
        for (int64_t k = 0; k < K; k++) p[k] = r[k] = h[k] = 0;                                    \
        for (int64_t n = 0; n < N; n++) {                                                          \
          const T *xr = X + (n * C + c0) * S;                                                      \
          for (int64_t k = 0; k < K; k++) p[k] += (double)xr[k];                                   \
        }                                                                                          \
        for (int64_t cc = 0; cc < c1 - c0; cc++) {                                                 \
          double mu = 0;                                                                           \
          for (int64_t s = 0; s < S; s++) mu += p[cc * S + s];                                     \
          mu /= Md;                                                                                \
          for (int64_t s = 0; s < S; s++) mc[cc * S + s] = mu, p[cc * S + s] = 0;                  \
        }                                                                                          \
        for (int64_t n = 0; n < N; n++) {                                                          \
          const T *xr = X + (n * C + c0) * S;                                                      \
          if (!G)                                                                                  \
            for (int64_t k = 0; k < K; k++)                                                        \
              p[k] += ((double)xr[k] - mc[k]) * ((double)xr[k] - mc[k]);                           \
          else {                                                                                   \
            const T *gr = G + (n * C + c0) * S;                                                    \
            for (int64_t k = 0; k < K; k++) {                                                      \
              double d = (double)xr[k] - mc[k];                                                    \
              p[k] += d * d, r[k] += (double)gr[k], h[k] += (double)gr[k] * d;                     \
            }                                                                                      \
          }                                                                                        \
        }                                                                                          \
        for (int64_t cc = 0; cc < c1 - c0; cc++) {                                                 \
          double dev = 0, sg = 0, sgx = 0, a, b0, k2;                                              \
          for (int64_t s = 0; s < S; s++)                                                          \
            dev += p[cc * S + s], sg += r[cc * S + s], sgx += h[cc * S + s];                       \
          int64_t c = c0 + cc;                                                                     \
          bn_coef(j, c, W ? (double)W[c] : 1.0, B ? (double)B[c] : 0.0, S ? mc[cc * S] : 0.0, dev, \
                  sg, sgx, &a, &b0, &k2);                                                          \
          for (int64_t s = 0; s < S; s++)                                                          \
            ac[cc * S + s] = a, bc[cc * S + s] = b0, kc[cc * S + s] = k2;                          \
        }                                                                                          \
        for (int64_t n = 0; Y && n < N; n++) {                                                     \
          const T *xr = X + (n * C + c0) * S;                                                      \
          T *yr = Y + (n * C + c0) * S;                                                            \
          if (!G)                                                                                  \
            for (int64_t k = 0; k < K; k++) yr[k] = (T)(((double)xr[k] - mc[k]) * ac[k] + bc[k]);  \
          else {                                                                                   \
            const T *gr = G + (n * C + c0) * S;                                                    \
            for (int64_t k = 0; k < K; k++)                                                        \
              yr[k] = (T)((double)gr[k] * ac[k] - bc[k] - ((double)xr[k] - mc[k]) * kc[k]);        \
          }                                                                                        \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
  } while (0)

/* Units [u0, u1): channels (S >= BN_RUN) or blocks of columns. */
CELL_CLONES static void bn_units(void *ud, int64_t u0, int64_t u1) {
  const bn_job *j = ud;
  if (j->d.f32)
    BN_KERNELS(float);
  else
    BN_KERNELS(double);
}

/* The job for x (and w, b) of call c, without its in- and outputs. */
static bn_job bn_job_of(const ad_call *c, const ad_tensor *x) {
  bn_job j = {.N = x->shape[0], .C = x->shape[1], .S = 1};
  j.d = (norm_data){.eps = c->attrs->scalar, .f32 = x->dtype == AD_F32};
  for (int k = 2; k < x->ndim; k++) j.S *= x->shape[k];
  j.cb = j.S >= BN_COLS || j.S == 0 ? 1 : BN_COLS / j.S;
  return j;
}

static void bn_run(bn_job *j) {
  int64_t units = j->S >= BN_RUN ? j->C : (j->C + j->cb - 1) / j->cb;
  int64_t per = j->N * j->S * (j->S >= BN_RUN ? 1 : j->cb); /* elements of a unit */
  int64_t grain = per ? (32768 + per - 1) / per : units;
  if (units <= grain)
    bn_units(j, 0, units);
  else
    ad_parallel_for(units, grain, bn_units, j);
}

/* x float [N, C, ...], weight and bias [C] of its dtype, eps finite >= 0. */
static ad_status batch_norm_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  char a[64], b[64];
  if (norm_check_x(c, 2, "[N, C, ...]") != AD_OK) return ad_last_status(c->ctx);
  static const char *const what[2] = {"weight", "bias"};
  for (int k = 1; k < c->n; k++)
    if (c->in[k]->ndim != 1 || c->in[k]->shape[0] != x->shape[1])
      return ad_set_error(c->ctx, AD_ERR_SHAPE,
                          "%s: %s %s does not match the %lld channels of x %s", c->name,
                          what[k - 1], ad_shape_str(c->in[k], a, sizeof a), (long long)x->shape[1],
                          ad_shape_str(x, b, sizeof b));
  return norm_out_like_x(c);
}

static void batch_norm_fwd(const ad_call *c) {
  bn_job j = bn_job_of(c, c->in[0]);
  norm_fwd_data(c, &j.d);
  j.stats = c->ctx->bn_stats;
  bn_run(&j);
}

/* The backward with create_graph: the formulas made of ops, in float64
 * for float32 inputs (as layer_norm_backward's: second derivatives are
 * rare, and their sums over a channel cancel). */
static ad_status batch_norm_bwd_ops(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0], *w = c->n > 1 ? c->in[1] : NULL, *dy = c->gout;
  ad_dtype dt = x->dtype;
  int nd = x->ndim;
  int64_t C = x->shape[1], M = C ? x->size / C : 0, st[AD_MAX_DIMS];
  if (dt == AD_F32) {
    x = ad_cast(ctx, x, AD_F64);
    w = w ? ad_cast(ctx, w, AD_F64) : NULL;
    dy = ad_cast(ctx, dy, AD_F64);
  }
  for (int k = 0; k < nd; k++) st[k] = k == 1 ? C : 1;
  double inv = M ? 1.0 / (double)M : 0.0;
  ad_tensor *mu = ad_mul_scalar(ctx, ad_sum_to(ctx, x, nd, st), inv);
  ad_tensor *d = ad_sub(ctx, x, mu);
  ad_tensor *var = ad_mul_scalar(ctx, ad_sum_to(ctx, ad_mul(ctx, d, d), nd, st), inv);
  ad_tensor *s = inv_std(ctx, var, c->attrs->scalar);
  ad_tensor *xhat = ad_mul(ctx, d, s);
  ad_tensor *gin[3] = {NULL, NULL, NULL};
  if (c->needs[0]) {
    ad_tensor *g = w ? ad_mul(ctx, dy, per_channel(ctx, w, nd, C)) : dy;
    ad_tensor *mg = ad_mul_scalar(ctx, ad_sum_to(ctx, g, nd, st), inv);
    ad_tensor *mgx = ad_mul_scalar(ctx, ad_sum_to(ctx, ad_mul(ctx, g, xhat), nd, st), inv);
    gin[0] = ad_mul(ctx, s, ad_sub(ctx, ad_sub(ctx, g, mg), ad_mul(ctx, xhat, mgx)));
  }
  if (c->n > 1 && c->needs[1])
    gin[1] = ad_reshape(ctx, ad_sum_to(ctx, ad_mul(ctx, dy, xhat), nd, st), 1, &C);
  if (c->n > 2 && c->needs[2]) gin[2] = ad_reshape(ctx, ad_sum_to(ctx, dy, nd, st), 1, &C);
  return norm_set_grads(c, gin, dt == AD_F32);
}

/* Without create_graph: dx, dw and db by the loops (bn_units). */
static ad_status batch_norm_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  if (ctx->grad_enabled) return batch_norm_bwd_ops(c);
  bn_job j = bn_job_of(c, c->in[0]);
  ad_tensor *gin[3]; /* dx, dw, db */
  if (norm_bwd_data(c, gin, 2 * j.C, &j.sums, &j.d) != AD_OK) return ad_last_status(ctx);
  bn_run(&j);
  for (int64_t k = 0; k < j.C; k++)
    norm_store(gin[1], k, j.sums[k]), norm_store(gin[2], k, j.sums[j.C + k]);
  return norm_set_grads(c, gin, false);
}

/* x [6,3] (S = 1: columns) with weight and bias; [2,2,16] (runs) with
 * both; [3,2,5] without affine; [2,3,4] with a weight only; [3,130] and
 * [2,24,16] with both, of more than one unit (block of columns, channel),
 * which thread_bits's inputs, grown along N, make enough to split */
static int batch_norm_sample(const ad_sample_call *s) {
  static const int64_t s0[2] = {6, 3}, s1[3] = {2, 2, 16}, s2[3] = {3, 2, 5}, s3[3] = {2, 3, 4},
                       s4[2] = {3, 130}, s5[3] = {2, 24, 16};
  static const norm_variant v[6] = {{2, 3, s0}, {3, 3, s1}, {3, 1, s2},
                                    {3, 2, s3}, {2, 3, s4}, {3, 3, s5}};
  return norm_sample(s, v, 6, 1);
}

const ad_op_def ad_def_batch_norm = {
    .name = "batch_norm",
    .arity = 3,
    .min_arity = 1,
    .attrs = AD_ATTRS_SCALAR,
    .shape = batch_norm_shape,
    .forward = batch_norm_fwd,
    .backward = batch_norm_bwd,
    .sample = batch_norm_sample,
    .math = "y = xhat * w + b, xhat = (x - mean_c(x)) s, s = 1 / sqrt(var_c(x) + eps) (0 where "
            "that is 1 / 0): mean_c, var_c (biased) over every dim but 1, sum_c too",
    .inputs = {"x", "w", "b"},
    .grads = {"s (g - mean_c(g) - xhat mean_c(g xhat)), g = dy * w", "sum_c(dy * xhat)",
              "sum_c(dy)"},
};

/* --------------------------------------------------------- channel_affine
 *
 *   y = (x - m[c]) * a[c] + b[c]     c the index along dim 1 of x [N, C, ...]
 *   dx = dy a[c],  dm = -sum_c(dy a[c]),  da = sum_c(dy (x - m[c])),  db = sum_c(dy)
 *
 * batch_norm's evaluation mode in one pass (m the running mean, a = weight
 * / sqrt(running_var + eps), b the bias, optional): each step rounded as
 * the sub, mul and add of the composition, so the same bits, and x - m
 * first (x alpha + (b - m alpha), PyTorch's CPU inference form, cancels
 * where m is large against the spread). sum_c sums over every dim but 1.
 * The gradients are ops. */

/* Checks x [N, C, ...] (float, 2 dims or more) and the [C] vectors of its
 * dtype. */
static ad_status channel_affine_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  char a[64], b[64];
  if (!ad_is_float(x->dtype) || x->ndim < 2)
    return ad_set_error(c->ctx, x->ndim < 2 ? AD_ERR_SHAPE : AD_ERR_DTYPE,
                        "%s: x %s %s must be float with at least 2 dims [N, C, ...]", c->name,
                        ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
  static const char *const what[4] = {"x", "m", "a", "b"};
  for (int k = 1; k < c->n; k++) {
    const ad_tensor *v = c->in[k];
    if (v->dtype != x->dtype)
      return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: %s is %s, x is %s", c->name, what[k],
                          ad_dtype_name(v->dtype), ad_dtype_name(x->dtype));
    if (v->ndim != 1 || v->shape[0] != x->shape[1])
      return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: %s %s must be [C] for x %s", c->name, what[k],
                          ad_shape_str(v, a, sizeof a), ad_shape_str(x, b, sizeof b));
  }
  c->out->dtype = x->dtype;
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  return AD_OK;
}

/* Planes [p0, p1) of the N C planes of S elements (plane p is channel p %
 * C). */
typedef struct ca_job {
  const ad_call *c;
  int64_t C, S;
} ca_job;

#define CA_PLANES(T)                                                                               \
  do {                                                                                             \
    const T *X = c->in[0]->data, *M = c->in[1]->data, *A = c->in[2]->data;                         \
    const T *B = c->n > 3 ? c->in[3]->data : NULL;                                                 \
    T *Y = c->out->data;                                                                           \
    for (int64_t p = p0; p < p1; p++) {                                                            \
      T m = M[p % j->C], a = A[p % j->C];                                                          \
      const T *x = X + p * j->S;                                                                   \
      T *y = Y + p * j->S;                                                                         \
      if (B) {                                                                                     \
        T b = B[p % j->C];                                                                         \
        for (int64_t i = 0; i < j->S; i++) y[i] = (x[i] - m) * a + b;                              \
      } else {                                                                                     \
        for (int64_t i = 0; i < j->S; i++) y[i] = (x[i] - m) * a;                                  \
      }                                                                                            \
    }                                                                                              \
  } while (0)

CELL_CLONES static void ca_planes(void *ud, int64_t p0, int64_t p1) {
  const ca_job *j = ud;
  const ad_call *c = j->c;
  if (c->out->dtype == AD_F32)
    CA_PLANES(float);
  else
    CA_PLANES(double);
}
#undef CA_PLANES

static void channel_affine_fwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  ca_job j = {c, x->shape[1], ad_dims_span(x, 2, x->ndim)};
  int64_t planes = x->shape[0] * j.C;
  if (c->out->size == 0) return;
  int64_t grain = j.S >= 32768 ? 1 : 32768 / j.S;
  ad_parallel_for(planes, grain, ca_planes, &j);
}

/* t summed over every dim but 1: [C] (t [N, C, ...] as [N, C, S]); NULL
 * for a NULL t */
static ad_tensor *ca_sum_c(ad_ctx *ctx, ad_tensor *t) {
  if (!t) return NULL; /* (the op that made it failed: its error stands) */
  int64_t s3[3] = {t->shape[0], t->shape[1], ad_dims_span(t, 2, t->ndim)};
  return ad_sum_axis(ctx, ad_sum_axis(ctx, ad_reshape(ctx, t, 3, s3), 2, false), 0, false);
}

static ad_status channel_affine_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0], *dy = c->gout;
  int nd = x->ndim;
  ad_status st = AD_OK;
  ad_tensor *ga = NULL; /* dy a, for dx and dm */
  if (c->needs[0] || c->needs[1]) ga = ad_mul(ctx, dy, per_channel(ctx, c->in[2], nd, x->shape[1]));
  if (c->needs[0]) st = ad_call_set_grad(c, 0, ga);
  if (st == AD_OK && c->needs[1]) st = ad_call_set_grad(c, 1, ad_neg(ctx, ca_sum_c(ctx, ga)));
  if (st == AD_OK && c->needs[2]) {
    ad_tensor *xm = ad_sub(ctx, x, per_channel(ctx, c->in[1], nd, x->shape[1]));
    st = ad_call_set_grad(c, 2, ca_sum_c(ctx, ad_mul(ctx, dy, xm)));
  }
  if (st == AD_OK && c->n > 3 && c->needs[3]) st = ad_call_set_grad(c, 3, ca_sum_c(ctx, dy));
  return st;
}

/* x [2,3,4] with every vector; [3,2] (no trailing dims); [2,3,2,2]
 * without b */
static int channel_affine_sample(const ad_sample_call *s) {
  static const int64_t x0[3] = {2, 3, 4}, x1[2] = {3, 2}, x2[4] = {2, 3, 2, 2};
  static const int64_t *xs[3] = {x0, x1, x2};
  static const int nds[3] = {3, 2, 4};
  int v = s->variant;
  if (v > 2) return 0;
  int64_t C = xs[v][1];
  s->in[0] = ad_sample_tensor(s, nds[v], xs[v], -2, 2, true);
  s->in[1] = ad_sample_tensor(s, 1, &C, -1, 1, true);
  s->in[2] = ad_sample_tensor(s, 1, &C, 0.5, 1.5, true);
  int n = v == 2 ? 3 : 4;
  if (n == 4) s->in[3] = ad_sample_tensor(s, 1, &C, -1, 1, true);
  for (int k = 0; k < n; k++)
    if (!s->in[k]) return -1;
  return n;
}

const ad_op_def ad_def_channel_affine = {
    .name = "channel_affine",
    .arity = 4,
    .min_arity = 3,
    .shape = channel_affine_shape,
    .forward = channel_affine_fwd,
    .backward = channel_affine_bwd,
    .sample = channel_affine_sample,
    .math = "y = (x - m[c]) * a[c] + b[c], c along dim 1",
    .inputs = {"x", "m", "a", "b"},
    .grads = {"dy * a[c]", "-sum_c(dy * a[c])", "sum_c(dy * (x - m[c]))", "sum_c(dy)"},
};

/* ------------------------------------------------------ group_norm (op)
 *
 *   y = (x - mu) s w + b,  mu = mean_r(x),  s = 1 / sqrt(var_r(x) + eps)
 *       (var biased; x [N, G, K, *]: a row r is one (n, g), its K * S
 *       values; w, b [G, K], one per channel (g, k))
 *   dx = s (gw - mean_r(gw) - xhat mean_r(gw xhat)),  gw = dy w,  xhat = (x - mu) s
 *   dw = sum_{n, *}(dy xhat),  db = sum_{n, *}(dy)
 *
 * ad_group_norm's op (x [N, C, *] seen as [N, G, C / G, prod(*)]), where
 * the composite was layer_norm over [N, G, C / G * prod(*)] and a product
 * and a sum with the per-channel weight and bias (their gradients two
 * more passes and two reductions). One row per (n, g), handled by one
 * thread: the statistics in double (two passes, as layer_norm's), then y;
 * its backward without create_graph the mean again, then per channel the
 * sums of (x - mu)^2, dy and dy (x - mu) in one pass, then dx, and the
 * channel's sums of dy xhat and dy kept per (n, g, k), added over n in
 * order at the end (the same bits on any number of threads). As
 * layer_norm, var + eps = 0 gives s = inf (NaN in y). With create_graph
 * the backward is the composite's: layer_norm_backward of dy w, and sums
 * of dy layer_norm(x) and dy, ops that differentiate to any order. */

typedef struct gn_job {
  norm_data d;
  int64_t G, K, S; /* rows are N * G of K * S values */
  double *part;    /* backward: [N * G][2][K]: sums of dy (x - mu) s, of dy */
} gn_job;

#define GN_KERNELS(T)                                                                              \
  do {                                                                                             \
    const T *X = j->d.x, *D = j->d.dy, *W = j->d.w, *B = j->d.b;                                   \
    T *Y = j->d.y;                                                                                 \
    int64_t K = j->K, S = j->S, M = K * S;                                                         \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      const T *xr = X + r * M;                                                                     \
      int64_t g = r % j->G;                                                                        \
      double mu, s;                                                                                \
      if (!D) {                                                                                    \
        LN_STATS(xr, M, j->d.eps, mu, s);                                                          \
        for (int64_t k = 0; k < K; k++) {                                                          \
          const T *xk = xr + k * S;                                                                \
          T *yk = Y + r * M + k * S;                                                               \
          double a = W ? s * (double)W[g * K + k] : s, b0 = B ? (double)B[g * K + k] : 0.0;        \
          NORM_Y(T, yk, xk, S, mu, a, b0);                                                         \
        }                                                                                          \
        continue;                                                                                  \
      }                                                                                            \
      const T *dr = D + r * M;                                                                     \
      double *pw = j->part + r * 2 * K, *pb = pw + K, dev = 0, sg = 0, sgx = 0;                    \
      LN_SUM(mu, M, (double)xr[i]);                                                                \
      mu /= M ? (double)M : 1.0;                                                                   \
      for (int64_t k = 0; k < K; k++) {                                                            \
        const T *xk = xr + k * S, *dk = dr + k * S;                                                \
        double t, u, v, wk = W ? (double)W[g * K + k] : 1.0;                                       \
        NORM_SUMS(t, u, v, S, xk, dk, mu);                                                         \
        dev += t, sg += u * wk, sgx += v * wk;                                                     \
        pw[k] = v, pb[k] = u;                                                                      \
      }                                                                                            \
      s = 1.0 / sqrt((M ? dev / (double)M : 0.0) + j->d.eps);                                      \
      for (int64_t k = 0; k < K; k++) pw[k] *= s;                                                  \
      if (!Y) continue;                                                                            \
      double b0, k2;                                                                               \
      norm_dx_coef(s, sg, sgx *s, M, &b0, &k2);                                                    \
      for (int64_t k = 0; k < K; k++) {                                                            \
        const T *xk = xr + k * S, *dk = dr + k * S;                                                \
        T *yk = Y + r * M + k * S;                                                                 \
        double a = W ? s * (double)W[g * K + k] : s;                                               \
        NORM_DX(T, yk, dk, xk, S, mu, a, b0, k2);                                                  \
      }                                                                                            \
    }                                                                                              \
  } while (0)

/* Rows [r0, r1), each an (n, g). */
CELL_CLONES static void gn_rows(void *ud, int64_t r0, int64_t r1) {
  const gn_job *j = ud;
  if (j->d.f32)
    GN_KERNELS(float);
  else
    GN_KERNELS(double);
}

/* The job for x (and w, b) of call c, without its in- and outputs; *rows
 * its N * G rows. */
static gn_job gn_job_of(const ad_call *c, const ad_tensor *x, int64_t *rows) {
  gn_job j = {.G = x->shape[1], .K = x->shape[2], .S = 1};
  j.d = (norm_data){.eps = c->attrs->scalar, .f32 = x->dtype == AD_F32};
  for (int k = 3; k < x->ndim; k++) j.S *= x->shape[k];
  *rows = x->shape[0] * j.G;
  return j;
}

static void gn_run(gn_job *j, int64_t rows) {
  int64_t M = j->K * j->S, grain = M ? (32768 + M - 1) / M : rows;
  if (rows <= grain)
    gn_rows(j, 0, rows);
  else
    ad_parallel_for(rows, grain, gn_rows, j);
}

/* x float [N, G, K, ...], weight and bias [G, K] of its dtype, eps finite
 * >= 0. */
static ad_status group_norm_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  char a[64], b[64];
  if (norm_check_x(c, 3, "[N, G, K, ...]") != AD_OK) return ad_last_status(c->ctx);
  static const char *const what[2] = {"weight", "bias"};
  for (int k = 1; k < c->n; k++)
    if (c->in[k]->ndim != 2 || c->in[k]->shape[0] != x->shape[1] ||
        c->in[k]->shape[1] != x->shape[2])
      return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: %s %s is not [G, K] of x %s [N, G, K, ...]",
                          c->name, what[k - 1], ad_shape_str(c->in[k], a, sizeof a),
                          ad_shape_str(x, b, sizeof b));
  return norm_out_like_x(c);
}

static void group_norm_fwd(const ad_call *c) {
  int64_t rows;
  gn_job j = gn_job_of(c, c->in[0], &rows);
  norm_fwd_data(c, &j.d);
  gn_run(&j, rows);
}

/* The backward with create_graph: the composite's, ops (x seen as rows
 * [N, G, K * S] for layer_norm and layer_norm_backward). */
static ad_status group_norm_bwd_ops(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0], *w = c->n > 1 ? c->in[1] : NULL, *dy = c->gout;
  int nd = x->ndim;
  int64_t G = x->shape[1], K = x->shape[2], S = 1;
  for (int k = 3; k < nd; k++) S *= x->shape[k];
  int64_t rows[3] = {x->shape[0], G, K * S}, gk1[4] = {1, G, K, 1}, gks[4] = {x->shape[0], G, K, S};
  ad_attrs at = {.layer_norm = {.ndim = 1, .dims = {K * S}, .eps = c->attrs->scalar}};
  ad_tensor *xr = ad_reshape(ctx, x, 3, rows);
  ad_tensor *d4 = ad_reshape(ctx, dy, 4, gks);
  ad_tensor *gin[3] = {NULL, NULL, NULL};
  if (c->needs[0]) {
    ad_tensor *gw = w ? ad_mul(ctx, d4, ad_reshape(ctx, w, 4, gk1)) : d4;
    ad_tensor *in[2] = {ad_reshape(ctx, gw, 3, rows), xr};
    gin[0] = ad_reshape(ctx, ad_op_apply(ctx, AD_OP_LAYER_NORM_BACKWARD, 2, in, &at), nd, x->shape);
  }
  if (c->n > 1 && c->needs[1]) {
    ad_tensor *xhat = ad_reshape(ctx, ad_op_apply(ctx, AD_OP_LAYER_NORM, 1, &xr, &at), 4, gks);
    gin[1] = ad_reshape(ctx, ad_sum_to(ctx, ad_mul(ctx, d4, xhat), 4, gk1), 2, gk1 + 1);
  }
  if (c->n > 2 && c->needs[2]) gin[2] = ad_reshape(ctx, ad_sum_to(ctx, d4, 4, gk1), 2, gk1 + 1);
  return norm_set_grads(c, gin, false);
}

/* Without create_graph: dx, and the sums for dw and db, by the loops
 * (gn_rows); the sums added over n in order. */
static ad_status group_norm_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  if (ctx->grad_enabled) return group_norm_bwd_ops(c);
  int64_t rows;
  gn_job j = gn_job_of(c, c->in[0], &rows);
  ad_tensor *gin[3]; /* dx, dw, db */
  if (norm_bwd_data(c, gin, rows * 2 * j.K, &j.part, &j.d) != AD_OK) return ad_last_status(ctx);
  gn_run(&j, rows);
  for (int64_t q = 0; q < j.G * j.K; q++) {
    int64_t g = q / j.K, k = q % j.K;
    double sw = 0, sb = 0;
    for (int64_t r = g; r < rows; r += j.G)
      sw += j.part[r * 2 * j.K + k], sb += j.part[(r * 2 + 1) * j.K + k];
    norm_store(gin[1], q, sw), norm_store(gin[2], q, sb);
  }
  return norm_set_grads(c, gin, false);
}

ad_tensor *ad_group_norm(ad_ctx *ctx, ad_tensor *x, int64_t num_groups, ad_tensor *weight,
                         ad_tensor *bias, double eps) {
  if (!ctx) return NULL;
  if (!x) {
    ad_set_null_error(ctx, "group_norm: x is NULL");
    return NULL;
  }
  char a[64], b[64];
  if (x->ndim < 2 || num_groups < 1 || x->shape[1] % num_groups) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "group_norm: x %s is not [N, C, *] with C a multiple of %lld groups",
                 ad_shape_str(x, a, sizeof a), (long long)num_groups);
    return NULL;
  }
  int64_t C = x->shape[1];
  ad_tensor *ab[2] = {weight, bias};
  for (int k = 0; k < 2; k++)
    if (ab[k] && (ab[k]->ndim != 1 || ab[k]->shape[0] != C)) {
      ad_set_error(ctx, AD_ERR_SHAPE, "group_norm: %s %s does not match the %lld channels of x %s",
                   k ? "bias" : "weight", ad_shape_str(ab[k], a, sizeof a), (long long)C,
                   ad_shape_str(x, b, sizeof b));
      return NULL;
    }
  int64_t S = 1;
  for (int k = 2; k < x->ndim; k++) S *= x->shape[k];
  int64_t v[4] = {x->shape[0], num_groups, C / num_groups, S}, gk[2] = {num_groups, C / num_groups};
  ad_tensor *in[3] = {ad_reshape(ctx, x, 4, v), weight ? ad_reshape(ctx, weight, 2, gk) : NULL,
                      bias ? ad_reshape(ctx, bias, 2, gk) : NULL};
  if (!in[0] || (weight && !in[1]) || (bias && !in[2])) return NULL;
  ad_attrs at = {.scalar = eps};
  ad_tensor *y = ad_op_apply(ctx, AD_OP_GROUP_NORM, weight ? (bias ? 3 : 2) : 1, in, &at);
  if (bias && !weight) { /* a bias without a weight: the op's optional inputs are trailing */
    int64_t gk1[3] = {num_groups, C / num_groups, 1};
    y = ad_add(ctx, y, ad_reshape(ctx, bias, 3, gk1));
  }
  return ad_reshape(ctx, y, x->ndim, x->shape);
}

/* x [2,2,3,4] with weight and bias (S = 4); [3,2,2] (S = 1) with both;
 * [2,3,2,5] without affine; [2,2,2,3] with a weight only; [2,4,2,2] with
 * both, of more than one row per thread split (thread_bits grows N) */
static int group_norm_sample(const ad_sample_call *s) {
  static const int64_t s0[4] = {2, 2, 3, 4}, s1[3] = {3, 2, 2}, s2[4] = {2, 3, 2, 5},
                       s3[4] = {2, 2, 2, 3}, s4[4] = {2, 4, 2, 2};
  static const norm_variant v[5] = {{4, 3, s0}, {3, 3, s1}, {4, 1, s2}, {4, 2, s3}, {4, 3, s4}};
  return norm_sample(s, v, 5, 2);
}

const ad_op_def ad_def_group_norm = {
    .name = "group_norm",
    .arity = 3,
    .min_arity = 1,
    .attrs = AD_ATTRS_SCALAR,
    .shape = group_norm_shape,
    .forward = group_norm_fwd,
    .backward = group_norm_bwd,
    .sample = group_norm_sample,
    .math = "y = xhat * w + b, xhat = (x - mean_r(x)) / sqrt(var_r(x) + eps): x [N, G, K, ...], "
            "mean_r, var_r (biased) over each (n, g)'s K * S values, w and b [G, K]",
    .inputs = {"x", "w", "b"},
    .grads = {"layer_norm_backward(dy * w, x) over the rows (n, g)", "sum_{n,*}(dy * xhat)",
              "sum_{n,*}(dy)"},
};
