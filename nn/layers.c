/* layers.c: activations, Dense, dropout, flatten and lambda layers, and
 * what every layer shares (parameters, buffers, names, kinds defined in
 * other files through nn_layer_ops). Every forward pass is a chain of ad_
 * ops, so the tape derives its backward. */
#include "nn_internal.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

typedef enum layer_type { L_DENSE, L_ACT, L_DROPOUT, L_FLATTEN, L_LAMBDA, L_EXT } layer_type;

struct nn_layer {
  ad_ctx *ctx;
  layer_type type;
  char *kind; /* owned */
  char *name; /* owned; NULL until a model adopts the layer */
  nn_params *params;
  nn_params *buffers;
  /* a kind defined in another file (L_EXT) */
  const nn_layer_ops *ops;
  void *state;
  /* dense */
  int64_t in, out;
  ad_tensor *w, *b;
  /* dense and activation (prelu's weight is w) */
  nn_act act;
  double alpha;
  double lo, hi; /* hardtanh, relu6: the bounds */
  /* dropout */
  double p;
  ad_rng rng;
  /* lambda */
  nn_layer_fn fn;
  void *ud;
  /* the last successful forward's output shape; out_ndim -1 before one */
  int out_ndim;
  int64_t out_shape[AD_MAX_DIMS];
};

/* ------------------------------------------------------------ activations */

/* The last nn_act: every range check reads it. */
#define ACT_LAST NN_ACT_PRELU

static const char *const act_names[] = {
    "none",       "sigmoid",  "tanh",        "relu",     "leaky_relu", "gelu",
    "softplus",   "softmax",  "log_softmax", "hardtanh", "relu6",      "silu",
    "elu",        "selu",     "celu",        "mish",     "hardswish",  "hardsigmoid",
    "logsigmoid", "softsign", "tanhshrink",  "prelu"};
_Static_assert(sizeof act_names / sizeof act_names[0] == ACT_LAST + 1, "a name per nn_act");

const char *nn_act_name(nn_act act) { return (unsigned)act <= ACT_LAST ? act_names[act] : "?"; }

/* PyTorch's nn.SELU constants (torch/csrc: SELU_ALPHA, SELU_SCALE). */
static const double selu_alpha = 1.6732632423543772848170429916717;
static const double selu_scale = 1.0507009873554804934193349852946;

/* The coefficient k as PyTorch's float32 kernels hold it. */
static double in_dtype(const ad_tensor *x, double k) {
  return x->dtype == AD_F32 ? (double)(float)k : k;
}

/* PyTorch's elu(x, alpha, scale, input_scale) (elu, selu, celu), one op
 * (ad_elu) and its gradient another, PyTorch's elu_backward:
 *   y = x <= 0 ? (e^(x is) - 1) alpha scale : x scale
 * with its slopes: alpha scale is at 0 (the left side's) and scale at a
 * NaN x (its scalar kernel's), and the second derivative 0 at 0 (the
 * right side's: elu_double_backward masks x < 0). The coefficients are
 * rounded to x's dtype and multiplied in it, as PyTorch's kernels do.
 * PyTorch differentiates celu with input_scale 1 / float(alpha) (its
 * derivatives.yaml: 1.0/alpha.toFloat()), not the forward's 1 / alpha:
 * bs, the op's grad_input_scale (where float32(alpha) is 0, |alpha| <
 * 1e-45, there is no rule to copy: is). */
static ad_tensor *elu_like(ad_ctx *ctx, ad_tensor *x, double alpha, double scale, double is,
                           double bs) {
  if (!isfinite(in_dtype(x, bs))) bs = is;
  return ad_elu(ctx, x, alpha, scale, is, bs);
}

