/* layers_misc2.c: PyTorch modules a port meets that had no layer here:
 * nn.Unfold and nn.Fold (F.unfold / F.fold), nn.Bilinear, nn.GLU,
 * nn.CosineSimilarity, nn.PairwiseDistance, nn.Softshrink, nn.Hardshrink,
 * nn.Threshold, nn.Softmin, nn.Softmax2d, nn.LocalResponseNorm, nn.RReLU.
 * Composites of public ops, so
 * every gradient is the tape's and differentiable to any order; this file
 * holds PyTorch's index rules and the checks that name the function or
 * layer.
 *
 * Unfold is one gather: the elements of every block position picked from
 * the zero-padded planes [N C, Hp Wp] along axis 1 by a constant AD_I32
 * index (ad_index_select_axis, whose gradient, a scatter-add, is the
 * fold); fold is that scatter-add (ad_index_add_axis, whose gradient is
 * the gather) and a narrow that drops the padding. The index tensors are
 * arena tensors built in each call for the input's lengths, freed with
 * the tape.
 *
 * Bilinear is x1 [B, in1] times the weight laid out [in1, out in2] (one
 * ad_matmul), then times x2 [B, 1, in2] and summed over in2. */
#include "nn_internal.h"

#include <math.h>

#define I32_MAX INT64_C(2147483647)

typedef enum m2_kind {
  M2_UNFOLD,
  M2_FOLD,
  M2_BILINEAR,
  M2_GLU,
  M2_COS,
  M2_PDIST,
  M2_SOFTSHRINK,
  M2_HARDSHRINK,
  M2_THRESHOLD,
  M2_SOFTMIN,
  M2_SOFTMAX2D,
  M2_LRN,
  M2_RRELU
} m2_kind;

typedef struct m2_state {
  m2_kind kind;
  nn_fold_opts fo;       /* unfold, fold: checked, zeros replaced by 1 */
  int64_t out_hw[2];     /* fold */
  int64_t in1, in2, out; /* bilinear */
  ad_tensor *w, *b;      /* bilinear: its parameters (b NULL without bias) */
  int dim;               /* glu, cosine_similarity */
  double eps, p;         /* cosine_similarity; pairwise_distance */
  bool keepdim;          /* pairwise_distance */
  double lambd;          /* shrinks; threshold's threshold */
  double value;          /* threshold */
  int64_t size;          /* local_response_norm, with alpha, beta, k */
  double alpha, beta, k;
  double lower, upper; /* rrelu, with its generator */
  ad_rng rng;
} m2_state;

static const nn_layer_ops m2_ops;

static nn_layer *m2_layer(ad_ctx *ctx, const char *kind, const m2_state *init);

/* ------------------------------------------------------------ unfold, fold */

/* Checks opts for fn into *o (zero dilation and stride made 1). */
static bool fold_opts(ad_ctx *ctx, const char *fn, const nn_fold_opts *opts, nn_fold_opts *o) {
  if (!opts) {
    nn_null_arg(ctx, fn, "opts");
    return false;
  }
  *o = *opts;
  static const char *const what[4] = {"kernel_size", "dilation", "padding", "stride"};
  int64_t *v[4] = {o->kernel_size, o->dilation, o->padding, o->stride};
  for (int k = 0; k < 4; k++)
    for (int d = 0; d < 2; d++)
      if (v[k][d] < (k ? 0 : 1) || v[k][d] > I32_MAX) {
        ad_set_error(ctx, AD_ERR_ARG, "%s: %s (%lld, %lld) must be in [%d, 2^31 - 1]", fn, what[k],
                     (long long)v[k][0], (long long)v[k][1], k ? 0 : 1);
        return false;
      }
  for (int d = 0; d < 2; d++) {
    if (!o->dilation[d]) o->dilation[d] = 1;
    if (!o->stride[d]) o->stride[d] = 1;
  }
  return true;
}

/* Whole blocks along an axis of length n: PyTorch's div_rtn (floor). */
static int64_t fold_blocks(const nn_fold_opts *o, int d, int64_t n) {
  int64_t span = n + 2 * o->padding[d] - o->dilation[d] * (o->kernel_size[d] - 1) - 1;
  return span < 0 ? 0 : span / o->stride[d] + 1;
}

/* The AD_I32 index [kh kw oh ow] of the padded plane's element of row i kw
 * + j, block (bh, bw): (bh sh + i dh) wp + bw sw + j dw. NULL on OOM. */
static ad_tensor *fold_index(ad_ctx *ctx, const nn_fold_opts *o, int64_t oh, int64_t ow,
                             int64_t wp) {
  int64_t kh = o->kernel_size[0], kw = o->kernel_size[1];
  int64_t n = kh * kw * oh * ow;
  ad_tensor *idx = nn_tmp_tensor(ctx, AD_I32, 1, &n);
  if (!idx) return NULL;
  int32_t *p = idx->data;
  for (int64_t i = 0; i < kh; i++)
    for (int64_t j = 0; j < kw; j++)
      for (int64_t bh = 0; bh < oh; bh++)
        for (int64_t bw = 0; bw < ow; bw++)
          *p++ = (int32_t)((bh * o->stride[0] + i * o->dilation[0]) * wp + bw * o->stride[1] +
                           j * o->dilation[1]);
  return idx;
}

/* The padded plane hp x wp must index in AD_I32 (hp, wp >= 1 and below
 * 2^33: compared by a division, the product could overflow). */
static bool fold_plane(ad_ctx *ctx, const char *who, const ad_tensor *x, int64_t hp, int64_t wp) {
  if (hp <= I32_MAX / wp) return true;
  char a[64];
  ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s: the padded plane %lld x %lld is above 2^31 - 1",
               who, ad_shape_str(x, a, sizeof a), (long long)hp, (long long)wp);
  return false;
}

