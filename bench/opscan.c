/* opscan: every op family's forward and backward, timed one case each, so
 * that an op many times slower than PyTorch's (a cliff: a libm call or a
 * library call per element, a strided gather, a serial chain) shows beside
 * the others. bench/opscan.py runs it with PyTorch's same cases and prints
 * the ratios.
 *
 *   build/bench/opscan [--filter SUBSTR] [--reps N] [--threads T] [--dtype f32|f64]
 *
 * Each case builds its op's output from fixed float32 inputs (float64 with
 * --dtype f64, where the cast case casts to float32 and is named cast32;
 * PyTorch's ratios there show what float64 costs on each side: this
 * engine keeps libm's exp, log, tanh and the rest per element in float64,
 * ad.h's "Reproducibility"; the shapes
 * below: [256,1024] for the elementwise and row ops), then runs backward
 * from it to every input with a seed gradient of ones (the op's backward
 * alone: a sum as the root would add its own expand); of --reps runs
 * (default 15) it prints the least forward time and the least backward
 * time (0 for an op without a gradient: argmax, a comparison), in
 * microseconds:
 *
 *   opscan/NAME fwd_us F bwd_us B
 *
 * The inputs that need a gradient have one; their gradients are released
 * (ad_tensor_zero_grad) before each run, as PyTorch's loop sets them to
 * None. An op
 * that fails ends the program with its error (exit 1). Not a test: the
 * machine's other load moves the times. */
#include "ad_ext.h"
#include "scan_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ad_ctx *ctx;
static ad_dtype dtype = AD_F32; /* of the float inputs (--dtype) */
/* The inputs: a, b [256,1024] N(0,1); p [256,1024] in [0.5, 2); q [256,1024]
 * in [-2, 2); sq [1024,1024]; bias, gamma, beta [1024]; idx 256 rows of sq;
 * emb [1000,256] and its indices [32,64]; logits [256,1000] and labels;
 * prob in [0.01, 0.99) and target in [0, 1) [256,1024]; img [32,64,32,32]
 * and a 3x3 kernel w [64,64,3,3]; ch [64] (per channel of img), col
 * [256,1]; bq [16,64,256], bk [16,256,64] (a batched product); gidx
 * [256,1] (i32, a label per row of logits); img2 shaped as img, plane
 * [32,1,32,32] (one value per position, broadcast over the channels),
 * gate [32,64,1,1] (one value per sample and channel), sidx [256,64] (i32,
 * columns of a) and src [256,64] (a scatter_add's); row [1,1024], pcol
 * [256,1] in [0.5, 2); px [64,1,128] and py [1,64,128] (pairwise
 * differences); sh4 [65536,4] and sh16 [16384,16] (short rows), lg2
 * [65536,2] and labels2 (two classes); rows2k [2048,256] and idx2k [2048]
 * (i32, of 1000 rows: an index_add's); t3 [64,256,64] (a middle axis),
 * tall [65536,16] and w16 [16,16] (a tall product), vec [1024], long2
 * [4,65536] (long rows), bk2 [256,64] (broadcast over a batch), gidx0
 * [16,1024] (i32, rows of a), pieces [256,64] x 16, e3 [64,1,64], aq, ak,
 * av [8,8,128,64] (attention's N, heads, L, E); lgv [64,32000] and labv
 * [64] (i32: a vocabulary's logits and labels), idx3 [64] (i32, of 256),
 * gidx3 [64,256,8] (i32, of 64: a gather along t3's last axis), b4a
 * [16,1,64,256] and b4b [1,8,256,64] (a product broadcast on both sides);
 * sh4b [65536,4] (a second short-row operand), x64 [4096,64]; c4
 * [65536,1], r4 [4] and c16 [16384,1] (operands broadcast along short
 * rows); t8 [64,256,8] and m8 [64,1,8], t44 [16384,4,4] and k4 [1,4,1]
 * (short rows broadcast along a middle axis). */
static ad_tensor *a, *b, *p, *q, *sq, *bias, *gamma_, *beta, *idx, *emb, *eidx, *logits, *labels,
    *prob, *target, *img, *w, *ch, *col, *bq, *bk, *gidx, *img2, *plane, *gate, *sidx, *src, *row,
    *pcol, *px, *py, *sh4, *sh16, *lg2, *labels2, *rows2k, *idx2k, *t3, *tall, *w16, *vec, *long2,
    *bk2, *gidx0, *pieces[16], *e3, *aq, *ak, *av, *lgv, *labv, *idx3, *gidx3, *b4a, *b4b, *sh4b,
    *x64, *c4, *r4, *c16, *t8, *m8, *t44, *k4;

