/* test_nn_transformer_model.c: the whole transformer (nn_transformer_new,
 * nn_transformer_forward, nn_transformer_generate_square_subsequent_mask)
 * against PyTorch 1.13's nn.Transformer (tests/transformer_model_fixtures.h
 * and tests/fixtures/torch_transformer.safetensors, written by
 * tools/gen_transformer_model_fixtures.py: d_model 8, nhead 2, 2 + 2
 * layers, dim_feedforward 16, its state dict loaded by PyTorch's names;
 * outputs and the gradients of src, tgt and every parameter, post-norm and
 * pre-norm, relu and gelu, both layouts, unbatched, all six masks), the
 * initialisation's distribution, dropout, gradients by central
 * differences, and the error messages. */
#include "nn.h"
#include "nn_io.h"
#include "test_layer_values.h"
#include "test_tmpdir.h"
#include "transformer_model_fixtures.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TEST_TMPDIR_SUITE(xt, "xt");

#define NCASES ((int)(sizeof xt_cases / sizeof *xt_cases))

static nn_transformer_model_opts opts_of(const xt_case *k, ad_dtype dt) {
  return (nn_transformer_model_opts){.d_model = XT_E,
                                     .nhead = XT_H,
                                     .num_encoder_layers = XT_NE,
                                     .num_decoder_layers = XT_ND,
                                     .dim_feedforward = XT_F,
                                     .activation = k->gelu ? NN_ACT_GELU : NN_ACT_RELU,
                                     .batch_first = k->batch_first,
                                     .norm_first = k->norm_first,
                                     .seed = 3,
                                     .dtype = dt};
}

/* PyTorch's state dict from the safetensors file into l's parameters, by
 * their names (a float64 l gets the float32 values through a float32
 * twin). */
static void load_torch(nn_layer *l, const xt_case *k) {
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), XT_NPARAMS);
  if (nn_params_tensor(p, 0)->dtype == AD_F32) {
    cr_assert_eq(nn_checkpoint_load(ctx, XT_SAFETENSORS, XT_NPARAMS, nn_params_names(p),
                                    nn_params_tensors(p)),
                 AD_OK, "%s", ad_last_error(ctx));
    return;
  }
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  nn_transformer_model_opts o = opts_of(k, AD_F32);
  nn_layer *twin = nn_transformer_new(ctx, &rng, &o);
  cr_assert_not_null(twin, "%s", ad_last_error(ctx));
  load_torch(twin, k);
  nn_params *tp = nn_layer_params(twin);
  for (int i = 0; i < XT_NPARAMS; i++) {
    ad_tensor *s = nn_params_tensor(tp, i), *d = nn_params_tensor(p, i);
    for (int64_t j = 0; j < s->size; j++) ad_tensor_set(d, j, ad_tensor_get(s, j));
  }
  nn_layer_free(twin);
}

/* How a case's causal tgt_mask is given. */
typedef enum { MASK_AS_FIXTURE, MASK_I32, MASK_GENERATED } mask_way;

/* Runs case k in dtype dt and compares the output and every gradient. */
static void check_case(const xt_case *k, ad_dtype dt, double tol, mask_way way) {
  char cs[96];
  snprintf(cs, sizeof cs, "%s/%s/%d", k->name, ad_dtype_name(dt), (int)way);
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_transformer_model_opts o = opts_of(k, dt);
  nn_layer *l = nn_transformer_new(ctx, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  load_torch(l, k);
  ad_tensor *src = test_tensor_from(ctx, dt, k->ndim, k->sshape, k->src),
            *tgt = test_tensor_from(ctx, dt, k->ndim, k->tshape, k->tgt);
  ad_tensor_set_requires_grad(src, true);
  ad_tensor_set_requires_grad(tgt, true);
  int64_t ss[2] = {XT_S, XT_S}, tt[2] = {XT_T, XT_T}, ts[2] = {XT_T, XT_S}, ns[2] = {XT_N, XT_S},
          nt[2] = {XT_N, XT_T};
  int kd = k->unbatched ? 1 : 2;
  const int64_t *shapes[6] = {ss, tt, ts, ns + 2 - kd, nt + 2 - kd, ns + 2 - kd};
  int nds[6] = {2, 2, 2, kd, kd, kd};
  ad_tensor *m[6];
  for (int i = 0; i < 6; i++)
    m[i] = i < 3 ? test_tensor_from(ctx, dt, nds[i], shapes[i], k->masks[i]) : NULL;
  for (int i = 3; i < 6; i++)
    if (k->masks[i]) { /* PyTorch's bool: AD_I32 nonzero */
      m[i] = ad_zeros(ctx, AD_I32, nds[i], shapes[i]);
      for (int64_t j = 0; j < m[i]->size; j++) ad_tensor_set(m[i], j, k->masks[i][j]);
    }
  if (m[1] && way != MASK_AS_FIXTURE) { /* tgt_mask: causal in every case that has one */
    ad_tensor_free(m[1]);
    if (way == MASK_GENERATED)
      m[1] = nn_transformer_generate_square_subsequent_mask(ctx, XT_T, dt);
    else {
      m[1] = ad_zeros(ctx, AD_I32, 2, tt);
      for (int64_t j = 0; j < m[1]->size; j++) ad_tensor_set(m[1], j, isinf(k->masks[1][j]));
    }
  }
  ad_tensor *y = nn_transformer_forward(l, src, tgt, m[0], m[1], m[2], m[3], m[4], m[5], false);
  test_expect_case_close(ctx, y, k->out, tgt->size, tol, "out", cs);
  for (int i = 0; i < k->ndim; i++) cr_assert_eq(y->shape[i], k->tshape[i], "%s: out shape", cs);
  ad_tensor *gy = test_tensor_from(ctx, dt, k->ndim, k->tshape, k->gy);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, gy)), NULL), AD_OK, "%s",
               ad_last_error(ctx));
  test_expect_case_close(ctx, src->grad, k->dsrc, src->size, tol, "dsrc", cs);
  test_expect_case_close(ctx, tgt->grad, k->dtgt, tgt->size, tol, "dtgt", cs);
  nn_params *p = nn_layer_params(l);
  for (int i = 0; k->d[0] && i < XT_NPARAMS; i++)
    test_expect_case_close(ctx, nn_params_find(p, xt_param_names[i])->grad, k->d[i],
                           xt_param_sizes[i], tol, xt_param_names[i], cs);
  ad_tape_reset(ctx);
  ad_tensor_free(src), ad_tensor_free(tgt), ad_tensor_free(gy);
  for (int i = 0; i < 6; i++) ad_tensor_free(m[i]);
  nn_layer_free(l);
}

