/* test_nn_gnorm.c: the GroupNorm and InstanceNorm1d / 2d layers against
 * PyTorch 1.13. The reference values (outputs, the gradients of
 * sum(y * gy) in the input, weight and bias, running statistics, a state
 * dict) are in tests/gnorm_fixtures.h and
 * tests/fixtures/torch_gnorm.safetensors, both written by
 * tools/gen_gnorm_fixtures.py in float64 from inputs float32 holds exactly:
 * float64 is compared to 1e-12, float32 to a float tolerance. Also first-
 * and second-order gradcheck, the input ranks PyTorch accepts and refuses,
 * the constructors' checks, describe strings and checkpoint names. */
#include "gnorm_fixtures.h"
#include "nn.h"
#include "nn_io.h"
#include "test_layer_fd.h"
#include "test_layer_values.h"
#include "test_same_tensors.h"
#include "test_tmpdir.h"
#include "test_tensor_of.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define GN_FIXTURE "tests/fixtures/torch_gnorm.safetensors"

TEST_TMPDIR_SUITE(gnorm, "nn-gnorm");

static void expect_msg(ad_status st, const char *needle) { expect_status_msg(ctx, st, needle); }

static double tol_of(ad_dtype dt) { return dt == AD_F64 ? 1e-12 : 2e-5; }

/* ------------------------------------------------------------ GroupNorm */

typedef struct gn_case {
  const char *name;
  int64_t g, c;
  int nd;
  int64_t shape[5];
  const double *x, *gy, *w, *b, *y, *dx, *dw, *db; /* w ... db NULL without affine */
} gn_case;

#define GN(n, g, c, nd, ...)                                                                       \
  {                                                                                                \
#n, g, c, nd, __VA_ARGS__, gn_##n##_x, gn_##n##_gy, gn_##n##_w, gn_##n##_b, gn_##n##_y,        \
        gn_##n##_dx, gn_##n##_dw, gn_##n##_db                                                      \
  }

static const gn_case gn_cases[] = {
    GN(a, 2, 4, 3, {2, 4, 3}),
    GN(one, 1, 4, 3, {1, 4, 3}),      /* N = 1, G = 1 */
    GN(gc, 4, 4, 3, {2, 4, 3}),       /* G = C */
    GN(const, 2, 4, 4, {2, 4, 2, 2}), /* a group of variance 0 */
    GN(rank2, 2, 6, 2, {3, 6}),
    GN(rank5, 2, 4, 5, {2, 4, 2, 1, 2}),
    {"noaff",
     3,
     6,
     3,
     {2, 6, 2},
     gn_noaff_x,
     gn_noaff_gy,
     NULL,
     NULL,
     gn_noaff_y,
     gn_noaff_dx,
     NULL,
     NULL},
};

static void group_norm_matches_pytorch(ad_dtype dt) {
  double tol = tol_of(dt);
  for (size_t k = 0; k < sizeof gn_cases / sizeof *gn_cases; k++) {
    const gn_case *tc = &gn_cases[k];
    nn_group_norm_opts o = {.dtype = dt, .no_affine = !tc->w};
    nn_layer *l = nn_group_norm_new(ctx, tc->g, tc->c, &o);
    cr_assert_not_null(l, "%s: %s", tc->name, ad_last_error(ctx));
    cr_assert_eq(nn_params_count(nn_layer_params(l)), tc->w ? 2 : 0);
    cr_assert_eq(nn_params_count(nn_layer_buffers(l)), 0);
    if (tc->w) {
      test_set_values(test_layer_param(l, "weight"), tc->w);
      test_set_values(test_layer_param(l, "bias"), tc->b);
    }
    ad_tensor *x = tensor_of(dt, tc->nd, tc->shape, tc->x);
    ad_tensor_set_requires_grad(x, true);
    char what[64];
    for (int training = 1; training >= 0; training--) { /* the same in both modes */
      ad_tensor *y = test_layer_run(ctx, l, x, tc->gy, training);
      cr_assert_eq(y->ndim, tc->nd);
      for (int d = 0; d < tc->nd; d++) cr_assert_eq(y->shape[d], tc->shape[d]);
      snprintf(what, sizeof what, "%s y", tc->name);
      test_expect_values(ctx, y, tc->y, x->size, tol, what);
      snprintf(what, sizeof what, "%s dx", tc->name);
      test_expect_values(ctx, x->grad, tc->dx, x->size, tol, what);
      if (tc->w) {
        snprintf(what, sizeof what, "%s dweight", tc->name);
        test_expect_values(ctx, test_layer_param(l, "weight")->grad, tc->dw, tc->c, tol, what);
        snprintf(what, sizeof what, "%s dbias", tc->name);
        test_expect_values(ctx, test_layer_param(l, "bias")->grad, tc->db, tc->c, tol, what);
      }
      ad_tape_reset(ctx);
    }
    ad_tensor_free(x);
    nn_layer_free(l);
  }
}

