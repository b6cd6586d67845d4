/* test_nn_optim_more.c: Adadelta, ASGD and Rprop against PyTorch 1.13's
 * single-tensor steps (tests/optim_more_fixtures.h, from
 * tools/gen_optim_more_fixtures.py), their state names against torch's
 * state_dict keys, a checkpoint round trip mid-run, a step cut into
 * ranges, clipping, and the settings they refuse. */
#include "nn.h"
#include "nn_io.h"
#include "optim_more_fixtures.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

TEST_TMPDIR_SUITE(optim_more, "ad-optim-more");

enum { NP = 3 };
static const char *const pname[NP] = {"0.weight", "0.bias", "1.kernel"};
static const int64_t psize[NP] = {6, 3, 4};
static const double *const p0[NP] = {om_p0_0, om_p0_1, om_p0_2};
static const double *const g0[NP] = {om_g_0, om_g_1, om_g_2};

static const char *kind_name(nn_opt_kind k) {
  return k == NN_OPT_ADADELTA ? "adadelta" : k == NN_OPT_ASGD ? "asgd" : "rprop";
}

/* A model holding the fixture's three parameters ([2,3], [3], [2,1,2]) and
 * their three fixed gradients each. */
typedef struct fixture {
  nn_model *m;
  ad_tensor *p[NP];
  ad_tensor *g[3][NP];
} fixture;

static void fixture_init(fixture *f, ad_dtype dt) {
  static const int64_t s0[2] = {2, 3}, s1[1] = {3}, s2[3] = {2, 1, 2};
  static const int64_t *const shape[NP] = {s0, s1, s2};
  static const int ndim[NP] = {2, 1, 3};
  f->m = nn_sequential_new(ctx);
  cr_assert_not_null(f->m);
  for (int i = 0; i < NP; i++) {
    f->p[i] = nn_model_add_param(f->m, pname[i], dt, ndim[i], shape[i],
                                 (nn_init){NN_INIT_DEFAULT, 0, 0}, NULL);
    cr_assert_not_null(f->p[i], "%s", ad_last_error(ctx));
    for (int e = 0; e < psize[i]; e++) ad_tensor_set(f->p[i], e, p0[i][e]);
    for (int t = 0; t < 3; t++) {
      f->g[t][i] = ad_zeros(ctx, dt, ndim[i], shape[i]);
      for (int e = 0; e < psize[i]; e++) ad_tensor_set(f->g[t][i], e, g0[i][psize[i] * t + e]);
    }
  }
}

static void fixture_fini(fixture *f) {
  for (int t = 0; t < 3; t++)
    for (int i = 0; i < NP; i++) ad_tensor_free(f->g[t][i]);
  nn_model_free(f->m);
}

/* Gradients of step t (0-based) through the tape: L = sum_i sum(p_i G_i). */
static void set_grads(fixture *f, int t) {
  ad_tape_reset(ctx);
  nn_params_zero_grad(nn_model_params(f->m));
  ad_tensor *l = NULL;
  for (int i = 0; i < NP; i++) {
    ad_tensor *s = ad_sum(ctx, ad_mul(ctx, f->p[i], f->g[t % 3][i]));
    l = l ? ad_add(ctx, l, s) : s;
  }
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
}

/* The state tensor named "<kind>.<state>.<param>", or NULL. */
static ad_tensor *state_named(const nn_optimizer *o, const char *state, const char *param) {
  char name[96];
  snprintf(name, sizeof name, "%s.%s.%s", kind_name(nn_optimizer_config(o)->kind), state, param);
  for (int i = 0; i < nn_optimizer_state_count(o); i++)
    if (strcmp(nn_optimizer_state_names(o)[i], name) == 0) return nn_optimizer_state_tensors(o)[i];
  return NULL;
}

/* |got - want| relative to max(|want|, floor). */
static double rel_err(double got, double want, double floor) {
  double d = fabs(got - want), s = fabs(want) > floor ? fabs(want) : floor;
  return d == 0 ? 0 : d / s;
}

/* Runs cfg for OM_STEPS steps in dt and compares, after every step, the
 * parameters and the state tensors named states[] (in the fixture's
 * order) with torch's trajectory want. Returns the largest relative
 * error; fails beyond tol. */
