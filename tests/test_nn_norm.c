/* test_nn_norm.c: buffers (named non-trainable tensors) and the BatchNorm1d /
 * BatchNorm2d layers. Training, running statistics and evaluation against
 * PyTorch (tests/nn_fixtures.h, tools/gen_nn_fixtures.py), a PyTorch state
 * dict with an int64 num_batches_tracked loaded and saved back
 * (tests/fixtures/torch_bn.safetensors), I64 storage in checkpoints, and
 * the error messages. */
#include "nn.h"
#include "nn_fixtures.h"
#include "test_same_tensors.h"
#include "test_tmpdir.h"
#include "test_tensor_of.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define BN_FIXTURE "tests/fixtures/torch_bn.safetensors"

TEST_TMPDIR_SUITE(buffers, "nn-norm");
TestSuite(batchnorm, .init = test_tmpdir_setup, .fini = test_tmpdir_teardown);
TestSuite(bn_ckpt, .init = test_tmpdir_setup, .fini = test_tmpdir_teardown);

/* BN_N rows per batch, BN_STEPS steps (tools/gen_nn_fixtures.py). */
enum { BN_N = 4, BN_STEPS = 3, BN_ROWS = BN_N * BN_STEPS, BN_EVAL_ROWS = 5 };

static ad_tensor *labels_of(ad_ctx *c, int64_t n, const int32_t *v) {
  ad_tensor *t = ad_from_data(c, AD_I32, 1, &n, v);
  cr_assert_not_null(t);
  return t;
}

/* |t[i] - want[i]| <= tol for every element. */
static void expect_close(const ad_tensor *t, const double *want, int64_t n, double tol,
                         const char *what) {
  cr_assert_not_null(t, "%s is NULL", what);
  cr_assert_eq(t->size, n, "%s has %lld elements, expected %lld", what, (long long)t->size,
               (long long)n);
  for (int64_t i = 0; i < n; i++) {
    double g = ad_tensor_get(t, i);
    QUICK_ASSERT(fabs(g - want[i]) <= tol, "%s[%lld] = %.17g, PyTorch %.17g", what, (long long)i, g,
                 want[i]);
  }
}

/* PyTorch's model of the fixtures:
 *   0 BatchNorm2d(2)  1 Flatten  2 Linear(18, 5)  3 BatchNorm1d(5)
 *   4 ReLU            5 Linear(5, 3)
 * with the parameters of bn_init. */
static nn_model *bn_model(ad_ctx *c, ad_dtype dt) {
  nn_model *m = nn_sequential_new(c);
  nn_batch_norm_opts bo = {.dtype = dt};
  nn_dense_opts dop = {.dtype = dt};
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  cr_assert_eq(nn_model_add(m, nn_batch_norm2d_new(c, 2, &bo)), AD_OK, "%s", ad_last_error(c));
  cr_assert_eq(nn_model_add(m, nn_flatten_new(c)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_dense_new(c, 18, 5, &rng, &dop)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_batch_norm1d_new(c, 5, &bo)), AD_OK, "%s", ad_last_error(c));
  cr_assert_eq(nn_model_add(m, nn_activation_new(c, NN_ACT_RELU)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_dense_new(c, 5, 3, &rng, &dop)), AD_OK);
  nn_params *p = nn_model_params(m);
  int64_t k = 0;
  for (int i = 0; i < nn_params_count(p); i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    for (int64_t j = 0; j < t->size; j++) ad_tensor_set(t, j, bn_init[k++]);
  }
  cr_assert_eq(k, (int64_t)(sizeof bn_init / sizeof bn_init[0]));
  return m;
}

static const char *const bn_buffer_names[] = {"0.running_mean",        "0.running_var",
                                              "3.running_mean",        "3.running_var",
                                              "0.num_batches_tracked", "3.num_batches_tracked"};

/* The buffers in the order of bn_*_buffers. */
static void expect_buffers(const nn_model *m, const double *want, double tol) {
  const double *w = want;
  for (int i = 0; i < 6; i++) {
    ad_tensor *t = nn_params_find(nn_model_buffers(m), bn_buffer_names[i]);
    cr_assert_not_null(t, "no buffer %s", bn_buffer_names[i]);
    expect_close(t, w, t->size, i < 4 ? tol : 0, bn_buffer_names[i]);
    w += t->size;
  }
}

static void expect_params(const nn_model *m, const double *want, double tol) {
  nn_params *p = nn_model_params(m);
  const double *w = want;
  for (int i = 0; i < nn_params_count(p); i++) {
    expect_close(nn_params_tensor(p, i), w, nn_params_tensor(p, i)->size, tol,
                 nn_params_name(p, i));
    w += nn_params_tensor(p, i)->size;
  }
}

/* ---------------------------------------------------------------- buffers */

