/* Scopes (ad_scope_push / ad_scope_pop) and how graph dumps draw them:
 * nested clusters, the collapsed view (AD_DOT_COLLAPSE), the trace's scope
 * line, the errors, and what an ad_tape_reset keeps. */
#include "ad.h"
#include "ad_ext.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TEST_CTX_SUITE(scope);

#define OK(expr) cr_assert_eq((expr), AD_OK, "%s", ad_last_error(ctx))
#define STEPS    5

/* The dump of root with flags, as a string (caller frees). */
static char *dump(ad_graph *g, ad_tensor *root, int flags) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_not_null(f);
  OK(ad_graph_dot(g, f, root, flags));
  fclose(f);
  return buf;
}

/* The toy recurrence h = tanh(h W + x_t), STEPS steps, each in scope
 * "t=k" inside "rnn", and L = sum(h) outside every scope. Names the
 * leaves h0, W, x0.. in g. Returns L. */
static ad_tensor *unrolled_rnn(ad_graph *g) {
  int64_t ws[2] = {2, 2}, hs[2] = {1, 2};
  double wv[4] = {0.5, -0.3, 0.2, 0.8}, hv[2] = {0.1, -0.2};
  ad_tensor *W = test_param(ctx, 2, ws, wv);
  ad_tensor *h = ad_from_data(ctx, AD_F64, 2, hs, hv);
  OK(ad_graph_name(g, W, "W"));
  OK(ad_graph_name(g, h, "h0"));
  OK(ad_scope_push(ctx, "rnn"));
  for (int t = 0; t < STEPS; t++) {
    double xv[2] = {0.1 * t, -0.05 * t};
    ad_tensor *x = ad_from_data(ctx, AD_F64, 2, hs, xv);
    char lab[16];
    snprintf(lab, sizeof lab, "x%d", t);
    OK(ad_graph_name(g, x, lab));
    snprintf(lab, sizeof lab, "t=%d", t);
    OK(ad_scope_push(ctx, lab));
    cr_assert_eq(ad_scope_depth(ctx), 2);
    h = ad_tanh(ctx, ad_add(ctx, ad_matmul(ctx, h, W, false, false), x));
    OK(ad_scope_pop(ctx));
  }
  OK(ad_scope_pop(ctx));
  cr_assert_eq(ad_scope_depth(ctx), 0);
  ad_tensor *L = ad_sum(ctx, h);
  cr_assert_not_null(L, "%s", ad_last_error(ctx));
  OK(ad_graph_name(g, L, "L"));
  return L;
}

/* The line declaring node n<id> in text ("  n5 [..."), up to its end. */
static const char *node_line(const char *text, int id) {
  char key[24];
  snprintf(key, sizeof key, "\n  n%d [", id);
  const char *p = strstr(text, key);
  cr_assert_not_null(p, "no node n%d in:\n%s", id, text);
  return p + 1;
}

static bool line_has(const char *line, const char *what) {
  const char *end = strchr(line, '\n');
  const char *p = strstr(line, what);
  return p && (!end || p < end);
}

