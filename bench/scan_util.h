/* scan_util.h: what the scans (bench/opscan, bench/layerscan) share,
 * header-only: their command line, the header line and the timed runs of
 * one case, whose line bench/opscan.py parses:
 *
 *   TOOL/NAME fwd_us F bwd_us B */
#ifndef SCAN_UTIL_H
#define SCAN_UTIL_H

#include "ad.h"
#include "bench_util.h"

#include <stdio.h>
#include <string.h>

typedef struct scan_opts {
  const char *filter; /* run only the cases whose name contains it (NULL: all) */
  long long reps;     /* runs per case, of which the least time counts */
  long long threads;  /* the engine's threads */
  ad_dtype dtype;     /* of the float inputs: AD_F32 (default) or AD_F64 */
} scan_opts;

/* --filter SUBSTR, --reps N, --threads T and --dtype f32|f64 into *o (its
 * defaults: all cases, 15 runs, one thread, float32); on anything else
 * prints TOOL's usage and returns false. */
static inline bool scan_parse(int argc, char **argv, const char *tool, scan_opts *o) {
  *o = (scan_opts){.reps = 15, .threads = 1, .dtype = AD_F32};
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    bool ok = true;
    if (!strcmp(argv[i], "--filter") && v)
      o->filter = v, i++;
    else if (!strcmp(argv[i], "--reps"))
      ok = bench_parse_int(v, 1, &o->reps), i++;
    else if (!strcmp(argv[i], "--threads"))
      ok = bench_parse_int(v, 1, &o->threads), i++;
    else if (!strcmp(argv[i], "--dtype") && v && (!strcmp(v, "f32") || !strcmp(v, "f64")))
      o->dtype = strcmp(v, "f32") ? AD_F64 : AD_F32, i++;
    else
      ok = false;
    if (!ok) {
      fprintf(stderr, "usage: %s [--filter SUBSTR] [--reps N] [--threads T] [--dtype f32|f64]\n",
              tool);
      return false;
    }
  }
  return true;
}

/* The line above the cases' lines. */
static inline void scan_print_header(const char *tool, const scan_opts *o) {
  printf("# %s: %s, %lld engine thread(s), least of %lld runs, microseconds\n", tool,
         o->dtype == AD_F32 ? "float32" : "float64", o->threads, o->reps);
}

/* Times one case o->reps times: clear() releases the gradients, fn()
 * builds the output (the forward's time), ad_backward from a seed of ones
 * of its shape (the backward's time), then the tape is reset. Prints
 * "TOOL/NAME fwd_us F bwd_us B" with the least of each, or, when a run
 * fails, the error on stderr and returns false. */
static inline bool scan_case(ad_ctx *ctx, const char *tool, const char *name,
                             ad_tensor *(*fn)(void), void (*clear)(void), const scan_opts *o) {
  double fwd = 1e30, bwd = 1e30;
  ad_tensor *seed = NULL; /* ones of the output's shape, made at the first run */
  for (long long r = 0; r < o->reps; r++) {
    clear();
    double t0 = bench_now_s();
    ad_tensor *y = fn();
    double t1 = bench_now_s();
    if (y && !seed) seed = ad_full(ctx, y->dtype, y->ndim, y->shape, 1.0);
    ad_status st = !y                            ? ad_last_status(ctx)
                   : !ad_tensor_requires_grad(y) ? AD_OK /* an op without a gradient */
                   : seed                        ? ad_backward(ctx, y, seed)
                                                 : ad_last_status(ctx);
    double t2 = bench_now_s();
    if (st != AD_OK) {
      fprintf(stderr, "%s/%s: %s\n", tool, name, ad_last_error(ctx));
      ad_tensor_free(seed);
      return false;
    }
    ad_tape_reset(ctx);
    fwd = t1 - t0 < fwd ? t1 - t0 : fwd;
    bwd = t2 - t1 < bwd ? t2 - t1 : bwd;
  }
  ad_tensor_free(seed);
  printf("%s/%s fwd_us %.1f bwd_us %.1f\n", tool, name, fwd * 1e6, bwd * 1e6);
  fflush(stdout);
  return true;
}

#endif
