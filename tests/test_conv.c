/* test_conv.c: the convolution ops beyond their fixture values and
 * gradient checks: 'same' padding counted window by window, the options'
 * zero value, results independent of the thread count, the path without
 * scratch memory, and every bad input refused with a message naming the op,
 * the shapes and the groups. */
#include <criterion/criterion.h>

#include "test_alloc.h"

#include <math.h>
#include <string.h>

TEST_CTX_SUITE(conv);

static ad_tensor *ones4(ad_ctx *c, int64_t a, int64_t b, int64_t h, int64_t w) {
  int64_t s[4] = {a, b, h, w};
  return ad_ones(c, AD_F64, 4, s);
}

static bool same_dims(const ad_tensor *a, const ad_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int k = 0; k < a->ndim; k++)
    if (a->shape[k] != b->shape[k]) return false;
  return true;
}

static ad_tensor *rand4(ad_ctx *c, ad_rng *rng, ad_dtype dt, int64_t a, int64_t b, int64_t h,
                        int64_t w) {
  int64_t s[4] = {a, b, h, w};
  return ad_rand(c, rng, dt, 4, s, -1, 1);
}

/* Rows of a window starting at i - p0 (k taps, dilation d) inside [0, n). */
static int64_t taps_inside(int64_t i, int64_t p0, int64_t k, int64_t d, int64_t n) {
  int64_t count = 0;
  for (int64_t u = 0; u < k; u++) {
    int64_t r = i - p0 + u * d;
    count += r >= 0 && r < n;
  }
  return count;
}

/* Ones convolved with ones under 'same': every output is the number of
 * the window's taps inside the input, and the output is as large as the
 * input. An odd total padding puts the extra row/column at the bottom and
 * right (kernel 4: one before, two after), as PyTorch does. */
Test(conv, same_ones_count_window_taps_at_every_position) {
  static const struct {
    int64_t h, w, kh, kw, dh, dw;
  } cases[] = {{5, 6, 3, 4, 1, 1}, {6, 5, 4, 2, 1, 1}, {7, 4, 3, 2, 2, 3}, {4, 4, 1, 5, 1, 1}};
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    int64_t h = cases[k].h, w = cases[k].w, kh = cases[k].kh, kw = cases[k].kw;
    int64_t dh = cases[k].dh, dw = cases[k].dw;
    ad_tensor *x = ones4(ctx, 1, 2, h, w), *wt = ones4(ctx, 1, 2, kh, kw);
    ad_conv_opts o = {.dilation = {dh, dw}, .same = true};
    ad_tensor *y = ad_conv2d(ctx, x, wt, NULL, &o);
    cr_assert(y, "case %zu: %s", k, ad_last_error(ctx));
    cr_assert(y->shape[2] == h && y->shape[3] == w, "case %zu: output %lldx%lld for %lldx%lld", k,
              (long long)y->shape[2], (long long)y->shape[3], (long long)h, (long long)w);
    int64_t th = dh * (kh - 1), tw = dw * (kw - 1);
    for (int64_t i = 0; i < h; i++)
      for (int64_t j = 0; j < w; j++) {
        double want =
            2.0 * (double)(taps_inside(i, th / 2, kh, dh, h) * taps_inside(j, tw / 2, kw, dw, w));
        double got = ad_tensor_get(y, i * w + j);
        QUICK_ASSERT(got == want, "case %zu at (%lld, %lld): %g taps counted, %g expected", k,
                     (long long)i, (long long)j, got, want);
      }
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    ad_tensor_free(wt);
  }
}

/* The zero options (or NULL) are PyTorch's defaults: the op records
 * stride 1, dilation 1, one group, and computes what explicit ones do. */
