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

void ad_prof_free(ad_ctx *ctx) {
  ad_prof *p = ctx->prof;
  if (!p) return;
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
  ctx->profiling = true;
  return AD_OK;
}

ad_status ad_profile_stop(ad_ctx *ctx) {
  if (!ctx) return AD_ERR_NULL;
  ad_status st = profile_state_ok(ctx, "profile_stop");
  if (st != AD_OK) return st;
  if (!ctx->prof) return ad_set_error(ctx, AD_ERR_STATE, "profile_stop: no profile was started");
  ctx->profiling = false;
  return AD_OK;
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

static void totals_of(const ad_ctx *ctx, ad_profile_totals *t) {
  const ad_prof *p = ctx->prof;
  *t = (ad_profile_totals){0};
  if (p) *t = (ad_profile_totals){p->passes, p->pass_ns * 1e-9, p->hook_ns * 1e-9};
}

int64_t ad_profile_read(ad_ctx *ctx, ad_profile_row *rows, int64_t cap, ad_profile_totals *totals) {
  if (!ctx) return -1;
  if (cap < 0) {
    ad_set_error(ctx, AD_ERR_ARG, "profile_read: cap %lld is negative", (long long)cap);
    return -1;
  }
  if (cap > 0 && !rows) {
    ad_set_null_error(ctx, "profile_read: rows is NULL with cap %lld", (long long)cap);
    return -1;
  }
  if (totals) totals_of(ctx, totals);
  const ad_prof *p = ctx->prof;
  if (!p) return 0;
  int64_t n = 0;
  for (int id = 0; id < ctx->nops && id < p->cap; id++)
    n += p->ops[id].fwd_calls || p->ops[id].bwd_calls;
  if (n == 0 || cap == 0) return n;
  if (cap >= n) return collect(ctx, rows); /* sorted in place */
  ad_profile_row *all = ad_malloc(ctx, (size_t)n * sizeof *all);
  if (!all) return -1;
  collect(ctx, all);
  memcpy(rows, all, (size_t)cap * sizeof *rows);
  ad_free(ctx, all, (size_t)n * sizeof *all);
  return n;
}

ad_status ad_profile_print(ad_ctx *ctx, FILE *f) {
  if (!ctx) return AD_ERR_NULL;
  if (!f) return ad_set_null_error(ctx, "profile_print: f is NULL");
  if (!ctx->prof) return ad_set_error(ctx, AD_ERR_STATE, "profile_print: no profile was started");
  ad_profile_totals t;
  int64_t n = ad_profile_read(ctx, NULL, 0, &t);
  ad_profile_row *rows = n ? ad_malloc(ctx, (size_t)n * sizeof *rows) : NULL;
  if (n && !rows) return AD_ERR_OOM;
  if (n) collect(ctx, rows);
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
  ad_free(ctx, rows, (size_t)n * sizeof *rows);
  if (fflush(f) != 0 || !ok || ferror(f))
    return ad_set_error(ctx, AD_ERR_IO, "profile_print: writing the profile failed");
  return AD_OK;
}
