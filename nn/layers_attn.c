/* layers_attn.c: multi-head attention, PyTorch's nn.MultiheadAttention.
 *
 *   q = query W_q^T + b_q,  k = key W_k^T + b_k,  v = value W_v^T + b_v
 *     (W_q, W_k, W_v the rows 0..E-1, E..2E-1, 2E..3E-1 of in_proj_weight
 *     when kdim = vdim = E; else q_proj_weight [E, E], k_proj_weight
 *     [E, kdim], v_proj_weight [E, vdim])
 *   add_bias_kv:   k = [k; bias_k], v = [v; bias_v]   (S -> S + 1)
 *   add_zero_attn: k = [k; 0],      v = [v; 0]        (then S -> S + 1)
 *     the masks padded with visible columns, as PyTorch pads them
 *   each split into H heads of E / H:  [N, H, L, E/H]
 *   o_h = scaled_dot_product_attention(q_h, k_h, v_h, mask, dropout)
 *   out = concat_h(o_h) out_proj.weight^T + out_proj.bias
 *
 * The arithmetic is the engine's ops (ad_scaled_dot_product_attention is
 * itself a composite), so the tape derives every gradient; this file holds
 * the parameters, PyTorch's initialisation, the layouts and the masks, and
 * the checks that name the layer. */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>

#define MHA_KIND "multihead_attention"

static const nn_layer_ops mha_ops; /* below; tells the layer kind apart from a
                                      lambda of the same kind name */

typedef struct mha_state {
  int64_t e, h, kdim, vdim; /* kdim, vdim: the key's and value's last dims */
  bool batch_first, causal, zero_attn;
  double dropout;
  ad_rng rng;                             /* dropout draws */
  ad_tensor *w_in, *b_in, *w_out, *b_out; /* biases NULL without bias; w_in
                                             NULL with separate weights */
  ad_tensor *w_sep[3];                    /* q, k, v_proj_weight, or NULL */
  ad_tensor *bias_k, *bias_v;             /* [1, 1, E] with add_bias_kv */
} mha_state;

/* An additive float mask of dtype from m (float: itself; AD_I32: -inf where
 * m is nonzero, 0 elsewhere), reshaped to ndim dims shape; NULL on error. */
static ad_tensor *additive(ad_ctx *ctx, ad_tensor *m, ad_dtype dtype, int ndim,
                           const int64_t *shape) {
  if (m->dtype == AD_I32) {
    ad_tensor *f = nn_tmp_tensor(ctx, dtype, m->ndim, m->shape);
    if (!f) return NULL;
    for (int64_t i = 0; i < m->size; i++)
      ad_tensor_set(f, i, ad_tensor_get(m, i) != 0 ? -INFINITY : 0.0);
    m = f;
  }
  return ad_reshape(ctx, m, ndim, shape);
}

/* The attention mask as a tensor broadcastable to [N, H, L, S], or NULL
 * with *none set when there is no mask; NULL with an error otherwise. */