/* x checked for dtype and shape; o checked. */
static ad_tensor *unfold_run(ad_ctx *ctx, const char *who, ad_tensor *x, const nn_fold_opts *o) {
  char a[64];
  if (x->dtype != AD_F32 && x->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %s must be float, got %s", who,
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
    return NULL;
  }
  if (x->ndim != 3 && x->ndim != 4) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be [N, C, H, W] or [C, H, W]", who,
                 ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  int b = x->ndim - 3;
  int64_t n = b ? x->shape[0] : 1, c = x->shape[b], h = x->shape[b + 1], w = x->shape[b + 2];
  if (!c || !h || !w) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s: C, H and W must be >= 1", who,
                 ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  int64_t oh = fold_blocks(o, 0, h), ow = fold_blocks(o, 1, w);
  if (oh < 1 || ow < 1) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input %s with kernel_size (%lld, %lld), dilation (%lld, %lld), padding "
                 "(%lld, %lld) has (%lld, %lld) sliding blocks: each must be at least one",
                 who, ad_shape_str(x, a, sizeof a), (long long)o->kernel_size[0],
                 (long long)o->kernel_size[1], (long long)o->dilation[0], (long long)o->dilation[1],
                 (long long)o->padding[0], (long long)o->padding[1], (long long)oh, (long long)ow);
    return NULL;
  }
  int64_t hp = h + 2 * o->padding[0], wp = w + 2 * o->padding[1];
  if (!fold_plane(ctx, who, x, hp, wp)) return NULL;
  int64_t kk = o->kernel_size[0] * o->kernel_size[1];
  ad_tensor *xp = x;
  if (o->padding[0]) xp = ad_pad(ctx, xp, b + 1, o->padding[0], o->padding[0]);
  if (o->padding[1]) xp = ad_pad(ctx, xp, b + 2, o->padding[1], o->padding[1]);
  int64_t s2[2] = {n * c, hp * wp};
  ad_tensor *t = ad_reshape(ctx, xp, 2, s2); /* [n c, hp wp] */
  ad_tensor *idx = t ? fold_index(ctx, o, oh, ow, wp) : NULL;
  ad_tensor *g = ad_index_select_axis(ctx, t, 1, idx); /* [n c, kk L] */
  int64_t so[3] = {n, c * kk, oh * ow};
  return ad_reshape(ctx, g, b + 2, so + 1 - b);
}

static ad_tensor *fold_run(ad_ctx *ctx, const char *who, ad_tensor *x, const int64_t *out_hw,
                           const nn_fold_opts *o) {
  char a[64];
  if (x->dtype != AD_F32 && x->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %s must be float, got %s", who,
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
    return NULL;
  }
  if (x->ndim != 2 && x->ndim != 3) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be [N, C kh kw, L] or [C kh kw, L]", who,
                 ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  int b = x->ndim - 2;
  int64_t n = b ? x->shape[0] : 1, ckk = x->shape[b], l = x->shape[b + 1];
  int64_t kk = o->kernel_size[0] * o->kernel_size[1];
  if (!ckk || ckk % kk) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input %s: dim %d (%lld) must be a positive multiple of the kernel's size "
                 "%lld x %lld",
                 who, ad_shape_str(x, a, sizeof a), b, (long long)ckk, (long long)o->kernel_size[0],
                 (long long)o->kernel_size[1]);
    return NULL;
  }
  int64_t oh = fold_blocks(o, 0, out_hw[0]), ow = fold_blocks(o, 1, out_hw[1]);
  if (oh < 1 || ow < 1 || oh > l / ow || oh * ow != l) { /* no overflow */
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input %s: output_size (%lld, %lld) with kernel_size (%lld, %lld), dilation "
                 "(%lld, %lld), padding (%lld, %lld), stride (%lld, %lld) has %lld x %lld "
                 "sliding blocks, not the %lld of dim %d",
                 who, ad_shape_str(x, a, sizeof a), (long long)out_hw[0], (long long)out_hw[1],
                 (long long)o->kernel_size[0], (long long)o->kernel_size[1],
                 (long long)o->dilation[0], (long long)o->dilation[1], (long long)o->padding[0],
                 (long long)o->padding[1], (long long)o->stride[0], (long long)o->stride[1],
                 (long long)oh, (long long)ow, (long long)l, b + 1);
    return NULL;
  }
  int64_t c = ckk / kk, hp = out_hw[0] + 2 * o->padding[0], wp = out_hw[1] + 2 * o->padding[1];
  if (!fold_plane(ctx, who, x, hp, wp)) return NULL;
  int64_t s2[2] = {n * c, kk * l};
  ad_tensor *t = ad_reshape(ctx, x, 2, s2); /* [n c, kk L] */
  ad_tensor *idx = t ? fold_index(ctx, o, oh, ow, wp) : NULL;
  ad_tensor *y = ad_index_add_axis(ctx, t, 1, idx, hp * wp); /* [n c, hp wp] */
  int64_t so[4] = {n, c, hp, wp};
  y = ad_reshape(ctx, y, b + 3, so + 1 - b);
  if (o->padding[0]) y = ad_narrow(ctx, y, b + 1, o->padding[0], out_hw[0]);
  if (o->padding[1]) y = ad_narrow(ctx, y, b + 2, o->padding[1], out_hw[1]);
  return y;
}

