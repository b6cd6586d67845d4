/* test_nn_optim.c: optimizers, clipping, L2 and schedules against PyTorch
 * (tests/nn_fixtures.h, from tools/gen_nn_fixtures.py) and closed forms. */
#include "nn.h"
#include "nn_fixtures.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TEST_CTX_SUITE(optim);

/* A weight [2,3] and a bias [3] from the fixture, in a list, in the test's
 * context (several fixtures of one test share it). */
typedef struct fixture {
  ad_ctx *ctx;
  nn_params *params;
  ad_tensor *w, *b;
  ad_tensor *gw[3], *gb[3]; /* fixed gradients of steps 1..3 */
} fixture;

static void fixture_init(fixture *f, ad_dtype dt) {
  f->ctx = ctx;
  f->params = nn_params_new(f->ctx);
  int64_t ws[2] = {2, 3}, bs[1] = {3};
  f->w = ad_zeros(f->ctx, dt, 2, ws);
  f->b = ad_zeros(f->ctx, dt, 1, bs);
  for (int i = 0; i < 6; i++) ad_tensor_set(f->w, i, opt_p0_w[i]);
  for (int i = 0; i < 3; i++) ad_tensor_set(f->b, i, opt_p0_b[i]);
  cr_assert_eq(nn_params_add(f->params, "0.weight", f->w, true), AD_OK);
  cr_assert_eq(nn_params_add(f->params, "0.bias", f->b, true), AD_OK);
  for (int t = 0; t < 3; t++) {
    f->gw[t] = ad_zeros(f->ctx, dt, 2, ws);
    f->gb[t] = ad_zeros(f->ctx, dt, 1, bs);
    for (int i = 0; i < 6; i++) ad_tensor_set(f->gw[t], i, opt_g_w[6 * t + i]);
    for (int i = 0; i < 3; i++) ad_tensor_set(f->gb[t], i, opt_g_b[3 * t + i]);
  }
}

static void fixture_fini(fixture *f) {
  for (int t = 0; t < 3; t++) ad_tensor_free(f->gw[t]), ad_tensor_free(f->gb[t]);
  nn_params_free(f->params);
}

/* Gradients through the tape: L = sum(w * Gw) + sum(b * Gb) gives dL/dw = Gw. */
static void set_grads(fixture *f, int t) {
  ad_ctx *c = f->ctx;
  ad_tape_reset(c);
  nn_params_zero_grad(f->params);
  ad_tensor *l =
      ad_add(c, ad_sum(c, ad_mul(c, f->w, f->gw[t])), ad_sum(c, ad_mul(c, f->b, f->gb[t])));
  cr_assert_eq(ad_backward(c, l, NULL), AD_OK, "%s", ad_last_error(c));
}

/* Runs three steps of cfg and compares with the torch trajectory. */
static void check_trajectory(nn_opt_config cfg, const double *want, ad_dtype dt, double tol) {
  fixture f;
  fixture_init(&f, dt);
  nn_optimizer *opt = nn_optimizer_new(f.params, &cfg);
  cr_assert_not_null(opt, "%s", ad_last_error(f.ctx));
  for (int t = 0; t < 3; t++) {
    set_grads(&f, t);
    cr_assert_eq(nn_optimizer_step(opt), AD_OK);
    for (int i = 0; i < 6; i++)
      cr_assert(fabs(ad_tensor_get(f.w, i) - want[9 * t + i]) <= tol,
                "step %d weight %d: %.17g, torch %.17g", t + 1, i, ad_tensor_get(f.w, i),
                want[9 * t + i]);
    for (int i = 0; i < 3; i++)
      cr_assert(fabs(ad_tensor_get(f.b, i) - want[9 * t + 6 + i]) <= tol,
                "step %d bias %d: %.17g, torch %.17g", t + 1, i, ad_tensor_get(f.b, i),
                want[9 * t + 6 + i]);
  }
  cr_assert_eq(nn_optimizer_steps(opt), 3);
  nn_optimizer_free(opt);
  fixture_fini(&f);
}

Test(optim, sgd_matches_torch) {
  check_trajectory(nn_opt_defaults(NN_OPT_SGD, 0.1), opt_sgd, AD_F64, 1e-12);
}

Test(optim, sgd_momentum_dampening_weight_decay_matches_torch) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_SGD, 0.1);
  c.momentum = 0.9, c.dampening = 0.1, c.weight_decay = 0.01;
  check_trajectory(c, opt_sgd_momentum, AD_F64, 1e-12);
}

Test(optim, sgd_nesterov_matches_torch) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_SGD, 0.1);
  c.momentum = 0.9, c.nesterov = true, c.weight_decay = 0.01;
  check_trajectory(c, opt_sgd_nesterov, AD_F64, 1e-12);
}

Test(optim, adagrad_matches_torch) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_ADAGRAD, 0.1);
  c.lr_decay = 0.01, c.weight_decay = 0.01, c.initial_accumulator = 0.1;
  check_trajectory(c, opt_adagrad, AD_F64, 1e-12);
}

Test(optim, rmsprop_matches_torch) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_RMSPROP, 0.01);
  c.alpha = 0.9;
  check_trajectory(c, opt_rmsprop, AD_F64, 1e-12);
}

Test(optim, rmsprop_centered_momentum_matches_torch) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_RMSPROP, 0.01);
  c.alpha = 0.9, c.centered = true, c.momentum = 0.5, c.weight_decay = 0.01;
  check_trajectory(c, opt_rmsprop_centered, AD_F64, 1e-12);
}

Test(optim, adam_matches_torch) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_ADAM, 0.01);
  c.weight_decay = 0.01;
  check_trajectory(c, opt_adam, AD_F64, 1e-12);
}

Test(optim, adamw_matches_torch) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_ADAMW, 0.01);
  c.weight_decay = 0.1;
  check_trajectory(c, opt_adamw, AD_F64, 1e-12);
}

Test(optim, f32_follows_the_same_rules) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_ADAM, 0.01);
  c.weight_decay = 0.01;
  check_trajectory(c, opt_adam, AD_F32, 1e-6);
  nn_opt_config s = nn_opt_defaults(NN_OPT_SGD, 0.1);
  s.momentum = 0.9, s.nesterov = true, s.weight_decay = 0.01;
  check_trajectory(s, opt_sgd_nesterov, AD_F32, 1e-6);
}

/* Gradients of step t (cycling through the fixture's three) for the
 * parameters not skipped: skip 0 leaves the weight's grad NULL, 1 the
 * bias's, -1 none. */
static void set_grads_skip(fixture *f, int t, int skip) {
  ad_ctx *c = f->ctx;
  ad_tape_reset(c);
  nn_params_zero_grad(f->params);
  ad_tensor *lw = ad_sum(c, ad_mul(c, f->w, f->gw[t % 3]));
  ad_tensor *lb = ad_sum(c, ad_mul(c, f->b, f->gb[t % 3]));
  ad_tensor *l = skip == 0 ? lb : skip == 1 ? lw : ad_add(c, lw, lb);
  cr_assert_eq(ad_backward(c, l, NULL), AD_OK, "%s", ad_last_error(c));
}

/* |got - want| relative to |want|; a value of torch's below the smallest
 * normal float may be flushed to 0 by ours (nn_optimizer_step's contract),
 * so there only both being below it counts. */
static double rel_err_f32(double got, double want) {
  if (fabs(want) < FLT_MIN) return fabs(got) < FLT_MIN ? 0.0 : INFINITY;
  return fabs(got - want) / fabs(want);
}

/* Runs cfg in float32 for opt_f32_steps steps, leaving the grad of
 * parameter skip[t] (0 weight, 1 bias, -1 none) NULL at step t, and
 * compares the parameters and the state tensors named "<kind>.<state>.<p>"
 * for each of states[] after every step with torch's float32 run. Returns
 * the largest relative error; fails beyond 1e-6. */
static double check_f32_run(nn_opt_config cfg, const double *want, const char *const *states,
                            int nstates, const int *skip) {
  static const char *const kinds[] = {"sgd", "adagrad", "rmsprop", "adam", "adamw"};
  fixture f;
  fixture_init(&f, AD_F32);
  nn_optimizer *opt = nn_optimizer_new(f.params, &cfg);
  cr_assert_not_null(opt, "%s", ad_last_error(f.ctx));
  ad_tensor *st[3][2] = {{NULL}};
  for (int k = 0; k < nstates; k++)
    for (int p = 0; p < 2; p++) {
      char name[64];
      snprintf(name, sizeof name, "%s.%s.%s", kinds[cfg.kind], states[k],
               p ? "0.bias" : "0.weight");
      for (int i = 0; i < nn_optimizer_state_count(opt); i++)
        if (strcmp(nn_optimizer_state_names(opt)[i], name) == 0)
          st[k][p] = nn_optimizer_state_tensors(opt)[i];
      cr_assert_not_null(st[k][p], "state %s", name);
    }
  int per_step = 9 * (1 + nstates);
  double worst = 0;
  for (int t = 0; t < opt_f32_steps[0]; t++) {
    set_grads_skip(&f, t, skip ? skip[t] : -1);
    cr_assert_eq(nn_optimizer_step(opt), AD_OK);
    const double *w = want + per_step * t;
    ad_tensor *got[4][2] = {{f.w, f.b}};
    for (int k = 0; k < nstates; k++) got[1 + k][0] = st[k][0], got[1 + k][1] = st[k][1];
    for (int k = 0; k <= nstates; k++)
      for (int i = 0; i < 9; i++) {
        double g = ad_tensor_get(got[k][i >= 6], i >= 6 ? i - 6 : i), r = w[9 * k + i];
        double e = rel_err_f32(g, r);
        if (e > worst) worst = e;
        cr_assert(e <= 1e-6, "%s step %d %s[%d]: %.9g, torch %.9g (relative error %.3g)",
                  kinds[cfg.kind], t + 1, k ? states[k - 1] : "param", i, g, r, e);
      }
  }
  nn_optimizer_free(opt);
  fixture_fini(&f);
  return worst;
}