static ad_tensor *c_div(void) { return ad_div(ctx, a, p); }
static ad_tensor *c_pow(void) { return ad_pow(ctx, p, q); }
static ad_tensor *c_maximum(void) { return ad_maximum(ctx, a, b); }
static ad_tensor *c_where_lt(void) { return ad_where(ctx, ad_lt(ctx, a, b), a, b); }
static ad_tensor *c_sqrt(void) { return ad_sqrt(ctx, p); }
static ad_tensor *c_abs(void) { return ad_abs(ctx, a); }
static ad_tensor *c_leaky_relu(void) { return ad_leaky_relu(ctx, a, 0.01); }
static ad_tensor *c_gelu(void) { return ad_gelu(ctx, a); }
static ad_tensor *c_clamp(void) { return ad_clamp(ctx, a, -1.0, 1.0); }
static ad_tensor *c_hardtanh(void) { return ad_hardtanh(ctx, a, -1.0, 1.0); }
static ad_tensor *c_sign(void) { return ad_sign(ctx, a); }
static ad_tensor *c_relu(void) { return ad_relu(ctx, a); }
static ad_tensor *c_tanh(void) { return ad_tanh(ctx, a); }
static ad_tensor *c_sigmoid(void) { return ad_sigmoid(ctx, a); }
static ad_tensor *c_exp(void) { return ad_exp(ctx, a); }
static ad_tensor *c_log(void) { return ad_log(ctx, p); }
static ad_tensor *c_sin(void) { return ad_sin(ctx, a); }
static ad_tensor *c_atan(void) { return ad_atan(ctx, a); }
static ad_tensor *c_softplus(void) { return ad_softplus(ctx, a); }
static ad_tensor *c_erf(void) { return ad_erf(ctx, a); }
static ad_tensor *c_square(void) { return ad_pow_scalar(ctx, a, 2.0); }
static ad_tensor *c_mul(void) { return ad_mul(ctx, a, b); }
static ad_tensor *c_bias_add(void) { return ad_add(ctx, a, bias); }
static ad_tensor *c_cast64(void) { return ad_cast(ctx, a, dtype == AD_F32 ? AD_F64 : AD_F32); }
static ad_tensor *c_transpose(void) { return ad_transpose(ctx, sq, 0, 1); }
static ad_tensor *c_narrow(void) { return ad_narrow(ctx, a, 1, 100, 800); }
static ad_tensor *c_pad(void) { return ad_pad(ctx, a, 1, 3, 5); }
static ad_tensor *c_concat(void) { return ad_concat(ctx, 2, (ad_tensor *[]){a, b}, 1); }
static ad_tensor *c_index_select(void) { return ad_index_select(ctx, sq, idx); }
static ad_tensor *c_embedding(void) { return ad_embedding(ctx, emb, eidx, AD_NO_PADDING); }
static ad_tensor *c_sum0(void) { return ad_sum_axis(ctx, a, 0, false); }
static ad_tensor *c_sum1(void) { return ad_sum_axis(ctx, a, 1, false); }
static ad_tensor *c_max0(void) { return ad_max_axis(ctx, a, 0, false); }
static ad_tensor *c_max1(void) { return ad_max_axis(ctx, a, 1, false); }
static ad_tensor *c_logsumexp1(void) { return ad_logsumexp(ctx, a, 1, false); }
static ad_tensor *c_softmax0(void) { return ad_softmax(ctx, a, 0); }
static ad_tensor *c_softmax1(void) { return ad_softmax(ctx, a, 1); }
static ad_tensor *c_log_softmax1(void) { return ad_log_softmax(ctx, a, 1); }
static ad_tensor *c_cross_entropy(void) { return ad_softmax_cross_entropy(ctx, logits, labels); }
static ad_tensor *c_bce(void) { return ad_binary_cross_entropy(ctx, prob, target); }
static ad_tensor *c_max_pool(void) { return ad_max_pool2d(ctx, img, 2, 2, &(ad_pool2d_opts){0}); }
static ad_tensor *c_avg_pool(void) { return ad_avg_pool2d(ctx, img, 2, 2, &(ad_pool2d_opts){0}); }
static ad_tensor *c_layer_norm(void) {
  return ad_layer_norm(ctx, a, 1, (const int64_t[]){1024}, gamma_, beta, 1e-5);
}
static ad_tensor *c_conv3x3(void) {
  return ad_conv2d(ctx, img, w, NULL, &(ad_conv_opts){.padding = {1, 1, 1, 1}});
}
static ad_tensor *c_matmul(void) { return ad_matmul(ctx, a, sq, false, false); }
/* layouts: a per-channel factor (broadcast over N, H, W), a column, NHWC,
 * a batched product, a gather along the rows, scans and reductions along
 * other axes */
