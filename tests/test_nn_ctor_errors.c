/* test_nn_ctor_errors.c: a constructor that fails making one of its
 * tensors names itself, then the tensor and its shape, then the engine's
 * message, and keeps the engine's status:
 *   "nn_dense_new: weight [2097152, 2097152]: zeros: shape [...] is too large: ..."
 *   "nn_dense_new: weight [131072, 131072]: out of memory allocating 68719476736 bytes"
 * Sizes above the engine's limit of 2^40 elements for every constructor
 * that makes tensors; sizes below it that no allocation can hold for a
 * sample, under an allocator that refuses any block of 1 GiB or more (no
 * real huge allocation, also under ASan); the transformer stacks, whose
 * tensors are copies of a layer already made, with an allocator refusing
 * request k. And nn_error_prefix itself (nn_internal.h). */
#include "nn.h"
#include "nn_internal.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <string.h>

#define E21 (INT64_C(1) << 21)

/* c's error has status st and begins with want (then ": "), and, when
 * also is not NULL, contains it; clears it. */
static void expect_prefixed(ad_ctx *c, ad_status st, const char *want, const char *also) {
  const char *m = ad_last_error(c);
  cr_assert_eq(ad_last_status(c), st, "%s: status %s (%s)", want, ad_status_str(ad_last_status(c)),
               m);
  size_t n = strlen(want);
  cr_assert(strncmp(m, want, n) == 0 && m[n] == ':' && m[n + 1] == ' ',
            "message \"%s\" does not begin with \"%s: \"", m, want);
  if (also) cr_assert_not_null(strstr(m + n, also), "message \"%s\" lacks \"%s\"", m, also);
  ad_clear_error(c);
}

/* ------------------------------------------- sizes above the element limit */

typedef struct ctor_case {
  const char *want; /* the message's beginning: constructor, tensor, shape */
  nn_layer *(*make)(ad_ctx *c, ad_rng *r);
} ctor_case;