/* Every optimizer's float32 step matches torch.optim's float32 step to 1e-6
 * relative, parameters and state, over several steps. */
Test(optim, f32_steps_match_torch_f32) {
  const char *mom[] = {"momentum"}, *sum[] = {"sum"}, *sq[] = {"square_avg"};
  const char *rms[] = {"square_avg", "grad_avg", "momentum"}, *adam[] = {"m", "v"};
  nn_opt_config c = nn_opt_defaults(NN_OPT_SGD, 0.1);
  check_f32_run(c, opt_f32_sgd, NULL, 0, NULL);
  c.momentum = 0.9, c.dampening = 0.1, c.weight_decay = 0.01;
  check_f32_run(c, opt_f32_sgd_momentum, mom, 1, NULL);
  c = nn_opt_defaults(NN_OPT_SGD, 0.1);
  c.momentum = 0.9, c.nesterov = true, c.weight_decay = 0.01;
  check_f32_run(c, opt_f32_sgd_nesterov, mom, 1, NULL);
  c = nn_opt_defaults(NN_OPT_ADAGRAD, 0.1);
  c.lr_decay = 0.01, c.weight_decay = 0.01, c.initial_accumulator = 0.1;
  check_f32_run(c, opt_f32_adagrad, sum, 1, NULL);
  c = nn_opt_defaults(NN_OPT_RMSPROP, 0.01);
  c.alpha = 0.9;
  check_f32_run(c, opt_f32_rmsprop, sq, 1, NULL);
  c.centered = true, c.momentum = 0.5, c.weight_decay = 0.01;
  check_f32_run(c, opt_f32_rmsprop_centered, rms, 3, NULL);
  c = nn_opt_defaults(NN_OPT_ADAM, 0.01);
  c.weight_decay = 0.01;
  check_f32_run(c, opt_f32_adam, adam, 2, NULL);
  c = nn_opt_defaults(NN_OPT_ADAMW, 0.01);
  c.weight_decay = 0.1;
  check_f32_run(c, opt_f32_adamw, adam, 2, NULL);
}

/* A parameter whose grad is NULL at a step is skipped and its own step
 * count does not advance, as in PyTorch: Adam's bias correction and
 * Adagrad's lr decay use the parameter's count, and SGD's momentum buffer
 * starts at the parameter's first gradient. */
Test(optim, step_counts_are_per_parameter) {
  const char *mom[] = {"momentum"}, *sum[] = {"sum"}, *adam[] = {"m", "v"};
  const int adam_skip[6] = {1, -1, -1, 1, 0, -1}, ada_skip[6] = {-1, 1, -1, -1, -1, -1};
  const int sgd_skip[6] = {1, -1, 0, -1, -1, -1};
  nn_opt_config c = nn_opt_defaults(NN_OPT_ADAM, 0.01);
  c.weight_decay = 0.01;
  check_f32_run(c, opt_f32_adam_skip, adam, 2, adam_skip);
  c = nn_opt_defaults(NN_OPT_ADAGRAD, 0.1);
  c.lr_decay = 0.01, c.weight_decay = 0.01, c.initial_accumulator = 0.1;
  check_f32_run(c, opt_f32_adagrad_skip, sum, 1, ada_skip);
  c = nn_opt_defaults(NN_OPT_SGD, 0.1);
  c.momentum = 0.9, c.dampening = 0.1, c.weight_decay = 0.01;
  check_f32_run(c, opt_f32_sgd_momentum_skip, mom, 1, sgd_skip);
}

Test(optim, shorthands_use_torch_defaults) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_optimizer *o[5] = {nn_sgd_new(f.params, 0.1, 0.9, true, 0.0), nn_adam_new(f.params, 1e-3),
                        nn_adamw_new(f.params, 1e-3, 0.05), nn_rmsprop_new(f.params, 0.01),
                        nn_adagrad_new(f.params, 0.01)};
  for (int i = 0; i < 5; i++) cr_assert_not_null(o[i]);
  cr_assert(nn_optimizer_config(o[0])->nesterov);
  cr_assert_eq(nn_optimizer_config(o[1])->beta2, 0.999);
  cr_assert_eq(nn_optimizer_config(o[1])->eps, 1e-8);
  cr_assert_eq(nn_optimizer_config(o[2])->weight_decay, 0.05);
  cr_assert_eq(nn_optimizer_config(o[3])->alpha, 0.99);
  cr_assert_eq(nn_optimizer_config(o[4])->eps, 1e-10);
  for (int i = 0; i < 5; i++) nn_optimizer_free(o[i]);
  nn_optimizer_free(NULL);
  fixture_fini(&f);
}

/* ------------------------------------------------------------------ state */

Test(optim, state_tensors_are_named) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_optimizer *adam = nn_adam_new(f.params, 0.01);
  cr_assert_eq(nn_optimizer_state_count(adam), 13);
  const char *const *n = nn_optimizer_state_names(adam);
  cr_assert_str_eq(n[0], "adam.step");
  cr_assert_str_eq(n[1], "adam.m.0.weight");
  cr_assert_str_eq(n[2], "adam.v.0.weight");
  cr_assert_str_eq(n[3], "adam.step.0.weight");
  cr_assert_str_eq(n[4], "adam.m.0.bias");
  cr_assert_str_eq(n[5], "adam.v.0.bias");
  cr_assert_str_eq(n[6], "adam.step.0.bias");
  cr_assert_str_eq(n[7], "adam.lr");
  cr_assert_str_eq(n[8], "adam.schedule.lr0");
  cr_assert_str_eq(n[9], "adam.schedule.epoch");
  cr_assert_str_eq(n[10], "adam.plateau.best");
  cr_assert_str_eq(n[11], "adam.plateau.num_bad_epochs");
  cr_assert_str_eq(n[12], "adam.plateau.cooldown_counter");
  ad_tensor *const *t = nn_optimizer_state_tensors(adam);
  cr_assert_eq(t[0]->ndim, 0);
  cr_assert_eq(t[0]->dtype, AD_F64);
  cr_assert_eq(t[1]->shape[0], 2);
  cr_assert_eq(t[1]->shape[1], 3);
  set_grads(&f, 0);
  nn_optimizer_step(adam);
  cr_assert_eq(ad_tensor_item(t[0]), 1.0);
  cr_assert_eq(ad_tensor_item(t[3]), 1.0);
  cr_assert_eq(t[6]->ndim, 0);
  cr_assert_float_eq(ad_tensor_get(t[1], 0), 0.1 * opt_g_w[0], 1e-15); /* m = (1-b1) g */

  nn_opt_config c = nn_opt_defaults(NN_OPT_RMSPROP, 0.01);
  c.centered = true, c.momentum = 0.9;
  nn_optimizer *rms = nn_optimizer_new(f.params, &c);
  cr_assert_eq(nn_optimizer_state_count(rms), 13);
  cr_assert_str_eq(nn_optimizer_state_names(rms)[2], "rmsprop.grad_avg.0.weight");
  cr_assert_str_eq(nn_optimizer_state_names(rms)[3], "rmsprop.momentum.0.weight");
  nn_optimizer *sgd = nn_sgd_new(f.params, 0.1, 0.0, false, 0.0);
  cr_assert_eq(nn_optimizer_state_count(sgd), 7); /* the step counter, lr and plateau state */
  nn_optimizer *sgdm = nn_sgd_new(f.params, 0.1, 0.9, false, 0.0);
  cr_assert_eq(nn_optimizer_state_count(sgdm), 11);
  cr_assert_str_eq(nn_optimizer_state_names(sgdm)[2], "sgd.step.0.weight");
  nn_optimizer_free(sgdm);
  nn_optimizer *ada = nn_adagrad_new(f.params, 0.1);
  cr_assert_str_eq(nn_optimizer_state_names(ada)[1], "adagrad.sum.0.weight");
  nn_optimizer_free(adam);
  nn_optimizer_free(rms);
  nn_optimizer_free(sgd);
  nn_optimizer_free(ada);
  fixture_fini(&f);
}

/* Copying parameters and state into a fresh optimizer resumes exactly. */
Test(optim, copied_state_resumes_bit_exactly) {
  fixture a, b;
  fixture_init(&a, AD_F64);
  fixture_init(&b, AD_F64);
  nn_opt_config c = nn_opt_defaults(NN_OPT_SGD, 0.1);
  c.momentum = 0.9, c.dampening = 0.1, c.weight_decay = 0.01;
  nn_optimizer *oa = nn_optimizer_new(a.params, &c);
  nn_optimizer *ob = nn_optimizer_new(b.params, &c);
  set_grads(&a, 0);
  nn_optimizer_step(oa);
  /* b takes a's parameters and state after one step */
  ad_tensor_copy_data(b.w, a.w);
  ad_tensor_copy_data(b.b, a.b);
  for (int i = 0; i < nn_optimizer_state_count(oa); i++)
    ad_tensor_copy_data(nn_optimizer_state_tensors(ob)[i], nn_optimizer_state_tensors(oa)[i]);
  cr_assert_eq(nn_optimizer_steps(ob), 1);
  for (int t = 1; t < 3; t++) {
    set_grads(&a, t);
    set_grads(&b, t);
    nn_optimizer_step(oa);
    nn_optimizer_step(ob);
  }
  cr_assert_eq(memcmp(a.w->data, b.w->data, 6 * sizeof(double)), 0);
  cr_assert_eq(memcmp(a.b->data, b.b->data, 3 * sizeof(double)), 0);
  /* and both equal torch's uninterrupted run */
  for (int i = 0; i < 6; i++)
    cr_assert_float_eq(ad_tensor_get(b.w, i), opt_sgd_momentum[18 + i], 1e-12);
  nn_optimizer_free(oa);
  nn_optimizer_free(ob);
  fixture_fini(&a);
  fixture_fini(&b);
}

