/* winograd.c: Winograd F(4x4, 3x3) for f32 3x3 convolutions at stride 1,
 * dilation 1, one group: the fast path of conv2d, conv_transpose2d and
 * conv2d_weight (op_conv.c decides when it applies).
 *
 * The output of the convolution is cut into 4x4 tiles; tile (ti, tj) reads
 * the 6x6 input patch at rows 4 ti - pt .. + 5, columns 4 tj - pl .. + 5
 * (zero outside the image). With the 1-D transforms of Lavin and Gray
 * (points 0, 1, -1, 2, -2 and infinity)
 *
 *   y_tile = A^T [ sum_c (G w_oc G^T) . (B^T d_c B) ] A     (. elementwise)
 *
 * so each of the 36 positions xi of the 6x6 transformed domain is one
 * product over the channels: M[xi] = V[xi] U[xi], V [tiles, C] the
 * transformed inputs and U [C, O] the transformed kernels: 36
 * multiplications per tile, channel and output channel, against 9 x 16 =
 * 144 for the direct method, 4x fewer. The other two ops are this map's
 * adjoints, taken position by position:
 *
 *   input gradient:  dV[xi] = dYh[xi] U[xi]^T,  dYh = A dy_tile A^T (6x6),
 *                    dx_patch += B dV B^T, overlapping patches summed
 *   weight gradient: dU[xi] = sum over tiles V[xi]^T dYh[xi],
 *                    dw = G^T dU G
 *
 * The input gradient's adjoint form is ill-conditioned for data of one
 * sign: A's rows (1, +-2, 4, +-8) make dYh large and of one sign (2.4e3
 * for 512 channels of [0, 1) data, against results of 5e2), B then
 * cancels it, and the channel sum's rounding, relative to dV, reaches dx
 * multiplied by B's coefficients (up to 5 a side): sum |B| |dV| |B^T| is
 * 20x |dx| on average, against 1.3x for the forward's A^T |M| A (whose
 * cancelling transform B^T meets the data before the sum, exactly), so
 * it is ~10x less accurate than conv2d. Where dx needs no more 4x4 tiles
 * than dy (padding 1 or more on both sides of each axis: 'same'), the
 * input gradient is computed instead as a forward convolution, of dy
 * padded by 2 - pt and 2 - pl with the kernels flipped and their channels
 * swapped, w'[c, o, i, j] = w[o, c, 2 - i, 2 - j] (ad_wino_init_transposed):
 * the same cost, conv2d's rounding. Elsewhere (no padding: a 24x24 dy has
 * 36 tiles, its 26x26 dx 49) that form would cost ~15% more, and the
 * adjoint stays.
 *
 * Buffers (all f32, 64-byte aligned, channel counts padded to 16 so each
 * transform runs on 16 channels at a time, one vector):
 *   P [nb, hp, wp, cp]   images of the block, channels last, zero padded
 *   V [36, tb, cp]       transformed input patches (tb = nb tiles)
 *   M [36, tb, op]       products, or transformed output gradients
 *   Q [nb, 4 th, 4 tw, op] output tiles, channels last
 * The transforms are compiled twice, generic and AVX-512, and picked from
 * the CPU; the lanes never mix, so both give the same bits.
 *
 * Rounding: the transforms multiply by up to 8 (A^T) and 5 (B^T) and add
 * many terms, so the f32 result differs from the direct sum by more than
 * the im2col path's few ulps, relative to the largest values of the 6x6
 * input patch a tile reads: the bound is in ad_conv2d's contract (ad.h)
 * and kernels.h, checked by tests/test_winograd.c. */
#include "kernels.h"
#include "tr16.h"

#include <stdatomic.h>
#include <string.h>

/* Rounds n up to a multiple of 16 (one vector of f32 lanes). */
static int64_t up16(int64_t n) { return (n + 15) & ~(int64_t)15; }

void ad_wino_init(ad_wino *p, int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t oh,
                  int64_t ow, int64_t pt, int64_t pl) {
  memset(p, 0, sizeof *p);
  p->n = n;
  p->c = c;
  p->h = h;
  p->w = w;
  p->o = o;
  p->oh = oh;
  p->ow = ow;
  p->pt = pt;
  p->pl = pl;
  p->th = (oh + 3) / 4;
  p->tw = (ow + 3) / 4;
  p->t1 = p->th * p->tw;
  p->hp = 4 * p->th + 2;
  p->wp = 4 * p->tw + 2;
  p->cp = up16(c);
  p->op = up16(o);
  /* at least 32 tiles per product (rows of the GEMM), from the geometry
   * alone: the blocks never depend on the number of threads */
  p->nb = (32 + p->t1 - 1) / p->t1;
  if (p->nb > n) p->nb = n > 0 ? n : 1;
  p->nblocks = n > 0 ? (n + p->nb - 1) / p->nb : 0;
  int64_t tb = p->nb * p->t1;
  p->p_floats = p->nb * p->hp * p->wp * p->cp;
  p->v_floats = 36 * tb * p->cp;
  p->m_floats = 36 * tb * p->op;
  p->q_floats = p->nb * 4 * p->th * 4 * p->tw * p->op;
  p->scratch_floats = p->p_floats + p->v_floats + p->m_floats + p->q_floats;
  p->u_floats = 36 * c * p->op;
  p->ut_floats = 36 * o * p->cp;
}

bool ad_wino_init_transposed(ad_wino *p, int64_t n, int64_t c, int64_t h, int64_t w, int64_t o,
                             int64_t oh, int64_t ow, int64_t pt, int64_t pl) {
  if (((h + 3) / 4) * ((w + 3) / 4) > ((oh + 3) / 4) * ((ow + 3) / 4)) return false;
  ad_wino_init(p, n, o, oh, ow, c, h, w, 2 - pt, 2 - pl);
  p->flip = true;
  p->ut_floats = 0;
  return true;
}

