/* vexp.h: float32 exp, and on it tanh, sigmoid, log, erf, GELU and its
 * gradient, sin, cos, atan, softplus and pow, and float64 exp, log1p of
 * (0, 1], softplus and tanh on them, without calls or branches,
 * so that loops over rows vectorize (the recurrent cells, op_rnn.c; the
 * softmax family and cross-entropy, op_reduce.c and op_loss.c; the
 * elementwise ops, op_elementwise.c), and the instruction sets those
 * loops are compiled for. Internal to the op layer. */
#ifndef AD_VEXP_H
#define AD_VEXP_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The row loops vectorize only when GCC may evaluate a comparison's both
 * sides (its selects could otherwise raise a floating-point exception);
 * the values are the same. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

/* Row loops (CELL_CLONES) are compiled for AVX-512 and AVX2 with FMA (Haswell's
 * set) besides the baseline (SSE2 on x86-64, 4 floats a vector), the best
 * the CPU has picked when the library loads (GCC's target_clones), as the
 * GEMM's kernels are; the values are the same bits on each (no
 * contraction into FMA; exp_v's explicit fmaf are rounded once
 * everywhere). Not under ThreadSanitizer: the clones' resolver runs while
 * the dynamic loader relocates the library, before TSan's runtime is set
 * up, and its instrumented code crashes there. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__ELF__) &&         \
    !defined(__SANITIZE_THREAD__)
#define CELL_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#define CELL_ROW    static inline __attribute__((always_inline))
#else
#define CELL_CLONES
#define CELL_ROW static inline
#endif

/* exp_v's multiply-adds (FMA_F; FMA_D for the double ones of the functions
 * below): fmaf and fma where the build has FMA or compiles the clones
 * above (whose baseline calls libm for them, so that every clone gives
 * the same bits). Elsewhere (clang without -mfma, which compiles no
 * clones; other targets) FMA_F is the multiply-add in double: a product
 * of two floats is exact there, so the sum is rounded to double and then
 * to float, fmaf's value except where the double sum lands on a float
 * rounding tie (a few cases in 2^29). The rounding error of a product
 * (zl = FMA_F(a, b, -a b), which erf and GELU take for the tails) is then
 * exact, as with fmaf; with a separate multiply and add it was 0, and
 * GELU 64 ulp off at x = -11.3. FMA_D there is a multiply and an add (the
 * functions that use it keep their accuracy without the fused rounding:
 * tests/test_ops_values.c). */
#if defined(__FMA__) || defined(__aarch64__) ||                                                    \
    (defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__ELF__))
#define FMA_F(a, b, c)   fmaf(a, b, c)
#define FMA_D(a, b, c)   fma(a, b, c)
#define VEXP_FMA_D_FUSED 1 /* FMA_D rounds once: exact products of trig_d, atan_d, log_d */
#else
#define FMA_F(a, b, c) ((float)((double)(a) * (double)(b) + (double)(c)))
#define FMA_D(a, b, c) ((a) * (b) + (c))
#endif

/* The functions the row loops call are always inlined by GCC, and so
 * must be the callers' own helpers between a clone and them (sigmoid_v,
 * bce_v, ...). Left to its size limits, GCC once compiled tanh_v out of
 * line, for the baseline only: the recurrent cells' AVX-512 and AVX2
 * clones then called it per element, a scalar loop with a libm fmaf per
 * multiply-add (the LSTM of examples/adding took 18 s of CPU instead of
 * 2.8); log_v and sigmoid_v were called so from the AVX2 clones of log
 * and sigmoid, and log_v inlined into bce_v pushed that out of line
 * instead (test vexp_inline). */
#if defined(__GNUC__) && !defined(__clang__)
#define VEXP_INLINE __attribute__((always_inline))
#else
#define VEXP_INLINE
#endif
static inline float exp_v(float xin) VEXP_INLINE;
static inline float exp_v_lo(float xin, float lo) VEXP_INLINE;
static inline float sig_v(float x) VEXP_INLINE;
static inline float tanh_v(float x) VEXP_INLINE;
static inline float log_v(float x) VEXP_INLINE;

/* exp_v: exp as 2^n e^r with |r| <= ln2/2 and a degree-6 polynomial
 * (about 1 ulp; inputs clamped to [-87.3, 88.3], NaN kept). The reduction
 * and the polynomial are fused multiply-adds (FMA_F: fmaf, rounded once,
 * so the same bits on every clone, inline where the CPU has FMA, a libm
 * call on x86-64 CPUs older than Haswell); the rest of a row loop is not
 * contracted. */
/* exp_v's clamp: outside it the result is not e^x (below, results near
 * FLT_MIN and under: subnormals and 0; above, up to overflow), and the
 * callers that need those take libm's expf there. */
#define EXP_V_MIN (-87.3f)
#define EXP_V_MAX 88.3f
/* Where a caller of exp_v takes libm's expf instead: outside the clamp,
 * and NaN. */
#define EXP_V_OUT(x) (!((x) >= EXP_V_MIN && (x) <= EXP_V_MAX))
/* exp_v's body for xin, with lo added to the reduced argument (LO_ADD:
 * nothing, or + lo). */
#define EXP_V_BODY(xin, LO_ADD)                                                                    \
  /* a NaN is carried through as 0 (converting it to an integer below is                           \
   * undefined) and returned as it came */                                                         \
  float x = xin == xin ? xin : 0.0f;                                                               \
  x = x < EXP_V_MIN ? EXP_V_MIN : x;                                                               \
  x = x > EXP_V_MAX ? EXP_V_MAX : x;                                                               \
  float n = FMA_F(x, 1.44269504f, 12582912.0f) - 12582912.0f; /* round to nearest */               \
  float r = FMA_F(n, -0.693359375f, x);                                                            \
  r = FMA_F(n, 2.12194440e-4f, r) LO_ADD;                                                          \
  float p = 1.9875691500e-4f;                                                                      \
  p = FMA_F(p, r, 1.3981999507e-3f);                                                               \
  p = FMA_F(p, r, 8.3334519073e-3f);                                                               \
  p = FMA_F(p, r, 4.1665795894e-2f);                                                               \
  p = FMA_F(p, r, 1.6666665459e-1f);                                                               \
  p = FMA_F(p, r, 5.0000001201e-1f);                                                               \
  p = FMA_F(p * r, r, r) + 1.0f;                                                                   \
  int32_t bits = ((int32_t)n + 127) * (1 << 23); /* n in [-126, 127] */                            \
  float scale;                                                                                     \
  memcpy(&scale, &bits, sizeof scale);                                                             \
  return xin == xin ? p * scale : xin;
static inline float exp_v(float xin) { EXP_V_BODY(xin, ) }
/* exp_v(x + lo) for lo the rounding error of x as a difference (|lo| <=
 * 2^-24 |x|, and x not below the clamp): lo joins the reduced argument,
 * so e^(x + lo) is within exp_v's error, not off by lo relative (a
 * softmax's x - max, softmax_exp.h). */
