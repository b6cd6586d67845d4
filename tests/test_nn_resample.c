/* test_nn_resample.c: the resampling, padding and channel-dropout layers
 * (nn_upsample_new, nn_pixel_shuffle_new, nn_pixel_unshuffle_new, the
 * padding layers, nn_dropout1d_new, nn_dropout2d_new, nn_identity_new,
 * nn_unflatten_new). Values and input gradients (of sum(y * gy)) against
 * PyTorch 1.13 in tests/resample_fixtures.h, written by
 * tools/gen_resample_fixtures.py (upsampling in every mode on 3-D, 4-D
 * and 5-D inputs): float64 to 1e-12, float32 against PyTorch's float32
 * outputs (the interpolating modes weigh in the input's dtype) and
 * float64 gradients at a float tolerance. Also first- and second-order
 * derivatives against central differences, dropout's statistics and
 * seeding, PyTorch's reprs, and bad arguments and inputs. */
#include "nn.h"
#include "resample_fixtures.h"
#include "test_layer_values.h"
#include "test_tmpdir.h"
#include "test_tensor_of.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define LEN(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))

TEST_TMPDIR_SUITE(resample, "nn-resample");

static void expect_msg(ad_status st, const char *needle) { expect_status_msg(ctx, st, needle); }

/* ---------------------------------------------------------- vs PyTorch */

typedef struct ref {
  const double *v;
  int64_t n;
} ref;
#define REF(a)                                                                                     \
  { a, LEN(a) }
#define REFS(c) REF(c##_x), REF(c##_gy), REF(c##_y), REF(c##_dx), REF(c##_y32)

typedef enum { UP, PS, PU, ZP, CP1, CP2, RF1, RF2, RP1, RP2 } kind;

typedef struct rcase {
  const char *name;
  kind k;
  nn_upsample_opts up; /* UP */
  int64_t r;           /* PS, PU */
  int64_t pad[4];      /* pads */
  double value;        /* CP1, CP2 */
  int nd;
  int64_t shape[5];
  ref x, gy, y, dx, y32;
} rcase;

#define NEAREST   NN_UPSAMPLE_NEAREST
#define EXACT     NN_UPSAMPLE_NEAREST_EXACT
#define LINEAR    NN_UPSAMPLE_LINEAR
#define BILINEAR  NN_UPSAMPLE_BILINEAR
#define BICUBIC   NN_UPSAMPLE_BICUBIC
#define TRILINEAR NN_UPSAMPLE_TRILINEAR
#define SIZE(m, ...)                                                                               \
  {                                                                                                \
    .mode = m, .size = { __VA_ARGS__ }                                                             \
  }
#define SCALE(m, ...)                                                                              \
  {                                                                                                \
    .mode = m, .scale_factor = { __VA_ARGS__ }                                                     \
  }
