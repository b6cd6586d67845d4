/* test_nn_sched.c: the schedules of nn_schedule_ext (MultiStepLR, LinearLR,
 * a linear warm-up then cosine) and ReduceLROnPlateau (nn_plateau), against
 * PyTorch 1.13's rates. The arrays of sched_fixtures.h were produced by
 * tools/gen_sched_fixtures.py (torch.optim.lr_scheduler driving an SGD with
 * lr 0.1: the rate of epoch t read before the scheduler's step t). */
#include "nn.h"
#include "sched2_fixtures.h"
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
  cr_assert(test_close(got, want, 1e-13 * fabs(want) + 1e-18), "%s, epoch %d: %.17g, torch %.17g",
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

/* ------------------------------------------------ nn_schedule_ext2: OneCycleLR */

/* |a - b| within 1e-15 relative: the same operations in PyTorch's order */
static void exact(double got, double want, const char *what, int t) {
  cr_assert(test_close(got, want, 1e-15 * fabs(want) + 1e-300), "%s, step %d: %.17g, torch %.17g",
            what, t, got, want);
}

/* The optimizers of tools/gen_sched2_fixtures.py (lr 0.1) */
static nn_optimizer *opt_of(nn_model **m, nn_opt_kind kind) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(*m, nn_dense_new(ctx, 3, 2, &rng, NULL)), AD_OK);
  nn_opt_config c = nn_opt_defaults(kind, 0.1);
  if (kind == NN_OPT_SGD) c.momentum = 0.9;
  if (kind == NN_OPT_RMSPROP) c.momentum = 0.5;
  nn_optimizer *o = nn_optimizer_new(nn_model_params(*m), &c);
  cr_assert_not_null(o);
  return o;
}

static double cycled(const nn_optimizer *o) {
  const nn_opt_config *c = nn_optimizer_config(o);
  return c->kind == NN_OPT_SGD || c->kind == NN_OPT_RMSPROP ? c->momentum : c->beta1;
}

/* The optimizer follows s over steps 0 .. total_steps as PyTorch's
 * OneCycleLR (rate, and momentum or beta1 where mom is not NULL),
 * nn_schedule_ext2_lr and _momentum agree, and the step after is refused. */
static void oc_follows(nn_opt_kind kind, const nn_schedule_ext2 *s, const double *lr,
                       const double *mom, int n, const char *what) {
  cr_assert_eq(n, s->total_steps + 1, "%s: fixture length", what);
  nn_model *m;
  nn_optimizer *o = opt_of(&m, kind);
  double before = cycled(o);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, s), AD_OK, "%s", ad_last_error(ctx));
  bool clamped = false;
  for (int t = 0; t < n; t++) {
    double want = lr[t] < 0 ? 0 : lr[t]; /* linear's overshoot at total_steps: 0 here */
    clamped |= lr[t] < 0;
    exact(nn_optimizer_lr(o), want, what, t);
    exact(nn_schedule_ext2_lr(s, s->max_lr, t), want, what, t);
    if (mom) {
      exact(cycled(o), mom[t], what, t);
      exact(nn_schedule_ext2_momentum(s, t), mom[t], what, t);
    } else {
      cr_assert_eq(cycled(o), before, "%s: the momentum is left alone", what);
      cr_assert(isnan(nn_schedule_ext2_momentum(s, t)));
    }
    if (t < n - 1) cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK, "%s", ad_last_error(ctx));
  }
  cr_assert_eq(clamped, s->anneal == NN_ANNEAL_LINEAR && lr[n - 1] < 0);
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_ERR_STATE);
  char msg[96];
  snprintf(msg, sizeof msg,
           "onecycle: tried to step %d times; the specified number of total steps is %d", n + 1,
           n - 1);
  test_expect_error(ctx, AD_ERR_STATE, msg, NULL);
  exact(nn_optimizer_lr(o), lr[n - 1] < 0 ? 0 : lr[n - 1], what, n - 1); /* unchanged */
  cr_assert(isnan(nn_schedule_ext2_lr(s, s->max_lr, n)));
  nn_optimizer_free(o);
  nn_model_free(m);
}

static nn_schedule_ext2 onecycle(double max_lr, int64_t total_steps) {
  nn_schedule_ext2 s = nn_schedule_ext2_defaults(NN_SCHED_ONECYCLE);
  s.max_lr = max_lr;
  s.total_steps = total_steps;
  return s;
}

