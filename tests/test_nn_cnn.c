/* test_nn_cnn.c: the convolution and pooling layers (nn_conv2d_new,
 * nn_conv_transpose2d_new, nn_max_pool2d_new, nn_avg_pool2d_new,
 * nn_global_avg_pool2d_new): PyTorch's names, layouts and initialisation, a
 * small CNN with the layers of examples/mnist_cnn against PyTorch (eval
 * logits, three SGD steps, the trained parameters), PyTorch's state dict
 * loaded from safetensors, and bad input. */
#include "nn.h"
#include "nn_fixtures.h"
#include "test_alloc.h"
#include "test_tensor_of.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_CTX_SUITE(cnn);

#define CNN_FIXTURE "tests/fixtures/torch_cnn.safetensors"

static void expect_close(const ad_tensor *t, const double *want, int64_t n, double tol,
                         const char *what) {
  cr_assert_not_null(t, "%s: %s", what, ad_last_error(ctx));
  cr_assert_eq(t->size, n, "%s: %lld values, want %lld", what, (long long)t->size, (long long)n);
  for (int64_t i = 0; i < n; i++) {
    double g = ad_tensor_get(t, i);
    QUICK_ASSERT(test_close(g, want[i], tol * (1 + fabs(want[i]))), "%s[%lld]: %.17g, want %.17g",
                 what, (long long)i, g, want[i]);
  }
}

/* The fixture's network: conv(1->4, 3x3) relu conv(4->4, 3x3) relu
 * max-pool 2 dropout flatten dense(36->8) relu dropout dense(8->3), the
 * parameters set to cnn_init (or left as initialised when set is false). */
static nn_model *small_cnn(ad_dtype dt, double p, bool set) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_conv2d_opts co = {.dtype = dt};
  nn_dense_opts d = {.dtype = dt};
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_conv2d_new(ctx, 1, 4, 3, 3, &rng, &co));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_conv2d_new(ctx, 4, 4, 3, 3, &rng, &co));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_max_pool2d_new(ctx, 2, 2, NULL));
  nn_model_add(m, nn_dropout_new(ctx, p, 7));
  nn_model_add(m, nn_flatten_new(ctx));
  nn_model_add(m, nn_dense_new(ctx, 36, 8, &rng, &d));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_dropout_new(ctx, p, 8));
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 8, 3, &rng, &d)), AD_OK, "%s", ad_last_error(ctx));
  nn_params *ps = nn_model_params(m);
  cr_assert_eq(nn_params_count(ps), 8);
  static const char *const names[8] = {"0.weight", "0.bias", "2.weight",  "2.bias",
                                       "7.weight", "7.bias", "10.weight", "10.bias"};
  int64_t off = 0;
  for (int i = 0; i < 8; i++) {
    ad_tensor *t = nn_model_param(m, names[i]);
    cr_assert_not_null(t, "no parameter %s", names[i]);
    for (int64_t k = 0; set && k < t->size; k++) ad_tensor_set(t, k, cnn_init[off + k]);
    off += t->size;
  }
  cr_assert_eq(off, (int64_t)(sizeof cnn_init / sizeof cnn_init[0]));
  return m;
}

