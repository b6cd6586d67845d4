/* test_nn_init.c: the initializers PyTorch has beyond the Xavier/He family
 * (test_nn_layers.c covers those): He with fan_out, orthogonal and the
 * truncated normal.
 *
 * Orthogonal is checked against its definition rather than stored numbers:
 * for the same standard normal draws T (transposed when wide), the result
 * must be Q with Q^T Q = I and R = Q^T T upper triangular with a positive
 * diagonal. That factorization is unique, and it is what PyTorch's
 * orthogonal_ computes from its own draws. The truncated normal is checked
 * against its distribution's moments and CDF. */
#include "nn.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

TEST_CTX_SUITE(init_ext);

/* ---------------------------------------------------------------- orthogonal */

/* Checks w (rows x cols after flattening, from an rng seeded with seed)
 * against the definition for gain; tol relative to 1. */
static void check_orthogonal(const ad_tensor *w, uint64_t seed, double gain, double tol) {
  int64_t rows = w->shape[0], cols = w->size / rows;
  bool wide = rows < cols;
  int64_t m = wide ? cols : rows, n = wide ? rows : cols;
  double *t = calloc((size_t)(m * n), sizeof *t), *q = calloc((size_t)(m * n), sizeof *q);
  cr_assert(t && q);
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      double draw = ad_rng_normal(&rng), v = ad_tensor_get(w, r * cols + c) / gain;
      /* T and Q as m x n, row-major */
      int64_t at = wide ? c * n + r : r * n + c;
      t[at] = draw, q[at] = v;
    }
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double qq = 0, r = 0;
      for (int64_t k = 0; k < m; k++)
        qq += q[k * n + i] * q[k * n + j], r += q[k * n + i] * t[k * n + j];
      cr_assert(fabs(qq - (i == j)) < tol, "%lldx%lld: (Q^T Q)[%lld][%lld] = %.17g",
                (long long)rows, (long long)cols, (long long)i, (long long)j, qq);
      if (i > j) /* R's entries are O(sqrt(m)) */
        cr_assert(fabs(r) < tol * sqrt((double)m) * 4,
                  "%lldx%lld: R[%lld][%lld] = %g below the diagonal", (long long)rows,
                  (long long)cols, (long long)i, (long long)j, r);
      if (i == j)
        cr_assert(r > 0, "%lldx%lld: R[%lld][%lld] = %g is not positive", (long long)rows,
                  (long long)cols, (long long)i, (long long)i, r);
    }
  free(t), free(q);
}

Test(init_ext, orthogonal_is_the_qr_factor_of_the_draws) {
  struct {
    int ndim;
    int64_t shape[3];
  } cases[] = {{2, {5, 3}},    {2, {3, 5}},    {2, {4, 4}},   {2, {1, 6}},  {2, {6, 1}},
               {3, {6, 2, 3}}, {3, {2, 3, 4}}, {2, {40, 17}}, {2, {17, 40}}};
  double gains[2] = {0, 2.5};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
    for (int dt = 0; dt < 2; dt++)
      for (int g = 0; g < 2; g++) {
        ad_tensor *w = ad_zeros(ctx, dt ? AD_F32 : AD_F64, cases[k].ndim, cases[k].shape);
        ad_rng rng, after;
        uint64_t seed = 100 + k;
        ad_rng_seed(&rng, seed);
        cr_assert_eq(nn_init_tensor(ctx, w, nn_init_make(NN_INIT_ORTHOGONAL, gains[g], 0), &rng),
                     AD_OK, "%s", ad_last_error(ctx));
        check_orthogonal(w, seed, gains[g] ? gains[g] : 1, dt ? 2e-6 : 1e-13);
        /* exactly one normal draw per element, as PyTorch's normal_ */
        ad_rng_seed(&after, seed);
        for (int64_t i = 0; i < w->size; i++) ad_rng_normal(&after);
        cr_assert_eq(ad_rng_next(&rng), ad_rng_next(&after));
        ad_tensor_free(w);
      }
}