Test(optim, parameters_without_gradient_are_skipped) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_optimizer *o = nn_adam_new(f.params, 0.1);
  /* only w gets a gradient */
  ad_tensor *l = ad_sum(f.ctx, ad_mul(f.ctx, f.w, f.gw[0]));
  cr_assert_eq(ad_backward(f.ctx, l, NULL), AD_OK);
  cr_assert_null(f.b->grad);
  nn_optimizer_step(o);
  for (int i = 0; i < 3; i++) cr_assert_eq(ad_tensor_get(f.b, i), opt_p0_b[i]);
  cr_assert_neq(ad_tensor_get(f.w, 0), opt_p0_w[0]);
  /* frozen: requires_grad off */
  ad_tensor_set_requires_grad(f.w, false);
  double before = ad_tensor_get(f.w, 0);
  nn_optimizer_step(o);
  cr_assert_eq(ad_tensor_get(f.w, 0), before);
  nn_optimizer_free(o);
  fixture_fini(&f);
}

Test(optim, zero_grad) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_optimizer *o = nn_sgd_new(f.params, 0.1, 0, false, 0);
  set_grads(&f, 0);
  cr_assert_neq(ad_tensor_get(f.w->grad, 0), 0.0);
  nn_optimizer_zero_grad(o);
  for (int i = 0; i < 6; i++) cr_assert_eq(ad_tensor_get(f.w->grad, i), 0.0);
  nn_optimizer_free(o);
  fixture_fini(&f);
}

/* ----------------------------------------------------------- config errors */

static void expect_config_error(nn_opt_config c, const char *needle) {
  fixture f;
  fixture_init(&f, AD_F64);
  cr_assert_null(nn_optimizer_new(f.params, &c));
  cr_assert_eq(ad_last_status(f.ctx), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(f.ctx), needle), "message: %s", ad_last_error(f.ctx));
  ad_clear_error(f.ctx); /* the next check starts clean */
  fixture_fini(&f);
}

Test(optim, bad_settings_are_named) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_SGD, 0.1);
  c.nesterov = true;
  expect_config_error(c, "nesterov needs momentum > 0");
  c = nn_opt_defaults(NN_OPT_ADAM, -1);
  expect_config_error(c, "optimizer adam: lr must be >= 0, got -1");
  c = nn_opt_defaults(NN_OPT_ADAMW, 0.1);
  c.beta2 = 1.0;
  expect_config_error(c, "beta2 must be in [0,1)");
  c = nn_opt_defaults(NN_OPT_RMSPROP, 0.1);
  c.alpha = 1.5;
  expect_config_error(c, "alpha");
  c = nn_opt_defaults(NN_OPT_SGD, 0.1);
  c.kind = (nn_opt_kind)42;
  expect_config_error(c, "unknown kind 42");

  nn_params *empty = nn_params_new(ctx);
  cr_assert_null(nn_adam_new(empty, 0.1));
  cr_assert(strstr(ad_last_error(ctx), "parameter list is empty"), "%s", ad_last_error(ctx));
  cr_assert_null(nn_optimizer_new(NULL, &c));
  nn_params_free(empty);
}

/* --------------------------------------------------------------- clipping */

static void set_clip_grads(fixture *f) {
  /* gradients 10x the fixture's first step, as in the torch fixture */
  ad_tape_reset(f->ctx);
  nn_params_zero_grad(f->params);
  ad_tensor *l = ad_mul_scalar(f->ctx,
                               ad_add(f->ctx, ad_sum(f->ctx, ad_mul(f->ctx, f->w, f->gw[0])),
                                      ad_sum(f->ctx, ad_mul(f->ctx, f->b, f->gb[0]))),
                               10.0);
  cr_assert_eq(ad_backward(f->ctx, l, NULL), AD_OK);
}

Test(optim, clip_grad_norm_matches_torch) {
  fixture f;
  fixture_init(&f, AD_F64);
  set_clip_grads(&f);
  double norm = nn_clip_grad_norm(f.params, 1.5);
  cr_assert_float_eq(norm, clip_norm_total[0], 1e-12);
  for (int i = 0; i < 6; i++)
    cr_assert_float_eq(ad_tensor_get(f.w->grad, i), clip_norm_grads[i], 1e-12);
  for (int i = 0; i < 3; i++)
    cr_assert_float_eq(ad_tensor_get(f.b->grad, i), clip_norm_grads[6 + i], 1e-12);
  /* below the limit: unchanged */
  double before = ad_tensor_get(f.w->grad, 0);
  nn_clip_grad_norm(f.params, 100.0);
  cr_assert_eq(ad_tensor_get(f.w->grad, 0), before);
  fixture_fini(&f);
}

Test(optim, clip_grad_value_and_config_clipping) {
  fixture f;
  fixture_init(&f, AD_F64);
  set_clip_grads(&f);
  nn_clip_grad_value(f.params, 1.0);
  for (int i = 0; i < 6; i++) {
    double g = 10 * opt_g_w[i];
    cr_assert_float_eq(ad_tensor_get(f.w->grad, i), g > 1 ? 1 : g < -1 ? -1 : g, 1e-15);
  }
  /* an SGD step with clip_norm in the config equals clip then step */
  fixture g;
  fixture_init(&g, AD_F64);
  nn_opt_config c = nn_opt_defaults(NN_OPT_SGD, 1.0);
  c.clip_norm = 1.5;
  nn_optimizer *o = nn_optimizer_new(g.params, &c);
  set_clip_grads(&g);
  nn_optimizer_step(o);
  for (int i = 0; i < 6; i++)
    cr_assert_float_eq(ad_tensor_get(g.w, i), opt_p0_w[i] - clip_norm_grads[i], 1e-12);
  nn_optimizer_free(o);
  fixture_fini(&g);
  fixture_fini(&f);
}

/* --------------------------------------------------------------------- L2 */

Test(optim, l2_penalty_value_and_gradient) {
  fixture f;
  fixture_init(&f, AD_F64);
  ad_tensor *pen = nn_l2_penalty(f.ctx, f.params, 0.3);
  double want = 0;
  for (int i = 0; i < 6; i++) want += opt_p0_w[i] * opt_p0_w[i];
  for (int i = 0; i < 3; i++) want += opt_p0_b[i] * opt_p0_b[i];
  cr_assert_float_eq(ad_tensor_item(pen), 0.3 * want, 1e-14);
  cr_assert_eq(ad_backward(f.ctx, pen, NULL), AD_OK);
  for (int i = 0; i < 6; i++)
    cr_assert_float_eq(ad_tensor_get(f.w->grad, i), 0.6 * opt_p0_w[i], 1e-14);
  fixture_fini(&f);
}

/* SGD's weight_decay wd is the gradient of the penalty wd/2 |w|^2. */
Test(optim, l2_penalty_equals_weight_decay) {
  fixture a, b;
  fixture_init(&a, AD_F64);
  fixture_init(&b, AD_F64);
  nn_optimizer *oa = nn_sgd_new(a.params, 0.1, 0.9, false, 0.2);
  nn_optimizer *ob = nn_sgd_new(b.params, 0.1, 0.9, false, 0.0);
  for (int t = 0; t < 3; t++) {
    set_grads(&a, t);
    nn_optimizer_step(oa);
    ad_tape_reset(b.ctx);
    nn_params_zero_grad(b.params);
    ad_tensor *l = ad_add(b.ctx,
                          ad_add(b.ctx, ad_sum(b.ctx, ad_mul(b.ctx, b.w, b.gw[t])),
                                 ad_sum(b.ctx, ad_mul(b.ctx, b.b, b.gb[t]))),
                          nn_l2_penalty(b.ctx, b.params, 0.1));
    cr_assert_eq(ad_backward(b.ctx, l, NULL), AD_OK);
    nn_optimizer_step(ob);
  }
  for (int i = 0; i < 6; i++)
    cr_assert_float_eq(ad_tensor_get(a.w, i), ad_tensor_get(b.w, i), 1e-14);
  nn_optimizer_free(oa);
  nn_optimizer_free(ob);
  fixture_fini(&a);
  fixture_fini(&b);
}

/* -------------------------------------------------------------- schedules */

Test(optim, schedules_match_torch) {
  nn_schedule step = {.kind = NN_SCHED_STEP, .step_size = 3, .gamma = 0.5};
  nn_schedule ex = {.kind = NN_SCHED_EXPONENTIAL, .gamma = 0.9};
  nn_schedule cosine = {.kind = NN_SCHED_COSINE, .t_max = 7, .eta_min = 0.001};
  for (int t = 0; t < 8; t++) {
    cr_assert_float_eq(nn_schedule_lr(&step, 0.1, t), sched_step[t], 1e-15);
    cr_assert_float_eq(nn_schedule_lr(&ex, 0.1, t), sched_exp[t], 1e-15);
    cr_assert_float_eq(nn_schedule_lr(&cosine, 0.1, t), sched_cos[t], 1e-15);
  }
  nn_schedule constant = {0};
  cr_assert_eq(nn_schedule_lr(&constant, 0.1, 5), 0.1);
  nn_schedule bad = {.kind = NN_SCHED_STEP};
  cr_assert(isnan(nn_schedule_lr(&bad, 0.1, 1)));
}

Test(optim, optimizer_follows_its_schedule) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_optimizer *o = nn_sgd_new(f.params, 0.1, 0, false, 0);
  nn_schedule cosine = {.kind = NN_SCHED_COSINE, .t_max = 7, .eta_min = 0.001};
  cr_assert_eq(nn_optimizer_set_schedule(o, &cosine), AD_OK);
  for (int t = 0; t < 8; t++) {
    cr_assert_float_eq(nn_optimizer_lr(o), sched_cos[t], 1e-15);
    nn_optimizer_schedule_step(o);
  }
  nn_schedule bad = {.kind = NN_SCHED_COSINE};
  cr_assert_eq(nn_optimizer_set_schedule(o, &bad), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(f.ctx), "bad schedule"), "%s", ad_last_error(f.ctx));
  nn_optimizer_set_schedule(o, NULL);
  nn_optimizer_set_lr(o, 0.5);
  nn_optimizer_schedule_step(o);
  cr_assert_eq(nn_optimizer_lr(o), 0.5);
  nn_optimizer_free(o);
  fixture_fini(&f);
}