static void check_all(ad_dtype dt, double tol) {
  int with_grads = 0;
  for (int i = 0; i < NCASES; i++) {
    const xt_case *k = &xt_cases[i];
    check_case(k, dt, tol, MASK_AS_FIXTURE);
    if (k->masks[1]) {
      check_case(k, dt, tol, MASK_I32);
      check_case(k, dt, tol, MASK_GENERATED);
    }
    with_grads += k->d[0] != NULL;
  }
  cr_assert_geq(with_grads, 3, "the parameters' gradients of three cases");
}

Test(xt, matches_pytorch_f64) { check_all(AD_F64, 1e-12); }

Test(xt, matches_pytorch_f32) { check_all(AD_F32, 1e-5); }

Test(xt, parameters_named_and_ordered_as_pytorch) {
  /* the file is PyTorch's state dict: we have every entry it has, of its
   * shape, in its order, and nothing else */
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_transformer_model_opts o = opts_of(&xt_cases[0], AD_F32);
  nn_layer *l = nn_transformer_new(ctx, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, XT_SAFETENSORS);
  cr_assert_not_null(info, "%s", ad_last_error(ctx));
  cr_assert_eq(info->n, XT_NPARAMS);
  cr_assert_eq(nn_params_count(p), XT_NPARAMS);
  for (int i = 0; i < XT_NPARAMS; i++) {
    cr_assert_str_eq(nn_params_name(p, i), xt_param_names[i], "PyTorch's order");
    const nn_checkpoint_entry *e = nn_checkpoint_info_find(info, xt_param_names[i]);
    cr_assert_not_null(e, "the file lacks %s", xt_param_names[i]);
    ad_tensor *t = nn_params_tensor(p, i);
    cr_assert_eq(e->ndim, t->ndim, "%s", xt_param_names[i]);
    for (int d = 0; d < t->ndim; d++) cr_assert_eq(e->shape[d], t->shape[d], "%s", e->name);
  }
  cr_assert_not_null(nn_params_find(p, "encoder.layers.0.self_attn.in_proj_weight"));
  cr_assert_not_null(nn_params_find(p, "decoder.layers.1.multihead_attn.out_proj.bias"));
  cr_assert_not_null(nn_params_find(p, "encoder.norm.weight"));
  cr_assert_not_null(nn_params_find(p, "decoder.norm.bias"));
  nn_checkpoint_info_free(info);
  /* saved by those names and loaded into a fresh one of other draws */
  const char *path = test_path("xt.safetensors");
  load_torch(l, &xt_cases[0]);
  cr_assert_eq(nn_checkpoint_save(ctx, path, XT_NPARAMS, nn_params_names(p), nn_params_tensors(p)),
               AD_OK, "%s", ad_last_error(ctx));
  nn_layer_free(l);
  ad_rng_seed(&rng, 77);
  l = nn_transformer_new(ctx, &rng, &o);
  p = nn_layer_params(l);
  cr_assert_eq(nn_checkpoint_load(ctx, path, XT_NPARAMS, nn_params_names(p), nn_params_tensors(p)),
               AD_OK, "%s", ad_last_error(ctx));
  const xt_case *k = &xt_cases[0];
  ad_tensor *src = test_tensor_from(ctx, AD_F32, k->ndim, k->sshape, k->src),
            *tgt = test_tensor_from(ctx, AD_F32, k->ndim, k->tshape, k->tgt);
  test_expect_case_close(
      ctx, nn_transformer_forward(l, src, tgt, NULL, NULL, NULL, NULL, NULL, NULL, false), k->out,
      tgt->size, 1e-5, "out", "reloaded");
  ad_tensor_free(src), ad_tensor_free(tgt);
  nn_layer_free(l);
}

