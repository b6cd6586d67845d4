/* test_misuse_nn.c: the nn layer used the ways issue 13 found wrong:
 * checkpoints from earlier versions and with a learning-rate schedule,
 * saves killed half-way, names the reader and the writer disagreed on,
 * and NULL arguments that set no message. */
#include "nn.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
    if (!strncmp(s, "adam.step.", 10) || !strcmp(s, "adam.lr") ||
        !strncmp(s, "adam.schedule.", 14) || !strncmp(s, "adam.plateau.", 13))
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

/* A schedule or nn_optimizer_set_lr cannot make the rate negative, NaN or
 * infinite (they did, and nn_model_save then wrote a checkpoint that
 * nn_model_load refused): the bad settings are refused, the optimizer kept
 * as it was, and its checkpoint still loads. */
Test(misuse_nn, learning_rate_stays_finite_and_non_negative) {
  nn_model *a = small_model(3);
  nn_optimizer *oa = nn_sgd_new(nn_model_params(a), 0.1, 0.9, false, 0);
  const struct {
    nn_schedule s;
    const char *why;
  } bad[] = {
      {{.kind = NN_SCHED_EXPONENTIAL, .gamma = -0.5}, "gamma must be finite and > 0"},
      {{.kind = NN_SCHED_EXPONENTIAL, .gamma = 0}, "gamma must be finite and > 0"},
      {{.kind = NN_SCHED_EXPONENTIAL, .gamma = INFINITY}, "gamma must be finite and > 0"},
      {{.kind = NN_SCHED_STEP, .step_size = 1, .gamma = NAN}, "gamma must be finite and > 0"},
      {{.kind = NN_SCHED_STEP, .step_size = 0, .gamma = 0.5}, "step_size must be >= 1"},
      {{.kind = NN_SCHED_COSINE, .t_max = 5, .eta_min = -0.01}, "eta_min must be finite and >= 0"},
      {{.kind = NN_SCHED_COSINE, .t_max = 5, .eta_min = NAN}, "eta_min must be finite and >= 0"},
      {{.kind = NN_SCHED_COSINE, .t_max = 0}, "t_max must be >= 1"},
      {{.kind = (nn_sched_kind)99}, "unknown kind"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cr_assert_eq(nn_optimizer_set_schedule(oa, &bad[i].s), AD_ERR_ARG, "case %zu", i);
    test_expect_error(ctx, AD_ERR_ARG, "optimizer: bad schedule: ", bad[i].why, NULL);
    cr_assert(isnan(nn_schedule_lr(&bad[i].s, 0.1, 1)), "case %zu", i);
    cr_assert_eq(nn_optimizer_schedule_step(oa), AD_OK); /* none attached */
    cr_assert_eq(nn_optimizer_lr(oa), 0.1, "case %zu: lr %g", i, nn_optimizer_lr(oa));
  }
  const double bad_lr[] = {NAN, -0.1, INFINITY, -INFINITY};
  for (size_t i = 0; i < sizeof bad_lr / sizeof bad_lr[0]; i++) {
    cr_assert_eq(nn_optimizer_set_lr(oa, bad_lr[i]), AD_ERR_ARG);
    test_expect_error(ctx, AD_ERR_ARG, "optimizer sgd: set_lr: lr must be finite and >= 0", NULL);
    cr_assert_eq(nn_optimizer_lr(oa), 0.1);
    cr_assert_eq(nn_optimizer_config(oa)->lr, 0.1);
  }
  cr_assert_eq(nn_optimizer_set_lr(NULL, 0.1), AD_ERR_NULL);
  cr_assert_eq(nn_optimizer_set_lr(oa, 0), AD_OK);
  cr_assert_eq(nn_optimizer_set_lr(oa, 1), AD_OK);
  /* gamma > 1 is allowed (as in PyTorch) until the rate would overflow */
  nn_schedule grow = {.kind = NN_SCHED_EXPONENTIAL, .gamma = 1e200};
  cr_assert_eq(nn_optimizer_set_schedule(oa, &grow), AD_OK);
  cr_assert_eq(nn_optimizer_schedule_step(oa), AD_OK);
  cr_assert_eq(nn_optimizer_lr(oa), 1e200);
  cr_assert_eq(nn_optimizer_schedule_step(oa), AD_ERR_NAN);
  test_expect_error(ctx, AD_ERR_NAN, "learning rate at epoch 2 is inf", NULL);
  cr_assert_eq(nn_optimizer_lr(oa), 1e200, "the rate of epoch 1 stays");
  cr_assert_eq(nn_optimizer_schedule_step(NULL), AD_ERR_NULL);
  /* what is left saves and loads */
  const char *path = test_path("lr.safetensors");
  cr_assert_eq(nn_model_save(a, oa, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_set_lr(oa, 0.5), AD_OK);
  cr_assert_eq(nn_model_load(a, oa, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_lr(oa), 1e200);
  cr_assert_eq(ad_tensor_item(state_named(oa, "sgd.schedule.epoch")), 1.0);
  /* nn_fit stops with the error: from base rate 0, 0 * 1e200^2 is NaN */
  ad_tensor *x = batch(1, 3), *y = batch(2, 2);
  cr_assert_eq(nn_optimizer_set_lr(oa, 0), AD_OK);
  nn_fit_opts fo = {.epochs = 4, .verbose = -1};
  nn_history *h;
  cr_assert_eq(nn_fit(a, oa, nn_mse_loss, x, y, &fo, &h), AD_ERR_NAN);
  test_expect_error(ctx, AD_ERR_NAN, "learning rate at epoch 2 is ", "nan (base rate 0)", NULL);
  cr_assert_eq(nn_history_epochs(h), 2);
  cr_assert_eq(nn_optimizer_lr(oa), 0);
  nn_history_free(h);
  ad_tensor_free(x), ad_tensor_free(y);
  nn_optimizer_free(oa);
  nn_model_free(a);
}

static ad_tensor *identity_forward(nn_model *m, ad_tensor *x, void *ud) {
  (void)m, (void)ud;
  return x;
}

/* Optimizer state names are as long as the parameter names need: two
 * 600-byte names that differ in their last byte give distinct state names
 * (cut at 511 bytes they collided, and nn_model_save refused the
 * duplicate), and the checkpoint round-trips. */
Test(misuse_nn, long_parameter_names_keep_their_state_names_apart) {
  char a[601], b[601];
  memset(a, 'p', 600), a[600] = 0;
  memcpy(b, a, sizeof a);
  a[599] = 'A', b[599] = 'B';
  int64_t s[1] = {2};
  nn_model *m = nn_model_new(ctx, identity_forward, NULL);
  ad_tensor *ta =
      nn_model_add_param(m, a, AD_F32, 1, s, nn_init_make(NN_INIT_CONSTANT, 1, 0), NULL);
  ad_tensor *tb =
      nn_model_add_param(m, b, AD_F32, 1, s, nn_init_make(NN_INIT_CONSTANT, 2, 0), NULL);
  cr_assert(ta && tb, "%s", ad_last_error(ctx));
  nn_optimizer *o = nn_adam_new(nn_model_params(m), 0.01);
  cr_assert_not_null(o, "%s", ad_last_error(ctx));
  char want[700];
  snprintf(want, sizeof want, "adam.m.%s", b);
  ad_tensor *mb = state_named(o, want);
  cr_assert_not_null(mb, "no state named adam.m.<b>");
  snprintf(want, sizeof want, "adam.step.%s", a);
  cr_assert_not_null(state_named(o, want), "no state named adam.step.<a>");
  for (int i = 0; i < nn_optimizer_state_count(o); i++)
    for (int j = 0; j < i; j++)
      cr_assert_str_neq(nn_optimizer_state_names(o)[i], nn_optimizer_state_names(o)[j]);
  ad_tensor_fill(mb, 0.25);
  const char *path = test_path("long.safetensors");
  cr_assert_eq(nn_model_save(m, o, path), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor_fill(mb, 0), ad_tensor_fill(tb, 0);
  cr_assert_eq(nn_model_load(m, o, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(mb, 1), 0.25);
  cr_assert_eq(ad_tensor_get(tb, 1), 2);
  nn_optimizer_free(o);
  nn_model_free(m);
}

static ad_tensor *pass_through(ad_ctx *c, ad_tensor *x, bool training, void *ud) {
  (void)c, (void)training, (void)ud;
  return x;
}

/* A layer's parameter name that would make a model name too long to keep
 * whole is refused, not cut (two such names could become one). */
Test(misuse_nn, a_layer_parameter_name_too_long_for_the_model_is_refused) {
  char a[301];
  memset(a, 'p', 300), a[300] = 0;
  int64_t s[1] = {2};
  nn_layer *l = nn_lambda_new(ctx, "custom", pass_through, NULL);
  cr_assert_not_null(l);
  cr_assert_eq(nn_params_add(nn_layer_params(l), a, ad_zeros(ctx, AD_F32, 1, s), true), AD_OK);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, l), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(ctx), "makes a name of 302 bytes"), "%s", ad_last_error(ctx));
  cr_assert_eq(nn_params_count(nn_model_params(m)), 0);
  nn_model_free(m);
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

/* A 0-d parameter (a learned scalar, PyTorch's nn.Parameter(torch.tensor(1.)))
 * has 0-d moments: values, not counts, so any double loads back. */
Test(misuse_nn, a_scalar_parameters_optimizer_state_loads) {
  const char *path = test_path("scalar.safetensors");
  nn_model *m = nn_sequential_new(ctx);
  ad_tensor *w =
      nn_model_add_param(m, "temp", AD_F32, 0, NULL, nn_init_make(NN_INIT_DEFAULT, 0, 0), NULL);
  cr_assert_not_null(w, "%s", ad_last_error(ctx));
  nn_opt_config rms = nn_opt_defaults(NN_OPT_RMSPROP, 0.1);
  rms.momentum = 0.5, rms.centered = true;
  nn_optimizer *opts[4] = {
      nn_adam_new(nn_model_params(m), 0.1), nn_sgd_new(nn_model_params(m), 0.1, 0.9, false, 0),
      nn_optimizer_new(nn_model_params(m), &rms), nn_adagrad_new(nn_model_params(m), 0.1)};
  for (int k = 0; k < 4; k++) {
    nn_optimizer *o = opts[k];
    cr_assert_not_null(o, "%s", ad_last_error(ctx));
    for (int i = 0; i < nn_optimizer_state_count(o); i++) { /* every moment -0.21 */
      ad_tensor *t = nn_optimizer_state_tensors(o)[i];
      if (nn_optimizer_state_param(o, i) >= 0) ad_tensor_set(t, 0, -0.21);
    }
    cr_assert_eq(nn_model_save(m, o, path), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_eq(nn_model_load(m, o, path), AD_OK, "optimizer %d: %s", k, ad_last_error(ctx));
    for (int i = 0; i < nn_optimizer_state_count(o); i++)
      if (nn_optimizer_state_param(o, i) >= 0)
        cr_assert_float_eq(ad_tensor_item(nn_optimizer_state_tensors(o)[i]), -0.21, 1e-6);
    nn_optimizer_free(o);
  }
  nn_model_free(m);
}

/* ------------------------------------------------------- killed saves */

/* Number of entries of tmpdir whose name starts with prefix. */
static int count_prefixed(const char *prefix) {
  DIR *d = opendir(tmpdir);
  cr_assert_not_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
  closedir(d);
  return n;
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

/* Creates the file path (8 bytes); with lock, holds an exclusive flock on
 * it through the returned descriptor, as a writer does. */
static int make_temp(const char *path, bool lock) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  cr_assert_geq(fd, 0, "create %s", path);
  cr_assert_eq(write(fd, "partial!", 8), 8);
  if (lock) cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0, "lock %s", path);
  return fd;
}

/* A temporary file whose writer died is removed by the next save or load of
 * the same path; one whose writer lives (its lock held, in another process
 * or in this one) is kept, and so is every file that only looks alike. */
Test(misuse_nn, stale_temporary_files_are_removed_live_ones_kept) {
  char path[512], stale[600], child_tmp[600], held[600];
  snprintf(path, sizeof path, "%s", test_path("m.safetensors"));
  snprintf(stale, sizeof stale, "%s.tmp.999999.0123456789abcdef", path);
  snprintf(held, sizeof held, "%s.tmp.1.fedcba9876543210", path);
  const char *lookalikes[] = {"m.safetensors.tmp.12.0123456789abcdeg", /* not hex */
                              "m.safetensors.tmp.12.0123456789abcde",  /* 15 digits */
                              "m.safetensors.tmp-12-3",                /* earlier versions' */
                              "n.safetensors.tmp.12.0123456789abcdef", /* another file's */
                              "m.safetensors.tmp..0123456789abcdef"};  /* no pid */
  close(make_temp(stale, false));
  for (size_t i = 0; i < sizeof lookalikes / sizeof *lookalikes; i++)
    close(make_temp(test_path(lookalikes[i]), false));
  int held_fd = make_temp(held, true); /* a live writer in this process */

  /* a live writer in another process; it also ends when this process does
   * (its read of `hold` sees the end of the pipe), should a check fail */
  int ready[2], hold[2];
  cr_assert_eq(pipe(ready), 0);
  cr_assert_eq(pipe(hold), 0);
  pid_t child = fork();
  cr_assert_geq(child, 0);
  if (child == 0) {
    close(hold[1]);
    char name[600];
    snprintf(name, sizeof name, "%s.tmp.%ld.00000000deadbeef", path, (long)getpid());
    int fd = open(name, O_WRONLY | O_CREAT | O_EXCL, 0644);
    char ok = fd >= 0 && flock(fd, LOCK_EX) == 0 ? 'y' : 'n';
    if (write(ready[1], &ok, 1) != 1) _exit(1);
    char c;
    while (read(hold[0], &c, 1) < 0) continue; /* holds the lock until killed */
    _exit(0);
  }
  close(hold[0]);
  char ok = 0;
  cr_assert_eq(read(ready[0], &ok, 1), 1);
  cr_assert_eq(ok, 'y', "the child could not make its file");
  close(ready[0]), close(ready[1]);
  snprintf(child_tmp, sizeof child_tmp, "%s.tmp.%ld.00000000deadbeef", path, (long)child);

  int64_t s = 3;
  ad_tensor *t = ad_zeros(ctx, AD_F32, 1, &s);
  const char *name = "t";
  cr_assert_eq(nn_checkpoint_save(ctx, path, 1, &name, &t), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(!exists(stale), "the dead writer's file is left");
  cr_assert(exists(child_tmp), "the live child's file was removed");
  cr_assert(exists(held), "the file this process holds was removed");
  for (size_t i = 0; i < sizeof lookalikes / sizeof *lookalikes; i++)
    cr_assert(exists(test_path(lookalikes[i])), "%s was removed", lookalikes[i]);

  /* the child dies: a load removes its file */
  kill(child, SIGKILL);
  cr_assert_eq(waitpid(child, NULL, 0), child);
  close(hold[1]);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &t), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(!exists(child_tmp), "the killed child's file is left");
  cr_assert(exists(held));
  /* this process lets go: the next save removes it */
  close(held_fd);
  cr_assert_eq(nn_checkpoint_save(ctx, path, 1, &name, &t), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(!exists(held));
  cr_assert_eq(count_prefixed("m.safetensors.tmp."), 3, "only the look-alikes stay");
  ad_tensor_free(t);
}

/* A process killed in the middle of real saves leaves at most its one
 * temporary file, which the next save removes; the file at path is always
 * a whole checkpoint. */
Test(misuse_nn, a_save_killed_midway_leaves_nothing_behind) {
  char path[512];
  snprintf(path, sizeof path, "%s", test_path("big.safetensors"));
  int64_t n = 4 << 20; /* 16 MB: a save takes milliseconds */
  ad_tensor *big = ad_full(ctx, AD_F32, 1, &n, 1.5);
  cr_assert_not_null(big);
  const char *name = "w";
  cr_assert_eq(nn_checkpoint_save(ctx, path, 1, &name, &big), AD_OK, "%s", ad_last_error(ctx));
  int killed_with_temp = 0;
  pid_t parent = getpid();
  for (int round = 0; round < 20 && killed_with_temp < 3; round++) {
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) { /* saves until killed, or until its parent is gone */
      while (getppid() == parent) nn_checkpoint_save(ctx, path, 1, &name, &big);
      _exit(0);
    }
    /* wait (up to 2 s) until a save is under way, then kill the writer */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool seen = false;
    do {
      seen = count_prefixed("big.safetensors.tmp.") > 0;
      clock_gettime(CLOCK_MONOTONIC, &now);
    } while (!seen && (now.tv_sec - t0.tv_sec) * 1000000000L + (now.tv_nsec - t0.tv_nsec) < 2e9);
    kill(child, SIGKILL);
    cr_assert_eq(waitpid(child, NULL, 0), child);
    int left = count_prefixed("big.safetensors.tmp.");
    cr_assert(seen, "round %d: no temporary file seen in 2 s", round);
    cr_assert_leq(left, 1, "round %d: %d temporary files", round, left);
    killed_with_temp += left;
  }
  cr_assert_gt(killed_with_temp, 0, "no save was ever killed midway");
  ad_tensor_fill(big, 0.0);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &big), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(big, n - 1), 1.5, "the file at path is a whole checkpoint");
  cr_assert_eq(count_prefixed("big.safetensors.tmp."), 0, "the load removed the killed save's");
  ad_tensor_free(big);
}

/* ------------------------------------------------------ names and NULLs */

/* Writes a safetensors file whose header is json (data: n zero bytes). */
static void write_raw(const char *path, const char *json, size_t n) {
  size_t h = strlen(json);
  unsigned char buf[512] = {0};
  cr_assert_leq(8 + h + n, sizeof buf);
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
  memcpy(buf + 8, json, h);
  test_write_file(path, buf, 8 + h + n);
}

/* The reader refuses what the writer refuses: an empty tensor name (or
 * metadata key), naming the file and the tensor's position, so every
 * checkpoint that loads can be saved again. */
Test(misuse_nn, reader_refuses_empty_names_as_the_writer_does) {
  const char *path = test_path("empty_name.safetensors");
  write_raw(path,
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
            8);
  cr_assert_null(nn_checkpoint_info_read(ctx, path));
  test_expect_error(ctx, AD_ERR_FORMAT, path, "tensor 1 has an empty name", NULL);
  int64_t one = 1;
  ad_tensor *t = ad_zeros(ctx, AD_F32, 1, &one);
  const char *name = "a";
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &t), AD_ERR_FORMAT);
  test_expect_error(ctx, AD_ERR_FORMAT, path, "tensor 1 has an empty name", NULL);
  /* the writer: the same rule */
  const char *empty = "";
  cr_assert_eq(nn_checkpoint_save(ctx, path, 1, &empty, &t), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, path, "names[0] is empty", NULL);
  /* metadata keys */
  write_raw(path,
            "{\"__metadata__\":{\"format\":\"pt\",\"\":\"x\"},"
            "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
            4);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &t), AD_ERR_FORMAT);
  test_expect_error(ctx, AD_ERR_FORMAT, path, "__metadata__ key 1 is empty", NULL);
  const char *k = "", *v = "x";
  cr_assert_eq(nn_checkpoint_save_meta(ctx, path, 1, &name, &t, 1, &k, &v), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "metadata key 0 is empty", NULL);
  ad_tensor_free(t);
}

