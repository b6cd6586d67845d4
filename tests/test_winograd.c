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