static void matches_pytorch(ad_dtype dt, const double *eval0, const double *train,
                            const double *params, double tol) {
  nn_model *m = small_cnn(dt, 0.0, true);
  int64_t sx[4] = {3, 1, 10, 10}, sb[4] = {4, 1, 10, 10}, nb = 4;
  ad_tensor *xe = tensor_of(dt, 4, sx, cnn_xe);
  nn_model_set_training(m, false);
  expect_close(nn_model_forward(m, xe), eval0, 9, tol, "eval logits before training");
  ad_tape_reset(ctx);
  nn_model_set_training(m, true);
  nn_optimizer *o = nn_sgd_new(nn_model_params(m), 0.05, 0.9, false, 0);
  for (int t = 0; t < 3; t++) {
    ad_tensor *xb = tensor_of(dt, 4, sb, cnn_x + t * 400);
    ad_tensor *yb = ad_zeros(ctx, AD_I32, 1, &nb);
    for (int i = 0; i < 4; i++) ad_tensor_set(yb, i, cnn_y[t * 4 + i]);
    expect_close(nn_model_forward(m, xb), train + t * 13, 12, tol, "training logits");
    double loss;
    cr_assert_eq(nn_train_step(m, o, nn_cross_entropy_loss, xb, yb, 0, &loss), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(fabs(loss - train[t * 13 + 12]) <= tol, "step %d loss %.17g, want %.17g", t, loss,
              train[t * 13 + 12]);
    ad_tensor_free(xb), ad_tensor_free(yb);
  }
  int64_t off = 0;
  for (int i = 0; i < 8; i++) {
    ad_tensor *t = nn_params_tensor(nn_model_params(m), i);
    expect_close(t, params + off, t->size, tol, nn_params_name(nn_model_params(m), i));
    off += t->size;
  }
  nn_optimizer_free(o);
  nn_model_free(m);
  ad_tensor_free(xe);
}

Test(cnn, small_network_matches_pytorch_f64) {
  matches_pytorch(AD_F64, cnn_f64_eval0, cnn_f64_train, cnn_f64_params, 1e-10);
}

Test(cnn, small_network_matches_pytorch_f32) {
  matches_pytorch(AD_F32, cnn_f32_eval0, cnn_f32_train, cnn_f32_params, 1e-5);
}

Test(cnn, pytorch_state_dict_loads_and_gives_its_logits) {
  nn_model *m = small_cnn(AD_F32, 0.2, false);
  cr_assert_eq(nn_model_load(m, NULL, CNN_FIXTURE), AD_OK, "%s", ad_last_error(ctx));
  nn_model_set_training(m, false);
  int64_t sx[4] = {3, 1, 10, 10};
  ad_tensor *xe = tensor_of(AD_F32, 4, sx, cnn_xe);
  expect_close(nn_model_forward(m, xe), cnn_f32_trained_eval, 9, 1e-5, "logits");
  ad_tensor_free(xe);
  nn_model_free(m);
}

Test(cnn, layers_have_pytorch_names_layouts_and_init) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  nn_conv2d_opts g2 = {.groups = 2, .dtype = AD_F64};
  nn_layer *c = nn_conv2d_new(ctx, 4, 6, 3, 5, &rng, &g2);
  cr_assert_not_null(c, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(c), "conv2d");
  ad_tensor *w = nn_params_find(nn_layer_params(c), "weight"),
            *b = nn_params_find(nn_layer_params(c), "bias");
  cr_assert(w && b);
  int64_t ws[4] = {6, 2, 3, 5};
  for (int k = 0; k < 4; k++) cr_assert_eq(w->shape[k], ws[k]);
  cr_assert_eq(b->size, 6);
  double bound = 1 / sqrt(2.0 * 3 * 5), wmax = 0, bmax = 0;
  for (int64_t i = 0; i < w->size; i++) wmax = fmax(wmax, fabs(ad_tensor_get(w, i)));
  for (int64_t i = 0; i < b->size; i++) bmax = fmax(bmax, fabs(ad_tensor_get(b, i)));
  cr_assert(wmax <= bound && wmax > 0.8 * bound, "weights within 1/sqrt(fan_in): %g", wmax);
  cr_assert(bmax <= bound && bmax > 0, "biases within 1/sqrt(fan_in): %g", bmax);
  nn_layer_free(c);
  /* a transposed convolution: [in, out/groups, kh, kw], fan_in from dim 1 */
  nn_conv2d_opts t = {.stride = {2, 2}, .output_padding = {1, 1}, .no_bias = true};
  nn_layer *ct = nn_conv_transpose2d_new(ctx, 3, 5, 3, 3, &rng, &t);
  cr_assert_not_null(ct, "%s", ad_last_error(ctx));
  w = nn_params_find(nn_layer_params(ct), "weight");
  cr_assert(w && w->shape[0] == 3 && w->shape[1] == 5 && w->dtype == AD_F32);
  cr_assert_eq(nn_params_count(nn_layer_params(ct)), 1, "no bias");
  int64_t sx[4] = {2, 3, 4, 4};
  ad_tensor *x = ad_ones(ctx, AD_F32, 4, sx);
  ad_tensor *y = nn_layer_forward(ct, x, false);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  int64_t ys[4] = {2, 5, 10, 10}; /* (4 - 1) * 2 + 3 + 1 */
  for (int k = 0; k < 4; k++) cr_assert_eq(y->shape[k], ys[k]);
  nn_layer_free(ct);
  ad_tensor_free(x);
}

