/* test_nn_conv3d_pad.c: PyTorch's padding_mode of nn_conv3d_new
 * (nn_conv3d_opts.padding_mode). Values and gradients (of sum(y * gy) in
 * the input, weight and bias) against PyTorch 1.13 in
 * tests/conv3d_pad_fixtures.h, written by tools/gen_conv3d_pad_fixtures.py
 * in float64 from values float32 holds exactly: float64 compared to 1e-12,
 * float32 to 1e-5. Also first- and second-order derivatives against
 * central differences (test_layer_fd.h), PyTorch's repr, and bad arguments and
 * inputs. */
#include "conv3d_pad_fixtures.h"
#include "nn.h"
#include "test_alloc.h"
#include "test_layer_fd.h"
#include "test_tensor_of.h"

#include <criterion/criterion.h>
#include <math.h>

TEST_CTX_SUITE(conv3d_pad);

/* |t[i] - want[i]| <= tol (1 + |want[i]|) for the n elements. */
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

/* The layer of case c in dtype dt with PyTorch's parameters (a constant
 * init, then the fixture's values). */
static nn_layer *case_layer(const c3p_fx *c, ad_dtype dt) {
  nn_conv3d_opts o = {.same = c->same,
                      .groups = c->groups,
                      .no_bias = !c->bias,
                      .weight_init = nn_init_make(NN_INIT_CONSTANT, 0, 0),
                      .bias_init = nn_init_make(NN_INIT_CONSTANT, 0, 0),
                      .dtype = dt,
                      .padding_mode = (nn_padding_mode)c->mode};
  for (int k = 0; k < 3; k++) {
    o.stride[k] = c->stride[k];
    o.padding[k] = c->padding[k];
    o.dilation[k] = c->dilation[k];
  }
  nn_layer *l = nn_conv3d_new(ctx, c->in, c->out, c->k[0], c->k[1], c->k[2], NULL, &o);
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

static void cases_match(ad_dtype dt) {
  double tol = dt == AD_F64 ? 1e-12 : 1e-5;
  for (size_t k = 0; k < sizeof c3p_cases / sizeof c3p_cases[0]; k++) {
    const c3p_fx *c = &c3p_cases[k];
    nn_layer *l = case_layer(c, dt);
    ad_tensor *x = tensor_of(dt, c->nd, c->shape, c->x.v);
    cr_assert_eq(x->size, c->x.n, "%s", c->name);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = nn_layer_forward(l, x, true);
    expect_close(y, c->y, tol, c->name, "y");
    cr_assert_eq(y->ndim, c->nd, "%s: rank %d", c->name, y->ndim);
    ad_tensor *gy = tensor_of(dt, y->ndim, y->shape, c->gy.v);
    cr_assert_eq(gy->size, c->gy.n);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, gy)), NULL), AD_OK, "%s: %s", c->name,
                 ad_last_error(ctx));
    expect_close(x->grad, c->dx, tol, c->name, "dx");
    nn_params *p = nn_layer_params(l);
    expect_close(nn_params_tensor(p, 0)->grad, c->dw, tol, c->name, "dweight");
    if (c->bias) expect_close(nn_params_tensor(p, 1)->grad, c->db, tol, c->name, "dbias");
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(gy);
    nn_layer_free(l);
  }
}

Test(conv3d_pad, modes_match_pytorch_f64) { cases_match(AD_F64); }
Test(conv3d_pad, modes_match_pytorch_f32) { cases_match(AD_F32); }

/* Each mode in x, weight and bias to the first and second order against
 * central differences (test_layer_fd.h), batched and unbatched, with
 * 'same' on an even kernel (the uneven split) and a padding of the whole
 * axis (elements read three times). */
Test(conv3d_pad, derivatives_first_and_second_order) {
  ad_rng rng;
  ad_rng_seed(&rng, 4);
  for (int m = NN_PADDING_REFLECT; m <= NN_PADDING_CIRCULAR; m++) {
    for (int same = 0; same < 2; same++) {
      nn_conv3d_opts o = {.same = same, .dtype = AD_F64, .padding_mode = (nn_padding_mode)m};
      if (!same) o.padding[0] = o.padding[2] = m == NN_PADDING_REFLECT ? 1 : 2;
      nn_layer *l = nn_conv3d_new(ctx, 2, 2, 2, 1, 3, &rng, &o);
      int64_t shape[5] = {1, 2, 2, 2, 3}; /* D = 2 is the whole axis for circular */
      test_layer_derivatives(ctx, l, 5, shape, NULL);
      test_layer_derivatives(ctx, l, 4, shape + 1, NULL);
      nn_layer_free(l);
    }
  }
}

