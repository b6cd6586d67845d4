/* losses.c: losses composed from ad_ ops (their gradients come from the
 * tape), and the accuracy count. */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>

/* Checks that pred is float and target has its dtype and shape (or only its
 * size, then it is viewed with pred's shape). Returns the target to use. */
static ad_tensor *match_target(ad_ctx *ctx, const char *fn, ad_tensor *pred, ad_tensor *target) {
  char a[64], b[64];
  if (!ctx || !pred || !target) {
    nn_null_arg(ctx, fn, pred ? "target" : "prediction");
    return NULL;
  }
  if (nn_check_input(ctx, fn, "prediction", pred) != AD_OK ||
      nn_check_input(ctx, fn, "target", target) != AD_OK)
    return NULL;
  if (pred->dtype != AD_F32 && pred->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: prediction %s is %s; a float dtype is needed", fn,
                 ad_shape_str(pred, a, sizeof a), ad_dtype_name(pred->dtype));
    return NULL;
  }
  if (target->dtype != pred->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: target %s is %s, the prediction %s is %s", fn,
                 ad_shape_str(target, a, sizeof a), ad_dtype_name(target->dtype),
                 ad_shape_str(pred, b, sizeof b), ad_dtype_name(pred->dtype));
    return NULL;
  }
  if (target->size != pred->size) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: prediction %s and target %s differ in size", fn,
                 ad_shape_str(pred, a, sizeof a), ad_shape_str(target, b, sizeof b));
    return NULL;
  }
  bool same = target->ndim == pred->ndim;
  for (int k = 0; same && k < pred->ndim; k++) same = target->shape[k] == pred->shape[k];
  return same ? target : ad_reshape(ctx, target, pred->ndim, pred->shape);
}

static ad_tensor *reduce(ad_ctx *ctx, ad_tensor *l, nn_reduction red, const char *fn) {
  if (!l) return NULL;
  if (red == NN_MEAN) return ad_mean(ctx, l);
  if (red == NN_SUM) return ad_sum(ctx, l);
  ad_set_error(ctx, AD_ERR_ARG, "%s: unknown reduction %d", fn, (int)red);
  return NULL;
}

/* l = (p - t)^2 */
ad_tensor *nn_mse_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red) {
  ad_tensor *t = match_target(ctx, "mse_loss", pred, target);
  if (!t) return NULL;
  return reduce(ctx, ad_square(ctx, ad_sub(ctx, pred, t)), red, "mse_loss");
}

/* l = -(t log p + (1 - t) log(1 - p)), each log clamped at -100, through
 * ad_binary_cross_entropy: PyTorch's gradient, large (not 0) at a confident
 * wrong p of 0 or 1. */
ad_tensor *nn_bce_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red) {
  ad_tensor *t = match_target(ctx, "bce_loss", pred, target);
  if (!t) return NULL;
  /* PyTorch refuses a probability outside [0, 1], NaN included */
  for (int64_t i = 0; i < pred->size; i++) {
    double v = pred->dtype == AD_F32 ? (double)((const float *)pred->data)[i]
                                     : ((const double *)pred->data)[i];
    if (!(v >= 0 && v <= 1)) {
      char a[64];
      ad_set_error(ctx, AD_ERR_ARG,
                   "bce_loss: prediction %g at element %lld of %s is outside [0, 1] (it takes "
                   "probabilities; bce_with_logits_loss takes logits)",
                   v, (long long)i, ad_shape_str(pred, a, sizeof a));
      return NULL;
    }
  }
  return reduce(ctx, ad_binary_cross_entropy(ctx, pred, t), red, "bce_loss");
}

/* l = softplus(z) - t z  (= max(z,0) - t z + log(1 + e^-|z|), stable) */
ad_tensor *nn_bce_with_logits_loss(ad_ctx *ctx, ad_tensor *logits, ad_tensor *target,
                                   nn_reduction red) {
  ad_tensor *t = match_target(ctx, "bce_with_logits_loss", logits, target);
  if (!t) return NULL;
  ad_tensor *l = ad_sub(ctx, ad_softplus(ctx, logits), ad_mul(ctx, t, logits));
  return reduce(ctx, l, red, "bce_with_logits_loss");
}

