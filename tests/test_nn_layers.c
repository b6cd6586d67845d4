/* test_nn_layers.c: parameter lists, initializers, layers, models.
 * Dense and the activations against PyTorch (tests/nn_fixtures.h), the 2-3-1
 * worked example against its closed form, dropout's statistics, naming and
 * error messages. */
#include "nn.h"
#include "nn_fixtures.h"
#include "test_alloc.h"
#include "test_layer_values.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_CTX_SUITE(params);
TEST_CTX_SUITE_ALSO(init);
TEST_CTX_SUITE_ALSO(dense);
TEST_CTX_SUITE_ALSO(activations);
TEST_CTX_SUITE_ALSO(dropout);
TEST_CTX_SUITE_ALSO(layers);
TEST_CTX_SUITE_ALSO(models);

static ad_tensor *make(ad_ctx *c, ad_dtype dt, int64_t rows, int64_t cols, const double *v) {
  int64_t s[2] = {rows, cols};
  ad_tensor *t = ad_zeros(c, dt, 2, s);
  for (int64_t i = 0; v && i < rows * cols; i++) ad_tensor_set(t, i, v[i]);
  return t;
}

static void fill(ad_tensor *t, const double *v) {
  for (int64_t i = 0; i < t->size; i++) ad_tensor_set(t, i, v[i]);
}

/* ------------------------------------------------------------- parameters */

Test(params, names_lookup_and_ownership) {
  nn_params *p = nn_params_new(ctx);
  int64_t s[2] = {2, 3};
  ad_tensor *a = ad_zeros(ctx, AD_F32, 2, s), *b = ad_zeros(ctx, AD_F32, 1, s);
  cr_assert_eq(nn_params_add(p, "enc.weight", a, true), AD_OK);
  cr_assert_eq(nn_params_add(p, "enc.bias", b, false), AD_OK);
  cr_assert(ad_tensor_requires_grad(a));
  cr_assert_eq(nn_params_count(p), 2);
  cr_assert_eq(nn_params_find(p, "enc.bias"), b);
  cr_assert_null(nn_params_find(p, "enc"));
  cr_assert_str_eq(nn_params_name(p, 0), "enc.weight");
  cr_assert_eq(nn_params_tensor(p, 1), b);
  cr_assert_null(nn_params_tensor(p, 2));
  cr_assert_str_eq(nn_params_names(p)[1], "enc.bias");
  cr_assert_eq(nn_params_tensors(p)[0], a);
  cr_assert_eq(nn_params_numel(p), 8);

  /* errors; an owned tensor is freed even when the add fails */
  cr_assert_eq(nn_params_add(p, "enc.weight", ad_zeros(ctx, AD_F32, 1, s), true), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "a parameter named 'enc.weight' exists");
  cr_assert_eq(nn_params_add(p, "", ad_zeros(ctx, AD_F32, 1, s), true), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "non-empty name");
  cr_assert_eq(nn_params_add(p, "ids", ad_zeros(ctx, AD_I32, 2, s), true), AD_ERR_DTYPE);
  expect_status_msg(ctx, AD_ERR_DTYPE, "'ids' [2,3] is i32; parameters must be float");
  cr_assert_eq(nn_params_add(p, "tmp", ad_add_scalar(ctx, a, 1), false), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "'tmp' is a temporary");
  cr_assert_eq(nn_params_count(p), 2);

  /* many names: the hash map grows */
  char name[32];
  for (int i = 0; i < 300; i++) {
    snprintf(name, sizeof name, "layer%d.weight", i);
    cr_assert_eq(nn_params_add(p, name, ad_zeros(ctx, AD_F64, 0, NULL), true), AD_OK);
  }
  cr_assert_eq(nn_params_find(p, "layer217.weight"), nn_params_tensor(p, 2 + 217));
  nn_params_free(p);
  ad_tensor_free(b); /* borrowed: still ours */
  nn_params_free(NULL);
}

/* Each allocation of a list's growth refused once in turn, the name map's
 * table among them (it comes from the context's allocator, as the rest of
 * the list): every failed add is AD_ERR_OOM with a message and frees the
 * tensor it owned, the list keeps the names added so far and takes more,
 * and nothing leaks (no tensor stays live; once the context is freed, no
 * block of its allocator). */
Test(params, every_allocation_refused_once) {
  enum { NAMES = 40 };
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  cr_assert_not_null(c);
  bool map_refused = false, granted_all = false;
  char name[32];
  for (long k = 0; !granted_all; k++) {
    nn_params *p = nn_params_new(c);
    cr_assert_not_null(p);
    int added = 0;
    test_alloc_refuse_after(&ta, k); /* refuses request k from here on, and only that one */
    ta.refuse = TEST_ALLOC_REFUSE_ONLY;
    long refused = ta.refused;
    for (int i = 0; i < NAMES; i++) {
      snprintf(name, sizeof name, "p%d", i);
      ad_tensor *t = ad_zeros(c, AD_F32, 0, NULL);
      if (!t) {
        test_expect_error(c, AD_ERR_OOM, "out of memory", NULL);
        continue;
      }
      ad_status st = nn_params_add(p, name, t, true);
      if (st != AD_OK) {
        cr_assert_eq(st, AD_ERR_OOM, "k %ld, name %d: %s", k, i, ad_last_error(c));
        map_refused |= strstr(ad_last_error(c), "name map") != NULL;
        test_expect_error(c, AD_ERR_OOM, "out of memory", NULL);
        continue;
      }
      cr_assert_eq(nn_params_find(p, name), t, "k %ld: '%s' not found", k, name);
      added++;
    }
    test_alloc_grant_all(&ta);
    granted_all = ta.refused == refused;
    cr_assert_eq(nn_params_count(p), added);
    for (int i = 0; i < added; i++)
      cr_assert_eq(nn_params_find(p, nn_params_name(p, i)), nn_params_tensor(p, i), "k %ld", k);
    nn_params_free(p);
    cr_assert_eq(ad_ctx_live_tensors(c), 0, "k %ld: tensors leaked", k);
  }
  cr_assert(map_refused, "no refusal reached the name map");
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0, "%ld blocks leaked", ta.live);
}

/* ----------------------------------------------------------- initializers */

static void moments(const ad_tensor *t, double *mean, double *var, double *lo, double *hi) {
  double s = 0, s2 = 0;
  *lo = INFINITY, *hi = -INFINITY;
  for (int64_t i = 0; i < t->size; i++) {
    double v = ad_tensor_get(t, i);
    s += v, s2 += v * v;
    *lo = fmin(*lo, v), *hi = fmax(*hi, v);
  }
  *mean = s / (double)t->size;
  *var = s2 / (double)t->size - *mean * *mean;
}