static bool fold_size(ad_ctx *ctx, const char *fn, const int64_t *out_hw) {
  if (!out_hw) {
    nn_null_arg(ctx, fn, "output_size");
    return false;
  }
  if (out_hw[0] < 1 || out_hw[0] > I32_MAX || out_hw[1] < 1 || out_hw[1] > I32_MAX) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: output_size (%lld, %lld) must be in [1, 2^31 - 1]", fn,
                 (long long)out_hw[0], (long long)out_hw[1]);
    return false;
  }
  return true;
}

ad_tensor *nn_unfold(ad_ctx *ctx, ad_tensor *x, const nn_fold_opts *opts) {
  if (!ctx) return NULL;
  nn_fold_opts o;
  if (nn_check_input(ctx, "unfold", "input", x) != AD_OK || !fold_opts(ctx, "unfold", opts, &o))
    return NULL;
  return unfold_run(ctx, "unfold", x, &o);
}

ad_tensor *nn_fold(ad_ctx *ctx, ad_tensor *x, const int64_t output_size[2],
                   const nn_fold_opts *opts) {
  if (!ctx) return NULL;
  nn_fold_opts o;
  if (nn_check_input(ctx, "fold", "input", x) != AD_OK || !fold_size(ctx, "fold", output_size) ||
      !fold_opts(ctx, "fold", opts, &o))
    return NULL;
  return fold_run(ctx, "fold", x, output_size, &o);
}

nn_layer *nn_unfold_new(ad_ctx *ctx, const nn_fold_opts *opts) {
  if (!ctx) return NULL;
  m2_state s = {.kind = M2_UNFOLD};
  if (!fold_opts(ctx, "unfold", opts, &s.fo)) return NULL;
  return m2_layer(ctx, "unfold", &s);
}

nn_layer *nn_fold_new(ad_ctx *ctx, const int64_t output_size[2], const nn_fold_opts *opts) {
  if (!ctx) return NULL;
  m2_state s = {.kind = M2_FOLD};
  if (!fold_size(ctx, "fold", output_size) || !fold_opts(ctx, "fold", opts, &s.fo)) return NULL;
  s.out_hw[0] = output_size[0], s.out_hw[1] = output_size[1];
  return m2_layer(ctx, "fold", &s);
}

/* -------------------------------------------------------------- bilinear */

static ad_tensor *bilinear_run(ad_ctx *ctx, const char *who, ad_tensor *x1, ad_tensor *x2,
                               ad_tensor *w, ad_tensor *b) {
  char a[64], c[64];
  if (x1->dtype != AD_F32 && x1->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input1 %s must be float, got %s", who,
                 ad_shape_str(x1, a, sizeof a), ad_dtype_name(x1->dtype));
    return NULL;
  }
  const ad_tensor *other[3] = {x2, w, b};
  static const char *const names[3] = {"input2", "weight", "bias"};
  for (int k = 0; k < 3; k++)
    if (other[k] && other[k]->dtype != x1->dtype) {
      ad_set_error(ctx, AD_ERR_DTYPE, "%s: %s %s is %s, input1 %s is %s", who, names[k],
                   ad_shape_str(other[k], a, sizeof a), ad_dtype_name(other[k]->dtype),
                   ad_shape_str(x1, c, sizeof c), ad_dtype_name(x1->dtype));
      return NULL;
    }
  int nd = x1->ndim;
  bool lead = nd >= 1 && x2->ndim == nd;
  for (int d = 0; lead && d < nd - 1; d++) lead = x1->shape[d] == x2->shape[d];
  if (!lead) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input1 %s and input2 %s must be [..., in1] and [..., in2] with the same "
                 "batch dims",
                 who, ad_shape_str(x1, a, sizeof a), ad_shape_str(x2, c, sizeof c));
    return NULL;
  }
  int64_t in1 = x1->shape[nd - 1], in2 = x2->shape[nd - 1];
  if (w->ndim != 3 || w->shape[1] != in1 || w->shape[2] != in2) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: weight %s must be [out, %lld, %lld] for input1 %s", who,
                 ad_shape_str(w, a, sizeof a), (long long)in1, (long long)in2,
                 ad_shape_str(x1, c, sizeof c));
    return NULL;
  }
  int64_t out = w->shape[0];
  if (b && (b->ndim != 1 || b->shape[0] != out)) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: bias %s must be [%lld]", who, ad_shape_str(b, a, sizeof a),
                 (long long)out);
    return NULL;
  }
  int64_t n = 1;
  for (int d = 0; d < nd - 1; d++) n *= x1->shape[d];
  int perm[3] = {1, 0, 2};
  int64_t sw[2] = {in1, out * in2}, s1[2] = {n, in1}, st[3] = {n, out, in2}, s2[3] = {n, 1, in2};
  ad_tensor *wp = ad_reshape(ctx, ad_permute(ctx, w, perm), 2, sw); /* [in1, out in2] */
  ad_tensor *t =
      ad_reshape(ctx, ad_matmul(ctx, ad_reshape(ctx, x1, 2, s1), wp, false, false), 3, st);
  ad_tensor *y =
      ad_sum_axis(ctx, ad_mul(ctx, t, ad_reshape(ctx, x2, 3, s2)), 2, false); /* [n, out] */
  if (b) y = ad_add(ctx, y, b);
  int64_t so[AD_MAX_DIMS];
  for (int d = 0; d < nd - 1; d++) so[d] = x1->shape[d];
  so[nd - 1] = out;
  return ad_reshape(ctx, y, nd, so);
}