/* ------------------------------------------------- subnormal moments */

/* A weight whose gradient is 0 after the first step: m = 0.9 m decays until
 * it would stick at the smallest subnormal (0.9 times it rounds back up) and
 * keep the sweep on the CPU's subnormal path. The optimizers store it as 0
 * instead; every parameter bit stays what IEEE arithmetic without that gives
 * (the plain loop below, in the order of optim.c's). */
Test(optim, dead_weights_moments_flush_to_zero_without_changing_parameters) {
  enum { N = 4, STEPS = 1000 };
  const float p0[N] = {0.5f, -0.25f, 1e-3f, 2.0f}, g0[N] = {1e-3f, -2e-3f, 5e-4f, 1e-3f};
  int64_t s = N;
  ad_tensor *w = ad_from_data(ctx, AD_F32, 1, &s, p0);
  ad_tensor *u = ad_from_data(ctx, AD_F32, 1, &s, p0); /* same, under SGD with momentum */
  ad_tensor *gt = ad_from_data(ctx, AD_F32, 1, &s, g0);
  nn_params *pa = nn_params_new(ctx), *ps = nn_params_new(ctx);
  cr_assert(w && u && gt && pa && ps);
  cr_assert_eq(nn_params_add(pa, "w", w, false), AD_OK);
  cr_assert_eq(nn_params_add(ps, "u", u, false), AD_OK);
  nn_optimizer *adam = nn_adam_new(pa, 1e-3), *sgd = nn_sgd_new(ps, 1e-2, 0.9, false, 0);
  cr_assert(adam && sgd, "%s", ad_last_error(ctx));
  /* step 1's gradient through the tape (it allocates the grads), then zeros */
  ad_tensor *l = ad_add(ctx, ad_sum(ctx, ad_mul(ctx, w, gt)), ad_sum(ctx, ad_mul(ctx, u, gt)));
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
  float rp[N], rm[N], rv[N], sp[N], sb[N];
  for (int i = 0; i < N; i++) rp[i] = sp[i] = p0[i], rm[i] = rv[i] = sb[i] = 0;
  for (int t = 1; t <= STEPS; t++) {
    cr_assert_eq(nn_optimizer_step(adam), AD_OK);
    cr_assert_eq(nn_optimizer_step(sgd), AD_OK);
    /* the reference: Adam (defaults) and SGD with momentum, IEEE throughout,
     * in the operations of torch.optim's step (nn/kernels/update.c) */
    float nstep = (float)(-1e-3 / (1.0 - pow(0.9, t)));
    float bc2 = (float)sqrt(1.0 - pow(0.999, t));
    for (int i = 0; i < N; i++) {
      float g = t == 1 ? g0[i] : 0.0f;
      rm[i] = fmaf((float)(1 - 0.9), g, 0.9f * rm[i]);
      rv[i] = fmaf((float)(1 - 0.999) * g, g, 0.999f * rv[i]);
      rp[i] += nstep * rm[i] / (sqrtf(rv[i]) / bc2 + 1e-8f);
      sb[i] = t == 1 ? g : fmaf(1.0f, g, 0.9f * sb[i]);
      sp[i] = fmaf(-1e-2f, sb[i], sp[i]);
    }
    if (t == 1) { /* from now on exactly zero, as a dead ReLU unit's gradient is */
      ad_tensor_fill(w->grad, 0.0);
      ad_tensor_fill(u->grad, 0.0);
    }
  }
  const float *m = NULL, *b = NULL;
  for (int k = 0; k < nn_optimizer_state_count(adam); k++)
    if (strstr(nn_optimizer_state_names(adam)[k], ".m."))
      m = nn_optimizer_state_tensors(adam)[k]->data;
  for (int k = 0; k < nn_optimizer_state_count(sgd); k++)
    if (strstr(nn_optimizer_state_names(sgd)[k], "momentum"))
      b = nn_optimizer_state_tensors(sgd)[k]->data;
  cr_assert(m && b, "state tensors named .m. and momentum");
  for (int i = 0; i < N; i++) {
    /* plain IEEE sticks at subnormals; the optimizers hold 0 */
    cr_assert(rm[i] != 0 && fabsf(rm[i]) < FLT_MIN, "reference m[%d] = %g", i, (double)rm[i]);
    cr_assert(sb[i] != 0 && fabsf(sb[i]) < FLT_MIN, "reference buffer[%d] = %g", i, (double)sb[i]);
    cr_assert_eq(m[i], 0.0f, "adam m[%d] = %g", i, (double)m[i]);
    cr_assert_eq(b[i], 0.0f, "sgd buffer[%d] = %g", i, (double)b[i]);
    /* and the parameters are the same bits */
    float pw = ((const float *)w->data)[i], pu = ((const float *)u->data)[i];
    cr_assert(memcmp(&pw, &rp[i], sizeof pw) == 0, "adam p[%d]: %.9g, IEEE %.9g", i, (double)pw,
              (double)rp[i]);
    cr_assert(memcmp(&pu, &sp[i], sizeof pu) == 0, "sgd p[%d]: %.9g, IEEE %.9g", i, (double)pu,
              (double)sp[i]);
  }
  nn_optimizer_free(adam);
  nn_optimizer_free(sgd);
  nn_params_free(pa);
  nn_params_free(ps);
  ad_tensor_free(w);
  ad_tensor_free(u);
  ad_tensor_free(gt);
}

/* A step cut in two (as nn_dist's sharded step cuts it between ranks):
 * two optimizers over copies of the same parameters each update their
 * ranges, then take the other's elements; after three Adam steps the
 * parameters and, range by range, the state equal one optimizer's bits. */
Test(optim, step_ranges_cut_in_two_equal_one_step) {
  fixture a, b, c;
  fixture_init(&a, AD_F64);
  fixture_init(&b, AD_F64);
  fixture_init(&c, AD_F64);
  nn_optimizer *oa = nn_adam_new(a.params, 0.1);
  nn_optimizer *ob = nn_adam_new(b.params, 0.1), *oc = nn_adam_new(c.params, 0.1);
  const int64_t blo[2] = {0, 0}, bhi[2] = {4, 1}, clo[2] = {4, 1}, chi[2] = {6, 3};
  for (int t = 0; t < 3; t++) {
    set_grads(&a, t);
    set_grads(&b, t);
    set_grads(&c, t);
    cr_assert_eq(nn_optimizer_step(oa), AD_OK);
    cr_assert_eq(nn_optimizer_step_ranges(ob, blo, bhi), AD_OK);
    cr_assert_eq(nn_optimizer_step_ranges(oc, clo, chi), AD_OK);
    double *bw = b.w->data, *cw = c.w->data, *bb = b.b->data, *cb = c.b->data;
    for (int i = 0; i < 4; i++) cw[i] = bw[i]; /* the exchange */
    for (int i = 4; i < 6; i++) bw[i] = cw[i];
    cb[0] = bb[0];
    bb[1] = cb[1], bb[2] = cb[2];
  }
  cr_assert_eq(memcmp(a.w->data, b.w->data, 6 * sizeof(double)), 0);
  cr_assert_eq(memcmp(a.w->data, c.w->data, 6 * sizeof(double)), 0);
  cr_assert_eq(memcmp(a.b->data, b.b->data, 3 * sizeof(double)), 0);
  cr_assert_eq(nn_optimizer_steps(ob), 3);
  ad_tensor *const *sa = nn_optimizer_state_tensors(oa), *const *sb =
                                                             nn_optimizer_state_tensors(ob);
  ad_tensor *const *sc = nn_optimizer_state_tensors(oc);
  int checked = 0;
  for (int j = 0; j < nn_optimizer_state_count(oa); j++) {
    int i = nn_optimizer_state_param(oa, j);
    if (i < 0) continue;
    const int64_t *lo = blo, *hi = bhi;
    for (int k = 0; k < 2; k++, lo = clo, hi = chi)
      for (int64_t e = lo[i]; e < hi[i]; e++, checked++)
        cr_assert_eq(ad_tensor_get(k ? sc[j] : sb[j], e), ad_tensor_get(sa[j], e),
                     "state %s element %lld", nn_optimizer_state_names(oa)[j], (long long)e);
  }
  cr_assert_eq(checked, 2 * 9, "m and v of 9 elements");
  nn_optimizer_free(oa), nn_optimizer_free(ob), nn_optimizer_free(oc);
  fixture_fini(&a), fixture_fini(&b), fixture_fini(&c);
}

Test(optim, state_param_names_the_parameter_of_per_element_state) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_optimizer *o = nn_adam_new(f.params, 0.1);
  const char *const *names = nn_optimizer_state_names(o);
  for (int j = 0; j < nn_optimizer_state_count(o); j++) {
    int want = strstr(names[j], ".m.0.weight") || strstr(names[j], ".v.0.weight") ? 0
               : strstr(names[j], ".m.0.bias") || strstr(names[j], ".v.0.bias")   ? 1
                                                                                  : -1;
    cr_assert_eq(nn_optimizer_state_param(o, j), want, "%s", names[j]);
  }
  cr_assert_eq(nn_optimizer_state_param(o, -1), -1);
  cr_assert_eq(nn_optimizer_state_param(NULL, 0), -1);
  nn_optimizer_free(o);
  fixture_fini(&f);
}

