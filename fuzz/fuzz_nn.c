/* fuzz_nn.c: libFuzzer target for the nn layer's API
 * (include/autodiff/nn.h: layers, Sequential models, losses). The input
 * is a small program that an interpreter runs on a fresh context (made
 * with fuzz_common.h's counting allocator, blocks over 16 MiB refused as
 * out of memory); seeds in fuzz/corpus/nn (fuzz/gen_corpus.c writes them).
 *
 * Program: a sequence of instructions, each led by one byte (fuzz_nn.h,
 * step() below): make an input (f32, f64 or i32; 0..5 dims of 0..6, now
 * and then a negative or huge one or a shape whose element count
 * overflows, or the shape of an earlier tensor with or without its last
 * dim; values from the bytes, NaN, +-inf, -0 and huge ones among them);
 * make a layer of a kind of the table FUZZ_LAYERS (every nn_*_new of
 * nn.h, with sizes, kernels, strides, paddings, dilations, groups, eps,
 * momentum, dropout p, initializers, dtypes and modes drawn from the
 * bytes, good and bad: zero, negative, huge, NaN, inf, unknown enums,
 * NULL rng); run a layer in training or evaluation mode through its own
 * forward (nn_layer_forward, nn_layer_forward2, nn_bilinear_forward,
 * nn_max_pool_indices, nn_max_unpool_forward, nn_rnn_forward with states
 * and lengths, nn_embedding_bag_forward with offsets and weights,
 * nn_multihead_attention with masks, the transformer forwards) or, now
 * and then, through another kind's; a loss of FUZZ_LOSSES (every nn_*_loss,
 * with options, weights and every reduction, bad ones included) on
 * earlier tensors; ad_backward; a Sequential of earlier layers (a layer
 * that already belongs to a model included), its forward and
 * nn_model_set_training toggles; ad_tape_reset; freeing a layer (one of a
 * model included: refused), a model or an input; toggling grad mode;
 * requires_grad on an input. An operand is an earlier input or result, or
 * now and then NULL, a freed input or a tensor of another context.
 *
 * Checks, besides ASan + UBSan and LeakSanitizer:
 *   - a constructor, forward or loss that fails returns NULL with
 *     ad_last_status != AD_OK and, but for out of memory, a non-empty
 *     ad_last_error; one given NULL, a freed input or another context's
 *     tensor for a required input fails, and so does a loss given an
 *     unknown reduction (or NN_BATCHMEAN, but for kl_div), nn_model_add
 *     of a layer that already belongs to a model, the forward of an empty
 *     Sequential and nn_layer_free of a layer a model owns (AD_ERR_STATE,
 *     the layer left working);
 *   - a result is a valid tensor of the context whose size is the
 *     product of its shape; a reduced loss is 0-d; after a successful
 *     forward (nn_layer_forward, nn_rnn_forward, nn_multihead_attention,
 *     a model's), nn_layer_output_shape of the layer (the model's last)
 *     is the result's shape; an unreduced elementwise loss has its first
 *     input's shape, and a sum one (NN_SUM) the sum of the unreduced
 *     losses (NN_NONE); nn_model_set_training returns the previous
 *     mode; nn_layer_describe writes a NUL-terminated string into its
 *     buffer;
 *   - a forward that fails changes none of the layer's parameters and
 *     buffers, nor its nn_layer_output_shape, and one in evaluation mode (nn_layer_forward; but an
 *     embedding's max_norm, which renormalises in place) changes none and
 *     gives the same bits when run again; a Sequential in evaluation mode
 *     gives the bits of its layers' nn_layer_forward in turn (but with an
 *     embedding's max_norm);
 *   - after a successful backward every parameter of every live layer and
 *     model (nn_layer_params, nn_model_params) with a gradient has it of
 *     its shape and dtype, and no buffer has one;
 *   - no call changes grad or anomaly mode or leaves a scope open, and in
 *     no-grad mode a forward's result does not require a gradient;
 *   - after any error the context still works: d(3w)/dw of a leaf w kept
 *     for the purpose is 3 (a product and ad_grad);
 *   - at the end of each input, once its layers, models and inputs are
 *     freed and the tape reset, no tensor is live, and after ad_ctx_free
 *     every block the context allocated has been freed.
 *
 * FUZZ_NN_TRACE=1 prints each instruction and its outcome (to replay a
 * crash). */
#include "fuzz_common.h"
#include "fuzz_nn.h"

#include <limits.h>
#include <math.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
  MAX_SLOTS = 24,  /* tensors an input holds at once */
  MAX_LEAVES = 12, /* inputs an input makes */
  MAX_LAYERS = 6,  /* layers at once */
  MAX_MODELS = 2,  /* models at once */
  MAX_STEPS = 64,  /* instructions an input runs */
  MAX_LENGTHS = 16 /* entries of the lengths and offsets arrays */
};

/* --------------------------------------------------------------- input */

#include "fuzz_slots.h" /* u8, the slots, is_live, store, pick, make_aliens, finish_input */

static const int64_t odd_int[8] = {
    0, -1, -3, (int64_t)1 << 20, (int64_t)1 << 31, (int64_t)1 << 40, (int64_t)1 << 62, INT64_MAX};

/* A size (features, channels, a length): 1..6 mostly. */
static int64_t d_size(void) {
  unsigned b = u8();
  return b < 232 ? 1 + (int64_t)(b % 6) : odd_int[b % 8];
}

/* A kernel size: 1..4 mostly. */
static int64_t d_kernel(void) {
  unsigned b = u8();
  return b < 232 ? 1 + (int64_t)(b % 4) : odd_int[b % 8];
}

/* An option field where 0 means the default (a stride, a padding, a
 * dilation, groups): 0..3 mostly, sometimes negative or huge. */
static int64_t d_opt(void) {
  static const int64_t odd[8] = {-1,        -7,        1 << 20,  1 << 30, (int64_t)1 << 31,
                                 INT32_MAX, INT64_MAX, INT64_MIN};
  unsigned b = u8();
  return b < 224 ? (int64_t)(b % 4) : odd[b % 8];
}

/* A small signed integer (an index, a length): -1..5 mostly. */
static int64_t d_int(void) {
  static const int64_t odd[8] = {INT64_MIN, -((int64_t)1 << 40), -7,        6,
                                 1 << 30,   (int64_t)1 << 40,    INT32_MAX, INT64_MAX};
  unsigned b = u8();
  return b < 224 ? (int64_t)(b % 7) - 1 : odd[b % 8];
}

/* A dim argument: -3..3 mostly, sometimes far out of range. */
static int d_dim(void) {
  unsigned b = u8();
  return b < 248 ? (int)(b % 7) - 3 : b & 1 ? INT_MAX : INT_MIN;
}

/* A real: 0, +-k/16 (k < 112) or one of the values that break arithmetic. */
static double d_real(void) {
  static const double odd[16] = {NAN,   INFINITY, -INFINITY, -0.0, 4.9e-324, 1e-40, 3.5e38, 1e39,
                                 1e300, -1e300,   0.5,       1e-5, 2,        -1,    1,      0.25};
  unsigned b = u8();
  return b < 224 ? (b & 1 ? -1.0 : 1.0) * (double)(b >> 1) / 16 : odd[b % 16];
}

/* A probability or momentum: mostly 0 (the default), else in [0, 1) or bad. */
static double d_prob(void) {
  static const double odd[8] = {NAN, INFINITY, -INFINITY, 1, -0.5, 1.5, 1e-300, -0.0};
  unsigned b = u8();
  return b < 128 ? 0 : b < 240 ? (double)(b - 128) / 112 : odd[b % 8];
}

/* An eps: mostly 0 (the default), else a power of ten or bad. */
static double d_eps(void) {
  static const double odd[8] = {NAN, INFINITY, -INFINITY, -1, -0.0, 1e300, 4.9e-324, 0.5};
  unsigned b = u8();
  return b < 192 ? 0 : b < 240 ? pow(10, -(double)(b % 12)) : odd[b % 8];
}

/* A dtype: f32 (the default), f64, now and then i32 or no dtype at all. */
static ad_dtype d_dtype(void) {
  unsigned b = u8();
  return b < 160 ? AD_F32 : b < 232 ? AD_F64 : (ad_dtype)(b % 8);
}

/* An initializer: mostly the default, else any kind (one unknown). */
static nn_init d_init(void) {
  nn_init in = {0};
  if (u8() < 200) return in;
  in.kind = (nn_init_kind)(u8() % 14);
  in.a = d_real();
  in.b = d_real();
  return in;
}

/* --------------------------------------------------------------- state */

static struct {
  nn_layer *l; /* NULL: empty */
  int kind;
  int model; /* the model slot that owns it, or -1 */
} layers[MAX_LAYERS];
static struct {
  nn_model *m; /* NULL: empty */
  bool training;
} models[MAX_MODELS];
static int leaves_made;
static ad_ctx *C;       /* this input's context */
static ad_rng rng;      /* this input's generator */
static ad_tensor *w_ok; /* its leaf for the after-an-error check */
static bool must_fail;  /* an operand of this call is bad */
static bool skipped;    /* the call was not made (arrays too short for it) */
static char what[96];   /* the call being run, for messages */
static bool trace;      /* FUZZ_NN_TRACE set: print each step's outcome */

