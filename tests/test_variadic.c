/* test_variadic.c: ops of any number of inputs (issue 11): concat of 1, 8,
 * 9, 100 and 1000 tensors with their gradients in f32 and f64, a variadic op
 * registered at run time through the sweep, its hook, graph dumps and traces,
 * gradcheck of many inputs, and bad input to concat. */
#include "ad_ext.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

TEST_CTX_SUITE(variadic);

#define OK(expr) cr_assert_eq((expr), AD_OK, "%s", ad_last_error(ctx))

/* A persistent [rows, 2] tensor requiring a gradient, element j of input k
 * being k + j / 8. */
static ad_tensor *input_k(ad_ctx *c, ad_dtype dt, int k, int64_t rows) {
  int64_t s[2] = {rows, 2};
  ad_tensor *x = ad_zeros(c, dt, 2, s);
  cr_assert_not_null(x, "%s", ad_last_error(c));
  for (int64_t j = 0; j < x->size; j++) ad_tensor_set(x, j, k + (double)j / 8);
  ad_tensor_set_requires_grad(x, true);
  return x;
}

static void expect_error(ad_status want, const char *needle) {
  cr_assert_eq(ad_last_status(ctx), want, "status %s, expected %s (%s)",
               ad_status_str(ad_last_status(ctx)), ad_status_str(want), ad_last_error(ctx));
  cr_assert(strstr(ad_last_error(ctx), needle), "message '%s' lacks '%s'", ad_last_error(ctx),
            needle);
  ad_clear_error(ctx);
}

/* concat of n inputs (input k has 1 + k % 3 rows) along axis 0 and, for the
 * gradient, L = sum(w * y) with w[i] = i + 1 over y's elements: input k's
 * gradient is w at its rows. */
static void concat_n(ad_dtype dt, int n) {
  ad_tensor **xs = malloc((size_t)n * sizeof *xs);
  cr_assert_not_null(xs);
  int64_t rows = 0;
  for (int k = 0; k < n; k++) {
    xs[k] = input_k(ctx, dt, k, 1 + k % 3);
    rows += 1 + k % 3;
  }
  ad_tensor *y = ad_concat(ctx, n, xs, 0);
  cr_assert_not_null(y, "concat of %d: %s", n, ad_last_error(ctx));
  cr_assert_eq(y->ndim, 2);
  cr_assert_eq(y->shape[0], rows);
  cr_assert_eq(y->shape[1], 2);
  int64_t ws[2] = {rows, 2};
  ad_tensor *w = ad_zeros(ctx, dt, 2, ws);
  for (int64_t i = 0; i < w->size; i++) ad_tensor_set(w, i, (double)(i + 1));
  ad_tensor *L = ad_sum(ctx, ad_mul(ctx, y, w));
  OK(ad_backward(ctx, L, NULL));
  int64_t off = 0;
  for (int k = 0; k < n; k++) {
    for (int64_t j = 0; j < xs[k]->size; j++) {
      QUICK_ASSERT(ad_tensor_get(y, off + j) == ad_tensor_get(xs[k], j),
                   "n %d: y[%lld] = %g, input %d element %lld = %g", n, (long long)(off + j),
                   ad_tensor_get(y, off + j), k, (long long)j, ad_tensor_get(xs[k], j));
      QUICK_ASSERT(xs[k]->grad && ad_tensor_get(xs[k]->grad, j) == (double)(off + j + 1),
                   "n %d: grad of input %d element %lld wrong", n, k, (long long)j);
    }
    off += xs[k]->size;
  }
  ad_tape_reset(ctx);
  for (int k = 0; k < n; k++) ad_tensor_free(xs[k]);
  ad_tensor_free(w);
  free(xs);
}

Test(variadic, concat_of_any_number_with_gradients) {
  static const int counts[] = {1, 8, 9, 100, 1000};
  for (int d = 0; d < 2; d++)
    for (size_t i = 0; i < sizeof counts / sizeof *counts; i++)
      concat_n(d ? AD_F64 : AD_F32, counts[i]);
}

/* The inputs as one list: concat along the last axis of n [2, 1] inputs. */
static ad_tensor *fn_concat_last(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)ud;
  return ad_tanh(c, ad_concat(c, n, in, -1));
}

