/* test_nn_convmisc.c: PyTorch's padding_mode of the convolution layers
 * (nn_conv1d_new_ext, nn_conv2d_new_ext, nn_conv_transpose2d_new_ext).
 * Values and gradients (of sum(y * gy) in the input, weight and bias)
 * against PyTorch 1.13 in tests/convmisc_fixtures.h, written by
 * tools/gen_convmisc_fixtures.py in float64 from values float32 holds
 * exactly: float64 compared to 1e-12, float32 to 1e-5. Also first- and
 * second-order derivatives against central differences, PyTorch's reprs,
 * and bad arguments and inputs. */
#include "convmisc_fixtures.h"
#include "nn.h"
#include "test_alloc.h"
#include "test_layer_fd.h"
#include "test_layer_values.h"
#include "test_tensor_of.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

TEST_CTX_SUITE(convmisc);

/* |t[i] - want[i]| <= tol (1 + |want[i]|) for the n elements, NaN where
 * want has NaN and the same infinity where it has one (test_close). */
static void expect_close(const ad_tensor *t, fx_ref want, double tol, const char *cname,
                         const char *what) {
  cr_assert_not_null(t, "%s %s is NULL: %s", cname, what, ad_last_error(ctx));
  cr_assert_eq(t->size, want.n, "%s %s has %lld elements, PyTorch %lld", cname, what,
               (long long)t->size, (long long)want.n);
  for (int64_t i = 0; i < want.n; i++) {
    double g = ad_tensor_get(t, i);
    QUICK_ASSERT(test_close(g, want.v[i], tol * (1 + fabs(want.v[i]))),
                 "%s %s[%lld] = %.17g, PyTorch %.17g", cname, what, (long long)i, g, want.v[i]);
  }
}

static double tol_of(ad_dtype dt) { return dt == AD_F64 ? 1e-12 : 1e-5; }

/* ------------------------------------------------------- padding_mode */

/* The layer of fixture case c in dtype dt, its parameters PyTorch's
 * (a constant init, so no rng, then the fixture's values). */
static nn_layer *conv_layer(const conv_fx *c, ad_dtype dt) {
  nn_layer *l;
  if (c->dims == 1) {
    nn_conv1d_opts_ext o = {.base = {.stride = c->stride[1],
                                     .padding = c->padding[1],
                                     .same = c->same,
                                     .dilation = c->dilation[1],
                                     .groups = c->groups,
                                     .no_bias = !c->bias,
                                     .weight_init = nn_init_make(NN_INIT_CONSTANT, 0, 0),
                                     .bias_init = nn_init_make(NN_INIT_CONSTANT, 0, 0),
                                     .dtype = dt},
                            .padding_mode = (nn_padding_mode)c->mode};
    l = nn_conv1d_new_ext(ctx, c->in, c->out, c->k[1], NULL, &o);
  } else {
    nn_conv2d_opts_ext o = {.base = {.stride = {c->stride[0], c->stride[1]},
                                     .padding = {c->padding[0], c->padding[1]},
                                     .same = c->same,
                                     .dilation = {c->dilation[0], c->dilation[1]},
                                     .groups = c->groups,
                                     .no_bias = !c->bias,
                                     .weight_init = nn_init_make(NN_INIT_CONSTANT, 0, 0),
                                     .bias_init = nn_init_make(NN_INIT_CONSTANT, 0, 0),
                                     .dtype = dt},
                            .padding_mode = (nn_padding_mode)c->mode};
    l = nn_conv2d_new_ext(ctx, c->in, c->out, c->k[0], c->k[1], NULL, &o);
  }
  cr_assert_not_null(l, "%s: %s", c->name, ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), c->bias ? 2 : 1, "%s", c->name);
  fx_ref v[2] = {c->w, c->b};
  for (int i = 0; i < nn_params_count(p); i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    cr_assert_eq(t->size, v[i].n, "%s: parameter %d", c->name, i);
    for (int64_t j = 0; j < t->size; j++) ad_tensor_set(t, j, v[i].v[j]);
  }
  return l;
}

