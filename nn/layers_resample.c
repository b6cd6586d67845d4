/* layers_resample.c: PyTorch's nn.Upsample, nn.PixelShuffle,
 * nn.PixelUnshuffle, the padding layers (ZeroPad2d, ConstantPad1d/2d/3d,
 * ReflectionPad1d/2d/3d, ReplicationPad1d/2d/3d), nn.Dropout1d / 2d / 3d,
 * nn.Identity and nn.Unflatten. Composites of public ops, so every
 * gradient is the tape's and differentiable to any order; this file holds
 * PyTorch's index rules and the checks that name the layer.
 *
 * Resampling an axis is a gather along it: its rows picked by a constant
 * AD_I32 index tensor (ad_index_select_axis, one pass, whose gradient adds
 * up at a row read twice). Nearest is one gather; linear and bicubic are
 * ad_resample_axis with [taps, out] indices and weights: linear two taps,
 * y = x[i0] w0 + x[i1] w1 (PyTorch's lambda0, lambda1), bicubic four
 * (x[k - 1 .. k + 2], clamped, times Keys' weights), summed in one pass,
 * so an inf or NaN reaches only the outputs that read it, as in PyTorch.
 * The index and weight tensors are arena tensors built in each forward
 * for the input's lengths (no state to go stale) and freed with the
 * tape. Reflection and replication padding are the same
 * gather with reflected or clamped indices. */
#include "nn_internal.h"

#include <math.h>

#define I32_MAX     INT64_C(2147483647)
#define SHUFFLE_MAX (INT64_C(1) << 20)

typedef enum rs_kind {
  RS_UPSAMPLE,
  RS_SHUFFLE,
  RS_UNSHUFFLE,
  RS_PAD_CONST,
  RS_PAD_REFLECT,
  RS_PAD_REPLICATE,
  RS_DROPOUT,
  RS_IDENTITY,
  RS_UNFLATTEN
} rs_kind;

typedef struct rs_state {
  rs_kind kind;
  int dims;            /* pads and dropout: spatial dims, 1 to 3 */
  nn_upsample_opts up; /* upsample */
  int up_n;            /* upsample: entries of size or scale_factor given, 1..3 */
  bool up_same;        /* upsample: all entries equal (any rank takes them) */
  int64_t r;           /* (un)shuffle factor */
  int64_t pad[6];      /* left, right, top, bottom, front, back */
  double value;        /* constant pad */
  bool zero;           /* ZeroPad2d's repr */
  double p;            /* dropout */
  ad_rng rng;
  int dim, n; /* unflatten */
  int64_t sizes[AD_MAX_DIMS];
} rs_state;

static nn_layer *rs_layer(ad_ctx *ctx, const char *kind, const rs_state *init);

static const char *mode_name(nn_upsample_mode m) {
  switch (m) {
  case NN_UPSAMPLE_NEAREST:
    return "nearest";
  case NN_UPSAMPLE_NEAREST_EXACT:
    return "nearest-exact";
  case NN_UPSAMPLE_LINEAR:
    return "linear";
  case NN_UPSAMPLE_BILINEAR:
    return "bilinear";
  case NN_UPSAMPLE_BICUBIC:
    return "bicubic";
  case NN_UPSAMPLE_TRILINEAR:
    return "trilinear";
  }
  return "?";
}

/* ------------------------------------------------------------- gathers */

/* An arena AD_I32 vector of n indices (filled by the caller). */
static ad_tensor *index_vec(ad_ctx *ctx, int64_t n) { return nn_tmp_tensor(ctx, AD_I32, 1, &n); }

/* The taps of a resampling to n positions (filled by the caller): *idx
 * AD_I32 and *w of dtype, both [taps, n], tap j of position i at j n + i
 * (ad_resample_axis: x[idx[0, i]] w[0, i] + ... summed left to right, one
 * pass along the axis, whose gradient adds up at a row read twice). */
static bool taps_new(ad_ctx *ctx, ad_dtype dtype, int64_t taps, int64_t n, ad_tensor **idx,
                     ad_tensor **w) {
  int64_t s[2] = {taps, n};
  *idx = nn_tmp_tensor(ctx, AD_I32, 2, s);
  *w = nn_tmp_tensor(ctx, dtype, 2, s);
  return *idx && *w;
}

/* ------------------------------------------------------------ upsample */

/* PyTorch 1.13's compute_scales_value<float>: 1 / scale when one is used,
 * else in / out, in float. */
static float nearest_scale(double sf, int64_t in, int64_t out) {
  return sf > 0 ? (float)(1.0 / sf) : (float)in / (float)out;
}

/* Keys' cubic convolution with A = -0.75, PyTorch's cubic_convolution1
 * (|d| <= 1) and cubic_convolution2 (1 < |d| < 2), in float and double:
 * w = (weights of x[k - 1], x[k], x[k + 1], x[k + 2]) at t = x - k, as
 * get_cubic_upsample_coefficients */