Test(gnorm, group_norm_matches_pytorch_f64) { group_norm_matches_pytorch(AD_F64); }
Test(gnorm, group_norm_matches_pytorch_f32) { group_norm_matches_pytorch(AD_F32); }

/* A group whose values are equal normalises to 0: y is the bias there. */
Test(gnorm, constant_group_gives_the_bias) {
  nn_layer *l = nn_group_norm_new(ctx, 2, 4, &(nn_group_norm_opts){.dtype = AD_F64});
  test_set_values(test_layer_param(l, "bias"), (const double[]){0.5, -1, 2, 3});
  int64_t s[3] = {1, 4, 3};
  ad_tensor *x = tensor_of(AD_F64, 3, s, (const double[]){7, 7, 7, 7, 7, 7, 1, 2, 3, 4, 5, 6});
  ad_tensor *y = nn_layer_forward(l, x, true);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  for (int i = 0; i < 6; i++) cr_assert_eq(ad_tensor_get(y, i), i < 3 ? 0.5 : -1);
  ad_tensor_free(x);
  nn_layer_free(l);
}

/* The op group_norm's plain backward (one pass for the sums, one for dx,
 * dweight and dbias) against its recorded form under create_graph
 * (layer_norm_backward and sums, the composite's derivative), on groups
 * of several channels with runs long and short, with and without affine. */
static void plain_backward_matches_recorded(ad_dtype dt) {
  static const struct {
    int nd, g;
    int64_t s[4];
    bool affine;
  } v[3] = {{4, 3, {3, 6, 5, 7}, true}, {3, 2, {4, 4, 3}, true}, {4, 2, {2, 4, 3, 3}, false}};
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  for (int k = 0; k < 3; k++) {
    nn_layer *l = nn_group_norm_new(ctx, v[k].g, v[k].s[1],
                                    &(nn_group_norm_opts){.dtype = dt, .no_affine = !v[k].affine});
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    ad_tensor *x = ad_zeros(ctx, dt, v[k].nd, v[k].s), *seed = ad_zeros(ctx, dt, v[k].nd, v[k].s);
    cr_assert(x && seed);
    for (int64_t i = 0; i < x->size; i++) {
      ad_tensor_set(x, i, 3 * ad_rng_uniform(&rng) - 1);
      ad_tensor_set(seed, i, 2 * ad_rng_uniform(&rng) - 1);
    }
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *req[3] = {x, NULL, NULL};
    int m = 1;
    if (v[k].affine) {
      req[m++] = test_layer_param(l, "weight"), req[m++] = test_layer_param(l, "bias");
      for (int j = 1; j < 3; j++)
        for (int64_t i = 0; i < req[j]->size; i++)
          ad_tensor_set(req[j], i, 2 * ad_rng_uniform(&rng) - 0.5);
    }
    ad_tensor *plain[3], *rec[3];
    ad_tensor *y = nn_layer_forward(l, x, true);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_grad(ctx, y, seed, m, req, plain, false), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_grad(ctx, y, seed, m, req, rec, true), AD_OK, "%s", ad_last_error(ctx));
    for (int j = 0; j < m; j++) {
      double scale = 0;
      for (int64_t i = 0; i < rec[j]->size; i++)
        scale = fmax(scale, fabs(ad_tensor_get(rec[j], i)));
      cr_assert(scale > 0.1, "case %d input %d: a gradient of zeros", k, j);
      double d = test_max_diff(ctx, plain[j], rec[j]);
      cr_assert(d <= (dt == AD_F64 ? 1e-12 : 2e-6) * scale, "case %d input %d: %g apart", k, j, d);
    }
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    ad_tensor_free(seed);
    nn_layer_free(l);
  }
}