static double check_run(const nn_opt_config_ext *cfg, const double *want, const char *const *states,
                        int nstates, ad_dtype dt, double tol) {
  fixture f;
  fixture_init(&f, dt);
  nn_optimizer *o = nn_optimizer_new_ext(nn_model_params(f.m), cfg);
  cr_assert_not_null(o, "%s", ad_last_error(ctx));
  ad_tensor *got[4][NP];
  for (int p = 0; p < NP; p++) got[0][p] = f.p[p];
  for (int k = 0; k < nstates; k++)
    for (int p = 0; p < NP; p++) {
      got[1 + k][p] = state_named(o, states[k], pname[p]);
      cr_assert_not_null(got[1 + k][p], "%s: no state %s", kind_name(cfg->base.kind), states[k]);
    }
  double floor = dt == AD_F32 ? FLT_MIN : DBL_MIN, worst = 0;
  const double *w = want;
  for (int t = 0; t < OM_STEPS; t++) {
    set_grads(&f, t);
    cr_assert_eq(nn_optimizer_step(o), AD_OK, "%s", ad_last_error(ctx));
    for (int k = 0; k <= nstates; k++)
      for (int p = 0; p < NP; p++) {
        ad_tensor *x = got[k][p];
        for (int64_t i = 0; i < x->size; i++, w++) {
          double g = ad_tensor_get(x, i), e = rel_err(g, *w, floor);
          if (e > worst) worst = e;
          cr_assert(e <= tol, "%s %s step %d %s of %s [%lld]: %.17g, torch %.17g (relative %.3g)",
                    kind_name(cfg->base.kind), ad_dtype_name(dt), t + 1,
                    k ? states[k - 1] : "value", pname[p], (long long)i, g, *w, e);
        }
      }
  }
  nn_optimizer_free(o);
  fixture_fini(&f);
  return worst;
}

/* Both dtypes: float64 to 1e-12, float32 to 1e-6. */
static void check_both(const char *what, nn_opt_config_ext cfg, const double *f64,
                       const double *f32, const char *const *states, int nstates) {
  double e64 = check_run(&cfg, f64, states, nstates, AD_F64, 1e-12);
  double e32 = check_run(&cfg, f32, states, nstates, AD_F32, 1e-6);
  cr_log_info("%s: largest relative error f64 %.3g, f32 %.3g", what, e64, e32);
}

static nn_opt_config_ext ext(nn_opt_kind kind, double lr) { return nn_opt_defaults_ext(kind, lr); }

static const char *const adadelta_st[] = {"square_avg", "acc_delta"};
static const char *const asgd_st[] = {"ax", "eta", "mu"};
static const char *const rprop_st[] = {"prev", "step_size"};

Test(optim_more, adadelta_matches_torch) {
  nn_opt_config_ext c = ext(NN_OPT_ADADELTA, 1.0);
  cr_assert(c.rho == 0.9 && c.base.eps == 1e-6); /* PyTorch's defaults */
  check_both("adadelta", c, om_adadelta_f64, om_adadelta_f32, adadelta_st, 2);
  c = ext(NN_OPT_ADADELTA, 0.5);
  c.rho = 0.8, c.base.eps = 1e-4, c.base.weight_decay = 0.1, c.base.maximize = true;
  check_both("adadelta weight_decay maximize", c, om_adadelta_wd_max_f64, om_adadelta_wd_max_f32,
             adadelta_st, 2);
}

Test(optim_more, asgd_matches_torch) {
  nn_opt_config_ext c = ext(NN_OPT_ASGD, 0.01);
  cr_assert(c.lambd == 1e-4 && c.asgd_alpha == 0.75 && c.t0 == 1e6);
  check_both("asgd", c, om_asgd_f64, om_asgd_f32, asgd_st, 3);
  c = ext(NN_OPT_ASGD, 0.05);
  c.lambd = 0.01, c.t0 = 3;
  check_both("asgd averaging", c, om_asgd_avg_f64, om_asgd_avg_f32, asgd_st, 3);
  c = ext(NN_OPT_ASGD, 0.05);
  c.lambd = 0.02, c.asgd_alpha = 0.6, c.t0 = 2, c.base.weight_decay = 0.1, c.base.maximize = true;
  check_both("asgd weight_decay maximize", c, om_asgd_wd_max_f64, om_asgd_wd_max_f32, asgd_st, 3);
}