Test(scope, introspection_interns_groups) {
  int64_t s1[1] = {2};
  ad_tensor *a = test_param(ctx, 1, s1, NULL);
  ad_tensor *outside = ad_neg(ctx, a);
  OK(ad_scope_push(ctx, "enc"));
  ad_tensor *e1 = ad_neg(ctx, a);
  OK(ad_scope_push(ctx, "blk"));
  ad_tensor *b1 = ad_neg(ctx, a);
  OK(ad_scope_pop(ctx));
  ad_tensor *e2 = ad_neg(ctx, a); /* enc again, after its inner scope */
  OK(ad_scope_pop(ctx));
  OK(ad_scope_push(ctx, "dec"));
  OK(ad_scope_push(ctx, "blk")); /* same label, other parent: another group */
  ad_tensor *b2 = ad_neg(ctx, a);
  OK(ad_scope_pop(ctx));
  OK(ad_scope_pop(ctx));
  OK(ad_scope_push(ctx, "enc")); /* reopened: the same group */
  OK(ad_scope_push(ctx, "blk"));
  ad_tensor *b3 = ad_neg(ctx, a);
  OK(ad_scope_pop(ctx));
  OK(ad_scope_pop(ctx));

  cr_assert_eq(ad_tensor_scope(outside), -1);
  cr_assert_eq(ad_tensor_scope(a), -1, "a leaf belongs to no scope");
  int enc = ad_tensor_scope(e1), blk = ad_tensor_scope(b1), dblk = ad_tensor_scope(b2);
  cr_assert_str_eq(ad_scope_label(ctx, enc), "enc");
  cr_assert_eq(ad_scope_parent(ctx, enc), -1);
  cr_assert_str_eq(ad_scope_label(ctx, blk), "blk");
  cr_assert_eq(ad_scope_parent(ctx, blk), enc);
  cr_assert_eq(ad_tensor_scope(e2), enc);
  cr_assert_neq(dblk, blk);
  cr_assert_str_eq(ad_scope_label(ctx, ad_scope_parent(ctx, dblk)), "dec");
  cr_assert_eq(ad_tensor_scope(b3), blk);
  cr_assert_eq(ad_scope_count(ctx), 4); /* enc, enc/blk, dec, dec/blk */
  cr_assert_null(ad_scope_label(ctx, 4));
  cr_assert_null(ad_scope_label(ctx, -1));
  cr_assert_eq(ad_scope_parent(ctx, 99), -1);
}

Test(scope, clusters_nest_with_their_ops) {
  ad_graph *g = ad_graph_new(ctx);
  ad_tensor *L = unrolled_rnn(g);
  char *text = dump(g, L, 0);
  /* leaves come just before their first consumer: step t's matmul, add
   * and tanh are nodes 2+4t, 4+4t, 5+4t (x_t is 3+4t) */
  char want[2048];
  size_t n =
      (size_t)snprintf(want, sizeof want,
                       "  subgraph cluster_g0 {\n    label=\"rnn\"; labeljust=l; style=rounded; "
                       "color=\"#7a7a7a\";\n");
  for (int t = 0; t < STEPS; t++)
    n += (size_t)snprintf(want + n, sizeof want - n,
                          "    subgraph cluster_g%d {\n      label=\"t=%d\"; labeljust=l; "
                          "style=rounded; color=\"#7a7a7a\";\n      n%d; n%d; n%d;\n    }\n",
                          t + 1, t, 2 + 4 * t, 4 + 4 * t, 5 + 4 * t);
  snprintf(want + n, sizeof want - n, "  }\n  n0 -> n2");
  cr_assert_not_null(strstr(text, want), "want\n%s\nin\n%s", want, text);
  /* and those nodes are the step's ops, in tape order */
  for (int t = 0; t < STEPS; t++) {
    char op[3][24];
    snprintf(op[0], sizeof op[0], "matmul_%d = ", 3 * t);
    snprintf(op[1], sizeof op[1], "add_%d = ", 3 * t + 1);
    snprintf(op[2], sizeof op[2], "tanh_%d = ", 3 * t + 2);
    cr_assert(line_has(node_line(text, 2 + 4 * t), op[0]), "step %d", t);
    cr_assert(line_has(node_line(text, 4 + 4 * t), op[1]), "step %d", t);
    cr_assert(line_has(node_line(text, 5 + 4 * t), op[2]), "step %d", t);
  }
  /* the loss, outside every scope, is drawn after the leaves and steps
   * and listed in no cluster */
  cr_assert(line_has(node_line(text, 4 * STEPS + 2), "L = sum("));
  cr_assert_null(strstr(text, "      n22;"));
  free(text);
  ad_graph_free(g);
}

