/* test_ops_values.c: every op against PyTorch reference values.
 *
 * tests/fixtures/ops.txt (written by tools/gen_fixtures.py, format in its
 * docstring) holds, per case and dtype, the inputs, a cotangent v, torch's
 * output and torch's gradient of sum(v * out) for each float input. Each case
 * runs through ad_op_find + ad_op_apply and, where one exists, through the
 * named builder (ad_add, ad_sum_axis, ...); the output and the gradients from
 * both ad_grad and ad_backward (and, for a case with seed2 lines, the second
 * derivatives through ad_grad with create_graph) must match torch to 1e-5
 * (float32) or 1e-10 (float64), relative to max(|reference|, 1e-3). The
 * fixture must cover every
 * differentiable op of the registry in both dtypes. Set AD_OPS_FIXTURE to
 * read another file; the default path is relative to the source root, which
 * meson uses as the working directory. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "test_alloc.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE_DEFAULT "tests/fixtures/ops.txt"
#define TOL_F32         1e-5
#define TOL_F64         1e-10
/* the tolerances are relative to max(|reference|, floor): a value much
 * smaller than the terms it is summed from (a dot product that cancels)
 * keeps the absolute error of those terms, about 1e-7 in float32 for the
 * fixture's O(1) inputs, whose float32 references are correctly rounded
 * float64 results for ops that run on BLAS (tools/gen_fixtures.py) */
#define FLOOR_F32 1e-2
#define FLOOR_F64 1e-3

TEST_CTX_SUITE(ops_values);

/* ---------------------------------------------------------------- model */

typedef struct fx_tensor {
  ad_dtype dtype;
  int ndim;
  int64_t shape[AD_MAX_DIMS];
  int64_t size;
  double *v;
} fx_tensor;

/* The keys of 'attr KEY VALUES' lines: the member of ad_attrs each one
 * fills (BUILDER_ONLY: none, its values go to a builder only) and how
 * many integers follow the key (scalar, dtype and cmp take one word). */
#define BUILDER_ONLY AD_ATTRS_KIND_COUNT
typedef struct attr_key {
  const char *key;
  int kind; /* ad_attrs_kind or BUILDER_ONLY */
  int min, max;
} attr_key;

static const attr_key attr_keys[] = {
    {"scalar", AD_ATTRS_SCALAR, 0, 0}, /* a real */
    {"dtype", AD_ATTRS_DTYPE, 0, 0},   /* f32 or f64 */
    {"cmp", AD_ATTRS_CMP, 0, 0},       /* eq gt ge lt le */
    {"axis", AD_ATTRS_AXIS, 1, 1},     /* softmax, concat, gather, scatter_add, index_select ... */
    {"rows", AD_ATTRS_INDEX, 1, 2},    /* index_add, index_select_add, resample_axis_adjoint */
    {"matmul", AD_ATTRS_MATMUL, 2, 2}, /* trans_a trans_b, 0 or 1 */
    {"reduce", AD_ATTRS_REDUCE, 2, 2}, /* axis or 'all', keepdim 0 or 1 */
    {"narrow", AD_ATTRS_NARROW, 3, 3}, /* axis start len */
    {"pad", AD_ATTRS_PAD, 3, 3},       /* axis before after */
    {"shape", AD_ATTRS_SHAPE, 0, AD_MAX_DIMS},
    {"permute", AD_ATTRS_PERMUTE, 0, AD_MAX_DIMS},
    {"transpose", BUILDER_ONLY, 2, 2}, /* d0 d1 of ad_transpose */
    /* the axes of ad_flip (flip_dims) */
    {"dims", BUILDER_ONLY, 0, AD_MAX_DIMS},
    /* correction keepdim axes... of ad_var, ad_std */
    {"var", BUILDER_ONLY, 2, 2 + AD_MAX_DIMS},
    /* keepdim axes... of ad_sum_axes, ad_mean_axes, ad_max_axes, ad_min_axes */
    {"axes", BUILDER_ONLY, 1, 1 + AD_MAX_DIMS},
    /* kernel, stride, padding, dilation (h, w), ceil_mode, count_include_pad, in_size (h, w) */
    {"pool", AD_ATTRS_POOL, 12, 12},
    /* sh sw pt pb pl pr dh dw groups same oph opw kh kw */
    {"conv", AD_ATTRS_CONV, 14, 14},
    {"conv1d", BUILDER_ONLY, 6, 6},          /* stride pl pr dilation groups same of ad_conv1d */
    {"embedding", AD_ATTRS_EMBEDDING, 2, 3}, /* padding (0 or 1), padding_idx, freq (0 or 1) */
    {"layer_norm", AD_ATTRS_LAYER_NORM, 1, AD_MAX_DIMS}, /* eps (a real), normalized_shape */
    {"cross_entropy", AD_ATTRS_CROSS_ENTROPY, 3, 3},     /* ignore (0 or 1), ignore_index, sum */
    {"clamp", AD_ATTRS_CLAMP, 0, 0},                     /* lo hi, two reals */
    {"pad_nd", AD_ATTRS_PAD_ND, 4, 8}, /* value (a real), n, mode, the 2 n amounts */
    {"elu", AD_ATTRS_ELU, 0, 0},       /* alpha scale input_scale grad_input_scale, four reals */
    {"cosine", AD_ATTRS_COSINE, 1, 1}, /* eps (a real), axis */
    {"threshold", AD_ATTRS_THRESHOLD, 0, 0}, /* threshold value, two reals */
};
#define ATTR_MAX_VALUES 14 /* the most integers a key takes */

/* A case's attr line as written. */
typedef struct fx_attr {
  const attr_key *key; /* NULL: the case has none */
  int n;               /* integers read */
  bool all;            /* reduce: 'all' in place of the axis (v[0] is 0) */
  int64_t v[ATTR_MAX_VALUES];
  double scalar;
  double scalar2; /* clamp: hi (scalar is lo); threshold: value (scalar is threshold) */
  double elu[4];  /* elu: alpha, scale, input_scale, grad_input_scale */
  ad_dtype dtype;
  ad_cmp cmp;
} fx_attr;

typedef struct fx_case {
  char label[64], op[32];
  ad_dtype dtype;
  int line;       /* of the 'case' line */
  fx_attr attr;   /* for the builder path */
  ad_attrs attrs; /* for the registry path, made from attr at the case's end */
  int nin;
  fx_tensor in[AD_MAX_SRC];
  bool needs[AD_MAX_SRC]; /* role 'in' (else 'const') */
  bool has_seed;
  fx_tensor seed, out;
  bool has_out;
  int ngrad;
  fx_tensor grad[AD_MAX_SRC];
  int nseed2, ngrad2; /* second order: one of each per 'in' input, or none */
  fx_tensor seed2[AD_MAX_SRC], grad2[AD_MAX_SRC];
  bool ended;
} fx_case;

typedef struct fx_file {
  char torch[32];
  int declared; /* the 'cases' header */
  int ncases, cap;
  fx_case *cases;
} fx_file;

static void fx_free(fx_file *fx) {
  for (int k = 0; k < fx->ncases; k++) {
    fx_case *c = &fx->cases[k];
    for (int i = 0; i < c->nin; i++) free(c->in[i].v);
    for (int i = 0; i < c->ngrad; i++) free(c->grad[i].v);
    for (int i = 0; i < c->nseed2; i++) free(c->seed2[i].v);
    for (int i = 0; i < c->ngrad2; i++) free(c->grad2[i].v);
    free(c->seed.v);
    free(c->out.v);
  }
  free(fx->cases);
  memset(fx, 0, sizeof *fx);
}

/* --------------------------------------------------------------- parser */

typedef struct parser {
  char *p; /* cursor in the current line */
  int line;
  char *err;
  size_t errn;
} parser;

static bool perr(parser *ps, const char *what) {
  snprintf(ps->err, ps->errn, "line %d: %s", ps->line, what);
  return false;
}

/* Next whitespace-separated token, NUL-terminated in place; NULL at the end. */
static char *tok(parser *ps) {
  while (*ps->p == ' ' || *ps->p == '\t') ps->p++;
  if (!*ps->p) return NULL;
  char *t = ps->p;
  while (*ps->p && *ps->p != ' ' && *ps->p != '\t') ps->p++;
  if (*ps->p) *ps->p++ = '\0';
  return t;
}

/* The integer t (a token, NULL when it is missing) in lo..hi. */
static bool int_of(parser *ps, const char *t, long long lo, long long hi, long long *out) {
  char *end;
  if (!t) return perr(ps, "an integer is missing");
  errno = 0;
  long long v = strtoll(t, &end, 10);
  if (*end || errno || v < lo || v > hi) return perr(ps, "bad or out-of-range integer");
  *out = v;
  return true;
}

static bool tok_int(parser *ps, long long lo, long long hi, long long *out) {
  return int_of(ps, tok(ps), lo, hi, out);
}

static bool tok_real(parser *ps, double *out) {
  char *t = tok(ps), *end;
  if (!t) return perr(ps, "a value is missing");
  *out = strtod(t, &end);
  if (end == t || *end) return perr(ps, "bad number");
  return true;
}

static bool parse_dtype(const char *s, ad_dtype *dt) {
  if (!s) return false;
  if (!strcmp(s, "f32"))
    *dt = AD_F32;
  else if (!strcmp(s, "f64"))
    *dt = AD_F64;
  else if (!strcmp(s, "i32"))
    *dt = AD_I32;
  else
    return false;
  return true;
}

static bool same_layout(const fx_tensor *a, const fx_tensor *b) {
  if (a->dtype != b->dtype || a->ndim != b->ndim) return false;
  for (int k = 0; k < a->ndim; k++)
    if (a->shape[k] != b->shape[k]) return false;
  return true;
}

/* tensor ROLE DTYPE NDIM d0 .. : v0 v1 ...  (after the 'tensor' token) */
static bool parse_tensor(parser *ps, fx_case *c) {
  char *role = tok(ps);
  if (!role) return perr(ps, "tensor without a role");
  fx_tensor t = {0};
  long long nd;
  if (!parse_dtype(tok(ps), &t.dtype)) return perr(ps, "bad tensor dtype");
  if (!tok_int(ps, 0, AD_MAX_DIMS, &nd)) return false;
  t.ndim = (int)nd;
  t.size = 1;
  for (int k = 0; k < t.ndim; k++) {
    long long d;
    if (!tok_int(ps, 0, 1 << 20, &d)) return false;
    t.shape[k] = d;
    t.size *= d;
  }
  char *colon = tok(ps);
  if (!colon || strcmp(colon, ":")) return perr(ps, "':' expected after the shape");
  t.v = malloc(sizeof(double) * (size_t)(t.size ? t.size : 1));
  if (!t.v) return perr(ps, "out of memory");
  for (int64_t i = 0; i < t.size; i++) {
    bool ok = tok_real(ps, &t.v[i]);
    if (ok && t.dtype == AD_I32 && t.v[i] != floor(t.v[i]))
      ok = perr(ps, "i32 value is not an integer");
    if (!ok) {
      free(t.v);
      return false;
    }
  }
  if (tok(ps)) {
    free(t.v);
    return perr(ps, "more values than the shape holds");
  }
  /* roles in order: in/const..., seed?, out, grad..., seed2..., grad2... */
  const char *bad = NULL;
  if (!strcmp(role, "in") || !strcmp(role, "const")) {
    if (c->has_seed || c->has_out)
      bad = "input after seed/out";
    else if (c->nin == AD_MAX_SRC)
      bad = "too many inputs";
    else if (t.dtype == AD_I32 && !strcmp(role, "in"))
      bad = "an i32 input cannot have role 'in'";
    else {
      c->needs[c->nin] = !strcmp(role, "in");
      c->in[c->nin++] = t;
      return true;
    }
  } else if (!strcmp(role, "seed")) {
    if (c->has_seed || c->has_out)
      bad = "seed must come once, before out";
    else {
      c->seed = t;
      c->has_seed = true;
      return true;
    }
  } else if (!strcmp(role, "out")) {
    if (c->has_out)
      bad = "two outputs";
    else if (c->has_seed && !same_layout(&c->seed, &t))
      bad = "seed and out differ in layout";
    else {
      c->out = t;
      c->has_out = true;
      return true;
    }
  } else if (!strcmp(role, "seed2") || !strcmp(role, "grad2")) {
    /* the k-th of either belongs to the k-th 'in' input */
    bool is_seed = role[0] == 's';
    int k = is_seed ? c->nseed2 : c->ngrad2, want = -1, seen = 0, nneeds = 0;
    for (int i = 0; i < c->nin; i++) {
      if (c->needs[i] && seen++ == k) want = i;
      nneeds += c->needs[i];
    }
    if (c->ngrad != nneeds || !c->has_seed || (!is_seed && c->nseed2 != nneeds) ||
        (is_seed && c->ngrad2))
      bad = "seed2 must follow every grad, grad2 every seed2";
    else if (want < 0)
      bad = "more seed2/grad2 than 'in' inputs";
    else if (!same_layout(&c->in[want], &t))
      bad = "seed2/grad2 differs in layout from its input";
    else {
      if (is_seed)
        c->seed2[c->nseed2++] = t;
      else
        c->grad2[c->ngrad2++] = t;
      return true;
    }
  } else if (!strcmp(role, "grad")) {
    int want = -1, seen = 0;
    for (int i = 0; i < c->nin; i++)
      if (c->needs[i] && seen++ == c->ngrad) want = i;
    if (!c->has_out || !c->has_seed || c->nseed2)
      bad = "grad before out, or without seed";
    else if (want < 0)
      bad = "more grads than 'in' inputs";
    else if (!same_layout(&c->in[want], &t))
      bad = "grad differs in layout from its input";
    else {
      c->grad[c->ngrad++] = t;
      return true;
    }
  } else {
    bad = "unknown tensor role";
  }
  free(t.v);
  return perr(ps, bad);
}

/* The integer values of an attr line, after its key (and a real). */
static bool attr_ints(parser *ps, fx_attr *a) {
  for (char *t; (t = tok(ps));) {
    long long v;
    if (a->n == a->key->max || a->n == (int)(sizeof a->v / sizeof a->v[0]))
      return perr(ps, "extra attr values");
    if (a->key->kind == AD_ATTRS_REDUCE && a->n == 0 && !strcmp(t, "all")) {
      a->all = true;
      v = 0;
    } else if (!int_of(ps, t, -(1LL << 30), 1LL << 30, &v)) {
      return false;
    }
    a->v[a->n++] = v;
  }
  if (a->n < a->key->min) return perr(ps, "an attr value is missing");
  for (int k = 0; k < a->n; k++) { /* matmul's transposes, reduce's keepdim, ... */
    bool flag = a->key->kind == AD_ATTRS_MATMUL || (a->key->kind == AD_ATTRS_REDUCE && k == 1) ||
                (a->key->kind == AD_ATTRS_POOL && (k == 8 || k == 9)) ||
                (a->key->kind == AD_ATTRS_EMBEDDING && k == 0) ||
                (a->key->kind == AD_ATTRS_CROSS_ENTROPY && k != 1);
    if (flag && a->v[k] != 0 && a->v[k] != 1) return perr(ps, "a flag attr must be 0 or 1");
  }
  return true;
}

/* attr KEY VALUES  (after the 'attr' token) */
static bool parse_attr(parser *ps, fx_case *c) {
  fx_attr *a = &c->attr;
  if (c->nin || c->has_out) return perr(ps, "attrs must open a case");
  if (a->key) return perr(ps, "a case has one attr line");
  char *key = tok(ps);
  for (size_t k = 0; key && k < sizeof attr_keys / sizeof attr_keys[0]; k++)
    if (!strcmp(key, attr_keys[k].key)) a->key = &attr_keys[k];
  if (!a->key) return perr(ps, "unknown attr key");
  static const char *const cmps[] = {"eq", "gt", "ge", "lt", "le"};
  static const ad_cmp cmp_of[] = {AD_CMP_EQ, AD_CMP_GT, AD_CMP_GE, AD_CMP_LT, AD_CMP_LE};
  switch (a->key->kind) {
  case AD_ATTRS_SCALAR:
    if (!tok_real(ps, &a->scalar)) return false;
    break;
  case AD_ATTRS_DTYPE:
    if (!parse_dtype(tok(ps), &a->dtype)) return perr(ps, "bad attr dtype");
    break;
  case AD_ATTRS_CMP: {
    char *t = tok(ps);
    size_t k = 0;
    while (t && k < 5 && strcmp(t, cmps[k])) k++;
    if (!t || k == 5) return perr(ps, "bad attr cmp (eq gt ge lt le)");
    a->cmp = cmp_of[k];
    break;
  }
  case AD_ATTRS_CLAMP:
  case AD_ATTRS_THRESHOLD:
    if (!tok_real(ps, &a->scalar) || !tok_real(ps, &a->scalar2)) return false;
    break;
  case AD_ATTRS_ELU:
    for (int k = 0; k < 4; k++)
      if (!tok_real(ps, &a->elu[k])) return false;
    break;
  case AD_ATTRS_LAYER_NORM: /* eps, then the normalized shape */
  case AD_ATTRS_PAD_ND:     /* value, then n, mode and the amounts */
  case AD_ATTRS_COSINE:     /* eps, then the axis */
    if (!tok_real(ps, &a->scalar)) return false;
    return attr_ints(ps, a);
  default:
    return attr_ints(ps, a);
  }
  return tok(ps) ? perr(ps, "extra attr values") : true;
}

/* The conv attrs of an 'attr conv' line's 14 values. */
static ad_conv_attrs conv_attrs_of(const int64_t *v) {
  return (ad_conv_attrs){.stride = {v[0], v[1]},
                         .padding = {v[2], v[3], v[4], v[5]},
                         .dilation = {v[6], v[7]},
                         .groups = v[8],
                         .same = v[9] != 0,
                         .output_padding = {v[10], v[11]},
                         .kernel = {v[12], v[13]}};
}

/* The typed attributes of the registry path, as the builders make them:
 * only the op's member is set; a reduction's axis becomes the bit of the
 * normalised axis and 'all' every dimension of the input (none for 0-d). */
static bool typed_attrs(parser *ps, fx_case *c) {
  const fx_attr *a = &c->attr;
  const int64_t *v = a->v;
  ad_attrs *at = &c->attrs;
  memset(at, 0, sizeof *at);
  switch (a->key ? a->key->kind : AD_ATTRS_NONE) {
  case AD_ATTRS_SCALAR:
    at->scalar = a->scalar;
    break;
  case AD_ATTRS_DTYPE:
    at->dtype = a->dtype;
    break;
  case AD_ATTRS_CMP:
    at->cmp = a->cmp;
    break;
  case AD_ATTRS_AXIS:
    at->axis = (int)v[0];
    break;
  case AD_ATTRS_ROWS:
    at->rows = v[0];
    break;
  case AD_ATTRS_INDEX:
    at->index = (ad_index_attrs){v[0], a->n > 1 ? (int)v[1] : 0};
    break;
  case AD_ATTRS_MATMUL:
    at->matmul = (ad_matmul_attrs){v[0] != 0, v[1] != 0};
    break;
  case AD_ATTRS_REDUCE: {
    int nd = c->in[0].ndim;
    int64_t axis = v[0] < 0 ? v[0] + nd : v[0];
    if (!a->all && (axis < 0 || axis >= nd)) return perr(ps, "reduce axis out of range");
    at->reduce.axes = a->all ? (1u << nd) - 1 : 1u << axis;
    at->reduce.keepdim = v[1] != 0;
    break;
  }
  case AD_ATTRS_NARROW:
    at->narrow = (ad_narrow_attrs){(int)v[0], v[1], v[2]};
    break;
  case AD_ATTRS_PAD:
    at->pad = (ad_pad_attrs){(int)v[0], v[1], v[2]};
    break;
  case AD_ATTRS_SHAPE:
    at->shape.ndim = a->n;
    for (int k = 0; k < a->n; k++) at->shape.dims[k] = v[k];
    break;
  case AD_ATTRS_PERMUTE:
    at->permute.ndim = a->n;
    for (int k = 0; k < a->n; k++) at->permute.perm[k] = (int)v[k];
    break;
  case AD_ATTRS_POOL:
    at->pool = (ad_pool_attrs){{v[0], v[1]}, {v[2], v[3]}, {v[4], v[5]},   {v[6], v[7]},
                               v[8] != 0,    v[9] != 0,    {v[10], v[11]}, false};
    break;
  case AD_ATTRS_CONV:
    at->conv = conv_attrs_of(v);
    break;
  case AD_ATTRS_EMBEDDING:
    at->embedding = (ad_embedding_attrs){v[0] != 0, v[1], a->n > 2 && v[2] != 0};
    break;
  case AD_ATTRS_LAYER_NORM:
    at->layer_norm.ndim = a->n;
    for (int k = 0; k < a->n; k++) at->layer_norm.dims[k] = v[k];
    at->layer_norm.eps = a->scalar;
    break;
  case AD_ATTRS_CROSS_ENTROPY:
    at->cross_entropy = (ad_cross_entropy_attrs){v[0] != 0, (int32_t)v[1], v[2] != 0};
    break;
  case AD_ATTRS_CLAMP:
    at->clamp = (ad_clamp_attrs){a->scalar, a->scalar2, false};
    break;
  case AD_ATTRS_ELU:
    at->elu = (ad_elu_attrs){a->elu[0], a->elu[1], a->elu[2], a->elu[3]};
    break;
  case AD_ATTRS_COSINE:
    at->cosine = (ad_cosine_attrs){(int)v[0], a->scalar};
    break;
  case AD_ATTRS_THRESHOLD:
    at->threshold = (ad_threshold_attrs){a->scalar, a->scalar2};
    break;
  case AD_ATTRS_PAD_ND:
    if (a->n != 2 + 2 * v[0]) return perr(ps, "pad_nd: n, mode, then 2 n amounts");
    at->pad_nd = (ad_pad_nd_attrs){.n = (int)v[0], .mode = (ad_pad_mode)v[1], .value = a->scalar};
    for (int k = 0; k < 2 * v[0]; k++) at->pad_nd.pad[k] = v[2 + k];
    break;
  default:
    break; /* none, or builder-only */
  }
  return true;
}

