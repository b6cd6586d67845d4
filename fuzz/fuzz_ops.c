/* fuzz_ops.c: libFuzzer target for the core's op API
 * (include/autodiff/ad.h, and ad_op_apply of ad_ext.h). The input is a
 * small program that an interpreter runs on a fresh context (made with
 * fuzz_common.h's counting allocator, blocks over 16 MiB refused as out of
 * memory); seeds in fuzz/corpus/ops (fuzz/gen_corpus.c writes them).
 *
 * Program: a sequence of instructions, each led by one byte (see step()):
 * make a leaf (f32, f64 or i32; 0..4 dims of 0..6, now and then a negative
 * one, a huge one or a shape whose element count overflows; values from
 * the bytes, NaN, +-inf, -0, subnormals and huge ones among them), set
 * requires_grad, apply an op of the table OPS below (every builder of
 * ad.h: elementwise, broadcasting binaries, comparisons, reductions over
 * axes in and out of range, matmul with transposes, the shape ops,
 * softmax and its family, the losses, norms, recurrent cells, attention,
 * pooling and convolutions, gather, scatter_add, flip, cumsum, argmax and
 * argmin, min, var, std, sum, mean, max and min over axes, with random options, good and bad; and
 * ad_op_apply of any registered op, built-in backwards included), a
 * backward (ad_backward of the sum of a value), a second-order pass
 * (ad_grad with create_graph, then ad_grad of the result), ad_tape_reset,
 * ad_tensor_free of a leaf, toggling grad mode or anomaly mode, and a write
 * into a leaf. An operand is an earlier leaf or result (so shapes
 * broadcast or clash), or now and then NULL, a freed leaf or a tensor of
 * another context.
 *
 * Checks, besides ASan + UBSan and LeakSanitizer:
 *   - a NULL result (or a failed status) comes with ad_last_status != AD_OK
 *     and a non-empty ad_last_error, which names the function called
 *     (but out of memory, whose message names none, and a NaN in anomaly
 *     mode, whose names the op inside a composite that made it);
 *   - a failed ad_batch_norm leaves the running statistics as they were;
 *     an ad_backward that fails before its pass (any error but out of
 *     memory and a NaN in anomaly mode) leaves every leaf's gradient;
 *   - an op given a freed tensor, a tensor of another context, or NULL for
 *     a required input, fails;
 *   - a result is a valid tensor of the context whose size is the product
 *     of its shape; for elementwise ops, broadcasting binaries and
 *     comparisons, whole and per-axis reductions, softmax and log_softmax,
 *     matmul and concat its shape and dtype follow the documented rule,
 *     and (grad mode or not, outside anomaly mode) valid inputs of one
 *     float dtype never fail but for lack of memory; add, sub, mul,
 *     maximum, minimum, the comparisons, neg, abs and relu give the
 *     values computed here in double (rounded to the dtype);
 *   - after a successful backward every leaf's gradient has its leaf's
 *     shape and dtype, and ad_grad's outputs have their inputs';
 *   - after any error the context still works: d(3w)/dw of a leaf w kept
 *     for the purpose is 3 (a product and ad_grad);
 *   - at the end of each input, once its leaves are freed and the tape
 *     reset, no tensor is live, and after ad_ctx_free every block the
 *     context allocated has been freed;
 *   - inputs of odd length run with the op profile on (ad_profile_start):
 *     its rows name registered ops, once each, with counts and times that
 *     are not negative, the nodes' time within the passes', and the
 *     passes' and the ops' time within the input's. */
#include "fuzz_common.h"
#include "fuzz_ops.h"

#include <limits.h>
#include <math.h>
#include <time.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
  MAX_SLOTS = 24,  /* tensors an input holds at once */
  MAX_LEAVES = 12, /* leaves an input makes: with their grads, fewer frees than
                      the 64 headers a context keeps unused (ad_tensor_free) */
  MAX_STEPS = 96,  /* instructions an input runs */
  MAX_CAT = 4,     /* operands of concat and stack */
  MAX_UNSTACK = 16
};

/* --------------------------------------------------------------- input */

#include "fuzz_slots.h" /* u8, the slots, is_live, store, pick, make_aliens, finish_input */

static unsigned u16(void) { return u8() | u8() << 8; }

/* A dimension: mostly 0..6, sometimes negative or huge. */
static int64_t draw_dim(void) {
  static const int64_t odd[8] = {-1,
                                 -2,
                                 (int64_t)1 << 20,
                                 (int64_t)1 << 31,
                                 (int64_t)1 << 39,
                                 (int64_t)1 << 40,
                                 (int64_t)1 << 62,
                                 INT64_MAX};
  unsigned b = u8();
  return b < 232 ? (int64_t)(b % 7) : odd[b % 8];
}

/* An integer argument (a size, a stride, a start): mostly -1..5. */
static int64_t draw_int(void) {
  static const int64_t odd[8] = {INT64_MIN,        -((int64_t)1 << 40), -7,       6, 1 << 30,
                                 (int64_t)1 << 40, (int64_t)1 << 62,    INT64_MAX};
  unsigned b = u8();
  return b < 224 ? (int64_t)(b % 7) - 1 : odd[b % 8];
}

/* An option field where 0 means the default: mostly 0..3. */
static int64_t draw_opt(void) {
  unsigned b = u8();
  return b < 240 ? (int64_t)(b % 4) : draw_int();
}

/* A kernel size: mostly 1..4. */
static int64_t draw_kernel(void) {
  unsigned b = u8();
  return b < 240 ? (int64_t)(b % 4) + 1 : draw_int();
}

/* An axis: -5..5 mostly, sometimes far out of range. */
static int draw_axis(void) {
  unsigned b = u8();
  return b < 248 ? (int)(b % 11) - 5 : b & 1 ? INT_MAX : INT_MIN;
}

/* A real: (b - 128) / 16, or one of the values that break arithmetic. */
static double draw_real(void) {
  static const double odd[16] = {NAN,  INFINITY, -INFINITY, -0.0, 4.9e-324, 1e-40, -1e-45, 3.5e38,
                                 1e39, 1e300,    -1e300,    0.5,  1e-5,     2,     -1,     1};
  unsigned b = u8();
  return b < 224 ? ((double)b - 128) / 16 : odd[b % 16];
}

/* --------------------------------------------------------------- state */

static int leaves_made;
static ad_ctx *C;       /* this input's context */
static ad_tensor *w_ok; /* its leaf for the after-an-error check */
static bool must_fail;  /* an operand of this call is bad */
static char what[64];   /* the op being run, for messages */
static bool trace;      /* FUZZ_OPS_TRACE set: print each op's outcome */

static void trace_result(const ad_tensor *r) {
  char buf[160];
  if (trace)
    fprintf(stderr, "fuzz_ops: %s -> %s\n", what,
            r ? ad_shape_str(r, buf, sizeof buf) : ad_last_error(C));
}