Test(init, distributions_have_the_documented_moments) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t s[2] = {300, 500}; /* fan_in 500, fan_out 300 */
  ad_tensor *t = ad_zeros(ctx, AD_F64, 2, s);
  double mean, var, lo, hi;
  struct {
    nn_init init;
    double var, bound; /* bound 0: unbounded */
  } cases[] = {
      {nn_init_make(NN_INIT_XAVIER_UNIFORM, 0, 0), 2.0 / 800, sqrt(6.0 / 800)},
      {nn_init_make(NN_INIT_XAVIER_UNIFORM, 2, 0), 4 * 2.0 / 800, 2 * sqrt(6.0 / 800)},
      {nn_init_make(NN_INIT_XAVIER_NORMAL, 0, 0), 2.0 / 800, 0},
      {nn_init_make(NN_INIT_HE_UNIFORM, 0, 0), 2.0 / 500, sqrt(6.0 / 500)},
      {nn_init_make(NN_INIT_HE_NORMAL, 0, 0), 2.0 / 500, 0},
      {nn_init_make(NN_INIT_HE_NORMAL, 1, 0), 1.0 / 500, 0},
      {nn_init_make(NN_INIT_UNIFORM, -0.5, 0.5), 1.0 / 12, 0.5},
      {nn_init_make(NN_INIT_NORMAL, 0, 0.3), 0.09, 0},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    cr_assert_eq(nn_init_tensor(ctx, t, cases[k].init, &rng), AD_OK);
    moments(t, &mean, &var, &lo, &hi);
    /* 150,000 draws: the sample variance is within 1.5% */
    cr_assert(fabs(var / cases[k].var - 1) < 0.015, "case %zu: var %g, want %g", k, var,
              cases[k].var);
    cr_assert(fabs(mean) < 4 * sqrt(cases[k].var / 150000.0), "case %zu: mean %g", k, mean);
    if (cases[k].bound > 0) {
      cr_assert(lo >= -cases[k].bound && hi < cases[k].bound, "case %zu: [%g, %g]", k, lo, hi);
      cr_assert(hi > 0.99 * cases[k].bound, "case %zu: the range is used", k);
    }
  }
  cr_assert_eq(nn_init_tensor(ctx, t, nn_init_make(NN_INIT_NORMAL, 5, 0.1), &rng), AD_OK);
  moments(t, &mean, &var, &lo, &hi);
  cr_assert_float_eq(mean, 5, 0.002);
  cr_assert_eq(nn_init_tensor(ctx, t, nn_init_make(NN_INIT_CONSTANT, 0.25, 0), NULL), AD_OK);
  moments(t, &mean, &var, &lo, &hi);
  cr_assert(lo == 0.25 && hi == 0.25);
  cr_assert_eq(nn_init_tensor(ctx, t, nn_init_make(NN_INIT_ZEROS, 0, 0), NULL), AD_OK);
  moments(t, &mean, &var, &lo, &hi);
  cr_assert(lo == 0 && hi == 0);
  ad_tensor_free(t);
}

Test(init, seeded_and_reproducible) {
  int64_t s[2] = {4, 5};
  ad_tensor *a = ad_zeros(ctx, AD_F32, 2, s), *b = ad_zeros(ctx, AD_F32, 2, s);
  ad_rng r1, r2;
  ad_rng_seed(&r1, 99);
  ad_rng_seed(&r2, 99);
  nn_init_tensor(ctx, a, nn_init_make(NN_INIT_HE_NORMAL, 0, 0), &r1);
  nn_init_tensor(ctx, b, nn_init_make(NN_INIT_HE_NORMAL, 0, 0), &r2);
  cr_assert_eq(memcmp(a->data, b->data, 20 * sizeof(float)), 0);
  nn_init_tensor(ctx, b, nn_init_make(NN_INIT_HE_NORMAL, 0, 0), &r2);
  cr_assert_neq(memcmp(a->data, b->data, 20 * sizeof(float)), 0);
  ad_tensor_free(a), ad_tensor_free(b);
}

Test(init, fans_and_errors) {
  int64_t s4[4] = {8, 3, 5, 5}, in, out;
  ad_tensor *conv = ad_zeros(ctx, AD_F32, 4, s4), *vec = ad_zeros(ctx, AD_F32, 1, s4);
  nn_fans(conv, &in, &out);
  cr_assert(in == 75 && out == 200);
  nn_fans(vec, &in, &out);
  cr_assert(in == 8 && out == 8);
  nn_fans(NULL, &in, NULL);
  cr_assert_eq(in, 1);
  cr_assert_eq(nn_init_tensor(ctx, conv, nn_init_make(NN_INIT_XAVIER_UNIFORM, 0, 0), NULL),
               AD_ERR_NULL);
  expect_status_msg(ctx, AD_ERR_NULL, "init: a random initializer needs an rng");
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  cr_assert_eq(nn_init_tensor(ctx, conv, nn_init_make(NN_INIT_DEFAULT, 0, 0), &rng), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "unknown or default initializer");
  cr_assert_eq(nn_init_tensor(ctx, conv, nn_init_make(NN_INIT_NORMAL, 0, -1), &rng), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "normal needs a finite mean and std >= 0");
  /* non-finite numbers made NaN or infinite weights without an error */
  nn_init bad[6] = {nn_init_make(NN_INIT_UNIFORM, -INFINITY, INFINITY),
                    nn_init_make(NN_INIT_UNIFORM, 0, INFINITY),
                    nn_init_make(NN_INIT_NORMAL, NAN, 1),
                    nn_init_make(NN_INIT_NORMAL, 0, INFINITY),
                    nn_init_make(NN_INIT_XAVIER_UNIFORM, NAN, 0),
                    nn_init_make(NN_INIT_HE_NORMAL, INFINITY, 0)};
  for (int k = 0; k < 6; k++) {
    cr_assert_eq(nn_init_tensor(ctx, conv, bad[k], &rng), AD_ERR_ARG, "initializer %d", k);
    expect_status_msg(ctx, AD_ERR_ARG, "init:");
  }
  cr_assert_eq(nn_init_tensor(ctx, conv, nn_init_make(NN_INIT_CONSTANT, NAN, 0), &rng), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "constant nan is not finite");
  ad_tensor *ids = ad_zeros(ctx, AD_I32, 1, s4);
  cr_assert_eq(nn_init_tensor(ctx, ids, nn_init_make(NN_INIT_ZEROS, 0, 0), &rng), AD_ERR_DTYPE);
  ad_tensor_free(conv), ad_tensor_free(vec), ad_tensor_free(ids);
}

/* ------------------------------------------------------------------ dense */

