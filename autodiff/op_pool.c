/* op_pool.c: 2-D pooling over the last two dims (H, W) of NCHW or CHW
 * tensors, with PyTorch's window rules. max_pool2d's gradient is
 * max_pool2d_backward (dy added at each window's argmax), whose gradient
 * with respect to dy is max_pool2d_select (the upstream gradient read at
 * each window's argmax), whose gradient is max_pool2d_backward again: the
 * three are closed under differentiation, to any order. avg_pool2d and
 * avg_pool2d_backward are linear and each other's adjoint. pool_gather
 * and pool_scatter read x at recorded argmaxes and add a gradient there
 * (adaptive_max_pool2d, max_pool3d), each the other's gradient. The global
 * average (adaptive average pooling to 1x1) is a composite: sum over H, W,
 * then a scale. */
#include "ops.h"

/* -------------------------------------------------------------- helpers */

/* The geometry of one pooling: the planes (N*C, or C), the input and output
 * sizes and the attributes, each per axis (h, w). adaptive: PyTorch's
 * adaptive windows (adaptive_start), kh and kw then the longest window
 * along each axis (stride 1, no padding, no dilation). */
typedef struct pool_geom {
  int64_t planes, ih, iw, oh, ow;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  bool ceil_mode, count_include_pad, adaptive;
} pool_geom;

/* Attributes are at most this (2^30): products of two stay far from
 * overflow. */
#define POOL_ATTR_MAX ((int64_t)1 << 30)

/* floor(a / b) for b > 0 */
static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* PyTorch's output length: windows of k taps d apart, s apart, over the
 * input padded by p on both sides; with ceil_mode a last, partial window
 * counts, unless it would start in the right padding. */
static int64_t pool_len(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  int64_t span = n + 2 * p - d * (k - 1) - 1;
  int64_t len = floor_div(span + (ceil_mode ? s - 1 : 0), s) + 1;
  if (ceil_mode && len > 0 && (len - 1) * s >= n + p) len--;
  return len;
}

/* The taps [*lo, *hi) of a window along one axis that fall inside the
 * input (0..n-1); tap t reads element start + t * d. No division for a
 * window inside the input (the common case). */
static inline void pool_taps(int64_t start, int64_t k, int64_t d, int64_t n, int64_t *lo,
                             int64_t *hi) {
  *lo = start >= 0 ? 0 : (-start + d - 1) / d;
  if (start + (k - 1) * d < n) {
    *hi = k;
  } else {
    int64_t h = start < n ? (n - start + d - 1) / d : 0;
    *hi = h < k ? h : k;
  }
}

/* The first tap at or after 0 of a window starting at start, taps d
 * apart (PyTorch's start of a window's index search). */
static inline int64_t pool_first_tap(int64_t start, int64_t d) {
  return start >= 0 ? start : start + (-start + d - 1) / d * d;
}

/* Adaptive windows: output i of an axis of length len pooled to n covers
 * [adaptive_start(i), len - adaptive_start(n - 1 - i)), PyTorch's
 * floor(i len / n) and ceil((i + 1) len / n), without overflow (i len =
 * i (len / n) n + i (len % n), i <= n <= 2^30). Never empty. */
static inline int64_t adaptive_start(int64_t i, int64_t len, int64_t n) {
  return i * (len / n) + (i * (len % n)) / n;
}
static inline int64_t adaptive_end(int64_t i, int64_t len, int64_t n) {
  return len - adaptive_start(n - 1 - i, len, n);
}

/* The longest adaptive window of an axis: counted for up to 4096 windows,
 * else a bound (len / n + 2, at most len): a longer window than the real
 * one only repeats taps in the max and avg kernels below. */
static int64_t adaptive_longest(int64_t len, int64_t n) {
  int64_t k = 0;
  if (n > 4096) return len / n + 2 < len ? len / n + 2 : len;
  for (int64_t i = 0; i < n; i++) {
    int64_t w = adaptive_end(i, len, n) - adaptive_start(i, len, n);
    k = w > k ? w : k;
  }
  return k;
}

/* Checks an input shape (ndim, shape) against the attributes and fills g.
 * who names the tensor in messages ("input", "x"). */
static ad_status pool_geom_of(const ad_call *c, const ad_tensor *x, const char *who, pool_geom *g) {
  const ad_pool_attrs *a = &c->attrs->pool;
  char s[64];
  if (x->ndim != 3 && x->ndim != 4)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: %s %s must be 4-D (N, C, H, W) or 3-D (C, H, W)",
                        c->name, who, ad_shape_str(x, s, sizeof s));
#define POOL_PAIR(v) (long long)(v)[0], (long long)(v)[1]
  if (a->adaptive) {
    int nd = x->ndim;
    if (a->kernel[0] < 1 || a->kernel[1] < 1 || a->kernel[0] > POOL_ATTR_MAX ||
        a->kernel[1] > POOL_ATTR_MAX)
      return ad_set_error(c->ctx, AD_ERR_ARG,
                          "%s: adaptive output size %lldx%lld must be in [1, 2^30]", c->name,
                          POOL_PAIR(a->kernel));
    if (x->shape[nd - 2] < 1 || x->shape[nd - 1] < 1)
      return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: %s %s has an empty plane (H or W is 0)",
                          c->name, who, ad_shape_str(x, s, sizeof s));
    *g = (pool_geom){
        .planes = ad_shape_size(nd - 2, x->shape),
        .ih = x->shape[nd - 2],
        .iw = x->shape[nd - 1],
        .oh = a->kernel[0],
        .ow = a->kernel[1],
        .kh = adaptive_longest(x->shape[nd - 2], a->kernel[0]),
        .kw = adaptive_longest(x->shape[nd - 1], a->kernel[1]),
        .sh = 1,
        .sw = 1,
        .dh = 1,
        .dw = 1,
        .count_include_pad = true,
        .adaptive = true,
    };
    return AD_OK;
  }
  if (a->kernel[0] < 1 || a->kernel[1] < 1 || a->kernel[0] > POOL_ATTR_MAX ||
      a->kernel[1] > POOL_ATTR_MAX)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: kernel %lldx%lld must be positive (at most 2^30)",
                        c->name, POOL_PAIR(a->kernel));
  if (a->stride[0] < 1 || a->stride[1] < 1 || a->stride[0] > POOL_ATTR_MAX ||
      a->stride[1] > POOL_ATTR_MAX)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: stride %lldx%lld must be positive (at most 2^30)",
                        c->name, POOL_PAIR(a->stride));
  if (a->dilation[0] < 1 || a->dilation[1] < 1 || a->dilation[0] > POOL_ATTR_MAX ||
      a->dilation[1] > POOL_ATTR_MAX)
    return ad_set_error(c->ctx, AD_ERR_ARG,
                        "%s: dilation %lldx%lld must be positive (at most 2^30)", c->name,
                        POOL_PAIR(a->dilation));
  if (a->padding[0] < 0 || a->padding[1] < 0 || a->padding[0] > a->kernel[0] / 2 ||
      a->padding[1] > a->kernel[1] / 2)
    return ad_set_error(c->ctx, AD_ERR_ARG,
                        "%s: padding %lldx%lld must be >= 0 and at most half the kernel %lldx%lld",
                        c->name, POOL_PAIR(a->padding), POOL_PAIR(a->kernel));
  int nd = x->ndim;
  *g = (pool_geom){
      .planes = ad_shape_size(nd - 2, x->shape),
      .ih = x->shape[nd - 2],
      .iw = x->shape[nd - 1],
      .kh = a->kernel[0],
      .kw = a->kernel[1],
      .sh = a->stride[0],
      .sw = a->stride[1],
      .ph = a->padding[0],
      .pw = a->padding[1],
      .dh = a->dilation[0],
      .dw = a->dilation[1],
      .ceil_mode = a->ceil_mode,
      .count_include_pad = a->count_include_pad,
  };
  if (g->ih < 1 || g->iw < 1)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: %s %s has an empty plane (H or W is 0)", c->name,
                        who, ad_shape_str(x, s, sizeof s));
  g->oh = pool_len(g->ih, g->kh, g->sh, g->ph, g->dh, g->ceil_mode);
  g->ow = pool_len(g->iw, g->kw, g->sw, g->pw, g->dw, g->ceil_mode);
  if (g->oh < 1 || g->ow < 1)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: %s %s is too small: the output would be %lldx%lld (kernel %lldx%lld, "
                        "stride %lldx%lld, padding %lldx%lld, dilation %lldx%lld)",
                        c->name, who, ad_shape_str(x, s, sizeof s), (long long)g->oh,
                        (long long)g->ow, POOL_PAIR(a->kernel), POOL_PAIR(a->stride),
                        POOL_PAIR(a->padding), POOL_PAIR(a->dilation));
#undef POOL_PAIR
  return AD_OK;
}

/* out: x's dtype and leading dims, then (h, w) */
static void pool_out_shape(const ad_call *c, const ad_tensor *x, int64_t h, int64_t w) {
  ad_tensor *o = c->out;
  o->dtype = x->dtype;
  o->ndim = x->ndim;
  memcpy(o->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  o->shape[x->ndim - 2] = h;
  o->shape[x->ndim - 1] = w;
}

/* Checks that t has x's leading dims, then (h, w); who and what name them
 * in the message. */
static ad_status pool_expect(const ad_call *c, const ad_tensor *t, const char *who,
                             const ad_tensor *x, const char *what, int64_t h, int64_t w) {
  bool ok = t->ndim == x->ndim;
  for (int k = 0; ok && k < x->ndim - 2; k++) ok = t->shape[k] == x->shape[k];
  if (ok) ok = t->shape[x->ndim - 2] == h && t->shape[x->ndim - 1] == w;
  if (ok) return AD_OK;
  char a[64], b[64];
  return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: %s %s does not fit %s %s (want H, W %lldx%lld)",
                      c->name, who, ad_shape_str(t, a, sizeof a), what,
                      ad_shape_str(x, b, sizeof b), (long long)h, (long long)w);
}

/* Windows per block of the max kernels: their running maxima and argmaxes
 * live on the stack. */
#define POOL_BLOCK 128

/* The fast path: a KH x KW window with stride (KH, KW), no padding, no
 * dilation and every window inside the input (the CNN's 2x2 or 3x3 pooling,
 * and 1x2, 1x3, 2x1, 3x1: the 1-D pools and the depth stage of the 3-D
 * ones). Window ox of output row oy is the KH x KW block at (KH oy, KW ox);
 * its taps are read in
 * row-major order with the general kernel's rule (take a tap above the
 * best so far, or a NaN), as straight-line selects over a row of windows
 * that the compiler vectorises. The argmax is the same, hence every result
 * bit: the value is x at the argmax, the scatter writes 0 + dy there (the
 * windows do not overlap, so each input element gets at most one window's
 * dy) and 0 elsewhere, the select reads g there. */
#define POOL_FAST_KERNELS(T, SUF, KH, KW)                                                          \
  static void max_fast##KH##KW##_##SUF(const pool_geom *g, const T *restrict X, T *restrict Y) {   \
    const int64_t iw = g->iw, ow = g->ow;                                                          \
    for (int64_t oy = 0; oy < g->oh; oy++, Y += ow) {                                              \
      const T *restrict r = X + oy * KH * iw;                                                      \
      for (int64_t ox = 0; ox < ow; ox++) {                                                        \
        T best = r[ox * KW];                                                                       \
        for (int t = 0; t < KH; t++)                                                               \
          for (int u = t ? 0 : 1; u < KW; u++) {                                                   \
            const T v = r[t * iw + ox * KW + u];                                                   \
            best = ((v > best) | (v != v)) ? v : best;                                             \
          }                                                                                        \
        Y[ox] = best;                                                                              \
      }                                                                                            \
    }                                                                                              \
  }

/* The scatter, the select and the argmax indices, in two passes over a
 * block of windows: the argmax (the tap's number in the window, as a T:
 * exact), then the stores (0 + dy at the argmax, +0 elsewhere), the loads
 * (g at the argmax) or the indices, as selects in T, so that both passes
 * vectorise in both dtypes. The taps are written out (POOL_TAKE: no
 * inner loop; with an integer argmax and loops over the taps gcc 12 kept
 * the argmax pass scalar for doubles, and bit masks stored float32's at
 * half this speed). The argmax is the general kernels' tap: the first
 * maximum in row-major order, a NaN taking over (the last one wins). */
/* tap j (row-major, of a window of at most 3x3) of window k of block row
 * rb: a tap above the best so far, or a NaN, takes over */
#define POOL_TAKE(T, KH, KW, j, rb, iw, k, best, a)                                                \
  if ((j) < (KH) * (KW)) {                                                                         \
    const T v_ = (rb)[(j) / (KW) * (iw) + (k) * (KW) + (j) % (KW)];                                \
    const bool take_ = (v_ > (best)) | (v_ != v_);                                                 \
    (best) = take_ ? v_ : (best);                                                                  \
    (a) = take_ ? (T)(j) : (a);                                                                    \
  }