static nn_layer *mk_dense(ad_ctx *c, ad_rng *r) { return nn_dense_new(c, E21, E21, r, NULL); }
static nn_layer *mk_prelu(ad_ctx *c, ad_rng *r) {
  (void)r;
  return nn_prelu_new(c, INT64_C(1) << 41, 0.25, AD_F32);
}
static nn_layer *mk_bn1(ad_ctx *c, ad_rng *r) {
  (void)r;
  return nn_batch_norm1d_new(c, INT64_C(1) << 41, NULL);
}
static nn_layer *mk_bn2(ad_ctx *c, ad_rng *r) {
  (void)r;
  return nn_batch_norm2d_new(c, INT64_C(1) << 41, &(nn_batch_norm_opts){.no_affine = true});
}
static nn_layer *mk_bn3(ad_ctx *c, ad_rng *r) {
  (void)r;
  return nn_batch_norm3d_new(c, INT64_C(1) << 41, NULL);
}
static nn_layer *mk_gn(ad_ctx *c, ad_rng *r) {
  (void)r;
  return nn_group_norm_new(c, 1, INT64_C(1) << 41, NULL);
}
static nn_layer *mk_in1(ad_ctx *c, ad_rng *r) {
  (void)r;
  return nn_instance_norm1d_new(c, INT64_C(1) << 41, &(nn_instance_norm_opts){.affine = true});
}
static nn_layer *mk_in2(ad_ctx *c, ad_rng *r) {
  (void)r;
  return nn_instance_norm2d_new(c, INT64_C(1) << 41,
                                &(nn_instance_norm_opts){.track_running_stats = true});
}
static nn_layer *mk_in3(ad_ctx *c, ad_rng *r) {
  (void)r;
  return nn_instance_norm3d_new(c, INT64_C(1) << 41, &(nn_instance_norm_opts){.affine = true});
}
static nn_layer *mk_conv2d(ad_ctx *c, ad_rng *r) {
  return nn_conv2d_new(c, INT64_C(1) << 20, INT64_C(1) << 20, 3, 3, r, NULL);
}
static nn_layer *mk_conv2d_ext(ad_ctx *c, ad_rng *r) {
  return nn_conv2d_new_ext(c, INT64_C(1) << 20, INT64_C(1) << 20, 3, 3, r, NULL);
}
static nn_layer *mk_convt2d(ad_ctx *c, ad_rng *r) {
  return nn_conv_transpose2d_new(c, INT64_C(1) << 20, INT64_C(1) << 20, 3, 3, r, NULL);
}
static nn_layer *mk_convt2d_ext(ad_ctx *c, ad_rng *r) {
  return nn_conv_transpose2d_new_ext(c, INT64_C(1) << 20, INT64_C(1) << 20, 3, 3, r, NULL);
}
static nn_layer *mk_conv1d(ad_ctx *c, ad_rng *r) { return nn_conv1d_new(c, E21, E21, 1, r, NULL); }
static nn_layer *mk_conv1d_ext(ad_ctx *c, ad_rng *r) {
  return nn_conv1d_new_ext(c, E21, E21, 1, r, NULL);
}
static nn_layer *mk_conv3d(ad_ctx *c, ad_rng *r) {
  return nn_conv3d_new(c, E21, E21, 1, 1, 1, r, NULL);
}
static nn_layer *mk_convt3d(ad_ctx *c, ad_rng *r) {
  return nn_conv_transpose3d_new(c, E21, E21, 1, 1, 1, r, NULL);
}
static nn_layer *mk_convt1d(ad_ctx *c, ad_rng *r) {
  return nn_conv_transpose1d_new(c, E21, E21, 1, r, NULL);
}
static nn_layer *mk_bilinear(ad_ctx *c, ad_rng *r) {
  return nn_bilinear_new(c, E21, E21, 1, true, AD_F32, r);
}
static nn_layer *mk_rnn(ad_ctx *c, ad_rng *r) {
  /* weight_ih_l0 [2^21, 1] fits; weight_hh_l0 does not */
  return nn_rnn_new(c, NN_RNN_TANH, 1, E21, r, NULL);
}
static nn_layer *mk_rnn_ext(ad_ctx *c, ad_rng *r) {
  /* weight_ih_l0 fits; weight_hh_l0 [3 * 2^21, 2^21] does not */
  return nn_rnn_new_ext(c, NN_RNN_GRU, 1, E21, r, NULL);
}
static nn_layer *mk_lstm(ad_ctx *c, ad_rng *r) {
  return nn_lstm_new(c, INT64_C(1) << 30, INT64_C(1) << 30, r, NULL);
}
static nn_layer *mk_gru(ad_ctx *c, ad_rng *r) { return nn_gru_new(c, E21, E21, r, NULL); }
static nn_layer *mk_emb(ad_ctx *c, ad_rng *r) {
  return nn_embedding_new(c, INT64_C(1) << 40, INT64_C(1) << 30, r, NULL);
}
static nn_layer *mk_emb_ext(ad_ctx *c, ad_rng *r) {
  return nn_embedding_new_ext(c, E21, E21, r, NULL);
}
static nn_layer *mk_emb_bag(ad_ctx *c, ad_rng *r) {
  return nn_embedding_bag_new(c, E21, E21, r, NULL);
}
static nn_layer *mk_ln(ad_ctx *c, ad_rng *r) {
  (void)r;
  return nn_layer_norm_new(c, 2, (int64_t[]){E21, E21}, NULL);
}
static nn_layer *mk_mha(ad_ctx *c, ad_rng *r) {
  return nn_multihead_attention_new(c, E21, 1, r, NULL);
}
static nn_layer *mk_mha_ext(ad_ctx *c, ad_rng *r) {
  /* separate projections: q_proj_weight [512, 512] fits, k's does not */
  return nn_multihead_attention_new_ext(c, 512, 8, r, &(nn_mha_opts_ext){.kdim = INT64_C(1) << 32});
}
static nn_layer *mk_xf_enc(ad_ctx *c, ad_rng *r) {
  return nn_transformer_encoder_layer_new(c, E21, 1, r, NULL);
}
static nn_layer *mk_xf_enc_ff(ad_ctx *c, ad_rng *r) {
  return nn_transformer_encoder_layer_new(
      c, 512, 8, r, &(nn_transformer_opts){.dim_feedforward = INT64_C(1) << 32});
}
static nn_layer *mk_xf_dec(ad_ctx *c, ad_rng *r) {
  return nn_transformer_decoder_layer_new(c, E21, 1, r, NULL);
}
static nn_layer *mk_xf(ad_ctx *c, ad_rng *r) {
  return nn_transformer_new(c, r, &(nn_transformer_model_opts){.d_model = E21, .nhead = 1});
}
static nn_layer *mk_xf_ff(ad_ctx *c, ad_rng *r) {
  return nn_transformer_new(c, r,
                            &(nn_transformer_model_opts){
                                .d_model = 512, .nhead = 8, .dim_feedforward = INT64_C(1) << 32});
}

