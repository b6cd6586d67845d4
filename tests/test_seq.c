/* test_seq.c: the sequence ops of issue 11 beyond their fixture cases:
 * embedding's padding row gets exactly no gradient (even from a NaN),
 * layer_norm against its definition and through gradcheck, cross-entropy
 * positions with ignore_index get exactly zero gradient, and the error
 * messages of bad input. */
#include "ad_ext.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

TEST_CTX_SUITE(seq);

#define expect_error(...) test_expect_error(ctx, __VA_ARGS__)

static ad_tensor *randt(ad_rng *rng, ad_dtype dt, int nd, const int64_t *shape, double lo,
                        double hi, bool grad) {
  ad_tensor *t = ad_rand(ctx, rng, dt, nd, shape, lo, hi);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  if (grad) ad_tensor_set_requires_grad(t, true);
  return t;
}

static ad_tensor *ints(int nd, const int64_t *shape, const int32_t *v) {
  ad_tensor *t = ad_from_data(ctx, AD_I32, nd, shape, v);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  return t;
}

/* ------------------------------------------------------------ embedding */

/* Rows 2 (padding_idx 2, or -3 of 5) appear three times; dy holds a NaN
 * and an inf in rows that look up the padding row: its gradient is exactly
 * 0, every other row the sum of its dy rows. */
static void padding_row_gets_nothing(ad_dtype dt, int64_t padding_idx) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  int64_t ws[2] = {5, 3}, is[2] = {2, 3};
  const int32_t iv[6] = {2, 0, 2, 4, 2, 0};
  ad_tensor *w = randt(&rng, dt, 2, ws, -1, 1, true), *idx = ints(2, is, iv);
  ad_tensor *y = ad_embedding(ctx, w, idx, padding_idx);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->ndim, 3);
  cr_assert_eq(y->shape[2], 3);
  for (int64_t i = 0; i < y->size; i++) /* the padding row is looked up as it is */
    cr_assert_eq(ad_tensor_get(y, i), ad_tensor_get(w, iv[i / 3] * 3 + i % 3));
  int64_t ys[3] = {2, 3, 3};
  ad_tensor *seed = randt(&rng, dt, 3, ys, -1, 1, false);
  ad_tensor_set(seed, 0, NAN);          /* position 0 looks up row 2 */
  ad_tensor_set(seed, 2 * 3, INFINITY); /* position 2 too */
  cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s", ad_last_error(ctx));
  for (int64_t r = 0; r < 5; r++)
    for (int64_t j = 0; j < 3; j++) {
      double want = 0;
      for (int p = 0; p < 6 && r != 2; p++)
        if (iv[p] == r) want += ad_tensor_get(seed, p * 3 + j);
      double got = ad_tensor_get(w->grad, r * 3 + j);
      if (r == 2)
        cr_assert(got == 0 && !signbit(got), "padding row: grad[%lld] = %g", (long long)j, got);
      else
        cr_assert_float_eq(got, want, 1e-6, "row %lld col %lld: %g, want %g", (long long)r,
                           (long long)j, got, want);
    }
  ad_tape_reset(ctx);
  ad_tensor_free(seed);
  ad_tensor_free(w);
  ad_tensor_free(idx);
}

Test(seq, embedding_padding_row_gets_exactly_no_gradient) {
  padding_row_gets_nothing(AD_F64, 2);
  padding_row_gets_nothing(AD_F32, 2);
  padding_row_gets_nothing(AD_F64, -3); /* num + padding_idx = 2, as PyTorch */
  padding_row_gets_nothing(AD_F32, -3);
}

/* ad_backward stores a persistent weight's first gradient of the pass
 * straight into its buffer (grad_into: no index_add output copied in),
 * for embedding (with and without a padding row, a NaN in a padded dy)
 * and index_select, with repeated indices: the same bits as ad_grad's
 * recorded index_add. A second use of the weight in the same pass adds
 * its contribution the ordinary way (grad_into declines): the same bits
 * as ad_grad too. */
Test(seq, lookup_gradients_into_the_weight_as_index_add) {
  ad_rng rng;
  ad_rng_seed(&rng, 13);
  int64_t ws[2] = {9, 70}, is[2] = {4, 6}, flat = 24;
  int32_t iv[24];
  for (int k = 0; k < 24; k++) iv[k] = (int32_t)((k * 7) % 9 % 5); /* rows 0..4, repeated */
  for (int d = 0; d < 2; d++)
    for (int v = 0; v < 4; v++) {
      ad_dtype dt = d ? AD_F32 : AD_F64;
      bool twice = v == 3;
      ad_tensor *w = randt(&rng, dt, 2, ws, -1, 1, true);
      ad_tensor *idx = v == 2 ? ad_from_data(ctx, AD_I32, 1, &flat, iv) : ints(2, is, iv);
      cr_assert_not_null(idx, "%s", ad_last_error(ctx));
      ad_tensor *y = v == 2 ? ad_index_select(ctx, w, idx)
                            : ad_embedding(ctx, w, idx, v == 1 ? 2 : AD_NO_PADDING);
      if (twice) y = ad_add(ctx, y, ad_mul(ctx, ad_embedding(ctx, w, idx, 3), y));
      cr_assert_not_null(y, "%s", ad_last_error(ctx));
      ad_tensor *seed = randt(&rng, dt, y->ndim, y->shape, -1, 1, false), *g;
      ad_tensor_set(seed, 0, NAN);          /* position 0 looks up row 0 */
      ad_tensor_set(seed, 70 * 2 + 5, NAN); /* position 2 looks up row 2, padding in case 1 */
      cr_assert_eq(ad_grad(ctx, y, seed, 1, &w, &g, false), AD_OK, "%s", ad_last_error(ctx));
      for (int pass = 0; pass < 2; pass++) { /* a new buffer, then the one zero_grad keeps */
        ad_tensor_zero_grad(w);
        cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s", ad_last_error(ctx));
        for (int64_t i = 0; i < w->size; i++) {
          double a = ad_tensor_get(w->grad, i), b = ad_tensor_get(g, i);
          QUICK_ASSERT(a == b ? signbit(a) == signbit(b) : a != a && b != b,
                       "%s case %d pass %d: grad[%lld] %.17g, index_add's %.17g", ad_dtype_name(dt),
                       v, pass, (long long)i, a, b);
        }
      }
      ad_tape_reset(ctx);
      ad_tensor_free(seed);
      ad_tensor_free(w);
      ad_tensor_free(idx);
    }
}

/* index_select_add is index_add(index_select(x, src), dst, rows) in one
 * pass: the same bits, forward and ad_backward (its grad_into) and ad_grad
 * (the op with src and dst swapped), on 1 and 2 threads, for runs of one
 * dst (summed in registers), single entries, rows no entry reaches, rows
 * not a multiple of the vector block, along axis 0 and axis 1, sizes the
 * pool splits by runs of rows (40 rows) and by columns (3 rows); a NaN and
 * an inf in x. */
static void select_add_case(ad_dtype dt, int64_t n, int64_t inner, int64_t m, int64_t rows, int ax,
                            int threads) {
  ad_rng rng;
  ad_rng_seed(&rng, 21 + (uint64_t)inner);
  int64_t xs[3] = {2, n, inner}, *xsp = ax ? xs : xs + 1;
  int nd = ax ? 3 : 2;
  int32_t *sv = malloc((size_t)m * sizeof *sv), *dv = malloc((size_t)m * sizeof *dv);
  cr_assert(sv && dv);
  for (int64_t k = 0; k < m; k++) {
    sv[k] = (int32_t)((k * 7919) % n);
    dv[k] = (int32_t)(k < m / 2 ? k * (rows - 1) / m : (k * 31) % (rows - 1)); /* no row rows-1 */
  }
  ad_tensor *x = randt(&rng, dt, nd, xsp, -1, 1, true), *src = ints(1, &m, sv),
            *dst = ints(1, &m, dv);
  ad_tensor_set(x, 5, NAN);
  ad_tensor_set(x, 3 * inner + 1, INFINITY);
  cr_assert_eq(ad_set_num_threads(threads), AD_OK);
  ad_tensor *y = ad_index_select_add(ctx, x, ax, src, dst, rows);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert(y->ndim == nd && y->shape[ax] == rows && y->shape[nd - 1] == inner);
  ad_tensor *seed = randt(&rng, dt, y->ndim, y->shape, -1, 1, false), *g_op, *g_ref;
  cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor *gi = ad_grad(ctx, y, seed, 1, &x, &g_op, false) == AD_OK ? g_op : NULL;
  cr_assert_not_null(gi, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_set_num_threads(1), AD_OK);
  ad_tensor *ref = ad_index_add_axis(ctx, ad_index_select_axis(ctx, x, ax, src), ax, dst, rows);
  cr_assert_not_null(ref, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_grad(ctx, ref, seed, 1, &x, &g_ref, false), AD_OK, "%s", ad_last_error(ctx));
  const ad_tensor *got[3] = {y, x->grad, g_op}, *want[3] = {ref, g_ref, g_ref};
  for (int t = 0; t < 3; t++) {
    cr_assert_eq(got[t]->size, want[t]->size);
    for (int64_t i = 0; i < got[t]->size; i++) {
      double a = ad_tensor_get(got[t], i), b = ad_tensor_get(want[t], i);
      QUICK_ASSERT(a == b ? signbit(a) == signbit(b) : a != a && b != b,
                   "%s inner %lld axis %d on %d threads, %s[%lld]: %.17g, the two ops' %.17g",
                   ad_dtype_name(dt), (long long)inner, ax, threads,
                   t == 0   ? "y"
                   : t == 1 ? "ad_backward's dx"
                            : "ad_grad's dx",
                   (long long)i, a, b);
    }
  }
  ad_tape_reset(ctx);
  ad_tensor_zero_grad(x);
  ad_tensor_free(seed), ad_tensor_free(x), ad_tensor_free(src), ad_tensor_free(dst);
  free(sv), free(dv);
}

