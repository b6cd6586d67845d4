/* op_conv.c: 2-D convolution over NCHW with PyTorch's layout and
 * cross-correlation: conv2d, conv_transpose2d and conv2d_weight.
 *
 * The three ops are the partial derivatives of one trilinear form: with
 * x [N, C, H, W] (the image side, zero outside the image), w [O, C/G, kh, kw]
 * and y [N, O, Ho, Wo] (the output side),
 *
 *   B(x, w, y) = sum y[n,o,i,j] w[o,c,a,b] x[n, g(o) C/G + c, i sh - pt + a dh, j sw - pl + b dw]
 *
 * (g(o) the group of channel o), conv2d(x, w) = dB/dy, conv_transpose2d(y, w)
 * = dB/dx and conv2d_weight(x, y) = dB/dw. So each op's backward is made of
 * the other two (and a sum for a bias), and every derivative of any order is
 * again one of the three.
 *
 * Kernels, per image and group: im2col gathers the image's channels into
 * col [C/G kh kw, Ho Wo], then
 *   conv2d:            y_g = W_g col                  (GEMM)
 *   conv2d_weight:     dW_g^T += col dy_g^T           (GEMM, summed over images)
 *   conv_transpose2d:  col = W_g^T dy_g; col2im adds col into the image.
 * A 1x1 kernel with stride 1 and no padding needs no col: col is the image.
 * Images are spread over the library's threads (ad_parallel_for); each
 * range takes one of the per-thread col buffers, so the scratch is a few
 * images' worth, not the batch's. conv2d_weight sums a fixed partition of
 * the batch into partial sums and adds them in order: its result does not
 * depend on the number of threads. Where the arena cannot give the scratch,
 * a direct loop computes the same sums without it.
 *
 * f32 3x3 kernels at stride 1 and dilation 1 with one group, padding at
 * most 2, 16 or more channels on each side and outputs of 4x4 or more take
 * Winograd F(4x4, 3x3) instead (kernels/winograd.c: 4x fewer
 * multiplications; the other two ops are the forward's adjoints, except
 * the input gradient where dx needs no more tiles than dy: there it is
 * dy's convolution with the flipped kernels, which rounds as conv2d), in
 * blocks of images fixed by the shape, dW again as partial sums over a
 * fixed partition of the blocks, so the bits still do not depend on the
 * thread count. Its rounding differs from the GEMM path's: each result is
 * within 1e-5 of the sum of its terms' magnitudes of the exact value where
 * the input's magnitudes are even, and in general relative to the largest
 * values of the 6x6 input patch its tile reads (ad_conv2d's contract). A
 * result holding inf or NaN is recomputed by the GEMM path, so that they
 * are not spread over whole tiles. ad_set_conv_winograd turns the path
 * off; f64 always takes the GEMM path. docs/performance.md has figures. */
#include "kernels/kernels.h"
#include "ops.h"

#include <sched.h>
#include <stdatomic.h>
#include <string.h>

/* ------------------------------------------------------------ shared */

/* The largest stride, padding, dilation or output_padding accepted: as
 * large as a tensor's dimension may be, so sizes computed from them fit
 * in int64 with room to spare. */
#define CONV_ATTR_MAX AD_MAX_ELEMS
#define CONV_SAT      (INT64_C(1) << 62)

/* a * b for a, b >= 0, saturated at 2^62 (the engine's size check then
 * rejects an output that large). */
static int64_t sat_mul(int64_t a, int64_t b) { return a && b > CONV_SAT / a ? CONV_SAT : a * b; }

/* Extent of a kernel of k taps at dilation d: d (k - 1) + 1. */
static int64_t conv_span(int64_t k, int64_t d) { return sat_mul(d, k - 1) + 1; }

/* Output length of a convolution of n inputs, or 0 when the kernel does
 * not fit the padded input. */
static int64_t conv_out_len(int64_t n, int64_t p0, int64_t p1, int64_t k, int64_t s, int64_t d) {
  int64_t padded = n + p0 + p1, span = conv_span(k, d);
  return span > padded ? 0 : (padded - span) / s + 1;
}

/* Output length of a transposed convolution of n inputs (may be < 1). */
static int64_t convt_out_len(int64_t n, int64_t p0, int64_t p1, int64_t k, int64_t s, int64_t d,
                             int64_t op) {
  int64_t t = n > 0 ? sat_mul(n - 1, s) : -s, span = conv_span(k, d);
  if (t >= CONV_SAT || span > CONV_SAT) return CONV_SAT; /* too large for a tensor */
  /* t + span < 2^63; padding and output_padding are at most 2^40 each */
  int64_t r = t + span;
  return r >= CONV_SAT ? CONV_SAT : r - p0 - p1 + op;
}

/* a with 'same' replaced by its padding for a kh x kw kernel: the total
 * d (k - 1) split as PyTorch does, the extra one at the bottom and right. */
static ad_conv_attrs conv_resolved(const ad_conv_attrs *a, int64_t kh, int64_t kw) {
  ad_conv_attrs r = *a;
  if (r.same) {
    int64_t th = conv_span(kh, r.dilation[0]) - 1, tw = conv_span(kw, r.dilation[1]) - 1;
    r.padding[0] = th / 2;
    r.padding[1] = th - th / 2;
    r.padding[2] = tw / 2;
    r.padding[3] = tw - tw / 2;
    r.same = false;
  }
  return r;
}

enum { OP_CONV, OP_CONVT, OP_WEIGHT };

/* Checks the attributes of op kind (OP_*) for a kh x kw kernel. */
static ad_status conv_check_attrs(const ad_call *c, int kind, int64_t kh, int64_t kw) {
  const ad_conv_attrs *a = &c->attrs->conv;
  ad_ctx *ctx = c->ctx;
  const char *nm = c->name;
  if (a->stride[0] < 1 || a->stride[1] < 1)
    return ad_set_error(ctx, AD_ERR_ARG, "%s: stride (%lld, %lld) must be at least 1", nm,
                        (long long)a->stride[0], (long long)a->stride[1]);
  if (a->dilation[0] < 1 || a->dilation[1] < 1)
    return ad_set_error(ctx, AD_ERR_ARG, "%s: dilation (%lld, %lld) must be at least 1", nm,
                        (long long)a->dilation[0], (long long)a->dilation[1]);
  if (a->groups < 1 || a->groups > CONV_ATTR_MAX)
    return ad_set_error(ctx, AD_ERR_ARG, "%s: groups %lld must be in 1..2^40", nm,
                        (long long)a->groups);
  for (int k = 0; k < 4; k++)
    if (a->padding[k] < 0)
      return ad_set_error(ctx, AD_ERR_ARG,
                          "%s: padding (%lld, %lld, %lld, %lld) (top, bottom, left, right) "
                          "must not be negative",
                          nm, (long long)a->padding[0], (long long)a->padding[1],
                          (long long)a->padding[2], (long long)a->padding[3]);
  const int64_t *vals[4] = {a->stride, a->dilation, a->padding, a->output_padding};
  static const char *const names[4] = {"stride", "dilation", "padding", "output_padding"};
  static const int counts[4] = {2, 2, 4, 2};
  for (int v = 0; v < 4; v++)
    for (int k = 0; k < counts[v]; k++)
      if (vals[v][k] > CONV_ATTR_MAX)
        return ad_set_error(ctx, AD_ERR_ARG, "%s: %s %lld is out of range (at most 2^40)", nm,
                            names[v], (long long)vals[v][k]);
  if (a->same && kind == OP_CONVT)
    return ad_set_error(ctx, AD_ERR_ARG,
                        "%s: 'same' padding is not defined for a transposed convolution", nm);
  if (a->same && (a->stride[0] != 1 || a->stride[1] != 1))
    return ad_set_error(ctx, AD_ERR_ARG, "%s: 'same' padding needs stride 1, got (%lld, %lld)", nm,
                        (long long)a->stride[0], (long long)a->stride[1]);
  if (a->same) {
    ad_conv_attrs r = conv_resolved(a, kh, kw);
    if (r.padding[1] > CONV_ATTR_MAX || r.padding[3] > CONV_ATTR_MAX)
      return ad_set_error(ctx, AD_ERR_ARG,
                          "%s: 'same' padding of a %lldx%lld kernel at dilation (%lld, %lld) is "
                          "out of range",
                          nm, (long long)kh, (long long)kw, (long long)a->dilation[0],
                          (long long)a->dilation[1]);
  }
  if (kind == OP_CONVT) {
    for (int k = 0; k < 2; k++) {
      int64_t lim = a->stride[k] > a->dilation[k] ? a->stride[k] : a->dilation[k];
      if (a->output_padding[k] < 0 || a->output_padding[k] >= lim)
        return ad_set_error(ctx, AD_ERR_ARG,
                            "%s: output_padding (%lld, %lld) must be >= 0 and smaller than the "
                            "stride (%lld, %lld) or the dilation (%lld, %lld)",
                            nm, (long long)a->output_padding[0], (long long)a->output_padding[1],
                            (long long)a->stride[0], (long long)a->stride[1],
                            (long long)a->dilation[0], (long long)a->dilation[1]);
    }
  } else if (a->output_padding[0] || a->output_padding[1]) {
    return ad_set_error(ctx, AD_ERR_ARG,
                        "%s: output_padding (%lld, %lld) applies to conv_transpose2d only", nm,
                        (long long)a->output_padding[0], (long long)a->output_padding[1]);
  }
  return AD_OK;
}

/* Dtypes, the count of inputs (2, or 3 with a bias) and 4-D x and w. */
static ad_status conv_check_inputs(const ad_call *c, const char *wlayout) {
  char sx[64], sw[64];
  ad_status st = ad_check_float_same(c->ctx, c->name, c->n, c->in);
  if (st != AD_OK) return st;
  const ad_tensor *x = c->in[0], *w = c->in[1];
  if (x->ndim != 4 || w->ndim != 4)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: x must be [N, C, H, W] and w %s, got %s and %s",
                        c->name, wlayout, ad_shape_str(x, sx, sizeof sx),
                        ad_shape_str(w, sw, sizeof sw));
  if (w->shape[2] < 1 || w->shape[3] < 1)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: the kernel of w %s is empty", c->name,
                        ad_shape_str(w, sw, sizeof sw));
  /* as PyTorch: an empty batch or channel count is fine, an empty image is
   * not (padding would make an output whose backward has no input size) */
  if (x->shape[2] < 1 || x->shape[3] < 1)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: the image of x %s is empty (H and W must be >= 1)", c->name,
                        ad_shape_str(x, sx, sizeof sx));
  return AD_OK;
}

/* A bias, when given, is [channels]. */
static ad_status conv_check_bias(const ad_call *c, int64_t channels) {
  char sb[64], sw[64];
  if (c->n < 3) return AD_OK;
  const ad_tensor *b = c->in[2];
  if (b->ndim != 1 || b->shape[0] != channels)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: bias %s must be [%lld], one per output channel (w %s, groups %lld)",
                        c->name, ad_shape_str(b, sb, sizeof sb), (long long)channels,
                        ad_shape_str(c->in[1], sw, sizeof sw), (long long)c->attrs->conv.groups);
  return AD_OK;
}

