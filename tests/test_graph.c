/* test_graph.c: graph dumps (ad_graph_dot) and backward traces
 * (ad_graph_trace_begin/end): they work for every op in the table, render
 * with Graphviz, name the rule's variables right, survive tape resets, chain
 * with other hooks, report OOM, and never change a gradient. */
#include "ad_ext.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

TEST_CTX_SUITE(graph);

#define OK(expr) cr_assert_eq((expr), AD_OK, "%s", ad_last_error(ctx))

/* A memory stream: text written to f ends up in buf after close. */
typedef struct mem {
  char *buf;
  size_t len;
  FILE *f;
} mem;

static void mem_open(mem *m) {
  m->buf = NULL;
  m->len = 0;
  m->f = open_memstream(&m->buf, &m->len);
  cr_assert_not_null(m->f);
}

static char *mem_close(mem *m) {
  fclose(m->f);
  return m->buf;
}

/* Runs backward from L while g traces into memory and returns the trace
 * text (caller frees). With gx, ad_grad of L with respect to x (recorded,
 * create_graph) follows as a second pass of the same trace, into *gx. */
static char *trace_backward(ad_graph *g, ad_tensor *L, ad_tensor *x, ad_tensor **gx) {
  mem tr;
  mem_open(&tr);
  OK(ad_graph_trace_begin(g, tr.f));
  OK(ad_backward(ctx, L, NULL));
  if (gx) OK(ad_grad(ctx, L, NULL, 1, &x, gx, true));
  OK(ad_graph_trace_end(g));
  return mem_close(&tr);
}

static bool have_dot(void) { return system("command -v dot >/dev/null 2>&1") == 0; }

/* Renders text with dot -Tsvg; returns what dot wrote to stderr (empty when
 * it had nothing to say), or NULL if it failed. Caller frees. */
static char *render(const char *text) {
  char src[] = "/tmp/test_graph_XXXXXX";
  int fd = mkstemp(src);
  cr_assert(fd >= 0);
  FILE *f = fdopen(fd, "w");
  fputs(text, f);
  fclose(f);
  char cmd[256], err[64];
  snprintf(err, sizeof err, "%s.err", src);
  snprintf(cmd, sizeof cmd, "dot -Tsvg -o /dev/null %s 2>%s", src, err);
  int rc = system(cmd);
  FILE *e = fopen(err, "r");
  char *out = calloc(4096, 1);
  if (e) {
    size_t n = fread(out, 1, 4095, e);
    out[n] = 0;
    fclose(e);
  }
  remove(src);
  remove(err);
  if (rc != 0) {
    free(out);
    return NULL;
  }
  return out;
}

static ad_tensor *param(int ndim, const int64_t *shape, const double *v) {
  ad_tensor *t = ad_from_data(ctx, AD_F64, ndim, shape, v);
  cr_assert_not_null(t);
  OK(ad_tensor_set_requires_grad(t, true));
  return t;
}

/* ------------------------------------------------ every op in the table */

/* Copies of the grads of in[0..n-1] (NULL where none). */
static void save_grads(int n, ad_tensor **in, ad_tensor **out) {
  for (int i = 0; i < n; i++) out[i] = in[i]->grad ? ad_tensor_clone(ctx, in[i]->grad) : NULL;
}

Test(graph, every_op_unchanged_and_renders) {
  bool dot = have_dot();
  if (!dot) cr_log_warn("dot not found: DOT output is checked for shape only");
  int checked = 0;
  for (int id = 0; id < ad_op_count(ctx); id++) {
    const ad_op_def *def = ad_op_get(ctx, id);
    if (!def->backward || !def->sample) continue;
    for (int dti = 0; dti < 2; dti++) {
      ad_dtype dt = dti ? AD_F32 : AD_F64;
      for (int variant = 0; variant < 8; variant++) {
        ad_rng rng;
        ad_rng_seed(&rng, 7 + (uint64_t)variant);
        ad_tensor *in[AD_SAMPLE_MAX_IN] = {0};
        ad_attrs at;
        memset(&at, 0, sizeof at);
        ad_sample_call sc = {
            .ctx = ctx, .rng = &rng, .dtype = dt, .variant = variant, .in = in, .attrs = &at};
        int n = def->sample(&sc);
        cr_assert(n >= 0, "%s: sample failed: %s", def->name, ad_last_error(ctx));
        if (n == 0) break;
        /* plain run */
        ad_tensor *L = ad_sum(ctx, ad_op_apply(ctx, id, n, in, &at));
        cr_assert_not_null(L, "%s: %s", def->name, ad_last_error(ctx));
        OK(ad_backward(ctx, L, NULL));
        ad_tensor *want[AD_SAMPLE_MAX_IN];
        save_grads(n, in, want);
        ad_tape_reset(ctx);
        for (int i = 0; i < n; i++) ad_tensor_zero_grad(in[i]);

        /* traced run, dumped both ways */
        ad_graph *g = ad_graph_new(ctx);
        cr_assert_not_null(g);
        mem fw, bw;
        mem_open(&fw);
        mem_open(&bw);
        ad_tensor *out = ad_op_apply(ctx, id, n, in, &at);
        L = ad_sum(ctx, out);
        cr_assert_not_null(L);
        OK(ad_graph_name(g, out, "out"));
        OK(ad_graph_dot(g, fw.f, L, 0));
        char *trace = trace_backward(g, L, NULL, NULL);
        OK(ad_graph_dot(g, bw.f, L, AD_DOT_BACKWARD));
        char *fdot = mem_close(&fw), *bdot = mem_close(&bw);

        for (int i = 0; i < n; i++) {
          /* the rule says what the backward does: a contribution (the
           * rule's text), or none (NULL: "no gradient to ...") */
          const char *rule = def->grads[def->arity < 0 ? 0 : i];
          if (ad_tensor_requires_grad(in[i]))
            cr_assert(!rule == !want[i], "%s variant %d: input %d gets %s, but its rule is %s",
                      def->name, variant, i, want[i] ? "a gradient" : "none",
                      rule ? rule : "\"no gradient\"");
          if (!want[i]) {
            cr_assert_null(in[i]->grad, "%s: input %d got a gradient", def->name, i);
            continue;
          }
          cr_assert_not_null(in[i]->grad);
          cr_assert(!memcmp(want[i]->data, in[i]->grad->data,
                            (size_t)want[i]->size * ad_dtype_size(want[i]->dtype)),
                    "%s %s variant %d: gradient %d changed by tracing", def->name,
                    ad_dtype_name(dt), variant, i);
          ad_tensor_free(want[i]);
        }
        char head[64];
        snprintf(head, sizeof head, "out = %s(", def->name);
        cr_assert(strstr(trace, "step 1: ") && strstr(trace, head), "%s: trace:\n%s", def->name,
                  trace);
        for (int i = 0; i < n; i++) {
          /* a variadic op's grads[0] is the rule of every input */
          const char *rule = def->grads[def->arity < 0 ? 0 : i];
          cr_assert(!rule || strstr(trace, rule), "%s: trace lacks the rule of input %d (%s):\n%s",
                    def->name, i, rule, trace);
        }
        /* the rule's variables are matched to the inputs (so each edge of
         * the backward picture gets its own clause), and the trace restates
         * it with this step's tensors in their place */
        if (def->arity >= 0)
          cr_assert(strstr(trace, "\n  here       "), "%s: rule not mapped to inputs:\n%s",
                    def->name, trace);
        cr_assert(strstr(fdot, "digraph") && strstr(bdot, "dir=back"), "%s", def->name);
        if (dot && dti == 0 && variant == 0) {
          char *e1 = render(fdot), *e2 = render(bdot);
          cr_assert(e1 && e2, "%s: dot failed on:\n%s", def->name, e1 ? bdot : fdot);
          cr_assert_str_empty(e1, "%s: dot says %s", def->name, e1);
          cr_assert_str_empty(e2, "%s: dot says %s", def->name, e2);
          free(e1);
          free(e2);
        }
        free(trace);
        free(fdot);
        free(bdot);
        ad_graph_free(g);
        ad_tape_reset(ctx);
        for (int i = 0; i < n; i++) ad_tensor_free(in[i]);
        checked++;
      }
    }
  }
  cr_assert(checked > 40, "only %d cases", checked);
}