/* ------------------------------------------- kernel transforms (double) */

/* G, the kernel transform, 6x3 */
static const double wino_g[6][3] = {{1.0 / 4, 0, 0},
                                    {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                    {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                    {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                    {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                    {0, 0, 1}};

/* The kernel transforms work on blocks of 16 input x 16 output channels
 * (the last of each may be short), input blocks major. */
int64_t ad_wino_kblocks(const ad_wino *p) { return (p->cp / 16) * (p->op / 16); }

/* Block blk's channels: inputs [*c0, *c1), outputs [*o0, *o1). */
static void kblock(const ad_wino *p, int64_t blk, int64_t *c0, int64_t *c1, int64_t *o0,
                   int64_t *o1) {
  int64_t nbo = p->op / 16;
  *c0 = 16 * (blk / nbo);
  *o0 = 16 * (blk % nbo);
  *c1 = *c0 + 16 < p->c ? *c0 + 16 : p->c;
  *o1 = *o0 + 16 < p->o ? *o0 + 16 : p->o;
}

/* du[i] += du[k u_floats + i] for k = 1 .. nparts - 1 in order, i in
 * [i0, i1): the partial sums of dU added into the first. */
void ad_wino_du_sum(const ad_wino *p, float *du, int64_t nparts, int64_t i0, int64_t i1) {
  for (int64_t k = 1; k < nparts; k++) {
    const float *src = du + k * p->u_floats;
    for (int64_t i = i0; i < i1; i++) du[i] += src[i];
  }
}

/* ----------------------------------------------------- channels last */

/* dst[y drs + x dcs + k] = src[(k rows + y) cols + x]: ch planes of rows x
 * cols to channels last (dst's rows drs floats apart, pixels dcs apart). */
static void to_last_gen(const float *src, int64_t ch, int64_t rows, int64_t cols, float *dst,
                        int64_t drs, int64_t dcs) {
  for (int64_t y = 0; y < rows; y++)
    for (int64_t k = 0; k < ch; k++) {
      const float *s = src + (k * rows + y) * cols;
      float *d = dst + y * drs + k;
      for (int64_t x = 0; x < cols; x++) d[x * dcs] = s[x];
    }
}

/* dst[(k rows + y) cols + x] = src[y srs + x scs + k] (+ bias[k]): the
 * inverse of to_last. */
static void from_last_gen(const float *src, int64_t srs, int64_t scs, float *dst, int64_t ch,
                          int64_t rows, int64_t cols, const float *bias) {
  for (int64_t y = 0; y < rows; y++)
    for (int64_t k = 0; k < ch; k++) {
      const float *s = src + y * srs + k;
      float *d = dst + (k * rows + y) * cols;
      float bv = bias ? bias[k] : 0.0f;
      if (bias)
        for (int64_t x = 0; x < cols; x++) d[x] = s[x * scs] + bv;
      else
        for (int64_t x = 0; x < cols; x++) d[x] = s[x * scs];
    }
}

#ifdef AD_TR16
#define WINO_X86    1
#define WINO_AVX512 AD_TR16_ATTR
#define WINO_UNROLL AD_TR16_UNROLL

/* to_last in 16x16 blocks; the pad lanes past ch (up to a multiple of 16)
 * are written with zeros. */
WINO_AVX512 static void to_last_avx512(const float *src, int64_t ch, int64_t rows, int64_t cols,
                                       float *dst, int64_t drs, int64_t dcs) {
  __m512 r[16];
  for (int64_t k0 = 0; k0 < ch; k0 += 16)
    for (int64_t y = 0; y < rows; y++)
      for (int64_t x0 = 0; x0 < cols; x0 += 16) {
        int64_t nx = cols - x0 < 16 ? cols - x0 : 16;
        __mmask16 mx = (__mmask16)((1u << nx) - 1);
        if (y + 4 < rows) /* the rows a few iterations ahead, of all 16 planes */
          for (int i = 0; i < 16 && k0 + i < ch; i++)
            _mm_prefetch((const char *)(src + ((k0 + i) * rows + y + 4) * cols + x0), _MM_HINT_T0);
        WINO_UNROLL
        for (int i = 0; i < 16; i++)
          r[i] = k0 + i < ch ? _mm512_maskz_loadu_ps(mx, src + ((k0 + i) * rows + y) * cols + x0)
                             : _mm512_setzero_ps();
        ad_tr16(r);
        for (int i = 0; i < nx; i++) _mm512_storeu_ps(dst + y * drs + (x0 + i) * dcs + k0, r[i]);
      }
}

WINO_AVX512 static void from_last_avx512(const float *src, int64_t srs, int64_t scs, float *dst,
                                         int64_t ch, int64_t rows, int64_t cols,
                                         const float *bias) {
  __m512 r[16];
  for (int64_t y = 0; y < rows; y++)
    for (int64_t k0 = 0; k0 < ch; k0 += 16)
      for (int64_t x0 = 0; x0 < cols; x0 += 16) {
        int64_t nx = cols - x0 < 16 ? cols - x0 : 16, nk = ch - k0 < 16 ? ch - k0 : 16;
        __mmask16 mx = (__mmask16)((1u << nx) - 1);
        WINO_UNROLL
        for (int i = 0; i < 16; i++)
          r[i] =
              i < nx ? _mm512_loadu_ps(src + y * srs + (x0 + i) * scs + k0) : _mm512_setzero_ps();
        ad_tr16(r);
        for (int k = 0; k < nk; k++) {
          __m512 v = bias ? _mm512_add_ps(r[k], _mm512_set1_ps(bias[k0 + k])) : r[k];
          _mm512_mask_storeu_ps(dst + ((k0 + k) * rows + y) * cols + x0, mx, v);
        }
      }
}
#endif

static _Atomic bool force_generic;

void ad_wino_set_generic(bool on) { atomic_store(&force_generic, on); }

static bool have_avx512(void) {
#ifdef WINO_X86
  return !atomic_load(&force_generic) && __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

/* ---------------------------------------- kernel transforms, by lanes */

/* The kernel transforms take a block's 16 output channels o0 + l as 16
 * lanes, each lane computing what one (c, o) pair alone computes (the
 * same products and sums in the same order, in double, rounded once), so
 * that the lane loops vectorize and the bits do not depend on the lanes
 * or on the instance below (but for the sign of a NaN made from NaNs of
 * both signs, which the compiler's operand order picks: ad.h leaves it
 * open). */

/* U[xi, c, o] = (G w[o, c] G^T)[xi] for the channels of block blk (for
 * p->flip: of w'[o, c] = w[c, o] flipped, w then [c, o, 3, 3]), and the
 * same values in t [36][16 c][16 o] for the transpose UT[xi, o, c] after
 * U, which the callers write from t (none for p->flip, none being
 * needed); the pad lanes after the last channels of a side are zeros in
 * both. A block writes whole 64-byte lines of U and UT (16 lanes of U's
 * rows, op floats long, and of UT's, cp floats), so threads taking
 * different blocks never share a line. */
static inline __attribute__((always_inline)) void
weights_blk(const ad_wino *p, const float *w, float *u, int64_t blk, float t[36][16][16]) {
  int64_t c0, c1, o0, o1;
  kblock(p, blk, &c0, &c1, &o0, &o1);
  int no = (int)(o1 - o0);
  for (int64_t c = c0; c < c1; c++) {
    double k[9][16] = {{0}};
    for (int l = 0; l < no; l++)
      for (int i = 0; i < 9; i++)
        k[i][l] = p->flip ? w[(c * p->o + o0 + l) * 9 + 8 - i] : w[((o0 + l) * p->c + c) * 9 + i];
    for (int a = 0; a < 6; a++) {
      double row[3][16];
      for (int v = 0; v < 3; v++)
        for (int l = 0; l < 16; l++)
          row[v][l] =
              wino_g[a][0] * k[v][l] + wino_g[a][1] * k[3 + v][l] + wino_g[a][2] * k[6 + v][l];
      for (int b = 0; b < 6; b++) {
        float *ur = u + ((a * 6 + b) * p->c + c) * p->op + o0, *tr = t[a * 6 + b][c - c0];
        for (int l = 0; l < 16; l++)
          tr[l] = (float)(wino_g[b][0] * row[0][l] + wino_g[b][1] * row[1][l] +
                          wino_g[b][2] * row[2][l]);
        for (int l = no; l < 16; l++) tr[l] = 0.0f; /* not G's -0 of a zero */
        memcpy(ur, tr, 16 * sizeof *ur);
      }
    }
  }
  for (int xi = 0; xi < 36; xi++)
    for (int64_t cc = c1 - c0; cc < 16; cc++) memset(t[xi][cc], 0, sizeof t[xi][cc]);
}

/* UT's rows of block blk from weights_blk's t (its pad lanes zero). */
static void ut_rows_gen(const ad_wino *p, float *u, int64_t blk, float t[36][16][16]) {
  int64_t c0, c1, o0, o1;
  kblock(p, blk, &c0, &c1, &o0, &o1);
  float *ut = u + p->u_floats;
  for (int xi = 0; xi < 36; xi++)
    for (int64_t o = o0; o < o1; o++) {
      float *d = ut + (xi * p->o + o) * p->cp + c0;
      for (int l = 0; l < 16; l++) d[l] = t[xi][l][o - o0];
    }
}

/* dw[o, c] = G^T dU[., c, o] G for the channels of block blk (as
 * weights_blk's), in double. */
static inline __attribute__((always_inline)) void weight_grad_blk(const ad_wino *p, const float *du,
                                                                  float *dw, int64_t blk) {
  int64_t c0, c1, o0, o1;
  kblock(p, blk, &c0, &c1, &o0, &o1);
  int no = (int)(o1 - o0);
  for (int64_t c = c0; c < c1; c++) {
    double m[36][16], r[3][3][16];
    for (int xi = 0; xi < 36; xi++) { /* pad lanes as 0: dU's may never have been written */
      const float *dr = du + (xi * p->c + c) * p->op + o0;
      if (no == 16)
        for (int l = 0; l < 16; l++) m[xi][l] = dr[l];
      else
        for (int l = 0; l < 16; l++) m[xi][l] = l < no ? dr[l] : 0.0;
    }
    for (int a = 0; a < 3; a++) {
      double col[6][16];
      for (int v = 0; v < 6; v++)
        for (int l = 0; l < 16; l++) {
          double s = 0;
          for (int q = 0; q < 6; q++) s += wino_g[q][a] * m[q * 6 + v][l];
          col[v][l] = s;
        }
      for (int b = 0; b < 3; b++)
        for (int l = 0; l < 16; l++) {
          double s = 0;
          for (int v = 0; v < 6; v++) s += wino_g[v][b] * col[v][l];
          r[a][b][l] = s;
        }
    }
    for (int l = 0; l < no; l++)
      for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) dw[(((o0 + l) * p->c + c) * 3 + a) * 3 + b] = (float)r[a][b][l];
  }
}

static void weights_gen(const ad_wino *p, const float *w, float *u, int64_t blk,
                        float t[36][16][16]) {
  weights_blk(p, w, u, blk, t);
  if (!p->flip) ut_rows_gen(p, u, blk, t);
}
static void weight_grad_gen(const ad_wino *p, const float *du, float *dw, int64_t blk) {
  weight_grad_blk(p, du, dw, blk);
}
#ifdef WINO_X86
WINO_AVX512 static void weights_avx512(const ad_wino *p, const float *w, float *u, int64_t blk,
                                       float t[36][16][16]) {
  weights_blk(p, w, u, blk, t);
  if (p->flip) return;
  int64_t c0, c1, o0, o1;
  kblock(p, blk, &c0, &c1, &o0, &o1);
  float *ut = u + p->u_floats;
  __m512 r[16];
  for (int xi = 0; xi < 36; xi++) { /* ut_rows_gen's rows, by a 16x16 transpose */
    WINO_UNROLL
    for (int l = 0; l < 16; l++) r[l] = _mm512_loadu_ps(t[xi][l]);
    ad_tr16(r);
    for (int64_t o = o0; o < o1; o++)
      _mm512_storeu_ps(ut + (xi * p->o + o) * p->cp + c0, r[o - o0]);
  }
}
WINO_AVX512 static void weight_grad_avx512(const ad_wino *p, const float *du, float *dw,
                                           int64_t blk) {
  weight_grad_blk(p, du, dw, blk);
}
#endif

void ad_wino_weights(const ad_wino *p, const float *w, float *u, int64_t b0, int64_t b1) {
  float t[36][16][16];
  for (int64_t blk = b0; blk < b1; blk++) {
#ifdef WINO_X86
    if (have_avx512()) {
      weights_avx512(p, w, u, blk, t);
      continue;
    }
#endif
    weights_gen(p, w, u, blk, t);
  }
}

void ad_wino_weight_grad(const ad_wino *p, const float *du, float *dw, int64_t b0, int64_t b1) {
  for (int64_t blk = b0; blk < b1; blk++) {
#ifdef WINO_X86
    if (have_avx512()) {
      weight_grad_avx512(p, du, dw, blk);
      continue;
    }
#endif
    weight_grad_gen(p, du, dw, blk);
  }
}

static void to_last(const float *src, int64_t ch, int64_t rows, int64_t cols, float *dst,
                    int64_t drs, int64_t dcs) {
#ifdef WINO_X86
  if (have_avx512()) {
    to_last_avx512(src, ch, rows, cols, dst, drs, dcs);
    return;
  }
#endif
  to_last_gen(src, ch, rows, cols, dst, drs, dcs);
}

static void from_last(const float *src, int64_t srs, int64_t scs, float *dst, int64_t ch,
                      int64_t rows, int64_t cols, const float *bias) {
#ifdef WINO_X86
  if (have_avx512()) {
    from_last_avx512(src, srs, scs, dst, ch, rows, cols, bias);
    return;
  }
#endif
  from_last_gen(src, srs, scs, dst, ch, rows, cols, bias);
}

/* P[b, y + pt, x + pl, c] = x[b, c, y, x], zero elsewhere. The AVX-512
 * to_last writes every lane of the image's pixels, pad lanes included, so
 * then only the border around them is zeroed (none for conv2 of the MNIST
 * CNN: 86 KB of memset per image saved). */
static void pack_image(const ad_wino *p, const float *x, int64_t nimg, float *pb) {
  if (!have_avx512()) {
    memset(pb, 0, (size_t)p->p_floats * sizeof *pb);
  } else {
    size_t row = (size_t)(p->wp * p->cp);
    for (int64_t b = 0; b < nimg; b++) {
      float *img = pb + b * p->hp * p->wp * p->cp;
      int64_t below = p->hp - p->pt - p->h, right = p->wp - p->pl - p->w;
      memset(img, 0, (size_t)p->pt * row * sizeof *img);
      memset(img + (p->pt + p->h) * row, 0, (size_t)below * row * sizeof *img);
      if (p->pl || right)
        for (int64_t y = p->pt; y < p->pt + p->h; y++) {
          memset(img + y * row, 0, (size_t)(p->pl * p->cp) * sizeof *img);
          memset(img + y * row + (p->pl + p->w) * p->cp, 0, (size_t)(right * p->cp) * sizeof *img);
        }
    }
  }
  for (int64_t b = 0; b < nimg; b++)
    to_last(x + b * p->c * p->h * p->w, p->c, p->h, p->w,
            pb + ((b * p->hp + p->pt) * p->wp + p->pl) * p->cp, p->wp * p->cp, p->cp);
}

/* x[b, c, y, x] = P[b, y + pt, x + pl, c] (+ bias[c]). */
static void unpack_image(const ad_wino *p, const float *pb, int64_t nimg, const float *bias,
                         float *x) {
  for (int64_t b = 0; b < nimg; b++)
    from_last(pb + ((b * p->hp + p->pt) * p->wp + p->pl) * p->cp, p->wp * p->cp, p->cp,
              x + b * p->c * p->h * p->w, p->c, p->h, p->w, bias);
}

/* Q[b, y, x, o] = dy[b, o, y, x], zero past the output's edge. */
static void pack_out(const ad_wino *p, const float *dy, int64_t nimg, float *q) {
  int64_t qh = 4 * p->th, qw = 4 * p->tw;
  if (qh != p->oh || qw != p->ow || p->op != p->o) memset(q, 0, (size_t)p->q_floats * sizeof *q);
  for (int64_t b = 0; b < nimg; b++)
    to_last(dy + b * p->o * p->oh * p->ow, p->o, p->oh, p->ow, q + b * qh * qw * p->op, qw * p->op,
            p->op);
}

/* y[b, o, y, x] = Q[b, y, x, o] (+ bias[o]) inside the output. */
static void unpack_out(const ad_wino *p, const float *q, int64_t nimg, const float *bias,
                       float *y) {
  int64_t qh = 4 * p->th, qw = 4 * p->tw;
  for (int64_t b = 0; b < nimg; b++)
    from_last(q + b * qh * qw * p->op, qw * p->op, p->op, y + b * p->o * p->oh * p->ow, p->o, p->oh,
              p->ow, bias);
}

/* ------------------------------------------- tile transforms (vectorized) */

/* Each transform works on 16 lanes (channels) at once, one vector of
 * GCC's and Clang's vector extension (four SSE registers where the build
 * has no wider ones); lanes never mix. WINO_BODY is compiled once per
 * target: SFX names it, ATTR is its target attribute. Vectors are read and
 * written through memcpy (no alignment assumed) and never passed by value,
 * so the generic build's ABI is not involved. */
#define WINO_LANES 16
typedef float wv __attribute__((vector_size(64)));
#define WV_LD(v, p) memcpy(&(v), (p), sizeof(wv))
#define WV_ST(p, v)                                                                                \
  do {                                                                                             \
    wv wv_tmp_ = (v);                                                                              \
    memcpy((p), &wv_tmp_, sizeof(wv));                                                             \
  } while (0)
#define WV_ADD(p, v)                                                                               \
  do {                                                                                             \
    wv wv_tmp_;                                                                                    \
    memcpy(&wv_tmp_, (p), sizeof(wv));                                                             \
    wv_tmp_ += (v);                                                                                \
    memcpy((p), &wv_tmp_, sizeof(wv));                                                             \
  } while (0)

#define WINO_BODY(SFX, ATTR)                                                                       \
  /* V[xi, t, c0 + l] = (B^T d B)[xi] for the tile's 6x6 patch at pb (rows                         \
   * rs floats apart, columns cs apart), xi at v + xi xs */                                        \
  ATTR static void in_tile_##SFX(const float *restrict pb, int64_t rs, int64_t cs,                 \
                                 float *restrict v, int64_t xs) {                                  \
    wv t[6][6];                                                                                    \
    for (int r = 0; r < 6; r++) {                                                                  \
      const float *d = pb + r * rs;                                                                \
      wv d0, d1, d2, d3, d4, d5;                                                                   \
      WV_LD(d0, d);                                                                                \
      WV_LD(d1, d + cs);                                                                           \
      WV_LD(d2, d + 2 * cs);                                                                       \
      WV_LD(d3, d + 3 * cs);                                                                       \
      WV_LD(d4, d + 4 * cs);                                                                       \
      WV_LD(d5, d + 5 * cs);                                                                       \
      t[r][0] = 4.0f * d0 - 5.0f * d2 + d4;                                                        \
      t[r][1] = (d3 + d4) - 4.0f * (d1 + d2);                                                      \
      t[r][2] = (d4 - d3) + 4.0f * (d1 - d2);                                                      \
      t[r][3] = (d4 - d2) + 2.0f * (d3 - d1);                                                      \
      t[r][4] = (d4 - d2) - 2.0f * (d3 - d1);                                                      \
      t[r][5] = 4.0f * d1 - 5.0f * d3 + d5;                                                        \
    }                                                                                              \
    for (int k = 0; k < 6; k++) {                                                                  \
      wv d0 = t[0][k], d1 = t[1][k], d2 = t[2][k], d3 = t[3][k], d4 = t[4][k], d5 = t[5][k];       \
      WV_ST(v + (0 * 6 + k) * xs, 4.0f * d0 - 5.0f * d2 + d4);                                     \
      WV_ST(v + (1 * 6 + k) * xs, (d3 + d4) - 4.0f * (d1 + d2));                                   \
      WV_ST(v + (2 * 6 + k) * xs, (d4 - d3) + 4.0f * (d1 - d2));                                   \
      WV_ST(v + (3 * 6 + k) * xs, (d4 - d2) + 2.0f * (d3 - d1));                                   \
      WV_ST(v + (4 * 6 + k) * xs, (d4 - d2) - 2.0f * (d3 - d1));                                   \
      WV_ST(v + (5 * 6 + k) * xs, 4.0f * d1 - 5.0f * d3 + d5);                                     \
    }                                                                                              \
  }                                                                                                \
  /* dst (4x4, rows rs apart, columns cs apart) = (A^T m A) for m[xi] at                           \
   * m + xi xs */                                                                                  \
  ATTR static void out_tile_##SFX(const float *restrict m, int64_t xs, float *restrict dst,        \
                                  int64_t rs, int64_t cs) {                                        \
    wv t[6][4];                                                                                    \
    for (int r = 0; r < 6; r++) {                                                                  \
      const float *s = m + r * 6 * xs;                                                             \
      wv m0, m1, m2, m3, m4, m5;                                                                   \
      WV_LD(m0, s);                                                                                \
      WV_LD(m1, s + xs);                                                                           \
      WV_LD(m2, s + 2 * xs);                                                                       \
      WV_LD(m3, s + 3 * xs);                                                                       \
      WV_LD(m4, s + 4 * xs);                                                                       \
      WV_LD(m5, s + 5 * xs);                                                                       \
      wv a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;                                       \
      t[r][0] = m0 + a + c;                                                                        \
      t[r][1] = b + 2.0f * d;                                                                      \
      t[r][2] = a + 4.0f * c;                                                                      \
      t[r][3] = b + 8.0f * d + m5;                                                                 \
    }                                                                                              \
    for (int k = 0; k < 4; k++) {                                                                  \
      wv m0 = t[0][k], m1 = t[1][k], m2 = t[2][k], m3 = t[3][k], m4 = t[4][k], m5 = t[5][k];       \
      wv a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;                                       \
      WV_ST(dst + 0 * rs + k * cs, m0 + a + c);                                                    \
      WV_ST(dst + 1 * rs + k * cs, b + 2.0f * d);                                                  \
      WV_ST(dst + 2 * rs + k * cs, a + 4.0f * c);                                                  \
      WV_ST(dst + 3 * rs + k * cs, b + 8.0f * d + m5);                                             \
    }                                                                                              \
  }                                                                                                \
  /* m[xi] at m + xi xs = (A e A^T)[xi] for the 4x4 e at src (rows rs apart,                       \
   * columns cs apart): the adjoint of out_tile */                                                 \
  ATTR static void out_tile_adj_##SFX(const float *restrict src, int64_t rs, int64_t cs,           \
                                      float *restrict m, int64_t xs) {                             \
    wv t[4][6];                                                                                    \
    for (int r = 0; r < 4; r++) {                                                                  \
      const float *e = src + r * rs;                                                               \
      wv e0, e1, e2, e3;                                                                           \
      WV_LD(e0, e);                                                                                \
      WV_LD(e1, e + cs);                                                                           \
      WV_LD(e2, e + 2 * cs);                                                                       \
      WV_LD(e3, e + 3 * cs);                                                                       \
      wv a = e0 + e2, b = e1 + e3, c = e0 + 4.0f * e2, d = 2.0f * e1 + 8.0f * e3;                  \
      t[r][0] = e0;                                                                                \
      t[r][1] = a + b;                                                                             \
      t[r][2] = a - b;                                                                             \
      t[r][3] = c + d;                                                                             \
      t[r][4] = c - d;                                                                             \
      t[r][5] = e3;                                                                                \
    }                                                                                              \
    for (int k = 0; k < 6; k++) {                                                                  \
      wv e0 = t[0][k], e1 = t[1][k], e2 = t[2][k], e3 = t[3][k];                                   \
      wv a = e0 + e2, b = e1 + e3, c = e0 + 4.0f * e2, d = 2.0f * e1 + 8.0f * e3;                  \
      WV_ST(m + (0 * 6 + k) * xs, e0);                                                             \
      WV_ST(m + (1 * 6 + k) * xs, a + b);                                                          \
      WV_ST(m + (2 * 6 + k) * xs, a - b);                                                          \
      WV_ST(m + (3 * 6 + k) * xs, c + d);                                                          \
      WV_ST(m + (4 * 6 + k) * xs, c - d);                                                          \
      WV_ST(m + (5 * 6 + k) * xs, e3);                                                             \
    }                                                                                              \
  }                                                                                                \
  /* patch (6x6 at pb, rows rs apart, columns cs apart) += B g B^T for g[xi]                       \
   * at v + xi xs: the adjoint of in_tile */                                                       \
  ATTR static void in_tile_adj_##SFX(const float *restrict v, int64_t xs, float *restrict pb,      \
                                     int64_t rs, int64_t cs) {                                     \
    wv t[6][6];                                                                                    \
    for (int r = 0; r < 6; r++) {                                                                  \
      const float *s = v + r * 6 * xs;                                                             \
      wv g0, g1, g2, g3, g4, g5;                                                                   \
      WV_LD(g0, s);                                                                                \
      WV_LD(g1, s + xs);                                                                           \
      WV_LD(g2, s + 2 * xs);                                                                       \
      WV_LD(g3, s + 3 * xs);                                                                       \
      WV_LD(g4, s + 4 * xs);                                                                       \
      WV_LD(g5, s + 5 * xs);                                                                       \
      t[r][0] = 4.0f * g0;                                                                         \
      t[r][1] = 4.0f * (g2 - g1) + 2.0f * (g4 - g3) + 4.0f * g5;                                   \
      t[r][2] = -5.0f * g0 - 4.0f * (g1 + g2) - (g3 + g4);                                         \
      t[r][3] = (g1 - g2) + 2.0f * (g3 - g4) - 5.0f * g5;                                          \
      t[r][4] = g0 + (g1 + g2) + (g3 + g4);                                                        \
      t[r][5] = g5;                                                                                \
    }                                                                                              \
    for (int k = 0; k < 6; k++) {                                                                  \
      wv g0 = t[0][k], g1 = t[1][k], g2 = t[2][k], g3 = t[3][k], g4 = t[4][k], g5 = t[5][k];       \
      float *d = pb + k * cs;                                                                      \
      WV_ADD(d + 0 * rs, 4.0f * g0);                                                               \
      WV_ADD(d + 1 * rs, 4.0f * (g2 - g1) + 2.0f * (g4 - g3) + 4.0f * g5);                         \
      WV_ADD(d + 2 * rs, -5.0f * g0 - 4.0f * (g1 + g2) - (g3 + g4));                               \
      WV_ADD(d + 3 * rs, (g1 - g2) + 2.0f * (g3 - g4) - 5.0f * g5);                                \
      WV_ADD(d + 4 * rs, g0 + (g1 + g2) + (g3 + g4));                                              \
      WV_ADD(d + 5 * rs, g5);                                                                      \
    }                                                                                              \
  }                                                                                                \
  /* V from P: every tile of the block, every 16 channels */                                       \
  ATTR static void in_all_##SFX(const ad_wino *p, int64_t nimg, const float *pb, float *v) {       \
    int64_t tb = p->nb * p->t1, rs = p->wp * p->cp, xs = tb * p->cp;                               \
    for (int64_t b = 0; b < nimg; b++)                                                             \
      for (int64_t ti = 0; ti < p->th; ti++)                                                       \
        for (int64_t tj = 0; tj < p->tw; tj++) {                                                   \
          int64_t t = (b * p->th + ti) * p->tw + tj;                                               \
          const float *src = pb + ((b * p->hp + 4 * ti) * p->wp + 4 * tj) * p->cp;                 \
          for (int64_t c0 = 0; c0 < p->cp; c0 += WINO_LANES)                                       \
            in_tile_##SFX(src + c0, rs, p->cp, v + t * p->cp + c0, xs);                            \
        }                                                                                          \
  }                                                                                                \
  /* Q from M */                                                                                   \
  ATTR static void out_all_##SFX(const ad_wino *p, int64_t nimg, const float *m, float *q) {       \
    int64_t tb = p->nb * p->t1, qw = 4 * p->tw, xs = tb * p->op;                                   \
    for (int64_t b = 0; b < nimg; b++)                                                             \
      for (int64_t ti = 0; ti < p->th; ti++)                                                       \
        for (int64_t tj = 0; tj < p->tw; tj++) {                                                   \
          int64_t t = (b * p->th + ti) * p->tw + tj;                                               \
          float *dst = q + ((b * 4 * p->th + 4 * ti) * qw + 4 * tj) * p->op;                       \
          for (int64_t o0 = 0; o0 < p->op; o0 += WINO_LANES)                                       \
            out_tile_##SFX(m + t * p->op + o0, xs, dst + o0, qw * p->op, p->op);                   \
        }                                                                                          \
  }                                                                                                \
  /* M from Q (the output gradient's tiles) */                                                     \
  ATTR static void out_adj_all_##SFX(const ad_wino *p, int64_t nimg, const float *q, float *m) {   \
    int64_t tb = p->nb * p->t1, qw = 4 * p->tw, xs = tb * p->op;                                   \
    for (int64_t b = 0; b < nimg; b++)                                                             \
      for (int64_t ti = 0; ti < p->th; ti++)                                                       \
        for (int64_t tj = 0; tj < p->tw; tj++) {                                                   \
          int64_t t = (b * p->th + ti) * p->tw + tj;                                               \
          const float *src = q + ((b * 4 * p->th + 4 * ti) * qw + 4 * tj) * p->op;                 \
          for (int64_t o0 = 0; o0 < p->op; o0 += WINO_LANES)                                       \
            out_tile_adj_##SFX(src + o0, qw * p->op, p->op, m + t * p->op + o0, xs);               \
        }                                                                                          \
  }                                                                                                \
  /* P (zeroed here) += the patches of V, tiles in order */                                        \
  ATTR static void in_adj_all_##SFX(const ad_wino *p, int64_t nimg, const float *v, float *pb) {   \
    int64_t tb = p->nb * p->t1, rs = p->wp * p->cp, xs = tb * p->cp;                               \
    memset(pb, 0, (size_t)p->p_floats * sizeof *pb);                                               \
    for (int64_t b = 0; b < nimg; b++)                                                             \
      for (int64_t ti = 0; ti < p->th; ti++)                                                       \
        for (int64_t tj = 0; tj < p->tw; tj++) {                                                   \
          int64_t t = (b * p->th + ti) * p->tw + tj;                                               \
          float *dst = pb + ((b * p->hp + 4 * ti) * p->wp + 4 * tj) * p->cp;                       \
          for (int64_t c0 = 0; c0 < p->cp; c0 += WINO_LANES)                                       \
            in_tile_adj_##SFX(v + t * p->cp + c0, xs, dst + c0, rs, p->cp);                        \
        }                                                                                          \
  }

