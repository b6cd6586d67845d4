/* test_nn_sched.c: the schedules of nn_schedule_ext (MultiStepLR, LinearLR,
 * a linear warm-up then cosine) and ReduceLROnPlateau (nn_plateau), against
 * PyTorch 1.13's rates. The arrays of sched_fixtures.h were produced by
 * tools/gen_sched_fixtures.py (torch.optim.lr_scheduler driving an SGD with
 * lr 0.1: the rate of epoch t read before the scheduler's step t). */
#include "nn.h"
#include "sched_fixtures.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_TMPDIR_SUITE(sched, "sched");

#define LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* |a - b| within 1e-13 relative: PyTorch chains the rates (each from the
 * last, so its rounding errors add up over the epochs: 1.2e-15 relative
 * after 36 epochs of LinearLR), these schedules are closed forms of the
 * epoch */
static void near(double got, double want, const char *what, int t) {
  cr_assert(fabs(got - want) <= 1e-13 * fabs(want) + 1e-18, "%s, epoch %d: %.17g, torch %.17g",
            what, t, got, want);
}

static nn_optimizer *sgd(nn_model **m) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(*m, nn_dense_new(ctx, 3, 2, &rng, NULL)), AD_OK);
  nn_optimizer *o = nn_sgd_new(nn_model_params(*m), 0.1, 0, false, 0);
  cr_assert_not_null(o);
  return o;
}

/* The optimizer follows s for n epochs as PyTorch's scheduler, and
 * nn_schedule_ext_lr agrees. */
static void follows(const nn_schedule_ext *s, const double *want, int n, const char *what) {
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, s), AD_OK, "%s", ad_last_error(ctx));
  for (int t = 0; t < n; t++) {
    near(nn_optimizer_lr(o), want[t], what, t);
    near(nn_schedule_ext_lr(s, 0.1, t), want[t], what, t);
    cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  }
  nn_optimizer_free(o);
  nn_model_free(m);
}

Test(sched, multistep_counts_repeated_milestones) {
  int64_t ms[] = {30, 10, 10, 80, 60};
  nn_schedule_ext s = {
      .kind = NN_SCHED_MULTISTEP, .gamma = 0.5, .milestones = ms, .n_milestones = LEN(ms)};
  follows(&s, ms_unsorted, LEN(ms_unsorted), "multistep [30,10,10,80,60]");
  cr_assert_eq(nn_schedule_ext_lr(&s, 0.1, 10), 0.025); /* 10 twice: gamma^2 */
  int64_t mz[] = {7, 0, 7, 7};
  nn_schedule_ext z = {
      .kind = NN_SCHED_MULTISTEP, .gamma = 0.3, .milestones = mz, .n_milestones = LEN(mz)};
  follows(&z, ms_zero, LEN(ms_zero), "multistep [7,0,7,7]");
  /* no milestones: constant */
  nn_schedule_ext none = {.kind = NN_SCHED_MULTISTEP, .gamma = 0.3};
  cr_assert_eq(nn_schedule_ext_lr(&none, 0.1, 500), 0.1);
}

Test(sched, linear_at_total_iters_and_after) {
  nn_schedule_ext w = {
      .kind = NN_SCHED_LINEAR, .start_factor = 0.25, .end_factor = 1, .total_iters = 10};
  follows(&w, lin_warmup, LEN(lin_warmup), "linear warm-up");
  cr_assert_eq(nn_schedule_ext_lr(&w, 0.1, 10), 0.1); /* at total_iters: end_factor */
  cr_assert_eq(nn_schedule_ext_lr(&w, 0.1, 1000000), 0.1);
  nn_schedule_ext d = {
      .kind = NN_SCHED_LINEAR, .start_factor = 1, .end_factor = 0.1, .total_iters = 100};
  follows(&d, lin_decay, LEN(lin_decay), "linear decay");
}