Test(dense, forward_and_backward_match_torch) {
  nn_dense_opts o = {.dtype = AD_F64};
  nn_layer *d = nn_dense_new(ctx, 3, 2, NULL, &o); /* Xavier needs an rng */
  cr_assert_null(d);
  expect_status_msg(ctx, AD_ERR_NULL, "needs an rng");
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  d = nn_dense_new(ctx, 3, 2, &rng, &o);
  cr_assert_not_null(d, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(d), "dense");
  nn_params *p = nn_layer_params(d);
  ad_tensor *w = nn_params_find(p, "weight"), *b = nn_params_find(p, "bias");
  cr_assert(w && b);
  cr_assert(w->shape[0] == 2 && w->shape[1] == 3 && b->shape[0] == 2);
  fill(w, dense_w);
  fill(b, dense_b);
  ad_tensor *x = make(ctx, AD_F64, 4, 3, dense_x), *r = make(ctx, AD_F64, 4, 2, dense_r);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = nn_layer_forward(d, x, true);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  for (int i = 0; i < 8; i++) cr_assert_float_eq(ad_tensor_get(y, i), dense_y[i], 1e-14);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, r)), NULL), AD_OK);
  for (int i = 0; i < 12; i++) cr_assert_float_eq(ad_tensor_get(x->grad, i), dense_dx[i], 1e-14);
  for (int i = 0; i < 6; i++) cr_assert_float_eq(ad_tensor_get(w->grad, i), dense_dw[i], 1e-14);
  for (int i = 0; i < 2; i++) cr_assert_float_eq(ad_tensor_get(b->grad, i), dense_db[i], 1e-14);
  ad_tensor_free(x), ad_tensor_free(r);
  nn_layer_free(d);
}

Test(dense, options_activation_and_batched_input) {
  nn_dense_opts o = {.no_bias = true,
                     .activation = NN_ACT_RELU,
                     .weight_init = nn_init_make(NN_INIT_CONSTANT, 0.5, 0),
                     .dtype = AD_F32};
  nn_layer *d = nn_dense_new(ctx, 2, 3, NULL, &o); /* deterministic init: no rng needed */
  cr_assert_not_null(d, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_params_count(nn_layer_params(d)), 1);
  int64_t s[3] = {2, 2, 2};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 3, s);
  const double xv[8] = {1, 1, -1, -3, 2, 0, 0.5, -0.1};
  fill(x, xv);
  ad_tensor *y = nn_layer_forward(d, x, false);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert(y->ndim == 3 && y->shape[0] == 2 && y->shape[1] == 2 && y->shape[2] == 3);
  const double want[4] = {1, 0, 1, 0.2}; /* relu(0.5 * (x0 + x1)) per row */
  for (int r = 0; r < 4; r++)
    for (int k = 0; k < 3; k++) cr_assert_float_eq(ad_tensor_get(y, 3 * r + k), want[r], 1e-6);

  nn_dense_opts lk = {.activation = NN_ACT_LEAKY_RELU,
                      .weight_init = nn_init_make(NN_INIT_CONSTANT, 1, 0),
                      .bias_init = nn_init_make(NN_INIT_CONSTANT, -10, 0)};
  nn_layer *d2 = nn_dense_new(ctx, 2, 1, NULL, &lk);
  int64_t s2[2] = {1, 2};
  ad_tensor *x2 = ad_ones(ctx, AD_F32, 2, s2);
  cr_assert_float_eq(ad_tensor_item(nn_layer_forward(d2, x2, true)), -0.08, 1e-6); /* 0.01*(2-10) */
  ad_tensor_free(x), ad_tensor_free(x2);
  nn_layer_free(d);
  nn_layer_free(d2);
}

Test(dense, errors_name_the_layer_and_shapes) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 784, 64, &rng, NULL)), AD_OK);
  int64_t s[2] = {32, 100};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 2, s);
  cr_assert_null(nn_model_forward(m, x));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "dense '0': input [32,100] has 100 features, the layer expects 784 (weight [64,784])");
  ad_tensor *x64 = ad_zeros(ctx, AD_F64, 2, (int64_t[]){32, 784});
  cr_assert_null(nn_model_forward(m, x64));
  expect_status_msg(ctx, AD_ERR_DTYPE, "dense '0': input [32,784] is f64, the weights are f32");
  cr_assert_null(nn_dense_new(ctx, 0, 3, &rng, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "dense: in 0 and out 3 must be >= 1");
  nn_dense_opts o = {.dtype = AD_I32};
  cr_assert_null(nn_dense_new(ctx, 2, 3, &rng, &o));
  expect_status_msg(ctx, AD_ERR_DTYPE, "dense: parameters must be float, got i32");
  ad_tensor_free(x), ad_tensor_free(x64);
  nn_model_free(m);
}

/* ------------------------------------------------------------ activations */

Test(activations, match_torch) {
  ad_tensor *x = make(ctx, AD_F64, 2, 5, act_x);
  struct {
    nn_layer *layer;
    const double *want;
  } cases[] = {
      {nn_activation_new(ctx, NN_ACT_SIGMOID), act_sigmoid},
      {nn_activation_new(ctx, NN_ACT_TANH), act_tanh},
      {nn_activation_new(ctx, NN_ACT_RELU), act_relu},
      {nn_leaky_relu_new(ctx, 0.2), act_leaky},
      {nn_activation_new(ctx, NN_ACT_GELU), act_gelu},
      {nn_activation_new(ctx, NN_ACT_SOFTPLUS), act_softplus},
      {nn_activation_new(ctx, NN_ACT_SOFTMAX), act_softmax},
      {nn_activation_new(ctx, NN_ACT_LOG_SOFTMAX), act_log_softmax},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    ad_tensor *y = nn_layer_forward(cases[k].layer, x, true);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    for (int i = 0; i < 10; i++)
      cr_assert_float_eq(ad_tensor_get(y, i), cases[k].want[i], 1e-12, "%s element %d",
                         nn_layer_kind(cases[k].layer), i);
    nn_layer_free(cases[k].layer);
  }
  cr_assert_eq(nn_activate(ctx, x, NN_ACT_NONE, 0), x);
  cr_assert_str_eq(nn_act_name(NN_ACT_LEAKY_RELU), "leaky_relu");
  cr_assert_str_eq(nn_act_name((nn_act)99), "?");
  cr_assert_null(nn_activation_new(ctx, (nn_act)99));
  expect_status_msg(ctx, AD_ERR_ARG, "unknown activation 99");
  ad_tensor_free(x);
}

/* sigmoid' = s (1 - s) through the layer, checked against the closed form. */
/* A slope that is not finite would make every negative input NaN or an
 * infinity: refused when the layer is made. */
Test(activations, leaky_relu_slope_must_be_finite) {
  cr_assert_null(nn_leaky_relu_new(ctx, NAN));
  expect_status_msg(ctx, AD_ERR_ARG, "leaky_relu: slope nan is not finite");
  cr_assert_null(nn_leaky_relu_new(ctx, -INFINITY));
  expect_status_msg(ctx, AD_ERR_ARG, "leaky_relu: slope -inf is not finite");
  nn_layer *l = nn_leaky_relu_new(ctx, -0.5); /* any finite slope, as PyTorch */
  cr_assert_not_null(l);
  nn_layer_free(l);
}

/* nn.Hardtanh and nn.ReLU6 (torch 1.13 values: hardtanh of [-2, -1, 0.5, 1,
 * 2, 7] is [-1, -1, 0.5, 1, 1, 1], Hardtanh(-2, 3) [-2, -1, 0.5, 1, 2, 3],
 * relu6 [0, 0, 0.5, 1, 2, 6]), as activation layers of kinds "hardtanh"
 * and "relu6" with no parameters, through ad_hardtanh: PyTorch's
 * gradient, 0 at the bounds (torch 1.13: [0, 0, 1, 0, 0, 0], [0, 1, 1, 1,
 * 1, 0], [0, 0, 1, 1, 1, 0]). Dense takes them as its activation. */
