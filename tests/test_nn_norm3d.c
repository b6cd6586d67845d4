/* test_nn_norm3d.c: the 3-D layers nn_batch_norm3d_new,
 * nn_instance_norm3d_new, nn_constant_pad3d_new, nn_reflection_pad3d_new,
 * nn_replication_pad3d_new and nn_dropout3d_new against PyTorch 1.13. The
 * reference values (outputs, the gradients of sum(y * gy) in the input,
 * weight and bias, running statistics after several steps, evaluation
 * mode, a state dict) are in tests/norm3d_fixtures.h and
 * tests/fixtures/torch_norm3d.safetensors, both written by
 * tools/gen_norm3d_fixtures.py in float64 from inputs float32 holds
 * exactly: float64 is compared to 1e-12, float32 to a float tolerance.
 * Dropout3d is checked against the engine's own draws (its mask is
 * nn_dropout_new's on [N, C]). Also first- and second-order gradcheck in
 * float64, the ranks PyTorch accepts and refuses, bad arguments and
 * inputs, describe strings and checkpoint names. */
#include "nn.h"
#include "nn_io.h"
#include "norm3d_fixtures.h"
#include "test_layer_fd.h"
#include "test_layer_values.h"
#include "test_same_tensors.h"
#include "test_tmpdir.h"
#include "test_tensor_of.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define N3_FIXTURE "tests/fixtures/torch_norm3d.safetensors"

TEST_TMPDIR_SUITE(norm3d, "nn-norm3d");

static void expect_msg(ad_status st, const char *needle) { expect_status_msg(ctx, st, needle); }

static double tol_of(ad_dtype dt) { return dt == AD_F64 ? 1e-12 : 2e-5; }

/* ---------------------------------------------------------- BatchNorm3d */

/* BatchNorm3d(3, momentum=0.2) with PyTorch's weight and bias: three
 * training steps (outputs, gradients, running statistics,
 * num_batches_tracked), then evaluation mode. */
static void batch_norm3d_matches_pytorch(ad_dtype dt) {
  double tol = tol_of(dt);
  nn_layer *l = nn_batch_norm3d_new(ctx, 3, &(nn_batch_norm_opts){.dtype = dt, .momentum = 0.2});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(l), "batch_norm3d");
  ad_tensor *w = test_layer_param(l, "weight"), *b = test_layer_param(l, "bias");
  ad_tensor *rm = test_layer_buffer(l, "running_mean"), *rv = test_layer_buffer(l, "running_var");
  ad_tensor *nbt = test_layer_buffer(l, "num_batches_tracked");
  test_set_values(w, bn_t_w);
  test_set_values(b, bn_t_b);
  int64_t s[5] = {2, 3, 2, 2, 3};
  for (int t = 0; t < 3; t++) {
    ad_tensor *x = tensor_of(dt, 5, s, bn_t_x + 72 * t);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = test_layer_run(ctx, l, x, bn_t_gy + 72 * t, true);
    cr_assert(y->ndim == 5 && y->shape[4] == 3);
    test_expect_values(ctx, y, bn_t_y + 72 * t, 72, tol, "training y");
    test_expect_values(ctx, x->grad, bn_t_dx + 72 * t, 72, tol, "training dx");
    test_expect_values(ctx, w->grad, bn_t_dw + 3 * t, 3, tol, "training dweight");
    test_expect_values(ctx, b->grad, bn_t_db + 3 * t, 3, tol, "training dbias");
    test_expect_values(ctx, rm, bn_t_rm + 3 * t, 3, tol, "running_mean");
    test_expect_values(ctx, rv, bn_t_rv + 3 * t, 3, tol, "running_var");
    cr_assert_eq(ad_tensor_item(nbt), t + 1);
    ad_tape_reset(ctx);
    ad_tensor_free(x);
  }
  ad_tensor *x = tensor_of(dt, 5, s, bn_t_xe);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = test_layer_run(ctx, l, x, bn_t_gye, false);
  test_expect_values(ctx, y, bn_t_ye, 72, tol, "evaluation y");
  test_expect_values(ctx, x->grad, bn_t_dxe, 72, tol, "evaluation dx");
  test_expect_values(ctx, w->grad, bn_t_dwe, 3, tol, "evaluation dweight");
  test_expect_values(ctx, b->grad, bn_t_dbe, 3, tol, "evaluation dbias");
  test_expect_values(ctx, rm, bn_t_rm + 6, 3, tol, "running_mean after evaluation");
  cr_assert_eq(ad_tensor_item(nbt), 3, "evaluation mode counted a batch");
  ad_tensor_free(x);
  nn_layer_free(l);
}

Test(norm3d, batch_norm3d_matches_pytorch_f64) { batch_norm3d_matches_pytorch(AD_F64); }
Test(norm3d, batch_norm3d_matches_pytorch_f32) { batch_norm3d_matches_pytorch(AD_F32); }

