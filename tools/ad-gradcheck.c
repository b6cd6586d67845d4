/* ad-gradcheck: gradient-checks every registered op that has a backward,
 * first and second order, in float64 and float32, through ad_op_check and
 * the sample function of each op; with --load, the ops of a user's shared
 * library (a plugin: it exports ad_plugin_register, see ad_ext.h).
 *
 *   ad-gradcheck [--load PATH.so]... [--op NAME]... [--seed N] [--dtype f32|f64]...
 *                [--first-only]
 *
 * One line per op: its name, then for each dtype and order PASS or FAIL with
 * the worst absolute and relative error and where it was (input k, flat
 * index i); a FAIL also gives ad_op_check's message, which names the
 * sample's variant, the input's shape and both values, and an ERROR the
 * status and message of the check that could not run. Ops without a
 * backward are listed as skipped. The last line is "N passed, M failed",
 * counting ops. Exit status: 0 when every check passes, 1 when one fails,
 * 2 for a usage error, a library that cannot be loaded or registers
 * nothing (with the reason it recorded, or a note that it recorded none),
 * or output that cannot be written. */
#include "ad_ext.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LOADS 16
#define MAX_OPS   64

typedef struct options {
  const char *op[MAX_OPS]; /* none: every op (with --load: every op the plugins registered) */
  int nop;
  const char *load[MAX_LOADS];
  int nload;
  uint64_t seed;
  int ndtypes;
  ad_dtype dtypes[2];
  bool second;
} options;

static void usage(FILE *f) {
  fprintf(f,
          "usage: ad-gradcheck [--load PATH.so]... [--op NAME]... [--seed N]\n"
          "                    [--dtype f32|f64]... [--first-only]\n"
          "\n"
          "Gradient-checks every registered op that has a backward, against central\n"
          "differences in float64, first and second order, in f64 and f32.\n"
          "\n"
          "  --load PATH    load the shared library PATH (a path with a '/', or a name\n"
          "                 the dynamic linker searches for), call the function\n"
          "                 ad_status ad_plugin_register(ad_ctx *ctx) it exports\n"
          "                 (see ad_ext.h), and check every op it registered instead\n"
          "                 of the built-in ones; repeatable (up to %d libraries)\n"
          "  --op NAME      check only this op, built in or loaded (an unknown name is\n"
          "                 an error); repeatable (up to %d ops, checked in the order\n"
          "                 given, each once)\n"
          "  --seed N       seed of the random sample inputs, in decimal (default 1)\n"
          "  --dtype T      check only dtype T: f32 or f64 (default both); repeatable\n"
          "  --first-only   skip the second-order (gradgradcheck) pass\n"
          "  --help         show this help\n"
          "\n"
          "Prints one line per op and ends with \"N passed, M failed\". Exit status 0\n"
          "when everything passes, 1 when a check fails, 2 for a usage error, a\n"
          "library that cannot be loaded or registers nothing, or output that\n"
          "cannot be written.\n",
          MAX_LOADS, MAX_OPS);
}

