/* layers_seq.c: layers for sequence models, PyTorch's nn.Embedding and
 * nn.LayerNorm. The arithmetic is the engine's ops (ad_embedding,
 * ad_layer_norm), whose backward the tape runs; this file holds the
 * parameters, PyTorch's initialisation and the checks that name the layer.
 *
 *   Embedding:  y = weight[x]        weight [num, dim] ~ N(0, 1), the
 *                                    padding row zeroed; it gets no gradient
 *   LayerNorm:  y = (x - mean) / sqrt(var + eps) * weight + bias over the
 *               normalized shape; weight ones, bias zeros */
#include "nn_internal.h"

#include <math.h>

/* ------------------------------------------------------------ embedding */

typedef struct emb_state {
  int64_t num, dim, padding_idx; /* padding_idx in 0..num-1, or AD_NO_PADDING */
  double max_norm, norm_type;    /* max_norm 0: none; norm_type 0: 2 */
  bool scale_grad_by_freq;
  ad_tensor *w;
} emb_state;

static ad_tensor *emb_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)training;
  emb_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  if (x->dtype != AD_I32) {
    char who[96], a[64];
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %s is %s; token indices must be i32", who,
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
    return NULL;
  }
  ad_embedding_opts eo = {.padding = s->padding_idx != AD_NO_PADDING,
                          .padding_idx = s->padding_idx != AD_NO_PADDING ? s->padding_idx : 0,
                          .scale_grad_by_freq = s->scale_grad_by_freq};
  if (s->max_norm <= 0) return ad_embedding_ext(ctx, s->w, x, &eo);
  /* renormalised first (checked indices: ad_embedding's message), undone
   * when the lookup fails */
  const int32_t *p = x->data;
  for (int64_t i = 0; i < x->size; i++)
    if (p[i] < 0 || p[i] >= s->num) return ad_embedding_ext(ctx, s->w, x, &eo);
  nn_renorm_undo u;
  if (nn_renorm_apply(ctx, s->w, p, x->size, s->max_norm, s->norm_type == 0 ? 2.0 : s->norm_type,
                      &u) != AD_OK)
    return NULL;
  ad_tensor *y = ad_embedding_ext(ctx, s->w, x, &eo);
  nn_renorm_finish(&u, !y);
  return y;
}