static const ctor_case too_large[] = {
    {"nn_dense_new: weight [2097152, 2097152]", mk_dense},
    {"nn_prelu_new: weight [2199023255552]", mk_prelu},
    {"nn_batch_norm1d_new: weight [2199023255552]", mk_bn1},
    {"nn_batch_norm2d_new: running_mean [2199023255552]", mk_bn2},
    {"nn_batch_norm3d_new: weight [2199023255552]", mk_bn3},
    {"nn_group_norm_new: weight [2199023255552]", mk_gn},
    {"nn_instance_norm1d_new: weight [2199023255552]", mk_in1},
    {"nn_instance_norm2d_new: running_mean [2199023255552]", mk_in2},
    {"nn_instance_norm3d_new: weight [2199023255552]", mk_in3},
    {"nn_conv2d_new: weight [1048576, 1048576, 3, 3]", mk_conv2d},
    {"nn_conv2d_new_ext: weight [1048576, 1048576, 3, 3]", mk_conv2d_ext},
    {"nn_conv_transpose2d_new: weight [1048576, 1048576, 3, 3]", mk_convt2d},
    {"nn_conv_transpose2d_new_ext: weight [1048576, 1048576, 3, 3]", mk_convt2d_ext},
    {"nn_conv1d_new: weight [2097152, 2097152, 1]", mk_conv1d},
    {"nn_conv1d_new_ext: weight [2097152, 2097152, 1]", mk_conv1d_ext},
    {"nn_conv3d_new: weight [2097152, 2097152, 1, 1, 1]", mk_conv3d},
    {"nn_conv_transpose3d_new: weight [2097152, 2097152, 1, 1, 1]", mk_convt3d},
    {"nn_conv_transpose1d_new: weight [2097152, 2097152, 1]", mk_convt1d},
    {"nn_bilinear_new: weight [1, 2097152, 2097152]", mk_bilinear},
    {"nn_rnn_new: weight_hh_l0 [2097152, 2097152]", mk_rnn},
    {"nn_rnn_new_ext: weight_hh_l0 [6291456, 2097152]", mk_rnn_ext},
    {"nn_lstm_new: weight_ih_l0 [4294967296, 1073741824]", mk_lstm},
    {"nn_gru_new: weight_ih_l0 [6291456, 2097152]", mk_gru},
    {"nn_embedding_new: weight [1099511627776, 1073741824]", mk_emb},
    {"nn_embedding_new_ext: weight [2097152, 2097152]", mk_emb_ext},
    {"nn_embedding_bag_new: weight [2097152, 2097152]", mk_emb_bag},
    {"nn_layer_norm_new: weight [2097152, 2097152]", mk_ln},
    {"nn_multihead_attention_new: in_proj_weight [6291456, 2097152]", mk_mha},
    {"nn_multihead_attention_new_ext: k_proj_weight [512, 4294967296]", mk_mha_ext},
    {"nn_transformer_encoder_layer_new: self_attn.in_proj_weight [6291456, 2097152]", mk_xf_enc},
    {"nn_transformer_encoder_layer_new: linear1.weight [4294967296, 512]", mk_xf_enc_ff},
    {"nn_transformer_decoder_layer_new: self_attn.in_proj_weight [6291456, 2097152]", mk_xf_dec},
    {"nn_transformer_new: encoder.layers.0.self_attn.in_proj_weight [6291456, 2097152]", mk_xf},
    {"nn_transformer_new: encoder.layers.0.linear1.weight [4294967296, 512]", mk_xf_ff},
};

