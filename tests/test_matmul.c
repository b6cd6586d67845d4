/* test_matmul.c: ad_matmul's NumPy/PyTorch semantics beyond its PyTorch
 * values (tests/fixtures/ops.txt) and the registry's gradient checks: the
 * output shapes of broadcast batches, differing batch ranks and 1-D
 * operands; broadcasting read in place gives the bits of the product of
 * expanded copies; flags on a 1-D operand are ignored; the gradient of a
 * broadcast operand is summed over its batch (hand-computed, also where
 * A's batches fold into one product's rows); first and
 * second derivatives of compositions in f32 and f64; bad input and its
 * messages. */
#include "test_alloc.h"

#include <math.h>
#include <string.h>

TEST_CTX_SUITE(matmul);

#define expect_error(...)    test_expect_error(ctx, __VA_ARGS__)
#define expect_shape(t, ...) test_expect_shape(ctx, t, __VA_ARGS__)

/* One product: A's and B's shapes, the flags, the output's shape. */
typedef struct mm_case {
  int na, nb, no;
  int64_t sa[4], sb[4], so[4];
  bool ta, tb;
} mm_case;

static const mm_case cases[] = {
    {4, 4, 4, {2, 1, 3, 4}, {1, 5, 4, 6}, {2, 5, 3, 6}, false, false},
    {4, 4, 4, {2, 1, 4, 3}, {1, 5, 6, 4}, {2, 5, 3, 6}, true, true},
    {3, 2, 3, {7, 3, 4}, {4, 5}, {7, 3, 5}, false, false},
    {2, 3, 3, {4, 5}, {7, 4, 6}, {7, 5, 6}, true, false},
    {2, 3, 3, {5, 4}, {7, 6, 4}, {7, 5, 6}, false, true},
    {4, 3, 4, {2, 7, 3, 4}, {7, 4, 5}, {2, 7, 3, 5}, false, false},
    {3, 4, 4, {1, 3, 4}, {2, 3, 4, 5}, {2, 3, 3, 5}, false, false},
    {1, 2, 1, {4}, {4, 5}, {5}, false, false},
    {1, 2, 1, {4}, {5, 4}, {5}, true, true}, /* the flag on B only */
    {2, 1, 1, {3, 4}, {4}, {3}, false, true},
    {1, 1, 0, {6}, {6}, {0}, false, false},
    {1, 3, 2, {4}, {2, 4, 5}, {2, 5}, false, false},
    {4, 1, 3, {2, 3, 5, 4}, {4}, {2, 3, 5}, false, false},
    {3, 3, 3, {2, 3, 4}, {2, 4, 5}, {2, 3, 5}, false, false},
    /* B broadcast along every batch dim of A: A's batches fold into rows */
    {3, 2, 3, {7, 3, 4}, {5, 4}, {7, 3, 5}, false, true},
    {3, 3, 3, {2, 3, 4}, {1, 4, 5}, {2, 3, 5}, false, false},
    {3, 3, 3, {1, 3, 4}, {1, 5, 4}, {1, 3, 5}, false, true},
};
#define NCASES ((int)(sizeof cases / sizeof *cases))

static ad_rng rng;

static ad_tensor *rand_tensor(ad_dtype dt, int ndim, const int64_t *shape, bool grad) {
  ad_tensor *t = ad_rand(ctx, &rng, dt, ndim, shape, -1, 1);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  if (grad) cr_assert_eq(ad_tensor_set_requires_grad(t, true), AD_OK);
  return t;
}

/* The shape x would have with its batch dims broadcast to out's (for a
 * 2-D-or-more x): out's batch dims, then x's last two. */
static ad_tensor *expand_batch(ad_tensor *x, const ad_tensor *out, int out_batch) {
  int64_t s[AD_MAX_DIMS];
  memcpy(s, out->shape, sizeof(int64_t) * (size_t)out_batch);
  s[out_batch] = x->shape[x->ndim - 2], s[out_batch + 1] = x->shape[x->ndim - 1];
  return ad_expand(ctx, x, out_batch + 2, s);
}

/* ---------------------------------------------------------------- shapes */

