/* test_nn_sched3.c: PyTorch 1.13's CyclicLR, SequentialLR and
 * ChainedScheduler as the cyclic, sequential and chained kinds of
 * nn_schedule_ext2, against the rates (and cycled momentum) of
 * tools/gen_sched3_fixtures.py: an optimizer with two parameter groups,
 * lr 0.1 and 0.05, the rate of step t read before the scheduler's step t;
 * then checkpoints, nn_fit, bad settings. */
#include "nn.h"
#include "sched3_fixtures.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

TEST_TMPDIR_SUITE(sched3, "sched3");

#define LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* |a - b| within 1e-15 relative: the same operations in PyTorch's order */
static void exact(double got, double want, const char *what, int g, int t) {
  cr_assert(test_close(got, want, 1e-15 * fabs(want) + 1e-300),
            "%s, group %d, step %d: %.17g, torch %.17g", what, g, t, got, want);
}

/* A model of two dense layers and an optimizer of kind k (SGD momentum
 * 0.9, RMSProp momentum 0.5) with group 0 the first layer's parameters (lr
 * 0.1) and group 1 the second's (lr 0.05), as the generator's. The lists
 * are the tests' (freed by done). */
static struct {
  nn_optimizer *o;
  nn_params *l[2];
} lists[8];

static nn_optimizer *two_groups(nn_model **m, nn_opt_kind k, double momentum) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(*m, nn_dense_new(ctx, 3, 4, &rng, NULL)), AD_OK);
  cr_assert_eq(nn_model_add(*m, nn_dense_new(ctx, 4, 2, &rng, NULL)), AD_OK);
  int i = 0;
  while (lists[i].o) i++;
  nn_params *p = nn_model_params(*m), **l = lists[i].l;
  l[0] = nn_params_new(ctx), l[1] = nn_params_new(ctx);
  for (int j = 0; j < nn_params_count(p); j++)
    cr_assert_eq(nn_params_add(l[nn_params_name(p, j)[0] == '1'], nn_params_name(p, j),
                               nn_params_tensor(p, j), false),
                 AD_OK);
  nn_opt_config c = nn_opt_defaults(k, 0.1);
  c.momentum = momentum;
  nn_optimizer *o = nn_optimizer_new(l[0], &c);
  cr_assert_not_null(o, "%s", ad_last_error(ctx));
  nn_opt_config_ext x = *nn_optimizer_config_ext(o);
  x.base.lr = 0.05;
  cr_assert_eq(nn_optimizer_add_param_group(o, l[1], &x), AD_OK, "%s", ad_last_error(ctx));
  lists[i].o = o;
  return o;
}

static void done(nn_optimizer *o, nn_model *m) {
  int i = 0;
  while (lists[i].o != o) i++;
  nn_optimizer_free(o);
  nn_params_free(lists[i].l[0]), nn_params_free(lists[i].l[1]);
  lists[i].o = NULL;
  nn_model_free(m);
}

static double momentum_of(const nn_optimizer *o, int g) {
  return nn_optimizer_group_config_ext(o, g)->base.momentum;
}

/* The optimizer follows s over n steps as PyTorch's scheduler: both
 * groups' rates (and the momentum where mom is not NULL), and
 * nn_schedule_ext2_lr (_momentum) from group 0's base agrees. */
static void follows(nn_opt_kind k, double momentum, const nn_schedule_ext2 *s, const double *g0,
                    const double *g1, const double *mom, int n, const char *what) {
  nn_model *m;
  nn_optimizer *o = two_groups(&m, k, momentum);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, s), AD_OK, "%s: %s", what, ad_last_error(ctx));
  double base = s->kind == NN_SCHED_CYCLIC ? s->base_lr : 0.1;
  for (int t = 0; t < n; t++) {
    exact(nn_optimizer_group_lr(o, 0), g0[t], what, 0, t);
    exact(nn_optimizer_group_lr(o, 1), g1[t], what, 1, t);
    exact(nn_schedule_ext2_lr(s, base, t), g0[t], what, 0, t);
    if (mom) {
      exact(momentum_of(o, 0), mom[t], what, 0, t);
      exact(momentum_of(o, 1), mom[t], what, 1, t);
      exact(nn_schedule_ext2_momentum(s, t), mom[t], what, 0, t);
    } else {
      cr_assert(isnan(nn_schedule_ext2_momentum(s, t)));
    }
    cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK, "%s: %s", what, ad_last_error(ctx));
  }
  done(o, m);
}