/* A size above the limit: the constructor's name, the tensor and its
 * shape, then the engine's message, with its status; nothing leaked. */
Test(nn_ctor_errors, too_large_names_constructor_and_tensor) {
  ad_ctx *c = ad_ctx_new();
  cr_assert_not_null(c);
  ad_rng r;
  ad_rng_seed(&r, 1);
  for (size_t i = 0; i < sizeof too_large / sizeof *too_large; i++) {
    const ctor_case *k = &too_large[i];
    size_t live = ad_ctx_live_tensors(c);
    nn_layer *l = k->make(c, &r);
    cr_assert_null(l, "%s: made", k->want);
    expect_prefixed(c, AD_ERR_ARG, k->want, "is too large");
    cr_assert_eq(ad_ctx_live_tensors(c), live, "%s: tensors leaked", k->want);
  }
  ad_ctx_free(c);
}

/* The message after the prefix is the engine's own, word for word. */
Test(nn_ctor_errors, engine_message_follows_unchanged) {
  ad_ctx *c = ad_ctx_new();
  cr_assert_not_null(c);
  int64_t shape[2] = {E21, E21};
  cr_assert_null(ad_zeros(c, AD_F32, 2, shape));
  char engine[512];
  snprintf(engine, sizeof engine, "%s", ad_last_error(c));
  ad_status st = ad_last_status(c);
  ad_clear_error(c);
  ad_rng r;
  ad_rng_seed(&r, 1);
  cr_assert_null(nn_dense_new(c, E21, E21, &r, NULL));
  char want[700];
  snprintf(want, sizeof want, "nn_dense_new: weight [2097152, 2097152]: %s", engine);
  cr_assert_str_eq(ad_last_error(c), want);
  cr_assert_eq(ad_last_status(c), st);
  ad_ctx_free(c);
}

/* nn_model_add_param names itself and the parameter. */
Test(nn_ctor_errors, model_add_param) {
  ad_ctx *c = ad_ctx_new();
  cr_assert_not_null(c);
  nn_model *m = nn_sequential_new(c);
  cr_assert_not_null(m, "%s", ad_last_error(c));
  int64_t shape[3] = {E21, E21, 2};
  cr_assert_null(
      nn_model_add_param(m, "scale", AD_F64, 3, shape, nn_init_make(NN_INIT_ZEROS, 0, 0), NULL));
  expect_prefixed(c, AD_ERR_ARG, "nn_model_add_param: scale [2097152, 2097152, 2]", "is too large");
  nn_model_free(m);
  ad_ctx_free(c);
}

/* ------------------------------------------------ sizes no block can hold */

/* An allocator that refuses every block of 1 GiB or more (and counts the
 * refusals), so that a tensor of a size below the element limit fails as
 * out of memory without a real huge allocation. */
static void *small_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (nsize >= (size_t)1 << 30) {
    ++*(long *)ud;
    return NULL;
  }
  void *p = aligned_alloc(64, (nsize + 63) & ~(size_t)63);
  if (p && ptr) {
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    free(ptr);
  }
  return p;
}