Test(seq, index_select_add_is_index_add_of_index_select) {
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    for (int threads = 1; threads <= 2; threads++) {
      select_add_case(dt, 9, 37, 24, 5, 0, threads);     /* small: one piece */
      select_add_case(dt, 9, 40, 24, 4, 1, threads);     /* along axis 1 of [2, 9, 40] */
      select_add_case(dt, 300, 70, 600, 40, 0, threads); /* split by rows */
      select_add_case(dt, 50, 160, 300, 3, 0, threads);  /* split by columns: 3 rows */
    }
  }
}

/* resample_axis is index_select, mul and add per tap in one pass: the
 * same bits forward; its adjoint (ad_grad's dx, ad_backward's grad_into
 * into a leaf) adds by position, then tap, from zeros, as the loop below;
 * and the adjoint op's own grad_into is resample_axis again. On 1 and 2
 * threads, in one piece, split by rows (also along the last axis, where
 * each element's taps are summed in a register) and by columns (3
 * positions); a NaN and an inf in x. */
static void resample_case(ad_dtype dt, int nd, const int64_t *xs, int ax, int64_t taps, int64_t m,
                          int threads) {
  ad_rng rng;
  ad_rng_seed(&rng, 31 + (uint64_t)m);
  int a = ax < 0 ? nd + ax : ax;
  int64_t n = xs[a], outer = 1, inner = 1, is[2] = {taps, m}, bs[3] = {1, 1, 1};
  for (int d = 0; d < a; d++) outer *= xs[d];
  for (int d = a + 1; d < nd; d++) inner *= xs[d];
  bs[a] = m;
  int32_t *iv = malloc((size_t)(taps * m) * sizeof *iv);
  cr_assert_not_null(iv);
  for (int64_t k = 0; k < taps * m; k++) iv[k] = (int32_t)((k * 7919 + k / m * 13) % n);
  ad_tensor *x = randt(&rng, dt, nd, xs, -1, 1, true), *idx = ints(2, is, iv),
            *w = randt(&rng, dt, 2, is, -1, 1, false);
  ad_tensor_set(x, 5, NAN);
  ad_tensor_set(x, x->size / 2, INFINITY);
  cr_assert_eq(ad_set_num_threads(threads), AD_OK);
  ad_tensor *y = ad_resample_axis(ctx, x, ax, idx, w);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  ad_tensor *seed = randt(&rng, dt, y->ndim, y->shape, -1, 1, true), *g_op;
  cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_grad(ctx, y, seed, 1, &x, &g_op, false), AD_OK, "%s", ad_last_error(ctx));
  /* the adjoint op, backward into the leaf seed: resample_axis of its seed */
  ad_tensor *ya = ad_resample_axis_adjoint(ctx, seed, ax, idx, w, n);
  cr_assert_not_null(ya, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, ya, x), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_set_num_threads(1), AD_OK);
  ad_tensor *ref = NULL, *ref_a = ad_resample_axis(ctx, x, ax, idx, w);
  for (int64_t t = 0; t < taps; t++) {
    ad_tensor *it = ints(1, &m, iv + t * m), *wt = ad_zeros(ctx, dt, nd, bs);
    for (int64_t i = 0; i < m; i++) ad_tensor_set(wt, i, ad_tensor_get(w, t * m + i));
    ad_tensor *p = ad_mul(ctx, ad_index_select_axis(ctx, x, ax, it), wt);
    ref = t ? ad_add(ctx, ref, p) : p;
    ad_tensor_free(it), ad_tensor_free(wt);
  }
  cr_assert_not_null(ref, "%s", ad_last_error(ctx));
  /* the adjoint by hand: zeros, then by position i, then tap t */
  ad_tensor *dx = ad_zeros(ctx, dt, nd, xs);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < m; i++)
      for (int64_t t = 0; t < taps; t++)
        for (int64_t c = 0; c < inner; c++) {
          int64_t to = (o * n + iv[t * m + i]) * inner + c, from = (o * m + i) * inner + c;
          double wv = ad_tensor_get(w, t * m + i), sv = ad_tensor_get(seed, from);
          double acc = ad_tensor_get(dx, to);
          if (dt == AD_F32)
            acc = (double)((float)acc + (float)wv * (float)sv);
          else
            acc += wv * sv;
          ad_tensor_set(dx, to, acc);
        }
  const ad_tensor *got[4] = {y, x->grad, g_op, seed->grad}, *want[4] = {ref, dx, dx, ref_a};
  static const char *what[4] = {"y", "ad_backward's dx", "ad_grad's dx", "the adjoint's dx"};
  for (int k = 0; k < 4; k++) {
    cr_assert_eq(got[k]->size, want[k]->size);
    for (int64_t i = 0; i < got[k]->size; i++) {
      double u = ad_tensor_get(got[k], i), v = ad_tensor_get(want[k], i);
      QUICK_ASSERT(u == v ? signbit(u) == signbit(v) : u != u && v != v,
                   "%s x %lld on axis %d of %d, %lld taps, %d threads, %s[%lld]: %.17g, want %.17g",
                   ad_dtype_name(dt), (long long)n, ax, nd, (long long)taps, threads, what[k],
                   (long long)i, u, v);
    }
  }
  ad_tape_reset(ctx);
  ad_tensor_free(seed), ad_tensor_free(x), ad_tensor_free(idx), ad_tensor_free(w);
  ad_tensor_free(dx), free(iv);
}

Test(seq, resample_axis_is_select_mul_add) {
  static const int64_t small[2] = {7, 5}, rows[3] = {64, 40, 33}, cols[3] = {1, 30, 3000},
                       last[2] = {3000, 20};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    for (int threads = 1; threads <= 2; threads++) {
      resample_case(dt, 2, small, 0, 2, 9, threads);  /* one piece */
      resample_case(dt, 3, rows, 1, 2, 80, threads);  /* split by rows */
      resample_case(dt, 3, cols, 1, 4, 3, threads);   /* split by columns */
      resample_case(dt, 2, last, -1, 2, 40, threads); /* the last axis */
    }
  }
}

/* No positions (idx [T, 0]): w's gradient is the empty [T, 0], made
 * without a pass per tap (those were 4 T + 1 recorded ops, and with T near
 * 2^31 an exhausted arena after a minute). */
Test(seq, resample_axis_no_positions_dw) {
  int64_t xs[2][2] = {{3, 4}, {3, 0}}, is[2] = {100000, 0};
  ad_tensor *idx = ad_zeros(ctx, AD_I32, 2, is), *w = ad_zeros(ctx, AD_F64, 2, is);
  cr_assert(idx && w, "%s", ad_last_error(ctx));
  ad_tensor_set_requires_grad(w, true);
  for (int adjoint = 0; adjoint < 2; adjoint++) { /* x [3, 4] to [3, 0], and back */
    ad_tensor *x = ad_ones(ctx, AD_F64, 2, xs[adjoint]);
    cr_assert_not_null(x, "%s", ad_last_error(ctx));
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = adjoint ? ad_resample_axis_adjoint(ctx, x, 1, idx, w, 4)
                           : ad_resample_axis(ctx, x, 1, idx, w);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    ad_tensor *in[2] = {x, w}, *g[2], *seed = ad_ones(ctx, AD_F64, y->ndim, y->shape);
    size_t before = ad_tape_size(ctx);
    cr_assert_eq(ad_grad(ctx, y, seed, 2, in, g, true), AD_OK, "%s", ad_last_error(ctx));
    cr_assert(g[1]->ndim == 2 && g[1]->shape[0] == 100000 && g[1]->shape[1] == 0);
    cr_assert_lt(ad_tape_size(ctx) - before, 8, "%zu ops recorded for an empty gradient",
                 ad_tape_size(ctx) - before);
    ad_tape_reset(ctx);
    ad_tensor_free(seed), ad_tensor_free(x);
  }
  ad_tensor_free(idx), ad_tensor_free(w);
}

