/* test_nn_cnn1d.c: the 1-D convolution and pooling layers and the adaptive
 * average pools (nn_conv1d_new, nn_max_pool1d_new, nn_avg_pool1d_new,
 * nn_adaptive_avg_pool1d_new, nn_adaptive_avg_pool2d_new) against PyTorch
 * 1.13. The reference values (outputs and the gradients of sum(y * gy) in
 * the input, weight and bias) are in tests/cnn1d_fixtures.h and a state
 * dict in tests/fixtures/torch_cnn1d.safetensors, both written by
 * tools/gen_cnn1d_fixtures.py in float64 from inputs float32 holds exactly:
 * float64 is compared to 1e-12, float32 to a float tolerance. Also first-
 * and second-order derivatives against central differences, PyTorch's
 * names, layouts, initialisation and reprs, the summary, a checkpoint both
 * ways, and bad arguments and inputs. */
#include "cnn1d_fixtures.h"
#include "nn.h"
#include "nn_io.h"
#include "test_layer_fd.h"
#include "test_layer_values.h"
#include "test_tmpdir.h"
#include "test_tensor_of.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define CNN1D_FIXTURE "tests/fixtures/torch_cnn1d.safetensors"
#define LEN(a)        ((int64_t)(sizeof(a) / sizeof((a)[0])))

TEST_TMPDIR_SUITE(cnn1d, "nn-cnn1d");

static void expect_msg(ad_status st, const char *needle) { expect_status_msg(ctx, st, needle); }

static double tol_of(ad_dtype dt) { return dt == AD_F64 ? 1e-12 : 2e-6; }

/* ---------------------------------------------------------- vs PyTorch */

typedef struct ref {
  const double *v;
  int64_t n;
} ref;
#define REF(a)                                                                                     \
  { a, LEN(a) }

/* Runs l on x (shape), backward of sum(y * gy); compares y and dx, and
 * the parameters' gradients with dp (np of them: weight, bias). */
static void expect_layer(nn_layer *l, ad_dtype dt, int nd, const int64_t *shape, ref x, ref gy,
                         ref y, ref dx, int np, const ref *dp) {
  char what[96];
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  ad_tensor *xt = tensor_of(dt, nd, shape, x.v);
  cr_assert_eq(xt->size, x.n);
  ad_tensor_set_requires_grad(xt, true);
  ad_tensor *yt = nn_layer_forward(l, xt, true);
  snprintf(what, sizeof what, "%s %s y", nn_layer_kind(l), ad_dtype_name(dt));
  test_expect_values(ctx, yt, y.v, y.n, tol_of(dt), what);
  cr_assert_eq(yt->ndim, nd, "%s: rank %d", what, yt->ndim);
  int64_t os[AD_MAX_DIMS];
  cr_assert_eq(nn_layer_output_shape(l, os), nd);
  for (int d = 0; d < nd; d++) cr_assert_eq(os[d], yt->shape[d]);
  ad_tensor *g = tensor_of(dt, yt->ndim, yt->shape, gy.v);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, yt, g)), NULL), AD_OK, "%s",
               ad_last_error(ctx));
  snprintf(what, sizeof what, "%s %s dx", nn_layer_kind(l), ad_dtype_name(dt));
  test_expect_values(ctx, xt->grad, dx.v, dx.n, tol_of(dt), what);
  for (int i = 0; i < np; i++) {
    ad_tensor *p = nn_params_tensor(nn_layer_params(l), i);
    snprintf(what, sizeof what, "%s %s d%s", nn_layer_kind(l), ad_dtype_name(dt),
             nn_params_name(nn_layer_params(l), i));
    test_expect_values(ctx, p->grad, dp[i].v, dp[i].n, tol_of(dt), what);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(xt), ad_tensor_free(g);
}

typedef struct conv_case {
  int64_t in, out, k;
  nn_conv1d_opts o;
  int nd;
  int64_t shape[3];
  ref x, gy, w, b, y, dx, dw, db; /* b, db empty without bias */
} conv_case;

#define CONV_REFS(c) REF(conv_##c##_x), REF(conv_##c##_gy), REF(conv_##c##_w)
static const double none[1] = {0};

