/* test_nn_pgroups.c: parameter groups (nn_optimizer_add_param_group)
 * against PyTorch 1.13's optimizers built with several param_groups
 * (tests/pgroups_fixtures.h, from tools/gen_pgroups_fixtures.py): SGD,
 * Adam, AdamW, RMSprop and Adagrad with settings differing per group, a
 * group added after steps were taken, StepLR and OneCycleLR over groups of
 * different base rates; a checkpoint round trip mid-run, the schedule and
 * plateau over groups, and the misuse add_param_group refuses. */
#include "nn.h"
#include "pgroups_fixtures.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

TEST_TMPDIR_SUITE(pgroups, "ad-pgroups");

static const char *const pnames[3] = {"0.weight", "0.bias", "1.weight"};

/* A model of the fixture's three f64 parameters, w [2,3], b [3], h [3],
 * and their fixed gradients per step */
typedef struct fixture {
  nn_model *m;
  ad_tensor *p[3];
  ad_tensor *g[3][3]; /* [step % 3][parameter] */
  nn_params *lists[PG_MAXG];
} fixture;

static const int64_t shapes[3][2] = {{2, 3}, {3, 0}, {3, 0}};

static void fixture_init(fixture *f) {
  memset(f, 0, sizeof *f);
  f->m = nn_sequential_new(ctx);
  cr_assert_not_null(f->m);
  int off = 0;
  for (int i = 0; i < 3; i++) {
    int nd = i == 0 ? 2 : 1;
    f->p[i] = nn_model_add_param(f->m, pnames[i], AD_F64, nd, shapes[i],
                                 (nn_init){NN_INIT_DEFAULT, 0, 0}, NULL);
    cr_assert_not_null(f->p[i], "%s", ad_last_error(ctx));
    for (int64_t k = 0; k < f->p[i]->size; k++) ad_tensor_set(f->p[i], k, pg_p0[off + k]);
    off += (int)f->p[i]->size;
  }
  off = 0;
  for (int t = 0; t < 3; t++)
    for (int i = 0; i < 3; i++) {
      f->g[t][i] = ad_zeros(ctx, AD_F64, i == 0 ? 2 : 1, shapes[i]);
      for (int64_t k = 0; k < f->g[t][i]->size; k++) ad_tensor_set(f->g[t][i], k, pg_g[off++]);
    }
}

static void fixture_fini(fixture *f) {
  for (int t = 0; t < 3; t++)
    for (int i = 0; i < 3; i++) ad_tensor_free(f->g[t][i]);
  for (int g = 0; g < PG_MAXG; g++) nn_params_free(f->lists[g]);
  nn_model_free(f->m);
}

/* A list of the parameters whose bits are in mask (bit i: parameter i) */
static nn_params *sublist(fixture *f, int g, unsigned mask) {
  nn_params *l = nn_params_new(ctx);
  cr_assert_not_null(l);
  for (int i = 0; i < 3; i++)
    if (mask >> i & 1) cr_assert_eq(nn_params_add(l, pnames[i], f->p[i], false), AD_OK);
  f->lists[g] = l;
  return l;
}

/* Gradients of step t through the tape: L = sum_i sum(p_i G_i). */
static void set_grads(fixture *f, int t) {
  ad_tape_reset(ctx);
  nn_params_zero_grad(nn_model_params(f->m));
  ad_tensor *l = NULL;
  for (int i = 0; i < 3; i++) {
    ad_tensor *s = ad_sum(ctx, ad_mul(ctx, f->p[i], f->g[t % 3][i]));
    l = l ? ad_add(ctx, l, s) : s;
  }
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
}

/* One group of a case: its parameters, the step it joins before (0: at
 * construction) and its settings */
typedef struct gspec {
  unsigned mask;
  int at;
  nn_opt_config_ext cfg;
} gspec;

typedef struct pcase {
  const char *name;
  int ng;
  gspec g[PG_MAXG];
  const nn_schedule_ext2 *sched; /* or NULL */
  const double *want;
  const nn_plateau *plateau; /* or NULL: stepped with pg_metrics */
} pcase;

static nn_opt_config_ext cfg_of(nn_opt_kind k, double lr) { return nn_opt_defaults_ext(k, lr); }

/* Builds the optimizer of c over f (the groups of step 0) */
static nn_optimizer *make(fixture *f, const pcase *c) {
  nn_optimizer *o = nn_optimizer_new_ext(sublist(f, 0, c->g[0].mask), &c->g[0].cfg);
  cr_assert_not_null(o, "%s", ad_last_error(ctx));
  for (int g = 1; g < c->ng; g++)
    if (c->g[g].at == 0)
      cr_assert_eq(nn_optimizer_add_param_group(o, sublist(f, g, c->g[g].mask), &c->g[g].cfg),
                   AD_OK, "%s", ad_last_error(ctx));
  if (c->sched)
    cr_assert_eq(nn_optimizer_set_schedule_ext2(o, c->sched), AD_OK, "%s", ad_last_error(ctx));
  if (c->plateau)
    cr_assert_eq(nn_optimizer_set_plateau(o, c->plateau), AD_OK, "%s", ad_last_error(ctx));
  return o;
}

/* Steps t0 .. t1-1 of c, comparing with torch after each (want: NULL to
 * skip) */