Test(gnorm, plain_backward_matches_recorded_f64) { plain_backward_matches_recorded(AD_F64); }
Test(gnorm, plain_backward_matches_recorded_f32) { plain_backward_matches_recorded(AD_F32); }

/* ---------------------------------------------------------- InstanceNorm */

static void instance_norm_tracks_like_pytorch(ad_dtype dt) {
  double tol = tol_of(dt);
  nn_instance_norm_opts o = {
      .dtype = dt, .momentum = 0.2, .affine = true, .track_running_stats = true};
  nn_layer *l = nn_instance_norm1d_new(ctx, 3, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  ad_tensor *w = test_layer_param(l, "weight"), *b = test_layer_param(l, "bias");
  ad_tensor *rm = test_layer_buffer(l, "running_mean"), *rv = test_layer_buffer(l, "running_var");
  ad_tensor *nbt = test_layer_buffer(l, "num_batches_tracked");
  test_set_values(w, in_t_w);
  test_set_values(b, in_t_b);
  int64_t s[3] = {2, 3, 5};
  for (int t = 0; t < 3; t++) {
    ad_tensor *x = tensor_of(dt, 3, s, in_t_x + 30 * t);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = test_layer_run(ctx, l, x, in_t_gy + 30 * t, true);
    test_expect_values(ctx, y, in_t_y + 30 * t, 30, tol, "training y");
    test_expect_values(ctx, x->grad, in_t_dx + 30 * t, 30, tol, "training dx");
    test_expect_values(ctx, w->grad, in_t_dw + 3 * t, 3, tol, "training dweight");
    test_expect_values(ctx, b->grad, in_t_db + 3 * t, 3, tol, "training dbias");
    test_expect_values(ctx, rm, in_t_rm + 3 * t, 3, tol, "running_mean");
    test_expect_values(ctx, rv, in_t_rv + 3 * t, 3, tol, "running_var");
    cr_assert_eq(ad_tensor_item(nbt), 0, "num_batches_tracked counts, PyTorch's does not");
    ad_tape_reset(ctx);
    ad_tensor_free(x);
  }
  ad_tensor *x = tensor_of(dt, 3, s, in_t_xe);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = test_layer_run(ctx, l, x, in_t_gye, false);
  test_expect_values(ctx, y, in_t_ye, 30, tol, "evaluation y");
  test_expect_values(ctx, x->grad, in_t_dxe, 30, tol, "evaluation dx");
  test_expect_values(ctx, w->grad, in_t_dwe, 3, tol, "evaluation dweight");
  test_expect_values(ctx, b->grad, in_t_dbe, 3, tol, "evaluation dbias");
  test_expect_values(ctx, rm, in_t_rm + 6, 3, tol, "running_mean after evaluation");
  test_expect_values(ctx, rv, in_t_rv + 6, 3, tol, "running_var after evaluation");
  ad_tensor_free(x);
  nn_layer_free(l);
}

Test(gnorm, instance_norm_running_stats_f64) { instance_norm_tracks_like_pytorch(AD_F64); }
Test(gnorm, instance_norm_running_stats_f32) { instance_norm_tracks_like_pytorch(AD_F32); }

/* PyTorch's defaults: no parameters, no buffers, the instance statistics
 * in both modes; an unbatched [C, H, W] is a batch of one. */
static void instance_norm_defaults(ad_dtype dt) {
  double tol = tol_of(dt);
  nn_layer *l = nn_instance_norm2d_new(ctx, 3, &(nn_instance_norm_opts){.dtype = dt});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_params_count(nn_layer_params(l)), 0);
  cr_assert_eq(nn_params_count(nn_layer_buffers(l)), 0);
  int64_t s[4] = {2, 3, 2, 3};
  ad_tensor *x = tensor_of(dt, 4, s, in_d_x);
  ad_tensor_set_requires_grad(x, true);
  for (int training = 1; training >= 0; training--) {
    ad_tensor *y = test_layer_run(ctx, l, x, in_d_gy, training);
    test_expect_values(ctx, y, in_d_y, 36, tol, "y");
    test_expect_values(ctx, x->grad, in_d_dx, 36, tol, "dx");
    ad_tape_reset(ctx);
  }
  ad_tensor *u = tensor_of(dt, 3, s + 1, in_d_x + 18); /* the second sample */
  ad_tensor_set_requires_grad(u, true);
  for (int training = 1; training >= 0; training--) {
    ad_tensor *y = test_layer_run(ctx, l, u, in_d_gy + 18, training);
    cr_assert_eq(y->ndim, 3);
    cr_assert(y->shape[0] == 3 && y->shape[1] == 2 && y->shape[2] == 3);
    test_expect_values(ctx, y, in_d_y + 18, 18, tol, "unbatched y");
    test_expect_values(ctx, u->grad, in_d_dx + 18, 18, tol, "unbatched dx");
    ad_tape_reset(ctx);
  }
  ad_tensor_free(x);
  ad_tensor_free(u);
  nn_layer_free(l);
}

