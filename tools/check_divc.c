/* check_divc: checks nn's float division by Adam's bias correction
 * (nn/kernels/divc.h, NN_DIVC_float) against the float division, bit for
 * bit, for every float x >= 0 up to infinity, or every STRIDE-th one, and
 * their negatives, for each divisor c = (float)sqrt(1 - beta2^t) with
 * beta2 in {0.999, 0.99, 0.95, 0.9} and t = 1..12, and --random N more
 * divisors drawn in (0, 1]. Prints the mismatches and a summary; exit 1 if
 * there is one.
 *
 *   check_divc [--stride S] [--random N]   (S = 1: exhaustive, about a
 *                                           second per divisor) */
#include "divc.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long check(float c, uint32_t stride) {
  double inv = 1.0 / (double)c;
  long bad = 0;
  for (uint64_t u = 0; u <= 0x7f800000u; u += stride) {
    for (int sign = 0; sign < 2; sign++) {
      uint32_t bits = (uint32_t)u | (sign ? 0x80000000u : 0);
      float x, want, got;
      memcpy(&x, &bits, sizeof x);
      want = x / c;
      got = NN_DIVC_float(x, c, inv);
      if (memcmp(&want, &got, sizeof want) != 0 && bad++ < 5)
        printf("c %a, x %a: %a, the division %a\n", (double)c, (double)x, (double)got,
               (double)want);
    }
  }
  return bad;
}

/* A whole number in [lo, hi], digits only (strtoul reads "-1" as
 * ULONG_MAX and "x" as 0), into *out; false otherwise. */
static bool arg_num(const char *v, unsigned long lo, unsigned long hi, unsigned long *out) {
  if (!v || *v < '0' || *v > '9') return false;
  char *end;
  errno = 0;
  unsigned long x = strtoul(v, &end, 10);
  if (*end || errno || x < lo || x > hi) return false;
  *out = x;
  return true;
}

int main(int argc, char **argv) {
  unsigned long stride = 1, nrand = 24;
  for (int i = 1; i < argc; i++) {
    bool ok = false;
    if (!strcmp(argv[i], "--stride") && i + 1 < argc)
      ok = arg_num(argv[++i], 1, UINT32_MAX, &stride);
    else if (!strcmp(argv[i], "--random") && i + 1 < argc)
      ok = arg_num(argv[++i], 0, 1000000, &nrand);
    if (!ok) {
      fprintf(stderr, "usage: check_divc [--stride S] [--random N]   (S in 1..2^32-1, N in "
                      "0..1000000)\n");
      return 2;
    }
  }
  const double beta2[4] = {0.999, 0.99, 0.95, 0.9};
  long bad = 0, divisors = 0;
  for (int b = 0; b < 4; b++)
    for (int t = 1; t <= 12; t++, divisors++)
      bad += check((float)sqrt(1.0 - pow(beta2[b], t)), (uint32_t)stride);
  uint64_t s = 0x9e3779b97f4a7c15u; /* xorshift: divisors in (0, 1] */
  for (unsigned long i = 0; i < nrand; i++, divisors++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    uint32_t bits = 0x00800000u + (uint32_t)(s % (0x3f800000u - 0x00800000u + 1));
    float c;
    memcpy(&c, &bits, sizeof c);
    bad += check(c, (uint32_t)stride);
  }
  printf("check_divc: %ld divisors, every %lu-th float and its negative: %ld mismatches\n",
         divisors, stride, bad);
  return bad ? 1 : 0;
}
