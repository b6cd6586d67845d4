/* test_nn_lbfgs.c: nn_lbfgs against PyTorch 1.13's torch.optim.LBFGS
 * (tests/lbfgs_fixtures.h, from tools/gen_lbfgs_fixtures.py): Rosenbrock
 * and a small MLP, with and without the strong-Wolfe line search, small
 * histories (dropping pairs), in float64 and float32; parameters without
 * a gradient, tied weights, the closure's errors, NaN, and bad input. */
#include "lbfgs_fixtures.h"
#include "nn.h"
#include "test_alloc.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

TEST_TMPDIR_SUITE(lbfgs, "ad-lbfgs");

/* The objectives, as closures. */
typedef struct problem {
  bool mlp;
  ad_tensor *x; /* rosen: the point */
  nn_model *m;  /* mlp */
  ad_tensor *xs, *ys;
  int calls;   /* evaluations so far */
  int fail_at; /* > 0: the fail_at-th evaluation fails */
  bool nan;    /* rosen: the loss and gradient are NaN */
  int code;    /* != 0: the failing evaluation returns this, recording nothing */
} problem;

/* The terms of Rosenbrock's function, 100 (x[1:] - x[:-1]^2)^2 +
 * (1 - x[:-1])^2 */
static ad_tensor *rosen_terms(ad_tensor *x) {
  int64_t n = x->shape[0];
  ad_tensor *a = ad_narrow(ctx, x, 0, 0, n - 1), *b = ad_narrow(ctx, x, 0, 1, n - 1);
  ad_tensor *t = ad_mul_scalar(ctx, ad_square(ctx, ad_sub(ctx, b, ad_square(ctx, a))), 100);
  return ad_add(ctx, t, ad_square(ctx, ad_rsub_scalar(ctx, a, 1)));
}

/* The sum of a float32 tensor's elements in order in float32, as
 * PyTorch's sum of fewer than 16 elements; the engine's ad_sum adds
 * float32 in double, whose last bit may differ, and the line search's
 * interpolation reads the losses. */
static double sum_f32(const ad_tensor *e) {
  float s = 0;
  for (int64_t i = 0; i < e->size; i++) s += ((const float *)e->data)[i];
  return s;
}

static ad_status closure(void *ud, double *loss) {
  problem *p = ud;
  if (++p->calls == p->fail_at)
    return p->code ? (ad_status)p->code
                   : ad_set_error(ctx, AD_ERR_ARG, "closure: evaluation %d fails", p->calls);
  ad_tensor *e, *l;
  if (p->mlp) {
    ad_tensor *pred = nn_model_forward(p->m, p->xs);
    l = nn_mse_loss(ctx, pred, p->ys, NN_MEAN);
    e = ad_square(ctx, ad_sub(ctx, pred, p->ys));
  } else {
    l = ad_sum(ctx, e = rosen_terms(p->x));
  }
  if (p->nan) l = ad_mul_scalar(ctx, l, NAN);
  if (!l || !e) return ad_last_status(ctx);
  *loss = ad_tensor_item(l);
  if (e->dtype == AD_F32 && !p->nan) *loss = sum_f32(e) / (double)(p->mlp ? e->size : 1);
  return ad_backward(ctx, l, NULL);
}

static ad_tensor *from(ad_dtype dt, int ndim, const int64_t *shape, const double *v) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  ad_tensor *t = ad_zeros(ctx, dt, ndim, shape);
  cr_assert_not_null(t);
  for (int64_t i = 0; i < n; i++) ad_tensor_set(t, i, v[i]);
  return t;
}

/* The problem of case c in dtype dt, its parameters in *params (rosen: a
 * new list, which the caller frees; mlp: the model's). */
static void problem_init(problem *p, const lb_case *c, ad_dtype dt, nn_params **params) {
  memset(p, 0, sizeof *p);
  p->mlp = c->mlp;
  if (!c->mlp) {
    int64_t n = LB_N_ROSEN;
    p->x = from(dt, 1, &n, lb_rosen_x0);
    *params = nn_params_new(ctx);
    cr_assert_eq(nn_params_add(*params, "x", p->x, true), AD_OK);
    return;
  }
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_dense_opts o = {.dtype = dt};
  p->m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(p->m, nn_dense_new(ctx, 2, 3, &rng, &o)), AD_OK);
  cr_assert_eq(nn_model_add(p->m, nn_activation_new(ctx, NN_ACT_RELU)), AD_OK);
  cr_assert_eq(nn_model_add(p->m, nn_dense_new(ctx, 3, 1, &rng, &o)), AD_OK);
  *params = nn_model_params(p->m);
  for (int i = 0, k = 0; i < nn_params_count(*params); i++) {
    ad_tensor *t = nn_params_tensor(*params, i);
    for (int64_t j = 0; j < t->size; j++) ad_tensor_set(t, j, lb_mlp_p0[k++]);
  }
  int64_t xs[2] = {8, 2}, ys[2] = {8, 1};
  p->xs = from(dt, 2, xs, lb_mlp_x);
  p->ys = from(dt, 2, ys, lb_mlp_y);
}