/* The averaging case averages: from step 4 on, ax differs from the
 * parameter (else the test could not tell mu's use). */
Test(optim_more, asgd_fixture_averages) {
  int per_step = 13 * 2 + 2 * NP, differ = 0;
  for (int t = 3; t < OM_STEPS; t++)
    for (int i = 0; i < 13; i++)
      differ += om_asgd_avg_f64[per_step * t + i] != om_asgd_avg_f64[per_step * t + 13 + i];
  cr_assert_gt(differ, 0);
}

Test(optim_more, rprop_matches_torch) {
  nn_opt_config_ext c = ext(NN_OPT_RPROP, 0.01);
  cr_assert(c.etaminus == 0.5 && c.etaplus == 1.2 && c.step_size_min == 1e-6 &&
            c.step_size_max == 50);
  check_both("rprop", c, om_rprop_f64, om_rprop_f32, rprop_st, 2);
  c = ext(NN_OPT_RPROP, 0.05);
  c.etaminus = 0.3, c.etaplus = 1.5, c.step_size_min = 5e-3, c.step_size_max = 0.08;
  c.base.maximize = true;
  check_both("rprop clamped maximize", c, om_rprop_max_f64, om_rprop_max_f32, rprop_st, 2);
}

/* The clamped case reaches both bounds at some step (else the test could
 * not tell the clamps). */
Test(optim_more, rprop_fixture_reaches_both_clamps) {
  int per_step = 13 * 3, lo = 0, hi = 0;
  for (int t = 0; t < OM_STEPS; t++)
    for (int i = 0; i < 13; i++) {
      double s = om_rprop_max_f64[per_step * t + 26 + i];
      lo += s == 5e-3, hi += s == 0.08;
    }
  cr_assert(lo > 0 && hi > 0, "%d at the minimum, %d at the maximum", lo, hi);
}

/* nn_optimizer_new gives the kinds PyTorch's defaults of nn_opt_config_ext. */
Test(optim_more, nn_optimizer_new_uses_the_default_settings) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_opt_config c = nn_opt_defaults(NN_OPT_RPROP, 0.01);
  nn_optimizer *o = nn_optimizer_new(nn_model_params(f.m), &c);
  cr_assert_not_null(o, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_config_ext(o)->etaplus, 1.2);
  for (int t = 0; t < OM_STEPS; t++) {
    set_grads(&f, t);
    cr_assert_eq(nn_optimizer_step(o), AD_OK);
  }
  const double *last = om_rprop_f64 + (OM_STEPS - 1) * 13 * 3;
  for (int i = 0; i < 6; i++)
    cr_assert(rel_err(ad_tensor_get(f.p[0], i), last[i], DBL_MIN) <= 1e-12);
  nn_optimizer_free(o);
  fixture_fini(&f);
}

/* Our state names against the keys of torch's state_dict entry; "step":
 * ours keeps one per parameter where the update reads it (ASGD, Rprop's
 * first step), not for Adadelta (as not for RMSProp). */
static void check_names(nn_opt_config_ext cfg, const char *const *keys) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_optimizer *o = nn_optimizer_new_ext(nn_model_params(f.m), &cfg);
  cr_assert_not_null(o, "%s", ad_last_error(ctx));
  int ours = 0, theirs = 0;
  for (int i = 0; i < nn_optimizer_state_count(o); i++)
    ours += strstr(nn_optimizer_state_names(o)[i], ".0.weight") != NULL;
  for (int i = 0; keys[i]; i++) {
    if (strcmp(keys[i], "step") == 0 && cfg.base.kind == NN_OPT_ADADELTA) continue;
    theirs++;
    cr_assert_not_null(state_named(o, keys[i], "0.weight"), "%s: torch's %s",
                       kind_name(cfg.base.kind), keys[i]);
  }
  cr_assert_eq(ours, theirs, "%s: %d per-parameter state tensors, torch %d",
               kind_name(cfg.base.kind), ours, theirs);
  nn_optimizer_free(o);
  fixture_fini(&f);
}

