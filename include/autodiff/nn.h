/** @file
 * nn.h: neural networks on the autodiff tape.
 *
 * Overview
 *   Everything here is built on the public ad_ API (ad.h): a forward pass is
 *   a chain of ad_ ops, and every gradient comes from the tape through
 *   ad_backward. Nothing in nn/ differentiates by hand.
 *
 *   @code{.unparsed}
 *   parameters   nn_params: an ordered list of named persistent tensors
 *                ("0.weight", "0.bias", or names you choose) with a hash
 *                map for lookup by name. Each requires a gradient.
 *   buffers      the same list type made by nn_buffers_new: named
 *                non-trainable tensors (BatchNorm's running statistics),
 *                saved in checkpoints with the parameters (a state dict is
 *                both, as in PyTorch) and skipped by optimizers, clipping,
 *                L2 and zero_grad.
 *   initializers nn_init: zeros, constant, uniform, normal, Xavier/Glorot
 *                and He/Kaiming (uniform and normal), from an explicit,
 *                seeded ad_rng.
 *   layers       nn_layer: Dense, activations (sigmoid, tanh, relu,
 *                leaky_relu, gelu, hardtanh, relu6, silu, elu, selu, mish,
 *                prelu, softmax, ...), dropout, flatten, BatchNorm1d /
 *                BatchNorm2d, GroupNorm, InstanceNorm1d / InstanceNorm2d,
 *                Conv1d / Conv2d and pooling (max, average, adaptive
 *                average),
 *                Embedding, EmbeddingBag, LayerNorm, recurrent layers (RNN, LSTM, GRU),
 *                multi-head attention, transformer encoder and decoder
 *                layers and their stacks (nn.TransformerEncoder,
 *                nn.TransformerDecoder), the whole nn.Transformer and
 *                lambda (a C function).
 *   models       nn_model: a Sequential stack of layers, or a custom model
 *                whose forward pass is a plain C function over the model's
 *                parameters and layers.
 *   losses       MSE, L1, smooth L1, Huber, binary cross-entropy (from
 *                probabilities or logits), categorical cross-entropy from
 *                logits (integer labels or one-hot / probability targets),
 *                NLL on log-probabilities, KL divergence, Gaussian and
 *                Poisson NLL, margin ranking, hinge embedding, soft
 *                margin, cosine embedding, triplet margin, multilabel
 *                soft margin, multi-class margin, CTC; mean, sum or none
 *                (and batchmean for KL). All share the nn_loss_fn
 *                signature, except the sequence cross-entropy (per-step
 *                logits, ignore_index), KL (log_target), the smooth L1 and
 *                Huber variants taking beta or delta, the _ext forms of
 *                the cross-entropy, NLL and BCE losses (class weights,
 *                label smoothing, ignore_index, pos_weight), and the
 *                likelihood, ranking and embedding losses (their extra
 *                tensors and parameters) and CTC (lengths, blank).
 *   optimizers   nn_optimizer: SGD (momentum, Nesterov, weight decay),
 *                Adagrad, RMSProp, Adam, AdamW (amsgrad), Adamax, NAdam,
 *                RAdam, Adadelta, ASGD, Rprop, maximize, with PyTorch's
 *                update rules and parameter groups of their own settings
 *                (nn_optimizer_add_param_group); L-BFGS
 *                (nn_lbfgs, with a closure; strong-Wolfe line search);
 *                gradient clipping by global norm or by value; learning-rate
 *                schedules (step, exponential, cosine, multistep, linear
 *                warm-up or decay, warm-up then cosine, one-cycle, cosine
 *                with warm restarts, constant factor, polynomial,
 *                lambda, multiplicative) and
 *                reduction on a
 *                plateau of a metric. Their state tensors are named so that
 *                checkpoints can resume training.
 *   data         nn_batcher (mini-batches with seeded shuffling),
 *                nn_train_test_split, and nn_loader (PyTorch's DataLoader
 *                over an nn_dataset callback, with worker threads).
 *   training     nn_fit in the spirit of Keras' model.fit (epochs, batches,
 *                shuffling, validation split, loss and accuracy, a history
 *                with gradient norms and CSV output, early stopping,
 *                a live progress bar on a terminal), nn_evaluate and
 *                nn_predict (no-grad), nn_train_step for hand-written loops;
 *                nn_fit_loader on an nn_loader.
 *   files        nn_io.h: IDX data sets and safetensors checkpoints;
 *                nn_model_save / nn_model_load use them for a model and its
 *                optimizer.
 *   @endcode
 *
 * Worked example: fit y = 2x + 1 with one Dense layer
 *
 *   @code
 *   ad_ctx *ctx = ad_ctx_new();
 *   ad_rng rng;
 *   ad_rng_seed(&rng, 42);
 *   nn_model *m = nn_sequential_new(ctx);
 *   nn_model_add(m, nn_dense_new(ctx, 1, 1, &rng, NULL));  // weight [1,1], bias [1]
 *   int64_t shape[2] = {64, 1};
 *   ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, shape, -1, 1);
 *   ad_tensor *y = ad_zeros(ctx, AD_F32, 2, shape);
 *   for (int64_t i = 0; i < 64; i++) ad_tensor_set(y, i, 2 * ad_tensor_get(x, i) + 1);
 *   nn_opt_config cfg = nn_opt_defaults(NN_OPT_SGD, 0.1);
 *   nn_optimizer *opt = nn_optimizer_new(nn_model_params(m), &cfg);
 *   nn_fit_opts fo = {.epochs = 50, .batch_size = 16, .seed = 1};
 *   if (nn_fit(m, opt, nn_mse_loss, x, y, &fo, NULL) != AD_OK)
 *     fprintf(stderr, "%s\n", ad_last_error(ctx));
 *   ad_tensor_print(stdout, "w", nn_params_find(nn_model_params(m), "0.weight"));
 *   nn_optimizer_free(opt); nn_model_free(m);
 *   ad_tensor_free(x); ad_tensor_free(y); ad_ctx_free(ctx);
 *   @endcode
 *
 * Errors
 *   As in ad.h: functions return an ad_status (AD_OK == 0) or NULL, and the
 *   error is kept on the context (ad_last_error) with a message that names
 *   the function or layer and the shapes, e.g.
 *   "dense '0': input [32,100] has 100 features, the layer expects 784".
 *   A NULL input gives NULL and keeps the message of the failure that made
 *   it, so chains of calls need one check at the end; when no error is
 *   recorded, it records "<function>: <argument> is NULL" (AD_ERR_NULL).
 *   Any other failure replaces an earlier message. Only a call with no
 *   context to report to (a NULL model, layer or optimizer, and nothing
 *   else that has one) returns AD_ERR_NULL or NULL silently.
 *   A constructor (nn_dense_new, nn_model_add_param, ...) that cannot make
 *   one of its parameters or buffers names itself, then the tensor (its
 *   state-dict path inside a transformer) and its shape, then the engine's
 *   message, with the engine's status (AD_ERR_ARG above 2^40 elements,
 *   AD_ERR_OOM): "nn_dense_new: weight [131072, 131072]: out of memory
 *   allocating 68719476736 bytes".
 *   Nothing here aborts or exits on user input.
 *
 * Ownership
 *   _new returns a handle the caller frees with the matching _free; _free of
 *   NULL is a no-op. Tensors made by ops (forward results, losses) live in
 *   the context's arena until ad_tape_reset. nn_fit, nn_evaluate,
 *   nn_predict and nn_train_step reset the tape. Free models, layers,
 *   optimizers, parameter lists and batchers before their context:
 *   ad_ctx_free frees the tensors they hold, and C cannot detect a handle
 *   used after its context is gone.
 *
 * Threading
 *   Like ad_ctx: one thread at a time per context and everything made from
 *   it.
 */
#ifndef NN_H
#define NN_H

#include "ad.h"
#include "nn_io.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* NN_API (the export macro) comes from nn_io.h. */

/* ============================================================ parameters */

/** A named list of tensors: a model's parameters, or its buffers. Opaque. */
typedef struct nn_params nn_params;

/** A new, empty parameter list on ctx. NULL (with AD_ERR_OOM) on failure.
 * Free with nn_params_free. */
NN_API nn_params *nn_params_new(ad_ctx *ctx);

/** Frees the list, and the tensors it owns (see nn_params_add). Borrowed
 * tensors are left alone. A layer's or a model's own list
 * (nn_layer_params, nn_model_params, their buffers) is freed with its
 * owner: here it is refused (AD_ERR_STATE). NULL is a no-op. */
NN_API void nn_params_free(nn_params *p);

/** Appends persistent float tensor t under name (copied; non-empty, unique in
 * the list), marks t as requiring a gradient and names it (ad_tensor_set_name:
 * error messages, anomaly reports and graph dumps show "0.weight"; the
 * latest list to add t names it). With own, the list frees t
 * in nn_params_free, also when this call fails; without, the caller keeps
 * ownership. A tensor already in the list may be added again under another
 * name (tied weights: a checkpoint holds it under both, as PyTorch's
 * state_dict), but not with own (refused, t left to the list); optimizers,
 * clipping, nn_params_numel and nn_l2_penalty take it once, as PyTorch's
 * module.parameters(). Returns AD_OK, AD_ERR_NULL, AD_ERR_ARG (empty or duplicate
 * name, a temporary tensor, a tensor of another context than the list's),
 * AD_ERR_DTYPE (not float) or AD_ERR_OOM. */
NN_API ad_status nn_params_add(nn_params *p, const char *name, ad_tensor *t, bool own);

/** The tensor named name, or NULL (no error recorded). O(1). */
NN_API ad_tensor *nn_params_find(const nn_params *p, const char *name);

/** Number of tensors; tensor i, its name (owned by the list), NULL if out of
 * range. @{ */
NN_API int nn_params_count(const nn_params *p);
NN_API ad_tensor *nn_params_tensor(const nn_params *p, int i);
NN_API const char *nn_params_name(const nn_params *p, int i);
/** @} */

/** The names and tensors as arrays of nn_params_count entries, in order (for
 * nn_checkpoint_save / nn_checkpoint_load). Owned by the list; valid until
 * it changes. @{ */
NN_API const char *const *nn_params_names(const nn_params *p);
NN_API ad_tensor *const *nn_params_tensors(const nn_params *p);
/** @} */

/** Total number of elements over all tensors (a tensor listed twice counted
 * once, see nn_params_add). */
NN_API int64_t nn_params_numel(const nn_params *p);

/** Zeroes every parameter's gradient with ad_tensor_zero_grad: O(1) per
 * parameter; the grads read NULL (zero) until the next backward, which
 * stores into the kept buffers. */
NN_API void nn_params_zero_grad(nn_params *p);

/** Scales every gradient so that their global L2 norm is at most max_norm
 * (torch.nn.utils.clip_grad_norm_: factor max_norm / (norm + 1e-6) when it
 * is below 1); a tensor listed twice counts and is scaled once. Returns the norm before clipping; 0
 * with no gradients; NaN with AD_ERR_ARG, nothing changed, for a max_norm below 0 or NaN.
 * The scaling is a write as ad_tensor_set's: a backward through an op
 * recorded before it that read a gradient as a value refuses (AD_ERR_STATE),
 * as PyTorch's; NaN with AD_ERR_OOM, nothing changed, when it cannot be
 * noted. */
NN_API double nn_clip_grad_norm(nn_params *p, double max_norm);

/** Clamps every gradient element to [-clip, clip]; a clip below 0 or NaN
 * is AD_ERR_ARG (on the list's context), nothing changed. A gradient it
 * changes is written as by nn_clip_grad_norm (AD_ERR_OOM, nothing changed,
 * when that cannot be noted). */
NN_API void nn_clip_grad_value(nn_params *p, double clip);

/** lambda * sum over the list's tensors that require grad (each once) of sum(w^2), as a
 * scalar on the tape (Keras' l2 regularizer; its gradient is 2 lambda w).
 * Add it to a loss. NULL on error (empty list, mixed dtypes). */
NN_API ad_tensor *nn_l2_penalty(ad_ctx *ctx, const nn_params *p, double lambda);

/* --------------------------------------------------------------- buffers
 * A buffer is a named persistent tensor that is part of a model's state but
 * not trained: BatchNorm's "running_mean", "running_var" and
 * "num_batches_tracked" (PyTorch's register_buffer). Buffers live in a list
 * of the same type as parameters (nn_params), made by nn_buffers_new, so
 * nn_params_find / _count / _tensor / _name / _names / _tensors / _numel /
 * _free work on it. The differences: a tensor added to a buffer list may
 * have any dtype (AD_F32, AD_F64, AD_I32) and must not require a gradient
 * (it is left so); each carries an nn_store saying how checkpoints write
 * it; nn_params_zero_grad, nn_clip_grad_norm (returns 0) and
 * nn_clip_grad_value do nothing on a buffer list, nn_l2_penalty finds no
 * parameter in it, and nn_optimizer_new refuses it (AD_ERR_ARG). A layer's
 * buffers are updated by its forward pass (outside the tape), never by an
 * optimizer. */

/** A new, empty buffer list on ctx. NULL (with AD_ERR_OOM) on failure. Free
 * with nn_params_free. */
NN_API nn_params *nn_buffers_new(ad_ctx *ctx);

/** Appends persistent tensor t to buffer list b under name (copied;
 * non-empty, unique), stored in checkpoints as store says (NN_STORE_I64
 * for PyTorch's int64 counters). Ownership as nn_params_add. Returns AD_OK,
 * AD_ERR_NULL, AD_ERR_ARG (b is a parameter list, empty or duplicate name,
 * a temporary tensor, a tensor of another context, a tensor that requires
 * grad, an unknown store) or AD_ERR_OOM. nn_params_add on a buffer list is nn_buffers_add with
 * NN_STORE_NATIVE. */
NN_API ad_status nn_buffers_add(nn_params *b, const char *name, ad_tensor *t, bool own,
                                nn_store store);

/** Whether p is a buffer list. */
NN_API bool nn_params_is_buffers(const nn_params *p);

/** How tensor i of the list is stored in checkpoints (NN_STORE_NATIVE for
 * parameters and out-of-range i). */
NN_API nn_store nn_params_store(const nn_params *p, int i);

/* ========================================================== initializers */

/** The distributions of an initializer (nn_init). */
typedef enum nn_init_kind {
  NN_INIT_DEFAULT = 0,        /**< the layer's default (see nn_dense_opts) */
  NN_INIT_ZEROS,              /**< 0 */
  NN_INIT_CONSTANT,           /**< a */
  NN_INIT_UNIFORM,            /**< U[a, b) */
  NN_INIT_NORMAL,             /**< N(mean a, std b) */
  NN_INIT_XAVIER_UNIFORM,     /**< U[-l, l), l = gain sqrt(6 / (fan_in + fan_out)) */
  NN_INIT_XAVIER_NORMAL,      /**< N(0, gain sqrt(2 / (fan_in + fan_out))) */
  NN_INIT_HE_UNIFORM,         /**< U[-l, l), l = gain sqrt(3 / fan_in) */
  NN_INIT_HE_NORMAL,          /**< N(0, gain / sqrt(fan_in)) */
  NN_INIT_HE_UNIFORM_FAN_OUT, /**< He uniform with fan_out for fan_in */
  NN_INIT_HE_NORMAL_FAN_OUT,  /**< He normal with fan_out for fan_in */
  NN_INIT_ORTHOGONAL,         /**< gain a times a (semi-)orthogonal matrix */
  NN_INIT_TRUNC_NORMAL        /**< N(0, std a) truncated to [-b, b] */
} nn_init_kind;

/** An initializer: kind plus its numbers. For Xavier and He, a is the gain
 * (positive; a negative one is refused, as PyTorch refuses the bounds it
 * makes); 0 means the default gain: 1 for Xavier, sqrt(2) for He (relu),
 * which gives Keras' glorot_* and he_uniform and PyTorch's xavier_* and
 * kaiming_*(nonlinearity='relu'). He normal is a plain normal, as PyTorch's
 * (Keras truncates it). The _FAN_OUT kinds are PyTorch's kaiming_*(mode=
 * 'fan_out'), as ResNets initialise their convolutions.
 *
 * NN_INIT_ORTHOGONAL is PyTorch's orthogonal_(gain=a), a = 0 meaning 1: the
 * tensor, seen as a matrix of shape[0] rows and the other dimensions
 * flattened into columns, gets orthonormal rows (more columns than rows)
 * or columns (otherwise), times the gain. Its construction is PyTorch's: a
 * matrix of standard normal draws (row-major), transposed when it has
 * fewer rows than columns, factored as Q R with R's diagonal made
 * positive, Q (transposed back) times the gain. A factorization is unique
 * given the draws, so the result is PyTorch's for the same draws (our
 * generator's draws are not torch's). Needs 2 or more dimensions; an empty
 * tensor is left as it is. The factorization takes O(rows cols min(rows,
 * cols)) time and 2 rows x cols doubles of memory.
 *
 * NN_INIT_TRUNC_NORMAL is PyTorch's trunc_normal_(mean=0, std=a, a=-b,
 * b=b), b = 0 meaning PyTorch's default bounds, 2: a normal of mean 0 and
 * standard deviation a > 0 restricted to [-b, b] by inverse transform
 * sampling, as PyTorch draws it. The bounds are absolute, as PyTorch's, not
 * in standard deviations (Keras' TruncatedNormal cuts at 2 std, which here
 * is b = 2 a); std 0.02 with the default bounds hardly truncates. */
typedef struct nn_init {
  nn_init_kind kind; /**< the distribution */
  double a;          /**< its first number (see nn_init_kind) */
  double b;          /**< its second number */
} nn_init;

/** Builds an nn_init (also from C++). */
static inline nn_init nn_init_make(nn_init_kind kind, double a, double b) {
  nn_init init;
  init.kind = kind;
  init.a = a;
  init.b = b;
  return init;
}

/** Fans of a weight shaped like PyTorch's: [out, in, k...] gives
 * fan_in = in * prod(k), fan_out = out * prod(k); a 1-d [n] gives n and n;
 * a scalar 1 and 1. Either pointer may be NULL. */
NN_API void nn_fans(const ad_tensor *t, int64_t *fan_in, int64_t *fan_out);

/** Fills persistent float tensor t by init, drawing from rng in row-major
 * order (rng may be NULL for zeros and constant). Returns AD_OK,
 * AD_ERR_NULL (t, or rng for a random kind), AD_ERR_ARG (NN_INIT_DEFAULT,
 * unknown kind, std < 0, b < a, empty fan, a number that is not finite;
 * for a float32 t a constant, a uniform bound, Xavier's or He's included,
 * or a trunc_normal bound beyond float32's range, as PyTorch refuses to
 * convert one; t of another context; for a random kind, an rng never
 * seeded, whose state is all zeros), AD_ERR_STATE (t freed, or a
 * temporary of a tape that was reset), AD_ERR_SHAPE (orthogonal on fewer
 * than 2 dimensions), AD_ERR_DTYPE or AD_ERR_OOM (the orthogonal
 * factorization's memory); t is unchanged on an error. */
NN_API ad_status nn_init_tensor(ad_ctx *ctx, ad_tensor *t, nn_init init, ad_rng *rng);

/* ================================================================ layers */

/** A layer: its parameters, buffers and forward pass. Opaque. */
typedef struct nn_layer nn_layer;

/** Activation functions, applied elementwise, except softmax and log_softmax
 * which work along the last axis. */
typedef enum nn_act {
  NN_ACT_NONE = 0, /**< identity */
  NN_ACT_SIGMOID,
  NN_ACT_TANH,
  NN_ACT_RELU,       /**< relu'(0) = 0 */
  NN_ACT_LEAKY_RELU, /**< x > 0 ? x : alpha x */
  NN_ACT_GELU,       /**< exact: x Phi(x) */
  NN_ACT_SOFTPLUS,
  NN_ACT_SOFTMAX,
  NN_ACT_LOG_SOFTMAX,
  NN_ACT_HARDTANH, /**< ad_hardtanh(x, -1, 1) (nn_hardtanh_new for other bounds) */
  NN_ACT_RELU6,    /**< ad_hardtanh(x, 0, 6), PyTorch's nn.ReLU6 */
  /* PyTorch 1.13's values and derivatives (first and second), also at the
   * kinks, for NaN and for large |x|; see nn_activate. */
  NN_ACT_SILU,        /**< x sigmoid(x) (swish) */
  NN_ACT_ELU,         /**< x > 0 ? x : alpha (e^x - 1), alpha 1 (nn_elu_new) */
  NN_ACT_SELU,        /**< scale * elu(x, alpha), PyTorch's two constants */
  NN_ACT_CELU,        /**< x > 0 ? x : alpha (e^(x / alpha) - 1), alpha 1 */
  NN_ACT_MISH,        /**< x tanh(softplus(x)) */
  NN_ACT_HARDSWISH,   /**< x relu6(x + 3) / 6 */
  NN_ACT_HARDSIGMOID, /**< relu6(x + 3) / 6 */
  NN_ACT_LOGSIGMOID,  /**< log(sigmoid(x)) = -softplus(-x) */
  NN_ACT_SOFTSIGN,    /**< x / (1 + |x|) */
  NN_ACT_TANHSHRINK,  /**< x - tanh(x) */
  NN_ACT_PRELU        /**< x > 0 ? x : w x, w learnable: a layer only (nn_prelu_new) */
} nn_act;

/** "relu", "softmax", ...; "?" for an unknown value. */
NN_API const char *nn_act_name(nn_act act);

/** Applies act to x. alpha is leaky_relu's slope and elu's and celu's
 * alpha (taken as given: 0 is a slope of 0, and celu refuses it), ignored
 * otherwise. Every activation is a chain of ad_ ops, so the tape derives
 * its gradient to any order. The newer ones give PyTorch 1.13's values
 * and first and second derivatives (to a few ulp where exp, tanh or
 * sigmoid round differently; exactly at the points below), with its
 * rules:
 *   elu, selu, celu  (e^x - 1) alpha, computed so, as PyTorch (not expm1);
 *                    at 0 the slope is the left one (alpha, or alpha scale
 *                    for selu) and the second derivative the right one
 *                    (0); celu's derivatives use 1 / float32(alpha), as
 *                    PyTorch's do (for alpha 0.1 the slope at 0 is
 *                    0.999999985 in float64)
 *   hardswish        slope x/3 + 1/2 on [-3, 3] (-1/2 at -3, 3/2 at 3),
 *                    0 below, 1 above; second derivative 1/3 on (-3, 3)
 *   hardsigmoid      slope float32's 1/6 (0.1666666716337204, also in
 *                    float64, as PyTorch) on (-3, 3) only: 0 at -3 and 3
 *   NaN x            NaN, with slope NaN, except: elu, selu, celu and
 *                    hardswish pass the slope of the linear side (1, or
 *                    selu's scale), hardsigmoid 0, prelu its weight
 *                    (PyTorch 1.13's CPU kernels of elu and hardswish
 *                    give NaN, and 1 at x = 3, for the elements they take
 *                    a vector at a time, and the slopes here for the
 *                    rest: this is the formula of its scalar code)
 *   large |x|        no overflow: silu, mish at -1000 give -0 and slope
 *                    -0 or 0, at 1000 x and 1; logsigmoid(-1000) = -1000
 *                    with slope 1 (mish's second derivative at 1000 is 0,
 *                    where PyTorch's is NaN)
 * Returns a tape tensor, or NULL on error (NULL x, unknown act, celu with
 * alpha 0, prelu: its weight is learnable, use nn_prelu_new; AD_ERR_ARG
 * for an f32 x and a finite leaky_relu, elu or celu alpha, or celu's 1 /
 * alpha, beyond float32's range, as PyTorch refuses to convert it, and
 * for celu with such an alpha in f64 too: PyTorch's slope takes 1 /
 * float32(alpha)). */
NN_API ad_tensor *nn_activate(ad_ctx *ctx, ad_tensor *x, nn_act act, double alpha);

/** Options of a Dense layer. All-zero means the defaults. */
typedef struct nn_dense_opts {
  bool no_bias;        /**< false: with bias */
  nn_act activation;   /**< applied after the affine map; default none */
  double alpha;        /**< leaky_relu slope, 0 means 0.01; elu, celu alpha, 0 means 1 */
  nn_init weight_init; /**< default Xavier/Glorot uniform (Keras' default) */
  nn_init bias_init;   /**< default zeros */
  ad_dtype dtype;      /**< default AD_F32 */
} nn_dense_opts;

/** A fully connected layer y = act(x W^T + b) with weight W [out, in] and
 * bias b [out] (PyTorch's nn.Linear layout, so checkpoints move both ways;
 * the transpose is a flag of ad_matmul and costs no copy). x is [..., in]:
 * the map applies to the last axis. rng draws the initial values (it may
 * be NULL only when both initializers are deterministic); opts may be
 * NULL. Its parameters are named "weight" and "bias". Returns the layer
 * (free with nn_layer_free, or give it to a model), or NULL with
 * AD_ERR_ARG (in or out < 1, bad initializer, an unknown activation,
 * NN_ACT_PRELU: its weight would need a parameter of its own, add an
 * nn_prelu_new layer after it; celu's or elu's alpha not finite) /
 * AD_ERR_NULL / AD_ERR_OOM. */
NN_API nn_layer *nn_dense_new(ad_ctx *ctx, int64_t in, int64_t out, ad_rng *rng,
                              const nn_dense_opts *opts);

/** An activation as a layer of kind nn_act_name(act), with PyTorch's
 * defaults: leaky_relu's slope 0.01, elu's and celu's alpha 1, prelu one
 * weight of 0.25 in float32 (nn_prelu_new(ctx, 1, 0.25, AD_F32)). NULL
 * with AD_ERR_ARG for an unknown act. */
NN_API nn_layer *nn_activation_new(ad_ctx *ctx, nn_act act);

/** leaky_relu with slope alpha as a layer. NULL with AD_ERR_ARG for a
 * slope that is not finite. */
NN_API nn_layer *nn_leaky_relu_new(ad_ctx *ctx, double alpha);

/** PyTorch's nn.Hardtanh(min, max) as a layer of kind "hardtanh":
 * ad_hardtanh(x, min, max), with PyTorch's gradient (dy strictly inside
 * the bounds, 0 at them). nn_activation_new(ctx, NN_ACT_HARDTANH) is nn.Hardtanh()'s -1, 1. NULL
 * with AD_ERR_ARG unless max > min (a NaN bound included), as PyTorch's
 * constructor asserts; infinite bounds are fine. */
NN_API nn_layer *nn_hardtanh_new(ad_ctx *ctx, double min, double max);

/** PyTorch's nn.ReLU6 as a layer of kind "relu6": ad_hardtanh(x, 0, 6);
 * the same as nn_activation_new(ctx, NN_ACT_RELU6). */
NN_API nn_layer *nn_relu6_new(ad_ctx *ctx);

/** PyTorch's nn.ELU(alpha) as a layer of kind "elu". NULL with AD_ERR_ARG
 * for an alpha that is not finite. */
NN_API nn_layer *nn_elu_new(ad_ctx *ctx, double alpha);

/** PyTorch's nn.CELU(alpha) as a layer of kind "celu". NULL with
 * AD_ERR_ARG for alpha 0 (PyTorch: "alpha cannot be 0 for CELU") or not
 * finite. */
NN_API nn_layer *nn_celu_new(ad_ctx *ctx, double alpha);

/** PyTorch's nn.PReLU(num_parameters, init): y = x > 0 ? x : w x, with a
 * learnable parameter "weight" [num_parameters] of dtype (AD_F32 or AD_F64)
 * filled with init; its channel dimension is dim 1 of the input (a weight
 * of one element applies to any input, of more to [N, C, ...] with C =
 * num_parameters). The slope at 0 is w and the weight's gradient there 0,
 * as PyTorch's; a NaN x gives NaN, slope w and a NaN weight gradient; an
 * x of +inf adds nothing to the weight's gradient and -inf adds -inf, as
 * PyTorch's. Kind "prelu". NULL with AD_ERR_ARG (num_parameters < 1, init
 * not finite), AD_ERR_DTYPE or AD_ERR_OOM. Its forward refuses an input of
 * another dtype (AD_ERR_DTYPE) and, for num_parameters > 1, one whose dim 1
 * is not num_parameters (AD_ERR_SHAPE), naming the layer. */
NN_API nn_layer *nn_prelu_new(ad_ctx *ctx, int64_t num_parameters, double init, ad_dtype dtype);

/** Inverted dropout: in training mode each element is zeroed with
 * probability p and the rest are scaled by 1 / (1 - p); in evaluation mode
 * it is the identity. The masks come from an ad_rng seeded with seed: each
 * call takes one draw k of it (a call that fails takes none), and element
 * i (row-major) is kept when the (i mod 4096)-th draw of an ad_rng seeded
 * with k + i / 4096 (integer division), as ad_rng_uniform, is >= p. The
 * chunks of 4096 elements are drawn on the library's threads; a mask is
 * the same on any number of threads. p in [0, 1), else NULL with
 * AD_ERR_ARG. */
NN_API nn_layer *nn_dropout_new(ad_ctx *ctx, double p, uint64_t seed);

/** Reshapes [N, d1, d2, ...] to [N, d1 * d2 * ...] (a view), N = 0
 * included; a 1-D [N] becomes [N, 1] (as Keras' Flatten; PyTorch's refuses
 * it), a scalar is AD_ERR_SHAPE. */
NN_API nn_layer *nn_flatten_new(ad_ctx *ctx);

/** The function of a lambda layer: returns a tape tensor or NULL with the
 * error recorded. training tells train from evaluation mode. */
typedef ad_tensor *(*nn_layer_fn)(ad_ctx *ctx, ad_tensor *x, bool training, void *ud);

/** A parameterless layer running fn(ctx, x, training, ud). kind (copied) is
 * shown by nn_model_summary; NULL means "lambda". */
NN_API nn_layer *nn_lambda_new(ad_ctx *ctx, const char *kind, nn_layer_fn fn, void *ud);

/** Options of BatchNorm layers. All-zero means PyTorch's defaults. */
typedef struct nn_batch_norm_opts {
  double eps;            /**< added to the variance; 0 means 1e-5 */
  double momentum;       /**< of the running statistics, in (0, 1]; 0 means 0.1 */
  bool cumulative;       /**< PyTorch's momentum=None: the running statistics
                            are the plain average over the batches seen
                            (momentum 1 / num_batches_tracked); momentum is
                            then ignored */
  bool no_affine;        /**< affine=False: no weight and bias */
  bool no_running_stats; /**< track_running_stats=False: no buffers; batch
                            statistics in both modes */
  ad_dtype dtype;        /**< of the parameters and the running statistics
                            (and of the input); default AD_F32 */
} nn_batch_norm_opts;

/** Batch normalisation over the channels (dim 1) of x, PyTorch's
 * nn.BatchNorm1d (x [N, C] or [N, C, L]) and nn.BatchNorm2d (x [N, C, H,
 * W]), through ad_batch_norm: y = (x - mean) / sqrt(var + eps) * weight +
 * bias per channel. In training mode mean and var are the batch's (biased
 * variance, over every dim but 1) and the running statistics are updated in
 * place: running = (1 - momentum) running + momentum stat (the unbiased
 * variance for running_var), and num_batches_tracked grows by 1; in
 * evaluation mode the running statistics normalise. Parameters "weight"
 * (ones) and "bias" (zeros) [C]; buffers "running_mean" (zeros) and
 * "running_var" (ones) [C] of the layer's dtype, and "num_batches_tracked",
 * a 0-d AD_F64 (exact to 2^53; PyTorch's is int64, and checkpoints store it
 * as I64, NN_STORE_I64), so a PyTorch state dict loads and saves with the
 * same names. opts may be NULL. Returns the layer, or NULL with AD_ERR_ARG
 * (num_features < 1, eps < 0 or not finite, momentum outside (0, 1]),
 * AD_ERR_DTYPE (not float) or AD_ERR_OOM. Its forward fails, naming the
 * layer and the shapes, on an input of the wrong rank or channel count
 * (AD_ERR_SHAPE), of another dtype (AD_ERR_DTYPE), or, in training mode,
 * with one value per channel (AD_ERR_SHAPE, as PyTorch; an empty batch is
 * fine: an empty output, the running statistics unchanged, the batch
 * counted in num_batches_tracked). The running statistics change only when
 * the forward succeeds. @{ */
NN_API nn_layer *nn_batch_norm1d_new(ad_ctx *ctx, int64_t num_features,
                                     const nn_batch_norm_opts *opts);
NN_API nn_layer *nn_batch_norm2d_new(ad_ctx *ctx, int64_t num_features,
                                     const nn_batch_norm_opts *opts);
/** @} */

/** PyTorch's nn.BatchNorm3d: nn_batch_norm2d_new's layer (above: the same
 * options, parameters, buffers, state-dict names, statistics and errors)
 * for x [N, C, D, H, W] only, the statistics taken over N, D, H and W.
 * Kind "batch_norm3d". */
NN_API nn_layer *nn_batch_norm3d_new(ad_ctx *ctx, int64_t num_features,
                                     const nn_batch_norm_opts *opts);

/** Options of a GroupNorm layer. All-zero means PyTorch's defaults. */
typedef struct nn_group_norm_opts {
  double eps;     /**< added to the variance; 0 means 1e-5 */
  bool no_affine; /**< affine=False: no weight and bias */
  ad_dtype dtype; /**< of the parameters (and of the input); default AD_F32 */
} nn_group_norm_opts;

/** Group normalisation, PyTorch's nn.GroupNorm(num_groups, num_channels):
 * x [N, C, *] (2 dims or more) has its C channels split into num_groups
 * groups of C / num_groups consecutive channels, each group of each sample
 * normalised with its own mean and biased variance, y = (x - mean) /
 * sqrt(var + eps) * weight + bias, weight and bias per channel. The same
 * in training and evaluation mode. The op of ad_group_norm (one pass
 * forward, two back), differentiable to any order. Parameters "weight"
 * (ones) and "bias" (zeros) [num_channels], as PyTorch's, so state dicts
 * move both ways. opts may be NULL. Returns the
 * layer, or NULL with AD_ERR_ARG (num_groups or num_channels < 1,
 * num_channels not divisible by num_groups, eps < 0 or not finite),
 * AD_ERR_DTYPE (not float) or AD_ERR_OOM. Its forward fails, naming the
 * layer and the shapes, on an input under 2 dims, with C != num_channels
 * (without affine, as PyTorch: C not a multiple of num_groups), or with
 * one sample of 1 value per group (N * C / G * prod(*) = 1, which PyTorch
 * refuses too) (AD_ERR_SHAPE), or of another dtype (AD_ERR_DTYPE). An
 * empty input gives an empty output. */
NN_API nn_layer *nn_group_norm_new(ad_ctx *ctx, int64_t num_groups, int64_t num_channels,
                                   const nn_group_norm_opts *opts);