Test(scope, collapsed_view_one_box_per_step) {
  ad_graph *g = ad_graph_new(ctx);
  ad_tensor *L = unrolled_rnn(g);
  char *text = dump(g, L, AD_DOT_COLLAPSE);
  /* leaves and the loss stay nodes: h0 n0, W n1, x_t n(2+t), L n7 */
  cr_assert(line_has(node_line(text, 0), "h0"));
  cr_assert(line_has(node_line(text, 1), "W  (parameter)"));
  for (int t = 0; t < STEPS; t++) {
    char xn[16];
    snprintf(xn, sizeof xn, "x%d ", t);
    cr_assert(line_has(node_line(text, 2 + t), xn));
  }
  cr_assert(line_has(node_line(text, 7), "L = sum(tanh_14)"), "%s", text);
  cr_assert_null(strstr(text, "\n  n8 ["), "ops inside scopes get no node of their own");
  cr_assert_null(strstr(text, "matmul_"));
  /* one box per step inside the rnn cluster */
  cr_assert_not_null(strstr(text, "  subgraph cluster_g0 {\n    label=\"rnn\";"));
  for (int t = 0; t < STEPS; t++) {
    char box[160];
    snprintf(box, sizeof box,
             "    g%d [shape=box, style=\"rounded,filled,bold\", color=\"#9a6b00\", "
             "fillcolor=\"#ffe7b0\", label=\"t=%d\\l3 ops: matmul, add, tanh\\l\"];\n",
             t + 1, t);
    cr_assert_not_null(strstr(text, box), "want %s in\n%s", box, text);
  }
  /* the recurrence: each step feeds the next, W every step, x_t its step */
  char want[512];
  size_t n = (size_t)snprintf(want, sizeof want, "  n0 -> g1;\n  n1 -> g1;\n  n2 -> g1;\n");
  for (int t = 1; t < STEPS; t++)
    n += (size_t)snprintf(want + n, sizeof want - n, "  g%d -> g%d;\n  n1 -> g%d;\n  n%d -> g%d;\n",
                          t, t + 1, t + 1, 2 + t, t + 1);
  snprintf(want + n, sizeof want - n, "  g5 -> n7;\n}\n");
  cr_assert_not_null(strstr(text, want), "want\n%s\nin\n%s", want, text);
  free(text);

  /* backward: the same boxes, arrows against the flow */
  OK(ad_backward(ctx, L, NULL));
  text = dump(g, L, AD_DOT_COLLAPSE | AD_DOT_BACKWARD);
  cr_assert_not_null(strstr(text, "  g3 -> g4 [dir=back, color=\"#b03020\""), "%s", text);
  cr_assert_not_null(strstr(text, "  g5 -> n7 [dir=back"));
  free(text);
  ad_graph_free(g);
}

/* An edge of the collapsed view carrying two tensors says so, and a tensor
 * used twice by the next box (h * h) is counted once. */
Test(scope, collapsed_edges_count_tensors) {
  int64_t s1[1] = {3};
  ad_tensor *h = test_param(ctx, 1, s1, NULL), *c = ad_neg(ctx, h);
  for (int t = 0; t < 3; t++) {
    char lab[16];
    snprintf(lab, sizeof lab, "t=%d", t);
    OK(ad_scope_push(ctx, lab));
    ad_tensor *h2 = ad_tanh(ctx, ad_add(ctx, ad_mul(ctx, h, h), c));
    c = ad_mul(ctx, c, h2);
    h = h2;
    OK(ad_scope_pop(ctx));
  }
  ad_tensor *L = ad_sum(ctx, ad_add(ctx, h, c));
  char *text = dump(NULL, L, AD_DOT_COLLAPSE);
  cr_assert_not_null(strstr(text, "  g0 -> g1 [label=\" 2 tensors \"];\n"), "%s", text);
  cr_assert_not_null(strstr(text, "  g1 -> g2 [label=\" 2 tensors \"];\n"));
  cr_assert_not_null(strstr(text, "label=\"t=1\\l4 ops: mul x2, add, tanh\\l\""), "%s", text);
  /* the ops after the last step are outside every scope: they stay nodes,
   * and the edge from the box to the add carries h and c (two edges of the
   * expanded view, one here) */
  cr_assert_not_null(strstr(text, "  g2 -> n2 [label=\" 2 tensors \"];\n"), "%s", text);
  cr_assert(line_has(node_line(text, 2), "add_13 = add(tanh_11, mul_12)"), "%s", text);
  free(text);
}

