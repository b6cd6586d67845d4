/* test_nn_optim_ext.c: amsgrad, maximize, Adamax, NAdam and RAdam against
 * PyTorch 1.13's single-tensor steps (tests/optim_ext_fixtures.h, from
 * tools/gen_optim_ext_fixtures.py), their state names against torch's
 * state_dict keys, a checkpoint round trip of the new state, and the
 * settings they refuse. */
#include "nn.h"
#include "nn_io.h"
#include "optim_ext_fixtures.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

TEST_TMPDIR_SUITE(optim_ext, "ad-optim-ext");

static const char *const kind_name[] = {"sgd",   "adagrad", "rmsprop",  "adam", "adamw", "adamax",
                                        "nadam", "radam",   "adadelta", "asgd", "rprop"};

/* A model holding a weight [2,3] and a bias [3] of the fixture, and the
 * three fixed gradients of each. */
typedef struct fixture {
  nn_model *m;
  ad_tensor *w, *b;
  ad_tensor *gw[3], *gb[3];
} fixture;

static void fixture_init(fixture *f, ad_dtype dt) {
  int64_t ws[2] = {2, 3}, bs[1] = {3};
  f->m = nn_sequential_new(ctx);
  cr_assert_not_null(f->m);
  f->w = nn_model_add_param(f->m, "0.weight", dt, 2, ws, (nn_init){NN_INIT_DEFAULT, 0, 0}, NULL);
  f->b = nn_model_add_param(f->m, "0.bias", dt, 1, bs, (nn_init){NN_INIT_DEFAULT, 0, 0}, NULL);
  cr_assert(f->w && f->b, "%s", ad_last_error(ctx));
  for (int i = 0; i < 6; i++) ad_tensor_set(f->w, i, ox_p0_w[i]);
  for (int i = 0; i < 3; i++) ad_tensor_set(f->b, i, ox_p0_b[i]);
  for (int t = 0; t < 3; t++) {
    f->gw[t] = ad_zeros(ctx, dt, 2, ws);
    f->gb[t] = ad_zeros(ctx, dt, 1, bs);
    for (int i = 0; i < 6; i++) ad_tensor_set(f->gw[t], i, ox_g_w[6 * t + i]);
    for (int i = 0; i < 3; i++) ad_tensor_set(f->gb[t], i, ox_g_b[3 * t + i]);
  }
}

static void fixture_fini(fixture *f) {
  for (int t = 0; t < 3; t++) ad_tensor_free(f->gw[t]), ad_tensor_free(f->gb[t]);
  nn_model_free(f->m);
}

/* Gradients of step t (0-based) through the tape: L = sum(w Gw) + sum(b Gb). */
static void set_grads(fixture *f, int t) {
  ad_tape_reset(ctx);
  nn_params_zero_grad(nn_model_params(f->m));
  ad_tensor *l = ad_add(ctx, ad_sum(ctx, ad_mul(ctx, f->w, f->gw[t % 3])),
                        ad_sum(ctx, ad_mul(ctx, f->b, f->gb[t % 3])));
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
}

/* The state tensor named "<kind>.<state>.<param>", or NULL. */
static ad_tensor *state_named(const nn_optimizer *o, const char *state, const char *param) {
  char name[96];
  snprintf(name, sizeof name, "%s.%s.%s", kind_name[nn_optimizer_config(o)->kind], state, param);
  for (int i = 0; i < nn_optimizer_state_count(o); i++)
    if (strcmp(nn_optimizer_state_names(o)[i], name) == 0) return nn_optimizer_state_tensors(o)[i];
  return NULL;
}

/* |got - want| relative to max(|want|, floor). */
static double rel_err(double got, double want, double floor) {
  double d = fabs(got - want), s = fabs(want) > floor ? fabs(want) : floor;
  return d == 0 ? 0 : d / s;
}

/* Runs cfg for OX_STEPS steps in dt and compares, after every step, the
 * parameters and the state tensors named states[] (ours, in the order of
 * the fixture's) with torch's trajectory want. Returns the largest
 * relative error; fails beyond tol. */
