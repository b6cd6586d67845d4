/* losses.c: losses composed from ad_ ops (their gradients come from the
 * tape), and the accuracy count. */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>

ad_tensor *nn_loss_target(ad_ctx *ctx, const char *fn, const char *first, ad_tensor *x,
                          ad_tensor *target) {
  char a[64], b[64];
  if (!ctx || !x || !target) {
    nn_null_arg(ctx, fn, x ? "target" : first);
    return NULL;
  }
  if (nn_check_input(ctx, fn, first, x) != AD_OK ||
      nn_check_input(ctx, fn, "target", target) != AD_OK)
    return NULL;
  if (x->dtype != AD_F32 && x->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: %s %s is %s; a float dtype is needed", fn, first,
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
    return NULL;
  }
  if (target->dtype != x->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: target %s is %s, the %s %s is %s", fn,
                 ad_shape_str(target, a, sizeof a), ad_dtype_name(target->dtype), first,
                 ad_shape_str(x, b, sizeof b), ad_dtype_name(x->dtype));
    return NULL;
  }
  if (target->size != x->size) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: %s %s and target %s differ in size", fn, first,
                 ad_shape_str(x, a, sizeof a), ad_shape_str(target, b, sizeof b));
    return NULL;
  }
  bool same = target->ndim == x->ndim;
  for (int k = 0; same && k < x->ndim; k++) same = target->shape[k] == x->shape[k];
  return same ? target : ad_reshape(ctx, target, x->ndim, x->shape);
}

/* NN_MEAN, NN_SUM and NN_NONE, and NN_BATCHMEAN where batchmean allows it;
 * any other value is refused naming the loss (AD_ERR_ARG). */
bool nn_loss_check_reduction(ad_ctx *ctx, const char *fn, nn_reduction red, bool batchmean) {
  if (red == NN_MEAN || red == NN_SUM || red == NN_NONE || (batchmean && red == NN_BATCHMEAN))
    return true;
  if (red == NN_BATCHMEAN)
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: reduction NN_BATCHMEAN is kl_div_loss's only; use NN_MEAN, NN_SUM or "
                 "NN_NONE",
                 fn);
  else
    ad_set_error(ctx, AD_ERR_ARG, "%s: unknown reduction %d", fn, (int)red);
  return false;
}

/* The reduction of the per-element losses l of x (checked already);
 * NN_NONE is l itself; NN_BATCHMEAN is their sum over x's first dim
 * (PyTorch: sum / size(0); a 0-d x: the sum), NaN for an empty batch. */
ad_tensor *nn_loss_reduce(ad_ctx *ctx, ad_tensor *l, nn_reduction red, const ad_tensor *x) {
  if (!l || red == NN_NONE) return l;
  if (red == NN_SUM) return ad_sum(ctx, l);
  if (red == NN_MEAN || (x->ndim > 0 && x->shape[0] == 0)) return ad_mean(ctx, l); /* 0/0 */
  ad_tensor *s = ad_sum(ctx, l);
  return x->ndim > 0 ? ad_div_scalar(ctx, s, (double)x->shape[0]) : s;
}

/* The mean, the sum, or with NN_NONE l itself; NULL with the error of
 * nn_loss_check_reduction for another reduction (BATCHMEAN included). */
static ad_tensor *reduce(ad_ctx *ctx, ad_tensor *l, nn_reduction red, const char *fn) {
  if (!l || !nn_loss_check_reduction(ctx, fn, red, false)) return NULL;
  return nn_loss_reduce(ctx, l, red, l);
}

/* l = (p - t)^2 */
ad_tensor *nn_mse_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red) {
  ad_tensor *t = nn_loss_target(ctx, "mse_loss", "prediction", pred, target);
  if (!t) return NULL;
  return reduce(ctx, ad_square(ctx, ad_sub(ctx, pred, t)), red, "mse_loss");
}

/* l = -(t log p + (1 - t) log(1 - p)), each log clamped at -100, through
 * ad_binary_cross_entropy: PyTorch's gradient, large (not 0) at a confident
 * wrong p of 0 or 1. */