static ad_tensor *returns_null(ad_ctx *c, ad_tensor *x, bool training, void *ud) {
  (void)c, (void)x, (void)training, (void)ud;
  return NULL;
}

static ad_tensor *forward_null(nn_model *m, ad_tensor *x, void *ud) {
  (void)m, (void)x, (void)ud;
  return NULL;
}

/* A layer or a tensor made on another context is refused by the model and
 * the lists (it used to join, and the model then trained and saved
 * tensors of a context it did not own); the layer or an owned tensor is
 * freed as on every failure. */
Test(misuse_nn, another_contexts_layers_and_tensors_are_refused) {
  ad_ctx *other = ad_ctx_new();
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_model *m = nn_sequential_new(ctx);
  size_t live = ad_ctx_live_tensors(other);
  cr_assert_eq(nn_model_add(m, nn_dense_new(other, 4, 1, &rng, NULL)), AD_ERR_ARG);
  char want[160];
  snprintf(want, sizeof want,
           "model_add: dense layer was made on context %p and the model on "
           "context %p",
           (void *)other, (void *)ctx);
  test_expect_error(ctx, AD_ERR_ARG, want, NULL);
  cr_assert_eq(nn_model_layer_count(m), 0);
  cr_assert_eq(nn_params_count(nn_model_params(m)), 0);
  cr_assert_eq(ad_ctx_live_tensors(other), live, "the layer was freed");
  /* the same layer kind of the model's context joins */
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 4, 1, &rng, NULL)), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(nn_model_layer(m, 0)), "dense");

  int64_t s[1] = {2};
  nn_params *p = nn_params_new(ctx), *b = nn_buffers_new(ctx);
  ad_tensor *t = ad_zeros(other, AD_F32, 1, s);
  cr_assert_eq(nn_params_add(p, "w", t, false), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "params_add: 'w' was made on context", "list on context",
                    NULL);
  cr_assert_eq(nn_params_count(p), 0);
  cr_assert(!ad_tensor_requires_grad(t), "t is left as it was");
  cr_assert_eq(nn_buffers_add(b, "n", t, true, NN_STORE_NATIVE), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "buffers_add: 'n' was made on context", NULL);
  cr_assert_eq(nn_params_count(b), 0);
  cr_assert_eq(ad_ctx_live_tensors(other), live, "an owned tensor is freed on failure");
  nn_params_free(p), nn_params_free(b);
  nn_model_free(m);
  ad_ctx_free(other);
}