Test(sched, warmup_then_cosine) {
  nn_schedule_ext s = {.kind = NN_SCHED_WARMUP_COSINE,
                       .start_factor = 0.1,
                       .total_iters = 5,
                       .t_max = 90,
                       .eta_min = 0.001};
  follows(&s, warm_cos, LEN(warm_cos), "warm-up then cosine");
  /* after t_max the cosine stays at eta_min (PyTorch's climbs again) */
  cr_assert_eq(nn_schedule_ext_lr(&s, 0.1, 96), 0.001);
  cr_assert_eq(nn_schedule_ext_lr(&s, 0.1, 1000), 0.001);
}

/* The kinds of nn_schedule through nn_schedule_ext, and the views. */
Test(sched, old_kinds_and_views) {
  nn_schedule old = {.kind = NN_SCHED_COSINE, .t_max = 7, .eta_min = 0.001};
  nn_schedule_ext e = {.kind = NN_SCHED_COSINE, .t_max = 7, .eta_min = 0.001};
  for (int t = 0; t < 10; t++)
    cr_assert_eq(nn_schedule_lr(&old, 0.1, t), nn_schedule_ext_lr(&e, 0.1, t));
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  cr_assert_eq(nn_optimizer_set_schedule(o, &old), AD_OK);
  cr_assert_eq(nn_optimizer_schedule_ext(o)->kind, NN_SCHED_COSINE);
  cr_assert_eq(nn_optimizer_schedule_ext(o)->t_max, 7);
  int64_t ms[] = {3, 1};
  nn_schedule_ext s = {
      .kind = NN_SCHED_MULTISTEP, .gamma = 0.5, .milestones = ms, .n_milestones = 2};
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, &s), AD_OK);
  ms[0] = 0; /* copied: the caller's array may change */
  const nn_schedule_ext *got = nn_optimizer_schedule_ext(o);
  cr_assert_neq(got->milestones, ms);
  cr_assert_eq(got->milestones[0], 3);
  cr_assert_eq(got->n_milestones, 2);
  cr_assert_eq(nn_optimizer_schedule(o)->kind, NN_SCHED_MULTISTEP);
  cr_assert_eq(nn_optimizer_schedule(o)->gamma, 0.5);
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, NULL), AD_OK);
  cr_assert_null(nn_optimizer_schedule_ext(o));
  cr_assert_null(nn_optimizer_schedule(o));
  cr_assert_null(nn_optimizer_schedule_ext(NULL));
  nn_optimizer_free(o);
  nn_model_free(m);
}

/* A warm-up starts at lr0 start_factor when attached, and set_lr restarts
 * it from its new base (the rate at epoch 0 for that base). */
Test(sched, warmup_starts_below_its_base) {
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  nn_schedule_ext s = {
      .kind = NN_SCHED_LINEAR, .start_factor = 0.5, .end_factor = 1, .total_iters = 2};
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, &s), AD_OK);
  cr_assert_eq(nn_optimizer_lr(o), 0.05);
  cr_assert_eq(nn_optimizer_config(o)->lr, 0.05);
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  near(nn_optimizer_lr(o), 0.075, "warm-up", 1);
  cr_assert_eq(nn_optimizer_set_lr(o, 0.2), AD_OK);
  cr_assert_eq(nn_optimizer_lr(o), 0.1);
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  cr_assert_eq(nn_optimizer_lr(o), 0.2);
  nn_optimizer_free(o);
  nn_model_free(m);
}

static ad_tensor *state_named(const nn_optimizer *o, const char *name) {
  for (int i = 0; i < nn_optimizer_state_count(o); i++)
    if (strcmp(nn_optimizer_state_names(o)[i], name) == 0) return nn_optimizer_state_tensors(o)[i];
  cr_assert_fail("no state '%s'", name);
  return NULL;
}

/* Checkpoint mid-schedule: saved at epoch 15 of a multistep, loaded into
 * an optimizer with the same schedule attached, it goes on as PyTorch's. */