/** Options of InstanceNorm layers. All-zero means PyTorch's defaults
 * (no affine, no running statistics). */
typedef struct nn_instance_norm_opts {
  double eps;               /**< added to the variance; 0 means 1e-5 */
  double momentum;          /**< of the running statistics, in (0, 1]; 0 means 0.1 */
  bool affine;              /**< affine=True: "weight" and "bias" */
  bool track_running_stats; /**< track_running_stats=True: the buffers */
  ad_dtype dtype;           /**< of the parameters and the running statistics
                               (and of the input); default AD_F32 */
} nn_instance_norm_opts;

/** Instance normalisation, PyTorch's nn.InstanceNorm1d (x [N, C, L] or
 * unbatched [C, L]) and nn.InstanceNorm2d (x [N, C, H, W] or [C, H, W]):
 * each channel of each sample normalised over its own values (mean and
 * biased variance), y = (x - mean) / sqrt(var + eps) * weight + bias: the
 * group norm with one group per channel (nn_group_norm_new), differentiable
 * to any order. With track_running_stats, training mode also updates the
 * running statistics in place as PyTorch's F.instance_norm does:
 * running = (1 - momentum) running + momentum stat, averaged over the
 * samples, with the unbiased variance for running_var; evaluation mode
 * then normalises with them (ad_batch_norm). Without them, the instance
 * statistics are used in both modes (PyTorch's default). Parameters
 * "weight" (ones) and "bias" (zeros) [C] with affine; buffers
 * "running_mean" (zeros), "running_var" (ones) [C] and
 * "num_batches_tracked" (0-d AD_F64, stored as I64) with
 * track_running_stats, as BatchNorm's; num_batches_tracked never counts,
 * as in PyTorch. opts may be NULL. Returns the layer, or NULL with
 * AD_ERR_ARG (num_features < 1, eps < 0 or not finite, momentum outside
 * (0, 1]), AD_ERR_DTYPE (not float) or AD_ERR_OOM. Its forward fails,
 * naming the layer and the shapes, on an input of another rank, with a
 * channel count other than num_features when the layer has affine or
 * running statistics (without either, any count, as PyTorch), or, where
 * instance statistics are used, with 1 value per instance and channel
 * (AD_ERR_SHAPE), or of another dtype (AD_ERR_DTYPE). The running
 * statistics change only when the forward succeeds, and not for an empty
 * batch (where PyTorch 1.13 writes NaN). @{ */
NN_API nn_layer *nn_instance_norm1d_new(ad_ctx *ctx, int64_t num_features,
                                        const nn_instance_norm_opts *opts);
NN_API nn_layer *nn_instance_norm2d_new(ad_ctx *ctx, int64_t num_features,
                                        const nn_instance_norm_opts *opts);
/** @} */

/** PyTorch's nn.InstanceNorm3d: nn_instance_norm2d_new's layer (above: the
 * same options and defaults, parameters, buffers, running statistics and
 * errors) for x [N, C, D, H, W] or unbatched [C, D, H, W] (a batch of
 * one), each channel of each sample normalised over D, H and W. Kind
 * "instance_norm3d". */
NN_API nn_layer *nn_instance_norm3d_new(ad_ctx *ctx, int64_t num_features,
                                        const nn_instance_norm_opts *opts);

/** Options of a Conv2d or ConvTranspose2d layer. All-zero means PyTorch's
 * defaults. */
typedef struct nn_conv2d_opts {
  int64_t stride[2];         /**< (h, w); 0 means 1 */
  int64_t padding[2];        /**< (h, w), the same on both sides; for other
                                padding, pad the input or use ad_conv2d */
  bool same;                 /**< Conv2d: padding='same' (stride 1 only) */
  int64_t dilation[2];       /**< 0 means 1 */
  int64_t groups;            /**< 0 means 1; must divide both channel counts */
  int64_t output_padding[2]; /**< ConvTranspose2d only */
  bool no_bias;              /**< false: with bias */
  nn_init weight_init;       /**< default PyTorch's: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
  nn_init bias_init;         /**< default the same bound */
  ad_dtype dtype;            /**< default AD_F32 */
} nn_conv2d_opts;

/** A 2-D convolution layer, PyTorch's nn.Conv2d: x [N, in, H, W] to
 * [N, out, Ho, Wo] through ad_conv2d, with weight [out, in/groups, kh, kw]
 * and bias [out] (PyTorch's layout and names, "weight" and "bias", so a
 * state dict loads unchanged). PyTorch's initialisation: both uniform
 * within 1/sqrt(fan_in), fan_in = in/groups * kh * kw (kaiming_uniform
 * with a = sqrt(5)), drawn from rng (weight first). opts may be NULL.
 * Returns the layer, or NULL with AD_ERR_ARG (a count < 1, groups not
 * dividing the channels, a negative stride, dilation or padding, one above
 * 2^40, an output_padding, same with a stride above 1, a bad initializer),
 * AD_ERR_DTYPE, AD_ERR_NULL
 * (rng for a random init) or AD_ERR_OOM. Its forward takes [N, in, H, W]
 * or, as PyTorch, an unbatched [in, H, W] (giving [out, Ho, Wo]); it
 * refuses other inputs (AD_ERR_SHAPE naming the layer), and otherwise
 * reports ad_conv2d's errors (a kernel larger than the padded input). */
NN_API nn_layer *nn_conv2d_new(ad_ctx *ctx, int64_t in, int64_t out, int64_t kh, int64_t kw,
                               ad_rng *rng, const nn_conv2d_opts *opts);

/** A transposed convolution layer, PyTorch's nn.ConvTranspose2d, through
 * ad_conv_transpose2d: weight [in, out/groups, kh, kw], bias [out]; fan_in
 * for the initialisation is out/groups * kh * kw, as PyTorch computes it.
 * Otherwise as nn_conv2d_new; 'same' is refused, and an output_padding
 * not smaller than the stride or the dilation (AD_ERR_ARG). */
NN_API nn_layer *nn_conv_transpose2d_new(ad_ctx *ctx, int64_t in, int64_t out, int64_t kh,
                                         int64_t kw, ad_rng *rng, const nn_conv2d_opts *opts);

/** Pooling layers, PyTorch's nn.MaxPool2d, nn.AvgPool2d (kh x kw windows;
 * opts as ad_max_pool2d / ad_avg_pool2d, NULL for the defaults: stride =
 * kernel) and nn.AdaptiveAvgPool2d(1) (ad_global_avg_pool2d: [N, C, H, W]
 * -> [N, C, 1, 1], or [C, H, W] -> [C, 1, 1]; other ranks are refused,
 * which PyTorch 1.13's mean shortcut for an output of 1 takes). No
 * parameters. NULL with AD_ERR_ARG for a kernel under
 * 1x1; other bad options are reported by the forward, naming the op. @{ */
NN_API nn_layer *nn_max_pool2d_new(ad_ctx *ctx, int64_t kh, int64_t kw, const ad_pool2d_opts *opts);
NN_API nn_layer *nn_avg_pool2d_new(ad_ctx *ctx, int64_t kh, int64_t kw, const ad_pool2d_opts *opts);
NN_API nn_layer *nn_global_avg_pool2d_new(ad_ctx *ctx);
/** @} */

/** Options of a Conv1d layer. All-zero means PyTorch's defaults. */
typedef struct nn_conv1d_opts {
  int64_t stride;      /**< 0 means 1 */
  int64_t padding;     /**< the same on both sides; for other padding, pad
                          the input or use ad_conv1d */
  bool same;           /**< padding='same' (stride 1 only); padding ignored */
  int64_t dilation;    /**< 0 means 1 */
  int64_t groups;      /**< 0 means 1; must divide both channel counts */
  bool no_bias;        /**< false: with bias */
  nn_init weight_init; /**< default PyTorch's: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
  nn_init bias_init;   /**< default the same bound */
  ad_dtype dtype;      /**< default AD_F32 */
} nn_conv1d_opts;

/** A 1-D convolution layer, PyTorch's nn.Conv1d: x [N, in, L] to [N, out,
 * Lo] through ad_conv1d, with weight [out, in/groups, kernel_size] and bias
 * [out] (PyTorch's layout and names, "weight" and "bias", so a state dict
 * loads unchanged). PyTorch's initialisation: both uniform within
 * 1/sqrt(fan_in), fan_in = in/groups * kernel_size (kaiming_uniform with a
 * = sqrt(5)), drawn from rng (weight first). opts may be NULL. Returns the
 * layer (free with nn_layer_free, or the model that adopts it), or NULL
 * with AD_ERR_ARG (a count < 1, groups not dividing the channels, a
 * negative stride, dilation or padding, one above 2^40, same with a stride
 * above 1, a kernel too large for a tensor, a bad initializer),
 * AD_ERR_DTYPE, AD_ERR_NULL (rng for a random init) or AD_ERR_OOM. Its
 * forward takes [N, in, L] or, as PyTorch, an unbatched [in, L] (giving
 * [out, Lo]); it refuses other inputs (AD_ERR_SHAPE naming the layer), and
 * otherwise reports ad_conv1d's errors (a kernel longer than the padded
 * input). */
NN_API nn_layer *nn_conv1d_new(ad_ctx *ctx, int64_t in, int64_t out, int64_t kernel_size,
                               ad_rng *rng, const nn_conv1d_opts *opts);

/** PyTorch's padding_mode of Conv1d / Conv2d: how the padding (explicit or
 * 'same') is filled. */
typedef enum nn_padding_mode {
  NN_PADDING_ZEROS = 0, /**< 'zeros', the default */
  NN_PADDING_REFLECT,   /**< 'reflect': x[1], x[0], x[1], ... (edge not repeated) */
  NN_PADDING_REPLICATE, /**< 'replicate': the edge repeated */
  NN_PADDING_CIRCULAR   /**< 'circular': x[n - p], ..., x[n - 1], x[0], ... */
} nn_padding_mode;

/** nn_conv1d_opts with padding_mode (the base struct has no room for it).
 * All-zero means PyTorch's defaults. */
typedef struct nn_conv1d_opts_ext {
  nn_conv1d_opts base;          /**< the options of nn_conv1d_new */
  nn_padding_mode padding_mode; /**< default NN_PADDING_ZEROS */
} nn_conv1d_opts_ext;

/** nn_conv2d_opts with padding_mode. All-zero means PyTorch's defaults. */
typedef struct nn_conv2d_opts_ext {
  nn_conv2d_opts base;          /**< the options of nn_conv2d_new */
  nn_padding_mode padding_mode; /**< default NN_PADDING_ZEROS; ConvTranspose2d: zeros only */
} nn_conv2d_opts_ext;

/** nn_conv1d_new, nn_conv2d_new and nn_conv_transpose2d_new with PyTorch's
 * padding_mode (nn_conv2d_new(..., &o) is nn_conv2d_new_ext with base o
 * and zeros, the same layer; opts may be NULL). With a mode other than
 * zeros, as PyTorch's _conv_forward, the forward pads the input in that
 * mode (F.pad with _reversed_padding_repeated_twice: padding on both sides
 * of each axis, or for 'same' the total dilation * (kernel - 1) split as
 * total / 2 before and the rest after) and convolves without padding, so
 * the gradient is the gather's and the convolution's, to any order. The
 * padded values are x's own (reflect and replicate as nn_reflection_pad1d_new
 * and nn_replication_pad1d_new). The padding mode adds ", padding_mode=reflect"
 * (etc.) to the layer's description, as PyTorch's repr. Errors as the base
 * constructors, and AD_ERR_ARG for a padding_mode outside the enum or,
 * for ConvTranspose2d, other than zeros (PyTorch refuses it there), or
 * for 'same' in a mode other than zeros whose padding (dilation x (kernel
 * - 1)) is above 2^40 (the ops' limit). The
 * forward refuses (AD_ERR_SHAPE naming the layer) reflect padding not
 * below the axis length, circular padding above it (it would wrap around
 * more than once) and replicate padding of an empty axis, as PyTorch.
 * Unlike PyTorch 1.13, whose F.pad refuses them, unbatched inputs work in
 * the circular mode too. @{ */
NN_API nn_layer *nn_conv1d_new_ext(ad_ctx *ctx, int64_t in, int64_t out, int64_t kernel_size,
                                   ad_rng *rng, const nn_conv1d_opts_ext *opts);
NN_API nn_layer *nn_conv2d_new_ext(ad_ctx *ctx, int64_t in, int64_t out, int64_t kh, int64_t kw,
                                   ad_rng *rng, const nn_conv2d_opts_ext *opts);
NN_API nn_layer *nn_conv_transpose2d_new_ext(ad_ctx *ctx, int64_t in, int64_t out, int64_t kh,
                                             int64_t kw, ad_rng *rng,
                                             const nn_conv2d_opts_ext *opts);
/** @} */
/** Options of a Conv3d or ConvTranspose3d layer. All-zero means PyTorch's
 * defaults. Triples are (depth, height, width). */
typedef struct nn_conv3d_opts {
  int64_t stride[3];         /**< 0 means 1 */
  int64_t padding[3];        /**< the same on both sides of each axis; for
                                other padding, pad the input or use ad_conv3d */
  bool same;                 /**< Conv3d: padding='same' (stride 1 only) */
  int64_t dilation[3];       /**< 0 means 1 */
  int64_t groups;            /**< 0 means 1; must divide both channel counts */
  int64_t output_padding[3]; /**< ConvTranspose3d only */
  bool no_bias;              /**< false: with bias */
  nn_init weight_init;       /**< default PyTorch's: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
  nn_init bias_init;         /**< default the same bound */
  ad_dtype dtype;            /**< default AD_F32 */
  /** Conv3d: PyTorch's padding_mode, how the padding (explicit or 'same')
   * is filled; ConvTranspose3d takes zeros only, as PyTorch's */
  nn_padding_mode padding_mode;
} nn_conv3d_opts;

/** A 3-D convolution layer, PyTorch's nn.Conv3d: x [N, in, D, H, W] (or,
 * as PyTorch, an unbatched [in, D, H, W]) to [N, out, Do, Ho, Wo] through
 * ad_conv3d, with weight [out, in/groups, kd, kh, kw] and bias [out]
 * (PyTorch's layout and names, "weight" and "bias", so a state dict loads
 * unchanged). PyTorch's initialisation: both uniform within
 * 1/sqrt(fan_in), fan_in = in/groups * kd * kh * kw (kaiming_uniform with
 * a = sqrt(5)), drawn from rng (weight first). opts may be NULL. Returns
 * the layer (free with nn_layer_free, or the model that adopts it), or
 * NULL with AD_ERR_ARG (a count < 1, groups not dividing the channels, a
 * negative stride, dilation or padding, one above 2^40, an output_padding,
 * same with a stride above 1, a kernel too large for a tensor, a bad
 * initializer, a padding_mode none of nn_padding_mode's, 'same' in
 * another mode than zeros whose padding, dilation x (kernel - 1), is above
 * 2^40), AD_ERR_DTYPE,
 * AD_ERR_NULL (rng for a random init) or AD_ERR_OOM. A padding_mode other
 * than zeros pads the input in that mode (PyTorch's F.pad, 'same' split
 * with the extra element after) and convolves without padding; the
 * forward then also refuses an input too short for the mode (AD_ERR_SHAPE:
 * reflect needs the padding below the axis length, circular at most it).
 * Its forward refuses other inputs (AD_ERR_SHAPE naming the layer) and
 * otherwise reports ad_conv3d's errors. */
NN_API nn_layer *nn_conv3d_new(ad_ctx *ctx, int64_t in, int64_t out, int64_t kd, int64_t kh,
                               int64_t kw, ad_rng *rng, const nn_conv3d_opts *opts);

/** A transposed 3-D convolution layer, PyTorch's nn.ConvTranspose3d,
 * through ad_conv_transpose3d: weight [in, out/groups, kd, kh, kw], bias
 * [out]; fan_in for the initialisation is out/groups * kd * kh * kw, as
 * PyTorch computes it. Otherwise as nn_conv3d_new; 'same', a padding_mode
 * other than zeros, and an output_padding not smaller than the stride or
 * the dilation are refused (AD_ERR_ARG). */
NN_API nn_layer *nn_conv_transpose3d_new(ad_ctx *ctx, int64_t in, int64_t out, int64_t kd,
                                         int64_t kh, int64_t kw, ad_rng *rng,
                                         const nn_conv3d_opts *opts);

/** Options of a ConvTranspose1d layer. All-zero means PyTorch's defaults. */
typedef struct nn_conv_transpose1d_opts {
  int64_t stride;         /**< 0 means 1 */
  int64_t padding;        /**< the same on both sides */
  int64_t output_padding; /**< smaller than the stride or the dilation */
  int64_t dilation;       /**< 0 means 1 */
  int64_t groups;         /**< 0 means 1; must divide both channel counts */
  bool no_bias;           /**< false: with bias */
  nn_init weight_init;    /**< default PyTorch's: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
  nn_init bias_init;      /**< default the same bound */
  ad_dtype dtype;         /**< default AD_F32 */
} nn_conv_transpose1d_opts;

/** A transposed 1-D convolution layer, PyTorch's nn.ConvTranspose1d: x [N,
 * in, L] or unbatched [in, L] to [N, out, Lo] through ad_conv_transpose1d,
 * with weight [in, out/groups, kernel_size] and bias [out] ("weight",
 * "bias"); both initialised uniform within 1/sqrt(fan_in), fan_in =
 * out/groups * kernel_size, as PyTorch. Errors as nn_conv1d_new's, and an
 * output_padding not smaller than the stride or the dilation
 * (AD_ERR_ARG); its forward reports ad_conv_transpose1d's. */
NN_API nn_layer *nn_conv_transpose1d_new(ad_ctx *ctx, int64_t in, int64_t out, int64_t kernel_size,
                                         ad_rng *rng, const nn_conv_transpose1d_opts *opts);

/** Options of a MaxPool1d or AvgPool1d layer. All-zero means PyTorch's
 * defaults. */
typedef struct nn_pool1d_opts {
  int64_t stride;   /**< 0 means the kernel */
  int64_t padding;  /**< on both sides; at most kernel / 2 */
  int64_t dilation; /**< MaxPool1d only (AvgPool1d refuses one above 1); 0 means 1 */
  bool ceil_mode;   /**< count a last, partial window */
  bool exclude_pad; /**< AvgPool1d only (MaxPool1d refuses it): PyTorch's
                         count_include_pad=False */
} nn_pool1d_opts;

/** Pooling layers over the last axis, PyTorch's nn.MaxPool1d and
 * nn.AvgPool1d: [N, C, L] (or unbatched [C, L]) to [N, C, Lo] through
 * ad_max_pool2d / ad_avg_pool2d on the [N, C, 1, L] view with a 1 x
 * kernel_size window, so the windows, divisors, ceil_mode rule and
 * gradients (any order) are those ops'. No parameters. opts may be NULL.
 * Returns the layer, or NULL with AD_ERR_ARG (a kernel, stride or dilation
 * outside [1, 2^30] (0 is the default for the last two), padding < 0 or
 * above kernel_size / 2, as PyTorch refuses, a dilation for AvgPool1d,
 * exclude_pad for MaxPool1d) or
 * AD_ERR_OOM. The forward refuses an input of another rank, with L = 0
 * (AD_ERR_SHAPE) or not float (AD_ERR_DTYPE), naming the layer and the
 * shape, and reports an output of L < 1 as the op's error after the 1-D
 * and 4-D shapes. @{ */
NN_API nn_layer *nn_max_pool1d_new(ad_ctx *ctx, int64_t kernel_size, const nn_pool1d_opts *opts);
NN_API nn_layer *nn_avg_pool1d_new(ad_ctx *ctx, int64_t kernel_size, const nn_pool1d_opts *opts);
/** @} */

/** Adaptive average pooling, PyTorch's nn.AdaptiveAvgPool1d(output_size)
 * ([N, C, L] or [C, L] to [N, C, output_size]) and
 * nn.AdaptiveAvgPool2d((oh, ow)) ([N, C, H, W] or [C, H, W] to [N, C, oh,
 * ow]). Output i of an axis of length L pooled to n is the mean of x[floor(i
 * L / n), ceil((i + 1) L / n)): PyTorch's windows, which overlap when n
 * does not divide L (n may exceed L). A composite of public ops, so it is
 * differentiable to any order: an output of 1 (on both axes) is
 * ad_global_avg_pool2d, bit for bit; n dividing L (on both axes) is
 * ad_avg_pool2d with kernel = stride = L / n; otherwise the windows
 * gathered along each axis n does not divide (ad_index_select), padded to
 * the longest with zeros (ad_where, so an inf or NaN reaches only the
 * outputs whose windows hold it, as in PyTorch), averaged by ad_avg_pool2d
 * and scaled by k / count (within an ulp or so of PyTorch's sum / count).
 * No parameters. Returns the layer, or NULL with AD_ERR_ARG (an output
 * size outside [1, 2^30]) or AD_ERR_OOM. The forward refuses an input of
 * another rank or with an empty pooled axis, or with a gathered axis above
 * 2^31 - 1 (AD_ERR_SHAPE), or not float (AD_ERR_DTYPE), naming the layer
 * and the shape. @{ */
NN_API nn_layer *nn_adaptive_avg_pool1d_new(ad_ctx *ctx, int64_t output_size);
NN_API nn_layer *nn_adaptive_avg_pool2d_new(ad_ctx *ctx, int64_t oh, int64_t ow);
/** @} */

/** 3-D pooling layers, PyTorch's nn.MaxPool3d and nn.AvgPool3d: kd x kh x
 * kw windows over the last three dims of [N, C, D, H, W] or unbatched [C,
 * D, H, W], through ad_max_pool3d / ad_avg_pool3d (opts as theirs, NULL
 * for the defaults: stride = kernel; PyTorch's count_include_pad=False is
 * exclude_pad, divisor_override 0 means none). No parameters. Returns the
 * layer, or NULL with AD_ERR_ARG (a kernel outside [1, 2^30], a stride or
 * dilation outside [0, 2^30] (0: the default), a padding < 0 or above half
 * the kernel, a dilation above 1 for AvgPool3d, exclude_pad or
 * divisor_override for MaxPool3d) or AD_ERR_OOM. The forward reports the
 * op's errors (a bad input rank, dtype or empty dim, an output < 1),
 * naming max_pool3d or avg_pool3d. @{ */
NN_API nn_layer *nn_max_pool3d_new(ad_ctx *ctx, int64_t kd, int64_t kh, int64_t kw,
                                   const ad_pool3d_opts *opts);
NN_API nn_layer *nn_avg_pool3d_new(ad_ctx *ctx, int64_t kd, int64_t kh, int64_t kw,
                                   const ad_pool3d_opts *opts);
/** @} */

/** Adaptive average pooling over the last three dims, PyTorch's
 * nn.AdaptiveAvgPool3d((od, oh, ow)): [N, C, D, H, W] or [C, D, H, W] to
 * [..., od, oh, ow], output i of an axis of length L pooled to n the mean
 * over x[floor(i L / n), ceil((i + 1) L / n)) (PyTorch's windows). A
 * composite: nn.AdaptiveAvgPool2d's way (see above) over (H, W) of every
 * depth slice, then over D, so differentiable to any order and within an
 * ulp or two of PyTorch's single sum / count. No parameters. Returns the
 * layer, or NULL with AD_ERR_ARG (an output size outside [1, 2^30]) or
 * AD_ERR_OOM. The forward refuses an input of another rank or with an
 * empty dim after the first (AD_ERR_SHAPE; PyTorch's rule: the first may
 * be 0, giving an empty output) or not float (AD_ERR_DTYPE), naming the
 * layer and the shape. */
NN_API nn_layer *nn_adaptive_avg_pool3d_new(ad_ctx *ctx, int64_t od, int64_t oh, int64_t ow);

/** Adaptive max pooling, PyTorch's nn.AdaptiveMaxPool1d(output_size)
 * ([N, C, L] or [C, L] to [N, C, output_size]) and
 * nn.AdaptiveMaxPool2d((oh, ow)) ([N, C, H, W] or [C, H, W] to [N, C, oh,
 * ow]) (return_indices: nn_max_pool_indices). The windows are adaptive
 * average pooling's (above): output i of an axis of length L pooled to n is the
 * maximum of x[floor(i L / n), ceil((i + 1) L / n)). The gradient goes to
 * each window's first maximum in row-major order or, if the window holds
 * a NaN (its value is then NaN), to its last NaN, as PyTorch's; windows
 * that overlap add up. A composite, so differentiable to any order:
 * ad_max_pool2d with kernel = stride = L / n where n divides L on both
 * axes, else the same after gathering each window (its last element
 * repeated to the longest window's length) with ad_index_select. No
 * parameters. Returns the layer, or NULL with AD_ERR_ARG (an output size
 * outside [1, 2^30]) or AD_ERR_OOM. The forward refuses an input of
 * another rank or with an empty pooled axis (AD_ERR_SHAPE) or not float
 * (AD_ERR_DTYPE), naming the layer and the shape. Kinds
 * "adaptive_max_pool1d", "adaptive_max_pool2d". @{ */
NN_API nn_layer *nn_adaptive_max_pool1d_new(ad_ctx *ctx, int64_t output_size);
NN_API nn_layer *nn_adaptive_max_pool2d_new(ad_ctx *ctx, int64_t oh, int64_t ow);
/** @} */

/** Adaptive max pooling over the last three dims, PyTorch's
 * nn.AdaptiveMaxPool3d((od, oh, ow)): [N, C, D, H, W] or [C, D, H, W] to
 * [..., od, oh, ow], output i of an axis of length L pooled to n the
 * maximum over x[floor(i L / n), ceil((i + 1) L / n)) (the windows of
 * nn_adaptive_avg_pool3d_new). The gradient goes to the first maximum in
 * (d, h, w) order or, in a window holding a NaN (whose value is then NaN),
 * to its last NaN, as PyTorch's; overlapping windows add up. A composite:
 * nn.AdaptiveMaxPool2d's way over (H, W) of every depth slice, then over
 * D, so differentiable to any order. No parameters. Returns the layer
 * (kind "adaptive_max_pool3d"), or NULL with AD_ERR_ARG (an output size
 * outside [1, 2^30]) or AD_ERR_OOM. The forward refuses an input of
 * another rank or with an empty dim after the first (AD_ERR_SHAPE) or not
 * float (AD_ERR_DTYPE), naming the layer and the shape. */
NN_API nn_layer *nn_adaptive_max_pool3d_new(ad_ctx *ctx, int64_t od, int64_t oh, int64_t ow);

/** The indices PyTorch's max pooling returns with return_indices=True, for
 * a max pooling layer l (nn_max_pool1d_new, nn_max_pool2d_new,
 * nn_max_pool3d_new, nn_adaptive_max_pool1d/2d/3d_new) and the input x its
 * forward takes: for each output, the flat index in its (n, c) plane (l,
 * h W + w or d H W + h W + w) of the element the output's gradient goes
 * to (the first maximum in row-major window order, or the last NaN). Shaped
 * like the layer's output, AD_I32 (PyTorch's are int64): a temporary of
 * the tape that no gradient flows through (ad_max_pool2d_indices and
 * ad_max_pool3d_indices for the non-adaptive layers). Returns NULL for a
 * NULL l; NULL with AD_ERR_NULL / AD_ERR_STATE / AD_ERR_ARG for a NULL,
 * freed or foreign x, AD_ERR_ARG when l is not a max pooling layer, the
 * forward's errors for a bad x, and AD_ERR_SHAPE for a plane of more than
 * 2^31 - 1 elements (the int32 limit). */
NN_API ad_tensor *nn_max_pool_indices(nn_layer *l, ad_tensor *x);

/** Options of a MaxUnpool1d/2d/3d layer, per spatial axis (1-D: [0]; 2-D:
 * h, w; 3-D: d, h, w). All-zero means PyTorch's defaults. */
typedef struct nn_max_unpool_opts {
  int64_t stride[3];  /**< 0: the kernel's */
  int64_t padding[3]; /**< >= 0 */
} nn_max_unpool_opts;

/** PyTorch's nn.MaxUnpool1d(kernel_size), MaxUnpool2d((kh, kw)) and
 * MaxUnpool3d((kd, kh, kw)) with stride (default the kernel) and padding
 * from opts (may be NULL): the partial inverse of max pooling. No
 * parameters. Returns the layer (kinds "max_unpool1d", "max_unpool2d",
 * "max_unpool3d") or NULL with AD_ERR_ARG (a kernel or stride outside [1,
 * 2^30], 0 meaning the default stride, a padding outside [0, 2^30]) or
 * AD_ERR_OOM. nn_layer_forward refuses to run it (AD_ERR_ARG: the indices
 * are needed); call nn_max_unpool_forward. @{ */
NN_API nn_layer *nn_max_unpool1d_new(ad_ctx *ctx, int64_t kernel_size,
                                     const nn_max_unpool_opts *opts);
NN_API nn_layer *nn_max_unpool2d_new(ad_ctx *ctx, int64_t kh, int64_t kw,
                                     const nn_max_unpool_opts *opts);
NN_API nn_layer *nn_max_unpool3d_new(ad_ctx *ctx, int64_t kd, int64_t kh, int64_t kw,
                                     const nn_max_unpool_opts *opts);
/** @} */

/** MaxUnpool's forward(input, indices, output_size), F.max_unpool1d/2d/3d:
 * x [N, C, *in] (or unbatched [C, *in]), float, and indices (AD_I32, x's
 * shape; nn_max_pool_indices gives them) to y [N, C, *out], zeros but for
 * y's plane element indices[i] = x[i]. out is output_size (NULL: PyTorch's
 * default (in - 1) stride - 2 padding + kernel per axis), which holds the
 * spatial lengths only (1, 2 or 3 of them, not PyTorch's optional N, C
 * prefix) and, as PyTorch checks, each strictly within a stride of the
 * default. Where several inputs of a plane name one element, the last
 * one's value is kept, as PyTorch's CPU kernel. A composite (ad_where,
 * ad_index_add), differentiable to any order: x's gradient is y's read at
 * the indices; an input overwritten by a later one of its plane gets 0
 * (PyTorch's backward gives it y's gradient at its index too). Returns the
 * output, a temporary of the tape, or NULL: for a NULL l; AD_ERR_ARG when
 * l is not a max unpooling layer or an index is outside [0, plane size)
 * (naming it, as PyTorch refuses); AD_ERR_NULL / AD_ERR_STATE / AD_ERR_ARG
 * for a NULL, freed or foreign x or indices; AD_ERR_SHAPE for x of the
 * wrong rank or with an empty dim other than N, indices of another shape,
 * a bad output_size or an output length < 1, an output of more than 2^31
 * - 1 elements in all or in a plane (the int32 scatter; even when N is 0);
 * AD_ERR_DTYPE for x not float or indices not AD_I32; AD_ERR_OOM. */
NN_API ad_tensor *nn_max_unpool_forward(nn_layer *l, ad_tensor *x, ad_tensor *indices,
                                        const int64_t *output_size);

/** Options of an LPPool1d/2d layer. All-zero means PyTorch's defaults. */
typedef struct nn_lp_pool_opts {
  int64_t stride[2]; /**< 1-D: [0]; 2-D: (h, w); 0: the kernel (PyTorch's stride=None) */
  bool ceil_mode;    /**< count a last, partial window */
} nn_lp_pool_opts;

/** Power-average pooling, PyTorch's nn.LPPool1d(norm_type, kernel_size)
 * ([N, C, L] or [C, L]) and nn.LPPool2d(norm_type, (kh, kw)) ([N, C, H,
 * W] or [C, H, W]) with stride and ceil_mode from opts (may be NULL): torch
 * 1.13's formula, (sign(a) relu(|a|) kh kw)^(1/p) with a the average
 * pooling (no padding) of x^p, so a window's p-norm for p >= 1 and
 * non-negative windows, NaN where PyTorch's is (a negative sum under a
 * fractional 1/p), and PyTorch's gradients, 0 for a window of zeros. A
 * composite of public ops, differentiable to any order. No parameters.
 * Returns the layer (kinds "lp_pool1d", "lp_pool2d") or NULL with
 * AD_ERR_ARG (norm_type 0, NaN or infinite (PyTorch's inf gives 1 for
 * every window, not the maximum), a kernel or stride outside [1, 2^30], 0
 * meaning the default stride) or AD_ERR_OOM. The forward refuses an input
 * of another rank or with an empty pooled axis (AD_ERR_SHAPE) or not float
 * (AD_ERR_DTYPE), naming the layer, and reports an output length < 1 as
 * avg_pool2d's error. @{ */
NN_API nn_layer *nn_lp_pool1d_new(ad_ctx *ctx, double norm_type, int64_t kernel_size,
                                  const nn_lp_pool_opts *opts);
NN_API nn_layer *nn_lp_pool2d_new(ad_ctx *ctx, double norm_type, int64_t kh, int64_t kw,
                                  const nn_lp_pool_opts *opts);
/** @} */

/* Resampling, padding and channel-dropout layers for image models
 * (layers_resample.c): composites of public ops (ad_index_select,
 * ad_resample_axis, ad_transpose, ad_reshape, ad_permute, ad_pad,
 * ad_narrow, ad_where, ad_mul), so every gradient is the tape's and
 * differentiable to any order. None has parameters; each returns the layer (free with
 * nn_layer_free, or the model that adopts it) or NULL with AD_ERR_ARG
 * (bad settings, named with the layer's kind) or AD_ERR_OOM. Each forward
 * refuses an input of another rank (AD_ERR_SHAPE) or, where it computes,
 * not float (AD_ERR_DTYPE), naming the layer and the shape. */

/** Interpolation modes of nn_upsample_new (PyTorch's mode strings). */
typedef enum nn_upsample_mode {
  NN_UPSAMPLE_NEAREST = 0,   /**< 'nearest': source floor(i * s), s below */
  NN_UPSAMPLE_NEAREST_EXACT, /**< 'nearest-exact': floor((i + 0.5) * s) */
  NN_UPSAMPLE_LINEAR,        /**< 'linear', [N, C, L] inputs only */
  NN_UPSAMPLE_BILINEAR,      /**< 'bilinear', [N, C, H, W] inputs only */
  NN_UPSAMPLE_BICUBIC,       /**< 'bicubic', [N, C, H, W] inputs only */
  NN_UPSAMPLE_TRILINEAR      /**< 'trilinear', [N, C, D, H, W] inputs only */
} nn_upsample_mode;

/** Options of nn_upsample_new; give size or scale_factor, not both. The
 * zero value of the rest is PyTorch's default (mode 'nearest'). */
typedef struct nn_upsample_opts {
  nn_upsample_mode mode;       /**< default NN_UPSAMPLE_NEAREST */
  int64_t size[3];             /**< output (L), (H, W) or (D, H, W); one entry: all axes */
  double scale_factor[3];      /**< of (L), (H, W) or (D, H, W); one entry: all axes */
  bool align_corners;          /**< linear modes only */
  bool recompute_scale_factor; /**< with scale_factor: map by in / out */
} nn_upsample_opts;