Test(xt, in_a_model_under_a_name) {
  /* a custom model holding it as "transformer": "transformer.encoder..." */
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_transformer_model_opts o = opts_of(&xt_cases[0], AD_F32);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add_named(m, "transformer", nn_transformer_new(ctx, &rng, &o)), AD_OK, "%s",
               ad_last_error(ctx));
  nn_params *p = nn_model_params(m);
  cr_assert_eq(nn_params_count(p), XT_NPARAMS);
  for (int i = 0; i < XT_NPARAMS; i++) {
    char want[160];
    snprintf(want, sizeof want, "transformer.%s", xt_param_names[i]);
    cr_assert_str_eq(nn_params_name(p, i), want);
  }
  /* as a Sequential layer it is refused: it needs src and tgt */
  ad_tensor *x = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, XT_E});
  cr_assert_null(nn_model_forward(m, x));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "transformer 'transformer': a transformer needs src and tgt: call "
                    "nn_transformer_forward(l, src, tgt, ...), not nn_layer_forward");
  /* errors inside name the layer, the stack and the layer in it */
  nn_layer *l = nn_model_layer(m, 0);
  ad_tensor *bad = ad_zeros(ctx, AD_I32, 2, (int64_t[]){4, 3});
  cr_assert_null(nn_transformer_forward(l, x, x, bad, NULL, NULL, NULL, NULL, NULL, false));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "transformer 'transformer': transformer_encoder 'encoder': transformer_encoder_layer "
      "'layers.0': multihead_attention 'self_attn': attn_mask [4,3] must be [L, S]");
  cr_assert_null(nn_transformer_forward(l, x, x, NULL, NULL, bad, NULL, NULL, NULL, false));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "transformer 'transformer': transformer_decoder 'decoder': "
                    "transformer_decoder_layer 'layers.0': multihead_attention 'multihead_attn': "
                    "attn_mask [4,3]");
  cr_assert_not_null(nn_transformer_forward(l, x, x, NULL, NULL, NULL, NULL, NULL, NULL, false),
                     "%s", ad_last_error(ctx));
  int64_t shape[AD_MAX_DIMS];
  cr_assert_eq(nn_layer_output_shape(l, shape), 3);
  cr_assert(shape[0] == 4 && shape[1] == 2 && shape[2] == XT_E);
  ad_tensor_free(x), ad_tensor_free(bad);
  nn_model_free(m);
}

/* --------------------------------------------------------------- the mask */

Test(xt, generate_square_subsequent_mask) {
  ad_dtype dts[2] = {AD_F32, AD_F64};
  for (int d = 0; d < 2; d++) {
    ad_tensor *mk = nn_transformer_generate_square_subsequent_mask(ctx, 5, dts[d]);
    cr_assert_not_null(mk, "%s", ad_last_error(ctx));
    cr_assert(mk->ndim == 2 && mk->shape[0] == 5 && mk->shape[1] == 5 && mk->dtype == dts[d]);
    for (int64_t i = 0; i < 25; i++) {
      double g = ad_tensor_get(mk, i);
      cr_assert(g == xt_gen_mask5[i], "[%lld] = %g, PyTorch %g", (long long)i, g, xt_gen_mask5[i]);
    }
    ad_tensor_free(mk);
  }
  ad_tensor *one = nn_transformer_generate_square_subsequent_mask(ctx, 1, AD_F32);
  cr_assert(one && one->size == 1 && ad_tensor_get(one, 0) == 0);
  ad_tensor *none = nn_transformer_generate_square_subsequent_mask(ctx, 0, AD_F64);
  cr_assert(none && none->ndim == 2 && none->shape[0] == 0 && none->size == 0, "%s",
            ad_last_error(ctx));
  ad_tensor_free(one), ad_tensor_free(none);
  cr_assert_null(nn_transformer_generate_square_subsequent_mask(ctx, -1, AD_F32));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "nn_transformer_generate_square_subsequent_mask: sz -1 must be in [0, 2^20]");
  cr_assert_null(
      nn_transformer_generate_square_subsequent_mask(ctx, (INT64_C(1) << 20) + 1, AD_F32));
  expect_status_msg(ctx, AD_ERR_ARG, "sz 1048577 must be in");
  cr_assert_null(nn_transformer_generate_square_subsequent_mask(ctx, 3, AD_I32));
  expect_status_msg(ctx, AD_ERR_DTYPE,
                    "nn_transformer_generate_square_subsequent_mask: dtype must be f32 or f64, "
                    "got i32");
  cr_assert_null(nn_transformer_generate_square_subsequent_mask(NULL, 3, AD_F32));
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

