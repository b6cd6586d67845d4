/* profile.c: the op profile (ad.h, ad_profile_start): per op of the
 * table, the calls and self time of its forward and backward, counted by
 * the tape (tape.c: ad_op_apply, the backward sweep) through the regions
 * of ad_internal.h. */
#include "ad_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

double ad_prof_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

void ad_prof_leave(ad_ctx *ctx, ad_prof_mark m, int id, ad_prof_kind kind) {
  ad_prof *p = ctx->prof;
  double whole = ad_prof_now() - m.t0, self = whole - p->child_ns;
  if (self < 0) self = 0; /* a clock read apart: never a negative row */
  if (kind == AD_PROF_PASS) {
    p->passes++;
    p->pass_ns += whole;
  } else if (kind == AD_PROF_HOOK) {
    p->hook_ns += self;
  } else if (id >= 0 && id < p->cap) {
    ad_prof_op *r = &p->ops[id];
    if (kind == AD_PROF_FWD)
      r->fwd_calls++, r->fwd_ns += self;
    else
      r->bwd_calls++, r->bwd_ns += self;
  }
  p->child_ns = m.outer + whole;
}

ad_status ad_prof_reserve(ad_ctx *ctx, int cap) {
  ad_prof *p = ctx->prof;
  if (!p || cap <= p->cap) return AD_OK;
  ad_prof_op *ops = ad_malloc(ctx, (size_t)cap * sizeof *ops);
  if (!ops) return AD_ERR_OOM;
  memset(ops, 0, (size_t)cap * sizeof *ops);
  if (p->cap) memcpy(ops, p->ops, (size_t)p->cap * sizeof *ops);
  ad_free(ctx, p->ops, (size_t)p->cap * sizeof *ops);
  p->ops = ops;
  p->cap = cap;
  return AD_OK;
}

/* Frees the ranges' entries (their names and the array). */
static void ranges_free(ad_ctx *ctx, ad_prof *p) {
  for (int i = 0; i < p->nranges; i++)
    ad_free(ctx, p->ranges[i].name, strlen(p->ranges[i].name) + 1);
  ad_free(ctx, p->ranges, (size_t)p->ranges_cap * sizeof *p->ranges);
  p->ranges = NULL;
  p->nranges = p->ranges_cap = p->depth = 0;
}

void ad_prof_free(ad_ctx *ctx) {
  ad_prof *p = ctx->prof;
  if (!p) return;
  ranges_free(ctx, p);
  ad_free(ctx, p->ops, (size_t)p->cap * sizeof *p->ops);
  ad_free(ctx, p, sizeof *p);
  ctx->prof = NULL;
  ctx->profiling = false;
}

/* Start and stop between calls only: inside an op's functions or a pass
 * the running region would be split between two counts. */
static ad_status profile_state_ok(ad_ctx *ctx, const char *who) {
  if (ctx->sweeps || ctx->in_user_fns)
    return ad_set_error(
        ctx, AD_ERR_STATE, "%s: called %s; call it between ops and backward passes", who,
        ctx->sweeps ? "during a backward pass" : "from a registered op's functions");
  return AD_OK;
}

ad_status ad_profile_start(ad_ctx *ctx) {
  if (!ctx) return AD_ERR_NULL;
  ad_status st = profile_state_ok(ctx, "profile_start");
  if (st != AD_OK) return st;
  bool fresh = !ctx->prof;
  if (fresh) {
    ad_prof *p = ad_malloc(ctx, sizeof *p);
    if (!p) return AD_ERR_OOM;
    memset(p, 0, sizeof *p);
    ctx->prof = p;
  }
  /* a row for every op, also those registered while it was stopped (the
   * table grows the rows only while it runs) */
  if (ad_prof_reserve(ctx, ctx->ops_cap > ctx->nops ? ctx->ops_cap : ctx->nops) != AD_OK) {
    if (fresh) ad_prof_free(ctx);
    return AD_ERR_OOM;
  }
  ad_prof *p = ctx->prof;
  memset(p->ops, 0, (size_t)p->cap * sizeof *p->ops);
  p->child_ns = p->pass_ns = p->hook_ns = 0;
  p->passes = 0;
  ranges_free(ctx, p);
  ctx->profiling = true;
  return AD_OK;
}

ad_status ad_profile_stop(ad_ctx *ctx) {
  if (!ctx) return AD_ERR_NULL;
  ad_status st = profile_state_ok(ctx, "profile_stop");
  if (st != AD_OK) return st;
  if (!ctx->prof) return ad_set_error(ctx, AD_ERR_STATE, "profile_stop: no profile was started");
  ctx->profiling = false;
  ctx->prof->depth = 0; /* the open ranges end uncounted */
  return AD_OK;
}

/* ------------------------------------------------------------ ranges */