/** PyTorch 1.13's nn.Upsample (F.interpolate): [N, C, L], [N, C, H, W] or
 * [N, C, D, H, W] (no unbatched input, as PyTorch's) to the output size,
 * each spatial axis resampled in turn (the last first). size and
 * scale_factor take one entry (for every axis; the rest 0) or one per
 * spatial axis (trailing zeros end the list). The output length of an
 * axis of length in is size, or floor(in * scale_factor). Source coordinates use s = 1 /
 * scale_factor when one is given (and recompute_scale_factor is false),
 * else in / out, as PyTorch's kernels: nearest takes floor(i * s) and
 * nearest-exact floor((i + 0.5) * s), both in float and capped at in - 1
 * (so 'nearest' is not symmetric: 5 -> 8 picks 0 0 1 1 2 3 3 4); linear
 * modes take x = s (i + 0.5) - 0.5 clamped at 0 (align_corners false) or
 * x = i (in - 1) / (out - 1) (true), and blend x[floor x] and the next
 * element (the last repeats) with weights 1 - frac and frac, computed in
 * the input's dtype. In the linear modes (linear, bilinear, trilinear) an
 * axis whose length is unchanged is
 * left as it is (PyTorch's kernels blend x[i] 1 + x[i] 0 there, the same
 * for finite x; an infinite element becomes NaN in PyTorch and stays
 * infinite here);
 * nearest keeps the floor rule for every length, as PyTorch's forward
 * does (scale_factor 1.05 maps 10 to 10 reading 0 0 1 .. 8; its backward
 * differs), except on a 4-D or 5-D input of one channel, which PyTorch
 * runs through its channels-last kernel: there a kept length is copied and
 * a doubled one reads i / 2, as that kernel does; an axis nearest reads
 * unchanged is left as it is. In these modes an input with no axis changed is returned
 * itself. Bicubic takes x = s (i + 0.5) - 0.5 without the clamp at 0 (or x = i
 * (in - 1) / (out - 1)), k = floor x (floorf, as PyTorch's) and t = x - k,
 * and sums x[k - 1 .. k + 2] (indices clamped to [0, in - 1]; the weights
 * are not renormalised) times Keys' cubic convolution weights with A =
 * -0.75 at distances 1 + t, t, 1 - t, 2 - t, in the input's dtype; it
 * overshoots (values are not clamped) and, as PyTorch's, resamples an
 * axis of unchanged length too (an inf spreads NaN to its neighbours);
 * its gradient is the forward's, where PyTorch 1.13's backward copies the
 * output's gradient when no axis changes length (scale_factor 1.05 on a
 * [7, 3] image: PyTorch's forward resamples, its backward does not).
 * Trilinear is linear on each of D, H, W. Nearest is ad_index_select along
 * the axis (the gradient adds up at the source); linear and bicubic are
 * ad_resample_axis along it, two taps and four, with constant weights (one
 * op an axis; its gradient adds in PyTorch's order). Errors
 * when made (AD_ERR_ARG): both or neither of size and scale_factor, a size
 * outside [1, 2^31 - 1], a scale factor not finite and > 0, an unknown
 * mode, align_corners with a nearest mode, recompute_scale_factor with a
 * size, an entry after a zero one. The forward refuses (AD_ERR_SHAPE) a
 * rank other than 3, 4 or 5 (3 for linear, 4 for bilinear and bicubic, 5
 * for trilinear), a count of sizes or scale factors other than one or the
 * number of spatial axes (unless all are equal), an empty spatial axis or
 * one above 2^31 - 1, and an output length outside [1, 2^31 - 1]. Kind
 * "upsample". */
NN_API nn_layer *nn_upsample_new(ad_ctx *ctx, const nn_upsample_opts *opts);

/** PyTorch's nn.PixelShuffle(r): [N, C r^2, H, W] (or unbatched [C r^2,
 * H, W]) to [N, C, H r, W r], out[n, c, h r + i, w r + j] = x[n, c r^2 +
 * i r + j, h, w]; and nn.PixelUnshuffle(r), its inverse. Reshapes and one
 * permute. r in [1, 2^20] (AD_ERR_ARG); the forward refuses (AD_ERR_SHAPE)
 * a channel count not divisible by r^2 (shuffle) or H, W not divisible by
 * r (unshuffle). Kinds "pixel_shuffle", "pixel_unshuffle". @{ */
NN_API nn_layer *nn_pixel_shuffle_new(ad_ctx *ctx, int64_t upscale_factor);
NN_API nn_layer *nn_pixel_unshuffle_new(ad_ctx *ctx, int64_t downscale_factor);
/** @} */

/** Options of nn_unfold and nn_fold (PyTorch's F.unfold / F.fold, nn.Unfold
 * / nn.Fold), each a pair (height, width). kernel_size has no default;
 * the zero value of the others is PyTorch's default (a zero dilation or
 * stride means 1, padding 0). */
typedef struct nn_fold_opts {
  int64_t kernel_size[2]; /**< in [1, 2^31 - 1] */
  int64_t dilation[2];    /**< in [0, 2^31 - 1], 0 means 1 */
  int64_t padding[2];     /**< in [0, 2^31 - 1] (zeros on both sides) */
  int64_t stride[2];      /**< in [0, 2^31 - 1], 0 means 1 */
} nn_fold_opts;

/** PyTorch's F.unfold (im2col): the sliding kh x kw blocks of x [N, C, H,
 * W] (or unbatched [C, H, W]), zero-padded by padding, as the columns of
 * [N, C kh kw, L] ([C kh kw, L]), row c kh kw + i kw + j, column l = bh
 * ow + bw (block (bh, bw) of the oh x ow, oh = floor((H + 2 ph - dh (kh -
 * 1) - 1) / sh) + 1) holding x[n, c, bh sh + i dh - ph, bw sw + j dw -
 * pw], PyTorch's layout exactly. A tape composite (zero pads, one gather,
 * ad_index_select), so its gradient, a fold, is differentiable to any
 * order. Returns a tape tensor, or NULL with AD_ERR_NULL (x or opts),
 * AD_ERR_ARG (an option outside its range), AD_ERR_DTYPE (x not float),
 * AD_ERR_SHAPE (x not 3-D or 4-D, C, H or W 0, no whole block (PyTorch's
 * "calculated shape of the array of sliding blocks ... must be at least
 * one"), a padded plane above 2^31 - 1 elements) and the errors of an op's
 * input for x (freed, of another context), naming "unfold". */
NN_API ad_tensor *nn_unfold(ad_ctx *ctx, ad_tensor *x, const nn_fold_opts *opts);

/** PyTorch's F.fold (col2im), the adjoint of nn_unfold: x [N, C kh kw, L]
 * (or unbatched [C kh kw, L]) summed into [N, C, H, W] ([C, H, W]),
 * output_size (H, W), each column's block added at its place, overlaps
 * summed, the parts in the padding dropped. A tape composite (one
 * scatter-add, ad_index_add, and a narrow), differentiable to any order.
 * Returns a tape tensor, or NULL with nn_unfold's errors and AD_ERR_NULL
 * for output_size, AD_ERR_ARG for an output size outside [1, 2^31 - 1],
 * AD_ERR_SHAPE for x not 2-D or 3-D, a dim C kh kw not divisible by kh kw
 * or 0, and L not the number of blocks of output_size (PyTorch's
 * messages' facts), naming "fold". */
NN_API ad_tensor *nn_fold(ad_ctx *ctx, ad_tensor *x, const int64_t output_size[2],
                          const nn_fold_opts *opts);

/** nn_unfold and nn_fold as layers, PyTorch's nn.Unfold and nn.Fold, kinds
 * "unfold" and "fold" (no parameters). The options are checked here
 * (NULL with AD_ERR_NULL or AD_ERR_ARG as nn_unfold's and nn_fold's), the
 * input in the forward (the same errors, naming the layer). @{ */
NN_API nn_layer *nn_unfold_new(ad_ctx *ctx, const nn_fold_opts *opts);
NN_API nn_layer *nn_fold_new(ad_ctx *ctx, const int64_t output_size[2], const nn_fold_opts *opts);
/** @} */

/** PyTorch's F.bilinear: y[..., o] = sum_ij x1[..., i] weight[o, i, j]
 * x2[..., j] + bias[o], x1 [..., in1] and x2 [..., in2] with the same
 * leading dims (any number, none for unbatched 1-D inputs), weight [out,
 * in1, in2], bias [out] or NULL for none; y [..., out]. A composite (one
 * ad_matmul, a product and a sum), differentiable to any order in every
 * input. Returns a tape tensor, or NULL with AD_ERR_NULL (x1, x2 or
 * weight), AD_ERR_DTYPE (not float, or dtypes that differ), AD_ERR_SHAPE
 * (leading dims that differ, as PyTorch's "input batch dimensions do not
 * match"; weight not 3-D or not [out, in1, in2]; bias not [out]) and the
 * errors of an op's input (freed, another context's), naming "bilinear". */
NN_API ad_tensor *nn_bilinear(ad_ctx *ctx, ad_tensor *x1, ad_tensor *x2, ad_tensor *weight,
                              ad_tensor *bias);

/** PyTorch's nn.Bilinear(in1_features, in2_features, out_features, bias):
 * parameters "weight" [out, in1, in2] and, with bias, "bias" [out], of
 * dtype (AD_F32 or AD_F64), both drawn from rng uniform in (-1 /
 * sqrt(in1), 1 / sqrt(in1)) as PyTorch's reset_parameters (other draws:
 * the engine's generator). Kind "bilinear". It takes two inputs: run it
 * with nn_bilinear_forward; nn_layer_forward and a Sequential refuse it
 * (AD_ERR_ARG). NULL with AD_ERR_ARG (a size < 1: PyTorch fails on
 * in1_features 0), AD_ERR_DTYPE, AD_ERR_NULL (rng) or AD_ERR_OOM. */
NN_API nn_layer *nn_bilinear_new(ad_ctx *ctx, int64_t in1_features, int64_t in2_features,
                                 int64_t out_features, bool bias, ad_dtype dtype, ad_rng *rng);

/** Runs an nn_bilinear_new layer on x1 and x2: nn_bilinear with its
 * parameters, the errors naming the layer. NULL with AD_ERR_ARG when l is
 * not a Bilinear; NULL for a NULL l. */
NN_API ad_tensor *nn_bilinear_forward(nn_layer *l, ad_tensor *x1, ad_tensor *x2);

/** PyTorch's F.glu(x, dim): x split in halves a, b along dim (negative
 * counts from the end), a * sigmoid(b), of x's shape with dim halved. A
 * composite (two narrows, ad_sigmoid, ad_mul), differentiable to any
 * order, PyTorch's values and gradients. Returns a tape tensor, or NULL
 * with AD_ERR_NULL, AD_ERR_DTYPE (x not float), AD_ERR_SHAPE (a 0-d x,
 * PyTorch's "glu does not support scalars"; an odd length along dim,
 * PyTorch's "Halving dimension must be even"), AD_ERR_ARG (dim outside
 * -ndim..ndim-1) and the errors of an op's input, naming "glu". */
NN_API ad_tensor *nn_glu(ad_ctx *ctx, ad_tensor *x, int dim);

/** nn_glu as a layer, PyTorch's nn.GLU(dim) (its default dim is -1), kind
 * "glu". Any dim is taken here; the forward checks it against the input
 * (the errors of nn_glu, naming the layer). NULL for a NULL ctx or on
 * OOM. */
NN_API nn_layer *nn_glu_new(ad_ctx *ctx, int dim);

/** PyTorch 1.13's F.cosine_similarity(x1, x2, dim, eps): x1 and x2
 * broadcast to one shape (NumPy rules, at least 1 dim), then, with s1 =
 * sum(x1^2, dim) and s2 likewise, sum((x1 / sqrt(max(s1, eps^2))) * (x2 /
 * sqrt(max(s2, eps^2))), dim): 1.13's formula (each vector divided by its
 * own clamped norm first; earlier versions clamped the product of the
 * norms), with its gradient: the clamp is made under no_grad, so where s
 * < eps^2 the value is eps but the gradient flows through s as if
 * unclamped (0 for a zero vector, not NaN). PyTorch's defaults: dim 1,
 * eps 1e-8. The result has the common shape without dim. One op
 * (ad_cosine_similarity; inputs of another shape broadcast by ad_expand
 * first), differentiable to any order. Returns a tape tensor, or NULL with
 * AD_ERR_NULL, AD_ERR_DTYPE (not float, dtypes that differ), AD_ERR_SHAPE
 * (shapes that do not broadcast, 0-d), AD_ERR_ARG (dim outside
 * -ndim..ndim-1 of the common shape, eps negative or not finite, or for
 * f32 inputs beyond float32's range, which PyTorch refuses to convert) and
 * the errors of an op's input, naming "cosine_similarity". */
NN_API ad_tensor *nn_cosine_similarity(ad_ctx *ctx, ad_tensor *x1, ad_tensor *x2, int dim,
                                       double eps);

/** PyTorch's F.pairwise_distance(x1, x2, p, eps, keepdim): the p-norm of x1
 * - x2 + eps over the last dim of the broadcast shape (eps added to the
 * difference, as PyTorch), that dim kept as 1 with keepdim; 1-D inputs
 * give a 0-d result. The gradient is 0 where the norm is 0, and for p < 1
 * at an element where x1 - x2 + eps is 0, as PyTorch's (the helper
 * nn_triplet_margin_loss uses); where the norm is 0 the second
 * derivatives are 0 too, PyTorch's NaN. For p other than 1 and 2 a row
 * whose largest |difference| m is below 1 is computed as m ||d / m||_p,
 * so its gradient and second derivative stay right where |d|^p
 * underflows or sum^(1/p - 2) overflows (float32, p 30, |d| 0.04:
 * PyTorch's gradient is inf, here the exact 0.51; p 3, |d| 1e-23:
 * PyTorch's is 0, its norm 0, here +-1); a |d|^p that overflows gives
 * an infinite distance, as PyTorch's. PyTorch's
 * defaults: p 2, eps 1e-6, keepdim false. Returns a tape tensor, or NULL
 * with nn_cosine_similarity's errors (AD_ERR_ARG for p not positive and
 * finite: PyTorch also takes p 0 and inf, not here), naming
 * "pairwise_distance". */
NN_API ad_tensor *nn_pairwise_distance(ad_ctx *ctx, ad_tensor *x1, ad_tensor *x2, double p,
                                       double eps, bool keepdim);

/** nn_cosine_similarity and nn_pairwise_distance as layers, PyTorch's
 * nn.CosineSimilarity(dim, eps) and nn.PairwiseDistance(p, eps, keepdim),
 * kinds "cosine_similarity" and "pairwise_distance" (no parameters). They
 * take two inputs: run them with nn_layer_forward2 (nn_layer_forward and a
 * Sequential refuse them, AD_ERR_ARG). NULL with AD_ERR_ARG for eps or p
 * as the functions refuse them. @{ */
NN_API nn_layer *nn_cosine_similarity_new(ad_ctx *ctx, int dim, double eps);
NN_API nn_layer *nn_pairwise_distance_new(ad_ctx *ctx, double p, double eps, bool keepdim);
/** @} */

/** Runs a layer of two inputs (cosine_similarity, pairwise_distance,
 * bilinear: nn_bilinear_forward) on x1 and x2, the errors naming the
 * layer. NULL with AD_ERR_ARG for a layer of another kind; NULL for a NULL
 * l. */
NN_API ad_tensor *nn_layer_forward2(nn_layer *l, ad_tensor *x1, ad_tensor *x2);

/** PyTorch's shrinking and thresholding activations, elementwise (one op
 * each: ad_softshrink, ad_hardshrink, ad_threshold; differentiable to any order),
 * with PyTorch's values and slopes, also at the kinks:
 *   nn_softshrink(x, lambd)  x - lambd above lambd, x + lambd below
 *                            -lambd, else 0; slope 1 outside [-lambd,
 *                            lambd], 0 on it (kinks included); lambd >= 0
 *                            (PyTorch's "lambda must be greater or equal
 *                            to 0"); default 0.5
 *   nn_hardshrink(x, lambd)  x outside [-lambd, lambd], else 0; slope 0 on
 *                            it (kinks included); any lambd but NaN (a
 *                            negative one is the identity, as PyTorch's);
 *                            default 0.5
 *   nn_threshold(x, threshold, value)  x above threshold, else value;
 *                            slope 0 at and below threshold (threshold
 *                            not NaN; value any)
 *   NaN x                    softshrink gives 0 with slope 0 (PyTorch's
 *                            vectorized kernel: its scalar code, used for
 *                            the last elements of a row, has slope 1);
 *                            hardshrink NaN with slope 1 (its scalar
 *                            code; the vectorized one has 0); threshold
 *                            NaN with slope 1 (both)
 * For an f32 x, a finite lambd, threshold or value beyond float32's range
 * is refused (AD_ERR_ARG), as PyTorch refuses to convert it.
 * nn.Tanhshrink is NN_ACT_TANHSHRINK (nn_activate, nn_activation_new).
 * Returns a tape tensor of x's shape, or NULL with AD_ERR_NULL,
 * AD_ERR_DTYPE (x not float), AD_ERR_ARG (the settings above) and the
 * errors of an op's input, naming the function. @{ */
NN_API ad_tensor *nn_softshrink(ad_ctx *ctx, ad_tensor *x, double lambd);
NN_API ad_tensor *nn_hardshrink(ad_ctx *ctx, ad_tensor *x, double lambd);
NN_API ad_tensor *nn_threshold(ad_ctx *ctx, ad_tensor *x, double threshold, double value);
/** @} */

/** PyTorch's F.softmin(x, dim): softmax(-x) along dim (negative counts
 * from the end; F.softmin's implicit dim is not offered: give it), and
 * nn.Softmax2d: softmax over the channels, dim -3 of a 3-D [C, H, W] or
 * 4-D [N, C, H, W] input (other ranks AD_ERR_SHAPE, as PyTorch's "requires
 * a 3D or 4D tensor"). Compositions of ad_softmax. NULL with AD_ERR_NULL,
 * AD_ERR_DTYPE, AD_ERR_ARG (dim out of range) or AD_ERR_SHAPE, naming the
 * function. @{ */
NN_API ad_tensor *nn_softmin(ad_ctx *ctx, ad_tensor *x, int dim);
NN_API ad_tensor *nn_softmax2d(ad_ctx *ctx, ad_tensor *x);
/** @} */

/** The functions above as layers, PyTorch's nn.Softshrink(lambd),
 * nn.Hardshrink(lambd), nn.Threshold(threshold, value), nn.Softmin(dim)
 * and nn.Softmax2d(), kinds "softshrink", "hardshrink", "threshold",
 * "softmin", "softmax2d". The settings are checked here (NULL with
 * AD_ERR_ARG as the functions refuse them), the input in the forward
 * (the functions' errors, naming the layer). @{ */
NN_API nn_layer *nn_softshrink_new(ad_ctx *ctx, double lambd);
NN_API nn_layer *nn_hardshrink_new(ad_ctx *ctx, double lambd);
NN_API nn_layer *nn_threshold_new(ad_ctx *ctx, double threshold, double value);
NN_API nn_layer *nn_softmin_new(ad_ctx *ctx, int dim);
NN_API nn_layer *nn_softmax2d_new(ad_ctx *ctx);
/** @} */

/** PyTorch's F.rrelu(x, lower, upper, training): in training each element
 * x <= 0 is multiplied by a slope drawn uniform in [lower, upper) from rng
 * (row-major, one draw per such element; x > 0 and NaN pass with slope
 * 1); otherwise (evaluation) leaky_relu with slope (lower + upper) / 2
 * (ad_leaky_relu: slope at 0 that value, as PyTorch's). The gradient is
 * the slope used; a call that fails takes no draws. The draws come from
 * the engine's generator, so the
 * slopes differ from torch's for one seed (the same distribution). rng
 * is needed in training only. Returns a tape tensor, or NULL with
 * AD_ERR_NULL (x; rng in training), AD_ERR_DTYPE (x not float), AD_ERR_ARG
 * (an rng never seeded, in training; lower or upper not finite, lower >
 * upper: PyTorch's "Lower bound should be less than or equal to the upper
 * bound"; for an f32 x, a
 * bound beyond float32's range, which PyTorch cannot convert) and the
 * errors of an op's input, naming "rrelu". */
NN_API ad_tensor *nn_rrelu(ad_ctx *ctx, ad_tensor *x, double lower, double upper, bool training,
                           ad_rng *rng);

/** nn_rrelu as a layer, PyTorch's nn.RReLU(lower, upper) (its defaults 1/8
 * and 1/3), kind "rrelu": training mode draws from the layer's own
 * generator, seeded with seed (each training forward continues its
 * stream); evaluation mode uses the mean slope. NULL with AD_ERR_ARG for
 * the bounds nn_rrelu refuses. */
NN_API nn_layer *nn_rrelu_new(ad_ctx *ctx, double lower, double upper, uint64_t seed);

/** PyTorch 1.13's F.local_response_norm(x, size, alpha, beta, k): x [N, C,
 * ...] (at least 3-D) divided by (k + alpha / size * sum of x^2 over the
 * channel window c - size/2 .. c + (size-1)/2)^beta, the window zero-
 * padded at the ends and always divided by size (PyTorch's avg_pool with
 * count_include_pad). PyTorch's defaults: alpha 1e-4, beta 0.75, k 1. A
 * composite (size narrows of the padded squares), differentiable to any
 * order. Returns a tape tensor, or NULL with AD_ERR_NULL, AD_ERR_DTYPE,
 * AD_ERR_SHAPE (fewer than 3 dims), AD_ERR_ARG (size outside [1, 2^16],
 * alpha, beta or k not finite) and the errors of an op's input, naming
 * "local_response_norm". */
NN_API ad_tensor *nn_local_response_norm(ad_ctx *ctx, ad_tensor *x, int64_t size, double alpha,
                                         double beta, double k);

/** nn_local_response_norm as a layer, PyTorch's nn.LocalResponseNorm(size,
 * alpha, beta, k), kind "local_response_norm" (no parameters). NULL with
 * AD_ERR_ARG for the settings nn_local_response_norm refuses. */
NN_API nn_layer *nn_local_response_norm_new(ad_ctx *ctx, int64_t size, double alpha, double beta,
                                            double k);

/** Padding layers, PyTorch's nn.ZeroPad2d, nn.ConstantPad1d/2d,
 * nn.ReflectionPad1d/2d and nn.ReplicationPad1d/2d. pad is (left, right)
 * for the 1-D layers, which take [N, C, L] or [C, L], and (left, right,
 * top, bottom) for the 2-D layers, which take [N, C, H, W] or [C, H, W].
 * A negative amount crops, as in PyTorch. Constant padding is ad_pad and
 * ad_narrow, then, for value != 0, ad_where with a constant mask (the
 * inner values are x's bits); reflection (x[1], x[0], x[1], ...: the edge
 * not repeated) and replication (the edge repeated) are ad_index_select
 * with the reflected or clamped indices, so gradients add up at the
 * positions read more than once, as PyTorch's. Amounts are limited to
 * +-2^31 - 1 (AD_ERR_ARG). The forward refuses (AD_ERR_SHAPE) an output
 * length below 0 (constant) or 1 (the others), a crop longer than the
 * axis (constant), a reflection amount not
 * below the axis length, an empty axis (replication, as PyTorch), and an
 * axis above 2^31 - 1 (the others); and (AD_ERR_ARG) for an f32 input a
 * finite constant value beyond float32's range, which PyTorch refuses to
 * convert. Kinds
 * "zero_pad2d", "constant_pad1d", ..., "replication_pad2d". @{ */
NN_API nn_layer *nn_zero_pad2d_new(ad_ctx *ctx, const int64_t pad[4]);
NN_API nn_layer *nn_constant_pad1d_new(ad_ctx *ctx, const int64_t pad[2], double value);
NN_API nn_layer *nn_constant_pad2d_new(ad_ctx *ctx, const int64_t pad[4], double value);
NN_API nn_layer *nn_reflection_pad1d_new(ad_ctx *ctx, const int64_t pad[2]);
NN_API nn_layer *nn_reflection_pad2d_new(ad_ctx *ctx, const int64_t pad[4]);
NN_API nn_layer *nn_replication_pad1d_new(ad_ctx *ctx, const int64_t pad[2]);
NN_API nn_layer *nn_replication_pad2d_new(ad_ctx *ctx, const int64_t pad[4]);
/** @} */

/** PyTorch's nn.ConstantPad3d, nn.ReflectionPad3d and nn.ReplicationPad3d:
 * the padding layers above for x [N, C, D, H, W] or [C, D, H, W], pad
 * (left, right, top, bottom, front, back): pad[0..1] for W, pad[2..3] for
 * H, pad[4..5] for D. The same rules, limits and errors (AD_ERR_NULL for
 * pad NULL, AD_ERR_ARG, the forward's AD_ERR_SHAPE) and the same
 * gradients. Kinds "constant_pad3d", "reflection_pad3d",
 * "replication_pad3d". @{ */
NN_API nn_layer *nn_constant_pad3d_new(ad_ctx *ctx, const int64_t pad[6], double value);
NN_API nn_layer *nn_reflection_pad3d_new(ad_ctx *ctx, const int64_t pad[6]);
NN_API nn_layer *nn_replication_pad3d_new(ad_ctx *ctx, const int64_t pad[6]);
/** @} */

/** Channel dropout, PyTorch's nn.Dropout1d and nn.Dropout2d: in training
 * mode each channel (every element of x[n, c]) is zeroed with probability
 * p and the rest scaled by 1 / (1 - p); in evaluation mode, and for p =
 * 0, the identity. Dropout1d takes [N, C, L] or [C, L]; Dropout2d takes
 * [N, C, H, W] and, as PyTorch 1.13's (which warns), a 3-D input as [N, C,
 * L] (Dropout1d's behaviour, not an unbatched [C, H, W]); other ranks,
 * which PyTorch 1.13's Dropout2d takes with a deprecation warning, are
 * refused (AD_ERR_SHAPE naming the layer), as are Dropout1d's other
 * ranks (as PyTorch). The mask is that
 * of nn_dropout_new (same seed, same draws) on the leading [N, C] (or [C])
 * elements, row-major, broadcast over the rest. p in [0, 1), else
 * AD_ERR_ARG. Kinds "dropout1d", "dropout2d". @{ */
NN_API nn_layer *nn_dropout1d_new(ad_ctx *ctx, double p, uint64_t seed);
NN_API nn_layer *nn_dropout2d_new(ad_ctx *ctx, double p, uint64_t seed);
/** @} */

/** Channel dropout, PyTorch's nn.Dropout3d: nn_dropout2d_new's layer
 * (above) for x [N, C, D, H, W], whose mask is drawn on [N, C], or, as
 * PyTorch 1.13, an unbatched [C, D, H, W], whose mask is drawn on [C]
 * (the draws of a batch of one). Other ranks, which PyTorch 1.13 takes
 * with a deprecation warning as unbatched, are refused (AD_ERR_SHAPE
 * naming the layer). p in [0, 1), else AD_ERR_ARG; NULL ctx gives NULL.
 * Kind "dropout3d". */
NN_API nn_layer *nn_dropout3d_new(ad_ctx *ctx, double p, uint64_t seed);

/** PyTorch's nn.Identity: returns its input (kind "identity"). */
NN_API nn_layer *nn_identity_new(ad_ctx *ctx);

/** PyTorch's nn.Unflatten(dim, sizes): a view that replaces axis dim
 * (negative counts from the end) by n axes of the given sizes, whose
 * product must be its length (one entry may be -1, inferred). n in [1,
 * AD_MAX_DIMS] and sizes >= 1 or -1 (AD_ERR_ARG, AD_ERR_NULL for sizes);
 * the forward refuses (AD_ERR_SHAPE) dim out of range, sizes that do not
 * match and a result of more than AD_MAX_DIMS dims. Kind "unflatten". */
NN_API nn_layer *nn_unflatten_new(ad_ctx *ctx, int dim, int n, const int64_t *sizes);

/** Recurrent cells, PyTorch's nn.RNN (tanh or relu), nn.LSTM and nn.GRU. */
typedef enum nn_rnn_cell {
  NN_RNN_TANH = 0, /* h' = tanh(W_ih x + b_ih + W_hh h + b_hh) */
  NN_RNN_RELU,     /**< h' = relu(W_ih x + b_ih + W_hh h + b_hh) */
  NN_RNN_LSTM,     /**< gates i, f, g, o (below) */
  NN_RNN_GRU       /* gates r, z, n (below) */
} nn_rnn_cell;

/** Options of a recurrent layer. All-zero means PyTorch's defaults. */
typedef struct nn_rnn_opts {
  int num_layers;     /**< stacked layers; 0 means 1 */
  bool no_bias;       /**< bias=False: no bias_ih / bias_hh */
  bool batch_first;   /**< input and output [N, T, F]; default [T, N, F] */
  double dropout;     /**< in [0, 1): inverted dropout on the outputs of every
                         layer but the last, in training mode only */
  uint64_t seed;      /**< of the dropout masks (an ad_rng seeded once) */
  ad_dtype dtype;     /**< of the parameters and the input; default AD_F32 */
  bool composed;      /**< LSTM and GRU steps composed of the engine's ops, so
                         graph dumps show every gate; default: one fused op
                         for the whole sequence (ad_lstm_seq, ad_gru_seq), same
                         values */
  bool per_step;      /**< LSTM and GRU (without composed): one fused cell op
                         per step (ad_lstm_cell, ad_gru_cell) in that step's
                         scope, so graph dumps show the recurrence step by
                         step; same values, slower than the default */
  bool bidirectional; /**< bidirectional=True: each layer also runs over
                           the reversed sequence, outputs 2 H wide, states
                           num_layers*2 (nn_rnn_new, nn_rnn_forward).
                           Added last; the struct's size is unchanged */
} nn_rnn_opts;

/** A recurrent layer with PyTorch's equations, gate order, parameter names
 * and layouts, so a PyTorch state dict loads unchanged. Per layer k (input
 * size input_size for k = 0, hidden_size above) and step t, with x the
 * layer's input at t and h, c its state from t - 1 (* is elementwise):
 *   RNN   h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)       (G = 1)
 *   LSTM  [i, f, g, o] = x W_ih^T + b_ih + h W_hh^T + b_hh   (G = 4)
 *         i, f, o through sigmoid, g through tanh;
 *         c' = f * c + i * g;  h' = o * tanh(c')
 *   GRU   [r, z, n] rows of W_ih, W_hh, b_ih, b_hh           (G = 3)
 *         r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
 *         z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
 *         n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
 *         h' = (1 - z) * n + z * h
 * Parameters, in PyTorch's order: "weight_ih_l<k>" [G*H, in_k],
 * "weight_hh_l<k>" [G*H, H], "bias_ih_l<k>" [G*H], "bias_hh_l<k>" [G*H]
 * for k = 0 .. num_layers-1 (H = hidden_size; the gates' rows stacked in
 * the order above), all drawn uniform in [-1/sqrt(H), 1/sqrt(H)) from rng
 * in that order (PyTorch's reset_parameters). With opts.bidirectional
 * (D = 2 directions; D = 1 without) each layer has a second, reverse
 * direction with its own four, named with the suffix "_reverse" and
 * listed (and drawn) after the forward direction's of the same layer:
 * weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, weight_ih_l0_reverse,
 * ..., bias_hh_l0_reverse, weight_ih_l1, ...; in_k is D*H for k >= 1 (the
 * layer below's two directions side by side). The reverse direction runs
 * the same equations over each sequence's steps from its last to its
 * first, and the layer's output at step t is [forward h_t, reverse h_t]
 * (PyTorch's bidirectional=True). In nn Sequential its forward
 * is nn_rnn_forward with zero initial state, full lengths and the model's
 * mode, and gives the output sequence. An LSTM or GRU layer runs, by
 * default, the input products x W_ih^T of all steps as one matmul and the
 * recurrence as one op (ad_lstm_seq, ad_gru_seq); with opts.per_step each
 * step's products are matmul and add and its elementwise rest one fused op
 * (ad_lstm_cell, ad_gru_cell); with opts.composed the engine's ops
 * (narrow, sigmoid, tanh, mul, add), so graph dumps show every gate. RNN
 * (tanh, relu) layers always run step by step. The tape derives
 * backpropagation through time either way, and the values agree.
 * opts may be NULL. Returns the layer (kind "rnn_tanh", "rnn_relu",
 * "lstm" or "gru"), or NULL with AD_ERR_ARG (a size or num_layers < 1,
 * dropout outside [0, 1), an unknown cell), AD_ERR_DTYPE (not float),
 * AD_ERR_NULL (rng) or AD_ERR_OOM. */
NN_API nn_layer *nn_rnn_new(ad_ctx *ctx, nn_rnn_cell cell, int64_t input_size, int64_t hidden_size,
                            ad_rng *rng, const nn_rnn_opts *opts);

/** nn_rnn_new with NN_RNN_LSTM and NN_RNN_GRU. @{ */
NN_API nn_layer *nn_lstm_new(ad_ctx *ctx, int64_t input_size, int64_t hidden_size, ad_rng *rng,
                             const nn_rnn_opts *opts);
NN_API nn_layer *nn_gru_new(ad_ctx *ctx, int64_t input_size, int64_t hidden_size, ad_rng *rng,
                            const nn_rnn_opts *opts);
/** @} */

/** The options of PyTorch's RNN modules that nn_rnn_opts has no room for
 * (its layout is fixed, and its padding is used up). All-zero (with base
 * all-zero) means PyTorch's defaults. */
typedef struct nn_rnn_opts_ext {
  nn_rnn_opts base;  /**< the options of nn_rnn_opts */
  int64_t proj_size; /**< LSTM proj_size P in 1..hidden_size-1; 0: none */
} nn_rnn_opts_ext;

/** nn_rnn_new with PyTorch 1.13's LSTM proj_size (nn_rnn_new(..., &o) is
 * this with base o and proj_size 0, the same layer). With proj_size P > 0
 * (an LSTM only) each layer and direction has a fifth parameter
 * "weight_hr_l<k>" [P, H] ("weight_hr_l<k>_reverse"), listed (and drawn,
 * uniform in [-1/sqrt(H), 1/sqrt(H)) as the others) after that
 * direction's other parameters, PyTorch's order: weight_ih_l0,
 * weight_hh_l0, bias_ih_l0, bias_hh_l0, weight_hr_l0, weight_ih_l0_reverse,
 * ..., weight_hr_l0_reverse, weight_ih_l1, ... The hidden state is
 * projected at every step, h' = (o * tanh(c')) W_hr^T, so h is P wide:
 * "weight_hh_l<k>" is [4H, P], in_k is D*P for k >= 1, nn_rnn_forward's
 * output is [T, N, D*P] and its h0, h_n are [num_layers*D, N, P], while c0
 * and c_n stay [num_layers*D, N, H] (PyTorch's LSTM with projections). A
 * projected LSTM runs step by step, each step one fused ad_lstm_cell (or,
 * with opts.composed, the composed gates) and a matmul for the projection,
 * as opts.per_step; lengths, dropout, batch_first and bidirectional work
 * as without. Errors as nn_rnn_new's; AD_ERR_ARG also for proj_size
 * negative or >= hidden_size, or nonzero for a cell other than LSTM.
 * opts may be NULL. */
