/* test_nn_thread_bits.c: docs/performance.md "Threads" promises the same
 * bits on any number of threads with the built-in GEMM. For every layer
 * kind of nn.h that computes (Dense, the convolutions, pools, norms, the
 * recurrent layers, attention, the Transformer layers, embeddings), at
 * sizes whose loops split (products of at least 4M multiply-adds, loops
 * over 32K elements, Adam over 256K parameters for Dense, a few images per
 * convolution, batch rows for the recurrent layers), this runs a forward in
 * training mode, ad_backward with a random seed and one Adam step, on 1, 2
 * and 3 threads, each from the same fresh layer, and compares the output,
 * every parameter's gradient, every parameter after the step and every
 * buffer byte for byte. It logs how many layers it compared and which of
 * them the pool split. */
#include "nn.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_alloc.h"

/* Findings and counts go to stderr too: the TAP output meson reads drops
 * Criterion's log lines, and stderr is kept in its log. */
#define TB_LOG(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr))

TEST_CTX_SUITE(nn_thread_bits);

#define MAXP 64

typedef struct hashes {
  int n;
  uint64_t h[3 * MAXP + 4];
  char what[3 * MAXP + 4][64];
  bool split;
} hashes;

static void add(hashes *hs, const char *what, const char *name, const ad_tensor *t) {
  cr_assert_lt(hs->n, 3 * MAXP + 4);
  snprintf(hs->what[hs->n], sizeof hs->what[0], "%s %s", what, name);
  hs->h[hs->n++] = t ? test_hash_bytes(t->data, (size_t)t->size * ad_dtype_size(t->dtype)) : 1;
}

/* A layer and its input, made afresh from the same seed on every call. */
typedef struct lcase {
  const char *name;
  nn_layer *(*make)(ad_ctx *c, ad_rng *rng, ad_tensor **x);
  /* NULL: nn_layer_forward(l, x, true) */
  ad_tensor *(*forward)(nn_layer *l, ad_tensor *x);
} lcase;

static ad_tensor *input(ad_ctx *c, ad_rng *rng, ad_dtype dt, int nd, const int64_t *s) {
  ad_tensor *x = ad_rand(c, rng, dt, nd, s, -1, 1);
  cr_assert_not_null(x);
  ad_tensor_set_requires_grad(x, true);
  return x;
}
#define IN(...)                                                                                    \
  input(c, rng, AD_F32, (int)(sizeof((int64_t[]){__VA_ARGS__}) / 8), (int64_t[]){__VA_ARGS__})