/* ------------------------------------------------------- initialisation */

Test(xt, initialised_as_pytorch) {
  /* _reset_parameters: Xavier uniform on every parameter of 2+ dims, drawn
   * per layer; the biases as the submodules made them (the linears' equal
   * in every copy, the attentions' zero), the norms ones and zeros */
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  nn_transformer_model_opts o = {.d_model = 16,
                                 .nhead = 4,
                                 .num_encoder_layers = 3,
                                 .num_decoder_layers = 3,
                                 .dim_feedforward = 32,
                                 .dtype = AD_F64};
  nn_layer *l = nn_transformer_new(ctx, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  double sq = 0;
  int64_t nw = 0;
  for (int i = 0; i < nn_params_count(p); i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    const char *name = nn_params_name(p, i);
    if (t->ndim > 1) {
      double bound = sqrt(6.0 / (double)(t->shape[0] + t->shape[1])), mx = 0;
      for (int64_t j = 0; j < t->size; j++) {
        double v = ad_tensor_get(t, j);
        mx = fmax(mx, fabs(v));
        sq += v * v / (bound * bound);
      }
      nw += t->size;
      cr_assert(mx <= bound && mx > 0.85 * bound, "%s: max |w| %g, Xavier's bound %g", name, mx,
                bound);
    } else if (strstr(name, "norm") && strstr(name, "weight")) {
      for (int64_t j = 0; j < t->size; j++) cr_assert_eq(ad_tensor_get(t, j), 1, "%s", name);
    } else if (strstr(name, "attn") || strstr(name, "norm")) {
      for (int64_t j = 0; j < t->size; j++) cr_assert_eq(ad_tensor_get(t, j), 0, "%s", name);
    } else { /* linear1.bias within 1/sqrt(16), linear2.bias within 1/sqrt(32) */
      double k = strstr(name, "linear1") ? 0.25 : 1 / sqrt(32.0), mx = 0;
      for (int64_t j = 0; j < t->size; j++) mx = fmax(mx, fabs(ad_tensor_get(t, j)));
      cr_assert(mx <= k && mx > 0.5 * k, "%s: max %g, bound %g", name, mx, k);
    }
  }
  /* uniform on [-1, 1]: E u^2 = 1/3 */
  cr_assert(fabs(sq / (double)nw - 1.0 / 3) < 0.02, "mean (w / bound)^2 = %g over %lld",
            sq / (double)nw, (long long)nw);
  /* out_proj.weight is Xavier's (bound sqrt(6 / 32) = 0.43), not nn.Linear's
   * 1 / sqrt(16) = 0.25 */
  ad_tensor *ow = nn_params_find(p, "decoder.layers.2.multihead_attn.out_proj.weight");
  double mx = 0;
  for (int64_t j = 0; j < ow->size; j++) mx = fmax(mx, fabs(ad_tensor_get(ow, j)));
  cr_assert_gt(mx, 0.3);
  /* the weights drawn per layer; the linears' biases equal, deep copies */
  const char *pairs[][2] = {
      {"encoder.layers.0.linear1.weight", "encoder.layers.1.linear1.weight"},
      {"decoder.layers.0.self_attn.in_proj_weight", "decoder.layers.2.self_attn.in_proj_weight"},
      {"encoder.layers.0.linear2.bias", "encoder.layers.2.linear2.bias"},
      {"decoder.layers.0.linear1.bias", "decoder.layers.1.linear1.bias"}};
  for (int i = 0; i < 4; i++) {
    ad_tensor *a = nn_params_find(p, pairs[i][0]), *b = nn_params_find(p, pairs[i][1]);
    cr_assert(a && b && a != b);
    bool same = true;
    for (int64_t j = 0; j < a->size; j++) same = same && ad_tensor_get(a, j) == ad_tensor_get(b, j);
    cr_assert_eq(same, i >= 2, "%s and %s", pairs[i][0], pairs[i][1]);
  }
  nn_layer_free(l);
}

Test(xt, defaults_and_description) {
  /* zero options are PyTorch's (but d_model, to keep the test small):
   * nhead 8, 6 + 6 layers, dim_feedforward 2048 */
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  char buf[512];
  nn_layer *l = nn_transformer_new(ctx, &rng, &(nn_transformer_model_opts){.d_model = 16});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(l), "transformer");
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf), "transformer(d_model=16, nhead=8)");
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), 6 * 12 + 6 * 18 + 4);
  ad_tensor *w1 = nn_params_find(p, "decoder.layers.5.linear1.weight");
  cr_assert(w1 && w1->shape[0] == 2048 && w1->shape[1] == 16 && w1->dtype == AD_F32);
  cr_assert_null(nn_params_find(p, "encoder.layers.6.linear1.weight"));
  nn_layer_free(l);
  nn_transformer_model_opts o = {.d_model = 8,
                                 .nhead = 2,
                                 .num_encoder_layers = 2,
                                 .num_decoder_layers = 1,
                                 .dim_feedforward = 16,
                                 .dropout = 0.25,
                                 .activation = NN_ACT_GELU,
                                 .layer_norm_eps = 1e-6,
                                 .batch_first = true,
                                 .norm_first = true};
  l = nn_transformer_new(ctx, &rng, &o);
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "transformer(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=1, "
                   "dim_feedforward=16, dropout=0.25, activation=gelu, layer_norm_eps=1e-06, "
                   "batch_first=True, norm_first=True)");
  /* layer_norm_eps reaches the stacks' final norms (nn.Transformer's) */
  nn_layer_free(l);
}