static void trace_result(const ad_tensor *r) {
  char buf[160];
  if (trace)
    fprintf(stderr, "fuzz_nn: %s -> %s\n", what,
            r ? ad_shape_str(r, buf, sizeof buf) : ad_last_error(C));
}

/* Whether t is bad as an input: NULL, another context's, or freed (a
 * freed header the context has since reused is a live tensor again). */
static bool is_bad(const ad_tensor *t) {
  if (is_live(t)) return false;
  bool bad = !t;
  for (int i = 0; i < 4; i++) bad = bad || t == alien[i];
  bad = bad || !ad_tensor_is_valid(t);
  if (bad && trace)
    fprintf(stderr, "fuzz_nn:   operand %s\n",
            !t                      ? "NULL"
            : ad_tensor_is_valid(t) ? "of another context"
                                    : "freed");
  return bad;
}

/* A required input: a bad one must make the call fail. */
static ad_tensor *req(void) {
  ad_tensor *t = pick();
  if (is_bad(t)) must_fail = true;
  return t;
}

/* An optional input (NULL means none): freed or foreign must fail. */
static ad_tensor *opt(void) {
  if (u8() < 128) return NULL;
  ad_tensor *t = pick();
  if (t && is_bad(t)) must_fail = true;
  return t;
}

static int pick_layer(void) {
  int n = 0;
  for (int i = 0; i < MAX_LAYERS; i++) n += layers[i].l != NULL;
  unsigned b = u8();
  if (!n) return -1;
  int k = (int)(b % (unsigned)n);
  for (int i = 0; i < MAX_LAYERS; i++)
    if (layers[i].l && k-- == 0) return i;
  return -1;
}

static int pick_model(void) {
  int n = 0;
  for (int i = 0; i < MAX_MODELS; i++) n += models[i].m != NULL;
  unsigned b = u8();
  if (!n) return -1;
  int k = (int)(b % (unsigned)n);
  for (int i = 0; i < MAX_MODELS; i++)
    if (models[i].m && k-- == 0) return i;
  return -1;
}

/* ---------------------------------------------------------- oracles */

static void check_error(void) {
  ad_status st = ad_last_status(C);
  const char *msg = ad_last_error(C);
  FUZZ_CHECK(st != AD_OK, "%s failed without an error status", what);
  FUZZ_CHECK(st == AD_ERR_OOM || (msg && msg[0]), "%s failed (%s) without a message", what,
             ad_status_str(st));
}

/* After an error the context still computes: d(3w)/dw = 3. */
static void check_usable(void) {
  ad_clear_error(C);
  bool grad = ad_set_grad_enabled(C, true);
  ad_tensor *y = ad_mul_scalar(C, w_ok, 3), *g = NULL;
  ad_status st = y ? ad_grad(C, y, NULL, 1, &w_ok, &g, false) : ad_last_status(C);
  if (st != AD_ERR_OOM) {
    FUZZ_CHECK(st == AD_OK && ad_tensor_item(y) == 7.5 && g && ad_tensor_item(g) == 3,
               "after an error of %s, 3w and d(3w)/dw are wrong: %s", what, ad_last_error(C));
  }
  ad_set_grad_enabled(C, grad);
  ad_clear_error(C);
}

static bool same_shape(const ad_tensor *a, const ad_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return false;
  return true;
}

/* A result: a valid tensor of the context, its size its shape's product. */
static void check_tensor(const ad_tensor *r) {
  FUZZ_CHECK(ad_tensor_is_valid(r) && ad_tensor_ctx(r) == C, "%s: result is not a tensor of ctx",
             what);
  FUZZ_CHECK(r->ndim >= 0 && r->ndim <= AD_MAX_DIMS, "%s: %d dims", what, r->ndim);
  int64_t n = 1;
  for (int d = 0; d < r->ndim; d++) {
    FUZZ_CHECK(r->shape[d] >= 0, "%s: dim %d is %lld", what, d, (long long)r->shape[d]);
    FUZZ_CHECK(!__builtin_mul_overflow(n, r->shape[d], &n), "%s: the shape's size overflows", what);
  }
  FUZZ_CHECK(n == r->size, "%s: size %lld for %lld elements", what, (long long)r->size,
             (long long)n);
}

/* nn_layer_output_shape(l) is r's shape. */
static void check_output_shape(const nn_layer *l, const ad_tensor *r) {
  int64_t s[AD_MAX_DIMS];
  char buf[160];
  int nd = nn_layer_output_shape(l, s);
  bool same = nd == r->ndim;
  for (int d = 0; same && d < nd; d++) same = s[d] == r->shape[d];
  FUZZ_CHECK(same, "%s: nn_layer_output_shape gives %d dims, the result is %s", what, nd,
             ad_shape_str(r, buf, sizeof buf));
}

/* Every parameter's gradient has its parameter's shape and dtype, and
 * no buffer has one. */
static void check_params(const nn_params *p, bool buffers) {
  for (int i = 0; i < nn_params_count(p); i++) {
    const ad_tensor *t = nn_params_tensor(p, i);
    if (!t->grad) continue;
    FUZZ_CHECK(!buffers, "%s: buffer %s has a gradient", what, nn_params_name(p, i));
    FUZZ_CHECK(ad_tensor_is_valid(t->grad) && same_shape(t, t->grad) && t->dtype == t->grad->dtype,
               "%s: the gradient of %s has another shape or dtype", what, nn_params_name(p, i));
  }
}

/* A hash (FNV-1a) of the data of a parameter list's tensors. */
static uint64_t hash_params(const nn_params *p, uint64_t h) {
  for (int i = 0; i < nn_params_count(p); i++) {
    const ad_tensor *t = nn_params_tensor(p, i);
    const unsigned char *b = t->data;
    size_t n = (size_t)t->size * ad_dtype_size(t->dtype);
    for (size_t j = 0; j < n; j++) h = (h ^ b[j]) * 0x100000001b3u;
  }
  return h;
}

/* The layer's state: its parameters and buffers (0 for a layer of more
 * than 1 MiB of them, not hashed: checking it would be slow). */
static uint64_t hash_layer(const nn_layer *l) {
  int64_t n = 0;
  for (int b = 0; b < 2; b++) {
    const nn_params *p = b ? nn_layer_buffers(l) : nn_layer_params(l);
    for (int i = 0; i < nn_params_count(p); i++) n += nn_params_tensor(p, i)->size;
  }
  if (n > (1 << 18)) return 0;
  return hash_params(nn_layer_buffers(l), hash_params(nn_layer_params(l), 0xcbf29ce484222325u));
}

static void check_all_params(void) {
  for (int i = 0; i < MAX_LAYERS; i++)
    if (layers[i].l) {
      check_params(nn_layer_params(layers[i].l), false);
      check_params(nn_layer_buffers(layers[i].l), true);
    }
  for (int i = 0; i < MAX_MODELS; i++)
    if (models[i].m) {
      check_params(nn_model_params(models[i].m), false);
      check_params(nn_model_buffers(models[i].m), true);
    }
}

/* ---------------------------------------------------------- builders */

/* Each reads its arguments from the input (in the order written) and
 * returns the new layer or NULL; k is the kind (FUZZ_LAYERS). */
typedef nn_layer *(*builder)(int k);

static ad_rng *d_rng(void) { return u8() < 248 ? &rng : NULL; }

/* in, out, rng, [opts: flags (no_bias), activation, alpha, inits, dtype] */
static nn_layer *b_dense(int k) {
  (void)k;
  int64_t in = d_size(), out = d_size();
  ad_rng *r = d_rng();
  nn_dense_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    o.no_bias = u8() & 1;
    o.activation = (nn_act)(u8() % 23);
    o.alpha = d_real();
    o.weight_init = d_init();
    o.bias_init = d_init();
    o.dtype = d_dtype();
  }
  return nn_dense_new(C, in, out, r, has ? &o : NULL);
}

/* act (22: unknown) */
static nn_layer *b_activation(int k) {
  (void)k;
  return nn_activation_new(C, (nn_act)(u8() % 23));
}

/* alpha or lambd */
static nn_layer *b_real(int k) {
  double a = d_real();
  switch (k) {
  case L_leaky_relu:
    return nn_leaky_relu_new(C, a);
  case L_elu:
    return nn_elu_new(C, a);
  case L_celu:
    return nn_celu_new(C, a);
  case L_softshrink:
    return nn_softshrink_new(C, a);
  default:
    return nn_hardshrink_new(C, a);
  }
}

/* two reals (and rrelu's seed) */
static nn_layer *b_real2(int k) {
  double a = d_real(), b = d_real();
  switch (k) {
  case L_hardtanh:
    return nn_hardtanh_new(C, a, b);
  case L_threshold:
    return nn_threshold_new(C, a, b);
  default:
    return nn_rrelu_new(C, a, b, u8());
  }
}

