/* gradcheck.c: analytic gradients against central differences in float64,
 * first and second order, for any function of tensors and for every op. */
#include "ad_internal.h"

#include <math.h>

typedef struct check_state {
  ad_ctx *ctx;
  ad_check_fn fn;
  void *ud;
  int n;
  ad_tensor *const *in; /* the caller's inputs */
  ad_tensor *v;         /* cotangent, float64, output's shape */
  ad_check_opts o;
  /* n entries each, in one block of `bytes` (any number of inputs) */
  ad_tensor **x64;                   /* float64 copies for the numeric side */
  ad_tensor **r;                     /* second order: directions for each input */
  double **analytic;                 /* per checked input, its analytic gradient */
  ad_tensor **req, **gg, **g1, **g2; /* scratch: inputs to ad_grad, its results */
  int *idx;                          /* scratch: input index of req[k] */
  size_t bytes;
} check_state;

/* Pointer arrays per input in check_state's block, then the int array. */
#define STATE_PTRS 7

static void fill_defaults(ad_check_opts *o, const ad_check_opts *user, ad_dtype dt) {
  o->eps = 1e-6;
  o->atol = dt == AD_F32 ? 1e-3 : 1e-5;
  o->rtol = dt == AD_F32 ? 1e-2 : 1e-4;
  o->seed = 12345;
  if (user) {
    if (user->eps > 0) o->eps = user->eps;
    if (user->atol > 0) o->atol = user->atol;
    if (user->rtol > 0) o->rtol = user->rtol;
    if (user->seed) o->seed = user->seed;
  }
}

/* The first slot before i that holds input i's tensor again, or -1. */
static int same_as(ad_tensor *const *in, int i) {
  for (int j = 0; j < i; j++)
    if (in[j] == in[i]) return j;
  return -1;
}

static void state_free(check_state *s) {
  for (int i = 0; s->x64 && i < s->n; i++) {
    if (same_as(s->in, i) < 0) ad_tensor_free(s->x64[i]); /* else shared, freed there */
    ad_tensor_free(s->r[i]);
    if (s->analytic[i]) ad_free(s->ctx, s->analytic[i], (size_t)s->in[i]->size * sizeof(double));
  }
  if (s->x64) ad_free(s->ctx, s->x64, s->bytes);
  ad_tensor_free(s->v);
}

/* The per-input arrays of s for n inputs, zeroed (AD_ERR_OOM). */
static ad_status state_arrays(check_state *s, int n) {
  size_t per = STATE_PTRS * sizeof(void *) + sizeof(int);
  if ((size_t)n > SIZE_MAX / per)
    return ad_set_error(s->ctx, AD_ERR_OOM, "gradcheck: %d inputs are too many", n);
  s->bytes = (size_t)n * per;
  void **p = ad_malloc(s->ctx, s->bytes);
  if (!p) return AD_ERR_OOM;
  memset(p, 0, s->bytes);
  s->x64 = (ad_tensor **)p;
  s->r = (ad_tensor **)(p + n);
  s->analytic = (double **)(p + 2 * (size_t)n);
  s->req = (ad_tensor **)(p + 3 * (size_t)n);
  s->gg = (ad_tensor **)(p + 4 * (size_t)n);
  s->g1 = (ad_tensor **)(p + 5 * (size_t)n);
  s->g2 = (ad_tensor **)(p + 6 * (size_t)n);
  s->idx = (int *)(p + 7 * (size_t)n);
  return AD_OK;
}

static bool checked(const ad_tensor *t) { return ad_tensor_requires_grad(t); }

