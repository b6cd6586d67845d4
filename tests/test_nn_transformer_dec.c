/* test_nn_transformer_dec.c: the transformer decoder layer and the
 * encoder and decoder stacks against PyTorch 1.13's
 * nn.TransformerDecoderLayer, nn.TransformerEncoder and
 * nn.TransformerDecoder (tests/transformer_dec_fixtures.h, written by
 * tools/gen_transformer_dec_fixtures.py: outputs and the gradients of tgt,
 * memory (or src) and every parameter, post-norm and pre-norm, relu and
 * gelu, both layouts, masks; the stacks with 2 layers and a final norm,
 * loaded by PyTorch's state dict names), gradients by central
 * differences, the stacks' copies starting equal, dropout draws, the
 * descriptions, and the error messages. */
#include "nn.h"
#include "nn_io.h"
#include "test_layer_values.h"
#include "test_tmpdir.h"
#include "transformer_dec_fixtures.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TEST_TMPDIR_SUITE(xd, "xd");

/* An AD_I32 mask from PyTorch's 0/1 values, or NULL. */
static ad_tensor *i32_mask(int ndim, const int64_t *shape, const double *v) {
  if (!v) return NULL;
  ad_tensor *t = ad_zeros(ctx, AD_I32, ndim, shape);
  cr_assert_not_null(t);
  for (int64_t i = 0; i < t->size; i++) ad_tensor_set(t, i, v[i]);
  return t;
}

/* Sets the parameters of p named as PyTorch's state dict (n names) to its
 * values: every name must be there, with its size, and nothing else. */
static void load_state(nn_params *p, int n, const char *const *names, const double *const *vals,
                       const int64_t *sizes) {
  cr_assert_eq(nn_params_count(p), n, "%d parameters, PyTorch %d", nn_params_count(p), n);
  for (int i = 0; i < n; i++) {
    ad_tensor *t = nn_params_find(p, names[i]);
    cr_assert_not_null(t, "no parameter %s", names[i]);
    cr_assert_str_eq(nn_params_name(p, i), names[i], "PyTorch's order");
    cr_assert_eq(t->size, sizes[i], "%s: %lld values", names[i], (long long)t->size);
    for (int64_t j = 0; j < t->size; j++) ad_tensor_set(t, j, vals[i][j]);
  }
}

static nn_transformer_opts opts_of(bool norm_first, bool gelu, bool batch_first, ad_dtype dt) {
  return (nn_transformer_opts){.dim_feedforward = XD_F,
                               .activation = gelu ? NN_ACT_GELU : NN_ACT_RELU,
                               .batch_first = batch_first,
                               .norm_first = norm_first,
                               .seed = 3,
                               .dtype = dt};
}

/* The decoder layer (stack false) or the decoder stack of case k, loaded
 * with PyTorch's state dict. */
static nn_layer *dec_module(const dec_case *k, bool stack, ad_dtype dt, bool causal) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_transformer_opts o = opts_of(k->norm_first, k->gelu, k->batch_first, dt);
  o.causal = causal;
  nn_layer *l = nn_transformer_decoder_layer_new(ctx, XD_E, XD_H, &rng, &o);
  if (stack)
    l = nn_transformer_decoder_new(l, XD_LAYERS, &(nn_transformer_stack_opts){.norm = true});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  if (stack)
    load_state(nn_layer_params(l), XDS_NPARAMS, xds_param_names, xds_params, xds_param_sizes);
  else
    load_state(nn_layer_params(l), XD_NPARAMS, xd_param_names, xd_params, xd_param_sizes);
  return l;
}

/* How a case's tgt_mask is given when it is causal. */
typedef enum { MASK_AS_FIXTURE, MASK_CAUSAL_FLAG, MASK_I32, MASK_LAYER_CAUSAL } mask_way;

/* Runs decoder case k (layer or stack) in dtype dt and compares the output
 * and every gradient. */
