/* layers_transformer.c: PyTorch's nn.TransformerEncoderLayer (1.13).
 *
 *   sa(x) = dropout1(self_attn(x, x, x, masks))
 *   ff(x) = dropout2(linear2(dropout(act(linear1(x)))))
 *   post-norm:  x = norm1(x + sa(x));   y = norm2(x + ff(x))
 *   pre-norm:   x = x + sa(norm1(x));   y = x + ff(norm2(x))
 *
 * self_attn is a multi-head attention layer of its own (layers_attn.c: its
 * parameters, masks and the dropout on the attention weights), held by
 * this one under the name "self_attn"; this layer's parameter list lists
 * its four under "self_attn.*" (borrowed) and owns the eight of the
 * feed-forward block and the norms. The arithmetic is the engine's ops, so
 * the tape derives every gradient. */
#include "nn_internal.h"

#include <math.h>

#define XF_KIND "transformer_encoder_layer"

static const nn_layer_ops xf_ops;

typedef struct xf_state {
  int64_t e, h, f;
  double dropout, eps;
  nn_act act;
  bool batch_first, norm_first, causal;
  ad_rng rng; /* dropout1, dropout and dropout2 */
  nn_layer *mha;
  ad_tensor *w1, *b1, *w2, *b2, *g1, *be1, *g2, *be2;
} xf_state;

/* x W^T + b over the last axis of x */
static ad_tensor *linear(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *b) {
  return ad_add(ctx, ad_matmul(ctx, x, w, false, true), b);
}

static ad_tensor *norm(ad_ctx *ctx, const xf_state *s, ad_tensor *x, ad_tensor *g, ad_tensor *b) {
  return ad_layer_norm(ctx, x, 1, &s->e, g, b, s->eps);
}

static ad_tensor *drop(ad_ctx *ctx, xf_state *s, ad_tensor *x, bool training) {
  return x && training ? nn_dropout_apply(ctx, x, s->dropout, &s->rng) : x;
}

/* sa(x) */
static ad_tensor *sa_block(ad_ctx *ctx, xf_state *s, ad_tensor *x, const nn_mha_args *ma) {
  return x ? drop(ctx, s, nn_multihead_attention(s->mha, x, x, x, ma, NULL), ma->training) : NULL;
}

/* ff(x) */
static ad_tensor *ff_block(ad_ctx *ctx, xf_state *s, ad_tensor *x, bool training) {
  ad_tensor *h = linear(ctx, x, s->w1, s->b1);
  h = h ? nn_activate(ctx, h, s->act, 0) : NULL;
  h = drop(ctx, s, h, training);
  return drop(ctx, s, linear(ctx, h, s->w2, s->b2), training);
}

/* The call; *ran is set once the checks passed, so that only the errors
 * of what runs after them are renamed after the layer. */
static ad_tensor *xf_call(nn_layer *l, ad_tensor *src, const nn_transformer_args *a,
                          const char *who, bool *ran) {
  ad_ctx *ctx = nn_layer_ctx(l);
  char b1[64];
  if (!nn_layer_runs(l, &xf_ops)) {
    ad_set_error(ctx, AD_ERR_ARG, XF_KIND ": layer %s is not a " XF_KIND, who);
    return NULL;
  }
  if (!src) {
    nn_null_arg(ctx, who, "src");
    return NULL;
  }
  if (nn_check_input(ctx, who, "src", src) != AD_OK) return NULL;
  xf_state *s = nn_layer_state(l);
  int nd = src->ndim;
  if ((nd != 2 && nd != 3) || src->shape[nd - 1] != s->e || src->shape[0] < 1 ||
      (nd == 3 && src->shape[1] < 1)) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: src %s must be %s, S and N >= 1, E = d_model %lld", who,
                 ad_shape_str(src, b1, sizeof b1),
                 s->batch_first ? "[N, S, E] (batch_first) or [S, E]" : "[S, N, E] or [S, E]",
                 (long long)s->e);
    return NULL;
  }
  if (src->dtype != s->w1->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: src is %s; the layer is %s", who,
                 ad_dtype_name(src->dtype), ad_dtype_name(s->w1->dtype));
    return NULL;
  }
  *ran = true;
  nn_mha_args ma = {0};
  if (a)
    ma = (nn_mha_args){.attn_mask = a->src_mask,
                       .key_padding_mask = a->src_key_padding_mask,
                       .causal = a->causal,
                       .training = a->training};
  ad_tensor *x = src;
  if (s->norm_first) {
    x = ad_add(ctx, x, sa_block(ctx, s, norm(ctx, s, x, s->g1, s->be1), &ma));
    x = ad_add(ctx, x, ff_block(ctx, s, norm(ctx, s, x, s->g2, s->be2), ma.training));
  } else {
    x = norm(ctx, s, ad_add(ctx, x, sa_block(ctx, s, x, &ma)), s->g1, s->be1);
    x = norm(ctx, s, ad_add(ctx, x, ff_block(ctx, s, x, ma.training)), s->g2, s->be2);
  }
  return x;
}

