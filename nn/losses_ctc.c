/* losses_ctc.c: the connectionist temporal classification loss
 * (torch.nn.CTCLoss), composed from ad_ ops: the forward (alpha)
 * recursion in log space (the op ctc_alpha), so the tape derives the
 * gradient, to any order.
 *
 * With l' a sample's target with a blank around every label (length 2S+1),
 *   alpha_{-1}(s) = [s = 0]                      (log space: 0 or "-inf")
 *   alpha_t(s) = lse(alpha_{t-1}(s), alpha_{t-1}(s-1),
 *                    alpha_{t-1}(s-2) if l'_s != blank and l'_s != l'_{s-2})
 *                + log_probs[t, l'_s]
 *   loss = -lse(alpha_{T-1}(2S), alpha_{T-1}(2S-1))
 * over a batch at once: rows [N, 2S+1] (S the longest target; the rows of
 * shorter targets run on with blanks, never read). The emissions
 * log_probs[t, n, l'_s] are gathered once (one index_select of
 * [T, N, 2S+1]), the skip mask is made once, and the op ctc_alpha runs the
 * whole recursion in one pass (its backward, the posterior-weighted
 * adjoints, in one pass back; made of ops with create_graph). alpha_{-1}
 * is the start before any frame, so a sample of input length T_n reads
 * alpha_{T_n - 1} (its T_n-th row of the alphas; a sample of input
 * length 0 reads the start).
 *
 * "-inf" is NEG, a large finite number: a logsumexp of candidates that are
 * all -inf would give NaN gradients (0 * exp(-inf + inf)), also where the
 * gradient flowing in is 0. Emissions are clamped at NEG (a log-probability
 * -inf, probability 0, gets gradient 0), and a log-likelihood below
 * IMPOSSIBLE counts as impossible: loss inf, or 0 with zero_infinity, as
 * torch's -inf. */
#include "nn_internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define NEG        (-1e30)
#define IMPOSSIBLE (-5e29)

/* The checked shapes of a call: T frames, N samples, C classes, targets
 * padded [N, S] (stride S) or concatenated (off[n] their offsets). */
typedef struct ctc_dims {
  int64_t T, N, C, S, stride, maxlen, maxin;
  bool padded;
} ctc_dims;

/* Checks the tensors, lengths, labels, blank and the reduction; fills d.
 * false with the error recorded. */
