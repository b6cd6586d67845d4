/* test_winograd.c: the convolutions' Winograd F(4x4, 3x3) path (f32, 3x3,
 * stride 1, dilation 1, one group; autodiff/kernels/winograd.c) against
 * the exact sums over many shapes, its bits independent of the thread
 * count, and its first and second derivatives through gradcheck. The path
 * is forced (ad_conv_winograd_mode(1)) so that small shapes take it too. */
#include <criterion/criterion.h>

#include "kernels/kernels.h"
#include "test_alloc.h"

#include <math.h>
#include <string.h>

TEST_CTX_SUITE(winograd);

/* A shape: batch, channels in and out, image size, padding (top, bottom,
 * left, right) or 'same', and whether the ops get a bias. */
typedef struct wcase {
  int64_t n, c, o, h, w;
  int64_t pad[4];
  bool same, bias;
} wcase;

/* Odd and even sizes, outputs smaller than a tile and not a multiple of 4,
 * channels below, at and above the vector width (16), batches of 1 and 3
 * and of 9 (two blocks of 8 images, the last short), padding 0, 1, 2,
 * asymmetric and 'same'. */
static const wcase cases[] = {
    {1, 1, 1, 4, 4, {0}, false, false},
    {3, 3, 5, 5, 7, {1, 1, 1, 1}, false, true},
    {1, 17, 16, 8, 9, {0}, false, false},
    {3, 16, 33, 9, 8, {1, 1, 1, 1}, false, true},
    {1, 32, 32, 13, 13, {0, 1, 1, 2}, false, false},
    {3, 5, 17, 6, 11, {0}, true, true},
    {1, 33, 7, 3, 3, {1, 1, 1, 1}, false, false},
    {3, 20, 18, 26, 26, {0}, false, true},
    {1, 2, 3, 12, 5, {2, 2, 2, 2}, false, false},
    {3, 16, 16, 4, 4, {2, 0, 0, 2}, false, true},
    {9, 16, 16, 10, 10, {0}, false, false},
};

static ad_conv_opts opts_of(const wcase *k) {
  ad_conv_opts o = {.same = k->same};
  if (!k->same) memcpy(o.padding, k->pad, sizeof o.padding);
  return o;
}

static ad_tensor *rand4(ad_ctx *c, ad_rng *rng, ad_dtype dt, int64_t a, int64_t b, int64_t h,
                        int64_t w) {
  int64_t s[4] = {a, b, h, w};
  return ad_rand(c, rng, dt, 4, s, -1, 1);
}

/* t as f64 (abs: its absolute values). */
static ad_tensor *as_f64(ad_ctx *c, const ad_tensor *t, bool abs) {
  ad_tensor *r = ad_zeros(c, AD_F64, t->ndim, t->shape);
  for (int64_t i = 0; i < t->size; i++) {
    double v = ad_tensor_get(t, i);
    ad_tensor_set(r, i, abs ? fabs(v) : v);
  }
  return r;
}

/* The three ops of case k on (x, w, dy, b): 0 conv2d, 1 conv_transpose2d,
 * 2 conv2d_weight. */
static ad_tensor *run_op(ad_ctx *c, int op, const wcase *k, ad_tensor *x, ad_tensor *w,
                         ad_tensor *dy, ad_tensor *b, ad_tensor *bt) {
  ad_conv_opts o = opts_of(k);
  if (op == 0) return ad_conv2d(c, x, w, b, &o);
  if (op == 1) { /* 'same' of a 3x3 kernel is padding 1, explicit here */
    if (o.same) o = (ad_conv_opts){.padding = {1, 1, 1, 1}};
    return ad_conv_transpose2d(c, dy, w, bt, &o);
  }
  return ad_conv2d_weight(c, x, dy, 3, 3, &o);
}

/* Worst |winograd - exact| / (sum of |terms| + |bias|) over the elements
 * of the three ops, and the same for the GEMM path, over every case;
 * generic: the portable transforms and products (the others run where the
 * CPU has AVX-512). */
