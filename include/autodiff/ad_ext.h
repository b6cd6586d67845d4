/** @file
 * ad_ext.h: the extension API of the autodiff engine, for code that
 * extends it rather than uses it: new ops (the op registry, typed
 * attributes, the call records, gradcheck of a registered op), tools that
 * read a recorded graph or observe a backward pass (introspection, the
 * backward hook), libraries built on the engine (the allocator, errors,
 * parallel loops, the GEMM). nn/ and bench/ use it; a program that builds
 * and trains models needs only ad.h, which this header includes. Lua splits
 * lua.h and lauxlib.h the same way.
 *
 * Registering an op (docs/new-ops.md walks through it):
 *
 *   @code
 *   static void softsign_fwd(const ad_call *c) { ... c->in[0] ... c->out ... }
 *   static ad_status softsign_bwd(const ad_call *c) {
 *     ad_tensor *d = ...;   (made with ad_ ops from c->in, c->out)
 *     return ad_call_set_grad(c, 0, ad_mul(c->ctx, c->gout, d));
 *   }
 *   const ad_op_def def = {.name = "softsign", .arity = 1, .flags = AD_OP_ELEMENTWISE,
 *                          .forward = softsign_fwd, .backward = softsign_bwd,
 *                          .math = "y = x / (1 + |x|)", .inputs = {"x"},
 *                          .grads = {"dy / (1 + |x|)^2"}};
 *   int id = ad_op_register(ctx, &def);
 *   ad_tensor *y = ad_op_apply(ctx, id, 1, &x, NULL);
 *   @endcode
 */
#ifndef AD_EXT_H
#define AD_EXT_H

#include "ad.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ memory */

/** Lua-style allocator: ptr == NULL allocates nsize bytes; nsize == 0 frees
 * ptr (osize is its size); otherwise reallocates. Returns NULL on failure
 * (never for a free). Memory must be aligned to at least 64 bytes for sizes
 * of 64 or more; the default allocator guarantees it. */
typedef void *(*ad_alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);

/** Creates a context whose every allocation goes through alloc(ud, ...).
 * Returns NULL if alloc is NULL or fails. */
AD_API ad_ctx *ad_ctx_new_with_alloc(ad_alloc_fn alloc, void *ud);

/** Allocates and frees through the context's allocator. ad_malloc returns
 * NULL (and records AD_ERR_OOM) on failure; ad_free(ctx, NULL, 0) is a no-op.
 * size must be the size given to ad_malloc. */
AD_API void *ad_malloc(ad_ctx *ctx, size_t size);
/** The context's allocator and its user data: for code that must allocate
 * through it without recording an error on failure (a tool observing a
 * computation reports its own). Both NULL for a NULL ctx. @{ */
AD_API void ad_get_allocator(const ad_ctx *ctx, ad_alloc_fn *fn, void **ud);
AD_API void ad_free(ad_ctx *ctx, void *ptr, size_t size);
/** @} */

/** Moves t's values (ad_tensor_adopt_data) or its gradient
 * (ad_tensor_adopt_grad) out of the caller's memory they were bound to
 * (ad_tensor_set_data_buffer, ad_tensor_set_grad_buffer) into the engine's,
 * as those setters do with a NULL buffer, but into *mem, allocated
 * beforehand, so that the move itself cannot run out of memory: code that
 * must not fail at that point (nn_dist, moving tensors out of a shared
 * window it is about to free) allocates first, where a failure can still
 * be reported, and moves later. *mem: a block of ad_malloc(ctx, t->size *
 * ad_dtype_size(t->dtype)) on t's context. When the values were in the
 * caller's memory (for the gradient: t->grad, or with t->grad NULL the
 * buffer bound for the next backward) the engine takes the block: *mem
 * becomes NULL and the block is freed with t (its gradient). Otherwise
 * (already in the engine's memory, no gradient and none bound, or an error)
 * *mem is left as it was and the block stays the caller's. Unbinding the
 * gradient also releases a buffer of the caller's kept aside, as
 * ad_tensor_set_grad_buffer does.
 * Returns AD_OK also when there was nothing to move; AD_ERR_NULL (t, mem or
 * *mem NULL), AD_ERR_STATE (t freed, a temporary, or a gradient itself),
 * AD_ERR_ARG (not a tensor; *mem misaligned), AD_ERR_DTYPE (the gradient
 * of an AD_I32 tensor); never AD_ERR_OOM. @{ */
AD_API ad_status ad_tensor_adopt_data(ad_tensor *t, void **mem);
AD_API ad_status ad_tensor_adopt_grad(ad_tensor *t, void **mem);
/** @} */

/* ------------------------------------------------------------ errors */

/** Records an error (printf-style message), replacing the one recorded
 * before, and returns status; AD_OK records nothing. For custom ops and
 * layers built on the API: name the function and the shapes or values
 * that are wrong, as the library does. A status outside ad_status (a
 * code of the caller's own) is recorded and returned as AD_ERR_ARG, the
 * message ending with the value: "(status 12345, which is not an
 * ad_status: recorded as AD_ERR_ARG)". */