static float cubic1f(float d, float a) { return ((a + 2) * d - (a + 3)) * d * d + 1; }
static float cubic2f(float d, float a) { return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a; }
static double cubic1d(double d, double a) { return ((a + 2) * d - (a + 3)) * d * d + 1; }
static double cubic2d(double d, double a) { return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a; }

static void cubic_weights_f(float t, float w[4]) {
  const float a = -0.75f;
  float u = (float)(1.0 - (double)t);
  w[0] = cubic2f((float)((double)t + 1.0), a);
  w[1] = cubic1f(t, a);
  w[2] = cubic1f(u, a);
  w[3] = cubic2f((float)((double)u + 1.0), a);
}

static void cubic_weights_d(double t, double w[4]) {
  const double a = -0.75;
  double u = 1.0 - t;
  w[0] = cubic2d(t + 1.0, a);
  w[1] = cubic1d(t, a);
  w[2] = cubic1d(u, a);
  w[3] = cubic2d(u + 1.0, a);
}

/* Bicubic along axis (length in) to out: PyTorch 1.13's HelperInterpCubic
 * (area_pixel_compute_source_index with cubic = true: no clamp at 0; k =
 * floorf(x), also for double; indices k - 1 + j clamped to the axis,
 * weights not renormalised), in the dtype's arithmetic. No shortcut for
 * out = in: PyTorch's kernel has none (its weights are then 0 1 0 0). */
static ad_tensor *bicubic_axis(ad_ctx *ctx, ad_tensor *x, int axis, int64_t out, double sf,
                               const nn_upsample_opts *o) {
  int64_t in = x->shape[axis];
  ad_tensor *idx, *w;
  if (!taps_new(ctx, x->dtype, 4, out, &idx, &w)) return NULL;
  for (int64_t i = 0; i < out; i++) {
    int64_t k;
    double wt[4];
    if (x->dtype == AD_F32) {
      float s = o->align_corners ? (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f)
                                 : nearest_scale(sf, in, out);
      float src = o->align_corners ? s * (float)i : s * ((float)i + 0.5f) - 0.5f;
      float wf[4];
      k = (int64_t)floorf(src);
      cubic_weights_f(src - (float)k, wf);
      for (int j = 0; j < 4; j++) wt[j] = wf[j];
    } else {
      double s = o->align_corners ? (out > 1 ? (double)(in - 1) / (double)(out - 1) : 0.0)
                 : sf > 0         ? 1.0 / sf
                                  : (double)in / (double)out;
      double src = o->align_corners ? s * (double)i : s * ((double)i + 0.5) - 0.5;
      k = (int64_t)floorf((float)src);
      cubic_weights_d(src - (double)k, wt);
    }
    for (int j = 0; j < 4; j++) {
      int64_t m = k - 1 + j;
      ((int32_t *)idx->data)[j * out + i] = (int32_t)(m < 0 ? 0 : m > in - 1 ? in - 1 : m);
      ad_tensor_set(w, j * out + i, wt[j]);
    }
  }
  return ad_resample_axis(ctx, x, axis, idx, w);
}

/* Resamples axis (of length in) to out; sf the scale factor the kernels
 * see (0: none). NULL with the error recorded. */
