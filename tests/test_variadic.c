/* test_variadic.c: the core conveniences of issue 11 (recurrent networks).
 * Ops of any number of inputs: concat and stack of 1, 8, 9, 100 and 1000
 * tensors with their gradients in f32 and f64, a variadic op registered at
 * run time through the sweep, its hook, graph dumps and traces, gradcheck
 * of many inputs. unstack; zeros_like / full_like on the tape (an RNN's
 * first state); detach, to second order and in the documented truncated-
 * BPTT pattern. Bad input to each. */
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

/* A sample function that says it filled more slots than it was given: the
 * checker refuses the count instead of reading past its array. */
static int greedy_sample(const ad_sample_call *s) {
  if (s->variant > 0) return 0;
  int64_t one = 1;
  for (int k = 0; k < AD_SAMPLE_MAX_IN; k++) {
    s->in[k] = ad_full(s->ctx, s->dtype, 1, &one, 1.0);
    if (!s->in[k] || ad_tensor_set_requires_grad(s->in[k], true) != AD_OK) return -1;
  }
  return AD_SAMPLE_MAX_IN + 4;
}

Test(variadic, op_check_refuses_a_sample_of_too_many_inputs) {
  ad_op_def def = wsum_def;
  def.name = "wsum_greedy";
  def.sample = greedy_sample;
  int id = ad_op_register(ctx, &def);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  ad_check_report r;
  cr_assert_eq(ad_op_check(ctx, id, AD_F64, false, 1, &r), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(ctx), "wsum_greedy's sample gave 20 inputs; at most 16"), "%s",
            ad_last_error(ctx));
  cr_assert(!r.passed);
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

/* wsum whose backward sends inf to its last input: anomaly mode names
 * that input past the eighth, and the call it came from */
static ad_status wsum_inf_bwd(const ad_call *c) {
  ad_status st = wsum_bwd(c);
  int k = c->n - 1;
  if (st == AD_OK && c->needs[k])
    st = ad_call_set_grad(c, k, ad_mul_scalar(c->ctx, c->gout, INFINITY));
  return st;
}

Test(variadic, anomaly_mode_names_an_input_past_the_eighth) {
  ad_op_def def = wsum_def;
  def.name = "wsum_inf";
  def.backward = wsum_inf_bwd;
  int id = ad_op_register(ctx, &def);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  enum { N = 20 };
  ad_tensor *xs[N];
  int64_t s[1] = {3};
  for (int k = 0; k < N; k++) {
    xs[k] = ad_full(ctx, AD_F64, 1, s, 0.5);
    ad_tensor_set_requires_grad(xs[k], true);
  }
  OK(ad_tensor_set_name(xs[N - 1], "last"));
  ad_set_anomaly_mode(ctx, true);
  ad_tensor *y = ad_sum(ctx, ad_op_apply(ctx, id, N, xs, NULL));
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, y, NULL), AD_ERR_NAN);
  expect_error(AD_ERR_NAN,
               "sent a non-finite gradient (inf at element 0) to input 19 ('last' [3])");
  ad_set_anomaly_mode(ctx, false);
  ad_tape_reset(ctx);
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

/* ------------------------------------------------------------- ad_stack */

/* stack of n [2, 3] inputs along axis; L = sum(w * y) with w[i] = i + 1:
 * each input's gradient is w at its place in y. */
