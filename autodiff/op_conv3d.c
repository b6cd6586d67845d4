/* op_conv3d.c: PyTorch's conv3d, conv_transpose3d and conv_transpose1d as
 * composites of the 2-D ops (op_conv.c) and shape ops, so every derivative
 * of any order is the tape's and no op-table entry is needed.
 *
 * conv3d: y[n,o,i] = sum_kd conv2d(x[n, :, i sd - pf + kd dd], w[:, :, kd])
 * over depth planes i (x is 0 outside). x is permuted once to [N, D, C, H,
 * W]; for each tap kd the output planes i whose input plane lies inside x
 * form a run i0..i1, and their input planes a strided run of x's depths:
 * taken with narrow (and, for a stride above 1, pad + reshape + narrow),
 * folded into the batch ([N cnt, C, H, W]), convolved by one ad_conv2d
 * with w[:, :, kd], unfolded and zero-padded in depth to Do. The taps'
 * results are added, permuted back to [N, O, Do, Ho, Wo], and the bias
 * added once. Taps that reach only padding cost nothing; when no tap
 * reaches x at all (a padding larger than the stride allows), an empty run
 * keeps the result connected to x and w (zero gradients, as PyTorch's).
 *
 * conv_transpose3d: y[n, o, j sd - pf + kd dd] += conv_transpose2d(x[n, :,
 * j], w[:, :, kd]): per tap, the input planes j whose output plane lands in
 * 0..Do-1 go through one ad_conv_transpose2d, are spread to every sd-th
 * plane (pad of sd - 1 after each, then a narrow) and padded to Do.
 *
 * Intermediates stay within twice the input's or the output's size: a run
 * of cnt > 1 planes at stride s spans (cnt - 1) s + 1 <= the axis, so its
 * padded form cnt s is below twice that. Cost: kD 2-D calls, plus a copy of
 * x and of the output for the permutes. */
#include "ops.h"

#include <stdio.h>
#include <string.h>

#define C3_MAX AD_MAX_ELEMS       /* largest stride, padding, dilation, groups */
#define C3_SAT (INT64_C(1) << 62) /* saturation of the size arithmetic */

/* a * b and a + b for a, b >= 0, saturated at 2^62. */
static int64_t c3_mul(int64_t a, int64_t b) { return a && b > C3_SAT / a ? C3_SAT : a * b; }
static int64_t c3_add(int64_t a, int64_t b) { return a > C3_SAT - b ? C3_SAT : a + b; }

/* One call's geometry, the options resolved ('same' replaced by padding). */
typedef struct c3_geom {
  bool batched;
  int64_t n, c, o, in[3], k[3], out[3];
  int64_t s[3], dil[3], pad[6], op[3], groups;
} c3_geom;

static const char *const axis_names = "DHW";