/* --------------------------------------------------------- rule mapping */

/* where(c, a, b): inputs map to the table's c, a, b, whose clauses are not
 * in input order; index_select(x, idx) and matmul(A, B) likewise. */
Test(graph, rule_variables_follow_inputs) {
  int64_t s3 = 3;
  double va[3] = {1, 2, 3}, vb[3] = {4, 5, 6}, vc[3] = {1, 0, 1};
  ad_tensor *A = param(1, &s3, va), *B = param(1, &s3, vb);
  ad_tensor *C = ad_from_data(ctx, AD_F64, 1, &s3, vc);
  ad_graph *g = ad_graph_new(ctx);
  OK(ad_graph_name(g, A, "A"));
  OK(ad_graph_name(g, B, "B"));
  OK(ad_graph_name(g, C, "C"));
  ad_tensor *w = ad_where(ctx, C, A, B);
  OK(ad_graph_name(g, w, "w"));
  ad_tensor *L = ad_sum(ctx, w);
  char *trace = trace_backward(g, L, NULL, NULL);
  mem bw;
  mem_open(&bw);
  OK(ad_graph_dot(g, bw.f, L, AD_DOT_BACKWARD));
  char *dot = mem_close(&bw);
  cr_assert(strstr(trace, "here       no gradient to C; dL/dA += where(C, dL/dw, 0); "
                          "dL/dB += where(C, 0, dL/dw)\n"),
            "%s", trace);
  cr_assert(strstr(trace, "-> C       no gradient (none needed)"), "%s", trace);
  /* elementwise op: the local derivative is the mask */
  cr_assert(strstr(trace, "local dw/dA = [1, 0, 1]"), "%s", trace);
  cr_assert(strstr(trace, "local dw/dB = [0, 1, 0]"), "%s", trace);
  /* DOT: the edge into A carries da's clause, the one into C c's */
  cr_assert(strstr(dot, "label=\"da += where(c, dy, 0)\\llocal dw/dA"), "%s", dot);
  cr_assert(strstr(dot, "label=\"db += where(c, 0, dy)\\llocal dw/dB"), "%s", dot);
  cr_assert(strstr(dot, "label=\"no gradient to c\\l(no gradient sent)"), "%s", dot);
  free(trace);
  free(dot);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(A);
  ad_tensor_free(B);
  ad_tensor_free(C);
}

/* A tensor named like a rule's variable: e = sub(y, yhat) printed "with
 * y = e, a = y, b = yhat", and sigmoid's rule "dy * y * (1 - y)" stood
 * next to a target named y. The trace now restates each rule with the
 * step's tensors in place of all its variables at once, and a zero local
 * derivative (ReLU below 0) prints as 0, not -0. */