Test(init_ext, orthogonal_edges_and_errors) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  int64_t s[2] = {0, 3}, v[1] = {4};
  ad_tensor *empty = ad_zeros(ctx, AD_F32, 2, s), *vec = ad_zeros(ctx, AD_F32, 1, v);
  cr_assert_eq(nn_init_tensor(ctx, empty, nn_init_make(NN_INIT_ORTHOGONAL, 0, 0), &rng), AD_OK);
  ad_rng fresh;
  ad_rng_seed(&fresh, 5);
  cr_assert_eq(ad_rng_next(&rng), ad_rng_next(&fresh), "an empty tensor draws nothing");
  cr_assert_eq(nn_init_tensor(ctx, vec, nn_init_make(NN_INIT_ORTHOGONAL, 0, 0), &rng),
               AD_ERR_SHAPE);
  test_expect_error(ctx, AD_ERR_SHAPE, "orthogonal needs 2 or more dimensions, got 1", NULL);
  int64_t s2[2] = {3, 3};
  ad_tensor *w = ad_zeros(ctx, AD_F64, 2, s2);
  cr_assert_eq(nn_init_tensor(ctx, w, nn_init_make(NN_INIT_ORTHOGONAL, 0, 0), NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "needs an rng", NULL);
  cr_assert_eq(nn_init_tensor(ctx, w, nn_init_make(NN_INIT_ORTHOGONAL, NAN, 0), &rng), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "gain nan is not finite", NULL);
  for (int64_t i = 0; i < 9; i++) cr_assert_eq(ad_tensor_get(w, i), 0, "errors leave w alone");
  ad_tensor_free(empty), ad_tensor_free(vec), ad_tensor_free(w);
}

Test(init_ext, orthogonal_out_of_memory_leaves_the_tensor) {
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  cr_assert_not_null(c);
  int64_t s[2] = {8, 6};
  ad_tensor *w = ad_zeros(c, AD_F64, 2, s);
  ad_rng rng, fresh;
  ad_rng_seed(&rng, 9), ad_rng_seed(&fresh, 9);
  test_alloc_refuse_after(&ta, 0);
  cr_assert_eq(nn_init_tensor(c, w, nn_init_make(NN_INIT_ORTHOGONAL, 0, 0), &rng), AD_ERR_OOM);
  test_alloc_grant_all(&ta);
  for (int64_t i = 0; i < w->size; i++) cr_assert_eq(ad_tensor_get(w, i), 0);
  cr_assert_eq(ad_rng_next(&rng), ad_rng_next(&fresh), "nothing drawn");
  ad_clear_error(c);
  /* w on the tape: its write must be noted, which may fail too; that
   * failure also leaves the generator alone, as the other kinds' do */
  ad_tensor_set_requires_grad(w, true);
  cr_assert_not_null(ad_sum(c, ad_mul(c, w, w)));
  ad_rng_seed(&rng, 9), ad_rng_seed(&fresh, 9);
  test_alloc_refuse_after(&ta, 1); /* the work memory granted, the note refused */
  cr_assert_eq(nn_init_tensor(c, w, nn_init_make(NN_INIT_ORTHOGONAL, 0, 0), &rng), AD_ERR_OOM);
  test_alloc_grant_all(&ta);
  test_expect_error(c, AD_ERR_OOM, "tensor_mark_modified", NULL);
  for (int64_t i = 0; i < w->size; i++) cr_assert_eq(ad_tensor_get(w, i), 0);
  cr_assert_eq(ad_rng_next(&rng), ad_rng_next(&fresh), "nothing drawn");
  ad_tape_reset(c);
  ad_rng_seed(&rng, 9);
  cr_assert_eq(nn_init_tensor(c, w, nn_init_make(NN_INIT_ORTHOGONAL, 0, 0), &rng), AD_OK);
  check_orthogonal(w, 9, 1, 1e-13);
  ad_tensor_free(w);
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0, "every block returned");
}

/* -------------------------------------------------------------- trunc normal */