static void stack_n(ad_dtype dt, int n, int axis) {
  ad_tensor **xs = malloc((size_t)n * sizeof *xs);
  cr_assert_not_null(xs);
  for (int k = 0; k < n; k++) {
    int64_t s[2] = {2, 3};
    xs[k] = ad_zeros(ctx, dt, 2, s);
    for (int64_t j = 0; j < 6; j++) ad_tensor_set(xs[k], j, k % 50 + (double)j / 8);
    ad_tensor_set_requires_grad(xs[k], true);
  }
  ad_tensor *y = ad_stack(ctx, n, xs, axis);
  cr_assert_not_null(y, "stack of %d on %d: %s", n, axis, ad_last_error(ctx));
  int ax = axis < 0 ? axis + 3 : axis;
  int64_t want[3] = {2, 3, 3};
  for (int d = 0, k = 0; d < 3; d++) want[d] = d == ax ? n : (int64_t[]){2, 3}[k++];
  cr_assert_eq(y->ndim, 3);
  for (int d = 0; d < 3; d++) cr_assert_eq(y->shape[d], want[d], "n %d axis %d dim %d", n, axis, d);
  ad_tensor *w = ad_zeros(ctx, dt, 3, y->shape);
  for (int64_t i = 0; i < w->size; i++) ad_tensor_set(w, i, (double)(i % 1000 + 1));
  OK(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, w)), NULL));
  /* element (i, j) of input k sits at y[k, i, j], y[i, k, j] or y[i, j, k] */
  for (int k = 0; k < n; k++)
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 3; j++) {
        int64_t at = ax == 0   ? ((int64_t)k * 2 + i) * 3 + j
                     : ax == 1 ? ((int64_t)i * n + k) * 3 + j
                               : ((int64_t)i * 3 + j) * n + k;
        QUICK_ASSERT(ad_tensor_get(y, at) == ad_tensor_get(xs[k], i * 3 + j),
                     "n %d axis %d: y at input %d (%d,%d) wrong", n, axis, k, i, j);
        QUICK_ASSERT(ad_tensor_get(xs[k]->grad, i * 3 + j) == ad_tensor_get(w, at),
                     "n %d axis %d: grad of input %d (%d,%d) wrong", n, axis, k, i, j);
      }
  ad_tape_reset(ctx);
  for (int k = 0; k < n; k++) ad_tensor_free(xs[k]);
  ad_tensor_free(w);
  free(xs);
}

Test(variadic, stack_of_any_number_with_gradients) {
  static const int counts[] = {1, 8, 9, 100, 1000};
  static const int axes[] = {0, 1, -1, -3};
  for (int d = 0; d < 2; d++)
    for (size_t i = 0; i < sizeof counts / sizeof *counts; i++)
      for (size_t a = 0; a < sizeof axes / sizeof *axes; a++)
        stack_n(d ? AD_F64 : AD_F32, counts[i], axes[a]);
}

static ad_tensor *fn_stack_mid(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)ud;
  ad_tensor *s = ad_stack(c, n, in, -2);
  return ad_mul(c, s, ad_tanh(c, s)); /* not linear: a second derivative to check */
}

Test(variadic, stack_gradcheck_and_gradgradcheck) {
  for (int d = 0; d < 2; d++) {
    static const int counts[] = {1, 3, 9};
    for (int i = 0; i < 3; i++) {
      ad_tensor *xs[9];
      ad_rng rng;
      ad_rng_seed(&rng, 7 + (uint64_t)i);
      int64_t s[2] = {2, 2};
      for (int k = 0; k < counts[i]; k++) {
        xs[k] = ad_rand(ctx, &rng, d ? AD_F64 : AD_F32, 2, s, -1, 1);
        ad_tensor_set_requires_grad(xs[k], true);
      }
      ad_check_report r;
      OK(ad_gradcheck(ctx, fn_stack_mid, NULL, counts[i], xs, NULL, &r));
      cr_assert(r.passed, "stack of %d: gradcheck", counts[i]);
      cr_assert_eq(r.checked, 4 * counts[i]);
      OK(ad_gradgradcheck(ctx, fn_stack_mid, NULL, counts[i], xs, NULL, &r));
      cr_assert(r.passed, "stack of %d: gradgradcheck", counts[i]);
      for (int k = 0; k < counts[i]; k++) ad_tensor_free(xs[k]);
    }
  }
}

/* ----------------------------------------------------------- ad_unstack */

