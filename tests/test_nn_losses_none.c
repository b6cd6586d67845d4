/* test_nn_losses_none.c: reduction NN_NONE (PyTorch's reduction='none')
 * for every loss of nn.h against PyTorch 1.13: the unreduced loss's shape
 * and elements, and the gradients of sum(loss * W) for fixed weights W, in
 * f64 and f32 (tools/gen_losses_none_fixtures.py); gradcheck and
 * gradgradcheck of the per-element forms; the per-element losses reduced
 * by hand against NN_MEAN and NN_SUM (the fused cross-entropy against its
 * composition); empty batches; the reductions still refused (NN_BATCHMEAN
 * but for kl_div, values out of the enum); and nn_train_step, nn_evaluate
 * and nn_fit refusing a loss that is not reduced. */
#include "nn.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_CTX_SUITE(losses_none);

typedef enum kind {
  MSE,
  L1,
  SMOOTH,
  HUBER,
  KL,
  GAUSS,
  POISSON,
  MR,
  HINGE,
  SOFT,
  COS,
  TRIP,
  MLSM,
  MM,
  BCE,
  BCE_EXT,
  BCEL,
  BCEL_EXT,
  CE,
  NLL,
  CE_EXT,
  NLL_EXT,
  SEQ,
  NKINDS
} kind;

/* One input of a case: shape, values (NULL: an absent optional tensor,
 * passed as NULL), whether it requires a gradient, whether it is i32
 * labels. */
typedef struct none_input {
  int ndim;
  int64_t shape[3];
  const double *v;
  bool grad;
  bool labels;
} none_input;

/* A case of tools/gen_losses_none_fixtures.py. a is the margin, beta,
 * delta or label smoothing; f1 is log_target (KL), full (Gaussian),
 * log_input (Poisson) or swap (triplet), f2 Poisson's full. The loss has
 * shape out; want[d] (d = 0 f64, 1 f32) holds its elements, then the
 * gradients of sum(loss * w) of the inputs that require one, in order. */
typedef struct none_case {
  const char *name;
  kind k;
  double a, p, eps;
  bool f1, f2;
  bool ignore;
  int32_t ignore_index;
  bool class_last;
  int nin;
  none_input in[4];
  int out_ndim;
  int64_t out[3];
  const double *w;
  const double *want[2];
} none_case;

/* The PyTorch values:
 * `/usr/bin/python3 tools/gen_losses_none_fixtures.py > tests/losses_none_fixtures.h`
 * (its docstring says what each array holds). */
#include "losses_none_fixtures.h"

#define NCASES (int)(sizeof NONE_CASES / sizeof NONE_CASES[0])

/* --------------------------------------------------------------- helpers */