Test(gnorm, instance_norm_defaults_f64) { instance_norm_defaults(AD_F64); }
Test(gnorm, instance_norm_defaults_f32) { instance_norm_defaults(AD_F32); }

/* Unbatched [C, H, W] with running statistics: updated from the one
 * instance, then used in evaluation mode. */
Test(gnorm, instance_norm_unbatched_running_stats) {
  nn_instance_norm_opts o = {.dtype = AD_F64, .track_running_stats = true};
  nn_layer *l = nn_instance_norm2d_new(ctx, 2, &o);
  int64_t s[3] = {2, 3, 3};
  ad_tensor *x = tensor_of(AD_F64, 3, s, in_u_x), *xe = tensor_of(AD_F64, 3, s, in_u_xe);
  cr_assert_not_null(nn_layer_forward(l, x, true), "%s", ad_last_error(ctx));
  test_expect_values(ctx, test_layer_buffer(l, "running_mean"), in_u_rm, 2, 1e-12, "running_mean");
  test_expect_values(ctx, test_layer_buffer(l, "running_var"), in_u_rv, 2, 1e-12, "running_var");
  ad_tensor *y = nn_layer_forward(l, xe, false);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert(y->ndim == 3 && y->shape[0] == 2 && y->shape[1] == 3 && y->shape[2] == 3);
  test_expect_values(ctx, y, in_u_ye, 18, 1e-12, "evaluation y");
  ad_tensor_free(x);
  ad_tensor_free(xe);
  nn_layer_free(l);
}

/* InstanceNorm1d takes an unbatched [C, L] as the batch [1, C, L]. */
Test(gnorm, instance_norm1d_unbatched_is_a_batch_of_one) {
  nn_instance_norm_opts o = {.dtype = AD_F64, .affine = true};
  nn_layer *l = nn_instance_norm1d_new(ctx, 3, &o);
  test_set_values(test_layer_param(l, "weight"), in_t_w);
  test_set_values(test_layer_param(l, "bias"), in_t_b);
  int64_t s[3] = {1, 3, 5};
  ad_tensor *xb = tensor_of(AD_F64, 3, s, in_t_x), *xu = tensor_of(AD_F64, 2, s + 1, in_t_x);
  ad_tensor *yb = nn_layer_forward(l, xb, true), *yu = nn_layer_forward(l, xu, true);
  cr_assert(yb && yu, "%s", ad_last_error(ctx));
  cr_assert(yu->ndim == 2 && yu->shape[0] == 3 && yu->shape[1] == 5);
  for (int i = 0; i < 15; i++) cr_assert_eq(ad_tensor_get(yu, i), ad_tensor_get(yb, i));
  ad_tensor_free(xb);
  ad_tensor_free(xu);
  nn_layer_free(l);
}

