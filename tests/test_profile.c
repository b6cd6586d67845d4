/* test_profile.c: the op profile (ad_profile_start): which calls count as
 * forward and backward, per op; self time (ops inside a registered op's
 * forward, the hook's time apart); the rows' order and the read's cap;
 * start, stop and read in every state; its errors, out of memory and a
 * failed write included. */
#include "ad_ext.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

TEST_CTX_SUITE(profile);

#define OK(expr) cr_assert_eq((expr), AD_OK, "%s", ad_last_error(ctx))

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The row of op name in rows[0..n-1], or NULL. */
static const ad_profile_row *row_of(const ad_profile_row *rows, int64_t n, const char *name) {
  for (int64_t i = 0; i < n; i++)
    if (!strcmp(rows[i].op, name)) return &rows[i];
  return NULL;
}

static ad_tensor *param(int64_t r, int64_t c, uint64_t seed) {
  int64_t s[2] = {r, c};
  ad_tensor *t = test_uniform(ctx, seed, AD_F64, 2, s);
  cr_assert_not_null(t);
  OK(ad_tensor_set_requires_grad(t, true));
  return t;
}

/* loss = sum(tanh(x w) * 2): one matmul, tanh, mul_scalar and sum each
 * way, one pass */
static void one_step(ad_tensor *x, ad_tensor *w) {
  ad_tensor *loss =
      ad_sum(ctx, ad_mul_scalar(ctx, ad_tanh(ctx, ad_matmul(ctx, x, w, false, false)), 2.0));
  cr_assert_not_null(loss, "%s", ad_last_error(ctx));
  OK(ad_backward(ctx, loss, NULL));
}

