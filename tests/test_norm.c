/* test_norm.c: ad_batch_norm against its definition computed here in
 * double, its running statistics over several steps, evaluation mode,
 * first and second derivatives by central differences, and bad input. */
#include "ad_ext.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_CTX_SUITE(norm);

#define expect_error(...) test_expect_error(ctx, __VA_ARGS__)

static ad_tensor *randt(ad_rng *rng, ad_dtype dt, int nd, const int64_t *shape, double lo,
                        double hi, bool grad) {
  ad_tensor *t = ad_rand(ctx, rng, dt, nd, shape, lo, hi);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  if (grad) ad_tensor_set_requires_grad(t, true);
  return t;
}

/* The definition, per channel c of x [N, C, S] (S the product of the
 * remaining dims): mean and biased variance over N and S. */
static void reference(const ad_tensor *x, int64_t C, double *mean, double *var) {
  int64_t N = x->shape[0], S = x->size / (N * C);
  for (int64_t c = 0; c < C; c++) {
    double s = 0, q = 0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t i = 0; i < S; i++) s += ad_tensor_get(x, (n * C + c) * S + i);
    mean[c] = s / (double)(N * S);
    for (int64_t n = 0; n < N; n++)
      for (int64_t i = 0; i < S; i++) {
        double d = ad_tensor_get(x, (n * C + c) * S + i) - mean[c];
        q += d * d;
      }
    var[c] = q / (double)(N * S);
  }
}

static void check_training(ad_dtype dt, int nd, const int64_t *shape, double tol) {
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  int64_t C = shape[1], sc[1] = {C};
  ad_tensor *x = randt(&rng, dt, nd, shape, -2, 3, false);
  ad_tensor *w = randt(&rng, dt, 1, sc, 0.5, 1.5, false), *b = randt(&rng, dt, 1, sc, -1, 1, false);
  ad_tensor *rm = ad_zeros(ctx, dt, 1, sc), *rv = ad_ones(ctx, dt, 1, sc);
  double mean[16], var[16], em[16] = {0}, ev[16];
  for (int c = 0; c < C; c++) ev[c] = 1;
  int64_t N = shape[0], S = x->size / (N * C), M = N * S;
  for (int step = 0; step < 3; step++) {
    for (int64_t i = 0; i < x->size; i++) /* a new batch each step */
      ad_tensor_set(x, i, ad_tensor_get(x, i) * 0.9 + 0.3 * (double)step);
    ad_tensor *y = ad_batch_norm(ctx, x, w, b, rm, rv, true, 0.1, 1e-5);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    reference(x, C, mean, var);
    for (int64_t n = 0; n < N; n++)
      for (int64_t c = 0; c < C; c++)
        for (int64_t i = 0; i < S; i++) {
          int64_t k = (n * C + c) * S + i;
          double want =
              (ad_tensor_get(x, k) - mean[c]) / sqrt(var[c] + 1e-5) * ad_tensor_get(w, c) +
              ad_tensor_get(b, c);
          QUICK_ASSERT(test_close(ad_tensor_get(y, k), want, tol * (1 + fabs(want))),
                       "step %d element %lld: %.17g, want %.17g", step, (long long)k,
                       ad_tensor_get(y, k), want);
        }
    for (int c = 0; c < C; c++) {
      em[c] = 0.9 * em[c] + 0.1 * mean[c];
      ev[c] = 0.9 * ev[c] + 0.1 * var[c] * (double)M / (double)(M - 1);
      cr_assert(test_close(ad_tensor_get(rm, c), em[c], tol * (1 + fabs(em[c]))),
                "running_mean[%d]: %.17g, want %.17g", c, ad_tensor_get(rm, c), em[c]);
      cr_assert(test_close(ad_tensor_get(rv, c), ev[c], tol * (1 + fabs(ev[c]))),
                "running_var[%d]: %.17g, want %.17g", c, ad_tensor_get(rv, c), ev[c]);
    }
    ad_tape_reset(ctx);
  }
  /* evaluation mode: the running statistics, not the batch's */
  ad_tensor *y = ad_batch_norm(ctx, x, w, NULL, rm, rv, false, 0.1, 1e-5);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  for (int64_t k = 0; k < x->size; k++) {
    int64_t c = (k / S) % C;
    double want = (ad_tensor_get(x, k) - em[c]) / sqrt(ev[c] + 1e-5) * ad_tensor_get(w, c);
    QUICK_ASSERT(test_close(ad_tensor_get(y, k), want, tol * (1 + fabs(want))), "eval element %lld",
                 (long long)k);
  }
  cr_assert(test_close(ad_tensor_get(rm, 0), em[0], tol * (1 + fabs(em[0]))),
            "eval updates nothing: running_mean[0] %.17g, want %.17g", ad_tensor_get(rm, 0), em[0]);
  ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(b), ad_tensor_free(rm), ad_tensor_free(rv);
}