static ad_tensor *bce_elements(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target) {
  ad_tensor *t = nn_loss_target(ctx, "bce_loss", "prediction", pred, target);
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
  return ad_binary_cross_entropy(ctx, pred, t);
}

ad_tensor *nn_bce_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red) {
  return reduce(ctx, bce_elements(ctx, pred, target), red, "bce_loss");
}

/* The elements of BCE with logits z, target t and pos_weight pw (NULL:
 * none): -pw t log sigmoid(z) - (1 - t) log sigmoid(-z), one op either
 * way (ad_binary_cross_entropy_logits, or its _pw form, whose forms and
 * infinite logits ad.h describes). */
static ad_tensor *bce_logits_elements(ad_ctx *ctx, ad_tensor *z, ad_tensor *t, ad_tensor *pw) {
  return pw ? ad_binary_cross_entropy_logits_pw(ctx, z, t, pw)
            : ad_binary_cross_entropy_logits(ctx, z, t);
}

ad_tensor *nn_bce_with_logits_loss(ad_ctx *ctx, ad_tensor *logits, ad_tensor *target,
                                   nn_reduction red) {
  ad_tensor *t = nn_loss_target(ctx, "bce_with_logits_loss", "prediction", logits, target);
  if (!t) return NULL;
  return reduce(ctx, bce_logits_elements(ctx, logits, t, NULL), red, "bce_with_logits_loss");
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

/* l_n = -logp[n, label_n] for logp [N,C] and checked labels [N]: a
 * gather of the N picked elements (its gradient scatters dy into zeros of
 * [N,C]), so that -inf or NaN in another class (log of a zero probability)
 * is left out of the loss and its gradient, as PyTorch's gather does. [N]
 * on the tape. */
static ad_tensor *picked(ad_ctx *ctx, ad_tensor *logp, ad_tensor *labels) {
  if (!logp) return NULL;
  int64_t n = logp->shape[0], col[2] = {n, 1};
  ad_tensor *g = ad_gather(ctx, logp, 1, ad_reshape(ctx, labels, 2, col));
  return ad_neg(ctx, ad_reshape(ctx, g, 1, &n));
}

/* l_n = -sum_c t_nc log_softmax(z_n)_c, or with labels the fused
 * softmax_cross_entropy (mean over n; the sum is N times it); NN_NONE with
 * labels has no fused form: -log_softmax(z)[n, label_n], as PyTorch's
 * nll_loss(log_softmax(z)). */
ad_tensor *nn_cross_entropy_loss(ad_ctx *ctx, ad_tensor *logits, ad_tensor *target,
                                 nn_reduction red) {
  const char *fn = "cross_entropy_loss";
  /* [N, C, d1, ...], as F.cross_entropy takes it: the _ext form without
   * options (labels [N, d1, ...] or probabilities of the logits' shape) */
  if (ctx && logits && target && nn_check_input(ctx, fn, "logits", logits) == AD_OK &&
      logits->ndim > 2)
    return nn_cross_entropy_loss_ext(ctx, logits, target, red, NULL);
  if (ctx && target && target->dtype == AD_I32) {
    if (!check_labels(ctx, fn, logits, target) || !nn_loss_check_reduction(ctx, fn, red, false))
      return NULL;
    if (red == NN_NONE) return picked(ctx, ad_log_softmax(ctx, logits, 1), target);
    /* the sum summed (N times the mean was NaN for N = 0, and rounded) */
    ad_cross_entropy_opts o = {.sum = red == NN_SUM};
    return ad_softmax_cross_entropy_ext(ctx, logits, target, &o);
  }
  ad_tensor *t = nn_loss_target(ctx, fn, "prediction", logits, target);
  if (!t) return NULL;
  char a[64], b[64];
  if (logits->ndim != 2 || logits->shape[1] == 0) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: logits %s must be [N,C] with C >= 1", fn,
                 ad_shape_str(logits, a, sizeof a));
    return NULL;
  }
  /* rows of class probabilities: the logits' own shape, as PyTorch asks
   * (nn_loss_target takes any shape of as many elements: [N] float class
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

/* l_n = -logp[n, label_n] (picked) */
ad_tensor *nn_nll_loss(ad_ctx *ctx, ad_tensor *logp, ad_tensor *labels, nn_reduction red) {
  if (!check_labels(ctx, "nll_loss", logp, labels) ||
      !nn_loss_check_reduction(ctx, "nll_loss", red, false))
    return NULL;
  return reduce(ctx, picked(ctx, logp, labels), red, "nll_loss");
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

static ad_tensor *class_none(ad_ctx *ctx, const char *fn, ad_tensor *logits, ad_tensor *labels,
                             const nn_cross_entropy_opts *o);

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
  if (!nn_loss_check_reduction(ctx, fn, red, false)) return NULL;
  if (red == NN_NONE) { /* no fused form: class_loss, per position */
    nn_cross_entropy_opts ce = {
        .ignore = o.ignore, .ignore_index = o.ignore_index, .class_last = o.class_last};
    return class_none(ctx, fn, logits, labels, &ce);
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

/* ------------------------------------------------ losses with options */

/* Checks an options tensor w (what) of a loss on x: live, of ctx, x's
 * dtype, and, unless grad_ok, not requiring a gradient. */
static bool check_opt_tensor(ad_ctx *ctx, const char *fn, const char *what, const ad_tensor *w,
                             const ad_tensor *x, bool grad_ok) {
  char a[64], b[64];
  if (nn_check_input(ctx, fn, what, w) != AD_OK) return false;
  if (w->dtype != x->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: %s %s is %s, the prediction %s is %s", fn, what,
                 ad_shape_str(w, a, sizeof a), ad_dtype_name(w->dtype),
                 ad_shape_str(x, b, sizeof b), ad_dtype_name(x->dtype));
    return false;
  }
  if (!grad_ok && ad_tensor_requires_grad(w)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: %s %s requires a gradient; the loss is not differentiable in it (as in "
                 "PyTorch)",
                 fn, what, ad_shape_str(w, a, sizeof a));
    return false;
  }
  return true;
}

/* Checks logits [N,C,T...] (or class_last) and the options of a class loss;
 * labels tells whether the target is class labels. */
static bool check_class_opts(ad_ctx *ctx, const char *fn, const ad_tensor *z,
                             const nn_cross_entropy_opts *o, bool labels) {
  char a[64];
  if (z->dtype != AD_F32 && z->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: logits %s are %s; a float dtype is needed", fn,
                 ad_shape_str(z, a, sizeof a), ad_dtype_name(z->dtype));
    return false;
  }
  int cdim = o->class_last ? z->ndim - 1 : 1;
  if (z->ndim < 2 || z->shape[cdim] == 0) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: logits %s must be %s with C >= 1", fn,
                 ad_shape_str(z, a, sizeof a), o->class_last ? "[N,T...,C]" : "[N,C,T...]");
    return false;
  }
  if (!(o->label_smoothing >= 0 && o->label_smoothing <= 1)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: label_smoothing %g is outside [0, 1]", fn,
                 o->label_smoothing);
    return false;
  }
  if (o->weight) {
    const ad_tensor *w = o->weight;
    if (!check_opt_tensor(ctx, fn, "weight", w, z, !labels)) return false;
    if (w->ndim != 1 || w->shape[0] != z->shape[cdim]) {
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: weight %s must be [C] = [%lld], one per class", fn,
                   ad_shape_str(w, a, sizeof a), (long long)z->shape[cdim]);
      return false;
    }
  }
  return true;
}