Test(buffers, list_holds_any_dtype_without_grad) {
  nn_params *b = nn_buffers_new(ctx);
  cr_assert(nn_params_is_buffers(b));
  cr_assert(!nn_params_is_buffers(nn_model_params(NULL)));
  int64_t s = 3;
  ad_tensor *f = ad_zeros(ctx, AD_F32, 1, &s), *i = ad_zeros(ctx, AD_I32, 1, &s);
  ad_tensor *d = ad_scalar(ctx, AD_F64, 0), *d2 = ad_zeros(ctx, AD_F64, 0, NULL);
  ad_tensor_free(d); /* ad_scalar makes a temporary: not a buffer */
  cr_assert_eq(nn_params_add(b, "mean", f, true), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_buffers_add(b, "counts", i, true, NN_STORE_NATIVE), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(nn_buffers_add(b, "steps", d2, true, NN_STORE_I64), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_params_count(b), 3);
  cr_assert(!ad_tensor_requires_grad(f) && !ad_tensor_requires_grad(d2));
  cr_assert_eq(nn_params_store(b, 0), NN_STORE_NATIVE);
  cr_assert_eq(nn_params_store(b, 2), NN_STORE_I64);
  cr_assert_eq(nn_params_find(b, "counts"), i);
  cr_assert_eq(nn_params_numel(b), 7);
  nn_params_free(b);
}

Test(buffers, bad_additions_are_refused_with_messages) {
  nn_params *b = nn_buffers_new(ctx), *p = nn_params_new(ctx);
  int64_t s = 2;
  ad_tensor *w = ad_zeros(ctx, AD_F32, 1, &s);
  ad_tensor_set_requires_grad(w, true);
  cr_assert_eq(nn_buffers_add(b, "w", w, false, NN_STORE_NATIVE), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "buffers_add: 'w' requires grad; a buffer is not trained");
  cr_assert_eq(nn_buffers_add(p, "w", w, false, NN_STORE_NATIVE), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "buffers_add: 'w' goes to a parameter list");
  ad_tensor *v = ad_zeros(ctx, AD_F32, 1, &s);
  cr_assert_eq(nn_buffers_add(b, "v", v, false, (nn_store)7), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "buffers_add: 'v' has unknown store 7");
  cr_assert_eq(nn_buffers_add(b, "v", v, false, NN_STORE_NATIVE), AD_OK);
  cr_assert_eq(nn_buffers_add(b, "v", v, false, NN_STORE_NATIVE), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "buffers_add: a buffer named 'v' exists");
  cr_assert_eq(nn_buffers_add(b, "", v, false, NN_STORE_NATIVE), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "buffers_add: a buffer needs a non-empty name");
  ad_tensor *tmp = ad_add_scalar(ctx, v, 1);
  cr_assert_eq(nn_buffers_add(b, "t", tmp, false, NN_STORE_NATIVE), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "buffers must be persistent tensors");
  /* a parameter list still wants floats */
  ad_tensor *i = ad_zeros(ctx, AD_I32, 1, &s);
  cr_assert_eq(nn_params_add(p, "i", i, false), AD_ERR_DTYPE);
  expect_status_msg(ctx, AD_ERR_DTYPE, "params_add: 'i' [2] is i32; parameters must be float");
  cr_assert_eq(nn_buffers_add(NULL, "x", NULL, false, NN_STORE_NATIVE), AD_ERR_NULL);
  nn_params_free(b);
  nn_params_free(p);
  ad_tensor_free(w);
  ad_tensor_free(v);
  ad_tensor_free(i);
}

/* zero_grad, clipping, L2 and optimizers leave a buffer list alone. */
Test(buffers, gradient_tools_and_optimizers_skip_buffers) {
  nn_params *b = nn_buffers_new(ctx);
  int64_t s = 3;
  ad_tensor *r = ad_full(ctx, AD_F32, 1, &s, 2.0);
  cr_assert_eq(nn_buffers_add(b, "r", r, true, NN_STORE_NATIVE), AD_OK);
  nn_params_zero_grad(b);
  cr_assert_eq(nn_clip_grad_norm(b, 0.1), 0.0);
  nn_clip_grad_value(b, 0.1);
  for (int64_t k = 0; k < s; k++) cr_assert_eq(ad_tensor_get(r, k), 2.0);
  cr_assert_null(nn_l2_penalty(ctx, b, 0.1));
  expect_status_msg(ctx, AD_ERR_ARG, "l2_penalty: no parameter requires grad");
  nn_opt_config cfg = nn_opt_defaults(NN_OPT_ADAM, 0.1);
  cr_assert_null(nn_optimizer_new(b, &cfg));
  expect_status_msg(ctx, AD_ERR_ARG, "optimizer adam: the list holds buffers");
  nn_params_free(b);
}

Test(buffers, model_lists_layer_buffers_by_name) {
  nn_model *m = bn_model(ctx, AD_F64);
  nn_params *b = nn_model_buffers(m), *p = nn_model_params(m);
  cr_assert(nn_params_is_buffers(b) && !nn_params_is_buffers(p));
  cr_assert_eq(nn_params_count(b), 6);
  const char *order[] = {"0.running_mean", "0.running_var", "0.num_batches_tracked",
                         "3.running_mean", "3.running_var", "3.num_batches_tracked"};
  for (int i = 0; i < 6; i++) {
    cr_assert_str_eq(nn_params_name(b, i), order[i]);
    cr_assert_eq(nn_params_store(b, i), i % 3 == 2 ? NN_STORE_I64 : NN_STORE_NATIVE);
  }
  cr_assert_eq(nn_params_count(p), 8);
  for (int i = 0; i < 8; i++) cr_assert_null(strstr(nn_params_name(p, i), "running"));
  cr_assert_eq(nn_params_count(nn_layer_buffers(nn_model_layer(m, 2))), 0);
  /* the optimizer's state covers parameters only */
  nn_optimizer *opt = nn_sgd_new(p, 0.1, 0.9, false, 0.01);
  cr_assert_not_null(opt);
  for (int i = 0; i < nn_optimizer_state_count(opt); i++)
    cr_assert_null(strstr(nn_optimizer_state_names(opt)[i], "running"), "%s",
                   nn_optimizer_state_names(opt)[i]);
  /* the summary counts the buffers apart */
  char buf[4096] = {0};
  FILE *f = fmemopen(buf, sizeof buf - 1, "w");
  nn_model_summary(m, f);
  fclose(f);
  cr_assert(strstr(buf, "running_var [2] (buffer)"), "%s", buf);
  cr_assert(strstr(buf, "total parameters: 127\n"), "%s", buf);
  cr_assert(strstr(buf, "non-trainable buffers: 16\n"), "%s", buf);
  nn_optimizer_free(opt);
  nn_model_free(m);
}

static ad_tensor *ident(nn_model *m, ad_tensor *x, void *ud) {
  (void)m;
  (void)ud;
  return x;
}

/* A name is a parameter or a buffer, never both (as PyTorch refuses). */
Test(buffers, names_clash_between_parameters_and_buffers) {
  nn_model *m = nn_model_new(ctx, ident, NULL);
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  int64_t s = 2;
  cr_assert_not_null(nn_model_add_param(m, "bn.running_mean", AD_F32, 1, &s,
                                        nn_init_make(NN_INIT_ZEROS, 0, 0), &rng));
  cr_assert_eq(nn_model_add_named(m, "bn", nn_batch_norm1d_new(ctx, 2, NULL)), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "model_add: a parameter named 'bn.running_mean' exists");
  cr_assert_eq(nn_model_add_named(m, "bn2", nn_batch_norm1d_new(ctx, 2, NULL)), AD_OK);
  cr_assert_null(nn_model_add_param(m, "bn2.running_var", AD_F32, 1, &s,
                                    nn_init_make(NN_INIT_ZEROS, 0, 0), &rng));
  expect_status_msg(ctx, AD_ERR_ARG, "model_add_param: a buffer named 'bn2.running_var' exists");
  cr_assert_eq(nn_params_count(nn_model_buffers(m)), 3);
  nn_model_free(m);
}

/* -------------------------------------------------------------- batchnorm */

Test(batchnorm, pytorch_defaults) {
  nn_layer *l1 = nn_batch_norm1d_new(ctx, 3, NULL), *l2 = nn_batch_norm2d_new(ctx, 4, NULL);
  cr_assert_str_eq(nn_layer_kind(l1), "batch_norm1d");
  cr_assert_str_eq(nn_layer_kind(l2), "batch_norm2d");
  nn_params *p = nn_layer_params(l2), *b = nn_layer_buffers(l2);
  cr_assert_str_eq(nn_params_name(p, 0), "weight");
  cr_assert_str_eq(nn_params_name(p, 1), "bias");
  ad_tensor *w = nn_params_find(p, "weight"), *bias = nn_params_find(p, "bias");
  ad_tensor *rm = nn_params_find(b, "running_mean"), *rv = nn_params_find(b, "running_var");
  ad_tensor *nbt = nn_params_find(b, "num_batches_tracked");
  cr_assert(w->dtype == AD_F32 && rm->dtype == AD_F32 && nbt->dtype == AD_F64 && nbt->ndim == 0);
  cr_assert(ad_tensor_requires_grad(w) && !ad_tensor_requires_grad(rm));
  for (int64_t c = 0; c < 4; c++) {
    cr_assert_eq(ad_tensor_get(w, c), 1.0);
    cr_assert_eq(ad_tensor_get(bias, c), 0.0);
    cr_assert_eq(ad_tensor_get(rm, c), 0.0);
    cr_assert_eq(ad_tensor_get(rv, c), 1.0);
  }
  cr_assert_eq(ad_tensor_item(nbt), 0.0);
  nn_batch_norm_opts o = {.no_affine = true, .no_running_stats = true};
  nn_layer *l3 = nn_batch_norm1d_new(ctx, 3, &o);
  cr_assert_eq(nn_params_count(nn_layer_params(l3)), 0);
  cr_assert_eq(nn_params_count(nn_layer_buffers(l3)), 0);
  nn_layer_free(l1);
  nn_layer_free(l2);
  nn_layer_free(l3);
}

Test(batchnorm, bad_options) {
  cr_assert_null(nn_batch_norm1d_new(ctx, 0, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "batch_norm1d: num_features 0 must be >= 1");
  nn_batch_norm_opts o = {.momentum = 1.5};
  cr_assert_null(nn_batch_norm2d_new(ctx, 2, &o));
  expect_status_msg(ctx, AD_ERR_ARG, "batch_norm2d: momentum 1.5 must be in (0, 1]");
  o = (nn_batch_norm_opts){.eps = -1};
  cr_assert_null(nn_batch_norm2d_new(ctx, 2, &o));
  expect_status_msg(ctx, AD_ERR_ARG, "batch_norm2d: eps -1 must be finite and >= 0");
  o = (nn_batch_norm_opts){.dtype = AD_I32};
  cr_assert_null(nn_batch_norm1d_new(ctx, 2, &o));
  expect_status_msg(ctx, AD_ERR_DTYPE, "batch_norm1d: parameters must be float, got i32");
  cr_assert_null(nn_batch_norm1d_new(NULL, 2, NULL));
}

Test(batchnorm, bad_inputs_name_the_layer_and_shapes) {
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_batch_norm1d_new(ctx, 3, NULL)), AD_OK);
  nn_layer *bn1 = nn_model_layer(m, 0), *bn2 = nn_batch_norm2d_new(ctx, 3, NULL);
  ad_tensor *nbt = nn_params_find(nn_layer_buffers(bn1), "num_batches_tracked");
  ad_tensor *rm = nn_params_find(nn_layer_buffers(bn1), "running_mean");
  int64_t s4[4] = {2, 3, 2, 2}, s3[3] = {2, 3, 4}, s2[2] = {4, 2}, s1[2] = {1, 3};
  ad_tensor *x4 = ad_ones(ctx, AD_F32, 4, s4), *x3 = ad_ones(ctx, AD_F32, 3, s3);
  ad_tensor *x2 = ad_ones(ctx, AD_F32, 2, s2), *x1 = ad_ones(ctx, AD_F32, 2, s1);
  ad_tensor *xd = ad_ones(ctx, AD_F64, 3, s3);
  cr_assert_null(nn_model_forward(m, x4));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "batch_norm1d '0': input [2,3,2,2] has 4 dims; the layer expects [N, C] or [N, C, L]");
  cr_assert_null(nn_layer_forward(bn2, x3, true));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "batch_norm2d: input [2,3,4] has 3 dims; the layer expects [N, C, "
                    "H, W]");
  cr_assert_null(nn_model_forward(m, x2));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "batch_norm1d '0': input [4,2] has 2 channels (dim 1), the layer expects 3");
  cr_assert_null(nn_model_forward(m, xd));
  expect_status_msg(ctx, AD_ERR_DTYPE, "batch_norm1d '0': input [2,3,4] is f64, the layer is f32");
  cr_assert_null(nn_model_forward(m, x1));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "batch_norm1d '0': input [1,3] has 1 value(s) per channel; batch statistics need "
      "more than 1");
  cr_assert_null(nn_model_forward(m, NULL));
  /* nothing moved */
  cr_assert_eq(ad_tensor_item(nbt), 0.0);
  for (int64_t c = 0; c < 3; c++) cr_assert_eq(ad_tensor_get(rm, c), 0.0);
  /* one value per channel is fine in evaluation mode, as in PyTorch */
  nn_model_set_training(m, false);
  cr_assert_not_null(nn_model_forward(m, x1), "%s", ad_last_error(ctx));
  nn_model_set_training(m, true);
  cr_assert_not_null(nn_model_forward(m, x3), "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_item(nbt), 1.0);
  nn_layer_free(bn2);
  nn_model_free(m);
  ad_tensor_free(x4);
  ad_tensor_free(x3);
  ad_tensor_free(x2);
  ad_tensor_free(x1);
  ad_tensor_free(xd);
}