static nn_layer *b_noarg(int k) {
  switch (k) {
  case L_relu6:
    return nn_relu6_new(C);
  case L_flatten:
    return nn_flatten_new(C);
  case L_identity:
    return nn_identity_new(C);
  case L_global_avg_pool2d:
    return nn_global_avg_pool2d_new(C);
  default:
    return nn_softmax2d_new(C);
  }
}

/* A lambda layer's function: relu, tanh, or NULL without an error. */
static ad_tensor *lambda_fn(ad_ctx *ctx, ad_tensor *x, bool training, void *ud) {
  int v = *(const int *)ud;
  if (v == 0) return ad_relu(ctx, x);
  if (v == 1) return training ? ad_tanh(ctx, x) : ad_sigmoid(ctx, x);
  return NULL;
}

/* behaviour, kind string or NULL */
static nn_layer *b_lambda(int k) {
  (void)k;
  static const int ud[3] = {0, 1, 2};
  unsigned b = u8();
  return nn_lambda_new(C, u8() & 1 ? NULL : "fuzz", lambda_fn, (void *)&ud[b % 3]);
}

/* num_parameters, init, dtype */
static nn_layer *b_prelu(int k) {
  (void)k;
  int64_t n = d_size();
  double init = d_real();
  return nn_prelu_new(C, n, init, d_dtype());
}

/* p, seed */
static nn_layer *b_dropout(int k) {
  double p = d_prob();
  uint64_t seed = u8();
  switch (k) {
  case L_dropout:
    return nn_dropout_new(C, p, seed);
  case L_dropout1d:
    return nn_dropout1d_new(C, p, seed);
  case L_dropout2d:
    return nn_dropout2d_new(C, p, seed);
  default:
    return nn_dropout3d_new(C, p, seed);
  }
}

/* dim */
static nn_layer *b_dim(int k) {
  int dim = d_dim();
  return k == L_glu ? nn_glu_new(C, dim) : nn_softmin_new(C, dim);
}

/* num_features, [opts: eps, momentum, flags (cumulative, no_affine,
 * no_running_stats), dtype] */
static nn_layer *b_batch_norm(int k) {
  int64_t n = d_size();
  nn_batch_norm_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    o.eps = d_eps();
    o.momentum = d_prob();
    unsigned f = u8();
    o.cumulative = f & 1, o.no_affine = f & 2, o.no_running_stats = f & 4;
    o.dtype = d_dtype();
  }
  const nn_batch_norm_opts *po = has ? &o : NULL;
  return k == L_batch_norm1d   ? nn_batch_norm1d_new(C, n, po)
         : k == L_batch_norm2d ? nn_batch_norm2d_new(C, n, po)
                               : nn_batch_norm3d_new(C, n, po);
}

/* num_features, [opts: eps, momentum, flags (affine, track_running_stats),
 * dtype] */
static nn_layer *b_instance_norm(int k) {
  int64_t n = d_size();
  nn_instance_norm_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    o.eps = d_eps();
    o.momentum = d_prob();
    unsigned f = u8();
    o.affine = f & 1, o.track_running_stats = f & 2;
    o.dtype = d_dtype();
  }
  const nn_instance_norm_opts *po = has ? &o : NULL;
  return k == L_instance_norm1d   ? nn_instance_norm1d_new(C, n, po)
         : k == L_instance_norm2d ? nn_instance_norm2d_new(C, n, po)
                                  : nn_instance_norm3d_new(C, n, po);
}

/* groups, channels, [opts: eps, no_affine, dtype] */
static nn_layer *b_group_norm(int k) {
  (void)k;
  int64_t g = d_size(), c = d_size();
  nn_group_norm_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    o.eps = d_eps();
    o.no_affine = u8() & 1;
    o.dtype = d_dtype();
  }
  return nn_group_norm_new(C, g, c, has ? &o : NULL);
}

/* ndim, that many sizes, [opts: eps, no_affine, dtype] */
static nn_layer *b_layer_norm(int k) {
  (void)k;
  static const int odd[4] = {0, -1, AD_MAX_DIMS + 1, INT_MAX};
  unsigned b = u8();
  int nd = b < 240 ? 1 + (int)(b % 3) : odd[b % 4];
  int64_t shape[AD_MAX_DIMS + 1];
  for (int d = 0; d < nd && d < AD_MAX_DIMS + 1; d++) shape[d] = d_size();
  nn_layer_norm_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    o.eps = d_eps();
    o.no_affine = u8() & 1;
    o.dtype = d_dtype();
  }
  return nn_layer_norm_new(C, nd, shape, has ? &o : NULL);
}

/* size, alpha, beta, k */
static nn_layer *b_lrn(int k) {
  (void)k;
  int64_t size = d_size();
  double alpha = d_real(), beta = d_real(), kk = d_real();
  return nn_local_response_norm_new(C, size, alpha, beta, kk);
}

/* in, out, kernel, rng, [opts: stride, padding, dilation, groups, flags
 * (same, no_bias), inits, dtype, padding_mode (ext)] */
static nn_layer *b_conv1d(int k) {
  int64_t in = d_size(), out = d_size(), ks = d_kernel();
  ad_rng *r = d_rng();
  nn_conv1d_opts_ext o = {0};
  bool has = u8() >= 128;
  if (has) {
    o.base.stride = d_opt(), o.base.padding = d_opt(), o.base.dilation = d_opt();
    o.base.groups = d_opt();
    unsigned f = u8();
    o.base.same = f & 1, o.base.no_bias = f & 2;
    o.base.weight_init = d_init(), o.base.bias_init = d_init();
    o.base.dtype = d_dtype();
    o.padding_mode = (nn_padding_mode)(u8() % 5);
  }
  if (k == L_conv1d_ext) return nn_conv1d_new_ext(C, in, out, ks, r, has ? &o : NULL);
  return nn_conv1d_new(C, in, out, ks, r, has ? &o.base : NULL);
}

/* in, out, kernel, rng, [opts: stride, padding, output_padding, dilation,
 * groups, no_bias, inits, dtype] */
static nn_layer *b_conv_transpose1d(int k) {
  (void)k;
  int64_t in = d_size(), out = d_size(), ks = d_kernel();
  ad_rng *r = d_rng();
  nn_conv_transpose1d_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    o.stride = d_opt(), o.padding = d_opt(), o.output_padding = d_opt();
    o.dilation = d_opt(), o.groups = d_opt();
    o.no_bias = u8() & 1;
    o.weight_init = d_init(), o.bias_init = d_init();
    o.dtype = d_dtype();
  }
  return nn_conv_transpose1d_new(C, in, out, ks, r, has ? &o : NULL);
}

/* in, out, kh, kw, rng, [opts: stride, padding, dilation (2 each), groups,
 * output_padding (2), flags (same, no_bias), inits, dtype, padding_mode
 * (ext)] */
static nn_layer *b_conv2d(int k) {
  int64_t in = d_size(), out = d_size(), kh = d_kernel(), kw = d_kernel();
  ad_rng *r = d_rng();
  nn_conv2d_opts_ext o = {0};
  bool has = u8() >= 128;
  if (has) {
    for (int i = 0; i < 2; i++) o.base.stride[i] = d_opt();
    for (int i = 0; i < 2; i++) o.base.padding[i] = d_opt();
    for (int i = 0; i < 2; i++) o.base.dilation[i] = d_opt();
    o.base.groups = d_opt();
    for (int i = 0; i < 2; i++) o.base.output_padding[i] = d_opt();
    unsigned f = u8();
    o.base.same = f & 1, o.base.no_bias = f & 2;
    o.base.weight_init = d_init(), o.base.bias_init = d_init();
    o.base.dtype = d_dtype();
    o.padding_mode = (nn_padding_mode)(u8() % 5);
  }
  const nn_conv2d_opts *pb = has ? &o.base : NULL;
  const nn_conv2d_opts_ext *pe = has ? &o : NULL;
  switch (k) {
  case L_conv2d:
    return nn_conv2d_new(C, in, out, kh, kw, r, pb);
  case L_conv2d_ext:
    return nn_conv2d_new_ext(C, in, out, kh, kw, r, pe);
  case L_conv_transpose2d:
    return nn_conv_transpose2d_new(C, in, out, kh, kw, r, pb);
  default:
    return nn_conv_transpose2d_new_ext(C, in, out, kh, kw, r, pe);
  }
}

/* in, out, kd, kh, kw, rng, [opts: as conv2d's with 3 of each] */
static nn_layer *b_conv3d(int k) {
  int64_t in = d_size(), out = d_size(), kd = d_kernel(), kh = d_kernel(), kw = d_kernel();
  ad_rng *r = d_rng();
  nn_conv3d_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    for (int i = 0; i < 3; i++) o.stride[i] = d_opt();
    for (int i = 0; i < 3; i++) o.padding[i] = d_opt();
    for (int i = 0; i < 3; i++) o.dilation[i] = d_opt();
    o.groups = d_opt();
    for (int i = 0; i < 3; i++) o.output_padding[i] = d_opt();
    unsigned f = u8();
    o.same = f & 1, o.no_bias = f & 2;
    o.weight_init = d_init(), o.bias_init = d_init();
    o.dtype = d_dtype();
    o.padding_mode = (nn_padding_mode)(u8() % 5);
  }
  if (k == L_conv3d) return nn_conv3d_new(C, in, out, kd, kh, kw, r, has ? &o : NULL);
  return nn_conv_transpose3d_new(C, in, out, kd, kh, kw, r, has ? &o : NULL);
}

