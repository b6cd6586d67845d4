/* test_gradcheck.c: every registered op passes first- and second-order
 * gradcheck in float32 and float64 (one parameterized test per op, dtype and
 * order); gradcheck of a composed function (a tiny MLP); gradcheck and
 * gradgradcheck catch custom ops with a wrong first or second derivative;
 * the error paths of the checkers. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "test_alloc.h"

#include <math.h>
#include <string.h>

#define SEED 20240917u

TEST_CTX_SUITE(gradcheck);

static const char *order_name(bool second) { return second ? "second" : "first"; }

/* ------------------------------------------------- every registered op */

typedef struct op_param {
  int id;
  int dtype;
  bool second;
  char name[48];
} op_param;

static void free_params(struct criterion_test_params *crp) { cr_free(crp->params); }

ParameterizedTestParameters(gradcheck, every_op) {
  /* runs in the runner before any test: the fixture's ctx does not exist */
  ad_ctx *c = ad_ctx_new();
  int nops = ad_op_count(c);
  op_param *p = cr_malloc(sizeof *p * (size_t)(nops > 0 ? nops : 1) * 4);
  size_t n = 0;
  for (int id = 0; p && id < nops; id++) {
    const ad_op_def *d = ad_op_get(c, id);
    if (!d || !d->backward) continue;
    for (int k = 0; k < 4; k++) {
      op_param *q = &p[n++];
      memset(q, 0, sizeof *q);
      q->id = id;
      q->dtype = k & 1 ? AD_F64 : AD_F32;
      q->second = k >= 2;
      snprintf(q->name, sizeof q->name, "%s", d->name);
    }
  }
  ad_ctx_free(c);
  return cr_make_param_array(op_param, p, n, free_params);
}

ParameterizedTest(op_param *p, gradcheck, every_op) {
  const ad_op_def *d = ad_op_get(ctx, p->id);
  cr_assert(d && !strcmp(d->name, p->name), "op %d is not %s in a fresh context", p->id, p->name);
  const char *dt = ad_dtype_name((ad_dtype)p->dtype);
  ad_check_report r;
  ad_status st = ad_op_check(ctx, p->id, (ad_dtype)p->dtype, p->second, SEED, &r);
  cr_assert_eq(st, AD_OK, "%s %s %s-order check did not run: %s (%s)", p->name, dt,
               order_name(p->second), ad_status_str(st), ad_last_error(ctx));
  cr_assert(r.passed,
            "%s %s %s-order gradcheck failed: worst at input %d element %lld: analytic %.10g, "
            "numeric %.10g (abs err %.3g, rel err %.3g; %lld elements checked)",
            p->name, dt, order_name(p->second), r.input, (long long)r.index, r.analytic, r.numeric,
            r.abs_err, r.rel_err, (long long)r.checked);
  cr_assert_gt(r.checked, 0, "%s %s %s-order: nothing was checked", p->name, dt,
               order_name(p->second));
}

/* The parameterized table is not empty, and the one op without a gradient is
 * refused by ad_op_check with a message naming it. */
Test(gradcheck, registry_has_ops_and_refuses_nondifferentiable) {
  int diff = 0, nondiff = -1;
  for (int id = 0; id < ad_op_count(ctx); id++) {
    const ad_op_def *d = ad_op_get(ctx, id);
    if (d->backward)
      diff++;
    else
      nondiff = id;
  }
  cr_assert_gt(diff, 30, "only %d differentiable ops registered", diff);
  cr_assert_geq(nondiff, 0, "expected a non-differentiable op (compare)");
  ad_check_report r;
  ad_status st = ad_op_check(ctx, nondiff, AD_F64, false, SEED, &r);
  cr_assert_eq(st, AD_ERR_ARG, "ad_op_check on %s returned %s", ad_op_get(ctx, nondiff)->name,
               ad_status_str(st));
  cr_assert(strstr(ad_last_error(ctx), ad_op_get(ctx, nondiff)->name), "message: %s",
            ad_last_error(ctx));
}

/* ------------------------------------------------ a composed function */

/* in: x [4,3] (data), W1 [3,5], b1 [5], W2 [5,3], b2 [3], labels [4] (i32) */
static ad_tensor *mlp(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n, (void)ud;
  ad_tensor *h = ad_tanh(c, ad_add(c, ad_matmul(c, in[0], in[1], false, false), in[2]));
  ad_tensor *z = ad_add(c, ad_matmul(c, h, in[3], false, false), in[4]);
  return ad_softmax_cross_entropy(c, z, in[5]);
}