/* an upsampling case: settings, the input's rank and shape */
#define UPX(name, opts, nd, ...)                                                                   \
  { #name, UP, opts, 0, {0 }, 0, nd, {__VA_ARGS__ }, REFS(name) }
#define AC(m, ...)                                                                                 \
  { .mode = m, .size = {__VA_ARGS__}, .align_corners = true }
#define SCALE_AC(m, ...)                                                                           \
  { .mode = m, .scale_factor = {__VA_ARGS__}, .align_corners = true }
#define SCALE_RC(m, ...)                                                                           \
  { .mode = m, .scale_factor = {__VA_ARGS__}, .recompute_scale_factor = true }

/* the generator's CASES, in order */
static const rcase cases[] = {
    {"n1_5_8", UP, SIZE(NEAREST, 8), 0, {0}, 0, 3, {2, 2, 5}, REFS(up_n1_5_8)},
    {"n1_s15", UP, SCALE(NEAREST, 1.5), 0, {0}, 0, 3, {2, 2, 5}, REFS(up_n1_s15)},
    {"n1_7_3", UP, SIZE(NEAREST, 3), 0, {0}, 0, 3, {1, 2, 7}, REFS(up_n1_7_3)},
    {"ne1_5_8", UP, SIZE(EXACT, 8), 0, {0}, 0, 3, {2, 2, 5}, REFS(up_ne1_5_8)},
    {"n2_s2x15", UP, SCALE(NEAREST, 2.0, 1.5), 0, {0}, 0, 4, {1, 2, 3, 4}, REFS(up_n2_s2x15)},
    {"n2_s06", UP, SCALE(NEAREST, 0.6), 0, {0}, 0, 4, {2, 1, 7, 5}, REFS(up_n2_s06)},
    {"ne2_5x3", UP, SIZE(EXACT, 5, 3), 0, {0}, 0, 4, {1, 2, 3, 7}, REFS(up_ne2_5x3)},
    {"l1_5_8", UP, SIZE(LINEAR, 8), 0, {0}, 0, 3, {2, 2, 5}, REFS(up_l1_5_8)},
    {"l1_5_8_ac",
     UP,
     {.mode = LINEAR, .size = {8}, .align_corners = true},
     0,
     {0},
     0,
     3,
     {2, 2, 5},
     REFS(up_l1_5_8_ac)},
    {"l1_s15", UP, SCALE(LINEAR, 1.5), 0, {0}, 0, 3, {2, 2, 5}, REFS(up_l1_s15)},
    {"l1_s06_ac",
     UP,
     {.mode = LINEAR, .scale_factor = {0.6}, .align_corners = true},
     0,
     {0},
     0,
     3,
     {1, 2, 7},
     REFS(up_l1_s06_ac)},
    {"l1_7_3", UP, SIZE(LINEAR, 3), 0, {0}, 0, 3, {1, 2, 7}, REFS(up_l1_7_3)},
    {"b_8x7", UP, SIZE(BILINEAR, 8, 7), 0, {0}, 0, 4, {2, 2, 5, 4}, REFS(up_b_8x7)},
    {"b_8x7_ac",
     UP,
     {.mode = BILINEAR, .size = {8, 7}, .align_corners = true},
     0,
     {0},
     0,
     4,
     {2, 2, 5, 4},
     REFS(up_b_8x7_ac)},
    {"b_s15x06", UP, SCALE(BILINEAR, 1.5, 0.6), 0, {0}, 0, 4, {1, 2, 5, 7}, REFS(up_b_s15x06)},
    {"b_s15_rc",
     UP,
     {.mode = BILINEAR, .scale_factor = {1.5}, .recompute_scale_factor = true},
     0,
     {0},
     0,
     4,
     {1, 2, 5, 4},
     REFS(up_b_s15_rc)},
    {"b_3x3", UP, SIZE(BILINEAR, 3), 0, {0}, 0, 4, {1, 1, 7, 7}, REFS(up_b_3x3)},
    {"b_1x5_ac",
     UP,
     {.mode = BILINEAR, .size = {1, 5}, .align_corners = true},
     0,
     {0},
     0,
     4,
     {1, 1, 4, 4},
     REFS(up_b_1x5_ac)},
    {"ps_r2", PS, {0}, 2, {0}, 0, 4, {2, 8, 3, 3}, REFS(ps_r2)},
    {"ps_r3_u", PS, {0}, 3, {0}, 0, 3, {9, 2, 2}, REFS(ps_r3_u)},
    {"pu_r2", PU, {0}, 2, {0}, 0, 4, {2, 2, 6, 4}, REFS(pu_r2)},
    {"pu_r3_u", PU, {0}, 3, {0}, 0, 3, {1, 6, 3}, REFS(pu_r3_u)},
    {"zp", ZP, {0}, 0, {1, 2, 3, 0}, 0, 4, {2, 2, 3, 4}, REFS(zp)},
    {"zp_neg", ZP, {0}, 0, {-1, 2, 0, -1}, 0, 4, {1, 2, 3, 4}, REFS(zp_neg)},
    {"cp1", CP1, {0}, 0, {2, 1}, 3.5, 3, {2, 2, 5}, REFS(cp1)},
    {"cp1_u", CP1, {0}, 0, {0, -2}, -1.0, 2, {2, 5}, REFS(cp1_u)},
    {"cp2", CP2, {0}, 0, {1, 0, -1, 2}, -1.5, 4, {1, 2, 4, 3}, REFS(cp2)},
    {"rf1", RF1, {0}, 0, {2, 3}, 0, 3, {2, 2, 5}, REFS(rf1)},
    {"rf1_u", RF1, {0}, 0, {-1, 2}, 0, 2, {2, 5}, REFS(rf1_u)},
    {"rf2", RF2, {0}, 0, {1, 2, 2, 1}, 0, 4, {2, 2, 3, 4}, REFS(rf2)},
    {"rp1", RP1, {0}, 0, {3, 1}, 0, 3, {2, 2, 4}, REFS(rp1)},
    {"rp2", RP2, {0}, 0, {2, 0, 1, 3}, 0, 4, {1, 2, 3, 3}, REFS(rp2)},
    {"rp2_u", RP2, {0}, 0, {1, 1, 1, 1}, 0, 3, {2, 2, 3}, REFS(rp2_u)},
    {"rp2_neg", RP2, {0}, 0, {-1, 2, 1, -1}, 0, 4, {1, 1, 4, 4}, REFS(rp2_neg)},
    /* bicubic */
    UPX(bc_8x7, SIZE(BICUBIC, 8, 7), 4, 2, 2, 5, 4),
    UPX(bc_8x7_ac, AC(BICUBIC, 8, 7), 4, 2, 2, 5, 4),
    UPX(bc_s15x06, SCALE(BICUBIC, 1.5, 0.6), 4, 1, 2, 5, 7),
    UPX(bc_s15x06_ac, SCALE_AC(BICUBIC, 1.5, 0.6), 4, 1, 2, 5, 7),
    UPX(bc_s13_rc, SCALE_RC(BICUBIC, 1.3), 4, 1, 2, 5, 4),
    UPX(bc_s27, SCALE(BICUBIC, 2.7), 4, 1, 2, 2, 3),
    UPX(bc_s2, SCALE(BICUBIC, 2.0), 4, 2, 3, 3, 3),
    UPX(bc_3x3, SIZE(BICUBIC, 3), 4, 1, 2, 7, 7),
    UPX(bc_same, SIZE(BICUBIC, 3, 4), 4, 2, 2, 3, 4),
    UPX(bc_s105, SCALE(BICUBIC, 1.05, 1.3), 4, 1, 2, 10, 4),
    UPX(bc_1x5, SIZE(BICUBIC, 3, 1), 4, 1, 2, 1, 5),
    UPX(bc_4x1_ac, AC(BICUBIC, 1, 3), 4, 1, 2, 4, 2),
    UPX(bc_1to3_ac, AC(BICUBIC, 3, 1), 4, 1, 2, 1, 2),
    /* trilinear */
    UPX(tl_4x5x6, SIZE(TRILINEAR, 4, 5, 6), 5, 1, 2, 2, 3, 4),
    UPX(tl_4x5x6_ac, AC(TRILINEAR, 4, 5, 6), 5, 1, 2, 2, 3, 4),
    UPX(tl_s, SCALE(TRILINEAR, 1.5, 0.6, 2.0), 5, 1, 2, 3, 5, 2),
    UPX(tl_s_ac, SCALE_AC(TRILINEAR, 1.5, 0.6, 2.0), 5, 1, 2, 3, 5, 2),
    UPX(tl_s17_rc, SCALE_RC(TRILINEAR, 1.7), 5, 2, 2, 2, 3, 3),
    UPX(tl_1, SIZE(TRILINEAR, 2, 1, 4), 5, 2, 2, 1, 3, 2),
    UPX(tl_s105, SCALE(TRILINEAR, 1.05, 2.5, 0.5), 5, 1, 2, 10, 2, 5),
    /* nearest and nearest-exact on [N, C, D, H, W] */
    UPX(n3_size, SIZE(NEAREST, 3, 5, 4), 5, 1, 2, 2, 3, 6),
    UPX(n3_s, SCALE(NEAREST, 2.0, 1.5, 0.6), 5, 1, 2, 2, 3, 5),
    UPX(n3_1, SIZE(NEAREST, 2, 3, 1), 5, 2, 2, 1, 1, 3),
    UPX(ne3_size, SIZE(EXACT, 3, 5, 4), 5, 1, 2, 2, 3, 6),
    UPX(ne3_s, SCALE(EXACT, 1.7, 0.5, 2.3), 5, 2, 2, 3, 4, 2),
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

static nn_layer *case_layer(const rcase *c) {
  switch (c->k) {
  case UP:
    return nn_upsample_new(ctx, &c->up);
  case PS:
    return nn_pixel_shuffle_new(ctx, c->r);
  case PU:
    return nn_pixel_unshuffle_new(ctx, c->r);
  case ZP:
    return nn_zero_pad2d_new(ctx, c->pad);
  case CP1:
    return nn_constant_pad1d_new(ctx, c->pad, c->value);
  case CP2:
    return nn_constant_pad2d_new(ctx, c->pad, c->value);
  case RF1:
    return nn_reflection_pad1d_new(ctx, c->pad);
  case RF2:
    return nn_reflection_pad2d_new(ctx, c->pad);
  case RP1:
    return nn_replication_pad1d_new(ctx, c->pad);
  case RP2:
    break;
  }
  return nn_replication_pad2d_new(ctx, c->pad);
}

static void cases_match(ad_dtype dt) {
  char what[96];
  for (int k = 0; k < N_CASES; k++) {
    const rcase *c = &cases[k];
    /* PyTorch's compiled float bicubic kernel rounds differently from its
     * source's float arithmetic, which we follow: some ulps */
    double tol = dt == AD_F64 ? 1e-12 : c->k == UP && c->up.mode == BICUBIC ? 1e-5 : 2e-6;
    nn_layer *l = case_layer(c);
    cr_assert_not_null(l, "%s: %s", c->name, ad_last_error(ctx));
    ad_tensor *x = tensor_of(dt, c->nd, c->shape, c->x.v);
    cr_assert_eq(x->size, c->x.n, "%s", c->name);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = nn_layer_forward(l, x, true);
    snprintf(what, sizeof what, "%s %s y", c->name, ad_dtype_name(dt));
    test_expect_values(ctx, y, dt == AD_F64 ? c->y.v : c->y32.v, c->y.n, tol, what);
    cr_assert_eq(y->ndim, c->nd, "%s: rank %d", what, y->ndim);
    ad_tensor *g = tensor_of(dt, y->ndim, y->shape, c->gy.v);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, g)), NULL), AD_OK, "%s",
                 ad_last_error(ctx));
    snprintf(what, sizeof what, "%s %s dx", c->name, ad_dtype_name(dt));
    test_expect_values(ctx, x->grad, c->dx.v, c->dx.n, tol, what);
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(g);
    nn_layer_free(l);
  }
}

