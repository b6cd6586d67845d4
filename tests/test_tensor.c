/* test_tensor.c: constructors, element access, views, printing, names and
 * the RNG of the autodiff core. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* MADV_HUGEPAGE, MAP_ANONYMOUS of <sys/mman.h> */
#endif
#include "kernels/kernels.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

TEST_CTX_SUITE(tensor);

/* Asserts every element of t equals want[i] within tol. */
static void assert_values(const ad_tensor *t, const double *want, int64_t n, double tol) {
  cr_assert_not_null(t);
  cr_assert_eq(t->size, n, "size %lld, expected %lld", (long long)t->size, (long long)n);
  for (int64_t i = 0; i < n; i++)
    cr_assert(fabs(ad_tensor_get(t, i) - want[i]) <= tol, "element %lld: got %.17g, want %.17g",
              (long long)i, ad_tensor_get(t, i), want[i]);
}

/* ---------------------------------------------------------- constructors */

Test(tensor, zeros_ones_full) {
  int64_t s[3] = {2, 3, 4};
  ad_tensor *z = ad_zeros(ctx, AD_F32, 3, s);
  ad_tensor *o = ad_ones(ctx, AD_F64, 3, s);
  ad_tensor *f = ad_full(ctx, AD_I32, 3, s, 7.9);
  cr_assert(z && o && f);
  cr_assert_eq(z->ndim, 3);
  cr_assert_eq(z->size, 24);
  cr_assert_eq(z->shape[0], 2);
  cr_assert_eq(z->shape[1], 3);
  cr_assert_eq(z->shape[2], 4);
  cr_assert_eq(z->dtype, AD_F32);
  cr_assert_eq(o->dtype, AD_F64);
  cr_assert_eq(f->dtype, AD_I32);
  cr_assert_null(z->grad);
  cr_assert(!ad_tensor_requires_grad(z));
  cr_assert(!ad_tensor_is_temporary(z));
  for (int64_t i = 0; i < 24; i++) {
    cr_assert_eq(((float *)z->data)[i], 0.0f);
    cr_assert_eq(((double *)o->data)[i], 1.0);
    cr_assert_eq(((int32_t *)f->data)[i], 7); /* truncated toward zero */
  }
  ad_tensor_free(z);
  ad_tensor_free(o);
  ad_tensor_free(f);
}

Test(tensor, data_is_aligned_for_vector_loads) {
  int64_t s[1] = {33};
  ad_tensor *t = ad_ones(ctx, AD_F32, 1, s);
  cr_assert_not_null(t);
  cr_assert_eq((uintptr_t)t->data % 64, 0);
  ad_tensor_free(t);
}

Test(tensor, scalar_and_empty_shapes) {
  ad_tensor *s = ad_full(ctx, AD_F64, 0, NULL, 3.25);
  cr_assert_not_null(s);
  cr_assert_eq(s->ndim, 0);
  cr_assert_eq(s->size, 1);
  cr_assert_eq(ad_tensor_item(s), 3.25);
  int64_t e[2] = {3, 0};
  ad_tensor *z = ad_zeros(ctx, AD_F32, 2, e);
  cr_assert_not_null(z);
  cr_assert_eq(z->size, 0);
  cr_assert_eq(z->shape[0], 3);
  cr_assert_eq(z->shape[1], 0);
  cr_assert(isnan(ad_tensor_item(z)));
  ad_tensor_free(s);
  ad_tensor_free(z);
}

Test(tensor, from_data_copies) {
  double src[6] = {1, -2, 3.5, 4, 5, -6.25};
  int64_t s[2] = {2, 3};
  ad_tensor *t = ad_from_data(ctx, AD_F64, 2, s, src);
  cr_assert_not_null(t);
  cr_assert_neq(t->data, (void *)src);
  src[0] = 100; /* the tensor owns a copy */
  double want[6] = {1, -2, 3.5, 4, 5, -6.25};
  assert_values(t, want, 6, 0);
  int32_t isrc[3] = {7, -8, 9};
  int64_t n = 3;
  ad_tensor *i = ad_from_data(ctx, AD_I32, 1, &n, isrc);
  cr_assert_not_null(i);
  cr_assert_eq(((int32_t *)i->data)[1], -8);
  ad_tensor *z = ad_from_data(ctx, AD_F32, 2, s, NULL); /* NULL: zeros */
  double zeros[6] = {0};
  assert_values(z, zeros, 6, 0);
  ad_tensor_free(t);
  ad_tensor_free(i);
  ad_tensor_free(z);
}

Test(tensor, arange_positive_step) {
  ad_tensor *t = ad_arange(ctx, AD_F64, 0, 5, 1);
  double want[5] = {0, 1, 2, 3, 4};
  assert_values(t, want, 5, 0);
  cr_assert_eq(t->ndim, 1);
  ad_tensor *f = ad_arange(ctx, AD_F32, 1, 2, 0.25);
  double wf[4] = {1, 1.25, 1.5, 1.75};
  assert_values(f, wf, 4, 0);
  ad_tensor *i = ad_arange(ctx, AD_I32, 2, 11, 3);
  double wi[3] = {2, 5, 8};
  assert_values(i, wi, 3, 0);
  cr_assert_eq(i->dtype, AD_I32);
  ad_tensor_free(t);
  ad_tensor_free(f);
  ad_tensor_free(i);
}

Test(tensor, arange_negative_step) {
  ad_tensor *t = ad_arange(ctx, AD_F64, 5, 0, -1.5);
  double want[4] = {5, 3.5, 2, 0.5};
  assert_values(t, want, 4, 0);
  ad_tensor *u = ad_arange(ctx, AD_F32, 3, -3, -2);
  double wu[3] = {3, 1, -1};
  assert_values(u, wu, 3, 0);
  ad_tensor_free(t);
  ad_tensor_free(u);
}

Test(tensor, arange_empty) {
  ad_tensor *a = ad_arange(ctx, AD_F64, 0, 0, 1);
  ad_tensor *b = ad_arange(ctx, AD_F64, 3, 1, 1);  /* wrong direction */
  ad_tensor *c = ad_arange(ctx, AD_F64, 1, 3, -1); /* wrong direction */
  cr_assert(a && b && c);
  cr_assert_eq(a->size, 0);
  cr_assert_eq(b->size, 0);
  cr_assert_eq(c->size, 0);
  cr_assert_eq(a->ndim, 1);
  cr_assert_eq(a->shape[0], 0);
  cr_assert_eq(ad_last_status(ctx), AD_OK);
  ad_tensor_free(a);
  ad_tensor_free(b);
  ad_tensor_free(c);
}

static void moments(const ad_tensor *t, double *mean, double *sd, double *lo, double *hi) {
  double s = 0, s2 = 0;
  *lo = INFINITY;
  *hi = -INFINITY;
  for (int64_t i = 0; i < t->size; i++) {
    double v = ad_tensor_get(t, i);
    s += v;
    s2 += v * v;
    if (v < *lo) *lo = v;
    if (v > *hi) *hi = v;
  }
  *mean = s / (double)t->size;
  *sd = sqrt(s2 / (double)t->size - *mean * *mean);
}