static ad_tensor *c_mul_channel(void) {
  return ad_mul(ctx, img, ad_reshape(ctx, ch, 4, (const int64_t[]){1, 64, 1, 1}));
}
static ad_tensor *c_add_col(void) { return ad_add(ctx, a, col); }
static ad_tensor *c_permute_nhwc(void) { return ad_permute(ctx, img, (const int[]){0, 2, 3, 1}); }
static ad_tensor *c_bmm(void) { return ad_matmul(ctx, bq, bk, false, false); }
static ad_tensor *c_gather1(void) { return ad_gather(ctx, logits, 1, gidx); }
static ad_tensor *c_cumsum1(void) { return ad_cumsum(ctx, a, 1); }
static ad_tensor *c_cumsum0(void) { return ad_cumsum(ctx, a, 0); }
static ad_tensor *c_var1(void) { return ad_var(ctx, a, 1, (const int[]){1}, 1, false); }
static ad_tensor *c_mean_hw(void) { return ad_mean_axes(ctx, img, 2, (const int[]){2, 3}, false); }
/* the channels' layouts of [N, C, H, W]: a bias gradient's sum and batch
 * statistics over N, H and W, softmax over the channels, a concat along
 * them, a plane added to every channel, a max along the rows */
static ad_tensor *c_sum_nhw(void) {
  return ad_sum_axes(ctx, img, 3, (const int[]){0, 2, 3}, false);
}
static ad_tensor *c_var_nhw(void) { return ad_var(ctx, img, 3, (const int[]){0, 2, 3}, 0, false); }
static ad_tensor *c_softmax_ch(void) { return ad_softmax(ctx, img, 1); }
static ad_tensor *c_cat_ch(void) { return ad_concat(ctx, 2, (ad_tensor *[]){img, img2}, 1); }
static ad_tensor *c_add_plane(void) { return ad_add(ctx, img, plane); }
static ad_tensor *c_max_w(void) { return ad_max_axis(ctx, img, -1, false); }
static ad_tensor *c_max_hw(void) { return ad_max_axes(ctx, img, 2, (const int[]){2, 3}, false); }
/* a zero border of H and W, a per-sample-and-channel gate (squeeze and
 * excitation), a sum over the channels, a mask broadcast over them
 * (masked_fill), a batched product with the second transposed (attention
 * scores) */
static ad_tensor *c_pad_hw(void) {
  return ad_pad_nd(ctx, img, 2, (const int64_t[]){1, 1, 1, 1}, AD_PAD_CONSTANT, 0.0);
}
static ad_tensor *c_mul_gate(void) { return ad_mul(ctx, img, gate); }
static ad_tensor *c_sum_ch(void) { return ad_sum_axis(ctx, img, 1, false); }
static ad_tensor *c_where_mask(void) {
  ad_tensor *zero = ad_scalar(ctx, dtype, 0);
  return ad_where(ctx, ad_gt(ctx, plane, zero), img, zero);
}
static ad_tensor *c_bmm_tb(void) { return ad_matmul(ctx, bq, bq, false, true); }
/* the ops reached by no other case: min (a composite, -max(-x)), columns
 * selected, a scatter_add along rows, a stack, a cosine similarity along
 * rows */
static ad_tensor *c_min1(void) { return ad_min_axis(ctx, a, 1, false); }
static ad_tensor *c_isel1(void) { return ad_index_select_axis(ctx, a, 1, idx); }
static ad_tensor *c_scatter1(void) { return ad_scatter_add(ctx, a, 1, sidx, src); }
static ad_tensor *c_stack0(void) { return ad_stack(ctx, 2, (ad_tensor *[]){a, b}, 0); }
static ad_tensor *c_cos1(void) { return ad_cosine_similarity(ctx, a, b, 1, 1e-8); }
static ad_tensor *c_flip1(void) { return ad_flip(ctx, a, 1, (const int[]){1}); }
/* broadcasts of both operands (an outer product, pairwise differences), a
 * row scaled by a column, a broadcast materialized, a mean of everything;
 * rows of 2 to 16 elements (a softmax over 4 choices, a layer norm over 16
 * features, a binary classifier's cross-entropy); powers other than 2;
 * the ops no case reached: minimum, log_softmax along axis 0, index_add,
 * the scalar ops */
