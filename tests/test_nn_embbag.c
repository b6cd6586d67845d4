/* test_nn_embbag.c: nn.EmbeddingBag (nn_embedding_bag_new / _forward,
 * nn_embedding_bag) and Embedding's max_norm, norm_type and
 * scale_grad_by_freq (nn_embedding_new_ext, nn_embedding_renorm) against
 * PyTorch 1.13 (tests/embbag_fixtures.h, written by
 * tools/gen_embbag_fixtures.py): outputs, the weight's and
 * per_sample_weights' gradients and the renormalised weights, in float64
 * (1e-12) and float32 (1e-5); gradcheck and gradgradcheck; the layers'
 * parameter, initialisation and repr; the errors. */
#include "nn.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

typedef struct embbag_case {
  const char *name;
  int emb; /* nn.Embedding (1) or EmbeddingBag (0) */
  int mode;
  bool padding;
  int64_t padding_idx;
  bool include_last_offset;
  double max_norm, norm_type;
  bool scale_grad_by_freq;
  int64_t num, dim;
  const double *w;
  int in_ndim;
  int64_t in_shape[2];
  const int32_t *in;
  int64_t n_off;
  const int64_t *off;
  const double *psw;
  int out_ndim;
  int64_t out_shape[3];
  const double *seed, *f64, *f32;
} embbag_case;

#include "embbag_fixtures.h"
#include "test_tensor_of.h"

static const embbag_case cases[] = {EMBBAG_CASES};

TEST_CTX_SUITE(embbag);

#define expect_error(...) test_expect_error(ctx, __VA_ARGS__)

/* n values of t against want from *at on (advanced), within tol relative
 * to max(1, |want|); NaN where PyTorch has NaN. */
static void expect_vals(const embbag_case *c, const char *what, const ad_tensor *t,
                        const double *want, int64_t *at, double tol) {
  cr_assert_not_null(t, "%s: %s: no tensor (%s)", c->name, what, ad_last_error(ctx));
  for (int64_t i = 0; i < t->size; i++) {
    double g = ad_tensor_get(t, i), w = want[*at + i];
    if (isnan(w)) {
      QUICK_ASSERT(isnan(g), "%s: %s[%lld] = %.17g, PyTorch NaN", c->name, what, (long long)i, g);
      continue;
    }
    QUICK_ASSERT(test_close(g, w, tol * fmax(1.0, fabs(w))), "%s: %s[%lld] = %.17g, PyTorch %.17g",
                 c->name, what, (long long)i, g, w);
  }
  *at += t->size;
}

static void run_case(const embbag_case *c, ad_dtype dt) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  nn_layer *l;
  if (c->emb) {
    nn_embedding_ext_opts o = {
        .base = {.padding = c->padding, .padding_idx = c->padding_idx, .dtype = dt},
        .max_norm = c->max_norm,
        .norm_type = c->norm_type,
        .scale_grad_by_freq = c->scale_grad_by_freq};
    l = nn_embedding_new_ext(ctx, c->num, c->dim, &rng, &o);
  } else {
    nn_embedding_bag_opts o = {.mode = (nn_bag_mode)c->mode,
                               .padding = c->padding,
                               .padding_idx = c->padding_idx,
                               .include_last_offset = c->include_last_offset,
                               .max_norm = c->max_norm,
                               .norm_type = c->norm_type,
                               .scale_grad_by_freq = c->scale_grad_by_freq,
                               .dtype = dt};
    l = nn_embedding_bag_new(ctx, c->num, c->dim, &rng, &o);
  }
  cr_assert_not_null(l, "%s: %s", c->name, ad_last_error(ctx));
  ad_tensor *w = nn_params_find(nn_layer_params(l), "weight");
  cr_assert(w && nn_params_count(nn_layer_params(l)) == 1, "PyTorch's one \"weight\"");
  int64_t ws[2] = {c->num, c->dim};
  ad_tensor *src = tensor_of(dt, 2, ws, c->w);
  cr_assert_eq(ad_tensor_copy_data(w, src), AD_OK);
  ad_tensor *in = ad_from_data(ctx, AD_I32, c->in_ndim, c->in_shape, c->in);
  ad_tensor *psw = c->psw ? tensor_of(dt, c->in_ndim, c->in_shape, c->psw) : NULL;
  if (psw) ad_tensor_set_requires_grad(psw, true);
  ad_tensor *y;
  if (c->emb || (!c->off && !psw))
    y = nn_layer_forward(l, in, true);
  else
    y = nn_embedding_bag_forward(l, in, c->off, c->n_off, psw);
  cr_assert_not_null(y, "%s: %s", c->name, ad_last_error(ctx));
  test_expect_shape(ctx, y, c->out_ndim, c->out_shape, c->name);
  ad_tensor *seed = tensor_of(dt, y->ndim, y->shape, c->seed);
  cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s: %s", c->name, ad_last_error(ctx));
  const double *want = dt == AD_F64 ? c->f64 : c->f32;
  double tol = dt == AD_F64 ? 1e-12 : 1e-5;
  int64_t at = 0;
  expect_vals(c, "out", y, want, &at, tol);
  expect_vals(c, "dweight", w->grad, want, &at, tol);
  if (psw) expect_vals(c, "dper_sample_weights", psw->grad, want, &at, tol);
  if (c->max_norm > 0) expect_vals(c, "renormalised weight", w, want, &at, tol);
  ad_tape_reset(ctx);
  nn_layer_free(l);
  ad_tensor_free(src), ad_tensor_free(in), ad_tensor_free(psw), ad_tensor_free(seed);
}