static bool is_float(const ad_tensor *t) { return t->dtype == AD_F32 || t->dtype == AD_F64; }

/* A required input: a bad one must make the call fail. */
static ad_tensor *req(void) {
  ad_tensor *t = pick();
  if (!is_live(t)) must_fail = true;
  return t;
}

/* An optional input (NULL means none): freed or foreign must fail. */
static ad_tensor *opt(void) {
  if (u8() < 96) return NULL;
  ad_tensor *t = pick();
  if (t && !is_live(t)) must_fail = true;
  return t;
}

/* ---------------------------------------------------------- oracles */

static const char *ename; /* the function called, as its errors must name it (NULL: any) */

/* Whether msg names function f (or f less a suffix _ext or _axis, as
 * ad_embedding_ext's errors name embedding). */
static bool names_fn(const char *msg, const char *f) {
  if (strstr(msg, f)) return true;
  char stem[64];
  size_t n = strlen(f);
  if (n >= sizeof stem) return false;
  memcpy(stem, f, n + 1);
  if (n > 4 && !strcmp(stem + n - 4, "_ext"))
    stem[n - 4] = 0;
  else if (n > 5 && (!strcmp(stem + n - 5, "_axis") || !strcmp(stem + n - 5, "_axes")))
    stem[n - 5] = 0;
  else
    return false;
  return strstr(msg, stem) != NULL;
}

static void check_error(void) {
  ad_status st = ad_last_status(C);
  const char *msg = ad_last_error(C);
  FUZZ_CHECK(st != AD_OK, "%s failed without an error status", what);
  FUZZ_CHECK(msg && msg[0], "%s failed (%s) without a message", what, ad_status_str(st));
  /* out of memory: the arena's message names no op; anomaly mode names
   * the op inside a composite that made the NaN, as it should */
  FUZZ_CHECK(!ename || st == AD_ERR_OOM || st == AD_ERR_NAN || names_fn(msg, ename),
             "%s: the error of ad_%s does not name it: %s", what, ename, msg);
}

/* After an error the context still computes: d(3w)/dw = 3. */
static void check_usable(void) {
  ad_clear_error(C);
  bool grad = ad_set_grad_enabled(C, true), anomaly = ad_set_anomaly_mode(C, false);
  ad_tensor *y = ad_mul_scalar(C, w_ok, 3), *g = NULL;
  ad_status st = y ? ad_grad(C, y, NULL, 1, &w_ok, &g, false) : ad_last_status(C);
  if (st != AD_ERR_OOM) {
    FUZZ_CHECK(st == AD_OK && ad_tensor_item(y) == 7.5 && g && ad_tensor_item(g) == 3,
               "after an error of %s, 3w and d(3w)/dw are wrong: %s", what, ad_last_error(C));
  }
  ad_set_grad_enabled(C, grad);
  ad_set_anomaly_mode(C, anomaly);
  ad_clear_error(C);
}

static bool same_shape(const ad_tensor *a, const ad_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return false;
  return true;
}

static void check_shape(const ad_tensor *r, int nd, const int64_t *shape, ad_dtype dt) {
  char buf[160];
  FUZZ_CHECK(r->ndim == nd && r->dtype == dt, "%s: result %s %s, expected %d dims %s", what,
             ad_shape_str(r, buf, sizeof buf), ad_dtype_name(r->dtype), nd, ad_dtype_name(dt));
  for (int d = 0; d < nd; d++)
    FUZZ_CHECK(r->shape[d] == shape[d], "%s: result %s, dim %d should be %lld", what,
               ad_shape_str(r, buf, sizeof buf), d, (long long)shape[d]);
}

/* NumPy's broadcast of a and b into out; false if they do not broadcast. */
static bool bcast(const ad_tensor *a, const ad_tensor *b, int *nd, int64_t *out) {
  *nd = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int d = 0; d < *nd; d++) {
    int da = d - (*nd - a->ndim), db = d - (*nd - b->ndim);
    int64_t x = da >= 0 ? a->shape[da] : 1, y = db >= 0 ? b->shape[db] : 1;
    if (x != y && x != 1 && y != 1) return false;
    out[d] = x == 1 ? y : x;
  }
  return true;
}

/* The flat index in t of element i of the broadcast shape (nd, shape). */
static int64_t bcast_index(const ad_tensor *t, int nd, const int64_t *shape, int64_t i) {
  int64_t idx = 0, stride = 1;
  for (int d = nd - 1; d >= 0; d--) {
    int64_t c = i % shape[d];
    i /= shape[d];
    int dt = d - (nd - t->ndim);
    if (dt < 0) continue;
    if (t->shape[dt] != 1) idx += c * stride;
    stride *= t->shape[dt];
  }
  return idx;
}

static double round_to(double v, ad_dtype dt) { return dt == AD_F32 ? (double)(float)v : v; }

static bool same_value(double got, double want) {
  return (isnan(got) && isnan(want)) || got == want;
}

/* -------------------------------------------------------- the op table */

/* The shape rule a result is checked against (R_NONE: only that it is a
 * tensor), and whether valid float inputs must succeed. */
typedef enum {
  R_NONE,
  R_SAME,   /* x's shape and dtype */
  R_BCAST,  /* broadcast of a and b, a's dtype */
  R_CMP,    /* as R_BCAST; a and b may be i32 */
  R_SCALAR, /* 0-d, x's dtype */
  R_AXIS,   /* x without (or with 1 at) axis */
  R_MATMUL,
  R_CONCAT
} rule;

#define X_RULE(name, r) r,
static const rule op_rule[OP_COUNT] = {FUZZ_OPS(X_RULE)};

/* What run_op leaves for the checks: the main inputs, the axis of a
 * reduction, the transposes of a matmul, the concat's inputs, whether
 * the values are checked (vcheck: the binary or unary function), and
 * whether valid inputs must succeed (strict). */
static ad_tensor *in_a, *in_b;
static int in_axis, n_cat;
static bool in_keep, in_ta, in_tb, strict;
static ad_tensor *cat_in[MAX_CAT];
static int vcheck; /* 0 none; 1 add, 2 sub, 3 mul, 4 max, 5 min, 6 neg, 7 abs, 8 relu,
                      10..14: eq, gt, ge, lt, le */

static void draw_conv(ad_conv_opts *o) {
  for (int i = 0; i < 2; i++) o->stride[i] = draw_opt(), o->dilation[i] = draw_opt();
  for (int i = 0; i < 4; i++) o->padding[i] = draw_opt();
  o->groups = draw_opt();
  o->same = u8() < 32;
  for (int i = 0; i < 2; i++) o->output_padding[i] = u8() < 200 ? 0 : draw_opt();
}