static nn_layer *oom_dense(ad_ctx *c, ad_rng *r) {
  return nn_dense_new(c, INT64_C(1) << 17, INT64_C(1) << 17, r, NULL);
}
static nn_layer *oom_conv2d(ad_ctx *c, ad_rng *r) {
  return nn_conv2d_new(c, INT64_C(1) << 14, INT64_C(1) << 14, 3, 3, r, NULL);
}
static nn_layer *oom_emb(ad_ctx *c, ad_rng *r) {
  return nn_embedding_new(c, INT64_C(1) << 20, 1024, r, NULL);
}
static nn_layer *oom_lstm(ad_ctx *c, ad_rng *r) {
  return nn_lstm_new(c, INT64_C(1) << 14, INT64_C(1) << 14, r, NULL);
}
static nn_layer *oom_bn(ad_ctx *c, ad_rng *r) {
  (void)r;
  return nn_batch_norm2d_new(c, INT64_C(1) << 30, NULL);
}
static nn_layer *oom_bn_buf(ad_ctx *c, ad_rng *r) {
  (void)r;
  return nn_batch_norm1d_new(c, INT64_C(1) << 30, &(nn_batch_norm_opts){.no_affine = true});
}
static nn_layer *oom_mha(ad_ctx *c, ad_rng *r) {
  return nn_multihead_attention_new(c, INT64_C(1) << 15, 8, r, NULL);
}
static nn_layer *oom_xf_enc(ad_ctx *c, ad_rng *r) {
  return nn_transformer_encoder_layer_new(c, INT64_C(1) << 15, 8, r, NULL);
}
static nn_layer *oom_xf_dec_ff(ad_ctx *c, ad_rng *r) {
  return nn_transformer_decoder_layer_new(
      c, 16, 2, r, &(nn_transformer_opts){.dim_feedforward = INT64_C(1) << 26});
}
static nn_layer *oom_xf(ad_ctx *c, ad_rng *r) {
  return nn_transformer_new(c, r, &(nn_transformer_model_opts){.d_model = INT64_C(1) << 15});
}

static const ctor_case no_memory[] = {
    {"nn_dense_new: weight [131072, 131072]", oom_dense},
    {"nn_conv2d_new: weight [16384, 16384, 3, 3]", oom_conv2d},
    {"nn_embedding_new: weight [1048576, 1024]", oom_emb},
    {"nn_lstm_new: weight_ih_l0 [65536, 16384]", oom_lstm},
    {"nn_batch_norm2d_new: weight [1073741824]", oom_bn},
    {"nn_batch_norm1d_new: running_mean [1073741824]", oom_bn_buf},
    {"nn_multihead_attention_new: in_proj_weight [98304, 32768]", oom_mha},
    {"nn_transformer_encoder_layer_new: self_attn.in_proj_weight [98304, 32768]", oom_xf_enc},
    {"nn_transformer_decoder_layer_new: linear1.weight [67108864, 16]", oom_xf_dec_ff},
    {"nn_transformer_new: encoder.layers.0.self_attn.in_proj_weight [98304, 32768]", oom_xf},
};

Test(nn_ctor_errors, out_of_memory_names_constructor_and_tensor) {
  long refused = 0;
  ad_ctx *c = ad_ctx_new_with_alloc(small_alloc, &refused);
  cr_assert_not_null(c);
  ad_rng r;
  ad_rng_seed(&r, 1);
  for (size_t i = 0; i < sizeof no_memory / sizeof *no_memory; i++) {
    const ctor_case *k = &no_memory[i];
    long before = refused;
    size_t live = ad_ctx_live_tensors(c);
    cr_assert_null(k->make(c, &r), "%s: made", k->want);
    cr_assert_eq(refused, before + 1, "%s: %ld blocks refused", k->want, refused - before);
    expect_prefixed(c, AD_ERR_OOM, k->want, ": out of memory allocating ");
    cr_assert_eq(ad_ctx_live_tensors(c), live, "%s: tensors leaked", k->want);
  }
  /* the whole message, as the issue asked for it */
  cr_assert_null(oom_dense(c, &r));
  cr_assert_str_eq(ad_last_error(c),
                   "nn_dense_new: weight [131072, 131072]: out of memory allocating 68719476736 "
                   "bytes");
  ad_ctx_free(c);
}