Test(profile, counts_each_op_forward_and_backward) {
  ad_tensor *x = param(64, 48, 1), *w = param(48, 32, 2);
  OK(ad_profile_start(ctx));
  double t0 = now_s();
  for (int step = 0; step < 3; step++) {
    one_step(x, w);
    ad_tape_reset(ctx);
  }
  double wall = now_s() - t0;
  OK(ad_profile_stop(ctx));
  ad_profile_row rows[16];
  ad_profile_totals tot;
  int64_t n = ad_profile_read(ctx, rows, 16, &tot);
  cr_assert_eq(n, 4, "%lld rows", (long long)n);
  static const char *const names[] = {"matmul", "tanh", "mul_scalar", "sum"};
  double sum = 0;
  for (int k = 0; k < 4; k++) {
    const ad_profile_row *r = row_of(rows, n, names[k]);
    cr_assert_not_null(r, "no row for %s", names[k]);
    cr_assert_eq(r->forward_calls, 3, "%s: %lld forward calls", names[k],
                 (long long)r->forward_calls);
    cr_assert_eq(r->backward_calls, 3, "%s: %lld backward calls", names[k],
                 (long long)r->backward_calls);
    cr_assert(r->forward_s > 0 && r->backward_s > 0, "%s: %g s, %g s", names[k], r->forward_s,
              r->backward_s);
    sum += r->forward_s + r->backward_s;
  }
  /* the rows by time, largest first */
  for (int64_t i = 1; i < n; i++)
    cr_assert_geq(rows[i - 1].forward_s + rows[i - 1].backward_s,
                  rows[i].forward_s + rows[i].backward_s);
  cr_assert_eq(tot.backward_passes, 3);
  cr_assert_eq(tot.hook_s, 0.0);
  /* self times add up to no more than the passes and the wall clock */
  double bwd = 0;
  for (int64_t i = 0; i < n; i++) bwd += rows[i].backward_s;
  cr_assert_leq(bwd, tot.backward_s, "nodes %g s, passes %g s", bwd, tot.backward_s);
  cr_assert_leq(sum, wall, "rows %g s, wall %g s", sum, wall);
  cr_assert_leq(tot.backward_s, wall);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

Test(profile, start_clears_stop_keeps_and_nothing_counts_outside) {
  ad_profile_row rows[8];
  ad_profile_totals tot = {.backward_passes = 99};
  /* never started: nothing to read, a stop and a print refused */
  cr_assert_eq(ad_profile_read(ctx, rows, 8, &tot), 0);
  cr_assert_eq(tot.backward_passes, 0);
  cr_assert_eq(ad_profile_stop(ctx), AD_ERR_STATE);
  expect_status_msg(ctx, AD_ERR_STATE, "no profile was started");
  cr_assert_eq(ad_profile_print(ctx, stdout), AD_ERR_STATE);
  expect_status_msg(ctx, AD_ERR_STATE, "no profile was started");
  ad_tensor *x = param(4, 3, 3), *w = param(3, 2, 4);
  one_step(x, w); /* before the start: not counted */
  ad_tape_reset(ctx);
  OK(ad_profile_start(ctx));
  one_step(x, w);
  ad_tape_reset(ctx);
  cr_assert_eq(ad_profile_read(ctx, rows, 8, NULL), 4); /* a running profile reads */
  cr_assert_eq(row_of(rows, 4, "matmul")->forward_calls, 1);
  OK(ad_profile_stop(ctx));
  one_step(x, w); /* after the stop: not counted, the counts kept */
  ad_tape_reset(ctx);
  cr_assert_eq(ad_profile_read(ctx, rows, 8, &tot), 4);
  cr_assert_eq(row_of(rows, 4, "tanh")->backward_calls, 1);
  cr_assert_eq(tot.backward_passes, 1);
  OK(ad_profile_start(ctx)); /* starts over from zero */
  cr_assert_eq(ad_profile_read(ctx, rows, 8, &tot), 0);
  cr_assert_eq(tot.backward_passes, 0);
  ad_tensor *y = ad_exp(ctx, x);
  cr_assert_not_null(y);
  OK(ad_profile_start(ctx)); /* again while running: from zero again */
  cr_assert_eq(ad_profile_read(ctx, rows, 8, NULL), 0);
  /* no-grad mode: applied ops count, nothing to differentiate */
  bool was = ad_set_grad_enabled(ctx, false);
  cr_assert_not_null(ad_exp(ctx, x));
  ad_set_grad_enabled(ctx, was);
  cr_assert_eq(ad_profile_read(ctx, rows, 8, NULL), 1);
  cr_assert_str_eq(rows[0].op, "exp");
  cr_assert_eq(rows[0].forward_calls, 1);
  cr_assert_eq(rows[0].backward_calls, 0);
  /* a failed op is not a call */
  int64_t s3 = 5; /* [4,3] + [5]: no broadcast */
  ad_tensor *v3 = ad_zeros(ctx, AD_F64, 1, &s3);
  cr_assert_null(ad_add(ctx, x, v3));
  ad_clear_error(ctx);
  cr_assert_eq(ad_profile_read(ctx, rows, 8, NULL), 1);
  ad_tensor_free(v3);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

Test(profile, read_with_less_room_gives_the_first_rows) {
  ad_tensor *x = param(32, 32, 5), *w = param(32, 32, 6);
  OK(ad_profile_start(ctx));
  one_step(x, w);
  ad_tape_reset(ctx);
  ad_profile_row all[8], two[2] = {{0}}, none[1] = {{.op = "untouched"}};
  int64_t n = ad_profile_read(ctx, all, 8, NULL);
  cr_assert_eq(n, 4);
  cr_assert_eq(ad_profile_read(ctx, two, 2, NULL), 4);
  for (int i = 0; i < 2; i++) {
    cr_assert_str_eq(two[i].op, all[i].op);
    cr_assert_eq(two[i].forward_s, all[i].forward_s);
    cr_assert_eq(two[i].backward_calls, all[i].backward_calls);
  }
  cr_assert_eq(ad_profile_read(ctx, none, 0, NULL), 4); /* a count only */
  cr_assert_str_eq(none[0].op, "untouched");
  cr_assert_eq(ad_profile_read(ctx, NULL, 0, NULL), 4);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

/* A registered op whose forward applies two built-in ops: those are rows
 * of their own and their time is not the registered op's. */
static ad_status fwd_start, fwd_stop;
static void twice_exp_fwd(const ad_call *c) {
  fwd_start = ad_profile_start(c->ctx);
  fwd_stop = ad_profile_stop(c->ctx);
  ad_clear_error(c->ctx);
  ad_tensor *e = ad_exp(c->ctx, ad_exp(c->ctx, c->in[0]));
  if (e) memcpy(c->out->data, e->data, (size_t)e->size * sizeof(double));
}
static ad_status twice_exp_bwd(const ad_call *c) {
  return ad_call_set_grad(
      c, 0, ad_mul(c->ctx, c->gout, ad_mul(c->ctx, c->out, ad_exp(c->ctx, c->in[0]))));
}

Test(profile, a_registered_ops_forward_less_the_ops_inside_it) {
  OK(ad_profile_start(ctx)); /* before the op is registered: it gets a row all the same */
  ad_op_def d = {.name = "exp_exp",
                 .arity = 1,
                 .flags = AD_OP_ELEMENTWISE,
                 .forward = twice_exp_fwd,
                 .backward = twice_exp_bwd};
  int id = ad_op_register(ctx, &d);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  int64_t s = 4096;
  ad_tensor *x = test_uniform(ctx, 7, AD_F64, 1, &s);
  OK(ad_tensor_set_requires_grad(x, true));
  double t0 = now_s();
  ad_tensor *y = ad_op_apply(ctx, id, 1, &x, NULL);
  double wall = now_s() - t0;
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  ad_profile_row rows[8];
  int64_t n = ad_profile_read(ctx, rows, 8, NULL);
  cr_assert_eq(n, 2, "%lld rows", (long long)n);
  const ad_profile_row *mine = row_of(rows, n, "exp_exp"), *e = row_of(rows, n, "exp");
  cr_assert(mine && e);
  cr_assert_eq(mine->forward_calls, 1);
  cr_assert_eq(e->forward_calls, 2);
  cr_assert_leq(mine->forward_s + e->forward_s, wall, "%g + %g s against %g", mine->forward_s,
                e->forward_s, wall);
  /* from the op's forward the profile can be neither started nor stopped */
  cr_assert_eq(fwd_start, AD_ERR_STATE);
  cr_assert_eq(fwd_stop, AD_ERR_STATE);
  /* backward: the rule's ops are the node's time, not forward calls */
  OK(ad_backward(ctx, ad_sum(ctx, y), NULL));
  n = ad_profile_read(ctx, rows, 8, NULL);
  mine = row_of(rows, n, "exp_exp"), e = row_of(rows, n, "exp");
  cr_assert_eq(mine->backward_calls, 1);
  cr_assert_eq(e->forward_calls, 2, "the backward's exp counted as a forward call");
  cr_assert_eq(e->backward_calls, 0);
  cr_assert_null(row_of(rows, n, "mul"), "the backward's mul counted as a forward call");
  cr_assert_eq(row_of(rows, n, "sum")->backward_calls, 1);
  for (int64_t i = 0; i < s; i++) {
    double xi = ((const double *)x->data)[i];
    cr_assert(test_close(ad_tensor_get(x->grad, i), exp(exp(xi)) * exp(xi), 1e-12));
  }
  ad_tensor_free(x);
}

/* With create_graph the backward's ops are recorded, and still the
 * node's: then differentiating the gradient counts its nodes. */
Test(profile, create_graph_and_second_order) {
  ad_tensor *x = param(8, 8, 8);
  OK(ad_profile_start(ctx));
  ad_tensor *y = ad_sum(ctx, ad_tanh(ctx, x)), *g = NULL;
  OK(ad_grad(ctx, y, NULL, 1, &x, &g, true));
  ad_profile_row rows[16];
  ad_profile_totals tot;
  int64_t n = ad_profile_read(ctx, rows, 16, &tot);
  cr_assert_eq(n, 2, "%lld rows", (long long)n); /* tanh, sum; the rule's ops are the nodes' */
  cr_assert_eq(tot.backward_passes, 1);
  OK(ad_backward(ctx, ad_sum(ctx, g), NULL));
  n = ad_profile_read(ctx, rows, 16, &tot);
  cr_assert_eq(tot.backward_passes, 2);
  cr_assert_eq(row_of(rows, n, "sum")->forward_calls, 2);
  int64_t nodes = 0;
  for (int64_t i = 0; i < n; i++) nodes += rows[i].backward_calls;
  cr_assert_gt(nodes, 2, "the second pass differentiated %lld nodes", (long long)nodes - 2);
  ad_tensor_free(x);
}

/* The hook's time is apart (a node with it would take 50 ms), and start
 * or stop from it are refused. */
typedef struct hook_log {
  int calls;
  ad_status start, stop;
} hook_log;
static void slow_hook(void *ud, const ad_backward_step *s) {
  hook_log *h = ud;
  (void)s;
  h->calls++;
  h->start = ad_profile_start(ctx);
  h->stop = ad_profile_stop(ctx);
  ad_clear_error(ctx);
  double t0 = now_s();
  while (now_s() - t0 < 50e-3) {
  }
}

Test(profile, the_hook_apart) {
  ad_tensor *x = param(4, 4, 9);
  hook_log h = {0};
  ad_set_backward_hook(ctx, slow_hook, &h);
  OK(ad_profile_start(ctx));
  ad_tensor *y = ad_sum(ctx, ad_exp(ctx, x));
  OK(ad_backward(ctx, y, NULL));
  ad_set_backward_hook(ctx, NULL, NULL);
  cr_assert_eq(h.calls, 2);
  cr_assert_eq(h.start, AD_ERR_STATE);
  cr_assert_eq(h.stop, AD_ERR_STATE);
  ad_profile_row rows[8];
  ad_profile_totals tot;
  int64_t n = ad_profile_read(ctx, rows, 8, &tot);
  cr_assert_eq(n, 2);
  cr_assert_geq(tot.hook_s, 100e-3, "hook %g s", tot.hook_s);
  cr_assert_geq(tot.backward_s, tot.hook_s);
  for (int64_t i = 0; i < n; i++)
    cr_assert_lt(rows[i].backward_s, 40e-3, "%s: %g s: the hook's time counted", rows[i].op,
                 rows[i].backward_s);
  ad_tensor_free(x);
}

/* A node whose backward fails is no call (its time is the pass's); the
 * pass is counted. */
static void copy_fwd(const ad_call *c) {
  memcpy(c->out->data, c->in[0]->data, (size_t)c->out->size * sizeof(double));
}
static ad_status failing_bwd(const ad_call *c) {
  return ad_set_error(c->ctx, AD_ERR_ARG, "failing: no gradient here");
}

Test(profile, a_failed_backward_is_no_call) {
  ad_op_def d = {.name = "failing",
                 .arity = 1,
                 .flags = AD_OP_ELEMENTWISE,
                 .forward = copy_fwd,
                 .backward = failing_bwd};
  int id = ad_op_register(ctx, &d);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  ad_tensor *x = param(3, 3, 14);
  OK(ad_profile_start(ctx));
  ad_tensor *y = ad_op_apply(ctx, id, 1, &x, NULL);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, ad_exp(ctx, y)), NULL), AD_ERR_ARG);
  ad_clear_error(ctx);
  ad_profile_row rows[8];
  ad_profile_totals tot;
  int64_t n = ad_profile_read(ctx, rows, 8, &tot);
  cr_assert_eq(n, 3, "%lld rows", (long long)n);
  const ad_profile_row *f = row_of(rows, n, "failing");
  cr_assert_eq(f->forward_calls, 1);
  cr_assert_eq(f->backward_calls, 0, "a failed backward counted");
  cr_assert_eq(f->backward_s, 0.0);
  cr_assert_eq(row_of(rows, n, "exp")->backward_calls, 1);
  cr_assert_eq(tot.backward_passes, 1);
  ad_tensor_free(x);
}