#define POOL_FAST_ARGMAX(T, KH, KW, rb, iw, n, arg)                                                \
  for (int64_t k = 0; k < (n); k++) {                                                              \
    T best = (rb)[k * (KW)], a = 0;                                                                \
    POOL_TAKE(T, KH, KW, 1, rb, iw, k, best, a)                                                    \
    POOL_TAKE(T, KH, KW, 2, rb, iw, k, best, a)                                                    \
    POOL_TAKE(T, KH, KW, 3, rb, iw, k, best, a)                                                    \
    POOL_TAKE(T, KH, KW, 4, rb, iw, k, best, a)                                                    \
    POOL_TAKE(T, KH, KW, 5, rb, iw, k, best, a)                                                    \
    POOL_TAKE(T, KH, KW, 6, rb, iw, k, best, a)                                                    \
    POOL_TAKE(T, KH, KW, 7, rb, iw, k, best, a)                                                    \
    POOL_TAKE(T, KH, KW, 8, rb, iw, k, best, a)                                                    \
    (arg)[k] = a;                                                                                  \
  }
/* acc = q's tap j of window k if it is the argmax a */
#define POOL_LOAD(T, KH, KW, j, qb, iw, k, a, acc)                                                 \
  if ((j) < (KH) * (KW))                                                                           \
    (acc) = (a) == (T)(j) ? (qb)[(j) / (KW) * (iw) + (k) * (KW) + (j) % (KW)] : (acc);