Test(matmul, shapes_follow_numpy) {
  cr_assert_eq(ad_rng_seed(&rng, 11), AD_OK);
  for (int i = 0; i < NCASES; i++) {
    const mm_case *c = &cases[i];
    ad_tensor *a = rand_tensor(AD_F64, c->na, c->sa, false);
    ad_tensor *b = rand_tensor(AD_F64, c->nb, c->sb, false);
    char what[32];
    snprintf(what, sizeof what, "case %d", i);
    expect_shape(ad_matmul(ctx, a, b, c->ta, c->tb), c->no, c->so, what);
    ad_tensor_free(a);
    ad_tensor_free(b);
  }
}

/* A broadcast operand is read in place (batch step 0): the same GEMMs on
 * the same numbers as with expanded copies, so the same bits. */
Test(matmul, broadcast_gives_the_bits_of_expanded_copies) {
  cr_assert_eq(ad_rng_seed(&rng, 12), AD_OK);
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    for (int i = 0; i < NCASES; i++) {
      const mm_case *c = &cases[i];
      if (c->na < 2 || c->nb < 2 || c->no < 3) continue;
      ad_tensor *a = rand_tensor(dt, c->na, c->sa, false);
      ad_tensor *b = rand_tensor(dt, c->nb, c->sb, false);
      ad_tensor *y = ad_matmul(ctx, a, b, c->ta, c->tb);
      cr_assert_not_null(y, "%s", ad_last_error(ctx));
      int nbatch = c->no - 2;
      ad_tensor *ye =
          ad_matmul(ctx, expand_batch(a, y, nbatch), expand_batch(b, y, nbatch), c->ta, c->tb);
      cr_assert_not_null(ye, "%s", ad_last_error(ctx));
      cr_assert_eq(ye->size, y->size);
      cr_assert_eq(memcmp(y->data, ye->data, (size_t)y->size * ad_dtype_size(dt)), 0,
                   "case %d %s: broadcast and expanded products differ", i, ad_dtype_name(dt));
      ad_tape_reset(ctx);
      ad_tensor_free(a);
      ad_tensor_free(b);
    }
  }
}

/* X W^T with few rows and a wide, deep W is computed as (W X^T)^T where
 * that packs less (kernels/matmul.c): the same sums in the same order, so
 * the bits of the product with W^T given as a matrix, on one thread and
 * split over three (the transposition back too), rows a multiple of 32 or
 * not (also where only the AVX-512 kernel takes that path in f32), under and
 * over the 4M multiply-adds of the first rule; and one row (a batch of one),
 * whose W X^T would be a column, which ad_gemm sums in S_gemv's order of
 * its own (gemm.c), not in the row's. */
Test(matmul, x_wt_computed_transposed_gives_the_bits_of_the_plain_product) {
  cr_assert_eq(ad_rng_seed(&rng, 13), AD_OK);
  static const int64_t shapes[][3] = {
      {32, 64, 784},   {64, 512, 512},  {96, 1024, 784},  {128, 512, 768},
      {100, 512, 784}, {48, 1024, 300}, {256, 1024, 512}, {64, 128, 600},
      {128, 256, 520}, {32, 64, 4608},  {120, 1024, 784}, {136, 1024, 1024},
      {40, 168, 784},  {1, 64, 784},    {1, 1000, 300},   {1, 2, 512}};
  for (int d = 0; d < 2; d++)
    for (int i = 0; i < (int)(sizeof shapes / sizeof *shapes); i++)
      for (int threads = 1; threads <= 3; threads += 2) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        cr_assert_eq(ad_set_num_threads(threads), AD_OK);
        int64_t sx[2] = {shapes[i][0], shapes[i][2]}, sw[2] = {shapes[i][1], shapes[i][2]};
        ad_tensor *x = rand_tensor(dt, 2, sx, false), *w = rand_tensor(dt, 2, sw, false);
        ad_tensor *y = ad_matmul(ctx, x, w, false, true);
        ad_tensor *ye = ad_matmul(ctx, x, ad_transpose(ctx, w, 0, 1), false, false);
        cr_assert(y && ye, "%s", ad_last_error(ctx));
        cr_assert_eq(y->size, shapes[i][0] * shapes[i][1]);
        cr_assert_eq(memcmp(y->data, ye->data, (size_t)y->size * ad_dtype_size(dt)), 0,
                     "%lld x %lld x %lld %s, %d threads: X W^T and X (W^T) differ",
                     (long long)shapes[i][0], (long long)shapes[i][1], (long long)shapes[i][2],
                     ad_dtype_name(dt), threads);
        ad_tape_reset(ctx);
        ad_tensor_free(x);
        ad_tensor_free(w);
      }
  ad_set_num_threads(1);
}