static void conv_matches(ad_dtype dt) {
  const conv_case cases[] = {
      {3,
       4,
       3,
       {0},
       3,
       {2, 3, 9},
       CONV_REFS(basic),
       REF(conv_basic_b),
       REF(conv_basic_y),
       REF(conv_basic_dx),
       REF(conv_basic_dw),
       REF(conv_basic_db)},
      {4,
       6,
       3,
       {.stride = 2, .padding = 1, .dilation = 2, .groups = 2},
       3,
       {2, 4, 11},
       CONV_REFS(sdg),
       REF(conv_sdg_b),
       REF(conv_sdg_y),
       REF(conv_sdg_dx),
       REF(conv_sdg_dw),
       REF(conv_sdg_db)},
      {2,
       3,
       4,
       {.same = true, .no_bias = true},
       3,
       {1, 2, 7},
       CONV_REFS(same),
       {none, 0},
       REF(conv_same_y),
       REF(conv_same_dx),
       REF(conv_same_dw),
       {none, 0}},
      {3,
       6,
       2,
       {.stride = 3, .groups = 3},
       2,
       {3, 8},
       CONV_REFS(dw),
       REF(conv_dw_b),
       REF(conv_dw_y),
       REF(conv_dw_dx),
       REF(conv_dw_dw),
       REF(conv_dw_db)},
  };
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    const conv_case *c = &cases[k];
    nn_conv1d_opts o = c->o;
    o.dtype = dt;
    nn_layer *l = nn_conv1d_new(ctx, c->in, c->out, c->k, &rng, &o);
    cr_assert_not_null(l, "case %zu: %s", k, ad_last_error(ctx));
    ad_tensor *w = nn_params_find(nn_layer_params(l), "weight");
    ad_tensor *b = nn_params_find(nn_layer_params(l), "bias");
    cr_assert(w && w->size == c->w.n && (b != NULL) == (c->b.n > 0), "case %zu", k);
    for (int64_t i = 0; i < w->size; i++) ad_tensor_set(w, i, c->w.v[i]);
    for (int64_t i = 0; b && i < b->size; i++) ad_tensor_set(b, i, c->b.v[i]);
    ref dp[2] = {c->dw, c->db};
    expect_layer(l, dt, c->nd, c->shape, c->x, c->gy, c->y, c->dx, b ? 2 : 1, dp);
    nn_layer_free(l);
  }
}

Test(cnn1d, conv1d_matches_pytorch_f64) { conv_matches(AD_F64); }
Test(cnn1d, conv1d_matches_pytorch_f32) { conv_matches(AD_F32); }

typedef enum { MAX1, AVG1, ADA1, ADA2 } pool_kind;

typedef struct pool_case {
  pool_kind kind;
  int64_t k, oh; /* the kernel, or the output size (1-D: k; 2-D: oh x k) */
  nn_pool1d_opts o;
  int nd;
  int64_t shape[4];
  ref x, gy, y, dx;
} pool_case;

#define P_REFS(p) REF(p##_x), REF(p##_gy), REF(p##_y), REF(p##_dx)

static const pool_case pools[] = {
    {MAX1, 2, 0, {0}, 3, {2, 3, 8}, P_REFS(pool_max_a)},
    {MAX1,
     3,
     0,
     {.stride = 2, .padding = 1, .dilation = 2, .ceil_mode = true},
     3,
     {2, 2, 10},
     P_REFS(pool_max_b)},
    {MAX1, 3, 0, {.stride = 2, .ceil_mode = true}, 2, {2, 10}, P_REFS(pool_max_u)},
    {AVG1, 3, 0, {0}, 3, {2, 3, 9}, P_REFS(pool_avg_a)},
    {AVG1,
     4,
     0,
     {.stride = 3, .padding = 2, .ceil_mode = true, .exclude_pad = true},
     3,
     {2, 2, 11},
     P_REFS(pool_avg_b)},
    {AVG1, 3, 0, {.stride = 2, .padding = 1, .ceil_mode = true}, 3, {2, 2, 10}, P_REFS(pool_avg_c)},
    {ADA1, 3, 0, {0}, 3, {2, 3, 10}, P_REFS(ad1_l10_3)},
    {ADA1, 4, 0, {0}, 3, {2, 2, 7}, P_REFS(ad1_l7_4)},
    {ADA1, 5, 0, {0}, 3, {1, 2, 3}, P_REFS(ad1_l3_5)},
    {ADA1, 4, 0, {0}, 3, {2, 2, 8}, P_REFS(ad1_l8_4)},
    {ADA1, 1, 0, {0}, 3, {2, 3, 6}, P_REFS(ad1_l6_1)},
    {ADA1, 4, 0, {0}, 2, {3, 10}, P_REFS(ad1_u10_4)},
    {ADA2, 4, 3, {0}, 4, {2, 3, 10, 7}, P_REFS(ad2_h10w7_3x4)},
    {ADA2, 3, 4, {0}, 4, {2, 2, 8, 6}, P_REFS(ad2_h8w6_4x3)},
    {ADA2, 1, 1, {0}, 4, {1, 2, 5, 5}, P_REFS(ad2_h5w5_1x1)},
    {ADA2, 5, 2, {0}, 3, {2, 6, 4}, P_REFS(ad2_u6x4_2x5)},
    {ADA2, 4, 7, {0}, 4, {1, 2, 7, 6}, P_REFS(ad2_h7w6_7x4)},
};
#define N_POOLS ((int)(sizeof pools / sizeof pools[0]))