ad_tensor *nn_activate(ad_ctx *ctx, ad_tensor *x, nn_act act, double alpha) {
  if (!x) {
    nn_null_arg(ctx, "activate", "x");
    return NULL;
  }
  /* the composites below read x->dtype: refuse what no op would take */
  if ((unsigned)act > NN_ACT_RELU6 && (unsigned)act <= ACT_LAST &&
      nn_check_input(ctx, "activate", "x", x) != AD_OK)
    return NULL;
  if ((unsigned)act > NN_ACT_RELU6 && (unsigned)act <= ACT_LAST && act != NN_ACT_PRELU &&
      x->dtype != AD_F32 && x->dtype != AD_F64) {
    char a[64];
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %s is %s; a float dtype is needed", act_names[act],
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
    return NULL;
  }
  /* PyTorch converts alpha (celu: also 1 / alpha, its input_scale) to x's
   * dtype and refuses what overflows float32 */
  if ((act == NN_ACT_LEAKY_RELU || act == NN_ACT_ELU || act == NN_ACT_CELU) &&
      ad_tensor_is_valid(x) && /* else the op reports x */
      (!nn_f32_setting_ok(ctx, act_names[act], x, "alpha", alpha) ||
       (act == NN_ACT_CELU && alpha != 0 &&
        !nn_f32_setting_ok(ctx, act_names[act], x, "1 / alpha", 1.0 / alpha))))
    return NULL;
  switch (act) {
  case NN_ACT_NONE:
    return x;
  case NN_ACT_SIGMOID:
    return ad_sigmoid(ctx, x);
  case NN_ACT_TANH:
    return ad_tanh(ctx, x);
  case NN_ACT_RELU:
    return ad_relu(ctx, x);
  case NN_ACT_LEAKY_RELU:
    return ad_leaky_relu(ctx, x, alpha);
  case NN_ACT_GELU:
    return ad_gelu(ctx, x);
  case NN_ACT_SOFTPLUS:
    return ad_softplus(ctx, x);
  case NN_ACT_SOFTMAX:
    return ad_softmax(ctx, x, -1);
  case NN_ACT_LOG_SOFTMAX:
    return ad_log_softmax(ctx, x, -1);
  case NN_ACT_HARDTANH:
    return ad_hardtanh(ctx, x, -1.0, 1.0);
  case NN_ACT_RELU6:
    return ad_hardtanh(ctx, x, 0.0, 6.0);
  case NN_ACT_SILU: /* PyTorch: x / (1 + e^-x), whose tape would give inf / inf at -1000 */
    return ad_mul(ctx, x, ad_sigmoid(ctx, x));
  case NN_ACT_ELU:
    return elu_like(ctx, x, alpha, 1.0, 1.0, 1.0);
  case NN_ACT_SELU:
    return elu_like(ctx, x, selu_alpha, selu_scale, 1.0, 1.0);
  case NN_ACT_CELU:
    if (alpha == 0) { /* PyTorch's input_scale is 1 / alpha */
      ad_set_error(ctx, AD_ERR_ARG, "celu: alpha cannot be 0");
      return NULL;
    }
    if (isfinite(alpha) && fabs(alpha) > FLT_MAX) { /* no float32(alpha) for the slope */
      ad_set_error(ctx, AD_ERR_ARG,
                   "celu: alpha %.9g is outside float32's range (PyTorch's gradient takes 1 / "
                   "float32(alpha))",
                   alpha);
      return NULL;
    }
    return elu_like(ctx, x, alpha, 1.0, 1.0 / alpha, 1.0 / (double)(float)alpha);
  case NN_ACT_MISH: /* ad_softplus is stable: tanh(softplus(1000)) = 1 */
    return ad_mul(ctx, x, ad_tanh(ctx, ad_softplus(ctx, x)));
  case NN_ACT_HARDSWISH: /* one op each, PyTorch's slopes at -3, 3 and NaN (ad.h) */
    return ad_hardswish(ctx, x);
  case NN_ACT_HARDSIGMOID:
    return ad_hardsigmoid(ctx, x);
  case NN_ACT_LOGSIGMOID: /* min(x, 0) - log1p(e^-|x|), as PyTorch's (+0 at 1000) */
    return ad_logsigmoid(ctx, x);
  case NN_ACT_SOFTSIGN: /* PyTorch's own composite */
    return ad_div(ctx, x, ad_add_scalar(ctx, ad_abs(ctx, x), 1));
  case NN_ACT_TANHSHRINK: /* PyTorch's own composite */
    return ad_sub(ctx, x, ad_tanh(ctx, x));
  case NN_ACT_PRELU:
    ad_set_error(ctx, AD_ERR_ARG,
                 "activate: prelu has a learnable weight; use the layer nn_prelu_new");
    return NULL;
  }
  ad_set_error(ctx, AD_ERR_ARG, "activate: unknown activation %d", (int)act);
  return NULL;
}

/* ----------------------------------------------------------------- common */

static nn_layer *layer_new(ad_ctx *ctx, layer_type type, const char *kind) {
  if (!ctx) return NULL;
  nn_layer *l = ad_malloc(ctx, sizeof *l);
  if (!l) return NULL;
  memset(l, 0, sizeof *l);
  l->ctx = ctx;
  l->type = type;
  l->out_ndim = -1;
  l->kind = nn_strdup(ctx, kind);
  l->params = l->kind ? nn_params_new(ctx) : NULL;
  l->buffers = l->params ? nn_buffers_new(ctx) : NULL;
  if (!l->buffers) {
    nn_layer_free(l);
    return NULL;
  }
  nn_params_hold(l->params);
  nn_params_hold(l->buffers);
  return l;
}