/* The options with zero replaced by PyTorch's defaults, checked. */
static bool c3_opts(ad_ctx *ctx, const char *fn, bool transpose, const ad_conv3d_opts *o,
                    c3_geom *g) {
  for (int k = 0; k < 3; k++) {
    if (o->stride[k] < 0 || o->dilation[k] < 0) {
      ad_set_error(ctx, AD_ERR_ARG,
                   "%s: stride (%lld, %lld, %lld) and dilation (%lld, %lld, %lld) must be at "
                   "least 1 (0 means 1)",
                   fn, (long long)o->stride[0], (long long)o->stride[1], (long long)o->stride[2],
                   (long long)o->dilation[0], (long long)o->dilation[1], (long long)o->dilation[2]);
      return false;
    }
    g->s[k] = o->stride[k] ? o->stride[k] : 1;
    g->dil[k] = o->dilation[k] ? o->dilation[k] : 1;
    g->op[k] = o->output_padding[k];
  }
  if (o->groups < 0 || o->groups > C3_MAX) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: groups %lld must be in 1..2^40 (0 means 1)", fn,
                 (long long)o->groups);
    return false;
  }
  g->groups = o->groups ? o->groups : 1;
  for (int k = 0; k < 6; k++) {
    g->pad[k] = o->padding[k];
    if (o->padding[k] < 0 && !o->same) {
      ad_set_error(ctx, AD_ERR_ARG,
                   "%s: padding (%lld, %lld, %lld, %lld, %lld, %lld) (front, back, top, bottom, "
                   "left, right) must not be negative",
                   fn, (long long)o->padding[0], (long long)o->padding[1], (long long)o->padding[2],
                   (long long)o->padding[3], (long long)o->padding[4], (long long)o->padding[5]);
      return false;
    }
  }
  const int64_t *vals[4] = {g->s, g->dil, g->pad, g->op};
  static const char *const names[4] = {"stride", "dilation", "padding", "output_padding"};
  static const int counts[4] = {3, 3, 6, 3};
  for (int v = 0; v < 4; v++)
    for (int k = 0; k < counts[v]; k++)
      if (vals[v][k] > C3_MAX && !(v == 2 && o->same)) {
        ad_set_error(ctx, AD_ERR_ARG, "%s: %s %lld is out of range (at most 2^40)", fn, names[v],
                     (long long)vals[v][k]);
        return false;
      }
  if (o->same && transpose) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: 'same' padding is not defined for a transposed convolution",
                 fn);
    return false;
  }
  if (o->same && (g->s[0] != 1 || g->s[1] != 1 || g->s[2] != 1)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: 'same' padding needs stride 1, got (%lld, %lld, %lld)", fn,
                 (long long)g->s[0], (long long)g->s[1], (long long)g->s[2]);
    return false;
  }
  for (int k = 0; k < 3; k++) {
    int64_t lim = transpose ? (g->s[k] > g->dil[k] ? g->s[k] : g->dil[k]) : 1;
    if (g->op[k] < 0 || g->op[k] >= lim) {
      if (transpose)
        ad_set_error(ctx, AD_ERR_ARG,
                     "%s: output_padding (%lld, %lld, %lld) must be >= 0 and smaller than the "
                     "stride (%lld, %lld, %lld) or the dilation (%lld, %lld, %lld)",
                     fn, (long long)g->op[0], (long long)g->op[1], (long long)g->op[2],
                     (long long)g->s[0], (long long)g->s[1], (long long)g->s[2],
                     (long long)g->dil[0], (long long)g->dil[1], (long long)g->dil[2]);
      else
        ad_set_error(ctx, AD_ERR_ARG,
                     "%s: output_padding (%lld, %lld, %lld) applies to conv_transpose3d only", fn,
                     (long long)g->op[0], (long long)g->op[1], (long long)g->op[2]);
      return false;
    }
  }
  return true;
}