Test(optim_more, state_names_are_torch_state_dict_keys) {
  check_names(ext(NN_OPT_ADADELTA, 1.0), om_adadelta_keys);
  check_names(ext(NN_OPT_ASGD, 0.01), om_asgd_keys);
  check_names(ext(NN_OPT_RPROP, 0.01), om_rprop_keys);
  /* ASGD's eta and mu: 0-d float32 (torch.tensor(lr)), not of the
   * parameter's shape; Rprop's step sizes start at lr */
  fixture f;
  fixture_init(&f, AD_F64);
  nn_opt_config_ext c = ext(NN_OPT_ASGD, 0.1);
  nn_optimizer *o = nn_optimizer_new_ext(nn_model_params(f.m), &c);
  cr_assert_not_null(o);
  int seen = 0;
  for (int i = 0; i < nn_optimizer_state_count(o); i++) {
    const char *n = nn_optimizer_state_names(o)[i];
    ad_tensor *t = nn_optimizer_state_tensors(o)[i];
    if (strstr(n, ".eta.") || strstr(n, ".mu.")) {
      seen++;
      cr_assert_eq(nn_optimizer_state_param(o, i), -1);
      cr_assert(t->ndim == 0 && t->dtype == AD_F32, "%s", n);
      cr_assert_eq(ad_tensor_get(t, 0), strstr(n, ".eta.") ? (double)0.1f : 1.0);
    }
  }
  cr_assert_eq(seen, 2 * NP);
  nn_optimizer_free(o);
  c = ext(NN_OPT_RPROP, 0.25);
  o = nn_optimizer_new_ext(nn_model_params(f.m), &c);
  cr_assert_not_null(o);
  ad_tensor *s = state_named(o, "step_size", "0.bias");
  cr_assert(s && s->dtype == AD_F64 && ad_tensor_get(s, 2) == 0.25);
  nn_optimizer_free(o);
  fixture_fini(&f);
}

/* Saving after 4 steps and loading into a fresh model and optimizer
 * resumes bit-exactly: the 9-step run's parameters and state. */
static void round_trip(nn_opt_config_ext cfg, ad_dtype dt) {
  fixture a, b;
  fixture_init(&a, dt);
  fixture_init(&b, dt);
  nn_optimizer *oa = nn_optimizer_new_ext(nn_model_params(a.m), &cfg);
  cr_assert_not_null(oa, "%s", ad_last_error(ctx));
  char path[128];
  snprintf(path, sizeof path, "%s/%s.safetensors", tmpdir, kind_name(cfg.base.kind));
  for (int t = 0; t < OM_STEPS; t++) {
    if (t == 4) cr_assert_eq(nn_model_save(a.m, oa, path), AD_OK, "%s", ad_last_error(ctx));
    set_grads(&a, t);
    cr_assert_eq(nn_optimizer_step(oa), AD_OK);
  }
  nn_optimizer *ob = nn_optimizer_new_ext(nn_model_params(b.m), &cfg);
  cr_assert_not_null(ob);
  cr_assert_eq(nn_model_load(b.m, ob, path), AD_OK, "%s", ad_last_error(ctx));
  for (int t = 4; t < OM_STEPS; t++) {
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
  for (int p = 0; p < NP; p++)
    cr_assert_eq(memcmp(a.p[p]->data, b.p[p]->data, (size_t)psize[p] * ad_dtype_size(dt)), 0,
                 "%s differs after the round trip", pname[p]);
  nn_optimizer_free(oa);
  nn_optimizer_free(ob);
  fixture_fini(&a);
  fixture_fini(&b);
}

/* Without the state (a fresh optimizer over the loaded parameters) the run
 * differs: the round trip's state matters. */
static bool differs_without_state(nn_opt_config_ext cfg) {
  fixture a, b;
  fixture_init(&a, AD_F64);
  fixture_init(&b, AD_F64);
  nn_optimizer *oa = nn_optimizer_new_ext(nn_model_params(a.m), &cfg);
  nn_optimizer *ob = nn_optimizer_new_ext(nn_model_params(b.m), &cfg);
  cr_assert(oa && ob);
  for (int t = 0; t < OM_STEPS; t++) {
    if (t == 4)
      for (int p = 0; p < NP; p++)
        memcpy(b.p[p]->data, a.p[p]->data, (size_t)psize[p] * sizeof(double));
    set_grads(&a, t);
    cr_assert_eq(nn_optimizer_step(oa), AD_OK);
    if (t < 4) continue;
    set_grads(&b, t);
    cr_assert_eq(nn_optimizer_step(ob), AD_OK);
  }
  bool differ = memcmp(a.p[0]->data, b.p[0]->data, 6 * sizeof(double)) != 0;
  nn_optimizer_free(oa);
  nn_optimizer_free(ob);
  fixture_fini(&a);
  fixture_fini(&b);
  return differ;
}

Test(optim_more, checkpoint_round_trip_resumes_exactly) {
  nn_opt_config_ext ad = ext(NN_OPT_ADADELTA, 1.0), as = ext(NN_OPT_ASGD, 0.05);
  nn_opt_config_ext rp = ext(NN_OPT_RPROP, 0.05);
  as.lambd = 0.01, as.t0 = 3;
  rp.etaminus = 0.3, rp.etaplus = 1.5, rp.step_size_min = 5e-3, rp.step_size_max = 0.08;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    round_trip(ad, dt);
    round_trip(as, dt);
    round_trip(rp, dt);
  }
  cr_assert(differs_without_state(ad) && differs_without_state(as) && differs_without_state(rp));
}