static nn_layer *mk_dense(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(128, 512); /* 33M multiply-adds; Adam over 262K parameters */
  return nn_dense_new(c, 512, 512, rng, &(nn_dense_opts){.activation = NN_ACT_RELU});
}
static nn_layer *mk_dense64(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = input(c, rng, AD_F64, 2, (int64_t[]){128, 512});
  return nn_dense_new(c, 512, 512, rng,
                      &(nn_dense_opts){.activation = NN_ACT_TANH, .dtype = AD_F64});
}
static nn_layer *mk_conv1d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(6, 8, 2000);
  return nn_conv1d_new(c, 8, 16, 5, rng, NULL);
}
static nn_layer *mk_conv2d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(6, 8, 40, 40);
  return nn_conv2d_new(c, 8, 16, 3, 3, rng, NULL);
}
static nn_layer *mk_conv2d_wino(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 16, 24, 24); /* 16 channels and more: the Winograd path */
  return nn_conv2d_new(c, 16, 16, 3, 3, rng, &(nn_conv2d_opts){.padding = {1, 1}});
}
static nn_layer *mk_convt2d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(6, 8, 30, 30);
  return nn_conv_transpose2d_new(c, 8, 8, 3, 3, rng, NULL);
}
static nn_layer *mk_conv3d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 4, 12, 16, 16);
  return nn_conv3d_new(c, 4, 8, 3, 3, 3, rng, NULL);
}
static nn_layer *mk_maxpool2d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 8, 40, 40);
  return nn_max_pool2d_new(c, 3, 3, NULL);
}
static nn_layer *mk_avgpool2d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 8, 40, 40);
  return nn_avg_pool2d_new(c, 2, 2, NULL);
}
static nn_layer *mk_maxpool3d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 4, 10, 20, 20);
  return nn_max_pool3d_new(c, 2, 2, 2, NULL);
}
static nn_layer *mk_adaptive(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 8, 40, 40);
  return nn_adaptive_avg_pool2d_new(c, 7, 5);
}
static nn_layer *mk_bn1d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(512, 128);
  (void)rng;
  return nn_batch_norm1d_new(c, 128, NULL);
}
static nn_layer *mk_bn2d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(8, 8, 32, 32);
  return nn_batch_norm2d_new(c, 8, NULL);
}
static nn_layer *mk_ln(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(128, 512);
  return nn_layer_norm_new(c, 1, (int64_t[]){512}, NULL);
}
static nn_layer *mk_gn(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(8, 16, 24, 24);
  return nn_group_norm_new(c, 4, 16, NULL);
}
static nn_layer *mk_in2d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(8, 16, 24, 24);
  return nn_instance_norm2d_new(c, 16, NULL);
}
static nn_layer *mk_dropout(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(256, 512);
  return nn_dropout_new(c, 0.3, 5);
}
static nn_layer *mk_lstm(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(6, 256, 16);
  return nn_lstm_new(c, 16, 32, rng, NULL);
}
static nn_layer *mk_lstm_bi(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(6, 256, 16);
  return nn_lstm_new(
      c, 16, 32, rng,
      &(nn_rnn_opts){.num_layers = 2, .bidirectional = true, .dropout = 0.2, .seed = 3});
}
static nn_layer *mk_gru_bi(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(256, 6, 16);
  return nn_gru_new(c, 16, 32, rng, &(nn_rnn_opts){.bidirectional = true, .batch_first = true});
}
static nn_layer *mk_lstm_composed(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 512, 16);
  return nn_lstm_new(c, 16, 32, rng, &(nn_rnn_opts){.composed = true});
}
static nn_layer *mk_gru_per_step(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 512, 16);
  return nn_gru_new(c, 16, 32, rng, &(nn_rnn_opts){.per_step = true});
}
static nn_layer *mk_rnn(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(6, 2048, 16);
  return nn_rnn_new(c, NN_RNN_TANH, 16, 32, rng, NULL);
}
static nn_layer *mk_mha(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(32, 32, 64);
  return nn_multihead_attention_new(c, 64, 4, rng, &(nn_mha_opts){.dropout = 0.1, .seed = 4});
}
static nn_layer *mk_enc(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(32, 32, 64);
  return nn_transformer_encoder_layer_new(
      c, 64, 4, rng, &(nn_transformer_opts){.dim_feedforward = 128, .seed = 6});
}
static nn_layer *mk_transformer(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(24, 32, 64);
  return nn_transformer_new(c, rng,
                            &(nn_transformer_model_opts){.d_model = 64,
                                                         .nhead = 4,
                                                         .num_encoder_layers = 1,
                                                         .num_decoder_layers = 1,
                                                         .dim_feedforward = 128,
                                                         .seed = 8});
}
static ad_tensor *extra; /* a second input a forward made */

static ad_tensor *fw_transformer(nn_layer *l, ad_tensor *x) {
  ad_ctx *c = ctx;
  ad_rng r;
  ad_rng_seed(&r, 77);
  ad_tensor *tgt = ad_rand(c, &r, AD_F32, 3, (int64_t[]){20, 32, 64}, -1, 1);
  ad_tensor_set_requires_grad(tgt, true);
  extra = tgt; /* freed after the backward, its gradient compared */
  return nn_transformer_forward(l, x, tgt, NULL, NULL, NULL, NULL, NULL, NULL, true);
}
static nn_layer *mk_embedding(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  int32_t *v = malloc(256 * 64 * sizeof *v);
  cr_assert_not_null(v);
  for (int i = 0; i < 256 * 64; i++) v[i] = (int32_t)ad_rng_below(rng, 10000);
  *x = ad_from_data(c, AD_I32, 2, (int64_t[]){256, 64}, v);
  free(v);
  return nn_embedding_new(c, 10000, 32, rng, NULL); /* Adam over 320K */
}
static nn_layer *mk_embbag(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  int32_t *v = malloc(2048 * 8 * sizeof *v);
  cr_assert_not_null(v);
  for (int i = 0; i < 2048 * 8; i++) v[i] = (int32_t)ad_rng_below(rng, 1000);
  *x = ad_from_data(c, AD_I32, 2, (int64_t[]){2048, 8}, v);
  free(v);
  return nn_embedding_bag_new(c, 1000, 32, rng, NULL);
}