/* The value of option name: "--name=V" or "--name V" (consuming argv[*i+1]).
 * NULL when argv[*i] is not this option; *missing when it lacks a value. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, bool *missing) {
  size_t len = strlen(name);
  const char *a = argv[*i];
  if (strncmp(a, name, len) != 0) return NULL;
  if (a[len] == '=') return a + len + 1;
  if (a[len] != 0) return NULL;
  if (*i + 1 >= argc) {
    *missing = true;
    return NULL;
  }
  return argv[++*i];
}

/* Parses the command line; returns 0 to run, 1 after --help, 2 on error. */
static int parse_args(int argc, char **argv, options *o) {
  *o = (options){
      .nop = 0, .nload = 0, .seed = 1, .ndtypes = 2, .dtypes = {AD_F64, AD_F32}, .second = true};
  bool dtype_given = false;
  for (int i = 1; i < argc; i++) {
    const char *v;
    bool missing = false;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 1;
    } else if (strcmp(argv[i], "--first-only") == 0) {
      o->second = false;
    } else if ((v = opt_value(argc, argv, &i, "--load", &missing))) {
      if (o->nload == MAX_LOADS) {
        fprintf(stderr, "ad-gradcheck: --load: at most %d libraries\n", MAX_LOADS);
        return 2;
      }
      o->load[o->nload++] = v;
    } else if ((v = opt_value(argc, argv, &i, "--op", &missing))) {
      if (o->nop == MAX_OPS) {
        fprintf(stderr, "ad-gradcheck: --op: at most %d ops\n", MAX_OPS);
        return 2;
      }
      o->op[o->nop++] = v;
    } else if ((v = opt_value(argc, argv, &i, "--seed", &missing))) {
      char *end;
      errno = 0;
      unsigned long long s = strtoull(v, &end, 10);
      /* digits only: strtoull would take " -5" as 2^64 - 5 and 010 as 8 */
      if (!isdigit((unsigned char)v[0]) || *end || errno) {
        fprintf(stderr, "ad-gradcheck: --seed: '%s' is not a non-negative integer\n", v);
        return 2;
      }
      o->seed = (uint64_t)s;
    } else if ((v = opt_value(argc, argv, &i, "--dtype", &missing))) {
      ad_dtype dt;
      if (strcmp(v, "f64") == 0) {
        dt = AD_F64;
      } else if (strcmp(v, "f32") == 0) {
        dt = AD_F32;
      } else {
        fprintf(stderr, "ad-gradcheck: --dtype: '%s' is not f32 or f64\n", v);
        return 2;
      }
      if (!dtype_given) o->ndtypes = 0; /* the first --dtype replaces the default pair */
      dtype_given = true;
      bool dup = false; /* each once: dtypes holds two */
      for (int k = 0; k < o->ndtypes; k++) dup |= o->dtypes[k] == dt;
      if (!dup) o->dtypes[o->ndtypes++] = dt;
    } else {
      if (missing)
        fprintf(stderr, "ad-gradcheck: %s needs a value\n", argv[i]);
      else
        fprintf(stderr, "ad-gradcheck: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  return 0;
}

/* Checks one op in every requested dtype and order and prints its line.
 * Returns true when every check passed. */
static bool check_op(ad_ctx *ctx, int id, const options *o) {
  const ad_op_def *def = ad_op_get(ctx, id);
  printf("%-22s", def->name);
  bool ok = true;
  for (int d = 0; d < o->ndtypes; d++) {
    for (int order = 1; order <= (o->second ? 2 : 1); order++) {
      ad_check_report r;
      ad_status st = ad_op_check(ctx, id, o->dtypes[d], order == 2, o->seed, &r);
      printf("  %s/%d ", ad_dtype_name(o->dtypes[d]), order);
      if (st != AD_OK) {
        printf("ERROR (%s: %s)", ad_status_str(st), ad_last_error(ctx));
        ad_clear_error(ctx);
        ad_tape_reset(ctx);
        ok = false;
        continue;
      }
      if (!r.passed) ok = false;
      printf("%s abs %.1e rel %.1e", r.passed ? "PASS" : "FAIL", r.abs_err, r.rel_err);
      if (r.input >= 0)
        printf(" at in%d[%" PRId64 "]", r.input, r.index);
      else
        printf(" (nothing checked)");
      /* which variant of the sample, which input and why: ad_op_check's
       * message (the report's input and index alone name no variant) */
      if (!r.passed && ad_last_status(ctx) != AD_OK)
        printf(" (%s)", ad_last_error(ctx));
      else if (!r.passed)
        printf(" analytic %.9g numeric %.9g", r.analytic, r.numeric);
      ad_clear_error(ctx);
    }
  }
  printf("\n");
  fflush(stdout);
  return ok;
}

/* Loads one plugin and registers its ops on ctx; prints why not and
 * returns false on failure. The library stays loaded (its ops' functions
 * are used until the context is freed, and the process ends soon after). */
static bool load_plugin(ad_ctx *ctx, const char *path) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "ad-gradcheck: --load %s: %s\n", path, dlerror());
    return false;
  }
  void *sym = dlsym(h, "ad_plugin_register");
  if (!sym) {
    fprintf(stderr,
            "ad-gradcheck: --load %s: the library does not export ad_plugin_register "
            "(ad_status ad_plugin_register(ad_ctx *ctx), see ad_ext.h)\n",
            path);
    dlclose(h);
    return false;
  }
  ad_status (*reg)(ad_ctx *);
  memcpy(&reg, &sym, sizeof reg); /* POSIX: dlsym's object pointer is the function */
  int before = ad_op_count(ctx);
  ad_clear_error(ctx); /* what it records is its own, not an earlier library's */
  ad_status st = reg(ctx);
  /* the reason it recorded, or a note that it recorded none: a failure is
   * never reported with an empty reason */
  const char *why = ad_last_status(ctx) != AD_OK
                        ? ad_last_error(ctx)
                        : "it recorded no message (ad_set_error records the reason)";
  if (st != AD_OK) {
    if ((int)st > 0 && (int)st < AD_STATUS_COUNT)
      fprintf(stderr, "ad-gradcheck: --load %s: ad_plugin_register failed: %s: %s\n", path,
              ad_status_str(st), why);
    else
      fprintf(stderr,
              "ad-gradcheck: --load %s: ad_plugin_register failed: it returned %d, which is not "
              "an ad_status: %s\n",
              path, (int)st, why);
    return false;
  }
  if (ad_op_count(ctx) == before) {
    fprintf(stderr, "ad-gradcheck: --load %s: ad_plugin_register registered no op: %s\n", path,
            ad_last_status(ctx) != AD_OK
                ? why
                : "it returned AD_OK and recorded no error (call ad_op_register)");
    return false;
  }
  if (ad_last_status(ctx) != AD_OK) /* an ad_op_register it ignored: an op may be missing */
    fprintf(stderr,
            "ad-gradcheck: --load %s: warning: ad_plugin_register returned AD_OK but left an "
            "error recorded, so an op it meant to register may be missing: %s\n",
            path, why);
  ad_clear_error(ctx);
  return true;
}