Test(conv, zero_options_are_pytorch_defaults) {
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  ad_tensor *x = rand4(ctx, &rng, AD_F64, 2, 3, 5, 4), *w = rand4(ctx, &rng, AD_F64, 2, 3, 2, 2);
  ad_tensor_set_requires_grad(w, true);
  ad_conv_opts zero = {0}, explicit = {.stride = {1, 1}, .dilation = {1, 1}, .groups = 1};
  ad_tensor *y[3] = {ad_conv2d(ctx, x, w, NULL, NULL), ad_conv2d(ctx, x, w, NULL, &zero),
                     ad_conv2d(ctx, x, w, NULL, &explicit)};
  for (int k = 0; k < 3; k++) cr_assert(y[k], "%s", ad_last_error(ctx));
  const ad_attrs *at = ad_tensor_attrs(y[0]);
  cr_assert(at);
  cr_assert(at->conv.stride[0] == 1 && at->conv.stride[1] == 1 && at->conv.dilation[0] == 1 &&
            at->conv.dilation[1] == 1 && at->conv.groups == 1 && !at->conv.same);
  cr_assert_eq(y[0]->shape[2], 4);
  cr_assert_eq(y[0]->shape[3], 3);
  for (int k = 1; k < 3; k++)
    cr_assert(!memcmp(y[0]->data, y[k]->data, (size_t)y[0]->size * sizeof(double)));
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

/* Forward, both gradients and the weight gradient of a batch spread over
 * threads are the same bits as on one thread. */
Test(conv, results_do_not_depend_on_thread_count) {
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  ad_tensor *x = rand4(ctx, &rng, AD_F32, 9, 4, 10, 9), *w = rand4(ctx, &rng, AD_F32, 6, 2, 3, 3);
  int64_t nb = 6;
  ad_tensor *b = ad_rand(ctx, &rng, AD_F32, 1, &nb, -1, 1);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor_set_requires_grad(w, true);
  ad_tensor_set_requires_grad(b, true);
  ad_conv_opts o = {.stride = {2, 1}, .padding = {1, 0, 2, 1}, .groups = 2};
  float *ref[4] = {0};
  int64_t sizes[4];
  for (int threads = 1; threads <= 3; threads++) {
    cr_assert_eq(ad_set_num_threads(threads), AD_OK);
    ad_tensor *y = ad_conv2d(ctx, x, w, b, &o);
    cr_assert(y, "%s", ad_last_error(ctx));
    ad_tensor *seed = ad_rand(ctx, &rng, AD_F32, 4, y->shape, -1, 1);
    if (threads > 1) { /* the same seed each time */
      memcpy(seed->data, ref[3], (size_t)seed->size * sizeof(float));
    }
    ad_tensor_zero_grad(x);
    ad_tensor_zero_grad(w);
    ad_tensor_zero_grad(b);
    cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s", ad_last_error(ctx));
    const ad_tensor *got[4] = {y, x->grad, w->grad, seed};
    for (int k = 0; k < 4; k++) {
      if (threads == 1) {
        sizes[k] = got[k]->size;
        ref[k] = malloc((size_t)sizes[k] * sizeof(float));
        memcpy(ref[k], got[k]->data, (size_t)sizes[k] * sizeof(float));
      } else if (k < 3) {
        cr_assert(!memcmp(ref[k], got[k]->data, (size_t)sizes[k] * sizeof(float)),
                  "result %d differs with %d threads", k, threads);
      }
    }
    ad_tape_reset(ctx);
    ad_tensor_free(seed);
  }
  ad_set_num_threads(1);
  for (int k = 0; k < 4; k++) free(ref[k]);
  ad_tensor_free(x);
  ad_tensor_free(w);
  ad_tensor_free(b);
}

/* When the arena cannot give the col buffer (a cap), the ops compute the
 * same values by a direct loop, and record no error: plain, and with
 * groups, strides, dilations, asymmetric padding and biases. */
Test(conv, no_room_for_scratch_gives_the_same_values) {
  /* the col of one image is 2.7 MB or more (4 x 7 x 7 rows, 31 x 55 or
   * more columns of f64); the tensors fit in the arena's first chunk */
  static const struct {
    int64_t c, o;
    ad_conv_opts o2;
    bool bias;
  } cases[] = {
      {4, 2, {.groups = 0}, false},
      {8, 2, {.stride = {2, 1}, .padding = {1, 2, 0, 3}, .dilation = {1, 2}, .groups = 2}, true}};
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    const ad_conv_opts *o = &cases[k].o2;
    int64_t c = cases[k].c, oc = cases[k].o, g = o->groups ? o->groups : 1;
    ad_ctx *cx[2] = {ad_ctx_new(), ad_ctx_new()};
    cr_assert_eq(ad_set_arena_limit(cx[1], 2u << 20), AD_OK);
    ad_tensor *got[2][3], *ins[2][4];
    for (int v = 0; v < 2; v++) {
      ad_rng rng;
      ad_rng_seed(&rng, 3); /* the same inputs in both contexts */
      ad_tensor *x = ins[v][0] = rand4(cx[v], &rng, AD_F64, 2, c, 64, 64);
      ad_tensor *w = ins[v][1] = rand4(cx[v], &rng, AD_F64, oc, c / g, 7, 7);
      int64_t nb[2] = {oc, c};
      ad_tensor *b = ins[v][2] = cases[k].bias ? ad_rand(cx[v], &rng, AD_F64, 1, nb, -1, 1) : NULL;
      ad_tensor *bt = ins[v][3] =
          cases[k].bias ? ad_rand(cx[v], &rng, AD_F64, 1, nb + 1, -1, 1) : NULL;
      got[v][0] = ad_conv2d(cx[v], x, w, b, o);
      cr_assert(got[v][0], "case %zu: %s", k, ad_last_error(cx[v]));
      got[v][1] = ad_conv_transpose2d(cx[v], got[v][0], w, bt, o);
      got[v][2] = ad_conv2d_weight(cx[v], x, got[v][0], 7, 7, o);
      cr_assert(got[v][1] && got[v][2], "case %zu: %s", k, ad_last_error(cx[v]));
      cr_assert(same_dims(got[v][1], x), "case %zu: conv_transpose2d gives x's shape", k);
    }
    cr_assert_eq(ad_last_status(cx[1]), AD_OK, "case %zu: an error was left behind: %s", k,
                 ad_last_error(cx[1]));
    cr_assert_leq(ad_arena_capacity(cx[1]), 2u << 20, "case %zu: the scratch was not refused", k);
    for (int op = 0; op < 3; op++)
      for (int64_t i = 0; i < got[0][op]->size; i++) {
        double a = ad_tensor_get(got[1][op], i), want = ad_tensor_get(got[0][op], i);
        QUICK_ASSERT(test_close(a, want, 1e-11 * fmax(1.0, fabs(want))),
                     "case %zu op %d element %lld: %.17g vs %.17g", k, op, (long long)i, a, want);
      }
    for (int v = 0; v < 2; v++) {
      ad_tape_reset(cx[v]);
      for (int t = 0; t < 4; t++) ad_tensor_free(ins[v][t]);
      ad_ctx_free(cx[v]);
    }
  }
}

/* The weight gradient without scratch keeps float32's accuracy over a large
 * image: each of its 9 values is a sum of 320,000 positive products (x and
 * dy in [0, 1), no cancellation). The direct loop sums one image's products
 * in a double; when it added them one by one into the float result it was
 * off by 3.6e-5 (now 5e-8; the path with scratch: under 1e-6). */
Test(conv, no_room_for_scratch_keeps_the_weight_gradient_accurate) {
  ad_ctx *cx = ad_ctx_new();
  cr_assert_not_null(cx);
  /* one image's col is 9 x 400 x 400 floats, 5.8 MB: refused under 2 MB */
  cr_assert_eq(ad_set_arena_limit(cx, 2u << 20), AD_OK);
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  int64_t s[4] = {2, 1, 400, 400};
  ad_tensor *x = ad_rand(cx, &rng, AD_F32, 4, s, 0, 1), *dy = ad_rand(cx, &rng, AD_F32, 4, s, 0, 1);
  cr_assert(x && dy, "%s", ad_last_error(cx));
  ad_conv_opts o = {.padding = {1, 1, 1, 1}};
  ad_tensor *dw = ad_conv2d_weight(cx, x, dy, 3, 3, &o);
  cr_assert(dw, "%s", ad_last_error(cx));
  cr_assert_leq(ad_arena_capacity(cx), 2u << 20, "the scratch was not refused");
  const float *xp = x->data, *gp = dy->data;
  double worst = 0;
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++) {
      double want = 0; /* dw[a, b] = sum over n, i, j of dy[n, i, j] x[n, i + a - 1, j + b - 1] */
      for (int64_t n = 0; n < 2; n++)
        for (int64_t i = 0; i < 400; i++)
          for (int64_t j = 0; j < 400; j++) {
            int64_t r = i + a - 1, q = j + b - 1;
            if (r >= 0 && r < 400 && q >= 0 && q < 400)
              want += (double)gp[(n * 400 + i) * 400 + j] * xp[(n * 400 + r) * 400 + q];
          }
      double err = fabs(ad_tensor_get(dw, a * 3 + b) - want) / want;
      worst = err > worst ? err : worst;
    }
  cr_log_info("worst relative error of the weight gradient without scratch: %.3g", worst);
  cr_assert_lt(worst, 1e-6, "the weight gradient without scratch is off by %.3g", worst);
  ad_tape_reset(cx);
  ad_tensor_free(x);
  ad_tensor_free(dy);
  ad_ctx_free(cx);
}