/* the cases of tools/gen_sched2_fixtures.py */
Test(sched, onecycle_matches_torch) {
  nn_schedule_ext2 s = onecycle(0.1, 100);
  cr_assert(s.step_per_batch && s.cycle_momentum && s.anneal == NN_ANNEAL_COS && !s.three_phase);
  cr_assert(s.pct_start == 0.3 && s.div_factor == 25 && s.final_div_factor == 1e4);
  cr_assert(s.base_momentum == 0.85 && s.max_momentum == 0.95);
  oc_follows(NN_OPT_SGD, &s, oc_defaults_lr, oc_defaults_mom, LEN(oc_defaults_lr), "defaults");
  s = onecycle(0.01, 50);
  s.pct_start = 0.25, s.anneal = NN_ANNEAL_LINEAR;
  oc_follows(NN_OPT_ADAM, &s, oc_linear_adam_lr, oc_linear_adam_mom, LEN(oc_linear_adam_lr),
             "linear, adam");
  s = onecycle(0.5, 60);
  s.three_phase = true, s.div_factor = 10, s.final_div_factor = 100, s.base_momentum = 0.8,
  s.max_momentum = 0.9;
  oc_follows(NN_OPT_SGD, &s, oc_three_lr, oc_three_mom, LEN(oc_three_lr), "three phases");
  s = onecycle(0.2, 37);
  s.pct_start = 0.4, s.anneal = NN_ANNEAL_LINEAR, s.three_phase = true;
  oc_follows(NN_OPT_RMSPROP, &s, oc_three_linear_lr, oc_three_linear_mom, LEN(oc_three_linear_lr),
             "three linear phases, rmsprop");
  s = onecycle(0.3, 20);
  s.pct_start = 0;
  oc_follows(NN_OPT_ADAM, &s, oc_pct0_lr, oc_pct0_mom, LEN(oc_pct0_lr), "pct_start 0");
  s = onecycle(0.05, 30);
  s.cycle_momentum = false;
  oc_follows(NN_OPT_ADAGRAD, &s, oc_no_momentum_lr, NULL, LEN(oc_no_momentum_lr),
             "no momentum, adagrad");
  s = onecycle(1, 2);
  oc_follows(NN_OPT_SGD, &s, oc_two_steps_lr, oc_two_steps_mom, LEN(oc_two_steps_lr), "2 steps");
}

/* max_lr is the base rate: set_lr restarts the cycle with a new maximum,
 * and a plateau's reduction scales the whole cycle. */
Test(sched, onecycle_base_is_max_lr) {
  nn_model *m;
  nn_optimizer *o = opt_of(&m, NN_OPT_SGD);
  nn_schedule_ext2 s = onecycle(0.1, 100);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK);
  cr_assert_eq(ad_tensor_item(state_named(o, "sgd.schedule.lr0")), 0.1);
  exact(nn_optimizer_lr(o), 0.1 / 25, "max_lr / div_factor", 0); /* torch's cosine rounds it */
  for (int t = 0; t < 5; t++) cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  cr_assert_eq(nn_optimizer_set_lr(o, 0.2), AD_OK);
  exact(nn_optimizer_lr(o), 0.2 / 25, "new max_lr / div_factor", 0);
  cr_assert_eq(cycled(o), 0.95);
  cr_assert_eq(nn_optimizer_schedule_ext2(o)->total_steps, 100);
  cr_assert_eq(nn_optimizer_schedule_ext(o)->kind, NN_SCHED_ONECYCLE);
  cr_assert_eq(nn_optimizer_schedule(o)->kind, NN_SCHED_ONECYCLE);
  /* detached: the rate and the momentum stay where the cycle left them */
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  double lr = nn_optimizer_lr(o), mom = cycled(o);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, NULL), AD_OK);
  cr_assert_null(nn_optimizer_schedule_ext2(o));
  cr_assert_eq(nn_optimizer_lr(o), lr);
  cr_assert_eq(cycled(o), mom);
  cr_assert_neq(mom, 0.95);
  nn_optimizer_free(o);
  nn_model_free(m);
}

/* Training with Adam under a onecycle (lr and beta1 cycled), saved at step
 * 7 and resumed into a fresh model and optimizer with the same schedule:
 * the parameters, rate and beta1 follow the uninterrupted run bit for
 * bit. */
