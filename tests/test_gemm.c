/* test_gemm.c: the built-in GEMM (every kernel the CPU has: portable,
 * AVX2, AVX-512, and the reference loop) and the public ad_gemm_f32/f64
 * against a naive triple loop in double precision: random shapes in 0..70,
 * the model shapes, shapes that cross the cache blocks, all four transpose
 * combinations, padded leading dimensions, alpha and beta. Padding of C must
 * be left alone; with beta == 0, C is not read (it starts as NaN); padding of
 * A and B is NaN, so reading it shows up. */
#include "ad_ext.h"
#include "kernels/kernels.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if !defined(__STDC_NO_THREADS__)
#include <threads.h>
#endif

#define SENTINEL 12345.0
#define K_PUBLIC 100 /* run ad_gemm_f32/f64 instead of a built-in kernel */

typedef struct gcase {
  bool ta, tb;
  int64_t m, n, k, lda, ldb, ldc;
  double alpha, beta;
} gcase;

/* -2 BLAS, -1 reference loop, 0 best, 1 portable, 2 AVX2, 3 AVX-512; + 16 always packs A and
 * op(B), + 32 never (B not transposed read in place); and the public call */
static const int kernels[] = {-2, -1, 1, 2, 3, 17, 18, 19, 33, 34, 35, 0, K_PUBLIC};

static bool kernel_available(int kernel) {
  if (kernel == K_PUBLIC) return true;
  return ad_gemm_builtin(kernel, AD_F32, false, false, 0, 0, 0, 1, NULL, 1, NULL, 1, 0, NULL, 1) !=
         NULL;
}