/* PyTorch 1.13's repr of the same module, under our kind's name. */
Test(conv3d_pad, describe_shows_the_mode_as_pytorch) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  char buf[256];
  nn_layer *l = nn_conv3d_new(ctx, 2, 3, 3, 3, 3, &rng,
                              &(nn_conv3d_opts){.padding = {1, 2, 1},
                                                .dilation = {1, 1, 2},
                                                .padding_mode = NN_PADDING_REFLECT});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "conv3d(2, 3, kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=(1, 2, 1), "
                   "dilation=(1, 1, 2), padding_mode=reflect)");
  nn_layer_free(l);
  l = nn_conv3d_new(ctx, 2, 3, 2, 2, 2, &rng,
                    &(nn_conv3d_opts){.same = true, .padding_mode = NN_PADDING_CIRCULAR});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "conv3d(2, 3, kernel_size=(2, 2, 2), stride=(1, 1, 1), padding=same, "
                   "padding_mode=circular)");
  nn_layer_free(l);
}

Test(conv3d_pad, bad_modes_and_short_inputs_are_refused) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  cr_assert_null(nn_conv3d_new(ctx, 2, 2, 3, 3, 3, &rng,
                               &(nn_conv3d_opts){.padding_mode = (nn_padding_mode)4}));
  test_expect_error(ctx, AD_ERR_ARG, "conv3d: padding_mode 4 is not one of zeros, reflect", NULL);
  for (int m = NN_PADDING_REFLECT; m <= NN_PADDING_CIRCULAR; m++) {
    cr_assert_null(nn_conv_transpose3d_new(ctx, 2, 2, 3, 3, 3, &rng,
                                           &(nn_conv3d_opts){.padding_mode = (nn_padding_mode)m}));
    test_expect_error(ctx, AD_ERR_ARG, "conv_transpose3d: padding_mode", "is not zeros", NULL);
  }
  /* 'same' in a mode pads dilation x (kernel - 1), bounded as the op's
   * padding is, without overflowing */
  cr_assert_null(nn_conv3d_new(
      ctx, 1, 1, INT64_MAX / 2, 1, 1, &rng,
      &(nn_conv3d_opts){.same = true, .dilation = {4, 1, 1}, .padding_mode = NN_PADDING_REFLECT}));
  test_expect_error(ctx, AD_ERR_ARG, "conv3d: padding 'same' (dilation x (kernel - 1))",
                    "at most 2^40", NULL);
  cr_assert_null(nn_conv3d_new(ctx, 1, 1, 1, 3, 1, &rng,
                               &(nn_conv3d_opts){.same = true,
                                                 .dilation = {1, INT64_C(1) << 40, 1},
                                                 .padding_mode = NN_PADDING_CIRCULAR}));
  test_expect_error(ctx, AD_ERR_ARG, "conv3d: padding 'same'", "at most 2^40", NULL);
  nn_layer *l =
      nn_conv3d_new(ctx, 1, 1, 1, 1, 1, &rng,
                    &(nn_conv3d_opts){.padding = {2, 0, 0}, .padding_mode = NN_PADDING_REFLECT});
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  ad_tensor *x = ad_zeros(ctx, AD_F32, 5, (int64_t[5]){1, 1, 2, 3, 3});
  size_t before = ad_tape_size(ctx);
  cr_assert_null(nn_layer_forward(l, x, true));
  test_expect_error(ctx, AD_ERR_SHAPE, "conv3d: input [1,1,2,3,3]: axis 2 padded by (2, 2)",
                    "less than its length in mode reflect", NULL);
  cr_assert_eq(ad_tape_size(ctx), before, "a refused input records nothing");
  ad_tensor *x3 = ad_zeros(ctx, AD_F32, 5, (int64_t[5]){1, 1, 3, 3, 3});
  cr_assert_not_null(nn_layer_forward(l, x3, true), "%s", ad_last_error(ctx)); /* 2 < 3 */
  ad_tape_reset(ctx);
  ad_tensor_free(x), ad_tensor_free(x3);
  nn_layer_free(l);
  cr_assert_eq(ad_ctx_live_tensors(ctx), 0, "nothing left behind");
}