static ad_tensor *upsample_axis(ad_ctx *ctx, ad_tensor *x, int axis, int64_t out, double sf,
                                const nn_upsample_opts *o) {
  int64_t in = x->shape[axis];
  bool nearest = o->mode == NN_UPSAMPLE_NEAREST || o->mode == NN_UPSAMPLE_NEAREST_EXACT;
  if (o->mode == NN_UPSAMPLE_BICUBIC) return bicubic_axis(ctx, x, axis, out, sf, o);
  if (in == out && !nearest) return x; /* PyTorch's linear kernels copy */
  if (nearest) {
    ad_tensor *i0 = index_vec(ctx, out);
    if (!i0) return NULL;
    int32_t *a = i0->data;
    /* PyTorch's forward (upsample_nearest1d, and 2d on a [N, C, H, W]
     * layout) has no shortcut for out = in or 2 in: with a scale factor
     * other than 1 or 2 those lengths pick floor(i * s) too (its backward
     * and its channels-last kernel take the shortcuts; we follow the
     * forward, and the tape differentiates what it computed) */
    float s = nearest_scale(sf, in, out);
    bool same = in == out;
    /* but a [N, 1, H, W] or [N, 1, D, H, W] input is also channels-last
     * contiguous, and PyTorch 1.13 runs its channels-last kernel on it,
     * whose nearest_idx copies when out = in and takes i / 2 when out =
     * 2 in (so its forward and backward agree there) */
    bool cl = o->mode == NN_UPSAMPLE_NEAREST && x->ndim >= 4 && x->shape[1] == 1;
    for (int64_t i = 0; i < out; i++) {
      int64_t k;
      if (cl && out == in)
        k = i;
      else if (cl && out == 2 * in)
        k = i / 2;
      else if (o->mode == NN_UPSAMPLE_NEAREST_EXACT)
        k = (int64_t)floorf((float)(((double)i + 0.5) * s));
      else
        k = (int64_t)floorf((float)i * s);
      a[i] = (int32_t)(k < in - 1 ? k : in - 1);
      same = same && a[i] == i;
    }
    return same ? x : ad_index_select_axis(ctx, x, axis, i0);
  }
  ad_tensor *ix, *w;
  if (!taps_new(ctx, x->dtype, 2, out, &ix, &w)) return NULL;
  int32_t *a = ix->data, *b = a + out; /* taps 0 and 1 */
  /* area_pixel_compute_scale / _source_index and
   * compute_source_index_and_lambda, in the dtype's arithmetic */
  for (int64_t i = 0; i < out; i++) {
    int64_t k;
    double l1;
    if (x->dtype == AD_F32) {
      float s = o->align_corners ? (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f)
                                 : nearest_scale(sf, in, out);
      float src = o->align_corners ? s * (float)i : (float)((double)s * ((double)i + 0.5) - 0.5);
      if (src < 0) src = 0;
      k = (int64_t)src;
      float f = src - (float)k;
      l1 = f < 0 ? 0 : f > 1 ? 1 : f;
      ad_tensor_set(w, i, (double)(1.0f - (float)l1));
    } else {
      double s = o->align_corners ? (out > 1 ? (double)(in - 1) / (double)(out - 1) : 0.0)
                 : sf > 0         ? 1.0 / sf
                                  : (double)in / (double)out;
      double src = o->align_corners ? s * (double)i : s * ((double)i + 0.5) - 0.5;
      if (src < 0) src = 0; /* PyTorch's clamp; trunc and the lambda clamp agree anyway */
      k = (int64_t)src;
      double f = src - (double)k;
      l1 = f < 0 ? 0 : f > 1 ? 1 : f;
      ad_tensor_set(w, i, 1.0 - l1);
    }
    if (k > in - 1) k = in - 1; /* not reached by PyTorch's rules; kept in range */
    ad_tensor_set(w, out + i, l1);
    a[i] = (int32_t)k;
    b[i] = (int32_t)(k < in - 1 ? k + 1 : k);
  }
  return ad_resample_axis(ctx, x, axis, ix, w);
}

static ad_tensor *upsample_forward(nn_layer *l, rs_state *s, ad_tensor *x) {
  ad_ctx *ctx = nn_layer_ctx(l);
  const nn_upsample_opts *o = &s->up;
  char who[96], a[64], bad_n[64];
  static const char *const count[4] = {"", "one", "two", "three"};
  int sp = x->ndim - 2;
  const char *bad = NULL;
  bool four = o->mode == NN_UPSAMPLE_BILINEAR || o->mode == NN_UPSAMPLE_BICUBIC;
  if (x->ndim < 3 || x->ndim > 5)
    bad = "must be [N, C, L], [N, C, H, W] or [N, C, D, H, W]";
  else if (o->mode == NN_UPSAMPLE_LINEAR && x->ndim != 3)
    bad = "must be [N, C, L] for mode linear";
  else if (four && x->ndim != 4)
    bad = o->mode == NN_UPSAMPLE_BILINEAR ? "must be [N, C, H, W] for mode bilinear"
                                          : "must be [N, C, H, W] for mode bicubic";
  else if (o->mode == NN_UPSAMPLE_TRILINEAR && x->ndim != 5)
    bad = "must be [N, C, D, H, W] for mode trilinear";
  else if (s->up_n != sp && !s->up_same) {
    snprintf(bad_n, sizeof bad_n, "is %d-D but the layer has %s sizes or scale factors", sp,
             count[s->up_n]);
    bad = bad_n;
  }
  if (bad) {
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s %s", who, ad_shape_str(x, a, sizeof a), bad);
    return NULL;
  }
  if (!nn_layer_float_input(l, x)) return NULL;
  int64_t out[3];
  double sfs[3];
  for (int d = 0; d < sp; d++) {
    int64_t in = x->shape[2 + d];
    int e = s->up_n == sp ? d : 0; /* the entry for this axis */
    double sf = sfs[d] = o->scale_factor[e];
    double want = o->size[0] ? (double)o->size[e] : floor((double)in * sf);
    if (in < 1 || in > I32_MAX || !(want >= 1 && want <= (double)I32_MAX)) {
      nn_layer_who(l, who, sizeof who);
      ad_set_error(ctx, AD_ERR_SHAPE,
                   "%s: input %s: spatial axis %d of length %lld gives %.17g; both must be in "
                   "[1, 2^31 - 1]",
                   who, ad_shape_str(x, a, sizeof a), 2 + d, (long long)in, want);
      return NULL;
    }
    out[d] = (int64_t)want;
  }
  ad_tensor *y = x;
  for (int d = sp - 1; d >= 0 && y; d--) {
    double sf = o->size[0] || o->recompute_scale_factor ? 0 : sfs[d];
    y = upsample_axis(ctx, y, 2 + d, out[d], sf, o);
  }
  return y;
}