Test(sched, onecycle_resumes_bit_for_bit) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  int64_t xs[2] = {8, 3}, ys[2] = {8, 2};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, xs, -1, 1),
            *y = ad_rand(ctx, &rng, AD_F32, 2, ys, -1, 1);
  nn_schedule_ext2 s = onecycle(0.05, 20);
  nn_model *a, *b, *c;
  nn_optimizer *oa = opt_of(&a, NN_OPT_ADAM), *ob = opt_of(&b, NN_OPT_ADAM),
               *oc = opt_of(&c, NN_OPT_ADAM);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(oa, &s), AD_OK);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(oc, &s), AD_OK);
  const char *path = test_path("oc.safetensors");
  for (int t = 0; t < 20; t++) {
    cr_assert_eq(nn_train_step(a, oa, nn_mse_loss, x, y, 0, NULL), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_eq(nn_optimizer_schedule_step(oa), AD_OK);
    if (t < 7) {
      cr_assert_eq(nn_train_step(c, oc, nn_mse_loss, x, y, 0, NULL), AD_OK);
      cr_assert_eq(nn_optimizer_schedule_step(oc), AD_OK);
    }
    if (t == 6) {
      cr_assert_eq(nn_model_save(c, oc, path), AD_OK, "%s", ad_last_error(ctx));
      cr_assert_eq(nn_optimizer_set_schedule_ext2(ob, &s), AD_OK);
      cr_assert_eq(nn_model_load(b, ob, path), AD_OK, "%s", ad_last_error(ctx));
      cr_assert_eq(nn_optimizer_config(ob)->beta1, nn_schedule_ext2_momentum(&s, 7));
    }
    if (t >= 7) {
      cr_assert_eq(nn_train_step(b, ob, nn_mse_loss, x, y, 0, NULL), AD_OK);
      cr_assert_eq(nn_optimizer_schedule_step(ob), AD_OK);
    }
  }
  cr_assert_eq(nn_optimizer_lr(ob), nn_optimizer_lr(oa));
  cr_assert_eq(nn_optimizer_config(ob)->beta1, nn_optimizer_config(oa)->beta1);
  nn_params *pa = nn_model_params(a), *pb = nn_model_params(b), *pc = nn_model_params(c);
  bool moved = false;
  for (int i = 0; i < nn_params_count(pa); i++) {
    const ad_tensor *ta = nn_params_tensor(pa, i), *tb = nn_params_tensor(pb, i);
    cr_assert_eq(memcmp(ta->data, tb->data, (size_t)ta->size * sizeof(float)), 0, "param %d", i);
    moved |= memcmp(ta->data, nn_params_tensor(pc, i)->data, (size_t)ta->size * sizeof(float));
  }
  cr_assert(moved, "the resumed steps changed the parameters");
  /* without the cycled beta1 (a schedule that keeps it) the run differs */
  nn_model *d;
  nn_optimizer *od = opt_of(&d, NN_OPT_ADAM);
  s.cycle_momentum = false;
  cr_assert_eq(nn_optimizer_set_schedule_ext2(od, &s), AD_OK);
  for (int t = 0; t < 20; t++) {
    cr_assert_eq(nn_train_step(d, od, nn_mse_loss, x, y, 0, NULL), AD_OK);
    cr_assert_eq(nn_optimizer_schedule_step(od), AD_OK);
  }
  cr_assert_eq(nn_optimizer_lr(od), nn_optimizer_lr(oa));
  cr_assert_neq(memcmp(nn_params_tensor(pa, 0)->data, nn_params_tensor(nn_model_params(d), 0)->data,
                       6 * sizeof(float)),
                0);
  nn_optimizer_free(oa), nn_optimizer_free(ob), nn_optimizer_free(oc), nn_optimizer_free(od);
  nn_model_free(a), nn_model_free(b), nn_model_free(c), nn_model_free(d);
  ad_tensor_free(x), ad_tensor_free(y);
}

/* nn_fit steps a schedule with step_per_batch after every batch: 3 epochs
 * of 4 batches end at step 12 = total_steps; a 4th epoch steps past it. */
Test(sched, onecycle_in_fit_steps_per_batch) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t xs[2] = {20, 3}, ys[2] = {20, 2};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, xs, -1, 1),
            *y = ad_rand(ctx, &rng, AD_F32, 2, ys, -1, 1);
  nn_model *m;
  nn_optimizer *o = opt_of(&m, NN_OPT_SGD);
  nn_schedule_ext2 s = onecycle(0.1, 12);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK);
  nn_fit_opts fo = {.epochs = 3, .batch_size = 5, .verbose = -1};
  nn_history *h;
  cr_assert_eq(nn_fit(m, o, nn_mse_loss, x, y, &fo, &h), AD_OK, "%s", ad_last_error(ctx));
  for (int e = 0; e < 3; e++)
    cr_assert_eq(nn_history_get(h, "lr", e), nn_schedule_ext2_lr(&s, 0.1, 4 * e), "epoch %d", e);
  cr_assert_eq(ad_tensor_item(state_named(o, "sgd.schedule.epoch")), 12);
  cr_assert_eq(nn_optimizer_lr(o), nn_schedule_ext2_lr(&s, 0.1, 12));
  nn_history_free(h);
  fo.epochs = 1;
  cr_assert_eq(nn_fit(m, o, nn_mse_loss, x, y, &fo, &h), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "tried to step 14 times", NULL);
  nn_history_free(h);
  /* per epoch when step_per_batch is off */
  s.step_per_batch = false;
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK);
  fo.epochs = 2;
  cr_assert_eq(nn_fit(m, o, nn_mse_loss, x, y, &fo, &h), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_item(state_named(o, "sgd.schedule.epoch")), 2);
  nn_history_free(h);
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}