/* Without padding_idx the same lookups send every row its dy; first and
 * second order through gradcheck, with a 3-D index tensor. */
static ad_tensor *emb_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  ad_tensor *idx = ud;
  return ad_tanh(c, ad_embedding(c, ad_mul(c, in[0], in[0]), idx, AD_NO_PADDING));
}

Test(seq, embedding_gradcheck_without_padding) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  int64_t ws[2] = {4, 3}, is[3] = {2, 2, 2};
  const int32_t iv[8] = {3, 1, 0, 3, 2, 2, 1, 0};
  ad_tensor *idx = ints(3, is, iv);
  ad_check_report r;
  for (int k = 0; k < 2; k++) {
    ad_dtype dt = k ? AD_F32 : AD_F64;
    ad_tensor *w = randt(&rng, dt, 2, ws, -1, 1, true);
    cr_assert_eq(ad_gradcheck(ctx, emb_fn, idx, 1, &w, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
    cr_assert(r.passed, "%s gradcheck: abs err %g at %lld", ad_dtype_name(dt), r.abs_err,
              (long long)r.index);
    cr_assert_eq(ad_gradgradcheck(ctx, emb_fn, idx, 1, &w, NULL, &r), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(r.passed, "%s gradgradcheck: abs err %g", ad_dtype_name(dt), r.abs_err);
    ad_tensor_free(w);
  }
  ad_tensor_free(idx);
}

Test(seq, embedding_bad_input) {
  int64_t ws[2] = {10, 4}, is[2] = {2, 3}, w3[3] = {2, 5, 4}, n1 = 3;
  ad_tensor *w = ad_zeros(ctx, AD_F64, 2, ws), *wb = ad_zeros(ctx, AD_F64, 3, w3);
  const int32_t bad[6] = {1, 2, 3, 4, 12, 0}, neg[3] = {0, -1, 2}, ok[3] = {0, 1, 9};
  ad_tensor *ib = ints(2, is, bad), *in = ints(1, &n1, neg), *io = ints(1, &n1, ok);
  ad_tensor *fi = ad_zeros(ctx, AD_F32, 1, &n1);
  cr_assert_null(ad_embedding(ctx, w, ib, AD_NO_PADDING));
  expect_error(AD_ERR_ARG, "embedding", "index 12", "position 4", "[1,1]", "[2,3]",
               "vocabulary of 10", "0..9", NULL);
  cr_assert_null(ad_embedding(ctx, w, in, AD_NO_PADDING));
  expect_error(AD_ERR_ARG, "embedding", "index -1", "position 1", "[1]", NULL);
  cr_assert_null(ad_embedding(ctx, w, io, 10));
  expect_error(AD_ERR_ARG, "embedding", "padding_idx 10", "-10..9", NULL);
  cr_assert_null(ad_embedding(ctx, w, io, -11));
  expect_error(AD_ERR_ARG, "embedding", "padding_idx -11", NULL);
  int64_t w0s[2] = {0, 4}, n0 = 0; /* an empty vocabulary has no padding row */
  ad_tensor *w0 = ad_zeros(ctx, AD_F64, 2, w0s), *i0 = ints(1, &n0, ok);
  cr_assert_null(ad_embedding(ctx, w0, i0, 0));
  expect_error(AD_ERR_ARG, "embedding", "padding_idx 0", "weight [0,4], which has none", NULL);
  ad_tensor_free(w0), ad_tensor_free(i0);
  cr_assert_null(ad_embedding(ctx, wb, io, AD_NO_PADDING));
  expect_error(AD_ERR_SHAPE, "embedding", "[2,5,4]", "[num_embeddings, embedding_dim]", NULL);
  cr_assert_null(ad_embedding(ctx, w, fi, AD_NO_PADDING));
  expect_error(AD_ERR_DTYPE, "embedding", "indices", "f32", "i32", NULL);
  cr_assert_null(ad_embedding(ctx, io, io, AD_NO_PADDING));
  expect_error(AD_ERR_DTYPE, "embedding", NULL);
  cr_assert_null(ad_embedding(ctx, w, NULL, AD_NO_PADDING));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_NULL);
  ad_clear_error(ctx);
  cr_assert_not_null(ad_embedding(ctx, w, io, -1), "%s", ad_last_error(ctx));
  ad_tape_reset(ctx);
  ad_tensor *t[6] = {w, wb, ib, in, io, fi};
  for (int k = 0; k < 6; k++) ad_tensor_free(t[k]);
}

/* ----------------------------------------------------------- layer_norm */

/* y against the definition in double: x [2,3,4] over the last two dims,
 * with weight and bias. */
static void layer_norm_matches_definition(ad_dtype dt, double tol) {
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  int64_t xs[3] = {2, 3, 4}, ns[2] = {3, 4};
  ad_tensor *x = randt(&rng, dt, 3, xs, -3, 5, false);
  ad_tensor *w = randt(&rng, dt, 2, ns, 0.5, 1.5, false), *b = randt(&rng, dt, 2, ns, -1, 1, false);
  ad_tensor *y = ad_layer_norm(ctx, x, 2, ns, w, b, 1e-5);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  for (int64_t r = 0; r < 2; r++) {
    double mu = 0, var = 0;
    for (int64_t i = 0; i < 12; i++) mu += ad_tensor_get(x, r * 12 + i) / 12;
    for (int64_t i = 0; i < 12; i++) var += pow(ad_tensor_get(x, r * 12 + i) - mu, 2) / 12;
    for (int64_t i = 0; i < 12; i++) {
      double want = (ad_tensor_get(x, r * 12 + i) - mu) / sqrt(var + 1e-5) * ad_tensor_get(w, i) +
                    ad_tensor_get(b, i);
      cr_assert_float_eq(ad_tensor_get(y, r * 12 + i), want, tol, "row %lld elem %lld",
                         (long long)r, (long long)i);
    }
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(w);
  ad_tensor_free(b);
}

Test(seq, layer_norm_matches_definition) {
  layer_norm_matches_definition(AD_F64, 1e-13);
  layer_norm_matches_definition(AD_F32, 1e-6);
}

/* Rows long enough for the 16-wide partial sums, with tails (M = 16, 37,
 * 100, 1024), every affine combination (each is its own loop), both
 * dtypes: y, and dx, dweight, dbias of sum(y * g) for a random g, against
 * the definition in double (dx = s (gw - mean(gw) - xhat mean(gw xhat)),
 * gw = g w), within 1e-12 relative (float64) and 1e-5 (float32, against
 * the float32 inputs). */
Test(seq, layer_norm_long_rows_match_the_definition) {
  ad_rng rng;
  ad_rng_seed(&rng, 17);
  static const int64_t Ms[4] = {16, 37, 100, 1024};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    double tol = d ? 1e-5 : 1e-12;
    for (int m = 0; m < 4; m++)
      for (int aff = 0; aff < 4; aff++) {
        int64_t M = Ms[m], R = 3, xs[2] = {R, M};
        bool hw = aff & 1, hb = aff & 2;
        ad_tensor *x = randt(&rng, dt, 2, xs, -3, 40, true),
                  *g = randt(&rng, dt, 2, xs, -1, 1, false);
        ad_tensor *w = hw ? randt(&rng, dt, 1, &M, 0.5, 1.5, true) : NULL;
        ad_tensor *b = hb ? randt(&rng, dt, 1, &M, -1, 1, true) : NULL;
        ad_tensor *y = ad_layer_norm(ctx, x, 1, &M, w, b, 1e-5);
        cr_assert_not_null(y, "%s", ad_last_error(ctx));
        cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, g)), NULL), AD_OK, "%s",
                     ad_last_error(ctx));
        double *dw = calloc((size_t)M, sizeof *dw), *db = calloc((size_t)M, sizeof *db);
        cr_assert(dw && db);
        for (int64_t r = 0; r < R; r++) {
          double mu = 0, var = 0, mg = 0, mgx = 0;
          for (int64_t i = 0; i < M; i++) mu += ad_tensor_get(x, r * M + i);
          mu /= (double)M;
          for (int64_t i = 0; i < M; i++) var += pow(ad_tensor_get(x, r * M + i) - mu, 2);
          double s = 1 / sqrt(var / (double)M + 1e-5);
          for (int64_t i = 0; i < M; i++) {
            double xh = (ad_tensor_get(x, r * M + i) - mu) * s;
            double gw = ad_tensor_get(g, r * M + i) * (w ? ad_tensor_get(w, i) : 1);
            mg += gw / (double)M, mgx += gw * xh / (double)M;
            dw[i] += ad_tensor_get(g, r * M + i) * xh, db[i] += ad_tensor_get(g, r * M + i);
          }
          for (int64_t i = 0; i < M; i++) {
            double xh = (ad_tensor_get(x, r * M + i) - mu) * s;
            double gw = ad_tensor_get(g, r * M + i) * (w ? ad_tensor_get(w, i) : 1);
            double want = xh * (w ? ad_tensor_get(w, i) : 1) + (b ? ad_tensor_get(b, i) : 0);
            double got = ad_tensor_get(y, r * M + i);
            cr_assert(test_close(got, want, tol * (1 + fabs(want))),
                      "%s M %lld affine %d: y[%lld,%lld] %.17g, want %.17g", ad_dtype_name(dt),
                      (long long)M, aff, (long long)r, (long long)i, got, want);
            want = s * (gw - mg - xh * mgx), got = ad_tensor_get(x->grad, r * M + i);
            cr_assert(test_close(got, want, tol * (1 + fabs(want))),
                      "%s M %lld affine %d: dx[%lld,%lld] %.17g, want %.17g", ad_dtype_name(dt),
                      (long long)M, aff, (long long)r, (long long)i, got, want);
          }
        }
        for (int64_t i = 0; i < M; i++) {
          if (w)
            cr_assert(test_close(ad_tensor_get(w->grad, i), dw[i], tol * (1 + fabs(dw[i])) * 4),
                      "dweight[%lld]", (long long)i);
          if (b)
            cr_assert(test_close(ad_tensor_get(b->grad, i), db[i], tol * (1 + fabs(db[i])) * 4),
                      "dbias[%lld]", (long long)i);
        }
        free(dw);
        free(db);
        ad_tape_reset(ctx);
        ad_tensor_free(x);
        ad_tensor_free(g);
        ad_tensor_free(w);
        ad_tensor_free(b);
      }
  }
}