static void check_dec(const dec_case *k, bool stack, ad_dtype dt, double tol, mask_way way) {
  char cs[96];
  snprintf(cs, sizeof cs, "%s/%s/%s/%d", stack ? "stack" : "layer", k->name, ad_dtype_name(dt),
           (int)way);
  nn_layer *l = dec_module(k, stack, dt, way == MASK_LAYER_CAUSAL);
  ad_tensor *tgt = test_tensor_from(ctx, dt, k->ndim, k->tshape, k->tgt),
            *mem = test_tensor_from(ctx, dt, k->ndim, k->mshape, k->mem);
  ad_tensor_set_requires_grad(tgt, true);
  ad_tensor_set_requires_grad(mem, true);
  int64_t tt[2] = {XD_T, XD_T}, ts[2] = {XD_T, XD_S}, nt[2] = {XD_N, XD_T}, ns[2] = {XD_N, XD_S};
  int kd = k->unbatched ? 1 : 2;
  ad_tensor *tmask = NULL;
  if (k->tmask && way == MASK_I32) { /* nonzero where PyTorch's float mask is -inf */
    tmask = ad_zeros(ctx, AD_I32, 2, tt);
    for (int64_t i = 0; i < tmask->size; i++) ad_tensor_set(tmask, i, isinf(k->tmask[i]));
  } else if (k->tmask && (way == MASK_AS_FIXTURE || !k->causal))
    tmask = test_tensor_from(ctx, dt, 2, tt, k->tmask);
  nn_transformer_decoder_args a = {.tgt_mask = tmask,
                                   .memory_mask =
                                       k->mmask ? test_tensor_from(ctx, dt, 2, ts, k->mmask) : NULL,
                                   .tgt_key_padding_mask = i32_mask(kd, nt + 2 - kd, k->tkpm),
                                   .memory_key_padding_mask = i32_mask(kd, ns + 2 - kd, k->mkpm),
                                   .causal = way == MASK_CAUSAL_FLAG};
  ad_tensor *y = stack ? nn_transformer_decoder(l, tgt, mem, &a)
                       : nn_transformer_decoder_layer(l, tgt, mem, &a);
  int64_t n = 1;
  for (int i = 0; i < k->ndim; i++) n *= k->tshape[i];
  test_expect_case_close(ctx, y, k->out, n, tol, "out", cs);
  for (int i = 0; i < k->ndim; i++) cr_assert_eq(y->shape[i], k->tshape[i], "%s: out shape", cs);
  ad_tensor *gy = test_tensor_from(ctx, dt, k->ndim, k->tshape, k->gy);
  ad_tensor *loss = ad_sum(ctx, ad_mul(ctx, y, gy));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  test_expect_case_close(ctx, tgt->grad, k->dtgt, tgt->size, tol, "dtgt", cs);
  test_expect_case_close(ctx, mem->grad, k->dmem, mem->size, tol, "dmemory", cs);
  nn_params *p = nn_layer_params(l);
  int np = stack ? XDS_NPARAMS : XD_NPARAMS;
  for (int i = 0; i < np; i++) {
    const char *name = stack ? xds_param_names[i] : xd_param_names[i];
    test_expect_case_close(ctx, nn_params_find(p, name)->grad, k->d[i],
                           stack ? xds_param_sizes[i] : xd_param_sizes[i], tol, name, cs);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(tgt), ad_tensor_free(mem), ad_tensor_free(gy), ad_tensor_free(a.tgt_mask);
  ad_tensor_free(a.memory_mask), ad_tensor_free(a.tgt_key_padding_mask);
  ad_tensor_free(a.memory_key_padding_mask);
  nn_layer_free(l);
}

static void check_all_dec(ad_dtype dt, double tol) {
  for (size_t i = 0; i < sizeof xd_cases / sizeof *xd_cases; i++) {
    const dec_case *k = &xd_cases[i];
    check_dec(k, false, dt, tol, MASK_AS_FIXTURE);
    if (k->causal) { /* the flag, an i32 mask and the layer's option */
      check_dec(k, false, dt, tol, MASK_CAUSAL_FLAG);
      check_dec(k, false, dt, tol, MASK_I32);
      check_dec(k, false, dt, tol, MASK_LAYER_CAUSAL);
    }
  }
  for (size_t i = 0; i < sizeof xds_cases / sizeof *xds_cases; i++) {
    check_dec(&xds_cases[i], true, dt, tol, MASK_AS_FIXTURE);
    if (xds_cases[i].causal) check_dec(&xds_cases[i], true, dt, tol, MASK_CAUSAL_FLAG);
  }
}

Test(xd, decoder_matches_pytorch_f64) { check_all_dec(AD_F64, 1e-12); }

Test(xd, decoder_matches_pytorch_f32) { check_all_dec(AD_F32, 1e-5); }

/* The encoder stack of case k, loaded with PyTorch's state dict. */
static nn_layer *enc_stack(const enc_case *k, ad_dtype dt, bool causal) {
  ad_rng rng;
  ad_rng_seed(&rng, 2);
  nn_transformer_opts o = opts_of(k->norm_first, k->gelu, k->batch_first, dt);
  o.causal = causal;
  nn_layer *l =
      nn_transformer_encoder_new(nn_transformer_encoder_layer_new(ctx, XD_E, XD_H, &rng, &o),
                                 XD_LAYERS, &(nn_transformer_stack_opts){.norm = true});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  load_state(nn_layer_params(l), XS_NPARAMS, xs_param_names, xs_params, xs_param_sizes);
  return l;
}

static void check_enc(const enc_case *k, ad_dtype dt, double tol, mask_way way) {
  char cs[96];
  snprintf(cs, sizeof cs, "encoder/%s/%s/%d", k->name, ad_dtype_name(dt), (int)way);
  nn_layer *l = enc_stack(k, dt, way == MASK_LAYER_CAUSAL);
  ad_tensor *src = test_tensor_from(ctx, dt, k->ndim, k->shape, k->src);
  ad_tensor_set_requires_grad(src, true);
  int64_t ss[2] = {XD_T, XD_T}, ns[2] = {XD_N, XD_T};
  nn_transformer_args a = {.src_mask = k->mask && way == MASK_AS_FIXTURE
                                           ? test_tensor_from(ctx, dt, 2, ss, k->mask)
                                           : NULL,
                           .src_key_padding_mask = i32_mask(2, ns, k->kpm),
                           .causal = way == MASK_CAUSAL_FLAG};
  ad_tensor *y = nn_transformer_encoder(l, src, &a);
  test_expect_case_close(ctx, y, k->out, src->size, tol, "out", cs);
  ad_tensor *gy = test_tensor_from(ctx, dt, k->ndim, k->shape, k->gy);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, gy)), NULL), AD_OK, "%s",
               ad_last_error(ctx));
  test_expect_case_close(ctx, src->grad, k->dsrc, src->size, tol, "dsrc", cs);
  nn_params *p = nn_layer_params(l);
  for (int i = 0; i < XS_NPARAMS; i++)
    test_expect_case_close(ctx, nn_params_find(p, xs_param_names[i])->grad, k->d[i],
                           xs_param_sizes[i], tol, xs_param_names[i], cs);
  ad_tape_reset(ctx);
  ad_tensor_free(src), ad_tensor_free(gy), ad_tensor_free(a.src_mask);
  ad_tensor_free(a.src_key_padding_mask);
  nn_layer_free(l);
}