/* -------------------------------------------------------------- dropout */

static nn_layer *drop_module(uint64_t seed) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_transformer_model_opts o = opts_of(&xt_cases[0], AD_F64);
  o.dropout = 0.3, o.seed = seed;
  nn_layer *l = nn_transformer_new(ctx, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  load_torch(l, &xt_cases[0]);
  return l;
}

static ad_tensor *run(nn_layer *l, ad_tensor *src, ad_tensor *tgt, bool training) {
  return nn_transformer_forward(l, src, tgt, NULL, NULL, NULL, NULL, NULL, NULL, training);
}

Test(xt, dropout_in_training_only_reproducible_and_rolled_back) {
  const xt_case *k = &xt_cases[0];
  nn_layer *a = drop_module(7), *b = drop_module(7), *c = drop_module(8);
  ad_tensor *src = test_tensor_from(ctx, AD_F64, k->ndim, k->sshape, k->src),
            *tgt = test_tensor_from(ctx, AD_F64, k->ndim, k->tshape, k->tgt);
  ad_tensor *eval = run(a, src, tgt, false);
  test_expect_case_close(ctx, eval, k->out, tgt->size, 1e-12, "eval", "dropout 0.3");
  ad_tensor *ya = run(a, src, tgt, true), *yb = run(b, src, tgt, true),
            *yc = run(c, src, tgt, true);
  cr_assert_eq(test_max_diff(ctx, ya, yb), 0, "same seed, same masks");
  cr_assert_gt(test_max_diff(ctx, ya, yc), 1e-3, "another seed");
  cr_assert_gt(test_max_diff(ctx, ya, eval), 1e-3, "training differs from evaluation");
  cr_assert_eq(test_max_diff(ctx, run(a, src, tgt, false), eval), 0, "evaluation draws nothing");
  ad_tensor *ya2 = run(a, src, tgt, true);
  cr_assert_gt(test_max_diff(ctx, ya, ya2), 1e-3, "the next call draws new masks");
  /* a call that fails in the decoder (after the encoder's draws) takes no
   * draws: b's next training call is a's */
  ad_tensor *bad = ad_zeros(ctx, AD_I32, 2, (int64_t[]){XT_T, XT_T}); /* memory_mask [T, S] */
  cr_assert_null(nn_transformer_forward(b, src, tgt, NULL, NULL, bad, NULL, NULL, NULL, true));
  expect_status_msg(ctx, AD_ERR_SHAPE, "multihead_attention 'multihead_attn': attn_mask [4,4]");
  cr_assert_eq(test_max_diff(ctx, ya2, run(b, src, tgt, true)), 0);
  ad_tensor_free(src), ad_tensor_free(tgt), ad_tensor_free(bad);
  nn_layer_free(a), nn_layer_free(b), nn_layer_free(c);
}

/* ---------------------------------------------------------- derivatives */

typedef struct grad_ud {
  nn_layer *l;
  ad_tensor *tmask, *mkpm;
  const char *names[64]; /* of in[2..] */
} grad_ud;

/* The transformer on src in[0] and tgt in[1], its parameters taken from
 * the rest (gradcheck's numeric side passes perturbed copies). */
static ad_tensor *module_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c;
  const grad_ud *u = ud;
  nn_params *p = nn_layer_params(u->l);
  for (int i = 2; i < n; i++) {
    ad_tensor *t = nn_params_find(p, u->names[i - 2]);
    if (in[i] != t)
      for (int64_t j = 0; j < t->size; j++) ad_tensor_set(t, j, ad_tensor_get(in[i], j));
  }
  return nn_transformer_forward(u->l, in[0], in[1], NULL, u->tmask, NULL, NULL, NULL, u->mkpm,
                                false);
}

/* d_model 4, nhead 2, 1 + 1 layers, dim_feedforward 6, float64, batch
 * first: src [2, 3, 4], tgt [2, 2, 4] and every parameter against central
 * differences, with a causal tgt_mask and a padded memory key. */