/* momentum=None, affine=False: the cumulative average of the batches. */
Test(norm3d, batch_norm3d_cumulative_average) {
  nn_batch_norm_opts o = {.dtype = AD_F64, .cumulative = true, .no_affine = true};
  nn_layer *l = nn_batch_norm3d_new(ctx, 2, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_params_count(nn_layer_params(l)), 0);
  cr_assert_eq(nn_params_count(nn_layer_buffers(l)), 3);
  int64_t s[5] = {3, 2, 2, 1, 2};
  for (int t = 0; t < 3; t++) {
    ad_tensor *x = tensor_of(AD_F64, 5, s, bn_c_x + 24 * t);
    ad_tensor *y = nn_layer_forward(l, x, true);
    test_expect_values(ctx, y, bn_c_y + 24 * t, 24, 1e-12, "y");
    test_expect_values(ctx, test_layer_buffer(l, "running_mean"), bn_c_rm + 2 * t, 2, 1e-12,
                       "running_mean");
    test_expect_values(ctx, test_layer_buffer(l, "running_var"), bn_c_rv + 2 * t, 2, 1e-12,
                       "running_var");
    cr_assert_eq(ad_tensor_item(test_layer_buffer(l, "num_batches_tracked")), t + 1);
    ad_tape_reset(ctx);
    ad_tensor_free(x);
  }
  nn_layer_free(l);
}

/* affine=False, track_running_stats=False: no parameters, no buffers, the
 * batch statistics in both modes. */
Test(norm3d, batch_norm3d_without_running_stats) {
  nn_batch_norm_opts o = {.dtype = AD_F64, .no_affine = true, .no_running_stats = true};
  nn_layer *l = nn_batch_norm3d_new(ctx, 2, &o);
  cr_assert_eq(nn_params_count(nn_layer_params(l)), 0);
  cr_assert_eq(nn_params_count(nn_layer_buffers(l)), 0);
  int64_t s[5] = {2, 2, 1, 2, 3};
  ad_tensor *x = tensor_of(AD_F64, 5, s, bn_n_x);
  ad_tensor_set_requires_grad(x, true);
  for (int training = 1; training >= 0; training--) {
    ad_tensor *y = test_layer_run(ctx, l, x, bn_n_gy, training);
    test_expect_values(ctx, y, bn_n_y, 24, 1e-12, "y");
    test_expect_values(ctx, x->grad, bn_n_dx, 24, 1e-12, "dx");
    ad_tape_reset(ctx);
  }
  ad_tensor_free(x);
  nn_layer_free(l);
}

/* ------------------------------------------------------- InstanceNorm3d */

static void instance_norm3d_tracks_like_pytorch(ad_dtype dt) {
  double tol = tol_of(dt);
  nn_instance_norm_opts o = {
      .dtype = dt, .momentum = 0.3, .affine = true, .track_running_stats = true};
  nn_layer *l = nn_instance_norm3d_new(ctx, 3, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(l), "instance_norm3d");
  ad_tensor *w = test_layer_param(l, "weight"), *b = test_layer_param(l, "bias");
  ad_tensor *rm = test_layer_buffer(l, "running_mean"), *rv = test_layer_buffer(l, "running_var");
  test_set_values(w, in_t_w);
  test_set_values(b, in_t_b);
  int64_t s[5] = {2, 3, 2, 2, 2};
  for (int t = 0; t < 2; t++) {
    ad_tensor *x = tensor_of(dt, 5, s, in_t_x + 48 * t);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = test_layer_run(ctx, l, x, in_t_gy + 48 * t, true);
    test_expect_values(ctx, y, in_t_y + 48 * t, 48, tol, "training y");
    test_expect_values(ctx, x->grad, in_t_dx + 48 * t, 48, tol, "training dx");
    test_expect_values(ctx, w->grad, in_t_dw + 3 * t, 3, tol, "training dweight");
    test_expect_values(ctx, b->grad, in_t_db + 3 * t, 3, tol, "training dbias");
    test_expect_values(ctx, rm, in_t_rm + 3 * t, 3, tol, "running_mean");
    test_expect_values(ctx, rv, in_t_rv + 3 * t, 3, tol, "running_var");
    cr_assert_eq(ad_tensor_item(test_layer_buffer(l, "num_batches_tracked")), 0,
                 "PyTorch's does not count");
    ad_tape_reset(ctx);
    ad_tensor_free(x);
  }
  ad_tensor *x = tensor_of(dt, 5, s, in_t_xe);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = test_layer_run(ctx, l, x, in_t_gye, false);
  test_expect_values(ctx, y, in_t_ye, 48, tol, "evaluation y");
  test_expect_values(ctx, x->grad, in_t_dxe, 48, tol, "evaluation dx");
  test_expect_values(ctx, w->grad, in_t_dwe, 3, tol, "evaluation dweight");
  test_expect_values(ctx, b->grad, in_t_dbe, 3, tol, "evaluation dbias");
  test_expect_values(ctx, rv, in_t_rv + 3, 3, tol, "running_var after evaluation");
  ad_tensor_free(x);
  nn_layer_free(l);
}

Test(norm3d, instance_norm3d_running_stats_f64) { instance_norm3d_tracks_like_pytorch(AD_F64); }
Test(norm3d, instance_norm3d_running_stats_f32) { instance_norm3d_tracks_like_pytorch(AD_F32); }

/* PyTorch's defaults (no parameters, no buffers, the instance statistics
 * in both modes); an unbatched [C, D, H, W] is a batch of one. */