static void check_all_enc(ad_dtype dt, double tol) {
  for (size_t i = 0; i < sizeof xs_cases / sizeof *xs_cases; i++) {
    check_enc(&xs_cases[i], dt, tol, MASK_AS_FIXTURE);
    if (xs_cases[i].causal) check_enc(&xs_cases[i], dt, tol, MASK_CAUSAL_FLAG);
  }
}

Test(xd, encoder_stack_matches_pytorch_f64) { check_all_enc(AD_F64, 1e-12); }

Test(xd, encoder_stack_matches_pytorch_f32) { check_all_enc(AD_F32, 1e-5); }

Test(xd, encoder_stack_in_a_sequential) {
  /* pre_gelu_bf has no masks: a Sequential runs it, named "0.layers.1..." */
  const enc_case *k = &xs_cases[1];
  cr_assert(!k->mask && !k->kpm);
  ad_rng rng;
  ad_rng_seed(&rng, 4);
  nn_transformer_opts o = opts_of(k->norm_first, k->gelu, k->batch_first, AD_F32);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_transformer_encoder_new(
                                   nn_transformer_encoder_layer_new(ctx, XD_E, XD_H, &rng, &o),
                                   XD_LAYERS, &(nn_transformer_stack_opts){.norm = true})),
               AD_OK, "%s", ad_last_error(ctx));
  nn_params *p = nn_model_params(m);
  for (int i = 0; i < XS_NPARAMS; i++) {
    char name[96];
    snprintf(name, sizeof name, "0.%s", xs_param_names[i]);
    ad_tensor *t = nn_params_find(p, name);
    cr_assert_not_null(t, "no %s", name);
    for (int64_t j = 0; j < t->size; j++) ad_tensor_set(t, j, xs_params[i][j]);
  }
  nn_model_set_training(m, false);
  ad_tensor *src = test_tensor_from(ctx, AD_F32, k->ndim, k->shape, k->src);
  test_expect_case_close(ctx, nn_model_forward(m, src), k->out, src->size, 1e-5, "out",
                         "sequential");
  ad_tensor_free(src);
  nn_model_free(m);
}

Test(xd, encoder_stack_checkpoint_under_pytorch_names) {
  /* a file holding PyTorch's state dict of the stack, by its names, loads
   * into a fresh stack of other draws, which then computes PyTorch's values */
  const enc_case *k = &xs_cases[0];
  nn_layer *l = enc_stack(k, AD_F64, false);
  const char *path = test_path("stack.safetensors");
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_checkpoint_save(ctx, path, XS_NPARAMS, xs_param_names, nn_params_tensors(p)),
               AD_OK, "%s", ad_last_error(ctx));
  nn_layer_free(l);
  ad_rng rng;
  ad_rng_seed(&rng, 99);
  nn_transformer_opts o = opts_of(k->norm_first, k->gelu, k->batch_first, AD_F64);
  l = nn_transformer_encoder_new(nn_transformer_encoder_layer_new(ctx, XD_E, XD_H, &rng, &o),
                                 XD_LAYERS, &(nn_transformer_stack_opts){.norm = true});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  p = nn_layer_params(l);
  cr_assert_eq(
      nn_checkpoint_load(ctx, path, nn_params_count(p), nn_params_names(p), nn_params_tensors(p)),
      AD_OK, "%s", ad_last_error(ctx));
  ad_tensor *src = test_tensor_from(ctx, AD_F64, k->ndim, k->shape, k->src);
  int64_t ss[2] = {XD_T, XD_T}, ns[2] = {XD_N, XD_T};
  ad_tensor *mask = test_tensor_from(ctx, AD_F64, 2, ss, k->mask), *kpm = i32_mask(2, ns, k->kpm);
  test_expect_case_close(
      ctx,
      nn_transformer_encoder(l, src,
                             &(nn_transformer_args){.src_mask = mask, .src_key_padding_mask = kpm}),
      k->out, src->size, 1e-12, "out", "loaded");
  ad_tensor_free(src), ad_tensor_free(mask), ad_tensor_free(kpm);
  nn_layer_free(l);
}

/* ------------------------------------------------------------- the copies */

/* PyTorch's _get_clones deep-copies one initialised layer: every layer of
 * a stack starts with the first one's values, which are the layer's. */