/* The transformer stacks copy a layer made already: each refused request
 * of nn_transformer_encoder_new / decoder_new fails with AD_ERR_OOM and a
 * message beginning with the constructor's name; those of a copy's
 * tensors name its path ("layers.2.linear1.weight [16, 8]"), those of the
 * final norm "norm.weight [8]". */
static void stack_sweep(bool dec) {
  const char *fn = dec ? "nn_transformer_decoder_new" : "nn_transformer_encoder_new";
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  cr_assert_not_null(c);
  ad_rng r;
  ad_rng_seed(&r, 1);
  nn_transformer_opts o = {.dim_feedforward = 16};
  bool copy = false, norm = false;
  for (long k = 0;; k++) {
    test_alloc_grant_all(&ta);
    nn_layer *layer = dec ? nn_transformer_decoder_layer_new(c, 8, 2, &r, &o)
                          : nn_transformer_encoder_layer_new(c, 8, 2, &r, &o);
    cr_assert_not_null(layer, "%s", ad_last_error(c));
    ta.refuse = TEST_ALLOC_REFUSE_ONLY;
    ta.fail_at = ta.requests + k;
    nn_transformer_stack_opts so = {.norm = true};
    nn_layer *s =
        dec ? nn_transformer_decoder_new(layer, 3, &so) : nn_transformer_encoder_new(layer, 3, &so);
    if (s) {
      cr_assert_eq(ta.refused, k, "request %ld refused but the stack was made", k);
      nn_layer_free(s);
      break;
    }
    cr_assert_eq(ad_last_status(c), AD_ERR_OOM, "request %ld: %s", k, ad_last_error(c));
    copy = copy || strstr(ad_last_error(c), ": layers.2.linear1.weight [16, 8]: ");
    norm = norm || strstr(ad_last_error(c), ": norm.weight [8]: ");
    expect_prefixed(c, AD_ERR_OOM, fn, "out of memory");
    cr_assert_eq(ad_ctx_live_tensors(c), 0, "request %ld: tensors leaked", k);
  }
  cr_assert(copy && norm, "no refusal named a copy's tensor (%d) or the norm's (%d)", copy, norm);
  ad_ctx_free(c);
}

Test(nn_ctor_errors, encoder_stack_sweep) { stack_sweep(false); }
Test(nn_ctor_errors, decoder_stack_sweep) { stack_sweep(true); }

/* The optimizers' constructors make a state tensor of each parameter's
 * shape: each refused request fails with AD_ERR_OOM and a message
 * beginning with the public constructor's name, leaking nothing; those
 * of a state tensor name it ("adam.m.0.weight [4,3]"). */
static nn_optimizer *sweep_adam(nn_params *p) { return nn_adam_new(p, 0.01); }
static nn_optimizer *sweep_sgd(nn_params *p) { return nn_sgd_new(p, 0.1, 0.9, false, 0); }
static nn_optimizer *sweep_ext(nn_params *p) {
  nn_opt_config_ext x = nn_opt_defaults_ext(NN_OPT_RMSPROP, 0.01);
  return nn_optimizer_new_ext(p, &x);
}

static void optimizer_sweep(nn_optimizer *(*make)(nn_params *), const char *fn, const char *state) {
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  cr_assert_not_null(c);
  ad_rng r;
  ad_rng_seed(&r, 1);
  nn_model *m = nn_sequential_new(c);
  cr_assert_eq(nn_model_add(m, nn_dense_new(c, 3, 4, &r, NULL)), AD_OK, "%s", ad_last_error(c));
  size_t live = ad_ctx_live_tensors(c);
  bool named = false;
  for (long k = 0;; k++) {
    ta.refuse = TEST_ALLOC_REFUSE_ONLY;
    ta.fail_at = ta.requests + k;
    long before = ta.refused;
    nn_optimizer *o = make(nn_model_params(m));
    test_alloc_grant_all(&ta);
    if (o) {
      cr_assert_eq(ta.refused, before, "%s: request %ld refused but the optimizer was made", fn, k);
      nn_optimizer_free(o);
      break;
    }
    named = named || strstr(ad_last_error(c), state);
    expect_prefixed(c, AD_ERR_OOM, fn, "out of memory");
    cr_assert_eq(ad_ctx_live_tensors(c), live, "%s: request %ld: tensors leaked", fn, k);
  }
  cr_assert(named, "%s: no refusal named the state tensor %s", fn, state);
  nn_model_free(m);
  ad_ctx_free(c);
}