static ad_tensor *mha_mask(ad_ctx *ctx, const char *who, const mha_state *s, ad_dtype dtype,
                           int64_t n, int64_t L, int64_t S, bool batched, const nn_mha_args *a,
                           bool *none) {
  char b1[64];
  ad_tensor *am = a ? a->attn_mask : NULL, *kpm = a ? a->key_padding_mask : NULL, *out = NULL;
  *none = !am && !kpm;
  if ((am && nn_check_input(ctx, who, "attn_mask", am) != AD_OK) ||
      (kpm && nn_check_input(ctx, who, "key_padding_mask", kpm) != AD_OK))
    return NULL;
  if (am) {
    bool two = am->ndim == 2 && am->shape[0] == L && am->shape[1] == S;
    bool three =
        am->ndim == 3 && am->shape[0] == n * s->h && am->shape[1] == L && am->shape[2] == S;
    if (!two && !three) {
      ad_set_error(ctx, AD_ERR_SHAPE,
                   "%s: attn_mask %s must be [L, S] = [%lld,%lld] or [N*num_heads, L, S] = "
                   "[%lld,%lld,%lld]",
                   who, ad_shape_str(am, b1, sizeof b1), (long long)L, (long long)S,
                   (long long)(n * s->h), (long long)L, (long long)S);
      return NULL;
    }
    if (am->dtype != AD_I32 && am->dtype != dtype) {
      ad_set_error(ctx, AD_ERR_DTYPE,
                   "%s: attn_mask is %s; it must be %s (added) or i32 (nonzero "
                   "masks)",
                   who, ad_dtype_name(am->dtype), ad_dtype_name(dtype));
      return NULL;
    }
    int64_t sh[4] = {two ? 1 : n, two ? 1 : s->h, L, S};
    out = additive(ctx, am, dtype, 4, sh);
    if (!out) return NULL;
  }
  if (kpm) {
    bool ok = batched ? kpm->ndim == 2 && kpm->shape[0] == n && kpm->shape[1] == S
                      : kpm->ndim == 1 && kpm->shape[0] == S;
    if (!ok) {
      if (batched)
        ad_set_error(ctx, AD_ERR_SHAPE, "%s: key_padding_mask %s must be [N, S] = [%lld,%lld]", who,
                     ad_shape_str(kpm, b1, sizeof b1), (long long)n, (long long)S);
      else
        ad_set_error(ctx, AD_ERR_SHAPE, "%s: key_padding_mask %s must be [S] = [%lld]", who,
                     ad_shape_str(kpm, b1, sizeof b1), (long long)S);
      return NULL;
    }
    if (kpm->dtype != AD_I32 && kpm->dtype != dtype) {
      ad_set_error(ctx, AD_ERR_DTYPE,
                   "%s: key_padding_mask is %s; it must be %s (added) or i32 (nonzero masks)", who,
                   ad_dtype_name(kpm->dtype), ad_dtype_name(dtype));
      return NULL;
    }
    int64_t sh[4] = {n, 1, 1, S};
    ad_tensor *k = additive(ctx, kpm, dtype, 4, sh);
    out = out ? ad_add(ctx, out, k) : k;
  }
  return out;
}

/* x [N, T, E] -> [N, H, T, E/H] */
static ad_tensor *split_heads(ad_ctx *ctx, ad_tensor *x, int64_t h) {
  if (!x) return NULL;
  int64_t sh[4] = {x->shape[0], x->shape[1], h, x->shape[2] / h};
  static const int perm[4] = {0, 2, 1, 3};
  return ad_permute(ctx, ad_reshape(ctx, x, 4, sh), perm);
}

/* x [N, T, d] W^T + b, W the rows r0..r0+E-1 of the packed weight of s,
 * or its separate weight i (r0 = i E), b those entries of in_proj_bias */
static ad_tensor *project(ad_ctx *ctx, const mha_state *s, ad_tensor *x, int i) {
  int64_t e = s->e, r0 = i * e;
  ad_tensor *w = s->w_in ? ad_narrow(ctx, s->w_in, 0, r0, e) : s->w_sep[i];
  ad_tensor *y = ad_matmul(ctx, x, w, false, true);
  return s->b_in ? ad_add(ctx, y, ad_narrow(ctx, s->b_in, 0, r0, e)) : y;
}

/* k or v [N, S, E] with bias [1, 1, E] (NULL: none) and then a zero row
 * appended along S, as add_bias_kv and add_zero_attn do */
static ad_tensor *extend_kv(ad_ctx *ctx, ad_tensor *x, ad_tensor *bias, bool zero) {
  if (x && bias) {
    int64_t sh[3] = {x->shape[0], 1, x->shape[2]};
    ad_tensor *xs[2] = {x, ad_expand(ctx, bias, 3, sh)};
    x = xs[1] ? ad_concat(ctx, 2, xs, 1) : NULL;
  }
  return x && zero ? ad_pad(ctx, x, 1, 0, 1) : x;
}

/* The mask (NULL: none) for S + extra keys: with the causal triangle of
 * the first S keys added when causal, and extra visible (zero) columns
 * after them, as PyTorch pads attn_mask and key_padding_mask for the bias
 * and zero keys (which the causal triangle, a mask on the S keys, leaves
 * visible too); NULL with an error, *none when there is no mask. */
static ad_tensor *extend_mask(ad_ctx *ctx, ad_tensor *mask, bool causal, ad_dtype dtype, int64_t L,
                              int64_t S, int64_t extra, bool *none) {
  if (causal) {
    int64_t sh[4] = {1, 1, L, S};
    ad_tensor *c = nn_tmp_tensor(ctx, dtype, 4, sh);
    if (!c) return NULL;
    for (int64_t i = 0; i < L; i++)
      for (int64_t j = 0; j < S; j++) ad_tensor_set(c, i * S + j, j > i ? -INFINITY : 0.0);
    mask = mask ? ad_add(ctx, mask, c) : c;
  }
  *none = !mask;
  return mask ? ad_pad(ctx, mask, 3, 0, extra) : NULL;
}