static ad_tensor *c_outer(void) { return ad_mul(ctx, col, row); }
static ad_tensor *c_pairwise(void) { return ad_sub(ctx, px, py); }
static ad_tensor *c_div_col(void) { return ad_div(ctx, a, pcol); }
static ad_tensor *c_expand(void) { return ad_expand(ctx, col, 2, (const int64_t[]){256, 1024}); }
static ad_tensor *c_mean_all(void) { return ad_mean(ctx, a); }
static ad_tensor *c_softmax_short(void) { return ad_softmax(ctx, sh4, 1); }
static ad_tensor *c_sum_short(void) { return ad_sum_axis(ctx, sh4, 1, false); }
static ad_tensor *c_ln16(void) {
  return ad_layer_norm(ctx, sh16, 1, (const int64_t[]){16}, NULL, NULL, 1e-5);
}
static ad_tensor *c_ce2(void) { return ad_softmax_cross_entropy(ctx, lg2, labels2); }
static ad_tensor *c_pow3(void) { return ad_pow_scalar(ctx, a, 3.0); }
static ad_tensor *c_rsqrt(void) { return ad_pow_scalar(ctx, p, -0.5); }
static ad_tensor *c_minimum(void) { return ad_minimum(ctx, a, b); }
static ad_tensor *c_log_softmax0(void) { return ad_log_softmax(ctx, a, 0); }
static ad_tensor *c_index_add(void) { return ad_index_add(ctx, rows2k, idx2k, 1000); }
static ad_tensor *c_affine(void) {
  return ad_neg(ctx, ad_add_scalar(ctx, ad_mul_scalar(ctx, a, 2), 1));
}
/* the third round: reductions and scans along a middle axis or axis 0, a
 * standard deviation, copies of 3-D and short-row layouts, long rows,
 * products of other shapes (tall and thin, the first operand transposed,
 * a matrix times a vector, a batch times one matrix), a gather along axis
 * 0, a narrow of short rows, a concat of many pieces, a broadcast along
 * a middle axis, attention, the max of everything, a scalar division, a
 * row broadcast on the left of a subtraction */
static ad_tensor *c_sum_mid(void) { return ad_sum_axis(ctx, t3, 1, false); }
static ad_tensor *c_mean02(void) { return ad_mean_axes(ctx, t3, 2, (const int[]){0, 2}, false); }
static ad_tensor *c_max_mid(void) { return ad_max_axis(ctx, t3, 1, false); }
static ad_tensor *c_std1(void) { return ad_std(ctx, a, 1, (const int[]){1}, 1, false); }
static ad_tensor *c_var0(void) { return ad_var(ctx, a, 1, (const int[]){0}, 1, false); }
static ad_tensor *c_logsumexp0(void) { return ad_logsumexp(ctx, a, 0, false); }
static ad_tensor *c_cumsum_mid(void) { return ad_cumsum(ctx, t3, 1); }
static ad_tensor *c_permute3(void) { return ad_permute(ctx, t3, (const int[]){2, 0, 1}); }
static ad_tensor *c_transpose_short(void) { return ad_transpose(ctx, sh4, 0, 1); }
static ad_tensor *c_softmax_long(void) { return ad_softmax(ctx, long2, 1); }
static ad_tensor *c_matmul_tall(void) { return ad_matmul(ctx, tall, w16, false, false); }
static ad_tensor *c_matmul_tn(void) { return ad_matmul(ctx, a, b, true, false); }
static ad_tensor *c_matvec(void) { return ad_matmul(ctx, a, vec, false, false); }
static ad_tensor *c_bmm_bcast(void) { return ad_matmul(ctx, bq, bk2, false, false); }
static ad_tensor *c_gather0(void) { return ad_gather(ctx, a, 0, gidx0); }
static ad_tensor *c_narrow_short(void) { return ad_narrow(ctx, sh4, 1, 1, 2); }
static ad_tensor *c_concat16(void) { return ad_concat(ctx, 16, pieces, 1); }
static ad_tensor *c_expand_mid(void) {
  return ad_expand(ctx, e3, 3, (const int64_t[]){64, 256, 64});
}
static ad_tensor *c_sdpa(void) { return ad_scaled_dot_product_attention(ctx, aq, ak, av, NULL); }
static ad_tensor *c_max_all(void) { return ad_max(ctx, a); }
static ad_tensor *c_div_scalar(void) { return ad_div_scalar(ctx, a, 3.0); }
static ad_tensor *c_sub_row(void) { return ad_sub(ctx, row, a); }
/* the fourth round: short rows' log-softmax, logsumexp and scan, a
 * vocabulary's cross-entropy, a standard deviation of everything, an
 * exponent per row, a maximum against a row, a selection and a gather in
 * 3-d, a product broadcast on both sides, a variance over the channels, a
 * softmax over a middle axis */
