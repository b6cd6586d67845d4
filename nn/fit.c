/* fit.c: training steps, nn_fit with its history and progress display,
 * nn_evaluate and nn_predict. */
#include "nn_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

/* --------------------------------------------------------------- history */

enum { H_LOSS, H_ACC, H_VAL_LOSS, H_VAL_ACC, H_LR, H_SECONDS, H_GN_MEAN, H_GN_MAX, H_KEYS };
static const char *const hist_keys[H_KEYS] = {"loss",           "accuracy",     "val_loss",
                                              "val_accuracy",   "lr",           "seconds",
                                              "grad_norm_mean", "grad_norm_max"};
#define GN_PREFIX "grad_norm/"

struct nn_history {
  ad_ctx *ctx;
  int n, cap;
  bool has[H_KEYS];
  double *vals[H_KEYS];
  int np, pcap;   /* per-parameter gradient norms: np keys "grad_norm/<name>" */
  char **pkeys;   /* np keys (of pcap allocated) */
  double *pvals;  /* pcap rows of cap values */
  int best_epoch; /* early stopping's best epoch, -1 */
};

static nn_history *history_new(ad_ctx *ctx, int cap) {
  nn_history *h = ad_malloc(ctx, sizeof *h);
  if (!h) return NULL;
  memset(h, 0, sizeof *h);
  h->ctx = ctx;
  h->cap = cap;
  h->best_epoch = -1;
  for (int k = 0; k < H_KEYS; k++)
    if (!(h->vals[k] = ad_malloc(ctx, (size_t)cap * sizeof(double)))) {
      nn_history_free(h);
      return NULL;
    }
  return h;
}

void nn_history_free(nn_history *h) {
  if (!h) return;
  for (int k = 0; k < H_KEYS; k++) ad_free(h->ctx, h->vals[k], (size_t)h->cap * sizeof(double));
  for (int i = 0; i < h->np; i++) nn_strfree(h->ctx, h->pkeys[i]);
  if (h->pcap) {
    ad_free(h->ctx, h->pkeys, (size_t)h->pcap * sizeof *h->pkeys);
    ad_free(h->ctx, h->pvals, (size_t)h->pcap * (size_t)h->cap * sizeof(double));
  }
  ad_free(h->ctx, h, sizeof *h);
}

/* Adds the keys "grad_norm/<name>" of p's parameters to h. */
static bool history_add_param_keys(nn_history *h, const nn_params *p) {
  int np = nn_params_count(p);
  if (np == 0) return true;
  h->pkeys = ad_malloc(h->ctx, (size_t)np * sizeof *h->pkeys);
  h->pvals = h->pkeys ? ad_malloc(h->ctx, (size_t)np * (size_t)h->cap * sizeof(double)) : NULL;
  if (!h->pvals) {
    ad_free(h->ctx, h->pkeys, (size_t)np * sizeof *h->pkeys);
    h->pkeys = NULL;
    return false;
  }
  h->pcap = np;
  for (int i = 0; i < np; i++) {
    const char *name = nn_params_name(p, i);
    size_t n = strlen(GN_PREFIX) + strlen(name) + 1; /* freed by nn_strfree */
    if (!(h->pkeys[i] = ad_malloc(h->ctx, n))) return false;
    snprintf(h->pkeys[i], n, GN_PREFIX "%s", name);
    h->np++;
  }
  return true;
}

int nn_history_epochs(const nn_history *h) { return h ? h->n : 0; }

static int hist_key(const char *key) {
  for (int k = 0; key && k < H_KEYS; k++)
    if (strcmp(key, hist_keys[k]) == 0) return k;
  return -1;
}

const double *nn_history_values(const nn_history *h, const char *key) {
  int k = hist_key(key);
  if (h && k >= 0) return h->has[k] ? h->vals[k] : NULL;
  for (int i = 0; h && key && i < h->np; i++)
    if (strcmp(key, h->pkeys[i]) == 0) return h->pvals + (size_t)i * (size_t)h->cap;
  return NULL;
}

int nn_history_key_count(const nn_history *h) {
  int n = 0;
  for (int k = 0; h && k < H_KEYS; k++) n += h->has[k];
  return h ? n + h->np : 0;
}

const char *nn_history_key(const nn_history *h, int i) {
  for (int k = 0; h && i >= 0 && k < H_KEYS; k++)
    if (h->has[k] && i-- == 0) return hist_keys[k];
  return h && i >= 0 && i < h->np ? h->pkeys[i] : NULL;
}

int nn_history_best_epoch(const nn_history *h) { return h ? h->best_epoch : -1; }

ad_ctx *nn_history_ctx(const nn_history *h) { return h ? h->ctx : NULL; }

void nn_history_set_best_epoch(nn_history *h, int epoch) { h->best_epoch = epoch; }

double nn_history_get(const nn_history *h, const char *key, int epoch) {
  const double *v = nn_history_values(h, key);
  return v && epoch >= 0 && epoch < h->n ? v[epoch] : NAN;
}

/* ------------------------------------------------------------------ steps */

/* The loss as a checked scalar; records an error if the model or the loss
 * returned NULL without one. */
static ad_tensor *run_loss(ad_ctx *ctx, nn_loss_fn loss, ad_tensor *pred, ad_tensor *y,
                           const char *fn) {
  if (!pred) {
    if (ad_last_status(ctx) == AD_OK)
      ad_set_error(ctx, AD_ERR_ARG, "%s: the model's forward returned NULL", fn);
    return NULL;
  }
  ad_tensor *l = loss(ctx, pred, y, NN_MEAN);
  if (!l) {
    if (ad_last_status(ctx) == AD_OK)
      ad_set_error(ctx, AD_ERR_ARG, "%s: the loss function returned NULL", fn);
    return NULL;
  }
  if (l->size != 1) {
    char a[64];
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: the loss has shape %s; a scalar is needed (a loss with NN_NONE is not "
                 "reduced: use NN_MEAN or NN_SUM)",
                 fn, ad_shape_str(l, a, sizeof a));
    return NULL;
  }
  return l;
}

static ad_status fail(ad_ctx *ctx, ad_status fallback) {
  ad_status st = ad_last_status(ctx);
  return st != AD_OK ? st : fallback;
}

/* lambda_l2 NaN or infinite: AD_ERR_ARG naming fn (else AD_OK). <= 0 adds
 * no penalty; NaN did the same without a word, and inf made every weight
 * inf through a finite loss. */
static ad_status check_l2(ad_ctx *ctx, const char *fn, double lambda_l2) {
  if (!isfinite(lambda_l2))
    return ad_set_error(ctx, AD_ERR_ARG,
                        "%s: lambda_l2 %g; it must be finite (> 0 adds the L2 penalty)", fn,
                        lambda_l2);
  return AD_OK;
}

/* The loss plus the L2 penalty, checked before the backward: a penalty
 * that overflows (a huge lambda_l2 or weights) leaves the loss finite but
 * would step every weight to inf or NaN. */
