/* layers_unpool.c: the indices of PyTorch's max pooling with
 * return_indices=True (nn_max_pool_indices, for any max pooling layer) and
 * their partial inverse, nn.MaxUnpool1d/2d/3d.
 *
 * MaxUnpool is a composite of public ops: the input's values are scattered
 * into zeros at the flat indices of the [planes * output plane] view
 * (ad_index_add, whose gradient is the gather ad_index_select, whose
 * gradient is ad_index_add again), so it is differentiable to any order.
 * Where several inputs of a plane name one output (overlapping pooling
 * windows sharing a maximum), PyTorch's CPU kernel writes them in order, so
 * the last one's value stays; here the others are set to 0 first (ad_where
 * against a constant mask, so a NaN or inf among them goes nowhere) and
 * the sum is that last value. Their gradient is then 0, the derivative of
 * that forward; PyTorch's backward gives each of them the output's
 * gradient (a gather at every index), which is not. */
#include "nn_internal.h"

#define UNPOOL_MAX_SIZE (INT64_C(1) << 30)

ad_tensor *nn_max_pool_indices(nn_layer *l, ad_tensor *x) {
  if (!l) return NULL;
  ad_ctx *ctx = nn_layer_ctx(l);
  if (nn_check_input(ctx, "max_pool_indices", "x", x) != AD_OK) return NULL;
  bool mine = false;
  ad_tensor *y = nn_pool2d_layer_indices(l, x, &mine);
  if (!mine) y = nn_pool1d_layer_indices(l, x, &mine);
  if (!mine) y = nn_pool3d_layer_indices(l, x, &mine);
  if (mine) return y;
  char who[96];
  ad_set_error(ctx, AD_ERR_ARG,
               "max_pool_indices: layer %s is not a max pooling layer (max_pool1d/2d/3d, "
               "adaptive_max_pool1d/2d/3d)",
               nn_layer_who(l, who, sizeof who));
  return NULL;
}

/* ----------------------------------------------------------- max_unpool */

typedef struct unpool_state {
  int sp;                   /* spatial dims: 1, 2 or 3 */
  int64_t k[3], s[3], p[3]; /* kernel, stride (resolved), padding */
} unpool_state;

static ad_tensor *unpool_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)x, (void)training;
  char who[96];
  ad_set_error(nn_layer_ctx(l), AD_ERR_ARG,
               "%s: max unpooling needs the indices: call nn_max_unpool_forward",
               nn_layer_who(l, who, sizeof who));
  return NULL;
}

static void unpool_free(nn_layer *l) {
  unpool_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* PyTorch's reprs: "kernel_size=2, stride=2, padding=0" (1-D: ints, as
 * MaxUnpool1d's 1-tuples print as "(2,)"), 2-D and 3-D tuples. */
static void unpool_tuple(nn_text *t, const char *name, int sp, const int64_t *v) {
  if (sp == 1) {
    nn_text_add(t, "%s=(%lld,)", name, (long long)v[0]);
    return;
  }
  nn_text_add(t, "%s=(%lld", name, (long long)v[0]);
  for (int a = 1; a < sp; a++) nn_text_add(t, ", %lld", (long long)v[a]);
  nn_text_add(t, ")");
}

static void unpool_describe(const nn_layer *l, nn_text *t) {
  const unpool_state *s = nn_layer_state(l);
  unpool_tuple(t, "kernel_size", s->sp, s->k);
  unpool_tuple(t, ", stride", s->sp, s->s);
  unpool_tuple(t, ", padding", s->sp, s->p);
}

static const nn_layer_ops unpool_ops = {unpool_forward, unpool_free, unpool_describe};

static nn_layer *unpool_new(ad_ctx *ctx, int sp, const int64_t *k, const nn_max_unpool_opts *opts) {
  if (!ctx) return NULL;
  static const char *const names[] = {"max_unpool1d", "max_unpool2d", "max_unpool3d"};
  nn_max_unpool_opts o = {0};
  if (opts) o = *opts;
  unpool_state s = {.sp = sp};
  const char *bad = NULL;
  int a = 0;
  for (; a < sp; a++) {
    s.k[a] = k[a];
    s.s[a] = o.stride[a] ? o.stride[a] : k[a];
    s.p[a] = o.padding[a];
    if (k[a] < 1 || k[a] > UNPOOL_MAX_SIZE)
      bad = "kernel must be in [1, 2^30]";
    else if (o.stride[a] < 0 || o.stride[a] > UNPOOL_MAX_SIZE)
      bad = "stride must be in [1, 2^30] (0 means the kernel)";
    else if (o.padding[a] < 0 || o.padding[a] > UNPOOL_MAX_SIZE)
      bad = "padding must be in [0, 2^30]";
    if (bad) break;
  }
  if (bad) { /* the values of the axis at fault */
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: %s (kernel %lld, stride %lld, padding %lld on spatial dim %d)", names[sp - 1],
                 bad, (long long)k[a], (long long)o.stride[a], (long long)o.padding[a], a);
    return NULL;
  }
  return nn_layer_new_copy(ctx, names[sp - 1], &unpool_ops, &s, sizeof s);
}