int main(int argc, char **argv) {
  options o;
  int rc = parse_args(argc, argv, &o);
  if (rc == 1 && (fflush(stdout) != 0 || ferror(stdout))) rc = 2; /* --help went nowhere */
  if (rc) return rc == 1 ? 0 : 2;

  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) {
    fprintf(stderr, "ad-gradcheck: out of memory\n");
    return 1;
  }
  int builtin = ad_op_count(ctx);
  for (int i = 0; i < o.nload; i++) {
    if (!load_plugin(ctx, o.load[i])) {
      ad_ctx_free(ctx);
      return 2;
    }
  }
  /* the ops named by --op, in the order given (each once); else, with
   * --load, the plugins' ops; else every op */
  int first = o.nload ? builtin : 0, nids = ad_op_count(ctx) - first;
  int *ids = malloc((size_t)(nids > o.nop ? nids : o.nop > 0 ? o.nop : 1) * sizeof *ids);
  if (!ids) {
    fprintf(stderr, "ad-gradcheck: out of memory\n");
    ad_ctx_free(ctx);
    return 1;
  }
  for (int i = 0; i < nids; i++) ids[i] = first + i;
  if (o.nop) {
    nids = 0;
    for (int k = 0; k < o.nop; k++) {
      int id = ad_op_find(ctx, o.op[k]);
      if (id < 0) {
        fprintf(stderr, "ad-gradcheck: unknown op '%s'; registered ops:", o.op[k]);
        for (int i = 0; i < ad_op_count(ctx); i++) fprintf(stderr, " %s", ad_op_get(ctx, i)->name);
        fprintf(stderr, "\n");
        free(ids);
        ad_ctx_free(ctx);
        return 2;
      }
      bool seen = false;
      for (int i = 0; i < nids; i++) seen = seen || ids[i] == id;
      if (!seen) ids[nids++] = id;
    }
  }

  printf("ad-gradcheck: seed %" PRIu64 ", %s order%s, dtype%s", o.seed,
         o.second ? "first and second" : "first", o.second ? "s" : "", o.ndtypes > 1 ? "s" : "");
  for (int d = 0; d < o.ndtypes; d++) printf(" %s", ad_dtype_name(o.dtypes[d]));
  printf("\n");

  int passed = 0, failed = 0, skipped = 0;
  for (int i = 0; i < nids; i++) {
    int id = ids[i];
    const ad_op_def *def = ad_op_get(ctx, id);
    if (!def->backward) {
      printf("%-22s  skipped (no backward: the output carries no gradient)\n", def->name);
      skipped++;
      continue;
    }
    if (check_op(ctx, id, &o))
      passed++;
    else
      failed++;
  }
  if (skipped) printf("%d skipped\n", skipped);
  printf("%d passed, %d failed\n", passed, failed);
  free(ids);
  ad_ctx_free(ctx);
  if (fflush(stdout) != 0 || ferror(stdout)) { /* a report that went nowhere is no pass */
    fprintf(stderr, "ad-gradcheck: write error on standard output\n");
    return 2;
  }
  return failed ? 1 : 0;
}