static double get(ad_dtype dt, const void *p, int64_t i) {
  return dt == AD_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

static void set(ad_dtype dt, void *p, int64_t i, double v) {
  if (dt == AD_F32)
    ((float *)p)[i] = (float)v;
  else
    ((double *)p)[i] = v;
}

static void *alloc_elems(ad_dtype dt, int64_t n) {
  void *p = malloc((size_t)(n > 0 ? n : 1) * ad_dtype_size(dt));
  cr_assert_not_null(p);
  return p;
}

/* The reference's sum of x[p] y[p] in order, and of their magnitudes.
 * The sanitizers leave this loop alone: it reads only the test's own
 * copies (k doubles each, made just before), and checked it is nearly all
 * of this file's time in the sanitizer build (wide_model_shapes: 9 s of
 * 2.5G checked reads; 3 s unchecked); every kernel it checks, and the
 * copying, are instrumented as before. */
#if defined(__has_attribute)
#if __has_attribute(no_sanitize)
__attribute__((no_sanitize("address", "undefined")))
#endif
#endif
static double
dot(const double *restrict x, const double *restrict y, int64_t k, double *sabs) {
  double s = 0, a = 0;
  for (int64_t p = 0; p < k; p++) {
    s += x[p] * y[p];
    a += fabs(x[p] * y[p]);
  }
  *sabs = a;
  return s;
}

/* Runs g with kernel on fresh random data; returns the number of wrong
 * elements (reported through cr_log on the first few). */
static int run_case(const gcase *g, ad_dtype dt, int kernel, ad_rng *rng) {
  int64_t ar = g->ta ? g->k : g->m, ac = g->ta ? g->m : g->k;
  int64_t br = g->tb ? g->n : g->k, bc = g->tb ? g->k : g->n;
  cr_assert(g->lda >= (ac > 1 ? ac : 1) && g->ldb >= (bc > 1 ? bc : 1) &&
            g->ldc >= (g->n > 1 ? g->n : 1));
  void *a = alloc_elems(dt, ar * g->lda), *b = alloc_elems(dt, br * g->ldb);
  void *c = alloc_elems(dt, g->m * g->ldc);
  double *c0 = malloc((size_t)(g->m * g->ldc + 1) * sizeof(double));
  cr_assert_not_null(c0);
  for (int64_t i = 0; i < ar; i++)
    for (int64_t j = 0; j < g->lda; j++)
      set(dt, a, i * g->lda + j, j < ac ? 2 * ad_rng_uniform(rng) - 1 : NAN);
  for (int64_t i = 0; i < br; i++)
    for (int64_t j = 0; j < g->ldb; j++)
      set(dt, b, i * g->ldb + j, j < bc ? 2 * ad_rng_uniform(rng) - 1 : NAN);
  for (int64_t i = 0; i < g->m; i++)
    for (int64_t j = 0; j < g->ldc; j++) {
      double v = j >= g->n ? SENTINEL : g->beta == 0 ? NAN : 2 * ad_rng_uniform(rng) - 1;
      set(dt, c, i * g->ldc + j, v);
      c0[i * g->ldc + j] = get(dt, c, i * g->ldc + j);
    }

  if (kernel == K_PUBLIC) {
    if (dt == AD_F32)
      ad_gemm_f32(g->ta, g->tb, g->m, g->n, g->k, (float)g->alpha, a, g->lda, b, g->ldb,
                  (float)g->beta, c, g->ldc);
    else
      ad_gemm_f64(g->ta, g->tb, g->m, g->n, g->k, g->alpha, a, g->lda, b, g->ldb, g->beta, c,
                  g->ldc);
  } else {
    const char *name = ad_gemm_builtin(kernel, dt, g->ta, g->tb, g->m, g->n, g->k, g->alpha, a,
                                       g->lda, b, g->ldb, g->beta, c, g->ldc);
    cr_assert_not_null(name);
  }

  /* the reference reads op(A)'s rows and op(B)'s columns as rows of k
   * doubles: the same products summed in the same order as reading A and B
   * in place, without the strided reads (most of this test's time, most of
   * all under the sanitizers) */
  double *opa = malloc((size_t)(g->m * g->k + 1) * sizeof(double));
  double *opb = malloc((size_t)(g->n * g->k + 1) * sizeof(double));
  cr_assert(opa && opb);
  for (int64_t i = 0; i < g->m; i++)
    for (int64_t p = 0; p < g->k; p++)
      opa[i * g->k + p] = get(dt, a, g->ta ? p * g->lda + i : i * g->lda + p);
  for (int64_t j = 0; j < g->n; j++)
    for (int64_t p = 0; p < g->k; p++)
      opb[j * g->k + p] = get(dt, b, g->tb ? j * g->ldb + p : p * g->ldb + j);

  double eps = dt == AD_F32 ? 0x1p-23 : 0x1p-52;
  int bad = 0;
  for (int64_t i = 0; i < g->m; i++)
    for (int64_t j = 0; j < g->ldc; j++) {
      double got = get(dt, c, i * g->ldc + j), want, bound;
      if (j >= g->n) {
        want = SENTINEL, bound = 0;
      } else {
        double sabs, s = dot(opa + i * g->k, opb + j * g->k, g->k, &sabs);
        double cb = g->beta == 0 ? 0 : g->beta * c0[i * g->ldc + j];
        want = g->alpha * s + cb;
        bound = 4 * eps * (double)(g->k + 2) * (fabs(g->alpha) * sabs + fabs(cb)) + 1e-300;
      }
      if (!(fabs(got - want) <= bound)) {
        if (bad < 3)
          cr_log_error("%s kernel %d %s%s m=%lld n=%lld k=%lld lda=%lld ldb=%lld ldc=%lld "
                       "alpha=%g beta=%g: C[%lld][%lld] = %.17g, want %.17g (bound %.3g)",
                       ad_dtype_name(dt), kernel, g->ta ? "At" : "A", g->tb ? "Bt" : "B",
                       (long long)g->m, (long long)g->n, (long long)g->k, (long long)g->lda,
                       (long long)g->ldb, (long long)g->ldc, g->alpha, g->beta, (long long)i,
                       (long long)j, got, want, bound);
        bad++;
      }
    }
  free(a), free(b), free(c), free(c0), free(opa), free(opb);
  return bad;
}

/* Every available kernel on g; fails on the first wrong kernel. */
static void check_all_kernels(const gcase *g, ad_dtype dt, ad_rng *rng) {
  for (size_t q = 0; q < sizeof kernels / sizeof *kernels; q++) {
    if (!kernel_available(kernels[q])) continue;
    int bad = run_case(g, dt, kernels[q], rng);
    cr_assert_eq(bad, 0, "%s kernel %d: %d wrong elements for %s%s m=%lld n=%lld k=%lld",
                 ad_dtype_name(dt), kernels[q], bad, g->ta ? "At" : "A", g->tb ? "Bt" : "B",
                 (long long)g->m, (long long)g->n, (long long)g->k);
  }
}

static gcase make_case(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t pad_a,
                       int64_t pad_b, int64_t pad_c, double alpha, double beta) {
  int64_t ac = ta ? m : k, bc = tb ? k : n;
  gcase g = {ta,
             tb,
             m,
             n,
             k,
             (ac > 1 ? ac : 1) + pad_a,
             (bc > 1 ? bc : 1) + pad_b,
             (n > 1 ? n : 1) + pad_c,
             alpha,
             beta};
  return g;
}

static void random_shapes(ad_dtype dt, uint64_t seed, int count) {
  static const double alphas[] = {1, 0.5, -2, 0};
  static const double betas[] = {0, 1, -0.5};
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  for (int t = 0; t < count; t++) {
    bool ta = ad_rng_below(&rng, 2), tb = ad_rng_below(&rng, 2);
    int64_t m = (int64_t)ad_rng_below(&rng, 71), n = (int64_t)ad_rng_below(&rng, 71);
    int64_t k = (int64_t)ad_rng_below(&rng, 71);
    bool pad = ad_rng_below(&rng, 2);
    gcase g = make_case(
        ta, tb, m, n, k, pad ? (int64_t)ad_rng_below(&rng, 6) : 0,
        pad ? (int64_t)ad_rng_below(&rng, 6) : 0, pad ? (int64_t)ad_rng_below(&rng, 6) : 0,
        t % 5 == 4 ? alphas[ad_rng_below(&rng, 4)] : 1, betas[ad_rng_below(&rng, 3)]);
    check_all_kernels(&g, dt, &rng);
  }
}

Test(gemm, random_shapes_f32, .timeout = 300) { random_shapes(AD_F32, 1, 400); }
Test(gemm, random_shapes_f64, .timeout = 300) { random_shapes(AD_F64, 2, 400); }

/* Every transpose combination and edge of the register tile around the tile
 * sizes (6 or 8 rows; 8..64 columns depending on the kernel): whole tiles,
 * a tail of every size, and the 1-3 rows that join the last whole tile. */
static void tile_edges(ad_dtype dt) {
  static const int64_t ms[] = {1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 19};
  static const int64_t ns[] = {1, 3, 4, 8, 9, 16, 17, 31, 32, 33, 64, 65};
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  for (int tt = 0; tt < 4; tt++)
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
      for (size_t j = 0; j < sizeof ns / sizeof *ns; j++) {
        gcase g = make_case(tt & 1, tt & 2, ms[i], ns[j], 1 + (int64_t)(i + j) % 9, (int64_t)j % 2,
                            (int64_t)i % 3, (int64_t)(i + j) % 2, 1, j % 2 ? 0 : 0.5);
        check_all_kernels(&g, dt, &rng);
      }
}

Test(gemm, tile_edges_f32) { tile_edges(AD_F32); }
Test(gemm, tile_edges_f64) { tile_edges(AD_F64); }

/* k == 0 and alpha == 0: C = beta C, A and B unread (they may be NULL). */
Test(gemm, empty_k_and_zero_alpha) {
  for (size_t q = 0; q < sizeof kernels / sizeof *kernels; q++) {
    int kernel = kernels[q];
    if (!kernel_available(kernel)) continue;
    for (int d = 0; d < 2; d++) {
      ad_dtype dt = d ? AD_F64 : AD_F32;
      double cv[6] = {1, 2, 3, 4, 5, 6};
      void *c = alloc_elems(dt, 6);
      for (int beta_i = 0; beta_i < 2; beta_i++) {
        double beta = beta_i ? 2 : 0;
        for (int z = 0; z < 2; z++) {
          for (int i = 0; i < 6; i++) set(dt, c, i, beta == 0 ? NAN : cv[i]);
          int64_t k = z ? 0 : 4;
          double alpha = z ? 1 : 0;
          float af[8] = {0}, bf[12] = {0};
          double ad[8] = {0}, bd[12] = {0};
          const void *a = k ? (d ? (void *)ad : (void *)af) : NULL;
          const void *b = k ? (d ? (void *)bd : (void *)bf) : NULL;
          if (kernel == K_PUBLIC) {
            if (d)
              ad_gemm_f64(false, false, 2, 3, k, alpha, a, 4, b, 3, beta, c, 3);
            else
              ad_gemm_f32(false, false, 2, 3, k, (float)alpha, a, 4, b, 3, (float)beta, c, 3);
          } else {
            ad_gemm_builtin(kernel, dt, false, false, 2, 3, k, alpha, a, 4, b, 3, beta, c, 3);
          }
          for (int i = 0; i < 6; i++)
            cr_assert_eq(get(dt, c, i), beta * cv[i], "kernel %d %s k=%lld beta=%g: C[%d] = %g",
                         kernel, ad_dtype_name(dt), (long long)k, beta, i, get(dt, c, i));
        }
      }
      free(c);
    }
  }
}

/* The products of the seed (784-64-64-10, batch 32) and wide
 * (784-1024-1024-10, batch 256) models, forward and backward. */
typedef struct mshape {
  int64_t m, n, k;
  bool ta, tb;
} mshape;

/* W as [out, in] (nn_dense: Y = X W^T, dW = dY^T X, dX = dY W) and as [in, out]. */
static const mshape seed_shapes[] = {
    {32, 64, 784, false, true},  {32, 64, 64, false, true},  {32, 10, 64, false, true},
    {64, 784, 32, true, false},  {64, 64, 32, true, false},  {10, 64, 32, true, false},
    {32, 784, 64, false, false}, {32, 64, 64, false, false}, {32, 64, 10, false, false},
    {32, 64, 784, false, false}, {32, 10, 64, false, false}, {784, 64, 32, true, false},
    {64, 10, 32, true, false},   {32, 64, 64, false, true},  {32, 64, 10, false, true},
    {32, 784, 64, false, true},
};

static const mshape wide_shapes[] = {
    {256, 1024, 784, false, true},  {256, 10, 1024, false, true},   {1024, 784, 256, true, false},
    {10, 1024, 256, true, false},   {256, 784, 1024, false, false}, {256, 1024, 10, false, false},
    {256, 1024, 784, false, false}, {784, 1024, 256, true, false},  {1024, 10, 256, true, false},
    {256, 784, 1024, false, true},
};

Test(gemm, seed_model_shapes, .timeout = 300) {
  ad_rng rng;
  ad_rng_seed(&rng, 4);
  for (int d = 0; d < 2; d++)
    for (size_t i = 0; i < sizeof seed_shapes / sizeof *seed_shapes; i++) {
      const mshape *s = &seed_shapes[i];
      gcase g = make_case(s->ta, s->tb, s->m, s->n, s->k, 0, 0, 0, 1, i % 2 ? 1 : 0);
      check_all_kernels(&g, d ? AD_F64 : AD_F32, &rng);
    }
}

Test(gemm, wide_model_shapes, .timeout = 600) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  for (size_t i = 0; i < sizeof wide_shapes / sizeof *wide_shapes; i++) {
    const mshape *s = &wide_shapes[i];
    gcase g = make_case(s->ta, s->tb, s->m, s->n, s->k, 0, 0, 0, 1, 0);
    for (size_t q = 0; q < sizeof kernels / sizeof *kernels; q++) /* best and public */
      if (kernels[q] == 0 || kernels[q] == K_PUBLIC)
        cr_assert_eq(run_case(&g, AD_F32, kernels[q], &rng), 0);
  }
}