static void check_bound(bool generic) {
  static const char *const names[3] = {"conv2d", "conv_transpose2d", "conv2d_weight"};
  double worst[2][3] = {{0}};
  int differs[3] = {0};
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  ad_wino_set_generic(generic);
  for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
    const wcase *k = &cases[ci];
    ad_tensor *x = rand4(ctx, &rng, AD_F32, k->n, k->c, k->h, k->w);
    ad_tensor *w = rand4(ctx, &rng, AD_F32, k->o, k->c, 3, 3);
    int64_t no = k->o, nc = k->c;
    ad_tensor *b = k->bias ? ad_rand(ctx, &rng, AD_F32, 1, &no, -1, 1) : NULL;
    ad_tensor *bt = k->bias ? ad_rand(ctx, &rng, AD_F32, 1, &nc, -1, 1) : NULL;
    ad_conv_opts o = opts_of(k);
    ad_tensor *y0 = ad_conv2d(ctx, x, w, NULL, &o);
    cr_assert(y0, "case %zu: %s", ci, ad_last_error(ctx));
    ad_tensor *dy = ad_rand(ctx, &rng, AD_F32, 4, y0->shape, -1, 1);
    /* exact (f64, the GEMM path) values and scales */
    ad_tensor *xd = as_f64(ctx, x, false), *wd = as_f64(ctx, w, false),
              *dyd = as_f64(ctx, dy, false);
    ad_tensor *xa = as_f64(ctx, x, true), *wa = as_f64(ctx, w, true), *dya = as_f64(ctx, dy, true);
    ad_tensor *bd = b ? as_f64(ctx, b, false) : NULL, *ba = b ? as_f64(ctx, b, true) : NULL;
    ad_tensor *btd = bt ? as_f64(ctx, bt, false) : NULL, *bta = bt ? as_f64(ctx, bt, true) : NULL;
    for (int op = 0; op < 3; op++) {
      ad_tensor *exact = run_op(ctx, op, k, xd, wd, dyd, bd, btd);
      ad_tensor *scale = run_op(ctx, op, k, xa, wa, dya, ba, bta);
      cr_assert(exact && scale, "case %zu %s: %s", ci, names[op], ad_last_error(ctx));
      ad_tensor *got[2];
      for (int path = 0; path < 2; path++) {
        ad_conv_winograd_mode(path == 0 ? 1 : -1);
        got[path] = run_op(ctx, op, k, x, w, dy, b, bt);
        cr_assert(got[path], "case %zu %s: %s", ci, names[op], ad_last_error(ctx));
        cr_assert_eq(got[path]->size, exact->size);
      }
      ad_conv_winograd_mode(0);
      differs[op] += memcmp(got[0]->data, got[1]->data, (size_t)got[0]->size * sizeof(float)) != 0;
      for (int path = 0; path < 2; path++)
        for (int64_t i = 0; i < exact->size; i++) {
          double e = ad_tensor_get(exact, i), s = ad_tensor_get(scale, i);
          double err = fabs(ad_tensor_get(got[path], i) - e) / fmax(s, 1e-30);
          if (err > worst[path][op]) worst[path][op] = err;
          QUICK_ASSERT(path == 1 || err <= 1e-5,
                       "case %zu %s element %lld: winograd %.9g, exact %.9g, scale %.3g "
                       "(error %.3g of the scale)",
                       ci, names[op], (long long)i, ad_tensor_get(got[path], i), e, s, err);
        }
    }
    ad_tape_reset(ctx);
    ad_tensor *all[] = {x, w, b, bt, dy, xd, wd, dyd, xa, wa, dya, bd, ba, btd, bta};
    for (size_t t = 0; t < sizeof all / sizeof *all; t++) ad_tensor_free(all[t]);
  }
  for (int op = 0; op < 3; op++) {
    cr_log_info("%s%s: worst error / scale: winograd %.3g, gemm %.3g", names[op],
                generic ? " (generic)" : "", worst[0][op], worst[1][op]);
    /* the Winograd path ran: its rounding is not the GEMM path's */
    cr_assert_gt(differs[op], 0, "%s: the forced Winograd path gave the GEMM path's bits",
                 names[op]);
  }
  ad_wino_set_generic(false);
}

Test(winograd, agrees_with_the_exact_sums_within_the_stated_bound) { check_bound(false); }

Test(winograd, generic_kernels_agree_within_the_same_bound) { check_bound(true); }

/* The default rule takes the path for the MNIST CNN's second layer's shape
 * family (16+ channels, 4x4+ outputs): forward, both gradients and the
 * weight gradient are the same bits on 1, 2 and 3 threads, and on a batch
 * of 9 images cut into blocks of 8. c -> o channels: 16 -> 16, one block
 * of 16 x 16 channels for the kernel transforms; 33 -> 20, six blocks split
 * over the threads, the last of each side short, pad lanes on both sides. */