nn_layer *nn_upsample_new(ad_ctx *ctx, const nn_upsample_opts *opts) {
  if (!ctx) return NULL;
  nn_upsample_opts o = {0};
  if (opts) o = *opts;
  const char *bad = NULL;
  bool has_size = o.size[0] || o.size[1] || o.size[2],
       has_scale = o.scale_factor[0] || o.scale_factor[1] || o.scale_factor[2];
  bool sizes_ok = o.size[0] >= 1 && o.size[0] <= I32_MAX,
       scales_ok = o.scale_factor[0] > 0 && isfinite(o.scale_factor[0]);
  for (int d = 1; d < 3; d++) {
    sizes_ok = sizes_ok && o.size[d] >= 0 && o.size[d] <= I32_MAX && (o.size[d - 1] || !o.size[d]);
    scales_ok = scales_ok && o.scale_factor[d] >= 0 && isfinite(o.scale_factor[d]) &&
                (o.scale_factor[d - 1] || !o.scale_factor[d]);
  }
  if ((unsigned)o.mode > NN_UPSAMPLE_TRILINEAR)
    bad = "unknown mode";
  else if (has_size == has_scale)
    bad = "give either size or scale_factor";
  else if (has_size && !sizes_ok)
    bad = "sizes must be in [1, 2^31 - 1] (0 after the last entry given)";
  else if (has_scale && !scales_ok)
    bad = "scale factors must be finite and > 0 (0 after the last entry given)";
  else if (o.align_corners &&
           (o.mode == NN_UPSAMPLE_NEAREST || o.mode == NN_UPSAMPLE_NEAREST_EXACT))
    bad = "align_corners is for the linear modes only";
  else if (o.recompute_scale_factor && has_size)
    bad = "recompute_scale_factor is not meaningful with a size";
  if (bad) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "upsample: %s (mode %d, size %lldx%lld, scale_factor %gx%g, align_corners %d)",
                 bad, (int)o.mode, (long long)o.size[0], (long long)o.size[1], o.scale_factor[0],
                 o.scale_factor[1], (int)o.align_corners);
    return NULL;
  }
  rs_state s = {.kind = RS_UPSAMPLE, .up = o, .up_n = 1, .up_same = true};
  for (int d = 1; d < 3; d++)
    if (has_size ? o.size[d] : o.scale_factor[d]) {
      s.up_n = d + 1;
      s.up_same = s.up_same && o.size[d] == o.size[0] && o.scale_factor[d] == o.scale_factor[0];
    }
  return rs_layer(ctx, "upsample", &s);
}

/* ------------------------------------------------------- pixel shuffle */

/* [.., C r^2, H, W] -> [.., C, r, r, H, W] -> [.., C, H, r, W, r] -> [..,
 * C, H r, W r]; unshuffle the reverse. b leading dims (0 or 1). */
static ad_tensor *shuffle_forward(nn_layer *l, rs_state *s, ad_tensor *x) {
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  int64_t r = s->r;
  bool up = s->kind == RS_SHUFFLE;
  if (x->ndim != 3 && x->ndim != 4) {
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be [N, C, H, W] or [C, H, W]", who,
                 ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  int b = x->ndim - 3;
  int64_t c = x->shape[b], h = x->shape[b + 1], w = x->shape[b + 2];
  if (up ? c % (r * r) : h % r || w % r) {
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s: %s divisible by %lld", who,
                 ad_shape_str(x, a, sizeof a),
                 up ? "the channel count must be" : "the height and width must be",
                 (long long)(up ? r * r : r));
    return NULL;
  }
  int64_t v[7];
  int p[7];
  if (b) v[0] = x->shape[0], p[0] = 0;
  if (up) { /* [C, r, r, H, W] -> [C, H, r, W, r] */
    int64_t vs[5] = {c / (r * r), r, r, h, w};
    int ps[5] = {0, 3, 1, 4, 2};
    for (int d = 0; d < 5; d++) v[b + d] = vs[d], p[b + d] = b + ps[d];
  } else { /* [C, H/r, r, W/r, r] -> [C, r, r, H/r, W/r] */
    int64_t vs[5] = {c, h / r, r, w / r, r};
    int ps[5] = {0, 2, 4, 1, 3};
    for (int d = 0; d < 5; d++) v[b + d] = vs[d], p[b + d] = b + ps[d];
  }
  ad_tensor *y = ad_permute(ctx, ad_reshape(ctx, x, b + 5, v), p);
  int64_t o[4];
  if (b) o[0] = x->shape[0];
  o[b] = up ? c / (r * r) : c * r * r;
  o[b + 1] = up ? h * r : h / r;
  o[b + 2] = up ? w * r : w / r;
  return ad_reshape(ctx, y, b + 3, o);
}

static nn_layer *shuffle_new(ad_ctx *ctx, rs_kind kind, int64_t r) {
  if (!ctx) return NULL;
  const char *name = kind == RS_SHUFFLE ? "pixel_shuffle" : "pixel_unshuffle";
  if (r < 1 || r > SHUFFLE_MAX) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: factor %lld must be in [1, 2^20]", name, (long long)r);
    return NULL;
  }
  rs_state s = {.kind = kind, .r = r};
  return rs_layer(ctx, name, &s);
}