ad_tensor *nn_transformer_encoder_layer(nn_layer *l, ad_tensor *src,
                                        const nn_transformer_args *args) {
  if (!l) return NULL;
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96];
  nn_layer_who(l, who, sizeof who);
  xf_state *s = nn_layer_runs(l, &xf_ops) ? nn_layer_state(l) : NULL;
  /* a call that fails takes no dropout draws: the attention's nor ours */
  ad_rng before = s ? s->rng : (ad_rng){0}, before_mha = s ? *nn_mha_rng(s->mha) : (ad_rng){0};
  bool ran = false;
  ad_tensor *y = xf_call(l, src, args, who, &ran);
  if (y) {
    nn_layer_note_output(l, y);
    return y;
  }
  if (s) {
    s->rng = before;
    *nn_mha_rng(s->mha) = before_mha;
  }
  /* the checks' messages name the layer already, and a NULL src keeps the
   * message of the failure that made it (ad.h); an op's or the attention's
   * error is named after this layer */
  if (!ran) return NULL;
  char msg[512];
  size_t n = strlen(who);
  const char *m = ad_last_error(ctx);
  if (strncmp(m, who, n) != 0 || m[n] != ':') {
    snprintf(msg, sizeof msg, "%s", m);
    ad_set_error(ctx, ad_last_status(ctx), "%s: %s", who, msg);
  }
  return NULL;
}

static ad_tensor *xf_forward(nn_layer *l, ad_tensor *x, bool training) {
  return nn_transformer_encoder_layer(l, x, &(nn_transformer_args){.training = training});
}