Test(embbag, matches_torch) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    run_case(&cases[i], AD_F64);
    run_case(&cases[i], AD_F32);
  }
}

/* The functional form on the same case gives the layer's bits. */
Test(embbag, functional_is_the_layer) {
  const embbag_case *c = &cases[6]; /* sum, per_sample_weights, padding */
  cr_assert_str_eq(c->name, "sum_psw_padding");
  int64_t ws[2] = {c->num, c->dim};
  ad_tensor *w = tensor_of(AD_F64, 2, ws, c->w);
  ad_tensor *in = ad_from_data(ctx, AD_I32, c->in_ndim, c->in_shape, c->in);
  ad_tensor *psw = tensor_of(AD_F64, c->in_ndim, c->in_shape, c->psw);
  nn_embedding_bag_opts o = {.mode = NN_BAG_SUM, .padding = true, .padding_idx = c->padding_idx};
  ad_tensor *y = nn_embedding_bag(ctx, w, in, c->off, c->n_off, psw, &o);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  for (int64_t i = 0; i < y->size; i++) cr_assert_eq(ad_tensor_get(y, i), c->f64[i]);
  ad_tensor_free(w), ad_tensor_free(in), ad_tensor_free(psw);
}

/* Max mode picks per bag and dim the first of the greatest (a tie keeps
 * the earlier entry) and a NaN only where it comes first, in both dtypes:
 * values and the weight's gradient as PyTorch 1.13's F.embedding_bag(...,
 * mode='max') gives them for this case. */
Test(embbag, max_mode_ties_and_nan_as_pytorch) {
  static const int32_t idx[7] = {0, 1, 2, 1, 0, 3, 0};
  static const int64_t off[3] = {0, 3, 5};
  static const double wv[8] = {1, 5, NAN, 2, 3, NAN, 1, 5};
  static const double want[6] = {3, 5, NAN, 5, 1, 5}, dw[8] = {0, 2, 1, 0, 1, 0, 1, 1};
  int64_t ws[2] = {4, 2}, ns = 7;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    ad_tensor *w = ad_zeros(ctx, dt, 2, ws), *in = ad_from_data(ctx, AD_I32, 1, &ns, idx);
    for (int i = 0; i < 8; i++) ad_tensor_set(w, i, wv[i]);
    ad_tensor_set_requires_grad(w, true);
    nn_embedding_bag_opts o = {.mode = NN_BAG_MAX};
    ad_tensor *y = nn_embedding_bag(ctx, w, in, off, 3, NULL, &o);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    for (int i = 0; i < 6; i++) {
      double g = ad_tensor_get(y, i);
      cr_assert(isnan(want[i]) ? isnan(g) : g == want[i], "%s y[%d] = %g, PyTorch %g",
                ad_dtype_name(dt), i, g, want[i]);
    }
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
    for (int i = 0; i < 8; i++)
      cr_assert_eq(ad_tensor_get(w->grad, i), dw[i], "%s dw[%d] = %g, PyTorch %g",
                   ad_dtype_name(dt), i, ad_tensor_get(w->grad, i), dw[i]);
    ad_tape_reset(ctx);
    ad_tensor_free(w), ad_tensor_free(in);
  }
}

/* A weight of no rows [0, 3] with an empty input: every bag is empty and
 * gives zeros in every mode, as F.embedding_bag(empty, zeros(0, 3),
 * tensor([0, 0]), mode=...) does; the backward runs. */