static double check_run(const nn_opt_config_ext *cfg, const double *want, const char *const *states,
                        int nstates, ad_dtype dt, double tol) {
  fixture f;
  fixture_init(&f, dt);
  nn_optimizer *o = nn_optimizer_new_ext(nn_model_params(f.m), cfg);
  cr_assert_not_null(o, "%s", ad_last_error(ctx));
  ad_tensor *got[4][2] = {{f.w, f.b}};
  for (int k = 0; k < nstates; k++)
    for (int p = 0; p < 2; p++) {
      got[1 + k][p] = state_named(o, states[k], p ? "0.bias" : "0.weight");
      cr_assert_not_null(got[1 + k][p], "%s: no state %s", kind_name[cfg->base.kind], states[k]);
    }
  /* a float value whose magnitude is below FLT_MIN may be flushed
   * (nn_optimizer_step): compare relative to at least that */
  double floor = dt == AD_F32 ? FLT_MIN : DBL_MIN, worst = 0;
  const double *w = want;
  for (int t = 0; t < OX_STEPS; t++) {
    set_grads(&f, t);
    cr_assert_eq(nn_optimizer_step(o), AD_OK, "%s", ad_last_error(ctx));
    for (int k = 0; k <= nstates; k++)
      for (int p = 0; p < 2; p++) {
        ad_tensor *x = got[k][p];
        for (int64_t i = 0; i < x->size; i++, w++) {
          double g = ad_tensor_get(x, i), e = rel_err(g, *w, floor);
          if (e > worst) worst = e;
          cr_assert(e <= tol, "%s %s step %d %s of %s [%lld]: %.17g, torch %.17g (relative %.3g)",
                    kind_name[cfg->base.kind], ad_dtype_name(dt), t + 1,
                    k ? states[k - 1] : "value", p ? "bias" : "weight", (long long)i, g, *w, e);
        }
      }
  }
  nn_optimizer_free(o);
  fixture_fini(&f);
  return worst;
}

/* Both dtypes: float64 to 1e-12, float32 to 1e-6 (the update loops follow
 * torch's operations; the log shows how close each run is). */
static void check_both(const char *what, nn_opt_config_ext cfg, const double *f64,
                       const double *f32, const char *const *states, int nstates) {
  double e64 = check_run(&cfg, f64, states, nstates, AD_F64, 1e-12);
  double e32 = check_run(&cfg, f32, states, nstates, AD_F32, 1e-6);
  cr_log_info("%s: largest relative error f64 %.3g, f32 %.3g", what, e64, e32);
}

static nn_opt_config_ext ext(nn_opt_kind kind, double lr) { return nn_opt_defaults_ext(kind, lr); }

static const char *const adam_ams[] = {"m", "v", "max_exp_avg_sq"}, *adam_mv[] = {"m", "v"};

Test(optim_ext, adam_amsgrad_matches_torch) {
  nn_opt_config_ext c = ext(NN_OPT_ADAM, 0.01);
  c.base.beta2 = 0.5, c.base.weight_decay = 0.01, c.base.amsgrad = true;
  check_both("adam amsgrad", c, ox_adam_amsgrad_f64, ox_adam_amsgrad_f32, adam_ams, 3);
  c.base.maximize = true;
  check_both("adam amsgrad maximize", c, ox_adam_amsgrad_max_f64, ox_adam_amsgrad_max_f32, adam_ams,
             3);
}

Test(optim_ext, adamw_amsgrad_matches_torch) {
  nn_opt_config_ext c = ext(NN_OPT_ADAMW, 0.01);
  c.base.beta2 = 0.5, c.base.weight_decay = 0.1, c.base.amsgrad = true;
  check_both("adamw amsgrad", c, ox_adamw_amsgrad_f64, ox_adamw_amsgrad_f32, adam_ams, 3);
}

/* The amsgrad cases are ones where it changes the trajectory: at some
 * step max_exp_avg_sq is above exp_avg_sq (else the test could not tell). */