/* An empty batch in training mode, as PyTorch: an empty output, the
 * running statistics unchanged, num_batches_tracked counted. */
Test(batchnorm, empty_batch_in_training) {
  nn_layer *bn = nn_batch_norm1d_new(ctx, 3, NULL);
  ad_tensor *nbt = nn_params_find(nn_layer_buffers(bn), "num_batches_tracked");
  ad_tensor *rv = nn_params_find(nn_layer_buffers(bn), "running_var");
  int64_t s[3] = {0, 3, 4};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 3, s);
  ad_tensor *y = nn_layer_forward(bn, x, true);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert(y->ndim == 3 && y->shape[0] == 0 && y->shape[1] == 3 && y->shape[2] == 4);
  cr_assert_eq(ad_tensor_item(nbt), 1.0);
  for (int64_t c = 0; c < 3; c++) cr_assert_eq(ad_tensor_get(rv, c), 1.0);
  nn_layer_free(bn);
  ad_tensor_free(x);
}

/* k SGD steps by hand: train-mode logits and loss per step, then the
 * running statistics, the parameters and eval-mode logits, as PyTorch's. */
static void pytorch_steps(ad_dtype dt, const double *train, const double *bufs,
                          const double *params, const double *eval, double tol) {
  nn_model *m = bn_model(ctx, dt);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0.9, false, 0.01);
  cr_assert_not_null(opt);
  int64_t xs[4] = {BN_N, 2, 3, 3};
  for (int t = 0; t < BN_STEPS; t++) {
    ad_tensor *x = test_tensor_of(ctx, dt, 4, xs, bn_x + t * BN_N * 18);
    ad_tensor *y = labels_of(ctx, BN_N, bn_y + t * BN_N);
    ad_tape_reset(ctx);
    nn_optimizer_zero_grad(opt);
    ad_tensor *logits = nn_model_forward(m, x);
    ad_tensor *loss = nn_cross_entropy_loss(ctx, logits, y, NN_MEAN);
    cr_assert_not_null(loss, "%s", ad_last_error(ctx));
    expect_close(logits, train + t * (BN_N * 3 + 1), BN_N * 3, tol, "train logits");
    expect_close(loss, train + t * (BN_N * 3 + 1) + BN_N * 3, 1, tol, "train loss");
    cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_eq(nn_optimizer_step(opt), AD_OK);
    ad_tensor_free(x);
    ad_tensor_free(y);
  }
  expect_buffers(m, bufs, tol);
  expect_params(m, params, tol);
  nn_model_set_training(m, false);
  int64_t es[4] = {BN_EVAL_ROWS, 2, 3, 3};
  ad_tensor *xe = test_tensor_of(ctx, dt, 4, es, bn_xe);
  ad_tape_reset(ctx);
  expect_close(nn_model_forward(m, xe), eval, BN_EVAL_ROWS * 3, tol, "eval logits");
  /* evaluation changes no buffer */
  expect_buffers(m, bufs, tol);
  ad_tensor_free(xe);
  nn_optimizer_free(opt);
  nn_model_free(m);
}