/* X W^T's transposed path takes scratch from the arena; under a cap that
 * leaves room for the result but not for it, the plain product runs: the
 * same bits, and no error is left behind by a call that succeeded (it was
 * left as AD_ERR_OOM). A cap too small for the result is the cap's error. */
Test(matmul, x_wt_without_room_for_its_scratch_records_no_error) {
  int64_t sx[2] = {8, 256}, sw[2] = {64, 256};
  cr_assert_eq(ad_rng_seed(&rng, 5), AD_OK);
  ad_tensor *x = rand_tensor(AD_F64, 2, sx, false), *w = rand_tensor(AD_F64, 2, sw, false);
  ad_tensor *want = ad_matmul(ctx, x, w, false, true);
  cr_assert_not_null(want, "%s", ad_last_error(ctx));
  size_t used = ad_arena_used(ctx);
  int plain = 0;
  for (size_t cap = 16; cap <= used; cap += 16) {
    ad_ctx *c = ad_ctx_new();
    ad_tensor *cx = ad_tensor_clone(c, x), *cw = ad_tensor_clone(c, w);
    cr_assert(cx && cw);
    cr_assert_eq(ad_set_arena_limit(c, cap), AD_OK);
    ad_tensor *y = ad_matmul(c, cx, cw, false, true);
    if (y) {
      cr_assert_eq(ad_last_status(c), AD_OK, "cap %zu: a result and the error \"%s\"", cap,
                   ad_last_error(c));
      cr_assert_eq(memcmp(y->data, want->data, (size_t)y->size * sizeof(double)), 0, "cap %zu",
                   cap);
      plain += ad_arena_used(c) < used;
    } else {
      test_expect_error(c, AD_ERR_OOM, "ad_set_arena_limit", NULL);
    }
    ad_tape_reset(c);
    ad_tensor_free(cx);
    ad_tensor_free(cw);
    ad_ctx_free(c);
  }
  cr_assert_gt(plain, 0, "no cap left room for the result only");
  ad_tensor_free(x);
  ad_tensor_free(w);
}

/* A one-row x (a batch of one, 2-D or a vector) times W [k, n]: x's
 * gradient dy W^T stored by ad_backward straight into x's grad
 * (matmul_grad_into: ad_gemm with m = 1) gives the bits of ad_grad's, which
 * runs the recorded backward's product (ad_matmul, where X W^T may be
 * computed transposed); n from under to over that path's 256. */
Test(matmul, one_row_gradient_by_backward_as_by_grad) {
  cr_assert_eq(ad_rng_seed(&rng, 17), AD_OK);
  static const int64_t ns[] = {64, 300, 1000};
  for (int d = 0; d < 2; d++)
    for (int i = 0; i < 3; i++)
      for (int vec = 0; vec < 2; vec++) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        int64_t k = 512, n = ns[i], sx[2] = {1, k}, sw[2] = {k, n}, sy[2] = {1, n};
        ad_tensor *x = rand_tensor(dt, vec ? 1 : 2, vec ? sx + 1 : sx, true);
        ad_tensor *w = rand_tensor(dt, 2, sw, false),
                  *dy = rand_tensor(dt, vec ? 1 : 2, vec ? sy + 1 : sy, false);
        ad_tensor *g = NULL;
        cr_assert_eq(ad_grad(ctx, ad_matmul(ctx, x, w, false, false), dy, 1, &x, &g, false), AD_OK,
                     "%s", ad_last_error(ctx));
        cr_assert_eq(ad_backward(ctx, ad_matmul(ctx, x, w, false, false), dy), AD_OK, "%s",
                     ad_last_error(ctx));
        cr_assert(g && x->grad && g->size == k && x->grad->size == k);
        cr_assert_eq(memcmp(g->data, x->grad->data, (size_t)k * ad_dtype_size(dt)), 0,
                     "%s %s x [%lld, %lld]: ad_backward's and ad_grad's gradients differ",
                     ad_dtype_name(dt), vec ? "[k]" : "[1, k]", (long long)k, (long long)n);
        ad_tape_reset(ctx);
        ad_tensor_free(x);
        ad_tensor_free(w);
        ad_tensor_free(dy);
      }
}

/* A 1-D operand's flag changes nothing; 1-D x 1-D is the dot product, 1-D
 * x 2-D the row times the matrix (hand-computed). */