static bool ctc_check(ad_ctx *ctx, const char *fn, ad_tensor *lp, ad_tensor *tg, const int64_t *il,
                      const int64_t *tl, int blank, nn_reduction red, ctc_dims *d) {
  char a[64], b[64];
  if (!ctx || !lp || !tg || !il || !tl) {
    nn_null_arg(ctx, fn,
                !lp   ? "log_probs"
                : !tg ? "targets"
                : !il ? "input_lengths"
                      : "target_lengths");
    return false;
  }
  if (nn_check_input(ctx, fn, "log_probs", lp) != AD_OK ||
      nn_check_input(ctx, fn, "targets", tg) != AD_OK)
    return false;
  if (lp->dtype != AD_F32 && lp->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: log_probs %s is %s; a float dtype is needed", fn,
                 ad_shape_str(lp, a, sizeof a), ad_dtype_name(lp->dtype));
    return false;
  }
  if (tg->dtype != AD_I32) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: targets %s are %s; class labels must be i32", fn,
                 ad_shape_str(tg, a, sizeof a), ad_dtype_name(tg->dtype));
    return false;
  }
  bool batched = lp->ndim == 3;
  if ((lp->ndim != 2 && lp->ndim != 3) || lp->shape[0] == 0 || lp->shape[lp->ndim - 1] == 0) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: log_probs %s: need [T,N,C] (or [T,C] for one sample) with T, C >= 1", fn,
                 ad_shape_str(lp, a, sizeof a));
    return false;
  }
  d->T = lp->shape[0];
  d->N = batched ? lp->shape[1] : 1;
  d->C = lp->shape[lp->ndim - 1];
  if (blank < 0 || blank >= d->C) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: blank %d is outside the classes 0..%lld", fn, blank,
                 (long long)d->C - 1);
    return false;
  }
  /* as torch, also unbatched: 1-D targets are concatenated, 2-D padded */
  d->padded = tg->ndim == 2;
  if (tg->ndim != 1 && (tg->ndim != 2 || tg->shape[0] != d->N)) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: targets %s do not fit log_probs %s: need [%lld,S] (padded) or 1-D "
                 "(concatenated)",
                 fn, ad_shape_str(tg, a, sizeof a), ad_shape_str(lp, b, sizeof b), (long long)d->N);
    return false;
  }
  d->S = d->padded ? tg->shape[tg->ndim - 1] : 0;
  d->stride = d->padded ? d->S : 0;
  d->maxlen = 0, d->maxin = 0;
  int64_t sum = 0;
  for (int64_t n = 0; n < d->N; n++) {
    if (il[n] < 0 || il[n] > d->T) {
      ad_set_error(ctx, AD_ERR_ARG, "%s: input_lengths[%lld] = %lld is outside 0..%lld (T)", fn,
                   (long long)n, (long long)il[n], (long long)d->T);
      return false;
    }
    if (tl[n] < 0 || (d->padded && tl[n] > d->S)) {
      if (d->padded)
        ad_set_error(ctx, AD_ERR_ARG,
                     "%s: target_lengths[%lld] = %lld is outside 0..%lld (the targets' S)", fn,
                     (long long)n, (long long)tl[n], (long long)d->S);
      else
        ad_set_error(ctx, AD_ERR_ARG, "%s: target_lengths[%lld] = %lld is negative", fn,
                     (long long)n, (long long)tl[n]);
      return false;
    }
    /* concatenated: each length within what is left of the targets, so
     * the sum cannot wrap around to their size (and labels be read past
     * them) */
    if (!d->padded && tl[n] > tg->size - sum) {
      ad_set_error(ctx, AD_ERR_SHAPE,
                   "%s: concatenated targets %s: the target_lengths sum to more than their size "
                   "(target_lengths[%lld] = %lld)",
                   fn, ad_shape_str(tg, a, sizeof a), (long long)n, (long long)tl[n]);
      return false;
    }
    sum += tl[n];
    if (tl[n] > d->maxlen) d->maxlen = tl[n];
    if (il[n] > d->maxin) d->maxin = il[n];
  }
  if (!d->padded && sum != tg->size) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: concatenated targets %s: the target_lengths sum to %lld, not their size", fn,
                 ad_shape_str(tg, a, sizeof a), (long long)sum);
    return false;
  }
  const int32_t *lab = tg->data;
  for (int64_t n = 0, off = 0; n < d->N; n++) {
    int64_t at = d->padded ? n * d->stride : off;
    for (int64_t j = 0; j < tl[n]; j++) {
      int32_t v = lab[at + j];
      if (v < 0 || v >= d->C || v == blank) {
        ad_set_error(ctx, AD_ERR_ARG, "%s: label %d (target %lld of sample %lld) is %s", fn, v,
                     (long long)j, (long long)n, v == blank ? "the blank" : "outside the classes");
        return false;
      }
    }
    off += tl[n];
  }
  if (!nn_loss_check_reduction(ctx, fn, red, false)) return false;
  /* the gather indices are i32 */
  int64_t L = 2 * d->maxlen + 1, steps = d->maxin > 0 ? d->maxin : 1;
  if (d->N > 0 && (d->T * d->C > INT32_MAX / d->N || (steps + 1) * L > INT32_MAX / d->N)) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: log_probs %s with targets of up to %lld labels: too "
                 "many elements for i32 indices",
                 fn, ad_shape_str(lp, a, sizeof a), (long long)d->maxlen);
    return false;
  }
  return true;
}

/* The per-sample losses [N] (before the reduction; NULL with the error
 * recorded): -log p(target | log_probs), inf for an impossible one (0 with
 * zero_infinity). The constants (indices, masks) are tensors of the tape,
 * filled here. */