Test(variadic, unstack_values_gradients_and_round_trip) {
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    int64_t s[3] = {3, 4, 2};
    ad_tensor *x = ad_zeros(ctx, dt, 3, s);
    for (int64_t j = 0; j < x->size; j++) ad_tensor_set(x, j, (double)j / 4 - 1);
    ad_tensor_set_requires_grad(x, true);
    for (int axis = -3; axis < 3; axis++) {
      int ax = axis < 0 ? axis + 3 : axis;
      ad_tensor *out[4] = {0};
      OK(ad_unstack(ctx, x, axis, out));
      for (int i = 0; i < s[ax]; i++) {
        cr_assert_not_null(out[i]);
        cr_assert_eq(out[i]->ndim, 2);
        cr_assert(!ad_tensor_is_temporary(x) && ad_tensor_is_temporary(out[i]),
                  "the slices are tape temporaries");
        for (int64_t j = 0; j < out[i]->size; j++) {
          /* element j of slice i: the j-th index over the other two dims */
          int64_t o = j / out[i]->shape[1], q = j % out[i]->shape[1];
          int64_t idx3[3];
          for (int dd = 0, k = 0; dd < 3; dd++) idx3[dd] = dd == ax ? i : (k++ ? q : o);
          int64_t flat = (idx3[0] * 4 + idx3[1]) * 2 + idx3[2];
          QUICK_ASSERT(ad_tensor_get(out[i], j) == ad_tensor_get(x, flat),
                       "axis %d slice %d element %lld", axis, i, (long long)j);
        }
      }
      ad_tensor *back = ad_stack(ctx, (int)s[ax], out, axis);
      cr_assert_not_null(back, "%s", ad_last_error(ctx));
      for (int64_t j = 0; j < x->size; j++)
        cr_assert_eq(ad_tensor_get(back, j), ad_tensor_get(x, j), "round trip on axis %d", axis);
      /* L = sum_i (i + 1) sum(out_i^2): dx at slice i is 2 (i + 1) x */
      ad_tensor *L = NULL;
      for (int i = 0; i < s[ax]; i++) {
        ad_tensor *t = ad_mul_scalar(ctx, ad_sum(ctx, ad_square(ctx, out[i])), i + 1);
        L = L ? ad_add(ctx, L, t) : t;
      }
      ad_tensor_zero_grad(x);
      OK(ad_backward(ctx, L, NULL));
      for (int64_t j = 0; j < x->size; j++) {
        int64_t idx3[3] = {j / 8, j / 2 % 4, j % 2};
        double want = 2.0 * (double)(idx3[ax] + 1) * ad_tensor_get(x, j);
        cr_assert_float_eq(ad_tensor_get(x->grad, j), want, 1e-6, "axis %d element %lld", axis,
                           (long long)j);
      }
      ad_tape_reset(ctx);
    }
    ad_tensor_free(x);
  }
}

/* f(x) = out0 * out1 + tanh(out2) over the slices of x along axis 0 */
static ad_tensor *fn_unstack(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n, (void)ud;
  ad_tensor *o[3];
  if (ad_unstack(c, in[0], 0, o) != AD_OK) return NULL;
  return ad_add(c, ad_mul(c, o[0], o[1]), ad_tanh(c, o[2]));
}

Test(variadic, unstack_gradcheck_and_gradgradcheck) {
  for (int d = 0; d < 2; d++) {
    ad_rng rng;
    ad_rng_seed(&rng, 3);
    int64_t s[3] = {3, 2, 2};
    ad_tensor *x = ad_rand(ctx, &rng, d ? AD_F64 : AD_F32, 3, s, -1, 1);
    ad_tensor_set_requires_grad(x, true);
    ad_check_report r;
    OK(ad_gradcheck(ctx, fn_unstack, NULL, 1, &x, NULL, &r));
    cr_assert(r.passed, "unstack: gradcheck");
    OK(ad_gradgradcheck(ctx, fn_unstack, NULL, 1, &x, NULL, &r));
    cr_assert(r.passed, "unstack: gradgradcheck");
    ad_tensor_free(x);
  }
}

/* Elements of the gradients the backward passes to ops' inputs. */
static void count_gin(void *ud, const ad_backward_step *st) {
  for (int k = 0; k < st->n; k++)
    if (st->gin[k]) *(int64_t *)ud += st->gin[k]->size;
}

/* The backward of 64 slices moves O(size log n) elements, not one
 * x-sized gradient per slice (64 x 256 = 16384 here; an LSTM over an
 * embedded sequence paid that, T^2 / 2 in all). */
Test(variadic, unstack_backward_is_n_log_n) {
  int64_t s[2] = {64, 4};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 2, s);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *out[64];
  OK(ad_unstack(ctx, x, 0, out));
  ad_tensor *y = ad_stack(ctx, 64, out, 0); /* the slices' own gradients: 256 elements */
  int64_t moved = 0;
  ad_set_backward_hook(ctx, count_gin, &moved);
  OK(ad_backward(ctx, ad_sum(ctx, y), NULL));
  ad_set_backward_hook(ctx, NULL, NULL);
  for (int64_t j = 0; j < x->size; j++) cr_assert_eq(ad_tensor_get(x->grad, j), 1.0);
  cr_assert(moved <= 4 * 256 * 6, "the backward moved %lld elements", (long long)moved);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

