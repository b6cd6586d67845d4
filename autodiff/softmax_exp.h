/* softmax_exp.h: e^(x - m) for float32 x and m, as the softmax family
 * takes it (softmax, log_softmax and logsumexp, op_reduce.c; softmax
 * cross-entropy, op_loss.c, whose plain backward must give the softmax
 * op's bits): exp_v(d) (vexp.h; libm's expf where d < EXP_V_MIN, exp_v's
 * clamp, e^d near FLT_MIN or below) for d = x - m rounded to float, times
 * 1 + lo, lo = (x - m) - d being the rounding error of the difference (in
 * double, or folded into exp_v's reduced argument: exp_v_lo). Without lo,
 * d's rounding (up to 2^-25 |d|) enters e^d as a relative error of the
 * same size: 33 ulp of a softmax for inputs in [-30, 30], which PyTorch
 * accepts. Internal to the op layer. */
#ifndef AD_SOFTMAX_EXP_H
#define AD_SOFTMAX_EXP_H

#include "ops.h"
#include "vexp.h"

#include <stdint.h>

/* The sum over k < n of e^(x[k st] - m) in double, in k's order (the
 * bits of a loop adding exp_d's one by one), the float64 softmax family's
 * and cross-entropy's: the exponentials of 256 at a time into a buffer
 * first, where they vectorize, then added; also stored at y[k yst] when
 * y is not NULL (y may be x only where yst = st). */
CELL_CLONES static double exp_sum_d(const double *x, int64_t st, int64_t n, double m, double *y,
                                    int64_t yst) {
  double buf[256], s = 0;
  for (int64_t k0 = 0; k0 < n; k0 += 256) {
    int64_t c = n - k0 < 256 ? n - k0 : 256;
    const double *xk = x + k0 * st;
    if (st == 1)
      for (int64_t k = 0; k < c; k++) buf[k] = exp_d(xk[k] - m);
    else
      for (int64_t k = 0; k < c; k++) buf[k] = exp_d(xk[k * st] - m);
    for (int64_t k = 0; k < c; k++) s += buf[k];
    if (y)
      for (int64_t k = 0; k < c; k++) y[(k0 + k) * yst] = buf[k];
  }
  return s;
}

/* lo = (x - m) - d for d = x - m rounded (Knuth's two-sum, exact), 0
 * where d is not finite (an infinite x or m, or an overflow: its e is 0
 * or the lane is NaN). */
CELL_ROW float diff_err(float x, float m, float d) {
  float b = d - x;
  float lo = (x - (d - b)) - (m + b);
  return lo == lo ? lo : 0.0f;
}

/* e (1 + lo) in double: e^(x - m) to within exp_v's error. */
#define EXP_FIX(e, lo) ((double)(e) + (double)(e) * (double)(lo))

/* For j < len and d = x[j] - m[j * ms] (ms 1: one maximum a lane, the
 * lanes of a block; ms 0: one lane's run and its maximum): e[j] =
 * exp_v(d), expf(d) below the clamp, and lo[j] = diff_err. */
CELL_ROW void exp_diff(const float *x, const float *m, int ms, int64_t len, float *e, float *lo) {
  int low = 0;
  for (int64_t j = 0; j < len; j++) {
    float d = x[j] - m[j * ms];
    e[j] = exp_v(d);
    lo[j] = diff_err(x[j], m[j * ms], d);
    low |= d < EXP_V_MIN;
  }
  if (low)
    for (int64_t j = 0; j < len; j++)
      if (x[j] - m[j * ms] < EXP_V_MIN) e[j] = expf(x[j] - m[j * ms]);
}

/* The larger of a and b where neither is NaN: a max instruction. */
#define MAX_NO_NAN(a, b) ((a) > (b) ? (a) : (b))