/* Shapes beyond one cache block in each direction: several k blocks (beta
 * applies to the first only), several row blocks, several column blocks. */
Test(gemm, across_blocks, .timeout = 300) {
  ad_rng rng;
  ad_rng_seed(&rng, 6);
  static const mshape shapes[] = {
      {13, 40, 1100, false, false}, {9, 35, 700, true, true},   {200, 37, 20, false, true},
      {130, 19, 530, true, false},  {5, 4200, 3, false, false}, {3, 2100, 9, true, true},
  };
  for (int d = 0; d < 2; d++)
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
      const mshape *s = &shapes[i];
      gcase g = make_case(s->ta, s->tb, s->m, s->n, s->k, 1, 2, 3, i % 2 ? -1.5 : 1, 0.25);
      check_all_kernels(&g, d ? AD_F64 : AD_F32, &rng);
    }
}

/* A deep f32 product (k = 100000, values in [0, 1), so no cancellation)
 * keeps every kernel's usual accuracy: each k block is summed from 0 and
 * then added to C, so the rounding error grows with k / 256 + 256, not
 * with k. Every kernel and OpenBLAS are within 9e-7 of sum |a b| here (the
 * bound 3e-6 leaves 3x that); the reference loop, when it added each
 * product into C (the forms without B transposed), was off by 1.2e-5. */
Test(gemm, deep_products_keep_their_accuracy, .timeout = 300) {
  const int64_t m = 8, n = 8, k = 100000;
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  float *a = alloc_elems(AD_F32, m * k), *b = alloc_elems(AD_F32, k * n),
        *c = alloc_elems(AD_F32, m * n);
  for (int64_t i = 0; i < m * k; i++) a[i] = (float)ad_rng_uniform(&rng);
  for (int64_t i = 0; i < k * n; i++) b[i] = (float)ad_rng_uniform(&rng);
  double *want = calloc((size_t)(m * n), sizeof *want);
  cr_assert_not_null(want);
  for (int64_t i = 0; i < m; i++) /* a is [m, k] and b [k, n], both read as stored */
    for (int64_t p = 0; p < k; p++)
      for (int64_t j = 0; j < n; j++) want[i * n + j] += (double)a[i * k + p] * b[p * n + j];
  int ran = 0;
  for (size_t q = 0; q < sizeof kernels / sizeof *kernels; q++)
    for (int form = 0; form < 4; form++) {
      bool ta = form & 1, tb = form & 2;
      /* the same product in every form: op(A) = a, op(B) = b, so a
       * transposed operand is read with the leading dimension of its
       * transpose; the values are those of a^T or b^T */
      float *at = ta ? alloc_elems(AD_F32, m * k) : a, *bt = tb ? alloc_elems(AD_F32, k * n) : b;
      for (int64_t i = 0; ta && i < m; i++)
        for (int64_t p = 0; p < k; p++) at[p * m + i] = a[i * k + p];
      for (int64_t p = 0; tb && p < k; p++)
        for (int64_t j = 0; j < n; j++) bt[j * k + p] = b[p * n + j];
      bool done = true;
      if (kernels[q] == K_PUBLIC)
        ad_gemm_f32(ta, tb, m, n, k, 1, at, ta ? m : k, bt, tb ? k : n, 0, c, n);
      else
        done = ad_gemm_builtin(kernels[q], AD_F32, ta, tb, m, n, k, 1, at, ta ? m : k, bt,
                               tb ? k : n, 0, c, n) != NULL;
      if (ta) free(at);
      if (tb) free(bt);
      if (!done) break; /* not on this CPU or build */
      ran++;
      double worst = 0;
      for (int64_t e = 0; e < m * n; e++) {
        double err = fabs((double)c[e] - want[e]) / want[e]; /* want is sum |a b| here */
        worst = err > worst ? err : worst;
      }
      cr_log_info("kernel %d, form %d: worst error %.3g of sum |a b|", kernels[q], form, worst);
      cr_assert_lt(worst, 3e-6, "kernel %d, form %d: a deep product off by %.3g of sum |a b|",
                   kernels[q], form, worst);
    }
  cr_assert_geq(ran, 12); /* the reference loop, the portable kernel and the public call at least */
  free(a), free(b), free(c), free(want);
}

/* Packing A or reading it in place, and packing op(B) or reading B in
 * place, are the kernels' choices (by shape, see gemm.c); for the engine's
 * calls (alpha 1, beta 0 or 1) they must never change a bit. Each kernel,
 * on shapes at every branch of the rules (A^T in place with close rows,
 * packed for many columns, packed for few columns with rows far apart, in
 * place for tiny k; B in place for few rows, with a partial last panel,
 * over several k blocks, and packed for many rows) and with row counts
 * whose 1-3 row tail joins the last whole tile when A is read in place (but
 * not when packed), several k blocks and both betas, gives the same bits
 * with both packed, both in place where they can be, and as it chooses.
 * (With another alpha, clang's FMA contraction can differ between rows of a
 * tile: gemm.c's top comment.) */