Test(batchnorm, sgd_steps_match_pytorch_f64) {
  pytorch_steps(AD_F64, bn_f64_train, bn_f64_buffers, bn_f64_params, bn_f64_eval, 1e-10);
}

Test(batchnorm, sgd_steps_match_pytorch_f32) {
  pytorch_steps(AD_F32, bn_f32_train, bn_f32_buffers, bn_f32_params, bn_f32_eval, 1e-5);
}

/* The same run through nn_fit (one epoch of BN_STEPS batches in order),
 * then nn_evaluate and nn_predict in evaluation mode. */
Test(batchnorm, fit_evaluate_predict_match_pytorch) {
  nn_model *m = bn_model(ctx, AD_F64);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0.9, false, 0.01);
  int64_t xs[4] = {BN_ROWS, 2, 3, 3}, es[4] = {BN_EVAL_ROWS, 2, 3, 3};
  ad_tensor *x = test_tensor_of(ctx, AD_F64, 4, xs, bn_x), *y = labels_of(ctx, BN_ROWS, bn_y);
  ad_tensor *xe = test_tensor_of(ctx, AD_F64, 4, es, bn_xe),
            *ye = labels_of(ctx, BN_EVAL_ROWS, bn_ye);
  nn_fit_opts fo = {.epochs = 1, .batch_size = BN_N, .no_shuffle = true, .verbose = -1};
  nn_history *h = NULL;
  cr_assert_eq(nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK, "%s",
               ad_last_error(ctx));
  double mean = 0;
  for (int t = 0; t < BN_STEPS; t++) mean += bn_f64_train[t * (BN_N * 3 + 1) + BN_N * 3];
  cr_assert(fabs(nn_history_get(h, "loss", 0) - mean / BN_STEPS) < 1e-10);
  cr_assert(!nn_model_training(m));
  expect_buffers(m, bn_f64_buffers, 1e-10);
  expect_params(m, bn_f64_params, 1e-10);
  double loss = 0;
  cr_assert_eq(nn_evaluate(m, nn_cross_entropy_loss, xe, ye, 2, &loss, NULL), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(fabs(loss - bn_f64_eval[BN_EVAL_ROWS * 3]) < 1e-10, "loss %.17g", loss);
  ad_tensor *pred = nn_predict(m, xe, 3);
  expect_close(pred, bn_f64_eval, BN_EVAL_ROWS * 3, 1e-10, "predict");
  expect_buffers(m, bn_f64_buffers, 1e-10);
  ad_tensor_free(pred);
  nn_history_free(h);
  ad_tensor_free(x);
  ad_tensor_free(y);
  ad_tensor_free(xe);
  ad_tensor_free(ye);
  nn_optimizer_free(opt);
  nn_model_free(m);
}