static nn_layer *pool_layer(const pool_case *c) {
  switch (c->kind) {
  case MAX1:
    return nn_max_pool1d_new(ctx, c->k, &c->o);
  case AVG1:
    return nn_avg_pool1d_new(ctx, c->k, &c->o);
  case ADA1:
    return nn_adaptive_avg_pool1d_new(ctx, c->k);
  case ADA2:
    break;
  }
  return nn_adaptive_avg_pool2d_new(ctx, c->oh, c->k);
}

static void pools_match(ad_dtype dt) {
  for (int k = 0; k < N_POOLS; k++) {
    const pool_case *c = &pools[k];
    nn_layer *l = pool_layer(c);
    cr_assert_not_null(l, "case %d: %s", k, ad_last_error(ctx));
    cr_assert_eq(nn_params_count(nn_layer_params(l)), 0);
    expect_layer(l, dt, c->nd, c->shape, c->x, c->gy, c->y, c->dx, 0, NULL);
    nn_layer_free(l);
  }
}

Test(cnn1d, pools_match_pytorch_f64) { pools_match(AD_F64); }
Test(cnn1d, pools_match_pytorch_f32) { pools_match(AD_F32); }

/* Output size 1 is global average pooling, bit for bit; and a pooled
 * axis whose output size divides its length gives average pooling's bits
 * (kernel = stride = L / n). */
Test(cnn1d, adaptive_special_sizes_are_the_plain_pools) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  int64_t s4[4] = {2, 3, 6, 8}, s3[3] = {2, 3, 8}, v4[4] = {2, 3, 1, 8};
  ad_tensor *x = ad_randn(ctx, &rng, AD_F32, 4, s4, 0, 1);
  ad_tensor *x1 = ad_randn(ctx, &rng, AD_F32, 3, s3, 0, 1);
  nn_layer *g2 = nn_adaptive_avg_pool2d_new(ctx, 1, 1), *g1 = nn_adaptive_avg_pool1d_new(ctx, 1);
  nn_layer *d2 = nn_adaptive_avg_pool2d_new(ctx, 3, 2), *d1 = nn_adaptive_avg_pool1d_new(ctx, 4);
  cr_assert(g2 && g1 && d2 && d1, "%s", ad_last_error(ctx));
  ad_tensor *a = nn_layer_forward(g2, x, false), *b = ad_global_avg_pool2d(ctx, x);
  ad_tensor *c = nn_layer_forward(g1, x1, false),
            *d = ad_global_avg_pool2d(ctx, ad_reshape(ctx, x1, 4, v4));
  ad_tensor *e = nn_layer_forward(d2, x, false), *f = ad_avg_pool2d(ctx, x, 2, 4, NULL);
  ad_tensor *g = nn_layer_forward(d1, x1, false),
            *h = ad_avg_pool2d(ctx, ad_reshape(ctx, x1, 4, v4), 1, 2, NULL);
  cr_assert(a && b && c && d && e && f && g && h, "%s", ad_last_error(ctx));
  cr_assert_eq(a->size, 6);
  cr_assert_eq(memcmp(a->data, b->data, 6 * sizeof(float)), 0);
  cr_assert(c->ndim == 3 && c->shape[2] == 1 && memcmp(c->data, d->data, 6 * sizeof(float)) == 0);
  cr_assert(e->size == 36 && memcmp(e->data, f->data, 36 * sizeof(float)) == 0);
  cr_assert(g->size == 24 && memcmp(g->data, h->data, 24 * sizeof(float)) == 0);
  nn_layer_free(g2), nn_layer_free(g1), nn_layer_free(d2), nn_layer_free(d1);
  ad_tensor_free(x), ad_tensor_free(x1);
}