Test(gemm, in_place_or_packed_same_bits, .timeout = 300) {
  static const mshape shapes[] = {
      {64, 300, 32, true, false},   {65, 784, 64, true, false},  {600, 300, 80, true, false},
      {601, 40, 80, true, false},   {600, 40, 40, true, false},  {520, 40, 80, true, false},
      {105, 300, 90, false, false}, {9, 50, 600, true, true},    {17, 70, 300, true, false},
      {99, 33, 530, false, true},   {195, 40, 270, true, false}, {40, 75, 600, false, false},
      {7, 33, 300, false, false},   {120, 70, 200, true, false}, {64, 50, 31, true, false},
  };
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  for (int kern = 1; kern <= 3; kern++)
    for (ad_dtype dt = AD_F32; dt <= AD_F64; dt++)
      for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const mshape *s = &shapes[i];
        if (!ad_gemm_builtin(kern, dt, false, false, 0, 0, 0, 1, NULL, 1, NULL, 1, 0, NULL, 1))
          continue; /* not on this CPU */
        int64_t lda = (s->ta ? s->m : s->k) + 1, ldb = (s->tb ? s->k : s->n) + 2, ldc = s->n;
        int64_t na = (s->ta ? s->k : s->m) * lda, nb = (s->tb ? s->n : s->k) * ldb;
        double beta = i % 2 ? 1 : 0;
        void *a = alloc_elems(dt, na), *b = alloc_elems(dt, nb), *c0 = alloc_elems(dt, s->m * ldc),
             *c[3];
        for (int64_t e = 0; e < na; e++) set(dt, a, e, ad_rng_uniform(&rng) - 0.5);
        for (int64_t e = 0; e < nb; e++) set(dt, b, e, ad_rng_uniform(&rng) - 0.5);
        for (int64_t e = 0; e < s->m * ldc; e++) set(dt, c0, e, ad_rng_uniform(&rng) - 0.5);
        size_t bytes = (size_t)(s->m * ldc) * ad_dtype_size(dt);
        for (int v = 0; v < 3; v++) {
          c[v] = alloc_elems(dt, s->m * ldc);
          memcpy(c[v], c0, bytes);
          ad_gemm_builtin(kern + 16 * v, dt, s->ta, s->tb, s->m, s->n, s->k, 1, a, lda, b, ldb,
                          beta, c[v], ldc);
        }
        cr_assert(!memcmp(c[0], c[1], bytes) && !memcmp(c[0], c[2], bytes),
                  "kernel %d, %s, %lld x %lld x %lld%s, beta %g: packing A or B changed bits", kern,
                  ad_dtype_name(dt), (long long)s->m, (long long)s->n, (long long)s->k,
                  s->ta ? " A^T" : "", beta);
        free(a), free(b), free(c0), free(c[0]), free(c[1]), free(c[2]);
      }
}

/* One product on random data, m x n x k with op(A) and op(B) rows one and
 * three elements longer than needed, by kernel kern alone and with the flag
 * `alt` added (a way of computing that must not change the bits), each
 * with the kernel's own choice of packing, all packed, and nothing packed
 * that can be read in place: returns whether each pair gave the same bits. */
static bool same_bits_with(int kern, int alt, ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n,
                           int64_t k, int64_t ldc, double beta, ad_rng *rng) {
  int64_t lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 3;
  int64_t na = (ta ? k : m) * lda, nb = (tb ? n : k) * ldb, nc = m * ldc;
  void *a = alloc_elems(dt, na), *b = alloc_elems(dt, nb), *c[6];
  for (int64_t e = 0; e < na; e++) set(dt, a, e, ad_rng_uniform(rng) - 0.5);
  for (int64_t e = 0; e < nb; e++) set(dt, b, e, ad_rng_uniform(rng) - 0.5);
  c[0] = alloc_elems(dt, nc);
  for (int64_t e = 0; e < nc; e++) set(dt, c[0], e, ad_rng_uniform(rng) - 0.5);
  size_t bytes = (size_t)nc * ad_dtype_size(dt);
  for (int v = 1; v < 6; v++) c[v] = alloc_elems(dt, nc), memcpy(c[v], c[0], bytes);
  for (int v = 0; v < 6; v++)
    ad_gemm_builtin(kern + (v & 1) * alt + (v >> 1) * 16, dt, ta, tb, m, n, k, 1, a, lda, b, ldb,
                    beta, c[v], ldc);
  bool same =
      !memcmp(c[0], c[1], bytes) && !memcmp(c[2], c[3], bytes) && !memcmp(c[4], c[5], bytes);
  free(a), free(b);
  for (int v = 0; v < 6; v++) free(c[v]);
  return same;
}

/* The narrow tile (one vector per row) runs the panels of one vector's
 * width or less: a narrow product (a classifier's 10 outputs) and the last
 * panel of some wider ones. For the engine's calls (alpha 1, beta 0 or 1)
 * it must give the bits of the two-vector tile it replaced there (kernel
 * + 64 keeps that tile): widths around one and two vectors of each kernel,
 * row counts with tails of every size (and the 1-3 rows that join the last
 * tile), up to several k blocks, each transpose, A and B packed and in
 * place. Both tiles write their update as the FMA intrinsic, so the clang
 * build of the CI's misuse suite (which kept the narrow tile's accumulators
 * in memory under ASan and did not fuse them) is held to it as well. The
 * portable kernel (1) has no narrow tile: its runs compare a tile with
 * itself, and a CPU with none but it reports the test skipped. */
Test(gemm, narrow_tile_same_bits, .timeout = 300) {
  static const int64_t ns[] = {1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16, 17, 33, 40, 42, 48, 49, 1000};
  static const int64_t ms[] = {1, 3, 8, 9, 10, 11, 13, 15, 32, 70, 256};
  static const int64_t ks[] = {1, 10, 64, 300, 1100};
  ad_rng rng;
  ad_rng_seed(&rng, 12);
  int narrow_runs = 0;
  for (int kern = 1; kern <= 3; kern++)
    for (ad_dtype dt = AD_F32; dt <= AD_F64; dt++) {
      if (!ad_gemm_builtin(kern, dt, false, false, 0, 0, 0, 1, NULL, 1, NULL, 1, 0, NULL, 1)) {
        cr_log_info("narrow_tile_same_bits: kernel %d skipped: not on this CPU or build", kern);
        break;
      }
      for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
        for (size_t j = 0; j < sizeof ns / sizeof *ns; j++) {
          int64_t m = ms[i], n = ns[j], k = ks[(i + j) % 5];
          while (m * n * k > 400000 && k > 1) k /= 2;
          bool ta = (i + j) % 2, tb = (i / 2 + j) % 2;
          double beta = (i + 2 * j) % 3 ? 0 : 1;
          /* narrow and wide tiles (+ 64: the wide one only) */
          cr_assert(same_bits_with(kern, 64, dt, ta, tb, m, n, k, n + 2, beta, &rng),
                    "kernel %d, %s, %lld x %lld x %lld%s%s, beta %g: the narrow tile changed bits",
                    kern, ad_dtype_name(dt), (long long)m, (long long)n, (long long)k,
                    ta ? " A^T" : "", tb ? " B^T" : "", beta);
          int64_t vl = (kern == 3 ? 64 : 32) / (int64_t)ad_dtype_size(dt), last = n % (2 * vl);
          if (kern >= 2 && last > 0 && last <= vl) narrow_runs++; /* the narrow tile ran */
        }
    }
  if (!narrow_runs) cr_skip_test("narrow_tile_same_bits: no kernel with a narrow tile here");
}