/* Copies inputs to float64, checks arguments. */
static ad_status state_init(check_state *s, ad_ctx *ctx, ad_check_fn fn, void *ud, int n,
                            ad_tensor *const *in, const ad_check_opts *opts) {
  memset(s, 0, sizeof *s);
  s->ctx = ctx;
  s->fn = fn;
  s->ud = ud;
  s->in = in;
  if (!fn || (n > 0 && !in)) return ad_set_error(ctx, AD_ERR_NULL, "gradcheck: fn or inputs NULL");
  if (n < 1) return ad_set_error(ctx, AD_ERR_ARG, "gradcheck: %d inputs (at least 1)", n);
  /* a negative or NaN setting is not a zero: it must not pass as the
   * default, nor an infinite one make every gradient pass */
  if (opts && !(isfinite(opts->eps) && opts->eps >= 0 && isfinite(opts->atol) && opts->atol >= 0 &&
                isfinite(opts->rtol) && opts->rtol >= 0))
    return ad_set_error(ctx, AD_ERR_ARG,
                        "gradcheck: eps %g, atol %g, rtol %g: each must be finite and >= 0 (0 "
                        "for the default)",
                        opts->eps, opts->atol, opts->rtol);
  ad_dtype dt = AD_F64;
  int nchecked = 0;
  for (int i = 0; i < n; i++) {
    if (!in[i]) return ad_set_null_error(ctx, "gradcheck: input %d is NULL", i);
    if (checked(in[i]) && in[i]->dtype == AD_F32) dt = AD_F32;
    nchecked += checked(in[i]);
  }
  if (nchecked == 0) /* a check of nothing must not pass silently */
    return ad_set_error(ctx, AD_ERR_ARG,
                        "gradcheck: no input requires grad, so there is nothing to check");
  fill_defaults(&s->o, opts, dt);
  ad_status st = state_arrays(s, n);
  if (st != AD_OK) return st;
  s->n = n;
  for (int i = 0; i < n; i++) {
    /* a tensor given twice (f(x, x)) is one variable, as in PyTorch's
     * gradcheck: one copy, perturbed once for both uses, and checked in
     * its first slot against the gradient of both uses */
    int j = same_as(in, i);
    if (j >= 0) {
      s->x64[i] = s->x64[j];
      continue;
    }
    ad_dtype d = ad_is_float(in[i]->dtype) ? AD_F64 : in[i]->dtype;
    s->x64[i] = ad_zeros(ctx, d, in[i]->ndim, in[i]->shape);
    if (!s->x64[i]) return ctx->status;
    ad_tensor_copy_data(s->x64[i], in[i]);
    if (checked(in[i])) {
      ad_tensor_set_requires_grad(s->x64[i], true);
      s->analytic[i] = ad_malloc(ctx, (size_t)in[i]->size * sizeof(double));
      if (!s->analytic[i]) return ctx->status;
    }
  }
  return AD_OK;
}

/* The output of fn on the given inputs, checked. */
static ad_tensor *run(check_state *s, ad_tensor *const *in) {
  uint32_t nerrors = s->ctx->nerrors;
  ad_tensor *y = s->fn(s->ctx, s->n, in, s->ud);
  if (!y && s->ctx->nerrors == nerrors)
    ad_set_error(s->ctx, AD_ERR_STATE, "gradcheck: fn returned NULL without an error");
  if (y && !ad_is_float(y->dtype)) {
    ad_set_error(s->ctx, AD_ERR_DTYPE, "gradcheck: fn returned a %s tensor",
                 ad_dtype_name(y->dtype));
    return NULL;
  }
  /* v has the first output's shape; an output of another shape would be
   * compared against a cotangent that does not fit it */
  if (y && s->v &&
      (y->ndim != s->v->ndim ||
       memcmp(y->shape, s->v->shape, (size_t)y->ndim * sizeof *y->shape))) {
    char a[64], b[64];
    ad_set_error(s->ctx, AD_ERR_SHAPE,
                 "gradcheck: fn returned shape %s after %s: it must give the same shape every call",
                 ad_shape_str(y, a, sizeof a), ad_shape_str(s->v, b, sizeof b));
    return NULL;
  }
  return y;
}

/* <v, y> in float64. */
static double dot_v(const check_state *s, const ad_tensor *y) {
  double acc = 0;
  for (int64_t i = 0; i < y->size; i++) acc += ad_tensor_get(s->v, i) * ad_tensor_get(y, i);
  return acc;
}

/* The seed v in y's dtype (arena). */
static ad_tensor *seed_for(check_state *s, const ad_tensor *y) {
  ad_tensor *g = ad_tmp_new(s->ctx, y->dtype, y->ndim, y->shape);
  if (g) ad_tensor_copy_data(g, s->v);
  return g;
}

/* Gradients of <v, fn(in)> w.r.t. the checked inputs; create_graph when
 * the caller differentiates them again. Leaves out[i] NULL for unchecked. */