static bool finish_case(parser *ps, fx_case *c) {
  int nneeds = 0;
  for (int i = 0; i < c->nin; i++) nneeds += c->needs[i];
  if (c->nin == 0) return perr(ps, "case without inputs");
  if (!c->has_out) return perr(ps, "case without out");
  if (c->has_seed && c->ngrad != nneeds) return perr(ps, "fewer grads than 'in' inputs");
  if (c->nseed2 != c->ngrad2 || (c->nseed2 && c->nseed2 != nneeds))
    return perr(ps, "one seed2 and one grad2 per 'in' input, or none");
  return typed_attrs(ps, c);
}

/* One line (without its newline) in the state of fx. */
static bool parse_line(parser *ps, fx_file *fx, bool *in_case, bool *header) {
  char *kw = tok(ps);
  if (!kw || kw[0] == '#') return true;
  if (!*header) {
    char *name = tok(ps), *ver = tok(ps);
    if (strcmp(kw, "fixture") || !name || strcmp(name, "ops") || !ver || strcmp(ver, "2") ||
        tok(ps))
      return perr(ps, "the file must start with 'fixture ops 2'");
    *header = true;
    return true;
  }
  fx_case *c = *in_case ? &fx->cases[fx->ncases - 1] : NULL;
  long long v;
  if (!strcmp(kw, "case")) {
    if (*in_case) return perr(ps, "'case' before the previous case's 'end'");
    if (fx->declared <= 0) return perr(ps, "'cases N' must precede the cases");
    if (fx->ncases == fx->cap) {
      int cap = fx->cap ? fx->cap * 2 : 64;
      fx_case *nc = realloc(fx->cases, sizeof *nc * (size_t)cap);
      if (!nc) return perr(ps, "out of memory");
      fx->cases = nc;
      fx->cap = cap;
    }
    c = &fx->cases[fx->ncases++];
    memset(c, 0, sizeof *c);
    *in_case = true;
    c->line = ps->line;
    char *label = tok(ps), *op = tok(ps);
    if (!label || !op || strlen(label) >= sizeof c->label || strlen(op) >= sizeof c->op)
      return perr(ps, "'case LABEL OP DTYPE' expected");
    strcpy(c->label, label);
    strcpy(c->op, op);
    if (!parse_dtype(tok(ps), &c->dtype) || c->dtype == AD_I32 || tok(ps))
      return perr(ps, "case dtype must be f32 or f64");
    return true;
  }
  if (!strcmp(kw, "attr")) return c ? parse_attr(ps, c) : perr(ps, "attr outside a case");
  if (!strcmp(kw, "tensor")) return c ? parse_tensor(ps, c) : perr(ps, "tensor outside a case");
  if (!strcmp(kw, "end")) {
    if (!c) return perr(ps, "'end' outside a case");
    *in_case = false;
    c->ended = true;
    return finish_case(ps, c);
  }
  if (*in_case || fx->ncases) return perr(ps, "unknown keyword");
  if (!strcmp(kw, "torch") || !strcmp(kw, "numpy")) {
    char *ver = tok(ps);
    if (!ver) return perr(ps, "version missing");
    if (kw[0] == 't') snprintf(fx->torch, sizeof fx->torch, "%s", ver);
    return true;
  }
  if (!strcmp(kw, "cases")) {
    if (!tok_int(ps, 1, 1 << 20, &v)) return false;
    fx->declared = (int)v;
    return true;
  }
  return perr(ps, "unknown header keyword");
}

/* Parses a whole fixture; on failure fx is empty and err says where. */
static bool fx_parse(FILE *f, fx_file *fx, char *err, size_t errn) {
  memset(fx, 0, sizeof *fx);
  err[0] = '\0';
  parser ps = {.err = err, .errn = errn};
  char *buf = NULL;
  size_t cap = 0;
  bool in_case = false, header = false, ok = true;
  ssize_t len;
  while (ok && (len = getline(&buf, &cap, f)) >= 0) {
    ps.line++;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = '\0';
    ps.p = buf;
    ok = parse_line(&ps, fx, &in_case, &header);
  }
  free(buf);
  if (ok && !header)
    ok = perr(&ps, "empty file: no 'fixture ops 2' header");
  else if (ok && in_case)
    ok = perr(&ps, "file ends inside a case (truncated?)");
  else if (ok && fx->ncases != fx->declared) {
    snprintf(err, errn, "header declares %d cases, the file has %d (truncated?)", fx->declared,
             fx->ncases);
    ok = false;
  }
  if (!ok) fx_free(fx);
  return ok;
}

static const char *fixture_path(void) {
  const char *p = getenv("AD_OPS_FIXTURE");
  return p && *p ? p : FIXTURE_DEFAULT;
}

/* The fixture, parsed once per process; NULL with err set on failure. */
static const fx_file *fixture(char *err, size_t errn) {
  static fx_file fx;
  static bool done, ok;
  static char saved[512];
  if (!done) {
    done = true;
    FILE *f = fopen(fixture_path(), "r");
    if (!f) {
      snprintf(saved, sizeof saved, "cannot open %s: %s", fixture_path(), strerror(errno));
    } else {
      char e[400];
      ok = fx_parse(f, &fx, e, sizeof e);
      if (!ok) snprintf(saved, sizeof saved, "%s: %s", fixture_path(), e);
      fclose(f);
    }
  }
  snprintf(err, errn, "%s", saved);
  return ok ? &fx : NULL;
}

/* ---------------------------------------------------------- comparison */

static const char *dt_name(ad_dtype dt) { return ad_dtype_name(dt); }

static void shape_text(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t off = (size_t)snprintf(buf, n, "[");
  for (int k = 0; k < ndim && off < n; k++)
    off += (size_t)snprintf(buf + off, n - off, k ? ",%lld" : "%lld", (long long)shape[k]);
  if (off < n) snprintf(buf + off, n - off, "]");
}

/* Checks t against ref: dtype, shape, then every element to the dtype's
 * tolerance relative to max(|ref|, the dtype's floor). On failure writes the worst element. */
static bool match(const ad_tensor *t, const fx_tensor *ref, char *msg, size_t n) {
  char a[96], b[96];
  if (!t) {
    snprintf(msg, n, "no tensor");
    return false;
  }
  shape_text(t->ndim, t->shape, a, sizeof a);
  shape_text(ref->ndim, ref->shape, b, sizeof b);
  if (t->dtype != ref->dtype || t->ndim != ref->ndim || strcmp(a, b)) {
    snprintf(msg, n, "got %s %s, want %s %s", dt_name(t->dtype), a, dt_name(ref->dtype), b);
    return false;
  }
  double tol = ref->dtype == AD_F32 ? TOL_F32 : TOL_F64, worst = -1;
  const double scale_floor = ref->dtype == AD_F32 ? FLOOR_F32 : FLOOR_F64;
  int64_t wi = -1;
  for (int64_t i = 0; i < ref->size; i++) {
    double got = ad_tensor_get(t, i), want = ref->v[i], score;
    if (isfinite(want))
      score = fabs(got - want) / (tol * fmax(fabs(want), scale_floor));
    else
      score = (got == want || (isnan(got) && isnan(want))) ? 0 : INFINITY;
    if (isnan(score)) score = INFINITY;
    if (score > worst) worst = score, wi = i;
  }
  if (worst <= 1.0) return true;
  double got = ad_tensor_get(t, wi), want = ref->v[wi];
  snprintf(msg, n, "worst element %lld of %s: got %.17g, want %.17g (abs err %.3g, tol %.3g)",
           (long long)wi, b, got, want, fabs(got - want), tol * fmax(fabs(want), scale_floor));
  return false;
}

static bool all_zero(const fx_tensor *t) {
  for (int64_t i = 0; i < t->size; i++)
    if (t->v[i] != 0) return false;
  return true;
}

/* ----------------------------------------------------------- execution */

static ad_tensor *make_tensor(ad_ctx *cx, const fx_tensor *ft) {
  ad_tensor *t = ad_zeros(cx, ft->dtype, ft->ndim, ft->shape);
  for (int64_t i = 0; t && i < ft->size; i++) ad_tensor_set(t, i, ft->v[i]);
  return t;
}

/* The op through the registry: ad_op_find + ad_op_apply. NULL id: unknown. */
static ad_tensor *run_registry(ad_ctx *cx, const fx_case *c, ad_tensor **in, bool *known) {
  int id = ad_op_find(cx, c->op);
  *known = id >= 0;
  return id >= 0 ? ad_op_apply(cx, id, c->nin, in, &c->attrs) : NULL;
}

/* The member of ad_attrs a case's attr line fills (AD_ATTRS_NONE: none). */
static int attr_kind(const fx_case *c) { return c->attr.key ? c->attr.key->kind : AD_ATTRS_NONE; }

/* The attr key that fills member kind, "none" for AD_ATTRS_NONE. */
static const char *kind_key(int kind) {
  for (size_t k = 0; k < sizeof attr_keys / sizeof attr_keys[0]; k++)
    if (attr_keys[k].kind == kind) return attr_keys[k].key;
  return kind == AD_ATTRS_NONE ? "none" : "a member the fixture does not write";
}

/* True when a and b hold the same value in member kind; the bytes of the
 * other members are not part of the value. */
/* Equal reals, a NaN equal to a NaN (a bound or value written as nan). */
static bool same_real(double x, double y) { return x == y || (isnan(x) && isnan(y)); }

static bool same_member(int kind, const ad_attrs *a, const ad_attrs *b) {
  switch (kind) {
  case AD_ATTRS_NONE:
    return true;
  case AD_ATTRS_SCALAR:
    return a->scalar == b->scalar;
  case AD_ATTRS_DTYPE:
    return a->dtype == b->dtype;
  case AD_ATTRS_CMP:
    return a->cmp == b->cmp;
  case AD_ATTRS_AXIS:
    return a->axis == b->axis;
  case AD_ATTRS_ROWS:
    return a->rows == b->rows;
  case AD_ATTRS_INDEX:
    return a->index.rows == b->index.rows && a->index.axis == b->index.axis;
  case AD_ATTRS_MATMUL:
    return a->matmul.trans_a == b->matmul.trans_a && a->matmul.trans_b == b->matmul.trans_b;
  case AD_ATTRS_REDUCE:
    return a->reduce.axes == b->reduce.axes && a->reduce.keepdim == b->reduce.keepdim;
  case AD_ATTRS_NARROW:
    return a->narrow.axis == b->narrow.axis && a->narrow.start == b->narrow.start &&
           a->narrow.len == b->narrow.len;
  case AD_ATTRS_PAD:
    return a->pad.axis == b->pad.axis && a->pad.before == b->pad.before &&
           a->pad.after == b->pad.after;
  case AD_ATTRS_SHAPE:
    if (a->shape.ndim != b->shape.ndim) return false;
    for (int k = 0; k < a->shape.ndim; k++)
      if (a->shape.dims[k] != b->shape.dims[k]) return false;
    return true;
  case AD_ATTRS_PERMUTE:
    if (a->permute.ndim != b->permute.ndim) return false;
    for (int k = 0; k < a->permute.ndim; k++)
      if (a->permute.perm[k] != b->permute.perm[k]) return false;
    return true;
  case AD_ATTRS_POOL: {
    const ad_pool_attrs *p = &a->pool, *q = &b->pool;
    for (int k = 0; k < 2; k++)
      if (p->kernel[k] != q->kernel[k] || p->stride[k] != q->stride[k] ||
          p->padding[k] != q->padding[k] || p->dilation[k] != q->dilation[k] ||
          p->in_size[k] != q->in_size[k])
        return false;
    return p->ceil_mode == q->ceil_mode && p->count_include_pad == q->count_include_pad &&
           p->adaptive == q->adaptive;
  }
  case AD_ATTRS_CONV: {
    const ad_conv_attrs *p = &a->conv, *q = &b->conv;
    bool same = p->groups == q->groups && p->same == q->same;
    for (int k = 0; k < 2; k++)
      same &= p->stride[k] == q->stride[k] && p->dilation[k] == q->dilation[k] &&
              p->output_padding[k] == q->output_padding[k] && p->kernel[k] == q->kernel[k];
    for (int k = 0; k < 4; k++) same &= p->padding[k] == q->padding[k];
    return same;
  }
  case AD_ATTRS_EMBEDDING:
    return a->embedding.padding == b->embedding.padding &&
           a->embedding.scale_grad_by_freq == b->embedding.scale_grad_by_freq &&
           (!a->embedding.padding || a->embedding.padding_idx == b->embedding.padding_idx);
  case AD_ATTRS_LAYER_NORM:
    if (a->layer_norm.ndim != b->layer_norm.ndim || a->layer_norm.eps != b->layer_norm.eps)
      return false;
    for (int k = 0; k < a->layer_norm.ndim; k++)
      if (a->layer_norm.dims[k] != b->layer_norm.dims[k]) return false;
    return true;
  case AD_ATTRS_CROSS_ENTROPY:
    return a->cross_entropy.ignore == b->cross_entropy.ignore &&
           a->cross_entropy.sum == b->cross_entropy.sum &&
           (!a->cross_entropy.ignore ||
            a->cross_entropy.ignore_index == b->cross_entropy.ignore_index);
  /* member by member: an initialiser of one union member leaves the
   * union's other bytes (and a struct's padding) unspecified */
  case AD_ATTRS_CLAMP:
    return same_real(a->clamp.lo, b->clamp.lo) && same_real(a->clamp.hi, b->clamp.hi) &&
           a->clamp.inner == b->clamp.inner;
  case AD_ATTRS_ELU:
    return same_real(a->elu.alpha, b->elu.alpha) && same_real(a->elu.scale, b->elu.scale) &&
           same_real(a->elu.input_scale, b->elu.input_scale) &&
           same_real(a->elu.grad_input_scale, b->elu.grad_input_scale);
  case AD_ATTRS_COSINE:
    return a->cosine.axis == b->cosine.axis && same_real(a->cosine.eps, b->cosine.eps);
  case AD_ATTRS_THRESHOLD:
    return same_real(a->threshold.threshold, b->threshold.threshold) &&
           same_real(a->threshold.value, b->threshold.value);
  case AD_ATTRS_PAD_ND: {
    const ad_pad_nd_attrs *p = &a->pad_nd, *q = &b->pad_nd;
    bool same = p->n == q->n && p->mode == q->mode && same_real(p->value, q->value);
    for (int k = 0; same && k < 2 * p->n && k < 6; k++) same = p->pad[k] == q->pad[k];
    return same;
  }
  default:
    return memcmp(a, b, sizeof *a) == 0; /* members the fixture does not write */
  }
}

/* Builders that take just their inputs: every op of autodiff/ops.def marked
 * B1 or B2 (ad_<name>), and the composites that have fixture cases. */
#define B0(name)
#define BX(name)
#define B1(name) {#name, ad_##name},
#define B2(name)
#define AD_OP(E, name, builder) builder(name)
static const struct {
  const char *name;
  ad_tensor *(*fn)(ad_ctx *, ad_tensor *);
} unary_builders[] = {
#include "ops.def"
    {"mean", ad_mean},
    {"global_avg_pool2d", ad_global_avg_pool2d},
};
#undef B1
#undef B2
#define B1(name)
#define B2(name) {#name, ad_##name},
static const struct {
  const char *name;
  ad_tensor *(*fn)(ad_ctx *, ad_tensor *, ad_tensor *);
} binary_builders[] = {
#include "ops.def"
};
#undef AD_OP
#undef B0
#undef B1
#undef B2
#undef BX

/* compare's builders, by ad_cmp */
static ad_tensor *(*const cmp_builders[])(ad_ctx *, ad_tensor *, ad_tensor *) = {
    [AD_CMP_EQ] = ad_eq, [AD_CMP_GT] = ad_gt, [AD_CMP_GE] = ad_ge,
    [AD_CMP_LT] = ad_lt, [AD_CMP_LE] = ad_le,
};

/* The op through its named builder, with the values of the case's attr
 * line; *known = false when no builder takes these attrs (e.g. a keepdim
 * reduction over everything). */