/* conv2d without scratch keeps float32's accuracy over many channels: each
 * output is a sum of 1024 x 9 positive products (x and w in [0, 1)). The
 * direct loop sums an output in a double; when it added the products one
 * by one into the float output it was off by 5e-6 (the path with scratch
 * and PyTorch: under 1e-6). */
Test(conv, no_room_for_scratch_keeps_conv2d_accurate) {
  ad_ctx *cx = ad_ctx_new();
  cr_assert_not_null(cx);
  /* one image's col is 1024 x 9 x 16 x 16 floats, 9.4 MB: refused under 2 MB */
  cr_assert_eq(ad_set_arena_limit(cx, 2u << 20), AD_OK);
  ad_rng rng;
  ad_rng_seed(&rng, 6);
  int64_t sx[4] = {1, 1024, 16, 16}, sw[4] = {2, 1024, 3, 3};
  ad_tensor *x = ad_rand(cx, &rng, AD_F32, 4, sx, 0, 1),
            *w = ad_rand(cx, &rng, AD_F32, 4, sw, 0, 1);
  cr_assert(x && w, "%s", ad_last_error(cx));
  ad_conv_opts o = {.padding = {1, 1, 1, 1}};
  ad_tensor *y = ad_conv2d(cx, x, w, NULL, &o);
  cr_assert(y, "%s", ad_last_error(cx));
  cr_assert_leq(ad_arena_capacity(cx), 2u << 20, "the scratch was not refused");
  const float *xp = x->data, *wp = w->data;
  double worst = 0;
  for (int64_t oc = 0; oc < 2; oc++)
    for (int64_t i = 0; i < 16; i++)
      for (int64_t j = 0; j < 16; j++) {
        double want = 0;
        for (int64_t c = 0; c < 1024; c++)
          for (int64_t a = 0; a < 3; a++)
            for (int64_t b = 0; b < 3; b++) {
              int64_t r = i + a - 1, q = j + b - 1;
              if (r >= 0 && r < 16 && q >= 0 && q < 16)
                want += (double)wp[((oc * 1024 + c) * 3 + a) * 3 + b] * xp[(c * 16 + r) * 16 + q];
            }
        double err = fabs(ad_tensor_get(y, (oc * 16 + i) * 16 + j) - want) / want;
        worst = err > worst ? err : worst;
      }
  cr_log_info("worst relative error of conv2d without scratch: %.3g", worst);
  cr_assert_lt(worst, 1e-6, "conv2d without scratch is off by %.3g", worst);
  ad_tape_reset(cx);
  ad_tensor_free(x);
  ad_tensor_free(w);
  ad_ctx_free(cx);
}

/* conv_transpose2d (conv2d's input gradient) without scratch likewise:
 * each result is a sum of 512 x 9 positive products; added one by one into
 * the float result they were off by about 4e-6 (now a double sums them). */
Test(conv, no_room_for_scratch_keeps_conv_transpose2d_accurate) {
  ad_ctx *cx = ad_ctx_new();
  cr_assert_not_null(cx);
  /* one image's col is 64 x 9 x 16 x 16 floats, 590 KB: refused under 512 KB */
  cr_assert_eq(ad_set_arena_limit(cx, 512u << 10), AD_OK);
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  int64_t sy[4] = {1, 512, 16, 16}, sw[4] = {512, 64, 3, 3};
  ad_tensor *y = ad_rand(cx, &rng, AD_F32, 4, sy, 0, 1),
            *w = ad_rand(cx, &rng, AD_F32, 4, sw, 0, 1);
  cr_assert(y && w, "%s", ad_last_error(cx));
  ad_conv_opts o = {.padding = {1, 1, 1, 1}};
  ad_tensor *x = ad_conv_transpose2d(cx, y, w, NULL, &o);
  cr_assert(x, "%s", ad_last_error(cx));
  cr_assert_leq(ad_arena_capacity(cx), 512u << 10, "the scratch was not refused");
  const float *yp = y->data, *wp = w->data;
  double worst = 0;
  for (int64_t c = 0; c < 64; c++)
    for (int64_t r = 0; r < 16; r++)
      for (int64_t q = 0; q < 16; q++) {
        double want = 0; /* x[c, r, q] = sum of w[o, c, a, b] y[o, r + 1 - a, q + 1 - b] */
        for (int64_t oc = 0; oc < 512; oc++)
          for (int64_t a = 0; a < 3; a++)
            for (int64_t b = 0; b < 3; b++) {
              int64_t i = r + 1 - a, j = q + 1 - b;
              if (i >= 0 && i < 16 && j >= 0 && j < 16)
                want += (double)wp[((oc * 64 + c) * 3 + a) * 3 + b] * yp[(oc * 16 + i) * 16 + j];
            }
        double err = fabs(ad_tensor_get(x, (c * 16 + r) * 16 + q) - want) / want;
        worst = err > worst ? err : worst;
      }
  cr_log_info("worst relative error of conv_transpose2d without scratch: %.3g", worst);
  cr_assert_lt(worst, 1e-6, "conv_transpose2d without scratch is off by %.3g", worst);
  ad_tape_reset(cx);
  ad_tensor_free(y);
  ad_tensor_free(w);
  ad_ctx_free(cx);
}

/* conv1d is conv2d over H = 1: against a hand-computed case with a bias,
 * stride 2 and asymmetric padding. */
