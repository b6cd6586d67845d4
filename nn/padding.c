/* padding.c: the padding modes of PyTorch's convolution layers
 * (padding_mode 'zeros', 'reflect', 'replicate', 'circular'), as F.pad
 * applies them to the last spatial axes before the convolution. One helper
 * for any number of spatial axes, so a layer of another rank reuses it.
 *
 * Up to three axes (every layer's case) are one ad_pad_nd, F.pad's own
 * op: one pass over the output, its gradient one pass over it. Beyond
 * three, zeros is ad_pad and the other modes a gather along each axis:
 * the axis swapped to the front (ad_transpose), its rows picked by a
 * constant AD_I32 index tensor (ad_index_select) and swapped back, with
 * output j of an axis of length n padded by lo before reading
 *   reflect    i = j - lo reflected at the ends (x[1], x[0], x[1], ...:
 *              the edge not repeated), PyTorch's ReflectionPad;
 *   replicate  i clamped to [0, n - 1], PyTorch's ReplicationPad;
 *   circular   i mod n (x[n - lo], ..., x[n - 1], x[0], ...), PyTorch's
 *              circular pad (a concatenation of slices there).
 * Each output reads one input element, so the values are x's bits; the
 * gradient is index_select's, adding up at an element read more than once
 * (as PyTorch's pad backward), and differentiable to any order. The modes
 * are separable, so padding the axes one after another gives PyTorch's
 * corners. The index tensors are arena tensors freed with the tape. */
#include "nn_internal.h"

#define I32_MAX INT64_C(2147483647)

const char *nn_padding_mode_name(nn_padding_mode mode) {
  switch (mode) {
  case NN_PADDING_ZEROS:
    return "zeros";
  case NN_PADDING_REFLECT:
    return "reflect";
  case NN_PADDING_REPLICATE:
    return "replicate";
  case NN_PADDING_CIRCULAR:
    return "circular";
  }
  return NULL;
}

ad_tensor *nn_take_axis(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *idx) {
  ad_tensor *xt = axis ? ad_transpose(ctx, x, 0, axis) : x;
  ad_tensor *y = ad_index_select(ctx, xt, idx);
  return axis && y ? ad_transpose(ctx, y, 0, axis) : y;
}

/* The source of output j of an axis of n padded by lo before. */
static int64_t pad_source(nn_padding_mode mode, int64_t j, int64_t lo, int64_t n) {
  int64_t i = j - lo;
  switch (mode) {
  case NN_PADDING_REPLICATE:
    return i < 0 ? 0 : i > n - 1 ? n - 1 : i;
  case NN_PADDING_CIRCULAR:
    return ((i % n) + n) % n;
  default: /* reflect */
    return i < 0 ? -i : i > n - 1 ? 2 * (n - 1) - i : i;
  }
}

ad_tensor *nn_pad_spatial(ad_ctx *ctx, const char *who, ad_tensor *x, int sp, const int64_t *pad,
                          nn_padding_mode mode) {
  if (!x) return NULL;
  char a[64];
  /* checked first on every axis, so a refused input records nothing */
  for (int k = 0; k < sp; k++) {
    int axis = x->ndim - 1 - k;
    int64_t n = x->shape[axis], lo = pad[2 * k], hi = pad[2 * k + 1];
    const char *bad = NULL;
    if (!lo && !hi)
      continue;
    else if (mode == NN_PADDING_ZEROS)
      continue;
    else if (n > I32_MAX)
      bad = "is longer than 2^31 - 1";
    else if (mode == NN_PADDING_REFLECT && (lo >= n || hi >= n))
      bad = "must be padded by less than its length in mode reflect";
    else if (mode == NN_PADDING_REPLICATE && n == 0)
      bad = "is empty, which mode replicate cannot pad";
    else if (mode == NN_PADDING_CIRCULAR && (lo > n || hi > n))
      bad = "must be padded by at most its length in mode circular (wrapping around once)";
    if (bad) {
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s: axis %d padded by (%lld, %lld) %s", who,
                   ad_shape_str(x, a, sizeof a), axis, (long long)lo, (long long)hi, bad);
      return NULL;
    }
  }
  bool any = false;
  for (int k = 0; k < 2 * sp; k++) any = any || pad[k];
  if (!any) return x;
  if (sp <= 3) { /* one pass: ad_pad_nd (pad's order is F.pad's) */
    static const ad_pad_mode modes[] = {AD_PAD_CONSTANT, AD_PAD_REFLECT, AD_PAD_REPLICATE,
                                        AD_PAD_CIRCULAR};
    return ad_pad_nd(ctx, x, sp, pad, modes[mode], 0.0);
  }
  ad_tensor *y = x;
  for (int k = 0; k < sp && y; k++) {
    int axis = x->ndim - 1 - k;
    int64_t n = x->shape[axis], lo = pad[2 * k], hi = pad[2 * k + 1], m = n + lo + hi;
    if (!lo && !hi) continue;
    if (mode == NN_PADDING_ZEROS) {
      y = ad_pad(ctx, y, axis, lo, hi);
      continue;
    }
    ad_tensor *idx = nn_tmp_tensor(ctx, AD_I32, 1, &m);
    if (!idx) return NULL;
    int32_t *d = idx->data;
    for (int64_t j = 0; j < m; j++) d[j] = (int32_t)pad_source(mode, j, lo, n);
    y = nn_take_axis(ctx, y, axis, idx);
  }
  return y;
}