static void check_threads(int64_t c, int64_t oc) {
  ad_rng rng;
  ad_rng_seed(&rng, 13);
  ad_tensor *x = rand4(ctx, &rng, AD_F32, 9, c, 10, 10), *w = rand4(ctx, &rng, AD_F32, oc, c, 3, 3);
  int64_t nb = oc;
  ad_tensor *b = ad_rand(ctx, &rng, AD_F32, 1, &nb, -1, 1);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor_set_requires_grad(w, true);
  ad_tensor_set_requires_grad(b, true);
  ad_conv_opts o = {.padding = {1, 1, 1, 1}};
  float *ref[3] = {0};
  int64_t sizes[3];
  ad_tensor *seed = NULL;
  for (int threads = 1; threads <= 3; threads++) {
    cr_assert_eq(ad_set_num_threads(threads), AD_OK);
    ad_tensor *y = ad_conv2d(ctx, x, w, b, &o);
    cr_assert(y, "%s", ad_last_error(ctx));
    if (!seed) seed = ad_rand(ctx, &rng, AD_F32, 4, y->shape, -1, 1);
    ad_tensor_zero_grad(x);
    ad_tensor_zero_grad(w);
    ad_tensor_zero_grad(b);
    cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s", ad_last_error(ctx));
    const ad_tensor *got[3] = {y, x->grad, w->grad};
    for (int k = 0; k < 3; k++) {
      if (threads == 1) {
        sizes[k] = got[k]->size;
        ref[k] = malloc((size_t)sizes[k] * sizeof(float));
        memcpy(ref[k], got[k]->data, (size_t)sizes[k] * sizeof(float));
      } else {
        cr_assert(!memcmp(ref[k], got[k]->data, (size_t)sizes[k] * sizeof(float)),
                  "%lld -> %lld channels: result %d differs with %d threads", (long long)c,
                  (long long)oc, k, threads);
      }
    }
    ad_tape_reset(ctx);
  }
  /* and these were the Winograd path's bits, not the GEMM path's */
  ad_conv_winograd_mode(-1);
  ad_tensor *y = ad_conv2d(ctx, x, w, b, &o);
  cr_assert(y);
  cr_assert(memcmp(ref[0], y->data, (size_t)sizes[0] * sizeof(float)),
            "the default rule did not take the Winograd path");
  ad_conv_winograd_mode(0);
  ad_set_num_threads(1);
  for (int k = 0; k < 3; k++) free(ref[k]);
  ad_tape_reset(ctx);
  ad_tensor_free(seed);
  ad_tensor_free(x);
  ad_tensor_free(w);
  ad_tensor_free(b);
}

Test(winograd, results_do_not_depend_on_thread_count) {
  check_threads(16, 16);
  check_threads(33, 20);
}

static ad_tensor *conv_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  return ad_conv2d(c, in[0], in[1], in[2], ud);
}

/* First and second derivatives of conv2d in f32 with every op of the
 * chain (conv2d, conv_transpose2d, conv2d_weight and their derivatives) on
 * the Winograd path, against central differences in f64. */