static void problem_fini(problem *p, nn_params *params) {
  if (p->mlp) {
    nn_model_free(p->m);
    ad_tensor_free(p->xs);
    ad_tensor_free(p->ys);
  } else {
    nn_params_free(params);
  }
}

static nn_lbfgs_config config_of(const lb_case *c) {
  nn_lbfgs_config cfg = nn_lbfgs_defaults();
  cfg.lr = c->lr;
  cfg.max_iter = c->max_iter;
  cfg.max_eval = c->max_eval;
  cfg.history_size = c->history_size;
  cfg.tolerance_grad = c->tolerance_grad;
  cfg.tolerance_change = c->tolerance_change;
  cfg.line_search = c->wolfe ? NN_LINE_SEARCH_STRONG_WOLFE : NN_LINE_SEARCH_NONE;
  return cfg;
}

static int64_t flat_numel(const nn_params *ps) {
  int64_t n = 0;
  for (int i = 0; i < nn_params_count(ps); i++) n += nn_params_tensor(ps, i)->size;
  return n;
}

static double flat_get(const nn_params *ps, int64_t k) {
  for (int i = 0; i < nn_params_count(ps); i++) {
    const ad_tensor *t = nn_params_tensor(ps, i);
    if (k < t->size) return ad_tensor_get(t, k);
    k -= t->size;
  }
  return NAN;
}

static void expect_close(double got, double want, double tol, const char *what, int step) {
  cr_assert(test_close(got, want, tol * (1 + fabs(want))), "%s after step %d: %.17g, torch %.17g",
            what, step + 1, got, want);
}

/* Runs case c and compares each step's loss, counters and parameters. */
static void run_case(const lb_case *c, ad_dtype dt) {
  const double *want = dt == AD_F64 ? c->f64 : c->f32;
  double tol = dt == AD_F64 ? 1e-12 : 1e-5;
  problem p;
  nn_params *ps;
  problem_init(&p, c, dt, &ps);
  /* one evaluation first, so that the tape's arena has grown to its size */
  double l0;
  cr_assert_eq(closure(&p, &l0), AD_OK);
  ad_tape_reset(ctx);
  p.calls = 0;
  long live = LIVE_BLOCKS();
  nn_lbfgs_config cfg = config_of(c);
  nn_lbfgs *o = nn_lbfgs_new(ps, &cfg);
  cr_assert_not_null(o, "%s", ad_last_error(ctx));
  int64_t n = flat_numel(ps), row = 3 + n;
  double worst = 0;
  for (int s = 0; s < LB_STEPS; s++) {
    double loss;
    cr_assert_eq(nn_lbfgs_step(o, closure, &p, &loss), AD_OK, "%s", ad_last_error(ctx));
    const double *w = want + s * row;
    expect_close(loss, w[0], tol, c->name, s);
    cr_assert_eq(nn_lbfgs_iters(o), (int64_t)w[1], "%s %s: n_iter %lld, torch %g", c->name,
                 ad_dtype_name(dt), (long long)nn_lbfgs_iters(o), w[1]);
    cr_assert_eq(nn_lbfgs_evals(o), (int64_t)w[2], "%s %s step %d: func_evals %lld, torch %g",
                 c->name, ad_dtype_name(dt), s + 1, (long long)nn_lbfgs_evals(o), w[2]);
    for (int64_t k = 0; k < n; k++) {
      double g = flat_get(ps, k), e = fabs(g - w[3 + k]) / (1 + fabs(w[3 + k]));
      if (e > worst) worst = e;
    }
  }
  cr_log_info("%s %s: largest error %.3g", c->name, ad_dtype_name(dt), worst);
  nn_lbfgs_free(o);
  cr_assert_eq(LIVE_BLOCKS(), live, "%s: leaked %ld blocks", c->name, LIVE_BLOCKS() - live);
  problem_fini(&p, ps);
}