Test(resample, layers_match_pytorch_f64) { cases_match(AD_F64); }
Test(resample, layers_match_pytorch_f32) { cases_match(AD_F32); }

/* PyTorch 1.13's 'nearest' takes floor(i * in / out): 5 -> 8 reads 0 0 1
 * 1 2 3 3 4 (not symmetric about the middle), 'nearest-exact' floor((i +
 * 0.5) in / out): 0 0 1 2 2 3 4 4; and 7 -> 3 reads 0 2 4. */
Test(resample, nearest_index_rules) {
  int64_t s5[3] = {1, 1, 5}, s7[3] = {1, 1, 7};
  ad_tensor *x5 = ad_zeros(ctx, AD_F64, 3, s5), *x7 = ad_zeros(ctx, AD_F64, 3, s7);
  for (int i = 0; i < 7; i++) ad_tensor_set(x7, i, i), i < 5 ? ad_tensor_set(x5, i, i) : AD_OK;
  nn_layer *n = nn_upsample_new(ctx, &(nn_upsample_opts){.size = {8}});
  nn_layer *e = nn_upsample_new(ctx, &(nn_upsample_opts){.mode = EXACT, .size = {8}});
  nn_layer *d = nn_upsample_new(ctx, &(nn_upsample_opts){.size = {3}});
  ad_tensor *yn = nn_layer_forward(n, x5, false), *ye = nn_layer_forward(e, x5, false),
            *yd = nn_layer_forward(d, x7, false);
  const double wn[8] = {0, 0, 1, 1, 2, 3, 3, 4}, we[8] = {0, 0, 1, 2, 2, 3, 4, 4},
               wd[3] = {0, 2, 4};
  test_expect_values(ctx, yn, wn, 8, 0, "nearest 5 -> 8");
  test_expect_values(ctx, ye, we, 8, 0, "nearest-exact 5 -> 8");
  test_expect_values(ctx, yd, wd, 3, 0, "nearest 7 -> 3");
  /* an unchanged axis is x itself (PyTorch's kernels copy) */
  nn_layer *same = nn_upsample_new(ctx, &(nn_upsample_opts){.mode = LINEAR, .size = {5}});
  cr_assert_eq(nn_layer_forward(same, x5, false), x5);
  nn_layer_free(n), nn_layer_free(e), nn_layer_free(d), nn_layer_free(same);
  ad_tensor_free(x5), ad_tensor_free(x7);
}

/* With a scale factor, PyTorch 1.13's nearest forward takes floor(i * s)
 * also when the length is kept or doubled (F.interpolate(arange(10.),
 * scale_factor=1.05) is 0 0 1 .. 8; with 2.0774 the 20 outputs start 0 0
 * 0 1 1 2), not the copy or i / 2 its backward and channels-last kernel
 * use; 'nearest' with scale 1 is still x itself. */
Test(resample, nearest_scale_keeps_floor_rule) {
  int64_t s10[3] = {1, 1, 10};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 3, s10);
  for (int i = 0; i < 10; i++) ad_tensor_set(x, i, i);
  nn_layer *k = nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {1.05}});
  nn_layer *d = nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {2.0774342407552147}});
  nn_layer *one = nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {1}});
  ad_tensor *yk = nn_layer_forward(k, x, false), *yd = nn_layer_forward(d, x, false);
  const double wk[10] = {0, 0, 1, 2, 3, 4, 5, 6, 7, 8},
               wd[20] = {0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9};
  test_expect_values(ctx, yk, wk, 10, 0, "nearest 10 at scale 1.05");
  cr_assert_eq(yd->shape[2], 20);
  test_expect_values(ctx, yd, wd, 20, 0, "nearest 10 at scale 2.0774");
  cr_assert_eq(nn_layer_forward(one, x, false), x);
  /* the same on the W axis of [N, C, D, H, W] (PyTorch's [N, C, D, H, W]
   * forward; its backward and channels-last kernel take the shortcuts);
   * the gradient is the tape's: 2 at x[0], 0 at x[9] */
  int64_t s5[5] = {1, 2, 1, 1, 10};
  ad_tensor *x5 = ad_zeros(ctx, AD_F64, 5, s5);
  for (int i = 0; i < 20; i++) ad_tensor_set(x5, i, i % 10);
  ad_tensor_set_requires_grad(x5, true);
  nn_layer *k5 = nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {1, 1, 1.05}});
  ad_tensor *y5 = nn_layer_forward(k5, x5, true);
  cr_assert(y5 && y5->ndim == 5 && y5->shape[4] == 10, "%s", ad_last_error(ctx));
  test_expect_values(ctx, ad_narrow(ctx, y5, 1, 1, 1), wk, 10, 0, "5-D nearest at scale 1.05");
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y5), NULL), AD_OK, "%s", ad_last_error(ctx));
  for (int i = 0; i < 20; i++)
    cr_assert_eq(ad_tensor_get(x5->grad, i), i % 10 == 0 ? 2 : i % 10 == 9 ? 0 : 1, "dx[%d]", i);
  ad_tape_reset(ctx);
  nn_layer_free(k), nn_layer_free(d), nn_layer_free(one), nn_layer_free(k5);
  ad_tensor_free(x), ad_tensor_free(x5);
}

/* One channel: a contiguous [N, 1, H, W] or [N, 1, D, H, W] is also
 * channels-last contiguous, and PyTorch 1.13's forward then takes the
 * channels-last kernel's shortcuts: F.interpolate(arange(10.).view(1, 1,
 * 1, 10), scale_factor=1.05) is x itself, with 2.0774 the 20 outputs are
 * 0 0 1 1 .. 9 9; its gradient is then one per element. Two channels keep
 * the floor rule (above); 'nearest-exact' has no shortcut. */
Test(resample, nearest_one_channel_takes_the_channels_last_rule) {
  int64_t s4[4] = {1, 1, 1, 10}, s5[5] = {2, 1, 1, 1, 10};
  ad_tensor *x4 = ad_zeros(ctx, AD_F64, 4, s4), *x5 = ad_zeros(ctx, AD_F64, 5, s5);
  for (int i = 0; i < 20; i++) ad_tensor_set(x5, i, i % 10);
  for (int i = 0; i < 10; i++) ad_tensor_set(x4, i, i);
  ad_tensor_set_requires_grad(x4, true);
  nn_layer *k = nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {1.05}});
  nn_layer *d = nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {1, 2.0774342407552147}});
  nn_layer *d5 =
      nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {1, 1, 2.0774342407552147}});
  ad_tensor *yk = nn_layer_forward(k, x4, true), *yd = nn_layer_forward(d, x4, false);
  ad_tensor *y5 = nn_layer_forward(d5, x5, false);
  const double wk[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9},
               wd[20] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9};
  test_expect_values(ctx, yk, wk, 10, 0, "[1, 1, 1, 10] nearest at scale 1.05");
  cr_assert(yd && yd->shape[3] == 20 && y5 && y5->shape[4] == 20, "%s", ad_last_error(ctx));
  test_expect_values(ctx, yd, wd, 20, 0, "[1, 1, 1, 10] nearest at scale 2.0774");
  test_expect_values(ctx, ad_narrow(ctx, y5, 0, 1, 1), wd, 20, 0,
                     "[2, 1, 1, 1, 10] nearest at 2.0774");
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, yk), NULL), AD_OK, "%s", ad_last_error(ctx));
  for (int i = 0; i < 10; i++) cr_assert_eq(ad_tensor_get(x4->grad, i), 1, "dx[%d]", i);
  ad_tape_reset(ctx);
  nn_layer_free(k), nn_layer_free(d), nn_layer_free(d5);
  ad_tensor_free(x4), ad_tensor_free(x5);
}

