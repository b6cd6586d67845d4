/* test_thread_bits.c: docs/performance.md "Threads" promises the same bits
 * on any number of threads with the built-in GEMM. This sweeps every
 * registered op: each variant of its sample inputs (f64 and f32), grown
 * along one axis until its loops cross the thread thresholds, runs forward,
 * ad_backward with a random seed (the grad_into fast paths), ad_grad with
 * create_graph and a second-order ad_grad through that, on 1, 2 and 3
 * threads, and compares every output and gradient byte for byte (NaN
 * payloads included). It logs how many variants it compared and how many
 * of them the pool actually split (a variant it could not grow runs too,
 * small, and is counted apart). Under AddressSanitizer (about 27x slower in
 * CI's debug build) each op runs in one dtype only, float64 and float32 by
 * turns over the op ids, on 1 and 3 threads only (3 splits every loop 2
 * does, in more pieces, and an odd count's uneven ends), and the log says
 * so; the normal build runs both dtypes on 1, 2 and 3. */
#include "ad_ext.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_alloc.h"

/* Findings and counts go to stderr too: the TAP output meson reads drops
 * Criterion's log lines, and stderr is kept in its log. */
#define TB_LOG(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr))

TEST_CTX_SUITE(thread_bits);

#if defined(__SANITIZE_ADDRESS__)
#define TB_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TB_SANITIZED 1
#endif
#endif
#ifndef TB_SANITIZED
#define TB_SANITIZED 0
#endif

/* The thread counts the sweep runs on, one pass each; pass 0 (one
 * thread) is the reference the others are compared with. */
#if TB_SANITIZED
static const int tb_threads[] = {1, 3};
#else
static const int tb_threads[] = {1, 2, 3};
#endif
#define TB_PASSES ((int)(sizeof tb_threads / sizeof tb_threads[0]))

/* The elements the largest grown input reaches: the elementwise loops and
 * reductions split above 32K elements (a lane is one thread's). */
#define TB_TARGET 34000

/* ---------------------------------------------------------- records */

/* What one variant computed on one thread count: a hash of each output
 * and gradient's bytes (NaN payloads included; a missing tensor hashes
 * apart from any tensor). */
#define TB_PIECES 80
typedef struct rec {
  int pieces;
  uint64_t h[TB_PIECES];
  char what[TB_PIECES][32];
  bool split, second;
} rec;

static void rec_add(rec *r, const char *what, const ad_tensor *t) {
  cr_assert_lt(r->pieces, TB_PIECES);
  uint64_t h = 1;
  if (t) {
    h = test_hash_bytes(t->data, (size_t)t->size * ad_dtype_size(t->dtype));
    h ^= test_hash_bytes(t->shape, sizeof t->shape[0] * (size_t)t->ndim) * 31 + (uint64_t)t->dtype;
  }
  snprintf(r->what[r->pieces], sizeof r->what[0], "%s", what);
  r->h[r->pieces++] = h;
}

/* ---------------------------------------------------------- growing inputs */

/* A copy of t with axis ax repeated f times; float values scaled by
 * 1 + 1e-3 u (u uniform in [0, 1)) when vary (the inputs to differentiate)
 * so that the copies differ but keep their sign and range; constants (masks,
 * conditions, indices) kept. A 0-d t (a scalar input, anywhere in the
 * list) has no axis: it is copied as it is, its shape entries past ndim
 * never read (a reused header leaves an earlier tensor's there). */