Test(embbag, no_rows_gives_zeros_in_every_mode) {
  int64_t ws[2] = {0, 3}, n = 0;
  const int64_t off[2] = {0, 0};
  ad_tensor *w = ad_zeros(ctx, AD_F64, 2, ws), *in = ad_zeros(ctx, AD_I32, 1, &n);
  ad_tensor_set_requires_grad(w, true);
  for (int m = NN_BAG_MEAN; m <= NN_BAG_MAX; m++) {
    nn_embedding_bag_opts o = {.mode = (nn_bag_mode)m};
    ad_tensor *y = nn_embedding_bag(ctx, w, in, off, 2, NULL, &o);
    cr_assert_not_null(y, "mode %d: %s", m, ad_last_error(ctx));
    cr_assert(y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 3, "mode %d", m);
    for (int64_t i = 0; i < y->size; i++) cr_assert_eq(ad_tensor_get(y, i), 0.0, "mode %d", m);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
    ad_tape_reset(ctx);
  }
  ad_tensor_free(w), ad_tensor_free(in);
}

/* Modes sum (without per_sample_weights) and mean sum each bag's rows in
 * one op, index_select_add, without the [entries, dim] lookup between (the
 * sum is 1 op on the tape, the mean 2 with its division; they were 2 and
 * 3): each bag the sum of its kept rows in order, over the count for mean,
 * an empty bag zeros; the weight's gradient for a seed of ones is each
 * row's kept occurrences (over its bag's count for mean). */
Test(embbag, sum_and_mean_sum_the_bags_in_one_op) {
  static const int32_t idx[8] = {1, 4, 4, 0, 2, 3, 1, 4};
  static const int64_t off[4] = {0, 3, 3, 6}; /* bags {1,4,4}, {}, {0,2(pad),3}, {1,4} */
  int64_t ws[2] = {5, 40}, ns = 8;
  ad_rng rng;
  ad_rng_seed(&rng, 9);
  ad_tensor *w = ad_rand(ctx, &rng, AD_F32, 2, ws, -1, 1),
            *in = ad_from_data(ctx, AD_I32, 1, &ns, idx);
  ad_tensor_set_requires_grad(w, true);
  for (int mode = NN_BAG_MEAN; mode <= NN_BAG_SUM; mode++) {
    nn_embedding_bag_opts o = {.mode = (nn_bag_mode)mode, .padding = true, .padding_idx = 2};
    size_t before = ad_tape_size(ctx);
    ad_tensor *y = nn_embedding_bag(ctx, w, in, off, 4, NULL, &o);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    size_t ops = ad_tape_size(ctx) - before;
    cr_assert_eq(ops, mode == NN_BAG_SUM ? 1u : 2u, "mode %d: %zu ops recorded", mode, ops);
    float dw[5] = {0};
    for (int b = 0; b < 4; b++) {
      int64_t end = b < 3 ? off[b + 1] : 8, cnt = 0;
      for (int64_t k = off[b]; k < end; k++) cnt += idx[k] != 2;
      for (int64_t k = off[b]; k < end; k++)
        if (idx[k] != 2) dw[idx[k]] += mode == NN_BAG_SUM ? 1.0f : 1.0f / (float)cnt;
      for (int64_t d = 0; d < 40; d++) {
        float sum = 0;
        for (int64_t k = off[b]; k < end; k++)
          if (idx[k] != 2) sum += (float)ad_tensor_get(w, idx[k] * 40 + d);
        if (mode == NN_BAG_MEAN) sum /= (float)(cnt ? cnt : 1);
        cr_assert_eq((float)ad_tensor_get(y, b * 40 + d), sum, "mode %d bag %d dim %lld", mode, b,
                     (long long)d);
      }
    }
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
    for (int64_t i = 0; i < w->size; i++)
      cr_assert_float_eq(ad_tensor_get(w->grad, i), dw[i / 40], 1e-6, "mode %d dw[%lld]", mode,
                         (long long)i);
    ad_tensor_zero_grad(w);
    ad_tape_reset(ctx);
  }
  ad_tensor_free(w), ad_tensor_free(in);
}

/* ------------------------------------------------------------- gradcheck */

typedef struct gc_case {
  nn_embedding_bag_opts o;
  ad_tensor *in;
  const int64_t *off;
  int64_t n_off;
} gc_case;

static ad_tensor *gc_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  const gc_case *g = ud;
  return nn_embedding_bag(c, in[0], g->in, g->off, g->n_off, n > 1 ? in[1] : NULL, &g->o);
}

/* First and second order in weight (and per_sample_weights) for each mode;
 * random weights, so max mode's winners are clear of ties by far more than
 * the step. */
