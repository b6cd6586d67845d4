/* layers_transformer.c: PyTorch's nn.TransformerEncoderLayer and
 * nn.TransformerDecoderLayer (1.13), and the stacks nn.TransformerEncoder
 * and nn.TransformerDecoder.
 *
 *   encoder layer:
 *     sa(x) = dropout1(self_attn(x, x, x, masks))
 *     ff(x) = dropout2(linear2(dropout(act(linear1(x)))))
 *     post-norm:  x = norm1(x + sa(x));   y = norm2(x + ff(x))
 *     pre-norm:   x = x + sa(norm1(x));   y = x + ff(norm2(x))
 *   decoder layer (memory m):
 *     sa(x) = dropout1(self_attn(x, x, x, tgt masks))
 *     ca(x) = dropout2(multihead_attn(x, m, m, memory masks))
 *     ff(x) = dropout3(linear2(dropout(act(linear1(x)))))
 *     post-norm:  x = norm1(x + sa(x));  x = norm2(x + ca(x));  y = norm3(x + ff(x))
 *     pre-norm:   x = x + sa(norm1(x));  x = x + ca(norm2(x));  y = x + ff(norm3(x))
 *   stack:  x = layers.0(x), ..., layers.<n-1>(x);  y = norm(x) (if given)
 *
 * self_attn (and the decoder's multihead_attn) is a multi-head attention
 * layer of its own (layers_attn.c: its parameters, masks and the dropout on
 * the attention weights), held by this one under that name; this layer's
 * parameter list lists its four under "self_attn.*" (borrowed) and owns
 * those of the feed-forward block and the norms. A stack holds its layers
 * under "layers.<k>" and borrows their parameters the same way. The
 * arithmetic is the engine's ops, so the tape derives every gradient. */
#include "nn_internal.h"

#include <math.h>

#define XF_KIND  "transformer_encoder_layer"
#define XD_KIND  "transformer_decoder_layer"
#define XS_KIND  "transformer_encoder"
#define XDS_KIND "transformer_decoder"

static const nn_layer_ops xf_ops, xd_ops;