static ad_tensor *run_builder(ad_ctx *cx, const fx_case *c, ad_tensor **in, bool *known) {
  const fx_attr *a = &c->attr;
  const int64_t *v = a->v;
  const char *op = c->op;
  ad_tensor *x = in[0], *y = c->nin > 1 ? in[1] : NULL;
  *known = true;
  for (size_t k = 0; k < sizeof unary_builders / sizeof unary_builders[0]; k++)
    if (!strcmp(op, unary_builders[k].name)) return unary_builders[k].fn(cx, x);
  if (!strcmp(op, "index_select") && v[0]) /* axis 0 through ad_index_select below */
    return ad_index_select_axis(cx, x, (int)v[0], y);
  for (size_t k = 0; k < sizeof binary_builders / sizeof binary_builders[0]; k++)
    if (!strcmp(op, binary_builders[k].name)) return binary_builders[k].fn(cx, x, y);
  if (!strcmp(op, "where")) return ad_where(cx, x, y, in[2]);
  if (!strcmp(op, "binary_cross_entropy_logits_pw"))
    return ad_binary_cross_entropy_logits_pw(cx, x, y, in[2]);
  if (!strcmp(op, "lstm_cell")) return ad_lstm_cell(cx, x, y);
  if (!strcmp(op, "gru_cell")) return ad_gru_cell(cx, x, y, in[2]);
  if (!strcmp(op, "ctc_alpha")) return ad_ctc_alpha(cx, x, y, in[2]);
  if (!strcmp(op, "lstm_seq"))
    return ad_lstm_seq(cx, x, y, in[2], in[3], in[4], c->nin > 5 ? in[5] : NULL, a->v[0] == 1);
  if (!strcmp(op, "gru_seq"))
    return ad_gru_seq(cx, x, y, in[2], in[3], in[4], c->nin > 5 ? in[5] : NULL, a->v[0] == 1);
  switch (attr_kind(c)) {
  case AD_ATTRS_SCALAR:
    if (!strcmp(op, "add_scalar")) return ad_add_scalar(cx, x, a->scalar);
    if (!strcmp(op, "mul_scalar")) return ad_mul_scalar(cx, x, a->scalar);
    if (!strcmp(op, "pow_scalar")) return ad_pow_scalar(cx, x, a->scalar);
    if (!strcmp(op, "sub_scalar")) return ad_sub_scalar(cx, x, a->scalar);
    if (!strcmp(op, "rsub_scalar")) return ad_rsub_scalar(cx, x, a->scalar);
    if (!strcmp(op, "div_scalar")) return ad_div_scalar(cx, x, a->scalar);
    if (!strcmp(op, "leaky_relu")) return ad_leaky_relu(cx, x, a->scalar);
    if (!strcmp(op, "smooth_l1")) return ad_smooth_l1(cx, x, y, a->scalar);
    if (!strcmp(op, "huber")) return ad_huber(cx, x, y, a->scalar);
    if (!strcmp(op, "softshrink")) return ad_softshrink(cx, x, a->scalar);
    if (!strcmp(op, "hardshrink")) return ad_hardshrink(cx, x, a->scalar);
    if (!strcmp(op, "group_norm")) { /* x [N, G, K, *] as [N, G * K, *], w and b [G * K] */
      int64_t xs[AD_MAX_DIMS], nc = x->shape[1] * x->shape[2];
      xs[0] = x->shape[0], xs[1] = nc;
      for (int k = 3; k < x->ndim; k++) xs[k - 1] = x->shape[k];
      ad_tensor *w = c->nin > 1 ? ad_reshape(cx, y, 1, &nc) : NULL;
      ad_tensor *b = c->nin > 2 ? ad_reshape(cx, in[2], 1, &nc) : NULL;
      ad_tensor *r =
          ad_group_norm(cx, ad_reshape(cx, x, x->ndim - 1, xs), x->shape[1], w, b, a->scalar);
      return ad_reshape(cx, r, x->ndim, x->shape);
    }
    if (!strcmp(op, "batch_norm")) /* training mode, without running statistics */
      return ad_batch_norm(cx, x, c->nin > 1 ? y : NULL, c->nin > 2 ? in[2] : NULL, NULL, NULL,
                           true, 0.1, a->scalar);
    break;
  case AD_ATTRS_DTYPE:
    if (!strcmp(op, "cast")) return ad_cast(cx, x, a->dtype);
    break;
  case AD_ATTRS_CLAMP:
    if (!strcmp(op, "clamp")) return ad_clamp(cx, x, a->scalar, a->scalar2);
    break;
  case AD_ATTRS_ELU:
    if (!strcmp(op, "elu")) return ad_elu(cx, x, a->elu[0], a->elu[1], a->elu[2], a->elu[3]);
    break;
  case AD_ATTRS_COSINE:
    if (!strcmp(op, "cosine_similarity"))
      return ad_cosine_similarity(cx, x, y, (int)v[0], a->scalar);
    break;
  case AD_ATTRS_THRESHOLD:
    if (!strcmp(op, "threshold")) return ad_threshold(cx, x, a->scalar, a->scalar2);
    break;
  case AD_ATTRS_PAD_ND:
    if (!strcmp(op, "pad_nd"))
      return ad_pad_nd(cx, x, (int)v[0], v + 2, (ad_pad_mode)v[1], a->scalar);
    break;
  case AD_ATTRS_CMP:
    if (!strcmp(op, "compare")) {
      return cmp_builders[a->cmp](cx, x, y);
    }
    break;
  case AD_ATTRS_AXIS:
    if (!strcmp(op, "concat")) return ad_concat(cx, c->nin, in, (int)v[0]);
    if (!strcmp(op, "stack")) return ad_stack(cx, c->nin, in, (int)v[0]);
    if (!strcmp(op, "softmax")) return ad_softmax(cx, x, (int)v[0]);
    if (!strcmp(op, "log_softmax")) return ad_log_softmax(cx, x, (int)v[0]);
    if (!strcmp(op, "gather")) return ad_gather(cx, x, (int)v[0], y);
    if (!strcmp(op, "scatter_add")) return ad_scatter_add(cx, x, (int)v[0], y, in[2]);
    if (!strcmp(op, "flip")) return ad_flip(cx, x, 1, &(int){(int)v[0]});
    if (!strcmp(op, "cumsum")) return ad_cumsum(cx, x, (int)v[0]);
    if (!strcmp(op, "resample_axis")) return ad_resample_axis(cx, x, (int)v[0], y, in[2]);
    break;
  case AD_ATTRS_INDEX:
    if (!strcmp(op, "index_add"))
      return c->attr.n > 1 ? ad_index_add_axis(cx, x, (int)v[1], y, v[0])
                           : ad_index_add(cx, x, y, v[0]);
    if (!strcmp(op, "index_select_add"))
      return ad_index_select_add(cx, x, c->attr.n > 1 ? (int)v[1] : 0, y, in[2], v[0]);
    if (!strcmp(op, "resample_axis_adjoint"))
      return ad_resample_axis_adjoint(cx, x, c->attr.n > 1 ? (int)v[1] : 0, y, in[2], v[0]);
    break;
  case AD_ATTRS_MATMUL:
    if (!strcmp(op, "matmul")) return ad_matmul(cx, x, y, v[0] != 0, v[1] != 0);
    break;
  case AD_ATTRS_REDUCE: {
    bool keep = v[1] != 0;
    if (a->all && !keep && !strcmp(op, "sum")) return ad_sum(cx, x);
    if (a->all && !keep && !strcmp(op, "max")) return ad_max(cx, x);
    if (a->all && !keep && !strcmp(op, "min")) return ad_min(cx, x);
    if (a->all) break;
    if (!strcmp(op, "sum")) return ad_sum_axis(cx, x, (int)v[0], keep);
    if (!strcmp(op, "max")) return ad_max_axis(cx, x, (int)v[0], keep);
    if (!strcmp(op, "logsumexp")) return ad_logsumexp(cx, x, (int)v[0], keep);
    if (!strcmp(op, "mean_axis")) return ad_mean_axis(cx, x, (int)v[0], keep);
    if (!strcmp(op, "argmax")) return ad_argmax(cx, x, (int)v[0], keep);
    if (!strcmp(op, "argmin")) return ad_argmin(cx, x, (int)v[0], keep);
    if (!strcmp(op, "min")) return ad_min_axis(cx, x, (int)v[0], keep);
    break;
  }
  case AD_ATTRS_NARROW:
    if (!strcmp(op, "narrow")) return ad_narrow(cx, x, (int)v[0], v[1], v[2]);
    break;
  case AD_ATTRS_PAD:
    if (!strcmp(op, "pad")) return ad_pad(cx, x, (int)v[0], v[1], v[2]);
    break;
  case AD_ATTRS_SHAPE:
    if (!strcmp(op, "reshape")) return ad_reshape(cx, x, a->n, v);
    if (!strcmp(op, "expand")) return ad_expand(cx, x, a->n, v);
    if (!strcmp(op, "sum_to")) return ad_sum_to(cx, x, a->n, v);
    break;
  case AD_ATTRS_PERMUTE:
    if (!strcmp(op, "permute")) {
      int perm[AD_MAX_DIMS];
      for (int k = 0; k < a->n; k++) perm[k] = (int)v[k];
      return ad_permute(cx, x, perm);
    }
    break;
  case AD_ATTRS_POOL: {
    /* the zero value of an option is PyTorch's default: pass 0 where the
     * case has it, so the builders' resolution of 0 is tested too */
    ad_pool2d_opts o = {.ceil_mode = v[8] != 0, .exclude_pad = v[9] == 0};
    for (int k = 0; k < 2; k++) {
      o.stride[k] = v[2 + k] == v[k] ? 0 : v[2 + k];
      o.padding[k] = v[4 + k];
      o.dilation[k] = v[6 + k] == 1 ? 0 : v[6 + k];
    }
    if (!strcmp(op, "max_pool2d")) return ad_max_pool2d(cx, x, v[0], v[1], &o);
    if (!strcmp(op, "avg_pool2d")) return ad_avg_pool2d(cx, x, v[0], v[1], &o);
    break;
  }
  case AD_ATTRS_CONV: {
    ad_conv_opts o = {.stride = {v[0], v[1]},
                      .padding = {v[2], v[3], v[4], v[5]},
                      .dilation = {v[6], v[7]},
                      .groups = v[8],
                      .same = v[9] != 0,
                      .output_padding = {v[10], v[11]}};
    ad_tensor *bias = c->nin > 2 ? in[2] : NULL;
    if (!strcmp(op, "conv2d")) return ad_conv2d(cx, x, y, bias, &o);
    if (!strcmp(op, "conv_transpose2d")) return ad_conv_transpose2d(cx, x, y, bias, &o);
    if (!strcmp(op, "conv2d_weight")) return ad_conv2d_weight(cx, x, y, v[12], v[13], &o);
    break;
  }
  case AD_ATTRS_EMBEDDING:
    if (strcmp(op, "embedding")) break;
    if (a->n > 2 && v[2]) {
      ad_embedding_opts eo = {
          .padding = v[0] != 0, .padding_idx = v[1], .scale_grad_by_freq = true};
      return ad_embedding_ext(cx, x, y, &eo);
    }
    return ad_embedding(cx, x, y, v[0] ? v[1] : AD_NO_PADDING);
    break;
  case AD_ATTRS_LAYER_NORM:
    if (!strcmp(op, "layer_norm"))
      return ad_layer_norm(cx, x, a->n, v, y, c->nin > 2 ? in[2] : NULL, a->scalar);
    break;
  case AD_ATTRS_CROSS_ENTROPY:
    if (strcmp(op, "softmax_cross_entropy")) break;
    if (!v[0] && !v[2] && x->ndim == 2) return ad_softmax_cross_entropy(cx, x, y);
    return ad_softmax_cross_entropy_ext(
        cx, x, y,
        &(ad_cross_entropy_opts){.ignore = v[0] != 0, .ignore_index = (int32_t)v[1], .sum = v[2]});
  case BUILDER_ONLY:
    if (!strcmp(op, "transpose")) return ad_transpose(cx, x, (int)v[0], (int)v[1]);
    if (!strcmp(op, "var") || !strcmp(op, "std")) {
      int dims[AD_MAX_DIMS];
      for (int k = 2; k < a->n; k++) dims[k - 2] = (int)v[k];
      return (op[0] == 'v' ? ad_var : ad_std)(cx, x, a->n - 2, dims, v[0], v[1] != 0);
    }
    if (!strcmp(op, "sum_axes") || !strcmp(op, "mean_axes") || !strcmp(op, "max_axes") ||
        !strcmp(op, "min_axes")) {
      int dims[AD_MAX_DIMS];
      for (int k = 1; k < a->n; k++) dims[k - 1] = (int)v[k];
      ad_tensor *(*fn)(ad_ctx *, ad_tensor *, int, const int *, bool) =
          op[1] == 'u'   ? ad_sum_axes
          : op[1] == 'e' ? ad_mean_axes
          : op[1] == 'a' ? ad_max_axes
                         : ad_min_axes;
      return fn(cx, x, a->n - 1, dims, v[0] != 0);
    }
    if (!strcmp(op, "flip_dims")) {
      int dims[AD_MAX_DIMS];
      for (int k = 0; k < a->n; k++) dims[k] = (int)v[k];
      return ad_flip(cx, x, a->n, dims);
    }
    if (!strcmp(op, "conv1d")) {
      ad_conv1d_opts o = {.stride = v[0],
                          .padding = {v[1], v[2]},
                          .dilation = v[3],
                          .groups = v[4],
                          .same = v[5] != 0};
      return ad_conv1d(cx, x, y, c->nin > 2 ? in[2] : NULL, &o);
    }
    break;
  default:
    break;
  }
  *known = false;
  return NULL;
}

#define CASE_FMT     "%s (%s %s, fixture line %d)"
#define CASE_ARGS(c) (c)->label, (c)->op, dt_name((c)->dtype), (c)->line

enum { PATH_NONE, PATH_OK, PATH_FAIL };