Test(scope, no_scope_dump_is_unchanged_by_collapse) {
  int64_t s1[1] = {2};
  ad_tensor *a = test_param(ctx, 1, s1, NULL);
  ad_tensor *L = ad_sum(ctx, ad_tanh(ctx, a));
  char *plain = dump(NULL, L, 0), *coll = dump(NULL, L, AD_DOT_COLLAPSE);
  cr_assert_str_eq(plain, coll);
  cr_assert_null(strstr(plain, "subgraph"));
  free(plain);
  free(coll);
}

Test(scope, trace_names_the_scope) {
  ad_graph *g = ad_graph_new(ctx);
  ad_tensor *L = unrolled_rnn(g);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  OK(ad_graph_trace_begin(g, f));
  OK(ad_backward(ctx, L, NULL));
  OK(ad_graph_trace_end(g));
  fclose(f);
  /* backward runs the tape in reverse: L's sum (no scope), then step 4's
   * tanh, add, matmul, then step 3's ... */
  const char *p = strstr(buf, "step 1: L = sum(tanh_14)");
  cr_assert_not_null(p, "%s", buf);
  cr_assert_not_null(strstr(buf, "step 2: tanh_14 = tanh(add_13)  [1,2] f64\n"
                                 "  scope      rnn / t=4\n"),
                     "%s", buf);
  cr_assert_not_null(strstr(buf, "step 16: matmul_0 = matmul(h0, W)  [1,2] f64\n"
                                 "  scope      rnn / t=0\n"));
  /* the sum is outside every scope: no scope line */
  cr_assert(strncmp(strchr(p, '\n') + 1, "  scope", 7) != 0);
  free(buf);
  ad_graph_free(g);
}

Test(scope, errors) {
  cr_assert_eq(ad_scope_pop(ctx), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "scope_pop: no scope is open", NULL);
  cr_assert_eq(ad_scope_push(ctx, NULL), AD_ERR_NULL);
  test_expect_error(ctx, AD_ERR_NULL, "scope_push: label is NULL", NULL);
  cr_assert_eq(ad_scope_push(ctx, ""), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "scope_push: label is empty", NULL);
  char long_label[300];
  memset(long_label, 'a', sizeof long_label - 1);
  long_label[sizeof long_label - 1] = 0;
  cr_assert_eq(ad_scope_push(ctx, long_label), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "scope_push: label of 299 bytes; at most 255", NULL);
  cr_assert_eq(ad_scope_depth(ctx), 0);
  for (int d = 0; d < AD_SCOPE_MAX_DEPTH; d++) OK(ad_scope_push(ctx, "level"));
  cr_assert_eq(ad_scope_push(ctx, "deep"), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "scope_push: 'deep' would be scope 17 deep; at most 16",
                    "is an ad_scope_pop missing?", NULL);
  cr_assert_eq(ad_scope_depth(ctx), AD_SCOPE_MAX_DEPTH);
  for (int d = 0; d < AD_SCOPE_MAX_DEPTH; d++) OK(ad_scope_pop(ctx));
  cr_assert_eq(ad_scope_pop(ctx), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "(ad_scope_pop without ad_scope_push)", NULL);
  cr_assert_eq(ad_scope_push(NULL, "x"), AD_ERR_NULL);
  cr_assert_eq(ad_scope_pop(NULL), AD_ERR_NULL);
  cr_assert_eq(ad_scope_depth(NULL), 0);
  cr_assert_eq(ad_scope_count(NULL), 0);
  cr_assert_eq(ad_tensor_scope(NULL), -1);
}