static double phi(double x) { return exp(-x * x / 2) / sqrt(2 * 3.14159265358979323846); }
static double cdf(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

Test(init_ext, trunc_normal_has_the_truncated_distribution) {
  struct {
    double std, b, bound; /* b as given; bound as meant */
  } cases[] = {{1, 0, 2}, {1, 1, 1}, {0.5, 0.3, 0.3}, {0.02, 0, 2}, {3, 10, 10}, {1, 6, 6}};
  int64_t s[2] = {300, 500};
  const double n = 150000;
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
    for (int dt = 0; dt < 2; dt++) {
      ad_tensor *t = ad_zeros(ctx, dt ? AD_F32 : AD_F64, 2, s);
      ad_rng rng;
      ad_rng_seed(&rng, 7 + k);
      cr_assert_eq(nn_init_tensor(
                       ctx, t, nn_init_make(NN_INIT_TRUNC_NORMAL, cases[k].std, cases[k].b), &rng),
                   AD_OK, "%s", ad_last_error(ctx));
      double sd = cases[k].std, c = cases[k].bound / sd, z = 2 * cdf(c) - 1;
      double var = sd * sd * (1 - 2 * c * phi(c) / z); /* of the truncated normal */
      double sum = 0, sum2 = 0, lo = INFINITY, hi = -INFINITY, within = 0;
      for (int64_t i = 0; i < t->size; i++) {
        double x = ad_tensor_get(t, i);
        sum += x, sum2 += x * x;
        lo = fmin(lo, x), hi = fmax(hi, x);
        within += fabs(x) <= 0.5 * cases[k].bound;
      }
      double mean = sum / n, v = sum2 / n - mean * mean;
      double bound = dt ? (double)(float)cases[k].bound : cases[k].bound;
      cr_assert(lo >= -bound && hi <= bound, "case %zu: [%g, %g] beyond %g", k, lo, hi, bound);
      cr_assert(fabs(mean) < 5 * sqrt(var / n), "case %zu: mean %g", k, mean);
      cr_assert(fabs(v / var - 1) < 0.015, "case %zu: var %g, want %g", k, v, var);
      /* P(|x| <= bound / 2), binomial error */
      double p = (2 * cdf(c / 2) - 1) / z;
      cr_assert(fabs(within / n - p) < 5 * sqrt(p * (1 - p) / n) + 1e-12,
                "case %zu: P(|x| <= b/2) %g, want %g", k, within / n, p);
      if (c < 3) cr_assert(hi > 0.99 * bound && lo < -0.99 * bound, "case %zu: range used", k);
      ad_tensor_free(t);
    }
}

/* A std far above the bounds: the truncated normal is then uniform on
 * [-b, b] (mean 0, variance b^2 / 3), with as many distinct values as
 * draws, not the handful that u = 1/2 + tiny rounds to. */
static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

Test(init_ext, trunc_normal_much_wider_than_its_bounds_is_uniform) {
  const double stds[] = {1e14, 1e17};
  int64_t s[1] = {20000};
  const double n = 20000;
  for (size_t k = 0; k < sizeof stds / sizeof stds[0]; k++) {
    ad_tensor *t = ad_zeros(ctx, AD_F64, 1, s);
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    cr_assert_eq(nn_init_tensor(ctx, t, nn_init_make(NN_INIT_TRUNC_NORMAL, stds[k], 1), &rng),
                 AD_OK, "%s", ad_last_error(ctx));
    double *v = t->data, sum = 0, sum2 = 0;
    for (int64_t i = 0; i < t->size; i++) {
      cr_assert(fabs(v[i]) <= 1, "std %g: %g beyond the bound", stds[k], v[i]);
      sum += v[i], sum2 += v[i] * v[i];
    }
    double mean = sum / n, var = sum2 / n - mean * mean;
    cr_assert(fabs(mean) < 5 * sqrt(1.0 / 3 / n), "std %g: mean %g", stds[k], mean);
    cr_assert(fabs(var * 3 - 1) < 0.03, "std %g: var %g, want 1/3", stds[k], var);
    qsort(v, (size_t)t->size, sizeof *v, cmp_double);
    int64_t distinct = 1;
    for (int64_t i = 1; i < t->size; i++) distinct += v[i] != v[i - 1];
    cr_assert_gt(distinct, t->size - 10, "std %g: %lld distinct values of %lld", stds[k],
                 (long long)distinct, (long long)t->size);
    ad_tensor_free(t);
  }
}

Test(init_ext, trunc_normal_errors) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  int64_t s[1] = {4};
  ad_tensor *t = ad_zeros(ctx, AD_F64, 1, s);
  nn_init bad[] = {
      nn_init_make(NN_INIT_TRUNC_NORMAL, 0, 0),   nn_init_make(NN_INIT_TRUNC_NORMAL, -1, 0),
      nn_init_make(NN_INIT_TRUNC_NORMAL, NAN, 0), nn_init_make(NN_INIT_TRUNC_NORMAL, INFINITY, 0),
      nn_init_make(NN_INIT_TRUNC_NORMAL, 1, -1),  nn_init_make(NN_INIT_TRUNC_NORMAL, 1, INFINITY),
      nn_init_make(NN_INIT_TRUNC_NORMAL, 1, NAN)};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    cr_assert_eq(nn_init_tensor(ctx, t, bad[k], &rng), AD_ERR_ARG, "case %zu", k);
    test_expect_error(ctx, AD_ERR_ARG, "trunc_normal needs a finite std > 0", NULL);
  }
  cr_assert_eq(nn_init_tensor(ctx, t, nn_init_make(NN_INIT_TRUNC_NORMAL, 1, 0), NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "needs an rng", NULL);
  for (int64_t i = 0; i < 4; i++) cr_assert_eq(ad_tensor_get(t, i), 0);
  ad_tensor_free(t);
}