Test(winograd, gradcheck_and_gradgradcheck_through_the_path) {
  static const ad_conv_opts os[2] = {{.padding = {1, 1, 1, 1}}, {.padding = {0, 1, 2, 0}}};
  ad_rng rng;
  ad_rng_seed(&rng, 17);
  ad_conv_winograd_mode(1);
  for (int v = 0; v < 2; v++) {
    ad_tensor *in[3] = {rand4(ctx, &rng, AD_F32, 2, 3, 5, 6), rand4(ctx, &rng, AD_F32, 2, 3, 3, 3),
                        NULL};
    int64_t nb = 2;
    in[2] = ad_rand(ctx, &rng, AD_F32, 1, &nb, -1, 1);
    for (int k = 0; k < 3; k++) ad_tensor_set_requires_grad(in[k], true);
    ad_check_opts co = {.eps = 1e-6, .atol = 1e-4, .rtol = 1e-3, .seed = 3};
    ad_check_report r1, r2;
    cr_assert_eq(ad_gradcheck(ctx, conv_fn, (void *)&os[v], 3, in, &co, &r1), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(r1.passed, "variant %d: gradcheck: input %d element %lld: %g vs %g", v, r1.input,
              (long long)r1.index, r1.analytic, r1.numeric);
    cr_assert_eq(ad_gradgradcheck(ctx, conv_fn, (void *)&os[v], 3, in, &co, &r2), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(r2.passed, "variant %d: gradgradcheck: input %d element %lld: %g vs %g", v, r2.input,
              (long long)r2.index, r2.analytic, r2.numeric);
    for (int k = 0; k < 3; k++) ad_tensor_free(in[k]);
  }
  ad_conv_winograd_mode(0);
}

/* When the arena cannot give the Winograd path its scratch (a cap), the
 * ops fall back to the paths without it and record no error: the values
 * agree with the Winograd path's within the bound. */
Test(winograd, no_room_for_scratch_falls_back) {
  ad_ctx *cx[2] = {ad_ctx_new(), ad_ctx_new()};
  /* x, y and dy take 1.5 MB; the Winograd scratch of one image 1.7 MB */
  cr_assert_eq(ad_set_arena_limit(cx[1], 2u << 20), AD_OK);
  ad_tensor *got[2][3], *ins[2][3];
  ad_conv_opts o = {.padding = {1, 1, 1, 1}};
  for (int v = 0; v < 2; v++) {
    ad_rng rng;
    ad_rng_seed(&rng, 19); /* the same inputs in both contexts */
    ad_tensor *x = ins[v][0] = rand4(cx[v], &rng, AD_F32, 2, 16, 64, 64);
    ad_tensor *w = ins[v][1] = rand4(cx[v], &rng, AD_F32, 16, 16, 3, 3);
    ad_tensor *dy = ins[v][2] = rand4(cx[v], &rng, AD_F32, 2, 16, 64, 64);
    got[v][0] = ad_conv2d(cx[v], x, w, NULL, &o);
    got[v][1] = ad_conv_transpose2d(cx[v], dy, w, NULL, &o);
    got[v][2] = ad_conv2d_weight(cx[v], x, dy, 3, 3, &o);
    for (int op = 0; op < 3; op++) cr_assert(got[v][op], "op %d: %s", op, ad_last_error(cx[v]));
  }
  cr_assert_eq(ad_last_status(cx[1]), AD_OK, "an error was left behind: %s", ad_last_error(cx[1]));
  cr_assert_leq(ad_arena_capacity(cx[1]), 2u << 20, "the scratch was not refused");
  int differs = 0;
  for (int op = 0; op < 3; op++) {
    /* the scale of an element: at most 9 (or 2 x 64 x 64) terms of |.| < 1 each */
    double scale = op < 2 ? 16 * 9 : 2 * 64 * 64;
    differs +=
        memcmp(got[0][op]->data, got[1][op]->data, (size_t)got[0][op]->size * sizeof(float)) != 0;
    for (int64_t i = 0; i < got[0][op]->size; i++) {
      double a = ad_tensor_get(got[1][op], i), want = ad_tensor_get(got[0][op], i);
      QUICK_ASSERT(fabs(a - want) <= 2e-5 * scale, "op %d element %lld: %.9g vs %.9g", op,
                   (long long)i, a, want);
    }
  }
  cr_assert_gt(differs, 0, "both contexts took the same path");
  for (int v = 0; v < 2; v++) {
    ad_tape_reset(cx[v]);
    for (int t = 0; t < 3; t++) ad_tensor_free(ins[v][t]);
    ad_ctx_free(cx[v]);
  }
}

/* One input value 1e6 times its neighbours' size, in every channel of an
 * image 16 -> 16 channels: on the default path each conv2d result stays
 * within 1e-5 x sum over channels c of (sum |w| over c's kernel) x (the
 * largest |x| of c in the 6x6 patch its 4x4 output tile reads), as ad.h
 * states; with ad_set_conv_winograd(false) the GEMM path's results stay
 * within 1e-6 of their own terms' magnitudes, the outlier's or not. */
Test(winograd, outlier_error_is_bounded_by_the_tile_patch) {
  enum { C = 16, O = 16, H = 12, W = 12, P = 1, OH = H + 2 * P - 2, OW = W + 2 * P - 2 };
  ad_rng rng;
  ad_rng_seed(&rng, 23);
  ad_tensor *x = rand4(ctx, &rng, AD_F32, 1, C, H, W), *w = rand4(ctx, &rng, AD_F32, O, C, 3, 3);
  for (int64_t c = 0; c < C; c++) ad_tensor_set(x, (c * H + 5) * W + 6, 1e6);
  ad_tensor *xd = as_f64(ctx, x, false), *wd = as_f64(ctx, w, false);
  ad_tensor *xa = as_f64(ctx, x, true), *wa = as_f64(ctx, w, true);
  ad_conv_opts o = {.padding = {P, P, P, P}};
  ad_tensor *exact = ad_conv2d(ctx, xd, wd, NULL, &o), *own = ad_conv2d(ctx, xa, wa, NULL, &o);
  cr_assert(exact && own, "%s", ad_last_error(ctx));
  cr_assert(ad_set_conv_winograd(true), "the path is on by default");
  ad_tensor *on = ad_conv2d(ctx, x, w, NULL, &o);
  cr_assert(ad_set_conv_winograd(false), "the previous setting");
  ad_tensor *off = ad_conv2d(ctx, x, w, NULL, &o);
  cr_assert(!ad_set_conv_winograd(true), "the previous setting");
  cr_assert(on && off, "%s", ad_last_error(ctx));
  double worst_own = 0;
  for (int64_t oc = 0; oc < O; oc++)
    for (int64_t y = 0; y < OH; y++)
      for (int64_t xx = 0; xx < OW; xx++) {
        double patch = 0;
        for (int64_t c = 0; c < C; c++) {
          double m = 0, sw = 0;
          for (int64_t r = y / 4 * 4 - P; r < y / 4 * 4 - P + 6; r++)
            for (int64_t q = xx / 4 * 4 - P; q < xx / 4 * 4 - P + 6; q++)
              if (r >= 0 && r < H && q >= 0 && q < W)
                m = fmax(m, fabs(ad_tensor_get(x, (c * H + r) * W + q)));
          for (int k = 0; k < 9; k++) sw += fabs(ad_tensor_get(w, (oc * C + c) * 9 + k));
          patch += sw * m;
        }
        int64_t i = (oc * OH + y) * OW + xx;
        double e = ad_tensor_get(exact, i), s = ad_tensor_get(own, i);
        double err_on = fabs(ad_tensor_get(on, i) - e), err_off = fabs(ad_tensor_get(off, i) - e);
        QUICK_ASSERT(err_on <= 1e-5 * patch,
                     "output %lld: winograd %.9g, exact %.9g, patch scale %.3g", (long long)i,
                     ad_tensor_get(on, i), e, patch);
        QUICK_ASSERT(err_off <= 1e-6 * s, "output %lld: gemm %.9g, exact %.9g, own scale %.3g",
                     (long long)i, ad_tensor_get(off, i), e, s);
        worst_own = fmax(worst_own, err_on / s);
      }
  cr_log_info("outlier: winograd's worst error / its own terms' scale %.3g", worst_own);
  cr_assert(memcmp(on->data, off->data, (size_t)on->size * sizeof(float)), "the path did not run");
  ad_tape_reset(ctx);
  ad_tensor *all[] = {x, w, xd, wd, xa, wa};
  for (size_t t = 0; t < sizeof all / sizeof *all; t++) ad_tensor_free(all[t]);
}

/* An inf or a NaN in the input (x for conv2d and conv2d_weight, dy for
 * conv_transpose2d) reaches exactly the results whose windows hold it:
 * each op's result on the default rule is the GEMM path's, bit for bit
 * (the transforms alone would spread it over whole tiles). */
Test(winograd, inf_and_nan_are_not_spread_over_tiles) {
  ad_rng rng;
  ad_rng_seed(&rng, 29);
  const wcase k = {2, 16, 16, 9, 9, {1, 1, 1, 1}, false, false};
  for (int v = 0; v < 2; v++) {
    ad_tensor *x = rand4(ctx, &rng, AD_F32, 2, 16, 9, 9),
              *w = rand4(ctx, &rng, AD_F32, 16, 16, 3, 3);
    ad_tensor *dy = rand4(ctx, &rng, AD_F32, 2, 16, 9, 9);
    double bad = v ? NAN : INFINITY;
    ad_tensor_set(x, (1 * 16 + 3) * 81 + 4 * 9 + 4, bad); /* image 1, channel 3, (4, 4) */
    ad_tensor_set(dy, 5 * 9 + 2, -bad);                   /* image 0, channel 0, (5, 2) */
    for (int op = 0; op < 3; op++) {
      ad_tensor *got = run_op(ctx, op, &k, x, w, dy, NULL, NULL);
      ad_conv_winograd_mode(-1);
      ad_tensor *gemm = run_op(ctx, op, &k, x, w, dy, NULL, NULL);
      ad_conv_winograd_mode(0);
      cr_assert(got && gemm, "%s", ad_last_error(ctx));
      int64_t nonfinite = 0;
      for (int64_t i = 0; i < got->size; i++) nonfinite += !isfinite(ad_tensor_get(got, i));
      cr_assert_gt(nonfinite, 0, "op %d: the %s was lost", op, v ? "NaN" : "inf");
      if (op == 0) /* one pixel of one image: its 3x3 window in every output channel */
        cr_assert_eq(nonfinite, 9 * 16, "op 0: %lld outputs not finite", (long long)nonfinite);
      cr_assert(!memcmp(got->data, gemm->data, (size_t)got->size * sizeof(float)),
                "op %d with a%s: not the GEMM path's bits (%lld outputs not finite)", op,
                v ? " NaN" : "n inf", (long long)nonfinite);
    }
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(dy);
  }
}

/* Under an arena limit the scratch of one buffer per thread may not fit
 * where one buffer does: the op then runs its items one after another on
 * the same path, so for every limit each of the three ops gives the same
 * bits on 1 and 2 threads (it took another path, with other rounding) and
 * fits on 2 threads where it fits on 1. */
Test(winograd, arena_limit_does_not_make_bits_depend_on_threads) {
  int compared = 0;
  for (int op = 0; op < 3; op++)
    for (size_t half_mb = 2; half_mb <= 16; half_mb++) {
      float *ref = NULL;
      int64_t size = 0;
      for (int threads = 1; threads <= 2; threads++) {
        ad_ctx *c = ad_ctx_new();
        cr_assert_eq(ad_set_num_threads(threads), AD_OK);
        ad_rng rng;
        ad_rng_seed(&rng, 31);
        ad_tensor *x = rand4(c, &rng, AD_F32, 2, 16, 64, 64),
                  *w = rand4(c, &rng, AD_F32, 16, 16, 3, 3),
                  *dy = rand4(c, &rng, AD_F32, 2, 16, 64, 64);
        cr_assert_eq(ad_set_arena_limit(c, (half_mb << 19) + ad_arena_used(c)), AD_OK);
        const wcase k = {2, 16, 16, 64, 64, {1, 1, 1, 1}, false, false};
        ad_tensor *got = run_op(c, op, &k, x, w, dy, NULL, NULL);
        if (threads == 1 && !got) { /* the output itself does not fit */
          ad_ctx_free(c);
          break;
        }
        cr_assert(got, "op %d, limit %zu KB: fits on 1 thread, not on 2: %s", op, half_mb * 512,
                  ad_last_error(c));
        if (threads == 1) {
          size = got->size;
          ref = malloc((size_t)size * sizeof(float));
          memcpy(ref, got->data, (size_t)size * sizeof(float));
        } else {
          cr_assert(!memcmp(ref, got->data, (size_t)size * sizeof(float)),
                    "op %d, limit %zu KB: 2 threads differ from 1", op, half_mb * 512);
          compared++;
        }
        ad_ctx_free(c);
      }
      free(ref);
    }
  ad_set_num_threads(1);
  cr_assert_geq(compared, 30, "only %d limits compared", compared);
}

/* A convolution's scratch goes back to the arena when the op returns: a
 * chain of them keeps only their outputs. */
Test(winograd, scratch_is_not_kept_until_the_reset) {
  ad_rng rng;
  ad_rng_seed(&rng, 37);
  ad_tensor *x = rand4(ctx, &rng, AD_F32, 4, 16, 32, 32),
            *w = rand4(ctx, &rng, AD_F32, 16, 16, 3, 3);
  ad_conv_opts o = {.padding = {1, 1, 1, 1}};
  for (int mode = -1; mode <= 0; mode++) { /* the GEMM path, then Winograd */
    ad_conv_winograd_mode(mode);
    size_t before = ad_arena_used(ctx);
    ad_tensor *y = x;
    for (int k = 0; k < 4; k++) y = ad_conv2d(ctx, y, w, NULL, &o);
    cr_assert(y, "%s", ad_last_error(ctx));
    size_t outputs = 4 * (size_t)y->size * sizeof(float), grew = ad_arena_used(ctx) - before;
    cr_assert_leq(grew, outputs + 4096, "mode %d: the arena grew by %zu bytes for %zu of outputs",
                  mode, grew, outputs);
    ad_tape_reset(ctx);
  }
  ad_conv_winograd_mode(0);
  ad_tensor_free(x), ad_tensor_free(w);
}

/* conv2d of x by w (padding pad) in a new context under an arena limit on
 * `threads` threads, after a warm-up step that leaves a small kept chunk
 * after the first (warm > 0: tensors of warm and warm / 20 f64 elements,
 * then a reset and an op of warm / 2.5 elements), as a training loop's
 * steps do; a malloc'ed copy of the result, or NULL when it did not fit. */
static float *conv_under_limit(int threads, size_t limit, int64_t warm, ad_dtype dt,
                               const int64_t *xs, const int64_t *ws, int64_t pad, bool nan,
                               int64_t *size) {
  cr_assert_eq(ad_set_num_threads(threads), AD_OK);
  ad_ctx *c = ad_ctx_new();
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  ad_tensor *x = ad_rand(c, &rng, dt, 4, xs, -1, 1), *w = ad_rand(c, &rng, dt, 4, ws, -1, 1);
  if (nan) ad_tensor_set(x, 5 * xs[3] + 7, NAN); /* image 0, channel 0 */
  int64_t n[3] = {warm, warm / 20, warm * 2 / 5};
  ad_tensor *f[3] = {NULL};
  for (int k = 0; k < 3 && warm; k++) f[k] = ad_zeros(c, AD_F64, 1, n + k);
  cr_assert_eq(ad_set_arena_limit(c, limit), AD_OK);
  if (warm) {
    cr_assert(ad_add_scalar(c, f[0], 1) && ad_add_scalar(c, f[1], 1), "%s", ad_last_error(c));
    ad_tape_reset(c);
    cr_assert(ad_add_scalar(c, f[2], 1), "%s", ad_last_error(c));
  }
  ad_conv_opts o = {.padding = {pad, pad, pad, pad}};
  ad_tensor *y = ad_conv2d(c, x, w, NULL, &o);
  float *out = NULL;
  if (y) {
    size_t bytes = (size_t)y->size * ad_dtype_size(dt);
    *size = (int64_t)bytes;
    out = malloc(bytes);
    memcpy(out, y->data, bytes);
  }
  ad_ctx_free(c);
  return out;
}

/* After a reset, with a small kept chunk behind the first: a failed try at
 * one buffer per thread must not leave the arena past the room one buffer
 * needs (f64, the GEMM path). And a Winograd result holding a NaN, redone
 * by the GEMM path, gets back the room the Winograd scratch took: in both,
 * the same bits on 1 and 2 threads at every limit where both fit. */
Test(winograd, arena_limit_after_reset_and_after_nan_fallback) {
  int64_t xs[4] = {2, 4, 34, 34}, ws[4] = {8, 4, 3, 3}, size1 = 0, size2 = 0;
  float *a = conv_under_limit(1, (1u << 20) + 65536, 126000, AD_F64, xs, ws, 0, false, &size1);
  float *b = conv_under_limit(2, (1u << 20) + 65536, 126000, AD_F64, xs, ws, 0, false, &size2);
  cr_assert(a && b, "the convolution did not fit");
  cr_assert(!memcmp(a, b, (size_t)size1), "kept chunks: 2 threads differ from 1");
  free(a), free(b);
  int64_t xn[4] = {2, 16, 32, 32}, wn[4] = {16, 16, 3, 3};
  int compared = 0;
  for (size_t limit = 1536 << 10; limit <= (2304u << 10); limit += 16 << 10) {
    a = conv_under_limit(1, limit, 0, AD_F32, xn, wn, 1, true, &size1);
    b = conv_under_limit(2, limit, 0, AD_F32, xn, wn, 1, true, &size2);
    if (a && b) {
      /* image 1 is all finite: compare it bit for bit */
      cr_assert(!memcmp(a + size1 / 8, b + size1 / 8, (size_t)size1 / 2),
                "NaN fallback, limit %zu: 2 threads differ from 1", limit);
      compared++;
    }
    free(a), free(b);
  }
  ad_set_num_threads(1);
  cr_assert_geq(compared, 20, "only %d limits compared", compared);
}

/* conv_transpose2d of data of one sign (uniform [0, 1) dy and kernels,
 * 128 -> 128 channels, padding 1) rounds as conv2d: each result within
 * 5e-6 of its terms' magnitudes (here its exact value) of the exact value
 * (measured 1.5e-6). The adjoint of conv2d's transforms,
 * which this op used to run, was off by 1.75e-5 here: its A makes the
 * transformed dy large and of one sign, and its B amplifies the channel
 * sum's rounding while cancelling it (kernels/winograd.c). */
Test(winograd, transposed_rounds_as_conv2d_on_data_of_one_sign) {
  enum { N = 1, C = 128, O = 128, H = 16, W = 16 };
  ad_rng rng;
  ad_rng_seed(&rng, 31);
  int64_t ys[4] = {N, O, H, W}, ws[4] = {O, C, 3, 3};
  ad_tensor *dy = ad_rand(ctx, &rng, AD_F32, 4, ys, 0, 1),
            *w = ad_rand(ctx, &rng, AD_F32, 4, ws, 0, 1);
  ad_tensor *dyd = as_f64(ctx, dy, false), *wd = as_f64(ctx, w, false);
  ad_conv_opts o = {.padding = {1, 1, 1, 1}};
  ad_tensor *exact = ad_conv_transpose2d(ctx, dyd, wd, NULL, &o);
  ad_tensor *on = ad_conv_transpose2d(ctx, dy, w, NULL, &o);
  cr_assert(ad_set_conv_winograd(false), "the path is on by default");
  ad_tensor *off = ad_conv_transpose2d(ctx, dy, w, NULL, &o);
  cr_assert(!ad_set_conv_winograd(true), "the previous setting");
  cr_assert(exact && on && off, "%s", ad_last_error(ctx));
  cr_assert(memcmp(on->data, off->data, (size_t)on->size * sizeof(float)), "the path did not run");
  double worst = 0;
  for (int64_t i = 0; i < exact->size; i++) {
    double e = ad_tensor_get(exact, i);
    cr_assert_gt(e, 0);
    worst = fmax(worst, fabs(ad_tensor_get(on, i) - e) / e);
  }
  cr_log_info("conv_transpose2d, data of one sign: worst relative error %.3g", worst);
  cr_assert_leq(worst, 5e-6, "worst relative error %.3g", worst);
  ad_tape_reset(ctx);
  ad_tensor *all[] = {dy, w, dyd, wd};
  for (size_t t = 0; t < sizeof all / sizeof *all; t++) ad_tensor_free(all[t]);
}

/* G, as winograd.c's (Lavin and Gray's points 0, 1, -1, 2, -2, infinity). */
static const double tg[6][3] = {{1.0 / 4, 0, 0},
                                {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                {0, 0, 1}};

/* Values for the kernel transforms' inputs: mostly in [-2, 2), some 1e30
 * times that, and NaN, -inf, -0 and a subnormal now and then. */
static float kt_value(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  unsigned r = (unsigned)(*s % 1000);
  if (r < 4) return (float[]){NAN, -INFINITY, -0.0f, 1e-40f}[r];
  float v = (float)((double)(*s >> 11) / 9007199254740992.0 * 4 - 2);
  return r < 10 ? v * 1e30f : v;
}

/* Equal bits, or both NaN (the sign of a NaN made from NaNs of both signs
 * is left open, ad.h). */
static bool same_bits(float a, float b) { return !memcmp(&a, &b, sizeof a) || (a != a && b != b); }

/* ad_wino_weights and ad_wino_weight_grad, which compute 16 output
 * channels at a time in vector lanes, give each (c, o) pair's own formula
 * to the bit: U = G w G^T and dw = G^T dU G in double, rounded once, in
 * this order; pad lanes +0. Both instances (AVX-512 and generic), channel
 * counts below, at and above a block of 16, w flipped (conv_transpose2d's
 * form) or not. */
Test(winograd, kernel_transforms_give_each_pairs_formula) {
  static const int64_t cs[] = {1, 3, 16, 17, 33}, os[] = {1, 5, 16, 31, 40};
  uint64_t seed = 88172645463325252u;
  for (int gen = 0; gen < 2; gen++) {
    ad_wino_set_generic(gen);
    for (int ci = 0; ci < 5; ci++)
      for (int oi = 0; oi < 5; oi++)
        for (int flip = 0; flip < 2; flip++) {
          int64_t C = cs[ci], O = os[oi];
          ad_wino p;
          if (flip)
            cr_assert(ad_wino_init_transposed(&p, 2, C, 8, 8, O, 8, 8, 1, 1));
          else
            ad_wino_init(&p, 2, C, 8, 8, O, 8, 8, 1, 1);
          /* for p->flip the transposed geometry's channels: c = O, o = C */
          int64_t pc = p.c, po = p.o, nu = p.u_floats + p.ut_floats;
          float *w = malloc((size_t)(C * O * 9) * sizeof *w), *u = malloc((size_t)nu * sizeof *u);
          float *du = malloc((size_t)p.u_floats * sizeof *du),
                *dw = malloc(9 * (size_t)(C * O) * 4);
          cr_assert(w && u && du && dw);
          for (int64_t i = 0; i < C * O * 9; i++) w[i] = kt_value(&seed);
          for (int64_t i = 0; i < p.u_floats; i++) du[i] = kt_value(&seed);
          memset(u, 0x7f, (size_t)nu * sizeof *u);
          memset(dw, 0x7f, 9 * (size_t)(C * O) * sizeof *dw);
          ad_wino_weights(&p, w, u, 0, ad_wino_kblocks(&p));
          ad_wino_weight_grad(&p, du, dw, 0, ad_wino_kblocks(&p));
          for (int64_t c = 0; c < p.cp; c++)
            for (int64_t o = 0; o < p.op; o++) {
              float k[9];
              for (int i = 0; i < 9; i++)
                k[i] = c >= pc || o >= po ? 0
                       : flip             ? w[(c * po + o) * 9 + 8 - i]
                                          : w[(o * pc + c) * 9 + i];
              for (int a = 0; a < 6; a++) {
                double row[3];
                for (int v = 0; v < 3; v++)
                  row[v] = tg[a][0] * k[v] + tg[a][1] * k[3 + v] + tg[a][2] * k[6 + v];
                for (int b = 0; b < 6; b++) {
                  float want =
                      c >= pc || o >= po
                          ? 0.0f
                          : (float)(tg[b][0] * row[0] + tg[b][1] * row[1] + tg[b][2] * row[2]);
                  int64_t xi = a * 6 + b;
                  if (c < pc)
                    cr_assert(same_bits(u[(xi * pc + c) * p.op + o], want),
                              "U gen %d flip %d C %ld O %ld xi %ld c %ld o %ld: %a, want %a", gen,
                              flip, (long)C, (long)O, (long)xi, (long)c, (long)o,
                              u[(xi * pc + c) * p.op + o], want);
                  if (!flip && o < po)
                    cr_assert(same_bits(u[p.u_floats + (xi * po + o) * p.cp + c], want),
                              "UT gen %d C %ld O %ld xi %ld o %ld c %ld: %a, want %a", gen, (long)C,
                              (long)O, (long)xi, (long)o, (long)c,
                              u[p.u_floats + (xi * po + o) * p.cp + c], want);
                }
              }
              if (c >= pc || o >= po) continue;
              for (int a = 0; a < 3; a++) {
                double col[6];
                for (int v = 0; v < 6; v++) {
                  double s = 0;
                  for (int q = 0; q < 6; q++) s += tg[q][a] * du[((q * 6 + v) * pc + c) * p.op + o];
                  col[v] = s;
                }
                for (int b = 0; b < 3; b++) {
                  double s = 0;
                  for (int v = 0; v < 6; v++) s += tg[v][b] * col[v];
                  float got = dw[((o * pc + c) * 3 + a) * 3 + b];
                  cr_assert(same_bits(got, (float)s),
                            "dw gen %d flip %d C %ld O %ld o %ld c %ld (%d,%d): %a, want %a", gen,
                            flip, (long)C, (long)O, (long)o, (long)c, a, b, got, (float)s);
                }
              }
            }
          free(w), free(u), free(du), free(dw);
        }
  }
  ad_wino_set_generic(false);
}