void nn_layer_free(nn_layer *l) {
  if (!l) return;
  if (nn_layer_adopted(l)) {
    ad_set_error(l->ctx, AD_ERR_STATE,
                 "layer_free: %s '%s' belongs to a model and is freed with it (nn_model_free)",
                 l->kind, l->name);
    return;
  }
  nn_layer_destroy(l);
}

void nn_layer_destroy(nn_layer *l) {
  if (!l) return;
  ad_ctx *ctx = l->ctx;
  if (l->ops && l->ops->free) l->ops->free(l);
  nn_params_release(l->params);
  nn_params_release(l->buffers);
  nn_strfree(ctx, l->kind);
  nn_strfree(ctx, l->name);
  ad_free(ctx, l, sizeof *l);
}

const char *nn_layer_kind(const nn_layer *l) { return l ? l->kind : NULL; }
const char *nn_layer_name(const nn_layer *l) { return l ? (l->name ? l->name : "") : NULL; }
nn_params *nn_layer_params(const nn_layer *l) { return l ? l->params : NULL; }
nn_params *nn_layer_buffers(const nn_layer *l) { return l ? l->buffers : NULL; }
bool nn_layer_adopted(const nn_layer *l) { return l && l->name; }

ad_status nn_layer_adopt(nn_layer *l, const char *name) {
  l->name = nn_strdup(l->ctx, name);
  return l->name ? AD_OK : AD_ERR_OOM;
}

/* "dense '2'" or "dense" for error messages. */
static const char *who(const nn_layer *l, char *buf, size_t n) {
  if (l->name)
    snprintf(buf, n, "%s '%s'", l->kind, l->name);
  else
    snprintf(buf, n, "%s", l->kind);
  return buf;
}

const char *nn_layer_who(const nn_layer *l, char *buf, size_t n) { return who(l, buf, n); }

nn_layer *nn_layer_new_ext(ad_ctx *ctx, const char *kind, const nn_layer_ops *ops, void *state) {
  nn_layer *l = layer_new(ctx, L_EXT, kind);
  if (!l) return NULL; /* it never owned state: the caller frees it */
  l->ops = ops;
  l->state = state;
  return l;
}

nn_layer *nn_layer_new_copy(ad_ctx *ctx, const char *kind, const nn_layer_ops *ops,
                            const void *init, size_t size) {
  void *s = ad_malloc(ctx, size);
  if (!s) return NULL;
  memcpy(s, init, size);
  nn_layer *l = nn_layer_new_ext(ctx, kind, ops, s);
  if (!l) ad_free(ctx, s, size);
  return l;
}

bool nn_f32_setting_ok(ad_ctx *ctx, const char *fn, const ad_tensor *x, const char *what,
                       double v) {
  if (x->dtype != AD_F32 || !isfinite(v) || fabs(v) <= FLT_MAX) return true;
  /* %.9g: 3.4028235e+38 (refused) reads apart from FLT_MAX (taken) */
  ad_set_error(ctx, AD_ERR_ARG, "%s: %s %.9g is outside float32's range (x is f32)", fn, what, v);
  return false;
}

bool nn_layer_float_input(nn_layer *l, const ad_tensor *x) {
  if (x->dtype == AD_F32 || x->dtype == AD_F64) return true;
  char who[96], a[64];
  nn_layer_who(l, who, sizeof who);
  ad_set_error(l->ctx, AD_ERR_DTYPE, "%s: input %s must be float, got %s", who,
               ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype));
  return false;
}

void *nn_layer_state(const nn_layer *l) { return l ? l->state : NULL; }
bool nn_layer_runs(const nn_layer *l, const nn_layer_ops *ops) { return l && l->ops == ops; }
ad_ctx *nn_layer_ctx(const nn_layer *l) { return l ? l->ctx : NULL; }

/* ------------------------------------------------------------------ dense */

