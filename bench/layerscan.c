/* layerscan: every nn layer kind and loss, forward and backward, timed one
 * case each, as bench/opscan does for the core's ops: a layer or loss
 * composed of many ops (or of one op on an unusual path) can fall off a
 * cliff that no op's own case shows. bench/layerscan.py runs it with
 * PyTorch's same layers (torch.nn modules and functions) and prints the
 * ratios.
 *
 *   build/bench/layerscan [--filter SUBSTR] [--reps N] [--threads T] [--dtype f32|f64]
 *
 * float32 throughout, or float64 with --dtype f64 (every float input,
 * target and parameter: users train in both). Each case runs its layer
 * (nn_layer_forward in training mode, or the loss function with the mean
 * reduction) on fixed inputs, then backward to every input and parameter that needs a
 * gradient with a seed of ones of the output's shape; of --reps runs
 * (default 15) it prints the least forward time and the least backward
 * time, in microseconds:
 *
 *   layerscan/NAME fwd_us F bwd_us B
 *
 * Gradients are released (ad_tensor_zero_grad) before each run, as
 * PyTorch's side sets them to None. The layers are made once, outside the
 * timing. A case that fails ends the program with its error (exit 1). Not
 * a test: the machine's other load moves the times. */
#include "ad_ext.h"
#include "scan_util.h"
#include "nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ad_ctx *ctx;
static ad_rng rng;
static ad_dtype dtype = AD_F32; /* of every float input and parameter (--dtype) */

/* The inputs (float leaves of the scan's dtype needing a gradient unless said):
 *   a, b, c [256,1024] N(0,1); p [256,1024] in [0.5, 2); prob in [0.01,
 *   0.99) and t01, tpm [256,1024] (targets in [0,1) and of +-1, no grad);
 *   pw [1024] in [0.5, 2) (a pos_weight, no grad);
 *   img [32,64,32,32] N(0,1); simg [8,64,32,32]; seq [32,64,256] (N, C, L);
 *   vol [8,16,16,16,16]; x1, x2 [256,64];
 *   logits [256,1000] and labels (i32), class weights cw [1000] in [0.5, 2),
 *   probability targets probs [256,1000] in [0, 0.002); eidx [32,64] (i32) of 1000 rows;
 *   bag 2048 indices (i32) of 1000 rows in 128 bags of 16;
 *   rx [32,32,128] (T, N, F) for the recurrent layers;
 *   att [16,64,256] (N, T, E) for attention, kpm [16,64] (i32) its
 *   key padding mask (row n's keys from 48 + n on);
 *   seg [8,21,64,64] logits of 21 classes per pixel, seg_labels [8,64,64]
 *   (i32), cw21 [21] class weights; pooled [32,64,16,16], unpooled at the
 *   indices of img's 2x2 max pooling;
 *   ctc_lp [50,16,20] log-probabilities, targets [16,10] (i32);
 *   row1 [1,1024] (a batch of one), rx1 [32,1,128] (a sequence of a batch
 *   of one), rgb [32,3,64,64] (an image's three channels), seq_lg
 *   [16,64,1000] (a sequence model's logits, classes last) and seq_lab
 *   [16,64] (i32, label 0 ignored); img1 [1,64,32,32] (one image), fmask
 *   [64,64] in [-1, 0) (an attention mask added to the scores, no grad);
 *   sh64 [4096,64] and sh256 [1024,256] (rows of a model's width);
 *   z4 [65536,4] logits of four labels each, t4 [65536,4] targets in [0,1)
 *   and pw4 [4] in [0.5, 2) (no grad). */
static ad_tensor *a, *b, *c, *p, *prob, *t01, *tpm, *tpm_rows, *img, *simg, *seq, *vol, *x1, *x2,
    *logits, *labels, *eidx, *bag, *rx, *att, *ctc_lp, *ctc_tg, *cnt, *pw, *cw, *probs, *kpm, *seg,
    *seg_labels, *cw21, *pooled, *pool_idx, *sh16, *row1, *rx1, *rgb, *seq_lg, *seq_lab, *img1,
    *fmask, *z4, *t4, *pw4, *sh64, *sh256;
static int64_t offsets[128], ctc_in_len[16], ctc_tg_len[16];

/* Every tensor whose gradient a run fills: the leaves above and every
 * layer's parameters, released before each run. */
static ad_tensor *grads[512];
static int n_grads;

static void die(const char *what) {
  fprintf(stderr, "layerscan: %s: %s\n", what, ad_last_error(ctx));
  exit(1);
}

static void track(ad_tensor *t) {
  if (n_grads < (int)(sizeof grads / sizeof *grads)) grads[n_grads++] = t;
}

/* A layer, its parameters tracked; exits when it could not be made. */
static nn_layer *layer(nn_layer *l, const char *what) {
  if (!l) die(what);
  nn_params *ps = nn_layer_params(l);
  for (int i = 0; ps && i < nn_params_count(ps); i++) track(nn_params_tensor(ps, i));
  return l;
}

static ad_tensor *input(int nd, const int64_t *shape, double lo, double hi, bool grad) {
  ad_tensor *t = lo == hi ? ad_randn(ctx, &rng, dtype, nd, shape, 0, 1)
                          : ad_rand(ctx, &rng, dtype, nd, shape, lo, hi);
  if (!t || (grad && ad_tensor_set_requires_grad(t, true) != AD_OK)) die("inputs");
  if (grad) track(t);
  return t;
}

/* int32 values (k * mul) % mod + add of the given shape. */
static ad_tensor *indices(int nd, const int64_t *shape, int64_t mul, int64_t mod, int64_t add) {
  ad_tensor *t = ad_zeros(ctx, AD_I32, nd, shape);
  if (!t) die("inputs");
  for (int64_t k = 0; k < t->size; k++) ((int32_t *)t->data)[k] = (int32_t)(k * mul % mod + add);
  return t;
}

/* Element k of a float tensor of the scan's dtype set to v. */
static void set(ad_tensor *t, int64_t k, double v) {
  if (dtype == AD_F64)
    ((double *)t->data)[k] = v;
  else
    ((float *)t->data)[k] = (float)v;
}

/* +-1 (or 0/1 when zero_one) targets of the scan's dtype, no gradient. */
static ad_tensor *signs(int nd, const int64_t *shape, bool zero_one) {
  ad_tensor *t = ad_zeros(ctx, dtype, nd, shape);
  if (!t) die("inputs");
  for (int64_t k = 0; k < t->size; k++) set(t, k, (k * 7919 % 13) < 6 ? (zero_one ? 0 : -1) : 1);
  return t;
}