/* The error of a kernel larger than the padded input. */
static ad_status conv_too_small(const ad_call *c, const ad_tensor *x, int64_t kh, int64_t kw,
                                const ad_conv_attrs *r) {
  char sx[64];
  return ad_set_error(c->ctx, AD_ERR_SHAPE,
                      "%s: the %lldx%lld kernel at dilation (%lld, %lld) spans more than the "
                      "padded input: x %s with padding (%lld, %lld, %lld, %lld) gives no output",
                      c->name, (long long)kh, (long long)kw, (long long)r->dilation[0],
                      (long long)r->dilation[1], ad_shape_str(x, sx, sizeof sx),
                      (long long)r->padding[0], (long long)r->padding[1], (long long)r->padding[2],
                      (long long)r->padding[3]);
}

/* The geometry of one call, in conv2d's terms (see the top of the file). */
typedef struct conv_geom {
  ad_dtype dt;
  int64_t n, c, h, w;                     /* image side */
  int64_t o, oh, ow;                      /* output side */
  int64_t kh, kw, sh, sw, dh, dw, pt, pl; /* kernel, stride, dilation, padding */
  int64_t groups, cg, og;                 /* groups, channels per group on each side */
  int64_t kk, p, hw;                      /* cg kh kw (rows of col), oh ow, h w */
  bool pointwise;                         /* col is the image itself */
} conv_geom;

static conv_geom conv_geom_of(ad_dtype dt, const int64_t *img, const int64_t *out, int64_t kh,
                              int64_t kw, const ad_conv_attrs *r) {
  conv_geom g = {.dt = dt,
                 .n = img[0],
                 .c = img[1],
                 .h = img[2],
                 .w = img[3],
                 .o = out[1],
                 .oh = out[2],
                 .ow = out[3],
                 .kh = kh,
                 .kw = kw,
                 .sh = r->stride[0],
                 .sw = r->stride[1],
                 .dh = r->dilation[0],
                 .dw = r->dilation[1],
                 .pt = r->padding[0],
                 .pl = r->padding[2],
                 .groups = r->groups};
  g.cg = g.c / g.groups;
  g.og = g.o / g.groups;
  g.kk = g.cg * kh * kw;
  g.p = g.oh * g.ow;
  g.hw = g.h * g.w;
  g.pointwise = kh == 1 && kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 &&
                g.oh == g.h && g.ow == g.w;
  return g;
}

/* The smallest j >= 0 with j s >= num. */
static int64_t first_at_least(int64_t num, int64_t s) { return num <= 0 ? 0 : (num + s - 1) / s; }

/* Output columns j whose input column j sw - pl + b dw is inside the image:
 * [*j0, *j1). */
static void conv_cols(const conv_geom *g, int64_t b, int64_t *j0, int64_t *j1) {
  int64_t off = b * g->dw - g->pl;
  int64_t lo = first_at_least(-off, g->sw), hi = first_at_least(g->w - off, g->sw);
  *j0 = lo < g->ow ? lo : g->ow;
  *j1 = hi < g->ow ? hi : g->ow;
  if (*j1 < *j0) *j1 = *j0;
}

/* im2col: col[(c a b), (i j)] = img[c, i sh - pt + a dh, j sw - pl + b dw],
 * zero outside; col2im: the adjoint, img[...] += col[...]. img points at
 * the group's first channel. direct: the three ops without a col buffer
 * (the fallback when the arena has no room). conv2d sums each output's
 * cg kh kw products in a double (a row tile of sums on the stack), and the
 * weight gradient each term's sum over one image's positions (oh x ow
 * products, a million for a 1000 x 1000 image), then adds that, as the
 * path with scratch sums per image; conv_transpose2d each input element's
 * sum over its group's og kh kw products, as conv2d's. Added one by one
 * into a float, the products left float32 results off by 10x the GEMM
 * path's error and PyTorch's (conv2d over 512 channels: 3.6e-6 against
 * 3.5e-7, conv_transpose2d from 512: 4.6e-6; a weight gradient over large
 * images: 4e-5 to 2e-4 against 6e-7). */
#define DEFINE_CONV_KERNELS(T, S)                                                                  \
  /* dst[0..n) = src[0..n): inline, for rows too short to pay for a memcpy call */                 \
  static inline void copy_row_##S(T *restrict dst, const T *restrict src, int64_t n) {             \
    for (int64_t j = 0; j < n; j++) dst[j] = src[j];                                               \
  }                                                                                                \
  /* dst[0..n) += src[0..n): col and image never overlap, so it vectorizes */                      \
  static void add_row_##S(T *restrict dst, const T *restrict src, int64_t n) {                     \
    for (int64_t j = 0; j < n; j++) dst[j] += src[j];                                              \
  }                                                                                                \
  static void im2col_##S(const conv_geom *g, const T *img, T *col) {                               \
    for (int64_t c = 0; c < g->cg; c++)                                                            \
      for (int64_t a = 0; a < g->kh; a++)                                                          \
        for (int64_t b = 0; b < g->kw; b++) {                                                      \
          int64_t j0, j1;                                                                          \
          conv_cols(g, b, &j0, &j1);                                                               \
          for (int64_t i = 0; i < g->oh; i++, col += g->ow) {                                      \
            int64_t r = i * g->sh - g->pt + a * g->dh;                                             \
            if (r < 0 || r >= g->h) {                                                              \
              memset(col, 0, (size_t)g->ow * sizeof(T));                                           \
              continue;                                                                            \
            }                                                                                      \
            const T *src = img + (c * g->h + r) * g->w;                                            \
            int64_t q = j0 * g->sw - g->pl + b * g->dw;                                            \
            for (int64_t j = 0; j < j0; j++) col[j] = 0;                                           \
            if (g->sw == 1)                                                                        \
              copy_row_##S(col + j0, src + q, j1 - j0);                                            \
            else                                                                                   \
              for (int64_t j = j0; j < j1; j++, q += g->sw) col[j] = src[q];                       \
            for (int64_t j = j1; j < g->ow; j++) col[j] = 0;                                       \
          }                                                                                        \
        }                                                                                          \
  }                                                                                                \
  static void col2im_##S(const conv_geom *g, const T *col, T *img) {                               \
    for (int64_t c = 0; c < g->cg; c++)                                                            \
      for (int64_t a = 0; a < g->kh; a++)                                                          \
        for (int64_t b = 0; b < g->kw; b++) {                                                      \
          int64_t j0, j1;                                                                          \
          conv_cols(g, b, &j0, &j1);                                                               \
          for (int64_t i = 0; i < g->oh; i++, col += g->ow) {                                      \
            int64_t r = i * g->sh - g->pt + a * g->dh;                                             \
            if (r < 0 || r >= g->h) continue;                                                      \
            T *dst = img + (c * g->h + r) * g->w;                                                  \
            int64_t q = j0 * g->sw - g->pl + b * g->dw;                                            \
            if (g->sw == 1)                                                                        \
              add_row_##S(dst + q, col + j0, j1 - j0);                                             \
            else                                                                                   \
              for (int64_t j = j0; j < j1; j++, q += g->sw) dst[q] += col[j];                      \
          }                                                                                        \
        }                                                                                          \
  }                                                                                                \
  static void direct_##S(const conv_geom *g, int kind, const T *x, const T *w, const T *y,         \
                         T *out) {                                                                 \
    if (kind == OP_CONV) { /* each output summed in a double, RT of a row at a time */             \
      enum { RT = 128 };                                                                           \
      double acc[RT];                                                                              \
      for (int64_t n = 0; n < g->n; n++)                                                           \
        for (int64_t o = 0; o < g->o; o++) {                                                       \
          const T *xg = x + (n * g->c + (o / g->og) * g->cg) * g->hw;                              \
          for (int64_t i = 0; i < g->oh; i++) {                                                    \
            T *yr = out + ((n * g->o + o) * g->oh + i) * g->ow;                                    \
            for (int64_t j0 = 0; j0 < g->ow; j0 += RT) {                                           \
              int64_t nj = g->ow - j0 < RT ? g->ow - j0 : RT;                                      \
              for (int64_t jj = 0; jj < nj; jj++) acc[jj] = 0;                                     \
              for (int64_t c = 0; c < g->cg; c++)                                                  \
                for (int64_t a = 0; a < g->kh; a++) {                                              \
                  int64_t r = i * g->sh - g->pt + a * g->dh;                                       \
                  if (r < 0 || r >= g->h) continue;                                                \
                  const T *xr = xg + c * g->hw + r * g->w;                                         \
                  for (int64_t b = 0; b < g->kw; b++) {                                            \
                    double wv = w[((o * g->cg + c) * g->kh + a) * g->kw + b];                      \
                    for (int64_t jj = 0; jj < nj; jj++) {                                          \
                      int64_t q = (j0 + jj) * g->sw - g->pl + b * g->dw;                           \
                      if (q >= 0 && q < g->w) acc[jj] += wv * xr[q];                               \
                    }                                                                              \
                  }                                                                                \
                }                                                                                  \
              for (int64_t jj = 0; jj < nj; jj++) yr[j0 + jj] = (T)acc[jj];                        \
            }                                                                                      \
          }                                                                                        \
        }                                                                                          \
      return;                                                                                      \
    }                                                                                              \
    if (kind == OP_CONVT) { /* each input element's sum likewise, over its group's outputs */      \
      enum { RT = 128 };                                                                           \
      double acc[RT];                                                                              \
      for (int64_t n = 0; n < g->n; n++)                                                           \
        for (int64_t ci = 0; ci < g->c; ci++) {                                                    \
          int64_t c = ci % g->cg, o0 = ci / g->cg * g->og;                                         \
          for (int64_t r = 0; r < g->h; r++) {                                                     \
            T *xr = out + (n * g->c + ci) * g->hw + r * g->w;                                      \
            for (int64_t q0 = 0; q0 < g->w; q0 += RT) {                                            \
              int64_t nq = g->w - q0 < RT ? g->w - q0 : RT;                                        \
              for (int64_t qq = 0; qq < nq; qq++) acc[qq] = 0;                                     \
              for (int64_t o = o0; o < o0 + g->og; o++)                                            \
                for (int64_t a = 0; a < g->kh; a++) {                                              \
                  int64_t num = r + g->pt - a * g->dh, i = num / g->sh;                            \
                  if (num < 0 || num % g->sh || i >= g->oh) continue;                              \
                  const T *yr = y + ((n * g->o + o) * g->oh + i) * g->ow;                          \
                  for (int64_t b = 0; b < g->kw; b++) {                                            \
                    double wv = w[((o * g->cg + c) * g->kh + a) * g->kw + b];                      \
                    int64_t off = b * g->dw - g->pl; /* column q = j sw + off */                   \
                    int64_t j0 = first_at_least(q0 - off, g->sw);                                  \
                    int64_t j1 = first_at_least(q0 + nq - off, g->sw);                             \
                    if (j1 > g->ow) j1 = g->ow;                                                    \
                    for (int64_t j = j0; j < j1; j++) acc[j * g->sw + off - q0] += wv * yr[j];     \
                  }                                                                                \
                }                                                                                  \
              for (int64_t qq = 0; qq < nq; qq++) xr[q0 + qq] = (T)acc[qq];                        \
            }                                                                                      \
          }                                                                                        \
        }                                                                                          \
      return;                                                                                      \
    }                                                                                              \
    int64_t total = g->o * g->kk;                                                                  \
    for (int64_t e = 0; e < total; e++) out[e] = 0;                                                \
    for (int64_t n = 0; n < g->n; n++)                                                             \
      for (int64_t o = 0; o < g->o; o++)                                                           \
        for (int64_t c = 0; c < g->cg; c++)                                                        \
          for (int64_t a = 0; a < g->kh; a++)                                                      \
            for (int64_t b = 0; b < g->kw; b++) {                                                  \
              int64_t wi = ((o * g->cg + c) * g->kh + a) * g->kw + b;                              \
              int64_t xc = (n * g->c + (o / g->og) * g->cg + c) * g->hw;                           \
              double sw = 0; /* this image's part of out[wi] */                                    \
              for (int64_t i = 0; i < g->oh; i++) {                                                \
                int64_t r = i * g->sh - g->pt + a * g->dh;                                         \
                if (r < 0 || r >= g->h) continue;                                                  \
                for (int64_t j = 0; j < g->ow; j++) {                                              \
                  int64_t q = j * g->sw - g->pl + b * g->dw;                                       \
                  if (q < 0 || q >= g->w) continue;                                                \
                  int64_t xi = xc + r * g->w + q, yi = ((n * g->o + o) * g->oh + i) * g->ow + j;   \
                  sw += (double)y[yi] * x[xi];                                                     \
                }                                                                                  \
              }                                                                                    \
              out[wi] += (T)sw;                                                                    \
            }                                                                                      \
  }