Test(tensor, rand_uniform_statistics) {
  ad_rng rng;
  ad_rng_seed(&rng, 42);
  int64_t n = 10000;
  ad_tensor *t = ad_rand(ctx, &rng, AD_F64, 1, &n, -1.0, 3.0);
  cr_assert_not_null(t);
  double mean, sd, lo, hi;
  moments(t, &mean, &sd, &lo, &hi);
  /* U(-1,3): mean 1, sd 4/sqrt(12) = 1.1547; tolerances ~ 4 standard errors */
  cr_assert(fabs(mean - 1.0) < 0.05, "mean %g", mean);
  cr_assert(fabs(sd - 4.0 / sqrt(12.0)) < 0.03, "sd %g", sd);
  cr_assert(lo >= -1.0 && lo < -0.99, "min %g", lo);
  cr_assert(hi < 3.0 && hi > 2.99, "max %g", hi);
  ad_tensor_free(t);
}

/* An i32 ad_rand is torch.randint: each integer of [lo, hi) equally often.
 * It truncated lo + (hi - lo) u toward zero, so [-3, 3) gave -3 about once
 * in 2^53 and 0 twice as often as the others. 600,000 draws: each count is
 * binomial(600000, 1/6), sd 289; the bound is 5 sd (the bug is off by
 * 100,000). */
Test(tensor, rand_i32_is_uniform_over_the_integers_of_the_range) {
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  int64_t n = 600000;
  ad_tensor *t = ad_rand(ctx, &rng, AD_I32, 1, &n, -3, 3);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  int64_t count[6] = {0};
  for (int64_t i = 0; i < n; i++) {
    int32_t v = ((const int32_t *)t->data)[i];
    cr_assert(v >= -3 && v < 3, "element %lld is %d", (long long)i, v);
    count[v + 3]++;
  }
  double sd = sqrt(n * (1.0 / 6) * (5.0 / 6));
  for (int k = 0; k < 6; k++)
    cr_assert_lt(fabs((double)count[k] - n / 6.0), 5 * sd, "%d drawn %lld times of %lld", k - 3,
                 (long long)count[k], (long long)n);
  ad_tensor_free(t);
  /* the whole int32 range, and lo == hi */
  int64_t m = 4;
  t = ad_rand(ctx, &rng, AD_I32, 1, &m, -2147483648.0, 2147483648.0);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  ad_tensor_free(t);
  t = ad_rand(ctx, &rng, AD_I32, 1, &m, 7, 7);
  cr_assert(t && ad_tensor_get(t, 0) == 7 && ad_tensor_get(t, 3) == 7, "lo == hi gives lo");
  ad_tensor_free(t);
}

Test(tensor, randn_statistics) {
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  int64_t s[2] = {100, 100};
  ad_tensor *t = ad_randn(ctx, &rng, AD_F32, 2, s, 2.0, 3.0);
  cr_assert_not_null(t);
  double mean, sd, lo, hi;
  moments(t, &mean, &sd, &lo, &hi);
  cr_assert(fabs(mean - 2.0) < 0.12, "mean %g", mean);
  cr_assert(fabs(sd - 3.0) < 0.09, "sd %g", sd);
  /* a normal sample of 10k reaches beyond 3 sd on both sides */
  cr_assert(lo < 2.0 - 9.0 && hi > 2.0 + 9.0, "range %g..%g", lo, hi);
  /* about 68.3% within one sd */
  int64_t in1 = 0;
  for (int64_t i = 0; i < t->size; i++) in1 += fabs(ad_tensor_get(t, i) - 2.0) < 3.0;
  cr_assert(in1 > 6630 && in1 < 7030, "within 1 sd: %lld", (long long)in1);
  ad_tensor_free(t);
}

Test(tensor, rand_reproducible_from_seed) {
  int64_t n = 257;
  ad_rng r1, r2, r3;
  ad_rng_seed(&r1, 2024);
  ad_rng_seed(&r2, 2024);
  ad_rng_seed(&r3, 2025);
  ad_tensor *a = ad_randn(ctx, &r1, AD_F64, 1, &n, 0, 1);
  ad_tensor *b = ad_randn(ctx, &r2, AD_F64, 1, &n, 0, 1);
  ad_tensor *c = ad_randn(ctx, &r3, AD_F64, 1, &n, 0, 1);
  cr_assert(a && b && c);
  cr_assert_eq(memcmp(a->data, b->data, (size_t)n * sizeof(double)), 0);
  int64_t same = 0;
  for (int64_t i = 0; i < n; i++) same += ad_tensor_get(a, i) == ad_tensor_get(c, i);
  cr_assert_lt(same, 3, "another seed gives another stream");
  /* the two generators advanced identically */
  cr_assert_eq(ad_rng_next(&r1), ad_rng_next(&r2));
  ad_tensor *u1 = ad_rand(ctx, &r1, AD_F32, 1, &n, 0, 1);
  ad_tensor *u2 = ad_rand(ctx, &r2, AD_F32, 1, &n, 0, 1);
  cr_assert_eq(memcmp(u1->data, u2->data, (size_t)n * sizeof(float)), 0);
  ad_tensor_free(a);
  ad_tensor_free(b);
  ad_tensor_free(c);
  ad_tensor_free(u1);
  ad_tensor_free(u2);
}

/* ------------------------------------------------------------------ RNG */

Test(tensor, rng_seeding_is_splitmix64) {
  /* published splitmix64 outputs for seed 0 */
  ad_rng r;
  ad_rng_seed(&r, 0);
  cr_assert_eq(r.s[0], UINT64_C(0xe220a8397b1dcdaf));
  cr_assert_eq(r.s[1], UINT64_C(0x6e789e6aa1b965f4));
  cr_assert_eq(r.s[2], UINT64_C(0x06c45d188009454f));
  cr_assert_eq(r.s[3], UINT64_C(0xf88bb8a8724c81ec));
}

Test(tensor, rng_xoshiro256starstar_vector) {
  /* reference output of xoshiro256** from the state {1, 2, 3, 4} */
  ad_rng r = {{1, 2, 3, 4}};
  cr_assert_eq(ad_rng_next(&r), UINT64_C(11520));
  cr_assert_eq(ad_rng_next(&r), UINT64_C(0));
  cr_assert_eq(ad_rng_next(&r), UINT64_C(1509978240));
  cr_assert_eq(ad_rng_next(&r), UINT64_C(1215971899390074240));
}

Test(tensor, rng_determinism_and_fork) {
  ad_rng a, b;
  ad_rng_seed(&a, 99);
  ad_rng_seed(&b, 99);
  for (int i = 0; i < 1000; i++) cr_assert_eq(ad_rng_next(&a), ad_rng_next(&b));
  ad_rng fork = a; /* plain data: a copy continues the same stream */
  for (int i = 0; i < 100; i++) cr_assert_eq(ad_rng_uniform(&a), ad_rng_uniform(&fork));
  for (int i = 0; i < 100; i++) cr_assert_eq(ad_rng_normal(&a), ad_rng_normal(&fork));
}