/* The plain backward of an affine layer_norm is one pass (dx, dweight and
 * dbias together, the weights' sums per group of rows); the recorded one
 * (create_graph) is made of ops. Both against each other on row counts
 * around the group sizes (1, 5, 16, 130: groups of 16 and a tail of 2;
 * 300; 4100: groups of 17), row lengths up to and past the one-pass limit
 * of 16384 (16385 takes the ops both ways), with and without bias and a gradient
 * for x, a frozen weight with a trainable bias, both dtypes: dx against the recorded dx (the same
 * bits), dweight and dbias of the one pass against their sums in double rounded once (the recorded
 * sums round every product and partial sum to the dtype); and the plain pass gives the same bits on
 * 1 and 3 threads. */
Test(seq, layer_norm_plain_backward_as_the_recorded_one) {
  ad_rng rng;
  ad_rng_seed(&rng, 23);
  static const int64_t Rs[6] = {1, 5, 16, 130, 300, 4100}, Ms[5] = {7, 64, 1024, 3000, 16385};
  for (int d = 0; d < 2; d++)
    for (int ri = 0; ri < 6; ri++)
      for (int mi = 0; mi < 5; mi++)
        for (int v = 0; v < 3; v++) {
          ad_dtype dt = d ? AD_F32 : AD_F64;
          int64_t R = Rs[ri], M = Ms[mi], xs[2] = {R, M};
          if (R * M > 300000) continue;
          bool bias = v != 1, xgrad = v == 0 || ri % 2, wgrad = v != 2; /* 2: a frozen weight */
          ad_tensor *x = randt(&rng, dt, 2, xs, -3, 8, xgrad),
                    *seed = randt(&rng, dt, 2, xs, -1, 1, false);
          ad_tensor *w = randt(&rng, dt, 1, &M, 0.5, 1.5, wgrad);
          ad_tensor *b = bias ? randt(&rng, dt, 1, &M, -1, 1, true) : NULL;
          ad_tensor *in[3], *plain[2][3], *rec[3];
          int n = 0;
          if (wgrad) in[n++] = w;
          if (b) in[n++] = b;
          if (xgrad) in[n++] = x;
          for (int t = 0; t < 2; t++) {
            cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
            ad_tensor *y = ad_layer_norm(ctx, x, 1, &M, w, b, 1e-5);
            cr_assert_eq(ad_grad(ctx, y, seed, n, in, plain[t], false), AD_OK, "%s",
                         ad_last_error(ctx));
          }
          ad_set_num_threads(1);
          ad_tensor *y = ad_layer_norm(ctx, x, 1, &M, w, b, 1e-5);
          cr_assert_eq(ad_grad(ctx, y, seed, n, in, rec, true), AD_OK, "%s", ad_last_error(ctx));
          /* dweight and dbias against sums in double of xhat and dy, dx
           * against the recorded form */
          double *sw = calloc((size_t)M, sizeof *sw), *sb = calloc((size_t)M, sizeof *sb),
                 *ab = calloc((size_t)M, sizeof *ab);
          cr_assert(sw && sb && ab);
          for (int64_t r = 0; r < R; r++) {
            double mu = 0, var = 0;
            for (int64_t i = 0; i < M; i++) mu += ad_tensor_get(x, r * M + i) / (double)M;
            for (int64_t i = 0; i < M; i++) var += pow(ad_tensor_get(x, r * M + i) - mu, 2);
            double sd = 1 / sqrt(var / (double)M + 1e-5);
            for (int64_t i = 0; i < M; i++) {
              double g = ad_tensor_get(seed, r * M + i),
                     xh = (ad_tensor_get(x, r * M + i) - mu) * sd;
              sw[i] += g * xh, sb[i] += g, ab[i] += fabs(g);
            }
          }
          for (int k = 0; k < n; k++) {
            cr_assert(memcmp(plain[0][k]->data, plain[1][k]->data,
                             (size_t)plain[0][k]->size * ad_dtype_size(dt)) == 0,
                      "%s R %lld M %lld: gradient %d differs on 3 threads", ad_dtype_name(dt),
                      (long long)R, (long long)M, k);
            double big = 0;
            for (int64_t i = 0; i < rec[k]->size; i++)
              big = fmax(big, fabs(ad_tensor_get(rec[k], i)));
            for (int64_t i = 0; i < rec[k]->size; i++) {
              double got = ad_tensor_get(plain[0][k], i), want = ad_tensor_get(rec[k], i),
                     tol = in[k] == x ? 0 : (d ? 2e-6 : 1e-12) * (big + 1); /* dx: same bits */
              if (in[k] != x && M <= 16384) { /* the sum in double, rounded once */
                want = in[k] == w ? sw[i] : sb[i];
                tol = (d ? 6e-8 : 1e-15) * fabs(want) + 1e-13 * ab[i]; /* x - mu's rounding */
              }
              QUICK_ASSERT(fabs(got - want) <= tol,
                           "%s R %lld M %lld bias %d: gradient %d [%lld] %.17g, want %.17g",
                           ad_dtype_name(dt), (long long)R, (long long)M, bias, k, (long long)i,
                           got, want);
            }
          }
          free(sw);
          free(sb);
          free(ab);
          ad_tape_reset(ctx);
          ad_tensor_free(x);
          ad_tensor_free(seed);
          ad_tensor_free(w);
          ad_tensor_free(b);
        }
}

typedef struct ln_case {
  int k;
  int64_t ns[2];
  bool weight, bias;
} ln_case;

static ad_tensor *ln_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  const ln_case *lc = ud;
  ad_tensor *w = lc->weight ? in[1] : NULL, *b = lc->bias ? in[n - 1] : NULL;
  /* x * x, so that the second derivative in x is not only the op's own */
  return ad_layer_norm(c, ad_mul(c, in[0], in[0]), lc->k, lc->ns, w, b, 1e-5);
}

/* First and second order through gradcheck in both dtypes, including the
 * bias without a weight (the builder adds it after the op). */