Test(activations, hardtanh_and_relu6) {
  const double xv[6] = {-2, -1, 0.5, 1, 2, 7};
  const double want[3][6] = {{-1, -1, 0.5, 1, 1, 1}, {-2, -1, 0.5, 1, 2, 3}, {0, 0, 0.5, 1, 2, 6}};
  const double dwant[3][6] = {{0, 0, 1, 0, 0, 0}, {0, 1, 1, 1, 1, 0}, {0, 0, 1, 1, 1, 0}};
  nn_layer *layers[4] = {nn_activation_new(ctx, NN_ACT_HARDTANH), nn_hardtanh_new(ctx, -2, 3),
                         nn_relu6_new(ctx), nn_activation_new(ctx, NN_ACT_RELU6)};
  const char *kinds[4] = {"hardtanh", "hardtanh", "relu6", "relu6"};
  for (int k = 0; k < 4; k++) {
    cr_assert_not_null(layers[k], "%s", ad_last_error(ctx));
    cr_assert_str_eq(nn_layer_kind(layers[k]), kinds[k]);
    cr_assert_eq(nn_params_count(nn_layer_params(layers[k])), 0);
    for (int d = 0; d < 2; d++) {
      ad_tensor *x = make(ctx, d ? AD_F64 : AD_F32, 1, 6, xv);
      ad_tensor_set_requires_grad(x, true);
      ad_tensor *y = nn_layer_forward(layers[k], x, true);
      cr_assert_not_null(y, "%s", ad_last_error(ctx));
      cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
      for (int i = 0; i < 6; i++) {
        cr_assert(ad_tensor_get(y, i) == want[k < 3 ? k : 2][i], "%s y[%d] = %g", kinds[k], i,
                  ad_tensor_get(y, i));
        cr_assert(ad_tensor_get(x->grad, i) == dwant[k < 3 ? k : 2][i], "%s dx[%d] = %g", kinds[k],
                  i, ad_tensor_get(x->grad, i));
      }
      ad_tensor_free(x);
      ad_tape_reset(ctx);
    }
    nn_layer_free(layers[k]);
  }
  cr_assert_str_eq(nn_act_name(NN_ACT_HARDTANH), "hardtanh");
  cr_assert_str_eq(nn_act_name(NN_ACT_RELU6), "relu6");
  ad_tensor *x = make(ctx, AD_F64, 1, 6, xv);
  ad_tensor *y = nn_activate(ctx, x, NN_ACT_RELU6, 0);
  cr_assert(y && ad_tensor_get(y, 5) == 6 && ad_tensor_get(y, 0) == 0);
  y = nn_activate(ctx, x, NN_ACT_HARDTANH, 0);
  cr_assert(y && ad_tensor_get(y, 5) == 1 && ad_tensor_get(y, 0) == -1);
  ad_tensor_free(x);
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_dense_opts o = {.activation = NN_ACT_RELU6, .dtype = AD_F64};
  nn_layer *dense = nn_dense_new(ctx, 2, 3, &rng, &o);
  cr_assert_not_null(dense, "%s", ad_last_error(ctx));
  nn_layer_free(dense);
}

/* Hardtanh's bounds as PyTorch's constructor takes them: max > min
 * (nn.Hardtanh(1, 1), (1, -1) and a NaN bound raise); infinite ones are
 * fine. */
Test(activations, hardtanh_bounds_checked) {
  cr_assert_null(nn_hardtanh_new(ctx, 1, 1));
  expect_status_msg(ctx, AD_ERR_ARG, "hardtanh: max 1 is not greater than min 1");
  cr_assert_null(nn_hardtanh_new(ctx, 1, -1));
  expect_status_msg(ctx, AD_ERR_ARG, "hardtanh: max -1 is not greater than min 1");
  cr_assert_null(nn_hardtanh_new(ctx, NAN, 1));
  expect_status_msg(ctx, AD_ERR_ARG, "hardtanh: max 1 is not greater than min nan");
  cr_assert_null(nn_hardtanh_new(ctx, -1, NAN));
  expect_status_msg(ctx, AD_ERR_ARG, "hardtanh: max nan is not greater than min -1");
  cr_assert_null(nn_hardtanh_new(NULL, -1, 1));
  cr_assert_null(nn_relu6_new(NULL));
  nn_layer *l = nn_hardtanh_new(ctx, -INFINITY, INFINITY);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_layer_free(l);
}

Test(activations, sigmoid_derivative_closed_form) {
  ad_tensor *x = make(ctx, AD_F64, 2, 5, act_x);
  ad_tensor_set_requires_grad(x, true);
  nn_layer *s = nn_activation_new(ctx, NN_ACT_SIGMOID);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, nn_layer_forward(s, x, true)), NULL), AD_OK);
  for (int i = 0; i < 10; i++)
    cr_assert_float_eq(ad_tensor_get(x->grad, i), act_sigmoid[i] * (1 - act_sigmoid[i]), 1e-15);
  nn_layer_free(s);
  ad_tensor_free(x);
}

/* ---------------------------------------------------------------- dropout */

Test(dropout, statistics_and_gradient) {
  const double p = 0.3;
  nn_layer *d = nn_dropout_new(ctx, p, 11);
  int64_t s[2] = {400, 500};
  ad_tensor *x = ad_full(ctx, AD_F64, 2, s, 2.0);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = nn_layer_forward(d, x, true);
  cr_assert_not_null(y);
  int64_t zeros = 0, n = y->size;
  double sum = 0;
  for (int64_t i = 0; i < n; i++) {
    double v = ad_tensor_get(y, i);
    if (v == 0)
      zeros++;
    else
      cr_assert_float_eq(v, 2.0 / (1 - p), 1e-12); /* kept values are scaled */
    sum += v;
  }
  /* 200,000 Bernoulli(0.3): the fraction dropped is 0.3 +- 0.001 (std) */
  double frac = (double)zeros / (double)n;
  cr_assert(fabs(frac - p) < 5 * sqrt(p * (1 - p) / (double)n), "dropped %g", frac);
  cr_assert(fabs(sum / (double)n - 2.0) < 0.02, "mean %g", sum / (double)n); /* E[y] = x */
  /* the gradient is the mask: 0 or 1/(1-p) where y is 0 or 2/(1-p) */
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK);
  for (int64_t i = 0; i < n; i++)
    cr_assert_float_eq(ad_tensor_get(x->grad, i), ad_tensor_get(y, i) / 2.0, 1e-12);
  ad_tensor_free(x);
  nn_layer_free(d);
}

