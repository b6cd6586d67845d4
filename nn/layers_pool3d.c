/* layers_pool3d.c: PyTorch's nn.MaxPool3d, nn.AvgPool3d,
 * nn.AdaptiveAvgPool3d and nn.AdaptiveMaxPool3d over [N, C, D, H, W] or
 * unbatched [C, D, H, W]. Composites of public ops (ad_max_pool3d,
 * ad_avg_pool3d, and for the adaptive ones nn_adaptive_avg2d or
 * nn_adaptive_max2d twice: over (H, W) of every depth slice, then over D
 * of the [planes, D, oh ow] view), so every gradient is the
 * tape's, differentiable to any order. This file holds the options, the
 * checks that PyTorch's constructors make and the reprs. */
#include "nn_internal.h"

/* The ops' limit on kernel, stride and dilation (2^30). */
#define POOL3D_MAX_SIZE (INT64_C(1) << 30)

typedef enum pool3d_kind {
  POOL3D_MAX,
  POOL3D_AVG,
  POOL3D_ADAPTIVE,
  POOL3D_ADAPTIVE_MAX
} pool3d_kind;

typedef struct pool3d_state {
  pool3d_kind kind;
  int64_t k[3]; /* max, avg: the kernel; adaptive: the output size */
  ad_pool3d_opts o;
} pool3d_state;

/* The checks of the adaptive layers' forward, naming the layer. */
static bool adaptive3d_input_ok(nn_layer *l, const ad_tensor *x) {
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96], a[64];
  int nd = x->ndim;
  if (nd != 4 && nd != 5) {
    nn_layer_who(l, who, sizeof who);
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s must be [N, C, D, H, W] or [C, D, H, W]", who,
                 ad_shape_str(x, a, sizeof a));
    return false;
  }
  if (!nn_layer_float_input(l, x)) return false;
  for (int d = 1; d < nd; d++) /* PyTorch: only the first dim may be 0 */
    if (x->shape[d] == 0) {
      nn_layer_who(l, who, sizeof who);
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s has an empty dim %d (only dim 0 may be 0)", who,
                   ad_shape_str(x, a, sizeof a), d);
      return false;
    }
  return true;
}

/* Adaptive average (or max) pooling of the last three axes of x to k[0] x
 * k[1] x k[2]: PyTorch's windows along each axis (floor(i L / n) to
 * ceil((i + 1) L / n)), axis by axis, which is the same mean as PyTorch's
 * over the box (the box's count is the product of the axes' counts), and
 * the same maximum: the first stage picks each slice's first maximum in
 * (h, w) order (or its last NaN), the second the first slice holding the
 * box's maximum (or the last holding a NaN), so the gradient goes to
 * PyTorch's argmax, the first maximum (or last NaN) in (d, h, w) order. */
static ad_tensor *adaptive3d(nn_layer *l, ad_tensor *x) {
  const pool3d_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  if (!adaptive3d_input_ok(l, x)) return NULL;
  int nd = x->ndim;
  bool max = s->kind == POOL3D_ADAPTIVE_MAX;
  int64_t planes = 1, din = x->shape[nd - 3];
  for (int d = 0; d < nd - 3; d++) planes *= x->shape[d];
  int64_t s1[3] = {planes * din, x->shape[nd - 2], x->shape[nd - 1]};
  int64_t s2[3] = {planes, din, s->k[1] * s->k[2]}, so[5];
  ad_tensor *y = ad_reshape(ctx, x, 3, s1);
  if (y) y = (max ? nn_adaptive_max2d : nn_adaptive_avg2d)(ctx, y, s->k[1], s->k[2]);
  if (y) y = ad_reshape(ctx, y, 3, s2);
  if (y) y = (max ? nn_adaptive_max2d : nn_adaptive_avg2d)(ctx, y, s->k[0], s2[2]);
  if (!y) return NULL;
  for (int d = 0; d < nd - 3; d++) so[d] = x->shape[d];
  for (int d = 0; d < 3; d++) so[nd - 3 + d] = s->k[d];
  return ad_reshape(ctx, y, nd, so);
}