/* Records the first failure of a path in msg (prefixed with the case). */
static int fail(char *msg, size_t n, const fx_case *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail(char *msg, size_t n, const fx_case *c, const char *path, const char *fmt, ...) {
  int off = snprintf(msg, n, CASE_FMT " via %s: ", CASE_ARGS(c), path);
  va_list ap;
  va_start(ap, fmt);
  if (off >= 0 && (size_t)off < n) vsnprintf(msg + off, n - (size_t)off, fmt, ap);
  va_end(ap);
  return PATH_FAIL;
}

/* The second derivatives of case c: with g_k = d<seed, out>/d in_k recorded
 * (ad_grad with create_graph), h = sum_k <seed2_k, g_k>, and each dh/d in_j
 * compared with grad2_j (zero when h depends on no input). */
static int second_order(ad_ctx *cx, const fx_case *c, const char *path, ad_tensor *out,
                        ad_tensor *seed, int m, ad_tensor **req, char *msg, size_t n) {
  ad_tensor *g[AD_MAX_SRC], *g2[AD_MAX_SRC], *r[AD_MAX_SRC] = {0}, *h = NULL;
  char why[400];
  int result = PATH_OK;
  if (ad_grad(cx, out, seed, m, req, g, true) != AD_OK)
    result = fail(msg, n, c, path, "ad_grad with create_graph: %s", ad_last_error(cx));
  for (int k = 0; result == PATH_OK && k < m; k++) {
    r[k] = make_tensor(cx, &c->seed2[k]);
    ad_tensor *t = ad_sum(cx, ad_mul(cx, r[k], g[k]));
    h = t && h ? ad_add(cx, h, t) : t;
    if (!h) result = fail(msg, n, c, path, "h = sum <seed2, grad>: %s", ad_last_error(cx));
  }
  if (result == PATH_OK && !ad_tensor_requires_grad(h)) { /* no g depends on an input */
    for (int k = 0; result == PATH_OK && k < m; k++)
      if (!all_zero(&c->grad2[k]))
        result = fail(msg, n, c, path, "input %d has no second derivative", k);
  } else if (result == PATH_OK && ad_grad(cx, h, NULL, m, req, g2, false) != AD_OK) {
    result = fail(msg, n, c, path, "second ad_grad: %s", ad_last_error(cx));
  }
  for (int k = 0; result == PATH_OK && ad_tensor_requires_grad(h) && k < m; k++)
    if (!match(g2[k], &c->grad2[k], why, sizeof why))
      result = fail(msg, n, c, path, "second derivative of input %d: %s", k, why);
  for (int k = 0; k < m; k++) ad_tensor_free(r[k]);
  return result;
}

/* Runs case c in cx through one path (registry or builder) and checks the
 * output and, when c has a seed, the gradients from ad_grad and from
 * ad_backward. PATH_NONE when the path does not apply to c. */
static int run_path(ad_ctx *cx, const fx_case *c, bool registry, ad_tensor **in, char *msg,
                    size_t n) {
  const char *path = registry ? "ad_op_apply" : "builder";
  char why[400];
  ad_tensor *req[AD_MAX_SRC], *g[AD_MAX_SRC];
  int m = 0;
  for (int k = 0; k < c->nin; k++) {
    in[k] = make_tensor(cx, &c->in[k]);
    if (!in[k]) return fail(msg, n, c, path, "input %d: %s", k, ad_last_error(cx));
    if (c->needs[k]) {
      if (ad_tensor_set_requires_grad(in[k], true) != AD_OK)
        return fail(msg, n, c, path, "input %d: %s", k, ad_last_error(cx));
      req[m++] = in[k];
    }
  }
  int id = ad_op_find(cx, c->op);
  const ad_op_def *def = ad_op_get(cx, id);
  if (registry && def && (int)def->attrs != attr_kind(c))
    return fail(msg, n, c, path, "the op reads attr %s, the case gives %s", kind_key(def->attrs),
                kind_key(attr_kind(c)));
  bool known;
  ad_tensor *out = registry ? run_registry(cx, c, in, &known) : run_builder(cx, c, in, &known);
  if (!known) return PATH_NONE;
  if (!out) return fail(msg, n, c, path, "no output: %s", ad_last_error(cx));
  /* the builder recorded what the registry path passes */
  const ad_attrs *rec = ad_tensor_attrs(out);
  if (!registry && def && rec && ad_tensor_op(out) == id &&
      !same_member(def->attrs, rec, &c->attrs))
    return fail(msg, n, c, path, "%s recorded attrs other than those the case gives ad_op_apply",
                def->name);
  if (!match(out, &c->out, why, sizeof why)) return fail(msg, n, c, path, "output: %s", why);
  if (!c->has_seed)
    return ad_tensor_requires_grad(out) ? fail(msg, n, c, path,
                                               "a case without seed must give "
                                               "a constant output")
                                        : PATH_OK;
  ad_tensor *seed = make_tensor(cx, &c->seed);
  in[c->nin] = seed; /* freed by the caller */
  if (!seed) return fail(msg, n, c, path, "seed: %s", ad_last_error(cx));
  if (ad_grad(cx, out, seed, m, req, g, false) != AD_OK)
    return fail(msg, n, c, path, "ad_grad: %s", ad_last_error(cx));
  for (int k = 0; k < m; k++)
    if (!match(g[k], &c->grad[k], why, sizeof why))
      return fail(msg, n, c, path, "ad_grad of input %d: %s", k, why);
  if (ad_backward(cx, out, seed) != AD_OK)
    return fail(msg, n, c, path, "ad_backward: %s", ad_last_error(cx));
  for (int k = 0; k < m; k++) {
    if (!req[k]->grad) { /* a leaf no gradient reaches keeps grad NULL (ad.h): zero */
      if (!all_zero(&c->grad[k]))
        return fail(msg, n, c, path, "ad_backward left input %d without a grad", k);
    } else if (!match(req[k]->grad, &c->grad[k], why, sizeof why)) {
      return fail(msg, n, c, path, "ad_backward grad of input %d: %s", k, why);
    }
  }
  return c->nseed2 ? second_order(cx, c, path, out, seed, m, req, msg, n) : PATH_OK;
}

/* Both paths of case c, each in a fresh context. PATH_NONE when the op is
 * neither registered nor a known builder. */
static int check_case(const fx_case *c, char *msg, size_t n) {
  int result = PATH_NONE;
  for (int registry = 1; registry >= 0 && result != PATH_FAIL; registry--) {
    ad_ctx *cx = ad_ctx_new();
    if (!cx) return fail(msg, n, c, "ad_ctx_new", "out of memory");
    ad_tensor *in[AD_MAX_SRC + 1] = {0};
    int r = run_path(cx, c, registry, in, msg, n);
    if (r != PATH_NONE) result = r;
    ad_tape_reset(cx);
    for (int k = 0; k <= AD_MAX_SRC; k++) ad_tensor_free(in[k]);
    ad_ctx_free(cx);
  }
  if (result == PATH_NONE)
    snprintf(msg, n, CASE_FMT ": '%s' is neither a registered op nor a known builder", CASE_ARGS(c),
             c->op);
  return result;
}

/* ---------------------------------------------------------------- tests */

/* One test per op name (all its cases, both dtypes): failing cases are each
 * reported with their label, path and worst element. */
typedef struct op_param {
  char op[32]; /* "" when the fixture could not be read */
} op_param;

static void free_params(struct criterion_test_params *crp) { cr_free(crp->params); }

ParameterizedTestParameters(ops_values, op) {
  char err[512];
  const fx_file *fx = fixture(err, sizeof err);
  size_t cap = fx ? (size_t)fx->ncases : 1, n = 0;
  op_param *p = cr_malloc(sizeof *p * cap);
  if (p && !fx) p[n++].op[0] = '\0';
  for (int k = 0; p && fx && k < fx->ncases; k++) {
    bool seen = false;
    for (size_t j = 0; j < n && !seen; j++) seen = !strcmp(p[j].op, fx->cases[k].op);
    if (!seen) snprintf(p[n++].op, sizeof p->op, "%s", fx->cases[k].op);
  }
  return cr_make_param_array(op_param, p, n, free_params);
}

ParameterizedTest(op_param *p, ops_values, op) {
  char err[512], msg[1024];
  const fx_file *fx = fixture(err, sizeof err);
  cr_assert(fx, "fixture unusable: %s", err);
  int cases = 0, failed = 0;
  for (int k = 0; k < fx->ncases; k++) {
    const fx_case *c = &fx->cases[k];
    if (strcmp(c->op, p->op)) continue;
    cases++;
    if (check_case(c, msg, sizeof msg) != PATH_OK) {
      failed++;
      cr_expect(false, "%s", msg);
    }
  }
  cr_assert_gt(cases, 0, "no case for op '%s'", p->op);
  cr_assert_eq(failed, 0, "%s: %d of %d cases failed", p->op, failed, cases);
}

Test(ops_values, fixture_parses) {
  char err[512];
  const fx_file *fx = fixture(err, sizeof err);
  cr_assert(fx, "fixture unusable: %s", err);
  cr_assert_gt(fx->ncases, 100, "only %d cases", fx->ncases);
  cr_assert(fx->torch[0], "the fixture does not name its torch version");
}

/* Every op with a backward has at least one case in each float dtype. */
Test(ops_values, fixture_covers_every_differentiable_op) {
  char err[512], missing[2048] = "";
  const fx_file *fx = fixture(err, sizeof err);
  cr_assert(fx, "fixture unusable: %s", err);
  int nops = ad_op_count(ctx), checked = 0;
  cr_assert_gt(nops, 0);
  for (int id = 0; id < nops; id++) {
    const ad_op_def *d = ad_op_get(ctx, id);
    cr_assert(d, "ad_op_get(%d) is NULL below ad_op_count", id);
    if (!d->backward) continue;
    checked++;
    for (int dt = AD_F32; dt <= AD_F64; dt++) {
      bool found = false;
      for (int k = 0; k < fx->ncases && !found; k++)
        found = !strcmp(fx->cases[k].op, d->name) && fx->cases[k].dtype == (ad_dtype)dt &&
                fx->cases[k].has_seed;
      if (!found) {
        size_t off = strlen(missing);
        snprintf(missing + off, sizeof missing - off, " %s/%s", d->name,
                 ad_dtype_name((ad_dtype)dt));
      }
    }
  }
  cr_assert_gt(checked, 0, "no differentiable op registered");
  cr_assert(!missing[0], "ops without a fixture case (run tools/gen_fixtures.py):%s", missing);
}

/* Ops the public API reaches only through ad_op_apply (B0 in ops.def). */
#define B0(name) #name,
#define B1(name)
#define B2(name)
#define BX(name)
#define AD_OP(E, name, builder) builder(name)
static const char *const registry_only[] = {
#include "ops.def"
};
#undef AD_OP
#undef B0
#undef B1
#undef B2
#undef BX

/* Every op with a public builder is value-tested through it: a B1/B2 op
 * through the table made from ops.def, a BX op through run_builder's
 * hand-written cases, where a new op with attributes must be added. */
Test(ops_values, every_builder_is_value_tested) {
  char err[512], missing[2048] = "", msg[1024];
  const fx_file *fx = fixture(err, sizeof err);
  cr_assert(fx, "fixture unusable: %s", err);
  int nops = ad_op_count(ctx);
  for (int id = 0; id < nops; id++) {
    const char *name = ad_op_get(ctx, id)->name;
    bool skip = false;
    for (size_t k = 0; k < sizeof registry_only / sizeof *registry_only; k++)
      skip |= !strcmp(registry_only[k], name);
    if (skip) continue;
    bool reached = false;
    for (int k = 0; k < fx->ncases && !reached; k++) {
      if (strcmp(fx->cases[k].op, name)) continue;
      ad_ctx *c2 = ad_ctx_new(); /* a fresh context per case, as check_case gives each */
      ad_tensor *in[AD_MAX_SRC + 1] = {0};
      reached = run_path(c2, &fx->cases[k], false, in, msg, sizeof msg) != PATH_NONE;
      ad_tape_reset(c2);
      for (int j = 0; j <= AD_MAX_SRC; j++) ad_tensor_free(in[j]);
      ad_ctx_free(c2);
    }
    if (!reached) {
      size_t off = strlen(missing);
      snprintf(missing + off, sizeof missing - off, " %s", name);
    }
  }
  cr_assert(!missing[0],
            "ops no fixture case reaches through a builder (mark them B1/B2 in ops.def, or add "
            "their builder to run_builder):%s",
            missing);
}

/* The reductions ad_sum and ad_sum_axis record are those the fixture's
 * 'attr reduce' lines give ad_op_apply: every dimension for 'all', the one
 * normalised axis otherwise, and keepdim. */
Test(ops_values, reduce_attrs_match_engine) {
  static const char text[] = "fixture ops 2\ntorch 0\ncases 2\n"
                             "case all sum f64\nattr reduce all 0\ntensor in f64 2 2 2 : 1 1 1 1\n"
                             "tensor out f64 0 : 4\nend\n"
                             "case last sum f64\nattr reduce -1 1\ntensor in f64 2 2 2 : 1 1 1 1\n"
                             "tensor out f64 2 2 1 : 2 2\nend\n";
  FILE *f = fmemopen((void *)text, strlen(text), "r");
  cr_assert(f, "fmemopen failed");
  fx_file fx;
  char err[256];
  bool parsed = fx_parse(f, &fx, err, sizeof err);
  fclose(f);
  cr_assert(parsed, "%s", err);
  int64_t s[2] = {2, 2};
  ad_tensor *x = ad_ones(ctx, AD_F64, 2, s);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y[2] = {ad_sum(ctx, x), ad_sum_axis(ctx, x, -1, true)};
  static const uint32_t axes[2] = {3u, 2u};
  for (int k = 0; k < 2; k++) {
    cr_assert(y[k], "%s", ad_last_error(ctx));
    const ad_attrs *at = ad_tensor_attrs(y[k]), *want = &fx.cases[k].attrs;
    cr_assert(at, "case %s: the reduction recorded no attrs", fx.cases[k].label);
    cr_assert_eq(at->reduce.axes, axes[k], "case %s: axes %#x recorded", fx.cases[k].label,
                 (unsigned)at->reduce.axes);
    cr_assert_eq(at->reduce.axes, want->reduce.axes, "case %s: recorded axes %#x, fixture %#x",
                 fx.cases[k].label, (unsigned)at->reduce.axes, (unsigned)want->reduce.axes);
    cr_assert_eq(at->reduce.keepdim, want->reduce.keepdim, "case %s: keepdim", fx.cases[k].label);
    cr_assert_eq(at->reduce.keepdim, k == 1);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  fx_free(&fx);
}

/* The parser rejects damaged files (so a broken fixture fails the suite). */
static bool parse_text(const char *text, char *err, size_t n) {
  FILE *f = fmemopen((void *)text, strlen(text), "r");
  cr_assert(f, "fmemopen failed");
  fx_file fx;
  bool ok = fx_parse(f, &fx, err, n);
  fclose(f);
  if (ok) fx_free(&fx);
  return ok;
}

#define GOOD_HEAD "fixture ops 2\ntorch 0\ncases 1\n"
#define GOOD_CASE                                                                                  \
  "case c exp f64\ntensor in f64 1 2 : 0 1\ntensor seed f64 1 2 : 1 1\n"                           \
  "tensor out f64 1 2 : 1 2.718281828459045\ntensor grad f64 1 2 : 1 2.718281828459045\nend\n"

Test(ops_values, parser_rejects_damaged_files) {
  char err[256];
  cr_assert(parse_text(GOOD_HEAD GOOD_CASE, err, sizeof err), "control text: %s", err);
  cr_assert(parse_text("fixture ops 2\ntorch 0\ncases 1\ncase r reshape f64\nattr shape\n"
                       "tensor in f64 2 1 1 : 3\ntensor out f64 0 : 3\nend\n",
                       err, sizeof err),
            "control text with an attr line: %s", err);
  static const struct {
    const char *text, *expect;
  } bad[] = {
      {"", "empty file"},
      {"fixture ops 1\n", "must start"},
      {GOOD_HEAD "case c exp f64\ntensor in f64 1 2 : 0\n", "value is missing"},
      {GOOD_HEAD "case c exp f64\ntensor in f64 1 2 : 0 1 2\n", "more values"},
      {GOOD_HEAD "case c exp f64\ntensor in f64 1 2 : 0 1x\n", "bad number"},
      {GOOD_HEAD "case c exp f64\ntensor wat f64 1 2 : 0 1\n", "unknown tensor role"},
      {GOOD_HEAD "case c exp f64\ntensor in f64 1 2 : 0 1\n", "ends inside a case"},
      {GOOD_HEAD "case c exp f64\ntensor in f64 1 2 : 0 1\ntensor seed f64 1 2 : 1 1\n"
                 "tensor out f64 1 2 : 1 2\nend\n",
       "fewer grads"},
      {GOOD_HEAD "case c exp f64\ntensor in f64 1 2 : 0 1\ntensor seed f64 1 2 : 1 1\n"
                 "tensor out f64 1 3 : 1 2 3\nend\n",
       "layout"},
      {"fixture ops 2\ntorch 0\ncases 2\n" GOOD_CASE, "declares 2 cases"},
      {"fixture ops 2\ntorch 0\nall_axes 127\n", "unknown header keyword"},
      {GOOD_HEAD "attr axis 0\n", "outside a case"},
      {GOOD_HEAD "case c exp f64\nattr wat 1\n", "unknown attr key"},
      {GOOD_HEAD "case c exp f64\nattr scalar\n", "value is missing"},
      {GOOD_HEAD "case c exp f64\nattr dtype f16\n", "bad attr dtype"},
      {GOOD_HEAD "case c exp f64\nattr cmp ne\n", "bad attr cmp"},
      {GOOD_HEAD "case c exp f64\nattr reduce x 0\n", "bad or out-of-range integer"},
      {GOOD_HEAD "case c exp f64\nattr narrow 0 1\n", "attr value is missing"},
      {GOOD_HEAD "case c exp f64\nattr axis 1 2\n", "extra attr values"},
      {GOOD_HEAD "case c exp f64\nattr scalar 1 2\n", "extra attr values"},
      {GOOD_HEAD "case c exp f64\nattr matmul 0 2\n", "0 or 1"},
      {GOOD_HEAD "case c exp f64\nattr axis 0\nattr axis 1\n", "one attr line"},
      {GOOD_HEAD "case c exp f64\ntensor in f64 1 2 : 0 1\nattr axis 0\n", "must open a case"},
      {GOOD_HEAD "case c sum f64\nattr reduce 1 0\ntensor in f64 1 2 : 0 1\n"
                 "tensor out f64 0 : 1\nend\n",
       "reduce axis out of range"},
      {GOOD_HEAD "case c exp f64\ntensor const i32 1 1 : 0.5\ntensor out f64 0 : 1\nend\n",
       "not an integer"},
      {GOOD_HEAD "case c exp f64\ntensor in f64 1 2 : 0 1\ntensor seed f64 1 2 : 1 1\n"
                 "tensor out f64 1 2 : 1 2\ntensor grad f64 1 2 : 1 2\ntensor seed2 f64 1 2 : 1 1\n"
                 "end\n",
       "one seed2 and one grad2"},
      {GOOD_HEAD "case c exp f64\ntensor in f64 1 2 : 0 1\ntensor seed f64 1 2 : 1 1\n"
                 "tensor out f64 1 2 : 1 2\ntensor seed2 f64 1 2 : 1 1\n",
       "seed2 must follow every grad"},
      {GOOD_HEAD
       "case c exp f64\ntensor in f64 1 2 : 0 1\ntensor seed f64 1 2 : 1 1\n"
       "tensor out f64 1 2 : 1 2\ntensor grad f64 1 2 : 1 2\ntensor seed2 f64 1 3 : 1 1 1\n",
       "differs in layout from its input"},
      {GOOD_HEAD "case c exp f64\ntensor in f64 1 2 : 0 1\ntensor seed f64 1 2 : 1 1\n"
                 "tensor out f64 1 2 : 1 2\ntensor grad f64 1 2 : 1 2\ntensor seed2 f64 1 2 : 1 1\n"
                 "tensor seed2 f64 1 2 : 1 1\n",
       "more seed2/grad2"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    cr_expect(!parse_text(bad[k].text, err, sizeof err), "damaged text %zu was accepted", k);
    cr_expect(strstr(err, bad[k].expect), "damaged text %zu: error '%s' lacks '%s'", k, err,
              bad[k].expect);
  }
}

/* div_scalar divides as PyTorch's x / s does (by s rounded to x's dtype),
 * bit for bit: it multiplied by 1 / s, one ulp off in f64 (5 / 3) and more
 * in f32 (1 / 0.001: 1000 where torch gives 999.99994). The gradient is
 * dy / s. Found by a differential test against PyTorch. */
Test(ops_values, div_scalar_divides_as_torch) {
  int64_t n = 2;
  ad_tensor *x = ad_zeros(ctx, AD_F64, 1, &n);
  ad_tensor_set(x, 0, 5.0);
  ad_tensor_set(x, 1, 3.0);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = ad_div_scalar(ctx, x, 3.0);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert(ad_tensor_get(y, 0) == 0x1.aaaaaaaaaaaabp+0, "5 / 3 = %a, torch 0x1.aaaaaaaaaaaabp+0",
            ad_tensor_get(y, 0));
  cr_assert(ad_tensor_get(y, 1) == 1.0);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(ad_tensor_get(x->grad, 0) == 1.0 / 3.0, "grad %a", ad_tensor_get(x->grad, 0));
  ad_tensor *xf = ad_full(ctx, AD_F32, 1, &n, 3.0);
  ad_tensor *yf = ad_div_scalar(ctx, xf, 0.001);
  cr_assert_not_null(yf, "%s", ad_last_error(ctx));
  cr_assert(ad_tensor_get(yf, 0) == (double)(3.0f / 0.001f), "3 / 0.001 = %.9g, torch %.9g",
            ad_tensor_get(yf, 0), (double)(3.0f / 0.001f));
  ad_tensor_free(x);
  ad_tensor_free(xf);
}

/* leaky_relu's gradient is dy where x > 0 and alpha dy elsewhere, as in
 * PyTorch, also for an infinite or NaN alpha: the slope alpha + (1 - alpha)
 * [x > 0] it was computed from is NaN for x > 0 then. Found by a
 * differential test against PyTorch. */
Test(ops_values, leaky_relu_gradient_with_non_finite_alpha) {
  double alphas[3] = {INFINITY, -INFINITY, NAN};
  for (int k = 0; k < 3; k++) {
    ad_tape_reset(ctx);
    int64_t n = 2;
    ad_tensor *x = ad_zeros(ctx, AD_F64, 1, &n);
    ad_tensor_set(x, 0, 2.0);
    ad_tensor_set(x, 1, -3.0);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = ad_sum(ctx, ad_leaky_relu(ctx, x, alphas[k]));
    cr_assert_eq(ad_backward(ctx, y, NULL), AD_OK, "%s", ad_last_error(ctx));
    cr_assert(ad_tensor_get(x->grad, 0) == 1.0, "alpha %g: grad at 2 is %g, torch 1", alphas[k],
              ad_tensor_get(x->grad, 0));
    double g1 = ad_tensor_get(x->grad, 1);
    cr_assert(isnan(alphas[k]) ? isnan(g1) : g1 == alphas[k], "alpha %g: grad at -3 is %g",
              alphas[k], g1);
    ad_tensor_free(x);
  }
}

/* div's gradient in b is -dy ((a / b) / b), PyTorch's formula: 0 where
 * a = 0 also when dy / b overflows (b subnormal), where -(dy / b)(a / b)
 * gave inf * 0 = NaN; and the same bits as PyTorch elsewhere (values from
 * torch 1.13). Found by a differential test against PyTorch. */
Test(ops_values, div_gradient_in_the_divisor_as_torch) {
  int64_t n = 3;
  double av[3] = {0.0, 1e-200, 3.0}, bv[3] = {0x1p-1074, 1e-170, 7.0}, gv[3] = {0.5, 0.25, 0.3};
  ad_tensor *a = ad_from_data(ctx, AD_F64, 1, &n, av);
  ad_tensor *b = ad_from_data(ctx, AD_F64, 1, &n, bv);
  ad_tensor *g = ad_from_data(ctx, AD_F64, 1, &n, gv);
  ad_tensor_set_requires_grad(a, true);
  ad_tensor_set_requires_grad(b, true);
  cr_assert_eq(ad_backward(ctx, ad_div(ctx, a, b), g), AD_OK, "%s", ad_last_error(ctx));
  double want[3] = {-0.0, -0x1.0cb70d24b7379p+463, -0x1.2cee3c9aa5180p-6};
  for (int i = 0; i < 3; i++)
    cr_assert(ad_tensor_get(b->grad, i) == want[i], "db[%d] = %a, torch %a", i,
              ad_tensor_get(b->grad, i), want[i]);
  cr_assert(ad_tensor_get(a->grad, 0) == 0.5 / 0x1p-1074); /* inf, as in PyTorch */
  ad_tensor_free(a);
  ad_tensor_free(b);
  ad_tensor_free(g);
}

/* mean and mean_axis divide the sum by the count, as PyTorch: the mean of
 * {5, 0, 0} is 5 / 3 = 0x1.aaaaaaaaaaaabp+0 (torch 1.13), where 5 * (1/3)
 * is one ulp less, and the gradient is dy / n (torch: 5 / 3 for dy = 5).
 * Found by a differential test against PyTorch. */
Test(ops_values, mean_divides_by_the_count_as_torch) {
  int64_t s[2] = {1, 3};
  double v[3] = {5, 0, 0};
  ad_tensor *x = ad_from_data(ctx, AD_F64, 2, s, v);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *m = ad_mean(ctx, x);
  cr_assert(ad_tensor_item(m) == 0x1.aaaaaaaaaaaabp+0, "mean %a", ad_tensor_item(m));
  cr_assert_eq(ad_backward(ctx, m, ad_scalar(ctx, AD_F64, 5.0)), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(ad_tensor_get(x->grad, 0) == 0x1.aaaaaaaaaaaabp+0, "grad %a",
            ad_tensor_get(x->grad, 0));
  ad_tensor *ma = ad_mean_axis(ctx, x, 1, false);
  cr_assert(ad_tensor_get(ma, 0) == 0x1.aaaaaaaaaaaabp+0, "mean_axis %a", ad_tensor_get(ma, 0));
  int64_t z = 0;
  ad_tensor *e = ad_zeros(ctx, AD_F64, 1, &z);
  cr_assert(isnan(ad_tensor_item(ad_mean(ctx, e))), "the mean of nothing is NaN");
  ad_tensor_free(x);
  ad_tensor_free(e);
}

/* float64 exp, sigmoid, softplus, elu and tanh run on vexp.h's exp_d
 * (and log1p_e_d, tanh_d), without libm. Against long double on a sweep of each range
 * and its edges (subnormal results, the overflow and underflow
 * thresholds): exp within 1 ulp (measured here 0.76, on subnormal
 * results; 0.68 elsewhere), sigmoid 2 (1.43 on a denser sweep, 1.97
 * without a fused multiply-add; the quotient uncorrected reached 2.37 at
 * the first of the two points after 1 and -1 below, 2.23 at the second),
 * softplus 2 (exp_d's error passed on
 * where the result is about e^x: libm's log1p(exp) form reaches 1.5 too),
 * elu's exp(x) - 1 2 ulp of 1, its larger term (1.24: the subtraction
 * cancels, as in PyTorch's form), tanh 1.5 (exp_d's or the series',
 * 1.23 at most on a denser sweep; glibc's tanh: 2.15); the special values
 * exact, a 1-element tensor the same bits as in a long one. */
static long double ulps64(double got, long double want) {
  if (isnan(want) || isnan(got)) return isnan(want) && isnan(got) ? 0 : NAN;
  if (want > (long double)DBL_MAX || want < -(long double)DBL_MAX)
    return got == (double)want ? 0 : NAN;
  long double a = fabsl(want), u = 0x1p-1074L;
  if (a >= 0x1p-1022L) {
    int e;
    frexpl(a, &e);
    u = ldexpl(1.0L, e - 53);
  }
  return fabsl((long double)got - want) / u;
}
static long double exp_ld(long double x) { return expl(x); }
static long double sigmoid_ld(long double x) { return 1.0L / (1.0L + expl(-x)); }
static long double softplus_ld(long double x) {
  return x > 0 ? x + log1pl(expl(-x)) : log1pl(expl(x));
}
static long double elu_ld(long double x) { return x > 0 ? x : expl(x) - 1.0L; }
static long double tanh_ld(long double x) { return tanhl(x); }
static ad_tensor *elu1(ad_ctx *c, ad_tensor *x) { return ad_elu(c, x, 1.0, 1.0, 1.0, 1.0); }

Test(ops_values, float64_exp_family_within_ulps) {
  static const struct {
    const char *name;
    ad_tensor *(*op)(ad_ctx *, ad_tensor *);
    long double (*ref)(long double);
    double lo, hi, bound;
  } fns[] = {{"exp", ad_exp, exp_ld, -746, 710, 1.0},
             {"sigmoid", ad_sigmoid, sigmoid_ld, -746, 40, 2.0},
             {"softplus", ad_softplus, softplus_ld, -746, 40, 2.0},
             {"elu", elu1, elu_ld, -40, 1, 2.0},
             {"tanh", ad_tanh, tanh_ld, -20, 20, 1.5}};
  static const double specials[] = {0.0,
                                    -0.0,
                                    INFINITY,
                                    -INFINITY,
                                    NAN,
                                    709.782712893384,
                                    709.7827128933841,
                                    -745.1332191019411,
                                    -745.1332191019412,
                                    -708.3964185322641,
                                    -708.39641853226,
                                    1e-300,
                                    -1e-300,
                                    4.9e-324,
                                    1e300,
                                    -1e300,
                                    0.34657359027997264,
                                    -0.34657359027997264,
                                    1.0,
                                    -1.0,
                                    -5.5445476432251866,
                                    -4.8454098570530135};
  enum { SWEEP = 40000 };
  int64_t n = 3 * SWEEP + (int64_t)(sizeof specials / sizeof *specials);
  ad_tensor *x = ad_zeros(ctx, AD_F64, 1, &n);
  cr_assert_not_null(x, "%s", ad_last_error(ctx));
  double *xv = x->data;
  for (size_t f = 0; f < sizeof fns / sizeof *fns; f++) {
    /* the range, [-1, 1] and the subnormal results, each by an odd step */
    for (int64_t i = 0; i < SWEEP; i++) {
      double t = ((double)i + 0.318) / SWEEP;
      xv[i] = fns[f].lo + (fns[f].hi - fns[f].lo) * t;
      xv[SWEEP + i] = -1.0 + 2.0 * t;
      xv[2 * SWEEP + i] = -745.2 + 37.0 * t;
    }
    memcpy(xv + 3 * SWEEP, specials, sizeof specials);
    ad_tensor *y = fns[f].op(ctx, x);
    cr_assert_not_null(y, "%s: %s", fns[f].name, ad_last_error(ctx));
    const double *yv = y->data;
    long double worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
      long double want = fns[f].ref((long double)xv[i]);
      long double u = ulps64(yv[i], want);
      if (f == 3 && xv[i] <= 0) /* elu: ulps of 1, the larger term, below 1 in magnitude */
        u = fabsl((long double)yv[i] - want) / (fabsl(want) < 0.5L ? 0x1p-54L : 0x1p-53L);
      cr_assert(!isnan(u), "%s(%a) = %a, want %La", fns[f].name, xv[i], yv[i], want);
      if (u > worst) worst = u, at = i;
    }
    cr_assert(worst <= fns[f].bound, "%s: %.3Lf ulp at x = %.17g", fns[f].name, worst, xv[at]);
    for (size_t k = 0; k < sizeof specials / sizeof *specials; k++) {
      double xs = specials[k], ys = yv[3 * SWEEP + (int64_t)k];
      long double want = fns[f].ref((long double)xs);
      if (xs == 0 || isinf(xs) || isnan(xs) || (f == 0 && (xs > 709.78 || xs < -745.13)))
        cr_assert(isnan(want) ? isnan(ys) : ys == (double)want, "%s(%a) = %a, want %La",
                  fns[f].name, xs, ys, want);
    }
    for (int64_t i = 0; i < n; i += i < 3 * SWEEP ? 997 : 1) { /* each alone */
      int64_t one = 1;
      ad_tensor *xi = ad_full(ctx, AD_F64, 1, &one, xv[i]);
      ad_tensor *yi = fns[f].op(ctx, xi);
      cr_assert_not_null(yi, "%s", ad_last_error(ctx));
      double a = ((const double *)yi->data)[0], b = yv[i];
      cr_assert(memcmp(&a, &b, sizeof a) == 0, "%s(%a): alone %a, in a tensor %a", fns[f].name,
                xv[i], a, b);
      ad_tensor_free(xi);
    }
    ad_tape_reset(ctx);
  }
  ad_tensor_free(x);
}

/* The float64 unary tests below: the worst error in ulps of y against ref
 * over each kind's run of sweep inputs (x[kind sweep, (kind + 1) sweep))
 * is within bound. */
static void f64_within_per_kind(const char *name, const double *xv, const double *yv, int kinds,
                                int64_t sweep, long double (*ref)(long double), double bound) {
  for (int kind = 0; kind < kinds; kind++) {
    long double worst = 0;
    int64_t at = 0;
    for (int64_t i = kind * sweep; i < (kind + 1) * sweep; i++) {
      long double u = ulps64(yv[i], ref((long double)xv[i]));
      cr_assert(!isnan(u), "%s(%a) = %a", name, xv[i], yv[i]);
      if (u > worst) worst = u, at = i;
    }
    cr_assert(worst <= bound, "%s, kind %d: %.3Lf ulp at x = %a", name, kind, worst, xv[at]);
  }
}

/* Every 991st of x's first swept elements and every one after, alone in a
 * 1-element tensor: the same bits through op as in the long tensor. */
static void f64_alone_same_bits(const char *name, ad_tensor *(*op)(ad_ctx *, ad_tensor *),
                                const double *xv, const double *yv, int64_t n, int64_t swept) {
  for (int64_t i = 0; i < n; i += i < swept ? 991 : 1) {
    int64_t one = 1;
    ad_tensor *xi = ad_full(ctx, AD_F64, 1, &one, xv[i]);
    ad_tensor *yi = op(ctx, xi);
    cr_assert_not_null(yi, "%s", ad_last_error(ctx));
    double a = ((const double *)yi->data)[0], b = yv[i];
    cr_assert(memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b)),
              "%s(%a): alone %a, in a tensor %a", name, xv[i], a, b);
    ad_tensor_free(xi);
  }
}

/* float64 sin and cos run on vexp.h's trig_d for |x| <= 2^20 (libm's
 * beyond, for infinities and NaN, and in builds whose FMA_D is not fused).
 * Against sinl and cosl: within 0.78 ulp (0.765 the worst found in 200
 * million inputs aimed at it) on each kind of input here: uniform on
 * [-2^20, 2^20] and [-10, 10], a log scale from 2^-60 to 2^20, one to two
 * ulps from multiples of pi/2 (where r is mostly the low part of q pi/2),
 * and near odd multiples of pi/4 (|r| near pi/4, where the worst errors
 * are); the values past 2^20 (one where trig_d and libm differ), the
 * infinities, NaN and zeros exactly libm's, sin(-0) = -0, and a 1-element
 * tensor the same bits as in a long one. */
static long double sin_ld(long double x) { return sinl(x); }
static long double cos_ld(long double x) { return cosl(x); }

Test(ops_values, float64_sin_cos_within_ulps) {
  static const double specials[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, 0x1p20, -0x1p20,
                                    0x1.0000000000001p20, -0x1.0000000000001p20, 1e300, -1e300,
                                    4.9e-324, -4.9e-324, 1e-300, 0x1p-1022, 1.5707963267948966,
                                    3.141592653589793, -4.71238898038469, 0.7853981633974483,
                                    -0.7853981633974484, 355.0, 103993.0,
                                    /* within 2^-60.5 of 29 pi/2; relative to x, the closest */
                                    0x1.6c6cbc45dc8dep+5, 0x1.39c6fd67805a7p+18,
                                    /* past 2^20, where trig_d would differ from libm */
                                    0x1.000000001cdc1p+20};
  enum { SWEEP = 30000, KINDS = 5 };
  int64_t n = KINDS * SWEEP + (int64_t)(sizeof specials / sizeof *specials);
  ad_tensor *x = ad_zeros(ctx, AD_F64, 1, &n);
  cr_assert_not_null(x, "%s", ad_last_error(ctx));
  double *xv = x->data;
  uint64_t st = 0x9e3779b97f4a7c15u;
  for (int64_t i = 0; i < SWEEP; i++) {
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    double u = (double)(st >> 11) * 0x1p-53;
    xv[i] = (u - 0.5) * 0x1p21;                              /* the range */
    xv[SWEEP + i] = (u - 0.5) * 20;                          /* [-10, 10] */
    xv[2 * SWEEP + i] = ldexp(u + 0.5, (int)(st % 80) - 60); /* 2^-60 to 2^20 */
    if (st & 1) xv[2 * SWEEP + i] = -xv[2 * SWEEP + i];
    /* one or two ulps beside q pi/2 (q up to 2^19.3) */
    double k = (double)(int64_t)(st % 1300000) - 650000, y = k * 1.5707963267948966;
    y = nextafter(y, (st >> 40) & 1 ? INFINITY : -INFINITY);
    xv[3 * SWEEP + i] = (st >> 41) & 1 ? nextafter(y, INFINITY) : y;
    /* within 2^-20 of (k + 1/2) pi/2: |r| near pi/4 */
    xv[4 * SWEEP + i] = (k + 0.5) * 1.5707963267948966 + (u - 0.5) * 0x1p-19;
  }
  memcpy(xv + KINDS * SWEEP, specials, sizeof specials);
  static const struct {
    const char *name;
    ad_tensor *(*op)(ad_ctx *, ad_tensor *);
    long double (*ref)(long double);
    double (*lib)(double);
  } fns[] = {{"sin", ad_sin, sin_ld, sin}, {"cos", ad_cos, cos_ld, cos}};
  for (size_t f = 0; f < sizeof fns / sizeof *fns; f++) {
    ad_tensor *y = fns[f].op(ctx, x);
    cr_assert_not_null(y, "%s: %s", fns[f].name, ad_last_error(ctx));
    const double *yv = y->data;
    f64_within_per_kind(fns[f].name, xv, yv, KINDS, SWEEP, fns[f].ref, 0.78);
    for (size_t k = 0; k < sizeof specials / sizeof *specials; k++) {
      double xs = specials[k], ys = yv[KINDS * SWEEP + (int64_t)k], want = fns[f].lib(xs);
      if (!(fabs(xs) <= 0x1p20) || xs == 0)
        cr_assert(isnan(want) ? isnan(ys) : memcmp(&ys, &want, sizeof ys) == 0,
                  "%s(%a) = %a, libm %a", fns[f].name, xs, ys, want);
      else
        cr_assert(ulps64(ys, fns[f].ref((long double)xs)) <= 0.78, "%s(%a) = %a", fns[f].name, xs,
                  ys);
    }
    f64_alone_same_bits(fns[f].name, fns[f].op, xv, yv, n, KINDS * SWEEP);
    ad_tape_reset(ctx);
  }
  ad_tensor_free(x);
}

/* float64 log runs on vexp.h's log_d for positive normal x (libm's for
 * the rest, and in builds whose FMA_D is not fused). Against logl: within
 * 0.555 ulp (0.549 the worst a review's search found) on each kind of
 * input here (the whole range of normal numbers, [0.5, 2], near 1, near
 * sqrt(2) 2^k where m is halved, and just below sqrt(2) and above
 * 1/sqrt(2), where the worst are), the special values exactly libm's, and
 * a 1-element tensor the same bits as in a long one. */
Test(ops_values, float64_log_within_ulps) {
  static const double specials[] = {
      0.0, -0.0, -1.0, INFINITY, -INFINITY, NAN, DBL_MIN, 4.9e-324, 0x1p-1070, DBL_MAX, 1.0, 2.0,
      0.5, 0x1.6a09e667f3bcdp+0, 0x1.6a09e667f3bcep+0, 0x1.fffffffffffffp-1, 0x1.0000000000001p+0,
      /* the worst a review found (0.549 ulp), and the next */
      0x1.69262ffa1b113p+0, 0x1.68ef9e5bdeb53p+0, 0x1.6a64f51ca53e3p-1};
  enum { SWEEP = 30000, KINDS = 5 };
  int64_t n = KINDS * SWEEP + (int64_t)(sizeof specials / sizeof *specials);
  ad_tensor *x = ad_zeros(ctx, AD_F64, 1, &n);
  cr_assert_not_null(x, "%s", ad_last_error(ctx));
  double *xv = x->data;
  uint64_t st = 0x5851f42d4c957f2du;
  for (int64_t i = 0; i < SWEEP; i++) {
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    double u = (double)(st >> 11) * 0x1p-53;
    xv[i] = ldexp(u + 0.5, (int)(st % 2044) - 1021);
    xv[SWEEP + i] = 0.5 + 1.5 * u;
    xv[2 * SWEEP + i] = 1 + (u - 0.5) * ldexp(1, -(int)(st % 50));
    xv[3 * SWEEP + i] =
        0x1.6a09e667f3bcdp+0 * (1 + (u - 0.5) * 1e-6) * ldexp(1, (int)(st % 40) - 20);
    /* within 0.3% below sqrt(2) or above 1/sqrt(2), times 2^-1, 1 or 2: |log
     * m| near 0.347, where the series' term is largest */
    xv[4 * SWEEP + i] = ((st >> 20) & 1 ? 0x1.6a09e667f3bcdp+0 * (1 - 0.003 * u)
                                        : 0x1.6a09e667f3bcdp-1 * (1 + 0.003 * u)) *
                        ldexp(1, (int)(st % 3) - 1);
  }
  memcpy(xv + KINDS * SWEEP, specials, sizeof specials);
  ad_tensor *y = ad_log(ctx, x);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  const double *yv = y->data;
  f64_within_per_kind("log", xv, yv, KINDS, SWEEP, logl, 0.555);
  for (size_t k = 0; k < sizeof specials / sizeof *specials; k++) {
    double xs = specials[k], ys = yv[KINDS * SWEEP + (int64_t)k], want = log(xs);
    if (!(xs >= DBL_MIN && xs <= DBL_MAX))
      cr_assert(isnan(want) ? isnan(ys) : memcmp(&ys, &want, sizeof ys) == 0,
                "log(%a) = %a, libm %a", xs, ys, want);
    else
      cr_assert(ulps64(ys, logl((long double)xs)) <= 0.555, "log(%a) = %a", xs, ys);
  }
  f64_alone_same_bits("log", ad_log, xv, yv, n, KINDS * SWEEP);
  ad_tensor_free(x);
  ad_tape_reset(ctx);
}

/* float64 atan runs on vexp.h's atan_d for finite x (libm's for
 * infinities and NaN, and in builds whose FMA_D is not fused). Against
 * atanl: within 0.55 ulp (0.5413 the worst a review's search found) on
 * each kind of input here (a log scale from 2^-1000 to 2^1000, [-6, 6],
 * beside the edges of its intervals, just past tan(pi/16)), the special values libm's, atan(-0) =
 * -0, and a 1-element tensor the same bits as in a long one. */
Test(ops_values, float64_atan_within_ulps) {
  static const double edges[] = {0x1.975f5e0553158p-3, 0x1.561b82ab7f990p-1, 0x1.7f218e25a7461p+0,
                                 0x1.41bfee242476fp+2, 0.41421356237309503,  1.0,
                                 2.414213562373095};
  static const double specials[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, DBL_MAX, -DBL_MAX,
                                    4.9e-324, -4.9e-324, 0x1p-1022, 1e300, 1.0, -1.0, 0x1p-27,
                                    0x1p27,
                                    /* the worst a review found (0.5413 ulp), and the next */
                                    0x1.97696d69692f4p-3, 0x1.976367ec6e1c1p-3};
  enum { SWEEP = 30000, KINDS = 4 };
  int64_t n = KINDS * SWEEP + (int64_t)(sizeof specials / sizeof *specials);
  ad_tensor *x = ad_zeros(ctx, AD_F64, 1, &n);
  cr_assert_not_null(x, "%s", ad_last_error(ctx));
  double *xv = x->data;
  uint64_t st = 0x2545f4914f6cdd1du;
  for (int64_t i = 0; i < SWEEP; i++) {
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    double u = (double)(st >> 11) * 0x1p-53, sign = (st >> 50) & 1 ? -1.0 : 1.0;
    xv[i] = sign * ldexp(u + 0.5, (int)(st % 2000) - 1000);
    xv[SWEEP + i] = (u - 0.5) * 12;
    xv[2 * SWEEP + i] = sign * edges[st % 7] * (1 + (u - 0.5) * 1e-6);
    /* just past tan(pi/16), where the worst errors are (k = 1, u near
     * -tan(pi/16), the result near 0.196) */
    xv[3 * SWEEP + i] = sign * 0x1.975f5e0553158p-3 * (1 + 2e-4 * u);
  }
  memcpy(xv + KINDS * SWEEP, specials, sizeof specials);
  ad_tensor *y = ad_atan(ctx, x);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  const double *yv = y->data;
  f64_within_per_kind("atan", xv, yv, KINDS, SWEEP, atanl, 0.55);
  for (size_t k = 0; k < sizeof specials / sizeof *specials; k++) {
    double xs = specials[k], ys = yv[KINDS * SWEEP + (int64_t)k], want = atan(xs);
    if (isnan(xs) || isinf(xs) || xs == 0)
      cr_assert(isnan(want) ? isnan(ys) : memcmp(&ys, &want, sizeof ys) == 0,
                "atan(%a) = %a, libm %a", xs, ys, want);
    else
      cr_assert(ulps64(ys, atanl((long double)xs)) <= 0.55, "atan(%a) = %a", xs, ys);
  }
  f64_alone_same_bits("atan", ad_atan, xv, yv, n, KINDS * SWEEP);
  ad_tensor_free(x);
  ad_tape_reset(ctx);
}

/* float32 exp, tanh and sigmoid run on the vectorized exp_v (vexp.h), with
 * libm where exp_v clamps, log on log_v, with libm outside the positive
 * normal floats, erf and GELU on erf_parts, libm beyond |x| 9 and 13.
 * Over a sweep of each function's range and its edges: within a bound in
 * ulps of the float64 result (exp 1.5, tanh 1.5, sigmoid 2.5: its libm
 * form's own error reaches 2.4; log 1; erf 1.5; GELU 6: 4.3 where 1 - erf
 * cancels near -1.27, as the old form did, and 5.7 down the negative tail,
 * where the old form lost every digit below -6; sin, cos and atan, computed
 * in double, 0.501, beyond 2^20 libm's; softplus 1.5, exp_v's error
 * passed on, libm's below exp_v's clamp), the special values
 * exact, the element of a 1-element tensor (computed alone) the same bits
 * as inside a long one, and 1 and 3 threads the same bits. */
/* x Phi(x) with the tail as erfc, accurate on both sides */
static double gelu64(double x) { return 0.5 * x * erfc(-x / sqrt(2.0)); }
static double softplus64(double x) { return (x > 0 ? x : 0) + log1p(exp(-fabs(x))); }
static double sigmoid64(double x) {
  return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

/* |got - want| in units of the spacing of floats at want rounded to float
 * (the subnormal spacing below FLT_MIN); 0 for equal values, a NaN for a
 * NaN in one and not the other. */
static double ulps32(float got, double want) {
  float w = (float)want;
  if (isnan(w) || isnan(got)) return isnan(w) && isnan(got) ? 0 : NAN;
  if (isinf(w) || isinf(got)) return got == w ? 0 : NAN;
  float a = fabsf(w), up = nextafterf(a, INFINITY);
  return fabs((double)got - want) / ((double)up - (double)a);
}

Test(ops_values, float32_transcendentals_within_ulps) {
  static const struct {
    const char *name;
    ad_tensor *(*op)(ad_ctx *, ad_tensor *);
    double (*ref)(double);
    double lo, hi, bound;
  } fns[] = {{"exp", ad_exp, exp, -110, 95, 1.5},
             {"tanh", ad_tanh, tanh, -12, 12, 1.5},
             {"sigmoid", ad_sigmoid, sigmoid64, -110, 40, 2.5},
             {"log", ad_log, log, 1e-7, 1e4, 1.0},
             {"erf", ad_erf, erf, -6, 6, 1.5},
             {"gelu", ad_gelu, gelu64, -16, 16, 6.0},
             {"sin", ad_sin, sin, -40, 40, 0.501},
             {"cos", ad_cos, cos, -1.04e6, 1.04e6, 0.501},
             {"atan", ad_atan, atan, -50, 50, 0.501},
             {"softplus", ad_softplus, softplus64, -100, 40, 1.5}};
  static const float specials[] = {
      0.0f,        -0.0f,       INFINITY,   -INFINITY,      NAN,         1e-30f,     -1e-30f,
      1e-45f,      -87.3f,      -87.31f,    88.3f,          88.31f,      88.72f,     88.73f,
      -103.9f,     -104.0f,     0.625f,     -0.625f,        0.62499994f, 2.8902831f, -2.8902831f,
      0.25f,       1e-4f,       -1.0f,      FLT_MIN,        FLT_MAX,     1.0f,       0.70710677f,
      1.4142135f,  0x1p20f,     -0x1p20f,   0x1.000002p20f, 1e30f,       -1e30f,     3.14159274f,
      1.57079637f, 0.41421357f, 2.4142137f, 2.4142134f};
  enum { SWEEP = 100000 };
  int64_t n = SWEEP + (int64_t)(sizeof specials / sizeof *specials);
  ad_tensor *x = ad_zeros(ctx, AD_F32, 1, &n);
  cr_assert_not_null(x, "%s", ad_last_error(ctx));
  float *xv = x->data;
  for (size_t f = 0; f < sizeof fns / sizeof *fns; f++) {
    for (int64_t i = 0; i < SWEEP; i++)
      xv[i] = (float)(fns[f].lo + (fns[f].hi - fns[f].lo) * (double)i / (SWEEP - 1));
    memcpy(xv + SWEEP, specials, sizeof specials);
    ad_tensor *y = fns[f].op(ctx, x);
    cr_assert_not_null(y, "%s: %s", fns[f].name, ad_last_error(ctx));
    double worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
      double u = ulps32(((const float *)y->data)[i], fns[f].ref((double)xv[i]));
      cr_assert(!isnan(u), "%s(%a) = %a, want %a", fns[f].name, xv[i], ((const float *)y->data)[i],
                fns[f].ref((double)xv[i]));
      if (u > worst) worst = u, at = i;
    }
    cr_assert(worst <= fns[f].bound, "%s: %.3f ulp at x = %.9g", fns[f].name, worst, xv[at]);
    /* the special values: exact where float64 rounds to an exact float */
    const float *yv = y->data;
    for (size_t k = 0; k < sizeof specials / sizeof *specials; k++) {
      float xs = specials[k], ys = yv[SWEEP + (int64_t)k];
      bool exact = xs == 0 || isinf(xs) || isnan(xs) || (f == 0 && (xs < -103.9f || xs > 88.72f));
      if (!exact) continue;
      float want = (float)fns[f].ref((double)xs);
      cr_assert(isnan(want) ? isnan(ys) : memcmp(&ys, &want, sizeof ys) == 0,
                "%s(%a) = %a, want %a", fns[f].name, xs, ys, want);
    }
    /* each element alone, as a 1-element tensor */
    for (int64_t i = 0; i < n; i += i < SWEEP ? 997 : 1) {
      int64_t one = 1;
      ad_tensor *xi = ad_full(ctx, AD_F32, 1, &one, xv[i]);
      ad_tensor *yi = fns[f].op(ctx, xi);
      cr_assert_not_null(yi, "%s", ad_last_error(ctx));
      float a = ((const float *)yi->data)[0], b = yv[i];
      cr_assert(memcmp(&a, &b, sizeof a) == 0, "%s(%a): alone %a, in a tensor %a", fns[f].name,
                xv[i], a, b);
      ad_tensor_free(xi);
    }
    /* on 3 threads */
    cr_assert_eq(ad_set_num_threads(3), AD_OK);
    ad_tensor *y3 = fns[f].op(ctx, x);
    ad_set_num_threads(1);
    cr_assert(y3 && memcmp(y3->data, y->data, (size_t)n * sizeof(float)) == 0,
              "%s: 3 threads give other bits", fns[f].name);
    ad_tape_reset(ctx);
  }
  ad_tensor_free(x);
}

/* gelu's gradient, one op (gelu_backward): float32 against float64's
 * Phi(x) + x phi(x) (Phi's tail as erfc) on a sweep of [-16, 16] (beyond
 * 13 the float64 form) and the edges (-1.14415693, the worst found in
 * a random search: 4.33), within 4.5 float32 ulps of the larger of the
 * two terms (where they cancel, near x = -0.75, no relative bound holds);
 * 0 and the infinities exact, NaN kept; one element alone the same bits
 * as in a tensor. */
static double gelu_grad64(double x) {
  return 0.5 * erfc(-x / sqrt(2.0)) + x * exp(-0.5 * x * x) * 0.3989422804014327;
}
Test(ops_values, gelu_gradient_float32_against_float64) {
  enum { SWEEP = 64001 };
  static const float edges[] = {0.0f,   -0.0f,  INFINITY,    -INFINITY,   NAN,
                                13.0f,  -13.0f, 13.000001f,  -13.000001f, -0.7517915f,
                                1e-30f, -5.3f,  -1.14415693f};
  int64_t n = SWEEP + (int64_t)(sizeof edges / sizeof *edges);
  ad_tensor *x = ad_zeros(ctx, AD_F32, 1, &n);
  cr_assert_not_null(x, "%s", ad_last_error(ctx));
  float *xv = x->data;
  for (int64_t i = 0; i < SWEEP; i++) xv[i] = (float)(-16.0 + 32.0 * (double)i / (SWEEP - 1));
  memcpy(xv + SWEEP, edges, sizeof edges);
  cr_assert_eq(ad_tensor_set_requires_grad(x, true), AD_OK);
  ad_tensor *g = NULL;
  cr_assert_eq(ad_grad(ctx, ad_sum(ctx, ad_gelu(ctx, x)), NULL, 1, &x, &g, false), AD_OK, "%s",
               ad_last_error(ctx));
  const float *gv = g->data;
  for (int64_t i = 0; i < n; i++) {
    double want = gelu_grad64((double)xv[i]), got = gv[i];
    if (isnan(want) || isinf(xv[i]) || xv[i] == 0) {
      cr_assert(isnan(want) ? isnan(got) : got == (float)want, "gelu'(%a) = %a, want %a", xv[i],
                got, want);
      continue;
    }
    double big = fmax(0.5 * erfc(-xv[i] / sqrt(2.0)),
                      fabs(xv[i]) * exp(-0.5 * xv[i] * xv[i]) * 0.3989422804014327);
    int e2;
    frexp(big, &e2); /* big in [2^(e2-1), 2^e2): a float ulp there is 2^(e2-24) */
    double err = fabs(got - want) / ldexp(1.0, e2 - 24);
    cr_assert(err <= 4.5 || fabs(got - want) <= 0x1p-149, "gelu'(%.9g) = %.9g, want %.17g (%.2f)",
              xv[i], got, want, err);
  }
  for (int64_t i = 0; i < n; i += i < SWEEP ? 1999 : 1) {
    int64_t one = 1;
    ad_tensor *xi = ad_full(ctx, AD_F32, 1, &one, xv[i]), *gi = NULL;
    ad_tensor_set_requires_grad(xi, true);
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, ad_gelu(ctx, xi)), NULL, 1, &xi, &gi, false), AD_OK);
    float a = ((const float *)gi->data)[0], b = gv[i];
    cr_assert(memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b)),
              "gelu'(%a): alone %a, in a tensor %a", xv[i], a, b);
    ad_tensor_free(xi);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* abs's and leaky_relu's gradients, one op each (abs_backward,
 * leaky_relu_backward): the same bits as the compositions they replace
 * (dy * ([x > 0] - [x < 0]); where(x > 0, dy, dy * alpha)), in both
 * dtypes, for x and dy over special values (signed zeros, infinities,
 * NaN) and a sweep, and alpha 0.2 and a negative one. */