/* the callbacks of tools/gen_sched3_fixtures.py */
static double f_recip(int64_t x, void *ud) {
  (void)ud;
  return 1.0 / (double)x;
}
static double f_decay(int64_t x, void *ud) {
  (void)ud;
  return pow(0.97, (double)x);
}
static double f_lam_recip(int64_t e, void *ud) {
  (void)ud;
  return 1.0 / (double)(e + 1);
}
static double f_mul09(int64_t e, void *ud) {
  (void)ud, (void)e;
  return 0.9;
}
static double f_cycle3(int64_t e, void *ud) {
  (void)ud;
  return pow(0.5, (double)(e % 3));
}

static nn_schedule_ext2 cyclic(double base_lr, double max_lr, int64_t up, int64_t down) {
  nn_schedule_ext2 s = nn_schedule_ext2_defaults(NN_SCHED_CYCLIC);
  s.base_lr = base_lr, s.max_lr = max_lr, s.step_size_up = up, s.step_size_down = down;
  return s;
}

/* ------------------------------------------------------------- CyclicLR */

Test(sched3, cyclic_matches_torch) {
  nn_schedule_ext2 s = nn_schedule_ext2_defaults(NN_SCHED_CYCLIC);
  cr_assert(s.step_per_batch && s.cycle_momentum && s.mode == NN_CYCLIC_TRIANGULAR);
  cr_assert(s.step_size_up == 2000 && s.step_size_down == 0 && s.gamma == 1);
  cr_assert(s.base_momentum == 0.8 && s.max_momentum == 0.9 && isnan(s.base_lr));
  s = cyclic(0.01, 0.1, 4, 0);
  follows(NN_OPT_SGD, 0.9, &s, cy_tri_g0, cy_tri_g1, cy_tri_mom, LEN(cy_tri_g0), "triangular");
  s = cyclic(0.02, 0.2, 3, 5);
  s.mode = NN_CYCLIC_TRIANGULAR2;
  follows(NN_OPT_SGD, 0.9, &s, cy_tri2_g0, cy_tri2_g1, cy_tri2_mom, LEN(cy_tri2_g0), "triangular2");
  s = cyclic(0.001, 0.05, 2, 3);
  s.mode = NN_CYCLIC_EXP_RANGE, s.gamma = 0.9, s.base_momentum = 0.6, s.max_momentum = 0.95;
  follows(NN_OPT_RMSPROP, 0.5, &s, cy_exp_g0, cy_exp_g1, cy_exp_mom, LEN(cy_exp_g0),
          "exp_range, rmsprop");
  s = cyclic(0.01, 0.1, 3, 0);
  s.scale_fn = f_recip, s.mode = (nn_cyclic_mode)99; /* scale_fn overrides mode */
  follows(NN_OPT_SGD, 0.9, &s, cy_fn_cycle_g0, cy_fn_cycle_g1, cy_fn_cycle_mom, LEN(cy_fn_cycle_g0),
          "scale_fn by cycle");
  s = cyclic(0.05, 0.01, 5, 2); /* max below base */
  s.scale_fn = f_decay, s.scale_mode = NN_SCALE_ITERATIONS;
  follows(NN_OPT_SGD, 0.9, &s, cy_fn_iter_g0, cy_fn_iter_g1, cy_fn_iter_mom, LEN(cy_fn_iter_g0),
          "scale_fn by iterations");
  s = cyclic(0.003, 0.03, 2, 0);
  s.cycle_momentum = false;
  follows(NN_OPT_ADAM, 0, &s, cy_adam_g0, cy_adam_g1, NULL, LEN(cy_adam_g0), "adam, no momentum");
}

/* base_lr is group 0's base: set_lr moves the cycle (max_lr with it) */
Test(sched3, cyclic_base_moves_the_cycle) {
  nn_model *m;
  nn_optimizer *o = two_groups(&m, NN_OPT_SGD, 0.9);
  nn_schedule_ext2 s = cyclic(0.01, 0.1, 4, 0);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK);
  cr_assert_eq(nn_optimizer_group_lr(o, 1), 0.005);
  cr_assert_eq(nn_optimizer_set_lr(o, 0.02), AD_OK);
  for (int t = 0; t < 4; t++) cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  exact(nn_optimizer_lr(o), 0.2, "max from base 0.02", 0, 4);
  cr_assert_eq(nn_optimizer_schedule_ext2(o)->kind, NN_SCHED_CYCLIC);
  cr_assert_eq(nn_optimizer_schedule(o)->kind, NN_SCHED_CYCLIC);
  done(o, m);
}