Test(optim, step_ranges_outside_a_parameter_fail_with_its_name) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_optimizer *o = nn_adam_new(f.params, 0.1);
  set_grads(&f, 0);
  const int64_t lo[2] = {0, 2}, hi[2] = {6, 4};
  cr_assert_eq(nn_optimizer_step_ranges(o, lo, hi), AD_ERR_ARG);
  cr_assert_str_eq(ad_last_error(ctx), "optimizer_step_ranges: parameter 1 '0.bias' of 3 "
                                       "elements: range [2, 4)");
  cr_assert_eq(nn_optimizer_steps(o), 0, "nothing stepped");
  cr_assert_eq(nn_optimizer_step_ranges(o, NULL, hi), AD_ERR_NULL);
  cr_assert_str_eq(ad_last_error(ctx), "optimizer_step_ranges: lo is NULL");
  nn_optimizer_free(o);
  fixture_fini(&f);
}

/* Without weight decay, an infinite parameter stays infinite and its state
 * stays finite, as in torch.optim (which adds wd * p only when wd != 0):
 * the L2 term 0 * inf made a NaN of the gradient, then of the momentum and
 * the parameter. Found by a differential test against PyTorch. */
Test(optim, infinite_parameter_without_weight_decay_stays_infinite) {
  for (int kind = NN_OPT_SGD; kind <= NN_OPT_ADAMW; kind++)
    for (int dt = 0; dt < 2; dt++) {
      nn_params *ps = nn_params_new(ctx);
      int64_t n = 2;
      ad_tensor *p = ad_zeros(ctx, dt ? AD_F64 : AD_F32, 1, &n);
      ad_tensor_set(p, 0, -INFINITY);
      ad_tensor_set(p, 1, 1.0);
      cr_assert_eq(nn_params_add(ps, "p", p, true), AD_OK);
      nn_opt_config c = nn_opt_defaults((nn_opt_kind)kind, 0.1);
      c.weight_decay = 0;
      if (kind == NN_OPT_SGD || kind == NN_OPT_RMSPROP) c.momentum = 0.9;
      nn_optimizer *o = nn_optimizer_new(ps, &c);
      cr_assert_not_null(o);
      for (int step = 0; step < 2; step++) {
        ad_tensor *y = ad_sum(ctx, ad_mul_scalar(ctx, p, 0.5)); /* gradient 0.5 */
        cr_assert_eq(ad_backward(ctx, y, NULL), AD_OK);
        ad_tape_reset(ctx);
        cr_assert_eq(nn_optimizer_step(o), AD_OK);
        nn_optimizer_zero_grad(o);
      }
      cr_assert(ad_tensor_get(p, 0) == -INFINITY, "kind %d %s: p[0] = %g", kind, dt ? "f64" : "f32",
                ad_tensor_get(p, 0));
      cr_assert(isfinite(ad_tensor_get(p, 1)));
      int ns = nn_optimizer_state_count(o);
      for (int i = 0; i < ns; i++) {
        ad_tensor *s = nn_optimizer_state_tensors(o)[i];
        if (nn_optimizer_state_param(o, i) == 0)
          cr_assert(!ad_tensor_has_nonfinite(s), "kind %d %s: state %s is not finite", kind,
                    dt ? "f64" : "f32", nn_optimizer_state_names(o)[i]);
      }
      nn_optimizer_free(o);
      nn_params_free(ps);
    }
}

/* Adam's f32 bias correction sqrt(v) / bc2 is computed as a product in
 * double rounded to float (nn/kernels/update.c, NN_DIVC): the bits of the
 * float division, checked against a reference that divides, over 300 steps
 * (300 divisors bc2) and gradients spread over 2^-70 .. 2^40, so that the
 * quotient meets every binade on the way, and at beta2 = 0.9 (divisors far
 * from 1). */
Test(optim, adam_f32_bias_correction_is_the_division_bits) {
  enum { N = 4096, STEPS = 300 };
  const double beta2s[2] = {0.999, 0.9};
  for (int bi = 0; bi < 2; bi++) {
    static float p0[N], rp[N], rm[N], rv[N], g[N];
    ad_rng rng;
    cr_assert_eq(ad_rng_seed(&rng, 7 + (uint64_t)bi), AD_OK);
    for (int i = 0; i < N; i++) p0[i] = rp[i] = (float)ad_rng_normal(&rng), rm[i] = rv[i] = 0;
    int64_t s = N;
    ad_tensor *w = ad_from_data(ctx, AD_F32, 1, &s, p0);
    nn_params *pa = nn_params_new(ctx);
    cr_assert(w && pa);
    cr_assert_eq(nn_params_add(pa, "w", w, false), AD_OK);
    nn_opt_config cfg = nn_opt_defaults(NN_OPT_ADAM, 1e-3);
    cfg.beta2 = beta2s[bi];
    nn_optimizer *adam = nn_optimizer_new(pa, &cfg);
    cr_assert(adam, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, w, w)), NULL), AD_OK); /* a grad */
    for (int t = 1; t <= STEPS; t++) {
      for (int i = 0; i < N; i++) {
        double e = -70 + 110 * ad_rng_uniform(&rng);
        g[i] = (float)((ad_rng_uniform(&rng) < 0.5 ? -1 : 1) *
                       ldexp(1 + ad_rng_uniform(&rng), (int)e));
      }
      memcpy(w->grad->data, g, sizeof g);
      cr_assert_eq(nn_optimizer_step(adam), AD_OK);
      float nstep = (float)(-1e-3 / (1.0 - pow(0.9, t)));
      float bc2 = (float)sqrt(1.0 - pow(beta2s[bi], t));
      float a2 = (float)(1.0 - beta2s[bi]), b2 = (float)beta2s[bi];
      for (int i = 0; i < N; i++) {
        rm[i] = fmaf((float)(1 - 0.9), g[i], 0.9f * rm[i]);
        if (rm[i] < FLT_MIN && rm[i] > -FLT_MIN) rm[i] = 0;
        rv[i] = fmaf(a2 * g[i], g[i], b2 * rv[i]);
        rp[i] += nstep * rm[i] / (sqrtf(rv[i]) / bc2 + 1e-8f);
      }
      cr_assert(memcmp(w->data, rp, sizeof rp) == 0, "beta2 %g, step %d: parameters differ",
                beta2s[bi], t);
    }
    nn_optimizer_free(adam);
    nn_params_free(pa);
    ad_tensor_free(w);
  }
}

/* Every compiled version of the update loops (baseline, AVX2, AVX-512)
 * gives the baseline's bits, for every optimizer and option that changes
 * the loop, in both dtypes, over lengths that leave every kind of vector
 * tail, through 4 steps from the same state: zero state, and state of
 * every magnitude (subnormal to 1e30), with subnormals kept and flushed. A
 * path this CPU lacks is reported in the log, not silently passed. */
#include "kernels/update.h"