static ad_tensor *pool3d_forward(nn_layer *l, ad_tensor *x, bool training) {
  (void)training;
  pool3d_state *s = nn_layer_state(l);
  ad_ctx *ctx = nn_layer_ctx(l);
  switch (s->kind) {
  case POOL3D_MAX:
    return ad_max_pool3d(ctx, x, s->k[0], s->k[1], s->k[2], &s->o);
  case POOL3D_AVG:
    return ad_avg_pool3d(ctx, x, s->k[0], s->k[1], s->k[2], &s->o);
  case POOL3D_ADAPTIVE:
  case POOL3D_ADAPTIVE_MAX:
    break;
  }
  return adaptive3d(l, x);
}

static void pool3d_free(nn_layer *l) {
  pool3d_state *s = nn_layer_state(l);
  if (s) ad_free(nn_layer_ctx(l), s, sizeof *s);
}

/* An int when the three agree ("2"), else a triple ("(1, 2, 3)"). */
static void pool3d_triple(nn_text *t, const char *name, const int64_t *v, int64_t dflt) {
  long long a = v[0] ? v[0] : dflt, b = v[1] ? v[1] : dflt, c = v[2] ? v[2] : dflt;
  if (a == b && b == c)
    nn_text_add(t, "%s=%lld", name, a);
  else
    nn_text_add(t, "%s=(%lld, %lld, %lld)", name, a, b, c);
}

/* PyTorch's MaxPool3d, AvgPool3d and AdaptiveAvgPool3d extra_repr (as the
 * 2-D layers, AvgPool3d also shows ceil_mode, count_include_pad and
 * divisor_override when they are not the defaults). A stride left at 0
 * prints as the kernel. */
static void pool3d_describe(const nn_layer *l, nn_text *t) {
  const pool3d_state *s = nn_layer_state(l);
  const ad_pool3d_opts *o = &s->o;
  if (s->kind == POOL3D_ADAPTIVE || s->kind == POOL3D_ADAPTIVE_MAX) {
    pool3d_triple(t, "output_size", s->k, 0);
    return;
  }
  int64_t st[3];
  for (int d = 0; d < 3; d++) st[d] = o->stride[d] ? o->stride[d] : s->k[d];
  pool3d_triple(t, "kernel_size", s->k, 0);
  pool3d_triple(t, ", stride", st, 0);
  pool3d_triple(t, ", padding", o->padding, 0);
  if (s->kind == POOL3D_MAX) {
    pool3d_triple(t, ", dilation", o->dilation, 1);
    nn_text_add(t, ", ceil_mode=%s", nn_py_bool(o->ceil_mode));
    return;
  }
  if (o->ceil_mode) nn_text_add(t, ", ceil_mode=True");
  if (o->exclude_pad) nn_text_add(t, ", count_include_pad=False");
  if (o->divisor_override)
    nn_text_add(t, ", divisor_override=%lld", (long long)o->divisor_override);
}

static const nn_layer_ops pool3d_ops = {pool3d_forward, pool3d_free, pool3d_describe};

ad_tensor *nn_pool3d_layer_indices(nn_layer *l, ad_tensor *x, bool *mine) {
  const pool3d_state *s = nn_layer_runs(l, &pool3d_ops) ? nn_layer_state(l) : NULL;
  *mine = s && (s->kind == POOL3D_MAX || s->kind == POOL3D_ADAPTIVE_MAX);
  if (!*mine) return NULL;
  if (s->kind == POOL3D_MAX)
    return ad_max_pool3d_indices(nn_layer_ctx(l), x, s->k[0], s->k[1], s->k[2], &s->o);
  return adaptive3d_input_ok(l, x) ? nn_adaptive_max_indices(nn_layer_ctx(l), x, 3, s->k) : NULL;
}