static nn_layer *mk_upsample(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 8, 24, 24);
  return nn_upsample_new(c, &(nn_upsample_opts){.mode = NN_UPSAMPLE_BICUBIC, .size = {37, 41}});
}
static nn_layer *mk_lppool(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 8, 40, 40);
  return nn_lp_pool2d_new(c, 3, 2, 2, NULL);
}
static nn_layer *mk_unfold(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 8, 30, 30);
  return nn_unfold_new(c, &(nn_fold_opts){.kernel_size = {3, 3}, .padding = {1, 1}});
}
static nn_layer *mk_lrn(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 16, 30, 30);
  return nn_local_response_norm_new(c, 5, 1e-2, 0.75, 1);
}
static nn_layer *mk_convt1d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(6, 8, 1500);
  return nn_conv_transpose1d_new(c, 8, 8, 5, rng, NULL);
}
static nn_layer *mk_convt3d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 4, 10, 14, 14);
  return nn_conv_transpose3d_new(c, 4, 4, 3, 3, 3, rng, NULL);
}
static nn_layer *mk_amaxpool(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 8, 40, 40);
  return nn_adaptive_max_pool2d_new(c, 7, 9);
}
static nn_layer *mk_bn3d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(4, 4, 10, 20, 20);
  return nn_batch_norm3d_new(c, 4, NULL);
}
static nn_layer *mk_in1d(ad_ctx *c, ad_rng *rng, ad_tensor **x) {
  *x = IN(8, 16, 400);
  return nn_instance_norm1d_new(
      c, 16, &(nn_instance_norm_opts){.affine = true, .track_running_stats = true});
}

static const lcase cases[] = {
    {"dense", mk_dense, NULL},
    {"dense f64", mk_dense64, NULL},
    {"conv1d", mk_conv1d, NULL},
    {"conv2d", mk_conv2d, NULL},
    {"conv2d winograd", mk_conv2d_wino, NULL},
    {"conv_transpose2d", mk_convt2d, NULL},
    {"conv3d", mk_conv3d, NULL},
    {"max_pool2d", mk_maxpool2d, NULL},
    {"avg_pool2d", mk_avgpool2d, NULL},
    {"max_pool3d", mk_maxpool3d, NULL},
    {"adaptive_avg_pool2d", mk_adaptive, NULL},
    {"batch_norm1d", mk_bn1d, NULL},
    {"batch_norm2d", mk_bn2d, NULL},
    {"layer_norm", mk_ln, NULL},
    {"group_norm", mk_gn, NULL},
    {"instance_norm2d", mk_in2d, NULL},
    {"dropout", mk_dropout, NULL},
    {"lstm", mk_lstm, NULL},
    {"lstm 2 layers bidirectional dropout", mk_lstm_bi, NULL},
    {"gru bidirectional batch_first", mk_gru_bi, NULL},
    {"lstm composed", mk_lstm_composed, NULL},
    {"gru per_step", mk_gru_per_step, NULL},
    {"rnn tanh", mk_rnn, NULL},
    {"multihead_attention", mk_mha, NULL},
    {"transformer_encoder_layer", mk_enc, NULL},
    {"transformer (encoder and decoder)", mk_transformer, fw_transformer},
    {"embedding", mk_embedding, NULL},
    {"embedding_bag", mk_embbag, NULL},
    {"upsample bicubic", mk_upsample, NULL},
    {"lp_pool2d", mk_lppool, NULL},
    {"unfold", mk_unfold, NULL},
    {"local_response_norm", mk_lrn, NULL},
    {"conv_transpose1d", mk_convt1d, NULL},
    {"conv_transpose3d", mk_convt3d, NULL},
    {"adaptive_max_pool2d", mk_amaxpool, NULL},
    {"batch_norm3d", mk_bn3d, NULL},
    {"instance_norm1d affine", mk_in1d, NULL},
};
#define NCASES (int)(sizeof cases / sizeof cases[0])