/* kernel, [opts: stride, padding, dilation, flags (ceil_mode, exclude_pad)] */
static nn_layer *b_pool1d(int k) {
  int64_t ks = d_kernel();
  nn_pool1d_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    o.stride = d_opt(), o.padding = d_opt(), o.dilation = d_opt();
    unsigned f = u8();
    o.ceil_mode = f & 1, o.exclude_pad = f & 2;
  }
  return k == L_max_pool1d ? nn_max_pool1d_new(C, ks, has ? &o : NULL)
                           : nn_avg_pool1d_new(C, ks, has ? &o : NULL);
}

/* kh, kw, [opts: stride, padding, dilation (2 each), flags] */
static nn_layer *b_pool2d(int k) {
  int64_t kh = d_kernel(), kw = d_kernel();
  ad_pool2d_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    for (int i = 0; i < 2; i++) o.stride[i] = d_opt();
    for (int i = 0; i < 2; i++) o.padding[i] = d_opt();
    for (int i = 0; i < 2; i++) o.dilation[i] = d_opt();
    unsigned f = u8();
    o.ceil_mode = f & 1, o.exclude_pad = f & 2;
  }
  return k == L_max_pool2d ? nn_max_pool2d_new(C, kh, kw, has ? &o : NULL)
                           : nn_avg_pool2d_new(C, kh, kw, has ? &o : NULL);
}

/* kd, kh, kw, [opts: stride, padding, dilation (3 each), flags,
 * divisor_override] */
static nn_layer *b_pool3d(int k) {
  int64_t kd = d_kernel(), kh = d_kernel(), kw = d_kernel();
  ad_pool3d_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    for (int i = 0; i < 3; i++) o.stride[i] = d_opt();
    for (int i = 0; i < 3; i++) o.padding[i] = d_opt();
    for (int i = 0; i < 3; i++) o.dilation[i] = d_opt();
    unsigned f = u8();
    o.ceil_mode = f & 1, o.exclude_pad = f & 2;
    o.divisor_override = d_opt();
  }
  return k == L_max_pool3d ? nn_max_pool3d_new(C, kd, kh, kw, has ? &o : NULL)
                           : nn_avg_pool3d_new(C, kd, kh, kw, has ? &o : NULL);
}

/* norm_type, kernel (kh, kw for 2-D), [opts: stride (2), ceil_mode] */
static nn_layer *b_lp_pool(int k) {
  double p = d_real();
  int64_t kh = d_kernel(), kw = k == L_lp_pool2d ? d_kernel() : 1;
  nn_lp_pool_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    o.stride[0] = d_opt(), o.stride[1] = d_opt();
    o.ceil_mode = u8() & 1;
  }
  return k == L_lp_pool1d ? nn_lp_pool1d_new(C, p, kh, has ? &o : NULL)
                          : nn_lp_pool2d_new(C, p, kh, kw, has ? &o : NULL);
}

/* output sizes (1, 2 or 3) */
static nn_layer *b_adaptive(int k) {
  int64_t a = d_size(), b = 1, c = 1;
  if (k != L_adaptive_avg_pool1d && k != L_adaptive_max_pool1d) b = d_size();
  if (k == L_adaptive_avg_pool3d || k == L_adaptive_max_pool3d) c = d_size();
  switch (k) {
  case L_adaptive_avg_pool1d:
    return nn_adaptive_avg_pool1d_new(C, a);
  case L_adaptive_avg_pool2d:
    return nn_adaptive_avg_pool2d_new(C, a, b);
  case L_adaptive_avg_pool3d:
    return nn_adaptive_avg_pool3d_new(C, a, b, c);
  case L_adaptive_max_pool1d:
    return nn_adaptive_max_pool1d_new(C, a);
  case L_adaptive_max_pool2d:
    return nn_adaptive_max_pool2d_new(C, a, b);
  default:
    return nn_adaptive_max_pool3d_new(C, a, b, c);
  }
}

/* kernels (1, 2 or 3), [opts: stride (3), padding (3)] */
static nn_layer *b_unpool(int k) {
  int n = k == L_max_unpool1d ? 1 : k == L_max_unpool2d ? 2 : 3;
  int64_t ks[3] = {1, 1, 1};
  for (int i = 0; i < n; i++) ks[i] = d_kernel();
  nn_max_unpool_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    for (int i = 0; i < 3; i++) o.stride[i] = d_opt();
    for (int i = 0; i < 3; i++) o.padding[i] = d_opt();
  }
  const nn_max_unpool_opts *po = has ? &o : NULL;
  if (n == 1) return nn_max_unpool1d_new(C, ks[0], po);
  if (n == 2) return nn_max_unpool2d_new(C, ks[0], ks[1], po);
  return nn_max_unpool3d_new(C, ks[0], ks[1], ks[2], po);
}

/* mode, 3 sizes (a byte under 128: 0), 3 scale factors (likewise),
 * flags (align_corners, recompute_scale_factor); opts NULL now and then */
static nn_layer *b_upsample(int k) {
  (void)k;
  nn_upsample_opts o = {0};
  o.mode = (nn_upsample_mode)(u8() % 7);
  for (int i = 0; i < 3; i++) o.size[i] = u8() < 128 ? 0 : d_size();
  for (int i = 0; i < 3; i++) o.scale_factor[i] = u8() < 128 ? 0 : d_real();
  unsigned f = u8();
  o.align_corners = f & 1, o.recompute_scale_factor = f & 2;
  return nn_upsample_new(C, f >= 248 ? NULL : &o);
}

/* factor */
static nn_layer *b_pixel(int k) {
  int64_t r = d_size();
  return k == L_pixel_shuffle ? nn_pixel_shuffle_new(C, r) : nn_pixel_unshuffle_new(C, r);
}

/* kernel (2), dilation, padding, stride (2 each), fold's output size (2);
 * a last byte of 248 or more: NULL opts */
static nn_layer *b_fold(int k) {
  nn_fold_opts o = {0};
  for (int i = 0; i < 2; i++) o.kernel_size[i] = d_kernel();
  for (int i = 0; i < 2; i++) o.dilation[i] = d_opt();
  for (int i = 0; i < 2; i++) o.padding[i] = d_opt();
  for (int i = 0; i < 2; i++) o.stride[i] = d_opt();
  int64_t os[2] = {0, 0};
  if (k == L_fold) os[0] = d_size(), os[1] = d_size();
  const nn_fold_opts *po = u8() >= 248 ? NULL : &o;
  return k == L_unfold ? nn_unfold_new(C, po) : nn_fold_new(C, os, po);
}

/* dim, n, n sizes (-1 among them now and then) */
static nn_layer *b_unflatten(int k) {
  (void)k;
  int dim = d_dim();
  unsigned b = u8();
  int n = b < 240 ? (int)(b % 4) : b & 1 ? AD_MAX_DIMS + 1 : -1;
  int64_t sizes[AD_MAX_DIMS + 1];
  for (int i = 0; i < n && i < AD_MAX_DIMS + 1; i++) sizes[i] = u8() < 32 ? -1 : d_size();
  return nn_unflatten_new(C, dim, n, sizes);
}

/* 2, 4 or 6 amounts (d_int: negative ones crop), value (constant) */
static nn_layer *b_pad(int k) {
  int64_t pad[6];
  int n = k == L_constant_pad1d || k == L_reflection_pad1d || k == L_replication_pad1d   ? 2
          : k == L_constant_pad3d || k == L_reflection_pad3d || k == L_replication_pad3d ? 6
                                                                                         : 4;
  for (int i = 0; i < n; i++) pad[i] = d_int();
  switch (k) {
  case L_zero_pad2d:
    return nn_zero_pad2d_new(C, pad);
  case L_constant_pad1d:
    return nn_constant_pad1d_new(C, pad, d_real());
  case L_constant_pad2d:
    return nn_constant_pad2d_new(C, pad, d_real());
  case L_constant_pad3d:
    return nn_constant_pad3d_new(C, pad, d_real());
  case L_reflection_pad1d:
    return nn_reflection_pad1d_new(C, pad);
  case L_reflection_pad2d:
    return nn_reflection_pad2d_new(C, pad);
  case L_reflection_pad3d:
    return nn_reflection_pad3d_new(C, pad);
  case L_replication_pad1d:
    return nn_replication_pad1d_new(C, pad);
  case L_replication_pad2d:
    return nn_replication_pad2d_new(C, pad);
  default:
    return nn_replication_pad3d_new(C, pad);
  }
}

/* in1, in2, out, bias, dtype, rng */
static nn_layer *b_bilinear(int k) {
  (void)k;
  int64_t a = d_size(), b = d_size(), c = d_size();
  bool bias = !(u8() & 1);
  ad_dtype dt = d_dtype();
  return nn_bilinear_new(C, a, b, c, bias, dt, d_rng());
}

