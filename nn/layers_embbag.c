/* layers_embbag.c: PyTorch's nn.EmbeddingBag (F.embedding_bag) and
 * torch.embedding_renorm_ (Embedding's and EmbeddingBag's max_norm),
 * composed of the engine's public ops, so gradients of gradients work:
 *
 *   kept   = the positions whose index is not padding_idx (in order)
 *   sum:   y = index_select_add(w, idx[kept], bag[kept], B), one pass (its
 *          gradient the same op with the indices swapped); with
 *          per_sample_weights or scale_grad_by_freq
 *          y = index_add(embedding(w, idx[kept]) [* psw[kept]], bag[kept], B)
 *   mean:  the sum / max(1, the number of kept entries of the bag)
 *   max:   y[b, d] = w[r, d], r the first kept entry of bag b with the
 *          largest w[r, d] (strictly greater replaces: PyTorch's rule, a
 *          NaN wins only as the first entry); an index_select of the flat
 *          weight, so the gradient goes to that row alone
 *   empty bags (no kept entry) give zeros
 *
 * The bags are arena AD_I32 index tensors made on the host from the
 * offsets; the segment sums are index_select_add or index_add (O(entries * dim),
 * whatever the vocabulary). max_norm renormalises the rows looked up in
 * place, without gradient, before the lookup (torch.embedding_renorm_). */
#include "nn_internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------- renorm */

static int cmp_i32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

/* PyTorch's row.norm(p): in the row's dtype (a float32 norm is rounded to
 * float32, as its .item() reads it). For float32 each |v|^p is rounded to
 * float32 and a sum past FLT_MAX is inf, as PyTorch's float32 reduction
 * (a row of 1e20 has norm inf, one of 1e-30 a 2-norm of 0), though the sum
 * itself is taken in double. */
static double row_norm(const ad_tensor *w, int64_t r, double p) {
  int64_t dim = w->shape[1];
  bool f32 = w->dtype == AD_F32;
  double acc = 0;
  for (int64_t j = 0; j < dim; j++) {
    double v = fabs(ad_tensor_get(w, r * dim + j));
    if (isinf(p)) {
      acc = isnan(v) || v > acc ? v : acc;
    } else {
      double t = p == 1 ? v : p == 2 ? v * v : pow(v, p);
      acc += f32 ? (double)(float)t : t;
    }
  }
  if (f32 && acc > FLT_MAX) acc = INFINITY;
  double n = isinf(p) || p == 1 ? acc : p == 2 ? sqrt(acc) : pow(acc, 1 / p);
  return f32 ? (double)(float)n : n;
}

/* The check of max_norm and norm_type for fn. */
static bool renorm_args_ok(ad_ctx *ctx, const char *fn, double max_norm, double norm_type) {
  if (!(max_norm >= 0) || isinf(max_norm)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: max_norm %g must be finite and >= 0 (0: none)", fn,
                 max_norm);
    return false;
  }
  if (!(norm_type >= 0)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: norm_type %g must be > 0 or inf (0: 2)", fn, norm_type);
    return false;
  }
  return true;
}

/* The renormalisation itself, on checked arguments (indices in range):
 * first the rows to change and room for their old values (nothing is
 * written when that fails), then the weight marked modified and the rows
 * scaled; nn_renorm_finish restores them for a caller whose later steps
 * failed, so a refused call changes nothing. */