static void draw_conv3d(ad_conv3d_opts *o) {
  for (int i = 0; i < 3; i++) o->stride[i] = draw_opt(), o->dilation[i] = draw_opt();
  for (int i = 0; i < 6; i++) o->padding[i] = draw_opt();
  o->groups = draw_opt();
  o->same = u8() < 32;
  for (int i = 0; i < 3; i++) o->output_padding[i] = u8() < 200 ? 0 : draw_opt();
}

static int draw_shape(int64_t *shape) {
  int nd = (int)(u8() % 6);
  for (int d = 0; d < nd; d++) shape[d] = u8() < 24 ? -1 : draw_dim();
  return nd;
}

/* NAMED(f)(C, ...) calls ad_f, noting its name for check_error. */
#define NAMED(f) (ename = #f, ad_##f)

static ad_tensor *run_op(int op) {
  switch (op) {
  case OP_add:
  case OP_sub:
  case OP_mul:
  case OP_div:
  case OP_pow:
  case OP_maximum:
  case OP_minimum: {
    static ad_tensor *(*const fn[])(ad_ctx *, ad_tensor *, ad_tensor *) = {
        ad_add, ad_sub, ad_mul, ad_div, ad_pow, ad_maximum, ad_minimum};
    static const int vc[] = {1, 2, 3, 0, 0, 4, 5};
    static const char *const names[] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum"};
    ename = names[op - OP_add];
    in_a = req(), in_b = req();
    strict = true;
    vcheck = vc[op - OP_add];
    return fn[op - OP_add](C, in_a, in_b);
  }
  case OP_compare: {
    static ad_tensor *(*const fn[])(ad_ctx *, ad_tensor *, ad_tensor *) = {ad_eq, ad_gt, ad_ge,
                                                                           ad_lt, ad_le};
    static const char *const names[] = {"eq", "gt", "ge", "lt", "le"};
    int k = (int)(u8() % 5);
    ename = names[k];
    in_a = req(), in_b = req();
    vcheck = 10 + k;
    return fn[k](C, in_a, in_b);
  }
  case OP_where: {
    ad_tensor *c = req(), *a = req(), *b = req();
    return NAMED(where)(C, c, a, b);
  }
  case OP_scalar_op: {
    static ad_tensor *(*const fn[])(ad_ctx *, ad_tensor *, double) = {
        ad_add_scalar,  ad_mul_scalar, ad_pow_scalar, ad_sub_scalar,
        ad_rsub_scalar, ad_div_scalar, ad_leaky_relu};
    static const char *const names[] = {"add_scalar",  "mul_scalar", "pow_scalar", "sub_scalar",
                                        "rsub_scalar", "div_scalar", "leaky_relu"};
    int k = (int)(u8() % 7);
    ename = names[k];
    in_a = req();
    double s = draw_real();
    /* div_scalar refuses 0; an f32 x, like torch, a finite s beyond float's range */
    strict = k != 5 && !(isfinite(s) && fabs(s) > 3.4028234663852886e38);
    return fn[k](C, in_a, s);
  }
  case OP_unary: {
    static ad_tensor *(*const fn[])(ad_ctx *, ad_tensor *) = {
        ad_neg,     ad_exp,  ad_log,  ad_sqrt,     ad_abs, ad_sin,    ad_cos,  ad_tanh,
        ad_sigmoid, ad_relu, ad_gelu, ad_softplus, ad_erf, ad_square, ad_atan, ad_sign};
    static const char *const names[] = {"neg", "exp",    "log",     "sqrt", "abs",  "sin",
                                        "cos", "tanh",   "sigmoid", "relu", "gelu", "softplus",
                                        "erf", "square", "atan",    "sign"};
    int k = (int)(u8() % (sizeof fn / sizeof fn[0]));
    ename = names[k];
    in_a = req();
    strict = true;
    vcheck = k == 0 ? 6 : k == 4 ? 7 : k == 9 ? 8 : 0;
    return fn[k](C, in_a);
  }
  case OP_clamp: {
    in_a = req();
    double lo = draw_real(), hi = draw_real();
    return u8() & 1 ? NAMED(clamp)(C, in_a, lo, hi) : NAMED(hardtanh)(C, in_a, lo, hi);
  }
  case OP_cast: {
    ad_tensor *x = req();
    return NAMED(cast)(C, x, (ad_dtype)(u8() % 4));
  }
  case OP_matmul: {
    in_a = req(), in_b = req();
    unsigned f = u8();
    in_ta = f & 1, in_tb = f & 2;
    return NAMED(matmul)(C, in_a, in_b, in_ta, in_tb);
  }
  case OP_reshape: {
    ad_tensor *x = req();
    int64_t shape[8];
    int nd = draw_shape(shape);
    return NAMED(reshape)(C, x, u8() < 8 ? -1 : nd, shape);
  }
  case OP_permute: {
    ad_tensor *x = req();
    int perm[AD_MAX_DIMS];
    for (int d = 0; d < AD_MAX_DIMS; d++) perm[d] = d;
    int nd = is_live(x) ? x->ndim : AD_MAX_DIMS;
    for (int d = nd - 1; d > 0; d--) { /* mostly a permutation of x's dims */
      int j = (int)(u8() % (unsigned)(d + 1)), t = perm[d];
      perm[d] = perm[j], perm[j] = t;
    }
    if (u8() < 32) perm[u8() % AD_MAX_DIMS] = draw_axis();
    return NAMED(permute)(C, x, perm);
  }
  case OP_transpose: {
    ad_tensor *x = req();
    int d0 = draw_axis(), d1 = draw_axis();
    return NAMED(transpose)(C, x, d0, d1);
  }
  case OP_expand:
  case OP_sum_to: {
    ad_tensor *x = req();
    int64_t shape[8];
    int nd = draw_shape(shape);
    return op == OP_expand ? NAMED(expand)(C, x, nd, shape) : NAMED(sum_to)(C, x, nd, shape);
  }
  case OP_narrow: {
    ad_tensor *x = req();
    int axis = draw_axis();
    int64_t start = draw_int(), len = draw_int();
    return NAMED(narrow)(C, x, axis, start, len);
  }
  case OP_pad: {
    ad_tensor *x = req();
    int axis = draw_axis();
    int64_t before = draw_int(), after = draw_int();
    return NAMED(pad)(C, x, axis, before, after);
  }
  case OP_concat:
  case OP_stack: {
    n_cat = (int)(u8() % (MAX_CAT + 1));
    for (int i = 0; i < n_cat; i++) cat_in[i] = req();
    if (n_cat == 0) must_fail = true;
    in_axis = draw_axis();
    return op == OP_concat ? NAMED(concat)(C, n_cat, cat_in, in_axis)
                           : NAMED(stack)(C, n_cat, cat_in, in_axis);
  }
  case OP_unstack: {
    ad_tensor *x = req(), *out[MAX_UNSTACK] = {0};
    int axis = draw_axis();
    if (is_live(x) && x->ndim > 0 && axis >= -x->ndim && axis < x->ndim &&
        x->shape[axis < 0 ? axis + x->ndim : axis] > MAX_UNSTACK)
      return NULL; /* more slices than out holds: the caller's mistake */
    ename = "unstack";
    ad_status st = ad_unstack(C, x, axis, out);
    if (st != AD_OK) {
      check_error();
      for (int i = 0; i < MAX_UNSTACK; i++) FUZZ_CHECK(!out[i], "unstack: out[%d] set on error", i);
      check_usable();
      return NULL;
    }
    FUZZ_CHECK(!must_fail, "unstack succeeded with a bad input");
    FUZZ_CHECK(x->ndim > 0 && axis >= -x->ndim && axis < x->ndim,
               "unstack: axis %d of %d dims worked", axis, x->ndim);
    int a = axis < 0 ? axis + x->ndim : axis;
    for (int i = 0; i < x->shape[a]; i++) {
      FUZZ_CHECK(out[i] && out[i]->ndim == x->ndim - 1, "unstack: slice %d", i);
      for (int d = 0, e = 0; d < x->ndim; d++)
        if (d != a) FUZZ_CHECK(out[i]->shape[e++] == x->shape[d], "unstack: slice %d's shape", i);
    }
    return x->shape[a] ? out[u8() % (unsigned)x->shape[a]] : NULL;
  }
  case OP_detach:
    in_a = req();
    strict = true;
    return NAMED(detach)(C, in_a);
  case OP_index_select: {
    ad_tensor *x = req(), *idx = req();
    return NAMED(index_select)(C, x, idx);
  }
  case OP_index_add: {
    ad_tensor *src = req(), *idx = req();
    return NAMED(index_add)(C, src, idx, draw_int());
  }
  case OP_embedding: {
    ad_tensor *w = req(), *idx = req();
    if (u8() & 1) return NAMED(embedding)(C, w, idx, u8() < 128 ? AD_NO_PADDING : draw_int());
    ad_embedding_opts o = {
        .padding = u8() & 1, .padding_idx = draw_int(), .scale_grad_by_freq = u8() & 1};
    return NAMED(embedding_ext)(C, w, idx, u8() < 16 ? NULL : &o);
  }
  case OP_reduce: {
    static ad_tensor *(*const fn[])(ad_ctx *, ad_tensor *) = {ad_sum, ad_mean, ad_max};
    static const char *const names[] = {"sum", "mean", "max"};
    int k = (int)(u8() % 3);
    ename = names[k];
    in_a = req();
    strict = k < 2;
    return fn[k](C, in_a);
  }
  case OP_reduce_axis: {
    static ad_tensor *(*const fn[])(ad_ctx *, ad_tensor *, int, bool) = {ad_sum_axis, ad_mean_axis,
                                                                         ad_max_axis, ad_logsumexp};
    static const char *const names[] = {"sum_axis", "mean_axis", "max_axis", "logsumexp"};
    int k = (int)(u8() % 4);
    ename = names[k];
    in_a = req();
    in_axis = draw_axis();
    in_keep = u8() & 1;
    strict = k < 2;
    return fn[k](C, in_a, in_axis, in_keep);
  }
  case OP_softmax:
    in_a = req();
    in_axis = draw_axis();
    return u8() & 1 ? NAMED(softmax)(C, in_a, in_axis) : NAMED(log_softmax)(C, in_a, in_axis);
  case OP_cross_entropy: {
    ad_tensor *logits = req(), *labels = req();
    if (u8() & 1) return NAMED(softmax_cross_entropy)(C, logits, labels);
    ad_cross_entropy_opts o = {
        .ignore = u8() & 1, .ignore_index = (int32_t)draw_int(), .sum = u8() & 1};
    return NAMED(softmax_cross_entropy_ext)(C, logits, labels, u8() < 16 ? NULL : &o);
  }
  case OP_binary_cross_entropy: { /* of probabilities, of logits, of logits with pos_weight */
    ad_tensor *p = req(), *t = req();
    switch (u8() % 3) {
    case 0:
      return NAMED(binary_cross_entropy)(C, p, t);
    case 1:
      return NAMED(binary_cross_entropy_logits)(C, p, t);
    default:
      return NAMED(binary_cross_entropy_logits_pw)(C, p, t, req());
    }
  }
  case OP_batch_norm: {
    ad_tensor *x = req(), *w = opt(), *b = opt(), *rm = opt(), *rv = opt();
    bool training = u8() & 1;
    double momentum = draw_real(), eps = draw_real();
    /* the running statistics change only when the call succeeds */
    double before[2][8];
    ad_tensor *rs[2] = {rm, rv};
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 8; j++)
        before[i][j] = is_live(rs[i]) && j < rs[i]->size ? ad_tensor_get(rs[i], j) : 0;
    ad_tensor *y = NAMED(batch_norm)(C, x, w, b, rm, rv, training, momentum, eps);
    for (int i = 0; i < 2 && !y; i++)
      for (int j = 0; j < 8; j++)
        FUZZ_CHECK(!is_live(rs[i]) || j >= rs[i]->size ||
                       same_value(ad_tensor_get(rs[i], j), before[i][j]),
                   "batch_norm failed but changed running statistic %d at %d", i, j);
    return y;
  }
  case OP_layer_norm: {
    ad_tensor *x = req(), *w = opt(), *b = opt();
    int64_t shape[8];
    int nd = draw_shape(shape);
    if (u8() < 192 && is_live(x)) { /* mostly x's last dims */
      nd = x->ndim ? 1 + (int)(u8() % (unsigned)x->ndim) : 1;
      for (int d = 0; d < nd && d < x->ndim; d++) shape[d] = x->shape[x->ndim - nd + d];
    }
    return NAMED(layer_norm)(C, x, nd, shape, w, b, u8() < 200 ? 1e-5 : draw_real());
  }
  case OP_lstm_cell: {
    ad_tensor *g = req(), *c = req();
    return NAMED(lstm_cell)(C, g, c);
  }
  case OP_gru_cell: {
    ad_tensor *a = req(), *b = req(), *h = req();
    return NAMED(gru_cell)(C, a, b, h);
  }
  case OP_lstm_seq: {
    ad_tensor *xp = req(), *whh = req(), *b = req(), *h0 = req(), *c0 = req(), *mask = opt();
    return NAMED(lstm_seq)(C, xp, whh, b, h0, c0, mask, u8() & 1);
  }
  case OP_gru_seq: {
    ad_tensor *xp = req(), *whh = req(), *bih = req(), *bhh = req(), *h0 = req(), *mask = opt();
    return NAMED(gru_seq)(C, xp, whh, bih, bhh, h0, mask, u8() & 1);
  }
  case OP_attention: {
    ad_tensor *q = req(), *k = req(), *v = req(), *weights = NULL;
    ad_rng rng;
    ad_rng_seed(&rng, u8());
    ad_attention_opts o = {.scale = u8() < 192 ? 0 : draw_real(),
                           .causal = u8() & 1,
                           .mask = opt(),
                           .dropout_p = u8() < 192 ? 0 : draw_real(),
                           .rng = u8() < 16 ? NULL : &rng,
                           .weights = u8() & 1 ? &weights : NULL};
    if (u8() < 16) o.weights = NULL; /* and no options */
    const ad_attention_opts *po = o.weights || u8() ? &o : NULL;
    if (!po) must_fail = !is_live(q) || !is_live(k) || !is_live(v); /* no mask passed */
    ad_tensor *y = NAMED(scaled_dot_product_attention)(C, q, k, v, po);
    FUZZ_CHECK(!y || !o.weights || weights, "attention: no weights for a result");
    FUZZ_CHECK(y || !weights, "attention: weights for no result");
    return y;
  }
  case OP_pool2d: {
    ad_tensor *x = req();
    int64_t kh = draw_kernel(), kw = draw_kernel();
    ad_pool2d_opts o = {.ceil_mode = u8() & 1, .exclude_pad = u8() & 1};
    for (int i = 0; i < 2; i++)
      o.stride[i] = draw_opt(), o.padding[i] = draw_opt(), o.dilation[i] = draw_opt();
    const ad_pool2d_opts *po = u8() < 16 ? NULL : &o;
    switch (u8() % 3) {
    case 0:
      return NAMED(max_pool2d)(C, x, kh, kw, po);
    case 1:
      return NAMED(max_pool2d_indices)(C, x, kh, kw, po);
    default:
      return NAMED(avg_pool2d)(C, x, kh, kw, po);
    }
  }
  case OP_global_avg_pool2d:
    return NAMED(global_avg_pool2d)(C, req());
  case OP_pool3d: {
    ad_tensor *x = req();
    int64_t kd = draw_kernel(), kh = draw_kernel(), kw = draw_kernel();
    ad_pool3d_opts o = {.ceil_mode = u8() & 1,
                        .exclude_pad = u8() & 1,
                        .divisor_override = u8() < 200 ? 0 : draw_int()};
    for (int i = 0; i < 3; i++)
      o.stride[i] = draw_opt(), o.padding[i] = draw_opt(), o.dilation[i] = draw_opt();
    const ad_pool3d_opts *po = u8() < 16 ? NULL : &o;
    switch (u8() % 3) {
    case 0:
      return NAMED(max_pool3d)(C, x, kd, kh, kw, po);
    case 1:
      return NAMED(max_pool3d_indices)(C, x, kd, kh, kw, po);
    default:
      return NAMED(avg_pool3d)(C, x, kd, kh, kw, po);
    }
  }
  case OP_conv2d:
  case OP_conv_transpose2d: {
    ad_tensor *x = req(), *w = req(), *b = opt();
    ad_conv_opts o = {0};
    draw_conv(&o);
    const ad_conv_opts *po = u8() < 16 ? NULL : &o;
    return op == OP_conv2d ? NAMED(conv2d)(C, x, w, b, po)
                           : NAMED(conv_transpose2d)(C, x, w, b, po);
  }
  case OP_conv2d_weight: {
    ad_tensor *x = req(), *dy = req();
    int64_t kh = draw_int(), kw = draw_int();
    ad_conv_opts o = {0};
    draw_conv(&o);
    return NAMED(conv2d_weight)(C, x, dy, kh, kw, u8() < 16 ? NULL : &o);
  }
  case OP_conv1d: {
    ad_tensor *x = req(), *w = req(), *b = opt();
    ad_conv1d_opts o = {.stride = draw_opt(),
                        .padding = {draw_opt(), draw_opt()},
                        .dilation = draw_opt(),
                        .groups = draw_opt(),
                        .same = u8() < 32};
    return NAMED(conv1d)(C, x, w, b, u8() < 16 ? NULL : &o);
  }
  case OP_conv_transpose1d: {
    ad_tensor *x = req(), *w = req(), *b = opt();
    ad_conv_transpose1d_opts o = {.stride = draw_opt(),
                                  .padding = {draw_opt(), draw_opt()},
                                  .dilation = draw_opt(),
                                  .groups = draw_opt(),
                                  .output_padding = u8() < 200 ? 0 : draw_opt()};
    return NAMED(conv_transpose1d)(C, x, w, b, u8() < 16 ? NULL : &o);
  }
  case OP_conv3d:
  case OP_conv_transpose3d: {
    ad_tensor *x = req(), *w = req(), *b = opt();
    ad_conv3d_opts o = {0};
    draw_conv3d(&o);
    const ad_conv3d_opts *po = u8() < 16 ? NULL : &o;
    return op == OP_conv3d ? NAMED(conv3d)(C, x, w, b, po)
                           : NAMED(conv_transpose3d)(C, x, w, b, po);
  }
  case OP_like:
    in_a = req();
    strict = true;
    if (u8() & 1) return NAMED(zeros_like)(C, in_a);
    {
      double v = draw_real();
      strict = false; /* an i32 x refuses a value int32 cannot hold */
      return NAMED(full_like)(C, in_a, v);
    }
  case OP_op_apply: {
    int id = (int)(u16() % (unsigned)(ad_op_count(C) + 2)) - 1;
    int n = (int)(u8() % 4);
    ad_tensor *in[3];
    for (int i = 0; i < n; i++) in[i] = req();
    return ad_op_apply(C, id, n, in, NULL);
  }
  case OP_gather: {
    ad_tensor *x = req(), *idx = req();
    return NAMED(gather)(C, x, draw_axis(), idx);
  }
  case OP_scatter_add: {
    ad_tensor *x = req(), *idx = req(), *src = req();
    return NAMED(scatter_add)(C, x, draw_axis(), idx, src);
  }
  case OP_flip: { /* R_SAME: a flip keeps x's shape and dtype */
    int axes[4], n = (int)(u8() % 5);
    if (u8() < 16) n = -1; /* a count below 0 */
    in_a = req();
    for (int i = 0; i < 4; i++) axes[i] = draw_axis();
    return NAMED(flip)(C, in_a, n, u8() < 8 ? NULL : axes);
  }
  case OP_cumsum:
    in_a = req();
    return NAMED(cumsum)(C, in_a, draw_axis());
  case OP_argmax: {
    in_a = req();
    int axis = draw_axis();
    bool keep = u8() & 1;
    return u8() & 1 ? NAMED(argmax)(C, in_a, axis, keep) : NAMED(argmin)(C, in_a, axis, keep);
  }
  case OP_min_var_std: {
    int axes[4], k = (int)(u8() % 8), n = (int)(u8() % 5);
    if (u8() < 16) n = -1;
    ad_tensor *x = req();
    for (int i = 0; i < 4; i++) axes[i] = draw_axis();
    const int *ax = u8() < 8 ? NULL : axes;
    int64_t correction = u8() < 224 ? (int64_t)(u8() % 3) : draw_int();
    bool keep = u8() & 1;
    switch (k) {
    case 0:
      return NAMED(min)(C, x);
    case 1:
      return NAMED(min_axis)(C, x, axes[0], keep);
    case 2:
      return NAMED(var)(C, x, n, ax, correction, keep);
    case 3:
      return NAMED(std)(C, x, n, ax, correction, keep);
    case 4:
      return NAMED(sum_axes)(C, x, n, ax, keep);
    case 5:
      return NAMED(mean_axes)(C, x, n, ax, keep);
    case 6:
      return NAMED(max_axes)(C, x, n, ax, keep);
    default:
      return NAMED(min_axes)(C, x, n, ax, keep);
    }
  }
  }
  return NULL;
}