/* The losses and multi-head attention read labels, targets and i32 masks
 * themselves before any op sees them: they must check them as an op
 * checks its inputs. Freed labels were dereferenced (data NULL), a freed
 * i32 mask read as "no mask", another context's labels and masks were
 * used; and a float target of another shape than the logits was reshaped
 * into a wrong loss. */
Test(misuse_nn, tensors_the_losses_and_attention_read_are_checked) {
  ad_ctx *other = ad_ctx_new();
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t zs[2] = {4, 3}, ls[1] = {4};
  ad_tensor *z = ad_rand(ctx, &rng, AD_F32, 2, zs, -1, 1);
  ad_tensor *gone = ad_zeros(ctx, AD_I32, 1, ls), *far = ad_zeros(other, AD_I32, 1, ls);
  ad_tensor_free(gone);
  nn_loss_fn label_losses[2] = {nn_cross_entropy_loss, nn_nll_loss};
  for (int k = 0; k < 2; k++) {
    cr_assert_null(label_losses[k](ctx, z, gone, NN_MEAN));
    test_expect_error(ctx, AD_ERR_STATE, "labels was freed", NULL);
    cr_assert_null(label_losses[k](ctx, z, far, NN_MEAN));
    test_expect_error(ctx, AD_ERR_ARG, "labels belongs to another context", NULL);
  }
  cr_assert_null(nn_sequence_cross_entropy_loss(ctx, z, gone, NN_MEAN, NULL));
  test_expect_error(ctx, AD_ERR_STATE, "sequence_cross_entropy_loss: labels was freed", NULL);
  ad_tensor *fz = ad_zeros(other, AD_F32, 2, zs);
  cr_assert_null(nn_mse_loss(ctx, z, fz, NN_MEAN));
  test_expect_error(ctx, AD_ERR_ARG, "mse_loss: target belongs to another context", NULL);
  /* a prediction from a tape that was reset (bce_loss reads its values) */
  ad_tensor *p = ad_sigmoid(ctx, z);
  ad_tape_reset(ctx);
  ad_tensor *t = ad_zeros(ctx, AD_F32, 2, zs);
  cr_assert_null(nn_bce_loss(ctx, p, t, NN_MEAN));
  test_expect_error(ctx, AD_ERR_STATE, "bce_loss: prediction is from a tape that was reset", NULL);

  /* float targets: the logits' shape, not just their size */
  int64_t ts[2] = {3, 4}, z1[2] = {4, 1};
  ad_tensor *tt = ad_zeros(ctx, AD_F32, 2, ts), *z4 = ad_zeros(ctx, AD_F32, 2, z1);
  cr_assert_null(nn_cross_entropy_loss(ctx, z, tt, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE, "a float target [3,4] must have the logits' shape [4,3]",
                    NULL);
  ad_tensor *idx = ad_zeros(ctx, AD_F32, 1, ls);
  cr_assert_null(nn_cross_entropy_loss(ctx, z4, idx, NN_MEAN));
  test_expect_error(ctx, AD_ERR_SHAPE, "a float target [4] must have the logits' shape [4,1]",
                    "class labels are i32", NULL);
  ad_tensor *onehot = ad_zeros(ctx, AD_F32, 2, zs);
  cr_assert(nn_cross_entropy_loss(ctx, z, onehot, NN_MEAN), "control: %s", ad_last_error(ctx));
  cr_assert_eq(nn_count_correct(z, gone, 0.5), -1);

  /* i32 masks of multi-head attention */
  nn_layer *l = nn_multihead_attention_new(ctx, 4, 1, &rng, NULL);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  int64_t qs[3] = {3, 1, 4}, ms[2] = {3, 3}, ks[2] = {1, 3};
  ad_tensor *q = ad_rand(ctx, &rng, AD_F32, 3, qs, -1, 1);
  ad_tensor *m = ad_zeros(ctx, AD_I32, 2, ms), *fm = ad_zeros(other, AD_I32, 2, ms);
  ad_tensor *kp = ad_zeros(other, AD_I32, 2, ks);
  ad_tensor *w = NULL;
  nn_mha_args a = {.attn_mask = m};
  cr_assert(nn_multihead_attention(l, q, q, q, &a, &w), "control: %s", ad_last_error(ctx));
  ad_tensor_free(m);
  cr_assert_null(nn_multihead_attention(l, q, q, q, &a, &w));
  test_expect_error(ctx, AD_ERR_STATE, "attn_mask was freed", NULL);
  a.attn_mask = fm;
  cr_assert_null(nn_multihead_attention(l, q, q, q, &a, &w));
  test_expect_error(ctx, AD_ERR_ARG, "attn_mask belongs to another context", NULL);
  a = (nn_mha_args){.key_padding_mask = kp};
  cr_assert_null(nn_multihead_attention(l, q, q, q, &a, &w));
  test_expect_error(ctx, AD_ERR_ARG, "key_padding_mask belongs to another context", NULL);
  ad_tape_reset(ctx);
  nn_layer_free(l);
  ad_tensor *own[] = {z, t, tt, z4, idx, onehot, q};
  for (size_t k = 0; k < sizeof own / sizeof *own; k++) ad_tensor_free(own[k]);
  ad_tensor_free(far), ad_tensor_free(fz), ad_tensor_free(fm), ad_tensor_free(kp);
  ad_ctx_free(other);
}

/* Multi-head attention reads the shapes of query, key and value itself (its
 * checks, the masks' sizes) before any op sees them: a freed one, one of
 * another context or one from a reset tape was refused only by the first
 * op it reached ("transpose: input 0 was freed"), naming neither the layer
 * nor the argument; it is refused as the masks are, batched or not. */
Test(misuse_nn, attention_checks_query_key_and_value) {
  ad_ctx *other = ad_ctx_new();
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  for (int unbatched = 0; unbatched < 2; unbatched++) {
    nn_layer *l = nn_multihead_attention_new_ext(
        ctx, 4, 2, &rng, &(nn_mha_opts_ext){.vdim = 3, .add_bias_kv = true});
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    int nd = unbatched ? 2 : 3;
    int64_t qs[3] = {3, 2, 4}, vs[3] = {3, 2, 3};
    if (unbatched) qs[1] = 4, vs[1] = 3;
    ad_tensor *q = ad_zeros(ctx, AD_F32, nd, qs), *v = ad_zeros(ctx, AD_F32, nd, vs);
    ad_tensor *gone = ad_zeros(ctx, AD_F32, nd, qs), *far = ad_zeros(other, AD_F32, nd, vs);
    ad_tensor_free(gone);
    cr_assert(nn_multihead_attention(l, q, q, v, NULL, NULL), "control: %s", ad_last_error(ctx));
    cr_assert_null(nn_multihead_attention(l, q, gone, v, NULL, NULL));
    test_expect_error(ctx, AD_ERR_STATE, "multihead_attention: key was freed", NULL);
    cr_assert_null(nn_multihead_attention(l, q, q, far, NULL, NULL));
    test_expect_error(ctx, AD_ERR_ARG, "multihead_attention: value belongs to another context",
                      NULL);
    ad_tensor *t = ad_mul_scalar(ctx, q, 2);
    cr_assert_not_null(t);
    ad_tape_reset(ctx);
    cr_assert_null(nn_multihead_attention(l, t, q, v, NULL, NULL));
    test_expect_error(ctx, AD_ERR_STATE, "multihead_attention: query is from a tape that was reset",
                      NULL);
    nn_layer_free(l);
    ad_tensor_free(q), ad_tensor_free(v), ad_tensor_free(far);
  }
  ad_ctx_free(other);
}

/* A freed tensor keeps its shape with no data: the data functions read it
 * as rows of nothing and trained on zeros. They now refuse it, and
 * another context's tensors, as ops do. */
Test(misuse_nn, data_functions_refuse_freed_and_foreign_tensors) {
  ad_ctx *other = ad_ctx_new();
  int64_t s[2] = {8, 3}, rows[2] = {0, 1};
  ad_tensor *x = ad_ones(ctx, AD_F32, 2, s), *y = ad_ones(ctx, AD_F32, 2, s);
  ad_tensor *gone = ad_ones(ctx, AD_F32, 2, s), *far = ad_ones(other, AD_F32, 2, s);
  ad_tensor_free(gone);
  cr_assert_null(nn_take_rows(ctx, gone, 2, rows));
  test_expect_error(ctx, AD_ERR_STATE, "take_rows: tensor was freed", NULL);
  cr_assert_null(nn_batcher_new(ctx, x, far, 4, false, 0));
  test_expect_error(ctx, AD_ERR_ARG, "batcher: y belongs to another context", NULL);
  ad_tensor *a, *b, *c, *d;
  cr_assert_eq(nn_train_test_split(ctx, gone, y, 2, true, 1, &a, &b, &c, &d), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "train_test_split: x was freed", NULL);
  nn_model *m = small_model(1);
  nn_opt_config cfg = nn_opt_defaults(NN_OPT_SGD, 0.1);
  nn_optimizer *opt = nn_optimizer_new(nn_model_params(m), &cfg);
  nn_fit_opts fo = {.epochs = 1, .batch_size = 4, .verbose = -1};
  cr_assert_eq(nn_fit(m, opt, nn_mse_loss, gone, y, &fo, NULL), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "fit: x was freed", NULL);
  double l;
  cr_assert_eq(nn_evaluate(m, nn_mse_loss, x, far, 4, &l, NULL), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "evaluate: y belongs to another context", NULL);
  nn_optimizer_free(opt), nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y), ad_tensor_free(far);
  ad_ctx_free(other);
}