static void run_steps(fixture *f, nn_optimizer *o, const pcase *c, int t0, int t1,
                      const double *want) {
  for (int t = t0; t < t1; t++) {
    for (int g = 1; g < c->ng; g++)
      if (c->g[g].at == t && t > 0)
        cr_assert_eq(nn_optimizer_add_param_group(o, sublist(f, g, c->g[g].mask), &c->g[g].cfg),
                     AD_OK, "%s", ad_last_error(ctx));
    set_grads(f, t);
    cr_assert_eq(nn_optimizer_step(o), AD_OK, "%s", ad_last_error(ctx));
    if (c->sched) cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK, "%s", ad_last_error(ctx));
    if (c->plateau)
      cr_assert_eq(nn_optimizer_plateau_step(o, pg_metrics[t]), AD_OK, "%s", ad_last_error(ctx));
    if (!want) continue;
    const double *w = want + (size_t)t * (12 + PG_MAXG);
    for (int i = 0, k = 0; i < 3; i++)
      for (int64_t e = 0; e < f->p[i]->size; e++, k++) {
        double got = ad_tensor_get(f->p[i], e);
        cr_assert(test_close(got, w[k], 1e-12 * fmax(1, fabs(w[k]))),
                  "%s step %d %s[%lld]: %.17g, torch %.17g", c->name, t + 1, pnames[i],
                  (long long)e, got, w[k]);
      }
    for (int g = 0; g < PG_MAXG; g++) {
      double got = g < nn_optimizer_group_count(o) ? nn_optimizer_group_lr(o, g) : 0;
      cr_assert(test_close(got, w[12 + g], 1e-12 * fabs(w[12 + g])),
                "%s step %d: group %d's lr %.17g, torch %.17g", c->name, t + 1, g, got, w[12 + g]);
    }
  }
}

static void check_case(const pcase *c) {
  fixture f;
  fixture_init(&f);
  nn_optimizer *o = make(&f, c);
  run_steps(&f, o, c, 0, PG_STEPS, c->want);
  nn_optimizer_free(o);
  fixture_fini(&f);
}

/* The cases of tools/gen_pgroups_fixtures.py */
static int make_cases(pcase *cs, nn_schedule_ext2 *step, nn_schedule_ext2 *one, nn_plateau *pl) {
  int n = 0;
  nn_opt_config_ext a, b, d;

  a = cfg_of(NN_OPT_SGD, 0.1), a.base.momentum = 0.9, a.base.weight_decay = 0.01;
  b = cfg_of(NN_OPT_SGD, 0.05);
  d = cfg_of(NN_OPT_SGD, 0.2), d.base.momentum = 0.8, d.base.nesterov = true;
  d.base.weight_decay = 0.001;
  cs[n++] = (pcase){"sgd3", 3, {{1, 0, a}, {2, 0, b}, {4, 0, d}}, NULL, pg_sgd3, NULL};

  a = cfg_of(NN_OPT_SGD, 0.1), a.base.momentum = 0.9, a.base.dampening = 0.3;
  b = cfg_of(NN_OPT_SGD, 0.3), b.base.momentum = 0.5, b.base.weight_decay = 0.1;
  b.base.maximize = true;
  cs[n++] = (pcase){"sgd_damp", 2, {{5, 0, a}, {2, 0, b}}, NULL, pg_sgd_damp, NULL};

  a = cfg_of(NN_OPT_ADAM, 0.01), a.base.weight_decay = 0.01;
  b = cfg_of(NN_OPT_ADAM, 0.001), b.base.beta1 = 0.8, b.base.beta2 = 0.5, b.base.amsgrad = true;
  cs[n++] = (pcase){"adam2", 2, {{5, 0, a}, {2, 0, b}}, NULL, pg_adam2, NULL};

  a = cfg_of(NN_OPT_ADAMW, 0.01), a.base.weight_decay = 0.1;
  b = cfg_of(NN_OPT_ADAMW, 0.01), b.base.weight_decay = 0; /* no decay on the bias */
  cs[n++] = (pcase){"adamw2", 2, {{5, 0, a}, {2, 0, b}}, NULL, pg_adamw2, NULL};

  a = cfg_of(NN_OPT_RMSPROP, 0.01), a.base.alpha = 0.9, a.base.centered = true;
  a.base.momentum = 0.5;
  b = cfg_of(NN_OPT_RMSPROP, 0.02), b.base.weight_decay = 0.01;
  cs[n++] = (pcase){"rmsprop2", 2, {{1, 0, a}, {6, 0, b}}, NULL, pg_rmsprop2, NULL};

  /* PyTorch 1.13's Adagrad fills every group's sum with its constructor's
   * initial_accumulator_value; ours is each group's own: the same here */
  a = cfg_of(NN_OPT_ADAGRAD, 0.1), a.base.lr_decay = 0.01, a.base.initial_accumulator = 0.1;
  b = cfg_of(NN_OPT_ADAGRAD, 0.05), b.base.initial_accumulator = 0.1, b.base.weight_decay = 0.01;
  d = cfg_of(NN_OPT_ADAGRAD, 0.2), d.base.eps = 1e-3, d.base.initial_accumulator = 0.1;
  cs[n++] = (pcase){"adagrad3", 3, {{1, 0, a}, {2, 0, b}, {4, 0, d}}, NULL, pg_adagrad3, NULL};

  a = cfg_of(NN_OPT_ADAM, 0.01);
  b = cfg_of(NN_OPT_ADAM, 0.02), b.base.weight_decay = 0.01, b.base.beta1 = 0.5;
  b.base.beta2 = 0.9;
  cs[n++] = (pcase){"adam_late", 2, {{3, 0, a}, {4, 3, b}}, NULL, pg_adam_late, NULL};

  a = cfg_of(NN_OPT_SGD, 0.1), a.base.momentum = 0.9;
  b = cfg_of(NN_OPT_SGD, 0.05), b.base.momentum = 0.5, b.base.weight_decay = 0.01;
  cs[n++] = (pcase){"sgd_late", 2, {{2, 0, a}, {5, 2, b}}, NULL, pg_sgd_late, NULL};

  *step = nn_schedule_ext2_defaults(NN_SCHED_STEP);
  step->step_size = 2, step->gamma = 0.5;
  a = cfg_of(NN_OPT_SGD, 0.1), a.base.momentum = 0.9;
  b = cfg_of(NN_OPT_SGD, 0.01), b.base.momentum = 0.9;
  cs[n++] = (pcase){"sgd_steplr", 2, {{3, 0, a}, {4, 0, b}}, step, pg_sgd_steplr, NULL};

  *one = nn_schedule_ext2_defaults(NN_SCHED_ONECYCLE);
  one->max_lr = 0.1, one->total_steps = PG_STEPS;
  a = cfg_of(NN_OPT_ADAM, 0.04);
  b = cfg_of(NN_OPT_ADAM, 0.01); /* max_lr 0.1 * 0.01 / 0.04: torch's [0.1, 0.025] */
  cs[n++] = (pcase){"adam_onecycle", 2, {{3, 0, a}, {4, 0, b}}, one, pg_adam_onecycle, NULL};

  *pl = nn_plateau_defaults();
  pl->factor = 0.5, pl->patience = 0, pl->min_lr = 0.01;
  a = cfg_of(NN_OPT_SGD, 0.1), a.base.momentum = 0.9;
  b = cfg_of(NN_OPT_SGD, 0.03), b.base.weight_decay = 0.01;
  cs[n++] = (pcase){"sgd_plateau", 2, {{1, 0, a}, {6, 0, b}}, NULL, pg_sgd_plateau, pl};
  return n;
}