/* ------------------------------------------------------------ gradcheck */

/* first and second derivatives against central differences
 * (test_layer_fd.h) */
static void check_derivatives(nn_layer *l, int nd, const int64_t *shape, bool training) {
  test_layer_derivatives(ctx, l, nd, shape,
                         &(test_fd_opts){.eval = !training, .redraw_params = true});
}

Test(gnorm, gradcheck_first_and_second_order) {
  nn_layer *l = nn_group_norm_new(ctx, 2, 4, &(nn_group_norm_opts){.dtype = AD_F64});
  int64_t s[3] = {2, 4, 3};
  check_derivatives(l, 3, s, true);
  nn_layer_free(l);
  l = nn_group_norm_new(ctx, 3, 3, &(nn_group_norm_opts){.dtype = AD_F64, .no_affine = true});
  int64_t s2[4] = {2, 3, 2, 2};
  check_derivatives(l, 4, s2, true);
  nn_layer_free(l);
  nn_instance_norm_opts io = {.dtype = AD_F64, .affine = true, .track_running_stats = true};
  l = nn_instance_norm2d_new(ctx, 3, &io);
  check_derivatives(l, 4, s2, true);
  check_derivatives(l, 4, s2, false); /* through the running statistics */
  check_derivatives(l, 3, s2 + 1, true);
  nn_layer_free(l);
}

/* ------------------------------------------------------- shapes, errors */

static ad_tensor *zeros(ad_dtype dt, int nd, const int64_t *shape) {
  return tensor_of(dt, nd, shape, NULL);
}

Test(gnorm, constructor_checks) {
  cr_assert_null(nn_group_norm_new(ctx, 3, 4, NULL));
  expect_msg(AD_ERR_ARG, "group_norm: num_channels 4 must be divisible by num_groups 3");
  cr_assert_null(nn_group_norm_new(ctx, 0, 4, NULL));
  expect_msg(AD_ERR_ARG, "num_groups 0 and num_channels 4 must be >= 1");
  cr_assert_null(nn_group_norm_new(ctx, 2, 0, NULL));
  expect_msg(AD_ERR_ARG, "must be >= 1");
  const double bad_eps[] = {-1e-5, NAN, INFINITY};
  for (int i = 0; i < 3; i++) {
    cr_assert_null(nn_group_norm_new(ctx, 2, 4, &(nn_group_norm_opts){.eps = bad_eps[i]}));
    expect_msg(AD_ERR_ARG, "group_norm: eps");
    cr_assert_null(nn_instance_norm1d_new(ctx, 2, &(nn_instance_norm_opts){.eps = bad_eps[i]}));
    expect_msg(AD_ERR_ARG, "instance_norm1d: eps");
  }
  cr_assert_null(nn_group_norm_new(ctx, 2, 4, &(nn_group_norm_opts){.dtype = AD_I32}));
  expect_msg(AD_ERR_DTYPE, "group_norm: parameters must be float");
  cr_assert_null(nn_instance_norm2d_new(ctx, 0, NULL));
  expect_msg(AD_ERR_ARG, "instance_norm2d: num_features 0 must be >= 1");
  const double bad_m[] = {-0.1, 1.5, NAN};
  for (int i = 0; i < 3; i++) {
    cr_assert_null(nn_instance_norm2d_new(ctx, 2, &(nn_instance_norm_opts){.momentum = bad_m[i]}));
    expect_msg(AD_ERR_ARG, "instance_norm2d: momentum");
  }
  cr_assert_null(nn_instance_norm1d_new(ctx, 2, &(nn_instance_norm_opts){.dtype = AD_I32}));
  expect_msg(AD_ERR_DTYPE, "instance_norm1d: parameters must be float");
  cr_assert_null(nn_group_norm_new(NULL, 2, 4, NULL));
  cr_assert_null(nn_instance_norm1d_new(NULL, 2, NULL));
}