Test(dropout, eval_mode_seeds_and_errors) {
  nn_layer *a = nn_dropout_new(ctx, 0.5, 5), *b = nn_dropout_new(ctx, 0.5, 5);
  int64_t s[1] = {64};
  ad_tensor *x = ad_ones(ctx, AD_F32, 1, s);
  cr_assert_eq(nn_layer_forward(a, x, false), x); /* identity in evaluation */
  ad_tensor *ya = nn_layer_forward(a, x, true), *yb = nn_layer_forward(b, x, true);
  cr_assert_eq(memcmp(ya->data, yb->data, 64 * sizeof(float)), 0); /* same seed, same mask */
  ad_tensor *ya2 = nn_layer_forward(a, x, true);
  cr_assert_neq(memcmp(ya->data, ya2->data, 64 * sizeof(float)), 0); /* fresh mask per call */
  nn_layer *none = nn_dropout_new(ctx, 0.0, 1);
  cr_assert_eq(nn_layer_forward(none, x, true), x);
  cr_assert_null(nn_dropout_new(ctx, 1.0, 1));
  expect_status_msg(ctx, AD_ERR_ARG, "dropout: p = 1 is outside [0, 1)");
  nn_layer_free(a), nn_layer_free(b), nn_layer_free(none);
  ad_tensor_free(x);
}

/* Every element's mask is the documented draw (chunk c of 4096 elements
 * from an ad_rng seeded with k + c, k one draw of the layer's generator per
 * call), with the same bits on 1, 2 and 3 threads: 300,003 elements, so
 * the chunks are split over the threads and the last one is short. */
Test(dropout, masks_do_not_depend_on_thread_count) {
  const double p = 0.25;
  int64_t s[2] = {3, 100001}, n = 3 * 100001;
  ad_tensor *x = ad_ones(ctx, AD_F32, 2, s);
  float *want = malloc((size_t)n * sizeof *want);
  cr_assert(x && want);
  ad_rng g, r;
  ad_rng_seed(&g, 9);
  ad_rng_next(&g); /* the first call's key */
  uint64_t k = ad_rng_next(&g);
  for (int64_t i = 0; i < n; i++) {
    if (i % 4096 == 0) ad_rng_seed(&r, k + (uint64_t)(i / 4096));
    want[i] = ad_rng_uniform(&r) >= p ? (float)(1 / (1 - p)) : 0.0f;
  }
  static const int threads[] = {1, 2, 3};
  for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
    cr_assert_eq(ad_set_num_threads(threads[t]), AD_OK);
    nn_layer *d = nn_dropout_new(ctx, p, 9);
    cr_assert_not_null(nn_layer_forward(d, x, true));
    ad_tensor *y = nn_layer_forward(d, x, true); /* the second call: key k */
    cr_assert_not_null(y);
    const float *got = y->data;
    for (int64_t i = 0; i < n; i++)
      QUICK_ASSERT(memcmp(&got[i], &want[i], sizeof(float)) == 0,
                   "%d threads: element %lld is %g, not %g", threads[t], (long long)i, got[i],
                   want[i]);
    nn_layer_free(d);
  }
  ad_set_num_threads(1);
  free(want);
  ad_tensor_free(x);
}

/* ------------------------------------------------------- flatten, lambda */

static ad_tensor *double_it(ad_ctx *c, ad_tensor *x, bool training, void *ud) {
  *(int *)ud += training;
  return ad_mul_scalar(c, x, 2.0);
}

Test(layers, flatten_and_lambda) {
  int64_t s[3] = {2, 3, 4};
  ad_tensor *x = ad_ones(ctx, AD_F32, 3, s);
  nn_layer *f = nn_flatten_new(ctx);
  ad_tensor *y = nn_layer_forward(f, x, true);
  cr_assert(y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 12);
  /* an empty batch keeps its features ([0, 12], as PyTorch), so a dense
   * layer after it takes it */
  int64_t s0[3] = {0, 3, 4};
  ad_tensor *x0 = ad_ones(ctx, AD_F32, 3, s0), *y0 = nn_layer_forward(f, x0, true);
  cr_assert(y0 && y0->ndim == 2 && y0->shape[0] == 0 && y0->shape[1] == 12, "%s",
            ad_last_error(ctx));
  ad_tensor_free(x0);
  int calls = 0;
  nn_layer *l = nn_lambda_new(ctx, "double", double_it, &calls);
  cr_assert_str_eq(nn_layer_kind(l), "double");
  ad_tensor *y2 = nn_layer_forward(l, y, true);
  cr_assert_float_eq(ad_tensor_get(y2, 5), 2.0, 0);
  cr_assert_eq(calls, 1);
  cr_assert_null(nn_lambda_new(ctx, NULL, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "lambda: function is NULL");
  nn_layer *anon = nn_lambda_new(ctx, NULL, double_it, &calls);
  cr_assert_str_eq(nn_layer_kind(anon), "lambda");
  nn_layer_free(f), nn_layer_free(l), nn_layer_free(anon), nn_layer_free(NULL);
  ad_tensor_free(x);
}

/* ----------------------------------------------------------------- models */

Test(models, sequential_names_like_pytorch) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_null(nn_model_forward(m, NULL));
  int64_t s[2] = {1, 4};
  ad_tensor *x = ad_ones(ctx, AD_F32, 2, s);
  cr_assert_null(nn_model_forward(m, x));
  expect_status_msg(ctx, AD_ERR_STATE, "no layers");
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 4, 8, &rng, NULL)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_dropout_new(ctx, 0.5, 1)), AD_OK);
  cr_assert_eq(nn_model_add_named(m, "head", nn_dense_new(ctx, 8, 2, &rng, NULL)), AD_OK);
  nn_params *p = nn_model_params(m);
  cr_assert_eq(nn_params_count(p), 4);
  cr_assert_str_eq(nn_params_name(p, 0), "0.weight");
  cr_assert_str_eq(nn_params_name(p, 1), "0.bias");
  cr_assert_str_eq(nn_params_name(p, 2), "head.weight");
  cr_assert_eq(nn_model_param(m, "head.bias")->shape[0], 2);
  cr_assert_eq(nn_model_layer_count(m), 4);
  cr_assert_str_eq(nn_layer_name(nn_model_layer(m, 1)), "1");
  cr_assert_str_eq(nn_layer_kind(nn_model_find_layer(m, "2")), "dropout");
  cr_assert_eq(nn_params_count(p), 4);
  cr_assert_eq(nn_params_numel(p), 4 * 8 + 8 + 8 * 2 + 2);

  /* dropout follows the model's mode */
  cr_assert(nn_model_training(m));
  ad_tensor *y1 = nn_model_forward(m, x);
  nn_model_set_training(m, false);
  ad_tensor *y2 = nn_model_forward(m, x), *y3 = nn_model_forward(m, x);
  cr_assert(y1 && y2 && y3);
  cr_assert_eq(memcmp(y2->data, y3->data, 2 * sizeof(float)), 0);

  /* adding fails cleanly and frees the layer */
  cr_assert_eq(nn_model_add_named(m, "head", nn_activation_new(ctx, NN_ACT_TANH)), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "a layer named 'head' exists");
  cr_assert_eq(nn_model_add_named(m, "a..b", nn_activation_new(ctx, NN_ACT_TANH)), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "nor hold '..'");
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 0, 1, &rng, NULL)), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "dense: in 0");
  cr_assert_eq(nn_model_add(m, nn_model_layer(m, 0)), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "dense '0' already belongs to a model");
  cr_assert_eq(nn_model_layer_count(m), 4);

  /* the summary lists layers, shapes and the total */
  char buf[4096] = {0};
  FILE *f = fmemopen(buf, sizeof buf - 1, "w");
  nn_model_summary(m, f);
  fclose(f);
  cr_assert(strstr(buf, "weight [8,4]"), "%s", buf);
  cr_assert(strstr(buf, "dropout"), "%s", buf);
  cr_assert(strstr(buf, "total parameters: 58"), "%s", buf);
  ad_tensor_free(x);
  nn_model_free(m);
  nn_model_free(NULL);
}