NN_API nn_layer *nn_rnn_new_ext(ad_ctx *ctx, nn_rnn_cell cell, int64_t input_size,
                                int64_t hidden_size, ad_rng *rng, const nn_rnn_opts_ext *opts);

/** Runs recurrent layer l over the sequence x ([T, N, I], or [N, T, I]
 * with batch_first; T >= 1 steps, N >= 0 sequences, I = input_size, the
 * layer's dtype) and returns the last layer's output at every step, [T, N,
 * H] (or [N, T, H]), a tape tensor. An empty batch (N = 0) gives, as in
 * PyTorch, an empty output and empty final states, and a backward through
 * them zero gradients for x, h0, c0 and the parameters; it takes no
 * dropout draws. An unbatched x [T, I] runs as a batch
 * of one without that axis, as in PyTorch: h0, c0, h_n, c_n are then
 * [num_layers, H] and the output [T, H] (batch_first does not apply).
 * Bidirectional (D = 2, see nn_rnn_new): the output is [T, N, 2 H] ([N, T,
 * 2 H], unbatched [T, 2 H]), the forward direction's h in [..., 0:H] and
 * the reverse direction's in [..., H:2H], and every state below has
 * num_layers*2 rows in the order layer 0 forward, layer 0 reverse, layer 1
 * forward, ... (PyTorch's). An LSTM with projections (nn_rnn_new_ext) has
 * P in place of H in the output, h0 and h_n (not in c0, c_n).
 *   h0, c0    initial states [num_layers*D, N, H] (c0 for LSTM only), or
 *             NULL for zeros (each independently).
 *   lengths   NULL: every sequence has T steps. Else n_lengths == N
 *             entries in 1..T (any order): sequence n has lengths[n]
 *             steps and the rest of its rows in x is padding, as
 *             PyTorch's pack_padded_sequence(enforce_sorted=False) then
 *             pad_packed_sequence(total_length=T): padded steps do not
 *             change its state, get no gradient, and give output 0. The
 *             reverse direction of sequence n runs over its steps
 *             lengths[n]-1 down to 0 (its state starts at the last valid
 *             step, not at the padding).
 *   training  dropout between layers (opts.dropout) applies when true,
 *             to the layer's whole (for D = 2: concatenated) output; the
 *             mask's elements are drawn step by step (t), within a step
 *             sequence by sequence (n), within that the D*H (D*P with
 *             projections) features in order (forward direction's
 *             first), on every path.
 *   h_n, c_n  when not NULL, receive the final states [num_layers*D, N,
 *             H] (each sequence's state after its last step; for the
 *             reverse direction after its step 0), tape tensors; *c_n is
 *             NULL for cells other than LSTM.
 * Graph dumps: the ops of layer k are recorded in a scope named after the
 * layer and k ("encoder.l1"; the layer's kind when the model gave it no
 * name: "lstm.l0"; its reverse direction's in "lstm.l0_reverse", which
 * reverses the sequences with index_select; the directions' concat, and
 * the dropout after it, outside both) and, when the layer runs step by
 * step (RNN, opts.per_step, opts.composed or proj_size), those of step t
 * in a scope "t=3" (for t = 3; of the reversed sequence in a reverse scope)
 * inside it (ad_scope_push), closed again on every exit; so two scope
 * levels must be free (AD_ERR_STATE otherwise, from ad_scope_push).
 * Returns NULL with the error recorded, naming the layer and the values:
 * AD_ERR_ARG (l is not recurrent, c0 given to a cell other than LSTM,
 * lengths missing a count, a count other than N, a length outside 1..T,
 * x, h0 or c0 of another context), AD_ERR_STATE (x, h0 or c0 freed, or a
 * temporary of a tape that was reset), AD_ERR_SHAPE (x neither 3-D nor
 * 2-D, an empty sequence (T = 0, as PyTorch), the wrong input size, h0
 * or c0 not [num_layers*D, N, H] (h0 [num_layers*D, N, P] with
 * projections), or for
 * D = 2 more than 2^31 - 1 steps of all sequences together), AD_ERR_DTYPE
 * (x, h0 or c0 not of the layer's dtype), AD_ERR_NULL, AD_ERR_OOM. */
NN_API ad_tensor *nn_rnn_forward(nn_layer *l, ad_tensor *x, ad_tensor *h0, ad_tensor *c0,
                                 const int64_t *lengths, int64_t n_lengths, bool training,
                                 ad_tensor **h_n, ad_tensor **c_n);

/** Options of an Embedding layer. All-zero means PyTorch's defaults. */
typedef struct nn_embedding_opts {
  bool padding;        /**< with padding_idx (PyTorch's padding_idx=None: false) */
  int64_t padding_idx; /**< -num..num-1, a negative one counting from the end */
  nn_init weight_init; /**< default PyTorch's: N(0, 1) */
  ad_dtype dtype;      /**< default AD_F32 */
} nn_embedding_opts;

/** A lookup table, PyTorch's nn.Embedding: an AD_I32 input of any shape
 * (token indices) to indices.shape + [dim] through ad_embedding, with
 * weight [num, dim] named "weight" (PyTorch's name and layout, so a state
 * dict loads unchanged). PyTorch's initialisation: N(0, 1) drawn from rng,
 * then the padding row zeroed (also after another weight_init); the
 * padding row gets no gradient, so it stays as it is under any optimizer
 * without weight decay. opts may be NULL. Returns the layer, or NULL with
 * AD_ERR_ARG (num or dim < 1, padding_idx out of range, a bad initializer),
 * AD_ERR_DTYPE, AD_ERR_NULL (rng) or AD_ERR_OOM. Its forward refuses an
 * input that is not AD_I32 (AD_ERR_DTYPE naming the layer) and an index
 * outside 0..num-1 (AD_ERR_ARG naming the index, its position and num). */
NN_API nn_layer *nn_embedding_new(ad_ctx *ctx, int64_t num, int64_t dim, ad_rng *rng,
                                  const nn_embedding_opts *opts);

/** Options of nn_embedding_new_ext: nn_embedding_opts and PyTorch's
 * max_norm, norm_type and scale_grad_by_freq (a struct of its own:
 * nn_embedding_opts has no padding left for two doubles). All-zero means
 * PyTorch's defaults. */
typedef struct nn_embedding_ext_opts {
  nn_embedding_opts base;  /**< padding_idx, weight_init, dtype */
  double max_norm;         /**< > 0: renormalise the rows looked up (see
                                nn_embedding_renorm); 0: none (PyTorch's None) */
  double norm_type;        /**< the p of max_norm's p-norm, > 0 or inf; 0 means 2 */
  bool scale_grad_by_freq; /**< each row's gradient over its count in the
                                forward's indices (ad_embedding_ext) */
} nn_embedding_ext_opts;

/** nn_embedding_new with PyTorch's max_norm, norm_type and
 * scale_grad_by_freq (nn.Embedding(..., max_norm=, norm_type=,
 * scale_grad_by_freq=)). With max_norm each forward first renormalises, in
 * place and without gradient, the rows of "weight" its indices name
 * (nn_embedding_renorm), then looks them up. opts may be NULL. Errors as
 * nn_embedding_new's, and AD_ERR_ARG for max_norm < 0 or not finite, or
 * norm_type < 0 or NaN. The forward's renormalisation marks the weight
 * modified when it changes a row (ad_tensor_mark_modified): a backward
 * through an op recorded before it that took the weight then refuses
 * (AD_ERR_STATE), also an earlier lookup of the same layer in this tape,
 * which PyTorch allows. sparse=True gradients are not supported. */
NN_API nn_layer *nn_embedding_new_ext(ad_ctx *ctx, int64_t num, int64_t dim, ad_rng *rng,
                                      const nn_embedding_ext_opts *opts);

/** torch.embedding_renorm_ (what nn.Embedding's max_norm does): each row of
 * weight [num, dim] (float) named by indices (AD_I32, any shape; a row
 * named twice once) whose norm_type-norm (0 means 2; inf: the largest
 * |element|; computed in weight's dtype) exceeds max_norm is multiplied,
 * in place and without gradient, by max_norm / (norm + 1e-7); a NaN norm
 * leaves its row. Marks weight modified when a row changes. Returns AD_OK,
 * or AD_ERR_NULL, AD_ERR_DTYPE (weight not float, indices not AD_I32),
 * AD_ERR_SHAPE (weight not 2-D), AD_ERR_ARG (an index outside 0..num-1,
 * named with its position; max_norm not finite and > 0; norm_type < 0 or
 * NaN), and the errors of a freed tensor or another context's. */
NN_API ad_status nn_embedding_renorm(ad_ctx *ctx, ad_tensor *weight, const ad_tensor *indices,
                                     double max_norm, double norm_type);

/** How an EmbeddingBag reduces a bag (PyTorch's mode; the zero value is
 * its default, mean). */
typedef enum nn_bag_mode {
  NN_BAG_MEAN = 0, /**< 'mean': the sum over the bag's size */
  NN_BAG_SUM,      /**< 'sum' (the only mode with per_sample_weights) */
  NN_BAG_MAX       /**< 'max': per dim, over the bag */
} nn_bag_mode;

/** Options of an EmbeddingBag (and of nn_embedding_bag, which ignores
 * weight_init and dtype). All-zero means PyTorch's defaults. */
typedef struct nn_embedding_bag_opts {
  nn_bag_mode mode;         /**< default NN_BAG_MEAN */
  bool padding;             /**< with padding_idx (PyTorch's padding_idx=None: false) */
  int64_t padding_idx;      /**< -num..num-1; its entries are left out of their bag */
  bool include_last_offset; /**< offsets has B + 1 entries, the last the input's length */
  double max_norm;          /**< > 0: renormalise the rows looked up; 0: none */
  double norm_type;         /**< the p of max_norm's norm, > 0 or inf; 0 means 2 */
  bool scale_grad_by_freq;  /**< sum and mean only, as PyTorch */
  nn_init weight_init;      /**< default PyTorch's: N(0, 1) */
  ad_dtype dtype;           /**< default AD_F32 */
} nn_embedding_bag_opts;

/** torch.nn.functional.embedding_bag: the rows of weight [num, dim] (float)
 * named by input (AD_I32), reduced per bag to y [B, dim] of weight's
 * dtype. Bags: a 2-D input [B, L] is B bags of L entries (offsets NULL and
 * n_offsets 0); a 1-D input [N] is cut by offsets (n_offsets int64 starts:
 * offsets[0] = 0, none decreasing, none past N; bag b is
 * offsets[b]..offsets[b+1]-1, the last to N; with include_last_offset
 * there are n_offsets - 1 bags and the last offset must be N, the CSR
 * form). Entries whose index is padding_idx are left out: of the sum, the
 * mean's count and the max; a bag with no entry left gives zeros (every
 * mode). per_sample_weights (mode sum only; input's shape and weight's
 * dtype; may be NULL) multiply their entries; they get a gradient too.
 * max: per dim the first largest entry (a later one replaces it only when
 * strictly greater, so a NaN counts only as a bag's first entry), and the
 * gradient goes to that entry's row alone, as PyTorch's. mean divides by
 * the count in weight's dtype. max_norm, norm_type: nn_embedding_renorm of
 * all of input's rows (padding ones too) before the lookup, in place;
 * scale_grad_by_freq as ad_embedding_ext's, counting the indices of this
 * call. Differentiable to any order in weight and per_sample_weights.
 * Returns a temporary of the tape, or NULL with AD_ERR_NULL (weight,
 * input, offsets of a 1-D input), AD_ERR_DTYPE (weight not float, input
 * not AD_I32, per_sample_weights of another dtype), AD_ERR_SHAPE (weight
 * not 2-D, input neither 1-D nor 2-D, per_sample_weights of another shape),
 * AD_ERR_ARG (an index outside 0..num-1 named with its position, offsets
 * with a 2-D input or missing, offsets[0] != 0, decreasing, past N, a last
 * offset other than N with include_last_offset, include_last_offset with a
 * 2-D input, per_sample_weights with mode mean or max, scale_grad_by_freq
 * with max, a bad mode, padding_idx, max_norm or norm_type; an input of
 * more than 2^31 - 1 entries, whose positions are kept as i32), AD_ERR_OOM.
 * PyTorch 1.13 does not check decreasing offsets or a last offset other
 * than N (it reads past its buffers); sparse gradients are not supported. */
NN_API ad_tensor *nn_embedding_bag(ad_ctx *ctx, ad_tensor *weight, ad_tensor *input,
                                   const int64_t *offsets, int64_t n_offsets,
                                   ad_tensor *per_sample_weights,
                                   const nn_embedding_bag_opts *opts);

/** PyTorch's nn.EmbeddingBag(num, dim, ...): weight [num, dim] named
 * "weight" (PyTorch's name and layout, so a state dict loads), N(0, 1)
 * from rng with the padding row zeroed, as PyTorch's reset_parameters. Its
 * nn_layer_forward takes a 2-D input [B, L] (bags of fixed length);
 * nn_embedding_bag_forward takes offsets and per_sample_weights too.
 * opts may be NULL. Returns the layer, or NULL with AD_ERR_ARG (num or dim
 * < 1, a bad mode, padding_idx out of range, max_norm or norm_type bad,
 * scale_grad_by_freq with max, a bad initializer), AD_ERR_DTYPE,
 * AD_ERR_NULL (rng) or AD_ERR_OOM. */
NN_API nn_layer *nn_embedding_bag_new(ad_ctx *ctx, int64_t num, int64_t dim, ad_rng *rng,
                                      const nn_embedding_bag_opts *opts);

/** EmbeddingBag's forward(input, offsets, per_sample_weights): l's weight
 * and options through nn_embedding_bag (whose contract holds: offsets NULL
 * and n_offsets 0 for a 2-D input; per_sample_weights NULL for none).
 * AD_ERR_ARG when l is not an EmbeddingBag; NULL l returns NULL. */
NN_API ad_tensor *nn_embedding_bag_forward(nn_layer *l, ad_tensor *input, const int64_t *offsets,
                                           int64_t n_offsets, ad_tensor *per_sample_weights);

/** Options of a LayerNorm layer. All-zero means PyTorch's defaults. */
typedef struct nn_layer_norm_opts {
  double eps;     /**< added to the variance; 0 means 1e-5 */
  bool no_affine; /**< elementwise_affine=False: no weight and bias */
  ad_dtype dtype; /**< of the parameters and the input; default AD_F32 */
} nn_layer_norm_opts;

/** Layer normalisation, PyTorch's nn.LayerNorm(normalized_shape): x [...,
 * normalized_shape] normalised over its last ndim dims (mean and biased
 * variance of each block) through ad_layer_norm, then scaled by "weight"
 * (ones) and shifted by "bias" (zeros), both of the normalized shape. The
 * same in training and evaluation mode. opts may be NULL. Returns the
 * layer, or NULL with AD_ERR_ARG (ndim outside 1..AD_MAX_DIMS, a length <
 * 1, eps < 0 or not finite), AD_ERR_NULL, AD_ERR_DTYPE or AD_ERR_OOM. Its
 * forward refuses an input whose last dims are not the normalized shape
 * (AD_ERR_SHAPE, "layer_norm '1': input [2,5] does not end with the
 * normalized shape [4]") or of another dtype (AD_ERR_DTYPE). */
NN_API nn_layer *nn_layer_norm_new(ad_ctx *ctx, int ndim, const int64_t *normalized_shape,
                                   const nn_layer_norm_opts *opts);
/** Options of a multi-head attention layer. All-zero means PyTorch's
 * defaults. */
typedef struct nn_mha_opts {
  bool batch_first; /**< inputs [N, L, E]; false: [L, N, E] (PyTorch's default) */
  double dropout;   /**< on the attention weights in training mode, [0, 1) */
  uint64_t seed;    /**< of the dropout draws */
  bool no_bias;     /**< bias=False: no in_proj_bias and out_proj.bias */
  bool causal;      /**< every call masks causally (key j > query i), as
                       nn_mha_args.causal; for causal self-attention in a
                       Sequential */
  ad_dtype dtype;   /**< default AD_F32 */
} nn_mha_opts;

/** Multi-head attention, PyTorch's nn.MultiheadAttention with kdim = vdim =
 * embed_dim E (see nn_multihead_attention_new_ext for the other
 * constructor options) and num_heads H dividing E: the inputs are projected by
 * "in_proj_weight" [3E, E] (the query, key and value rows in that order)
 * and "in_proj_bias" [3E], split into H heads of E / H, each head attends
 * through ad_scaled_dot_product_attention (scale sqrt(H / E)), and the
 * heads, joined, go through "out_proj.weight" [E, E] and "out_proj.bias"
 * [E]. The parameter names and layouts are PyTorch's, so its state dict
 * loads unchanged (in a Sequential "0.in_proj_weight", ...). PyTorch's
 * initialisation: in_proj_weight Xavier uniform (fans E and 3E), then
 * out_proj.weight uniform within 1/sqrt(E) (nn.Linear's), both drawn from
 * rng; the biases zero. As a layer (nn_layer_forward, nn_model_add) it is
 * self-attention, query = key = value = x, returning the output only,
 * with dropout in training mode and causal when opts say so; use
 * nn_multihead_attention for separate inputs, masks or the weights. opts
 * may be NULL. Returns the layer, or NULL with AD_ERR_ARG (embed_dim or
 * num_heads < 1, embed_dim above 2^32, num_heads not dividing embed_dim,
 * dropout outside [0, 1)), AD_ERR_DTYPE, AD_ERR_NULL (rng) or AD_ERR_OOM. */
NN_API nn_layer *nn_multihead_attention_new(ad_ctx *ctx, int64_t embed_dim, int64_t num_heads,
                                            ad_rng *rng, const nn_mha_opts *opts);

/** The options of PyTorch's MultiheadAttention that nn_mha_opts has no
 * room for (its layout is fixed). All-zero (with base all-zero) means
 * PyTorch's defaults. */
typedef struct nn_mha_opts_ext {
  nn_mha_opts base;   /**< the options of nn_mha_opts */
  int64_t kdim;       /**< the key's last dim; 0: embed_dim */
  int64_t vdim;       /**< the value's last dim; 0: embed_dim */
  bool add_bias_kv;   /**< "bias_k", "bias_v" [1, 1, E] appended to the
                         projected keys and values (S -> S + 1) */
  bool add_zero_attn; /**< a zero key and value appended after them
                         (S -> S + 1 more) */
} nn_mha_opts_ext;

/** nn_multihead_attention_new with PyTorch 1.13's kdim, vdim, add_bias_kv
 * and add_zero_attn (nn_multihead_attention_new(..., &o) is this with base
 * o and the rest zero, the same layer). When kdim or vdim is not E the
 * projection weights are separate, as PyTorch's: "q_proj_weight" [E, E],
 * "k_proj_weight" [E, kdim], "v_proj_weight" [E, vdim] in place of
 * in_proj_weight, each Xavier uniform; "in_proj_bias" [3E] stays. The
 * parameters are listed in PyTorch's registration order, the order of its
 * state dict: in_proj_weight (or q, k, v_proj_weight), in_proj_bias,
 * bias_k, bias_v, out_proj.weight, out_proj.bias; the initialisations
 * (PyTorch's: bias_k and bias_v Xavier normal, std 1/sqrt(E)) draw from rng
 * in that order. In a call, as F.multi_head_attention_forward: the
 * projected keys and values get bias_k and bias_v appended, then a zero
 * key and value (per head), so the attention weights have S + 1 or S + 2
 * columns, the last ones those keys; attn_mask and key_padding_mask (given
 * for the S keys) are padded with visible columns, and a causal flag masks
 * the S keys only (as PyTorch's causal attn_mask, padded). A row whose keys
 * are all masked then attends to the added keys only (no NaN). Errors as
 * nn_multihead_attention_new's; AD_ERR_ARG also for kdim or vdim negative
 * or above 2^32. opts may be NULL. */
NN_API nn_layer *nn_multihead_attention_new_ext(ad_ctx *ctx, int64_t embed_dim, int64_t num_heads,
                                                ad_rng *rng, const nn_mha_opts_ext *opts);

/** The arguments of one multi-head attention call. All-zero: no masks,
 * evaluation mode, weights averaged over the heads. */
typedef struct nn_mha_args {
  ad_tensor *attn_mask;        /**< [L, S] or [N * H, L, S] (PyTorch's layouts):
                                  float (the layer's dtype) added to the
                                  scores, or AD_I32 with nonzero = not
                                  allowed (PyTorch's bool True), or NULL */
  ad_tensor *key_padding_mask; /**< [N, S] ([S] unbatched): AD_I32 nonzero =
                                  ignore that key (PyTorch's True), or float
                                  added, or NULL */
  bool causal;                 /**< also mask key j > query i (the top-left
                                  triangle; see ad_scaled_dot_product_attention) */
  bool training;               /**< dropout on the attention weights */
  bool per_head_weights;       /**< weights [N, H, L, S] (PyTorch's
                                  average_attn_weights=False) */
} nn_mha_args;

/** Runs multi-head attention layer l (from nn_multihead_attention_new or
 * _ext) on query [L, N, E], key [S, N, kdim] and value [S, N, vdim]
 * ([N, L, E] ... with batch_first; [L, E], [S, kdim], [S, vdim] unbatched,
 * as PyTorch; kdim = vdim = E but with nn_multihead_attention_new_ext)
 * with args (NULL: all-zero). Returns the output, shaped like query, as a
 * tape tensor. When weights is not NULL (PyTorch's need_weights) *weights
 * gets the attention weights averaged over the heads, [N, L, S'] ([L, S']
 * unbatched), or per head [N, H, L, S'], after dropout, as PyTorch's; S' is
 * S, plus 1 with add_bias_kv and 1 with add_zero_attn. Self-
 * attention passes one tensor three times. A row whose keys are all masked
 * gives NaN, as in PyTorch. Returns NULL (and *weights NULL) with
 * AD_ERR_NULL, AD_ERR_ARG (l is another kind of layer, an input or a mask
 * of another context), AD_ERR_STATE (a freed input or mask, or one from a
 * tape that was reset), AD_ERR_SHAPE
 * (ranks, E, batch sizes or lengths that do not fit, a mask of the wrong
 * shape; naming the layer and the shapes), AD_ERR_DTYPE or AD_ERR_OOM. */
NN_API ad_tensor *nn_multihead_attention(nn_layer *l, ad_tensor *query, ad_tensor *key,
                                         ad_tensor *value, const nn_mha_args *args,
                                         ad_tensor **weights);

/** Options of a transformer encoder or decoder layer. All-zero means
 * PyTorch's defaults (nn.TransformerEncoderLayer(d_model, nhead),
 * nn.TransformerDecoderLayer(d_model, nhead); in a decoder layer, causal
 * masks its self-attention and layer_norm_eps is that of norm1..norm3). */
typedef struct nn_transformer_opts {
  int64_t dim_feedforward; /**< width of the feed-forward block; 0 means 2048 */
  double dropout;          /**< of all four dropouts, in [0, 1); 0 means 0.1 */
  bool no_dropout;         /**< dropout=0.0 (then dropout must be left 0) */
  nn_act activation;       /**< NN_ACT_RELU (NN_ACT_NONE means it) or NN_ACT_GELU
                              (exact, F.gelu's) */
  double layer_norm_eps;   /**< of norm1 and norm2, > 0; 0 means 1e-5 */
  bool batch_first;        /**< src [N, S, E]; false: [S, N, E] (PyTorch's default) */
  bool norm_first;         /**< pre-norm: LayerNorm before each block */
  bool causal;             /**< every call masks causally, as
                              nn_transformer_args.causal (for a Sequential
                              language model; not in PyTorch 1.13's layer) */
  uint64_t seed;           /**< of the dropout draws */
  ad_dtype dtype;          /**< default AD_F32 */
} nn_transformer_opts;

/** A transformer encoder layer, PyTorch's nn.TransformerEncoderLayer
 * (1.13, whose layer has no bias option: every projection has a bias).
 * With E = d_model, F = dim_feedforward, MHA the self-attention of
 * nn_multihead_attention_new (nhead heads, the dropout on its weights) and
 * LN LayerNorm over E:
 *   sa(x) = dropout1(MHA(x, x, x, masks))
 *   ff(x) = dropout2(linear2(dropout(act(linear1(x)))))
 *   post-norm (default):  x = norm1(x + sa(x));  y = norm2(x + ff(x))
 *   pre-norm (norm_first): x = x + sa(norm1(x)); y = x + ff(norm2(x))
 * Parameters, with PyTorch's names, layouts and order, so its state dict
 * loads unchanged (in a Sequential "0.self_attn.in_proj_weight", ...):
 * "self_attn.in_proj_weight" [3E, E], "self_attn.in_proj_bias" [3E],
 * "self_attn.out_proj.weight" [E, E], "self_attn.out_proj.bias" [E],
 * "linear1.weight" [F, E], "linear1.bias" [F], "linear2.weight" [E, F],
 * "linear2.bias" [E], "norm1.weight", "norm1.bias", "norm2.weight",
 * "norm2.bias" [E]. PyTorch's initialisation, each submodule's own, drawn
 * from rng in that order: the attention's as nn_multihead_attention_new,
 * the linears' weights and biases uniform within 1/sqrt(fan_in) (E for
 * linear1, F for linear2), the norms' weights ones and biases zeros.
 * Dropout (training mode only, p = opts.dropout everywhere): an ad_rng
 * seeded with seed gives two draws, the seed of the attention's dropout
 * generator and then that of the layer's own, which each call takes one
 * draw of per dropout in the order dropout1, dropout, dropout2 (masks as
 * nn_dropout_new's); a call that fails takes no draws. As a layer
 * (nn_layer_forward, nn_model_add) it runs on src without masks (causal
 * when opts say so); nn_transformer_encoder_layer takes masks. opts may be
 * NULL. Returns the layer (kind "transformer_encoder_layer"), or NULL
 * with AD_ERR_ARG (d_model or nhead < 1, d_model above 2^32, nhead not
 * dividing d_model, dim_feedforward < 0 or above 2^32, dropout outside
 * [0, 1) or given with no_dropout, layer_norm_eps < 0 or not finite, an
 * activation other than relu and gelu), AD_ERR_DTYPE, AD_ERR_NULL (rng)
 * or AD_ERR_OOM, the message naming the layer. */
NN_API nn_layer *nn_transformer_encoder_layer_new(ad_ctx *ctx, int64_t d_model, int64_t nhead,
                                                  ad_rng *rng, const nn_transformer_opts *opts);

/** The arguments of one transformer encoder layer call. All-zero: no
 * masks, evaluation mode. */
typedef struct nn_transformer_args {
  ad_tensor *src_mask;             /**< the attention's attn_mask (nn_mha_args):
                                      [S, S] or [N * nhead, S, S], float added
                                      or AD_I32 nonzero = not allowed */
  ad_tensor *src_key_padding_mask; /**< [N, S] ([S] unbatched), AD_I32 nonzero
                                      = a padding key, or float added */
  bool causal;                     /**< also mask key j > query i (PyTorch 2's
                                      is_causal with the causal src_mask) */
  bool training;                   /**< the dropouts */
} nn_transformer_args;

/** Runs transformer encoder layer l (from nn_transformer_encoder_layer_new)
 * on src [S, N, E] ([N, S, E] with batch_first; unbatched [S, E]) of the
 * layer's dtype, with args (NULL: all-zero). Returns the output, shaped
 * like src, as a tape tensor. An empty batch (N = 0) gives an empty
 * output and, through it, zero gradients, as in PyTorch (so do the
 * decoder layer, the stacks and nn_transformer_forward). A query row
 * whose keys are all masked gives NaN, as PyTorch's layer computes it
 * with autograd (its no-grad fast path differs there). Returns NULL with
 * the error recorded, naming the layer: AD_ERR_NULL, AD_ERR_ARG (l is
 * another kind of layer, a mask of another context), AD_ERR_STATE (a
 * freed src or mask), AD_ERR_SHAPE (src neither 2-D nor 3-D, an empty
 * sequence (S = 0, which PyTorch takes), a last dim other than d_model; a
 * mask of the wrong shape), AD_ERR_DTYPE or AD_ERR_OOM. */
NN_API ad_tensor *nn_transformer_encoder_layer(nn_layer *l, ad_tensor *src,
                                               const nn_transformer_args *args);

/** A transformer decoder layer, PyTorch's nn.TransformerDecoderLayer
 * (1.13; every projection has a bias), with the options of the encoder
 * layer (nn_transformer_opts: PyTorch's constructor has the same ones;
 * causal applies to the self-attention). With memory m and MHA, LN,
 * ff and E as nn_transformer_encoder_layer_new's:
 *   sa(x) = dropout1(self_attn(x, x, x, tgt masks))
 *   ca(x) = dropout2(multihead_attn(x, m, m, memory masks))
 *   ff(x) = dropout3(linear2(dropout(act(linear1(x)))))
 *   post-norm: x = norm1(x + sa(x)); x = norm2(x + ca(x)); y = norm3(x + ff(x))
 *   pre-norm:  x = x + sa(norm1(x)); x = x + ca(norm2(x)); y = x + ff(norm3(x))
 * Parameters, with PyTorch's names, layouts and order: "self_attn.*" and
 * "multihead_attn.*" (each in_proj_weight [3E, E], in_proj_bias [3E],
 * out_proj.weight [E, E], out_proj.bias [E]), "linear1.weight" [F, E],
 * "linear1.bias" [F], "linear2.weight" [E, F], "linear2.bias" [E], and
 * "norm1.weight", "norm1.bias", ..., "norm3.bias" [E]. Initialisation
 * drawn from rng in that order, as the encoder layer's. Dropout: an ad_rng
 * seeded with seed gives three draws, the seeds of self_attn's generator,
 * of the layer's own and of multihead_attn's; a call takes one draw of the
 * layer's own per dropout in the order dropout1, dropout2, dropout,
 * dropout3; a call that fails takes no draws. As a layer (nn_layer_forward,
 * a Sequential) it is refused with AD_ERR_ARG naming
 * nn_transformer_decoder_layer: a decoder needs memory, and running on
 * memory = x (attending to its own input twice) would compute something
 * else without a word. opts may be NULL. Returns the layer (kind
 * "transformer_decoder_layer"), or NULL with the errors of
 * nn_transformer_encoder_layer_new, naming this layer. */
NN_API nn_layer *nn_transformer_decoder_layer_new(ad_ctx *ctx, int64_t d_model, int64_t nhead,
                                                  ad_rng *rng, const nn_transformer_opts *opts);

/** The arguments of one transformer decoder layer call, PyTorch's forward
 * arguments after tgt and memory (T the target length, S the memory's).
 * All-zero: no masks, evaluation mode. Masks are float (added) or AD_I32
 * (nonzero = not allowed), in nn_mha_args' layouts. */
typedef struct nn_transformer_decoder_args {
  ad_tensor *tgt_mask;                /**< self-attention: [T, T] or [N * nhead, T, T] */
  ad_tensor *memory_mask;             /**< cross-attention: [T, S] or [N * nhead, T, S] */
  ad_tensor *tgt_key_padding_mask;    /**< [N, T] ([T] unbatched) */
  ad_tensor *memory_key_padding_mask; /**< [N, S] ([S] unbatched) */
  bool causal;                        /**< the self-attention also masks key j >
                                         query i (PyTorch 2's tgt_is_causal with
                                         the causal tgt_mask) */
  bool training;                      /**< the dropouts */
} nn_transformer_decoder_args;

/** Runs transformer decoder layer l (from nn_transformer_decoder_layer_new)
 * on tgt [T, N, E] ([N, T, E] with batch_first; unbatched [T, E]) and
 * memory [S, N, E] ([N, S, E]; [S, E]), both of the layer's dtype and
 * both batched or both not, with args (NULL: all-zero). Returns the
 * output, shaped like tgt, as a tape tensor; a query row whose keys are
 * all masked gives NaN, as in PyTorch. Returns NULL with the errors of
 * nn_transformer_encoder_layer for tgt and memory (and of the attentions,
 * "multihead_attention 'multihead_attn': ..." for memory's masks and
 * batch size), naming the layer. */
NN_API ad_tensor *nn_transformer_decoder_layer(nn_layer *l, ad_tensor *tgt, ad_tensor *memory,
                                               const nn_transformer_decoder_args *args);

/** Options of a transformer stack (nn_transformer_encoder_new,
 * nn_transformer_decoder_new). All-zero: PyTorch's norm=None. */
typedef struct nn_transformer_stack_opts {
  bool norm;       /**< a final LayerNorm over d_model, "norm.weight" (ones) and
                      "norm.bias" (zeros): PyTorch's norm=nn.LayerNorm(d_model) */
  double norm_eps; /**< its eps, > 0 (only with norm); 0 means the layer's
                      layer_norm_eps (nn.Transformer's choice) */
} nn_transformer_stack_opts;

/** A stack of transformer encoder layers, PyTorch's
 * nn.TransformerEncoder(encoder_layer, num_layers, norm): encoder_layer
 * (from nn_transformer_encoder_layer_new) and num_layers - 1 copies of it,
 * run in turn on src with the same masks, then the final norm if opts ask
 * for one. PyTorch deep-copies one initialised layer (copy.deepcopy in
 * _get_clones), so every layer starts with the SAME parameter values, and
 * so do these: train them apart, or load a state dict. Each copy has its
 * own dropout generator, seeded from draws of (a copy of) encoder_layer's,
 * so the layers' dropout masks differ. Parameters, with PyTorch's names
 * and order: "layers.0.self_attn.in_proj_weight", ..., "layers.0.norm2.bias",
 * "layers.1.self_attn.in_proj_weight", ..., and "norm.weight", "norm.bias"
 * with a norm; PyTorch's state dict loads unchanged. The stack takes
 * encoder_layer, also when it fails (it frees it), unless encoder_layer
 * already belongs to a model (refused, left to its model); a NULL
 * encoder_layer returns NULL and keeps its constructor's error, so
 * nn_transformer_encoder_new(nn_transformer_encoder_layer_new(...), ...)
 * needs one check. As a layer (nn_layer_forward, a Sequential) it runs on
 * src without masks (causal when the layer's opts say so). opts may be
 * NULL. Returns the layer (kind "transformer_encoder"), or NULL with
 * AD_ERR_ARG (another kind of layer, one that belongs to a model,
 * num_layers outside [1, 65536], norm_eps < 0, not finite, or given without
 * norm) or AD_ERR_OOM. */
