/* test_nn_unpool.c: the indices of max pooling (ad_max_pool2d_indices,
 * ad_max_pool3d_indices, nn_max_pool_indices: PyTorch's
 * return_indices=True), nn.AdaptiveMaxPool3d (nn_adaptive_max_pool3d_new),
 * nn.MaxUnpool1d/2d/3d (nn_max_unpool*_new, nn_max_unpool_forward) and
 * nn.LPPool1d/2d (nn_lp_pool1d_new, nn_lp_pool2d_new).
 * Values, indices and input gradients (of sum(y * gy)) against PyTorch
 * 1.13 in tests/unpool_fixtures.h, written by tools/gen_unpool_fixtures.py
 * (strides, padding, dilation, ceil_mode, unbatched inputs, windows with
 * no element of the input, ties, NaN and -inf; unpooling with output_size
 * and with duplicate indices; LPPool's norm types, windows of zeros and
 * negative sums): float64 to 1e-12, float32 to 1e-5. Also
 * first- and second-order derivatives against central differences, and
 * bad arguments and inputs. */
#include "nn.h"
#include "test_alloc.h"
#include "test_layer_values.h"
#include "unpool_fixtures.h"
#include "test_tensor_of.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_IDX    ((int)(sizeof idx_cases / sizeof idx_cases[0]))
#define N_UNPOOL ((int)(sizeof unpool_cases / sizeof unpool_cases[0]))

TEST_CTX_SUITE(unpool);

/* -------------------------------------------------------------- indices */

static nn_layer *idx_layer(const idx_case *c) {
  switch (c->kind) {
  case 0:
    return nn_max_pool1d_new(
        ctx, c->k[0],
        &(nn_pool1d_opts){
            .stride = c->s[0], .padding = c->p[0], .dilation = c->d[0], .ceil_mode = c->ceil_mode});
  case 1:
    return nn_max_pool2d_new(ctx, c->k[0], c->k[1],
                             &(ad_pool2d_opts){.stride = {c->s[0], c->s[1]},
                                               .padding = {c->p[0], c->p[1]},
                                               .dilation = {c->d[0], c->d[1]},
                                               .ceil_mode = c->ceil_mode});
  case 2:
    return nn_max_pool3d_new(ctx, c->k[0], c->k[1], c->k[2],
                             &(ad_pool3d_opts){.stride = {c->s[0], c->s[1], c->s[2]},
                                               .padding = {c->p[0], c->p[1], c->p[2]},
                                               .dilation = {c->d[0], c->d[1], c->d[2]},
                                               .ceil_mode = c->ceil_mode});
  case 3:
    return nn_adaptive_max_pool1d_new(ctx, c->k[0]);
  case 4:
    return nn_adaptive_max_pool2d_new(ctx, c->k[0], c->k[1]);
  default:
    return nn_adaptive_max_pool3d_new(ctx, c->k[0], c->k[1], c->k[2]);
  }
}

static void idx_cases_match(ad_dtype dt) {
  char what[96];
  double tol = dt == AD_F64 ? 1e-12 : 1e-5;
  for (int k = 0; k < N_IDX; k++) {
    const idx_case *c = &idx_cases[k];
    nn_layer *l = idx_layer(c);
    cr_assert_not_null(l, "%s: %s", c->name, ad_last_error(ctx));
    ad_tensor *x = tensor_of(dt, c->nd, c->shape, c->x);
    cr_assert_eq(x->size, c->nx, "%s", c->name);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = nn_layer_forward(l, x, true);
    snprintf(what, sizeof what, "%s %s y", c->name, ad_dtype_name(dt));
    test_expect_values(ctx, y, dt == AD_F64 ? c->y : c->y32, c->ny, tol, what);
    ad_tensor *i = nn_max_pool_indices(l, x);
    snprintf(what, sizeof what, "%s %s indices", c->name, ad_dtype_name(dt));
    cr_assert_not_null(i, "%s: %s", what, ad_last_error(ctx));
    cr_assert_eq(i->dtype, AD_I32, "%s", what);
    cr_assert_eq(i->ndim, y->ndim, "%s", what);
    for (int d = 0; d < y->ndim; d++) cr_assert_eq(i->shape[d], y->shape[d], "%s dim %d", what, d);
    cr_assert(!ad_tensor_requires_grad(i), "%s", what);
    test_expect_values(ctx, i, c->idx, c->ny, 0, what);
    if (c->dx) {
      ad_tensor *g = tensor_of(dt, y->ndim, y->shape, c->gy);
      cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, g)), NULL), AD_OK, "%s",
                   ad_last_error(ctx));
      snprintf(what, sizeof what, "%s %s dx", c->name, ad_dtype_name(dt));
      test_expect_values(ctx, x->grad, dt == AD_F64 ? c->dx : c->dx32, c->nx, tol, what);
      ad_tensor_free(g);
    }
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    nn_layer_free(l);
  }
}