/* ConstantPad1d((1, 1), -0.0) pads with -0.0 in PyTorch (1 / y is -inf
 * there), not with ad_pad's +0.0. */
Test(resample, constant_pad_keeps_negative_zero) {
  int64_t s2[3] = {1, 1, 2};
  ad_tensor *x = ad_ones(ctx, AD_F64, 3, s2);
  nn_layer *l = nn_constant_pad1d_new(ctx, (int64_t[2]){1, 1}, -0.0);
  ad_tensor *y = nn_layer_forward(l, x, false);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->size, 4);
  for (int i = 0; i < 4; i++)
    cr_assert_eq(signbit(ad_tensor_get(y, i)) != 0, i == 0 || i == 3, "y[%d] = %g", i,
                 ad_tensor_get(y, i));
  nn_layer_free(l);
  ad_tensor_free(x);
}

/* ConstantPad1d((2, -3)) on a length of 2: the output length 1 is not
 * negative, but the crop takes 3 of 2 (PyTorch refuses it in its narrow);
 * the message names the padding, not an inner narrow. */
Test(resample, constant_pad_refuses_crop_beyond_axis) {
  int64_t s2[3] = {1, 1, 2};
  ad_tensor *x = ad_ones(ctx, AD_F64, 3, s2);
  nn_layer *l = nn_constant_pad1d_new(ctx, (int64_t[2]){2, -3}, 0);
  cr_assert_null(nn_layer_forward(l, x, false));
  expect_msg(AD_ERR_SHAPE, "constant_pad1d: input [1,1,2]: padding (2, -3) of axis 2 crops more");
  nn_layer_free(l);
  ad_tensor_free(x);
}

/* An inf reaches only the outputs that read it, as PyTorch's (a gather,
 * not a product with a matrix of mostly zeros): x[5] of 6 is read by
 * outputs 9..11 of 12 (sources 4.25, 4.75, 5.25). */
Test(resample, bilinear_keeps_nonfinite_local) {
  int64_t s[4] = {1, 1, 1, 6};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 4, s);
  ad_tensor_set(x, 5, INFINITY);
  nn_layer *l = nn_upsample_new(ctx, &(nn_upsample_opts){.mode = BILINEAR, .size = {1, 12}});
  ad_tensor *y = nn_layer_forward(l, x, false);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  for (int i = 0; i < 12; i++) {
    double v = ad_tensor_get(y, i);
    cr_assert(i < 9 ? v == 0 : isinf(v), "[%d] = %g", i, v);
  }
  nn_layer_free(l);
  ad_tensor_free(x);
}

/* The linear modes record one op per resampled axis (ad_resample_axis:
 * its taps summed in one pass; the composite before took 5 ops an axis
 * for two taps, 9 for bicubic's four), and its value is that composite's,
 * bit for bit: bilinear of [2, 3, 5, 7] to [9, 14] against index_select,
 * mul and add along each axis (W first, then H) with the layer's taps. */
Test(resample, linear_modes_record_one_op_an_axis) {
  static const struct {
    int mode, nd;
    int64_t in[5], size[3];
    size_t ops;
  } lin[4] = {{LINEAR, 3, {2, 3, 5}, {11}, 1},
              {BILINEAR, 4, {2, 3, 5, 7}, {9, 14}, 2},
              {BICUBIC, 4, {2, 3, 5, 7}, {9, 14}, 2},
              {TRILINEAR, 5, {2, 3, 4, 5, 6}, {5, 9, 12}, 3}};
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  for (int k = 0; k < 4; k++) {
    ad_tensor *x = ad_rand(ctx, &rng, AD_F32, lin[k].nd, lin[k].in, -1, 1);
    nn_upsample_opts o = {.mode = lin[k].mode};
    memcpy(o.size, lin[k].size, sizeof o.size);
    nn_layer *l = nn_upsample_new(ctx, &o);
    cr_assert(x && l, "%s", ad_last_error(ctx));
    ad_tensor_set_requires_grad(x, true);
    size_t before = ad_tape_size(ctx);
    ad_tensor *y = nn_layer_forward(l, x, true);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_tape_size(ctx) - before, lin[k].ops, "case %d: %zu ops", k,
                 ad_tape_size(ctx) - before);
    if (lin[k].mode == BILINEAR) { /* the composite, with the ops' own taps */
      ad_tensor *h[3], *wd[3];     /* y = resample of y1 on H; y1 = resample of x on W */
      cr_assert_eq(ad_tensor_inputs(y, h, 3), 3);
      cr_assert_eq(ad_tensor_inputs(h[0], wd, 3), 3);
      ad_tensor *const *taps[2] = {wd, h}, *r = x;
      for (int d = 3; d >= 2; d--) {
        ad_tensor *ix = taps[3 - d][1], *w = taps[3 - d][2], *sum = NULL;
        int64_t m = ix->shape[1], bs[4] = {1, 1, 1, 1};
        bs[d] = m;
        for (int t = 0; t < 2; t++) {
          ad_tensor *it = ad_from_data(ctx, AD_I32, 1, &m, (const int32_t *)ix->data + t * m);
          ad_tensor *wt = ad_reshape(ctx, ad_narrow(ctx, w, 0, t, 1), 4, bs);
          ad_tensor *p = ad_mul(ctx, ad_index_select_axis(ctx, r, d, it), wt);
          sum = t ? ad_add(ctx, sum, p) : p;
          ad_tensor_free(it);
        }
        r = sum;
      }
      cr_assert_not_null(r, "%s", ad_last_error(ctx));
      cr_assert_eq(r->size, y->size);
      for (int64_t i = 0; i < y->size; i++)
        cr_assert_eq(ad_tensor_get(r, i), ad_tensor_get(y, i), "bilinear [%lld]", (long long)i);
    }
    ad_tape_reset(ctx);
    nn_layer_free(l);
    ad_tensor_free(x);
  }
}

/* Bicubic overshoots and is not clamped: a step 0 0 1 1 to 8 is PyTorch's
 * 0 -0.035 -0.105 0.227 0.773 1.105 1.035 1 (dyadic, exact); the border
 * reads x[-1] as x[0] (clamped indices, weights not renormalised). */
Test(resample, bicubic_overshoots_as_pytorch) {
  int64_t s[4] = {1, 1, 1, 4};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 4, s);
  ad_tensor_set(x, 2, 1), ad_tensor_set(x, 3, 1);
  nn_layer *l = nn_upsample_new(ctx, &(nn_upsample_opts){.mode = BICUBIC, .size = {1, 8}});
  const double want[8] = {0,         -0.03515625, -0.10546875, 0.2265625,
                          0.7734375, 1.10546875,  1.03515625,  1};
  test_expect_values(ctx, nn_layer_forward(l, x, false), want, 8, 0, "bicubic step");
  nn_layer_free(l);
  ad_tensor_free(x);
}

/* As PyTorch's kernel, bicubic resamples an axis of unchanged length too
 * (weights 0 1 0 0), so an inf makes NaN of its neighbours (inf * 0):
 * [0 0 0 0 0 inf] to 6 is 0 0 0 nan nan nan, to 12 seven zeros and five
 * NaN; a finite input of unchanged size comes back equal. */