static inline float exp_v_lo(float xin, float lo) { EXP_V_BODY(xin, +lo) }

/* float64 exp without calls or branches, so that the float64 rows
 * vectorize as the float32 ones do (libm's exp is a call per element):
 * x = n ln2 + r with n = round(x / ln2) and |r| <= ln2/2 (ln2 in two
 * parts: EXPD_LN2_HI has 32 significant bits, so n EXPD_LN2_HI is exact
 * for |n| < 2^21 and so is x minus it), e^r = 1 + (r + r^2 P(r)) with P
 * the Taylor series of (e^r - 1 - r) / r^2 to r^11 (the terms left out
 * are below 5e-18), and 2^n as 2^n1 2^n2 with n1 = round(n/2), each a
 * normal double built from the bits of n: the product is exact but where
 * the result is subnormal (one rounding there) or overflows. x is clamped
 * to [-746, 710], past which e^x is 0 or infinite either way. 1 + r is
 * summed with its rounding error carried into the small part, so that
 * the last addition is the one rounding of note. Against expl on 23
 * million random inputs (the whole range, [-1, 1], subnormal results,
 * the overflow's edge): at most 0.68 ulp where the result is normal, 0.78
 * where it is subnormal (rounded twice), with fused multiply-adds (FMA_D:
 * the same bits on every clone); 0.68 and 0.76 with a separate multiply and
 * add (FMA_D elsewhere); 1.4% not correctly rounded (glibc's exp: 0.51
 * ulp). tests/test_ops_values.c checks 1 ulp. e^+-0 = 1, e^-inf = 0,
 * e^inf = inf, the overflow to inf from 709.782712893384 on and the
 * underflow to 0 below -745.1332 as libm's; NaN comes back as it came. */
/* The Taylor terms of e^r from r^2 / 2! on, divided by r^2: 1/2 + r/3! +
 * ... + r^11/13!, by Horner's rule with explicit multiply-adds (exp_d's
 * and pow's polynomial, the same operations in both). */
static inline double exp_taylor_d(double r) VEXP_INLINE;
static inline double exp_taylor_d(double r) {
  double p = 1.0 / 6227020800;
  p = FMA_D(p, r, 1.0 / 479001600);
  p = FMA_D(p, r, 1.0 / 39916800);
  p = FMA_D(p, r, 1.0 / 3628800);
  p = FMA_D(p, r, 1.0 / 362880);
  p = FMA_D(p, r, 1.0 / 40320);
  p = FMA_D(p, r, 1.0 / 5040);
  p = FMA_D(p, r, 1.0 / 720);
  p = FMA_D(p, r, 1.0 / 120);
  p = FMA_D(p, r, 1.0 / 24);
  p = FMA_D(p, r, 1.0 / 6);
  return FMA_D(p, r, 0.5);
}

static inline double exp_d(double xin) VEXP_INLINE;
static inline double exp_d(double xin) {
  const double LN2_HI = 0x1.62e42feep-1, LN2_LO = 0x1.a39ef35793c76p-33, SHIFT = 0x1.8p52;
  double x = xin == xin ? xin : 0.0;
  x = x < -746.0 ? -746.0 : x;
  x = x > 710.0 ? 710.0 : x;
  double ns = FMA_D(x, 1.4426950408889634, SHIFT), n = ns - SHIFT; /* round to nearest */
  double rhi = FMA_D(n, -LN2_HI, x), rlo = n * -LN2_LO, r = rhi + rlo;
  double p = exp_taylor_d(r);
  /* 1 + rhi + (rlo + r^2 p), the first sum's rounding error (e1, exact:
   * |rhi| < 1) added to the small part: one rounding of note, the last */
  double s0 = 1.0 + rhi, e1 = (1.0 - s0) + rhi;
  double q = s0 + (e1 + FMA_D(r * r, p, rlo));
  /* n1 and n2 = n - n1 in [-539, 513], as exponent bits from the shifted
   * sums' (no conversion to an integer, which AVX2 cannot vectorize for
   * 64 bits) */
  double n1s = n * 0.5 + SHIFT, n1 = n1s - SHIFT, n2s = (n - n1) + SHIFT;
  uint64_t b1, b2;
  memcpy(&b1, &n1s, sizeof b1);
  memcpy(&b2, &n2s, sizeof b2);
  b1 = (b1 - UINT64_C(0x4338000000000000) + 1023) << 52;
  b2 = (b2 - UINT64_C(0x4338000000000000) + 1023) << 52;
  double s1, s2;
  memcpy(&s1, &b1, sizeof s1);
  memcpy(&s2, &b2, sizeof s2);
  return xin == xin ? q * s1 * s2 : xin;
}

/* float64 log1p(e) for e in [0, 1] (softplus's, e = e^-|x|; NaN stays
 * NaN) without calls or branches: 2 atanh(s) with s = e / (2 + e) <= 1/3,
 * s carried to about twice double's precision (s + sl: 2 + e's rounding
 * error by the exact sum, the quotient's by FMA), atanh s = s + s^3 P(s^2)
 * with P the series 1/3 + z/5 + ... + z^15/33 (z = s^2 <= 1/9: the terms
 * left out are below 2e-18 relative); e itself below 2^-60. Against
 * log1pl on 10 million random e: at most 0.68 ulp (1.09 where FMA_D is a
 * multiply and an add). */
/* The atanh series' last Horner steps, from its z^10/23 term on: p (the
 * higher terms folded so far, the last of them 1/23) times z plus 1/21,
 * ..., plus 1/3 (log1p_e_d's and log_d's: the same operations in both). */
static inline double atanh_low_d(double p, double z) VEXP_INLINE;
static inline double atanh_low_d(double p, double z) {
  p = FMA_D(p, z, 1.0 / 21);
  p = FMA_D(p, z, 1.0 / 19);
  p = FMA_D(p, z, 1.0 / 17);
  p = FMA_D(p, z, 1.0 / 15);
  p = FMA_D(p, z, 1.0 / 13);
  p = FMA_D(p, z, 1.0 / 11);
  p = FMA_D(p, z, 1.0 / 9);
  p = FMA_D(p, z, 1.0 / 7);
  p = FMA_D(p, z, 1.0 / 5);
  return FMA_D(p, z, 1.0 / 3);
}