WINO_BODY(gen, )
#ifdef WINO_X86
WINO_BODY(avx512, WINO_AVX512)
#endif

typedef struct wino_fns {
  void (*in_all)(const ad_wino *, int64_t, const float *, float *);
  void (*out_all)(const ad_wino *, int64_t, const float *, float *);
  void (*out_adj_all)(const ad_wino *, int64_t, const float *, float *);
  void (*in_adj_all)(const ad_wino *, int64_t, const float *, float *);
} wino_fns;

static const wino_fns *fns(void) {
  static const wino_fns gen = {in_all_gen, out_all_gen, out_adj_all_gen, in_adj_all_gen};
#ifdef WINO_X86
  static const wino_fns avx512 = {in_all_avx512, out_all_avx512, out_adj_all_avx512,
                                  in_adj_all_avx512};
  if (have_avx512()) return &avx512;
#endif
  return &gen;
}

/* ------------------------------------------------ the 36 small products */

#ifdef WINO_X86

/* C[i, :nv 16] (+)= sum_k A(i, k) B[k, :nv 16] for R rows i: A(i, k) =
 * a[i ars + k acs]; one FMA chain per result, in k's order. */
WINO_AVX512 static inline __attribute__((always_inline)) void
mk_avx512(const int R, const int nv, int64_t k, const float *a, int64_t ars, int64_t acs,
          const float *b, int64_t ldb, float *c, int64_t ldc, bool acc) {
  __m512 s[6][2];
  WINO_UNROLL
  for (int r = 0; r < R; r++) {
    s[r][0] = acc ? _mm512_loadu_ps(c + r * ldc) : _mm512_setzero_ps();
    s[r][1] = acc && nv > 1 ? _mm512_loadu_ps(c + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t kk = 0; kk < k; kk++) {
    __m512 b0 = _mm512_loadu_ps(b + kk * ldb);
    __m512 b1 = nv > 1 ? _mm512_loadu_ps(b + kk * ldb + 16) : b0;
    const float *ak = a + kk * acs;
    WINO_UNROLL
    for (int r = 0; r < R; r++) {
      __m512 av = _mm512_set1_ps(ak[r * ars]);
      s[r][0] = _mm512_fmadd_ps(av, b0, s[r][0]);
      if (nv > 1) s[r][1] = _mm512_fmadd_ps(av, b1, s[r][1]);
    }
  }
  WINO_UNROLL
  for (int r = 0; r < R; r++) {
    _mm512_storeu_ps(c + r * ldc, s[r][0]);
    if (nv > 1) _mm512_storeu_ps(c + r * ldc + 16, s[r][1]);
  }
}

#define WINO_MK_ROWS(R)                                                                            \
  WINO_AVX512 static void mk_avx512_##R(int64_t n, int64_t k, const float *a, int64_t ars,         \
                                        int64_t acs, const float *b, int64_t ldb, float *c,        \
                                        int64_t ldc, bool acc) {                                   \
    int64_t j = 0;                                                                                 \
    for (; j + 32 <= n; j += 32) mk_avx512(R, 2, k, a, ars, acs, b + j, ldb, c + j, ldc, acc);     \
    if (j < n) mk_avx512(R, 1, k, a, ars, acs, b + j, ldb, c + j, ldc, acc);                       \
  }