Test(norm, batch_norm_nchw_f64) {
  int64_t s[4] = {3, 4, 5, 2};
  check_training(AD_F64, 4, s, 1e-12);
}

Test(norm, batch_norm_nchw_f32) {
  int64_t s[4] = {4, 3, 3, 3};
  check_training(AD_F32, 4, s, 2e-6);
}

Test(norm, batch_norm_2d_and_3d) {
  int64_t s2[2] = {8, 5}, s3[3] = {2, 3, 7};
  check_training(AD_F64, 2, s2, 1e-12);
  check_training(AD_F64, 3, s3, 1e-12);
}

static ad_tensor *bn_train(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n, (void)ud;
  return ad_batch_norm(c, in[0], in[1], in[2], NULL, NULL, true, 0.1, 1e-5);
}

static ad_tensor *bn_eval(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  ad_tensor **rs = ud;
  return ad_batch_norm(c, in[0], in[1], in[2], rs[0], rs[1], false, 0.1, 1e-5);
}

Test(norm, batch_norm_first_and_second_derivatives) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t s[4] = {2, 3, 2, 2}, sc[1] = {3};
  ad_tensor *in[3] = {randt(&rng, AD_F64, 4, s, -1, 1, true),
                      randt(&rng, AD_F64, 1, sc, 0.5, 1.5, true),
                      randt(&rng, AD_F64, 1, sc, -1, 1, true)};
  ad_check_report r;
  cr_assert_eq(ad_gradcheck(ctx, bn_train, NULL, 3, in, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed, "gradcheck: input %d [%lld] analytic %g numeric %g", r.input,
            (long long)r.index, r.analytic, r.numeric);
  cr_assert_eq(ad_gradgradcheck(ctx, bn_train, NULL, 3, in, NULL, &r), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(r.passed, "gradgradcheck: input %d [%lld] analytic %g numeric %g", r.input,
            (long long)r.index, r.analytic, r.numeric);
  ad_tensor *rs[2] = {randt(&rng, AD_F64, 1, sc, -1, 1, false),
                      randt(&rng, AD_F64, 1, sc, 0.5, 2, false)};
  cr_assert_eq(ad_gradcheck(ctx, bn_eval, rs, 3, in, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed, "gradcheck (eval): input %d", r.input);
  cr_assert_eq(ad_gradgradcheck(ctx, bn_eval, rs, 3, in, NULL, &r), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(r.passed, "gradgradcheck (eval): input %d", r.input);
  for (int k = 0; k < 3; k++) ad_tensor_free(in[k]);
  ad_tensor_free(rs[0]), ad_tensor_free(rs[1]);
}

/* Evaluation mode in float32 with a running mean large against the
 * spread (3000 +- 1): y and weight's gradient within a few float32 ulp of
 * (x - mean) alpha + bias and sum dy (x - mean) s, computed here in
 * double. The form x alpha + (bias - mean alpha) was off by 3e-4 in y and
 * 0.7% in weight's gradient here (s (sum dy x - mean sum dy) cancels). */
Test(norm, batch_norm_eval_large_mean_f32) {
  ad_rng rng;
  ad_rng_seed(&rng, 23);
  int64_t s[4] = {8, 3, 8, 8}, sc[1] = {3}, S = 64, C = 3;
  ad_tensor *x = randt(&rng, AD_F32, 4, s, 2999, 3001, true);
  ad_tensor *dy = randt(&rng, AD_F32, 4, s, -1, 1, false);
  ad_tensor *w = randt(&rng, AD_F32, 1, sc, 0.5, 1.5, true);
  ad_tensor *b = randt(&rng, AD_F32, 1, sc, -1, 1, true);
  ad_tensor *rm = ad_full(ctx, AD_F32, 1, sc, 3000.25), *rv = ad_full(ctx, AD_F32, 1, sc, 0.5);
  cr_assert(rm && rv);
  ad_tensor *y = ad_batch_norm(ctx, x, w, b, rm, rv, false, 0.1, 1e-5), *in[2] = {w, b}, *g[2];
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_grad(ctx, y, dy, 2, in, g, false), AD_OK, "%s", ad_last_error(ctx));
  double inv = 1 / sqrt((double)0.5f + 1e-5);
  for (int64_t c = 0; c < C; c++) {
    double dw = 0, mag = 0, wc = ad_tensor_get(w, c), bc = ad_tensor_get(b, c);
    for (int64_t n = 0; n < s[0]; n++)
      for (int64_t i = 0; i < S; i++) {
        int64_t k = (n * C + c) * S + i;
        double xc = ad_tensor_get(x, k) - 3000.25, want = xc * inv * wc + bc;
        QUICK_ASSERT(fabs(ad_tensor_get(y, k) - want) <= 1e-6 * (1 + fabs(want)),
                     "y[%lld]: %.9g, want %.9g", (long long)k, ad_tensor_get(y, k), want);
        dw += ad_tensor_get(dy, k) * xc * inv;
        mag += fabs(ad_tensor_get(dy, k) * xc * inv);
      }
    cr_assert(fabs(ad_tensor_get(g[0], c) - dw) <= 1e-6 * mag,
              "dweight[%lld]: %.9g, want %.9g (sum of magnitudes %g)", (long long)c,
              ad_tensor_get(g[0], c), dw, mag);
  }
  ad_tape_reset(ctx);
  ad_tensor *all[6] = {x, dy, w, b, rm, rv};
  for (int k = 0; k < 6; k++) ad_tensor_free(all[k]);
}

/* channel_affine (batch_norm's evaluation mode) gives the bits of the
 * sub, mul and add it replaces, in float32 and float64, with and without
 * b, for [N, C] and [N, C, H, W] and an empty batch, on 1 and 3 threads;
 * its gradients match the composition's within rounding (their sums run
 * in another order). */
Test(norm, channel_affine_is_sub_mul_add) {
  static const int64_t shapes[4][4] = {{5, 7, 1, 1}, {4, 6, 9, 11}, {0, 3, 2, 2}, {2, 64, 40, 40}};
  ad_rng rng;
  ad_rng_seed(&rng, 31);
  int op = ad_op_find(ctx, "channel_affine");
  cr_assert_geq(op, 0);
  for (int d = 0; d < 2; d++)
    for (int si = 0; si < 4; si++)
      for (int hasb = 0; hasb < 2; hasb++)
        for (int th = 0; th < 2; th++) {
          ad_dtype dt = d ? AD_F64 : AD_F32;
          int nd = si == 0 ? 2 : 4;
          int64_t C = shapes[si][1], pc[4] = {1, C, 1, 1};
          ad_tensor *x = randt(&rng, dt, nd, shapes[si], -3, 3, true);
          ad_tensor *m = randt(&rng, dt, 1, &C, -1, 1, true),
                    *a = randt(&rng, dt, 1, &C, 0.5, 2, true);
          ad_tensor *b = randt(&rng, dt, 1, &C, -1, 1, true);
          cr_assert_eq(ad_set_num_threads(th ? 3 : 1), AD_OK);
          ad_tensor *in[4] = {x, m, a, b};
          ad_tensor *y = ad_op_apply(ctx, op, hasb ? 4 : 3, in, NULL);
          ad_tensor *r =
              ad_mul(ctx, ad_sub(ctx, x, ad_reshape(ctx, m, nd, pc)), ad_reshape(ctx, a, nd, pc));
          if (hasb) r = ad_add(ctx, r, ad_reshape(ctx, b, nd, pc));
          cr_assert(y && r, "%s", ad_last_error(ctx));
          cr_assert_eq(y->size, r->size);
          for (int64_t i = 0; i < y->size; i++) {
            double u = ad_tensor_get(y, i), v = ad_tensor_get(r, i);
            QUICK_ASSERT(memcmp(&u, &v, sizeof u) == 0,
                         "%s case %d b %d: y[%lld] %.17g, want %.17g", ad_dtype_name(dt), si, hasb,
                         (long long)i, u, v);
          }
          ad_tensor *dy = randt(&rng, dt, nd, shapes[si], -1, 1, false), *g1[4], *g2[4];
          int n = hasb ? 4 : 3;
          cr_assert_eq(ad_grad(ctx, y, dy, n, in, g1, false), AD_OK, "%s", ad_last_error(ctx));
          cr_assert_eq(ad_grad(ctx, r, dy, n, in, g2, false), AD_OK, "%s", ad_last_error(ctx));
          for (int k = 0; k < n; k++)
            for (int64_t i = 0; i < g1[k]->size; i++) {
              double u = ad_tensor_get(g1[k], i), v = ad_tensor_get(g2[k], i);
              QUICK_ASSERT(fabs(u - v) <= (d ? 1e-12 : 1e-4) * (1 + fabs(v)),
                           "%s case %d b %d: gradient %d [%lld] %.17g, composition %.17g",
                           ad_dtype_name(dt), si, hasb, k, (long long)i, u, v);
            }
          ad_set_num_threads(1);
          ad_tape_reset(ctx);
          ad_tensor *all[5] = {x, m, a, b, dy};
          for (int k = 0; k < 5; k++) ad_tensor_free(all[k]);
        }
}

/* channel_affine refuses vectors of another length, rank or dtype and an
 * x of one dim, naming the op. */
Test(norm, channel_affine_bad_input) {
  int64_t xs[3] = {2, 3, 4}, c3 = 3, c4 = 4, one = 6;
  ad_tensor *x = ad_zeros(ctx, AD_F32, 3, xs), *v3 = ad_zeros(ctx, AD_F32, 1, &c3);
  ad_tensor *v4 = ad_zeros(ctx, AD_F32, 1, &c4), *d3 = ad_zeros(ctx, AD_F64, 1, &c3);
  ad_tensor *x1 = ad_zeros(ctx, AD_F32, 1, &one);
  int op = ad_op_find(ctx, "channel_affine");
  ad_tensor *bad_len[3] = {x, v3, v4}, *bad_dt[3] = {x, d3, v3}, *bad_x[3] = {x1, v3, v3};
  cr_assert_null(ad_op_apply(ctx, op, 3, bad_len, NULL));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_SHAPE);
  cr_assert(strstr(ad_last_error(ctx), "channel_affine: a [4] must be [C] for x [2,3,4]"), "%s",
            ad_last_error(ctx));
  cr_assert_null(ad_op_apply(ctx, op, 3, bad_dt, NULL));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_DTYPE);
  cr_assert_null(ad_op_apply(ctx, op, 3, bad_x, NULL));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_SHAPE);
  ad_tensor *all[5] = {x, v3, v4, d3, x1};
  for (int k = 0; k < 5; k++) ad_tensor_free(all[k]);
}

