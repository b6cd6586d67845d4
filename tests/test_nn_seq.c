/* test_nn_seq.c: the Embedding and LayerNorm layers and the sequence
 * cross-entropy against PyTorch (tests/fixtures/torch_seq.safetensors,
 * written by tools/gen_seq_fixtures.py): PyTorch's parameter names and
 * initialisation, outputs and gradients in float64 (1e-10) and float32
 * (1e-5), a small sequence model loaded from a PyTorch state dict, and the
 * error messages. */
#include "nn.h"
#include "nn_io.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#define SEQ_FIXTURE "tests/fixtures/torch_seq.safetensors"

TEST_CTX_SUITE(nn_seq);

#define expect_error(...) test_expect_error(ctx, __VA_ARGS__)

/* The fixture's tensor name as a new persistent tensor of dtype dt (its
 * float64 values rounded for AD_F32; indices stay AD_I32). */
static ad_tensor *fx(const char *name, ad_dtype dt) {
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, SEQ_FIXTURE);
  cr_assert_not_null(info, "%s", ad_last_error(ctx));
  const nn_checkpoint_entry *e = nn_checkpoint_info_find(info, name);
  cr_assert_not_null(e, "fixture has no %s", name);
  ad_tensor *t = ad_zeros(ctx, e->dtype, e->ndim, e->shape);
  cr_assert_not_null(t);
  nn_checkpoint_info_free(info);
  cr_assert_eq(nn_checkpoint_load(ctx, SEQ_FIXTURE, 1, &name, &t), AD_OK, "%s", ad_last_error(ctx));
  if (t->dtype == AD_I32 || t->dtype == dt) return t;
  ad_tensor *c = ad_zeros(ctx, dt, t->ndim, t->shape);
  cr_assert_eq(ad_tensor_copy_data(c, t), AD_OK);
  ad_tensor_free(t);
  return c;
}

/* t (any dtype) against the fixture's name, elementwise within tol
 * relative to max(1, |want|). */
static void expect_fx(const ad_tensor *t, const char *name, double tol) {
  ad_tensor *want = fx(name, AD_F64);
  cr_assert_not_null(t, "%s: no tensor (%s)", name, ad_last_error(ctx));
  cr_assert_eq(t->size, want->size, "%s: %lld elements, want %lld", name, (long long)t->size,
               (long long)want->size);
  for (int k = 0; k < want->ndim; k++)
    cr_assert_eq(t->shape[k], want->shape[k], "%s dim %d", name, k);
  for (int64_t i = 0; i < want->size; i++) {
    double g = ad_tensor_get(t, i), w = ad_tensor_get(want, i);
    QUICK_ASSERT(test_close(g, w, tol * fmax(1.0, fabs(w))), "%s[%lld] = %.17g, PyTorch %.17g",
                 name, (long long)i, g, w);
  }
  ad_tensor_free(want);
}

static double tol_of(ad_dtype dt) { return dt == AD_F64 ? 1e-10 : 1e-5; }

/* ------------------------------------------------------------ embedding */

static void embedding_vs_torch(ad_dtype dt) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_embedding_opts o = {.padding = true, .padding_idx = 0, .dtype = dt};
  nn_layer *l = nn_embedding_new(ctx, 7, 4, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(l), "embedding");
  ad_tensor *w = nn_params_find(nn_layer_params(l), "weight");
  cr_assert_not_null(w, "the parameter is PyTorch's \"weight\"");
  cr_assert_eq(nn_params_count(nn_layer_params(l)), 1);
  ad_tensor *src = fx("emb.weight", dt), *idx = fx("emb.idx", dt), *seed = fx("emb.seed", dt);
  cr_assert_eq(ad_tensor_copy_data(w, src), AD_OK);
  ad_tensor *y = nn_layer_forward(l, idx, true);
  expect_fx(y, "emb.out", tol_of(dt));
  cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s", ad_last_error(ctx));
  expect_fx(w->grad, "emb.grad", tol_of(dt));
  for (int j = 0; j < 4; j++) cr_assert_eq(ad_tensor_get(w->grad, j), 0.0, "padding row");
  ad_tape_reset(ctx);
  nn_layer_free(l);
  ad_tensor_free(src);
  ad_tensor_free(idx);
  ad_tensor_free(seed);
}