Test(tensor, rng_uniform_and_below_ranges) {
  ad_rng r;
  ad_rng_seed(&r, 5);
  int counts[7] = {0};
  for (int i = 0; i < 70000; i++) {
    double u = ad_rng_uniform(&r);
    cr_assert(u >= 0.0 && u < 1.0);
    uint64_t k = ad_rng_below(&r, 7);
    cr_assert_lt(k, 7);
    counts[k]++;
  }
  for (int k = 0; k < 7; k++) cr_assert(counts[k] > 9600 && counts[k] < 10400, "bucket %d", k);
  cr_assert_eq(ad_rng_below(&r, 1), 0);
}

/* A NULL generator is reported, never dereferenced (ad.h, RNG): one case a
 * function, so that each stands alone. */
Test(tensor, rng_seed_null_is_err_null) {
  cr_assert_eq(ad_rng_seed(NULL, 1), AD_ERR_NULL);
  ad_rng r = {{1, 2, 3, 4}};
  cr_assert_eq(ad_rng_seed(&r, 0), AD_OK);
  cr_assert_eq(r.s[0], UINT64_C(0xe220a8397b1dcdaf), "a good rng is still seeded");
}

Test(tensor, rng_next_null_is_zero) { cr_assert_eq(ad_rng_next(NULL), 0); }

Test(tensor, rng_uniform_null_is_nan) {
  double u = ad_rng_uniform(NULL);
  cr_assert(isnan(u), "got %g", u);
}

Test(tensor, rng_normal_null_is_nan) {
  double z = ad_rng_normal(NULL);
  cr_assert(isnan(z), "got %g", z);
}

Test(tensor, rng_below_null_or_zero_is_zero) {
  cr_assert_eq(ad_rng_below(NULL, 7), 0);
  cr_assert_eq(ad_rng_below(NULL, 1), 0);
  cr_assert_eq(ad_rng_below(NULL, UINT64_MAX), 0);
  cr_assert_eq(ad_rng_below(NULL, 0), 0);
  /* n == 0 draws nothing: the stream is where it was */
  ad_rng r, before;
  ad_rng_seed(&r, 11);
  before = r;
  cr_assert_eq(ad_rng_below(&r, 0), 0);
  cr_assert_eq(memcmp(&r, &before, sizeof r), 0);
}

/* ---------------------------------------------------- scalar, clone, access */

Test(tensor, scalar_is_temporary) {
  ad_tensor *s = ad_scalar(ctx, AD_F32, -1.5);
  cr_assert_not_null(s);
  cr_assert_eq(s->ndim, 0);
  cr_assert_eq(s->size, 1);
  cr_assert_eq(s->dtype, AD_F32);
  cr_assert_eq(ad_tensor_item(s), -1.5);
  cr_assert(ad_tensor_is_temporary(s));
  cr_assert_eq(ad_tensor_op(s), -1, "a constant was not made by an op");
  size_t used = ad_arena_used(ctx);
  cr_assert_gt(used, 0);
  ad_tensor_free(s); /* ignored: it belongs to the arena */
  cr_assert_eq(ad_tensor_item(s), -1.5);
  ad_tape_reset(ctx);
  cr_assert_eq(ad_arena_used(ctx), 0);
}

Test(tensor, clone_is_deep) {
  int64_t s[2] = {2, 2};
  double v[4] = {1, 2, 3, 4};
  ad_tensor *a = ad_from_data(ctx, AD_F64, 2, s, v);
  ad_tensor_set_requires_grad(a, true);
  ad_tensor *c = ad_tensor_clone(ctx, a);
  cr_assert_not_null(c);
  cr_assert_neq(c->data, a->data);
  cr_assert_eq(c->ndim, 2);
  cr_assert_eq(c->shape[1], 2);
  cr_assert_eq(c->dtype, AD_F64);
  cr_assert(!ad_tensor_requires_grad(c), "a clone copies data, not history");
  cr_assert(!ad_tensor_is_temporary(c));
  ad_tensor_set(a, 0, 100);
  cr_assert_eq(ad_tensor_get(c, 0), 1.0);
  /* cloning a temporary gives a persistent tensor that survives a reset */
  ad_tensor *t = ad_exp(ctx, a);
  ad_tensor *p = ad_tensor_clone(ctx, t);
  ad_tape_reset(ctx);
  cr_assert(!ad_tensor_is_temporary(p));
  cr_assert_float_eq(ad_tensor_get(p, 1), exp(2.0), 1e-12);
  ad_tensor_free(a);
  ad_tensor_free(c);
  ad_tensor_free(p);
}

Test(tensor, get_set_item) {
  int64_t s[2] = {2, 3};
  ad_tensor *f = ad_zeros(ctx, AD_F32, 2, s);
  ad_tensor *d = ad_zeros(ctx, AD_F64, 2, s);
  ad_tensor *i = ad_zeros(ctx, AD_I32, 2, s);
  for (int64_t k = 0; k < 6; k++) {
    cr_assert_eq(ad_tensor_set(f, k, 0.1 * (double)k), AD_OK);
    cr_assert_eq(ad_tensor_set(d, k, 0.1 * (double)k), AD_OK);
    cr_assert_eq(ad_tensor_set(i, k, -2.9 * (double)k), AD_OK);
  }
  cr_assert_eq(ad_tensor_get(f, 3), (double)0.3f, "f32 stores with float rounding");
  cr_assert_eq(ad_tensor_get(d, 3), 0.1 * 3.0);
  cr_assert_eq(ad_tensor_get(i, 1), -2.0);
  cr_assert_eq(ad_tensor_get(i, 5), -14.0);
  cr_assert_eq(((float *)f->data)[4], 0.4f);
  /* out of range */
  cr_assert_eq(ad_tensor_set(f, 6, 1.0), AD_ERR_ARG);
  cr_assert_eq(ad_tensor_set(f, -1, 1.0), AD_ERR_ARG);
  cr_assert_eq(ad_tensor_get(f, 6), 0.0);
  cr_assert_eq(ad_tensor_get(f, -1), 0.0);
  cr_assert_eq(ad_tensor_set(NULL, 0, 1.0), AD_ERR_NULL);
  /* item needs exactly one element */
  cr_assert(isnan(ad_tensor_item(f)));
  int64_t one[3] = {1, 1, 1};
  ad_tensor *u = ad_full(ctx, AD_F64, 3, one, 9.5);
  cr_assert_eq(ad_tensor_item(u), 9.5);
  cr_assert(isnan(ad_tensor_item(NULL)));
  /* fill */
  ad_tensor_fill(d, -0.5);
  for (int64_t k = 0; k < 6; k++) cr_assert_eq(ad_tensor_get(d, k), -0.5);
  ad_tensor_free(f);
  ad_tensor_free(d);
  ad_tensor_free(i);
  ad_tensor_free(u);
}