/* A cycled momentum that a scale above 1 (exp_range with gamma > 1, or a
 * scale_fn) drives to 0 or below is refused as a rate below 0 is: PyTorch
 * sets -2.3 at step 5 here (and 0.9 again at 6), where the momentum stuck
 * at -2.3 for the rest of the run */
Test(sched3, cycled_momentum_out_of_range_is_refused) {
  nn_model *m;
  nn_optimizer *o = two_groups(&m, NN_OPT_SGD, 0.9);
  nn_schedule_ext2 s = cyclic(0.01, 0.1, 1, 0);
  s.mode = NN_CYCLIC_EXP_RANGE, s.gamma = 2;
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK, "%s", ad_last_error(ctx));
  for (int t = 1; t <= 4; t++) cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  exact(momentum_of(o, 1), 0.9, "momentum", 1, 4);
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_ERR_NAN);
  test_expect_error(ctx, AD_ERR_NAN, "momentum at epoch 5 is -2.3", NULL);
  exact(nn_optimizer_lr(o), 0.01, "unchanged rate", 0, 4);
  exact(momentum_of(o, 0), 0.9, "unchanged momentum", 0, 4);
  done(o, m);
}

/* ---------------------------------------- SequentialLR, ChainedScheduler */

static nn_schedule_ext2 kind_of(nn_sched_kind k) { return nn_schedule_ext2_defaults(k); }

static nn_schedule_ext2 linear(double a, double b, int64_t n) {
  nn_schedule_ext2 s = kind_of(NN_SCHED_LINEAR);
  s.start_factor = a, s.end_factor = b, s.total_iters = n;
  return s;
}
static nn_schedule_ext2 cosine(int64_t t_max, double eta_min) {
  nn_schedule_ext2 s = kind_of(NN_SCHED_COSINE);
  s.t_max = t_max, s.eta_min = eta_min;
  return s;
}
static nn_schedule_ext2 constant(double f, int64_t n) {
  nn_schedule_ext2 s = kind_of(NN_SCHED_CONSTANT_FACTOR);
  s.factor = f, s.total_iters = n;
  return s;
}
static nn_schedule_ext2 expo(double g) {
  nn_schedule_ext2 s = kind_of(NN_SCHED_EXPONENTIAL);
  s.gamma = g;
  return s;
}
static nn_schedule_ext2 step(int64_t n, double g) {
  nn_schedule_ext2 s = kind_of(NN_SCHED_STEP);
  s.step_size = n, s.gamma = g;
  return s;
}
static nn_schedule_ext2 multistep(const int64_t *ms, int n, double g) {
  nn_schedule_ext2 s = kind_of(NN_SCHED_MULTISTEP);
  s.milestones = ms, s.n_milestones = n, s.gamma = g;
  return s;
}
static nn_schedule_ext2 poly(int64_t n, double p) {
  nn_schedule_ext2 s = kind_of(NN_SCHED_POLYNOMIAL);
  s.total_iters = n, s.power = p;
  return s;
}
static nn_schedule_ext2 lambda(nn_sched_kind k, nn_lr_lambda_fn f) {
  nn_schedule_ext2 s = kind_of(k);
  s.lr_lambda = f;
  return s;
}
static nn_schedule_ext2 restarts(int64_t t_0, int64_t t_mult, double eta_min) {
  nn_schedule_ext2 s = kind_of(NN_SCHED_COSINE_RESTARTS);
  s.t_0 = t_0, s.t_mult = t_mult, s.eta_min = eta_min;
  return s;
}
static nn_schedule_ext2 composite(nn_sched_kind k, const nn_schedule_ext2 *kids, int n,
                                  const int64_t *ms, int nms) {
  nn_schedule_ext2 s = kind_of(k);
  s.schedulers = kids, s.n_schedulers = n, s.milestones = ms, s.n_milestones = nms;
  return s;
}