static void xf_free(nn_layer *l) {
  xf_state *s = nn_layer_state(l);
  if (!s) return;
  nn_layer_destroy(s->mha);
  ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* PyTorch's constructor arguments after the first two, those that are not
 * its defaults (its repr lists the submodules instead, on many lines). */
static void xf_describe(const nn_layer *l, nn_text *t) {
  const xf_state *s = nn_layer_state(l);
  nn_text_add(t, "d_model=%lld, nhead=%lld", (long long)s->e, (long long)s->h);
  if (s->f != 2048) nn_text_add(t, ", dim_feedforward=%lld", (long long)s->f);
  if (s->dropout != 0.1) {
    nn_text_add(t, ", dropout=");
    nn_text_num(t, s->dropout);
  }
  if (s->act == NN_ACT_GELU) nn_text_add(t, ", activation=gelu");
  if (s->eps != 1e-5) {
    nn_text_add(t, ", layer_norm_eps=");
    nn_text_num(t, s->eps);
  }
  if (s->batch_first) nn_text_add(t, ", batch_first=True");
  if (s->norm_first) nn_text_add(t, ", norm_first=True");
  if (s->causal) nn_text_add(t, ", causal=True");
}

static const nn_layer_ops xf_ops = {xf_forward, xf_free, xf_describe};

/* A new parameter of shape filled by init (uniform within bound, or the
 * constant c when bound is 0), added to list under name (owned by it);
 * NULL on error. */
static ad_tensor *xf_param(nn_params *list, const char *name, ad_ctx *ctx, ad_dtype dtype, int ndim,
                           const int64_t *shape, double bound, double c, ad_rng *rng) {
  ad_tensor *t = ad_zeros(ctx, dtype, ndim, shape);
  if (!t) return NULL;
  nn_init init = bound > 0 ? nn_init_make(NN_INIT_UNIFORM, -bound, bound)
                           : nn_init_make(NN_INIT_CONSTANT, c, 0);
  if ((bound > 0 || c != 0) && nn_init_tensor(ctx, t, init, rng) != AD_OK) {
    ad_tensor_free(t);
    return NULL;
  }
  return nn_params_add(list, name, t, true) == AD_OK ? t : NULL;
}

/* The arguments' checks; AD_OK or the error recorded. */
static ad_status xf_check(ad_ctx *ctx, int64_t e, int64_t h, const nn_transformer_opts *o,
                          const ad_rng *rng) {
  if (e < 1 || h < 1 || e > (INT64_C(1) << 32) || e % h)
    return ad_set_error(ctx, AD_ERR_ARG,
                        XF_KIND ": d_model %lld and nhead %lld must be >= 1, d_model at most "
                                "2^32, and nhead must divide d_model",
                        (long long)e, (long long)h);
  if (o->dim_feedforward < 0 || o->dim_feedforward > (INT64_C(1) << 32))
    return ad_set_error(ctx, AD_ERR_ARG,
                        XF_KIND ": dim_feedforward %lld must be >= 1 (0: 2048) and at most 2^32",
                        (long long)o->dim_feedforward);
  if (!(o->dropout >= 0 && o->dropout < 1))
    return ad_set_error(ctx, AD_ERR_ARG, XF_KIND ": dropout %g is outside [0, 1)", o->dropout);
  if (o->no_dropout && o->dropout != 0)
    return ad_set_error(ctx, AD_ERR_ARG,
                        XF_KIND ": dropout %g given with no_dropout (which means dropout 0)",
                        o->dropout);
  if (!(o->layer_norm_eps >= 0 && isfinite(o->layer_norm_eps)))
    return ad_set_error(ctx, AD_ERR_ARG,
                        XF_KIND ": layer_norm_eps %g must be > 0 and finite (0: 1e-5)",
                        o->layer_norm_eps);
  if (o->activation != NN_ACT_NONE && o->activation != NN_ACT_RELU && o->activation != NN_ACT_GELU)
    return ad_set_error(ctx, AD_ERR_ARG, XF_KIND ": activation %s must be relu or gelu",
                        nn_act_name(o->activation));
  if (o->dtype != AD_F32 && o->dtype != AD_F64)
    return ad_set_error(ctx, AD_ERR_DTYPE, XF_KIND ": parameters must be float, got %s",
                        ad_dtype_name(o->dtype));
  if (!rng) return nn_null_arg(ctx, XF_KIND, "rng");
  return AD_OK;
}

nn_layer *nn_transformer_encoder_layer_new(ad_ctx *ctx, int64_t d_model, int64_t nhead, ad_rng *rng,
                                           const nn_transformer_opts *opts) {
  if (!ctx) return NULL;
  nn_transformer_opts o = {0};
  if (opts) o = *opts;
  if (xf_check(ctx, d_model, nhead, &o, rng) != AD_OK) return NULL;
  xf_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  ad_rng seeds;
  ad_rng_seed(&seeds, o.seed);
  uint64_t mha_seed = ad_rng_next(&seeds);
  *s = (xf_state){.e = d_model,
                  .h = nhead,
                  .f = o.dim_feedforward ? o.dim_feedforward : 2048,
                  .dropout = o.no_dropout ? 0.0
                             : o.dropout  ? o.dropout
                                          : 0.1,
                  .eps = o.layer_norm_eps ? o.layer_norm_eps : 1e-5,
                  .act = o.activation == NN_ACT_GELU ? NN_ACT_GELU : NN_ACT_RELU,
                  .batch_first = o.batch_first,
                  .norm_first = o.norm_first,
                  .causal = o.causal};
  ad_rng_seed(&s->rng, ad_rng_next(&seeds));
  nn_layer *l = nn_layer_new_ext(ctx, XF_KIND, &xf_ops, s);
  if (!l) {
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  nn_mha_opts mo = {.batch_first = o.batch_first,
                    .dropout = s->dropout,
                    .seed = mha_seed,
                    .causal = o.causal,
                    .dtype = o.dtype};
  s->mha = nn_multihead_attention_new(ctx, d_model, nhead, rng, &mo);
  /* named, so that its errors read "multihead_attention 'self_attn': ..." */
  bool ok = s->mha && nn_layer_adopt(s->mha, "self_attn") == AD_OK;
  nn_params *p = nn_layer_params(l), *mp = ok ? nn_layer_params(s->mha) : NULL;
  for (int i = 0; ok && i < nn_params_count(mp); i++) {
    char name[64];
    snprintf(name, sizeof name, "self_attn.%s", nn_params_name(mp, i));
    ok = nn_params_add(p, name, nn_params_tensor(mp, i), false) == AD_OK;
  }
  int64_t e = d_model, f = s->f, w1[2] = {f, e}, w2[2] = {e, f};
  double k1 = 1.0 / sqrt((double)e), k2 = 1.0 / sqrt((double)f); /* nn.Linear's bounds */
  ad_dtype dt = o.dtype;
  ok = ok && (s->w1 = xf_param(p, "linear1.weight", ctx, dt, 2, w1, k1, 0, rng)) &&
       (s->b1 = xf_param(p, "linear1.bias", ctx, dt, 1, &f, k1, 0, rng)) &&
       (s->w2 = xf_param(p, "linear2.weight", ctx, dt, 2, w2, k2, 0, rng)) &&
       (s->b2 = xf_param(p, "linear2.bias", ctx, dt, 1, &e, k2, 0, rng)) &&
       (s->g1 = xf_param(p, "norm1.weight", ctx, dt, 1, &e, 0, 1, rng)) &&
       (s->be1 = xf_param(p, "norm1.bias", ctx, dt, 1, &e, 0, 0, rng)) &&
       (s->g2 = xf_param(p, "norm2.weight", ctx, dt, 1, &e, 0, 1, rng)) &&
       (s->be2 = xf_param(p, "norm2.bias", ctx, dt, 1, &e, 0, 0, rng));
  if (!ok) {
    nn_layer_free(l);
    return NULL;
  }
  return l;
}