AD_API ad_status ad_set_error(ad_ctx *ctx, ad_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/** Records that a required input is NULL, unless an error is already
 * recorded: a NULL input is most often the result of an earlier failure
 * (a chain of calls), whose message names the cause and is kept. Returns
 * AD_ERR_NULL. Use it for tensors and objects made by the library, and
 * ad_set_error for arguments only the caller supplies (paths, functions). */
AD_API ad_status ad_set_null_error(ad_ctx *ctx, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/** @struct ad_attrs
 * Typed attributes of an op call. Each op reads one member, named by its
 * definition's attrs field (ad_attrs_kind) and in docs/derivatives.md; the
 * bytes of the other members are never read, so a caller sets only that
 * one: ad_attrs at = {.scalar = 0.5}. */
/** The comparison of the op compare (ad_attrs.cmp). */
typedef enum ad_cmp { AD_CMP_EQ, AD_CMP_GT, AD_CMP_GE, AD_CMP_LT, AD_CMP_LE } ad_cmp;

/** matmul: whether A and B are transposed. */
typedef struct ad_matmul_attrs {
  bool trans_a; /**< use A^T (no copy is made) */
  bool trans_b; /**< use B^T (no copy is made) */
} ad_matmul_attrs;

/** Reductions: bit k of axes set = dimension k is reduced. The set is one
 * run of adjacent dimensions: every one (ad_sum), one (ad_sum_axis), or a
 * run such as the H, W of NCHW. A 0-d tensor has no dimension: axes 0. */
typedef struct ad_reduce_attrs {
  uint32_t axes; /**< bit k set: dimension k is reduced */
  bool keepdim;  /**< keep reduced dimensions with length 1 */
} ad_reduce_attrs;

/** narrow: elements start..start+len-1 along axis */
typedef struct ad_narrow_attrs {
  int axis;      /**< the dimension */
  int64_t start; /**< the first element */
  int64_t len;   /**< the number of elements */
} ad_narrow_attrs;

/** pad: zeros before and after along axis */
typedef struct ad_pad_attrs {
  int axis;       /**< the dimension */
  int64_t before; /**< zeros before the first element */
  int64_t after;  /**< zeros after the last element */
} ad_pad_attrs;

/** pad_nd and its adjoint pad_nd_backward: the last n axes padded as
 * torch.nn.functional.pad pads them (ad_pad_nd, ad.h) */
typedef struct ad_pad_nd_attrs {
  int n;            /**< padded trailing axes, 1..3 */
  ad_pad_mode mode; /**< how the border is filled */
  double value;     /**< AD_PAD_CONSTANT: the border's value */
  int64_t pad[6];   /**< (before, after) of the last axis, then of the one
                       before it, ... (F.pad's order); the first 2 n count */
} ad_pad_nd_attrs;

/** index_add: the result's length on axis (rows) and the axis the
 * indices address (negative counts from the end of the result) */
typedef struct ad_index_attrs {
  int64_t rows; /**< the result's length on axis */
  int axis;     /**< the axis of the result the indices address */
} ad_index_attrs;

/** a target shape: reshape, expand, sum_to */
typedef struct ad_shape_attrs {
  int ndim;                  /**< the number of dimensions */
  int64_t dims[AD_MAX_DIMS]; /**< the first ndim are the shape */
} ad_shape_attrs;

/** permute: output dim k is input dim perm[k] */
typedef struct ad_permute_attrs {
  int ndim;              /**< the number of dimensions */
  int perm[AD_MAX_DIMS]; /**< the first ndim entries are the permutation */
} ad_permute_attrs;

/** 2-D convolution over NCHW (conv2d, conv_transpose2d, conv2d_weight;
 * autodiff/op_conv.c). Pairs are (h, w). stride and dilation >= 1;
 * padding top, bottom, left, right >= 0 (these at most 2^40); groups >= 1.
 * same: in place of padding, pad for an output as large as the input
 * (stride 1; not for conv_transpose2d), the total d (k - 1) split as
 * PyTorch does, the extra one at the bottom and right. output_padding:
 * conv_transpose2d's extra rows and columns at the bottom and right,
 * smaller than the stride or the dilation (0 for the other two ops).
 * kernel: conv2d_weight's kernel size (the others read it from the weight).
 * Unlike ad_conv_opts (ad.h), zero means zero here, not a default. */
typedef struct ad_conv_attrs {
  /** stride (h, w), padding (top, bottom, left, right), dilation (h, w) and
   * groups @{ */
  int64_t stride[2], padding[4], dilation[2], groups;
  /** @} */
  bool same; /**< pad for an output as large as the input, in place of padding */
  /** conv_transpose2d's output_padding and conv2d_weight's kernel, (h, w) @{ */
  int64_t output_padding[2], kernel[2];
  /** @} */
} ad_conv_attrs;

/** 2-D pooling over the H, W of NCHW (or CHW): per axis (h, w) the window,
 * its step, the implicit padding on both sides (at most half the kernel)
 * and the spacing of its taps, each explicit (ad_pool2d_opts's zeros are
 * resolved by the builders); ceil_mode and count_include_pad as in
 * PyTorch. in_size: the H, W of the input that avg_pool2d_backward gives
 * the gradient of (other ops ignore it). adaptive: PyTorch's adaptive
 * pooling (ad_adaptive_max_pool2d, ad_adaptive_avg_pool2d): kernel is then
 * the output's H, W (each in 1..2^30) and output i of an axis of length L
 * pooled to n covers [floor(i L / n), ceil((i + 1) L / n)), divided by its
 * size for the mean; stride, padding, dilation, ceil_mode and
 * count_include_pad are ignored. */
typedef struct ad_pool_attrs {
  /** per axis (h, w): window, step, padding on both sides, spacing of taps @{ */
  int64_t kernel[2], stride[2], padding[2], dilation[2];
  /** @} */
  /** as in PyTorch @{ */
  bool ceil_mode, count_include_pad;
  /** @} */
  int64_t in_size[2]; /**< avg_pool2d_backward: the H, W of the input */
  bool adaptive;      /**< PyTorch's adaptive windows, kernel the output size (above) */
} ad_pool_attrs;

/** attention: softmax(scale Q K^T [+ causal mask]) V */
typedef struct ad_attention_attrs {
  double scale; /**< the factor of Q K^T */
  bool causal;  /**< mask the positions after each query's own */
} ad_attention_attrs;

/** embedding: the row of the weight that gets no gradient, when padding;
 * padding_idx in -num..num-1, a negative one counting from the end (PyTorch's
 * padding_idx); scale_grad_by_freq divides each row's gradient by the
 * number of times the indices name it */
typedef struct ad_embedding_attrs {
  bool padding;            /**< whether a row gets no gradient */
  int64_t padding_idx;     /**< that row */
  bool scale_grad_by_freq; /**< PyTorch's scale_grad_by_freq */
} ad_embedding_attrs;

/** layer_norm: the normalized shape (the input's last ndim dims) and eps */
typedef struct ad_layer_norm_attrs {
  int ndim;                  /**< the number of normalized dims */
  int64_t dims[AD_MAX_DIMS]; /**< the normalized shape (first ndim entries) */
  double eps;                /**< added to the variance */
} ad_layer_norm_attrs;

/** softmax_cross_entropy: positions whose label is ignore_index (when
 * ignore) count for nothing; sum: the sum over the counted positions in
 * place of their mean */
typedef struct ad_cross_entropy_attrs {
  bool ignore;          /**< whether ignore_index is ignored */
  int32_t ignore_index; /**< the label of positions that count for nothing */
  bool sum;             /**< the sum in place of the mean */
} ad_cross_entropy_attrs;

/** clamp and clamp_backward: the bounds, rounded to the input's dtype when
 * used; -inf / +inf for a missing bound, NaN for a NaN result */
typedef struct ad_clamp_attrs {
  double lo;  /**< the lower bound (torch.clamp's min) */
  double hi;  /**< the upper bound (max) */
  bool inner; /**< hardtanh's gradient: dy only strictly inside the bounds */
} ad_clamp_attrs;

/** elu and elu_backward: PyTorch's elu(x, alpha, scale, input_scale),
 * each coefficient rounded to x's dtype when used (ad_elu, ad.h) */
typedef struct ad_elu_attrs {
  double alpha;            /**< the negative side's factor (times scale) */
  double scale;            /**< both sides' factor */
  double input_scale;      /**< x's factor in the exponential */
  double grad_input_scale; /**< the gradient's input_scale (celu: 1 / float32(alpha)) */
} ad_elu_attrs;

/** cosine_similarity and cosine_similarity_backward: the axis (negative
 * counts from the end) and eps, the least norm */
typedef struct ad_cosine_attrs {
  int axis;   /**< the axis the vectors lie along */
  double eps; /**< each norm's lower clamp (its value only) */
} ad_cosine_attrs;
/** threshold: PyTorch's threshold(x, threshold, value), both rounded to
 * x's dtype when used (ad_threshold, ad.h) */
typedef struct ad_threshold_attrs {
  double threshold; /**< x at or below it is replaced */
  double value;     /**< what replaces it */
} ad_threshold_attrs;

/** Free-form attributes for an op registered at run time. */
typedef struct ad_user_attrs {
  int64_t i[6]; /**< integers, as the op defines them */
  double f[4];  /**< reals, as the op defines them */
} ad_user_attrs;

typedef struct ad_attrs {
  union {
    double scalar;  /**< add_scalar, mul_scalar: s; pow_scalar: p; leaky_relu: alpha;
                       prelu: 0 (ad_prelu), or nonzero for nn_prelu_new's rule: no
                       x-w second derivative at a NaN x, as PyTorch's */
    ad_dtype dtype; /**< cast: the target dtype */
    ad_cmp cmp;     /**< compare */
    int axis;       /**< softmax, log_softmax, concat (negative counts from the end);
                       lstm_seq, gru_seq: the time axis, 0 or 1 */
    int64_t rows;   /**< rows of the result (AD_ATTRS_ROWS: for ops registered at run time) */
    ad_matmul_attrs matmul;
    ad_reduce_attrs reduce;
    ad_narrow_attrs narrow;
    ad_pad_attrs pad;
    ad_shape_attrs shape;
    ad_permute_attrs permute;
    ad_conv_attrs conv;
    ad_pool_attrs pool;
    ad_attention_attrs attention;
    ad_embedding_attrs embedding;
    ad_layer_norm_attrs layer_norm;
    ad_cross_entropy_attrs cross_entropy;
    ad_user_attrs user;
    ad_clamp_attrs clamp;
    ad_pad_nd_attrs pad_nd;
    ad_elu_attrs elu;
    ad_index_attrs index;
    ad_cosine_attrs cosine;
    ad_threshold_attrs threshold;
  };
} ad_attrs;

/** Which member of ad_attrs an op reads (ad_op_def.attrs). */
typedef enum ad_attrs_kind {
  AD_ATTRS_NONE = 0,
  AD_ATTRS_SCALAR,
  AD_ATTRS_DTYPE,
  AD_ATTRS_CMP,
  AD_ATTRS_AXIS,
  AD_ATTRS_ROWS,
  AD_ATTRS_MATMUL,
  AD_ATTRS_REDUCE,
  AD_ATTRS_NARROW,
  AD_ATTRS_PAD,
  AD_ATTRS_SHAPE,
  AD_ATTRS_PERMUTE,
  AD_ATTRS_CONV,
  AD_ATTRS_POOL,
  AD_ATTRS_ATTENTION,
  AD_ATTRS_EMBEDDING,
  AD_ATTRS_LAYER_NORM,
  AD_ATTRS_CROSS_ENTROPY,
  AD_ATTRS_USER,
  AD_ATTRS_CLAMP,
  AD_ATTRS_PAD_ND,
  AD_ATTRS_ELU,
  AD_ATTRS_INDEX,
  AD_ATTRS_COSINE,
  AD_ATTRS_THRESHOLD,
  AD_ATTRS_KIND_COUNT
} ad_attrs_kind;

/** The member's name ("scalar", "reduce", ...; "none"), or "?" when kind is
 * out of range. */
AD_API const char *ad_attrs_kind_name(ad_attrs_kind kind);

/* ------------------------------------------------------- op registry
 * Every op, built-in or user-defined, is one ad_op_def: a name, its
 * properties as data (arity, flags, which attributes it reads, its math
 * with one derivative rule per input) and up to five functions, each of
 * which takes one record. Built-ins are listed in autodiff/ops.def and
 * registered when a context is created; docs/new-ops.md walks through
 * adding one. */

/** One call of an op, as its functions see it. The record is const; the
 * tensors it points to are not. */
typedef struct ad_call {
  ad_ctx *ctx;           /**< the context the op runs in */
  const char *name;      /**< the op's name, for error messages */
  int n;                 /**< number of inputs */
  ad_tensor *const *in;  /**< the inputs */
  const ad_attrs *attrs; /**< never NULL (zeros when the caller gave none) */
  ad_tensor *out;        /**< shape: a header to describe; forward: allocated and
                            shaped, data to fill; backward: the output */
  ad_tensor *gout;       /**< backward: dL/dout, shaped like out */
  const bool *needs;     /**< backward: needs[k], input k wants a gradient */
  ad_tensor **gin;       /**< backward: slots, all NULL on entry */
} ad_call;

/** In a backward: stores g as input k's contribution and returns AD_OK, or,
 * when g is NULL because the op that made it failed, that op's status. k
 * runs 0..c->n-1 (c->gin has c->n slots; a k past them writes past the
 * engine's array, which nothing can detect).
 *   @code
 *   return ad_call_set_grad(c, 0, ad_mul(c->ctx, c->gout, c->out));
 *   @endcode */
static inline ad_status ad_call_set_grad(const ad_call *c, int k, ad_tensor *g);

/** Checks the inputs and describes the output: sets c->out's dtype, ndim
 * and shape (the engine computes its size, checking it for overflow), or
 * returns an error recorded with ad_set_error that names the op and the
 * shapes. c->out arrives with in[0]'s dtype and no ndim: a rule that
 * returns AD_OK must set ndim (0 for a scalar), else the call fails with
 * AD_ERR_ARG; an ndim or dtype out of range, or a negative or too large
 * shape, fails it too. A returned value outside ad_status fails the call
 * with AD_ERR_ARG ("myop: the shape rule returned 12345, which is not an
 * ad_status ..."), keeping the rule's message. May be NULL for an
 * AD_OP_ELEMENTWISE op (see the flag). */
typedef ad_status (*ad_shape_fn)(const ad_call *c);
/** Computes c->out->data from the inputs. Cannot fail. Writes out->size
 * elements of out's dtype and nothing else: not past them, not into the
 * inputs (a tensor's data may be shared by views, and the tape keeps the
 * inputs for the backward). The engine cannot check this; ASan can. An
 * error recorded during it and left (an op it ran failed; ad_tape_reset,
 * which it must not call) fails the call, as one during a shape rule. */
typedef void (*ad_forward_fn)(const ad_call *c);
/** For each k with needs[k], sets gin[k] to input k's contribution to
 * dL/din[k], computed with ad_ ops from c->gout (so it can be recorded and
 * differentiated again), or leaves it NULL for zero. A contribution may
 * have the output's broadcast shape (one that in[k] broadcasts to): the
 * engine sums it down to in[k]'s. The
 * engine adds contributions up; a backward never writes a gradient itself.
 * gin[k] may be any live tensor of c->ctx of in[k]'s dtype, c->gout,
 * c->out or in[k] themselves included; a freed tensor, another context's, another
 * dtype or a shape in[k] does not broadcast to fails the pass, naming the
 * op. gin[k] for an input with needs[k] false is ignored. A backward that
 * returns an error status without recording a message gets one naming
 * the op. Runs only for a float output: a call whose shape rule made an AD_I32
 * output is not recorded (the output requires no gradient, as in PyTorch).
 * Returns AD_OK or the status of the op that failed; a value outside
 * ad_status fails the pass with AD_ERR_ARG ("backward: the backward of
 * myop returned 12345, which is not an ad_status ..."), keeping the
 * backward's message. */
typedef ad_status (*ad_backward_fn)(const ad_call *c);
/** Optional fast path: puts input k's contribution straight into grad
 * (shaped and typed like in[k]: the input's own gradient, or with
 * AD_OP_GRAD_INTO_TEMPS a new accumulator; never write in[k]->grad itself)
 * and returns true, or returns false, having done nothing, where it has no
 * such path (e.g. broadcasting). With overwrite, grad holds nothing yet
 * (a new gradient) and the contribution is stored, as a GEMM with beta = 0
 * does; without, it is added, and the result must be the same bits as
 * making the contribution a tensor and adding that (decline, e.g., a blocked
 * GEMM with beta = 1, which rounds differently). The engine calls it only in
 * ad_backward (never under create_graph), for a persistent input that
 * requires a gradient, and without overwrite only when no backward hook
 * would need the contribution; and, for an op flagged
 * AD_OP_GRAD_INTO_TEMPS, with overwrite and no hook, for an input made by
 * an op, shaped like the output, that has no gradient yet in the pass
 * (grad is then a new temporary, which becomes that input's accumulated
 * gradient). Must not fail: a kernel's own scratch with a fallback is
 * fine, an error to report is not. The engine cannot tell a wrong fast path
 * in use (one that returns true without writing grad, or false after
 * writing it, gives a wrong gradient silently); ad_op_check compares it
 * with the backward, bit for bit, in each of these cases. */
typedef bool (*ad_grad_into_fn)(const ad_call *c, int k, ad_tensor *grad, bool overwrite);

/** Slots a sample function may fill: a fixed arity's AD_MAX_SRC, or for a
 * variadic op a case with more inputs than that (concat of 9). */
#define AD_SAMPLE_MAX_IN 16

/** A gradcheck test case to make. */
typedef struct ad_sample_call {
  ad_ctx *ctx;     /**< the context to make the inputs in */
  ad_rng *rng;     /**< the generator to draw them from */
  ad_dtype dtype;  /**< the float dtype under test */
  int variant;     /**< 0, 1, ...: which case */
  ad_tensor **in;  /**< AD_SAMPLE_MAX_IN slots for persistent inputs (the caller
                      frees them); those to check have requires_grad */
  ad_attrs *attrs; /**< zeroed; set the op's member */
} ad_sample_call;
/** Makes case s->variant. Returns the number of inputs, 0 when there are no
 * more variants, -1 on error (recorded with ad_set_error). Each of
 * s->in[0..n-1] must be a persistent tensor of s->ctx that the sample
 * keeps (ad_rand, ad_from_data, ad_zeros; not an op's result, which the
 * check's tape reset frees, and not freed): ad_op_check refuses anything
 * else, naming the slot. */
typedef int (*ad_sample_fn)(const ad_sample_call *s);

/** ad_op_def.flags */
/** out shares in[0]'s data: the forward sets out->data to point into
 * in[0]'s (out->size elements, all inside in[0]'s data) and copies
 * nothing; a forward that leaves it NULL or points it elsewhere fails the
 * call (AD_ERR_STATE). */
#define AD_OP_VIEW 1
/** Element i of the output is computed from element i of each input under
 * NumPy broadcasting, and the output has the inputs' common float dtype
 * and their broadcast shape. With a NULL shape function the engine applies
 * that rule itself (float inputs of one dtype, broadcastable shapes); with
 * one, the function may check more. Either way, inputs of one float dtype
 * and one shape take the engine's fast path: the output is made like
 * in[0] without calling the shape function. Graph traces show the local
 * derivative of such ops element by element. */
#define AD_OP_ELEMENTWISE 2
/** The op's grad_into (required with this flag) may also store the first
 * gradient of an input made by another op, shaped like the output, into a
 * new temporary (overwrite, no backward hook): a chain of such ops then
 * runs no op per step of its backward. Set it only where that is as fast
 * as the backward (matmul leaves it unset: its backward may compute a
 * product transposed) and gives its bits. */
#define AD_OP_GRAD_INTO_TEMPS 4

/** The definition of an op (see the op registry above). */
typedef struct ad_op_def {
  const char *name;          /**< unique, e.g. "tanh" */
  int arity;                 /**< inputs (1..AD_MAX_SRC), or -1: variadic, one or more */
  int flags;                 /**< any of AD_OP_VIEW, AD_OP_ELEMENTWISE, AD_OP_GRAD_INTO_TEMPS */
  ad_attrs_kind attrs;       /**< the member of ad_attrs it reads (see ad_tensor_attrs) */
  ad_shape_fn shape;         /**< required, unless AD_OP_ELEMENTWISE */
  ad_forward_fn forward;     /**< required */
  ad_backward_fn backward;   /**< NULL: the output carries no gradient */
  ad_grad_into_fn grad_into; /**< optional */
  ad_sample_fn sample;       /**< NULL: gradcheck uses one [3,4] input per arity */
  /** The math, for docs, graph dumps and traces: the forward formula in
   * the input names, e.g. "y = a * b"; the input names ("a", "b"); and per
   * input the contribution it receives, e.g. "dy * b", written in those
   * names, y and dy. NULL grads[k] with a backward: input k gets no
   * gradient. A variadic op takes any number of inputs, so its inputs[0]
   * and grads[0] are one template for every input k ("xk",
   * "narrow(dy, axis, offset_k, len_k)"); the other slots are unused. @{ */
  const char *math;
  const char *inputs[AD_MAX_SRC];
  const char *grads[AD_MAX_SRC];
  /** @} */
  /** With arity > 0: the op takes min_arity..arity inputs, the last ones
   * optional (conv2d's bias); 0 means exactly arity. Each input is named
   * and has its rule in inputs[k], grads[k], as for a fixed arity. */
  int min_arity;
} ad_op_def;

static inline ad_status ad_call_set_grad(const ad_call *c, int k, ad_tensor *g) {
  c->gin[k] = g;
  if (g) return AD_OK;
  ad_status st = ad_last_status(c->ctx);
  return st != AD_OK ? st : AD_ERR_OOM;
}

/** Registers a new op under def->name. The definition and its name are
 * copied; its other strings (math, inputs, grads) must outlive the
 * context. Returns its id, or -1 with AD_ERR_ARG (a missing function, an
 * arity or attrs kind out of range, a flag the engine does not know, a name
 * already taken, 65536 ops registered already) or AD_ERR_OOM. */
AD_API int ad_op_register(ad_ctx *ctx, const ad_op_def *def);
/** Looks up an op by name; -1 if none. */
AD_API int ad_op_find(const ad_ctx *ctx, const char *name);
/** Number of registered ops; ids run 0..count-1. */
AD_API int ad_op_count(const ad_ctx *ctx);
/** The definition of op id (owned by the context, valid until the next
 * ad_op_register on it), NULL if out of range. */
AD_API const ad_op_def *ad_op_get(const ad_ctx *ctx, int id);
/** Runs op id on n inputs (attrs may be NULL for none), recording it when
 * an input requires a gradient and grad mode is on. n: the op's arity (or
 * min_arity..arity); any n >= 1 for a variadic op, bounded only by memory
 * (AD_ERR_ARG otherwise). A call of one or two inputs records with no
 * allocation beyond the result; more take one arena list. id: from
 * ad_op_register or ad_op_find on this ctx (a registered op's id may name
 * another op, or none, in another context). attrs: the member the op's
 * definition names; the engine cannot tell which member a caller set. */
AD_API ad_tensor *ad_op_apply(ad_ctx *ctx, int id, int n, ad_tensor *const *in,
                              const ad_attrs *attrs);
/** The op id that made t (-1 for a leaf) and its inputs: returns the input
 * count and stores up to max pointers in srcs (NULL with max 0: count
 * only; a variadic op may have any number). 0 for leaves or unrecorded. @{ */
AD_API int ad_tensor_op(const ad_tensor *t);
AD_API int ad_tensor_inputs(const ad_tensor *t, ad_tensor **srcs, int max);
/** @} */
/** The attributes t's op was called with (arena, valid until ad_tape_reset),
 * NULL for a leaf, an unrecorded tensor or an op that takes none (a
 * registered op whose definition names no member keeps those it was given,
 * if any, so that its backward sees what its forward saw). */
AD_API const ad_attrs *ad_tensor_attrs(const ad_tensor *t);

/** Checks a registered op through its sample function for one dtype (AD_F32
 * or AD_F64; another is AD_ERR_DTYPE), all variants, first (and with
 * second, second) order, at ad_gradcheck's default tolerance in f64 and at
 * atol 1e-5, rtol 1e-3 in f32 (the numeric side is computed in f64). The
 * sample must make the inputs to check in dtype (else AD_ERR_DTYPE).
 * Those checks differentiate through the backward (ad_grad); for an op
 * with a grad_into, the first-order check also runs ad_backward on each
 * variant (a new gradient, a second pass adding into it, and with
 * AD_OP_GRAD_INTO_TEMPS an input made by an op) and fails with AD_ERR_ARG,
 * naming the variant, input and element, where the fast path's gradient
 * is not the backward's bits. The report gives the worst element over
 * every variant; its input and index are of that variant's inputs. A
 * check that ran and failed (AD_OK returned, report->passed false) also
 * records its finding as the last error, AD_ERR_ARG, naming what the
 * report cannot: "op_check: myop failed the first-order check in f64 in 1
 * of 2 variants; the worst: variant 1, input 0 [2,3], element 4: analytic
 * ..., numeric ... (abs err ..., rel err ...; the tolerance is ...)". A
 * passing check records nothing. Prints nothing. */
AD_API ad_status ad_op_check(ad_ctx *ctx, int id, ad_dtype dtype, bool second, uint64_t seed,
                             ad_check_report *report);

/* ------------------------------------------------------------- plugins */

/** @fn ad_status ad_plugin_register(ad_ctx *ctx)
 * A shared library of ops (a plugin) defines and exports this entry point;
 * `ad-gradcheck --load PATH.so` loads the library, calls it on its context
 * and checks every op it registered. It registers the library's ops on ctx
 * (ad_op_register) and returns AD_OK, or an error status with the message
 * set on ctx (ad_set_error). It is called once per context; the library
 * must stay loaded while ctx uses its ops (their definitions and functions
 * live in it). The library defines it, the engine never does: this
 * declaration only checks the definition's type. AD_PLUGIN_EXPORT makes it
 * visible from a library built with -fvisibility=hidden. */
#if defined(_WIN32) || defined(__CYGWIN__)
#define AD_PLUGIN_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define AD_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define AD_PLUGIN_EXPORT
#endif
AD_PLUGIN_EXPORT ad_status ad_plugin_register(ad_ctx *ctx);

/* ------------------------------------------------------- backward hook */

/** One step of a backward pass, as a hook sees it: the op that made out
 * received gout = dL/dout and sent input k (of n) its contribution. That
 * contribution is gin[k] (shaped like in[k]), or, when direct[k], it went
 * straight into in[k]->grad (an op's grad_into fast path, e.g. a matrix
 * product's GEMM writing a weight's new gradient): in[k]->grad then holds
 * exactly it, the gradient's first contribution of the pass. gin[k] is
 * NULL and direct[k] false when input k received nothing. The record and
 * its arrays (in, gin, direct) are valid during the call; the tensors they
 * point to until ad_tape_reset (grads: until changed). */
typedef struct ad_backward_step {
  /** the op's output and dL/dout @{ */
  const ad_tensor *out, *gout;
  /** @} */
  int n;                 /**< the op's number of inputs */
  ad_tensor *const *in;  /**< the inputs */
  ad_tensor *const *gin; /**< the contributions sent (see above) */
  const bool *direct;    /**< direct[k]: input k's went straight into its grad */
} ad_backward_step;

/** Observes a backward pass: called once per op that backward differentiates,
 * in the order it runs (reverse tape order), after the op's contributions
 * are added into its inputs' gradients. The hook must not run ops on ctx.
 * ad_backward and ad_grad called from a hook return AD_ERR_STATE, and
 * ad_tape_reset records that error and keeps the tape: the running pass
 * reads both. */
typedef void (*ad_backward_hook)(void *ud, const ad_backward_step *step);

/** Installs (fn != NULL) or removes the hook. A hook never changes what
 * backward computes: results are the same bits with and without one, and
 * the fast paths that store a new gradient run either way; only an op's
 * adding into an existing gradient (whose contribution the hook could not
 * see) gives way to the ordinary path, which rounds alike. */
AD_API void ad_set_backward_hook(ad_ctx *ctx, ad_backward_hook fn, void *ud);

/* -------------------------------------------------------- introspection
 * What tools that read a recorded graph (graph dumps, traces, debuggers)
 * need beyond ad_tensor_op, ad_tensor_inputs and ad_tensor_attrs. All
 * accept NULL, any live tensor, and an op's result from before an
 * ad_tape_reset (its arena memory stays the context's; the generation
 * tells it apart), and never write. A freed persistent tensor is not valid
 * (see ad_tensor_free for how long that is detected). */

/** True when t is a tensor: live, or an op's result from an earlier tape
 * generation (ad_tensor_generation tells which). */
AD_API bool ad_tensor_is_valid(const ad_tensor *t);
/** A number that names the persistent tensor t among all the tensors its
 * context has made, for code that keeps tensors between calls and must
 * know whether it is handed the same ones again: an address cannot tell,
 * since a freed tensor's header is reused by a later tensor (see
 * ad_tensor_free). Serials count from 1 in each context, in the order the
 * tensors were made (gradients included); a context never gives one
 * twice. 0 for NULL, a temporary (an op's result) and a freed tensor of a
 * live context (whose header is read, as ad_tensor_is_valid does). */
AD_API uint64_t ad_tensor_serial(const ad_tensor *t);
/** The context t was made in; NULL for NULL or a freed tensor. */
AD_API ad_ctx *ad_tensor_ctx(const ad_tensor *t);
/** t's position on the tape, in execution order, or -1 when t is not on
 * the current tape (a leaf, a constant, an op run in no-grad mode, a
 * result from before ad_tape_reset). */
AD_API int64_t ad_tensor_tape_index(const ad_tensor *t);
/** The tape generation t was made in: ad_tape_reset starts a new one. A
 * temporary of an earlier generation is gone; a persistent tensor's is
 * the last generation whose ops used it (0 if none). */
AD_API uint64_t ad_tensor_generation(const ad_tensor *t);
/** The context's current tape generation. */
AD_API uint64_t ad_tape_generation(const ad_ctx *ctx);
/** The scope group t was recorded in (ad_scope_push): the innermost scope
 * open at the time, an id from 0 to ad_scope_count - 1, or -1 when t is
 * not on the current tape or was recorded outside every scope. */
AD_API int ad_tensor_scope(const ad_tensor *t);
/** Number of scope groups of the current tape (ids 0 .. count-1), the open
 * scopes included; 0 for NULL. */
AD_API int ad_scope_count(const ad_ctx *ctx);
/** The label of group id, valid until the next ad_scope_push or
 * ad_tape_reset; NULL for a bad id. */
AD_API const char *ad_scope_label(const ad_ctx *ctx, int group);
/** The group enclosing group id, or -1 (a top-level group, a bad id). */
AD_API int ad_scope_parent(const ad_ctx *ctx, int group);
/** Allocator blocks the context holds for persistent tensors' headers
 * (slabs of 32, kept until ad_ctx_free so freed tensors stay detectable).
 * For leak checks that count an allocator's live blocks mid-run. */
AD_API size_t ad_ctx_header_blocks(const ad_ctx *ctx);
/** The hook installed now and its user data (NULL, NULL when none), so a
 * tool can chain to it and restore it. */
AD_API void ad_get_backward_hook(const ad_ctx *ctx, ad_backward_hook *fn, void **ud);

/* ------------------------------------------------- threads */

/** A range of a parallel loop: iterations [begin, end). */
typedef void (*ad_range_fn)(void *ud, int64_t begin, int64_t end);

/** Calls fn over disjoint ranges that cover [0, n), each of at least grain
 * iterations (except the last), on the library's threads and the calling
 * thread, and returns when all have run. The ranges are dealt in order, a
 * run of consecutive ranges to each thread (the caller's first); a thread
 * runs its own from the front, then takes the others' last ranges, so a
 * worker that is slow to start does not delay the loop, and while the
 * threads keep pace, loops over the same n give each thread the same part
 * of it (what one loop wrote, the next finds in that core's cache). Runs
 * fn(ud, 0, n) in the caller when there is one thread, n <= grain, from
 * inside another ad_parallel_for, while another thread's loop occupies the
 * workers, or for a while after a worker fell far behind (descheduled).
 * Another thread may call ad_set_num_threads meanwhile: a loop uses the
 * thread count of its start. fn must be safe to run concurrently on
 * disjoint ranges and must not use a context. An fn that calls fork()
 * must only exec or _exit in the child: the child's copy of the loop
 * cannot be finished (its other ranges are the parent's threads'), so a
 * child that returned from fn would hang, or see the loop partly run. */
AD_API void ad_parallel_for(int64_t n, int64_t grain, ad_range_fn fn, void *ud);

/** Where the threads' time went, since the process started or the last
 * reset, for loops that ad_parallel_for handed to the workers (loops it
 * ran whole in the caller count nowhere). With W seconds of wall time and
 * one worker, W - worker_busy_s is what the worker spent idle: in code
 * that runs on the caller alone, or waiting for work. caller_wait_s is
 * what callers spent at the ends of loops, waiting for chunks that
 * workers had claimed and not finished: a slow or late worker. The
 * benchmarks print these to show why two threads are not twice as fast. */
typedef struct ad_thread_stats {
  int64_t loops;        /**< loops handed to the workers */
  int64_t chunks;       /**< chunks the workers ran, of those loops */
  double worker_busy_s; /**< summed over the workers: time in chunks */
  double caller_busy_s; /**< time callers spent handing out loops and in their chunks */
  double caller_wait_s; /**< time callers waited for the workers' chunks */
} ad_thread_stats;

/** The statistics so far into *out (when not NULL); reset sets them to 0
 * afterwards. A loop's counts are all in when its ad_parallel_for returns;
 * a loop that another thread runs meanwhile may count partly before and
 * partly after a reset. */
AD_API void ad_thread_stats_get(ad_thread_stats *out, bool reset);

/* ------------------------------------------------------------- GEMM */

/** C = alpha * op(A) op(B) + beta * C, row-major; op transposes when trans_*.
 * A is m x k after op, B k x n, C m x n. The kernel is the built-in one for
 * the CPU (AVX-512 / AVX2 / portable) or BLAS, by the rule that
 * ad_gemm_backend describes: on AVX-512 always the built-in kernel; on
 * AVX2 the built-in kernel up to 4M multiply-adds and BLAS above when its
 * core has AVX2 kernels; without AVX2, BLAS when linked. @{ */
AD_API void ad_gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                        float *c, int64_t ldc);
AD_API void ad_gemm_f64(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                        const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                        double *c, int64_t ldc);
/** @} */
/** Which kernel runs which products on this machine, and why, e.g. "the
 * built-in AVX-512 kernel for every product (OpenBLAS reports Prescott, a
 * generic core here)". A fixed rule of the CPU's instructions, the core
 * OpenBLAS reports and the product's size, decided once per process;
 * never of timings. Static storage. BLAS (OpenBLAS) is loaded at run time
 * when the rule uses it (never on AVX-512); this call loads it to name its
 * core. Without the library at run time, the built-in kernels run every
 * product. */
AD_API const char *ad_gemm_backend(void);

#ifdef __cplusplus
}
#endif
#endif /* AD_EXT_H */