Test(pgroups, groups_train_as_torchs_param_groups) {
  pcase cs[16];
  nn_schedule_ext2 step, one;
  nn_plateau pl;
  int n = make_cases(cs, &step, &one, &pl);
  for (int i = 0; i < n; i++) check_case(&cs[i]);
  cr_log_info("pgroups: %d PyTorch cases of %d steps matched to 1e-12", n, PG_STEPS);
}

/* A run saved mid-way and resumed in a fresh model and optimizer
 * continues bit for bit, for every case (the rates, the schedule's epoch,
 * a late group's state included) */
Test(pgroups, checkpoint_resumes_bit_for_bit) {
  pcase cs[16];
  nn_schedule_ext2 step, one;
  nn_plateau pl;
  int n = make_cases(cs, &step, &one, &pl);
  char path[512];
  snprintf(path, sizeof path, "%s/pg.safetensors", tmpdir);
  for (int i = 0; i < n; i++) {
    const pcase *c = &cs[i];
    fixture a, b;
    fixture_init(&a), fixture_init(&b);
    nn_optimizer *oa = make(&a, c), *ob = make(&b, c);
    run_steps(&a, oa, c, 0, 4, NULL);
    cr_assert_eq(nn_model_save(a.m, oa, path), AD_OK, "%s", ad_last_error(ctx));
    for (int g = 1; g < c->ng; g++) /* b: its late groups added as a had them at step 4 */
      if (c->g[g].at > 0 && c->g[g].at <= 3)
        cr_assert_eq(nn_optimizer_add_param_group(ob, sublist(&b, g, c->g[g].mask), &c->g[g].cfg),
                     AD_OK);
    cr_assert_eq(nn_model_load(b.m, ob, path), AD_OK, "%s: %s", c->name, ad_last_error(ctx));
    run_steps(&a, oa, c, 4, PG_STEPS, NULL);
    run_steps(&b, ob, c, 4, PG_STEPS, NULL);
    for (int p = 0; p < 3; p++)
      cr_assert_eq(memcmp(a.p[p]->data, b.p[p]->data, (size_t)a.p[p]->size * sizeof(double)), 0,
                   "%s: %s differs after resuming", c->name, pnames[p]);
    for (int g = 0; g < nn_optimizer_group_count(oa); g++)
      cr_assert_eq(nn_optimizer_group_lr(oa, g), nn_optimizer_group_lr(ob, g));
    nn_optimizer_free(oa), nn_optimizer_free(ob);
    fixture_fini(&a), fixture_fini(&b);
  }
}

/* The last error is st with a message containing want */
static void expect_error(ad_status got, ad_status st, const char *want) {
  cr_assert_eq(got, st, "status %d, want %d: %s", (int)got, (int)st, ad_last_error(ctx));
  cr_assert(strstr(ad_last_error(ctx), want), "message '%s' lacks '%s'", ad_last_error(ctx), want);
}