Test(sched, onecycle_bad_settings) {
  struct {
    nn_schedule_ext2 s;
    const char *why;
  } bad[20];
  int n = 0;
#define BAD(field, value, msg)                                                                     \
  do {                                                                                             \
    bad[n].s = onecycle(0.1, 10);                                                                  \
    bad[n].s.field = value;                                                                        \
    bad[n++].why = msg;                                                                            \
  } while (0)
  BAD(max_lr, NAN, "max_lr must be finite and >= 0");
  BAD(max_lr, -0.1, "max_lr must be finite and >= 0");
  BAD(max_lr, INFINITY, "max_lr must be finite and >= 0");
  BAD(total_steps, 0, "total_steps must be >= 1");
  BAD(total_steps, -3, "total_steps must be >= 1");
  BAD(pct_start, -0.1, "pct_start must be in [0, 1]");
  BAD(pct_start, 1.1, "pct_start must be in [0, 1]");
  BAD(pct_start, NAN, "pct_start must be in [0, 1]");
  BAD(anneal, (nn_anneal)2, "anneal must be NN_ANNEAL_COS or NN_ANNEAL_LINEAR");
  BAD(div_factor, 0, "div_factor must be finite and > 0");
  BAD(div_factor, NAN, "div_factor must be finite and > 0");
  BAD(final_div_factor, -1, "final_div_factor must be finite and > 0");
  BAD(final_div_factor, INFINITY, "final_div_factor must be finite and > 0");
  BAD(base_momentum, NAN, "base_momentum and max_momentum must be finite");
  BAD(pct_start, 0.1, "a step lands in a phase of length 0"); /* 0.1 * 10 - 1 = 0 */
  BAD(pct_start, 1.0, "a step lands in a phase of length 0"); /* the last phase at step 10 */
  BAD(size, 0, "size must be sizeof(nn_schedule_ext2)");
  BAD(size, sizeof(nn_schedule_ext2) + 8, "size must be sizeof(nn_schedule_ext2)");
#undef BAD
  bad[n].s = nn_schedule_ext2_defaults(NN_SCHED_ONECYCLE); /* max_lr not set */
  bad[n].s.total_steps = 10;
  bad[n++].why = "max_lr must be finite and >= 0";
  nn_model *m;
  nn_optimizer *o = opt_of(&m, NN_OPT_SGD);
  nn_schedule_ext2 good = onecycle(0.1, 10);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &good), AD_OK);
  cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
  double lr = nn_optimizer_lr(o), mom = cycled(o);
  for (int i = 0; i < n; i++) {
    cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &bad[i].s), AD_ERR_ARG, "case %d", i);
    test_expect_error(ctx, AD_ERR_ARG, "optimizer: bad schedule: ", bad[i].why, NULL);
    cr_assert(isnan(nn_schedule_ext2_lr(&bad[i].s, 0.1, 1)), "case %d", i);
    cr_assert(isnan(nn_schedule_ext2_momentum(&bad[i].s, 1)), "case %d", i);
    cr_assert_eq(nn_optimizer_lr(o), lr); /* unchanged */
    cr_assert_eq(cycled(o), mom);
    cr_assert_eq(nn_optimizer_schedule_ext2(o)->total_steps, 10);
  }
  /* the zero-length phases are those torch divides by: its neighbours work */
  good.pct_start = 0.2;
  cr_assert(!isnan(nn_schedule_ext2_lr(&good, 0.1, 10)));
  good.pct_start = 0.95;
  cr_assert(!isnan(nn_schedule_ext2_lr(&good, 0.1, 10)));
  good.pct_start = 0.3;
  cr_assert(isnan(nn_schedule_ext2_lr(&good, 0.1, -1)));
  cr_assert(isnan(nn_schedule_ext2_lr(NULL, 0.1, 1)));
  cr_assert(isnan(nn_schedule_ext2_momentum(NULL, 1)));
  cr_assert_eq(nn_optimizer_set_schedule_ext2(NULL, &good), AD_ERR_NULL);
  cr_assert_null(nn_optimizer_schedule_ext2(NULL));
  /* the older setters and rate functions have no room for its settings */
  nn_schedule_ext e = {.kind = NN_SCHED_ONECYCLE};
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, &e), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "kind 7", "use nn_optimizer_set_schedule_ext2", NULL);
  cr_assert(isnan(nn_schedule_ext_lr(&e, 0.1, 1)));
  nn_schedule old = {.kind = NN_SCHED_ONECYCLE};
  cr_assert_eq(nn_optimizer_set_schedule(o, &old), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "use nn_optimizer_set_schedule_ext2", NULL);
  cr_assert(isnan(nn_schedule_lr(&old, 0.1, 1)));
  cr_assert_eq(nn_optimizer_schedule_ext2(o)->total_steps, 10);
  nn_optimizer_free(o);
  nn_model_free(m);
}

/* cycle_momentum needs a momentum or beta1 to cycle, as PyTorch's check,
 * and momenta the optimizer accepts. */
Test(sched, onecycle_cycle_momentum_needs_momentum) {
  static const struct {
    nn_opt_kind kind;
    double momentum, base, max;
    const char *why;
  } bad[] = {
      {NN_OPT_ADAGRAD, 0, 0.85, 0.95,
       "optimizer adagrad: bad schedule: optimizer must support momentum with `cycle_momentum` "
       "option enabled"},
      {NN_OPT_SGD, 0, 0.85, 0.95, "optimizer sgd: bad schedule: cycle_momentum needs momentum > 0"},
      {NN_OPT_RMSPROP, 0, 0.85, 0.95,
       "optimizer rmsprop: bad schedule: cycle_momentum needs momentum > 0"},
      {NN_OPT_SGD, 0.9, 0, 0.95, "base_momentum and max_momentum must be > 0 for a momentum"},
      {NN_OPT_ADAM, 0, 0.85, 1, "base_momentum and max_momentum must be in [0, 1) for beta1"},
      {NN_OPT_NADAM, 0, -0.1, 0.9, "base_momentum and max_momentum must be in [0, 1) for beta1"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    nn_model *m = nn_sequential_new(ctx);
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 3, 2, &rng, NULL)), AD_OK);
    nn_opt_config c = nn_opt_defaults(bad[i].kind, 0.1);
    c.momentum = bad[i].momentum;
    nn_optimizer *o = nn_optimizer_new(nn_model_params(m), &c);
    nn_schedule_ext2 s = onecycle(0.1, 10);
    s.base_momentum = bad[i].base, s.max_momentum = bad[i].max;
    cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_ERR_ARG, "case %zu", i);
    test_expect_error(ctx, AD_ERR_ARG, bad[i].why, NULL);
    cr_assert_null(nn_optimizer_schedule_ext2(o));
    cr_assert_eq(nn_optimizer_lr(o), 0.1);
    s.cycle_momentum = false; /* the rate alone is fine */
    cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK, "case %zu", i);
    nn_optimizer_free(o);
    nn_model_free(m);
  }
}