Test(graph, rule_restated_with_the_tensors_names) {
  int64_t s2 = 2;
  double vy[2] = {0, 1}, vw[2] = {-0.5, 2}, vc[2] = {-1, -1};
  ad_tensor *y = ad_from_data(ctx, AD_F64, 1, &s2, vy), *w = param(1, &s2, vw);
  ad_tensor *c = ad_from_data(ctx, AD_F64, 1, &s2, vc);
  ad_graph *g = ad_graph_new(ctx);
  OK(ad_graph_name(g, y, "y"));
  OK(ad_graph_name(g, w, "w"));
  ad_tensor *yhat = ad_sigmoid(ctx, ad_mul_scalar(ctx, w, 3.0));
  OK(ad_graph_name(g, yhat, "yhat"));
  ad_tensor *e = ad_sub(ctx, y, yhat);
  OK(ad_graph_name(g, e, "e"));
  ad_tensor *r = ad_relu(ctx, ad_neg(ctx, e)); /* -e = yhat - y: > 0, then < 0 */
  OK(ad_graph_name(g, r, "r"));
  ad_tensor *L = ad_sum(ctx, ad_mul(ctx, r, c)); /* dL/dr = -1: relu's zero is 0 / -1 */
  char *trace = trace_backward(g, L, NULL, NULL);
  cr_assert(strstr(trace, "here       dL/dy += dL/de; dL/dyhat += -dL/de\n"), "%s", trace);
  cr_assert(strstr(trace, "here       dL/dmul_scalar_0 += sigmoid_backward(dL/dyhat, yhat) = "
                          "dL/dyhat * yhat * (1 - yhat)\n"),
            "%s", trace);
  cr_assert(strstr(trace, "here       dL/dw += dL/dmul_scalar_0 * 3\n"), "%s", trace);
  cr_assert(!strstr(trace, "with y ="), "%s", trace);
  /* relu' at -e > 0, then < 0: 0 / -1 is -0 in IEEE, but the local
   * derivative is 0 (gradient values themselves keep their sign: -(+0)) */
  const char *lr = strstr(trace, "local dr/dneg_");
  cr_assert(lr && strstr(lr, " = [1, 0]\n") && strstr(lr, " = [1, 0]\n") < strchr(lr, '\n') + 1,
            "%s", trace);
  for (const char *p = trace; (p = strstr(p, "local ")); p++) {
    const char *eol = strchr(p, '\n');
    for (const char *q = p; q < eol; q++)
      cr_assert(!(q[0] == '-' && q[1] == '0' && (q[2] == ',' || q[2] == ']')),
                "a local derivative prints -0:\n%s", trace);
  }
  free(trace);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(y);
  ad_tensor_free(w);
  ad_tensor_free(c);
}

Test(graph, rule_variables_index_and_matmul) {
  int64_t s22[2] = {2, 2}, s2 = 2;
  double v[4] = {1, 2, 3, 4};
  int32_t iv[2] = {1, 0};
  ad_tensor *X = param(2, s22, v), *W = param(2, s22, v);
  ad_tensor *idx = ad_from_data(ctx, AD_I32, 1, &s2, iv);
  ad_graph *g = ad_graph_new(ctx);
  OK(ad_graph_name(g, X, "X"));
  OK(ad_graph_name(g, W, "W"));
  OK(ad_graph_name(g, idx, "idx"));
  ad_tensor *r = ad_index_select(ctx, X, idx);
  ad_tensor *m = ad_matmul(ctx, r, W, false, true);
  ad_tensor *L = ad_sum(ctx, m);
  OK(ad_graph_name(g, r, "r"));
  OK(ad_graph_name(g, m, "m"));
  char *trace = trace_backward(g, L, NULL, NULL);
  cr_assert(strstr(trace, "here       dL/dr += dL/dm op(W)^T (or op(W) dL/dm^T when transposed); "
                          "dL/dW += op(r)^T dL/dm (or dL/dm^T op(r))\n"),
            "%s", trace);
  cr_assert(
      strstr(trace,
             "here       dL/dX += index_add(dL/dr, axis, idx, rows(X)); no gradient to idx\n"),
      "%s", trace);
  /* the numbers the rule produces: dL/dr = ones(2,2) W (trans_b: W^T^T) */
  cr_assert(strstr(trace, "dL/dW += [[4, 6], [4, 6]]"), "%s", trace);
  cr_assert(strstr(trace, "dL/dX += [[4, 6], [4, 6]]"), "%s", trace);
  /* the first step is the root's */
  cr_assert(strstr(trace, "backward pass 1: from sum_"), "%s", trace);
  free(trace);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(X);
  ad_tensor_free(W);
  ad_tensor_free(idx);
}

/* The output's letter in an op's math (its first word) is what the trace
 * replaces with the step's output, so every op's math starts with it and no
 * input is named like it (softmax_backward's input y, gru_seq's b: the
 * input's letter in the rule became the output). lstm_cell's math started
 * with "[i f g o]" (no letter, so no line `here`) and gru_cell's with
 * "r = ...", so its rule's r was restated as the output. */
Test(graph, output_letter_is_no_input_letter) {
  for (int id = 0; id < ad_op_count(ctx); id++) {
    const ad_op_def *def = ad_op_get(ctx, id);
    if (!def->backward) continue;
    size_t n = 0;
    while (def->math && isalnum((unsigned char)def->math[n])) n++;
    cr_assert(n > 0, "%s: the math does not start with the output's letter: %s", def->name,
              def->math);
    int nin = def->arity < 0 ? 1 : def->arity;
    for (int k = 0; k < nin; k++)
      cr_assert(!def->inputs[k] || strlen(def->inputs[k]) != n ||
                    strncmp(def->inputs[k], def->math, n),
                "%s: input %d is named %s, as the output", def->name, k, def->inputs[k]);
  }
}

/* gru_cell's rule named the incoming gradient's blocks dh, dr, ... after
 * its input h and its math's first letter r, so the trace restated it as
 * "dL/dA += [dL/dY | dz | dn], ... dL/dH0 += dL/dH0 z": the gradient of
 * the input h where the output's h' block was meant. */