/* BatchNorm1d on [N, C, L] with momentum=None (cumulative average). */
Test(batchnorm, cumulative_average_on_3d_input_matches_pytorch) {
  nn_batch_norm_opts o = {.cumulative = true, .eps = 1e-3, .dtype = AD_F64};
  nn_layer *l = nn_batch_norm1d_new(ctx, 3, &o);
  double w[3] = {1.5, 0.5, -1.0}, b[3] = {0.1, -0.2, 0.3};
  for (int c = 0; c < 3; c++) {
    ad_tensor_set(nn_params_find(nn_layer_params(l), "weight"), c, w[c]);
    ad_tensor_set(nn_params_find(nn_layer_params(l), "bias"), c, b[c]);
  }
  int64_t s[3] = {4, 3, 5};
  ad_tensor *x1 = test_tensor_of(ctx, AD_F64, 3, s, bc_x1),
            *x2 = test_tensor_of(ctx, AD_F64, 3, s, bc_x2);
  expect_close(nn_layer_forward(l, x1, true), bc_train, 60, 1e-10, "train 1");
  expect_close(nn_layer_forward(l, x2, true), bc_train + 60, 60, 1e-10, "train 2");
  nn_params *bf = nn_layer_buffers(l);
  expect_close(nn_params_find(bf, "running_mean"), bc_running, 3, 1e-10, "running_mean");
  expect_close(nn_params_find(bf, "running_var"), bc_running + 3, 3, 1e-10, "running_var");
  expect_close(nn_params_find(bf, "num_batches_tracked"), bc_running + 6, 1, 0, "count");
  expect_close(nn_layer_forward(l, x1, false), bc_eval, 60, 1e-10, "eval");
  /* without running statistics, evaluation uses the batch's */
  nn_batch_norm_opts o2 = {.no_affine = true, .no_running_stats = true, .dtype = AD_F64};
  nn_layer *l2 = nn_batch_norm1d_new(ctx, 3, &o2);
  expect_close(nn_layer_forward(l2, x1, false), bc_nostats_eval, 60, 1e-10, "no stats");
  nn_layer_free(l);
  nn_layer_free(l2);
  ad_tensor_free(x1);
  ad_tensor_free(x2);
}