Test(tensor, copy_data_across_dtypes) {
  int64_t s[2] = {2, 2}, r[1] = {4};
  double v[4] = {1.75, -2.5, 3.0, 1e-3};
  ad_tensor *d = ad_from_data(ctx, AD_F64, 2, s, v);
  ad_tensor *f = ad_zeros(ctx, AD_F32, 1, r); /* same size, other shape */
  ad_tensor *i = ad_zeros(ctx, AD_I32, 2, s);
  cr_assert_eq(ad_tensor_copy_data(f, d), AD_OK);
  double wf[4] = {1.75, -2.5, 3.0, (double)1e-3f};
  assert_values(f, wf, 4, 0);
  cr_assert_eq(ad_tensor_copy_data(i, d), AD_OK);
  double wi[4] = {1, -2, 3, 0};
  assert_values(i, wi, 4, 0);
  ad_tensor *back = ad_zeros(ctx, AD_F64, 2, s);
  cr_assert_eq(ad_tensor_copy_data(back, i), AD_OK);
  assert_values(back, wi, 4, 0);
  cr_assert_eq(ad_tensor_copy_data(back, f), AD_OK);
  assert_values(back, wf, 4, 0);
  ad_tensor_free(d);
  ad_tensor_free(f);
  ad_tensor_free(i);
  ad_tensor_free(back);
}

/* Float conversions of every pair of dtypes into a float tensor, bit for
 * bit as C converts one value (a float64 rounded once to float32, with
 * overflow to infinity, NaN kept NaN, signed zeros; int32 beyond 2^24
 * rounded to float32); ad_cast's float64 to float32 the same bits. */
Test(tensor, copy_data_converts_like_c) {
  /* 0x1.ffffffp127, halfway from FLT_MAX to 2^128, rounds to infinity; 0x1.000001p0, a tie, to 1 */
  static const double d64[] = {0.1,      -0.0,       1e300,  -1e300,         NAN,
                               INFINITY, 16777217.0, 1e-310, 0x1.ffffffp127, 0x1.000001p0};
  static const int32_t i32[] = {16777217, -16777219, INT32_MAX, INT32_MIN, 0, 7};
  int64_t n = 4096;
  ad_tensor *d = ad_zeros(ctx, AD_F64, 1, &n), *i = ad_zeros(ctx, AD_I32, 1, &n);
  ad_tensor *f = ad_zeros(ctx, AD_F32, 1, &n), *back = ad_zeros(ctx, AD_F64, 1, &n);
  cr_assert(d && i && f && back);
  for (int64_t k = 0; k < n; k++) {
    ((double *)d->data)[k] = k < 10 ? d64[k] : (double)k * 0.3 - 500.0;
    ((int32_t *)i->data)[k] = k < 6 ? i32[k] : (int32_t)(k * 40009 - 80000000);
  }
  cr_assert_eq(ad_tensor_copy_data(f, d), AD_OK);
  for (int64_t k = 0; k < n; k++) {
    float want = (float)((const double *)d->data)[k], got = ((const float *)f->data)[k];
    cr_assert(memcmp(&got, &want, sizeof got) == 0 || (isnan(got) && isnan(want)),
              "f64 %a -> f32 %a, want %a", ((const double *)d->data)[k], got, want);
  }
  cr_assert_eq(ad_tensor_copy_data(back, f), AD_OK);
  for (int64_t k = 0; k < n; k++) {
    double want = ((const float *)f->data)[k], got = ((const double *)back->data)[k];
    cr_assert(memcmp(&got, &want, sizeof got) == 0 || (isnan(got) && isnan(want)));
  }
  ad_tensor *fi = ad_zeros(ctx, AD_F32, 1, &n), *di = ad_zeros(ctx, AD_F64, 1, &n);
  cr_assert_eq(ad_tensor_copy_data(fi, i), AD_OK);
  cr_assert_eq(ad_tensor_copy_data(di, i), AD_OK);
  for (int64_t k = 0; k < n; k++) {
    int32_t v = ((const int32_t *)i->data)[k];
    cr_assert_eq(((const float *)fi->data)[k], (float)v, "i32 %d -> f32 %a", v,
                 ((const float *)fi->data)[k]);
    cr_assert_eq(((const double *)di->data)[k], (double)v);
  }
  ad_tensor *fd = ad_cast(ctx, d, AD_F32);
  cr_assert(fd && memcmp(fd->data, f->data, (size_t)n * sizeof(float)) == 0,
            "ad_cast and copy_data differ");
  ad_tape_reset(ctx);
  ad_tensor_free(d);
  ad_tensor_free(i);
  ad_tensor_free(f);
  ad_tensor_free(back);
  ad_tensor_free(fi);
  ad_tensor_free(di);
}

Test(tensor, has_nonfinite) {
  int64_t n = 3;
  ad_tensor *t = ad_zeros(ctx, AD_F32, 1, &n);
  cr_assert(!ad_tensor_has_nonfinite(t));
  ad_tensor_set(t, 2, INFINITY);
  cr_assert(ad_tensor_has_nonfinite(t));
  ad_tensor_set(t, 2, NAN);
  cr_assert(ad_tensor_has_nonfinite(t));
  ad_tensor_set(t, 2, 1e30);
  cr_assert(!ad_tensor_has_nonfinite(t));
  ad_tensor_free(t);
}

Test(tensor, dtype_names_and_sizes) {
  cr_assert_eq(ad_dtype_size(AD_F32), 4);
  cr_assert_eq(ad_dtype_size(AD_F64), 8);
  cr_assert_eq(ad_dtype_size(AD_I32), 4);
  cr_assert_str_eq(ad_dtype_name(AD_F32), "f32");
  cr_assert_str_eq(ad_dtype_name(AD_F64), "f64");
  cr_assert_str_eq(ad_dtype_name(AD_I32), "i32");
}

/* -------------------------------------------------------------- reshape */

Test(tensor, reshape_is_a_view) {
  ad_tensor *x = ad_arange(ctx, AD_F64, 0, 24, 1);
  int64_t s[3] = {2, -1, 4};
  ad_tensor *v = ad_reshape(ctx, x, 3, s);
  cr_assert_not_null(v, "%s", ad_last_error(ctx));
  cr_assert_eq(v->data, x->data, "reshape shares the data");
  cr_assert_eq(v->ndim, 3);
  cr_assert_eq(v->shape[0], 2);
  cr_assert_eq(v->shape[1], 3, "-1 is inferred");
  cr_assert_eq(v->shape[2], 4);
  cr_assert_eq(v->size, 24);
  cr_assert(ad_tensor_is_temporary(v));
  ad_tensor_set(x, 5, -7.0);
  cr_assert_eq(ad_tensor_get(v, 5), -7.0);
  /* a view of a view */
  int64_t flat[2] = {-1, 6};
  ad_tensor *w = ad_reshape(ctx, v, 2, flat);
  cr_assert_not_null(w);
  cr_assert_eq(w->data, x->data);
  cr_assert_eq(w->shape[0], 4);
  /* to a scalar and back */
  int64_t one = 1;
  ad_tensor *o = ad_ones(ctx, AD_F32, 1, &one);
  ad_tensor *sc = ad_reshape(ctx, o, 0, NULL);
  cr_assert_not_null(sc);
  cr_assert_eq(sc->ndim, 0);
  cr_assert_eq(sc->data, o->data);
  ad_tensor_free(x);
  ad_tensor_free(o);
}