Test(nn_seq, embedding_matches_torch) {
  embedding_vs_torch(AD_F64);
  embedding_vs_torch(AD_F32);
}

/* N(0, 1) as PyTorch, the padding row (here -1: the last) zeroed. */
Test(nn_seq, embedding_init_is_torch_default) {
  ad_rng rng;
  ad_rng_seed(&rng, 2);
  nn_embedding_opts o = {.padding = true, .padding_idx = -1};
  nn_layer *l = nn_embedding_new(ctx, 500, 16, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  ad_tensor *w = nn_params_find(nn_layer_params(l), "weight");
  cr_assert_eq(w->dtype, AD_F32);
  cr_assert(w->ndim == 2 && w->shape[0] == 500 && w->shape[1] == 16);
  double s = 0, q = 0;
  for (int64_t i = 0; i < 499 * 16; i++) {
    double v = ad_tensor_get(w, i);
    s += v;
    q += v * v;
  }
  double mean = s / (499 * 16), sd = sqrt(q / (499 * 16) - mean * mean);
  cr_assert(fabs(mean) < 0.05 && fabs(sd - 1) < 0.05, "mean %g, std %g", mean, sd);
  for (int j = 0; j < 16; j++) cr_assert_eq(ad_tensor_get(w, 499 * 16 + j), 0.0);
  nn_layer_free(l);
}

/* ----------------------------------------------------------- layer_norm */

static void layer_norm_vs_torch(ad_dtype dt) {
  int64_t ns[2] = {3, 4};
  nn_layer_norm_opts o = {.dtype = dt};
  nn_layer *l = nn_layer_norm_new(ctx, 2, ns, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(l), "layer_norm");
  nn_params *p = nn_layer_params(l);
  ad_tensor *w = nn_params_find(p, "weight"), *b = nn_params_find(p, "bias");
  cr_assert(w && b && nn_params_count(p) == 2, "parameters \"weight\" and \"bias\"");
  for (int64_t i = 0; i < 12; i++) /* PyTorch's ones and zeros */
    cr_assert(ad_tensor_get(w, i) == 1 && ad_tensor_get(b, i) == 0);
  ad_tensor *sw = fx("ln.weight", dt), *sb = fx("ln.bias", dt), *x = fx("ln.x", dt);
  ad_tensor *seed = fx("ln.seed", dt);
  ad_tensor_copy_data(w, sw);
  ad_tensor_copy_data(b, sb);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = nn_layer_forward(l, x, false);
  expect_fx(y, "ln.out", tol_of(dt));
  cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s", ad_last_error(ctx));
  expect_fx(x->grad, "ln.grad_x", tol_of(dt));
  expect_fx(w->grad, "ln.grad_weight", tol_of(dt));
  expect_fx(b->grad, "ln.grad_bias", tol_of(dt));
  ad_tape_reset(ctx);
  nn_layer_free(l);
  ad_tensor *t[4] = {sw, sb, x, seed};
  for (int k = 0; k < 4; k++) ad_tensor_free(t[k]);
}

Test(nn_seq, layer_norm_matches_torch) {
  layer_norm_vs_torch(AD_F64);
  layer_norm_vs_torch(AD_F32);
}

/* ------------------------------------------- a model from a state dict */

/* Embedding(7, 4, padding_idx=0) -> LayerNorm(4) -> Linear(4, 5) on token
 * ids [3, 5], loaded from PyTorch's state dict by its names; the loss over
 * the [N, T, C] logits with -100 at padded steps. */
static void model_vs_torch(ad_dtype dt) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t n4 = 4;
  nn_model *m = nn_sequential_new(ctx);
  nn_embedding_opts eo = {.padding = true, .padding_idx = 0, .dtype = dt};
  nn_layer_norm_opts lo = {.dtype = dt};
  nn_dense_opts dop = {.dtype = dt};
  cr_assert_eq(nn_model_add(m, nn_embedding_new(ctx, 7, 4, &rng, &eo)), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(nn_model_add(m, nn_layer_norm_new(ctx, 1, &n4, &lo)), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 4, 5, &rng, &dop)), AD_OK, "%s",
               ad_last_error(ctx));
  nn_params *p = nn_model_params(m);
  static const char *const names[5] = {"0.weight", "1.weight", "1.bias", "2.weight", "2.bias"};
  cr_assert_eq(nn_params_count(p), 5);
  for (int k = 0; k < 5; k++) {
    cr_assert_str_eq(nn_params_name(p, k), names[k], "PyTorch's state dict names");
    char key[64];
    snprintf(key, sizeof key, "model.%s", names[k]);
    ad_tensor *src = fx(key, dt);
    cr_assert_eq(ad_tensor_copy_data(nn_params_tensor(p, k), src), AD_OK, "%s", key);
    ad_tensor_free(src);
  }
  ad_tensor *x = fx("model.x", dt), *labels = fx("model.labels", dt);
  ad_tensor *logits = nn_model_forward(m, x);
  expect_fx(logits, "model.logits", tol_of(dt));
  nn_sequence_ce_opts co = {.ignore = true, .ignore_index = -100, .class_last = true};
  ad_tensor *sum = nn_sequence_cross_entropy_loss(ctx, logits, labels, NN_SUM, &co);
  expect_fx(sum, "model.loss_sum", tol_of(dt));
  ad_tensor *loss = nn_sequence_cross_entropy_loss(ctx, logits, labels, NN_MEAN, &co);
  expect_fx(loss, "model.loss", tol_of(dt));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  for (int k = 0; k < 5; k++) {
    char key[64];
    snprintf(key, sizeof key, "model.grad.%s", names[k]);
    expect_fx(nn_params_tensor(p, k)->grad, key, tol_of(dt));
  }
  ad_tape_reset(ctx);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(labels);
}