static ad_tensor *grow(ad_ctx *c, ad_rng *rng, const ad_tensor *t, int ax, int64_t f, bool vary) {
  int64_t shape[AD_MAX_DIMS];
  memcpy(shape, t->shape, sizeof shape[0] * (size_t)t->ndim);
  if (t->ndim == 0)
    f = 1;
  else
    shape[ax] *= f;
  ad_tensor *g = ad_zeros(c, t->dtype, t->ndim, shape);
  if (!g) return NULL;
  int64_t inner = 1, outer = 1, len = t->ndim ? t->shape[ax] : 1;
  for (int d = ax + 1; d < t->ndim; d++) inner *= t->shape[d];
  for (int d = 0; d < ax; d++) outer *= t->shape[d];
  size_t es = ad_dtype_size(t->dtype);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < len * f; i++)
      memcpy((char *)g->data + ((o * len * f + i) * inner) * es,
             (const char *)t->data + ((o * len + i % len) * inner) * es, (size_t)inner * es);
  for (int64_t i = 0; vary && f > 1 && i < g->size; i++) {
    double u = (double)(ad_rng_next(rng) >> 11) * 0x1p-53;
    if (t->dtype == AD_F64)
      ((double *)g->data)[i] *= 1 + 1e-3 * u;
    else if (t->dtype == AD_F32)
      ((float *)g->data)[i] *= (float)(1 + 1e-3 * u);
  }
  return g;
}

/* Grows the sample's inputs by strategy s (0: axis 0 of every input whose
 * first dim is in[0]'s; 1: the last axis of every input whose last dim is
 * in[0]'s; 2: axis 0 of in[0] alone; 3: the batch of a sequence op, whose
 * x has it on seq_batch_axis, a trailing mask on its second); false when s
 * does not apply. */
static bool grow_inputs(ad_ctx *c, ad_rng *rng, int s, int n, ad_tensor *const *in, ad_tensor **out,
                        int seq_batch_axis, bool mask_last) {
  const ad_tensor *x = in[0];
  if (x->ndim == 0 || x->size == 0) return false;
  int64_t big = 0;
  for (int i = 0; i < n; i++) big = in[i]->size > big ? in[i]->size : big;
  int64_t f = (TB_TARGET + big - 1) / big;
  if (f < 2) return false;
  for (int i = 0; i < n; i++) {
    const ad_tensor *t = in[i];
    int ax = -1;
    if (s == 0 && t->ndim >= 1 && t->shape[0] == x->shape[0]) ax = 0;
    if (s == 1 && t->ndim >= 1 && t->shape[t->ndim - 1] == x->shape[x->ndim - 1]) ax = t->ndim - 1;
    if (s == 2 && i == 0) ax = 0;
    /* the sequence ops: x [T, N, G H] (or [N, T, G H]), w_hh, biases, the
     * states [N, H] and the mask [T, N]: the batch N, whose row blocks are
     * the threads' */
    if (s == 3 && i == 0) ax = seq_batch_axis;
    if (s == 3 && i > 0 && t->ndim == 2 && t->shape[0] == x->shape[seq_batch_axis] &&
        t->shape[1] != x->shape[x->ndim - 1])
      ax = 0; /* a state */
    if (s == 3 && i == n - 1 && mask_last && t->ndim == 2) ax = 1;
    out[i] = grow(c, rng, t, ax < 0 ? 0 : ax, ax < 0 ? 1 : f, ad_tensor_requires_grad(t));
    cr_assert_not_null(out[i], "%s", ad_last_error(c));
    if (ad_tensor_requires_grad(t)) ad_tensor_set_requires_grad(out[i], true);
  }
  return true;
}

