/* fuzz_nn.h: the program encoding of fuzz/fuzz_nn.c, shared with
 * fuzz/gen_corpus.c (which writes seed programs with it). A program is a
 * sequence of instructions, each led by one byte in the ranges below;
 * fuzz_nn.c's step() reads the rest of each. */
#ifndef FUZZ_NN_H
#define FUZZ_NN_H

/* The first byte of an instruction: the range it falls in. */
enum {
  NOP_INPUT = 0,       /* dtype, rank (or a shape like a tensor's), dims, 8 values */
  NOP_LAYER = 40,      /* kind (FUZZ_LAYERS index), describe size, its arguments */
  NOP_FORWARD = 88,    /* layer, mode, input (and the extra operands of its forward) */
  NOP_LOSS = 136,      /* loss (FUZZ_LOSSES index), reduction, operands, arguments */
  NOP_BACKWARD = 168,  /* value: ad_backward of it (or of its sum) */
  NOP_SEQ = 184,       /* count, layers: a Sequential of them */
  NOP_MODEL_FWD = 196, /* model, input: nn_model_forward */
  NOP_TRAINING = 212,  /* model: toggle nn_model_set_training */
  NOP_RESET = 220,     /* ad_tape_reset */
  NOP_FREE = 228,      /* what (layer, model or input), which: free it */
  NOP_GRAD_MODE = 240, /* toggle ad_set_grad_enabled */
  NOP_REQ_GRAD = 246   /* input: set requires_grad */
};

/* X(name, builder, forward): one line per layer constructor (or variant
 * of one), in the order of the byte that picks it; builder (a function of
 * fuzz_nn.c) reads its arguments and options, forward (an enum of
 * fuzz_nn.c) names the forward the layer is run with. */
#define FUZZ_LAYERS(X)                                                                             \
  X(dense, b_dense, F_PLAIN)                                                                       \
  X(activation, b_activation, F_PLAIN)                                                             \
  X(leaky_relu, b_real, F_PLAIN)                                                                   \
  X(elu, b_real, F_PLAIN)                                                                          \
  X(celu, b_real, F_PLAIN)                                                                         \
  X(softshrink, b_real, F_PLAIN)                                                                   \
  X(hardshrink, b_real, F_PLAIN)                                                                   \
  X(hardtanh, b_real2, F_PLAIN)                                                                    \
  X(threshold, b_real2, F_PLAIN)                                                                   \
  X(rrelu, b_real2, F_PLAIN)                                                                       \
  X(relu6, b_noarg, F_PLAIN)                                                                       \
  X(flatten, b_noarg, F_PLAIN)                                                                     \
  X(identity, b_noarg, F_PLAIN)                                                                    \
  X(global_avg_pool2d, b_noarg, F_PLAIN)                                                           \
  X(softmax2d, b_noarg, F_PLAIN)                                                                   \
  X(lambda, b_lambda, F_PLAIN)                                                                     \
  X(prelu, b_prelu, F_PLAIN)                                                                       \
  X(dropout, b_dropout, F_PLAIN)                                                                   \
  X(dropout1d, b_dropout, F_PLAIN)                                                                 \
  X(dropout2d, b_dropout, F_PLAIN)                                                                 \
  X(dropout3d, b_dropout, F_PLAIN)                                                                 \
  X(glu, b_dim, F_PLAIN)                                                                           \
  X(softmin, b_dim, F_PLAIN)                                                                       \
  X(batch_norm1d, b_batch_norm, F_PLAIN)                                                           \
  X(batch_norm2d, b_batch_norm, F_PLAIN)                                                           \
  X(batch_norm3d, b_batch_norm, F_PLAIN)                                                           \
  X(instance_norm1d, b_instance_norm, F_PLAIN)                                                     \
  X(instance_norm2d, b_instance_norm, F_PLAIN)                                                     \
  X(instance_norm3d, b_instance_norm, F_PLAIN)                                                     \
  X(group_norm, b_group_norm, F_PLAIN)                                                             \
  X(layer_norm, b_layer_norm, F_PLAIN)                                                             \
  X(local_response_norm, b_lrn, F_PLAIN)                                                           \
  X(conv1d, b_conv1d, F_PLAIN)                                                                     \
  X(conv1d_ext, b_conv1d, F_PLAIN)                                                                 \
  X(conv_transpose1d, b_conv_transpose1d, F_PLAIN)                                                 \
  X(conv2d, b_conv2d, F_PLAIN)                                                                     \
  X(conv2d_ext, b_conv2d, F_PLAIN)                                                                 \
  X(conv_transpose2d, b_conv2d, F_PLAIN)                                                           \
  X(conv_transpose2d_ext, b_conv2d, F_PLAIN)                                                       \
  X(conv3d, b_conv3d, F_PLAIN)                                                                     \
  X(conv_transpose3d, b_conv3d, F_PLAIN)                                                           \
  X(max_pool1d, b_pool1d, F_MAXPOOL)                                                               \
  X(avg_pool1d, b_pool1d, F_PLAIN)                                                                 \
  X(max_pool2d, b_pool2d, F_MAXPOOL)                                                               \
  X(avg_pool2d, b_pool2d, F_PLAIN)                                                                 \
  X(max_pool3d, b_pool3d, F_MAXPOOL)                                                               \
  X(avg_pool3d, b_pool3d, F_PLAIN)                                                                 \
  X(lp_pool1d, b_lp_pool, F_PLAIN)                                                                 \
  X(lp_pool2d, b_lp_pool, F_PLAIN)                                                                 \
  X(adaptive_avg_pool1d, b_adaptive, F_PLAIN)                                                      \
  X(adaptive_avg_pool2d, b_adaptive, F_PLAIN)                                                      \
  X(adaptive_avg_pool3d, b_adaptive, F_PLAIN)                                                      \
  X(adaptive_max_pool1d, b_adaptive, F_MAXPOOL)                                                    \
  X(adaptive_max_pool2d, b_adaptive, F_MAXPOOL)                                                    \
  X(adaptive_max_pool3d, b_adaptive, F_MAXPOOL)                                                    \
  X(max_unpool1d, b_unpool, F_UNPOOL)                                                              \
  X(max_unpool2d, b_unpool, F_UNPOOL)                                                              \
  X(max_unpool3d, b_unpool, F_UNPOOL)                                                              \
  X(upsample, b_upsample, F_PLAIN)                                                                 \
  X(pixel_shuffle, b_pixel, F_PLAIN)                                                               \
  X(pixel_unshuffle, b_pixel, F_PLAIN)                                                             \
  X(unfold, b_fold, F_PLAIN)                                                                       \
  X(fold, b_fold, F_PLAIN)                                                                         \
  X(unflatten, b_unflatten, F_PLAIN)                                                               \
  X(zero_pad2d, b_pad, F_PLAIN)                                                                    \
  X(constant_pad1d, b_pad, F_PLAIN)                                                                \
  X(constant_pad2d, b_pad, F_PLAIN)                                                                \
  X(constant_pad3d, b_pad, F_PLAIN)                                                                \
  X(reflection_pad1d, b_pad, F_PLAIN)                                                              \
  X(reflection_pad2d, b_pad, F_PLAIN)                                                              \
  X(reflection_pad3d, b_pad, F_PLAIN)                                                              \
  X(replication_pad1d, b_pad, F_PLAIN)                                                             \
  X(replication_pad2d, b_pad, F_PLAIN)                                                             \
  X(replication_pad3d, b_pad, F_PLAIN)                                                             \
  X(bilinear, b_bilinear, F_BILINEAR)                                                              \
  X(cosine_similarity, b_pairwise, F_TWO)                                                          \
  X(pairwise_distance, b_pairwise, F_TWO)                                                          \
  X(rnn, b_rnn, F_RNN)                                                                             \
  X(lstm, b_rnn, F_RNN)                                                                            \
  X(gru, b_rnn, F_RNN)                                                                             \
  X(rnn_ext, b_rnn, F_RNN)                                                                         \
  X(embedding, b_embedding, F_PLAIN)                                                               \
  X(embedding_ext, b_embedding, F_PLAIN)                                                           \
  X(embedding_bag, b_embedding_bag, F_BAG)                                                         \
  X(multihead_attention, b_mha, F_MHA)                                                             \
  X(multihead_attention_ext, b_mha, F_MHA)                                                         \
  X(transformer_encoder_layer, b_transformer_layer, F_ENC)                                         \
  X(transformer_decoder_layer, b_transformer_layer, F_DEC)                                         \
  X(transformer_encoder, b_transformer_layer, F_ENC)                                               \
  X(transformer_decoder, b_transformer_layer, F_DEC)                                               \
  X(transformer, b_transformer, F_TRANSFORMER)