static ad_tensor *call(ad_ctx *c, const none_case *nc, ad_tensor *const *in, nn_reduction red) {
  nn_cross_entropy_opts co = {.weight = nc->nin > 2 ? in[2] : NULL,
                              .label_smoothing = nc->a,
                              .ignore = nc->ignore,
                              .ignore_index = nc->ignore_index,
                              .class_last = nc->class_last};
  nn_sequence_ce_opts so = {
      .ignore = nc->ignore, .ignore_index = nc->ignore_index, .class_last = nc->class_last};
  nn_bce_opts bo = {.weight = nc->nin > 2 ? in[2] : NULL, .pos_weight = nc->nin > 3 ? in[3] : NULL};
  switch (nc->k) {
  case MSE:
    return nn_mse_loss(c, in[0], in[1], red);
  case L1:
    return nn_l1_loss(c, in[0], in[1], red);
  case SMOOTH:
    return nn_smooth_l1_loss_beta(c, in[0], in[1], red, nc->a);
  case HUBER:
    return nn_huber_loss_delta(c, in[0], in[1], red, nc->a);
  case KL:
    return nn_kl_div_loss(c, in[0], in[1], red, nc->f1);
  case GAUSS:
    return nn_gaussian_nll_loss(c, in[0], in[1], in[2], nc->f1, nc->eps, red);
  case POISSON:
    return nn_poisson_nll_loss(c, in[0], in[1], nc->f1, nc->f2, nc->eps, red);
  case MR:
    return nn_margin_ranking_loss(c, in[0], in[1], in[2], nc->a, red);
  case HINGE:
    return nn_hinge_embedding_loss(c, in[0], in[1], nc->a, red);
  case SOFT:
    return nn_soft_margin_loss(c, in[0], in[1], red);
  case COS:
    return nn_cosine_embedding_loss(c, in[0], in[1], in[2], nc->a, red);
  case TRIP:
    return nn_triplet_margin_loss(c, in[0], in[1], in[2], nc->a, nc->p, nc->eps, nc->f1, red);
  case MLSM:
    return nn_multilabel_soft_margin_loss(c, in[0], in[1], nc->nin > 2 ? in[2] : NULL, red);
  case MM:
    return nn_multi_margin_loss(c, in[0], in[1], (int)nc->p, nc->a, nc->nin > 2 ? in[2] : NULL,
                                red);
  case BCE:
    return nn_bce_loss(c, in[0], in[1], red);
  case BCE_EXT:
    return nn_bce_loss_ext(c, in[0], in[1], red, &bo);
  case BCEL:
    return nn_bce_with_logits_loss(c, in[0], in[1], red);
  case BCEL_EXT:
    return nn_bce_with_logits_loss_ext(c, in[0], in[1], red, &bo);
  case CE:
    return nn_cross_entropy_loss(c, in[0], in[1], red);
  case NLL:
    return nn_nll_loss(c, in[0], in[1], red);
  case CE_EXT:
    return nn_cross_entropy_loss_ext(c, in[0], in[1], red, &co);
  case NLL_EXT:
    co.label_smoothing = 0;
    return nn_nll_loss_ext(c, in[0], in[1], red, &co);
  case SEQ:
    return nn_sequence_cross_entropy_loss(c, in[0], in[1], red, &so);
  case NKINDS:
    break;
  }
  return NULL;
}

static ad_tensor *vec(ad_dtype dt, int ndim, const int64_t *shape, const double *v) {
  ad_tensor *t = ad_zeros(ctx, dt, ndim, shape);
  cr_assert_not_null(t);
  for (int64_t i = 0; i < t->size; i++) ad_tensor_set(t, i, v[i]);
  return t;
}

/* The inputs of nc in dtype dt (labels i32; absent ones NULL). */
static void make_inputs(const none_case *nc, ad_dtype dt, ad_tensor **in) {
  for (int j = 0; j < 4; j++) in[j] = NULL;
  for (int j = 0; j < nc->nin; j++) {
    const none_input *pi = &nc->in[j];
    if (!pi->v) continue;
    in[j] = vec(pi->labels ? AD_I32 : dt, pi->ndim, pi->shape, pi->v);
    ad_tensor_set_requires_grad(in[j], pi->grad);
  }
}

static void free_inputs(ad_tensor **in) {
  for (int j = 0; j < 4; j++) ad_tensor_free(in[j]);
}

/* got matches torch's want: both NaN, the same infinity, or within rtol
 * plus atol; a zero loss with torch's sign when sign is set. */
static void expect_close(double got, double want, double rtol, double atol, const char *what,
                         int64_t i, bool sign) {
  if (sign && want == 0)
    cr_assert(got == 0 && !signbit(got) == !signbit(want), "%s %lld: %g, torch %g", what,
              (long long)i, got, want);
  else if (isnan(want) || isinf(want))
    cr_assert(isnan(want) ? isnan(got) : got == want, "%s %lld: %.17g, torch %.17g", what,
              (long long)i, got, want);
  else
    cr_assert(fabs(got - want) <= rtol * fabs(want) + atol, "%s %lld: %.17g, torch %.17g", what,
              (long long)i, got, want);
}

/* ------------------------------------------------------- against PyTorch */

/* Case nc in dtype d (0 f64, 1 f32): the shape and elements of the loss
 * with NN_NONE, and the gradients of sum(loss * W). */