/* Misuse of the objects' lifetimes and of the settings, found by review:
 * each was accepted without an error, and the lifetimes ended in a
 * use-after-free or a double free. */
Test(misuse_nn, lifetimes_and_settings_are_checked) {
  ad_ctx *other = ad_ctx_new();
  /* a model's layer and lists are freed with it, not alone */
  nn_model *m = small_model(1);
  nn_layer *l = nn_model_layer(m, 0);
  nn_layer_free(l);
  test_expect_error(ctx, AD_ERR_STATE, "layer_free: dense", "belongs to a model", NULL);
  nn_params_free(nn_model_params(m));
  test_expect_error(ctx, AD_ERR_STATE, "params_free: the list belongs to a layer or a model", NULL);
  nn_params_free(nn_layer_params(l));
  test_expect_error(ctx, AD_ERR_STATE, "params_free", NULL);
  cr_assert_eq(nn_params_count(nn_model_params(m)), 2, "the list is intact");

  /* an optimizer whose model was freed: no step reads the freed list */
  nn_opt_config cfg = nn_opt_defaults(NN_OPT_ADAM, 0.01);
  cfg.clip_norm = 1;
  nn_optimizer *opt = nn_optimizer_new(nn_model_params(m), &cfg);
  cr_assert_not_null(opt, "%s", ad_last_error(ctx));
  nn_model_free(m);
  cr_assert_eq(nn_optimizer_step(opt), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "optimizer_step: parameter 0 was freed", NULL);
  nn_optimizer_free(opt);

  /* infinite settings */
  m = small_model(2);
  double *fields[3];
  nn_opt_config c = nn_opt_defaults(NN_OPT_SGD, 0.1);
  fields[0] = &c.momentum, fields[1] = &c.weight_decay, fields[2] = &c.eps;
  const char *names[3] = {"momentum", "weight_decay", "eps"};
  for (int k = 0; k < 3; k++) {
    c = nn_opt_defaults(NN_OPT_SGD, 0.1);
    *fields[k] = INFINITY;
    cr_assert_null(nn_optimizer_new(nn_model_params(m), &c), "%s", names[k]);
    test_expect_error(ctx, AD_ERR_ARG, names[k], "must be finite", NULL);
  }
  c = nn_opt_defaults(NN_OPT_ADAGRAD, 0.1);
  c.lr_decay = INFINITY;
  cr_assert_null(nn_optimizer_new(nn_model_params(m), &c));
  test_expect_error(ctx, AD_ERR_ARG, "lr_decay must be finite", NULL);

  /* clip thresholds given directly */
  ad_tensor *x = batch(3, 3);
  ad_tensor *y = nn_model_forward(m, x);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor *w = nn_params_tensor(nn_model_params(m), 0);
  double g0 = ad_tensor_get(w->grad, 0);
  cr_assert(isnan(nn_clip_grad_norm(nn_model_params(m), -1)));
  test_expect_error(ctx, AD_ERR_ARG, "clip_grad_norm: max_norm -1 must be >= 0", NULL);
  nn_clip_grad_value(nn_model_params(m), NAN);
  test_expect_error(ctx, AD_ERR_ARG, "clip_grad_value: clip nan must be >= 0", NULL);
  cr_assert_eq(ad_tensor_get(w->grad, 0), g0, "gradients unchanged");

  /* layers that would return x itself check it */
  ad_tape_reset(ctx);
  ad_tensor *gone = batch(4, 3);
  ad_tensor_free(gone);
  nn_layer *flat = nn_flatten_new(ctx);
  cr_assert_null(nn_layer_forward(flat, gone, false));
  test_expect_error(ctx, AD_ERR_STATE, "x was freed", NULL);
  cr_assert_null(nn_model_forward(m, gone));
  test_expect_error(ctx, AD_ERR_STATE, "model_forward: x was freed", NULL);
  nn_layer_free(flat);

  /* an optimizer of another context's model */
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  nn_model *mo = nn_sequential_new(other);
  cr_assert_eq(nn_model_add(mo, nn_dense_new(other, 3, 2, &rng, NULL)), AD_OK);
  nn_opt_config ca = nn_opt_defaults(NN_OPT_ADAM, 0.01);
  nn_optimizer *oo = nn_optimizer_new(nn_model_params(mo), &ca);
  cr_assert_not_null(oo);
  const char *path = test_path("ctx.safetensors");
  cr_assert_eq(nn_model_save(m, oo, path), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "model_save: the optimizer is of another context", NULL);
  cr_assert_eq(nn_model_load(m, oo, path), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "model_load: the optimizer is of another context", NULL);
  nn_optimizer_free(oo), nn_model_free(mo), nn_model_free(m), ad_tensor_free(x);
  ad_ctx_free(other);
}