ad_tensor *nn_bilinear(ad_ctx *ctx, ad_tensor *x1, ad_tensor *x2, ad_tensor *weight,
                       ad_tensor *bias) {
  if (!ctx) return NULL;
  const char *fn = "bilinear";
  if (nn_check_input(ctx, fn, "input1", x1) != AD_OK ||
      nn_check_input(ctx, fn, "input2", x2) != AD_OK ||
      nn_check_input(ctx, fn, "weight", weight) != AD_OK ||
      (bias && nn_check_input(ctx, fn, "bias", bias) != AD_OK))
    return NULL;
  return bilinear_run(ctx, fn, x1, x2, weight, bias);
}

nn_layer *nn_bilinear_new(ad_ctx *ctx, int64_t in1_features, int64_t in2_features,
                          int64_t out_features, bool bias, ad_dtype dtype, ad_rng *rng) {
  if (!ctx) return NULL;
  const char *fn = "bilinear";
  if (in1_features < 1 || in2_features < 1 || out_features < 1 || in1_features > I32_MAX ||
      in2_features > I32_MAX || out_features > I32_MAX) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: in1_features %lld, in2_features %lld and out_features %lld must be in [1, "
                 "2^31 - 1]",
                 fn, (long long)in1_features, (long long)in2_features, (long long)out_features);
    return NULL;
  }
  if (dtype != AD_F32 && dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: parameters must be float, got %s", fn,
                 ad_dtype_name(dtype));
    return NULL;
  }
  if (!rng) return nn_null_arg(ctx, fn, "rng"), NULL;
  m2_state s = {.kind = M2_BILINEAR, .in1 = in1_features, .in2 = in2_features, .out = out_features};
  nn_layer *l = m2_layer(ctx, fn, &s);
  if (!l) return NULL;
  m2_state *st = nn_layer_state(l);
  double k = 1 / sqrt((double)in1_features);
  nn_init u = nn_init_make(NN_INIT_UNIFORM, -k, k);
  int64_t ws[3] = {out_features, in1_features, in2_features};
  const char *who = "nn_bilinear_new";
  st->w = nn_param_new(nn_layer_params(l), who, "weight", dtype, 3, ws, u, rng);
  if (st->w && bias) st->b = nn_param_new(nn_layer_params(l), who, "bias", dtype, 1, ws, u, rng);
  if (!st->w || (bias && !st->b)) {
    nn_layer_free(l);
    return NULL;
  }
  return l;
}

ad_tensor *nn_bilinear_forward(nn_layer *l, ad_tensor *x1, ad_tensor *x2) {
  if (!l) return NULL;
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96];
  nn_layer_who(l, who, sizeof who);
  m2_state *s = nn_layer_state(l);
  if (!nn_layer_runs(l, &m2_ops) || s->kind != M2_BILINEAR) {
    ad_set_error(ctx, AD_ERR_ARG, "bilinear_forward: %s is not a Bilinear", who);
    return NULL;
  }
  if (nn_check_input(ctx, who, "input1", x1) != AD_OK ||
      nn_check_input(ctx, who, "input2", x2) != AD_OK)
    return NULL;
  ad_tensor *y = bilinear_run(ctx, who, x1, x2, s->w, s->b);
  if (y) nn_layer_note_output(l, y);
  return y;
}

/* ------------------------------------------------------------------- glu */

/* y = a sigmoid(b), a and b the halves of x along dim. */
static ad_tensor *glu_run(ad_ctx *ctx, const char *who, ad_tensor *x, int dim) {
  char a[64];
  if (x->dtype != AD_F32 && x->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %s must be float, got %s", who,
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
    return NULL;
  }
  if (!x->ndim) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: a 0-d input has no halves (PyTorch: glu does not support "
                 "scalars)",
                 who);
    return NULL;
  }
  if (dim < -x->ndim || dim >= x->ndim) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: dim %d is outside -%d..%d for input %s", who, dim, x->ndim,
                 x->ndim - 1, ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  int d = dim < 0 ? dim + x->ndim : dim;
  int64_t n = x->shape[d];
  if (n % 2) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s: the halving dim %d must be even, but is %lld",
                 who, ad_shape_str(x, a, sizeof a), d, (long long)n);
    return NULL;
  }
  ad_tensor *first = ad_narrow(ctx, x, d, 0, n / 2), *second = ad_narrow(ctx, x, d, n / 2, n / 2);
  return ad_mul(ctx, first, ad_sigmoid(ctx, second));
}

ad_tensor *nn_glu(ad_ctx *ctx, ad_tensor *x, int dim) {
  if (!ctx) return NULL;
  if (nn_check_input(ctx, "glu", "input", x) != AD_OK) return NULL;
  return glu_run(ctx, "glu", x, dim);
}

nn_layer *nn_glu_new(ad_ctx *ctx, int dim) {
  if (!ctx) return NULL;
  m2_state s = {.kind = M2_GLU, .dim = dim};
  return m2_layer(ctx, "glu", &s);
}

/* --------------------------------------- cosine similarity, pairwise distance */

static bool eps_ok(ad_ctx *ctx, const char *fn, double eps) {
  if (eps >= 0 && isfinite(eps)) return true;
  ad_set_error(ctx, AD_ERR_ARG, "%s: eps %g must be finite and >= 0", fn, eps);
  return false;
}

static bool p_ok(ad_ctx *ctx, const char *fn, double p) {
  if (p > 0 && isfinite(p)) return true;
  ad_set_error(ctx, AD_ERR_ARG, "%s: p %g must be positive and finite", fn, p);
  return false;
}

/* x1 and x2 float of one dtype whose shapes broadcast (NumPy) to shape
 * (ndim *nd, at least 1). */