/* ------------------------------ nn_schedule_ext2: CosineAnnealingWarmRestarts */

/* The optimizer (SGD, lr 0.1) follows s over n steps as PyTorch's
 * scheduler, and nn_schedule_ext2_lr agrees. */
static void follows2(const nn_schedule_ext2 *s, const double *want, int n, const char *what) {
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, s), AD_OK, "%s", ad_last_error(ctx));
  for (int t = 0; t < n; t++) {
    exact(nn_optimizer_lr(o), want[t], what, t);
    exact(nn_schedule_ext2_lr(s, 0.1, t), want[t], what, t);
    cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK, "%s", ad_last_error(ctx));
  }
  nn_optimizer_free(o);
  nn_model_free(m);
}

static nn_schedule_ext2 restarts(int64_t t_0, int64_t t_mult, double eta_min) {
  nn_schedule_ext2 s = nn_schedule_ext2_defaults(NN_SCHED_COSINE_RESTARTS);
  cr_assert_eq(s.t_mult, 1);
  cr_assert_eq(s.eta_min, 0);
  cr_assert(!s.step_per_batch);
  s.t_0 = t_0, s.t_mult = t_mult, s.eta_min = eta_min;
  return s;
}

/* the cases of tools/gen_sched2_fixtures.py */
Test(sched, cosine_restarts_matches_torch) {
  nn_schedule_ext2 s = restarts(10, 1, 0.001);
  follows2(&s, cwr_t10, LEN(cwr_t10), "T_0 10");
  cr_assert_eq(nn_schedule_ext2_lr(&s, 0.1, 30), nn_schedule_ext2_lr(&s, 0.1, 0)); /* restarted */
  s = restarts(3, 2, 0);
  follows2(&s, cwr_t3_mult2, LEN(cwr_t3_mult2), "T_0 3, T_mult 2");
  /* restarts at 3, 9, 21, 45 */
  for (int t = 3; t < 50; t = 2 * t + 3)
    cr_assert_eq(nn_schedule_ext2_lr(&s, 0.1, t), nn_schedule_ext2_lr(&s, 0.1, 0), "t %d", t);
  s = restarts(1, 3, 0.02);
  follows2(&s, cwr_t1_mult3, LEN(cwr_t1_mult3), "T_0 1, T_mult 3");
  /* far out, where a cycle's length would overflow int64: finite */
  s.t_mult = INT64_MAX;
  cr_assert(isfinite(nn_schedule_ext2_lr(&s, 0.1, INT64_MAX)));
}

/* s attached to oa and stepped k times, saved (with a) to file, attached
 * to ob and loaded (into b): ob goes on as torch's rates want[k .. n)
 * (exact; what names them). */