#define SEQ(name, kids, ms)                                                                        \
  do {                                                                                             \
    nn_schedule_ext2 s_ = composite(NN_SCHED_SEQUENTIAL, kids, LEN(kids), ms, LEN(kids) - 1);      \
    follows(NN_OPT_SGD, 0.9, &s_, name##_g0, name##_g1, NULL, LEN(name##_g0), #name);              \
  } while (0)
#define CHAIN(name, kids)                                                                          \
  do {                                                                                             \
    nn_schedule_ext2 s_ = composite(NN_SCHED_CHAINED, kids, LEN(kids), NULL, 0);                   \
    follows(NN_OPT_SGD, 0.9, &s_, name##_g0, name##_g1, NULL, LEN(name##_g0), #name);              \
  } while (0)

static const int64_t ms_0225[] = {0, 2, 2, 5}, ms_24[] = {2, 4}, ms_366[] = {3, 6, 6};

Test(sched3, sequential_matches_torch) {
  nn_schedule_ext2 a[] = {linear(0.25, 1, 4), cosine(6, 0.001)};
  SEQ(seq_lin_cos, a, ((const int64_t[]){4}));
  nn_schedule_ext2 b[] = {constant(0.5, 3), expo(0.9), step(3, 0.5)};
  SEQ(seq_const_exp_step, b, ((const int64_t[]){5, 12}));
  nn_schedule_ext2 c[] = {multistep(ms_0225, 4, 0.5), poly(4, 2),
                          lambda(NN_SCHED_MULTIPLICATIVE, f_mul09),
                          lambda(NN_SCHED_LAMBDA, f_lam_recip)};
  SEQ(seq_ms_poly_mul_lam, c, ((const int64_t[]){6, 10, 15}));
  nn_schedule_ext2 d[] = {expo(0.8), restarts(3, 2, 0.01), multistep(ms_24, 2, 0.1)};
  SEQ(seq_exp_restarts_ms, d, ((const int64_t[]){3, 12}));
  nn_schedule_ext2 e = linear(0.5, 0.1, 3), one = composite(NN_SCHED_SEQUENTIAL, &e, 1, NULL, 0);
  follows(NN_OPT_SGD, 0.9, &one, seq_one_g0, seq_one_g1, NULL, LEN(seq_one_g0), "one child");
}

Test(sched3, chained_matches_torch) {
  nn_schedule_ext2 a[] = {constant(0.1, 3), expo(0.9)};
  CHAIN(ch_const_exp, a);
  nn_schedule_ext2 b[] = {linear(0.5, 1, 4), cosine(10, 0.001), multistep(ms_366, 3, 0.5)};
  CHAIN(ch_lin_cos_ms, b);
  nn_schedule_ext2 c[] = {step(2, 0.7), poly(6, 1.5), lambda(NN_SCHED_MULTIPLICATIVE, f_mul09)};
  CHAIN(ch_step_poly_mul, c);
  nn_schedule_ext2 d[] = {expo(0.9), lambda(NN_SCHED_LAMBDA, f_cycle3), restarts(4, 1, 0),
                          constant(0.5, 2)};
  CHAIN(ch_exp_lam_restarts_const, d);
}

/* A linear child down to 0 with PyTorch's default start_factor 1/3: its
 * recursive form rounds to -1.5e-17 at total_iters in PyTorch; here 0, so
 * the run goes on (a rate below 0 is refused) */
Test(sched3, linear_child_down_to_zero_ends_at_zero) {
  nn_schedule_ext2 k[] = {linear(1. / 3, 0, 5)};
  for (int c = 0; c < 2; c++) {
    nn_schedule_ext2 s = composite(c ? NN_SCHED_CHAINED : NN_SCHED_SEQUENTIAL, k, 1, NULL, 0);
    nn_model *m;
    nn_optimizer *o = two_groups(&m, NN_OPT_SGD, 0.9);
    cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK, "%s", ad_last_error(ctx));
    for (int t = 1; t <= 8; t++) {
      cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK, "%d, step %d: %s", c, t,
                   ad_last_error(ctx));
      if (t >= 5) {
        cr_assert_eq(nn_optimizer_group_lr(o, 0), 0, "%d, step %d", c, t);
        cr_assert_eq(nn_schedule_ext2_lr(&s, 0.1, t), 0, "%d, step %d", c, t);
      }
    }
    done(o, m);
  }
}

/* A cosine child's t_max above INT64_MAX / 2: its climb-back test (PyTorch's
 * (t - 1 - T_max) % (2 T_max)) without 2 t_max overflowing (UBSan), and
 * still climbing back one step after t_max */
Test(sched3, cosine_child_huge_t_max) {
  nn_schedule_ext2 k[] = {cosine(INT64_MAX, 0)};
  nn_schedule_ext2 s = composite(NN_SCHED_CHAINED, k, 1, NULL, 0);
  cr_assert_eq(nn_schedule_ext2_lr(&s, 0.1, 3), 0.1);
  k[0] = cosine(INT64_MAX / 2 + 1, 0);
  cr_assert_eq(nn_schedule_ext2_lr(&s, 0.1, 3), 0.1);
  k[0] = cosine(2, 0); /* 0.1, 0.05, 0, then PyTorch's climb back at 3 */
  exact(nn_schedule_ext2_lr(&s, 0.1, 3), 0.05, "climbs back", 0, 3);
}

/* The children are copied: the caller's array may go; the copy holds the
 * children's milestones too */