Test(optim, update_paths_same_bits) {
  static const char *const names[] = {"best", "baseline", "AVX2", "AVX-512"};
  nn_opt_config cfgs[26];
  int nc = 0;
  cfgs[nc++] = nn_opt_defaults(NN_OPT_SGD, 0.1);
  cfgs[nc] = nn_opt_defaults(NN_OPT_SGD, 0.1), cfgs[nc].momentum = 0.9,
  cfgs[nc++].weight_decay = 0.01;
  cfgs[nc] = nn_opt_defaults(NN_OPT_SGD, 0.1), cfgs[nc].momentum = 0.9, cfgs[nc++].nesterov = true;
  cfgs[nc] = nn_opt_defaults(NN_OPT_ADAGRAD, 0.1), cfgs[nc++].lr_decay = 0.01;
  cfgs[nc++] = nn_opt_defaults(NN_OPT_RMSPROP, 0.01);
  cfgs[nc] = nn_opt_defaults(NN_OPT_RMSPROP, 0.01), cfgs[nc].centered = true,
  cfgs[nc++].momentum = 0.5;
  cfgs[nc++] = nn_opt_defaults(NN_OPT_ADAM, 1e-3);
  cfgs[nc] = nn_opt_defaults(NN_OPT_ADAM, 1e-3), cfgs[nc++].weight_decay = 0.1;
  cfgs[nc++] = nn_opt_defaults(NN_OPT_ADAMW, 1e-3);
  /* eps 0: the update is m / sqrt(v) alone, so a square root or a division
   * rounded differently shows in p */
  cfgs[nc] = nn_opt_defaults(NN_OPT_ADAM, 1e-3), cfgs[nc++].eps = 0;
  /* amsgrad, maximize and the later kinds: loops of their own */
  cfgs[nc] = nn_opt_defaults(NN_OPT_ADAM, 1e-3), cfgs[nc++].amsgrad = true;
  cfgs[nc] = nn_opt_defaults(NN_OPT_ADAMW, 1e-3), cfgs[nc].amsgrad = true,
  cfgs[nc++].maximize = true;
  cfgs[nc] = nn_opt_defaults(NN_OPT_ADAM, 1e-3), cfgs[nc++].maximize = true;
  cfgs[nc] = nn_opt_defaults(NN_OPT_SGD, 0.1), cfgs[nc].momentum = 0.9, cfgs[nc++].maximize = true;
  cfgs[nc] = nn_opt_defaults(NN_OPT_ADAMAX, 2e-3), cfgs[nc].weight_decay = 0.1,
  cfgs[nc++].maximize = true;
  cfgs[nc++] = nn_opt_defaults(NN_OPT_ADAMAX, 2e-3);
  cfgs[nc] = nn_opt_defaults(NN_OPT_NADAM, 2e-3), cfgs[nc++].weight_decay = 0.1;
  cfgs[nc] = nn_opt_defaults(NN_OPT_RADAM, 1e-3), cfgs[nc++].weight_decay = 0.1;
  /* beta2 0.5: r_t > 5 never, the un-rectified loop */
  cfgs[nc] = nn_opt_defaults(NN_OPT_RADAM, 1e-3), cfgs[nc++].beta2 = 0.5;
  /* Adadelta, ASGD, Rprop: their settings in aux.xc, ASGD's eta and mu in
   * aux (mu 0.25: the averaging branch) */
  cfgs[nc] = nn_opt_defaults(NN_OPT_ADADELTA, 1.0), cfgs[nc++].weight_decay = 0.1;
  cfgs[nc] = nn_opt_defaults(NN_OPT_ADADELTA, 0.5), cfgs[nc++].maximize = true;
  cfgs[nc] = nn_opt_defaults(NN_OPT_ASGD, 0.01), cfgs[nc++].weight_decay = 0.1;
  cfgs[nc] = nn_opt_defaults(NN_OPT_ASGD, 0.01), cfgs[nc++].maximize = true;
  cfgs[nc++] = nn_opt_defaults(NN_OPT_RPROP, 0.01);
  cfgs[nc] = nn_opt_defaults(NN_OPT_RPROP, 0.01), cfgs[nc++].maximize = true;
  nn_opt_config_ext xc = nn_opt_defaults_ext(NN_OPT_ADADELTA, 1.0);
  xc.rho = 0.8, xc.lambd = 1e-2, xc.asgd_alpha = 0.75, xc.t0 = 2;
  xc.etaminus = 0.5, xc.etaplus = 1.2, xc.step_size_min = 1e-3, xc.step_size_max = 0.05;
  const nn_update_aux aux = {4e-3, 0.8, &xc, 0.0099, 0.25};
  const int64_t lens[] = {1, 7, 15, 16, 17, 33, 1001};
  enum { N = 1001 };
  int ran[4] = {0};
  for (int mode = 0; mode < 4; mode++) {
    bool wide = mode & 1;
    ad_set_flush_denormal(mode & 2);
    for (int d = 0; d < 2; d++) {
      ad_dtype dt = d ? AD_F64 : AD_F32;
      size_t es = d ? 8 : 4;
      for (int ci = 0; ci < nc; ci++)
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
          int64_t n = lens[li];
          /* [path][p, s0, s1, s2] */
          static double buf[4][4][N], grad[N];
          ad_rng rng;
          cr_assert_eq(ad_rng_seed(&rng, (uint64_t)(1000 * mode + 100 * ci + li)), AD_OK);
          for (int64_t i = 0; i < n; i++) {
            double p = 2 * ad_rng_uniform(&rng) - 1, g = 2 * ad_rng_uniform(&rng) - 1, st[3] = {0};
            if (i % 5 == 4) g = 0;              /* moments that decay towards the flush */
            for (int k = 0; wide && k < 3; k++) /* 2^-160 .. 2^100: zeros and subnormals in f32 */
              st[k] = ldexp(1 + ad_rng_uniform(&rng), (int)ad_rng_below(&rng, 261) - 160);
            for (int path = 0; path < 4; path++) {
              if (d) {
                buf[path][0][i] = p;
                for (int k = 1; k < 4; k++) buf[path][k][i] = st[k - 1];
              } else {
                ((float *)buf[path][0])[i] = (float)p;
                for (int k = 1; k < 4; k++) ((float *)buf[path][k])[i] = (float)st[k - 1];
              }
            }
            if (d)
              grad[i] = g;
            else
              ((float *)grad)[i] = (float)(g * 1e-3);
          }
          for (int path = 1; path < 4; path++) {
            bool ok = true;
            for (int64_t t = 1; t <= 4 && ok; t++)
              ok = nn_update_on((nn_update_path)path, &cfgs[ci], &aux, dt, t, n, buf[path][0], grad,
                                buf[path][1], buf[path][2], buf[path][3]);
            if (!ok) continue;
            ran[path]++;
            for (int k = 0; k < 4; k++)
              cr_assert(memcmp(buf[path][k], buf[1][k], (size_t)n * es) == 0,
                        "%s, config %d, length %lld, mode %d: the %s loops' array %d differs "
                        "from the baseline's",
                        ad_dtype_name(dt), ci, (long long)n, mode, names[path], k);
          }
        }
    }
  }
  ad_set_flush_denormal(false);
  cr_assert_gt(ran[1], 0);
  for (int path = 2; path < 4; path++)
    if (!ran[path])
      cr_log_warn("update paths: %s not run (this CPU or build lacks it)", names[path]);
  cr_log_info("update paths compared with the baseline: AVX2 %d cases, AVX-512 %d", ran[2], ran[3]);
}

/* nn_sum_squares (the norms of clipping and of the history): every path
 * gives the baseline's bits, over lengths with every kind of tail, and
 * the value is the sum in the order the header states (element k into
 * partial k mod 32, the partials added in a tree), checked against that
 * order written out here; it stays within a few ulp of a long double sum.
 * An inf or NaN element gives inf or NaN. */
static double sumsq_in_stated_order(const double *x, int64_t n) {
  double p[32] = {0};
  for (int64_t k = 0; k < n; k++) p[k % 32] += x[k] * x[k];
  for (int w = 16; w >= 1; w /= 2)
    for (int j = 0; j < w; j++) p[j] += p[j + w];
  return p[0];
}

Test(optim, sum_squares_paths_same_bits) {
  static const char *const names[] = {"best", "baseline", "AVX2", "AVX-512"};
  static const int64_t lens[] = {0, 1, 7, 31, 32, 33, 63, 64, 100, 1001, 4099};
  enum { N = 4099 };
  static double xd[N], as_d[N];
  static float xf[N];
  int ran[4] = {0};
  ad_rng rng;
  cr_assert_eq(ad_rng_seed(&rng, 77), AD_OK);
  for (int i = 0; i < N; i++) {
    /* magnitudes 2^-40 .. 2^40, both signs: partials of every size */
    xd[i] = (2 * ad_rng_uniform(&rng) - 1) * ldexp(1, (int)ad_rng_below(&rng, 81) - 40);
    xf[i] = (float)xd[i];
  }
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    const void *x = d ? (const void *)xd : (const void *)xf;
    for (int i = 0; i < N; i++) as_d[i] = d ? xd[i] : (double)xf[i];
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
      int64_t n = lens[li];
      double base = -1, want = sumsq_in_stated_order(as_d, n);
      long double ref = 0;
      for (int64_t k = 0; k < n; k++) ref += (long double)as_d[k] * as_d[k];
      cr_assert(nn_sum_squares_on(NN_UPDATE_BASELINE, dt, n, x, &base));
      cr_assert(base == want, "%s, length %lld: %.17g, the stated order gives %.17g",
                ad_dtype_name(dt), (long long)n, base, want);
      cr_assert(fabsl(base - ref) <= 8 * DBL_EPSILON * ref, "%s, length %lld: %.17g against %.17Lg",
                ad_dtype_name(dt), (long long)n, base, ref);
      for (int path = 1; path < 4; path++) {
        double got = -1;
        if (!nn_sum_squares_on((nn_update_path)path, dt, n, x, &got)) continue;
        ran[path]++;
        cr_assert(memcmp(&got, &base, sizeof got) == 0,
                  "%s, length %lld: the %s loop gives %.17g, the baseline %.17g", ad_dtype_name(dt),
                  (long long)n, names[path], got, base);
      }
      cr_assert_eq(nn_sum_squares(dt, n, x), base);
    }
  }
  /* a non-finite element in the vector body and in the tail */
  for (int path = 1; path < 4; path++)
    for (int at = 5; at <= 40; at += 35) {
      double got = 0, keep = xd[at];
      float keepf = xf[at];
      xd[at] = NAN, xf[at] = INFINITY;
      bool ok = nn_sum_squares_on((nn_update_path)path, AD_F64, 41, xd, &got);
      if (ok) cr_assert(isnan(got), "%s: NaN at %d gave %g", names[path], at, got);
      ok = nn_sum_squares_on((nn_update_path)path, AD_F32, 41, xf, &got);
      if (ok) cr_assert(isinf(got), "%s: inf at %d gave %g", names[path], at, got);
      xd[at] = keep, xf[at] = keepf;
    }
  cr_assert_gt(ran[1], 0);
  for (int path = 2; path < 4; path++)
    if (!ran[path])
      cr_log_warn("sum of squares: the %s loop not run (this CPU or build lacks it)", names[path]);
  cr_log_info("sum of squares compared with the baseline: AVX2 %d cases, AVX-512 %d", ran[2],
              ran[3]);
}

/* Clipping by value on every path: nn_clip_outside finds an element
 * outside [-clip, clip] wherever it is (the first block, a later block,
 * the tail), never for NaN or for a value at +-clip; nn_clip_clamp gives
 * each element fmin(fmax(x, -clip), clip) with NaN kept, in both dtypes. */
Test(optim, clip_value_paths) {
  static const char *const names[] = {"best", "baseline", "AVX2", "AVX-512"};
  static const int64_t lens[] = {0, 1, 15, 16, 17, 1023, 1024, 1025, 3001};
  enum { N = 3001 };
  static double xd[N], yd[N];
  static float xf[N], yf[N];
  const double clip = 0.5;
  int ran[4] = {0};
  ad_rng rng;
  cr_assert_eq(ad_rng_seed(&rng, 5), AD_OK);
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
      int64_t n = lens[li];
      /* inside, the bounds, NaN and -0; then one element outside at a few places */
      const int64_t ats[] = {-1, 0, 1023, 1024, n / 2, n - 1};
      for (size_t ai = 0; ai < sizeof ats / sizeof *ats; ai++) {
        int64_t at = ats[ai];
        if (at >= n) continue;
        for (int path = 0; path < 4; path++) {
          for (int64_t k = 0; k < n; k++) {
            double v = (2 * ad_rng_uniform(&rng) - 1) * 0.49;
            v = k % 97 == 3   ? NAN
                : k % 89 == 5 ? -0.0
                : k % 83 == 7 ? -clip
                : k % 79 == 1 ? clip
                              : v;
            if (k == at) v = k % 2 ? -INFINITY : 0.75;
            xd[k] = v, xf[k] = (float)v;
          }
          void *x = d ? (void *)xd : (void *)xf;
          bool out = !(at >= 0);
          if (!nn_clip_outside_on((nn_update_path)path, dt, n, x, clip, &out)) continue;
          ran[path]++;
          cr_assert_eq(out, at >= 0, "%s %s, length %lld, outside at %lld: %d", names[path],
                       ad_dtype_name(dt), (long long)n, (long long)at, out);
          memcpy(yd, xd, sizeof xd);
          memcpy(yf, xf, sizeof xf);
          cr_assert(nn_clip_clamp_on((nn_update_path)path, dt, n, x, clip));
          for (int64_t k = 0; k < n; k++) {
            double was = d ? yd[k] : (double)yf[k], got = d ? xd[k] : (double)xf[k];
            double want = isnan(was) ? was : fmin(fmax(was, -clip), clip);
            cr_assert(isnan(want) ? isnan(got) : got == want && signbit(got) == signbit(want),
                      "%s %s, length %lld, element %lld: %g clamped to %g", names[path],
                      ad_dtype_name(dt), (long long)n, (long long)k, was, got);
          }
        }
      }
    }
  }
  cr_assert_gt(ran[1], 0);
  for (int path = 2; path < 4; path++)
    if (!ran[path])
      cr_log_warn("clipping by value: the %s loops not run (this CPU or build lacks them)",
                  names[path]);
  cr_log_info("clipping by value: baseline %d cases, AVX2 %d, AVX-512 %d", ran[1], ran[2], ran[3]);
}

