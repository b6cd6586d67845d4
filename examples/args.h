/* args.h: numbers on the examples' command lines, read strictly. The whole
 * value must be one decimal number that fits its variable: no blank or
 * sign where none belongs, nothing after it, no overflow, and for a real
 * number a finite one. Each returns false (leaving *out alone) otherwise,
 * so a mistyped value is a usage error, never a quietly different run
 * (strtol takes "" as 0 and clamps 2^64 to LONG_MAX; a cast to int wraps
 * 4294967297 to 1). */
#ifndef EXAMPLES_ARGS_H
#define EXAMPLES_ARGS_H

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline bool arg_ll(const char *v, long long lo, long long hi, long long *out) {
  if (!v || !(isdigit((unsigned char)v[0]) || (v[0] == '-' && isdigit((unsigned char)v[1]))))
    return false;
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (*end || errno || x < lo || x > hi) return false;
  *out = x;
  return true;
}

static inline bool arg_int(const char *v, int *out) {
  long long x;
  if (!arg_ll(v, INT_MIN, INT_MAX, &x)) return false;
  *out = (int)x;
  return true;
}

static inline bool arg_i64(const char *v, int64_t *out) {
  long long x;
  if (!arg_ll(v, INT64_MIN, INT64_MAX, &x)) return false;
  *out = (int64_t)x;
  return true;
}

/* A seed: digits only. */
static inline bool arg_u64(const char *v, unsigned long long *out) {
  if (!v || !isdigit((unsigned char)v[0])) return false;
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (*end || errno) return false;
  *out = x;
  return true;
}

static inline bool arg_double(const char *v, double *out) {
  /* strtod also reads hexadecimal ("0x10" is 16): decimal only here */
  if (!v || !*v || isspace((unsigned char)v[0]) || strpbrk(v, "xX")) return false;
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (*end || errno == ERANGE || !isfinite(x)) return false;
  *out = x;
  return true;
}

#endif