Test(gnorm, group_norm_input_checks) {
  nn_model *m = nn_sequential_new(ctx);
  nn_layer *l = nn_group_norm_new(ctx, 2, 4, NULL);
  cr_assert_eq(nn_model_add(m, l), AD_OK);
  int64_t s1[1] = {4}, s3[3] = {2, 6, 3}, s2[2] = {2, 4};
  ad_tensor *x = zeros(AD_F32, 1, s1);
  cr_assert_null(nn_layer_forward(l, x, true));
  expect_msg(AD_ERR_SHAPE, "group_norm '0': input [4] has 1 dims; the layer expects [N, C, *]");
  ad_tensor_free(x);
  x = zeros(AD_F32, 3, s3);
  cr_assert_null(nn_layer_forward(l, x, true));
  expect_msg(AD_ERR_SHAPE, "group_norm '0': input [2,6,3] has 6 channels (dim 1), the layer "
                           "expects 4");
  ad_tensor_free(x);
  x = zeros(AD_F64, 2, s2);
  cr_assert_null(nn_layer_forward(l, x, true));
  expect_msg(AD_ERR_DTYPE, "input [2,4] is f64, the layer is f32");
  ad_tensor_free(x);
  nn_model_free(m);

  /* without affine, as PyTorch: any multiple of num_groups */
  l = nn_group_norm_new(ctx, 2, 4, &(nn_group_norm_opts){.no_affine = true});
  x = zeros(AD_F32, 3, s3);
  ad_tensor *y = nn_layer_forward(l, x, true);
  cr_assert(y && y->ndim == 3 && y->shape[1] == 6, "%s", ad_last_error(ctx));
  ad_tensor_free(x);
  int64_t s5[2] = {2, 5};
  x = zeros(AD_F32, 2, s5);
  cr_assert_null(nn_layer_forward(l, x, true));
  expect_msg(AD_ERR_SHAPE, "group_norm: input [2,5] has 5 channels (dim 1), the layer expects a "
                           "multiple of num_groups 2");
  ad_tensor_free(x);
  x = zeros(AD_F64, 2, s2); /* without parameters, the input's dtype */
  cr_assert_not_null(nn_layer_forward(l, x, true), "%s", ad_last_error(ctx));
  ad_tensor_free(x);
  nn_layer_free(l);

  /* one sample with 1 value per group: PyTorch refuses it, in both modes;
   * two samples are fine (y = bias) */
  l = nn_group_norm_new(ctx, 4, 4, NULL);
  int64_t one[3] = {1, 4, 1}, two[2] = {2, 4};
  x = zeros(AD_F32, 3, one);
  for (int training = 1; training >= 0; training--) {
    cr_assert_null(nn_layer_forward(l, x, training));
    expect_msg(AD_ERR_SHAPE, "group_norm: input [1,4,1] has one sample with 1 value per group");
  }
  ad_tensor_free(x);
  x = tensor_of(AD_F32, 2, two, (const double[]){1, 2, 3, 4, 5, 6, 7, 8});
  y = nn_layer_forward(l, x, true);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  for (int i = 0; i < 8; i++) cr_assert_eq(ad_tensor_get(y, i), 0);
  ad_tensor_free(x);

  /* empty inputs give empty outputs, as in PyTorch */
  int64_t e0[3] = {0, 4, 3}, e2[3] = {2, 4, 0};
  for (int k = 0; k < 2; k++) {
    x = zeros(AD_F32, 3, k ? e2 : e0);
    ad_tensor_set_requires_grad(x, true);
    y = nn_layer_forward(l, x, true);
    cr_assert(y && y->size == 0 && y->ndim == 3, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_tensor_get(test_layer_param(l, "weight")->grad, 0), 0);
    ad_tensor_free(x);
  }
  nn_layer_free(l);
}