#define POOL_FAST_GRAD_KERNELS(T, I, SUF, KH, KW)                                                  \
  static void scatter_fast##KH##KW##_##SUF(const pool_geom *g, const T *restrict DY,               \
                                           const T *restrict X, T *restrict Y) {                   \
    const int64_t iw = g->iw, ow = g->ow, cw = ow * KW;                                            \
    T arg[POOL_BLOCK], d[POOL_BLOCK];                                                              \
    for (int64_t oy = 0; oy < g->oh; oy++, DY += ow) {                                             \
      const T *restrict r = X + oy * KH * iw;                                                      \
      T *restrict y = Y + oy * KH * iw;                                                            \
      for (int64_t o0 = 0; o0 < ow; o0 += POOL_BLOCK) {                                            \
        const int64_t n = ow - o0 < POOL_BLOCK ? ow - o0 : POOL_BLOCK;                             \
        const T *restrict rb = r + o0 * KW;                                                        \
        POOL_FAST_ARGMAX(T, KH, KW, rb, iw, n, arg);                                               \
        for (int64_t k = 0; k < n; k++) d[k] = (T)0 + DY[o0 + k]; /* the scatter's sum */          \
        for (int t = 0; t < KH; t++) {                                                             \
          T *restrict yr = y + t * iw + o0 * KW;                                                   \
          if (KW < 3 || sizeof(T) == 8)                                                            \
            for (int64_t k = 0; k < n; k++) {                                                      \
              yr[k * KW] = arg[k] == (T)(t * KW) ? d[k] : (T)0;                                    \
              if (KW > 1) yr[k * KW + 1] = arg[k] == (T)(t * KW + 1) ? d[k] : (T)0;                \
              if (KW > 2) yr[k * KW + 2] = arg[k] == (T)(t * KW + 2) ? d[k] : (T)0;                \
            }                                                                                      \
          else /* f32's stores 3 apart: bit masks (the selects branch) */                          \
            for (int64_t k = 0; k < n; k++) {                                                      \
              I b, m;                                                                              \
              memcpy(&b, &d[k], sizeof b);                                                         \
              for (int u = 0; u < KW; u++) {                                                       \
                m = b & -(I)(arg[k] == (T)(t * KW + u));                                           \
                memcpy(&yr[k * KW + u], &m, sizeof m);                                             \
              }                                                                                    \
            }                                                                                      \
        }                                                                                          \
      }                                                                                            \
      if (cw < iw)                                                                                 \
        for (int t = 0; t < KH; t++) memset(y + t * iw + cw, 0, sizeof(T) * (size_t)(iw - cw));    \
    }                                                                                              \
    const int64_t ch = g->oh * KH;                                                                 \
    memset(Y + ch * iw, 0, sizeof(T) * (size_t)((g->ih - ch) * iw));                               \
  }                                                                                                \
  static void select_fast##KH##KW##_##SUF(const pool_geom *g, const T *restrict G,                 \
                                          const T *restrict X, T *restrict Y) {                    \
    const int64_t iw = g->iw, ow = g->ow;                                                          \
    T arg[POOL_BLOCK];                                                                             \
    for (int64_t oy = 0; oy < g->oh; oy++, Y += ow) {                                              \
      const T *restrict r = X + oy * KH * iw, *restrict q = G + oy * KH * iw;                      \
      for (int64_t o0 = 0; o0 < ow; o0 += POOL_BLOCK) {                                            \
        const int64_t n = ow - o0 < POOL_BLOCK ? ow - o0 : POOL_BLOCK;                             \
        const T *restrict rb = r + o0 * KW, *restrict qb = q + o0 * KW;                            \
        POOL_FAST_ARGMAX(T, KH, KW, rb, iw, n, arg);                                               \
        for (int64_t k = 0; k < n; k++) {                                                          \
          T acc = qb[k * KW];                                                                      \
          POOL_LOAD(T, KH, KW, 1, qb, iw, k, arg[k], acc)                                          \
          POOL_LOAD(T, KH, KW, 2, qb, iw, k, arg[k], acc)                                          \
          POOL_LOAD(T, KH, KW, 3, qb, iw, k, arg[k], acc)                                          \
          POOL_LOAD(T, KH, KW, 4, qb, iw, k, arg[k], acc)                                          \
          POOL_LOAD(T, KH, KW, 5, qb, iw, k, arg[k], acc)                                          \
          POOL_LOAD(T, KH, KW, 6, qb, iw, k, arg[k], acc)                                          \
          POOL_LOAD(T, KH, KW, 7, qb, iw, k, arg[k], acc)                                          \
          POOL_LOAD(T, KH, KW, 8, qb, iw, k, arg[k], acc)                                          \
          Y[o0 + k] = acc;                                                                         \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
  static void index_fast##KH##KW##_##SUF(const pool_geom *g, const T *restrict X,                  \
                                         int32_t *restrict Y) {                                    \
    const int64_t iw = g->iw, ow = g->ow;                                                          \
    T arg[POOL_BLOCK];                                                                             \
    for (int64_t oy = 0; oy < g->oh; oy++, Y += ow) {                                              \
      const T *restrict r = X + oy * KH * iw;                                                      \
      for (int64_t o0 = 0; o0 < ow; o0 += POOL_BLOCK) {                                            \
        const int64_t n = ow - o0 < POOL_BLOCK ? ow - o0 : POOL_BLOCK;                             \
        const T *restrict rb = r + o0 * KW;                                                        \
        POOL_FAST_ARGMAX(T, KH, KW, rb, iw, n, arg);                                               \
        for (int64_t k = 0; k < n; k++) {                                                          \
          const int32_t a = (int32_t)arg[k];                                                       \
          Y[o0 + k] = (int32_t)((oy * KH + a / KW) * iw + (o0 + k) * KW + a % KW);                 \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
  }

/* the (KH, KW) pairs of the fast path, as X(KH, KW) */
#define POOL_FAST_SIZES(X) X(2, 2) X(3, 3) X(1, 2) X(1, 3) X(2, 1) X(3, 1)
/* the maximum's own: 2x2 and 3x3 (for 1x2 and 2x1 the general kernel is
 * faster, measured: 0.6 against 1.3 ms over [32, 64, 1, 256]) */
#define POOL_FAST_MAX_SIZES(X)     X(2, 2) X(3, 3)
#define POOL_FAST_GRAD_F32(KH, KW) POOL_FAST_GRAD_KERNELS(float, int32_t, f32, KH, KW)
#define POOL_FAST_GRAD_F64(KH, KW) POOL_FAST_GRAD_KERNELS(double, int64_t, f64, KH, KW)
#define POOL_FAST_MAX_F32(KH, KW)  POOL_FAST_KERNELS(float, f32, KH, KW)
#define POOL_FAST_MAX_F64(KH, KW)  POOL_FAST_KERNELS(double, f64, KH, KW)
POOL_FAST_SIZES(POOL_FAST_GRAD_F32)
POOL_FAST_SIZES(POOL_FAST_GRAD_F64)
POOL_FAST_MAX_SIZES(POOL_FAST_MAX_F32)
POOL_FAST_MAX_SIZES(POOL_FAST_MAX_F64)

/* 10 KH + KW if g is a pooling the fast path takes (a pair above), else 0 */
static int pool_fast(const pool_geom *g) {
  const int64_t kh = g->kh, kw = g->kw;
  const bool sized = (kh == kw && (kh == 2 || kh == 3)) || (kh == 1 && (kw == 2 || kw == 3)) ||
                     (kw == 1 && (kh == 2 || kh == 3));
  if (g->adaptive || !sized || g->sh != kh || g->sw != kw || g->ph || g->pw || g->dh != 1 ||
      g->dw != 1 || g->ceil_mode || g->oh < 1 || g->ow < 1)
    return 0;
  /* without ceil_mode and padding every window is inside the input */
  return (int)(10 * kh + kw);
}

/* The fast scatter and select of g's pooling, if there is one: true when
 * done. */
#define POOL_FAST_CASE(KH, KW, FN, SUF, ...)                                                       \
  case 10 * KH + KW:                                                                               \
    FN##_fast##KH##KW##_##SUF(__VA_ARGS__);                                                        \
    return true;
static bool scatter_fast_f32(const pool_geom *g, const void *dy, const void *x, void *out) {
#define POOL_FAST_SCATTER(KH, KW) POOL_FAST_CASE(KH, KW, scatter, f32, g, dy, x, out)
  switch (pool_fast(g)) { POOL_FAST_SIZES(POOL_FAST_SCATTER) }
  return false;
}
static bool select_fast_f32(const pool_geom *g, const void *gx, const void *x, void *out) {
#define POOL_FAST_SELECT(KH, KW) POOL_FAST_CASE(KH, KW, select, f32, g, gx, x, out)
  switch (pool_fast(g)) { POOL_FAST_SIZES(POOL_FAST_SELECT) }
  return false;
}
static bool index_fast_f32(const pool_geom *g, const void *x, void *out) {
#define POOL_FAST_INDEX(KH, KW) POOL_FAST_CASE(KH, KW, index, f32, g, x, out)
  switch (pool_fast(g)) { POOL_FAST_SIZES(POOL_FAST_INDEX) }
  return false;
}
static bool scatter_fast_f64(const pool_geom *g, const void *dy, const void *x, void *out) {
#define POOL_FAST_SCATTER64(KH, KW) POOL_FAST_CASE(KH, KW, scatter, f64, g, dy, x, out)
  switch (pool_fast(g)) { POOL_FAST_SIZES(POOL_FAST_SCATTER64) }
  return false;
}
static bool select_fast_f64(const pool_geom *g, const void *gx, const void *x, void *out) {
#define POOL_FAST_SELECT64(KH, KW) POOL_FAST_CASE(KH, KW, select, f64, g, gx, x, out)
  switch (pool_fast(g)) { POOL_FAST_SIZES(POOL_FAST_SELECT64) }
  return false;
}
static bool index_fast_f64(const pool_geom *g, const void *x, void *out) {
#define POOL_FAST_INDEX64(KH, KW) POOL_FAST_CASE(KH, KW, index, f64, g, x, out)
  switch (pool_fast(g)) { POOL_FAST_SIZES(POOL_FAST_INDEX64) }
  return false;
}

/* take ? a : b in integers (a compiler branches on a float select, and the
 * branch mispredicts on random data) */
static inline float pool_pick_f32(bool take, float a, float b) {
  uint32_t ia, ib;
  memcpy(&ia, &a, sizeof a), memcpy(&ib, &b, sizeof b);
  ib ^= (ia ^ ib) & -(uint32_t)take;
  memcpy(&b, &ib, sizeof b);
  return b;
}
static inline double pool_pick_f64(bool take, double a, double b) {
  uint64_t ia, ib;
  memcpy(&ia, &a, sizeof a), memcpy(&ib, &b, sizeof b);
  ib ^= (ia ^ ib) & -(uint64_t)take;
  memcpy(&b, &ib, sizeof b);
  return b;
}

#define POOL_FAST_MAX(KH, KW, SUF)                                                                 \
  case 10 * KH + KW:                                                                               \
    max_fast##KH##KW##_##SUF(g, a, out);                                                           \
    return;
#define POOL_FAST_MAX_f32(KH, KW) POOL_FAST_MAX(KH, KW, f32)
#define POOL_FAST_MAX_f64(KH, KW) POOL_FAST_MAX(KH, KW, f64)

/* Columns per pass of the adaptive argmax, and its row type: as wide as T,
 * so that the column pass vectorises (f64's a double, exact for the rows
 * below 2^31 it holds: gcc 12 keeps an int64 select beside a double
 * compare scalar, with branches) */
#define POOL_SPAN 512
typedef int32_t pool_row_f32;
typedef double pool_row_f64;

/* The kernels, one plane at a time. The argmax of a window is the first
 * maximum in row-major window order, or the last NaN if it holds any, as
 * in PyTorch's CPU kernel (its value is the window's maximum, NaN if it
 * holds one); a window with no tap inside the input (possible only with
 * dilation) has none (-1, and the value -inf). The max kernels take a
 * block of up to POOL_BLOCK windows of one row at a time, tap by tap in
 * row-major window order, each tap over every window of the block: the
 * windows are independent, so there is no chain of dependent compares and
 * no branch to mispredict. The average divides by PyTorch's divisor: the
 * window clipped to the padded input (count_include_pad), or to the input.
 * Sums are in double. */
#define POOL_KERNELS(T, SUF)                                                                       \
  /* best[k], arg[k]: the maximum and argmax of window (oy, ox0 + k), k < n */                     \
  static void argmax_block_##SUF(const T *X, const pool_geom *g, int64_t oy, int64_t ox0,          \
                                 int64_t n, T *best, int64_t *arg) {                               \
    int64_t y0 = oy * g->sh - g->ph, ylo, yhi, ulo, uhi, skip;                                     \
    const int64_t sw = g->sw, iw = g->iw;                                                          \
    pool_taps(y0, g->kh, g->dh, g->ih, &ylo, &yhi);                                                \
    /* the taps inside the input for some window of the block: from the */                         \
    /* last window's first, to the first window's last */                                          \
    pool_taps((ox0 + n - 1) * sw - g->pw, g->kw, g->dw, iw, &ulo, &skip);                          \
    pool_taps(ox0 *sw - g->pw, g->kw, g->dw, iw, &skip, &uhi);                                     \
    /* float32 with a plane whose indices fit int32 (pool_row): float64's index as a double        \
     * would be converted from int64 per element, which the baseline has no vector form of         \
     * (slower than the int64 loop: docs/performance.md), so float64 keeps that loop */            \
    const bool narrow = sizeof(T) == 4 && g->ih * iw <= (int64_t)INT32_MAX;                        \
    pool_row_##SUF ai[POOL_BLOCK];                                                                 \
    for (int64_t k = 0; k < n; k++) best[k] = (T)-INFINITY, arg[k] = -1, ai[k] = -1;               \
    for (int64_t t = ylo; t < yhi; t++) {                                                          \
      const int64_t row = (y0 + t * g->dh) * iw;                                                   \
      for (int64_t u = ulo; u < uhi; u++) {                                                        \
        /* tap u of window ox reads column ox sw + off, inside for ox in [lo, hi) */               \
        const int64_t off = u * g->dw - g->pw;                                                     \
        int64_t lo = off >= 0 ? 0 : (-off + sw - 1) / sw;                                          \
        int64_t hi = off < iw ? (iw - 1 - off) / sw + 1 : 0;                                       \
        lo = lo > ox0 ? lo - ox0 : 0;                                                              \
        hi = hi - ox0 < n ? hi - ox0 : n;                                                          \
        const int64_t base = row + off + ox0 * sw;                                                 \
        if (narrow)                                                                                \
          for (int64_t k = lo; k < hi; k++) {                                                      \
            /* every operand loaded before the selects, the index as wide as T: */                 \
            /* the compiler vectorises the windows */                                              \
            const T v = X[base + k * sw], b = best[k];                                             \
            const pool_row_##SUF a = ai[k], i = (pool_row_##SUF)(base + k * sw);                   \
            const bool take = (v > b) | (v != v) | (a < 0);                                        \
            best[k] = take ? v : b;                                                                \
            ai[k] = take ? i : a;                                                                  \
          }                                                                                        \
        else                                                                                       \
          for (int64_t k = lo; k < hi; k++) {                                                      \
            /* the select in integers: the branch it replaces would mispredict on */               \
            /* random data */                                                                      \
            const int64_t i = base + k * sw;                                                       \
            const T v = X[i];                                                                      \
            const int64_t take = -(int64_t)((v > best[k]) | (v != v) | (arg[k] < 0));              \
            arg[k] ^= (arg[k] ^ i) & take;                                                         \
            best[k] = X[arg[k]];                                                                   \
          }                                                                                        \
      }                                                                                            \
    }                                                                                              \
    if (narrow)                                                                                    \
      for (int64_t k = 0; k < n; k++) arg[k] = (int64_t)ai[k];                                     \
  }                                                                                                \
  /* The same for adaptive windows, a block of windows of one output row */                        \
  /* in two passes: down each column of the block's span, the first */                             \
  /* maximum in row order (or the last NaN) and its row, in rows the */                            \
  /* compiler vectorises; then along each window's columns, the */                                 \
  /* candidate of the lowest row among the maxima (the first column on a */                        \
  /* tie), or of the highest row among the NaNs (the last column on a */                           \
  /* tie): the first maximum, or the last NaN, in row-major order, as the */                       \
  /* plain scan. The span is at most POOL_SPAN columns. */                                         \
  static void adaptive_argmax_run_##SUF(const T *X, const pool_geom *g, int64_t oy, int64_t ox0,   \
                                        int64_t n, T *best, int64_t *arg) {                        \
    const int64_t iw = g->iw, h0 = adaptive_start(oy, g->ih, g->oh);                               \
    const int64_t h1 = adaptive_end(oy, g->ih, g->oh);                                             \
    const int64_t c0 = adaptive_start(ox0, iw, g->ow),                                             \
                  m = adaptive_end(ox0 + n - 1, iw, g->ow) - c0;                                   \
    T vb[POOL_SPAN];                                                                               \
    pool_row_##SUF vy[POOL_SPAN];                                                                  \
    const T *restrict r0 = X + h0 * iw + c0;                                                       \
    for (int64_t c = 0; c < m; c++) vb[c] = r0[c], vy[c] = (pool_row_##SUF)h0;                     \
    for (int64_t y = h0 + 1; y < h1; y++) {                                                        \
      const T *restrict r = X + y * iw + c0;                                                       \
      const pool_row_##SUF yr = (pool_row_##SUF)y;                                                 \
      /* every operand loaded before the selects: gcc then vectorises f64's */                     \
      for (int64_t c = 0; c < m; c++) {                                                            \
        const T v = r[c], b = vb[c];                                                               \
        const pool_row_##SUF o = vy[c];                                                            \
        const bool take = (v > b) | (v != v);                                                      \
        vb[c] = take ? v : b;                                                                      \
        vy[c] = take ? yr : o;                                                                     \
      }                                                                                            \
    }                                                                                              \
    for (int64_t k = 0; k < n; k++) {                                                              \
      const int64_t w0 = adaptive_start(ox0 + k, iw, g->ow) - c0;                                  \
      const int64_t w1 = adaptive_end(ox0 + k, iw, g->ow) - c0;                                    \
      T b = vb[w0];                                                                                \
      int64_t by = (int64_t)vy[w0], bc = w0;                                                       \
      for (int64_t c = w0 + 1; c < w1; c++) {                                                      \
        const T v = vb[c];                                                                         \
        const int64_t yy = (int64_t)vy[c];                                                         \
        const bool bn = b != b, vn = v != v;                                                       \
        const bool take = bn ? vn & (yy >= by) : vn | (v > b) | ((v == b) & (yy < by));            \
        b = pool_pick_##SUF(take, v, b);                                                           \
        by = take ? yy : by;                                                                       \
        bc = take ? c : bc;                                                                        \
      }                                                                                            \
      best[k] = b, arg[k] = by * iw + c0 + bc;                                                     \
    }                                                                                              \
  }                                                                                                \
  static void adaptive_argmax_block_##SUF(const T *X, const pool_geom *g, int64_t oy, int64_t ox0, \
                                          int64_t n, T *best, int64_t *arg) {                      \
    const int64_t iw = g->iw, ow = g->ow;                                                          \
    const int64_t h0 = adaptive_start(oy, g->ih, g->oh), h1 = adaptive_end(oy, g->ih, g->oh);      \
    for (int64_t k = 0; k < n;) {                                                                  \
      /* as many windows as the span holds; rows must fit pool_row */                              \
      const int64_t c0 = adaptive_start(ox0 + k, iw, ow);                                          \
      int64_t j = k;                                                                               \
      while (j < n && adaptive_end(ox0 + j, iw, ow) - c0 <= POOL_SPAN && g->ih <= INT32_MAX) j++;  \
      if (j > k) {                                                                                 \
        adaptive_argmax_run_##SUF(X, g, oy, ox0 + k, j - k, best + k, arg + k);                    \
        k = j;                                                                                     \
        continue;                                                                                  \
      }                                                                                            \
      /* a window wider than the span: the plain scan in row-major order */                        \
      const int64_t w1 = adaptive_end(ox0 + k, iw, ow);                                            \
      int64_t a = h0 * iw + c0;                                                                    \
      T b = X[a];                                                                                  \
      for (int64_t y = h0; y < h1; y++)                                                            \
        for (int64_t c = c0; c < w1; c++) {                                                        \
          const T v = X[y * iw + c];                                                               \
          const bool take = (v > b) | (v != v);                                                    \
          b = pool_pick_##SUF(take, v, b);                                                         \
          a = take ? y * iw + c : a;                                                               \
        }                                                                                          \
      best[k] = b, arg[k] = a;                                                                     \
      k++;                                                                                         \
    }                                                                                              \
  }                                                                                                \
  static void pool_argmax_##SUF(const T *X, const pool_geom *g, int64_t oy, int64_t ox0,           \
                                int64_t n, T *best, int64_t *arg) {                                \
    if (g->adaptive)                                                                               \
      adaptive_argmax_block_##SUF(X, g, oy, ox0, n, best, arg);                                    \
    else                                                                                           \
      argmax_block_##SUF(X, g, oy, ox0, n, best, arg);                                             \
  }                                                                                                \
  /* y = x at the argmax */                                                                        \
  static void max_plane_##SUF(const pool_geom *g, const void *a, const void *b, void *out) {       \
    (void)b;                                                                                       \
    switch (pool_fast(g)) { POOL_FAST_MAX_SIZES(POOL_FAST_MAX_##SUF) }                             \
    int64_t arg[POOL_BLOCK];                                                                       \
    T *Y = out;                                                                                    \
    for (int64_t oy = 0; oy < g->oh; oy++)                                                         \
      for (int64_t ox = 0; ox < g->ow; ox += POOL_BLOCK) {                                         \
        int64_t n = g->ow - ox < POOL_BLOCK ? g->ow - ox : POOL_BLOCK;                             \
        pool_argmax_##SUF(a, g, oy, ox, n, Y + oy * g->ow + ox, arg);                              \
      }                                                                                            \
  }                                                                                                \
  /* y = zeros like x; y[argmax] += dy, window by window */                                        \
  static void scatter_plane_##SUF(const pool_geom *g, const void *a, const void *b, void *out) {   \
    if (scatter_fast_##SUF(g, a, b, out)) return;                                                  \
    const T *DY = a;                                                                               \
    T *Y = out, best[POOL_BLOCK];                                                                  \
    int64_t arg[POOL_BLOCK];                                                                       \
    memset(Y, 0, sizeof(T) * (size_t)(g->ih * g->iw));                                             \
    for (int64_t oy = 0; oy < g->oh; oy++)                                                         \
      for (int64_t ox = 0; ox < g->ow; ox += POOL_BLOCK) {                                         \
        int64_t n = g->ow - ox < POOL_BLOCK ? g->ow - ox : POOL_BLOCK;                             \
        pool_argmax_##SUF(b, g, oy, ox, n, best, arg);                                             \
        const T *dy = DY + oy * g->ow + ox;                                                        \
        for (int64_t k = 0; k < n; k++)                                                            \
          if (arg[k] >= 0) Y[arg[k]] += dy[k];                                                     \
      }                                                                                            \
  }                                                                                                \
  /* y = gx at the argmax of x */                                                                  \
  static void select_plane_##SUF(const pool_geom *g, const void *a, const void *b, void *out) {    \
    if (select_fast_##SUF(g, a, b, out)) return;                                                   \
    const T *G = a;                                                                                \
    T *Y = out, best[POOL_BLOCK];                                                                  \
    int64_t arg[POOL_BLOCK];                                                                       \
    for (int64_t oy = 0; oy < g->oh; oy++)                                                         \
      for (int64_t ox = 0; ox < g->ow; ox += POOL_BLOCK) {                                         \
        int64_t n = g->ow - ox < POOL_BLOCK ? g->ow - ox : POOL_BLOCK;                             \
        pool_argmax_##SUF(b, g, oy, ox, n, best, arg);                                             \
        T *y = Y + oy * g->ow + ox;                                                                \
        for (int64_t k = 0; k < n; k++) y[k] = arg[k] >= 0 ? G[arg[k]] : (T)0;                     \
      }                                                                                            \
  }                                                                                                \
  /* idx = the flat index in the plane of each window's argmax; a window */                        \
  /* with no tap in the input takes PyTorch's (h0 iw + w0, h0 and w0 its */                        \
  /* first taps at or after 0 along each axis) */                                                  \
  static void argmax_plane_##SUF(const pool_geom *g, const void *a, const void *b, void *out) {    \
    (void)b;                                                                                       \
    if (index_fast_##SUF(g, a, out)) return;                                                       \
    int32_t *I = out;                                                                              \
    T best[POOL_BLOCK];                                                                            \
    int64_t arg[POOL_BLOCK];                                                                       \
    for (int64_t oy = 0; oy < g->oh; oy++)                                                         \
      for (int64_t ox = 0; ox < g->ow; ox += POOL_BLOCK) {                                         \
        int64_t n = g->ow - ox < POOL_BLOCK ? g->ow - ox : POOL_BLOCK;                             \
        pool_argmax_##SUF(a, g, oy, ox, n, best, arg);                                             \
        for (int64_t k = 0; k < n; k++) {                                                          \
          int64_t i = arg[k];                                                                      \
          if (i < 0)                                                                               \
            i = pool_first_tap(oy * g->sh - g->ph, g->dh) * g->iw +                                \
                pool_first_tap((ox + k) * g->sw - g->pw, g->dw);                                   \
          I[oy * g->ow + ox + k] = (int32_t)i;                                                     \
        }                                                                                          \
      }                                                                                            \
  }                                                                                                \
  /* The adaptive mean: a block of windows of one output row side by side, */                      \
  /* tap by tap (kw per row, past a window's end adding 0: the sum starts */                       \
  /* at +0, which no addition of 0 changes, and the tap is not read), so */                        \
  /* each window's sum is the row-major one of avg_plane without a chain */                        \
  /* of dependent additions */                                                                     \
  static void adaptive_avg_plane_##SUF(const pool_geom *g, const T *X, T *Y) {                     \
    const int64_t iw = g->iw;                                                                      \
    int64_t w0[POOL_BLOCK], w1[POOL_BLOCK];                                                        \
    double s[POOL_BLOCK];                                                                          \
    for (int64_t oy = 0; oy < g->oh; oy++) {                                                       \
      const int64_t h0 = adaptive_start(oy, g->ih, g->oh), h1 = adaptive_end(oy, g->ih, g->oh);    \
      for (int64_t ox0 = 0; ox0 < g->ow; ox0 += POOL_BLOCK) {                                      \
        const int64_t n = g->ow - ox0 < POOL_BLOCK ? g->ow - ox0 : POOL_BLOCK;                     \
        for (int64_t k = 0; k < n; k++) {                                                          \
          w0[k] = adaptive_start(ox0 + k, iw, g->ow);                                              \
          w1[k] = adaptive_end(ox0 + k, iw, g->ow);                                                \
          s[k] = 0;                                                                                \
        }                                                                                          \
        for (int64_t y = h0; y < h1; y++)                                                          \
          for (int64_t u = 0; u < g->kw; u++)                                                      \
            for (int64_t k = 0; k < n; k++) {                                                      \
              const bool in = w0[k] + u < w1[k];                                                   \
              const double v = X[y * iw + (in ? w0[k] + u : w0[k])];                               \
              s[k] += in ? v : 0.0;                                                                \
            }                                                                                      \
        for (int64_t k = 0; k < n; k++)                                                            \
          Y[oy * g->ow + ox0 + k] = (T)(s[k] / (double)((h1 - h0) * (w1[k] - w0[k])));             \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
  /* y = sum of the window / divisor */                                                            \
  static void avg_plane_##SUF(const pool_geom *g, const void *a, const void *b, void *out) {       \
    (void)b;                                                                                       \
    const T *X = a;                                                                                \
    T *Y = out;                                                                                    \
    if (g->adaptive) {                                                                             \
      adaptive_avg_plane_##SUF(g, X, Y);                                                           \
      return;                                                                                      \
    }                                                                                              \
    for (int64_t oy = 0; oy < g->oh; oy++) {                                                       \
      int64_t y0 = oy * g->sh - g->ph, y1 = y0 + g->kh;                                            \
      if (y1 > g->ih + g->ph) y1 = g->ih + g->ph;                                                  \
      int64_t ph_ = y1 - y0, ya = y0 < 0 ? 0 : y0, yb = y1 < g->ih ? y1 : g->ih;                   \
      for (int64_t ox = 0; ox < g->ow; ox++) {                                                     \
        int64_t x0 = ox * g->sw - g->pw, x1 = x0 + g->kw;                                          \
        if (x1 > g->iw + g->pw) x1 = g->iw + g->pw;                                                \
        int64_t pw_ = x1 - x0, xa = x0 < 0 ? 0 : x0, xb = x1 < g->iw ? x1 : g->iw;                 \
        if (ya >= yb || xa >= xb) {                                                                \
          *Y++ = 0;                                                                                \
          continue;                                                                                \
        }                                                                                          \
        double s = 0;                                                                              \
        for (int64_t y = ya; y < yb; y++)                                                          \
          for (int64_t x = xa; x < xb; x++) s += X[y * g->iw + x];                                 \
        int64_t div = g->count_include_pad ? ph_ * pw_ : (yb - ya) * (xb - xa);                    \
        *Y++ = (T)(s / (double)div);                                                               \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
  /* Windows side by side (stride = kernel, no padding, not ceil_mode: */                          \
  /* each inside the input, divisor kh kw): every element of a window is */                        \
  /* 0 + dy / divisor, written once, a block of windows of a row at a */                           \
  /* time; the elements no window covers 0. The bits of the general loop */                        \
  /* (which adds that into zeros), without its loop per window. */                                 \
  static void avg_back_tiled_##SUF(const pool_geom *g, const T *DY, T *Y) {                        \
    const int64_t iw = g->iw, kh = g->kh, kw = g->kw, cw = g->ow * kw;                             \
    const double div = (double)(kh * kw);                                                          \
    T v[POOL_BLOCK];                                                                               \
    for (int64_t oy = 0; oy < g->oh; oy++, DY += g->ow) {                                          \
      for (int64_t o0 = 0; o0 < g->ow; o0 += POOL_BLOCK) {                                         \
        const int64_t n = g->ow - o0 < POOL_BLOCK ? g->ow - o0 : POOL_BLOCK;                       \
        for (int64_t k = 0; k < n; k++) v[k] = (T)0 + (T)((double)DY[o0 + k] / div);               \
        for (int64_t t = 0; t < kh; t++) {                                                         \
          T *restrict yr = Y + (oy * kh + t) * iw + o0 * kw;                                       \
          for (int64_t k = 0; k < n; k++)                                                          \
            for (int64_t u = 0; u < kw; u++) yr[k * kw + u] = v[k];                                \
        }                                                                                          \
      }                                                                                            \
      for (int64_t t = 0; cw < iw && t < kh; t++)                                                  \
        memset(Y + (oy * kh + t) * iw + cw, 0, sizeof(T) * (size_t)(iw - cw));                     \
    }                                                                                              \
    memset(Y + g->oh * kh * iw, 0, sizeof(T) * (size_t)((g->ih - g->oh * kh) * iw));               \
  }                                                                                                \
  /* y = zeros like x; each window's elements += dy / divisor */                                   \
  static void avg_back_plane_##SUF(const pool_geom *g, const void *a, const void *b, void *out) {  \
    (void)b;                                                                                       \
    const T *DY = a;                                                                               \
    T *Y = out;                                                                                    \
    if (!g->adaptive && g->sh == g->kh && g->sw == g->kw && !g->ph && !g->pw && !g->ceil_mode) {   \
      avg_back_tiled_##SUF(g, DY, Y);                                                              \
      return;                                                                                      \
    }                                                                                              \
    memset(Y, 0, sizeof(T) * (size_t)(g->ih * g->iw));                                             \
    for (int64_t oy = 0; oy < g->oh; oy++) {                                                       \
      int64_t y0 = oy * g->sh - g->ph, y1 = y0 + g->kh;                                            \
      if (g->adaptive) y0 = adaptive_start(oy, g->ih, g->oh), y1 = adaptive_end(oy, g->ih, g->oh); \
      if (y1 > g->ih + g->ph) y1 = g->ih + g->ph;                                                  \
      int64_t ph_ = y1 - y0, ya = y0 < 0 ? 0 : y0, yb = y1 < g->ih ? y1 : g->ih;                   \
      for (int64_t ox = 0; ox < g->ow; ox++, DY++) {                                               \
        int64_t x0 = ox * g->sw - g->pw, x1 = x0 + g->kw;                                          \
        if (g->adaptive)                                                                           \
          x0 = adaptive_start(ox, g->iw, g->ow), x1 = adaptive_end(ox, g->iw, g->ow);              \
        if (x1 > g->iw + g->pw) x1 = g->iw + g->pw;                                                \
        int64_t pw_ = x1 - x0, xa = x0 < 0 ? 0 : x0, xb = x1 < g->iw ? x1 : g->iw;                 \
        if (ya >= yb || xa >= xb) continue;                                                        \
        int64_t div = g->count_include_pad ? ph_ * pw_ : (yb - ya) * (xb - xa);                    \
        T v = (T)((double)*DY / (double)div);                                                      \
        for (int64_t y = ya; y < yb; y++)                                                          \
          for (int64_t x = xa; x < xb; x++) Y[y * g->iw + x] += v;                                 \
      }                                                                                            \
    }                                                                                              \
  }

POOL_KERNELS(float, f32)
POOL_KERNELS(double, f64)

typedef void (*plane_fn)(const pool_geom *g, const void *a, const void *b, void *out);

/* One op's work over planes, for ad_parallel_for: plane p of a (and b)
 * and of out start asz, bsz, osz elements in. */
typedef struct pool_job {
  pool_geom g;
  plane_fn f;
  const char *a, *b;
  char *out;
  size_t asz, bsz, osz; /* bytes per plane */
} pool_job;

static void pool_range(void *ud, int64_t begin, int64_t end) {
  const pool_job *j = ud;
  for (int64_t p = begin; p < end; p++)
    j->f(&j->g, j->a + (size_t)p * j->asz, j->b ? j->b + (size_t)p * j->bsz : NULL,
         j->out + (size_t)p * j->osz);
}

/* Elements read or written per chunk of planes, at least */
#define POOL_GRAIN 32768

/* Runs f over every plane: a has (ah, aw) per plane, b (the input x of
 * the max ops, or NULL) (ih, iw), out (outh, outw). */
static void pool_run(const ad_call *c, const pool_geom *g, plane_fn f32, plane_fn f64,
                     const ad_tensor *a, const ad_tensor *b) {
  size_t es = ad_dsize(c->out->dtype);
  int nd = c->out->ndim;
  int64_t ain = a->shape[nd - 2] * a->shape[nd - 1];
  int64_t oin = c->out->shape[nd - 2] * c->out->shape[nd - 1];
  pool_job j = {
      .g = *g,
      .f = c->out->dtype == AD_F32 ? f32 : f64,
      .a = a->data,
      .b = b ? b->data : NULL,
      .out = c->out->data,
      .asz = (size_t)ain * es,
      .bsz = (size_t)(g->ih * g->iw) * es,
      .osz = (size_t)oin * es,
  };
  /* in double: a kernel of up to 2^30 squared times the output overflows */
  double work =
      (double)g->oh * (double)g->ow * (double)g->kh * (double)g->kw + (double)g->ih * (double)g->iw;
  int64_t grain = work >= POOL_GRAIN ? 1 : POOL_GRAIN / (work >= 1 ? (int64_t)work : 1);
  ad_parallel_for(g->planes, grain, pool_range, &j);
}

/* The attributes of a pooling, resolved: 0 in the options means PyTorch's
 * default. */
static ad_attrs pool_attrs(int64_t kh, int64_t kw, const ad_pool2d_opts *o) {
  static const ad_pool2d_opts none;
  if (!o) o = &none;
  ad_attrs at = {
      .pool = {
          .kernel = {kh, kw},
          .stride = {o->stride[0] ? o->stride[0] : kh, o->stride[1] ? o->stride[1] : kw},
          .padding = {o->padding[0], o->padding[1]},
          .dilation = {o->dilation[0] ? o->dilation[0] : 1, o->dilation[1] ? o->dilation[1] : 1},
          .ceil_mode = o->ceil_mode,
          .count_include_pad = !o->exclude_pad}};
  return at;
}

/* A sample input: shape, values distinct and 0.25 apart, shuffled, so no
 * two taps of a window tie within the finite-difference step. */
static ad_tensor *sample_distinct(const ad_sample_call *s, int ndim, const int64_t *shape,
                                  bool grad) {
  ad_tensor *x = ad_sample_tensor(s, ndim, shape, -1, 1, grad);
  if (!x) return NULL;
  for (int64_t i = 0; i < x->size; i++) ad_tensor_set(x, i, 0.25 * (double)i - 0.125 * x->size);
  for (int64_t i = x->size - 1; i > 0; i--) {
    int64_t k = (int64_t)ad_rng_below(s->rng, (uint64_t)i + 1);
    double t = ad_tensor_get(x, i);
    ad_tensor_set(x, i, ad_tensor_get(x, k));
    ad_tensor_set(x, k, t);
  }
  return x;
}

/* The gradcheck cases of the pooling ops: input shape and attributes.
 * Variants: non-overlapping 2x2 (PyTorch's default stride), overlapping
 * 3x3 stride 2 with padding, stride 1 with dilation, ceil_mode with a
 * clipped last window and padding (the divisor rules), a 3-D input, and
 * for avg_pool2d count_include_pad off. */
typedef struct pool_case {
  int ndim;
  int64_t shape[4];
  ad_pool_attrs a;
} pool_case;

static const pool_case pool_cases[] = {
    {4, {2, 2, 4, 6}, {{2, 2}, {2, 2}, {0, 0}, {1, 1}, false, true, {0, 0}, false}},
    {4, {1, 2, 7, 6}, {{3, 3}, {2, 2}, {1, 1}, {1, 1}, false, true, {0, 0}, false}},
    {4, {1, 2, 6, 7}, {{2, 3}, {1, 2}, {1, 0}, {2, 1}, false, true, {0, 0}, false}},
    {4, {2, 1, 6, 5}, {{3, 2}, {2, 2}, {1, 1}, {1, 1}, true, true, {0, 0}, false}},
    {3, {2, 5, 5, 0}, {{2, 2}, {1, 2}, {0, 1}, {1, 1}, true, true, {0, 0}, false}},
    /* adaptive: 7 -> 3 and 5 -> 2 (overlapping windows of 3), 3 -> 5 and 4 -> 3 */
    {4, {1, 2, 7, 5}, {{3, 2}, {1, 1}, {0, 0}, {1, 1}, false, true, {0, 0}, true}},
    {3, {2, 3, 4, 0}, {{5, 3}, {1, 1}, {0, 0}, {1, 1}, false, true, {0, 0}, true}},
    {4, {1, 2, 6, 5}, {{3, 2}, {2, 2}, {1, 1}, {1, 1}, true, false, {0, 0}, false}},
};
#define POOL_NCASES ((int)(sizeof pool_cases / sizeof pool_cases[0]))

/* Case v of the table for op kind max (with dilation) or avg (dilation 1,
 * count_include_pad off only in the last case). NULL past the end. */
static const pool_case *pool_case_of(const ad_sample_call *s, bool max) {
  int v = s->variant;
  if (v >= POOL_NCASES - (max ? 1 : 0)) return NULL; /* the last case is avg's */
  const pool_case *pc = &pool_cases[v];
  s->attrs->pool = pc->a;
  if (!max) s->attrs->pool.dilation[0] = s->attrs->pool.dilation[1] = 1;
  return pc;
}

/* The output (h, w) of case pc's attributes over its input (for the
 * samples of the backward ops, whose first input is shaped like it). */
static void pool_case_out(const pool_case *pc, const ad_pool_attrs *a, int64_t *shape) {
  int nd = pc->ndim;
  memcpy(shape, pc->shape, sizeof(int64_t) * (size_t)nd);
  if (a->adaptive) {
    shape[nd - 2] = a->kernel[0], shape[nd - 1] = a->kernel[1];
    return;
  }
  shape[nd - 2] = pool_len(pc->shape[nd - 2], a->kernel[0], a->stride[0], a->padding[0],
                           a->dilation[0], a->ceil_mode);
  shape[nd - 1] = pool_len(pc->shape[nd - 1], a->kernel[1], a->stride[1], a->padding[1],
                           a->dilation[1], a->ceil_mode);
}

/* ----------------------------------------------------------- max_pool2d */

static ad_status max_pool2d_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  pool_geom g;
  ad_status st = ad_check_float_same(c->ctx, c->name, 1, c->in);
  if (st == AD_OK) st = pool_geom_of(c, x, "input", &g);
  if (st == AD_OK) pool_out_shape(c, x, g.oh, g.ow);
  return st;
}

static void max_pool2d_fwd(const ad_call *c) {
  pool_geom g;
  pool_geom_of(c, c->in[0], "input", &g);
  pool_run(c, &g, max_plane_f32, max_plane_f64, c->in[0], NULL);
}

static ad_tensor *max_pool2d_backward(ad_ctx *ctx, ad_tensor *dy, ad_tensor *x,
                                      const ad_attrs *at) {
  return ad_apply2(ctx, AD_OP_MAX_POOL2D_BACKWARD, dy, x, at);
}

static ad_status max_pool2d_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, max_pool2d_backward(c->ctx, c->gout, c->in[0], c->attrs));
}

ad_tensor *ad_max_pool2d(ad_ctx *ctx, ad_tensor *x, int64_t kh, int64_t kw,
                         const ad_pool2d_opts *opts) {
  ad_attrs at = pool_attrs(kh, kw, opts);
  return ad_apply1(ctx, AD_OP_MAX_POOL2D, x, &at);
}

static int max_pool2d_sample(const ad_sample_call *s) {
  const pool_case *pc = pool_case_of(s, true);
  if (!pc) return 0;
  return (s->in[0] = sample_distinct(s, pc->ndim, pc->shape, true)) ? 1 : -1;
}

const ad_op_def ad_def_max_pool2d = {
    .name = "max_pool2d",
    .arity = 1,
    .attrs = AD_ATTRS_POOL,
    .shape = max_pool2d_shape,
    .forward = max_pool2d_fwd,
    .backward = max_pool2d_bwd,
    .sample = max_pool2d_sample,
    .math = "y[w] = max of x over window w (padding -inf)",
    .inputs = {"x"},
    .grads = {"max_pool2d_backward(dy, x)"},
};

/* -------------------------------------------------- max_pool2d_backward */

/* inputs (dy, x): dy shaped like max_pool2d(x); out shaped like x */
static ad_status max_pool2d_backward_shape(const ad_call *c) {
  const ad_tensor *dy = c->in[0], *x = c->in[1];
  pool_geom g;
  ad_status st = ad_check_float_same(c->ctx, c->name, 2, c->in);
  if (st == AD_OK) st = pool_geom_of(c, x, "x", &g);
  if (st == AD_OK) st = pool_expect(c, dy, "dy", x, "x", g.oh, g.ow);
  if (st == AD_OK) pool_out_shape(c, x, g.ih, g.iw);
  return st;
}

static void max_pool2d_backward_fwd(const ad_call *c) {
  pool_geom g;
  pool_geom_of(c, c->in[1], "x", &g);
  pool_run(c, &g, scatter_plane_f32, scatter_plane_f64, c->in[0], c->in[1]);
}

static ad_tensor *max_pool2d_select(ad_ctx *ctx, ad_tensor *g, ad_tensor *x, const ad_attrs *at) {
  return ad_apply2(ctx, AD_OP_MAX_POOL2D_SELECT, g, x, at);
}

/* linear in dy; piecewise constant in x (the argmax moves in jumps) */
static ad_status max_pool2d_backward_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(c, 0, max_pool2d_select(c->ctx, c->gout, c->in[1], c->attrs));
}

/* dy: the output's shape, random; x: distinct values (the argmax must not
 * move within the finite-difference step), also checked (a zero gradient) */
static int max_pool2d_backward_sample(const ad_sample_call *s) {
  const pool_case *pc = pool_case_of(s, true);
  if (!pc) return 0;
  int64_t shape[4];
  pool_case_out(pc, &s->attrs->pool, shape);
  s->in[0] = ad_sample_tensor(s, pc->ndim, shape, -1, 1, true);
  s->in[1] = sample_distinct(s, pc->ndim, pc->shape, true);
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_max_pool2d_backward = {
    .name = "max_pool2d_backward",
    .arity = 2,
    .attrs = AD_ATTRS_POOL,
    .shape = max_pool2d_backward_shape,
    .forward = max_pool2d_backward_fwd,
    .backward = max_pool2d_backward_bwd,
    .sample = max_pool2d_backward_sample,
    .math = "y = zeros like x; y[argmax of x over window w] += g[w]",
    .inputs = {"g", "x"},
    .grads = {"max_pool2d_select(dy, x)", NULL}, /* x: the argmax is piecewise constant */
};

/* ---------------------------------------------------- max_pool2d_select */

/* inputs (g, x): g shaped like x; out shaped like max_pool2d(x) */
static ad_status max_pool2d_select_shape(const ad_call *c) {
  const ad_tensor *g = c->in[0], *x = c->in[1];
  pool_geom pg;
  ad_status st = ad_check_float_same(c->ctx, c->name, 2, c->in);
  if (st == AD_OK) st = pool_geom_of(c, x, "x", &pg);
  if (st == AD_OK) st = pool_expect(c, g, "g", x, "x", pg.ih, pg.iw);
  if (st == AD_OK) pool_out_shape(c, x, pg.oh, pg.ow);
  return st;
}

static void max_pool2d_select_fwd(const ad_call *c) {
  pool_geom g;
  pool_geom_of(c, c->in[1], "x", &g);
  pool_run(c, &g, select_plane_f32, select_plane_f64, c->in[0], c->in[1]);
}

/* linear in g (its adjoint is the scatter); piecewise constant in x */
static ad_status max_pool2d_select_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(c, 0, max_pool2d_backward(c->ctx, c->gout, c->in[1], c->attrs));
}

static int max_pool2d_select_sample(const ad_sample_call *s) {
  const pool_case *pc = pool_case_of(s, true);
  if (!pc) return 0;
  s->in[0] = ad_sample_tensor(s, pc->ndim, pc->shape, -1, 1, true);
  s->in[1] = sample_distinct(s, pc->ndim, pc->shape, true);
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_max_pool2d_select = {
    .name = "max_pool2d_select",
    .arity = 2,
    .attrs = AD_ATTRS_POOL,
    .shape = max_pool2d_select_shape,
    .forward = max_pool2d_select_fwd,
    .backward = max_pool2d_select_bwd,
    .sample = max_pool2d_select_sample,
    .math = "y[w] = g[argmax of x over window w]",
    .inputs = {"g", "x"},
    .grads = {"max_pool2d_backward(dy, x)", NULL}, /* x: the argmax is piecewise constant */
};

/* ------------------------------------------------ pool_gather, pool_scatter
 * The max poolings' gradient at recorded argmaxes, as PyTorch's keeps its
 * indices: x's dims from attrs axis on are one plane (flattened), index
 * (i32, x's rank, x's dims before axis) names an element of its plane per
 * window. pool_gather reads x there; pool_scatter adds g there, in index
 * order, into zeros shaped like its third input (read for its shape only),
 * as PyTorch's max_pool*_backward and adaptive_max_pool2d_backward add.
 * Each is the other's gradient: the pair is closed under differentiation.
 * gather along one axis of the plane's flattened view does the same, but
 * then x's gradient is made in a temporary (zeros, scatter_add's copy of
 * them) and copied into x's; pool_gather writes it straight into the
 * gradient of a leaf x (grad_into): zeros and the adds, one pass. */

/* Checks x (float, the dtype of in[0]), index against it, sets *ax and the
 * plane sizes: *plane elements of x per plane, *win of index. */
static ad_status pool_gather_check(const ad_call *c, const ad_tensor *x, const ad_tensor *idx,
                                   int *ax, int64_t *plane, int64_t *win) {
  char a[64], b[64];
  if (!ad_is_float(x->dtype) || x->dtype != c->in[0]->dtype)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: x is %s, in[0] %s; one float dtype is needed",
                        c->name, ad_dtype_name(x->dtype), ad_dtype_name(c->in[0]->dtype));
  if (idx->dtype != AD_I32)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: index must be i32, got %s", c->name,
                        ad_dtype_name(idx->dtype));
  *ax = ad_norm_axis(c->attrs->axis, x->ndim);
  if (*ax < 0)
    return ad_set_error(c->ctx, AD_ERR_ARG, "%s: axis %d out of range for x %s", c->name,
                        c->attrs->axis, ad_shape_str(x, a, sizeof a));
  bool ok = idx->ndim == x->ndim;
  for (int d = 0; ok && d < *ax; d++) ok = idx->shape[d] == x->shape[d];
  if (!ok)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: index %s does not fit x %s (as many dims, the same before axis %d)",
                        c->name, ad_shape_str(idx, b, sizeof b), ad_shape_str(x, a, sizeof a), *ax);
  *plane = ad_shape_size(x->ndim - *ax, x->shape + *ax);
  *win = ad_shape_size(idx->ndim - *ax, idx->shape + *ax);
  const int32_t *p = idx->data;
  int64_t i = ad_idx_first_bad(p, idx->size, *plane);
  if (i >= 0) {
    char at[64];
    return ad_set_error(c->ctx, AD_ERR_ARG,
                        "%s: index %d at %s of index %s is outside 0..%lld (a plane of x %s "
                        "from axis %d)",
                        c->name, p[i], ad_coords_str(idx, i, at, sizeof at),
                        ad_shape_str(idx, b, sizeof b), (long long)*plane - 1,
                        ad_shape_str(x, a, sizeof a), *ax);
  }
  return AD_OK;
}