/* ---------------------------------------------------------- derivatives */

/* first and second derivatives against central differences
 * (test_layer_fd.h) */
static void check_derivatives(nn_layer *l, int nd, const int64_t *shape) {
  test_layer_derivatives(ctx, l, nd, shape, NULL);
}

/* Conv1d in x, weight and bias (its second derivatives, bilinear in x and
 * w, are not zero), to the first and second order. */
Test(cnn1d, conv1d_derivatives_first_and_second_order) {
  ad_rng rng;
  ad_rng_seed(&rng, 2);
  int64_t s[3] = {2, 4, 9}, su[2] = {4, 9};
  nn_layer *l = nn_conv1d_new(
      ctx, 4, 2, 3, &rng,
      &(nn_conv1d_opts){.stride = 2, .padding = 1, .dilation = 2, .groups = 2, .dtype = AD_F64});
  check_derivatives(l, 3, s);
  check_derivatives(l, 2, su);
  nn_layer_free(l);
  l = nn_conv1d_new(ctx, 4, 3, 2, &rng, &(nn_conv1d_opts){.same = true, .dtype = AD_F64});
  check_derivatives(l, 3, s);
  nn_layer_free(l);
}

/* The pools as functions of x for ad_gradcheck and ad_gradgradcheck. */
static ad_tensor *run_pool(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c, (void)n;
  return nn_layer_forward(ud, in[0], true);
}