/* An empty batch in training mode, as PyTorch: an empty y, zero gradients
 * for weight and bias, running statistics untouched (no error). */
Test(norm, batch_norm_empty_batch_in_training) {
  int64_t s[3] = {0, 3, 2}, sc[1] = {3};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 3, s), *w = ad_full(ctx, AD_F64, 1, sc, 2.0);
  ad_tensor *b = ad_full(ctx, AD_F64, 1, sc, 0.5), *rm = ad_full(ctx, AD_F64, 1, sc, 0.25);
  ad_tensor *rv = ad_full(ctx, AD_F64, 1, sc, 4.0);
  ad_tensor_set_requires_grad(w, true), ad_tensor_set_requires_grad(b, true);
  ad_tensor *y = ad_batch_norm(ctx, x, w, b, rm, rv, true, 0.1, 1e-5);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->ndim, 3);
  cr_assert(y->shape[0] == 0 && y->shape[1] == 3 && y->shape[2] == 2 && y->size == 0);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  for (int64_t c = 0; c < 3; c++) {
    cr_assert_eq(ad_tensor_get(rm, c), 0.25);
    cr_assert_eq(ad_tensor_get(rv, c), 4.0);
    cr_assert_eq(w->grad ? ad_tensor_get(w->grad, c) : 0.0, 0.0);
    cr_assert_eq(b->grad ? ad_tensor_get(b->grad, c) : 0.0, 0.0);
  }
  ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(b), ad_tensor_free(rm), ad_tensor_free(rv);
}