/* A sequence op's gradient passed narrowed by the narrow after it (the
 * backward's fast path for a recurrent layer's output): the narrow's
 * node counts. */
Test(profile, a_narrow_passed_on_counts) {
  int64_t sx[3] = {4, 2, 9}, sw[2] = {9, 3}, sb = 9, sh[2] = {2, 3};
  ad_tensor *xp = test_uniform(ctx, 15, AD_F64, 3, sx), *w = test_uniform(ctx, 16, AD_F64, 2, sw),
            *b = test_uniform(ctx, 17, AD_F64, 1, &sb), *h0 = ad_zeros(ctx, AD_F64, 2, sh);
  OK(ad_tensor_set_requires_grad(xp, true));
  OK(ad_tensor_set_requires_grad(w, true));
  OK(ad_profile_start(ctx));
  ad_tensor *y = ad_gru_seq(ctx, xp, w, b, b, h0, NULL, false);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  ad_tensor *h = ad_narrow(ctx, y, -1, 0, 3); /* [T, N, H] of [T, N, 5H] */
  cr_assert_not_null(h, "%s", ad_last_error(ctx));
  OK(ad_backward(ctx, ad_sum(ctx, h), NULL));
  ad_profile_row rows[8];
  int64_t n = ad_profile_read(ctx, rows, 8, NULL);
  const ad_profile_row *nr = row_of(rows, n, "narrow"), *g = row_of(rows, n, "gru_seq");
  cr_assert(nr && g, "%lld rows", (long long)n);
  cr_assert_eq(nr->forward_calls, 1);
  cr_assert_eq(nr->backward_calls, 1, "the narrow passed on was not counted");
  cr_assert_eq(g->backward_calls, 1);
  cr_assert_null(row_of(rows, n, "pad"), "the narrow's gradient was padded");
  ad_tensor_free(xp);
  ad_tensor_free(w);
  ad_tensor_free(b);
  ad_tensor_free(h0);
}