/* ------------------------------------------------------------ He, fan_out */

Test(init_ext, he_fan_out_uses_the_output_fan) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t s[4] = {60, 20, 5, 5}; /* fan_in 500, fan_out 1500: 60,000 draws */
  ad_tensor *t = ad_zeros(ctx, AD_F64, 4, s);
  struct {
    nn_init init;
    double var, bound;
  } cases[] = {{nn_init_make(NN_INIT_HE_NORMAL_FAN_OUT, 0, 0), 2.0 / 1500, 0},
               {nn_init_make(NN_INIT_HE_UNIFORM_FAN_OUT, 0, 0), 2.0 / 1500, sqrt(6.0 / 1500)},
               {nn_init_make(NN_INIT_HE_UNIFORM_FAN_OUT, 1, 0), 1.0 / 1500, sqrt(3.0 / 1500)},
               {nn_init_make(NN_INIT_HE_NORMAL, 0, 0), 2.0 / 500, 0}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    cr_assert_eq(nn_init_tensor(ctx, t, cases[k].init, &rng), AD_OK);
    double sum = 0, sum2 = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < t->size; i++) {
      double x = ad_tensor_get(t, i);
      sum += x, sum2 += x * x, lo = fmin(lo, x), hi = fmax(hi, x);
    }
    double var = sum2 / t->size - (sum / t->size) * (sum / t->size);
    /* 60,000 draws: the sample variance is within 2.5% */
    cr_assert(fabs(var / cases[k].var - 1) < 0.025, "case %zu: var %g, want %g", k, var,
              cases[k].var);
    if (cases[k].bound > 0)
      cr_assert(lo >= -cases[k].bound && hi < cases[k].bound && hi > 0.99 * cases[k].bound,
                "case %zu: [%g, %g]", k, lo, hi);
  }
  int64_t s0[2] = {0, 4};
  ad_tensor *none = ad_zeros(ctx, AD_F64, 2, s0);
  cr_assert_eq(nn_init_tensor(ctx, none, nn_init_make(NN_INIT_HE_NORMAL_FAN_OUT, 0, 0), &rng),
               AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "he needs fan_out > 0", NULL);
  ad_tensor_free(t), ad_tensor_free(none);
}

/* ------------------------------------------------------------- bad tensors */

/* A temporary of a tape that was reset, a tensor of another context and a
 * freed one are refused as every op refuses them, naming the problem,
 * and nothing is written or drawn; init wrote into the first two. */