static inline double log1p_e_d(double e) VEXP_INLINE;
static inline double log1p_e_d(double e) {
  double d = 2.0 + e, dl = (2.0 - d) + e; /* d + dl = 2 + e exactly */
  double s = e / d, sl = (FMA_D(-s, d, e) - s * dl) / d, z = s * s;
  double p = 1.0 / 33;
  p = FMA_D(p, z, 1.0 / 31);
  p = FMA_D(p, z, 1.0 / 29);
  p = FMA_D(p, z, 1.0 / 27);
  p = FMA_D(p, z, 1.0 / 25);
  p = atanh_low_d(FMA_D(p, z, 1.0 / 23), z);
  double l = 2.0 * (s + FMA_D(s * z, p, sl));
  return e < 0x1p-60 ? e : l; /* e itself, rounded once, also where e / 2 is subnormal */
}

/* float64 softplus, max(x, 0) + log1p(e^-|x|), on exp_d and log1p_e_d:
 * exp_d's error passes on where the result is about e^x (x below -1 or
 * so). Against log1pl(expl(x)) on 5 million random x of [-746, 40]: at
 * most 1.46 ulp (libm's log1p(exp(-|x|)) on the same: 1.51). */
static inline double softplus_d(double x) VEXP_INLINE;
static inline double softplus_d(double x) { return (x > 0 ? x : 0.0) + log1p_e_d(exp_d(-fabs(x))); }

/* float64 tanh without calls or branches, on exp_d: for |x| >= 0.55,
 * 1 - q with q = 2e / (1 + e), e = e^-2|x|, the quotient corrected for 1
 * + e's rounding error (exact by the two-sum: |e| < 1); below, where 1 -
 * q would cancel, its Taylor series to x^39 (coefficients rounded from
 * the exact ones; the terms left out are below 6e-19 relative at 0.55).
 * Against tanhl on 6 million points of [-20, 20] and [-1.5, 1.5]: at most
 * 1.23 ulp, with FMA_D fused or not (glibc's tanh on the same: 2.15).
 * tanh(+-inf) = +-1, tanh(-0) = -0, NaN stays NaN. */
static inline double tanh_d(double x) VEXP_INLINE;
static inline double tanh_d(double x) {
  double a = fabs(x), z = x * x;
  double p = -2.859136662305254e-08;
  p = FMA_D(p, z, 7.054636946400968e-08);
  p = FMA_D(p, z, -1.7406618963571648e-07);
  p = FMA_D(p, z, 4.294911078273806e-07);
  p = FMA_D(p, z, -1.0597268320104654e-06);
  p = FMA_D(p, z, 2.6147711512907546e-06);
  p = FMA_D(p, z, -6.451689215655431e-06);
  p = FMA_D(p, z, 1.5918905069328964e-05);
  p = FMA_D(p, z, -3.927832388331683e-05);
  p = FMA_D(p, z, 9.691537956929451e-05);
  p = FMA_D(p, z, -0.00023912911424355248);
  p = FMA_D(p, z, 0.000590027440945586);
  p = FMA_D(p, z, -0.0014558343870513183);
  p = FMA_D(p, z, 0.003592128036572481);
  p = FMA_D(p, z, -0.008863235529902197);
  p = FMA_D(p, z, 0.021869488536155203);
  p = FMA_D(p, z, -0.05396825396825397);
  p = FMA_D(p, z, 0.13333333333333333);
  p = FMA_D(p, z, -0.3333333333333333);
  double small = FMA_D(a * z, p, a);
  double e = exp_d(-2.0 * a), d = 1.0 + e, dl = (1.0 - d) + e, q = 2.0 * e / d;
  double big = 1.0 - FMA_D(-q, dl / d, q);
  return copysign(a < 0.55 ? small : big, x);
}

/* float64 sigmoid, 1 / (1 + e^-x), on exp_d, stable on both sides and
 * without calls or branches: e = e^-|x| in [0, 1], q = num / d with num 1
 * (x >= 0) or e and d = 1 + e, then q corrected for d's rounding error
 * (dl, exact by the two-sum: e <= 1) and the quotient's (num - q d, exact
 * with a fused multiply-add), divided by d as a product with 1 / d, which
 * is q (x >= 0) or 1 - q (the correction is below 2^-52 q, so that
 * stand-in's error does not show). Against 1 / (1 + expl(-x)) on 4
 * million random x of [-40, 40]: at most 1.43 ulp (1.97 where FMA_D is a
 * multiply and an add); the one quotient alone reached 2.37 at x =
 * -5.5445476432251866, where 1 + e's rounding, 2^-53 relative, is two ulp
 * of a result just below a power of 2 (PyTorch 1.13's sigmoid: 2.42).
 * The sigmoid op's, and the recurrent cells' and bce-with-logits' through
 * it, so that fused and composed forms agree. sigmoid(+-0) = 0.5,
 * sigmoid(inf) = 1, sigmoid(-inf) = 0, NaN stays NaN. */
static inline double sigmoid_d(double x) VEXP_INLINE;
static inline double sigmoid_d(double x) {
  double e = exp_d(-fabs(x)), d = 1.0 + e, dl = (1.0 - d) + e, num = x >= 0 ? 1.0 : e;
  double q = num / d, r = x >= 0 ? q : 1.0 - q;
  return FMA_D(FMA_D(-q, d, num) - q * dl, r, q);
}

/* float32 sigmoid and tanh without calls or branches, on exp_v, so that
 * a row loop vectorizes (the fused recurrent cells, op_rnn.c; the tanh
 * op, op_elementwise.c). tanh(|x|) is 1 - 2e / (1 + e) with e = e^-2|x|
 * for |x| >= 0.625 (e's error enters scaled by 2e / (1 + e) < 0.45), and
 * its Taylor series to x^17 below, where that would cancel (the terms
 * left out are 5e-8 relative at 0.625, under half an ulp). Against tanh in double on
 * every third float: at most 1.46 ulp, 0.13% of them not correctly
 * rounded (glibc's tanhf: 2.16 ulp); tanh_v(+-inf) = +-1, NaN stays NaN.
 * sig_v(x) below -EXP_V_MAX is 0, as 1 / (1 + expf(-x)) is (PyTorch's
 * float sigmoid) once expf overflows at -88.72; between the two it is a
 * subnormal there, 0 here (flushed anyway under ad_set_flush_denormal).
 * Not exp_v's clamp, 1.2e-38: a saturated gate times an infinite state
 * would be inf, not NaN, and times 1e38 about 1, not about 0. */
static inline float sig_v(float x) {
  float s = 1.0f / (1.0f + exp_v(-x));
  return x < -EXP_V_MAX ? 0.0f : s;
}
static inline float tanh_v(float x) {
  float a = fabsf(x), x2 = x * x;
  float e = exp_v(-2.0f * a);
  float big = 1.0f - 2.0f * e / (1.0f + e);
  float q = FMA_F(x2, 6404582.0f / 10854718875.0f, -929569.0f / 638512875.0f);
  q = FMA_F(q, x2, 21844.0f / 6081075.0f);
  q = FMA_F(q, x2, -1382.0f / 155925.0f);
  q = FMA_F(q, x2, 62.0f / 2835.0f);
  q = FMA_F(q, x2, -17.0f / 315.0f);
  q = FMA_F(q, x2, 2.0f / 15.0f);
  q = FMA_F(q, x2, -1.0f / 3.0f);
  float small = FMA_F(a * x2, q, a);
  return copysignf(a < 0.625f ? small : big, x);
}