static ad_status first_grads(check_state *s, ad_tensor *const *in, bool create_graph,
                             ad_tensor **out, ad_tensor **yout) {
  ad_tensor *y = run(s, in);
  if (!y) return s->ctx->status;
  if (yout) *yout = y;
  ad_tensor **req = s->req, **g = s->gg;
  int *idx = s->idx, m = 0;
  for (int i = 0; i < s->n; i++) {
    out[i] = NULL;
    if (checked(in[i])) {
      idx[m] = i;
      req[m++] = in[i];
    }
  }
  if (!ad_tensor_requires_grad(y)) { /* y does not depend on any input */
    for (int k = 0; k < m; k++)
      out[idx[k]] = ad_tmp_full(s->ctx, in[idx[k]]->dtype, in[idx[k]]->ndim, in[idx[k]]->shape, 0);
    return AD_OK;
  }
  ad_tensor *seed = seed_for(s, y);
  if (!seed) return s->ctx->status;
  ad_status st = ad_grad(s->ctx, y, seed, m, req, g, create_graph);
  for (int k = 0; st == AD_OK && k < m; k++) out[idx[k]] = g[k];
  return st;
}

/* h(in) = sum_i <r_i, g_i(in)>, recorded when create_graph. */
static ad_tensor *second_h(check_state *s, ad_tensor *const *in, bool create_graph) {
  ad_tensor **g = s->g1, *h = NULL;
  if (first_grads(s, in, create_graph, g, NULL) != AD_OK) return NULL;
  for (int i = 0; i < s->n; i++) {
    if (!g[i] || !s->r[i]) continue; /* no r: a repeated slot, checked in its first */
    ad_tensor *r = s->r[i];
    ad_tensor *ri = r;
    if (r->dtype != g[i]->dtype) ri = ad_cast(s->ctx, r, g[i]->dtype);
    ad_tensor *t = ad_sum(s->ctx, ad_mul(s->ctx, ri, g[i]));
    h = h ? ad_add(s->ctx, h, t) : t;
    if (!h) return NULL;
  }
  return h;
}

static void compare(check_state *s, int i, int64_t j, double a, double num, ad_check_report *rep,
                    double *score) {
  double err = fabs(a - num), tol = s->o.atol + s->o.rtol * fabs(num);
  double sc = err / tol;
  if (!(sc <= 1.0)) rep->passed = false; /* NaN fails too */
  if (!(sc <= *score)) {
    *score = isnan(sc) ? INFINITY : sc;
    rep->input = i;
    rep->index = j;
    rep->analytic = a;
    rep->numeric = num;
    rep->abs_err = err;
    rep->rel_err = err / (fabs(num) > 1e-12 ? fabs(num) : 1e-12);
  }
  rep->checked++;
}

/* Central differences of value(x64) per checked element. */
static ad_status numeric_pass(check_state *s, bool second, ad_check_report *rep) {
  double score = -1;
  bool grad_was = ad_set_grad_enabled(s->ctx, second);
  ad_status st = AD_OK;
  for (int i = 0; i < s->n && st == AD_OK; i++) {
    if (!s->analytic[i]) continue;
    ad_tensor *x = s->x64[i];
    for (int64_t j = 0; j < x->size && st == AD_OK; j++) {
      double orig = ad_tensor_get(x, j), f[2];
      for (int k = 0; k < 2 && st == AD_OK; k++) {
        ad_tape_reset(s->ctx); /* first: a write into a tensor no tape uses notes nothing */
        ad_tensor_set(x, j, orig + (k ? -s->o.eps : s->o.eps));
        if (second) {
          ad_tensor *h = second_h(s, s->x64, false);
          if (!h)
            st = s->ctx->status;
          else
            f[k] = ad_tensor_item(h);
        } else {
          ad_tensor *y = run(s, s->x64);
          if (!y)
            st = s->ctx->status;
          else
            f[k] = dot_v(s, y);
        }
      }
      ad_tape_reset(s->ctx); /* f[] holds the values */
      ad_tensor_set(x, j, orig);
      if (st == AD_OK)
        compare(s, i, j, s->analytic[i][j], (f[0] - f[1]) / (2 * s->o.eps), rep, &score);
    }
  }
  ad_tape_reset(s->ctx);
  ad_set_grad_enabled(s->ctx, grad_was);
  return st;
}