typedef struct xf_state {
  int64_t e, h, f;
  double dropout, eps;
  nn_act act;
  bool batch_first, norm_first, causal;
  ad_rng rng;           /* encoder: dropout1, dropout, dropout2;
                           decoder: dropout1, dropout2, dropout, dropout3 */
  nn_layer *mha, *xmha; /* self_attn; the decoder's multihead_attn (else NULL) */
  ad_tensor *w1, *b1, *w2, *b2, *g1, *be1, *g2, *be2, *g3, *be3; /* norm3: decoder */
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

/* ca(x), the decoder's attention on memory m */
static ad_tensor *ca_block(ad_ctx *ctx, xf_state *s, ad_tensor *x, ad_tensor *m,
                           const nn_mha_args *ma) {
  return x ? drop(ctx, s, nn_multihead_attention(s->xmha, x, m, m, ma, NULL), ma->training) : NULL;
}

/* ff(x) */
static ad_tensor *ff_block(ad_ctx *ctx, xf_state *s, ad_tensor *x, bool training) {
  ad_tensor *h = linear(ctx, x, s->w1, s->b1);
  h = h ? nn_activate(ctx, h, s->act, 0) : NULL;
  h = drop(ctx, s, h, training);
  return drop(ctx, s, linear(ctx, h, s->w2, s->b2), training);
}

/* Checks a sequence argument x named what (src, tgt, memory), of length
 * letter len, against the layer: AD_OK or the error recorded. */
static ad_status seq_check(ad_ctx *ctx, const xf_state *s, const char *who, const char *what,
                           char len, ad_tensor *x) {
  char b1[64], lay[48];
  if (!x) return nn_null_arg(ctx, who, what);
  ad_status st = nn_check_input(ctx, who, what, x);
  if (st != AD_OK) return st;
  int nd = x->ndim;
  /* an empty batch (N = 0) is fine, as in PyTorch: an empty output */
  if ((nd != 2 && nd != 3) || x->shape[nd - 1] != s->e ||
      x->shape[nd == 3 && s->batch_first ? 1 : 0] < 1) {
    if (s->batch_first)
      snprintf(lay, sizeof lay, "[N, %c, E] (batch_first) or [%c, E]", len, len);
    else
      snprintf(lay, sizeof lay, "[%c, N, E] or [%c, E]", len, len);
    return ad_set_error(ctx, AD_ERR_SHAPE, "%s: %s %s must be %s, %c >= 1, E = d_model %lld", who,
                        what, ad_shape_str(x, b1, sizeof b1), lay, len, (long long)s->e);
  }
  if (x->dtype != s->w1->dtype)
    return ad_set_error(ctx, AD_ERR_DTYPE, "%s: %s is %s; the layer is %s", who, what,
                        ad_dtype_name(x->dtype), ad_dtype_name(s->w1->dtype));
  return AD_OK;
}

/* The calls; *ran is set once the checks passed, so that only the errors
 * of what runs after them are renamed after the layer (name_error). @{ */
static ad_tensor *xf_call(nn_layer *l, ad_tensor *src, const nn_transformer_args *a,
                          const char *who, bool *ran) {
  ad_ctx *ctx = nn_layer_ctx(l);
  if (!nn_layer_runs(l, &xf_ops)) {
    ad_set_error(ctx, AD_ERR_ARG, XF_KIND ": layer %s is not a " XF_KIND, who);
    return NULL;
  }
  xf_state *s = nn_layer_state(l);
  if (seq_check(ctx, s, who, "src", 'S', src) != AD_OK) return NULL;
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

static ad_tensor *xd_call(nn_layer *l, ad_tensor *tgt, ad_tensor *memory,
                          const nn_transformer_decoder_args *a, const char *who, bool *ran) {
  ad_ctx *ctx = nn_layer_ctx(l);
  if (!nn_layer_runs(l, &xd_ops)) {
    ad_set_error(ctx, AD_ERR_ARG, XD_KIND ": layer %s is not a " XD_KIND, who);
    return NULL;
  }
  xf_state *s = nn_layer_state(l);
  if (seq_check(ctx, s, who, "tgt", 'T', tgt) != AD_OK ||
      seq_check(ctx, s, who, "memory", 'S', memory) != AD_OK)
    return NULL;
  *ran = true;
  nn_mha_args sa = {0}, ca = {0};
  if (a) {
    sa = (nn_mha_args){.attn_mask = a->tgt_mask,
                       .key_padding_mask = a->tgt_key_padding_mask,
                       .causal = a->causal,
                       .training = a->training};
    ca = (nn_mha_args){.attn_mask = a->memory_mask,
                       .key_padding_mask = a->memory_key_padding_mask,
                       .training = a->training};
  }
  bool tr = sa.training;
  ad_tensor *x = tgt;
  if (s->norm_first) {
    x = ad_add(ctx, x, sa_block(ctx, s, norm(ctx, s, x, s->g1, s->be1), &sa));
    x = ad_add(ctx, x, ca_block(ctx, s, norm(ctx, s, x, s->g2, s->be2), memory, &ca));
    x = ad_add(ctx, x, ff_block(ctx, s, norm(ctx, s, x, s->g3, s->be3), tr));
  } else {
    x = norm(ctx, s, ad_add(ctx, x, sa_block(ctx, s, x, &sa)), s->g1, s->be1);
    x = norm(ctx, s, ad_add(ctx, x, ca_block(ctx, s, x, memory, &ca)), s->g2, s->be2);
    x = norm(ctx, s, ad_add(ctx, x, ff_block(ctx, s, x, tr)), s->g3, s->be3);
  }
  return x;
}
/** @} */

/* The layer's dropout generators (its own and its attentions'), saved
 * into r[3] or put back from it, so that a call that fails takes no
 * draws. l may be any layer: only ours have generators. */
static void xf_rngs(nn_layer *l, ad_rng *r, bool restore) {
  xf_state *s = nn_layer_runs(l, &xf_ops) || nn_layer_runs(l, &xd_ops) ? nn_layer_state(l) : NULL;
  if (!s) return;
  ad_rng *g[3] = {&s->rng, nn_mha_rng(s->mha), s->xmha ? nn_mha_rng(s->xmha) : NULL};
  for (int i = 0; i < 3; i++)
    if (g[i]) {
      if (restore)
        *g[i] = r[i];
      else
        r[i] = *g[i];
    }
}

/* After a failed call of layer l (named who): an op's or an inner layer's
 * error, named after l. */
static void name_error(nn_layer *l, const char *who) {
  ad_ctx *ctx = nn_layer_ctx(l);
  char msg[512];
  size_t n = strlen(who);
  const char *m = ad_last_error(ctx);
  if (strncmp(m, who, n) != 0 || m[n] != ':') {
    snprintf(msg, sizeof msg, "%s", m);
    ad_set_error(ctx, ad_last_status(ctx), "%s: %s", who, msg);
  }
}

ad_tensor *nn_transformer_encoder_layer(nn_layer *l, ad_tensor *src,
                                        const nn_transformer_args *args) {
  if (!l) return NULL;
  char who[96];
  nn_layer_who(l, who, sizeof who);
  /* a call that fails takes no dropout draws: the attention's nor ours */
  ad_rng before[3];
  xf_rngs(l, before, false);
  bool ran = false;
  ad_tensor *y = xf_call(l, src, args, who, &ran);
  if (y) {
    nn_layer_note_output(l, y);
    return y;
  }
  xf_rngs(l, before, true);
  /* the checks' messages name the layer already, and a NULL src keeps the
   * message of the failure that made it (ad.h) */
  if (ran) name_error(l, who);
  return NULL;
}

ad_tensor *nn_transformer_decoder_layer(nn_layer *l, ad_tensor *tgt, ad_tensor *memory,
                                        const nn_transformer_decoder_args *args) {
  if (!l) return NULL;
  char who[96];
  nn_layer_who(l, who, sizeof who);
  ad_rng before[3];
  xf_rngs(l, before, false);
  bool ran = false;
  ad_tensor *y = xd_call(l, tgt, memory, args, who, &ran);
  if (y) {
    nn_layer_note_output(l, y);
    return y;
  }
  xf_rngs(l, before, true);
  if (ran) name_error(l, who);
  return NULL;
}

static ad_tensor *xf_forward(nn_layer *l, ad_tensor *x, bool training) {
  return nn_transformer_encoder_layer(l, x, &(nn_transformer_args){.training = training});
}

/* As a layer of a Sequential the decoder has no memory: refused, rather
 * than attending to x itself, which is not what a decoder computes. */
static ad_tensor *xd_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)x, (void)training;
  char who[96];
  ad_set_error(nn_layer_ctx(l), AD_ERR_ARG,
               "%s: a decoder needs memory: call %s(l, tgt, memory, args), not nn_layer_forward "
               "or a Sequential",
               nn_layer_who(l, who, sizeof who),
               nn_layer_runs(l, &xd_ops) ? "nn_transformer_decoder_layer"
                                         : "nn_transformer_decoder");
  return NULL;
}