static void expect_resumes(nn_model *a, nn_optimizer *oa, nn_model *b, nn_optimizer *ob,
                           const nn_schedule_ext2 *s, int k, const char *file, const double *want,
                           int n, const char *what) {
  cr_assert_eq(nn_optimizer_set_schedule_ext2(oa, s), AD_OK);
  for (int t = 0; t < k; t++) cr_assert_eq(nn_optimizer_schedule_step(oa), AD_OK);
  const char *path = test_path(file);
  cr_assert_eq(nn_model_save(a, oa, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_optimizer_set_schedule_ext2(ob, s), AD_OK);
  cr_assert_eq(nn_model_load(b, ob, path), AD_OK, "%s", ad_last_error(ctx));
  for (int t = k; t < n; t++) {
    exact(nn_optimizer_lr(ob), want[t], what, t);
    cr_assert_eq(nn_optimizer_schedule_step(ob), AD_OK);
  }
}

/* Saved mid-cycle, resumed into an optimizer with the same schedule. */
Test(sched, cosine_restarts_resumes) {
  nn_schedule_ext2 s = restarts(3, 2, 0);
  nn_model *a, *b;
  nn_optimizer *oa = sgd(&a), *ob = sgd(&b);
  expect_resumes(a, oa, b, ob, &s, 13, "cwr.safetensors", cwr_t3_mult2, LEN(cwr_t3_mult2),
                 "resumed restarts");
  nn_optimizer_free(oa), nn_optimizer_free(ob);
  nn_model_free(a), nn_model_free(b);
}

Test(sched, cosine_restarts_bad_settings) {
  struct {
    nn_schedule_ext2 s;
    const char *why;
  } bad[] = {
      {restarts(0, 1, 0), "t_0 must be >= 1"},
      {restarts(-2, 1, 0), "t_0 must be >= 1"},
      {restarts(5, 0, 0), "t_mult must be >= 1"},
      {restarts(5, -1, 0), "t_mult must be >= 1"},
      {restarts(5, 1, -0.1), "eta_min must be finite and >= 0"},
      {restarts(5, 1, NAN), "eta_min must be finite and >= 0"},
      {restarts(5, 1, INFINITY), "eta_min must be finite and >= 0"},
  };
  bad[0].s.t_0 = 0; /* also the default: T_0 has none */
  cr_assert_eq(nn_schedule_ext2_defaults(NN_SCHED_COSINE_RESTARTS).t_0, 0);
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  for (int i = 0; i < LEN(bad); i++) {
    cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &bad[i].s), AD_ERR_ARG, "case %d", i);
    test_expect_error(ctx, AD_ERR_ARG, "optimizer: bad schedule: ", bad[i].why, NULL);
    cr_assert(isnan(nn_schedule_ext2_lr(&bad[i].s, 0.1, 1)), "case %d", i);
    cr_assert_null(nn_optimizer_schedule_ext2(o));
    cr_assert_eq(nn_optimizer_lr(o), 0.1);
  }
  nn_schedule_ext e = {.kind = NN_SCHED_COSINE_RESTARTS, .eta_min = 0};
  cr_assert_eq(nn_optimizer_set_schedule_ext(o, &e), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "use nn_optimizer_set_schedule_ext2", NULL);
  cr_assert(isnan(nn_schedule_ext_lr(&e, 0.1, 0)));
  nn_optimizer_free(o);
  nn_model_free(m);
}

/* ------------------------- nn_schedule_ext2: ConstantLR and PolynomialLR */

static nn_schedule_ext2 constant_factor(double factor, int64_t total_iters) {
  nn_schedule_ext2 s = nn_schedule_ext2_defaults(NN_SCHED_CONSTANT_FACTOR);
  s.factor = factor, s.total_iters = total_iters;
  return s;
}

static nn_schedule_ext2 polynomial(int64_t total_iters, double power) {
  nn_schedule_ext2 s = nn_schedule_ext2_defaults(NN_SCHED_POLYNOMIAL);
  s.total_iters = total_iters, s.power = power;
  return s;
}

/* the cases of tools/gen_sched2_fixtures.py */
Test(sched, constant_factor_and_polynomial_match_torch) {
  nn_schedule_ext2 d = nn_schedule_ext2_defaults(NN_SCHED_CONSTANT_FACTOR);
  cr_assert(d.factor == 1.0 / 3 && d.total_iters == 5);
  follows2(&d, const_defaults, LEN(const_defaults), "ConstantLR defaults");
  nn_schedule_ext2 s = constant_factor(0.3, 7);
  follows2(&s, const_03_7, LEN(const_03_7), "ConstantLR 0.3, 7");
  d = nn_schedule_ext2_defaults(NN_SCHED_POLYNOMIAL);
  cr_assert(d.power == 1 && d.total_iters == 5);
  follows2(&d, poly_defaults, LEN(poly_defaults), "PolynomialLR defaults");
  s = polynomial(20, 2);
  follows2(&s, poly_20_2, LEN(poly_20_2), "PolynomialLR 20, 2");
  cr_assert_eq(nn_schedule_ext2_lr(&s, 0.1, 20), 0);
  s = polynomial(13, 0.5);
  follows2(&s, poly_13_half, LEN(poly_13_half), "PolynomialLR 13, 0.5");
  s = polynomial(7, 0);
  follows2(&s, poly_7_0, LEN(poly_7_0), "PolynomialLR 7, 0");
}

/* PolynomialLR steps from the current rate (PyTorch's chained form): a
 * checkpoint resumes it, and a plateau's halving carries on. */
Test(sched, polynomial_chains_from_the_current_rate) {
  nn_schedule_ext2 s = polynomial(20, 2);
  nn_model *a, *b;
  nn_optimizer *oa = sgd(&a), *ob = sgd(&b);
  expect_resumes(a, oa, b, ob, &s, 8, "poly.safetensors", poly_20_2, LEN(poly_20_2),
                 "resumed polynomial");
  /* a halving at step 8: each later rate is half torch's unreduced one */
  nn_plateau p = nn_plateau_defaults();
  p.patience = 0, p.factor = 0.5, p.eps = 0;
  cr_assert_eq(nn_optimizer_set_plateau(oa, &p), AD_OK);
  cr_assert_eq(nn_optimizer_plateau_step(oa, 1), AD_OK);
  cr_assert_eq(nn_optimizer_plateau_step(oa, 1), AD_OK);
  for (int t = 8; t < 15; t++) {
    near(nn_optimizer_lr(oa), poly_20_2[t] / 2, "polynomial after a halving", t);
    cr_assert_eq(nn_optimizer_schedule_step(oa), AD_OK);
  }
  nn_optimizer_free(oa), nn_optimizer_free(ob);
  nn_model_free(a), nn_model_free(b);
}