Test(sched, checkpoint_mid_schedule) {
  int64_t ms[] = {30, 10, 10, 80, 60};
  nn_schedule_ext s = {
      .kind = NN_SCHED_MULTISTEP, .gamma = 0.5, .milestones = ms, .n_milestones = LEN(ms)};
  nn_model *a, *b;
  nn_optimizer *oa = sgd(&a), *ob = sgd(&b);
  cr_assert_eq(nn_optimizer_set_schedule_ext(oa, &s), AD_OK);
  cr_assert_eq(nn_optimizer_set_schedule_ext(ob, &s), AD_OK);
  for (int t = 0; t < 15; t++) cr_assert_eq(nn_optimizer_schedule_step(oa), AD_OK);
  const char *path = test_path("ms.safetensors");
  cr_assert_eq(nn_model_save(a, oa, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_model_load(b, ob, path), AD_OK, "%s", ad_last_error(ctx));
  for (int t = 15; t < LEN(ms_unsorted); t++) {
    near(nn_optimizer_lr(ob), ms_unsorted[t], "resumed multistep", t);
    cr_assert_eq(nn_optimizer_schedule_step(ob), AD_OK);
  }
  /* a warm-up resumed mid-way */
  nn_schedule_ext w = {
      .kind = NN_SCHED_LINEAR, .start_factor = 0.25, .end_factor = 1, .total_iters = 10};
  cr_assert_eq(nn_optimizer_set_schedule_ext(oa, &w), AD_OK);
  cr_assert_eq(nn_optimizer_set_lr(oa, 0.1), AD_OK);
  for (int t = 0; t < 4; t++) cr_assert_eq(nn_optimizer_schedule_step(oa), AD_OK);
  cr_assert_eq(nn_model_save(a, oa, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_set_schedule_ext(ob, &w), AD_OK);
  cr_assert_eq(nn_model_load(b, ob, path), AD_OK, "%s", ad_last_error(ctx));
  for (int t = 4; t < 20; t++) {
    near(nn_optimizer_lr(ob), lin_warmup[t], "resumed warm-up", t);
    cr_assert_eq(nn_optimizer_schedule_step(ob), AD_OK);
  }
  nn_optimizer_free(oa), nn_optimizer_free(ob);
  nn_model_free(a), nn_model_free(b);
}

Test(sched, bad_settings) {
  int64_t ms[] = {3, -1}, ok[] = {2};
  struct {
    nn_schedule_ext s;
    const char *why;
  } bad[] = {
      {{.kind = NN_SCHED_MULTISTEP, .gamma = 0, .milestones = ok, .n_milestones = 1},
       "gamma must be finite and > 0"},
      {{.kind = NN_SCHED_MULTISTEP, .gamma = INFINITY}, "gamma must be finite and > 0"},
      {{.kind = NN_SCHED_MULTISTEP, .gamma = 0.5, .n_milestones = -1}, "n_milestones must be >= 0"},
      {{.kind = NN_SCHED_MULTISTEP, .gamma = 0.5, .n_milestones = 2}, "milestones is NULL"},
      {{.kind = NN_SCHED_MULTISTEP, .gamma = 0.5, .milestones = ms, .n_milestones = 2},
       "milestones must be >= 0"},
      {{.kind = NN_SCHED_LINEAR, .start_factor = 0, .end_factor = 1, .total_iters = 5},
       "start_factor must be in (0, 1]"},
      {{.kind = NN_SCHED_LINEAR, .start_factor = 1.5, .end_factor = 1, .total_iters = 5},
       "start_factor must be in (0, 1]"},
      {{.kind = NN_SCHED_LINEAR, .start_factor = NAN, .end_factor = 1, .total_iters = 5},
       "start_factor must be in (0, 1]"},
      {{.kind = NN_SCHED_LINEAR, .start_factor = 0.5, .end_factor = -0.1, .total_iters = 5},
       "end_factor must be in [0, 1]"},
      {{.kind = NN_SCHED_LINEAR, .start_factor = 0.5, .end_factor = 1.5, .total_iters = 5},
       "end_factor must be in [0, 1]"},
      {{.kind = NN_SCHED_LINEAR, .start_factor = 0.5, .end_factor = 1, .total_iters = 0},
       "total_iters must be >= 1"},
      {{.kind = NN_SCHED_WARMUP_COSINE, .start_factor = 0.5, .total_iters = 0, .t_max = 5},
       "total_iters must be >= 1"},
      {{.kind = NN_SCHED_WARMUP_COSINE, .start_factor = 0.5, .total_iters = 2},
       "t_max must be >= 1"},
      {{.kind = NN_SCHED_WARMUP_COSINE,
        .start_factor = 0.5,
        .total_iters = 2,
        .t_max = 5,
        .eta_min = -1},
       "eta_min must be finite and >= 0"},
      {{.kind = NN_SCHED_WARMUP_COSINE, .start_factor = 2, .total_iters = 2, .t_max = 5},
       "start_factor must be in (0, 1]"},
      {{.kind = (nn_sched_kind)99}, "unknown kind"},
  };
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  int64_t keep[] = {1};
  nn_schedule_ext good = {
      .kind = NN_SCHED_MULTISTEP, .gamma = 0.5, .milestones = keep, .n_milestones = 1};
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, &good), AD_OK);
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  for (int i = 0; i < LEN(bad); i++) {
    cr_assert_eq(nn_optimizer_set_schedule_ext(o, &bad[i].s), AD_ERR_ARG, "case %d", i);
    test_expect_error(ctx, AD_ERR_ARG, "optimizer: bad schedule: ", bad[i].why, NULL);
    cr_assert(isnan(nn_schedule_ext_lr(&bad[i].s, 0.1, 1)), "case %d", i);
    /* unchanged */
    cr_assert_eq(nn_optimizer_schedule_ext(o)->kind, NN_SCHED_MULTISTEP);
    cr_assert_eq(nn_optimizer_lr(o), 0.05);
  }
  cr_assert(isnan(nn_schedule_ext_lr(&good, 0.1, -1)));
  cr_assert(isnan(nn_schedule_ext_lr(NULL, 0.1, 1)));
  /* the kinds with settings nn_schedule has no room for need the ext API */
  nn_schedule old = {.kind = NN_SCHED_LINEAR};
  cr_assert_eq(nn_optimizer_set_schedule(o, &old), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "kind 5", "nn_optimizer_set_schedule_ext", NULL);
  cr_assert(isnan(nn_schedule_lr(&old, 0.1, 1)));
  cr_assert_eq(nn_optimizer_set_schedule_ext(NULL, &good), AD_ERR_NULL);
  nn_optimizer_free(o);
  nn_model_free(m);
}