Test(pgroups, add_param_group_refuses_misuse) {
  fixture f;
  fixture_init(&f);
  nn_opt_config_ext a = cfg_of(NN_OPT_ADAM, 0.01);
  nn_optimizer *o = nn_optimizer_new_ext(sublist(&f, 0, 1), &a);
  cr_assert_not_null(o);
  nn_params *bl = sublist(&f, 1, 2), *dup = sublist(&f, 2, 3); /* dup: w again, and b */
  nn_opt_config_ext x = *nn_optimizer_config_ext(o);
  cr_assert_eq(nn_optimizer_add_param_group(NULL, bl, &x), AD_ERR_NULL);
  expect_error(nn_optimizer_add_param_group(o, NULL, &x), AD_ERR_NULL,
               "optimizer_add_param_group: params is NULL");
  expect_error(nn_optimizer_add_param_group(o, bl, NULL), AD_ERR_NULL,
               "optimizer_add_param_group: cfg is NULL");
  expect_error(nn_optimizer_add_param_group(o, dup, &x), AD_ERR_ARG,
               "some parameters appear in more than one parameter group: '0.weight'");
  nn_opt_config_ext k = cfg_of(NN_OPT_SGD, 0.1);
  expect_error(nn_optimizer_add_param_group(o, bl, &k), AD_ERR_ARG,
               "the group's kind is sgd; the optimizer's is adam");
  nn_opt_config_ext bad = x;
  bad.base.lr = -1;
  expect_error(nn_optimizer_add_param_group(o, bl, &bad), AD_ERR_ARG, "lr must be >= 0");
  bad = x, bad.base.beta2 = NAN;
  expect_error(nn_optimizer_add_param_group(o, bl, &bad), AD_ERR_ARG, "beta2 must be in [0,1)");
  bad = x, bad.base.clip_norm = 1;
  expect_error(nn_optimizer_add_param_group(o, bl, &bad), AD_ERR_ARG,
               "clip_norm 1 and clip_value 0 must be group 0's (0, 0)");
  bad = x, bad.momentum_decay = -1;
  expect_error(nn_optimizer_add_param_group(o, bl, &bad), AD_ERR_ARG,
               "momentum_decay must be finite and >= 0");
  nn_params *empty = nn_params_new(ctx);
  expect_error(nn_optimizer_add_param_group(o, empty, &x), AD_ERR_ARG,
               "the parameter list is empty");
  nn_params_free(empty);
  expect_error(nn_optimizer_add_param_group(o, nn_model_buffers(f.m), &x), AD_ERR_ARG,
               "the list holds buffers");
  /* another tensor under a name group 0 has */
  ad_tensor *other = ad_zeros(ctx, AD_F64, 1, (int64_t[]){3});
  nn_params *clash = nn_params_new(ctx);
  cr_assert_eq(nn_params_add(clash, "0.weight", other, true), AD_OK);
  expect_error(nn_optimizer_add_param_group(o, clash, &x), AD_ERR_ARG,
               "parameter name '0.weight' is another tensor's of group 0");
  /* a list of another context */
  ad_ctx *c2 = ad_ctx_new();
  nn_params *foreign = nn_params_new(c2);
  cr_assert_eq(nn_params_add(foreign, "z", ad_zeros(c2, AD_F64, 1, (int64_t[]){2}), true), AD_OK);
  expect_error(nn_optimizer_add_param_group(o, foreign, &x), AD_ERR_ARG,
               "the parameter list is of another context");
  nn_params_free(foreign);
  ad_ctx_free(c2);
  /* nothing of the refused calls stayed */
  cr_assert_eq(nn_optimizer_group_count(o), 1);
  int ns = nn_optimizer_state_count(o);
  cr_assert_eq(nn_optimizer_add_param_group(o, bl, &x), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_group_count(o), 2);
  /* the count, group 0's membership, b's m, v and step, the group's two
   * rates and its membership */
  cr_assert_eq(nn_optimizer_state_count(o), ns + 10);
  const char *const *names = nn_optimizer_state_names(o);
  cr_assert_str_eq(names[ns], "adam.param_groups");
  cr_assert_str_eq(names[ns + 1], "adam.group0.params");
  cr_assert_str_eq(names[ns + 2], "adam.group0.names");
  cr_assert_str_eq(names[ns + 3], "adam.m.0.bias");
  cr_assert_str_eq(names[ns + 6], "adam.group1.lr");
  cr_assert_str_eq(names[ns + 7], "adam.group1.schedule.lr0");
  cr_assert_str_eq(names[ns + 8], "adam.group1.params");
  cr_assert_str_eq(names[ns + 9], "adam.group1.names");
  expect_error(nn_optimizer_add_param_group(o, bl, &x), AD_ERR_ARG,
               "some parameters appear in more than one parameter group: '0.bias' is in group 1");
  /* group indices */
  cr_assert_eq(nn_optimizer_group_params(o, 0), nn_optimizer_params(o));
  cr_assert_eq(nn_optimizer_group_params(o, 1), bl);
  cr_assert_null(nn_optimizer_group_params(o, 2));
  cr_assert(strstr(ad_last_error(ctx), "optimizer_group_params: parameter group 2 out of range"));
  cr_assert_null(nn_optimizer_group_params(NULL, 0));
  cr_assert(isnan(nn_optimizer_group_lr(o, 2)));
  cr_assert(
      strstr(ad_last_error(ctx), "optimizer_group_lr: parameter group 2 out of range [0, 2)"));
  cr_assert(isnan(nn_optimizer_group_lr(NULL, 0)));
  cr_assert_null(nn_optimizer_group_config_ext(o, -1));
  cr_assert(strstr(ad_last_error(ctx), "optimizer_group_config_ext: parameter group -1"));
  cr_assert_null(nn_optimizer_group_config_ext(NULL, 0));
  expect_error(nn_optimizer_set_group_lr(o, 5, 0.1), AD_ERR_ARG,
               "optimizer_set_group_lr: parameter group 5 out of range");
  expect_error(nn_optimizer_set_group_lr(o, 1, NAN), AD_ERR_ARG, "lr must be finite and >= 0");
  expect_error(nn_optimizer_set_group_lr(o, 1, -1), AD_ERR_ARG, "lr must be finite and >= 0");
  cr_assert_eq(nn_optimizer_set_group_lr(NULL, 0, 0.1), AD_ERR_NULL);
  cr_assert_eq(nn_optimizer_group_count(NULL), 0);
  nn_optimizer_free(o);
  nn_params_free(clash);
  /* freed parameters: the model's tensors freed under a live optimizer */
  fixture g;
  fixture_init(&g);
  nn_optimizer *o2 = nn_optimizer_new_ext(sublist(&g, 0, 1), &a);
  nn_params *late = sublist(&g, 1, 2);
  nn_model_free(g.m);
  g.m = NULL;
  expect_error(nn_optimizer_add_param_group(o2, late, &x), AD_ERR_STATE,
               "optimizer_add_param_group: parameter 0 was freed");
  nn_optimizer_free(o2);
  fixture_fini(&g);
  fixture_fini(&f);
}