Test(sched, constant_factor_and_polynomial_bad_settings) {
  struct {
    nn_schedule_ext2 s;
    const char *why;
  } bad[] = {
      {constant_factor(0, 5), "factor must be in (0, 1]"},
      {constant_factor(1.5, 5), "factor must be in (0, 1]"},
      {constant_factor(-0.5, 5), "factor must be in (0, 1]"},
      {constant_factor(NAN, 5), "factor must be in (0, 1]"},
      {constant_factor(0.5, 0), "total_iters must be >= 1"},
      {polynomial(0, 1), "total_iters must be >= 1"},
      {polynomial(-4, 1), "total_iters must be >= 1"},
      {polynomial(5, -1), "power must be finite and >= 0"},
      {polynomial(5, NAN), "power must be finite and >= 0"},
      {polynomial(5, INFINITY), "power must be finite and >= 0"},
  };
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  for (int i = 0; i < LEN(bad); i++) {
    cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &bad[i].s), AD_ERR_ARG, "case %d", i);
    test_expect_error(ctx, AD_ERR_ARG, "optimizer: bad schedule: ", bad[i].why, NULL);
    cr_assert(isnan(nn_schedule_ext2_lr(&bad[i].s, 0.1, 1)), "case %d", i);
    cr_assert_null(nn_optimizer_schedule_ext2(o));
    cr_assert_eq(nn_optimizer_lr(o), 0.1);
  }
  nn_optimizer_free(o);
  nn_model_free(m);
}

/* -------------------- nn_schedule_ext2: LambdaLR and MultiplicativeLR */

/* the functions of tools/gen_sched2_fixtures.py; ud counts the calls */
static double f_pow(int64_t e, void *ud) {
  ++*(int *)ud;
  return pow(0.95, (double)e);
}
static double f_warm(int64_t e, void *ud) {
  (void)ud;
  return fmin(1.0, (double)(e + 1) / 4) / (double)(1 + e / 10);
}
static double f_const(int64_t e, void *ud) {
  (void)e, (void)ud;
  return 0.95;
}
static double f_every3(int64_t e, void *ud) {
  (void)ud;
  return e % 3 == 0 ? 0.7 : 1.0;
}
/* *ud at step *ud (0: at once), else 1 */
static double f_bad_at(int64_t e, void *ud) {
  const double *bad = ud;
  return e == (int64_t)bad[0] ? bad[1] : 1.0;
}

static nn_schedule_ext2 lambda_of(nn_sched_kind kind, nn_lr_lambda_fn f, void *ud) {
  nn_schedule_ext2 s = nn_schedule_ext2_defaults(kind);
  s.lr_lambda = f, s.lambda_ud = ud;
  return s;
}

Test(sched, lambda_and_multiplicative_match_torch) {
  int calls = 0;
  nn_schedule_ext2 s = lambda_of(NN_SCHED_LAMBDA, f_pow, &calls);
  follows2(&s, lambda_pow, LEN(lambda_pow), "LambdaLR 0.95^e");
  cr_assert(calls >= 2 * LEN(lambda_pow), "the user data reaches lr_lambda: %d calls", calls);
  s = lambda_of(NN_SCHED_LAMBDA, f_warm, NULL);
  follows2(&s, lambda_warm, LEN(lambda_warm), "LambdaLR warm-up and steps");
  s = lambda_of(NN_SCHED_MULTIPLICATIVE, f_const, NULL);
  follows2(&s, mult_const, LEN(mult_const), "MultiplicativeLR 0.95");
  s = lambda_of(NN_SCHED_MULTIPLICATIVE, f_every3, NULL);
  follows2(&s, mult_every3, LEN(mult_every3), "MultiplicativeLR 0.7 every 3");
}

/* MultiplicativeLR chains from the current rate: a checkpoint resumes it */
Test(sched, multiplicative_resumes) {
  nn_schedule_ext2 s = lambda_of(NN_SCHED_MULTIPLICATIVE, f_every3, NULL);
  nn_model *a, *b;
  nn_optimizer *oa = sgd(&a), *ob = sgd(&b);
  expect_resumes(a, oa, b, ob, &s, 10, "mult.safetensors", mult_every3, LEN(mult_every3),
                 "resumed multiplicative");
  nn_optimizer_free(oa), nn_optimizer_free(ob);
  nn_model_free(a), nn_model_free(b);
}

/* lr_lambda NULL; a factor that makes the rate negative or not finite:
 * at step 0 refused on attaching (and by set_lr), later by the step, the
 * optimizer unchanged. */