Test(resample, bicubic_unchanged_axis_is_resampled) {
  int64_t s[4] = {1, 1, 1, 6};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 4, s);
  ad_tensor_set(x, 5, INFINITY);
  nn_layer *same = nn_upsample_new(ctx, &(nn_upsample_opts){.mode = BICUBIC, .size = {1, 6}});
  nn_layer *up = nn_upsample_new(ctx, &(nn_upsample_opts){.mode = BICUBIC, .size = {1, 12}});
  ad_tensor *ys = nn_layer_forward(same, x, false), *yu = nn_layer_forward(up, x, false);
  cr_assert(ys && yu, "%s", ad_last_error(ctx));
  for (int i = 0; i < 6; i++)
    cr_assert(i < 3 ? ad_tensor_get(ys, i) == 0 : isnan(ad_tensor_get(ys, i)), "[%d] = %g", i,
              ad_tensor_get(ys, i));
  for (int i = 0; i < 12; i++)
    cr_assert(i < 7 ? ad_tensor_get(yu, i) == 0 : isnan(ad_tensor_get(yu, i)), "[%d] = %g", i,
              ad_tensor_get(yu, i));
  for (int i = 0; i < 6; i++) ad_tensor_set(x, i, i * i - 2.5);
  ys = nn_layer_forward(same, x, false);
  cr_assert(ys && ys != x, "%s", ad_last_error(ctx));
  for (int i = 0; i < 6; i++) cr_assert_eq(ad_tensor_get(ys, i), i * i - 2.5);
  nn_layer_free(same), nn_layer_free(up);
  ad_tensor_free(x);
}

/* Trilinear leaves an axis of unchanged length as it is, as linear and
 * bilinear do (an input with none changed is x itself). */
Test(resample, trilinear_unchanged_axes) {
  int64_t s[5] = {1, 2, 3, 1, 4};
  ad_tensor *x = ad_ones(ctx, AD_F32, 5, s);
  nn_layer *l = nn_upsample_new(ctx, &(nn_upsample_opts){.mode = TRILINEAR, .size = {3, 1, 4}});
  cr_assert_eq(nn_layer_forward(l, x, false), x, "%s", ad_last_error(ctx));
  nn_layer_free(l);
  ad_tensor_free(x);
}

/* ---------------------------------------------------------- derivatives */

static ad_tensor *run_layer(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c, (void)n;
  return nn_layer_forward(ud, in[0], true);
}