ad_status nn_renorm_apply(ad_ctx *ctx, ad_tensor *w, const int32_t *idx, int64_t n, double max_norm,
                          double p, nn_renorm_undo *u) {
  *u = (nn_renorm_undo){.ctx = ctx, .w = w};
  if (n == 0) return AD_OK;
  size_t bytes = (size_t)n * sizeof(int32_t);
  int32_t *s = ad_malloc(ctx, bytes);
  if (!s) return ad_last_status(ctx);
  memcpy(s, idx, bytes);
  qsort(s, (size_t)n, sizeof *s, cmp_i32);
  int64_t dim = w->shape[1], m = 0; /* the rows to change, to the front of s */
  for (int64_t i = 0; i < n; i++)
    if ((i == 0 || s[i] != s[i - 1]) && row_norm(w, s[i], p) > max_norm) s[m++] = s[i];
  size_t es = ad_dtype_size(w->dtype), ob = (size_t)(m * dim) * es;
  void *old = m ? ad_malloc(ctx, ob) : NULL;
  if (m && (!old || ad_tensor_mark_modified(w) != AD_OK)) {
    if (old) ad_free(ctx, old, ob);
    ad_free(ctx, s, bytes);
    return ad_last_status(ctx);
  }
  for (int64_t k = 0; k < m; k++) {
    double scale = max_norm / (row_norm(w, s[k], p) + 1e-7);
    char *r = (char *)w->data + (size_t)((int64_t)s[k] * dim) * es;
    memcpy((char *)old + (size_t)(k * dim) * es, r, (size_t)dim * es);
    if (w->dtype == AD_F32) {
      float f = (float)scale;
      for (int64_t j = 0; j < dim; j++) ((float *)r)[j] *= f;
    } else {
      for (int64_t j = 0; j < dim; j++) ((double *)r)[j] *= scale;
    }
  }
  *u = (nn_renorm_undo){ctx, w, s, bytes, old, ob, m};
  return AD_OK;
}

void nn_renorm_finish(nn_renorm_undo *u, bool restore) {
  if (!u->ctx) return;
  size_t es = u->w ? ad_dtype_size(u->w->dtype) : 0;
  int64_t dim = u->w ? u->w->shape[1] : 0;
  for (int64_t k = 0; restore && k < u->rows; k++)
    memcpy((char *)u->w->data + (size_t)((int64_t)u->row[k] * dim) * es,
           (char *)u->old + (size_t)(k * dim) * es, (size_t)dim * es);
  if (u->row) ad_free(u->ctx, u->row, u->row_bytes);
  if (u->old) ad_free(u->ctx, u->old, u->old_bytes);
  *u = (nn_renorm_undo){0};
}

/* Checks that weight is a live float [num, dim] tensor of ctx, for fn. */
static bool weight_ok(ad_ctx *ctx, const char *fn, const ad_tensor *w) {
  if (nn_check_input(ctx, fn, "weight", w) != AD_OK) return false;
  char a[64];
  if (w->dtype != AD_F32 && w->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: weight %s is %s; it must be float", fn,
                 ad_shape_str(w, a, sizeof a), ad_dtype_name(w->dtype));
    return false;
  }
  if (w->ndim != 2) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: weight %s must be [num_embeddings, embedding_dim]", fn,
                 ad_shape_str(w, a, sizeof a));
    return false;
  }
  return true;
}

/* Checks that the AD_I32 indices are in 0..num-1, naming the first that is
 * not. */
static bool indices_ok(ad_ctx *ctx, const char *fn, const ad_tensor *idx, int64_t num) {
  char a[64];
  if (idx->dtype != AD_I32) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: indices %s are %s; they must be i32", fn,
                 ad_shape_str(idx, a, sizeof a), ad_dtype_name(idx->dtype));
    return false;
  }
  const int32_t *p = idx->data;
  for (int64_t i = 0; i < idx->size; i++) {
    if (p[i] >= 0 && p[i] < num) continue;
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: index %d at position %lld of indices %s is outside the vocabulary of %lld "
                 "(0..%lld)",
                 fn, p[i], (long long)i, ad_shape_str(idx, a, sizeof a), (long long)num,
                 (long long)num - 1);
    return false;
  }
  return true;
}