/* float32 natural log of a positive normal finite x without calls or
 * branches: x = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact),
 * s = f / (2 + f), log(1 + f) = 2 atanh(s) = f - (f^2/2 - s (f^2/2 +
 * R(s^2))) with R the series 2z/3 + 2z^2/5 + 2z^3/7 + 2z^4/9 (z = s^2 <=
 * 0.0295: the next term is below 1e-8 of R), plus e ln 2 in two parts
 * (e * 0.693359375 is exact). Against log in double on every positive
 * normal float: at most 0.92 ulp, 0.58% not correctly rounded. Zero,
 * subnormals, negatives, infinities and NaN give garbage (no trap, no
 * undefined behaviour): the caller replaces them with libm's. */
#define LOG_V_OUT(x) (!((x) >= 0x1p-126f && (x) <= 0x1.fffffep127f)) /* libm's logf there */
/* x = 2^*e m with m in [sqrt(1/2), sqrt(2)), for a positive normal x (log_v,
 * pow_v), from the bits alone. In unsigned arithmetic: the loops run this
 * on every x, negative ones too (libm then replaces them), whose bits
 * overflow a signed difference. */
static inline float split_sqrt2(float x, int32_t *e) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  *e = (int32_t)(bits - 0x3f3504f3u) >> 23;
  uint32_t mb = bits - ((uint32_t)*e << 23);
  float m;
  memcpy(&m, &mb, sizeof m);
  return m;
}

static inline float log_v(float x) {
  int32_t e;
  float f = split_sqrt2(x, &e) - 1.0f;
  float s = f / (2.0f + f), z = s * s;
  float r = FMA_F(z, 2.0f / 9, 2.0f / 7);
  r = FMA_F(r, z, 2.0f / 5);
  r = FMA_F(r, z, 2.0f / 3);
  r *= z;
  float hf = 0.5f * f * f;
  float lp = f - (hf - s * (hf + r));
  float fe = (float)e;
  return FMA_F(fe, 0.693359375f, FMA_F(fe, -2.12194440e-4f, lp));
}

/* The two halves of float32 erf and GELU, without calls or branches, for
 * a = |x| (or |x| / sqrt 2) with a^2 = z + zl (z rounded, zl its rounding
 * error, exact from an FMA: exp(-a^2) then loses no accuracy to the
 * square, 80 ulp at a = 9 otherwise). *s is erf(a) for a < 0.9: a + a q,
 * q the Taylor series of 2/sqrt(pi) erf(a)/a - 1 in z to z^11 (the next
 * term is below 1e-10). *b is erfc(a) for a >= 0.75: exp(-z) (1 - zl)
 * g(a), g = erfc(a) e^(a^2) fitted by least squares in double on
 * [0.75, 2] (in a - 1.375), [2, 4] (in 1/a - 1/3) and [4, 9.5] (a g(a) in
 * 1/a^2), within 5e-8 relative with the coefficients rounded to float.
 * 1/a^2 is (1/a)^2, one division fewer than 1/z: it differs by a few ulp,
 * which the last polynomial scales by 0.3/16 at most (no worst case of
 * erf_v, gelu_v or gelu_grad_v moved: every float scanned). Past a =
 * 9.34 exp_v clamps: the callers take libm there. */
/* erf_parts's *s (z: a^2 rounded) */
CELL_ROW float erf_series_v(float a, float z) {
  /* 2/sqrt(pi) (-1)^k / ((2k + 1) k!), k = 11 down to 1, then 2/sqrt(pi) - 1;
   * written out, not looped over an array, so that a row loop vectorizes */
  const float k2 = 1.1283791671e+00f;
  float q = FMA_F(-k2 / (23 * 39916800.0f), z, k2 / (21 * 3628800.0f));
  q = FMA_F(q, z, -k2 / (19 * 362880.0f));
  q = FMA_F(q, z, k2 / (17 * 40320.0f));
  q = FMA_F(q, z, -k2 / (15 * 5040.0f));
  q = FMA_F(q, z, k2 / (13 * 720.0f));
  q = FMA_F(q, z, -k2 / (11 * 120.0f));
  q = FMA_F(q, z, k2 / (9 * 24.0f));
  q = FMA_F(q, z, -k2 / (7 * 6.0f));
  q = FMA_F(q, z, k2 / (5 * 2.0f));
  q = FMA_F(q, z, -k2 / 3.0f);
  q = FMA_F(q, z, 1.2837916709e-01f);
  return FMA_F(a, q, a);
}

/* erf_parts's *b */
CELL_ROW float erfc_tail_v(float a, float z, float zl) {
  float inv = 1.0f / a, t = a - 1.375f, u = inv - 1.0f / 3.0f, w = inv * inv;
  float pa = FMA_F(-1.207508321e-04f, t, 3.599857737e-04f);
  pa = FMA_F(pa, t, -9.270955343e-04f);
  pa = FMA_F(pa, t, 2.563546412e-03f);
  pa = FMA_F(pa, t, -6.805464625e-03f);
  pa = FMA_F(pa, t, 1.708677784e-02f);
  pa = FMA_F(pa, t, -4.050331190e-02f);
  pa = FMA_F(pa, t, 8.986203372e-02f);
  pa = FMA_F(pa, t, -1.843154728e-01f);
  pa = FMA_F(pa, t, 3.432959020e-01f);
  float pb = FMA_F(1.093848497e-01f, u, -2.534469822e-03f);
  pb = FMA_F(pb, u, -1.339539289e-01f);
  pb = FMA_F(pb, u, 1.614211202e-01f);
  pb = FMA_F(pb, u, -5.014946312e-02f);
  pb = FMA_F(pb, u, -1.814167798e-01f);
  pb = FMA_F(pb, u, 4.893503487e-01f);
  pb = FMA_F(pb, u, 1.790011525e-01f);
  float pc = FMA_F(-6.290616035e+00f, w, 3.009023905e+00f);
  pc = FMA_F(pc, w, -1.031431079e+00f);
  pc = FMA_F(pc, w, 4.225851893e-01f);
  pc = FMA_F(pc, w, -2.820888460e-01f);
  pc = FMA_F(pc, w, 5.641895533e-01f);
  float g = a < 2.0f ? pa : a < 4.0f ? pb : pc * inv; /* selects, no branch: it vectorizes */
  return exp_v(-z) * (1.0f - zl) * g;
}

CELL_ROW void erf_parts(float a, float z, float zl, float *s, float *b) {
  *s = erf_series_v(a, z);
  *b = erfc_tail_v(a, z, zl);
}