Test(nn_seq, model_from_torch_state_dict) {
  model_vs_torch(AD_F64);
  model_vs_torch(AD_F32);
}

/* The loss on PyTorch's [N, C, T] layout is the class_last one permuted. */
Test(nn_seq, sequence_loss_layouts_agree) {
  ad_rng rng;
  ad_rng_seed(&rng, 4);
  int64_t zs[3] = {2, 3, 5}, ts[2] = {2, 3};
  const int32_t tv[6] = {1, 4, 0, 2, 0, 0};
  ad_tensor *z = ad_rand(ctx, &rng, AD_F64, 3, zs, -2, 2),
            *t = ad_from_data(ctx, AD_I32, 2, ts, tv);
  int perm[3] = {0, 2, 1};
  nn_sequence_ce_opts last = {.ignore = true, .ignore_index = 0, .class_last = true};
  nn_sequence_ce_opts first = {.ignore = true, .ignore_index = 0};
  ad_tensor *a = nn_sequence_cross_entropy_loss(ctx, z, t, NN_MEAN, &last);
  ad_tensor *b = nn_sequence_cross_entropy_loss(ctx, ad_permute(ctx, z, perm), t, NN_MEAN, &first);
  cr_assert(a && b, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_item(a), ad_tensor_item(b));
  ad_tape_reset(ctx);
  ad_tensor_free(z);
  ad_tensor_free(t);
}

/* The softmax cross-entropy's backward without create_graph (one pass per
 * position) gives the recorded one built from ops, for both layouts, f32
 * and f64, the mean with ignored positions and the sum, and a gradient
 * seed other than 1: the same bits. */