static void conv_matches(ad_dtype dt) {
  for (size_t k = 0; k < sizeof conv_cases / sizeof conv_cases[0]; k++) {
    const conv_fx *c = &conv_cases[k];
    nn_layer *l = conv_layer(c, dt);
    ad_tensor *x = tensor_of(dt, c->nd, c->shape, c->x.v);
    cr_assert_eq(x->size, c->x.n, "%s", c->name);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = nn_layer_forward(l, x, true);
    expect_close(y, c->y, tol_of(dt), c->name, "y");
    cr_assert_eq(y->ndim, c->nd, "%s: rank %d", c->name, y->ndim);
    ad_tensor *gy = tensor_of(dt, y->ndim, y->shape, c->gy.v);
    cr_assert_eq(gy->size, c->gy.n);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, gy)), NULL), AD_OK, "%s: %s", c->name,
                 ad_last_error(ctx));
    expect_close(x->grad, c->dx, tol_of(dt), c->name, "dx");
    nn_params *p = nn_layer_params(l);
    expect_close(nn_params_tensor(p, 0)->grad, c->dw, tol_of(dt), c->name, "dweight");
    if (c->bias) expect_close(nn_params_tensor(p, 1)->grad, c->db, tol_of(dt), c->name, "dbias");
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(gy);
    nn_layer_free(l);
  }
}

Test(convmisc, padding_modes_match_pytorch_f64) { conv_matches(AD_F64); }
Test(convmisc, padding_modes_match_pytorch_f32) { conv_matches(AD_F32); }

/* zeros through the _ext constructors is the base layer, bit for bit, and
 * NULL options are the defaults. */
Test(convmisc, zeros_mode_is_the_base_layer) {
  ad_rng r1, r2;
  ad_rng_seed(&r1, 5), ad_rng_seed(&r2, 5);
  nn_conv2d_opts base = {.padding = {1, 2}, .dilation = {2, 1}, .dtype = AD_F64};
  nn_layer *a = nn_conv2d_new(ctx, 2, 3, 3, 2, &r1, &base);
  nn_layer *b = nn_conv2d_new_ext(ctx, 2, 3, 3, 2, &r2, &(nn_conv2d_opts_ext){.base = base});
  nn_layer *c = nn_conv1d_new(ctx, 2, 3, 3, &r1, NULL);
  nn_layer *d = nn_conv1d_new_ext(ctx, 2, 3, 3, &r2, NULL);
  cr_assert(a && b && c && d, "%s", ad_last_error(ctx));
  ad_tensor *x = ad_rand(ctx, &r1, AD_F64, 4, (int64_t[4]){2, 2, 6, 5}, -1, 1);
  ad_tensor *ya = nn_layer_forward(a, x, true), *yb = nn_layer_forward(b, x, true);
  cr_assert(ya && yb && ya->size == yb->size && ya->size > 0);
  cr_assert_eq(memcmp(ya->data, yb->data, (size_t)ya->size * sizeof(double)), 0);
  ad_tensor *x1 = ad_rand(ctx, &r1, AD_F32, 3, (int64_t[3]){2, 2, 6}, -1, 1);
  ad_tensor *yc = nn_layer_forward(c, x1, true), *yd = nn_layer_forward(d, x1, true);
  cr_assert(yc && yd && yc->size == yd->size && yc->size > 0);
  cr_assert_eq(memcmp(yc->data, yd->data, (size_t)yc->size * sizeof(float)), 0);
  ad_tape_reset(ctx);
  ad_tensor_free(x), ad_tensor_free(x1);
  nn_layer_free(a), nn_layer_free(b), nn_layer_free(c), nn_layer_free(d);
}

/* ---------------------------------------------------------- derivatives */

/* first and second derivatives against central differences
 * (test_layer_fd.h) */
static void check_derivatives(nn_layer *l, int nd, const int64_t *shape) {
  test_layer_derivatives(ctx, l, nd, shape, NULL);
}

/* Each mode in x, weight and bias to the first and second order, on
 * batched and unbatched inputs, with padding larger than half the axis
 * (elements read three times). */