DEFINE_CONV_KERNELS(float, f32)
DEFINE_CONV_KERNELS(double, f64)

static void im2col(const conv_geom *g, const void *img, void *col) {
  if (g->dt == AD_F32)
    im2col_f32(g, img, col);
  else
    im2col_f64(g, img, col);
}

static void col2im(const conv_geom *g, const void *col, void *img) {
  if (g->dt == AD_F32)
    col2im_f32(g, col, img);
  else
    col2im_f64(g, col, img);
}

/* out[k, :len] += bias[k] for k < rows, rows of len contiguous elements. */
static void add_bias(ad_dtype dt, void *out, const void *bias, int64_t rows, int64_t len) {
  for (int64_t k = 0; k < rows; k++) {
    if (dt == AD_F32) {
      float *o = (float *)out + k * len, v = ((const float *)bias)[k];
      for (int64_t i = 0; i < len; i++) o[i] += v;
    } else {
      double *o = (double *)out + k * len, v = ((const double *)bias)[k];
      for (int64_t i = 0; i < len; i++) o[i] += v;
    }
  }
}

/* One call's work: the geometry, the operands, and the scratch of its
 * ranges. */
typedef struct conv_job {
  conv_geom g;
  const char *x, *w, *y, *bias; /* by role; y is the output side's operand */
  char *out;
  size_t es;
  char *scratch; /* slots col buffers of col_bytes, or NULL (pointwise) */
  size_t col_bytes;
  _Atomic int *busy; /* busy[s]: a range holds col buffer s */
  int slots;
  bool split;        /* items run one after another: GEMMs split over the threads */
  int64_t per_chunk; /* conv2d_weight: images per partial sum */
  char *partials;    /* conv2d_weight: one dW^T per chunk */
  int64_t nchunks;
  ad_wino wino; /* the Winograd path: its geometry and transformed kernels */
  float *u;
  _Atomic bool nonfinite; /* the Winograd path wrote an inf or a NaN */
} conv_job;