/* The 2-3-1 worked example as a custom model over named parameters, checked
 * against the chain rule written out by hand. */
static ad_tensor *net231(nn_model *m, ad_tensor *x, void *ud) {
  (void)ud;
  ad_ctx *c = nn_model_ctx(m);
  ad_tensor *h = ad_sigmoid(
      c, ad_add(c, ad_matmul(c, x, nn_model_param(m, "w1"), false, true), nn_model_param(m, "b1")));
  return ad_sigmoid(
      c, ad_add(c, ad_matmul(c, h, nn_model_param(m, "w2"), false, true), nn_model_param(m, "b2")));
}

static double sig(double z) { return 1 / (1 + exp(-z)); }

Test(models, custom_model_2_3_1_closed_form) {
  nn_model *m = nn_model_new(ctx, net231, NULL);
  const double w1[6] = {0.1, 0.2, -0.3, 0.4, 0.5, -0.6}, b1[3] = {0.1, -0.1, 0.2};
  const double w2[3] = {0.7, -0.8, 0.9}, b2[1] = {-0.05}, xv[2] = {1.0, 0.5}, t = 1.0;
  int64_t s1[2] = {3, 2}, sb1[1] = {3}, s2[2] = {1, 3}, sb2[1] = {1};
  nn_init zero = {NN_INIT_DEFAULT, 0, 0};
  fill(nn_model_add_param(m, "w1", AD_F64, 2, s1, zero, NULL), w1);
  fill(nn_model_add_param(m, "b1", AD_F64, 1, sb1, zero, NULL), b1);
  fill(nn_model_add_param(m, "w2", AD_F64, 2, s2, zero, NULL), w2);
  fill(nn_model_add_param(m, "b2", AD_F64, 1, sb2, zero, NULL), b2);
  cr_assert_null(nn_model_add_param(m, "w1", AD_F64, 1, sb1, zero, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "a parameter named 'w1' exists");
  ad_tensor *x = make(ctx, AD_F64, 1, 2, xv), *tt = make(ctx, AD_F64, 1, 1, &t);
  ad_tensor *y = nn_model_forward(m, x);
  ad_tensor *l = nn_mse_loss(ctx, y, tt, NN_MEAN);
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
  /* by hand: h = s(W1 x + b1), o = s(w2.h + b2), L = (o - t)^2 */
  double h[3], z2 = b2[0];
  for (int j = 0; j < 3; j++) {
    h[j] = sig(w1[2 * j] * xv[0] + w1[2 * j + 1] * xv[1] + b1[j]);
    z2 += w2[j] * h[j];
  }
  double o = sig(z2), d2 = 2 * (o - t) * o * (1 - o);
  cr_assert_float_eq(ad_tensor_item(y), o, 1e-15);
  cr_assert_float_eq(ad_tensor_item(l), (o - t) * (o - t), 1e-15);
  cr_assert_float_eq(ad_tensor_item(nn_model_param(m, "b2")->grad), d2, 1e-15);
  for (int j = 0; j < 3; j++) {
    double d1 = d2 * w2[j] * h[j] * (1 - h[j]);
    cr_assert_float_eq(ad_tensor_get(nn_model_param(m, "w2")->grad, j), d2 * h[j], 1e-15);
    cr_assert_float_eq(ad_tensor_get(nn_model_param(m, "b1")->grad, j), d1, 1e-15);
    for (int i = 0; i < 2; i++)
      cr_assert_float_eq(ad_tensor_get(nn_model_param(m, "w1")->grad, 2 * j + i), d1 * xv[i],
                         1e-15);
  }
  /* the summary shows the model's own parameters */
  char buf[2048] = {0};
  FILE *f = fmemopen(buf, sizeof buf - 1, "w");
  nn_model_summary(m, f);
  fclose(f);
  cr_assert(strstr(buf, "w1") && strstr(buf, "total parameters: 13"), "%s", buf);
  cr_assert_null(nn_model_new(ctx, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "forward function is NULL");
  ad_tensor_free(x), ad_tensor_free(tt);
  nn_model_free(m);
}

/* A custom model may mix its own parameters with layers it owns. */
static ad_tensor *residual(nn_model *m, ad_tensor *x, void *ud) {
  (void)ud;
  ad_ctx *c = nn_model_ctx(m);
  ad_tensor *h = nn_layer_forward(nn_model_find_layer(m, "fc"), x, nn_model_training(m));
  return ad_mul(c, ad_add(c, x, h), nn_model_param(m, "scale"));
}

Test(models, custom_model_with_layers) {
  ad_rng rng;
  ad_rng_seed(&rng, 2);
  nn_model *m = nn_model_new(ctx, residual, NULL);
  cr_assert_eq(nn_model_add_named(m, "fc", nn_dense_new(ctx, 3, 3, &rng, NULL)), AD_OK);
  int64_t one[1] = {1};
  cr_assert_not_null(
      nn_model_add_param(m, "scale", AD_F32, 1, one, nn_init_make(NN_INIT_CONSTANT, 2, 0), NULL));
  cr_assert_str_eq(nn_params_name(nn_model_params(m), 2), "scale");
  int64_t s[2] = {4, 3};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, s, -1, 1);
  ad_tensor *y = nn_model_forward(m, x);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK);
  cr_assert_not_null(nn_model_param(m, "scale")->grad);
  cr_assert_not_null(nn_model_param(m, "fc.weight")->grad);
  /* a parameter of the model's own named like the layer's ("fc.gain") is
   * shown: it was taken for the layer's by its name, and left out */
  cr_assert_not_null(
      nn_model_add_param(m, "fc.gain", AD_F32, 1, one, nn_init_make(NN_INIT_CONSTANT, 1, 0), NULL));
  char buf[2048] = {0};
  FILE *f = fmemopen(buf, sizeof buf - 1, "w");
  nn_model_summary(m, f);
  fclose(f);
  cr_assert(strstr(buf, "fc.gain ") && strstr(buf, "total parameters: 14"), "%s", buf);
  ad_tensor_free(x);
  nn_model_free(m);
}

/* The graph dump of a Dense layer, as a student sees it: the parameters by
 * the names the model gave them (not "param1"), the product's transpose
 * flag (x W^T), and a scalar op's value. */