Test(graph, gru_cell_rule_restated_with_its_inputs) {
  int64_t sa[2] = {1, 6}, sh[2] = {1, 2};
  double va[6] = {-1, -0.5, 0, 0.5, 1, 1.5}, vb[6] = {0.5, 0.25, 0, -0.25, -0.5, 1},
         vh[2] = {0.1, 0.3};
  ad_tensor *A = param(2, sa, va), *B = param(2, sa, vb), *H0 = param(2, sh, vh);
  ad_graph *g = ad_graph_new(ctx);
  OK(ad_graph_name(g, A, "A"));
  OK(ad_graph_name(g, B, "B"));
  OK(ad_graph_name(g, H0, "H0"));
  ad_tensor *Y = ad_gru_cell(ctx, A, B, H0);
  OK(ad_graph_name(g, Y, "Y"));
  ad_tensor *L = ad_sum(ctx, ad_narrow(ctx, Y, 1, 0, 2));
  char *trace = trace_backward(g, L, NULL, NULL);
  const char *here = strstr(trace, "Y = gru_cell(A, B, H0)");
  cr_assert(here && (here = strstr(here, "\n  here       ")), "%s", trace);
  const char *want = "\n  here       dL/dA += [e_r | e_z | e_n], e_n = (dy_h (1 - z) + dy_n) "
                     "(1 - n^2), e_r = (e_n b_n + dy_r) r (1 - r), e_z = (dy_h (H0 - n) + "
                     "dy_z) z (1 - z), dL/dY = [dy_h | dy_r dy_z dy_n]; dL/dB += [e_r | e_z | "
                     "e_n r]; dL/dH0 += dy_h z\n";
  cr_assert(!strncmp(here, want, strlen(want)), "%s\nwanted%s", trace, want);
  /* the rule's numbers, against the cell composed of its formulas */
  double r0 = 1 / (1 + exp(-(va[0] + vb[0]))), z0 = 1 / (1 + exp(-(va[2] + vb[2])));
  double n0 = tanh(va[4] + r0 * vb[4]);
  (void)r0;
  cr_assert(fabs(ad_tensor_get(H0->grad, 0) - z0) < 1e-15);
  cr_assert(fabs(ad_tensor_get(A->grad, 4) - (1 - z0) * (1 - n0 * n0)) < 1e-15);
  free(trace);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(A);
  ad_tensor_free(B);
  ad_tensor_free(H0);
}

/* softmax_backward named its softmax input y, the letter of its output,
 * and the trace replaces the output's letter with the step's output: the
 * trace of a double backward through softmax said dL/dg +=
 * softmax_backward(dL/dgx, gx), the gradient's own output where the
 * softmax sm belongs. */
