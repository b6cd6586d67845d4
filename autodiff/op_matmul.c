/* op_matmul.c: matrix product with NumPy/PyTorch semantics (broadcast batch
 * dimensions, 1-D operands) and transpose flags. */
#include "kernels/kernels.h"
#include "ops.h"

/* --------------------------------------------------------------- matmul */

/* How a product is laid out. op(A) is [.., m, k] and op(B) [.., k, n]; a
 * 1-D A is the row [1, k] and a 1-D B the column [k, 1], whose m or n is
 * dropped from the output; a flag on a 1-D operand is ignored (a vector is
 * its own transpose, as NumPy's v.T). The batch dimensions (all but the
 * last two) broadcast against each other, aligned from the right; sa[d] and
 * sb[d] are A's and B's element steps along output batch dim d, 0 where
 * the operand is broadcast (size 1 or absent), so no operand is copied. */
typedef struct mm_layout {
  bool ta, tb; /* the flags in effect: false for a 1-D operand */
  int64_t m, k, n;
  int nb; /* output batch rank */
  int64_t batch[AD_MAX_DIMS], sa[AD_MAX_DIMS], sb[AD_MAX_DIMS];
} mm_layout;

/* x's batch rank: dims before its last two (none for 1-D or 2-D). */
static int batch_rank(const ad_tensor *x) { return x->ndim > 2 ? x->ndim - 2 : 0; }

/* Element step of x's batch dim j in a contiguous x (its matrices are
 * the last two dims). */
static int64_t batch_step(const ad_tensor *x, int j) {
  int64_t s = 1;
  for (int i = j + 1; i < x->ndim; i++) s *= x->shape[i];
  return s;
}

/* Fills *l for op(a) op(b) (a and b at least 1-D); returns 0, or 1 when
 * the inner dims differ, 2 when the batch dims do not broadcast. */
static int mm_layout_of(mm_layout *l, const ad_tensor *a, const ad_tensor *b, bool ta, bool tb) {
  l->ta = ta && a->ndim >= 2;
  l->tb = tb && b->ndim >= 2;
  int64_t ka, kb;
  if (a->ndim == 1)
    l->m = 1, ka = a->shape[0];
  else
    l->m = a->shape[a->ndim - (l->ta ? 1 : 2)], ka = a->shape[a->ndim - (l->ta ? 2 : 1)];
  if (b->ndim == 1)
    l->n = 1, kb = b->shape[0];
  else
    kb = b->shape[b->ndim - (l->tb ? 1 : 2)], l->n = b->shape[b->ndim - (l->tb ? 2 : 1)];
  l->k = ka;
  if (ka != kb) return 1;
  int ra = batch_rank(a), rb = batch_rank(b);
  l->nb = ra > rb ? ra : rb;
  for (int d = 0; d < l->nb; d++) {
    int ja = d - (l->nb - ra), jb = d - (l->nb - rb); /* the operands' dims, < 0 if absent */
    int64_t da = ja >= 0 ? a->shape[ja] : 1, db = jb >= 0 ? b->shape[jb] : 1;
    if (da != db && da != 1 && db != 1) return 2;
    l->batch[d] = da == 1 ? db : da;
    l->sa[d] = da == l->batch[d] && ja >= 0 ? batch_step(a, ja) : 0;
    l->sb[d] = db == l->batch[d] && jb >= 0 ? batch_step(b, jb) : 0;
  }
  return 0;
}

/* Writes the operand shapes for an error message, "^T" after a transposed
 * one. */
static const char *mm_operands(const ad_tensor *a, const ad_tensor *b, const mm_layout *l,
                               char *buf, size_t n) {
  char sa[64], sb[64];
  snprintf(buf, n, "%s%s x %s%s", ad_shape_str(a, sa, sizeof sa), l->ta ? "^T" : "",
           ad_shape_str(b, sb, sizeof sb), l->tb ? "^T" : "");
  return buf;
}