/* The row strips (gemm.c: one row tile at a time across all the panels,
 * which the kernels take for shallow blocks of C with rows 4 KiB apart)
 * compute the same tiles as the panels' order: the same bits, with every
 * packing, for row counts that leave each kind of tail, shallow and deep
 * blocks, and C's rows 4 KiB apart (where the rule takes the strips by
 * itself) or not. */
Test(gemm, row_strips_same_bits, .timeout = 300) {
  static const int64_t ms[] = {1, 3, 8, 9, 11, 15, 16, 17, 19, 23, 70, 256};
  static const int64_t ns[] = {1, 10, 33, 128, 300};
  static const int64_t ks[] = {1, 5, 10, 32, 33, 300};
  ad_rng rng;
  ad_rng_seed(&rng, 13);
  int ran = 0;
  for (int kern = 1; kern <= 3; kern++)
    for (ad_dtype dt = AD_F32; dt <= AD_F64; dt++) {
      if (!ad_gemm_builtin(kern, dt, false, false, 0, 0, 0, 1, NULL, 1, NULL, 1, 0, NULL, 1)) {
        cr_log_info("row_strips_same_bits: kernel %d skipped: not on this CPU or build", kern);
        break;
      }
      for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
        for (size_t j = 0; j < sizeof ns / sizeof *ns; j++) {
          int64_t m = ms[i], n = ns[j], k = ks[(i + j) % 6];
          while (m * n * k > 400000 && k > 1) k /= 2;
          bool ta = (i + j) % 2, tb = (i / 3 + j) % 2;
          int64_t ldc = (i + j) % 3 ? 4096 / (int64_t)ad_dtype_size(dt) : n + 2; /* 4 KiB or not */
          double beta = (i + 2 * j) % 3 ? 0 : 1;
          /* the kernel's own order and the strips (+ 128: forced) */
          cr_assert(same_bits_with(kern, 128, dt, ta, tb, m, n, k, ldc, beta, &rng),
                    "kernel %d, %s, %lld x %lld x %lld%s%s, ldc %lld, beta %g: the row strips "
                    "changed bits",
                    kern, ad_dtype_name(dt), (long long)m, (long long)n, (long long)k,
                    ta ? " A^T" : "", tb ? " B^T" : "", (long long)ldc, beta);
          ran++;
        }
    }
  if (!ran) cr_skip_test("row_strips_same_bits: no built-in kernel here");
}

/* A column C (n = 1 with C's elements adjacent: a matrix times a vector)
 * of a transposed A, or of a strided vector, is computed as the row C^T =
 * op(B)^T op(A)^T, and a row C (m = 1) four panels at a time (gemm.c,
 * S_row4): each element must keep the bits it has as an element of a
 * wider product (n = 3, m = 3), whose tiles sum the same products in the
 * same order. (A column of A's rows and a contiguous vector takes S_gemv,
 * whose order test gemv_order checks.) Every kernel, both dtypes, each
 * transpose (A and B packed or read in place), beta 0 and 1, depths of one
 * and of several k blocks, widths with and without a whole group of four
 * panels. */
static bool column_or_row_keeps_bits(int kern, ad_dtype dt, bool ta, bool tb, bool column,
                                     int64_t len, int64_t k, double beta, ad_rng *rng) {
  /* the narrow product: m x 1 (column) or 1 x n (row); the wide one has 3 of the narrow side,
   * the first the narrow product's */
  int64_t m = column ? len : 3, n = column ? 3 : len;
  int64_t lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 3;
  int64_t na = (ta ? k : m) * lda, nb = (tb ? n : k) * ldb;
  void *a = alloc_elems(dt, na), *b = alloc_elems(dt, nb), *cw = alloc_elems(dt, m * n),
       *cn = alloc_elems(dt, len);
  for (int64_t e = 0; e < na; e++) set(dt, a, e, ad_rng_uniform(rng) - 0.5);
  for (int64_t e = 0; e < nb; e++) set(dt, b, e, ad_rng_uniform(rng) - 0.5);
  for (int64_t e = 0; e < m * n; e++) set(dt, cw, e, ad_rng_uniform(rng) - 0.5);
  for (int64_t e = 0; e < len; e++) set(dt, cn, e, get(dt, cw, column ? e * n : e));
  ad_gemm_builtin(kern, dt, ta, tb, m, n, k, 1, a, lda, b, ldb, beta, cw, n);
  if (column) /* op(B)'s first column: B's first column (B) or first row (B^T) */
    ad_gemm_builtin(kern, dt, ta, tb, m, 1, k, 1, a, lda, b, ldb, beta, cn, 1);
  else /* op(A)'s first row: A's first row (A) or first column (A^T) */
    ad_gemm_builtin(kern, dt, ta, tb, 1, n, k, 1, a, lda, b, ldb, beta, cn, n);
  bool same = true;
  for (int64_t e = 0; e < len; e++) {
    int64_t w = column ? e * n : e;
    size_t es = ad_dtype_size(dt);
    same &= !memcmp((char *)cn + (size_t)e * es, (char *)cw + (size_t)w * es, es);
  }
  free(a), free(b), free(cw), free(cn);
  return same;
}

Test(gemm, column_and_row_products_same_bits, .timeout = 300) {
  static const int64_t lens[] = {2, 3, 17, 64, 127, 128, 129, 256, 300, 1000};
  static const int64_t ks[] = {1, 10, 300, 1100};
  ad_rng rng;
  ad_rng_seed(&rng, 14);
  int ran = 0;
  for (int kern = 1; kern <= 3; kern++)
    for (ad_dtype dt = AD_F32; dt <= AD_F64; dt++) {
      if (!ad_gemm_builtin(kern, dt, false, false, 0, 0, 0, 1, NULL, 1, NULL, 1, 0, NULL, 1)) {
        cr_log_info("column_and_row_products_same_bits: kernel %d skipped: not on this CPU or "
                    "build",
                    kern);
        break;
      }
      for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
        for (size_t j = 0; j < sizeof ks / sizeof *ks; j++)
          for (int v = 0; v < 8; v++) {
            bool ta = v & 1, tb = v & 2, column = v & 4;
            if (column && !ta && tb) continue; /* S_gemv's (contiguous x) */
            double beta = (i + j) % 2;
            cr_assert(
                column_or_row_keeps_bits(kern, dt, ta, tb, column, lens[i], ks[j], beta, &rng),
                "kernel %d, %s, %s of %lld x depth %lld%s%s, beta %g: not the bits of the "
                "wider product",
                kern, ad_dtype_name(dt), column ? "column" : "row", (long long)lens[i],
                (long long)ks[j], ta ? " A^T" : "", tb ? " B^T" : "", beta);
            ran++;
          }
    }
  if (!ran) cr_skip_test("column_and_row_products_same_bits: no built-in kernel here");
}