/* ------------------------------------------------------ ReduceLROnPlateau */

typedef struct pcase {
  const char *name;
  nn_plateau p;
  const double *want;
} pcase;

#define PL(md, f, pat, th, tm, cd, ml, e)                                                          \
  {                                                                                                \
    .mode = NN_MODE_##md, .factor = f, .patience = pat, .threshold = th,                           \
    .threshold_mode = NN_THRESHOLD_##tm, .cooldown = cd, .min_lr = ml, .eps = e                    \
  }

/* the cases of tools/gen_sched_fixtures.py */
static const pcase pcases[] = {
    {"min rel", PL(MIN, 0.5, 3, 1e-2, REL, 0, 0.0, 1e-8), pl_min_rel},
    {"min abs cooldown", PL(MIN, 0.5, 2, 0.01, ABS, 4, 0.0, 1e-8), pl_min_abs_cool},
    {"max rel min_lr", PL(MAX, 0.3, 1, 1e-3, REL, 0, 0.004, 1e-8), pl_max_rel_minlr},
    {"max abs eps", PL(MAX, 0.7, 2, 0.005, ABS, 2, 0.002, 0.003), pl_max_abs_eps},
    {"min rel patience 0", PL(MIN, 0.9, 0, 0.0, REL, 1, 0.01, 1e-8), pl_min_rel_p0},
};

