/* softmax_exp.h: e^(x - m) for float32 x and m, as the softmax family
 * takes it (softmax, log_softmax and logsumexp, op_reduce.c; the plain
 * backward of softmax cross-entropy with the classes first, [N, C, d1,
 * ...], op_loss.c, which must give the softmax op's bits; with the classes
 * last, [N, C], cross-entropy still takes exp_v of the rounded difference,
 * as PyTorch does): exp_v(d) (vexp.h; libm's expf where d < EXP_V_MIN,
 * exp_v's clamp, e^d near FLT_MIN or below) for d = x - m rounded to
 * float, times 1 + lo in double, lo = (x - m) - d being the rounding error
 * of the difference. Without lo, d's rounding (up to 2^-25 |d|) enters e^d
 * as a relative error of the same size: 33 ulp of a softmax for inputs in
 * [-30, 30]. Internal to the op layer. */
#ifndef AD_SOFTMAX_EXP_H
#define AD_SOFTMAX_EXP_H

#include "vexp.h"

#include <stdint.h>

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

#endif