/* A step cut in two (as nn_dist's sharded step): two optimizers over
 * copies of the parameters each update their ranges, then take the
 * other's elements; the parameters and, range by range, the state equal
 * one optimizer's bits, and so do the per-parameter scalars (ASGD's eta
 * and mu, the step counts). */
static void check_ranges(nn_opt_config_ext cfg, ad_dtype dt) {
  fixture a, b, c;
  fixture_init(&a, dt), fixture_init(&b, dt), fixture_init(&c, dt);
  nn_optimizer *oa = nn_optimizer_new_ext(nn_model_params(a.m), &cfg);
  nn_optimizer *ob = nn_optimizer_new_ext(nn_model_params(b.m), &cfg);
  nn_optimizer *oc = nn_optimizer_new_ext(nn_model_params(c.m), &cfg);
  cr_assert(oa && ob && oc, "%s", ad_last_error(ctx));
  const int64_t blo[NP] = {0, 0, 0}, bhi[NP] = {4, 1, 4}, clo[NP] = {4, 1, 4}, chi[NP] = {6, 3, 4};
  size_t es = ad_dtype_size(dt);
  for (int t = 0; t < OM_STEPS; t++) {
    set_grads(&a, t), set_grads(&b, t), set_grads(&c, t);
    cr_assert_eq(nn_optimizer_step(oa), AD_OK);
    cr_assert_eq(nn_optimizer_step_ranges(ob, blo, bhi), AD_OK);
    cr_assert_eq(nn_optimizer_step_ranges(oc, clo, chi), AD_OK);
    for (int p = 0; p < NP; p++) { /* the exchange */
      char *bp = b.p[p]->data, *cp = c.p[p]->data;
      memcpy(cp + blo[p] * (int64_t)es, bp + blo[p] * (int64_t)es, (size_t)(bhi[p] - blo[p]) * es);
      memcpy(bp + clo[p] * (int64_t)es, cp + clo[p] * (int64_t)es, (size_t)(chi[p] - clo[p]) * es);
    }
  }
  for (int p = 0; p < NP; p++) {
    cr_assert_eq(memcmp(a.p[p]->data, b.p[p]->data, (size_t)psize[p] * es), 0, "%s", pname[p]);
    cr_assert_eq(memcmp(a.p[p]->data, c.p[p]->data, (size_t)psize[p] * es), 0, "%s", pname[p]);
  }
  ad_tensor *const *sa = nn_optimizer_state_tensors(oa),
                   *const *sb = nn_optimizer_state_tensors(ob),
                   *const *sc = nn_optimizer_state_tensors(oc);
  int checked = 0;
  for (int j = 0; j < nn_optimizer_state_count(oa); j++) {
    int i = nn_optimizer_state_param(oa, j);
    const char *n = nn_optimizer_state_names(oa)[j];
    if (i < 0) {
      if (sa[j]->ndim == 0)
        cr_assert(ad_tensor_get(sb[j], 0) == ad_tensor_get(sa[j], 0) &&
                      ad_tensor_get(sc[j], 0) == ad_tensor_get(sa[j], 0),
                  "%s", n);
      continue;
    }
    const int64_t *lo = blo, *hi = bhi;
    for (int k = 0; k < 2; k++, lo = clo, hi = chi)
      for (int64_t e = lo[i]; e < hi[i]; e++, checked++)
        cr_assert_eq(ad_tensor_get(k ? sc[j] : sb[j], e), ad_tensor_get(sa[j], e), "%s [%lld]", n,
                     (long long)e);
  }
  int per_param = cfg.base.kind == NN_OPT_ASGD ? 1 : 2;
  cr_assert_eq(checked, per_param * 13);
  nn_optimizer_free(oa), nn_optimizer_free(ob), nn_optimizer_free(oc);
  fixture_fini(&a), fixture_fini(&b), fixture_fini(&c);
}