static void job_gemm(const conv_job *j, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                     const void *a, int64_t lda, const void *b, int64_t ldb, double beta, void *c,
                     int64_t ldc) {
  if (j->split)
    ad_gemm_split(j->g.dt, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
  else
    ad_gemm(j->g.dt, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

/* A col buffer no other running range holds, or NULL when none is needed. */
static int slot_take(conv_job *j) {
  if (!j->scratch) return -1;
  for (;;) {
    for (int s = 0; s < j->slots; s++)
      if (!atomic_exchange(&j->busy[s], 1)) return s;
    sched_yield(); /* more ranges than threads at once: only if the count changed */
  }
}

static void slot_give(conv_job *j, int s) {
  if (s >= 0) atomic_store(&j->busy[s], 0);
}

static char *slot_col(const conv_job *j, int s) {
  return s >= 0 ? j->scratch + (size_t)s * j->col_bytes : NULL;
}

/* Arena memory that fails without recording an error (the caller falls
 * back to a path without it): 64-byte aligned. */
static void *conv_scratch(ad_ctx *ctx, size_t bytes) {
  if (bytes > SIZE_MAX / 2) return NULL; /* no arena holds it; bytes + 64 must not wrap */
  void *p = ad_arena_try(ctx, bytes + 64);
  return p ? (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63) : NULL;
}

/* j's slots of bytes each (rounded up to 64); false when the arena has no
 * room for them. */
static bool job_slots(ad_ctx *ctx, conv_job *j, size_t bytes) {
  if (bytes > SIZE_MAX / 4) return false;
  ad_arena_mark mark = ad_arena_mark_get(ctx);
  j->col_bytes = (bytes + 63) & ~(size_t)63;
  if (j->col_bytes > SIZE_MAX / 2 / (size_t)j->slots) return false; /* the product must not wrap */
  j->scratch = conv_scratch(ctx, (size_t)j->slots * j->col_bytes);
  if (!j->scratch && j->slots > 1) {
    /* one buffer, the items one after another: the same path and bits as
     * on one thread, which an arena limit must not change */
    j->slots = 1;
    j->scratch = conv_scratch(ctx, j->col_bytes);
  }
  j->busy = j->scratch ? conv_scratch(ctx, (size_t)j->slots * sizeof *j->busy) : NULL;
  if (!j->busy) {
    ad_arena_rewind(ctx, &mark);
    return false;
  }
  for (int s = 0; s < j->slots; s++) atomic_init(&j->busy[s], 0);
  return true;
}

/* Sets up j's col buffers and threading for items independent items (images
 * or chunks); false when the arena has no room for them. */
static bool job_prepare(ad_ctx *ctx, conv_job *j, int64_t items) {
  int threads = ad_num_threads();
  bool par = threads > 1 && items > 1;
  j->split = threads > 1 && !par;
  j->slots = par ? (int)(items < threads ? items : threads) : 1;
  j->es = ad_dsize(j->g.dt);
  j->scratch = NULL;
  j->busy = NULL;
  if (j->g.pointwise || j->g.kk == 0 || j->g.p == 0) return true;
  if (j->g.kk > (INT64_MAX / 8) / j->g.p) return false; /* no arena holds it */
  return job_slots(ctx, j, (size_t)(j->g.kk * j->g.p) * j->es);
}

static void job_run(conv_job *j, int64_t items, ad_range_fn fn) {
  if (j->slots > 1)
    ad_parallel_for(items, 1, fn, j);
  else
    fn(j, 0, items);
}

/* The direct loop for kind on the job's operands (the fallback). */
static void job_direct(const conv_job *j, int kind) {
  if (j->g.dt == AD_F32)
    direct_f32(&j->g, kind, (const float *)j->x, (const float *)j->w, (const float *)j->y,
               (float *)j->out);
  else
    direct_f64(&j->g, kind, (const double *)j->x, (const double *)j->w, (const double *)j->y,
               (double *)j->out);
}

/* ------------------------------------------------------------ Winograd */

/* Most partial sums of dW, and the most bytes they may take: a fixed
 * partition of the batch, whatever the number of threads. */
#define CONVW_CHUNKS     8
#define CONVW_PART_BYTES (8u << 20)

static _Atomic int wino_mode;

int ad_conv_winograd_mode(int mode) { return atomic_exchange(&wino_mode, mode); }

bool ad_set_conv_winograd(bool on) { return atomic_exchange(&wino_mode, on ? 0 : -1) >= 0; }

/* Whether p[0, n) holds no inf and no NaN (by the exponent bits, so that
 * the loop vectorizes). */
static bool all_finite_f32(const float *p, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, p + i, sizeof u);
    bad |= (u & 0x7f800000u) == 0x7f800000u;
  }
  return !bad;
}

/* Flags j when block blk's images in out (per_image floats each) are not
 * all finite: checked while they are still in cache. */
static void wino_check_block(conv_job *j, int64_t blk, int64_t per_image) {
  int64_t i0 = blk * j->wino.nb, i1 = i0 + j->wino.nb;
  if (i1 > j->wino.n) i1 = j->wino.n;
  if (i1 > i0 && !all_finite_f32((const float *)j->out + i0 * per_image, (i1 - i0) * per_image))
    atomic_store_explicit(&j->nonfinite, true, memory_order_relaxed);
}

/* Whether g's convolution takes the Winograd path (kernels/winograd.c):
 * f32, a 3x3 kernel at stride 1, dilation 1, one group, padding at most 2
 * on each side; by default only with 16 or more channels on each side and
 * an output of at least 4x4, where the transforms pay for themselves
 * (docs/performance.md). f64 always takes the GEMM path. */
static bool wino_applies(const conv_geom *g) {
  int mode = atomic_load(&wino_mode);
  if (mode < 0 || g->dt != AD_F32 || g->kh != 3 || g->kw != 3 || g->sh != 1 || g->sw != 1 ||
      g->dh != 1 || g->dw != 1 || g->groups != 1 || g->n < 1 || g->c < 1 || g->o < 1 || g->oh < 1 ||
      g->ow < 1)
    return false;
  int64_t pb = g->oh + 2 - g->h - g->pt, pr = g->ow + 2 - g->w - g->pl;
  if (g->pt > 2 || g->pl > 2 || pb < 0 || pb > 2 || pr < 0 || pr > 2) return false;
  return mode > 0 || (g->c >= 16 && g->o >= 16 && g->oh >= 4 && g->ow >= 4);
}

static void conv2d_wino_range(void *ud, int64_t begin, int64_t end) {
  conv_job *j = ud;
  int s = slot_take(j);
  float *buf = (float *)slot_col(j, s);
  for (int64_t b = begin; b < end; b++) {
    ad_wino_conv_block(&j->wino, b, j->u, (const float *)j->x, (const float *)j->bias,
                       (float *)j->out, buf);
    wino_check_block(j, b, j->g.o * j->g.oh * j->g.ow);
  }
  slot_give(j, s);
}

static void convt_wino_range(void *ud, int64_t begin, int64_t end) {
  conv_job *j = ud;
  int s = slot_take(j);
  float *buf = (float *)slot_col(j, s);
  for (int64_t b = begin; b < end; b++) {
    if (j->wino.flip) /* dy's convolution with the flipped kernels */
      ad_wino_conv_block(&j->wino, b, j->u, (const float *)j->y, (const float *)j->bias,
                         (float *)j->out, buf);
    else
      ad_wino_convt_block(&j->wino, b, j->u, (const float *)j->y, (const float *)j->bias,
                          (float *)j->out, buf);
    wino_check_block(j, b, j->g.c * j->g.h * j->g.w);
  }
  slot_give(j, s);
}

/* Chunks [begin, end) of the blocks, each into its partial sum of dU. */
static void convw_wino_range(void *ud, int64_t begin, int64_t end) {
  conv_job *j = ud;
  int s = slot_take(j);
  float *buf = (float *)slot_col(j, s);
  for (int64_t ch = begin; ch < end; ch++) {
    float *du = (float *)j->partials + ch * j->wino.u_floats;
    int64_t b0 = ch * j->per_chunk, b1 = b0 + j->per_chunk;
    if (b1 > j->wino.nblocks) b1 = j->wino.nblocks;
    for (int64_t b = b0; b < b1; b++)
      ad_wino_weight_block(&j->wino, b, (const float *)j->x, (const float *)j->y, b == b0, du, buf);
  }
  slot_give(j, s);
}

static void wino_weights_range(void *ud, int64_t begin, int64_t end) {
  conv_job *j = ud;
  ad_wino_weights(&j->wino, (const float *)j->w, j->u, begin, end);
}

static void wino_du_range(void *ud, int64_t begin, int64_t end) {
  conv_job *j = ud;
  ad_wino_du_sum(&j->wino, (float *)j->partials, j->nchunks, begin, end);
}

static void wino_dw_range(void *ud, int64_t begin, int64_t end) {
  conv_job *j = ud;
  ad_wino_weight_grad(&j->wino, (const float *)j->partials, (float *)j->out, begin, end);
}

/* Runs op kind (OP_*) on j by Winograd when it applies and the arena has
 * room for its scratch; false (nothing written) otherwise. */
static bool wino_run(ad_ctx *ctx, conv_job *j, int kind) {
  const conv_geom *g = &j->g;
  if (!wino_applies(g)) return false;
  conv_job saved = *j;
  ad_arena_mark mark = ad_arena_mark_get(ctx);
  ad_wino *p = &j->wino;
  /* the input gradient as dy's convolution with the flipped kernels
   * (conv2d's rounding) where that costs no more tiles, else the adjoint */
  if (kind != OP_CONVT ||
      !ad_wino_init_transposed(p, g->n, g->c, g->h, g->w, g->o, g->oh, g->ow, g->pt, g->pl))
    ad_wino_init(p, g->n, g->c, g->h, g->w, g->o, g->oh, g->ow, g->pt, g->pl);
  size_t ubytes = (size_t)p->u_floats * sizeof(float);
  int64_t items = p->nblocks;
  if (kind == OP_WEIGHT) {
    int64_t nc = items < CONVW_CHUNKS ? items : CONVW_CHUNKS;
    if ((size_t)nc * ubytes > CONVW_PART_BYTES) nc = (int64_t)(CONVW_PART_BYTES / ubytes);
    if (nc < 1) nc = 1;
    j->per_chunk = (items + nc - 1) / nc;
    j->nchunks = items = (p->nblocks + j->per_chunk - 1) / j->per_chunk;
    j->partials = conv_scratch(ctx, (size_t)items * ubytes);
    if (!j->partials) goto fail;
  } else {
    j->u = conv_scratch(ctx, ubytes + (size_t)p->ut_floats * sizeof(float));
    if (!j->u) goto fail;
    ad_parallel_for(ad_wino_kblocks(p), 1, wino_weights_range, j);
  }
  int threads = ad_num_threads();
  j->es = sizeof(float);
  j->split = false;
  j->slots = threads > 1 && items > 1 ? (int)(items < threads ? items : threads) : 1;
  if (!job_slots(ctx, j, (size_t)p->scratch_floats * sizeof(float))) goto fail;
  job_run(j, items,
          kind == OP_CONV    ? conv2d_wino_range
          : kind == OP_CONVT ? convt_wino_range
                             : convw_wino_range);
  if (kind == OP_WEIGHT) {
    ad_parallel_for(p->u_floats, 1 << 14, wino_du_range, j);
    ad_parallel_for(ad_wino_kblocks(p), 1, wino_dw_range, j);
    if (!all_finite_f32((const float *)j->out, g->o * g->c * 9)) j->nonfinite = true;
  }
  if (!j->nonfinite) return true;
  /* the transforms spread it over whole tiles: redo by GEMM */
fail: /* the other path gets the room this one's scratch took */
  *j = saved;
  ad_arena_rewind(ctx, &mark);
  return false;
}

/* ------------------------------------------------------------ depthwise */

/* One input channel per group (cg = 1: depthwise, PyTorch's groups = C with
 * any multiplier og): each image's and group's GEMM is og x kh kw x oh ow,
 * so thin that its im2col and the kernel's call cost more than the
 * arithmetic (a [32, 64, 32, 32] batch in 64 groups: 2048 products of
 * 1 x 9 x 1024 per op, 1.7x PyTorch's forward and 3.4x its backward).
 * Direct loops over channel planes instead, a row of the kernel at a time
 * as a multiply-add of a row of x (vectorized), each plane on one thread:
 *   conv2d:            y[i, :] = sum over taps (a, b) in order of w[a, b] x[r, :]
 *   conv_transpose2d:  x[r, :] += w[o, a, b] dy[o, i, :], taps (a, b) and
 *                      then o in order (col2im's order; og = 1: its bits)
 *   conv2d_weight:     dw[o, a, b] = sum over images of the image's sum in
 *                      16 (f64: 8) lanes of T, added in a double
 * The products are rounded apart from the sums (the GEMM fuses them where
 * the CPU has FMA): results within a few ulps of the GEMM path's, and the
 * same on any thread count. Taps outside the image are skipped, where the
 * GEMM multiplies them by im2col's zeros: that differs only for an inf or
 * NaN (inf x 0), so conv2d with a non-finite w, and conv2d_weight whose
 * result is not finite or that has output positions with no tap inside
 * the image, take the GEMM path (conv_transpose2d's col2im skips them too). */
#define DW_RT 256 /* columns of conv2d_weight's column sums at a time */
#define DW_VB 16  /* conv2d's outputs of a row at a time */
/* Vectors of 32 bytes (GCC's and clang's extension; two halves without
 * AVX), read and written by memcpy at any alignment. */
#if defined(__GNUC__)
#define DW_VEC 1
typedef float dw_vf __attribute__((vector_size(32)));
typedef double dw_vd __attribute__((vector_size(32)));
#else
#define DW_VEC 0
typedef float dw_vf; /* unused: DW_VEC 0 */
typedef double dw_vd;
#endif
#define DEFINE_DW_KERNELS(T, S, V, ATTR, ISA)                                                      \
  /* y plane [oh, ow] from x plane [h, w] and one channel's w [kh, kw] */                          \
  ATTR static void dw_conv_rows_##S##_##ISA(const conv_geom *g, const T *x, const T *w, T *y) {    \
    for (int64_t i = 0; i < g->oh; i++) {                                                          \
      T *restrict yr = y + i * g->ow;                                                              \
      for (int64_t j = 0; j < g->ow; j++) yr[j] = 0;                                               \
      for (int64_t a = 0; a < g->kh; a++) {                                                        \
        int64_t r = i * g->sh - g->pt + a * g->dh;                                                 \
        if (r < 0 || r >= g->h) continue;                                                          \
        for (int64_t b = 0; b < g->kw; b++) {                                                      \
          int64_t j0, j1;                                                                          \
          conv_cols(g, b, &j0, &j1);                                                               \
          if (j1 <= j0) continue;                                                                  \
          T wv = w[a * g->kw + b];                                                                 \
          const T *restrict xr = x + r * g->w + j0 * g->sw - g->pl + b * g->dw;                    \
          if (g->sw == 1)                                                                          \
            for (int64_t j = j0; j < j1; j++) yr[j] += wv * xr[j - j0];                            \
          else                                                                                     \
            for (int64_t j = j0; j < j1; j++) yr[j] += wv * xr[(j - j0) * g->sw];                  \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
  /* x's row r zero padded: out[pl + q] = x[r, q], zeros elsewhere in [0, lr) */                   \
  ATTR static void dw_pad_##S##_##ISA(const conv_geom *g, const T *x, int64_t r, int64_t lr,       \
                                      T *out) {                                                    \
    for (int64_t q = 0; q < g->pl; q++) out[q] = 0;                                                \
    for (int64_t q = 0; q < g->w; q++) out[g->pl + q] = x[r * g->w + q];                           \
    for (int64_t q = g->pl + g->w; q < lr; q++) out[q] = 0;                                        \
  }                                                                                                \
  /* y plane [oh, ow] from x plane [h, w] and one channel's w [kh, kw]: DW_VB outputs of a row     \
   * at a time over all taps, reading rows padded with zeros (adding w x 0 = +-0 to a sum that     \
   * starts at +0 changes no bit for finite w), from a copy of the plane or of the rows the        \
   * output row reads; rows too long for the stack take a multiply-add of a row per tap. */        \
  ATTR static void dw_conv_##S##_##ISA(const conv_geom *g, const T *x, const T *w, T *y) {         \
    enum { NB = 16384 / sizeof(T) };                                                               \
    int64_t lr = (g->ow + DW_VB) * g->sw + (g->kw - 1) * g->dw + 1;                                \
    if (lr < g->pl + g->w) lr = g->pl + g->w;                                                      \
    if (g->kh * lr > NB) {                                                                         \
      dw_conv_rows_##S##_##ISA(g, x, w, y);                                                        \
      return;                                                                                      \
    }                                                                                              \
    bool plane = g->h * lr <= NB;                                                                  \
    T buf[NB];                                                                                     \
    if (plane)                                                                                     \
      for (int64_t r = 0; r < g->h; r++) dw_pad_##S##_##ISA(g, x, r, lr, buf + r * lr);            \
    for (int64_t i = 0; i < g->oh; i++) {                                                          \
      const T *rows[64], *wr[64];                                                                  \
      int na = 0;                                                                                  \
      for (int64_t a = 0; a < g->kh; a++) {                                                        \
        int64_t r = i * g->sh - g->pt + a * g->dh;                                                 \
        if (r < 0 || r >= g->h) continue;                                                          \
        if (!plane) dw_pad_##S##_##ISA(g, x, r, lr, buf + na * lr);                                \
        rows[na] = plane ? buf + r * lr : buf + na * lr;                                           \
        wr[na++] = w + a * g->kw;                                                                  \
      }                                                                                            \
      T *yr = y + i * g->ow;                                                                       \
      if (g->sw == 1 && DW_VEC) { /* the same sums, DW_VB / VL vectors held in registers */        \
        enum { VL = 32 / sizeof(T), NV = DW_VB / VL };                                             \
        for (int64_t j = 0; j < g->ow; j += DW_VB) {                                               \
          V acc[NV];                                                                               \
          for (int v = 0; v < NV; v++) acc[v] = (V){0};                                            \
          for (int k = 0; k < na; k++)                                                             \
            for (int64_t b = 0; b < g->kw; b++) {                                                  \
              T wv = wr[k][b];                                                                     \
              const T *src = rows[k] + j + b * g->dw;                                              \
              for (int v = 0; v < NV; v++) {                                                       \
                V xv;                                                                              \
                memcpy(&xv, src + v * VL, sizeof xv);                                              \
                acc[v] += wv * xv;                                                                 \
              }                                                                                    \
            }                                                                                      \
          int64_t nj = g->ow - j < DW_VB ? g->ow - j : DW_VB;                                      \
          memcpy(yr + j, acc, (size_t)nj * sizeof(T));                                             \
        }                                                                                          \
        continue;                                                                                  \
      }                                                                                            \
      for (int64_t j = 0; j < g->ow; j += DW_VB) {                                                 \
        T acc[DW_VB] = {0};                                                                        \
        for (int k = 0; k < na; k++)                                                               \
          for (int64_t b = 0; b < g->kw; b++) {                                                    \
            T wv = wr[k][b];                                                                       \
            const T *src = rows[k] + j * g->sw + b * g->dw;                                        \
            for (int t = 0; t < DW_VB; t++) acc[t] += wv * src[t * g->sw];                         \
          }                                                                                        \
        int64_t nj = g->ow - j < DW_VB ? g->ow - j : DW_VB;                                        \
        for (int64_t t = 0; t < nj; t++) yr[j + t] = acc[t];                                       \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
  /* x plane [h, w] from og dy planes [oh, ow] and their w [og, kh, kw] */                         \
  ATTR static void dw_convt_##S##_##ISA(const conv_geom *g, const T *dy, const T *w, T *x) {       \
    for (int64_t e = 0; e < g->hw; e++) x[e] = 0;                                                  \
    for (int64_t a = 0; a < g->kh; a++)                                                            \
      for (int64_t b = 0; b < g->kw; b++) {                                                        \
        int64_t j0, j1;                                                                            \
        conv_cols(g, b, &j0, &j1);                                                                 \
        if (j1 <= j0) continue;                                                                    \
        for (int64_t o = 0; o < g->og; o++) {                                                      \
          T wv = w[(o * g->kh + a) * g->kw + b];                                                   \
          for (int64_t i = 0; i < g->oh; i++) {                                                    \
            int64_t r = i * g->sh - g->pt + a * g->dh;                                             \
            if (r < 0 || r >= g->h) continue;                                                      \
            T *restrict xr = x + r * g->w + j0 * g->sw - g->pl + b * g->dw;                        \
            const T *restrict dr = dy + (o * g->oh + i) * g->ow + j0;                              \
            if (g->sw == 1)                                                                        \
              for (int64_t j = 0; j < j1 - j0; j++) xr[j] += wv * dr[j];                           \
            else                                                                                   \
              for (int64_t j = 0; j < j1 - j0; j++) xr[j * g->sw] += wv * dr[j];                   \
          }                                                                                        \
        }                                                                                          \
      }                                                                                            \
  }                                                                                                \
  /* acc[t] += one image's sum of dy[i, j] x[r, q] for each tap t = (a, b):                        \
   * each column's sum down the rows in T, then the columns' in a double */                        \
  ATTR static void dw_weight_##S##_##ISA(const conv_geom *g, const T *x, const T *dy,              \
                                         double *acc) {                                            \
    T col[DW_RT];                                                                                  \
    for (int64_t a = 0; a < g->kh; a++)                                                            \
      for (int64_t b = 0; b < g->kw; b++) {                                                        \
        int64_t j0, j1;                                                                            \
        conv_cols(g, b, &j0, &j1);                                                                 \
        double s = 0;                                                                              \
        for (int64_t c0 = j0; c0 < j1; c0 += DW_RT) {                                              \
          int64_t n = j1 - c0 < DW_RT ? j1 - c0 : DW_RT;                                           \
          for (int64_t t = 0; t < n; t++) col[t] = 0;                                              \
          for (int64_t i = 0; i < g->oh; i++) {                                                    \
            int64_t r = i * g->sh - g->pt + a * g->dh;                                             \
            if (r < 0 || r >= g->h) continue;                                                      \
            const T *restrict xr = x + r * g->w + c0 * g->sw - g->pl + b * g->dw;                  \
            const T *restrict dr = dy + i * g->ow + c0;                                            \
            if (g->sw == 1)                                                                        \
              for (int64_t t = 0; t < n; t++) col[t] += dr[t] * xr[t];                             \
            else                                                                                   \
              for (int64_t t = 0; t < n; t++) col[t] += dr[t] * xr[t * g->sw];                     \
          }                                                                                        \
          for (int64_t t = 0; t < n; t++) s += col[t];                                             \
        }                                                                                          \
        acc[a * g->kw + b] += s;                                                                   \
      }                                                                                            \
  }                                                                                                \
  static void dw_plane_##S##_##ISA(const conv_geom *g, int kind, const void *p, const void *w,     \
                                   void *out) {                                                    \
    if (kind == OP_CONV)                                                                           \
      dw_conv_##S##_##ISA(g, p, w, out);                                                           \
    else                                                                                           \
      dw_convt_##S##_##ISA(g, p, w, out);                                                          \
  }

/* p[0, n) has no inf and no NaN: p x 0 is 0 for finite p, NaN otherwise. */
#define DEFINE_DW_FINITE(T, S)                                                                     \
  static bool finite_##S(const T *p, int64_t n) {                                                  \
    T acc = 0;                                                                                     \
    for (int64_t i = 0; i < n; i++) acc += p[i] * 0;                                               \
    return acc == 0;                                                                               \
  }
DEFINE_DW_FINITE(float, f32)
DEFINE_DW_FINITE(double, f64)

/* Each instruction set's copy gives the same bits: the loops run along
 * independent elements (no sum is reassociated) and products are rounded
 * apart from sums (-ffp-contract=off). */
DEFINE_DW_KERNELS(float, f32, dw_vf, , gen)
DEFINE_DW_KERNELS(double, f64, dw_vd, , gen)
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DW_X86 1
DEFINE_DW_KERNELS(float, f32, dw_vf, __attribute__((target("avx2"))), avx2)
DEFINE_DW_KERNELS(double, f64, dw_vd, __attribute__((target("avx2"))), avx2)
#endif

typedef void dw_plane_fn(const conv_geom *, int, const void *, const void *, void *);
typedef void dw_weight_fn(const conv_geom *, const void *, const void *, double *);

static void dw_weight_f32_w(const conv_geom *g, const void *x, const void *dy, double *acc) {
  dw_weight_f32_gen(g, x, dy, acc);
}
static void dw_weight_f64_w(const conv_geom *g, const void *x, const void *dy, double *acc) {
  dw_weight_f64_gen(g, x, dy, acc);
}
#ifdef DW_X86
static void dw_weight_f32_w2(const conv_geom *g, const void *x, const void *dy, double *acc) {
  dw_weight_f32_avx2(g, x, dy, acc);
}
static void dw_weight_f64_w2(const conv_geom *g, const void *x, const void *dy, double *acc) {
  dw_weight_f64_avx2(g, x, dy, acc);
}
#endif

/* The direct loops' job: the call's, the op's kind (OP_*) and the
 * kernels for the dtype and the CPU. */
typedef struct dw_job {
  const conv_job *j;
  int kind;
  dw_plane_fn *plane;
  dw_weight_fn *weight;
} dw_job;

static void dw_range(void *ud, int64_t begin, int64_t end) {
  const dw_job *d = ud;
  const conv_job *j = d->j;
  const conv_geom *g = &j->g;
  size_t es = j->es;
  for (int64_t e = begin; e < end; e++) {
    if (d->kind == OP_CONV) { /* plane e = (n, o) of y */
      int64_t o = e % g->o, c = e / g->o * g->c + o / g->og;
      char *y = j->out + (size_t)(e * g->p) * es;
      d->plane(g, OP_CONV, j->x + (size_t)(c * g->hw) * es, j->w + (size_t)(o * g->kk) * es, y);
      if (j->bias) add_bias(g->dt, y, j->bias + (size_t)o * es, 1, g->p);
    } else if (d->kind == OP_CONVT) { /* plane e = (n, c) of x: its group's og planes of dy */
      int64_t c = e % g->c, o0 = c * g->og;
      char *x = j->out + (size_t)(e * g->hw) * es;
      d->plane(g, OP_CONVT, j->y + (size_t)((e / g->c * g->o + o0) * g->p) * es,
               j->w + (size_t)(o0 * g->kk) * es, x);
      if (j->bias) add_bias(g->dt, x, j->bias + (size_t)c * es, 1, g->hw);
    } else { /* channel e of dw, summed over the images in order */
      double acc[64] = {0};
      int64_t c = e / g->og;
      for (int64_t n = 0; n < g->n; n++)
        d->weight(g, j->x + (size_t)((n * g->c + c) * g->hw) * es,
                  j->y + (size_t)((n * g->o + e) * g->p) * es, acc);
      for (int64_t t = 0; t < g->kk; t++) {
        if (g->dt == AD_F32)
          ((float *)j->out)[e * g->kk + t] = (float)acc[t];
        else
          ((double *)j->out)[e * g->kk + t] = acc[t];
      }
    }
  }
}

/* Whether each of n_out output positions along an axis has a tap inside
 * the input's n_in. */
static bool dw_covered(int64_t n_out, int64_t n_in, int64_t k, int64_t s, int64_t d, int64_t p) {
  for (int64_t i = 0; i < n_out; i++) {
    bool any = false;
    for (int64_t a = 0; a < k && !any; a++) {
      int64_t r = i * s - p + a * d;
      any = r >= 0 && r < n_in;
    }
    if (!any) return false;
  }
  return true;
}

static bool dw_finite(const conv_geom *g, const void *p, int64_t n) {
  return g->dt == AD_F32 ? finite_f32(p, n) : finite_f64(p, n);
}

/* Runs op kind on j by the direct loops when they apply; false (the GEMM
 * path is to run, and overwrites anything written) otherwise. */
static bool dw_run(conv_job *j, int kind) {
  const conv_geom *g = &j->g;
  if (g->cg != 1 || g->groups < 2 || g->kk > 64) return false;
  if (kind == OP_CONV && !dw_finite(g, j->w, g->o * g->kk)) return false;
  if (kind == OP_WEIGHT && (!dw_covered(g->oh, g->h, g->kh, g->sh, g->dh, g->pt) ||
                            !dw_covered(g->ow, g->w, g->kw, g->sw, g->dw, g->pl)))
    return false;
  j->es = ad_dsize(g->dt);
  bool f32 = g->dt == AD_F32;
  dw_job d = {j, kind, f32 ? dw_plane_f32_gen : dw_plane_f64_gen,
              f32 ? dw_weight_f32_w : dw_weight_f64_w};
#ifdef DW_X86
  if (__builtin_cpu_supports("avx2")) {
    d.plane = f32 ? dw_plane_f32_avx2 : dw_plane_f64_avx2;
    d.weight = f32 ? dw_weight_f32_w2 : dw_weight_f64_w2;
  }
#endif
  int64_t items = kind == OP_CONV ? g->n * g->o : kind == OP_CONVT ? g->n * g->c : g->o;
  int64_t work = (kind == OP_WEIGHT ? g->n : 1) * g->kk * (kind == OP_CONVT ? g->og : 1) * g->p;
  int64_t grain = work >= (1 << 15) ? 1 : (1 << 15) / (work > 0 ? work : 1);
  ad_parallel_for(items, grain, dw_range, &d); /* planes apart: the bits of any split */
  return kind != OP_WEIGHT || dw_finite(g, j->out, g->o * g->kk);
}

/* The attrs of the backward ops: c's, with 'same' resolved for w's kernel. */
static ad_attrs conv_bwd_attrs(const ad_call *c, int64_t kh, int64_t kw) {
  ad_attrs at;
  memset(&at, 0, sizeof at);
  at.conv = conv_resolved(&c->attrs->conv, kh, kw);
  at.conv.output_padding[0] = at.conv.output_padding[1] = 0;
  at.conv.kernel[0] = at.conv.kernel[1] = 0;
  return at;
}

/* The output_padding that makes conv_transpose2d of an [oh, ow] input give
 * back an [h, w] image under r: what the floor of the output size dropped. */
static void conv_recover(ad_conv_attrs *r, int64_t h, int64_t w, int64_t kh, int64_t kw) {
  r->output_padding[0] =
      (h + r->padding[0] + r->padding[1] - conv_span(kh, r->dilation[0])) % r->stride[0];
  r->output_padding[1] =
      (w + r->padding[2] + r->padding[3] - conv_span(kw, r->dilation[1])) % r->stride[1];
}

/* db = sum of dy over N, H, W. */
static ad_tensor *bias_grad(ad_ctx *ctx, ad_tensor *dy) {
  int64_t s[3] = {dy->shape[1], 1, 1}, o = dy->shape[1];
  return ad_reshape(ctx, ad_sum_to(ctx, dy, 3, s), 1, &o);
}

static ad_tensor *apply_conv(ad_ctx *ctx, int op, ad_tensor *a, ad_tensor *b, ad_tensor *bias,
                             const ad_attrs *at) {
  ad_tensor *in[3] = {a, b, bias};
  return ad_op_apply(ctx, op, bias ? 3 : 2, in, at);
}

/* The op's attributes from the public options: zero means PyTorch's default. */
static ad_attrs conv_attrs_of(const ad_conv_opts *o) {
  ad_attrs at;
  memset(&at, 0, sizeof at);
  ad_conv_attrs *a = &at.conv;
  ad_conv_opts z = {0};
  if (!o) o = &z;
  for (int k = 0; k < 2; k++) {
    a->stride[k] = o->stride[k] ? o->stride[k] : 1;
    a->dilation[k] = o->dilation[k] ? o->dilation[k] : 1;
    a->output_padding[k] = o->output_padding[k];
  }
  for (int k = 0; k < 4; k++) a->padding[k] = o->padding[k];
  a->groups = o->groups ? o->groups : 1;
  a->same = o->same;
  return at;
}

/* Shared sample inputs: x [n, c, h, w], w [o, c/groups, kh, kw] (or any
 * 4-D shape), optional bias [nb], all checked. Returns the input count. */
static int sample4(const ad_sample_call *s, const int64_t *sx, const int64_t *sw, int64_t nb) {
  s->in[0] = ad_sample_tensor(s, 4, sx, -1, 1, true);
  s->in[1] = ad_sample_tensor(s, 4, sw, -1, 1, true);
  if (!s->in[0] || !s->in[1]) return -1;
  if (nb <= 0) return 2;
  s->in[2] = ad_sample_tensor(s, 1, &nb, -1, 1, true);
  return s->in[2] ? 3 : -1;
}

static ad_conv_attrs sample_attrs(int64_t sh, int64_t sw, const int64_t *pad, int64_t dh,
                                  int64_t dw, int64_t groups) {
  ad_conv_attrs a = {.stride = {sh, sw}, .dilation = {dh, dw}, .groups = groups};
  for (int k = 0; k < 4; k++) a.padding[k] = pad[k];
  return a;
}

/* -------------------------------------------------------------- conv2d */

static ad_status conv2d_shape(const ad_call *c) {
  ad_status st = conv_check_inputs(c, "[O, C/groups, kH, kW]");
  if (st != AD_OK) return st;
  const ad_tensor *x = c->in[0], *w = c->in[1];
  int64_t kh = w->shape[2], kw = w->shape[3];
  if ((st = conv_check_attrs(c, OP_CONV, kh, kw)) != AD_OK) return st;
  char sx[64], sw[64];
  int64_t C = x->shape[1], O = w->shape[0], g = c->attrs->conv.groups;
  if (C % g || O % g)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: groups %lld must divide the input channels %lld and the output "
                        "channels %lld: x %s, w %s",
                        c->name, (long long)g, (long long)C, (long long)O,
                        ad_shape_str(x, sx, sizeof sx), ad_shape_str(w, sw, sizeof sw));
  if (w->shape[1] != C / g) {
    int64_t takes = sat_mul(w->shape[1], g); /* both up to 2^40 */
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: x %s has %lld channels, but w %s takes %lld per group x %lld "
                        "groups = %s%lld",
                        c->name, ad_shape_str(x, sx, sizeof sx), (long long)C,
                        ad_shape_str(w, sw, sizeof sw), (long long)w->shape[1], (long long)g,
                        takes >= CONV_SAT ? "at least " : "", (long long)takes);
  }
  if ((st = conv_check_bias(c, O)) != AD_OK) return st;
  ad_conv_attrs r = conv_resolved(&c->attrs->conv, kh, kw);
  int64_t oh =
      conv_out_len(x->shape[2], r.padding[0], r.padding[1], kh, r.stride[0], r.dilation[0]);
  int64_t ow =
      conv_out_len(x->shape[3], r.padding[2], r.padding[3], kw, r.stride[1], r.dilation[1]);
  if (oh < 1 || ow < 1) return conv_too_small(c, x, kh, kw, &r);
  ad_tensor *o = c->out;
  o->dtype = x->dtype;
  o->ndim = 4;
  o->shape[0] = x->shape[0];
  o->shape[1] = O;
  o->shape[2] = oh;
  o->shape[3] = ow;
  return AD_OK;
}