/* cosine: dim, eps; pairwise: p, eps, keepdim */
static nn_layer *b_pairwise(int k) {
  if (k == L_cosine_similarity) {
    int dim = d_dim();
    return nn_cosine_similarity_new(C, dim, d_eps());
  }
  double p = d_real(), eps = d_eps();
  return nn_pairwise_distance_new(C, p, eps, u8() & 1);
}

/* cell (rnn, rnn_ext), input, hidden, rng, [opts: num_layers, flags
 * (no_bias, batch_first, composed, per_step, bidirectional), dropout,
 * seed, dtype, proj_size (ext)] */
static nn_layer *b_rnn(int k) {
  nn_rnn_cell cell = k == L_lstm ? NN_RNN_LSTM : k == L_gru ? NN_RNN_GRU : (nn_rnn_cell)(u8() % 5);
  int64_t in = d_size(), hid = d_size();
  ad_rng *r = d_rng();
  nn_rnn_opts_ext o = {0};
  bool has = u8() >= 128;
  if (has) {
    unsigned b = u8();
    o.base.num_layers = b < 240 ? (int)(b % 3) : b & 1 ? -1 : INT_MAX;
    unsigned f = u8();
    o.base.no_bias = f & 1, o.base.batch_first = f & 2, o.base.composed = f & 4;
    o.base.per_step = f & 8, o.base.bidirectional = f & 16;
    o.base.dropout = d_prob();
    o.base.seed = u8();
    o.base.dtype = d_dtype();
    o.proj_size = k == L_rnn_ext ? d_opt() : 0;
  }
  switch (k) {
  case L_rnn:
    return nn_rnn_new(C, cell, in, hid, r, has ? &o.base : NULL);
  case L_lstm:
    return nn_lstm_new(C, in, hid, r, has ? &o.base : NULL);
  case L_gru:
    return nn_gru_new(C, in, hid, r, has ? &o.base : NULL);
  default:
    return nn_rnn_new_ext(C, cell, in, hid, r, has ? &o : NULL);
  }
}

/* num, dim, rng, [opts: padding, padding_idx, init, dtype, and (ext)
 * max_norm, norm_type, scale_grad_by_freq] */
static nn_layer *b_embedding(int k) {
  int64_t num = d_size(), dim = d_size();
  ad_rng *r = d_rng();
  nn_embedding_ext_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    o.base.padding = u8() & 1;
    o.base.padding_idx = d_int();
    o.base.weight_init = d_init();
    o.base.dtype = d_dtype();
    if (k == L_embedding_ext) {
      o.max_norm = d_real(), o.norm_type = d_real();
      o.scale_grad_by_freq = u8() & 1;
    }
  }
  if (k == L_embedding) return nn_embedding_new(C, num, dim, r, has ? &o.base : NULL);
  return nn_embedding_new_ext(C, num, dim, r, has ? &o : NULL);
}

/* num, dim, rng, [opts: mode, flags (padding, include_last_offset,
 * scale_grad_by_freq), padding_idx, max_norm, norm_type, init, dtype] */
static nn_layer *b_embedding_bag(int k) {
  (void)k;
  int64_t num = d_size(), dim = d_size();
  ad_rng *r = d_rng();
  nn_embedding_bag_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    o.mode = (nn_bag_mode)(u8() % 4);
    unsigned f = u8();
    o.padding = f & 1, o.include_last_offset = f & 2, o.scale_grad_by_freq = f & 4;
    o.padding_idx = d_int();
    o.max_norm = u8() < 192 ? 0 : d_real();
    o.norm_type = d_real();
    o.weight_init = d_init();
    o.dtype = d_dtype();
  }
  return nn_embedding_bag_new(C, num, dim, r, has ? &o : NULL);
}

/* embed_dim, num_heads, rng, [opts: flags (batch_first, no_bias, causal,
 * add_bias_kv, add_zero_attn), dropout, seed, dtype, kdim, vdim (ext)] */
static nn_layer *b_mha(int k) {
  int64_t e = d_size(), h = d_size();
  ad_rng *r = d_rng();
  nn_mha_opts_ext o = {0};
  bool has = u8() >= 128;
  if (has) {
    unsigned f = u8();
    o.base.batch_first = f & 1, o.base.no_bias = f & 2, o.base.causal = f & 4;
    o.base.dropout = d_prob();
    o.base.seed = u8();
    o.base.dtype = d_dtype();
    if (k == L_multihead_attention_ext) {
      o.add_bias_kv = f & 8, o.add_zero_attn = f & 16;
      o.kdim = d_opt(), o.vdim = d_opt();
    }
  }
  if (k == L_multihead_attention)
    return nn_multihead_attention_new(C, e, h, r, has ? &o.base : NULL);
  return nn_multihead_attention_new_ext(C, e, h, r, has ? &o : NULL);
}

/* d_model, nhead, rng, [opts: dim_feedforward, dropout, flags (no_dropout,
 * batch_first, norm_first, causal), activation, layer_norm_eps, seed,
 * dtype]; the stacks: num_layers, stack opts (a byte 128 or more: norm,
 * then norm_eps) */
static nn_layer *b_transformer_layer(int k) {
  int64_t d = d_size(), h = d_size();
  ad_rng *r = d_rng();
  nn_transformer_opts o = {0};
  bool has = u8() >= 128;
  if (has) {
    o.dim_feedforward = d_size();
    o.dropout = d_prob();
    unsigned f = u8();
    o.no_dropout = f & 1, o.batch_first = f & 2, o.norm_first = f & 4, o.causal = f & 8;
    static const nn_act acts[4] = {NN_ACT_NONE, NN_ACT_RELU, NN_ACT_GELU, NN_ACT_TANH};
    o.activation = acts[u8() % 4];
    o.layer_norm_eps = d_eps();
    o.seed = u8();
    o.dtype = d_dtype();
  } else {
    o.dim_feedforward = 8, o.no_dropout = true; /* not 2048 wide unless asked */
  }
  bool enc = k == L_transformer_encoder_layer || k == L_transformer_encoder;
  nn_layer *l = enc ? nn_transformer_encoder_layer_new(C, d, h, r, &o)
                    : nn_transformer_decoder_layer_new(C, d, h, r, &o);
  if (k == L_transformer_encoder_layer || k == L_transformer_decoder_layer) return l;
  unsigned b = u8();
  int64_t n = b < 240 ? 1 + (int64_t)(b % 2) : odd_int[b % 8];
  nn_transformer_stack_opts so = {0};
  bool hs = u8() >= 128;
  if (hs) so.norm = u8() & 1, so.norm_eps = d_eps();
  if (!l) return NULL; /* the stacks keep the constructor's error */
  return enc ? nn_transformer_encoder_new(l, n, hs ? &so : NULL)
             : nn_transformer_decoder_new(l, n, hs ? &so : NULL);
}

/* rng, [opts: d_model, nhead, layer counts (2), dim_feedforward, dropout,
 * flags (no_dropout, batch_first, norm_first), activation, eps, seed,
 * dtype] */
static nn_layer *b_transformer(int k) {
  (void)k;
  ad_rng *r = d_rng();
  nn_transformer_model_opts o = {0};
  o.d_model = d_size(), o.nhead = d_size();
  unsigned b = u8();
  o.num_encoder_layers = b < 240 ? 1 + (int64_t)(b % 2) : odd_int[b % 8];
  b = u8();
  o.num_decoder_layers = b < 240 ? 1 + (int64_t)(b % 2) : odd_int[b % 8];
  o.dim_feedforward = d_size();
  o.dropout = d_prob();
  unsigned f = u8();
  o.no_dropout = !(f & 1), o.batch_first = f & 2, o.norm_first = f & 4;
  static const nn_act acts[4] = {NN_ACT_NONE, NN_ACT_RELU, NN_ACT_GELU, NN_ACT_TANH};
  o.activation = acts[u8() % 4];
  o.layer_norm_eps = d_eps();
  o.seed = u8();
  o.dtype = d_dtype();
  return nn_transformer_new(C, r, &o); /* not NULL: 6 + 6 layers of 512, 11 s to build */
}

/* The forwards a layer runs with. */
typedef enum {
  F_PLAIN,       /* nn_layer_forward */
  F_MAXPOOL,     /* nn_layer_forward, or nn_max_pool_indices */
  F_UNPOOL,      /* nn_max_unpool_forward */
  F_TWO,         /* nn_layer_forward2 */
  F_BILINEAR,    /* nn_bilinear_forward */
  F_RNN,         /* nn_rnn_forward */
  F_BAG,         /* nn_embedding_bag_forward */
  F_MHA,         /* nn_multihead_attention */
  F_ENC,         /* nn_transformer_encoder_layer / nn_transformer_encoder */
  F_DEC,         /* nn_transformer_decoder_layer / nn_transformer_decoder */
  F_TRANSFORMER, /* nn_transformer_forward */
  F_COUNT
} fwd_kind;