/* ad_grad's copy of a gradient it does not own (a persistent seed passed
 * on by an add) is the pass's, not a forward call. */
Test(profile, ad_grads_copy_is_the_passs) {
  ad_tensor *x = param(2, 2, 18), *seed = param(2, 2, 19), *g = NULL;
  OK(ad_profile_start(ctx));
  ad_tensor *y = ad_add(ctx, x, x);
  cr_assert_not_null(y);
  OK(ad_grad(ctx, y, seed, 1, &y, &g, true));
  cr_assert_not_null(g);
  ad_profile_row rows[8];
  int64_t n = ad_profile_read(ctx, rows, 8, NULL);
  cr_assert_eq(n, 1, "%lld rows (%s first)", (long long)n, n ? rows[0].op : "");
  cr_assert_str_eq(rows[0].op, "add");
  cr_assert_eq(rows[0].forward_calls, 1);
  ad_tensor_free(x);
  ad_tensor_free(seed);
}

Test(profile, errors) {
  cr_assert_eq(ad_profile_start(NULL), AD_ERR_NULL);
  cr_assert_eq(ad_profile_stop(NULL), AD_ERR_NULL);
  cr_assert_eq(ad_profile_read(NULL, NULL, 0, NULL), -1);
  cr_assert_eq(ad_profile_print(NULL, stdout), AD_ERR_NULL);
  OK(ad_profile_start(ctx));
  ad_profile_row rows[2];
  cr_assert_eq(ad_profile_read(ctx, rows, -1, NULL), -1);
  expect_status_msg(ctx, AD_ERR_ARG, "cap -1 is negative");
  cr_assert_eq(ad_profile_read(ctx, NULL, 2, NULL), -1);
  expect_status_msg(ctx, AD_ERR_NULL, "rows is NULL");
  cr_assert_eq(ad_profile_print(ctx, NULL), AD_ERR_NULL);
  expect_status_msg(ctx, AD_ERR_NULL, "f is NULL");
  FILE *full = fopen("/dev/full", "w");
  if (full) { /* a write that fails */
    cr_assert_eq(ad_profile_print(ctx, full), AD_ERR_IO);
    expect_status_msg(ctx, AD_ERR_IO, "writing the profile failed");
    fclose(full);
  }
}