Test(optim_more, step_ranges_cut_in_two_equal_one_step) {
  nn_opt_config_ext as = ext(NN_OPT_ASGD, 0.05), rp = ext(NN_OPT_RPROP, 0.05);
  as.lambd = 0.01, as.t0 = 3;
  rp.etaminus = 0.3, rp.etaplus = 1.5, rp.step_size_min = 5e-3, rp.step_size_max = 0.08;
  nn_opt_config_ext ad = ext(NN_OPT_ADADELTA, 1.0);
  ad.base.weight_decay = 0.1;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    check_ranges(ad, dt);
    check_ranges(as, dt);
    check_ranges(rp, dt);
  }
}

/* Clipping applies before the update, as for the other kinds: a run with
 * clip_value equals a run without it on gradients clamped by hand. */
Test(optim_more, clipping_applies_to_the_new_kinds) {
  const nn_opt_kind kinds[3] = {NN_OPT_ADADELTA, NN_OPT_ASGD, NN_OPT_RPROP};
  for (int k = 0; k < 3; k++) {
    fixture a, b;
    fixture_init(&a, AD_F64), fixture_init(&b, AD_F64);
    nn_opt_config_ext clipped = ext(kinds[k], 0.05), plain = clipped;
    clipped.base.clip_value = 0.15;
    nn_optimizer *oa = nn_optimizer_new_ext(nn_model_params(a.m), &clipped);
    nn_optimizer *ob = nn_optimizer_new_ext(nn_model_params(b.m), &plain);
    cr_assert(oa && ob, "%s", ad_last_error(ctx));
    for (int t = 0; t < 4; t++) {
      set_grads(&a, t), set_grads(&b, t);
      cr_assert_eq(nn_optimizer_step(oa), AD_OK);
      for (int p = 0; p < NP; p++) {
        double *g = b.p[p]->grad->data;
        for (int e = 0; e < psize[p]; e++) g[e] = fmin(fmax(g[e], -0.15), 0.15);
      }
      cr_assert_eq(nn_optimizer_step(ob), AD_OK);
    }
    for (int p = 0; p < NP; p++)
      cr_assert_eq(memcmp(a.p[p]->data, b.p[p]->data, (size_t)psize[p] * sizeof(double)), 0,
                   "%s %s", kind_name(kinds[k]), pname[p]);
    nn_optimizer_free(oa), nn_optimizer_free(ob);
    fixture_fini(&a), fixture_fini(&b);
  }
}

/* ASGD's eta and Rprop's step sizes start at the rate of the parameter's
 * first step (PyTorch makes them then): a rate set before it is the one
 * used. */
static void check_first_rate(nn_opt_config_ext x, const double *want, int per_step) {
  fixture a;
  fixture_init(&a, AD_F64);
  double lr = x.base.lr;
  x.base.lr = 10 * lr;
  nn_optimizer *o = nn_optimizer_new_ext(nn_model_params(a.m), &x);
  cr_assert_not_null(o);
  cr_assert_eq(nn_optimizer_set_lr(o, lr), AD_OK);
  for (int t = 0; t < OM_STEPS; t++) {
    set_grads(&a, t);
    cr_assert_eq(nn_optimizer_step(o), AD_OK);
  }
  const double *last = want + (OM_STEPS - 1) * per_step;
  for (int i = 0; i < 6; i++)
    cr_assert(rel_err(ad_tensor_get(a.p[0], i), last[i], DBL_MIN) <= 1e-12, "%s [%d]",
              kind_name(x.base.kind), i);
  nn_optimizer_free(o);
  fixture_fini(&a);
}