static char *dump_of(ad_graph *g, ad_tensor *root) {
  FILE *f = tmpfile();
  cr_assert_not_null(f);
  cr_assert_eq(ad_graph_dot(g, f, root, 0), AD_OK, "%s", ad_last_error(ctx));
  long n = ftell(f);
  cr_assert(n > 0);
  char *s = calloc((size_t)n + 1, 1);
  rewind(f);
  cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  return s;
}

Test(dense, graph_dump_names_parameters_and_shows_attributes) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 3, 2, &rng, NULL)), AD_OK);
  int64_t xs[2] = {4, 3};
  ad_tensor *x = ad_full(ctx, AD_F32, 2, xs, 1.0);
  ad_graph *g = ad_graph_new(ctx);
  ad_tensor *y = ad_mul_scalar(ctx, nn_model_forward(m, x), 0.25);
  char *dot = dump_of(g, ad_sum(ctx, y));
  cr_assert(strstr(dot, "0.weight  (parameter)") && strstr(dot, "0.bias  (parameter)"), "%s", dot);
  cr_assert(!strstr(dot, "param1") && !strstr(dot, "param2"), "%s", dot);
  cr_assert(strstr(dot, "= matmul(input1, 0.weight)\\lB^T\\l"), "%s", dot);
  cr_assert(strstr(dot, "= mul_scalar(add_1)\\lscalar 0.25\\l"), "%s", dot);
  free(dot);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  nn_model_free(m);
}

/* ------------------------------------------------------------ descriptions */

static ad_tensor *identity_fn(ad_ctx *c, ad_tensor *x, bool training, void *ud) {
  (void)c, (void)training, (void)ud;
  return x;
}

static void expect_desc(nn_layer *l, const char *want) { test_expect_desc(ctx, l, want); }

/* Each kind's settings as PyTorch 1.13's repr of the same module writes
 * them (printed by torch for these arguments), under our kind's name. */
Test(layers, describe_as_pytorch_repr) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_conv2d_opts co = {.padding = {1, 1}};
  expect_desc(nn_conv2d_new(ctx, 1, 4, 3, 3, &rng, &co),
              "conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))");
  nn_conv2d_opts to = {
      .stride = {2, 2}, .output_padding = {1, 1}, .no_bias = true, .groups = 2, .dilation = {1, 2}};
  expect_desc(nn_conv_transpose2d_new(ctx, 4, 6, 3, 2, &rng, &to),
              "conv_transpose2d(4, 6, kernel_size=(3, 2), stride=(2, 2), dilation=(1, 2), "
              "output_padding=(1, 1), groups=2, bias=False)");
  nn_conv2d_opts same = {.same = true};
  expect_desc(nn_conv2d_new(ctx, 2, 2, 3, 3, &rng, &same),
              "conv2d(2, 2, kernel_size=(3, 3), stride=(1, 1), padding=same)");
  expect_desc(nn_batch_norm2d_new(ctx, 4, NULL),
              "batch_norm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)");
  nn_batch_norm_opts bo = {.cumulative = true, .no_affine = true, .eps = 1e-3};
  expect_desc(nn_batch_norm1d_new(ctx, 7, &bo),
              "batch_norm1d(7, eps=0.001, momentum=None, affine=False, track_running_stats=True)");
  expect_desc(nn_max_pool2d_new(ctx, 2, 2, NULL),
              "max_pool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)");
  ad_pool2d_opts po = {.stride = {1, 2}, .padding = {1, 0}, .ceil_mode = true, .exclude_pad = true};
  expect_desc(nn_avg_pool2d_new(ctx, 3, 2, &po),
              "avg_pool2d(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), ceil_mode=True, "
              "count_include_pad=False)");
  expect_desc(nn_global_avg_pool2d_new(ctx), "global_avg_pool2d(output_size=1)");
  expect_desc(nn_flatten_new(ctx), "flatten(start_dim=1, end_dim=-1)");
  expect_desc(nn_dropout_new(ctx, 0.25, 1), "dropout(p=0.25)");
  expect_desc(nn_dropout_new(ctx, 0.1 + 0.2, 1), "dropout(p=0.30000000000000004)");
  expect_desc(nn_dense_new(ctx, 784, 10, &rng, NULL),
              "dense(in_features=784, out_features=10, bias=True)");
  nn_dense_opts dop = {.activation = NN_ACT_LEAKY_RELU, .alpha = 0.2, .no_bias = true};
  expect_desc(nn_dense_new(ctx, 3, 2, &rng, &dop),
              "dense(in_features=3, out_features=2, bias=False, activation=leaky_relu, "
              "negative_slope=0.2)");
  expect_desc(nn_hardtanh_new(ctx, -2, 2.5), "hardtanh(min_val=-2.0, max_val=2.5)");
  expect_desc(nn_hardtanh_new(ctx, -INFINITY, 1e16), "hardtanh(min_val=-inf, max_val=1e+16)");
  expect_desc(nn_activation_new(ctx, NN_ACT_HARDTANH), "hardtanh(min_val=-1.0, max_val=1.0)");
  expect_desc(nn_relu6_new(ctx), "relu6()");
  expect_desc(nn_activation_new(ctx, NN_ACT_RELU), "relu()");
  expect_desc(nn_activation_new(ctx, NN_ACT_LOG_SOFTMAX), "log_softmax(dim=-1)");
  expect_desc(nn_activation_new(ctx, NN_ACT_GELU), "gelu(approximate='none')");
  expect_desc(nn_leaky_relu_new(ctx, 0.0001), "leaky_relu(negative_slope=0.0001)");
  expect_desc(nn_leaky_relu_new(ctx, 123.0), "leaky_relu(negative_slope=123.0)");
  nn_rnn_opts ro = {.num_layers = 2, .batch_first = true, .dropout = 0.1};
  expect_desc(nn_lstm_new(ctx, 10, 20, &rng, &ro),
              "lstm(10, 20, num_layers=2, batch_first=True, dropout=0.1)");
  nn_rnn_opts nb = {.no_bias = true};
  expect_desc(nn_rnn_new(ctx, NN_RNN_RELU, 10, 20, &rng, &nb), "rnn_relu(10, 20, bias=False)");
  expect_desc(nn_gru_new(ctx, 3, 5, &rng, NULL), "gru(3, 5)");
  nn_rnn_opts bi = {.num_layers = 2, .batch_first = true, .dropout = 0.1, .bidirectional = true};
  expect_desc(nn_lstm_new(ctx, 10, 20, &rng, &bi),
              "lstm(10, 20, num_layers=2, batch_first=True, dropout=0.1, bidirectional=True)");
  nn_rnn_opts bnb = {.no_bias = true, .bidirectional = true};
  expect_desc(nn_gru_new(ctx, 3, 5, &rng, &bnb), "gru(3, 5, bias=False, bidirectional=True)");
  nn_mha_opts mo = {.batch_first = true, .dropout = 0.1, .causal = true};
  expect_desc(nn_multihead_attention_new(ctx, 16, 4, &rng, &mo),
              "multihead_attention(embed_dim=16, num_heads=4, dropout=0.1, batch_first=True, "
              "causal=True)");
  nn_embedding_opts eo = {.padding = true, .padding_idx = -1};
  expect_desc(nn_embedding_new(ctx, 100, 8, &rng, &eo), "embedding(100, 8, padding_idx=99)");
  expect_desc(nn_embedding_new(ctx, 100, 8, &rng, NULL), "embedding(100, 8)");
  int64_t ns[2] = {3, 4};
  expect_desc(nn_layer_norm_new(ctx, 1, ns, NULL),
              "layer_norm((3,), eps=1e-05, elementwise_affine=True)");
  nn_layer_norm_opts lo = {.no_affine = true, .eps = 1e-6};
  expect_desc(nn_layer_norm_new(ctx, 2, ns, &lo),
              "layer_norm((3, 4), eps=1e-06, elementwise_affine=False)");
  expect_desc(nn_lambda_new(ctx, "swish", identity_fn, NULL), "swish()");

  /* cut short to fit, NUL-terminated; NULL arguments */
  nn_layer *l = nn_dropout_new(ctx, 0.5, 1);
  char small[8], buf[16] = "untouched";
  cr_assert_str_eq(nn_layer_describe(l, small, sizeof small), "dropout");
  cr_assert_null(nn_layer_describe(l, buf, 0));
  cr_assert_null(nn_layer_describe(NULL, buf, sizeof buf));
  cr_assert_null(nn_layer_describe(l, NULL, 4));
  cr_assert_str_eq(buf, "untouched");
  nn_layer_free(l);
}