static void make_inputs(void) {
  const int64_t s2[2] = {256, 1024}, s_img[4] = {32, 64, 32, 32}, s_simg[4] = {8, 64, 32, 32};
  const int64_t s_seq[3] = {32, 64, 256}, s_vol[5] = {8, 16, 16, 16, 16}, s_x[2] = {256, 64};
  const int64_t s_lg[2] = {256, 1000}, s_n[1] = {256}, s_ei[2] = {32, 64}, s_bag[1] = {2048};
  const int64_t s_rx[3] = {32, 32, 128}, s_att[3] = {16, 64, 256}, s_lp[3] = {50, 16, 20};
  const int64_t s_tg[2] = {16, 10}, s_kpm[2] = {16, 64}, s_seg[4] = {8, 21, 64, 64},
                s_segl[3] = {8, 64, 64}, s_pool[4] = {32, 64, 16, 16};
  a = input(2, s2, 0, 0, true), b = input(2, s2, 0, 0, true), c = input(2, s2, 0, 0, true);
  p = input(2, s2, 0.5, 2, true), prob = input(2, s2, 0.01, 0.99, true);
  t01 = input(2, s2, 0, 1, false), tpm = signs(2, s2, false), tpm_rows = signs(1, s_n, false);
  pw = input(1, s2 + 1, 0.5, 2, false); /* pos_weight [1024] */
  cnt = ad_zeros(ctx, dtype, 2, s2);    /* Poisson counts 0..4 */
  if (!cnt) die("inputs");
  for (int64_t k = 0; k < cnt->size; k++) set(cnt, k, (double)(k * 7919 % 5));
  img = input(4, s_img, 0, 0, true), simg = input(4, s_simg, 0, 0, true);
  seq = input(3, s_seq, 0, 0, true), vol = input(5, s_vol, 0, 0, true);
  sh16 = input(2, (const int64_t[]){16384, 16}, 0, 0, true); /* rows of 16 features */
  x1 = input(2, s_x, 0, 0, true), x2 = input(2, s_x, 0, 0, true);
  logits = input(2, s_lg, 0, 0, true), labels = indices(1, s_n, 13, 1000, 0);
  cw = input(1, s_lg + 1, 0.5, 2, false), probs = input(2, s_lg, 0, 0.002, false);
  seg = input(4, s_seg, 0, 0, true), seg_labels = indices(3, s_segl, 7919, 21, 0);
  cw21 = input(1, s_seg + 1, 0.5, 2, false), pooled = input(4, s_pool, 0, 0, true);
  kpm = indices(2, s_kpm, 1, 64, 0); /* key k of row n ignored from 48 + n on */
  for (int64_t k = 0; k < kpm->size; k++) ((int32_t *)kpm->data)[k] = k % 64 >= 48 + k / 64 % 16;
  eidx = indices(2, s_ei, 7919, 1000, 0), bag = indices(1, s_bag, 7919, 1000, 0);
  for (int k = 0; k < 128; k++) offsets[k] = 16 * k;
  rx = input(3, s_rx, 0, 0, true), att = input(3, s_att, 0, 0, true);
  /* CTC's log-probabilities: a log_softmax over the classes, copied into a leaf. */
  ad_tensor *raw = ad_randn(ctx, &rng, dtype, 3, s_lp, 0, 1);
  ad_tensor *lp = raw ? ad_log_softmax(ctx, raw, 2) : NULL;
  ctc_lp = lp ? ad_tensor_clone(ctx, lp) : NULL;
  if (!ctc_lp || ad_tensor_set_requires_grad(ctc_lp, true) != AD_OK) die("inputs");
  track(ctc_lp);
  ctc_tg = indices(2, s_tg, 7, 19, 1);
  for (int k = 0; k < 16; k++) ctc_in_len[k] = 50, ctc_tg_len[k] = 10;
  row1 = input(2, (const int64_t[]){1, 1024}, 0, 0, true);
  rx1 = input(3, (const int64_t[]){32, 1, 128}, 0, 0, true);
  rgb = input(4, (const int64_t[]){32, 3, 64, 64}, 0, 0, true);
  seq_lg = input(3, (const int64_t[]){16, 64, 1000}, 0, 0, true);
  seq_lab = indices(2, (const int64_t[]){16, 64}, 7919, 1000, 0);
  img1 = input(4, (const int64_t[]){1, 64, 32, 32}, 0, 0, true);
  fmask = input(2, (const int64_t[]){64, 64}, -1, 0, false);
  z4 = input(2, (const int64_t[]){65536, 4}, 0, 0, true);
  sh64 = input(2, (const int64_t[]){4096, 64}, 0, 0, true);
  sh256 = input(2, (const int64_t[]){1024, 256}, 0, 0, true);
  t4 = input(2, (const int64_t[]){65536, 4}, 0, 1, false);
  pw4 = input(1, (const int64_t[]){4}, 0.5, 2, false);
}

/* The layers, made once by make_layers. */
static nn_layer *l_dense, *l_bilinear, *l_relu6, *l_prelu, *l_rrelu, *l_softshrink, *l_hardshrink,
    *l_threshold, *l_softmin, *l_softmax2d, *l_glu, *l_dropout, *l_dropout2d, *l_bn1d, *l_bn2d,
    *l_gn, *l_in2d, *l_ln, *l_lrn, *l_conv1d, *l_conv2d, *l_dwconv, *l_dilconv, *l_convt2d,
    *l_conv3d, *l_convt1d, *l_convt3d, *l_maxp2d, *l_avgp2d, *l_maxp1d, *l_avgp1d, *l_maxp3d,
    *l_avgp3d, *l_aavg2d, *l_amax2d, *l_aavg3d, *l_lpp2d, *l_gap, *l_up_near, *l_up_bilin,
    *l_up_bicub, *l_pshuf, *l_punshuf, *l_unfold, *l_fold, *l_refl2d, *l_repl2d, *l_const2d,
    *l_refl1d, *l_refl3d, *l_cos, *l_pdist, *l_emb, *l_bagl, *l_rnn, *l_lstm, *l_gru, *l_mha,
    *l_enc, *l_conv_refl, *l_conv_s2, *l_conv_g4, *l_avgp_ex, *l_bilstm, *l_enc_pre, *l_unpool,
    *l_convt_k3, *l_lstm_bf, *l_dilconv1d, *l_dense3, *l_ln2, *l_dec, *l_amax3d, *l_bn3d, *l_in1d,
    *l_repl3d, *l_lpp1d, *l_amax1d, *l_hardtanh, *l_leaky, *l_bag_sum, *l_bag_max, *l_gru_bi,
    *l_rnn_relu, *l_lstm_proj, *l_in3d, *l_drop1d, *l_drop3d, *l_ln16, *l_conv1d_s2g4, *l_conv_circ,
    *l_aavg1d, *l_zero2d, *l_const3d, *l_repl1d, *l_dense1, *l_conv1x1, *l_stem, *l_maxp_s1,
    *l_up_tri, *l_up_lin, *l_up_bilin_ac, *l_prelu64, *l_gn32, *l_bn1d3, *l_dense_nb, *l_emb_pad,
    *l_convt_g4, *l_gn1, *l_in2d_aff, *l_gru2, *l_ln64, *l_ln256;