/* A negative num_batches_tracked (a checkpoint's I64 may hold -1) gives
 * the cumulative average a momentum of 1 / 0: refused by name, statistics
 * untouched (it blamed a momentum "inf" the user never set). */
Test(batchnorm, cumulative_average_refuses_a_negative_count) {
  nn_batch_norm_opts o = {.cumulative = true, .dtype = AD_F64};
  nn_layer *l = nn_batch_norm1d_new(ctx, 3, &o);
  nn_params *bf = nn_layer_buffers(l);
  cr_assert_eq(ad_tensor_set(nn_params_find(bf, "num_batches_tracked"), 0, -1), AD_OK);
  int64_t s[2] = {4, 3};
  ad_tensor *x = test_tensor_of(ctx, AD_F64, 2, s, bc_x1);
  ad_tensor *y = nn_layer_forward(l, x, true);
  const char *msg = ad_last_error(ctx);
  cr_expect_null(y);
  cr_expect(strstr(msg, "num_batches_tracked is -1") != NULL, "%s", msg);
  double rm = ad_tensor_get(nn_params_find(bf, "running_mean"), 0);
  cr_expect_eq(rm, 0.0);
  ad_clear_error(ctx);
  nn_layer_free(l);
  ad_tensor_free(x);
}

/* Dense, BatchNorm1d and dropout together through nn_fit: the loss falls,
 * the statistics move, and predictions in evaluation mode are repeatable. */
Test(batchnorm, fit_with_dropout_and_dense) {
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_dense_new(ctx, 4, 16, &rng, NULL));
  nn_model_add(m, nn_batch_norm1d_new(ctx, 16, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_dropout_new(ctx, 0.2, 3));
  nn_model_add(m, nn_dense_new(ctx, 16, 1, &rng, NULL));
  int64_t xs[2] = {64, 4}, ys[2] = {64, 1};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, xs, -1, 1), *y = ad_zeros(ctx, AD_F32, 2, ys);
  for (int64_t i = 0; i < 64; i++)
    ad_tensor_set(y, i, 3 * ad_tensor_get(x, 4 * i) - ad_tensor_get(x, 4 * i + 2) + 2);
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.01);
  nn_fit_opts fo = {.epochs = 30, .batch_size = 16, .seed = 1, .verbose = -1};
  nn_history *h = NULL;
  cr_assert_eq(nn_fit(m, opt, nn_mse_loss, x, y, &fo, &h), AD_OK, "%s", ad_last_error(ctx));
  double first = nn_history_get(h, "loss", 0), last = nn_history_get(h, "loss", 29);
  cr_assert(last < 0.25 * first, "loss %g -> %g", first, last);
  ad_tensor *nbt = nn_params_find(nn_model_buffers(m), "1.num_batches_tracked");
  cr_assert_eq(ad_tensor_item(nbt), 30 * 4);
  ad_tensor *p1 = nn_predict(m, x, 0), *p2 = nn_predict(m, x, 7);
  for (int64_t i = 0; i < 64; i++) cr_assert_eq(ad_tensor_get(p1, i), ad_tensor_get(p2, i));
  cr_assert_eq(ad_tensor_item(nbt), 30 * 4);
  ad_tensor_free(p1);
  ad_tensor_free(p2);
  nn_history_free(h);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
}

/* ------------------------------------------------------------ checkpoints */

/* PyTorch's state dict (num_batches_tracked as I64) loads under the same
 * names and gives PyTorch's logits. */
Test(bn_ckpt, pytorch_state_dict_loads) {
  nn_model *m = bn_model(ctx, AD_F32);
  cr_assert_eq(nn_model_load(m, NULL, BN_FIXTURE), AD_OK, "%s", ad_last_error(ctx));
  expect_buffers(m, bn_f32_buffers, 0);
  expect_params(m, bn_f32_params, 0);
  cr_assert_eq(ad_tensor_item(nn_params_find(nn_model_buffers(m), "3.num_batches_tracked")),
               BN_STEPS);
  int64_t es[4] = {BN_EVAL_ROWS, 2, 3, 3};
  ad_tensor *xe = test_tensor_of(ctx, AD_F32, 4, es, bn_xe);
  ad_tensor *pred = nn_predict(m, xe, 0);
  expect_close(pred, bn_f32_eval, BN_EVAL_ROWS * 3, 1e-5, "logits");
  ad_tensor_free(pred);
  ad_tensor_free(xe);
  nn_model_free(m);
}

/* nn_model_save of that model writes PyTorch's tensors: the same names,
 * dtypes (I64 included), shapes and bytes. */