Test(optim_ext, amsgrad_fixture_keeps_a_larger_maximum) {
  int per_step = 9 * 4, above = 0;
  for (int t = 0; t < OX_STEPS; t++)
    for (int i = 0; i < 9; i++)
      above +=
          ox_adam_amsgrad_f64[per_step * t + 27 + i] > ox_adam_amsgrad_f64[per_step * t + 18 + i];
  cr_assert_gt(above, 0);
}

Test(optim_ext, maximize_matches_torch) {
  static const char *const mom[] = {"momentum"}, *sum[] = {"sum"};
  static const char *const rms[] = {"square_avg", "grad_avg", "momentum"};
  nn_opt_config_ext c = ext(NN_OPT_SGD, 0.1);
  c.base.maximize = true, c.base.weight_decay = 0.01;
  check_both("sgd maximize", c, ox_sgd_max_f64, ox_sgd_max_f32, NULL, 0);
  c.base.momentum = 0.9, c.base.dampening = 0.1;
  check_both("sgd momentum maximize", c, ox_sgd_momentum_max_f64, ox_sgd_momentum_max_f32, mom, 1);
  c.base.dampening = 0, c.base.nesterov = true;
  check_both("sgd nesterov maximize", c, ox_sgd_nesterov_max_f64, ox_sgd_nesterov_max_f32, mom, 1);
  c = ext(NN_OPT_ADAGRAD, 0.1);
  c.base.maximize = true, c.base.lr_decay = 0.01, c.base.weight_decay = 0.01;
  c.base.initial_accumulator = 0.1;
  check_both("adagrad maximize", c, ox_adagrad_max_f64, ox_adagrad_max_f32, sum, 1);
  c = ext(NN_OPT_RMSPROP, 0.01);
  c.base.maximize = true, c.base.alpha = 0.9, c.base.centered = true, c.base.momentum = 0.5;
  c.base.weight_decay = 0.01;
  check_both("rmsprop maximize", c, ox_rmsprop_max_f64, ox_rmsprop_max_f32, rms, 3);
  c = ext(NN_OPT_ADAM, 0.01);
  c.base.maximize = true, c.base.weight_decay = 0.01;
  check_both("adam maximize", c, ox_adam_max_f64, ox_adam_max_f32, adam_mv, 2);
  c = ext(NN_OPT_ADAMW, 0.01);
  c.base.maximize = true, c.base.weight_decay = 0.1;
  check_both("adamw maximize", c, ox_adamw_max_f64, ox_adamw_max_f32, adam_mv, 2);
}

static const char *const adamax_st[] = {"exp_avg", "exp_inf"};

Test(optim_ext, adamax_matches_torch) {
  nn_opt_config_ext c = ext(NN_OPT_ADAMAX, 0.01);
  c.base.weight_decay = 0.01;
  check_both("adamax", c, ox_adamax_f64, ox_adamax_f32, adamax_st, 2);
  c.base.beta1 = 0.8, c.base.beta2 = 0.9, c.base.eps = 1e-3, c.base.maximize = true;
  check_both("adamax maximize", c, ox_adamax_max_f64, ox_adamax_max_f32, adamax_st, 2);
}

static const char *const nadam_st[] = {"exp_avg", "exp_avg_sq", "mu_product"};

Test(optim_ext, nadam_matches_torch) {
  nn_opt_config_ext c = ext(NN_OPT_NADAM, 0.01);
  cr_assert_eq(c.momentum_decay, 4e-3); /* PyTorch's default */
  c.base.weight_decay = 0.01;
  check_both("nadam", c, ox_nadam_f64, ox_nadam_f32, nadam_st, 3);
  c.base.beta1 = 0.8, c.base.beta2 = 0.99, c.momentum_decay = 0.3;
  check_both("nadam momentum_decay 0.3", c, ox_nadam_md_f64, ox_nadam_md_f32, nadam_st, 3);
}