static void mlp_check(ad_dtype dt, bool second) {
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  int64_t sx[2] = {4, 3}, s1[2] = {3, 5}, sb1[1] = {5}, s2[2] = {5, 3}, sb2[1] = {3}, sl[1] = {4};
  ad_tensor *in[6] = {
      ad_randn(ctx, &rng, dt, 2, sx, 0, 1),    ad_randn(ctx, &rng, dt, 2, s1, 0, 0.5),
      ad_randn(ctx, &rng, dt, 1, sb1, 0, 0.1), ad_randn(ctx, &rng, dt, 2, s2, 0, 0.5),
      ad_randn(ctx, &rng, dt, 1, sb2, 0, 0.1), ad_zeros(ctx, AD_I32, 1, sl),
  };
  int32_t labels[4] = {2, 0, 1, 2};
  for (int i = 0; i < 6; i++) cr_assert(in[i], "%s", ad_last_error(ctx));
  memcpy(in[5]->data, labels, sizeof labels);
  for (int i = 1; i <= 4; i++) ad_tensor_set_requires_grad(in[i], true);
  ad_check_report r;
  ad_status st = second ? ad_gradgradcheck(ctx, mlp, NULL, 6, in, NULL, &r)
                        : ad_gradcheck(ctx, mlp, NULL, 6, in, NULL, &r);
  cr_assert_eq(st, AD_OK, "%s: %s", ad_dtype_name(dt), ad_last_error(ctx));
  cr_assert(
      r.passed, "MLP %s %s-order: worst at input %d element %lld: analytic %.10g numeric %.10g",
      ad_dtype_name(dt), order_name(second), r.input, (long long)r.index, r.analytic, r.numeric);
  /* W1 15 + b1 5 + W2 15 + b2 3: x and the labels are not checked */
  cr_assert_eq(r.checked, 38, "checked %lld elements", (long long)r.checked);
  for (int i = 0; i < 6; i++) ad_tensor_free(in[i]);
}

Test(gradcheck, mlp_first_order_f64) { mlp_check(AD_F64, false); }
Test(gradcheck, mlp_first_order_f32) { mlp_check(AD_F32, false); }
Test(gradcheck, mlp_second_order_f64) { mlp_check(AD_F64, true); }

/* ------------------------------------------- custom ops with bad derivatives */

static ad_status same_shape(const ad_call *c) {
  ad_tensor *const *in = c->in;
  for (int i = 0; i < c->n; i++) {
    if (in[i]->dtype != AD_F32 && in[i]->dtype != AD_F64)
      return ad_set_error(c->ctx, AD_ERR_DTYPE, "custom op: float inputs only");
    if (in[i]->dtype != in[0]->dtype || in[i]->size != in[0]->size)
      return ad_set_error(c->ctx, AD_ERR_SHAPE, "custom op: inputs differ");
  }
  c->out->dtype = in[0]->dtype;
  c->out->ndim = in[0]->ndim;
  memcpy(c->out->shape, in[0]->shape, sizeof(int64_t) * (size_t)in[0]->ndim);
  return AD_OK;
}

/* y = a * b, elementwise, same shapes */
static void fwd_mul2(const ad_call *c) {
  for (int64_t i = 0; i < c->out->size; i++)
    ad_tensor_set(c->out, i, ad_tensor_get(c->in[0], i) * ad_tensor_get(c->in[1], i));
}

/* correct: da += dy * b; db += dy * a */
static ad_status bwd_mul2_good(const ad_call *c) {
  ad_status st = ad_call_set_grad(c, 0, ad_mul(c->ctx, c->gout, c->in[1]));
  return st != AD_OK ? st : ad_call_set_grad(c, 1, ad_mul(c->ctx, c->gout, c->in[0]));
}

/* WRONG on purpose: db is doubled wherever a > 1.5 */
static ad_status bwd_mul2_bad(const ad_call *c) {
  ad_ctx *cx = c->ctx;
  ad_tensor *dy = c->gout;
  ad_tensor *twice = ad_add_scalar(cx, ad_gt(cx, c->in[0], ad_scalar(cx, dy->dtype, 1.5)), 1.0);
  ad_status st = ad_call_set_grad(c, 0, ad_mul(cx, dy, c->in[1]));
  return st != AD_OK ? st : ad_call_set_grad(c, 1, ad_mul(cx, ad_mul(cx, dy, c->in[0]), twice));
}

/* a with exactly one element above 1.5, at flat index 2 */
static const double A_VALS[6] = {0.5, -1.0, 2.0, 0.75, -0.25, 1.25};
static const double B_VALS[6] = {1.5, 0.5, -0.75, 1.0, 2.0, -1.25};

static int sample_mul2(const ad_sample_call *s) {
  if (s->variant > 0) return 0;
  int64_t shape[2] = {2, 3};
  ad_tensor **in = s->in;
  in[0] = ad_zeros(s->ctx, s->dtype, 2, shape);
  in[1] = ad_zeros(s->ctx, s->dtype, 2, shape);
  if (!in[0] || !in[1]) return -1;
  for (int i = 0; i < 6; i++) {
    ad_tensor_set(in[0], i, A_VALS[i]);
    ad_tensor_set(in[1], i, B_VALS[i]);
  }
  ad_tensor_set_requires_grad(in[0], true);
  ad_tensor_set_requires_grad(in[1], true);
  return 2;
}