Test(embbag, gradcheck_and_gradgradcheck) {
  static const int32_t idx[8] = {1, 4, 4, 0, 2, 3, 1, 4};
  static const int64_t off[4] = {0, 3, 3, 6};
  int64_t ws[2] = {5, 3}, ns = 8;
  for (int mode = 0; mode < 3; mode++)
    for (int pad = 0; pad < 2; pad++) {
      ad_rng rng;
      ad_rng_seed(&rng, 40 + mode * 2 + pad);
      gc_case g = {.o = {.mode = (nn_bag_mode)mode, .padding = pad, .padding_idx = 2},
                   .in = ad_from_data(ctx, AD_I32, 1, &ns, idx),
                   .off = off,
                   .n_off = 4};
      ad_tensor *in[2] = {ad_rand(ctx, &rng, AD_F64, 2, ws, -1, 1),
                          ad_rand(ctx, &rng, AD_F64, 1, &ns, -1, 1)};
      ad_tensor_set_requires_grad(in[0], true);
      ad_tensor_set_requires_grad(in[1], true);
      int n = mode == NN_BAG_SUM ? 2 : 1;
      ad_check_report rep;
      cr_assert_eq(ad_gradcheck(ctx, gc_fn, &g, n, in, NULL, &rep), AD_OK, "%s",
                   ad_last_error(ctx));
      cr_assert(rep.passed && rep.checked > 0, "mode %d pad %d: input %d [%lld]: %g numeric %g",
                mode, pad, rep.input, (long long)rep.index, rep.analytic, rep.numeric);
      cr_assert_eq(ad_gradgradcheck(ctx, gc_fn, &g, n, in, NULL, &rep), AD_OK, "%s",
                   ad_last_error(ctx));
      cr_assert(rep.passed, "mode %d pad %d (2nd order): input %d [%lld]: %g numeric %g", mode, pad,
                rep.input, (long long)rep.index, rep.analytic, rep.numeric);
      ad_tensor_free(in[0]), ad_tensor_free(in[1]), ad_tensor_free(g.in);
    }
}

/* ---------------------------------------------------------------- layers */

Test(embbag, init_and_repr_are_torch) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  nn_embedding_bag_opts o = {.padding = true, .padding_idx = -1};
  nn_layer *l = nn_embedding_bag_new(ctx, 400, 16, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(l), "embedding_bag");
  ad_tensor *w = nn_params_find(nn_layer_params(l), "weight");
  cr_assert(w && w->dtype == AD_F32 && w->shape[0] == 400 && w->shape[1] == 16);
  double s = 0, q = 0;
  for (int64_t i = 0; i < 399 * 16; i++) {
    double v = ad_tensor_get(w, i);
    s += v, q += v * v;
  }
  double mean = s / (399 * 16), sd = sqrt(q / (399 * 16) - mean * mean);
  cr_assert(fabs(mean) < 0.05 && fabs(sd - 1) < 0.05, "N(0, 1): mean %g, std %g", mean, sd);
  for (int j = 0; j < 16; j++) cr_assert_eq(ad_tensor_get(w, 399 * 16 + j), 0.0, "padding row");
  char buf[256];
  nn_layer_describe(l, buf, sizeof buf);
  cr_assert_str_eq(buf, "embedding_bag(400, 16, mode=mean, padding_idx=399)");
  nn_layer_free(l);
  nn_embedding_bag_opts o2 = {.mode = NN_BAG_SUM,
                              .padding = true,
                              .padding_idx = 1,
                              .max_norm = 1,
                              .norm_type = 3,
                              .scale_grad_by_freq = true};
  l = nn_embedding_bag_new(ctx, 4, 2, &rng, &o2);
  nn_layer_describe(l, buf, sizeof buf);
  cr_assert_str_eq(buf, "embedding_bag(4, 2, max_norm=1.0, norm_type=3.0, "
                        "scale_grad_by_freq=True, mode=sum, padding_idx=1)");
  nn_layer_free(l);
  nn_embedding_ext_opts e = {.base = {.padding = true, .padding_idx = 1},
                             .max_norm = 1,
                             .norm_type = 3,
                             .scale_grad_by_freq = true};
  l = nn_embedding_new_ext(ctx, 4, 2, &rng, &e);
  nn_layer_describe(l, buf, sizeof buf);
  cr_assert_str_eq(buf, "embedding(4, 2, padding_idx=1, max_norm=1.0, norm_type=3.0, "
                        "scale_grad_by_freq=True)");
  nn_layer_free(l);
}