Test(conv, conv1d_by_hand) {
  int64_t sx[3] = {1, 1, 5}, sw[3] = {1, 1, 2}, sb = 1;
  const double xv[5] = {1, 2, 3, 4, 5}, wv[2] = {1, -1}, bv[1] = {0.5};
  ad_tensor *x = ad_from_data(ctx, AD_F64, 3, sx, xv), *w = ad_from_data(ctx, AD_F64, 3, sw, wv);
  ad_tensor *b = ad_from_data(ctx, AD_F64, 1, &sb, bv);
  ad_conv1d_opts o = {.stride = 2, .padding = {1, 0}};
  /* padded: 0 1 2 3 4 5; windows at 0, 2, 4: 0-1, 2-3, 4-5 */
  ad_tensor *y = ad_conv1d(ctx, x, w, b, &o);
  cr_assert(y, "%s", ad_last_error(ctx));
  cr_assert(y->ndim == 3 && y->shape[0] == 1 && y->shape[1] == 1 && y->shape[2] == 3);
  for (int k = 0; k < 3; k++) cr_assert_eq(ad_tensor_get(y, k), -0.5);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(w);
  ad_tensor_free(b);
}

/* An encoder-decoder in miniature: tanh(conv2d) with stride 2 and 'same'
 * rows, then conv_transpose2d back up, passes gradcheck and gradgradcheck
 * in every input (the second order runs each op's backward recorded). */
static ad_tensor *enc_dec(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n, (void)ud;
  ad_conv_opts down = {.stride = {2, 2}, .padding = {1, 1, 0, 1}};
  ad_conv_opts up = {.stride = {2, 2}, .padding = {1, 1, 0, 1}, .output_padding = {0, 1}};
  ad_tensor *h = ad_tanh(c, ad_conv2d(c, in[0], in[1], in[2], &down));
  return ad_conv_transpose2d(c, h, in[3], NULL, &up);
}