/* Checks the inputs and options of fn and fills g; records the error. */
static bool c3_check(ad_ctx *ctx, const char *fn, bool transpose, ad_tensor *x, ad_tensor *w,
                     ad_tensor *bias, const ad_conv3d_opts *opts, c3_geom *g) {
  char sx[64], sw[64], sb[64];
  if (!x || !w) {
    ad_set_null_error(ctx, "%s: %s is NULL", fn, x ? "w" : "x");
    return false;
  }
  if (!ad_arg_ok(ctx, fn, "x", x) || !ad_arg_ok(ctx, fn, "w", w) ||
      (bias && !ad_arg_ok(ctx, fn, "bias", bias)))
    return false;
  ad_tensor *in[3] = {x, w, bias};
  if (ad_check_float_same(ctx, fn, bias ? 3 : 2, in) != AD_OK) return false;
  const char *wl = transpose ? "[C, O/groups, kD, kH, kW]" : "[O, C/groups, kD, kH, kW]";
  if ((x->ndim != 5 && x->ndim != 4) || w->ndim != 5) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: x must be [N, C, D, H, W] or [C, D, H, W] and w %s, got %s and %s", fn, wl,
                 ad_shape_str(x, sx, sizeof sx), ad_shape_str(w, sw, sizeof sw));
    return false;
  }
  memset(g, 0, sizeof *g);
  g->batched = x->ndim == 5;
  int off = g->batched ? 1 : 0;
  g->n = g->batched ? x->shape[0] : 1;
  g->c = x->shape[off];
  for (int k = 0; k < 3; k++) {
    g->in[k] = x->shape[off + 1 + k];
    g->k[k] = w->shape[2 + k];
  }
  if (g->k[0] < 1 || g->k[1] < 1 || g->k[2] < 1) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: the kernel of w %s is empty", fn,
                 ad_shape_str(w, sw, sizeof sw));
    return false;
  }
  if (g->in[0] < 1 || g->in[1] < 1 || g->in[2] < 1) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: the volume of x %s is empty (D, H and W must be >= 1)", fn,
                 ad_shape_str(x, sx, sizeof sx));
    return false;
  }
  ad_conv3d_opts z = {0};
  if (!c3_opts(ctx, fn, transpose, opts ? opts : &z, g)) return false;
  int64_t grp = g->groups;
  if (!transpose) {
    g->o = w->shape[0];
    if (g->c % grp || g->o % grp) {
      ad_set_error(ctx, AD_ERR_SHAPE,
                   "%s: groups %lld must divide the input channels %lld and the output channels "
                   "%lld: x %s, w %s",
                   fn, (long long)grp, (long long)g->c, (long long)g->o,
                   ad_shape_str(x, sx, sizeof sx), ad_shape_str(w, sw, sizeof sw));
      return false;
    }
    if (w->shape[1] != g->c / grp) {
      ad_set_error(ctx, AD_ERR_SHAPE,
                   "%s: x %s has %lld channels, but w %s takes %lld per group x %lld groups", fn,
                   ad_shape_str(x, sx, sizeof sx), (long long)g->c, ad_shape_str(w, sw, sizeof sw),
                   (long long)w->shape[1], (long long)grp);
      return false;
    }
  } else {
    if (w->shape[0] != g->c) {
      ad_set_error(ctx, AD_ERR_SHAPE,
                   "%s: x %s has %lld channels, but w %s (C_in, C_out/groups, kD, kH, kW) takes "
                   "%lld",
                   fn, ad_shape_str(x, sx, sizeof sx), (long long)g->c,
                   ad_shape_str(w, sw, sizeof sw), (long long)w->shape[0]);
      return false;
    }
    if (g->c % grp) {
      ad_set_error(ctx, AD_ERR_SHAPE,
                   "%s: groups %lld must divide the input channels %lld: x %s, w %s", fn,
                   (long long)grp, (long long)g->c, ad_shape_str(x, sx, sizeof sx),
                   ad_shape_str(w, sw, sizeof sw));
      return false;
    }
    g->o = c3_mul(w->shape[1], grp);
  }
  if (bias && (bias->ndim != 1 || bias->shape[0] != g->o)) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: bias %s must be [%lld], one per output channel (w %s, groups %lld)", fn,
                 ad_shape_str(bias, sb, sizeof sb), (long long)g->o, ad_shape_str(w, sw, sizeof sw),
                 (long long)grp);
    return false;
  }
  if (opts && opts->same)
    for (int k = 0; k < 3; k++) {
      int64_t t = c3_mul(g->dil[k], g->k[k] - 1);
      g->pad[2 * k] = t / 2;
      g->pad[2 * k + 1] = t - t / 2;
      if (g->pad[2 * k + 1] > C3_MAX) {
        ad_set_error(ctx, AD_ERR_ARG,
                     "%s: 'same' padding of a %lldx%lldx%lld kernel at dilation (%lld, %lld, "
                     "%lld) is out of range",
                     fn, (long long)g->k[0], (long long)g->k[1], (long long)g->k[2],
                     (long long)g->dil[0], (long long)g->dil[1], (long long)g->dil[2]);
        return false;
      }
    }
  for (int k = 0; k < 3; k++) {
    int64_t span = c3_add(c3_mul(g->dil[k], g->k[k] - 1), 1);
    int64_t p = g->pad[2 * k] + g->pad[2 * k + 1];
    if (!transpose) {
      int64_t padded = g->in[k] + p; /* each below 2^41 */
      if (span > padded) {
        ad_set_error(ctx, AD_ERR_SHAPE,
                     "%s: the %lldx%lldx%lld kernel at dilation (%lld, %lld, %lld) spans more than "
                     "the padded input along %c: x %s with padding (%lld, %lld, %lld, %lld, %lld, "
                     "%lld) gives no output",
                     fn, (long long)g->k[0], (long long)g->k[1], (long long)g->k[2],
                     (long long)g->dil[0], (long long)g->dil[1], (long long)g->dil[2],
                     axis_names[k], ad_shape_str(x, sx, sizeof sx), (long long)g->pad[0],
                     (long long)g->pad[1], (long long)g->pad[2], (long long)g->pad[3],
                     (long long)g->pad[4], (long long)g->pad[5]);
        return false;
      }
      g->out[k] = (padded - span) / g->s[k] + 1;
    } else {
      int64_t r = c3_add(c3_mul(g->in[k] - 1, g->s[k]), span);
      g->out[k] = r >= C3_SAT ? C3_SAT : r - p + g->op[k];
    }
  }
  if (transpose && (g->out[0] < 1 || g->out[1] < 1 || g->out[2] < 1)) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: x %s with w %s, stride (%lld, %lld, %lld), padding (%lld, %lld, %lld, "
                 "%lld, %lld, %lld) gives an output of %lldx%lldx%lld",
                 fn, ad_shape_str(x, sx, sizeof sx), ad_shape_str(w, sw, sizeof sw),
                 (long long)g->s[0], (long long)g->s[1], (long long)g->s[2], (long long)g->pad[0],
                 (long long)g->pad[1], (long long)g->pad[2], (long long)g->pad[3],
                 (long long)g->pad[4], (long long)g->pad[5], (long long)g->out[0],
                 (long long)g->out[1], (long long)g->out[2]);
    return false;
  }
  /* the output's size: the product of its non-zero dims, as any tensor's */
  int64_t dims[5] = {g->n, g->o, g->out[0], g->out[1], g->out[2]}, size = 1;
  for (int k = 0; k < 5; k++)
    if (dims[k]) size = c3_mul(size, dims[k]);
  if (size > AD_MAX_ELEMS) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: x %s with w %s gives an output [%lld,%lld,%lld,%lld,%lld], too large for a "
                 "tensor",
                 fn, ad_shape_str(x, sx, sizeof sx), ad_shape_str(w, sw, sizeof sw),
                 (long long)dims[0], (long long)dims[1], (long long)dims[2], (long long)dims[3],
                 (long long)dims[4]);
    return false;
  }
  return true;
}