static double metric_of(const nn_plateau *p, int t) {
  return p->mode == NN_MODE_MIN ? plateau_metric[t] : 1 - plateau_metric[t];
}

Test(sched, plateau_matches_torch) {
  for (int c = 0; c < LEN(pcases) + 1; c++) {
    nn_plateau p = c < LEN(pcases) ? pcases[c].p : nn_plateau_defaults();
    const double *want = c < LEN(pcases) ? pcases[c].want : pl_defaults;
    const char *name = c < LEN(pcases) ? pcases[c].name : "defaults";
    nn_model *m;
    nn_optimizer *o = sgd(&m);
    cr_assert_eq(nn_optimizer_set_plateau(o, &p), AD_OK, "%s", ad_last_error(ctx));
    int reductions = 0;
    for (int t = 0; t < LEN(plateau_metric); t++) {
      near(nn_optimizer_lr(o), want[t], name, t);
      if (t && want[t] != want[t - 1]) reductions++;
      cr_assert_eq(nn_optimizer_plateau_step(o, metric_of(&p, t)), AD_OK);
    }
    cr_assert(reductions >= (c < LEN(pcases) ? 2 : 1), "%s: the case reduces the rate %d times",
              name, reductions);
    nn_optimizer_free(o);
    nn_model_free(m);
  }
}

/* Saved mid-plateau (bad epochs counted, in cooldown), loaded into an
 * optimizer with the same settings attached: it goes on as PyTorch's. */
Test(sched, plateau_survives_a_checkpoint) {
  const pcase *pc = &pcases[1]; /* min abs cooldown 4 */
  nn_model *a, *b;
  nn_optimizer *oa = sgd(&a), *ob = sgd(&b);
  cr_assert_eq(nn_optimizer_set_plateau(oa, &pc->p), AD_OK);
  cr_assert_eq(nn_optimizer_set_plateau(ob, &pc->p), AD_OK);
  const char *path = test_path("pl.safetensors");
  bool saw_cool = false, saw_bad = false;
  for (int cut = 1; cut < LEN(plateau_metric); cut += 7) {
    cr_assert_eq(nn_optimizer_set_lr(oa, 0.1), AD_OK);
    cr_assert_eq(nn_optimizer_set_plateau(oa, &pc->p), AD_OK);
    for (int t = 0; t < cut; t++) nn_optimizer_plateau_step(oa, metric_of(&pc->p, t));
    saw_cool |= ad_tensor_item(state_named(oa, "sgd.plateau.cooldown_counter")) > 0;
    saw_bad |= ad_tensor_item(state_named(oa, "sgd.plateau.num_bad_epochs")) > 0;
    cr_assert_eq(nn_model_save(a, oa, path), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_eq(nn_optimizer_set_plateau(ob, &pc->p), AD_OK);
    cr_assert_eq(nn_model_load(b, ob, path), AD_OK, "%s", ad_last_error(ctx));
    for (int t = cut; t < LEN(plateau_metric); t++) {
      near(nn_optimizer_lr(ob), pc->want[t], "resumed plateau", t);
      cr_assert_eq(nn_optimizer_plateau_step(ob, metric_of(&pc->p, t)), AD_OK);
    }
  }
  cr_assert(saw_cool && saw_bad, "some cut falls in a cooldown and after bad epochs");
  /* a NaN best in a checkpoint is refused (+-inf means none yet) */
  ad_tensor *best = state_named(oa, "sgd.plateau.best");
  ad_tensor_set(best, 0, NAN);
  cr_assert_eq(nn_model_save(a, oa, path), AD_OK);
  cr_assert_eq(nn_model_load(b, ob, path), AD_ERR_FORMAT);
  test_expect_error(ctx, AD_ERR_FORMAT, "'sgd.plateau.best' is NaN", NULL);
  nn_optimizer_free(oa), nn_optimizer_free(ob);
  nn_model_free(a), nn_model_free(b);
}

/* A warm-up and a plateau together: the reduction scales the warm-up's
 * base, as PyTorch's chained LinearLR and ReduceLROnPlateau do. */
Test(sched, plateau_with_a_warmup) {
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  nn_schedule_ext w = {
      .kind = NN_SCHED_LINEAR, .start_factor = 0.25, .end_factor = 1, .total_iters = 4};
  nn_plateau p = nn_plateau_defaults();
  p.patience = 0, p.factor = 0.5;
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, &w), AD_OK);
  cr_assert_eq(nn_optimizer_set_plateau(o, &p), AD_OK);
  /* torch 1.13: SGD lr 0.1, LinearLR(0.25, 1, 4) and ReduceLROnPlateau(factor
   * 0.5, patience 0), stepped in that order every epoch with these metrics */
  static const double metric[] = {1, 1, 0.5, 0.5, 0.5, 0.5}, want[] = {0.025,
                                                                       0.043750000000000004,
                                                                       0.03125000000000001,
                                                                       0.04062500000000001,
                                                                       0.025000000000000005,
                                                                       0.012500000000000002,
                                                                       0.006250000000000001};
  for (int t = 0; t < 6; t++) {
    near(nn_optimizer_lr(o), want[t], "warm-up and plateau", t);
    cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
    cr_assert_eq(nn_optimizer_plateau_step(o, metric[t]), AD_OK);
  }
  near(nn_optimizer_lr(o), want[6], "warm-up and plateau", 6);
  nn_optimizer_free(o);
  nn_model_free(m);
}