Test(variadic, gradcheck_and_gradgradcheck_of_many_inputs) {
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    static const int counts[] = {9, 40};
    for (int i = 0; i < 2; i++) {
      int n = counts[i];
      ad_tensor *xs[40];
      for (int k = 0; k < n; k++) {
        int64_t s[2] = {2, 1};
        xs[k] = ad_zeros(ctx, dt, 2, s);
        ad_tensor_set(xs[k], 0, 0.1 * k - 1.5);
        ad_tensor_set(xs[k], 1, 0.7 - 0.05 * k);
        ad_tensor_set_requires_grad(xs[k], (k % 4) != 1); /* some are constants */
      }
      ad_check_report r;
      OK(ad_gradcheck(ctx, fn_concat_last, NULL, n, xs, NULL, &r));
      cr_assert(r.passed, "gradcheck of %d: input %d [%lld]: %g vs %g", n, r.input,
                (long long)r.index, r.analytic, r.numeric);
      cr_assert_eq(r.checked, 2 * (n - (n + 2) / 4), "%d inputs: %lld checked", n,
                   (long long)r.checked);
      OK(ad_gradgradcheck(ctx, fn_concat_last, NULL, n, xs, NULL, &r));
      cr_assert(r.passed, "gradgradcheck of %d", n);
      for (int k = 0; k < n; k++) ad_tensor_free(xs[k]);
    }
  }
}

/* --------------------------------------------- a variadic op of our own
 * weighted sum: y = sum_k (k + 1) xk, so input k gets (k + 1) dy. Every
 * piece of the engine that walks an op's inputs sees it: the sweep, the
 * backward hook, graph dumps and traces. */

static void wsum_fwd(const ad_call *c) {
  for (int64_t i = 0; i < c->out->size; i++) {
    double acc = 0;
    for (int k = 0; k < c->n; k++) acc += (k + 1) * ad_tensor_get(c->in[k], i);
    ad_tensor_set(c->out, i, acc);
  }
}

static ad_status wsum_bwd(const ad_call *c) {
  for (int k = 0; k < c->n; k++)
    if (c->needs[k]) {
      ad_status st = ad_call_set_grad(c, k, ad_mul_scalar(c->ctx, c->gout, k + 1));
      if (st != AD_OK) return st;
    }
  return AD_OK;
}

static const ad_op_def wsum_def = {.name = "wsum",
                                   .arity = -1,
                                   .flags = AD_OP_ELEMENTWISE,
                                   .forward = wsum_fwd,
                                   .backward = wsum_bwd,
                                   .math = "y = sum_k (k + 1) xk",
                                   .inputs = {"xk"},
                                   .grads = {"(k + 1) dy"}};

typedef struct hook_seen {
  int calls, n;
  double g_last; /* the contribution the hook saw for the last input */
  bool inputs_match;
  ad_tensor *const *xs;
} hook_seen;

static void hook(void *ud, const ad_backward_step *st) {
  hook_seen *h = ud;
  h->calls++;
  h->n = st->n;
  h->inputs_match = true;
  for (int k = 0; k < st->n; k++) h->inputs_match &= st->in[k] == h->xs[k];
  h->g_last =
      st->gin[st->n - 1] || st->direct[st->n - 1]
          ? ad_tensor_get(st->gin[st->n - 1] ? st->gin[st->n - 1] : st->in[st->n - 1]->grad, 0)
          : NAN;
}