Test(gnorm, instance_norm_input_checks) {
  nn_instance_norm_opts o = {.track_running_stats = true};
  nn_layer *l = nn_instance_norm1d_new(ctx, 3, &o);
  ad_tensor *rm = test_layer_buffer(l, "running_mean"), *rv = test_layer_buffer(l, "running_var");
  int64_t s4[4] = {2, 3, 4, 5}, s1[1] = {3}, s31[3] = {2, 3, 1}, s5[3] = {2, 5, 4};
  ad_tensor *x = zeros(AD_F32, 4, s4);
  cr_assert_null(nn_layer_forward(l, x, true));
  expect_msg(AD_ERR_SHAPE,
             "instance_norm1d: input [2,3,4,5] has 4 dims; the layer expects [N, C, L] or [C, L]");
  ad_tensor_free(x);
  x = zeros(AD_F32, 1, s1);
  cr_assert_null(nn_layer_forward(l, x, true));
  expect_msg(AD_ERR_SHAPE, "input [3] has 1 dims");
  ad_tensor_free(x);
  x = zeros(AD_F32, 3, s5);
  cr_assert_null(nn_layer_forward(l, x, true));
  expect_msg(AD_ERR_SHAPE, "input [2,5,4] has 5 channels (dim 1), the layer expects 3");
  ad_tensor_free(x);
  x = zeros(AD_F32, 2, s5 + 1); /* unbatched [5, 4] */
  cr_assert_null(nn_layer_forward(l, x, true));
  expect_msg(AD_ERR_SHAPE, "input [5,4] has 5 channels (dim 0), the layer expects 3");
  ad_tensor_free(x);
  /* one value per instance: refused where instance statistics are used */
  x = tensor_of(AD_F32, 3, s31, (const double[]){1, 2, 3, 4, 5, 6});
  cr_assert_null(nn_layer_forward(l, x, true));
  expect_msg(AD_ERR_SHAPE, "instance_norm1d: input [2,3,1] has 1 value per instance and channel");
  cr_assert_eq(ad_tensor_get(rm, 0), 0, "a refused forward changed the running statistics");
  cr_assert_eq(ad_tensor_get(rv, 0), 1);
  ad_tensor *y = nn_layer_forward(l, x, false); /* the running statistics */
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_float_eq(ad_tensor_get(y, 5), 6 / sqrt(1 + 1e-5), 1e-6);
  ad_tensor_free(x);
  /* an empty batch: an empty output, the statistics unchanged (PyTorch
   * writes NaN there) */
  int64_t e0[3] = {0, 3, 4}, e2[3] = {2, 3, 0};
  for (int k = 0; k < 2; k++) {
    x = zeros(AD_F32, 3, k ? e2 : e0);
    y = nn_layer_forward(l, x, true);
    cr_assert(y && y->size == 0, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_tensor_get(rm, 1), 0);
    cr_assert_eq(ad_tensor_get(rv, 1), 1);
    ad_tensor_free(x);
  }
  x = zeros(AD_F64, 3, s31);
  cr_assert_null(nn_layer_forward(l, x, false));
  expect_msg(AD_ERR_DTYPE, "input [2,3,1] is f64, the layer is f32");
  ad_tensor_free(x);
  nn_layer_free(l);

  /* without affine and running statistics any channel count goes, as in
   * PyTorch (which warns) */
  l = nn_instance_norm2d_new(ctx, 5, NULL);
  int64_t s3[3] = {2, 4, 5};
  x = zeros(AD_F32, 4, s4);
  y = nn_layer_forward(l, x, true);
  cr_assert(y && y->ndim == 4, "%s", ad_last_error(ctx));
  ad_tensor_free(x);
  x = zeros(AD_F32, 3, s3); /* unbatched [2, 4, 5] */
  y = nn_layer_forward(l, x, false);
  cr_assert(y && y->ndim == 3, "%s", ad_last_error(ctx));
  ad_tensor_free(x);
  x = zeros(AD_F32, 2, s3);
  cr_assert_null(nn_layer_forward(l, x, true));
  expect_msg(AD_ERR_SHAPE, "instance_norm2d: input [2,4] has 2 dims; the layer expects [N, C, H, "
                           "W] or [C, H, W]");
  ad_tensor_free(x);
  nn_layer_free(l);
  l = nn_instance_norm2d_new(ctx, 4, &(nn_instance_norm_opts){.affine = true});
  x = zeros(AD_F32, 4, s4);
  cr_assert_null(nn_layer_forward(l, x, true));
  expect_msg(AD_ERR_SHAPE, "instance_norm2d: input [2,3,4,5] has 3 channels (dim 1), the layer "
                           "expects 4");
  ad_tensor_free(x);
  nn_layer_free(l);
}