Test(unpool, pool_indices_match_pytorch_f64) { idx_cases_match(AD_F64); }
Test(unpool, pool_indices_match_pytorch_f32) { idx_cases_match(AD_F32); }

/* The core functions are what the 2-D and 3-D layers run. */
Test(unpool, core_indices_are_the_layers) {
  int seen = 0;
  for (int k = 0; k < N_IDX; k++) {
    const idx_case *c = &idx_cases[k];
    if (c->kind != 1 && c->kind != 2) continue;
    ad_tensor *x = tensor_of(AD_F64, c->nd, c->shape, c->x);
    ad_tensor *i =
        c->kind == 1
            ? ad_max_pool2d_indices(ctx, x, c->k[0], c->k[1],
                                    &(ad_pool2d_opts){.stride = {c->s[0], c->s[1]},
                                                      .padding = {c->p[0], c->p[1]},
                                                      .dilation = {c->d[0], c->d[1]},
                                                      .ceil_mode = c->ceil_mode})
            : ad_max_pool3d_indices(ctx, x, c->k[0], c->k[1], c->k[2],
                                    &(ad_pool3d_opts){.stride = {c->s[0], c->s[1], c->s[2]},
                                                      .padding = {c->p[0], c->p[1], c->p[2]},
                                                      .dilation = {c->d[0], c->d[1], c->d[2]},
                                                      .ceil_mode = c->ceil_mode});
    test_expect_values(ctx, i, c->idx, c->ny, 0, c->name);
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    seen++;
  }
  cr_assert_geq(seen, 15);
}

/* ---------------------------------------------------------- unpooling */

static nn_layer *unpool_layer(const unpool_case *c) {
  nn_max_unpool_opts o = {{c->s[0], c->s[1], c->s[2]}, {c->p[0], c->p[1], c->p[2]}};
  switch (c->sp) {
  case 1:
    return nn_max_unpool1d_new(ctx, c->k[0], &o);
  case 2:
    return nn_max_unpool2d_new(ctx, c->k[0], c->k[1], &o);
  default:
    return nn_max_unpool3d_new(ctx, c->k[0], c->k[1], c->k[2], &o);
  }
}

static void unpool_cases_match(ad_dtype dt) {
  char what[96];
  double tol = dt == AD_F64 ? 1e-12 : 1e-5;
  for (int k = 0; k < N_UNPOOL; k++) {
    const unpool_case *c = &unpool_cases[k];
    nn_layer *l = unpool_layer(c);
    cr_assert_not_null(l, "%s: %s", c->name, ad_last_error(ctx));
    ad_tensor *x = tensor_of(dt, c->nd, c->shape, c->x);
    ad_tensor *i = tensor_of(AD_I32, c->nd, c->shape, c->idx);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = nn_max_unpool_forward(l, x, i, c->has_out ? c->out : NULL);
    snprintf(what, sizeof what, "%s %s y", c->name, ad_dtype_name(dt));
    test_expect_values(ctx, y, dt == AD_F64 ? c->y : c->y32, c->ny, tol, what);
    cr_assert_eq(y->ndim, c->nd, "%s", what);
    for (int d = 0; d < c->nd; d++) cr_assert_eq(y->shape[d], c->oshape[d], "%s dim %d", what, d);
    ad_tensor *g = tensor_of(dt, y->ndim, y->shape, c->gy);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, g)), NULL), AD_OK, "%s",
                 ad_last_error(ctx));
    snprintf(what, sizeof what, "%s %s dx", c->name, ad_dtype_name(dt));
    test_expect_values(ctx, x->grad, dt == AD_F64 ? c->dx : c->dx32, c->nx, tol, what);
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(i), ad_tensor_free(g);
    nn_layer_free(l);
  }
}

Test(unpool, unpool_matches_pytorch_f64) { unpool_cases_match(AD_F64); }
Test(unpool, unpool_matches_pytorch_f32) { unpool_cases_match(AD_F32); }

/* Pool, then unpool with the pool's indices: every maximum back at its
 * place, zeros elsewhere (PyTorch's documented round trip). */