static void emb_free(nn_layer *l) {
  emb_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* PyTorch's Embedding extra_repr. */
static void emb_describe(const nn_layer *l, nn_text *t) {
  const emb_state *s = nn_layer_state(l);
  nn_text_add(t, "%lld, %lld", (long long)s->num, (long long)s->dim);
  if (s->padding_idx != AD_NO_PADDING)
    nn_text_add(t, ", padding_idx=%lld", (long long)s->padding_idx);
  if (s->max_norm > 0) {
    nn_text_add(t, ", max_norm=");
    nn_text_num(t, s->max_norm);
  }
  if (s->norm_type != 0 && s->norm_type != 2) {
    nn_text_add(t, ", norm_type=");
    nn_text_num(t, s->norm_type);
  }
  if (s->scale_grad_by_freq) nn_text_add(t, ", scale_grad_by_freq=True");
}

static const nn_layer_ops emb_ops = {emb_forward, emb_free, emb_describe};

/* nn_embedding_new_ext called as fn (its name in the messages that name
 * the weight). */
static nn_layer *emb_new(ad_ctx *ctx, const char *fn, int64_t num, int64_t dim, ad_rng *rng,
                         const nn_embedding_ext_opts *opts);

nn_layer *nn_embedding_new(ad_ctx *ctx, int64_t num, int64_t dim, ad_rng *rng,
                           const nn_embedding_opts *opts) {
  nn_embedding_ext_opts e = {.max_norm = 0};
  if (opts) e.base = *opts;
  return emb_new(ctx, "nn_embedding_new", num, dim, rng, &e);
}

nn_layer *nn_embedding_new_ext(ad_ctx *ctx, int64_t num, int64_t dim, ad_rng *rng,
                               const nn_embedding_ext_opts *opts) {
  return emb_new(ctx, "nn_embedding_new_ext", num, dim, rng, opts);
}

static nn_layer *emb_new(ad_ctx *ctx, const char *fn, int64_t num, int64_t dim, ad_rng *rng,
                         const nn_embedding_ext_opts *opts) {
  if (!ctx) return NULL;
  nn_embedding_ext_opts x = {.max_norm = 0};
  if (opts) x = *opts;
  nn_embedding_opts o = x.base;
  if (!(x.max_norm >= 0) || isinf(x.max_norm)) {
    ad_set_error(ctx, AD_ERR_ARG, "embedding: max_norm %g must be finite and >= 0 (0: none)",
                 x.max_norm);
    return NULL;
  }
  if (!(x.norm_type >= 0)) {
    ad_set_error(ctx, AD_ERR_ARG, "embedding: norm_type %g must be > 0 or inf (0: 2)", x.norm_type);
    return NULL;
  }
  if (num < 1 || dim < 1) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "embedding: num_embeddings %lld and embedding_dim %lld must be >= 1",
                 (long long)num, (long long)dim);
    return NULL;
  }
  if (o.padding && (o.padding_idx < -num || o.padding_idx >= num)) {
    ad_set_error(ctx, AD_ERR_ARG, "embedding: padding_idx %lld is outside -%lld..%lld",
                 (long long)o.padding_idx, (long long)num, (long long)num - 1);
    return NULL;
  }
  if (o.dtype != AD_F32 && o.dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "embedding: parameters must be float, got %s",
                 ad_dtype_name(o.dtype));
    return NULL;
  }
  emb_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  *s = (emb_state){.num = num,
                   .dim = dim,
                   .padding_idx = !o.padding          ? AD_NO_PADDING
                                  : o.padding_idx < 0 ? o.padding_idx + num
                                                      : o.padding_idx,
                   .max_norm = x.max_norm,
                   .norm_type = x.norm_type,
                   .scale_grad_by_freq = x.scale_grad_by_freq};
  nn_layer *l = nn_layer_new_ext(ctx, "embedding", &emb_ops, s);
  if (!l) {
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  s->w = nn_embedding_weight_new(nn_layer_params(l), fn, num, dim, o.dtype, o.weight_init,
                                 o.padding ? s->padding_idx : -1, rng);
  if (!s->w) {
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

ad_tensor *nn_embedding_weight_new(nn_params *list, const char *fn, int64_t num, int64_t dim,
                                   ad_dtype dtype, nn_init init, int64_t pad, ad_rng *rng) {
  if (init.kind == NN_INIT_DEFAULT) init = nn_init_make(NN_INIT_NORMAL, 0.0, 1.0);
  int64_t shape[2] = {num, dim};
  ad_tensor *w = nn_param_new(list, fn, "weight", dtype, 2, shape, init, rng);
  if (w && pad >= 0) /* PyTorch's reset_parameters zeroes the padding row */
    for (int64_t j = 0; j < dim; j++) ad_tensor_set(w, pad * dim + j, 0.0);
  return w;
}

/* ----------------------------------------------------------- layer_norm */

typedef struct ln_state {
  int ndim;
  int64_t dims[AD_MAX_DIMS];
  double eps;
  ad_dtype dtype;
  ad_tensor *weight, *bias; /* NULL without elementwise affine */
} ln_state;

/* "[3,4]" for the normalized shape into buf. */
static const char *ns_str(const ln_state *s, char *buf, size_t n) {
  int len = snprintf(buf, n, "[");
  for (int k = 0; k < s->ndim && len > 0 && (size_t)len < n; k++)
    len += snprintf(buf + len, n - (size_t)len, "%s%lld", k ? "," : "", (long long)s->dims[k]);
  if (len > 0 && (size_t)len < n) snprintf(buf + len, n - (size_t)len, "]");
  return buf;
}

static ad_tensor *ln_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)training;
  ln_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64], b[160];
  bool ok = x->ndim >= s->ndim;
  for (int k = 0; ok && k < s->ndim; k++) ok = x->shape[x->ndim - s->ndim + k] == s->dims[k];
  if (!ok) {
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s does not end with the normalized shape %s", who,
                 ad_shape_str(x, a, sizeof a), ns_str(s, b, sizeof b));
    return NULL;
  }
  if (x->dtype != s->dtype) {
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %s is %s, the layer is %s", who,
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype), ad_dtype_name(s->dtype));
    return NULL;
  }
  return ad_layer_norm(ctx, x, s->ndim, s->dims, s->weight, s->bias, s->eps);
}