static void check_copies_equal(bool dec) {
  ad_rng rng;
  ad_rng_seed(&rng, 12);
  nn_transformer_opts o = {.dim_feedforward = 16, .dtype = AD_F64};
  nn_layer *t = dec ? nn_transformer_decoder_layer_new(ctx, 8, 2, &rng, &o)
                    : nn_transformer_encoder_layer_new(ctx, 8, 2, &rng, &o);
  cr_assert_not_null(t);
  nn_params *tp = nn_layer_params(t);
  int np = nn_params_count(tp);
  double *vals[32];
  cr_assert_leq(np, 32);
  for (int i = 0; i < np; i++) {
    ad_tensor *w = nn_params_tensor(tp, i);
    vals[i] = malloc((size_t)w->size * sizeof **vals);
    for (int64_t j = 0; j < w->size; j++) vals[i][j] = ad_tensor_get(w, j);
  }
  nn_layer *s =
      dec ? nn_transformer_decoder_new(t, 3, NULL) : nn_transformer_encoder_new(t, 3, NULL);
  cr_assert_not_null(s, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(s);
  cr_assert_eq(nn_params_count(p), 3 * np, "no final norm by default");
  cr_assert_null(nn_params_find(p, "norm.weight"));
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < np; i++) {
      char name[96];
      snprintf(name, sizeof name, "layers.%d.%s", k, nn_params_name(tp, i));
      ad_tensor *w = nn_params_find(p, name);
      cr_assert_not_null(w, "%s", name);
      cr_assert_str_eq(nn_params_name(p, k * np + i), name);
      for (int64_t j = 0; j < w->size; j++)
        QUICK_ASSERT(ad_tensor_get(w, j) == vals[i][j], "%s[%lld]", name, (long long)j);
      cr_assert(k == 0 || w != nn_params_find(p, nn_params_name(p, i)), "a copy, not shared");
    }
  for (int i = 0; i < np; i++) free(vals[i]);
  /* the copies are trained apart: a write into layer 1 leaves layer 0 */
  ad_tensor *w1 = nn_params_find(p, "layers.1.linear1.weight"),
            *w0 = nn_params_find(p, "layers.0.linear1.weight");
  double v0 = ad_tensor_get(w0, 0);
  ad_tensor_set(w1, 0, v0 + 1);
  cr_assert_eq(ad_tensor_get(w0, 0), v0);
  nn_layer_free(s);
}

Test(xd, encoder_copies_start_equal) { check_copies_equal(false); }

Test(xd, decoder_copies_start_equal) { check_copies_equal(true); }

/* ---------------------------------------------------------- derivatives */

typedef struct grad_ud {
  nn_layer *l;
  bool dec;
  ad_tensor *kpm;
  int nparams;
  const char *names[64]; /* of in[2..] (decoder) or in[1..] */
} grad_ud;

/* The module on in[0] (and memory in[1]) with its parameters taken from
 * the rest: gradcheck gives the parameters themselves on its analytic side
 * and float64 copies (perturbed) on its numeric side, whose values are
 * copied in. */
static ad_tensor *module_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c;
  const grad_ud *u = ud;
  nn_params *p = nn_layer_params(u->l);
  int first = u->dec ? 2 : 1;
  for (int i = first; i < n; i++) {
    ad_tensor *t = nn_params_find(p, u->names[i - first]);
    if (in[i] != t)
      for (int64_t j = 0; j < t->size; j++) ad_tensor_set(t, j, ad_tensor_get(in[i], j));
  }
  if (u->dec)
    return nn_transformer_decoder_layer(
        u->l, in[0], in[1],
        &(nn_transformer_decoder_args){.memory_key_padding_mask = u->kpm, .causal = true});
  return nn_transformer_encoder(
      u->l, in[0], &(nn_transformer_args){.src_key_padding_mask = u->kpm, .causal = true});
}

/* d_model 4, nhead 2, dim_feedforward 6 in float64: the decoder layer
 * (tgt [2, 3, 4], memory [2, 2, 4]) or an encoder stack of 2 layers and a
 * norm, inputs and every parameter against central differences. */