/* The values of the ops whose rule is cheap to state, in double. */
static void check_values(const ad_tensor *r) {
  if (!vcheck || !is_float(in_a) || (vcheck < 6 && !is_float(in_b))) return;
  for (int64_t i = 0; i < r->size; i++) {
    double x, y = 0, want;
    if (vcheck < 6 || vcheck >= 10) {
      x = ad_tensor_get(in_a, bcast_index(in_a, r->ndim, r->shape, i));
      y = ad_tensor_get(in_b, bcast_index(in_b, r->ndim, r->shape, i));
    } else {
      x = ad_tensor_get(in_a, i);
    }
    switch (vcheck) {
    case 1:
      want = x + y;
      break;
    case 2:
      want = x - y;
      break;
    case 3:
      want = x * y;
      break;
    case 4:
      want = isnan(x) || isnan(y) ? NAN : fmax(x, y);
      break;
    case 5:
      want = isnan(x) || isnan(y) ? NAN : fmin(x, y);
      break;
    case 6:
      want = -x;
      break;
    case 7:
      want = fabs(x);
      break;
    case 8:
      want = isnan(x) ? x : x > 0 ? x : 0;
      break;
    case 10:
      want = x == y;
      break;
    case 11:
      want = x > y;
      break;
    case 12:
      want = x >= y;
      break;
    case 13:
      want = x < y;
      break;
    case 14:
      want = x <= y;
      break;
    default:
      return;
    }
    want = round_to(want, r->dtype);
    double got = ad_tensor_get(r, i);
    FUZZ_CHECK(same_value(got, want),
               "%s: element %lld is %.17g, expected %.17g (from %.17g, %.17g)", what, (long long)i,
               got, want, x, y);
  }
}