Test(cnn, pooling_layers_run_their_ops) {
  int64_t sx[4] = {1, 2, 4, 4};
  double v[32];
  for (int i = 0; i < 32; i++) v[i] = (double)((i * 7) % 11) - 3;
  ad_tensor *x = tensor_of(AD_F64, 4, sx, v);
  nn_layer *mp = nn_max_pool2d_new(ctx, 2, 2, NULL), *ap = nn_avg_pool2d_new(ctx, 2, 2, NULL),
           *gp = nn_global_avg_pool2d_new(ctx);
  cr_assert(mp && ap && gp);
  ad_tensor *a = nn_layer_forward(mp, x, true), *b = ad_max_pool2d(ctx, x, 2, 2, NULL);
  ad_tensor *c = nn_layer_forward(ap, x, true), *d = ad_avg_pool2d(ctx, x, 2, 2, NULL);
  ad_tensor *e = nn_layer_forward(gp, x, true), *f = ad_global_avg_pool2d(ctx, x);
  cr_assert(a && b && c && d && e && f, "%s", ad_last_error(ctx));
  cr_assert_eq(memcmp(a->data, b->data, 8 * sizeof(double)), 0);
  cr_assert_eq(memcmp(c->data, d->data, 8 * sizeof(double)), 0);
  cr_assert_eq(memcmp(e->data, f->data, 2 * sizeof(double)), 0);
  cr_assert_str_eq(nn_layer_kind(mp), "max_pool2d");
  cr_assert_eq(nn_params_count(nn_layer_params(mp)), 0);
  nn_layer_free(mp), nn_layer_free(ap), nn_layer_free(gp);
  ad_tensor_free(x);
}

/* MaxPool2d with overlapping windows reads x at the argmax (one op,
 * pool_gather, whose gradient is a pool_scatter straight into x's; without
 * a gradient to carry, ad_max_pool2d itself): the values and gradients
 * are ad_max_pool2d's bits, in both dtypes, on data
 * full of ties, with NaNs, -inf, padding, ceil_mode and an unbatched
 * input; the second derivative through the layer matches central
 * differences (pool_scatter's gradient is pool_gather, and back). */
static ad_tensor *tricky(ad_dtype dt, int nd, const int64_t *s) {
  ad_tensor *x = ad_zeros(ctx, dt, nd, s);
  cr_assert_not_null(x);
  for (int64_t i = 0; i < x->size; i++)
    ad_tensor_set(x, i, i % 13 == 5 ? NAN : i % 17 == 3 ? -INFINITY : (double)((i * 7) % 5));
  return x;
}

static ad_tensor *pool_sq(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  nn_layer *l = ud;
  ad_tensor *y = nn_layer_forward(l, ad_mul(c, in[0], in[1]), true);
  return ad_mul(c, y, nn_layer_forward(l, in[0], true));
}