static ad_tensor *c_log_softmax_short(void) { return ad_log_softmax(ctx, sh4, 1); }
static ad_tensor *c_logsumexp_short(void) { return ad_logsumexp(ctx, sh4, 1, false); }
static ad_tensor *c_ce_vocab(void) { return ad_softmax_cross_entropy(ctx, lgv, labv); }
static ad_tensor *c_cumsum_short(void) { return ad_cumsum(ctx, sh4, 1); }
static ad_tensor *c_std_all(void) { return ad_std(ctx, a, 2, (const int[]){0, 1}, 1, false); }
static ad_tensor *c_pow_col(void) { return ad_pow(ctx, p, pcol); }
static ad_tensor *c_maximum_row(void) { return ad_maximum(ctx, a, row); }
static ad_tensor *c_isel_3d(void) { return ad_index_select_axis(ctx, t3, 1, idx3); }
static ad_tensor *c_gather_3d(void) { return ad_gather(ctx, t3, 2, gidx3); }
static ad_tensor *c_bmm_bcast2(void) { return ad_matmul(ctx, b4a, b4b, false, false); }
static ad_tensor *c_var_ch(void) { return ad_var(ctx, img, 1, (const int[]){1}, 1, false); }
static ad_tensor *c_softmax_mid(void) { return ad_softmax(ctx, t3, 1); }
/* the fifth round: a stack along a new last axis, a concat of short
 * rows, flips along H and W and along axis 0, a sum over all but the
 * batch, a layer norm over 64 features, a softmax along the first axis
 * of three */
static ad_tensor *c_stack_last(void) { return ad_stack(ctx, 2, (ad_tensor *[]){a, b}, 2); }
static ad_tensor *c_concat_short(void) { return ad_concat(ctx, 2, (ad_tensor *[]){sh4, sh4b}, 1); }
static ad_tensor *c_flip_hw(void) { return ad_flip(ctx, img, 2, (const int[]){2, 3}); }
static ad_tensor *c_flip0(void) { return ad_flip(ctx, a, 1, (const int[]){0}); }
static ad_tensor *c_sum_chw(void) {
  return ad_sum_axes(ctx, img, 3, (const int[]){1, 2, 3}, false);
}
static ad_tensor *c_ln64(void) {
  return ad_layer_norm(ctx, x64, 1, (const int64_t[]){64}, NULL, NULL, 1e-5);
}
static ad_tensor *c_softmax0_3d(void) { return ad_softmax(ctx, t3, 0); }
/* Sixth round: binary ops broadcast along short rows (a column of a
 * [65536,4], a row of 4, a column of a [16384,16]), a maximum by a column,
 * a selection by a broadcast mask. */
static ad_tensor *c_sub_col4(void) { return ad_sub(ctx, sh4, c4); }
static ad_tensor *c_mul_row4(void) { return ad_mul(ctx, sh4, r4); }
static ad_tensor *c_add_col16(void) { return ad_add(ctx, sh16, c16); }
static ad_tensor *c_maximum_col4(void) { return ad_maximum(ctx, sh4, c4); }
static ad_tensor *c_add_mid8(void) { return ad_add(ctx, t8, m8); }
static ad_tensor *c_mul_mid4(void) { return ad_mul(ctx, t44, k4); }
/* Reductions and a softmax along a middle axis of short rows. */
static ad_tensor *c_sum_mid4(void) { return ad_sum_axis(ctx, t44, 1, false); }
static ad_tensor *c_max_mid4(void) { return ad_max_axis(ctx, t44, 1, false); }
static ad_tensor *c_softmax_mid4(void) { return ad_softmax(ctx, t44, 1); }
static ad_tensor *c_cumsum_mid4(void) { return ad_cumsum(ctx, t44, 1); }
static ad_tensor *c_var_mid8(void) { return ad_var(ctx, t8, 1, (const int[]){1}, 1, false); }
/* Ops without a gradient (an accuracy's): their bwd_us is 0. */
static ad_tensor *c_argmax1(void) { return ad_argmax(ctx, a, 1, false); }
static ad_tensor *c_argmax0(void) { return ad_argmax(ctx, a, 0, false); }
static ad_tensor *c_argmax_short(void) { return ad_argmax(ctx, sh4, 1, false); }
static ad_tensor *c_eq(void) { return ad_eq(ctx, a, b); }
static ad_tensor *c_where_col4(void) {
  return ad_where(ctx, ad_gt(ctx, c4, ad_scalar(ctx, dtype, 0)), sh4, sh4b);
}

