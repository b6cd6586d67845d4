/* scalar_chain: the per-op overhead of the tape on 0-d tensors.
 *
 * Records x <- tanh(x * a + b) repeated until the chain holds --ops ops
 * (default 1,000,000: mul, add, tanh, mul, ...), with x0, a and b scalar
 * leaves that require a gradient, then runs backward from the last x and
 * resets the tape. With one element per op, the time is almost all
 * bookkeeping: dispatch, arena allocation, recording, the reverse sweep.
 *
 * One warm-up run (which also grows the arena to its final size), then
 * --reps timed runs; prints the median forward, backward and reset time
 * per op and, last, "ns_per_op: X" = median of (forward + backward) / ops.
 * The engine's gradients are checked once against a hand-written reverse
 * pass in plain doubles.
 *
 * Subnormal floats are flushed to zero (ad_set_flush_denormal), as nn_fit
 * does while it trains: the gradient with respect to x0 shrinks by about
 * 0.7 per tanh, reaches the smallest subnormal after about 4,000 ops and
 * stays there (0.7 times it rounds back to it), so without the flush every
 * later op's backward multiplies subnormals, which Intel cores do in
 * microcode at tens of nanoseconds each: the figure would time that, not
 * the tape. --keep-denormals keeps them (the mode is printed).
 *
 *   scalar_chain [--ops N] [--reps N] [--dtype f32|f64] [--keep-denormals] */