/* eps 0 and a channel of equal values (variance 0) in training mode: as
 * PyTorch (whose 1 / sqrt(var + eps) is 0 there), that channel's y is its
 * bias, x and weight get gradient 0 and bias the sum of dy; not NaN. The
 * other channel is normalised as usual. */
Test(norm, batch_norm_eps0_constant_channel_gives_the_bias) {
  int64_t s[2] = {3, 2}, sc[1] = {2};
  double xv[6] = {1.5, 1, 1.5, 2, 1.5, 4}, dyv[6] = {0.5, -1, 2, 0.25, -0.75, 1};
  ad_tensor *x = ad_from_data(ctx, AD_F64, 2, s, xv), *dy = ad_from_data(ctx, AD_F64, 2, s, dyv);
  ad_tensor *w = ad_full(ctx, AD_F64, 1, sc, 2.0), *b = ad_full(ctx, AD_F64, 1, sc, 0.5);
  ad_tensor *rm = ad_zeros(ctx, AD_F64, 1, sc), *rv = ad_ones(ctx, AD_F64, 1, sc);
  ad_tensor_set_requires_grad(x, true), ad_tensor_set_requires_grad(w, true);
  ad_tensor_set_requires_grad(b, true);
  ad_tensor *y = ad_batch_norm(ctx, x, w, b, rm, rv, true, 0.1, 0.0);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, y, dy), AD_OK, "%s", ad_last_error(ctx));
  /* channel 1: mean 7/3, biased variance 14/9 */
  double m1 = 7.0 / 3, is1 = 1 / sqrt(14.0 / 9);
  for (int n = 0; n < 3; n++) {
    cr_assert_eq(ad_tensor_get(y, 2 * n), 0.5, "y[%d,0] = %g", n, ad_tensor_get(y, 2 * n));
    cr_assert_float_eq(ad_tensor_get(y, 2 * n + 1), (xv[2 * n + 1] - m1) * is1 * 2 + 0.5, 1e-12);
    cr_assert_eq(ad_tensor_get(x->grad, 2 * n), 0.0);
    cr_assert(isfinite(ad_tensor_get(x->grad, 2 * n + 1)));
  }
  cr_assert_eq(ad_tensor_get(w->grad, 0), 0.0);
  cr_assert_float_eq(ad_tensor_get(b->grad, 0), 0.5 + 2 - 0.75, 1e-12);
  cr_assert_float_eq(ad_tensor_get(rv, 0), 0.9, 1e-12); /* 0.9 * 1 + 0.1 * 0 */
  cr_assert_float_eq(ad_tensor_get(rm, 0), 0.15, 1e-12);
  ad_tensor_free(x), ad_tensor_free(dy), ad_tensor_free(w), ad_tensor_free(b);
  ad_tensor_free(rm), ad_tensor_free(rv);
}

