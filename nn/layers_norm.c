/* layers_norm.c: BatchNorm1d and BatchNorm2d, PyTorch's nn.BatchNorm*d.
 *
 *   training:  y = (x - mean_c(x)) / sqrt(var_c(x) + eps) * weight + bias
 *              running_mean = (1 - m) running_mean + m mean_c(x)
 *              running_var  = (1 - m) running_var  + m var_c(x) M / (M - 1)
 *              num_batches_tracked += 1
 *   eval:      y = (x - running_mean) / sqrt(running_var + eps) * weight + bias
 *
 * with m the momentum, or 1 / num_batches_tracked (after the increment) for
 * the cumulative average (PyTorch's momentum=None). The arithmetic is
 * ad_batch_norm's (a composite of the engine's ops, so the tape derives the
 * backward); this file holds the parameters, the buffers and the checks
 * that name the layer. */
#include "nn_internal.h"

#include <math.h>

typedef struct bn_state {
  int64_t c;          /* num_features */
  int min_nd, max_nd; /* accepted input ranks */
  const char *layout; /* for messages: "[N, C] or [N, C, L]" */
  double eps, momentum;
  bool cumulative;
  ad_tensor *weight, *bias;                    /* NULL without affine */
  ad_tensor *running_mean, *running_var, *nbt; /* NULL without running stats */
} bn_state;

static ad_tensor *bn_forward(nn_layer *l, ad_tensor *x, bool training) {
  bn_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  nn_layer_who(l, who, sizeof who);
  if (x->ndim < s->min_nd || x->ndim > s->max_nd) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s has %d dims; the layer expects %s", who,
                 ad_shape_str(x, a, sizeof a), x->ndim, s->layout);
    return NULL;
  }
  if (x->shape[1] != s->c) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input %s has %lld channels (dim 1), the layer expects %lld", who,
                 ad_shape_str(x, a, sizeof a), (long long)x->shape[1], (long long)s->c);
    return NULL;
  }
  ad_dtype want = s->weight         ? s->weight->dtype
                  : s->running_mean ? s->running_mean->dtype
                                    : x->dtype;
  if (x->dtype != want || (x->dtype != AD_F32 && x->dtype != AD_F64)) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %s is %s, the layer is %s", who,
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype), ad_dtype_name(want));
    return NULL;
  }
  /* without running statistics the batch's are used in both modes */
  bool batch_stats = training || !s->running_mean;
  if (batch_stats && x->size / s->c == 1) { /* none (an empty batch) is fine, as in PyTorch */
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input %s has %lld value(s) per channel; batch statistics need more than 1 "
                 "(as in PyTorch)",
                 who, ad_shape_str(x, a, sizeof a), (long long)(x->size / s->c));
    return NULL;
  }
  double momentum = s->momentum;
  double seen = s->nbt ? ad_tensor_item(s->nbt) : 0;
  if (training && s->running_mean && s->cumulative) {
    if (!(seen >= 0 && seen < 9007199254740992.0)) { /* (a checkpoint's I64 may hold -1) */
      ad_set_error(ctx, AD_ERR_ARG,
                   "%s: num_batches_tracked is %g; the cumulative average (momentum None) needs a "
                   "count >= 0",
                   who, seen);
      return NULL;
    }
    momentum = 1.0 / (seen + 1);
  }
  ad_tensor *y = ad_batch_norm(ctx, x, s->weight, s->bias, s->running_mean, s->running_var,
                               batch_stats, momentum, s->eps);
  if (y && training && s->nbt && ad_tensor_set(s->nbt, 0, seen + 1) != AD_OK)
    return NULL; /* out of memory noting the write */
  return y;
}