Test(conv, encoder_decoder_passes_gradgradcheck) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  int64_t nb = 3;
  ad_tensor *in[4] = {rand4(ctx, &rng, AD_F64, 2, 2, 5, 4), rand4(ctx, &rng, AD_F64, 3, 2, 3, 2),
                      ad_rand(ctx, &rng, AD_F64, 1, &nb, -1, 1),
                      rand4(ctx, &rng, AD_F64, 3, 2, 3, 2)};
  for (int k = 0; k < 4; k++) ad_tensor_set_requires_grad(in[k], true);
  ad_tensor *y = enc_dec(ctx, 4, in, NULL);
  cr_assert(y, "%s", ad_last_error(ctx));
  cr_assert(y->shape[2] == 5 && y->shape[3] == 4, "decoded to %lldx%lld", (long long)y->shape[2],
            (long long)y->shape[3]);
  ad_tape_reset(ctx);
  ad_check_report r;
  cr_assert_eq(ad_gradcheck(ctx, enc_dec, NULL, 4, in, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed, "gradcheck: input %d element %lld: %g vs %g", r.input, (long long)r.index,
            r.analytic, r.numeric);
  cr_assert_eq(ad_gradgradcheck(ctx, enc_dec, NULL, 4, in, NULL, &r), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(r.passed, "gradgradcheck: input %d element %lld: %g vs %g", r.input, (long long)r.index,
            r.analytic, r.numeric);
  for (int k = 0; k < 4; k++) ad_tensor_free(in[k]);
}

/* An empty batch, as PyTorch allows: an empty output, and a zero weight
 * gradient (the sum over no image). */
Test(conv, empty_batch) {
  ad_tensor *x = ones4(ctx, 0, 2, 5, 5), *w = ones4(ctx, 3, 2, 3, 3);
  ad_tensor_set_requires_grad(w, true);
  ad_tensor *y = ad_conv2d(ctx, x, w, NULL, NULL);
  cr_assert(y, "%s", ad_last_error(ctx));
  cr_assert(y->size == 0 && y->shape[1] == 3 && y->shape[2] == 3);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(w->grad);
  for (int64_t i = 0; i < w->size; i++) cr_assert_eq(ad_tensor_get(w->grad, i), 0.0);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

/* ------------------------------------------------------------ bad input */

/* Expects y NULL with status st and a message holding every fragment. */
static void expect_fail(const ad_tensor *y, ad_status st, const char *const *frags, int n,
                        const char *what) {
  cr_assert_null(y, "%s: accepted", what);
  cr_assert_eq(ad_last_status(ctx), st, "%s: status %s, message '%s'", what,
               ad_status_str(ad_last_status(ctx)), ad_last_error(ctx));
  for (int k = 0; k < n; k++)
    cr_assert(strstr(ad_last_error(ctx), frags[k]), "%s: '%s' lacks '%s'", what, ad_last_error(ctx),
              frags[k]);
  ad_clear_error(ctx);
}
#define EXPECT_FAIL(y, st, what, ...)                                                              \
  do {                                                                                             \
    const char *frags_[] = {__VA_ARGS__};                                                          \
    expect_fail(y, st, frags_, (int)(sizeof frags_ / sizeof *frags_), what);                       \
  } while (0)

Test(conv, conv2d_refuses_bad_input_with_a_clear_message) {
  ad_tensor *x = ones4(ctx, 2, 4, 5, 5), *w = ones4(ctx, 6, 2, 3, 3), *w3 = ones4(ctx, 6, 3, 3, 3);
  int64_t s3[3] = {2, 4, 5}, nb = 5;
  ad_tensor *x3 = ad_ones(ctx, AD_F64, 3, s3), *b5 = ad_ones(ctx, AD_F64, 1, &nb);
  ad_tensor *xf = ad_ones(ctx, AD_F32, 4, x->shape);
  ad_conv_opts g2 = {.groups = 2}, g3 = {.groups = 3}, o;
  cr_assert(ad_conv2d(ctx, x, w, NULL, &g2), "control: %s", ad_last_error(ctx));

  EXPECT_FAIL(ad_conv2d(ctx, x3, w, NULL, &g2), AD_ERR_SHAPE, "rank", "conv2d",
              "x must be [N, C, H, W]", "[2,4,5]");
  EXPECT_FAIL(ad_conv2d(ctx, x, w3, NULL, &g2), AD_ERR_SHAPE, "channels", "conv2d",
              "[2,4,5,5] has 4 channels", "w [6,3,3,3] takes 3 per group x 2 groups = 6");
  EXPECT_FAIL(ad_conv2d(ctx, x, w, NULL, &g3), AD_ERR_SHAPE, "groups", "conv2d", "groups 3",
              "must divide the input channels 4");
  ad_tensor *w5 = ones4(ctx, 5, 2, 3, 3);
  EXPECT_FAIL(ad_conv2d(ctx, x, w5, NULL, &g2), AD_ERR_SHAPE, "groups and O", "groups 2",
              "output channels 5");
  EXPECT_FAIL(ad_conv2d(ctx, x, w, b5, &g2), AD_ERR_SHAPE, "bias", "bias [5] must be [6]",
              "groups 2");
  EXPECT_FAIL(ad_conv2d(ctx, xf, w, NULL, &g2), AD_ERR_DTYPE, "dtype", "conv2d", "dtypes differ",
              "input 0 is f32, input 1 is f64");
  o = (ad_conv_opts){.stride = {-1, 1}, .groups = 2};
  EXPECT_FAIL(ad_conv2d(ctx, x, w, NULL, &o), AD_ERR_ARG, "stride", "stride (-1, 1)", "at least 1");
  o = (ad_conv_opts){.dilation = {1, -2}, .groups = 2};
  EXPECT_FAIL(ad_conv2d(ctx, x, w, NULL, &o), AD_ERR_ARG, "dilation", "dilation (1, -2)");
  o = (ad_conv_opts){.groups = -2};
  EXPECT_FAIL(ad_conv2d(ctx, x, w, NULL, &o), AD_ERR_ARG, "groups < 0", "groups -2");
  o = (ad_conv_opts){.padding = {0, -1, 0, 0}, .groups = 2};
  EXPECT_FAIL(ad_conv2d(ctx, x, w, NULL, &o), AD_ERR_ARG, "padding", "padding (0, -1, 0, 0)",
              "must not be negative");
  o = (ad_conv_opts){.padding = {0, INT64_MAX, 0, 0}, .groups = 2};
  EXPECT_FAIL(ad_conv2d(ctx, x, w, NULL, &o), AD_ERR_ARG, "huge padding", "out of range");
  o = (ad_conv_opts){.stride = {2, 2}, .same = true, .groups = 2};
  EXPECT_FAIL(ad_conv2d(ctx, x, w, NULL, &o), AD_ERR_ARG, "same", "'same' padding needs stride 1");
  o = (ad_conv_opts){.output_padding = {1, 0}, .groups = 2};
  EXPECT_FAIL(ad_conv2d(ctx, x, w, NULL, &o), AD_ERR_ARG, "output_padding",
              "conv_transpose2d only");
  ad_tensor *big = ones4(ctx, 6, 2, 6, 3);
  o = (ad_conv_opts){.groups = 2};
  EXPECT_FAIL(ad_conv2d(ctx, x, big, NULL, &o), AD_ERR_SHAPE, "kernel too large", "6x3 kernel",
              "spans more than the padded input", "[2,4,5,5]");
  o = (ad_conv_opts){.dilation = {1, 3}, .groups = 2};
  EXPECT_FAIL(ad_conv2d(ctx, x, w, NULL, &o), AD_ERR_SHAPE, "dilated kernel too large",
              "dilation (1, 3)");
  /* sizes beyond a tensor's: the engine's central check names the op */
  ad_tensor *one = ones4(ctx, 1, 1, 1, 1);
  o = (ad_conv_opts){
      .padding = {INT64_C(1) << 39, INT64_C(1) << 39, INT64_C(1) << 39, INT64_C(1) << 39}};
  EXPECT_FAIL(ad_conv2d(ctx, one, one, NULL, &o), AD_ERR_SHAPE, "overflow", "conv2d", "too large");
  /* a count of inputs other than 2 or 3, through the registry */
  int id = ad_op_find(ctx, "conv2d");
  ad_tensor *in4[4] = {x, w, b5, b5};
  ad_attrs at = {.conv = {.stride = {1, 1}, .dilation = {1, 1}, .groups = 2}};
  EXPECT_FAIL(ad_op_apply(ctx, id, 1, in4, &at), AD_ERR_ARG, "1 input", "takes 2 to 3 inputs");
  EXPECT_FAIL(ad_op_apply(ctx, id, 4, in4, &at), AD_ERR_ARG, "4 inputs", "got 4");
  /* in the op's own attributes zero is not a default */
  at.conv.stride[1] = 0;
  EXPECT_FAIL(ad_op_apply(ctx, id, 2, in4, &at), AD_ERR_ARG, "stride 0", "stride (1, 0)");
  /* a NULL input keeps the earlier message */
  EXPECT_FAIL(ad_conv2d(ctx, NULL, w, NULL, NULL), AD_ERR_NULL, "NULL x", "input 0 is NULL");
  ad_tape_reset(ctx);
  ad_tensor *ts[] = {x, w, w3, x3, b5, xf, w5, big, one};
  for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) ad_tensor_free(ts[k]);
}

Test(conv, transpose_weight_and_conv1d_refuse_bad_input) {
  ad_tensor *x = ones4(ctx, 1, 4, 3, 3), *w = ones4(ctx, 4, 3, 3, 3), *w2 = ones4(ctx, 2, 3, 3, 3);
  int64_t nb = 5;
  ad_tensor *b5 = ad_ones(ctx, AD_F64, 1, &nb);
  ad_conv_opts o = {.stride = {2, 2}, .output_padding = {1, 1}};
  ad_tensor *y = ad_conv_transpose2d(ctx, x, w, NULL, &o);
  cr_assert(y, "control: %s", ad_last_error(ctx));
  cr_assert(y->shape[1] == 3 && y->shape[2] == 8 && y->shape[3] == 8);
  EXPECT_FAIL(ad_conv_transpose2d(ctx, x, w2, NULL, &o), AD_ERR_SHAPE, "channels",
              "conv_transpose2d", "has 4 channels", "w [2,3,3,3]");
  o = (ad_conv_opts){.stride = {2, 2}, .output_padding = {2, 0}};
  EXPECT_FAIL(ad_conv_transpose2d(ctx, x, w, NULL, &o), AD_ERR_ARG, "output_padding",
              "output_padding (2, 0)", "smaller than the stride (2, 2) or the dilation (1, 1)");
  o = (ad_conv_opts){.same = true};
  EXPECT_FAIL(ad_conv_transpose2d(ctx, x, w, NULL, &o), AD_ERR_ARG, "same", "'same'");
  o = (ad_conv_opts){.groups = 3};
  EXPECT_FAIL(ad_conv_transpose2d(ctx, x, w, NULL, &o), AD_ERR_SHAPE, "groups", "groups 3",
              "input channels 4");
  EXPECT_FAIL(ad_conv_transpose2d(ctx, x, w, b5, NULL), AD_ERR_SHAPE, "bias", "bias [5]",
              "must be [3]");
  o = (ad_conv_opts){.padding = {3, 3, 0, 0}};
  EXPECT_FAIL(ad_conv_transpose2d(ctx, x, w, NULL, &o), AD_ERR_SHAPE, "no output",
              "gives an output of -1x5");
  ad_tensor *wide = ones4(ctx, 1, 4, 1, 1025);
  o = (ad_conv_opts){.stride = {1, INT64_C(1) << 40}};
  EXPECT_FAIL(ad_conv_transpose2d(ctx, wide, w, NULL, &o), AD_ERR_SHAPE, "too large",
              "conv_transpose2d", "too large");

  /* conv2d_weight: dy must be the convolution's output */
  ad_tensor *xi = ones4(ctx, 2, 4, 5, 5), *dy = ones4(ctx, 2, 6, 3, 3),
            *bad = ones4(ctx, 2, 6, 4, 3);
  cr_assert(ad_conv2d_weight(ctx, xi, dy, 3, 3, NULL), "control: %s", ad_last_error(ctx));
  EXPECT_FAIL(ad_conv2d_weight(ctx, xi, bad, 3, 3, NULL), AD_ERR_SHAPE, "dy shape", "conv2d_weight",
              "dy [2,6,4,3] is not the output of a 3x3 convolution of x "
              "[2,4,5,5], which is [2, O, 3, 3]");
  EXPECT_FAIL(ad_conv2d_weight(ctx, xi, dy, 0, 3, NULL), AD_ERR_ARG, "kernel", "kernel (0, 3)");
  o = (ad_conv_opts){.groups = 4};
  EXPECT_FAIL(ad_conv2d_weight(ctx, xi, dy, 3, 3, &o), AD_ERR_SHAPE, "groups", "groups 4",
              "output channels 6");

  /* conv1d names itself and its 3-D shapes */
  int64_t s3[3] = {2, 4, 7}, sw3[3] = {3, 4, 9};
  ad_tensor *x1 = ad_ones(ctx, AD_F64, 3, s3), *w1 = ad_ones(ctx, AD_F64, 3, sw3);
  EXPECT_FAIL(ad_conv1d(ctx, xi, w1, NULL, NULL), AD_ERR_SHAPE, "conv1d rank",
              "conv1d: x must be [N, C, L]", "[2,4,5,5]");
  EXPECT_FAIL(ad_conv1d(ctx, x1, w1, NULL, NULL), AD_ERR_SHAPE, "conv1d kernel",
              "conv1d of x [2,4,7], w [3,4,9]", "spans more than the padded input");
  ad_conv1d_opts o1 = {.stride = 2, .same = true};
  EXPECT_FAIL(ad_conv1d(ctx, x1, w1, NULL, &o1), AD_ERR_ARG, "conv1d same", "conv1d",
              "'same' padding needs stride 1");
  ad_tape_reset(ctx);
  ad_tensor *ts[] = {x, w, w2, b5, wide, xi, dy, bad, x1, w1};
  for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) ad_tensor_free(ts[k]);
}