static void check_gradients(bool dec, bool norm_first, nn_act act) {
  ad_rng rng;
  ad_rng_seed(&rng, 21);
  nn_transformer_opts o = {.dim_feedforward = 6,
                           .activation = act,
                           .norm_first = norm_first,
                           .batch_first = true,
                           .dtype = AD_F64};
  nn_layer *l =
      dec ? nn_transformer_decoder_layer_new(ctx, 4, 2, &rng, &o)
          : nn_transformer_encoder_new(nn_transformer_encoder_layer_new(ctx, 4, 2, &rng, &o), 2,
                                       &(nn_transformer_stack_opts){.norm = true});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  for (int i = 0; i < nn_params_count(p); i++) { /* every value its own, away from 0 and 1 */
    ad_tensor *t = nn_params_tensor(p, i);
    bool nw = strstr(nn_params_name(p, i), "norm") && strstr(nn_params_name(p, i), "weight");
    for (int64_t j = 0; j < t->size; j++)
      ad_tensor_set(t, j,
                    t->ndim == 1 ? (nw ? 1 : 0) + 0.3 * (ad_rng_uniform(&rng) - 0.5)
                                 : ad_tensor_get(t, j) * (0.5 + ad_rng_uniform(&rng)));
  }
  int64_t xs[3] = {2, 3, 4}, ms[3] = {2, 2, 4}, ks[2] = {2, 2}, kx[2] = {2, 3};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 3, xs, -1.5, 1.5);
  ad_tensor *m = dec ? ad_rand(ctx, &rng, AD_F64, 3, ms, -1.5, 1.5) : NULL;
  grad_ud u = {.l = l, .dec = dec, .kpm = ad_zeros(ctx, AD_I32, 2, dec ? ks : kx)};
  ad_tensor_set(u.kpm, dec ? 3 : 4, 1); /* sequence 1: memory key 1, or src key 1 */
  ad_tensor *in[2 + 64] = {x, m};
  int first = dec ? 2 : 1;
  u.nparams = nn_params_count(p);
  cr_assert_leq(u.nparams, 64);
  for (int i = 0; i < u.nparams; i++) {
    in[first + i] = nn_params_tensor(p, i);
    u.names[i] = nn_params_name(p, i);
  }
  ad_tensor_set_requires_grad(x, true);
  if (m) ad_tensor_set_requires_grad(m, true);
  ad_check_opts co = {.eps = 1e-6, .atol = 1e-7, .rtol = 1e-6, .seed = 5};
  ad_check_report r;
  cr_assert_eq(ad_gradcheck(ctx, module_fn, &u, first + u.nparams, in, &co, &r), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(r.passed, "gradcheck: input %d [%lld] analytic %g numeric %g", r.input,
            (long long)r.index, r.analytic, r.numeric);
  cr_assert_eq(r.checked, x->size + (m ? m->size : 0) + nn_params_numel(p));
  ad_tensor_free(x), ad_tensor_free(m), ad_tensor_free(u.kpm);
  nn_layer_free(l);
}

Test(xd, gradcheck_decoder_post_norm_relu) { check_gradients(true, false, NN_ACT_RELU); }

Test(xd, gradcheck_decoder_pre_norm_gelu) { check_gradients(true, true, NN_ACT_GELU); }

Test(xd, gradcheck_encoder_stack) { check_gradients(false, false, NN_ACT_GELU); }

/* -------------------------------------------------------------- dropout */

/* The decoder layer of case 0, or a stack of it, with dropout 0.3 and seed. */
static nn_layer *drop_module(bool stack, uint64_t seed) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_transformer_opts o = opts_of(false, false, false, AD_F64);
  o.dropout = 0.3, o.seed = seed;
  nn_layer *l = nn_transformer_decoder_layer_new(ctx, XD_E, XD_H, &rng, &o);
  if (stack) l = nn_transformer_decoder_new(l, XD_LAYERS, NULL);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  if (!stack) load_state(nn_layer_params(l), XD_NPARAMS, xd_param_names, xd_params, xd_param_sizes);
  return l;
}