ad_status nn_embedding_renorm(ad_ctx *ctx, ad_tensor *weight, const ad_tensor *indices,
                              double max_norm, double norm_type) {
  const char *fn = "embedding_renorm";
  if (!ctx) return AD_ERR_NULL;
  /* the NULL checks return their own status: a NULL error does not replace
   * a pending one, so ad_last_status could name an earlier call's */
  if (!weight) return nn_null_arg(ctx, fn, "weight");
  if (!indices) return nn_null_arg(ctx, fn, "indices");
  if (!weight_ok(ctx, fn, weight)) return ad_last_status(ctx);
  ad_status st = nn_check_input(ctx, fn, "indices", indices);
  if (st != AD_OK) return st;
  if (!indices_ok(ctx, fn, indices, weight->shape[0])) return ad_last_status(ctx);
  if (!(max_norm >= 0) || isinf(max_norm) || max_norm == 0)
    return ad_set_error(ctx, AD_ERR_ARG, "%s: max_norm %g must be finite and > 0", fn, max_norm);
  if (!renorm_args_ok(ctx, fn, max_norm, norm_type)) return ad_last_status(ctx);
  nn_renorm_undo u;
  st = nn_renorm_apply(ctx, weight, indices->data, indices->size, max_norm,
                       norm_type == 0 ? 2.0 : norm_type, &u);
  nn_renorm_finish(&u, false);
  return st;
}

/* ----------------------------------------------------------- embedding_bag */

static const char *const mode_names[] = {"mean", "sum", "max"};

/* The bag of each entry of input (1-D with offsets, or 2-D [B, L]) into
 * bag[], and the number of bags into *nbags; false with the error recorded
 * for bad offsets. */
static bool bags_of(ad_ctx *ctx, const char *fn, const ad_tensor *input, const int64_t *offsets,
                    int64_t n_offsets, bool last, int32_t *bag, int64_t *nbags) {
  int64_t n = input->size;
  if (input->ndim == 2) {
    int64_t L = input->shape[1];
    *nbags = input->shape[0];
    for (int64_t i = 0; i < n; i++) bag[i] = (int32_t)(i / L);
    return true;
  }
  int64_t B = last ? n_offsets - 1 : n_offsets;
  for (int64_t b = 0; b < n_offsets; b++) {
    int64_t o = offsets[b];
    if (b == 0 && o != 0) {
      ad_set_error(ctx, AD_ERR_ARG, "%s: offsets[0] is %lld; the first bag must start at 0", fn,
                   (long long)o);
      return false;
    }
    if (b > 0 && o < offsets[b - 1]) {
      ad_set_error(ctx, AD_ERR_ARG,
                   "%s: offsets decrease at %lld (%lld after %lld); they must not decrease", fn,
                   (long long)b, (long long)o, (long long)offsets[b - 1]);
      return false;
    }
    if (o > n) {
      ad_set_error(ctx, AD_ERR_ARG, "%s: offsets[%lld] = %lld is past the end of input (%lld)", fn,
                   (long long)b, (long long)o, (long long)n);
      return false;
    }
  }
  if (last && offsets[n_offsets - 1] != n) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: with include_last_offset the last offset %lld must be the input's length "
                 "%lld",
                 fn, (long long)offsets[n_offsets - 1], (long long)n);
    return false;
  }
  if (B > INT32_MAX) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: %lld bags are more than an i32 index counts", fn,
                 (long long)B);
    return false;
  }
  for (int64_t b = 0; b < B; b++) {
    int64_t end = b + 1 < n_offsets ? offsets[b + 1] : n;
    for (int64_t i = offsets[b]; i < end; i++) bag[i] = (int32_t)b;
  }
  *nbags = B;
  return true;
}