/* Channels of 0 on both sides make every groups count divide them: the
 * work must be bounded by the output, not by groups (2^40 groups spun in
 * the loop over groups for ever), and groups above 2^40 are refused like
 * any other attribute. The sizes that a transposed convolution computes
 * from 2^40-sized attributes stay in range (no signed overflow: UBSan
 * builds would report it), and a channel count that overflows when
 * multiplied out in a message is printed as a bound. */
Test(conv, huge_groups_and_attributes_are_bounded) {
  ad_tensor *x0 = ones4(ctx, 1, 0, 4, 4), *w0 = ones4(ctx, 0, 0, 3, 3);
  ad_tensor_set_requires_grad(x0, true), ad_tensor_set_requires_grad(w0, true);
  ad_conv_opts big = {.groups = INT64_C(1) << 40};
  ad_tensor *y = ad_conv2d(ctx, x0, w0, NULL, &big);
  cr_assert(y, "conv2d: %s", ad_last_error(ctx));
  cr_assert(y->size == 0 && y->shape[1] == 0 && y->shape[2] == 2);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor *t = ad_conv_transpose2d(ctx, x0, w0, NULL, &big);
  cr_assert(t, "conv_transpose2d: %s", ad_last_error(ctx));
  cr_assert(t->size == 0 && t->shape[2] == 6);
  ad_tensor *dw = ad_conv2d_weight(ctx, x0, y, 3, 3, &big);
  cr_assert(dw, "conv2d_weight: %s", ad_last_error(ctx));
  cr_assert(dw->size == 0);

  ad_conv_opts over = {.groups = (INT64_C(1) << 40) + 1};
  EXPECT_FAIL(ad_conv2d(ctx, x0, w0, NULL, &over), AD_ERR_ARG, "groups > 2^40", "groups",
              "must be in 1..2^40");
  EXPECT_FAIL(ad_conv_transpose2d(ctx, x0, w0, NULL, &over), AD_ERR_ARG, "convt groups > 2^40",
              "must be in 1..2^40");

  ad_tensor *w5 = ones4(ctx, 0, 5, 3, 3);
  big.groups = INT64_C(1) << 40;
  EXPECT_FAIL(ad_conv2d(ctx, x0, w5, NULL, &big), AD_ERR_SHAPE, "channels x groups overflow",
              "takes 5 per group x 1099511627776 groups = 5497558138880");
  int64_t sw[4] = {0, INT64_C(1) << 30, 1, 1};
  ad_tensor *wh = ad_zeros(ctx, AD_F32, 4, sw), *x0f = ad_zeros(ctx, AD_F32, 4, x0->shape);
  EXPECT_FAIL(ad_conv2d(ctx, x0f, wh, NULL, &big), AD_ERR_SHAPE, "saturated product",
              "groups = at least 4611686018427387904");

  /* 2^22 + 1 columns, stride and dilation 2^40 - 1: t + span + output_padding
   * passed INT64_MAX */
  int64_t L = (INT64_C(1) << 22) + 1, m = (INT64_C(1) << 40) - 1, sx[4] = {1, 1, 1, L};
  ad_tensor *xl = ad_zeros(ctx, AD_F32, 4, sx), *wl = ad_zeros(ctx, AD_F32, 4, sx);
  ad_conv_opts o = {.stride = {1, m}, .dilation = {1, m}, .output_padding = {0, m - 1}};
  EXPECT_FAIL(ad_conv_transpose2d(ctx, xl, wl, NULL, &o), AD_ERR_SHAPE, "convt overflow",
              "conv_transpose2d", "too large");
  ad_tape_reset(ctx);
  ad_tensor *ts[] = {x0, w0, w5, wh, x0f, xl, wl};
  for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) ad_tensor_free(ts[k]);
}