Test(variadic, unstack_of_an_empty_axis_writes_nothing) {
  int64_t s[3] = {2, 0, 3};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 3, s), *sentinel = x, *out[1] = {sentinel};
  OK(ad_unstack(ctx, x, 1, out));
  cr_assert_eq(out[0], sentinel);
  ad_tensor *o2[2];
  OK(ad_unstack(ctx, x, 0, o2)); /* two slices [0, 3] */
  cr_assert_eq(o2[1]->shape[0], 0);
  cr_assert_eq(o2[1]->shape[1], 3);
  ad_tensor_free(x);
}

/* ------------------------------------------------ zeros_like, full_like */

Test(variadic, zeros_like_and_full_like_are_tape_constants) {
  int64_t s[2] = {2, 3};
  ad_tensor *x = ad_full(ctx, AD_F32, 2, s, 7.0);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *z = ad_zeros_like(ctx, x), *f = ad_full_like(ctx, x, -2.5);
  cr_assert_not_null(z, "%s", ad_last_error(ctx));
  cr_assert_not_null(f, "%s", ad_last_error(ctx));
  for (int i = 0; i < 2; i++) {
    ad_tensor *t = i ? f : z;
    cr_assert_eq(t->dtype, AD_F32);
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->shape[0], 2);
    cr_assert_eq(t->shape[1], 3);
    cr_assert(ad_tensor_is_temporary(t));
    cr_assert(!ad_tensor_requires_grad(t));
    for (int64_t j = 0; j < 6; j++) cr_assert_eq(ad_tensor_get(t, j), i ? -2.5 : 0.0);
  }
  /* no gradient to x: it gives the shape only */
  ad_tensor *w = ad_full(ctx, AD_F32, 2, s, 2.0);
  ad_tensor_set_requires_grad(w, true);
  OK(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, ad_add(ctx, z, f), w)), NULL));
  cr_assert_null(x->grad, "x got a gradient through zeros_like");
  cr_assert_eq(ad_tensor_get(w->grad, 4), -2.5);
  /* an i32 template */
  ad_tensor *lab = ad_zeros(ctx, AD_I32, 1, s);
  ad_tensor *l3 = ad_full_like(ctx, lab, 3);
  cr_assert_eq(l3->dtype, AD_I32);
  cr_assert_eq(ad_tensor_get(l3, 1), 3.0);
  cr_assert_null(ad_full_like(ctx, lab, 1e10));
  expect_error(AD_ERR_ARG, "full_like: 1e+10 cannot be stored in an i32 tensor");
  /* freed by the reset, like an op's result */
  ad_tape_reset(ctx);
  cr_assert_null(ad_exp(ctx, z));
  expect_error(AD_ERR_STATE, "exp: input 0 is from a tape that was reset");
  cr_assert_null(ad_zeros_like(ctx, z));
  expect_error(AD_ERR_STATE, "zeros_like: x is from a tape that was reset");
  cr_assert_null(ad_zeros_like(ctx, NULL));
  expect_error(AD_ERR_NULL, "zeros_like: x is NULL");
  ad_ctx *other = ad_ctx_new();
  ad_tensor *o = ad_zeros(other, AD_F32, 2, s);
  cr_assert_null(ad_full_like(ctx, o, 1));
  expect_error(AD_ERR_ARG, "full_like: x belongs to another context");
  ad_ctx_free(other);
  ad_tensor_free(x);
  ad_tensor_free(w);
  ad_tensor_free(lab);
}

/* h_{t+1} = tanh(x_t w + h_t u) over T steps from h0; returns sum(h_T) */
static ad_tensor *rnn(ad_ctx *c, ad_tensor *h0, ad_tensor *const *xs, int T, ad_tensor *w,
                      ad_tensor *u) {
  ad_tensor *h = h0;
  for (int t = 0; t < T; t++)
    h = ad_tanh(c,
                ad_add(c, ad_matmul(c, xs[t], w, false, false), ad_matmul(c, h, u, false, false)));
  return h;
}