WINO_MK_ROWS(1)
WINO_MK_ROWS(2)
WINO_MK_ROWS(3)
WINO_MK_ROWS(4)
WINO_MK_ROWS(5)
WINO_MK_ROWS(6)

/* C [m, n] (+)= A B, n a multiple of 16, without packing: A's rows are
 * broadcast from where they lie, B's rows loaded as they are. */
static void wgemm_avx512(int64_t m, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs,
                         const float *b, int64_t ldb, float *c, int64_t ldc, bool acc) {
  static void (*const rows[7])(int64_t, int64_t, const float *, int64_t, int64_t, const float *,
                               int64_t, float *, int64_t, bool) = {
      NULL, mk_avx512_1, mk_avx512_2, mk_avx512_3, mk_avx512_4, mk_avx512_5, mk_avx512_6};
  for (int64_t i = 0; i < m; i += 6) {
    int r = m - i < 6 ? (int)(m - i) : 6;
    rows[r](n, k, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc, acc);
  }
}
#endif

/* ----------------------------------------------------------- the blocks */

/* The slot's four buffers. */
static void bufs(const ad_wino *p, float *s, float **pb, float **v, float **m, float **q) {
  *pb = s;
  *v = *pb + p->p_floats;
  *m = *v + p->v_floats;
  *q = *m + p->m_floats;
}