/* float32 erf for |x| <= 9 (the caller takes libm beyond, and for NaN):
 * against erf in double on every third float below 5 in magnitude, at
 * most 1.07 ulp (glibc's erff: 0.97). */
CELL_ROW float erf_v(float x) {
  float a = fabsf(x), z = a * a, zl = FMA_F(a, a, -z), s, b;
  erf_parts(a, z, zl, &s, &b);
  return copysignf(a < 0.9f ? s : 1.0f - b, x);
}

/* float32 GELU, x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, for |x| <= 13 (the
 * caller takes libm beyond, and for NaN). Below 0 with |x| / sqrt 2 >=
 * 0.9, 1 + erf is erfc(|x| / sqrt 2) itself, computed, not 1 minus a
 * number near 1: the negative tail keeps its relative accuracy (the form
 * 1 + erff loses all of it by x = -6). The square comes from x (x^2 / 2,
 * its error by FMA), not from the rounded x / sqrt 2. Against the tail
 * form in double on every float from -13 to -1.27: at most 5.7 ulp (at
 * -11.93); above, 4.44 (at -1.268, where 1 - erf cancels, as it did
 * before). */
/* GELU's two halves: near 0 (GELU_NEAR: |x| / sqrt 2 < 0.9) the series of
 * erf, beyond it the erfc tail. gelu_v computes both and selects (a loop of
 * it vectorizes without branches); op_elementwise.c's gelu also runs each
 * half alone over the elements that need it, with the same bits. */
#define GELU_NEAR(x) (fabsf(x) * 0.70710677f < 0.9f)
CELL_ROW float gelu_near_v(float x) {
  float h = 0.5f * x, z = h * x, a = fabsf(x) * 0.70710677f, s = erf_series_v(a, z);
  return h * (x >= 0 ? 1.0f + s : 1.0f - s);
}
CELL_ROW float gelu_far_v(float x) {
  float h = 0.5f * x, z = h * x, zl = FMA_F(h, x, -z), a = fabsf(x) * 0.70710677f;
  float b = erfc_tail_v(a, z, zl);
  return h * (x >= 0 ? 2.0f - b : b);
}
CELL_ROW float gelu_v(float x) { return GELU_NEAR(x) ? gelu_near_v(x) : gelu_far_v(x); }

/* float32 GELU'(x) = Phi(x) + x phi(x) for |x| <= 13 (the caller takes
 * libm beyond, and for NaN): Phi as in gelu_v (its negative tail as erfc),
 * phi(x) = e^(-x^2/2) / sqrt(2 pi) from the same exact square (z + zl).
 * Within 4.5 ulp of the larger of the two terms; the worst, 4.33 at x =
 * -1.144, is where 1 - erf cancels in Phi and the terms partly cancel. */
/* Its two halves, as GELU's: near 0 (GELU_NEAR) Phi from the series of
 * erf, beyond it from the erfc tail; gelu_grad_v computes both and
 * selects, and op_elementwise.c's gelu_backward also runs each alone over
 * the elements that need it, with the same bits. */
CELL_ROW float gelu_grad_near_v(float x) {
  float h = 0.5f * x, z = h * x, zl = FMA_F(h, x, -z), a = fabsf(x) * 0.70710677f;
  float s = erf_series_v(a, z), v = x >= 0 ? 1.0f + s : 1.0f - s;
  float phi = exp_v(-z) * (1.0f - zl) * 0.39894228f;
  return FMA_F(x, phi, 0.5f * v);
}
CELL_ROW float gelu_grad_far_v(float x) {
  float h = 0.5f * x, z = h * x, zl = FMA_F(h, x, -z), a = fabsf(x) * 0.70710677f;
  float b = erfc_tail_v(a, z, zl), v = x >= 0 ? 2.0f - b : b;
  float phi = exp_v(-z) * (1.0f - zl) * 0.39894228f;
  return FMA_F(x, phi, 0.5f * v);
}
CELL_ROW float gelu_grad_v(float x) {
  return GELU_NEAR(x) ? gelu_grad_near_v(x) : gelu_grad_far_v(x);
}

/* float32 sin and cos for |x| <= 2^20 (the callers take libm beyond, and
 * for infinities and NaN), in double without calls or branches: x = k
 * pi/2 + r with k an integer (even for sin, odd for cos) and |r| <= pi/2,
 * where k pi/2 is taken off in two parts (PIO2_HI has 32 significant
 * bits, so k PIO2_HI is exact for |k| < 2^21, and so is x - k PIO2_HI
 * where r is small; PIO2_LO carries the next 53 bits), then sin r by its
 * Taylor series to r^17 (the terms left out are below 5e-14) and the sign
 * of sin(k pi/2 + r) = +-sin r, from the low bits of t (no conversion of
 * a float to an integer, which is undefined for NaN). One rounding to
 * float at the end: within 0.5001 ulp of sin and cos in double (every
 * 97th float of [-2^20, 2^20] scanned: 1 in 25 million not correctly
 * rounded; the tests sweep both). */
#define TRIG_V_MAX 0x1p20f
CELL_ROW float trig_v(float xf, int cosine) {
  const double PIO2_HI = 0x1.921fb544p0, PIO2_LO = 0x1.0b4611a626331p-34, SHIFT = 0x1.8p52;
  double x = xf;
  /* m = round(x / pi) for sin, round(x / pi - 1/2) for cos: k = 2m + cosine */
  double t = FMA_D(x, 0.31830988618379067, cosine ? -0.5 : 0.0) + SHIFT, m = t - SHIFT;
  double k = 2.0 * m + cosine;
  double r = FMA_D(k, -PIO2_LO, FMA_D(k, -PIO2_HI, x)), z = r * r;
  uint64_t tb;
  memcpy(&tb, &t, sizeof tb);
  /* sin(2m pi/2 + r) = (-1)^m sin r; cos(x) = sin((2m+1) pi/2 + r) is (-1)^(m+1) sin r */
  int neg = (int)((tb + (uint64_t)cosine) & 1);
  double p = 1.0 / 355687428096000;
  p = FMA_D(p, z, -1.0 / 1307674368000);
  p = FMA_D(p, z, 1.0 / 6227020800);
  p = FMA_D(p, z, -1.0 / 39916800);
  p = FMA_D(p, z, 1.0 / 362880);
  p = FMA_D(p, z, -1.0 / 5040);
  p = FMA_D(p, z, 1.0 / 120);
  p = FMA_D(p, z, -1.0 / 6);
  double v = FMA_D(r * z, p, r);
  return (float)(neg ? -v : v);
}
/* sin(-0) is -0 (the sum r + r^3 p gives +0) */
CELL_ROW float sin_v(float x) { return x == 0 ? x : trig_v(x, 0); }
CELL_ROW float cos_v(float x) { return trig_v(x, 1); }