/* The shape (and, where stated, the values) of a successful result. */
static void check_rule(int op, const ad_tensor *r) {
  int64_t shape[AD_MAX_DIMS];
  int nd;
  switch (op_rule[op]) {
  case R_NONE:
    return;
  case R_SAME:
    if (!is_live(in_a)) return;
    check_shape(r, in_a->ndim, in_a->shape, in_a->dtype);
    break;
  case R_BCAST:
  case R_CMP:
    if (!is_live(in_a) || !is_live(in_b)) return;
    FUZZ_CHECK(bcast(in_a, in_b, &nd, shape), "%s: shapes that do not broadcast gave a result",
               what);
    check_shape(r, nd, shape, in_a->dtype);
    break;
  case R_SCALAR:
    if (!is_live(in_a)) return;
    check_shape(r, 0, shape, in_a->dtype);
    break;
  case R_AXIS: {
    if (!is_live(in_a) || in_a->ndim == 0) return;
    FUZZ_CHECK(in_axis >= -in_a->ndim && in_axis < in_a->ndim, "%s: axis %d of %d dims worked",
               what, in_axis, in_a->ndim);
    int ax = in_axis < 0 ? in_axis + in_a->ndim : in_axis;
    nd = 0;
    for (int d = 0; d < in_a->ndim; d++)
      if (d != ax)
        shape[nd++] = in_a->shape[d];
      else if (in_keep)
        shape[nd++] = 1;
    check_shape(r, nd, shape, in_a->dtype);
    break;
  }
  case R_MATMUL: {
    if (!is_live(in_a) || !is_live(in_b)) return;
    const ad_tensor *a = in_a, *b = in_b;
    FUZZ_CHECK(a->ndim >= 1 && b->ndim >= 1, "matmul of a 0-d tensor worked");
    int64_t m = 1, ka, kb, n = 1;
    if (a->ndim == 1)
      ka = a->shape[0];
    else {
      int64_t r0 = a->shape[a->ndim - 2], r1 = a->shape[a->ndim - 1];
      m = in_ta ? r1 : r0, ka = in_ta ? r0 : r1;
    }
    if (b->ndim == 1)
      kb = b->shape[0];
    else {
      int64_t r0 = b->shape[b->ndim - 2], r1 = b->shape[b->ndim - 1];
      kb = in_tb ? r1 : r0, n = in_tb ? r0 : r1;
    }
    FUZZ_CHECK(ka == kb, "matmul: inner dims %lld and %lld gave a result", (long long)ka,
               (long long)kb);
    int na = a->ndim > 2 ? a->ndim - 2 : 0, nb = b->ndim > 2 ? b->ndim - 2 : 0;
    nd = na > nb ? na : nb;
    for (int d = 0; d < nd; d++) {
      int da = d - (nd - na), db = d - (nd - nb);
      int64_t x = da >= 0 ? a->shape[da] : 1, y = db >= 0 ? b->shape[db] : 1;
      FUZZ_CHECK(x == y || x == 1 || y == 1, "matmul: batch dims that do not broadcast worked");
      shape[d] = x == 1 ? y : x;
    }
    if (a->ndim > 1) shape[nd++] = m;
    if (b->ndim > 1) shape[nd++] = n;
    check_shape(r, nd, shape, a->dtype);
    break;
  }
  case R_CONCAT: {
    for (int i = 0; i < n_cat; i++)
      if (!is_live(cat_in[i])) return;
    const ad_tensor *x = cat_in[0];
    FUZZ_CHECK(x->ndim > 0 && in_axis >= -x->ndim && in_axis < x->ndim,
               "concat: axis %d of %d dims worked", in_axis, x->ndim);
    int ax = in_axis < 0 ? in_axis + x->ndim : in_axis;
    memcpy(shape, x->shape, sizeof shape);
    for (int i = 1; i < n_cat; i++) shape[ax] += cat_in[i]->shape[ax];
    check_shape(r, x->ndim, shape, x->dtype);
    break;
  }
  }
  check_values(r);
}