Test(profile, print_is_a_table_of_the_rows) {
  ad_tensor *x = param(16, 16, 10), *w = param(16, 16, 11);
  OK(ad_profile_start(ctx));
  one_step(x, w);
  one_step(x, w);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_not_null(f);
  OK(ad_profile_print(ctx, f));
  fclose(f);
  ad_profile_row rows[8];
  int64_t n = ad_profile_read(ctx, rows, 8, NULL);
  cr_assert_eq(n, 4);
  /* a header, one line a row in the read's order, the totals */
  char *line = buf;
  cr_assert(!strncmp(line, "op ", 3), "%s", buf);
  for (int64_t i = 0; i < n; i++) {
    line = strchr(line, '\n');
    cr_assert_not_null(line);
    line++;
    char name[64];
    long long fc, bc;
    double fms, bms, share;
    cr_assert_eq(sscanf(line, "%63s %lld %lf %lld %lf %lf%%", name, &fc, &fms, &bc, &bms, &share),
                 6, "%s", line);
    cr_assert_str_eq(name, rows[i].op);
    cr_assert_eq(fc, 2);
    cr_assert_eq(bc, 2);
    cr_assert(share >= 0 && share <= 100);
  }
  line = strchr(line, '\n') + 1;
  cr_assert(strstr(line, "ops: 8 forward and 8 backward calls") && strstr(line, "passes: 2"), "%s",
            line);
  free(buf);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

/* A context on the counting allocator ta, its profile started. */
static ad_ctx *profiled_ctx(test_alloc *ta) {
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, ta);
  cr_assert_not_null(c);
  cr_assert_eq(ad_profile_start(c), AD_OK, "%s", ad_last_error(c));
  return c;
}