/* X(name, elementwise): one line per loss (or variant), in the order of
 * the byte that picks it; fuzz_nn.c's run_loss has a block for each.
 * elementwise: its NN_NONE losses have its first input's shape. */
#define FUZZ_LOSSES(X)                                                                             \
  X(mse, 1)                                                                                        \
  X(l1, 1)                                                                                         \
  X(smooth_l1, 1)                                                                                  \
  X(huber, 1)                                                                                      \
  X(bce, 1)                                                                                        \
  X(bce_with_logits, 1)                                                                            \
  X(soft_margin, 1)                                                                                \
  X(cross_entropy, 0)                                                                              \
  X(nll, 0)                                                                                        \
  X(smooth_l1_beta, 1)                                                                             \
  X(huber_delta, 1)                                                                                \
  X(kl_div, 1)                                                                                     \
  X(gaussian_nll, 0)                                                                               \
  X(poisson_nll, 1)                                                                                \
  X(margin_ranking, 1)                                                                             \
  X(hinge_embedding, 1)                                                                            \
  X(cosine_embedding, 0)                                                                           \
  X(triplet_margin, 0)                                                                             \
  X(multilabel_soft_margin, 0)                                                                     \
  X(multi_margin, 0)                                                                               \
  X(ctc, 0)                                                                                        \
  X(sequence_cross_entropy, 0)                                                                     \
  X(cross_entropy_ext, 0)                                                                          \
  X(nll_ext, 0)                                                                                    \
  X(bce_ext, 1)                                                                                    \
  X(bce_with_logits_ext, 1)

#define FUZZ_NN_ENUM(name, b, f) L_##name,
enum { FUZZ_LAYERS(FUZZ_NN_ENUM) LAYER_KINDS };
#define FUZZ_NN_NAME(name, b, f) #name,
static const char *const layer_name[LAYER_KINDS] = {FUZZ_LAYERS(FUZZ_NN_NAME)};
#define FUZZ_LOSS_ENUM(name, e) LOSS_##name,
enum { FUZZ_LOSSES(FUZZ_LOSS_ENUM) LOSS_KINDS };
#define FUZZ_LOSS_NAME(name, e) #name,
static const char *const loss_name[LOSS_KINDS] = {FUZZ_LOSSES(FUZZ_LOSS_NAME)};

#endif