nn_layer *nn_dense_new(ad_ctx *ctx, int64_t in, int64_t out, ad_rng *rng,
                       const nn_dense_opts *opts) {
  if (!ctx) return NULL;
  nn_dense_opts o = {0};
  if (opts) o = *opts;
  if (in < 1 || out < 1) {
    ad_set_error(ctx, AD_ERR_ARG, "dense: in %lld and out %lld must be >= 1", (long long)in,
                 (long long)out);
    return NULL;
  }
  if (o.dtype != AD_F32 && o.dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "dense: parameters must be float, got %s",
                 ad_dtype_name(o.dtype));
    return NULL;
  }
  if ((unsigned)o.activation > ACT_LAST) {
    ad_set_error(ctx, AD_ERR_ARG, "dense: unknown activation %d", (int)o.activation);
    return NULL;
  }
  if (o.activation == NN_ACT_PRELU) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "dense: prelu has a learnable weight, which dense does not hold; add an "
                 "nn_prelu_new layer after it");
    return NULL;
  }
  bool has_alpha = o.activation == NN_ACT_ELU || o.activation == NN_ACT_CELU;
  if (has_alpha && !isfinite(o.alpha)) {
    ad_set_error(ctx, AD_ERR_ARG, "dense: %s alpha %g is not finite", act_names[o.activation],
                 o.alpha);
    return NULL;
  }
  if (o.weight_init.kind == NN_INIT_DEFAULT)
    o.weight_init = nn_init_make(NN_INIT_XAVIER_UNIFORM, 0, 0);
  if (o.bias_init.kind == NN_INIT_DEFAULT) o.bias_init = nn_init_make(NN_INIT_ZEROS, 0, 0);
  nn_layer *l = layer_new(ctx, L_DENSE, "dense");
  if (!l) return NULL;
  l->in = in;
  l->out = out;
  l->act = o.activation;
  l->alpha = o.alpha ? o.alpha : has_alpha ? 1.0 : 0.01;
  int64_t ws[2] = {out, in};
  ad_tensor *w = ad_zeros(ctx, o.dtype, 2, ws);
  if (nn_params_add(l->params, "weight", w, true) != AD_OK ||
      nn_init_tensor(ctx, w, o.weight_init, rng) != AD_OK) {
    nn_error_tensor(ctx, "nn_dense_new", NULL, "weight", 2, ws);
    nn_layer_free(l);
    return NULL;
  }
  l->w = w;
  if (!o.no_bias) {
    /* a 1-d bias has fan_in = fan_out = out for Xavier and He */
    ad_tensor *b = ad_zeros(ctx, o.dtype, 1, &out);
    if (nn_params_add(l->params, "bias", b, true) != AD_OK ||
        nn_init_tensor(ctx, b, o.bias_init, rng) != AD_OK) {
      nn_error_tensor(ctx, "nn_dense_new", NULL, "bias", 1, &out);
      nn_layer_free(l);
      return NULL;
    }
    l->b = b;
  }
  return l;
}

/* y = act(x W^T + b) over the last axis of x. */
static ad_tensor *dense_forward(nn_layer *l, ad_tensor *x) {
  ad_ctx *ctx = l->ctx;
  char a[64], b[64], c[96];
  if (x->ndim < 1 || x->shape[x->ndim - 1] != l->in) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input %s has %lld features, the layer expects %lld (weight %s)",
                 who(l, c, sizeof c), ad_shape_str(x, a, sizeof a),
                 x->ndim ? (long long)x->shape[x->ndim - 1] : 0LL, (long long)l->in,
                 ad_shape_str(l->w, b, sizeof b));
    return NULL;
  }
  if (x->dtype != l->w->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %s is %s, the weights are %s", who(l, c, sizeof c),
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype), ad_dtype_name(l->w->dtype));
    return NULL;
  }
  ad_tensor *x2 = x;
  if (x->ndim != 2) {
    int64_t s[2] = {-1, l->in};
    x2 = ad_reshape(ctx, x, 2, s);
  }
  ad_tensor *y = ad_matmul(ctx, x2, l->w, false, true);
  if (l->b) y = ad_add(ctx, y, l->b);
  if (y && x->ndim != 2) {
    int64_t s[AD_MAX_DIMS];
    for (int k = 0; k + 1 < x->ndim; k++) s[k] = x->shape[k];
    s[x->ndim - 1] = l->out;
    y = ad_reshape(ctx, y, x->ndim, s);
  }
  return nn_activate(ctx, y, l->act, l->alpha);
}

/* ------------------------------------------------------------ activations */

nn_layer *nn_activation_new(ad_ctx *ctx, nn_act act) {
  if (!ctx) return NULL;
  if ((unsigned)act > ACT_LAST) {
    ad_set_error(ctx, AD_ERR_ARG, "activation: unknown activation %d", (int)act);
    return NULL;
  }
  if (act == NN_ACT_PRELU) return nn_prelu_new(ctx, 1, 0.25, AD_F32);
  nn_layer *l = layer_new(ctx, L_ACT, nn_act_name(act));
  if (l) {
    l->act = act;
    l->alpha = act == NN_ACT_ELU || act == NN_ACT_CELU ? 1.0 : 0.01;
    l->lo = act == NN_ACT_RELU6 ? 0.0 : -1.0; /* hardtanh's bounds */
    l->hi = act == NN_ACT_RELU6 ? 6.0 : 1.0;
  }
  return l;
}