static ad_status make_v(check_state *s, bool second) {
  ad_rng rng;
  ad_rng_seed(&rng, s->o.seed);
  bool was = ad_set_grad_enabled(s->ctx, false);
  ad_tensor *y = run(s, s->in);
  ad_set_grad_enabled(s->ctx, was);
  if (!y) return s->ctx->status;
  s->v = ad_rand(s->ctx, &rng, AD_F64, y->ndim, y->shape, -1, 1);
  if (!s->v) return s->ctx->status;
  for (int i = 0; second && i < s->n; i++)
    if (s->analytic[i] &&
        !(s->r[i] = ad_rand(s->ctx, &rng, AD_F64, s->in[i]->ndim, s->in[i]->shape, -1, 1)))
      return s->ctx->status;
  ad_tape_reset(s->ctx);
  return AD_OK;
}

static void store_analytic(check_state *s, ad_tensor **g) {
  for (int i = 0; i < s->n; i++)
    if (s->analytic[i])
      for (int64_t j = 0; j < s->in[i]->size; j++)
        s->analytic[i][j] = g[i] ? ad_tensor_get(g[i], j) : 0;
}

static ad_status check(ad_ctx *ctx, ad_check_fn fn, void *ud, int n, ad_tensor *const *in,
                       const ad_check_opts *opts, ad_check_report *rep, bool second) {
  if (!ctx) return AD_ERR_NULL;
  if (!rep) return ad_set_error(ctx, AD_ERR_NULL, "gradcheck: report is NULL");
  memset(rep, 0, sizeof *rep);
  rep->passed = true;
  rep->input = -1;
  check_state s;
  ad_tape_reset(ctx);
  ad_status st = state_init(&s, ctx, fn, ud, n, in, opts);
  if (st == AD_OK) st = make_v(&s, second);
  if (st == AD_OK) {
    bool was = ad_set_grad_enabled(ctx, true);
    ad_tensor **g = s.g2; /* zeroed */
    if (!second) {
      st = first_grads(&s, in, false, g, NULL);
    } else {
      ad_tensor *h = second_h(&s, in, true);
      ad_tensor **req = s.req, **gg = s.gg;
      int *idx = s.idx, m = 0;
      for (int i = 0; i < n; i++)
        if (s.analytic[i]) idx[m] = i, req[m++] = in[i];
      if (!h) {
        st = ctx->status;
      } else if (ad_tensor_requires_grad(h)) {
        st = ad_grad(ctx, h, NULL, m, req, gg, false);
        for (int k = 0; st == AD_OK && k < m; k++) g[idx[k]] = gg[k];
      } /* else: the first derivative is constant, so the second is zero */
    }
    if (st == AD_OK) store_analytic(&s, g);
    ad_set_grad_enabled(ctx, was);
    ad_tape_reset(ctx);
  }
  if (st == AD_OK) st = numeric_pass(&s, second, rep);
  state_free(&s);
  if (st != AD_OK) rep->passed = false;
  return st;
}

ad_status ad_gradcheck(ad_ctx *ctx, ad_check_fn fn, void *ud, int n, ad_tensor *const *in,
                       const ad_check_opts *opts, ad_check_report *report) {
  return check(ctx, fn, ud, n, in, opts, report, false);
}

ad_status ad_gradgradcheck(ad_ctx *ctx, ad_check_fn fn, void *ud, int n, ad_tensor *const *in,
                           const ad_check_opts *opts, ad_check_report *report) {
  return check(ctx, fn, ud, n, in, opts, report, true);
}

/* ------------------------------------------------------------ per op */

typedef struct op_call {
  int id;
  ad_attrs attrs;
} op_call;

static ad_tensor *call_op(ad_ctx *ctx, int n, ad_tensor *const *in, void *ud) {
  const op_call *c = ud;
  return ad_op_apply(ctx, c->id, n, in, &c->attrs);
}

/* Why t cannot be a sample's input (NULL, freed, another context's, a
 * temporary), or NULL when it can. */