Test(sched, lambda_bad_settings_and_factors) {
  nn_model *m;
  nn_optimizer *o = sgd(&m);
  for (int k = 0; k < 2; k++) {
    nn_schedule_ext2 s = lambda_of(k ? NN_SCHED_MULTIPLICATIVE : NN_SCHED_LAMBDA, NULL, NULL);
    cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_ERR_ARG);
    test_expect_error(ctx, AD_ERR_ARG, "optimizer: bad schedule: lr_lambda is NULL", NULL);
    cr_assert(isnan(nn_schedule_ext2_lr(&s, 0.1, 1)));
    cr_assert_null(nn_optimizer_schedule_ext2(o));
  }
  double at0[2] = {0, -1};
  nn_schedule_ext2 s = lambda_of(NN_SCHED_LAMBDA, f_bad_at, at0);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "its rate at epoch 0 from lr 0.1 is -0.1; it must be finite",
                    NULL);
  cr_assert_null(nn_optimizer_schedule_ext2(o));
  cr_assert_eq(nn_optimizer_lr(o), 0.1);
  const double bad[3] = {NAN, -2, INFINITY};
  for (int k = 0; k < 2; k++)
    for (int i = 0; i < 3; i++) {
      double at3[2] = {3, bad[i]};
      s = lambda_of(k ? NN_SCHED_MULTIPLICATIVE : NN_SCHED_LAMBDA, f_bad_at, at3);
      cr_assert_eq(nn_optimizer_set_lr(o, 0.1), AD_OK);
      cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK);
      for (int t = 0; t < 2; t++) cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
      cr_assert_eq(nn_optimizer_schedule_step(o), AD_ERR_NAN, "kind %d, factor %g", k, bad[i]);
      test_expect_error(ctx, AD_ERR_NAN, "the schedule's learning rate at epoch 3", NULL);
      cr_assert_eq(nn_optimizer_lr(o), 0.1);
      cr_assert_eq(ad_tensor_item(state_named(o, "sgd.schedule.epoch")), 2);
      cr_assert_eq(nn_optimizer_set_schedule_ext2(o, NULL), AD_OK);
    }
  /* set_lr refuses a base whose rate at step 0 is negative */
  double half[2] = {0, 0.5};
  s = lambda_of(NN_SCHED_LAMBDA, f_bad_at, half);
  cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK);
  cr_assert_eq(nn_optimizer_lr(o), 0.05);
  half[1] = -1;
  cr_assert_eq(nn_optimizer_set_lr(o, 0.2), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "set_lr: the schedule's rate at epoch 0 from lr 0.2 is -0.2",
                    NULL);
  cr_assert_eq(nn_optimizer_lr(o), 0.05);
  nn_optimizer_free(o);
  nn_model_free(m);
}

/* ReduceLROnPlateau (patience 1, factor 0.5, a metric that only grows:
 * halvings at the end of epochs 2, 5, 8, ...) with the kinds of
 * nn_schedule_ext2: the chained ones go on from the reduced rate as
 * PyTorch 1.13's (values from torch: scheduler.step() then
 * plateau.step(e) per epoch); lambda keeps the reduction, which PyTorch's
 * LambdaLR drops at its next step (as nn.h says). */
static double f_recip(int64_t e, void *ud) {
  (void)ud;
  return 1.0 / (1.0 + (double)e);
}

Test(sched, plateau_with_ext2_kinds) {
  static const double want[3][12] = {
      {0.050000000000000003, 0.050000000000000003, 0.050000000000000003, 0.025000000000000001,
       0.025000000000000001, 0.012500000000000001, 0.025000000000000001, 0.012500000000000001,
       0.012500000000000001, 0.0062500000000000003, 0.0062500000000000003, 0.0031250000000000002},
      {0.10000000000000001, 0.076072577431273089, 0.054433105395181758, 0.017677669529663691,
       0.0096225044864937659, 0.0017010345435994288, 0, 0, 0, 0, 0, 0},
      {0.10000000000000001, 0.050000000000000003, 0.016666666666666666, 0.0020833333333333333,
       0.00041666666666666669, 3.4722222222222222e-05, 4.9603174603174603e-06,
       3.1001984126984127e-07, 3.444664902998236e-08, 3.4446649029982364e-09,
       3.1315135481802149e-10, 2.6095946234835123e-11}};
  nn_sched_kind kinds[4] = {NN_SCHED_CONSTANT_FACTOR, NN_SCHED_POLYNOMIAL, NN_SCHED_MULTIPLICATIVE,
                            NN_SCHED_LAMBDA};
  for (int k = 0; k < 4; k++) {
    nn_model *m;
    nn_optimizer *o = sgd(&m);
    nn_schedule_ext2 s = nn_schedule_ext2_defaults(kinds[k]);
    s.factor = 0.5, s.total_iters = 6, s.power = 1.5, s.lr_lambda = f_recip;
    cr_assert_eq(nn_optimizer_set_schedule_ext2(o, &s), AD_OK, "%s", ad_last_error(ctx));
    nn_plateau p = nn_plateau_defaults();
    p.patience = 1, p.factor = 0.5;
    cr_assert_eq(nn_optimizer_set_plateau(o, &p), AD_OK);
    for (int e = 0; e < 12; e++) {
      if (k < 3) exact(nn_optimizer_lr(o), want[k][e], "plateau with a chained kind", e);
      if (k == 3 && e == 3) exact(nn_optimizer_lr(o), 0.0125, "lambda, reduced", e);
      if (k == 3 && e == 4) exact(nn_optimizer_lr(o), 0.01, "lambda keeps the reduction", e);
      cr_assert_eq(nn_optimizer_schedule_step(o), AD_OK);
      cr_assert_eq(nn_optimizer_plateau_step(o, (double)e), AD_OK);
    }
    nn_optimizer_free(o);
    nn_model_free(m);
  }
}