#define N_CASES ((int)(sizeof lb_cases / sizeof *lb_cases))

Test(lbfgs, f64_matches_torch) {
  for (int i = 0; i < N_CASES; i++) run_case(&lb_cases[i], AD_F64);
}

Test(lbfgs, f32_matches_torch) {
  for (int i = 0; i < N_CASES; i++) run_case(&lb_cases[i], AD_F32);
}

Test(lbfgs, defaults_are_torchs) {
  nn_lbfgs_config c = nn_lbfgs_defaults();
  cr_assert_eq(c.lr, 1.0);
  cr_assert_eq(c.max_iter, 20);
  cr_assert_eq(c.max_eval, 0); /* resolved to 25 */
  cr_assert_eq(c.tolerance_grad, 1e-7);
  cr_assert_eq(c.tolerance_change, 1e-9);
  cr_assert_eq(c.history_size, 100);
  cr_assert_eq(c.line_search, NN_LINE_SEARCH_NONE);
  /* NULL takes them: the same trajectory as rosen_wolfe_default with
   * line_search none is not in the fixtures, so compare two runs */
  problem a, b;
  nn_params *pa, *pb;
  problem_init(&a, &lb_cases[0], AD_F64, &pa);
  problem_init(&b, &lb_cases[0], AD_F64, &pb);
  nn_lbfgs *oa = nn_lbfgs_new(pa, NULL), *ob = nn_lbfgs_new(pb, &c);
  cr_assert(oa && ob);
  for (int s = 0; s < 2; s++) {
    cr_assert_eq(nn_lbfgs_step(oa, closure, &a, NULL), AD_OK);
    cr_assert_eq(nn_lbfgs_step(ob, closure, &b, NULL), AD_OK);
  }
  cr_assert_eq(a.calls, b.calls);
  cr_assert_gt(a.calls, 2);
  for (int k = 0; k < LB_N_ROSEN; k++) cr_assert_eq(ad_tensor_get(a.x, k), ad_tensor_get(b.x, k));
  nn_lbfgs_free(oa);
  nn_lbfgs_free(ob);
  problem_fini(&a, pa);
  problem_fini(&b, pb);
}

/* A parameter the loss does not use has no gradient: zeros in the flat
 * vector, as PyTorch's; it stays, and the others follow the fixture. A
 * tensor listed twice is taken once. */
Test(lbfgs, unused_and_tied_parameters) {
  const lb_case *c = &lb_cases[1]; /* rosen_wolfe */
  for (int tied = 0; tied < 2; tied++) {
    problem p;
    nn_params *ps;
    problem_init(&p, c, AD_F64, &ps);
    int64_t two = 2;
    ad_tensor *z = from(AD_F64, 1, &two, (const double[]){0.25, -3});
    cr_assert_eq(nn_params_add(ps, "z", z, true), AD_OK);
    if (tied) cr_assert_eq(nn_params_add(ps, "x_again", p.x, false), AD_OK);
    nn_lbfgs_config cfg = config_of(c);
    nn_lbfgs *o = nn_lbfgs_new(ps, &cfg);
    cr_assert_not_null(o, "%s", ad_last_error(ctx));
    int64_t row = 3 + LB_N_ROSEN;
    for (int s = 0; s < LB_STEPS; s++) {
      cr_assert_eq(nn_lbfgs_step(o, closure, &p, NULL), AD_OK, "%s", ad_last_error(ctx));
      cr_assert_eq(nn_lbfgs_evals(o), (int64_t)c->f64[s * row + 2]);
      for (int k = 0; k < LB_N_ROSEN; k++)
        expect_close(ad_tensor_get(p.x, k), c->f64[s * row + 3 + k], 1e-12, "x", s);
      cr_assert_eq(ad_tensor_get(z, 0), 0.25);
      cr_assert_eq(ad_tensor_get(z, 1), -3.0);
    }
    nn_lbfgs_free(o);
    problem_fini(&p, ps);
  }
}

/* The closure's error is returned; the parameters are put back at the
 * last iterate: where a run limited to the iterations completed stops. */