/* Checks the arguments of nn_embedding_bag other than the offsets. */
static bool bag_args_ok(ad_ctx *ctx, const char *fn, ad_tensor *weight, ad_tensor *input,
                        const int64_t *offsets, int64_t n_offsets, ad_tensor *psw,
                        const nn_embedding_bag_opts *o) {
  char a[64], b[64];
  if (!weight_ok(ctx, fn, weight)) return false;
  if (nn_check_input(ctx, fn, "input", input) != AD_OK) return false;
  if (psw && nn_check_input(ctx, fn, "per_sample_weights", psw) != AD_OK) return false;
  if ((unsigned)o->mode > NN_BAG_MAX) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: mode %d is none of mean, sum, max", fn, (int)o->mode);
    return false;
  }
  int64_t num = weight->shape[0];
  if (o->padding && (o->padding_idx < -num || o->padding_idx >= num)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: padding_idx %lld is outside -%lld..%lld", fn,
                 (long long)o->padding_idx, (long long)num, (long long)num - 1);
    return false;
  }
  if (!renorm_args_ok(ctx, fn, o->max_norm, o->norm_type)) return false;
  if (o->scale_grad_by_freq && o->mode == NN_BAG_MAX) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: mode max does not support scale_grad_by_freq", fn);
    return false;
  }
  if (o->mode == NN_BAG_MAX && weight->size > INT32_MAX) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: mode max indexes weight %s's elements with i32; too many",
                 fn, ad_shape_str(weight, a, sizeof a));
    return false;
  }
  if (input->ndim != 1 && input->ndim != 2) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be 1-D (with offsets) or 2-D [B, L]", fn,
                 ad_shape_str(input, a, sizeof a));
    return false;
  }
  /* positions in the input (kept entries, per-sample weights) are i32 */
  if (input->size > INT32_MAX) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: input %s has more entries than an i32 position counts", fn,
                 ad_shape_str(input, a, sizeof a));
    return false;
  }
  if (!indices_ok(ctx, fn, input, num)) return false;
  if (input->ndim == 2 && (offsets || n_offsets)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: input %s is 2-D (bags of fixed length): offsets must be NULL and 0", fn,
                 ad_shape_str(input, a, sizeof a));
    return false;
  }
  if (input->ndim == 2 && o->include_last_offset) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: include_last_offset needs a 1-D input with offsets", fn);
    return false;
  }
  if (input->ndim == 2 && input->shape[0] > INT32_MAX) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: input %s has more bags than an i32 index counts", fn,
                 ad_shape_str(input, a, sizeof a));
    return false;
  }
  if (input->ndim == 1 && !offsets) {
    ad_set_error(ctx, AD_ERR_NULL, "%s: input %s is 1-D: offsets is NULL", fn,
                 ad_shape_str(input, a, sizeof a));
    return false;
  }
  if (input->ndim == 1 && n_offsets < 1) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: %lld offsets; a 1-D input needs at least one", fn,
                 (long long)n_offsets);
    return false;
  }
  if (psw) {
    if (o->mode != NN_BAG_SUM) {
      ad_set_error(ctx, AD_ERR_ARG, "%s: per_sample_weights need mode sum (mode is %s)", fn,
                   mode_names[o->mode]);
      return false;
    }
    if (psw->dtype != weight->dtype) {
      ad_set_error(ctx, AD_ERR_DTYPE, "%s: per_sample_weights are %s, weight is %s", fn,
                   ad_dtype_name(psw->dtype), ad_dtype_name(weight->dtype));
      return false;
    }
    bool same = psw->ndim == input->ndim;
    for (int k = 0; same && k < input->ndim; k++) same = psw->shape[k] == input->shape[k];
    if (!same) {
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: per_sample_weights %s do not have input's shape %s", fn,
                   ad_shape_str(psw, a, sizeof a), ad_shape_str(input, b, sizeof b));
      return false;
    }
  }
  return true;
}

/* max mode: the row of the weight picked for each bag and dim (each
 * column's maximum over the bag's rows), and whether some bag is empty
 * (then *keep is the 1/0 mask of the non-empty bags, [B, 1]). */