Test(ops_values, abs_and_leaky_relu_gradients_as_their_compositions) {
  static const double sp[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, 1e-30, -2.5, 3.0};
  enum { K = 8, N = K * K + 1000 };
  int64_t n = N;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    ad_tensor *x = ad_zeros(ctx, dt, 1, &n), *g = ad_zeros(ctx, dt, 1, &n);
    cr_assert(x && g, "%s", ad_last_error(ctx));
    for (int64_t i = 0; i < N; i++) {
      ad_tensor_set(x, i, i < K * K ? sp[i % K] : sin((double)i) * 3);
      ad_tensor_set(g, i, i < K * K ? sp[i / K] : cos((double)i) * 2);
    }
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *zero = ad_scalar(ctx, dt, 0.0), *ga = NULL;
    cr_assert_eq(ad_grad(ctx, ad_abs(ctx, x), g, 1, &x, &ga, false), AD_OK, "%s",
                 ad_last_error(ctx));
    ad_tensor *want = ad_mul(ctx, g, ad_sub(ctx, ad_gt(ctx, x, zero), ad_lt(ctx, x, zero)));
    cr_assert(memcmp(ga->data, want->data, (size_t)N * ad_dtype_size(dt)) == 0,
              "%s abs: other bits than the composition", ad_dtype_name(dt));
    for (int a = 0; a < 2; a++) {
      double alpha = a ? -0.3 : 0.2;
      ad_tensor *gl = NULL;
      cr_assert_eq(ad_grad(ctx, ad_leaky_relu(ctx, x, alpha), g, 1, &x, &gl, false), AD_OK, "%s",
                   ad_last_error(ctx));
      ad_tensor *wl = ad_where(ctx, ad_gt(ctx, x, zero), g, ad_mul_scalar(ctx, g, alpha));
      const char *p = gl->data, *q = wl->data;
      for (int64_t i = 0; i < N; i++) {
        size_t es = ad_dtype_size(dt);
        QUICK_ASSERT(memcmp(p + (size_t)i * es, q + (size_t)i * es, es) == 0,
                     "%s leaky_relu(alpha %g): dx[%lld] for x %g, dy %g: %g, want %g",
                     ad_dtype_name(dt), alpha, (long long)i, ad_tensor_get(x, i),
                     ad_tensor_get(g, i), ad_tensor_get(gl, i), ad_tensor_get(wl, i));
      }
    }
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    ad_tensor_free(g);
  }
}