/* Every nn entry point given a NULL tensor or object (with a context to
 * report to) returns the error with a message naming the function and the
 * argument; and a NULL that an earlier failure produced keeps that
 * failure's message. */
Test(misuse_nn, null_arguments_set_a_message) {
  nn_model *m = small_model(1);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0, false, 0);
  nn_layer *relu = nn_activation_new(ctx, NN_ACT_RELU);
  ad_tensor *x = batch(1, 3), *y = batch(2, 2), *out[4];
  int64_t s2[2] = {4, 2};
  ad_tensor *lab = ad_zeros(ctx, AD_I32, 1, s2);
  cr_assert(m && opt && relu && lab);

  cr_assert_null(nn_model_forward(m, NULL));
  test_expect_error(ctx, AD_ERR_NULL, "model_forward: x is NULL", NULL);
  cr_assert_null(nn_layer_forward(relu, NULL, true));
  test_expect_error(ctx, AD_ERR_NULL, "relu: x is NULL", NULL);
  cr_assert_null(nn_layer_forward(nn_model_layer(m, 0), NULL, true));
  test_expect_error(ctx, AD_ERR_NULL, "dense '0': x is NULL", NULL);
  cr_assert_null(nn_activate(ctx, NULL, NN_ACT_TANH, 0));
  test_expect_error(ctx, AD_ERR_NULL, "activate: x is NULL", NULL);
  cr_assert_null(nn_predict(m, NULL, 0));
  test_expect_error(ctx, AD_ERR_NULL, "predict: x is NULL", NULL);
  cr_assert_eq(nn_train_step(NULL, opt, nn_mse_loss, x, y, 0, NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "train_step: model is NULL", NULL);
  cr_assert_eq(nn_train_step(m, opt, nn_mse_loss, x, NULL, 0, NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "train_step: y is NULL", NULL);
  nn_fit_opts fo = {.verbose = -1};
  cr_assert_eq(nn_fit(NULL, opt, nn_mse_loss, x, y, &fo, NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "fit: model is NULL", NULL);
  cr_assert_eq(nn_fit(m, opt, nn_mse_loss, NULL, y, &fo, NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "fit: x is NULL", NULL);
  cr_assert_eq(nn_evaluate(m, nn_mse_loss, x, NULL, 0, NULL, NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "evaluate: y is NULL", NULL);
  cr_assert_eq(nn_model_save(NULL, opt, test_path("x.st")), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "model_save: model is NULL", NULL);
  cr_assert_eq(nn_model_load(NULL, opt, test_path("x.st")), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "model_load: model is NULL", NULL);
  cr_assert_null(nn_cross_entropy_loss(ctx, x, NULL, NN_MEAN));
  test_expect_error(ctx, AD_ERR_NULL, "cross_entropy_loss: target is NULL", NULL);
  cr_assert_null(nn_nll_loss(ctx, NULL, lab, NN_MEAN));
  test_expect_error(ctx, AD_ERR_NULL, "nll_loss: scores is NULL", NULL);
  cr_assert_null(nn_take_rows(ctx, NULL, 0, NULL));
  test_expect_error(ctx, AD_ERR_NULL, "take_rows: tensor is NULL", NULL);
  cr_assert_null(nn_batcher_new(ctx, NULL, y, 2, false, 0));
  test_expect_error(ctx, AD_ERR_NULL, "batcher: x is NULL", NULL);
  cr_assert_eq(nn_train_test_split(ctx, NULL, y, 1, false, 0, &out[0], &out[1], &out[2], &out[3]),
               AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "train_test_split: x is NULL", NULL);
  cr_assert_eq(nn_init_tensor(ctx, NULL, nn_init_make(NN_INIT_ZEROS, 0, 0), NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "init: tensor is NULL", NULL);
  cr_assert_null(nn_l2_penalty(ctx, NULL, 0.1));
  test_expect_error(ctx, AD_ERR_NULL, "l2_penalty: parameter list is NULL", NULL);

  /* functions that return NULL without recording why */
  nn_layer *lam = nn_lambda_new(ctx, "silent", returns_null, NULL);
  cr_assert_null(nn_layer_forward(lam, x, true));
  test_expect_error(ctx, AD_ERR_ARG, "silent: the function returned NULL and recorded no error",
                    NULL);
  nn_model *custom = nn_model_new(ctx, forward_null, NULL);
  cr_assert_null(nn_model_forward(custom, x));
  test_expect_error(ctx, AD_ERR_ARG, "model_forward: the forward function returned NULL", NULL);

  /* a NULL made by a failed op keeps the op's message */
  int64_t s5[2] = {4, 5};
  ad_tensor *wide = ad_zeros(ctx, AD_F32, 2, s5);
  cr_assert_null(nn_model_forward(m, ad_add(ctx, x, wide)));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_SHAPE, "%s", ad_last_error(ctx));
  cr_assert_null(strstr(ad_last_error(ctx), "is NULL"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);

  nn_layer_free(lam), nn_layer_free(relu);
  nn_model_free(custom), nn_model_free(m);
  nn_optimizer_free(opt);
  ad_tensor_free(x), ad_tensor_free(y), ad_tensor_free(lab), ad_tensor_free(wide);
}

/* An ad_rng never seeded ("= {0}") draws 0 for ever: a Dense layer's
 * weights all came out -limit, an orthogonal init a fixed matrix, RReLU's
 * slopes all `lower`. Each entry point that takes a context refuses it,
 * and leaves the tensor unchanged. */
Test(misuse_nn, an_unseeded_rng_is_refused) {
  ad_rng zero = {{0, 0, 0, 0}};
  cr_assert_null(nn_dense_new(ctx, 3, 2, &zero, NULL));
  test_expect_error(ctx, AD_ERR_ARG, "nn_dense_new", "init: rng is not seeded", "ad_rng_seed",
                    NULL);
  int64_t s[2] = {3, 3};
  ad_tensor *t = ad_full(ctx, AD_F64, 2, s, 5);
  static const nn_init_kind kinds[] = {NN_INIT_UNIFORM,        NN_INIT_NORMAL,
                                       NN_INIT_XAVIER_UNIFORM, NN_INIT_HE_NORMAL,
                                       NN_INIT_ORTHOGONAL,     NN_INIT_TRUNC_NORMAL};
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    nn_init init = nn_init_make(kinds[k], kinds[k] == NN_INIT_TRUNC_NORMAL ? 1 : 0, 1);
    cr_assert_eq(nn_init_tensor(ctx, t, init, &zero), AD_ERR_ARG, "kind %d", (int)kinds[k]);
    test_expect_error(ctx, AD_ERR_ARG, "init: rng is not seeded", NULL);
    cr_assert_eq(ad_tensor_get(t, 4), 5.0, "kind %d changed the tensor", (int)kinds[k]);
  }
  cr_assert_eq(nn_init_tensor(ctx, t, nn_init_make(NN_INIT_CONSTANT, 2, 0), &zero), AD_OK, "%s",
               ad_last_error(ctx)); /* draws nothing */
  cr_assert_null(nn_rrelu(ctx, t, 0.1, 0.3, true, &zero));
  test_expect_error(ctx, AD_ERR_ARG, "rrelu: rng is not seeded", NULL);
  cr_assert_not_null(nn_rrelu(ctx, t, 0.1, 0.3, false, &zero), "%s", ad_last_error(ctx));
  ad_tensor_free(t);
}