/* An empty image is refused, as PyTorch does (an empty batch is not, see
 * empty_batch): with padding the output would not be empty, and its
 * backward would have no input size to come back to. */
Test(conv, empty_image_is_refused) {
  ad_tensor *x = ones4(ctx, 1, 2, 0, 5), *xw = ones4(ctx, 1, 2, 5, 0), *w = ones4(ctx, 3, 2, 3, 3),
            *wt = ones4(ctx, 2, 3, 3, 3);
  ad_conv_opts o = {.padding = {2, 2, 2, 2}};
  EXPECT_FAIL(ad_conv2d(ctx, x, w, NULL, &o), AD_ERR_SHAPE, "conv2d, no rows", "conv2d",
              "the image of x [1,2,0,5] is empty");
  EXPECT_FAIL(ad_conv2d(ctx, xw, w, NULL, &o), AD_ERR_SHAPE, "conv2d, no columns",
              "x [1,2,5,0] is empty");
  EXPECT_FAIL(ad_conv_transpose2d(ctx, x, wt, NULL, NULL), AD_ERR_SHAPE, "conv_transpose2d",
              "conv_transpose2d", "x [1,2,0,5] is empty");
  int64_t s3[3] = {1, 2, 0}, sw3[3] = {3, 2, 3};
  ad_tensor *x1 = ad_ones(ctx, AD_F64, 3, s3), *w1 = ad_ones(ctx, AD_F64, 3, sw3);
  ad_conv1d_opts o1 = {.padding = {2, 2}};
  EXPECT_FAIL(ad_conv1d(ctx, x1, w1, NULL, &o1), AD_ERR_SHAPE, "conv1d", "conv1d", "is empty");
  ad_tape_reset(ctx);
  ad_tensor *ts[] = {x, xw, w, wt, x1, w1};
  for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) ad_tensor_free(ts[k]);
}

/* An op's min_arity must lie in 1..arity, for a fixed arity. */
static void noop_fwd(const ad_call *c) { (void)c; }
static ad_status noop_shape(const ad_call *c) {
  c->out->dtype = AD_F64;
  c->out->ndim = 0;
  return AD_OK;
}