/* Settings per group: the getters, set_lr (every group), set_group_lr
 * (one, the schedule's epoch kept), the plateau (each group reduced on
 * its own, as PyTorch's ReduceLROnPlateau), a cycled momentum (every
 * group's), the refusals of a schedule over groups */
Test(pgroups, rates_schedules_and_plateau_over_groups) {
  fixture f;
  fixture_init(&f);
  nn_opt_config_ext a = cfg_of(NN_OPT_SGD, 0.1);
  a.base.momentum = 0.9;
  nn_optimizer *o = nn_optimizer_new_ext(sublist(&f, 0, 1), &a);
  nn_opt_config_ext b = a;
  b.base.lr = 0.01, b.base.weight_decay = 0.5;
  cr_assert_eq(nn_optimizer_add_param_group(o, sublist(&f, 1, 2), &b), AD_OK);
  cr_assert_eq(nn_optimizer_group_config_ext(o, 1)->base.weight_decay, 0.5);
  cr_assert_eq(nn_optimizer_group_config_ext(o, 0)->base.weight_decay, 0);
  cr_assert_eq(nn_optimizer_config(o)->lr, 0.1); /* group 0's */
  cr_assert_eq(nn_optimizer_lr(o), 0.1);
  cr_assert_eq(nn_optimizer_set_group_lr(o, 1, 0.02), AD_OK);
  cr_assert_eq(nn_optimizer_group_lr(o, 1), 0.02);
  cr_assert_eq(nn_optimizer_group_lr(o, 0), 0.1);
  cr_assert_eq(nn_optimizer_set_lr(o, 0.3), AD_OK);
  cr_assert_eq(nn_optimizer_group_lr(o, 1), 0.3);
  cr_assert_eq(nn_optimizer_set_group_lr(o, 1, 0.03), AD_OK);
  /* the plateau: min_lr 0.02 stops group 1 before group 0 */
  nn_plateau p = nn_plateau_defaults();
  p.patience = 0, p.factor = 0.5, p.min_lr = 0.02;
  cr_assert_eq(nn_optimizer_set_plateau(o, &p), AD_OK);
  cr_assert_eq(nn_optimizer_plateau_step(o, 1.0), AD_OK);
  cr_assert_eq(nn_optimizer_plateau_step(o, 2.0), AD_OK);
  cr_assert_eq(nn_optimizer_group_lr(o, 0), 0.15);
  cr_assert_eq(nn_optimizer_group_lr(o, 1), 0.02);
  cr_assert_eq(nn_optimizer_plateau_step(o, 3.0), AD_OK);
  cr_assert_eq(nn_optimizer_group_lr(o, 0), 0.075);
  cr_assert_eq(nn_optimizer_group_lr(o, 1), 0.02);
  /* a step schedule from each group's rate; set_group_lr keeps the epoch */
  nn_schedule s = {NN_SCHED_STEP, 1, 0.5, 0, 0};
  cr_assert_eq(nn_optimizer_set_schedule(o, &s), AD_OK);
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  cr_assert_eq(nn_optimizer_group_lr(o, 0), 0.0375);
  cr_assert_eq(nn_optimizer_group_lr(o, 1), 0.01);
  cr_assert_eq(nn_optimizer_set_group_lr(o, 1, 0.4), AD_OK);
  cr_assert_eq(nn_optimizer_group_lr(o, 1), 0.2);
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  cr_assert_eq(nn_optimizer_group_lr(o, 1), 0.1);
  cr_assert_eq(nn_optimizer_group_lr(o, 0), 0.01875);
  /* a onecycle cycles every group's momentum; a group without momentum
   * cannot join, nor can a onecycle attach when group 0's rate is 0 */
  nn_schedule_ext2 one = nn_schedule_ext2_defaults(NN_SCHED_ONECYCLE);
  one.max_lr = 1, one.total_steps = 10;
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &one), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_group_config_ext(o, 1)->base.momentum, 0.95);
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  double m0 = nn_optimizer_group_config_ext(o, 0)->base.momentum;
  cr_assert(m0 < 0.95);
  cr_assert_eq(nn_optimizer_group_config_ext(o, 1)->base.momentum, m0);
  nn_opt_config_ext c = a;
  c.base.momentum = 0;
  expect_error(nn_optimizer_add_param_group(o, sublist(&f, 2, 4), &c), AD_ERR_ARG,
               "optimizer_add_param_group: optimizer sgd: the attached schedule: cycle_momentum "
               "needs momentum > 0");
  cr_assert_eq(nn_optimizer_set_lr(o, 0), AD_OK);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, NULL), AD_OK);
  cr_assert_eq(nn_optimizer_set_group_lr(o, 1, 0.1), AD_OK);
  expect_error(nn_optimizer_set_schedule_ext2(o, &one), AD_ERR_ARG,
               "onecycle over 2 parameter groups scales max_lr by each group's rate / group 0's, "
               "and group 0's rate is 0");
  nn_optimizer_free(o);
  fixture_fini(&f);
}