Test(convmisc, padding_mode_derivatives_first_and_second_order) {
  ad_rng rng;
  ad_rng_seed(&rng, 2);
  for (int m = NN_PADDING_REFLECT; m <= NN_PADDING_CIRCULAR; m++) {
    nn_layer *l = nn_conv1d_new_ext(
        ctx, 2, 2, 3, &rng,
        &(nn_conv1d_opts_ext){.base = {.padding = 3, .dilation = 2, .dtype = AD_F64},
                              .padding_mode = (nn_padding_mode)m});
    check_derivatives(l, 3, (int64_t[3]){2, 2, 4});
    check_derivatives(l, 2, (int64_t[2]){2, 4});
    nn_layer_free(l);
    l = nn_conv2d_new_ext(ctx, 2, 2, 2, 3, &rng,
                          &(nn_conv2d_opts_ext){.base = {.same = true, .dtype = AD_F64},
                                                .padding_mode = (nn_padding_mode)m});
    check_derivatives(l, 4, (int64_t[4]){1, 2, 3, 4});
    check_derivatives(l, 3, (int64_t[3]){2, 3, 4});
    nn_layer_free(l);
  }
}

/* ------------------------------------------------------------ describe */

static void expect_desc(nn_layer *l, const char *want) { test_expect_desc(ctx, l, want); }

/* PyTorch 1.13's reprs of the same modules, under our kinds' names. */
Test(convmisc, describe_shows_the_mode_as_pytorch) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  expect_desc(nn_conv1d_new_ext(ctx, 2, 3, 4, &rng,
                                &(nn_conv1d_opts_ext){.base = {.same = true, .no_bias = true},
                                                      .padding_mode = NN_PADDING_CIRCULAR}),
              "conv1d(2, 3, kernel_size=(4,), stride=(1,), padding=same, bias=False, "
              "padding_mode=circular)");
  expect_desc(
      nn_conv2d_new_ext(
          ctx, 2, 3, 3, 2, &rng,
          &(nn_conv2d_opts_ext){.base = {.stride = {2, 1}, .padding = {1, 0}, .dilation = {2, 2}},
                                .padding_mode = NN_PADDING_REFLECT}),
      "conv2d(2, 3, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 2), "
      "padding_mode=reflect)");
  expect_desc(nn_conv2d_new_ext(ctx, 2, 4, 3, 3, &rng,
                                &(nn_conv2d_opts_ext){.base = {.padding = {1, 1}, .groups = 2},
                                                      .padding_mode = NN_PADDING_REPLICATE}),
              "conv2d(2, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), groups=2, "
              "padding_mode=replicate)");
  expect_desc(nn_conv1d_new_ext(ctx, 2, 3, 3, &rng, &(nn_conv1d_opts_ext){0}),
              "conv1d(2, 3, kernel_size=(3,), stride=(1,))");
  expect_desc(nn_conv_transpose2d_new_ext(ctx, 2, 3, 3, 3, &rng, NULL),
              "conv_transpose2d(2, 3, kernel_size=(3, 3), stride=(1, 1))");
}

/* ------------------------------------------------------------- misuse */

Test(convmisc, bad_padding_modes_are_refused_when_made) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  cr_assert_null(nn_conv1d_new_ext(NULL, 2, 2, 3, &rng, NULL));
  cr_assert_null(nn_conv2d_new_ext(NULL, 2, 2, 3, 3, &rng, NULL));
  cr_assert_null(nn_conv_transpose2d_new_ext(NULL, 2, 2, 3, 3, &rng, NULL));
  cr_assert_null(nn_conv1d_new_ext(ctx, 2, 2, 3, &rng,
                                   &(nn_conv1d_opts_ext){.padding_mode = (nn_padding_mode)4}));
  test_expect_error(ctx, AD_ERR_ARG, "conv1d: padding_mode 4 is not one of zeros, reflect", NULL);
  cr_assert_null(nn_conv2d_new_ext(ctx, 2, 2, 3, 3, &rng,
                                   &(nn_conv2d_opts_ext){.padding_mode = (nn_padding_mode)-1}));
  test_expect_error(ctx, AD_ERR_ARG, "conv2d: padding_mode -1 is not one of", NULL);
  for (int m = NN_PADDING_REFLECT; m <= NN_PADDING_CIRCULAR; m++) {
    cr_assert_null(nn_conv_transpose2d_new_ext(
        ctx, 2, 2, 3, 3, &rng, &(nn_conv2d_opts_ext){.padding_mode = (nn_padding_mode)m}));
    test_expect_error(ctx, AD_ERR_ARG, "conv_transpose2d: padding_mode", "is not zeros", NULL);
  }
  /* the base checks still apply, named as before */
  cr_assert_null(nn_conv2d_new_ext(ctx, 2, 2, 3, 3, &rng,
                                   &(nn_conv2d_opts_ext){.base = {.same = true, .stride = {2, 1}},
                                                         .padding_mode = NN_PADDING_REFLECT}));
  test_expect_error(ctx, AD_ERR_ARG, "conv2d: padding 'same' needs stride 1", NULL);
  cr_assert_null(nn_conv1d_new_ext(
      ctx, 2, 2, 3, &rng,
      &(nn_conv1d_opts_ext){.base = {.padding = -1}, .padding_mode = NN_PADDING_CIRCULAR}));
  test_expect_error(ctx, AD_ERR_ARG, "conv1d: padding must be >= 0", NULL);
  cr_assert_eq(ad_ctx_live_tensors(ctx), 0, "nothing left behind");
}