/* The ops' forwards: their scratch (col buffers, Winograd's transforms)
 * goes back to the arena when they return, so that it neither stays
 * until the tape's reset
 * nor, under an arena limit, leaves a later op less room on more threads
 * (a path with other rounding). Nothing allocated past the mark outlives
 * the call: the output was allocated before it. */
#define CONV_FWD(NAME, COMPUTE)                                                                    \
  static void NAME(const ad_call *c) {                                                             \
    ad_arena_mark m = ad_arena_mark_get(c->ctx);                                                   \
    COMPUTE(c);                                                                                    \
    ad_arena_rewind(c->ctx, &m);                                                                   \
  }

static void conv2d_range(void *ud, int64_t begin, int64_t end) {
  conv_job *j = ud;
  const conv_geom *g = &j->g;
  size_t es = j->es;
  int s = slot_take(j);
  char *col = slot_col(j, s);
  for (int64_t n = begin; n < end; n++) {
    char *y = j->out + (size_t)(n * g->o * g->p) * es;
    for (int64_t grp = 0; grp < g->groups; grp++) {
      const char *img = j->x + (size_t)((n * g->c + grp * g->cg) * g->hw) * es;
      if (col) im2col(g, img, col);
      job_gemm(j, false, false, g->og, g->p, g->kk, j->w + (size_t)(grp * g->og * g->kk) * es,
               g->kk, col ? col : img, g->p, 0.0, y + (size_t)(grp * g->og * g->p) * es, g->p);
    }
    if (j->bias) add_bias(g->dt, y, j->bias, g->o, g->p);
  }
  slot_give(j, s);
}