Test(nn_ctor_errors, optimizer_sweeps) {
  optimizer_sweep(sweep_adam, "nn_adam_new", ": adam.m.0.weight [4,3]: ");
  optimizer_sweep(sweep_sgd, "nn_sgd_new", ": sgd.momentum.0.weight [4,3]: ");
  optimizer_sweep(sweep_ext, "nn_optimizer_new_ext", ": rmsprop.square_avg.0.weight [4,3]: ");
}

/* ------------------------------------------------------- nn_error_prefix */

Test(nn_ctor_errors, prefix_keeps_status_and_message) {
  ad_ctx *c = ad_ctx_new();
  cr_assert_not_null(c);
  nn_error_prefix(c, "nn_x_new"); /* no error: nothing */
  cr_assert_eq(ad_last_status(c), AD_OK);
  cr_assert_str_eq(ad_last_error(c), "");
  nn_error_prefix(NULL, "nn_x_new"); /* no context: nothing, no crash */
  ad_set_error(c, AD_ERR_NAN, "op: bad %d", 7);
  nn_error_prefix(c, "nn_%s_new: w", "x");
  cr_assert_eq(ad_last_status(c), AD_ERR_NAN);
  cr_assert_str_eq(ad_last_error(c), "nn_x_new: w: op: bad 7");
  /* said already: not again; a longer name is not the same one */
  nn_error_prefix(c, "nn_x_new: w");
  cr_assert_str_eq(ad_last_error(c), "nn_x_new: w: op: bad 7");
  nn_error_prefix(c, "nn_x_new");
  cr_assert_str_eq(ad_last_error(c), "nn_x_new: w: op: bad 7");
  nn_error_prefix(c, "nn_x_ne");
  cr_assert_str_eq(ad_last_error(c), "nn_x_ne: nn_x_new: w: op: bad 7");
  ad_clear_error(c);
  /* nn_error_tensor: a 0-d tensor, a path */
  ad_set_error(c, AD_ERR_OOM, "out of memory allocating 8 bytes");
  nn_error_tensor(c, "nn_y_new", "enc.", "step", 0, NULL);
  cr_assert_str_eq(ad_last_error(c), "nn_y_new: enc.step []: out of memory allocating 8 bytes");
  cr_assert_eq(ad_last_status(c), AD_ERR_OOM);
  ad_ctx_free(c);
}

/* A message that no longer fits is cut short, NUL-terminated, its
 * beginning (the prefix) kept; the status stays. */
Test(nn_ctor_errors, prefix_truncates) {
  ad_ctx *c = ad_ctx_new();
  cr_assert_not_null(c);
  char big[600];
  memset(big, 'm', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  ad_set_error(c, AD_ERR_SHAPE, "%s", big);
  size_t n = strlen(ad_last_error(c)); /* the context's capacity, less one */
  cr_assert_lt(n, sizeof big - 1);
  for (int i = 0; i < 3; i++) nn_error_prefix(c, "nn_z%d_new", i);
  const char *m = ad_last_error(c);
  cr_assert_eq(strlen(m), n);
  cr_assert(strncmp(m, "nn_z2_new: nn_z1_new: nn_z0_new: mmm", 36) == 0, "%s", m);
  cr_assert_eq(ad_last_status(c), AD_ERR_SHAPE);
  ad_clear_error(c);
  ad_ctx_free(c);
}