static void instance_norm3d_defaults(ad_dtype dt) {
  double tol = tol_of(dt);
  nn_layer *l = nn_instance_norm3d_new(ctx, 3, &(nn_instance_norm_opts){.dtype = dt});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_params_count(nn_layer_params(l)), 0);
  cr_assert_eq(nn_params_count(nn_layer_buffers(l)), 0);
  int64_t s[5] = {2, 3, 2, 3, 2};
  ad_tensor *x = tensor_of(dt, 5, s, in_d_x), *u = tensor_of(dt, 4, s + 1, in_d_x + 36);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor_set_requires_grad(u, true);
  for (int training = 1; training >= 0; training--) {
    ad_tensor *y = test_layer_run(ctx, l, x, in_d_gy, training);
    test_expect_values(ctx, y, in_d_y, 72, tol, "y");
    test_expect_values(ctx, x->grad, in_d_dx, 72, tol, "dx");
    y = test_layer_run(ctx, l, u, in_d_gy + 36, training);
    cr_assert(y->ndim == 4 && y->shape[0] == 3 && y->shape[1] == 2 && y->shape[3] == 2);
    test_expect_values(ctx, y, in_d_y + 36, 36, tol, "unbatched y");
    test_expect_values(ctx, u->grad, in_d_dx + 36, 36, tol, "unbatched dx");
    ad_tape_reset(ctx);
  }
  ad_tensor_free(x);
  ad_tensor_free(u);
  nn_layer_free(l);
}

Test(norm3d, instance_norm3d_defaults_f64) { instance_norm3d_defaults(AD_F64); }
Test(norm3d, instance_norm3d_defaults_f32) { instance_norm3d_defaults(AD_F32); }

/* Unbatched [C, D, H, W] with running statistics: updated from the one
 * instance, then used in evaluation mode. */
Test(norm3d, instance_norm3d_unbatched_running_stats) {
  nn_instance_norm_opts o = {.dtype = AD_F64, .track_running_stats = true};
  nn_layer *l = nn_instance_norm3d_new(ctx, 2, &o);
  int64_t s[4] = {2, 2, 2, 3};
  ad_tensor *x = tensor_of(AD_F64, 4, s, in_u_x), *xe = tensor_of(AD_F64, 4, s, in_u_xe);
  cr_assert_not_null(nn_layer_forward(l, x, true), "%s", ad_last_error(ctx));
  test_expect_values(ctx, test_layer_buffer(l, "running_mean"), in_u_rm, 2, 1e-12, "running_mean");
  test_expect_values(ctx, test_layer_buffer(l, "running_var"), in_u_rv, 2, 1e-12, "running_var");
  ad_tensor *y = nn_layer_forward(l, xe, false);
  cr_assert(y && y->ndim == 4 && y->shape[0] == 2 && y->shape[3] == 3, "%s", ad_last_error(ctx));
  test_expect_values(ctx, y, in_u_ye, 24, 1e-12, "evaluation y");
  ad_tensor_free(x);
  ad_tensor_free(xe);
  nn_layer_free(l);
}

/* -------------------------------------------------------------- padding */

typedef enum pad_kind { CONST, REFLECT, REPLICATE } pad_kind;

typedef struct pad_case {
  const char *name;
  pad_kind kind;
  int64_t pad[6];
  double value;
  int nd;
  int64_t shape[5];
  const double *x, *gy, *y, *dx;
  size_t nx, ny;
} pad_case;

#define PAD(n, kind, pad, value, nd, ...)                                                          \
  {                                                                                                \
#n, kind, pad, value, nd, __VA_ARGS__, n##_x, n##_gy, n##_y, n##_dx,                           \
        sizeof n##_x / sizeof(double), sizeof n##_y / sizeof(double)                               \
  }
#define P6(a, b, c, d, e, f)                                                                       \
  { a, b, c, d, e, f }

/* tools/gen_norm3d_fixtures.py's PAD_CASES */
static const pad_case pad_cases[] = {
    PAD(cp3, CONST, P6(1, 0, -1, 2, 2, 1), -1.5, 5, {1, 2, 3, 4, 3}),
    PAD(cp3_u, CONST, P6(0, -1, 1, 1, 0, -1), 2.0, 4, {2, 3, 4, 3}),
    PAD(cp3_0, CONST, P6(1, 1, 0, 1, 1, 0), 0.0, 5, {1, 1, 2, 2, 2}),
    PAD(rf3, REFLECT, P6(1, 2, 2, 1, 1, 1), 0, 5, {2, 2, 2, 3, 3}),
    PAD(rf3_u, REFLECT, P6(-1, 2, 1, 0, 0, 1), 0, 4, {2, 3, 4, 3}),
    PAD(rp3, REPLICATE, P6(2, 0, 1, 3, 1, 2), 0, 5, {1, 2, 2, 3, 3}),
    PAD(rp3_u, REPLICATE, P6(1, 1, 1, 1, 1, 1), 0, 4, {2, 2, 2, 3}),
    PAD(rp3_neg, REPLICATE, P6(-1, 2, 1, -1, 0, 1), 0, 5, {1, 1, 3, 4, 4}),
};

static nn_layer *pad_layer(const pad_case *tc) {
  switch (tc->kind) {
  case CONST:
    return nn_constant_pad3d_new(ctx, tc->pad, tc->value);
  case REFLECT:
    return nn_reflection_pad3d_new(ctx, tc->pad);
  case REPLICATE:
    break;
  }
  return nn_replication_pad3d_new(ctx, tc->pad);
}