static ad_status matmul_shape(const ad_call *c) {
  const ad_tensor *a = c->in[0], *b = c->in[1];
  ad_tensor *o = c->out;
  char ops[160];
  ad_status st = ad_check_float_same(c->ctx, c->name, 2, c->in);
  if (st != AD_OK) return st;
  mm_layout l = {.ta = false, .tb = false};
  if (a->ndim < 1 || b->ndim < 1)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: inputs need at least 1 dim: %s", c->name,
                        mm_operands(a, b, &l, ops, sizeof ops));
  int bad = mm_layout_of(&l, a, b, c->attrs->matmul.trans_a, c->attrs->matmul.trans_b);
  if (bad == 1)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: inner dimensions differ: %s", c->name,
                        mm_operands(a, b, &l, ops, sizeof ops));
  if (bad == 2)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: batch dimensions do not broadcast: %s (all but the last two dims "
                        "must be equal or 1, aligned from the right)",
                        c->name, mm_operands(a, b, &l, ops, sizeof ops));
  o->ndim = l.nb;
  memcpy(o->shape, l.batch, sizeof(int64_t) * (size_t)l.nb);
  if (a->ndim >= 2) o->shape[o->ndim++] = l.m;
  if (b->ndim >= 2) o->shape[o->ndim++] = l.n;
  o->dtype = a->dtype;
  return AD_OK;
}

/* Whether B is broadcast along every batch dim of the product and A, not
 * transposed, holds all of them: then A's batches are one matrix of
 * batches x m rows (a [N, T, E] input times a [E', E] weight), as
 * torch.matmul folds them, one GEMM instead of a product of m rows per
 * batch (and, for B's gradient, one product of depth batches x m instead
 * of a product per batch and their sum). */
static bool mm_folds(const mm_layout *l, const ad_tensor *a) {
  if (l->ta || l->nb == 0 || a->ndim != l->nb + 2) return false;
  for (int d = 0; d < l->nb; d++)
    if (l->batch[d] != 1 && l->sb[d] != 0) return false;
  return true;
}

/* Y = op(A) op(B), one GEMM per output batch; a broadcast operand's batch
 * step is 0, so it is read in place for every batch it meets. */
static void matmul_fwd(const ad_call *c) {
  const ad_tensor *a = c->in[0], *b = c->in[1];
  ad_tensor *out = c->out;
  if (out->size == 0) return; /* nothing to write, however many (empty) batches */
  mm_layout l;
  mm_layout_of(&l, a, b, c->attrs->matmul.trans_a, c->attrs->matmul.trans_b);
  bool ta = l.ta, tb = l.tb;
  int64_t m = l.m, nn = l.n, k = l.k;
  int64_t batches = ad_shape_size(l.nb, l.batch);
  size_t es = ad_dsize(out->dtype);
  void *t;
  if (batches > 1 && mm_folds(&l, a)) /* each row's bits as in its own batch's product */
    m *= batches, batches = 1;
  if (batches == 1 && ad_matmul_xwt_pays(out->dtype, ta, tb, m, nn, k) &&
      (t = ad_arena_try(c->ctx, (size_t)(m * nn) * es))) { /* else the plain product */
    ad_matmul_xwt(out->dtype, m, nn, k, a->data, b->data, t, out->data);
    return;
  }
  int64_t idx[AD_MAX_DIMS] = {0}, oa = 0, ob = 0; /* output batch index, operand offsets */
  for (int64_t i = 0; i < batches; i++) {
    ad_gemm_split(out->dtype, ta, tb, m, nn, k, (const char *)a->data + (size_t)oa * es, ta ? m : k,
                  (const char *)b->data + (size_t)ob * es, tb ? k : nn, 0.0,
                  (char *)out->data + (size_t)(i * m * nn) * es, nn);
    for (int d = l.nb - 1; d >= 0; d--) { /* next batch index, last dim fastest */
      oa += l.sa[d], ob += l.sb[d];
      if (++idx[d] < l.batch[d]) break;
      oa -= l.sa[d] * l.batch[d], ob -= l.sb[d] * l.batch[d], idx[d] = 0;
    }
  }
}

/* x (1-D) as a matrix of shape rows x cols, or x itself when it is not
 * 1-D. */
static ad_tensor *as_matrix(ad_ctx *ctx, ad_tensor *x, int64_t rows, int64_t cols) {
  if (!x || x->ndim != 1) return x;
  int64_t s[2] = {rows, cols};
  return ad_reshape(ctx, x, 2, s);
}

/* g, a contribution shaped like the (broadcast) product, summed over the
 * batch dims x2 (x as a matrix) was broadcast along, then shaped like x. */
static ad_tensor *grad_like(ad_ctx *ctx, ad_tensor *g, const ad_tensor *x2, const ad_tensor *x) {
  if (!g || !x2) return NULL;
  if (!ad_same_shape(g, x2)) g = ad_sum_to(ctx, g, x2->ndim, x2->shape);
  if (g && !ad_same_shape(g, x)) g = ad_reshape(ctx, g, x->ndim, x->shape);
  return g;
}

