/* op_norm.c: normalisation. batch_norm is a composite of the engine's ops
 * (per-channel sums are sum_to to [1,C,1,...]), so its first and second
 * derivatives come from theirs, and a graph dump shows the statistics it
 * computes. Its running statistics are updated in place, outside the tape,
 * as PyTorch's buffers are. layer_norm and its gradient layer_norm_backward
 * are ops (a loop per row each), whose derivatives are made of the two and
 * of sums, so they differentiate to any order. */
#include "ops.h"
#include "vexp.h"

#include <math.h>

/* ----------------------------------------------------------- batch_norm
 *
 *   training:  mu = mean_c(x), var = mean_c((x - mu)^2)       (biased)
 *              running_mean = (1 - m) running_mean + m mu
 *              running_var  = (1 - m) running_var  + m var M / (M - 1)
 *   eval:      mu = running_mean, var = running_var
 *   y = (x - mu) / sqrt(var + eps) * weight + bias
 *
 * mean_c is the mean over every dim but 1 (N, and H, W, ...), M elements
 * per channel. */

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
static void update_running(ad_tensor *running, const ad_tensor *stat, double m, double scale) {
  for (int64_t c = 0; c < running->size; c++)
    ad_tensor_set(running, c,
                  (1 - m) * ad_tensor_get(running, c) + m * ad_tensor_get(stat, c) * scale);
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
  ad_tensor *mu = NULL, *var = NULL, *y;
  bool stats = training && x->size > 0; /* an empty batch has none, and changes nothing */
  if (training && M == 1) { /* PyTorch refuses too: one value has no unbiased variance */
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "batch_norm: x %s has 1 value(s) per channel; training needs more than 1",
                 ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  if (training && !stats) {
    y = ad_mul_scalar(ctx, x, 1.0); /* empty, as PyTorch's: a result, not x itself */
  } else if (training) {
    int64_t st[AD_MAX_DIMS];
    for (int k = 0; k < nd; k++) st[k] = k == 1 ? C : 1;
    mu = ad_mul_scalar(ctx, ad_sum_to(ctx, x, nd, st), 1.0 / (double)M);
    ad_tensor *d = ad_sub(ctx, x, mu);
    var = ad_mul_scalar(ctx, ad_sum_to(ctx, ad_mul(ctx, d, d), nd, st), 1.0 / (double)M);
    y = ad_mul(ctx, d, inv_std(ctx, var, eps));
  } else {
    if (!running_mean) {
      ad_set_error(ctx, AD_ERR_ARG, "batch_norm: evaluation mode needs the running statistics");
      return NULL;
    }
    mu = per_channel(ctx, running_mean, nd, C);
    var = per_channel(ctx, running_var, nd, C);
    y = ad_mul(ctx, ad_sub(ctx, x, mu), ad_pow_scalar(ctx, ad_add_scalar(ctx, var, eps), -0.5));
  }
  if (weight) y = ad_mul(ctx, y, per_channel(ctx, weight, nd, C));
  if (bias) y = ad_add(ctx, y, per_channel(ctx, bias, nd, C));
  if (y && stats && running_mean) { /* buffers: in place, not recorded; only on success */
    /* noted first (an op of this tape may have read them: tape.c's check),
     * so that the writes below cannot fail */
    if (ad_note_write(ad_node_of(running_mean), "batch_norm") != AD_OK ||
        ad_note_write(ad_node_of(running_var), "batch_norm") != AD_OK)
      return NULL;
    update_running(running_mean, mu, momentum, 1.0);
    update_running(running_var, var, momentum, (double)M / (double)(M - 1));
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
 * sums (element i in partial i mod 16) added in order at the end: the
 * loop over the 16 vectorizes, in the row functions' clones for AVX-512
 * and AVX2 (CELL_CLONES, vexp.h) as in the baseline, with the same bits on
 * each and on every run. f reads the index i. */
#define LN_SUM(out, n, f)                                                                          \
  do {                                                                                             \
    double p_[16] = {0};                                                                           \
    int64_t b_ = 0;                                                                                \
    for (; b_ + 16 <= (n); b_ += 16)                                                               \
      for (int k_ = 0; k_ < 16; k_++) {                                                            \
        int64_t i = b_ + k_;                                                                       \
        p_[k_] += (f);                                                                             \
      }                                                                                            \
    for (int64_t i = b_; i < (n); i++) p_[i - b_] += (f);                                          \
    (out) = p_[0];                                                                                 \
    for (int k_ = 1; k_ < 16; k_++) (out) += p_[k_];                                               \
  } while (0)

/* LN_SUM of f, g and h in one pass. */
#define LN_SUM3(outf, outg, outh, n, f, g, h)                                                      \
  do {                                                                                             \
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
    (outf) = p_[0], (outg) = q_[0], (outh) = u_[0];                                                \
    for (int k_ = 1; k_ < 16; k_++) (outf) += p_[k_], (outg) += q_[k_], (outh) += u_[k_];          \
  } while (0)

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
  for (int64_t r = r0; r < r1; r++) {                                                              \
    const T *xr = X + r * M;                                                                       \
    T *yr = Y + r * M;                                                                             \
    double mu, s;                                                                                  \
    LN_STATS(xr, M, at->eps, mu, s);                                                               \
    for (int64_t i = 0; i < M; i++) {                                                              \
      double v = ((double)xr[i] - mu) * s;                                                         \
      yr[i] = (T)(EXPR);                                                                           \
    }                                                                                              \
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
 * in double, i its index, r its row in scope). */
#define LNB_ROWS_ACC(T, GW, ACC)                                                                   \
  for (int64_t r = r0; r < r1; r++) {                                                              \
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
    for (int64_t i = 0; i < M; i++) {                                                              \
      double xh = ((double)xr[i] - mu) * s;                                                        \
      yr[i] = (T)(s * ((GW)-mg - xh * mgx));                                                       \
      ACC                                                                                          \
    }                                                                                              \
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

static void layer_norm_backward_fwd(const ad_call *c) {
  ln_job j = {c, 0};
  int64_t rows = ln_rows(c->in[1], &c->attrs->layer_norm, &j.M); /* sets j.M first */
  ln_run(rows, j.M, layer_norm_backward_rows, &j);
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
 * the first-level cache beside the rows, M <= LN_PLAIN_MAX_M; the others
 * take the ops. */
enum { LN_GROUP = 16, LN_MAX_GROUPS = 256, LN_PLAIN_MAX_M = 2048 };

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
  for (int64_t i = 0; i < j.M; i++) {
    if (x->dtype == AD_F32) {
      if (dw) ((float *)dw->data)[i] = (float)sum[i];
      if (db) ((float *)db->data)[i] = (float)sum[j.M + i];
    } else {
      if (dw) ((double *)dw->data)[i] = sum[i];
      if (db) ((double *)db->data)[i] = sum[j.M + i];
    }
  }
  ad_status st = dx ? ad_call_set_grad(c, 0, dx) : AD_OK;
  if (st == AD_OK && dw) st = ad_call_set_grad(c, 1, dw);
  if (st == AD_OK && db) st = ad_call_set_grad(c, 2, db);
  return st;
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
  for (int j = 0; j < c->n; j++) {
    if (!c->needs[j]) continue;
    ad_status r = ad_call_set_grad(c, j, dt == AD_F32 ? ad_cast(ctx, gin[j], dt) : gin[j]);
    if (r != AD_OK) return r;
  }
  return AD_OK;
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