static int64_t block_images(const ad_wino *p, int64_t blk) {
  int64_t left = p->n - blk * p->nb;
  return left < p->nb ? left : p->nb;
}

void ad_wino_conv_block(const ad_wino *p, int64_t blk, const float *u, const float *x,
                        const float *bias, float *y, float *scratch) {
  const wino_fns *f = fns();
  float *pb, *v, *m, *q;
  bufs(p, scratch, &pb, &v, &m, &q);
  int64_t i0 = blk * p->nb, nimg = block_images(p, blk), tb = p->nb * p->t1, rows = nimg * p->t1;
  pack_image(p, x + i0 * p->c * p->h * p->w, nimg, pb);
  f->in_all(p, nimg, pb, v);
#ifdef WINO_X86
  if (have_avx512()) {
    for (int xi = 0; xi < 36; xi++)
      wgemm_avx512(rows, p->op, p->c, v + xi * tb * p->cp, p->cp, 1, u + xi * p->c * p->op, p->op,
                   m + xi * tb * p->op, p->op, false);
  } else
#endif
  {
    for (int xi = 0; xi < 36; xi++)
      ad_gemm(AD_F32, false, false, rows, p->o, p->c, v + xi * tb * p->cp, p->cp,
              u + xi * p->c * p->op, p->op, 0.0, m + xi * tb * p->op, p->op);
    if (p->op != p->o) /* the pad lanes of M were not written */
      for (int xi = 0; xi < 36; xi++)
        for (int64_t t = 0; t < rows; t++)
          memset(m + (xi * tb + t) * p->op + p->o, 0, (size_t)(p->op - p->o) * sizeof *m);
  }
  f->out_all(p, nimg, m, q);
  unpack_out(p, q, nimg, bias, y + i0 * p->o * p->oh * p->ow);
}