static void pads_match_pytorch(ad_dtype dt) {
  for (size_t k = 0; k < sizeof pad_cases / sizeof *pad_cases; k++) {
    const pad_case *tc = &pad_cases[k];
    nn_layer *l = pad_layer(tc);
    cr_assert_not_null(l, "%s: %s", tc->name, ad_last_error(ctx));
    ad_tensor *x = tensor_of(dt, tc->nd, tc->shape, tc->x);
    cr_assert_eq((size_t)x->size, tc->nx, "%s: the shape does not match the fixture", tc->name);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = test_layer_run(ctx, l, x, tc->gy, true);
    cr_assert_eq(y->ndim, tc->nd, "%s", tc->name);
    for (int d = 0; d < 3; d++) { /* the padded lengths, W first */
      int axis = tc->nd - 1 - d;
      cr_assert_eq(y->shape[axis], tc->shape[axis] + tc->pad[2 * d] + tc->pad[2 * d + 1], "%s",
                   tc->name);
    }
    char what[64];
    snprintf(what, sizeof what, "%s y", tc->name);
    test_expect_values(ctx, y, tc->y, (int64_t)tc->ny, tol_of(dt), what); /* exact: a gather */
    snprintf(what, sizeof what, "%s dx", tc->name);
    test_expect_values(ctx, x->grad, tc->dx, (int64_t)tc->nx, tol_of(dt), what);
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    nn_layer_free(l);
  }
}

Test(norm3d, pads_match_pytorch_f64) { pads_match_pytorch(AD_F64); }
Test(norm3d, pads_match_pytorch_f32) { pads_match_pytorch(AD_F32); }

/* --------------------------------------------------------------- dropout */

/* Whole [D, H, W] channels dropped, the rest scaled by 1 / (1 - p); the
 * mask is nn_dropout_new's (same seed) on the [N, C] elements, or on [C]
 * for an unbatched [C, D, H, W]; evaluation mode and p = 0 are the
 * identity; the fraction dropped is near p; the gradient is the mask. */