/* One run of op id on in at the current thread count, recorded into r. */
static bool run_once(ad_ctx *c, int id, int n, ad_tensor *const *in, const ad_attrs *at,
                     ad_tensor **seed, uint64_t seed_no, rec *r, bool *second_ran) {
  char what[48];
  ad_tensor *y = ad_op_apply(c, id, n, in, at);
  if (!y) return false;
  rec_add(r, "forward", y);
  bool diff = (y->dtype == AD_F32 || y->dtype == AD_F64) && ad_tensor_requires_grad(y);
  if (!diff) {
    ad_tape_reset(c);
    return true;
  }
  if (!*seed) {
    /* test_uniform, not ad_rand: ad_rand is serial (it compares nothing
     * between thread counts) and was a quarter of the sweep under ASan */
    *seed = test_uniform(c, seed_no, y->dtype, y->ndim, y->shape);
    cr_assert_not_null(*seed);
  }
  /* ad_backward: the grad_into fast paths */
  for (int i = 0; i < n; i++) ad_tensor_zero_grad(in[i]);
  cr_assert_eq(ad_backward(c, y, *seed), AD_OK, "%s", ad_last_error(c));
  for (int i = 0; i < n; i++) {
    snprintf(what, sizeof what, "backward: input %d", i);
    rec_add(r, what, in[i]->grad);
    ad_tensor_zero_grad(in[i]);
  }
  ad_tape_reset(c);
  /* ad_backward again, each input to differentiate made by an op (x * 1):
   * the fast paths that store into a new temporary (AD_OP_GRAD_INTO_TEMPS) */
  ad_tensor *via[AD_SAMPLE_MAX_IN];
  for (int i = 0; i < n; i++) {
    via[i] = ad_tensor_requires_grad(in[i]) ? ad_mul_scalar(c, in[i], 1) : in[i];
    cr_assert_not_null(via[i], "%s", ad_last_error(c));
  }
  y = ad_op_apply(c, id, n, via, at);
  cr_assert_not_null(y, "%s", ad_last_error(c));
  cr_assert_eq(ad_backward(c, y, *seed), AD_OK, "%s", ad_last_error(c));
  for (int i = 0; i < n; i++) {
    snprintf(what, sizeof what, "backward via an op: input %d", i);
    rec_add(r, what, in[i]->grad);
    ad_tensor_zero_grad(in[i]);
  }
  ad_tape_reset(c);
  /* ad_grad with create_graph, then a second order through it */
  ad_tensor *wrt[AD_SAMPLE_MAX_IN], *g[AD_SAMPLE_MAX_IN] = {0}, *gg[AD_SAMPLE_MAX_IN] = {0};
  int m = 0;
  for (int i = 0; i < n; i++)
    if (ad_tensor_requires_grad(in[i])) wrt[m++] = in[i];
  y = ad_op_apply(c, id, n, in, at);
  cr_assert_not_null(y);
  cr_assert_eq(ad_grad(c, y, *seed, m, wrt, g, true), AD_OK, "%s", ad_last_error(c));
  ad_tensor *s = NULL;
  for (int i = 0; i < m; i++) {
    snprintf(what, sizeof what, "grad: input %d", i);
    rec_add(r, what, g[i]);
    if (g[i] && ad_tensor_requires_grad(g[i])) {
      /* s = sum_i sum(g_i * g_i): its gradient goes through the backward */
      ad_tensor *t = ad_sum(c, ad_mul(c, g[i], g[i]));
      s = s ? ad_add(c, s, t) : t;
      cr_assert_not_null(s, "%s", ad_last_error(c));
    }
  }
  if (s) {
    cr_assert_eq(ad_grad(c, s, NULL, m, wrt, gg, false), AD_OK, "%s", ad_last_error(c));
    for (int i = 0; i < m; i++) {
      snprintf(what, sizeof what, "second order: input %d", i);
      rec_add(r, what, gg[i]);
    }
    *second_ran = true;
  }
  ad_tape_reset(c);
  return true;
}

/* One variant as the sweep met it. */
typedef struct vrec {
  const char *op;
  ad_dtype dt;
  int variant;
  bool grown;
  rec r[TB_PASSES]; /* on tb_threads[pass] threads */
} vrec;

typedef struct sweep {
  vrec *v;
  int n, cap;
  int ops;
} sweep;

static vrec *sweep_at(sweep *sw, int pass, int k) {
  if (pass == 0) {
    if (sw->n == sw->cap) {
      sw->cap = sw->cap ? 2 * sw->cap : 256;
      sw->v = realloc(sw->v, (size_t)sw->cap * sizeof *sw->v);
      cr_assert_not_null(sw->v);
    }
    memset(&sw->v[sw->n], 0, sizeof sw->v[0]);
    return &sw->v[sw->n++];
  }
  cr_assert_lt(k, sw->n, "pass %d met more variants than the first", pass);
  return &sw->v[k];
}