/* One pass over planes [begin, end): gather (y[j] = x[i[j]]) or scatter
 * (y = 0; y[i[j]] += x[j]). */
typedef struct plane_job {
  const char *x;
  const int32_t *idx;
  char *y;
  int64_t plane, win; /* elements per plane of the big side, of the index */
  bool f32, scatter;
} plane_job;

static void plane_range(void *ud, int64_t begin, int64_t end) {
  const plane_job *j = ud;
  const int64_t P = j->plane, W = j->win;
  for (int64_t p = begin; p < end; p++) {
    const int32_t *I = j->idx + p * W;
    if (j->f32 && j->scatter) {
      const float *G = (const float *)j->x + p * W;
      float *Y = (float *)j->y + p * P;
      memset(Y, 0, sizeof(float) * (size_t)P);
      for (int64_t k = 0; k < W; k++) Y[I[k]] += G[k];
    } else if (j->scatter) {
      const double *G = (const double *)j->x + p * W;
      double *Y = (double *)j->y + p * P;
      memset(Y, 0, sizeof(double) * (size_t)P);
      for (int64_t k = 0; k < W; k++) Y[I[k]] += G[k];
    } else if (j->f32) {
      const float *X = (const float *)j->x + p * P;
      float *Y = (float *)j->y + p * W;
      for (int64_t k = 0; k < W; k++) Y[k] = X[I[k]];
    } else {
      const double *X = (const double *)j->x + p * P;
      double *Y = (double *)j->y + p * W;
      for (int64_t k = 0; k < W; k++) Y[k] = X[I[k]];
    }
  }
}