static void conv2d_compute(const ad_call *c) {
  const ad_tensor *x = c->in[0], *w = c->in[1];
  /* An empty output has nothing to compute. This also bounds the loops
   * over groups by the output's size: with no channels, any groups divides
   * them. */
  if (c->out->size == 0) return;
  ad_conv_attrs r = conv_resolved(&c->attrs->conv, w->shape[2], w->shape[3]);
  conv_job j = {.g = conv_geom_of(x->dtype, x->shape, c->out->shape, w->shape[2], w->shape[3], &r),
                .x = x->data,
                .w = w->data,
                .bias = c->n > 2 ? c->in[2]->data : NULL,
                .out = c->out->data};
  if (wino_run(c->ctx, &j, OP_CONV) || dw_run(&j, OP_CONV)) return;
  if (job_prepare(c->ctx, &j, j.g.n)) {
    job_run(&j, j.g.n, conv2d_range);
    return;
  }
  job_direct(&j, OP_CONV);
  if (j.bias)
    for (int64_t n = 0; n < j.g.n; n++)
      add_bias(j.g.dt, j.out + (size_t)(n * j.g.o * j.g.p) * j.es, j.bias, j.g.o, j.g.p);
}
CONV_FWD(conv2d_fwd, conv2d_compute)

/* dx = conv_transpose2d(dy, w) (sized back to x), dw = conv2d_weight(x, dy),
 * db = sum of dy over N, H, W */
static ad_status conv2d_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0], *w = c->in[1], *dy = c->gout;
  int64_t kh = w->shape[2], kw = w->shape[3];
  ad_attrs at = conv_bwd_attrs(c, kh, kw);
  ad_status st = AD_OK;
  if (c->needs[0]) {
    ad_attrs t = at;
    conv_recover(&t.conv, x->shape[2], x->shape[3], kh, kw);
    st = ad_call_set_grad(c, 0, apply_conv(ctx, AD_OP_CONV_TRANSPOSE2D, dy, w, NULL, &t));
  }
  if (st == AD_OK && c->needs[1]) {
    ad_attrs t = at;
    t.conv.kernel[0] = kh;
    t.conv.kernel[1] = kw;
    st = ad_call_set_grad(c, 1, apply_conv(ctx, AD_OP_CONV2D_WEIGHT, x, dy, NULL, &t));
  }
  if (st == AD_OK && c->n > 2 && c->needs[2]) st = ad_call_set_grad(c, 2, bias_grad(ctx, dy));
  return st;
}

ad_tensor *ad_conv2d(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *bias,
                     const ad_conv_opts *opts) {
  ad_attrs at = conv_attrs_of(opts);
  return apply_conv(ctx, AD_OP_CONV2D, x, w, bias, &at);
}

/* 0: 3x3 with bias; 1: stride 2, asymmetric padding, no bias; 2: dilation 2,
 * 2x3 kernel, bias; 3: groups 2, strides (1, 2); 4: depthwise, 'same' with
 * an even kernel (odd total split); 5: 1x1 (no col) with bias */
static int conv2d_sample(const ad_sample_call *s) {
  static const int64_t pads[6][4] = {{0}, {1, 0, 2, 1}, {1, 1, 0, 2}, {0, 1, 1, 0}, {0}, {0}};
  static const int64_t xs[6][4] = {{2, 2, 4, 4}, {1, 2, 5, 4}, {1, 2, 5, 5},
                                   {2, 4, 3, 5}, {1, 3, 4, 3}, {2, 3, 3, 2}};
  static const int64_t ws[6][4] = {{3, 2, 3, 3}, {2, 2, 3, 2}, {2, 2, 2, 3},
                                   {4, 2, 2, 2}, {3, 1, 2, 3}, {4, 3, 1, 1}};
  static const int64_t st[6][2] = {{1, 1}, {2, 2}, {1, 1}, {1, 2}, {1, 1}, {1, 1}};
  static const int64_t groups[6] = {1, 1, 1, 2, 3, 1}, dil[6] = {1, 1, 2, 1, 1, 1};
  static const int64_t bias[6] = {3, 0, 2, 0, 3, 4};
  int v = s->variant;
  if (v > 5) return 0;
  s->attrs->conv = sample_attrs(st[v][0], st[v][1], pads[v], dil[v], dil[v], groups[v]);
  s->attrs->conv.same = v == 4;
  return sample4(s, xs[v], ws[v], bias[v]);
}

const ad_op_def ad_def_conv2d = {
    .name = "conv2d",
    .arity = 3,
    .min_arity = 2,
    .attrs = AD_ATTRS_CONV,
    .shape = conv2d_shape,
    .forward = conv2d_fwd,
    .backward = conv2d_bwd,
    .sample = conv2d_sample,
    .math = "y[n,o,i,j] = b[o] + sum_{c,u,v} w[o,c,u,v] x[n, G(o) + c, i*sh - pt + u*dh, "
            "j*sw - pl + v*dw]; G(o): first input channel of o's group; x is 0 outside",
    .inputs = {"x", "w", "b"},
    .grads = {"conv_transpose2d(dy, w) (output_padding: back to x's size)", "conv2d_weight(x, dy)",
              "sum of dy over N, H, W"},
};