Test(sched3, children_are_copied) {
  nn_model *m;
  nn_optimizer *o = two_groups(&m, NN_OPT_SGD, 0.9);
  int64_t ms[] = {3, 6, 6}, sw[] = {4};
  nn_schedule_ext2 kids[] = {linear(0.5, 1, 4), multistep(ms, 3, 0.5)};
  nn_schedule_ext2 s = composite(NN_SCHED_SEQUENTIAL, kids, 2, sw, 1);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK, "%s", ad_last_error(ctx));
  double want[12];
  for (int t = 0; t < 12; t++) want[t] = nn_schedule_ext2_lr(&s, 0.1, t);
  ms[0] = 1, sw[0] = 2, kids[0].start_factor = 1, kids[1].gamma = 7;
  memset(kids, 0, sizeof kids);
  const nn_schedule_ext2 *v = nn_optimizer_schedule_ext2(o);
  cr_assert(v->schedulers != kids && v->n_schedulers == 2 && v->milestones[0] == 4);
  cr_assert(v->schedulers[1].milestones != ms && v->schedulers[1].milestones[2] == 6);
  for (int t = 0; t < 12; t++) {
    cr_assert_eq(nn_optimizer_lr(o), want[t], "step %d", t);
    cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  }
  /* attached again from its own copy (the old copy freed as the new is made) */
  nn_schedule_ext2 again = *nn_optimizer_schedule_ext2(o);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &again), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, nn_optimizer_schedule_ext2(o)), AD_OK);
  cr_assert_eq(nn_optimizer_set_lr(o, 0.1), AD_OK); /* the base, and step 0 */
  for (int t = 0; t < 12; t++) {
    cr_assert_eq(nn_optimizer_lr(o), want[t], "again, step %d", t);
    cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  }
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, NULL), AD_OK); /* frees the copy */
  cr_assert_null(nn_optimizer_schedule_ext2(o));
  done(o, m);
}

/* ----------------------------------------------------------- checkpoints */

/* Trains a (two groups, SGD momentum 0.9) under s for 16 steps; b and c
 * the same, c saved after 7 steps and loaded into b with s attached, b
 * then goes on: b's parameters, rates and momentum end as a's, bit for
 * bit. */
static void resumes(const nn_schedule_ext2 *s, const char *what) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  int64_t xs[2] = {8, 3}, ys[2] = {8, 2};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, xs, -1, 1),
            *y = ad_rand(ctx, &rng, AD_F32, 2, ys, -1, 1);
  nn_model *a, *b, *c;
  nn_optimizer *oa = two_groups(&a, NN_OPT_SGD, 0.9), *ob = two_groups(&b, NN_OPT_SGD, 0.9),
               *oc = two_groups(&c, NN_OPT_SGD, 0.9);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(oa, s), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_set_schedule_ext2(oc, s), AD_OK);
  const char *path = test_path("s3.safetensors");
  for (int t = 0; t < 16; t++) {
    cr_assert_eq(nn_train_step(a, oa, nn_mse_loss, x, y, 0, NULL), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_eq(nn_optimizer_schedule_step(oa), AD_OK);
    if (t < 7) {
      cr_assert_eq(nn_train_step(c, oc, nn_mse_loss, x, y, 0, NULL), AD_OK);
      cr_assert_eq(nn_optimizer_schedule_step(oc), AD_OK);
    }
    if (t == 6) {
      cr_assert_eq(nn_model_save(c, oc, path), AD_OK, "%s", ad_last_error(ctx));
      cr_assert_eq(nn_optimizer_set_schedule_ext2(ob, s), AD_OK);
      cr_assert_eq(nn_model_load(b, ob, path), AD_OK, "%s", ad_last_error(ctx));
      for (int g = 0; g < 2; g++)
        cr_assert_eq(nn_optimizer_group_lr(ob, g), nn_optimizer_group_lr(oc, g), "%s", what);
      cr_assert_eq(momentum_of(ob, 0), momentum_of(oc, 0), "%s", what);
    }
    if (t >= 7) {
      cr_assert_eq(nn_train_step(b, ob, nn_mse_loss, x, y, 0, NULL), AD_OK);
      cr_assert_eq(nn_optimizer_schedule_step(ob), AD_OK);
    }
  }
  for (int g = 0; g < 2; g++)
    cr_assert_eq(nn_optimizer_group_lr(ob, g), nn_optimizer_group_lr(oa, g), "%s", what);
  cr_assert_eq(momentum_of(ob, 1), momentum_of(oa, 1), "%s", what);
  nn_params *pa = nn_model_params(a), *pb = nn_model_params(b);
  for (int i = 0; i < nn_params_count(pa); i++) {
    const ad_tensor *ta = nn_params_tensor(pa, i), *tb = nn_params_tensor(pb, i);
    cr_assert_eq(memcmp(ta->data, tb->data, (size_t)ta->size * sizeof(float)), 0, "%s: param %d",
                 what, i);
  }
  done(oa, a), done(ob, b), done(oc, c);
  ad_tensor_free(x), ad_tensor_free(y);
}

