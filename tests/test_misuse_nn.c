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
 * "adam.step.<p>") and before the learning rate and the schedule were
 * kept loads, and each parameter's count is the optimizer's: training then
 * goes on exactly as without the interruption. */
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
    if (!strncmp(s, "adam.step.", 10) || !strcmp(s, "adam.lr") || !strncmp(s, "adam.schedule.", 14))
      continue;
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

/* ------------------------------------------------ the learning-rate schedule */

/* Trains one step of m with opt on a fixed batch. */
static void one_step(nn_model *m, nn_optimizer *opt) {
  ad_tensor *x = batch(1, 3), *y = batch(2, 2);
  cr_assert_eq(nn_train_step(m, opt, nn_mse_loss, x, y, 0, NULL), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor_free(x), ad_tensor_free(y);
}

/* The schedule's state is in the checkpoint: after 3 epochs of StepLR
 * (gamma 0.5) the rate is 0.0125 before nn_model_save and after
 * nn_model_load, and the schedule goes on from epoch 3. */
Test(misuse_nn, schedule_survives_a_checkpoint) {
  nn_schedule sched = {.kind = NN_SCHED_STEP, .step_size = 1, .gamma = 0.5};
  nn_model *a = small_model(3), *b = small_model(4);
  nn_optimizer *oa = nn_sgd_new(nn_model_params(a), 0.1, 0.9, false, 0);
  nn_optimizer *ob = nn_sgd_new(nn_model_params(b), 0.1, 0.9, false, 0);
  cr_assert_eq(nn_optimizer_set_schedule(oa, &sched), AD_OK);
  cr_assert_eq(nn_optimizer_set_schedule(ob, &sched), AD_OK);
  for (int e = 0; e < 3; e++) {
    one_step(a, oa);
    nn_optimizer_schedule_step(oa);
  }
  cr_assert_eq(nn_optimizer_lr(oa), 0.0125);
  const char *path = test_path("sched.safetensors");
  cr_assert_eq(nn_model_save(a, oa, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_model_load(b, ob, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_lr(ob), 0.0125, "lr after load: %g", nn_optimizer_lr(ob));
  cr_assert_eq(nn_optimizer_config(ob)->lr, 0.0125);
  for (int e = 3; e < 5; e++) {
    one_step(a, oa), one_step(b, ob);
    nn_optimizer_schedule_step(oa), nn_optimizer_schedule_step(ob);
    cr_assert_eq(nn_optimizer_lr(ob), 0.1 * pow(0.5, e + 1), "epoch %d: %g", e + 1,
                 nn_optimizer_lr(ob));
  }
  cr_assert(same_params(a, b), "the resumed run differs");

  /* the learning rate is restored without a schedule too (as PyTorch's
   * optimizer state_dict does); set it after loading to change it */
  nn_optimizer *oc = nn_sgd_new(nn_model_params(b), 0.5, 0.9, false, 0);
  cr_assert_eq(nn_model_load(b, oc, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_lr(oc), 0.0125);
  nn_optimizer_set_lr(oc, 0.5);
  cr_assert_eq(nn_optimizer_lr(oc), 0.5);
  nn_optimizer_free(oa), nn_optimizer_free(ob), nn_optimizer_free(oc);
  nn_model_free(a), nn_model_free(b);
}

/* A checkpoint without the rate and the schedule's state (earlier
 * versions) leaves the optimizer's own: as those versions did. */
Test(misuse_nn, checkpoint_without_schedule_state_keeps_the_optimizers) {
  nn_model *a = small_model(3);
  nn_optimizer *oa = nn_sgd_new(nn_model_params(a), 0.1, 0, false, 0);
  nn_schedule sched = {.kind = NN_SCHED_EXPONENTIAL, .gamma = 0.5};
  cr_assert_eq(nn_optimizer_set_schedule(oa, &sched), AD_OK);
  nn_optimizer_schedule_step(oa);
  nn_params *pa = nn_model_params(a);
  const char *names[3] = {nn_params_name(pa, 0), nn_params_name(pa, 1), "sgd.step"};
  ad_tensor *tensors[3] = {nn_params_tensor(pa, 0), nn_params_tensor(pa, 1),
                           nn_optimizer_state_tensors(oa)[0]};
  const char *path = test_path("old.safetensors");
  cr_assert_eq(nn_checkpoint_save(ctx, path, 3, names, tensors), AD_OK, "%s", ad_last_error(ctx));
  nn_optimizer_set_lr(oa, 0.3);
  cr_assert_eq(nn_model_load(a, oa, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_lr(oa), 0.3);
  nn_optimizer_schedule_step(oa); /* from 0.3 at epoch 0 */
  cr_assert_eq(nn_optimizer_lr(oa), 0.15);
  nn_optimizer_free(oa);
  nn_model_free(a);
}

/* A count or a rate that cannot be one fails the load before anything is
 * written. */
Test(misuse_nn, bad_optimizer_scalars_are_refused) {
  nn_model *a = small_model(3);
  nn_optimizer *oa = nn_adam_new(nn_model_params(a), 0.01);
  const char *path = test_path("bad.safetensors");
  ad_tensor *w = nn_params_tensor(nn_model_params(a), 0);
  const struct {
    const char *name;
    double v;
    const char *msg;
  } cases[] = {
      {"adam.schedule.epoch", -1, "'adam.schedule.epoch' is -1; a count must be a whole number"},
      {"adam.step.0.bias", 2.5, "'adam.step.0.bias' is 2.5"},
      {"adam.step", NAN, "'adam.step' is nan"},
      {"adam.lr", -0.1, "learning rate 'adam.lr' is -0.1; it must be finite and >= 0"},
      {"adam.schedule.lr0", INFINITY, "'adam.schedule.lr0' is inf"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    ad_tensor *t = state_named(oa, cases[c].name);
    cr_assert_not_null(t, "%s", cases[c].name);
    double old = ad_tensor_item(t);
    ad_tensor_set(t, 0, cases[c].v);
    cr_assert_eq(nn_model_save(a, oa, path), AD_OK, "%s", ad_last_error(ctx));
    ad_tensor_set(t, 0, old);
    float w0 = ((float *)w->data)[0];
    ((float *)w->data)[0] = w0 + 1; /* the load must not restore it */
    cr_assert_eq(nn_model_load(a, oa, path), AD_ERR_FORMAT, "%s", cases[c].name);
    test_expect_error(ctx, AD_ERR_FORMAT, path, cases[c].msg, NULL);
    cr_assert_eq(((float *)w->data)[0], w0 + 1, "a parameter changed");
    cr_assert_eq(ad_tensor_item(t), old);
    ((float *)w->data)[0] = w0;
  }
  nn_optimizer_free(oa);
  nn_model_free(a);
}