/* A checkpoint of another number of groups is refused, naming the counts */
Test(pgroups, checkpoint_of_another_group_count_is_refused) {
  char path[512];
  fixture f;
  fixture_init(&f);
  nn_opt_config_ext a = cfg_of(NN_OPT_ADAM, 0.01);
  nn_optimizer *one = nn_optimizer_new_ext(nn_model_params(f.m), &a);
  nn_optimizer *two = nn_optimizer_new_ext(sublist(&f, 0, 3), &a);
  nn_optimizer *three = nn_optimizer_new_ext(sublist(&f, 1, 1), &a);
  cr_assert_eq(nn_optimizer_add_param_group(two, sublist(&f, 2, 4), &a), AD_OK);
  nn_params *l1 = nn_params_new(ctx), *l2 = nn_params_new(ctx);
  nn_params_add(l1, "0.bias", f.p[1], false), nn_params_add(l2, "1.weight", f.p[2], false);
  cr_assert_eq(nn_optimizer_add_param_group(three, l1, &a), AD_OK);
  cr_assert_eq(nn_optimizer_add_param_group(three, l2, &a), AD_OK);
  snprintf(path, sizeof path, "%s/one.safetensors", tmpdir);
  cr_assert_eq(nn_model_save(f.m, one, path), AD_OK);
  expect_error(nn_model_load(f.m, two, path), AD_ERR_FORMAT,
               "it holds one parameter group (no 'adam.param_groups'); the optimizer has 2");
  snprintf(path, sizeof path, "%s/two.safetensors", tmpdir);
  cr_assert_eq(nn_model_save(f.m, two, path), AD_OK);
  expect_error(nn_model_load(f.m, one, path), AD_ERR_FORMAT,
               "it holds 2 parameter groups ('adam.param_groups'); the optimizer has 1");
  expect_error(nn_model_load(f.m, three, path), AD_ERR_FORMAT,
               "it holds 2 parameter groups ('adam.param_groups'); the optimizer has 3");
  cr_assert_eq(nn_model_load(f.m, two, path), AD_OK, "%s", ad_last_error(ctx));
  nn_optimizer_free(one), nn_optimizer_free(two), nn_optimizer_free(three);
  nn_params_free(l1), nn_params_free(l2);
  fixture_fini(&f);
}

/* A checkpoint whose groups hold other tensors than the optimizer's is
 * refused (PyTorch checks each group's size; the names are checked too),
 * and a file without the membership entries (from before them) loads */