/* Checks labels against logits z (classes in cdim): AD_I32, z's shape
 * without cdim, each in 0..C-1 or ignore_index. */
static bool check_class_labels(ad_ctx *ctx, const char *fn, const ad_tensor *z,
                               const ad_tensor *lab, const nn_cross_entropy_opts *o) {
  char a[64], b[64];
  if (lab->dtype != AD_I32) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: labels %s are %s; class labels must be i32", fn,
                 ad_shape_str(lab, a, sizeof a), ad_dtype_name(lab->dtype));
    return false;
  }
  int nd = z->ndim, cdim = o->class_last ? nd - 1 : 1;
  bool ok = lab->ndim == nd - 1;
  for (int k = 0, j = 0; ok && k < nd; k++)
    if (k != cdim) ok = lab->shape[j++] == z->shape[k];
  if (!ok) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: logits %s and labels %s: need %s and [N,T...]", fn,
                 ad_shape_str(z, a, sizeof a), ad_shape_str(lab, b, sizeof b),
                 o->class_last ? "[N,T...,C]" : "[N,C,T...]");
    return false;
  }
  int64_t C = z->shape[cdim];
  const int32_t *l = lab->data;
  for (int64_t i = 0; i < lab->size; i++) {
    if ((l[i] >= 0 && l[i] < C) || (o->ignore && l[i] == o->ignore_index)) continue;
    char ign[48] = "";
    if (o->ignore) snprintf(ign, sizeof ign, " and is not ignore_index %d", o->ignore_index);
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: label %d at position %lld (%s of labels %s) is outside 0..%lld%s", fn, l[i],
                 (long long)i, coords_str(lab, i, a, sizeof a), ad_shape_str(lab, b, sizeof b),
                 (long long)C - 1, ign);
    return false;
  }
  return true;
}