Test(optim_more, first_step_state_takes_the_rate_then) {
  nn_opt_config_ext as = ext(NN_OPT_ASGD, 0.05), rp = ext(NN_OPT_RPROP, 0.05);
  as.lambd = 0.01, as.t0 = 3;
  rp.etaminus = 0.3, rp.etaplus = 1.5, rp.step_size_min = 5e-3, rp.step_size_max = 0.08;
  rp.base.maximize = true;
  check_first_rate(as, om_asgd_avg_f64, 13 * 2 + 2 * NP);
  check_first_rate(rp, om_rprop_max_f64, 13 * 3);
}

/* Each bad setting is refused by name (NaN too), as PyTorch's
 * constructors refuse it, and the options PyTorch 1.13's optimizer of
 * that kind lacks. */
Test(optim_more, bad_settings_are_named) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_params *ps = nn_model_params(f.m);
  enum { LR, EPS, WD, RHO, LAMBD, AALPHA, T0, EM, EP, SMIN, SMAX, MOM, BETA, ALPHA, AMS, NEST };
  struct {
    nn_opt_kind kind;
    int field;
    double v;
    const char *msg;
  } cases[] = {
      {NN_OPT_ADADELTA, LR, -1, "lr must be >= 0"},
      {NN_OPT_ADADELTA, LR, NAN, "lr must be >= 0"},
      {NN_OPT_ADADELTA, EPS, -1e-6, "eps must be finite and >= 0"},
      {NN_OPT_ADADELTA, EPS, NAN, "eps must be finite and >= 0"},
      {NN_OPT_ADADELTA, WD, -0.1, "weight_decay must be finite and >= 0"},
      {NN_OPT_ADADELTA, RHO, 1.5, "rho must be in [0,1]"},
      {NN_OPT_ADADELTA, RHO, -0.1, "rho must be in [0,1]"},
      {NN_OPT_ADADELTA, RHO, NAN, "rho must be in [0,1]"},
      {NN_OPT_ADADELTA, MOM, 0.9, "momentum is not an option of PyTorch 1.13's Adadelta"},
      {NN_OPT_ADADELTA, AMS, 1, "amsgrad is Adam's and AdamW's only"},
      {NN_OPT_ASGD, LR, INFINITY, "lr must be >= 0"},
      {NN_OPT_ASGD, WD, NAN, "weight_decay must be finite and >= 0"},
      {NN_OPT_ASGD, LAMBD, -1e-4, "lambd must be finite and >= 0"},
      {NN_OPT_ASGD, LAMBD, NAN, "lambd must be finite and >= 0"},
      {NN_OPT_ASGD, AALPHA, NAN, "asgd_alpha must be finite"},
      {NN_OPT_ASGD, AALPHA, INFINITY, "asgd_alpha must be finite"},
      {NN_OPT_ASGD, T0, NAN, "t0 must not be NaN"},
      {NN_OPT_ASGD, EPS, 1e-8, "eps is not an option of PyTorch 1.13's ASGD"},
      {NN_OPT_ASGD, ALPHA, 0.75, "ASGD's alpha is nn_opt_config_ext's asgd_alpha"},
      {NN_OPT_ASGD, NEST, 1, "nesterov is not an option of PyTorch 1.13's ASGD"},
      {NN_OPT_RPROP, LR, -0.01, "lr must be >= 0"},
      {NN_OPT_RPROP, EM, 0, "etaminus must be in (0,1)"},
      {NN_OPT_RPROP, EM, 1, "etaminus must be in (0,1)"},
      {NN_OPT_RPROP, EM, NAN, "etaminus must be in (0,1)"},
      {NN_OPT_RPROP, EP, 1, "etaplus must be finite and > 1"},
      {NN_OPT_RPROP, EP, INFINITY, "etaplus must be finite and > 1"},
      {NN_OPT_RPROP, EP, NAN, "etaplus must be finite and > 1"},
      {NN_OPT_RPROP, SMIN, -1e-6, "step_size_min must be finite and >= 0"},
      {NN_OPT_RPROP, SMIN, NAN, "step_size_min must be finite and >= 0"},
      {NN_OPT_RPROP, SMAX, 1e-7, "step_size_max must be >= step_size_min"},
      {NN_OPT_RPROP, SMAX, NAN, "step_size_max must be >= step_size_min"},
      {NN_OPT_RPROP, WD, 0.01, "weight_decay is not an option of PyTorch 1.13's Rprop"},
      {NN_OPT_RPROP, EPS, 1e-8, "eps is not an option of PyTorch 1.13's Rprop"},
      {NN_OPT_RPROP, BETA, 0.9, "betas is not an option of PyTorch 1.13's Rprop"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    nn_opt_config_ext c = ext(cases[i].kind, 0.01);
    double v = cases[i].v;
    switch (cases[i].field) {
    case LR:
      c.base.lr = v;
      break;
    case EPS:
      c.base.eps = v;
      break;
    case WD:
      c.base.weight_decay = v;
      break;
    case RHO:
      c.rho = v;
      break;
    case LAMBD:
      c.lambd = v;
      break;
    case AALPHA:
      c.asgd_alpha = v;
      break;
    case T0:
      c.t0 = v;
      break;
    case EM:
      c.etaminus = v;
      break;
    case EP:
      c.etaplus = v;
      break;
    case SMIN:
      c.step_size_min = v;
      break;
    case SMAX:
      c.step_size_max = v;
      break;
    case MOM:
      c.base.momentum = v;
      break;
    case BETA:
      c.base.beta1 = v;
      break;
    case ALPHA:
      c.base.alpha = v;
      break;
    case AMS:
      c.base.amsgrad = true;
      break;
    default:
      c.base.nesterov = true;
      break;
    }
    cr_assert_null(nn_optimizer_new_ext(ps, &c), "case %zu", i);
    cr_assert_eq(ad_last_status(ctx), AD_ERR_ARG, "case %zu", i);
    cr_assert(strstr(ad_last_error(ctx), cases[i].msg), "case %zu: %s", i, ad_last_error(ctx));
    cr_assert(strstr(ad_last_error(ctx), kind_name(cases[i].kind)), "%s", ad_last_error(ctx));
    ad_clear_error(ctx);
  }
  /* what PyTorch accepts: t0 infinite (never averaging), rho 0 and 1,
   * step sizes equal, asgd_alpha negative, maximize on all three */
  nn_opt_config_ext ok[6] = {ext(NN_OPT_ASGD, 0.01),  ext(NN_OPT_ADADELTA, 1),
                             ext(NN_OPT_ADADELTA, 1), ext(NN_OPT_RPROP, 0.01),
                             ext(NN_OPT_ASGD, 0.01),  ext(NN_OPT_RPROP, 0)};
  ok[0].t0 = INFINITY, ok[1].rho = 0, ok[2].rho = 1, ok[2].base.maximize = true;
  ok[3].step_size_min = ok[3].step_size_max = 0.1, ok[3].base.maximize = true;
  ok[4].asgd_alpha = -0.5, ok[4].base.maximize = true, ok[5].step_size_max = INFINITY;
  for (int i = 0; i < 6; i++) {
    nn_optimizer *o = nn_optimizer_new_ext(ps, &ok[i]);
    cr_assert_not_null(o, "ok %d: %s", i, ad_last_error(ctx));
    nn_optimizer_free(o);
  }
  /* NULL */
  cr_assert_null(nn_optimizer_new_ext(NULL, &ok[0]));
  cr_assert_null(nn_optimizer_new_ext(ps, NULL));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_NULL);
  fixture_fini(&f);
}

/* The getters return what was set. */
Test(optim_more, config_ext_returns_the_settings) {
  fixture f;
  fixture_init(&f, AD_F64);
  nn_opt_config_ext c = ext(NN_OPT_RPROP, 0.01);
  c.etaminus = 0.25, c.step_size_max = 3;
  nn_optimizer *o = nn_optimizer_new_ext(nn_model_params(f.m), &c);
  cr_assert_not_null(o);
  const nn_opt_config_ext *g = nn_optimizer_config_ext(o);
  cr_assert(g->base.kind == NN_OPT_RPROP && g->etaminus == 0.25 && g->etaplus == 1.2 &&
            g->step_size_max == 3 && g->step_size_min == 1e-6);
  nn_optimizer_free(o);
  nn_opt_config d = nn_opt_defaults(NN_OPT_ADADELTA, 1);
  cr_assert(d.eps == 1e-6 && d.weight_decay == 0 && d.beta1 == 0);
  cr_assert(nn_opt_defaults(NN_OPT_ASGD, 1).eps == 0 && nn_opt_defaults(NN_OPT_RPROP, 1).eps == 0);
  cr_assert(nn_opt_defaults_ext(NN_OPT_ADAM, 1).rho == 0);
  fixture_fini(&f);
}