/* Planes start, start + s, ..., (cnt of them) of t along axis 1 (t 5-D,
 * [N, L, ...]): a narrow, and for cnt > 1 and s > 1 a pad to cnt s,
 * a reshape to [N, cnt, s, ...] and a narrow of the first of each s. */
static ad_tensor *strided_planes(ad_ctx *ctx, ad_tensor *t, int64_t start, int64_t cnt, int64_t s) {
  if (cnt <= 1 || s == 1) return ad_narrow(ctx, t, 1, start, cnt);
  ad_tensor *r = ad_narrow(ctx, t, 1, start, (cnt - 1) * s + 1);
  r = ad_pad(ctx, r, 1, 0, s - 1);
  if (!r) return NULL;
  int64_t sh[AD_MAX_DIMS];
  sh[0] = t->shape[0];
  sh[1] = cnt;
  sh[2] = s;
  for (int d = 2; d < t->ndim; d++) sh[d + 1] = t->shape[d];
  r = ad_narrow(ctx, ad_reshape(ctx, r, t->ndim + 1, sh), 2, 0, 1);
  sh[2] = 1;
  return r ? ad_reshape(ctx, r, t->ndim, (int64_t[]){sh[0], sh[1], sh[3], sh[4], sh[5]}) : NULL;
}

