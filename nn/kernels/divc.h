/* divc.h: Adam's division by its bias correction, as update.c computes it
 * (private to nn; tools/check_divc.c checks it). */
#ifndef NN_DIVC_H
#define NN_DIVC_H

/* x / c for Adam's bias correction c = sqrt(1 - beta2^t) in (0, 1], the
 * same for the whole loop, with inv = 1.0 / (double)c. For float it is the
 * product x * inv in double, rounded to float: exactly the correctly
 * rounded float quotient, for a multiplier's cost instead of a pass through
 * the divider (which bounds the loop: a square root and two divisions per
 * element). Why exactly: inv and the product are each within 2^-53
 * relative, so the double D is within 2^-51.9 of q = x / c; for floats x =
 * X 2^a, c = C 2^b (X, C < 2^24 integers) and a midpoint m = M 2^e between
 * two floats (M odd, at most 25 bits), x - c m is a nonzero multiple of
 * 2^(b+e), so |q - m| >= 2^e / C > 2^-49 m (subnormal results: a coarser
 * grid, a wider margin), and q is never a midpoint itself for c <= 1 (odd(C)
 * M would have to divide X times a power of two), so D rounds to float as q
 * does. Checked exhaustively (every float x, 72 divisors:
 * tools/check_divc.c, which the suite runs on a sample) and by a test
 * (tests/test_nn_optim.c). For double there is no wider type: the
 * division. */
#define NN_DIVC_float(x, c, inv)  ((float)((double)(x) * (inv)))
#define NN_DIVC_double(x, c, inv) ((void)(inv), (x) / (c))

#endif