nn_layer *nn_leaky_relu_new(ad_ctx *ctx, double alpha) {
  if (ctx && !isfinite(alpha)) { /* every negative input would give NaN or an infinity */
    ad_set_error(ctx, AD_ERR_ARG, "leaky_relu: slope %g is not finite", alpha);
    return NULL;
  }
  nn_layer *l = nn_activation_new(ctx, NN_ACT_LEAKY_RELU);
  if (l) l->alpha = alpha;
  return l;
}

nn_layer *nn_hardtanh_new(ad_ctx *ctx, double min, double max) {
  if (ctx && !(max > min)) { /* PyTorch asserts max_val > min_val */
    ad_set_error(ctx, AD_ERR_ARG, "hardtanh: max %g is not greater than min %g", max, min);
    return NULL;
  }
  nn_layer *l = nn_activation_new(ctx, NN_ACT_HARDTANH);
  if (l) {
    l->lo = min;
    l->hi = max;
  }
  return l;
}

nn_layer *nn_relu6_new(ad_ctx *ctx) { return nn_activation_new(ctx, NN_ACT_RELU6); }

nn_layer *nn_elu_new(ad_ctx *ctx, double alpha) {
  if (ctx && !isfinite(alpha)) { /* inf (e^0 - 1) at x = 0 would be NaN */
    ad_set_error(ctx, AD_ERR_ARG, "elu: alpha %g is not finite", alpha);
    return NULL;
  }
  nn_layer *l = nn_activation_new(ctx, NN_ACT_ELU);
  if (l) l->alpha = alpha;
  return l;
}

nn_layer *nn_celu_new(ad_ctx *ctx, double alpha) {
  if (ctx && !(isfinite(alpha) && alpha != 0)) {
    ad_set_error(ctx, AD_ERR_ARG, "celu: alpha %g must be finite and not 0", alpha);
    return NULL;
  }
  nn_layer *l = nn_activation_new(ctx, NN_ACT_CELU);
  if (l) l->alpha = alpha;
  return l;
}

nn_layer *nn_prelu_new(ad_ctx *ctx, int64_t num_parameters, double init, ad_dtype dtype) {
  if (!ctx) return NULL;
  if (num_parameters < 1 || !isfinite(init)) {
    ad_set_error(ctx, AD_ERR_ARG, "prelu: num_parameters %lld must be >= 1 and init %g finite",
                 (long long)num_parameters, init);
    return NULL;
  }
  if (dtype != AD_F32 && dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "prelu: the weight must be float, got %s",
                 ad_dtype_name(dtype));
    return NULL;
  }
  nn_layer *l = layer_new(ctx, L_ACT, "prelu");
  if (!l) return NULL;
  l->act = NN_ACT_PRELU;
  ad_tensor *w = ad_full(ctx, dtype, 1, &num_parameters, init);
  if (nn_params_add(l->params, "weight", w, true) != AD_OK) {
    nn_error_tensor(ctx, "nn_prelu_new", NULL, "weight", 1, &num_parameters);
    nn_layer_free(l);
    return NULL;
  }
  l->w = w;
  return l;
}

/* y = x > 0 ? x : w x, w [C] read as [1, C, 1, ...] (a view), as
 * PyTorch's prelu: slope w at 0 and at a NaN x, where w's gradient is x
 * dy (0 at 0, NaN at NaN); the second derivative in x is 0, the one in x
 * and w 1 where x <= 0 and 0 elsewhere, at NaN too. The op prelu (an x of
 * +inf adds 0 to w's gradient, as in PyTorch) with attrs.scalar 1: its
 * recorded backward drops the x-w cross term at a NaN x, as PyTorch's
 * double backward masks its terms by x > 0 and x <= 0, neither of which
 * holds there (ad_prelu keeps it). One pass over x: no look for NaN. */