static void make_layers(void) {
  l_dense = layer(nn_dense_new(ctx, 1024, 1024, &rng, &(nn_dense_opts){.dtype = dtype}), "dense");
  l_bilinear = layer(nn_bilinear_new(ctx, 64, 64, 64, true, dtype, &rng), "bilinear");
  l_relu6 = layer(nn_relu6_new(ctx), "relu6");
  l_prelu = layer(nn_prelu_new(ctx, 1, 0.25, dtype), "prelu");
  l_rrelu = layer(nn_rrelu_new(ctx, 1.0 / 8, 1.0 / 3, 1), "rrelu");
  l_softshrink = layer(nn_softshrink_new(ctx, 0.5), "softshrink");
  l_hardshrink = layer(nn_hardshrink_new(ctx, 0.5), "hardshrink");
  l_threshold = layer(nn_threshold_new(ctx, 0.1, 20), "threshold");
  l_softmin = layer(nn_softmin_new(ctx, 1), "softmin");
  l_softmax2d = layer(nn_softmax2d_new(ctx), "softmax2d");
  l_glu = layer(nn_glu_new(ctx, 1), "glu");
  l_dropout = layer(nn_dropout_new(ctx, 0.5, 1), "dropout");
  l_dropout2d = layer(nn_dropout2d_new(ctx, 0.5, 1), "dropout2d");
  l_bn1d =
      layer(nn_batch_norm1d_new(ctx, 1024, &(nn_batch_norm_opts){.dtype = dtype}), "batch_norm1d");
  l_bn2d =
      layer(nn_batch_norm2d_new(ctx, 64, &(nn_batch_norm_opts){.dtype = dtype}), "batch_norm2d");
  l_gn = layer(nn_group_norm_new(ctx, 8, 64, &(nn_group_norm_opts){.dtype = dtype}), "group_norm");
  l_in2d = layer(nn_instance_norm2d_new(ctx, 64, &(nn_instance_norm_opts){.dtype = dtype}),
                 "instance_norm2d");
  l_ln = layer(
      nn_layer_norm_new(ctx, 1, (const int64_t[]){1024}, &(nn_layer_norm_opts){.dtype = dtype}),
      "layer_norm");
  l_lrn = layer(nn_local_response_norm_new(ctx, 5, 1e-4, 0.75, 1.0), "local_response_norm");
  l_conv1d =
      layer(nn_conv1d_new(ctx, 64, 64, 3, &rng, &(nn_conv1d_opts){.padding = 1, .dtype = dtype}),
            "conv1d");
  l_conv2d = layer(
      nn_conv2d_new(ctx, 64, 64, 3, 3, &rng, &(nn_conv2d_opts){.padding = {1, 1}, .dtype = dtype}),
      "conv2d");
  l_dwconv =
      layer(nn_conv2d_new(ctx, 64, 64, 3, 3, &rng,
                          &(nn_conv2d_opts){.padding = {1, 1}, .groups = 64, .dtype = dtype}),
            "conv2d depthwise");
  l_dilconv =
      layer(nn_conv2d_new(ctx, 64, 64, 3, 3, &rng,
                          &(nn_conv2d_opts){.padding = {2, 2}, .dilation = {2, 2}, .dtype = dtype}),
            "conv2d dilated");
  l_convt2d = layer(nn_conv_transpose2d_new(ctx, 64, 32, 2, 2, &rng,
                                            &(nn_conv2d_opts){.stride = {2, 2}, .dtype = dtype}),
                    "conv_transpose2d");
  l_conv3d = layer(nn_conv3d_new(ctx, 16, 16, 3, 3, 3, &rng,
                                 &(nn_conv3d_opts){.padding = {1, 1, 1}, .dtype = dtype}),
                   "conv3d");
  l_convt1d =
      layer(nn_conv_transpose1d_new(ctx, 64, 32, 2, &rng,
                                    &(nn_conv_transpose1d_opts){.stride = 2, .dtype = dtype}),
            "conv_transpose1d");
  l_convt3d = layer(nn_conv_transpose3d_new(ctx, 16, 8, 2, 2, 2, &rng,
                                            &(nn_conv3d_opts){.stride = {2, 2, 2}, .dtype = dtype}),
                    "conv_transpose3d");
  l_maxp2d =
      layer(nn_max_pool2d_new(ctx, 3, 3, &(ad_pool2d_opts){.stride = {2, 2}, .padding = {1, 1}}),
            "max_pool2d");
  l_avgp2d =
      layer(nn_avg_pool2d_new(ctx, 3, 3, &(ad_pool2d_opts){.stride = {1, 1}, .padding = {1, 1}}),
            "avg_pool2d");
  l_maxp1d = layer(nn_max_pool1d_new(ctx, 2, NULL), "max_pool1d");
  l_avgp1d = layer(nn_avg_pool1d_new(ctx, 2, NULL), "avg_pool1d");
  l_maxp3d = layer(nn_max_pool3d_new(ctx, 2, 2, 2, NULL), "max_pool3d");
  l_avgp3d = layer(nn_avg_pool3d_new(ctx, 2, 2, 2, NULL), "avg_pool3d");
  l_aavg2d = layer(nn_adaptive_avg_pool2d_new(ctx, 7, 7), "adaptive_avg_pool2d");
  l_amax2d = layer(nn_adaptive_max_pool2d_new(ctx, 7, 7), "adaptive_max_pool2d");
  l_aavg3d = layer(nn_adaptive_avg_pool3d_new(ctx, 5, 5, 5), "adaptive_avg_pool3d");
  l_lpp2d = layer(nn_lp_pool2d_new(ctx, 2, 2, 2, NULL), "lp_pool2d");
  l_gap = layer(nn_global_avg_pool2d_new(ctx), "global_avg_pool2d");
  l_up_near = layer(nn_upsample_new(ctx, &(nn_upsample_opts){.scale_factor = {2}}), "upsample");
  l_up_bilin = layer(
      nn_upsample_new(ctx, &(nn_upsample_opts){.mode = NN_UPSAMPLE_BILINEAR, .scale_factor = {2}}),
      "upsample bilinear");
  l_up_bicub = layer(
      nn_upsample_new(ctx, &(nn_upsample_opts){.mode = NN_UPSAMPLE_BICUBIC, .scale_factor = {2}}),
      "upsample bicubic");
  l_pshuf = layer(nn_pixel_shuffle_new(ctx, 2), "pixel_shuffle");
  l_punshuf = layer(nn_pixel_unshuffle_new(ctx, 2), "pixel_unshuffle");
  const nn_fold_opts fo = {.kernel_size = {3, 3}, .padding = {1, 1}};
  l_unfold = layer(nn_unfold_new(ctx, &fo), "unfold");
  l_fold = layer(nn_fold_new(ctx, (const int64_t[2]){32, 32}, &fo), "fold");
  l_refl2d =
      layer(nn_reflection_pad2d_new(ctx, (const int64_t[4]){2, 2, 2, 2}), "reflection_pad2d");
  l_repl2d =
      layer(nn_replication_pad2d_new(ctx, (const int64_t[4]){2, 2, 2, 2}), "replication_pad2d");
  l_const2d =
      layer(nn_constant_pad2d_new(ctx, (const int64_t[4]){2, 2, 2, 2}, 0.5), "constant_pad2d");
  l_refl1d = layer(nn_reflection_pad1d_new(ctx, (const int64_t[2]){3, 3}), "reflection_pad1d");
  l_refl3d =
      layer(nn_reflection_pad3d_new(ctx, (const int64_t[6]){1, 1, 1, 1, 1, 1}), "reflection_pad3d");
  l_cos = layer(nn_cosine_similarity_new(ctx, 1, 1e-8), "cosine_similarity");
  l_pdist = layer(nn_pairwise_distance_new(ctx, 2, 1e-6, false), "pairwise_distance");
  l_emb = layer(nn_embedding_new(ctx, 1000, 256, &rng, &(nn_embedding_opts){.dtype = dtype}),
                "embedding");
  l_bagl =
      layer(nn_embedding_bag_new(ctx, 1000, 256, &rng, &(nn_embedding_bag_opts){.dtype = dtype}),
            "embedding_bag");
  l_rnn =
      layer(nn_rnn_new(ctx, NN_RNN_TANH, 128, 256, &rng, &(nn_rnn_opts){.dtype = dtype}), "rnn");
  l_lstm = layer(nn_lstm_new(ctx, 128, 256, &rng, &(nn_rnn_opts){.dtype = dtype}), "lstm");
  l_gru = layer(nn_gru_new(ctx, 128, 256, &rng, &(nn_rnn_opts){.dtype = dtype}), "gru");
  l_mha = layer(nn_multihead_attention_new(ctx, 256, 8, &rng,
                                           &(nn_mha_opts){.batch_first = true, .dtype = dtype}),
                "multihead_attention");
  l_enc = layer(nn_transformer_encoder_layer_new(ctx, 256, 8, &rng,
                                                 &(nn_transformer_opts){.dim_feedforward = 1024,
                                                                        .no_dropout = true,
                                                                        .batch_first = true,
                                                                        .dtype = dtype}),
                "transformer_encoder_layer");
  /* options' paths */
  l_conv_refl =
      layer(nn_conv2d_new_ext(ctx, 64, 64, 3, 3, &rng,
                              &(nn_conv2d_opts_ext){.base = {.padding = {1, 1}, .dtype = dtype},
                                                    .padding_mode = NN_PADDING_REFLECT}),
            "conv2d reflect");
  l_conv_s2 =
      layer(nn_conv2d_new(ctx, 64, 128, 3, 3, &rng,
                          &(nn_conv2d_opts){.stride = {2, 2}, .padding = {1, 1}, .dtype = dtype}),
            "conv2d stride 2");
  l_conv_g4 =
      layer(nn_conv2d_new(ctx, 64, 64, 3, 3, &rng,
                          &(nn_conv2d_opts){.padding = {1, 1}, .groups = 4, .dtype = dtype}),
            "conv2d groups 4");
  l_avgp_ex =
      layer(nn_avg_pool2d_new(
                ctx, 3, 3,
                &(ad_pool2d_opts){
                    .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true, .exclude_pad = true}),
            "avg_pool2d exclude_pad ceil_mode");
  l_bilstm =
      layer(nn_lstm_new(ctx, 128, 256, &rng,
                        &(nn_rnn_opts){.num_layers = 2, .bidirectional = true, .dtype = dtype}),
            "lstm 2 layers bidirectional");
  l_enc_pre = layer(nn_transformer_encoder_layer_new(ctx, 256, 8, &rng,
                                                     &(nn_transformer_opts){.dim_feedforward = 1024,
                                                                            .no_dropout = true,
                                                                            .batch_first = true,
                                                                            .norm_first = true,
                                                                            .dtype = dtype}),
                    "transformer_encoder_layer norm_first");
  l_unpool = layer(nn_max_unpool2d_new(ctx, 2, 2, NULL), "max_unpool2d");
  l_convt_k3 =
      layer(nn_conv_transpose2d_new(
                ctx, 64, 32, 3, 3, &rng,
                &(nn_conv2d_opts){
                    .stride = {2, 2}, .padding = {1, 1}, .output_padding = {1, 1}, .dtype = dtype}),
            "conv_transpose2d k3 s2 p1 op1");
  l_lstm_bf =
      layer(nn_lstm_new(ctx, 128, 256, &rng, &(nn_rnn_opts){.batch_first = true, .dtype = dtype}),
            "lstm batch_first");
  l_dilconv1d = layer(nn_conv1d_new(ctx, 64, 64, 3, &rng,
                                    &(nn_conv1d_opts){.padding = 2, .dilation = 2, .dtype = dtype}),
                      "conv1d dilated");
  l_dense3 =
      layer(nn_dense_new(ctx, 256, 256, &rng, &(nn_dense_opts){.dtype = dtype}), "dense 3-d");
  l_ln2 = layer(
      nn_layer_norm_new(ctx, 2, (const int64_t[]){64, 256}, &(nn_layer_norm_opts){.dtype = dtype}),
      "layer_norm over two dims");
  l_dec = layer(nn_transformer_decoder_layer_new(ctx, 256, 8, &rng,
                                                 &(nn_transformer_opts){.dim_feedforward = 1024,
                                                                        .no_dropout = true,
                                                                        .batch_first = true,
                                                                        .dtype = dtype}),
                "transformer_decoder_layer");
  l_amax3d = layer(nn_adaptive_max_pool3d_new(ctx, 5, 5, 5), "adaptive_max_pool3d");
  l_bn3d =
      layer(nn_batch_norm3d_new(ctx, 16, &(nn_batch_norm_opts){.dtype = dtype}), "batch_norm3d");
  l_in1d = layer(nn_instance_norm1d_new(ctx, 64, &(nn_instance_norm_opts){.dtype = dtype}),
                 "instance_norm1d");
  l_repl3d = layer(nn_replication_pad3d_new(ctx, (const int64_t[6]){1, 1, 1, 1, 1, 1}),
                   "replication_pad3d");
  l_lpp1d = layer(nn_lp_pool1d_new(ctx, 2, 2, NULL), "lp_pool1d");
  l_amax1d = layer(nn_adaptive_max_pool1d_new(ctx, 50), "adaptive_max_pool1d");
  l_hardtanh = layer(nn_hardtanh_new(ctx, -0.5, 0.5), "hardtanh");
  l_leaky = layer(nn_leaky_relu_new(ctx, 0.01), "leaky_relu");
  /* options and kinds no case reached: bag modes, a bidirectional GRU, a
   * ReLU RNN, an LSTM with projections, 3-d instance norm, channel
   * dropouts of 1-d and 3-d inputs, a layer norm over 16 features, a
   * strided grouped conv1d, circular padding, pads of 1-d and 3-d inputs */
  l_bag_sum =
      layer(nn_embedding_bag_new(ctx, 1000, 256, &rng,
                                 &(nn_embedding_bag_opts){.mode = NN_BAG_SUM, .dtype = dtype}),
            "embedding_bag sum");
  l_bag_max =
      layer(nn_embedding_bag_new(ctx, 1000, 256, &rng,
                                 &(nn_embedding_bag_opts){.mode = NN_BAG_MAX, .dtype = dtype}),
            "embedding_bag max");
  l_gru_bi =
      layer(nn_gru_new(ctx, 128, 256, &rng, &(nn_rnn_opts){.bidirectional = true, .dtype = dtype}),
            "gru bidirectional");
  l_rnn_relu = layer(nn_rnn_new(ctx, NN_RNN_RELU, 128, 256, &rng, &(nn_rnn_opts){.dtype = dtype}),
                     "rnn relu");
  l_lstm_proj = layer(nn_rnn_new_ext(ctx, NN_RNN_LSTM, 128, 256, &rng,
                                     &(nn_rnn_opts_ext){.base = {.dtype = dtype}, .proj_size = 64}),
                      "lstm proj_size");
  l_in3d = layer(nn_instance_norm3d_new(ctx, 16, &(nn_instance_norm_opts){.dtype = dtype}),
                 "instance_norm3d");
  l_drop1d = layer(nn_dropout1d_new(ctx, 0.5, 1), "dropout1d");
  l_drop3d = layer(nn_dropout3d_new(ctx, 0.5, 1), "dropout3d");
  l_ln16 =
      layer(nn_layer_norm_new(ctx, 1, (const int64_t[]){16}, &(nn_layer_norm_opts){.dtype = dtype}),
            "layer_norm 16");
  l_conv1d_s2g4 = layer(
      nn_conv1d_new(ctx, 64, 64, 3, &rng,
                    &(nn_conv1d_opts){.stride = 2, .padding = 1, .groups = 4, .dtype = dtype}),
      "conv1d stride 2 groups 4");
  l_conv_circ =
      layer(nn_conv2d_new_ext(ctx, 64, 64, 3, 3, &rng,
                              &(nn_conv2d_opts_ext){.base = {.padding = {1, 1}, .dtype = dtype},
                                                    .padding_mode = NN_PADDING_CIRCULAR}),
            "conv2d circular");
  l_aavg1d = layer(nn_adaptive_avg_pool1d_new(ctx, 50), "adaptive_avg_pool1d");
  l_zero2d = layer(nn_zero_pad2d_new(ctx, (const int64_t[4]){2, 2, 2, 2}), "zero_pad2d");
  l_const3d = layer(nn_constant_pad3d_new(ctx, (const int64_t[6]){1, 1, 1, 1, 1, 1}, 0.5),
                    "constant_pad3d");
  l_repl1d = layer(nn_replication_pad1d_new(ctx, (const int64_t[2]){3, 3}), "replication_pad1d");
  /* the third round: one output, a pointwise and a stem convolution, an
   * overlapping pool, the other linear upsamplings, a gain per channel,
   * a group norm of two channels a group, a batch norm of a sequence */
  l_dense1 = layer(nn_dense_new(ctx, 1024, 1, &rng, &(nn_dense_opts){.dtype = dtype}), "dense 1");
  l_conv1x1 =
      layer(nn_conv2d_new(ctx, 64, 64, 1, 1, &rng, &(nn_conv2d_opts){.dtype = dtype}), "conv 1x1");
  l_stem =
      layer(nn_conv2d_new(ctx, 3, 64, 7, 7, &rng,
                          &(nn_conv2d_opts){.stride = {2, 2}, .padding = {3, 3}, .dtype = dtype}),
            "conv2d 7x7 stride 2");
  l_maxp_s1 =
      layer(nn_max_pool2d_new(ctx, 3, 3, &(ad_pool2d_opts){.stride = {1, 1}, .padding = {1, 1}}),
            "max_pool2d k3 s1");
  l_up_tri = layer(
      nn_upsample_new(ctx, &(nn_upsample_opts){.mode = NN_UPSAMPLE_TRILINEAR, .scale_factor = {2}}),
      "upsample trilinear");
  l_up_lin = layer(
      nn_upsample_new(ctx, &(nn_upsample_opts){.mode = NN_UPSAMPLE_LINEAR, .scale_factor = {2}}),
      "upsample linear");
  l_up_bilin_ac = layer(nn_upsample_new(ctx, &(nn_upsample_opts){.mode = NN_UPSAMPLE_BILINEAR,
                                                                 .scale_factor = {2},
                                                                 .align_corners = true}),
                        "upsample bilinear align_corners");
  l_prelu64 = layer(nn_prelu_new(ctx, 64, 0.25, dtype), "prelu 64");
  l_gn32 =
      layer(nn_group_norm_new(ctx, 32, 64, &(nn_group_norm_opts){.dtype = dtype}), "group_norm 32");
  l_bn1d3 = layer(nn_batch_norm1d_new(ctx, 64, &(nn_batch_norm_opts){.dtype = dtype}),
                  "batch_norm1d of [N, C, L]");
  /* the fourth round: no bias, a padding index, grouped transposed
   * convolution, one group, instance norm with its affine parameters,
   * two GRU layers */
  l_dense_nb =
      layer(nn_dense_new(ctx, 1024, 1024, &rng, &(nn_dense_opts){.no_bias = true, .dtype = dtype}),
            "dense without bias");
  l_emb_pad = layer(
      nn_embedding_new(ctx, 1000, 256, &rng, &(nn_embedding_opts){.padding = true, .dtype = dtype}),
      "embedding padding_idx");
  l_convt_g4 = layer(nn_conv_transpose2d_new(ctx, 64, 64, 3, 3, &rng,
                                             &(nn_conv2d_opts){.stride = {2, 2},
                                                               .padding = {1, 1},
                                                               .output_padding = {1, 1},
                                                               .groups = 4,
                                                               .dtype = dtype}),
                     "conv_transpose2d groups 4");
  l_gn1 =
      layer(nn_group_norm_new(ctx, 1, 64, &(nn_group_norm_opts){.dtype = dtype}), "group_norm 1");
  l_in2d_aff = layer(
      nn_instance_norm2d_new(ctx, 64, &(nn_instance_norm_opts){.affine = true, .dtype = dtype}),
      "instance_norm2d affine");
  l_gru2 = layer(nn_gru_new(ctx, 128, 256, &rng, &(nn_rnn_opts){.num_layers = 2, .dtype = dtype}),
                 "gru 2 layers");
  l_ln64 =
      layer(nn_layer_norm_new(ctx, 1, (const int64_t[]){64}, &(nn_layer_norm_opts){.dtype = dtype}),
            "layer_norm 64");
  l_ln256 = layer(
      nn_layer_norm_new(ctx, 1, (const int64_t[]){256}, &(nn_layer_norm_opts){.dtype = dtype}),
      "layer_norm 256");
  /* the indices of a 2x2 max pooling of img, kept (the tape's are freed) */
  nn_layer *mp = layer(nn_max_pool2d_new(ctx, 2, 2, NULL), "max_pool2d 2x2");
  ad_tensor *idx = nn_max_pool_indices(mp, img);
  pool_idx = idx ? ad_zeros(ctx, AD_I32, idx->ndim, idx->shape) : NULL;
  if (!pool_idx) die("max_unpool2d's indices");
  memcpy(pool_idx->data, idx->data, (size_t)idx->size * sizeof(int32_t));
  ad_tape_reset(ctx);
  nn_layer_free(mp);
}