Test(unpool, pool_then_unpool_round_trip) {
  int64_t s[4] = {2, 3, 6, 8};
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 4, s, 0.5, 1); /* above the zeros */
  nn_layer *p = nn_max_pool2d_new(ctx, 2, 2, NULL), *u = nn_max_unpool2d_new(ctx, 2, 2, NULL);
  ad_tensor *y = nn_layer_forward(p, x, false), *i = nn_max_pool_indices(p, x);
  ad_tensor *r = nn_max_unpool_forward(u, y, i, NULL);
  cr_assert_not_null(r, "%s", ad_last_error(ctx));
  ad_tensor *back = ad_max_pool2d(ctx, r, 2, 2, NULL);
  cr_assert(back && !memcmp(back->data, y->data, sizeof(float) * (size_t)y->size));
  int64_t nonzero = 0;
  for (int64_t k = 0; k < r->size; k++) {
    double v = ad_tensor_get(r, k);
    if (v != 0) {
      cr_assert_eq(v, ad_tensor_get(x, k), "[%lld]", (long long)k);
      nonzero++;
    }
  }
  cr_assert_eq(nonzero, y->size);
  nn_layer_free(p), nn_layer_free(u);
  ad_tensor_free(x);
}

/* -------------------------------------------------------------- LPPool */

#define N_LP ((int)(sizeof lp_cases / sizeof lp_cases[0]))

static nn_layer *lp_layer(const lp_case *c) {
  nn_lp_pool_opts o = {.stride = {c->s[0], c->s[1]}, .ceil_mode = c->ceil_mode};
  return c->two ? nn_lp_pool2d_new(ctx, c->p, c->k[0], c->k[1], &o)
                : nn_lp_pool1d_new(ctx, c->p, c->k[0], &o);
}

static void lp_cases_match(ad_dtype dt) {
  char what[96];
  double tol = dt == AD_F64 ? 1e-12 : 1e-5;
  for (int k = 0; k < N_LP; k++) {
    const lp_case *c = &lp_cases[k];
    nn_layer *l = lp_layer(c);
    cr_assert_not_null(l, "%s: %s", c->name, ad_last_error(ctx));
    ad_tensor *x = tensor_of(dt, c->nd, c->shape, c->x);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = nn_layer_forward(l, x, true);
    snprintf(what, sizeof what, "%s %s y", c->name, ad_dtype_name(dt));
    test_expect_values(ctx, y, dt == AD_F64 ? c->y : c->y32, c->ny, tol, what);
    cr_assert_eq(y->ndim, c->nd, "%s", what);
    ad_tensor *g = tensor_of(dt, y->ndim, y->shape, c->gy);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, g)), NULL), AD_OK, "%s",
                 ad_last_error(ctx));
    snprintf(what, sizeof what, "%s %s dx", c->name, ad_dtype_name(dt));
    test_expect_values(ctx, x->grad, dt == AD_F64 ? c->dx : c->dx32, c->nx, tol, what);
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(g);
    nn_layer_free(l);
  }
}

Test(unpool, lp_pool_matches_pytorch_f64) { lp_cases_match(AD_F64); }
Test(unpool, lp_pool_matches_pytorch_f32) { lp_cases_match(AD_F32); }

/* ---------------------------------------------------------- derivatives */

typedef struct unpool_ud {
  nn_layer *l;
  ad_tensor *idx;
  const int64_t *out;
} unpool_ud;

static ad_tensor *run_unpool(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c, (void)n;
  const unpool_ud *u = ud;
  return nn_max_unpool_forward(u->l, in[0], u->idx, u->out);
}

static ad_tensor *run_layer(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c, (void)n;
  return nn_layer_forward(ud, in[0], true);
}