Test(sched3, checkpoints_resume_bit_for_bit) {
  nn_schedule_ext2 s = cyclic(0.01, 0.1, 3, 2);
  s.mode = NN_CYCLIC_TRIANGULAR2;
  resumes(&s, "cyclic");
  /* a multiplicative child chains from the rate the checkpoint holds */
  nn_schedule_ext2 k[] = {linear(0.25, 1, 3), lambda(NN_SCHED_MULTIPLICATIVE, f_mul09),
                          cosine(4, 0.001)};
  s = composite(NN_SCHED_SEQUENTIAL, k, 3, (const int64_t[]){5, 10}, 2);
  resumes(&s, "sequential");
  s = composite(NN_SCHED_CHAINED, k, 3, NULL, 0);
  resumes(&s, "chained");
}

/* A struct of the size before cyclic (it ended at lambda_ud) is read with
 * the later members zero */
Test(sched3, older_struct_size_is_read) {
  nn_schedule_ext2 s = step(2, 0.5);
  s.size = offsetof(nn_schedule_ext2, lambda_ud) + sizeof(void *);
  s.schedulers = (const nn_schedule_ext2 *)&s; /* beyond the old size: not read */
  s.n_schedulers = -3;
  cr_assert_eq(nn_schedule_ext2_lr(&s, 0.1, 2), 0.05);
  nn_model *m;
  nn_optimizer *o = two_groups(&m, NN_OPT_SGD, 0.9);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_schedule_ext2(o)->size, sizeof(nn_schedule_ext2));
  cr_assert_null(nn_optimizer_schedule_ext2(o)->schedulers);
  s.size = sizeof s - 8;
  cr_assert(isnan(nn_schedule_ext2_lr(&s, 0.1, 2)));
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "size must be sizeof(nn_schedule_ext2)", NULL);
  done(o, m);
}

/* --------------------------------------------------------------- nn_fit */

Test(sched3, fit_steps_cyclic_per_batch_and_sequential_per_epoch) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t xs[2] = {20, 3}, ys[2] = {20, 2};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, xs, -1, 1),
            *y = ad_rand(ctx, &rng, AD_F32, 2, ys, -1, 1);
  nn_model *m;
  nn_optimizer *o = two_groups(&m, NN_OPT_SGD, 0.9);
  nn_schedule_ext2 s = cyclic(0.01, 0.1, 3, 0);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK);
  nn_fit_opts fo = {.epochs = 3, .batch_size = 5, .verbose = -1};
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_mse_loss, x, y, &fo, &h), AD_OK, "%s", ad_last_error(ctx));
  for (int e = 0; e < 3; e++) /* 4 batches an epoch */
    cr_assert_eq(nn_history_get(h, "lr", e), nn_schedule_ext2_lr(&s, 0.01, 4 * e), "epoch %d", e);
  cr_assert_eq(nn_optimizer_lr(o), nn_schedule_ext2_lr(&s, 0.01, 12));
  cr_assert_eq(momentum_of(o, 1), nn_schedule_ext2_momentum(&s, 12));
  nn_history_free(h);
  nn_schedule_ext2 k[] = {constant(0.5, 2), expo(0.9)};
  s = composite(NN_SCHED_SEQUENTIAL, k, 2, (const int64_t[]){2}, 1);
  cr_assert(!s.step_per_batch);
  cr_assert_eq(nn_optimizer_set_lr(o, 0.1), AD_OK);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK);
  cr_assert_eq(nn_fit(m, o, nn_mse_loss, x, y, &fo, &h), AD_OK, "%s", ad_last_error(ctx));
  for (int e = 0; e < 3; e++)
    cr_assert_eq(nn_history_get(h, "lr", e), nn_schedule_ext2_lr(&s, 0.1, e), "epoch %d", e);
  cr_assert_eq(nn_optimizer_lr(o), nn_schedule_ext2_lr(&s, 0.1, 3));
  nn_history_free(h);
  done(o, m);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* ---------------------------------------------------------- bad settings */