static ad_tensor *fwd(nn_layer *l, ad_tensor *x) { return nn_layer_forward(l, x, true); }
static ad_tensor *act(ad_tensor *x, nn_act k) { return nn_activate(ctx, x, k, 1.0); }

static ad_tensor *c_dense(void) { return fwd(l_dense, a); }
static ad_tensor *c_bilinear(void) { return nn_bilinear_forward(l_bilinear, x1, x2); }
static ad_tensor *c_silu(void) { return act(a, NN_ACT_SILU); }
static ad_tensor *c_elu(void) { return act(a, NN_ACT_ELU); }
static ad_tensor *c_selu(void) { return act(a, NN_ACT_SELU); }
static ad_tensor *c_celu(void) { return act(a, NN_ACT_CELU); }
static ad_tensor *c_mish(void) { return act(a, NN_ACT_MISH); }
static ad_tensor *c_hardswish(void) { return act(a, NN_ACT_HARDSWISH); }
static ad_tensor *c_hardsigmoid(void) { return act(a, NN_ACT_HARDSIGMOID); }
static ad_tensor *c_logsigmoid(void) { return act(a, NN_ACT_LOGSIGMOID); }
static ad_tensor *c_softsign(void) { return act(a, NN_ACT_SOFTSIGN); }
static ad_tensor *c_tanhshrink(void) { return act(a, NN_ACT_TANHSHRINK); }
static ad_tensor *c_relu6(void) { return fwd(l_relu6, a); }
static ad_tensor *c_prelu(void) { return fwd(l_prelu, a); }
static ad_tensor *c_rrelu(void) { return fwd(l_rrelu, a); }
static ad_tensor *c_softshrink(void) { return fwd(l_softshrink, a); }
static ad_tensor *c_hardshrink(void) { return fwd(l_hardshrink, a); }
static ad_tensor *c_threshold(void) { return fwd(l_threshold, a); }
static ad_tensor *c_softmin(void) { return fwd(l_softmin, a); }
static ad_tensor *c_softmax2d(void) { return fwd(l_softmax2d, img); }
static ad_tensor *c_glu(void) { return fwd(l_glu, a); }
static ad_tensor *c_dropout(void) { return fwd(l_dropout, a); }
static ad_tensor *c_dropout2d(void) { return fwd(l_dropout2d, img); }
static ad_tensor *c_bn1d(void) { return fwd(l_bn1d, a); }
static ad_tensor *c_bn2d(void) { return fwd(l_bn2d, img); }
static ad_tensor *c_bn2d_eval(void) { return nn_layer_forward(l_bn2d, img, false); }
static ad_tensor *c_gn(void) { return fwd(l_gn, img); }
static ad_tensor *c_in2d(void) { return fwd(l_in2d, img); }
static ad_tensor *c_ln(void) { return fwd(l_ln, a); }
static ad_tensor *c_lrn(void) { return fwd(l_lrn, img); }
static ad_tensor *c_conv1d(void) { return fwd(l_conv1d, seq); }
static ad_tensor *c_conv2d(void) { return fwd(l_conv2d, img); }
static ad_tensor *c_dwconv(void) { return fwd(l_dwconv, img); }
static ad_tensor *c_dilconv(void) { return fwd(l_dilconv, simg); }
static ad_tensor *c_convt2d(void) { return fwd(l_convt2d, img); }
static ad_tensor *c_conv3d(void) { return fwd(l_conv3d, vol); }
static ad_tensor *c_convt1d(void) { return fwd(l_convt1d, seq); }
static ad_tensor *c_convt3d(void) { return fwd(l_convt3d, vol); }
static ad_tensor *c_maxp2d(void) { return fwd(l_maxp2d, img); }
static ad_tensor *c_avgp2d(void) { return fwd(l_avgp2d, img); }
static ad_tensor *c_maxp1d(void) { return fwd(l_maxp1d, seq); }
static ad_tensor *c_avgp1d(void) { return fwd(l_avgp1d, seq); }
static ad_tensor *c_maxp3d(void) { return fwd(l_maxp3d, vol); }
static ad_tensor *c_avgp3d(void) { return fwd(l_avgp3d, vol); }
static ad_tensor *c_aavg2d(void) { return fwd(l_aavg2d, img); }
static ad_tensor *c_amax2d(void) { return fwd(l_amax2d, img); }
static ad_tensor *c_aavg3d(void) { return fwd(l_aavg3d, vol); }
static ad_tensor *c_lpp2d(void) { return fwd(l_lpp2d, img); }
static ad_tensor *c_gap(void) { return fwd(l_gap, img); }
static ad_tensor *c_up_near(void) { return fwd(l_up_near, simg); }
static ad_tensor *c_up_bilin(void) { return fwd(l_up_bilin, simg); }
static ad_tensor *c_up_bicub(void) { return fwd(l_up_bicub, simg); }
static ad_tensor *c_pshuf(void) { return fwd(l_pshuf, img); }
static ad_tensor *c_punshuf(void) { return fwd(l_punshuf, img); }
static ad_tensor *c_unfold(void) { return fwd(l_unfold, simg); }
static ad_tensor *c_fold(void) {
  /* the inverse of unfold's output: [8, 64 * 9, 1024], simg's unfold (a
   * persistent copy, made at the first run and kept) */
  static ad_tensor *cols;
  if (!cols) {
    ad_tensor *u = nn_layer_forward(l_unfold, simg, false);
    cols = u ? ad_tensor_clone(ctx, u) : NULL;
    if (!cols || ad_tensor_set_requires_grad(cols, true) != AD_OK) die("fold's input");
    track(cols);
  }
  return fwd(l_fold, cols);
}
static ad_tensor *c_refl2d(void) { return fwd(l_refl2d, img); }
static ad_tensor *c_repl2d(void) { return fwd(l_repl2d, img); }
static ad_tensor *c_const2d(void) { return fwd(l_const2d, img); }
static ad_tensor *c_refl1d(void) { return fwd(l_refl1d, seq); }
static ad_tensor *c_refl3d(void) { return fwd(l_refl3d, vol); }
static ad_tensor *c_cos(void) { return nn_layer_forward2(l_cos, a, b); }
static ad_tensor *c_pdist(void) { return nn_layer_forward2(l_pdist, a, b); }
static ad_tensor *c_emb(void) { return fwd(l_emb, eidx); }
static ad_tensor *c_bag(void) { return nn_embedding_bag_forward(l_bagl, bag, offsets, 128, NULL); }
static ad_tensor *rnn(nn_layer *l) {
  return nn_rnn_forward(l, rx, NULL, NULL, NULL, 0, true, NULL, NULL);
}
static ad_tensor *rnn1(nn_layer *l) {
  return nn_rnn_forward(l, rx1, NULL, NULL, NULL, 0, true, NULL, NULL);
}
static ad_tensor *c_rnn(void) { return rnn(l_rnn); }
static ad_tensor *c_lstm(void) { return rnn(l_lstm); }
static ad_tensor *c_gru(void) { return rnn(l_gru); }
static ad_tensor *c_mha(void) {
  return nn_multihead_attention(l_mha, att, att, att, &(nn_mha_args){.training = true}, NULL);
}
static ad_tensor *c_mha_causal(void) {
  return nn_multihead_attention(l_mha, att, att, att,
                                &(nn_mha_args){.causal = true, .training = true}, NULL);
}
static ad_tensor *c_mha_kpm(void) {
  return nn_multihead_attention(l_mha, att, att, att,
                                &(nn_mha_args){.key_padding_mask = kpm, .training = true}, NULL);
}
static ad_tensor *c_conv_refl(void) { return fwd(l_conv_refl, img); }
static ad_tensor *c_conv_s2(void) { return fwd(l_conv_s2, img); }
static ad_tensor *c_conv_g4(void) { return fwd(l_conv_g4, img); }
static ad_tensor *c_avgp_ex(void) { return fwd(l_avgp_ex, img); }
static ad_tensor *c_bilstm(void) { return rnn(l_bilstm); }
static ad_tensor *c_enc_pre(void) {
  return nn_transformer_encoder_layer(l_enc_pre, att, &(nn_transformer_args){.training = true});
}
static ad_tensor *c_unpool(void) { return nn_max_unpool_forward(l_unpool, pooled, pool_idx, NULL); }
static ad_tensor *c_convt_k3(void) { return fwd(l_convt_k3, img); }
static ad_tensor *c_lstm_bf(void) { return rnn(l_lstm_bf); }
static ad_tensor *c_dilconv1d(void) { return fwd(l_dilconv1d, seq); }
static ad_tensor *c_dense3(void) { return fwd(l_dense3, att); }
static ad_tensor *c_ln2(void) { return fwd(l_ln2, att); }
static ad_tensor *c_dec(void) {
  return nn_transformer_decoder_layer(
      l_dec, att, att, &(nn_transformer_decoder_args){.causal = true, .training = true});
}
static ad_tensor *c_amax3d(void) { return fwd(l_amax3d, vol); }
static ad_tensor *c_bn3d(void) { return fwd(l_bn3d, vol); }
static ad_tensor *c_in1d(void) { return fwd(l_in1d, seq); }
static ad_tensor *c_repl3d(void) { return fwd(l_repl3d, vol); }
static ad_tensor *c_lpp1d(void) { return fwd(l_lpp1d, seq); }
static ad_tensor *c_amax1d(void) { return fwd(l_amax1d, seq); }
static ad_tensor *c_hardtanh(void) { return fwd(l_hardtanh, a); }
static ad_tensor *c_leaky(void) { return fwd(l_leaky, a); }
static ad_tensor *c_bag_sum(void) {
  return nn_embedding_bag_forward(l_bag_sum, bag, offsets, 128, NULL);
}
static ad_tensor *c_bag_max(void) {
  return nn_embedding_bag_forward(l_bag_max, bag, offsets, 128, NULL);
}
static ad_tensor *c_gru_bi(void) { return rnn(l_gru_bi); }
static ad_tensor *c_rnn_relu(void) { return rnn(l_rnn_relu); }
static ad_tensor *c_lstm_proj(void) { return rnn(l_lstm_proj); }
static ad_tensor *c_in3d(void) { return fwd(l_in3d, vol); }
static ad_tensor *c_drop1d(void) { return fwd(l_drop1d, seq); }
static ad_tensor *c_drop3d(void) { return fwd(l_drop3d, vol); }
static ad_tensor *c_ln16(void) { return fwd(l_ln16, sh16); }
static ad_tensor *c_conv1d_s2g4(void) { return fwd(l_conv1d_s2g4, seq); }
static ad_tensor *c_conv_circ(void) { return fwd(l_conv_circ, img); }
static ad_tensor *c_aavg1d(void) { return fwd(l_aavg1d, seq); }
static ad_tensor *c_zero2d(void) { return fwd(l_zero2d, img); }
static ad_tensor *c_const3d(void) { return fwd(l_const3d, vol); }
static ad_tensor *c_repl1d(void) { return fwd(l_repl1d, seq); }
static ad_tensor *c_enc(void) {
  return nn_transformer_encoder_layer(l_enc, att, &(nn_transformer_args){.training = true});
}
/* Losses, mean reduction. */
static ad_tensor *c_mse(void) { return nn_mse_loss(ctx, a, b, NN_MEAN); }
static ad_tensor *c_l1(void) { return nn_l1_loss(ctx, a, b, NN_MEAN); }
static ad_tensor *c_smooth_l1(void) { return nn_smooth_l1_loss(ctx, a, b, NN_MEAN); }
static ad_tensor *c_huber(void) { return nn_huber_loss(ctx, a, b, NN_MEAN); }
static ad_tensor *c_kl_div(void) { return nn_kl_div_loss(ctx, a, t01, NN_MEAN, false); }
static ad_tensor *c_gauss_nll(void) {
  return nn_gaussian_nll_loss(ctx, a, b, p, false, 1e-6, NN_MEAN);
}
static ad_tensor *c_poisson_nll(void) {
  return nn_poisson_nll_loss(ctx, a, cnt, true, false, 1e-8, NN_MEAN);
}
static ad_tensor *c_margin_rank(void) {
  return nn_margin_ranking_loss(ctx, a, b, tpm, 0.1, NN_MEAN);
}
static ad_tensor *c_hinge(void) { return nn_hinge_embedding_loss(ctx, a, tpm, 1.0, NN_MEAN); }
static ad_tensor *c_soft_margin(void) { return nn_soft_margin_loss(ctx, a, tpm, NN_MEAN); }
static ad_tensor *c_cos_emb(void) {
  return nn_cosine_embedding_loss(ctx, a, b, tpm_rows, 0.0, NN_MEAN);
}
static ad_tensor *c_triplet(void) {
  return nn_triplet_margin_loss(ctx, a, b, c, 1.0, 2.0, 1e-6, false, NN_MEAN);
}
static ad_tensor *c_multilabel(void) {
  return nn_multilabel_soft_margin_loss(ctx, a, t01, NULL, NN_MEAN);
}
static ad_tensor *c_multi_margin(void) {
  return nn_multi_margin_loss(ctx, logits, labels, 1, 1.0, NULL, NN_MEAN);
}
static ad_tensor *c_ctc(void) {
  return nn_ctc_loss(ctx, ctc_lp, ctc_tg, ctc_in_len, ctc_tg_len, 0, NN_MEAN, false);
}
static ad_tensor *c_bce(void) { return nn_bce_loss(ctx, prob, t01, NN_MEAN); }
static ad_tensor *c_bce_logits(void) { return nn_bce_with_logits_loss(ctx, a, t01, NN_MEAN); }
static ad_tensor *c_bce_logits_pw(void) {
  return nn_bce_with_logits_loss_ext(ctx, a, t01, NN_MEAN, &(nn_bce_opts){.pos_weight = pw});
}
/* four labels a sample, a pos_weight per label: rows of 4 */
static ad_tensor *c_bce_logits_pw4(void) {
  return nn_bce_with_logits_loss_ext(ctx, z4, t4, NN_MEAN, &(nn_bce_opts){.pos_weight = pw4});
}
static ad_tensor *c_ln64(void) { return fwd(l_ln64, sh64); }
static ad_tensor *c_ln256(void) { return fwd(l_ln256, sh256); }
static ad_tensor *c_ce(void) { return nn_cross_entropy_loss(ctx, logits, labels, NN_MEAN); }
static ad_tensor *c_nll(void) { return nn_nll_loss(ctx, logits, labels, NN_MEAN); }
static ad_tensor *c_nll_spatial(void) {
  return nn_nll_loss_ext(ctx, seg, seg_labels, NN_MEAN, &(nn_cross_entropy_opts){0});
}
static ad_tensor *c_ce_spatial_wi(void) {
  nn_cross_entropy_opts o = {.weight = cw21, .ignore = true, .ignore_index = 0};
  return nn_cross_entropy_loss_ext(ctx, seg, seg_labels, NN_MEAN, &o);
}
static ad_tensor *c_ce_spatial(void) {
  return nn_cross_entropy_loss_ext(ctx, seg, seg_labels, NN_MEAN, &(nn_cross_entropy_opts){0});
}
static ad_tensor *c_ce_smooth(void) {
  nn_cross_entropy_opts o = {.label_smoothing = 0.1};
  return nn_cross_entropy_loss_ext(ctx, logits, labels, NN_MEAN, &o);
}
static ad_tensor *c_ce_weight(void) {
  nn_cross_entropy_opts o = {.weight = cw};
  return nn_cross_entropy_loss_ext(ctx, logits, labels, NN_MEAN, &o);
}
static ad_tensor *c_ce_probs(void) { return nn_cross_entropy_loss(ctx, logits, probs, NN_MEAN); }
static ad_tensor *c_dense_b1(void) { return fwd(l_dense, row1); }
static ad_tensor *c_dense1(void) { return fwd(l_dense1, a); }
static ad_tensor *c_lstm_b1(void) { return rnn1(l_lstm); }
static ad_tensor *c_gru_b1(void) { return rnn1(l_gru); }
static ad_tensor *c_conv1x1(void) { return fwd(l_conv1x1, img); }
static ad_tensor *c_stem(void) { return fwd(l_stem, rgb); }
static ad_tensor *c_maxp_s1(void) { return fwd(l_maxp_s1, img); }
static ad_tensor *c_up_tri(void) { return fwd(l_up_tri, vol); }
static ad_tensor *c_up_lin(void) { return fwd(l_up_lin, seq); }
static ad_tensor *c_up_bilin_ac(void) { return fwd(l_up_bilin_ac, simg); }
static ad_tensor *c_prelu64(void) { return fwd(l_prelu64, img); }
static ad_tensor *c_gn32(void) { return fwd(l_gn32, img); }
static ad_tensor *c_bn1d3(void) { return fwd(l_bn1d3, seq); }
static ad_tensor *c_conv_b1(void) { return fwd(l_conv2d, img1); }
static ad_tensor *c_dense_nb(void) { return fwd(l_dense_nb, a); }
static ad_tensor *c_emb_pad(void) { return fwd(l_emb_pad, eidx); }
static ad_tensor *c_mha_fmask(void) {
  return nn_multihead_attention(l_mha, att, att, att,
                                &(nn_mha_args){.attn_mask = fmask, .training = true}, NULL);
}
static ad_tensor *c_convt_g4(void) { return fwd(l_convt_g4, img); }
static ad_tensor *c_gn1(void) { return fwd(l_gn1, img); }
static ad_tensor *c_in2d_aff(void) { return fwd(l_in2d_aff, img); }
static ad_tensor *c_gru2(void) { return rnn(l_gru2); }
static ad_tensor *c_seq_ce(void) {
  nn_sequence_ce_opts o = {.ignore = true, .ignore_index = 0, .class_last = true};
  return nn_sequence_cross_entropy_loss(ctx, seq_lg, seq_lab, NN_MEAN, &o);
}