Test(tensor, reshape_carries_the_gradient) {
  ad_tensor *x = ad_arange(ctx, AD_F64, 0, 6, 1);
  ad_tensor_set_requires_grad(x, true);
  int64_t s[2] = {3, -1};
  ad_tensor *v = ad_reshape(ctx, x, 2, s);
  cr_assert_not_null(v);
  cr_assert_eq(v->data, x->data);
  ad_tensor *w = ad_arange(ctx, AD_F64, 10, 16, 1);
  int64_t ws[2] = {3, 2};
  ad_tensor *L = ad_sum(ctx, ad_mul(ctx, v, ad_reshape(ctx, w, 2, ws)));
  cr_assert_eq(ad_backward(ctx, L, NULL), AD_OK, "%s", ad_last_error(ctx));
  double want[6] = {10, 11, 12, 13, 14, 15};
  assert_values(x->grad, want, 6, 0);
  cr_assert_eq(x->grad->ndim, 1);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

/* As torch.permute: a negative axis counts from the end, so {-1, 0, -2}
 * is {2, 0, 1}; the values and the gradient (permuted back) are the same.
 * A list naming an axis twice, or one out of range, is still refused. */
Test(tensor, permute_takes_negative_axes) {
  int64_t s[3] = {2, 3, 4};
  ad_tensor *x = ad_arange(ctx, AD_F64, 0, 24, 1);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *x3 = ad_reshape(ctx, x, 3, s);
  int neg[3] = {-1, 0, -2}, pos[3] = {2, 0, 1};
  ad_tensor *a = ad_permute(ctx, x3, neg);
  cr_assert_not_null(a, "%s", ad_last_error(ctx));
  ad_tensor *b = ad_permute(ctx, x3, pos);
  cr_assert_not_null(b);
  cr_assert_eq(a->shape[0], 4);
  cr_assert_eq(a->shape[1], 2);
  cr_assert_eq(a->shape[2], 3);
  for (int64_t i = 0; i < 24; i++) cr_assert_eq(ad_tensor_get(a, i), ad_tensor_get(b, i));
  ad_tensor *w = ad_arange(ctx, AD_F64, 100, 124, 1);
  ad_tensor *wr = ad_reshape(ctx, w, 3, (int64_t[3]){4, 2, 3});
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, a, wr)), NULL), AD_OK, "%s",
               ad_last_error(ctx));
  /* dx[i, j, k] = w[k, i, j] */
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++)
      for (int k = 0; k < 4; k++)
        cr_assert_eq(ad_tensor_get(x->grad, (i * 3 + j) * 4 + k), 100 + (k * 2 + i) * 3 + j);
  int twice[3] = {-1, 2, 0}, out[3] = {0, 1, -4};
  cr_assert_null(ad_permute(ctx, x3, twice));
  cr_assert_str_eq(ad_last_error(ctx),
                   "permute: axis list is not a permutation of 0..2 (or -3..-1)");
  cr_assert_null(ad_permute(ctx, x3, out));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_ARG);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

/* permute copies rows (merged dims, a memcpy where the last dim stays
 * contiguous, else a gather per element type, or tiles of a cache line's
 * worth where the last dim and another are that long or more, split over
 * threads, through ad_transpose_blocks' registers where it can and with
 * it turned off): on random shapes of 1 to 6 dims (up to 300 long in 2, 70
 * in 3, with tails of the tiles and blocks) with dims of length 1, random
 * permutations, f32, f64 and int32, on 1 and 3 threads, every element is
 * where the index rule puts it, out[i_0..] = x[i at perm]. */
Test(tensor, permute_matches_the_index_rule) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  static const ad_dtype dts[3] = {AD_F32, AD_F64, AD_I32};
  for (int trial = 0; trial < 300; trial++) {
    int nd = 1 + (int)ad_rng_below(&rng, 6);
    int64_t shape[AD_MAX_DIMS], n = 1;
    for (int k = 0; k < nd; k++) {
      shape[k] = trial % 3 == 0 ? 1 + (int64_t)ad_rng_below(&rng, 3)
                                : 1 + (int64_t)ad_rng_below(&rng, nd <= 2   ? 300
                                                                  : nd == 3 ? 70
                                                                            : 9);
      n *= shape[k];
    }
    int perm[AD_MAX_DIMS];
    for (int k = 0; k < nd; k++) perm[k] = k;
    for (int k = nd - 1; k > 0; k--) { /* Fisher-Yates */
      int r = (int)ad_rng_below(&rng, (uint64_t)k + 1), t = perm[k];
      perm[k] = perm[r], perm[r] = t;
    }
    ad_dtype dt = dts[trial % 3];
    ad_tensor *x = ad_zeros(ctx, dt, nd, shape);
    cr_assert_not_null(x, "%s", ad_last_error(ctx));
    for (int64_t i = 0; i < n; i++) ad_tensor_set(x, i, (double)(i % 100000) - 7);
    int threads = trial % 2 ? 3 : 1;
    for (int generic = 0; generic < 2; generic++) {
      cr_assert_eq(ad_set_num_threads(threads), AD_OK);
      ad_transpose_set_generic(generic);
      ad_tensor *y = ad_permute(ctx, x, perm);
      ad_transpose_set_generic(false);
      ad_set_num_threads(1);
      cr_assert_not_null(y, "%s", ad_last_error(ctx));
      int64_t idx[AD_MAX_DIMS] = {0};
      for (int64_t o = 0; o < n; o++) {
        int64_t xi = 0; /* x's flat index of out's idx */
        for (int k = 0; k < nd; k++) {
          int64_t xs = 1;
          for (int q = perm[k] + 1; q < nd; q++) xs *= shape[q];
          xi += idx[k] * xs;
        }
        QUICK_ASSERT(
            ad_tensor_get(y, o) == ad_tensor_get(x, xi),
            "trial %d (%s, %d dims, %d threads, generic %d): out[%lld] is %g, want x[%lld] "
            "= %g",
            trial, ad_dtype_name(dt), nd, threads, generic, (long long)o, ad_tensor_get(y, o),
            (long long)xi, ad_tensor_get(x, xi));
        for (int k = nd - 1; k >= 0; k--) {
          if (++idx[k] < y->shape[k]) break;
          idx[k] = 0;
        }
      }
    }
    ad_tape_reset(ctx);
    ad_tensor_free(x);
  }
}

/* ad_transpose_blocks (permute's tiles) alone: y[k ys + a] = x[a xs + k]
 * for every nq x nl from 0 to 19 (full blocks of 8 x 8 or 4 x 4 and their
 * margins), with strides past the block and the rest of y untouched, in
 * float32 and float64; reported as skipped where the CPU lacks AVX2 (the
 * permute test above covers the loops that run instead). */