static ad_tensor *mha_call(nn_layer *l, ad_tensor *query, ad_tensor *key, ad_tensor *value,
                           const nn_mha_args *args, ad_tensor **weights) {
  if (weights) *weights = NULL;
  if (!l) return NULL;
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], b1[64], b2[64], b3[64];
  nn_layer_who(l, who, sizeof who);
  if (!nn_layer_runs(l, &mha_ops)) {
    ad_set_error(ctx, AD_ERR_ARG, "multihead_attention: layer %s is not a multihead_attention",
                 who);
    return NULL;
  }
  if (!query || !key || !value) {
    nn_null_arg(ctx, "multihead_attention", !query ? "query" : !key ? "key" : "value");
    return NULL;
  }
  /* their shapes are read here, before any op checks them */
  if (nn_check_input(ctx, who, "query", query) != AD_OK ||
      nn_check_input(ctx, who, "key", key) != AD_OK ||
      nn_check_input(ctx, who, "value", value) != AD_OK)
    return NULL;
  mha_state *s = nn_layer_state(l);
  int nd = query->ndim;
  const char *layout = s->batch_first ? "[N, L, E] (batch_first) or [L, E]" : "[L, N, E] or [L, E]";
  if ((nd != 2 && nd != 3) || key->ndim != nd || value->ndim != nd ||
      query->shape[nd - 1] != s->e || key->shape[nd - 1] != s->kdim ||
      value->shape[nd - 1] != s->vdim) {
    char dims[96] = "";
    if (s->kdim != s->e || s->vdim != s->e)
      snprintf(dims, sizeof dims, " (key's last dim kdim %lld, value's vdim %lld)",
               (long long)s->kdim, (long long)s->vdim);
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: query %s, key %s and value %s must be %s with E = embed_dim %lld%s, all "
                 "of one rank",
                 who, ad_shape_str(query, b1, sizeof b1), ad_shape_str(key, b2, sizeof b2),
                 ad_shape_str(value, b3, sizeof b3), layout, (long long)s->e, dims);
    return NULL;
  }
  ad_dtype dt = s->w_out->dtype;
  if (query->dtype != dt || key->dtype != dt || value->dtype != dt) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: query, key and value are %s, %s and %s; the layer is %s",
                 who, ad_dtype_name(query->dtype), ad_dtype_name(key->dtype),
                 ad_dtype_name(value->dtype), ad_dtype_name(dt));
    return NULL;
  }
  bool batched = nd == 3;
  /* to [N, T, E] */
  ad_tensor *x[3] = {query, key, value};
  for (int i = 0; i < 3; i++) {
    if (!batched) {
      int64_t sh[3] = {1, x[i]->shape[0], x[i]->shape[1]};
      x[i] = ad_reshape(ctx, x[i], 3, sh);
    } else if (!s->batch_first)
      x[i] = ad_transpose(ctx, x[i], 0, 1);
    if (!x[i]) return NULL;
  }
  int64_t n = x[0]->shape[0], L = x[0]->shape[1], S = x[1]->shape[1];
  if (x[1]->shape[0] != n || x[2]->shape[0] != n || x[2]->shape[1] != S) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: query %s, key %s and value %s: the batch sizes must agree and key and value "
                 "must have the same length",
                 who, ad_shape_str(query, b1, sizeof b1), ad_shape_str(key, b2, sizeof b2),
                 ad_shape_str(value, b3, sizeof b3));
    return NULL;
  }
  bool none;
  ad_tensor *mask = mha_mask(ctx, who, s, dt, n, L, S, batched, args, &none);
  if (!mask && !none) return NULL;
  bool causal = s->causal || (args && args->causal);
  int64_t extra = (s->bias_k != NULL) + s->zero_attn; /* keys PyTorch appends */
  if (extra) {
    mask = extend_mask(ctx, mask, causal, dt, L, S, extra, &none);
    if (!mask && !none) return NULL;
    causal = false; /* in the mask now */
  }
  ad_tensor *q = split_heads(ctx, project(ctx, s, x[0], 0), s->h);
  ad_tensor *k =
      split_heads(ctx, extend_kv(ctx, project(ctx, s, x[1], 1), s->bias_k, s->zero_attn), s->h);
  ad_tensor *v =
      split_heads(ctx, extend_kv(ctx, project(ctx, s, x[2], 2), s->bias_v, s->zero_attn), s->h);
  ad_tensor *w = NULL;
  bool training = args && args->training;
  ad_attention_opts ao = {.causal = causal,
                          .mask = mask,
                          .dropout_p = training ? s->dropout : 0.0,
                          .rng = &s->rng,
                          .weights = &w};
  ad_tensor *o = ad_scaled_dot_product_attention(ctx, q, k, v, &ao);
  if (!o) return NULL;
  static const int perm[4] = {0, 2, 1, 3};
  int64_t sh[3] = {n, L, s->e};
  o = ad_reshape(ctx, ad_permute(ctx, o, perm), 3, sh);
  o = ad_matmul(ctx, o, s->w_out, false, true);
  if (s->b_out) o = ad_add(ctx, o, s->b_out);
  if (!batched) {
    int64_t s2[2] = {L, s->e};
    o = ad_reshape(ctx, o, 2, s2);
  } else if (!s->batch_first)
    o = ad_transpose(ctx, o, 0, 1);
  if (o && weights) {
    if (!(args && args->per_head_weights)) w = ad_mean_axis(ctx, w, 1, false); /* [N, L, S] */
    if (!batched && w) w = ad_reshape(ctx, w, w->ndim - 1, w->shape + 1);
    if (!w) return NULL;
    *weights = w;
  }
  return o;
}