/* Valid inputs of one float dtype for which the op must succeed. */
static bool should_work(int op) {
  if (!strict || ad_anomaly_mode(C)) return false;
  switch (op_rule[op]) {
  case R_SAME:
  case R_SCALAR:
    return is_live(in_a) && is_float(in_a);
  case R_BCAST: {
    int nd;
    int64_t shape[AD_MAX_DIMS];
    return is_live(in_a) && is_live(in_b) && is_float(in_a) && in_a->dtype == in_b->dtype &&
           bcast(in_a, in_b, &nd, shape);
  }
  case R_AXIS:
    return is_live(in_a) && is_float(in_a) && in_a->ndim > 0 && in_axis >= -in_a->ndim &&
           in_axis < in_a->ndim;
  default:
    return false;
  }
}

static void apply(void) {
  int op = (int)(u8() % OP_COUNT);
  snprintf(what, sizeof what, "%s", op_name[op]);
  in_a = in_b = NULL;
  in_axis = n_cat = vcheck = 0;
  in_keep = in_ta = in_tb = strict = must_fail = false;
  ename = NULL;
  ad_clear_error(C);
  ad_tensor *r = run_op(op);
  trace_result(r);
  if (!r) {
    if (op == OP_unstack) return; /* checked there */
    check_error();
    FUZZ_CHECK(!should_work(op) || ad_last_status(C) == AD_ERR_OOM, "%s failed on valid inputs: %s",
               what, ad_last_error(C));
    check_usable();
    return;
  }
  FUZZ_CHECK(!must_fail, "%s succeeded with a NULL, freed or foreign input", what);
  FUZZ_CHECK(ad_tensor_is_valid(r) && ad_tensor_ctx(r) == C, "%s: result is not a tensor of ctx",
             what);
  FUZZ_CHECK(r->ndim >= 0 && r->ndim <= AD_MAX_DIMS, "%s: %d dims", what, r->ndim);
  int64_t n = 1;
  for (int d = 0; d < r->ndim; d++) {
    FUZZ_CHECK(r->shape[d] >= 0, "%s: dim %d is %lld", what, d, (long long)r->shape[d]);
    n *= r->shape[d];
  }
  FUZZ_CHECK(n == r->size, "%s: size %lld for %lld elements", what, (long long)r->size,
             (long long)n);
  check_rule(op, r);
  if (ad_tensor_is_temporary(r)) store(r, S_TEMP);
}