Test(norm3d, dropout3d_masks_whole_channels) {
  const double p = 0.3;
  int64_t s5[5] = {8, 50, 2, 3, 2}, s2[2] = {8, 50};
  ad_tensor *x = ad_ones(ctx, AD_F64, 5, s5), *x2 = ad_ones(ctx, AD_F64, 2, s2);
  ad_tensor_set_requires_grad(x, true);
  nn_layer *d3 = nn_dropout3d_new(ctx, p, 11), *d = nn_dropout_new(ctx, p, 11);
  cr_assert(d3 && d, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(d3), "dropout3d");
  ad_tensor *y = nn_layer_forward(d3, x, true), *m = nn_layer_forward(d, x2, true);
  cr_assert(y && m, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  int dropped = 0;
  double keep = 1 / (1 - p);
  for (int64_t c = 0; c < 400; c++) {
    double want = ad_tensor_get(m, c);
    cr_assert(want == 0 || want == keep, "mask %g", want);
    dropped += want == 0;
    for (int64_t j = 0; j < 12; j++) {
      QUICK_ASSERT(ad_tensor_get(y, c * 12 + j) == want, "channel %lld", (long long)c);
      QUICK_ASSERT(ad_tensor_get(x->grad, c * 12 + j) == want, "dx channel %lld", (long long)c);
    }
  }
  /* 400 channels, p = 0.3: 120 expected, sd 9.2 */
  cr_assert(dropped > 80 && dropped < 160, "%d of 400 dropped", dropped);
  /* the next call draws a new mask; a new layer with the seed repeats */
  ad_tensor *y2 = nn_layer_forward(d3, x, true);
  cr_assert(y2 && memcmp(y2->data, y->data, (size_t)y->size * sizeof(double)) != 0);
  nn_layer *again = nn_dropout3d_new(ctx, p, 11);
  ad_tensor *y3 = nn_layer_forward(again, x, true);
  cr_assert(y3 && memcmp(y3->data, y->data, (size_t)y->size * sizeof(double)) == 0);
  /* unbatched [C, D, H, W]: the mask on C, the draws of a batch of one */
  nn_layer *du = nn_dropout3d_new(ctx, p, 5), *db = nn_dropout3d_new(ctx, p, 5);
  int64_t sb[5] = {1, 50, 2, 3, 2};
  ad_tensor *xu = ad_ones(ctx, AD_F64, 4, s5 + 1), *xb = ad_ones(ctx, AD_F64, 5, sb);
  ad_tensor *yu = nn_layer_forward(du, xu, true), *yb = nn_layer_forward(db, xb, true);
  cr_assert(yu && yb, "%s", ad_last_error(ctx));
  cr_assert(yu->ndim == 4 && yu->shape[0] == 50 && yu->shape[3] == 2);
  cr_assert(memcmp(yu->data, yb->data, (size_t)yu->size * sizeof(double)) == 0);
  int kept = 0;
  for (int64_t c = 0; c < 50; c++) {
    double v = ad_tensor_get(yu, c * 12);
    kept += v != 0;
    for (int64_t j = 1; j < 12; j++) cr_assert_eq(ad_tensor_get(yu, c * 12 + j), v);
  }
  cr_assert(kept > 0 && kept < 50, "%d of 50 channels kept", kept);
  cr_assert_eq(nn_layer_forward(d3, x, false), x);
  nn_layer *zero = nn_dropout3d_new(ctx, 0, 1);
  cr_assert_eq(nn_layer_forward(zero, x, true), x);
  nn_layer_free(d3), nn_layer_free(d), nn_layer_free(again), nn_layer_free(du);
  nn_layer_free(db), nn_layer_free(zero);
  ad_tensor_free(x), ad_tensor_free(x2), ad_tensor_free(xu), ad_tensor_free(xb);
}

/* ------------------------------------------------------------ gradcheck */

/* Against central differences (test_layer_fd.h); second: also the second
 * order (not for the linear pads, whose first derivatives do not depend on
 * the input). */
static void check_derivatives(nn_layer *l, int nd, const int64_t *shape, bool training,
                              bool second) {
  test_layer_derivatives(
      ctx, l, nd, shape,
      &(test_fd_opts){.eval = !training, .first_only = !second, .redraw_params = true});
}

Test(norm3d, gradcheck_first_and_second_order) {
  int64_t s[5] = {2, 2, 2, 1, 3};
  /* batch norm: training (the batch statistics), evaluation (the running
   * ones, after the training steps above changed them) */
  nn_layer *l = nn_batch_norm3d_new(ctx, 2, &(nn_batch_norm_opts){.dtype = AD_F64});
  check_derivatives(l, 5, s, true, true);
  check_derivatives(l, 5, s, false, true);
  nn_layer_free(l);
  nn_instance_norm_opts io = {.dtype = AD_F64, .affine = true, .track_running_stats = true};
  l = nn_instance_norm3d_new(ctx, 2, &io);
  check_derivatives(l, 5, s, true, true);
  check_derivatives(l, 5, s, false, true);
  check_derivatives(l, 4, s + 1, true, true);
  nn_layer_free(l);
  l = nn_constant_pad3d_new(ctx, (int64_t[6]){1, -1, 0, 2, 1, 0}, 0.5);
  check_derivatives(l, 5, s, true, false);
  nn_layer_free(l);
  l = nn_reflection_pad3d_new(ctx, (int64_t[6]){2, 1, 0, 0, 1, 1});
  check_derivatives(l, 5, s, true, false);
  nn_layer_free(l);
  l = nn_replication_pad3d_new(ctx, (int64_t[6]){2, 1, 1, 1, 0, 2});
  check_derivatives(l, 4, s + 1, true, false);
  nn_layer_free(l);
}

/* ----------------------------------------------------- shapes, errors */

static ad_tensor *zeros(ad_dtype dt, int nd, const int64_t *shape) {
  return tensor_of(dt, nd, shape, NULL);
}

Test(norm3d, constructors_refuse_bad_arguments) {
  cr_assert_null(nn_batch_norm3d_new(ctx, 0, NULL));
  expect_msg(AD_ERR_ARG, "batch_norm3d: num_features 0 must be >= 1");
  cr_assert_null(nn_batch_norm3d_new(ctx, 2, &(nn_batch_norm_opts){.momentum = 1.5}));
  expect_msg(AD_ERR_ARG, "batch_norm3d: momentum 1.5 must be in (0, 1]");
  cr_assert_null(nn_batch_norm3d_new(ctx, 2, &(nn_batch_norm_opts){.eps = NAN}));
  expect_msg(AD_ERR_ARG, "batch_norm3d: eps nan must be finite and >= 0");
  cr_assert_null(nn_batch_norm3d_new(ctx, 2, &(nn_batch_norm_opts){.dtype = AD_I32}));
  expect_msg(AD_ERR_DTYPE, "batch_norm3d: parameters must be float");
  cr_assert_null(nn_instance_norm3d_new(ctx, -1, NULL));
  expect_msg(AD_ERR_ARG, "instance_norm3d: num_features -1 must be >= 1");
  cr_assert_null(nn_instance_norm3d_new(ctx, 2, &(nn_instance_norm_opts){.momentum = -0.1}));
  expect_msg(AD_ERR_ARG, "instance_norm3d: momentum -0.1 must be in (0, 1]");
  cr_assert_null(nn_instance_norm3d_new(ctx, 2, &(nn_instance_norm_opts){.eps = -1}));
  expect_msg(AD_ERR_ARG, "instance_norm3d: eps -1 must be finite and >= 0");
  cr_assert_null(nn_instance_norm3d_new(ctx, 2, &(nn_instance_norm_opts){.dtype = AD_I32}));
  expect_msg(AD_ERR_DTYPE, "instance_norm3d: parameters must be float");
  const double bad_p[] = {1, -0.1, NAN, INFINITY};
  for (int i = 0; i < 4; i++) {
    cr_assert_null(nn_dropout3d_new(ctx, bad_p[i], 1));
    expect_msg(AD_ERR_ARG, "dropout3d: p = ");
  }
  cr_assert_null(nn_constant_pad3d_new(ctx, NULL, 1));
  expect_msg(AD_ERR_NULL, "constant_pad3d: pad is NULL");
  cr_assert_null(nn_reflection_pad3d_new(ctx, NULL));
  expect_msg(AD_ERR_NULL, "reflection_pad3d: pad is NULL");
  cr_assert_null(nn_replication_pad3d_new(ctx, NULL));
  expect_msg(AD_ERR_NULL, "replication_pad3d: pad is NULL");
  cr_assert_null(nn_replication_pad3d_new(ctx, (int64_t[6]){0, 0, 0, 0, 0, INT64_C(1) << 31}));
  expect_msg(AD_ERR_ARG, "replication_pad3d: padding 2147483648 (entry 5) is outside +-(2^31 - 1)");
  cr_assert_null(nn_constant_pad3d_new(ctx, (int64_t[6]){0, 0, 0, 0, -(INT64_C(1) << 40), 0}, 0));
  expect_msg(AD_ERR_ARG, "constant_pad3d: padding -1099511627776 (entry 4)");
  /* no context: NULL, nothing to report it on */
  cr_assert_null(nn_batch_norm3d_new(NULL, 2, NULL));
  cr_assert_null(nn_instance_norm3d_new(NULL, 2, NULL));
  cr_assert_null(nn_dropout3d_new(NULL, 0.5, 1));
  cr_assert_null(nn_constant_pad3d_new(NULL, (int64_t[6]){0}, 0));
  cr_assert_null(nn_reflection_pad3d_new(NULL, (int64_t[6]){0}));
  cr_assert_null(nn_replication_pad3d_new(NULL, (int64_t[6]){0}));
}

Test(norm3d, norm_inputs_are_checked) {
  nn_layer *bn = nn_batch_norm3d_new(ctx, 3, NULL);
  nn_layer *in = nn_instance_norm3d_new(ctx, 3, &(nn_instance_norm_opts){.affine = true});
  nn_layer *in0 = nn_instance_norm3d_new(ctx, 3, NULL);
  int64_t s5[5] = {2, 3, 2, 2, 2}, s4[4] = {3, 2, 2, 2}, s3[3] = {3, 2, 2},
          s6[6] = {1, 2, 3, 1, 2, 2};
  int64_t c5[5] = {2, 4, 2, 2, 2}, one[5] = {1, 3, 1, 1, 1}, sp1[5] = {2, 3, 1, 1, 1};
  ad_tensor *x4 = zeros(AD_F32, 4, s4), *x3 = zeros(AD_F32, 3, s3), *x6 = zeros(AD_F32, 6, s6);
  ad_tensor *xc = zeros(AD_F32, 5, c5), *xd = zeros(AD_F64, 5, s5), *x1 = zeros(AD_F32, 5, one);
  ad_tensor *xs = zeros(AD_F32, 5, sp1);
  /* batch norm: [N, C, D, H, W] only, as PyTorch's "expected 5D input" */
  cr_assert_null(nn_layer_forward(bn, x4, true));
  expect_msg(AD_ERR_SHAPE,
             "batch_norm3d: input [3,2,2,2] has 4 dims; the layer expects [N, C, D, H, W]");
  cr_assert_null(nn_layer_forward(bn, x6, false));
  expect_msg(AD_ERR_SHAPE, "batch_norm3d: input [1,2,3,1,2,2] has 6 dims");
  cr_assert_null(nn_layer_forward(bn, xc, true));
  expect_msg(AD_ERR_SHAPE,
             "batch_norm3d: input [2,4,2,2,2] has 4 channels (dim 1), the layer expects 3");
  cr_assert_null(nn_layer_forward(bn, xd, true));
  expect_msg(AD_ERR_DTYPE, "batch_norm3d: input [2,3,2,2,2] is f64, the layer is f32");
  cr_assert_null(nn_layer_forward(bn, x1, true)); /* one value per channel */
  expect_msg(AD_ERR_SHAPE, "batch_norm3d: input [1,3,1,1,1] has 1 value(s) per channel");
  cr_assert_eq(ad_tensor_item(test_layer_buffer(bn, "num_batches_tracked")), 0);
  cr_assert_eq(ad_tensor_get(test_layer_buffer(bn, "running_var"), 0), 1);
  cr_assert_not_null(nn_layer_forward(bn, x1, false), "%s", ad_last_error(ctx));
  /* instance norm: [N, C, D, H, W] or [C, D, H, W] */
  cr_assert_null(nn_layer_forward(in, x3, true));
  expect_msg(AD_ERR_SHAPE, "instance_norm3d: input [3,2,2] has 3 dims; the layer expects [N, C, "
                           "D, H, W] or [C, D, H, W]");
  cr_assert_null(nn_layer_forward(in, x6, true));
  expect_msg(AD_ERR_SHAPE, "instance_norm3d: input [1,2,3,1,2,2] has 6 dims");
  cr_assert_null(nn_layer_forward(in, xc, true));
  expect_msg(AD_ERR_SHAPE,
             "instance_norm3d: input [2,4,2,2,2] has 4 channels (dim 1), the layer expects 3");
  cr_assert_null(nn_layer_forward(in, xd, false));
  expect_msg(AD_ERR_DTYPE, "instance_norm3d: input [2,3,2,2,2] is f64, the layer is f32");
  cr_assert_null(nn_layer_forward(in, xs, false)); /* instance statistics in both modes */
  expect_msg(AD_ERR_SHAPE,
             "instance_norm3d: input [2,3,1,1,1] has 1 value per instance and channel");
  /* without affine and running statistics, any channel count (PyTorch warns) */
  ad_tensor *y = nn_layer_forward(in0, xc, true);
  cr_assert(y && y->ndim == 5 && y->shape[1] == 4, "%s", ad_last_error(ctx));
  y = nn_layer_forward(in0, x4, true);
  cr_assert(y && y->ndim == 4, "%s", ad_last_error(ctx));
  /* ... but a float one: the message names the input's dtype only (the
   * layer has none of its own) */
  ad_tensor *xi = zeros(AD_I32, 5, s5);
  cr_assert_null(nn_layer_forward(in0, xi, true));
  expect_msg(AD_ERR_DTYPE, "instance_norm3d: input [2,3,2,2,2] must be float, got i32");
  ad_tensor_free(xi);
  /* an empty batch is an empty output */
  int64_t e[5] = {0, 3, 2, 2, 2};
  ad_tensor *xe = zeros(AD_F32, 5, e);
  y = nn_layer_forward(bn, xe, true);
  cr_assert(y && y->size == 0 && y->ndim == 5, "%s", ad_last_error(ctx));
  y = nn_layer_forward(in, xe, true);
  cr_assert(y && y->size == 0 && y->ndim == 5, "%s", ad_last_error(ctx));
  nn_layer_free(bn), nn_layer_free(in), nn_layer_free(in0);
  ad_tensor *ts[] = {x4, x3, x6, xc, xd, x1, xs, xe};
  for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) ad_tensor_free(ts[k]);
}