/* float64 sin and cos for |x| <= 2^20 (TRIG_D_MAX; the callers take
 * libm beyond, and for infinities and NaN) without calls or branches,
 * where FMA_D rounds once (VEXP_FMA_D_FUSED; elsewhere the callers take
 * libm): x = q pi/2 + r with q = round(x 2/pi) and |r| <= pi/4 (a hair
 * more where x 2/pi rounds across a half), r carried as r + rr to about
 * twice double's precision, then sin r or cos r as the quadrant (q's low
 * bits, from t's, with no conversion to an integer) says, with its sign.
 * pi/2 is P1 + P2 + P3 to 2^-163: q P1 is taken off exactly (x and q P1
 * are multiples of 2^-53 where q is not 0 and their difference is below
 * 1, so the fused multiply-add has nothing to round), q P2 as an exact
 * product (ph + pl) with the subtraction's rounding error kept (two-sum:
 * x may lie within 2^-60.5 of q pi/2, where r is mostly bits of pl), and
 * q P3 is below 2^-88. sin r = r + r^3 S(r^2) + rr cos r, cos r = 1 -
 * r^2/2 + r^4 C(r^2) - r rr, with S and C the Taylor series to r^17 and
 * r^18 (the terms left out are below 2e-19 of the result); 1 - r^2/2 is
 * summed with its rounding error (and r^2's) carried into the small part,
 * so that the last addition is the one rounding of note. Against sinl,
 * cosl and sinq, cosq (200 million inputs aimed at the worst: |r| near
 * pi/4, x near multiples of pi/2): within 0.765 ulp
 * (tests/test_ops_values.c bounds it at 0.78). In the baseline clone each
 * FMA_D is a call of libm's fma (exp_d's trade): on an x86-64 CPU without
 * FMA this form is far slower than libm's sin. */
#define TRIG_D_MAX 0x1p20
static inline double trig_d(double x, int cosine) VEXP_INLINE;
static inline double trig_d(double x, int cosine) {
  const double P1 = 0x1.921fb54442d18p+0, P2 = 0x1.1a62633145c07p-54, P3 = -0x1.f1976b7ed8fbcp-110,
               SHIFT = 0x1.8p52;
  double t = FMA_D(x, 0x1.45f306dc9c883p-1, SHIFT), q = t - SHIFT;
  double t1 = FMA_D(-q, P1, x);
  double ph = q * P2, pl = FMA_D(q, P2, -ph);
  double rh = t1 - ph, bv = rh - t1, e = (t1 - (rh - bv)) - (ph + bv); /* t1 - ph = rh + e */
  double rl = (e - pl) - q * P3;
  double r = rh + rl, rr = rl - (r - rh), z = r * r, zl = FMA_D(r, r, -z);
  double s = 1.0 / 355687428096000; /* 1/17! */
  s = FMA_D(s, z, -1.0 / 1307674368000);
  s = FMA_D(s, z, 1.0 / 6227020800);
  s = FMA_D(s, z, -1.0 / 39916800);
  s = FMA_D(s, z, 1.0 / 362880);
  s = FMA_D(s, z, -1.0 / 5040);
  s = FMA_D(s, z, 1.0 / 120);
  s = FMA_D(s, z, -1.0 / 6);
  double c = -1.0 / 6402373705728000; /* -1/18! */
  c = FMA_D(c, z, 1.0 / 20922789888000);
  c = FMA_D(c, z, -1.0 / 87178291200);
  c = FMA_D(c, z, 1.0 / 479001600);
  c = FMA_D(c, z, -1.0 / 3628800);
  c = FMA_D(c, z, 1.0 / 40320);
  c = FMA_D(c, z, -1.0 / 720);
  c = FMA_D(c, z, 1.0 / 24);
  double vs = r + FMA_D(r * z, s, rr - 0.5 * z * rr);
  double hz = 0.5 * z, w = 1.0 - hz;
  double vc = w + (((1.0 - w) - hz) + (FMA_D(z * z, c, -0.5 * zl) - r * rr));
  uint64_t tb;
  memcpy(&tb, &t, sizeof tb);
  /* the quadrant of sin(x) (cos(x) = sin(x + pi/2)): sin r, cos r, -sin r, -cos r */
  uint64_t n = tb + (uint64_t)cosine;
  double v = (n & 1) ? vc : vs;
  return (n & 2) ? -v : v;
}
/* sin(-0) is -0 (the sum r + r^3 S gives +0) */
static inline double sin_d(double x) VEXP_INLINE;
static inline double sin_d(double x) { return x == 0 ? x : trig_d(x, 0); }
static inline double cos_d(double x) VEXP_INLINE;
static inline double cos_d(double x) { return trig_d(x, 1); }

/* float32 atan without calls or branches, in double: a = |x| is taken to
 * u in [-tan(pi/8), tan(pi/8)] by one quotient, u = a (a <= tan(pi/8)),
 * (a - 1) / (a + 1) (up to tan(3pi/8); atan a = pi/4 + atan u) or -1 / a
 * (beyond, infinity too; atan a = pi/2 + atan u), then atan u = u + u
 * u^2 P(u^2), P of degree 6 fitted to atan in double on [0, tan^2(pi/8)]
 * (least squares reweighted towards the largest error: within 8e-13
 * relative), and x's sign. One rounding to float: within 0.5001 ulp of
 * atan in double (every 97th float scanned: 4 in 44 million not correctly
 * rounded; the tests sweep it). NaN gives NaN; the caller takes libm's,
 * for its payload. */
CELL_ROW float atan_v(float xf) {
  double a = fabs((double)xf);
  int low = a <= 0.41421356237309503, mid = a <= 2.4142135623730949;
  double num = low ? a : mid ? a - 1.0 : -1.0, den = low ? 1.0 : mid ? a + 1.0 : a;
  double off = low ? 0.0 : mid ? 0.78539816339744831 : 1.5707963267948966;
  double u = num / den, z = u * u;
  double p = FMA_D(-0.037957320580678987, z, 0.069931796413843991);
  p = FMA_D(p, z, -0.089972962143278393);
  p = FMA_D(p, z, 0.11104056014812838);
  p = FMA_D(p, z, -0.14285426635814041);
  p = FMA_D(p, z, 0.19999994406438032);
  p = FMA_D(p, z, -0.3333333329643528);
  return copysignf((float)(off + FMA_D(u * z, p, u)), xf);
}