/* The entry of range name (len bytes), made if new; -1 on OOM. */
static int range_entry(ad_ctx *ctx, ad_prof *p, const char *name, size_t len) {
  for (int i = 0; i < p->nranges; i++)
    if (!strcmp(p->ranges[i].name, name)) return i;
  if (p->nranges == p->ranges_cap) {
    int cap = p->ranges_cap ? p->ranges_cap * 2 : 8;
    ad_prof_range *r = ad_malloc(ctx, (size_t)cap * sizeof *r);
    if (!r) return -1;
    if (p->nranges) memcpy(r, p->ranges, (size_t)p->nranges * sizeof *r);
    ad_free(ctx, p->ranges, (size_t)p->ranges_cap * sizeof *r);
    p->ranges = r;
    p->ranges_cap = cap;
  }
  char *copy = ad_malloc(ctx, len + 1);
  if (!copy) return -1;
  memcpy(copy, name, len + 1);
  p->ranges[p->nranges] = (ad_prof_range){copy, 0, 0};
  return p->nranges++;
}

ad_status ad_profile_range_push(ad_ctx *ctx, const char *name) {
  if (!ctx) return AD_ERR_NULL;
  if (!ctx->profiling) return AD_OK;
  if (!name) return ad_set_null_error(ctx, "profile_range_push: name is NULL");
  size_t len = strlen(name);
  if (len == 0 || len > 255)
    return ad_set_error(ctx, AD_ERR_ARG, "profile_range_push: a name of %zu bytes (1 to 255)", len);
  ad_prof *p = ctx->prof;
  if (p->depth == AD_PROFILE_RANGE_DEPTH)
    return ad_set_error(ctx, AD_ERR_STATE,
                        "profile_range_push: '%s' would be range %d deep; at most %d "
                        "(AD_PROFILE_RANGE_DEPTH) nest: is an ad_profile_range_pop missing?",
                        name, p->depth + 1, AD_PROFILE_RANGE_DEPTH);
  int e = range_entry(ctx, p, name, len);
  if (e < 0) return AD_ERR_OOM;
  p->open[p->depth].entry = e;
  p->open[p->depth++].t0 = ad_prof_now();
  return AD_OK;
}

ad_status ad_profile_range_pop(ad_ctx *ctx) {
  if (!ctx) return AD_ERR_NULL;
  ad_prof *p = ctx->prof;
  if (!ctx->profiling || p->depth == 0) return AD_OK;
  p->depth--;
  ad_prof_range *r = &p->ranges[p->open[p->depth].entry];
  r->calls++;
  r->ns += ad_prof_now() - p->open[p->depth].t0;
  return AD_OK;
}

static int range_cmp(const void *a, const void *b) {
  const ad_profile_range *x = a, *y = b;
  if (x->seconds != y->seconds) return x->seconds > y->seconds ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* Every popped range into out (room for p->nranges), sorted; their count. */
static int64_t ranges_collect(const ad_ctx *ctx, ad_profile_range *out) {
  const ad_prof *p = ctx->prof;
  int64_t n = 0;
  for (int i = 0; i < p->nranges; i++)
    if (p->ranges[i].calls)
      out[n++] = (ad_profile_range){p->ranges[i].name, p->ranges[i].calls, p->ranges[i].ns * 1e-9};
  qsort(out, (size_t)n, sizeof *out, range_cmp);
  return n;
}

/* How many ranges were popped. */
static int64_t ranges_popped(const ad_prof *p) {
  int64_t n = 0;
  for (int i = 0; p && i < p->nranges; i++) n += p->ranges[i].calls > 0;
  return n;
}

/* A read's room: cap >= 0, and out given when cap > 0 (the error
 * recorded, naming who and what, if not). */
static bool room_ok(ad_ctx *ctx, const char *who, const char *what, const void *out, int64_t cap) {
  if (cap < 0) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: cap %lld is negative", who, (long long)cap);
    return false;
  }
  if (cap > 0 && !out) {
    ad_set_null_error(ctx, "%s: %s is NULL with cap %lld", who, what, (long long)cap);
    return false;
  }
  return true;
}

/* The first cap of the n entries (size bytes each) that fill writes,
 * sorted, into a buffer of n: into out itself when it has room for all,
 * else through a copy (-1 on out of memory, recorded); returns n. */
static int64_t first_sorted(ad_ctx *ctx, void *out, int64_t cap, int64_t n, size_t size,
                            int64_t (*fill)(const ad_ctx *, void *)) {
  if (n == 0 || cap == 0) return n;
  if (cap >= n) return fill(ctx, out);
  void *all = ad_malloc(ctx, (size_t)n * size);
  if (!all) return -1;
  fill(ctx, all);
  memcpy(out, all, (size_t)cap * size);
  ad_free(ctx, all, (size_t)n * size);
  return n;
}

static int64_t fill_ranges(const ad_ctx *ctx, void *out) { return ranges_collect(ctx, out); }

int64_t ad_profile_read_ranges(ad_ctx *ctx, ad_profile_range *out, int64_t cap) {
  if (!ctx || !room_ok(ctx, "profile_read_ranges", "out", out, cap)) return -1;
  return first_sorted(ctx, out, cap, ranges_popped(ctx->prof), sizeof *out, fill_ranges);
}