static void run_case(const lcase *lc, hashes *hs) {
  ad_rng rng;
  ad_rng_seed(&rng, 2026);
  ad_tensor *x = NULL;
  nn_layer *l = lc->make(ctx, &rng, &x);
  cr_assert(l && x, "%s: %s", lc->name, ad_last_error(ctx));
  ad_thread_stats_get(NULL, true);
  ad_tensor *y = lc->forward ? lc->forward(l, x) : nn_layer_forward(l, x, true);
  cr_assert_not_null(y, "%s: %s", lc->name, ad_last_error(ctx));
  add(hs, "output", "", y);
  ad_rng_seed(&rng, 99);
  ad_tensor *seed = test_uniform(ctx, ad_rng_next(&rng), y->dtype, y->ndim, y->shape);
  cr_assert_not_null(seed);
  cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s: %s", lc->name, ad_last_error(ctx));
  ad_tape_reset(ctx);
  add(hs, "grad", "input", x->grad);
  if (extra) add(hs, "grad", "second input", extra->grad);
  ad_tensor_free(extra);
  extra = NULL;
  nn_params *p = nn_layer_params(l), *b = nn_layer_buffers(l);
  int np = p ? nn_params_count(p) : 0;
  cr_assert_leq(np, MAXP);
  for (int i = 0; i < np; i++) add(hs, "grad", nn_params_name(p, i), nn_params_tensor(p, i)->grad);
  if (np) {
    nn_optimizer *opt = nn_adam_new(p, 1e-3);
    cr_assert_not_null(opt);
    cr_assert_eq(nn_optimizer_step(opt), AD_OK);
    nn_optimizer_free(opt);
    for (int i = 0; i < np; i++)
      add(hs, "after Adam", nn_params_name(p, i), nn_params_tensor(p, i));
  }
  for (int i = 0; b && i < nn_params_count(b); i++)
    add(hs, "buffer", nn_params_name(b, i), nn_params_tensor(b, i));
  ad_thread_stats st;
  ad_thread_stats_get(&st, true);
  hs->split = st.loops > 0;
  ad_tensor_free(seed);
  ad_tensor_free(x);
  nn_layer_free(l);
}

Test(nn_thread_bits, every_layer_same_bits_on_1_2_3_threads, .timeout = 600) {
  static hashes hs[NCASES][3];
  memset(hs, 0, sizeof hs);
  for (int t = 0; t < 3; t++) {
    cr_assert_eq(ad_set_num_threads(t + 1), AD_OK);
    for (int k = 0; k < NCASES; k++) run_case(&cases[k], &hs[k][t]);
  }
  /* a busy machine makes the pool run loops on the caller alone for a
   * while: a layer not split on 2 or 3 threads runs again there */
  for (int k = 0; k < NCASES; k++)
    for (int t = 1; t < 3; t++)
      for (int tries = 0; tries < 4 && !hs[k][t].split; tries++) {
        nanosleep(&(struct timespec){0, 50000000}, NULL);
        cr_assert_eq(ad_set_num_threads(t + 1), AD_OK);
        memset(&hs[k][t], 0, sizeof hs[k][t]);
        run_case(&cases[k], &hs[k][t]);
      }
  ad_set_num_threads(1);
  int differ = 0, split = 0, compared = 0;
  for (int k = 0; k < NCASES; k++) {
    bool d = false;
    for (int t = 1; t < 3; t++) {
      cr_assert_eq(hs[k][t].n, hs[k][0].n);
      for (int i = 0; i < hs[k][0].n; i++) {
        compared++;
        if (hs[k][t].h[i] != hs[k][0].h[i]) {
          d = true;
          TB_LOG("%s: %s differs on %d threads from 1", cases[k].name, hs[k][0].what[i], t + 1);
        }
      }
    }
    differ += d;
    split += hs[k][1].split && hs[k][2].split;
    if (!(hs[k][1].split && hs[k][2].split)) cr_log_warn("%s: not split", cases[k].name);
  }
  TB_LOG("nn_thread_bits: %d layers (%d split on 2 and 3 threads), %d results compared: "
         "%d layers differ",
         NCASES, split, compared, differ);
  cr_assert_eq(differ, 0, "%d of %d layers differ across thread counts", differ, NCASES);
}