/* ------------------------------------------------------ instructions */

static void make_leaf(void) {
  ad_dtype dt = (ad_dtype)(u8() % 3);
  int nd = (int)(u8() % 5);
  int64_t shape[4];
  for (int d = 0; d < nd; d++) shape[d] = draw_dim();
  if (leaves_made >= MAX_LEAVES) return;
  snprintf(what, sizeof what, "ad_zeros");
  ename = "zeros";
  ad_clear_error(C);
  ad_tensor *t = ad_zeros(C, dt, nd, shape);
  trace_result(t);
  if (!t) {
    check_error();
    check_usable();
    return;
  }
  leaves_made++;
  double vals[8];
  for (int i = 0; i < 8; i++) {
    vals[i] = draw_real();
    if (dt == AD_I32)
      vals[i] = u8() < 250 ? (double)(int)(u8() % 9) - 2 : u8() & 1 ? INT32_MAX : INT32_MIN;
  }
  for (int64_t i = 0; i < t->size; i++) {
    double v = vals[i % 8];
    if (dt == AD_F32)
      ((float *)t->data)[i] = (float)(fabs(v) < 3.5e38 || !isfinite(v) ? v : copysign(INFINITY, v));
    else if (dt == AD_F64)
      ((double *)t->data)[i] = v;
    else
      ((int32_t *)t->data)[i] = (int32_t)v;
  }
  store(t, S_LEAF);
  if (!is_live(t)) ad_tensor_free(t), leaves_made--; /* no free slot */
}

/* A leaf of the slots (the k-th, from a byte), or NULL. */
static int pick_slot(slot_kind kind) {
  int n = 0;
  for (int i = 0; i < MAX_SLOTS; i++) n += slots[i].kind == kind;
  if (!n) return -1;
  int k = (int)(u8() % (unsigned)n);
  for (int i = 0; i < MAX_SLOTS; i++)
    if (slots[i].kind == kind && k-- == 0) return i;
  return -1;
}

/* Every leaf's gradient has its leaf's shape and dtype. */
static void check_leaf_grads(void) {
  for (int i = 0; i < MAX_SLOTS; i++) {
    const ad_tensor *t = slots[i].t;
    if (slots[i].kind != S_LEAF || !t->grad) continue;
    FUZZ_CHECK(ad_tensor_is_valid(t->grad) && same_shape(t, t->grad) && t->dtype == t->grad->dtype,
               "%s: a leaf's gradient has another shape or dtype", what);
  }
}

static void backward(void) {
  snprintf(what, sizeof what, "backward");
  ad_clear_error(C);
  ad_tensor *x = pick();
  if (!is_live(x)) return;
  ad_tensor *root = u8() < 32 ? x : ad_sum(C, x);
  ad_tensor *seed = NULL;
  if (u8() < 32) seed = pick(); /* a seed of any shape, or bad */
  /* the leaves' gradients before, as errors found before the pass must
   * leave them (ad_backward) */
  ad_tensor *grad_was[MAX_SLOTS];
  void *data_was[MAX_SLOTS];
  for (int i = 0; i < MAX_SLOTS; i++) {
    ad_tensor *g = slots[i].kind == S_LEAF ? slots[i].t->grad : NULL;
    grad_was[i] = g;
    data_was[i] = g ? malloc((size_t)g->size * ad_dtype_size(g->dtype) + 1) : NULL;
    if (g) {
      FUZZ_CHECK(data_was[i], "out of memory");
      memcpy(data_was[i], g->data, (size_t)g->size * ad_dtype_size(g->dtype));
    }
  }
  ad_status st = root ? ad_backward(C, root, seed) : ad_last_status(C);
  trace_result(st == AD_OK ? root : NULL);
  if (st != AD_OK) {
    check_error();
    /* out of memory or a NaN in anomaly mode may stop the pass midway */
    for (int i = 0; i < MAX_SLOTS; i++) {
      if (slots[i].kind != S_LEAF || st == AD_ERR_OOM || st == AD_ERR_NAN) continue;
      ad_tensor *g = slots[i].t->grad;
      FUZZ_CHECK(g == grad_was[i] && (!g || !memcmp(g->data, data_was[i],
                                                    (size_t)g->size * ad_dtype_size(g->dtype))),
                 "backward failed (%s) but changed a leaf's gradient", ad_last_error(C));
    }
    check_usable();
  }
  for (int i = 0; i < MAX_SLOTS; i++) free(data_was[i]);
  check_leaf_grads();
}

