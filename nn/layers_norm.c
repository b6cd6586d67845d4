/* layers_norm.c: BatchNorm1d, 2d and 3d, PyTorch's nn.BatchNorm*d (here),
 * and GroupNorm, InstanceNorm1d, 2d and 3d (the second half of the file).
 *
 *   training:  y = (x - mean_c(x)) / sqrt(var_c(x) + eps) * weight + bias
 *              running_mean = (1 - m) running_mean + m mean_c(x)
 *              running_var  = (1 - m) running_var  + m var_c(x) M / (M - 1)
 *              num_batches_tracked += 1
 *   eval:      y = (x - running_mean) / sqrt(running_var + eps) * weight + bias
 *
 * with m the momentum, or 1 / num_batches_tracked (after the increment) for
 * the cumulative average (PyTorch's momentum=None). The arithmetic is
 * ad_batch_norm's (the op batch_norm in training mode, a composite of ops
 * in evaluation mode); this file holds the parameters, the buffers and the
 * checks that name the layer. */
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
 * added to list under name (owned by it); NULL on error, named after the
 * constructor fn and the tensor (nn_error_tensor). */
static ad_tensor *add_vec(nn_params *list, const char *fn, bool buffer, const char *name,
                          ad_ctx *ctx, ad_dtype dtype, int64_t c, double v, nn_store store) {
  ad_tensor *t = ad_full(ctx, dtype, c ? 1 : 0, &c, v);
  ad_status st = !t       ? ad_last_status(ctx)
                 : buffer ? nn_buffers_add(list, name, t, true, store)
                          : nn_params_add(list, name, t, true);
  if (st == AD_OK) return t;
  nn_error_tensor(ctx, fn, NULL, name, c ? 1 : 0, &c);
  return NULL;
}