/* S_gemv's order (gemm.c): row i's products a_ip x_p in 32 chains, lane j
 * taking p = j (mod 32) of each block of 4096 in order, the lanes then
 * added pairwise (j + 16, then j + 8, ...) and the block's sum added to
 * the row's; alpha times that plus beta y. fused: each update one FMA (the
 * AVX2 and AVX-512 kernels), else a product then a sum (the portable one,
 * built for a target without FMA). */
static double gemv_ref(ad_dtype dt, bool fused, int64_t k, const void *arow, const void *x,
                       double alpha, double beta, double y) {
  if (dt == AD_F32) {
    const float *a = arow, *v = x;
    float tot = 0, l[32];
    for (int64_t p0 = 0; p0 < k; p0 += 4096) {
      int64_t p1 = k - p0 < 4096 ? k : p0 + 4096;
      for (int j = 0; j < 32; j++) l[j] = 0;
      for (int64_t p = p0; p < p1; p++)
        l[(p - p0) % 32] =
            fused ? fmaf(a[p], v[p], l[(p - p0) % 32]) : l[(p - p0) % 32] + a[p] * v[p];
      for (int w = 16; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) l[j] = l[j] + l[j + w];
      tot = p0 == 0 ? l[0] : tot + l[0];
    }
    return beta == 0 ? (float)alpha * tot : (float)alpha * tot + (float)beta * (float)y;
  }
  const double *a = arow, *v = x;
  double tot = 0, l[32];
  for (int64_t p0 = 0; p0 < k; p0 += 4096) {
    int64_t p1 = k - p0 < 4096 ? k : p0 + 4096;
    for (int j = 0; j < 32; j++) l[j] = 0;
    for (int64_t p = p0; p < p1; p++)
      l[(p - p0) % 32] = fused ? fma(a[p], v[p], l[(p - p0) % 32]) : l[(p - p0) % 32] + a[p] * v[p];
    for (int w = 16; w >= 1; w /= 2)
      for (int j = 0; j < w; j++) l[j] = l[j] + l[j + w];
    tot = p0 == 0 ? l[0] : tot + l[0];
  }
  return beta == 0 ? alpha * tot : alpha * tot + beta * y;
}

/* A column product of A's rows and a contiguous vector (B [k, 1] with row
 * step 1, or B^T [1, k]) runs S_gemv: its bits are gemv_ref's on each
 * kernel (the two with FMA give the same bits), for depths around the 32
 * lanes and the 4096-product blocks, row counts around each kernel's
 * groups of rows, alpha and beta. */
Test(gemm, gemv_order, .timeout = 300) {
  static const int64_t ks[] = {1, 5, 31, 32, 33, 100, 4095, 4096, 4097, 9000};
  static const int64_t ms[] = {1, 2, 3, 4, 5, 7, 9, 33};
  ad_rng rng;
  ad_rng_seed(&rng, 15);
  int ran = 0;
  for (int kern = 1; kern <= 3; kern++)
    for (ad_dtype dt = AD_F32; dt <= AD_F64; dt++) {
      if (!ad_gemm_builtin(kern, dt, false, false, 0, 0, 0, 1, NULL, 1, NULL, 1, 0, NULL, 1)) {
        cr_log_info("gemv_order: kernel %d skipped: not on this CPU or build", kern);
        break;
      }
      size_t es = ad_dtype_size(dt);
      for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
        for (size_t j = 0; j < sizeof ks / sizeof *ks; j++) {
          int64_t m = ms[i], k = ks[j], lda = k + 3;
          bool tb = (i + j) % 2;
          double alpha = (i + j) % 3 ? 1.0 : 0.75, beta = j % 2 ? 0.0 : 0.5;
          void *a = alloc_elems(dt, m * lda), *x = alloc_elems(dt, k), *y = alloc_elems(dt, m);
          for (int64_t e = 0; e < m * lda; e++) set(dt, a, e, ad_rng_uniform(&rng) - 0.5);
          for (int64_t e = 0; e < k; e++) set(dt, x, e, ad_rng_uniform(&rng) - 0.5);
          for (int64_t e = 0; e < m; e++) set(dt, y, e, ad_rng_uniform(&rng) - 0.5);
          double want[33];
          for (int64_t r = 0; r < m; r++)
            want[r] = gemv_ref(dt, kern >= 2, k, (char *)a + (size_t)(r * lda) * es, x, alpha, beta,
                               get(dt, y, r));
          ad_gemm_builtin(kern, dt, false, tb, m, 1, k, alpha, a, lda, x, tb ? k : 1, beta, y, 1);
          for (int64_t r = 0; r < m; r++)
            cr_assert(get(dt, y, r) == want[r],
                      "kernel %d, %s, %lld x 1 x %lld%s, row %lld: %.17g, S_gemv's order gives "
                      "%.17g",
                      kern, ad_dtype_name(dt), (long long)m, (long long)k, tb ? " B^T" : "",
                      (long long)r, get(dt, y, r), want[r]);
          free(a), free(x), free(y);
          ran++;
        }
    }
  if (!ran) cr_skip_test("gemv_order: no built-in kernel here");
}

/* Two threads at once, each with its own packing buffer. */
#if !defined(__STDC_NO_THREADS__)
typedef struct thread_job {
  uint64_t seed;
  int bad;
} thread_job;

static int thread_main(void *p) {
  thread_job *job = p;
  ad_rng rng;
  ad_rng_seed(&rng, job->seed);
  for (int t = 0; t < 40 && !job->bad; t++) {
    int64_t m = 1 + (int64_t)ad_rng_below(&rng, 90), n = 1 + (int64_t)ad_rng_below(&rng, 90);
    int64_t k = 1 + (int64_t)ad_rng_below(&rng, 600);
    gcase g = make_case(t & 1, t & 2, m, n, k, 0, 1, 0, 1, 0);
    job->bad += run_case(&g, t & 4 ? AD_F64 : AD_F32, 0, &rng);
  }
  return 0;
}

Test(gemm, two_threads) {
  thrd_t th[2];
  thread_job jobs[2] = {{7, 0}, {8, 0}};
  for (int i = 0; i < 2; i++)
    cr_assert_eq(thrd_create(&th[i], thread_main, &jobs[i]), thrd_success);
  for (int i = 0; i < 2; i++) cr_assert_eq(thrd_join(th[i], NULL), thrd_success);
  cr_assert_eq(jobs[0].bad + jobs[1].bad, 0);
}
#endif