static void check_case(const none_case *nc, int d) {
  ad_dtype dt = d ? AD_F32 : AD_F64;
  ad_tape_reset(ctx);
  ad_tensor *in[4];
  make_inputs(nc, dt, in);
  ad_tensor *l = call(ctx, nc, in, NN_NONE);
  cr_assert_not_null(l, "%s: %s", nc->name, ad_last_error(ctx));
  cr_assert_eq(l->ndim, nc->out_ndim, "%s: %d dims, torch %d", nc->name, l->ndim, nc->out_ndim);
  for (int k = 0; k < l->ndim; k++)
    cr_assert_eq(l->shape[k], nc->out[k], "%s: dim %d is %lld, torch %lld", nc->name, k,
                 (long long)l->shape[k], (long long)nc->out[k]);
  cr_assert_eq(l->dtype, dt, "%s", nc->name);
  const double *want = nc->want[d];
  double rtol = d ? 3e-6 : 1e-13, atol = d ? 1e-6 : 1e-15;
  char what[160];
  snprintf(what, sizeof what, "%s %s loss", nc->name, d ? "f32" : "f64");
  for (int64_t i = 0; i < l->size; i++)
    expect_close(ad_tensor_get(l, i), want[i], rtol, atol, what, i, true);
  ad_tensor *w = vec(dt, l->ndim, l->shape, nc->w);
  ad_tensor *s = ad_sum(ctx, ad_mul(ctx, l, w));
  cr_assert_not_null(s, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, s, NULL), AD_OK, "%s: %s", nc->name, ad_last_error(ctx));
  int64_t at = l->size;
  for (int j = 0; j < nc->nin; j++) {
    if (!in[j] || !nc->in[j].grad) continue;
    snprintf(what, sizeof what, "%s %s d/dinput%d", nc->name, d ? "f32" : "f64", j);
    cr_assert_not_null(in[j]->grad, "%s", what);
    for (int64_t i = 0; i < in[j]->size; i++) {
      double wv = want[at + i];
      expect_close(ad_tensor_get(in[j]->grad, i), wv, rtol, atol * (fabs(wv) > 1 ? fabs(wv) : 1),
                   what, i, false);
    }
    at += in[j]->size;
  }
  ad_tensor_free(w);
  free_inputs(in);
}

/* Every case of the fixture, both dtypes; every loss kind has one. */
Test(losses_none, values_and_gradients_match_torch) {
  bool seen[NKINDS] = {false};
  for (int c = 0; c < NCASES; c++) {
    seen[NONE_CASES[c].k] = true;
    for (int d = 0; d < 2; d++) check_case(&NONE_CASES[c], d);
  }
  for (int k = 0; k < NKINDS; k++) cr_assert(seen[k], "loss kind %d has no case", k);
}

/* The per-element losses reduced here agree with NN_SUM, and with NN_MEAN
 * (their mean; for the class losses with labels, their sum over the sum of
 * w_y of the positions kept, as PyTorch divides): NN_NONE and the fused
 * cross-entropy, which has no per-position form, meet. */
Test(losses_none, reduced_by_hand_matches_mean_and_sum) {
  for (int c = 0; c < NCASES; c++) {
    const none_case *nc = &NONE_CASES[c];
    ad_tape_reset(ctx);
    ad_tensor *in[4];
    make_inputs(nc, AD_F64, in);
    ad_tensor *l = call(ctx, nc, in, NN_NONE);
    ad_tensor *sum = call(ctx, nc, in, NN_SUM), *mean = call(ctx, nc, in, NN_MEAN);
    cr_assert(l && sum && mean, "%s: %s", nc->name, ad_last_error(ctx));
    double s = 0;
    for (int64_t i = 0; i < l->size; i++) s += ad_tensor_get(l, i);
    double den = (double)l->size;
    bool labels = nc->nin > 1 && nc->in[1].labels && nc->k != MM;
    if (labels && (nc->ignore || (nc->nin > 2 && in[2]))) {
      den = 0;
      for (int64_t i = 0; i < in[1]->size; i++) {
        int32_t y = (int32_t)ad_tensor_get(in[1], i);
        if (nc->ignore && y == nc->ignore_index) continue;
        den += nc->nin > 2 && in[2] ? ad_tensor_get(in[2], y) : 1.0;
      }
    }
    double gs = ad_tensor_item(sum), gm = ad_tensor_item(mean);
    cr_assert(test_close(gs, s, 1e-12 * (1 + fabs(s))), "%s: sum %.17g, by hand %.17g", nc->name,
              gs, s);
    cr_assert(test_close(gm, s / den, 1e-12 * (1 + fabs(gm))), "%s: mean %.17g, by hand %.17g",
              nc->name, gm, s / den);
    free_inputs(in);
  }
}