Test(pgroups, checkpoint_of_other_group_members_is_refused) {
  char path[512];
  fixture f;
  fixture_init(&f);
  nn_opt_config_ext a = cfg_of(NN_OPT_ADAM, 0.01);
  /* saved: {w, b} and {h}; then {w} and {b, h}; then {w, h} and {b} */
  nn_optimizer *saved = nn_optimizer_new_ext(sublist(&f, 0, 3), &a);
  cr_assert_eq(nn_optimizer_add_param_group(saved, sublist(&f, 1, 4), &a), AD_OK);
  nn_optimizer *sizes = nn_optimizer_new_ext(sublist(&f, 2, 1), &a);
  nn_params *l1 = nn_params_new(ctx), *l2 = nn_params_new(ctx), *l3 = nn_params_new(ctx);
  nn_params_add(l3, "0.bias", f.p[1], false), nn_params_add(l3, "1.weight", f.p[2], false);
  cr_assert_eq(nn_optimizer_add_param_group(sizes, l3, &a), AD_OK);
  nn_params_add(l1, "0.weight", f.p[0], false), nn_params_add(l1, "1.weight", f.p[2], false);
  nn_params_add(l2, "0.bias", f.p[1], false);
  nn_optimizer *names = nn_optimizer_new_ext(l1, &a);
  cr_assert_eq(nn_optimizer_add_param_group(names, l2, &a), AD_OK);
  snprintf(path, sizeof path, "%s/members.safetensors", tmpdir);
  cr_assert_eq(nn_optimizer_set_group_lr(saved, 1, 0.5), AD_OK);
  cr_assert_eq(nn_model_save(f.m, saved, path), AD_OK, "%s", ad_last_error(ctx));
  expect_error(nn_model_load(f.m, sizes, path), AD_ERR_FORMAT,
               "its parameter group 0 holds 2 tensors ('adam.group0.params'); the optimizer's "
               "holds 1");
  expect_error(nn_model_load(f.m, names, path), AD_ERR_FORMAT,
               "its parameter group 0 holds other tensors than the optimizer's (their names "
               "differ: 'adam.group0.names')");
  cr_assert_float_eq(nn_optimizer_group_lr(names, 1), 0.01, 0, "a refused load changed a rate");
  /* the same file without the membership entries loads, as files from
   * before them do */
  int n = nn_optimizer_state_count(saved), k = 0, np = nn_params_count(nn_model_params(f.m));
  const char *nm[64];
  ad_tensor *ts[64];
  cr_assert(n + np <= 64);
  for (int i = 0; i < np; i++)
    nm[k] = nn_params_name(nn_model_params(f.m), i),
    ts[k++] = nn_params_tensor(nn_model_params(f.m), i);
  for (int i = 0; i < n; i++) {
    const char *s = nn_optimizer_state_names(saved)[i];
    if (strstr(s, ".params") || strstr(s, ".names")) continue;
    nm[k] = s, ts[k++] = nn_optimizer_state_tensors(saved)[i];
  }
  cr_assert_eq(k, np + n - 4);
  cr_assert_eq(nn_checkpoint_save(ctx, path, k, nm, ts), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_model_load(f.m, names, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_float_eq(nn_optimizer_group_lr(names, 1), 0.5, 0);
  nn_optimizer_free(saved), nn_optimizer_free(sizes), nn_optimizer_free(names);
  nn_params_free(l1), nn_params_free(l2), nn_params_free(l3);
  fixture_fini(&f);
}

/* nn_optimizer_step_ranges over every group's parameters, in order: the
 * whole ranges give nn_optimizer_step's result, bit for bit; part of them
 * that result on their elements and the others untouched (what each rank
 * of a sharded step computes) */
Test(pgroups, step_ranges_cover_every_group) {
  fixture f, g, h;
  fixture_init(&f), fixture_init(&g), fixture_init(&h);
  nn_opt_config_ext a = cfg_of(NN_OPT_ADAM, 0.01), b = cfg_of(NN_OPT_ADAM, 0.1);
  b.base.weight_decay = 0.1;
  fixture *fs[3] = {&f, &g, &h};
  nn_optimizer *os[3];
  for (int k = 0; k < 3; k++) {
    os[k] = nn_optimizer_new_ext(sublist(fs[k], 0, 1), &a);
    cr_assert_eq(nn_optimizer_add_param_group(os[k], sublist(fs[k], 1, 6), &b), AD_OK);
  }
  int64_t lo[3] = {0, 0, 0}, hi[3] = {6, 3, 3}, mid[3] = {2, 1, 2};
  for (int t = 0; t < 3; t++) {
    for (int k = 0; k < 3; k++) set_grads(fs[k], t);
    cr_assert_eq(nn_optimizer_step(os[0]), AD_OK);
    cr_assert_eq(nn_optimizer_step_ranges(os[1], lo, hi), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_eq(nn_optimizer_step_ranges(os[2], lo, mid), AD_OK, "%s", ad_last_error(ctx));
  }
  for (int p = 0, off = 0; p < 3; off += (int)f.p[p]->size, p++) {
    cr_assert_eq(memcmp(f.p[p]->data, g.p[p]->data, (size_t)f.p[p]->size * sizeof(double)), 0);
    for (int64_t e = 0; e < f.p[p]->size; e++)
      cr_assert_eq(ad_tensor_get(h.p[p], e), e < mid[p] ? ad_tensor_get(f.p[p], e) : pg_p0[off + e],
                   "%s[%lld]", pnames[p], (long long)e);
  }
  int64_t bad[3] = {6, 4, 3};
  expect_error(nn_optimizer_step_ranges(os[1], lo, bad), AD_ERR_ARG,
               "parameter 1 '0.bias' of 3 elements: range [0, 4)");
  for (int k = 0; k < 3; k++) nn_optimizer_free(os[k]), fixture_fini(fs[k]);
}

/* nn_fit trains a model through an optimizer of several groups (the
 * backbone frozen by lr 0, the head at 0.1 with a step schedule): each
 * group's rate applies, the history records group 0's rate */
Test(pgroups, fit_trains_every_group_at_its_rate) {
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 3, 4, &rng, NULL)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 4, 1, &rng, NULL)), AD_OK);
  nn_params *p = nn_model_params(m), *lists[2] = {nn_params_new(ctx), nn_params_new(ctx)};
  for (int i = 0; i < nn_params_count(p); i++) /* "0.*": backbone; "1.*": head */
    nn_params_add(lists[nn_params_name(p, i)[0] == '1'], nn_params_name(p, i),
                  nn_params_tensor(p, i), false);
  nn_opt_config_ext head = cfg_of(NN_OPT_SGD, 0.1), backbone = head;
  backbone.base.lr = 0;
  nn_optimizer *o = nn_optimizer_new_ext(lists[1], &head);
  cr_assert_eq(nn_optimizer_add_param_group(o, lists[0], &backbone), AD_OK);
  nn_schedule s = {NN_SCHED_STEP, 1, 0.5, 0, 0};
  cr_assert_eq(nn_optimizer_set_schedule(o, &s), AD_OK);
  int64_t xs[2] = {8, 3}, ys[2] = {8, 1};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, xs, -1, 1),
            *y = ad_rand(ctx, &rng, AD_F32, 2, ys, -1, 1);
  double before[4][16];
  for (int i = 0; i < 4; i++)
    for (int64_t e = 0; e < nn_params_tensor(p, i)->size; e++)
      before[i][e] = ad_tensor_get(nn_params_tensor(p, i), e);
  nn_history *h = NULL;
  nn_fit_opts fo = {.epochs = 3, .batch_size = 4, .verbose = -1};
  cr_assert_eq(nn_fit(m, o, nn_mse_loss, x, y, &fo, &h), AD_OK, "%s", ad_last_error(ctx));
  for (int i = 0; i < 4; i++) {
    bool moved = false;
    for (int64_t e = 0; e < nn_params_tensor(p, i)->size; e++)
      moved |= ad_tensor_get(nn_params_tensor(p, i), e) != before[i][e];
    cr_assert_eq(moved, nn_params_name(p, i)[0] == '1', "%s", nn_params_name(p, i));
  }
  cr_assert_eq(nn_optimizer_steps(o), 6);
  cr_assert_eq(nn_history_get(h, "lr", 0), 0.1);
  cr_assert_eq(nn_history_get(h, "lr", 2), 0.025);
  cr_assert_eq(nn_optimizer_group_lr(o, 0), 0.0125);
  cr_assert_eq(nn_optimizer_group_lr(o, 1), 0);
  nn_history_free(h);
  nn_optimizer_free(o);
  nn_params_free(lists[0]), nn_params_free(lists[1]);
  ad_tensor_free(x), ad_tensor_free(y);
  nn_model_free(m);
}