Test(tensor, transpose_blocks_move_each_element) {
  enum { XS = 23, YS = 21, N = 20 };
  static float xf[N * XS], yf[N * YS];
  static double xd[N * XS], yd[N * YS];
  for (int i = 0; i < N * XS; i++) xf[i] = (float)i + 0.5f, xd[i] = i + 0.25;
  bool ran = true;
  for (int nq = 0; nq < N && ran; nq++)
    for (int nl = 0; nl < N && ran; nl++)
      for (int d = 0; d < 2 && ran; d++) {
        for (int i = 0; i < N * YS; i++) yf[i] = -1, yd[i] = -1;
        ran = ad_transpose_blocks(d ? AD_F64 : AD_F32, d ? (const void *)xd : (const void *)xf, XS,
                                  d ? (void *)yd : (void *)yf, YS, nq, nl);
        for (int i = 0; ran && i < N * YS; i++) {
          int k = i / YS, a = i % YS;
          double want = k < nq && a < nl ? (d ? xd[a * XS + k] : xf[a * XS + k]) : -1;
          double got = d ? yd[i] : yf[i];
          cr_assert_eq(got, want, "%s nq %d nl %d: y[%d][%d] is %g, want %g", d ? "f64" : "f32", nq,
                       nl, k, a, got, want);
        }
      }
  if (!ran) cr_skip_test("transpose_blocks: no AVX2 on this CPU (the element loops ran)");
  cr_assert(!ad_transpose_blocks(AD_I32, xf, XS, yf, YS, 8, 8), "int32 takes the loops");
  ad_transpose_set_generic(true);
  cr_assert(!ad_transpose_blocks(AD_F32, xf, XS, yf, YS, 8, 8), "declines when generic");
  ad_transpose_set_generic(false);
}

/* As torch.narrow: a start in -n..-1 counts from the end of the axis; the
 * gradient lands where the slice came from. Outside -n..n is refused. */
Test(tensor, narrow_takes_a_negative_start) {
  ad_tensor *x = ad_arange(ctx, AD_F64, 0, 12, 1);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *x2 = ad_reshape(ctx, x, 2, (int64_t[2]){3, 4});
  ad_tensor *y = ad_narrow(ctx, x2, -1, -3, 2); /* columns 1 and 2 */
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->shape[0], 3);
  cr_assert_eq(y->shape[1], 2);
  double want[6] = {1, 2, 5, 6, 9, 10};
  assert_values(y, want, 6, 0);
  ad_tensor *seed = ad_arange(ctx, AD_F64, 1, 7, 1);
  ad_tensor *s2 = ad_reshape(ctx, seed, 2, (int64_t[2]){3, 2});
  cr_assert_eq(ad_backward(ctx, y, s2), AD_OK, "%s", ad_last_error(ctx));
  double dx[12] = {0, 1, 2, 0, 0, 3, 4, 0, 0, 5, 6, 0};
  assert_values(x->grad, dx, 12, 0);
  ad_tensor *all = ad_narrow(ctx, x2, 0, -3, 3);
  cr_assert_not_null(all, "%s", ad_last_error(ctx));
  cr_assert_eq(all->size, 12);
  cr_assert_null(ad_narrow(ctx, x2, 1, -5, 1));
  cr_assert_str_eq(ad_last_error(ctx), "narrow: start -5, length 1 is outside 0..4 of axis 1 of "
                                       "[3,4] (a negative start counts from the end)");
  cr_assert_null(ad_narrow(ctx, x2, 1, -1, 2));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_ARG);
  ad_tensor_free(x);
  ad_tensor_free(seed);
}

/* As torch.expand: -1 keeps the size of x's dim it aligns with; the
 * gradient sums over the broadcast dims. -1 in a new leading dim has no
 * size to keep: refused. */
Test(tensor, expand_keeps_a_dim_given_as_minus_one) {
  ad_tensor *x = ad_arange(ctx, AD_F64, 1, 4, 1);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *x2 = ad_reshape(ctx, x, 2, (int64_t[2]){3, 1});
  ad_tensor *y = ad_expand(ctx, x2, 3, (int64_t[3]){2, -1, 4});
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->ndim, 3);
  cr_assert_eq(y->shape[0], 2);
  cr_assert_eq(y->shape[1], 3);
  cr_assert_eq(y->shape[2], 4);
  for (int64_t i = 0; i < 24; i++) cr_assert_eq(ad_tensor_get(y, i), 1 + (i / 4) % 3);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  double want[3] = {8, 8, 8};
  assert_values(x->grad, want, 3, 0);
  cr_assert_null(ad_expand(ctx, x2, 3, (int64_t[3]){-1, 3, 1}));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_SHAPE);
  cr_assert_null(ad_expand(ctx, x2, 2, (int64_t[2]){3, -2}));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_SHAPE);
  ad_tensor_free(x);
}

/* ------------------------------------------------------------- printing */

/* Prints t into a string (caller frees). */
static char *print_to_string(const char *name, const ad_tensor *t) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_not_null(f);
  ad_tensor_print(f, name, t);
  fclose(f);
  return buf;
}

Test(tensor, print_small_matrix_exactly) {
  double v[6] = {1.5, -2, 3, 4, 5e-7, 1234.5};
  int64_t s[2] = {2, 3};
  ad_tensor *t = ad_from_data(ctx, AD_F64, 2, s, v);
  char *out = print_to_string("x", t);
  cr_assert_str_eq(out, "x: [2,3] f64\n"
                        "[[1.5, -2, 3],\n"
                        " [4, 5e-07, 1234.5]]\n");
  free(out);
  out = print_to_string(NULL, t);
  cr_assert_str_eq(out, "[2,3] f64\n"
                        "[[1.5, -2, 3],\n"
                        " [4, 5e-07, 1234.5]]\n");
  free(out);
  ad_tensor_free(t);
}

Test(tensor, print_scalar_int_empty_null) {
  ad_tensor *s = ad_scalar(ctx, AD_F64, 0.125);
  char *out = print_to_string("s", s);
  cr_assert_str_eq(out, "s: [] f64\n0.125\n");
  free(out);
  int32_t iv[3] = {-1, 0, 2147483647};
  int64_t n = 3;
  ad_tensor *i = ad_from_data(ctx, AD_I32, 1, &n, iv);
  out = print_to_string("i", i);
  cr_assert_str_eq(out, "i: [3] i32\n[-1, 0, 2147483647]\n");
  free(out);
  int64_t e[2] = {2, 0};
  ad_tensor *z = ad_zeros(ctx, AD_F32, 2, e);
  out = print_to_string("z", z);
  cr_assert_str_eq(out, "z: [2,0] f32\n[]\n");
  free(out);
  out = print_to_string("n", NULL);
  cr_assert_str_eq(out, "n: (null)\n");
  free(out);
  ad_tensor_free(i);
  ad_tensor_free(z);
}

Test(tensor, print_summarizes_long_vector) {
  ad_tensor *t = ad_arange(ctx, AD_F32, 0, 100, 1);
  char *out = print_to_string("v", t);
  cr_assert_str_eq(out, "v: [100] f32\n[0, 1, 2, ..., 97, 98, 99]\n");
  free(out);
  /* 6 elements are printed in full; 7 are summarized */
  ad_tensor *six = ad_arange(ctx, AD_F64, 0, 6, 1);
  out = print_to_string(NULL, six);
  cr_assert_str_eq(out, "[6] f64\n[0, 1, 2, 3, 4, 5]\n");
  free(out);
  ad_tensor *seven = ad_arange(ctx, AD_F64, 0, 7, 1);
  out = print_to_string(NULL, seven);
  cr_assert_str_eq(out, "[7] f64\n[0, 1, 2, ..., 4, 5, 6]\n");
  free(out);
  ad_tensor_free(t);
  ad_tensor_free(six);
  ad_tensor_free(seven);
}