void ad_wino_convt_block(const ad_wino *p, int64_t blk, const float *u, const float *dy,
                         const float *bias, float *dx, float *scratch) {
  const wino_fns *f = fns();
  float *pb, *v, *m, *q;
  bufs(p, scratch, &pb, &v, &m, &q);
  int64_t i0 = blk * p->nb, nimg = block_images(p, blk), tb = p->nb * p->t1, rows = nimg * p->t1;
  pack_out(p, dy + i0 * p->o * p->oh * p->ow, nimg, q);
  f->out_adj_all(p, nimg, q, m);
#ifdef WINO_X86
  if (have_avx512()) {
    const float *ut = u + p->u_floats;
    for (int xi = 0; xi < 36; xi++)
      wgemm_avx512(rows, p->cp, p->o, m + xi * tb * p->op, p->op, 1, ut + xi * p->o * p->cp, p->cp,
                   v + xi * tb * p->cp, p->cp, false);
  } else
#endif
  {
    for (int xi = 0; xi < 36; xi++)
      ad_gemm(AD_F32, false, true, rows, p->c, p->o, m + xi * tb * p->op, p->op,
              u + xi * p->c * p->op, p->op, 0.0, v + xi * tb * p->cp, p->cp);
    if (p->cp != p->c)
      for (int xi = 0; xi < 36; xi++)
        for (int64_t t = 0; t < rows; t++)
          memset(v + (xi * tb + t) * p->cp + p->c, 0, (size_t)(p->cp - p->c) * sizeof *v);
  }
  f->in_adj_all(p, nimg, v, pb);
  unpack_image(p, pb, nimg, bias, dx + i0 * p->c * p->h * p->w);
}