static void bn_free(nn_layer *l) {
  bn_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* PyTorch's _NormBase extra_repr; momentum=None for the cumulative
 * average. */
static void bn_describe(const nn_layer *l, nn_text *t) {
  const bn_state *s = nn_layer_state(l);
  nn_text_add(t, "%lld, eps=", (long long)s->c);
  nn_text_num(t, s->eps);
  nn_text_add(t, ", momentum=");
  if (s->cumulative)
    nn_text_add(t, "None");
  else
    nn_text_num(t, s->momentum);
  nn_text_add(t, ", affine=%s, track_running_stats=%s", nn_py_bool(s->weight != NULL),
              nn_py_bool(s->running_mean != NULL));
}

static const nn_layer_ops bn_ops = {bn_forward, bn_free, bn_describe};

/* A new persistent [c] (or 0-d when c is 0) tensor of dtype filled with v,
 * added to list under name (owned by it); NULL on error. */
static ad_tensor *add_vec(nn_params *list, bool buffer, const char *name, ad_ctx *ctx,
                          ad_dtype dtype, int64_t c, double v, nn_store store) {
  ad_tensor *t = ad_full(ctx, dtype, c ? 1 : 0, &c, v);
  if (!t) return NULL;
  ad_status st =
      buffer ? nn_buffers_add(list, name, t, true, store) : nn_params_add(list, name, t, true);
  return st == AD_OK ? t : NULL;
}

static nn_layer *bn_new(ad_ctx *ctx, const char *kind, int min_nd, int max_nd, const char *layout,
                        int64_t c, const nn_batch_norm_opts *opts) {
  if (!ctx) return NULL;
  nn_batch_norm_opts o = {0};
  if (opts) o = *opts;
  double eps = o.eps ? o.eps : 1e-5, momentum = o.momentum ? o.momentum : 0.1;
  if (c < 1) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: num_features %lld must be >= 1", kind, (long long)c);
    return NULL;
  }
  if (o.dtype != AD_F32 && o.dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: parameters must be float, got %s", kind,
                 ad_dtype_name(o.dtype));
    return NULL;
  }
  if (!(eps >= 0 && isfinite(eps))) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: eps %g must be finite and >= 0", kind, eps);
    return NULL;
  }
  if (!o.cumulative && !(momentum > 0 && momentum <= 1)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: momentum %g must be in (0, 1]", kind, momentum);
    return NULL;
  }
  bn_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  *s = (bn_state){.c = c,
                  .min_nd = min_nd,
                  .max_nd = max_nd,
                  .layout = layout,
                  .eps = eps,
                  .momentum = momentum,
                  .cumulative = o.cumulative};
  nn_layer *l = nn_layer_new_ext(ctx, kind, &bn_ops, s);
  if (!l) {
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  nn_params *p = nn_layer_params(l), *b = nn_layer_buffers(l);
  bool ok = true;
  if (!o.no_affine)
    ok = (s->weight = add_vec(p, false, "weight", ctx, o.dtype, c, 1.0, NN_STORE_NATIVE)) &&
         (s->bias = add_vec(p, false, "bias", ctx, o.dtype, c, 0.0, NN_STORE_NATIVE));
  if (ok && !o.no_running_stats)
    ok =
        (s->running_mean =
             add_vec(b, true, "running_mean", ctx, o.dtype, c, 0.0, NN_STORE_NATIVE)) &&
        (s->running_var = add_vec(b, true, "running_var", ctx, o.dtype, c, 1.0, NN_STORE_NATIVE)) &&
        (s->nbt = add_vec(b, true, "num_batches_tracked", ctx, AD_F64, 0, 0.0, NN_STORE_I64));
  if (!ok) {
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

nn_layer *nn_batch_norm1d_new(ad_ctx *ctx, int64_t num_features, const nn_batch_norm_opts *opts) {
  return bn_new(ctx, "batch_norm1d", 2, 3, "[N, C] or [N, C, L]", num_features, opts);
}

nn_layer *nn_batch_norm2d_new(ad_ctx *ctx, int64_t num_features, const nn_batch_norm_opts *opts) {
  return bn_new(ctx, "batch_norm2d", 4, 4, "[N, C, H, W]", num_features, opts);
}