/* Checks scores [N,C] (float) and labels [N] (i32, in 0..C-1). */
static bool check_labels(ad_ctx *ctx, const char *fn, const ad_tensor *z, const ad_tensor *lab) {
  char a[64], b[64];
  if (!ctx || !z || !lab) {
    nn_null_arg(ctx, fn, z ? "labels" : "scores");
    return false;
  }
  if (nn_check_input(ctx, fn, "scores", z) != AD_OK ||
      nn_check_input(ctx, fn, "labels", lab) != AD_OK)
    return false;
  if (z->dtype != AD_F32 && z->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: scores %s are %s; a float dtype is needed", fn,
                 ad_shape_str(z, a, sizeof a), ad_dtype_name(z->dtype));
    return false;
  }
  if (lab->dtype != AD_I32) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: labels %s are %s; class labels must be i32", fn,
                 ad_shape_str(lab, a, sizeof a), ad_dtype_name(lab->dtype));
    return false;
  }
  /* N = 0 is an empty batch: NaN for the mean, 0 for the sum (PyTorch) */
  if (z->ndim != 2 || lab->ndim != 1 || lab->shape[0] != z->shape[0] || z->shape[1] == 0) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: scores %s and labels %s: need [N,C] and [N], C >= 1", fn,
                 ad_shape_str(z, a, sizeof a), ad_shape_str(lab, b, sizeof b));
    return false;
  }
  const int32_t *l = lab->data;
  for (int64_t i = 0; i < lab->size; i++)
    if (l[i] < 0 || l[i] >= z->shape[1]) {
      ad_set_error(ctx, AD_ERR_ARG, "%s: label %d of sample %lld is outside 0..%lld", fn, l[i],
                   (long long)i, (long long)z->shape[1] - 1);
      return false;
    }
  return true;
}

/* l_n = -sum_c t_nc log_softmax(z_n)_c, or with labels the fused
 * softmax_cross_entropy (mean over n; the sum is N times it). */
ad_tensor *nn_cross_entropy_loss(ad_ctx *ctx, ad_tensor *logits, ad_tensor *target,
                                 nn_reduction red) {
  const char *fn = "cross_entropy_loss";
  if (ctx && target && target->dtype == AD_I32) {
    if (!check_labels(ctx, fn, logits, target)) return NULL;
    if (red != NN_MEAN && red != NN_SUM) return reduce(ctx, logits, red, fn); /* its error */
    /* the sum summed (N times the mean was NaN for N = 0, and rounded) */
    ad_cross_entropy_opts o = {.sum = red == NN_SUM};
    return ad_softmax_cross_entropy_ext(ctx, logits, target, &o);
  }
  ad_tensor *t = match_target(ctx, fn, logits, target);
  if (!t) return NULL;
  char a[64], b[64];
  if (logits->ndim != 2 || logits->shape[1] == 0) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: logits %s must be [N,C] with C >= 1", fn,
                 ad_shape_str(logits, a, sizeof a));
    return NULL;
  }
  /* rows of class probabilities: the logits' own shape, as PyTorch asks
   * (match_target took any shape of as many elements: [N] float class
   * indices against [N,1] logits gave a loss of 0) */
  if (t != target) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: a float target %s must have the logits' shape %s (class labels are i32 "
                 "[N])",
                 fn, ad_shape_str(target, a, sizeof a), ad_shape_str(logits, b, sizeof b));
    return NULL;
  }
  ad_tensor *l =
      ad_neg(ctx, ad_sum_axis(ctx, ad_mul(ctx, t, ad_log_softmax(ctx, logits, -1)), -1, false));
  return reduce(ctx, l, red, fn);
}