nn_layer *nn_pixel_shuffle_new(ad_ctx *ctx, int64_t upscale_factor) {
  return shuffle_new(ctx, RS_SHUFFLE, upscale_factor);
}

nn_layer *nn_pixel_unshuffle_new(ad_ctx *ctx, int64_t downscale_factor) {
  return shuffle_new(ctx, RS_UNSHUFFLE, downscale_factor);
}

/* ------------------------------------------------------------- padding */

/* Axis axis of x (length n) padded by lo before and hi after (negative:
 * cropped), output length m = n + lo + hi (checked >= 0). */
static ad_tensor *pad_const_axis(ad_ctx *ctx, ad_tensor *x, int axis, int64_t lo, int64_t hi) {
  int64_t n = x->shape[axis];
  if (lo < 0 || hi < 0) /* crop first: what is kept is within x */
    x = ad_narrow(ctx, x, axis, lo < 0 ? -lo : 0, n - (lo < 0 ? -lo : 0) - (hi < 0 ? -hi : 0));
  if (x && (lo > 0 || hi > 0)) x = ad_pad(ctx, x, axis, lo > 0 ? lo : 0, hi > 0 ? hi : 0);
  return x;
}

/* The reflected (x[1], x[0], x[1], ...) or clamped source of output j of
 * an axis of n padded by lo before. */
static int64_t pad_source(rs_kind kind, int64_t j, int64_t lo, int64_t n) {
  int64_t i = j - lo;
  if (kind == RS_PAD_REPLICATE) return i < 0 ? 0 : i > n - 1 ? n - 1 : i;
  return i < 0 ? -i : i > n - 1 ? 2 * (n - 1) - i : i;
}

/* The inputs of the padding layers with 1, 2 or 3 spatial dims. */
static const char *const pad_layouts[4] = {"", "[N, C, L] or [C, L]", "[N, C, H, W] or [C, H, W]",
                                           "[N, C, D, H, W] or [C, D, H, W]"};

static ad_tensor *pad_forward(nn_layer *l, rs_state *s, ad_tensor *x) {
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  int sp = s->dims;
  if (x->ndim != sp + 1 && x->ndim != sp + 2) {
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be %s", who, ad_shape_str(x, a, sizeof a),
                 pad_layouts[sp]);
    return NULL;
  }
  if (!nn_layer_float_input(l, x)) return NULL;
  if (s->kind == RS_PAD_CONST) {
    nn_layer_who(l, who, sizeof who);
    if (!nn_f32_setting_ok(ctx, who, x, "value", s->value)) return NULL;
  }
  /* pad[0..1] is the last axis, pad[2..3] the one before, and so on, as
   * PyTorch's */
  int64_t m[3];
  for (int k = 0; k < sp; k++) {
    int axis = x->ndim - 1 - k;
    int64_t n = x->shape[axis], lo = s->pad[2 * k], hi = s->pad[2 * k + 1];
    m[k] = n + lo + hi;
    const char *bad = NULL;
    if (s->kind == RS_PAD_CONST && m[k] < 0)
      bad = "gives a negative length";
    else if (s->kind == RS_PAD_CONST && n + (lo < 0 ? lo : 0) + (hi < 0 ? hi : 0) < 0)
      bad = "crops more than the axis length"; /* PyTorch's narrow refuses it too */
    else if (s->kind == RS_PAD_REPLICATE && n == 0)
      bad = "replicates an empty axis"; /* (PyTorch refuses it too) */
    else if (s->kind != RS_PAD_CONST && (m[k] < 1 || n > I32_MAX))
      bad = "gives a length outside [1, 2^31 - 1]";
    else if (s->kind == RS_PAD_REFLECT && (lo >= n || hi >= n))
      bad = "must pad by less than the axis length";
    if (bad) {
      nn_layer_who(l, who, sizeof who);
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s: padding (%lld, %lld) of axis %d %s", who,
                   ad_shape_str(x, a, sizeof a), (long long)lo, (long long)hi, axis, bad);
      return NULL;
    }
  }
  /* One pass (ad_pad_nd, F.pad's op) unless a constant pad crops */
  bool crops = false, any = false;
  for (int k = 0; k < 2 * sp; k++) crops = crops || s->pad[k] < 0, any = any || s->pad[k];
  if (!any) return x;
  if (!crops)
    return ad_pad_nd(ctx, x, sp, s->pad,
                     s->kind == RS_PAD_CONST     ? AD_PAD_CONSTANT
                     : s->kind == RS_PAD_REFLECT ? AD_PAD_REFLECT
                                                 : AD_PAD_REPLICATE,
                     s->value);
  ad_tensor *y = x;
  for (int k = 0; k < sp && y; k++) {
    int axis = x->ndim - 1 - k;
    int64_t n = x->shape[axis], lo = s->pad[2 * k], hi = s->pad[2 * k + 1];
    if (!lo && !hi) continue;
    if (s->kind == RS_PAD_CONST) {
      y = pad_const_axis(ctx, y, axis, lo, hi);
      continue;
    }
    ad_tensor *idx = index_vec(ctx, m[k]);
    if (!idx) return NULL;
    int32_t *d = idx->data;
    for (int64_t j = 0; j < m[k]; j++) d[j] = (int32_t)pad_source(s->kind, j, lo, n);
    y = ad_index_select_axis(ctx, y, axis, idx);
  }
  if (!y || s->kind != RS_PAD_CONST || (s->value == 0 && !signbit(s->value))) return y;
  /* the border takes value: where(inside, y, value), inside a constant
   * [D', H', W'] (or [H', W'], [L']) mask broadcast over the leading axes */
  bool border = false;
  for (int k = 0; k < 2 * sp; k++) border = border || s->pad[k] > 0;
  if (!border || y->size == 0) return y;
  int64_t ms[3];
  for (int k = 0; k < sp; k++) ms[sp - 1 - k] = m[k];
  ad_tensor *in = nn_tmp_tensor(ctx, x->dtype, sp, ms);
  if (!in) return NULL;
  for (int64_t i = 0; i < in->size; i++) {
    bool inside = true;
    int64_t rest = i;
    for (int k = 0; k < sp; k++) { /* k = 0: the last axis */
      int64_t j = rest % m[k];
      rest /= m[k];
      inside = inside && j >= s->pad[2 * k] && j < m[k] - s->pad[2 * k + 1];
    }
    ad_tensor_set(in, i, inside ? 1 : 0);
  }
  return ad_where(ctx, in, y, ad_scalar(ctx, x->dtype, s->value));
}