NN_API nn_layer *nn_transformer_encoder_new(nn_layer *encoder_layer, int64_t num_layers,
                                            const nn_transformer_stack_opts *opts);

/** Runs transformer encoder stack l (from nn_transformer_encoder_new) on
 * src as nn_transformer_encoder_layer does, every layer with args (PyTorch's
 * mask and src_key_padding_mask). A call that fails takes no dropout draws
 * in any layer. Returns the output, shaped like src, or NULL with the
 * errors of nn_transformer_encoder_layer, naming the stack and the layer
 * ("transformer_encoder '0': transformer_encoder_layer 'layers.1': ..."). */
NN_API ad_tensor *nn_transformer_encoder(nn_layer *l, ad_tensor *src,
                                         const nn_transformer_args *args);

/** A stack of transformer decoder layers, PyTorch's
 * nn.TransformerDecoder(decoder_layer, num_layers, norm), as
 * nn_transformer_encoder_new (copies that start equal, ownership, opts,
 * errors) with decoder_layer from nn_transformer_decoder_layer_new and the
 * parameters "layers.<k>.self_attn.in_proj_weight", ...,
 * "layers.<k>.norm3.bias", "norm.weight", "norm.bias". As a layer it is
 * refused, as the decoder layer is (it needs memory). Returns the layer
 * (kind "transformer_decoder") or NULL. */
NN_API nn_layer *nn_transformer_decoder_new(nn_layer *decoder_layer, int64_t num_layers,
                                            const nn_transformer_stack_opts *opts);

/** Runs transformer decoder stack l (from nn_transformer_decoder_new) on tgt
 * and memory as nn_transformer_decoder_layer does, every layer attending
 * to the same memory with args, then the final norm. Returns the output,
 * shaped like tgt, or NULL with the errors of nn_transformer_decoder_layer,
 * naming the stack and the layer; a call that fails takes no draws. */
NN_API ad_tensor *nn_transformer_decoder(nn_layer *l, ad_tensor *tgt, ad_tensor *memory,
                                         const nn_transformer_decoder_args *args);

/** Options of a whole transformer (nn_transformer_new), PyTorch's
 * nn.Transformer constructor arguments. All-zero means PyTorch's defaults,
 * so a NULL opts is nn.Transformer(). */
typedef struct nn_transformer_model_opts {
  int64_t d_model;            /**< 0 means 512 */
  int64_t nhead;              /**< must divide d_model; 0 means 8 */
  int64_t num_encoder_layers; /**< in [1, 65536]; 0 means 6 */
  int64_t num_decoder_layers; /**< in [1, 65536]; 0 means 6 */
  int64_t dim_feedforward;    /**< 0 means 2048 */
  double dropout;             /**< of every dropout, in [0, 1); 0 means 0.1 */
  bool no_dropout;            /**< dropout=0.0 (then dropout must be left 0) */
  nn_act activation;          /**< NN_ACT_RELU (NN_ACT_NONE means it) or
                                 NN_ACT_GELU (exact, F.gelu's) */
  double layer_norm_eps;      /**< of every LayerNorm, > 0; 0 means 1e-5 */
  bool batch_first;           /**< [N, S, E]; false: [S, N, E] (PyTorch's default) */
  bool norm_first;            /**< pre-norm layers */
  uint64_t seed;              /**< of the dropout draws */
  ad_dtype dtype;             /**< default AD_F32 */
} nn_transformer_model_opts;

/** A whole transformer, PyTorch's nn.Transformer (1.13, without
 * custom_encoder and custom_decoder): "encoder", an encoder stack
 * (nn_transformer_encoder_new) of num_encoder_layers encoder layers with a
 * final LayerNorm(d_model, eps=layer_norm_eps), and "decoder", a decoder
 * stack of num_decoder_layers decoder layers with its final LayerNorm, the
 * layers built with the options of opts (as nn_transformer_opts). The
 * parameters have PyTorch's names and order, so its state dict loads
 * unchanged: "encoder.layers.0.self_attn.in_proj_weight", ...,
 * "encoder.layers.<k>.norm2.bias", "encoder.norm.weight",
 * "encoder.norm.bias", "decoder.layers.0.self_attn.in_proj_weight", ...,
 * "decoder.layers.0.multihead_attn.out_proj.bias", ..., "decoder.norm.bias"
 * ("0.encoder..." in a model). PyTorch's initialisation: each submodule's
 * own (the layers' copies start equal), then Xavier uniform on every
 * parameter of two or more dims (_reset_parameters: in_proj_weight,
 * out_proj.weight, linear1.weight and linear2.weight of every layer, each
 * drawn anew), drawn from rng; the biases keep their submodule's values
 * (the linears' uniform within 1/sqrt(fan_in), equal in every copy; the
 * attentions' zero) and the norms ones and zeros. The same distributions
 * as PyTorch's, not its numbers (the generator is the engine's). Dropout
 * (training mode only): the encoder and the decoder stacks seed their
 * generators from two draws of an ad_rng seeded with seed, and draw as
 * nn_transformer_encoder and nn_transformer_decoder document. Use
 * nn_transformer_forward to run it: as a layer (nn_layer_forward, a
 * Sequential) it is refused with AD_ERR_ARG, as it needs src and tgt.
 * opts may be NULL. Returns the layer (kind "transformer"), or NULL with
 * AD_ERR_ARG (d_model or nhead < 1, d_model above 2^32, nhead not
 * dividing d_model, a layer count negative or above 65536, and the
 * other options' errors of nn_transformer_encoder_layer_new),
 * AD_ERR_DTYPE, AD_ERR_NULL (rng) or AD_ERR_OOM, the message naming
 * "transformer". */
NN_API nn_layer *nn_transformer_new(ad_ctx *ctx, ad_rng *rng,
                                    const nn_transformer_model_opts *opts);

/** Runs transformer l (from nn_transformer_new), PyTorch's
 * nn.Transformer.forward: memory = encoder(src, src_mask,
 * src_key_padding_mask), then returns decoder(tgt, memory, tgt_mask,
 * memory_mask, tgt_key_padding_mask, memory_key_padding_mask), shaped like
 * tgt, as a tape tensor. src is [S, N, E] and tgt [T, N, E] ([N, S, E] and
 * [N, T, E] with batch_first; unbatched [S, E] and [T, E]) of the layer's
 * dtype. The masks may each be NULL and have the layouts of
 * nn_transformer_args and nn_transformer_decoder_args: src_mask [S, S] or
 * [N * nhead, S, S], tgt_mask [T, T] or [N * nhead, T, T], memory_mask
 * [T, S] or [N * nhead, T, S], float (added) or AD_I32 (nonzero = not
 * allowed, PyTorch's bool True); the key padding masks [N, S], [N, T],
 * [N, S] ([S], [T], [S] unbatched). For a causal decoder pass tgt_mask from
 * nn_transformer_generate_square_subsequent_mask. training turns the
 * dropouts on (PyTorch's module.train()); false is evaluation mode. A
 * query row whose keys are all masked gives NaN, as PyTorch's autograd
 * path computes it. A call that fails takes no dropout draws. Returns NULL
 * with the error recorded, naming the layer (a NULL l: NULL only):
 * AD_ERR_NULL (src or tgt), AD_ERR_ARG (l is another kind of layer, a
 * tensor of another context), AD_ERR_STATE (a freed tensor),
 * AD_ERR_SHAPE (src and tgt not both 3-D or
 * both 2-D; PyTorch's "the batch number of src and tgt must be equal" and
 * "the feature number of src and tgt must be equal to d_model"; and the
 * errors of nn_transformer_encoder and nn_transformer_decoder for the
 * rest, naming the stack and the layer: "transformer: transformer_encoder
 * 'encoder': transformer_encoder_layer 'layers.0': ..."), AD_ERR_DTYPE or
 * AD_ERR_OOM. */
NN_API ad_tensor *nn_transformer_forward(nn_layer *l, ad_tensor *src, ad_tensor *tgt,
                                         ad_tensor *src_mask, ad_tensor *tgt_mask,
                                         ad_tensor *memory_mask, ad_tensor *src_key_padding_mask,
                                         ad_tensor *tgt_key_padding_mask,
                                         ad_tensor *memory_key_padding_mask, bool training);

/** PyTorch's Transformer.generate_square_subsequent_mask(sz): a new
 * persistent [sz, sz] tensor of dtype (AD_F32 or AD_F64; PyTorch's is
 * float32) holding -INFINITY above the diagonal (key j > query i, not
 * allowed) and 0 elsewhere, the causal tgt_mask of
 * nn_transformer_forward. The caller frees it (ad_tensor_free). sz 0
 * gives a [0, 0] tensor. Returns NULL with AD_ERR_ARG (sz < 0 or above
 * 2^20), AD_ERR_DTYPE or AD_ERR_OOM; NULL ctx: NULL. */
NN_API ad_tensor *nn_transformer_generate_square_subsequent_mask(ad_ctx *ctx, int64_t sz,
                                                                 ad_dtype dtype);

/** Frees a layer and its parameters. A layer owned by a model is freed
 * with the model: here it is refused (AD_ERR_STATE on its context, the
 * layer left as it is). NULL is a no-op. */
NN_API void nn_layer_free(nn_layer *l);

/** Runs the layer on x (training selects dropout's mode). Returns a tape
 * tensor, or NULL with an error naming the layer and the shapes (AD_ERR_ARG
 * when a lambda's function returns NULL without recording an error). */
NN_API ad_tensor *nn_layer_forward(nn_layer *l, ad_tensor *x, bool training);

/** "dense", "relu", "dropout", ...; and the name the model gave it ("0",
 * "encoder", or "" while it belongs to no model). @{ */
NN_API const char *nn_layer_kind(const nn_layer *l);
NN_API const char *nn_layer_name(const nn_layer *l);
/** @} */

/** The layer's kind and settings written as PyTorch's repr of the same
 * module writes them (its extra_repr), with the layer's kind for the class
 * name: "dense(in_features=784, out_features=64, bias=True)",
 * "conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1))", "dropout(p=0.5)",
 * "lstm(10, 20, num_layers=2)", "relu()"; settings PyTorch's module lacks
 * are added by name (a Dense layer's ", activation=relu", an attention
 * layer's ", causal=True"); a lambda layer's is its kind and "()". Written
 * into buf (n bytes, NUL-terminated, cut short when it does not fit).
 * Returns buf, or NULL (buf untouched) for a NULL l or buf or n == 0. */
NN_API const char *nn_layer_describe(const nn_layer *l, char *buf, size_t n);

/** The shape of the layer's output in its last successful forward pass
 * (nn_layer_forward, a model's forward, nn_rnn_forward's output or
 * nn_multihead_attention's): its dims into shape (room for AD_MAX_DIMS;
 * may be NULL) and its rank as the result. -1 before any such pass or for
 * a NULL l. nn_model_summary shows it. */
NN_API int nn_layer_output_shape(const nn_layer *l, int64_t *shape);

/** The layer's own parameters ("weight", "bias"), never NULL for a valid
 * layer (empty for parameterless ones). Owned by the layer. */
NN_API nn_params *nn_layer_params(const nn_layer *l);

/** The layer's buffers ("running_mean", ...; see nn_buffers_new), never NULL
 * for a valid layer (empty for most kinds). Owned by the layer. */
NN_API nn_params *nn_layer_buffers(const nn_layer *l);

/* ================================================================ models */

/** A model: layers in sequence, or a custom forward pass. Opaque. */
typedef struct nn_model nn_model;

/** The forward pass of a custom model: computes the output for input x from
 * the model's parameters (nn_model_param) and layers (nn_model_layer),
 * using ad_ ops and nn_layer_forward. Returns a tape tensor or NULL with
 * the error recorded. nn_model_training(m) tells the mode. */
typedef ad_tensor *(*nn_forward_fn)(nn_model *m, ad_tensor *x, void *ud);

/** A Sequential model: its forward runs the layers in the order added.
 * NULL with AD_ERR_OOM on failure. Free with nn_model_free. */
NN_API nn_model *nn_sequential_new(ad_ctx *ctx);

/** A custom model whose forward is forward(m, x, ud). NULL with AD_ERR_NULL
 * (NULL forward) or AD_ERR_OOM. */
NN_API nn_model *nn_model_new(ad_ctx *ctx, nn_forward_fn forward, void *ud);

/** Frees the model, its layers and the parameters it owns. NULL is a no-op. */
NN_API void nn_model_free(nn_model *m);

/** Appends layer and takes ownership of it, also when the call fails (so
 * nn_model_add(m, nn_dense_new(...)) never leaks). Its name is its index
 * among the layers ("0", "1", ...; activations count, as in PyTorch's
 * nn.Sequential), and its parameters join the model's list as
 * "<index>.weight", "<index>.bias", its buffers the model's buffer list as
 * "<index>.running_mean", ... Returns AD_OK, AD_ERR_NULL (NULL
 * layer: the error that made it NULL is kept), AD_ERR_ARG (duplicate name,
 * or a parameter or buffer name the model already has; a layer made on
 * another context than the model's; a parameter or buffer name that makes
 * "<layer>.<name>" longer than 255 bytes; or a layer that already belongs to a model, which is then
 * left alone) or AD_ERR_OOM. On any failure the model is as it was. */
NN_API ad_status nn_model_add(nn_model *m, nn_layer *layer);

/** nn_model_add with a chosen name (non-empty, shorter than 200 bytes);
 * parameters become "<name>.weight". A name may be a dotted path of
 * non-empty parts, as PyTorch names a module nested in others: layers
 * named "encoder.0" and "encoder.1" save and load "encoder.0.weight", ...
 * as PyTorch's state dict of a Sequential called encoder does. A name that
 * starts or ends with '.' or holds "..", like any name whose
 * "<name>.<parameter>" another layer's parameter already has, is
 * AD_ERR_ARG. */
NN_API ad_status nn_model_add_named(nn_model *m, const char *name, nn_layer *layer);

/** A new parameter owned by the model: a persistent tensor of dtype and
 * shape, filled by init from rng (NN_INIT_DEFAULT means zeros), requiring a
 * gradient, listed as name. Returns it (owned by the model), or NULL with
 * the error recorded (see nn_params_add, nn_init_tensor). */
NN_API ad_tensor *nn_model_add_param(nn_model *m, const char *name, ad_dtype dtype, int ndim,
                                     const int64_t *shape, nn_init init, ad_rng *rng);

/** The parameter named name, or NULL (no error recorded). */
NN_API ad_tensor *nn_model_param(const nn_model *m, const char *name);

/** Number of layers; layer i (owned by the model) or NULL; layer by name. @{ */
NN_API int nn_model_layer_count(const nn_model *m);
NN_API nn_layer *nn_model_layer(const nn_model *m, int i);
NN_API nn_layer *nn_model_find_layer(const nn_model *m, const char *name);
/** @} */

/** All parameters, in order of creation (owned by the model). */
NN_API nn_params *nn_model_params(const nn_model *m);

/** All buffers of the model's layers ("1.running_mean", ...), in order of
 * the layers (a buffer list, owned by the model; never NULL for a valid
 * model). Not trained: give nn_model_params to the optimizer. */
NN_API nn_params *nn_model_buffers(const nn_model *m);

/** The context the model was made on. */
NN_API ad_ctx *nn_model_ctx(const nn_model *m);

/** Runs the model on x in its current mode. Returns a tape tensor, or NULL
 * with the error recorded (AD_ERR_NULL for a NULL x, AD_ERR_STATE for an
 * empty Sequential, AD_ERR_ARG when a custom forward returns NULL without
 * recording an error). */
NN_API ad_tensor *nn_model_forward(nn_model *m, ad_tensor *x);

/** Training (true, the initial mode) or evaluation mode; the setter returns
 * the previous mode. @{ */
NN_API bool nn_model_set_training(nn_model *m, bool training);
NN_API bool nn_model_training(const nn_model *m);
/** @} */

/** Prints a Keras-like table: each layer's name, its kind and settings
 * (nn_layer_describe), the shape of its output in the last forward pass
 * (its first dim is that pass's batch; "-" for a layer that has not run,
 * and no such column before any layer has), and its
 * parameters' names, shapes and sizes, its buffers marked "(buffer)";
 * then the parameter count ("total parameters: N", trainable) and, when
 * there are buffers, their element count ("non-trainable buffers: M", as
 * Keras' non-trainable params). The columns are as wide as their longest
 * entry. Nothing is printed for a NULL m or f. */
NN_API void nn_model_summary(const nn_model *m, FILE *f);

/* ================================================================ losses */

/** How a loss reduces its per-element (or per-sample) values. */
typedef enum nn_reduction {
  NN_MEAN = 0,  /**< mean over elements (MSE, BCE) or samples (cross-entropy, NLL) */
  NN_SUM,       /**< their sum */
  NN_BATCHMEAN, /**< nn_kl_div_loss only: the sum over the batch size (the input's first
                   dim), PyTorch's reduction='batchmean'; the other losses refuse it
                   (AD_ERR_ARG naming the loss) */
  NN_NONE       /**< no reduction, PyTorch's reduction='none': every loss returns its
                   per-element or per-sample losses, a tensor of PyTorch 1.13's shape
                   (each loss says which), on the tape, its gradients flowing as
                   usual; not a scalar, so nn_fit, nn_train_step and nn_evaluate
                   cannot use it (added last: the other values are unchanged) */
} nn_reduction;

/** Every loss: a scalar on the tape from a prediction and a target (with
 * NN_NONE the unreduced losses: pred's shape for the elementwise losses,
 * one per sample where stated), or NULL with an error naming the loss and
 * the shapes. Every loss takes NN_MEAN, NN_SUM and NN_NONE; NN_BATCHMEAN
 * only nn_kl_div_loss; any other value is AD_ERR_ARG ("mse_loss: unknown
 * reduction 9"). pred and target share a float dtype unless stated. Both
 * are checked as an op's inputs are: a freed tensor or a temporary from a
 * tape that was reset is AD_ERR_STATE, another context's AD_ERR_ARG, NULL
 * AD_ERR_NULL. */
typedef ad_tensor *(*nn_loss_fn)(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red);

/** (pred - target)^2. target has pred's shape, or its size (e.g. [N] for
 * [N,1]). */
NN_API ad_tensor *nn_mse_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red);

/** |pred - target| (torch.nn.L1Loss). The gradient at pred == target is
 * 0, and at a NaN difference 0 too, as PyTorch's (sign(0) = sign(NaN) =
 * 0). Targets as in nn_mse_loss; a target that requires a gradient gets
 * minus the prediction's. The mean of an empty tensor is NaN, the sum 0
 * (all the losses below alike). Errors: those of every loss, and
 * AD_ERR_ARG for a reduction other than NN_MEAN, NN_SUM and NN_NONE. */
NN_API ad_tensor *nn_l1_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red);

/** Smooth L1 (torch.nn.SmoothL1Loss) with beta 1: nn_smooth_l1_loss_beta. */
NN_API ad_tensor *nn_smooth_l1_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target,
                                    nn_reduction red);

/** Smooth L1 with beta >= 0: with d = pred - target, 0.5 d^2 / beta where
 * |d| < beta, else |d| - 0.5 beta. The gradient is PyTorch 1.13's: d /
 * beta inside, +-1 from |d| = beta on (the switch point takes the linear
 * side; second derivative 1/beta inside, 0 from there); a NaN d gives a
 * NaN loss and gradient. beta = 0 is the L1 loss in value, but its
 * gradient at d = 0 is -1, for the prediction and the target alike
 * (PyTorch's kernel: d > 0 ? 1 : -1, run on t - p for the target), not
 * nn_l1_loss's 0; beta = infinity gives 0 for finite d. For f32 beta is
 * rounded to float first (a beta below float's smallest is 0, as in
 * PyTorch). Targets as in nn_mse_loss. Errors: those of every loss;
 * AD_ERR_ARG for beta < 0 or NaN ("smooth_l1_loss: beta -1 must be >=
 * 0"), as PyTorch refuses it, and for a reduction other than NN_MEAN,
 * NN_SUM and NN_NONE. */
NN_API ad_tensor *nn_smooth_l1_loss_beta(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target,
                                         nn_reduction red, double beta);

/** Huber (torch.nn.HuberLoss) with delta 1: nn_huber_loss_delta. */
NN_API ad_tensor *nn_huber_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red);

/** Huber with delta > 0: with d = pred - target, 0.5 d^2 where |d| <
 * delta, else delta (|d| - 0.5 delta): delta times nn_smooth_l1_loss_beta
 * with beta = delta. The gradient is d inside, +-delta from |d| = delta
 * on (PyTorch 1.13's, the switch point on the linear side); NaN for a NaN
 * d. delta = infinity is half the squared error. Targets as in
 * nn_mse_loss. Errors: those of every loss; AD_ERR_ARG for delta <= 0 or
 * NaN ("huber_loss: delta 0 must be positive"), as PyTorch refuses it,
 * and for a reduction other than NN_MEAN, NN_SUM and NN_NONE. */
NN_API ad_tensor *nn_huber_loss_delta(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target,
                                      nn_reduction red, double delta);

/** KL divergence, torch.nn.functional.kl_div(input, target, reduction,
 * log_target): input holds log-probabilities (e.g. from
 * NN_ACT_LOG_SOFTMAX), target probabilities, or with log_target
 * log-probabilities. Per element: target (log target - input), 0 where
 * target is 0 (PyTorch's xlogy), or exp(target) (target - input) with
 * log_target. The reduction PyTorch advises is NN_BATCHMEAN: the sum over
 * the batch size (input's first dim; the sum for a 0-d input), the
 * divergence per sample; NN_MEAN divides by the number of elements (batch
 * times classes), which is not the KL divergence, as PyTorch warns;
 * NN_SUM is the sum; NN_NONE the terms, of input's shape. An empty batch
 * gives NaN with NN_MEAN and NN_BATCHMEAN, 0 with NN_SUM. Values and
 * gradients are PyTorch 1.13's,
 * also at the edges: input's gradient is -target (-exp(target)); a
 * target that requires a gradient gets log target + 1 - input (exp(target)
 * (target - input + 1)), which is NaN where target is 0 (PyTorch's xlogy
 * derivative holds 0/0 there); target 0 with input -inf gives a NaN loss;
 * a negative target a NaN loss. Targets as in nn_mse_loss. Not an
 * nn_loss_fn (it takes log_target); wrap it in one for nn_fit. Errors:
 * those of every loss ("kl_div_loss: input [3,4] and target [3,3] differ
 * in size"); AD_ERR_ARG for an unknown reduction. */
NN_API ad_tensor *nn_kl_div_loss(ad_ctx *ctx, ad_tensor *input, ad_tensor *target, nn_reduction red,
                                 bool log_target);

/* The likelihood, ranking and embedding losses below are PyTorch 1.13's,
 * values and gradients, also at a margin's kink (max(0, z) at z = 0 passes
 * the gradient, clamp_min's rule; a NaN z passes none), for NN_MEAN
 * (the mean over the per-element or per-sample losses), NN_SUM and
 * NN_NONE (those losses unreduced: the input's shape for the elementwise
 * ones, Gaussian and Poisson NLL, margin ranking, hinge embedding and soft
 * margin; per sample as each says for the others); each refuses other
 * reductions (AD_ERR_ARG naming it). Arguments are checked
 * as every loss's (AD_ERR_NULL, AD_ERR_STATE, AD_ERR_ARG for another
 * context, AD_ERR_DTYPE for a non-float input or a second tensor of
 * another dtype, AD_ERR_SHAPE naming both shapes; a second tensor of the
 * first's size but another shape is viewed with its shape where stated).
 * A NaN margin, which PyTorch takes and turns into a NaN loss, is refused
 * (AD_ERR_ARG), and so is, for an f32 input, a finite margin of
 * nn_hinge_embedding_loss or nn_multi_margin_loss or an eps of
 * nn_gaussian_nll_loss beyond float32's range, which PyTorch refuses to
 * convert. nn_soft_margin_loss is an nn_loss_fn; the others take
 * more arguments: wrap them in one for nn_fit. */

/** Gaussian negative log-likelihood (torch.nn.GaussianNLLLoss): 0.5
 * (log v + (input - target)^2 / v), plus 0.5 log(2 pi) with full, where v
 * = max(var, eps) (eps finite, >= 0; PyTorch's default 1e-6). var has
 * input's shape, or input's without its last dim, or input's with a last
 * dim 1 (one variance per row: homoscedastic), as torch 1.13 takes it (a
 * 0-d input takes a 0-d var only: torch also takes [1], and broadcasts
 * the loss to [1]); target input's size. As in torch the clamp does not
 * stop var's gradient: where var < eps, var receives 0.5 (1/eps -
 * d^2/eps^2). A NaN var gives NaN. Errors: those above; AD_ERR_SHAPE for
 * a var of another shape ("gaussian_nll_loss: var [3,2] is neither
 * input's shape [3,4] nor ...");
 * AD_ERR_ARG for a negative var element (torch's "var has negative
 * entry"), and for eps negative, infinite or NaN (torch takes those). */
NN_API ad_tensor *nn_gaussian_nll_loss(ad_ctx *ctx, ad_tensor *input, ad_tensor *target,
                                       ad_tensor *var, bool full, double eps, nn_reduction red);

/** Poisson negative log-likelihood (torch.nn.PoissonNLLLoss): exp(input)
 * - target input with log_input, else input - target log(input + eps)
 * (eps finite, >= 0; PyTorch's default 1e-8); full adds the Stirling term
 * target log target - target + 0.5 log(2 pi target) where target > 1 (0
 * elsewhere). target has input's size. A target that requires a gradient
 * gets torch's: with full, NaN where target <= 0 (torch's masked Stirling
 * term still holds log 0 there); the second derivatives in such a target
 * are NaN too, where torch's are finite for target < 0 (those of the
 * input are torch's). Errors: those above; AD_ERR_ARG for a bad eps. */
NN_API ad_tensor *nn_poisson_nll_loss(ad_ctx *ctx, ad_tensor *input, ad_tensor *target,
                                      bool log_input, bool full, double eps, nn_reduction red);

/** torch.nn.MarginRankingLoss: max(0, -y (x1 - x2) + margin) elementwise.
 * x2 and y have x1's size; y may hold any value (torch does not check it)
 * and gets a gradient, -(x1 - x2) where the loss is active. Errors: those
 * above ("margin_ranking_loss: x1 [4] and x2 [3] differ in size"). */
NN_API ad_tensor *nn_margin_ranking_loss(ad_ctx *ctx, ad_tensor *x1, ad_tensor *x2, ad_tensor *y,
                                         double margin, nn_reduction red);

/** torch.nn.HingeEmbeddingLoss: x where y = 1, max(0, margin - x) where y
 * = -1; as torch 1.13's kernel, any other y (NaN too) gets both terms
 * summed. y has x's size and gets no gradient. Errors: those above. */
NN_API ad_tensor *nn_hinge_embedding_loss(ad_ctx *ctx, ad_tensor *x, ad_tensor *y, double margin,
                                          nn_reduction red);

/** torch.nn.SoftMarginLoss: log(1 + exp(-y x)), y of x's size (any value;
 * y gets a gradient here, where torch refuses to give one). Computed as
 * softplus(-y x) (ad_softplus): torch's value within exp(-20) relative,
 * and finite where torch's exp overflows (-y x above about 88 in f32,
 * 709 in f64: torch's loss inf and gradient NaN, here -y x and -y).
 * Errors: those above. */
NN_API ad_tensor *nn_soft_margin_loss(ad_ctx *ctx, ad_tensor *x, ad_tensor *y, nn_reduction red);

/** torch.nn.CosineEmbeddingLoss: with cos the cosine similarity of the rows
 * of x1 and x2 ([N,D] each, y [N]; or [D] each and a 0-d y), 1 - cos where
 * y = 1, max(0, cos - margin) where y = -1, and 0 for any other y (torch
 * 1.13's kernel). As torch, cos = x1.x2 / sqrt((|x1|^2 + 1e-12) (|x2|^2 +
 * 1e-12)), 1e-12 taken as a float as torch does (9.99999996e-13, also in
 * f64): a zero vector has cos 0 and a large finite gradient (about 1 /
 * (1e-6 |x2|) for x1 = 0), not NaN. NN_MEAN is the mean over the N pairs;
 * NN_NONE gives [N] (0-d for one pair).
 * y gets no gradient. Errors: those above; AD_ERR_SHAPE for x1 not 1-D or
 * 2-D, x2 of another shape, or a y that does not fit. */
NN_API ad_tensor *nn_cosine_embedding_loss(ad_ctx *ctx, ad_tensor *x1, ad_tensor *x2, ad_tensor *y,
                                           double margin, nn_reduction red);

/** torch.nn.TripletMarginLoss: max(0, margin + d(a, pos) - d(a, neg)) per
 * row, d torch's pairwise_distance over the last dim, ||u - v + eps||_p
 * (eps added to the difference; PyTorch's defaults margin 1, p 2, eps
 * 1e-6); with swap d(a, neg) is min(d(a, neg), d(pos, neg)) (a tie shares
 * the gradient). A zero distance (eps 0, equal rows) has gradient 0, as
 * torch's norm, and second derivatives 0 (torch's are NaN); small
 * distances with p other than 1 and 2 keep their derivatives where
 * torch's float32 ones overflow or vanish (nn_pairwise_distance). anchor, positive
 * and negative share one shape of at least 1 dim; NN_NONE gives one loss
 * per row, anchor's shape without its last dim (0-d for 1-D inputs).
 * Errors: those above; AD_ERR_SHAPE for shapes that differ; AD_ERR_ARG
 * for p not positive and finite (torch takes p <= 0, which is no
 * distance), and for a bad eps. */
NN_API ad_tensor *nn_triplet_margin_loss(ad_ctx *ctx, ad_tensor *anchor, ad_tensor *positive,
                                         ad_tensor *negative, double margin, double p, double eps,
                                         bool swap, nn_reduction red);

/** torch.nn.MultiLabelSoftMarginLoss: per sample, -sum_c w_c (t_c log
 * sigmoid(x_c) + (1 - t_c) log sigmoid(-x_c)) / C over the last dim (C
 * classes) of input (at least 1-D); target has input's size (multi-hot or
 * any value; it gets a gradient). weight (NULL for none) broadcasts to
 * input's shape, e.g. [C], and gets its gradient as in torch. log sigmoid
 * is -softplus(-x) (within exp(-20) relative of torch's). NN_MEAN is the
 * mean over the samples; NN_NONE gives one per sample, input's shape
 * without its last dim (0-d for a 1-D input). An input with no class (C =
 * 0) gives each sample 0 / 0 = NaN, as torch. Errors: those above;
 * AD_ERR_SHAPE for a 0-d input or a weight that does not broadcast. */
NN_API ad_tensor *nn_multilabel_soft_margin_loss(ad_ctx *ctx, ad_tensor *input, ad_tensor *target,
                                                 ad_tensor *weight, nn_reduction red);

/** torch.nn.MultiMarginLoss: for scores [N,C] and AD_I32 labels [N] (or
 * [C] and one label, 0-d or [1]), per sample sum_{i != y} w_y max(0,
 * margin - x_y + x_i)^p / C with p 1 or 2. As torch 1.13's kernel, a term
 * counts only where margin - x_y + x_i > 0 strictly: at 0 it adds no
 * gradient (p = 1 too), and a NaN term is skipped, value and gradient.
 * weight (NULL, or [C] in input's dtype) is a constant: one that requires
 * a gradient is refused, as PyTorch refuses it. NN_NONE gives [N] (for
 * [C], the label's shape: 0-d or [1], as torch). Errors: those above;
 * AD_ERR_DTYPE for labels not AD_I32; AD_ERR_SHAPE for shapes that do not
 * fit; AD_ERR_ARG for a label outside 0..C-1 ("multi_margin_loss: label 3
 * of sample 1 is outside 0..2") and for p other than 1 and 2. */
NN_API ad_tensor *nn_multi_margin_loss(ad_ctx *ctx, ad_tensor *input, ad_tensor *labels, int p,
                                       double margin, ad_tensor *weight, nn_reduction red);

/** Connectionist temporal classification, torch.nn.CTCLoss /
 * F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank,
 * reduction, zero_infinity) of PyTorch 1.13: per sample n, -log of the sum
 * over all alignments of its target to its first input_lengths[n] frames
 * (labels repeated over frames, blanks between; two equal labels in a row
 * need a blank between them).
 * - log_probs: [T,N,C] float log-probabilities (e.g. ad_log_softmax over
 *   C), or [T,C] for one sample (unbatched). Frames past a sample's input
 *   length are not read (NaN there is fine).
 * - targets: AD_I32 labels in 0..C-1 other than blank, either padded [N,S]
 *   (sample n's first target_lengths[n] entries; the rest is not read) or
 *   concatenated 1-D (the targets one after another; its size the sum of
 *   target_lengths), N = 1 for an unbatched log_probs (as PyTorch: there
 *   1-D targets are the whole target, 2-D ones [1,S] padded).
 * - input_lengths, target_lengths: arrays of N (1 unbatched) counts, read
 *   during the call (PyTorch takes lists or tensors): input_lengths[n] in
 *   0..T, target_lengths[n] >= 0 (and <= S when padded).
 * - blank in 0..C-1 (PyTorch's default 0).
 * - red: NN_SUM, the sum of the losses; NN_MEAN, the mean over the
 *   batch of each loss divided by max(target length, 1) (PyTorch's rule);
 *   NN_NONE, the per-sample losses [N] (0-d for an unbatched log_probs).
 * - zero_infinity: an impossible sample (input shorter than its target plus
 *   the blanks its repeated labels need, or every alignment through a
 *   log-probability of -inf) has loss inf and, as in PyTorch, NaN gradient
 *   on its frames; with zero_infinity its loss and gradient are 0.
 * The gradient is the true derivative, to any order.
 * Deliberate difference: PyTorch's native backward returns exp(log_probs)
 * - posterior for log_probs (it assumes they came from a log_softmax);
 * here log_probs get the true -posterior. Through a log_softmax both give
 * the same gradient of the logits (see docs/porting-from-pytorch.md).
 * Also: a log-probability below -1e30 counts as -inf, a log-likelihood
 * below -5e29 as impossible; an input length 0 with a non-empty target is
 * inf (PyTorch reads out of range there). The result is on the tape: a
 * scalar, or the per-sample losses with NN_NONE. Errors (NULL returned, message naming ctc_loss):
 * AD_ERR_NULL (ctx, a tensor or a lengths array NULL), AD_ERR_STATE / AD_ERR_ARG for a freed tensor
 * or one of another context, AD_ERR_DTYPE (log_probs not float, targets not AD_I32), AD_ERR_SHAPE
 * (log_probs not 2-D or 3-D or with T or C 0, targets that do not fit, concatenated targets whose
 * size is not the lengths' sum, more elements than i32 indices reach), AD_ERR_ARG (a length out of
 * range, named with its sample; a label out of range or equal to blank, named with its position,
 * which PyTorch does not check; blank out of range; NN_BATCHMEAN or an unknown reduction),
 * AD_ERR_OOM. Cost: one pass over [T, N, 2S+1] (S the longest target)
 * forward and one back (the op ad_ctc_alpha), and a few ops. */