Test(cnn1d, pools_gradcheck_first_and_second_order) {
  ad_rng rng;
  ad_rng_seed(&rng, 4);
  for (int k = 0; k < N_POOLS; k++) {
    const pool_case *c = &pools[k];
    nn_layer *l = pool_layer(c);
    cr_assert_not_null(l);
    /* values spread well apart, so that no max-pool window has a near tie
     * within the differences' step */
    ad_tensor *x = ad_zeros(ctx, AD_F64, c->nd, c->shape);
    cr_assert_not_null(x);
    for (int64_t i = 0; i < x->size; i++)
      ad_tensor_set(x, i, 0.01 * (double)((i * 37) % 101) + 0.1 * ad_rng_uniform(&rng) / 101);
    ad_tensor_set_requires_grad(x, true);
    ad_check_report r;
    cr_assert_eq(ad_gradcheck(ctx, run_pool, l, 1, &x, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
    cr_assert(r.passed, "case %d (%s): first order, [%lld] %g vs %g", k, nn_layer_kind(l),
              (long long)r.index, r.analytic, r.numeric);
    cr_assert_eq(ad_gradgradcheck(ctx, run_pool, l, 1, &x, NULL, &r), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(r.passed, "case %d (%s): second order, [%lld] %g vs %g", k, nn_layer_kind(l),
              (long long)r.index, r.analytic, r.numeric);
    ad_tensor_free(x);
    nn_layer_free(l);
  }
}

/* ------------------------------------------------ names, init, describe */

Test(cnn1d, conv1d_has_pytorch_names_layout_and_init) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  nn_layer *c = nn_conv1d_new(ctx, 4, 6, 5, &rng, &(nn_conv1d_opts){.groups = 2});
  cr_assert_not_null(c, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(c), "conv1d");
  cr_assert_eq(nn_params_count(nn_layer_params(c)), 2);
  cr_assert_str_eq(nn_params_name(nn_layer_params(c), 0), "weight");
  cr_assert_str_eq(nn_params_name(nn_layer_params(c), 1), "bias");
  ad_tensor *w = nn_params_tensor(nn_layer_params(c), 0),
            *b = nn_params_tensor(nn_layer_params(c), 1);
  cr_assert(w->ndim == 3 && w->shape[0] == 6 && w->shape[1] == 2 && w->shape[2] == 5);
  cr_assert(b->ndim == 1 && b->shape[0] == 6 && w->dtype == AD_F32);
  double bound = 1 / sqrt(2.0 * 5), wmax = 0, bmax = 0;
  for (int64_t i = 0; i < w->size; i++) wmax = fmax(wmax, fabs(ad_tensor_get(w, i)));
  for (int64_t i = 0; i < b->size; i++) bmax = fmax(bmax, fabs(ad_tensor_get(b, i)));
  cr_assert(wmax <= bound && wmax > 0.8 * bound, "weights within 1/sqrt(fan_in): %g", wmax);
  cr_assert(bmax <= bound && bmax > 0, "biases within 1/sqrt(fan_in): %g", bmax);
  nn_layer_free(c);
  /* no bias, and an initializer of one's own */
  c = nn_conv1d_new(
      ctx, 2, 2, 3, NULL,
      &(nn_conv1d_opts){.no_bias = true, .weight_init = nn_init_make(NN_INIT_CONSTANT, 0.5, 0)});
  cr_assert_not_null(c, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_params_count(nn_layer_params(c)), 1);
  cr_assert_eq(ad_tensor_get(nn_params_tensor(nn_layer_params(c), 0), 7), 0.5);
  nn_layer_free(c);
}

static void expect_desc(nn_layer *l, const char *want) { test_expect_desc(ctx, l, want); }

/* PyTorch 1.13's reprs of the same modules (printed by torch for these
 * arguments), under our kinds' names; the average pool's ceil_mode and
 * count_include_pad are added when not their defaults, as avg_pool2d's. */
Test(cnn1d, describe_is_pytorch_repr) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  expect_desc(nn_conv1d_new(ctx, 1, 32, 3, &rng, NULL),
              "conv1d(1, 32, kernel_size=(3,), stride=(1,))");
  expect_desc(
      nn_conv1d_new(ctx, 4, 8, 3, &rng,
                    &(nn_conv1d_opts){
                        .stride = 2, .padding = 1, .dilation = 2, .groups = 2, .no_bias = true}),
      "conv1d(4, 8, kernel_size=(3,), stride=(2,), padding=(1,), dilation=(2,), groups=2, "
      "bias=False)");
  expect_desc(nn_conv1d_new(ctx, 4, 8, 3, &rng, &(nn_conv1d_opts){.same = true}),
              "conv1d(4, 8, kernel_size=(3,), stride=(1,), padding=same)");
  expect_desc(nn_max_pool1d_new(ctx, 2, NULL),
              "max_pool1d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)");
  expect_desc(
      nn_max_pool1d_new(
          ctx, 3, &(nn_pool1d_opts){.stride = 2, .padding = 1, .dilation = 2, .ceil_mode = true}),
      "max_pool1d(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)");
  expect_desc(nn_avg_pool1d_new(ctx, 2, NULL),
              "avg_pool1d(kernel_size=(2,), stride=(2,), padding=(0,))");
  expect_desc(
      nn_avg_pool1d_new(
          ctx, 3,
          &(nn_pool1d_opts){.stride = 2, .padding = 1, .ceil_mode = true, .exclude_pad = true}),
      "avg_pool1d(kernel_size=(3,), stride=(2,), padding=(1,), ceil_mode=True, "
      "count_include_pad=False)");
  expect_desc(nn_adaptive_avg_pool1d_new(ctx, 3), "adaptive_avg_pool1d(output_size=3)");
  expect_desc(nn_adaptive_avg_pool2d_new(ctx, 3, 4), "adaptive_avg_pool2d(output_size=(3, 4))");
  expect_desc(nn_adaptive_avg_pool2d_new(ctx, 5, 5), "adaptive_avg_pool2d(output_size=5)");
}

/* ----------------------------------------------------------- checkpoint */

/* The generator's model: Conv1d(2, 4, 3, padding=1) ReLU MaxPool1d(2)
 * Conv1d(4, 4, 3, groups=2) AvgPool1d(2, ceil_mode=True)
 * AdaptiveAvgPool1d(3) Flatten Linear(12, 3). */
static nn_model *ck_model(void) {
  ad_rng rng;
  ad_rng_seed(&rng, 9);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_conv1d_new(ctx, 2, 4, 3, &rng, &(nn_conv1d_opts){.padding = 1}));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_max_pool1d_new(ctx, 2, NULL));
  nn_model_add(m, nn_conv1d_new(ctx, 4, 4, 3, &rng, &(nn_conv1d_opts){.groups = 2}));
  nn_model_add(m, nn_avg_pool1d_new(ctx, 2, &(nn_pool1d_opts){.ceil_mode = true}));
  nn_model_add(m, nn_adaptive_avg_pool1d_new(ctx, 3));
  nn_model_add(m, nn_flatten_new(ctx));
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 12, 3, &rng, NULL)), AD_OK, "%s",
               ad_last_error(ctx));
  return m;
}