Test(variadic, zeros_like_is_a_first_hidden_state_without_special_cases) {
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  int64_t sx[2] = {2, 3}, sw[2] = {3, 4}, su[2] = {4, 4}, sh[2] = {2, 4};
  ad_tensor *xs[3], *w = ad_rand(ctx, &rng, AD_F64, 2, sw, -1, 1);
  ad_tensor *u = ad_rand(ctx, &rng, AD_F64, 2, su, -1, 1);
  for (int t = 0; t < 3; t++) xs[t] = ad_rand(ctx, &rng, AD_F64, 2, sx, -1, 1);
  ad_tensor_set_requires_grad(w, true);
  ad_tensor_set_requires_grad(u, true);
  /* reference: a persistent zero state */
  ad_tensor *h0 = ad_zeros(ctx, AD_F64, 2, sh);
  OK(ad_backward(ctx, ad_sum(ctx, rnn(ctx, h0, xs, 3, w, u)), NULL));
  double gw = ad_tensor_get(w->grad, 5), gu = ad_tensor_get(u->grad, 6);
  ad_tape_reset(ctx);
  ad_tensor_zero_grad(w);
  ad_tensor_zero_grad(u);
  /* the first state made on the tape, shaped like a step's product */
  ad_tensor *first = ad_zeros_like(ctx, ad_matmul(ctx, xs[0], w, false, false));
  OK(ad_backward(ctx, ad_sum(ctx, rnn(ctx, first, xs, 3, w, u)), NULL));
  cr_assert_eq(ad_tensor_get(w->grad, 5), gw);
  cr_assert_eq(ad_tensor_get(u->grad, 6), gu);
  ad_tape_reset(ctx);
  for (int t = 0; t < 3; t++) ad_tensor_free(xs[t]);
  ad_tensor_free(w);
  ad_tensor_free(u);
  ad_tensor_free(h0);
}

/* -------------------------------------------------------------- detach */

Test(variadic, detach_stops_the_gradient_to_first_and_second_order) {
  int64_t s[1] = {3};
  const double v[3] = {-1.5, 0.5, 2.0};
  ad_tensor *x = ad_from_data(ctx, AD_F64, 1, s, v);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *d = ad_detach(ctx, x);
  cr_assert_not_null(d, "%s", ad_last_error(ctx));
  cr_assert_eq(d->data, x->data, "a view of x");
  cr_assert(!ad_tensor_requires_grad(d));
  cr_assert_eq(ad_tensor_op(d), ad_op_find(ctx, "detach"));
  /* L = sum(x^2 d): dL/dx = 2 x d (d a constant), not 3 x^2 */
  ad_tensor *L = ad_sum(ctx, ad_mul(ctx, ad_square(ctx, x), d));
  ad_tensor *g;
  OK(ad_grad(ctx, L, NULL, 1, &x, &g, true));
  for (int i = 0; i < 3; i++) cr_assert_float_eq(ad_tensor_get(g, i), 2 * v[i] * v[i], 1e-15);
  /* d/dx sum(g) = 2 d */
  ad_tensor *g2;
  OK(ad_grad(ctx, ad_sum(ctx, g), NULL, 1, &x, &g2, false));
  for (int i = 0; i < 3; i++) cr_assert_float_eq(ad_tensor_get(g2, i), 2 * v[i], 1e-15);
  ad_tape_reset(ctx);
  /* a detached tensor alone: backward has nothing to differentiate */
  ad_tensor *only = ad_sum(ctx, ad_detach(ctx, x));
  cr_assert_eq(ad_backward(ctx, only, NULL), AD_ERR_STATE);
  expect_error(AD_ERR_STATE, "the root does not require grad");
  cr_assert_null(ad_detach(ctx, NULL));
  expect_error(AD_ERR_NULL, "detach: input 0 is NULL");
  ad_tensor_free(x);
}

/* f(x, c) = x^3 * detach(tanh(x) - tanh(x) + c) + x: detach's input depends
 * on x in the graph, its value does not (it is c exactly) */
static ad_tensor *fn_detach(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n, (void)ud;
  ad_tensor *x = in[0], *t = ad_tanh(c, x);
  ad_tensor *d = ad_detach(c, ad_add(c, ad_sub(c, t, t), in[1]));
  return ad_add(c, ad_mul(c, ad_pow_scalar(c, x, 3), d), x);
}