/* Paddings the mode moves out of the op's options are bounded when the
 * layer is made, as the op bounds its own (2^40), so the forward's sizes
 * (padded length, index tensor) cannot overflow; and 'same' with a huge
 * kernel or dilation is refused without overflowing dilation x (k - 1)
 * first (UBSan), in 1-D also when the mode pads explicitly. */
Test(convmisc, huge_paddings_in_a_mode_are_refused_when_made) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  int64_t p62 = INT64_C(1) << 62;
  for (int m = NN_PADDING_ZEROS; m <= NN_PADDING_CIRCULAR; m++) {
    cr_assert_null(nn_conv2d_new_ext(ctx, 1, 1, 1, 1, &rng,
                                     &(nn_conv2d_opts_ext){.base = {.padding = {p62, 0}},
                                                           .padding_mode = (nn_padding_mode)m}),
                   "mode %d", m);
    test_expect_error(ctx, AD_ERR_ARG, "conv2d: stride, dilation and padding must be at most 2^40",
                      NULL);
  }
  cr_assert_null(
      nn_conv2d_new_ext(ctx, 1, 1, 3, 1, &rng,
                        &(nn_conv2d_opts_ext){.base = {.same = true, .dilation = {p62, 1}},
                                              .padding_mode = NN_PADDING_REFLECT}));
  test_expect_error(ctx, AD_ERR_ARG, "conv2d: stride, dilation and padding must be at most 2^40",
                    NULL);
  cr_assert_null(nn_conv2d_new_ext(ctx, 1, 1, 1, INT64_MAX, &rng,
                                   &(nn_conv2d_opts_ext){.base = {.same = true, .dilation = {1, 4}},
                                                         .padding_mode = NN_PADDING_REPLICATE}));
  test_expect_error(ctx, AD_ERR_ARG, "conv2d: padding 'same' (dilation x (kernel - 1)) must be",
                    NULL);
  cr_assert_null(nn_conv1d_new_ext(ctx, 1, 1, INT64_MAX / 2, &rng,
                                   &(nn_conv1d_opts_ext){.base = {.same = true, .dilation = 4},
                                                         .padding_mode = NN_PADDING_CIRCULAR}));
  test_expect_error(ctx, AD_ERR_ARG, "conv1d: padding 'same' (dilation x (kernel - 1)) must be",
                    NULL);
  /* explicit padding: the kernel's own error, without an overflow before */
  cr_assert_null(nn_conv1d_new_ext(
      ctx, 1, 1, INT64_MAX / 2, &rng,
      &(nn_conv1d_opts_ext){.base = {.dilation = 4}, .padding_mode = NN_PADDING_REFLECT}));
  test_expect_error(ctx, AD_ERR_ARG, "is too large", NULL);
  cr_assert_eq(ad_ctx_live_tensors(ctx), 0, "nothing left behind");
}

/* PyTorch's limits on the padded axes, with the layer and the shapes
 * named; nothing is recorded for a refused input. */