Test(cnn, overlapping_max_pool_gives_the_ops_bits) {
  static const int64_t s4[4] = {2, 3, 9, 8}, s3[3] = {3, 7, 9};
  ad_pool2d_opts os[3] = {{.stride = {2, 2}, .padding = {1, 1}},
                          {.stride = {1, 2}, .ceil_mode = true},
                          {.stride = {2, 1}, .padding = {1, 0}, .ceil_mode = true}};
  for (int dti = 0; dti < 2; dti++)
    for (int oi = 0; oi < 3; oi++)
      for (int nd = 3; nd <= 4; nd++) {
        ad_dtype dt = dti ? AD_F32 : AD_F64;
        nn_layer *l = nn_max_pool2d_new(ctx, 3, 2 + oi % 2, &os[oi]);
        ad_tensor *x = tricky(dt, nd, nd == 4 ? s4 : s3), *x2 = tricky(dt, nd, nd == 4 ? s4 : s3);
        cr_assert(l && ad_tensor_set_requires_grad(x, true) == AD_OK &&
                  ad_tensor_set_requires_grad(x2, true) == AD_OK);
        size_t before = ad_tape_size(ctx);
        ad_tensor *a = nn_layer_forward(l, x, true);
        cr_assert(a, "%s", ad_last_error(ctx));
        cr_assert(ad_tape_size(ctx) - before == 1 &&
                      ad_tensor_op(a) == ad_op_find(ctx, "pool_gather"),
                  "%zu ops recorded, the last %d", ad_tape_size(ctx) - before, ad_tensor_op(a));
        ad_tensor *b = ad_max_pool2d(ctx, x2, 3, 2 + oi % 2, &os[oi]);
        cr_assert(b, "%s", ad_last_error(ctx));
        cr_assert_eq(a->size, b->size);
        size_t es = ad_dtype_size(dt);
        cr_assert_eq(memcmp(a->data, b->data, (size_t)a->size * es), 0, "values, case %d %d-D", oi,
                     nd);
        /* without a gradient to carry (grad mode off), max_pool2d's one pass: the same values */
        ad_set_grad_enabled(ctx, false);
        ad_tensor *e = nn_layer_forward(l, x, false);
        ad_set_grad_enabled(ctx, true);
        cr_assert(e && e->size == a->size, "%s", ad_last_error(ctx));
        cr_assert_eq(memcmp(a->data, e->data, (size_t)a->size * es), 0, "no-grad values, case %d",
                     oi);
        ad_tensor *dy = ad_zeros(ctx, dt, a->ndim, a->shape);
        for (int64_t i = 0; i < dy->size; i++) ad_tensor_set(dy, i, 0.25 * (double)(i % 9) - 1);
        cr_assert_eq(ad_backward(ctx, a, dy), AD_OK, "%s", ad_last_error(ctx));
        cr_assert_eq(ad_backward(ctx, b, dy), AD_OK, "%s", ad_last_error(ctx));
        cr_assert_eq(memcmp(x->grad->data, x2->grad->data, (size_t)x->size * es), 0,
                     "gradients, case %d %d-D", oi, nd);
        ad_tape_reset(ctx);
        ad_tensor_free(x), ad_tensor_free(x2), ad_tensor_free(dy);
        nn_layer_free(l);
      }
  /* second order, on distinct values (no tie moves within the step) */
  int64_t s[4] = {1, 2, 7, 6};
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  ad_tensor *in[2] = {ad_zeros(ctx, AD_F64, 4, s), ad_rand(ctx, &rng, AD_F64, 4, s, 0.5, 1.5)};
  for (int64_t i = 0; i < in[0]->size; i++)
    ad_tensor_set(in[0], i, 0.25 * (double)((i * 37) % in[0]->size) - 5);
  ad_tensor_set_requires_grad(in[0], true);
  ad_tensor_set_requires_grad(in[1], true);
  nn_layer *l = nn_max_pool2d_new(ctx, 3, 3, &os[0]);
  ad_check_report r;
  cr_assert_eq(ad_gradgradcheck(ctx, pool_sq, l, 2, in, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed && r.checked > 0, "input %d [%lld] analytic %.10g numeric %.10g", r.input,
            (long long)r.index, r.analytic, r.numeric);
  nn_layer_free(l);
  ad_tensor_free(in[0]), ad_tensor_free(in[1]);
}

/* An unbatched [C, H, W] input, as PyTorch's Conv2d and ConvTranspose2d
 * take: the batch of one's values and gradients, without the batch axis. */
Test(cnn, unbatched_input_is_a_batch_of_one) {
  ad_rng rng;
  ad_rng_seed(&rng, 4);
  for (int tr = 0; tr < 2; tr++) {
    nn_conv2d_opts o = {.stride = {2, 1}, .padding = {1, 0}, .dtype = AD_F64};
    nn_layer *l = tr ? nn_conv_transpose2d_new(ctx, 3, 2, 3, 2, &rng, &o)
                     : nn_conv2d_new(ctx, 3, 2, 3, 2, &rng, &o);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    int64_t s3[3] = {3, 5, 4}, s4[4] = {1, 3, 5, 4};
    ad_tensor *x3 = ad_randn(ctx, &rng, AD_F64, 3, s3, 0, 1), *x4 = ad_tensor_clone(ctx, x3);
    ad_tensor_set_requires_grad(x3, true);
    ad_tensor *x4v = ad_reshape(ctx, x4, 4, s4);
    ad_tensor *y3 = nn_layer_forward(l, x3, true), *y4 = nn_layer_forward(l, x4v, true);
    cr_assert(y3 && y4, "%s", ad_last_error(ctx));
    cr_assert_eq(y3->ndim, 3);
    cr_assert(y3->shape[0] == y4->shape[1] && y3->shape[1] == y4->shape[2] &&
              y3->shape[2] == y4->shape[3]);
    for (int64_t i = 0; i < y3->size; i++)
      cr_assert_eq(ad_tensor_get(y3, i), ad_tensor_get(y4, i), "%s element %lld", nn_layer_kind(l),
                   (long long)i);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y3, y3)), NULL), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert_not_null(x3->grad);
    cr_assert_not_null(nn_params_tensor(nn_layer_params(l), 0)->grad);
    ad_tape_reset(ctx);
    ad_tensor_free(x3), ad_tensor_free(x4);
    nn_layer_free(l);
  }
}