/* nn_clip_grad_value over more tensors than it remembers (256): those with
 * an element outside are clamped wherever they are in the list, the rest
 * keep their values, a tensor listed twice is clamped once alike. */
Test(optim, clip_value_over_many_tensors) {
  enum { T = 300 };
  int64_t s[1] = {3};
  ad_tensor *w[T];
  nn_params *p = nn_params_new(ctx);
  for (int i = 0; i < T; i++) {
    w[i] = ad_zeros(ctx, AD_F32, 1, s);
    ad_tensor_set_requires_grad(w[i], true);
    char name[16];
    snprintf(name, sizeof name, "w%d", i);
    cr_assert_eq(nn_params_add(p, name, w[i], false), AD_OK);
  }
  cr_assert_eq(nn_params_add(p, "again", w[280], false), AD_OK);
  ad_tensor *loss = NULL;
  for (int i = 0; i < T; i++) { /* grad of w[i]: (i, -i, 0.5) / 200 */
    ad_tensor *c = ad_zeros(ctx, AD_F32, 1, s);
    ad_tensor_set(c, 0, i / 200.0), ad_tensor_set(c, 1, -i / 200.0), ad_tensor_set(c, 2, 0.0025);
    ad_tensor *term = ad_sum(ctx, ad_mul(ctx, w[i], c));
    loss = loss ? ad_add(ctx, loss, term) : term;
  }
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  nn_clip_grad_value(p, 1.0);
  for (int i = 0; i < T; i++) {
    float g0 = ((float *)w[i]->grad->data)[0], g1 = ((float *)w[i]->grad->data)[1];
    float want = i > 200 ? 1.0f : (float)(i / 200.0);
    cr_assert(g0 == want && g1 == -want && ((float *)w[i]->grad->data)[2] == 0.0025f, "w%d: %g %g",
              i, g0, g1);
  }
  ad_tape_reset(ctx);
  nn_params_free(p);
  for (int i = 0; i < T; i++) ad_tensor_free(w[i]);
}

/* One Adam run over three parameters of 300,001, 7 and 40,000 elements
 * (above the sweep's split minimum, so on two or more threads the chunks
 * cross parameter boundaries), two steps, the gradients fixed; with
 * ranges (as nn_dist's sharded step) or all elements. Returns the
 * parameters and the moments, concatenated, in a malloc'ed array. */
static float *adam_on_threads(int threads, bool ranges) {
  static const int64_t sizes[3] = {300001, 7, 40000};
  enum { TOTAL = 340008 };
  cr_assert_eq(ad_set_num_threads(threads), AD_OK);
  nn_params *ps = nn_params_new(ctx);
  ad_tensor *p[3], *g[3];
  for (int i = 0; i < 3; i++) {
    p[i] = ad_zeros(ctx, AD_F32, 1, &sizes[i]);
    g[i] = ad_zeros(ctx, AD_F32, 1, &sizes[i]);
    float *pv = p[i]->data, *gv = g[i]->data;
    for (int64_t e = 0; e < sizes[i]; e++) {
      pv[e] = (float)sin(0.37 * (double)(e + 11 * i));
      gv[e] = (float)cos(0.91 * (double)(e + 5 * i)) * (float)(1 + i);
    }
    char name[16];
    snprintf(name, sizeof name, "p%d", i);
    cr_assert_eq(nn_params_add(ps, name, p[i], true), AD_OK);
  }
  nn_optimizer *o = nn_adam_new(ps, 1e-2);
  cr_assert_not_null(o);
  const int64_t lo[3] = {3, 0, 1}, hi[3] = {299990, 7, 40000};
  for (int t = 0; t < 2; t++) {
    ad_tape_reset(ctx);
    nn_params_zero_grad(ps);
    ad_tensor *l = ad_add(
        ctx, ad_sum(ctx, ad_mul(ctx, p[0], g[0])),
        ad_add(ctx, ad_sum(ctx, ad_mul(ctx, p[1], g[1])), ad_sum(ctx, ad_mul(ctx, p[2], g[2]))));
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_eq(ranges ? nn_optimizer_step_ranges(o, lo, hi) : nn_optimizer_step(o), AD_OK);
  }
  float *out = malloc(3 * TOTAL * sizeof *out), *at = out;
  cr_assert_not_null(out);
  for (int i = 0; i < 3; i++, at += sizes[i - 1])
    memcpy(at, p[i]->data, (size_t)sizes[i] * sizeof *at);
  for (int k = 0; k < nn_optimizer_state_count(o); k++) {
    const ad_tensor *s = nn_optimizer_state_tensors(o)[k];
    if (nn_optimizer_state_param(o, k) < 0) continue;
    memcpy(at, s->data, (size_t)s->size * sizeof *at);
    at += s->size;
  }
  cr_assert_eq(at - out, 3 * TOTAL, "parameters, m and v");
  ad_tape_reset(ctx);
  nn_optimizer_free(o);
  nn_params_free(ps);
  for (int i = 0; i < 3; i++) ad_tensor_free(p[i]), ad_tensor_free(g[i]);
  ad_set_num_threads(1);
  return out;
}

/* The optimizer's sweep cut into chunks over threads updates every element
 * once, with the same bits as one thread, all elements or ranges. */
Test(optim, sweep_on_threads_same_bits_as_one_thread) {
  for (int ranges = 0; ranges < 2; ranges++) {
    float *one = adam_on_threads(1, ranges);
    for (int threads = 2; threads <= 3; threads++) {
      float *many = adam_on_threads(threads, ranges);
      for (int64_t e = 0; e < 3 * 340008; e++)
        if (memcmp(&one[e], &many[e], sizeof *one) != 0)
          cr_assert_fail("%s, %d threads: value %lld is %.9g, one thread %.9g",
                         ranges ? "ranges" : "all", threads, (long long)e, (double)many[e],
                         (double)one[e]);
      free(many);
    }
    free(one);
  }
}

/* Clipping scales the gradients through their data: an op that read a
 * gradient as a value (a penalty on it, say) would be differentiated at the
 * clipped values (d/dv 1, not the 6 it read) without a word. The writes are
 * noted, as PyTorch's clip_grad_norm_ bumps the gradient's version; value
 * clipping that changes nothing is no write. The optimizer's clip_norm
 * too. */
Test(optim, clipping_a_gradient_an_op_read_is_a_write) {
  int64_t s[1] = {1};
  ad_tensor *w = ad_zeros(ctx, AD_F64, 1, s), *v = ad_ones(ctx, AD_F64, 1, s);
  ad_tensor_set(w, 0, 3.0);
  ad_tensor_set_requires_grad(w, true);
  ad_tensor_set_requires_grad(v, true);
  nn_params *p = nn_params_new(ctx);
  cr_assert_eq(nn_params_add(p, "w", w, false), AD_OK);
  nn_opt_config cfg = nn_opt_defaults(NN_OPT_SGD, 0.0);
  cfg.clip_norm = 1.0;
  nn_optimizer *opt = nn_optimizer_new(p, &cfg);
  for (int how = 0; how < 4; how++) {
    ad_tape_reset(ctx);
    ad_tensor_zero_grad(w);
    ad_tensor_zero_grad(v);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, w, w)), NULL), AD_OK); /* w.grad 6 */
    ad_tensor *l = ad_sum(ctx, ad_mul(ctx, v, w->grad));
    if (how == 0) cr_assert_float_eq(nn_clip_grad_norm(p, 1.0), 6.0, 1e-12);
    if (how == 1) nn_clip_grad_value(p, 1.0);
    if (how == 2) cr_assert_eq(nn_optimizer_step(opt), AD_OK);
    if (how == 3) nn_clip_grad_value(p, 10.0); /* changes nothing */
    cr_assert_float_eq(ad_tensor_get(w->grad, 0), how == 3 ? 6.0 : 1.0, 1e-6);
    if (how == 3) {
      cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
      cr_assert_float_eq(ad_tensor_get(v->grad, 0), 6.0, 1e-12);
      continue;
    }
    cr_assert_eq(ad_backward(ctx, l, NULL), AD_ERR_STATE, "clipping %d", how);
    cr_assert(strstr(ad_last_error(ctx), "input 1 of mul ([1]) was written after the op"), "%s",
              ad_last_error(ctx));
    ad_clear_error(ctx);
    cr_assert_null(v->grad);
  }
  nn_optimizer_free(opt);
  nn_params_free(p);
  ad_tensor_free(w);
  ad_tensor_free(v);
}

/* z = sum(s * v) for a state tensor s of opt: its backward reads s. */
static ad_tensor *reads_state(ad_tensor *s, ad_tensor **v) {
  ad_ctx *c = ad_tensor_ctx(s);
  *v = ad_ones(c, s->dtype, s->ndim, s->shape);
  ad_tensor_set_requires_grad(*v, true);
  return ad_sum(c, ad_mul(c, s, *v));
}