/* src (the gather's x, or the scatter's g) through index into dst, plane
 * by plane (planes apart: the same bits on any number of threads). */
static void plane_run(const ad_tensor *src, const ad_tensor *idx, ad_tensor *dst, int ax,
                      bool scatter) {
  const ad_tensor *big = scatter ? dst : src;
  int64_t planes = ad_shape_size(ax, big->shape);
  plane_job j = {.x = src->data,
                 .idx = idx->data,
                 .y = dst->data,
                 .plane = ad_shape_size(big->ndim - ax, big->shape + ax),
                 .win = ad_shape_size(idx->ndim - ax, idx->shape + ax),
                 .f32 = dst->dtype == AD_F32,
                 .scatter = scatter};
  int64_t work = j.win + (scatter ? j.plane : 0);
  if (planes < 1 || dst->size == 0) {
    if (dst->size) memset(dst->data, 0, (size_t)dst->size * ad_dsize(dst->dtype));
    return;
  }
  int64_t grain = work >= POOL_GRAIN ? 1 : POOL_GRAIN / (work >= 1 ? work : 1);
  ad_parallel_for(planes, grain, plane_range, &j);
}

static ad_tensor *pool_scatter(ad_ctx *ctx, ad_tensor *g, ad_tensor *idx, ad_tensor *x, int axis) {
  ad_attrs at = {.axis = axis};
  ad_tensor *in[3] = {g, idx, x};
  return ad_op_apply(ctx, AD_OP_POOL_SCATTER, 3, in, &at);
}