static ad_status check_total(ad_ctx *ctx, const ad_tensor *total, double lambda_l2) {
  double v = ad_tensor_item(total);
  if (!isfinite(v))
    return ad_set_error(ctx, AD_ERR_NAN,
                        "train_step: the loss plus the L2 penalty (lambda_l2 %g) is %g", lambda_l2,
                        v);
  return AD_OK;
}

/* Whether zeroing p's gradients zeroes all of opt's: its list is p and it
 * has no other group (an added group's tensors are not the model's list's:
 * nn_optimizer_add_param_group refuses a tensor already in a group) */
static bool opt_within(const nn_optimizer *opt, const nn_params *p) {
  return nn_optimizer_params(opt) == p && nn_optimizer_group_count(opt) == 1;
}

/* The forward part of train_step: the prediction and the loss to
 * differentiate (*total: with the L2 penalty). */
static ad_status forward_loss(nn_model *m, nn_loss_fn loss, ad_tensor *x, ad_tensor *y,
                              double lambda_l2, double *loss_out, ad_tensor **pred_out,
                              ad_tensor **total) {
  ad_ctx *ctx = nn_model_ctx(m);
  bool old = nn_model_set_training(m, true);
  ad_tensor *pred = nn_model_forward(m, x);
  nn_model_set_training(m, old);
  ad_tensor *l = run_loss(ctx, loss, pred, y, "train_step");
  if (!l) return fail(ctx, AD_ERR_ARG);
  double lv = ad_tensor_item(l);
  if (loss_out) *loss_out = lv;
  if (pred_out) *pred_out = pred;
  if (!isfinite(lv)) return ad_set_error(ctx, AD_ERR_NAN, "train_step: the loss is %g", lv);
  *total = l;
  if (lambda_l2 > 0) *total = ad_add(ctx, l, nn_l2_penalty(ctx, nn_model_params(m), lambda_l2));
  if (!*total) return fail(ctx, AD_ERR_ARG);
  if (*total != l && check_total(ctx, *total, lambda_l2) != AD_OK) return AD_ERR_NAN;
  return AD_OK;
}

/* Runs stmt (which sets st and does not return) inside the op profile's
 * range name (ad_profile_range_push: nothing while no profile runs); st
 * gets the push's error instead when it fails. */
#define IN_RANGE(ctx, name, st, stmt)                                                              \
  do {                                                                                             \
    if (((st) = ad_profile_range_push(ctx, name)) == AD_OK) {                                      \
      stmt;                                                                                        \
      ad_profile_range_pop(ctx);                                                                   \
    }                                                                                              \
  } while (0)

/* nn_train_step, also giving the prediction (valid until the next reset),
 * and adding the gradient norms to norms (nn_grad_norms_add) unless NULL.
 * Its phases are the op profile's ranges "nn_fit.zero_grad", "nn_fit.forward"
 * (with the loss), "nn_fit.backward", "nn_fit.grad_norms" and
 * "nn_fit.optimizer". */
static ad_status train_step(nn_model *m, nn_optimizer *opt, nn_loss_fn loss, ad_tensor *x,
                            ad_tensor *y, double lambda_l2, double *loss_out, ad_tensor **pred_out,
                            double *norms) {
  ad_ctx *ctx = nn_model_ctx(m);
  ad_status st;
  /* releasing the gradients is O(1) per parameter: the backward stores the
   * new ones into the same buffers (ad_tensor_zero_grad) */
  IN_RANGE(ctx, "nn_fit.zero_grad", st, {
    ad_tape_reset(ctx);
    nn_params_zero_grad(nn_model_params(m));
    if (!opt_within(opt, nn_model_params(m))) nn_optimizer_zero_grad(opt);
  });
  ad_tensor *total = NULL;
  if (st == AD_OK)
    IN_RANGE(ctx, "nn_fit.forward", st,
             st = forward_loss(m, loss, x, y, lambda_l2, loss_out, pred_out, &total));
  if (st == AD_OK) IN_RANGE(ctx, "nn_fit.backward", st, st = ad_backward(ctx, total, NULL));
  if (st == AD_OK && norms)
    IN_RANGE(ctx, "nn_fit.grad_norms", st, nn_grad_norms_add(nn_model_params(m), norms));
  if (st == AD_OK) IN_RANGE(ctx, "nn_fit.optimizer", st, st = nn_optimizer_step(opt));
  return st;
}

/* dist_train_step's forward: rows b..e of x, y (none when e <= b). */
static ad_status dist_forward(nn_model *m, nn_loss_fn loss, ad_tensor *x, ad_tensor *y, int64_t b,
                              int64_t e, double lambda_l2, double *loss_out, ad_tensor **ys_out,
                              int64_t *correct, ad_tensor **total_out) {
  ad_ctx *ctx = nn_model_ctx(m);
  nn_params *p = nn_model_params(m);
  ad_tensor *total = NULL;
  ad_status st = AD_OK;
  if (e > b) {
    ad_tensor *xs = ad_narrow(ctx, x, 0, b, e - b), *ys = ad_narrow(ctx, y, 0, b, e - b);
    bool old = nn_model_set_training(m, true);
    ad_tensor *pred = xs && ys ? nn_model_forward(m, xs) : NULL;
    nn_model_set_training(m, old);
    ad_tensor *l = xs && ys ? run_loss(ctx, loss, pred, ys, "train_step") : NULL;
    if (l) {
      double lv = ad_tensor_item(l);
      *loss_out = lv;
      *ys_out = ys;
      if (!isfinite(lv)) l = NULL, ad_set_error(ctx, AD_ERR_NAN, "train_step: the loss is %g", lv);
    }
    total = l && lambda_l2 > 0 ? ad_add(ctx, l, nn_l2_penalty(ctx, p, lambda_l2)) : l;
    if (!total)
      st = fail(ctx, AD_ERR_ARG);
    else if (total != l)
      st = check_total(ctx, total, lambda_l2);
    /* accuracy is counted here, before grad_end, so that a failed
     * comparison reaches the ranks whose shard is empty with the status */
    int64_t c = st == AD_OK && correct ? nn_count_correct(pred, ys, nn_loss_threshold(loss)) : 0;
    if (c < 0) {
      char a[64], b2[64];
      st = ad_set_error(ctx, AD_ERR_SHAPE,
                        "fit: cannot compare predictions %s with targets %s for accuracy",
                        ad_shape_str(pred, a, sizeof a), ad_shape_str(ys, b2, sizeof b2));
    }
    if (correct) *correct = c > 0 ? c : 0;
  } else if (correct) {
    *correct = 0;
  }
  *total_out = total;
  return st;
}

/* Opens range name where this rank must not fail alone (after the ranks
 * agreed in grad_end): a push that fails (out of memory) costs the profile
 * the range, and the context's error is put back. */
static bool range_after_agreement(ad_ctx *ctx, const char *name) {
  ad_status was = ad_last_status(ctx);
  char msg[512] = "";
  if (was != AD_OK) snprintf(msg, sizeof msg, "%s", ad_last_error(ctx));
  if (ad_profile_range_push(ctx, name) == AD_OK) return true;
  if (was == AD_OK)
    ad_clear_error(ctx);
  else
    ad_set_error(ctx, was, "%s", msg);
  return false;
}