Test(cnn, bad_input_names_the_layer) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  cr_assert_null(nn_conv2d_new(ctx, 3, 4, 3, 3, &rng, &(nn_conv2d_opts){.groups = 2}));
  expect_status_msg(ctx, AD_ERR_ARG, "conv2d: channels 3 -> 4, kernel 3x3 and groups 2");
  cr_assert_null(nn_conv2d_new(ctx, 3, 4, 0, 3, &rng, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "kernel 0x3");
  cr_assert_null(nn_conv2d_new(ctx, 3, 4, 3, 3, &rng, &(nn_conv2d_opts){.dtype = AD_I32}));
  expect_status_msg(ctx, AD_ERR_DTYPE, "conv2d: parameters must be float, got i32");
  cr_assert_null(nn_conv2d_new(ctx, 3, 4, 3, 3, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "rng");
  /* a kernel too large: the error, without overflow first (UBSan) */
  int64_t big = INT64_C(1) << 32;
  cr_assert_null(nn_conv2d_new(ctx, 1, 1, big, big, &rng, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "is too large");
  cr_assert_null(nn_conv_transpose2d_new(ctx, 1, 1, big, big, &rng, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "is too large");
  cr_assert_null(nn_max_pool2d_new(ctx, 0, 2, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "max_pool2d: kernel 0x2");
  /* options the op would refuse at the first forward, or PyTorch's
   * constructors refuse, are refused when the layer is made */
  static const struct {
    bool transpose;
    nn_conv2d_opts o;
    const char *want;
  } opts[] = {
      {false,
       {.stride = {-1, 1}},
       "conv2d: stride and dilation must be >= 1 (0 means 1) (stride -1x1"},
      {false, {.dilation = {1, -2}}, "stride and dilation must be >= 1"},
      {false, {.padding = {-1, 0}}, "conv2d: padding and output_padding must be >= 0"},
      {false, {.output_padding = {1, 1}}, "conv2d: output_padding is for conv_transpose2d only"},
      {false, {.same = true, .stride = {2, 2}}, "conv2d: padding 'same' needs stride 1"},
      {true, {.same = true}, "conv_transpose2d: padding 'same' is for conv2d only"},
      {true,
       {.stride = {2, 2}, .output_padding = {2, 0}},
       "conv_transpose2d: output_padding must be smaller than the stride or the dilation"},
  };
  for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
    nn_layer *l = opts[k].transpose ? nn_conv_transpose2d_new(ctx, 2, 2, 3, 3, &rng, &opts[k].o)
                                    : nn_conv2d_new(ctx, 2, 2, 3, 3, &rng, &opts[k].o);
    cr_assert_null(l, "case %zu", k);
    expect_status_msg(ctx, AD_ERR_ARG, opts[k].want);
  }
  nn_layer *ok = nn_conv_transpose2d_new(
      ctx, 2, 2, 3, 3, &rng, &(nn_conv2d_opts){.stride = {2, 1}, .output_padding = {1, 0}});
  cr_assert_not_null(ok, "%s", ad_last_error(ctx));
  nn_layer_free(ok);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_conv2d_new(ctx, 3, 4, 3, 3, &rng, NULL));
  int64_t s1[4] = {2, 1, 8, 8}, s2[2] = {2, 3}, s3[4] = {2, 3, 2, 2};
  ad_tensor *x1 = ad_ones(ctx, AD_F32, 4, s1), *x2 = ad_ones(ctx, AD_F32, 2, s2),
            *x3 = ad_ones(ctx, AD_F32, 4, s3);
  cr_assert_null(nn_model_forward(m, x1));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv2d '0': input [2,1,8,8] must be [N, 3, H, W]");
  cr_assert_null(nn_model_forward(m, x2));
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv2d '0': input [2,3] must be [N, 3, H, W]");
  cr_assert_null(nn_model_forward(m, x3)); /* a 3x3 kernel on 2x2 */
  expect_status_msg(ctx, AD_ERR_SHAPE, "conv2d");
  nn_model_free(m);
  /* an op's error passed through is named with the layer, as the layers'
   * own: a pool and an activation given an input they refuse */
  m = nn_sequential_new(ctx);
  nn_model_add(m, nn_max_pool2d_new(ctx, 2, 2, NULL));
  cr_assert_null(nn_model_forward(m, x2));
  expect_status_msg(ctx, AD_ERR_SHAPE, "max_pool2d '0': max_pool2d: input [2,3] must be 4-D");
  nn_model_free(m);
  ad_tensor_free(x1), ad_tensor_free(x2), ad_tensor_free(x3);
}