static ad_tensor *pool_gather(ad_ctx *ctx, ad_tensor *x, ad_tensor *idx, int axis) {
  ad_attrs at = {.axis = axis};
  return ad_apply2(ctx, AD_OP_POOL_GATHER, x, idx, &at);
}

/* Index samples: i32 of shape, values below plane (repeats add up in the
 * scatter) */
static ad_tensor *plane_index_sample(const ad_sample_call *s, int nd, const int64_t *shape,
                                     int64_t plane) {
  ad_tensor *t = ad_zeros(s->ctx, AD_I32, nd, shape);
  for (int64_t i = 0; t && i < t->size; i++)
    ((int32_t *)t->data)[i] = (int32_t)ad_rng_below(s->rng, (uint64_t)plane);
  return t;
}

/* x [2,3,4,5] by index [2,3,2,3] from axis -2 (planes of 20, windows of
 * 6), x [2,3,4] by [2,2,2] from axis 1, x [3,4] by [2,5] from axis 0 (one
 * plane) */
static const struct {
  int nd, axis;
  int64_t x[4], idx[4];
} plane_cases[] = {
    {4, -2, {2, 3, 4, 5}, {2, 3, 2, 3}},
    {3, 1, {2, 3, 4}, {2, 2, 2}},
    {2, 0, {3, 4}, {2, 5}},
};

static int plane_sample(const ad_sample_call *s, bool scatter) {
  int v = s->variant;
  if (v >= (int)(sizeof plane_cases / sizeof *plane_cases)) return 0;
  int nd = plane_cases[v].nd, ax = ad_norm_axis(plane_cases[v].axis, nd);
  s->attrs->axis = plane_cases[v].axis;
  const int64_t *xs = plane_cases[v].x, *is = plane_cases[v].idx;
  ad_tensor *idx = plane_index_sample(s, nd, is, ad_shape_size(nd - ax, xs + ax));
  if (!scatter) {
    s->in[0] = ad_sample_tensor(s, nd, xs, -1, 1, true);
    s->in[1] = idx;
    return s->in[0] && s->in[1] ? 2 : -1;
  }
  s->in[0] = ad_sample_tensor(s, nd, is, -1, 1, true);
  s->in[1] = idx;
  s->in[2] = ad_sample_tensor(s, nd, xs, -1, 1, false);
  return s->in[0] && s->in[1] && s->in[2] ? 3 : -1;
}

/* ---- pool_gather: y[p, j] = x[p, index[p, j]] (index's shape) */

static ad_status pool_gather_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0], *idx = c->in[1];
  int ax;
  int64_t plane, win;
  ad_status st = pool_gather_check(c, x, idx, &ax, &plane, &win);
  if (st != AD_OK) return st;
  c->out->ndim = idx->ndim;
  memcpy(c->out->shape, idx->shape, sizeof(int64_t) * (size_t)idx->ndim);
  c->out->dtype = x->dtype;
  return AD_OK;
}

static void pool_gather_fwd(const ad_call *c) {
  plane_run(c->in[0], c->in[1], c->out, ad_norm_axis(c->attrs->axis, c->in[0]->ndim), false);
}

static ad_status pool_gather_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(c, 0, pool_scatter(c->ctx, c->gout, c->in[1], c->in[0], c->attrs->axis));
}

/* x's first gradient of a pass straight into its buffer: pool_scatter's
 * zeros and adds, the same bits. An addition into a gradient already there
 * is declined (repeated indices would round in another order). */
static bool pool_gather_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  if (k != 0 || !overwrite) return false;
  plane_run(c->gout, c->in[1], grad, ad_norm_axis(c->attrs->axis, grad->ndim), true);
  return true;
}

static int pool_gather_sample(const ad_sample_call *s) { return plane_sample(s, false); }

const ad_op_def ad_def_pool_gather = {
    .name = "pool_gather",
    .arity = 2,
    .attrs = AD_ATTRS_AXIS,
    .shape = pool_gather_shape,
    .forward = pool_gather_fwd,
    .backward = pool_gather_bwd,
    .grad_into = pool_gather_grad_into,
    .sample = pool_gather_sample,
    .math = "y[p, j] = x[p, index[p, j]] (x's dims from axis on flattened: plane p)",
    .inputs = {"x", "index"},
    .grads = {"pool_scatter(dy, index, x)", NULL},
};

/* ---- pool_scatter: y = zeros like x; y[p, index[p, j]] += g[p, j] */

static ad_status pool_scatter_shape(const ad_call *c) {
  const ad_tensor *g = c->in[0], *idx = c->in[1], *x = c->in[2];
  int ax;
  int64_t plane, win;
  ad_status st = pool_gather_check(c, x, idx, &ax, &plane, &win);
  if (st != AD_OK) return st;
  if (!ad_same_shape(g, idx)) {
    char a[64], b[64];
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: g %s is not shaped like index %s", c->name,
                        ad_shape_str(g, a, sizeof a), ad_shape_str(idx, b, sizeof b));
  }
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  c->out->dtype = x->dtype;
  return AD_OK;
}

static void pool_scatter_fwd(const ad_call *c) {
  plane_run(c->in[0], c->in[1], c->out, ad_norm_axis(c->attrs->axis, c->in[2]->ndim), true);
}

/* linear in g (its adjoint is the gather); x gives only the shape */
static ad_status pool_scatter_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(c, 0, pool_gather(c->ctx, c->gout, c->in[1], c->attrs->axis));
}

static int pool_scatter_sample(const ad_sample_call *s) { return plane_sample(s, true); }

const ad_op_def ad_def_pool_scatter = {
    .name = "pool_scatter",
    .arity = 3,
    .attrs = AD_ATTRS_AXIS,
    .shape = pool_scatter_shape,
    .forward = pool_scatter_fwd,
    .backward = pool_scatter_bwd,
    .sample = pool_scatter_sample,
    .math = "y = zeros like x; y[p, index[p, j]] += g[p, j] in index order (x's dims from axis "
            "on flattened: plane p)",
    .inputs = {"g", "index", "x"},
    .grads = {"pool_gather(dy, index)", NULL, NULL}, /* x: only its shape is read */
};

/* ----------------------------------------------------------- avg_pool2d */

/* Average pooling has no dilation: the attribute must be 1x1. */
static ad_status avg_no_dilation(const ad_call *c) {
  const ad_pool_attrs *a = &c->attrs->pool;
  if (a->adaptive || (a->dilation[0] == 1 && a->dilation[1] == 1)) return AD_OK;
  return ad_set_error(c->ctx, AD_ERR_ARG,
                      "%s: dilation %lldx%lld: average pooling takes none (1x1)", c->name,
                      (long long)a->dilation[0], (long long)a->dilation[1]);
}

static ad_status avg_pool2d_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  pool_geom g;
  ad_status st = ad_check_float_same(c->ctx, c->name, 1, c->in);
  if (st == AD_OK) st = avg_no_dilation(c);
  if (st == AD_OK) st = pool_geom_of(c, x, "input", &g);
  if (st == AD_OK) pool_out_shape(c, x, g.oh, g.ow);
  return st;
}

static void avg_pool2d_fwd(const ad_call *c) {
  pool_geom g;
  pool_geom_of(c, c->in[0], "input", &g);
  pool_run(c, &g, avg_plane_f32, avg_plane_f64, c->in[0], NULL);
}

static ad_status avg_pool2d_bwd(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  ad_attrs at = *c->attrs;
  at.pool.in_size[0] = x->shape[x->ndim - 2];
  at.pool.in_size[1] = x->shape[x->ndim - 1];
  return ad_call_set_grad(c, 0, ad_apply1(c->ctx, AD_OP_AVG_POOL2D_BACKWARD, c->gout, &at));
}

ad_tensor *ad_avg_pool2d(ad_ctx *ctx, ad_tensor *x, int64_t kh, int64_t kw,
                         const ad_pool2d_opts *opts) {
  ad_attrs at = pool_attrs(kh, kw, opts);
  return ad_apply1(ctx, AD_OP_AVG_POOL2D, x, &at);
}

static int avg_pool2d_sample(const ad_sample_call *s) {
  const pool_case *pc = pool_case_of(s, false);
  if (!pc) return 0;
  return (s->in[0] = ad_sample_tensor(s, pc->ndim, pc->shape, -1, 1, true)) ? 1 : -1;
}

const ad_op_def ad_def_avg_pool2d = {
    .name = "avg_pool2d",
    .arity = 1,
    .attrs = AD_ATTRS_POOL,
    .shape = avg_pool2d_shape,
    .forward = avg_pool2d_fwd,
    .backward = avg_pool2d_bwd,
    .sample = avg_pool2d_sample,
    .math = "y[w] = sum of x over window w / divisor_w (padding 0); divisor_w: w's size clipped to "
            "the padded input (count_include_pad), else to the input",
    .inputs = {"x"},
    .grads = {"avg_pool2d_backward(dy)"},
};

/* -------------------------------------------------- avg_pool2d_backward */

/* input dy, shaped like avg_pool2d of an input of H, W in_size; out
 * shaped like that input */
static ad_status avg_pool2d_backward_shape(const ad_call *c) {
  const ad_tensor *dy = c->in[0];
  const ad_pool_attrs *a = &c->attrs->pool;
  ad_status st = ad_check_float_same(c->ctx, c->name, 1, c->in);
  if (st == AD_OK) st = avg_no_dilation(c);
  if (st != AD_OK) return st;
  char s[64];
  if (dy->ndim != 3 && dy->ndim != 4)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: dy %s must be 4-D (N, C, H, W) or 3-D (C, H, W)",
                        c->name, ad_shape_str(dy, s, sizeof s));
  ad_tensor x = *dy; /* a header of the input's shape, for the checks */
  x.shape[dy->ndim - 2] = a->in_size[0];
  x.shape[dy->ndim - 1] = a->in_size[1];
  pool_geom g;
  if ((st = pool_geom_of(c, &x, "the input", &g)) != AD_OK) return st;
  if ((st = pool_expect(c, dy, "dy", &x, "the input", g.oh, g.ow)) != AD_OK) return st;
  pool_out_shape(c, dy, g.ih, g.iw);
  return AD_OK;
}