/* Training mode's plain backward (loops over the channels or down the
 * columns, dx, dw, db at once) against its recorded form under
 * create_graph (made of ops, float64) and against the definition here: x
 * [N, C] with C over one block of columns, [N, C, 20] (runs of 20) and
 * [N, C, 3]; float64 and float32; a weight and bias, a weight only, none;
 * eps 0 with one channel of equal values (its dx and dw 0, db the sum of
 * dy), and the running statistics the forward updates. */
static void check_plain_backward(ad_dtype dt, int nd, const int64_t *shape, int affine) {
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  int64_t C = shape[1], sc[1] = {C};
  ad_tensor *x = randt(&rng, dt, nd, shape, -2, 2, true),
            *dy = randt(&rng, dt, nd, shape, -1, 1, false);
  int64_t N = shape[0], S = x->size / (N * C), M = N * S;
  for (int64_t n = 0; n < N; n++) /* channel 1: all 0.75, so var 0 */
    for (int64_t i = 0; i < S; i++) ad_tensor_set(x, (n * C + 1) * S + i, 0.75);
  ad_tensor *w = affine > 0 ? randt(&rng, dt, 1, sc, 0.5, 1.5, true) : NULL;
  ad_tensor *b = affine > 1 ? randt(&rng, dt, 1, sc, -1, 1, true) : NULL;
  ad_tensor *rm = ad_zeros(ctx, dt, 1, sc), *rv = ad_ones(ctx, dt, 1, sc);
  ad_tensor *in[3] = {x, w, b}, *plain[3] = {0}, *rec[3] = {0};
  int n = 1 + (w != NULL) + (b != NULL);
  ad_tensor *y = ad_batch_norm(ctx, x, w, b, rm, rv, true, 0.25, 0.0);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_grad(ctx, y, dy, n, in, plain, false), AD_OK, "%s", ad_last_error(ctx));
  y = ad_batch_norm(ctx, x, w, b, NULL, NULL, true, 0.25, 0.0);
  cr_assert_eq(ad_grad(ctx, y, dy, n, in, rec, true), AD_OK, "%s", ad_last_error(ctx));
  double tol = dt == AD_F64 ? 1e-12 : 2e-6;
  for (int64_t c = 0; c < C; c++) {
    double mu = 0, var = 0, sg = 0, sgx = 0;
    for (int64_t k = 0; k < M; k++) mu += ad_tensor_get(x, (k / S * C + c) * S + k % S);
    mu /= (double)M;
    for (int64_t k = 0; k < M; k++) {
      int64_t i = (k / S * C + c) * S + k % S;
      double d = ad_tensor_get(x, i) - mu, g = ad_tensor_get(dy, i);
      var += d * d, sg += g, sgx += g * d;
    }
    var /= (double)M;
    double s = c == 1 ? 0 : 1 / sqrt(var), wc = w ? ad_tensor_get(w, c) : 1;
    cr_assert_float_eq(ad_tensor_get(rm, c), 0.25 * mu, 1e-6, "running_mean[%lld]", (long long)c);
    cr_assert_float_eq(ad_tensor_get(rv, c), 0.75 + 0.25 * var * (double)M / (double)(M - 1), 1e-5,
                       "running_var[%lld]", (long long)c);
    for (int64_t k = 0; k < M; k++) {
      int64_t i = (k / S * C + c) * S + k % S;
      double xh = (ad_tensor_get(x, i) - mu) * s;
      double want = s * wc * (ad_tensor_get(dy, i) - sg / (double)M - xh * sgx * s / (double)M);
      double got = ad_tensor_get(plain[0], i);
      cr_assert(fabs(got - want) <= tol * (1 + fabs(want)), "dx[%lld]: %.17g, want %.17g",
                (long long)i, got, want);
      cr_assert(fabs(ad_tensor_get(rec[0], i) - got) <= tol * (1 + fabs(want)),
                "dx[%lld]: recorded %.17g, plain %.17g", (long long)i, ad_tensor_get(rec[0], i),
                got);
      if (c == 1) cr_assert_eq(got, 0.0, "dx[%lld] of the constant channel: %g", (long long)i, got);
    }
    if (w) {
      double got = ad_tensor_get(plain[1], c), want = sgx * s;
      cr_assert(fabs(got - want) <= tol * (1 + fabs(want)) * 10, "dw[%lld]: %.17g, want %.17g",
                (long long)c, got, want);
      cr_assert(fabs(ad_tensor_get(rec[1], c) - got) <= tol * (1 + fabs(want)) * 10);
    }
    if (b) {
      double got = ad_tensor_get(plain[2], c);
      cr_assert(fabs(got - sg) <= tol * (1 + fabs(sg)) * 10, "db[%lld]: %.17g, want %.17g",
                (long long)c, got, sg);
      cr_assert(fabs(ad_tensor_get(rec[2], c) - got) <= tol * (1 + fabs(sg)) * 10);
    }
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x), ad_tensor_free(dy), ad_tensor_free(w), ad_tensor_free(b);
  ad_tensor_free(rm), ad_tensor_free(rv);
}