Test(tensor, print_summarizes_long_matrix) {
  ad_tensor *a = ad_arange(ctx, AD_F64, 0, 20, 1);
  int64_t s[2] = {10, 2};
  ad_tensor *m = ad_reshape(ctx, a, 2, s);
  char *out = print_to_string("m", m);
  cr_assert_str_eq(out, "m: [10,2] f64\n"
                        "[[0, 1],\n"
                        " [2, 3],\n"
                        " [4, 5],\n"
                        " ...,\n"
                        " [14, 15],\n"
                        " [16, 17],\n"
                        " [18, 19]]\n");
  free(out);
  ad_tensor *b = ad_arange(ctx, AD_F64, 0, 16, 1);
  int64_t s3[3] = {2, 2, 4};
  out = print_to_string(NULL, ad_reshape(ctx, b, 3, s3));
  cr_assert_str_eq(out, "[2,2,4] f64\n"
                        "[[[0, 1, 2, 3],\n"
                        "  [4, 5, 6, 7]],\n"
                        " [[8, 9, 10, 11],\n"
                        "  [12, 13, 14, 15]]]\n");
  free(out);
  ad_tensor_free(a);
  ad_tensor_free(b);
}

/* ------------------------------------------------------- names, strings */

Test(tensor, shape_str) {
  char buf[64];
  int64_t s[3] = {2, 3, 4};
  ad_tensor *t = ad_zeros(ctx, AD_F32, 3, s);
  cr_assert_str_eq(ad_shape_str(t, buf, sizeof buf), "[2,3,4]");
  ad_tensor *sc = ad_scalar(ctx, AD_F64, 1);
  cr_assert_str_eq(ad_shape_str(sc, buf, sizeof buf), "[]");
  cr_assert_str_eq(ad_shape_str(NULL, buf, sizeof buf), "(null)");
  int64_t big[2] = {123456789, 0};
  ad_tensor *b = ad_zeros(ctx, AD_F64, 2, big);
  cr_assert_str_eq(ad_shape_str(b, buf, sizeof buf), "[123456789,0]");
  /* truncation keeps a terminated prefix */
  char small[4];
  memset(small, 'x', sizeof small);
  cr_assert_eq(ad_shape_str(t, small, sizeof small), small);
  cr_assert_str_eq(small, "[2,");
  ad_tensor_free(t);
  ad_tensor_free(b);
}

Test(tensor, status_str_every_code) {
  static const char *const want[AD_STATUS_COUNT] = {
      [AD_OK] = "ok",
      [AD_ERR_NULL] = "null pointer",
      [AD_ERR_SHAPE] = "shape mismatch",
      [AD_ERR_DTYPE] = "dtype mismatch",
      [AD_ERR_ARG] = "bad argument",
      [AD_ERR_OOM] = "out of memory",
      [AD_ERR_STATE] = "invalid state",
      [AD_ERR_NAN] = "NaN or Inf",
      [AD_ERR_IO] = "I/O error",
      [AD_ERR_FORMAT] = "malformed file",
      [AD_ERR_NOTFOUND] = "not found",
  };
  for (int s = 0; s < AD_STATUS_COUNT; s++) {
    cr_assert_not_null(want[s], "status %d has no expected name in this test", s);
    cr_assert_str_eq(ad_status_str((ad_status)s), want[s]);
    for (int o = 0; o < s; o++)
      cr_assert_str_neq(ad_status_str((ad_status)s), ad_status_str((ad_status)o));
  }
  cr_assert_str_eq(ad_status_str(AD_STATUS_COUNT), "unknown status");
  cr_assert_str_eq(ad_status_str((ad_status)-1), "unknown status");
}

/* --------------------------------------------------- many dimensions */

/* Offset into x (broadcast against out) of out's flat index o. */
static int64_t bc_offset(const ad_tensor *x, const ad_tensor *out, int64_t o) {
  int64_t off = 0, stride = 1;
  for (int d = out->ndim - 1; d >= 0; d--) {
    int64_t idx = o % out->shape[d];
    o /= out->shape[d];
    int xd = d - (out->ndim - x->ndim);
    if (xd < 0) continue;
    if (x->shape[xd] != 1) off += idx * stride;
    stride *= x->shape[xd];
  }
  return off;
}

Test(tensor, eight_dims_add_and_sum) {
  ad_rng rng;
  ad_rng_seed(&rng, 8);
  int64_t sa[8] = {2, 1, 3, 1, 2, 1, 2, 2};
  int64_t sb[7] = {2, 1, 2, 1, 2, 1, 2};
  ad_tensor *a = ad_rand(ctx, &rng, AD_F64, 8, sa, -1, 1);
  ad_tensor *b = ad_rand(ctx, &rng, AD_F64, 7, sb, -1, 1);
  cr_assert(a && b);
  ad_tensor_set_requires_grad(a, true);
  ad_tensor_set_requires_grad(b, true);
  ad_tensor *y = ad_add(ctx, a, b);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  int64_t want_shape[8] = {2, 2, 3, 2, 2, 2, 2, 2};
  cr_assert_eq(y->ndim, 8);
  for (int d = 0; d < 8; d++) cr_assert_eq(y->shape[d], want_shape[d], "dim %d", d);
  cr_assert_eq(y->size, 384);
  double total = 0;
  for (int64_t o = 0; o < y->size; o++) {
    double w = ad_tensor_get(a, bc_offset(a, y, o)) + ad_tensor_get(b, bc_offset(b, y, o));
    cr_assert_float_eq(ad_tensor_get(y, o), w, 1e-15, "element %lld", (long long)o);
    total += w;
  }
  ad_tensor *L = ad_sum(ctx, y);
  cr_assert_float_eq(ad_tensor_item(L), total, 1e-11);
  /* a reduction along an inner axis of the 8-d result */
  ad_tensor *r = ad_sum_axis(ctx, y, 2, false);
  cr_assert_not_null(r);
  cr_assert_eq(r->ndim, 7);
  cr_assert_eq(r->size, 128);
  cr_assert_eq(ad_backward(ctx, L, NULL), AD_OK, "%s", ad_last_error(ctx));
  /* each element of a is used 384/48 times, of b 384/16 times */
  for (int64_t i = 0; i < a->size; i++) cr_assert_float_eq(ad_tensor_get(a->grad, i), 8.0, 0);
  for (int64_t i = 0; i < b->size; i++) cr_assert_float_eq(ad_tensor_get(b->grad, i), 24.0, 0);
  ad_tensor_free(a);
  ad_tensor_free(b);
}

Test(tensor, six_dims_mul_and_axis_sum) {
  ad_rng rng;
  ad_rng_seed(&rng, 6);
  int64_t sa[6] = {2, 3, 1, 2, 2, 3};
  int64_t sb[6] = {1, 3, 2, 1, 2, 3};
  ad_tensor *a = ad_rand(ctx, &rng, AD_F32, 6, sa, -1, 1);
  ad_tensor *b = ad_rand(ctx, &rng, AD_F32, 6, sb, -1, 1);
  ad_tensor *y = ad_mul(ctx, a, b);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->size, 2 * 3 * 2 * 2 * 2 * 3);
  ad_tensor *r = ad_sum_axis(ctx, y, -1, true);
  cr_assert_not_null(r);
  cr_assert_eq(r->ndim, 6);
  cr_assert_eq(r->shape[5], 1);
  for (int64_t o = 0; o < r->size; o++) {
    double s = 0;
    for (int64_t k = 0; k < 3; k++) {
      int64_t yo = o * 3 + k;
      s += (double)((float)ad_tensor_get(a, bc_offset(a, y, yo)) *
                    (float)ad_tensor_get(b, bc_offset(b, y, yo)));
    }
    cr_assert_float_eq(ad_tensor_get(r, o), s, 1e-5, "lane %lld", (long long)o);
  }
  ad_tensor_free(a);
  ad_tensor_free(b);
}