/* An empty batch gives an empty loss of PyTorch's shape ([0]; torch's
 * tensor([])), with no error, and a gradient of zeros. */
Test(losses_none, empty_batch_gives_an_empty_loss) {
  int64_t z0[2] = {0, 4}, n0 = 0;
  ad_tensor *z = ad_zeros(ctx, AD_F64, 2, z0), *lab = ad_zeros(ctx, AD_I32, 1, &n0);
  ad_tensor_set_requires_grad(z, true);
  ad_tensor *ls[4] = {nn_cross_entropy_loss(ctx, z, lab, NN_NONE),
                      nn_nll_loss(ctx, z, lab, NN_NONE), nn_cross_entropy_loss(ctx, z, z, NN_NONE),
                      nn_mse_loss(ctx, z, z, NN_NONE)};
  for (int k = 0; k < 4; k++) {
    cr_assert_not_null(ls[k], "%d: %s", k, ad_last_error(ctx));
    cr_assert_eq(ls[k]->size, 0);
    cr_assert_eq(ls[k]->shape[0], 0, "%d", k);
    cr_assert_eq(ls[k]->ndim, k == 3 ? 2 : 1, "%d", k);
  }
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ls[0]), NULL), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor_free(z), ad_tensor_free(lab);
}

/* ------------------------------------------------------------- gradcheck */

typedef struct gc_case {
  const none_case *nc;
  ad_tensor *all[4]; /* the inputs; those that require a gradient come from in */
} gc_case;

static ad_tensor *gc_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  const gc_case *g = ud;
  ad_tensor *all[4];
  for (int j = 0, k = 0; j < 4; j++)
    all[j] = g->all[j] && j < g->nc->nin && g->nc->in[j].grad && k < n ? in[k++] : g->all[j];
  return call(c, g->nc, all, NN_NONE);
}

/* First and second order of the unreduced losses that are smooth at the
 * fixture's inputs (no kink, clamp or zero vector within the step), the
 * output's cotangent random: each element's gradient on its own. */
Test(losses_none, gradcheck_and_gradgradcheck) {
  const char *names[] = {"mse",
                         "kl_div log_target",
                         "gaussian homo [3]",
                         "poisson log_input",
                         "soft_margin",
                         "multilabel_soft_margin weight",
                         "bce_with_logits weight pos_weight",
                         "cross_entropy labels",
                         "cross_entropy probabilities",
                         "ce_ext weight smoothing ignore 1 [2,4,3]",
                         "ce_ext probabilities weight smoothing [2,4,3]",
                         "sequence class_last [2,3,4] ignore 0",
                         "nll_ext weight ignore 2 [2,4,3]",
                         "triplet [2,3,4]"};
  for (size_t q = 0; q < sizeof names / sizeof names[0]; q++) {
    const none_case *nc = NULL;
    for (int c = 0; c < NCASES; c++)
      if (!strcmp(NONE_CASES[c].name, names[q])) nc = &NONE_CASES[c];
    cr_assert_not_null(nc, "%s", names[q]);
    ad_tape_reset(ctx);
    gc_case g = {nc, {NULL}};
    make_inputs(nc, AD_F64, g.all);
    ad_tensor *in[4];
    int n = 0;
    for (int j = 0; j < nc->nin; j++)
      if (g.all[j] && nc->in[j].grad) in[n++] = g.all[j];
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(ctx, gc_fn, &g, n, in, NULL, &rep), AD_OK, "%s: %s", nc->name,
                 ad_last_error(ctx));
    cr_assert(rep.passed, "%s: input %d index %lld: analytic %g numeric %g", nc->name, rep.input,
              (long long)rep.index, rep.analytic, rep.numeric);
    cr_assert_gt(rep.checked, 0);
    cr_assert_eq(ad_gradgradcheck(ctx, gc_fn, &g, n, in, NULL, &rep), AD_OK, "%s: %s", nc->name,
                 ad_last_error(ctx));
    cr_assert(rep.passed, "%s (2nd order): input %d index %lld: %g numeric %g", nc->name, rep.input,
              (long long)rep.index, rep.analytic, rep.numeric);
    free_inputs(g.all);
  }
}