static void grad2(void) {
  snprintf(what, sizeof what, "ad_grad");
  ad_clear_error(C);
  ad_tensor *x = pick(), *ins[4], *out[4] = {0}, *out2[4] = {0};
  int n = 0;
  for (int i = 0; i < MAX_SLOTS && n < 4; i++)
    if (slots[i].kind == S_LEAF && ad_tensor_requires_grad(slots[i].t) && u8() < 192)
      ins[n++] = slots[i].t;
  if (!n || !is_live(x)) return;
  ad_tensor *root = ad_sum(C, x);
  ad_status st = root ? ad_grad(C, root, NULL, n, ins, out, true) : ad_last_status(C);
  trace_result(st == AD_OK ? root : NULL);
  if (st != AD_OK) {
    check_error();
    check_usable();
    return;
  }
  for (int i = 0; i < n; i++) {
    FUZZ_CHECK(out[i] && same_shape(out[i], ins[i]) && out[i]->dtype == ins[i]->dtype,
               "ad_grad: out[%d] has another shape or dtype than its input", i);
    if (u8() < 64) store(out[i], S_TEMP);
  }
  snprintf(what, sizeof what, "ad_grad (second order)");
  ad_tensor *r2 = ad_sum(C, ad_mul(C, out[0], out[0]));
  st = r2 ? ad_grad(C, r2, NULL, n, ins, out2, u8() & 1) : ad_last_status(C);
  trace_result(st == AD_OK ? r2 : NULL);
  if (st != AD_OK) {
    check_error();
    check_usable();
    return;
  }
  for (int i = 0; i < n; i++)
    FUZZ_CHECK(out2[i] && same_shape(out2[i], ins[i]) && out2[i]->dtype == ins[i]->dtype,
               "ad_grad (second order): out[%d] has another shape or dtype than its input", i);
}

static void tape_reset(void) {
  ad_tape_reset(C);
  for (int i = 0; i < MAX_SLOTS; i++)
    if (slots[i].kind == S_TEMP) slots[i].kind = S_EMPTY, slots[i].t = NULL;
}

static void step(void) {
  unsigned b = u8();
  ename = NULL;
  if (b < FOP_REQ_GRAD) {
    make_leaf();
  } else if (b < FOP_APPLY) {
    int i = pick_slot(S_LEAF);
    ad_clear_error(C);
    snprintf(what, sizeof what, "set_requires_grad");
    if (i >= 0 && ad_tensor_set_requires_grad(slots[i].t, true) != AD_OK) check_error();
  } else if (b < FOP_BACKWARD) {
    apply();
  } else if (b < FOP_GRAD2) {
    backward();
  } else if (b < FOP_RESET) {
    grad2();
  } else if (b < FOP_FREE) {
    tape_reset();
  } else if (b < FOP_GRAD_MODE) {
    int i = pick_slot(u8() < 224 ? S_LEAF : S_TEMP);
    if (i >= 0) {
      ad_tensor_free(slots[i].t); /* a temporary: ignored */
      if (slots[i].kind == S_LEAF) slots[i].kind = S_FREED;
    }
  } else if (b < FOP_ANOMALY) {
    ad_set_grad_enabled(C, !ad_grad_enabled(C));
  } else if (b < FOP_WRITE) {
    ad_set_anomaly_mode(C, !ad_anomaly_mode(C));
  } else {
    int i = pick_slot(S_LEAF);
    ad_clear_error(C);
    snprintf(what, sizeof what, "tensor_set");
    if (i >= 0 && slots[i].t->size > 0 &&
        ad_tensor_set(slots[i].t, (int64_t)(u8() % (unsigned)slots[i].t->size), draw_real()) !=
            AD_OK)
      check_error();
  }
}

/* ------------------------------------------------------------- driver */

static double fuzz_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The profile of an input that ran wall seconds (see the top comment). */
static void check_profile(double wall) {
  enum { ROOM = 512 };
  static ad_profile_row rows[ROOM];
  ad_profile_totals t;
  ad_clear_error(C);
  int64_t n = ad_profile_read(C, rows, ROOM, &t);
  FUZZ_CHECK(n >= 0 || ad_last_status(C) == AD_ERR_OOM, "profile_read: %lld: %s", (long long)n,
             ad_last_error(C));
  if (n < 0) return;
  FUZZ_CHECK(n <= ad_op_count(C) && n <= ROOM, "profile: %lld rows for %d ops", (long long)n,
             ad_op_count(C));
  double ops = 0, nodes = 0;
  for (int64_t i = 0; i < n; i++) {
    const ad_profile_row *r = &rows[i];
    int id = r->op ? ad_op_find(C, r->op) : -1;
    FUZZ_CHECK(id >= 0, "profile: row %lld names no op", (long long)i);
    for (int64_t j = 0; j < i; j++)
      FUZZ_CHECK(strcmp(rows[j].op, r->op) != 0, "profile: %s twice", r->op);
    FUZZ_CHECK(
        r->forward_calls >= 0 && r->backward_calls >= 0 &&
            r->forward_calls + r->backward_calls > 0 && r->forward_s >= 0 && r->backward_s >= 0 &&
            (r->forward_calls || r->forward_s == 0) && (r->backward_calls || r->backward_s == 0),
        "profile: %s: %lld calls %g s forward, %lld calls %g s backward", r->op,
        (long long)r->forward_calls, r->forward_s, (long long)r->backward_calls, r->backward_s);
    if (i > 0)
      FUZZ_CHECK(rows[i - 1].forward_s + rows[i - 1].backward_s >= r->forward_s + r->backward_s,
                 "profile: rows out of order at %s", r->op);
    ops += r->forward_s + r->backward_s, nodes += r->backward_s;
  }
  FUZZ_CHECK(t.backward_passes >= 0 && t.hook_s == 0 && nodes <= t.backward_s * (1 + 1e-9) &&
                 ops <= wall * (1 + 1e-9) && t.backward_s <= wall * (1 + 1e-9),
             "profile: ops %g s, nodes %g s, passes %lld %g s, wall %g s", ops, nodes,
             (long long)t.backward_passes, t.backward_s, wall);
  FUZZ_CHECK(ad_profile_stop(C) == AD_OK, "profile_stop: %s", ad_last_error(C));
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fuzz_alloc_max = (size_t)16 << 20;
  trace = getenv("FUZZ_OPS_TRACE") != NULL;
  make_aliens(0, NULL);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  in_p = data, in_n = size, in_i = 0;
  C = ad_ctx_new_with_alloc(fuzz_alloc, NULL);
  if (!C) return 0;
  w_ok = ad_full(C, AD_F64, 0, NULL, 2.5);
  FUZZ_CHECK(w_ok && ad_tensor_set_requires_grad(w_ok, true) == AD_OK, "%s", ad_last_error(C));
  memset(slots, 0, sizeof slots);
  leaves_made = 0;
  /* the profile on for odd lengths (an allocation it cannot have: off) */
  bool prof = (size & 1) && ad_profile_start(C) == AD_OK;
  double t0 = fuzz_now_s();
  for (int s = 0; s < MAX_STEPS && in_i < in_n; s++) step();
  if (prof) check_profile(fuzz_now_s() - t0);

  ad_set_grad_enabled(C, true);
  ad_set_anomaly_mode(C, false);
  tape_reset();
  finish_input(C, w_ok);
  return 0;
}