NN_API ad_tensor *nn_ctc_loss(ad_ctx *ctx, ad_tensor *log_probs, ad_tensor *targets,
                              const int64_t *input_lengths, const int64_t *target_lengths,
                              int blank, nn_reduction red, bool zero_infinity);

/** Binary cross-entropy from probabilities pred in [0,1]:
 * -(t log p + (1-t) log(1-p)), each log clamped at -100 as in PyTorch
 * (the op ad_binary_cross_entropy, then the reduction). The gradient is
 * PyTorch's, dp = (p - t) / max(p (1 - p), 1e-12) per element, not that
 * of the clamped logs: a confident wrong prediction (p = 0 for t = 1, or
 * p = 1 for t = 0) gets about -1e12 or 1e12 (times 1/N for NN_MEAN), not
 * 0. NN_NONE gives the elements, of pred's shape. A target that requires
 * a gradient gets log(1-p) - log p (infinite at
 * p = 0 or 1), as in PyTorch 1.13. Targets as in nn_mse_loss. A prediction
 * outside [0, 1], or NaN, is refused (AD_ERR_ARG naming it and its
 * element), as PyTorch refuses it. */
NN_API ad_tensor *nn_bce_loss(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red);

/** Binary cross-entropy from logits z, stable for any z:
 * softplus(z) - t z (with NN_NONE per element, of the logits' shape),
 * computed as (1 - t) z + softplus(-z) (PyTorch's form) where z > 0 and
 * as softplus(z) - t z elsewhere, so that neither subtracts two large
 * terms. Infinite logits: z = +inf gives (1 - t) inf (inf, or NaN for t =
 * 1), as PyTorch; z = -inf gives t inf where PyTorch 1.13 gives NaN (its
 * form adds -inf and inf there), a deliberate difference; the gradients
 * are PyTorch's, sigmoid(z) - t for z and -z for a target that requires
 * one (infinite there). */
NN_API ad_tensor *nn_bce_with_logits_loss(ad_ctx *ctx, ad_tensor *logits, ad_tensor *target,
                                          nn_reduction red);

/** Categorical cross-entropy from logits [N,C] (or, as F.cross_entropy,
 * [N, C, d1, ...] with labels [N, d1, ...] or probabilities of the logits'
 * shape: nn_cross_entropy_loss_ext without options, errors as its). target
 * is either AD_I32
 * labels [N] in 0..C-1 (through the fused, stable ad_softmax_cross_entropy)
 * or float [N,C] one-hot or probability rows: -sum_c t log_softmax(z); a
 * float target of another shape is refused (AD_ERR_SHAPE), also one of as
 * many elements, as PyTorch refuses it. Errors name bad labels:
 * "cross_entropy_loss: label 12 of sample 3 is outside 0..9". An empty
 * batch (N = 0) gives NaN with NN_MEAN and 0 with NN_SUM, as in PyTorch
 * (nn_nll_loss likewise). NN_NONE gives the losses of the N samples, [N]
 * (with labels, -log_softmax(z)[n, label_n]: composed of ops, not the
 * fused op, which yields only their mean or sum). */
NN_API ad_tensor *nn_cross_entropy_loss(ad_ctx *ctx, ad_tensor *logits, ad_tensor *target,
                                        nn_reduction red);

/** Negative log-likelihood: -logp[n, label_n] for log-probabilities logp
 * [N,C] (e.g. from NN_ACT_LOG_SOFTMAX) and AD_I32 labels [N]; NN_NONE
 * gives those N losses, [N]. */
NN_API ad_tensor *nn_nll_loss(ad_ctx *ctx, ad_tensor *logp, ad_tensor *labels, nn_reduction red);

/** Options of nn_sequence_cross_entropy_loss. All-zero: nothing ignored,
 * classes in dim 1. */
typedef struct nn_sequence_ce_opts {
  bool ignore;          /**< positions whose label is ignore_index count for nothing */
  int32_t ignore_index; /**< PyTorch's default is -100; a padding token (0) works too */
  bool class_last;      /**< logits [N, T..., C] (a recurrent layer's output) in place of
                           PyTorch's [N, C, T...]; labels [N, T...] either way */
} nn_sequence_ce_opts;

/** Cross-entropy for sequence models, PyTorch's F.cross_entropy(logits,
 * labels, ignore_index=..., reduction=...) on K-dim logits: logits [N, C,
 * T...] (or with class_last [N, T..., C], read as rows of C: a view, no
 * copy) and
 * AD_I32 labels [N, T...] in 0..C-1 or ignore_index, through
 * ad_softmax_cross_entropy_ext. NN_MEAN is the mean over the positions not
 * ignored (NaN when all are), NN_SUM their sum; NN_NONE the loss of each
 * position, the labels' shape [N, T...], 0 at the ignored ones (composed
 * of ops, as nn_cross_entropy_loss_ext's); ignored positions add neither
 * loss nor gradient. opts may be NULL. Errors name the loss and the
 * shapes (AD_ERR_SHAPE: logits under 2 dims, labels that are not logits'
 * shape without the class dim), AD_ERR_DTYPE (logits not float, labels not
 * AD_I32), AD_ERR_ARG (a label out of range that is not ignore_index,
 * named with its position; an unknown reduction), AD_ERR_NULL. Not an
 * nn_loss_fn (it takes options); wrap it in one for nn_train_step. */
NN_API ad_tensor *nn_sequence_cross_entropy_loss(ad_ctx *ctx, ad_tensor *logits, ad_tensor *labels,
                                                 nn_reduction red, const nn_sequence_ce_opts *opts);

/** Options of nn_cross_entropy_loss_ext and nn_nll_loss_ext, PyTorch 1.13's
 * arguments of F.cross_entropy and F.nll_loss. All-zero: no weights, no
 * smoothing, nothing ignored, classes in dim 1. */
typedef struct nn_cross_entropy_opts {
  ad_tensor *weight;      /**< [C] class weights in the logits' dtype, or NULL. With class
                             labels it is a constant (PyTorch refuses one that requires a
                             gradient, and so does this); with probability targets the
                             gradient flows to it, as in PyTorch */
  double label_smoothing; /**< in [0, 1]; cross-entropy only (nll_loss refuses it) */
  bool ignore;            /**< positions whose label is ignore_index count for nothing */
  int32_t ignore_index;   /**< PyTorch's default is -100; a padding token (0) works too */
  bool class_last;        /**< logits [N, T..., C] in place of [N, C, T...] (a view) */
} nn_cross_entropy_opts;

/** PyTorch 1.13's F.cross_entropy(logits, target, weight, ignore_index,
 * reduction, label_smoothing). logits are [N, C, T...] (T... may be none;
 * with class_last [N, T..., C]). target is either AD_I32 class labels
 * [N, T...] in 0..C-1 (or ignore_index) or float probabilities of the
 * logits' shape. Per position p, with logp = log_softmax over the classes,
 * label y, eps = label_smoothing and w the weights (all 1 without them):
 *   labels:        l_p = (1 - eps) w_y (-logp_y) + eps/C sum_c w_c (-logp_c)
 *   probabilities: l_p = -sum_c w_c ((1 - eps) t_c + eps/C) logp_c
 * NN_SUM sums l_p over the positions not ignored. NN_MEAN divides that sum,
 * with labels, by the sum of w_y over the positions not ignored (their
 * count without weights; NaN when it is 0: every position ignored, or only
 * classes of weight 0 present), and with probabilities by the number of
 * positions N T... (the weights are not summed there), exactly as PyTorch
 * does. NN_NONE gives l_p for every position, the labels' shape [N, T...]
 * (0 at an ignored one), as PyTorch's reduction='none'; with labels it is
 * always the composition (the fused op yields only a mean or a sum).
 * Ignored positions add neither loss nor gradient (also where their
 * logits are NaN or infinite, like ad_softmax_cross_entropy_ext; PyTorch's
 * log_softmax gives their gradient NaN there). Without weight and
 * smoothing this is the fused ad_softmax_cross_entropy_ext (labels) or
 * nn_cross_entropy_loss (probabilities [N,C]), same bits; otherwise a
 * composition of ops, differentiable to any order. opts may be NULL.
 * Errors name the loss: AD_ERR_SHAPE (logits under 2 dims or C = 0, labels
 * not the logits' shape without the class dim, a float target not the
 * logits' shape, a weight not [C]), AD_ERR_DTYPE (logits not float, a
 * weight or float target of another dtype), AD_ERR_ARG (a label out of
 * range that is not ignore_index, named with its position; label_smoothing
 * outside [0, 1] or NaN, which PyTorch refuses above 1 and ignores below
 * 0; ignore with probability targets, which PyTorch refuses for
 * ignore_index >= 0; a weight that requires a gradient with labels; an
 * unknown reduction), AD_ERR_STATE / AD_ERR_ARG for a freed weight or one
 * of another context, AD_ERR_NULL. Not an nn_loss_fn (it takes options);
 * wrap it in one for nn_fit. */
NN_API ad_tensor *nn_cross_entropy_loss_ext(ad_ctx *ctx, ad_tensor *logits, ad_tensor *target,
                                            nn_reduction red, const nn_cross_entropy_opts *opts);

/** PyTorch 1.13's F.nll_loss(logp, labels, weight, ignore_index,
 * reduction) on log-probabilities logp [N, C, T...] (or class_last) and
 * AD_I32 labels [N, T...]: l_p = -w_y logp[p, y]; NN_MEAN divides the sum
 * by the sum of w_y over the positions not ignored (NaN when it is 0);
 * NN_NONE gives l_p, the labels' shape (0 at an ignored position).
 * Only the labelled entries are read (a -inf or NaN elsewhere, a log of a
 * zero probability, is left out of the loss and its gradient). Options and
 * errors as nn_cross_entropy_loss_ext's; label_smoothing must be 0. Without
 * weight and ignore on [N,C] this is nn_nll_loss, same bits. */
NN_API ad_tensor *nn_nll_loss_ext(ad_ctx *ctx, ad_tensor *logp, ad_tensor *labels, nn_reduction red,
                                  const nn_cross_entropy_opts *opts);

/** Options of nn_bce_loss_ext and nn_bce_with_logits_loss_ext. Both
 * tensors are in the prediction's dtype, broadcast (NumPy rules) to the
 * prediction's shape, and constants: one that requires a gradient is
 * refused, as PyTorch refuses it. */
typedef struct nn_bce_opts {
  ad_tensor *weight;     /**< multiplies each element's loss, or NULL */
  ad_tensor *pos_weight; /**< with logits only: weights the positive term, e.g. [C]
                            broadcast over the last dim; NULL for none */
} nn_bce_opts;

/** PyTorch 1.13's F.binary_cross_entropy(pred, target, weight, reduction):
 * w l elementwise, l as in nn_bce_loss; NN_MEAN is the mean over the
 * elements (not divided by the weights' sum), NN_NONE w l, of pred's
 * shape. A pos_weight is refused
 * (AD_ERR_ARG: PyTorch's binary_cross_entropy has none). Without a weight
 * this is nn_bce_loss, same bits. Errors as nn_bce_loss's, and for a
 * weight: AD_ERR_SHAPE (does not broadcast to pred's shape), AD_ERR_DTYPE,
 * AD_ERR_ARG (requires a gradient), AD_ERR_STATE (freed). opts may be
 * NULL. */
NN_API ad_tensor *nn_bce_loss_ext(ad_ctx *ctx, ad_tensor *pred, ad_tensor *target, nn_reduction red,
                                  const nn_bce_opts *opts);

/** PyTorch 1.13's F.binary_cross_entropy_with_logits(z, target, weight,
 * reduction, pos_weight): w ((1 - t) z + (1 + (pw - 1) t) softplus(-z)),
 * which is w (softplus(z) - t z) without pos_weight; NN_MEAN is the mean
 * over the elements, NN_NONE those elements, of the logits' shape. Where
 * z <= 0 the form is w ((1 + (pw - 1) t) softplus(z) - pw t z), which
 * adds no terms of opposite signs (nn_bce_with_logits_loss's rule for
 * infinite logits holds here too; a target's gradient is PyTorch's,
 * pw softplus(-z) - softplus(z), inf at z = -inf). Without
 * options this is nn_bce_with_logits_loss, same bits. Errors as
 * nn_bce_loss_ext's. opts may be NULL. */
NN_API ad_tensor *nn_bce_with_logits_loss_ext(ad_ctx *ctx, ad_tensor *logits, ad_tensor *target,
                                              nn_reduction red, const nn_bce_opts *opts);

/** Number of samples where pred agrees with target: with AD_I32 labels [N]
 * and pred [N,C], argmax (first maximum) equals the label; with float
 * targets [N,C], C > 1, the argmaxes agree; with one column (or 1-d), pred
 * > threshold agrees with target > 0.5 (threshold 0.5 for probabilities, 0
 * for logits). -1 when the shapes do not fit, or pred or target is NULL
 * or freed. */
NN_API int64_t nn_count_correct(const ad_tensor *pred, const ad_tensor *target, double threshold);

/* ============================================================ optimizers */

/** An optimizer over a parameter list, with its state. Opaque. */
typedef struct nn_optimizer nn_optimizer;

/** The optimizers; nn_opt_config gives their settings. */
typedef enum nn_opt_kind {
  NN_OPT_SGD = 0,
  NN_OPT_ADAGRAD,
  NN_OPT_RMSPROP,
  NN_OPT_ADAM,
  NN_OPT_ADAMW,
  NN_OPT_ADAMAX,   /**< torch.optim.Adamax (added after AdamW: values never renumbered) */
  NN_OPT_NADAM,    /**< torch.optim.NAdam; momentum_decay: nn_opt_config_ext */
  NN_OPT_RADAM,    /**< torch.optim.RAdam */
  NN_OPT_ADADELTA, /**< torch.optim.Adadelta; rho: nn_opt_config_ext */
  NN_OPT_ASGD,     /**< torch.optim.ASGD; lambd, asgd_alpha, t0: nn_opt_config_ext */
  NN_OPT_RPROP     /**< torch.optim.Rprop; etas, step sizes: nn_opt_config_ext */
} nn_opt_kind;

/** Optimizer settings, with PyTorch's meaning; start from nn_opt_defaults.
 * Per step t = 1, 2, ... (the parameter's own step count: the steps in
 * which it had a gradient, as PyTorch counts them), for each parameter p
 * with gradient g:
 *   @code{.unparsed}
 *   SGD      g += wd p; b = momentum b + (1 - dampening) g (b = g at
 *            t = 1); g = nesterov ? g + momentum b : b; p -= lr g
 *   Adagrad  g += wd p; s += g^2; p -= lr / (1 + (t-1) lr_decay) g / (sqrt s + eps)
 *   RMSProp  g += wd p; v = alpha v + (1-alpha) g^2; (centered: m = alpha m
 *            + (1-alpha) g, v' = v - m^2); d = g / (sqrt v' + eps);
 *            momentum: b = momentum b + d, p -= lr b; else p -= lr d
 *   Adam     g += wd p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *            p -= lr / (1-b1^t) m / (sqrt v / sqrt(1-b2^t) + eps)
 *            amsgrad: vmax = max(vmax, v) (NaN if either is), and vmax
 *            in place of v in the update
 *   AdamW    p *= 1 - lr wd, then Adam without the L2 term.
 *   Adamax   g += wd p; m = b1 m + (1-b1) g; u = max(b2 u, |g| + eps);
 *            p -= lr / (1-b1^t) m / u
 *   NAdam    g += wd p; mu_k = b1 (1 - 0.5 0.96^(k momentum_decay));
 *            P = P mu_t (P, "mu_product", starts at 1); m, v as Adam;
 *            d = sqrt(v / (1-b2^t)) + eps;
 *            p -= lr (1-mu_t) / (1-P) g / d;
 *            p -= lr mu_{t+1} / (1 - P mu_{t+1}) m / d
 *   RAdam    g += wd p; m, v as Adam; r_inf = 2 / (1-b2) - 1;
 *            r_t = r_inf - 2 t b2^t / (1-b2^t); m' = m / (1-b1^t);
 *            r_t > 5: p -= m' lr (sqrt(1-b2^t) / (sqrt v + eps)) rect,
 *            rect = sqrt((r_t-4)(r_t-2) r_inf / ((r_inf-4)(r_inf-2) r_t));
 *            else (the first steps, about 5 with b2 = 0.999): p -= m' lr
 *   Adadelta g += wd p; v = rho v + (1-rho) g^2 ("square_avg");
 *            d = sqrt(u + eps) / sqrt(v + eps) g; u = rho u + (1-rho) d^2
 *            ("acc_delta"); p -= lr d
 *   ASGD     g += wd p; p *= 1 - lambd eta; p -= eta g; ax = mu != 1 ?
 *            ax + mu (p - ax) : p; then eta = lr / (1 + lambd lr t)^asgd_alpha,
 *            mu = 1 / max(1, t - t0) (eta and mu per parameter, 0-d
 *            float32 as PyTorch's; eta starts at lr)
 *   Rprop    s = step size (starts at lr), q = g prev; s = clamp(s f,
 *            step_size_min, step_size_max) with f = etaplus (q > 0),
 *            etaminus (q < 0; then also g = 0) or 1 (q = 0 or NaN);
 *            p -= sign(g) s; prev = g
 *   @endcode
 * maximize (SGD, Adagrad, RMSProp, Adam, AdamW, Adamax, Adadelta, ASGD,
 * Rprop, as PyTorch 1.13's: NAdam and RAdam refuse it) negates g first,
 * before the L2 term, so the step ascends. Before the update, gradients
 * are clamped to [-clip_value, clip_value] (when > 0), then scaled to
 * global norm at most clip_norm (when > 0).
 *
 * Layout: amsgrad and maximize were added in what was padding after
 * nesterov, so the struct's size and the other members' offsets are those
 * of earlier versions. A caller that fills it member by member without
 * nn_opt_defaults or zeroing may leave garbage there: start from
 * nn_opt_defaults. NAdam's momentum_decay needs a double, for which the
 * struct has no room: it is in nn_opt_config_ext (nn_optimizer_new gives
 * PyTorch's default, 4e-3). */
typedef struct nn_opt_config {
  nn_opt_kind kind;    /**< the algorithm */
  double lr;           /**< learning rate */
  double momentum;     /**< SGD, RMSProp */
  double dampening;    /**< SGD */
  bool nesterov;       /**< SGD: needs momentum > 0 and dampening 0 */
  bool amsgrad;        /**< Adam, AdamW: keep vmax ("max_exp_avg_sq"); added
                          in former padding */
  bool maximize;       /**< all but NAdam and RAdam: ascend (see above);
                          added in former padding */
  double weight_decay; /**< L2 added to the gradient; decoupled in AdamW;
                          not Rprop's */
  /** Adam, AdamW, Adamax, NAdam, RAdam @{ */
  double beta1, beta2;
  /** @} */
  double alpha;               /**< RMSProp smoothing constant */
  bool centered;              /**< RMSProp */
  double eps;                 /**< added to the denominator (Adamax: to |g|;
                                 Adadelta: under both square roots); not
                                 ASGD's or Rprop's */
  double lr_decay;            /**< Adagrad */
  double initial_accumulator; /**< Adagrad */
  double clip_norm;           /**< > 0: clip the global gradient norm */
  double clip_value;          /**< > 0: clip each gradient element */
} nn_opt_config;

/** PyTorch's defaults for kind with learning rate lr: Adagrad eps 1e-10;
 * RMSProp alpha 0.99, eps 1e-8; Adam, AdamW, Adamax, NAdam and RAdam betas
 * (0.9, 0.999), eps 1e-8; AdamW weight decay 0.01; Adadelta eps 1e-6
 * (its rho: nn_opt_defaults_ext); everything else 0 and
 * false. (PyTorch's default lr differs per kind; here it is the caller's.) */
NN_API nn_opt_config nn_opt_defaults(nn_opt_kind kind, double lr);

/** The settings nn_opt_config has no room for (its layout is fixed): a
 * separate struct, as nn_schedule_ext is for nn_schedule, rather than a
 * member of nn_opt_config reused under another meaning, so that every
 * member means one thing for every kind and a configuration printed or
 * compared shows it under its own name. Start from nn_opt_defaults_ext. */
typedef struct nn_opt_config_ext {
  nn_opt_config base;    /**< the settings of nn_opt_config */
  double momentum_decay; /**< NAdam: PyTorch's momentum_decay, finite and >= 0 */
  double rho;            /**< Adadelta: PyTorch's rho, in [0,1] */
  double lambd;          /**< ASGD: PyTorch's lambd, finite and >= 0 */
  double asgd_alpha;     /**< ASGD: PyTorch's alpha (eta's power; not
                            RMSProp's alpha), finite */
  double t0;             /**< ASGD: PyTorch's t0, the step averaging starts
                            after; not NaN (+inf: never) */
  double etaminus;       /**< Rprop: PyTorch's etas[0], in (0,1) */
  double etaplus;        /**< Rprop: PyTorch's etas[1], finite and > 1 */
  double step_size_min;  /**< Rprop: PyTorch's step_sizes[0], finite and >= 0 */
  double step_size_max;  /**< Rprop: PyTorch's step_sizes[1], >= step_size_min */
} nn_opt_config_ext;

/** nn_opt_defaults(kind, lr) as base, and PyTorch's defaults for the
 * settings of kind here: NAdam momentum_decay 4e-3; Adadelta rho 0.9;
 * ASGD lambd 1e-4, asgd_alpha 0.75, t0 1e6; Rprop etas (0.5, 1.2),
 * step_sizes (1e-6, 50); 0 for the settings of the other kinds (which do
 * not read them). */
NN_API nn_opt_config_ext nn_opt_defaults_ext(nn_opt_kind kind, double lr);

/** An optimizer over the tensors of params at the time of the call (the list
 * must outlive it; tensors added to it later are neither stepped nor
 * clipped by this optimizer). A tensor listed twice (tied weights) is
 * stepped once, with state under its first name, as PyTorch's optimizers
 * over module.parameters(). Its state tensors (zeros, one per parameter and kind of
 * state, plus a step counter) are allocated here. Returns NULL with
 * AD_ERR_NULL or AD_ERR_ARG (a setting out of range, naming it, as
 * PyTorch's constructors check: lr, eps, weight decay >= 0, betas in
 * [0,1), NaN refused; or an option PyTorch 1.13's optimizer of that kind
 * lacks: amsgrad but on Adam and AdamW, maximize on NAdam and RAdam; for
 * Adadelta, ASGD and Rprop every member of nn_opt_config but lr,
 * maximize, clipping and (not Rprop) weight_decay, eps (Adadelta) must be
 * 0 or false, as nn_opt_defaults gives them) or AD_ERR_OOM. Free with
 * nn_optimizer_free. */
NN_API nn_optimizer *nn_optimizer_new(nn_params *params, const nn_opt_config *cfg);

/** nn_optimizer_new with the settings of nn_opt_config_ext
 * (nn_optimizer_new(params, &c) is nn_optimizer_new_ext with base c and
 * the other members of nn_opt_defaults_ext(c.kind, c.lr)). AD_ERR_ARG also
 * for a momentum_decay that is negative, infinite or NaN, and, for the
 * kind that reads it, a setting outside the range its member's comment
 * gives (naming it; NaN refused). */
NN_API nn_optimizer *nn_optimizer_new_ext(nn_params *params, const nn_opt_config_ext *cfg);

/** Shorthands for nn_optimizer_new with nn_opt_defaults and these settings. @{ */
NN_API nn_optimizer *nn_sgd_new(nn_params *params, double lr, double momentum, bool nesterov,
                                double weight_decay);
NN_API nn_optimizer *nn_adam_new(nn_params *params, double lr);
NN_API nn_optimizer *nn_adamw_new(nn_params *params, double lr, double weight_decay);
NN_API nn_optimizer *nn_rmsprop_new(nn_params *params, double lr);
NN_API nn_optimizer *nn_adagrad_new(nn_params *params, double lr);
/** @} */

/** Frees the optimizer and its state. NULL is a no-op. */
NN_API void nn_optimizer_free(nn_optimizer *opt);

/** One update of every parameter that requires grad and has a gradient
 * (others are skipped, as PyTorch skips grad None: their state and their
 * own step count stay). Plain loops over the parameter and gradient data;
 * not recorded. Increments the optimizer's step counter and the step count
 * of each parameter updated. Each element goes through the operations of
 * torch.optim's CPU step, in its order and rounding (fused multiply-adds
 * where PyTorch's kernels use them), so a float32 run matches PyTorch's
 * float32 run to about 1e-7 relative (tests/test_nn_optim.c checks 1e-6).
 * PyTorch's update rules, with one difference: a first moment or momentum
 * buffer whose magnitude falls below the smallest normal number of its
 * dtype is stored as 0 (a subnormal one would stay for ever on a weight
 * whose gradient is 0, and slow every step); with Adam's default lr and
 * eps that changes a float parameter only if it is itself below about
 * 1e-25. The parameters and the state are written in place, each write
 * noted (ad_tensor_mark_modified): a backward through ops recorded before
 * the step that read them refuses with AD_ERR_STATE. Returns AD_OK,
 * AD_ERR_NULL, AD_ERR_STATE (nothing read or changed) when a parameter was
 * freed since nn_optimizer_new: its model or list must outlive the
 * optimizer, or AD_ERR_OOM when a write cannot be noted (nothing
 * changed). */
NN_API ad_status nn_optimizer_step(nn_optimizer *opt);

/** The step nn_optimizer_step takes (clipping over every gradient, the
 * counters), but updating only the elements [lo[i], hi[i]) of parameter i
 * (arrays of nn_params_count entries over the optimizer's list, followed
 * by those of each group's list added by nn_optimizer_add_param_group, in
 * order; lo[i] == hi[i]: none): the parameters and state outside the ranges are left as
 * they are. Processes that hold the same gradients and cut the elements
 * between them (a sharded optimizer step, as nn_dist does) then exchange
 * the parameters and end with nn_optimizer_step's result; each holds the
 * optimizer state of its own ranges only. AD_ERR_NULL (NULL lo or hi),
 * AD_ERR_ARG naming the parameter for a range outside [0, its size]. */
NN_API ad_status nn_optimizer_step_ranges(nn_optimizer *opt, const int64_t *lo, const int64_t *hi);

/** Zeroes the gradients of the optimizer's parameters (as
 * nn_params_zero_grad). A step never clears a gradient (the clipping its
 * configuration asks for, clip_value and clip_norm, scales the gradients
 * in place first, as PyTorch's clip_grad_*_ do); a parameter whose
 * gradient is NULL (zeroed and not reached by backward since) is skipped,
 * its state untouched, as in PyTorch with zero_grad(set_to_none=True) (the
 * default since 2.0; 1.13's default leaves zero gradients, and its
 * optimizers then still step such a parameter: weight decay, momentum). */
NN_API void nn_optimizer_zero_grad(nn_optimizer *opt);

/** The settings (lr is the current learning rate). */
NN_API const nn_opt_config *nn_optimizer_config(const nn_optimizer *opt);

/** The settings with those of nn_opt_config_ext (base as
 * nn_optimizer_config's), owned by opt; NULL for NULL. */
NN_API const nn_opt_config_ext *nn_optimizer_config_ext(const nn_optimizer *opt);

/** Current learning rate (group 0's, see nn_optimizer_add_param_group);
 * setting it sets every group's (as PyTorch's loop `for g in
 * opt.param_groups: g["lr"] = lr`; one group's: nn_optimizer_set_group_lr)
 * and also makes it the schedule's base and
 * restarts the schedule at epoch 0 (the rate is then the schedule's at
 * epoch 0: lr start_factor for a warm-up, see nn_optimizer_set_schedule_ext;
 * lr for the kinds of nn_schedule; for onecycle lr becomes max_lr and the
 * rate lr / div_factor). nn_optimizer_set_lr returns AD_OK,
 * AD_ERR_NULL (opt NULL), AD_ERR_ARG (lr not finite and >= 0, the rates
 * a checkpoint may hold, or the schedule's rate at epoch 0 from it not
 * finite: multistep, gamma > 1 at milestones 0; the optimizer unchanged) or AD_ERR_OOM (the write
 * of the rate's state tensors cannot be noted, as nn_optimizer_step's;
 * unchanged). @{ */
NN_API double nn_optimizer_lr(const nn_optimizer *opt);
NN_API ad_status nn_optimizer_set_lr(nn_optimizer *opt, double lr);
/** @} */

/** Steps taken (restored by loading the state). */
NN_API int64_t nn_optimizer_steps(const nn_optimizer *opt);

/** The state tensors and their names, e.g. "adam.step" (the optimizer's
 * step counter, a 0-d f64), "adam.m.0.weight", "adam.v.0.weight",
 * "adam.step.0.weight" (that parameter's step count, a 0-d f64, kept where
 * the update uses it: Adam, AdamW, Adagrad, SGD with momentum, ASGD, Rprop);
 * "sgd.momentum.<p>", "adagrad.sum.<p>", "rmsprop.square_avg.<p>",
 * "rmsprop.grad_avg.<p>", "rmsprop.momentum.<p>", "adamw.m.<p>"...;
 * with amsgrad "adam.max_exp_avg_sq.<p>" after "adam.v.<p>"; the later
 * kinds under PyTorch's state_dict names: "adamax.exp_avg.<p>",
 * "adamax.exp_inf.<p>", "nadam.exp_avg.<p>", "nadam.exp_avg_sq.<p>",
 * "nadam.mu_product.<p>" (0-d, in the parameter's dtype, after its step
 * count; PyTorch keeps it in the default dtype), "radam.exp_avg.<p>",
 * "radam.exp_avg_sq.<p>", "adadelta.square_avg.<p>",
 * "adadelta.acc_delta.<p>", "asgd.ax.<p>", "asgd.step.<p>", "asgd.eta.<p>",
 * "asgd.mu.<p>" (eta and mu 0-d float32, as PyTorch's, whatever the
 * parameter's dtype), "rprop.prev.<p>", "rprop.step_size.<p>",
 * "rprop.step.<p>"; last
 * the learning-rate state, three 0-d f64: "<kind>.lr" (the current rate),
 * "<kind>.schedule.lr0" and "<kind>.schedule.epoch" (the schedule's base
 * rate and epoch); then the plateau's state (see nn_optimizer_set_plateau):
 * "<kind>.plateau.best", "<kind>.plateau.num_bad_epochs",
 * "<kind>.plateau.cooldown_counter". Arrays of nn_optimizer_state_count entries, owned by the
 * optimizer. Writing into them (e.g. loading a checkpoint) resumes from
 * that state: the rate and the schedule included. @{ */
NN_API int nn_optimizer_state_count(const nn_optimizer *opt);
NN_API const char *const *nn_optimizer_state_names(const nn_optimizer *opt);
NN_API ad_tensor *const *nn_optimizer_state_tensors(const nn_optimizer *opt);
/** @} */

/** The parameter list the optimizer was made over (owned by its caller):
 * group 0's (see nn_optimizer_add_param_group); NULL for NULL. */
NN_API nn_params *nn_optimizer_params(const nn_optimizer *opt);

/** For state tensor i: the index of the parameter it holds per-element
 * state of (of the parameter's shape: "adam.m.<p>", "adam.v.<p>", ...), or
 * -1 (counters, NAdam's mu_product, ASGD's eta and mu, learning-rate
 * state, i out of range, NULL opt). The index counts the optimizer's
 * parameters in order: the entries of nn_optimizer_params' list at their
 * indices there, then each added group's (nn_optimizer_add_param_group)
 * after every entry of the groups before it, tied repeats included. */
NN_API int nn_optimizer_state_param(const nn_optimizer *opt, int i);

/** PyTorch's Optimizer.add_param_group: adds the tensors of params (the
 * list must outlive opt, as nn_optimizer_new's) as parameter group
 * nn_optimizer_group_count(opt) with the settings cfg: the group's full
 * settings, not only those that differ (start from
 * nn_optimizer_config_ext(opt), or nn_opt_defaults_ext, and change what
 * differs: weight_decay 0 for biases and norm weights, a smaller lr for a
 * pretrained backbone). Settings are checked as nn_optimizer_new_ext
 * checks them; the kind must be opt's; clip_norm and clip_value must be
 * group 0's (clipping is over every gradient of the optimizer at once).
 * The new parameters start with fresh state (zeros, step counts 0), also
 * after steps were taken, as in PyTorch; their state names are as group
 * 0's ("adam.m.<p>", nn_optimizer_state_names), so a parameter name may
 * not be one another group already has. The group's rates are state:
 * "<kind>.group<g>.lr" and "<kind>.group<g>.schedule.lr0", after the
 * group's parameters' state; with the second group comes
 * "<kind>.param_groups" (0-d f64, the count), so that nn_model_load
 * refuses a checkpoint of another number of groups, and each group's
 * (group 0's with the second group, after the state there so far)
 * "<kind>.group<g>.params" and "<kind>.group<g>.names" (0-d f64: its
 * number of entries and a hash of their names, independent of their
 * order; optional), so that it refuses one whose groups hold other
 * tensors. With a schedule
 * attached, cfg.lr is the group's base rate (a onecycle's max_lr) and its
 * rate is the schedule's at the current epoch; a cycled momentum then
 * needs the group's momentum > 0 (SGD, RMSProp). The step (also
 * nn_optimizer_step_ranges, whose arrays then cover every group's
 * parameters in order), clipping, zero_grad and checkpoints cover every
 * group. nn_lbfgs has one group, as PyTorch's LBFGS ("doesn't support
 * per-parameter options"). Returns AD_OK; AD_ERR_NULL (opt, params or
 * cfg NULL); AD_ERR_ARG (a list of another context, of buffers or empty;
 * a tensor already in a group, PyTorch's "some parameters appear in more
 * than one parameter group"; a name already used; another kind; bad
 * settings, naming them; the schedule's rate for it not finite);
 * AD_ERR_STATE (a parameter of opt was freed) or AD_ERR_OOM, opt then
 * unchanged. */
NN_API ad_status nn_optimizer_add_param_group(nn_optimizer *opt, nn_params *params,
                                              const nn_opt_config_ext *cfg);

/** The number of parameter groups (1 for an optimizer no group was added
 * to; 0 for NULL). */
NN_API int nn_optimizer_group_count(const nn_optimizer *opt);

/** Group g's parameter list (PyTorch's param_groups[g]["params"]): the
 * list given to nn_optimizer_add_param_group, group 0's
 * nn_optimizer_params'; owned by its caller, as there. NULL for NULL, or g
 * out of range (AD_ERR_ARG recorded). */
