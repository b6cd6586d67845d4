/* test_nn_state_dict.c: a PyTorch 1.13 state dict of the layer kinds that
 * no other fixture loads from PyTorch (EmbeddingBag, PReLU, Bilinear,
 * ConvTranspose2d and ConvTranspose3d with groups, an RNN without bias,
 * BatchNorm1d with momentum=None, InstanceNorm2d with running statistics),
 * written by hand in PyTorch as a port would be
 * (tests/fixtures/torch_state_dict.safetensors, tests/state_dict_fixtures.h,
 * tools/gen_state_dict_fixtures.py): it loads as a whole, the layers compute
 * PyTorch's outputs in both modes and update the buffers as PyTorch's, and
 * saved back the file holds PyTorch's tensors, byte for byte. */
#include "nn.h"
#include "state_dict_fixtures.h"
#include "test_tensor_of.h"
#include "test_same_tensors.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SD_FIXTURE "tests/fixtures/torch_state_dict.safetensors"

TEST_TMPDIR_SUITE(state_dict, "nn-state-dict");

/* |t[i] - want[i]| <= 1e-10 max(1, |want[i]|) for every element. */
static void expect_close(const ad_tensor *t, const double *want, int64_t n, const char *what) {
  cr_assert_not_null(t, "%s is NULL: %s", what, ad_last_error(ctx));
  cr_assert_eq(t->size, n, "%s has %lld elements, expected %lld", what, (long long)t->size,
               (long long)n);
  for (int64_t i = 0; i < n; i++) {
    double g = ad_tensor_get(t, i);
    QUICK_ASSERT(fabs(g - want[i]) <= 1e-10 * fmax(1, fabs(want[i])),
                 "%s[%lld] = %.17g, PyTorch %.17g", what, (long long)i, g, want[i]);
  }
}

/* The layers are run one by one, never through the model's forward. */
static ad_tensor *no_forward(nn_model *m, ad_tensor *x, void *ud) {
  (void)m, (void)x, (void)ud;
  return NULL;
}

static void add(nn_model *m, const char *name, nn_layer *l) {
  cr_assert_eq(nn_model_add_named(m, name, l), AD_OK, "%s: %s", name, ad_last_error(ctx));
}

/* PyTorch's module of the fixture, layer for layer (with other initial
 * values, which the load replaces). */
static nn_model *kinds_model(void) {
  nn_model *m = nn_model_new(ctx, no_forward, NULL);
  cr_assert_not_null(m);
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  nn_embedding_bag_opts bag = {
      .mode = NN_BAG_MEAN, .padding = true, .padding_idx = 1, .dtype = AD_F64};
  add(m, "bag", nn_embedding_bag_new(ctx, 10, 4, &rng, &bag));
  add(m, "prelu", nn_prelu_new(ctx, 3, 0.2, AD_F64));
  add(m, "bil", nn_bilinear_new(ctx, 3, 2, 4, true, AD_F64, &rng));
  nn_conv2d_opts c2 = {.stride = {2, 1},
                       .padding = {1, 0},
                       .output_padding = {1, 0},
                       .dilation = {1, 2},
                       .groups = 2,
                       .dtype = AD_F64};
  add(m, "convt2d", nn_conv_transpose2d_new(ctx, 4, 6, 3, 2, &rng, &c2));
  nn_conv3d_opts c3 = {.stride = {1, 2, 1}, .groups = 2, .no_bias = true, .dtype = AD_F64};
  add(m, "convt3d", nn_conv_transpose3d_new(ctx, 2, 4, 2, 1, 2, &rng, &c3));
  nn_rnn_opts r = {.num_layers = 2, .no_bias = true, .bidirectional = true, .dtype = AD_F64};
  add(m, "rnn", nn_rnn_new(ctx, NN_RNN_RELU, 3, 4, &rng, &r));
  nn_batch_norm_opts bn = {.cumulative = true, .dtype = AD_F64};
  add(m, "bn", nn_batch_norm1d_new(ctx, 3, &bn));
  nn_instance_norm_opts in = {
      .momentum = 0.3, .affine = true, .track_running_stats = true, .dtype = AD_F64};
  add(m, "inorm", nn_instance_norm2d_new(ctx, 3, &in));
  return m;
}

static ad_tensor *input(int ndim, const int64_t *shape, const double *v) {
  return tensor_of(AD_F64, ndim, shape, v);
}