/* l_n = -logp[n, label_n] = -sum_c where(onehot_nc, logp_nc, 0): a select,
 * not a product, so that -inf or NaN in another class (log of a zero
 * probability) is left out of the loss and its gradient, as PyTorch's
 * gather does. */
ad_tensor *nn_nll_loss(ad_ctx *ctx, ad_tensor *logp, ad_tensor *labels, nn_reduction red) {
  if (!check_labels(ctx, "nll_loss", logp, labels)) return NULL;
  ad_tensor *onehot = nn_tmp_tensor(ctx, logp->dtype, 2, logp->shape);
  if (!onehot) return NULL;
  int64_t n = logp->shape[0], c = logp->shape[1];
  const int32_t *lab = labels->data;
  memset(onehot->data, 0, (size_t)onehot->size * ad_dtype_size(onehot->dtype));
  for (int64_t i = 0; i < n; i++) ad_tensor_set(onehot, i * c + lab[i], 1.0);
  ad_tensor *picked = ad_where(ctx, onehot, logp, ad_scalar(ctx, logp->dtype, 0.0));
  ad_tensor *l = ad_neg(ctx, ad_sum_axis(ctx, picked, 1, false));
  return reduce(ctx, l, red, "nll_loss");
}

/* Flat index i of t's shape as coordinates, "[1,2]", into buf (n bytes). */
static const char *coords_str(const ad_tensor *t, int64_t i, char *buf, size_t n) {
  int len = snprintf(buf, n, "[");
  int64_t c[AD_MAX_DIMS];
  for (int k = t->ndim - 1; k >= 0; k--) {
    c[k] = t->shape[k] ? i % t->shape[k] : 0;
    i = t->shape[k] ? i / t->shape[k] : 0;
  }
  for (int k = 0; k < t->ndim && len > 0 && (size_t)len < n; k++)
    len += snprintf(buf + len, n - (size_t)len, "%s%lld", k ? "," : "", (long long)c[k]);
  if (len > 0 && (size_t)len < n) snprintf(buf + len, n - (size_t)len, "]");
  return buf;
}

/* l_p = -log_softmax(z_p)[label_p] over the positions p = (n, t...) whose
 * label is not ignore_index: ad_softmax_cross_entropy_ext on [N, C, T...]
 * (class_last logits are permuted there first). */