Test(graph, softmax_double_backward_rule_names_the_softmax) {
  int64_t s[2] = {1, 3};
  double vx[3] = {-1, 0.5, 2}, vw[3] = {0.5, 1, 1.5};
  ad_tensor *x = param(2, s, vx), *w = ad_from_data(ctx, AD_F64, 2, s, vw);
  ad_graph *g = ad_graph_new(ctx);
  OK(ad_graph_name(g, x, "x"));
  OK(ad_graph_name(g, w, "w"));
  ad_tensor *sm = ad_softmax(ctx, x, -1);
  OK(ad_graph_name(g, sm, "sm"));
  ad_tensor *gx = NULL;
  OK(ad_grad(ctx, ad_sum(ctx, ad_mul(ctx, sm, w)), NULL, 1, &x, &gx, true));
  OK(ad_graph_name(g, gx, "gx"));
  ad_tensor *L = ad_sum(ctx, ad_square(ctx, gx));
  char *trace = trace_backward(g, L, NULL, NULL);
  const char *step = strstr(trace, "gx = softmax_backward(");
  cr_assert(step, "%s", trace);
  const char *here = strstr(step, "\n  here       ");
  cr_assert(here, "%s", trace);
  cr_assert(strstr(here, "+= softmax_backward(dL/dgx, sm); dL/dsm += dL/dgx * ("), "%s", trace);
  cr_assert(strstr(here, " * sm)) - ") && strstr(here, " * sum_axis(dL/dgx * sm)\n"), "%s", trace);
  free(trace);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

/* ------------------------------------------------------ the chain rule */

/* The worked example's output layer as a trace: every step's numbers are
 * the incoming gradient times the local derivative. */
Test(graph, trace_is_the_chain_rule) {
  int64_t s1 = 1;
  double vz = 0.5;
  ad_tensor *z = param(1, &s1, &vz);
  ad_graph *g = ad_graph_new(ctx);
  ad_tensor *s = ad_sigmoid(ctx, z);
  ad_tensor *L = ad_square(ctx, ad_rsub_scalar(ctx, s, 1.0));
  OK(ad_graph_name(g, z, "z"));
  OK(ad_graph_name(g, s, "s"));
  OK(ad_graph_name(g, L, "L"));
  char *trace = trace_backward(g, L, NULL, NULL);
  double sv = 1 / (1 + exp(-0.5)), ds = -2 * (1 - sv), dz = ds * sv * (1 - sv);
  char want[128];
  snprintf(want, sizeof want, "local ds/dz = [%.6g]", sv * (1 - sv));
  cr_assert(strstr(trace, want), "%s\nwanted %s", trace, want);
  snprintf(want, sizeof want, "dL/dz += dL/ds * local = [%.6g]", dz);
  cr_assert(strstr(trace, want), "%s\nwanted %s", trace, want);
  snprintf(want, sizeof want, "incoming   dL/ds = [%.6g]", ds);
  cr_assert(strstr(trace, want), "%s\nwanted %s", trace, want);
  /* rsub_scalar is a composite: its primitives are steps 2 and 3 */
  cr_assert(strstr(trace, "step 4: s = sigmoid(z)  [1] f64"), "%s", trace);
  cr_assert(strstr(trace, "incoming   dL/dL = [1]"), "%s", trace);
  cr_assert(fabs(ad_tensor_get(z->grad, 0) - dz) < 1e-15);
  free(trace);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(z);
}

/* Two passes (fan-in of two roots) are numbered; ad_grad is traced too. */
Test(graph, passes_and_ad_grad) {
  int64_t s2 = 2;
  double v[2] = {1, 2};
  ad_tensor *x = param(1, &s2, v);
  ad_graph *g = ad_graph_new(ctx);
  ad_tensor *L = ad_sum(ctx, ad_exp(ctx, x));
  ad_tensor *gx;
  char *trace = trace_backward(g, L, x, &gx);
  cr_assert(strstr(trace, "backward pass 1:"), "%s", trace);
  cr_assert(strstr(trace, "\nbackward pass 2:"), "%s", trace);
  cr_assert(ad_tensor_get(gx, 1) == exp(2.0));
  free(trace);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* ------------------------------------------- attributes and words */

/* A conv node shows its stride, padding, dilation and groups, a pooling
 * its kernel, stride, padding and dilation, in the dump and the trace; the
 * trace explains the local rules of conv2d and max_pool2d in words. */
Test(graph, conv_pool_attributes_and_words) {
  int64_t sx[4] = {1, 1, 4, 4}, sw[4] = {1, 1, 2, 2};
  double xv[16], wv[4] = {1, -1, 0, 2};
  for (int i = 0; i < 16; i++) xv[i] = (double)((i * 7) % 5);
  ad_tensor *x = param(4, sx, xv), *w = param(4, sw, wv);
  ad_graph *g = ad_graph_new(ctx);
  OK(ad_graph_name(g, x, "x"));
  OK(ad_graph_name(g, w, "w"));
  ad_conv_opts co = {.stride = {2, 1}, .padding = {1, 1, 0, 0}, .dilation = {1, 1}};
  ad_tensor *y = ad_conv2d(ctx, x, w, NULL, &co);
  ad_pool2d_opts po = {.stride = {1, 1}};
  ad_tensor *p = ad_max_pool2d(ctx, y, 2, 2, &po);
  ad_tensor *L = ad_sum(ctx, p);
  cr_assert_not_null(L, "%s", ad_last_error(ctx));
  OK(ad_graph_name(g, y, "y"));
  OK(ad_graph_name(g, p, "p"));
  mem fw;
  mem_open(&fw);
  OK(ad_graph_dot(g, fw.f, L, 0));
  char *dot = mem_close(&fw);
  char *trace = trace_backward(g, L, NULL, NULL);
  cr_assert(strstr(dot, "y = conv2d(x, w)\\lstride 2x1 pad 1,1,0,0 dil 1x1 groups 1\\l"), "%s",
            dot);
  cr_assert(strstr(dot, "p = max_pool2d(y)\\lkernel 2x2 stride 1x1 pad 0x0 dil 1x1\\l"), "%s", dot);
  cr_assert(strstr(trace, "step 3: y = conv2d(x, w)  [1,1,3,3] f64\n"
                          "  attrs      stride 2x1 pad 1,1,0,0 dil 1x1 groups 1\n"
                          "  incoming   dL/dy = "),
            "%s", trace);
  cr_assert(strstr(trace, "  attrs      kernel 2x2 stride 1x1 pad 0x0 dil 1x1\n"), "%s", trace);
  cr_assert(strstr(trace, "  in words   forward: the kernel w slides over x"), "%s", trace);
  cr_assert(strstr(trace, "a transposed convolution"), "%s", trace);
  /* dx[r] = sum_i dy[i] w[r - i]: the full convolution of dy with w itself
   * (sliding the flipped kernel); the words said "with the flipped
   * kernel", which flips it twice, next to "the kernel is not flipped" for
   * the forward's correlation */
  cr_assert(strstr(trace, "the kernel flipped and slid over dy padded with zeros: the\n") &&
                strstr(trace, "full convolution of dy with w).\n"),
            "%s", trace);
  cr_assert(!strstr(trace, "with the flipped kernel"), "%s", trace);
  cr_assert(strstr(trace, "the correlation of x with dy"), "%s", trace);
  cr_assert(strstr(trace, "  in words   forward: each window passes on only its largest"), "%s",
            trace);
  cr_assert(strstr(trace, "first maximum in row-major order wins"), "%s", trace);
  free(dot);
  free(trace);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

/* The other conv ops explain themselves too; attributes that say nothing
 * (a matmul without transposes) are not shown, set ones are; ops without
 * attributes get no attrs line and no words. */
Test(graph, attributes_only_where_they_say_something) {
  int64_t sx[4] = {1, 1, 3, 3}, sw[4] = {1, 1, 2, 2}, s22[2] = {2, 2};
  double xv[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, wv[4] = {1, 0, -1, 2};
  ad_tensor *x = param(4, sx, xv), *w = param(4, sw, wv), *A = param(2, s22, wv);
  ad_graph *g = ad_graph_new(ctx);
  ad_conv_opts co = {.output_padding = {0, 0}};
  ad_tensor *t = ad_conv_transpose2d(ctx, x, w, NULL, &co); /* [1,1,4,4] */
  ad_tensor *cw = ad_conv2d_weight(ctx, t, x, 2, 2, NULL);  /* 4x4 by a 3x3 dy: 2x2 */
  ad_tensor *m1 = ad_matmul(ctx, A, A, false, false);
  ad_tensor *m2 = ad_matmul(ctx, A, A, false, true);
  ad_tensor *L = ad_add(ctx, ad_add(ctx, ad_sum(ctx, cw), ad_sum(ctx, m1)), ad_sum(ctx, m2));
  cr_assert_not_null(L, "%s", ad_last_error(ctx));
  OK(ad_graph_name(g, x, "x"));
  OK(ad_graph_name(g, w, "w"));
  OK(ad_graph_name(g, A, "A"));
  OK(ad_graph_name(g, m1, "m1"));
  OK(ad_graph_name(g, m2, "m2"));
  char *trace = trace_backward(g, L, NULL, NULL);
  cr_assert(strstr(trace, "conv_transpose2d(x, w)  [1,1,4,4] f64\n"
                          "  attrs      stride 1x1 pad 0,0,0,0 dil 1x1 groups 1\n"),
            "%s", trace);
  cr_assert(strstr(trace, "  attrs      stride 1x1 pad 0,0,0,0 dil 1x1 groups 1 kernel 2x2\n"),
            "%s", trace);
  cr_assert(strstr(trace, "  in words   forward: each x pixel stamps a copy of the kernel"), "%s",
            trace);
  cr_assert(strstr(trace, "  in words   forward: the weight gradient of a conv2d"), "%s", trace);
  cr_assert(strstr(trace, "m1 = matmul(A, A)  [2,2] f64\n  incoming"), "%s", trace);
  cr_assert(strstr(trace, "m2 = matmul(A, A)  [2,2] f64\n  attrs      B^T\n"), "%s", trace);
  const char *add = strstr(trace, "= add(");
  cr_assert(add && !strncmp(strchr(add, '\n'), "\n  incoming", 11), "%s", trace);
  free(trace);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(w);
  ad_tensor_free(A);
}

/* clamp's bounds appear in the dump and the trace, and hardtanh's
 * gradient rule with them (the two are one op). */
Test(graph, clamp_attributes) {
  int64_t n = 3;
  double xv[3] = {-2, 0.5, 1};
  ad_tensor *x = param(1, &n, xv);
  ad_graph *g = ad_graph_new(ctx);
  OK(ad_graph_name(g, x, "x"));
  ad_tensor *c = ad_clamp(ctx, x, -1, 0.75), *h = ad_hardtanh(ctx, x, 0, 6);
  ad_tensor *L = ad_add(ctx, ad_sum(ctx, c), ad_sum(ctx, h));
  cr_assert_not_null(L, "%s", ad_last_error(ctx));
  OK(ad_graph_name(g, c, "c"));
  OK(ad_graph_name(g, h, "h"));
  mem fw;
  mem_open(&fw);
  OK(ad_graph_dot(g, fw.f, L, 0));
  char *dot = mem_close(&fw);
  cr_assert(strstr(dot, "c = clamp(x)\\llo -1 hi 0.75\\l"), "%s", dot);
  cr_assert(strstr(dot, "h = clamp(x)\\llo 0 hi 6 hardtanh\\l"), "%s", dot);
  char *trace = trace_backward(g, L, NULL, NULL);
  cr_assert(strstr(trace, "  attrs      lo 0 hi 6 hardtanh\n"), "%s", trace);
  free(dot);
  free(trace);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* ------------------------------------------------------- names, resets */

Test(graph, names_auto_removed_and_reset) {
  int64_t s2 = 2;
  double v[2] = {1, 2};
  ad_tensor *x = param(1, &s2, v);
  ad_tensor *c = ad_from_data(ctx, AD_F64, 1, &s2, v);
  ad_graph *g = ad_graph_new(ctx);
  ad_tensor *m = ad_mul(ctx, x, c);
  ad_tensor *L = ad_sum(ctx, ad_mul(ctx, m, ad_scalar(ctx, AD_F64, 3)));
  OK(ad_graph_name(g, m, "m"));
  mem a;
  mem_open(&a);
  OK(ad_graph_dot(g, a.f, L, 0));
  char *s = mem_close(&a);
  cr_assert(strstr(s, "label=\"param1  (parameter)"), "%s", s);
  cr_assert(strstr(s, "label=\"input1  (input)"), "%s", s);
  cr_assert(strstr(s, "label=\"const1  (constant)"), "%s", s);
  cr_assert(strstr(s, "label=\"m = mul(param1, input1)"), "%s", s);
  cr_assert(strstr(s, "peripheries=2, label=\"sum_"), "%s", s);
  free(s);

  /* removing a name */
  OK(ad_graph_name(g, m, NULL));
  mem b;
  mem_open(&b);
  OK(ad_graph_dot(g, b.f, L, 0));
  s = mem_close(&b);
  cr_assert(!strstr(s, "\"m = "), "%s", s);
  cr_assert(strstr(s, "mul_0 = mul(param1, input1)"), "%s", s);
  free(s);

  /* after a reset the arena is reused: the old name of m must not stick
   * to whatever lands at its address; persistent names stay */
  OK(ad_graph_name(g, m, "m"));
  OK(ad_graph_name(g, x, "x"));
  ad_tape_reset(ctx);
  mem r;
  mem_open(&r);
  cr_assert_eq(ad_graph_dot(g, r.f, L, 0), AD_ERR_STATE);
  ad_clear_error(ctx);
  ad_tensor *m2 = ad_mul(ctx, x, c);
  ad_tensor *L2 = ad_sum(ctx, ad_mul(ctx, m2, ad_scalar(ctx, AD_F64, 3)));
  OK(ad_graph_dot(g, r.f, L2, 0));
  s = mem_close(&r);
  cr_assert(!strstr(s, "\"m = "), "%s", s);
  cr_assert(strstr(s, "mul(x, input1)"), "%s", s);
  free(s);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(c);
}

Test(graph, no_graph_and_leaf_root) {
  int64_t s20 = 20;
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 1, &s20, -1, 1);
  OK(ad_tensor_set_requires_grad(x, true));
  ad_tensor *L = ad_mean(ctx, ad_tanh(ctx, x));
  mem a;
  mem_open(&a);
  OK(ad_graph_dot(NULL, a.f, L, AD_DOT_BACKWARD));
  OK(ad_graph_dot(NULL, a.f, x, 0)); /* a leaf alone */
  char *s = mem_close(&a);
  cr_assert(strstr(s, "label=\"parameter\\l[20] f64"), "%s", s);
  cr_assert(strstr(s, "(20 values: min "), "%s", s);
  cr_assert(strstr(s, ad_op_get(ctx, ad_op_find(ctx, "tanh"))->grads[0]), "%s", s);
  if (have_dot()) {
    char *one = strstr(s, "}\n") + 2; /* the second graph */
    one[-1] = 0;
    char *e = render(s);
    cr_assert(e && !*e, "dot: %s", e ? e : "failed");
    free(e);
  }
  free(s);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* A tensor of more than 16 elements is summarised; a NaN anywhere in it
 * shows as min and max nan (as torch.min and torch.max), not only when it
 * is the first element. */
Test(graph, summary_shows_a_nan) {
  int64_t s20 = 20;
  ad_tensor *x = ad_zeros(ctx, AD_F64, 1, &s20);
  cr_assert_not_null(x);
  double *v = x->data;
  for (int i = 0; i < 20; i++) v[i] = i;
  const char *want[] = {"(20 values: min 0, max 19, mean 9.5)",
                        "(20 values: min nan, max nan, mean nan)"};
  for (int k = 0; k < 2; k++) {
    if (k) v[7] = NAN; /* neither first nor last */
    mem m;
    mem_open(&m);
    OK(ad_graph_dot(NULL, m.f, x, 0));
    char *s = mem_close(&m);
    cr_assert(strstr(s, want[k]), "want %s in:\n%s", want[k], s);
    free(s);
  }
  ad_tensor_free(x);
}

Test(graph, argument_errors) {
  ad_graph *g = ad_graph_new(ctx);
  cr_assert_null(ad_graph_new(NULL));
  cr_assert_eq(ad_graph_dot(g, stdout, NULL, 0), AD_ERR_NULL);
  cr_assert(strstr(ad_last_error(ctx), "graph_dot: root is NULL"));
  ad_clear_error(ctx);
  int64_t s1 = 1;
  ad_tensor *x = ad_zeros(ctx, AD_F64, 1, &s1);
  cr_assert_eq(ad_graph_dot(g, NULL, x, 0), AD_ERR_NULL);
  cr_assert(strstr(ad_last_error(ctx), "graph_dot: file is NULL"));
  ad_clear_error(ctx);
  cr_assert_eq(ad_graph_dot(g, stdout, x, 4), AD_ERR_ARG); /* nothing written */
  cr_assert(strstr(ad_last_error(ctx), "graph_dot: unknown flags 0x4"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  cr_assert_eq(ad_graph_name(g, NULL, "a"), AD_ERR_NULL);
  ad_clear_error(ctx);
  OK(ad_graph_trace_begin(g, NULL));
  cr_assert_eq(ad_graph_trace_begin(g, NULL), AD_ERR_STATE);
  cr_assert(strstr(ad_last_error(ctx), "already tracing"));
  ad_clear_error(ctx);
  OK(ad_graph_trace_end(g));
  OK(ad_graph_trace_end(g)); /* not tracing: no-op */
  /* a second context: its graph must refuse x, a tensor of ctx */
  ad_ctx *other = ad_ctx_new();
  ad_graph *g2 = ad_graph_new(other);
  cr_assert_eq(ad_graph_dot(g2, stdout, x, 0), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(ctx), "another context"));
  ad_clear_error(ctx);
  cr_assert_eq(ad_graph_name(g2, x, "x"), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(other), "graph_name: the tensor belongs to another context"), "%s",
            ad_last_error(other));
  ad_graph_free(g2);
  ad_ctx_free(other);
  ad_graph_free(g);
  ad_graph_free(NULL);
  ad_tensor_free(x);
}

/* ------------------------------------------------ names Graphviz minds */

/* y = 2x, a user op whose name and input name need escaping in DOT */
static void twice_fwd(const ad_call *c) {
  for (int64_t i = 0; i < c->out->size; i++)
    ad_tensor_set(c->out, i, 2 * ad_tensor_get(c->in[0], i));
}
static ad_status twice_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_mul_scalar(c->ctx, c->gout, 2));
}

/* Names are the user's bytes: quotes, backslashes, DOT's escapes, record
 * and HTML characters, control characters, bytes that are not UTF-8, and
 * long UTF-8 names; so are a user op's name and input names. Every dump
 * must still render without a word from dot, hold no control character,
 * and show a long name whole. */
Test(graph, any_name_gives_valid_dot) {
  static const ad_op_def twice = {.name = "tw\"ice<|>",
                                  .arity = 1,
                                  .flags = AD_OP_ELEMENTWISE,
                                  .forward = twice_fwd,
                                  .backward = twice_bwd,
                                  .math = "y = 2 x",
                                  .inputs = {"x\"1"},
                                  .grads = {"2 dy"}};
  int id = ad_op_register(ctx, &twice);
  cr_assert(id >= 0, "%s", ad_last_error(ctx));
  char longname[2 * 40 + 1] = ""; /* 40 e-acute: 80 bytes */
  for (int i = 0; i < 40; i++) strcat(longname, "\xc3\xa9");
  const char *names[] = {"a\"b\\c\\l\\N{x}", "<b>|{r}|&amp;", "tab\there\rcr\x01\x7f",
                         "bad \xff\xfe utf8 \xc3", "surrogate \xed\xa0\x80 overlong \xc0\xaf"};
  int64_t s3 = 3;
  double v[3] = {0.5, -1, 2};
  ad_tensor *x = param(1, &s3, v);
  ad_graph *g = ad_graph_new(ctx);
  OK(ad_scope_push(ctx, "scope \"\xff\x02"));
  ad_tensor *a = ad_op_apply(ctx, id, 1, &x, NULL);
  ad_tensor *b = ad_tanh(ctx, a);
  OK(ad_scope_pop(ctx));
  ad_tensor *c = ad_sin(ctx, b);
  ad_tensor *L = ad_sum(ctx, ad_mul(ctx, c, x));
  cr_assert_not_null(L, "%s", ad_last_error(ctx));
  OK(ad_graph_name(g, x, names[0]));
  OK(ad_tensor_set_name(a, names[1]));
  OK(ad_graph_name(g, a, names[2]));
  OK(ad_graph_name(g, b, names[3]));
  OK(ad_tensor_set_name(L, names[4]));
  OK(ad_graph_name(g, c, longname));
  free(trace_backward(g, L, NULL, NULL));
  for (int flags = 0; flags < 4; flags++) {
    mem m;
    mem_open(&m);
    OK(ad_graph_dot(g, m.f, L, flags));
    char *s = mem_close(&m);
    for (const char *p = s; *p; p++)
      cr_assert(*p == '\n' || ((unsigned char)*p >= 0x20 && *p != 0x7f),
                "flags %d: control byte 0x%02x in the dump", flags, (unsigned char)*p);
    cr_assert(strstr(s, "bad \\\\xFF\\\\xFE utf8 \\\\xC3"), "%s", s);
    char local[128];
    snprintf(local, sizeof local, "local d%s/d", longname);
    if (flags == AD_DOT_BACKWARD) /* the local derivative of sin names c whole */
      cr_assert(strstr(s, local), "%s", s);
    if (have_dot()) {
      char *e = render(s);
      cr_assert(e, "flags %d: dot failed on:\n%s", flags, s);
      cr_assert_str_empty(e, "flags %d: dot says %s", flags, e);
      free(e);
    }
    free(s);
  }
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* A full disk: the dump's and the trace's writes fail when the stream's
 * buffer goes out, which may be after the last byte is handed over; both
 * must report it, not return AD_OK for a file that is not there. */
Test(graph, write_errors_are_reported) {
  FILE *full = fopen("/dev/full", "w");
  if (!full) cr_skip_test("no /dev/full");
  int64_t s2 = 2;
  double v[2] = {1, 2};
  ad_tensor *x = param(1, &s2, v);
  ad_tensor *L = ad_sum(ctx, ad_tanh(ctx, x));
  ad_graph *g = ad_graph_new(ctx);
  cr_assert_eq(ad_graph_dot(g, full, L, 0), AD_ERR_IO);
  cr_assert(strstr(ad_last_error(ctx), "graph_dot: write error"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  clearerr(full);
  OK(ad_graph_trace_begin(g, full));
  OK(ad_backward(ctx, L, NULL));
  cr_assert_eq(ad_graph_trace_end(g), AD_ERR_IO);
  cr_assert(strstr(ad_last_error(ctx), "graph_trace_end: write error"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  fclose(full);
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* ------------------------------------------------------------- hooks */

static int user_calls;
static void user_hook(void *ud, const ad_backward_step *st) {
  *(int *)ud += st->n > 0; /* every step has inputs */
  user_calls++;
}

Test(graph, hooks_chain_and_restore) {
  int64_t s2 = 2;
  double v[2] = {1, 2};
  ad_tensor *x = param(1, &s2, v);
  int mine = 0;
  ad_set_backward_hook(ctx, user_hook, &mine);
  ad_graph *g1 = ad_graph_new(ctx), *g2 = ad_graph_new(ctx);
  mem t1, t2;
  mem_open(&t1);
  mem_open(&t2);
  OK(ad_graph_trace_begin(g1, t1.f));
  OK(ad_graph_trace_begin(g2, t2.f));
  ad_tensor *L = ad_sum(ctx, ad_sin(ctx, x)); /* two ops */
  OK(ad_backward(ctx, L, NULL));
  cr_assert_eq(mine, 2);
  OK(ad_graph_trace_end(g1)); /* out of order: g2 still on top */
  OK(ad_backward(ctx, L, NULL));
  cr_assert_eq(mine, 4);
  OK(ad_graph_trace_end(g2));
  OK(ad_backward(ctx, L, NULL));
  cr_assert_eq(mine, 6); /* the user's hook is back */
  char *o1 = mem_close(&t1), *o2 = mem_close(&t2);
  cr_assert(strstr(o1, "backward pass 1:") && !strstr(o1, "backward pass 2:"), "%s", o1);
  cr_assert(strstr(o2, "backward pass 2:") && !strstr(o2, "backward pass 3:"), "%s", o2);
  free(o1);
  free(o2);
  ad_set_backward_hook(ctx, NULL, NULL);
  ad_graph_free(g1);
  ad_graph_free(g2);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* ---------------------------------------------------------------- OOM */

Test(graph, oom_is_reported_not_fatal) {
  bool dot_oom = false, trace_oom = false;
  for (long k = 0; k < 400 && !(dot_oom && trace_oom); k++) {
    test_alloc b = {0}; /* a fresh counting context per budget k */
    ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &b);
    cr_assert_not_null(c);
    int64_t s3 = 3;
    ad_tensor *x = ad_ones(c, AD_F64, 1, &s3);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = x;
    for (int i = 0; i < 40; i++) y = ad_tanh(c, y);
    ad_tensor *L = ad_sum(c, y);
    cr_assert_not_null(L);
    /* a first pass allocates x->grad, the arena and backward's scratch */
    cr_assert_eq(ad_backward(c, L, NULL), AD_OK);
    ad_tape_reset(c);
    y = x;
    for (int i = 0; i < 40; i++) y = ad_tanh(c, y);
    L = ad_sum(c, y);
    cr_assert_not_null(L);
    ad_graph *g = ad_graph_new(c);
    cr_assert_not_null(g);
    ad_graph_name(g, x, "x");
    test_alloc_refuse_after(&b, k); /* from here on, k allocations succeed */
    ad_graph_trace_begin(g, NULL);
    ad_status st = ad_backward(c, L, NULL);
    ad_status te = ad_graph_trace_end(g);
    if (st == AD_OK && te == AD_ERR_OOM) {
      trace_oom = true;
      cr_assert(strstr(ad_last_error(c), "graph_trace_end: out of memory"), "%s", ad_last_error(c));
      ad_clear_error(c);
    }
    if (st == AD_OK) {
      mem m;
      mem_open(&m);
      ad_status ds = ad_graph_dot(g, m.f, L, AD_DOT_BACKWARD);
      free(mem_close(&m));
      if (ds == AD_ERR_OOM) {
        dot_oom = true;
        cr_assert(strstr(ad_last_error(c), "graph_dot: out of memory"), "%s", ad_last_error(c));
      } else {
        cr_assert_eq(ds, AD_OK, "%s", ad_last_error(c));
      }
    }
    test_alloc_grant_all(&b);
    ad_graph_free(g);
    ad_tape_reset(c);
    ad_tensor_free(x);
    ad_ctx_free(c);
  }
  cr_assert(dot_oom && trace_oom, "OOM paths not reached: dot %d trace %d", dot_oom, trace_oom);
}