/* Runs one variant at the current thread count into v->r[pass]. */
static void run_variant(ad_ctx *c, const char *op, int id, ad_dtype dt, int variant, int n,
                        ad_tensor *const *in, const ad_attrs *at, bool grown, vrec *v, int pass) {
  if (pass == 0) *v = (vrec){.op = op, .dt = dt, .variant = variant, .grown = grown};
  cr_assert(v->op == op && v->dt == dt && v->variant == variant, "the passes differ in order");
  rec *r = &v->r[pass];
  ad_tensor *seed = NULL;
  ad_thread_stats_get(NULL, true);
  bool ok = run_once(c, id, n, in, at, &seed, 1000 + (uint64_t)variant, r, &r->second);
  cr_assert(ok, "%s %s variant %d on %d threads: %s", op, ad_dtype_name(dt), variant,
            tb_threads[pass], ad_last_error(c));
  ad_thread_stats st;
  ad_thread_stats_get(&st, true);
  r->split = st.loops > 0;
  ad_tensor_free(seed);
}

/* Every registered op with sample inputs, each variant grown where it can
 * be, at the current thread count. */
static void sweep_ops(ad_ctx *c, sweep *sw, int pass, int only) {
  int k = 0;
  sw->ops = 0;
  for (int id = 0; id < ad_op_count(c); id++) {
    const ad_op_def *def = ad_op_get(c, id);
    if (!def->sample) {
      if (pass == 0) cr_log_info("%s: no sample inputs; swept by hand below", def->name);
      continue;
    }
    sw->ops++;
    bool seq = !strcmp(def->name, "lstm_seq") || !strcmp(def->name, "gru_seq");
    for (int dti = 0; dti < 2; dti++) {
      ad_dtype dt = dti ? AD_F32 : AD_F64;
      if (TB_SANITIZED && dti != id % 2) continue; /* one dtype per op, alternating */
      for (int variant = 0; variant < 16; variant++) {
        ad_rng rng;
        ad_rng_seed(&rng, 7 + (uint64_t)variant);
        ad_tensor *in[AD_SAMPLE_MAX_IN] = {0}, *big[AD_SAMPLE_MAX_IN] = {0};
        ad_attrs at;
        memset(&at, 0, sizeof at);
        ad_sample_call sc = {
            .ctx = c, .rng = &rng, .dtype = dt, .variant = variant, .in = in, .attrs = &at};
        int n = def->sample(&sc);
        cr_assert(n >= 0, "%s: sample failed: %s", def->name, ad_last_error(c));
        if (n == 0) break;
        if (only >= 0 && only != k) { /* a retry of another variant */
          for (int i = 0; i < n; i++) ad_tensor_free(in[i]);
          k++;
          continue;
        }
        bool grown = false;
        for (int s = seq ? 3 : 0; s < (seq ? 4 : 3) && !grown; s++) {
          bool mask = seq && n == 6;
          if (!grow_inputs(c, &rng, s, n, in, big, at.axis ? 0 : 1, mask)) continue;
          ad_tensor *y = ad_op_apply(c, id, n, big, &at);
          grown = y != NULL;
          if (!y && seq) cr_log_warn("%s v%d s%d: %s", def->name, variant, s, ad_last_error(c));
          ad_tape_reset(c);
          if (!grown)
            for (int i = 0; i < n; i++) ad_tensor_free(big[i]), big[i] = NULL;
        }
        if (only < 0 || only == k)
          run_variant(c, def->name, id, dt, variant, n, grown ? big : in, &at, grown,
                      sweep_at(sw, only < 0 ? pass : 1, k), pass);
        k++;
        for (int i = 0; i < n; i++) ad_tensor_free(in[i]), ad_tensor_free(big[i]);
      }
    }
  }
}

/* Whether variant v was split on every pass with more than one thread. */
static bool split_on_all(const vrec *v) {
  for (int t = 1; t < TB_PASSES; t++)
    if (!v->r[t].split) return false;
  return true;
}

/* A loop runs on the caller alone for a while after the caller waited
 * long for a worker (a busy machine); a variant split on some pass with
 * more than one thread and not on another runs again there, up to 4
 * times, 50 ms apart. */
static void retry_unsplit(ad_ctx *c, sweep *sw) {
  for (int k = 0; k < sw->n; k++) {
    bool some = false;
    for (int t = 1; t < TB_PASSES; t++) some |= sw->v[k].r[t].split;
    for (int t = 1; t < TB_PASSES && some; t++)
      for (int tries = 0; tries < 4 && !sw->v[k].r[t].split; tries++) {
        nanosleep(&(struct timespec){0, 50000000}, NULL);
        cr_assert_eq(ad_set_num_threads(tb_threads[t]), AD_OK);
        memset(&sw->v[k].r[t], 0, sizeof sw->v[k].r[t]);
        sweep_ops(c, sw, t, k);
      }
  }
}