#define X_BUILD(name, b, f) b,
static const builder layer_build[LAYER_KINDS] = {FUZZ_LAYERS(X_BUILD)};
#define X_FWD(name, b, f) f,
static const fwd_kind layer_fwd[LAYER_KINDS] = {FUZZ_LAYERS(X_FWD)};

/* ------------------------------------------------------ instructions */

static void make_input(void) {
  ad_dtype dt = (ad_dtype)(u8() % 3);
  unsigned b = u8();
  int nd = (int)(b % 8);
  int64_t shape[AD_MAX_DIMS];
  bool none = false;
  if (nd >= 6) { /* the shape of an earlier tensor, without its last dim for 7 */
    ad_tensor *like = pick();
    none = !is_live(like);
    if (!none) {
      nd = like->ndim - (nd == 7 && like->ndim > 0);
      memcpy(shape, like->shape, sizeof shape);
    }
  } else {
    for (int d = 0; d < nd; d++) {
      unsigned c = u8();
      shape[d] = c < 232 ? (int64_t)(c % 7) : odd_int[c % 8] - (c % 8 == 0); /* 0 -> -1 */
    }
  }
  double vals[8];
  for (int i = 0; i < 8; i++) {
    if (dt == AD_I32) {
      static const double odd[4] = {-1, -2, INT32_MAX, INT32_MIN};
      unsigned c = u8();
      vals[i] = c < 240 ? (double)(c % 7) : odd[c % 4];
    } else {
      static const double odd[16] = {NAN,    INFINITY, -INFINITY, -0.0,  4.9e-324, 1e-40,
                                     -1e-45, 3.5e38,   1e39,      1e300, -1e300,   0.5,
                                     1e-5,   2,        -1,        1};
      unsigned c = u8();
      vals[i] = c < 224 ? ((double)c - 128) / 16 : odd[c % 16];
    }
  }
  if (none || leaves_made >= MAX_LEAVES) return;
  snprintf(what, sizeof what, "ad_zeros");
  ad_clear_error(C);
  ad_tensor *t = ad_zeros(C, dt, nd, shape);
  trace_result(t);
  if (!t) {
    check_error();
    check_usable();
    return;
  }
  leaves_made++;
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

static void make_layer(void) {
  int k = (int)(u8() % LAYER_KINDS);
  size_t n = u8() % 16; /* nn_layer_describe's buffer size */
  int i = 0;
  while (i < MAX_LAYERS && layers[i].l) i++;
  if (i == MAX_LAYERS) return;
  snprintf(what, sizeof what, "nn_%s_new", layer_name[k]);
  ad_clear_error(C);
  nn_layer *l = layer_build[k](k);
  if (trace) fprintf(stderr, "fuzz_nn: %s -> %s\n", what, l ? nn_layer_kind(l) : ad_last_error(C));
  if (!l) {
    check_error();
    check_usable();
    return;
  }
  FUZZ_CHECK(ad_last_status(C) == AD_OK, "%s succeeded with an error set: %s", what,
             ad_last_error(C));
  layers[i].l = l, layers[i].kind = k, layers[i].model = -1;
  /* described into a buffer of n bytes: NUL-terminated within it */
  char buf[16];
  memset(buf, 'x', sizeof buf);
  const char *d = nn_layer_describe(l, buf, n);
  FUZZ_CHECK(n ? d == buf && memchr(buf, 0, n) : d == NULL, "%s: nn_layer_describe into %zu bytes",
             what, n);
}

/* The extra arguments of the forwards. */
static int64_t lengths[MAX_LENGTHS];

static int64_t draw_lengths(void) {
  unsigned b = u8();
  int64_t n = b < 240 ? (int64_t)(b % 4) : (int64_t)(b % MAX_LENGTHS);
  for (int64_t i = 0; i < n; i++) lengths[i] = d_int();
  return n;
}

static ad_tensor *run_forward(int li, fwd_kind fwd, bool training, ad_tensor **extra,
                              ad_tensor **extra2) {
  nn_layer *l = layers[li].l;
  ad_tensor *x = req();
  switch (fwd) {
  case F_PLAIN:
    return nn_layer_forward(l, x, training);
  case F_MAXPOOL:
    return nn_max_pool_indices(l, x);
  case F_UNPOOL: {
    ad_tensor *idx = req();
    int64_t os[3] = {d_size(), d_size(), d_size()};
    return nn_max_unpool_forward(l, x, idx, u8() & 1 ? os : NULL);
  }
  case F_TWO: {
    ad_tensor *x2 = req();
    return nn_layer_forward2(l, x, x2);
  }
  case F_BILINEAR: {
    ad_tensor *x2 = req();
    return nn_bilinear_forward(l, x, x2);
  }
  case F_RNN: {
    ad_tensor *h0 = opt(), *c0 = opt();
    int64_t n = draw_lengths();
    bool none = u8() & 1;
    return nn_rnn_forward(l, x, h0, c0, none ? NULL : lengths, none ? 0 : n, training, extra,
                          extra2);
  }
  case F_BAG: {
    int64_t n = draw_lengths();
    ad_tensor *w = opt();
    return nn_embedding_bag_forward(l, x, n ? lengths : NULL, n, w);
  }
  case F_MHA: {
    unsigned b = u8();
    ad_tensor *k = b & 1 ? req() : x, *v = b & 2 ? req() : k;
    nn_mha_args a = {0};
    a.attn_mask = opt(), a.key_padding_mask = opt();
    a.causal = b & 4, a.training = training, a.per_head_weights = b & 8;
    return nn_multihead_attention(l, x, k, v, &a, b & 16 ? extra : NULL);
  }
  case F_ENC: {
    nn_transformer_args a = {0};
    a.src_mask = opt(), a.src_key_padding_mask = opt();
    a.causal = u8() & 1, a.training = training;
    return layers[li].kind == L_transformer_encoder ? nn_transformer_encoder(l, x, &a)
                                                    : nn_transformer_encoder_layer(l, x, &a);
  }
  case F_DEC: {
    ad_tensor *mem = req();
    nn_transformer_decoder_args a = {0};
    a.tgt_mask = opt(), a.memory_mask = opt();
    a.tgt_key_padding_mask = opt(), a.memory_key_padding_mask = opt();
    a.causal = u8() & 1, a.training = training;
    return layers[li].kind == L_transformer_decoder ? nn_transformer_decoder(l, x, mem, &a)
                                                    : nn_transformer_decoder_layer(l, x, mem, &a);
  }
  default: {
    ad_tensor *tgt = req();
    ad_tensor *m[6];
    for (int i = 0; i < 6; i++) m[i] = opt();
    return nn_transformer_forward(l, x, tgt, m[0], m[1], m[2], m[3], m[4], m[5], training);
  }
  }
}

/* Whether a layer of kind k may change its weight in any forward (an
 * embedding's max_norm renormalises the rows it looks up in place). */
static bool renormalises(int k) { return k == L_embedding_ext || k == L_embedding_bag; }

/* layer, mode (bit 0 training; bits 1-2: 0, 1 its own forward, 2
 * nn_layer_forward, 3 the forward of bits 3-6), operands */
static void forward(void) {
  int li = pick_layer();
  unsigned mode = u8();
  if (li < 0) return;
  bool training = mode & 1;
  fwd_kind fwd = layer_fwd[layers[li].kind];
  if ((mode >> 1 & 3) == 2)
    fwd = F_PLAIN;
  else if ((mode >> 1 & 3) == 3)
    fwd = (fwd_kind)((mode >> 3) % F_COUNT);
  bool own = fwd == layer_fwd[layers[li].kind];
  snprintf(what, sizeof what, "forward %d of %s (%s)", (int)fwd, layer_name[layers[li].kind],
           training ? "training" : "eval");
  must_fail = false;
  ad_clear_error(C);
  ad_tensor *e1 = NULL, *e2 = NULL;
  nn_layer *l = layers[li].l;
  uint64_t state = hash_layer(l);
  int64_t shape_was[AD_MAX_DIMS];
  int nd_was = nn_layer_output_shape(l, shape_was);
  size_t at = in_i;
  ad_tensor *r = run_forward(li, fwd, training, &e1, &e2);
  trace_result(r);
  if (!r) {
    check_error();
    /* a forward that fails changes no parameter or running statistic */
    FUZZ_CHECK(hash_layer(l) == state, "%s failed (%s) but changed the layer's state", what,
               ad_last_error(C));
    /* nor the shape of the last successful forward's output */
    int64_t shape_now[AD_MAX_DIMS];
    int nd_now = nn_layer_output_shape(l, shape_now);
    FUZZ_CHECK(nd_now == nd_was &&
                   (nd_now < 0 || !memcmp(shape_now, shape_was, (size_t)nd_now * sizeof(int64_t))),
               "%s failed (%s) but changed nn_layer_output_shape", what, ad_last_error(C));
    check_usable();
    return;
  }
  FUZZ_CHECK(!must_fail, "%s succeeded with a NULL, freed or foreign input", what);
  check_tensor(r);
  /* (a layer that is the identity here, dropout with p = 0, returns x) */
  FUZZ_CHECK(ad_grad_enabled(C) || is_live(r) || !ad_tensor_is_temporary(r) ||
                 !ad_tensor_requires_grad(r),
             "%s in no-grad mode gave a result that requires a gradient", what);
  /* evaluation mode changes no state (but an embedding's max_norm
   * renormalises its rows) and gives the same bits again */
  bool renorm = renormalises(layers[li].kind);
  if (!training && fwd == F_PLAIN && !renorm && r->size <= 4096) {
    FUZZ_CHECK(hash_layer(l) == state, "%s changed the layer's state", what);
    size_t n = (size_t)r->size * ad_dtype_size(r->dtype);
    unsigned char first[4096 * sizeof(double)];
    memcpy(first, r->data, n);
    size_t end = in_i;
    in_i = at; /* the same operands again */
    ad_tensor *r2 = run_forward(li, fwd, training, NULL, NULL);
    in_i = end;
    FUZZ_CHECK(r2 || ad_last_status(C) == AD_ERR_OOM, "%s failed the second time: %s", what,
               ad_last_error(C));
    if (r2)
      FUZZ_CHECK(same_shape(r, r2) && r2->dtype == r->dtype && !memcmp(first, r2->data, n),
                 "%s: evaluation mode gave other values the second time", what);
    ad_clear_error(C);
  }
  if (fwd == F_PLAIN || (own && (fwd == F_RNN || fwd == F_MHA)))
    check_output_shape(layers[li].l, r);
  if (ad_tensor_is_temporary(r) && !is_live(r)) store(r, S_TEMP);
  if (e1) check_tensor(e1), store(e1, S_TEMP);
  if (e2) check_tensor(e2), store(e2, S_TEMP);
}

/* ------------------------------------------------------------- losses */

static nn_reduction d_red(void) {
  static const int odd[4] = {4, -1, 9, INT_MAX};
  unsigned b = u8();
  return (nn_reduction)(b < 240 ? (int)(b % 4) : odd[b % 4]);
}

static ad_tensor *loss_in; /* the loss's first input */

#define X_ELEM(name, e) e,
static const bool elementwise[LOSS_KINDS] = {FUZZ_LOSSES(X_ELEM)};

static ad_tensor *run_loss(int k, nn_reduction red) {
  static nn_loss_fn const plain[] = {nn_mse_loss,         nn_l1_loss,
                                     nn_smooth_l1_loss,   nn_huber_loss,
                                     nn_bce_loss,         nn_bce_with_logits_loss,
                                     nn_soft_margin_loss, nn_cross_entropy_loss,
                                     nn_nll_loss};
  ad_tensor *a = req(), *b = req();
  loss_in = a;
  if (k <= LOSS_nll) return plain[k](C, a, b, red);
  switch (k) {
  case LOSS_smooth_l1_beta:
    return nn_smooth_l1_loss_beta(C, a, b, red, d_real());
  case LOSS_huber_delta:
    return nn_huber_loss_delta(C, a, b, red, d_real());
  case LOSS_kl_div:
    return nn_kl_div_loss(C, a, b, red, u8() & 1);
  case LOSS_gaussian_nll: {
    ad_tensor *var = req();
    bool full = u8() & 1;
    return nn_gaussian_nll_loss(C, a, b, var, full, d_eps(), red);
  }
  case LOSS_poisson_nll: {
    unsigned f = u8();
    return nn_poisson_nll_loss(C, a, b, f & 1, f & 2, d_eps(), red);
  }
  case LOSS_margin_ranking: {
    ad_tensor *y = req();
    return nn_margin_ranking_loss(C, a, b, y, d_real(), red);
  }
  case LOSS_hinge_embedding:
    return nn_hinge_embedding_loss(C, a, b, d_real(), red);
  case LOSS_cosine_embedding: {
    ad_tensor *y = req();
    return nn_cosine_embedding_loss(C, a, b, y, d_real(), red);
  }
  case LOSS_triplet_margin: {
    ad_tensor *n = req();
    double margin = d_real(), p = d_real(), eps = d_eps();
    return nn_triplet_margin_loss(C, a, b, n, margin, p, eps, u8() & 1, red);
  }
  case LOSS_multilabel_soft_margin:
    return nn_multilabel_soft_margin_loss(C, a, b, opt(), red);
  case LOSS_multi_margin: {
    int p = (int)(u8() % 4);
    double margin = d_real();
    return nn_multi_margin_loss(C, a, b, p, margin, opt(), red);
  }
  case LOSS_ctc: {
    /* input_lengths and target_lengths: arrays of N counts (N the batch
     * of a 3-D log_probs, else 1), read by the call */
    int64_t in_len[MAX_LENGTHS], tg_len[MAX_LENGTHS];
    for (int i = 0; i < MAX_LENGTHS; i++) in_len[i] = d_int(), tg_len[i] = d_int();
    int blank = d_dim();
    unsigned f = u8();
    if (is_live(a) && a->ndim == 3 && a->shape[1] > MAX_LENGTHS) {
      skipped = true;
      return NULL;
    }
    return nn_ctc_loss(C, a, b, f & 2 ? NULL : in_len, f & 4 ? NULL : tg_len, blank, red, f & 1);
  }
  case LOSS_sequence_cross_entropy: {
    nn_sequence_ce_opts o = {0};
    unsigned f = u8();
    o.ignore = f & 1, o.class_last = f & 2;
    o.ignore_index = (int32_t)d_int();
    return nn_sequence_cross_entropy_loss(C, a, b, red, f & 4 ? NULL : &o);
  }
  case LOSS_cross_entropy_ext:
  case LOSS_nll_ext: {
    nn_cross_entropy_opts o = {0};
    bool bad = must_fail;
    o.weight = opt();
    o.label_smoothing = d_prob();
    unsigned f = u8();
    o.ignore = f & 1, o.class_last = f & 2;
    o.ignore_index = (int32_t)d_int();
    if (f & 4) must_fail = bad; /* no options: the weight is not passed */
    return k == LOSS_nll_ext ? nn_nll_loss_ext(C, a, b, red, f & 4 ? NULL : &o)
                             : nn_cross_entropy_loss_ext(C, a, b, red, f & 4 ? NULL : &o);
  }
  default: {
    nn_bce_opts o = {0};
    o.weight = opt(), o.pos_weight = opt();
    return k == LOSS_bce_ext ? nn_bce_loss_ext(C, a, b, red, &o)
                             : nn_bce_with_logits_loss_ext(C, a, b, red, &o);
  }
  }
}

/* NN_SUM is the sum of NN_NONE's losses: the same call (its bytes from
 * at) with NN_NONE, summed in double, within rounding of r (finite
 * values only: a float sum may overflow where the double one does not). */
static void check_sum(int k, const ad_tensor *r, size_t at) {
  double got = ad_tensor_item(r);
  size_t end = in_i;
  in_i = at;
  ad_tensor *n = run_loss(k, NN_NONE);
  in_i = end;
  FUZZ_CHECK(n || ad_last_status(C) == AD_ERR_OOM, "%s: with NN_NONE it fails: %s", what,
             ad_last_error(C));
  ad_clear_error(C);
  if (!n) return;
  double sum = 0, mag = 0;
  for (int64_t i = 0; i < n->size; i++) {
    double v = ad_tensor_get(n, i);
    sum += v, mag += fabs(v);
  }
  if (!isfinite(got) || !isfinite(mag) || mag > 1e30) return;
  double tol = (r->dtype == AD_F32 ? 1e-4 : 1e-10) * (mag + 1);
  FUZZ_CHECK(fabs(got - sum) <= tol, "%s: NN_SUM gives %.17g, the NN_NONE losses sum to %.17g",
             what, got, sum);
}

/* loss, reduction, operands, arguments */
static void loss(void) {
  int k = (int)(u8() % LOSS_KINDS);
  nn_reduction red = d_red();
  snprintf(what, sizeof what, "nn_%s_loss (reduction %d)", loss_name[k], (int)red);
  must_fail = (unsigned)red > NN_NONE || (red == NN_BATCHMEAN && k != LOSS_kl_div);
  ad_clear_error(C);
  skipped = false;
  size_t at = in_i;
  ad_tensor *r = run_loss(k, red);
  if (skipped) return;
  trace_result(r);
  if (!r) {
    check_error();
    check_usable();
    return;
  }
  FUZZ_CHECK(!must_fail, "%s succeeded with a bad reduction or a NULL, freed or foreign input",
             what);
  check_tensor(r);
  char buf[160];
  FUZZ_CHECK(red == NN_NONE || r->ndim == 0, "%s: a reduced loss of shape %s", what,
             ad_shape_str(r, buf, sizeof buf));
  FUZZ_CHECK(red != NN_NONE || !elementwise[k] || same_shape(r, loss_in),
             "%s: the unreduced loss has shape %s, not its input's", what,
             ad_shape_str(r, buf, sizeof buf));
  if (red == NN_SUM) check_sum(k, r, at);
  if (ad_tensor_is_temporary(r)) store(r, S_TEMP);
}

/* ------------------------------------------------- the other steps */

static void backward(void) {
  snprintf(what, sizeof what, "backward");
  ad_clear_error(C);
  ad_tensor *x = pick();
  unsigned b = u8();
  if (!is_live(x)) return;
  ad_tensor *root = b < 32 || x->ndim == 0 ? x : ad_sum(C, x);
  ad_status st = root ? ad_backward(C, root, NULL) : ad_last_status(C);
  trace_result(st == AD_OK ? root : NULL);
  if (st != AD_OK) {
    check_error();
    check_usable();
  }
  check_all_params();
}

/* count, that many layers: a Sequential of them */
static void sequential(void) {
  int n = 1 + (int)(u8() % 3);
  int mi = 0;
  while (mi < MAX_MODELS && models[mi].m) mi++;
  if (mi == MAX_MODELS) return;
  snprintf(what, sizeof what, "nn_sequential_new");
  ad_clear_error(C);
  nn_model *m = nn_sequential_new(C);
  if (!m) {
    check_error();
    check_usable();
    return;
  }
  models[mi].m = m, models[mi].training = true;
  for (int i = 0; i < n; i++) {
    int li = pick_layer();
    if (li < 0) continue;
    snprintf(what, sizeof what, "nn_model_add of %s%s", layer_name[layers[li].kind],
             layers[li].model >= 0 ? " (of a model)" : "");
    ad_clear_error(C);
    bool owned = layers[li].model >= 0;
    ad_status st = nn_model_add(m, layers[li].l);
    if (trace) fprintf(stderr, "fuzz_nn: %s -> %s\n", what, ad_status_str(st));
    if (st == AD_OK) {
      FUZZ_CHECK(!owned, "%s succeeded", what);
      layers[li].model = mi;
      continue;
    }
    check_error();
    if (!owned) layers[li].l = NULL; /* the model took it and freed it */
    check_usable();
  }
}

static void model_forward(void) {
  int mi = pick_model();
  if (mi < 0) return;
  nn_model *m = models[mi].m;
  snprintf(what, sizeof what, "nn_model_forward");
  must_fail = nn_model_layer_count(m) == 0;
  ad_clear_error(C);
  ad_tensor *x = req();
  ad_tensor *r = nn_model_forward(m, x);
  trace_result(r);
  if (!r) {
    check_error();
    check_usable();
    return;
  }
  FUZZ_CHECK(!must_fail, "%s succeeded on an empty model or a bad input", what);
  check_tensor(r);
  check_output_shape(nn_model_layer(m, nn_model_layer_count(m) - 1), r);
  /* in evaluation mode, the model is its layers' nn_layer_forward in turn
   * (unless an embedding's max_norm renormalises its rows in place, a
   * change that another forward may take further) */
  bool renorm = false;
  for (int i = 0; i < MAX_LAYERS; i++)
    renorm = renorm || (layers[i].l && layers[i].model == mi && renormalises(layers[i].kind));
  if (!models[mi].training && !renorm && r->size <= 4096) {
    size_t n = (size_t)r->size * ad_dtype_size(r->dtype);
    unsigned char first[4096 * sizeof(double)];
    memcpy(first, r->data, n);
    ad_tensor *y = x;
    for (int i = 0; y && i < nn_model_layer_count(m); i++)
      y = nn_layer_forward(nn_model_layer(m, i), y, false);
    FUZZ_CHECK(y || ad_last_status(C) == AD_ERR_OOM, "%s: its layers in turn fail: %s", what,
               ad_last_error(C));
    if (y)
      FUZZ_CHECK(same_shape(r, y) && y->dtype == r->dtype && !memcmp(first, y->data, n),
                 "%s in evaluation mode differs from its layers' forwards in turn", what);
    ad_clear_error(C);
  }
  if (ad_tensor_is_temporary(r)) store(r, S_TEMP);
}

static void toggle_training(void) {
  int mi = pick_model();
  if (mi < 0) return;
  bool was = nn_model_set_training(models[mi].m, !models[mi].training);
  FUZZ_CHECK(was == models[mi].training, "nn_model_set_training returned %d, not the mode %d", was,
             models[mi].training);
  models[mi].training = !was;
  FUZZ_CHECK(nn_model_training(models[mi].m) == models[mi].training, "nn_model_training");
}

static void tape_reset(void) {
  ad_tape_reset(C);
  for (int i = 0; i < MAX_SLOTS; i++)
    if (slots[i].kind == S_TEMP) slots[i].kind = S_EMPTY, slots[i].t = NULL;
}

static void free_model(int mi) {
  nn_model_free(models[mi].m);
  models[mi].m = NULL;
  for (int i = 0; i < MAX_LAYERS; i++)
    if (layers[i].l && layers[i].model == mi) layers[i].l = NULL;
}

static int pick_slot(slot_kind kind) {
  int n = 0;
  for (int i = 0; i < MAX_SLOTS; i++) n += slots[i].kind == kind;
  unsigned b = u8();
  if (!n) return -1;
  int k = (int)(b % (unsigned)n);
  for (int i = 0; i < MAX_SLOTS; i++)
    if (slots[i].kind == kind && k-- == 0) return i;
  return -1;
}

/* what (0 layer, 1 model, 2 input), which */
static void free_something(void) {
  unsigned w = u8() % 3;
  if (w == 0) {
    int li = pick_layer();
    if (li < 0) return;
    snprintf(what, sizeof what, "nn_layer_free of %s", layer_name[layers[li].kind]);
    ad_clear_error(C);
    nn_layer_free(layers[li].l);
    if (layers[li].model < 0) {
      layers[li].l = NULL;
      return;
    }
    /* a model's layer: refused, and the layer left working */
    FUZZ_CHECK(ad_last_status(C) == AD_ERR_STATE, "%s of a model: %s", what,
               ad_status_str(ad_last_status(C)));
    check_error();
    check_usable();
  } else if (w == 1) {
    int mi = pick_model();
    if (mi >= 0) free_model(mi);
  } else {
    int i = pick_slot(S_LEAF);
    if (i >= 0) ad_tensor_free(slots[i].t), slots[i].kind = S_FREED;
  }
}

static void step_run(unsigned b);

static void step(void) {
  unsigned b = u8();
  must_fail = false;
  bool grad = ad_grad_enabled(C);
  snprintf(what, sizeof what, "instruction %u", b);
  step_run(b);
  /* every call leaves the modes and the scopes (ad_scope_push) as they were */
  FUZZ_CHECK(ad_grad_enabled(C) == (b >= NOP_GRAD_MODE && b < NOP_REQ_GRAD ? !grad : grad),
             "%s changed grad mode", what);
  FUZZ_CHECK(!ad_anomaly_mode(C), "%s turned anomaly mode on", what);
  FUZZ_CHECK(ad_scope_depth(C) == 0, "%s left %d scopes open", what, ad_scope_depth(C));
}

static void step_run(unsigned b) {
  if (b < NOP_LAYER) {
    make_input();
  } else if (b < NOP_FORWARD) {
    make_layer();
  } else if (b < NOP_LOSS) {
    forward();
  } else if (b < NOP_BACKWARD) {
    loss();
  } else if (b < NOP_SEQ) {
    backward();
  } else if (b < NOP_MODEL_FWD) {
    sequential();
  } else if (b < NOP_TRAINING) {
    model_forward();
  } else if (b < NOP_RESET) {
    toggle_training();
  } else if (b < NOP_FREE) {
    tape_reset();
  } else if (b < NOP_GRAD_MODE) {
    free_something();
  } else if (b < NOP_REQ_GRAD) {
    ad_set_grad_enabled(C, !ad_grad_enabled(C));
  } else {
    int i = pick_slot(S_LEAF);
    snprintf(what, sizeof what, "set_requires_grad");
    ad_clear_error(C);
    if (i >= 0 && ad_tensor_set_requires_grad(slots[i].t, true) != AD_OK) {
      check_error();
      check_usable();
    }
  }
}

/* ------------------------------------------------------------- driver */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fuzz_alloc_max = (size_t)16 << 20;
  trace = getenv("FUZZ_NN_TRACE") != NULL;
  make_aliens(3, (const int64_t[]){1, 2, 4});
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  in_p = data, in_n = size, in_i = 0;
  C = ad_ctx_new_with_alloc(fuzz_alloc, NULL);
  if (!C) return 0;
  ad_rng_seed(&rng, 1);
  w_ok = ad_full(C, AD_F64, 0, NULL, 2.5);
  FUZZ_CHECK(w_ok && ad_tensor_set_requires_grad(w_ok, true) == AD_OK, "%s", ad_last_error(C));
  memset(slots, 0, sizeof slots);
  memset(layers, 0, sizeof layers);
  memset(models, 0, sizeof models);
  leaves_made = 0;
  for (int s = 0; s < MAX_STEPS && in_i < in_n; s++) step();

  ad_set_grad_enabled(C, true);
  tape_reset();
  for (int i = 0; i < MAX_MODELS; i++)
    if (models[i].m) free_model(i);
  for (int i = 0; i < MAX_LAYERS; i++) nn_layer_free(layers[i].l);
  finish_input(C, w_ok);
  return 0;
}
