/* op_matmul.c: (batched) matrix product with transpose flags. */
#include "kernels/kernels.h"
#include "ops.h"

/* --------------------------------------------------------------- matmul */

static ad_status matmul_shape(const ad_call *c) {
  const ad_tensor *a = c->in[0], *b = c->in[1];
  ad_tensor *o = c->out;
  char sa[64], sb[64];
  ad_status st = ad_check_float_same(c->ctx, c->name, 2, c->in);
  if (st != AD_OK) return st;
  if (a->ndim < 2 || b->ndim < 2)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: inputs need at least 2 dims: %s x %s", c->name,
                        ad_shape_str(a, sa, sizeof sa), ad_shape_str(b, sb, sizeof sb));
  bool ta = c->attrs->matmul.trans_a, tb = c->attrs->matmul.trans_b;
  int64_t m = a->shape[a->ndim - (ta ? 1 : 2)], ka = a->shape[a->ndim - (ta ? 2 : 1)];
  int64_t kb = b->shape[b->ndim - (tb ? 1 : 2)], nn = b->shape[b->ndim - (tb ? 2 : 1)];
  if (ka != kb)
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: inner dimensions differ: %s%s x %s%s", c->name,
                        ad_shape_str(a, sa, sizeof sa), ta ? "^T" : "",
                        ad_shape_str(b, sb, sizeof sb), tb ? "^T" : "");
  const ad_tensor *lead = a->ndim >= b->ndim ? a : b;
  if (a->ndim > 2 && b->ndim > 2) {
    bool same = a->ndim == b->ndim;
    for (int i = 0; same && i < a->ndim - 2; i++) same = a->shape[i] == b->shape[i];
    if (!same)
      return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: batch dimensions differ: %s x %s", c->name,
                          ad_shape_str(a, sa, sizeof sa), ad_shape_str(b, sb, sizeof sb));
  }
  o->ndim = lead->ndim;
  for (int i = 0; i < lead->ndim - 2; i++) o->shape[i] = lead->shape[i];
  o->shape[lead->ndim - 2] = m;
  o->shape[lead->ndim - 1] = nn;
  o->dtype = a->dtype;
  return AD_OK;
}

/* Leading (batch) dims of x: all but the last two. */
static int64_t batch_of(const ad_tensor *x) { return ad_shape_size(x->ndim - 2, x->shape); }

/* Y = op(A) op(B), batch by batch; a 2-D side is shared by every batch. */
static void matmul_fwd(const ad_call *c) {
  const ad_tensor *a = c->in[0], *b = c->in[1];
  ad_tensor *out = c->out;
  bool ta = c->attrs->matmul.trans_a, tb = c->attrs->matmul.trans_b;
  int64_t m = out->shape[out->ndim - 2], nn = out->shape[out->ndim - 1];
  int64_t k = a->shape[a->ndim - (ta ? 2 : 1)];
  int64_t batches = batch_of(out);
  size_t es = ad_dsize(out->dtype);
  void *t;
  if (batches == 1 && ad_matmul_xwt_pays(ta, tb, m, nn, k) &&
      (t = ad_arena_alloc(c->ctx, (size_t)(m * nn) * es))) {
    ad_matmul_xwt(out->dtype, m, nn, k, a->data, b->data, t, out->data);
    return;
  }
  int64_t sa = a->ndim > 2 ? m * k : 0, sb = b->ndim > 2 ? k * nn : 0;
  for (int64_t i = 0; i < batches; i++)
    ad_gemm_split(out->dtype, ta, tb, m, nn, k, (const char *)a->data + (size_t)(i * sa) * es,
                  ta ? m : k, (const char *)b->data + (size_t)(i * sb) * es, tb ? k : nn, 0.0,
                  (char *)out->data + (size_t)(i * m * nn) * es, nn);
}

/* A batched dY against a 2-D input gives a batched contribution, which the
 * engine sums over the batch. */