/* The inverse placement: t [N, cnt, ...] (5-D) to [N, (cnt - 1) s + 1, ...] with
 * plane j at j s and zeros between. */
static ad_tensor *spread_planes(ad_ctx *ctx, ad_tensor *t, int64_t cnt, int64_t s) {
  if (cnt <= 1 || s == 1) return t;
  int64_t sh[AD_MAX_DIMS];
  sh[0] = t->shape[0];
  sh[1] = cnt;
  sh[2] = 1;
  for (int d = 2; d < t->ndim; d++) sh[d + 1] = t->shape[d];
  ad_tensor *r = ad_pad(ctx, ad_reshape(ctx, t, t->ndim + 1, sh), 2, 0, s - 1);
  if (!r) return NULL;
  int64_t fl[5] = {sh[0], cnt * s, sh[3], sh[4], sh[5]};
  return ad_narrow(ctx, ad_reshape(ctx, r, t->ndim, fl), 1, 0, (cnt - 1) * s + 1);
}

/* The indices j in 0..len-1 with 0 <= j s + off < lim: j0 and the count. */
static int64_t plane_run(int64_t len, int64_t s, int64_t off, int64_t lim, int64_t *j0) {
  int64_t lo = off >= 0 ? 0 : (-off + s - 1) / s;
  if (lim - 1 - off < 0) return 0;
  int64_t hi = (lim - 1 - off) / s;
  if (hi > len - 1) hi = len - 1;
  *j0 = lo;
  return hi >= lo ? hi - lo + 1 : 0;
}

/* Reports a failure of the 2-D parts (an allocation) in fn's terms. */
static ad_tensor *c3_fail(ad_ctx *ctx, const char *fn, uint32_t before) {
  if (ctx->nerrors != before) {
    char msg[sizeof ctx->err];
    snprintf(msg, sizeof msg, "%s", ctx->err);
    ad_set_error(ctx, ctx->status, "%s: %s", fn, msg);
  }
  return NULL;
}

/* Tap kd's contribution, [N, Do, O, Ho, Wo]: the run of cnt planes from
 * j0 (output planes for conv3d, input planes for the transpose) through
 * the 2-D op, placed at their output depths. */
static ad_tensor *c3_tap(ad_ctx *ctx, bool transpose, const c3_geom *g, ad_tensor *xp, ad_tensor *w,
                         int64_t kd, int64_t j0, int64_t cnt) {
  int64_t off = kd * g->dil[0] - g->pad[0], s = g->s[0], Do = g->out[0];
  ad_conv_opts o2 = {.stride = {g->s[1], g->s[2]},
                     .padding = {g->pad[2], g->pad[3], g->pad[4], g->pad[5]},
                     .dilation = {g->dil[1], g->dil[2]},
                     .groups = g->groups,
                     .output_padding = {g->op[1], g->op[2]}};
  int64_t ws[4] = {w->shape[0], w->shape[1], g->k[1], g->k[2]};
  ad_tensor *wk = ad_reshape(ctx, ad_narrow(ctx, w, 2, kd, 1), 4, ws);
  ad_tensor *planes = transpose || cnt == 0 ? ad_narrow(ctx, xp, 1, j0, cnt)
                                            : strided_planes(ctx, xp, j0 * s + off, cnt, s);
  int64_t fold[4] = {g->n * cnt, g->c, g->in[1], g->in[2]};
  ad_tensor *f = ad_reshape(ctx, planes, 4, fold);
  ad_tensor *y =
      transpose ? ad_conv_transpose2d(ctx, f, wk, NULL, &o2) : ad_conv2d(ctx, f, wk, NULL, &o2);
  if (!y) return NULL;
  int64_t un[5] = {g->n, cnt, g->o, y->shape[2], y->shape[3]};
  if (!(y = ad_reshape(ctx, y, 5, un))) return NULL;
  int64_t first = cnt == 0 ? 0 : j0; /* the first output plane */
  if (transpose && cnt > 0) {
    y = spread_planes(ctx, y, cnt, s);
    first = j0 * s + off;
  }
  return y ? ad_pad(ctx, y, 1, first, Do - first - y->shape[1]) : NULL;
}