static bool reduce_on_val_loss(int epoch, const nn_history *h, void *opt) {
  return nn_optimizer_plateau_step(opt, nn_history_get(h, "val_loss", epoch)) == AD_OK;
}

/* The use with nn_fit: on_epoch_end feeds the epoch's val_loss. With a
 * rate of 0 nothing trains, val_loss stays put, and the plateau has
 * nothing to lower; with a tiny rate it barely moves (below the 1e-4
 * relative threshold), so after the first epoch every epoch is bad. */
Test(sched, plateau_in_fit) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t xs[2] = {20, 3}, ys[2] = {20, 2};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, xs, -1, 1),
            *y = ad_rand(ctx, &rng, AD_F32, 2, ys, -1, 1);
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  cr_assert_eq(nn_optimizer_set_lr(o, 1e-9), AD_OK);
  nn_plateau p = nn_plateau_defaults();
  p.patience = 2, p.factor = 0.5, p.cooldown = 1, p.eps = 0;
  cr_assert_eq(nn_optimizer_set_plateau(o, &p), AD_OK);
  nn_fit_opts fo = {.epochs = 12,
                    .batch_size = 5,
                    .validation_split = 0.25,
                    .verbose = -1,
                    .on_epoch_end = reduce_on_val_loss,
                    .ud = o};
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_mse_loss, x, y, &fo, &h), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_history_epochs(h), 12);
  /* torch 1.13 ReduceLROnPlateau(factor 0.5, patience 2, cooldown 1, eps 0)
   * fed a constant metric 12 times: reductions after epochs 3, 7, 11 */
  static const double scale[12] = {1, 1, 1, 1, .5, .5, .5, .5, .25, .25, .25, .25};
  for (int e = 0; e < 12; e++) near(nn_history_get(h, "lr", e), 1e-9 * scale[e], "fit lr", e);
  near(nn_optimizer_lr(o), 1.25e-10, "fit lr", 12);
  nn_history_free(h);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}