static ad_tensor *run(nn_model *m, const char *name, ad_tensor *x, bool training) {
  return nn_layer_forward(nn_model_find_layer(m, name), x, training);
}

/* Every tensor of the file is one of the model's and the other way round:
 * the load below is the whole state dict, as load_state_dict(strict=True). */
Test(state_dict, pytorch_names_are_ours_one_for_one) {
  nn_model *m = kinds_model();
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, SD_FIXTURE);
  cr_assert_not_null(info, "%s", ad_last_error(ctx));
  nn_params *p = nn_model_params(m), *b = nn_model_buffers(m);
  cr_assert_eq(info->n, 25);
  cr_assert_eq(nn_params_count(p) + nn_params_count(b), info->n, "%d parameters, %d buffers",
               nn_params_count(p), nn_params_count(b));
  for (int i = 0; i < info->n; i++) {
    const char *name = info->entries[i].name;
    cr_assert(nn_params_find(p, name) || nn_params_find(b, name), "we have no %s", name);
  }
  nn_checkpoint_info_free(info);
  nn_model_free(m);
}

/* Loaded, each layer gives PyTorch's output in evaluation mode. */
Test(state_dict, loaded_layers_compute_pytorchs_outputs) {
  nn_model *m = kinds_model();
  cr_assert_eq(nn_model_load(m, NULL, SD_FIXTURE), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_item(nn_params_find(nn_model_buffers(m), "bn.num_batches_tracked")), 3);
  cr_assert_eq(ad_tensor_item(nn_params_find(nn_model_buffers(m), "inorm.num_batches_tracked")), 0);
  int64_t sbag[2] = {3, 5}, sp[3] = {2, 3, 4}, sb1[2] = {5, 3}, sb2[2] = {5, 2};
  int64_t s2[4] = {2, 4, 3, 4}, s3[5] = {1, 2, 2, 3, 2}, sr[3] = {4, 2, 3}, sbn[3] = {5, 3, 2};
  int64_t sno[4] = {2, 3, 3, 4};
  int32_t idx[15];
  for (int i = 0; i < 15; i++) idx[i] = (int32_t)bag_x[i];
  ad_tensor *xbag = ad_from_data(ctx, AD_I32, 2, sbag, idx);
  expect_close(run(m, "bag", xbag, false), bag_y, 12, "bag");
  expect_close(run(m, "prelu", input(3, sp, prelu_x), false), prelu_y, 24, "prelu");
  expect_close(nn_bilinear_forward(nn_model_find_layer(m, "bil"), input(2, sb1, bil_x),
                                   input(2, sb2, bil2_x)),
               bil_y, 20, "bil");
  expect_close(run(m, "convt2d", input(4, s2, convt2d_x), false), convt2d_y, 432, "convt2d");
  expect_close(run(m, "convt3d", input(5, s3, convt3d_x), false), convt3d_y, 180, "convt3d");
  expect_close(run(m, "rnn", input(3, sr, rnn_x), false), rnn_y, 64, "rnn");
  expect_close(run(m, "bn", input(3, sbn, bn_x), false), bn_y, 30, "bn");
  expect_close(run(m, "inorm", input(4, sno, inorm_x), false), inorm_y, 72, "inorm");
  nn_model_free(m);
}

/* In training mode the norms use the batch's statistics and update the
 * loaded running statistics as PyTorch's: BatchNorm's momentum=None
 * averages over the loaded num_batches_tracked + 1 batches. */
Test(state_dict, loaded_buffers_update_as_pytorchs) {
  nn_model *m = kinds_model();
  cr_assert_eq(nn_model_load(m, NULL, SD_FIXTURE), AD_OK, "%s", ad_last_error(ctx));
  int64_t sbn[3] = {5, 3, 2}, sno[4] = {2, 3, 3, 4};
  expect_close(run(m, "bn", input(3, sbn, bn_x), true), bn_yt, 30, "bn (training)");
  expect_close(run(m, "inorm", input(4, sno, inorm_x), true), inorm_yt, 72, "inorm (training)");
  nn_params *b = nn_model_buffers(m);
  expect_close(nn_params_find(b, "bn.running_mean"), bn_rm, 3, "bn.running_mean");
  expect_close(nn_params_find(b, "bn.running_var"), bn_rv, 3, "bn.running_var");
  expect_close(nn_params_find(b, "inorm.running_mean"), inorm_rm, 3, "inorm.running_mean");
  expect_close(nn_params_find(b, "inorm.running_var"), inorm_rv, 3, "inorm.running_var");
  cr_assert_eq(ad_tensor_item(nn_params_find(b, "bn.num_batches_tracked")), 4);
  cr_assert_eq(ad_tensor_item(nn_params_find(b, "inorm.num_batches_tracked")), 0);
  nn_model_free(m);
}