static void check_layer(nn_layer *l, int nd, const int64_t *shape, const char *name) {
  ad_rng rng;
  ad_rng_seed(&rng, 4);
  ad_tensor *x = ad_rand(ctx, &rng, AD_F64, nd, shape, -2, 2);
  cr_assert_not_null(x);
  ad_tensor_set_requires_grad(x, true);
  ad_check_report r;
  cr_assert_eq(ad_gradcheck(ctx, run_layer, l, 1, &x, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed, "%s: first order, [%lld] %g vs %g", name, (long long)r.index, r.analytic,
            r.numeric);
  cr_assert_eq(ad_gradgradcheck(ctx, run_layer, l, 1, &x, NULL, &r), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(r.passed, "%s: second order, [%lld] %g vs %g", name, (long long)r.index, r.analytic,
            r.numeric);
  ad_tensor_free(x);
}

Test(resample, gradcheck_first_and_second_order) {
  for (int k = 0; k < N_CASES; k++) {
    nn_layer *l = case_layer(&cases[k]);
    cr_assert_not_null(l);
    check_layer(l, cases[k].nd, cases[k].shape, cases[k].name);
    nn_layer_free(l);
  }
  /* channel dropout: a constant mask, so a product's derivatives; the
   * layer's draws are rewound for each evaluation by a fresh layer */
  int64_t s[4] = {2, 3, 2, 2};
  nn_layer *d = nn_dropout2d_new(ctx, 0.5, 3);
  ad_tensor *x = ad_ones(ctx, AD_F64, 4, s);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = nn_layer_forward(d, x, true);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  for (int64_t i = 0; i < x->size; i++)
    cr_assert_eq(ad_tensor_get(x->grad, i), ad_tensor_get(y, i), "dy/dx is the mask at %lld",
                 (long long)i);
  ad_tape_reset(ctx);
  nn_layer_free(d);
  ad_tensor_free(x);
}

/* ------------------------------------------------------- channel dropout */

/* Whole channels dropped, the rest scaled by 1 / (1 - p); the mask is
 * nn_dropout_new's (same seed) on the [N, C] elements; evaluation mode and
 * p = 0 are the identity; the fraction dropped is near p. */
Test(resample, channel_dropout_masks_whole_channels) {
  const double p = 0.3;
  int64_t s4[4] = {8, 50, 3, 2}, s2[2] = {8, 50}, s3[3] = {8, 50, 6};
  ad_tensor *x = ad_ones(ctx, AD_F32, 4, s4), *x2 = ad_ones(ctx, AD_F32, 2, s2),
            *x3 = ad_ones(ctx, AD_F32, 3, s3);
  nn_layer *d2 = nn_dropout2d_new(ctx, p, 11), *d = nn_dropout_new(ctx, p, 11);
  nn_layer *d1 = nn_dropout1d_new(ctx, p, 11);
  ad_tensor *y = nn_layer_forward(d2, x, true), *m = nn_layer_forward(d, x2, true);
  ad_tensor *y1 = nn_layer_forward(d1, x3, true);
  cr_assert(y && m && y1, "%s", ad_last_error(ctx));
  int dropped = 0;
  float keep = (float)(1 / (1 - p));
  for (int64_t c = 0; c < 400; c++) {
    float want = (float)ad_tensor_get(m, c);
    cr_assert(want == 0 || want == keep);
    dropped += want == 0;
    for (int64_t j = 0; j < 6; j++) {
      cr_assert_eq((float)ad_tensor_get(y, c * 6 + j), want, "channel %lld", (long long)c);
      cr_assert_eq((float)ad_tensor_get(y1, c * 6 + j), want, "dropout1d channel %lld",
                   (long long)c);
    }
  }
  /* 400 channels, p = 0.3: 120 expected, sd 9.2 */
  cr_assert(dropped > 80 && dropped < 160, "%d of 400 dropped", dropped);
  /* the next call draws a new mask; a new layer with the seed repeats */
  ad_tensor *y2 = nn_layer_forward(d2, x, true);
  cr_assert(y2 && memcmp(y2->data, y->data, (size_t)y->size * sizeof(float)) != 0);
  nn_layer *again = nn_dropout2d_new(ctx, p, 11);
  ad_tensor *y3 = nn_layer_forward(again, x, true);
  cr_assert(y3 && memcmp(y3->data, y->data, (size_t)y->size * sizeof(float)) == 0);
  /* Dropout2d on 3-D input is PyTorch 1.13's [N, C, L] (channels dim 1) */
  nn_layer *d2b = nn_dropout2d_new(ctx, p, 11);
  ad_tensor *y4 = nn_layer_forward(d2b, x3, true);
  cr_assert(y4 && memcmp(y4->data, y1->data, (size_t)y1->size * sizeof(float)) == 0);
  /* unbatched Dropout1d [C, L]: the mask on C */
  int64_t su[2] = {50, 6};
  nn_layer *d1u = nn_dropout1d_new(ctx, p, 11), *du = nn_dropout_new(ctx, p, 11);
  int64_t sc[1] = {50};
  ad_tensor *xu = ad_ones(ctx, AD_F32, 2, su), *xc = ad_ones(ctx, AD_F32, 1, sc);
  ad_tensor *yu = nn_layer_forward(d1u, xu, true), *mu = nn_layer_forward(du, xc, true);
  cr_assert(yu && mu);
  for (int64_t i = 0; i < 300; i++)
    cr_assert_eq(ad_tensor_get(yu, i), ad_tensor_get(mu, i / 6), "unbatched [%lld]", (long long)i);
  cr_assert_eq(nn_layer_forward(d2, x, false), x);
  nn_layer *zero = nn_dropout2d_new(ctx, 0, 1);
  cr_assert_eq(nn_layer_forward(zero, x, true), x);
  nn_layer_free(d2), nn_layer_free(d), nn_layer_free(d1), nn_layer_free(again);
  nn_layer_free(d2b), nn_layer_free(d1u), nn_layer_free(du), nn_layer_free(zero);
  ad_tensor_free(x), ad_tensor_free(x2), ad_tensor_free(x3), ad_tensor_free(xu);
  ad_tensor_free(xc);
}

/* ------------------------------------------------- identity, unflatten */

Test(resample, identity_and_unflatten) {
  int64_t s[3] = {2, 12, 5};
  ad_tensor *x = ad_ones(ctx, AD_F32, 3, s);
  nn_layer *id = nn_identity_new(ctx);
  cr_assert_eq(nn_layer_forward(id, x, true), x);
  int64_t sz[3] = {2, -1, 3};
  nn_layer *u = nn_unflatten_new(ctx, 1, 3, sz), *un = nn_unflatten_new(ctx, -1, 1, s + 2);
  ad_tensor *y = nn_layer_forward(u, x, true), *yn = nn_layer_forward(un, x, true);
  cr_assert(y && yn, "%s", ad_last_error(ctx));
  cr_assert(y->ndim == 5 && y->shape[0] == 2 && y->shape[1] == 2 && y->shape[2] == 2 &&
            y->shape[3] == 3 && y->shape[4] == 5);
  cr_assert(yn->ndim == 3 && yn->shape[2] == 5);
  int64_t bad[2] = {5, 3};
  nn_layer *ub = nn_unflatten_new(ctx, 1, 2, bad);
  cr_assert_null(nn_layer_forward(ub, x, true));
  expect_msg(AD_ERR_SHAPE, "unflatten: input [2,12,5] does not match the sizes (dim 1, 2 sizes)");
  int64_t huge[3] = {INT64_C(1) << 40, INT64_C(1) << 40, 2};
  nn_layer *uh = nn_unflatten_new(ctx, 1, 3, huge); /* no overflow on the way (UBSan) */
  cr_assert_null(nn_layer_forward(uh, x, true));
  expect_msg(AD_ERR_SHAPE, "does not match the sizes");
  nn_layer *ud = nn_unflatten_new(ctx, 3, 2, bad);
  cr_assert_null(nn_layer_forward(ud, x, true));
  expect_msg(AD_ERR_SHAPE, "has no such dim");
  nn_layer_free(id), nn_layer_free(u), nn_layer_free(un), nn_layer_free(ub), nn_layer_free(uh);
  nn_layer_free(ud);
  ad_tensor_free(x);
}

/* ------------------------------------------------------------- describe */

static void expect_desc(nn_layer *l, const char *want) { test_expect_desc(ctx, l, want); }

/* PyTorch 1.13's reprs under our kinds' names (align_corners=True is
 * added; PyTorch's Upsample leaves it out). */
Test(resample, describe_is_pytorch_repr) {
  expect_desc(nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {1.5}}),
              "upsample(scale_factor=1.5, mode=nearest)");
  expect_desc(nn_upsample_new(ctx, &(nn_upsample_opts){.size = {5}}),
              "upsample(size=5, mode=nearest)");
  expect_desc(
      nn_upsample_new(ctx,
                      &(nn_upsample_opts){.mode = BILINEAR, .size = {3, 4}, .align_corners = true}),
      "upsample(size=(3, 4), mode=bilinear, align_corners=True)");
  expect_desc(nn_upsample_new(ctx, &(nn_upsample_opts){.mode = BILINEAR, .scale_factor = {2, 1.5}}),
              "upsample(scale_factor=(2.0, 1.5), mode=bilinear)");
  expect_desc(nn_upsample_new(ctx, &(nn_upsample_opts){.mode = EXACT, .scale_factor = {2}}),
              "upsample(scale_factor=2.0, mode=nearest-exact)");
  expect_desc(nn_upsample_new(ctx, &(nn_upsample_opts){.mode = TRILINEAR, .size = {2, 3, 4}}),
              "upsample(size=(2, 3, 4), mode=trilinear)");
  expect_desc(nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {2, 1.5, 1}}),
              "upsample(scale_factor=(2.0, 1.5, 1.0), mode=nearest)");
  expect_desc(
      nn_upsample_new(
          ctx, &(nn_upsample_opts){.mode = BICUBIC, .scale_factor = {0.5}, .align_corners = true}),
      "upsample(scale_factor=0.5, mode=bicubic, align_corners=True)");
  expect_desc(nn_pixel_shuffle_new(ctx, 2), "pixel_shuffle(upscale_factor=2)");
  expect_desc(nn_pixel_unshuffle_new(ctx, 3), "pixel_unshuffle(downscale_factor=3)");
  expect_desc(nn_zero_pad2d_new(ctx, (int64_t[4]){1, 2, 3, 4}), "zero_pad2d((1, 2, 3, 4))");
  expect_desc(nn_constant_pad1d_new(ctx, (int64_t[2]){2, 2}, 3.5),
              "constant_pad1d(padding=(2, 2), value=3.5)");
  expect_desc(nn_constant_pad2d_new(ctx, (int64_t[4]){1, 0, 2, 0}, -1),
              "constant_pad2d(padding=(1, 0, 2, 0), value=-1.0)");
  expect_desc(nn_reflection_pad1d_new(ctx, (int64_t[2]){1, 2}), "reflection_pad1d((1, 2))");
  expect_desc(nn_reflection_pad2d_new(ctx, (int64_t[4]){1, 1, 1, 1}),
              "reflection_pad2d((1, 1, 1, 1))");
  expect_desc(nn_replication_pad2d_new(ctx, (int64_t[4]){1, 2, 0, 1}),
              "replication_pad2d((1, 2, 0, 1))");
  expect_desc(nn_replication_pad1d_new(ctx, (int64_t[2]){3, 3}), "replication_pad1d((3, 3))");
  expect_desc(nn_dropout2d_new(ctx, 0.5, 1), "dropout2d(p=0.5, inplace=False)");
  expect_desc(nn_dropout1d_new(ctx, 0.25, 1), "dropout1d(p=0.25, inplace=False)");
  expect_desc(nn_identity_new(ctx), "identity()");
  expect_desc(nn_unflatten_new(ctx, 1, 2, (int64_t[2]){2, 3}),
              "unflatten(dim=1, unflattened_size=(2, 3))");
}

/* --------------------------------------------------------------- misuse */