Test(norm3d, pad_and_dropout_inputs_are_checked) {
  int64_t s5[5] = {1, 2, 3, 4, 5}, s3[3] = {3, 4, 5}, s6[6] = {1, 1, 2, 3, 4, 5};
  ad_tensor *x5 = ad_ones(ctx, AD_F32, 5, s5), *x3 = ad_ones(ctx, AD_F32, 3, s3),
            *x6 = ad_ones(ctx, AD_F32, 6, s6), *xi = ad_zeros(ctx, AD_I32, 5, s5);
  nn_layer *rf = nn_reflection_pad3d_new(ctx, (int64_t[6]){0, 0, 0, 0, 3, 0});
  nn_layer *rfw = nn_reflection_pad3d_new(ctx, (int64_t[6]){1, 5, 0, 0, 0, 0});
  nn_layer *rp = nn_replication_pad3d_new(ctx, (int64_t[6]){0, 0, -2, -2, 0, 0});
  nn_layer *cp = nn_constant_pad3d_new(ctx, (int64_t[6]){0, 0, 0, 0, -2, -2}, 1);
  nn_layer *cpx = nn_constant_pad3d_new(ctx, (int64_t[6]){-6, 2, 0, 0, 0, 0}, 1);
  nn_layer *d3 = nn_dropout3d_new(ctx, 0.5, 1);
  cr_assert(rf && rfw && rp && cp && cpx && d3, "%s", ad_last_error(ctx));
  /* reflection: each amount below its axis's length, as PyTorch's */
  cr_assert_null(nn_layer_forward(rf, x5, true));
  expect_msg(AD_ERR_SHAPE, "reflection_pad3d: input [1,2,3,4,5]: padding (3, 0) of axis 2 must "
                           "pad by less than the axis length");
  cr_assert_null(nn_layer_forward(rfw, x5, true));
  expect_msg(AD_ERR_SHAPE, "reflection_pad3d: input [1,2,3,4,5]: padding (1, 5) of axis 4");
  cr_assert_null(nn_layer_forward(rp, x5, true));
  expect_msg(AD_ERR_SHAPE, "replication_pad3d: input [1,2,3,4,5]: padding (-2, -2) of axis 3 "
                           "gives a length outside [1, 2^31 - 1]");
  cr_assert_null(nn_layer_forward(cp, x5, true));
  expect_msg(AD_ERR_SHAPE, "constant_pad3d: input [1,2,3,4,5]: padding (-2, -2) of axis 2 gives a "
                           "negative length");
  cr_assert_null(nn_layer_forward(cpx, x5, true));
  expect_msg(AD_ERR_SHAPE, "constant_pad3d: input [1,2,3,4,5]: padding (-6, 2) of axis 4 crops "
                           "more than the axis length");
  /* replicating an empty axis: PyTorch refuses it too */
  int64_t e5[5] = {1, 1, 2, 2, 0};
  ad_tensor *xe = ad_zeros(ctx, AD_F32, 5, e5);
  nn_layer *rpe = nn_replication_pad3d_new(ctx, (int64_t[6]){1, 1, 0, 0, 0, 0});
  cr_assert_null(nn_layer_forward(rpe, xe, true));
  expect_msg(AD_ERR_SHAPE, "replication_pad3d: input [1,1,2,2,0]: padding (1, 1) of axis 4 "
                           "replicates an empty axis");
  nn_layer_free(rpe);
  ad_tensor_free(xe);
  nn_layer *pads[] = {rf, rp, cp};
  for (int k = 0; k < 3; k++) {
    cr_assert_null(nn_layer_forward(pads[k], x3, true));
    expect_msg(AD_ERR_SHAPE, "input [3,4,5] must be [N, C, D, H, W] or [C, D, H, W]");
    cr_assert_null(nn_layer_forward(pads[k], x6, true));
    expect_msg(AD_ERR_SHAPE, "input [1,1,2,3,4,5] must be [N, C, D, H, W] or [C, D, H, W]");
    cr_assert_null(nn_layer_forward(pads[k], xi, true));
    expect_msg(AD_ERR_DTYPE, "input [1,2,3,4,5] must be float, got i32");
  }
  /* dropout: the ranks PyTorch 1.13 deprecates are refused */
  cr_assert_null(nn_layer_forward(d3, x3, true));
  expect_msg(AD_ERR_SHAPE, "dropout3d: input [3,4,5] must be [N, C, D, H, W] or [C, D, H, W]");
  cr_assert_null(nn_layer_forward(d3, x6, false));
  expect_msg(AD_ERR_SHAPE, "dropout3d: input [1,1,2,3,4,5] must be");
  cr_assert_null(nn_layer_forward(d3, xi, true));
  expect_msg(AD_ERR_DTYPE, "dropout3d: input [1,2,3,4,5] must be float, got i32");
  /* NULL, freed and foreign inputs, checked before the layer's own rules */
  ad_ctx *other = ad_ctx_new();
  ad_tensor *xo = ad_ones(other, AD_F32, 5, s5), *gone = ad_ones(ctx, AD_F32, 5, s5);
  ad_tensor_free(gone);
  nn_layer *bn = nn_batch_norm3d_new(ctx, 2, NULL), *in = nn_instance_norm3d_new(ctx, 2, NULL);
  nn_layer *all[] = {rf, rp, cp, d3, bn, in};
  const char *kinds[] = {"reflection_pad3d", "replication_pad3d", "constant_pad3d",
                         "dropout3d",        "batch_norm3d",      "instance_norm3d"};
  for (int k = 0; k < 6; k++) {
    cr_assert_null(nn_layer_forward(all[k], NULL, true));
    expect_msg(AD_ERR_NULL, kinds[k]);
    cr_assert_null(nn_layer_forward(all[k], gone, true));
    expect_msg(AD_ERR_STATE, "x was freed");
    cr_assert_null(nn_layer_forward(all[k], xo, true));
    expect_msg(AD_ERR_ARG, "x belongs to another context");
  }
  ad_tensor_free(xo);
  ad_ctx_free(other);
  nn_layer *ls[] = {rf, rfw, rp, cp, cpx, d3, bn, in};
  for (size_t k = 0; k < sizeof ls / sizeof *ls; k++) nn_layer_free(ls[k]);
  ad_tensor_free(x5), ad_tensor_free(x3), ad_tensor_free(x6), ad_tensor_free(xi);
}