/* PyTorch's state dict loads under its names and gives PyTorch's output;
 * saved and loaded into a fresh model, the same output again. */
Test(cnn1d, pytorch_state_dict_loads_and_round_trips) {
  nn_model *m = ck_model();
  const char *names[] = {"0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"};
  cr_assert_eq(nn_params_count(nn_model_params(m)), 6);
  for (int i = 0; i < 6; i++) cr_assert_str_eq(nn_params_name(nn_model_params(m), i), names[i]);
  cr_assert_eq(nn_model_load(m, NULL, CNN1D_FIXTURE), AD_OK, "%s", ad_last_error(ctx));
  int64_t s[3] = {2, 2, 16};
  ad_tensor *x = tensor_of(AD_F32, 3, s, ck_x);
  nn_model_set_training(m, false);
  test_expect_values(ctx, nn_model_forward(m, x), ck_y, LEN(ck_y), 2e-6, "loaded model");
  ad_tape_reset(ctx);
  const char *path = test_path("cnn1d.safetensors");
  cr_assert_eq(nn_model_save(m, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  nn_model *m2 = ck_model();
  cr_assert_eq(nn_model_load(m2, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  nn_model_set_training(m2, false);
  ad_tensor *y1 = nn_model_forward(m, x), *y2 = nn_model_forward(m2, x);
  cr_assert(y1 && y2, "%s", ad_last_error(ctx));
  cr_assert_eq(memcmp(y1->data, y2->data, (size_t)y1->size * sizeof(float)), 0);
  /* the summary lists each layer with its output shape */
  char text[4096] = {0};
  FILE *f = fmemopen(text, sizeof text - 1, "w");
  cr_assert_not_null(f);
  nn_model_summary(m, f);
  fclose(f);
  const char *want[] = {"conv1d(2, 4, kernel_size=(3,), stride=(1,),",
                        "padding=(1,))",
                        "[2,4,16]",
                        "max_pool1d(kernel_size=2, stride=2,",
                        "[2,4,8]",
                        "avg_pool1d(kernel_size=(2,), stride=(2,),",
                        "[2,4,3]",
                        "adaptive_avg_pool1d(output_size=3)"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    cr_assert(strstr(text, want[i]), "summary lacks \"%s\":\n%s", want[i], text);
  ad_tensor_free(x);
  nn_model_free(m);
  nn_model_free(m2);
}

/* -------------------------------------------------------------- misuse */

Test(cnn1d, bad_arguments_are_refused_when_made) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  cr_assert_null(nn_conv1d_new(ctx, 3, 4, 3, &rng, &(nn_conv1d_opts){.groups = 2}));
  expect_msg(AD_ERR_ARG, "conv1d: channels 3 -> 4, kernel 3 and groups 2");
  cr_assert_null(nn_conv1d_new(ctx, 4, 3, 3, &rng, &(nn_conv1d_opts){.groups = 2}));
  expect_msg(AD_ERR_ARG, "groups must divide both channel counts");
  cr_assert_null(nn_conv1d_new(ctx, 3, 4, 0, &rng, NULL));
  expect_msg(AD_ERR_ARG, "kernel 0");
  cr_assert_null(nn_conv1d_new(ctx, 0, 4, 3, &rng, NULL));
  expect_msg(AD_ERR_ARG, "channels 0 -> 4");
  cr_assert_null(nn_conv1d_new(ctx, 3, 4, 3, &rng, &(nn_conv1d_opts){.groups = -1}));
  expect_msg(AD_ERR_ARG, "groups -1");
  cr_assert_null(nn_conv1d_new(ctx, 3, 4, 3, &rng, &(nn_conv1d_opts){.dtype = AD_I32}));
  expect_msg(AD_ERR_DTYPE, "conv1d: parameters must be float, got i32");
  cr_assert_null(nn_conv1d_new(ctx, 3, 4, 3, NULL, NULL));
  expect_msg(AD_ERR_NULL, "rng");
  static const struct {
    nn_conv1d_opts o;
    const char *want;
  } copts[] = {
      {{.stride = -1}, "conv1d: stride and dilation must be >= 1 (0 means 1) (stride -1"},
      {{.dilation = -2}, "stride and dilation must be >= 1"},
      {{.padding = -1}, "conv1d: padding must be >= 0"},
      {{.stride = INT64_MAX}, "must be at most 2^40"},
      {{.padding = INT64_C(1) << 41}, "must be at most 2^40"},
      {{.same = true, .stride = 2}, "conv1d: padding 'same' needs stride 1"},
  };
  for (size_t k = 0; k < sizeof copts / sizeof copts[0]; k++) {
    cr_assert_null(nn_conv1d_new(ctx, 2, 2, 3, &rng, &copts[k].o), "case %zu", k);
    expect_msg(AD_ERR_ARG, copts[k].want);
  }
  /* a kernel or channel count too large for a tensor: the error, without
   * overflow first (UBSan) */
  int64_t big = INT64_C(1) << 40;
  cr_assert_null(nn_conv1d_new(ctx, 1, big, big, &rng, NULL));
  expect_msg(AD_ERR_ARG, "is too large");
  cr_assert_null(nn_conv1d_new(ctx, big, 1, INT64_MAX, &rng, NULL));
  expect_msg(AD_ERR_ARG, "is too large");
  /* pools: kernel, stride, dilation and padding as PyTorch refuses them */
  static const struct {
    bool avg;
    int64_t k;
    nn_pool1d_opts o;
    const char *want;
  } popts[] = {
      {false, 0, {0}, "max_pool1d: kernel must be in [1, 2^30] (kernel 0"},
      {true, -3, {0}, "avg_pool1d: kernel must be in [1, 2^30]"},
      {false, INT64_MAX, {0}, "kernel must be in [1, 2^30]"},
      {false, 2, {.stride = -1}, "max_pool1d: stride must be in [1, 2^30]"},
      {true, 2, {.stride = INT64_C(1) << 31}, "avg_pool1d: stride must be in [1, 2^30]"},
      {false, 2, {.dilation = -1}, "max_pool1d: dilation must be in [1, 2^30]"},
      {true, 2, {.dilation = 2}, "avg_pool1d: dilation is for max_pool1d only"},
      /* a setting MaxPool1d does not have was ignored without a word */
      {false,
       2,
       {.exclude_pad = true},
       "max_pool1d: exclude_pad (count_include_pad=False) is for avg_pool1d only"},
      {false, 3, {.padding = 2}, "max_pool1d: padding must be >= 0 and at most half the kernel"},
      {true, 4, {.padding = 3}, "avg_pool1d: padding must be >= 0 and at most half the kernel"},
      {true, 4, {.padding = -1}, "padding must be >= 0"},
  };
  for (size_t k = 0; k < sizeof popts / sizeof popts[0]; k++) {
    nn_layer *l = popts[k].avg ? nn_avg_pool1d_new(ctx, popts[k].k, &popts[k].o)
                               : nn_max_pool1d_new(ctx, popts[k].k, &popts[k].o);
    cr_assert_null(l, "case %zu", k);
    expect_msg(AD_ERR_ARG, popts[k].want);
  }
  cr_assert_null(nn_adaptive_avg_pool1d_new(ctx, 0));
  expect_msg(AD_ERR_ARG, "adaptive_avg_pool1d: output size 0 must be in [1, 2^30]");
  cr_assert_null(nn_adaptive_avg_pool1d_new(ctx, INT64_MAX));
  expect_msg(AD_ERR_ARG, "adaptive_avg_pool1d: output size");
  cr_assert_null(nn_adaptive_avg_pool2d_new(ctx, 3, -1));
  expect_msg(AD_ERR_ARG, "adaptive_avg_pool2d: output size 3x-1 must be in [1, 2^30]");
  cr_assert_null(nn_adaptive_avg_pool2d_new(ctx, INT64_MIN, 2));
  expect_msg(AD_ERR_ARG, "adaptive_avg_pool2d: output size");
  /* NULL contexts */
  cr_assert_null(nn_conv1d_new(NULL, 1, 1, 1, &rng, NULL));
  cr_assert_null(nn_max_pool1d_new(NULL, 2, NULL));
  cr_assert_null(nn_adaptive_avg_pool2d_new(NULL, 1, 1));
}

Test(cnn1d, bad_inputs_name_the_layer_and_shapes) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_conv1d_new(ctx, 3, 4, 3, &rng, NULL));
  int64_t s1[3] = {2, 1, 8}, s2[4] = {2, 3, 2, 2}, s3[3] = {2, 3, 2}, s4[1] = {5};
  ad_tensor *x1 = ad_ones(ctx, AD_F32, 3, s1), *x2 = ad_ones(ctx, AD_F32, 4, s2),
            *x3 = ad_ones(ctx, AD_F32, 3, s3), *x4 = ad_ones(ctx, AD_F32, 1, s4);
  cr_assert_null(nn_model_forward(m, x1));
  expect_msg(AD_ERR_SHAPE, "conv1d '0': input [2,1,8] must be [N, 3, L] or [3, L]");
  cr_assert_null(nn_model_forward(m, x2));
  expect_msg(AD_ERR_SHAPE, "conv1d '0': input [2,3,2,2] must be [N, 3, L]");
  cr_assert_null(nn_model_forward(m, x3)); /* a kernel of 3 on L = 2 */
  expect_msg(AD_ERR_SHAPE, "conv1d '0': conv1d of x [2,3,2], w [4,3,3]");
  nn_model_free(m);
  nn_layer *mp = nn_max_pool1d_new(ctx, 3, NULL), *ap = nn_avg_pool1d_new(ctx, 2, NULL);
  nn_layer *a1 = nn_adaptive_avg_pool1d_new(ctx, 3), *a2 = nn_adaptive_avg_pool2d_new(ctx, 2, 2);
  cr_assert(mp && ap && a1 && a2);
  cr_assert_null(nn_layer_forward(mp, x2, true));
  expect_msg(AD_ERR_SHAPE, "max_pool1d: input [2,3,2,2] must be [N, C, L] or [C, L]");
  cr_assert_null(nn_layer_forward(ap, x4, true));
  expect_msg(AD_ERR_SHAPE, "avg_pool1d: input [5] must be [N, C, L] or [C, L]");
  cr_assert_null(nn_layer_forward(a2, x4, true));
  expect_msg(AD_ERR_SHAPE, "adaptive_avg_pool2d: input [5] must be [N, C, H, W] or [C, H, W]");
  cr_assert_null(nn_layer_forward(mp, x3, true)); /* a window of 3 on L = 2 */
  expect_msg(AD_ERR_SHAPE, "max_pool1d: input [2,3,2] (pooled as [2,3,1,2]): max_pool2d");
  int64_t s0[3] = {2, 3, 0}, z[3] = {0, 3, 4};
  ad_tensor *e = ad_zeros(ctx, AD_F32, 3, s0), *zb = ad_zeros(ctx, AD_F32, 3, z);
  cr_assert_null(nn_layer_forward(a1, e, true));
  expect_msg(AD_ERR_SHAPE, "adaptive_avg_pool1d: input [2,3,0] has an empty L");
  cr_assert_null(nn_layer_forward(a2, e, true));
  expect_msg(AD_ERR_SHAPE, "adaptive_avg_pool2d: input [2,3,0] has an empty H or W");
  /* an empty batch is empty output, as PyTorch */
  ad_tensor *y = nn_layer_forward(a1, zb, true);
  cr_assert(y && y->ndim == 3 && y->shape[0] == 0 && y->shape[2] == 3, "%s", ad_last_error(ctx));
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 3, s3);
  cr_assert_null(nn_layer_forward(a1, xi, true));
  expect_msg(AD_ERR_DTYPE, "adaptive_avg_pool1d: input [2,3,2] must be float, got i32");
  cr_assert_null(nn_layer_forward(a1, NULL, true));
  expect_msg(AD_ERR_NULL, "adaptive_avg_pool1d");
  nn_layer_free(mp), nn_layer_free(ap), nn_layer_free(a1), nn_layer_free(a2);
  ad_tensor_free(x1), ad_tensor_free(x2), ad_tensor_free(x3), ad_tensor_free(x4);
  ad_tensor_free(e), ad_tensor_free(zb), ad_tensor_free(xi);
}