static void check_gradients(bool norm_first, nn_act act) {
  ad_rng rng;
  ad_rng_seed(&rng, 21);
  nn_transformer_model_opts o = {.d_model = 4,
                                 .nhead = 2,
                                 .num_encoder_layers = 1,
                                 .num_decoder_layers = 1,
                                 .dim_feedforward = 6,
                                 .activation = act,
                                 .norm_first = norm_first,
                                 .batch_first = true,
                                 .dtype = AD_F64};
  nn_layer *l = nn_transformer_new(ctx, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  for (int i = 0; i < nn_params_count(p); i++) { /* every value its own, away from 0 and 1 */
    ad_tensor *t = nn_params_tensor(p, i);
    bool nw = strstr(nn_params_name(p, i), "norm") && strstr(nn_params_name(p, i), "weight");
    for (int64_t j = 0; j < t->size; j++)
      if (t->ndim == 1) ad_tensor_set(t, j, (nw ? 1 : 0) + 0.3 * (ad_rng_uniform(&rng) - 0.5));
  }
  ad_tensor *src = ad_rand(ctx, &rng, AD_F64, 3, (int64_t[]){2, 3, 4}, -1.5, 1.5);
  ad_tensor *tgt = ad_rand(ctx, &rng, AD_F64, 3, (int64_t[]){2, 2, 4}, -1.5, 1.5);
  grad_ud u = {.l = l,
               .tmask = nn_transformer_generate_square_subsequent_mask(ctx, 2, AD_F64),
               .mkpm = ad_zeros(ctx, AD_I32, 2, (int64_t[]){2, 3})};
  ad_tensor_set(u.mkpm, 4, 1); /* sequence 1: memory key 1 */
  int np = nn_params_count(p);
  cr_assert_leq(np, 64);
  ad_tensor *in[2 + 64] = {src, tgt};
  for (int i = 0; i < np; i++) {
    in[2 + i] = nn_params_tensor(p, i);
    u.names[i] = nn_params_name(p, i);
  }
  ad_tensor_set_requires_grad(src, true);
  ad_tensor_set_requires_grad(tgt, true);
  ad_check_opts co = {.eps = 1e-6, .atol = 1e-7, .rtol = 1e-6, .seed = 5};
  ad_check_report r;
  cr_assert_eq(ad_gradcheck(ctx, module_fn, &u, 2 + np, in, &co, &r), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(r.passed, "gradcheck: input %d [%lld] analytic %g numeric %g", r.input,
            (long long)r.index, r.analytic, r.numeric);
  cr_assert_eq(r.checked, src->size + tgt->size + nn_params_numel(p));
  ad_tensor_free(src), ad_tensor_free(tgt), ad_tensor_free(u.tmask), ad_tensor_free(u.mkpm);
  nn_layer_free(l);
}

Test(xt, gradcheck_post_norm_relu) { check_gradients(false, NN_ACT_RELU); }

/* The transformer on src in[0] and tgt in[1] only. */
static ad_tensor *inputs_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c, (void)n;
  const grad_ud *u = ud;
  return nn_transformer_forward(u->l, in[0], in[1], NULL, u->tmask, NULL, NULL, NULL, u->mkpm,
                                false);
}

Test(xt, gradgradcheck_src_tgt) {
  /* second derivatives in src and tgt, through both stacks (gelu, smooth;
   * the parameters are read by the layer, not passed, so they stay) */
  ad_rng rng;
  ad_rng_seed(&rng, 23);
  nn_transformer_model_opts o = {.d_model = 4,
                                 .nhead = 2,
                                 .num_encoder_layers = 1,
                                 .num_decoder_layers = 1,
                                 .dim_feedforward = 6,
                                 .activation = NN_ACT_GELU,
                                 .norm_first = true,
                                 .dtype = AD_F64};
  nn_layer *l = nn_transformer_new(ctx, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  ad_tensor *src = ad_rand(ctx, &rng, AD_F64, 3, (int64_t[]){3, 2, 4}, -1.5, 1.5);
  ad_tensor *tgt = ad_rand(ctx, &rng, AD_F64, 3, (int64_t[]){2, 2, 4}, -1.5, 1.5);
  grad_ud u = {.l = l, .tmask = nn_transformer_generate_square_subsequent_mask(ctx, 2, AD_F64)};
  ad_tensor_set_requires_grad(src, true);
  ad_tensor_set_requires_grad(tgt, true);
  ad_tensor *in[2] = {src, tgt};
  ad_check_opts co = {.eps = 1e-5, .atol = 1e-6, .rtol = 1e-5, .seed = 9};
  ad_check_report r;
  cr_assert_eq(ad_gradgradcheck(ctx, inputs_fn, &u, 2, in, &co, &r), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(r.passed, "gradgradcheck: input %d [%lld] analytic %g numeric %g", r.input,
            (long long)r.index, r.analytic, r.numeric);
  cr_assert_eq(r.checked, src->size + tgt->size);
  ad_tensor_free(src), ad_tensor_free(tgt), ad_tensor_free(u.tmask);
  nn_layer_free(l);
}

Test(xt, gradcheck_pre_norm_gelu) { check_gradients(true, NN_ACT_GELU); }

/* --------------------------------------------------------------- misuse */

Test(xt, bad_input) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_layer *l = nn_transformer_new(
      ctx, &rng, &(nn_transformer_model_opts){.d_model = 6, .nhead = 2, .dim_feedforward = 8});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  ad_tensor *src = ad_ones(ctx, AD_F32, 3, (int64_t[]){5, 2, 6});
  ad_tensor *tgt = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, 6});
  ad_tensor *t3 = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 3, 6});
  ad_tensor *t5 = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, 5});
  ad_tensor *tu = ad_ones(ctx, AD_F32, 2, (int64_t[]){4, 6});
  ad_tensor *t1 = ad_ones(ctx, AD_F32, 1, (int64_t[]){6});
  ad_tensor *td = ad_ones(ctx, AD_F64, 3, (int64_t[]){4, 2, 6});
  ad_tensor *t0 = ad_ones(ctx, AD_F32, 3, (int64_t[]){0, 2, 6});
  const struct {
    ad_tensor *s, *t;
    ad_status st;
    const char *msg;
  } bad[] = {
      {NULL, tgt, AD_ERR_NULL, "transformer: src is NULL"},
      {src, NULL, AD_ERR_NULL, "transformer: tgt is NULL"},
      {src, t3, AD_ERR_SHAPE,
       "transformer: the batch number of src [5,2,6] and tgt [4,3,6] must be equal (dim 1)"},
      {src, t5, AD_ERR_SHAPE,
       "transformer: the feature number of src [5,2,6] and tgt [4,2,5] must be equal to d_model "
       "6"},
      {t5, tgt, AD_ERR_SHAPE, "the feature number of src [4,2,5] and tgt [4,2,6]"},
      {src, tu, AD_ERR_SHAPE,
       "transformer: src [5,2,6] and tgt [4,6] must be both batched (3-D) or both unbatched "
       "(2-D)"},
      {t1, t1, AD_ERR_SHAPE, "transformer: src [6] and tgt [6] must be both batched"},
      {src, td, AD_ERR_DTYPE,
       "transformer: transformer_decoder 'decoder': transformer_decoder_layer 'layers.0': tgt "
       "is f64; the layer is f32"},
      {td, tgt, AD_ERR_DTYPE,
       "transformer_encoder 'encoder': transformer_encoder_layer "
       "'layers.0': src is f64"},
      {t0, tgt, AD_ERR_SHAPE, "transformer_encoder_layer 'layers.0': src [0,2,6] must be"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    cr_assert_null(run(l, bad[i].s, bad[i].t, false), "case %zu", i);
    expect_status_msg(ctx, bad[i].st, bad[i].msg);
  }
  /* batch_first: the batch is dim 0 */
  nn_layer *bf =
      nn_transformer_new(ctx, &rng,
                         &(nn_transformer_model_opts){
                             .d_model = 6, .nhead = 2, .dim_feedforward = 8, .batch_first = true});
  ad_tensor *sb = ad_ones(ctx, AD_F32, 3, (int64_t[]){2, 5, 6}),
            *tb = ad_ones(ctx, AD_F32, 3, (int64_t[]){3, 4, 6}),
            *tb2 = ad_ones(ctx, AD_F32, 3, (int64_t[]){2, 4, 6});
  cr_assert_null(run(bf, sb, tb, false));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "the batch number of src [2,5,6] and tgt [3,4,6] must be equal (dim 0, "
                    "batch_first)");
  cr_assert_null(run(bf, sb, tgt, false)); /* tgt [4,2,6] is N = 4 here */
  expect_status_msg(ctx, AD_ERR_SHAPE, "the batch number of src [2,5,6] and tgt [4,2,6]");
  ad_tensor *yb = run(bf, sb, tb2, false);
  cr_assert(yb && yb->shape[0] == 2 && yb->shape[1] == 4, "%s", ad_last_error(ctx));
  ad_tensor_free(sb), ad_tensor_free(tb), ad_tensor_free(tb2);
  nn_layer_free(bf);
  /* a freed tensor, one of another context, a mask of another context */
  ad_tensor_free(td);
  cr_assert_null(run(l, src, td, false));
  expect_status_msg(ctx, AD_ERR_STATE, "transformer: tgt was freed");
  ad_ctx *other = ad_ctx_new();
  ad_tensor *os = ad_ones(other, AD_F32, 3, (int64_t[]){5, 2, 6});
  ad_tensor *om = ad_zeros(other, AD_F32, 2, (int64_t[]){5, 5});
  cr_assert_null(run(l, os, tgt, false));
  expect_status_msg(ctx, AD_ERR_ARG, "transformer: src belongs to another context");
  cr_assert_null(nn_transformer_forward(l, src, tgt, om, NULL, NULL, NULL, NULL, NULL, false));
  expect_status_msg(ctx, AD_ERR_ARG, "another context");
  ad_ctx_free(other);
  ad_tensor *fm = ad_zeros(ctx, AD_F32, 2, (int64_t[]){4, 4});
  ad_tensor_free(fm);
  cr_assert_null(nn_transformer_forward(l, src, tgt, NULL, fm, NULL, NULL, NULL, NULL, false));
  expect_status_msg(ctx, AD_ERR_STATE, "was freed");
  /* another kind of layer; NULL l */
  nn_layer *enc = nn_transformer_encoder_layer_new(ctx, 6, 2, &rng, NULL);
  cr_assert_null(run(enc, src, tgt, false));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "transformer: layer transformer_encoder_layer is not a transformer");
  nn_layer_free(enc);
  cr_assert_null(run(NULL, src, tgt, false));
  /* a NULL input made by an earlier failure keeps that failure's message */
  cr_assert_null(ad_matmul(ctx, src, src, false, false));
  char earlier[256];
  snprintf(earlier, sizeof earlier, "%s", ad_last_error(ctx));
  cr_assert_null(run(l, NULL, tgt, false));
  cr_assert_str_eq(ad_last_error(ctx), earlier);
  ad_clear_error(ctx);
  /* a key padding mask of the wrong length, deep in the decoder */
  ad_tensor *kpm = ad_zeros(ctx, AD_I32, 2, (int64_t[]){2, 4}); /* tgt's, given for memory */
  cr_assert_null(nn_transformer_forward(l, src, tgt, NULL, NULL, NULL, NULL, NULL, kpm, false));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "multihead_attention 'multihead_attn': key_padding_mask [2,4] must be [N, S] "
                    "= [2,5]");
  /* the layer is sane after the errors; an unbatched pair runs */
  ad_tensor *su = ad_ones(ctx, AD_F32, 2, (int64_t[]){5, 6});
  cr_assert_not_null(run(l, src, tgt, false), "%s", ad_last_error(ctx));
  cr_assert_not_null(run(l, su, tu, false), "%s", ad_last_error(ctx));
  ad_tensor *all[] = {src, tgt, t3, t5, tu, t1, t0, kpm, su};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_tensor_free(all[i]);
  nn_layer_free(l);
}