Test(matmul, vectors_and_their_ignored_flags) {
  const double v[3] = {1, -2, 3}, w[3] = {4, 5, -6}, m[6] = {1, 2, 3, 4, 5, 6}; /* m [3,2] */
  int64_t s3 = 3, sm[2] = {3, 2};
  ad_tensor *x = ad_from_data(ctx, AD_F64, 1, &s3, v), *y = ad_from_data(ctx, AD_F64, 1, &s3, w);
  ad_tensor *mm = ad_from_data(ctx, AD_F64, 2, sm, m);
  cr_assert(x && y && mm);
  for (int f = 0; f < 4; f++) {
    ad_tensor *dot = ad_matmul(ctx, x, y, f & 1, f & 2);
    expect_shape(dot, 0, NULL, "dot");
    cr_assert_eq(ad_tensor_get(dot, 0), 4.0 - 10.0 - 18.0, "flags %d: %g", f,
                 ad_tensor_get(dot, 0));
    ad_tensor *row = ad_matmul(ctx, x, mm, f & 1, false); /* [3] x [3,2] */
    int64_t s2 = 2;
    expect_shape(row, 1, &s2, "row");
    cr_assert_eq(ad_tensor_get(row, 0), 1.0 - 6.0 + 15.0);
    cr_assert_eq(ad_tensor_get(row, 1), 2.0 - 8.0 + 18.0);
    ad_tensor *col = ad_matmul(ctx, mm, x, true, f & 2); /* [3,2]^T x [3] */
    expect_shape(col, 1, &s2, "col");
    cr_assert_eq(ad_tensor_get(col, 0), 1.0 - 6.0 + 15.0);
    cr_assert_eq(ad_tensor_get(col, 1), 2.0 - 8.0 + 18.0);
  }
  ad_tensor_free(x);
  ad_tensor_free(y);
  ad_tensor_free(mm);
}

/* Zero-size batches and an empty inner dimension: an empty output, or
 * zeros. */
Test(matmul, empty_dimensions) {
  int64_t sa[4] = {2, 1, 3, 0}, sb[3] = {5, 0, 2}, so[4] = {2, 5, 3, 2};
  ad_tensor *a = ad_ones(ctx, AD_F32, 4, sa), *b = ad_ones(ctx, AD_F32, 3, sb);
  ad_tensor *y = ad_matmul(ctx, a, b, false, false);
  expect_shape(y, 4, so, "k = 0");
  for (int64_t i = 0; i < y->size; i++) cr_assert_eq(ad_tensor_get(y, i), 0.0);
  int64_t sc[3] = {0, 3, 4}, sd[2] = {4, 5}, se[3] = {0, 3, 5};
  ad_tensor *c = ad_ones(ctx, AD_F32, 3, sc), *d = ad_ones(ctx, AD_F32, 2, sd);
  expect_shape(ad_matmul(ctx, c, d, false, false), 3, se, "no batch");
  ad_tensor_free(a);
  ad_tensor_free(b);
  ad_tensor_free(c);
  ad_tensor_free(d);
}

/* An empty product with 2^36 batches: its forward writes nothing and its
 * backward sends zeros (empty, or of a broadcast operand's shape), with no
 * work per batch (a GEMM per batch would not end within the test's time). */
/* a (of a_ones: ones, else zeros) times b, an empty product of shape so:
 * the shapes of y and of both gradients, and the gradient of the operand
 * that is not empty (which = 0: a, 1: b) all zeros. */
static void empty_product(ad_dtype dt, int na, int64_t *sa, bool a_ones, int nb, int64_t *sb,
                          bool ta, const int64_t *so, int which) {
  ad_tape_reset(ctx);
  ad_tensor *a = a_ones ? ad_ones(ctx, dt, na, sa) : ad_zeros(ctx, dt, na, sa);
  ad_tensor *b = a_ones ? ad_zeros(ctx, dt, nb, sb) : ad_ones(ctx, dt, nb, sb);
  cr_assert(a && b, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_set_requires_grad(a, true), AD_OK);
  cr_assert_eq(ad_tensor_set_requires_grad(b, true), AD_OK);
  ad_tensor *y = ad_matmul(ctx, a, b, ta, false);
  expect_shape(y, 3, so, "y");
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  expect_shape(a->grad, na, sa, "da");
  expect_shape(b->grad, nb, sb, "db");
  ad_tensor *g = which ? b->grad : a->grad;
  for (int64_t i = 0; i < g->size; i++) cr_assert_eq(ad_tensor_get(g, i), 0.0);
  ad_tensor_free(a);
  ad_tensor_free(b);
}