/* nn_optimizer_new gives NAdam PyTorch's momentum_decay. */
Test(optim_ext, nadam_through_nn_optimizer_new_uses_the_default_decay) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_opt_config c = nn_opt_defaults(NN_OPT_NADAM, 0.01);
  c.weight_decay = 0.01;
  nn_optimizer *o = nn_optimizer_new(nn_model_params(f.m), &c);
  cr_assert_not_null(o, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_config_ext(o)->momentum_decay, 4e-3);
  for (int t = 0; t < OX_STEPS; t++) {
    set_grads(&f, t);
    cr_assert_eq(nn_optimizer_step(o), AD_OK);
  }
  const double *last = ox_nadam_f64 + (OX_STEPS - 1) * (9 + 9 + 9 + 2);
  for (int i = 0; i < 6; i++) cr_assert(rel_err(ad_tensor_get(f.w, i), last[i], DBL_MIN) <= 1e-12);
  nn_optimizer_free(o);
  fixture_fini(&f);
}

static const char *const radam_st[] = {"exp_avg", "exp_avg_sq"};

/* Steps 1..5 with beta2 0.999 (and 1..5 with 0.9) have r_t <= 5: the
 * un-rectified update; the later ones rectify (the fixture's comment
 * lists r_t). */
Test(optim_ext, radam_matches_torch_before_and_after_rectification) {
  nn_opt_config_ext c = ext(NN_OPT_RADAM, 0.01);
  c.base.weight_decay = 0.01;
  check_both("radam", c, ox_radam_f64, ox_radam_f32, radam_st, 2);
  c.base.beta1 = 0.8, c.base.beta2 = 0.9;
  check_both("radam betas 0.8 0.9", c, ox_radam_b2_f64, ox_radam_b2_f32, radam_st, 2);
}

/* Our state names against the keys of torch's state_dict entry (the same
 * but Adam's and AdamW's moments, "m" and "v" since before these kinds,
 * and "momentum" for momentum_buffer), step counts aside: ours keeps one
 * where the update reads it (SGD with momentum too, RMSProp not). */
static void check_names(nn_opt_config cfg, const char *const *keys) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_optimizer *o = nn_optimizer_new(nn_model_params(f.m), &cfg);
  cr_assert_not_null(o, "%s", ad_last_error(ctx));
  int ours = 0, theirs = 0;
  for (int i = 0; i < nn_optimizer_state_count(o); i++) {
    const char *n = nn_optimizer_state_names(o)[i];
    ours += strstr(n, ".0.weight") != NULL && strstr(n, ".step.") == NULL;
  }
  for (int i = 0; keys[i]; i++) {
    const char *k = keys[i];
    bool adam = cfg.kind == NN_OPT_ADAM || cfg.kind == NN_OPT_ADAMW;
    if (strcmp(k, "momentum_buffer") == 0) k = "momentum";
    if (adam && strcmp(k, "exp_avg") == 0) k = "m";
    if (adam && strcmp(k, "exp_avg_sq") == 0) k = "v";
    if (strcmp(k, "step") == 0 && cfg.kind == NN_OPT_RMSPROP) continue;
    theirs += strcmp(k, "step") != 0;
    cr_assert_not_null(state_named(o, k, "0.weight"), "%s: torch's %s", kind_name[cfg.kind], k);
  }
  cr_assert_eq(ours, theirs, "%s: %d per-parameter state tensors, torch %d", kind_name[cfg.kind],
               ours, theirs);
  nn_optimizer_free(o);
  fixture_fini(&f);
}