Test(lbfgs, closure_error_restores_the_last_iterate) {
  for (int wolfe = 0; wolfe < 2; wolfe++) {
    for (int fail_at = 1; fail_at <= 8; fail_at++) {
      problem p, q;
      nn_params *ps, *qs;
      const lb_case *c = &lb_cases[wolfe ? 1 : 0];
      problem_init(&p, c, AD_F64, &ps);
      problem_init(&q, c, AD_F64, &qs);
      nn_lbfgs_config cfg = config_of(c);
      nn_lbfgs *o = nn_lbfgs_new(ps, &cfg);
      cr_assert_not_null(o);
      p.fail_at = fail_at;
      cr_assert_eq(nn_lbfgs_step(o, closure, &p, NULL), AD_ERR_ARG);
      test_expect_error(ctx, AD_ERR_ARG, "closure: evaluation", NULL);
      cr_assert_eq(p.calls, fail_at);
      int64_t iters = nn_lbfgs_iters(o);
      cr_assert_eq(iters == 0, fail_at == 1);
      if (!wolfe) cr_assert_eq(iters, fail_at - 1);
      nn_lbfgs_config qc = cfg;
      qc.max_iter = iters > 0 ? (int)iters - 1 : 0;
      qc.max_eval = 1000;
      nn_lbfgs *r = nn_lbfgs_new(qs, &qc);
      cr_assert_not_null(r);
      cr_assert_eq(nn_lbfgs_step(r, closure, &q, NULL), AD_OK);
      for (int k = 0; k < LB_N_ROSEN; k++)
        cr_assert_eq(ad_tensor_get(p.x, k), ad_tensor_get(q.x, k), "fail_at %d: x[%d]", fail_at, k);
      nn_lbfgs_free(r);
      /* the next step goes on from there */
      p.fail_at = 0;
      cr_assert_eq(nn_lbfgs_step(o, closure, &p, NULL), AD_OK, "%s", ad_last_error(ctx));
      for (int k = 0; k < LB_N_ROSEN; k++) cr_assert(isfinite(ad_tensor_get(p.x, k)));
      nn_lbfgs_free(o);
      problem_fini(&p, ps);
      problem_fini(&q, qs);
    }
  }
}

/* A closure returning a code of its own (no ad_status) fails the step
 * with AD_ERR_ARG naming the value, as a user op's function does: never a
 * status no switch handles. */
Test(lbfgs, closure_status_outside_the_enum_becomes_ad_err_arg) {
  const int codes[] = {12345, -7, AD_STATUS_COUNT};
  for (int i = 0; i < 3; i++) {
    problem p;
    nn_params *ps;
    problem_init(&p, &lb_cases[0], AD_F64, &ps);
    nn_lbfgs_config cfg = config_of(&lb_cases[0]);
    nn_lbfgs *o = nn_lbfgs_new(ps, &cfg);
    cr_assert_not_null(o);
    p.fail_at = 2, p.code = codes[i];
    cr_assert_eq(nn_lbfgs_step(o, closure, &p, NULL), AD_ERR_ARG, "code %d", codes[i]);
    char want[64];
    snprintf(want, sizeof want, "returned %d", codes[i]);
    test_expect_error(ctx, AD_ERR_ARG, "lbfgs_step: the closure", want, NULL);
    nn_lbfgs_free(o);
    problem_fini(&p, ps);
  }
}

/* A NaN loss and gradient run on as in PyTorch: every test compares
 * false, so all max_iter iterations are taken (the last without an
 * evaluation) and the parameters become NaN; no error. */