static const struct {
  const char *name;
  ad_tensor *(*fn)(void);
} cases[] = {
    {"div", c_div},
    {"pow", c_pow},
    {"maximum", c_maximum},
    {"where_lt", c_where_lt},
    {"sqrt", c_sqrt},
    {"abs", c_abs},
    {"leaky_relu", c_leaky_relu},
    {"gelu", c_gelu},
    {"clamp", c_clamp},
    {"hardtanh", c_hardtanh},
    {"sign", c_sign},
    {"relu", c_relu},
    {"tanh", c_tanh},
    {"sigmoid", c_sigmoid},
    {"exp", c_exp},
    {"log", c_log},
    {"sin", c_sin},
    {"atan", c_atan},
    {"softplus", c_softplus},
    {"erf", c_erf},
    {"square", c_square},
    {"mul", c_mul},
    {"bias_add", c_bias_add},
    {"cast64", c_cast64},
    {"transpose", c_transpose},
    {"narrow", c_narrow},
    {"pad", c_pad},
    {"concat", c_concat},
    {"index_select", c_index_select},
    {"embedding", c_embedding},
    {"sum0", c_sum0},
    {"sum1", c_sum1},
    {"max0", c_max0},
    {"max1", c_max1},
    {"logsumexp1", c_logsumexp1},
    {"softmax0", c_softmax0},
    {"softmax1", c_softmax1},
    {"log_softmax1", c_log_softmax1},
    {"cross_entropy", c_cross_entropy},
    {"bce", c_bce},
    {"max_pool", c_max_pool},
    {"avg_pool", c_avg_pool},
    {"layer_norm", c_layer_norm},
    {"conv3x3", c_conv3x3},
    {"matmul", c_matmul},
    {"mul_channel", c_mul_channel},
    {"add_col", c_add_col},
    {"permute_nhwc", c_permute_nhwc},
    {"bmm", c_bmm},
    {"gather1", c_gather1},
    {"cumsum1", c_cumsum1},
    {"cumsum0", c_cumsum0},
    {"var1", c_var1},
    {"mean_hw", c_mean_hw},
    {"flip1", c_flip1},
    {"sum_nhw", c_sum_nhw},
    {"var_nhw", c_var_nhw},
    {"softmax_ch", c_softmax_ch},
    {"cat_ch", c_cat_ch},
    {"add_plane", c_add_plane},
    {"max_w", c_max_w},
    {"max_hw", c_max_hw},
    {"pad_hw", c_pad_hw},
    {"mul_gate", c_mul_gate},
    {"sum_ch", c_sum_ch},
    {"where_mask", c_where_mask},
    {"bmm_tb", c_bmm_tb},
    {"min1", c_min1},
    {"isel1", c_isel1},
    {"scatter1", c_scatter1},
    {"stack0", c_stack0},
    {"cos1", c_cos1},
    {"outer", c_outer},
    {"pairwise", c_pairwise},
    {"div_col", c_div_col},
    {"expand", c_expand},
    {"mean_all", c_mean_all},
    {"softmax_short", c_softmax_short},
    {"sum_short", c_sum_short},
    {"ln16", c_ln16},
    {"ce2", c_ce2},
    {"pow3", c_pow3},
    {"rsqrt", c_rsqrt},
    {"minimum", c_minimum},
    {"log_softmax0", c_log_softmax0},
    {"index_add", c_index_add},
    {"affine", c_affine},
    {"sum_mid", c_sum_mid},
    {"mean02", c_mean02},
    {"max_mid", c_max_mid},
    {"std1", c_std1},
    {"var0", c_var0},
    {"logsumexp0", c_logsumexp0},
    {"cumsum_mid", c_cumsum_mid},
    {"permute3", c_permute3},
    {"transpose_short", c_transpose_short},
    {"softmax_long", c_softmax_long},
    {"matmul_tall", c_matmul_tall},
    {"matmul_tn", c_matmul_tn},
    {"matvec", c_matvec},
    {"bmm_bcast", c_bmm_bcast},
    {"gather0", c_gather0},
    {"narrow_short", c_narrow_short},
    {"concat16", c_concat16},
    {"expand_mid", c_expand_mid},
    {"sdpa", c_sdpa},
    {"max_all", c_max_all},
    {"div_scalar", c_div_scalar},
    {"sub_row", c_sub_row},
    {"log_softmax_short", c_log_softmax_short},
    {"logsumexp_short", c_logsumexp_short},
    {"ce_vocab", c_ce_vocab},
    {"cumsum_short", c_cumsum_short},
    {"std_all", c_std_all},
    {"pow_col", c_pow_col},
    {"maximum_row", c_maximum_row},
    {"isel_3d", c_isel_3d},
    {"gather_3d", c_gather_3d},
    {"bmm_bcast2", c_bmm_bcast2},
    {"var_ch", c_var_ch},
    {"softmax_mid", c_softmax_mid},
    {"stack_last", c_stack_last},
    {"concat_short", c_concat_short},
    {"flip_hw", c_flip_hw},
    {"flip0", c_flip0},
    {"sum_chw", c_sum_chw},
    {"ln64", c_ln64},
    {"softmax0_3d", c_softmax0_3d},
    {"sub_col4", c_sub_col4},
    {"mul_row4", c_mul_row4},
    {"add_col16", c_add_col16},
    {"maximum_col4", c_maximum_col4},
    {"where_col4", c_where_col4},
    {"add_mid8", c_add_mid8},
    {"mul_mid4", c_mul_mid4},
    {"sum_mid4", c_sum_mid4},
    {"max_mid4", c_max_mid4},
    {"softmax_mid4", c_softmax_mid4},
    {"cumsum_mid4", c_cumsum_mid4},
    {"var_mid8", c_var_mid8},
    {"argmax1", c_argmax1},
    {"argmax0", c_argmax0},
    {"argmax_short", c_argmax_short},
    {"eq", c_eq},
};