void ad_wino_weight_block(const ad_wino *p, int64_t blk, const float *x, const float *dy,
                          bool first, float *du, float *scratch) {
  const wino_fns *f = fns();
  float *pb, *v, *m, *q;
  bufs(p, scratch, &pb, &v, &m, &q);
  int64_t i0 = blk * p->nb, nimg = block_images(p, blk), tb = p->nb * p->t1, rows = nimg * p->t1;
  pack_image(p, x + i0 * p->c * p->h * p->w, nimg, pb);
  f->in_all(p, nimg, pb, v);
  pack_out(p, dy + i0 * p->o * p->oh * p->ow, nimg, q);
  f->out_adj_all(p, nimg, q, m);
#ifdef WINO_X86
  if (have_avx512()) {
    for (int xi = 0; xi < 36; xi++)
      wgemm_avx512(p->c, p->op, rows, v + xi * tb * p->cp, 1, p->cp, m + xi * tb * p->op, p->op,
                   du + xi * p->c * p->op, p->op, !first);
    return;
  }
#endif
  for (int xi = 0; xi < 36; xi++)
    ad_gemm(AD_F32, true, false, p->c, p->o, rows, v + xi * tb * p->cp, p->cp, m + xi * tb * p->op,
            p->op, first ? 0.0 : 1.0, du + xi * p->c * p->op, p->op);
}