NN_API nn_params *nn_optimizer_group_params(const nn_optimizer *opt, int g);

/** Group g's settings (lr its current rate), owned by opt, valid until
 * the next call on it; group 0's are nn_optimizer_config_ext's (and
 * nn_optimizer_config, nn_optimizer_lr keep meaning group 0). NULL for
 * NULL, or g out of range (AD_ERR_ARG recorded). */
NN_API const nn_opt_config_ext *nn_optimizer_group_config_ext(const nn_optimizer *opt, int g);

/** Group g's current learning rate (PyTorch's param_groups[g]["lr"]);
 * NAN for NULL or g out of range (AD_ERR_ARG recorded). nn_fit's history
 * and log show group 0's (nn_optimizer_lr). */
NN_API double nn_optimizer_group_lr(const nn_optimizer *opt, int g);

/** Sets group g's learning rate: lr becomes the group's base rate (a
 * onecycle's max_lr) and its rate the attached schedule's at the current
 * epoch from it (lr itself without a schedule); the schedule's epoch and
 * the other groups stay (nn_optimizer_set_lr sets every group and restarts
 * the schedule). AD_OK, AD_ERR_NULL, AD_ERR_ARG (g out of range; lr not
 * finite and >= 0, or the schedule's rate from it not) or AD_ERR_OOM (as
 * nn_optimizer_set_lr), unchanged on error. */
NN_API ad_status nn_optimizer_set_group_lr(nn_optimizer *opt, int g, double lr);

/** Learning-rate schedules, as functions of the epoch t = 0, 1, ...:
 *   @code{.unparsed}
 *   step         lr0 gamma^floor(t / step_size)            (StepLR)
 *   exponential  lr0 gamma^t                               (ExponentialLR)
 *   cosine       eta_min + (lr0 - eta_min)(1 + cos(pi t / t_max)) / 2
 *                for t <= t_max, eta_min after             (CosineAnnealingLR
 *                up to t_max; PyTorch's then climbs back along the cosine,
 *                lr0 again at 2 t_max, where this one stays at eta_min)
 *   @endcode */
typedef enum nn_sched_kind {
  NN_SCHED_CONSTANT = 0,
  NN_SCHED_STEP,
  NN_SCHED_EXPONENTIAL,
  NN_SCHED_COSINE,
  NN_SCHED_MULTISTEP,       /**< nn_schedule_ext only (see there) */
  NN_SCHED_LINEAR,          /**< nn_schedule_ext only */
  NN_SCHED_WARMUP_COSINE,   /**< nn_schedule_ext only */
  NN_SCHED_ONECYCLE,        /**< nn_schedule_ext2 only (see there) */
  NN_SCHED_COSINE_RESTARTS, /**< nn_schedule_ext2 only */
  NN_SCHED_CONSTANT_FACTOR, /**< nn_schedule_ext2 only: PyTorch's ConstantLR */
  NN_SCHED_POLYNOMIAL,      /**< nn_schedule_ext2 only */
  NN_SCHED_LAMBDA,          /**< nn_schedule_ext2 only */
  NN_SCHED_MULTIPLICATIVE,  /**< nn_schedule_ext2 only */
  NN_SCHED_CYCLIC,          /**< nn_schedule_ext2 only: PyTorch's CyclicLR */
  NN_SCHED_SEQUENTIAL,      /**< nn_schedule_ext2 only: PyTorch's SequentialLR */
  NN_SCHED_CHAINED          /**< nn_schedule_ext2 only: PyTorch's ChainedScheduler */
} nn_sched_kind;

/** A learning-rate schedule (see nn_sched_kind) and its settings. */
typedef struct nn_schedule {
  nn_sched_kind kind; /**< the schedule */
  int64_t step_size;  /**< step */
  double gamma;       /**< step, exponential */
  int64_t t_max;      /**< cosine */
  double eta_min;     /**< cosine */
} nn_schedule;

/** The learning rate at epoch t for base rate lr0. NAN for bad settings
 * (step_size or t_max < 1; gamma of step or exponential not finite and
 * > 0; eta_min of cosine not finite and >= 0; unknown kind, or a kind of
 * nn_schedule_ext only) or t < 0. */
NN_API double nn_schedule_lr(const nn_schedule *s, double lr0, int64_t t);

/** Attaches a copy of s (NULL detaches); the current lr becomes lr0 and the
 * epoch 0. Returns AD_ERR_ARG for bad settings (see nn_schedule_lr) or
 * AD_ERR_OOM (as nn_optimizer_set_lr), the optimizer unchanged, so a rate
 * never turns negative or NaN (which no checkpoint may hold: nn_model_load
 * refuses it). The settings are not part
 * of the optimizer's state (as a PyTorch scheduler is not part of its
 * optimizer): to resume from a checkpoint, attach the same schedule, then
 * load (nn_model_load restores lr0, the epoch and the rate). A kind of
 * nn_schedule_ext only is AD_ERR_ARG: use nn_optimizer_set_schedule_ext. */
NN_API ad_status nn_optimizer_set_schedule(nn_optimizer *opt, const nn_schedule *s);

/** The schedule set by any of the three setters (for the other two its
 * kind, which may be one of nn_schedule_ext or nn_schedule_ext2 only, and
 * the settings nn_schedule has room for), owned by opt, valid until the next set or
 * nn_optimizer_free; NULL when there is none or opt is NULL. */
NN_API const nn_schedule *nn_optimizer_schedule(const nn_optimizer *opt);

/** More schedules, which need settings nn_schedule has no room for (it
 * keeps its size; this struct begins with the same five members). With
 * lr0 the base rate and t = 0, 1, ... the epoch:
 *   @code{.unparsed}
 *   multistep      lr0 gamma^(number of milestones <= t)   (MultiStepLR; the
 *                  milestones in any order, one listed k times counts k
 *                  times, as PyTorch's Counter; a milestone 0 applies at once)
 *   linear         lr0 (start_factor + (end_factor - start_factor)
 *                  min(t, total_iters) / total_iters)      (LinearLR)
 *   warmup_cosine  for t < total_iters: lr0 (start_factor + (1 - start_factor)
 *                  t / total_iters) (linear warm-up to lr0), then cosine at
 *                  t - total_iters: eta_min + (lr0 - eta_min)(1 + cos(pi (t
 *                  - total_iters) / t_max)) / 2 up to t_max, eta_min after
 *                  (SequentialLR([LinearLR(o, start_factor, 1, total_iters),
 *                  CosineAnnealingLR(o, t_max, eta_min)], [total_iters]),
 *                  up to the end of the cosine: see cosine)
 *   @endcode
 * The kinds of nn_schedule work here too, with the same settings. There
 * are no defaults: set every setting the kind reads (PyTorch's LinearLR
 * defaults are start_factor 1/3, end_factor 1, total_iters 5). */
typedef struct nn_schedule_ext {
  nn_sched_kind kind;        /**< the schedule */
  int64_t step_size;         /**< step */
  double gamma;              /**< step, exponential, multistep */
  int64_t t_max;             /**< cosine, warmup_cosine */
  double eta_min;            /**< cosine, warmup_cosine */
  const int64_t *milestones; /**< multistep: n_milestones epochs >= 0 (copied by
                                nn_optimizer_set_schedule_ext) */
  int n_milestones;          /**< multistep: >= 0 */
  double start_factor;       /**< linear, warmup_cosine: in (0, 1] */
  double end_factor;         /**< linear: in [0, 1] */
  int64_t total_iters;       /**< linear, warmup_cosine: >= 1 */
} nn_schedule_ext;

/** The learning rate at epoch t for base rate lr0 (see nn_schedule_ext).
 * NAN for bad settings (those of nn_schedule_lr; gamma of multistep not
 * finite and > 0; n_milestones < 0, milestones NULL with n_milestones > 0
 * or a milestone < 0; start_factor not in (0, 1]; end_factor of linear not
 * in [0, 1]; total_iters < 1; t_max or eta_min of warmup_cosine as
 * cosine's), s NULL or t < 0. PyTorch 1.13 accepts start_factor 0 (and
 * fails at its first step, dividing by zero) and total_iters 0 (then keeps
 * lr0 start_factor for ever). */
NN_API double nn_schedule_ext_lr(const nn_schedule_ext *s, double lr0, int64_t t);

/** As nn_optimizer_set_schedule, for every kind: attaches a copy of s
 * (with a copy of its milestones; NULL detaches); the current lr becomes
 * lr0, the epoch 0, and the rate the schedule's at epoch 0 (lr0
 * start_factor for linear and warmup_cosine, lr0 gamma^k for multistep
 * with k milestones 0, else lr0), as a PyTorch scheduler sets it when made.
 * So attaching a warm-up twice would start the second from the first's
 * reduced rate: call nn_optimizer_set_lr(opt, base) after it to restart
 * from base. Returns AD_OK, AD_ERR_NULL (opt NULL), AD_ERR_ARG naming the
 * bad setting (see nn_schedule_ext_lr; also a rate at epoch 0 that is not
 * finite: multistep, gamma > 1 at milestones 0; a kind of nn_schedule_ext2
 * only) or AD_ERR_OOM, the optimizer unchanged. Resuming from a checkpoint:
 * attach the same schedule, then load. */
NN_API ad_status nn_optimizer_set_schedule_ext(nn_optimizer *opt, const nn_schedule_ext *s);

/** The schedule attached (by any setter; for a kind of nn_schedule_ext2
 * only, its kind and the settings nn_schedule_ext has room for;
 * milestones point to opt's copy), owned by opt, valid until the next set or nn_optimizer_free;
 * NULL when there is none or opt is NULL. */
NN_API const nn_schedule_ext *nn_optimizer_schedule_ext(const nn_optimizer *opt);

/** Advances the schedule one step t (an epoch, or a batch for
 * step_per_batch, see nn_schedule_ext2) and sets lr from it (no-op without
 * a schedule). nn_fit calls it after every epoch, or after every batch for
 * a schedule with step_per_batch. Returns AD_OK, AD_ERR_NULL (opt NULL),
 * AD_ERR_NAN when the new rate would not be finite (gamma > 1 overflowing
 * after many epochs) or when a cycled momentum would not be one the
 * optimizer takes (a cyclic's scale above 1 driving it to 0 or below),
 * AD_ERR_STATE for a step past a onecycle's
 * total_steps (as PyTorch's OneCycleLR raises "Tried to step ... times")
 * or AD_ERR_OOM (as nn_optimizer_set_lr), the optimizer unchanged. */
NN_API ad_status nn_optimizer_schedule_step(nn_optimizer *opt);

/** The factor of a lambda or multiplicative schedule at step t (see
 * nn_schedule_ext2); ud is the schedule's lambda_ud. */
typedef double (*nn_lr_lambda_fn)(int64_t t, void *ud);

/** How a onecycle anneals within a phase (PyTorch's anneal_strategy),
 * from a to b as pct goes from 0 to 1: cos, b + (a - b) / 2 (cos(pi pct)
 * + 1); linear, (b - a) pct + a. */
typedef enum nn_anneal { NN_ANNEAL_COS = 0, NN_ANNEAL_LINEAR } nn_anneal;

/** A cyclic schedule's built-in policy (PyTorch's CyclicLR mode): the
 * amplitude's scale at cycle c = 1, 2, ... or step t: triangular 1;
 * triangular2 1 / 2^(c - 1); exp_range gamma^t. */
typedef enum nn_cyclic_mode {
  NN_CYCLIC_TRIANGULAR = 0,
  NN_CYCLIC_TRIANGULAR2,
  NN_CYCLIC_EXP_RANGE
} nn_cyclic_mode;

/** What a cyclic schedule's scale_fn is called with (PyTorch's
 * scale_mode): the cycle c = 1, 2, ... or the step t. */
typedef enum nn_scale_mode { NN_SCALE_CYCLE = 0, NN_SCALE_ITERATIONS } nn_scale_mode;

/** A cyclic schedule's scale_fn (PyTorch's scale_fn): the amplitude's
 * scale at x (see nn_scale_mode); ud is the schedule's scale_ud. */
typedef double (*nn_scale_fn)(int64_t x, void *ud);

/** The schedules that need settings nn_schedule_ext has no room for (its
 * layout is fixed, as nn_schedule's: callers allocate both). This struct
 * begins with nn_schedule_ext's ten members, with their meaning, so every
 * kind works here; then size, then the new settings. Start from
 * nn_schedule_ext2_defaults(kind), which sets size and PyTorch's defaults.
 *
 * size must be sizeof(nn_schedule_ext2): a version stamp, so that this
 * struct can grow at its end in later versions without an ext3. A later
 * library reads a caller's smaller, older struct by its size and takes
 * the defaults for the members that caller did not know of (every
 * member added later will mean "PyTorch's default" at zero). This version
 * also reads the struct of the version before it (which ended at
 * lambda_ud), with the members from base_lr on zero, and refuses any other
 * size (AD_ERR_ARG), also a size of 0 from a struct zeroed by hand.
 *
 *   @code{.unparsed}
 *   onecycle  PyTorch's OneCycleLR, stepped per batch (step_per_batch).
 *             The base rate lr0 is max_lr (nn_optimizer_set_schedule_ext2
 *             makes s->max_lr the base; nn_schedule_ext2_lr reads its
 *             lr0 as max_lr). With T = total_steps, p = pct_start,
 *             initial = lr0 / div_factor, min = initial / final_div_factor,
 *             phases end at steps e = p T - 1 (initial -> lr0), then
 *             T - 1 (lr0 -> min); with three_phase 2 p T - 2 (lr0 ->
 *             initial) and T - 1 (initial -> min). Step t lies in the first
 *             phase with t <= e (else the last) that starts at s (0, or
 *             the previous phase's e), and anneals with pct = (t - s) /
 *             (e - s). With cycle_momentum the optimizer's momentum (SGD,
 *             RMSProp) or beta1 (Adam, AdamW, Adamax, NAdam, RAdam) runs
 *             the other way, max_momentum -> base_momentum -> max_momentum
 *             (three phases: then stays), so it is max_momentum at step 0.
 *             t goes up to T (one past the last phase's end, as PyTorch
 *             allows); a step past T is AD_ERR_STATE. At T linear
 *             annealing overshoots its end; where PyTorch's rate goes
 *             below 0 there, it is 0 here. A plateau's reduction scales
 *             the whole cycle (PyTorch's next step drops it).
 *   cosine_restarts  PyTorch's CosineAnnealingWarmRestarts stepped by whole
 *             steps: eta_min + (lr0 - eta_min)(1 + cos(pi t_cur / t_i)) / 2,
 *             where the first cycle has t_i = t_0 steps and each next one
 *             t_mult times as many, and t_cur counts the steps since the
 *             last restart (so lr0 again at t_0, t_0 + t_0 t_mult, ...).
 *             PyTorch's fractional epochs (step(epoch + i / iters)) have no
 *             counterpart: step per batch (step_per_batch) with t_0 in
 *             batches instead.
 *   constant_factor  PyTorch's ConstantLR: lr0 factor for t < total_iters,
 *             then that rate times 1 / factor (lr0, up to rounding, as
 *             PyTorch multiplies).
 *   polynomial  PyTorch's PolynomialLR, in its chained form: lr0 at t = 0,
 *             then each step multiplies the rate by ((1 - t / total_iters) /
 *             (1 - (t - 1) / total_iters))^power up to t = total_iters
 *             (where it reaches 0 for power > 0), then keeps it.
 *             nn_optimizer_schedule_step multiplies the current rate, so a
 *             reduction on a plateau carries on as in PyTorch.
 *   lambda    PyTorch's LambdaLR: lr0 lr_lambda(t, lambda_ud).
 *   multiplicative  PyTorch's MultiplicativeLR: lr0 at t = 0, then each
 *             step multiplies the current rate by lr_lambda(t, lambda_ud)
 *             (chained, as polynomial).
 *   cyclic    PyTorch's CyclicLR, stepped per batch (step_per_batch). With
 *             up = step_size_up, down = step_size_down (0: up), cycle c =
 *             floor(1 + t / (up + down)), x = 1 + t / (up + down) - c and
 *             f = x / r for x <= r = up / (up + down), else (x - 1) / (r -
 *             1): base + (max - base) f scale, scale = scale_fn(c or t,
 *             scale_ud) (scale_mode) or the mode's (see nn_cyclic_mode;
 *             exp_range at t). The base rate lr0 is base_lr (set_schedule
 *             makes it group 0's base, as PyTorch's CyclicLR sets the
 *             rate to base_lr); group g's base is base_lr r_g / r_0 (r the
 *             groups' rates when attached, as onecycle's max_lr), and
 *             every group's max is max_lr lr0 / base_lr (max_lr for
 *             base_lr 0, one group only), so nn_optimizer_set_lr and
 *             _set_group_lr move both. With cycle_momentum the momentum
 *             runs the other way: max_momentum - (max_momentum -
 *             base_momentum) f scale, max_momentum at step 0. PyTorch 1.13
 *             checks only 'momentum' in the optimizer's defaults, so
 *             cycle_momentum needs SGD or RMSProp (made with momentum >
 *             0, as onecycle); Adam-family optimizers are refused as 1.13
 *             refuses them. PyTorch's explicit step_size_down 0 (a
 *             sawtooth) has no counterpart (0 means None here). A scale
 *             above 1 that drives the momentum to 0 or below fails that
 *             step (nn_optimizer_schedule_step), where PyTorch sets it.
 *   sequential  PyTorch's SequentialLR(schedulers, milestones): the
 *             n_schedulers children in turn, child i > 0 from milestone
 *             i - 1 on (milestones >= 1, increasing), each stepped as
 *             PyTorch steps it: at its milestone as step(0) (its closed
 *             form at 0 from lr0: lr0 start_factor for linear, lr0 for
 *             cosine, ...; multiplicative keeps the current rate), between
 *             milestones by PyTorch's recursive form from the current rate
 *             at t - milestone. Those forms follow PyTorch also where the
 *             kinds here are closed forms: a cosine child climbs back
 *             after t_max as PyTorch's does (a linear child's factor
 *             stops at 0, where PyTorch's rounds to -1e-17 with
 *             end_factor 0). Children: step, exponential,
 *             cosine, multistep, linear, constant_factor, polynomial,
 *             lambda, multiplicative, cosine_restarts (not constant,
 *             warmup_cosine, onecycle, cyclic, sequential, chained; their
 *             step_per_batch is ignored: the parent's counts).
 *   chained   PyTorch's ChainedScheduler(schedulers): every step applies
 *             each child's recursive form in turn to the rate the one
 *             before left (at t = 0 as the children's constructors apply
 *             theirs, in list order); lambda and cosine_restarts set the
 *             rate from lr0 as in PyTorch. The same children as
 *             sequential; n_milestones must be 0.
 *   @endcode
 * sequential and chained are walked from t = 0 (nn_schedule_ext2_lr is
 * O(t)); a checkpoint holds what any schedule's does (the step, each
 * group's base and rate), which determines every child's count.
 * lr_lambda is PyTorch's lr_lambda as a C function of the step; it is
 * called when the schedule is attached (lambda: with 0), at every step
 * and by nn_schedule_ext2_lr (multiplicative: t times). A rate from it
 * that is not finite and >= 0 is refused as any other schedule's (see
 * nn_optimizer_schedule_step). Like PyTorch's state_dict, a checkpoint
 * holds the step and the rate, not the function: attach the same one
 * before loading. */
typedef struct nn_schedule_ext2 {
  nn_sched_kind kind;        /**< the schedule */
  int64_t step_size;         /**< step */
  double gamma;              /**< step, exponential, multistep */
  int64_t t_max;             /**< cosine, warmup_cosine */
  double eta_min;            /**< cosine, warmup_cosine, cosine_restarts (default 0) */
  const int64_t *milestones; /**< multistep (see nn_schedule_ext); sequential: its switches */
  int n_milestones;          /**< multistep */
  double start_factor;       /**< linear, warmup_cosine */
  double end_factor;         /**< linear */
  int64_t total_iters;       /**< linear, warmup_cosine, constant_factor, polynomial:
                                >= 1 (default 5) */
  size_t size;               /**< sizeof(nn_schedule_ext2) (see above) */
  /** nn_fit steps the schedule after every batch instead of every epoch
   * (t then counts batches), as a PyTorch loop steps OneCycleLR; the
   * default for onecycle, off for the other kinds */
  bool step_per_batch;
  bool three_phase;          /**< onecycle: PyTorch's three_phase (default false) */
  bool cycle_momentum;       /**< onecycle: cycle momentum / beta1 (default true) */
  nn_anneal anneal;          /**< onecycle: anneal_strategy (default cos) */
  double max_lr;             /**< onecycle: finite, >= 0 (no default: NaN, refused) */
  int64_t total_steps;       /**< onecycle: >= 1 (no default: 0, refused) */
  double pct_start;          /**< onecycle: in [0, 1] (default 0.3) */
  double div_factor;         /**< onecycle: finite, > 0 (default 25) */
  double final_div_factor;   /**< onecycle: finite, > 0 (default 1e4) */
  double base_momentum;      /**< onecycle: default 0.85 */
  double max_momentum;       /**< onecycle: default 0.95 */
  int64_t t_0;               /**< cosine_restarts: >= 1, the first cycle (no default: 0) */
  int64_t t_mult;            /**< cosine_restarts: >= 1 (default 1); eta_min above */
  double factor;             /**< constant_factor: in (0, 1] (default 1/3) */
  double power;              /**< polynomial: finite, >= 0 (default 1) */
  nn_lr_lambda_fn lr_lambda; /**< lambda, multiplicative: not NULL */
  void *lambda_ud;           /**< lambda, multiplicative: passed to lr_lambda */
  /* added with cyclic, sequential and chained (a struct of the size
   * before them is read with these zero, see size) */
  double base_lr;           /**< cyclic: finite, >= 0 (no default: NaN, refused) */
  int64_t step_size_up;     /**< cyclic: >= 1 (default 2000) */
  int64_t step_size_down;   /**< cyclic: >= 1, or 0 for step_size_up (default 0: None) */
  nn_cyclic_mode mode;      /**< cyclic: default triangular; gamma for exp_range (default 1) */
  nn_scale_mode scale_mode; /**< cyclic with scale_fn (default cycle) */
  nn_scale_fn scale_fn;     /**< cyclic: NULL (mode), or PyTorch's scale_fn (overrides mode) */
  void *scale_ud;           /**< cyclic: passed to scale_fn */
  /** sequential, chained: n_schedulers schedules (copied, with their
   * milestones, by nn_optimizer_set_schedule_ext2); sequential's
   * milestones are the n_schedulers - 1 switches */
  const struct nn_schedule_ext2 *schedulers;
  int n_schedulers; /**< sequential, chained: >= 1 */
} nn_schedule_ext2;

/** size = sizeof(nn_schedule_ext2), kind, and PyTorch 1.13's defaults for
 * that kind's settings (see nn_schedule_ext2; StepLR and MultiStepLR gamma
 * 0.1, LinearLR start_factor 1/3, end_factor 1, total_iters 5); settings
 * PyTorch requires are zero (max_lr NaN), so a call that forgets them is
 * refused. */
NN_API nn_schedule_ext2 nn_schedule_ext2_defaults(nn_sched_kind kind);

/** The learning rate at step t for base rate lr0 (see nn_schedule_ext2;
 * for onecycle lr0 is max_lr). NAN for bad settings (those of
 * nn_schedule_ext_lr; a size other than sizeof(nn_schedule_ext2);
 * onecycle: max_lr not finite and >= 0, total_steps < 1, pct_start not in
 * [0, 1], an unknown anneal, div_factor or final_div_factor not finite
 * and > 0, a phase of length 0 that a step in [0, total_steps] lands in,
 * where PyTorch divides by zero: pct_start total_steps = 1, or the last
 * phase when pct_start is 1; momenta not finite; cosine_restarts: t_0 or
 * t_mult < 1, eta_min not finite and >= 0; constant_factor: factor not in
 * (0, 1]; constant_factor, polynomial: total_iters < 1; polynomial: power
 * not finite and >= 0; lambda, multiplicative: lr_lambda NULL; cyclic:
 * base_lr or max_lr not finite and >= 0, step_size_up < 1,
 * step_size_down < 0, an unknown mode without scale_fn, an unknown
 * scale_mode with one, exp_range's gamma not finite and > 0, momenta not
 * finite; sequential, chained: n_schedulers < 1, schedulers NULL, a child
 * of a kind that cannot be one (see nn_schedule_ext2) or with bad settings
 * or size; sequential: n_milestones not n_schedulers - 1, milestones not
 * >= 1 and increasing; chained: n_milestones not 0), s NULL, t < 0 or, for
 * onecycle, t > total_steps. Polynomial and multiplicative walk their
 * chain: O(min(t, total_iters)) and O(t) (t calls of lr_lambda);
 * sequential and chained O(t n_schedulers). */
NN_API double nn_schedule_ext2_lr(const nn_schedule_ext2 *s, double lr0, int64_t t);

/** The momentum (or beta1) a onecycle or cyclic with cycle_momentum sets
 * at step t; NAN for other schedules and where nn_schedule_ext2_lr is
 * NAN. */
NN_API double nn_schedule_ext2_momentum(const nn_schedule_ext2 *s, int64_t t);

/** As nn_optimizer_set_schedule_ext, for every kind: attaches a copy of s
 * (NULL detaches); the base rate lr0 is the current lr (for onecycle
 * s->max_lr, for cyclic s->base_lr; with several parameter groups the
 * other groups' in proportion to their rates), the step 0, and the rate
 * the schedule's at step 0 (for onecycle max_lr / div_factor, as PyTorch's
 * OneCycleLR sets it when made). Copies sequential's and chained's
 * children (and their milestones), owned by opt from then on. A cyclic
 * with cycle_momentum is refused as a onecycle's, and also for Adam-family
 * optimizers (PyTorch 1.13's CyclicLR cycles 'momentum' only); so is a
 * cyclic over several groups with base_lr 0 or group 0's rate 0.
 * A rate at step 0 that is not finite and >= 0 (lambda: from
 * lr_lambda(0)) is AD_ERR_ARG. A onecycle with cycle_momentum also sets the optimizer's momentum or
 * beta1 to max_momentum, and from then on before every optimizer step
 * (and in nn_optimizer_config) to the schedule's at the current step: a
 * checkpoint, which holds the step, so resumes the momentum too. PyTorch's
 * OneCycleLR refuses cycle_momentum for an optimizer without momentum or
 * betas ("optimizer must support momentum with `cycle_momentum` option
 * enabled"), so here: Adagrad; here also SGD and RMSProp made with
 * momentum 0 (they have no momentum buffer; PyTorch's would start one),
 * and momenta that the optimizer's constructor would refuse (SGD,
 * RMSProp: finite and > 0; beta1 in [0, 1)). Returns AD_OK, AD_ERR_NULL
 * (opt NULL), AD_ERR_ARG naming the bad setting (see nn_schedule_ext2_lr)
 * or AD_ERR_OOM, the optimizer unchanged. Resuming from a checkpoint:
 * attach the same schedule, then load. */
NN_API ad_status nn_optimizer_set_schedule_ext2(nn_optimizer *opt, const nn_schedule_ext2 *s);

/** The schedule attached (by any of the three setters; milestones and
 * schedulers, with their milestones, point to opt's copies), owned by opt,
 * valid until the next set or nn_optimizer_free; NULL when there is none
 * or opt is NULL. */
NN_API const nn_schedule_ext2 *nn_optimizer_schedule_ext2(const nn_optimizer *opt);

/* ---------------------------------------------------------------- L-BFGS
 * torch.optim.LBFGS. Its own handle, not an nn_optimizer: a step needs a
 * closure that evaluates the loss and its gradient several times, and its
 * state (a history of up to history_size pairs of flat vectors, a
 * direction, a step length) is global, not per parameter. As a separate
 * type it cannot reach what nn_optimizer offers and L-BFGS does not
 * support: nn_fit / nn_train_step (one gradient per step), nn_model_save
 * and checkpoints (its state is not saved: a run resumed from a checkpoint
 * starts a fresh history, as a new torch.optim.LBFGS would),
 * learning-rate schedules, nn_dist's sharded step. One parameter group,
 * as PyTorch's L-BFGS allows. */

/** An L-BFGS optimizer over a parameter list. Opaque. */
typedef struct nn_lbfgs nn_lbfgs;

/** The line search of nn_lbfgs_config (PyTorch's line_search_fn). */
typedef enum nn_line_search {
  NN_LINE_SEARCH_NONE = 0,    /**< None: a fixed step of lr */
  NN_LINE_SEARCH_STRONG_WOLFE /**< "strong_wolfe" (PyTorch's _strong_wolfe) */
} nn_line_search;

/** L-BFGS settings, PyTorch's names and meaning; start from
 * nn_lbfgs_defaults. */
typedef struct nn_lbfgs_config {
  double lr;                  /**< learning rate, finite and >= 0 (1) */
  int max_iter;               /**< iterations per step, >= 0 (20) */
  int max_eval;               /**< evaluations per step, >= 0; 0: PyTorch's
                                 None, max_iter * 5 / 4 (an explicit 0 in
                                 PyTorch acts as 1) */
  double tolerance_grad;      /**< stop when max |g| <= it, >= 0 (1e-7) */
  double tolerance_change;    /**< stop on smaller changes, >= 0 (1e-9);
                                 not the line search's (always 1e-9) */
  int history_size;           /**< pairs kept, >= 1 (100) */
  nn_line_search line_search; /**< NN_LINE_SEARCH_NONE */
} nn_lbfgs_config;

/** PyTorch's defaults (in parentheses above). */
NN_API nn_lbfgs_config nn_lbfgs_defaults(void);

/** Evaluates the objective at the parameters' current values: builds the
 * loss on the tape, runs ad_backward on it (the gradients are released
 * before each call: no zero_grad needed), stores the loss in *loss and
 * returns AD_OK, or returns an error status (ideally recorded on the
 * context), which nn_lbfgs_step returns; a value that is not an ad_status
 * becomes AD_ERR_ARG naming it. ud is nn_lbfgs_step's. */
typedef ad_status (*nn_lbfgs_closure)(void *ud, double *loss);

/** An L-BFGS optimizer over the distinct tensors of params at the time of
 * the call (a tensor listed twice is taken once; the list must outlive
 * it), concatenated in list order into one flat vector, as
 * torch.optim.LBFGS(model.parameters(), ...). cfg NULL: the defaults. The
 * history grows as PyTorch's, one pair of flat vectors per accepted step,
 * up to history_size. Returns NULL with AD_ERR_NULL (params),
 * AD_ERR_ARG (a buffer list, no elements, a setting out of range, naming
 * it), AD_ERR_DTYPE (parameters of different dtypes) or AD_ERR_OOM. Free
 * with nn_lbfgs_free. */
NN_API nn_lbfgs *nn_lbfgs_new(nn_params *params, const nn_lbfgs_config *cfg);

/** Frees the optimizer and its history. NULL is a no-op. */
NN_API void nn_lbfgs_free(nn_lbfgs *opt);

/** One optimizer.step(closure) of torch.optim.LBFGS: up to max_iter
 * iterations and max_eval evaluations, each evaluation calling closure(ud,
 * &loss) on an empty tape with gradients enabled (the tape is reset before
 * and after it, so no temporary survives a call, and the gradients are
 * released before it). PyTorch's arithmetic in its order, in the
 * parameters' dtype (the flat gradient with 0 for a parameter without one,
 * the two-loop recursion, the first step t = min(1, 1 / |g|_1) lr with
 * |g|_1 added in the order of PyTorch's sum kernel, the scale ys / yy, the oldest pair dropped when
 * the history is full, its stopping tests), and with NN_LINE_SEARCH_STRONG_WOLFE its cubic
 * interpolation and constants (c1 1e-4, c2 0.9, a bracket tolerance of
 * 1e-9 whatever tolerance_change is, since PyTorch's step does not pass
 * tolerance_change on, 25 evaluations; Python's and PyTorch's scalar
 * roundings, so that a float32 run follows PyTorch's float32 run). Dot products are sums in element
 * order (float32: of float products, in double), as the BLAS PyTorch
 * calls sums fewer than 16 (float64) or 32 (float32) elements; longer
 * vectors agree to rounding. *loss_out (may be NULL) gets the first
 * evaluation's loss, as PyTorch's step returns. A NaN loss or gradient is
 * carried through as in PyTorch: no error; every test then fails, so the
 * step runs all max_iter iterations and the parameters become NaN.
 * Returns AD_OK; AD_ERR_NULL (opt silently; closure); AD_ERR_STATE
 * (nothing read or changed) when a parameter was freed since nn_lbfgs_new;
 * AD_ERR_OOM (a new history pair, before anything of that iteration
 * changed); or the closure's error: the parameters are then put back at
 * the last iterate (where the step's loss and gradient were known;
 * unchanged when the first evaluation fails, where PyTorch would leave
 * them wherever the exception found them), the history keeps the pairs of
 * the iterations done, the iteration counter counts the one interrupted,
 * and a next step goes on from there. */
NN_API ad_status nn_lbfgs_step(nn_lbfgs *opt, nn_lbfgs_closure closure, void *ud, double *loss_out);

/** PyTorch's state["n_iter"] and state["func_evals"]: iterations and
 * evaluations over all steps; 0 for NULL. @{ */
NN_API int64_t nn_lbfgs_iters(const nn_lbfgs *opt);
NN_API int64_t nn_lbfgs_evals(const nn_lbfgs *opt);
/** @} */

/* ================================================================== data */

/** Replaces idx[0..n-1] by a random permutation of 0..n-1 (Fisher-Yates:
 * for i = n-1 down to 1, swap i with ad_rng_below(rng, i+1)). */
NN_API void nn_permutation(ad_rng *rng, int64_t n, int64_t *idx);

/** A new persistent tensor holding rows rows[0..n-1] of x (axis 0), in that
 * order. NULL with AD_ERR_ARG (row out of range) / AD_ERR_OOM. */
NN_API ad_tensor *nn_take_rows(ad_ctx *ctx, const ad_tensor *x, int64_t n, const int64_t *rows);

/** Splits the rows of x and y (y may be NULL) into n_test test rows and the
 * rest for training: with shuffle, by a permutation drawn from an ad_rng
 * seeded with seed (the first rows of the permutation train); without, the
 * last n_test rows are the test set. The four outputs are new persistent
 * tensors the caller frees (y_* stay NULL when y is NULL). Returns AD_OK,
 * AD_ERR_NULL, AD_ERR_SHAPE (row counts differ), AD_ERR_ARG (n_test
 * outside 0..rows) or AD_ERR_OOM (then every output is NULL). */
NN_API ad_status nn_train_test_split(ad_ctx *ctx, ad_tensor *x, ad_tensor *y, int64_t n_test,
                                     bool shuffle, uint64_t seed, ad_tensor **x_train,
                                     ad_tensor **y_train, ad_tensor **x_test, ad_tensor **y_test);