/* Out of memory: a start that cannot allocate leaves no profile, and an
 * op registered while one runs fails when the rows cannot grow. */
Test(profile, out_of_memory) {
  for (long k = 0; k < 2; k++) {
    test_alloc ta = {0};
    ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
    cr_assert_not_null(c);
    ta.refuse = TEST_ALLOC_REFUSE_ONLY;
    ta.fail_at = ta.requests + k; /* the profile, then its rows */
    cr_assert_eq(ad_profile_start(c), AD_ERR_OOM);
    cr_assert_eq(ad_profile_read(c, NULL, 0, NULL), 0);
    cr_assert_eq(ad_profile_stop(c), AD_ERR_STATE); /* none was started */
    ad_clear_error(c);
    cr_assert_eq(ad_profile_start(c), AD_OK, "%s", ad_last_error(c)); /* granted now */
    ad_ctx_free(c);
    cr_assert_eq(ta.live, 0, "%ld blocks leaked", ta.live);
  }
  /* a read with less room than rows sorts them in a copy */
  {
    test_alloc tr = {0};
    ad_ctx *c = profiled_ctx(&tr);
    int64_t s = 3;
    ad_tensor *x = ad_zeros(c, AD_F64, 1, &s);
    cr_assert_not_null(ad_exp(c, ad_neg(c, x)), "%s", ad_last_error(c));
    ad_profile_row one[1];
    tr.refuse = TEST_ALLOC_REFUSE_ONLY;
    tr.fail_at = tr.requests;
    cr_assert_eq(ad_profile_read(c, one, 1, NULL), -1);
    expect_status_msg(c, AD_ERR_OOM, "out of memory");
    cr_assert_eq(ad_profile_read(c, one, 1, NULL), 2, "%s", ad_last_error(c)); /* granted now */
    ad_tensor_free(x);
    ad_ctx_free(c);
    cr_assert_eq(tr.live, 0, "%ld blocks leaked", tr.live);
  }
  /* registering ops until the table grows (a count of 64 times a power
   * of two: ad_op_register's doubling), the new table granted and the
   * profile's rows, the next request, refused */
  test_alloc ta = {0};
  ad_ctx *c = profiled_ctx(&ta);
  bool refused = false;
  for (int i = 0; i < 2000 && !refused; i++) {
    char name[32];
    snprintf(name, sizeof name, "op%d", i);
    ad_op_def d = {.name = name, .arity = 1, .flags = AD_OP_ELEMENTWISE, .forward = twice_exp_fwd};
    int count = ad_op_count(c);
    bool grows = count >= 64 && (count & (count - 1)) == 0;
    if (grows) {
      ta.refuse = TEST_ALLOC_REFUSE_ONLY;
      ta.fail_at = ta.requests + 1;
    }
    int id = ad_op_register(c, &d);
    ta.refuse = TEST_ALLOC_GRANT;
    cr_assert(grows || id >= 0, "%s", ad_last_error(c));
    if (grows) {
      cr_assert_lt(id, 0, "the rows' growth was not refused");
      cr_assert_eq(ad_op_count(c), count, "a refused op was registered");
      cr_assert_eq(ad_last_status(c), AD_ERR_OOM, "%s", ad_last_error(c));
      refused = true;
      /* the op can still be registered, and counts */
      id = ad_op_register(c, &d);
      cr_assert_geq(id, 0, "%s", ad_last_error(c));
      int64_t s = 2;
      ad_tensor *x = ad_zeros(c, AD_F64, 1, &s);
      cr_assert_not_null(ad_op_apply(c, id, 1, &x, NULL), "%s", ad_last_error(c));
      ad_profile_row rows[4];
      int64_t n = ad_profile_read(c, rows, 4, NULL);
      cr_assert_not_null(row_of(rows, n, name));
      cr_assert_eq(row_of(rows, n, name)->forward_calls, 1);
      ad_tensor_free(x);
    }
  }
  cr_assert(refused, "no registration reached the table's growth");
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0, "%ld blocks leaked", ta.live);
}

/* Threads: the products split over the library's threads are timed as
 * the caller waits for them, and the counts are the same. */