static ad_tensor *ctc_per_sample(ad_ctx *ctx, ad_tensor *lp, const int32_t *lab, const int64_t *il,
                                 const int64_t *tl, int blank, bool zero_infinity,
                                 const ctc_dims *d) {
  ad_dtype dt = lp->dtype;
  int64_t T = d->T, N = d->N, C = d->C, L = 2 * d->maxlen + 1;
  int64_t steps = d->maxin > 0 ? d->maxin : 1; /* one step keeps log_probs on the tape */
  int64_t s3[3] = {T, N, C};
  ad_tensor *x = ad_reshape(ctx, lp, 3, s3);
  if (N == 0) /* torch: the mean of no sample is NaN, their sum 0 */
    return ad_sum_axis(ctx, ad_sum_axis(ctx, x, 2, false), 0, false);
  /* scratch: the extended labels [N, L] */
  size_t bytes = (size_t)(N * L) * sizeof(int32_t);
  unsigned char *mem = ad_malloc(ctx, bytes);
  if (!mem) return NULL;
  int32_t *ext = (int32_t *)mem;
  ad_tensor *loss = NULL;
  for (int64_t n = 0, off = 0; n < N; n++) {
    const int32_t *t = lab + (d->padded ? n * d->stride : off);
    for (int64_t s = 0; s < L; s++)
      ext[n * L + s] = s % 2 && (s - 1) / 2 < tl[n] ? t[(s - 1) / 2] : blank;
    off += tl[n];
  }
  /* emissions E[t, n, s] = log_probs[t, n, l'_s], frames past a sample's
   * input length 0 (their values, NaN too, reach neither value nor
   * gradient, as in torch), clamped at NEG */
  int64_t es3[3] = {steps, N, L}, flat = T * N * C;
  ad_tensor *gi = nn_tmp_tensor(ctx, AD_I32, 3, es3);
  if (!gi) goto done;
  int32_t *g = gi->data;
  for (int64_t t = 0; t < steps; t++)
    for (int64_t n = 0; n < N; n++)
      for (int64_t s = 0; s < L; s++)
        g[(t * N + n) * L + s] = (int32_t)((t * N + n) * C + ext[n * L + s]);
  ad_tensor *e = ad_index_select(ctx, ad_reshape(ctx, x, 1, &flat), gi);
  bool short_in = false;
  for (int64_t n = 0; n < N; n++) short_in |= il[n] < steps;
  if (short_in && e) {
    int64_t ms[3] = {steps, N, 1};
    ad_tensor *m = nn_tmp_tensor(ctx, dt, 3, ms);
    if (!m) goto done;
    for (int64_t t = 0; t < steps; t++)
      for (int64_t n = 0; n < N; n++) ad_tensor_set(m, t * N + n, t < il[n]);
    e = ad_where(ctx, m, e, ad_scalar(ctx, dt, 0.0));
  }
  e = ad_clamp(ctx, e, NEG, INFINITY);
  /* the skip mask: from s - 2 to s where l'_s is a label unlike l'_{s-2} */
  int64_t nl[2] = {N, L}, n2[2] = {N, 2};
  ad_tensor *skip = nn_tmp_tensor(ctx, AD_I32, 2, nl), *neg = ad_scalar(ctx, dt, NEG);
  if (!skip || !neg) goto done;
  for (int64_t n = 0; n < N; n++)
    for (int64_t s = 0; s < L; s++) {
      const int32_t *r = ext + n * L;
      ((int32_t *)skip->data)[n * L + s] = s >= 2 && r[s] != blank && r[s] != r[s - 2];
    }
  /* the alphas of every step, [steps + 1, N, L] (one op) */
  ad_tensor *a0 = nn_tmp_tensor(ctx, dt, 2, nl);
  if (!a0) goto done;
  for (int64_t i = 0; i < N * L; i++) ad_tensor_set(a0, i, i % L ? NEG : 0.0);
  ad_tensor *alphas = ad_ctc_alpha(ctx, e, skip, a0);
  /* each sample's alpha_{T_n - 1} at 2 S_n and 2 S_n - 1 (S_n = 0: the
   * first alone, the second masked to NEG) */
  int64_t all = (steps + 1) * N * L;
  ad_tensor *ri = nn_tmp_tensor(ctx, AD_I32, 2, n2), *rm = nn_tmp_tensor(ctx, dt, 2, n2);
  if (!ri || !rm) goto done;
  bool empty = false;
  for (int64_t n = 0; n < N; n++) {
    int64_t at = (il[n] * N + n) * L + 2 * tl[n];
    ((int32_t *)ri->data)[2 * n] = (int32_t)at;
    ((int32_t *)ri->data)[2 * n + 1] = (int32_t)(tl[n] ? at - 1 : at);
    ad_tensor_set(rm, 2 * n, 1.0), ad_tensor_set(rm, 2 * n + 1, tl[n] > 0);
    empty |= tl[n] == 0;
  }
  ad_tensor *ends = ad_index_select(ctx, ad_reshape(ctx, alphas, 1, &all), ri);
  if (empty) ends = ad_where(ctx, rm, ends, neg);
  ad_tensor *ll = ad_logsumexp(ctx, ends, 1, false);
  ad_tensor *imp = nn_tmp_tensor(ctx, dt, 1, &N);
  if (!ll || !imp) goto done;
  /* impossible alignments: loss inf (torch's -log 0) or 0 */
  bool any = false;
  for (int64_t n = 0; n < N; n++) {
    bool no = ad_tensor_get(ll, n) < IMPOSSIBLE;
    ad_tensor_set(imp, n, no);
    any |= no;
  }
  loss = ad_neg(ctx, ll);
  if (any) {
    loss = ad_where(ctx, imp, ad_scalar(ctx, dt, zero_infinity ? 0.0 : INFINITY), loss);
    /* torch's gradient there is NaN on the sample's frames (exp(-inf +
     * inf)): a term of value 0 whose derivative holds 0/0, sqrt(u)^2 at u
     * = 0, on those frames. Where log_probs are infinite, u is NaN: the
     * term's value is taken from 0 there (mf) and its gradient is still
     * NaN (0 * NaN in the product's backward). */
    if (!zero_infinity && ad_tensor_requires_grad(lp) && ad_grad_enabled(ctx)) {
      int64_t ms[3] = {T, N, 1};
      ad_tensor *m = nn_tmp_tensor(ctx, dt, 3, ms), *mf = nn_tmp_tensor(ctx, dt, 3, s3);
      if (!m || !mf) {
        loss = NULL;
        goto done;
      }
      for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
          bool on = t < il[n] && ad_tensor_get(imp, n) != 0;
          ad_tensor_set(m, t * N + n, on);
          for (int64_t c = 0; c < C; c++) {
            int64_t i = (t * N + n) * C + c;
            ad_tensor_set(mf, i, on && isfinite(ad_tensor_get(x, i)));
          }
        }
      ad_tensor *u = ad_where(ctx, m, ad_sub(ctx, x, ad_detach(ctx, x)), ad_scalar(ctx, dt, 1.0));
      ad_tensor *r = ad_sqrt(ctx, u);
      ad_tensor *z = ad_where(ctx, mf, ad_mul(ctx, r, r), ad_scalar(ctx, dt, 0.0));
      loss = ad_add(ctx, loss, ad_sum_axis(ctx, ad_sum_axis(ctx, z, 2, false), 0, false));
    }
  }