/* One test per kernel, so the log says which ran here and why the others
 * did not: each checks its kernel on the four transpose forms of a product
 * with ragged edges, or skips naming what this CPU or build lacks. The
 * loops above run every available kernel on many more shapes. */
static void one_kernel(int kernel, const char *lacks) {
  if (!kernel_available(kernel)) cr_skip_test("%s", lacks);
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  for (int form = 0; form < 4; form++)
    for (ad_dtype dt = AD_F32; dt <= AD_F64; dt++) {
      gcase g = make_case(form & 1, form & 2, 37, 29, 41, 1, 2, 3, 1, form == 3 ? 1 : 0);
      cr_assert_eq(run_case(&g, dt, kernel, &rng), 0, "kernel %d, form %d, %s", kernel, form,
                   ad_dtype_name(dt));
    }
}

Test(gemm, kernel_avx512) { one_kernel(3, "this CPU lacks AVX-512 (avx512f)"); }
Test(gemm, kernel_avx2) { one_kernel(2, "this CPU lacks AVX2 and FMA"); }
Test(gemm, kernel_portable) { one_kernel(1, "this compiler builds no portable vector kernel"); }
Test(gemm, kernel_blas) { one_kernel(-2, "this build has no BLAS (-Dblas=disabled)"); }

/* ad_transpose_builtin's kernels (the transposition back of a product
 * computed transposed): every kernel this CPU has, tiles whole and ragged,
 * a range of rows; rows outside it are left alone. */
Test(gemm, transpose_every_kernel) {
  static const int64_t shapes[][4] = {{1, 1, 0, 1},      {16, 16, 0, 16}, {37, 29, 3, 35},
                                      {64, 100, 16, 48}, {33, 17, 0, 33}, {8, 40, 1, 7}};
  static const int tk[] = {-1, 1, 2, 3};
  int ran = 0;
  for (int q = 0; q < 4; q++)
    for (ad_dtype dt = AD_F32; dt <= AD_F64; dt++)
      for (int i = 0; i < (int)(sizeof shapes / sizeof *shapes); i++) {
        int64_t m = shapes[i][0], n = shapes[i][1], i0 = shapes[i][2], i1 = shapes[i][3];
        void *t = alloc_elems(dt, m * n), *y = alloc_elems(dt, m * n);
        for (int64_t e = 0; e < m * n; e++) set(dt, t, e, (double)e + 0.5), set(dt, y, e, SENTINEL);
        if (!ad_transpose_builtin(tk[q], dt, m, n, t, y, i0, i1)) {
          free(t), free(y);
          continue;
        }
        ran++;
        for (int64_t r = 0; r < m; r++)
          for (int64_t c = 0; c < n; c++) {
            double want = r >= i0 && r < i1 ? get(dt, t, c * m + r) : SENTINEL;
            cr_assert_eq(get(dt, y, r * n + c), want,
                         "kernel %d, %s, %lld x %lld, element %lld, %lld", tk[q], ad_dtype_name(dt),
                         (long long)m, (long long)n, (long long)r, (long long)c);
          }
        free(t), free(y);
      }
  cr_assert_geq(ran, 12); /* the plain loop and the portable kernel at least */
}

/* The kernel names, and NULL for a kernel that does not exist. */
Test(gemm, kernel_names) {
  const char *best =
      ad_gemm_builtin(0, AD_F32, false, false, 0, 0, 0, 1, NULL, 1, NULL, 1, 0, NULL, 1);
  cr_assert_not_null(best);
  cr_assert(strncmp(best, "builtin-", 8) == 0, "%s", best);
  cr_assert_null(
      ad_gemm_builtin(42, AD_F32, false, false, 0, 0, 0, 1, NULL, 1, NULL, 1, 0, NULL, 1));
  const char *be = ad_gemm_backend();
  cr_assert(strstr(be, "every product") || strstr(be, "above"), "%s", be);
}

/* The dispatch rule for every kind of machine, tested here whatever this
 * machine is: CPU class (0 neither, 1 AVX2 + FMA, 2 AVX-512), the core
 * OpenBLAS names, whether BLAS is linked. */
Test(gemm, dispatch_rule) {
  static const struct {
    int cpu;
    const char *core;
    bool blas, small, large;
    const char *why;
  } cases[] = {
      {2, "Prescott", true, false, false, "Prescott, a generic core"},
      {2, "Cooperlake", true, false, false, "AVX-512 kernel for every product"},
      {2, "SkylakeX", true, false, false, "measured slower"},
      {2, "Haswell", true, false, false, "Haswell: its AVX2 kernels, measured slower"},
      {1, "Haswell", true, false, true, "OpenBLAS (Haswell) above"},
      {1, "zen", true, false, true, "above"},
      {1, "Prescott", true, false, false, "AVX2 kernel for every product"},
      {1, "Sandybridge", true, false, false, "generic core"},
      {1, NULL, true, false, false, "no core"},
      {1, NULL, false, false, false, "AVX2 kernel for every product"},
      {0, "Nehalem", true, true, true, "OpenBLAS for every product"},
      {0, NULL, false, false, false, "portable built-in kernel"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ad_gemm_rule r = ad_gemm_decide(cases[i].cpu, cases[i].core, cases[i].blas);
    cr_assert(r.blas_small == cases[i].small && r.blas_large == cases[i].large,
              "case %zu (cpu %d, %s): BLAS for small %d, large %d", i, cases[i].cpu,
              cases[i].core ? cases[i].core : "NULL", r.blas_small, r.blas_large);
    cr_assert(strstr(r.why, cases[i].why), "case %zu: '%s' lacks '%s'", i, r.why, cases[i].why);
  }
}

/* Which dense-layer products X W^T are computed as (W X^T)^T
 * (kernels/matmul.c): rows a multiple of 32 on every built-in kernel, other
 * row counts up to 160 only on the AVX-512 kernel in f32, never with W^T
 * narrower than 4m there, nor past 512 rows, nor for one row (W X^T would
 * be a column, S_gemv's order). The built-in kernel for the
 * shape decides, so the cases that need AVX-512 skip elsewhere. */
Test(gemm, transposed_product_rule) {
  cr_assert(ad_matmul_xwt_pays(AD_F32, false, true, 32, 64, 784));      /* small: any kernel */
  cr_assert_not(ad_matmul_xwt_pays(AD_F32, false, false, 32, 64, 784)); /* X W: no */
  cr_assert_not(ad_matmul_xwt_pays(AD_F32, true, true, 32, 64, 784));
  cr_assert_not(ad_matmul_xwt_pays(AD_F32, false, true, 120, 1024, 256)); /* k < 512 */
  cr_assert_not(ad_matmul_xwt_pays(AD_F32, false, true, 544, 4096, 784)); /* m > 512 */
  cr_assert_not(ad_matmul_xwt_pays(AD_F32, false, true, 1, 64, 784)); /* one row: W X^T a column */
  if (ad_gemm_kernel_of(1024, 120, 784) != 3)
    cr_skip_test("the AVX-512 kernel does not compute these shapes here (%d)",
                 ad_gemm_kernel_of(1024, 120, 784));
  cr_assert(ad_matmul_xwt_pays(AD_F32, false, true, 256, 1024, 784));
  cr_assert(ad_matmul_xwt_pays(AD_F32, false, true, 120, 1024, 784));
  cr_assert(ad_matmul_xwt_pays(AD_F32, false, true, 100, 400, 512));
  cr_assert(ad_matmul_xwt_pays(AD_F32, false, true, 160, 640, 512));
  cr_assert_not(ad_matmul_xwt_pays(AD_F32, false, true, 168, 1024, 784)); /* past 160 */
  cr_assert_not(ad_matmul_xwt_pays(AD_F32, false, true, 120, 479, 784));  /* n < 4m */
  cr_assert_not(ad_matmul_xwt_pays(AD_F64, false, true, 120, 1024, 784)); /* f64 */
  cr_assert(ad_matmul_xwt_pays(AD_F64, false, true, 128, 1024, 784));
}

/* Run with OPENBLAS_CORETYPE=Prescott (the meson test 'gemm_generic_core'
 * does): OpenBLAS then runs its generic kernels, as it does on a CPU it
 * does not know, and every product must stay on the built-in kernel. */
Test(gemm, generic_openblas_core_is_not_used) {
  const char *forced = getenv("OPENBLAS_CORETYPE");
  if (!forced || strcmp(forced, "Prescott"))
    cr_skip_test("runs only with OPENBLAS_CORETYPE=Prescott (meson test gemm_generic_core)");
  if (!kernel_available(-2)) cr_skip_test("this build has no BLAS");
  if (!kernel_available(2)) cr_skip_test("this CPU has no AVX2: BLAS is the faster path");
  const char *be = ad_gemm_backend();
  cr_assert(strstr(be, "for every product") && strstr(be, "Prescott"), "%s", be);
}

/* Whether the process has a BLAS library mapped (/proc/self/maps). */
static bool blas_mapped(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  cr_assert_not_null(f, "/proc/self/maps");
  char line[512];
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, "blas") != NULL;
  fclose(f);
  return found;
}