Test(profile, same_counts_on_three_threads) {
  ad_tensor *x = param(128, 256, 12), *w = param(256, 256, 13);
  ad_profile_row one[8], three[8];
  int64_t n1, n3;
  OK(ad_profile_start(ctx));
  one_step(x, w);
  ad_tape_reset(ctx);
  n1 = ad_profile_read(ctx, one, 8, NULL);
  OK(ad_set_num_threads(3));
  OK(ad_profile_start(ctx));
  one_step(x, w);
  ad_tape_reset(ctx);
  n3 = ad_profile_read(ctx, three, 8, NULL);
  ad_set_num_threads(1);
  cr_assert_eq(n1, n3);
  for (int64_t i = 0; i < n1; i++) {
    const ad_profile_row *r = row_of(three, n3, one[i].op);
    cr_assert_not_null(r);
    cr_assert_eq(r->forward_calls, one[i].forward_calls);
    cr_assert_eq(r->backward_calls, one[i].backward_calls);
  }
  ad_tensor_free(x);
  ad_tensor_free(w);
}

/* ------------------------------------------------------------ ranges */

static void spin(double seconds) {
  double t0 = now_s();
  while (now_s() - t0 < seconds) {
  }
}

/* The range entry named name in r[0..n-1], or NULL. */
static const ad_profile_range *range_of(const ad_profile_range *r, int64_t n, const char *name) {
  for (int64_t i = 0; i < n; i++)
    if (!strcmp(r[i].name, name)) return &r[i];
  return NULL;
}

Test(profile, ranges_sum_their_spans) {
  OK(ad_profile_start(ctx));
  for (int k = 0; k < 2; k++) {
    OK(ad_profile_range_push(ctx, "outer"));
    spin(2e-3);
    OK(ad_profile_range_push(ctx, "inner"));
    spin(3e-3);
    OK(ad_profile_range_pop(ctx));
    OK(ad_profile_range_pop(ctx));
  }
  ad_profile_range r[4];
  int64_t n = ad_profile_read_ranges(ctx, r, 4);
  cr_assert_eq(n, 2);
  cr_assert_str_eq(r[0].name, "outer"); /* the largest time first */
  const ad_profile_range *in = range_of(r, n, "inner"), *out = range_of(r, n, "outer");
  cr_assert_eq(in->calls, 2);
  cr_assert_eq(out->calls, 2);
  cr_assert_geq(in->seconds, 6e-3, "%g s", in->seconds);
  cr_assert_geq(out->seconds, in->seconds + 4e-3, "%g s against %g", out->seconds, in->seconds);
  /* less room: the first entries, and the count */
  ad_profile_range one[1];
  cr_assert_eq(ad_profile_read_ranges(ctx, one, 1), 2);
  cr_assert_str_eq(one[0].name, "outer");
  cr_assert_eq(ad_profile_read_ranges(ctx, NULL, 0), 2);
  /* no op ran: no op rows */
  cr_assert_eq(ad_profile_read(ctx, NULL, 0, NULL), 0);
  /* the next start empties them */
  OK(ad_profile_start(ctx));
  cr_assert_eq(ad_profile_read_ranges(ctx, r, 4), 0);
}

Test(profile, ranges_outside_a_running_profile) {
  /* never started: nothing, and nothing to read */
  OK(ad_profile_range_push(ctx, "off"));
  OK(ad_profile_range_pop(ctx));
  OK(ad_profile_range_pop(ctx)); /* no range open: nothing */
  cr_assert_eq(ad_profile_read_ranges(ctx, NULL, 0), 0);
  /* pushed before the start, popped after: not counted */
  OK(ad_profile_range_push(ctx, "early"));
  OK(ad_profile_start(ctx));
  OK(ad_profile_range_pop(ctx));
  cr_assert_eq(ad_profile_read_ranges(ctx, NULL, 0), 0);
  /* a stop closes what is open, uncounted */
  OK(ad_profile_range_push(ctx, "a"));
  OK(ad_profile_range_push(ctx, "b"));
  OK(ad_profile_stop(ctx));
  OK(ad_profile_range_pop(ctx));
  OK(ad_profile_range_pop(ctx));
  cr_assert_eq(ad_profile_read_ranges(ctx, NULL, 0), 0);
  /* and the depth starts from nothing again: all 32 open */
  OK(ad_profile_start(ctx));
  for (int k = 0; k < AD_PROFILE_RANGE_DEPTH; k++) OK(ad_profile_range_push(ctx, "deep"));
  cr_assert_eq(ad_profile_range_push(ctx, "one too many"), AD_ERR_STATE);
  expect_status_msg(ctx, AD_ERR_STATE, "is an ad_profile_range_pop missing?");
  for (int k = 0; k < AD_PROFILE_RANGE_DEPTH; k++) OK(ad_profile_range_pop(ctx));
  ad_profile_range r[2];
  cr_assert_eq(ad_profile_read_ranges(ctx, r, 2), 1);
  cr_assert_eq(r[0].calls, AD_PROFILE_RANGE_DEPTH);
}