/* The maximum of a row of n elements of type T as exp_row_f32 takes it
 * (into mr, -inf before): element i into partial i mod W (full: n rounded
 * down to a multiple of W), a tail of fewer than W into partial 0, the
 * partials combined as a tree (partial k + w into k for w = W/2, ..., 1:
 * log2 W steps of vector width, not W - 1 dependent ones); fewer than W
 * elements, one by one. Without a NaN any order gives the same value, but
 * for the sign of a zero maximum; with one, the NaN of one partial (the
 * run maximum takes the chain's there). MAX(a,
 * b) is the larger of new value a and partial b: AD_MAX_NAN, or a > b ?
 * a : b where no NaN is present (the same result; a max instruction, not
 * a branch that random values mispredict). Sets bad where a NaN is seen.
 * Also the run maximum's (op_reduce.c), with W elements a vector. */
#define ROW_MAX_WS(T, W, xr, n, full, MAX, mr, bad, SGN)                                           \
  do {                                                                                             \
    if (n < W) {                                                                                   \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T v = SGN xr[i];                                                                           \
        mr = MAX(v, mr);                                                                           \
        bad |= v != v;                                                                             \
      }                                                                                            \
      break;                                                                                       \
    }                                                                                              \
    T pm[W];                                                                                       \
    for (int k = 0; k < W; k++) pm[k] = -INFINITY;                                                 \
    for (int64_t i = 0; i < full; i += W)                                                          \
      for (int k = 0; k < W; k++) {                                                                \
        T v = SGN xr[i + k];                                                                       \
        pm[k] = MAX(v, pm[k]);                                                                     \
        bad |= v != v;                                                                             \
      }                                                                                            \
    for (int64_t i = full; i < n; i++) {                                                           \
      T v = SGN xr[i];                                                                             \
      pm[0] = MAX(v, pm[0]);                                                                       \
      bad |= v != v;                                                                               \
    }                                                                                              \
    AD_UNROLL_FULL for (int w = W / 2; w >= 1; w /= 2) AD_UNROLL_FULL for (int k = 0; k < w; k++)  \
        pm[k] = MAX(pm[k + w], pm[k]);                                                             \
    mr = pm[0];                                                                                    \
  } while (0)
/* ROW_MAX_WS of x itself (SGN +); of -x, each element's sign flipped as
 * it is read (SGN -), is the min op's. */
#define ROW_MAX_W(T, W, xr, n, full, MAX, mr, bad) ROW_MAX_WS(T, W, xr, n, full, MAX, mr, bad, +)
#define ROW_MAX_16(xr, n, full, MAX, mr, bad)      ROW_MAX_W(float, 16, xr, n, full, MAX, mr, bad)

/* One contiguous float32 lane of n elements, vectorized along it: its
 * maximum *mp from 16 partial maxima (a NaN in any is the maximum: the
 * lane is all NaN, as in SOFTMAX_BODY; which zero is the maximum changes
 * no x - m), and the sum of e^(x - m) it returns. Each exponential is
 * exp_v_lo of d = x - m rounded and its rounding error (diff_err
 * above; below exp_v's clamp, expf(d) times 1 + the error), which
 * spares exp_diff's and EXP_FIX's second pass (the block path keeps their
 * product in double); they go into e (n elements; NULL: a buffer here)
 * 256 at a time (one loop without a per-vector branch), then into 16
 * partial double sums, element i into partial i mod 16. The lanes of a
 * block (exp_lanes_f32) sum in order: the results differ in the last
 * bits, within 2 ulp, but for a log_softmax near 0 (-log of a sum near
 * 1), where the two sums' last double bits show, as between any two
 * summation orders. */