Test(seq, layer_norm_gradcheck) {
  ad_rng rng;
  ad_rng_seed(&rng, 9);
  const ln_case cases[3] = {
      {1, {4, 0}, true, true}, {2, {3, 4}, true, false}, {1, {4, 0}, false, true}};
  int64_t xs[3] = {2, 3, 4};
  for (int k = 0; k < 6; k++) {
    const ln_case *lc = &cases[k % 3];
    ad_dtype dt = k < 3 ? AD_F64 : AD_F32;
    ad_tensor *in[3] = {randt(&rng, dt, 3, xs, 0.3, 2, true), NULL, NULL};
    int n = 1;
    if (lc->weight) in[n++] = randt(&rng, dt, lc->k, lc->ns, 0.5, 1.5, true);
    if (lc->bias) in[n++] = randt(&rng, dt, lc->k, lc->ns, -1, 1, true);
    ad_check_report r;
    cr_assert_eq(ad_gradcheck(ctx, ln_fn, (void *)lc, n, in, NULL, &r), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(r.passed, "case %d gradcheck: input %d abs err %g", k, r.input, r.abs_err);
    cr_assert_eq(ad_gradgradcheck(ctx, ln_fn, (void *)lc, n, in, NULL, &r), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(r.passed, "case %d gradgradcheck: input %d abs err %g", k, r.input, r.abs_err);
    for (int j = 0; j < n; j++) ad_tensor_free(in[j]);
  }
}

/* One element per row: x - mean is exactly 0, so y is exactly the bias. */
Test(seq, layer_norm_one_element_rows_give_the_bias) {
  int64_t xs[2] = {3, 1}, ns[1] = {1};
  const double xv[3] = {1.5, -2.0, 1e6}, bv[1] = {0.25};
  ad_tensor *x = ad_from_data(ctx, AD_F32, 2, xs, NULL),
            *b = ad_from_data(ctx, AD_F32, 1, ns, NULL);
  for (int i = 0; i < 3; i++) ad_tensor_set(x, i, xv[i]);
  ad_tensor_set(b, 0, bv[0]);
  ad_tensor *y = ad_layer_norm(ctx, x, 1, ns, NULL, b, 1e-5);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  for (int i = 0; i < 3; i++) cr_assert_eq(ad_tensor_get(y, i), 0.25);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(b);
}

Test(seq, layer_norm_bad_input) {
  int64_t xs[2] = {2, 3}, n4[1] = {4}, n3[1] = {3}, n23[2] = {2, 3}, n32[2] = {3, 2};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 2, xs), *w4 = ad_ones(ctx, AD_F64, 1, n4);
  ad_tensor *w3f = ad_ones(ctx, AD_F32, 1, n3), *xi = ad_zeros(ctx, AD_I32, 2, xs);
  cr_assert_null(ad_layer_norm(ctx, x, 1, n4, NULL, NULL, 1e-5));
  expect_error(AD_ERR_SHAPE, "layer_norm", "normalized_shape [4]", "last 1 dims of x [2,3]", NULL);
  cr_assert_null(ad_layer_norm(ctx, x, 2, n32, NULL, NULL, 1e-5));
  expect_error(AD_ERR_SHAPE, "layer_norm", "normalized_shape [3,2]", "x [2,3]", NULL);
  int64_t n123[3] = {1, 2, 3};
  cr_assert_null(ad_layer_norm(ctx, x, 3, n123, NULL, NULL, 1e-5));
  expect_error(AD_ERR_SHAPE, "layer_norm", "[1,2,3]", NULL);
  cr_assert_null(ad_layer_norm(ctx, x, 1, n3, w4, NULL, 1e-5));
  expect_error(AD_ERR_SHAPE, "layer_norm", "weight [4]", "normalized shape", NULL);
  cr_assert_null(ad_layer_norm(ctx, x, 1, n3, NULL, w4, 1e-5));
  expect_error(AD_ERR_SHAPE, "layer_norm", "bias [4]", NULL);
  cr_assert_null(ad_layer_norm(ctx, x, 1, n3, w3f, NULL, 1e-5));
  expect_error(AD_ERR_DTYPE, "layer_norm", "weight is f32", NULL);
  cr_assert_null(ad_layer_norm(ctx, x, 1, n3, NULL, w3f, 1e-5));
  expect_error(AD_ERR_DTYPE, "layer_norm", "bias is f32", NULL);
  cr_assert_null(ad_layer_norm(ctx, x, 2, n23, NULL, NULL, -1));
  expect_error(AD_ERR_ARG, "layer_norm", "eps -1", NULL);
  cr_assert_null(ad_layer_norm(ctx, x, 2, n23, NULL, NULL, NAN));
  expect_error(AD_ERR_ARG, "layer_norm", "eps", NULL);
  cr_assert_null(ad_layer_norm(ctx, x, 0, n23, NULL, NULL, 1e-5));
  expect_error(AD_ERR_ARG, "layer_norm", "0 dims", NULL);
  cr_assert_null(ad_layer_norm(ctx, x, 1, NULL, NULL, NULL, 1e-5));
  expect_error(AD_ERR_NULL, "layer_norm", "NULL", NULL);
  cr_assert_null(ad_layer_norm(ctx, xi, 1, n3, NULL, NULL, 1e-5));
  expect_error(AD_ERR_DTYPE, "layer_norm", NULL);
  ad_tensor *t[4] = {x, w4, w3f, xi};
  for (int k = 0; k < 4; k++) ad_tensor_free(t[k]);
}

/* -------------------------------------------------------- cross-entropy */

/* logits [2, 3, 4] (classes in dim 1) with labels [2, 4]; -100 marks
 * padded steps, whose logits are NaN: the loss is the mean over the five
 * kept positions, and every ignored logit's gradient is exactly 0. */
static void ignored_positions(ad_dtype dt, bool sum) {
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  int64_t zs[3] = {2, 3, 4}, ts[2] = {2, 4};
  const int32_t tv[8] = {0, 2, -100, -100, 1, -100, 1, 0};
  ad_tensor *z = randt(&rng, dt, 3, zs, -2, 2, true), *t = ints(2, ts, tv);
  for (int c = 0; c < 3; c++) ad_tensor_set(z, c * 4 + 2, NAN); /* n 0, step 2 */
  ad_cross_entropy_opts o = {.ignore = true, .ignore_index = -100, .sum = sum};
  ad_tensor *L = ad_softmax_cross_entropy_ext(ctx, z, t, &o);
  cr_assert_not_null(L, "%s", ad_last_error(ctx));
  double want = 0;
  for (int p = 0; p < 8; p++) {
    if (tv[p] == -100) continue;
    int64_t n = p / 4, j = p % 4;
    double m = -INFINITY, s = 0;
    for (int c = 0; c < 3; c++) m = fmax(m, ad_tensor_get(z, (n * 3 + c) * 4 + j));
    for (int c = 0; c < 3; c++) s += exp(ad_tensor_get(z, (n * 3 + c) * 4 + j) - m);
    want += m + log(s) - ad_tensor_get(z, (n * 3 + tv[p]) * 4 + j);
  }
  if (!sum) want /= 5;
  cr_assert_float_eq(ad_tensor_item(L), want, dt == AD_F32 ? 1e-5 : 1e-12, "loss %g, want %g",
                     ad_tensor_item(L), want);
  cr_assert_eq(ad_backward(ctx, L, NULL), AD_OK, "%s", ad_last_error(ctx));
  for (int p = 0; p < 8; p++)
    for (int c = 0; c < 3; c++) {
      double g = ad_tensor_get(z->grad, ((p / 4) * 3 + c) * 4 + p % 4);
      if (tv[p] == -100)
        cr_assert(g == 0 && !signbit(g), "position %d class %d: %g", p, c, g);
      else
        cr_assert(isfinite(g) && g != 0, "position %d class %d: %g", p, c, g);
    }
  ad_tape_reset(ctx);
  ad_tensor_free(z);
  ad_tensor_free(t);
}

Test(seq, ignored_positions_get_exactly_zero_gradient) {
  ignored_positions(AD_F64, false);
  ignored_positions(AD_F32, false);
  ignored_positions(AD_F64, true);
}

/* Every position ignored: NaN for the mean (0 for the sum), as PyTorch, and
 * a zero gradient everywhere. */
Test(seq, all_ignored) {
  int64_t zs[3] = {1, 3, 2}, ts[2] = {1, 2};
  const int32_t tv[2] = {7, 7};
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  ad_tensor *z = randt(&rng, AD_F64, 3, zs, -1, 1, true), *t = ints(2, ts, tv);
  for (int sum = 0; sum < 2; sum++) {
    ad_cross_entropy_opts o = {.ignore = true, .ignore_index = 7, .sum = sum};
    ad_tensor *L = ad_softmax_cross_entropy_ext(ctx, z, t, &o);
    cr_assert_not_null(L, "%s", ad_last_error(ctx));
    cr_assert(sum ? ad_tensor_item(L) == 0 : isnan(ad_tensor_item(L)), "loss %g",
              ad_tensor_item(L));
    ad_tensor_zero_grad(z);
    cr_assert_eq(ad_backward(ctx, L, NULL), AD_OK, "%s", ad_last_error(ctx));
    for (int64_t i = 0; i < z->size; i++) cr_assert_eq(ad_tensor_get(z->grad, i), 0.0);
    ad_tape_reset(ctx);
  }
  ad_tensor_free(z);
  ad_tensor_free(t);
}

/* A NaN or infinite dy reaches no ignored position either: its gradient is
 * still exactly +0 (PyTorch's too), in the plain and the recorded backward,
 * for [N, C] and [N, C, T] logits, with some or every position ignored,
 * and in the second order too. (0 * dy made it NaN.) */
static void nonfinite_dy(ad_dtype dt, int nd, bool sum, bool all, double dy, bool create) {
  int64_t zs[3] = {3, 3, 2}, ts[2] = {3, 2};
  const int32_t part[6] = {0, -100, 2, 1, -100, -100},
                none[6] = {-100, -100, -100, -100, -100, -100};
  const int32_t *tv = all ? none : part;
  int64_t P = nd == 2 ? 3 : 6, T = nd == 2 ? 1 : 2;
  int32_t lv[6];
  for (int64_t p = 0; p < P; p++) lv[p] = tv[nd == 2 ? 2 * p + 1 : p];
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  ad_tensor *z = randt(&rng, dt, nd, zs, -2, 2, true), *t = ints(nd - 1, ts, lv);
  ad_cross_entropy_opts o = {.ignore = true, .ignore_index = -100, .sum = sum};
  ad_tensor *L = ad_softmax_cross_entropy_ext(ctx, z, t, &o);
  cr_assert_not_null(L, "%s", ad_last_error(ctx));
  ad_tensor *seed = ad_scalar(ctx, dt, dy), *g = NULL, *h = NULL;
  cr_assert_eq(ad_grad(ctx, L, seed, 1, &z, &g, create), AD_OK, "%s", ad_last_error(ctx));
  if (create) /* and the second order: d<g, 1>/dz */
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, g), NULL, 1, &z, &h, false), AD_OK, "%s",
                 ad_last_error(ctx));
  for (int64_t p = 0; p < P; p++)
    for (int64_t c = 0; c < 3; c++) {
      int64_t i = ((p / T) * 3 + c) * T + p % T;
      double v = ad_tensor_get(g, i), w = h ? ad_tensor_get(h, i) : 0;
      if (lv[p] == -100)
        cr_assert(v == 0 && !signbit(v) && w == 0,
                  "%s %dd dy %g%s: ignored position %lld class %lld: %g, second order %g",
                  ad_dtype_name(dt), nd, dy, create ? " (create_graph)" : "", (long long)p,
                  (long long)c, v, w);
    }
  ad_tape_reset(ctx);
  ad_tensor_free(seed);
  ad_tensor_free(z);
  ad_tensor_free(t);
}