/* The optimizer's own state is written in place too (the moments, the step
 * counts; the rate by the schedule and set_lr): a backward through an op
 * recorded before that read it refuses, as for the parameters, instead of
 * differentiating at the new values. */
Test(optim, a_write_of_the_state_is_noted) {
  ad_rng r;
  ad_rng_seed(&r, 5);
  nn_layer *l = nn_dense_new(ctx, 3, 2, &r, NULL);
  nn_params *p = nn_layer_params(l);
  int64_t xs[2] = {4, 3};
  ad_tensor *x = ad_randn(ctx, &r, AD_F32, 2, xs, 0, 1);
  nn_opt_config cfgs[3] = {{.kind = NN_OPT_ADAM, .lr = 0.01},
                           {.kind = NN_OPT_SGD, .lr = 0.1, .momentum = 0.9},
                           {.kind = NN_OPT_RMSPROP, .lr = 0.01, .momentum = 0.5, .centered = true}};
  nn_schedule sched = {.kind = NN_SCHED_STEP, .step_size = 1, .gamma = 0.5};
  for (int c = 0; c < 3; c++) {
    nn_optimizer *opt = nn_optimizer_new(p, &cfgs[c]);
    cr_assert_not_null(opt, "%s", ad_last_error(ctx));
    cr_assert_eq(nn_optimizer_set_schedule(opt, &sched), AD_OK);
    nn_plateau pl = nn_plateau_defaults();
    cr_assert_eq(nn_optimizer_set_plateau(opt, &pl), AD_OK);
    int ns = nn_optimizer_state_count(opt);
    for (int i = 0; i < ns; i++) {
      const char *name = nn_optimizer_state_names(opt)[i];
      bool plateau = strstr(name, ".plateau.");
      bool rate = !plateau && (strstr(name, ".lr") || strstr(name, ".schedule."));
      for (int how = 0; how < (rate ? 2 : 1); how++) {
        ad_tape_reset(ctx);
        nn_optimizer_zero_grad(opt);
        ad_tensor *loss = ad_sum(ctx, nn_layer_forward(l, x, true));
        cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
        ad_tensor *v;
        ad_tensor *z = reads_state(nn_optimizer_state_tensors(opt)[i], &v);
        cr_assert_not_null(z, "%s", ad_last_error(ctx));
        ad_status st = plateau    ? nn_optimizer_plateau_step(opt, 1.0)
                       : !rate    ? nn_optimizer_step(opt)
                       : how == 0 ? nn_optimizer_schedule_step(opt)
                                  : nn_optimizer_set_lr(opt, 0.01);
        cr_assert_eq(st, AD_OK, "%s", ad_last_error(ctx));
        if (strstr(name, ".lr0") && how == 0) { /* schedule_step leaves the base rate alone */
          ad_tensor_free(v);
          continue;
        }
        cr_assert_eq(ad_backward(ctx, z, NULL), AD_ERR_STATE, "%d %s (%d): %s", c, name, how,
                     ad_last_error(ctx));
        cr_assert(strstr(ad_last_error(ctx), "was written after the op was recorded"), "%s",
                  ad_last_error(ctx));
        ad_clear_error(ctx);
        ad_tensor_free(v);
      }
    }
    nn_optimizer_free(opt);
  }
  ad_tape_reset(ctx);
  nn_layer_free(l);
  ad_tensor_free(x);
}

/* A step between forward and backward (the GAN pattern of PyTorch's
 * "modified by an inplace operation"): the backward of the ops recorded
 * before the step would read the stepped weights, and refuses; so does one
 * after nn_init_tensor re-initialises a weight. After the tape is reset and
 * the forward run again, it works. */
Test(optim, a_step_before_the_backward_of_earlier_ops_is_refused) {
  ad_rng r;
  ad_rng_seed(&r, 3);
  nn_layer *l = nn_dense_new(ctx, 3, 2, &r, NULL);
  nn_params *p = nn_layer_params(l);
  nn_optimizer *opt = nn_sgd_new(p, 0.1, 0, false, 0);
  int64_t s[2] = {4, 3};
  ad_tensor *x = ad_randn(ctx, &r, AD_F32, 2, s, 0, 1);
  ad_tensor *loss = ad_sum(ctx, nn_layer_forward(l, x, true));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_step(opt), AD_OK);
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_ERR_STATE);
  cr_assert(strstr(ad_last_error(ctx), "was written after the op was recorded"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tape_reset(ctx);
  loss = ad_sum(ctx, nn_layer_forward(l, x, true));
  cr_assert_eq(
      nn_init_tensor(ctx, nn_params_tensors(p)[0], (nn_init){NN_INIT_HE_UNIFORM, 0, 0}, &r), AD_OK);
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_ERR_STATE);
  ad_clear_error(ctx);
  ad_tape_reset(ctx);
  nn_optimizer_zero_grad(opt);
  loss = ad_sum(ctx, nn_layer_forward(l, x, true));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_step(opt), AD_OK);
  ad_tape_reset(ctx);
  nn_optimizer_free(opt);
  nn_layer_free(l);
  ad_tensor_free(x);
}

/* One tensor under two names (tied weights, as a language model's input
 * and output embeddings): PyTorch's module.parameters() lists it once, so
 * it is stepped, clipped, counted and penalised once. It was stepped and
 * scaled twice. A second entry may not own it (it would be freed twice). */
Test(optim, a_tensor_listed_twice_is_stepped_once) {
  int64_t n = 2;
  ad_tensor *w = ad_zeros(ctx, AD_F64, 1, &n), *b = ad_zeros(ctx, AD_F64, 1, &n);
  ad_tensor_set(w, 0, 1), ad_tensor_set(w, 1, 2);
  nn_params *p = nn_params_new(ctx);
  cr_assert_eq(nn_params_add(p, "embed.weight", w, false), AD_OK);
  cr_assert_eq(nn_params_add(p, "bias", b, true), AD_OK);
  cr_assert_eq(nn_params_add(p, "head.weight", w, true), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(ctx), "'head.weight' is the tensor listed as 'embed.weight'"),
            "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  cr_assert_eq(nn_params_add(p, "head.weight", w, false), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_params_count(p), 3);
  cr_assert_eq(nn_params_numel(p), 4);
  ad_tensor *l2 = nn_l2_penalty(ctx, p, 1.0);
  cr_assert_eq(ad_tensor_item(l2), 5.0, "penalty %g", ad_tensor_item(l2)); /* 1 + 4, once */
  ad_tensor *loss =
      ad_add(ctx, ad_sum(ctx, ad_mul(ctx, w, ad_from_data(ctx, AD_F64, 1, &n, (double[]){3, 4}))),
             ad_sum(ctx, b));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  ad_tape_reset(ctx);
  nn_optimizer *opt = nn_sgd_new(p, 1.0, 0.9, false, 0);
  /* step, lr, the schedule's lr0 and epoch, the plateau's three, and a
   * momentum and a step count per tensor, under its first name: 11, not 13 */
  cr_assert_eq(nn_optimizer_state_count(opt), 11);
  cr_assert_str_eq(nn_optimizer_state_names(opt)[1], "sgd.momentum.embed.weight");
  /* gradients (3, 4) and the bias's (1, 1): norm sqrt(27), w counted once */
  double norm = nn_clip_grad_norm(p, 1.0), want = sqrt(27.0);
  cr_assert_float_eq(norm, want, 1e-12, "norm %.17g", norm);
  double g0 = ad_tensor_get(w->grad, 0);
  cr_assert_float_eq(g0, 3.0 / (want + 1e-6), 1e-15, "scaled once: %.17g", g0);
  cr_assert_eq(nn_optimizer_step(opt), AD_OK);
  double g1 = ad_tensor_get(w->grad, 1);
  cr_assert_eq(ad_tensor_get(w, 0), 1 - g0, "stepped once: %g", ad_tensor_get(w, 0));
  cr_assert_eq(ad_tensor_get(w, 1), 2 - g1);
  /* a parameter added after the optimizer: neither stepped nor clipped by
   * it (it was clipped, not stepped) */
  nn_optimizer_free(opt);
  opt = nn_optimizer_new(p, &(nn_opt_config){.kind = NN_OPT_SGD, .lr = 0, .clip_norm = 1e-3});
  cr_assert_not_null(opt, "%s", ad_last_error(ctx));
  ad_tensor *late = ad_zeros(ctx, AD_F64, 1, &n);
  cr_assert_eq(nn_params_add(p, "late", late, true), AD_OK);
  loss = ad_sum(ctx, ad_mul_scalar(ctx, late, 100.0));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK);
  ad_tape_reset(ctx);
  cr_assert_eq(nn_optimizer_step(opt), AD_OK);
  double gl = ad_tensor_get(late->grad, 0);
  cr_assert_eq(gl, 100.0, "the late parameter's gradient was clipped: %g", gl);
  nn_optimizer_free(opt);
  nn_params_free(p);
  ad_tensor_free(w);
}

/* An initializer's write into a weight the tape used must be noted (the
 * backward's check); with no memory for the note it fails, weight
 * unchanged, rather than report success without writing. */
Test(optim, an_init_whose_write_cannot_be_noted_fails) {
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  int64_t n = 2;
  ad_tensor *w = ad_full(c, AD_F64, 1, &n, 5.0);
  ad_tensor_set_requires_grad(w, true);
  cr_assert_not_null(ad_sum(c, ad_mul(c, w, w)));
  test_alloc_refuse_after(&ta, 0);
  ad_status st = nn_init_tensor(c, w, nn_init_make(NN_INIT_ZEROS, 0, 0), NULL);
  cr_assert_eq(st, AD_ERR_OOM, "%s", ad_status_str(st));
  cr_assert_eq(ad_tensor_get(w, 0), 5.0);
  test_alloc_grant_all(&ta);
  ad_tape_reset(c);
  ad_tensor_free(w);
  ad_ctx_free(c);
}