/* Largest forward + backward time first, then by name. */
static int row_cmp(const void *a, const void *b) {
  const ad_profile_row *x = a, *y = b;
  double tx = x->forward_s + x->backward_s, ty = y->forward_s + y->backward_s;
  if (tx != ty) return tx > ty ? -1 : 1;
  return strcmp(x->op, y->op);
}

/* Every called op's row into rows (room for ctx->nops), sorted; their count. */
static int64_t collect(const ad_ctx *ctx, ad_profile_row *rows) {
  const ad_prof *p = ctx->prof;
  int64_t n = 0;
  for (int id = 0; id < ctx->nops && id < p->cap; id++) {
    const ad_prof_op *r = &p->ops[id];
    if (!r->fwd_calls && !r->bwd_calls) continue;
    rows[n++] = (ad_profile_row){ctx->ops[id].name, r->fwd_calls, r->fwd_ns * 1e-9, r->bwd_calls,
                                 r->bwd_ns * 1e-9};
  }
  qsort(rows, (size_t)n, sizeof *rows, row_cmp);
  return n;
}

static int64_t fill_rows(const ad_ctx *ctx, void *out) { return collect(ctx, out); }

static void totals_of(const ad_ctx *ctx, ad_profile_totals *t) {
  const ad_prof *p = ctx->prof;
  *t = (ad_profile_totals){0};
  if (p) *t = (ad_profile_totals){p->passes, p->pass_ns * 1e-9, p->hook_ns * 1e-9};
}

int64_t ad_profile_read(ad_ctx *ctx, ad_profile_row *rows, int64_t cap, ad_profile_totals *totals) {
  if (!ctx || !room_ok(ctx, "profile_read", "rows", rows, cap)) return -1;
  if (totals) totals_of(ctx, totals);
  const ad_prof *p = ctx->prof;
  if (!p) return 0;
  int64_t n = 0;
  for (int id = 0; id < ctx->nops && id < p->cap; id++)
    n += p->ops[id].fwd_calls || p->ops[id].bwd_calls;
  return first_sorted(ctx, rows, cap, n, sizeof *rows, fill_rows);
}

ad_status ad_profile_print(ad_ctx *ctx, FILE *f) {
  if (!ctx) return AD_ERR_NULL;
  if (!f) return ad_set_null_error(ctx, "profile_print: f is NULL");
  if (!ctx->prof) return ad_set_error(ctx, AD_ERR_STATE, "profile_print: no profile was started");
  /* both tables' copies first: out of memory writes nothing */
  ad_profile_totals t;
  int64_t n = ad_profile_read(ctx, NULL, 0, &t), nr = ranges_popped(ctx->prof);
  ad_profile_row *rows = n ? ad_malloc(ctx, (size_t)n * sizeof *rows) : NULL;
  ad_profile_range *rr = rows || !n ? (nr ? ad_malloc(ctx, (size_t)nr * sizeof *rr) : NULL) : NULL;
  if ((n && !rows) || (nr && !rr)) {
    ad_free(ctx, rows, (size_t)n * sizeof *rows);
    return AD_ERR_OOM;
  }
  if (n) collect(ctx, rows);
  if (nr) ranges_collect(ctx, rr);
  double sum = 0;
  int64_t fc = 0, bc = 0;
  for (int64_t i = 0; i < n; i++)
    sum += rows[i].forward_s + rows[i].backward_s, fc += rows[i].forward_calls,
        bc += rows[i].backward_calls;
  bool ok = fprintf(f, "%-24s %10s %11s %10s %11s %7s\n", "op", "fwd calls", "fwd ms", "bwd calls",
                    "bwd ms", "share") >= 0;
  for (int64_t i = 0; i < n && ok; i++) {
    const ad_profile_row *r = &rows[i];
    double own = r->forward_s + r->backward_s;
    ok = fprintf(f, "%-24s %10lld %11.3f %10lld %11.3f %6.1f%%\n", r->op,
                 (long long)r->forward_calls, r->forward_s * 1e3, (long long)r->backward_calls,
                 r->backward_s * 1e3, sum > 0 ? 100 * own / sum : 0.0) >= 0;
  }
  if (ok)
    ok = fprintf(f,
                 "ops: %lld forward and %lld backward calls, %.3f ms; backward passes: %lld, "
                 "%.3f ms in all, of which the hook %.3f ms\n",
                 (long long)fc, (long long)bc, sum * 1e3, (long long)t.backward_passes,
                 t.backward_s * 1e3, t.hook_s * 1e3) >= 0;
  if (ok && nr) ok = fprintf(f, "%-36s %10s %11s\n", "range", "calls", "ms") >= 0;
  for (int64_t i = 0; i < nr && ok; i++)
    ok = fprintf(f, "%-36s %10lld %11.3f\n", rr[i].name, (long long)rr[i].calls,
                 rr[i].seconds * 1e3) >= 0;
  ad_free(ctx, rows, (size_t)n * sizeof *rows);
  ad_free(ctx, rr, (size_t)nr * sizeof *rr);
  if (fflush(f) != 0 || !ok || ferror(f))
    return ad_set_error(ctx, AD_ERR_IO, "profile_print: writing the profile failed");
  return AD_OK;
}