/* The weighted, smoothed, ignoring loss over class labels as PyTorch 1.13
 * composes it (cross_entropy_loss_label_smoothing and nll_loss in
 * LossNLL.cpp), for z [N,C,T...] (classes in dim 1) and checked labels
 * [N,T...]; z is logits (log_softmax taken here) or, for nll_loss,
 * log-probabilities. With y the label, w the weights (1 without them) and
 * W = sum of w_y over the positions kept (not ignored):
 *   S1 = sum_p w_y (-logp_py)          (a gather: other classes unread)
 *   S2 = sum_p sum_c w_c (-logp_pc)    (label smoothing only)
 *   loss = (1 - eps) S1 / W + eps/C S2 / W   (NN_SUM: without the / W)
 * and with NN_NONE the terms of S1 and S2 per position, shaped as lab (0
 * at the ignored ones), as PyTorch's reduction='none'.
 * W is a constant (the weights are). Ignored positions are selected out,
 * so that they get an exact 0 gradient; where one of their logits is not
 * finite, their logits are also replaced by 0 before log_softmax (below),
 * which would otherwise make that gradient NaN. */
static ad_tensor *class_loss(ad_ctx *ctx, ad_tensor *z, const ad_tensor *lab, nn_reduction red,
                             const nn_cross_entropy_opts *o, bool logits) {
  int nd = z->ndim;
  int64_t N = z->shape[0], C = z->shape[1], T = 1;
  for (int k = 2; k < nd; k++) T *= z->shape[k];
  int64_t ks[AD_MAX_DIMS]; /* [N,1,T...]: one entry per position */
  for (int k = 0; k < nd; k++) ks[k] = k == 1 ? 1 : z->shape[k];
  /* each position's label (0 where ignored: read, then dropped by keep)
   * and, with weights, its weight; W their sum (without, the count) */
  const ad_tensor *w = o->weight;
  ad_tensor *pick = nn_tmp_tensor(ctx, AD_I32, nd, ks);
  ad_tensor *wy = w ? nn_tmp_tensor(ctx, z->dtype, nd, ks) : NULL;
  if (!pick || (w && !wy)) return NULL;
  const int32_t *l = lab->data;
  int32_t *pk = pick->data;
  double W = 0;
  int64_t kept_n = 0;
  for (int64_t p = 0; p < N * T; p++) {
    int32_t y = l[p];
    bool kept = !(o->ignore && y == o->ignore_index);
    pk[p] = kept ? y : 0;
    kept_n += kept;
    if (!w) continue;
    double wv = kept ? ad_tensor_get(w, y) : 0.0;
    if (z->dtype == AD_F32)
      ((float *)wy->data)[p] = (float)wv;
    else
      ((double *)wy->data)[p] = wv;
    W += wv;
  }
  bool skipped = kept_n < N * T;
  if (!w) W = (double)kept_n;
  ad_tensor *zero = ad_scalar(ctx, z->dtype, 0.0);
  ad_tensor *keep = NULL;
  if (skipped) {
    keep = nn_tmp_tensor(ctx, z->dtype, nd, ks);
    if (!keep) return NULL;
    for (int64_t p = 0; p < N * T; p++) {
      bool k = !(o->ignore && l[p] == o->ignore_index);
      if (z->dtype == AD_F32)
        ((float *)keep->data)[p] = k;
      else
        ((double *)keep->data)[p] = k;
    }
  }
  /* An ignored position's logits are selected out before the softmax only
   * where one of them is not finite: its lane's softmax would be NaN, and
   * its gradient, 0 - p sum(0), NaN with it. Finite, the lane's gradient
   * is that 0 without the select, and the kept lanes' values and
   * gradients are the same bits either way: a pass over the logits saved,
   * forward and backward. */
  bool bad_ignored = false;
  if (skipped && logits) {
    for (int64_t p = 0; p < N * T && !bad_ignored; p++) {
      if (!(o->ignore && l[p] == o->ignore_index)) continue;
      int64_t n = p / T, t = p % T;
      for (int64_t c = 0; c < C && !bad_ignored; c++)
        bad_ignored = !isfinite(ad_tensor_get(z, (n * C + c) * T + t));
    }
  }
  ad_tensor *logp = z;
  if (logits) logp = ad_log_softmax(ctx, bad_ignored ? ad_where(ctx, keep, z, zero) : z, 1);
  /* logp at each label; where (not a product with 0) keeps an ignored
   * position's value out, also an infinite or NaN one, and its gradient */
  ad_tensor *rows = ad_gather(ctx, logp, 1, pick);
  if (skipped) rows = ad_where(ctx, keep, rows, zero);
  if (w) rows = ad_mul(ctx, rows, wy);
  bool none = red == NN_NONE; /* s1, s2 per position [N,1,T...] */
  ad_tensor *s1 = ad_neg(ctx, none ? rows : ad_sum(ctx, rows)), *s2 = NULL;
  double eps = o->label_smoothing;
  if (eps > 0) {
    ad_tensor *wl = logp;
    if (w) {
      int64_t ws[AD_MAX_DIMS];
      for (int k = 0; k < nd; k++) ws[k] = k == 1 ? C : 1;
      wl = ad_mul(ctx, logp, ad_reshape(ctx, o->weight, nd, ws));
    }
    ad_tensor *srows = ad_sum_axis(ctx, wl, 1, true);
    if (skipped) srows = ad_where(ctx, keep, srows, zero);
    s2 = ad_neg(ctx, none ? srows : ad_sum(ctx, srows));
  }
  if (red == NN_MEAN) { /* W may be 0: NaN, as PyTorch's division gives */
    ad_tensor *wsum = ad_scalar(ctx, z->dtype, W);
    s1 = ad_div(ctx, s1, wsum);
    if (s2) s2 = ad_div(ctx, s2, wsum);
  }
  ad_tensor *loss = s1;
  if (s2)
    loss = ad_add(ctx, ad_mul_scalar(ctx, s1, 1 - eps), ad_mul_scalar(ctx, s2, eps / (double)C));
  if (none && skipped) /* +0 at the ignored positions, as PyTorch's (-(0) is -0) */
    loss = ad_where(ctx, keep, loss, zero);
  return none && loss ? ad_reshape(ctx, loss, lab->ndim, lab->shape) : loss;
}