Test(matmul, empty_product_of_many_batches_does_no_work_per_batch) {
  const int64_t n = INT64_C(1) << 36;
  int64_t sa[3] = {n, 4, 0}, sb[2] = {4, 5}, so[3] = {n, 0, 5};
  empty_product(AD_F32, 3, sa, false, 2, sb, true, so, 1); /* [2^36, 0, 4] x [4, 5] */
  /* A broadcast over B's batches: dA is zeros of A's shape */
  int64_t sc[3] = {1, 3, 4}, sd[3] = {n, 4, 0}, se[3] = {n, 3, 0};
  empty_product(AD_F64, 3, sc, true, 3, sd, false, se, 0);
}

/* The gradient of an empty product, recorded (ad_grad with create_graph,
 * as a gradient penalty takes it) and differentiated again: zeros of each
 * operand's shape, as PyTorch gives, where the backward refused it ("the
 * root does not require grad") because the zeros were constants. */
static void empty_product_twice(int na, const int64_t *sa, int nb, const int64_t *sb, bool ta) {
  ad_tape_reset(ctx);
  ad_tensor *a = ad_ones(ctx, AD_F64, na, sa), *b = ad_ones(ctx, AD_F64, nb, sb);
  cr_assert(a && b, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_set_requires_grad(a, true), AD_OK);
  cr_assert_eq(ad_tensor_set_requires_grad(b, true), AD_OK);
  ad_tensor *y = ad_matmul(ctx, a, b, ta, false), *in[2] = {a, b}, *g[2] = {NULL, NULL};
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->size, 0);
  cr_assert_eq(ad_grad(ctx, y, ad_zeros_like(ctx, y), 2, in, g, true), AD_OK, "%s",
               ad_last_error(ctx));
  expect_shape(g[0], na, sa, "da");
  expect_shape(g[1], nb, sb, "db");
  ad_tensor *pen =
      ad_add(ctx, ad_sum(ctx, ad_square(ctx, g[0])), ad_sum(ctx, ad_square(ctx, g[1])));
  cr_assert_not_null(pen, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, pen, NULL), AD_OK, "%s", ad_last_error(ctx));
  for (int k = 0; k < 2; k++) {
    const ad_tensor *d = in[k]->grad;
    cr_assert_not_null(d, "input %d got no gradient", k);
    expect_shape(d, in[k]->ndim, in[k]->shape, "second derivative");
    for (int64_t i = 0; i < d->size; i++) cr_assert_eq(ad_tensor_get(d, i), 0.0);
  }
  ad_tensor_free(a);
  ad_tensor_free(b);
}

Test(matmul, gradient_of_an_empty_product_differentiates_again) {
  int64_t s23[2] = {2, 3}, s30[2] = {3, 0}, s03[2] = {0, 3}, s32[2] = {3, 2};
  empty_product_twice(2, s23, 2, s30, false); /* n = 0 */
  empty_product_twice(2, s03, 2, s32, false); /* m = 0 */
  int64_t s3[1] = {3};
  empty_product_twice(1, s3, 2, s30, false); /* [3] x [3, 0] -> [0] */
  /* still no work per batch: A broadcast over 2^36 empty batches of B */
  int64_t sc[3] = {1, 3, 4}, sd[3] = {INT64_C(1) << 36, 4, 0};
  empty_product_twice(3, sc, 3, sd, false);
}

/* ------------------------------------------------------------- gradients */

/* L = sum(A B) with A [2,1,2,3] and B [1,3,3,2]: dA[i,0,r,c] sums B's row
 * c over the 3 batches A meets (and its 2 columns), dB[0,j,c,n] sums A's
 * column c over the 2 batches and 2 rows B meets. */