/* ---------------------------------------------------- conv_transpose2d */

static ad_status convt_shape(const ad_call *c) {
  ad_status st = conv_check_inputs(c, "[C_in, C_out/groups, kH, kW]");
  if (st != AD_OK) return st;
  const ad_tensor *x = c->in[0], *w = c->in[1];
  int64_t kh = w->shape[2], kw = w->shape[3];
  if ((st = conv_check_attrs(c, OP_CONVT, kh, kw)) != AD_OK) return st;
  char sx[64], sw[64];
  int64_t C = x->shape[1], g = c->attrs->conv.groups;
  if (w->shape[0] != C)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: x %s has %lld channels, but w %s (C_in, C_out/groups, kH, kW) takes "
                        "%lld",
                        c->name, ad_shape_str(x, sx, sizeof sx), (long long)C,
                        ad_shape_str(w, sw, sizeof sw), (long long)w->shape[0]);
  if (C % g)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: groups %lld must divide the input channels %lld: x %s, w %s", c->name,
                        (long long)g, (long long)C, ad_shape_str(x, sx, sizeof sx),
                        ad_shape_str(w, sw, sizeof sw));
  int64_t O = sat_mul(w->shape[1], g);
  if ((st = conv_check_bias(c, O)) != AD_OK) return st;
  const ad_conv_attrs *a = &c->attrs->conv;
  int64_t h = convt_out_len(x->shape[2], a->padding[0], a->padding[1], kh, a->stride[0],
                            a->dilation[0], a->output_padding[0]);
  int64_t wd = convt_out_len(x->shape[3], a->padding[2], a->padding[3], kw, a->stride[1],
                             a->dilation[1], a->output_padding[1]);
  if (h < 1 || wd < 1)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: x %s with w %s, stride (%lld, %lld), padding (%lld, %lld, %lld, "
                        "%lld) gives an output of %lldx%lld",
                        c->name, ad_shape_str(x, sx, sizeof sx), ad_shape_str(w, sw, sizeof sw),
                        (long long)a->stride[0], (long long)a->stride[1], (long long)a->padding[0],
                        (long long)a->padding[1], (long long)a->padding[2],
                        (long long)a->padding[3], (long long)h, (long long)wd);
  ad_tensor *o = c->out;
  o->dtype = x->dtype;
  o->ndim = 4;
  o->shape[0] = x->shape[0];
  o->shape[1] = O;
  o->shape[2] = h;
  o->shape[3] = wd;
  return AD_OK;
}

static void convt_range(void *ud, int64_t begin, int64_t end) {
  conv_job *j = ud;
  const conv_geom *g = &j->g;
  size_t es = j->es;
  int s = slot_take(j);
  char *col = slot_col(j, s);
  for (int64_t n = begin; n < end; n++) {
    char *img = j->out + (size_t)(n * g->c * g->hw) * es;
    if (!g->pointwise) memset(img, 0, (size_t)(g->c * g->hw) * es);
    for (int64_t grp = 0; grp < g->groups; grp++) {
      char *ig = img + (size_t)(grp * g->cg * g->hw) * es;
      const char *dy = j->y + (size_t)((n * g->o + grp * g->og) * g->p) * es;
      const char *wg = j->w + (size_t)(grp * g->og * g->kk) * es;
      if (col || g->kk == 0 || g->p == 0) {
        if (!col) continue; /* nothing to add */
        job_gemm(j, true, false, g->kk, g->p, g->og, wg, g->kk, dy, g->p, 0.0, col, g->p);
        col2im(g, col, ig);
      } else {
        job_gemm(j, true, false, g->kk, g->p, g->og, wg, g->kk, dy, g->p, 0.0, ig, g->p);
      }
    }
    if (j->bias) add_bias(g->dt, img, j->bias, g->c, g->hw);
  }
  slot_give(j, s);
}

/* The transposed convolution of y (output side) with w [O, C/G, kh, kw]
 * under r into out (image side, shaped img): conv2d's input gradient. */
static void convt_compute(ad_ctx *ctx, const ad_tensor *y, const ad_tensor *w, const void *bias,
                          const ad_conv_attrs *r, ad_tensor *out) {
  if (out->size == 0) return; /* see conv2d_compute */
  conv_job j = {.g = conv_geom_of(y->dtype, out->shape, y->shape, w->shape[2], w->shape[3], r),
                .w = w->data,
                .y = y->data,
                .bias = bias,
                .out = out->data};
  if (wino_run(ctx, &j, OP_CONVT) || dw_run(&j, OP_CONVT)) return;
  if (job_prepare(ctx, &j, j.g.n)) {
    job_run(&j, j.g.n, convt_range);
    return;
  }
  job_direct(&j, OP_CONVT);
  if (bias)
    for (int64_t n = 0; n < j.g.n; n++)
      add_bias(j.g.dt, j.out + (size_t)(n * j.g.c * j.g.hw) * j.es, bias, j.g.c, j.g.hw);
}

static void convt_fwd_compute(const ad_call *c) {
  convt_compute(c->ctx, c->in[0], c->in[1], c->n > 2 ? c->in[2]->data : NULL, &c->attrs->conv,
                c->out);
}
CONV_FWD(convt_fwd, convt_fwd_compute)

/* y = conv_transpose2d(x, w): <y, dy> = B(dy, w, x), so dx = conv2d(dy, w)
 * and dw = conv2d_weight(dy, x). With output_padding >= stride (allowed
 * when the dilation is larger) conv2d(dy) has extra rows past x's: x is
 * padded with zeros to match, and the rows dropped from dx. */
static ad_status convt_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0], *w = c->in[1], *dy = c->gout;
  int64_t kh = w->shape[2], kw = w->shape[3];
  ad_attrs at = conv_bwd_attrs(c, kh, kw);
  const ad_conv_attrs *r = &at.conv;
  int64_t full[2] = {
      conv_out_len(dy->shape[2], r->padding[0], r->padding[1], kh, r->stride[0], r->dilation[0]),
      conv_out_len(dy->shape[3], r->padding[2], r->padding[3], kw, r->stride[1], r->dilation[1])};
  int64_t extra[2] = {full[0] - x->shape[2], full[1] - x->shape[3]};
  ad_status st = AD_OK;
  if (c->needs[0]) {
    ad_tensor *g = apply_conv(ctx, AD_OP_CONV2D, dy, w, NULL, &at);
    for (int k = 0; k < 2; k++)
      if (extra[k]) g = ad_narrow(ctx, g, 2 + k, 0, x->shape[2 + k]);
    st = ad_call_set_grad(c, 0, g);
  }
  if (st == AD_OK && c->needs[1]) {
    ad_tensor *xp = x;
    for (int k = 0; k < 2; k++)
      if (extra[k]) xp = ad_pad(ctx, xp, 2 + k, 0, extra[k]);
    ad_attrs t = at;
    t.conv.kernel[0] = kh;
    t.conv.kernel[1] = kw;
    st = ad_call_set_grad(c, 1, apply_conv(ctx, AD_OP_CONV2D_WEIGHT, dy, xp, NULL, &t));
  }
  if (st == AD_OK && c->n > 2 && c->needs[2]) st = ad_call_set_grad(c, 2, bias_grad(ctx, dy));
  return st;
}

ad_tensor *ad_conv_transpose2d(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *bias,
                               const ad_conv_opts *opts) {
  ad_attrs at = conv_attrs_of(opts);
  return apply_conv(ctx, AD_OP_CONV_TRANSPOSE2D, x, w, bias, &at);
}

/* 0: stride 2, padding 1, output_padding 1, bias; 1: groups 2, dilation 2;
 * 2: asymmetric padding, strides (2, 1); 3: 1x1 (no col), bias;
 * 4: output_padding 1 at stride 1, dilation 2 (dx narrowed, x padded) */
static int convt_sample(const ad_sample_call *s) {
  static const int64_t pads[5][4] = {{1, 1, 1, 1}, {0}, {1, 0, 0, 2}, {0}, {1, 1, 0, 0}};
  static const int64_t xs[5][4] = {
      {2, 3, 3, 2}, {1, 4, 3, 2}, {1, 2, 3, 3}, {2, 3, 2, 3}, {1, 2, 3, 3}};
  static const int64_t ws[5][4] = {
      {3, 2, 3, 3}, {4, 1, 2, 2}, {2, 3, 3, 2}, {3, 2, 1, 1}, {2, 2, 2, 2}};
  static const int64_t st[5][2] = {{2, 2}, {1, 1}, {2, 1}, {1, 1}, {1, 1}};
  static const int64_t groups[5] = {1, 2, 1, 1, 1}, dil[5] = {1, 2, 1, 1, 2};
  static const int64_t opad[5][2] = {{1, 1}, {0, 0}, {1, 0}, {0, 0}, {1, 1}};
  static const int64_t bias[5] = {2, 0, 0, 2, 2};
  int v = s->variant;
  if (v > 4) return 0;
  s->attrs->conv = sample_attrs(st[v][0], st[v][1], pads[v], dil[v], dil[v], groups[v]);
  s->attrs->conv.output_padding[0] = opad[v][0];
  s->attrs->conv.output_padding[1] = opad[v][1];
  return sample4(s, xs[v], ws[v], bias[v]);
}

const ad_op_def ad_def_conv_transpose2d = {
    .name = "conv_transpose2d",
    .arity = 3,
    .min_arity = 2,
    .attrs = AD_ATTRS_CONV,
    .shape = convt_shape,
    .forward = convt_fwd,
    .backward = convt_bwd,
    .sample = convt_sample,
    .math = "y[n, G(c) + o, i*sh - pt + u*dh, j*sw - pl + v*dw] += x[n,c,i,j] w[c,o,u,v], "
            "plus b; G(c): first output channel of c's group (the adjoint of conv2d in x)",
    .inputs = {"x", "w", "b"},
    .grads = {"conv2d(dy, w)", "conv2d_weight(dy, x)", "sum of dy over N, H, W"},
};

/* ------------------------------------------------------- conv2d_weight */