/* The output shape each layer gave in its last successful pass, through
 * every entry point that runs a layer; a failed pass leaves it. */
Test(layers, output_shape_of_the_last_pass) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  int64_t d[AD_MAX_DIMS];
  nn_layer *fc = nn_dense_new(ctx, 3, 2, &rng, NULL);
  cr_assert_eq(nn_layer_output_shape(fc, d), -1);
  cr_assert_eq(nn_layer_output_shape(NULL, d), -1);
  int64_t s[3] = {5, 4, 3};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 3, s, -1, 1);
  cr_assert_not_null(nn_layer_forward(fc, x, true));
  cr_assert_eq(nn_layer_output_shape(fc, d), 3);
  cr_assert(d[0] == 5 && d[1] == 4 && d[2] == 2);
  cr_assert_eq(nn_layer_output_shape(fc, NULL), 3);
  ad_tensor *bad = ad_rand(ctx, &rng, AD_F32, 2, s, -1, 1); /* [5, 4]: 4 features, not 3 */
  cr_assert_null(nn_layer_forward(fc, bad, true));
  ad_clear_error(ctx);
  cr_assert_eq(nn_layer_output_shape(fc, d), 3);
  cr_assert_eq(d[2], 2);
  nn_layer_free(fc);

  nn_rnn_opts bf = {.batch_first = true};
  nn_layer *gru = nn_gru_new(ctx, 3, 6, &rng, &bf);
  cr_assert_not_null(nn_rnn_forward(gru, x, NULL, NULL, NULL, 0, true, NULL, NULL));
  cr_assert_eq(nn_layer_output_shape(gru, d), 3);
  cr_assert(d[0] == 5 && d[1] == 4 && d[2] == 6);
  nn_layer_free(gru);

  nn_layer *mha = nn_multihead_attention_new(ctx, 3, 1, &rng, NULL);
  int64_t ks[3] = {7, 4, 3};
  ad_tensor *k = ad_rand(ctx, &rng, AD_F32, 3, ks, -1, 1);
  cr_assert_not_null(nn_multihead_attention(mha, x, k, k, NULL, NULL));
  cr_assert_eq(nn_layer_output_shape(mha, d), 3);
  cr_assert(d[0] == 5 && d[1] == 4 && d[2] == 3);
  nn_layer_free(mha);

  nn_layer *id = nn_lambda_new(ctx, "id", identity_fn, NULL);
  cr_assert_not_null(nn_layer_forward(id, bad, false));
  cr_assert_eq(nn_layer_output_shape(id, d), 2);
  nn_layer_free(id);
  ad_tensor_free(x), ad_tensor_free(bad), ad_tensor_free(k);
}

/* The summary: settings wrapped in the kind column, the output shapes of
 * the last pass, no spaces at the ends of lines. */
Test(models, summary_shows_settings_and_output_shapes) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_model *m = nn_sequential_new(ctx);
  nn_conv2d_opts co = {.padding = {1, 1}};
  cr_assert_eq(nn_model_add(m, nn_conv2d_new(ctx, 1, 4, 3, 3, &rng, &co)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_batch_norm2d_new(ctx, 4, NULL)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_max_pool2d_new(ctx, 2, 2, NULL)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_flatten_new(ctx)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 4 * 4 * 4, 10, &rng, NULL)), AD_OK);
  char before[4096] = {0}, after[4096] = {0};
  FILE *f = fmemopen(before, sizeof before - 1, "w");
  nn_model_summary(m, f);
  fclose(f);
  int64_t s[4] = {2, 1, 8, 8};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 4, s, 0, 1);
  cr_assert_not_null(nn_model_forward(m, x), "%s", ad_last_error(ctx));
  f = fmemopen(after, sizeof after - 1, "w");
  nn_model_summary(m, f);
  fclose(f);
  const char *want = "layer  kind                                                   output     "
                     "parameters                       count\n"
                     "0      conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1),        [2,4,8,8]  "
                     "weight [4,1,3,3]                    36\n"
                     "         padding=(1, 1))                                                 "
                     "bias [4]                             4\n"
                     "1      batch_norm2d(4, eps=1e-05, momentum=0.1, affine=True,  [2,4,8,8]  "
                     "weight [4]                           4\n"
                     "         track_running_stats=True)                                       "
                     "bias [4]                             4\n"
                     "                                                                         "
                     "running_mean [4] (buffer)            4\n"
                     "                                                                         "
                     "running_var [4] (buffer)             4\n"
                     "                                                                         "
                     "num_batches_tracked [] (buffer)      1\n"
                     "2      relu()                                                 [2,4,8,8]  -   "
                     "                                 0\n"
                     "3      max_pool2d(kernel_size=2, stride=2, padding=0,         [2,4,4,4]  -   "
                     "                                 0\n"
                     "         dilation=1, ceil_mode=False)\n"
                     "4      flatten(start_dim=1, end_dim=-1)                       [2,64]     -   "
                     "                                 0\n"
                     "5      dense(in_features=64, out_features=10, bias=True)      [2,10]     "
                     "weight [10,64]                     640\n"
                     "                                                                         "
                     "bias [10]                           10\n"
                     "total parameters: 698\n"
                     "non-trainable buffers: 9\n";
  cr_assert_str_eq(after, want, "%s", after);
  /* before any pass there is no output column */
  cr_assert(strncmp(before, "layer  kind  ", 13) == 0 && strstr(before, "  parameters  ") &&
                !strstr(before, "output") && strstr(before, "\n5      dense("),
            "%s", before);
  ad_tensor_free(x);
  nn_model_free(m);
}