Test(profile, range_errors) {
  cr_assert_eq(ad_profile_range_push(NULL, "x"), AD_ERR_NULL);
  cr_assert_eq(ad_profile_range_pop(NULL), AD_ERR_NULL);
  cr_assert_eq(ad_profile_read_ranges(NULL, NULL, 0), -1);
  OK(ad_profile_start(ctx));
  cr_assert_eq(ad_profile_range_push(ctx, NULL), AD_ERR_NULL);
  expect_status_msg(ctx, AD_ERR_NULL, "name is NULL");
  cr_assert_eq(ad_profile_range_push(ctx, ""), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "a name of 0 bytes");
  char big[300];
  memset(big, 'r', sizeof big - 1);
  big[sizeof big - 1] = 0;
  cr_assert_eq(ad_profile_range_push(ctx, big), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "a name of 299 bytes");
  big[256] = 0; /* 256 bytes: one too many */
  cr_assert_eq(ad_profile_range_push(ctx, big), AD_ERR_ARG);
  expect_status_msg(ctx, AD_ERR_ARG, "a name of 256 bytes");
  big[255] = 0; /* 255 bytes: taken */
  OK(ad_profile_range_push(ctx, big));
  OK(ad_profile_range_pop(ctx));
  ad_profile_range r[1];
  cr_assert_eq(ad_profile_read_ranges(ctx, r, -1), -1);
  expect_status_msg(ctx, AD_ERR_ARG, "cap -1 is negative");
  cr_assert_eq(ad_profile_read_ranges(ctx, NULL, 1), -1);
  expect_status_msg(ctx, AD_ERR_NULL, "out is NULL");
  cr_assert_eq(ad_profile_read_ranges(ctx, r, 1), 1);
  cr_assert_eq(strlen(r[0].name), 255);
}

/* A new name that cannot have its entry opens nothing: the pop after it
 * closes the range opened before. */
Test(profile, range_out_of_memory) {
  test_alloc ta = {0};
  ad_ctx *c = profiled_ctx(&ta);
  cr_assert_eq(ad_profile_range_push(c, "kept"), AD_OK);
  ta.refuse = TEST_ALLOC_REFUSE_FROM;
  ta.fail_at = ta.requests;
  cr_assert_eq(ad_profile_range_push(c, "refused"), AD_ERR_OOM);
  cr_assert_eq(ad_profile_range_push(c, "kept"), AD_OK); /* a known name: no allocation */
  cr_assert_eq(ad_profile_range_pop(c), AD_OK);
  cr_assert_eq(ad_profile_range_pop(c), AD_OK);
  ad_profile_range r[4];
  cr_assert_eq(ad_profile_read_ranges(c, r, 4), 1);
  cr_assert_str_eq(r[0].name, "kept");
  cr_assert_eq(r[0].calls, 2);
  cr_assert_eq(ad_profile_read_ranges(c, r, 0), 1); /* a count needs no copy */
  /* a print that cannot have its copies writes nothing */
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_not_null(f);
  cr_assert_eq(ad_profile_print(c, f), AD_ERR_OOM);
  fclose(f);
  cr_assert_eq(len, 0, "wrote %s", buf);
  free(buf);
  ta.refuse = TEST_ALLOC_GRANT;
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0, "%ld blocks leaked", ta.live);
}

Test(profile, print_shows_the_ranges) {
  OK(ad_profile_start(ctx));
  OK(ad_profile_range_push(ctx, "phase one"));
  OK(ad_profile_range_pop(ctx));
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_not_null(f);
  OK(ad_profile_print(ctx, f));
  fclose(f);
  char *at = strstr(buf, "\nrange ");
  cr_assert_not_null(at, "%s", buf);
  long long calls;
  double ms;
  cr_assert_eq(sscanf(strstr(at, "phase one") + 9, "%lld %lf", &calls, &ms), 2, "%s", buf);
  cr_assert_eq(calls, 1);
  cr_assert_geq(ms, 0);
  free(buf);
}