static ad_tensor *bag_max(ad_ctx *ctx, ad_tensor *w, const int32_t *idx, const int32_t *bag,
                          const int32_t *kept, int64_t m, int64_t B) {
  int64_t dim = w->shape[1], sh[2] = {B, dim}, one[2] = {B, 1};
  ad_tensor *sel = nn_tmp_tensor(ctx, AD_I32, 2, sh);
  if (!sel) return NULL;
  int32_t *s = sel->data;
  for (int64_t i = 0; i < B * dim; i++) s[i] = -1;
  /* each entry's row against its bag's maxima so far (kept beside the
   * picks, in the weight's dtype: a loop of selects that vectorizes, where
   * an element access per value made the forward slow); a NaN is picked
   * only first, as PyTorch's loop does */
  size_t best_bytes = (size_t)(B * dim > 0 ? B * dim : 1) * ad_dtype_size(w->dtype);
  void *best = ad_malloc(ctx, best_bytes);
  if (!best) return NULL;
#define BAG_PICK(T)                                                                                \
  do {                                                                                             \
    const T *W = w->data;                                                                          \
    for (int64_t k = 0; k < m; k++) {                                                              \
      int64_t p = kept[k], r = idx[p];                                                             \
      int32_t *sb = s + (int64_t)bag[p] * dim;                                                     \
      T *bb = (T *)best + (int64_t)bag[p] * dim;                                                   \
      const T *wr = W + r * dim;                                                                   \
      for (int64_t d = 0; d < dim; d++) {                                                          \
        bool take = sb[d] < 0 || wr[d] > bb[d];                                                    \
        sb[d] = take ? (int32_t)r : sb[d];                                                         \
        bb[d] = take ? wr[d] : bb[d];                                                              \
      }                                                                                            \
    }                                                                                              \
  } while (0)
  if (w->dtype == AD_F32)
    BAG_PICK(float);
  else
    BAG_PICK(double);
#undef BAG_PICK
  ad_free(ctx, best, best_bytes);
  bool empty = false;
  for (int64_t b = 0; b < B && !empty; b++) empty = dim > 0 && s[b * dim] < 0;
  ad_tensor *keep = NULL;
  if (empty) {
    if (!(keep = nn_tmp_tensor(ctx, w->dtype, 2, one))) return NULL;
    for (int64_t b = 0; b < B; b++) {
      bool e = s[b * dim] < 0;
      ad_tensor_set(keep, b, e ? 0.0 : 1.0);
      for (int64_t d = 0; e && d < dim; d++) s[b * dim + d] = 0; /* any row; masked below */
    }
  }
  ad_tensor *y;
  if (w->shape[0] > 0) {
    /* torch.gather(w, 0, rows): its gradient goes straight into w's (the
     * flat picks through a reshape, a view, took a temporary and a copy
     * into it) */
    y = ad_gather(ctx, w, 0, sel);
  } else { /* a weight of no rows: every bag is empty; one zero to read (masked) */
    int64_t flat = w->size;
    ad_tensor *src = ad_pad(ctx, ad_reshape(ctx, w, 1, &flat), 0, 0, 1);
    y = ad_index_select(ctx, src, sel);
  }
  return keep ? ad_where(ctx, keep, y, ad_scalar(ctx, w->dtype, 0.0)) : y;
}