static const char *sample_input_problem(const ad_ctx *ctx, const ad_tensor *t) {
  if (!t) return "NULL";
  const ad_node *n = ad_node_of(t);
  if (n->magic == AD_NODE_DEAD) return "a freed tensor";
  if (n->magic != AD_NODE_MAGIC) return "not a tensor";
  if (n->ctx != ctx) return "a tensor of another context";
  if (!(n->flags & AD_NF_PERSISTENT)) return "a temporary (an op's result)";
  return NULL;
}

/* Whether a and b are the same value: bits, but any NaN matches any. */
static bool same_value(double a, double b) {
  return (isnan(a) && isnan(b)) || (a == b && signbit(a) == signbit(b));
}

/* The fast path of an op's grad_into, which only ad_backward runs (the
 * checks above differentiate through ad_grad, that is, the backward),
 * against the backward, on the sample's inputs with a random seed: a new
 * gradient stored (overwrite), a second pass added into it, and for
 * AD_OP_GRAD_INTO_TEMPS a first gradient of an input made by an op (x * 1)
 * stored into a temporary. Each must be the backward's bits (twice it,
 * after the second pass), as the contract of ad_grad_into_fn asks: a
 * grad_into that returns true without writing, or false after writing, or
 * computes another value, fails here with an error naming the input and
 * the element. Inputs that need no gradient, or are given twice, are
 * passed as they are. */
static ad_status check_grad_into(ad_ctx *ctx, op_call *c, int n, ad_tensor **in, int variant) {
  const ad_op_def *def = ad_op_get(ctx, c->id);
  int idx[AD_SAMPLE_MAX_IN], m = 0;
  size_t total = 0;
  bool twice = false; /* a tensor given twice takes two contributions a pass */
  for (int i = 0; i < n; i++) {
    bool again = false;
    for (int j = 0; j < i; j++) again |= in[j] == in[i];
    twice |= again;
    if (!again && ad_tensor_requires_grad(in[i])) {
      idx[m++] = i;
      total += (size_t)in[i]->size;
    }
  }
  if (!m) return AD_OK;
  double *ref = ad_malloc(ctx, (total ? total : 1) * sizeof *ref);
  if (!ref) return AD_ERR_OOM;
  ad_status st = AD_OK;
  ad_tensor *seed = NULL, *req[AD_SAMPLE_MAX_IN], *g[AD_SAMPLE_MAX_IN], *via[AD_SAMPLE_MAX_IN];
  for (int k = 0; k < m; k++) req[k] = in[idx[k]];
  ad_rng rng; /* of its own: the variants after this one draw what they drew before */
  ad_rng_seed(&rng, 0x5eedu + (uint64_t)variant);
  bool was = ad_set_grad_enabled(ctx, true);
  ad_tape_reset(ctx);
  ad_tensor *y = call_op(ctx, n, in, c);
  if (!y) {
    st = ctx->status;
    goto done;
  }
  if (!ad_tensor_requires_grad(y)) goto done; /* nothing to differentiate */
  if (!(seed = ad_rand(ctx, &rng, y->dtype, y->ndim, y->shape, -1, 1)) ||
      (st = ad_grad(ctx, y, seed, m, req, g, false)) != AD_OK) {
    st = st != AD_OK ? st : ctx->status;
    goto done;
  }
  for (int64_t k = 0, at = 0; k < m; at += req[k]->size, k++)
    for (int64_t j = 0; j < req[k]->size; j++) ref[at + j] = ad_tensor_get(g[k], j);
  static const char *const pass_name[3] = {
      "storing a new gradient", "adding into an existing gradient",
      "storing the first gradient of an op's result (AD_OP_GRAD_INTO_TEMPS)"};
  for (int pass = 0; pass < 3 && st == AD_OK; pass++) {
    if ((pass == 1 && twice) || (pass == 2 && !(def->flags & AD_OP_GRAD_INTO_TEMPS))) continue;
    if (pass != 1)
      for (int k = 0; k < m; k++) ad_tensor_zero_grad(req[k]);
    ad_tape_reset(ctx);
    ad_tensor *const *args = in;
    if (pass == 2) { /* each input to check through x * 1, an op's result */
      for (int i = 0; i < n; i++) via[i] = in[i];
      for (int k = 0; k < m; k++)
        if (!(via[idx[k]] = ad_mul_scalar(ctx, in[idx[k]], 1.0))) {
          st = ctx->status;
          goto done;
        }
      args = via;
    }
    if (!(y = call_op(ctx, n, args, c)) || (st = ad_backward(ctx, y, seed)) != AD_OK) {
      st = st != AD_OK ? st : ctx->status;
      goto done;
    }
    for (int64_t k = 0, at = 0; k < m && st == AD_OK; at += req[k]->size, k++)
      for (int64_t j = 0; j < req[k]->size; j++) {
        double want = pass == 1 ? 2 * ref[at + j] : ref[at + j];
        double got = req[k]->grad ? ad_tensor_get(req[k]->grad, j) : 0.0;
        if (!same_value(got, want)) {
          st = ad_set_error(ctx, AD_ERR_ARG,
                            "op_check: %s (variant %d): its grad_into, %s, gave input %d %.17g at "
                            "element %lld where its backward gives %.17g; the fast path must give "
                            "the backward's bits",
                            def->name, variant, pass_name[pass], idx[k], got, (long long)j, want);
          break;
        }
      }
  }
done:
  for (int k = 0; k < m; k++) ad_tensor_zero_grad(req[k]);
  ad_tape_reset(ctx);
  ad_tensor_free(seed);
  ad_set_grad_enabled(ctx, was);
  ad_free(ctx, ref, (total ? total : 1) * sizeof *ref);
  return st;
}