Test(lbfgs, nan_runs_on_as_torch) {
  problem p;
  nn_params *ps;
  problem_init(&p, &lb_cases[0], AD_F64, &ps);
  p.nan = true;
  nn_lbfgs *o = nn_lbfgs_new(ps, NULL);
  double loss = 0;
  cr_assert_eq(nn_lbfgs_step(o, closure, &p, &loss), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(isnan(loss));
  cr_assert_eq(nn_lbfgs_iters(o), 20);
  cr_assert_eq(nn_lbfgs_evals(o), 20);
  for (int k = 0; k < LB_N_ROSEN; k++) cr_assert(isnan(ad_tensor_get(p.x, k)));
  nn_lbfgs_free(o);
  problem_fini(&p, ps);
}

/* At a minimum (max |g| <= tolerance_grad) a step evaluates once and
 * stops, as PyTorch's. */
Test(lbfgs, optimal_point_stops_at_once) {
  problem p;
  nn_params *ps;
  problem_init(&p, &lb_cases[0], AD_F64, &ps);
  for (int k = 0; k < LB_N_ROSEN; k++) ad_tensor_set(p.x, k, 1.0);
  nn_lbfgs *o = nn_lbfgs_new(ps, NULL);
  double loss = -1;
  cr_assert_eq(nn_lbfgs_step(o, closure, &p, &loss), AD_OK);
  cr_assert_eq(loss, 0.0);
  cr_assert_eq(nn_lbfgs_evals(o), 1);
  cr_assert_eq(nn_lbfgs_iters(o), 0);
  for (int k = 0; k < LB_N_ROSEN; k++) cr_assert_eq(ad_tensor_get(p.x, k), 1.0);
  nn_lbfgs_free(o);
  problem_fini(&p, ps);
}

/* max_eval 0 is max_iter * 5 / 4 also where that does not fit an int:
 * a run with a huge max_iter stops on its tolerances, as PyTorch's, where
 * one with bounds it never reaches does. */
Test(lbfgs, huge_max_iter_keeps_its_evaluations) {
  problem a, b;
  nn_params *pa, *pb;
  problem_init(&a, &lb_cases[1], AD_F64, &pa);
  problem_init(&b, &lb_cases[1], AD_F64, &pb);
  nn_lbfgs_config ca = nn_lbfgs_defaults(), cb = ca;
  ca.line_search = cb.line_search = NN_LINE_SEARCH_STRONG_WOLFE;
  ca.max_iter = INT_MAX; /* max_eval 0: 2684354558 */
  cb.max_iter = 100000;
  cb.max_eval = INT_MAX;
  nn_lbfgs *oa = nn_lbfgs_new(pa, &ca), *ob = nn_lbfgs_new(pb, &cb);
  cr_assert(oa && ob, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_lbfgs_step(oa, closure, &a, NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_lbfgs_step(ob, closure, &b, NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_gt(nn_lbfgs_iters(ob), 10);
  cr_assert_eq(nn_lbfgs_iters(oa), nn_lbfgs_iters(ob));
  cr_assert_eq(nn_lbfgs_evals(oa), nn_lbfgs_evals(ob));
  for (int k = 0; k < LB_N_ROSEN; k++) cr_assert_eq(ad_tensor_get(a.x, k), ad_tensor_get(b.x, k));
  nn_lbfgs_free(oa);
  nn_lbfgs_free(ob);
  problem_fini(&a, pa);
  problem_fini(&b, pb);
}

/* The first step's length min(1, 1 / |g|_1) lr sums |g| as PyTorch's sum
 * kernel does (vector lanes, not element order): with the gradient exact
 * (a linear objective sum(c x)), one iteration lands on PyTorch's point
 * bit for bit, for every length from 1 to LB_LIN_MAX, in both dtypes. */
typedef struct linear {
  ad_tensor *x, *c;
} linear;

static ad_status linear_closure(void *ud, double *loss) {
  linear *p = ud;
  ad_tensor *l = ad_sum(ctx, ad_mul(ctx, p->x, p->c));
  if (!l) return ad_last_status(ctx);
  *loss = ad_tensor_item(l);
  return ad_backward(ctx, l, NULL);
}

Test(lbfgs, first_step_sums_as_torch) {
  for (int f32 = 0; f32 < 2; f32++) {
    ad_dtype dt = f32 ? AD_F32 : AD_F64;
    const double *want = f32 ? lb_lin_f32 : lb_lin_f64;
    for (int64_t n = 1; n <= LB_LIN_MAX; n++) {
      linear p = {from(dt, 1, &n, lb_lin_x0), from(dt, 1, &n, lb_lin_c)};
      nn_params *ps = nn_params_new(ctx);
      cr_assert_eq(nn_params_add(ps, "x", p.x, true), AD_OK);
      nn_lbfgs_config cfg = nn_lbfgs_defaults();
      cfg.max_iter = 1;
      nn_lbfgs *o = nn_lbfgs_new(ps, &cfg);
      cr_assert_not_null(o, "%s", ad_last_error(ctx));
      cr_assert_eq(nn_lbfgs_step(o, linear_closure, &p, NULL), AD_OK, "%s", ad_last_error(ctx));
      for (int64_t k = 0; k < n; k++)
        cr_assert_eq(ad_tensor_get(p.x, k), want[k], "%s n %lld: x[%lld] %.17g, torch %.17g",
                     ad_dtype_name(dt), (long long)n, (long long)k, ad_tensor_get(p.x, k), want[k]);
      want += n;
      nn_lbfgs_free(o);
      nn_params_free(ps);
      ad_tensor_free(p.c);
    }
  }
}

/* ------------------------------------------------------------- misuse */

Test(lbfgs, bad_input) {
  cr_assert_null(nn_lbfgs_new(NULL, NULL));
  nn_lbfgs_free(NULL);
  cr_assert_eq(nn_lbfgs_step(NULL, closure, NULL, NULL), AD_ERR_NULL);
  cr_assert_eq(nn_lbfgs_iters(NULL), 0);
  cr_assert_eq(nn_lbfgs_evals(NULL), 0);

  nn_params *empty = nn_params_new(ctx);
  cr_assert_null(nn_lbfgs_new(empty, NULL));
  test_expect_error(ctx, AD_ERR_ARG, "lbfgs: the parameter list has no elements", NULL);
  nn_params *buf = nn_buffers_new(ctx);
  cr_assert_null(nn_lbfgs_new(buf, NULL));
  test_expect_error(ctx, AD_ERR_ARG, "lbfgs: the list holds buffers", NULL);

  int64_t two = 2;
  nn_params *mixed = nn_params_new(ctx);
  cr_assert_eq(nn_params_add(mixed, "a", ad_zeros(ctx, AD_F32, 1, &two), true), AD_OK);
  cr_assert_eq(nn_params_add(mixed, "b", ad_zeros(ctx, AD_F64, 1, &two), true), AD_OK);
  cr_assert_null(nn_lbfgs_new(mixed, NULL));
  test_expect_error(ctx, AD_ERR_DTYPE, "lbfgs: parameter 'b' is f64, 'a' is f32", NULL);

  problem p;
  nn_params *ps;
  problem_init(&p, &lb_cases[0], AD_F64, &ps);
  static const struct {
    const char *what;
    nn_lbfgs_config c;
  } bad[] = {
      {"lr must be finite and >= 0", {.lr = -1, .max_iter = 1, .history_size = 1}},
      {"lr must be finite and >= 0", {.lr = NAN, .max_iter = 1, .history_size = 1}},
      {"lr must be finite and >= 0", {.lr = INFINITY, .max_iter = 1, .history_size = 1}},
      {"max_iter must be >= 0", {.lr = 1, .max_iter = -1, .history_size = 1}},
      {"max_eval must be >= 0", {.lr = 1, .max_eval = -2, .history_size = 1}},
      {"tolerance_grad must be >= 0", {.lr = 1, .tolerance_grad = NAN, .history_size = 1}},
      {"tolerance_grad must be >= 0", {.lr = 1, .tolerance_grad = -1, .history_size = 1}},
      {"tolerance_change must be >= 0", {.lr = 1, .tolerance_change = NAN, .history_size = 1}},
      {"history_size must be >= 1", {.lr = 1, .history_size = 0}},
      {"unknown line_search 7", {.lr = 1, .history_size = 1, .line_search = 7}},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    cr_assert_null(nn_lbfgs_new(ps, &bad[i].c), "%s", bad[i].what);
    test_expect_error(ctx, AD_ERR_ARG, "lbfgs: ", bad[i].what, NULL);
  }

  nn_lbfgs *o = nn_lbfgs_new(ps, NULL);
  cr_assert_not_null(o);
  cr_assert_eq(nn_lbfgs_step(o, NULL, &p, NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "lbfgs_step: closure is NULL", NULL);
  nn_lbfgs_free(o);

  /* a parameter freed after nn_lbfgs_new: refused, nothing read */
  nn_params *own = nn_params_new(ctx);
  ad_tensor *x = from(AD_F64, 1, &two, (const double[]){1, 2});
  cr_assert_eq(nn_params_add(own, "x", x, false), AD_OK);
  o = nn_lbfgs_new(own, NULL);
  cr_assert_not_null(o);
  ad_tensor_free(x);
  p.calls = 0;
  cr_assert_eq(nn_lbfgs_step(o, closure, &p, NULL), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "lbfgs_step: parameter 0 was freed", NULL);
  cr_assert_eq(p.calls, 0);
  nn_lbfgs_free(o);

  nn_params_free(own);
  problem_fini(&p, ps);
  nn_params_free(mixed);
  nn_params_free(buf);
  nn_params_free(empty);
  cr_assert_eq(LIVE_BLOCKS(), live_base, "leaked %ld blocks", LIVE_BLOCKS() - live_base);
}