static const struct {
  const char *name;
  ad_tensor *(*fn)(void);
} cases[] = {
    {"dense", c_dense},
    {"bilinear", c_bilinear},
    {"silu", c_silu},
    {"elu", c_elu},
    {"selu", c_selu},
    {"celu", c_celu},
    {"mish", c_mish},
    {"hardswish", c_hardswish},
    {"hardsigmoid", c_hardsigmoid},
    {"logsigmoid", c_logsigmoid},
    {"softsign", c_softsign},
    {"tanhshrink", c_tanhshrink},
    {"relu6", c_relu6},
    {"prelu", c_prelu},
    {"rrelu", c_rrelu},
    {"softshrink", c_softshrink},
    {"hardshrink", c_hardshrink},
    {"threshold", c_threshold},
    {"softmin", c_softmin},
    {"softmax2d", c_softmax2d},
    {"glu", c_glu},
    {"dropout", c_dropout},
    {"dropout2d", c_dropout2d},
    {"batch_norm1d", c_bn1d},
    {"batch_norm2d", c_bn2d},
    {"batch_norm2d_eval", c_bn2d_eval},
    {"group_norm", c_gn},
    {"instance_norm2d", c_in2d},
    {"layer_norm", c_ln},
    {"local_response_norm", c_lrn},
    {"conv1d", c_conv1d},
    {"conv2d", c_conv2d},
    {"conv2d_depthwise", c_dwconv},
    {"conv2d_dilated", c_dilconv},
    {"conv_transpose2d", c_convt2d},
    {"conv3d", c_conv3d},
    {"conv_transpose1d", c_convt1d},
    {"conv_transpose3d", c_convt3d},
    {"max_pool2d", c_maxp2d},
    {"avg_pool2d", c_avgp2d},
    {"max_pool1d", c_maxp1d},
    {"avg_pool1d", c_avgp1d},
    {"max_pool3d", c_maxp3d},
    {"avg_pool3d", c_avgp3d},
    {"adaptive_avg_pool2d", c_aavg2d},
    {"adaptive_max_pool2d", c_amax2d},
    {"adaptive_avg_pool3d", c_aavg3d},
    {"lp_pool2d", c_lpp2d},
    {"global_avg_pool2d", c_gap},
    {"upsample_nearest", c_up_near},
    {"upsample_bilinear", c_up_bilin},
    {"upsample_bicubic", c_up_bicub},
    {"pixel_shuffle", c_pshuf},
    {"pixel_unshuffle", c_punshuf},
    {"unfold", c_unfold},
    {"fold", c_fold},
    {"reflection_pad2d", c_refl2d},
    {"replication_pad2d", c_repl2d},
    {"constant_pad2d", c_const2d},
    {"reflection_pad1d", c_refl1d},
    {"reflection_pad3d", c_refl3d},
    {"cosine_similarity", c_cos},
    {"pairwise_distance", c_pdist},
    {"embedding", c_emb},
    {"embedding_bag", c_bag},
    {"rnn_tanh", c_rnn},
    {"lstm", c_lstm},
    {"gru", c_gru},
    {"multihead_attention", c_mha},
    {"multihead_attention_causal", c_mha_causal},
    {"multihead_attention_key_padding", c_mha_kpm},
    {"transformer_encoder", c_enc},
    {"conv2d_reflect", c_conv_refl},
    {"conv2d_stride2", c_conv_s2},
    {"conv2d_groups4", c_conv_g4},
    {"avg_pool2d_exclude_pad_ceil", c_avgp_ex},
    {"lstm_2_layers_bidirectional", c_bilstm},
    {"transformer_encoder_norm_first", c_enc_pre},
    {"max_unpool2d", c_unpool},
    {"conv_transpose2d_k3s2p1op1", c_convt_k3},
    {"lstm_batch_first", c_lstm_bf},
    {"conv1d_dilated", c_dilconv1d},
    {"dense_3d", c_dense3},
    {"layer_norm_two_dims", c_ln2},
    {"transformer_decoder_causal", c_dec},
    {"adaptive_max_pool3d", c_amax3d},
    {"batch_norm3d", c_bn3d},
    {"instance_norm1d", c_in1d},
    {"replication_pad3d", c_repl3d},
    {"lp_pool1d", c_lpp1d},
    {"adaptive_max_pool1d", c_amax1d},
    {"hardtanh", c_hardtanh},
    {"leaky_relu", c_leaky},
    {"embedding_bag_sum", c_bag_sum},
    {"embedding_bag_max", c_bag_max},
    {"gru_bidirectional", c_gru_bi},
    {"rnn_relu", c_rnn_relu},
    {"lstm_proj_size", c_lstm_proj},
    {"instance_norm3d", c_in3d},
    {"dropout1d", c_drop1d},
    {"dropout3d", c_drop3d},
    {"layer_norm_16", c_ln16},
    {"conv1d_stride2_groups4", c_conv1d_s2g4},
    {"conv2d_circular", c_conv_circ},
    {"adaptive_avg_pool1d", c_aavg1d},
    {"zero_pad2d", c_zero2d},
    {"constant_pad3d", c_const3d},
    {"replication_pad1d", c_repl1d},
    {"mse_loss", c_mse},
    {"l1_loss", c_l1},
    {"smooth_l1_loss", c_smooth_l1},
    {"huber_loss", c_huber},
    {"kl_div_loss", c_kl_div},
    {"gaussian_nll_loss", c_gauss_nll},
    {"poisson_nll_loss", c_poisson_nll},
    {"margin_ranking_loss", c_margin_rank},
    {"hinge_embedding_loss", c_hinge},
    {"soft_margin_loss", c_soft_margin},
    {"cosine_embedding_loss", c_cos_emb},
    {"triplet_margin_loss", c_triplet},
    {"multilabel_soft_margin_loss", c_multilabel},
    {"multi_margin_loss", c_multi_margin},
    {"ctc_loss", c_ctc},
    {"bce_loss", c_bce},
    {"bce_with_logits_loss", c_bce_logits},
    {"bce_with_logits_pos_weight", c_bce_logits_pw},
    {"cross_entropy_loss", c_ce},
    {"nll_loss", c_nll},
    {"cross_entropy_label_smoothing", c_ce_smooth},
    {"cross_entropy_class_weight", c_ce_weight},
    {"cross_entropy_prob_targets", c_ce_probs},
    {"cross_entropy_spatial", c_ce_spatial},
    {"cross_entropy_spatial_weight_ignore", c_ce_spatial_wi},
    {"nll_loss_spatial", c_nll_spatial},
    {"dense_batch1", c_dense_b1},
    {"dense_1_output", c_dense1},
    {"lstm_batch1", c_lstm_b1},
    {"gru_batch1", c_gru_b1},
    {"conv2d_1x1", c_conv1x1},
    {"conv2d_7x7_stride2", c_stem},
    {"max_pool2d_k3_s1", c_maxp_s1},
    {"upsample_trilinear", c_up_tri},
    {"upsample_linear", c_up_lin},
    {"upsample_bilinear_align_corners", c_up_bilin_ac},
    {"prelu_channels", c_prelu64},
    {"group_norm_32", c_gn32},
    {"batch_norm1d_3d", c_bn1d3},
    {"sequence_cross_entropy", c_seq_ce},
    {"conv2d_batch1", c_conv_b1},
    {"dense_no_bias", c_dense_nb},
    {"embedding_padding_idx", c_emb_pad},
    {"multihead_attention_float_mask", c_mha_fmask},
    {"conv_transpose2d_groups4", c_convt_g4},
    {"group_norm_1", c_gn1},
    {"instance_norm2d_affine", c_in2d_aff},
    {"gru_2_layers", c_gru2},
    {"bce_logits_pw4", c_bce_logits_pw4},
    {"layer_norm_64", c_ln64},
    {"layer_norm_256", c_ln256},
};

static void clear_grads(void) {
  for (int g = 0; g < n_grads; g++) ad_tensor_zero_grad(grads[g]);
}

int main(int argc, char **argv) {
  scan_opts o;
  if (!scan_parse(argc, argv, "layerscan", &o)) return 2;
  dtype = o.dtype;
  ctx = ad_ctx_new();
  if (!ctx || !bench_set_threads((int)o.threads)) {
    fprintf(stderr, "layerscan: no context or threads\n");
    return 1;
  }
  ad_rng_seed(&rng, 1);
  make_inputs();
  make_layers();
  scan_print_header("layerscan", &o);
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    if (o.filter && !strstr(cases[k].name, o.filter)) continue;
    if (!scan_case(ctx, "layerscan", cases[k].name, cases[k].fn, clear_grads, &o)) return 1;
  }
  ad_ctx_free(ctx);
  return 0;
}