/* ---------------------------------------------------------------- misuse */

/* The name each loss gives itself in its messages, by kind. */
static const char *const fn_names[NKINDS] = {"mse_loss: ",
                                             "l1_loss: ",
                                             "smooth_l1_loss: ",
                                             "huber_loss: ",
                                             "kl_div_loss: ",
                                             "gaussian_nll_loss: ",
                                             "poisson_nll_loss: ",
                                             "margin_ranking_loss: ",
                                             "hinge_embedding_loss: ",
                                             "soft_margin_loss: ",
                                             "cosine_embedding_loss: ",
                                             "triplet_margin_loss: ",
                                             "multilabel_soft_margin_loss: ",
                                             "multi_margin_loss: ",
                                             "bce_loss: ",
                                             "bce_loss: ",
                                             "bce_with_logits_loss: ",
                                             "bce_with_logits_loss: ",
                                             "cross_entropy_loss: ",
                                             "nll_loss: ",
                                             "cross_entropy_loss: ",
                                             "nll_loss: ",
                                             "sequence_cross_entropy_loss: "};

/* Every loss still refuses NN_BATCHMEAN (but kl_div, which takes it) and
 * values outside the enum, NN_NONE + 1 and -1 included, naming itself. */
Test(losses_none, other_reductions_are_still_refused) {
  const nn_reduction bad[4] = {NN_BATCHMEAN, (nn_reduction)(NN_NONE + 1), (nn_reduction)-1,
                               (nn_reduction)77};
  bool seen[NKINDS] = {false};
  for (int c = 0; c < NCASES; c++) {
    const none_case *nc = &NONE_CASES[c];
    if (seen[nc->k]) continue;
    seen[nc->k] = true;
    ad_tape_reset(ctx);
    ad_tensor *in[4];
    make_inputs(nc, AD_F64, in);
    for (int b = 0; b < 4; b++) {
      ad_tensor *l = call(ctx, nc, in, bad[b]);
      if (b == 0 && nc->k == KL) {
        cr_assert_not_null(l, "%s", ad_last_error(ctx));
        continue;
      }
      cr_assert_null(l, "%s: reduction %d taken", nc->name, (int)bad[b]);
      char want[48];
      snprintf(want, sizeof want, "unknown reduction %d", (int)bad[b]);
      test_expect_error(ctx, AD_ERR_ARG, fn_names[nc->k],
                        b ? want : "reduction NN_BATCHMEAN is kl_div_loss's only", NULL);
    }
    free_inputs(in);
  }
}

/* NN_NONE does not pass over the loss's other checks: a bad shape, label
 * or option is still refused, as with NN_MEAN. */