Test(conv, op_register_checks_min_arity) {
  ad_op_def def = {
      .name = "opt_inputs", .arity = 3, .min_arity = 4, .shape = noop_shape, .forward = noop_fwd};
  cr_assert_lt(ad_op_register(ctx, &def), 0);
  cr_assert(strstr(ad_last_error(ctx), "min_arity 4 out of range for arity 3"), "%s",
            ad_last_error(ctx));
  def.arity = -1;
  def.min_arity = 1;
  cr_assert_lt(ad_op_register(ctx, &def), 0);
  def.arity = 3;
  def.min_arity = 2;
  int id = ad_op_register(ctx, &def);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  ad_tensor *x = ad_ones(ctx, AD_F64, 0, NULL), *in[3] = {x, x, x};
  cr_assert(ad_op_apply(ctx, id, 2, in, NULL), "%s", ad_last_error(ctx));
  cr_assert(ad_op_apply(ctx, id, 3, in, NULL), "%s", ad_last_error(ctx));
  cr_assert_null(ad_op_apply(ctx, id, 1, in, NULL));
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* out[n, o, i, j] = b[o] + sum over taps of w[o, 0, a, b] x[n, o / m, ...]:
 * a depthwise conv2d (one input channel per group, m outputs each) by the
 * definition, in double. */
static double dw_ref(const ad_tensor *x, const ad_tensor *w, const ad_tensor *b,
                     const ad_conv_opts *o, int64_t n, int64_t oc, int64_t i, int64_t j) {
  int64_t C = x->shape[1], H = x->shape[2], W = x->shape[3], m = w->shape[0] / C;
  double s = b ? ad_tensor_get(b, oc) : 0;
  for (int64_t a = 0; a < w->shape[2]; a++)
    for (int64_t q = 0; q < w->shape[3]; q++) {
      int64_t r = i * o->stride[0] - o->padding[0] + a * o->dilation[0];
      int64_t c = j * o->stride[1] - o->padding[2] + q * o->dilation[1];
      if (r >= 0 && r < H && c >= 0 && c < W)
        s += ad_tensor_get(w, (oc * w->shape[2] + a) * w->shape[3] + q) *
             ad_tensor_get(x, ((n * C + oc / m) * H + r) * W + c);
    }
  return s;
}

/* Depthwise convolutions (groups = input channels) take direct loops rather
 * than a GEMM per image and channel: conv2d against its definition, and
 * its gradients (conv_transpose2d and conv2d_weight) against the adjoint
 * identities <conv2d(x, w), g> = <x, conv_transpose2d(g, w)> =
 * <w, conv2d_weight(x, g)>, with multipliers 1 and 2, strides, dilations,
 * asymmetric padding and biases. */
Test(conv, depthwise_matches_the_definition_and_its_adjoints) {
  static const struct {
    int64_t c, m, k, h, w;
    ad_conv_opts o;
  } cases[] = {{4,
                1,
                3,
                9,
                11,
                {.stride = {1, 1}, .padding = {1, 1, 1, 1}, .dilation = {1, 1}, .groups = 4}},
               {3,
                2,
                3,
                9,
                11,
                {.stride = {2, 1}, .padding = {2, 0, 1, 3}, .dilation = {2, 1}, .groups = 3}},
               {5,
                1,
                5,
                9,
                11,
                {.stride = {2, 2}, .padding = {2, 2, 2, 2}, .dilation = {1, 1}, .groups = 5}},
               /* planes too large for conv2d's copy on the stack: a copy of the rows each output
                * row reads, and rows too long for that */
               {2,
                1,
                3,
                40,
                200,
                {.stride = {1, 1}, .padding = {1, 1, 1, 1}, .dilation = {1, 1}, .groups = 2}},
               {2,
                1,
                3,
                3,
                2100,
                {.stride = {1, 1}, .padding = {1, 1, 1, 1}, .dilation = {1, 1}, .groups = 2}}};
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    const ad_conv_opts *o = &cases[k].o;
    int64_t C = cases[k].c, O = C * cases[k].m, K = cases[k].k, nb = O;
    ad_rng rng;
    ad_rng_seed(&rng, 11 + (uint64_t)k);
    ad_tensor *x = rand4(ctx, &rng, AD_F64, 2, C, cases[k].h, cases[k].w),
              *w = rand4(ctx, &rng, AD_F64, O, 1, K, K);
    ad_tensor *b = ad_rand(ctx, &rng, AD_F64, 1, &nb, -1, 1);
    ad_tensor *y = ad_conv2d(ctx, x, w, b, o);
    cr_assert(y, "case %zu: %s", k, ad_last_error(ctx));
    for (int64_t e = 0; e < y->size; e++) {
      int64_t j = e % y->shape[3], i = e / y->shape[3] % y->shape[2];
      int64_t oc = e / (y->shape[2] * y->shape[3]) % O, n = e / (O * y->shape[2] * y->shape[3]);
      double want = dw_ref(x, w, b, o, n, oc, i, j), got = ad_tensor_get(y, e);
      QUICK_ASSERT(test_close(got, want, 1e-13), "case %zu y[%lld]: %.17g vs %.17g", k,
                   (long long)e, got, want);
    }
    ad_tensor *g = rand4(ctx, &rng, AD_F64, y->shape[0], O, y->shape[2], y->shape[3]);
    ad_conv_opts t = *o;
    t.output_padding[0] =
        (9 + o->padding[0] + o->padding[1] - (K - 1) * o->dilation[0] - 1) % o->stride[0];
    t.output_padding[1] =
        (11 + o->padding[2] + o->padding[3] - (K - 1) * o->dilation[1] - 1) % o->stride[1];
    ad_tensor *dx = ad_conv_transpose2d(ctx, g, w, NULL, &t);
    ad_tensor *dw = ad_conv2d_weight(ctx, x, g, K, K, o);
    ad_tensor *y0 = ad_conv2d(ctx, x, w, NULL, o);
    cr_assert(dx && dw && y0, "case %zu: %s", k, ad_last_error(ctx));
    cr_assert(same_dims(dx, x), "case %zu: conv_transpose2d gives x's shape", k);
    double yg = 0, xdx = 0, wdw = 0;
    for (int64_t e = 0; e < y0->size; e++) yg += ad_tensor_get(y0, e) * ad_tensor_get(g, e);
    for (int64_t e = 0; e < x->size; e++) xdx += ad_tensor_get(x, e) * ad_tensor_get(dx, e);
    for (int64_t e = 0; e < w->size; e++) wdw += ad_tensor_get(w, e) * ad_tensor_get(dw, e);
    cr_assert(test_close(xdx, yg, 1e-12 * fmax(1, fabs(yg))),
              "case %zu: <x, dx> %.17g, <y, g> %.17g", k, xdx, yg);
    cr_assert(test_close(wdw, yg, 1e-12 * fmax(1, fabs(yg))),
              "case %zu: <w, dw> %.17g, <y, g> %.17g", k, wdw, yg);
  }
}

/* A depthwise tap outside the image meets im2col's zero on the GEMM path:
 * an inf weight there gives NaN (inf x 0), inside inf; an inf in dy gives
 * the weight gradient NaN for a tap outside the image, inf for the others.
 * The direct loops skip those taps, and hand such calls to the GEMM path. */
Test(conv, depthwise_infinities_meet_the_padding_zeros) {
  for (int dt = 0; dt < 2; dt++) {
    ad_dtype t = dt ? AD_F32 : AD_F64;
    int64_t sx[4] = {1, 2, 4, 4}, sw[4] = {2, 1, 3, 3};
    ad_tensor *x = ad_ones(ctx, t, 4, sx), *w = ad_ones(ctx, t, 4, sw);
    cr_assert(x && w);
    ad_tensor_set(w, 0, INFINITY); /* channel 0's tap (0, 0) */
    ad_conv_opts o = {.padding = {1, 1, 1, 1}, .groups = 2};
    ad_tensor *y = ad_conv2d(ctx, x, w, NULL, &o);
    cr_assert(y, "%s", ad_last_error(ctx));
    cr_assert(isnan(ad_tensor_get(y, 0)), "y[0, 0, 0, 0] reads the padding: %g",
              ad_tensor_get(y, 0));
    cr_assert(isinf(ad_tensor_get(y, 5)), "y[0, 0, 1, 1]: %g", ad_tensor_get(y, 5));
    cr_assert_eq(ad_tensor_get(y, 16 + 5), 9, "channel 1 stays finite");
    ad_tensor *g = ad_ones(ctx, t, 4, sx);
    ad_tensor_set(g, 0, INFINITY); /* dy[0, 0, 0, 0] */
    ad_tensor *dw = ad_conv2d_weight(ctx, x, g, 3, 3, &o);
    cr_assert(dw, "%s", ad_last_error(ctx));
    cr_assert(isnan(ad_tensor_get(dw, 0)), "dw tap (0, 0): %g", ad_tensor_get(dw, 0));
    cr_assert(isinf(ad_tensor_get(dw, 4)), "dw tap (1, 1): %g", ad_tensor_get(dw, 4));
    cr_assert_eq(ad_tensor_get(dw, 9 + 4), 16, "channel 1's center tap");
  }
}