/* A second forward that renormalises a row marks the weight modified: a
 * backward through the first lookup refuses (PyTorch allows it, its
 * lookup's backward not reading the weight; documented). One that changes
 * nothing leaves the first lookup's backward alone. */
Test(embbag, renorm_marks_the_weight_modified) {
  ad_rng rng;
  ad_rng_seed(&rng, 6);
  nn_embedding_ext_opts e = {.base = {.dtype = AD_F64}, .max_norm = 1.0};
  nn_layer *l = nn_embedding_new_ext(ctx, 4, 2, &rng, &e);
  ad_tensor *w = nn_params_find(nn_layer_params(l), "weight");
  static const double wv[8] = {3, 4, 0.3, 0.4, 6, 8, 0.6, 0.0};
  for (int i = 0; i < 8; i++) ad_tensor_set(w, i, wv[i]);
  int64_t n = 2;
  ad_tensor *i01 = ad_from_data(ctx, AD_I32, 1, &n, (const int32_t[]){0, 1});
  ad_tensor *i13 = ad_from_data(ctx, AD_I32, 1, &n, (const int32_t[]){1, 3});
  ad_tensor *i12 = ad_from_data(ctx, AD_I32, 1, &n, (const int32_t[]){1, 2});
  ad_tensor *y1 = nn_layer_forward(l, i01, true);
  cr_assert_not_null(nn_layer_forward(l, i13, true)); /* rows below max_norm: no change */
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y1), NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_float_eq(ad_tensor_get(w, 0), 3 * (1 / (5 + 1e-7)), 1e-15);
  ad_tape_reset(ctx);
  y1 = nn_layer_forward(l, i01, true);
  cr_assert_not_null(nn_layer_forward(l, i12, true)); /* row 2 renormalised */
  cr_assert_float_eq(ad_tensor_get(w, 5), 8 * (1 / (10 + 1e-7)), 1e-15);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y1), NULL), AD_ERR_STATE);
  ad_clear_error(ctx);
  ad_tape_reset(ctx);
  nn_layer_free(l);
  ad_tensor_free(i01), ad_tensor_free(i13), ad_tensor_free(i12);
}

/* nn_embedding_renorm itself: torch.embedding_renorm_ on a row named
 * twice, a row under max_norm, a NaN row. */
Test(embbag, renorm_is_torch_embedding_renorm) {
  int64_t ws[2] = {3, 2}, n = 4;
  static const double wv[6] = {3, 4, 0.3, 0.4, NAN, 1};
  ad_tensor *w = tensor_of(AD_F64, 2, ws, wv);
  ad_tensor *ix = ad_from_data(ctx, AD_I32, 1, &n, (const int32_t[]){0, 1, 0, 2});
  cr_assert_eq(nn_embedding_renorm(ctx, w, ix, 2.0, 0), AD_OK, "%s", ad_last_error(ctx));
  double s = 2.0 / (5 + 1e-7);
  cr_assert_eq(ad_tensor_get(w, 0), 3 * s);
  cr_assert_eq(ad_tensor_get(w, 1), 4 * s);
  cr_assert_eq(ad_tensor_get(w, 2), 0.3);
  cr_assert(isnan(ad_tensor_get(w, 4)) && ad_tensor_get(w, 5) == 1);
  cr_assert_eq(nn_embedding_renorm(ctx, w, ix, 0.5, INFINITY), AD_OK);
  cr_assert_eq(ad_tensor_get(w, 1), 4 * s * (0.5 / (4 * s + 1e-7)));
  ad_tensor_free(w), ad_tensor_free(ix);
}

/* A float32 row's norm is PyTorch's float32 one at the extremes too: the
 * squares of 1e20 overflow (norm inf, so the row becomes 0 * 1e20 = 0),
 * those of 1e-30 underflow (norm 0, so max_norm 1e-31 leaves the row), the
 * cubes of 1e13 overflow; torch.embedding_renorm_ gives these rows. */