static nn_layer *bn_new(ad_ctx *ctx, const char *fn, const char *kind, int min_nd, int max_nd,
                        const char *layout, int64_t c, const nn_batch_norm_opts *opts) {
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
    ok = (s->weight = add_vec(p, fn, false, "weight", ctx, o.dtype, c, 1.0, NN_STORE_NATIVE)) &&
         (s->bias = add_vec(p, fn, false, "bias", ctx, o.dtype, c, 0.0, NN_STORE_NATIVE));
  if (ok && !o.no_running_stats)
    ok = (s->running_mean =
              add_vec(b, fn, true, "running_mean", ctx, o.dtype, c, 0.0, NN_STORE_NATIVE)) &&
         (s->running_var =
              add_vec(b, fn, true, "running_var", ctx, o.dtype, c, 1.0, NN_STORE_NATIVE)) &&
         (s->nbt = add_vec(b, fn, true, "num_batches_tracked", ctx, AD_F64, 0, 0.0, NN_STORE_I64));
  if (!ok) {
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

nn_layer *nn_batch_norm1d_new(ad_ctx *ctx, int64_t num_features, const nn_batch_norm_opts *opts) {
  return bn_new(ctx, "nn_batch_norm1d_new", "batch_norm1d", 2, 3, "[N, C] or [N, C, L]",
                num_features, opts);
}

nn_layer *nn_batch_norm2d_new(ad_ctx *ctx, int64_t num_features, const nn_batch_norm_opts *opts) {
  return bn_new(ctx, "nn_batch_norm2d_new", "batch_norm2d", 4, 4, "[N, C, H, W]", num_features,
                opts);
}

nn_layer *nn_batch_norm3d_new(ad_ctx *ctx, int64_t num_features, const nn_batch_norm_opts *opts) {
  return bn_new(ctx, "nn_batch_norm3d_new", "batch_norm3d", 5, 5, "[N, C, D, H, W]", num_features,
                opts);
}

/* ----------------------------------------------- GroupNorm, InstanceNorm
 * PyTorch's nn.GroupNorm and nn.InstanceNorm1d / 2d / 3d, composed from the
 * engine's ops so that the tape derives every derivative:
 *
 *   group norm:  ad_group_norm: x [N, C, *] viewed as [N, G, C/G, prod(*)],
 *                each (n, g) normalised (mean, biased variance), times
 *                weight, plus bias, per channel
 *   instance:    group norm with G = C (training mode, or without running
 *                statistics); with them, in training mode outside the tape
 *                (as F.instance_norm, through batch_norm on [1, N*C, *]):
 *                  running_mean = mean_n((1 - m) running_mean + m mean_nc)
 *                  running_var  = mean_n((1 - m) running_var  + m var_nc S / (S - 1))
 *                with S = prod(*); in evaluation mode ad_batch_norm with the
 *                running statistics. num_batches_tracked is kept for the
 *                state dict and, as PyTorch's, never counts. */

/* y = group_norm(x, g) * weight + bias (either NULL for none) for x [N, C,
 * *] with C a multiple of g. */
static ad_tensor *group_norm(ad_ctx *ctx, ad_tensor *x, int64_t g, ad_tensor *weight,
                             ad_tensor *bias, double eps) {
  return ad_group_norm(ctx, x, g, weight, bias, eps);
}

/* The dtype the layer takes: its parameters' or buffers', else x's. */
static bool norm_dtype_ok(nn_layer *l, const ad_tensor *x, const ad_tensor *state) {
  ad_dtype want = state ? state->dtype : x->dtype;
  if (x->dtype == want && (x->dtype == AD_F32 || x->dtype == AD_F64)) return true;
  char who[96], a[64];
  nn_layer_who(l, who, sizeof who);
  if (!state) /* no parameters or buffers: any float dtype */
    ad_set_error(nn_layer_ctx(l), AD_ERR_DTYPE, "%s: input %s must be float, got %s", who,
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
  else
    ad_set_error(nn_layer_ctx(l), AD_ERR_DTYPE, "%s: input %s is %s, the layer is %s", who,
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype), ad_dtype_name(want));
  return false;
}

static bool eps_ok(ad_ctx *ctx, const char *kind, double eps) {
  if (eps >= 0 && isfinite(eps)) return true;
  ad_set_error(ctx, AD_ERR_ARG, "%s: eps %g must be finite and >= 0", kind, eps);
  return false;
}

typedef struct gn_state {
  int64_t g, c; /* num_groups, num_channels */
  double eps;
  ad_tensor *weight, *bias; /* NULL without affine */
} gn_state;

static ad_tensor *gn_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)training;
  gn_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  nn_layer_who(l, who, sizeof who);
  if (x->ndim < 2) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s has %d dims; the layer expects [N, C, *]", who,
                 ad_shape_str(x, a, sizeof a), x->ndim);
    return NULL;
  }
  int64_t c = x->shape[1];
  if (s->weight ? c != s->c : c % s->g != 0) { /* (without affine, as PyTorch) */
    ad_set_error(
        ctx, AD_ERR_SHAPE, "%s: input %s has %lld channels (dim 1), the layer expects %s%lld", who,
        ad_shape_str(x, a, sizeof a), (long long)c, s->weight ? "" : "a multiple of num_groups ",
        (long long)(s->weight ? s->c : s->g));
    return NULL;
  }
  if (!norm_dtype_ok(l, x, s->weight)) return NULL;
  /* PyTorch's _verify_batch_size on [N * C / G, G, *] */
  if (x->size / s->g == 1) {
    ad_set_error(
        ctx, AD_ERR_SHAPE,
        "%s: input %s has one sample with 1 value per group; PyTorch refuses it (more than "
        "1 value per channel expected)",
        who, ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  return group_norm(ctx, x, s->g, s->weight, s->bias, s->eps);
}

static void gn_free(nn_layer *l) {
  gn_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* PyTorch's GroupNorm extra_repr. */
static void gn_describe(const nn_layer *l, nn_text *t) {
  const gn_state *s = nn_layer_state(l);
  nn_text_add(t, "%lld, %lld, eps=", (long long)s->g, (long long)s->c);
  nn_text_num(t, s->eps);
  nn_text_add(t, ", affine=%s", nn_py_bool(s->weight != NULL));
}

static const nn_layer_ops gn_ops = {gn_forward, gn_free, gn_describe};

nn_layer *nn_group_norm_new(ad_ctx *ctx, int64_t num_groups, int64_t num_channels,
                            const nn_group_norm_opts *opts) {
  if (!ctx) return NULL;
  nn_group_norm_opts o = {0};
  if (opts) o = *opts;
  double eps = o.eps ? o.eps : 1e-5;
  if (num_groups < 1 || num_channels < 1) {
    ad_set_error(ctx, AD_ERR_ARG, "group_norm: num_groups %lld and num_channels %lld must be >= 1",
                 (long long)num_groups, (long long)num_channels);
    return NULL;
  }
  if (num_channels % num_groups) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "group_norm: num_channels %lld must be divisible by num_groups %lld",
                 (long long)num_channels, (long long)num_groups);
    return NULL;
  }
  if (o.dtype != AD_F32 && o.dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "group_norm: parameters must be float, got %s",
                 ad_dtype_name(o.dtype));
    return NULL;
  }
  if (!eps_ok(ctx, "group_norm", eps)) return NULL;
  gn_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  *s = (gn_state){.g = num_groups, .c = num_channels, .eps = eps};
  nn_layer *l = nn_layer_new_ext(ctx, "group_norm", &gn_ops, s);
  if (!l) {
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  nn_params *p = nn_layer_params(l);
  const char *fn = "nn_group_norm_new";
  if (!o.no_affine && !((s->weight = add_vec(p, fn, false, "weight", ctx, o.dtype, num_channels,
                                             1.0, NN_STORE_NATIVE)) &&
                        (s->bias = add_vec(p, fn, false, "bias", ctx, o.dtype, num_channels, 0.0,
                                           NN_STORE_NATIVE)))) {
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

typedef struct in_state {
  int64_t c; /* num_features */
  int nd;    /* rank of a batched input: 3 to 5 */
  const char *layout;
  double eps, momentum;
  ad_tensor *weight, *bias;                    /* NULL without affine */
  ad_tensor *running_mean, *running_var, *nbt; /* NULL without running stats */
} in_state;

static double elem(const ad_tensor *t, int64_t i) {
  return t->dtype == AD_F64 ? ((const double *)t->data)[i] : ((const float *)t->data)[i];
}

static void set_elem(ad_tensor *t, int64_t i, double v) {
  if (t->dtype == AD_F64)
    ((double *)t->data)[i] = v;
  else
    ((float *)t->data)[i] = (float)v;
}

/* The running statistics' update from x [N, C, S...] (S > 1 values per
 * instance and channel, N > 0), as F.instance_norm makes it. Nothing is
 * changed when it fails (AD_ERR_OOM noting the writes). */
static ad_status in_update(in_state *s, const ad_tensor *x) {
  ad_status st = ad_tensor_mark_modified(s->running_mean);
  if (st == AD_OK) st = ad_tensor_mark_modified(s->running_var);
  if (st != AD_OK) return st;
  int64_t n = x->shape[0], c = s->c, len = x->size / (n * c);
  double m = s->momentum;
  for (int64_t j = 0; j < c; j++) {
    double rm = elem(s->running_mean, j), rv = elem(s->running_var, j), sm = 0, sv = 0;
    for (int64_t i = 0; i < n; i++) {
      int64_t at = (i * c + j) * len;
      double mean = 0, ss = 0;
      for (int64_t k = 0; k < len; k++) mean += elem(x, at + k);
      mean /= (double)len;
      for (int64_t k = 0; k < len; k++) {
        double d = elem(x, at + k) - mean;
        ss += d * d;
      }
      sm += m * mean + (1 - m) * rm;
      sv += m * (ss / (double)(len - 1)) + (1 - m) * rv;
    }
    set_elem(s->running_mean, j, sm / (double)n);
    set_elem(s->running_var, j, sv / (double)n);
  }
  return AD_OK;
}

static ad_tensor *in_forward(nn_layer *l, ad_tensor *x, bool training) {
  in_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  nn_layer_who(l, who, sizeof who);
  if (x->ndim != s->nd && x->ndim != s->nd - 1) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s has %d dims; the layer expects %s", who,
                 ad_shape_str(x, a, sizeof a), x->ndim, s->layout);
    return NULL;
  }
  bool unbatched = x->ndim < s->nd;
  int64_t c = x->shape[unbatched ? 0 : 1];
  /* without affine and running statistics, as PyTorch (which warns), any C */
  if (c != s->c && (s->weight || s->running_mean)) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input %s has %lld channels (dim %d), the layer expects %lld", who,
                 ad_shape_str(x, a, sizeof a), (long long)c, unbatched ? 0 : 1, (long long)s->c);
    return NULL;
  }
  if (!norm_dtype_ok(l, x, s->weight ? s->weight : s->running_mean)) return NULL;
  int64_t spatial = 1;
  for (int k = unbatched ? 1 : 2; k < x->ndim; k++) spatial *= x->shape[k];
  /* without running statistics the instance's are used in both modes */
  bool instance_stats = training || !s->running_mean;
  if (instance_stats && spatial == 1) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input %s has 1 value per instance and channel; instance statistics need more "
                 "than 1 (as in PyTorch)",
                 who, ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  ad_tensor *xb = x;
  if (unbatched) {
    int64_t shape[AD_MAX_DIMS] = {1};
    for (int k = 0; k < x->ndim; k++) shape[k + 1] = x->shape[k];
    xb = ad_reshape(ctx, x, x->ndim + 1, shape);
    if (!xb) return NULL;
  }
  ad_tensor *y = instance_stats ? group_norm(ctx, xb, c, s->weight, s->bias, s->eps)
                                : ad_batch_norm(ctx, xb, s->weight, s->bias, s->running_mean,
                                                s->running_var, false, s->momentum, s->eps);
  if (unbatched) y = ad_reshape(ctx, y, x->ndim, x->shape);
  /* (an empty batch leaves them: PyTorch 1.13 writes the NaN mean of no
   * instance) */
  if (y && training && s->running_mean && x->size > 0 && in_update(s, xb) != AD_OK) return NULL;
  return y;
}