Test(sched, plateau_bad_settings) {
  nn_plateau d = nn_plateau_defaults();
  struct {
    nn_plateau p;
    const char *why;
  } bad[] = {
      {d, "mode must be NN_MODE_MIN or NN_MODE_MAX"},
      {d, "factor must be >= 0 and < 1"},
      {d, "factor must be >= 0 and < 1"},
      {d, "factor must be >= 0 and < 1"},
      {d, "patience must be >= 0"},
      {d, "threshold must be finite and >= 0"},
      {d, "threshold must be finite and >= 0"},
      {d, "threshold_mode must be NN_THRESHOLD_REL or NN_THRESHOLD_ABS"},
      {d, "cooldown must be >= 0"},
      {d, "min_lr must be finite and >= 0"},
      {d, "min_lr must be finite and >= 0"},
      {d, "eps must be finite and >= 0"},
      {d, "eps must be finite and >= 0"},
  };
  bad[0].p.mode = NN_MODE_AUTO;
  bad[1].p.factor = 1;
  bad[2].p.factor = -0.1;
  bad[3].p.factor = NAN;
  bad[4].p.patience = -1;
  bad[5].p.threshold = -1e-4;
  bad[6].p.threshold = INFINITY;
  bad[7].p.threshold_mode = (nn_threshold_mode)2;
  bad[8].p.cooldown = -1;
  bad[9].p.min_lr = -1;
  bad[10].p.min_lr = NAN;
  bad[11].p.eps = -1;
  bad[12].p.eps = INFINITY;
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  cr_assert_eq(nn_optimizer_plateau_step(o, 1.0), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "no plateau attached", NULL);
  cr_assert_eq(nn_optimizer_set_plateau(o, &d), AD_OK);
  cr_assert_eq(nn_optimizer_plateau_step(o, 1.0), AD_OK);
  for (int i = 0; i < LEN(bad); i++) {
    cr_assert_eq(nn_optimizer_set_plateau(o, &bad[i].p), AD_ERR_ARG, "case %d", i);
    test_expect_error(ctx, AD_ERR_ARG, "optimizer: bad plateau settings: ", bad[i].why, NULL);
    /* unchanged: the settings and the state */
    cr_assert_eq(nn_optimizer_plateau(o)->factor, 0.1);
    cr_assert_eq(ad_tensor_item(state_named(o, "sgd.plateau.best")), 1.0);
  }
  cr_assert_eq(nn_optimizer_set_plateau(o, NULL), AD_OK);
  cr_assert_null(nn_optimizer_plateau(o));
  cr_assert_eq(nn_optimizer_set_plateau(NULL, &d), AD_ERR_NULL);
  cr_assert_eq(nn_optimizer_plateau_step(NULL, 1.0), AD_ERR_NULL);
  cr_assert_null(nn_optimizer_plateau(NULL));
  nn_optimizer_free(o);
  nn_model_free(m);
}

/* A multistep schedule with milestones 0 and gamma > 1 whose rate at
 * epoch 0 overflows is refused, by set_schedule_ext and set_lr alike, the
 * optimizer unchanged (an infinite rate no checkpoint may hold). */
Test(sched, epoch0_rate_overflow_refused) {
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  int64_t ms[] = {0, 0};
  nn_schedule_ext s = {
      .kind = NN_SCHED_MULTISTEP, .gamma = 1e300, .milestones = ms, .n_milestones = 2};
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, &s), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG,
                    "optimizer: bad schedule: its rate at epoch 0 from lr 0.1 is inf", NULL);
  cr_assert_null(nn_optimizer_schedule_ext(o));
  cr_assert_eq(nn_optimizer_lr(o), 0.1);
  s.n_milestones = 1, s.gamma = 1e10;
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, &s), AD_OK);
  cr_assert_eq(nn_optimizer_lr(o), 0.1 * 1e10);
  cr_assert_eq(nn_optimizer_set_lr(o, 1e300), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG,
                    "optimizer sgd: set_lr: the schedule's rate at epoch 0 from lr 1e+300 is inf",
                    NULL);
  cr_assert_eq(nn_optimizer_lr(o), 0.1 * 1e10);
  cr_assert_eq(ad_tensor_item(state_named(o, "sgd.schedule.lr0")), 0.1);
  nn_optimizer_free(o);
  nn_model_free(m);
}