ad_tensor *nn_embedding_bag(ad_ctx *ctx, ad_tensor *weight, ad_tensor *input,
                            const int64_t *offsets, int64_t n_offsets,
                            ad_tensor *per_sample_weights, const nn_embedding_bag_opts *opts) {
  const char *fn = "embedding_bag";
  if (!ctx) return NULL;
  nn_embedding_bag_opts o = {0};
  if (opts) o = *opts;
  if (!weight) return nn_null_arg(ctx, fn, "weight"), NULL;
  if (!input) return nn_null_arg(ctx, fn, "input"), NULL;
  if (!bag_args_ok(ctx, fn, weight, input, offsets, n_offsets, per_sample_weights, &o)) return NULL;
  int64_t n = input->size, num = weight->shape[0], B = 0;
  int64_t pad = !o.padding ? -1 : o.padding_idx < 0 ? o.padding_idx + num : o.padding_idx;
  size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(int32_t);
  int32_t *bag = ad_malloc(ctx, bytes), *kept = bag ? ad_malloc(ctx, bytes) : NULL;
  ad_tensor *y = NULL;
  nn_renorm_undo undo = {0};
  if (!kept) goto done;
  if (!bags_of(ctx, fn, input, offsets, n_offsets, o.include_last_offset, bag, &B)) goto done;
  const int32_t *idx = input->data;
  if (o.max_norm > 0 && nn_renorm_apply(ctx, weight, idx, n, o.max_norm,
                                        o.norm_type == 0 ? 2.0 : o.norm_type, &undo) != AD_OK)
    goto done;
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++)
    if (idx[i] != pad) kept[m++] = (int32_t)i;
  if (o.mode == NN_BAG_MAX) {
    y = bag_max(ctx, weight, idx, bag, kept, m, B);
    goto done;
  }
  /* the kept entries' indices and bags, and the bags' sizes (mean) */
  ad_tensor *ki = nn_tmp_tensor(ctx, AD_I32, 1, &m), *kb = nn_tmp_tensor(ctx, AD_I32, 1, &m);
  ad_tensor *kp = per_sample_weights ? nn_tmp_tensor(ctx, AD_I32, 1, &m) : NULL;
  if (!ki || !kb || (per_sample_weights && !kp)) goto done;
  for (int64_t k = 0; k < m; k++) {
    ((int32_t *)ki->data)[k] = idx[kept[k]];
    ((int32_t *)kb->data)[k] = bag[kept[k]];
    if (kp) ((int32_t *)kp->data)[k] = kept[k];
  }
  if (!kp && !o.scale_grad_by_freq) {
    y = ad_index_select_add(ctx, weight, 0, ki, kb, B); /* [B, dim], no [m, dim] between */
  } else {
    ad_embedding_opts eo = {.padding = false, .scale_grad_by_freq = o.scale_grad_by_freq};
    ad_tensor *e = ad_embedding_ext(ctx, weight, ki, &eo); /* [m, dim] */
    if (kp) {
      int64_t col[2] = {n, 1};
      e = ad_mul(ctx, e, ad_index_select(ctx, ad_reshape(ctx, per_sample_weights, 2, col), kp));
    }
    y = ad_index_add(ctx, e, kb, B); /* [B, dim] */
  }
  if (y && o.mode == NN_BAG_MEAN) {
    int64_t one[2] = {B, 1};
    ad_tensor *cnt = nn_tmp_tensor(ctx, weight->dtype, 2, one);
    if (!cnt) {
      y = NULL;
      goto done;
    }
    /* the kept entries' bags do not decrease (bags_of): each bag's count
     * is its run, counted as an integer (PyTorch's bag_size) */
    for (int64_t b = 0, k = 0; b < B; b++) {
      int64_t c = 0;
      for (; k < m && bag[kept[k]] == b; k++) c++;
      ad_tensor_set(cnt, b, c ? (double)c : 1.0); /* an empty bag: 0 / 1 */
    }
    y = ad_div(ctx, y, cnt);
  }
done:
  nn_renorm_finish(&undo, !y); /* a refused call leaves the weight as it was */
  if (kept) ad_free(ctx, kept, bytes);
  if (bag) ad_free(ctx, bag, bytes);
  return y;
}

/* ------------------------------------------------------------------ layer */

typedef struct bag_state {
  int64_t num, dim;
  nn_embedding_bag_opts o; /* padding_idx as given */
  ad_tensor *w;
} bag_state;

static const nn_layer_ops bag_ops;