static int register_op(ad_ctx *c, const char *name, int arity, ad_forward_fn fwd,
                       ad_backward_fn bwd, ad_sample_fn sample) {
  ad_op_def def = {.name = name,
                   .arity = arity,
                   .shape = same_shape,
                   .forward = fwd,
                   .backward = bwd,
                   .sample = sample,
                   .math = "custom",
                   .inputs = {"a", "b"},
                   .grads = {"custom", "custom"}};
  if (arity == 1) def.inputs[1] = def.grads[1] = NULL;
  int id = ad_op_register(c, &def);
  cr_assert_geq(id, 0, "ad_op_register(%s): %s", name, ad_last_error(c));
  return id;
}

static ad_tensor *apply_op(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  return ad_op_apply(c, *(const int *)ud, n, in, NULL);
}

static void mul2_inputs(ad_ctx *c, ad_dtype dt, ad_tensor **in) {
  ad_rng rng;
  ad_rng_seed(&rng, SEED);
  ad_attrs at = {0};
  ad_sample_call s = {.ctx = c, .rng = &rng, .dtype = dt, .variant = 0, .in = in, .attrs = &at};
  cr_assert_eq(sample_mul2(&s), 2, "%s", ad_last_error(c));
}

Test(gradcheck, catches_wrong_first_derivative) {
  int good = register_op(ctx, "mul2_good", 2, fwd_mul2, bwd_mul2_good, sample_mul2);
  int bad = register_op(ctx, "mul2_bad", 2, fwd_mul2, bwd_mul2_bad, sample_mul2);
  for (int dt = AD_F32; dt <= AD_F64; dt++) {
    const char *dn = ad_dtype_name((ad_dtype)dt);
    ad_tensor *in[2];
    mul2_inputs(ctx, (ad_dtype)dt, in);
    ad_check_report r;
    /* control: the same forward with the right backward passes */
    cr_assert_eq(ad_gradcheck(ctx, apply_op, &good, 2, in, NULL, &r), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(r.passed, "%s: the correct op failed: input %d element %lld", dn, r.input,
              (long long)r.index);
    cr_assert_eq(ad_gradcheck(ctx, apply_op, &bad, 2, in, NULL, &r), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(!r.passed, "%s: gradcheck passed a backward that doubles db at a > 1.5", dn);
    cr_assert_eq(r.input, 1, "%s: worst element is in input %d, expected b (1)", dn, r.input);
    cr_assert_eq(r.index, 2, "%s: worst element is %lld, expected 2 (a = 2.0)", dn,
                 (long long)r.index);
    /* numeric d<v,a*b>/db_2 = v_2 * a_2; the bad op reports twice that */
    cr_assert_gt(fabs(r.numeric), 1e-3, "%s: numeric %.9g too small to judge", dn, r.numeric);
    cr_assert_lt(fabs(r.analytic - 2 * r.numeric), 1e-4 * fabs(r.numeric) + 1e-6,
                 "%s: analytic %.10g is not twice numeric %.10g", dn, r.analytic, r.numeric);
    cr_assert_gt(r.abs_err, 0.5 * fabs(r.numeric), "%s: abs_err %.3g", dn, r.abs_err);
    /* the op-level check reaches the same verdict through the sample */
    cr_assert_eq(ad_op_check(ctx, bad, (ad_dtype)dt, false, SEED, &r), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(!r.passed, "%s: ad_op_check passed mul2_bad", dn);
    cr_assert_eq(r.input, 1);
    cr_assert_eq(r.index, 2);
    cr_assert_eq(ad_op_check(ctx, good, (ad_dtype)dt, false, SEED, &r), AD_OK);
    cr_assert(r.passed, "%s: ad_op_check failed mul2_good", dn);
    ad_tensor_free(in[0]);
    ad_tensor_free(in[1]);
  }
}

/* y = x^3 */
static void fwd_cube(const ad_call *c) {
  for (int64_t i = 0; i < c->out->size; i++) {
    double x = ad_tensor_get(c->in[0], i);
    ad_tensor_set(c->out, i, x * x * x);
  }
}

/* dx += dy * 3 x^2, recorded: differentiable again */
static ad_status bwd_cube_good(const ad_call *c) {
  ad_ctx *cx = c->ctx;
  return ad_call_set_grad(c, 0,
                          ad_mul(cx, c->gout, ad_mul_scalar(cx, ad_square(cx, c->in[0]), 3.0)));
}

/* WRONG on purpose for second order: 3 x^2 is computed with recording off,
 * so it is a constant to the tape and d(dx)/dx misses 6 x dy. The first
 * derivative is still right. */
static ad_status bwd_cube_frozen(const ad_call *c) {
  ad_ctx *cx = c->ctx;
  bool was = ad_set_grad_enabled(cx, false);
  ad_tensor *d = ad_mul_scalar(cx, ad_square(cx, c->in[0]), 3.0);
  ad_set_grad_enabled(cx, was);
  return ad_call_set_grad(c, 0, ad_mul(cx, c->gout, d));
}

Test(gradcheck, gradgradcheck_catches_wrong_second_derivative) {
  int good = register_op(ctx, "cube_good", 1, fwd_cube, bwd_cube_good, NULL);
  int bad = register_op(ctx, "cube_frozen", 1, fwd_cube, bwd_cube_frozen, NULL);
  int64_t s[1] = {5};
  double xs[5] = {-1.5, -0.5, 0.75, 1.25, 2.0};
  ad_tensor *x = ad_from_data(ctx, AD_F64, 1, s, xs);
  ad_tensor_set_requires_grad(x, true);
  ad_check_report r;
  /* first order: both are right */
  cr_assert_eq(ad_gradcheck(ctx, apply_op, &bad, 1, &x, NULL, &r), AD_OK);
  cr_assert(r.passed, "first derivative of cube_frozen should be right: element %lld",
            (long long)r.index);
  /* second order: only the recorded backward is right */
  cr_assert_eq(ad_gradgradcheck(ctx, apply_op, &good, 1, &x, NULL, &r), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(r.passed, "cube_good second order: element %lld analytic %.10g numeric %.10g",
            (long long)r.index, r.analytic, r.numeric);
  cr_assert_eq(r.checked, 5);
  cr_assert_eq(ad_gradgradcheck(ctx, apply_op, &bad, 1, &x, NULL, &r), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(!r.passed, "gradgradcheck passed a backward that is constant to the tape");
  cr_assert_eq(r.input, 0);
  cr_assert(r.index >= 0 && r.index < 5, "index %lld", (long long)r.index);
  cr_assert_eq(r.analytic, 0.0, "the frozen backward has no second derivative, got %.10g",
               r.analytic);
  cr_assert_gt(fabs(r.numeric), 1e-3, "numeric second derivative %.10g", r.numeric);
  /* the per-op check (generic [3,4] sample) agrees, in both dtypes */
  for (int dt = AD_F32; dt <= AD_F64; dt++) {
    cr_assert_eq(ad_op_check(ctx, bad, (ad_dtype)dt, true, SEED, &r), AD_OK);
    cr_assert(!r.passed, "ad_op_check %s passed cube_frozen", ad_dtype_name((ad_dtype)dt));
    cr_assert_eq(ad_op_check(ctx, good, (ad_dtype)dt, true, SEED, &r), AD_OK);
    cr_assert(r.passed, "ad_op_check %s failed cube_good: analytic %.10g numeric %.10g",
              ad_dtype_name((ad_dtype)dt), r.analytic, r.numeric);
  }
  ad_tensor_free(x);
}

/* ---------------------------------------------------------- error paths */

typedef ad_status (*checker)(ad_ctx *, ad_check_fn, void *, int, ad_tensor *const *,
                             const ad_check_opts *, ad_check_report *);

static ad_tensor *fn_tanh(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n, (void)ud;
  return ad_tanh(c, in[0]);
}

static ad_tensor *fn_null_silent(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c, (void)n, (void)in, (void)ud;
  return NULL;
}

static ad_tensor *fn_bad_matmul(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n, (void)ud;
  return ad_matmul(c, in[0], in[0], false, false); /* [2,3] x [2,3] */
}

/* tanh the first call, its sum after: an output whose shape changes */
static ad_tensor *fn_shape_changes(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  int *calls = ud;
  return (*calls)++ ? ad_sum(c, ad_tanh(c, in[0])) : ad_tanh(c, in[0]);
}

static ad_tensor *fn_int_output(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c, (void)n, (void)in;
  return ud; /* an i32 tensor */
}

/* Runs one failing call and checks its status, message and report. */
static void expect_error(ad_ctx *c, const char *what, ad_status got, ad_status want,
                         const char *needle, const ad_check_report *r) {
  cr_assert_eq(got, want, "%s: status %s, expected %s (%s)", what, ad_status_str(got),
               ad_status_str(want), ad_last_error(c));
  cr_assert_eq(ad_last_status(c), want, "%s: last status %s", what,
               ad_status_str(ad_last_status(c)));
  cr_assert(strstr(ad_last_error(c), needle), "%s: message '%s' lacks '%s'", what, ad_last_error(c),
            needle);
  if (r) cr_assert(!r->passed, "%s: the report says passed", what);
  ad_clear_error(c);
}

static void error_cases(checker check, const char *name) {
  int64_t s[2] = {2, 3};
  ad_tensor *x = ad_ones(ctx, AD_F64, 2, s);
  ad_tensor *lab = ad_zeros(ctx, AD_I32, 2, s);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *nul[1] = {NULL};
  ad_check_report r;
  char what[96];
#define WHAT(s) (snprintf(what, sizeof what, "%s: %s", name, s), what)
  r.passed = true;
  expect_error(ctx, WHAT("NULL fn"), check(ctx, NULL, NULL, 1, &x, NULL, &r), AD_ERR_NULL,
               "gradcheck", &r);
  r.passed = true;
  expect_error(ctx, WHAT("n = 0"), check(ctx, fn_tanh, NULL, 0, &x, NULL, &r), AD_ERR_ARG,
               "0 inputs", &r);
  r.passed = true;
  expect_error(ctx, WHAT("n = -1"), check(ctx, fn_tanh, NULL, -1, &x, NULL, &r), AD_ERR_ARG,
               "-1 inputs", &r);
  r.passed = true;
  expect_error(ctx, WHAT("NULL input array"), check(ctx, fn_tanh, NULL, 1, NULL, NULL, &r),
               AD_ERR_NULL, "gradcheck", &r);
  r.passed = true;
  expect_error(ctx, WHAT("NULL input"), check(ctx, fn_tanh, NULL, 1, nul, NULL, &r), AD_ERR_NULL,
               "input 0 is NULL", &r);
  expect_error(ctx, WHAT("NULL report"), check(ctx, fn_tanh, NULL, 1, &x, NULL, NULL), AD_ERR_NULL,
               "report", NULL);
  r.passed = true;
  expect_error(ctx, WHAT("fn returns NULL silently"),
               check(ctx, fn_null_silent, NULL, 1, &x, NULL, &r), AD_ERR_STATE, "returned NULL",
               &r);
  r.passed = true;
  expect_error(ctx, WHAT("fn fails"), check(ctx, fn_bad_matmul, NULL, 1, &x, NULL, &r),
               AD_ERR_SHAPE, "matmul", &r);
  r.passed = true;
  expect_error(ctx, WHAT("fn returns i32"), check(ctx, fn_int_output, lab, 1, &x, NULL, &r),
               AD_ERR_DTYPE, "i32", &r);
  r.passed = true;
  int calls = 0;
  expect_error(ctx, WHAT("fn changes its output's shape"),
               check(ctx, fn_shape_changes, &calls, 1, &x, NULL, &r), AD_ERR_SHAPE,
               "gradcheck: fn returned shape [] after [2,3]", &r);
  /* a setting that is not finite and >= 0 is refused, not taken for the
   * default (negative, NaN) nor allowed to pass anything (infinite) */
  const ad_check_opts bad_opts[] = {{.eps = -1e-6},      {.eps = NAN},  {.eps = INFINITY},
                                    {.atol = -1},        {.atol = NAN}, {.atol = INFINITY},
                                    {.rtol = -INFINITY}, {.rtol = NAN}};
  for (size_t k = 0; k < sizeof bad_opts / sizeof *bad_opts; k++) {
    r.passed = true;
    expect_error(ctx, WHAT("bad opts"), check(ctx, fn_tanh, NULL, 1, &x, &bad_opts[k], &r),
                 AD_ERR_ARG, "must be finite and >= 0", &r);
  }
#undef WHAT
  cr_assert_eq(check(NULL, fn_tanh, NULL, 1, &x, NULL, &r), AD_ERR_NULL, "%s: NULL ctx", name);
  /* after the errors, the same context still checks correctly */
  cr_assert_eq(check(ctx, fn_tanh, NULL, 1, &x, NULL, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed, "%s: tanh failed after the error cases", name);
  cr_assert_eq(r.checked, 6);
  ad_tensor_free(x);
  ad_tensor_free(lab);
}

Test(gradcheck, gradcheck_error_paths) { error_cases(ad_gradcheck, "ad_gradcheck"); }
Test(gradcheck, gradgradcheck_error_paths) { error_cases(ad_gradgradcheck, "ad_gradgradcheck"); }

Test(gradcheck, op_check_error_paths) {
  ad_check_report r;
  expect_error(ctx, "bad id", ad_op_check(ctx, ad_op_count(ctx), AD_F64, false, SEED, &r),
               AD_ERR_ARG, "no op with id", NULL);
  expect_error(ctx, "negative id", ad_op_check(ctx, -1, AD_F64, false, SEED, &r), AD_ERR_ARG,
               "no op with id", NULL);
  /* a dtype without gradients is named as the cause, not "no input
   * requires grad" from inside the check */
  int tanh_id = ad_op_find(ctx, "tanh");
  expect_error(ctx, "i32 dtype", ad_op_check(ctx, tanh_id, AD_I32, false, SEED, &r), AD_ERR_DTYPE,
               "op_check: tanh: dtype i32 has no gradient", NULL);
  expect_error(ctx, "dtype 99", ad_op_check(ctx, tanh_id, (ad_dtype)99, true, SEED, &r),
               AD_ERR_DTYPE, "has no gradient", NULL);
  expect_error(ctx, "NULL report",
               ad_op_check(ctx, ad_op_find(ctx, "tanh"), AD_F64, false, SEED, NULL), AD_ERR_NULL,
               "report", NULL);
  cr_assert_eq(ad_op_check(NULL, 0, AD_F64, false, SEED, &r), AD_ERR_NULL);
}

/* One tensor given twice is one variable, as in PyTorch's gradcheck: the
 * analytic side takes the gradient of both uses, so the numeric side must
 * perturb both at once. It perturbed one copy per slot and reported a
 * false failure for f(x, x) = x * x. */
static ad_tensor *product_of_two(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n, (void)ud;
  return ad_mul(c, in[0], in[1]);
}

Test(gradcheck, a_tensor_given_twice_is_one_variable) {
  int64_t s[1] = {4};
  ad_tensor *x = ad_from_data(ctx, AD_F64, 1, s, (const double[]){0.5, -1.25, 2, 3});
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *in[2] = {x, x};
  ad_check_report rep;
  cr_assert_eq(ad_gradcheck(ctx, product_of_two, NULL, 2, in, NULL, &rep), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(rep.passed, "input %d element %lld: analytic %g numeric %g", rep.input,
            (long long)rep.index, rep.analytic, rep.numeric);
  cr_assert_eq(ad_gradgradcheck(ctx, product_of_two, NULL, 2, in, NULL, &rep), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(rep.passed, "second order: input %d", rep.input);
  ad_tensor_free(x);
}

/* A sample that returns -1 without recording an error: op_check names it,
 * instead of returning an error recorded before the check (with its
 * unrelated message) or AD_ERR_ARG with an empty one. */
static void copy_forward(const ad_call *c) {
  for (int64_t i = 0; i < c->out->size; i++) ad_tensor_set(c->out, i, ad_tensor_get(c->in[0], i));
}
static ad_status copy_backward(const ad_call *c) { return ad_call_set_grad(c, 0, c->gout); }
static int failing_sample(const ad_sample_call *s) {
  (void)s;
  return -1;
}

Test(gradcheck, op_check_names_a_sample_that_failed_silently) {
  const ad_op_def d = {.name = "copy_bad_sample",
                       .arity = 1,
                       .flags = AD_OP_ELEMENTWISE,
                       .forward = copy_forward,
                       .backward = copy_backward,
                       .sample = failing_sample};
  int id = ad_op_register(ctx, &d);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  ad_set_error(ctx, AD_ERR_IO, "an earlier, unrelated error");
  ad_check_report r;
  expect_error(ctx, "sample -1", ad_op_check(ctx, id, AD_F64, false, SEED, &r), AD_ERR_ARG,
               "copy_bad_sample's sample failed (variant 0)", NULL);
  cr_assert(!r.passed);
}

/* A node keeps its op's id in 16 bits: the 65537th op would be recorded as
 * op (id mod 65536), a built-in, whose backward would then run on it. */
Test(gradcheck, op_register_refuses_ids_a_node_cannot_hold) {
  char name[32];
  int id = 0;
  for (int i = 0; ad_op_count(ctx) <= 65535; i++) {
    snprintf(name, sizeof name, "copy%d", i);
    const ad_op_def d = {.name = name,
                         .arity = 1,
                         .flags = AD_OP_ELEMENTWISE,
                         .forward = copy_forward,
                         .backward = copy_backward};
    id = ad_op_register(ctx, &d);
    cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  }
  cr_assert_eq(id, 65535);
  const ad_op_def d = {.name = "one_too_many",
                       .arity = 1,
                       .flags = AD_OP_ELEMENTWISE,
                       .forward = copy_forward,
                       .backward = copy_backward};
  cr_assert_eq(ad_op_register(ctx, &d), -1);
  cr_assert_eq(ad_last_status(ctx), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(ctx), "at most 65536 ops"), "%s", ad_last_error(ctx));
  cr_assert_eq(ad_op_find(ctx, "one_too_many"), -1);
  ad_clear_error(ctx);
}

/* A sample that makes float64 inputs whatever dtype the check asks for:
 * op_check reported a PASS "in f32" for a check that ran in float64 (an
 * error of the backward only in float32 went unseen). */
static int f64_only_sample(const ad_sample_call *s) {
  int64_t n = 4;
  if (s->variant > 0) return 0;
  s->in[0] = ad_full(s->ctx, AD_F64, 1, &n, 0.5);
  return s->in[0] && ad_tensor_set_requires_grad(s->in[0], true) == AD_OK ? 1 : -1;
}

Test(gradcheck, op_check_refuses_a_sample_of_another_dtype) {
  const ad_op_def d = {.name = "copy_f64_sample",
                       .arity = 1,
                       .flags = AD_OP_ELEMENTWISE,
                       .forward = copy_forward,
                       .backward = copy_backward,
                       .sample = f64_only_sample};
  int id = ad_op_register(ctx, &d);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  ad_check_report r;
  cr_assert_eq(ad_op_check(ctx, id, AD_F64, false, SEED, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed);
  expect_error(ctx, "f64 sample, f32 check", ad_op_check(ctx, id, AD_F32, false, SEED, &r),
               AD_ERR_DTYPE, "made input 0 f64 for a check in f32", NULL);
  cr_assert(!r.passed);
}

/* A sample's inputs must be persistent tensors of the context. One that
 * gave an op's result failed with "input 0 is from a tape that was reset"
 * (the check resets the tape), naming neither the sample nor the cause;
 * one that gave a tensor it had freed returned AD_ERR_ARG while the
 * message, replaced by the clean-up's, said "tensor_free: the tensor was
 * already freed"; a NULL slot within the count was "gradcheck: input 1 is
 * NULL". Each now names the sample, the variant and the slot. */
static int bad_input_mode;
static ad_ctx *other_ctx;
static int bad_input_sample(const ad_sample_call *s) {
  int64_t n = 4;
  if (s->variant > 0) return 0;
  ad_tensor *x = ad_rand(s->ctx, s->rng, s->dtype, 1, &n, -1, 1);
  if (!x || ad_tensor_set_requires_grad(x, true) != AD_OK) return -1;
  switch (bad_input_mode) {
  case 0: /* an op's result */
    s->in[0] = ad_mul_scalar(s->ctx, x, 2.0);
    ad_tensor_free(x);
    return 1;
  case 1: /* freed */
    ad_tensor_free(x);
    s->in[0] = x;
    return 1;
  case 2: /* another context's */
    ad_tensor_free(x);
    s->in[0] = ad_full(other_ctx, s->dtype, 1, &n, 1.0);
    return 1;
  default: /* one more than it made */
    s->in[0] = x;
    return 2;
  }
}

Test(gradcheck, op_check_names_a_sample_input_that_is_not_persistent) {
  const ad_op_def d = {.name = "copy_bad_inputs",
                       .arity = -1,
                       .flags = AD_OP_ELEMENTWISE,
                       .forward = copy_forward,
                       .backward = copy_backward,
                       .sample = bad_input_sample};
  int id = ad_op_register(ctx, &d);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  other_ctx = ad_ctx_new();
  cr_assert_not_null(other_ctx);
  static const char *const want[4] = {
      "op_check: copy_bad_inputs's sample (variant 0) gave input 0 of 1: a temporary (an op's "
      "result); the inputs must be persistent tensors of this context",
      "op_check: copy_bad_inputs's sample (variant 0) gave input 0 of 1: a freed tensor;",
      "op_check: copy_bad_inputs's sample (variant 0) gave input 0 of 1: a tensor of another "
      "context;",
      "op_check: copy_bad_inputs's sample (variant 0) gave input 1 of 2: NULL;"};
  for (bad_input_mode = 0; bad_input_mode < 4; bad_input_mode++) {
    ad_check_report r;
    expect_error(ctx, want[bad_input_mode], ad_op_check(ctx, id, AD_F64, false, SEED, &r),
                 bad_input_mode == 3 ? AD_ERR_NULL : AD_ERR_ARG, want[bad_input_mode], &r);
  }
  ad_ctx_free(other_ctx);
}

/* A backward wrong by 0.5% in float32 only (its float64 path right): the
 * f32 check holds an op to atol 1e-5, rtol 1e-3 (the numeric side is f64),
 * so it fails; at ad_gradcheck's general f32 tolerance (1e-3, 1e-2) it
 * passed. The copy itself passes in both dtypes. */
static ad_status copy_backward_f32_off(const ad_call *c) {
  ad_tensor *g = c->gout;
  if (g->dtype == AD_F32) g = ad_mul_scalar(c->ctx, g, 1.005);
  return ad_call_set_grad(c, 0, g);
}

static int copy_sample(const ad_sample_call *s) {
  int64_t n = 5;
  if (s->variant > 0) return 0;
  s->in[0] = ad_rand(s->ctx, s->rng, s->dtype, 1, &n, -2, 2);
  return s->in[0] && ad_tensor_set_requires_grad(s->in[0], true) == AD_OK ? 1 : -1;
}

Test(gradcheck, op_check_in_f32_catches_a_backward_off_by_half_a_percent) {
  const ad_op_def good = {.name = "copy_good",
                          .arity = 1,
                          .flags = AD_OP_ELEMENTWISE,
                          .forward = copy_forward,
                          .backward = copy_backward,
                          .sample = copy_sample};
  const ad_op_def off = {.name = "copy_f32_off",
                         .arity = 1,
                         .flags = AD_OP_ELEMENTWISE,
                         .forward = copy_forward,
                         .backward = copy_backward_f32_off,
                         .sample = copy_sample};
  int ig = ad_op_register(ctx, &good), io = ad_op_register(ctx, &off);
  cr_assert(ig >= 0 && io >= 0, "%s", ad_last_error(ctx));
  ad_check_report r;
  for (int dt = 0; dt < 2; dt++) {
    ad_dtype d = dt ? AD_F32 : AD_F64;
    cr_assert_eq(ad_op_check(ctx, ig, d, false, SEED, &r), AD_OK, "%s", ad_last_error(ctx));
    cr_expect(r.passed, "copy_good in %s: abs %g rel %g", ad_dtype_name(d), r.abs_err, r.rel_err);
    cr_assert_eq(ad_op_check(ctx, io, d, false, SEED, &r), AD_OK, "%s", ad_last_error(ctx));
    bool want = d == AD_F64;
    cr_expect_eq(r.passed, want, "copy_f32_off in %s: abs %g rel %g", ad_dtype_name(d), r.abs_err,
                 r.rel_err);
  }
}

/* ad_op_check's report gives the worst element's input and flat index,
 * but not the sample's variant it belongs to (variants differ in shapes
 * and inputs), and a failed check recorded no message: the caller learnt
 * that "input 0, element 2" was wrong, not in which case. A failed check
 * now records, with AD_OK returned, a message naming the dtype, the order,
 * how many variants failed and the worst one's variant, input and shape;
 * a passing check records nothing. The op here is right on variant 0 ([5])
 * and off by half on variant 1 ([2,3]). */
static ad_status copy_backward_wrong_on_2d(const ad_call *c) {
  ad_tensor *g = c->gout;
  if (g->ndim == 2) g = ad_mul_scalar(c->ctx, g, 1.5);
  return ad_call_set_grad(c, 0, g);
}
static int copy_sample_two(const ad_sample_call *s) {
  static const int64_t shape[2][2] = {{5}, {2, 3}};
  if (s->variant > 1) return 0;
  s->in[0] = ad_rand(s->ctx, s->rng, s->dtype, s->variant + 1, shape[s->variant], -2, 2);
  return s->in[0] && ad_tensor_set_requires_grad(s->in[0], true) == AD_OK ? 1 : -1;
}

Test(gradcheck, op_check_names_the_variant_that_failed) {
  const ad_op_def d = {.name = "copy_wrong_on_2d",
                       .arity = 1,
                       .flags = AD_OP_ELEMENTWISE,
                       .forward = copy_forward,
                       .backward = copy_backward_wrong_on_2d,
                       .sample = copy_sample_two};
  int id = ad_op_register(ctx, &d);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  ad_check_report r;
  for (int dt = 0; dt < 2; dt++) {
    ad_dtype t = dt ? AD_F32 : AD_F64;
    cr_assert_eq(ad_op_check(ctx, id, t, false, SEED, &r), AD_OK, "%s", ad_last_error(ctx));
    cr_assert(!r.passed);
    cr_assert_eq(r.input, 0);
    char want[200];
    snprintf(want, sizeof want,
             "op_check: copy_wrong_on_2d failed the first-order check in %s in 1 of 2 variants; "
             "the worst: variant 1, input 0 [2,3], element %lld: analytic %.9g, numeric %.9g",
             ad_dtype_name(t), (long long)r.index, r.analytic, r.numeric);
    expect_error(ctx, ad_dtype_name(t), ad_last_status(ctx), AD_ERR_ARG, want, &r);
  }
  /* second order: the rule dy * 1.5 has no second derivative either way,
   * so it passes, and a passing check records nothing */
  cr_assert_eq(ad_op_check(ctx, id, AD_F64, true, SEED, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed);
  cr_assert_eq(ad_last_status(ctx), AD_OK, "%s", ad_last_error(ctx));
  /* a second-order failure names its order (cube_frozen, one variant) */
  int frozen = register_op(ctx, "cube_frozen2", 1, fwd_cube, bwd_cube_frozen, NULL);
  cr_assert_eq(ad_op_check(ctx, frozen, AD_F64, true, SEED, &r), AD_OK, "%s", ad_last_error(ctx));
  expect_error(ctx, "second order", ad_last_status(ctx), AD_ERR_ARG,
               "op_check: cube_frozen2 failed the second-order check in f64 in 1 of 1 variant; "
               "the worst: variant 0, input 0 [3,4], element ",
               &r);
}

/* The checks differentiate through ad_grad, which never runs an op's
 * grad_into (only ad_backward does): a fast path that returned true
 * without writing, returned false after adding (the backward then added
 * again), or was off in the last bit passed ad_op_check, and the op gave
 * wrong gradients in training. Each now fails, naming the case; a right
 * one passes, with and without AD_OP_GRAD_INTO_TEMPS. */
static int into_mode;
static bool copy_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  (void)k;
  if (into_mode == 0) return true; /* writes nothing */
  for (int64_t i = 0; i < grad->size; i++) {
    double d = ad_tensor_get(c->gout, i);
    if (into_mode == 2) d = nextafter(d, INFINITY); /* off in the last bit (f64) */
    ad_tensor_set(grad, i, overwrite ? d : ad_tensor_get(grad, i) + d);
  }
  return into_mode != 1; /* 1: declines after adding */
}

Test(gradcheck, op_check_compares_grad_into_with_the_backward) {
  static const char *const want[3] = {"storing a new gradient", "adding into an existing gradient",
                                      "storing a new gradient"};
  for (int temps = 0; temps < 2; temps++) {
    char name[32];
    snprintf(name, sizeof name, "copy_into%s", temps ? "_temps" : "");
    const ad_op_def d = {.name = name,
                         .arity = 1,
                         .flags = AD_OP_ELEMENTWISE | (temps ? AD_OP_GRAD_INTO_TEMPS : 0),
                         .forward = copy_forward,
                         .backward = copy_backward,
                         .grad_into = copy_grad_into,
                         .sample = copy_sample};
    int id = ad_op_register(ctx, &d);
    cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
    ad_check_report r;
    for (into_mode = 0; into_mode < 3; into_mode++) {
      char label[64], needle[160];
      snprintf(label, sizeof label, "%s, mode %d", name, into_mode);
      snprintf(needle, sizeof needle, "op_check: %s (variant 0): its grad_into, %s, gave input 0",
               name, want[into_mode]);
      expect_error(ctx, label, ad_op_check(ctx, id, AD_F64, false, SEED, &r), AD_ERR_ARG, needle,
                   &r);
    }
    into_mode = 3;
    for (int dt = 0; dt < 2; dt++) {
      ad_dtype t = dt ? AD_F32 : AD_F64;
      cr_assert_eq(ad_op_check(ctx, id, t, false, SEED, &r), AD_OK, "%s", ad_last_error(ctx));
      cr_assert(r.passed, "%s in %s", name, ad_dtype_name(t));
    }
  }
}