/* train_step as rank d->rank of d->size (see nn_dist_ops): forward and
 * backward on this rank's shard of the global batch x, y, the gradients
 * reduced by d, then the optimizer's step. *ys_out gets the shard's targets
 * (NULL for an empty shard), *pred_out its prediction. global > 0: x, y
 * are already this rank's shard of a global batch of that many rows (an
 * nn_loader's). The op profile's ranges: train_step's, "nn_fit.reduce"
 * (d's grad_end: the wait for the other ranks' sums) in place of
 * "nn_fit.batch"; a range that cannot open before the reduction fails the
 * step on every rank through it, one after it only loses its time. */
static ad_status dist_train_step(nn_model *m, nn_optimizer *opt, nn_loss_fn loss, ad_tensor *x,
                                 ad_tensor *y, int64_t global, double lambda_l2,
                                 const nn_dist_ops *d, double *loss_out, ad_tensor **ys_out,
                                 int64_t *correct, double *norms) {
  ad_ctx *ctx = nn_model_ctx(m);
  nn_params *p = nn_model_params(m);
  ad_status st;
  IN_RANGE(ctx, "nn_fit.zero_grad", st, {
    ad_tape_reset(ctx);
    nn_params_zero_grad(p);
    if (!opt_within(opt, p)) nn_optimizer_zero_grad(opt);
  });
  int64_t n = x->shape[0], b = n * d->rank / d->size, e = n * (d->rank + 1) / d->size;
  if (global > 0) n = global, b = 0, e = x->shape[0];
  *ys_out = NULL;
  if (correct) *correct = 0;
  ad_tensor *total = NULL;
  if (st == AD_OK)
    IN_RANGE(ctx, "nn_fit.forward", st,
             st = dist_forward(m, loss, x, y, b, e, lambda_l2, loss_out, ys_out, correct, &total));
  if (st == AD_OK) st = d->grad_begin(d->ud, p, total, e - b, n);
  if (st == AD_OK && total)
    IN_RANGE(ctx, "nn_fit.backward", st, st = ad_backward(ctx, total, NULL));
  /* after an error the range is not opened: its push would overwrite the
   * error's message */
  bool reduce = st == AD_OK && (st = ad_profile_range_push(ctx, "nn_fit.reduce")) == AD_OK;
  st = d->grad_end(d->ud, p, st); /* on every rank, also after an error */
  if (reduce) ad_profile_range_pop(ctx);
  if (st != AD_OK) return st;
  if (norms) { /* of the reduced gradients, the same on every rank */
    bool r = range_after_agreement(ctx, "nn_fit.grad_norms");
    nn_grad_norms_add(p, norms);
    if (r) ad_profile_range_pop(ctx);
  }
  bool r = range_after_agreement(ctx, "nn_fit.optimizer");
  st = d->step ? d->step(d->ud, opt) : nn_optimizer_step(opt);
  if (r) ad_profile_range_pop(ctx);
  return st;
}

/* FNV-1a over n bytes, continuing from h: a fingerprint of options that
 * are not numbers (the early-stopping ones) for dist_agree_start. */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 0x100000001b3ull;
  return h;
}

/* A fingerprint of rows [0, rows) of t (contiguous, row-major) with its
 * dtype and row shape: four 64-bit lanes of multiply-xorshift over 32 bytes
 * at a time, about as fast as memory gives them (a pass over MNIST's 188 MB
 * of f32 pixels takes a few tens of milliseconds, once per nn_fit). */
static uint64_t rows_fingerprint(const ad_tensor *t, int64_t rows) {
  uint64_t h = fnv(0xcbf29ce484222325ull, &t->dtype, sizeof t->dtype);
  for (int d = 1; d < t->ndim; d++) h = fnv(h, &t->shape[d], sizeof t->shape[d]);
  size_t bytes =
      t->size ? (size_t)rows * ((size_t)t->size / (size_t)t->shape[0]) * ad_dtype_size(t->dtype)
              : 0;
  const unsigned char *p = t->data;
  uint64_t lane[4] = {h, h ^ 0x9e3779b97f4a7c15ull, h ^ 0xc2b2ae3d27d4eb4full,
                      h ^ 0x165667b19e3779f9ull};
  size_t i = 0;
  for (; i + 32 <= bytes; i += 32)
    for (int k = 0; k < 4; k++) {
      uint64_t w;
      memcpy(&w, p + i + 8 * (size_t)k, sizeof w);
      lane[k] = (lane[k] ^ w) * 0x9fb21c651e98df25ull;
      lane[k] ^= lane[k] >> 29;
    }
  h = fnv(h, p + i, bytes - i); /* the last bytes */
  for (int k = 0; k < 4; k++) h = (h ^ lane[k]) * 0x100000001b3ull, h ^= h >> 31;
  return h;
}

/* With dist, before the start-up sync: whether some rank failed to set up
 * (own: this rank's status; a NULL argument, out of memory, early-stopping
 * options) and whether every rank draws the same global batches and runs
 * the same collectives (the rows to train on, batch size, epochs and
 * shuffle seed, which the sharding assumes; whether there is validation
 * data and an on_epoch_end, each one more sum per epoch; the early
 * stopping, which decides the epoch the ranks stop at; lambda_l2, part of
 * every gradient; x's and y's training rows, by rows_fingerprint, or x and
 * y NULL for none). Collective: one d->sum of the failures and of each
 * value and its square, in 12-bit pieces so that the sums are exact; the
 * values are the same on every rank exactly when size * sum(x^2) ==
 * sum(x)^2 (Cauchy-Schwarz). A rank that failed alone returned while the
 * others waited in the sync; one with other data (its own part, as with
 * PyTorch's DistributedSampler) or options took as many steps, or sums,
 * as its own: the ranks then waited for each other for ever, or trained
 * on rows of unrelated batches. */