/* BLAS is loaded at run time, only when something needs it: on AVX-512 the
 * rule never routes a product there, so a large product leaves it unmapped
 * (its memory and thread pool are not paid); ad_gemm_backend then loads it
 * to name its core. */
Test(gemm, blas_loaded_only_when_needed) {
  if (!kernel_available(3)) cr_skip_test("this CPU lacks AVX-512: the rule asks BLAS for its core");
  cr_assert(!blas_mapped(), "BLAS mapped before any product");
  enum { N = 256 };
  float *a = calloc(N * N, sizeof *a), *b = calloc(N * N, sizeof *b), *c = calloc(N * N, sizeof *c);
  cr_assert(a && b && c);
  for (int i = 0; i < N * N; i++) a[i] = b[i] = 1.0f;
  ad_gemm_f32(false, false, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
  cr_assert_float_eq(c[N * N - 1], (float)N, 0);
  free(a), free(b), free(c);
  cr_assert(!blas_mapped(), "a product on AVX-512 mapped BLAS");
  const char *be = ad_gemm_backend();
  if (!strstr(be, "OpenBLAS reports")) cr_skip_test("no BLAS in this build or at run time: %s", be);
  cr_assert(blas_mapped(), "ad_gemm_backend named the core (%s) without loading BLAS", be);
}

/* A B packed once (ad_gemm_pack) gives, product after product, the bits of
 * ad_gemm, at the recurrent layers' shapes and across the kernel's blocks
 * (k past KC = 256, n past NC = 2048), with B transposed or not, A
 * transposed or not, beta 0 and 1, on one thread and two (rows split),
 * with B packed on one thread and on three (a large B's units split). */
static void packed_case(ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                        ad_rng *rng) {
  int64_t lda = ta ? m + 3 : k + 1, ldb = tb ? k + 2 : n + 5, ldc = n + 1;
  int64_t sa = ta ? k * lda : m * lda, sb = tb ? n * ldb : k * ldb, sc = m * ldc;
  void *a = alloc_elems(dt, sa), *b = alloc_elems(dt, sb), *c = alloc_elems(dt, sc);
  void *want = alloc_elems(dt, sc);
  for (int64_t i = 0; i < sa; i++) set(dt, a, i, ad_rng_uniform(rng) * 2 - 1);
  for (int packers = 1; packers <= 3; packers += 2) { /* a large B is packed on threads */
    /* a new B each time: a packing that missed a unit would show the last one's */
    for (int64_t i = 0; i < sb; i++) set(dt, b, i, ad_rng_uniform(rng) * 2 - 1);
    ad_set_num_threads(packers);
    ad_gemm_packed *p = ad_gemm_pack(dt, tb, m, k, n, b, ldb);
    /* NULL where the dispatch rule gives the product to BLAS (AVX2 with
     * OpenBLAS, above 4M multiply-adds); the small shapes run everywhere */
    cr_assert(p || (double)m * (double)n * (double)k > 4194304.0, "ad_gemm_pack %lldx%lldx%lld",
              (long long)m, (long long)n, (long long)k);
    if (!p) break;
    for (int beta = 0; beta < 2; beta++)
      for (int threads = 1; threads <= 2; threads++) {
        ad_set_num_threads(threads);
        for (int64_t i = 0; i < sc; i++) {
          double v = ad_rng_uniform(rng);
          set(dt, c, i, v), set(dt, want, i, v);
        }
        ad_gemm(dt, ta, tb, m, n, k, a, lda, b, ldb, beta, want, ldc);
        ad_gemm_packed_run(p, ta, m, a, lda, b, ldb, beta, c, ldc);
        for (int64_t i = 0; i < m; i++)
          for (int64_t j = 0; j < n; j++)
            if (get(dt, c, i * ldc + j) != get(dt, want, i * ldc + j))
              cr_assert_fail(
                  "%s ta %d tb %d %lldx%lldx%lld beta %d threads %d [%lld,%lld]: packed %.17g, "
                  "ad_gemm %.17g",
                  ad_dtype_name(dt), ta, tb, (long long)m, (long long)n, (long long)k, beta,
                  threads, (long long)i, (long long)j, get(dt, c, i * ldc + j),
                  get(dt, want, i * ldc + j));
      }
    ad_gemm_packed_free(p);
  }
  ad_set_num_threads(1);
  free(a), free(b), free(c), free(want);
}

Test(gemm, packed_b_matches_ad_gemm, .timeout = 300) {
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  static const int64_t shapes[][3] = {{32, 1024, 256}, {32, 256, 1024}, {7, 33, 5},
                                      {40, 2100, 300}, {1, 16, 1},      {64, 96, 513}};
  for (int d = 0; d < 2; d++)
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
      for (int f = 0; f < 4; f++)
        packed_case(d ? AD_F64 : AD_F32, f & 1, f >> 1, shapes[s][0], shapes[s][1], shapes[s][2],
                    &rng);
  ad_gemm_packed_free(NULL);
}