/* s is refused by set_schedule_ext2 (the optimizer unchanged) with a
 * message containing msg, and nn_schedule_ext2_lr is NAN */
static void refused(nn_optimizer *o, const nn_schedule_ext2 *s, const char *msg) {
  double lr = nn_optimizer_lr(o);
  const nn_schedule_ext2 *before = nn_optimizer_schedule_ext2(o);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, s), AD_ERR_ARG, "accepted: %s", msg);
  test_expect_error(ctx, AD_ERR_ARG, msg, NULL);
  cr_assert_eq(nn_optimizer_lr(o), lr);
  cr_assert_eq(nn_optimizer_schedule_ext2(o), before);
}

Test(sched3, cyclic_bad_settings) {
  nn_model *m;
  nn_optimizer *o = two_groups(&m, NN_OPT_SGD, 0.9);
  nn_schedule_ext2 s = nn_schedule_ext2_defaults(NN_SCHED_CYCLIC);
  s.max_lr = 0.1;
  refused(o, &s, "base_lr must be finite and >= 0");
  cr_assert(isnan(nn_schedule_ext2_lr(&s, 0.1, 0)));
  s = cyclic(0.01, NAN, 4, 0);
  refused(o, &s, "max_lr must be finite and >= 0");
  s = cyclic(0.01, -1, 4, 0);
  refused(o, &s, "max_lr must be finite and >= 0");
  s = cyclic(0.01, 0.1, 0, 0);
  refused(o, &s, "step_size_up must be >= 1");
  s = cyclic(0.01, 0.1, 4, -1);
  refused(o, &s, "step_size_down must be >= 1");
  s = cyclic(0.01, 0.1, 4, 0);
  s.mode = (nn_cyclic_mode)3;
  refused(o, &s, "mode is invalid and scale_fn is NULL");
  s = cyclic(0.01, 0.1, 4, 0);
  s.scale_fn = f_recip, s.scale_mode = (nn_scale_mode)2;
  refused(o, &s, "scale_mode must be");
  s = cyclic(0.01, 0.1, 4, 0);
  s.mode = NN_CYCLIC_EXP_RANGE, s.gamma = NAN;
  refused(o, &s, "gamma must be finite and > 0");
  s = cyclic(0.01, 0.1, 4, 0);
  s.base_momentum = INFINITY;
  refused(o, &s, "base_momentum and max_momentum must be finite");
  s = cyclic(0, 0.1, 4, 0); /* two groups: their ratio needs base_lr > 0 */
  refused(o, &s, "base_lr is 0");
  /* PyTorch 1.13 cycles 'momentum' only */
  nn_model *ma;
  nn_optimizer *adam = two_groups(&ma, NN_OPT_ADAM, 0);
  s = cyclic(0.01, 0.1, 4, 0);
  refused(adam, &s, "optimizer must support momentum with `cycle_momentum` option enabled");
  s.cycle_momentum = false;
  cr_assert_eq(nn_optimizer_set_schedule_ext2(adam, &s), AD_OK);
  nn_model *m0;
  nn_optimizer *plain = two_groups(&m0, NN_OPT_SGD, 0);
  s.cycle_momentum = true;
  refused(plain, &s, "cycle_momentum needs momentum > 0");
  /* the old setters have no room for it */
  nn_schedule_ext e = {.kind = NN_SCHED_CYCLIC};
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, &e), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "use nn_optimizer_set_schedule_ext2", NULL);
  done(o, m), done(adam, ma), done(plain, m0);
}