static ad_status dist_agree_start(ad_ctx *ctx, const nn_dist_ops *d, int64_t n_train, bool val,
                                  const nn_fit_opts *o, const ad_tensor *x, const ad_tensor *y,
                                  ad_status own) {
  enum { F = 10, PIECES = 6, N = F * PIECES };
  static const char *const what[F] = {"rows to train on",
                                      "batch sizes (or drop_last)",
                                      "epochs",
                                      "shuffles (seed or no_shuffle)",
                                      "validation (data or split, or none)",
                                      "on_epoch_end (set or NULL)",
                                      "early-stopping options",
                                      "lambda_l2",
                                      "training data (x)",
                                      "training targets (y)"};
  const nn_early_stopping *es = &o->early_stopping;
  uint64_t esh = 0, l2 = 0;
  if (es->monitor) {
    esh = fnv(0xcbf29ce484222325ull, es->monitor, strlen(es->monitor));
    esh = fnv(esh, &es->mode, sizeof es->mode);
    esh = fnv(esh, &es->min_delta, sizeof es->min_delta);
    esh = fnv(esh, &es->patience, sizeof es->patience);
    esh = fnv(esh, &es->restore_best_weights, sizeof es->restore_best_weights);
  }
  memcpy(&l2, &o->lambda_l2, sizeof l2);
  uint64_t field[F] = {(uint64_t)n_train,
                       (uint64_t)o->batch_size | (o->drop_last ? UINT64_C(1) << 62 : 0),
                       (uint64_t)o->epochs,
                       o->no_shuffle ? UINT64_MAX : o->seed, /* the seed, where it is used */
                       val,
                       o->on_epoch_end != NULL,
                       esh,
                       l2,
                       own == AD_OK && x ? rows_fingerprint(x, n_train) : 0,
                       own == AD_OK && y ? rows_fingerprint(y, n_train) : 0};
  double v[1 + 2 * N];
  v[0] = own != AD_OK;
  for (int f = 0; f < F; f++)
    for (int k = 0; k < PIECES; k++) {
      double piece = (double)((field[f] >> (12 * k)) & 0xfff);
      v[1 + f * PIECES + k] = piece, v[1 + N + f * PIECES + k] = piece * piece;
    }
  ad_status st = d->sum(d->ud, v, 1 + 2 * N);
  if (own != AD_OK) return own;
  if (st != AD_OK) return st;
  if (v[0] > 0)
    return ad_set_error(ctx, AD_ERR_STATE, "fit: %g other rank(s) failed before the first step",
                        v[0]);
  bool exact = d->size <= 16384; /* else the sums' squares might not be */
  for (int i = 0; exact && i < N; i++)
    if ((double)d->size * v[1 + N + i] != v[1 + i] * v[1 + i])
      return ad_set_error(ctx, AD_ERR_ARG,
                          "fit: the ranks' %s differ (here: %lld rows to train on, batch size "
                          "%lld%s, %d epochs, seed %llu%s%s%s%s, lambda_l2 %g): every rank passes "
                          "the same data and options, nn_fit shards each global batch",
                          what[i / PIECES], (long long)n_train, (long long)o->batch_size,
                          o->drop_last ? " (drop_last)" : "", o->epochs,
                          (unsigned long long)o->seed, o->no_shuffle ? ", no_shuffle" : "",
                          val ? ", validation" : "", o->on_epoch_end ? ", on_epoch_end" : "",
                          es->monitor ? ", early stopping" : "", o->lambda_l2);
  return AD_OK;
}

ad_status nn_train_step(nn_model *m, nn_optimizer *opt, nn_loss_fn loss, ad_tensor *x, ad_tensor *y,
                        double lambda_l2, double *loss_out) {
  ad_ctx *ctx = nn_ctx_of(m, opt);
  if (!m || !opt || !loss || !x || !y)
    return nn_null_arg(ctx, "train_step",
                       !m      ? "model"
                       : !opt  ? "optimizer"
                       : !loss ? "loss"
                       : !x    ? "x"
                               : "y");
  if (check_l2(ctx, "train_step", lambda_l2) != AD_OK) return AD_ERR_ARG;
  return train_step(m, opt, loss, x, y, lambda_l2, loss_out, NULL, NULL);
}

/* Mean loss and accuracy over one pass of b, in evaluation and no-grad mode.
 * acc may be NULL. */
static ad_status eval_batches(nn_model *m, nn_loss_fn loss, nn_batcher *b, double *loss_out,
                              double *acc, double sums[3]) {
  ad_ctx *ctx = nn_model_ctx(m);
  bool old_grad = ad_set_grad_enabled(ctx, false);
  bool old_train = nn_model_set_training(m, false);
  double thr = nn_loss_threshold(loss), sum = 0;
  int64_t seen = 0, correct = 0;
  ad_status st = AD_OK;
  ad_tensor *xb, *yb;
  for (;;) {
    ad_status bst = nn_batcher_fetch(b, &xb, &yb); /* an error is no end of the pass */
    if (bst != AD_OK && st == AD_OK) st = bst;
    if (!xb) break;
    if (st != AD_OK) continue; /* finish the pass so the batcher restarts cleanly */
    ad_tape_reset(ctx);
    ad_tensor *pred = nn_model_forward(m, xb);
    ad_tensor *l = run_loss(ctx, loss, pred, yb, "evaluate");
    if (!l) {
      st = fail(ctx, AD_ERR_ARG);
      continue;
    }
    int64_t n = xb->shape[0];
    sum += ad_tensor_item(l) * (double)n;
    seen += n;
    if (acc) {
      int64_t c = nn_count_correct(pred, yb, thr);
      if (c < 0) {
        char s1[64], s2[64];
        st = ad_set_error(ctx, AD_ERR_SHAPE,
                          "evaluate: cannot compare predictions %s with targets %s for accuracy",
                          ad_shape_str(pred, s1, sizeof s1), ad_shape_str(yb, s2, sizeof s2));
        continue;
      }
      correct += c;
    }
  }
  ad_tape_reset(ctx);
  nn_model_set_training(m, old_train);
  ad_set_grad_enabled(ctx, old_grad);
  if (st != AD_OK) return st;
  if (loss_out) *loss_out = seen ? sum / (double)seen : NAN;
  if (acc) *acc = seen ? (double)correct / (double)seen : NAN;
  if (sums) sums[0] = sum, sums[1] = (double)correct, sums[2] = (double)seen;
  return AD_OK;
}

ad_status nn_evaluate(nn_model *m, nn_loss_fn loss, ad_tensor *x, ad_tensor *y, int64_t batch_size,
                      double *loss_out, double *accuracy) {
  ad_ctx *ctx = nn_model_ctx(m);
  if (!ctx) return AD_ERR_NULL;
  if (!loss || !x || !y) return nn_null_arg(ctx, "evaluate", !loss ? "loss" : !x ? "x" : "y");
  if (batch_size < 0)
    return ad_set_error(ctx, AD_ERR_ARG, "evaluate: batch size %lld; it must be >= 1 (0: 32)",
                        (long long)batch_size);
  ad_status st = nn_check_persistent(ctx, "evaluate", "x", x);
  if (st == AD_OK) st = nn_check_persistent(ctx, "evaluate", "y", y);
  if (st != AD_OK) return st;
  if (x->ndim < 1 || x->shape[0] == 0) { /* a mean over no rows is no metric (Keras raises) */
    char a[64];
    return ad_set_error(ctx, AD_ERR_ARG, "evaluate: x %s has no rows",
                        ad_shape_str(x, a, sizeof a));
  }
  nn_batcher *b = nn_batcher_new(ctx, x, y, batch_size > 0 ? batch_size : 32, false, 0);
  if (!b) return fail(ctx, AD_ERR_OOM);
  st = eval_batches(m, loss, b, loss_out, accuracy, NULL);
  nn_batcher_free(b);
  return st;
}