Test(resample, bad_arguments_are_refused_when_made) {
  static const struct {
    nn_upsample_opts o;
    const char *want;
  } ups[] = {
      {{0}, "upsample: give either size or scale_factor"},
      {{.size = {4}, .scale_factor = {2}}, "give either size or scale_factor"},
      {{.mode = (nn_upsample_mode)9, .size = {4}}, "upsample: unknown mode"},
      {{.mode = (nn_upsample_mode)-1, .size = {4}}, "upsample: unknown mode"},
      {{.size = {-3}}, "sizes must be in [1, 2^31 - 1]"},
      {{.size = {0, 4}}, "sizes must be in [1, 2^31 - 1]"},
      {{.size = {INT64_MAX}}, "sizes must be in [1, 2^31 - 1]"},
      {{.size = {4, 0, 5}}, "sizes must be in [1, 2^31 - 1] (0 after the last entry given)"},
      {{.size = {4, 5, -1}}, "sizes must be in [1, 2^31 - 1]"},
      {{.scale_factor = {2, 0, 1.5}}, "scale factors must be finite and > 0"},
      {{.scale_factor = {2, 1, NAN}}, "scale factors must be finite and > 0"},
      {{.mode = (nn_upsample_mode)(TRILINEAR + 1), .size = {4}}, "upsample: unknown mode"},
      {{.mode = EXACT, .size = {4}, .align_corners = true},
       "align_corners is for the linear modes only"},
      {{.scale_factor = {-1.5}}, "scale factors must be finite and > 0"},
      {{.scale_factor = {NAN}}, "scale factors must be finite and > 0"},
      {{.scale_factor = {INFINITY}}, "scale factors must be finite and > 0"},
      {{.scale_factor = {2, -1}}, "scale factors must be finite and > 0"},
      {{.size = {4}, .align_corners = true}, "align_corners is for the linear modes only"},
      {{.mode = LINEAR, .size = {4}, .recompute_scale_factor = true},
       "recompute_scale_factor is not meaningful with a size"},
  };
  for (size_t k = 0; k < sizeof ups / sizeof ups[0]; k++) {
    cr_assert_null(nn_upsample_new(ctx, &ups[k].o), "case %zu", k);
    expect_msg(AD_ERR_ARG, ups[k].want);
  }
  cr_assert_null(nn_upsample_new(ctx, NULL));
  expect_msg(AD_ERR_ARG, "give either size or scale_factor");
  cr_assert_null(nn_pixel_shuffle_new(ctx, 0));
  expect_msg(AD_ERR_ARG, "pixel_shuffle: factor 0 must be in [1, 2^20]");
  cr_assert_null(nn_pixel_unshuffle_new(ctx, INT64_MAX));
  expect_msg(AD_ERR_ARG, "pixel_unshuffle: factor");
  cr_assert_null(nn_zero_pad2d_new(ctx, (int64_t[4]){1, INT64_MAX, 0, 0}));
  expect_msg(AD_ERR_ARG, "zero_pad2d: padding 9223372036854775807 (entry 1) is outside");
  cr_assert_null(nn_reflection_pad1d_new(ctx, (int64_t[2]){INT64_MIN, 0}));
  expect_msg(AD_ERR_ARG, "reflection_pad1d: padding");
  cr_assert_null(nn_replication_pad2d_new(ctx, NULL));
  expect_msg(AD_ERR_NULL, "replication_pad2d: pad is NULL");
  cr_assert_null(nn_dropout2d_new(ctx, 1, 1));
  expect_msg(AD_ERR_ARG, "dropout2d: p = 1 is outside [0, 1)");
  cr_assert_null(nn_dropout1d_new(ctx, NAN, 1));
  expect_msg(AD_ERR_ARG, "dropout1d: p = nan is outside [0, 1)");
  cr_assert_null(nn_unflatten_new(ctx, 1, 0, (int64_t[1]){1}));
  expect_msg(AD_ERR_ARG, "unflatten: 0 sizes at dim 1");
  cr_assert_null(nn_unflatten_new(ctx, 8, 1, (int64_t[1]){1}));
  expect_msg(AD_ERR_ARG, "unflatten: 1 sizes at dim 8: n must be in [1, 8] and dim in [-8, 7]");
  cr_assert_null(nn_unflatten_new(ctx, 1, 2, (int64_t[2]){-1, -1}));
  expect_msg(AD_ERR_ARG, "or one -1");
  cr_assert_null(nn_unflatten_new(ctx, 1, 2, (int64_t[2]){0, 2}));
  expect_msg(AD_ERR_ARG, "unflatten: size 0 (entry 0)");
  cr_assert_null(nn_unflatten_new(ctx, 1, 1, NULL));
  expect_msg(AD_ERR_NULL, "unflatten: sizes is NULL");
  cr_assert_null(nn_upsample_new(NULL, NULL));
  cr_assert_null(nn_pixel_shuffle_new(NULL, 2));
  cr_assert_null(nn_zero_pad2d_new(NULL, (int64_t[4]){0}));
  cr_assert_null(nn_dropout2d_new(NULL, 0.5, 1));
  cr_assert_null(nn_identity_new(NULL));
  cr_assert_null(nn_unflatten_new(NULL, 0, 1, (int64_t[1]){1}));
}