Test(variadic, gradgradcheck_through_a_graph_with_detach) {
  for (int dd = 0; dd < 2; dd++) {
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    int64_t s[2] = {2, 3};
    ad_tensor *in[2] = {ad_rand(ctx, &rng, dd ? AD_F64 : AD_F32, 2, s, -1, 1),
                        ad_rand(ctx, &rng, dd ? AD_F64 : AD_F32, 2, s, 0.5, 1.5)};
    ad_tensor_set_requires_grad(in[0], true);
    ad_check_report r;
    OK(ad_gradcheck(ctx, fn_detach, NULL, 2, in, NULL, &r));
    cr_assert(r.passed);
    OK(ad_gradgradcheck(ctx, fn_detach, NULL, 2, in, NULL, &r));
    cr_assert(r.passed);
    ad_tensor_free(in[0]);
    ad_tensor_free(in[1]);
  }
}

/* The documented truncated-BPTT pattern (ad.h, ad_detach): 2 chunks of 3
 * steps; state carried in a persistent tensor copied before each reset.
 * Chunk 2's gradient is that of a graph starting from chunk 1's final
 * values as constants; its state continues the untruncated sequence. The
 * same gradient comes from detaching the state within one tape. */
Test(variadic, truncated_bptt_carries_state_across_a_reset) {
  ad_rng rng;
  ad_rng_seed(&rng, 21);
  int64_t sx[2] = {2, 3}, sw[2] = {3, 4}, su[2] = {4, 4}, sh[2] = {2, 4};
  ad_tensor *xs[6], *w = ad_rand(ctx, &rng, AD_F64, 2, sw, -1, 1);
  ad_tensor *u = ad_rand(ctx, &rng, AD_F64, 2, su, -1, 1);
  for (int t = 0; t < 6; t++) xs[t] = ad_rand(ctx, &rng, AD_F64, 2, sx, -1, 1);
  ad_tensor_set_requires_grad(w, true);
  ad_tensor_set_requires_grad(u, true);

  /* untruncated: the state after 6 steps, and the full gradient */
  ad_tensor *hfull =
      rnn(ctx, ad_zeros_like(ctx, ad_matmul(ctx, xs[0], w, false, false)), xs, 6, w, u);
  double h6[8];
  for (int i = 0; i < 8; i++) h6[i] = ad_tensor_get(hfull, i);
  OK(ad_backward(ctx, ad_sum(ctx, hfull), NULL));
  double full_gu = ad_tensor_get(u->grad, 3);
  ad_tape_reset(ctx);

  /* the pattern */
  ad_tensor *state = ad_zeros(ctx, AD_F64, 2, sh);
  double gw[16], gu[16], carried[8];
  for (int chunk = 0; chunk < 2; chunk++) {
    ad_tensor_zero_grad(w);
    ad_tensor_zero_grad(u);
    ad_tensor *h = rnn(ctx, state, xs + 3 * chunk, 3, w, u);
    OK(ad_backward(ctx, ad_sum(ctx, h), NULL));
    if (chunk == 0)
      for (int i = 0; i < 8; i++) carried[i] = ad_tensor_get(h, i);
    OK(ad_tensor_copy_data(state, h));
    ad_tape_reset(ctx);
  }
  for (int i = 0; i < 16; i++) gw[i] = ad_tensor_get(w->grad, i), gu[i] = ad_tensor_get(u->grad, i);
  for (int i = 0; i < 8; i++)
    cr_assert_float_eq(ad_tensor_get(state, i), h6[i], 1e-15, "state %d continues the sequence", i);

  /* reference for chunk 2: a graph from chunk 1's values as a constant */
  ad_tensor *c0 = ad_from_data(ctx, AD_F64, 2, sh, carried);
  ad_tensor_zero_grad(w);
  ad_tensor_zero_grad(u);
  OK(ad_backward(ctx, ad_sum(ctx, rnn(ctx, c0, xs + 3, 3, w, u)), NULL));
  for (int i = 0; i < 16; i++) {
    cr_assert_eq(ad_tensor_get(w->grad, i), gw[i], "dL/dw[%d] of chunk 2", i);
    cr_assert_eq(ad_tensor_get(u->grad, i), gu[i], "dL/du[%d] of chunk 2", i);
  }
  cr_assert(fabs(full_gu - gu[3]) > 1e-6, "the truncated gradient differs from the full one");
  ad_tape_reset(ctx);

  /* within one tape: detach the state between the chunks */
  ad_tensor_zero_grad(w);
  ad_tensor_zero_grad(u);
  ad_tensor *h = rnn(ctx, ad_zeros_like(ctx, c0), xs, 3, w, u);
  h = rnn(ctx, ad_detach(ctx, h), xs + 3, 3, w, u);
  OK(ad_backward(ctx, ad_sum(ctx, h), NULL));
  for (int i = 0; i < 16; i++) {
    cr_assert_eq(ad_tensor_get(w->grad, i), gw[i], "detached: dL/dw[%d]", i);
    cr_assert_eq(ad_tensor_get(u->grad, i), gu[i], "detached: dL/du[%d]", i);
  }
  ad_tape_reset(ctx);
  for (int t = 0; t < 6; t++) ad_tensor_free(xs[t]);
  ad_tensor_free(w);
  ad_tensor_free(u);
  ad_tensor_free(state);
  ad_tensor_free(c0);
}