/* ----------------------------------------------------- describe, names */

Test(gnorm, describe_as_pytorch_repr) {
  /* torch 1.13: repr(nn.GroupNorm(4, 32)) etc., the class name as our kind */
  char buf[160];
  nn_layer *l = nn_group_norm_new(ctx, 4, 32, NULL);
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "group_norm(4, 32, eps=1e-05, affine=True)");
  nn_layer_free(l);
  l = nn_group_norm_new(ctx, 4, 32, &(nn_group_norm_opts){.eps = 1e-3, .no_affine = true});
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "group_norm(4, 32, eps=0.001, affine=False)");
  nn_layer_free(l);
  l = nn_instance_norm1d_new(ctx, 3, NULL);
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "instance_norm1d(3, eps=1e-05, momentum=0.1, affine=False, "
                   "track_running_stats=False)");
  nn_layer_free(l);
  nn_instance_norm_opts o = {
      .eps = 1e-6, .momentum = 0.2, .affine = true, .track_running_stats = true};
  l = nn_instance_norm2d_new(ctx, 3, &o);
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "instance_norm2d(3, eps=1e-06, momentum=0.2, affine=True, "
                   "track_running_stats=True)");
  nn_layer_free(l);
}

/* PyTorch's state dict of Sequential(GroupNorm(2, 4), InstanceNorm1d(4,
 * affine=True, track_running_stats=True)) loads under the same names and
 * gives PyTorch's output; saved back, the same tensors and bytes. */
Test(gnorm, pytorch_state_dict_both_ways) {
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_group_norm_new(ctx, 2, 4, NULL)), AD_OK);
  nn_instance_norm_opts o = {.affine = true, .track_running_stats = true};
  cr_assert_eq(nn_model_add(m, nn_instance_norm1d_new(ctx, 4, &o)), AD_OK);
  const char *names[] = {"0.weight", "0.bias", "1.weight", "1.bias"};
  const char *bufs[] = {"1.running_mean", "1.running_var", "1.num_batches_tracked"};
  for (int i = 0; i < 4; i++) cr_assert_str_eq(nn_params_name(nn_model_params(m), i), names[i]);
  for (int i = 0; i < 3; i++) cr_assert_str_eq(nn_params_name(nn_model_buffers(m), i), bufs[i]);
  cr_assert_eq(nn_model_load(m, NULL, GN_FIXTURE), AD_OK, "%s", ad_last_error(ctx));
  int64_t s[3] = {2, 4, 3};
  ad_tensor *x = tensor_of(AD_F32, 3, s, ck_x);
  nn_model_set_training(m, false);
  ad_tensor *y = nn_model_forward(m, x);
  test_expect_values(ctx, y, ck_y, 24, 2e-6, "evaluation y");
  ad_tensor_free(x);

  const char *path = test_path("gn.safetensors");
  cr_assert_eq(nn_model_save(m, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  nn_checkpoint_info *theirs = nn_checkpoint_info_read(ctx, GN_FIXTURE);
  cr_assert_not_null(theirs, "%s", ad_last_error(ctx));
  cr_assert_eq(theirs->n, 7);
  nn_checkpoint_info_free(theirs);
  test_expect_same_tensors(ctx, GN_FIXTURE, path);
  nn_model_free(m);
}