static void in_free(nn_layer *l) {
  in_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* PyTorch's _NormBase extra_repr. */
static void in_describe(const nn_layer *l, nn_text *t) {
  const in_state *s = nn_layer_state(l);
  nn_text_add(t, "%lld, eps=", (long long)s->c);
  nn_text_num(t, s->eps);
  nn_text_add(t, ", momentum=");
  nn_text_num(t, s->momentum);
  nn_text_add(t, ", affine=%s, track_running_stats=%s", nn_py_bool(s->weight != NULL),
              nn_py_bool(s->running_mean != NULL));
}

static const nn_layer_ops in_ops = {in_forward, in_free, in_describe};

static nn_layer *in_new(ad_ctx *ctx, const char *fn, const char *kind, int nd, const char *layout,
                        int64_t c, const nn_instance_norm_opts *opts) {
  if (!ctx) return NULL;
  nn_instance_norm_opts o = {0};
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
  if (!eps_ok(ctx, kind, eps)) return NULL;
  if (!(momentum > 0 && momentum <= 1)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: momentum %g must be in (0, 1]", kind, momentum);
    return NULL;
  }
  in_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  *s = (in_state){.c = c, .nd = nd, .layout = layout, .eps = eps, .momentum = momentum};
  nn_layer *l = nn_layer_new_ext(ctx, kind, &in_ops, s);
  if (!l) {
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  nn_params *p = nn_layer_params(l), *b = nn_layer_buffers(l);
  bool ok = true;
  if (o.affine)
    ok = (s->weight = add_vec(p, fn, false, "weight", ctx, o.dtype, c, 1.0, NN_STORE_NATIVE)) &&
         (s->bias = add_vec(p, fn, false, "bias", ctx, o.dtype, c, 0.0, NN_STORE_NATIVE));
  if (ok && o.track_running_stats)
    ok = (s->running_mean =
              add_vec(b, fn, true, "running_mean", ctx, o.dtype, c, 0.0, NN_STORE_NATIVE)) &&
         (s->running_var =
              add_vec(b, fn, true, "running_var", ctx, o.dtype, c, 1.0, NN_STORE_NATIVE)) &&
         (s->nbt = add_vec(b, fn, true, "num_batches_tracked", ctx, AD_F64, 0, 0.0, NN_STORE_I64));
  if (!ok) {
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

nn_layer *nn_instance_norm1d_new(ad_ctx *ctx, int64_t num_features,
                                 const nn_instance_norm_opts *opts) {
  return in_new(ctx, "nn_instance_norm1d_new", "instance_norm1d", 3, "[N, C, L] or [C, L]",
                num_features, opts);
}

nn_layer *nn_instance_norm2d_new(ad_ctx *ctx, int64_t num_features,
                                 const nn_instance_norm_opts *opts) {
  return in_new(ctx, "nn_instance_norm2d_new", "instance_norm2d", 4, "[N, C, H, W] or [C, H, W]",
                num_features, opts);
}

nn_layer *nn_instance_norm3d_new(ad_ctx *ctx, int64_t num_features,
                                 const nn_instance_norm_opts *opts) {
  return in_new(ctx, "nn_instance_norm3d_new", "instance_norm3d", 5,
                "[N, C, D, H, W] or [C, D, H, W]", num_features, opts);
}