/* float32 pow of two tensors: pow in double rounded to float, which
 * pow_v computes without libm for positive normal bases and finite
 * exponents: the same bits as (float)pow((double)a, (double)b) over a
 * random sweep (results that overflow, underflow to subnormals and 0, and
 * exact powers), edge operands (zeros, subnormals, negatives, infinities,
 * NaN, 1 and 0 exponents), one element alone and a broadcast exponent
 * (the strided path), on 1 and 3 threads. */
Test(ops_values, pow_float32_is_float64_pow_rounded) {
  static const float edge[] = {0.0f, -0.0f, 1e-40f, -2.0f,   INFINITY, -INFINITY,
                               NAN,  1.0f,  2.0f,   FLT_MAX, FLT_MIN,  0.5f};
  enum { E = sizeof edge / sizeof *edge, N = 100000 + E * E };
  int64_t n = N;
  ad_tensor *a = ad_zeros(ctx, AD_F32, 1, &n), *b = ad_zeros(ctx, AD_F32, 1, &n);
  cr_assert(a && b, "%s", ad_last_error(ctx));
  float *av = a->data, *bv = b->data;
  ad_rng rng;
  ad_rng_seed(&rng, 41);
  for (int64_t i = 0; i < N; i++) {
    if (i < E * E) {
      av[i] = edge[i % E], bv[i] = edge[i / E] == 0.5f ? -3.0f : edge[i / E];
    } else {
      av[i] = (float)(ad_rng_uniform(&rng) * (i % 2 ? 3.0 : 1e4));
      bv[i] = (float)((ad_rng_uniform(&rng) - 0.5) * (i % 3 ? 20.0 : 400.0));
      if (i % 7 == 0) bv[i] = (float)(int)bv[i]; /* integer exponents: exact powers */
    }
  }
  ad_tensor *y = NULL, *y3 = NULL;
  for (int t = 0; t < 2; t++) {
    cr_assert_eq(ad_set_num_threads(t ? 3 : 1), AD_OK);
    ad_tensor *r = ad_pow(ctx, a, b);
    cr_assert_not_null(r, "%s", ad_last_error(ctx));
    if (t)
      y3 = r;
    else
      y = r;
  }
  ad_set_num_threads(1);
  cr_assert(memcmp(y->data, y3->data, (size_t)N * sizeof(float)) == 0, "3 threads: other bits");
  const float *yv = y->data;
  for (int64_t i = 0; i < N; i++) {
    float want = (float)pow((double)av[i], (double)bv[i]);
    QUICK_ASSERT(memcmp(&yv[i], &want, sizeof want) == 0 || (isnan(yv[i]) && isnan(want)),
                 "pow(%a, %a) = %a, want %a", av[i], bv[i], yv[i], want);
  }
  int64_t one = 1, row = 7;
  for (int64_t i = 0; i < N; i += i < E * E ? 1 : 4999) {
    ad_tensor *ai = ad_full(ctx, AD_F32, 1, &one, av[i]),
              *bi = ad_full(ctx, AD_F32, 1, &one, bv[i]);
    float got = ((const float *)ad_pow(ctx, ai, bi)->data)[0];
    cr_assert(memcmp(&got, &yv[i], sizeof got) == 0 || (isnan(got) && isnan(yv[i])),
              "pow(%a, %a): alone %a, in a tensor %a", av[i], bv[i], got, yv[i]);
    ad_tensor_free(ai);
    ad_tensor_free(bi);
  }
  /* a row of bases against one exponent (stride 0): the strided path */
  ad_tensor *ar = ad_narrow(ctx, a, 0, E * E, 7), *e1 = ad_full(ctx, AD_F32, 1, &one, 2.5);
  ad_tensor *yr = ad_pow(ctx, ad_reshape(ctx, ar, 1, &row), e1);
  cr_assert_not_null(yr, "%s", ad_last_error(ctx));
  for (int64_t i = 0; i < 7; i++) {
    float want = (float)pow((double)av[E * E + i], 2.5);
    cr_assert(((const float *)yr->data)[i] == want, "broadcast pow(%a, 2.5)", av[E * E + i]);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(a);
  ad_tensor_free(b);
  ad_tensor_free(e1);
}

/* pow_scalar's special exponents, PyTorch's: 2, 3, -1 and -2 products and
 * a quotient, 0.5 and -0.5 sqrt and 1 / sqrt (so -0 gives -0 and -inf,
 * -inf gives NaN, as in torch.pow, not C's pow), 1 the identity, others
 * libm's (-1.5 in float32 1 / (x sqrt(x)) in double, with pow's special
 * values). The special inputs against what torch 1.13 prints for them;
 * a sweep of each dtype within 0.501 ulp (float32, computed in double) or
 * 1 ulp (float64) of pow in double; one element alone the same bits as in
 * a tensor; 3 threads the same bits. */
Test(ops_values, pow_scalar_special_exponents_as_pytorch) {
  static const double xs[] = {-0.0, 0.0, -INFINITY, INFINITY, -4.0, NAN};
  static const struct {
    double p, want[6];
  } cases[] = {
      {0.5, {-0.0, 0.0, NAN, INFINITY, NAN, NAN}},
      {-0.5, {-INFINITY, INFINITY, NAN, 0.0, NAN, NAN}},
      {2.0, {0.0, 0.0, INFINITY, INFINITY, 16.0, NAN}},
      {-1.0, {-INFINITY, INFINITY, -0.0, 0.0, -0.25, NAN}},
      {3.0, {-0.0, 0.0, -INFINITY, INFINITY, -64.0, NAN}},
      {-2.0, {INFINITY, INFINITY, 0.0, 0.0, 0.0625, NAN}},
      {1.0, {-0.0, 0.0, -INFINITY, INFINITY, -4.0, NAN}},
      {0.0, {1.0, 1.0, 1.0, 1.0, 1.0, 1.0}},
      {2.5, {0.0, 0.0, INFINITY, INFINITY, NAN, NAN}},
      {-1.5, {INFINITY, INFINITY, 0.0, 0.0, NAN, NAN}},
  };
  enum { SWEEP = 70000 }; /* over two ELEM_GRAIN: split over threads */
  int64_t n = SWEEP + 6;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    ad_tensor *x = ad_zeros(ctx, dt, 1, &n);
    cr_assert_not_null(x, "%s", ad_last_error(ctx));
    for (int64_t i = 0; i < SWEEP; i++) /* magnitudes 1e-12 to 1e12, both signs */
      ad_tensor_set(x, i, (i % 2 ? -1 : 1) * pow(10.0, -12.0 + 24.0 * (double)i / (SWEEP - 1)));
    for (int k = 0; k < 6; k++) ad_tensor_set(x, SWEEP + k, xs[k]);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
      double p = cases[c].p;
      ad_tensor *y = ad_pow_scalar(ctx, x, p);
      cr_assert_not_null(y, "%s", ad_last_error(ctx));
      for (int k = 0; k < 6; k++) {
        double got = ad_tensor_get(y, SWEEP + k), want = cases[c].want[k];
        cr_assert(isnan(want) ? isnan(got) : got == want && signbit(got) == signbit(want),
                  "%s pow(%g, %g) = %g, want %g", ad_dtype_name(dt), xs[k], p, got, want);
      }
      for (int64_t i = 0; i < SWEEP; i++) {
        double xi = ad_tensor_get(x, i), got = ad_tensor_get(y, i), want = pow(xi, p);
        if (p == 0.5 || p == -0.5 || p == 2.5) want = xi < 0 ? NAN : want;
        if (isnan(want) || (dt == AD_F32 && isinf((float)want))) {
          cr_assert(isnan(want) ? isnan(got) : got == (float)want, "pow(%g, %g) = %g", xi, p, got);
          continue;
        }
        double u = dt == AD_F32 ? ulps32((float)got, want)
                                : fabs(got - want) / (nextafter(fabs(want), INFINITY) - fabs(want));
        double bound = dt == AD_F32 ? (p == 2.5 ? 1.0 : 0.501) : 1.0;
        cr_assert(u <= bound, "%s pow(%a, %g) = %a: %.3f ulp", ad_dtype_name(dt), xi, p, got, u);
      }
      for (int64_t i = 0; i < n; i += i < SWEEP ? 1001 : 1) {
        int64_t one = 1;
        ad_tensor *xi = ad_full(ctx, dt, 1, &one, ad_tensor_get(x, i));
        ad_tensor *yi = ad_pow_scalar(ctx, xi, p);
        cr_assert_not_null(yi, "%s", ad_last_error(ctx));
        double a = ad_tensor_get(yi, 0), b = ad_tensor_get(y, i);
        cr_assert(memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b)),
                  "pow(%a, %g): alone %a, in a tensor %a", ad_tensor_get(x, i), p, a, b);
        ad_tensor_free(xi);
      }
      cr_assert_eq(ad_set_num_threads(3), AD_OK);
      ad_tensor *y3 = ad_pow_scalar(ctx, x, p);
      ad_set_num_threads(1);
      cr_assert(y3 && memcmp(y3->data, y->data, (size_t)n * ad_dtype_size(dt)) == 0,
                "pow %g: 3 threads give other bits", p);
      ad_tape_reset(ctx);
    }
    ad_tensor_free(x);
  }
}

/* float32 1 / sqrt (pow_scalar -0.5) is rsqrt_v in float lanes, 1 / sqrt
 * in double outside its range (vexp.h): over every 4099th positive float
 * (subnormals to the largest, about half a million), the edges of the
 * range and two of its near-ties, within 0.5001 ulp of 1 / sqrt in double; the same bits with
 * subnormals flushed to zero but for the subnormal inputs (0 then: inf), on 1 and 3 threads, and
 * for an element alone. */