Test(optim_ext, state_names_are_torch_state_dict_keys) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_ADAM, 0.01);
  c.amsgrad = true;
  check_names(c, ox_adam_amsgrad_keys);
  c.kind = NN_OPT_ADAMW;
  check_names(c, ox_adamw_amsgrad_keys);
  check_names(nn_opt_defaults(NN_OPT_ADAMAX, 0.01), ox_adamax_keys);
  check_names(nn_opt_defaults(NN_OPT_NADAM, 0.01), ox_nadam_keys);
  check_names(nn_opt_defaults(NN_OPT_RADAM, 0.01), ox_radam_keys);
  c = nn_opt_defaults(NN_OPT_SGD, 0.1);
  c.momentum = 0.9;
  check_names(c, ox_sgd_momentum_max_keys);
  c = nn_opt_defaults(NN_OPT_RMSPROP, 0.01);
  c.centered = true, c.momentum = 0.5;
  check_names(c, ox_rmsprop_max_keys);
  /* mu_product is a per-parameter scalar: not of the parameter's shape */
  fixture f;
  fixture_init(&f, AD_F32);
  nn_opt_config_ext nc = nn_opt_defaults_ext(NN_OPT_NADAM, 0.01);
  nn_optimizer *o = nn_optimizer_new_ext(nn_model_params(f.m), &nc);
  cr_assert_not_null(o);
  for (int i = 0; i < nn_optimizer_state_count(o); i++)
    if (strstr(nn_optimizer_state_names(o)[i], "mu_product")) {
      cr_assert_eq(nn_optimizer_state_param(o, i), -1);
      cr_assert_eq(nn_optimizer_state_tensors(o)[i]->ndim, 0);
      cr_assert_eq(nn_optimizer_state_tensors(o)[i]->dtype, AD_F32);
      cr_assert_eq(ad_tensor_get(nn_optimizer_state_tensors(o)[i], 0), 1.0);
    }
  nn_optimizer_free(o);
  fixture_fini(&f);
}

/* Saving after 4 steps and loading into a fresh model and optimizer
 * resumes bit-exactly: the 8-step run's parameters and state, for the
 * state these kinds add (max_exp_avg_sq, exp_inf, mu_product...). */
static void round_trip(nn_opt_config_ext cfg, ad_dtype dt) {
  fixture a, b;
  fixture_init(&a, dt);
  fixture_init(&b, dt);
  nn_optimizer *oa = nn_optimizer_new_ext(nn_model_params(a.m), &cfg);
  cr_assert_not_null(oa, "%s", ad_last_error(ctx));
  char path[128];
  snprintf(path, sizeof path, "%s/%s.safetensors", tmpdir, kind_name[cfg.base.kind]);
  for (int t = 0; t < OX_STEPS; t++) {
    if (t == OX_STEPS / 2)
      cr_assert_eq(nn_model_save(a.m, oa, path), AD_OK, "%s", ad_last_error(ctx));
    set_grads(&a, t);
    cr_assert_eq(nn_optimizer_step(oa), AD_OK);
  }
  nn_optimizer *ob = nn_optimizer_new_ext(nn_model_params(b.m), &cfg);
  cr_assert_not_null(ob);
  cr_assert_eq(nn_model_load(b.m, ob, path), AD_OK, "%s", ad_last_error(ctx));
  for (int t = OX_STEPS / 2; t < OX_STEPS; t++) {
    set_grads(&b, t);
    cr_assert_eq(nn_optimizer_step(ob), AD_OK);
  }
  int n = nn_optimizer_state_count(oa);
  cr_assert_eq(n, nn_optimizer_state_count(ob));
  for (int i = 0; i < n; i++) {
    ad_tensor *x = nn_optimizer_state_tensors(oa)[i], *y = nn_optimizer_state_tensors(ob)[i];
    cr_assert_str_eq(nn_optimizer_state_names(oa)[i], nn_optimizer_state_names(ob)[i]);
    cr_assert_eq(memcmp(x->data, y->data, (size_t)x->size * ad_dtype_size(x->dtype)), 0,
                 "%s differs after the round trip", nn_optimizer_state_names(oa)[i]);
  }
  cr_assert_eq(memcmp(a.w->data, b.w->data, 6 * ad_dtype_size(dt)), 0);
  cr_assert_eq(memcmp(a.b->data, b.b->data, 3 * ad_dtype_size(dt)), 0);
  nn_optimizer_free(oa);
  nn_optimizer_free(ob);
  fixture_fini(&a);
  fixture_fini(&b);
}