/* The thread counts as the log writes them, "1, 2, 3". */
static const char *tb_thread_list(void) {
  static char buf[32];
  int n = 0;
  for (int t = 0; t < TB_PASSES; t++)
    n += snprintf(buf + n, sizeof buf - (size_t)n, "%s%d", t ? ", " : "", tb_threads[t]);
  return buf;
}

/* Compares the passes; returns the variants that differ. */
static int sweep_report(const sweep *sw, const char *what, int ops) {
  int differ = 0, split = 0, second = 0;
  for (int k = 0; k < sw->n; k++) {
    const vrec *v = &sw->v[k];
    bool d = false;
    for (int t = 1; t < TB_PASSES; t++) {
      cr_assert_eq(v->r[t].pieces, v->r[0].pieces, "%s: pieces differ", v->op);
      for (int p = 0; p < v->r[0].pieces; p++)
        if (v->r[t].h[p] != v->r[0].h[p]) {
          d = true;
          TB_LOG("%s %s variant %d (%s): %s differs on %d threads from 1", v->op,
                 ad_dtype_name(v->dt), v->variant, v->grown ? "grown" : "sample size",
                 v->r[0].what[p], tb_threads[t]);
        }
    }
    differ += d;
    split += split_on_all(v);
    second += v->r[0].second;
  }
  TB_LOG("thread_bits: %s: %d %s, %d variants compared on %s threads (%d split on every "
         "count above 1, %d with a second order): %d differ",
         what, ops, what, sw->n, tb_thread_list(), split, second, differ);
  return differ;
}

Test(thread_bits, every_op_same_bits_on_1_2_3_threads, .timeout = 600) {
  sweep sw = {0};
  if (TB_SANITIZED)
    TB_LOG("thread_bits: under AddressSanitizer each op runs in one dtype (float64 and "
           "float32 by turns), not both, on 1 and 3 threads (not 2)");
  for (int pass = 0; pass < TB_PASSES; pass++) {
    cr_assert_eq(ad_set_num_threads(tb_threads[pass]), AD_OK);
    sweep_ops(ctx, &sw, pass, -1);
  }
  retry_unsplit(ctx, &sw);
  ad_set_num_threads(1);
  int differ = sweep_report(&sw, "ops", sw.ops);
  for (int k = 0; k < sw.n; k++)
    if (!split_on_all(&sw.v[k]))
      cr_log_info("%s %s variant %d (%s): not split", sw.v[k].op, ad_dtype_name(sw.v[k].dt),
                  sw.v[k].variant, sw.v[k].grown ? "grown" : "sample size");
  free(sw.v);
  cr_assert_eq(differ, 0, "%d variants differ across thread counts", differ);
}

static void rec_need(ad_ctx *c, rec *r, const char *what, const ad_tensor *t) {
  cr_assert_not_null(t, "%s: %s", what, ad_last_error(c));
  rec_add(r, what, t);
}

/* The ops without sample inputs (no gradient: comparisons, argmax, argmin,
 * detach) and an integer dtype (flip of i32), by hand, on [400, 300] with
 * NaNs and ties. */