static ad_tensor *prelu_forward(nn_layer *l, ad_tensor *x) {
  ad_ctx *ctx = l->ctx;
  char a[64], c[96];
  if (x->dtype != l->w->dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %s is %s, the weight is %s", who(l, c, sizeof c),
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype), ad_dtype_name(l->w->dtype));
    return NULL;
  }
  int64_t n = l->w->size, s[AD_MAX_DIMS];
  if (n > 1 && (x->ndim < 2 || x->shape[1] != n)) { /* PyTorch: "Mismatch of parameter numbers
                                                     * and input channel size" */
    if (x->ndim < 2)
      ad_set_error(ctx, AD_ERR_SHAPE,
                   "%s: input %s has 1 channel (no dim 1), the layer has %lld weights",
                   who(l, c, sizeof c), ad_shape_str(x, a, sizeof a), (long long)n);
    else
      ad_set_error(
          ctx, AD_ERR_SHAPE, "%s: input %s has %lld channels (dim 1), the layer has %lld weights",
          who(l, c, sizeof c), ad_shape_str(x, a, sizeof a), (long long)x->shape[1], (long long)n);
    return NULL;
  }
  for (int k = 0; k < x->ndim; k++) s[k] = k == 1 ? n : 1;
  ad_tensor *in[2] = {x, ad_reshape(ctx, l->w, x->ndim, s)};
  return in[1] ? ad_op_apply(ctx, ad_op_find(ctx, "prelu"), 2, in, &(ad_attrs){.scalar = 1}) : NULL;
}

/* ---------------------------------------------------------------- dropout */

nn_layer *nn_dropout_new(ad_ctx *ctx, double p, uint64_t seed) {
  if (!ctx) return NULL;
  if (!(p >= 0 && p < 1)) {
    ad_set_error(ctx, AD_ERR_ARG, "dropout: p = %g is outside [0, 1)", p);
    return NULL;
  }
  nn_layer *l = layer_new(ctx, L_DROPOUT, "dropout");
  if (l) {
    l->p = p;
    ad_rng_seed(&l->rng, seed);
  }
  return l;
}

/* Masks are drawn in chunks of DROP_CHUNK elements, each from a stream of
 * its own: chunk c of a call from an ad_rng seeded with k + c, where k is
 * one draw of the layer's generator per call. A chunk's draws depend on k
 * and c only, so threads take chunks in any order and the mask has the same
 * bits on any number of threads. */
#define DROP_CHUNK 4096
#define DROP_GRAIN 8 /* chunks per parallel range: 32K elements */

typedef struct drop_job {
  void *m;
  ad_dtype dtype;
  int64_t n;
  uint64_t key, thr;
  double keep;
} drop_job;

/* Chunks [c0, c1) of the mask. m = [u >= p] keep with u = ad_rng_uniform,
 * without the conversion: the uniform is the top 53 bits of ad_rng_next
 * times 2^-53, so it reaches p exactly when those bits, as an integer,
 * reach thr = p 2^53 rounded up. */
static void drop_range(void *ud, int64_t c0, int64_t c1) {
  const drop_job *j = ud;
  for (int64_t c = c0; c < c1; c++) {
    ad_rng r;
    ad_rng_seed(&r, j->key + (uint64_t)c);
    int64_t b = c * DROP_CHUNK, e = b + DROP_CHUNK < j->n ? b + DROP_CHUNK : j->n;
    if (j->dtype == AD_F32) {
      float *d = j->m, keep = (float)j->keep;
      for (int64_t i = b; i < e; i++) d[i] = ad_rng_next(&r) >> 11 >= j->thr ? keep : 0;
    } else {
      double *d = j->m;
      for (int64_t i = b; i < e; i++) d[i] = ad_rng_next(&r) >> 11 >= j->thr ? j->keep : 0;
    }
  }
}

/* y = x * m, m = [u >= p] / (1 - p) with u ~ U[0,1) per element: a constant
 * mask, so dx = dy * m comes from the tape's mul. */
ad_tensor *nn_dropout_apply(ad_ctx *ctx, ad_tensor *x, double p, ad_rng *rng) {
  if (p == 0) return x;
  ad_tensor *m = nn_tmp_tensor(ctx, x->dtype, x->ndim, x->shape);
  if (!m) return NULL;
  ad_rng before = *rng; /* a call that fails takes no draw */
  drop_job j = {.m = m->data,
                .dtype = m->dtype,
                .n = m->size,
                .key = ad_rng_next(rng),
                .thr = (uint64_t)ceil(p * 0x1p53),
                .keep = 1.0 / (1.0 - p)};
  ad_parallel_for((m->size + DROP_CHUNK - 1) / DROP_CHUNK, DROP_GRAIN, drop_range, &j);
  ad_tensor *y = ad_mul(ctx, x, m);
  if (!y) *rng = before;
  return y;
}