Test(resample, bad_inputs_name_the_layer_and_shapes) {
  int64_t s2[2] = {3, 4}, s3[3] = {1, 2, 5}, s4[4] = {1, 3, 5, 4}, s0[4] = {1, 3, 0, 4};
  ad_tensor *x2 = ad_ones(ctx, AD_F32, 2, s2), *x3 = ad_ones(ctx, AD_F32, 3, s3),
            *x4 = ad_ones(ctx, AD_F32, 4, s4), *x0 = ad_zeros(ctx, AD_F32, 4, s0),
            *xi = ad_zeros(ctx, AD_I32, 4, s4);
  nn_layer *n = nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {2}});
  nn_layer *lin = nn_upsample_new(ctx, &(nn_upsample_opts){.mode = LINEAR, .size = {4}});
  nn_layer *bil = nn_upsample_new(ctx, &(nn_upsample_opts){.mode = BILINEAR, .size = {4}});
  nn_layer *two = nn_upsample_new(ctx, &(nn_upsample_opts){.size = {4, 6}});
  nn_layer *tiny = nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {0.1}});
  nn_layer *huge = nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {1e300}});
  cr_assert(n && lin && bil && two && tiny && huge, "%s", ad_last_error(ctx));
  /* the modes of other ranks; counts of sizes */
  int64_t s5[5] = {1, 2, 3, 4, 5}, s6[6] = {1, 1, 2, 2, 2, 2};
  ad_tensor *x5 = ad_ones(ctx, AD_F32, 5, s5), *x6 = ad_ones(ctx, AD_F32, 6, s6);
  nn_layer *bic =
      nn_upsample_new(ctx, &(nn_upsample_opts){.mode = BICUBIC, .size = {4}, .align_corners = 1});
  nn_layer *tri = nn_upsample_new(ctx, &(nn_upsample_opts){.mode = TRILINEAR, .scale_factor = {2}});
  nn_layer *three = nn_upsample_new(ctx, &(nn_upsample_opts){.size = {4, 6, 2}});
  nn_layer *same3 = nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {2, 2, 2}});
  cr_assert(bic && tri && three && same3, "%s", ad_last_error(ctx));
  cr_assert_null(nn_layer_forward(bic, x3, true));
  expect_msg(AD_ERR_SHAPE, "upsample: input [1,2,5] must be [N, C, H, W] for mode bicubic");
  cr_assert_null(nn_layer_forward(bic, x5, true));
  expect_msg(AD_ERR_SHAPE, "upsample: input [1,2,3,4,5] must be [N, C, H, W] for mode bicubic");
  cr_assert_null(nn_layer_forward(tri, x4, true));
  expect_msg(AD_ERR_SHAPE, "upsample: input [1,3,5,4] must be [N, C, D, H, W] for mode trilinear");
  cr_assert_null(nn_layer_forward(n, x6, true));
  expect_msg(AD_ERR_SHAPE, "upsample: input [1,1,2,2,2,2] must be [N, C, L], [N, C, H, W] or");
  cr_assert_null(nn_layer_forward(two, x5, true));
  expect_msg(AD_ERR_SHAPE, "upsample: input [1,2,3,4,5] is 3-D but the layer has two sizes");
  cr_assert_null(nn_layer_forward(three, x4, true));
  expect_msg(AD_ERR_SHAPE, "upsample: input [1,3,5,4] is 2-D but the layer has three sizes");
  cr_assert_null(nn_layer_forward(bic, xi, true));
  expect_msg(AD_ERR_DTYPE, "upsample: input [1,3,5,4] must be float, got i32");
  ad_tensor *y3 = nn_layer_forward(same3, x4, true), *y5 = nn_layer_forward(three, x5, true);
  cr_assert(y3 && y3->shape[2] == 10 && y3->shape[3] == 8, "%s", ad_last_error(ctx));
  cr_assert(y5 && y5->shape[2] == 4 && y5->shape[3] == 6 && y5->shape[4] == 2, "%s",
            ad_last_error(ctx));
  ad_tape_reset(ctx);
  nn_layer_free(bic), nn_layer_free(tri), nn_layer_free(three), nn_layer_free(same3);
  ad_tensor_free(x5), ad_tensor_free(x6);
  cr_assert_null(nn_layer_forward(n, x2, true));
  expect_msg(AD_ERR_SHAPE,
             "upsample: input [3,4] must be [N, C, L], [N, C, H, W] or [N, C, D, H, W]");
  cr_assert_null(nn_layer_forward(lin, x4, true));
  expect_msg(AD_ERR_SHAPE, "upsample: input [1,3,5,4] must be [N, C, L] for mode linear");
  cr_assert_null(nn_layer_forward(bil, x3, true));
  expect_msg(AD_ERR_SHAPE, "upsample: input [1,2,5] must be [N, C, H, W] for mode bilinear");
  cr_assert_null(nn_layer_forward(two, x3, true));
  expect_msg(AD_ERR_SHAPE, "upsample: input [1,2,5] is 1-D but the layer has two sizes");
  cr_assert_null(nn_layer_forward(tiny, x3, true));
  expect_msg(AD_ERR_SHAPE, "upsample: input [1,2,5]: spatial axis 2 of length 5 gives 0");
  cr_assert_null(nn_layer_forward(huge, x3, true));
  expect_msg(AD_ERR_SHAPE, "spatial axis 2 of length 5 gives 5.0000000000000003e+300");
  cr_assert_null(nn_layer_forward(n, x0, true));
  expect_msg(AD_ERR_SHAPE, "upsample: input [1,3,0,4]: spatial axis 2 of length 0");
  cr_assert_null(nn_layer_forward(n, xi, true));
  expect_msg(AD_ERR_DTYPE, "upsample: input [1,3,5,4] must be float, got i32");
  cr_assert_null(nn_layer_forward(n, NULL, true));
  expect_msg(AD_ERR_NULL, "upsample");
  ad_tape_reset(ctx);
  /* shuffles */
  nn_layer *ps = nn_pixel_shuffle_new(ctx, 2), *pu = nn_pixel_unshuffle_new(ctx, 2);
  cr_assert_null(nn_layer_forward(ps, x4, true));
  expect_msg(AD_ERR_SHAPE,
             "pixel_shuffle: input [1,3,5,4]: the channel count must be divisible by 4");
  cr_assert_null(nn_layer_forward(pu, x4, true));
  expect_msg(AD_ERR_SHAPE,
             "pixel_unshuffle: input [1,3,5,4]: the height and width must be divisible by 2");
  cr_assert_null(nn_layer_forward(ps, x2, true));
  expect_msg(AD_ERR_SHAPE, "pixel_shuffle: input [3,4] must be [N, C, H, W] or [C, H, W]");
  /* pads */
  nn_layer *rf = nn_reflection_pad2d_new(ctx, (int64_t[4]){4, 0, 0, 0});
  nn_layer *rp = nn_replication_pad1d_new(ctx, (int64_t[2]){-3, -2});
  nn_layer *cp = nn_constant_pad1d_new(ctx, (int64_t[2]){-3, -3}, 1);
  nn_layer *zp = nn_zero_pad2d_new(ctx, (int64_t[4]){1, 1, 1, 1});
  cr_assert_null(nn_layer_forward(rf, x4, true));
  expect_msg(AD_ERR_SHAPE, "reflection_pad2d: input [1,3,5,4]: padding (4, 0) of axis 3 must pad "
                           "by less than the axis length");
  cr_assert_null(nn_layer_forward(rp, x3, true));
  expect_msg(AD_ERR_SHAPE, "replication_pad1d: input [1,2,5]: padding (-3, -2) of axis 2 gives a "
                           "length outside [1, 2^31 - 1]");
  cr_assert_null(nn_layer_forward(cp, x3, true));
  expect_msg(AD_ERR_SHAPE, "constant_pad1d: input [1,2,5]: padding (-3, -3) of axis 2 gives a "
                           "negative length");
  cr_assert_null(nn_layer_forward(zp, x2, true));
  expect_msg(AD_ERR_SHAPE, "zero_pad2d: input [3,4] must be [N, C, H, W] or [C, H, W]");
  cr_assert_null(nn_layer_forward(rp, x4, true));
  expect_msg(AD_ERR_SHAPE, "replication_pad1d: input [1,3,5,4] must be [N, C, L] or [C, L]");
  cr_assert_null(nn_layer_forward(zp, xi, true));
  expect_msg(AD_ERR_DTYPE, "zero_pad2d: input [1,3,5,4] must be float, got i32");
  /* a crop to nothing is an empty output, as PyTorch's */
  nn_layer *crop = nn_constant_pad1d_new(ctx, (int64_t[2]){-5, 0}, 2);
  ad_tensor *e = nn_layer_forward(crop, x3, true);
  cr_assert(e && e->ndim == 3 && e->shape[2] == 0, "%s", ad_last_error(ctx));
  /* dropout */
  nn_layer *d2 = nn_dropout2d_new(ctx, 0.5, 1), *d1 = nn_dropout1d_new(ctx, 0.5, 1);
  cr_assert_null(nn_layer_forward(d2, x2, true));
  expect_msg(AD_ERR_SHAPE, "dropout2d: input [3,4] must be [N, C, H, W] or [N, C, L]");
  cr_assert_null(nn_layer_forward(d1, x4, false));
  expect_msg(AD_ERR_SHAPE, "dropout1d: input [1,3,5,4] must be [N, C, L] or [C, L]");
  cr_assert_null(nn_layer_forward(d2, xi, true));
  expect_msg(AD_ERR_DTYPE, "dropout2d: input [1,3,5,4] must be float, got i32");
  nn_layer *ls[] = {n, lin, bil, two, tiny, huge, ps, pu, rf, rp, cp, zp, crop, d2, d1};
  for (size_t k = 0; k < sizeof ls / sizeof ls[0]; k++) nn_layer_free(ls[k]);
  ad_tensor_free(x2), ad_tensor_free(x3), ad_tensor_free(x4), ad_tensor_free(x0);
  ad_tensor_free(xi);
}