Test(matmul, broadcast_gradient_is_summed_over_the_batch) {
  int64_t sa[4] = {2, 1, 2, 3}, sb[4] = {1, 3, 3, 2};
  cr_assert_eq(ad_rng_seed(&rng, 13), AD_OK);
  ad_tensor *a = rand_tensor(AD_F64, 4, sa, true), *b = rand_tensor(AD_F64, 4, sb, true);
  ad_tensor *L = ad_sum(ctx, ad_matmul(ctx, a, b, false, false));
  cr_assert_not_null(L, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, L, NULL), AD_OK, "%s", ad_last_error(ctx));
  expect_shape(a->grad, 4, sa, "dA");
  expect_shape(b->grad, 4, sb, "dB");
  for (int i = 0; i < 2; i++)
    for (int r = 0; r < 2; r++)
      for (int c = 0; c < 3; c++) {
        double want = 0;
        for (int j = 0; j < 3; j++)
          for (int n = 0; n < 2; n++) want += ad_tensor_get(b, (j * 3 + c) * 2 + n);
        double got = ad_tensor_get(a->grad, (i * 2 + r) * 3 + c);
        cr_assert(fabs(got - want) <= 1e-14, "dA[%d,0,%d,%d] = %.17g, want %.17g", i, r, c, got,
                  want);
      }
  for (int j = 0; j < 3; j++)
    for (int c = 0; c < 3; c++)
      for (int n = 0; n < 2; n++) {
        double want = 0;
        for (int i = 0; i < 2; i++)
          for (int r = 0; r < 2; r++) want += ad_tensor_get(a, (i * 2 + r) * 3 + c);
        double got = ad_tensor_get(b->grad, (j * 3 + c) * 2 + n);
        cr_assert(fabs(got - want) <= 1e-14, "dB[0,%d,%d,%d] = %.17g, want %.17g", j, c, n, got,
                  want);
      }
  ad_tensor_free(a);
  ad_tensor_free(b);
}

/* A [N, T, K] times a weight broadcast over its batch (torch.matmul's
 * folded case): B's gradient is the sum over the batch of A_n^T dY_n (one
 * product of depth N T), A's is dY_n B^T per batch; against those sums
 * computed here, f64, with and without B transposed, B 2-D and [1, K, M]. */
Test(matmul, folded_batch_gradients_are_the_batch_sums) {
  cr_assert_eq(ad_rng_seed(&rng, 15), AD_OK);
  enum { N = 3, T = 5, K = 4, M = 6 };
  for (int v = 0; v < 3; v++) {
    bool tb = v == 1;
    int64_t sa[3] = {N, T, K}, sb2[2] = {tb ? M : K, tb ? K : M}, sb3[3] = {1, K, M};
    ad_tensor *a = rand_tensor(AD_F64, 3, sa, true);
    ad_tensor *b = v == 2 ? rand_tensor(AD_F64, 3, sb3, true) : rand_tensor(AD_F64, 2, sb2, true);
    int64_t sy[3] = {N, T, M};
    ad_tensor *w = rand_tensor(AD_F64, 3, sy, false); /* dL/dY */
    ad_tensor *y = ad_matmul(ctx, a, b, false, tb);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, w)), NULL), AD_OK, "%s",
                 ad_last_error(ctx));
    for (int k = 0; k < K; k++)
      for (int m = 0; m < M; m++) {
        double want = 0;
        for (int n = 0; n < N; n++)
          for (int t = 0; t < T; t++)
            want += ad_tensor_get(a, (n * T + t) * K + k) * ad_tensor_get(w, (n * T + t) * M + m);
        double got = ad_tensor_get(b->grad, tb ? m * K + k : k * M + m);
        cr_assert(fabs(got - want) <= 1e-13, "variant %d: dB[%d,%d] = %.17g, want %.17g", v, k, m,
                  got, want);
      }
    for (int n = 0; n < N; n++)
      for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
          double want = 0;
          for (int m = 0; m < M; m++)
            want += ad_tensor_get(w, (n * T + t) * M + m) *
                    ad_tensor_get(b, tb ? m * K + k : k * M + m);
          double got = ad_tensor_get(a->grad, (n * T + t) * K + k);
          cr_assert(fabs(got - want) <= 1e-13, "variant %d: dA[%d,%d,%d] = %.17g, want %.17g", v, n,
                    t, k, got, want);
        }
    ad_tape_reset(ctx);
    ad_tensor_free(a), ad_tensor_free(b), ad_tensor_free(w);
  }
}

/* f(A, B) = tanh(A) B: the product inside a composition, so the second
 * derivatives are not all zero. */
static ad_tensor *tanh_a_times_b(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  const mm_case *k = ud;
  return ad_matmul(c, ad_tanh(c, in[0]), in[1], k->ta, k->tb);
}