/* Generic inputs for an op without a sample function. */
static int generic_sample(const ad_op_def *def, const ad_sample_call *s) {
  if (s->variant > 0) return 0;
  int n = def->arity > 0 ? def->arity : 2;
  int64_t shape[2] = {3, 4};
  for (int i = 0; i < n; i++)
    if (!(s->in[i] = ad_sample_tensor(s, 2, shape, -1, 1, true))) return -1;
  return n;
}

ad_status ad_op_check(ad_ctx *ctx, int id, ad_dtype dtype, bool second, uint64_t seed,
                      ad_check_report *report) {
  if (!ctx) return AD_ERR_NULL;
  const ad_op_def *def = ad_op_get(ctx, id);
  if (!def) return ad_set_error(ctx, AD_ERR_ARG, "op_check: no op with id %d", id);
  if (!report) return ad_set_error(ctx, AD_ERR_NULL, "op_check: report is NULL");
  if (!def->backward)
    return ad_set_error(ctx, AD_ERR_ARG, "op_check: %s has no gradient to check", def->name);
  if (dtype != AD_F32 && dtype != AD_F64) /* a sample would make inputs that need no gradient */
    return ad_set_error(ctx, AD_ERR_DTYPE, "op_check: %s: dtype %s has no gradient (f32 or f64)",
                        def->name, ad_dtype_name(dtype));
  memset(report, 0, sizeof *report);
  report->passed = true;
  report->input = -1;
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  double worst = -1;
  ad_status st = AD_OK;
  /* the report holds no variant, and its input and index mean nothing
   * without one (variants differ in shapes and inputs): a failed check
   * names them in the message it records */
  char worst_at[400] = "";
  int variants = 0, failed = 0;
  /* in f32, the analytic side alone rounds in f32 (the numeric one is
   * computed in f64), to about 1e-7 of its terms: an op is held to 1e-5
   * and 1e-3, so that a backward off by 0.5% fails, not to ad_gradcheck's
   * default 1e-3 and 1e-2 for any f32 function */
  ad_check_opts op_tol = {.atol = dtype == AD_F32 ? 1e-5 : 0, .rtol = dtype == AD_F32 ? 1e-3 : 0};
  for (int v = 0; st == AD_OK; v++) {
    op_call c;
    memset(&c, 0, sizeof c); /* every byte of the attrs, whichever member the sample sets */
    c.id = id;
    ad_tensor *in[AD_SAMPLE_MAX_IN] = {0};
    ad_sample_call sc = {ctx, &rng, dtype, v, in, &c.attrs};
    uint32_t nerrors = ctx->nerrors;
    int n = def->sample ? def->sample(&sc) : generic_sample(def, &sc);
    if (n == 0) break;
    if (n < 0) { /* the sample's own error, not one recorded before the check */
      st = ctx->nerrors != nerrors && ctx->status != AD_OK
               ? ctx->status
               : ad_set_error(ctx, AD_ERR_ARG,
                              "op_check: %s's sample failed (variant %d) without recording an "
                              "error",
                              def->name, v);
    } else if (n > AD_SAMPLE_MAX_IN) {
      st = ad_set_error(ctx, AD_ERR_ARG, "op_check: %s's sample gave %d inputs; at most %d",
                        def->name, n, AD_SAMPLE_MAX_IN);
    } else {
      /* each of the n inputs a live persistent tensor of ctx: a temporary
       * is gone at the check's first tape reset, and a freed one is gone */
      for (int i = 0; i < n && st == AD_OK; i++) {
        const char *why = sample_input_problem(ctx, in[i]);
        if (why)
          st = ad_set_error(ctx, in[i] ? AD_ERR_ARG : AD_ERR_NULL,
                            "op_check: %s's sample (variant %d) gave input %d of %d: %s; the "
                            "inputs must be persistent tensors of this context (ad_rand, "
                            "ad_from_data)",
                            def->name, v, i, n, why);
      }
      /* an input to check in another dtype (a sample that ignores
       * s->dtype) would report a check of dtype that never ran */
      for (int i = 0; i < n && st == AD_OK; i++)
        if (in[i] && ad_tensor_requires_grad(in[i]) && in[i]->dtype != dtype)
          st = ad_set_error(ctx, AD_ERR_DTYPE,
                            "op_check: %s's sample (variant %d) made input %d %s for a check in "
                            "%s; make the inputs to check in s->dtype",
                            def->name, v, i, ad_dtype_name(in[i]->dtype), ad_dtype_name(dtype));
    }
    if (st == AD_OK && n > 0) {
      ad_check_report r;
      st = second ? ad_gradgradcheck(ctx, call_op, &c, n, in, &op_tol, &r)
                  : ad_gradcheck(ctx, call_op, &c, n, in, &op_tol, &r);
      if (st == AD_OK && !second && ad_op_get(ctx, id)->grad_into)
        st = check_grad_into(ctx, &c, n, in, v);
      if (st == AD_OK) {
        variants++;
        if (!r.passed) report->passed = false, failed++;
        /* rank variants by the check's own score, err / tolerance, so a
         * failing element (score > 1) is never hidden by a passing one */
        ad_check_opts o;
        fill_defaults(&o, &op_tol, dtype);
        double tol_sc = r.abs_err / (o.atol + o.rtol * fabs(r.numeric));
        if (isnan(tol_sc)) tol_sc = INFINITY;
        if (r.input >= 0 && tol_sc > worst) {
          worst = tol_sc;
          char shape[96];
          snprintf(worst_at, sizeof worst_at,
                   "variant %d, input %d %s, element %lld: analytic %.9g, numeric %.9g (abs err "
                   "%.2g, rel err %.2g; the tolerance is %g + %g |numeric|)",
                   v, r.input, ad_shape_str(in[r.input], shape, sizeof shape), (long long)r.index,
                   r.analytic, r.numeric, r.abs_err, r.rel_err, o.atol, o.rtol);
          int64_t checked = report->checked;
          bool passed = report->passed;
          *report = r;
          report->checked = checked;
          report->passed = passed;
        }
        report->checked += r.checked;
      }
    }
    /* the sample's persistent tensors, each once (a slot may repeat one,
     * or hold one the sample freed, whose header a later tensor reuses) */
    for (int i = 0; i < AD_SAMPLE_MAX_IN; i++) {
      bool again = false;
      for (int j = 0; j < i; j++) again |= in[j] == in[i];
      if (!again && !sample_input_problem(ctx, in[i])) ad_tensor_free(in[i]);
    }
  }
  if (st != AD_OK) {
    report->passed = false;
  } else if (!report->passed) { /* the check ran and found a wrong gradient */
    const ad_op_def *d = ad_op_get(ctx, id);
    ad_set_error(ctx, AD_ERR_ARG,
                 "op_check: %s failed the %s-order check in %s in %d of %d variant%s; the worst: "
                 "%s",
                 d->name, second ? "second" : "first", ad_dtype_name(dtype), failed, variants,
                 variants == 1 ? "" : "s", worst_at[0] ? worst_at : "no element compared");
  }
  return st;
}