Test(xt, bad_construction) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  const struct {
    nn_transformer_model_opts o;
    ad_status st;
    const char *msg;
  } bad[] = {
      {{.d_model = 8, .nhead = 3},
       AD_ERR_ARG,
       "transformer: d_model 8 and nhead 3 must be >= 1, d_model at most 2^32, and nhead must "
       "divide d_model"},
      {{.d_model = -8, .nhead = 2}, AD_ERR_ARG, "transformer: d_model -8 and nhead 2"},
      {{.d_model = 8, .nhead = -2}, AD_ERR_ARG, "transformer: d_model 8 and nhead -2"},
      {{.d_model = 8, .nhead = 2, .num_encoder_layers = -1},
       AD_ERR_ARG,
       "transformer: num_encoder_layers -1 and num_decoder_layers 6 must be in [1, 65536]"},
      {{.d_model = 8, .nhead = 2, .num_decoder_layers = 65537},
       AD_ERR_ARG,
       "num_decoder_layers 65537 must be in"},
      {{.d_model = 8, .nhead = 2, .dim_feedforward = -1},
       AD_ERR_ARG,
       "transformer: dim_feedforward -1"},
      {{.d_model = 8, .nhead = 2, .dropout = 1},
       AD_ERR_ARG,
       "transformer: dropout 1 is outside [0, 1)"},
      {{.d_model = 8, .nhead = 2, .dropout = NAN}, AD_ERR_ARG, "transformer: dropout nan"},
      {{.d_model = 8, .nhead = 2, .dropout = 0.2, .no_dropout = true},
       AD_ERR_ARG,
       "given with no_dropout"},
      {{.d_model = 8, .nhead = 2, .layer_norm_eps = -1},
       AD_ERR_ARG,
       "transformer: layer_norm_eps -1"},
      {{.d_model = 8, .nhead = 2, .activation = NN_ACT_TANH},
       AD_ERR_ARG,
       "transformer: activation tanh must be relu or gelu"},
      {{.d_model = 8, .nhead = 2, .dtype = AD_I32},
       AD_ERR_DTYPE,
       "transformer: parameters must be float, got i32"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    cr_assert_null(nn_transformer_new(ctx, &rng, &bad[i].o), "case %zu", i);
    expect_status_msg(ctx, bad[i].st, bad[i].msg);
  }
  cr_assert_null(nn_transformer_new(ctx, NULL, &(nn_transformer_model_opts){.d_model = 8}));
  expect_status_msg(ctx, AD_ERR_NULL, "transformer: rng is NULL");
  cr_assert_null(nn_transformer_new(NULL, &rng, NULL));
  cr_assert_eq(LIVE_BLOCKS(), live_base, "a refused transformer leaks nothing");
  /* no_dropout and a model of one layer each build */
  nn_layer *l = nn_transformer_new(ctx, &rng,
                                   &(nn_transformer_model_opts){.d_model = 4,
                                                                .nhead = 1,
                                                                .num_encoder_layers = 1,
                                                                .num_decoder_layers = 1,
                                                                .dim_feedforward = 4,
                                                                .no_dropout = true});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  char buf[256];
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "transformer(d_model=4, nhead=1, num_encoder_layers=1, num_decoder_layers=1, "
                   "dim_feedforward=4, dropout=0.0)");
  nn_layer_free(l);
}