/* conv_transpose3d with the kernel's depth equal to its depth stride (no
 * depth padding, dilation or output_padding, one group): every output
 * plane j s + kd comes from one input plane j and one tap kd, so the taps
 * need no sum. They are folded into the output channels instead: one
 * ad_conv_transpose2d of all input planes with w as [C, kD O, kH, kW]
 * gives [N D, kD O, Ho, Wo], which is [N, D kD = Do, O, Ho, Wo] as it lies
 * (one product of kD O rows per image rather than kD of O rows, then a
 * spread, two pads to Do and a sum: the same sums of the same products,
 * so the same bits, 2.3x PyTorch's time before on bench/layerscan's
 * [8,16,16,16,16] with a 2x2x2 kernel at stride 2). */
static bool c3_one_tap_per_plane(const c3_geom *g) {
  return g->k[0] == g->s[0] && g->pad[0] == 0 && g->pad[1] == 0 && g->dil[0] == 1 &&
         g->op[0] == 0 && g->groups == 1 && g->out[0] == g->in[0] * g->s[0] && g->n > 0 &&
         g->in[0] > 0;
}

static ad_tensor *c3_transpose_folded(ad_ctx *ctx, const c3_geom *g, ad_tensor *xp, ad_tensor *w) {
  ad_conv_opts o2 = {.stride = {g->s[1], g->s[2]},
                     .padding = {g->pad[2], g->pad[3], g->pad[4], g->pad[5]},
                     .dilation = {g->dil[1], g->dil[2]},
                     .output_padding = {g->op[1], g->op[2]}};
  int64_t kd = g->k[0], ws[4] = {g->c, kd * g->o, g->k[1], g->k[2]};
  /* w [C, O, kD, kH, kW] -> [C, kD, O, kH, kW] -> [C, kD O, kH, kW] */
  ad_tensor *wk = ad_reshape(ctx, ad_permute(ctx, w, (const int[]){0, 2, 1, 3, 4}), 4, ws);
  int64_t fold[4] = {g->n * g->in[0], g->c, g->in[1], g->in[2]};
  ad_tensor *y = ad_conv_transpose2d(ctx, ad_reshape(ctx, xp, 4, fold), wk, NULL, &o2);
  if (!y) return NULL;
  int64_t un[5] = {g->n, g->out[0], g->o, y->shape[2], y->shape[3]};
  return ad_reshape(ctx, y, 5, un);
}

static ad_tensor *conv3d_run(ad_ctx *ctx, bool transpose, ad_tensor *x, ad_tensor *w,
                             ad_tensor *bias, const ad_conv3d_opts *opts) {
  if (!ctx) return NULL;
  const char *fn = transpose ? "conv_transpose3d" : "conv3d";
  c3_geom g;
  if (!c3_check(ctx, fn, transpose, x, w, bias, opts, &g)) return NULL;
  uint32_t before = ctx->nerrors;
  int64_t xs[5] = {g.n, g.c, g.in[0], g.in[1], g.in[2]};
  /* [N, D, C, H, W]: depth next to the batch, to fold into it */
  ad_tensor *xp = ad_permute(ctx, ad_reshape(ctx, x, 5, xs), (const int[]){0, 2, 1, 3, 4});
  if (!xp) return c3_fail(ctx, fn, before);
  ad_tensor *acc = NULL;
  bool folded = transpose && c3_one_tap_per_plane(&g);
  if (folded) acc = c3_transpose_folded(ctx, &g, xp, w);
  for (int64_t kd = 0; kd < g.k[0] && !folded; kd++) {
    int64_t off = kd * g.dil[0] - g.pad[0], j0 = 0;
    /* conv3d: output planes i with 0 <= i s + off < D read plane i s + off;
     * the transpose: input plane j lands on j s + off, kept when < Do */
    int64_t cnt = transpose ? plane_run(g.in[0], g.s[0], off, g.out[0], &j0)
                            : plane_run(g.out[0], g.s[0], off, g.in[0], &j0);
    if (cnt == 0) continue; /* the tap reaches only padding */
    ad_tensor *y = c3_tap(ctx, transpose, &g, xp, w, kd, j0, cnt);
    acc = y && acc ? ad_add(ctx, acc, y) : y;
    if (!acc) return c3_fail(ctx, fn, before);
  }
  if (!acc && ctx->nerrors != before) return c3_fail(ctx, fn, before);
  /* no tap reaches x: an empty run keeps x and w on the tape (zero
   * gradients, as PyTorch's) */
  if (!acc && !(acc = c3_tap(ctx, transpose, &g, xp, w, 0, 0, 0))) return c3_fail(ctx, fn, before);
  ad_tensor *r = ad_permute(ctx, acc, (const int[]){0, 2, 1, 3, 4});
  if (r && bias) {
    int64_t bs[4] = {g.o, 1, 1, 1};
    r = ad_add(ctx, r, ad_reshape(ctx, bias, 4, bs));
  }
  if (r && !g.batched) r = ad_reshape(ctx, r, 4, r->shape + 1);
  return r ? r : c3_fail(ctx, fn, before);
}