static bool pair_shape(ad_ctx *ctx, const char *who, const ad_tensor *x1, const ad_tensor *x2,
                       int *nd, int64_t *shape) {
  char a[64], b[64];
  if (x1->dtype != AD_F32 && x1->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: x1 %s must be float, got %s", who,
                 ad_shape_str(x1, a, sizeof a), ad_dtype_name(x1->dtype));
    return false;
  }
  if (x2->dtype != x1->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: x2 %s is %s, x1 %s is %s", who,
                 ad_shape_str(x2, a, sizeof a), ad_dtype_name(x2->dtype),
                 ad_shape_str(x1, b, sizeof b), ad_dtype_name(x1->dtype));
    return false;
  }
  int n = x1->ndim > x2->ndim ? x1->ndim : x2->ndim;
  bool ok = n >= 1;
  for (int d = 0; ok && d < n; d++) {
    int d1 = d - (n - x1->ndim), d2 = d - (n - x2->ndim);
    int64_t s1 = d1 >= 0 ? x1->shape[d1] : 1, s2 = d2 >= 0 ? x2->shape[d2] : 1;
    ok = s1 == s2 || s1 == 1 || s2 == 1;
    shape[d] = s1 == 1 ? s2 : s1;
  }
  if (!ok) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: x1 %s and x2 %s must broadcast to one shape of at least 1 dim", who,
                 ad_shape_str(x1, a, sizeof a), ad_shape_str(x2, b, sizeof b));
    return false;
  }
  *nd = n;
  return true;
}

/* Whether x has shape (ndim nd). */
static bool has_shape(const ad_tensor *x, int nd, const int64_t *shape) {
  if (x->ndim != nd) return false;
  for (int k = 0; k < nd; k++)
    if (x->shape[k] != shape[k]) return false;
  return true;
}

static ad_tensor *cos_run(ad_ctx *ctx, const char *who, ad_tensor *x1, ad_tensor *x2, int dim,
                          double eps) {
  int nd;
  int64_t shape[AD_MAX_DIMS];
  char a[64];
  if (!pair_shape(ctx, who, x1, x2, &nd, shape) || !nn_f32_setting_ok(ctx, who, x1, "eps", eps))
    return NULL;
  if (dim < -nd || dim >= nd) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: dim %d is outside -%d..%d of the inputs' shape %s", who, dim,
                 nd, nd - 1, ad_shape_str(x1->ndim == nd ? x1 : x2, a, sizeof a));
    return NULL;
  }
  int d = dim < 0 ? dim + nd : dim;
  /* inputs of the common shape as they are: the op then writes a leaf's
   * gradient straight into it (its grad_into) */
  ad_tensor *e1 = has_shape(x1, nd, shape) ? x1 : ad_expand(ctx, x1, nd, shape);
  ad_tensor *e2 = has_shape(x2, nd, shape) ? x2 : ad_expand(ctx, x2, nd, shape);
  return ad_cosine_similarity(ctx, e1, e2, d, eps);
}

static ad_tensor *pdist_run(ad_ctx *ctx, const char *who, ad_tensor *x1, ad_tensor *x2, double p,
                            double eps, bool keepdim) {
  int nd;
  int64_t shape[AD_MAX_DIMS];
  if (!pair_shape(ctx, who, x1, x2, &nd, shape)) return NULL;
  ad_tensor *y = nn_pdist(ctx, x1, x2, p, eps);
  if (!keepdim || !y) return y;
  shape[nd - 1] = 1;
  return ad_reshape(ctx, y, nd, shape);
}

ad_tensor *nn_cosine_similarity(ad_ctx *ctx, ad_tensor *x1, ad_tensor *x2, int dim, double eps) {
  if (!ctx) return NULL;
  const char *fn = "cosine_similarity";
  if (nn_check_input(ctx, fn, "x1", x1) != AD_OK || nn_check_input(ctx, fn, "x2", x2) != AD_OK ||
      !eps_ok(ctx, fn, eps))
    return NULL;
  return cos_run(ctx, fn, x1, x2, dim, eps);
}

ad_tensor *nn_pairwise_distance(ad_ctx *ctx, ad_tensor *x1, ad_tensor *x2, double p, double eps,
                                bool keepdim) {
  if (!ctx) return NULL;
  const char *fn = "pairwise_distance";
  if (nn_check_input(ctx, fn, "x1", x1) != AD_OK || nn_check_input(ctx, fn, "x2", x2) != AD_OK ||
      !p_ok(ctx, fn, p) || !eps_ok(ctx, fn, eps))
    return NULL;
  return pdist_run(ctx, fn, x1, x2, p, eps, keepdim);
}

nn_layer *nn_cosine_similarity_new(ad_ctx *ctx, int dim, double eps) {
  if (!ctx) return NULL;
  if (!eps_ok(ctx, "cosine_similarity", eps)) return NULL;
  m2_state s = {.kind = M2_COS, .dim = dim, .eps = eps};
  return m2_layer(ctx, "cosine_similarity", &s);
}

nn_layer *nn_pairwise_distance_new(ad_ctx *ctx, double p, double eps, bool keepdim) {
  if (!ctx) return NULL;
  const char *fn = "pairwise_distance";
  if (!p_ok(ctx, fn, p) || !eps_ok(ctx, fn, eps)) return NULL;
  m2_state s = {.kind = M2_PDIST, .p = p, .eps = eps, .keepdim = keepdim};
  return m2_layer(ctx, fn, &s);
}