Test(ops_values, rsqrt_float32_within_half_ulp_everywhere) {
  static const float edges[] = {
      0x1p-64f, 0x1.fffffep-65f, 0x1.000002p-64f, 0x1p64f, 0x1.fffffep63f, 0x1.000002p64f,
      FLT_MIN,  FLT_TRUE_MIN,    FLT_MAX,         1.0f,    0x1.fffffcp-1f, 0x1.13e07p-1f};
  int64_t ne = (int64_t)(sizeof edges / sizeof *edges), n = 0;
  int64_t cap = ne + (int64_t)(0x7f800000u / 4099u) + 1;
  ad_tensor *x = ad_zeros(ctx, AD_F32, 1, &cap);
  cr_assert_not_null(x, "%s", ad_last_error(ctx));
  float *xv = x->data;
  for (int64_t i = 0; i < ne; i++) xv[n++] = edges[i];
  for (uint32_t u = 1; u < 0x7f800000u; u += 4099u) memcpy(&xv[n++], &u, sizeof u);
  cr_assert_eq(n, cap);
  ad_tensor *y = ad_pow_scalar(ctx, x, -0.5);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  const float *yv = y->data;
  double worst = 0;
  int64_t at = 0;
  for (int64_t i = 0; i < n; i++) {
    double u = ulps32(yv[i], 1.0 / sqrt((double)xv[i]));
    cr_assert(u == u, "rsqrt(%a) = %a", (double)xv[i], (double)yv[i]);
    if (u > worst) worst = u, at = i;
  }
  cr_assert(worst <= 0.5001, "rsqrt: %.6f ulp at x = %a", worst, (double)xv[at]);
  cr_assert_eq(ad_set_num_threads(3), AD_OK);
  ad_tensor *y3 = ad_pow_scalar(ctx, x, -0.5);
  ad_set_num_threads(1);
  cr_assert(y3 && memcmp(y3->data, yv, (size_t)n * sizeof(float)) == 0,
            "rsqrt: 3 threads give other bits");
  bool had = ad_flush_denormal();
  if (ad_set_flush_denormal(true)) {
    ad_tensor *yf = ad_pow_scalar(ctx, x, -0.5);
    ad_set_flush_denormal(had);
    cr_assert_not_null(yf, "%s", ad_last_error(ctx));
    const float *fv = yf->data;
    for (int64_t i = 0; i < n; i++) {
      float want = fabsf(xv[i]) < FLT_MIN ? INFINITY : yv[i];
      cr_assert(memcmp(&fv[i], &want, sizeof want) == 0,
                "rsqrt(%a) flushing subnormals: %a, want %a", (double)xv[i], (double)fv[i],
                (double)want);
    }
  }
  for (int64_t i = 0; i < n; i += i < ne ? 1 : 997) {
    int64_t one = 1;
    ad_tensor *xi = ad_full(ctx, AD_F32, 1, &one, (double)xv[i]);
    ad_tensor *yi = ad_pow_scalar(ctx, xi, -0.5);
    cr_assert_not_null(yi, "%s", ad_last_error(ctx));
    cr_assert(memcmp(yi->data, &yv[i], sizeof(float)) == 0, "rsqrt(%a): alone %a, in a tensor %a",
              (double)xv[i], (double)((const float *)yi->data)[0], (double)yv[i]);
    ad_tensor_free(xi);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* float32 softmax and log_softmax along the last axis (a vector path:
 * partial maxima and sums, exp_v with libm below its clamp) against the
 * same in float64: lanes of 1 to 100 elements (tails of the 16-wide
 * loop), spreads up to 300 (outputs that are subnormal or 0; x - max is
 * rounded to float first, as in PyTorch, an error growing with it), and lanes
 * holding a NaN, +inf or only -inf (all NaN, as in PyTorch), or one -inf
 * among finite values (0 and -inf there, as in PyTorch); on 1 and 3
 * threads the same bits. */
Test(ops_values, float32_softmax_last_axis_against_float64) {
  ad_rng rng;
  ad_rng_seed(&rng, 21);
  for (int64_t len = 1; len <= 100; len += len < 20 ? 1 : 9) {
    int64_t sh[2] = {8, len};
    ad_tensor *x = ad_zeros(ctx, AD_F32, 2, sh);
    cr_assert_not_null(x, "%s", ad_last_error(ctx));
    for (int64_t r = 0; r < 8; r++)
      for (int64_t i = 0; i < len; i++) {
        double spread = r < 3 ? 3 : 300;
        ad_tensor_set(x, r * len + i, (ad_rng_uniform(&rng) - 0.5) * spread);
      }
    ad_tensor_set(x, 3 * len + len / 2, NAN);
    ad_tensor_set(x, 4 * len + len / 3, INFINITY);
    for (int64_t i = 0; i < len; i++) ad_tensor_set(x, 5 * len + i, -INFINITY);
    ad_tensor_set(x, 7 * len + len / 4, -INFINITY);
    for (int lg = 0; lg < 2; lg++) {
      ad_tensor *y = lg ? ad_log_softmax(ctx, x, -1) : ad_softmax(ctx, x, -1);
      cr_assert_not_null(y, "%s", ad_last_error(ctx));
      for (int64_t r = 0; r < 8; r++) {
        double m = -INFINITY, sum = 0;
        bool nan = false;
        for (int64_t i = 0; i < len; i++) {
          double v = ad_tensor_get(x, r * len + i);
          nan |= isnan(v);
          m = v > m ? v : m;
        }
        for (int64_t i = 0; i < len; i++) sum += exp(ad_tensor_get(x, r * len + i) - m);
        for (int64_t i = 0; i < len; i++) {
          double v = ad_tensor_get(x, r * len + i), got = ad_tensor_get(y, r * len + i);
          double want = lg ? (v - m) - log(sum) : exp(v - m) / sum;
          if (nan || isinf(m)) { /* exp(inf - inf) in the sum: all NaN, as in PyTorch */
            cr_assert(isnan(got), "len %lld row %lld [%lld] %s: %g, want NaN", (long long)len,
                      (long long)r, (long long)i, lg ? "log_softmax" : "softmax", got);
            continue;
          }
          double d = isinf(v) ? 0 : fabs(v - m); /* -inf - max: no rounding */
          double tol = lg ? 3 * 0x1p-24 * (d + fabs(log(sum)) + 1)
                          : 3 * 0x1p-24 * fabs(want) * (1 + d) + 0x1p-149;
          QUICK_ASSERT(test_close(got, want, tol),
                       "len %lld row %lld [%lld] %s: %.9g, want %.9g (x %.9g)", (long long)len,
                       (long long)r, (long long)i, lg ? "log_softmax" : "softmax", got, want, v);
        }
      }
      cr_assert_eq(ad_set_num_threads(3), AD_OK);
      ad_tensor *y3 = lg ? ad_log_softmax(ctx, x, -1) : ad_softmax(ctx, x, -1);
      ad_set_num_threads(1);
      cr_assert(y3 && memcmp(y3->data, y->data, (size_t)y->size * sizeof(float)) == 0);
    }
    ad_tape_reset(ctx);
    ad_tensor_free(x);
  }
}

/* add_scalar, mul_scalar and leaky_relu with a NaN x give x's own NaN,
 * quieted, whatever the scalar (a NaN one too): the same bits from every
 * clone of the float32 loop, from a long tensor and from one element
 * (whose path is not the loop's). Payloads differ per element, signalling
 * NaNs among them. */
Test(ops_values, scalar_ops_keep_the_nan_of_x) {
  enum { N = 1000 };
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    for (int op = 0; op < 3; op++)
      for (int si = 0; si < 2; si++) {
        double s = si ? NAN : 0.25;
        for (int64_t n = 1; n <= N; n += N - 1) {
          ad_tensor *x = ad_zeros(ctx, dt, 1, &n);
          cr_assert_not_null(x);
          for (int64_t i = 0; i < n; i++) {
            uint64_t pay = (uint64_t)(i % 97) + 1, quiet = i % 3 != 0;
            if (dt == AD_F32) {
              uint32_t b = 0x7f800000u | (uint32_t)(quiet << 22) | (uint32_t)pay;
              memcpy((float *)x->data + i, &b, 4);
            } else {
              uint64_t b = 0x7ff0000000000000ull | (quiet << 51) | pay;
              memcpy((double *)x->data + i, &b, 8);
            }
          }
          ad_tensor *y = op == 0   ? ad_add_scalar(ctx, x, s)
                         : op == 1 ? ad_mul_scalar(ctx, x, s)
                                   : ad_leaky_relu(ctx, x, s);
          cr_assert_not_null(y, "%s", ad_last_error(ctx));
          for (int64_t i = 0; i < n; i++) {
            uint64_t got = 0, want = 0;
            if (dt == AD_F32) {
              uint32_t g, w;
              memcpy(&g, (const float *)y->data + i, 4);
              memcpy(&w, (const float *)x->data + i, 4);
              got = g, want = w | 0x00400000u;
            } else {
              memcpy(&got, (const double *)y->data + i, 8);
              memcpy(&want, (const double *)x->data + i, 8);
              want |= 1ull << 51;
            }
            if (got != want)
              cr_assert_fail("%s op %d, scalar %g, n %lld: element %lld is 0x%llx, not 0x%llx",
                             ad_dtype_name(dt), op, s, (long long)n, (long long)i,
                             (unsigned long long)got, (unsigned long long)want);
          }
          ad_tape_reset(ctx);
          ad_tensor_free(x);
        }
      }
  }
}

/* ------------------------------------------------------- clamp and sign */

/* What the value fixture cannot see (it compares values, not bits): signed
 * zeros and NaN, as torch 1.13 gives them. clamp keeps x where it equals a
 * bound, so -0.0 stays -0.0 at a bound 0 and +0.0 stays +0.0 at a bound
 * -0.0 (torch: clamp([-0., 0.], 0, 1) = [-0., 0.]; clamp([-0., 0.], -0.,
 * -0.) = [-0., 0.]); sign(-0.0) = +0.0 and sign(NaN) = +0.0 (torch.sign,
 * not NumPy's NaN). One-element tensors too (the scalar path). */
Test(ops_values, clamp_and_sign_signed_zeros_and_nan) {
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    for (int64_t n = 1; n <= 4; n += 3) {
      const double v[4] = {-0.0, 0.0, NAN, -INFINITY};
      for (int k = 0; k < (int)n; k++) {
        ad_tensor *x = ad_full(ctx, dt, 1, &n, v[k]);
        for (int j = 0; j < (int)n; j++) ad_tensor_set(x, j, v[(k + j) % 4]);
        ad_tensor *a = ad_clamp(ctx, x, 0.0, 1.0), *b = ad_clamp(ctx, x, -0.0, -0.0);
        ad_tensor *s = ad_sign(ctx, x);
        cr_assert(a && b && s, "%s", ad_last_error(ctx));
        for (int j = 0; j < (int)n; j++) {
          double xv = ad_tensor_get(x, j), av = ad_tensor_get(a, j), bv = ad_tensor_get(b, j),
                 sv = ad_tensor_get(s, j);
          const char *dn = ad_dtype_name(dt);
          if (isnan(xv)) {
            cr_assert(isnan(av) && isnan(bv), "%s clamp(NaN) = %g, %g", dn, av, bv);
            cr_assert(sv == 0 && !signbit(sv), "%s sign(NaN) = %g, torch +0", dn, sv);
          } else if (xv == 0) {
            cr_assert(av == 0 && signbit(av) == signbit(xv), "%s clamp(%g, 0, 1) = %g", dn, xv, av);
            cr_assert(bv == 0 && signbit(bv) == signbit(xv), "%s clamp(%g, -0, -0) = %g", dn, xv,
                      bv);
            cr_assert(sv == 0 && !signbit(sv), "%s sign(%g) = %g, torch +0", dn, xv, sv);
          } else { /* -inf */
            cr_assert(av == 0 && !signbit(av), "%s clamp(-inf, 0, 1) = %g", dn, av);
            cr_assert(sv == -1, "%s sign(-inf) = %g", dn, sv);
          }
        }
        ad_tensor_free(x);
        ad_tape_reset(ctx);
      }
    }
  }
}

/* The forward and the gradient on a tensor large enough to be split over
 * threads (several ELEM_GRAIN chunks), with elements exactly at the
 * bounds, NaN, infinities and signed zeros, and a cotangent with NaN and
 * infinities: 1 and 2 threads give the same bits, and those of the rule
 * written out (y = x < lo ? lo : hi < x ? hi : x, NaN kept; dx = dy where
 * lo <= x <= hi, else +0). */
Test(ops_values, clamp_threads_bit_identical) {
  const int64_t n = 100003;
  const double special[] = {-1.0, 1.5, -0.0, 0.0, NAN, INFINITY, -INFINITY};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    ad_rng rng;
    ad_rng_seed(&rng, 7);
    ad_tensor *x = ad_zeros(ctx, dt, 1, &n), *dy = ad_zeros(ctx, dt, 1, &n);
    for (int64_t i = 0; i < n; i++) {
      double u = ad_rng_uniform(&rng);
      ad_tensor_set(x, i, u < 0.3 ? special[i % 7] : 6 * ad_rng_uniform(&rng) - 3);
      ad_tensor_set(dy, i, i % 11 == 0 ? NAN : i % 13 == 0 ? -INFINITY : u - 0.5);
    }
    ad_tensor_set_requires_grad(x, true);
    size_t bytes = (size_t)n * (dt == AD_F32 ? 4 : 8);
    void *y1 = malloc(bytes), *g1 = malloc(bytes);
    cr_assert(y1 && g1);
    for (int threads = 1; threads <= 2; threads++) {
      cr_assert_eq(ad_set_num_threads(threads), AD_OK);
      ad_tensor *y = ad_clamp(ctx, x, -1.0, 1.5), *g = NULL;
      cr_assert_not_null(y, "%s", ad_last_error(ctx));
      cr_assert_eq(ad_grad(ctx, y, dy, 1, &x, &g, false), AD_OK, "%s", ad_last_error(ctx));
      if (threads == 1) {
        memcpy(y1, y->data, bytes);
        memcpy(g1, g->data, bytes);
        for (int64_t i = 0; i < n; i++) {
          double xv = ad_tensor_get(x, i), yv = ad_tensor_get(y, i), gv = ad_tensor_get(g, i);
          double want = xv < -1.0 ? -1.0 : 1.5 < xv ? 1.5 : xv;
          double gw = xv >= -1.0 && xv <= 1.5 ? ad_tensor_get(dy, i) : 0.0;
          cr_assert(isnan(want) ? isnan(yv) : (yv == want && signbit(yv) == signbit(want)),
                    "%s y[%lld] = %g for x %g", ad_dtype_name(dt), (long long)i, yv, xv);
          cr_assert(isnan(gw) ? isnan(gv) : (gv == gw && signbit(gv) == signbit(gw)),
                    "%s dx[%lld] = %g for x %g, dy %g", ad_dtype_name(dt), (long long)i, gv, xv,
                    ad_tensor_get(dy, i));
        }
      } else {
        cr_assert(!memcmp(y1, y->data, bytes), "%s: forward differs on 2 threads",
                  ad_dtype_name(dt));
        cr_assert(!memcmp(g1, g->data, bytes), "%s: gradient differs on 2 threads",
                  ad_dtype_name(dt));
      }
      ad_tape_reset(ctx);
    }
    ad_set_num_threads(1);
    free(y1);
    free(g1);
    ad_tensor_free(x);
    ad_tensor_free(dy);
  }
}

/* clamp's gradient at a bound is dy (torch.clamp's rule), where the
 * composite minimum(maximum(x, lo), hi) gives dy / 2 (torch.maximum's tie
 * rule): the reason clamp is an op. Second order: 0, through the recorded
 * gradient. sign's gradient is 0 everywhere, also for a NaN dy (torch:
 * zeros). */
Test(ops_values, clamp_gradient_at_bounds_and_sign_gradient) {
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    int64_t n = 4;
    const double xv[4] = {-1.0, 1.0, 0.25, 2.0};
    ad_tensor *x = ad_zeros(ctx, dt, 1, &n);
    for (int i = 0; i < 4; i++) ad_tensor_set(x, i, xv[i]);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *g = NULL, *gc = NULL, *gg = NULL;
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, ad_clamp(ctx, x, -1, 1)), NULL, 1, &x, &g, true), AD_OK,
                 "%s", ad_last_error(ctx));
    ad_tensor *lo = ad_scalar(ctx, dt, -1), *hi = ad_scalar(ctx, dt, 1);
    ad_tensor *comp = ad_minimum(ctx, ad_maximum(ctx, x, lo), hi);
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, comp), NULL, 1, &x, &gc, false), AD_OK);
    const double want[4] = {1, 1, 1, 0}, want_comp[4] = {0.5, 0.5, 1, 0};
    for (int i = 0; i < 4; i++) {
      cr_assert(ad_tensor_get(g, i) == want[i], "clamp'(%g) = %g, torch %g", xv[i],
                ad_tensor_get(g, i), want[i]);
      cr_assert(ad_tensor_get(gc, i) == want_comp[i], "composite'(%g) = %g", xv[i],
                ad_tensor_get(gc, i));
    }
    /* second order: d/dx sum(clamp'(x) * x) is clamp'(x) from the product, 0 from clamp' */
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, ad_mul(ctx, g, x)), NULL, 1, &x, &gg, false), AD_OK, "%s",
                 ad_last_error(ctx));
    for (int i = 0; i < 4; i++) cr_assert(ad_tensor_get(gg, i) == want[i]);

    ad_tensor *seed = ad_full(ctx, dt, 1, &n, NAN), *gs = NULL;
    ad_tensor *s = ad_sign(ctx, x);
    cr_assert(ad_tensor_requires_grad(s), "sign's output carries a gradient, as torch's");
    cr_assert_eq(ad_grad(ctx, s, seed, 1, &x, &gs, false), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_not_null(gs);
    for (int i = 0; i < 4; i++)
      cr_assert(ad_tensor_get(gs, i) == 0, "sign' with dy NaN: %g, torch 0", ad_tensor_get(gs, i));
    ad_tensor_free(x);
    ad_tape_reset(ctx);
  }
}

/* ad_backward(y, seed) gives the leaf w (of 3 elements) a grad of +0s,
 * not none; then frees w and seed. */
static void backward_gives_zeros(ad_tensor *y, ad_tensor *seed, ad_tensor *w, const char *what) {
  cr_assert_eq(ad_backward(ctx, y, seed), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_not_null(w->grad, "%s's input got no gradient; torch's is zeros", what);
  for (int i = 0; i < 3; i++)
    cr_assert(ad_tensor_get(w->grad, i) == 0 && !signbit(ad_tensor_get(w->grad, i)),
              "%s: grad[%d] = %g", what, i, ad_tensor_get(w->grad, i));
  ad_tape_reset(ctx);
  ad_tensor_free(w);
  ad_tensor_free(seed);
}

/* A leaf reached only through sign gets a zero grad from ad_backward, as
 * torch's w.grad = zeros (SignBackward's zeros_like), not none: an
 * optimizer then treats it as torch's does (weight decay, momentum). Was
 * NULL. */
Test(ops_values, sign_backward_gives_the_leaf_zeros) {
  for (int d = 0; d < 2; d++) {
    int64_t n = 3;
    ad_tensor *w = ad_full(ctx, d ? AD_F64 : AD_F32, 1, &n, 2.0);
    ad_tensor_set(w, 1, NAN);
    ad_tensor_set_requires_grad(w, true);
    ad_tensor *seed = ad_full(ctx, d ? AD_F64 : AD_F32, 1, &n, NAN);
    backward_gives_zeros(ad_sign(ctx, w), seed, w, "sign");
  }
}

/* sign's values at the special inputs, in both dtypes, one element and a
 * row of them (a vector loop and its scalar tail): -1, +0 or 1, with +0
 * for -0.0 and for NaN (PyTorch 1.13's torch.sign), +-1 for infinities
 * and subnormals. */
Test(ops_values, sign_of_special_values) {
  const double in[] = {NAN,    -NAN, 0.0,   -0.0,  INFINITY, -INFINITY, 4.9e-324, -4.9e-324, 1e-40,
                       -1e-40, 3.5,  -2.25, 1e300, -1e300,   0.0,       1.0,      -1.0};
  const double want[] = {0, 0, 0, 0, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 0, 1, -1};
  enum { N = sizeof in / sizeof *in };
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    for (int64_t rep = 1; rep <= 40; rep += 39) { /* 17 elements, then 680 */
      int64_t n = N * rep;
      ad_tensor *x = ad_zeros(ctx, dt, 1, &n);
      for (int64_t i = 0; i < n; i++) {
        double v = in[i % N];
        if (!d && fabs(v) == 4.9e-324) v = copysign(1.5e-45, v); /* float's smallest */
        ad_tensor_set(x, i, v);
      }
      ad_tensor *y = ad_sign(ctx, x);
      cr_assert_not_null(y, "%s", ad_last_error(ctx));
      for (int64_t i = 0; i < n; i++) {
        double v = ad_tensor_get(y, i);
        QUICK_ASSERT(v == want[i % N] && !signbit(v) == !(want[i % N] < 0),
                     "%s sign(%g) = %g, want %g", ad_dtype_name(dt), in[i % N], v, want[i % N]);
      }
      ad_tensor_free(x);
    }
  }
}

/* pow_scalar(x, 0) = 1 is constant: x gets zeros, whatever dy holds (a NaN
 * too) and also at x = 0, as torch's x ** 0 (zeros_like), so a leaf
 * reached only through it has a zero grad, not none. Was NULL. */
Test(ops_values, pow_scalar_zero_gives_the_leaf_zeros) {
  for (int d = 0; d < 2; d++) {
    int64_t n = 3;
    ad_tensor *w = ad_full(ctx, d ? AD_F64 : AD_F32, 1, &n, 0.0);
    ad_tensor_set(w, 1, 2.0);
    ad_tensor_set(w, 2, NAN);
    ad_tensor_set_requires_grad(w, true);
    ad_tensor *seed = ad_full(ctx, d ? AD_F64 : AD_F32, 1, &n, 1.0);
    ad_tensor_set(seed, 1, NAN);
    ad_tensor *y = ad_pow_scalar(ctx, w, 0.0);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    for (int i = 0; i < 3; i++)
      cr_assert(ad_tensor_get(y, i) == 1, "x^0 = %g", ad_tensor_get(y, i));
    backward_gives_zeros(y, seed, w, "x^0");
  }
}

/* hardtanh: clamp's values with PyTorch's hardtanh gradient, dy only
 * strictly inside the bounds (torch 1.13, F.hardtanh(x, -1, 1) of [-2, -1,
 * -0.5, 0.5, 1, 2, NaN] and relu6 of [-1, 0, 3, 6, 7]: [0, 0, 1, 1, 0, 0,
 * 0] and [0, 0, 1, 0, 0]; a NaN x gets 0 as in torch's vectorised loop), a
 * NaN or infinite dy outside kept out; second order 0 through the recorded
 * gradient. */
Test(ops_values, hardtanh_gradient_is_open_at_the_bounds) {
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    const double xv[7] = {-2, -1, -0.5, 0.5, 1, 2, NAN}, want[7] = {0, 0, 1, 1, 0, 0, 0};
    const double yv[7] = {-1, -1, -0.5, 0.5, 1, 1, NAN};
    int64_t n = 7;
    ad_tensor *x = ad_zeros(ctx, dt, 1, &n);
    for (int i = 0; i < 7; i++) ad_tensor_set(x, i, xv[i]);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor *y = ad_hardtanh(ctx, x, -1, 1), *g = NULL, *gg = NULL, *gi = NULL;
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, y), NULL, 1, &x, &g, true), AD_OK, "%s",
                 ad_last_error(ctx));
    for (int i = 0; i < 7; i++) {
      double yi = ad_tensor_get(y, i), gv = ad_tensor_get(g, i);
      cr_assert(i == 6 ? isnan(yi) : yi == yv[i], "hardtanh(%g) = %g", xv[i], yi);
      cr_assert(gv == want[i], "hardtanh'(%g) = %g, torch %g", xv[i], gv, want[i]);
    }
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, ad_mul(ctx, g, x)), NULL, 1, &x, &gg, false), AD_OK, "%s",
                 ad_last_error(ctx));
    for (int i = 0; i < 6; i++) cr_assert(ad_tensor_get(gg, i) == want[i], "second order %d", i);
    ad_tensor *seed = ad_full(ctx, dt, 1, &n, INFINITY);
    cr_assert_eq(ad_grad(ctx, ad_hardtanh(ctx, x, -1, 1), seed, 1, &x, &gi, false), AD_OK);
    for (int i = 0; i < 7; i++)
      cr_assert(ad_tensor_get(gi, i) == (want[i] ? INFINITY : 0), "dy inf: %g",
                ad_tensor_get(gi, i));
    const double rv[5] = {-1, 0, 3, 6, 7}, rwant[5] = {0, 0, 1, 0, 0};
    int64_t m = 5;
    ad_tensor *r = ad_zeros(ctx, dt, 1, &m), *gr = NULL;
    for (int i = 0; i < 5; i++) ad_tensor_set(r, i, rv[i]);
    ad_tensor_set_requires_grad(r, true);
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, ad_hardtanh(ctx, r, 0, 6)), NULL, 1, &r, &gr, false),
                 AD_OK);
    for (int i = 0; i < 5; i++)
      cr_assert(ad_tensor_get(gr, i) == rwant[i], "relu6'(%g) = %g", rv[i], ad_tensor_get(gr, i));
    ad_tensor_free(x);
    ad_tensor_free(r);
    ad_tape_reset(ctx);
  }
  cr_assert_null(ad_hardtanh(ctx, NULL, -1, 1));
  ad_clear_error(ctx);
}

