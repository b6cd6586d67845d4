/* fuzz_ops.h: the program encoding of fuzz/fuzz_ops.c, shared with
 * fuzz/gen_corpus.c (which writes seed programs with it). A program is a
 * sequence of instructions, each led by one byte in the ranges below;
 * fuzz_ops.c's step() reads the rest of each. */
#ifndef FUZZ_OPS_H
#define FUZZ_OPS_H

/* The first byte of an instruction: the range it falls in. */
enum {
  FOP_LEAF = 0,        /* dtype, ndim, dims, 8 values: a leaf */
  FOP_REQ_GRAD = 40,   /* leaf: set requires_grad */
  FOP_APPLY = 56,      /* op (FUZZ_OPS index), operands, arguments */
  FOP_BACKWARD = 200,  /* value, root kind, seed: ad_backward */
  FOP_GRAD2 = 214,     /* value, inputs: ad_grad twice */
  FOP_RESET = 224,     /* ad_tape_reset */
  FOP_FREE = 232,      /* leaf (or temporary): ad_tensor_free */
  FOP_GRAD_MODE = 242, /* toggle ad_set_grad_enabled */
  FOP_ANOMALY = 247,   /* toggle ad_set_anomaly_mode */
  FOP_WRITE = 250      /* leaf, index, value: ad_tensor_set */
};

/* X(name, rule): one line per op family, in the order of the byte that
 * picks it; fuzz_ops.c's run_op has one block per line, and rule (an
 * enum of fuzz_ops.c) names the shape rule its results are checked
 * against. */
#define FUZZ_OPS(X)                                                                                \
  X(add, R_BCAST)                                                                                  \
  X(sub, R_BCAST)                                                                                  \
  X(mul, R_BCAST)                                                                                  \
  X(div, R_BCAST)                                                                                  \
  X(pow, R_BCAST)                                                                                  \
  X(maximum, R_BCAST)                                                                              \
  X(minimum, R_BCAST)                                                                              \
  X(compare, R_CMP)                                                                                \
  X(where, R_NONE)                                                                                 \
  X(scalar_op, R_SAME)                                                                             \
  X(unary, R_SAME)                                                                                 \
  X(clamp, R_SAME)                                                                                 \
  X(cast, R_NONE)                                                                                  \
  X(matmul, R_MATMUL)                                                                              \
  X(reshape, R_NONE)                                                                               \
  X(permute, R_NONE)                                                                               \
  X(transpose, R_NONE)                                                                             \
  X(expand, R_NONE)                                                                                \
  X(sum_to, R_NONE)                                                                                \
  X(narrow, R_NONE)                                                                                \
  X(pad, R_NONE)                                                                                   \
  X(concat, R_CONCAT)                                                                              \
  X(stack, R_NONE)                                                                                 \
  X(unstack, R_NONE)                                                                               \
  X(detach, R_SAME)                                                                                \
  X(index_select, R_NONE)                                                                          \
  X(index_add, R_NONE)                                                                             \
  X(embedding, R_NONE)                                                                             \
  X(reduce, R_SCALAR)                                                                              \
  X(reduce_axis, R_AXIS)                                                                           \
  X(softmax, R_SAME)                                                                               \
  X(cross_entropy, R_NONE)                                                                         \
  X(binary_cross_entropy, R_NONE)                                                                  \
  X(batch_norm, R_NONE)                                                                            \
  X(layer_norm, R_NONE)                                                                            \
  X(lstm_cell, R_NONE)                                                                             \
  X(gru_cell, R_NONE)                                                                              \
  X(lstm_seq, R_NONE)                                                                              \
  X(gru_seq, R_NONE)                                                                               \
  X(attention, R_NONE)                                                                             \
  X(pool2d, R_NONE)                                                                                \
  X(global_avg_pool2d, R_NONE)                                                                     \
  X(pool3d, R_NONE)                                                                                \
  X(conv2d, R_NONE)                                                                                \
  X(conv_transpose2d, R_NONE)                                                                      \
  X(conv2d_weight, R_NONE)                                                                         \
  X(conv1d, R_NONE)                                                                                \
  X(conv_transpose1d, R_NONE)                                                                      \
  X(conv3d, R_NONE)                                                                                \
  X(conv_transpose3d, R_NONE)                                                                      \
  X(like, R_SAME)                                                                                  \
  X(op_apply, R_NONE)                                                                              \
  X(gather, R_NONE)                                                                                \
  X(scatter_add, R_NONE)                                                                           \
  X(flip, R_SAME)                                                                                  \
  X(cumsum, R_SAME)                                                                                \
  X(argmax, R_NONE)                                                                                \
  X(min_var_std, R_NONE)

/* The op families' numbers (the byte after FOP_APPLY, modulo
 * OP_COUNT) and names. */
#define FUZZ_OP_ENUM(name, r) OP_##name,
enum { FUZZ_OPS(FUZZ_OP_ENUM) OP_COUNT };
#define FUZZ_OP_NAME(name, r) #name,
static const char *const op_name[OP_COUNT] = {FUZZ_OPS(FUZZ_OP_NAME)};

#endif