static nn_layer *pad_new(ad_ctx *ctx, const char *name, rs_kind kind, int dims, const int64_t *pad,
                         double value) {
  if (!ctx) return NULL;
  if (!pad) {
    ad_set_error(ctx, AD_ERR_NULL, "%s: pad is NULL", name);
    return NULL;
  }
  rs_state s = {.kind = kind, .dims = dims, .value = value, .zero = !strcmp(name, "zero_pad2d")};
  for (int k = 0; k < 2 * dims; k++) {
    if (pad[k] < -I32_MAX || pad[k] > I32_MAX) {
      ad_set_error(ctx, AD_ERR_ARG, "%s: padding %lld (entry %d) is outside +-(2^31 - 1)", name,
                   (long long)pad[k], k);
      return NULL;
    }
    s.pad[k] = pad[k];
  }
  return rs_layer(ctx, name, &s);
}

nn_layer *nn_zero_pad2d_new(ad_ctx *ctx, const int64_t pad[4]) {
  return pad_new(ctx, "zero_pad2d", RS_PAD_CONST, 2, pad, 0);
}
nn_layer *nn_constant_pad1d_new(ad_ctx *ctx, const int64_t pad[2], double value) {
  return pad_new(ctx, "constant_pad1d", RS_PAD_CONST, 1, pad, value);
}
nn_layer *nn_constant_pad2d_new(ad_ctx *ctx, const int64_t pad[4], double value) {
  return pad_new(ctx, "constant_pad2d", RS_PAD_CONST, 2, pad, value);
}
nn_layer *nn_reflection_pad1d_new(ad_ctx *ctx, const int64_t pad[2]) {
  return pad_new(ctx, "reflection_pad1d", RS_PAD_REFLECT, 1, pad, 0);
}
nn_layer *nn_reflection_pad2d_new(ad_ctx *ctx, const int64_t pad[4]) {
  return pad_new(ctx, "reflection_pad2d", RS_PAD_REFLECT, 2, pad, 0);
}
nn_layer *nn_replication_pad1d_new(ad_ctx *ctx, const int64_t pad[2]) {
  return pad_new(ctx, "replication_pad1d", RS_PAD_REPLICATE, 1, pad, 0);
}
nn_layer *nn_replication_pad2d_new(ad_ctx *ctx, const int64_t pad[4]) {
  return pad_new(ctx, "replication_pad2d", RS_PAD_REPLICATE, 2, pad, 0);
}
nn_layer *nn_constant_pad3d_new(ad_ctx *ctx, const int64_t pad[6], double value) {
  return pad_new(ctx, "constant_pad3d", RS_PAD_CONST, 3, pad, value);
}
nn_layer *nn_reflection_pad3d_new(ad_ctx *ctx, const int64_t pad[6]) {
  return pad_new(ctx, "reflection_pad3d", RS_PAD_REFLECT, 3, pad, 0);
}
nn_layer *nn_replication_pad3d_new(ad_ctx *ctx, const int64_t pad[6]) {
  return pad_new(ctx, "replication_pad3d", RS_PAD_REPLICATE, 3, pad, 0);
}

/* ----------------------------------------------------- channel dropout */