Test(norm, batch_norm_plain_backward_matches_its_definition) {
  int64_t cols[2] = {9, 70}, runs[3] = {3, 4, 20}, short_runs[3] = {5, 6, 3};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    for (int affine = 0; affine < 3; affine++) {
      check_plain_backward(dt, 2, cols, affine);
      check_plain_backward(dt, 3, runs, affine);
      check_plain_backward(dt, 3, short_runs, affine);
    }
  }
}

Test(norm, batch_norm_bad_input) {
  int64_t s[4] = {2, 3, 2, 2}, sc[1] = {3}, s4[1] = {4}, one[4] = {1, 3, 1, 1}, v[1] = {5};
  ad_tensor *x = ad_ones(ctx, AD_F32, 4, s), *w = ad_ones(ctx, AD_F32, 1, sc);
  ad_tensor *w4 = ad_ones(ctx, AD_F32, 1, s4), *w64 = ad_ones(ctx, AD_F64, 1, sc);
  ad_tensor *x1 = ad_ones(ctx, AD_F32, 4, one), *vec = ad_ones(ctx, AD_F32, 1, v);
  cr_assert_null(ad_batch_norm(ctx, x, w4, NULL, NULL, NULL, true, 0.1, 1e-5));
  expect_error(AD_ERR_SHAPE, "batch_norm: weight [4] does not match the 3 channels of x [2,3,2,2]",
               NULL);
  cr_assert_null(ad_batch_norm(ctx, x, w64, NULL, NULL, NULL, true, 0.1, 1e-5));
  expect_error(AD_ERR_DTYPE, "batch_norm: weight is f64, x is f32", NULL);
  cr_assert_null(ad_batch_norm(ctx, x1, w, NULL, NULL, NULL, true, 0.1, 1e-5));
  expect_error(AD_ERR_SHAPE, "has 1 value(s) per channel; training needs more than 1", NULL);
  cr_assert_null(ad_batch_norm(ctx, vec, NULL, NULL, NULL, NULL, true, 0.1, 1e-5));
  expect_error(AD_ERR_SHAPE, "batch_norm: x [5] f32 must be float with at least 2 dims", NULL);
  cr_assert_null(ad_batch_norm(ctx, x, NULL, NULL, NULL, NULL, false, 0.1, 1e-5));
  expect_error(AD_ERR_ARG, "evaluation mode needs the running statistics", NULL);
  cr_assert_null(ad_batch_norm(ctx, x, NULL, NULL, w, NULL, true, 0.1, 1e-5));
  expect_error(AD_ERR_ARG, "both running statistics or neither", NULL);
  cr_assert_null(ad_batch_norm(ctx, x, NULL, NULL, NULL, NULL, true, 1.5, 1e-5));
  expect_error(AD_ERR_ARG, "momentum 1.5", NULL);
  cr_assert_null(ad_batch_norm(ctx, x, NULL, NULL, NULL, NULL, true, 0.1, NAN));
  expect_error(AD_ERR_ARG, "eps nan", NULL);
  cr_assert_null(ad_batch_norm(ctx, NULL, NULL, NULL, NULL, NULL, true, 0.1, 1e-5));
  expect_error(AD_ERR_NULL, "batch_norm: x is NULL", NULL);
  ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(w4), ad_tensor_free(w64);
  ad_tensor_free(x1), ad_tensor_free(vec);
}