ad_tensor *ad_conv3d(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *bias,
                     const ad_conv3d_opts *opts) {
  return conv3d_run(ctx, false, x, w, bias, opts);
}

ad_tensor *ad_conv_transpose3d(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *bias,
                               const ad_conv3d_opts *opts) {
  return conv3d_run(ctx, true, x, w, bias, opts);
}

/* ------------------------------------------------------ conv_transpose1d */

ad_tensor *ad_conv_transpose1d(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *bias,
                               const ad_conv_transpose1d_opts *opts) {
  if (!ctx) return NULL;
  if (!x || !w) {
    ad_set_null_error(ctx, "conv_transpose1d: %s is NULL", x ? "w" : "x");
    return NULL;
  }
  if (!ad_arg_ok(ctx, "conv_transpose1d", "x", x) || !ad_arg_ok(ctx, "conv_transpose1d", "w", w))
    return NULL;
  char sx[64], sw[64];
  if ((x->ndim != 3 && x->ndim != 2) || w->ndim != 3) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "conv_transpose1d: x must be [N, C, L] or [C, L] and w [C, O/groups, K], got %s "
                 "and %s",
                 ad_shape_str(x, sx, sizeof sx), ad_shape_str(w, sw, sizeof sw));
    return NULL;
  }
  ad_conv_transpose1d_opts z = {0};
  if (!opts) opts = &z;
  ad_conv_opts o = {.stride = {1, opts->stride},
                    .padding = {0, 0, opts->padding[0], opts->padding[1]},
                    .dilation = {1, opts->dilation},
                    .groups = opts->groups,
                    .output_padding = {0, opts->output_padding}};
  bool batched = x->ndim == 3;
  int64_t xs[4] = {batched ? x->shape[0] : 1, x->shape[batched], 1, x->shape[batched + 1]};
  int64_t ws[4] = {w->shape[0], w->shape[1], 1, w->shape[2]};
  uint32_t before = ctx->nerrors;
  ad_tensor *y =
      ad_conv_transpose2d(ctx, ad_reshape(ctx, x, 4, xs), ad_reshape(ctx, w, 4, ws), bias, &o);
  if (!y) {
    if (ctx->nerrors != before) { /* conv_transpose2d's message, in 1-D terms */
      char msg[sizeof ctx->err];
      snprintf(msg, sizeof msg, "%s", ctx->err);
      ad_set_error(ctx, ctx->status, "conv_transpose1d of x %s, w %s (as 4-D, H = 1): %s",
                   ad_shape_str(x, sx, sizeof sx), ad_shape_str(w, sw, sizeof sw), msg);
    }
    return NULL;
  }
  int64_t ys[3] = {y->shape[0], y->shape[1], y->shape[3]};
  return batched ? ad_reshape(ctx, y, 3, ys) : ad_reshape(ctx, y, 2, ys + 1);
}