Test(init_ext, stale_freed_and_foreign_tensors_are_refused) {
  ad_rng rng, before;
  ad_rng_seed(&rng, 1);
  int64_t s[2] = {2, 4};
  ad_tensor *x = ad_full(ctx, AD_F32, 2, s, 2.0);
  ad_tensor *stale = ad_mul(ctx, x, x);
  cr_assert_not_null(stale, "%s", ad_last_error(ctx));
  ad_tape_reset(ctx);
  nn_init kinds[3] = {nn_init_make(NN_INIT_CONSTANT, 7, 0),
                      nn_init_make(NN_INIT_TRUNC_NORMAL, 1, 0),
                      nn_init_make(NN_INIT_ORTHOGONAL, 1, 0)};
  ad_ctx *other = ad_ctx_new();
  ad_tensor *o = ad_zeros(other, AD_F32, 2, s);
  for (int k = 0; k < 3; k++) {
    before = rng;
    ad_status st = nn_init_tensor(ctx, stale, kinds[k], &rng);
    cr_assert_eq(st, AD_ERR_STATE, "kind %d: %s %s", k, ad_status_str(st), ad_last_error(ctx));
    test_expect_error(ctx, AD_ERR_STATE, "init: tensor is from a tape that was reset", NULL);
    st = nn_init_tensor(ctx, o, kinds[k], &rng);
    cr_assert_eq(st, AD_ERR_ARG, "kind %d: %s %s", k, ad_status_str(st), ad_last_error(ctx));
    test_expect_error(ctx, AD_ERR_ARG, "init: tensor belongs to another context", NULL);
    cr_assert(memcmp(&before, &rng, sizeof rng) == 0, "kind %d drew", k);
    for (int64_t i = 0; i < o->size; i++) cr_assert_eq(ad_tensor_get(o, i), 0, "kind %d", k);
  }
  ad_ctx_free(other);
  ad_tensor *f = ad_zeros(ctx, AD_F32, 2, s);
  ad_tensor_free(f);
  cr_assert_eq(nn_init_tensor(ctx, f, kinds[0], &rng), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "init: tensor was freed", NULL);
  ad_tensor_free(x);
}

/* ------------------------------------------------------- uniform's bound */

/* U[a, b) in float32: a draw within 2^-25 (b - a) of b rounded onto b
 * (seed 1's draw 395951 is such a one: 0 + 1 x became 1, -3 + 6 x 3),
 * which U[a, b) excludes, as ad_rand and PyTorch's uniform_ do. Such a
 * value is now the largest float below b, as ad_rand's. */
Test(init_ext, uniform_float32_stays_below_its_upper_bound) {
  ad_rng probe, rng;
  ad_rng_seed(&probe, 1);
  rng = probe;
  int64_t k = 0;
  while (ad_rng_uniform(&probe) <= 1 - 0x1p-25) k++;
  cr_assert_eq(k, 395951, "the draw moved: %lld", (long long)k);
  for (int64_t i = 0; i < k; i++) ad_rng_uniform(&rng);
  int64_t one = 1;
  ad_tensor *t = ad_zeros(ctx, AD_F32, 1, &one);
  static const double lo[2] = {0, -3}, hi[2] = {1, 3};
  for (int c = 0; c < 2; c++) {
    ad_rng r = rng, q = rng;
    cr_assert_eq(nn_init_tensor(ctx, t, nn_init_make(NN_INIT_UNIFORM, lo[c], hi[c]), &r), AD_OK);
    double v = ad_tensor_get(t, 0);
    cr_assert(v < hi[c], "U[%g, %g): %.9g", lo[c], hi[c], v);
    cr_assert_eq(v, (double)nextafterf((float)hi[c], 0), "U[%g, %g): %.9g", lo[c], hi[c], v);
    ad_tensor *a = ad_rand(ctx, &q, AD_F32, 1, &one, lo[c], hi[c]);
    cr_assert_eq(ad_tensor_get(a, 0), v, "ad_rand %.9g", ad_tensor_get(a, 0));
    ad_tensor_free(a);
  }
  ad_tensor_free(t);
}

/* A negative Xavier or He gain: PyTorch's xavier_uniform_(gain=-2) refuses
 * its bounds ("from=1.85 > to=-1.85") and xavier_normal_ its std < 0;
 * here the draws were taken from the flipped range (or times a negative
 * std) and written. Now AD_ERR_ARG naming the gain, the tensor and the
 * generator untouched. */