static void check_dropout(bool stack) {
  const dec_case *k = &xd_cases[0];
  nn_layer *a = drop_module(stack, 7), *b = drop_module(stack, 7), *c = drop_module(stack, 8);
  ad_tensor *tgt = test_tensor_from(ctx, AD_F64, k->ndim, k->tshape, k->tgt),
            *mem = test_tensor_from(ctx, AD_F64, k->ndim, k->mshape, k->mem);
  nn_transformer_decoder_args tr = {.training = true};
  ad_tensor *(*run)(nn_layer *, ad_tensor *, ad_tensor *, const nn_transformer_decoder_args *) =
      stack ? nn_transformer_decoder : nn_transformer_decoder_layer;
  ad_tensor *eval = run(a, tgt, mem, NULL);
  if (!stack) test_expect_case_close(ctx, eval, k->out, tgt->size, 1e-12, "eval", "a");
  ad_tensor *ya = run(a, tgt, mem, &tr), *yb = run(b, tgt, mem, &tr), *yc = run(c, tgt, mem, &tr);
  cr_assert_eq(test_max_diff(ctx, ya, yb), 0, "same seed, same masks");
  cr_assert_gt(test_max_diff(ctx, ya, yc), 1e-3, "another seed");
  cr_assert_gt(test_max_diff(ctx, ya, eval), 1e-3, "training differs from evaluation");
  ad_tensor *ya2 = run(a, tgt, mem, &tr);
  cr_assert_gt(test_max_diff(ctx, ya, ya2), 1e-3, "the next call draws new masks");
  /* a call that fails in the cross-attention (after the self-attention's
   * draws) takes no draws: b's next training call is a's */
  ad_tensor *bad = ad_zeros(ctx, AD_I32, 2, (int64_t[]){XD_T, XD_T}); /* memory_mask [T, S] */
  cr_assert_null(
      run(b, tgt, mem, &(nn_transformer_decoder_args){.memory_mask = bad, .training = true}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "multihead_attention 'multihead_attn': attn_mask [4,4]");
  cr_assert_eq(test_max_diff(ctx, ya2, run(b, tgt, mem, &tr)), 0);
  ad_tensor_free(tgt), ad_tensor_free(mem), ad_tensor_free(bad);
  nn_layer_free(a), nn_layer_free(b), nn_layer_free(c);
}

Test(xd, decoder_dropout_reproducible_and_rolled_back) { check_dropout(false); }

Test(xd, decoder_stack_dropout_reproducible_and_rolled_back) { check_dropout(true); }

Test(xd, stack_layers_draw_their_own_masks) {
  /* pre-norm layers with out_proj.weight and linear2 zero and
   * out_proj.bias one on x = 0: layer k adds dropout1_k(1), each element 0
   * or 1 / (1 - p) = 2, so y is 0, 2 or 4 per element; were the copies'
   * masks the same, never 2 */
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  nn_transformer_opts o = {.dropout = 0.5, .norm_first = true, .seed = 9, .dtype = AD_F64};
  nn_layer *s =
      nn_transformer_encoder_new(nn_transformer_encoder_layer_new(ctx, 8, 2, &rng, &o), 2, NULL);
  cr_assert_not_null(s, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(s);
  for (int k = 0; k < 2; k++) {
    const char *zero[] = {"self_attn.out_proj.weight", "linear2.weight", "linear2.bias"};
    char name[96];
    for (int i = 0; i < 3; i++) {
      snprintf(name, sizeof name, "layers.%d.%s", k, zero[i]);
      ad_tensor_fill(nn_params_find(p, name), 0);
    }
    snprintf(name, sizeof name, "layers.%d.self_attn.out_proj.bias", k);
    ad_tensor_fill(nn_params_find(p, name), 1);
  }
  ad_tensor *x = ad_zeros(ctx, AD_F64, 3, (int64_t[]){50, 4, 8});
  ad_tensor *y = nn_transformer_encoder(s, x, &(nn_transformer_args){.training = true});
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  int64_t count[3] = {0};
  for (int64_t i = 0; i < y->size; i++) {
    double v = ad_tensor_get(y, i);
    cr_assert(v == 0 || v == 2 || v == 4, "y[%lld] = %g", (long long)i, v);
    count[(int)v / 2]++;
  }
  /* independent masks of p = 0.5: a quarter, a half, a quarter */
  for (int i = 0; i < 3; i++)
    cr_assert(count[i] > (i == 1 ? 0.45 : 0.2) * (double)y->size &&
                  count[i] < (i == 1 ? 0.55 : 0.3) * (double)y->size,
              "%lld of %lld are %d", (long long)count[i], (long long)y->size, 2 * i);
  ad_tensor_free(x);
  nn_layer_free(s);
}

/* ------------------------------------------------------- descriptions */

Test(xd, describe_in_torch_style) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  char buf[512];
  nn_layer *l = nn_transformer_decoder_layer_new(ctx, 8, 2, &rng, NULL);
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "transformer_decoder_layer(d_model=8, nhead=2)");
  cr_assert_str_eq(nn_layer_kind(l), "transformer_decoder_layer");
  l = nn_transformer_decoder_new(l, 6, NULL);
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "transformer_decoder(transformer_decoder_layer(d_model=8, nhead=2), "
                   "num_layers=6)");
  nn_layer_free(l);
  nn_transformer_opts o = {.dim_feedforward = 16, .activation = NN_ACT_GELU, .norm_first = true};
  l = nn_transformer_encoder_new(nn_transformer_encoder_layer_new(ctx, 8, 2, &rng, &o), 2,
                                 &(nn_transformer_stack_opts){.norm = true, .norm_eps = 1e-6});
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "transformer_encoder(transformer_encoder_layer(d_model=8, nhead=2, "
                   "dim_feedforward=16, activation=gelu, norm_first=True), num_layers=2, "
                   "norm=LayerNorm((8,), eps=1e-06, elementwise_affine=True))");
  cr_assert_str_eq(nn_layer_kind(l), "transformer_encoder");
  nn_layer_free(l);
}

/* --------------------------------------------------------------- misuse */

Test(xd, decoder_refused_as_a_layer) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_transformer_decoder_layer_new(ctx, 6, 2, &rng, NULL)), AD_OK);
  cr_assert_eq(
      nn_model_add(m, nn_transformer_decoder_new(
                          nn_transformer_decoder_layer_new(ctx, 6, 2, &rng, NULL), 2, NULL)),
      AD_OK);
  ad_tensor *x = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, 6});
  cr_assert_null(nn_model_forward(m, x));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "transformer_decoder_layer '0': a decoder needs memory: call "
                    "nn_transformer_decoder_layer(l, tgt, memory, args), not nn_layer_forward");
  cr_assert_null(nn_layer_forward(nn_model_layer(m, 1), x, false));
  expect_status_msg(
      ctx, AD_ERR_ARG,
      "transformer_decoder '1': a decoder needs memory: call nn_transformer_decoder(l, "
      "tgt, memory, args)");
  /* the layers run when called with memory */
  cr_assert_not_null(nn_transformer_decoder_layer(nn_model_layer(m, 0), x, x, NULL), "%s",
                     ad_last_error(ctx));
  cr_assert_not_null(nn_transformer_decoder(nn_model_layer(m, 1), x, x, NULL), "%s",
                     ad_last_error(ctx));
  ad_tensor_free(x);
  nn_model_free(m);
}