nn_layer *nn_max_unpool1d_new(ad_ctx *ctx, int64_t kernel_size, const nn_max_unpool_opts *opts) {
  int64_t k[1] = {kernel_size};
  return unpool_new(ctx, 1, k, opts);
}

nn_layer *nn_max_unpool2d_new(ad_ctx *ctx, int64_t kh, int64_t kw, const nn_max_unpool_opts *opts) {
  int64_t k[2] = {kh, kw};
  return unpool_new(ctx, 2, k, opts);
}

nn_layer *nn_max_unpool3d_new(ad_ctx *ctx, int64_t kd, int64_t kh, int64_t kw,
                              const nn_max_unpool_opts *opts) {
  int64_t k[3] = {kd, kh, kw};
  return unpool_new(ctx, 3, k, opts);
}

/* The output's spatial lengths: PyTorch's default (in - 1) stride - 2 pad +
 * kernel, or output_size checked as F._unpool_output_size does (strictly
 * within a stride of the default); each must be at least 1. */
static bool unpool_out_size(ad_ctx *ctx, const char *who, const unpool_state *s, const ad_tensor *x,
                            const int64_t *output_size, int64_t *out) {
  int nd = x->ndim;
  for (int a = 0; a < s->sp; a++) {
    int64_t in = x->shape[nd - s->sp + a];
    /* in < 2^40 and stride, kernel < 2^30: the product may pass 2^63 */
    if ((double)(in - 1) * (double)s->s[a] + (double)s->k[a] > 0x1p60) {
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: the output length on spatial dim %d overflows", who, a);
      return false;
    }
    int64_t def = (in - 1) * s->s[a] + s->k[a] - 2 * s->p[a];
    out[a] = output_size ? output_size[a] : def;
    if (output_size && !(def - s->s[a] < out[a] && out[a] < def + s->s[a])) {
      ad_set_error(ctx, AD_ERR_SHAPE,
                   "%s: invalid output_size %lld on spatial dim %d (must be between %lld and "
                   "%lld, exclusive)",
                   who, (long long)out[a], a, (long long)(def - s->s[a]),
                   (long long)(def + s->s[a]));
      return false;
    }
    if (out[a] < 1 || out[a] > UNPOOL_MAX_SIZE * UNPOOL_MAX_SIZE) {
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: output length %lld on spatial dim %d must be positive",
                   who, (long long)out[a], a);
      return false;
    }
  }
  return true;
}