static void ln_free(nn_layer *l) {
  ln_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* PyTorch's LayerNorm extra_repr: the normalized shape as a tuple ("(64,)"). */
static void ln_describe(const nn_layer *l, nn_text *t) {
  const ln_state *s = nn_layer_state(l);
  nn_text_add(t, "(");
  for (int k = 0; k < s->ndim; k++) nn_text_add(t, "%s%lld", k ? ", " : "", (long long)s->dims[k]);
  nn_text_add(t, "%s), eps=", s->ndim == 1 ? "," : "");
  nn_text_num(t, s->eps);
  nn_text_add(t, ", elementwise_affine=%s", nn_py_bool(s->weight != NULL));
}

static const nn_layer_ops ln_ops = {ln_forward, ln_free, ln_describe};

nn_layer *nn_layer_norm_new(ad_ctx *ctx, int ndim, const int64_t *normalized_shape,
                            const nn_layer_norm_opts *opts) {
  if (!ctx) return NULL;
  if (!normalized_shape) {
    nn_null_arg(ctx, "layer_norm", "normalized_shape");
    return NULL;
  }
  nn_layer_norm_opts o = {0};
  if (opts) o = *opts;
  double eps = o.eps ? o.eps : 1e-5;
  bool ok = ndim >= 1 && ndim <= AD_MAX_DIMS;
  for (int k = 0; ok && k < ndim; k++) ok = normalized_shape[k] >= 1;
  if (!ok) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "layer_norm: normalized_shape must have 1..%d dims, each >= 1 (%d dims given)",
                 AD_MAX_DIMS, ndim);
    return NULL;
  }
  if (!(eps >= 0 && isfinite(eps))) {
    ad_set_error(ctx, AD_ERR_ARG, "layer_norm: eps %g must be finite and >= 0", eps);
    return NULL;
  }
  if (o.dtype != AD_F32 && o.dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "layer_norm: parameters must be float, got %s",
                 ad_dtype_name(o.dtype));
    return NULL;
  }
  ln_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  *s = (ln_state){.ndim = ndim, .eps = eps, .dtype = o.dtype};
  for (int k = 0; k < ndim; k++) s->dims[k] = normalized_shape[k];
  nn_layer *l = nn_layer_new_ext(ctx, "layer_norm", &ln_ops, s);
  if (!l) {
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  if (!o.no_affine) {
    nn_params *p = nn_layer_params(l);
    const char *fn = "nn_layer_norm_new";
    ad_tensor *w = nn_param_new(p, fn, "weight", o.dtype, ndim, s->dims,
                                nn_init_make(NN_INIT_CONSTANT, 1.0, 0), NULL);
    ad_tensor *b = w ? nn_param_new(p, fn, "bias", o.dtype, ndim, s->dims,
                                    nn_init_make(NN_INIT_ZEROS, 0, 0), NULL)
                     : NULL;
    if (!b) {
      nn_layer_free(l);
      return NULL;
    }
    s->weight = w;
    s->bias = b;
  }
  return l;
}