static void check_orders(ad_check_fn fn, void *ud, ad_tensor *x, const char *name) {
  ad_check_report r;
  cr_assert_eq(ad_gradcheck(ctx, fn, ud, 1, &x, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed, "%s: first order, [%lld] %g vs %g", name, (long long)r.index, r.analytic,
            r.numeric);
  cr_assert_eq(ad_gradgradcheck(ctx, fn, ud, 1, &x, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed, "%s: second order, [%lld] %g vs %g", name, (long long)r.index, r.analytic,
            r.numeric);
}

/* Unpooling with every case's indices (duplicates too), and adaptive max
 * pooling 3-D on random distinct-enough inputs: first and second order in
 * float64. */
Test(unpool, gradcheck_first_and_second_order) {
  for (int k = 0; k < N_UNPOOL; k++) {
    const unpool_case *c = &unpool_cases[k];
    unpool_ud u = {unpool_layer(c), tensor_of(AD_I32, c->nd, c->shape, c->idx),
                   c->has_out ? c->out : NULL};
    ad_rng rng;
    ad_rng_seed(&rng, 11 + (uint64_t)k);
    ad_tensor *x = ad_rand(ctx, &rng, AD_F64, c->nd, c->shape, -2, 2);
    ad_tensor_set_requires_grad(x, true);
    check_orders(run_unpool, &u, x, c->name);
    ad_tensor_free(x), ad_tensor_free(u.idx);
    nn_layer_free(u.l);
  }
  int checked = 0;
  for (int k = 0; k < N_IDX; k++) {
    const idx_case *c = &idx_cases[k];
    if (c->kind != 5 || strstr(c->name, "ties") || strstr(c->name, "nan") || strstr(c->name, "inf"))
      continue;
    nn_layer *l = idx_layer(c);
    ad_rng rng;
    ad_rng_seed(&rng, 5 + (uint64_t)k);
    ad_tensor *x = ad_rand(ctx, &rng, AD_F64, c->nd, c->shape, -2, 2);
    ad_tensor_set_requires_grad(x, true);
    check_orders(run_layer, l, x, c->name);
    ad_tensor_free(x);
    nn_layer_free(l);
    checked++;
  }
  cr_assert_geq(checked, 4);
  /* LPPool on positive inputs (away from the kinks of sign, abs and relu
   * at 0 and the NaN of negative sums) */
  for (int k = 0; k < N_LP; k++) {
    const lp_case *c = &lp_cases[k];
    nn_layer *l = lp_layer(c);
    ad_rng rng;
    ad_rng_seed(&rng, 21 + (uint64_t)k);
    ad_tensor *x = ad_rand(ctx, &rng, AD_F64, c->nd, c->shape, 0.5, 2);
    ad_tensor_set_requires_grad(x, true);
    check_orders(run_layer, l, x, c->name);
    ad_tensor_free(x);
    nn_layer_free(l);
  }
}

/* ------------------------------------------------------------- describe */

static void expect_desc(nn_layer *l, const char *want) { test_expect_desc(ctx, l, want); }

/* PyTorch 1.13's reprs under our kinds' names. */
Test(unpool, describe_is_pytorch_repr) {
  expect_desc(nn_max_unpool1d_new(ctx, 2, NULL),
              "max_unpool1d(kernel_size=(2,), stride=(2,), padding=(0,))");
  expect_desc(nn_max_unpool2d_new(ctx, 3, 2, &(nn_max_unpool_opts){{1, 2}, {1, 0}}),
              "max_unpool2d(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0))");
  expect_desc(nn_max_unpool3d_new(ctx, 2, 2, 2, NULL),
              "max_unpool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=(0, 0, 0))");
  expect_desc(nn_lp_pool2d_new(ctx, 2, 3, 3, NULL),
              "lp_pool2d(norm_type=2, kernel_size=3, stride=None, ceil_mode=False)");
  expect_desc(nn_lp_pool1d_new(ctx, 1.5, 3, &(nn_lp_pool_opts){.stride = {1}, .ceil_mode = true}),
              "lp_pool1d(norm_type=1.5, kernel_size=3, stride=1, ceil_mode=True)");
  expect_desc(nn_lp_pool2d_new(ctx, 2, 2, 3, &(nn_lp_pool_opts){.stride = {1, 2}}),
              "lp_pool2d(norm_type=2, kernel_size=(2, 3), stride=(1, 2), ceil_mode=False)");
  expect_desc(nn_adaptive_max_pool3d_new(ctx, 2, 2, 2), "adaptive_max_pool3d(output_size=2)");
  expect_desc(nn_adaptive_max_pool3d_new(ctx, 1, 2, 3),
              "adaptive_max_pool3d(output_size=(1, 2, 3))");
}

/* ---------------------------------------------------------------- misuse */

Test(unpool, bad_arguments_are_refused_when_made) {
  cr_assert_null(nn_max_unpool1d_new(ctx, 0, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "max_unpool1d: kernel must be in [1, 2^30]");
  cr_assert_null(nn_max_unpool2d_new(ctx, 2, 2, &(nn_max_unpool_opts){{1, -1}, {0, 0}}));
  expect_status_msg(ctx, AD_ERR_ARG, "max_unpool2d: stride must be in");
  cr_assert_null(nn_max_unpool3d_new(ctx, 2, 2, 2, &(nn_max_unpool_opts){{0}, {0, 0, -1}}));
  expect_status_msg(ctx, AD_ERR_ARG, "max_unpool3d: padding must be in");
  cr_assert_null(nn_max_unpool3d_new(ctx, 2, (INT64_C(1) << 30) + 1, 2, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "kernel must be in");
  cr_assert_null(nn_adaptive_max_pool3d_new(ctx, 0, 1, 1));
  expect_status_msg(ctx, AD_ERR_ARG, "adaptive_max_pool3d: output size 0x1x1");
  cr_assert_null(nn_max_unpool1d_new(NULL, 2, NULL));
  cr_assert_null(nn_adaptive_max_pool3d_new(NULL, 2, 2, 2));
}

Test(unpool, bad_unpool_inputs_are_refused) {
  int64_t s[3] = {1, 2, 4}, s2[3] = {1, 2, 3}, s4[4] = {1, 2, 4, 1}, se[3] = {1, 0, 4};
  nn_layer *u = nn_max_unpool1d_new(ctx, 2, NULL);
  nn_layer *p = nn_max_pool1d_new(ctx, 2, NULL);
  double iv[8] = {0, 3, 2, 4, 7, 7, 0, 1};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 3, s), *i = tensor_of(AD_I32, 3, s, iv);
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 3, s), *if32 = ad_zeros(ctx, AD_F32, 3, s);
  ad_tensor *i2 = ad_zeros(ctx, AD_I32, 3, s2), *x4 = ad_zeros(ctx, AD_F32, 4, s4);
  ad_tensor *xe = ad_zeros(ctx, AD_F32, 3, se), *ie = ad_zeros(ctx, AD_I32, 3, se);
  cr_assert_not_null(nn_max_unpool_forward(u, x, i, NULL), "%s", ad_last_error(ctx));
  cr_assert_null(nn_max_unpool_forward(NULL, x, i, NULL));
  cr_assert_null(nn_max_unpool_forward(p, x, i, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "is not a max_unpool1d/2d/3d");
  cr_assert_null(nn_max_unpool_forward(u, NULL, i, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "max_unpool1d: x is NULL");
  cr_assert_null(nn_max_unpool_forward(u, x, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "max_unpool1d: indices is NULL");
  cr_assert_null(nn_max_unpool_forward(u, xi, i, NULL));
  expect_status_msg(ctx, AD_ERR_DTYPE, "max_unpool1d");
  cr_assert_null(nn_max_unpool_forward(u, x, if32, NULL));
  expect_status_msg(ctx, AD_ERR_DTYPE, "max_unpool1d: indices are f32; they must be i32");
  cr_assert_null(nn_max_unpool_forward(u, x, i2, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "indices [1,2,3] must have the input's shape [1,2,4]");
  cr_assert_null(nn_max_unpool_forward(u, x4, i, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "input [1,2,4,1] must be [N, C, L] or [C, L]");
  cr_assert_null(nn_max_unpool_forward(u, xe, ie, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "has an empty dim 1");
  /* PyTorch: invalid output_size "[10]" (dim 0 must be between 6 and 10) */
  int64_t o10[1] = {10}, o9[1] = {9}, o6[1] = {6};
  cr_assert_null(nn_max_unpool_forward(u, x, i, o10));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "max_unpool1d: invalid output_size 10 on spatial dim 0 (must be between 6 "
                    "and 10, exclusive)");
  cr_assert_null(nn_max_unpool_forward(u, x, i, o6));
  expect_status_msg(ctx, AD_ERR_SHAPE, "invalid output_size 6");
  ad_tensor *y9 = nn_max_unpool_forward(u, x, i, o9);
  cr_assert(y9 && y9->shape[2] == 9, "%s", ad_last_error(ctx));
  /* out of range: PyTorch's "Found an invalid max index" */
  ad_tensor_set(i, 5, 8);
  cr_assert_null(nn_max_unpool_forward(u, x, i, NULL));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "max_unpool1d: index 8 at position 5 of indices [1,2,4] is outside the "
                    "output plane of 8 elements (0..7)");
  ad_tensor_set(i, 5, -1);
  cr_assert_null(nn_max_unpool_forward(u, x, i, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "index -1 at position 5");
  ad_tensor_set(i, 5, 8);
  cr_assert_not_null(nn_max_unpool_forward(u, x, i, o9)); /* 8 fits the larger output */
  ad_tensor_set(i, 5, 7);
  /* the generic forward needs the indices */
  cr_assert_null(nn_layer_forward(u, x, false));
  expect_status_msg(ctx, AD_ERR_ARG, "max_unpool1d");
  /* an output of length 0: (1 - 1) 1 + 1 - 2 */
  nn_layer *z = nn_max_unpool1d_new(ctx, 1, &(nn_max_unpool_opts){{1}, {1}});
  int64_t s1[3] = {1, 1, 1};
  ad_tensor *x1 = ad_zeros(ctx, AD_F32, 3, s1), *i1 = ad_zeros(ctx, AD_I32, 3, s1);
  cr_assert_null(nn_max_unpool_forward(z, x1, i1, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "max_unpool1d: output length -1 on spatial dim 0");
  /* freed tensors */
  ad_tensor_free(x1);
  cr_assert_null(nn_max_unpool_forward(z, x1, i1, NULL));
  expect_status_msg(ctx, AD_ERR_STATE, "x was freed");
  ad_tensor_free(i1);
  cr_assert_null(nn_max_unpool_forward(u, x, i1, NULL));
  expect_status_msg(ctx, AD_ERR_STATE, "indices was freed");
  nn_layer_free(z), nn_layer_free(u), nn_layer_free(p);
  ad_tensor_free(x), ad_tensor_free(i), ad_tensor_free(xi), ad_tensor_free(if32);
  ad_tensor_free(i2), ad_tensor_free(x4), ad_tensor_free(xe), ad_tensor_free(ie);
}

Test(unpool, bad_indices_requests_are_refused) {
  int64_t s[4] = {1, 1, 4, 4}, s2[2] = {4, 4}, s5[5] = {1, 1, 2, 4, 4};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 4, s), *x2 = ad_zeros(ctx, AD_F32, 2, s2);
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 4, s), *x5 = ad_zeros(ctx, AD_F64, 5, s5);
  nn_layer *avg = nn_avg_pool2d_new(ctx, 2, 2, NULL), *mp = nn_max_pool2d_new(ctx, 2, 2, NULL);
  nn_layer *am = nn_adaptive_max_pool2d_new(ctx, 3, 3),
           *a3 = nn_adaptive_max_pool3d_new(ctx, 1, 2, 2);
  nn_layer *m1 = nn_max_pool1d_new(ctx, 2, NULL);
  cr_assert_null(nn_max_pool_indices(NULL, x));
  cr_assert_null(nn_max_pool_indices(avg, x));
  expect_status_msg(ctx, AD_ERR_ARG, "max_pool_indices: layer avg_pool2d is not a max pooling");
  cr_assert_null(nn_max_pool_indices(mp, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "max_pool_indices: x is NULL");
  cr_assert_null(nn_max_pool_indices(mp, xi));
  expect_status_msg(ctx, AD_ERR_DTYPE, "max_pool2d_indices");
  cr_assert_null(nn_max_pool_indices(mp, x2));
  expect_status_msg(ctx, AD_ERR_SHAPE, "max_pool2d_indices: input [4,4] must be 4-D");
  cr_assert_null(nn_max_pool_indices(am, x2));
  expect_status_msg(ctx, AD_ERR_SHAPE, "adaptive_max_pool2d");
  cr_assert_null(nn_max_pool_indices(am, xi));
  expect_status_msg(ctx, AD_ERR_DTYPE, "adaptive_max_pool2d");
  cr_assert_null(nn_max_pool_indices(a3, x2));
  expect_status_msg(ctx, AD_ERR_SHAPE, "adaptive_max_pool3d");
  cr_assert_null(nn_max_pool_indices(m1, x));
  expect_status_msg(ctx, AD_ERR_SHAPE, "max_pool1d");
  cr_assert_not_null(nn_max_pool_indices(a3, x5), "%s", ad_last_error(ctx));
  cr_assert_null(ad_max_pool2d_indices(ctx, x, 0, 2, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "max_pool2d_indices: kernel 0x2 must be positive");
  cr_assert_null(ad_max_pool2d_indices(NULL, x, 2, 2, NULL));
  cr_assert_null(ad_max_pool3d_indices(ctx, x2, 2, 2, 2, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "max_pool3d_indices: input [4,4] must be 5-D");
  cr_assert_null(ad_max_pool3d_indices(ctx, x, 2, 2, 2, NULL)); /* [C, D, H, W], D = 1 */
  expect_status_msg(ctx, AD_ERR_SHAPE, "max_pool3d_indices: input [1,1,4,4] is too small");
  cr_assert_null(ad_max_pool3d_indices(ctx, x5, 2, 2, 2, &(ad_pool3d_opts){.padding = {2}}));
  expect_status_msg(ctx, AD_ERR_ARG, "max_pool3d_indices: padding");
  ad_tensor_free(x);
  cr_assert_null(nn_max_pool_indices(mp, x));
  expect_status_msg(ctx, AD_ERR_STATE, "max_pool_indices: x was freed");
  cr_assert_null(ad_max_pool2d_indices(ctx, x, 2, 2, NULL));
  expect_status_msg(ctx, AD_ERR_STATE, "max_pool2d_indices");
  /* another context's tensor */
  ad_ctx *other = ad_ctx_new();
  ad_tensor *xo = ad_zeros(other, AD_F32, 4, s);
  cr_assert_null(nn_max_pool_indices(mp, xo));
  expect_status_msg(ctx, AD_ERR_ARG, "another context");
  ad_ctx_free(other);
  nn_layer_free(avg), nn_layer_free(mp), nn_layer_free(am), nn_layer_free(a3), nn_layer_free(m1);
  ad_tensor_free(x2), ad_tensor_free(xi), ad_tensor_free(x5);
}

Test(unpool, bad_lp_pool_arguments_and_inputs) {
  cr_assert_null(nn_lp_pool2d_new(ctx, 0, 2, 2, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "lp_pool2d: norm_type must be finite and not 0");
  cr_assert_null(nn_lp_pool1d_new(ctx, INFINITY, 2, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "lp_pool1d: norm_type must be finite");
  cr_assert_null(nn_lp_pool1d_new(ctx, NAN, 2, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "lp_pool1d: norm_type");
  cr_assert_null(nn_lp_pool1d_new(ctx, 2, 0, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "lp_pool1d: kernel must be in [1, 2^30]");
  cr_assert_null(nn_lp_pool2d_new(ctx, 2, 2, 2, &(nn_lp_pool_opts){.stride = {-1, 1}}));
  expect_status_msg(ctx, AD_ERR_ARG, "lp_pool2d: stride must be in");
  cr_assert_null(nn_lp_pool2d_new(NULL, 2, 2, 2, NULL));
  nn_layer *l1 = nn_lp_pool1d_new(ctx, 2, 3, NULL), *l2 = nn_lp_pool2d_new(ctx, 2, 3, 3, NULL);
  int64_t s4[4] = {1, 1, 2, 4}, s2[2] = {2, 2}, se[3] = {1, 2, 0};
  ad_tensor *x4 = ad_zeros(ctx, AD_F32, 4, s4), *x2 = ad_zeros(ctx, AD_F32, 2, s2);
  ad_tensor *xi = ad_zeros(ctx, AD_I32, 2, s2), *xe = ad_zeros(ctx, AD_F32, 3, se);
  cr_assert_null(nn_layer_forward(l1, x4, false));
  expect_status_msg(ctx, AD_ERR_SHAPE, "lp_pool1d");
  cr_assert_null(nn_layer_forward(l1, xi, false));
  expect_status_msg(ctx, AD_ERR_DTYPE, "lp_pool1d");
  cr_assert_null(nn_layer_forward(l1, xe, false));
  expect_status_msg(ctx, AD_ERR_SHAPE, "has an empty L");
  cr_assert_null(nn_layer_forward(l1, x2, false)); /* L = 2 < kernel 3 */
  expect_status_msg(ctx, AD_ERR_SHAPE, "avg_pool2d");
  cr_assert_null(nn_layer_forward(l2, x2, false));
  expect_status_msg(ctx, AD_ERR_SHAPE, "lp_pool2d: input [2,2] must be [N, C, H, W] or [C, H, W]");
  cr_assert_null(nn_layer_forward(l2, x4, false)); /* H = 2 < 3 */
  expect_status_msg(ctx, AD_ERR_SHAPE, "avg_pool2d");
  ad_tensor_free(x2);
  cr_assert_null(nn_layer_forward(l1, x2, false));
  expect_status_msg(ctx, AD_ERR_STATE, "was freed");
  nn_layer_free(l1), nn_layer_free(l2);
  ad_tensor_free(x4), ad_tensor_free(xi), ad_tensor_free(xe);
}

/* An empty batch gives empty indices and an empty unpooling, as PyTorch. */
Test(unpool, empty_batch) {
  int64_t s[4] = {0, 2, 4, 4};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 4, s);
  nn_layer *mp = nn_max_pool2d_new(ctx, 2, 2, NULL), *u = nn_max_unpool2d_new(ctx, 2, 2, NULL);
  ad_tensor *i = nn_max_pool_indices(mp, x), *y = nn_layer_forward(mp, x, false);
  cr_assert(i && i->size == 0 && i->shape[2] == 2, "%s", ad_last_error(ctx));
  ad_tensor *r = nn_max_unpool_forward(u, y, i, NULL);
  cr_assert(r && r->size == 0 && r->shape[1] == 2 && r->shape[3] == 4, "%s", ad_last_error(ctx));
  nn_layer_free(mp), nn_layer_free(u);
  ad_tensor_free(x);
}

/* An allocator that refuses any block over 64 MB (ud counts the refusals). */
static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (nsize > ((size_t)64 << 20)) {
    ++*(long *)ud;
    return NULL;
  }
  void *p = aligned_alloc(64, (nsize + 63) & ~(size_t)63);
  if (p && ptr) {
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    free(ptr);
  }
  return p;
}

/* With N = 0 (PyTorch: an empty result) or one input a plane, no plane
 * holds two inputs, so no duplicate search runs and nothing of the output
 * plane's size is allocated: an empty batch unpooled to planes of 2^28
 * elements (whose search table would be 2 GB) is an empty result, not
 * out of memory (nor seconds of clearing a table). */
Test(unpool, empty_batch_allocates_nothing_of_the_plane) {
  long refused = 0;
  ad_ctx *c = ad_ctx_new_with_alloc(capped_alloc, &refused);
  cr_assert_not_null(c);
  int64_t s[4] = {0, 1, 1, 1}, k = INT64_C(1) << 14;
  ad_tensor *x = ad_zeros(c, AD_F32, 4, s), *i = ad_zeros(c, AD_I32, 4, s);
  nn_layer *u = nn_max_unpool2d_new(c, k, k, NULL);
  cr_assert(x && i && u, "%s", ad_last_error(c));
  ad_tensor *y = nn_max_unpool_forward(u, x, i, NULL);
  cr_assert(y && y->size == 0 && y->ndim == 4 && y->shape[2] == k && y->shape[3] == k,
            "%s (%ld blocks refused)", ad_last_error(c), refused);
  cr_assert_eq(refused, 0);
  nn_layer_free(u);
  ad_tensor_free(x), ad_tensor_free(i);
  ad_ctx_free(c);
}

/* Output lengths whose product passes 2^63 (each within a stride of the
 * default): 5 x 1718039348 x 2147418113 = 2^64 + 4 and 2^30 x 2^30 x 16 =
 * 2^64 must be refused as too large, not wrap to a plane of 4 or 0
 * elements (signed overflow). */
Test(unpool, output_plane_overflow_is_refused) {
  int64_t s5[5] = {1, 1, 1, 1, 1};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 5, s5), *i = ad_zeros(ctx, AD_I32, 5, s5);
  nn_layer *u = nn_max_unpool3d_new(ctx, 5, INT64_C(1) << 30, INT64_C(1) << 30,
                                    &(nn_max_unpool_opts){.stride = {1, 1 << 30, 1 << 30}});
  cr_assert_not_null(u, "%s", ad_last_error(ctx));
  int64_t wrap4[3] = {5, 1718039348, 2147418113};
  cr_assert_null(nn_max_unpool_forward(u, x, i, wrap4));
  expect_status_msg(ctx, AD_ERR_SHAPE, "more than 2^31 - 1 elements");
  nn_layer *v = nn_max_unpool3d_new(ctx, INT64_C(1) << 30, INT64_C(1) << 30, 16,
                                    &(nn_max_unpool_opts){.stride = {1 << 30, 1 << 30, 1}});
  cr_assert_not_null(v, "%s", ad_last_error(ctx));
  cr_assert_null(nn_max_unpool_forward(v, x, i, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "more than 2^31 - 1 elements");
  /* with N = 0 the plane is still too large for the int32 indices */
  int64_t s0[5] = {0, 1, 2, 1, 1};
  ad_tensor *x0 = ad_zeros(ctx, AD_F32, 5, s0), *i0 = ad_zeros(ctx, AD_I32, 5, s0);
  cr_assert_null(nn_max_unpool_forward(v, x0, i0, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "more than 2^31 - 1 elements");
  nn_layer_free(u), nn_layer_free(v);
  ad_tensor_free(x), ad_tensor_free(i), ad_tensor_free(x0), ad_tensor_free(i0);
}

/* The message quotes the axis at fault, not axis 0's valid values. */
Test(unpool, bad_argument_message_names_the_axis) {
  cr_assert_null(nn_max_unpool2d_new(ctx, 2, 0, NULL));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "max_unpool2d: kernel must be in [1, 2^30] (kernel 0, stride 0, padding 0 on "
                    "spatial dim 1)");
  cr_assert_null(nn_max_unpool3d_new(ctx, 2, 2, 2, &(nn_max_unpool_opts){.stride = {1, 1, -3}}));
  expect_status_msg(ctx, AD_ERR_ARG, "(kernel 2, stride -3, padding 0 on spatial dim 2)");
  cr_assert_null(nn_max_unpool3d_new(ctx, 2, 2, 2, &(nn_max_unpool_opts){.padding = {0, -1, 0}}));
  expect_status_msg(ctx, AD_ERR_ARG, "(kernel 2, stride 0, padding -1 on spatial dim 1)");
}