Test(seq, ignored_positions_get_zero_from_a_nonfinite_dy) {
  const double dys[3] = {NAN, INFINITY, -INFINITY};
  for (int k = 0; k < 3; k++)
    for (int create = 0; create < 2; create++)
      for (int all = 0; all < 2; all++)
        for (int sum = 0; sum < 2; sum++)
          for (int nd = 2; nd <= 3; nd++) {
            nonfinite_dy(AD_F32, nd, sum, all, dys[k], create);
            nonfinite_dy(AD_F64, nd, sum, all, dys[k], create);
          }
}

static ad_tensor *ce_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  ad_tensor *t = ud;
  ad_cross_entropy_opts o = {.ignore = true, .ignore_index = 0};
  return ad_softmax_cross_entropy_ext(c, ad_mul(c, in[0], in[0]), t, &o);
}

/* Logits [N, C, d...] (segmentation's layout: a position's classes T
 * apart), which the op takes 64 positions of a sample at a time: the loss
 * within a few ulp of a double-precision reference (the max shifted out,
 * lse - z[label], the mean over counted positions), the same bits on 1
 * and 3 threads; the plain backward the recorded one's bits (softmax op,
 * sub, mul) on both thread counts. T around the block's width (1 block,
 * 1 and a bit, many), C = 1 and 21, ignored labels, infinite and NaN
 * logits (a position with one is NaN, its gradient NaN; the rest stay
 * finite). */
Test(seq, cross_entropy_spatial_blocks) {
  static const int64_t shapes[][4] = {
      {2, 21, 5, 13}, {3, 4, 64, 1}, {2, 3, 65, 1}, {1, 1, 70, 1}, {2, 21, 16, 16}};
  ad_rng rng;
  ad_rng_seed(&rng, 41);
  for (int d = 0; d < 2; d++)
    for (int si = 0; si < 5; si++)
      for (int v = 0; v < 3; v++) { /* v 1: labels ignored; v 2: and infinities and a NaN */
        ad_dtype dt = d ? AD_F64 : AD_F32;
        int64_t N = shapes[si][0], C = shapes[si][1], zs[4] = {N, C, shapes[si][2], shapes[si][3]};
        int64_t ts[3] = {N, zs[2], zs[3]}, T = zs[2] * zs[3], P = N * T;
        ad_tensor *z = randt(&rng, dt, 4, zs, -6, 6, true);
        int32_t *lv = malloc((size_t)P * sizeof *lv);
        cr_assert_not_null(lv);
        for (int64_t p = 0; p < P; p++)
          lv[p] = v && p % 5 == 3 ? -100 : (int32_t)ad_rng_below(&rng, (uint64_t)C);
        bool special = v == 2 && C > 1 && T > 40;
        if (special) { /* position 7: an inf logit; 9: NaN; 11: -inf (its loss finite) */
          ad_tensor_set(z, 1 * T + 7, INFINITY);
          ad_tensor_set(z, 0 * T + 9, NAN);
          ad_tensor_set(z, 1 * T + 11, -INFINITY);
          lv[7] = lv[9] = lv[11] = 0;
        }
        ad_tensor *t = ints(3, ts, lv);
        ad_cross_entropy_opts o = {.ignore = v != 0, .ignore_index = -100};
        /* the reference, in double */
        double total = 0;
        int64_t kept = 0;
        for (int64_t p = 0; p < P && !special; p++) {
          if (lv[p] == -100 && v) continue;
          int64_t r = p / T, j = p % T;
          double m = -INFINITY, s = 0;
          for (int64_t k = 0; k < C; k++) m = fmax(m, ad_tensor_get(z, (r * C + k) * T + j));
          for (int64_t k = 0; k < C; k++) s += exp(ad_tensor_get(z, (r * C + k) * T + j) - m);
          total += (m - ad_tensor_get(z, (r * C + lv[p]) * T + j)) + log(s);
          kept++;
        }
        double want = special ? NAN : total / (double)kept;
        ad_tensor *seed = ad_scalar(ctx, dt, 0.75), *g[2], *rec;
        double got[2];
        for (int th = 0; th < 2; th++) {
          cr_assert_eq(ad_set_num_threads(th ? 3 : 1), AD_OK);
          ad_tensor *L = ad_softmax_cross_entropy_ext(ctx, z, t, &o);
          cr_assert_not_null(L, "%s", ad_last_error(ctx));
          got[th] = ad_tensor_item(L);
          cr_assert_eq(ad_grad(ctx, L, seed, 1, &z, &g[th], false), AD_OK, "%s",
                       ad_last_error(ctx));
        }
        ad_set_num_threads(1);
        ad_tensor *L = ad_softmax_cross_entropy_ext(ctx, z, t, &o);
        cr_assert_eq(ad_grad(ctx, L, seed, 1, &z, &rec, true), AD_OK, "%s", ad_last_error(ctx));
        const char *n = ad_dtype_name(dt);
        if (special) /* the NaN position's loss (and inf - inf at position 7) */
          cr_assert(isnan(got[0]) && isnan(got[1]), "%s case %d: %g, want NaN", n, si, got[0]);
        else
          cr_assert(fabs(got[0] - want) <= (d ? 1e-14 : 2e-6) * (1 + fabs(want)) &&
                        memcmp(&got[0], &got[1], sizeof got[0]) == 0,
                    "%s case %d v %d: %.17g and %.17g (3 threads), want %.17g", n, si, v, got[0],
                    got[1], want);
        int64_t finite = 0;
        for (int64_t i = 0; i < z->size; i++) {
          double a = ad_tensor_get(g[0], i), b = ad_tensor_get(g[1], i), c = ad_tensor_get(rec, i);
          finite += isfinite(a);
          cr_assert((isnan(a) && isnan(b) && isnan(c)) ||
                        (memcmp(&a, &b, sizeof a) == 0 && memcmp(&a, &c, sizeof a) == 0),
                    "%s case %d v %d, element %lld: plain %.17g, 3 threads %.17g, recorded "
                    "%.17g",
                    n, si, v, (long long)i, a, b, c);
        }
        cr_assert_geq(finite, z->size - 3 * C, "%s case %d v %d: %lld of %lld finite", n, si, v,
                      (long long)finite, (long long)z->size);
        ad_tape_reset(ctx);
        ad_tensor_free(seed), ad_tensor_free(z), ad_tensor_free(t);
        free(lv);
      }
}