/* ------------------------------------------------ bad input: stack, unstack */

Test(variadic, stack_and_unstack_bad_input) {
  int64_t s23[2] = {2, 3}, s32[2] = {3, 2};
  ad_tensor *a = ad_zeros(ctx, AD_F64, 2, s23), *b = ad_zeros(ctx, AD_F64, 2, s32);
  ad_tensor *xs[10];
  for (int k = 0; k < 10; k++) xs[k] = a;
  cr_assert_null(ad_stack(ctx, 0, xs, 0));
  expect_error(AD_ERR_ARG, "stack: takes one or more inputs, got 0");
  cr_assert_null(ad_stack(ctx, 2, NULL, 0));
  expect_error(AD_ERR_NULL, "stack: the array of inputs is NULL");
  xs[4] = NULL;
  cr_assert_null(ad_stack(ctx, 10, xs, 0));
  expect_error(AD_ERR_NULL, "stack: input 4 is NULL");
  xs[4] = b; /* same size, other shape: concat along a new axis refuses */
  cr_assert_null(ad_stack(ctx, 10, xs, 0));
  expect_error(AD_ERR_SHAPE, "stack: input 4 has shape [3,2], input 0 has [2,3]");
  xs[4] = a;
  cr_assert_null(ad_stack(ctx, 10, xs, 3));
  expect_error(AD_ERR_ARG, "stack: axis 3 out of range -3..2 for inputs [2,3]");
  cr_assert_null(ad_stack(ctx, 10, xs, -4));
  expect_error(AD_ERR_ARG, "stack: axis -4 out of range");
  cr_assert_not_null(ad_stack(ctx, 10, xs, -3), "%s", ad_last_error(ctx)); /* a new first axis */
  ad_ctx *other = ad_ctx_new();
  ad_tensor *o = ad_zeros(other, AD_F64, 2, s23);
  xs[9] = o;
  cr_assert_null(ad_stack(ctx, 10, xs, 0));
  expect_error(AD_ERR_ARG, "stack: input 9 belongs to another context");
  ad_tensor *f32 = ad_zeros(ctx, AD_F32, 2, s23);
  xs[9] = f32;
  cr_assert_null(ad_stack(ctx, 10, xs, 0));
  expect_error(AD_ERR_DTYPE, "stack: dtypes differ: input 0 is f64, input 9 is f32");
  int64_t s8[8] = {1, 1, 1, 1, 1, 1, 1, 2};
  ad_tensor *big = ad_zeros(ctx, AD_F64, 8, s8);
  cr_assert_null(ad_stack(ctx, 1, &big, 0));
  expect_error(AD_ERR_SHAPE, "stack: inputs [1,1,1,1,1,1,1,2]: the result would have more than 8");

  ad_tensor *out[3];
  cr_assert_eq(ad_unstack(ctx, NULL, 0, out), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, "unstack: x is NULL");
  cr_assert_eq(ad_unstack(ctx, a, 0, NULL), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, "unstack: out is NULL");
  cr_assert_eq(ad_unstack(ctx, a, 2, out), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "unstack: axis 2 out of range for [2,3]");
  cr_assert_eq(ad_unstack(ctx, a, -3, out), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "unstack: axis -3 out of range for [2,3]");
  ad_tensor *scalar = ad_scalar(ctx, AD_F64, 1);
  cr_assert_eq(ad_unstack(ctx, scalar, 0, out), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "unstack: axis 0 out of range for []");
  cr_assert_eq(ad_unstack(ctx, o, 0, out), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "unstack: x belongs to another context");
  ad_ctx_free(other);
  ad_tensor_free(a);
  ad_tensor_free(b);
  ad_tensor_free(f32);
  ad_tensor_free(big);
}