Test(bn_ckpt, save_gives_pytorch_tensors) {
  nn_model *m = bn_model(ctx, AD_F32);
  cr_assert_eq(nn_model_load(m, NULL, BN_FIXTURE), AD_OK, "%s", ad_last_error(ctx));
  const char *path = test_path("bn.safetensors");
  cr_assert_eq(nn_model_save(m, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(test_expect_same_tensors(ctx, BN_FIXTURE, path), 2); /* 2 I64 counts */
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
  cr_assert(info && info->n == 14, "%s", ad_last_error(ctx));
  nn_checkpoint_info_free(info);
  nn_model_free(m);
}

/* A model and its optimizer round-trip; the counters come back. */
Test(bn_ckpt, model_and_optimizer_round_trip) {
  nn_model *m = bn_model(ctx, AD_F64), *m2 = bn_model(ctx, AD_F64);
  nn_optimizer *opt = nn_sgd_new(nn_model_params(m), 0.1, 0.9, false, 0.01);
  nn_optimizer *opt2 = nn_sgd_new(nn_model_params(m2), 0.1, 0.9, false, 0.01);
  int64_t xs[4] = {BN_ROWS, 2, 3, 3};
  ad_tensor *x = test_tensor_of(ctx, AD_F64, 4, xs, bn_x), *y = labels_of(ctx, BN_ROWS, bn_y);
  nn_fit_opts fo = {.epochs = 1, .batch_size = BN_N, .no_shuffle = true, .verbose = -1};
  cr_assert_eq(nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL), AD_OK);
  const char *path = test_path("m.safetensors");
  cr_assert_eq(nn_model_save(m, opt, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_model_load(m2, opt2, path), AD_OK, "%s", ad_last_error(ctx));
  expect_buffers(m2, bn_f64_buffers, 1e-10);
  expect_params(m2, bn_f64_params, 1e-10);
  cr_assert_eq(nn_optimizer_steps(opt2), BN_STEPS);
  ad_tensor_free(x);
  ad_tensor_free(y);
  nn_optimizer_free(opt);
  nn_optimizer_free(opt2);
  nn_model_free(m);
  nn_model_free(m2);
}

/* The fixture with 3.num_batches_tracked replaced by v, written to path. */
static void patched_fixture(const char *path, int64_t v) {
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, BN_FIXTURE);
  const nn_checkpoint_entry *e = nn_checkpoint_info_find(info, "3.num_batches_tracked");
  cr_assert(e && strcmp(e->dtype_name, "I64") == 0 && e->nbytes == 8);
  long n;
  unsigned char *d = test_read_file(BN_FIXTURE, &n);
  uint64_t u = (uint64_t)v;
  for (int k = 0; k < 8; k++)
    d[8 + info->header_bytes + e->offset + (uint64_t)k] = (unsigned char)(u >> (8 * k));
  test_write_file(path, d, (size_t)n);
  free(d);
  nn_checkpoint_info_free(info);
}

/* A count an F64 buffer cannot hold exactly fails the load, naming the file
 * and the tensor, and changes nothing. */
Test(bn_ckpt, int64_count_out_of_range_is_refused) {
  nn_model *m = bn_model(ctx, AD_F32);
  const char *path = test_path("big.safetensors");
  patched_fixture(path, ((int64_t)1 << 53) + 1);
  cr_assert_eq(nn_model_load(m, NULL, path), AD_ERR_FORMAT);
  char want[256];
  snprintf(want, sizeof want,
           "checkpoint %s: tensor '3.num_batches_tracked' element 0 = 9007199254740993 (I64) does "
           "not fit F64 exactly (range [-9007199254740992, 9007199254740992])",
           path);
  expect_status_msg(ctx, AD_ERR_FORMAT, want);
  expect_params(m, bn_init, 1e-6); /* f32 copies of the f64 values */
  cr_assert_eq(ad_tensor_item(nn_params_find(nn_model_buffers(m), "0.num_batches_tracked")), 0);
  patched_fixture(path, -((int64_t)1 << 53));
  cr_assert_eq(nn_model_load(m, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_item(nn_params_find(nn_model_buffers(m), "3.num_batches_tracked")),
               -0x1p53);
  nn_model_free(m);
}

/* nn_checkpoint_save_as / _load_as on their own. */
Test(bn_ckpt, i64_store_writes_and_reads_whole_numbers) {
  const char *path = test_path("i64.safetensors");
  int64_t s = 3;
  ad_tensor *d = ad_zeros(ctx, AD_F64, 1, &s), *i = ad_zeros(ctx, AD_I32, 1, &s);
  ad_tensor *f = ad_zeros(ctx, AD_F32, 1, &s);
  double dv[3] = {-5, 0x1p40, 7};
  for (int k = 0; k < 3; k++) ad_tensor_set(d, k, dv[k]);
  const char *names[1] = {"n"};
  nn_store st[1] = {NN_STORE_I64};
  cr_assert_eq(nn_checkpoint_save_as(ctx, path, 1, names, &d, st, 0, NULL, NULL), AD_OK, "%s",
               ad_last_error(ctx));
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
  cr_assert_str_eq(info->entries[0].dtype_name, "I64");
  cr_assert(!info->entries[0].has_dtype);
  cr_assert_eq(info->entries[0].nbytes, 24);
  nn_checkpoint_info_free(info);
  /* without the store, the I64 entry is a dtype mismatch */
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, names, &d), AD_ERR_DTYPE);
  expect_status_msg(ctx, AD_ERR_DTYPE, "tensor 'n' has dtype I64, expected F64");
  ad_tensor *d2 = ad_zeros(ctx, AD_F64, 1, &s);
  cr_assert_eq(nn_checkpoint_load_as(ctx, path, 1, names, &d2, st), AD_OK, "%s",
               ad_last_error(ctx));
  for (int k = 0; k < 3; k++) cr_assert_eq(ad_tensor_get(d2, k), dv[k]);
  /* into I32 and F32, range-checked */
  cr_assert_eq(nn_checkpoint_load_as(ctx, path, 1, names, &i, st), AD_ERR_FORMAT);
  expect_status_msg(ctx, AD_ERR_FORMAT,
                    "tensor 'n' element 1 = 1099511627776 (I64) does not fit I32 exactly (range "
                    "[-2147483648, 2147483647])");
  cr_assert_eq(nn_checkpoint_load_as(ctx, path, 1, names, &f, st), AD_ERR_FORMAT);
  expect_status_msg(ctx, AD_ERR_FORMAT, "does not fit F32 exactly (range [-16777216, 16777216])");
  for (int k = 0; k < 3; k++) cr_assert_eq(ad_tensor_get(i, k), 0);
  /* an I32 tensor always fits an I64 entry, and reads back */
  ad_tensor_set(i, 0, -2147483647.0 - 1);
  ad_tensor_set(i, 2, 9);
  cr_assert_eq(nn_checkpoint_save_as(ctx, path, 1, names, &i, st, 0, NULL, NULL), AD_OK);
  ad_tensor *i2 = ad_zeros(ctx, AD_I32, 1, &s);
  cr_assert_eq(nn_checkpoint_load_as(ctx, path, 1, names, &i2, st), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(i2, 0), -2147483648.0);
  cr_assert_eq(ad_tensor_get(i2, 2), 9);
  /* an entry of the tensor's own dtype loads under NN_STORE_I64 too */
  cr_assert_eq(nn_checkpoint_save(ctx, path, 1, names, &d), AD_OK);
  cr_assert_eq(nn_checkpoint_load_as(ctx, path, 1, names, &d2, st), AD_OK);
  /* only whole numbers in range are written as I64; nothing is written */
  ad_tensor_set(d, 1, 0.5);
  cr_assert_eq(nn_checkpoint_save_as(ctx, path, 1, names, &d, st, 0, NULL, NULL), AD_ERR_ARG);
  expect_status_msg(
      ctx, AD_ERR_ARG,
      "tensor 'n' element 1 = 0.5 cannot be stored as I64 (not a whole number in the int64 "
      "range)");
  ad_tensor_set(d, 1, 0x1p63);
  cr_assert_eq(nn_checkpoint_save_as(ctx, path, 1, names, &d, st, 0, NULL, NULL), AD_ERR_ARG);
  ad_tensor_set(d, 1, NAN);
  cr_assert_eq(nn_checkpoint_save_as(ctx, path, 1, names, &d, st, 0, NULL, NULL), AD_ERR_ARG);
  cr_assert_eq(nn_checkpoint_load_as(ctx, path, 1, names, &d2, st), AD_OK);
  cr_assert_eq(ad_tensor_get(d2, 1), 0x1p40, "the file was left alone");
  nn_store bad[1] = {(nn_store)9};
  cr_assert_eq(nn_checkpoint_load_as(ctx, path, 1, names, &d2, bad), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "tensor 'n' has unknown store 9");
  ad_tensor_free(d);
  ad_tensor_free(d2);
  ad_tensor_free(i);
  ad_tensor_free(i2);
  ad_tensor_free(f);
}