Test(optim_ext, checkpoint_round_trip_resumes_exactly) {
  nn_opt_config_ext c = ext(NN_OPT_ADAM, 0.01);
  c.base.amsgrad = true, c.base.beta2 = 0.5;
  round_trip(c, AD_F32);
  round_trip(ext(NN_OPT_ADAMAX, 0.01), AD_F64);
  c = ext(NN_OPT_NADAM, 0.01);
  c.momentum_decay = 0.3;
  round_trip(c, AD_F32);
  round_trip(ext(NN_OPT_RADAM, 0.01), AD_F64);
}

/* An Adam checkpoint without amsgrad lacks max_exp_avg_sq: loading it
 * into an amsgrad optimizer refuses (naming the tensor), as PyTorch's
 * load_state_dict then fails at its first step. */
Test(optim_ext, amsgrad_checkpoint_needs_its_maximum) {
  fixture a;
  fixture_init(&a, AD_F64);
  nn_opt_config c = nn_opt_defaults(NN_OPT_ADAM, 0.01);
  nn_optimizer *plain = nn_optimizer_new(nn_model_params(a.m), &c);
  c.amsgrad = true;
  nn_optimizer *ams = nn_optimizer_new(nn_model_params(a.m), &c);
  cr_assert(plain && ams);
  char path[128];
  snprintf(path, sizeof path, "%s/plain.safetensors", tmpdir);
  cr_assert_eq(nn_model_save(a.m, plain, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_neq(nn_model_load(a.m, ams, path), AD_OK);
  cr_assert(strstr(ad_last_error(ctx), "max_exp_avg_sq"), "%s", ad_last_error(ctx));
  nn_optimizer_free(plain);
  nn_optimizer_free(ams);
  fixture_fini(&a);
}

/* Each bad setting is refused by name, as PyTorch's constructors refuse
 * it (and the options PyTorch 1.13's optimizer of that kind lacks). */
Test(optim_ext, bad_settings_are_named) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_params *ps = nn_model_params(f.m);
  struct {
    nn_opt_kind kind;
    int field; /* 0 lr, 1 beta1, 2 beta2, 3 eps, 4 wd, 5 momentum_decay, 6 amsgrad, 7 maximize */
    double v;
    const char *msg;
  } cases[] = {
      {NN_OPT_ADAMAX, 0, -1e-3, "lr must be >= 0"},
      {NN_OPT_NADAM, 0, NAN, "lr must be >= 0"},
      {NN_OPT_RADAM, 1, 1.0, "beta1 must be in [0,1)"},
      {NN_OPT_ADAMAX, 1, NAN, "beta1 must be in [0,1)"},
      {NN_OPT_NADAM, 2, -0.1, "beta2 must be in [0,1)"},
      {NN_OPT_RADAM, 2, 1.0, "beta2 must be in [0,1)"},
      {NN_OPT_NADAM, 3, -1e-8, "eps must be finite and >= 0"},
      {NN_OPT_ADAMAX, 3, NAN, "eps must be finite and >= 0"},
      {NN_OPT_RADAM, 4, -0.01, "weight_decay must be finite and >= 0"},
      {NN_OPT_NADAM, 5, -4e-3, "momentum_decay must be finite and >= 0"},
      {NN_OPT_NADAM, 5, NAN, "momentum_decay must be finite and >= 0"},
      {NN_OPT_NADAM, 5, INFINITY, "momentum_decay must be finite and >= 0"},
      {NN_OPT_ADAMAX, 6, 1, "amsgrad is Adam's and AdamW's only"},
      {NN_OPT_NADAM, 6, 1, "amsgrad is Adam's and AdamW's only"},
      {NN_OPT_SGD, 6, 1, "amsgrad is Adam's and AdamW's only"},
      {NN_OPT_NADAM, 7, 1, "maximize is not an option of PyTorch 1.13's NAdam"},
      {NN_OPT_RADAM, 7, 1, "maximize is not an option of PyTorch 1.13's RAdam"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    nn_opt_config_ext c = ext(cases[i].kind, 0.01);
    double v = cases[i].v;
    switch (cases[i].field) {
    case 0:
      c.base.lr = v;
      break;
    case 1:
      c.base.beta1 = v;
      break;
    case 2:
      c.base.beta2 = v;
      break;
    case 3:
      c.base.eps = v;
      break;
    case 4:
      c.base.weight_decay = v;
      break;
    case 5:
      c.momentum_decay = v;
      break;
    case 6:
      c.base.amsgrad = true;
      break;
    default:
      c.base.maximize = true;
      break;
    }
    cr_assert_null(nn_optimizer_new_ext(ps, &c), "case %zu", i);
    cr_assert_eq(ad_last_status(ctx), AD_ERR_ARG);
    cr_assert(strstr(ad_last_error(ctx), cases[i].msg), "case %zu: %s", i, ad_last_error(ctx));
    cr_assert(strstr(ad_last_error(ctx), kind_name[cases[i].kind]), "%s", ad_last_error(ctx));
    ad_clear_error(ctx);
  }
  nn_opt_config bad = nn_opt_defaults(NN_OPT_ADAM, 0.01);
  bad.kind = (nn_opt_kind)(NN_OPT_RPROP + 1);
  cr_assert_null(nn_optimizer_new(ps, &bad));
  cr_assert(strstr(ad_last_error(ctx), "unknown kind 11"), "%s", ad_last_error(ctx));
  cr_assert_null(nn_optimizer_new_ext(ps, NULL));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_NULL);
  cr_assert_null(nn_optimizer_config_ext(NULL));
  fixture_fini(&f);
}

/* The getters return what was set; the defaults are PyTorch's. */
Test(optim_ext, config_and_defaults) {
  for (int k = NN_OPT_ADAMAX; k <= NN_OPT_RADAM; k++) {
    nn_opt_config c = nn_opt_defaults((nn_opt_kind)k, 2e-3);
    cr_assert(c.beta1 == 0.9 && c.beta2 == 0.999 && c.eps == 1e-8 && c.weight_decay == 0);
    cr_assert(!c.amsgrad && !c.maximize);
    cr_assert_eq(nn_opt_defaults_ext((nn_opt_kind)k, 2e-3).momentum_decay,
                 k == NN_OPT_NADAM ? 4e-3 : 0.0);
  }
  fixture f;
  fixture_init(&f, AD_F64);
  nn_opt_config_ext c = ext(NN_OPT_ADAMW, 0.01);
  c.base.amsgrad = true, c.base.maximize = true;
  nn_optimizer *o = nn_optimizer_new_ext(nn_model_params(f.m), &c);
  cr_assert_not_null(o);
  cr_assert(nn_optimizer_config(o)->amsgrad && nn_optimizer_config(o)->maximize);
  cr_assert(nn_optimizer_config_ext(o)->base.amsgrad);
  cr_assert_eq(nn_optimizer_set_lr(o, 0.5), AD_OK);
  cr_assert_eq(nn_optimizer_config_ext(o)->base.lr, 0.5);
  nn_optimizer_free(o);
  fixture_fini(&f);
}

/* amsgrad and maximize sit in what was padding: the members' offsets and
 * the size are those of the earlier layout (x86-64 and other LP64 ABIs
 * with 8-byte aligned doubles). */
Test(optim_ext, config_layout_is_unchanged) {
  if (sizeof(void *) != 8 || _Alignof(double) != 8) return;
  cr_assert_eq(sizeof(nn_opt_config), 120);
  cr_assert_eq(offsetof(nn_opt_config, nesterov), 32);
  cr_assert_eq(offsetof(nn_opt_config, weight_decay), 40);
  cr_assert_eq(offsetof(nn_opt_config, centered), 72);
  cr_assert_eq(offsetof(nn_opt_config, eps), 80);
  cr_assert_eq(offsetof(nn_opt_config, clip_value), 112);
  cr_assert_lt(offsetof(nn_opt_config, amsgrad), offsetof(nn_opt_config, weight_decay));
  cr_assert_lt(offsetof(nn_opt_config, maximize), offsetof(nn_opt_config, weight_decay));
}