ad_tensor *nn_layer_forward2(nn_layer *l, ad_tensor *x1, ad_tensor *x2) {
  if (!l) return NULL;
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96];
  nn_layer_who(l, who, sizeof who);
  m2_state *s = nn_layer_state(l);
  if (!nn_layer_runs(l, &m2_ops) ||
      (s->kind != M2_BILINEAR && s->kind != M2_COS && s->kind != M2_PDIST)) {
    ad_set_error(ctx, AD_ERR_ARG, "layer_forward2: %s is not a layer of two inputs", who);
    return NULL;
  }
  if (s->kind == M2_BILINEAR) return nn_bilinear_forward(l, x1, x2);
  if (nn_check_input(ctx, who, "x1", x1) != AD_OK || nn_check_input(ctx, who, "x2", x2) != AD_OK)
    return NULL;
  ad_tensor *y = s->kind == M2_COS ? cos_run(ctx, who, x1, x2, s->dim, s->eps)
                                   : pdist_run(ctx, who, x1, x2, s->p, s->eps, s->keepdim);
  if (y) nn_layer_note_output(l, y);
  return y;
}

/* ------------------------------------------------- shrinks, softmin, softmax2d */

static bool float_x(ad_ctx *ctx, const char *who, const ad_tensor *x) {
  if (x->dtype == AD_F32 || x->dtype == AD_F64) return true;
  char a[64];
  ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %s must be float, got %s", who,
               ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
  return false;
}

/* softshrink: lambd >= 0 (not NaN); hardshrink: not NaN; threshold: not
 * NaN. */
static bool shrink_arg(ad_ctx *ctx, m2_kind k, double lambd) {
  if (k == M2_SOFTSHRINK && !(lambd >= 0)) {
    ad_set_error(ctx, AD_ERR_ARG, "softshrink: lambd %g must be >= 0", lambd);
    return false;
  }
  if (isnan(lambd)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: %s is NaN", k == M2_HARDSHRINK ? "hardshrink" : "threshold",
                 k == M2_HARDSHRINK ? "lambd" : "threshold");
    return false;
  }
  return true;
}

/*   hardshrink  ad_hardshrink: -l <= x <= l ? 0 : x
 *   softshrink  ad_softshrink: x > l ? x - l : x < -l ? x + l : 0
 *   threshold   ad_threshold: x <= t ? value : x */
static ad_tensor *shrink_run(ad_ctx *ctx, const char *who, ad_tensor *x, m2_kind k, double l,
                             double value) {
  if (!float_x(ctx, who, x) ||
      !nn_f32_setting_ok(ctx, who, x, k == M2_THRESHOLD ? "threshold" : "lambd", l) ||
      (k == M2_THRESHOLD && !nn_f32_setting_ok(ctx, who, x, "value", value)))
    return NULL;
  if (k == M2_THRESHOLD) return ad_threshold(ctx, x, l, value);
  return k == M2_HARDSHRINK ? ad_hardshrink(ctx, x, l) : ad_softshrink(ctx, x, l);
}

static ad_tensor *softmin_run(ad_ctx *ctx, const char *who, ad_tensor *x, int dim, bool two_d) {
  char a[64];
  if (!float_x(ctx, who, x)) return NULL;
  if (two_d) {
    if (x->ndim != 3 && x->ndim != 4) {
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be 3-D [C, H, W] or 4-D [N, C, H, W]", who,
                   ad_shape_str(x, a, sizeof a));
      return NULL;
    }
    return ad_softmax(ctx, x, x->ndim - 3);
  }
  if (dim < -x->ndim || dim >= x->ndim || !x->ndim) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: dim %d is outside -%d..%d for input %s", who, dim, x->ndim,
                 x->ndim - 1, ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  return ad_softmax(ctx, ad_neg(ctx, x), dim < 0 ? dim + x->ndim : dim);
}

static ad_tensor *shrink_fn(ad_ctx *ctx, const char *fn, ad_tensor *x, m2_kind k, double l,
                            double value) {
  if (!ctx) return NULL;
  if (nn_check_input(ctx, fn, "input", x) != AD_OK || !shrink_arg(ctx, k, l)) return NULL;
  return shrink_run(ctx, fn, x, k, l, value);
}

ad_tensor *nn_softshrink(ad_ctx *ctx, ad_tensor *x, double lambd) {
  return shrink_fn(ctx, "softshrink", x, M2_SOFTSHRINK, lambd, 0);
}

ad_tensor *nn_hardshrink(ad_ctx *ctx, ad_tensor *x, double lambd) {
  return shrink_fn(ctx, "hardshrink", x, M2_HARDSHRINK, lambd, 0);
}

ad_tensor *nn_threshold(ad_ctx *ctx, ad_tensor *x, double threshold, double value) {
  return shrink_fn(ctx, "threshold", x, M2_THRESHOLD, threshold, value);
}

ad_tensor *nn_softmin(ad_ctx *ctx, ad_tensor *x, int dim) {
  if (!ctx || nn_check_input(ctx, "softmin", "input", x) != AD_OK) return NULL;
  return softmin_run(ctx, "softmin", x, dim, false);
}

ad_tensor *nn_softmax2d(ad_ctx *ctx, ad_tensor *x) {
  if (!ctx || nn_check_input(ctx, "softmax2d", "input", x) != AD_OK) return NULL;
  return softmin_run(ctx, "softmax2d", x, 0, true);
}

static nn_layer *shrink_new(ad_ctx *ctx, const char *kind, m2_kind k, double l, double value) {
  if (!ctx || !shrink_arg(ctx, k, l)) return NULL;
  m2_state s = {.kind = k, .lambd = l, .value = value};
  return m2_layer(ctx, kind, &s);
}

nn_layer *nn_softshrink_new(ad_ctx *ctx, double lambd) {
  return shrink_new(ctx, "softshrink", M2_SOFTSHRINK, lambd, 0);
}