ad_tensor *nn_multihead_attention(nn_layer *l, ad_tensor *query, ad_tensor *key, ad_tensor *value,
                                  const nn_mha_args *args, ad_tensor **weights) {
  mha_state *s = nn_layer_runs(l, &mha_ops) ? nn_layer_state(l) : NULL;
  ad_rng before = s ? s->rng : (ad_rng){0}; /* a call that fails takes no dropout draws */
  ad_tensor *o = mha_call(l, query, key, value, args, weights);
  if (!o && s) s->rng = before;
  if (o) nn_layer_note_output(l, o);
  return o;
}

ad_rng *nn_mha_rng(nn_layer *l) {
  mha_state *s = nn_layer_runs(l, &mha_ops) ? nn_layer_state(l) : NULL;
  return s ? &s->rng : NULL;
}

/* In a Sequential: self-attention on x, causal when the layer was made so. */
static ad_tensor *mha_forward(nn_layer *l, ad_tensor *x, bool training) {
  nn_mha_args a = {.training = training};
  return nn_multihead_attention(l, x, x, x, &a, NULL);
}

static void mha_free(nn_layer *l) {
  mha_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* The settings of PyTorch's MultiheadAttention constructor that this layer
 * has, those that are not the defaults after the first two. */
static void mha_describe(const nn_layer *l, nn_text *t) {
  const mha_state *s = nn_layer_state(l);
  nn_text_add(t, "embed_dim=%lld, num_heads=%lld", (long long)s->e, (long long)s->h);
  if (s->dropout != 0) {
    nn_text_add(t, ", dropout=");
    nn_text_num(t, s->dropout);
  }
  if (!s->b_out) nn_text_add(t, ", bias=False");
  if (s->bias_k) nn_text_add(t, ", add_bias_kv=True");
  if (s->zero_attn) nn_text_add(t, ", add_zero_attn=True");
  if (s->kdim != s->e) nn_text_add(t, ", kdim=%lld", (long long)s->kdim);
  if (s->vdim != s->e) nn_text_add(t, ", vdim=%lld", (long long)s->vdim);
  if (s->batch_first) nn_text_add(t, ", batch_first=True");
  if (s->causal) nn_text_add(t, ", causal=True");
}

static const nn_layer_ops mha_ops = {mha_forward, mha_free, mha_describe};

nn_layer *nn_mha_new_at(ad_ctx *ctx, const char *fn, const char *pfx, int64_t embed_dim,
                        int64_t num_heads, ad_rng *rng, const nn_mha_opts_ext *opts) {
  if (!ctx) return NULL;
  nn_mha_opts_ext x = {0};
  if (opts) x = *opts;
  nn_mha_opts o = x.base;
  /* the bound nn_rnn_new puts on sizes, checked before 3 * embed_dim is taken */
  const int64_t most = INT64_C(1) << 32;
  if (embed_dim < 1 || num_heads < 1 || embed_dim > most || embed_dim % num_heads) {
    ad_set_error(ctx, AD_ERR_ARG,
                 MHA_KIND ": embed_dim %lld and num_heads %lld must be >= 1, embed_dim at most "
                          "2^32, and num_heads must divide embed_dim",
                 (long long)embed_dim, (long long)num_heads);
    return NULL;
  }
  if (x.kdim < 0 || x.vdim < 0 || x.kdim > most || x.vdim > most) {
    ad_set_error(ctx, AD_ERR_ARG,
                 MHA_KIND
                 ": kdim %lld and vdim %lld must be >= 1 (or 0: embed_dim) and at most 2^32",
                 (long long)x.kdim, (long long)x.vdim);
    return NULL;
  }
  if (!(o.dropout >= 0 && o.dropout < 1)) {
    ad_set_error(ctx, AD_ERR_ARG, MHA_KIND ": dropout %g is outside [0, 1)", o.dropout);
    return NULL;
  }
  if (o.dtype != AD_F32 && o.dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, MHA_KIND ": parameters must be float, got %s",
                 ad_dtype_name(o.dtype));
    return NULL;
  }
  if (!rng) {
    nn_null_arg(ctx, MHA_KIND, "rng");
    return NULL;
  }
  mha_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  int64_t e = embed_dim, kdim = x.kdim ? x.kdim : e, vdim = x.vdim ? x.vdim : e;
  *s = (mha_state){.e = e,
                   .h = num_heads,
                   .kdim = kdim,
                   .vdim = vdim,
                   .batch_first = o.batch_first,
                   .causal = o.causal,
                   .zero_attn = x.add_zero_attn,
                   .dropout = o.dropout};
  ad_rng_seed(&s->rng, o.seed);
  nn_layer *l = nn_layer_new_ext(ctx, MHA_KIND, &mha_ops, s);
  if (!l) {
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  /* PyTorch's registration order (its state dict's), which is also the
   * order of the draws from rng */
  int64_t w_in[2] = {3 * e, e}, b_in[1] = {3 * e}, w_out[2] = {e, e}, b_out[1] = {e};
  int64_t w_sep[3][2] = {{e, e}, {e, kdim}, {e, vdim}}, b_kv[3] = {1, 1, e};
  static const char *const sep_names[3] = {"q_proj_weight", "k_proj_weight", "v_proj_weight"};
  double bound = 1.0 / sqrt((double)e); /* nn.Linear's default for out_proj.weight */
  nn_params *p = nn_layer_params(l);
  nn_init zeros = nn_init_make(NN_INIT_ZEROS, 0, 0),
          xavier = nn_init_make(NN_INIT_XAVIER_UNIFORM, 0, 0),
          xavier_normal = nn_init_make(NN_INIT_XAVIER_NORMAL, 0, 0);
  bool ok = true;
  if (kdim == e && vdim == e)
    ok = (s->w_in = nn_param_new_at(p, fn, pfx, "in_proj_weight", o.dtype, 2, w_in, xavier, rng));
  for (int i = 0; i < 3 && ok && !s->w_in; i++)
    ok = (s->w_sep[i] =
              nn_param_new_at(p, fn, pfx, sep_names[i], o.dtype, 2, w_sep[i], xavier, rng));
  if (ok && !o.no_bias)
    ok = (s->b_in = nn_param_new_at(p, fn, pfx, "in_proj_bias", o.dtype, 1, b_in, zeros, rng));
  if (ok && x.add_bias_kv)
    ok =
        (s->bias_k = nn_param_new_at(p, fn, pfx, "bias_k", o.dtype, 3, b_kv, xavier_normal, rng)) &&
        (s->bias_v = nn_param_new_at(p, fn, pfx, "bias_v", o.dtype, 3, b_kv, xavier_normal, rng));
  if (ok)
    ok = (s->w_out = nn_param_new_at(p, fn, pfx, "out_proj.weight", o.dtype, 2, w_out,
                                     nn_init_make(NN_INIT_UNIFORM, -bound, bound), rng));
  if (ok && !o.no_bias)
    ok = (s->b_out = nn_param_new_at(p, fn, pfx, "out_proj.bias", o.dtype, 1, b_out, zeros, rng));
  if (!ok) {
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

nn_layer *nn_multihead_attention_new_ext(ad_ctx *ctx, int64_t embed_dim, int64_t num_heads,
                                         ad_rng *rng, const nn_mha_opts_ext *opts) {
  return nn_mha_new_at(ctx, "nn_multihead_attention_new_ext", NULL, embed_dim, num_heads, rng,
                       opts);
}

nn_layer *nn_multihead_attention_new(ad_ctx *ctx, int64_t embed_dim, int64_t num_heads, ad_rng *rng,
                                     const nn_mha_opts *opts) {
  nn_mha_opts_ext x = {0};
  if (opts) x.base = *opts;
  return nn_mha_new_at(ctx, "nn_multihead_attention_new", NULL, embed_dim, num_heads, rng, &x);
}