/* float64 log for positive normal x (LOG_D_OUT: the callers take libm's
 * for 0, subnormals, negative numbers, infinities and NaN, and in builds
 * whose FMA_D is not one rounding, as for trig_d) without calls or
 * branches: x = 2^e m with m in (sqrt(2)/2, sqrt(2)] from the bits (e as
 * a double by the shifted sum, no conversion from an integer), log m = 2
 * atanh(s) with s = (m - 1) / (m + 1) in [-0.172, 0.172] (m - 1 exact, m
 * + 1 by two-sum, the quotient's error by FMA: s + sl), atanh s = s +
 * s^3 P(s^2) with P the series 1/3 + z/5 + ... + z^10/23 (the terms left
 * out are below 2e-20 of the result), and e ln 2 + 2s summed with its
 * rounding error carried (ln 2's high part has 42 bits, so e ln 2_hi is
 * exact). Against logl and logq: within 0.55 ulp (a review's search found
 * 0.549 at x = 0x1.69262ffa1b113p+0, just below sqrt(2), where the series
 * term is 1% of the result; 0.512 at most elsewhere); glibc's 0.52
 * (tests/test_ops_values.c bounds it at 0.555). */
#define LOG_D_OUT(x) (!((x) >= DBL_MIN && (x) <= DBL_MAX))
static inline double log_d(double x) VEXP_INLINE;
static inline double log_d(double x) {
  const double LN2_HI = 0x1.62e42fefa3800p-1, LN2_LO = 0x1.ef35793c76730p-45;
  uint64_t b;
  memcpy(&b, &x, sizeof b);
  uint64_t eb = (b >> 52) | UINT64_C(0x4330000000000000);
  uint64_t mb = (b & UINT64_C(0x000fffffffffffff)) | UINT64_C(0x3ff0000000000000);
  double e, m;
  memcpy(&e, &eb, sizeof e);
  memcpy(&m, &mb, sizeof m);
  e -= 0x1p52 + 1023.0;               /* the exponent, exactly */
  int big = m > 0x1.6a09e667f3bcdp+0; /* sqrt(2) */
  m = big ? 0.5 * m : m;
  e = big ? e + 1.0 : e;
  double f = m - 1.0, d = 1.0 + m, dv = d - 1.0, dl = (1.0 - (d - dv)) + (m - dv);
  double s = f / d, sl = (FMA_D(-s, d, f) - s * dl) / d, z = s * s;
  double p = atanh_low_d(1.0 / 23, z);
  /* e ln2_hi + 2s: |e ln2_hi| >= |2s| unless e is 0, so the fast two-sum */
  double h = e * LN2_HI, s2 = 2.0 * s, sh = h + s2, se = s2 - (sh - h);
  return sh + (se + FMA_D(e, LN2_LO, 2.0 * FMA_D(s * z, p, sl)));
}

/* The float64 log op's value (op_elementwise.c's log kernel), for kernels
 * that must give its bits (the binary cross-entropy's plain backward). */
static inline double log_op_d(double x) VEXP_INLINE;
#ifdef VEXP_FMA_D_FUSED
static inline double log_op_d(double x) { return LOG_D_OUT(x) ? log(x) : log_d(x); }
#else
static inline double log_op_d(double x) { return log(x); }
#endif

/* float64 atan for finite x (the callers take libm's for infinities and
 * NaN, and in builds whose FMA_D is not one rounding, as for trig_d)
 * without calls or branches: a = |x| is taken to u in [-tan(pi/16),
 * tan(pi/16)] by atan a = k pi/8 + atan((a - tan(k pi/8)) / (1 + a
 * tan(k pi/8))) for k = 1, 2, 3 (a up to tan(7pi/16)), or pi/2 +
 * atan(-1/a) beyond; tan(k pi/8), k pi/8 and the quotient carried to
 * about twice double's precision (the sums by two-sum, a tan(k pi/8) as
 * an exact product, the quotient's remainder by FMA), then atan u = u +
 * u^3 P(u^2) with P the Taylor series to u^25 (the terms left out are
 * below 3e-20 of the result), atan(u + ul) = atan u + ul (1 - u^2), and
 * k pi/8 + u summed with its rounding error carried, so that the last
 * addition is the one rounding of note. Against atanl on 40 million
 * inputs (from 2^-1000 to 2^1000, [-6, 6], beside the interval edges)
 * and atanq: within 0.542 ulp (a review's search found 0.5413 at x =
 * 0x1.97696d69692f4p-3, just past tan(pi/16)); glibc's 0.52. The edges are
 * tan((2k-1) pi/16) rounded (the last 2 ulps below). atan(-0) is -0. */
static inline double atan_d(double x) VEXP_INLINE;
static inline double atan_d(double x) {
  const double T1H = 0x1.a827999fcef32p-2, T1L = 0x1.08b2fb1366ea9p-56; /* tan(pi/8) */
  const double T3H = 0x1.3504f333f9de6p+1, T3L = 0x1.21165f626cdd5p-53; /* tan(3pi/8) */
  double a = fabs(x);
  /* past tan((2k-1) pi/16): one select after another (a chain of
   * conditional expressions is not if-converted, and the loop would not
   * vectorize) */
  int k1 = a > 0x1.975f5e0553158p-3, k2 = a > 0x1.561b82ab7f990p-1, k3 = a > 0x1.7f218e25a7461p+0,
      k4 = a > 0x1.41bfee242476fp+2;
  double th = k1 ? T1H : 0.0, tl = k1 ? T1L : 0.0;
  double ch = k1 ? 0x1.921fb54442d18p-2 : 0.0, cl = k1 ? 0x1.1a62633145c07p-56 : 0.0;
  th = k2 ? 1.0 : th, tl = k2 ? 0.0 : tl;
  ch = k2 ? 0x1.921fb54442d18p-1 : ch, cl = k2 ? 0x1.1a62633145c07p-55 : cl;
  th = k3 ? T3H : th, tl = k3 ? T3L : tl;
  ch = k3 ? 0x1.2d97c7f3321d2p+0 : ch, cl = k3 ? 0x1.a79394c9e8a0ap-55 : cl;
  ch = k4 ? 0x1.921fb54442d18p+0 : ch, cl = k4 ? 0x1.1a62633145c07p-54 : cl;
  /* u = (a - t) / (1 + a t), or -1 / a past tan(7pi/16), carried as u + ul */
  double nh = a - th, nb = nh - a, nl = ((a - (nh - nb)) - (th + nb)) - tl;
  double ph = a * th, pl = FMA_D(a, th, -ph);
  double dh = 1.0 + ph, db = dh - 1.0, dl = ((1.0 - (dh - db)) + (ph - db)) + (pl + a * tl);
  nh = k4 ? -1.0 : nh, nl = k4 ? 0.0 : nl, dh = k4 ? a : dh, dl = k4 ? 0.0 : dl;
  double u = nh / dh, ul = ((FMA_D(-u, dh, nh) + nl) - u * dl) / dh, z = u * u;
  double p = 1.0 / 25;
  p = FMA_D(p, z, -1.0 / 23);
  p = FMA_D(p, z, 1.0 / 21);
  p = FMA_D(p, z, -1.0 / 19);
  p = FMA_D(p, z, 1.0 / 17);
  p = FMA_D(p, z, -1.0 / 15);
  p = FMA_D(p, z, 1.0 / 13);
  p = FMA_D(p, z, -1.0 / 11);
  p = FMA_D(p, z, 1.0 / 9);
  p = FMA_D(p, z, -1.0 / 7);
  p = FMA_D(p, z, 1.0 / 5);
  p = FMA_D(p, z, -1.0 / 3);
  double sh = ch + u, sb = sh - ch, se = (ch - (sh - sb)) + (u - sb);
  double v = sh + (se + (cl + FMA_D(u * z, p, ul - ul * z)));
  return copysign(v, x);
}