/* ad_hardtanh's errors name hardtanh, though the op that runs is clamp: a
 * non-float x and an f32 bound beyond float32's range (was "clamp: input 0
 * is i32" and "clamp: min ..."); a bound just past FLT_MAX is printed so
 * that it reads apart from FLT_MAX itself, which is taken. */
Test(ops_values, hardtanh_errors_name_hardtanh) {
  int64_t n = 3;
  ad_tensor *i32 = ad_zeros(ctx, AD_I32, 1, &n), *x = ad_full(ctx, AD_F32, 1, &n, 2.0);
  cr_assert_null(ad_hardtanh(ctx, i32, -1, 1));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_DTYPE);
  cr_assert(strstr(ad_last_error(ctx), "hardtanh: input 0 is i32; a float dtype is needed"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
  cr_assert_null(ad_hardtanh(ctx, x, -1e39, 1));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(ctx), "hardtanh: min -1e+39 is outside float32's range"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
  cr_assert_null(ad_hardtanh(ctx, x, 0, 1e300));
  cr_assert(strstr(ad_last_error(ctx), "hardtanh: max 1e+300 is outside"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
  cr_assert_null(ad_clamp(ctx, x, -1, 3.4028235e38));
  cr_assert(strstr(ad_last_error(ctx), "clamp: max 3.4028235e+38 is outside"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tensor *y = ad_clamp(ctx, x, -1, FLT_MAX);
  cr_assert(y && ad_tensor_get(y, 0) == 2.0, "%s", ad_last_error(ctx));
  ad_tensor_free(x);
  ad_tensor_free(i32);
  ad_tape_reset(ctx);
}

/* Errors, as the other unary ops': NULL, a non-float x, another context;
 * for an f32 x a finite bound beyond float32's range, which torch refuses
 * too ("value cannot be converted to type float without overflow");
 * infinite and NaN bounds are fine, and any bound for f64. */
Test(ops_values, clamp_and_sign_errors) {
  int64_t n = 3;
  cr_assert_null(ad_clamp(NULL, NULL, 0, 1));
  cr_assert_null(ad_sign(NULL, NULL));
  cr_assert_null(ad_clamp(ctx, NULL, 0, 1));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_NULL);
  cr_assert(strstr(ad_last_error(ctx), "clamp: x is NULL"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  cr_assert_null(ad_sign(ctx, NULL));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_NULL);
  cr_assert(strstr(ad_last_error(ctx), "sign"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tensor *i32 = ad_zeros(ctx, AD_I32, 1, &n);
  cr_assert_null(ad_clamp(ctx, i32, 0, 1));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_DTYPE, "%s", ad_last_error(ctx));
  cr_assert(strstr(ad_last_error(ctx), "clamp"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  cr_assert_null(ad_sign(ctx, i32));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_DTYPE, "%s", ad_last_error(ctx));
  cr_assert(strstr(ad_last_error(ctx), "sign"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_ctx *other = ad_ctx_new();
  cr_assert_not_null(other);
  ad_tensor *xo = ad_zeros(other, AD_F32, 1, &n);
  cr_assert_null(ad_clamp(ctx, xo, 0, 1));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(ctx), "another context"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  cr_assert_null(ad_sign(ctx, xo));
  cr_assert(strstr(ad_last_error(ctx), "another context"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tensor_free(xo);
  ad_ctx_free(other);

  ad_tensor *x = ad_full(ctx, AD_F32, 1, &n, 2.0);
  cr_assert_null(ad_clamp(ctx, x, 1e300, INFINITY));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_ARG);
  cr_assert(strstr(ad_last_error(ctx), "clamp: min 1e+300 is outside float32's range"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
  cr_assert_null(ad_clamp(ctx, x, 0, -1e39));
  cr_assert(strstr(ad_last_error(ctx), "clamp: max -1e+39"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tensor *y = ad_clamp(ctx, x, -INFINITY, INFINITY);
  cr_assert(y && ad_tensor_get(y, 0) == 2.0, "%s", ad_last_error(ctx));
  y = ad_clamp(ctx, x, NAN, 1);
  cr_assert(y && isnan(ad_tensor_get(y, 0)), "a NaN bound gives NaN, as torch");
  ad_tensor *x64 = ad_full(ctx, AD_F64, 1, &n, 2.0);
  y = ad_clamp(ctx, x64, 1e300, INFINITY);
  cr_assert(y && ad_tensor_get(y, 0) == 1e300, "%s", ad_last_error(ctx));
  ad_tensor_free(x);
  ad_tensor_free(x64);
  ad_tensor_free(i32);
}

/* cumsum, sum and flip along the last axis (contiguous rows: cumsum and a
 * sum of rows under 256 interleave eight rows' sums, flip reverses in a
 * loop) give the bits of the same ops
 * along the first axis of the transposed input (lanes read row by row):
 * each lane summed in order in one double, each element moved as it is;
 * row counts around the interleave (1, 7, 8, 9, 33), 1 and 3 threads,
 * NaN and infinities in a row. */
Test(ops_values, cumsum_and_flip_along_rows_as_along_lanes) {
  static const int64_t rows[5] = {1, 7, 8, 9, 33};
  for (int d = 0; d < 2; d++)
    for (int ri = 0; ri < 5; ri++)
      for (int th = 0; th < 2; th++) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        int64_t R = rows[ri], n = ri % 2 ? 1000 + ri : 30 + ri, xs[2] = {R, n};
        ad_tensor *x = test_uniform(ctx, 7 + (uint64_t)ri, dt, 2, xs);
        cr_assert_not_null(x);
        for (int64_t i = 0; i < x->size; i++) ad_tensor_set(x, i, ad_tensor_get(x, i) * 1e3);
        if (R > 2) ad_tensor_set(x, 1 * n + 5, NAN), ad_tensor_set(x, 2 * n + 9, INFINITY);
        cr_assert_eq(ad_set_num_threads(th ? 3 : 1), AD_OK);
        ad_tensor *xt = ad_transpose(ctx, x, 0, 1); /* a copy: the lanes of axis 0 */
        ad_tensor *c1 = ad_cumsum(ctx, x, 1), *c0 = ad_cumsum(ctx, xt, 0);
        const int ax1[1] = {1};
        ad_tensor *f1 = ad_flip(ctx, x, 1, ax1);
        ad_tensor *s1 = ad_sum_axis(ctx, x, 1, false), *s0 = ad_sum_axis(ctx, xt, 0, false);
        cr_assert(c1 && c0 && f1 && s1 && s0, "%s", ad_last_error(ctx));
        for (int64_t r = 0; r < R && n < 256; r++) { /* (longer rows sum in chunks) */
          double a = ad_tensor_get(s1, r), b = ad_tensor_get(s0, r);
          cr_assert((isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0,
                    "%s rows %lld of %lld: sum of row %lld %.17g, lanes %.17g", ad_dtype_name(dt),
                    (long long)R, (long long)n, (long long)r, a, b);
        }
        for (int64_t r = 0; r < R; r++)
          for (int64_t k = 0; k < n; k++) {
            double a = ad_tensor_get(c1, r * n + k), b = ad_tensor_get(c0, k * R + r);
            double fa = ad_tensor_get(f1, r * n + k), want = ad_tensor_get(x, r * n + n - 1 - k);
            cr_assert((isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0,
                      "%s rows %lld, %d threads: cumsum [%lld,%lld] %.17g, lanes %.17g",
                      ad_dtype_name(dt), (long long)R, th ? 3 : 1, (long long)r, (long long)k, a,
                      b);
            cr_assert((isnan(fa) && isnan(want)) || memcmp(&fa, &want, sizeof fa) == 0,
                      "%s rows %lld: flip [%lld,%lld] %.17g, want %.17g", ad_dtype_name(dt),
                      (long long)R, (long long)r, (long long)k, fa, want);
          }
        ad_set_num_threads(1);
        ad_tape_reset(ctx);
        ad_tensor_free(x);
      }
}

/* argmax and argmin against the chain written out here (the first NaN,
 * else the first element that no earlier one beats; -0 and +0 equal) on
 * each of their paths: contiguous rows of 1 to 31 elements (gathered side
 * by side in blocks of 64 rows), of 32 and more (two vector passes), and
 * lanes inner apart (blocks of 64 lanes, a partial last block), values
 * drawn from a few (ties, zeros of both signs, infinities), with NaNs or
 * all equal, in both dtypes, on 1 and 3 threads. */
static int64_t arg_chain(const ad_tensor *x, int64_t base, int64_t n, int64_t s, bool min) {
  double b = ad_tensor_get(x, base);
  int64_t bk = 0;
  for (int64_t k = 1; k < n && b == b; k++) {
    double v = ad_tensor_get(x, base + k * s);
    if (v != v || (min ? v < b : v > b)) b = v, bk = k;
  }
  return bk;
}

Test(ops_values, argmax_argmin_first_index_on_every_path) {
  static const double few[8] = {-INFINITY, -2, -1, -0.0, 0.0, 1, 2, INFINITY};
  static const int64_t rows[4] = {1, 5, 65, 130},
                       lens[10] = {1, 2, 3, 4, 17, 31, 32, 33, 100, 1000};
  static const int64_t inners[5] = {2, 3, 63, 64, 65}, ns[4] = {1, 2, 5, 33};
  uint64_t state = 12345;
  for (int d = 0; d < 2; d++)
    for (int mode = 0; mode < 4; mode++)
      for (int c = 0; c < 4 * 10 + 5 * 4; c++) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        bool rowwise = c < 40;
        int64_t shape[3], S, N, outer;
        if (rowwise)
          outer = rows[c / 10], N = lens[c % 10], S = 1;
        else
          outer = 2, N = ns[(c - 40) % 4], S = inners[(c - 40) / 4];
        shape[0] = outer, shape[1] = N, shape[2] = S;
        ad_tensor *x = ad_zeros(ctx, dt, rowwise ? 2 : 3, shape);
        cr_assert_not_null(x, "%s", ad_last_error(ctx));
        for (int64_t i = 0; i < x->size; i++) {
          state = state * 6364136223846793005ULL + 1442695040888963407ULL;
          uint32_t u = (uint32_t)(state >> 33);
          double v = mode == 0   ? (double)(u % 100000) / 7.0 - 5000 /* mostly distinct */
                     : mode == 3 ? -0.0                              /* all equal */
                                 : few[u % 8];
          if (mode == 2 && u % 29 == 0) v = NAN;
          ad_tensor_set(x, i, v);
        }
        for (int th = 0; th < 2; th++) {
          cr_assert_eq(ad_set_num_threads(th ? 3 : 1), AD_OK);
          for (int mn = 0; mn < 2; mn++) {
            ad_tensor *y = mn ? ad_argmin(ctx, x, 1, false) : ad_argmax(ctx, x, 1, false);
            cr_assert_not_null(y, "%s", ad_last_error(ctx));
            const int32_t *yv = y->data;
            for (int64_t o = 0; o < outer; o++)
              for (int64_t i = 0; i < S; i++) {
                int64_t want = arg_chain(x, o * N * S + i, N, S, mn);
                cr_assert_eq(yv[o * S + i], want,
                             "%s %s of [%lld,%lld,%lld] (mode %d, %d threads), lane %lld,%lld: "
                             "%d, want %lld",
                             ad_dtype_name(dt), mn ? "argmin" : "argmax", (long long)outer,
                             (long long)N, (long long)S, mode, th ? 3 : 1, (long long)o,
                             (long long)i, yv[o * S + i], (long long)want);
              }
          }
        }
        ad_set_num_threads(1);
        ad_tape_reset(ctx);
        ad_tensor_free(x);
      }
}

/* The gradient of max and min over rows of 32768 elements or more (the
 * whole tensor's, or long rows'), split over the threads by element
 * ranges: into a leaf's gradient directly (grad_into; a second pass adds
 * through the backward's temporary) and through ad_grad, against dy / count written out
 * here (ties share, dy / count * 0 elsewhere: NaN for a NaN row), with
 * ties, signed zeros and NaNs, in both dtypes, on 1 and 3 threads. */
Test(ops_values, max_min_backward_of_long_rows) {
  static const double few[6] = {-2, -0.0, 0.0, 1, 3, 3};
  uint64_t state = 99;
  for (int d = 0; d < 2; d++)
    for (int mode = 0; mode < 3; mode++)
      for (int whole = 0; whole < 2; whole++)
        for (int th = 0; th < 2; th++)
          for (int mn = 0; mn < 2; mn++) {
            ad_dtype dt = d ? AD_F64 : AD_F32;
            int64_t xs[2] = {3, 40000}, rows = whole ? 1 : 3, n = whole ? 120000 : 40000;
            ad_tensor *x = ad_zeros(ctx, dt, 2, xs);
            cr_assert_not_null(x, "%s", ad_last_error(ctx));
            for (int64_t i = 0; i < x->size; i++) {
              state = state * 6364136223846793005ULL + 1442695040888963407ULL;
              uint32_t u = (uint32_t)(state >> 33);
              double v = mode == 0 ? (double)(u % 1000003) : few[u % 6];
              ad_tensor_set(x, i, (mn ? -v : v));
            }
            if (mode == 2) ad_tensor_set(x, 40000 + 12345, NAN); /* in row 1 (of 3) */
            cr_assert_eq(ad_tensor_set_requires_grad(x, true), AD_OK);
            cr_assert_eq(ad_set_num_threads(th ? 3 : 1), AD_OK);
            ad_tensor *y =
                whole ? (mn ? ad_min(ctx, x) : ad_max(ctx, x))
                      : (mn ? ad_min_axis(ctx, x, 1, false) : ad_max_axis(ctx, x, 1, false));
            cr_assert_not_null(y, "%s", ad_last_error(ctx));
            ad_tensor *dy = ad_zeros(ctx, dt, y->ndim, y->shape);
            for (int64_t o = 0; o < rows; o++) ad_tensor_set(dy, o, 0.3 + 0.7 * (double)o);
            ad_tensor *in[1] = {x}, *out[1] = {NULL};
            cr_assert_eq(ad_grad(ctx, y, dy, 1, in, out, false), AD_OK, "%s", ad_last_error(ctx));
            cr_assert_eq(ad_backward(ctx, y, dy), AD_OK, "%s", ad_last_error(ctx));
            cr_assert_not_null(x->grad);
            ad_tensor *g1 = ad_zeros(ctx, dt, 2, xs);
            memcpy(g1->data, x->grad->data, (size_t)x->size * ad_dtype_size(dt));
            cr_assert_eq(ad_backward(ctx, y, dy), AD_OK, "%s", ad_last_error(ctx)); /* adds */
            for (int64_t o = 0; o < rows; o++) {
              double yo = ad_tensor_get(y, o);
              int64_t cnt = 0;
              for (int64_t k = 0; k < n; k++) cnt += ad_tensor_get(x, o * n + k) == yo;
              for (int64_t k = 0; k < n; k++) {
                int64_t i = o * n + k;
                double want, want2, a = ad_tensor_get(out[0], i), b = ad_tensor_get(g1, i),
                                    b2 = ad_tensor_get(x->grad, i);
                if (dt == AD_F32) {
                  float g = (float)ad_tensor_get(dy, o) / (float)cnt, z = g * 0.0f;
                  float w = ad_tensor_get(x, i) == yo ? g : z;
                  want = w, want2 = (float)(w + w);
                } else {
                  double g = ad_tensor_get(dy, o) / (double)cnt, z = g * 0.0;
                  want = ad_tensor_get(x, i) == yo ? g : z, want2 = want + want;
                }
                bool nan = want != want;
                cr_assert((nan && a != a && b != b && b2 != b2) ||
                              (!nan && memcmp(&a, &want, sizeof a) == 0 &&
                               memcmp(&b, &want, sizeof b) == 0 &&
                               memcmp(&b2, &want2, sizeof b2) == 0),
                          "%s %s %s mode %d, %d threads, [%lld]: ad_grad %.17g, grad %.17g, "
                          "twice %.17g, want %.17g and %.17g",
                          ad_dtype_name(dt), mn ? "min" : "max", whole ? "whole" : "rows", mode,
                          th ? 3 : 1, (long long)i, a, b, b2, want, want2);
              }
            }
            ad_set_num_threads(1);
            ad_tape_reset(ctx);
            ad_tensor_free(g1);
            ad_tensor_free(dy);
            ad_tensor_free(x);
          }
}

/* index_add (index_select's gradient) of one slice (axis 0) split over the
 * threads by ranges of the output's elements, each range summing the rows
 * that land in it: against the sums written out here (each element's rows
 * added in index order, repeated indices included), through ad_index_add
 * and through a leaf's gradient (grad_into), rows that the ranges' bounds
 * (multiples of 32768 elements) cut or rows of one element, both dtypes,
 * on 1 and 3 threads. */
Test(ops_values, index_add_split_by_ranges_as_in_order) {
  static const int64_t rows_of[2] = {2000, 100000}, inner_of[2] = {41, 1}, m_of[2] = {300, 500};
  uint64_t state = 7;
  for (int d = 0; d < 2; d++)
    for (int c = 0; c < 2; c++)
      for (int th = 0; th < 2; th++) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        int64_t R = rows_of[c], in = inner_of[c], m = m_of[c], xs[2] = {R, in}, ys[2] = {m, in};
        ad_tensor *idx = ad_zeros(ctx, AD_I32, 1, &m), *y = ad_zeros(ctx, dt, c ? 1 : 2, ys);
        ad_tensor *x = ad_zeros(ctx, dt, c ? 1 : 2, xs);
        cr_assert(idx && y && x, "%s", ad_last_error(ctx));
        int32_t *iv = idx->data;
        for (int64_t k = 0; k < m; k++) {
          state = state * 6364136223846793005ULL + 1442695040888963407ULL;
          iv[k] = (int32_t)((state >> 33) % (uint64_t)(k % 3 ? R : 7)); /* repeats among 0..6 */
        }
        iv[1] = (int32_t)(32768 / in), iv[4] = (int32_t)(65536 / in); /* rows across 32K bounds */
        for (int64_t i = 0; i < y->size; i++) {
          state = state * 6364136223846793005ULL + 1442695040888963407ULL;
          ad_tensor_set(y, i, (double)((state >> 33) % 100003) / 977.0 - 51.3);
        }
        cr_assert_eq(ad_set_num_threads(th ? 3 : 1), AD_OK);
        ad_tensor *s = ad_index_add(ctx, y, idx, R);
        cr_assert_eq(ad_tensor_set_requires_grad(x, true), AD_OK);
        ad_tensor *sel = ad_index_select(ctx, x, idx);
        cr_assert(s && sel, "%s", ad_last_error(ctx));
        cr_assert_eq(ad_backward(ctx, sel, y), AD_OK, "%s", ad_last_error(ctx));
        ad_set_num_threads(1);
        for (int64_t r = 0; r < R; r++)
          for (int64_t i = 0; i < in; i++) {
            float wf = 0;
            double wd = 0;
            for (int64_t k = 0; k < m; k++)
              if (iv[k] == r) {
                double v = ad_tensor_get(y, k * in + i);
                wf += (float)v, wd += v;
              }
            double want = d ? wd : (double)wf, a = ad_tensor_get(s, r * in + i),
                   b = ad_tensor_get(x->grad, r * in + i);
            cr_assert(memcmp(&a, &want, sizeof a) == 0 && memcmp(&b, &want, sizeof b) == 0,
                      "%s [%lld,%lld], %d threads, [%lld,%lld]: index_add %.17g, grad %.17g, "
                      "want %.17g",
                      ad_dtype_name(dt), (long long)R, (long long)in, th ? 3 : 1, (long long)r,
                      (long long)i, a, b, want);
          }
        ad_tape_reset(ctx);
        ad_tensor_free(x);
        ad_tensor_free(y);
        ad_tensor_free(idx);
      }
}