/* narrow, pad and concat copy blocks split into pieces of 32768 elements
 * over threads (copy_axis), and cast converts in ranges: blocks of one
 * piece, several pieces with a tail, and one long block (outer 1), on 3
 * threads, every element where the index rule puts it. */
Test(tensor, block_copies_on_threads) {
  cr_assert_eq(ad_set_num_threads(3), AD_OK);
  int64_t sa[2] = {3, 70001}, sb[2] = {3, 5};
  ad_tensor *a0 = ad_arange(ctx, AD_F32, 0, 3 * 70001, 1), *b0 = ad_arange(ctx, AD_F32, -15, 0, 1);
  cr_assert(a0 && b0, "%s", ad_last_error(ctx));
  ad_tensor *a = ad_reshape(ctx, a0, 2, sa), *b = ad_reshape(ctx, b0, 2, sb);
  ad_tensor *cat1 = ad_concat(ctx, 2, (ad_tensor *[]){b, a}, 1); /* [3, 70006] */
  ad_tensor *cat0 = ad_concat(ctx, 2, (ad_tensor *[]){a, a}, 0); /* outer 1: one long block */
  ad_tensor *nar = ad_narrow(ctx, a, 1, 7, 69990);
  ad_tensor *pad = ad_pad(ctx, a, 1, 2, 3);
  ad_tensor *c64 = ad_cast(ctx, cat1, AD_F64);
  cr_assert(cat1 && cat0 && nar && pad && c64, "%s", ad_last_error(ctx));
  ad_set_num_threads(1);
  for (int64_t r = 0; r < 3; r++) {
    for (int64_t k = 0; k < 70006; k++) {
      double want = k < 5 ? (double)(r * 5 + k) - 15 : (double)(r * 70001 + k - 5);
      QUICK_ASSERT(ad_tensor_get(cat1, r * 70006 + k) == want, "cat1[%lld,%lld]", (long long)r,
                   (long long)k);
      QUICK_ASSERT(ad_tensor_get(c64, r * 70006 + k) == want, "cast[%lld,%lld]", (long long)r,
                   (long long)k);
    }
    for (int64_t k = 0; k < 69990; k++)
      QUICK_ASSERT(ad_tensor_get(nar, r * 69990 + k) == (double)(r * 70001 + k + 7), "narrow");
    for (int64_t k = 0; k < 70006; k++) {
      double want = k < 2 || k >= 70003 ? 0.0 : (double)(r * 70001 + k - 2);
      QUICK_ASSERT(ad_tensor_get(pad, r * 70006 + k) == want, "pad[%lld,%lld]", (long long)r,
                   (long long)k);
    }
  }
  for (int64_t i = 0; i < 2 * 3 * 70001; i++)
    QUICK_ASSERT(ad_tensor_get(cat0, i) == (double)(i % (3 * 70001)), "cat0[%lld]", (long long)i);
  ad_tape_reset(ctx);
  ad_tensor_free(a0);
  ad_tensor_free(b0);
}

/* ------------------------------------------------ the default allocator */

#if defined(__linux__) && defined(MADV_HUGEPAGE)
/* The VmFlags of the mapping of /proc/self/smaps holding address a, into
 * out; false when none holds it or the file cannot be read. */
static bool vm_flags_at(const void *a, char *out, size_t n) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f) return false;
  char line[512];
  bool inside = false, found = false;
  uintptr_t x = (uintptr_t)a;
  while (!found && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
      inside = x >= lo && x < hi;
    else if (inside && !strncmp(line, "VmFlags:", 8))
      found = snprintf(out, n, "%s", line + 8) > 0;
  }
  fclose(f);
  return found;
}
#endif

/* Blocks of 2 MiB and more come 2 MiB aligned with their whole 2 MiB pages
 * advised for transparent huge pages (the "hg" flag the kernel shows for
 * MADV_HUGEPAGE), and the partial page after them not; freeing a block
 * takes the advice back (checked on blocks the C library carves from its
 * heap, which stays mapped after a free: glibc's threshold for mapping a
 * block on its own is raised for that). Smaller blocks stay 64-byte
 * aligned. A size whose rounding would wrap is refused. Skipped, naming
 * why, where the kernel has no huge pages to advise or shows no VmFlags. */
Test(tensor, default_allocator_large_blocks_on_huge_pages) {
  ad_alloc_fn fn;
  void *ud;
  ad_get_allocator(ctx, &fn, &ud);
  cr_assert_null(fn(ud, NULL, 0, SIZE_MAX));
  cr_assert_null(fn(ud, NULL, 0, SIZE_MAX - 10));
#if defined(__GLIBC__)
  (void)mallopt(M_MMAP_THRESHOLD, 64 << 20); /* a sanitizer's allocator may refuse it */
#endif
  int64_t small = 1000, big = (3 << 20) / 4; /* 3 MiB of floats */
  ad_tensor *a = ad_zeros(ctx, AD_F32, 1, &small), *b = ad_ones(ctx, AD_F32, 1, &big);
  cr_assert(a && b);
  cr_assert_eq((uintptr_t)a->data % 64, 0);
  cr_assert_eq((uintptr_t)b->data % ((uintptr_t)2 << 20), 0, "a 3 MiB block at %p", b->data);
  cr_assert_eq(ad_tensor_get(b, big - 1), 1.0);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  size_t probe_n = (size_t)4 << 20;
  void *probe = mmap(NULL, probe_n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert(probe != MAP_FAILED);
  int advised = madvise(probe, probe_n, MADV_HUGEPAGE);
  munmap(probe, probe_n);
  if (advised != 0) cr_skip_test("this kernel takes no MADV_HUGEPAGE advice");
  char head[512], tail[512], after[512];
  if (!vm_flags_at(b->data, head, sizeof head)) cr_skip_test("/proc/self/smaps shows no VmFlags");
  cr_assert(vm_flags_at((char *)b->data + (5 << 19), tail, sizeof tail));
  cr_assert_not_null(strstr(head, " hg"), "first 2 MiB: VmFlags%s", head);
  cr_assert_null(strstr(tail, " hg"), "the partial page after them: VmFlags%s", tail);
  void *at = b->data;
  ad_tensor_free(b);
  b = NULL;
  if (vm_flags_at(at, after, sizeof after)) /* still mapped: the heap's */
    cr_assert_null(strstr(after, " hg"), "freed, still advised: VmFlags%s", after);
#else
  cr_skip_test("huge pages are advised on Linux only");
#endif
  ad_tensor_free(a);
  ad_tensor_free(b);
}