static ad_tensor *dropout_forward(nn_layer *l, ad_tensor *x, bool training) {
  if (!training || l->p == 0) return x;
  ad_ctx *ctx = l->ctx;
  if (x->dtype != AD_F32 && x->dtype != AD_F64) {
    char c[96];
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input is %s; a float dtype is needed", who(l, c, sizeof c),
                 ad_dtype_name(x->dtype));
    return NULL;
  }
  return nn_dropout_apply(ctx, x, l->p, &l->rng);
}

/* ------------------------------------------------------- flatten, lambda */

nn_layer *nn_flatten_new(ad_ctx *ctx) { return layer_new(ctx, L_FLATTEN, "flatten"); }

nn_layer *nn_lambda_new(ad_ctx *ctx, const char *kind, nn_layer_fn fn, void *ud) {
  if (!ctx) return NULL;
  if (!fn) {
    ad_set_error(ctx, AD_ERR_NULL, "lambda: function is NULL");
    return NULL;
  }
  nn_layer *l = layer_new(ctx, L_LAMBDA, kind && kind[0] ? kind : "lambda");
  if (l) {
    l->fn = fn;
    l->ud = ud;
  }
  return l;
}

/* ------------------------------------------------------------ description */

void nn_text_add(nn_text *t, const char *fmt, ...) {
  if (t->at + 1 >= t->n) return; /* full: the text stays cut where it was */
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(t->buf + t->at, t->n - t->at, fmt, ap);
  va_end(ap);
  if (k < 0) {
    t->buf[t->at] = '\0';
    return;
  }
  t->at = (size_t)k < t->n - t->at ? t->at + (size_t)k : t->n - 1;
}

void nn_text_num(nn_text *t, double v) {
  if (isnan(v)) {
    nn_text_add(t, "nan");
    return;
  }
  if (isinf(v)) {
    nn_text_add(t, "%sinf", v < 0 ? "-" : "");
    return;
  }
  /* the fewest significant digits that read back as v, then Python's
   * choice between fixed and exponent notation (exponent below -4 or
   * from 16 on) */
  char e[40], out[64];
  int p = 1;
  for (; p < 17; p++) {
    snprintf(e, sizeof e, "%.*e", p - 1, v);
    if (strtod(e, NULL) == v) break;
  }
  snprintf(e, sizeof e, "%.*e", p - 1, v);
  int x = atoi(strchr(e, 'e') + 1);
  if (x < -4 || x >= 16) {
    nn_text_add(t, "%s", e);
    return;
  }
  int dec = p - 1 - x;
  snprintf(out, sizeof out, "%.*f", dec > 0 ? dec : 0, v);
  nn_text_add(t, "%s%s", out, strchr(out, '.') ? "" : ".0");
}

const char *nn_py_bool(bool b) { return b ? "True" : "False"; }

static void describe_builtin(const nn_layer *l, nn_text *t) {
  switch (l->type) {
  case L_DENSE:
    nn_text_add(t, "in_features=%lld, out_features=%lld, bias=%s", (long long)l->in,
                (long long)l->out, nn_py_bool(l->b != NULL));
    if (l->act != NN_ACT_NONE) nn_text_add(t, ", activation=%s", nn_act_name(l->act));
    if (l->act == NN_ACT_LEAKY_RELU) {
      nn_text_add(t, ", negative_slope=");
      nn_text_num(t, l->alpha);
    }
    if (l->act == NN_ACT_ELU || l->act == NN_ACT_CELU) {
      nn_text_add(t, ", alpha=");
      nn_text_num(t, l->alpha);
    }
    return;
  case L_ACT:
    switch (l->act) {
    case NN_ACT_LEAKY_RELU:
      nn_text_add(t, "negative_slope=");
      nn_text_num(t, l->alpha);
      return;
    case NN_ACT_HARDTANH:
      nn_text_add(t, "min_val=");
      nn_text_num(t, l->lo);
      nn_text_add(t, ", max_val=");
      nn_text_num(t, l->hi);
      return;
    case NN_ACT_GELU:
      nn_text_add(t, "approximate='none'");
      return;
    case NN_ACT_ELU: /* nn.ELU(alpha=1.0), nn.CELU(alpha=1.0) */
    case NN_ACT_CELU:
      nn_text_add(t, "alpha=");
      nn_text_num(t, l->alpha);
      return;
    case NN_ACT_PRELU: /* nn.PReLU(num_parameters=1) */
      nn_text_add(t, "num_parameters=%lld", (long long)l->w->size);
      return;
    case NN_ACT_SOFTMAX:
    case NN_ACT_LOG_SOFTMAX:
      nn_text_add(t, "dim=-1");
      return;
    default:
      return;
    }
  case L_DROPOUT:
    nn_text_add(t, "p=");
    nn_text_num(t, l->p);
    return;
  case L_FLATTEN:
    nn_text_add(t, "start_dim=1, end_dim=-1");
    return;
  case L_LAMBDA:
    return;
  case L_EXT:
    if (l->ops->describe) l->ops->describe(l, t);
    return;
  }
}