static void avg_pool2d_backward_fwd(const ad_call *c) {
  pool_geom g;
  pool_geom_of(c, c->out, "the input", &g);
  pool_run(c, &g, avg_back_plane_f32, avg_back_plane_f64, c->in[0], NULL);
}

/* linear: its adjoint is the average pooling */
static ad_status avg_pool2d_backward_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_apply1(c->ctx, AD_OP_AVG_POOL2D, c->gout, c->attrs));
}

static int avg_pool2d_backward_sample(const ad_sample_call *s) {
  const pool_case *pc = pool_case_of(s, false);
  if (!pc) return 0;
  int64_t shape[4];
  pool_case_out(pc, &s->attrs->pool, shape);
  s->attrs->pool.in_size[0] = pc->shape[pc->ndim - 2];
  s->attrs->pool.in_size[1] = pc->shape[pc->ndim - 1];
  return (s->in[0] = ad_sample_tensor(s, pc->ndim, shape, -1, 1, true)) ? 1 : -1;
}

const ad_op_def ad_def_avg_pool2d_backward = {
    .name = "avg_pool2d_backward",
    .arity = 1,
    .attrs = AD_ATTRS_POOL,
    .shape = avg_pool2d_backward_shape,
    .forward = avg_pool2d_backward_fwd,
    .backward = avg_pool2d_backward_bwd,
    .sample = avg_pool2d_backward_sample,
    .math = "y = zeros of H, W in_size; y[window w] += g[w] / divisor_w",
    .inputs = {"g"},
    .grads = {"avg_pool2d(dy)"},
};

/* ------------------------------------- global_avg_pool2d (a composite) */

/* sum over H, W (keepdim), divided by H W: adaptive_avg_pool2d(x, 1). A
 * division, as ad_mean's, not a product with 1 / (H W), which rounds twice
 * (f32 {5, 0, 0}: 1.6666667461 where PyTorch and ad_mean give 1.6666666269) */
ad_tensor *ad_global_avg_pool2d(ad_ctx *ctx, ad_tensor *x) {
  if (!ctx || !ad_arg_ok(ctx, "global_avg_pool2d", "input", x)) return NULL;
  int nd = x->ndim;
  char buf[64];
  if (!ad_is_float(x->dtype)) {
    ad_set_error(ctx, AD_ERR_DTYPE, "global_avg_pool2d: input is %s; a float dtype is needed",
                 ad_dtype_name(x->dtype));
    return NULL;
  }
  if (nd != 3 && nd != 4) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "global_avg_pool2d: input %s must be 4-D (N, C, H, W) or 3-D (C, H, W)",
                 ad_shape_str(x, buf, sizeof buf));
    return NULL;
  }
  if (x->shape[nd - 2] < 1 || x->shape[nd - 1] < 1) {
    ad_set_error(ctx, AD_ERR_SHAPE, "global_avg_pool2d: input %s has an empty plane (H or W is 0)",
                 ad_shape_str(x, buf, sizeof buf));
    return NULL;
  }
  ad_attrs at = {.reduce = {3u << (nd - 2), true}};
  ad_tensor *s = ad_apply1(ctx, AD_OP_SUM, x, &at);
  return s ? ad_div(ctx, s, ad_scalar(ctx, s->dtype, (double)(x->shape[nd - 2] * x->shape[nd - 1])))
           : NULL;
}

/* ---------------------------- max_pool3d, avg_pool3d (composites) */

/* 3-D pooling over (D, H, W) as two 2-D poolings (the maximum without
 * dilation: their argmax, then pool_gather; see ad_max_pool3d): over (H, W) of each of
 * the planes * D depth slices (the [planes D, H, W] view), then over D
 * with a kd x 1 window of the [planes, D, OH OW] view. For the maximum the
 * order matters: the first stage picks each slice's first maximum in (h, w)
 * order (or its last NaN), the second the first slice holding the window's
 * maximum (or the last holding a NaN), so the argmax is PyTorch's: the
 * first maximum, or the last NaN, in (d, h, w) order. The average's
 * divisor is a product of one count per axis (the window clipped to the
 * padded input, or to the input), so each stage divides by its own. With
 * divisor_override, the result is the padded mean times count /
 * divisor_override, a constant per output position. Checks happen here,
 * naming the 3-D op, so the 2-D ops fail only on OOM. */

/* The resolved attributes of a 3-D pooling, per axis (d, h, w), and the
 * input and output lengths. */
typedef struct pool3d_geom {
  int64_t k[3], s[3], p[3], d[3], in[3], out[3];
} pool3d_geom;

#define POOL_TRIPLE(v) (long long)(v)[0], (long long)(v)[1], (long long)(v)[2]

static bool pool3d_check(ad_ctx *ctx, const char *fn, ad_tensor *x, int64_t kd, int64_t kh,
                         int64_t kw, const ad_pool3d_opts *o, bool max, pool3d_geom *g) {
  if (!ad_arg_ok(ctx, fn, "input", x)) return false;
  char s[64];
  if (!ad_is_float(x->dtype)) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input is %s; a float dtype is needed", fn,
                 ad_dtype_name(x->dtype));
    return false;
  }
  int nd = x->ndim;
  if (nd != 4 && nd != 5) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be 5-D (N, C, D, H, W) or 4-D (C, D, H, W)",
                 fn, ad_shape_str(x, s, sizeof s));
    return false;
  }
  for (int a = nd - 4; a < nd; a++)
    if (x->shape[a] < 1) {
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s has an empty C, D, H or W (only N may be 0)",
                   fn, ad_shape_str(x, s, sizeof s));
      return false;
    }
  static const ad_pool3d_opts none;
  if (!o) o = &none;
  *g = (pool3d_geom){.k = {kd, kh, kw}};
  bool ok_k = true, ok_s = true, ok_d = true, ok_p = true;
  for (int a = 0; a < 3; a++) {
    g->s[a] = o->stride[a] ? o->stride[a] : g->k[a];
    g->d[a] = o->dilation[a] ? o->dilation[a] : 1;
    g->p[a] = o->padding[a];
    g->in[a] = x->shape[nd - 3 + a];
    ok_k = ok_k && g->k[a] >= 1 && g->k[a] <= POOL_ATTR_MAX;
    ok_s = ok_s && g->s[a] >= 1 && g->s[a] <= POOL_ATTR_MAX;
    ok_d = ok_d && g->d[a] >= 1 && g->d[a] <= POOL_ATTR_MAX && (max || g->d[a] == 1);
  }
  for (int a = 0; ok_k && a < 3; a++) ok_p = ok_p && g->p[a] >= 0 && g->p[a] <= g->k[a] / 2;
  if (!ok_k || !ok_s)
    ad_set_error(ctx, AD_ERR_ARG, "%s: %s %lldx%lldx%lld must be positive (at most 2^30)", fn,
                 ok_k ? "stride" : "kernel", POOL_TRIPLE(ok_k ? o->stride : g->k));
  else if (!ok_d && !max)
    ad_set_error(ctx, AD_ERR_ARG, "%s: dilation %lldx%lldx%lld: average pooling takes none (1x1x1)",
                 fn, POOL_TRIPLE(o->dilation));
  else if (!ok_d)
    ad_set_error(ctx, AD_ERR_ARG, "%s: dilation %lldx%lldx%lld must be positive (at most 2^30)", fn,
                 POOL_TRIPLE(o->dilation));
  else if (!ok_p)
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: padding %lldx%lldx%lld must be >= 0 and at most half the kernel "
                 "%lldx%lldx%lld",
                 fn, POOL_TRIPLE(g->p), POOL_TRIPLE(g->k));
  if (!ok_k || !ok_s || !ok_d || !ok_p) return false;
  bool ok_o = true;
  for (int a = 0; a < 3; a++) {
    g->out[a] = pool_len(g->in[a], g->k[a], g->s[a], g->p[a], g->d[a], o->ceil_mode);
    ok_o = ok_o && g->out[a] >= 1;
  }
  if (!ok_o)
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input %s is too small: the output would be %lldx%lldx%lld (kernel "
                 "%lldx%lldx%lld, stride %lldx%lldx%lld, padding %lldx%lldx%lld, dilation "
                 "%lldx%lldx%lld)",
                 fn, ad_shape_str(x, s, sizeof s), POOL_TRIPLE(g->out), POOL_TRIPLE(g->k),
                 POOL_TRIPLE(g->s), POOL_TRIPLE(g->p), POOL_TRIPLE(g->d));
  return ok_o;
}
#undef POOL_TRIPLE

/* PyTorch's count_include_pad count of window o along an axis: its taps
 * clipped to the padded input. */
static int64_t pool_count_padded(int64_t o, int64_t k, int64_t s, int64_t p, int64_t n) {
  int64_t lo = o * s - p, hi = lo + k;
  return (hi < n + p ? hi : n + p) - lo;
}

/* The two stages (see above), with the options o (not NULL); the
 * maximum ignores exclude_pad and divisor_override. */
static ad_tensor *pool3d_run(ad_ctx *ctx, ad_tensor *x, const pool3d_geom *g, bool max,
                             const ad_pool3d_opts *o) {
  int nd = x->ndim;
  int64_t planes = ad_shape_size(nd - 3, x->shape), m = g->out[1] * g->out[2];
  bool ceil_mode = o->ceil_mode, excl = !max && o->exclude_pad && !o->divisor_override;
  ad_pool2d_opts hw = {.stride = {g->s[1], g->s[2]},
                       .padding = {g->p[1], g->p[2]},
                       .dilation = {g->d[1], g->d[2]},
                       .ceil_mode = ceil_mode,
                       .exclude_pad = excl};
  ad_pool2d_opts dd = {.stride = {g->s[0], 1},
                       .padding = {g->p[0], 0},
                       .dilation = {g->d[0], 1},
                       .ceil_mode = ceil_mode,
                       .exclude_pad = excl};
  int64_t s1[3] = {planes * g->in[0], g->in[1], g->in[2]}, s2[3] = {planes, g->in[0], m};
  ad_tensor *y = ad_reshape(ctx, x, 3, s1);
  y = max ? ad_max_pool2d(ctx, y, g->k[1], g->k[2], &hw)
          : ad_avg_pool2d(ctx, y, g->k[1], g->k[2], &hw);
  y = ad_reshape(ctx, y, 3, s2);
  y = max ? ad_max_pool2d(ctx, y, g->k[0], 1, &dd) : ad_avg_pool2d(ctx, y, g->k[0], 1, &dd);
  int64_t so[AD_MAX_DIMS];
  memcpy(so, x->shape, sizeof(int64_t) * (size_t)nd);
  for (int a = 0; a < 3; a++) so[nd - 3 + a] = g->out[a];
  y = ad_reshape(ctx, y, nd, so);
  if (!y || max || !o->divisor_override) return y;
  /* the padded mean times count / divisor_override */
  ad_tensor *f = ad_tmp_full(ctx, x->dtype, 3, g->out, 0.0);
  if (!f) return NULL;
  int64_t i = 0;
  for (int64_t a = 0; a < g->out[0]; a++) {
    double ca = (double)pool_count_padded(a, g->k[0], g->s[0], g->p[0], g->in[0]);
    for (int64_t b = 0; b < g->out[1]; b++) {
      double cb = (double)pool_count_padded(b, g->k[1], g->s[1], g->p[1], g->in[1]);
      for (int64_t c = 0; c < g->out[2]; c++) {
        double cc = (double)pool_count_padded(c, g->k[2], g->s[2], g->p[2], g->in[2]);
        ad_tensor_set(f, i++, ca * cb * cc / (double)o->divisor_override);
      }
    }
  }
  return ad_mul(ctx, y, f);
}

static ad_tensor *pool3d_indices(ad_ctx *ctx, const char *fn, ad_tensor *x, const pool3d_geom *g,
                                 const ad_pool3d_opts *opts);
static bool pool_indices_fit(ad_ctx *ctx, const char *fn, const ad_tensor *x, int n,
                             const int64_t *len, const int64_t *pad, const int64_t *dil);

/* With dilation 1 every window holds an input element (padding is at most
 * half the kernel, and ceil_mode's last window starts inside the input):
 * the argmax of each window is found once (pool3d_indices: the two stages'
 * rule) and x read there by pool_gather, whose gradient (pool_scatter, dy
 * added in window order, PyTorch's order) is one pass into x's gradient,
 * where the two stages' backwards would each search their windows again.
 * The values are the stages' (x at the same argmax). Otherwise (dilation,
 * planes the int32 indices do not reach) the two stages. */