done:
  ad_free(ctx, mem, bytes);
  return loss;
}

/* PyTorch 1.13's F.ctc_loss: the per-sample losses, then
 *   NN_NONE: l_n, [N] (0-d for an unbatched [T,C], as torch's squeeze)
 *   NN_SUM:  sum_n l_n
 *   NN_MEAN: mean_n l_n / max(S_n, 1)   (torch's division, in log_probs' dtype) */
ad_tensor *nn_ctc_loss(ad_ctx *ctx, ad_tensor *log_probs, ad_tensor *targets,
                       const int64_t *input_lengths, const int64_t *target_lengths, int blank,
                       nn_reduction red, bool zero_infinity) {
  const char *fn = "ctc_loss";
  ctc_dims d;
  if (!ctc_check(ctx, fn, log_probs, targets, input_lengths, target_lengths, blank, red, &d))
    return NULL;
  ad_tensor *l = ctc_per_sample(ctx, log_probs, targets->data, input_lengths, target_lengths, blank,
                                zero_infinity, &d);
  if (!l) return NULL;
  if (red == NN_NONE) return log_probs->ndim == 2 ? ad_reshape(ctx, l, 0, NULL) : l;
  if (red == NN_SUM) return ad_sum(ctx, l);
  ad_tensor *len = nn_tmp_tensor(ctx, log_probs->dtype, 1, &d.N);
  if (!len) return NULL;
  for (int64_t n = 0; n < d.N; n++)
    ad_tensor_set(len, n, target_lengths[n] > 1 ? (double)target_lengths[n] : 1.0);
  return ad_mean(ctx, ad_div(ctx, l, len));
}