/* ----------------------------------------------------- describe, names */

/* torch 1.13's reprs, the class name as our kind. */
Test(norm3d, describe_as_pytorch_repr) {
  char buf[160];
  struct {
    nn_layer *l;
    const char *want;
  } cases[] = {
      {nn_batch_norm3d_new(ctx, 4, NULL),
       "batch_norm3d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"},
      {nn_batch_norm3d_new(ctx, 4, &(nn_batch_norm_opts){.cumulative = true}),
       "batch_norm3d(4, eps=1e-05, momentum=None, affine=True, track_running_stats=True)"},
      {nn_instance_norm3d_new(ctx, 3, NULL),
       "instance_norm3d(3, eps=1e-05, momentum=0.1, affine=False, track_running_stats=False)"},
      {nn_dropout3d_new(ctx, 0.3, 1), "dropout3d(p=0.3, inplace=False)"},
      {nn_constant_pad3d_new(ctx, (int64_t[6]){1, 1, 1, 1, 1, 1}, 2.5),
       "constant_pad3d(padding=(1, 1, 1, 1, 1, 1), value=2.5)"},
      {nn_reflection_pad3d_new(ctx, (int64_t[6]){1, 2, 3, 4, 5, 6}),
       "reflection_pad3d((1, 2, 3, 4, 5, 6))"},
      {nn_replication_pad3d_new(ctx, (int64_t[6]){1, 1, 1, 1, 1, 1}),
       "replication_pad3d((1, 1, 1, 1, 1, 1))"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    cr_assert_not_null(cases[k].l, "%s", ad_last_error(ctx));
    cr_assert_str_eq(nn_layer_describe(cases[k].l, buf, sizeof buf), cases[k].want);
    nn_layer_free(cases[k].l);
  }
}

/* PyTorch's state dict of Sequential(BatchNorm3d(2), InstanceNorm3d(2,
 * affine=True, track_running_stats=True)) loads under the same names and
 * gives PyTorch's output; saved back, the same tensors and bytes. */
Test(norm3d, pytorch_state_dict_both_ways) {
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_batch_norm3d_new(ctx, 2, NULL)), AD_OK);
  nn_instance_norm_opts o = {.affine = true, .track_running_stats = true};
  cr_assert_eq(nn_model_add(m, nn_instance_norm3d_new(ctx, 2, &o)), AD_OK);
  const char *names[] = {"0.weight", "0.bias", "1.weight", "1.bias"};
  const char *bufs[] = {"0.running_mean", "0.running_var", "0.num_batches_tracked",
                        "1.running_mean", "1.running_var", "1.num_batches_tracked"};
  for (int i = 0; i < 4; i++) cr_assert_str_eq(nn_params_name(nn_model_params(m), i), names[i]);
  for (int i = 0; i < 6; i++) cr_assert_str_eq(nn_params_name(nn_model_buffers(m), i), bufs[i]);
  cr_assert_eq(nn_model_load(m, NULL, N3_FIXTURE), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_item(nn_params_find(nn_model_buffers(m), "0.num_batches_tracked")), 1);
  int64_t s[5] = {2, 2, 2, 2, 3};
  ad_tensor *x = tensor_of(AD_F32, 5, s, ck_x);
  nn_model_set_training(m, false);
  ad_tensor *y = nn_model_forward(m, x);
  test_expect_values(ctx, y, ck_y, 48, 2e-6, "evaluation y");
  ad_tensor_free(x);

  const char *path = test_path("n3.safetensors");
  cr_assert_eq(nn_model_save(m, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  nn_checkpoint_info *theirs = nn_checkpoint_info_read(ctx, N3_FIXTURE);
  cr_assert_not_null(theirs, "%s", ad_last_error(ctx));
  cr_assert_eq(theirs->n, 10);
  nn_checkpoint_info_free(theirs);
  test_expect_same_tensors(ctx, N3_FIXTURE, path);
  nn_model_free(m);
}