Test(matmul, gradcheck_and_gradgradcheck_of_broadcast_and_vectors) {
  cr_assert_eq(ad_rng_seed(&rng, 14), AD_OK);
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    for (int i = 0; i < NCASES; i++) {
      const mm_case *c = &cases[i];
      ad_tensor *in[2] = {rand_tensor(dt, c->na, c->sa, true), rand_tensor(dt, c->nb, c->sb, true)};
      for (int second = 0; second < 2; second++) {
        ad_check_report r;
        ad_status st = second ? ad_gradgradcheck(ctx, tanh_a_times_b, (void *)c, 2, in, NULL, &r)
                              : ad_gradcheck(ctx, tanh_a_times_b, (void *)c, 2, in, NULL, &r);
        cr_assert_eq(st, AD_OK, "case %d %s order %d: %s", i, ad_dtype_name(dt), second + 1,
                     ad_last_error(ctx));
        cr_assert(r.passed,
                  "case %d %s order %d: input %d [%lld]: analytic %.9g, numeric %.9g (abs %.2e)", i,
                  ad_dtype_name(dt), second + 1, r.input, (long long)r.index, r.analytic, r.numeric,
                  r.abs_err);
        cr_assert_gt(r.checked, 0);
      }
      ad_tensor_free(in[0]);
      ad_tensor_free(in[1]);
    }
  }
}

/* ------------------------------------------------------------- bad input */

Test(matmul, bad_input_names_both_shapes_and_the_flags) {
  int64_t s3 = 3, s54[2] = {5, 4}, s45[2] = {4, 5}, s234[3] = {2, 3, 4}, s345[3] = {3, 4, 5};
  ad_tensor *v = ad_ones(ctx, AD_F32, 1, &s3), *w = ad_ones(ctx, AD_F32, 2, s54);
  ad_tensor *u = ad_ones(ctx, AD_F32, 2, s45), *p = ad_ones(ctx, AD_F32, 3, s234);
  ad_tensor *q = ad_ones(ctx, AD_F32, 3, s345), *z = ad_ones(ctx, AD_F32, 0, NULL);
  cr_assert(v && w && u && p && q && z);
  cr_assert_null(ad_matmul(ctx, v, w, false, true));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_SHAPE);
  cr_assert_str_eq(ad_last_error(ctx), "matmul: inner dimensions differ: [3] x [5,4]^T");
  ad_clear_error(ctx);
  /* a flag on a 1-D operand is ignored, and not shown */
  cr_assert_null(ad_matmul(ctx, v, u, true, false));
  cr_assert_str_eq(ad_last_error(ctx), "matmul: inner dimensions differ: [3] x [4,5]");
  ad_clear_error(ctx);
  cr_assert_null(ad_matmul(ctx, u, v, true, true));
  expect_error(AD_ERR_SHAPE, "matmul: inner dimensions differ: [4,5]^T x [3]", NULL);
  cr_assert_null(ad_matmul(ctx, p, q, false, false));
  cr_assert_str_eq(ad_last_error(ctx),
                   "matmul: batch dimensions do not broadcast: [2,3,4] x [3,4,5] (all but the "
                   "last two dims must be equal or 1, aligned from the right)");
  ad_clear_error(ctx);
  cr_assert_null(ad_matmul(ctx, p, q, true, true)); /* [2,4,3] x [3,5,4]: k first */
  expect_error(AD_ERR_SHAPE, "matmul: inner dimensions differ: [2,3,4]^T x [3,4,5]^T", NULL);
  cr_assert_null(ad_matmul(ctx, q, p, true, true)); /* [3,5,4] x [2,4,3] */
  expect_error(AD_ERR_SHAPE, "batch dimensions do not broadcast: [3,4,5]^T x [2,3,4]^T", NULL);
  cr_assert_null(ad_matmul(ctx, z, w, false, false));
  expect_error(AD_ERR_SHAPE, "matmul: inputs need at least 1 dim: [] x [5,4]", NULL);
  cr_assert_null(ad_matmul(ctx, v, z, false, false));
  expect_error(AD_ERR_SHAPE, "matmul: inputs need at least 1 dim: [3] x []", NULL);
  ad_tensor_free(v);
  ad_tensor_free(w);
  ad_tensor_free(u);
  ad_tensor_free(p);
  ad_tensor_free(q);
  ad_tensor_free(z);
}