Test(sched3, sequential_and_chained_bad_settings) {
  nn_model *m;
  nn_optimizer *o = two_groups(&m, NN_OPT_SGD, 0.9);
  nn_schedule_ext2 k[3] = {expo(0.9), step(2, 0.5), expo(0.5)};
  int64_t ms[2] = {3, 6};
  nn_schedule_ext2 s = composite(NN_SCHED_SEQUENTIAL, k, 0, NULL, 0);
  refused(o, &s, "n_schedulers must be >= 1");
  s = composite(NN_SCHED_SEQUENTIAL, NULL, 2, ms, 1);
  refused(o, &s, "schedulers is NULL");
  s = composite(NN_SCHED_SEQUENTIAL, k, 3, ms, 1);
  refused(o, &s,
          "expects number of schedulers provided to be one more than the number of milestone "
          "points, but got number of schedulers 3 and the number of milestones to be equal to 1");
  s = composite(NN_SCHED_SEQUENTIAL, k, 3, NULL, 2);
  refused(o, &s, "milestones is NULL");
  /* INT64_MAX then less: not read as INT64_MAX + 1 (signed overflow) */
  int64_t bad[][2] = {{3, 3}, {6, 3}, {0, 3}, {-1, 2}, {INT64_MAX, 5}};
  for (int i = 0; i < LEN(bad); i++) {
    s = composite(NN_SCHED_SEQUENTIAL, k, 3, bad[i], 2);
    refused(o, &s, "milestones must be >= 1 and increasing");
  }
  s = composite(NN_SCHED_CHAINED, k, 3, ms, 2);
  refused(o, &s, "chained takes no milestones");
  /* a child's bad setting, NaN included, named by its index */
  k[1].step_size = 0;
  s = composite(NN_SCHED_CHAINED, k, 3, NULL, 0);
  refused(o, &s, "schedulers[1] (kind 1): step_size must be >= 1");
  k[1] = step(2, 0.5), k[2].gamma = NAN;
  s = composite(NN_SCHED_SEQUENTIAL, k, 3, ms, 2);
  refused(o, &s, "schedulers[2] (kind 2): gamma must be finite and > 0");
  k[2] = expo(0.5), k[0].size = 0;
  refused(o, &s, "schedulers[0] (kind 2): size must be sizeof(nn_schedule_ext2)");
  k[0] = expo(0.9);
  /* kinds that cannot be children: nesting, and those that set their own base */
  nn_schedule_ext2 inner = composite(NN_SCHED_SEQUENTIAL, k, 1, NULL, 0);
  nn_schedule_ext2 no[] = {inner,
                           composite(NN_SCHED_CHAINED, k, 1, NULL, 0),
                           cyclic(0.01, 0.1, 2, 0),
                           kind_of(NN_SCHED_ONECYCLE),
                           kind_of(NN_SCHED_CONSTANT),
                           kind_of(NN_SCHED_WARMUP_COSINE)};
  for (int i = 0; i < LEN(no); i++) {
    nn_schedule_ext2 two[2] = {expo(0.9), no[i]};
    s = composite(i % 2 ? NN_SCHED_CHAINED : NN_SCHED_SEQUENTIAL, two, 2, ms, i % 2 ? 0 : 1);
    refused(o, &s, "schedulers[1]");
    cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_ERR_ARG);
    test_expect_error(ctx, AD_ERR_ARG, "cannot be a child of sequential or chained", NULL);
    cr_assert(isnan(nn_schedule_ext2_lr(&s, 0.1, 1)));
  }
  /* a rate a child's lambda makes negative at step 0 is refused as any */
  nn_schedule_ext2 neg[] = {lambda(NN_SCHED_LAMBDA, f_recip)}; /* 1 / (0) = inf */
  s = composite(NN_SCHED_CHAINED, neg, 1, NULL, 0);
  refused(o, &s, "must be finite and >= 0");
  cr_assert_eq(nn_optimizer_set_schedule_ext2(NULL, &s), AD_ERR_NULL);
  done(o, m);
}

/* A group's base set mid-run: its rate is the schedule's walked from the
 * new base to the current step (multiplicative's chain included), the
 * other group's untouched; the run goes on from there. */
Test(sched3, group_base_set_mid_run) {
  nn_model *m;
  nn_optimizer *o = two_groups(&m, NN_OPT_SGD, 0.9);
  nn_schedule_ext2 k[] = {linear(0.25, 1, 3), lambda(NN_SCHED_MULTIPLICATIVE, f_mul09)};
  nn_schedule_ext2 s = composite(NN_SCHED_SEQUENTIAL, k, 2, (const int64_t[]){3}, 1);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK);
  for (int t = 0; t < 6; t++) cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  double g0 = nn_optimizer_group_lr(o, 0);
  cr_assert_eq(nn_optimizer_set_group_lr(o, 1, 0.2), AD_OK);
  cr_assert_eq(nn_optimizer_group_lr(o, 1), nn_schedule_ext2_lr(&s, 0.2, 6));
  /* linear's rate at step 2 (0.2 * 0.75, never its end), kept by the
   * multiplicative's step(0) at 3, times 0.9 at 4, 5, 6 */
  exact(nn_optimizer_group_lr(o, 1), 0.2 * 0.75 * 0.9 * 0.9 * 0.9, "kept, then multiplied", 1, 6);
  cr_assert_eq(nn_optimizer_group_lr(o, 0), g0);
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  cr_assert_eq(nn_optimizer_group_lr(o, 1), nn_schedule_ext2_lr(&s, 0.2, 7));
  cr_assert_eq(nn_optimizer_group_lr(o, 0), nn_schedule_ext2_lr(&s, 0.1, 7));
  done(o, m);
}