CELL_ROW double exp_row_f32(const float *x, float *e, int64_t n, float *mp) {
  float buf[256], m = -INFINITY;
  int bad = 0;
  ROW_MAX_16(x, n, n / 16 * 16, MAX_NO_NAN, m, bad);
  if (bad) { /* a NaN of the row is the maximum */
    m = -INFINITY;
    ROW_MAX_16(x, n, n / 16 * 16, AD_MAX_NAN, m, bad);
  }
  double ps[16] = {0};
  for (int64_t c0 = 0; c0 < n; c0 += 256) {
    int64_t len = n - c0 < 256 ? n - c0 : 256, j = 0;
    const float *xc = x + c0;
    float *ec = e ? e + c0 : buf;
    int low = 0;
    for (j = 0; j < len; j++) {
      float d = xc[j] - m;
      ec[j] = exp_v_lo(d, diff_err(xc[j], m, d));
      low |= d < EXP_V_MIN;
    }
    if (low)
      for (j = 0; j < len; j++) {
        float d = xc[j] - m;
        if (d < EXP_V_MIN) ec[j] = (float)EXP_FIX(expf(d), diff_err(xc[j], m, d));
      }
    for (j = 0; j + 16 <= len; j += 16) /* c0 is a multiple of 16: element c0 + j + k into k */
      for (int k = 0; k < 16; k++) ps[k] += (double)ec[j + k];
    for (int k = 0; j + k < len; k++) ps[k] += (double)ec[j + k];
  }
  double s = 0;
  for (int k = 0; k < 16; k++) s += ps[k];
  *mp = m;
  return s;
}

/* Rows shorter than this go through exp_rows_f32's run of rows. */
#define EXP_ROWS_SHORT 64

/* exp_row_f32 of each of the rows contiguous rows of n elements (x and e
 * [rows, n]; e may not be NULL): their maxima into m[r] and sums into
 * s[r], the same bits as a call per row. Rows shorter than
 * EXP_ROWS_SHORT (a classifier's classes, attention over a short
 * sequence), whose vector loops in exp_row_f32 would barely run, are taken
 * 256 / n at a time as one run of elements with each row's maximum
 * repeated beside them, so that the exponentials vectorize across rows;
 * maxima and sums take exp_row_f32's partials (ROW_MAX_16; the sum of
 * element i in partial i mod 16, in order for n < 16). */
CELL_ROW void exp_rows_f32(const float *x, float *e, int64_t rows, int64_t n, float *m, double *s) {
  if (n >= EXP_ROWS_SHORT || n == 0) {
    for (int64_t r = 0; r < rows; r++) s[r] = exp_row_f32(x + r * n, e + r * n, n, &m[r]);
    return;
  }
  float mrep[256];
  int64_t per = 256 / n, full = n / 16 * 16;
  for (int64_t r0 = 0; r0 < rows; r0 += per) {
    int64_t nr = rows - r0 < per ? rows - r0 : per, len = nr * n;
    const float *xc = x + r0 * n;
    float *ec = e + r0 * n;
    for (int64_t r = 0; r < nr; r++) {
      const float *xr = xc + r * n;
      float mr = -INFINITY;
      int bad = 0;
      ROW_MAX_16(xr, n, full, MAX_NO_NAN, mr, bad);
      if (bad) { /* a NaN of the row is the maximum */
        mr = -INFINITY;
        ROW_MAX_16(xr, n, full, AD_MAX_NAN, mr, bad);
      }
      m[r0 + r] = mr;
      for (int64_t k = 0; k < n; k++) mrep[r * n + k] = mr;
    }
    int low = 0;
    for (int64_t j = 0; j < len; j++) {
      float d = xc[j] - mrep[j];
      ec[j] = exp_v_lo(d, diff_err(xc[j], mrep[j], d));
      low |= d < EXP_V_MIN;
    }
    if (low)
      for (int64_t j = 0; j < len; j++) {
        float d = xc[j] - mrep[j];
        if (d < EXP_V_MIN) ec[j] = (float)EXP_FIX(expf(d), diff_err(xc[j], mrep[j], d));
      }
    for (int64_t r = 0; r < nr; r++) {
      const float *er = ec + r * n;
      double sr = 0;
      if (n < 16) {
        for (int64_t i = 0; i < n; i++) sr += (double)er[i];
      } else {
        double ps[16] = {0};
        for (int64_t i = 0; i < full; i += 16)
          for (int k = 0; k < 16; k++) ps[k] += (double)er[i + k];
        for (int64_t i = full; i < n; i++) ps[i - full] += (double)er[i];
        for (int k = 0; k < 16; k++) sr += ps[k];
      }
      s[r0 + r] = sr;
    }
  }
}

#endif