Test(scope, reset_keeps_open_scopes_only) {
  int64_t s1[1] = {2};
  ad_tensor *a = test_param(ctx, 1, s1, NULL);
  OK(ad_scope_push(ctx, "train"));
  OK(ad_scope_push(ctx, "step"));
  OK(ad_scope_push(ctx, "fwd"));
  ad_tensor *y = ad_neg(ctx, a);
  OK(ad_scope_pop(ctx));
  OK(ad_scope_push(ctx, "bwd"));
  ad_neg(ctx, y);
  OK(ad_scope_pop(ctx));
  cr_assert_eq(ad_scope_count(ctx), 4);
  ad_tape_reset(ctx);
  /* train and step stay open; fwd and bwd are gone */
  cr_assert_eq(ad_scope_depth(ctx), 2);
  cr_assert_eq(ad_scope_count(ctx), 2);
  cr_assert_eq(ad_tensor_scope(y), -1, "a result from the old tape has no scope");
  ad_tensor *z = ad_neg(ctx, a); /* recorded before any push: in "step" */
  int s = ad_tensor_scope(z);
  cr_assert_str_eq(ad_scope_label(ctx, s), "step");
  cr_assert_str_eq(ad_scope_label(ctx, ad_scope_parent(ctx, s)), "train");
  OK(ad_scope_push(ctx, "fwd"));
  ad_tensor *w = ad_neg(ctx, z);
  cr_assert_eq(ad_scope_parent(ctx, ad_tensor_scope(w)), s);
  OK(ad_scope_pop(ctx));
  OK(ad_scope_pop(ctx));
  OK(ad_scope_pop(ctx));
  ad_tape_reset(ctx);
  cr_assert_eq(ad_scope_count(ctx), 0);
  cr_assert_eq(ad_tensor_scope(ad_neg(ctx, a)), -1);
}

/* A label read after a reset, before any push, stays valid through the
 * pops that follow (ad_ext.h: until the next push or reset). */
Test(scope, label_read_after_reset_survives_a_pop) {
  OK(ad_scope_push(ctx, "x"));
  OK(ad_scope_pop(ctx));
  OK(ad_scope_push(ctx, "encoder"));
  OK(ad_scope_push(ctx, "layer"));
  ad_tape_reset(ctx);
  const char *outer = ad_scope_label(ctx, 0), *inner = ad_scope_label(ctx, 1);
  cr_assert_str_eq(outer, "encoder");
  cr_assert_str_eq(inner, "layer");
  cr_assert_eq(ad_scope_parent(ctx, 1), 0);
  OK(ad_scope_pop(ctx));
  cr_assert_str_eq(inner, "layer");
  cr_assert_str_eq(outer, "encoder");
  cr_assert_str_eq(ad_scope_label(ctx, 0), "encoder");
  OK(ad_scope_pop(ctx));
  cr_assert_str_eq(outer, "encoder");
}

Test(scope, out_of_memory_opens_nothing) {
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  cr_assert_not_null(c);
  int fails = 0;
  for (long k = 0; k < 6; k++) { /* state, groups, pool, table, marks */
    test_alloc_refuse_after(&ta, k);
    ad_status st = ad_scope_push(c, "layer");
    test_alloc_grant_all(&ta);
    if (st == AD_OK) {
      OK(ad_scope_pop(c));
      continue;
    }
    fails++;
    cr_assert_eq(st, AD_ERR_OOM);
    test_expect_error(c, AD_ERR_OOM, "scope_push: out of memory", NULL);
    cr_assert_eq(ad_scope_depth(c), 0);
  }
  cr_assert_geq(fails, 1);
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0, "%ld blocks leaked", ta.live);
}

Test(scope, dumps_render) {
  if (system("command -v dot >/dev/null 2>&1") != 0) return;
  ad_graph *g = ad_graph_new(ctx);
  ad_tensor *L = unrolled_rnn(g);
  for (int flags = 0; flags <= AD_DOT_COLLAPSE; flags += AD_DOT_COLLAPSE) {
    char path[] = "/tmp/test_scope_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    OK(ad_graph_dot(g, f, L, flags));
    fclose(f);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "dot -Tsvg -o /dev/null %s 2>&1 | grep -q . && exit 1; exit 0", path);
    int rc = system(cmd);
    remove(path);
    cr_assert_eq(rc, 0, "dot failed or warned on flags %d", flags);
  }
  ad_graph_free(g);
}