/* [N, T..., C] as [P, C] (a view) and its labels as [P]; *z and *lab are
 * replaced. */
static void rows_of_class_last(ad_ctx *ctx, ad_tensor **z, ad_tensor **lab) {
  int64_t P = (*lab)->size, zs[2] = {P, (*z)->shape[(*z)->ndim - 1]};
  *z = ad_reshape(ctx, *z, 2, zs);
  *lab = ad_reshape(ctx, *lab, 1, &P);
}

/* The cross-entropy of logits (classes as o says) per position, shaped as
 * labels (checked here), with NN_NONE: class_loss. */
static ad_tensor *class_none(ad_ctx *ctx, const char *fn, ad_tensor *logits, ad_tensor *labels,
                             const nn_cross_entropy_opts *o) {
  if (!check_class_labels(ctx, fn, logits, labels, o)) return NULL;
  ad_tensor *z = logits, *lab = labels;
  if (o->class_last && z->ndim > 2) rows_of_class_last(ctx, &z, &lab);
  if (!z || !lab) return NULL;
  ad_tensor *l = class_loss(ctx, z, lab, NN_NONE, o, true);
  return l ? ad_reshape(ctx, l, labels->ndim, labels->shape) : NULL;
}

ad_tensor *nn_cross_entropy_loss_ext(ad_ctx *ctx, ad_tensor *logits, ad_tensor *target,
                                     nn_reduction red, const nn_cross_entropy_opts *opts) {
  const char *fn = "cross_entropy_loss";
  char a[64], b[64];
  if (!ctx || !logits || !target) {
    nn_null_arg(ctx, fn, logits ? "target" : "logits");
    return NULL;
  }
  if (nn_check_input(ctx, fn, "logits", logits) != AD_OK ||
      nn_check_input(ctx, fn, "target", target) != AD_OK)
    return NULL;
  nn_cross_entropy_opts o = {0};
  if (opts) o = *opts;
  bool labels = target->dtype == AD_I32;
  if (!check_class_opts(ctx, fn, logits, &o, labels) ||
      !nn_loss_check_reduction(ctx, fn, red, false))
    return NULL;
  int nd = logits->ndim, cdim = o.class_last ? nd - 1 : 1;
  int64_t C = logits->shape[cdim];
  if (labels) {
    if (!check_class_labels(ctx, fn, logits, target, &o)) return NULL;
    ad_tensor *z = logits, *lab = target;
    if (o.class_last && nd > 2) rows_of_class_last(ctx, &z, &lab);
    if (!o.weight && o.label_smoothing == 0 && red != NN_NONE) {
      ad_cross_entropy_opts co = {
          .ignore = o.ignore, .ignore_index = o.ignore_index, .sum = red == NN_SUM};
      return ad_softmax_cross_entropy_ext(ctx, z, lab, &co);
    }
    if (!z || !lab) return NULL;
    /* NN_NONE: the fused op has no per-position form */
    ad_tensor *l = class_loss(ctx, z, lab, red, &o, true);
    return red == NN_NONE && l ? ad_reshape(ctx, l, target->ndim, target->shape) : l;
  }
  /* probabilities of the logits' shape */
  bool same = target->ndim == nd;
  for (int k = 0; same && k < nd; k++) same = target->shape[k] == logits->shape[k];
  if (!same) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: a float target %s must have the logits' shape %s (class labels are i32)", fn,
                 ad_shape_str(target, a, sizeof a), ad_shape_str(logits, b, sizeof b));
    return NULL;
  }
  if (target->dtype != logits->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: target %s is %s, the logits %s are %s", fn,
                 ad_shape_str(target, a, sizeof a), ad_dtype_name(target->dtype),
                 ad_shape_str(logits, b, sizeof b), ad_dtype_name(logits->dtype));
    return NULL;
  }
  if (o.ignore) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: ignore_index applies to class labels, not to a float target %s", fn,
                 ad_shape_str(target, a, sizeof a));
    return NULL;
  }
  if (nd == 2 && !o.weight && o.label_smoothing == 0)
    return nn_cross_entropy_loss(ctx, logits, target, red);
  /* -sum(logp t' w) (/ N T... for the mean), t' = (1 - eps) t + eps/C, as
   * cross_entropy_loss_prob_target in PyTorch 1.13 */
  double eps = o.label_smoothing;
  ad_tensor *t = target;
  if (eps > 0) t = ad_add_scalar(ctx, ad_mul_scalar(ctx, t, 1 - eps), eps / (double)C);
  ad_tensor *prod = ad_mul(ctx, ad_log_softmax(ctx, logits, cdim), t);
  if (o.weight) {
    int64_t ws[AD_MAX_DIMS];
    for (int k = 0; k < nd; k++) ws[k] = k == cdim ? C : 1;
    prod = ad_mul(ctx, prod, ad_reshape(ctx, o.weight, nd, ws));
  }
  if (red == NN_NONE) return ad_neg(ctx, ad_sum_axis(ctx, prod, cdim, false));
  ad_tensor *s = ad_neg(ctx, ad_sum(ctx, prod));
  if (red == NN_SUM) return s;
  /* NaN for no position, as PyTorch's */
  return ad_div(ctx, s, ad_scalar(ctx, logits->dtype, (double)(logits->size / C)));
}