ad_tensor *nn_max_unpool_forward(nn_layer *l, ad_tensor *x, ad_tensor *indices,
                                 const int64_t *output_size) {
  if (!l) return NULL;
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64], b[64];
  nn_layer_who(l, who, sizeof who);
  if (!nn_layer_runs(l, &unpool_ops)) {
    ad_set_error(ctx, AD_ERR_ARG, "max_unpool: layer %s is not a max_unpool1d/2d/3d", who);
    return NULL;
  }
  if (nn_check_input(ctx, who, "x", x) != AD_OK ||
      nn_check_input(ctx, who, "indices", indices) != AD_OK)
    return NULL;
  const unpool_state *s = nn_layer_state(l);
  int nd = x->ndim, sp = s->sp;
  if (nd != sp + 1 && nd != sp + 2) {
    static const char *const want[] = {"[N, C, L] or [C, L]", "[N, C, H, W] or [C, H, W]",
                                       "[N, C, D, H, W] or [C, D, H, W]"};
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be %s", who, ad_shape_str(x, a, sizeof a),
                 want[sp - 1]);
    return NULL;
  }
  if (!nn_layer_float_input(l, x)) return NULL;
  for (int d = nd - sp - 1; d < nd; d++) /* PyTorch: only N may be 0 */
    if (x->shape[d] == 0) {
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s has an empty dim %d (only N may be 0)", who,
                   ad_shape_str(x, a, sizeof a), d);
      return NULL;
    }
  if (indices->dtype != AD_I32) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: indices are %s; they must be i32", who,
                 ad_dtype_name(indices->dtype));
    return NULL;
  }
  bool same = indices->ndim == nd;
  for (int d = 0; same && d < nd; d++) same = indices->shape[d] == x->shape[d];
  if (!same) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: indices %s must have the input's shape %s", who,
                 ad_shape_str(indices, a, sizeof a), ad_shape_str(x, b, sizeof b));
    return NULL;
  }
  int64_t out[3];
  if (!unpool_out_size(ctx, who, s, x, output_size, out)) return NULL;
  int64_t planes = 1, lin = 1, lout = 1;
  double plane = 1; /* the output plane, in double: three lengths below 2^60 may pass 2^63 */
  for (int d = 0; d < nd - sp; d++) planes *= x->shape[d];
  for (int d = 0; d < sp; d++) lin *= x->shape[nd - sp + d], plane *= (double)out[d];
  /* the plane too (N may be 0): the indices into it are int32 */
  if (plane > (double)INT32_MAX || (double)planes * plane > (double)INT32_MAX) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: the output (%lld planes of %.0f) has more than 2^31 - 1 elements in all "
                 "or in a plane, the limit of the int32 scatter",
                 who, (long long)planes, plane);
    return NULL;
  }
  for (int d = 0; d < sp; d++) lout *= out[d];
  /* the flat targets, checked, in one pass with a search for a target
   * written twice in a plane (last[j]: the plane that wrote output j last,
   * -1 none); only where one is, which inputs are overwritten by a later
   * one of their plane (the last write stays, as PyTorch's). No search
   * where no plane holds two inputs (one input a plane, or N = 0): last,
   * 8 bytes per element of an output plane, would be made and cleared for
   * nothing (with N = 0, gigabytes for an empty result). */
  int64_t m = planes * lin;
  ad_tensor *gidx = nn_tmp_tensor(ctx, AD_I32, 1, &m);
  if (!gidx) return NULL;
  const int32_t *I = indices->data;
  int32_t *G = gidx->data;
  bool search = lin > 1 && planes > 0;
  int64_t *last = search ? ad_malloc(ctx, sizeof(int64_t) * (size_t)lout) : NULL;
  if (search && !last) return NULL;
  if (last) memset(last, 0xff, sizeof(int64_t) * (size_t)lout);
  bool twice = false;
  for (int64_t p = 0, i = 0; p < planes; p++) /* plane by plane: no division per element */
    for (int64_t e = i + lin; i < e; i++) {
      if (I[i] < 0 || I[i] >= lout) {
        ad_set_error(ctx, AD_ERR_ARG,
                     "%s: index %lld at position %lld of indices %s is outside the output plane "
                     "of %lld elements (0..%lld)",
                     who, (long long)I[i], (long long)i, ad_shape_str(indices, a, sizeof a),
                     (long long)lout, (long long)(lout - 1));
        ad_free(ctx, last, sizeof(int64_t) * (size_t)lout);
        return NULL;
      }
      G[i] = (int32_t)(p * lout + I[i]);
      if (last) {
        twice |= last[I[i]] == p;
        last[I[i]] = p;
      }
    }
  /* now last[j]: the last input of the plane writing output j */
  ad_tensor *keep = NULL;
  bool refused = false; /* keep's allocation */
  for (int64_t p = 0; p < planes && twice && !refused; p++) {
    for (int64_t i = 0; i < lin; i++) last[I[p * lin + i]] = p * lin + i;
    for (int64_t i = 0; i < lin; i++) {
      int64_t at = p * lin + i;
      if (last[I[at]] == at) continue;
      if (!keep) {
        keep = nn_tmp_tensor(ctx, x->dtype, nd, x->shape);
        if (!keep || ad_tensor_fill(keep, 1) != AD_OK) {
          refused = true;
          break;
        }
      }
      ad_tensor_set(keep, at, 0);
    }
  }
  ad_free(ctx, last, sizeof(int64_t) * (size_t)lout);
  if (refused) return NULL;
  ad_tensor *v = x;
  if (keep) v = ad_where(ctx, keep, x, ad_scalar(ctx, x->dtype, 0));
  v = ad_reshape(ctx, v, 1, &m);
  ad_tensor *y = v ? ad_index_add(ctx, v, gidx, planes * lout) : NULL;
  int64_t so[AD_MAX_DIMS];
  for (int d = 0; d < nd - sp; d++) so[d] = x->shape[d];
  for (int d = 0; d < sp; d++) so[nd - sp + d] = out[d];
  return y ? ad_reshape(ctx, y, nd, so) : NULL;
}