Test(xd, decoder_bad_input) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_layer *l = nn_transformer_decoder_layer_new(ctx, 6, 2, &rng, NULL);
  cr_assert_not_null(l);
  ad_tensor *t = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, 6});
  ad_tensor *mem = ad_ones(ctx, AD_F32, 3, (int64_t[]){3, 2, 6});
  ad_tensor *m1 = ad_ones(ctx, AD_F32, 3, (int64_t[]){3, 2, 5});
  ad_tensor *m3 = ad_ones(ctx, AD_F32, 3, (int64_t[]){3, 3, 6}); /* another batch size */
  ad_tensor *mu = ad_ones(ctx, AD_F32, 2, (int64_t[]){3, 6});    /* unbatched */
  ad_tensor *md = ad_ones(ctx, AD_F64, 3, (int64_t[]){3, 2, 6});
  ad_tensor *t1 = ad_ones(ctx, AD_F32, 1, (int64_t[]){6});
  cr_assert_null(nn_transformer_decoder_layer(l, t1, mem, NULL));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "transformer_decoder_layer: tgt [6] must be [T, N, E] or [T, E], T >= 1, E = d_model 6");
  cr_assert_null(nn_transformer_decoder_layer(l, t, m1, NULL));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "transformer_decoder_layer: memory [3,2,5] must be [S, N, E] or [S, E], S >= 1, E = "
      "d_model 6");
  cr_assert_null(nn_transformer_decoder_layer(l, t, md, NULL));
  expect_status_msg(ctx, AD_ERR_DTYPE,
                    "transformer_decoder_layer: memory is f64; the layer is f32");
  cr_assert_null(nn_transformer_decoder_layer(l, t, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "transformer_decoder_layer: memory is NULL");
  cr_assert_null(nn_transformer_decoder_layer(l, NULL, mem, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "transformer_decoder_layer: tgt is NULL");
  cr_assert_null(nn_transformer_decoder_layer(l, t, m3, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "transformer_decoder_layer: multihead_attention 'multihead_attn'");
  cr_assert_null(nn_transformer_decoder_layer(l, t, mu, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "transformer_decoder_layer: multihead_attention 'multihead_attn'");
  ad_tensor *kpm = ad_zeros(ctx, AD_I32, 2, (int64_t[]){2, 4}); /* a tgt's, given for memory */
  cr_assert_null(nn_transformer_decoder_layer(
      l, t, mem, &(nn_transformer_decoder_args){.memory_key_padding_mask = kpm}));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "multihead_attention 'multihead_attn': key_padding_mask [2,4] must be [N, S] = "
                    "[2,3]");
  cr_assert_null(
      nn_transformer_decoder_layer(l, t, mem, &(nn_transformer_decoder_args){.tgt_mask = kpm}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "multihead_attention 'self_attn': attn_mask [2,4]");
  ad_tensor_free(md);
  cr_assert_null(nn_transformer_decoder_layer(l, t, md, NULL));
  expect_status_msg(ctx, AD_ERR_STATE, "was freed");
  nn_layer *enc = nn_transformer_encoder_layer_new(ctx, 6, 2, &rng, NULL);
  cr_assert_null(nn_transformer_decoder_layer(enc, t, mem, NULL));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "layer transformer_encoder_layer is not a transformer_decoder_layer");
  cr_assert_null(nn_transformer_encoder_layer(l, t, NULL));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "layer transformer_decoder_layer is not a transformer_encoder_layer");
  cr_assert_null(nn_transformer_encoder(enc, t, NULL));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "layer transformer_encoder_layer is not a transformer_encoder");
  cr_assert_null(nn_transformer_decoder(l, t, mem, NULL));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "layer transformer_decoder_layer is not a transformer_decoder");
  cr_assert_null(nn_transformer_decoder_layer(NULL, t, mem, NULL));
  cr_assert_null(nn_transformer_decoder(NULL, t, mem, NULL));
  /* a check's message is not renamed after the layer once more, and a NULL
   * input made by an earlier failure keeps that failure's message */
  cr_assert_null(nn_transformer_decoder_layer(enc, t, mem, NULL));
  cr_assert_str_eq(ad_last_error(ctx), "transformer_decoder_layer: layer transformer_encoder_layer "
                                       "is not a transformer_decoder_layer");
  ad_clear_error(ctx);
  nn_layer *stack =
      nn_transformer_decoder_new(nn_transformer_decoder_layer_new(ctx, 6, 2, &rng, NULL), 2, NULL);
  cr_assert_not_null(stack, "%s", ad_last_error(ctx));
  for (int k = 0; k < 4; k++) {
    cr_assert_null(ad_matmul(ctx, t, t, false, false));
    char earlier[256];
    snprintf(earlier, sizeof earlier, "%s", ad_last_error(ctx));
    ad_tensor *tg = k % 2 ? t : NULL, *me = k % 2 ? NULL : mem;
    cr_assert_null(k < 2 ? nn_transformer_decoder_layer(l, tg, me, NULL)
                         : nn_transformer_decoder(stack, tg, me, NULL));
    cr_assert_str_eq(ad_last_error(ctx), earlier, "case %d", k);
    ad_clear_error(ctx);
  }
  nn_layer_free(stack);
  /* the layer is sane after the errors */
  cr_assert_not_null(nn_transformer_decoder_layer(l, t, mem, NULL), "%s", ad_last_error(ctx));
  ad_tensor *all[] = {t, mem, m1, m3, mu, t1, kpm};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_tensor_free(all[i]);
  nn_layer_free(l), nn_layer_free(enc);
}