Test(init_ext, negative_xavier_and_he_gains_are_refused) {
  static const nn_init_kind kinds[6] = {NN_INIT_XAVIER_UNIFORM,     NN_INIT_XAVIER_NORMAL,
                                        NN_INIT_HE_UNIFORM,         NN_INIT_HE_NORMAL,
                                        NN_INIT_HE_UNIFORM_FAN_OUT, NN_INIT_HE_NORMAL_FAN_OUT};
  int64_t s[2] = {3, 4};
  ad_tensor *t = ad_zeros(ctx, AD_F64, 2, s);
  ad_rng rng, before;
  ad_rng_seed(&rng, 5);
  for (int k = 0; k < 6; k++) {
    before = rng;
    cr_assert_eq(nn_init_tensor(ctx, t, nn_init_make(kinds[k], -2, 0), &rng), AD_ERR_ARG, "kind %d",
                 (int)kinds[k]);
    test_expect_error(ctx, AD_ERR_ARG, "init: gain -2 must be positive and finite", NULL);
    cr_assert(memcmp(&before, &rng, sizeof rng) == 0);
    for (int64_t i = 0; i < t->size; i++) cr_assert_eq(ad_tensor_get(t, i), 0);
    cr_assert_eq(nn_init_tensor(ctx, t, nn_init_make(kinds[k], 2, 0), &rng), AD_OK);
    ad_tensor_fill(t, 0);
  }
  ad_tensor_free(t);
}

/* Numbers beyond float32's range for a float32 tensor: PyTorch refuses to
 * convert a constant ("value cannot be converted to type float without
 * overflow"), a uniform bound, Xavier's uniform bound and a trunc_normal
 * bound ("from is out of bounds for float"); they filled the tensor with
 * infinities (or, for uniform, values that became infinite). Now
 * AD_ERR_ARG naming the number, the tensor untouched; a float64 tensor
 * takes them, and a normal's huge std stays allowed, as in PyTorch. */
Test(init_ext, float32_numbers_beyond_its_range_are_refused) {
  int64_t s[2] = {2, 3};
  ad_tensor *t = ad_zeros(ctx, AD_F32, 2, s), *d = ad_zeros(ctx, AD_F64, 2, s);
  ad_rng rng;
  ad_rng_seed(&rng, 2);
  static const struct {
    nn_init init;
    const char *msg;
  } bad[] = {
      {{NN_INIT_CONSTANT, 1e300, 0}, "init: constant 1e+300 is outside float32's range"},
      {{NN_INIT_UNIFORM, -1e300, 1}, "init: uniform bound -1e+300 is outside float32's range"},
      {{NN_INIT_UNIFORM, 0, 4e38}, "init: uniform bound 4e+38 is outside float32's range"},
      {{NN_INIT_XAVIER_UNIFORM, 1e300, 0}, "init: xavier bound 1.09544512e+300 is outside"},
      {{NN_INIT_HE_UNIFORM_FAN_OUT, 1e300, 0}, "init: he bound 1.22474487e+300 is outside"},
      {{NN_INIT_TRUNC_NORMAL, 1, 1e39}, "init: trunc_normal bound 1e+39 is outside float32's"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    cr_assert_eq(nn_init_tensor(ctx, t, bad[k].init, &rng), AD_ERR_ARG, "case %zu", k);
    test_expect_error(ctx, AD_ERR_ARG, bad[k].msg, NULL);
    for (int64_t i = 0; i < t->size; i++) cr_assert_eq(ad_tensor_get(t, i), 0, "case %zu", k);
    cr_assert_eq(nn_init_tensor(ctx, d, bad[k].init, &rng), AD_OK, "case %zu f64: %s", k,
                 ad_last_error(ctx));
  }
  cr_assert_eq(nn_init_tensor(ctx, t, nn_init_make(NN_INIT_UNIFORM, -3.4e38, 3.4e38), &rng), AD_OK);
  cr_assert_eq(nn_init_tensor(ctx, t, nn_init_make(NN_INIT_NORMAL, 0, 1e300), &rng), AD_OK);
  ad_tensor_free(t), ad_tensor_free(d);
}