Test(embbag, renorm_float32_norm_overflows_as_torch) {
  int64_t ws[2] = {4, 2}, n = 1;
  static const double wv[8] = {1e20, 1e20, 1e-30, 1e-30, 1e13, 1, 3, 4};
  ad_tensor *w = tensor_of(AD_F32, 2, ws, wv);
  ad_tensor *i0 = ad_from_data(ctx, AD_I32, 1, &n, (const int32_t[]){0});
  ad_tensor *i1 = ad_from_data(ctx, AD_I32, 1, &n, (const int32_t[]){1});
  ad_tensor *i2 = ad_from_data(ctx, AD_I32, 1, &n, (const int32_t[]){2});
  cr_assert_eq(nn_embedding_renorm(ctx, w, i0, 1.0, 2), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(ad_tensor_get(w, 0) == 0 && ad_tensor_get(w, 1) == 0, "row 0: %g %g, PyTorch 0 0",
            ad_tensor_get(w, 0), ad_tensor_get(w, 1));
  cr_assert_eq(nn_embedding_renorm(ctx, w, i1, 1e-31, 2), AD_OK);
  cr_assert(ad_tensor_get(w, 2) == (float)1e-30 && ad_tensor_get(w, 3) == (float)1e-30,
            "row 1: %g %g, PyTorch 1e-30 1e-30", ad_tensor_get(w, 2), ad_tensor_get(w, 3));
  cr_assert_eq(nn_embedding_renorm(ctx, w, i2, 1.0, 3), AD_OK);
  cr_assert(ad_tensor_get(w, 4) == 0 && ad_tensor_get(w, 5) == 0, "row 2: %g %g, PyTorch 0 0",
            ad_tensor_get(w, 4), ad_tensor_get(w, 5));
  cr_assert(ad_tensor_get(w, 6) == 3 && ad_tensor_get(w, 7) == 4, "row 3 is not named");
  ad_tensor_free(w), ad_tensor_free(i0), ad_tensor_free(i1), ad_tensor_free(i2);
}

/* ---------------------------------------------------------------- misuse */

Test(embbag, misuse) {
  int64_t ws[2] = {5, 3}, n = 6, sh2[2] = {2, 3}, n3 = 3;
  ad_tensor *w = ad_zeros(ctx, AD_F64, 2, ws), *w32 = ad_zeros(ctx, AD_F32, 2, ws);
  ad_tensor *in = ad_from_data(ctx, AD_I32, 1, &n, (const int32_t[]){0, 1, 2, 3, 4, 0});
  ad_tensor *in2 = ad_from_data(ctx, AD_I32, 2, sh2, (const int32_t[]){0, 1, 2, 3, 4, 0});
  ad_tensor *bad = ad_from_data(ctx, AD_I32, 1, &n, (const int32_t[]){0, 1, 2, 5, 4, 0});
  ad_tensor *neg = ad_from_data(ctx, AD_I32, 1, &n, (const int32_t[]){0, -1, 2, 3, 4, 0});
  ad_tensor *psw = ad_zeros(ctx, AD_F64, 1, &n), *psw3 = ad_zeros(ctx, AD_F64, 1, &n3);
  ad_tensor *psw32 = ad_zeros(ctx, AD_F32, 1, &n), *fin = ad_zeros(ctx, AD_F64, 1, &n);
  ad_tensor *w1 = ad_zeros(ctx, AD_F64, 1, &n);
  const int64_t off[3] = {0, 2, 4}, off1[2] = {1, 3}, offdec[3] = {0, 4, 2}, offpast[2] = {0, 7},
                offlast[3] = {0, 2, 5};
  nn_embedding_bag_opts sum = {.mode = NN_BAG_SUM}, mean = {0}, max = {.mode = NN_BAG_MAX};

  cr_assert_null(nn_embedding_bag(ctx, w, in, off1, 2, NULL, &sum));
  expect_error(AD_ERR_ARG, "embedding_bag: offsets[0] is 1; the first bag must start at 0", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, in, offdec, 3, NULL, &sum));
  expect_error(AD_ERR_ARG, "embedding_bag: offsets decrease at 2 (2 after 4)", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, in, offpast, 2, NULL, &sum));
  expect_error(AD_ERR_ARG, "embedding_bag: offsets[1] = 7 is past the end of input (6)", NULL);
  nn_embedding_bag_opts ilo = {.include_last_offset = true};
  cr_assert_null(nn_embedding_bag(ctx, w, in, offlast, 3, NULL, &ilo));
  expect_error(AD_ERR_ARG, "the last offset 5 must be the input's length 6", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, in2, NULL, 0, NULL, &ilo));
  expect_error(AD_ERR_ARG, "include_last_offset needs a 1-D input with offsets", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, bad, off, 3, NULL, &sum));
  expect_error(AD_ERR_ARG, "embedding_bag: index 5 at position 3 of indices [6]",
               "vocabulary of 5 (0..4)", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, neg, off, 3, NULL, &max));
  expect_error(AD_ERR_ARG, "index -1 at position 1", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, in, off, 3, psw, &mean));
  expect_error(AD_ERR_ARG, "per_sample_weights need mode sum (mode is mean)", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, in, off, 3, psw, &max));
  expect_error(AD_ERR_ARG, "per_sample_weights need mode sum (mode is max)", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, in, off, 3, psw3, &sum));
  expect_error(AD_ERR_SHAPE, "per_sample_weights [3] do not have input's shape [6]", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, in, off, 3, psw32, &sum));
  expect_error(AD_ERR_DTYPE, "per_sample_weights are f32, weight is f64", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, in2, off, 3, NULL, &sum));
  expect_error(AD_ERR_ARG, "input [2,3] is 2-D (bags of fixed length): offsets must be NULL", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, in, NULL, 0, NULL, &sum));
  expect_error(AD_ERR_NULL, "embedding_bag: input [6] is 1-D: offsets is NULL", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, in, off, 0, NULL, &sum));
  expect_error(AD_ERR_ARG, "0 offsets; a 1-D input needs at least one", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, fin, off, 3, NULL, &sum));
  expect_error(AD_ERR_DTYPE, "embedding_bag: indices [6] are f64; they must be i32", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w1, in, off, 3, NULL, &sum));
  expect_error(AD_ERR_SHAPE, "embedding_bag: weight [6] must be [num_embeddings, embedding_dim]",
               NULL);
  cr_assert_null(nn_embedding_bag(ctx, in, in, off, 3, NULL, &sum));
  expect_error(AD_ERR_DTYPE, "embedding_bag: weight [6] is i32; it must be float", NULL);
  cr_assert_null(nn_embedding_bag(ctx, NULL, in, off, 3, NULL, &sum));
  expect_error(AD_ERR_NULL, "embedding_bag: weight is NULL", NULL);
  cr_assert_null(nn_embedding_bag(ctx, w, NULL, off, 3, NULL, &sum));
  expect_error(AD_ERR_NULL, "embedding_bag: input is NULL", NULL);
  cr_assert_null(nn_embedding_bag(NULL, w, in, off, 3, NULL, &sum));
  nn_embedding_bag_opts o = {.mode = (nn_bag_mode)7};
  cr_assert_null(nn_embedding_bag(ctx, w, in, off, 3, NULL, &o));
  expect_error(AD_ERR_ARG, "embedding_bag: mode 7 is none of mean, sum, max", NULL);
  o = (nn_embedding_bag_opts){.padding = true, .padding_idx = 5};
  cr_assert_null(nn_embedding_bag(ctx, w, in, off, 3, NULL, &o));
  expect_error(AD_ERR_ARG, "embedding_bag: padding_idx 5 is outside -5..4", NULL);
  o = (nn_embedding_bag_opts){.max_norm = -1};
  cr_assert_null(nn_embedding_bag(ctx, w, in, off, 3, NULL, &o));
  expect_error(AD_ERR_ARG, "embedding_bag: max_norm -1 must be finite and >= 0", NULL);
  o = (nn_embedding_bag_opts){.max_norm = NAN};
  cr_assert_null(nn_embedding_bag(ctx, w, in, off, 3, NULL, &o));
  expect_error(AD_ERR_ARG, "max_norm nan must be finite", NULL);
  o = (nn_embedding_bag_opts){.max_norm = 1, .norm_type = -2};
  cr_assert_null(nn_embedding_bag(ctx, w, in, off, 3, NULL, &o));
  expect_error(AD_ERR_ARG, "embedding_bag: norm_type -2 must be > 0 or inf", NULL);
  o = (nn_embedding_bag_opts){.mode = NN_BAG_MAX, .scale_grad_by_freq = true};
  cr_assert_null(nn_embedding_bag(ctx, w, in, off, 3, NULL, &o));
  expect_error(AD_ERR_ARG, "embedding_bag: mode max does not support scale_grad_by_freq", NULL);

  /* freed tensors and another context's */
  ad_tensor *gone = ad_zeros(ctx, AD_F64, 1, &n);
  ad_tensor_free(gone);
  cr_assert_null(nn_embedding_bag(ctx, w, in, off, 3, gone, &sum));
  expect_error(AD_ERR_STATE, "embedding_bag: per_sample_weights was freed", NULL);
  ad_ctx *other = ad_ctx_new();
  ad_tensor *wo = ad_zeros(other, AD_F64, 2, ws);
  cr_assert_null(nn_embedding_bag(ctx, wo, in, off, 3, NULL, &sum));
  expect_error(AD_ERR_ARG, "embedding_bag: weight belongs to another context", NULL);
  ad_tensor_free(wo);
  ad_ctx_free(other);

  /* the layers */
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  cr_assert_null(nn_embedding_bag_new(ctx, 0, 3, &rng, NULL));
  expect_error(AD_ERR_ARG, "embedding_bag: num_embeddings 0 and embedding_dim 3 must be >= 1",
               NULL);
  cr_assert_null(nn_embedding_bag_new(ctx, 5, 3, NULL, NULL));
  expect_error(AD_ERR_NULL, "embedding_bag: rng is NULL", NULL);
  o = (nn_embedding_bag_opts){.dtype = AD_I32};
  cr_assert_null(nn_embedding_bag_new(ctx, 5, 3, &rng, &o));
  expect_error(AD_ERR_DTYPE, "embedding_bag: parameters must be float, got i32", NULL);
  o = (nn_embedding_bag_opts){.mode = NN_BAG_MAX, .scale_grad_by_freq = true};
  cr_assert_null(nn_embedding_bag_new(ctx, 5, 3, &rng, &o));
  expect_error(AD_ERR_ARG, "mode max does not support scale_grad_by_freq", NULL);
  o = (nn_embedding_bag_opts){.padding = true, .padding_idx = -6};
  cr_assert_null(nn_embedding_bag_new(ctx, 5, 3, &rng, &o));
  expect_error(AD_ERR_ARG, "embedding_bag: padding_idx -6 is outside -5..4", NULL);
  nn_layer *bag = nn_embedding_bag_new(ctx, 5, 3, &rng, &sum);
  cr_assert_null(nn_layer_forward(bag, in, true));
  expect_error(AD_ERR_NULL, "embedding_bag: input [6] is 1-D: offsets is NULL", NULL);
  cr_assert_not_null(nn_layer_forward(bag, in2, true));
  nn_layer *emb = nn_embedding_new(ctx, 5, 3, &rng, NULL);
  cr_assert_null(nn_embedding_bag_forward(emb, in, off, 3, NULL));
  expect_error(AD_ERR_ARG, "embedding_bag_forward: ", "is not an EmbeddingBag", NULL);
  cr_assert_null(nn_embedding_bag_forward(NULL, in, off, 3, NULL));
  nn_embedding_ext_opts e = {.max_norm = INFINITY};
  cr_assert_null(nn_embedding_new_ext(ctx, 5, 3, &rng, &e));
  expect_error(AD_ERR_ARG, "embedding: max_norm inf must be finite and >= 0", NULL);
  e = (nn_embedding_ext_opts){.norm_type = NAN};
  cr_assert_null(nn_embedding_new_ext(ctx, 5, 3, &rng, &e));
  expect_error(AD_ERR_ARG, "embedding: norm_type nan must be > 0 or inf", NULL);
  e = (nn_embedding_ext_opts){.base = {.padding = true, .padding_idx = 9}};
  cr_assert_null(nn_embedding_new_ext(ctx, 5, 3, &rng, &e));
  expect_error(AD_ERR_ARG, "embedding: padding_idx 9 is outside -5..4", NULL);
  cr_assert_eq(nn_embedding_renorm(ctx, w, bad, 1, 2), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "embedding_renorm: index 5 at position 3", NULL);
  cr_assert_eq(nn_embedding_renorm(ctx, w, in, 0, 2), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "embedding_renorm: max_norm 0 must be finite and > 0", NULL);
  cr_assert_eq(nn_embedding_renorm(ctx, w, in, 1, -1), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "embedding_renorm: norm_type -1 must be > 0 or inf", NULL);
  cr_assert_eq(nn_embedding_renorm(ctx, w, NULL, 1, 2), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, "embedding_renorm: indices is NULL", NULL);
  cr_assert_eq(nn_embedding_renorm(ctx, w32, fin, 1, 2), AD_ERR_DTYPE);
  expect_error(AD_ERR_DTYPE, "embedding_renorm: indices [6] are f64", NULL);
  cr_assert_eq(nn_embedding_renorm(NULL, w, in, 1, 2), AD_ERR_NULL);
  /* a NULL argument returns AD_ERR_NULL also while an earlier error is
   * pending (which the NULL error does not replace) */
  cr_assert_null(nn_embedding_bag(ctx, w, in, off1, 2, NULL, &sum));
  cr_assert_eq(nn_embedding_renorm(ctx, NULL, in, 1, 2), AD_ERR_NULL);
  cr_assert_eq(nn_embedding_renorm(ctx, w, NULL, 1, 2), AD_ERR_NULL);
  expect_error(AD_ERR_ARG, "embedding_bag: offsets[0] is 1", NULL);
  nn_layer_free(bag), nn_layer_free(emb);
  ad_tensor *all[] = {w, w32, in, in2, bad, neg, psw, psw3, psw32, fin, w1};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ad_tensor_free(all[i]);
}