ad_tensor *nn_predict(nn_model *m, ad_tensor *x, int64_t batch_size) {
  ad_ctx *ctx = nn_model_ctx(m);
  if (!ctx) return NULL;
  char a[64];
  if (!x) {
    nn_null_arg(ctx, "predict", "x");
    return NULL;
  }
  if (x->ndim < 1 || x->shape[0] == 0) {
    ad_set_error(ctx, AD_ERR_ARG, "predict: x %s has no rows", ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  if (batch_size < 0) {
    ad_set_error(ctx, AD_ERR_ARG, "predict: batch size %lld; it must be >= 1 (0: 32)",
                 (long long)batch_size);
    return NULL;
  }
  if (nn_check_persistent(ctx, "predict", "x", x) != AD_OK) return NULL;
  int64_t rows = x->shape[0]; /* read before any tape reset */
  nn_batcher *b = nn_batcher_new(ctx, x, NULL, batch_size > 0 ? batch_size : 32, false, 0);
  if (!b) return NULL;
  bool old_grad = ad_set_grad_enabled(ctx, false);
  bool old_train = nn_model_set_training(m, false);
  ad_tensor *out = NULL, *xb;
  int64_t row = 0;
  size_t rb = 0;
  bool ok = true;
  for (;;) {
    ad_tensor *none;
    if (nn_batcher_fetch(b, &xb, &none) != AD_OK) ok = false; /* not the end: rows unwritten */
    if (!xb) break;
    if (!ok) continue;
    ad_tape_reset(ctx);
    ad_tensor *pred = nn_model_forward(m, xb);
    if (!pred) {
      if (ad_last_status(ctx) == AD_OK)
        ad_set_error(ctx, AD_ERR_ARG, "predict: the model's forward returned NULL");
      ok = false;
      continue;
    }
    int64_t n = xb->shape[0];
    if (!out) {
      if (pred->ndim < 1 || pred->shape[0] != n) {
        ad_set_error(ctx, AD_ERR_SHAPE, "predict: the model maps %lld rows to %s", (long long)n,
                     ad_shape_str(pred, a, sizeof a));
        ok = false;
        continue;
      }
      int64_t s[AD_MAX_DIMS];
      memcpy(s, pred->shape, sizeof s);
      s[0] = rows;
      if (!(out = ad_zeros(ctx, pred->dtype, pred->ndim, s))) {
        ok = false;
        continue;
      }
      rb = (size_t)(pred->size / n) * ad_dtype_size(pred->dtype);
    }
    if (pred->dtype != out->dtype || pred->size != (int64_t)(rb / ad_dtype_size(out->dtype)) * n) {
      ad_set_error(ctx, AD_ERR_SHAPE, "predict: batch output %s does not match the first batch's",
                   ad_shape_str(pred, a, sizeof a));
      ok = false;
      continue;
    }
    memcpy((char *)out->data + (size_t)row * rb, pred->data, (size_t)n * rb);
    row += n;
  }
  ad_tape_reset(ctx);
  nn_model_set_training(m, old_train);
  ad_set_grad_enabled(ctx, old_grad);
  nn_batcher_free(b);
  if (!ok) {
    ad_tensor_free(out);
    return NULL;
  }
  return out;
}

/* -------------------------------------------------------------- progress */

static void fmt_seconds(char *buf, size_t n, double s) {
  if (s < 60)
    snprintf(buf, n, "%.1fs", s);
  else
    snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

/* One redraw of the live bar: "\r" then the line, then clear to its end. */
static void draw_bar(FILE *f, int epoch, int epochs, int64_t done, int64_t total, double loss,
                     double acc, double rate, double eta) {
  char bar[32], eta_s[32];
  int width = 24, fill = total ? (int)(width * done / total) : width;
  for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
  bar[width] = 0;
  fmt_seconds(eta_s, sizeof eta_s, eta);
  fprintf(f, "\repoch %d/%d [%s] %lld/%lld - loss %.4f", epoch + 1, epochs, bar, (long long)done,
          (long long)total, loss);
  if (!isnan(acc)) fprintf(f, " - accuracy %.4f", acc);
  fprintf(f, " - %.0f samples/s - ETA %s\033[K", rate, eta_s);
  fflush(f);
}

/* ------------------------------------------------------------------- fit */

static void history_print(FILE *f, const nn_history *h, int e) {
  static const int keys[] = {H_LOSS, H_ACC, H_VAL_LOSS, H_VAL_ACC};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if (h->has[keys[i]]) fprintf(f, " - %s %.4f", hist_keys[keys[i]], h->vals[keys[i]][e]);
}

/* Keras' validation split: floor(rows * (1 - split)) rows train. The
 * product is taken as the whole number it is within rounding error of,
 * which its inputs carry (split's binary value, the subtraction): 10 rows
 * with split 0.9 train on 1, though 10 * (1 - 0.9) is 0.99999999999999978. */
static int64_t split_train_rows(int64_t rows, double split) {
  double t = (double)rows * (1.0 - split), r = nearbyint(t);
  if (fabs(t - r) <= 4 * DBL_EPSILON * (double)rows) return (int64_t)r;
  return (int64_t)floor(t);
}

/* Refuses a dist of a bad rank or size or without its functions. */
static ad_status dist_check(ad_ctx *ctx, const char *fn, const nn_dist_ops *dist) {
  if (dist && (dist->size < 1 || dist->rank < 0 || dist->rank >= dist->size || !dist->sync ||
               !dist->grad_begin || !dist->grad_end || !dist->sum))
    return ad_set_error(ctx, AD_ERR_ARG,
                        "%s: dist has rank %d of size %d%s; 0 <= rank < size and all four "
                        "functions are needed",
                        fn, dist->rank, dist->size,
                        dist->sync && dist->grad_begin && dist->grad_end && dist->sum
                            ? ""
                            : " and a NULL function");
  return AD_OK;
}

/* Validation rows: without dist, a val_x of no rows would give a NaN
 * val_loss every epoch (Keras raises); with dist a rank's own part may be
 * empty, the metrics being those of all the ranks' parts together. */
static ad_status check_val_rows(ad_ctx *ctx, const char *fn, const nn_fit_opts *o) {
  if (!o->val_x || o->dist || (o->val_x->ndim >= 1 && o->val_x->shape[0] > 0)) return AD_OK;
  char a[64];
  return ad_set_error(ctx, AD_ERR_ARG, "%s: val_x %s has no rows to validate on", fn,
                      ad_shape_str(o->val_x, a, sizeof a));
}

/* An error in nn_fit's checks, returned; with dist, after telling the
 * other ranks (dist_agree_start), which would otherwise wait for this one
 * in the start-up for ever. */
static ad_status fit_early(ad_ctx *ctx, const nn_fit_opts *o, ad_status st) {
  const nn_dist_ops *d = o->dist;
  if (d && d->size > 1 && d->rank >= 0 && d->rank < d->size && d->sync && d->grad_begin &&
      d->grad_end && d->sum)
    dist_agree_start(ctx, d, 0, false, o, NULL, NULL, st);
  return st;
}

/* The training batches of fit_run: a batcher's or a loader's. */
typedef struct fit_src {
  nn_batcher *b;
  nn_loader *l;
} fit_src;

/* The next training batch: the batcher's (drained to the epoch's end after
 * an error, so that its next epoch starts fresh), or the loader's (none
 * after an error). The source's own failure (a loader's get, a write that
 * could not be noted) goes into *st, and with d to the other ranks
 * through this step's grad_end, as a failed forward's: it is no epoch's
 * end, which would train on the rest of the epoch as the next one. */
static bool src_next(ad_ctx *ctx, fit_src *s, ad_tensor **xb, ad_tensor **yb, ad_status *st,
                     const nn_dist_ops *d, nn_params *p) {
  if (s->b && *st != AD_OK) return nn_batcher_next(s->b, xb, yb);
  if (*st != AD_OK) return false;
  if (d) /* not a range with d: the distributed step's list has none for the fetch */
    *st = s->b ? nn_batcher_fetch(s->b, xb, yb) : nn_loader_next(s->l, xb, yb);
  else
    IN_RANGE(ctx, "nn_fit.batch", *st,
             *st = s->b ? nn_batcher_fetch(s->b, xb, yb) : nn_loader_next(s->l, xb, yb));
  if (*st != AD_OK && d) d->grad_end(d->ud, p, *st);
  return *st == AD_OK && *xb;
}

static ad_status fit_run(nn_model *m, nn_optimizer *opt, nn_loss_fn loss, fit_src src,
                         nn_batcher *vb, bool val, int64_t n_train, const nn_fit_opts *opts,
                         ad_tensor *x, ad_tensor *y, nn_history **history);

/* nn_fit without its floating-point mode. */
static ad_status fit(nn_model *m, nn_optimizer *opt, nn_loss_fn loss, ad_tensor *x, ad_tensor *y,
                     const nn_fit_opts *opts, nn_history **history) {
  if (history) *history = NULL;
  ad_ctx *ctx = nn_ctx_of(m, opt);
  nn_fit_opts o = {0};
  if (opts) o = *opts;
  if (!m || !opt || !loss || !x || !y) /* with dist, the other ranks learn of it too */
    return fit_early(ctx, &o,
                     nn_null_arg(ctx, "fit",
                                 !m      ? "model"
                                 : !opt  ? "optimizer"
                                 : !loss ? "loss"
                                 : !x    ? "x"
                                         : "y"));
  /* the tape is reset before every step while batches are still gathered
   * from these: a temporary's memory would be reused under them */
  ad_status pst = nn_check_persistent(ctx, "fit", "x", x);
  if (pst == AD_OK) pst = nn_check_persistent(ctx, "fit", "y", y);
  if (pst == AD_OK) pst = nn_check_persistent(ctx, "fit", "val_x", o.val_x);
  if (pst == AD_OK) pst = nn_check_persistent(ctx, "fit", "val_y", o.val_y);
  if (pst != AD_OK) return fit_early(ctx, &o, pst);
  if (o.epochs == 0) o.epochs = 1;
  if (o.batch_size == 0) o.batch_size = 32;
  if (!o.out) o.out = stdout;
  if (o.epochs < 0 || o.batch_size < 0 || !(o.validation_split >= 0 && o.validation_split < 1))
    return fit_early(ctx, &o,
                     ad_set_error(ctx, AD_ERR_ARG,
                                  "fit: epochs %d, batch size %lld, validation split %g", o.epochs,
                                  (long long)o.batch_size, o.validation_split));
  if (check_l2(ctx, "fit", o.lambda_l2) != AD_OK) return fit_early(ctx, &o, AD_ERR_ARG);
  char a[64], b[64];
  if (x->ndim < 1 || y->ndim < 1 || x->shape[0] != y->shape[0])
    return fit_early(ctx, &o,
                     ad_set_error(ctx, AD_ERR_SHAPE,
                                  "fit: x %s and y %s have different numbers of rows",
                                  ad_shape_str(x, a, sizeof a), ad_shape_str(y, b, sizeof b)));
  int64_t rows = x->shape[0], n_train = rows;
  bool val = false;
  if (o.val_x || o.val_y) {
    if (!o.val_x || !o.val_y)
      return fit_early(
          ctx, &o,
          ad_set_error(ctx, AD_ERR_NULL, "fit: validation data needs both val_x and val_y"));
    if (check_val_rows(ctx, "fit", &o) != AD_OK) return fit_early(ctx, &o, AD_ERR_ARG);
    val = true;
  } else if (o.validation_split > 0) {
    n_train = split_train_rows(rows, o.validation_split);
    if (n_train < 1 || n_train >= rows)
      return fit_early(
          ctx, &o,
          ad_set_error(ctx, AD_ERR_ARG,
                       "fit: validation split %g of %lld rows leaves %lld to train on and %lld "
                       "to validate; each needs at least one (floor(rows * (1 - split)) train, "
                       "as in Keras)",
                       o.validation_split, (long long)rows, (long long)n_train,
                       (long long)(rows - n_train)));
    val = true;
  }
  if (n_train == 0)
    return fit_early(ctx, &o,
                     ad_set_error(ctx, AD_ERR_ARG, "fit: no rows to train on (%lld rows, split %g)",
                                  (long long)rows, o.validation_split));
  if (o.drop_last && n_train < o.batch_size)
    return fit_early(ctx, &o,
                     ad_set_error(ctx, AD_ERR_ARG,
                                  "fit: drop_last with %lld rows to train on and batch size %lld "
                                  "leaves no batch",
                                  (long long)n_train, (long long)o.batch_size));
  if (dist_check(ctx, "fit", o.dist) != AD_OK) return ad_last_status(ctx);
  if (o.dist && o.dist->rank != 0) o.verbose = -1; /* progress from rank 0 only */

  nn_batcher *tb = nn_batcher_new_range(ctx, x, y, 0, n_train, o.batch_size, !o.no_shuffle, o.seed);
  if (tb) nn_batcher_set_drop_last(tb, o.drop_last);
  nn_batcher *vb = NULL;
  if (tb && val)
    vb = o.val_x ? nn_batcher_new(ctx, o.val_x, o.val_y, o.batch_size, false, 0)
                 : nn_batcher_new_range(ctx, x, y, n_train, rows, o.batch_size, false, 0);
  return fit_run(m, opt, loss, (fit_src){tb, NULL}, vb, val, n_train, &o, x, y, history);
}

/* nn_fit's and nn_fit_loader's training, on the checked options o: from
 * src (its batcher and vb are freed here; NULL: out of memory), validating
 * on vb when val; x and y (NULL with a loader) for the ranks' agreement. */
static ad_status fit_run(nn_model *m, nn_optimizer *opt, nn_loss_fn loss, fit_src src,
                         nn_batcher *vb, bool val, int64_t n_train, const nn_fit_opts *opts,
                         ad_tensor *x, ad_tensor *y, nn_history **history) {
  ad_ctx *ctx = nn_model_ctx(m);
  nn_fit_opts o = *opts;
  const nn_dist_ops *dist = o.dist;
  char a[64], b[64];
  nn_history *h = (src.b || src.l) && (!val || vb) ? history_new(ctx, o.epochs) : NULL;
  if (!h) {
    nn_batcher_free(src.b);
    nn_batcher_free(vb);
    ad_status oom = fail(ctx, AD_ERR_OOM);
    if (dist && dist->size > 1)
      dist_agree_start(ctx, dist, n_train, val, &o, NULL, NULL, oom); /* the others wait */
    return oom;
  }
  h->has[H_LOSS] = h->has[H_LR] = h->has[H_SECONDS] = true;
  h->has[H_ACC] = o.accuracy;
  h->has[H_VAL_LOSS] = val;
  h->has[H_VAL_ACC] = val && o.accuracy;
  h->has[H_GN_MEAN] = h->has[H_GN_MAX] = o.grad_norms;
  int np = nn_params_count(nn_model_params(m));
  size_t norms_bytes = (size_t)(np + 2) * sizeof(double);
  double *norms = NULL; /* the epoch's sums (nn_grad_norms_add) */
  nn_stopper es = {0};
  ad_status st = AD_OK;
  if (o.grad_norms &&
      (!history_add_param_keys(h, nn_model_params(m)) || !(norms = ad_malloc(ctx, norms_bytes))))
    st = fail(ctx, AD_ERR_OOM);
  if (st == AD_OK) st = nn_stopper_init(&es, m, h, &o.early_stopping);

  FILE *f = o.out;
  bool tty = o.verbose == 0 && isatty(fileno(f));
  bool lines = o.verbose >= 0;
  double thr = nn_loss_threshold(loss);
  int64_t nb = src.l ? nn_loader_batches(src.l) : nn_batcher_batches(src.b);
  /* only the model's gradients are summed across ranks: a tensor the
   * optimizer steps outside the model would drift apart between them (the
   * same answer on every rank, which the agreement below passes on) */
  const char *outside =
      dist && dist->size > 1 && st == AD_OK ? nn_optimizer_outside(opt, nn_model_params(m)) : NULL;
  if (outside)
    st = ad_set_error(ctx, AD_ERR_ARG,
                      "fit: the optimizer steps '%s', which is not among the model's "
                      "parameters: with dist only the model's gradients are summed across "
                      "ranks, so its copies would drift apart (keep every trained tensor in the "
                      "model)",
                      outside);
  if (dist && dist->size > 1) st = dist_agree_start(ctx, dist, n_train, val, &o, x, y, st);
  if (st == AD_OK && dist) { /* on a clean tape, so that the sync may move the parameters
                               (nn_dist's shared ones); each step resets it anyway */
    ad_tape_reset(nn_model_ctx(m));
    st = dist->sync(dist->ud, m, opt);
  }
  for (int e = 0; e < o.epochs && st == AD_OK; e++) {
    double t0 = nn_now(), last_draw = 0, sum = 0;
    double lr = nn_optimizer_lr(opt);
    const nn_schedule_ext2 *sched = nn_optimizer_schedule_ext2(opt);
    bool per_batch = sched && sched->step_per_batch; /* OneCycleLR's use */
    int64_t seen = 0, correct = 0, done = 0;
    ad_tensor *xb, *yb, *pred = NULL;
    if (norms) memset(norms, 0, norms_bytes);
    while (src_next(ctx, &src, &xb, &yb, &st, dist, nn_model_params(m))) {
      if (st != AD_OK) continue; /* drain, so the next epoch starts fresh */
      double lv = 0;             /* set only once the loss is computed */
      ad_tensor *ys = yb;        /* the targets trained on: a shard with dist */
      int64_t dist_correct = 0;
      st = dist ? dist_train_step(m, opt, loss, xb, yb, src.l ? nn_loader_global_rows(src.l) : 0,
                                  o.lambda_l2, dist, &lv, &ys, o.accuracy ? &dist_correct : NULL,
                                  norms)
                : train_step(m, opt, loss, xb, yb, o.lambda_l2, &lv, &pred, norms);
      if (st != AD_OK) {
        if (st == AD_ERR_NAN && !isfinite(lv)) {
          ad_clear_error(ctx);
          ad_set_error(ctx, AD_ERR_NAN, "fit: the loss is %g at epoch %d, batch %lld", lv, e + 1,
                       (long long)done + 1);
        } else if (st == AD_ERR_NAN) { /* anomaly mode named the op: say where */
          char why[400];
          snprintf(why, sizeof why, "%s", ad_last_error(ctx));
          ad_set_error(ctx, AD_ERR_NAN, "fit: at epoch %d, batch %lld: %s", e + 1,
                       (long long)done + 1, why);
        }
        continue;
      }
      if (per_batch && (st = nn_optimizer_schedule_step(opt)) != AD_OK) continue;
      int64_t n = ys ? ys->shape[0] : 0;
      sum += n ? lv * (double)n : 0;
      seen += n;
      done++;
      if (o.accuracy && n) {
        int64_t c = dist ? dist_correct : nn_count_correct(pred, ys, thr);
        if (c < 0) {
          st = ad_set_error(ctx, AD_ERR_SHAPE,
                            "fit: cannot compare predictions %s with targets %s for accuracy",
                            ad_shape_str(pred, a, sizeof a), ad_shape_str(yb, b, sizeof b));
          continue;
        }
        correct += c;
      }
      double now = nn_now();
      if (tty && (now - last_draw >= 0.1 || done == nb)) {
        double el = now - t0, rate = el > 0 ? (double)seen / el : 0;
        double eta = done ? el / (double)done * (double)(nb - done) : 0;
        draw_bar(f, e, o.epochs, done, nb, sum / (double)seen,
                 o.accuracy ? (double)correct / (double)seen : NAN, rate, eta);
        last_draw = now;
      }
    }
    ad_tape_reset(ctx);
    if (st == AD_OK && dist) { /* the epoch's sums over every rank's shards */
      double v[3] = {sum, (double)seen, (double)correct};
      st = dist->sum(dist->ud, v, 3);
      sum = v[0], seen = (int64_t)v[1], correct = (int64_t)v[2];
    }
    if (st != AD_OK) break;
    h->vals[H_LOSS][e] = seen ? sum / (double)seen : NAN;
    h->vals[H_ACC][e] = seen ? (double)correct / (double)seen : NAN;
    h->vals[H_LR][e] = lr;
    for (int i = 0; norms && i < np + 2; i++) {
      double v = done ? norms[i] / (i == np + 1 ? 1.0 : (double)done) : NAN;
      if (i < np)
        h->pvals[(size_t)i * (size_t)h->cap + (size_t)e] = v;
      else
        h->vals[i == np ? H_GN_MEAN : H_GN_MAX][e] = v;
    }
    h->vals[H_VAL_LOSS][e] = h->vals[H_VAL_ACC][e] = NAN;
    if (val) {
      double *vl = &h->vals[H_VAL_LOSS][e], *va = &h->vals[H_VAL_ACC][e];
      double v[4] = {0}; /* failed, then the sums of the loss, correct rows, rows */
      st = eval_batches(m, loss, vb, vl, o.accuracy ? va : NULL, v + 1);
      if (dist) {
        /* a rank that failed here alone must not leave the others waiting;
         * the metrics are those of every rank's validation rows together,
         * so that ranks with other data (their own parts, say) see the same
         * values, and early stopping stops them at the same epoch and
         * restores the same weights */
        if ((v[0] = st != AD_OK)) v[1] = v[2] = v[3] = 0;
        ad_status s2 = dist->sum(dist->ud, v, 4);
        if (st == AD_OK && s2 != AD_OK) st = s2;
        if (st == AD_OK && v[0] > 0)
          st = ad_set_error(ctx, AD_ERR_STATE,
                            "fit: validation failed on %g other rank(s) at epoch %d", v[0], e + 1);
        if (st == AD_OK && v[3] > 0) {
          *vl = v[1] / v[3];
          if (o.accuracy) *va = v[2] / v[3];
        }
      }
      if (st != AD_OK) break;
    }
    h->vals[H_SECONDS][e] = nn_now() - t0;
    h->n = e + 1;
    if (lines) {
      char secs[32];
      fmt_seconds(secs, sizeof secs, h->vals[H_SECONDS][e]);
      if (tty)
        fprintf(f, "\repoch %d/%d - %lld/%lld - %s", e + 1, o.epochs, (long long)nb, (long long)nb,
                secs);
      else
        fprintf(f, "epoch %d/%d - %lld/%lld - %s", e + 1, o.epochs, (long long)nb, (long long)nb,
                secs);
      history_print(f, h, e);
      fprintf(f, tty ? "\033[K\n" : "\n");
      fflush(f);
    }
    if (!per_batch && (st = nn_optimizer_schedule_step(opt)) != AD_OK) break;
    bool stop = nn_stopper_update(&es, m, h, e);
    bool go_on = !o.on_epoch_end || o.on_epoch_end(e, h, o.ud);
    if (dist && o.on_epoch_end) { /* one rank asking to stop stops every rank */
      double v = !go_on;
      st = dist->sum(dist->ud, &v, 1);
      go_on = st == AD_OK && v == 0;
    }
    if (!go_on) break;
    if (stop) {
      if (es.snap && h->best_epoch >= 0 && (st = nn_model_state_restore(m, es.snap)) != AD_OK)
        break;
      if (lines)
        fprintf(f, "early stopping: %s did not improve for %d epochs; best epoch %d%s\n",
                es.monitor, es.wait, h->best_epoch + 1,
                es.snap && h->best_epoch >= 0 ? ", its weights restored" : "");
      break;
    }
  }
  if (norms) ad_free(ctx, norms, norms_bytes);
  if (es.snap) ad_free(ctx, es.snap, es.bytes);
  nn_model_set_training(m, false);
  nn_batcher_free(src.b);
  nn_batcher_free(vb);
  nn_loader_reset(src.l); /* after an error, the rest of the epoch */
  if (history)
    *history = h;
  else
    nn_history_free(h);
  return st;
}

ad_status nn_fit(nn_model *m, nn_optimizer *opt, nn_loss_fn loss, ad_tensor *x, ad_tensor *y,
                 const nn_fit_opts *opts, nn_history **history) {
  bool flush = !(opts && opts->keep_denormals), was = ad_flush_denormal();
  if (flush) ad_set_flush_denormal(true);
  ad_status st = fit(m, opt, loss, x, y, opts, history);
  if (flush) ad_set_flush_denormal(was);
  return st;
}

/* nn_fit_loader without its floating-point mode. */
static ad_status fit_loader(nn_model *m, nn_optimizer *opt, nn_loss_fn loss, nn_loader *l,
                            const nn_fit_opts *opts, nn_history **history) {
  if (history) *history = NULL;
  ad_ctx *ctx = nn_ctx_of(m, opt);
  nn_fit_opts o = {0};
  if (opts) o = *opts;
  if (!m || !opt || !loss || !l)
    return fit_early(ctx, &o,
                     nn_null_arg(ctx, "fit_loader",
                                 !m      ? "model"
                                 : !opt  ? "optimizer"
                                 : !loss ? "loss"
                                         : "loader"));
  ad_status st = AD_OK;
  if (nn_loader_ctx(l) != ctx)
    st = ad_set_error(ctx, AD_ERR_ARG, "fit_loader: the loader belongs to another context");
  if (st == AD_OK) st = nn_check_persistent(ctx, "fit_loader", "val_x", o.val_x);
  if (st == AD_OK) st = nn_check_persistent(ctx, "fit_loader", "val_y", o.val_y);
  if (st == AD_OK && (!o.val_x) != (!o.val_y))
    st = ad_set_error(ctx, AD_ERR_NULL, "fit_loader: validation data needs both val_x and val_y");
  if (st == AD_OK) st = check_val_rows(ctx, "fit_loader", &o);
  if (st == AD_OK &&
      (o.batch_size || o.seed || o.no_shuffle || o.validation_split != 0 || o.drop_last))
    st = ad_set_error(ctx, AD_ERR_ARG,
                      "fit_loader: batch_size %lld, seed %llu, no_shuffle %d, validation_split "
                      "%g, drop_last %d: batches and shuffling are the loader's (nn_loader_opts), "
                      "and a split needs the rows in memory (pass val_x, val_y); leave them 0",
                      (long long)o.batch_size, (unsigned long long)o.seed, (int)o.no_shuffle,
                      o.validation_split, (int)o.drop_last);
  if (st == AD_OK && o.epochs < 0)
    st = ad_set_error(ctx, AD_ERR_ARG, "fit_loader: epochs %d", o.epochs);
  if (st == AD_OK) st = check_l2(ctx, "fit_loader", o.lambda_l2);
  if (st == AD_OK && nn_loader_rows(l) == 0)
    st = ad_set_error(ctx, AD_ERR_ARG, "fit_loader: the loader has no rows to train on");
  if (st != AD_OK) return fit_early(ctx, &o, st);
  if (dist_check(ctx, "fit_loader", o.dist) != AD_OK) return ad_last_status(ctx);
  const nn_loader_opts *lo = nn_loader_options(l);
  if (o.epochs == 0) o.epochs = 1;
  if (!o.out) o.out = stdout;
  o.batch_size = nn_loader_batch_size(l); /* for the ranks' agreement and the validation */
  o.seed = lo->seed;
  o.no_shuffle = !lo->shuffle;
  o.drop_last = lo->drop_last;
  if (o.dist && o.dist->rank != 0) o.verbose = -1; /* progress from rank 0 only */
  /* training's first epoch is a whole one of the loader's, as a for loop
   * over a DataLoader starts a new iterator: not the rest of an epoch the
   * caller began (a batch looked at first) */
  nn_loader_reset(l);
  bool shard = o.dist && o.dist->size > 1;
  bool val = o.val_x != NULL;
  nn_batcher *vb = val ? nn_batcher_new(ctx, o.val_x, o.val_y, o.batch_size, false, 0) : NULL;
  /* each rank loads only its shard of every batch */
  bool ok = (!val || vb) && (!shard || nn_loader_shard(l, o.dist->rank, o.dist->size) == AD_OK);
  st = fit_run(m, opt, loss, (fit_src){NULL, ok ? l : NULL}, vb, val, nn_loader_rows(l), &o, NULL,
               NULL, history);
  if (shard) nn_loader_shard(l, 0, 1); /* on failure, its next call allocates again */
  return st;
}

ad_status nn_fit_loader(nn_model *m, nn_optimizer *opt, nn_loss_fn loss, nn_loader *loader,
                        const nn_fit_opts *opts, nn_history **history) {
  bool flush = !(opts && opts->keep_denormals), was = ad_flush_denormal();
  if (flush) ad_set_flush_denormal(true);
  ad_status st = fit_loader(m, opt, loss, loader, opts, history);
  if (flush) ad_set_flush_denormal(was);
  return st;
}
