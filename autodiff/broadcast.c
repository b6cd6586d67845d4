/* broadcast.c: checks and index walks shared by op families: float dtype
 * checks, NumPy broadcasting of shapes, axis normalisation, the row walk
 * over broadcast operands, and the shape rule of AD_OP_ELEMENTWISE ops. */
#include "ad_internal.h"

bool ad_broadcast_shape(int na, const int64_t *sa, int nb, const int64_t *sb, int *nout,
                        int64_t *out) {
  int n = na > nb ? na : nb;
  for (int i = 0; i < n; i++) {
    int64_t da = i < n - na ? 1 : sa[i - (n - na)];
    int64_t db = i < n - nb ? 1 : sb[i - (n - nb)];
    if (da != db && da != 1 && db != 1) return false;
    out[i] = da == 1 ? db : da;
  }
  *nout = n;
  return true;
}

ad_status ad_check_float_same(ad_ctx *ctx, const char *op, int n, ad_tensor *const *in) {
  for (int i = 0; i < n; i++) {
    if (!ad_is_float(in[i]->dtype))
      return ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %d is %s; a float dtype is needed", op, i,
                          ad_dtype_name(in[i]->dtype));
    if (in[i]->dtype != in[0]->dtype)
      return ad_set_error(ctx, AD_ERR_DTYPE, "%s: dtypes differ: input 0 is %s, input %d is %s", op,
                          ad_dtype_name(in[0]->dtype), i, ad_dtype_name(in[i]->dtype));
  }
  return AD_OK;
}

ad_status ad_shape_elementwise(const ad_call *c) {
  if (ad_check_float_same(c->ctx, c->name, c->n, c->in) != AD_OK) return ad_last_status(c->ctx);
  ad_tensor *o = c->out;
  o->dtype = c->in[0]->dtype;
  o->ndim = c->in[0]->ndim;
  memcpy(o->shape, c->in[0]->shape, sizeof(int64_t) * (size_t)o->ndim);
  for (int k = 1; k < c->n; k++) {
    const ad_tensor *x = c->in[k];
    if (ad_same_shape(o, x)) continue;
    int64_t s[AD_MAX_DIMS];
    int nd;
    if (!ad_broadcast_shape(o->ndim, o->shape, x->ndim, x->shape, &nd, s)) {
      char sa[64], sb[64];
      return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: shapes do not broadcast: %s and %s", c->name,
                          ad_shape_str(c->in[0], sa, sizeof sa), ad_shape_str(x, sb, sizeof sb));
    }
    o->ndim = nd;
    memcpy(o->shape, s, sizeof(int64_t) * (size_t)nd);
  }
  return AD_OK;
}

int ad_norm_axis(int axis, int ndim) {
  if (axis < 0) axis += ndim;
  return axis >= 0 && axis < ndim ? axis : -1;
}

/* Strides of x seen through out's shape (0 along broadcast dims). */
void ad_bc_strides(const ad_tensor *x, const ad_tensor *out, int64_t *st) {
  int off = out->ndim - x->ndim;
  int64_t s = 1;
  for (int d = out->ndim - 1; d >= 0; d--) {
    int xd = d - off;
    st[d] = xd < 0 || x->shape[xd] == 1 ? 0 : s;
    if (xd >= 0) s *= x->shape[xd];
  }
}

void ad_bc_init(ad_bc_rows *it, int nin, ad_tensor *const *in, const ad_tensor *out) {
  it->nin = nin;
  for (int i = 0; i < nin; i++) ad_bc_strides(in[i], out, it->st[i]);
  it->len = out->ndim ? out->shape[out->ndim - 1] : 1;
  it->rows = it->len ? out->size / it->len : 0;
  it->nd = out->ndim > 0 ? out->ndim - 1 : 0;
}

void ad_bc_merge(ad_bc_rows *it, const ad_tensor *out) {
  int last = out->ndim - 1, d = it->nd - 1;
  if (last < 0) return;
  for (; d >= 0 && it->len > 0; d--) {
    if (out->shape[d] == 1) continue; /* its index is always 0 */
    if (it->len == 1) {               /* a row of one: dim d's strides become the row's */
      for (int i = 0; i < it->nin; i++) it->st[i][last] = it->st[i][d];
      it->len = out->shape[d];
      continue;
    }
    bool ok = true;
    for (int i = 0; i < it->nin; i++) ok &= it->st[i][d] == it->st[i][last] * it->len;
    if (!ok) break;
    it->len *= out->shape[d];
  }
  it->nd = d + 1;
  it->rows = it->len ? out->size / it->len : 0;
}

void ad_bc_row(const ad_bc_rows *it, const ad_tensor *out, int64_t r, int64_t *off) {
  for (int i = 0; i < it->nin; i++) off[i] = 0;
  for (int d = it->nd - 1; d >= 0; d--) {
    int64_t idx = r % out->shape[d];
    r /= out->shape[d];
    for (int i = 0; i < it->nin; i++) off[i] += idx * it->st[i][d];
  }
}

void ad_bc_next_span(const ad_bc_rows *it, const ad_tensor *out, ad_bc_cursor *cu, int64_t e,
                     int64_t end, int64_t *off, int64_t *n) {
  int last = out->ndim - 1;
  int64_t i0 = 0;
  if (cu->r >= 0 && e == (cu->r + 1) * it->len) { /* the next row: carry through the dims */
    cu->r++;
    for (int d = it->nd - 1; d >= 0; d--) {
      for (int i = 0; i < it->nin; i++) cu->base[i] += it->st[i][d];
      if (++cu->idx[d] < out->shape[d]) break;
      for (int i = 0; i < it->nin; i++) cu->base[i] -= it->st[i][d] * out->shape[d];
      cu->idx[d] = 0;
    }
  } else { /* anywhere: the row's index per dim by division (as ad_bc_row) */
    int64_t r = e / it->len, q = r;
    i0 = e - r * it->len;
    cu->r = r;
    for (int i = 0; i < it->nin; i++) cu->base[i] = 0;
    for (int d = it->nd - 1; d >= 0; d--) {
      cu->idx[d] = q % out->shape[d];
      q /= out->shape[d];
      for (int i = 0; i < it->nin; i++) cu->base[i] += cu->idx[d] * it->st[i][d];
    }
  }
  for (int i = 0; i < it->nin; i++) off[i] = cu->base[i] + (last >= 0 ? i0 * it->st[i][last] : 0);
  *n = it->len - i0 < end - e ? it->len - i0 : end - e;
}