/* A float leaf (dtype) of shape [n0, n1] (n1 = 0: 1-D), uniform in [lo, hi) or
 * N(0, 1) when lo = hi, needing a gradient when grad. */
static ad_tensor *input(ad_rng *rng, int nd, const int64_t *shape, double lo, double hi,
                        bool grad) {
  ad_tensor *t = lo == hi ? ad_randn(ctx, rng, dtype, nd, shape, 0, 1)
                          : ad_rand(ctx, rng, dtype, nd, shape, lo, hi);
  if (!t || (grad && ad_tensor_set_requires_grad(t, true) != AD_OK)) {
    fprintf(stderr, "opscan: inputs: %s\n", ad_last_error(ctx));
    exit(1);
  }
  return t;
}

/* int32 indices (k * mul) % mod of the given shape. */
static ad_tensor *indices(int nd, const int64_t *shape, int64_t mul, int64_t mod) {
  ad_tensor *t = ad_zeros(ctx, AD_I32, nd, shape);
  if (!t) {
    fprintf(stderr, "opscan: inputs: %s\n", ad_last_error(ctx));
    exit(1);
  }
  for (int64_t k = 0; k < t->size; k++) ((int32_t *)t->data)[k] = (int32_t)(k * mul % mod);
  return t;
}

static void make_inputs(void) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  const int64_t s2[2] = {256, 1024}, s_sq[2] = {1024, 1024}, s1[1] = {1024}, s_emb[2] = {1000, 256};
  const int64_t s_ei[2] = {32, 64}, s_lg[2] = {256, 1000}, s_idx[1] = {256},
                s_img[4] = {32, 64, 32, 32};
  const int64_t s_w[4] = {64, 64, 3, 3};
  a = input(&rng, 2, s2, 0, 0, true), b = input(&rng, 2, s2, 0, 0, true);
  p = input(&rng, 2, s2, 0.5, 2, true), q = input(&rng, 2, s2, -2, 2, true);
  sq = input(&rng, 2, s_sq, 0, 0, true);
  bias = input(&rng, 1, s1, 0, 0, true), gamma_ = input(&rng, 1, s1, 0.5, 1.5, true);
  beta = input(&rng, 1, s1, 0, 0, true);
  idx = indices(1, s_idx, 37, 1024);
  emb = input(&rng, 2, s_emb, 0, 0, true), eidx = indices(2, s_ei, 7919, 1000);
  logits = input(&rng, 2, s_lg, 0, 0, true), labels = indices(1, s_idx, 13, 1000);
  prob = input(&rng, 2, s2, 0.01, 0.99, true), target = input(&rng, 2, s2, 0, 1, false);
  img = input(&rng, 4, s_img, 0, 0, true), w = input(&rng, 4, s_w, -0.1, 0.1, true);
  ch = input(&rng, 1, (const int64_t[]){64}, 0.5, 1.5, true);
  col = input(&rng, 2, (const int64_t[]){256, 1}, 0, 0, true);
  bq = input(&rng, 3, (const int64_t[]){16, 64, 256}, 0, 0, true);
  bk = input(&rng, 3, (const int64_t[]){16, 256, 64}, 0, 0, true);
  gidx = indices(2, (const int64_t[]){256, 1}, 13, 1000);
  img2 = input(&rng, 4, s_img, 0, 0, true);
  plane = input(&rng, 4, (const int64_t[]){32, 1, 32, 32}, 0, 0, true);
  gate = input(&rng, 4, (const int64_t[]){32, 64, 1, 1}, 0, 1, true);
  sidx = indices(2, (const int64_t[]){256, 64}, 37, 1024);
  src = input(&rng, 2, (const int64_t[]){256, 64}, 0, 0, true);
  row = input(&rng, 2, (const int64_t[]){1, 1024}, 0, 0, true);
  pcol = input(&rng, 2, (const int64_t[]){256, 1}, 0.5, 2, true);
  px = input(&rng, 3, (const int64_t[]){64, 1, 128}, 0, 0, true);
  py = input(&rng, 3, (const int64_t[]){1, 64, 128}, 0, 0, true);
  sh4 = input(&rng, 2, (const int64_t[]){65536, 4}, 0, 0, true);
  sh16 = input(&rng, 2, (const int64_t[]){16384, 16}, 0, 0, true);
  lg2 = input(&rng, 2, (const int64_t[]){65536, 2}, 0, 0, true);
  labels2 = indices(1, (const int64_t[]){65536}, 7, 2);
  rows2k = input(&rng, 2, (const int64_t[]){2048, 256}, 0, 0, true);
  idx2k = indices(1, (const int64_t[]){2048}, 7919, 1000);
  t3 = input(&rng, 3, (const int64_t[]){64, 256, 64}, 0, 0, true);
  tall = input(&rng, 2, (const int64_t[]){65536, 16}, 0, 0, true);
  w16 = input(&rng, 2, (const int64_t[]){16, 16}, 0, 0, true);
  vec = input(&rng, 1, s1, 0, 0, true);
  long2 = input(&rng, 2, (const int64_t[]){4, 65536}, 0, 0, true);
  bk2 = input(&rng, 2, (const int64_t[]){256, 64}, 0, 0, true);
  gidx0 = indices(2, (const int64_t[]){16, 1024}, 37, 256);
  for (int k = 0; k < 16; k++) pieces[k] = input(&rng, 2, (const int64_t[]){256, 64}, 0, 0, true);
  e3 = input(&rng, 3, (const int64_t[]){64, 1, 64}, 0, 0, true);
  const int64_t s_att[4] = {8, 8, 128, 64};
  aq = input(&rng, 4, s_att, 0, 0, true), ak = input(&rng, 4, s_att, 0, 0, true);
  av = input(&rng, 4, s_att, 0, 0, true);
  lgv = input(&rng, 2, (const int64_t[]){64, 32000}, 0, 0, true);
  labv = indices(1, (const int64_t[]){64}, 7919, 32000);
  idx3 = indices(1, (const int64_t[]){64}, 37, 256);
  gidx3 = indices(3, (const int64_t[]){64, 256, 8}, 37, 64);
  b4a = input(&rng, 4, (const int64_t[]){16, 1, 64, 256}, 0, 0, true);
  b4b = input(&rng, 4, (const int64_t[]){1, 8, 256, 64}, 0, 0, true);
  sh4b = input(&rng, 2, (const int64_t[]){65536, 4}, 0, 0, true);
  x64 = input(&rng, 2, (const int64_t[]){4096, 64}, 0, 0, true);
  c4 = input(&rng, 2, (const int64_t[]){65536, 1}, 0, 0, true);
  r4 = input(&rng, 1, (const int64_t[]){4}, 0, 0, true);
  c16 = input(&rng, 2, (const int64_t[]){16384, 1}, 0, 0, true);
  t8 = input(&rng, 3, (const int64_t[]){64, 256, 8}, 0, 0, true);
  m8 = input(&rng, 3, (const int64_t[]){64, 1, 8}, 0, 0, true);
  t44 = input(&rng, 3, (const int64_t[]){16384, 4, 4}, 0, 0, true);
  k4 = input(&rng, 3, (const int64_t[]){1, 4, 1}, 0, 0, true);
}