static ad_status matmul_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *a = c->in[0], *b = c->in[1], *dy = c->gout;
  bool ta = c->attrs->matmul.trans_a, tb = c->attrs->matmul.trans_b;
  if (c->needs[0]) {
    ad_status st = ad_call_set_grad(
        c, 0, !ta ? ad_matmul(ctx, dy, b, false, !tb) : ad_matmul(ctx, b, dy, tb, true));
    if (st != AD_OK) return st;
  }
  if (c->needs[1])
    return ad_call_set_grad(
        c, 1, !tb ? ad_matmul(ctx, a, dy, !ta, false) : ad_matmul(ctx, dy, a, true, ta));
  return AD_OK;
}

/* dst = op(x) op(w) for 2-D x, w (GEMM with beta = 0). */
static void gemm_store(ad_tensor *dst, const ad_tensor *x, bool tx, const ad_tensor *w, bool tw) {
  int64_t m = x->shape[tx ? 1 : 0], k = x->shape[tx ? 0 : 1], nn = w->shape[tw ? 0 : 1];
  ad_gemm_split(dst->dtype, tx, tw, m, nn, k, x->data, x->shape[1], w->data, w->shape[1], 0.0,
                dst->data, nn);
}

/* For 2-D A and B, the GEMM that makes input k's contribution stores a new
 * gradient straight into its buffer (beta = 0): no temporary, no clearing,
 * no copy. Adding to an existing one is declined: a GEMM with beta = 1
 * rounds differently from the product plus an add once k is blocked. */
static bool matmul_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  const ad_tensor *a = c->in[0], *b = c->in[1], *dy = c->gout;
  if (!overwrite || a->ndim != 2 || b->ndim != 2) return false;
  bool ta = c->attrs->matmul.trans_a, tb = c->attrs->matmul.trans_b;
  if (k == 0) {
    if (!ta)
      gemm_store(grad, dy, false, b, !tb);
    else
      gemm_store(grad, b, tb, dy, true);
  } else {
    if (!tb)
      gemm_store(grad, a, !ta, dy, false);
    else
      gemm_store(grad, dy, true, a, ta);
  }
  return true;
}

ad_tensor *ad_matmul(ad_ctx *ctx, ad_tensor *a, ad_tensor *b, bool trans_a, bool trans_b) {
  ad_attrs at = {.matmul = {.trans_a = trans_a, .trans_b = trans_b}};
  return ad_apply2(ctx, AD_OP_MATMUL, a, b, &at);
}

/* variants 0-3: the four transpose combinations of [3,4] x [4,5];
 * 4: batched x batched; 5: batched x shared 2-D */
static int matmul_sample(const ad_sample_call *s) {
  int v = s->variant;
  if (v > 5) return 0;
  int64_t m = 3, k = 4, nn = 5;
  if (v < 4) {
    bool ta = v & 1, tb = v & 2;
    s->attrs->matmul = (ad_matmul_attrs){.trans_a = ta, .trans_b = tb};
    int64_t sa[2] = {ta ? k : m, ta ? m : k}, sb[2] = {tb ? nn : k, tb ? k : nn};
    s->in[0] = ad_sample_tensor(s, 2, sa, -1, 1, true);
    s->in[1] = ad_sample_tensor(s, 2, sb, -1, 1, true);
  } else {
    int64_t sa[3] = {2, m, k}, sb[3] = {2, k, nn};
    s->in[0] = ad_sample_tensor(s, 3, sa, -1, 1, true);
    s->in[1] = v == 4 ? ad_sample_tensor(s, 3, sb, -1, 1, true)
                      : ad_sample_tensor(s, 2, sb + 1, -1, 1, true);
  }
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
    .math = "Y = op(A) op(B), op = transpose if trans_a / trans_b",
    .inputs = {"A", "B"},
    .grads = {"dY op(B)^T (or op(B) dY^T when transposed)", "op(A)^T dY (or dY^T op(A))"},
};