Test(variadic, registered_op_of_300_inputs_through_sweep_hook_and_graph) {
  int id = ad_op_register(ctx, &wsum_def);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  enum { N = 300 };
  ad_tensor *xs[N];
  int64_t s[1] = {3};
  for (int k = 0; k < N; k++) {
    xs[k] = ad_full(ctx, AD_F64, 1, s, 0.5);
    ad_tensor_set_requires_grad(xs[k], k != 7); /* input 7 needs none */
  }
  hook_seen h = {.xs = xs};
  ad_set_backward_hook(ctx, hook, &h);
  ad_tensor *y = ad_op_apply(ctx, id, N, xs, NULL);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(y, 2), 0.5 * N * (N + 1) / 2);
  ad_tensor *in[1];
  cr_assert_eq(ad_tensor_inputs(y, NULL, 0), N);
  cr_assert_eq(ad_tensor_inputs(y, in, 1), N);
  cr_assert_eq(in[0], xs[0]);
  OK(ad_backward(ctx, ad_sum(ctx, y), NULL));
  ad_set_backward_hook(ctx, NULL, NULL);
  for (int k = 0; k < N; k++) {
    if (k == 7) {
      cr_assert_null(xs[k]->grad);
      continue;
    }
    cr_assert_not_null(xs[k]->grad, "input %d", k);
    cr_assert_eq(ad_tensor_get(xs[k]->grad, 1), k + 1.0, "input %d", k);
  }
  cr_assert_eq(h.calls, 2); /* wsum and sum */
  cr_assert_eq(h.n, N, "the hook saw %d inputs", h.n);
  cr_assert(h.inputs_match, "the hook's inputs are the caller's tensors in order");
  cr_assert_eq(h.g_last, (double)N);

  /* a trace and a dump name every input, past the eighth */
  ad_tape_reset(ctx);
  ad_graph *g = ad_graph_new(ctx);
  cr_assert_not_null(g);
  for (int k = 0; k < N; k++) {
    char name[16];
    snprintf(name, sizeof name, "x%d", k);
    OK(ad_tensor_set_name(xs[k], name));
    ad_tensor_zero_grad(xs[k]);
  }
  y = ad_sum(ctx, ad_op_apply(ctx, id, N, xs, NULL));
  char *text = NULL, *dot = NULL;
  size_t tl = 0, dl = 0;
  FILE *f = open_memstream(&text, &tl);
  OK(ad_graph_trace_begin(g, f));
  OK(ad_backward(ctx, y, NULL));
  OK(ad_graph_trace_end(g));
  fclose(f);
  cr_assert(strstr(text, "x299)"), "the trace lists the last input:\n%.400s", text);
  cr_assert(strstr(text, "-> x299"), "the trace shows the last input's gradient");
  cr_assert(strstr(text, "dxk += (k + 1) dy"), "the trace gives the template rule once");
  f = open_memstream(&dot, &dl);
  OK(ad_graph_dot(g, f, y, AD_DOT_BACKWARD));
  fclose(f);
  cr_assert(strstr(dot, "x299"), "the dump has the last input");
  cr_assert(strstr(dot, "sends dL/dx299 += "), "the dump shows its gradient");
  free(text);
  free(dot);
  ad_graph_free(g);
  for (int k = 0; k < N; k++) ad_tensor_free(xs[k]);
}

/* ------------------------------------------------------------ bad input */

Test(variadic, concat_bad_input) {
  int64_t s23[2] = {2, 3}, s24[2] = {2, 4}, s13[2] = {1, 3};
  ad_tensor *a = ad_zeros(ctx, AD_F64, 2, s23), *b = ad_zeros(ctx, AD_F64, 2, s24);
  ad_tensor *c1 = ad_zeros(ctx, AD_F64, 2, s13);
  ad_tensor *xs[12];
  for (int k = 0; k < 12; k++) xs[k] = a;
  cr_assert_null(ad_concat(ctx, 0, xs, 0));
  expect_error(AD_ERR_ARG, "concat: takes one or more inputs, got 0");
  cr_assert_null(ad_concat(ctx, 3, NULL, 0));
  expect_error(AD_ERR_NULL, "concat: the array of inputs is NULL");
  xs[10] = NULL;
  cr_assert_null(ad_concat(ctx, 12, xs, 0));
  expect_error(AD_ERR_NULL, "concat: input 10 is NULL");
  xs[10] = a;
  xs[9] = b; /* differs off axis 0 */
  cr_assert_null(ad_concat(ctx, 12, xs, 0));
  expect_error(AD_ERR_SHAPE, "concat: input 9 has shape [2,4], input 0 has [2,3]");
  xs[9] = c1; /* along axis 0 it fits, along axis 1 it does not */
  ad_tensor *y = ad_concat(ctx, 12, xs, 0);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->shape[0], 23);
  cr_assert_null(ad_concat(ctx, 12, xs, -1));
  expect_error(AD_ERR_SHAPE, "concat: input 9 has shape [1,3], input 0 has [2,3]");
  xs[9] = a;
  cr_assert_null(ad_concat(ctx, 12, xs, 2));
  expect_error(AD_ERR_ARG, "concat: axis 2 out of range for [2,3]");
  cr_assert_null(ad_concat(ctx, 12, xs, -3));
  expect_error(AD_ERR_ARG, "axis -3 out of range");
  ad_ctx *other = ad_ctx_new();
  ad_tensor *o = ad_zeros(other, AD_F64, 2, s23);
  xs[11] = o;
  cr_assert_null(ad_concat(ctx, 12, xs, 0));
  expect_error(AD_ERR_ARG, "concat: input 11 belongs to another context");
  ad_ctx_free(other);
  ad_tensor *f32 = ad_zeros(ctx, AD_F32, 2, s23);
  xs[11] = f32;
  cr_assert_null(ad_concat(ctx, 12, xs, 0));
  expect_error(AD_ERR_DTYPE, "concat: dtypes differ: input 0 is f64, input 11 is f32");
  ad_tensor_free(a);
  ad_tensor_free(b);
  ad_tensor_free(c1);
  ad_tensor_free(f32);
}