/* Every optimizer kind with its options on (momentum, weight decay,
 * amsgrad, centered, clipping by the global norm and by value), over a
 * float32 tensor of 300K elements (the sweep splits from 256K), a small
 * one and a float64 one of 300K, three steps with new gradients: the
 * parameters after each step compared across 1, 2 and 3 threads. */
static void optim_run(nn_opt_kind kind, int variant, hashes *hs) {
  ad_rng rng;
  ad_rng_seed(&rng, 31 + (uint64_t)kind);
  ad_ctx *c = ctx;
  nn_params *p = nn_params_new(c);
  cr_assert_not_null(p);
  /* test_uniform, not ad_rand (serial, and half of this test under ASan) */
  ad_tensor *w[3] = {test_uniform(c, ad_rng_next(&rng), AD_F32, 2, (int64_t[]){520, 520}),
                     test_uniform(c, ad_rng_next(&rng), AD_F32, 1, (int64_t[]){100}),
                     test_uniform(c, ad_rng_next(&rng), AD_F64, 2, (int64_t[]){30, 40})};
  for (int i = 0; i < 3; i++) {
    cr_assert_not_null(w[i]);
    ad_tensor_set_requires_grad(w[i], true);
    char name[8];
    snprintf(name, sizeof name, "w%d", i);
    cr_assert_eq(nn_params_add(p, name, w[i], true), AD_OK);
  }
  nn_opt_config cfg = nn_opt_defaults(kind, 1e-2);
  if (variant) {
    cfg.momentum = kind == NN_OPT_SGD || kind == NN_OPT_RMSPROP ? 0.9 : 0;
    cfg.nesterov = kind == NN_OPT_SGD;
    cfg.amsgrad = kind == NN_OPT_ADAM || kind == NN_OPT_ADAMW;
    cfg.centered = kind == NN_OPT_RMSPROP;
    if (kind != NN_OPT_RPROP) cfg.weight_decay = 0.05;
    cfg.clip_norm = 10;
    cfg.clip_value = 0.01;
  }
  nn_optimizer *opt = nn_optimizer_new(p, &cfg);
  cr_assert_not_null(opt, "%s", ad_last_error(c));
  ad_thread_stats_get(NULL, true);
  for (int step = 0; step < 3; step++) {
    for (int i = 0; i < 3; i++) {
      ad_tensor *g = test_uniform(c, ad_rng_next(&rng), w[i]->dtype, w[i]->ndim, w[i]->shape);
      cr_assert_not_null(g);
      ad_tensor *y = ad_sum(c, ad_mul(c, w[i], g));
      cr_assert_eq(ad_backward(c, y, NULL), AD_OK, "%s", ad_last_error(c));
      ad_tape_reset(c);
      ad_tensor_free(g);
    }
    cr_assert_eq(nn_optimizer_step(opt), AD_OK, "%s", ad_last_error(c));
    nn_optimizer_zero_grad(opt);
    for (int i = 0; i < 3; i++) add(hs, "step", nn_params_name(p, i), w[i]);
  }
  ad_thread_stats st;
  ad_thread_stats_get(&st, true);
  hs->split = st.loops > 0;
  nn_optimizer_free(opt);
  nn_params_free(p);
}

Test(nn_thread_bits, every_optimizer_same_bits_on_1_2_3_threads, .timeout = 600) {
  enum { KINDS = NN_OPT_RPROP + 1 };
  static hashes hs[KINDS][2][3];
  memset(hs, 0, sizeof hs);
  for (int t = 0; t < 3; t++) {
    cr_assert_eq(ad_set_num_threads(t + 1), AD_OK);
    for (int k = 0; k < KINDS; k++)
      for (int v = 0; v < 2; v++) optim_run((nn_opt_kind)k, v, &hs[k][v][t]);
  }
  ad_set_num_threads(1);
  int differ = 0, split = 0;
  for (int k = 0; k < KINDS; k++)
    for (int v = 0; v < 2; v++) {
      bool d = false;
      for (int t = 1; t < 3; t++)
        for (int i = 0; i < hs[k][v][0].n; i++)
          if (hs[k][v][t].h[i] != hs[k][v][0].h[i]) {
            d = true;
            TB_LOG("optimizer kind %d%s: %s differs on %d threads from 1", k,
                   v ? " with options" : "", hs[k][v][0].what[i], t + 1);
          }
      differ += d;
      split += hs[k][v][1].split && hs[k][v][2].split;
    }
  TB_LOG("nn_thread_bits: %d optimizer runs (%d kinds, plain and with options; %d split on "
         "2 and 3 threads): %d differ",
         2 * KINDS, KINDS, split, differ);
  cr_assert_eq(differ, 0);
}