/* [N, C, 0]: no position, in both dtypes (the float32 one must not take
 * the float64 [N, C] loop): the mean is NaN, the sum 0, the gradient
 * empty. */
Test(seq, cross_entropy_no_position_either_dtype) {
  int64_t zs[3] = {2, 3, 0}, ts[2] = {2, 0};
  for (int d = 0; d < 2; d++)
    for (int sum = 0; sum < 2; sum++) {
      ad_tensor *z = ad_zeros(ctx, d ? AD_F32 : AD_F64, 3, zs), *t = ad_zeros(ctx, AD_I32, 2, ts);
      cr_assert(z && t);
      ad_tensor_set_requires_grad(z, true);
      ad_cross_entropy_opts o = {.sum = sum};
      ad_tensor *l = ad_softmax_cross_entropy_ext(ctx, z, t, &o);
      cr_assert_not_null(l, "%s", ad_last_error(ctx));
      cr_assert(sum ? ad_tensor_item(l) == 0 : isnan(ad_tensor_item(l)), "%s sum %d: %g",
                ad_dtype_name(z->dtype), sum, ad_tensor_item(l));
      cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK, "%s", ad_last_error(ctx));
      cr_assert(z->grad && z->grad->size == 0);
      ad_tape_reset(ctx);
      ad_tensor_free(z), ad_tensor_free(t);
    }
}