/* Every allocation of building a model with BatchNorm, saving and loading
 * it may fail: the call reports AD_ERR_OOM (or NULL) and nothing leaks. */
Test(bn_ckpt, out_of_memory_leaks_nothing) {
  const char *path = test_path("oom.safetensors");
  bool done = false;
  for (long k = 0; !done && k < 2000; k++) {
    test_alloc_refuse_after(&alloc_state, k);
    nn_model *m = nn_sequential_new(ctx);
    ad_status st = nn_model_add(m, nn_batch_norm2d_new(ctx, 2, NULL));
    if (st == AD_OK) st = nn_model_add(m, nn_flatten_new(ctx));
    if (st == AD_OK) st = nn_model_add(m, nn_batch_norm1d_new(ctx, 18, NULL));
    if (st == AD_OK) st = nn_model_save(m, NULL, path);
    if (st == AD_OK) st = nn_model_load(m, NULL, path);
    if (m)
      cr_assert(st == AD_OK || ad_last_status(ctx) == AD_ERR_OOM, "k %ld: %s", k,
                ad_last_error(ctx));
    done = m && st == AD_OK;
    nn_model_free(m);
    test_alloc_grant_all(&alloc_state);
    ad_clear_error(ctx);
    ad_tape_reset(ctx);
    cr_assert_eq(LIVE_BLOCKS(), live_base, "k %ld: %ld blocks leaked", k,
                 LIVE_BLOCKS() - live_base);
  }
  cr_assert(done, "never succeeded");
}