/* With A2, B2 the operands as matrices (1-D ones as a row / a column) and
 * dY2 = dY with their dropped dims put back, the 2-D rules apply batch by
 * batch: dA = dY op(B)^T, dB = op(A)^T dY (as products of the flags);
 * each is then summed over the batch dims its operand was broadcast along
 * and shaped like it. All of it is ops, so it differentiates again. */
static ad_status matmul_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *a = c->in[0], *b = c->in[1], *dy = c->gout;
  if (dy->size == 0) { /* an empty product: no input reaches it, both gradients are zeros */
    for (int i = 0; i < 2; i++) {
      if (!c->needs[i]) continue;
      ad_tensor *x = c->in[i], *z;
      if (!ad_grad_enabled(ctx)) {
        z = ad_zeros_like(ctx, x);
      } else { /* create_graph: zeros made of ops on dy and the other operand, which PyTorch's
                * products make them of, so that they are recorded (and differentiate to
                * zeros); an empty narrow reads none of the operand's elements */
        ad_tensor *o = ad_narrow(ctx, c->in[1 - i], 0, 0, 0);
        z = ad_expand(ctx, ad_add(ctx, ad_sum(ctx, dy), ad_sum(ctx, o)), x->ndim, x->shape);
      }
      ad_status st = ad_call_set_grad(c, i, z);
      if (st != AD_OK) return st;
    }
    return AD_OK;
  }
  mm_layout l;
  mm_layout_of(&l, a, b, c->attrs->matmul.trans_a, c->attrs->matmul.trans_b);
  bool ta = l.ta, tb = l.tb;
  ad_tensor *a2 = as_matrix(ctx, a, 1, l.k), *b2 = as_matrix(ctx, b, l.k, 1);
  if (a->ndim == 1 || b->ndim == 1) {
    int64_t s[AD_MAX_DIMS];
    memcpy(s, l.batch, sizeof(int64_t) * (size_t)l.nb);
    s[l.nb] = l.m, s[l.nb + 1] = l.n;
    dy = ad_reshape(ctx, dy, l.nb + 2, s);
  }
  if (c->needs[0]) {
    ad_tensor *g = !ta ? ad_matmul(ctx, dy, b2, false, !tb) : ad_matmul(ctx, b2, dy, tb, true);
    ad_status st = ad_call_set_grad(c, 0, grad_like(ctx, g, a2, a));
    if (st != AD_OK) return st;
  }
  if (c->needs[1] && mm_folds(&l, a)) { /* one product over every batch's rows */
    int64_t rows = ad_shape_size(l.nb, l.batch) * l.m, sa[2] = {rows, l.k}, sy[2] = {rows, l.n};
    ad_tensor *a1 = ad_reshape(ctx, a, 2, sa), *dy1 = ad_reshape(ctx, dy, 2, sy);
    ad_tensor *g =
        !tb ? ad_matmul(ctx, a1, dy1, true, false) : ad_matmul(ctx, dy1, a1, true, false);
    return ad_call_set_grad(c, 1, g ? ad_reshape(ctx, g, b->ndim, b->shape) : NULL);
  }
  if (c->needs[1]) {
    ad_tensor *g = !tb ? ad_matmul(ctx, a2, dy, !ta, false) : ad_matmul(ctx, dy, a2, true, ta);
    return ad_call_set_grad(c, 1, grad_like(ctx, g, b2, b));
  }
  return AD_OK;
}

/* x as the matrix it is stored as (2-D x itself; a 1-D operand is the row
 * [1, k] when it is A, the column [k, 1] when it is B): rows, cols. */
typedef struct mm_mat {
  const void *p;
  int64_t rows, cols;
} mm_mat;

static mm_mat mm_mat_of(const ad_tensor *x, bool is_a) {
  if (x->ndim == 2) return (mm_mat){x->data, x->shape[0], x->shape[1]};
  return is_a ? (mm_mat){x->data, 1, x->shape[0]} : (mm_mat){x->data, x->shape[0], 1};
}

/* dst = op(x) op(w) (GEMM with beta = 0). */
static void gemm_store(ad_tensor *dst, mm_mat x, bool tx, mm_mat w, bool tw) {
  int64_t m = tx ? x.cols : x.rows, k = tx ? x.rows : x.cols, nn = tw ? w.rows : w.cols;
  ad_gemm_split(dst->dtype, tx, tw, m, nn, k, x.p, x.cols, w.p, w.cols, 0.0, dst->data, nn);
}