/* Saved back, the file holds PyTorch's tensors: the same names, dtypes
 * (num_batches_tracked I64), shapes and bytes, and nothing else. */
Test(state_dict, saved_back_gives_pytorchs_tensors) {
  nn_model *m = kinds_model();
  cr_assert_eq(nn_model_load(m, NULL, SD_FIXTURE), AD_OK, "%s", ad_last_error(ctx));
  const char *path = test_path("kinds.safetensors");
  cr_assert_eq(nn_model_save(m, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(test_expect_same_tensors(ctx, SD_FIXTURE, path), 2); /* 2 I64 counts */
  nn_model_free(m);
}

/* A PyTorch module nested in another is a layer named by its path: layers
 * "encoder.0" and "encoder.2" of a Sequential save and load
 * "encoder.0.weight", ..., the names of PyTorch's state dict of
 * Sequential(encoder=Sequential(Linear, ReLU, Linear)). */
static nn_model *nested_model(uint64_t seed) {
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_not_null(m);
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  nn_dense_opts o = {.dtype = AD_F64};
  add(m, "encoder.0", nn_dense_new(ctx, 3, 4, &rng, &o));
  add(m, "encoder.1", nn_activation_new(ctx, NN_ACT_RELU));
  add(m, "encoder.2", nn_dense_new(ctx, 4, 2, &rng, &o));
  return m;
}

Test(state_dict, nested_module_names_are_dotted_layer_names) {
  nn_model *m = nested_model(5), *m2 = nested_model(6);
  static const char *const names[] = {"encoder.0.weight", "encoder.0.bias", "encoder.2.weight",
                                      "encoder.2.bias"};
  nn_params *p = nn_model_params(m), *p2 = nn_model_params(m2);
  cr_assert_eq(nn_params_count(p), 4);
  for (int i = 0; i < 4; i++) cr_assert_str_eq(nn_params_name(p, i), names[i]);
  cr_assert_not_null(nn_model_find_layer(m, "encoder.2"));
  cr_assert_null(nn_model_find_layer(m, "encoder"));
  const char *path = test_path("nested.safetensors");
  cr_assert_eq(nn_model_save(m, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
  cr_assert_not_null(info, "%s", ad_last_error(ctx));
  cr_assert_eq(info->n, 4);
  for (int i = 0; i < 4; i++) cr_assert_not_null(nn_checkpoint_info_find(info, names[i]));
  nn_checkpoint_info_free(info);
  cr_assert(
      memcmp(nn_params_tensor(p, 0)->data, nn_params_tensor(p2, 0)->data, 12 * sizeof(double)));
  cr_assert_eq(nn_model_load(m2, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  for (int i = 0; i < 4; i++) {
    const ad_tensor *a = nn_params_tensor(p, i), *b = nn_params_tensor(p2, i);
    cr_assert_eq(memcmp(a->data, b->data, (size_t)a->size * sizeof(double)), 0, "%s", names[i]);
  }
  /* a path of non-empty parts only; the layer is freed on refusal */
  static const char *const bad[] = {".encoder", "encoder.", "encoder..0", ".", ""};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    cr_assert_eq(nn_model_add_named(m, bad[i], nn_activation_new(ctx, NN_ACT_TANH)), AD_ERR_ARG,
                 "'%s' was taken", bad[i]);
    cr_assert(strstr(ad_last_error(ctx), "nor hold '..'"), "%s", ad_last_error(ctx));
    ad_clear_error(ctx);
  }
  /* a dotted name whose "<name>.<parameter>" a layer's own dotted
   * parameter already has: refused, naming it */
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  nn_transformer_opts t = {.dtype = AD_F64};
  add(m, "t", nn_transformer_encoder_layer_new(ctx, 4, 2, &rng, &t));
  nn_mha_opts a = {.dtype = AD_F64};
  cr_assert_eq(
      nn_model_add_named(m, "t.self_attn", nn_multihead_attention_new(ctx, 4, 2, &rng, &a)),
      AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(ctx), "t.self_attn.in_proj_weight"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  cr_assert_eq(nn_model_layer_count(m), 4);
  nn_model_free(m);
  nn_model_free(m2);
}