static void clear_grads(void) {
  ad_tensor *leaves[] = {a,     b,   p,   q,   sq,   bias, gamma_, beta,  emb,  logits, prob,
                         img,   w,   ch,  col, bq,   bk,   img2,   plane, gate, src,    row,
                         pcol,  px,  py,  sh4, sh16, lg2,  rows2k, t3,    tall, w16,    vec,
                         long2, bk2, e3,  aq,  ak,   av,   lgv,    b4a,   b4b,  sh4b,   x64,
                         c4,    r4,  c16, t8,  m8,   t44,  k4};
  for (size_t k = 0; k < sizeof leaves / sizeof *leaves; k++) ad_tensor_zero_grad(leaves[k]);
  for (int k = 0; k < 16; k++) ad_tensor_zero_grad(pieces[k]);
}

int main(int argc, char **argv) {
  scan_opts o;
  if (!scan_parse(argc, argv, "opscan", &o)) return 2;
  dtype = o.dtype;
  ctx = ad_ctx_new();
  if (!ctx || !bench_set_threads((int)o.threads)) {
    fprintf(stderr, "opscan: no context or threads\n");
    return 1;
  }
  make_inputs();
  scan_print_header("opscan", &o);
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    if (o.filter && !strstr(cases[c].name, o.filter)) continue;
    const char *name =
        dtype == AD_F64 && !strcmp(cases[c].name, "cast64") ? "cast32" : cases[c].name;
    if (!scan_case(ctx, "opscan", name, cases[c].fn, clear_grads, &o)) return 1;
  }
  ad_ctx_free(ctx);
  return 0;
}