/* y = x * m, m [N, C, 1, ...] (or [C, 1, ...]): nn_dropout_apply's mask
 * drawn on ones of that shape (ones * m = m, a constant), broadcast.
 * Dropout1d and Dropout3d take their rank and the unbatched one below;
 * Dropout2d takes [N, C, H, W] and, as PyTorch 1.13's, [N, C, L]. */
static ad_tensor *dropout_forward(nn_layer *l, rs_state *s, ad_tensor *x, bool training) {
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  static const char *const layouts[4] = {"", "[N, C, L] or [C, L]", "[N, C, H, W] or [N, C, L]",
                                         "[N, C, D, H, W] or [C, D, H, W]"};
  int top = s->dims + 2; /* the batched rank */
  if (x->ndim != top && x->ndim != top - 1) {
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be %s", who, ad_shape_str(x, a, sizeof a),
                 layouts[s->dims]);
    return NULL;
  }
  if (!nn_layer_float_input(l, x)) return NULL;
  if (!training || s->p == 0) return x;
  /* Dropout2d's 3-D input is [N, C, L] */
  int lead = x->ndim == top || s->dims == 2 ? 2 : 1;
  int64_t ms[AD_MAX_DIMS];
  for (int d = 0; d < x->ndim; d++) ms[d] = d < lead ? x->shape[d] : 1;
  ad_tensor *ones = nn_tmp_tensor(ctx, x->dtype, x->ndim, ms);
  if (!ones) return NULL;
  for (int64_t i = 0; i < ones->size; i++) ad_tensor_set(ones, i, 1);
  ad_rng before = s->rng; /* a call that fails takes no draw */
  ad_tensor *y = ad_mul(ctx, x, nn_dropout_apply(ctx, ones, s->p, &s->rng));
  if (!y) s->rng = before;
  return y;
}

static nn_layer *dropout_new(ad_ctx *ctx, int dims, double p, uint64_t seed) {
  if (!ctx) return NULL;
  const char *name = dims == 1 ? "dropout1d" : dims == 2 ? "dropout2d" : "dropout3d";
  if (!(p >= 0 && p < 1)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: p = %g is outside [0, 1)", name, p);
    return NULL;
  }
  rs_state s = {.kind = RS_DROPOUT, .dims = dims, .p = p};
  ad_rng_seed(&s.rng, seed);
  return rs_layer(ctx, name, &s);
}

nn_layer *nn_dropout1d_new(ad_ctx *ctx, double p, uint64_t seed) {
  return dropout_new(ctx, 1, p, seed);
}
nn_layer *nn_dropout2d_new(ad_ctx *ctx, double p, uint64_t seed) {
  return dropout_new(ctx, 2, p, seed);
}
nn_layer *nn_dropout3d_new(ad_ctx *ctx, double p, uint64_t seed) {
  return dropout_new(ctx, 3, p, seed);
}

/* ------------------------------------------------- identity, unflatten */

nn_layer *nn_identity_new(ad_ctx *ctx) {
  if (!ctx) return NULL;
  rs_state s = {.kind = RS_IDENTITY};
  return rs_layer(ctx, "identity", &s);
}

static ad_tensor *unflatten_forward(nn_layer *l, rs_state *s, ad_tensor *x) {
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  int dim = s->dim < 0 ? s->dim + x->ndim : s->dim;
  const char *bad = NULL;
  int64_t prod = 1, shape[AD_MAX_DIMS];
  int free_at = -1;
  if (dim < 0 || dim >= x->ndim)
    bad = "has no such dim";
  else if (x->ndim - 1 + s->n > AD_MAX_DIMS)
    bad = "would have more than AD_MAX_DIMS dims";
  else {
    for (int k = 0; k < s->n; k++) {
      if (s->sizes[k] == -1)
        free_at = k;
      else if (s->sizes[k] > x->shape[dim] / prod) { /* no overflow: prod stays <= the length */
        prod = -1;
        break;
      } else
        prod *= s->sizes[k];
    }
    if (prod < 0 || (free_at < 0 ? prod != x->shape[dim] : x->shape[dim] % prod))
      bad = "does not match the sizes";
  }
  if (bad) {
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s %s (dim %d, %d sizes)", who,
                 ad_shape_str(x, a, sizeof a), bad, s->dim, s->n);
    return NULL;
  }
  int nd = 0;
  for (int d = 0; d < x->ndim; d++) {
    if (d != dim) {
      shape[nd++] = x->shape[d];
      continue;
    }
    for (int k = 0; k < s->n; k++) shape[nd++] = k == free_at ? x->shape[dim] / prod : s->sizes[k];
  }
  return ad_reshape(ctx, x, nd, shape);
}