Test(nn_seq, sequence_loss_plain_and_recorded_backward_agree) {
  ad_rng rng;
  ad_rng_seed(&rng, 6);
  int64_t zs[3] = {3, 4, 7}, ts[2] = {3, 4};
  const int32_t tv[12] = {1, 6, 0, 2, 3, 3, 5, 0, 4, 2, 6, 1};
  ad_tensor *t = ad_from_data(ctx, AD_I32, 2, ts, tv);
  for (int v = 0; v < 8; v++) {
    ad_dtype dt = v & 1 ? AD_F32 : AD_F64;
    nn_sequence_ce_opts co = {.ignore = v & 2, .ignore_index = 3, .class_last = v & 4};
    nn_reduction red = v & 2 ? NN_MEAN : NN_SUM;
    ad_tensor *z = ad_rand(ctx, &rng, dt, 3, zs, -4, 4), *g[2];
    if (!co.class_last) { /* [N, C, T]: 3 x 7 x 4 */
      int64_t zc[3] = {3, 7, 4};
      ad_tensor_free(z);
      z = ad_rand(ctx, &rng, dt, 3, zc, -4, 4);
    }
    ad_tensor_set_requires_grad(z, true);
    ad_tensor *seed = ad_scalar(ctx, dt, 0.75);
    for (int k = 0; k < 2; k++) {
      ad_tensor *l = nn_sequence_cross_entropy_loss(ctx, z, t, red, &co);
      cr_assert_not_null(l, "%s", ad_last_error(ctx));
      cr_assert_eq(ad_grad(ctx, l, seed, 1, &z, &g[k], k == 1), AD_OK, "%s", ad_last_error(ctx));
    }
    cr_assert_eq(g[0]->size, z->size);
    bool nonzero = false;
    for (int64_t i = 0; i < z->size; i++) {
      double a = ad_tensor_get(g[0], i), b = ad_tensor_get(g[1], i);
      cr_assert(a == b, "variant %d element %lld: %.17g against recorded %.17g", v, (long long)i, a,
                b);
      nonzero |= a != 0;
    }
    cr_assert(nonzero);
    ad_tape_reset(ctx);
    ad_tensor_free(z);
  }
  ad_tensor_free(t);
}

/* ------------------------------------------------------------ bad input */