/* A group over a tensor outside the model (read by a layer of it):
 * nn_train_step and nn_fit zero its gradient before each step, as they do
 * the model's, so each step reads that batch's gradient alone (with the
 * optimizer's list the model's, only the model's were zeroed and the
 * group's gradients added up over the steps). */
static ad_tensor *scale_by(ad_ctx *c, ad_tensor *x, bool training, void *ud) {
  (void)training;
  return ad_mul(c, x, ud);
}

Test(pgroups, train_step_zeroes_the_gradients_of_every_group) {
  int64_t one[1] = {1}, xs[2] = {4, 2}, ys[2] = {4, 1};
  ad_tensor *s = ad_full(ctx, AD_F64, 1, one, 2.0);
  cr_assert_eq(ad_tensor_set_requires_grad(s, true), AD_OK);
  nn_model *m = nn_sequential_new(ctx);
  nn_dense_opts dense = {.weight_init = {NN_INIT_CONSTANT, 0.3, 0}, .dtype = AD_F64};
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 2, 1, NULL, &dense)), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(nn_model_add(m, nn_lambda_new(ctx, "scale", scale_by, s)), AD_OK);
  nn_params *extra = nn_params_new(ctx);
  cr_assert_eq(nn_params_add(extra, "scale", s, false), AD_OK);
  /* lr 0: the same batch gives the same gradient at every step */
  nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0, 0, false, 0);
  cr_assert_not_null(o);
  cr_assert_eq(nn_optimizer_add_param_group(o, extra, nn_optimizer_config_ext(o)), AD_OK, "%s",
               ad_last_error(ctx));
  ad_tensor *x = ad_full(ctx, AD_F64, 2, xs, 0.5), *y = ad_full(ctx, AD_F64, 2, ys, 1.0);
  /* pred = 2 (0.3 + 0.3) 0.5 = 0.6; d mean (pred - 1)^2 / d s = 2 (-0.4) 0.3 = -0.24 */
  for (int t = 0; t < 3; t++) {
    cr_assert_eq(nn_train_step(m, o, nn_mse_loss, x, y, 0, NULL), AD_OK, "%s", ad_last_error(ctx));
    cr_assert(fabs(ad_tensor_get(s->grad, 0) + 0.24) < 1e-12, "step %d: the group's gradient %.17g",
              t, ad_tensor_get(s->grad, 0));
  }
  nn_optimizer_free(o);
  nn_params_free(extra);
  ad_tensor_free(x), ad_tensor_free(y);
  nn_model_free(m);
  ad_tensor_free(s);
}