Test(xd, stack_bad_input_names_the_layer) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(
      nn_model_add(m, nn_transformer_encoder_new(
                          nn_transformer_encoder_layer_new(ctx, 6, 2, &rng, NULL), 2, NULL)),
      AD_OK);
  nn_layer *s = nn_model_layer(m, 0);
  ad_tensor *x5 = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, 5});
  cr_assert_null(nn_model_forward(m, x5));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "transformer_encoder '0': transformer_encoder_layer 'layers.0': src [4,2,5] must be");
  cr_assert_null(nn_transformer_encoder(s, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "transformer_encoder '0': src is NULL");
  ad_tensor *x = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, 6});
  ad_tensor *am = ad_zeros(ctx, AD_I32, 2, (int64_t[]){4, 3});
  cr_assert_null(nn_transformer_encoder(s, x, &(nn_transformer_args){.src_mask = am}));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "transformer_encoder '0': transformer_encoder_layer 'layers.0': multihead_attention "
      "'self_attn': attn_mask [4,3] must be [L, S]");
  cr_assert_not_null(nn_model_forward(m, x), "%s", ad_last_error(ctx));
  ad_tensor_free(x5), ad_tensor_free(x), ad_tensor_free(am);
  nn_model_free(m);
}

Test(xd, bad_construction) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  /* the decoder layer: the encoder layer's checks, naming it */
  cr_assert_null(nn_transformer_decoder_layer_new(ctx, 8, 3, &rng, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "transformer_decoder_layer: d_model 8 and nhead 3");
  cr_assert_null(
      nn_transformer_decoder_layer_new(ctx, 8, 2, &rng, &(nn_transformer_opts){.dropout = 1}));
  expect_status_msg(ctx, AD_ERR_ARG, "transformer_decoder_layer: dropout 1 is outside [0, 1)");
  cr_assert_null(nn_transformer_decoder_layer_new(
      ctx, 8, 2, &rng, &(nn_transformer_opts){.activation = NN_ACT_TANH}));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "transformer_decoder_layer: activation tanh must be relu or gelu");
  cr_assert_null(
      nn_transformer_decoder_layer_new(ctx, 8, 2, &rng, &(nn_transformer_opts){.dtype = AD_I32}));
  expect_status_msg(ctx, AD_ERR_DTYPE, "transformer_decoder_layer: parameters must be float");
  cr_assert_null(nn_transformer_decoder_layer_new(ctx, 8, 2, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "transformer_decoder_layer: rng is NULL");
  cr_assert_null(nn_transformer_decoder_layer_new(NULL, 8, 2, &rng, NULL));
  /* the stacks: each refused layer is freed */
  const struct {
    bool dec_layer, dec_stack;
    int64_t n;
    nn_transformer_stack_opts o;
    const char *msg;
  } bad[] = {
      {false, false, 0, {0}, "transformer_encoder: num_layers 0 must be in [1, 65536]"},
      {true, true, -1, {0}, "transformer_decoder: num_layers -1 must be in"},
      {false, false, 65537, {0}, "num_layers 65537"},
      {true,
       false,
       2,
       {0},
       "transformer_encoder: layer transformer_decoder_layer is not a "
       "transformer_encoder_layer"},
      {false,
       true,
       2,
       {0},
       "transformer_decoder: layer transformer_encoder_layer is not a "
       "transformer_decoder_layer"},
      {false, false, 2, {.norm = true, .norm_eps = -1}, "norm_eps -1 must be > 0"},
      {false, false, 2, {.norm = true, .norm_eps = NAN}, "norm_eps nan"},
      {false, false, 2, {.norm_eps = 1e-6}, "norm_eps 1e-06 given without norm"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    nn_layer *l = bad[i].dec_layer ? nn_transformer_decoder_layer_new(ctx, 8, 2, &rng, NULL)
                                   : nn_transformer_encoder_layer_new(ctx, 8, 2, &rng, NULL);
    cr_assert_not_null(l);
    cr_assert_null(bad[i].dec_stack ? nn_transformer_decoder_new(l, bad[i].n, &bad[i].o)
                                    : nn_transformer_encoder_new(l, bad[i].n, &bad[i].o),
                   "case %zu", i);
    expect_status_msg(ctx, AD_ERR_ARG, bad[i].msg);
  }
  /* a NULL layer keeps its constructor's error: one check for the chain */
  cr_assert_null(
      nn_transformer_encoder_new(nn_transformer_encoder_layer_new(ctx, 8, 3, &rng, NULL), 2, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "transformer_encoder_layer: d_model 8 and nhead 3");
  cr_assert_null(nn_transformer_decoder_new(NULL, 2, NULL));
  cr_assert_eq(LIVE_BLOCKS(), live_base, "a refused layer leaks nothing");
  /* a layer of a model is refused and left to the model */
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_transformer_encoder_layer_new(ctx, 8, 2, &rng, NULL)), AD_OK);
  cr_assert_null(nn_transformer_encoder_new(nn_model_layer(m, 0), 2, NULL));
  expect_status_msg(
      ctx, AD_ERR_ARG,
      "transformer_encoder: transformer_encoder_layer '0' already belongs to a model");
  ad_tensor *x = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, 8});
  cr_assert_not_null(nn_model_forward(m, x), "%s", ad_last_error(ctx));
  ad_tensor_free(x);
  nn_model_free(m);
}