/* ignore_index 0 (a padding token) over [N, C, T], both orders. */
Test(seq, cross_entropy_gradcheck_with_ignore) {
  ad_rng rng;
  ad_rng_seed(&rng, 13);
  int64_t zs[3] = {2, 4, 3}, ts[2] = {2, 3};
  const int32_t tv[6] = {1, 0, 3, 0, 2, 2};
  ad_tensor *t = ints(2, ts, tv);
  for (int k = 0; k < 2; k++) {
    ad_dtype dt = k ? AD_F32 : AD_F64;
    ad_tensor *z = randt(&rng, dt, 3, zs, -2, 2, true);
    ad_check_report r;
    cr_assert_eq(ad_gradcheck(ctx, ce_fn, t, 1, &z, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
    cr_assert(r.passed, "%s gradcheck: abs err %g", ad_dtype_name(dt), r.abs_err);
    cr_assert_eq(ad_gradgradcheck(ctx, ce_fn, t, 1, &z, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
    cr_assert(r.passed, "%s gradgradcheck: abs err %g", ad_dtype_name(dt), r.abs_err);
    ad_tensor_free(z);
  }
  ad_tensor_free(t);
}

Test(seq, cross_entropy_bad_input) {
  int64_t zs[3] = {2, 3, 4}, ts[2] = {2, 4}, t5[2] = {2, 5}, t1[1] = {2};
  const int32_t tv[8] = {0, 1, 2, -100, 1, 7, 0, 0}, tg[8] = {0, 1, 2, 1, 1, 2, 0, 0};
  ad_tensor *z = ad_zeros(ctx, AD_F64, 3, zs), *t = ints(2, ts, tv), *tgood = ints(2, ts, tg);
  ad_tensor *tw = ad_zeros(ctx, AD_I32, 2, t5), *tn = ad_zeros(ctx, AD_I32, 1, t1);
  ad_cross_entropy_opts o = {.ignore = true, .ignore_index = -100};
  cr_assert_null(ad_softmax_cross_entropy_ext(ctx, z, t, &o));
  expect_error(AD_ERR_ARG, "softmax_cross_entropy", "label 7", "position 5", "[1,1]", "[2,4]",
               "0..2", "ignore_index -100", NULL);
  cr_assert_null(ad_softmax_cross_entropy_ext(ctx, z, t, NULL)); /* -100 is not ignored */
  expect_error(AD_ERR_ARG, "softmax_cross_entropy", "label -100", "position 3", NULL);
  cr_assert_null(ad_softmax_cross_entropy_ext(ctx, z, tw, &o));
  expect_error(AD_ERR_SHAPE, "softmax_cross_entropy", "[2,3,4]", "[2,5]", "[N,C,d1,...]", NULL);
  cr_assert_null(ad_softmax_cross_entropy_ext(ctx, z, tn, &o));
  expect_error(AD_ERR_SHAPE, "softmax_cross_entropy", "[2,3,4]", "[2]", NULL);
  /* the [N, C] function keeps its contract */
  cr_assert_null(ad_softmax_cross_entropy(ctx, z, tgood));
  expect_error(AD_ERR_SHAPE, "softmax_cross_entropy", "[2,3,4]", "need [N,C] and [N]", NULL);
  cr_assert_not_null(ad_softmax_cross_entropy_ext(ctx, z, tgood, NULL), "%s", ad_last_error(ctx));
  ad_tape_reset(ctx);
  ad_tensor *all[5] = {z, t, tgood, tw, tn};
  for (int k = 0; k < 5; k++) ad_tensor_free(all[k]);
}

/* Empty inputs: empty results and gradients, nothing read out of bounds;
 * the mean cross-entropy over no position is NaN, as in PyTorch. */
Test(seq, empty_inputs) {
  int64_t x0[2] = {0, 4}, n4[1] = {4}, ws[2] = {3, 2}, i0[1] = {0}, z0[3] = {2, 3, 0},
          t0[2] = {2, 0};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 2, x0), *w = ad_ones(ctx, AD_F64, 1, n4);
  ad_tensor *e = ad_ones(ctx, AD_F64, 2, ws), *idx = ad_zeros(ctx, AD_I32, 1, i0);
  ad_tensor *z = ad_zeros(ctx, AD_F64, 3, z0), *t = ad_zeros(ctx, AD_I32, 2, t0);
  ad_tensor *req[4] = {x, w, e, z};
  for (int k = 0; k < 4; k++) ad_tensor_set_requires_grad(req[k], true);
  ad_tensor *y = ad_layer_norm(ctx, x, 1, n4, w, NULL, 1e-5);
  ad_tensor *ye = ad_embedding(ctx, e, idx, 0);
  ad_tensor *l = ad_softmax_cross_entropy_ext(ctx, z, t, NULL);
  cr_assert(y && ye && l, "%s", ad_last_error(ctx));
  cr_assert(y->size == 0 && ye->ndim == 2 && ye->shape[0] == 0 && ye->shape[1] == 2);
  cr_assert(isnan(ad_tensor_item(l)));
  ad_tensor *s = ad_add(ctx, ad_add(ctx, ad_sum(ctx, y), ad_sum(ctx, ye)), l);
  cr_assert_eq(ad_backward(ctx, s, NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(w->grad->size, 4);
  for (int i = 0; i < 4; i++) cr_assert_eq(ad_tensor_get(w->grad, i), 0.0);
  for (int i = 0; i < 6; i++) cr_assert_eq(ad_tensor_get(e->grad, i), 0.0);
  ad_tape_reset(ctx);
  ad_tensor *all[6] = {x, w, e, idx, z, t};
  for (int k = 0; k < 6; k++) ad_tensor_free(all[k]);
}

/* Rows split over threads give the same bits as one thread (forward and
 * the gradient in x, large enough to be split). */
Test(seq, layer_norm_threads_same_bits) {
  ad_rng rng;
  ad_rng_seed(&rng, 17);
  int64_t xs[2] = {512, 128}, ns[1] = {128};
  ad_tensor *x = randt(&rng, AD_F32, 2, xs, -2, 2, true),
            *w = randt(&rng, AD_F32, 1, ns, 0.5, 1.5, true);
  ad_tensor *seed = randt(&rng, AD_F32, 2, xs, -1, 1, false);
  float *ref[2] = {malloc(sizeof(float) * 65536), malloc(sizeof(float) * 65536)};
  cr_assert(ref[0] && ref[1]);
  for (int threads = 1; threads <= 2; threads++) {
    cr_assert_eq(ad_set_num_threads(threads), AD_OK);
    ad_tensor *y = ad_layer_norm(ctx, x, 1, ns, w, NULL, 1e-5);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    ad_tensor_zero_grad(x);
    cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s", ad_last_error(ctx));
    for (int k = 0; k < 2; k++) {
      const float *v = k ? x->grad->data : y->data;
      if (threads == 1)
        memcpy(ref[k], v, sizeof(float) * 65536);
      else
        cr_assert(!memcmp(ref[k], v, sizeof(float) * 65536), "%s differs with 2 threads",
                  k ? "dx" : "y");
    }
    ad_tape_reset(ctx);
  }
  ad_set_num_threads(1);
  free(ref[0]);
  free(ref[1]);
  ad_tensor_free(x);
  ad_tensor_free(w);
  ad_tensor_free(seed);
}

/* NULL in: NULL out, and an error recorded when there is a context. */
Test(seq, null_arguments) {
  int64_t n2[2] = {2, 2}, n1 = 2;
  ad_tensor *w = ad_zeros(ctx, AD_F64, 2, n2), *i = ad_zeros(ctx, AD_I32, 1, &n1);
  cr_assert_null(ad_embedding(NULL, w, i, AD_NO_PADDING));
  cr_assert_null(ad_layer_norm(NULL, w, 1, &n1, NULL, NULL, 1e-5));
  cr_assert_null(ad_softmax_cross_entropy_ext(NULL, w, i, NULL));
  cr_assert_null(ad_embedding(ctx, NULL, i, AD_NO_PADDING));
  expect_error(AD_ERR_NULL, "embedding", NULL);
  cr_assert_null(ad_layer_norm(ctx, NULL, 1, &n1, NULL, NULL, 1e-5));
  expect_error(AD_ERR_NULL, "layer_norm", "x", NULL);
  cr_assert_null(ad_softmax_cross_entropy_ext(ctx, w, NULL, NULL));
  expect_error(AD_ERR_NULL, "softmax_cross_entropy", NULL);
  ad_tensor_free(w);
  ad_tensor_free(i);
}

/* The whole-sequence ops cut the batch's rows into blocks that run every
 * step on their own thread (op_rnn.c, seq_steps): on 1, 2 and 3 threads
 * the output and every gradient are the same bits, with a mask that stops
 * some rows part-way, time first and batch first, f32 and f64; in two
 * variants: 40 rows (blocks of 16 and 24, and of 8, 16, 16: the biases'
 * 8-row groups' partial sums made on different threads) and the whole
 * output's gradient; 33 rows (blocks of 16 and 17, and of 8, 16, 9: a
 * short last group) with only the h block read (the narrowed gradient the
 * layers pass) and no gradient wanted for the initial states or the
 * second bias; and a third variant like the second, of 128 steps of 128
 * rows of H = 8, whose copy of every step's h_{t-1} for the weight
 * gradient (over 256 KB) is cut into chunks of steps on the threads.
 * Before each run on threads, a decoy run on one thread, of other inputs
 * at the same shapes, lays the arena's scratch out as the run will, with
 * other values: a part the run left unwritten would show them rather than
 * the one-thread run's. (Where the dispatch gives these products to BLAS
 * the op runs one block and the runs compare one path; every product stays
 * within the built-in kernel's 4M multiply-adds.) */
/* The op and its backward through sum(o^2), o = Y or (variants 1 and 2)
 * its h block; returns Y. */
static ad_tensor *row_blocks_run(int gru, int variant, int64_t H, ad_tensor *xp, ad_tensor *w,
                                 ad_tensor *b, ad_tensor *b2, ad_tensor *h0, ad_tensor *c0,
                                 ad_tensor *mask, int bf) {
  ad_tensor *y = gru ? ad_gru_seq(ctx, xp, w, b, b2, h0, mask, bf)
                     : ad_lstm_seq(ctx, xp, w, b, h0, c0, mask, bf);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  ad_tensor *o = variant ? ad_narrow(ctx, y, 2, 0, H) : y;
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, o, o)), NULL), AD_OK, "%s",
               ad_last_error(ctx));
  return y;
}

Test(seq, sequence_ops_row_blocks_same_bits_on_any_threads) {
  for (int variant = 0; variant < 3; variant++)
    for (int gru = 0; gru < 2; gru++)
      for (int d = 0; d < 2; d++)
        for (int bf = 0; bf < 2; bf++) {
          int64_t N = variant == 2 ? 128
                      : variant    ? 33
                                   : 40,
                  T = variant == 2 ? 128 : 5, H = variant == 2 ? 8 : 24;
          ad_dtype dt = d ? AD_F64 : AD_F32;
          size_t es = d ? 8 : 4;
          int64_t G = gru ? 3 * H : 4 * H, xs[3] = {bf ? N : T, bf ? T : N, G}, ws[2] = {G, H},
                  bs[1] = {G}, hs[2] = {N, H}, ms[2] = {T, N};
          ad_rng rng;
          ad_rng_seed(&rng, 31 + (uint64_t)(8 * variant + 4 * gru + 2 * d + bf));
          ad_tensor *xp = randt(&rng, dt, 3, xs, -1, 1, true),
                    *w = randt(&rng, dt, 2, ws, -1, 1, true),
                    *b = randt(&rng, dt, 1, bs, -1, 1, true),
                    *b2 = randt(&rng, dt, 1, bs, -1, 1, !variant),
                    *h0 = randt(&rng, dt, 2, hs, -1, 1, !variant),
                    *c0 = randt(&rng, dt, 2, hs, -1, 1, !variant), *mask = ad_ones(ctx, dt, 2, ms),
                    *xd = randt(&rng, dt, 3, xs, -2, 2, true),
                    *hd = randt(&rng, dt, 2, hs, -1, 1, !variant),
                    *cd = randt(&rng, dt, 2, hs, -1, 1, !variant);
          for (int n = 0; n < N; n += 3) ad_tensor_set(mask, (int64_t)(n % T) * N + n, 0.0);
          ad_tensor *in[6] = {xp, w, b, b2, h0, c0};
          void *ref[7] = {0};
          for (int threads = 1; threads <= 3; threads++) {
            if (threads > 1) { /* a decoy on one thread: other values in the same scratch */
              cr_assert_eq(ad_set_num_threads(1), AD_OK);
              row_blocks_run(gru, variant, H, xd, w, b, b2, hd, cd, mask, bf);
              ad_tape_reset(ctx);
            }
            cr_assert_eq(ad_set_num_threads(threads), AD_OK);
            for (int k = 0; k < 6; k++) ad_tensor_zero_grad(in[k]);
            ad_tensor *y = row_blocks_run(gru, variant, H, xp, w, b, b2, h0, c0, mask, bf);
            const ad_tensor *got[7] = {y,
                                       xp->grad,
                                       w->grad,
                                       b->grad,
                                       gru ? b2->grad : NULL,
                                       h0->grad,
                                       gru ? NULL : c0->grad};
            for (int k = 0; k < 7; k++) {
              if (variant && k >= 4) cr_assert_null(got[k], "result %d: no gradient wanted", k);
              if (!got[k]) continue;
              size_t bytes = (size_t)got[k]->size * es;
              if (threads == 1) {
                ref[k] = malloc(bytes);
                cr_assert(ref[k]);
                memcpy(ref[k], got[k]->data, bytes);
              } else {
                cr_assert(!memcmp(ref[k], got[k]->data, bytes),
                          "%s %s%s, %lld rows: result %d differs on %d threads",
                          gru ? "gru_seq" : "lstm_seq", ad_dtype_name(dt),
                          bf ? ", batch first" : "", (long long)N, k, threads);
              }
            }
            ad_tape_reset(ctx);
          }
          cr_assert_eq(ad_set_num_threads(1), AD_OK);
          for (int k = 0; k < 7; k++) free(ref[k]);
          ad_tensor *all[10] = {xp, w, b, b2, h0, c0, mask, xd, hd, cd};
          for (int k = 0; k < 10; k++) ad_tensor_free(all[k]);
        }
}