/** An iterator over mini-batches of rows. Opaque. */
typedef struct nn_batcher nn_batcher;

/** Mini-batches over rows [begin, end) of x and y (y may be NULL; equal row
 * counts). Each epoch visits every row once, in order or, with shuffle, in
 * the order of nn_permutation drawn from an ad_rng seeded once with seed
 * (so epoch e's order depends on seed and e). Batches have batch_size rows
 * except the last of an epoch, which holds the rest (dropped with
 * nn_batcher_set_drop_last; a batch_size above the rows gives one batch of
 * all of them, or none when dropped). Rows are copied into
 * persistent buffers allocated here, so iteration allocates nothing. x and
 * y are read at every batch, so they must be persistent tensors: a
 * temporary (ad_tensor_is_temporary, an op's result) is freed by the next
 * ad_tape_reset and is refused with AD_ERR_ARG.
 * NULL with AD_ERR_NULL / AD_ERR_SHAPE / AD_ERR_ARG / AD_ERR_OOM. */
NN_API nn_batcher *nn_batcher_new_range(ad_ctx *ctx, ad_tensor *x, ad_tensor *y, int64_t begin,
                                        int64_t end, int64_t batch_size, bool shuffle,
                                        uint64_t seed);

/** nn_batcher_new_range over all rows. */
NN_API nn_batcher *nn_batcher_new(ad_ctx *ctx, ad_tensor *x, ad_tensor *y, int64_t batch_size,
                                  bool shuffle, uint64_t seed);

/** Fills *xb (and *yb when y was given; yb may be NULL) with the next batch
 * and returns true; returns false once the epoch is done (the next call
 * starts a new one, reshuffled). The tensors belong to the batcher and are
 * overwritten by the next call, a write as ad_tensor_set's: a backward
 * through ops recorded before it that read the last batch (a loss summed
 * over batches, then one backward) refuses with AD_ERR_STATE instead of
 * using the new rows; copy a batch (ad_tensor_clone) to keep it. Returns
 * false, the batch unchanged, with AD_ERR_OOM recorded when the write
 * cannot be noted, or AD_ERR_STATE when x or y was freed (free the batcher
 * first: it reads them at every batch). */
NN_API bool nn_batcher_next(nn_batcher *b, ad_tensor **xb, ad_tensor **yb);

/** With drop_last, each epoch ends before a batch of fewer than batch_size
 * rows (PyTorch DataLoader's drop_last): its rows, other ones each epoch
 * with shuffling, are not visited. Default false. Takes effect from the
 * next batch (set between epochs for whole ones). Returns AD_OK, or
 * AD_ERR_NULL for a NULL b. */
NN_API ad_status nn_batcher_set_drop_last(nn_batcher *b, bool drop_last);

/** Batches per epoch (ceil(rows / batch_size), or floor with drop_last)
 * and rows per epoch (those batches' rows). @{ */
NN_API int64_t nn_batcher_batches(const nn_batcher *b);
NN_API int64_t nn_batcher_rows(const nn_batcher *b);
/** @} */

/** Ends the current epoch early (a loop that breaks out of it): the next
 * nn_batcher_next starts a new epoch, reshuffled as after an epoch's last
 * batch, instead of going on with the rest of this one. NULL is a no-op. */
NN_API void nn_batcher_reset(nn_batcher *b);

/** Frees the batcher and its buffers. NULL is a no-op. */
NN_API void nn_batcher_free(nn_batcher *b);

/* ---------------------------------------------------------------- loader */

/** Longest message a dataset's get may leave (with its NUL). */
#define NN_SAMPLE_MSG_MAX 200

/** A map-style data set (PyTorch's torch.utils.data.Dataset with
 * __len__ and __getitem__), produced one sample at a time by a callback,
 * for data that does not fit in memory or needs per-sample work (decoding,
 * augmentation). A sample is an x of x_shape (x_ndim axes, 0..AD_MAX_DIMS-1,
 * dtype AD_F32 or AD_F64) and a y of y_shape (y_ndim axes; AD_F32, AD_F64,
 * or AD_I32 for class labels); a batch of n samples has the shapes
 * [n, x_shape...] and [n, y_shape...].
 *
 * get(ud, index, x, y, msg) writes sample index (0 <= index < len) into
 * x (prod(x_shape) elements of x_dtype, row-major) and y (likewise) and
 * returns 0; or returns any other value, after writing a NUL-terminated
 * reason into msg (NN_SAMPLE_MSG_MAX bytes; it may leave it empty), which
 * stops the epoch (see nn_loader_next). With num_workers > 0, get is
 * called from the loader's threads, several at once with the same ud:
 * it must be safe for that (read-only ud, or its own locking), and must
 * not call into the engine (ad_ or nn_ functions) with the loader's
 * context; a get that calls fork() must only exec or _exit in the child
 * (whose one thread is then that worker). */
typedef struct nn_dataset {
  int64_t len;                      /**< samples, >= 0 */
  ad_dtype x_dtype;                 /**< AD_F32 or AD_F64 */
  int x_ndim;                       /**< axes of one x, 0..AD_MAX_DIMS-1 */
  int64_t x_shape[AD_MAX_DIMS - 1]; /**< one x's shape (x_ndim entries read) */
  ad_dtype y_dtype;                 /**< AD_F32, AD_F64 or AD_I32 (labels) */
  int y_ndim;                       /**< axes of one y, 0..AD_MAX_DIMS-1 */
  int64_t y_shape[AD_MAX_DIMS - 1]; /**< one y's shape (y_ndim entries read) */
  /** writes sample index into x and y; 0, or non-zero with a reason in
   * msg (see above) */
  int (*get)(void *ud, int64_t index, void *x, void *y, char *msg);
  void *ud; /**< get's first argument, owned by the caller */
} nn_dataset;

/** Options of nn_loader_new (PyTorch's DataLoader arguments). All-zero
 * means the defaults. */
typedef struct nn_loader_opts {
  int64_t batch_size; /**< samples per batch; 0: 1 (DataLoader's default); < 0 refused */
  bool shuffle;       /**< reshuffle every epoch (else index order) */
  uint64_t seed;      /**< of the shuffling */
  bool drop_last;     /**< drop the last batch when it is smaller */
  int num_workers;    /**< threads calling get; 0: get runs in nn_loader_next's thread */
  int prefetch;       /**< batches loaded ahead, with workers; 0: 2 * num_workers
                           (DataLoader's prefetch_factor 2); else >= 1 */
} nn_loader_opts;

/** An iterator over batches of an nn_dataset (PyTorch's DataLoader).
 * Opaque. */
typedef struct nn_loader nn_loader;

/** A loader of ds's samples in batches for ctx. ds is copied (ud is kept
 * and must outlive the loader). Each epoch visits every index once: in
 * order or, with shuffle, in the order of nn_permutation drawn from an
 * ad_rng seeded once with seed, so epoch e's order is the same as
 * nn_batcher's with that seed: a loader over a data set and nn_batcher over
 * the same samples in memory give the same batches (not PyTorch's
 * RandomSampler order, which comes from torch's generator). With
 * num_workers > 0, that many threads (pthreads, the loader's own, not the
 * engine's, ad_set_num_threads) load up to prefetch batches ahead into
 * buffers of the loader; the batches still come out in the epoch's order.
 * The threads never touch ctx or its tensors. fork() copies only the
 * calling thread: in a child forked since the loader was made, the next
 * nn_loader_next starts workers of the child's own and loads again the
 * batches the parent's had in flight (the same batches), and reset and free
 * do not wait for the parent's. Returns NULL with
 * AD_ERR_NULL (ctx, ds or get NULL), AD_ERR_ARG (len < 0, a bad dtype,
 * ndim or dimension < 0, batch size < 0, num_workers < 0 or over 256,
 * prefetch < 0, prefetch > 0 without workers as PyTorch refuses a
 * prefetch_factor then, or a batch or len whose byte size overflows), AD_ERR_OOM, or
 * AD_ERR_STATE when a thread cannot be started. */
NN_API nn_loader *nn_loader_new(ad_ctx *ctx, const nn_dataset *ds, const nn_loader_opts *opts);

/** The next batch of the epoch: *xb and *yb (both required) point to
 * tensors that belong to the loader, overwritten by the next call (as
 * nn_batcher_next's: a backward through ops that read the last batch
 * refuses with AD_ERR_STATE; ad_tensor_clone keeps one). Returns AD_OK
 * with a batch; AD_OK with *xb = *yb = NULL once the epoch is done (the
 * next call starts a new one, reshuffled); or an error with both NULL:
 * AD_ERR_IO "loader: sample <i>: <msg>" when get failed for index i (the
 * first failure in the epoch's order; the epoch ends there, the workers
 * stop, and the next call starts a new epoch), AD_ERR_NULL, or AD_ERR_OOM
 * (the write could not be noted). */
NN_API ad_status nn_loader_next(nn_loader *l, ad_tensor **xb, ad_tensor **yb);

/** Ends the current epoch early: batches loaded ahead are dropped (after
 * the calls of get in flight return); the next nn_loader_next starts a new
 * epoch. NULL is a no-op. */
NN_API void nn_loader_reset(nn_loader *l);

/** Batches per epoch (ceil(len / batch_size), or floor with drop_last),
 * and samples per epoch (those batches' rows). 0 for NULL. @{ */
NN_API int64_t nn_loader_batches(const nn_loader *l);
NN_API int64_t nn_loader_rows(const nn_loader *l);
/** @} */

/** Stops and joins the threads (also mid-epoch, after the calls of get in
 * flight return) and frees the loader and its tensors. NULL is a no-op. */
NN_API void nn_loader_free(nn_loader *l);

/* ============================================================== training */

/** One training step: ad_tape_reset, zero the gradients, forward x in
 * training mode, loss(pred, y, NN_MEAN) (plus lambda_l2 * nn_l2_penalty
 * when lambda_l2 > 0), ad_backward, nn_optimizer_step. loss_out (may be
 * NULL) gets the loss without the penalty. A lambda_l2 NaN or infinite is
 * AD_ERR_ARG; a loss, or a loss plus the penalty, that is not finite is
 * AD_ERR_NAN before the backward. Returns AD_OK or the error;
 * a loss of more than one element (a wrapper that passes NN_NONE) is
 * AD_ERR_SHAPE ("train_step: the loss has shape [8]; a scalar is needed
 * ..."), also in nn_fit and nn_evaluate. A step that fails changes no
 * parameter and no optimizer state, but one that fails after its forward
 * (a NaN loss, a backward refused for memory) has already moved what the
 * forward moves, as in PyTorch: batch norm's running statistics and the
 * dropout layers' generators; a retry then sees those moved. Under the op
 * profile its phases are nn_fit's ranges (nn_fit) but "nn_fit.batch". */
NN_API ad_status nn_train_step(nn_model *m, nn_optimizer *opt, nn_loss_fn loss, ad_tensor *x,
                               ad_tensor *y, double lambda_l2, double *loss_out);

/** The per-epoch metrics of nn_fit. Opaque. */
typedef struct nn_history nn_history;

/* ------------------------------------------------ data-parallel training */

/** How nn_fit hands out its data sharding and gradient reduction when it
 * runs as one of size processes (ranks) training one model together
 * (data parallelism, as PyTorch's DistributedDataParallel). nn needs no
 * communication library: libnn_dist (<autodiff/nn_dist.h>) fills this
 * struct with MPI (nn_dist_fit_ops), and a test can fill it in-process.
 *
 * With opts->dist set, nn_fit on every rank:
 *   - first calls sum(ud, v, n) once, also when its own checks failed,
 *     so that an error on one rank (a NULL argument, bad options, out of
 *     memory) or other data or options (rows to train on, batch size,
 *     epochs, shuffle, validation data, on_epoch_end, early stopping,
 *     lambda_l2) stop every rank before the first step instead of leaving
 *     the others waiting (AD_ERR_STATE "fit: N other rank(s) failed
 *     before the first step", AD_ERR_ARG "fit: the ranks' ... differ");
 *     with more than one rank an optimizer that steps a tensor outside
 *     nn_model_params(m) (its own list, or a group added by
 *     nn_optimizer_add_param_group) is such an error, AD_ERR_ARG naming
 *     it: only the model's gradients are summed over ranks, so its copies
 *     would drift apart;
 *   - calls sync(ud, m, opt) once before training (nn_dist: make every
 *     rank's parameters, buffers and optimizer state rank 0's, after
 *     checking that the models match);
 *   - draws the same global batches on every rank (the same seeded
 *     shuffle: every rank holds the whole data set) and trains on rows
 *     [n r / size, n (r + 1) / size) of each batch of n rows (a rank's
 *     shard; it may be empty when n < size: that rank then runs no forward
 *     and no backward);
 *   - per step, calls grad_begin(ud, params, loss, rows, n) just before
 *     the backward, with loss the scalar the backward starts from (NULL
 *     when the shard is empty or the forward failed: there is no backward
 *     then), and grad_end(ud, params, st) after it, with st the step's
 *     status so far (its message on the context). grad_end is called on
 *     every step by every rank, also after an error, so that an
 *     implementation can exchange the status with the reduction. It must
 *     leave in every parameter's grad sum over ranks of rows_r / n times
 *     that rank's gradient (the gradient of the mean loss over the whole
 *     global batch, since each rank's loss is its shard's mean), and
 *     return AD_OK; or return an error (on every rank) with its message
 *     set on the parameters' context. The optimizer then steps
 *     (nn_optimizer_step, or step(ud, opt) when it is set: it must leave
 *     every rank with nn_optimizer_step's parameters);
 *   - at the end of an epoch calls sum(ud, v, 3) on the epoch's sums
 *     (loss times rows, rows, correct predictions), so the history's loss
 *     and accuracy cover the whole epoch on every rank. Validation runs
 *     on each rank's own val_x / val_y (or split), and its loss and
 *     accuracy are summed over ranks alike (one sum of 4 values): the
 *     same on every rank, those of all the ranks' rows together;
 *   - prints progress on rank 0 only (other ranks are silent); the live
 *     bar shows rank 0's shards, the epoch lines the reduced values.
 * nn_train_step, nn_evaluate and nn_predict do not use it.
 * Every rank must be given the same seed and options. What one rank
 * alone decides reaches the others: an accuracy comparison that fails
 * (predictions and targets of incomparable shapes) is counted inside the
 * step, before grad_end, so it stops also the ranks whose shard is empty;
 * a validation pass that fails on some ranks stops every rank (the others
 * with AD_ERR_STATE, "validation failed on N other rank(s)"); and when
 * on_epoch_end returns false on any rank, every rank stops after that
 * epoch (one sum(ud, v, 1) per epoch when on_epoch_end is set, one more
 * when there is validation data). */
typedef struct nn_dist_ops {
  void *ud; /**< passed to every function below */
  int rank; /**< this process, 0 <= rank < size */
  int size; /**< processes training together, >= 1 */
  /** start-up: the same model and optimizer state on every rank */
  ad_status (*sync)(void *ud, nn_model *m, nn_optimizer *opt);
  /** before each step's backward (loss NULL: no backward on this rank) */
  ad_status (*grad_begin)(void *ud, nn_params *params, ad_tensor *loss, int64_t rows,
                          int64_t global_rows);
  /** after it: the gradients reduced over the ranks */
  ad_status (*grad_end)(void *ud, nn_params *params, ad_status st);
  /** sums v[0..n-1] over the ranks, in place */
  ad_status (*sum)(void *ud, double *v, int n);
  /** optional (NULL: nn_optimizer_step): the optimizer step after
   * grad_end, on every rank (a sharded step) */
  ad_status (*step)(void *ud, nn_optimizer *opt);
} nn_dist_ops;

/** Called after each epoch (0-based); return false to stop training. */
typedef bool (*nn_epoch_fn)(int epoch, const nn_history *h, void *ud);

/** Early stopping in nn_fit (Keras' EarlyStopping callback). After each
 * epoch the monitored value is compared with the best so far: it improves
 * when it is below best - min_delta (NN_MODE_MIN) or above best + min_delta
 * (NN_MODE_MAX); a NaN never improves. Training stops once patience epochs
 * in a row did not improve. With restore_best_weights, the parameters and
 * buffers of the best epoch are copied after each improvement and put back
 * when early stopping stops training (as in Keras, not when the epochs run
 * out or on_epoch_end stops it). monitor == NULL: off. */
typedef enum nn_monitor_mode {
  NN_MODE_AUTO, /**< max for keys containing "acc", else min (as Keras) */
  NN_MODE_MIN,
  NN_MODE_MAX
} nn_monitor_mode;

/** The early-stopping options of nn_fit (nn_fit_opts.early_stopping; see
 * nn_monitor_mode for the rule). */
typedef struct nn_early_stopping {
  const char *monitor;       /**< a history key: "val_loss", "loss", "val_accuracy", ... */
  nn_monitor_mode mode;      /**< which way is better */
  double min_delta;          /**< >= 0, finite: the smallest change that counts as an improvement */
  int patience;              /**< >= 0: epochs without improvement before stopping */
  bool restore_best_weights; /**< put the best epoch's weights back on stopping */
} nn_early_stopping;

/** How nn_plateau's threshold counts, as PyTorch's (also for a negative
 * best): relative, an improvement is below best (1 - threshold) in
 * NN_MODE_MIN, above best (1 + threshold) in NN_MODE_MAX; absolute, below
 * best - threshold, above best + threshold. */
typedef enum nn_threshold_mode { NN_THRESHOLD_REL = 0, NN_THRESHOLD_ABS } nn_threshold_mode;

/** Reducing the learning rate when a metric stops improving (PyTorch's
 * ReduceLROnPlateau, with its exact rules; Keras' ReduceLROnPlateau
 * callback is the same idea). Attached to an optimizer with
 * nn_optimizer_set_plateau and fed one value per epoch with
 * nn_optimizer_plateau_step, typically the epoch's "val_loss" from nn_fit's
 * on_epoch_end:
 *   @code
 *   static bool reduce(int epoch, const nn_history *h, void *opt) {
 *     return nn_optimizer_plateau_step(opt, nn_history_get(h, "val_loss", epoch)) == AD_OK;
 *   }
 *   nn_plateau p = nn_plateau_defaults();
 *   p.patience = 3;
 *   nn_optimizer_set_plateau(opt, &p);
 *   nn_fit_opts o = {.epochs = 50, .validation_split = 0.2, .on_epoch_end = reduce, .ud = opt};
 *   @endcode
 * A step with value v: v improves when it beats the best so far by the
 * threshold (see nn_threshold_mode; a NaN never improves; the best starts
 * at +inf for min, -inf for max); an improvement makes v the best and
 * zeroes the count of bad epochs, anything else adds one. In cooldown
 * (the cooldown counter > 0) the counter goes down by one and the bad
 * epochs are zeroed. When the bad epochs exceed patience, the rate becomes
 * max(lr factor, min_lr), but only if that lowers it by more than eps;
 * the counter is then set to cooldown and the bad epochs to 0. */
typedef struct nn_plateau {
  nn_monitor_mode mode;             /**< NN_MODE_MIN or NN_MODE_MAX (AUTO is refused) */
  double factor;                    /**< in [0, 1): new rate = factor * rate */
  int patience;                     /**< >= 0: bad epochs tolerated */
  double threshold;                 /**< finite, >= 0 */
  nn_threshold_mode threshold_mode; /**< rel (the default) or abs */
  int cooldown;                     /**< >= 0: epochs after a reduction that count as good */
  double min_lr;                    /**< finite, >= 0: the floor of a reduction */
  double eps;                       /**< finite, >= 0: smaller reductions are skipped */
} nn_plateau;

/** PyTorch's defaults: mode min, factor 0.1, patience 10, threshold 1e-4
 * rel, cooldown 0, min_lr 0, eps 1e-8. */
NN_API nn_plateau nn_plateau_defaults(void);

/** Attaches a copy of p (NULL detaches) and resets its state (best as bad
 * as can be, no bad epochs, no cooldown), as PyTorch's constructor. The
 * state is part of the optimizer's: three optional 0-d f64 state tensors
 * "<kind>.plateau.best", "<kind>.plateau.num_bad_epochs" and
 * "<kind>.plateau.cooldown_counter" (PyTorch's names), which checkpoints
 * save and restore; the settings are not: to resume, attach the same p,
 * then load. Independent of the schedule: both may be attached (a warm-up,
 * then reductions on plateaus). Returns AD_OK, AD_ERR_NULL (opt NULL),
 * AD_ERR_ARG naming the bad setting, or AD_ERR_OOM; the optimizer
 * unchanged on error. */
NN_API ad_status nn_optimizer_set_plateau(nn_optimizer *opt, const nn_plateau *p);

/** The settings attached (owned by opt, valid until the next set or
 * nn_optimizer_free), or NULL when there are none or opt is NULL. */
NN_API const nn_plateau *nn_optimizer_plateau(const nn_optimizer *opt);

/** One step with the epoch's metric (see nn_plateau); call it once per
 * epoch after nn_optimizer_schedule_step (nn_fit's on_epoch_end runs
 * after it). A reduction from rate r to r' also scales the schedule's
 * base rate by r' / r, so that an attached schedule goes on from the
 * reduced rate as PyTorch's chainable schedulers do after a
 * ReduceLROnPlateau step (exactly for step, exponential, multistep,
 * linear and the warm-up; cosine then scales its whole curve, where
 * PyTorch scales the distance above eta_min; and warmup_cosine keeps the
 * warm-up's reductions into its cosine, where PyTorch 1.13's SequentialLR
 * restarts the cosine from the unreduced base, dropping them: with lr 0.1,
 * a warm-up of 4 epochs and two halvings in it, epoch 4 is 0.025 here,
 * 0.1 in PyTorch; constant_factor, polynomial and multiplicative go on
 * from the reduced rate as PyTorch's; onecycle, cosine_restarts and lambda
 * scale their whole curve, where PyTorch's, not chainable, drop the
 * reduction at their next step: with lr 0.1, a lambda 1 / (1 + t) and a
 * halving at the end of epoch 2, epoch 3 is 0.0125 in both, epoch 4 0.01
 * here, 0.02 in PyTorch). Returns AD_OK, AD_ERR_NULL
 * (opt NULL), AD_ERR_STATE (no plateau attached) or AD_ERR_OOM (as
 * nn_optimizer_set_lr; unchanged). */
NN_API ad_status nn_optimizer_plateau_step(nn_optimizer *opt, double metric);

/** Options of nn_fit. All-zero means the defaults. */
typedef struct nn_fit_opts {
  int epochs;               /**< default 1 */
  int64_t batch_size;       /**< default 32 */
  uint64_t seed;            /**< of the shuffling */
  bool no_shuffle;          /**< keep row order */
  double validation_split;  /**< in [0,1): the last rows are held out (see nn_fit) */
  ad_tensor *val_x;         /**< validation data given explicitly (wins over the split) */
  ad_tensor *val_y;         /**< its labels or targets */
  bool accuracy;            /**< also compute accuracy (see nn_count_correct) */
  double lambda_l2;         /**< > 0: add lambda_l2 * nn_l2_penalty to the loss (NaN or
                               infinite: AD_ERR_ARG) */
  int verbose;              /**< 0: a progress bar on a terminal, one line per epoch
                               otherwise; 1: one line per epoch; -1: silent */
  FILE *out;                /**< where progress goes; default stdout */
  nn_epoch_fn on_epoch_end; /**< NULL, or called after each epoch */
  void *ud;                 /**< passed to on_epoch_end */
  bool keep_denormals;      /**< default false: subnormal floats flush to zero while
                               nn_fit runs (ad_set_flush_denormal), the caller's
                               mode is restored on return */
  /** early stopping (see nn_early_stopping); off by default */
  nn_early_stopping early_stopping;
  /** record the gradient norms in the history (see nn_history_values): one
   * more pass over the gradients per step; off by default */
  bool grad_norms;
  /** NULL: one process; else data-parallel training as one of several
   * processes (see nn_dist_ops; batch_size is then global): every process
   * passes the same x, y and options, else nn_fit fails on every one
   * before the first step (AD_ERR_ARG: rows to train on, their values
   * (a fingerprint of x's and y's training rows, one pass over them),
   * batch size, epochs or shuffle seed differ) */
  const nn_dist_ops *dist;
  /** drop each epoch's last batch when it has fewer than batch_size rows
   * (PyTorch DataLoader's drop_last; with dist, the last global batch):
   * a batch norm then never trains on a batch of one row. Those rows,
   * other ones each epoch with shuffling, are not trained on in that epoch
   * and do not count in its loss and accuracy. Rows to train on fewer than
   * batch_size is AD_ERR_ARG before any step (no batch would be left). */
  bool drop_last;
} nn_fit_opts;

/** Trains m on x, y (equal row counts) with opt and loss (NN_MEAN) for
 * opts->epochs epochs of mini-batches: per batch, nn_train_step. The epoch's
 * "loss" (and "accuracy") are sample-weighted means over its batches, taken
 * in training mode as the batches go (like Keras); "val_loss" and
 * "val_accuracy" are computed after the epoch by nn_evaluate. With a
 * validation split > 0 (and no val_x), as in Keras, the first
 * floor(rows * (1 - split)) rows train and the rest validate, split before
 * shuffling; the product is taken as the whole number it is within
 * rounding error of (10 rows with split 0.9 train on 1). A split that
 * leaves no row to train on or none to validate is AD_ERR_ARG before any
 * step, and so is a val_x of no rows (without dist, where a rank's own
 * part may be empty). Accuracy thresholds at 0 for
 * nn_bce_with_logits_loss, else 0.5. After each epoch the optimizer's
 * schedule advances; one with step_per_batch (nn_schedule_ext2) advances
 * after each batch's step instead, and the history's "lr" is then the
 * rate of the epoch's first batch. On a terminal (isatty) the progress bar shows batches
 * done, loss, samples/s and ETA, redrawn with a carriage return. A non-finite loss stops
 * training with AD_ERR_NAN. The model is left in evaluation mode.
 * If history is not NULL, *history gets a new nn_history (also on error:
 * the epochs completed), freed by the caller with nn_history_free.
 * With opts->early_stopping.monitor set, training may stop early (see
 * nn_early_stopping); a monitor that this run does not record (say
 * "val_loss" without validation data), a negative or infinite min_delta, a negative patience
 * or an unknown mode is AD_ERR_ARG before any step. x, y, val_x and val_y
 * must be persistent tensors: the tape is reset at every step while rows
 * are still read from them, so a temporary (ad_tensor_is_temporary) is
 * AD_ERR_ARG before any step (ad_tensor_clone makes a persistent copy).
 * While the op profile runs (ad_profile_start, ad.h), each step's phases
 * are its ranges "nn_fit.batch", "nn_fit.zero_grad", "nn_fit.forward"
 * (with the loss), "nn_fit.backward", "nn_fit.grad_norms" (with
 * grad_norms) and "nn_fit.optimizer"; with dist, "nn_fit.reduce" (the
 * wait for the gradients' reduction after the backward) in place of
 * "nn_fit.batch". A range that cannot open (out of memory for its entry,
 * or the caller's ranges already AD_PROFILE_RANGE_DEPTH deep) fails the
 * step with that error; with dist, on every rank when it opens before the
 * reduction, while one after the reduction is only not counted (the
 * context's error is kept) so that no rank stops alone. Returns AD_OK or the error that stopped
 * training. */
NN_API ad_status nn_fit(nn_model *m, nn_optimizer *opt, nn_loss_fn loss, ad_tensor *x, ad_tensor *y,
                        const nn_fit_opts *opts, nn_history **history);

/** nn_fit on the batches of a loader (PyTorch's loop over a DataLoader,
 * Keras' fit on a generator): the same training, history, validation on
 * val_x / val_y, early stopping, schedules and progress, with the loader's
 * batch size, shuffle and seed. For a data set whose get gives the rows of
 * x and y, and a loader with nn_fit's batch size, seed and shuffle (its
 * shuffle = !no_shuffle), the parameters and the history's losses are
 * those of nn_fit on x, y bit for bit, whatever the number of workers.
 * opts' batch_size, seed, no_shuffle, validation_split and drop_last must
 * be 0 (the loader's own options hold them; a split needs the rows in
 * memory: give val_x and val_y), else AD_ERR_ARG.
 * With opts->dist, every rank passes a loader over the same data set with
 * the same options, and loads only its shard of each global batch (the
 * rows nn_fit's sharding gives it); the ranks' agreement checks the rows,
 * batch size and seed but not the samples' values. A failing get stops
 * training with its error (AD_ERR_IO, "loader: sample <i>: ..."), with
 * dist on every rank. The loader's epoch is ended on entry (an epoch the
 * caller began is dropped, as a new DataLoader iterator) and on return (the
 * loader is not freed); each epoch of training is one of the loader's, so a
 * later nn_fit_loader goes on with its next shuffles. AD_ERR_NULL (m, opt, loss
 * or loader NULL), AD_ERR_ARG (a loader of another context, no rows per
 * epoch, bad options), or as nn_fit. */
NN_API ad_status nn_fit_loader(nn_model *m, nn_optimizer *opt, nn_loss_fn loss, nn_loader *loader,
                               const nn_fit_opts *opts, nn_history **history);

/** Epochs recorded. */
NN_API int nn_history_epochs(const nn_history *h);

/** The per-epoch values of key ("loss", "accuracy", "val_loss",
 * "val_accuracy", "lr" (at the start of the epoch), "seconds"), an array
 * of nn_history_epochs entries owned by h, or NULL when the key was not
 * recorded. With nn_fit_opts.grad_norms, also "grad_norm_mean" and
 * "grad_norm_max" (the mean and the largest over the epoch's steps of the
 * global L2 norm of all parameter gradients, taken after the backward pass
 * and before the optimizer step, so including the L2 penalty's part, as
 * nn_clip_grad_norm would see it) and "grad_norm/<name>" for each
 * parameter (the mean over the steps of that tensor's gradient norm,
 * e.g. "grad_norm/0.weight"; 0 for a parameter that got no gradient). */
NN_API const double *nn_history_values(const nn_history *h, const char *key);

/** One value, NAN when absent. */
NN_API double nn_history_get(const nn_history *h, const char *key, int epoch);

/** The number of keys h recorded, and key i in the order above (owned by
 * h; NULL out of range). @{ */
NN_API int nn_history_key_count(const nn_history *h);
NN_API const char *nn_history_key(const nn_history *h, int i);
/** @} */

/** The epoch (0-based) with the best monitored value under early stopping,
 * -1 without early stopping or before an epoch improved. */
NN_API int nn_history_best_epoch(const nn_history *h);

/** Writes h as CSV to path: a header line "epoch,<key>,..." with the
 * recorded keys in nn_history_key order, then one line per epoch, epoch
 * counted from 1, values with 17 significant digits ("nan" when absent).
 * Written to a temporary file next to path and renamed over it, as
 * checkpoints are: path holds the old or the new file, never a part (a
 * symbolic link is written through, its target replaced; a device, FIFO
 * or socket at path is AD_ERR_IO, never replaced).
 * Returns AD_OK, AD_ERR_NULL (h or path NULL), AD_ERR_ARG (path empty),
 * AD_ERR_OOM, or AD_ERR_IO with the path and the reason on h's context. */
NN_API ad_status nn_history_write_csv(const nn_history *h, const char *path);

/** NULL is a no-op. */
NN_API void nn_history_free(nn_history *h);

/** Mean loss (sample-weighted over batches of batch_size, 0 meaning 32; a
 * negative one is AD_ERR_ARG) and, if accuracy is not NULL, the fraction
 * correct, of m on x, y in evaluation and no-grad mode. Resets the tape;
 * restores m's mode. x and y must be persistent tensors (a temporary is
 * AD_ERR_ARG, as in nn_fit); x of no rows (or 0-d) is AD_ERR_ARG, as in
 * nn_predict (Keras' evaluate raises too), not a NaN loss. Returns AD_OK
 * or the error. */
NN_API ad_status nn_evaluate(nn_model *m, nn_loss_fn loss, ad_tensor *x, ad_tensor *y,
                             int64_t batch_size, double *loss_out, double *accuracy);

/** The outputs of m for every row of x, in evaluation and no-grad mode, in
 * batches (0 means 32; negative is AD_ERR_ARG), as a new persistent tensor
 * [rows, ...] the caller frees. Resets the tape; restores m's mode. x must
 * be a persistent tensor (a temporary is AD_ERR_ARG, as in nn_fit). NULL
 * on error. */
NN_API ad_tensor *nn_predict(nn_model *m, ad_tensor *x, int64_t batch_size);

/* ========================================================== checkpoints */

/** Saves m's parameters and buffers (its state dict, as PyTorch's: buffers
 * stored as their nn_store says, num_batches_tracked as I64) under their
 * names and, when opt is not NULL, its
 * state (nn_optimizer_state_names: moments, step counts, the learning rate
 * and the schedule's base rate and epoch, all plain tensors that
 * PyTorch's safetensors reads) to a safetensors file (atomically; see
 * nn_checkpoint_save). No generator is saved (the dropout layers', nn_fit's
 * shuffle): a run resumed from the file draws from its seeds again. */
NN_API ad_status nn_model_save(const nn_model *m, const nn_optimizer *opt, const char *path);

/** Loads m's parameters and buffers (and opt's state when opt is not NULL)
 * from path; every name must be present with the same dtype and shape (a
 * buffer stored as I64 may be I64 or its own dtype; a value that does not
 * fit is AD_ERR_FORMAT), else nothing changes (see nn_checkpoint_load_as). Unlike PyTorch's
 * load_state_dict, no dtype is converted (a float64 file for a float32 model is AD_ERR_DTYPE) and
 * a missing num_batches_tracked is AD_ERR_NOTFOUND (PyTorch 1.13 makes it 0 for a state dict
 * without version metadata, as one read from safetensors). The learning rate comes
 * from the checkpoint, as PyTorch's optimizer load_state_dict does: call nn_optimizer_set_lr
 * afterwards to train on with another one. Step counts must be whole numbers >= 0 and rates finite
 * and >= 0, else AD_ERR_FORMAT and nothing changes. Checkpoints of earlier versions load: a
 * parameter's step count ("adam.step.<p>") may be missing, and is then the optimizer's step counter
 * (those versions advanced every parameter at every step); the rate and the schedule's state may be
 * missing, and the optimizer's own are then kept (those versions did not save them). Entries of
 * the file that m and opt do not name are ignored (an optimizer's state when opt is NULL, tensors
 * of other programs): unlike PyTorch's load_state_dict(strict=True), which reports unexpected
 * keys, a checkpoint of a model with more layers loads into one made of its first layers; compare
 * nn_checkpoint_info_read's entries with nn_model_params to refuse that. */
NN_API ad_status nn_model_load(nn_model *m, nn_optimizer *opt, const char *path);

#ifdef __cplusplus
}
#endif
#endif /* NN_H */