ad_tensor *ad_max_pool3d(ad_ctx *ctx, ad_tensor *x, int64_t kd, int64_t kh, int64_t kw,
                         const ad_pool3d_opts *opts) {
  static const ad_pool3d_opts none;
  const char *fn = "max_pool3d";
  pool3d_geom g;
  if (!ctx || !pool3d_check(ctx, fn, x, kd, kh, kw, opts, true, &g)) return NULL;
  if (!opts) opts = &none;
  bool undilated = g.d[0] == 1 && g.d[1] == 1 && g.d[2] == 1;
  /* without a gradient to take (inference, no_grad) the two stages are the
   * faster forward, with the same values */
  bool grad = ad_grad_enabled(ctx) && (ad_node_of(x)->flags & AD_NF_REQUIRES_GRAD);
  if (!grad || !undilated || g.in[0] * g.in[1] * g.in[2] - 1 > INT32_MAX)
    return pool3d_run(ctx, x, &g, true, opts);
  ad_tensor *idx = pool3d_indices(ctx, fn, x, &g, opts);
  return idx ? pool_gather(ctx, x, idx, -3) : NULL;
}

ad_tensor *ad_avg_pool3d(ad_ctx *ctx, ad_tensor *x, int64_t kd, int64_t kh, int64_t kw,
                         const ad_pool3d_opts *opts) {
  static const ad_pool3d_opts none;
  pool3d_geom g;
  if (!ctx || !pool3d_check(ctx, "avg_pool3d", x, kd, kh, kw, opts, false, &g)) return NULL;
  return pool3d_run(ctx, x, &g, false, opts ? opts : &none);
}

/* ------------------------------ max_pool2d_indices, max_pool3d_indices */

/* The indices of PyTorch's max_pool2d / max_pool3d(return_indices=True):
 * per window, the flat index in its (n, c) plane of the element the
 * gradient goes to (the argmax above, so ties and NaN follow the same
 * rule), as AD_I32 constants (no gradient). A window with no tap in the
 * input (only with dilation) gets PyTorch's index, built from its first
 * taps at or after 0 along each axis (which may lie outside the plane). */

/* Whether every index of a pooling with planes of the given lengths (and
 * the geometry's padding and dilation, n axes) fits an int32; records the
 * error naming fn otherwise. */
static bool pool_indices_fit(ad_ctx *ctx, const char *fn, const ad_tensor *x, int n,
                             const int64_t *len, const int64_t *pad, const int64_t *dil) {
  /* the largest in-plane index, and a bound on the first taps of an empty
   * window: below max(len + pad, dil) along each axis */
  double plane = 1, empty = 0;
  bool dilated = false;
  for (int a = 0; a < n; a++) {
    plane *= (double)len[a];
    dilated = dilated || dil[a] > 1;
    double m = (double)(len[a] + pad[a] > dil[a] ? len[a] + pad[a] : dil[a]);
    empty = empty * (double)len[a] + m;
  }
  if (plane - 1 <= (double)INT32_MAX && (!dilated || empty <= (double)INT32_MAX)) return true;
  char s[64];
  ad_set_error(ctx, AD_ERR_SHAPE,
               "%s: input %s: an index into a plane of %.0f elements would not fit the int32 "
               "indices (at most 2^31 - 1)",
               fn, ad_shape_str(x, s, sizeof s), plane);
  return false;
}

/* The indices of a 2-D max pooling of x with the attributes at; the
 * checks and messages are max_pool2d's, naming fn. */
static ad_tensor *pool2d_indices(ad_ctx *ctx, const char *fn, ad_tensor *x, const ad_attrs *at) {
  if (!ad_arg_ok(ctx, fn, "input", x)) return NULL;
  ad_tensor *in[1] = {x};
  if (ad_check_float_same(ctx, fn, 1, in) != AD_OK) return NULL;
  ad_call c = {.ctx = ctx, .name = fn, .n = 1, .in = in, .attrs = at};
  pool_geom g;
  if (pool_geom_of(&c, x, "input", &g) != AD_OK) return NULL;
  int64_t len[2] = {g.ih, g.iw}, pad[2] = {g.ph, g.pw}, dil[2] = {g.dh, g.dw};
  if (!pool_indices_fit(ctx, fn, x, 2, len, pad, dil)) return NULL;
  int64_t shape[AD_MAX_DIMS];
  memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  shape[x->ndim - 2] = g.oh;
  shape[x->ndim - 1] = g.ow;
  ad_tensor *out = ad_tmp_new(ctx, AD_I32, x->ndim, shape);
  if (!out) return NULL;
  size_t es = ad_dsize(x->dtype);
  pool_job j = {
      .g = g,
      .f = x->dtype == AD_F32 ? argmax_plane_f32 : argmax_plane_f64,
      .a = x->data,
      .out = out->data,
      .asz = (size_t)(g.ih * g.iw) * es,
      .osz = (size_t)(g.oh * g.ow) * sizeof(int32_t),
  };
  double work = (double)g.oh * (double)g.ow * (double)g.kh * (double)g.kw;
  int64_t grain = work >= POOL_GRAIN ? 1 : POOL_GRAIN / (work >= 1 ? (int64_t)work : 1);
  ad_parallel_for(g.planes, grain, pool_range, &j);
  return out;
}

ad_tensor *ad_max_pool2d_indices(ad_ctx *ctx, ad_tensor *x, int64_t kh, int64_t kw,
                                 const ad_pool2d_opts *opts) {
  if (!ctx) return NULL;
  ad_attrs at = pool_attrs(kh, kw, opts);
  return pool2d_indices(ctx, "max_pool2d_indices", x, &at);
}

/* ------------------------- adaptive_max_pool2d, adaptive_avg_pool2d */

/* The attributes of an adaptive pooling to oh x ow (see ad_pool_attrs), or
 * false with the error naming fn. */
static bool adaptive_attrs(ad_ctx *ctx, const char *fn, int64_t oh, int64_t ow, ad_attrs *at) {
  if (oh < 1 || ow < 1 || oh > POOL_ATTR_MAX || ow > POOL_ATTR_MAX) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: output size %lldx%lld must be in [1, 2^30]", fn,
                 (long long)oh, (long long)ow);
    return false;
  }
  *at = (ad_attrs){.pool = {.kernel = {oh, ow},
                            .stride = {1, 1},
                            .dilation = {1, 1},
                            .count_include_pad = true,
                            .adaptive = true}};
  return true;
}

/* The maximum: the argmax of each window (max_pool2d's kernels with the
 * adaptive attributes, no gradient), then x read there by pool_gather: the
 * values are x's, and the gradient is pool_scatter, dy added in window
 * order (PyTorch's adaptive_max_pool2d_backward adds in that order),
 * written straight into a leaf's gradient, whose gradient is the gather
 * again. Its backward so needs no second search of the windows, as
 * PyTorch's keeps the indices. */
ad_tensor *ad_adaptive_max_pool2d(ad_ctx *ctx, ad_tensor *x, int64_t oh, int64_t ow) {
  const char *fn = "adaptive_max_pool2d";
  ad_attrs at;
  if (!ctx || !adaptive_attrs(ctx, fn, oh, ow, &at)) return NULL;
  ad_tensor *idx = pool2d_indices(ctx, fn, x, &at);
  return idx ? pool_gather(ctx, x, idx, -2) : NULL;
}

/* The mean: avg_pool2d with the adaptive attributes (its gradient
 * avg_pool2d_backward with them, and back). */
ad_tensor *ad_adaptive_avg_pool2d(ad_ctx *ctx, ad_tensor *x, int64_t oh, int64_t ow) {
  ad_attrs at;
  if (!ctx || !adaptive_attrs(ctx, "adaptive_avg_pool2d", oh, ow, &at)) return NULL;
  return ad_apply1(ctx, AD_OP_AVG_POOL2D, x, &at);
}

/* Whether window o along an axis (kernel k, stride s, padding p, dilation
 * d, length n) has no tap in the input. */
static bool pool_window_empty(int64_t o, int64_t k, int64_t s, int64_t p, int64_t d, int64_t n) {
  int64_t lo, hi;
  pool_taps(o * s - p, k, d, n, &lo, &hi);
  return lo >= hi;
}

/* The two stages of pool3d_run on a detached x: the (h, w) argmax of every
 * depth slice, then the depth argmax of the slices' maxima; the index is
 * the chosen slice's d times H W plus its (h, w) index. x and g checked
 * (pool3d_check); fn names the errors (the int32 limit, OOM). */
static ad_tensor *pool3d_indices(ad_ctx *ctx, const char *fn, ad_tensor *x, const pool3d_geom *gp,
                                 const ad_pool3d_opts *opts) {
  const pool3d_geom g = *gp;
  if (!pool_indices_fit(ctx, fn, x, 3, g.in, g.p, g.d)) return NULL;
  int nd = x->ndim;
  int64_t planes = ad_shape_size(nd - 3, x->shape), m = g.out[1] * g.out[2];
  int64_t s1[3] = {planes * g.in[0], g.in[1], g.in[2]};
  ad_pool2d_opts hw = {.stride = {g.s[1], g.s[2]},
                       .padding = {g.p[1], g.p[2]},
                       .dilation = {g.d[1], g.d[2]},
                       .ceil_mode = opts->ceil_mode};
  ad_attrs a1 = pool_attrs(g.k[1], g.k[2], &hw);
  ad_tensor *xs = ad_reshape(ctx, ad_detach(ctx, x), 3, s1);
  ad_tensor *i1 = xs ? pool2d_indices(ctx, fn, xs, &a1) : NULL;
  /* the slices' maxima: x at their argmaxes, without dilation (every
   * window then holds an input element), else the op (a window with none
   * is -inf) */
  bool undilated = g.d[0] == 1 && g.d[1] == 1 && g.d[2] == 1;
  ad_tensor *y1 = NULL;
  if (i1 && undilated) {
    if ((y1 = ad_tmp_new(ctx, x->dtype, 3, i1->shape))) plane_run(xs, i1, y1, 1, false);
  } else if (i1) {
    y1 = ad_max_pool2d(ctx, xs, g.k[1], g.k[2], &hw);
  }
  if (!y1) return NULL;
  int64_t s2[3] = {planes, g.in[0], m};
  ad_pool2d_opts dd = {.stride = {g.s[0], 1},
                       .padding = {g.p[0], 0},
                       .dilation = {g.d[0], 1},
                       .ceil_mode = opts->ceil_mode};
  ad_attrs a2 = pool_attrs(g.k[0], 1, &dd);
  ad_tensor *y2 = ad_reshape(ctx, y1, 3, s2);
  ad_tensor *i2 = y2 ? pool2d_indices(ctx, fn, y2, &a2) : NULL;
  int64_t so[AD_MAX_DIMS];
  memcpy(so, x->shape, sizeof(int64_t) * (size_t)nd);
  for (int a = 0; a < 3; a++) so[nd - 3 + a] = g.out[a];
  ad_tensor *out = i2 ? ad_tmp_new(ctx, AD_I32, nd, so) : NULL;
  if (!out) return NULL;
  const int32_t *I1 = i1->data, *I2 = i2->data;
  int32_t *O = out->data;
  int64_t hwin = g.in[1] * g.in[2];
  for (int64_t p = 0; p < planes; p++)
    for (int64_t od = 0; od < g.out[0]; od++) {
      bool ed = !undilated && pool_window_empty(od, g.k[0], g.s[0], g.p[0], g.d[0], g.in[0]);
      for (int64_t oh = 0; oh < g.out[1]; oh++) {
        bool eh = !undilated && pool_window_empty(oh, g.k[1], g.s[1], g.p[1], g.d[1], g.in[1]);
        for (int64_t ow = 0; ow < g.out[2]; ow++) {
          int64_t j = oh * g.out[2] + ow, i;
          if (ed || eh ||
              (!undilated && pool_window_empty(ow, g.k[2], g.s[2], g.p[2], g.d[2], g.in[2]))) {
            i = (pool_first_tap(od * g.s[0] - g.p[0], g.d[0]) * g.in[1] +
                 pool_first_tap(oh * g.s[1] - g.p[1], g.d[1])) *
                    g.in[2] +
                pool_first_tap(ow * g.s[2] - g.p[2], g.d[2]);
          } else {
            int64_t dsel = I2[(p * g.out[0] + od) * m + j] / m;
            i = dsel * hwin + I1[(p * g.in[0] + dsel) * m + j];
          }
          O[(p * g.out[0] + od) * m + j] = (int32_t)i;
        }
      }
    }
  return out;
}

ad_tensor *ad_max_pool3d_indices(ad_ctx *ctx, ad_tensor *x, int64_t kd, int64_t kh, int64_t kw,
                                 const ad_pool3d_opts *opts) {
  static const ad_pool3d_opts none;
  const char *fn = "max_pool3d_indices";
  pool3d_geom g;
  if (!ctx || !pool3d_check(ctx, fn, x, kd, kh, kw, opts, true, &g)) return NULL;
  return pool3d_indices(ctx, fn, x, &g, opts ? opts : &none);
}