Test(convmisc, inputs_too_short_for_the_mode_are_refused) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_layer *rf = nn_conv1d_new_ext(
      ctx, 1, 1, 1, &rng,
      &(nn_conv1d_opts_ext){.base = {.padding = 2}, .padding_mode = NN_PADDING_REFLECT});
  nn_layer *ci = nn_conv2d_new_ext(
      ctx, 1, 1, 1, 1, &rng,
      &(nn_conv2d_opts_ext){.base = {.padding = {1, 3}}, .padding_mode = NN_PADDING_CIRCULAR});
  nn_layer *rp = nn_conv1d_new_ext(
      ctx, 1, 1, 1, &rng,
      &(nn_conv1d_opts_ext){.base = {.padding = 1}, .padding_mode = NN_PADDING_REPLICATE});
  cr_assert(rf && ci && rp, "%s", ad_last_error(ctx));
  ad_tensor *x2 = ad_zeros(ctx, AD_F32, 3, (int64_t[3]){1, 1, 2});
  ad_tensor *x3 = ad_zeros(ctx, AD_F32, 3, (int64_t[3]){1, 1, 3});
  ad_tensor *xc = ad_zeros(ctx, AD_F32, 4, (int64_t[4]){1, 1, 2, 2});
  ad_tensor *x0 = ad_zeros(ctx, AD_F32, 3, (int64_t[3]){1, 1, 0});
  cr_assert_null(nn_layer_forward(rf, x2, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "conv1d: input [1,1,2]: axis 2 padded by (2, 2)",
                    "less than its length in mode reflect", NULL);
  cr_assert_not_null(nn_layer_forward(rf, x3, true), "%s", ad_last_error(ctx)); /* 2 < 3 */
  cr_assert_null(nn_layer_forward(ci, xc, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "conv2d: input [1,1,2,2]: axis 3 padded by (3, 3)",
                    "at most its length in mode circular", NULL);
  cr_assert_null(nn_layer_forward(rp, x0, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "conv1d: input [1,1,0]: axis 2 padded by (1, 1)", "is empty",
                    NULL);
  ad_tape_reset(ctx);
  /* a refused input leaves the tape as it was */
  size_t before = ad_tape_size(ctx);
  cr_assert_null(nn_layer_forward(rf, x2, true));
  ad_clear_error(ctx);
  cr_assert_eq(ad_tape_size(ctx), before);
  /* an empty batch passes, as in PyTorch */
  ad_tensor *e = ad_zeros(ctx, AD_F32, 3, (int64_t[3]){0, 1, 3});
  ad_tensor *ye = nn_layer_forward(rf, e, true);
  test_expect_shape(ctx, ye, 3, (int64_t[3]){0, 1, 7}, "empty batch");
  /* freed and foreign inputs */
  ad_ctx *other = ad_ctx_new();
  cr_assert_not_null(other);
  ad_tensor *xo = ad_zeros(other, AD_F32, 3, (int64_t[3]){1, 1, 3});
  cr_assert_null(nn_layer_forward(rf, xo, true));
  test_expect_error(ctx, AD_ERR_ARG, "another context", NULL);
  ad_ctx_free(other);
  ad_tensor_free(x3);
  cr_assert_null(nn_layer_forward(rf, x3, true));
  test_expect_error(ctx, AD_ERR_STATE, "freed", NULL);
  ad_tape_reset(ctx);
  ad_tensor_free(x2), ad_tensor_free(xc), ad_tensor_free(x0), ad_tensor_free(e);
  nn_layer_free(rf), nn_layer_free(ci), nn_layer_free(rp);
}

/* ------------------------------------------------- adaptive max pooling */

static nn_layer *amax_layer(const amax_fx *c) {
  nn_layer *l = c->dims == 1 ? nn_adaptive_max_pool1d_new(ctx, c->ow)
                             : nn_adaptive_max_pool2d_new(ctx, c->oh, c->ow);
  cr_assert_not_null(l, "%s: %s", c->name, ad_last_error(ctx));
  return l;
}

static void amax_matches(ad_dtype dt) {
  for (size_t k = 0; k < sizeof amax_cases / sizeof amax_cases[0]; k++) {
    const amax_fx *c = &amax_cases[k];
    nn_layer *l = amax_layer(c);
    ad_tensor *x = tensor_of(dt, c->nd, c->shape, c->x.v);
    cr_assert_eq(x->size, c->x.n, "%s", c->name);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = nn_layer_forward(l, x, true);
    expect_close(y, c->y, tol_of(dt), c->name, "y");
    cr_assert_eq(y->ndim, c->nd, "%s: rank %d", c->name, y->ndim);
    cr_assert(y->shape[c->nd - 1] == c->ow && (c->dims == 1 || y->shape[c->nd - 2] == c->oh));
    int64_t os[AD_MAX_DIMS];
    cr_assert_eq(nn_layer_output_shape(l, os), c->nd);
    for (int d = 0; d < c->nd; d++) cr_assert_eq(os[d], y->shape[d]);
    ad_tensor *gy = tensor_of(dt, y->ndim, y->shape, c->gy.v);
    cr_assert_eq(gy->size, c->gy.n);
    /* the loss is sum(y * gy) taken where y is a number: NaN * gy would
     * make every gradient NaN, so the backward starts at y with gy */
    cr_assert_eq(ad_backward(ctx, y, gy), AD_OK, "%s: %s", c->name, ad_last_error(ctx));
    expect_close(x->grad, c->dx, tol_of(dt), c->name, "dx");
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(gy);
    nn_layer_free(l);
  }
}

Test(convmisc, adaptive_max_pools_match_pytorch_f64) { amax_matches(AD_F64); }
Test(convmisc, adaptive_max_pools_match_pytorch_f32) { amax_matches(AD_F32); }

/* Output sizes that divide the input are max pooling with kernel =
 * stride, bit for bit, value and gradient. */
Test(convmisc, adaptive_max_divisible_is_max_pool) {
  ad_rng rng;
  ad_rng_seed(&rng, 9);
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 4, (int64_t[4]){2, 3, 8, 9}, -1, 1);
  ad_tensor_set_requires_grad(x, true);
  nn_layer *a = nn_adaptive_max_pool2d_new(ctx, 4, 3), *m = nn_max_pool2d_new(ctx, 2, 3, NULL);
  cr_assert(a && m);
  ad_tensor *ya = nn_layer_forward(a, x, true), *ym = nn_layer_forward(m, x, true);
  cr_assert(ya && ym && ya->size == ym->size && ya->size == 2 * 3 * 4 * 3);
  cr_assert_eq(memcmp(ya->data, ym->data, (size_t)ya->size * sizeof(float)), 0);
  nn_layer_free(a), nn_layer_free(m);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* The pools as functions of x for ad_gradcheck and ad_gradgradcheck. */
static ad_tensor *run_pool(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c, (void)n;
  return nn_layer_forward(ud, in[0], true);
}

Test(convmisc, adaptive_max_gradcheck_first_and_second_order) {
  ad_rng rng;
  ad_rng_seed(&rng, 4);
  const amax_fx *cs = amax_cases;
  for (size_t k = 0; k < sizeof amax_cases / sizeof amax_cases[0]; k++) {
    nn_layer *l = amax_layer(&cs[k]);
    /* values spread well apart, so that no window has a near tie within
     * the differences' step */
    ad_tensor *x = ad_zeros(ctx, AD_F64, cs[k].nd, cs[k].shape);
    cr_assert_not_null(x);
    for (int64_t i = 0; i < x->size; i++)
      ad_tensor_set(x, i, 0.01 * (double)((i * 37) % 101) + 0.1 * ad_rng_uniform(&rng) / 101);
    ad_tensor_set_requires_grad(x, true);
    ad_check_report r;
    cr_assert_eq(ad_gradcheck(ctx, run_pool, l, 1, &x, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
    cr_assert(r.passed, "%s: first order, [%lld] %g vs %g", cs[k].name, (long long)r.index,
              r.analytic, r.numeric);
    cr_assert_eq(ad_gradgradcheck(ctx, run_pool, l, 1, &x, NULL, &r), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(r.passed, "%s: second order, [%lld] %g vs %g", cs[k].name, (long long)r.index,
              r.analytic, r.numeric);
    ad_tensor_free(x);
    nn_layer_free(l);
  }
}

Test(convmisc, adaptive_max_describe_is_pytorch_repr) {
  expect_desc(nn_adaptive_max_pool1d_new(ctx, 3), "adaptive_max_pool1d(output_size=3)");
  expect_desc(nn_adaptive_max_pool2d_new(ctx, 3, 3), "adaptive_max_pool2d(output_size=3)");
  expect_desc(nn_adaptive_max_pool2d_new(ctx, 3, 4), "adaptive_max_pool2d(output_size=(3, 4))");
}

Test(convmisc, adaptive_max_bad_arguments_and_inputs) {
  cr_assert_null(nn_adaptive_max_pool1d_new(NULL, 3));
  cr_assert_null(nn_adaptive_max_pool2d_new(NULL, 3, 3));
  cr_assert_null(nn_adaptive_max_pool1d_new(ctx, 0));
  test_expect_error(ctx, AD_ERR_ARG, "adaptive_max_pool1d: output size 0 must be in [1, 2^30]",
                    NULL);
  cr_assert_null(nn_adaptive_max_pool2d_new(ctx, 2, -1));
  test_expect_error(ctx, AD_ERR_ARG, "adaptive_max_pool2d: output size 2x-1 must be in [1, 2^30]",
                    NULL);
  cr_assert_null(nn_adaptive_max_pool2d_new(ctx, (INT64_C(1) << 30) + 1, 1));
  test_expect_error(ctx, AD_ERR_ARG, "adaptive_max_pool2d: output size", NULL);
  nn_layer *p1 = nn_adaptive_max_pool1d_new(ctx, 3), *p2 = nn_adaptive_max_pool2d_new(ctx, 2, 3);
  cr_assert(p1 && p2);
  ad_tensor *x4 = ad_zeros(ctx, AD_F32, 4, (int64_t[4]){1, 2, 3, 4});
  ad_tensor *x1 = ad_zeros(ctx, AD_F32, 1, (int64_t[1]){4});
  ad_tensor *xe = ad_zeros(ctx, AD_F32, 3, (int64_t[3]){1, 2, 0});
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 3, (int64_t[3]){1, 2, 5});
  cr_assert_null(nn_layer_forward(p1, x4, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "adaptive_max_pool1d: input [1,2,3,4] must be [N, C, L]",
                    NULL);
  cr_assert_null(nn_layer_forward(p2, x1, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "adaptive_max_pool2d: input [4] must be [N, C, H, W]", NULL);
  cr_assert_null(nn_layer_forward(p1, xe, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "adaptive_max_pool1d: input [1,2,0] has an empty L", NULL);
  cr_assert_null(nn_layer_forward(p2, xe, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "adaptive_max_pool2d: input [1,2,0] has an empty H or W",
                    NULL);
  cr_assert_null(nn_layer_forward(p1, xi, true));
  test_expect_error(ctx, AD_ERR_DTYPE, "adaptive_max_pool1d", "must be float", NULL);
  /* an empty batch gives an empty output, as in PyTorch */
  ad_tensor *x0 = ad_zeros(ctx, AD_F32, 3, (int64_t[3]){0, 2, 5});
  test_expect_shape(ctx, nn_layer_forward(p1, x0, true), 3, (int64_t[3]){0, 2, 3}, "empty batch");
  /* freed and foreign inputs */
  ad_ctx *other = ad_ctx_new();
  cr_assert_not_null(other);
  ad_tensor *xo = ad_zeros(other, AD_F32, 4, (int64_t[4]){1, 2, 3, 4});
  cr_assert_null(nn_layer_forward(p2, xo, true));
  test_expect_error(ctx, AD_ERR_ARG, "another context", NULL);
  ad_ctx_free(other);
  ad_tensor_free(x4);
  cr_assert_null(nn_layer_forward(p2, x4, true));
  test_expect_error(ctx, AD_ERR_STATE, "freed", NULL);
  ad_tape_reset(ctx);
  ad_tensor_free(x1), ad_tensor_free(xe), ad_tensor_free(xi), ad_tensor_free(x0);
  nn_layer_free(p1), nn_layer_free(p2);
}