/* float32 softplus, log(1 + e^x) = max(x, 0) + log1p(e) with e = e^-|x|,
 * without calls or branches, for x >= EXP_V_MIN (the caller takes libm
 * below, where the result is e^x near FLT_MIN and under, and for NaN): e
 * from exp_v (about 1 ulp; above -EXP_V_MIN its clamp adds nothing that a
 * float x + log1p(e) can show), log1p(e) in double as 2 atanh(s) with s =
 * e / (2 + e) <= 1/3 and atanh s = s + s^3 P(s^2), P of degree 5
 * fitted in double on [0, 1/9] (least squares reweighted towards the
 * largest error: within 3e-12 relative), one rounding to float at the
 * end: within 1.5 ulp (exp_v's error, passed on), checked in the tests. */
CELL_ROW float softplus_v(float x) {
  double e = exp_v(-fabsf(x)), s = e / (2.0 + e), z = s * s;
  double p = FMA_D(0.1089659501088369, z, 0.085738055187282558);
  p = FMA_D(p, z, 0.11150763419704887);
  p = FMA_D(p, z, 0.14284197378253483);
  p = FMA_D(p, z, 0.20000026514567243);
  p = FMA_D(p, z, 0.33333333179465285);
  double l1p = 2.0 * FMA_D(s * z, p, s);
  return (float)((x > 0 ? (double)x : 0.0) + l1p);
}

/* float32 a^b for a positive normal finite a and a finite b (the caller
 * takes pow in double for the rest: zero, subnormal, negative, infinite or
 * NaN a, infinite or NaN b), in double without calls or branches: a = 2^e
 * m with m in [sqrt(1/2), sqrt 2) as in log_v, log m = 2 atanh(s), s = (m
 * - 1) / (m + 1), by its series to s^21 (the terms left out are below
 * 1e-17 relative), log a = e ln 2 + log m; t = b log a, clamped to [-110,
 * 100] (e^t is then 0 or infinite as a float either way, and 2^n below
 * stays in double's range); e^t = 2^n e^r, |r| <= ln2 / 2, by its Taylor
 * series to r^13 (below 1e-17 left out); one rounding to float, which also
 * makes the float's overflow and subnormals. t carries about 1e-16 of
 * relative error, so the result is the float64 power rounded but within
 * about 1e-14 of a tie. */
CELL_ROW float pow_v(float a, float b) {
  const double LN2_HI = 0x1.62e42fefa3800p-1, LN2_LO = 0x1.ef35793c7673p-45, SHIFT = 0x1.8p52;
  int32_t e;
  double f = (double)split_sqrt2(a, &e) - 1.0, s = f / (2.0 + f), z = s * s;
  double p = FMA_D(1.0 / 21, z, 1.0 / 19);
  p = FMA_D(p, z, 1.0 / 17);
  p = FMA_D(p, z, 1.0 / 15);
  p = FMA_D(p, z, 1.0 / 13);
  p = FMA_D(p, z, 1.0 / 11);
  p = FMA_D(p, z, 1.0 / 9);
  p = FMA_D(p, z, 1.0 / 7);
  p = FMA_D(p, z, 1.0 / 5);
  p = FMA_D(p, z, 1.0 / 3);
  double lm = 2.0 * FMA_D(s * z, p, s), de = (double)e;
  double la = FMA_D(de, LN2_HI, FMA_D(de, LN2_LO, lm));
  double t = (double)b * la;
  t = t == t ? t : 0.0; /* NaN (a lane the caller replaces): no undefined conversion below */
  t = t < -110.0 ? -110.0 : t;
  t = t > 100.0 ? 100.0 : t;
  double ns = FMA_D(t, 1.4426950408889634, SHIFT), n = ns - SHIFT;
  double r = FMA_D(n, -LN2_LO, FMA_D(n, -LN2_HI, t));
  double q = exp_taylor_d(r);
  q = FMA_D(q, r, 1.0);
  q = FMA_D(q, r, 1.0);
  /* 2^n from ns's bits (SHIFT's plus n: no conversion to an integer, which
   * AVX-512F and AVX2 cannot vectorize for 64 bits), n in [-159, 145] */
  uint64_t sb;
  memcpy(&sb, &ns, sizeof sb);
  sb = (sb - UINT64_C(0x4338000000000000) + 1023) << 52;
  double scale;
  memcpy(&scale, &sb, sizeof scale);
  return (float)(q * scale);
}

/* 1 / sqrt(x) for float32 without double lanes: y = 1 / sqrtf(x) (two
 * IEEE roundings, within 1.5 ulp), then one correction. y^2 = h + l
 * exactly (l = fma(y, y, -h)), the residual e = 1 - x y^2 from two fused
 * multiply-adds (each rounds once a value whose exact form fits in 50
 * bits, so FMA_F's double form gives fmaf's bits), and y + (y / 2) e is
 * x^-1/2 to about 2^-45 relative before its last rounding. The correction
 * is a multiply and an add, not an FMA, so every instruction set gives the
 * same bits. A scan of all 2^32 floats against 1 / sqrt in double (the
 * op's form before): the correctly rounded value but at 128 near-ties (the
 * significands 0x1.fffffc and 0x1.13e07 at each odd power of two in
 * range), 0.5000000 ulp off there; the same bits from AVX-512, AVX2 and
 * SSE2 code and from clang's FMA_F in double. In range (RSQRT_V_OUT
 * false) y is in [2^-32, 2^32] and every term is a normal float, also
 * under flush-to-zero; elsewhere (0, subnormals, huge values, infinities,
 * negatives, NaN) the caller takes 1 / sqrt in double. */
#define RSQRT_V_OUT(x) (!((x) >= 0x1p-64f && (x) <= 0x1p64f))
static inline float rsqrt_v(float x) VEXP_INLINE;
static inline float rsqrt_v(float x) {
  float y = 1.0f / sqrtf(x);
  float h = y * y, l = FMA_F(y, y, -h);
  float e = FMA_F(-x, l, FMA_F(-x, h, 1.0f));
  return y + (y * 0.5f) * e;
}

#endif