ad_tensor *nn_nll_loss_ext(ad_ctx *ctx, ad_tensor *logp, ad_tensor *labels, nn_reduction red,
                           const nn_cross_entropy_opts *opts) {
  const char *fn = "nll_loss";
  if (!ctx || !logp || !labels) {
    nn_null_arg(ctx, fn, logp ? "labels" : "log-probabilities");
    return NULL;
  }
  if (nn_check_input(ctx, fn, "log-probabilities", logp) != AD_OK ||
      nn_check_input(ctx, fn, "labels", labels) != AD_OK)
    return NULL;
  nn_cross_entropy_opts o = {0};
  if (opts) o = *opts;
  if (o.label_smoothing != 0) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: label_smoothing %g is given; it is an option of cross_entropy_loss", fn,
                 o.label_smoothing);
    return NULL;
  }
  if (!check_class_opts(ctx, fn, logp, &o, true) ||
      !check_class_labels(ctx, fn, logp, labels, &o) ||
      !nn_loss_check_reduction(ctx, fn, red, false))
    return NULL;
  ad_tensor *z = logp, *lab = labels;
  if (o.class_last && z->ndim > 2) rows_of_class_last(ctx, &z, &lab);
  if (!z || !lab) return NULL;
  ad_tensor *l = z->ndim == 2 && !o.weight && !o.ignore ? nn_nll_loss(ctx, z, lab, red)
                                                        : class_loss(ctx, z, lab, red, &o, false);
  return red == NN_NONE && l ? ad_reshape(ctx, l, labels->ndim, labels->shape) : l;
}