static void no_sample_ops(ad_ctx *c, rec *r) {
  for (int dti = 0; dti < 2; dti++) {
    ad_dtype dt = dti ? AD_F32 : AD_F64;
    ad_rng rng;
    ad_rng_seed(&rng, 99);
    int64_t sh[2] = {400, 300}, row[2] = {1, 300};
    ad_tensor *a = ad_rand(c, &rng, dt, 2, sh, -1, 1), *b = ad_rand(c, &rng, dt, 2, row, -1, 1);
    cr_assert(a && b);
    for (int64_t i = 0; i < a->size; i += 37) ad_tensor_set(a, i, i % 3 ? 0.5 : NAN);
    rec_need(c, r, "gt", ad_gt(c, a, b));
    rec_need(c, r, "eq", ad_eq(c, a, a));
    rec_need(c, r, "le", ad_le(c, b, a));
    for (int ax = 0; ax < 2; ax++) {
      rec_need(c, r, "argmax", ad_argmax(c, a, ax, false));
      rec_need(c, r, "argmin", ad_argmin(c, a, ax, true));
    }
    rec_need(c, r, "detach", ad_detach(c, a));
    int32_t *v = malloc((size_t)a->size * sizeof *v);
    cr_assert_not_null(v);
    for (int64_t i = 0; i < a->size; i++) v[i] = (int32_t)(i * 7919 % 1000);
    ad_tensor *i32 = ad_from_data(c, AD_I32, 2, sh, v);
    free(v);
    int axes[2] = {0, 1};
    rec_need(c, r, "flip i32", ad_flip(c, i32, 2, axes));
    ad_tape_reset(c);
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(i32);
  }
}

/* An op sample whose 0-d input is not the first (x [3,4], a scalar s):
 * grow_inputs grows x and copies s as it is, whatever s's header holds
 * past ndim. s persistent (its unused dims 0: no value was copied before,
 * s came out 0), and s a temporary whose header in the arena held a
 * [40, 3] op result's before the reset (40 values were copied into s's
 * copy of 1: a heap overflow under AddressSanitizer). */
Test(thread_bits, grows_a_0d_input_that_is_not_the_first) {
  static const int64_t xs[2] = {3, 4}, old[2] = {40, 3};
  for (int k = 0; k < 2; k++) {
    ad_tensor *z = ad_zeros(ctx, AD_F64, 2, old);
    cr_assert_not_null(ad_mul_scalar(ctx, z, 2), "%s", ad_last_error(ctx));
    ad_tape_reset(ctx);
    ad_tensor_free(z);
    ad_tensor *in[2] = {NULL, k ? ad_scalar(ctx, AD_F64, 2.5) : ad_full(ctx, AD_F64, 0, xs, 2.5)};
    in[0] = ad_full(ctx, AD_F64, 2, xs, 1.5);
    cr_assert(in[0] && in[1], "%s", ad_last_error(ctx));
    if (!k) ad_tensor_set_requires_grad(in[1], true);
    ad_tensor *big[2];
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    cr_assert(grow_inputs(ctx, &rng, 0, 2, in, big, 1, false));
    cr_assert_eq(big[0]->ndim, 2);
    cr_assert_eq(big[0]->shape[0], 3 * ((TB_TARGET + 11) / 12));
    cr_assert_eq(big[1]->ndim, 0, "s %s", k ? "temporary" : "persistent");
    cr_assert_eq(ad_tensor_get(big[1], 0), 2.5, "s %s: its copy came out %g",
                 k ? "temporary" : "persistent", ad_tensor_get(big[1], 0));
    cr_assert_eq(ad_tensor_requires_grad(big[1]), !k);
    ad_tensor *y = ad_mul(ctx, big[0], big[1]); /* the op runs on the grown pair */
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_tensor_get(y, y->size - 1), 1.5 * 2.5);
    ad_tape_reset(ctx);
    ad_tensor_free(in[0]), ad_tensor_free(big[0]), ad_tensor_free(big[1]);
    if (!k) ad_tensor_free(in[1]);
  }
}

Test(thread_bits, ops_without_samples_same_bits_on_1_2_3_threads) {
  rec r[3] = {{0}};
  for (int t = 0; t < 3; t++) {
    cr_assert_eq(ad_set_num_threads(t + 1), AD_OK);
    no_sample_ops(ctx, &r[t]);
  }
  ad_set_num_threads(1);
  int differ = 0;
  for (int t = 1; t < 3; t++)
    for (int p = 0; p < r[0].pieces; p++)
      if (r[t].h[p] != r[0].h[p]) {
        differ++;
        TB_LOG("%s (piece %d) differs on %d threads from 1", r[0].what[p], p, t + 1);
      }
  TB_LOG("thread_bits: %d results of the ops without samples compared: %d differ", r[0].pieces,
         differ);
  cr_assert_eq(differ, 0);
}