/* nn_fit: an MLP with dropout and batch norm, batches of 512 rows of 256
 * features (a 512 KB gather, split from 256 KB), validation and gradient
 * norms, two epochs: the parameters, buffers and history the same bits on
 * 1, 2 and 3 threads. */
static void fit_run(hashes *hs) {
  ad_rng rng;
  ad_rng_seed(&rng, 12);
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, (int64_t[]){2048, 256}, -1, 1);
  int32_t *lab = malloc(2048 * sizeof *lab);
  cr_assert(x && lab);
  for (int i = 0; i < 2048; i++) lab[i] = (int32_t)ad_rng_below(&rng, 10);
  ad_tensor *y = ad_from_data(ctx, AD_I32, 1, (int64_t[]){2048}, lab);
  free(lab);
  cr_assert_not_null(y);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_not_null(m);
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 256, 512, &rng,
                                            &(nn_dense_opts){.activation = NN_ACT_RELU})),
               AD_OK);
  cr_assert_eq(nn_model_add(m, nn_dropout_new(ctx, 0.2, 3)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_batch_norm1d_new(ctx, 512, NULL)), AD_OK);
  cr_assert_eq(nn_model_add(m, nn_dense_new(ctx, 512, 10, &rng, NULL)), AD_OK);
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 1e-3);
  cr_assert_not_null(opt);
  nn_fit_opts fo = {.epochs = 2,
                    .batch_size = 512,
                    .seed = 5,
                    .validation_split = 0.25,
                    .accuracy = true,
                    .grad_norms = true,
                    .verbose = -1};
  nn_history *h = NULL;
  ad_thread_stats_get(NULL, true);
  cr_assert_eq(nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, &h), AD_OK, "%s",
               ad_last_error(ctx));
  ad_thread_stats st;
  ad_thread_stats_get(&st, true);
  hs->split = st.loops > 0;
  nn_params *p = nn_model_params(m), *b = nn_model_buffers(m);
  for (int i = 0; i < nn_params_count(p); i++)
    add(hs, "parameter", nn_params_name(p, i), nn_params_tensor(p, i));
  for (int i = 0; b && i < nn_params_count(b); i++)
    add(hs, "buffer", nn_params_name(b, i), nn_params_tensor(b, i));
  static const char *keys[] = {"loss", "val_loss", "accuracy", "val_accuracy", "grad_norm_mean"};
  for (int k = 0; k < 5; k++) {
    const double *v = nn_history_values(h, keys[k]);
    cr_assert_not_null(v, "%s", keys[k]);
    cr_assert_lt(hs->n, 3 * MAXP + 4);
    snprintf(hs->what[hs->n], sizeof hs->what[0], "history %s", keys[k]);
    hs->h[hs->n++] = test_hash_bytes(v, 2 * sizeof *v);
  }
  nn_history_free(h);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
}

Test(nn_thread_bits, fit_same_bits_on_1_2_3_threads, .timeout = 600) {
  static hashes hs[3];
  memset(hs, 0, sizeof hs);
  for (int t = 0; t < 3; t++) {
    cr_assert_eq(ad_set_num_threads(t + 1), AD_OK);
    fit_run(&hs[t]);
  }
  ad_set_num_threads(1);
  int differ = 0;
  for (int t = 1; t < 3; t++)
    for (int i = 0; i < hs[0].n; i++)
      if (hs[t].h[i] != hs[0].h[i]) {
        differ++;
        TB_LOG("nn_fit: %s differs on %d threads from 1", hs[0].what[i], t + 1);
      }
  TB_LOG("nn_thread_bits: nn_fit, %d results compared (split on 2 and 3 threads: %s): %d "
         "differ",
         hs[0].n, hs[1].split && hs[2].split ? "yes" : "no", differ);
  cr_assert_eq(differ, 0);
}