/* Checks w (what) of a binary loss: x's dtype, a constant, and broadcasting
 * to x's shape. */
static bool check_bce_tensor(ad_ctx *ctx, const char *fn, const char *what, const ad_tensor *w,
                             const ad_tensor *x) {
  char a[64], b[64];
  if (!check_opt_tensor(ctx, fn, what, w, x, false)) return false;
  bool ok = w->ndim <= x->ndim;
  for (int k = 1; ok && k <= w->ndim; k++) {
    int64_t d = w->shape[w->ndim - k];
    ok = d == 1 || d == x->shape[x->ndim - k];
  }
  if (!ok) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: %s %s does not broadcast to the prediction's shape %s", fn,
                 what, ad_shape_str(w, a, sizeof a), ad_shape_str(x, b, sizeof b));
    return false;
  }
  return true;
}

ad_tensor *nn_bce_loss_ext(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red,
                           const nn_bce_opts *opts) {
  const char *fn = "bce_loss";
  nn_bce_opts o = {0};
  if (opts) o = *opts;
  ad_tensor *l = bce_elements(ctx, pred, target);
  if (!l) return NULL;
  if (o.pos_weight) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: pos_weight is given; it is an option of bce_with_logits_loss (PyTorch's "
                 "binary_cross_entropy has none)",
                 fn);
    return NULL;
  }
  if (o.weight) {
    if (!check_bce_tensor(ctx, fn, "weight", o.weight, pred)) return NULL;
    l = ad_mul(ctx, l, o.weight);
  }
  return reduce(ctx, l, red, fn);
}

/* l = w ((1 - t) z + (1 + (pw - 1) t) softplus(-z)), bce_logits_elements */
ad_tensor *nn_bce_with_logits_loss_ext(ad_ctx *ctx, ad_tensor *logits, ad_tensor *target,
                                       nn_reduction red, const nn_bce_opts *opts) {
  const char *fn = "bce_with_logits_loss";
  nn_bce_opts o = {0};
  if (opts) o = *opts;
  ad_tensor *t = nn_loss_target(ctx, fn, "prediction", logits, target);
  if (!t) return NULL;
  if ((o.weight && !check_bce_tensor(ctx, fn, "weight", o.weight, logits)) ||
      (o.pos_weight && !check_bce_tensor(ctx, fn, "pos_weight", o.pos_weight, logits)))
    return NULL;
  ad_tensor *l = bce_logits_elements(ctx, logits, t, o.pos_weight);
  if (o.weight) l = ad_mul(ctx, l, o.weight);
  return reduce(ctx, l, red, fn);
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