ad_tensor *nn_embedding_bag_forward(nn_layer *l, ad_tensor *input, const int64_t *offsets,
                                    int64_t n_offsets, ad_tensor *per_sample_weights) {
  if (!l) return NULL;
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96];
  nn_layer_who(l, who, sizeof who);
  if (!nn_layer_runs(l, &bag_ops)) {
    ad_set_error(ctx, AD_ERR_ARG, "embedding_bag_forward: %s is not an EmbeddingBag", who);
    return NULL;
  }
  bag_state *s = nn_layer_state(l);
  ad_tensor *y = nn_embedding_bag(ctx, s->w, input, offsets, n_offsets, per_sample_weights, &s->o);
  if (y) nn_layer_note_output(l, y);
  return y;
}

static ad_tensor *bag_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)training;
  bag_state *s = nn_layer_state(l);
  return nn_embedding_bag(nn_layer_ctx(l), s->w, x, NULL, 0, NULL, &s->o);
}

static void bag_free(nn_layer *l) {
  bag_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* PyTorch's EmbeddingBag extra_repr. */
static void bag_describe(const nn_layer *l, nn_text *t) {
  const bag_state *s = nn_layer_state(l);
  nn_text_add(t, "%lld, %lld", (long long)s->num, (long long)s->dim);
  if (s->o.max_norm > 0) {
    nn_text_add(t, ", max_norm=");
    nn_text_num(t, s->o.max_norm);
  }
  if (s->o.norm_type != 0 && s->o.norm_type != 2) {
    nn_text_add(t, ", norm_type=");
    nn_text_num(t, s->o.norm_type);
  }
  if (s->o.scale_grad_by_freq) nn_text_add(t, ", scale_grad_by_freq=True");
  nn_text_add(t, ", mode=%s", mode_names[s->o.mode]);
  if (s->o.padding) {
    int64_t p = s->o.padding_idx < 0 ? s->o.padding_idx + s->num : s->o.padding_idx;
    nn_text_add(t, ", padding_idx=%lld", (long long)p);
  }
}

static const nn_layer_ops bag_ops = {bag_forward, bag_free, bag_describe};

nn_layer *nn_embedding_bag_new(ad_ctx *ctx, int64_t num, int64_t dim, ad_rng *rng,
                               const nn_embedding_bag_opts *opts) {
  const char *fn = "embedding_bag";
  if (!ctx) return NULL;
  nn_embedding_bag_opts o = {0};
  if (opts) o = *opts;
  if (num < 1 || dim < 1) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: num_embeddings %lld and embedding_dim %lld must be >= 1", fn,
                 (long long)num, (long long)dim);
    return NULL;
  }
  if ((unsigned)o.mode > NN_BAG_MAX) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: mode %d is none of mean, sum, max", fn, (int)o.mode);
    return NULL;
  }
  if (o.padding && (o.padding_idx < -num || o.padding_idx >= num)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: padding_idx %lld is outside -%lld..%lld", fn,
                 (long long)o.padding_idx, (long long)num, (long long)num - 1);
    return NULL;
  }
  if (!renorm_args_ok(ctx, fn, o.max_norm, o.norm_type)) return NULL;
  if (o.scale_grad_by_freq && o.mode == NN_BAG_MAX) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: mode max does not support scale_grad_by_freq", fn);
    return NULL;
  }
  if (o.dtype != AD_F32 && o.dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: parameters must be float, got %s", fn,
                 ad_dtype_name(o.dtype));
    return NULL;
  }
  if (!rng) return nn_null_arg(ctx, fn, "rng"), NULL;
  bag_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  *s = (bag_state){.num = num, .dim = dim, .o = o};
  nn_layer *l = nn_layer_new_ext(ctx, "embedding_bag", &bag_ops, s);
  if (!l) {
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  int64_t pad = !o.padding ? -1 : o.padding_idx < 0 ? o.padding_idx + num : o.padding_idx;
  s->w = nn_embedding_weight_new(nn_layer_params(l), "nn_embedding_bag_new", num, dim, o.dtype,
                                 o.weight_init, pad, rng);
  if (!s->w) {
    nn_layer_free(l);
    return NULL;
  }
  return l;
}