nn_layer *nn_unflatten_new(ad_ctx *ctx, int dim, int n, const int64_t *sizes) {
  if (!ctx) return NULL;
  if (!sizes) {
    ad_set_error(ctx, AD_ERR_NULL, "unflatten: sizes is NULL");
    return NULL;
  }
  if (n < 1 || n > AD_MAX_DIMS || dim < -AD_MAX_DIMS || dim >= AD_MAX_DIMS) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "unflatten: %d sizes at dim %d: n must be in [1, %d] and dim in [-%d, %d]", n, dim,
                 AD_MAX_DIMS, AD_MAX_DIMS, AD_MAX_DIMS - 1);
    return NULL;
  }
  rs_state s = {.kind = RS_UNFLATTEN, .dim = dim, .n = n};
  int frees = 0;
  for (int k = 0; k < n; k++) {
    frees += sizes[k] == -1;
    if ((sizes[k] < 1 && sizes[k] != -1) || sizes[k] > (INT64_C(1) << 40) || frees > 1) {
      ad_set_error(ctx, AD_ERR_ARG,
                   "unflatten: size %lld (entry %d) must be in [1, 2^40], or one -1",
                   (long long)sizes[k], k);
      return NULL;
    }
    s.sizes[k] = sizes[k];
  }
  return rs_layer(ctx, "unflatten", &s);
}

/* --------------------------------------------------------------- layer */

static ad_tensor *rs_forward(nn_layer *l, ad_tensor *x, bool training) {
  rs_state *s = nn_layer_state(l);
  switch (s->kind) {
  case RS_UPSAMPLE:
    return upsample_forward(l, s, x);
  case RS_SHUFFLE:
  case RS_UNSHUFFLE:
    return shuffle_forward(l, s, x);
  case RS_PAD_CONST:
  case RS_PAD_REFLECT:
  case RS_PAD_REPLICATE:
    return pad_forward(l, s, x);
  case RS_DROPOUT:
    return dropout_forward(l, s, x, training);
  case RS_UNFLATTEN:
    return unflatten_forward(l, s, x);
  case RS_IDENTITY:
    break;
  }
  return x;
}

static void rs_free(nn_layer *l) {
  rs_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* "(1, 2, 3, 4)" */
static void pads_text(nn_text *t, const int64_t *p, int n) {
  nn_text_add(t, "(");
  for (int k = 0; k < n; k++) nn_text_add(t, "%s%lld", k ? ", " : "", (long long)p[k]);
  nn_text_add(t, ")");
}

/* PyTorch 1.13's reprs: Upsample "size=5, mode=nearest" or
 * "scale_factor=(2.0, 1.5), mode=bilinear" (align_corners=True added, which
 * PyTorch leaves out), PixelShuffle "upscale_factor=2", ZeroPad2d "(1, 2,
 * 3, 4)", ConstantPad1d "padding=(2, 2), value=3.5", ReflectionPad2d "(1,
 * 1, 1, 1)", Dropout2d "p=0.5, inplace=False", Identity "", Unflatten
 * "dim=1, unflattened_size=(2, 3)". */
static void rs_describe(const nn_layer *l, nn_text *t) {
  const rs_state *s = nn_layer_state(l);
  const nn_upsample_opts *o = &s->up;
  switch (s->kind) {
  case RS_UPSAMPLE:
    nn_text_add(t, o->size[0] ? "size=%s" : "scale_factor=%s", s->up_n > 1 ? "(" : "");
    for (int d = 0; d < s->up_n; d++) {
      if (d) nn_text_add(t, ", ");
      if (o->size[0])
        nn_text_add(t, "%lld", (long long)o->size[d]);
      else
        nn_text_num(t, o->scale_factor[d]);
    }
    if (s->up_n > 1) nn_text_add(t, ")");
    nn_text_add(t, ", mode=%s", mode_name(o->mode));
    if (o->align_corners) nn_text_add(t, ", align_corners=True");
    break;
  case RS_SHUFFLE:
    nn_text_add(t, "upscale_factor=%lld", (long long)s->r);
    break;
  case RS_UNSHUFFLE:
    nn_text_add(t, "downscale_factor=%lld", (long long)s->r);
    break;
  case RS_PAD_CONST:
    if (s->zero) {
      pads_text(t, s->pad, 4);
      break;
    }
    nn_text_add(t, "padding=");
    pads_text(t, s->pad, 2 * s->dims);
    nn_text_add(t, ", value=");
    nn_text_num(t, s->value);
    break;
  case RS_PAD_REFLECT:
  case RS_PAD_REPLICATE:
    pads_text(t, s->pad, 2 * s->dims);
    break;
  case RS_DROPOUT:
    nn_text_add(t, "p=");
    nn_text_num(t, s->p);
    nn_text_add(t, ", inplace=False");
    break;
  case RS_UNFLATTEN:
    nn_text_add(t, "dim=%d, unflattened_size=(", s->dim);
    for (int k = 0; k < s->n; k++) nn_text_add(t, "%s%lld", k ? ", " : "", (long long)s->sizes[k]);
    nn_text_add(t, s->n == 1 ? ",)" : ")");
    break;
  case RS_IDENTITY:
    break;
  }
}

static const nn_layer_ops rs_ops = {rs_forward, rs_free, rs_describe};

static nn_layer *rs_layer(ad_ctx *ctx, const char *kind, const rs_state *init) {
  return nn_layer_new_copy(ctx, kind, &rs_ops, init, sizeof *init);
}