Test(nn_seq, bad_input) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  cr_assert_null(nn_embedding_new(ctx, 0, 4, &rng, NULL));
  expect_error(AD_ERR_ARG, "embedding", "num_embeddings 0", NULL);
  nn_embedding_opts bad_pad = {.padding = true, .padding_idx = 7};
  cr_assert_null(nn_embedding_new(ctx, 7, 4, &rng, &bad_pad));
  expect_error(AD_ERR_ARG, "embedding", "padding_idx 7", "-7..6", NULL);
  cr_assert_null(nn_embedding_new(ctx, 7, 4, NULL, NULL));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_NULL, "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  int64_t n4 = 4, n0 = 0;
  cr_assert_null(nn_layer_norm_new(ctx, 1, &n0, NULL));
  expect_error(AD_ERR_ARG, "layer_norm", "normalized_shape", NULL);
  cr_assert_null(nn_layer_norm_new(ctx, 1, NULL, NULL));
  expect_error(AD_ERR_NULL, "layer_norm", "normalized_shape", NULL);
  nn_layer_norm_opts neg = {.eps = -1};
  cr_assert_null(nn_layer_norm_new(ctx, 1, &n4, &neg));
  expect_error(AD_ERR_ARG, "layer_norm", "eps -1", NULL);

  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_embedding_new(ctx, 10, 4, &rng, NULL)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_layer_norm_new(ctx, 1, &n4, NULL)), AD_OK);
  int64_t is[2] = {2, 3};
  const int32_t bad[6] = {1, 2, 3, 4, 10, 0};
  ad_tensor *ib = ad_from_data(ctx, AD_I32, 2, is, bad), *xf = ad_zeros(ctx, AD_F32, 2, is);
  cr_assert_null(nn_model_forward(m, ib));
  expect_error(AD_ERR_ARG, "embedding", "index 10", "position 4", "[1,1]", "vocabulary of 10",
               NULL);
  cr_assert_null(nn_model_forward(m, xf));
  expect_error(AD_ERR_DTYPE, "embedding '0'", "must be i32", NULL);
  cr_assert_null(nn_layer_forward(nn_model_layer(m, 1), xf, true));
  expect_error(AD_ERR_SHAPE, "layer_norm '1'", "[2,3]", "normalized shape [4]", NULL);

  int64_t zs[3] = {2, 3, 4}, ts[2] = {2, 4}, tw[2] = {2, 3};
  ad_tensor *z = ad_zeros(ctx, AD_F32, 3, zs), *t = ad_zeros(ctx, AD_I32, 2, ts);
  ad_tensor *twr = ad_zeros(ctx, AD_I32, 2, tw);
  nn_sequence_ce_opts last = {.class_last = true};
  cr_assert_null(nn_sequence_cross_entropy_loss(ctx, z, twr, NN_MEAN, NULL));
  expect_error(AD_ERR_SHAPE, "sequence_cross_entropy_loss", "[2,3,4]", "[2,3]", "[N,C,T...]", NULL);
  cr_assert_null(nn_sequence_cross_entropy_loss(ctx, z, t, NN_MEAN, &last));
  expect_error(AD_ERR_SHAPE, "sequence_cross_entropy_loss", "[2,4]", "[N,T...,C]", NULL);
  cr_assert_null(nn_sequence_cross_entropy_loss(ctx, z, z, NN_MEAN, NULL));
  expect_error(AD_ERR_DTYPE, "sequence_cross_entropy_loss", "labels", "i32", NULL);
  cr_assert_null(nn_sequence_cross_entropy_loss(ctx, z, t, (nn_reduction)7, NULL));
  expect_error(AD_ERR_ARG, "sequence_cross_entropy_loss", "reduction 7", NULL);
  cr_assert_null(nn_sequence_cross_entropy_loss(ctx, z, NULL, NN_MEAN, NULL));
  expect_error(AD_ERR_NULL, "sequence_cross_entropy_loss", "labels", NULL);
  ad_tensor_set(twr, 4, 4); /* class 4 of 4, class_last: named by its place in [N, T] */
  cr_assert_null(nn_sequence_cross_entropy_loss(ctx, z, twr, NN_MEAN, &last));
  expect_error(AD_ERR_ARG,
               "sequence_cross_entropy_loss: label 4 at position 4 ([1,1] of labels [2,3])",
               "outside 0..3", NULL);
  nn_sequence_ce_opts last_ign = {.ignore = true, .ignore_index = -1, .class_last = true};
  cr_assert_null(nn_sequence_cross_entropy_loss(ctx, z, twr, NN_MEAN, &last_ign));
  expect_error(AD_ERR_ARG, "label 4 at position 4", "and is not ignore_index -1", NULL);
  ad_tensor_set(twr, 4, 0);
  ad_tensor_set(t, 5, 3); /* class 3 of 3 */
  cr_assert_null(nn_sequence_cross_entropy_loss(ctx, z, t, NN_MEAN, NULL));
  expect_error(AD_ERR_ARG, "label 3", "0..2", NULL);
  nn_model_free(m);
  ad_tensor *all[5] = {ib, xf, z, t, twr};
  for (int k = 0; k < 5; k++) ad_tensor_free(all[k]);
}

Test(nn_seq, null_arguments) {
  int64_t n = 4;
  cr_assert_null(nn_embedding_new(NULL, 4, 4, NULL, NULL));
  cr_assert_null(nn_layer_norm_new(NULL, 1, &n, NULL));
  cr_assert_null(nn_sequence_cross_entropy_loss(NULL, NULL, NULL, NN_MEAN, NULL));
  cr_assert_null(nn_sequence_cross_entropy_loss(ctx, NULL, NULL, NN_MEAN, NULL));
  expect_error(AD_ERR_NULL, "sequence_cross_entropy_loss", "logits", NULL);
  nn_layer *l = nn_layer_norm_new(ctx, 1, &n, NULL);
  cr_assert_null(nn_layer_forward(l, NULL, true));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_NULL);
  ad_clear_error(ctx);
  nn_layer_free(l);
}