static void xf_free(nn_layer *l) {
  xf_state *s = nn_layer_state(l);
  if (!s) return;
  nn_layer_destroy(s->mha);
  nn_layer_destroy(s->xmha);
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
static const nn_layer_ops xd_ops = {xd_forward, xf_free, xf_describe};

/* The constructor a layer is made for (fn, its public name) and the path
 * of the layer in it (pfx: "encoder.layers.0.", or "" for the layer
 * itself): what the messages of a failure name. */
typedef struct xf_who {
  const char *fn;
  char pfx[64];
} xf_who;

/* w's path with sub (a submodule's name and a dot) appended. */
static xf_who xf_sub(const xf_who *w, const char *sub) {
  xf_who r = {w->fn, ""};
  /* the longest path, "decoder.layers.65535.multihead_attn.", fits */
  if (snprintf(r.pfx, sizeof r.pfx, "%s%s", w->pfx, sub) >= (int)sizeof r.pfx) r.pfx[0] = '\0';
  return r;
}

/* nn_param_new filled uniform within bound, or with the constant c when
 * bound is 0; named "<fn>: <pfx><name> [shape]" on failure. */
static ad_tensor *xf_param(nn_params *list, const xf_who *w, const char *name, ad_dtype dtype,
                           int ndim, const int64_t *shape, double bound, double c, ad_rng *rng) {
  nn_init init = bound > 0 ? nn_init_make(NN_INIT_UNIFORM, -bound, bound)
                 : c != 0  ? nn_init_make(NN_INIT_CONSTANT, c, 0)
                           : nn_init_make(NN_INIT_ZEROS, 0, 0);
  return nn_param_new_at(list, w->fn, w->pfx, name, dtype, ndim, shape, init, rng);
}

/* The arguments' checks; AD_OK or the error recorded naming kind. */
static ad_status xf_check(ad_ctx *ctx, const char *kind, int64_t e, int64_t h,
                          const nn_transformer_opts *o, const ad_rng *rng) {
  if (e < 1 || h < 1 || e > (INT64_C(1) << 32) || e % h)
    return ad_set_error(ctx, AD_ERR_ARG,
                        "%s: d_model %lld and nhead %lld must be >= 1, d_model at most "
                        "2^32, and nhead must divide d_model",
                        kind, (long long)e, (long long)h);
  if (o->dim_feedforward < 0 || o->dim_feedforward > (INT64_C(1) << 32))
    return ad_set_error(ctx, AD_ERR_ARG,
                        "%s: dim_feedforward %lld must be >= 1 (0: 2048) and at most 2^32", kind,
                        (long long)o->dim_feedforward);
  if (!(o->dropout >= 0 && o->dropout < 1))
    return ad_set_error(ctx, AD_ERR_ARG, "%s: dropout %g is outside [0, 1)", kind, o->dropout);
  if (o->no_dropout && o->dropout != 0)
    return ad_set_error(ctx, AD_ERR_ARG,
                        "%s: dropout %g given with no_dropout (which means dropout 0)", kind,
                        o->dropout);
  if (!(o->layer_norm_eps >= 0 && isfinite(o->layer_norm_eps)))
    return ad_set_error(ctx, AD_ERR_ARG, "%s: layer_norm_eps %g must be > 0 and finite (0: 1e-5)",
                        kind, o->layer_norm_eps);
  if (o->activation != NN_ACT_NONE && o->activation != NN_ACT_RELU && o->activation != NN_ACT_GELU)
    return ad_set_error(ctx, AD_ERR_ARG, "%s: activation %s must be relu or gelu", kind,
                        nn_act_name(o->activation));
  if (o->dtype != AD_F32 && o->dtype != AD_F64)
    return ad_set_error(ctx, AD_ERR_DTYPE, "%s: parameters must be float, got %s", kind,
                        ad_dtype_name(o->dtype));
  if (!rng) return nn_null_arg(ctx, kind, "rng");
  return AD_OK;
}

/* A new attention of the layer, named name, its parameters listed in p
 * under "<name>.*"; NULL on error (a tensor named as w's path, name and
 * its own). */
static nn_layer *xf_attention(ad_ctx *ctx, nn_params *p, const xf_who *w, const char *name,
                              int64_t e, int64_t h, ad_rng *rng, const nn_mha_opts *mo) {
  char sub[48];
  snprintf(sub, sizeof sub, "%s.", name);
  xf_who aw = xf_sub(w, sub);
  nn_mha_opts_ext x = {.base = *mo};
  nn_layer *a = nn_mha_new_at(ctx, w->fn, aw.pfx, e, h, rng, &x);
  /* named, so that its errors read "multihead_attention 'self_attn': ..." */
  bool ok = a && nn_layer_adopt(a, name) == AD_OK;
  nn_params *mp = ok ? nn_layer_params(a) : NULL;
  for (int i = 0; ok && i < nn_params_count(mp); i++) {
    char full[64];
    snprintf(full, sizeof full, "%s.%s", name, nn_params_name(mp, i));
    ok = nn_params_add(p, full, nn_params_tensor(mp, i), false) == AD_OK;
  }
  if (ok) return a;
  nn_layer_destroy(a);
  return NULL;
}

/* The encoder layer (dec false) or the decoder layer, made for w. */
static nn_layer *xf_new(ad_ctx *ctx, const xf_who *w, bool dec, int64_t d_model, int64_t nhead,
                        ad_rng *rng, const nn_transformer_opts *opts) {
  if (!ctx) return NULL;
  const char *kind = dec ? XD_KIND : XF_KIND;
  nn_transformer_opts o = {0};
  if (opts) o = *opts;
  if (xf_check(ctx, kind, d_model, nhead, &o, rng) != AD_OK) return NULL;
  xf_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return nn_error_prefix(ctx, "%s", w->fn), NULL;
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
  nn_layer *l = nn_layer_new_ext(ctx, kind, dec ? &xd_ops : &xf_ops, s);
  if (!l) {
    nn_error_prefix(ctx, "%s", w->fn);
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  nn_mha_opts mo = {.batch_first = o.batch_first,
                    .dropout = s->dropout,
                    .seed = mha_seed,
                    .causal = o.causal,
                    .dtype = o.dtype};
  nn_params *p = nn_layer_params(l);
  s->mha = xf_attention(ctx, p, w, "self_attn", d_model, nhead, rng, &mo);
  bool ok = s->mha;
  if (ok && dec) { /* the cross-attention: never causal; its seed the third draw */
    mo.causal = false, mo.seed = ad_rng_next(&seeds);
    ok = (s->xmha = xf_attention(ctx, p, w, "multihead_attn", d_model, nhead, rng, &mo));
  }
  int64_t e = d_model, f = s->f, w1[2] = {f, e}, w2[2] = {e, f};
  double k1 = 1.0 / sqrt((double)e), k2 = 1.0 / sqrt((double)f); /* nn.Linear's bounds */
  ad_dtype dt = o.dtype;
  ok = ok && (s->w1 = xf_param(p, w, "linear1.weight", dt, 2, w1, k1, 0, rng)) &&
       (s->b1 = xf_param(p, w, "linear1.bias", dt, 1, &f, k1, 0, rng)) &&
       (s->w2 = xf_param(p, w, "linear2.weight", dt, 2, w2, k2, 0, rng)) &&
       (s->b2 = xf_param(p, w, "linear2.bias", dt, 1, &e, k2, 0, rng)) &&
       (s->g1 = xf_param(p, w, "norm1.weight", dt, 1, &e, 0, 1, rng)) &&
       (s->be1 = xf_param(p, w, "norm1.bias", dt, 1, &e, 0, 0, rng)) &&
       (s->g2 = xf_param(p, w, "norm2.weight", dt, 1, &e, 0, 1, rng)) &&
       (s->be2 = xf_param(p, w, "norm2.bias", dt, 1, &e, 0, 0, rng));
  ok = ok && (!dec || ((s->g3 = xf_param(p, w, "norm3.weight", dt, 1, &e, 0, 1, rng)) &&
                       (s->be3 = xf_param(p, w, "norm3.bias", dt, 1, &e, 0, 0, rng))));
  if (!ok) {
    nn_error_prefix(ctx, "%s", w->fn); /* e.g. a name's copy: not a tensor */
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

nn_layer *nn_transformer_encoder_layer_new(ad_ctx *ctx, int64_t d_model, int64_t nhead, ad_rng *rng,
                                           const nn_transformer_opts *opts) {
  xf_who w = {"nn_transformer_encoder_layer_new", ""};
  return xf_new(ctx, &w, false, d_model, nhead, rng, opts);
}

nn_layer *nn_transformer_decoder_layer_new(ad_ctx *ctx, int64_t d_model, int64_t nhead, ad_rng *rng,
                                           const nn_transformer_opts *opts) {
  xf_who w = {"nn_transformer_decoder_layer_new", ""};
  return xf_new(ctx, &w, true, d_model, nhead, rng, opts);
}

/* ----------------------------------------------------------------- stacks */

static const nn_layer_ops xs_ops, xds_ops;

typedef struct xs_state {
  bool dec;
  int n;
  int64_t e;
  double eps;
  nn_layer **layers; /* "layers.<k>" */
  ad_rng *saved;     /* 3 per layer: the generators of a call, for its rollback */
  ad_tensor *g, *b;  /* the final norm; NULL without */
} xs_state;

/* A copy of layer t (copy.deepcopy): the same settings and parameter
 * values, its dropout generators seeded from seed. NULL on error. */
static nn_layer *xf_clone(nn_layer *t, const xf_who *w, bool dec, uint64_t seed) {
  const xf_state *s = nn_layer_state(t);
  nn_transformer_opts o = {.dim_feedforward = s->f,
                           .dropout = s->dropout,
                           .no_dropout = s->dropout == 0,
                           .activation = s->act,
                           .layer_norm_eps = s->eps,
                           .batch_first = s->batch_first,
                           .norm_first = s->norm_first,
                           .causal = s->causal,
                           .seed = seed,
                           .dtype = s->w1->dtype};
  ad_rng rng; /* its draws are overwritten by the copy */
  ad_rng_seed(&rng, seed);
  nn_layer *c = xf_new(nn_layer_ctx(t), w, dec, s->e, s->h, &rng, &o);
  nn_params *from = nn_layer_params(t), *to = c ? nn_layer_params(c) : NULL;
  for (int i = 0; c && i < nn_params_count(from); i++)
    if (ad_tensor_copy_data(nn_params_tensor(to, i), nn_params_tensor(from, i)) != AD_OK) {
      nn_layer_free(c);
      c = NULL;
    }
  return c;
}

static void xs_state_free(ad_ctx *ctx, xs_state *s) {
  for (int k = 0; s->layers && k < s->n; k++) nn_layer_destroy(s->layers[k]);
  if (s->layers) ad_free(ctx, s->layers, (size_t)s->n * sizeof *s->layers);
  if (s->saved) ad_free(ctx, s->saved, (size_t)s->n * 3 * sizeof *s->saved);
  ad_free(ctx, s, sizeof *s);
}

static void xs_free(nn_layer *l) {
  xs_state *s = nn_layer_state(l);
  if (s) xs_state_free(nn_layer_ctx(l), s);
}

/* The layer, num_layers, and the final norm, as PyTorch's arguments. */
static void xs_describe(const nn_layer *l, nn_text *t) {
  const xs_state *s = nn_layer_state(l);
  nn_text_add(t, "%s(", nn_layer_kind(s->layers[0]));
  xf_describe(s->layers[0], t);
  nn_text_add(t, "), num_layers=%d", s->n);
  if (s->g) {
    nn_text_add(t, ", norm=LayerNorm((%lld,), eps=", (long long)s->e);
    nn_text_num(t, s->eps);
    nn_text_add(t, ", elementwise_affine=True)");
  }
}

static ad_tensor *xs_call(nn_layer *l, bool dec, ad_tensor *x, ad_tensor *memory,
                          const nn_transformer_args *ea, const nn_transformer_decoder_args *da) {
  if (!l) return NULL;
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96];
  nn_layer_who(l, who, sizeof who);
  const char *kind = dec ? XDS_KIND : XS_KIND;
  if (!nn_layer_runs(l, dec ? &xds_ops : &xs_ops)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: layer %s is not a %s", kind, who, kind);
    return NULL;
  }
  if (!x || (dec && !memory)) { /* kept out of name_error: a NULL input keeps its message */
    nn_null_arg(ctx, who, !x ? (dec ? "tgt" : "src") : "memory");
    return NULL;
  }
  xs_state *s = nn_layer_state(l);
  for (int k = 0; k < s->n; k++) xf_rngs(s->layers[k], s->saved + 3 * k, false);
  ad_tensor *y = x;
  for (int k = 0; y && k < s->n; k++)
    y = dec ? nn_transformer_decoder_layer(s->layers[k], y, memory, da)
            : nn_transformer_encoder_layer(s->layers[k], y, ea);
  if (y && s->g) y = ad_layer_norm(ctx, y, 1, &s->e, s->g, s->b, s->eps);
  if (y) {
    nn_layer_note_output(l, y);
    return y;
  }
  /* a call that fails takes no draws, also of the layers that ran */
  for (int k = 0; k < s->n; k++) xf_rngs(s->layers[k], s->saved + 3 * k, true);
  name_error(l, who);
  return NULL;
}

ad_tensor *nn_transformer_encoder(nn_layer *l, ad_tensor *src, const nn_transformer_args *args) {
  return xs_call(l, false, src, NULL, args, NULL);
}

ad_tensor *nn_transformer_decoder(nn_layer *l, ad_tensor *tgt, ad_tensor *memory,
                                  const nn_transformer_decoder_args *args) {
  return xs_call(l, true, tgt, memory, NULL, args);
}

static ad_tensor *xs_forward(nn_layer *l, ad_tensor *x, bool training) {
  return nn_transformer_encoder(l, x, &(nn_transformer_args){.training = training});
}

static const nn_layer_ops xs_ops = {xs_forward, xs_free, xs_describe};
static const nn_layer_ops xds_ops = {xd_forward, xs_free, xs_describe};

/* The encoder stack (dec false) or the decoder stack of num_layers copies
 * of layer, which it takes (freed on failure unless another owns it), made
 * for w (its failures name w's constructor and the path). */
static nn_layer *xs_new(const xf_who *w, nn_layer *layer, bool dec, int64_t num_layers,
                        const nn_transformer_stack_opts *opts) {
  if (!layer) return NULL; /* its constructor's error stays recorded */
  ad_ctx *ctx = nn_layer_ctx(layer);
  const char *kind = dec ? XDS_KIND : XS_KIND, *lkind = dec ? XD_KIND : XF_KIND;
  char who[96];
  nn_layer_who(layer, who, sizeof who);
  if (nn_layer_adopted(layer)) { /* not ours: do not free it */
    ad_set_error(ctx, AD_ERR_ARG, "%s: %s already belongs to a model", kind, who);
    return NULL;
  }
  nn_transformer_stack_opts o = {0};
  if (opts) o = *opts;
  ad_status st = AD_OK;
  if (!nn_layer_runs(layer, dec ? &xd_ops : &xf_ops))
    st = ad_set_error(ctx, AD_ERR_ARG, "%s: layer %s is not a %s", kind, who, lkind);
  else if (num_layers < 1 || num_layers > 65536)
    st = ad_set_error(ctx, AD_ERR_ARG, "%s: num_layers %lld must be in [1, 65536]", kind,
                      (long long)num_layers);
  else if (!(o.norm_eps >= 0 && isfinite(o.norm_eps)))
    st = ad_set_error(ctx, AD_ERR_ARG, "%s: norm_eps %g must be > 0 and finite (0: the layer's)",
                      kind, o.norm_eps);
  else if (o.norm_eps != 0 && !o.norm)
    st = ad_set_error(ctx, AD_ERR_ARG, "%s: norm_eps %g given without norm", kind, o.norm_eps);
  xs_state *s = st == AD_OK ? ad_malloc(ctx, sizeof *s) : NULL;
  if (!s) {
    if (st == AD_OK) nn_error_prefix(ctx, "%s", w->fn);
    nn_layer_free(layer);
    return NULL;
  }
  const xf_state *t = nn_layer_state(layer);
  int n = (int)num_layers;
  *s = (xs_state){.dec = dec, .n = n, .e = t->e, .eps = o.norm_eps ? o.norm_eps : t->eps};
  s->layers = ad_malloc(ctx, (size_t)n * sizeof *s->layers);
  s->saved = s->layers ? ad_malloc(ctx, (size_t)n * 3 * sizeof *s->saved) : NULL;
  if (s->layers) { /* from here on the state owns layer */
    s->layers[0] = layer;
    for (int k = 1; k < n; k++) s->layers[k] = NULL;
  }
  nn_layer *l = s->saved ? nn_layer_new_ext(ctx, kind, dec ? &xds_ops : &xs_ops, s) : NULL;
  if (!l) {
    nn_error_prefix(ctx, "%s", w->fn);
    if (!s->layers) nn_layer_free(layer);
    xs_state_free(ctx, s);
    return NULL;
  }
  /* PyTorch deep-copies layer num_layers times: every layer starts with
   * its values; each copy's dropout draws its own masks */
  ad_rng seeds = t->rng;
  bool ok = true;
  for (int k = 1; ok && k < n; k++) {
    char sub[32];
    snprintf(sub, sizeof sub, "layers.%d.", k);
    xf_who lw = xf_sub(w, sub);
    ok = (s->layers[k] = xf_clone(layer, &lw, dec, ad_rng_next(&seeds)));
  }
  nn_params *p = nn_layer_params(l);
  for (int k = 0; ok && k < n; k++) {
    char name[32];
    snprintf(name, sizeof name, "layers.%d", k);
    ok = nn_layer_adopt(s->layers[k], name) == AD_OK;
    nn_params *lp = nn_layer_params(s->layers[k]);
    for (int i = 0; ok && i < nn_params_count(lp); i++) {
      char full[96];
      snprintf(full, sizeof full, "layers.%d.%s", k, nn_params_name(lp, i));
      ok = nn_params_add(p, full, nn_params_tensor(lp, i), false) == AD_OK;
    }
  }
  if (ok && o.norm) {
    ad_rng unused;
    ad_rng_seed(&unused, 0);
    ad_dtype dt = t->w1->dtype;
    ok = (s->g = xf_param(p, w, "norm.weight", dt, 1, &s->e, 0, 1, &unused)) &&
         (s->b = xf_param(p, w, "norm.bias", dt, 1, &s->e, 0, 0, &unused));
  }
  if (!ok) {
    nn_error_prefix(ctx, "%s", w->fn);
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

nn_layer *nn_transformer_encoder_new(nn_layer *encoder_layer, int64_t num_layers,
                                     const nn_transformer_stack_opts *opts) {
  xf_who w = {"nn_transformer_encoder_new", ""};
  return xs_new(&w, encoder_layer, false, num_layers, opts);
}

nn_layer *nn_transformer_decoder_new(nn_layer *decoder_layer, int64_t num_layers,
                                     const nn_transformer_stack_opts *opts) {
  xf_who w = {"nn_transformer_decoder_new", ""};
  return xs_new(&w, decoder_layer, true, num_layers, opts);
}

/* ------------------------------------------------------------ transformer */

/* PyTorch's nn.Transformer: an encoder stack and a decoder stack, each
 * with a final norm:
 *   memory = encoder(src);  y = decoder(tgt, memory)
 * held under "encoder" and "decoder", their parameters borrowed under
 * those prefixes. */

#define XT_KIND "transformer"

static const nn_layer_ops xt_ops;

typedef struct xt_state {
  int64_t e, h;
  bool batch_first;
  nn_layer *enc, *dec; /* "encoder", "decoder" */
  int nsaved;          /* 3 per layer of both stacks */
  ad_rng *saved;       /* the generators of a call, for its rollback */
} xt_state;

static void xt_state_free(ad_ctx *ctx, xt_state *s) {
  nn_layer_destroy(s->enc);
  nn_layer_destroy(s->dec);
  if (s->saved) ad_free(ctx, s->saved, (size_t)s->nsaved * sizeof *s->saved);
  ad_free(ctx, s, sizeof *s);
}

static void xt_free(nn_layer *l) {
  xt_state *s = nn_layer_state(l);
  if (s) xt_state_free(nn_layer_ctx(l), s);
}

/* The dropout generators of every layer of both stacks, saved into
 * s->saved or put back from it. */
static void xt_rngs(xt_state *s, bool restore) {
  ad_rng *r = s->saved;
  for (int j = 0; j < 2; j++) {
    const xs_state *st = nn_layer_state(j ? s->dec : s->enc);
    for (int k = 0; k < st->n; k++, r += 3) xf_rngs(st->layers[k], r, restore);
  }
}

/* d_model, nhead, then PyTorch's constructor arguments that are not its
 * defaults. */
static void xt_describe(const nn_layer *l, nn_text *t) {
  const xt_state *s = nn_layer_state(l);
  const xs_state *es = nn_layer_state(s->enc), *ds = nn_layer_state(s->dec);
  const xf_state *x = nn_layer_state(es->layers[0]);
  nn_text_add(t, "d_model=%lld, nhead=%lld", (long long)s->e, (long long)s->h);
  if (es->n != 6) nn_text_add(t, ", num_encoder_layers=%d", es->n);
  if (ds->n != 6) nn_text_add(t, ", num_decoder_layers=%d", ds->n);
  if (x->f != 2048) nn_text_add(t, ", dim_feedforward=%lld", (long long)x->f);
  if (x->dropout != 0.1) {
    nn_text_add(t, ", dropout=");
    nn_text_num(t, x->dropout);
  }
  if (x->act == NN_ACT_GELU) nn_text_add(t, ", activation=gelu");
  if (x->eps != 1e-5) {
    nn_text_add(t, ", layer_norm_eps=");
    nn_text_num(t, x->eps);
  }
  if (s->batch_first) nn_text_add(t, ", batch_first=True");
  if (x->norm_first) nn_text_add(t, ", norm_first=True");
}

/* As a layer of a Sequential it has one input: refused. */
static ad_tensor *xt_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)x, (void)training;
  char who[96];
  ad_set_error(nn_layer_ctx(l), AD_ERR_ARG,
               "%s: a transformer needs src and tgt: call nn_transformer_forward(l, src, tgt, "
               "...), not nn_layer_forward or a Sequential",
               nn_layer_who(l, who, sizeof who));
  return NULL;
}

static const nn_layer_ops xt_ops = {xt_forward, xt_free, xt_describe};

/* PyTorch's checks of src and tgt (Transformer.forward), and ours of
 * their ranks; AD_OK or the error recorded naming who. */
static ad_status xt_check(ad_ctx *ctx, const xt_state *s, const char *who, ad_tensor *src,
                          ad_tensor *tgt) {
  if (!src) return nn_null_arg(ctx, who, "src");
  if (!tgt) return nn_null_arg(ctx, who, "tgt");
  ad_status st = nn_check_input(ctx, who, "src", src);
  if (st == AD_OK) st = nn_check_input(ctx, who, "tgt", tgt);
  if (st != AD_OK) return st;
  char b1[64], b2[64];
  ad_shape_str(src, b1, sizeof b1);
  ad_shape_str(tgt, b2, sizeof b2);
  int nd = src->ndim;
  if ((nd != 2 && nd != 3) || tgt->ndim != nd)
    return ad_set_error(ctx, AD_ERR_SHAPE,
                        "%s: src %s and tgt %s must be both batched (3-D) or both unbatched (2-D)",
                        who, b1, b2);
  int bd = s->batch_first ? 0 : 1;
  if (nd == 3 && src->shape[bd] != tgt->shape[bd])
    return ad_set_error(ctx, AD_ERR_SHAPE,
                        "%s: the batch number of src %s and tgt %s must be equal (dim %d%s)", who,
                        b1, b2, bd, s->batch_first ? ", batch_first" : "");
  if (src->shape[nd - 1] != s->e || tgt->shape[nd - 1] != s->e)
    return ad_set_error(ctx, AD_ERR_SHAPE,
                        "%s: the feature number of src %s and tgt %s must be equal to d_model %lld",
                        who, b1, b2, (long long)s->e);
  return AD_OK;
}

ad_tensor *nn_transformer_forward(nn_layer *l, ad_tensor *src, ad_tensor *tgt, ad_tensor *src_mask,
                                  ad_tensor *tgt_mask, ad_tensor *memory_mask,
                                  ad_tensor *src_key_padding_mask, ad_tensor *tgt_key_padding_mask,
                                  ad_tensor *memory_key_padding_mask, bool training) {
  if (!l) return NULL;
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96];
  nn_layer_who(l, who, sizeof who);
  if (!nn_layer_runs(l, &xt_ops)) {
    ad_set_error(ctx, AD_ERR_ARG, XT_KIND ": layer %s is not a " XT_KIND, who);
    return NULL;
  }
  xt_state *s = nn_layer_state(l);
  if (xt_check(ctx, s, who, src, tgt) != AD_OK) return NULL;
  xt_rngs(s, false);
  ad_tensor *memory =
      nn_transformer_encoder(s->enc, src,
                             &(nn_transformer_args){.src_mask = src_mask,
                                                    .src_key_padding_mask = src_key_padding_mask,
                                                    .training = training});
  ad_tensor *y =
      memory ? nn_transformer_decoder(s->dec, tgt, memory,
                                      &(nn_transformer_decoder_args){
                                          .tgt_mask = tgt_mask,
                                          .memory_mask = memory_mask,
                                          .tgt_key_padding_mask = tgt_key_padding_mask,
                                          .memory_key_padding_mask = memory_key_padding_mask,
                                          .training = training})
             : NULL;
  if (y) {
    nn_layer_note_output(l, y);
    return y;
  }
  /* no draws taken, the encoder's included when the decoder failed */
  xt_rngs(s, true);
  name_error(l, who);
  return NULL;
}

/* The stack of the layer's kind (dec) of n layers with a final norm,
 * adopted by t as name and its parameters listed as "<name>.*"; NULL
 * with the error recorded. */
static nn_layer *xt_stack(nn_layer *t, bool dec, const char *name, int64_t e, int64_t h, int64_t n,
                          ad_rng *rng, const nn_transformer_opts *lo) {
  ad_ctx *ctx = nn_layer_ctx(t);
  nn_transformer_stack_opts so = {.norm = true};
  char sub[32];
  snprintf(sub, sizeof sub, "%s.", name);
  xf_who root = {"nn_transformer_new", ""}, sw = xf_sub(&root, sub), lw = xf_sub(&sw, "layers.0.");
  nn_layer *x = xs_new(&sw, xf_new(ctx, &lw, dec, e, h, rng, lo), dec, n, &so);
  bool ok = x && nn_layer_adopt(x, name) == AD_OK;
  nn_params *xp = ok ? nn_layer_params(x) : NULL, *p = nn_layer_params(t);
  for (int i = 0; ok && i < nn_params_count(xp); i++) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", name, nn_params_name(xp, i));
    ok = nn_params_add(p, full, nn_params_tensor(xp, i), false) == AD_OK;
  }
  if (ok) return x;
  nn_layer_destroy(x);
  return NULL;
}

nn_layer *nn_transformer_new(ad_ctx *ctx, ad_rng *rng, const nn_transformer_model_opts *opts) {
  if (!ctx) return NULL;
  nn_transformer_model_opts o = {0};
  if (opts) o = *opts;
  int64_t e = o.d_model ? o.d_model : 512, h = o.nhead ? o.nhead : 8;
  int64_t ne = o.num_encoder_layers ? o.num_encoder_layers : 6,
          nd = o.num_decoder_layers ? o.num_decoder_layers : 6;
  ad_rng seeds;
  ad_rng_seed(&seeds, o.seed);
  nn_transformer_opts lo = {.dim_feedforward = o.dim_feedforward,
                            .dropout = o.dropout,
                            .no_dropout = o.no_dropout,
                            .activation = o.activation,
                            .layer_norm_eps = o.layer_norm_eps,
                            .batch_first = o.batch_first,
                            .norm_first = o.norm_first,
                            .dtype = o.dtype};
  if (xf_check(ctx, XT_KIND, e, h, &lo, rng) != AD_OK) return NULL;
  if (ne < 1 || ne > 65536 || nd < 1 || nd > 65536) {
    ad_set_error(ctx, AD_ERR_ARG,
                 XT_KIND ": num_encoder_layers %lld and num_decoder_layers %lld must be in "
                         "[1, 65536] (0: 6)",
                 (long long)ne, (long long)nd);
    return NULL;
  }
  xt_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  *s = (xt_state){.e = e, .h = h, .batch_first = o.batch_first, .nsaved = (int)(3 * (ne + nd))};
  s->saved = ad_malloc(ctx, (size_t)s->nsaved * sizeof *s->saved);
  nn_layer *l = s->saved ? nn_layer_new_ext(ctx, XT_KIND, &xt_ops, s) : NULL;
  if (!l) {
    xt_state_free(ctx, s);
    return NULL;
  }
  /* as PyTorch: each submodule's own initialisation, in order, then
   * Xavier uniform on every parameter of two or more dims */
  lo.seed = ad_rng_next(&seeds);
  bool ok = (s->enc = xt_stack(l, false, "encoder", e, h, ne, rng, &lo));
  lo.seed = ad_rng_next(&seeds);
  ok = ok && (s->dec = xt_stack(l, true, "decoder", e, h, nd, rng, &lo));
  nn_params *p = nn_layer_params(l);
  for (int i = 0; ok && i < nn_params_count(p); i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    if (t->ndim > 1 &&
        !(ok = nn_init_tensor(ctx, t, nn_init_make(NN_INIT_XAVIER_UNIFORM, 0, 0), rng) == AD_OK))
      nn_error_tensor(ctx, "nn_transformer_new", NULL, nn_params_name(p, i), t->ndim, t->shape);
  }
  if (!ok) {
    nn_error_prefix(ctx, "nn_transformer_new");
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

ad_tensor *nn_transformer_generate_square_subsequent_mask(ad_ctx *ctx, int64_t sz, ad_dtype dtype) {
  if (!ctx) return NULL;
  const char *fn = "nn_transformer_generate_square_subsequent_mask";
  if (sz < 0 || sz > (INT64_C(1) << 20)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: sz %lld must be in [0, 2^20]", fn, (long long)sz);
    return NULL;
  }
  if (dtype != AD_F32 && dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: dtype must be f32 or f64, got %s", fn,
                 ad_dtype_name(dtype));
    return NULL;
  }
  int64_t shape[2] = {sz, sz};
  ad_tensor *m = ad_zeros(ctx, dtype, 2, shape);
  if (!m) return NULL;
  for (int64_t i = 0; i < sz; i++)
    for (int64_t j = i + 1; j < sz; j++) {
      if (dtype == AD_F32)
        ((float *)m->data)[i * sz + j] = -INFINITY;
      else
        ((double *)m->data)[i * sz + j] = -INFINITY;
    }
  return m;
}