/* For A and B of at most 2 dims, the GEMM that makes input k's
 * contribution stores a new gradient straight into its buffer (beta = 0):
 * no temporary, no clearing, no copy. dY is the [m, n] matrix with a 1-D
 * operand's dropped dim put back, as the recorded backward reshapes it.
 * Adding to an existing one is declined: a GEMM with beta = 1 rounds
 * differently from the product plus an add once k is blocked. */
static bool matmul_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  const ad_tensor *a = c->in[0], *b = c->in[1], *dy = c->gout;
  if (!overwrite || a->ndim > 2 || b->ndim > 2) return false;
  mm_layout l;
  mm_layout_of(&l, a, b, c->attrs->matmul.trans_a, c->attrs->matmul.trans_b);
  bool ta = l.ta, tb = l.tb;
  mm_mat am = mm_mat_of(a, true), bm = mm_mat_of(b, false), g = {dy->data, l.m, l.n};
  if (k == 0) {
    if (!ta)
      gemm_store(grad, g, false, bm, !tb);
    else
      gemm_store(grad, bm, tb, g, true);
  } else {
    if (!tb)
      gemm_store(grad, am, !ta, g, false);
    else
      gemm_store(grad, g, true, am, ta);
  }
  return true;
}

ad_tensor *ad_matmul(ad_ctx *ctx, ad_tensor *a, ad_tensor *b, bool trans_a, bool trans_b) {
  ad_attrs at = {.matmul = {.trans_a = trans_a, .trans_b = trans_b}};
  return ad_apply2(ctx, AD_OP_MATMUL, a, b, &at);
}

/* One gradcheck case: A's and B's shapes (ndim 0 ends the table) and the
 * flags. */
static const struct {
  int na, nb;
  int64_t sa[4], sb[4];
  bool ta, tb;
} matmul_cases[] = {
    {2, 2, {3, 4}, {4, 5}, false, false}, /* the four transpose combinations */
    {2, 2, {4, 3}, {4, 5}, true, false},
    {2, 2, {3, 4}, {5, 4}, false, true},
    {2, 2, {4, 3}, {5, 4}, true, true},
    {3, 3, {2, 3, 4}, {2, 4, 5}, false, false},       /* equal batches */
    {3, 2, {2, 3, 4}, {4, 5}, false, false},          /* batched x shared 2-D */
    {4, 4, {2, 1, 3, 4}, {1, 2, 4, 5}, false, false}, /* batches broadcast both ways */
    {4, 3, {2, 2, 3, 4}, {2, 5, 4}, false, true},     /* batch ranks differ */
    {2, 3, {4, 3}, {2, 4, 5}, true, false},           /* shared 2-D x batched */
    {1, 2, {4}, {4, 5}, false, false},                /* vector x matrix */
    {2, 1, {3, 4}, {4}, false, true},                 /* matrix x vector (flag ignored) */
    {1, 1, {4}, {4}, true, true},                     /* dot product (flags ignored) */
    {1, 3, {4}, {2, 5, 4}, false, true},              /* vector x batch */
    {3, 1, {2, 4, 3}, {4}, true, false},              /* batch x vector */
};

static int matmul_sample(const ad_sample_call *s) {
  if (s->variant >= (int)(sizeof matmul_cases / sizeof *matmul_cases)) return 0;
  int v = s->variant;
  s->attrs->matmul =
      (ad_matmul_attrs){.trans_a = matmul_cases[v].ta, .trans_b = matmul_cases[v].tb};
  s->in[0] = ad_sample_tensor(s, matmul_cases[v].na, matmul_cases[v].sa, -1, 1, true);
  s->in[1] = ad_sample_tensor(s, matmul_cases[v].nb, matmul_cases[v].sb, -1, 1, true);
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_matmul = {
    .name = "matmul",
    .arity = 2,
    .attrs = AD_ATTRS_MATMUL,
    .shape = matmul_shape,
    .forward = matmul_fwd,
    .backward = matmul_bwd,
    .grad_into = matmul_grad_into,
    .sample = matmul_sample,
    .math = "Y = op(A) op(B), op = transpose if trans_a / trans_b; batch dims broadcast",
    .inputs = {"A", "B"},
    .grads = {"dY op(B)^T (or op(B) dY^T when transposed)", "op(A)^T dY (or dY^T op(A))"},
};