static nn_layer *pool3d_new(ad_ctx *ctx, pool3d_kind kind, int64_t kd, int64_t kh, int64_t kw,
                            const ad_pool3d_opts *opts) {
  if (!ctx) return NULL;
  const char *name = kind == POOL3D_MAX ? "max_pool3d" : "avg_pool3d";
  pool3d_state s = {.kind = kind, .k = {kd, kh, kw}};
  if (opts) s.o = *opts;
  const ad_pool3d_opts *o = &s.o;
  /* what PyTorch's constructor or first forward refuses, said now */
  const char *bad = NULL;
  for (int d = 0; d < 3 && !bad; d++) {
    if (s.k[d] < 1 || s.k[d] > POOL3D_MAX_SIZE)
      bad = "kernel must be in [1, 2^30]";
    else if (o->stride[d] < 0 || o->stride[d] > POOL3D_MAX_SIZE)
      bad = "stride must be in [1, 2^30] (0 means the kernel)";
    else if (o->dilation[d] < 0 || o->dilation[d] > POOL3D_MAX_SIZE)
      bad = "dilation must be in [1, 2^30] (0 means 1)";
    else if (kind == POOL3D_AVG && o->dilation[d] > 1)
      bad = "dilation is for max_pool3d only";
    else if (o->padding[d] < 0 || o->padding[d] > s.k[d] / 2)
      bad = "padding must be >= 0 and at most half the kernel";
  }
  if (!bad && kind == POOL3D_MAX && (o->exclude_pad || o->divisor_override))
    bad = "exclude_pad and divisor_override are for avg_pool3d only";
  if (bad) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: %s (kernel %lldx%lldx%lld, stride %lldx%lldx%lld, padding %lldx%lldx%lld, "
                 "dilation %lldx%lldx%lld)",
                 name, bad, (long long)kd, (long long)kh, (long long)kw, (long long)o->stride[0],
                 (long long)o->stride[1], (long long)o->stride[2], (long long)o->padding[0],
                 (long long)o->padding[1], (long long)o->padding[2], (long long)o->dilation[0],
                 (long long)o->dilation[1], (long long)o->dilation[2]);
    return NULL;
  }
  return nn_layer_new_copy(ctx, name, &pool3d_ops, &s, sizeof s);
}

nn_layer *nn_max_pool3d_new(ad_ctx *ctx, int64_t kd, int64_t kh, int64_t kw,
                            const ad_pool3d_opts *opts) {
  return pool3d_new(ctx, POOL3D_MAX, kd, kh, kw, opts);
}

nn_layer *nn_avg_pool3d_new(ad_ctx *ctx, int64_t kd, int64_t kh, int64_t kw,
                            const ad_pool3d_opts *opts) {
  return pool3d_new(ctx, POOL3D_AVG, kd, kh, kw, opts);
}

static nn_layer *adaptive3d_new(ad_ctx *ctx, pool3d_kind kind, int64_t od, int64_t oh, int64_t ow) {
  if (!ctx) return NULL;
  const char *name = kind == POOL3D_ADAPTIVE ? "adaptive_avg_pool3d" : "adaptive_max_pool3d";
  if (od < 1 || oh < 1 || ow < 1 || od > POOL3D_MAX_SIZE || oh > POOL3D_MAX_SIZE ||
      ow > POOL3D_MAX_SIZE) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: output size %lldx%lldx%lld must be in [1, 2^30] on each side", name,
                 (long long)od, (long long)oh, (long long)ow);
    return NULL;
  }
  pool3d_state s = {.kind = kind, .k = {od, oh, ow}};
  return nn_layer_new_copy(ctx, name, &pool3d_ops, &s, sizeof s);
}

nn_layer *nn_adaptive_avg_pool3d_new(ad_ctx *ctx, int64_t od, int64_t oh, int64_t ow) {
  return adaptive3d_new(ctx, POOL3D_ADAPTIVE, od, oh, ow);
}

nn_layer *nn_adaptive_max_pool3d_new(ad_ctx *ctx, int64_t od, int64_t oh, int64_t ow) {
  return adaptive3d_new(ctx, POOL3D_ADAPTIVE_MAX, od, oh, ow);
}