#include "ad.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define A_VAL  0.9
#define B_VAL  0.1
#define X0_VAL 0.3

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *p, const void *q) {
  double a = *(const double *)p, b = *(const double *)q;
  return (a > b) - (a < b);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct timing {
  double fwd, bwd, reset; /* ns for the whole chain */
} timing;

/* One run: forward, backward, reset. Leaves' grads are zeroed first. Op k
 * of the chain is mul, add or tanh as k % 3 is 0, 1 or 2. */
static int run(ad_ctx *ctx, ad_tensor *x0, ad_tensor *a, ad_tensor *b, long nops, timing *t,
               double *xlast) {
  ad_tensor_zero_grad(x0);
  ad_tensor_zero_grad(a);
  ad_tensor_zero_grad(b);
  double t0 = now_ns();
  ad_tensor *x = x0;
  long k = 0;
  for (; k + 3 <= nops; k += 3) x = ad_tanh(ctx, ad_add(ctx, ad_mul(ctx, x, a), b));
  if (k < nops) x = ad_mul(ctx, x, a);
  if (k + 1 < nops) x = ad_add(ctx, x, b);
  double t1 = now_ns();
  if (!x) return -1;
  *xlast = ad_tensor_item(x);
  if (ad_backward(ctx, x, NULL) != AD_OK) return -1;
  double t2 = now_ns();
  ad_tape_reset(ctx);
  double t3 = now_ns();
  t->fwd = t1 - t0;
  t->bwd = t2 - t1;
  t->reset = t3 - t2;
  return 0;
}

/* The same chain and its reverse pass in plain doubles. */
static void reference(long nops, double *xlast, double *dx0, double *da, double *db) {
  double *v = malloc((size_t)(nops + 1) * sizeof *v); /* v[k]: input of op k */
  if (!v) {
    *xlast = *dx0 = *da = *db = NAN;
    return;
  }
  v[0] = X0_VAL;
  for (long k = 0; k < nops; k++) {
    double u = v[k];
    v[k + 1] = k % 3 == 0 ? u * A_VAL : k % 3 == 1 ? u + B_VAL : tanh(u);
  }
  *xlast = v[nops];
  double g = 1, ga = 0, gb = 0;
  for (long k = nops; k-- > 0;) {
    if (k % 3 == 0) {
      ga += g * v[k];
      g *= A_VAL;
    } else if (k % 3 == 1) {
      gb += g;
    } else {
      g *= 1 - v[k + 1] * v[k + 1];
    }
  }
  *dx0 = g;
  *da = ga;
  *db = gb;
  free(v);
}

/* A scalar leaf's gradient; 0 when backward never reached it. */
static double grad_of(const ad_tensor *t) { return t->grad ? ad_tensor_item(t->grad) : 0.0; }

static bool close_to(double got, double want, double rtol) {
  return fabs(got - want) <= rtol * fabs(want) + 1e-300;
}

static long parse_long(const char *opt, const char *v, long lo) {
  char *end;
  errno = 0;
  long n = v ? strtol(v, &end, 10) : 0;
  if (!v || !*v || *end || errno || n < lo) {
    fprintf(stderr, "scalar_chain: %s needs an integer >= %ld\n", opt, lo);
    exit(2);
  }
  return n;
}

int main(int argc, char **argv) {
  long nops = 1000000, reps = 5;
  ad_dtype dt = AD_F64;
  bool keep_denormals = false;
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "--ops") == 0) {
      nops = parse_long("--ops", v, 1);
      i++;
    } else if (strcmp(argv[i], "--reps") == 0) {
      reps = parse_long("--reps", v, 1);
      i++;
    } else if (strcmp(argv[i], "--dtype") == 0 && v && (!strcmp(v, "f32") || !strcmp(v, "f64"))) {
      dt = strcmp(v, "f32") == 0 ? AD_F32 : AD_F64;
      i++;
    } else if (strcmp(argv[i], "--keep-denormals") == 0) {
      keep_denormals = true;
    } else {
      fprintf(stderr,
              "usage: scalar_chain [--ops N] [--reps N] [--dtype f32|f64] [--keep-denormals]\n");
      return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }

  ad_ctx *ctx = ad_ctx_new();
  ad_tensor *x0 = ad_full(ctx, dt, 0, NULL, X0_VAL), *a = ad_full(ctx, dt, 0, NULL, A_VAL),
            *b = ad_full(ctx, dt, 0, NULL, B_VAL);
  if (!ctx || !x0 || !a || !b) {
    fprintf(stderr, "scalar_chain: %s\n", ctx ? ad_last_error(ctx) : "out of memory");
    return 1;
  }
  ad_tensor_set_requires_grad(x0, true);
  ad_tensor_set_requires_grad(a, true);
  ad_tensor_set_requires_grad(b, true);
  bool flushed = !keep_denormals && ad_set_flush_denormal(true);

  printf("scalar_chain: %ld ops (x = tanh(x * a + b) repeated) on 0-d %s tensors, %ld reps + 1 "
         "warm-up; subnormals %s\n",
         nops, ad_dtype_name(dt), reps,
         flushed          ? "flushed to zero (--keep-denormals keeps them)"
         : keep_denormals ? "kept"
                          : "kept (this CPU cannot flush them)");

  /* warm-up, and the correctness check */
  timing t;
  double xlast, rx, rdx0, rda, rdb;
  if (run(ctx, x0, a, b, nops, &t, &xlast) != 0) {
    fprintf(stderr, "scalar_chain: %s\n", ad_last_error(ctx));
    return 1;
  }
  reference(nops, &rx, &rdx0, &rda, &rdb);
  double rtol = dt == AD_F64 ? 1e-9 : 1e-3;
  double gx0 = grad_of(x0), ga = grad_of(a), gb = grad_of(b);
  bool ok = close_to(xlast, rx, rtol) && close_to(ga, rda, rtol) && close_to(gb, rdb, rtol) &&
            fabs(gx0 - rdx0) <= 1e-12;
  printf("check: x = %.9g, dx/da = %.9g, dx/db = %.9g, dx/dx0 = %.3g (reference %.9g, %.9g, "
         "%.9g, %.3g): %s\n",
         xlast, ga, gb, gx0, rx, rda, rdb, rdx0, ok ? "ok" : "MISMATCH");
  printf("warm-up: forward %.1f ms, backward %.1f ms; arena %.1f MiB after reset\n", t.fwd / 1e6,
         t.bwd / 1e6, (double)ad_arena_capacity(ctx) / (1 << 20));

  double *fwd = malloc((size_t)reps * sizeof *fwd), *bwd = malloc((size_t)reps * sizeof *bwd),
         *rst = malloc((size_t)reps * sizeof *rst), *tot = malloc((size_t)reps * sizeof *tot);
  if (!fwd || !bwd || !rst || !tot) return 1;
  for (long r = 0; r < reps; r++) {
    if (run(ctx, x0, a, b, nops, &t, &xlast) != 0) {
      fprintf(stderr, "scalar_chain: %s\n", ad_last_error(ctx));
      return 1;
    }
    fwd[r] = t.fwd / (double)nops;
    bwd[r] = t.bwd / (double)nops;
    rst[r] = t.reset;
    tot[r] = (t.fwd + t.bwd) / (double)nops;
  }
  printf("total ns/op by rep:");
  for (long r = 0; r < reps; r++) printf(" %.1f", tot[r]);
  printf("\n");
  printf("arena: %.1f MiB (%.0f bytes per forward op, forward and backward intermediates)\n",
         (double)ad_arena_capacity(ctx) / (1 << 20), (double)ad_arena_capacity(ctx) / (double)nops);
  printf("forward_ns_per_op: %.1f\n", median(fwd, (int)reps));
  printf("backward_ns_per_op: %.1f\n", median(bwd, (int)reps));
  printf("reset_ns: %.0f\n", median(rst, (int)reps));
  printf("ns_per_op: %.1f\n", median(tot, (int)reps));

  free(fwd);
  free(bwd);
  free(rst);
  free(tot);
  ad_tensor_free(x0);
  ad_tensor_free(a);
  ad_tensor_free(b);
  ad_ctx_free(ctx);
  return ok ? 0 : 1;
}
