/* test_misuse_nn.c: the nn layer used the ways issue 13 found wrong:
 * checkpoints from earlier versions and with a learning-rate schedule,
 * saves killed half-way, names the reader and the writer disagreed on,
 * and NULL arguments that set no message. */
#include "nn.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_TMPDIR_SUITE(misuse_nn, "misuse_nn");

/* A Dense 3 -> 2 model in f32 from seed, and an input batch [4,3]. */
static nn_model *small_model(uint64_t seed) {
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 3, 2, &rng, NULL)), AD_OK, "%s",
               ad_last_error(ctx));
  return m;
}

static ad_tensor *batch(uint64_t seed, int64_t cols) {
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  int64_t s[2] = {4, cols};
  ad_tensor *t = ad_rand(ctx, &rng, AD_F32, 2, s, -1, 1);
  cr_assert_not_null(t);
  return t;
}

static bool same_params(const nn_model *a, const nn_model *b) {
  nn_params *pa = nn_model_params(a), *pb = nn_model_params(b);
  for (int i = 0; i < nn_params_count(pa); i++) {
    ad_tensor *ta = nn_params_tensor(pa, i), *tb = nn_params_tensor(pb, i);
    if (memcmp(ta->data, tb->data, (size_t)ta->size * ad_dtype_size(ta->dtype))) return false;
  }
  return true;
}

static ad_tensor *state_named(const nn_optimizer *o, const char *name) {
  for (int i = 0; i < nn_optimizer_state_count(o); i++)
    if (strcmp(nn_optimizer_state_names(o)[i], name) == 0) return nn_optimizer_state_tensors(o)[i];
  return NULL;
}

/* ------------------------------------------------- checkpoints of earlier versions */

/* A checkpoint written before parameters counted their own steps (no
 * "adam.step.<p>") loads, and each parameter's count is the optimizer's:
 * training then goes on exactly as without the interruption. */
Test(misuse_nn, checkpoint_without_parameter_steps_loads) {
  ad_tensor *x = batch(1, 3), *y = batch(2, 2);
  nn_model *a = small_model(3), *b = small_model(4);
  nn_optimizer *oa = nn_adam_new(nn_model_params(a), 0.01);
  nn_optimizer *ob = nn_adam_new(nn_model_params(b), 0.01);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(nn_train_step(a, oa, nn_mse_loss, x, y, 0, NULL), AD_OK, "%s", ad_last_error(ctx));
  /* the layout of the earlier versions: the parameters, then every state
   * tensor but the per-parameter step counts */
  const char *names[16];
  ad_tensor *tensors[16];
  int n = 0;
  nn_params *pa = nn_model_params(a);
  for (int i = 0; i < nn_params_count(pa); i++)
    names[n] = nn_params_name(pa, i), tensors[n++] = nn_params_tensor(pa, i);
  for (int i = 0; i < nn_optimizer_state_count(oa); i++) {
    const char *s = nn_optimizer_state_names(oa)[i];
    if (strncmp(s, "adam.step.", 10) == 0) continue;
    names[n] = s, tensors[n++] = nn_optimizer_state_tensors(oa)[i];
  }
  cr_assert_eq(n, 2 + 1 + 4); /* 2 parameters, the step, m and v of each */
  const char *path = test_path("old.safetensors");
  cr_assert_eq(nn_checkpoint_save(ctx, path, n, names, tensors), AD_OK, "%s", ad_last_error(ctx));

  cr_assert_eq(nn_model_load(b, ob, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(same_params(a, b));
  cr_assert_eq(nn_optimizer_steps(ob), 3);
  cr_assert_eq(ad_tensor_item(state_named(ob, "adam.step.0.weight")), 3.0);
  cr_assert_eq(ad_tensor_item(state_named(ob, "adam.step.0.bias")), 3.0);
  cr_assert_eq(nn_train_step(a, oa, nn_mse_loss, x, y, 0, NULL), AD_OK);
  cr_assert_eq(nn_train_step(b, ob, nn_mse_loss, x, y, 0, NULL), AD_OK);
  cr_assert(same_params(a, b), "the resumed step differs");

  /* a required state tensor missing is still an error, and nothing changes */
  nn_optimizer *oc = nn_adam_new(nn_model_params(b), 0.01);
  cr_assert_eq(nn_checkpoint_save(ctx, path, 3, names, tensors), AD_OK);
  cr_assert_eq(nn_model_load(b, oc, path), AD_ERR_NOTFOUND);
  test_expect_error(ctx, AD_ERR_NOTFOUND, path, "'adam.m.0.weight' not found", NULL);
  cr_assert_eq(nn_optimizer_steps(oc), 0);
  nn_optimizer_free(oa), nn_optimizer_free(ob), nn_optimizer_free(oc);
  nn_model_free(a), nn_model_free(b);
  ad_tensor_free(x), ad_tensor_free(y);
}