const char *nn_layer_describe(const nn_layer *l, char *buf, size_t n) {
  if (!l || !buf || n == 0) return NULL;
  buf[0] = '\0';
  nn_text t = {buf, n, 0};
  nn_text_add(&t, "%s(", l->kind);
  describe_builtin(l, &t);
  nn_text_add(&t, ")");
  return buf;
}

int nn_layer_output_shape(const nn_layer *l, int64_t *shape) {
  if (!l || l->out_ndim < 0) return -1;
  if (shape) memcpy(shape, l->out_shape, (size_t)l->out_ndim * sizeof *shape);
  return l->out_ndim;
}

void nn_layer_note_output(nn_layer *l, const ad_tensor *y) {
  if (!l || !y) return;
  l->out_ndim = y->ndim;
  memcpy(l->out_shape, y->shape, (size_t)y->ndim * sizeof *y->shape);
}

/* ---------------------------------------------------------------- forward */

static ad_tensor *layer_forward(nn_layer *l, ad_tensor *x, bool training) {
  char c[96];
  if (!x) {
    nn_null_arg(l->ctx, who(l, c, sizeof c), "x");
    return NULL;
  }
  /* some layers return x itself (flatten, an identity, dropout in eval) */
  if (nn_check_input(l->ctx, who(l, c, sizeof c), "x", x) != AD_OK) return NULL;
  switch (l->type) {
  case L_DENSE:
    return dense_forward(l, x);
  case L_ACT:
    if (l->act == NN_ACT_HARDTANH || l->act == NN_ACT_RELU6)
      return ad_hardtanh(l->ctx, x, l->lo, l->hi);
    if (l->act == NN_ACT_PRELU) return prelu_forward(l, x);
    return nn_activate(l->ctx, x, l->act, l->alpha);
  case L_DROPOUT:
    return dropout_forward(l, x, training);
  case L_FLATTEN: {
    if (x->ndim < 1) {
      ad_set_error(l->ctx, AD_ERR_SHAPE, "%s: cannot flatten a scalar", who(l, c, sizeof c));
      return NULL;
    }
    if (x->ndim == 2) return x;
    /* the product of the other dimensions, also for an empty batch ([0, 3,
     * 4] is [0, 12], as PyTorch's, so that a dense layer after it takes it) */
    int64_t s[2] = {x->shape[0], 1};
    for (int i = 1; i < x->ndim; i++) {
      if (x->shape[i] && s[1] > INT64_MAX / x->shape[i]) {
        char b[64];
        ad_set_error(l->ctx, AD_ERR_SHAPE, "%s: %s flattens to more than 2^63 - 1 features",
                     who(l, c, sizeof c), ad_shape_str(x, b, sizeof b));
        return NULL;
      }
      s[1] *= x->shape[i];
    }
    return ad_reshape(l->ctx, x, 2, s);
  }
  case L_LAMBDA: {
    ad_tensor *y = l->fn(l->ctx, x, training, l->ud);
    if (!y && ad_last_status(l->ctx) == AD_OK) /* a NULL must come with a message */
      ad_set_error(l->ctx, AD_ERR_ARG, "%s: the function returned NULL and recorded no error",
                   who(l, c, sizeof c));
    return y;
  }
  case L_EXT:
    return l->ops->forward(l, x, training);
  }
  return NULL;
}

ad_tensor *nn_layer_forward(nn_layer *l, ad_tensor *x, bool training) {
  if (!l) return NULL;
  ad_tensor *y = layer_forward(l, x, training);
  ad_status st = y ? AD_OK : ad_last_status(l->ctx);
  if (st == AD_OK) {
    nn_layer_note_output(l, y);
    return y;
  }
  /* an op's error passed through ("max_pool2d: input [3,5] must be 4-D"),
   * or a user layer's: named like the layers' own, "max_pool2d '1': ..." */
  char c[96], msg[512];
  size_t n = strlen(who(l, c, sizeof c));
  const char *m = ad_last_error(l->ctx);
  if (strncmp(m, c, n) != 0 || m[n] != ':') {
    snprintf(msg, sizeof msg, "%s", m);
    ad_set_error(l->ctx, st, "%s: %s", c, msg);
  }
  return NULL;
}