nn_layer *nn_hardshrink_new(ad_ctx *ctx, double lambd) {
  return shrink_new(ctx, "hardshrink", M2_HARDSHRINK, lambd, 0);
}

nn_layer *nn_threshold_new(ad_ctx *ctx, double threshold, double value) {
  return shrink_new(ctx, "threshold", M2_THRESHOLD, threshold, value);
}

nn_layer *nn_softmin_new(ad_ctx *ctx, int dim) {
  if (!ctx) return NULL;
  m2_state s = {.kind = M2_SOFTMIN, .dim = dim};
  return m2_layer(ctx, "softmin", &s);
}

nn_layer *nn_softmax2d_new(ad_ctx *ctx) {
  if (!ctx) return NULL;
  m2_state s = {.kind = M2_SOFTMAX2D};
  return m2_layer(ctx, "softmax2d", &s);
}

/* --------------------------------------------------- local response norm */

#define LRN_MAX_SIZE (INT64_C(1) << 16)

static bool lrn_args(ad_ctx *ctx, int64_t size, double alpha, double beta, double k) {
  if (size < 1 || size > LRN_MAX_SIZE) {
    ad_set_error(ctx, AD_ERR_ARG, "local_response_norm: size %lld must be in [1, 2^16]",
                 (long long)size);
    return false;
  }
  if (!isfinite(alpha) || !isfinite(beta) || !isfinite(k)) {
    ad_set_error(ctx, AD_ERR_ARG, "local_response_norm: alpha %g, beta %g and k %g must be finite",
                 alpha, beta, k);
    return false;
  }
  return true;
}

/* y = x / (k + alpha avg_window(x^2))^beta, the window's sum added left to
 * right over size narrows of the zero-padded squares. */
static ad_tensor *lrn_run(ad_ctx *ctx, const char *who, ad_tensor *x, const m2_state *s) {
  char a[64];
  if (!float_x(ctx, who, x)) return NULL;
  if (x->ndim < 3) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must have at least 3 dims [N, C, ...]", who,
                 ad_shape_str(x, a, sizeof a));
    return NULL;
  }
  int64_t c = x->shape[1];
  ad_tensor *sq = ad_pad(ctx, ad_square(ctx, x), 1, s->size / 2, (s->size - 1) / 2);
  ad_tensor *sum = ad_narrow(ctx, sq, 1, 0, c);
  for (int64_t j = 1; j < s->size; j++) sum = ad_add(ctx, sum, ad_narrow(ctx, sq, 1, j, c));
  ad_tensor *avg = ad_div_scalar(ctx, sum, (double)s->size);
  ad_tensor *div =
      ad_pow_scalar(ctx, ad_add_scalar(ctx, ad_mul_scalar(ctx, avg, s->alpha), s->k), s->beta);
  return ad_div(ctx, x, div);
}

ad_tensor *nn_local_response_norm(ad_ctx *ctx, ad_tensor *x, int64_t size, double alpha,
                                  double beta, double k) {
  if (!ctx) return NULL;
  const char *fn = "local_response_norm";
  if (nn_check_input(ctx, fn, "input", x) != AD_OK || !lrn_args(ctx, size, alpha, beta, k))
    return NULL;
  m2_state s = {.kind = M2_LRN, .size = size, .alpha = alpha, .beta = beta, .k = k};
  return lrn_run(ctx, fn, x, &s);
}

nn_layer *nn_local_response_norm_new(ad_ctx *ctx, int64_t size, double alpha, double beta,
                                     double k) {
  if (!ctx || !lrn_args(ctx, size, alpha, beta, k)) return NULL;
  m2_state s = {.kind = M2_LRN, .size = size, .alpha = alpha, .beta = beta, .k = k};
  return m2_layer(ctx, "local_response_norm", &s);
}

/* ------------------------------------------------------------------ rrelu */

static bool rrelu_args(ad_ctx *ctx, double lower, double upper) {
  if (isfinite(lower) && isfinite(upper) && lower <= upper) return true;
  ad_set_error(ctx, AD_ERR_ARG, "rrelu: lower %g and upper %g must be finite with lower <= upper",
               lower, upper);
  return false;
}

/* training: x times a constant noise tensor (a slope drawn for x <= 0, 1
 * elsewhere), so the gradient is the slope; evaluation: leaky_relu with
 * the mean slope. */
static ad_tensor *rrelu_run(ad_ctx *ctx, const char *who, ad_tensor *x, double lower, double upper,
                            bool training, ad_rng *rng) {
  if (!float_x(ctx, who, x) || !nn_f32_setting_ok(ctx, who, x, "lower", lower) ||
      !nn_f32_setting_ok(ctx, who, x, "upper", upper))
    return NULL;
  if (!training) return ad_leaky_relu(ctx, x, (lower + upper) / 2);
  if (!rng) return nn_null_arg(ctx, who, "rng"), NULL;
  if (!nn_rng_seeded(ctx, who, rng)) return NULL;
  ad_tensor *noise = nn_tmp_tensor(ctx, x->dtype, x->ndim, x->shape);
  if (!noise) return NULL;
  ad_rng r = *rng; /* a call that fails takes no draws */
  /* one draw per x <= 0, in element order (the stream is the layer's):
   * typed loops, not a call and a dtype switch per element */
  if (x->dtype == AD_F32) {
    const float *xs = x->data;
    float *ns = noise->data;
    for (int64_t i = 0; i < x->size; i++)
      ns[i] = xs[i] <= 0 ? (float)(lower + (upper - lower) * ad_rng_uniform(&r)) : 1.0f;
  } else {
    const double *xs = x->data;
    double *ns = noise->data;
    for (int64_t i = 0; i < x->size; i++)
      ns[i] = xs[i] <= 0 ? lower + (upper - lower) * ad_rng_uniform(&r) : 1.0;
  }
  ad_tensor *y = ad_mul(ctx, x, noise);
  if (y) *rng = r;
  return y;
}