Test(losses_none, other_errors_are_unchanged) {
  int64_t s34[2] = {3, 4}, s3 = 3, s5 = 5, s243[3] = {2, 4, 3}, s23[2] = {2, 3};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 2, s34), *y5 = ad_zeros(ctx, AD_F64, 1, &s5);
  ad_tensor *lab = ad_zeros(ctx, AD_I32, 1, &s3), *z3 = ad_zeros(ctx, AD_F64, 3, s243);
  ad_tensor *lab3 = ad_zeros(ctx, AD_I32, 2, s23);
  cr_assert_null(nn_mse_loss(ctx, x, y5, NN_NONE));
  test_expect_error(ctx, AD_ERR_SHAPE, "mse_loss", "differ in size", NULL);
  ad_tensor_set(lab, 1, 7);
  cr_assert_null(nn_cross_entropy_loss(ctx, x, lab, NN_NONE));
  test_expect_error(ctx, AD_ERR_ARG, "cross_entropy_loss: label 7 of sample 1 is outside 0..3",
                    NULL);
  cr_assert_null(nn_nll_loss(ctx, x, lab, NN_NONE));
  test_expect_error(ctx, AD_ERR_ARG, "nll_loss: label 7 of sample 1", NULL);
  ad_tensor_set(lab3, 4, 9);
  nn_sequence_ce_opts so = {.ignore = true, .ignore_index = -100};
  cr_assert_null(nn_sequence_cross_entropy_loss(ctx, z3, lab3, NN_NONE, &so));
  test_expect_error(ctx, AD_ERR_ARG, "sequence_cross_entropy_loss: label 9 at position 4", "[1,1]",
                    "outside 0..3 and is not ignore_index -100", NULL);
  nn_cross_entropy_opts co = {.label_smoothing = 1.5};
  cr_assert_null(nn_cross_entropy_loss_ext(ctx, z3, lab3, NN_NONE, &co));
  test_expect_error(ctx, AD_ERR_ARG, "cross_entropy_loss: label_smoothing 1.5", NULL);
  ad_tensor_set(lab3, 4, 1);
  co.label_smoothing = 0, co.ignore = true;
  cr_assert_null(nn_cross_entropy_loss_ext(ctx, z3, z3, NN_NONE, &co));
  test_expect_error(ctx, AD_ERR_ARG, "cross_entropy_loss: ignore_index applies to class labels",
                    NULL);
  cr_assert_null(nn_nll_loss(ctx, x, NULL, NN_NONE));
  test_expect_error(ctx, AD_ERR_NULL, "nll_loss", NULL);
  ad_tensor *gone = ad_zeros(ctx, AD_F64, 2, s34);
  ad_tensor_free(gone);
  cr_assert_null(nn_kl_div_loss(ctx, x, gone, NN_NONE, false));
  test_expect_error(ctx, AD_ERR_STATE, "kl_div_loss: target was freed", NULL);
  ad_tensor_free(x), ad_tensor_free(y5), ad_tensor_free(lab), ad_tensor_free(z3);
  ad_tensor_free(lab3);
}

/* ------------------------------------------------------------- training */

/* A loss function that ignores the reduction it is given and passes
 * NN_NONE: a tensor of per-element losses where a scalar is needed. */
static ad_tensor *mse_none(ad_ctx *c, ad_tensor *pred, ad_tensor *target, nn_reduction red) {
  (void)red;
  return nn_mse_loss(c, pred, target, NN_NONE);
}

/* nn_train_step, nn_evaluate and nn_fit need a scalar: an unreduced loss
 * is AD_ERR_SHAPE naming NN_NONE, and no parameter moves. */
Test(losses_none, training_refuses_an_unreduced_loss) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t xs[2] = {8, 3}, ys[2] = {8, 1};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 2, xs, -1, 1);
  ad_tensor *y = ad_rand(ctx, &rng, AD_F64, 2, ys, -1, 1);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 3, 1, &rng, &(nn_dense_opts){.dtype = AD_F64})),
               AD_OK);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0.0, false, 0.0);
  cr_assert_not_null(opt);
  ad_tensor *w = nn_params_tensor(nn_model_params(m), 0);
  double w0 = ad_tensor_get(w, 0);
  cr_assert_eq(nn_train_step(m, opt, mse_none, x, y, 0.0, NULL), AD_ERR_SHAPE);
  test_expect_error(ctx, AD_ERR_SHAPE, "train_step: the loss has shape [8,1]; a scalar is needed",
                    "NN_NONE", NULL);
  cr_assert_eq(ad_tensor_get(w, 0), w0);
  double lv = 0;
  cr_assert_eq(nn_evaluate(m, mse_none, x, y, 4, &lv, NULL), AD_ERR_SHAPE);
  test_expect_error(ctx, AD_ERR_SHAPE, "evaluate: the loss has shape [4,1]", "NN_NONE", NULL);
  nn_fit_opts fo = {.epochs = 2, .batch_size = 4, .seed = 1, .verbose = -1};
  cr_assert_eq(nn_fit(m, opt, mse_none, x, y, &fo, NULL), AD_ERR_SHAPE);
  test_expect_error(ctx, AD_ERR_SHAPE, "the loss has shape [4,1]", "NN_NONE", NULL);
  cr_assert_eq(ad_tensor_get(w, 0), w0);
  /* the same model trains with the loss reduced */
  cr_assert_eq(nn_train_step(m, opt, nn_mse_loss, x, y, 0.0, NULL), AD_OK, "%s",
               ad_last_error(ctx));
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x), ad_tensor_free(y);
}