/* The running statistics are written in place, outside the tape, so
 * ad_op_apply's checks never see them in training mode: batch_norm checks
 * them itself. Another context's tensors were updated, and a temporary
 * from a reset tape wrote into whatever tensor had its memory since. */
Test(norm, running_statistics_must_be_buffers_of_this_context) {
  int64_t s[2] = {4, 3}, sc[1] = {3};
  ad_tensor *x = ad_full(ctx, AD_F32, 2, s, 1.0), *w = ad_ones(ctx, AD_F32, 1, sc);
  for (int64_t i = 0; i < x->size; i++) ad_tensor_set(x, i, (double)(i % 5));
  ad_ctx *other = ad_ctx_new();
  cr_assert_not_null(other);
  ad_tensor *om = ad_zeros(other, AD_F32, 1, sc), *ov = ad_ones(other, AD_F32, 1, sc);
  cr_assert_null(ad_batch_norm(ctx, x, NULL, NULL, om, ov, true, 0.1, 1e-5));
  expect_error(AD_ERR_ARG, "batch_norm: running_mean belongs to another context", NULL);
  for (int64_t c = 0; c < 3; c++) cr_assert_eq(ad_tensor_get(om, c), 0.0, "changed");

  /* temporaries of a tape that was reset; their memory now holds victim */
  ad_tensor *base = ad_zeros(ctx, AD_F32, 1, sc);
  ad_tensor *rm = ad_add_scalar(ctx, base, 0), *rv = ad_add_scalar(ctx, base, 1);
  cr_assert(rm && rv, "%s", ad_last_error(ctx));
  ad_tape_reset(ctx);
  ad_tensor *victim = ad_add_scalar(ctx, base, 7.0);
  cr_assert_not_null(victim, "%s", ad_last_error(ctx));
  cr_assert_null(ad_batch_norm(ctx, x, NULL, NULL, rm, rv, true, 0.5, 1e-5));
  /* rm's header may be victim's now (a current temporary: not a buffer) */
  ad_status st = ad_last_status(ctx);
  cr_assert(st == AD_ERR_STATE || st == AD_ERR_ARG, "%s", ad_last_error(ctx));
  expect_error(st, "batch_norm: running_mean", NULL);
  for (int64_t c = 0; c < 3; c++) cr_assert_eq(ad_tensor_get(victim, c), 7.0, "victim written");

  /* a temporary of this tape: training refuses it, evaluation reads it */
  ad_tensor *tm = ad_add_scalar(ctx, base, 0), *tv = ad_add_scalar(ctx, base, 1);
  cr_assert_null(ad_batch_norm(ctx, x, NULL, NULL, tm, tv, true, 0.1, 1e-5));
  expect_error(AD_ERR_ARG, "running_mean is updated in place in training mode",
               "must be a persistent tensor", NULL);
  cr_assert(ad_batch_norm(ctx, x, NULL, NULL, tm, tv, false, 0.1, 1e-5), "%s", ad_last_error(ctx));

  /* one tensor in two roles */
  ad_tensor *pm = ad_zeros(ctx, AD_F32, 1, sc), *pv = ad_ones(ctx, AD_F32, 1, sc);
  cr_assert_null(ad_batch_norm(ctx, x, w, NULL, w, pv, true, 0.1, 1e-5));
  expect_error(AD_ERR_ARG, "must be two tensors other than x, weight and bias", NULL);
  cr_assert_null(ad_batch_norm(ctx, x, NULL, NULL, pm, pm, true, 0.1, 1e-5));
  expect_error(AD_ERR_ARG, "must be two tensors other than x, weight and bias", NULL);
  cr_assert_eq(ad_tensor_get(w, 0), 1.0, "weight changed");
  cr_assert(ad_batch_norm(ctx, x, w, NULL, pm, pv, true, 0.1, 1e-5), "%s", ad_last_error(ctx));
  cr_assert_neq(ad_tensor_get(pm, 0), 0.0, "control: not updated");

  /* a freed x is named */
  ad_tensor *gone = ad_zeros(ctx, AD_F32, 2, s);
  ad_tensor_free(gone);
  cr_assert_null(ad_batch_norm(ctx, gone, NULL, NULL, NULL, NULL, true, 0.1, 1e-5));
  expect_error(AD_ERR_STATE, "batch_norm: x was freed", NULL);
  ad_tape_reset(ctx);
  ad_tensor_free(om), ad_tensor_free(ov), ad_ctx_free(other);
  ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(base), ad_tensor_free(pm),
      ad_tensor_free(pv);
}