ad_tensor *nn_sequence_cross_entropy_loss(ad_ctx *ctx, ad_tensor *logits, ad_tensor *labels,
                                          nn_reduction red, const nn_sequence_ce_opts *opts) {
  const char *fn = "sequence_cross_entropy_loss";
  char a[64], b[64];
  if (!ctx || !logits || !labels) {
    nn_null_arg(ctx, fn, logits ? "labels" : "logits");
    return NULL;
  }
  if (nn_check_input(ctx, fn, "logits", logits) != AD_OK ||
      nn_check_input(ctx, fn, "labels", labels) != AD_OK)
    return NULL;
  nn_sequence_ce_opts o = {0};
  if (opts) o = *opts;
  if (logits->dtype != AD_F32 && logits->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: logits %s are %s; a float dtype is needed", fn,
                 ad_shape_str(logits, a, sizeof a), ad_dtype_name(logits->dtype));
    return NULL;
  }
  if (labels->dtype != AD_I32) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: labels %s are %s; class labels must be i32", fn,
                 ad_shape_str(labels, a, sizeof a), ad_dtype_name(labels->dtype));
    return NULL;
  }
  int nd = logits->ndim, cdim = o.class_last ? nd - 1 : 1;
  bool ok = nd >= 2 && labels->ndim == nd - 1 && logits->shape[cdim] > 0;
  for (int k = 0, j = 0; ok && k < nd; k++)
    if (k != cdim) ok = labels->shape[j++] == logits->shape[k];
  if (!ok) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: logits %s and labels %s: need %s and [N,T...], C >= 1", fn,
                 ad_shape_str(logits, a, sizeof a), ad_shape_str(labels, b, sizeof b),
                 o.class_last ? "[N,T...,C]" : "[N,C,T...]");
    return NULL;
  }
  if (red != NN_MEAN && red != NN_SUM) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: unknown reduction %d", fn, (int)red);
    return NULL;
  }
  ad_cross_entropy_opts co = {
      .ignore = o.ignore, .ignore_index = o.ignore_index, .sum = red == NN_SUM};
  if (o.class_last && nd > 2) {
    /* [N, T..., C] is [P, C] with the P = N T... positions in the same
     * order (a view, where [N, C, T...] would need a permuted copy); the
     * labels are checked here, so that a bad one is named by its place in
     * [N, T...] */
    int64_t C = logits->shape[nd - 1], P = labels->size, zs[2] = {P, C};
    const int32_t *lab = labels->data;
    for (int64_t i = 0; i < P; i++) {
      if ((lab[i] >= 0 && lab[i] < C) || (o.ignore && lab[i] == o.ignore_index)) continue;
      char ign[48] = "";
      if (o.ignore) snprintf(ign, sizeof ign, " and is not ignore_index %d", o.ignore_index);
      ad_set_error(ctx, AD_ERR_ARG,
                   "%s: label %d at position %lld (%s of labels %s) is outside "
                   "0..%lld%s",
                   fn, lab[i], (long long)i, coords_str(labels, i, a, sizeof a),
                   ad_shape_str(labels, b, sizeof b), (long long)C - 1, ign);
      return NULL;
    }
    return ad_softmax_cross_entropy_ext(ctx, ad_reshape(ctx, logits, 2, zs),
                                        ad_reshape(ctx, labels, 1, &P), &co);
  }
  return ad_softmax_cross_entropy_ext(ctx, logits, labels, &co);
}

double nn_loss_threshold(nn_loss_fn loss) { return loss == nn_bce_with_logits_loss ? 0.0 : 0.5; }

/* ---------------------------------------------------------------- metrics */

/* The index of the row's largest value, the first of ties; a NaN counts as
 * the largest (the first NaN wins), as torch.argmax has it. */
static int64_t argmax_row(const ad_tensor *t, int64_t r, int64_t c) {
  int64_t best = 0;
  double bv = ad_tensor_get(t, r * c);
  for (int64_t k = 1; k < c && !isnan(bv); k++) {
    double v = ad_tensor_get(t, r * c + k);
    if (v > bv || isnan(v)) bv = v, best = k;
  }
  return best;
}

int64_t nn_count_correct(const ad_tensor *pred, const ad_tensor *target, double threshold) {
  if (!ad_tensor_is_valid(pred) || !ad_tensor_is_valid(target) || pred->ndim < 1 ||
      target->ndim < 1 || pred->ndim > 2)
    return -1;
  int64_t n = pred->shape[0], c = pred->ndim == 2 ? pred->shape[1] : 1;
  if (target->shape[0] != n || c < 1) return -1;
  int64_t correct = 0;
  if (c == 1) { /* binary */
    if (target->size != n) return -1;
    for (int64_t i = 0; i < n; i++) {
      bool p = ad_tensor_get(pred, i) > threshold;
      bool t =
          target->dtype == AD_I32 ? ad_tensor_get(target, i) != 0 : ad_tensor_get(target, i) > 0.5;
      correct += p == t;
    }
    return correct;
  }
  if (target->dtype == AD_I32) {
    if (target->ndim != 1) return -1;
    for (int64_t i = 0; i < n; i++)
      correct += argmax_row(pred, i, c) == (int64_t)ad_tensor_get(target, i);
    return correct;
  }
  if (target->ndim != 2 || target->shape[1] != c) return -1;
  for (int64_t i = 0; i < n; i++) correct += argmax_row(pred, i, c) == argmax_row(target, i, c);
  return correct;
}