static ad_status convw_shape(const ad_call *c) {
  char sx[64], sg[64];
  ad_status st = ad_check_float_same(c->ctx, c->name, c->n, c->in);
  if (st != AD_OK) return st;
  const ad_tensor *x = c->in[0], *g = c->in[1];
  if (x->ndim != 4 || g->ndim != 4)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: x must be [N, C, H, W] and dy [N, O, Ho, Wo], got %s and %s", c->name,
                        ad_shape_str(x, sx, sizeof sx), ad_shape_str(g, sg, sizeof sg));
  const ad_conv_attrs *a = &c->attrs->conv;
  int64_t kh = a->kernel[0], kw = a->kernel[1];
  if (kh < 1 || kw < 1)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: kernel (%lld, %lld) must be at least 1", c->name,
                        (long long)kh, (long long)kw);
  if ((st = conv_check_attrs(c, OP_WEIGHT, kh, kw)) != AD_OK) return st;
  int64_t C = x->shape[1], O = g->shape[1], G = a->groups;
  if (C % G || O % G)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: groups %lld must divide the input channels %lld and the output "
                        "channels %lld: x %s, dy %s",
                        c->name, (long long)G, (long long)C, (long long)O,
                        ad_shape_str(x, sx, sizeof sx), ad_shape_str(g, sg, sizeof sg));
  ad_conv_attrs r = conv_resolved(a, kh, kw);
  int64_t oh =
      conv_out_len(x->shape[2], r.padding[0], r.padding[1], kh, r.stride[0], r.dilation[0]);
  int64_t ow =
      conv_out_len(x->shape[3], r.padding[2], r.padding[3], kw, r.stride[1], r.dilation[1]);
  if (oh < 1 || ow < 1) return conv_too_small(c, x, kh, kw, &r);
  if (g->shape[0] != x->shape[0] || g->shape[2] != oh || g->shape[3] != ow)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: dy %s is not the output of a %lldx%lld convolution of x %s, which "
                        "is [%lld, O, %lld, %lld]",
                        c->name, ad_shape_str(g, sg, sizeof sg), (long long)kh, (long long)kw,
                        ad_shape_str(x, sx, sizeof sx), (long long)x->shape[0], (long long)oh,
                        (long long)ow);
  ad_tensor *o = c->out;
  o->dtype = x->dtype;
  o->ndim = 4;
  o->shape[0] = O;
  o->shape[1] = C / G;
  o->shape[2] = kh;
  o->shape[3] = kw;
  return AD_OK;
}

/* Chunks [begin, end) of the batch, each into its partial sum, which holds
 * each group's dW transposed, [kk, og]: col dy^T, a product whose wide side
 * is the kernel's (2.5x faster than dy col^T for conv1 of the MNIST CNN,
 * kk = 9 and og = 32; 1.1x for conv2). */
static void convw_range(void *ud, int64_t begin, int64_t end) {
  conv_job *j = ud;
  const conv_geom *g = &j->g;
  size_t es = j->es, wsize = (size_t)(g->o * g->kk);
  int s = slot_take(j);
  char *col = slot_col(j, s);
  for (int64_t ch = begin; ch < end; ch++) {
    char *dw = j->partials + (size_t)ch * wsize * es;
    int64_t n0 = ch * j->per_chunk, n1 = n0 + j->per_chunk < g->n ? n0 + j->per_chunk : g->n;
    for (int64_t n = n0; n < n1; n++)
      for (int64_t grp = 0; grp < g->groups; grp++) {
        const char *img = j->x + (size_t)((n * g->c + grp * g->cg) * g->hw) * es;
        const char *dy = j->y + (size_t)((n * g->o + grp * g->og) * g->p) * es;
        char *dwg = dw + (size_t)(grp * g->og * g->kk) * es;
        double beta = n == n0 ? 0.0 : 1.0;
        if (col) im2col(g, img, col);
        job_gemm(j, false, true, g->kk, g->og, g->p, col ? col : img, g->p, dy, g->p, beta, dwg,
                 g->og);
      }
  }
  slot_give(j, s);
}

/* out[i] = sum over chunks of the partial sums' element i (transposed back
 * within its group), chunks in order. */
static void convw_reduce(void *ud, int64_t begin, int64_t end) {
  const conv_job *j = ud;
  const conv_geom *g = &j->g;
  int64_t wsize = g->o * g->kk, gsize = g->og * g->kk;
  for (int64_t i = begin; i < end; i++) {
    int64_t in_g = i % gsize, o = in_g / g->kk, r = in_g % g->kk;
    int64_t src = (i - in_g) + r * g->og + o;
    if (g->dt == AD_F32) {
      const float *p = (const float *)j->partials;
      float acc = p[src];
      for (int64_t ch = 1; ch < j->nchunks; ch++) acc += p[ch * wsize + src];
      ((float *)j->out)[i] = acc;
    } else {
      const double *p = (const double *)j->partials;
      double acc = p[src];
      for (int64_t ch = 1; ch < j->nchunks; ch++) acc += p[ch * wsize + src];
      ((double *)j->out)[i] = acc;
    }
  }
}

static void convw_compute(const ad_call *c) {
  const ad_tensor *x = c->in[0], *dy = c->in[1];
  ad_tensor *out = c->out;
  if (out->size == 0) return; /* see conv2d_compute */
  ad_conv_attrs r = conv_resolved(&c->attrs->conv, out->shape[2], out->shape[3]);
  conv_job j = {.g = conv_geom_of(x->dtype, x->shape, dy->shape, out->shape[2], out->shape[3], &r),
                .x = x->data,
                .y = dy->data,
                .out = out->data,
                .es = ad_dsize(x->dtype)};
  size_t es = ad_dsize(x->dtype), wbytes = (size_t)out->size * es;
  if (j.g.n == 0 || out->size == 0) {
    memset(out->data, 0, wbytes);
    return;
  }
  if (wino_run(c->ctx, &j, OP_WEIGHT) || dw_run(&j, OP_WEIGHT)) return;
  int64_t nc = j.g.n < CONVW_CHUNKS ? j.g.n : CONVW_CHUNKS;
  if ((size_t)nc * wbytes > CONVW_PART_BYTES) nc = (int64_t)(CONVW_PART_BYTES / wbytes);
  if (nc < 1) nc = 1;
  j.per_chunk = (j.g.n + nc - 1) / nc;
  nc = (j.g.n + j.per_chunk - 1) / j.per_chunk;
  j.nchunks = nc;
  j.partials = conv_scratch(c->ctx, (size_t)nc * wbytes);
  if (j.partials && job_prepare(c->ctx, &j, j.nchunks)) {
    job_run(&j, j.nchunks, convw_range);
    ad_parallel_for(out->size, 1 << 14, convw_reduce, &j);
    return;
  }
  job_direct(&j, OP_WEIGHT);
}
CONV_FWD(convw_fwd, convw_compute)

/* y = conv2d_weight(x, g) (shaped like w): <y, dy> = B(x, dy, g), so
 * dx = conv_transpose2d(g, dy) sized back to x, dg = conv2d(x, dy) */
static ad_status convw_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0], *g = c->in[1], *dy = c->gout;
  int64_t kh = c->out->shape[2], kw = c->out->shape[3];
  ad_attrs at = conv_bwd_attrs(c, kh, kw);
  ad_status st = AD_OK;
  if (c->needs[0]) {
    ad_attrs t = at;
    conv_recover(&t.conv, x->shape[2], x->shape[3], kh, kw);
    st = ad_call_set_grad(c, 0, apply_conv(ctx, AD_OP_CONV_TRANSPOSE2D, g, dy, NULL, &t));
  }
  if (st == AD_OK && c->needs[1])
    st = ad_call_set_grad(c, 1, apply_conv(ctx, AD_OP_CONV2D, x, dy, NULL, &at));
  return st;
}

ad_tensor *ad_conv2d_weight(ad_ctx *ctx, ad_tensor *x, ad_tensor *dy, int64_t kh, int64_t kw,
                            const ad_conv_opts *opts) {
  ad_attrs at = conv_attrs_of(opts);
  at.conv.kernel[0] = kh;
  at.conv.kernel[1] = kw;
  return apply_conv(ctx, AD_OP_CONV2D_WEIGHT, x, dy, NULL, &at);
}

/* 0: 3x3 over a batch of 3 (partial sums); 1: stride 2, groups 2,
 * asymmetric padding; 2: 1x1 (no col); 3: dilation 2, 'same' */
static int convw_sample(const ad_sample_call *s) {
  static const int64_t pads[4][4] = {{0}, {1, 0, 0, 1}, {0}, {0}};
  static const int64_t xs[4][4] = {{3, 2, 4, 4}, {1, 4, 5, 4}, {2, 3, 2, 3}, {1, 2, 4, 4}};
  static const int64_t gs[4][4] = {{3, 2, 2, 2}, {1, 2, 2, 2}, {2, 2, 2, 3}, {1, 2, 4, 4}};
  static const int64_t ks[4][2] = {{3, 3}, {3, 2}, {1, 1}, {2, 3}};
  static const int64_t st[4] = {1, 2, 1, 1}, groups[4] = {1, 2, 1, 1}, dil[4] = {1, 1, 1, 2};
  int v = s->variant;
  if (v > 3) return 0;
  s->attrs->conv = sample_attrs(st[v], st[v], pads[v], dil[v], dil[v], groups[v]);
  s->attrs->conv.same = v == 3;
  s->attrs->conv.kernel[0] = ks[v][0];
  s->attrs->conv.kernel[1] = ks[v][1];
  return sample4(s, xs[v], gs[v], 0);
}

const ad_op_def ad_def_conv2d_weight = {
    .name = "conv2d_weight",
    .arity = 2,
    .attrs = AD_ATTRS_CONV,
    .shape = convw_shape,
    .forward = convw_fwd,
    .backward = convw_bwd,
    .sample = convw_sample,
    .math = "y[o,c,u,v] = sum_{n,i,j} g[n,o,i,j] x[n, G(o) + c, i*sh - pt + u*dh, "
            "j*sw - pl + v*dw]: dL/dw of conv2d(x, w) when dL/d conv2d = g",
    .inputs = {"x", "g"},
    .grads = {"conv_transpose2d(g, dy) (output_padding: back to x's size)", "conv2d(x, dy)"},
};

/* ------------------------------------------------------ conv1d (composite) */

ad_tensor *ad_conv1d(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *bias,
                     const ad_conv1d_opts *opts) {
  if (!ctx) return NULL;
  if (!x || !w) {
    ad_set_null_error(ctx, "conv1d: %s is NULL", x ? "w" : "x");
    return NULL;
  }
  if (!ad_arg_ok(ctx, "conv1d", "x", x) || !ad_arg_ok(ctx, "conv1d", "w", w)) return NULL;
  char sx[64], sw[64];
  if (x->ndim != 3 || w->ndim != 3) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "conv1d: x must be [N, C, L] and w [O, C/groups, K], got %s and %s",
                 ad_shape_str(x, sx, sizeof sx), ad_shape_str(w, sw, sizeof sw));
    return NULL;
  }
  ad_conv1d_opts z = {0};
  if (!opts) opts = &z;
  ad_conv_opts o = {.stride = {1, opts->stride},
                    .padding = {0, 0, opts->padding[0], opts->padding[1]},
                    .dilation = {1, opts->dilation},
                    .groups = opts->groups,
                    .same = opts->same};
  int64_t xs[4] = {x->shape[0], x->shape[1], 1, x->shape[2]};
  int64_t ws[4] = {w->shape[0], w->shape[1], 1, w->shape[2]};
  uint32_t before = ctx->nerrors;
  ad_tensor *y = ad_conv2d(ctx, ad_reshape(ctx, x, 4, xs), ad_reshape(ctx, w, 4, ws), bias, &o);
  if (!y) {
    if (ctx->nerrors != before) { /* conv2d's message, in conv1d's terms */
      char msg[sizeof ctx->err];
      snprintf(msg, sizeof msg, "%s", ctx->err);
      ad_set_error(ctx, ctx->status, "conv1d of x %s, w %s (as 4-D, H = 1): %s",
                   ad_shape_str(x, sx, sizeof sx), ad_shape_str(w, sw, sizeof sw), msg);
    }
    return NULL;
  }
  int64_t ys[3] = {y->shape[0], y->shape[1], y->shape[3]};
  return ad_reshape(ctx, y, 3, ys);
}