ad_tensor *nn_rrelu(ad_ctx *ctx, ad_tensor *x, double lower, double upper, bool training,
                    ad_rng *rng) {
  if (!ctx) return NULL;
  if (nn_check_input(ctx, "rrelu", "input", x) != AD_OK || !rrelu_args(ctx, lower, upper))
    return NULL;
  return rrelu_run(ctx, "rrelu", x, lower, upper, training, rng);
}

nn_layer *nn_rrelu_new(ad_ctx *ctx, double lower, double upper, uint64_t seed) {
  if (!ctx || !rrelu_args(ctx, lower, upper)) return NULL;
  m2_state s = {.kind = M2_RRELU, .lower = lower, .upper = upper};
  ad_rng_seed(&s.rng, seed);
  return m2_layer(ctx, "rrelu", &s);
}

/* --------------------------------------------------------------- layer */

static ad_tensor *m2_forward(nn_layer *l, ad_tensor *x, bool training) {
  m2_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96];
  nn_layer_who(l, who, sizeof who);
  switch (s->kind) {
  case M2_UNFOLD:
    return unfold_run(ctx, who, x, &s->fo);
  case M2_FOLD:
    return fold_run(ctx, who, x, s->out_hw, &s->fo);
  case M2_BILINEAR:
  case M2_COS:
  case M2_PDIST:
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: takes two inputs: call %s(l, x1, x2), not nn_layer_forward or a Sequential",
                 who, s->kind == M2_BILINEAR ? "nn_bilinear_forward" : "nn_layer_forward2");
    return NULL;
  case M2_GLU:
    return glu_run(ctx, who, x, s->dim);
  case M2_SOFTSHRINK:
  case M2_HARDSHRINK:
  case M2_THRESHOLD:
    return shrink_run(ctx, who, x, s->kind, s->lambd, s->value);
  case M2_SOFTMIN:
  case M2_SOFTMAX2D:
    return softmin_run(ctx, who, x, s->dim, s->kind == M2_SOFTMAX2D);
  case M2_LRN:
    return lrn_run(ctx, who, x, s);
  case M2_RRELU:
    return rrelu_run(ctx, who, x, s->lower, s->upper, training, &s->rng);
  }
  return NULL;
}

static void m2_free(nn_layer *l) {
  m2_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* "2" for an equal pair, else "(2, 3)", as PyTorch's repr of an int or a
 * tuple. */
static void pair_text(nn_text *t, const int64_t *p) {
  if (p[0] == p[1])
    nn_text_add(t, "%lld", (long long)p[0]);
  else
    nn_text_add(t, "(%lld, %lld)", (long long)p[0], (long long)p[1]);
}

/* PyTorch 1.13's reprs: Unfold "kernel_size=2, dilation=1, padding=0,
 * stride=1", Fold "output_size=(4, 5), kernel_size=(2, 3), ..." (an equal
 * pair written as one number). */
static void m2_describe(const nn_layer *l, nn_text *t) {
  const m2_state *s = nn_layer_state(l);
  switch (s->kind) {
  case M2_FOLD:
    nn_text_add(t, "output_size=");
    pair_text(t, s->out_hw);
    nn_text_add(t, ", ");
    /* fall through */
  case M2_UNFOLD:
    nn_text_add(t, "kernel_size=");
    pair_text(t, s->fo.kernel_size);
    nn_text_add(t, ", dilation=");
    pair_text(t, s->fo.dilation);
    nn_text_add(t, ", padding=");
    pair_text(t, s->fo.padding);
    nn_text_add(t, ", stride=");
    pair_text(t, s->fo.stride);
    break;
  case M2_BILINEAR:
    nn_text_add(t, "in1_features=%lld, in2_features=%lld, out_features=%lld, bias=%s",
                (long long)s->in1, (long long)s->in2, (long long)s->out, nn_py_bool(s->b != NULL));
    break;
  case M2_GLU:
    nn_text_add(t, "dim=%d", s->dim);
    break;
  case M2_COS: /* PyTorch's repr of both is empty, and Softmax2d's */
  case M2_PDIST:
  case M2_SOFTMAX2D:
    break;
  case M2_SOFTSHRINK:
  case M2_HARDSHRINK:
    nn_text_num(t, s->lambd);
    break;
  case M2_THRESHOLD:
    nn_text_add(t, "threshold=");
    nn_text_num(t, s->lambd);
    nn_text_add(t, ", value=");
    nn_text_num(t, s->value);
    break;
  case M2_SOFTMIN:
    nn_text_add(t, "dim=%d", s->dim);
    break;
  case M2_RRELU:
    nn_text_add(t, "lower=");
    nn_text_num(t, s->lower);
    nn_text_add(t, ", upper=");
    nn_text_num(t, s->upper);
    break;
  case M2_LRN:
    nn_text_add(t, "%lld, alpha=", (long long)s->size);
    nn_text_num(t, s->alpha);
    nn_text_add(t, ", beta=");
    nn_text_num(t, s->beta);
    nn_text_add(t, ", k=");
    nn_text_num(t, s->k);
    break;
  }
}

static const nn_layer_ops m2_ops = {m2_forward, m2_free, m2_describe};

static nn_layer *m2_layer(ad_ctx *ctx, const char *kind, const m2_state *init) {
  return nn_layer_new_copy(ctx, kind, &m2_ops, init, sizeof *init);
}