/* A reduction from a tiny rate far below the schedule's base (lr0 / old
 * beyond double's range) scales the base by new / old, not (lr0 / old)
 * new: with factor 0 the latter was inf * 0 = NaN, a base rate no
 * checkpoint may hold, and the next schedule step failed. */
Test(sched, plateau_scales_base_without_overflow) {
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  nn_schedule_ext s = {.kind = NN_SCHED_EXPONENTIAL, .gamma = 0.5};
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, &s), AD_OK);
  for (int i = 0; i < 1030; i++) cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  nn_plateau p = nn_plateau_defaults();
  p.patience = 0, p.factor = 0, p.eps = 0;
  cr_assert_eq(nn_optimizer_set_plateau(o, &p), AD_OK);
  cr_assert_eq(nn_optimizer_plateau_step(o, 1), AD_OK);
  cr_assert_eq(nn_optimizer_plateau_step(o, 1), AD_OK);
  double lr0 = ad_tensor_item(state_named(o, "sgd.schedule.lr0"));
  cr_assert_eq(lr0, 0, "lr0 %g", lr0);
  cr_assert_eq(nn_optimizer_lr(o), 0);
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK, "%s", ad_last_error(ctx));
  nn_optimizer_free(o);
  nn_model_free(m);
}

/* Reductions during the warm-up of warmup_cosine carry into its cosine
 * (PyTorch 1.13's SequentialLR restarts the cosine from the unreduced base:
 * 0.1 at epoch 4 of this run, its rates 0.05 0.0625 0.0375 0.021875 0.1). */
Test(sched, plateau_reductions_carry_past_the_warmup) {
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  nn_schedule_ext s = {.kind = NN_SCHED_WARMUP_COSINE,
                       .start_factor = 0.5,
                       .total_iters = 4,
                       .t_max = 10,
                       .eta_min = 0.001};
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, &s), AD_OK);
  nn_plateau p = nn_plateau_defaults();
  p.factor = 0.5, p.patience = 0;
  cr_assert_eq(nn_optimizer_set_plateau(o, &p), AD_OK);
  static const double metric[4] = {1, 1, 1, 0.5}, want[5] = {0.05, 0.0625, 0.0375, 0.021875, 0.025};
  for (int t = 0; t < 4; t++) {
    near(nn_optimizer_lr(o), want[t], "warm-up with reductions", t);
    cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
    cr_assert_eq(nn_optimizer_plateau_step(o, metric[t]), AD_OK);
  }
  near(nn_optimizer_lr(o), want[4], "the cosine's start, reduced", 4);
  nn_optimizer_free(o);
  nn_model_free(m);
}

/* A plateau step that does not reduce the rate writes only the plateau's
 * state: a backward through an op that read the rate still runs (the
 * write of the rate is noted only when it is made). */
Test(sched, plateau_notes_the_rate_only_when_it_reduces) {
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  nn_plateau p = nn_plateau_defaults();
  p.patience = 1;
  cr_assert_eq(nn_optimizer_set_plateau(o, &p), AD_OK);
  ad_tensor *lr = state_named(o, "sgd.lr"), *v = ad_ones(ctx, AD_F64, 0, NULL);
  ad_tensor_set_requires_grad(v, true);
  for (int k = 0; k < 3; k++) { /* improving, one bad epoch, a reduction */
    ad_tape_reset(ctx);
    ad_tensor *z = ad_mul(ctx, lr, v);
    cr_assert_eq(nn_optimizer_plateau_step(o, k == 0 ? 1.0 : 2.0), AD_OK);
    ad_status st = ad_backward(ctx, z, NULL);
    cr_assert_eq(st, k < 2 ? AD_OK : AD_ERR_STATE, "step %d: %s", k, ad_last_error(ctx));
    ad_clear_error(ctx);
  }
  cr_assert_eq(nn_optimizer_lr(o), 0.1 * 0.1);
  ad_tape_reset(ctx);
  ad_tensor_free(v);
  nn_optimizer_free(o);
  nn_model_free(m);
}
