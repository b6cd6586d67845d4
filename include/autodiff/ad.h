/** @file
 * ad.h: a tape-based reverse-mode automatic differentiation engine.
 *
 * Overview
 *   An ad_ctx owns a tape, an arena for intermediates, the op registry and
 *   the last error. Leaves (parameters, inputs) are persistent tensors the
 *   caller creates and frees. Every op (ad_add, ad_matmul, ...) allocates its
 *   result in the arena and, when an input requires a gradient and grad mode
 *   is on, appends itself to the tape. The tape is in execution order, so
 *   ad_backward walks it in reverse. ad_tape_reset frees every intermediate
 *   in O(1).
 *
 *   Backward formulas are written with the same ops, so a backward pass can
 *   itself be recorded (ad_grad with create_graph) and differentiated again.
 *
 * Worked example: d/dw of sum(tanh(w * x))
 *
 *   @code
 *   ad_ctx *ctx = ad_ctx_new();
 *   int64_t n[1] = {3};
 *   ad_tensor *w = ad_full(ctx, AD_F64, 1, n, 0.5);
 *   ad_tensor *x = ad_arange(ctx, AD_F64, 0, 3, 1);
 *   ad_tensor_set_requires_grad(w, true);
 *   ad_tensor *y = ad_sum(ctx, ad_tanh(ctx, ad_mul(ctx, w, x)));
 *   if (!y || ad_backward(ctx, y, NULL) != AD_OK)
 *     fprintf(stderr, "%s\n", ad_last_error(ctx));
 *   ad_tensor_print(stdout, "dw", w->grad);
 *   ad_tape_reset(ctx);
 *   ad_tensor_free(w); ad_tensor_free(x); ad_ctx_free(ctx);
 *   @endcode
 *
 * Errors
 *   Functions returning ad_status return AD_OK (0) or an error code; builders
 *   return NULL. Either way ad_last_error(ctx) names the op and the shapes.
 *   Which message is kept: an op that fails only because an input is NULL
 *   (the result of an earlier failure) leaves the recorded message alone,
 *   so the end of a chain of calls still names its root cause and a chain
 *   needs one check at the end; any other failure replaces the message, so
 *   an error the caller ignored never masks a new one. The library never
 *   aborts or exits on user input; a broken internal invariant (a bug in
 *   the library) aborts with file, line and a hint.
 *
 * Ownership (what the library checks, and what C leaves to you)
 *   - A tensor belongs to the context that made it. Ops, ad_backward and
 *     ad_grad refuse a tensor of another context with an error.
 *   - Persistent tensors live until ad_tensor_free; a tensor's grad is
 *     freed with it (freeing the grad alone is refused). Using a freed
 *     tensor, freeing it twice, or freeing a leaf that a recorded op still
 *     needs before its backward is reported, not undefined (see
 *     ad_tensor_free for how long that is detected).
 *   - Op results live until ad_tape_reset and must not be used after it.
 *     An op or backward given one from before the reset is refused when
 *     that can be told: once the arena has handed the memory to a new
 *     result, the stale pointer names that result and C cannot tell them
 *     apart. Other uses of such a pointer are not checked: do not keep
 *     them past the reset.
 *   - ad_ctx_free frees every tensor still live; nothing of the context
 *     (tensors, nn models and optimizers) may be used or freed after it:
 *     free those first. ad_ctx_live_tensors counts what is still live.
 *   - Data pointers (t->data, t->grad->data) are plain memory: writes out of
 *     a tensor's bounds, or through a pointer kept past its tensor's life,
 *     are beyond what a C library can catch.
 *
 * Threading
 *   A context and its tensors are used by one thread at a time. Separate
 *   contexts are independent. After fork() the child keeps its contexts
 *   and its ad_set_num_threads setting, and starts worker threads of its
 *   own at its first parallel loop (fork copies only the calling thread);
 *   fork waits for a parallel loop another thread has in progress.
 *
 * Reproducibility
 *   The same inputs give the same bits on any number of threads
 *   (ad_set_num_threads, but for products OpenBLAS splits) and on any
 *   instruction set of the engine's own loops: they are compiled for
 *   AVX-512, AVX2 and the x86-64 baseline with the same bits on each (on
 *   an AVX-512 machine the test isa_clones runs the other two under
 *   emulation), NaNs aside, whose sign and payload IEEE 754 leaves open.
 *   Not the same bits from one CPU to another: matrix products (which
 *   kernel, or OpenBLAS, runs one is the CPU's) and what goes through
 *   float64 erf and pow, the log of a sum in log_softmax, logsumexp and
 *   cross-entropy, and sin and cos beyond |x| = 2^20, which come from the
 *   C library, whose variants for CPUs with and without FMA may differ in
 *   the last bit. float64 exp, tanh, sigmoid, softplus, logsigmoid, elu
 *   (selu, celu), binary cross-entropy with logits, the exponentials of
 *   the softmax family and cross-entropy, the recurrent cells, and log
 *   (of positive normal numbers), atan, and sin and cos up to |x| = 2^20
 *   (these four in builds with fused multiply-adds: GCC's on x86-64 or
 *   aarch64, or any compiled with FMA; else the C library's) are the
 *   engine's own (exp within 0.68 ulp, 0.78 where the result is
 *   subnormal, glibc's 0.51; tanh within 1.23, glibc's 2.15; sin and cos
 *   within 0.77, atan 0.542, log 0.55), the same bits on every CPU.
 */
#ifndef AD_H
#define AD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(AD_BUILDING_DLL)
#define AD_API __declspec(dllexport)
#elif defined(__GNUC__)
#define AD_API __attribute__((visibility("default")))
#else
#define AD_API
#endif

#define AD_VERSION  "0.2.0" /**< the release number (meson's project version) */
#define AD_MAX_DIMS 8       /**< most dimensions a tensor may have */
/** Most inputs of an op of fixed arity (the length of ad_op_def's inputs
 * and grads). A variadic op (ad_concat, and ad_stack built on it) takes
 * any number. */
#define AD_MAX_SRC 8

/* ---------------------------------------------------------------- types */

/** The element type of a tensor. */
typedef enum ad_dtype {
  AD_F32 = 0, /**< float */
  AD_F64 = 1, /**< double */
  AD_I32 = 2  /**< int32_t: indices and class labels; never differentiated */
} ad_dtype;

/** What a call that can fail returns; ad_status_str names each code. */
typedef enum ad_status {
  AD_OK = 0,
  AD_ERR_NULL,     /**< a required pointer was NULL */
  AD_ERR_SHAPE,    /**< shapes do not fit the op */
  AD_ERR_DTYPE,    /**< dtypes differ or the op does not take this dtype */
  AD_ERR_ARG,      /**< an argument is out of range */
  AD_ERR_OOM,      /**< the allocator returned NULL */
  AD_ERR_STATE,    /**< the call is not valid now (e.g. tape was reset) */
  AD_ERR_NAN,      /**< a NaN or Inf was found where it is not allowed */
  AD_ERR_IO,       /**< a file could not be read or written */
  AD_ERR_FORMAT,   /**< a file is malformed or truncated */
  AD_ERR_NOTFOUND, /**< a name was not found */
  AD_STATUS_COUNT
} ad_status;

/** The public, read-mostly view of a tensor. Data is row-major contiguous.
 * Fields are set by the library; callers may write through data (e.g. to
 * fill an input batch or update a parameter) but must not change the shape.
 * grad is NULL until a backward pass reaches the tensor. */
typedef struct ad_tensor {
  void *data;                 /**< size elements of dtype */
  struct ad_tensor *grad;     /**< accumulated gradient (same shape), or NULL */
  int64_t size;               /**< number of elements */
  int64_t shape[AD_MAX_DIMS]; /**< the first ndim entries are the dimensions */
  int ndim;                   /**< 0 for a scalar */
  ad_dtype dtype;             /**< the element type */
} ad_tensor;

/** A context (see the overview above): the tape, the arena, the op registry
 * and the last error. Opaque; made by ad_ctx_new, freed by ad_ctx_free. */
typedef struct ad_ctx ad_ctx;

/** xoshiro256** state; seed it with ad_rng_seed. Plain data: copy to fork. */
typedef struct ad_rng {
  uint64_t s[4]; /**< the state */
} ad_rng;

/* ------------------------------------------------------- context, errors */

/** Creates a context with the default allocator. Returns NULL only when the
 * system is out of memory. Free with ad_ctx_free. The default allocator
 * aligns blocks to 64 bytes, and blocks of 2 MiB or more to 2 MiB with
 * their whole 2 MiB pages advised for transparent huge pages on Linux
 * (fewer page faults when a run first touches its tensors); a program
 * that wants other memory passes its own (ad_ctx_new_with_alloc). */
AD_API ad_ctx *ad_ctx_new(void);

/** Frees the context, its arena, its registry and every persistent tensor
 * still live (ad_ctx_live_tensors tells how many there are). Afterwards no
 * tensor of the context may be used or freed, and nothing built on it (nn
 * models, optimizers) may be used or freed: free those first.
 * ad_ctx_free(NULL) is a no-op. */
AD_API void ad_ctx_free(ad_ctx *ctx);

/** Number of persistent tensors of ctx not yet freed, gradients included
 * (0 for NULL). A program that frees what it makes sees this fall back to
 * where it started. */
AD_API size_t ad_ctx_live_tensors(const ad_ctx *ctx);

/** The message of the last error (see "Errors" above for which one a NULL
 * input keeps), e.g. "matmul: inner dimensions differ: [32,784] x
 * [64,10]", or "" if none since ad_clear_error. Owned by the context; valid
 * until the next error or ad_clear_error. */
AD_API const char *ad_last_error(const ad_ctx *ctx);

/** The status of that error, AD_OK if none. */
AD_API ad_status ad_last_status(const ad_ctx *ctx);

/** Forgets the recorded error: ad_last_status is AD_OK again. */
AD_API void ad_clear_error(ad_ctx *ctx);

/** A static name for a status code: "ok", "shape mismatch", ... */
AD_API const char *ad_status_str(ad_status status);

/** Writes "[2,3,4]" for t into buf (at most n bytes, NUL-terminated) and
 * returns buf. "(null)" for NULL. */
AD_API char *ad_shape_str(const ad_tensor *t, char *buf, size_t n);

/* ------------------------------------------------------------------ RNG
 * A generator is caller-owned plain data (ad_rng) with no context, so no
 * sticky error. A NULL rng never crashes: ad_rng_seed returns AD_ERR_NULL;
 * a draw from a NULL rng returns NaN (real draws: never a real draw) or 0
 * (integer draws: no value is free, and an index must stay in range).
 * Check ad_rng_seed's status: the generator it seeded is not NULL. An
 * ad_rng never seeded (declared "= {0}") holds the one state xoshiro256**
 * never leaves: every draw is 0 (every normal 37.17). ad_rng_seed never
 * gives it, and the functions that take a context and an rng (ad_rand,
 * ad_randn, ad_scaled_dot_product_attention's dropout, nn_init_tensor and
 * the layer constructors, nn_rrelu) refuse it with AD_ERR_ARG, "...: rng is
 * not seeded ...". */

/** Sets the state from seed (splitmix64), so equal seeds give equal
 * streams. Returns AD_OK, or AD_ERR_NULL (nothing done) if rng is NULL. */
AD_API ad_status ad_rng_seed(ad_rng *rng, uint64_t seed);
/** The next 64 random bits (xoshiro256**). A NULL rng returns 0, which is
 * also a possible draw. */
AD_API uint64_t ad_rng_next(ad_rng *rng);
/** Uniform in [0, 1). A NULL rng returns NaN. */
AD_API double ad_rng_uniform(ad_rng *rng);
/** Standard normal (Box-Muller). A NULL rng returns NaN. */
AD_API double ad_rng_normal(ad_rng *rng);
/** Uniform integer in [0, n) (unbiased). Returns 0 if n == 0 or rng is NULL:
 * the result is an index, so it never falls outside [0, n) for n > 0. */
AD_API uint64_t ad_rng_below(ad_rng *rng, uint64_t n);

/* -------------------------------------------- persistent tensors (leaves) */
/** These live until ad_tensor_free and survive ad_tape_reset. shape has ndim
 * entries, each >= 0, whose non-zero ones multiply to at most 2^40; ndim 0
 * is a scalar. They return NULL and record AD_ERR_ARG (bad shape, or a
 * value an AD_I32 tensor cannot hold: NaN or outside the int32 range),
 * AD_ERR_DTYPE, AD_ERR_NULL (NULL shape with ndim > 0) or AD_ERR_OOM. @{ */
AD_API ad_tensor *ad_zeros(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape);
AD_API ad_tensor *ad_ones(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape);
AD_API ad_tensor *ad_full(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape,
                          double value);
/** @} */
/** Copies size elements of dtype from src (which may be NULL for zeros). */
AD_API ad_tensor *ad_from_data(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape,
                               const void *src);
/** 1-D tensor start, start+step, ... < stop (> stop for negative step);
 * AD_ERR_ARG for a zero or non-finite step or bound, or more than 2^40
 * elements. */
AD_API ad_tensor *ad_arange(ad_ctx *ctx, ad_dtype dtype, double start, double stop, double step);
/** Uniform in [lo, hi) / normal(mean, std), drawn from rng in row-major
 * order. Every uniform value is below hi also after rounding to the dtype
 * (lo == hi gives lo; so does a range holding no value of the dtype, as
 * [0.1, 0.1 + 1e-12) in float32: lo rounded, as PyTorch's). An AD_I32
 * ad_rand is torch.randint(lo, hi): integers uniform in [lo, hi), exactly
 * (ad_rng_below, one call per element), for integer bounds with lo >=
 * -2^31 and hi <= 2^31. AD_ERR_ARG for a non-finite bound, lo > hi, hi -
 * lo beyond the double range, a bound beyond float32's range for AD_F32
 * (PyTorch: "from is out of bounds for float"), a bound that is no
 * integer or outside those limits for AD_I32, a non-finite mean or std,
 * or std < 0 (PyTorch refuses these too), or an rng never seeded (above);
 * AD_ERR_DTYPE for an AD_I32 ad_randn (PyTorch has no normal draws for
 * integers). @{ */
AD_API ad_tensor *ad_rand(ad_ctx *ctx, ad_rng *rng, ad_dtype dtype, int ndim, const int64_t *shape,
                          double lo, double hi);
AD_API ad_tensor *ad_randn(ad_ctx *ctx, ad_rng *rng, ad_dtype dtype, int ndim, const int64_t *shape,
                           double mean, double std);
/** @} */
/** A persistent deep copy of t's data (not its grad or history). NULL with
 * AD_ERR_STATE for a freed tensor or a temporary of a tape that was reset. */
AD_API ad_tensor *ad_tensor_clone(ad_ctx *ctx, const ad_tensor *t);

/** Frees a persistent tensor and its grad. NULL is a no-op. Tensors made by
 * ops belong to the tape: passing one is ignored. A gradient (t->grad) is
 * owned by its tensor: freeing it alone is refused with AD_ERR_STATE on the
 * context (release it with ad_tensor_zero_grad). Freeing twice, or passing
 * a freed tensor to an op, ad_backward or the accessors below, is detected
 * and reported (AD_ERR_STATE or AD_ERR_ARG) without touching freed memory,
 * as long as the freed tensor's header has not been reused: the context
 * keeps at least the 64 most recently freed headers unused. A tensor that an
 * op of the current tape used keeps its data and header until ad_tape_reset:
 * views of it (reshape) still read its values, and a backward that needs
 * it fails with AD_ERR_STATE before writing any gradient. */
AD_API void ad_tensor_free(ad_tensor *t);

/** A scalar (0-d) constant in the arena; freed by ad_tape_reset. NULL with
 * AD_ERR_ARG for an AD_I32 value int32 cannot hold (NaN, out of range). */
AD_API ad_tensor *ad_scalar(ad_ctx *ctx, ad_dtype dtype, double value);
/** A constant with x's dtype and shape, every element value (zeros_like: 0),
 * as torch.full_like / zeros_like: a temporary of the tape like an op's
 * result (the caller does not free it; ad_tape_reset does), which never
 * requires a gradient and sends none to x (x only gives the shape). Use it
 * where an op's result is expected, e.g. an RNN's first hidden state
 * ad_zeros_like(ctx, h_shaped). NULL with AD_ERR_NULL (x NULL), AD_ERR_ARG
 * (x not a tensor, of another context; value out of range for AD_I32) or
 * AD_ERR_STATE (x freed, or a temporary of a tape that was reset). @{ */
AD_API ad_tensor *ad_full_like(ad_ctx *ctx, const ad_tensor *x, double value);
AD_API ad_tensor *ad_zeros_like(ad_ctx *ctx, const ad_tensor *x);
/** @} */

/** Marks a leaf as needing a gradient; backward accumulates into t->grad.
 * Returns AD_ERR_NULL for NULL t, AD_ERR_STATE for a tensor made by an op
 * or a freed one, AD_ERR_DTYPE for AD_I32. @{ */
AD_API ad_status ad_tensor_set_requires_grad(ad_tensor *t, bool on);
AD_API bool ad_tensor_requires_grad(const ad_tensor *t);
/** @} */

/** Asks backward to keep the gradient of an intermediate in t->grad (in the
 * arena, valid until ad_tape_reset). Returns AD_ERR_NULL for NULL t,
 * AD_ERR_STATE for a freed tensor. */
AD_API ad_status ad_tensor_retain_grad(ad_tensor *t);

/** Zeroes t's gradient by releasing it, as PyTorch's zero_grad() does by
 * default since 2.0 (set_to_none; 1.13 fills zeros): t->grad becomes
 * NULL, in O(1). The buffer is kept for t: the next backward that
 * reaches t stores its gradient there (its first contribution is written,
 * not added to zeros), so a training loop neither allocates nor clears
 * gradients. A backward whose tape used the
 * released tensor (read as a value after zero_grad) stores into a new
 * buffer instead and leaves the released one as it was, as one that adds
 * into a grad the tape used (ad_backward); the next zero_grad keeps one of
 * the two (a buffer bound by ad_tensor_set_grad_buffer if either is) and
 * frees the other. Code that reads t->grad between
 * a zero_grad and the next backward finds NULL, meaning zero; to keep a
 * zeroed buffer instead, fill it: ad_tensor_fill(t->grad, 0). NULL t or no
 * grad: no-op; a freed t is reported (AD_ERR_STATE on its context). */
AD_API void ad_tensor_zero_grad(ad_tensor *t);

/** Caller-provided storage for a persistent tensor's values or gradient,
 * so that data can live in memory the caller manages (a window shared
 * between processes, a buffer another library fills) without a copy each
 * step. buf holds t->size elements of t's dtype, aligned to the element
 * size; the caller owns it (the engine never frees or reallocates it) and
 * keeps it valid until t is freed or bound elsewhere. Binding again
 * re-points t (e.g. a buffer per step); buf NULL moves the values back to
 * memory the engine allocates (copied; copy is then ignored).
 *
 * ad_tensor_set_data_buffer: t->data becomes buf; with copy, t's values
 * are copied into it first, else buf's contents become t's values (several
 * tensors, in one process or in processes sharing memory, may then hold one
 * copy). When an op of the current tape used t, its views of t (reshape,
 * detach) keep reading the memory t had then: so while t's memory is the
 * engine's, that is refused (AD_ERR_STATE: bind between ad_tape_reset and
 * the first use); from the caller's memory it is allowed with copy (or
 * buf NULL: the ops' backwards read the values where they are now, so they
 * must not change), and the caller keeps the old buffer valid until the
 * tape is reset.
 *
 * ad_tensor_set_grad_buffer: buf becomes where t's gradient is stored:
 * t->grad->data == buf. With copy, a gradient t has now is copied into buf
 * (with none, t->grad stays NULL and the next backward that reaches t
 * stores its gradient in buf: the first contribution written, later ones
 * added); without copy, buf's contents become t's gradient (t->grad is set
 * also where it was NULL). ad_tensor_zero_grad releases t->grad as always
 * and keeps buf for the next backward. A backward whose tape read t->grad
 * as a value leaves buf as the tape read it and gives t->grad a new buffer
 * (t->grad->data != buf: ad_backward); the next ad_tensor_zero_grad keeps
 * buf, and the backward after it stores there again, unless the binding
 * ends first (buf NULL, or another buffer): nothing is stored into buf
 * after that. As for the values,
 * while an op of the current tape used t->grad, moving it out of engine
 * memory is refused (AD_ERR_STATE) and out of the caller's is allowed with
 * copy (or buf NULL). The caller must not write buf while a backward runs.
 *
 * Both: AD_ERR_NULL (t NULL), AD_ERR_STATE (t freed, a temporary, or a
 * gradient itself; the tape rules above), AD_ERR_ARG (not a tensor; buf
 * misaligned; buf the memory the engine holds t's values or gradient in),
 * AD_ERR_DTYPE (grad of an AD_I32 tensor), AD_ERR_OOM (buf NULL and no
 * memory: t unchanged). @{ */
AD_API ad_status ad_tensor_set_data_buffer(ad_tensor *t, void *buf, bool copy);
AD_API ad_status ad_tensor_set_grad_buffer(ad_tensor *t, void *buf, bool copy);
/** @} */

/** Names t (the name is copied) for error messages, anomaly reports, graph
 * dumps and traces: nn names its parameters as PyTorch does ("0.weight").
 * NULL or "" removes the name. A name lasts as long as the tensor: until
 * ad_tensor_free, or for an op's result until ad_tape_reset. Returns
 * AD_ERR_NULL for NULL t, AD_ERR_STATE for a freed tensor, AD_ERR_OOM. */
AD_API ad_status ad_tensor_set_name(ad_tensor *t, const char *name);
/** t's name, or NULL when it has none. Owned by the context; valid until
 * the name changes or the tensor goes. */
AD_API const char *ad_tensor_name(const ad_tensor *t);

/** True for a tensor made by an op (freed by ad_tape_reset). */
AD_API bool ad_tensor_is_temporary(const ad_tensor *t);

/** Element i (row-major flat index) as a double; 0 if out of range, NaN for
 * a freed tensor or a temporary of a tape that was reset (ad_tape_reset
 * gives its memory to later temporaries). The setters, ad_tensor_copy_data
 * and ad_tensor_clone return AD_ERR_STATE for either, recorded on t's
 * context. */
AD_API double ad_tensor_get(const ad_tensor *t, int64_t i);
/** Sets element i; returns AD_ERR_ARG when i is out of range, or when t is
 * AD_I32 and v is NaN or outside the int32 range (recorded, t unchanged);
 * other values are truncated toward zero, as a C cast does.
 *
 * Writes into a tensor the tape uses: writing, with this, ad_tensor_fill
 * or ad_tensor_copy_data, a tensor that an op of the current tape took as
 * input, or an op's result, after that op was recorded is noted (as
 * PyTorch's version counters do): a later ad_backward or ad_grad whose
 * pass reaches the op returns AD_ERR_STATE naming the op and the tensor,
 * before it changes any gradient, instead of taking the gradient at the
 * new values (or of a function the program no longer computes). This
 * holds whether or not that op's backward reads the value (PyTorch refuses
 * only where it does). Write between ad_backward and ad_tape_reset (as an
 * optimizer does) or after the reset. Writes are matched by memory, so a
 * write into x is seen by an op that read a view of it (a reshape) and
 * the other way round. Not seen: writes through t->data (announce them
 * with ad_tensor_mark_modified), and through a persistent tensor no op of
 * the tape used that shares its buffer with one an op used (a buffer bound
 * to two tensors). AD_ERR_OOM when the note cannot be kept (t unchanged). */
AD_API ad_status ad_tensor_set(ad_tensor *t, int64_t i, double v);

/** Tells the engine that t's data was changed in place other than through
 * ad_tensor_set, ad_tensor_fill or ad_tensor_copy_data (through t->data,
 * say, as nn's optimizers do): a backward that reaches an op recorded
 * before the change, with t as its input or result, then refuses as
 * described at ad_tensor_set. Costs a branch when no op of the current
 * tape used t. Returns AD_OK, AD_ERR_NULL, AD_ERR_STATE (a freed tensor or
 * a temporary of a reset tape), AD_ERR_OOM. */
AD_API ad_status ad_tensor_mark_modified(ad_tensor *t);
/** The single element of a size-1 tensor; NAN otherwise (and as
 * ad_tensor_get). */
AD_API double ad_tensor_item(const ad_tensor *t);
/** Copies src's values into dst (same size; dtypes may differ). Into an
 * AD_I32 dst, a NaN or out-of-range value is AD_ERR_ARG and dst is left
 * unchanged. A write into a tensor the tape uses is noted as
 * ad_tensor_set's. */
AD_API ad_status ad_tensor_copy_data(ad_tensor *dst, const ad_tensor *src);
/** Fills every element with v. AD_ERR_NULL for NULL t; AD_ERR_ARG (t
 * unchanged) when t is AD_I32 and v is NaN or outside the int32 range. A
 * write into a tensor the tape uses is noted as ad_tensor_set's. */
AD_API ad_status ad_tensor_fill(ad_tensor *t, double v);
/** True when some element is NaN or infinite, or (as ad_tensor_get reads
 * NaN from it) for a freed tensor or a temporary of a reset tape. */
AD_API bool ad_tensor_has_nonfinite(const ad_tensor *t);
/** Bytes per element of a dtype (4, 8, 4). */
AD_API size_t ad_dtype_size(ad_dtype dtype);
AD_API const char *ad_dtype_name(ad_dtype dtype); /**< "f32", "f64", "i32" */

/** Prints "name: shape dtype" then the values, numpy-style, summarizing
 * dimensions longer than 6 with "...". name may be NULL. A freed tensor
 * prints as "name: (freed)", a temporary of a reset tape as "name: (from a
 * tape that was reset)". */
AD_API void ad_tensor_print(FILE *f, const char *name, const ad_tensor *t);

/* ---------------------------------------------------------------- tape */

/** Frees every intermediate and empties the tape in O(1). Tensors made by ops
 * before the reset must not be used after it; ad_backward detects a root
 * from an earlier tape and returns AD_ERR_STATE, as far as that can be told
 * (not once a new result took its arena memory: see Ownership above).
 * Called during a backward pass (from a backward hook or an op's backward)
 * or from a registered op's shape rule or forward, it records AD_ERR_STATE
 * on ctx and does nothing. */
AD_API void ad_tape_reset(ad_ctx *ctx);

/** Number of recorded ops; bytes the arena holds; bytes in use now. @{ */
AD_API size_t ad_tape_size(const ad_ctx *ctx);
AD_API size_t ad_arena_capacity(const ad_ctx *ctx);
AD_API size_t ad_arena_used(const ad_ctx *ctx);
/** @} */

/** Caps the arena at bytes (0, the default: no cap). The arena grows in
 * chunks and keeps them across ad_tape_reset, so a training loop that
 * resets the tape each step stays at its first step's size; one that forgets
 * to reset grows without end. With a cap, an op that would grow the arena
 * past it fails with AD_ERR_OOM and a message saying so, instead. The cap
 * applies to growth from now on; memory already held is kept. Returns
 * AD_ERR_NULL for NULL ctx. */
AD_API ad_status ad_set_arena_limit(ad_ctx *ctx, size_t bytes);

/** Turns recording on or off (no-grad mode: ops run, nothing is recorded).
 * Returns the previous setting. @{ */
AD_API bool ad_set_grad_enabled(ad_ctx *ctx, bool on);
AD_API bool ad_grad_enabled(const ad_ctx *ctx);
/** @} */

/** Anomaly mode (off by default; PyTorch's detect_anomaly, in forward too):
 * every float op's result is checked when it is made and every gradient
 * an op's backward sends when it is sent. The first NaN or infinity makes
 * the op (or the backward) fail with AD_ERR_NAN and a message naming the
 * op, the shapes and names of its tensors, and which input carried the
 * value or, in backward, which forward op's rule produced it:
 *   @code{.unparsed}
 *   backward of sqrt (forward: sqrt of 'h1' [32,64]) sent a non-finite
 *   gradient (nan at element 3) to input 0 ('h1' [32,64])
 *   @endcode
 * While on, backward takes no fast path that writes into gradients
 * directly, so every contribution is checked; it costs a pass over every
 * result (docs/performance.md has the figure). Off, it costs nothing
 * measurable. Returns the previous setting (false for NULL ctx). @{ */
AD_API bool ad_set_anomaly_mode(ad_ctx *ctx, bool on);
AD_API bool ad_anomaly_mode(const ad_ctx *ctx);
/** @} */

/** Op profile (off until ad_profile_start): the time each op of the table
 * takes, forward and backward, summed per op over the calls made while it
 * runs (torch.autograd.profiler's table for this engine's ops). A forward
 * call is one successful ad_op_apply outside a backward pass (every
 * builder applies one op or more: ad_flip over two axes applies two
 * flips); its time runs from the call to the result's record on the tape,
 * less the time of ops applied inside it (a registered op whose forward
 * applies ops: those get rows of their own). A backward call is one node
 * a backward pass (ad_backward, ad_grad) differentiates; its time includes
 * the ops its derivative rule applies (with create_graph, the recorded
 * ones) and the adding of its gradients into their inputs', and leaves out
 * the backward hook's time, which is summed apart. A call that fails (an
 * op's error, a backward that fails) is not counted: a failed node's time
 * stays in its pass's total. Time is wall-clock
 * (CLOCK_MONOTONIC): with several threads (ad_set_num_threads) an op's
 * time is the caller's wait for all of them. What runs outside ops (an
 * nn optimizer's step, a batch gather) is not counted. While on, each
 * call costs two clock reads (about 50 ns on a machine whose clock is
 * read in user space); off, a branch. A started profile keeps a row for
 * each op the context has (32 bytes each) until ad_ctx_free. @{ */
typedef struct ad_profile_row {
  const char *op; /**< the op's name (the context's copy: valid while the op is registered) */
  int64_t forward_calls;  /**< ops applied outside backward passes */
  double forward_s;       /**< their time, seconds, less the ops applied inside them */
  int64_t backward_calls; /**< nodes differentiated by backward passes */
  double backward_s;      /**< their time, seconds, hook aside */
} ad_profile_row;

/** Totals beside the rows: the backward passes' whole time includes, beside
 * the nodes', the seed, the sweep over the tape and the hook. */
typedef struct ad_profile_totals {
  int64_t backward_passes; /**< ad_backward and ad_grad calls past their argument checks (a
                              pass that failed included) */
  double backward_s;       /**< their time in all, seconds */
  double hook_s;           /**< of which in the backward hook (ad_set_backward_hook) */
} ad_profile_totals;

/** Starts the profile with every count at zero (a profile already running
 * starts over). Returns AD_ERR_NULL, AD_ERR_STATE when called from an op's
 * functions or during a backward pass (the running call's time would be
 * split between two profiles), AD_ERR_OOM (no profile then). */
AD_API ad_status ad_profile_start(ad_ctx *ctx);

/** Stops counting; the counts stay for ad_profile_read until the next
 * ad_profile_start or ad_ctx_free. AD_ERR_NULL, AD_ERR_STATE as
 * ad_profile_start's (and when no profile was started). */
AD_API ad_status ad_profile_stop(ad_ctx *ctx);

/** Writes the rows of the ops called at least once into rows[0..cap-1],
 * the largest forward + backward time first (ties by name), and the totals
 * into *totals (may be NULL); a running profile may be read. Returns how
 * many ops were called (more than cap: call again with room for them all),
 * 0 when no profile was started, -1 for NULL ctx, and -1 with the error
 * recorded for NULL rows with cap > 0 (AD_ERR_NULL), cap < 0 (AD_ERR_ARG)
 * or out of memory (AD_ERR_OOM: with cap below the count, the rows are
 * sorted in a copy first). */
AD_API int64_t ad_profile_read(ad_ctx *ctx, ad_profile_row *rows, int64_t cap,
                               ad_profile_totals *totals);

/** Prints the profile to f as a table, one op a line in ad_profile_read's
 * order with its calls, milliseconds and share of the ops' time, then the
 * backward passes' totals and, when any range was popped, the ranges with
 * their calls and milliseconds. AD_ERR_NULL, AD_ERR_STATE (no profile
 * started), AD_ERR_OOM, AD_ERR_IO (a write failed; f is flushed). */
AD_API ad_status ad_profile_print(ad_ctx *ctx, FILE *f);
/** @} */

/** Profile ranges (PyTorch's record_function): while the profile runs,
 * the wall time from ad_profile_range_push(ctx, name) to the matching
 * ad_profile_range_pop is summed under name, whatever runs in between:
 * work outside ops (nn_fit marks its phases: "nn_fit.batch",
 * "nn_fit.forward", "nn_fit.backward", "nn_fit.optimizer", ...), or a
 * part of a model. Ops inside a range keep their rows too, so a range's
 * time and its ops' overlap. Ranges nest up to AD_PROFILE_RANGE_DEPTH
 * deep. While no profile runs, push and pop do nothing (a branch); a pop
 * with no range open since the profile started (one pushed before the
 * start, or before an ad_profile_stop, which closes them all uncounted)
 * does nothing. Each distinct name keeps an entry until the next
 * ad_profile_start. @{ */
#define AD_PROFILE_RANGE_DEPTH 32

/** A range's entry (ad_profile_read_ranges). */
typedef struct ad_profile_range {
  const char *name; /**< the context's copy: valid until the next ad_profile_start */
  int64_t calls;    /**< pushes popped while the profile ran */
  double seconds;   /**< their wall time in all */
} ad_profile_range;

/** Opens a range named name (copied). While a profile runs: AD_ERR_NULL
 * (name NULL), AD_ERR_ARG (name empty or over 255 bytes), AD_ERR_STATE
 * (ranges already AD_PROFILE_RANGE_DEPTH deep: a pop missing?),
 * AD_ERR_OOM; nothing is opened on an error, so no pop should follow it.
 * While none runs, AD_OK without looking at name. AD_ERR_NULL for NULL
 * ctx. */
AD_API ad_status ad_profile_range_push(ad_ctx *ctx, const char *name);

/** Closes the innermost open range, whoever opened it, and adds its time
 * to its name's entry. AD_ERR_NULL for NULL ctx. */
AD_API ad_status ad_profile_range_pop(ad_ctx *ctx);

/** Writes the ranges popped at least once into out[0..cap-1], the largest
 * time first (ties by name), and returns how many there are; 0 when no
 * profile was started; -1 as ad_profile_read's errors. */
AD_API int64_t ad_profile_read_ranges(ad_ctx *ctx, ad_profile_range *out, int64_t cap);
/** @} */

/** Backward from root. seed is dL/droot with root's shape; NULL means 1 and
 * needs a root of one element. Gradients are added (+=) into the grad of
 * every leaf that requires one (a NULL grad counts as zero: the pass's
 * gradient is stored into a buffer kept by ad_tensor_zero_grad, or a new
 * one) and into retained intermediates. A leaf's grad that an op of the
 * current tape read as a value (g = w->grad; ... ad_mul(ctx, g, w)) is not
 * added into, since the backward reads it: w->grad becomes a new tensor
 * holding the sum, g keeps its values (as PyTorch's out-of-place
 * accumulation while g is referenced), and w keeps g until its next
 * ad_tensor_zero_grad, which frees one of the two (a buffer w kept already
 * is freed at once, or g when that one is bound; data a tape used stays
 * until ad_tape_reset). After ad_tape_reset the grad is added into in place
 * again. Returns
 * AD_ERR_STATE if root was not recorded (no input requires grad), is from
 * a reset tape, or a pass is already running (called from a backward
 * hook), AD_ERR_SHAPE for a non-scalar root without seed or a seed
 * of the wrong shape, AD_ERR_OOM. These errors, and a freed or written
 * input (see ad_tensor_free, ad_tensor_set), are found before the pass
 * changes any gradient. An error during the pass (out of memory, an op's
 * backward failing, a non-finite gradient in anomaly mode) stops it with
 * the gradients of the leaves it reached already added, as in PyTorch:
 * zero them (ad_tensor_zero_grad, nn_optimizer_zero_grad) before running
 * the step again, or the retried pass adds those contributions twice. */
AD_API ad_status ad_backward(ad_ctx *ctx, ad_tensor *root, const ad_tensor *seed);

/** Gradients of root with respect to n inputs (leaves or intermediates),
 * returned in out[0..n-1] as arena tensors (zeros for an input root does not
 * depend on; an input listed twice gets its gradient in both places). seed
 * as in ad_backward. Leaves' grad fields are not touched. A result is never
 * a persistent tensor nor a view of one's memory: a gradient that would be
 * (a persistent seed passed on, by an add, a reshape or the root being the
 * input; what a registered op's backward gave: its input, a constant it
 * keeps) is returned as a copy, so writing into a result, or passing it to
 * ad_tensor_free (which ignores a temporary), leaves the caller's tensors
 * as they were. A result may still be, or share memory with, a temporary of
 * this tape (a seed that is an op's result, passed on), as
 * torch.autograd.grad's results may be its grad_outputs.
 * With create_graph the backward pass is recorded, so out[i] can be
 * differentiated again (Hessian-vector products, gradient penalties).
 * Errors as ad_backward's, and AD_ERR_STATE for a freed input or one of a
 * reset tape. */
AD_API ad_status ad_grad(ad_ctx *ctx, ad_tensor *root, const ad_tensor *seed, int n,
                         ad_tensor *const *inputs, ad_tensor **out, bool create_graph);

/* ---------------------------------------------------------------- scopes
 * Code that builds a graph can label the ops it records with nested groups,
 * so a dump of an unrolled model shows layers and time steps instead of
 * hundreds of loose nodes (ad_graph_dot draws groups as clusters, or with
 * AD_DOT_COLLAPSE one box per group):
 *
 *   ad_scope_push(ctx, "lstm.l0");
 *   for (int t = 0; t < T; t++) {
 *     char lab[16];  snprintf(lab, sizeof lab, "t=%d", t);
 *     ad_scope_push(ctx, lab);   ...ops of step t...   ad_scope_pop(ctx);
 *   }
 *   ad_scope_pop(ctx);
 *
 * Scopes belong to the context. An op belongs to the innermost scope open
 * when it is recorded (leaves, constants and ops run without recording
 * belong to none). The same label opened again under the same enclosing
 * scope is the same group. Recording an op costs nothing extra: the
 * context logs where on the tape each push and pop happened. */

/** The deepest scopes nest. */
#define AD_SCOPE_MAX_DEPTH 16

/** Opens a scope labelled label (copied; 1 to 255 bytes) inside the one
 * open now. Returns AD_ERR_NULL (ctx or label NULL), AD_ERR_ARG (empty or
 * too long label), AD_ERR_STATE (AD_SCOPE_MAX_DEPTH scopes already open),
 * AD_ERR_OOM; on error no scope is opened. ad_tape_reset forgets the
 * groups of the old tape's ops but leaves open scopes open: the next
 * tape's ops go into them. */
AD_API ad_status ad_scope_push(ad_ctx *ctx, const char *label);

/** Closes the innermost open scope. AD_ERR_STATE when none is open,
 * AD_ERR_NULL, AD_ERR_OOM (the scope stays open). */
AD_API ad_status ad_scope_pop(ad_ctx *ctx);

/** How many scopes are open (0 for NULL): code that opens one can close
 * down to the depth it started at on an error path. */
AD_API int ad_scope_depth(const ad_ctx *ctx);

/* ------------------------------------------------------------------ ops
 * Every op takes the context first, returns a new arena tensor, or NULL on
 * error (see ad_last_error). Float ops take AD_F32 or AD_F64; inputs of a
 * binary op must share a dtype. Binary ops broadcast like NumPy. The math
 * of every op and its derivative is in docs/derivatives.md. */

/** elementwise binary (broadcasting) @{ */
AD_API ad_tensor *ad_add(ad_ctx *ctx, ad_tensor *a, ad_tensor *b);
AD_API ad_tensor *ad_sub(ad_ctx *ctx, ad_tensor *a, ad_tensor *b);
AD_API ad_tensor *ad_mul(ad_ctx *ctx, ad_tensor *a, ad_tensor *b);
AD_API ad_tensor *ad_div(ad_ctx *ctx, ad_tensor *a, ad_tensor *b);
/** @} */
/** a^b. At a zero base the gradient follows PyTorch's masks: d/da is 0
 * where b = 0 and d/db is 0 where b >= 0 (the formulas would give NaN). */
AD_API ad_tensor *ad_pow(ad_ctx *ctx, ad_tensor *a, ad_tensor *b);
/** Ties send half the gradient to each side. A NaN in a or b gives NaN (as
 * PyTorch and NumPy), and both sides receive the whole gradient there. @{ */
AD_API ad_tensor *ad_maximum(ad_ctx *ctx, ad_tensor *a, ad_tensor *b);
AD_API ad_tensor *ad_minimum(ad_ctx *ctx, ad_tensor *a, ad_tensor *b);
/** PyTorch's prelu: x where x > 0, else w x (NaN at a NaN x), w broadcast
 * against x by NumPy's rule (torch.nn.functional.prelu's w of C elements
 * is w reshaped to [1, C, 1, ...]); one pass. The gradient in x is dy
 * where x > 0, else w dy (w at 0 and at NaN); in w dy x where x <= 0 or
 * NaN and 0 where x > 0 (also for an x of +inf), summed over the
 * broadcast. Differentiable to any order (d2/dx dw = dy where x <= 0 or
 * NaN; nn_prelu_new's layer drops that term at NaN, as PyTorch).
 * Errors: those of a binary op (AD_ERR_SHAPE when x and w do not
 * broadcast, AD_ERR_DTYPE unless both are the same float dtype). */
AD_API ad_tensor *ad_prelu(ad_ctx *ctx, ad_tensor *x, ad_tensor *w);
/** @} */

/** scalar forms @{ */
AD_API ad_tensor *ad_add_scalar(ad_ctx *ctx, ad_tensor *x, double s);
AD_API ad_tensor *ad_mul_scalar(ad_ctx *ctx, ad_tensor *x, double s);
/** @} */
/** x^p; for p = 0 the gradient is 0 everywhere, x = 0 included. */
AD_API ad_tensor *ad_pow_scalar(ad_ctx *ctx, ad_tensor *x, double p);
AD_API ad_tensor *ad_sub_scalar(ad_ctx *ctx, ad_tensor *x, double s);  /**< x - s */
AD_API ad_tensor *ad_rsub_scalar(ad_ctx *ctx, ad_tensor *x, double s); /**< s - x */
/** x / s; s = 0 is refused (AD_ERR_ARG, "div_scalar: division by zero"),
 * where PyTorch gives inf or NaN: ad_div by a zero tensor gives those. */
AD_API ad_tensor *ad_div_scalar(ad_ctx *ctx, ad_tensor *x, double s);

/** elementwise unary @{ */
AD_API ad_tensor *ad_neg(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_exp(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_log(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_sqrt(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_abs(ad_ctx *ctx, ad_tensor *x); /**< d|x|/dx at 0 is 0 */
AD_API ad_tensor *ad_sin(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_cos(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_tanh(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_sigmoid(ad_ctx *ctx, ad_tensor *x);
/** relu'(0) = 0; relu(NaN) = NaN, where dy passes (as PyTorch). */
AD_API ad_tensor *ad_relu(ad_ctx *ctx, ad_tensor *x);
/** x > 0 ? x : alpha*x; the slope at 0 is alpha. */
AD_API ad_tensor *ad_leaky_relu(ad_ctx *ctx, ad_tensor *x, double alpha);
/** Exact GELU: x * Phi(x), Phi the standard normal CDF. */
AD_API ad_tensor *ad_gelu(ad_ctx *ctx, ad_tensor *x);
/** log(1 + exp(x)), computed stably for every x: not PyTorch's default
 * threshold=20, above which it returns x (the two differ there by at most
 * exp(-20) in value and gradient; the second derivative is sigmoid'(x), not
 * 0). */
AD_API ad_tensor *ad_softplus(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_erf(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_square(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_atan(ad_ctx *ctx, ad_tensor *x);
/** torch.clamp(x, lo, hi): min(max(x, lo), hi), with the bounds rounded to
 * x's dtype. A missing bound is -INFINITY / INFINITY (torch's min=None /
 * max=None give the same values and gradient); infinite bounds are fine. As
 * in PyTorch: lo > hi gives hi everywhere; a NaN bound gives NaN
 * everywhere (as torch.clamp with both bounds given, torch.clamp_min and
 * torch.clamp_max; torch.clamp(x, min=nan) with no max returns x, a
 * difference); a NaN x stays NaN; x equal to a bound keeps x (-0.0 at a 0
 * bound stays -0.0). The gradient is dy where lo <= x <= hi (inclusive at
 * both bounds, torch's rule, not the dy/2 that ad_maximum / ad_minimum give
 * at a tie) and 0 elsewhere, also at NaN x and for a NaN or infinite dy
 * outside; the second derivative is 0. Errors: those of any op
 * (AD_ERR_NULL, AD_ERR_DTYPE for a non-float x, AD_ERR_ARG for a tensor of
 * another context) and AD_ERR_ARG for an f32 x with a finite bound beyond
 * float32's range (torch refuses to convert it too); infinite and NaN
 * bounds are taken. */
AD_API ad_tensor *ad_clamp(ad_ctx *ctx, ad_tensor *x, double lo, double hi);
/** torch.nn.functional.hardtanh(x, lo, hi) (relu6 is lo 0, hi 6): the
 * values of ad_clamp, but PyTorch's hardtanh gradient, dy only where lo < x
 * < hi: 0 at the bounds (where ad_clamp passes dy) and at a NaN x. The same
 * op as ad_clamp (its attribute inner), differentiable to any order; the
 * same errors, their messages naming hardtanh. */
AD_API ad_tensor *ad_hardtanh(ad_ctx *ctx, ad_tensor *x, double lo, double hi);
/** torch.sign: -1, 0 or +1 in x's dtype; sign(-0.0) = +0.0 and sign(NaN)
 * = 0, as PyTorch 1.13 gives (NumPy's np.sign gives NaN). The gradient is
 * 0 everywhere, also for a NaN dy: x receives zeros, as torch's zeros_like
 * (a leaf reached only through sign gets a zero grad, not none). Errors:
 * those of any op, AD_ERR_DTYPE for a non-float x (torch.sign also takes
 * integers). */
AD_API ad_tensor *ad_sign(ad_ctx *ctx, ad_tensor *x);
/** torch.nn.functional.hardswish: x min(max(x + 3, 0), 6) / 6, in one pass,
 * in PyTorch's arithmetic (-0.0 for x <= -3, NaN at -inf and at a NaN x).
 * The gradient is PyTorch's: 0 below -3, dy (x/3 + 1/2) on [-3, 3]
 * (inclusive: -dy/2 at -3, 3 dy/2 at 3), dy above 3 and at a NaN x; the
 * second derivative 1/3 on (-3, 3) only. Differentiable to any order.
 * Errors: those of any op, AD_ERR_DTYPE for a non-float x. */
AD_API ad_tensor *ad_hardswish(ad_ctx *ctx, ad_tensor *x);
/** torch.nn.functional.hardsigmoid: min(max(x + 3, 0), 6) / 6, in one pass
 * (NaN at a NaN x). The gradient is dy times float32's 1/6
 * (0.1666666716337204, also in float64, as PyTorch 1.13) on (-3, 3) only:
 * 0 at -3, 3 and a NaN x, and 0 outside whatever dy holds; the second
 * derivative is 0. Errors: those of any op, AD_ERR_DTYPE for a non-float
 * x. */
AD_API ad_tensor *ad_hardsigmoid(ad_ctx *ctx, ad_tensor *x);
/** torch.nn.functional.softshrink(x, lambd): x - lambd above lambd, x +
 * lambd below -lambd, 0 between (bounds included) and at a NaN x (PyTorch
 * 1.13's kernel), lambd rounded to x's dtype; one pass. The gradient is dy
 * outside [-lambd, lambd], 0 on it and at a NaN x (PyTorch's vectorized
 * kernel; its scalar code passes dy there) whatever dy holds; the second
 * derivative is 0. lambd is not checked here (nn_softshrink refuses one
 * below 0). Errors: those of any op, AD_ERR_DTYPE for a non-float x. */
AD_API ad_tensor *ad_softshrink(ad_ctx *ctx, ad_tensor *x, double lambd);
/** torch.nn.functional.hardshrink(x, lambd): 0 where -lambd <= x <= lambd,
 * x elsewhere (a NaN x stays NaN; a negative lambd zeroes nothing), lambd
 * rounded to x's dtype; one pass. The gradient is dy outside [-lambd,
 * lambd] and at a NaN x (PyTorch's scalar code; its vectorized kernel
 * gives 0 there), 0 on it whatever dy holds. Errors: those of any op,
 * AD_ERR_DTYPE for a non-float x. */
AD_API ad_tensor *ad_hardshrink(ad_ctx *ctx, ad_tensor *x, double lambd);
/** torch.nn.functional.logsigmoid: log(sigmoid(x)) = min(x, 0) -
 * log1p(e^-|x|), stable at both ends (+0 at large x), in one pass. The
 * gradient is dy sigmoid(-x), one pass too, differentiable to any order.
 * Errors: those of any op, AD_ERR_DTYPE for a non-float x. */
AD_API ad_tensor *ad_logsigmoid(ad_ctx *ctx, ad_tensor *x);
/** PyTorch's aten elu(x, alpha, scale, input_scale), under nn's elu, selu
 * and celu: x <= 0 ? (e^(x input_scale) - 1) alpha scale : x scale, with
 * e^t - 1 computed so (not expm1), in one pass; alpha scale, scale and
 * input_scale are rounded to x's dtype, and alpha scale is their product
 * in it. The gradient is PyTorch's elu_backward with grad_input_scale as
 * its input_scale (pass input_scale; celu's is 1 / float32(alpha)): dy
 * grad_input_scale alpha scale e^(x grad_input_scale) where x <= 0 (at 0
 * the left slope), dy scale elsewhere and at a NaN x (PyTorch's scalar
 * code); one pass, differentiable to any order (its second derivative in
 * x is 0 at 0, where PyTorch masks x < 0). Errors: those of any op,
 * AD_ERR_DTYPE for a non-float x. */
AD_API ad_tensor *ad_elu(ad_ctx *ctx, ad_tensor *x, double alpha, double scale, double input_scale,
                         double grad_input_scale);
/** torch.nn.functional.threshold(x, threshold, value): value where x <=
 * threshold, x elsewhere (a NaN x stays NaN), threshold and value rounded
 * to x's dtype; one pass. The gradient is dy where x > threshold and at a
 * NaN x, 0 elsewhere (at threshold too) whatever dy holds, PyTorch's
 * threshold_backward, one pass; the second derivative is 0. Neither
 * setting is checked here (nn_threshold refuses a NaN threshold; a NaN one
 * here replaces nothing). Errors: those of any op, AD_ERR_DTYPE for a
 * non-float x. */
AD_API ad_tensor *ad_threshold(ad_ctx *ctx, ad_tensor *x, double threshold, double value);
/** @} */
/** Converts to another float dtype; the gradient is converted back. To x's
 * own dtype it returns x itself, after the checks of any op's input. */
AD_API ad_tensor *ad_cast(ad_ctx *ctx, ad_tensor *x, ad_dtype dtype);

/** comparisons: 1 where true, 0 elsewhere (a NaN compares false), in a's
 * dtype; no gradient flows @{ */
AD_API ad_tensor *ad_eq(ad_ctx *ctx, ad_tensor *a, ad_tensor *b);
AD_API ad_tensor *ad_gt(ad_ctx *ctx, ad_tensor *a, ad_tensor *b);
AD_API ad_tensor *ad_ge(ad_ctx *ctx, ad_tensor *a, ad_tensor *b);
AD_API ad_tensor *ad_lt(ad_ctx *ctx, ad_tensor *a, ad_tensor *b);
AD_API ad_tensor *ad_le(ad_ctx *ctx, ad_tensor *a, ad_tensor *b);
/** @} */
/** cond != 0 ? a : b, broadcasting all three (a NaN cond picks a); no
 * gradient to cond. */
AD_API ad_tensor *ad_where(ad_ctx *ctx, ad_tensor *cond, ad_tensor *a, ad_tensor *b);

/** Matrix product with NumPy/PyTorch matmul semantics. a is [..,m,k] (or
 * [..,k,m] with trans_a), b is [..,k,n] (or [..,n,k] with trans_b); the
 * result is [..,m,n]. The batch dims (all but the last two) broadcast,
 * aligned from the right: [2,1,3,4] x [1,5,4,6] -> [2,5,3,6], [7,3,4] x
 * [4,5] -> [7,3,5], [2,7,3,4] x [7,4,5] -> [2,7,3,5]. A 1-D a is the row
 * [1,k] and a 1-D b the column [k,1], and that dim is removed from the
 * result: [k] x [..,k,n] -> [..,n], [..,m,k] x [k] -> [..,m], [k] x [k]
 * -> [] (the dot product). A flag on a 1-D operand is ignored (a vector is
 * its own transpose, as NumPy's v.T). Transposes and broadcasting cost no
 * copy; the gradient of a broadcast operand is summed over the batch dims
 * it was broadcast along. Errors (AD_ERR_SHAPE, NULL returned): an input
 * with no dim, inner dims that differ, batch dims that do not broadcast;
 * the message names both shapes, "^T" after a transposed one, e.g.
 * "matmul: inner dimensions differ: [3,4]^T x [5,6]". AD_ERR_DTYPE for
 * non-float or mixed dtypes. */
AD_API ad_tensor *ad_matmul(ad_ctx *ctx, ad_tensor *a, ad_tensor *b, bool trans_a, bool trans_b);

/* shape ops */
/** A view with a new shape of the same size; one entry may be -1. */
AD_API ad_tensor *ad_reshape(ad_ctx *ctx, ad_tensor *x, int ndim, const int64_t *shape);
/** Output dim i is input dim perm[i], as torch.permute: an entry in
 * -ndim..-1 counts from the end. Copies. AD_ERR_ARG when perm is not a
 * permutation of the dims. */
AD_API ad_tensor *ad_permute(ad_ctx *ctx, ad_tensor *x, const int *perm);
/** Swaps two dims (negative counts from the end). */
AD_API ad_tensor *ad_transpose(ad_ctx *ctx, ad_tensor *x, int d0, int d1);
/** Broadcasts x to shape (NumPy rules). As in torch.expand, an entry -1
 * keeps the size of the dim of x it aligns with (from the right); in a new
 * leading dim it is refused (AD_ERR_SHAPE, as any negative size). */
AD_API ad_tensor *ad_expand(ad_ctx *ctx, ad_tensor *x, int ndim, const int64_t *shape);
/** Sums x down to shape, the inverse of a broadcast (the gradient of expand). */
AD_API ad_tensor *ad_sum_to(ad_ctx *ctx, ad_tensor *x, int ndim, const int64_t *shape);
/** Elements start..start+len-1 along axis (negative counts from the end),
 * as torch.narrow: start may be negative, -n..-1 counting from the end of
 * the axis's n elements. AD_ERR_ARG for start outside -n..n or a slice
 * past the end. */
AD_API ad_tensor *ad_narrow(ad_ctx *ctx, ad_tensor *x, int axis, int64_t start, int64_t len);
/** Zero-pads before and after along axis (the gradient of narrow). before
 * and after are >= 0: a negative amount is AD_ERR_ARG (it does not crop as
 * in torch.nn.functional.pad; crop with ad_narrow). */
AD_API ad_tensor *ad_pad(ad_ctx *ctx, ad_tensor *x, int axis, int64_t before, int64_t after);
/** How ad_pad_nd fills the border (torch.nn.functional.pad's modes). */
typedef enum ad_pad_mode {
  AD_PAD_CONSTANT = 0, /**< the value given */
  AD_PAD_REFLECT,      /**< x[1], x[0] | x[0] ... x[n-1] | x[n-2], x[n-3]: the edge not repeated */
  AD_PAD_REPLICATE,    /**< the edge element repeated */
  AD_PAD_CIRCULAR      /**< x[n-p] ... x[n-1] | x ... | x[0] ...: wrapped around */
} ad_pad_mode;

/** Pads the last n axes of x (n in 1..3, at most x's ndim) as
 * torch.nn.functional.pad(x, pad, mode, value) does: pad[0], pad[1] are
 * the elements before and after along the last axis, pad[2], pad[3] along
 * the one before it, and so on (2 n entries, each >= 0: to crop, use
 * ad_narrow). AD_PAD_REFLECT needs each amount below its axis's length,
 * AD_PAD_CIRCULAR at most that length, AD_PAD_REPLICATE a non-empty axis
 * where it pads; value is read in AD_PAD_CONSTANT only (a float32 x takes
 * float32(value); a finite value beyond float32's range is refused, as
 * PyTorch refuses it). Each output element is one element of x (or the
 * value): the same bits as x's. One pass over the output, split over the
 * library's threads, where ad_pad along each axis in turn (zeros only)
 * makes a pass per axis. The gradient (the op pad_nd_backward) adds the
 * output gradient of every element that reads an input element into it:
 * the center first, then the border's in increasing order, so the bits do
 * not depend on the thread count; it is differentiable again (its own
 * gradient is pad_nd). Errors: AD_ERR_NULL, AD_ERR_DTYPE (x not float),
 * AD_ERR_ARG (n out of range, a negative amount, an unknown mode, a
 * value out of float32's range for a float32 x), AD_ERR_SHAPE (an amount
 * the mode cannot take, naming the axis; an amount above 2^40). */
AD_API ad_tensor *ad_pad_nd(ad_ctx *ctx, ad_tensor *x, int n, const int64_t *pad, ad_pad_mode mode,
                            double value);
/** Joins n >= 1 tensors along axis (negative counts from the end), as
 * torch.cat: one float dtype, the same shape off the axis. Any n, bounded
 * by memory. AD_ERR_ARG (n < 1, axis out of range), AD_ERR_NULL (xs or an
 * entry NULL, named by index), AD_ERR_SHAPE naming the index and both
 * shapes, AD_ERR_DTYPE. */
AD_API ad_tensor *ad_concat(ad_ctx *ctx, int n, ad_tensor *const *xs, int axis);
/** Joins n >= 1 tensors of one shape along a new axis, as torch.stack: the
 * result has shape[axis] = n; axis in -(ndim+1)..ndim (negative counts from
 * the end of the result). A composite: the concat of the inputs along
 * axis viewed as [.., n, len, ..] (one reshape), or, for the axis after
 * the last, the concat of the inputs each viewed with a length-1 axis, so
 * dumps show reshape and concat nodes. Errors as
 * ad_concat's, named "stack"; AD_ERR_SHAPE also when the result would
 * have more than AD_MAX_DIMS dims. */
AD_API ad_tensor *ad_stack(ad_ctx *ctx, int n, ad_tensor *const *xs, int axis);
/** Splits x along axis into its x->shape[axis] slices, each with that axis
 * removed, as torch.unbind: out[i] = x[..., i, ...] (axis negative counts
 * from the end). out is the caller's array of at least x->shape[axis]
 * slots (none are written for length 0). Each slice is an op result
 * (narrows that halve x down to the slice, then a reshape), a temporary of
 * the tape that the caller does not free (ad_tape_reset does), and
 * differentiable: its gradient flows into x's at slice i. Returns AD_OK,
 * or AD_ERR_NULL (x or out NULL), AD_ERR_ARG (axis out of range, or more
 * slices than an int), and the errors of an op's input for x; on an error
 * out[i] are left NULL. Cost: forward copies x about log2(n) times; the
 * backward pads and adds about 3 x-sized tensors per halving, O(size of x
 * * log n) in all rather than one x-sized contribution per slice. */
AD_API ad_status ad_unstack(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor **out);
/** x's values as a new tensor that no gradient flows through (stop-
 * gradient), as torch.detach: same dtype, shape and data (a view: it
 * shares x's data), never requires a gradient, so ops on it are not
 * differentiated back into x. An op result: a temporary of the tape,
 * freed by ad_tape_reset like any other, so it does not carry a value
 * across a reset. To carry state across a reset (truncated BPTT), copy the
 * values into a persistent tensor the caller owns, and start the next
 * chunk from it:
 *   @code{.unparsed}
 *   ad_tensor *h0 = ad_zeros(ctx, AD_F32, 2, shape);    (persistent, no grad)
 *   for each chunk: h = h0; for t in chunk: h = cell(x_t, h);
 *                   loss ...; ad_backward; optimizer step;
 *                   ad_tensor_copy_data(h0, h); ad_tape_reset(ctx);
 *   @endcode
 * ad_detach is for stopping a gradient within one tape (a target, a
 * state carried between chunks without a reset). */
AD_API ad_tensor *ad_detach(ad_ctx *ctx, ad_tensor *x);
/** Rows of x (axis 0) picked by idx (AD_I32, any shape): out shape is
 * idx.shape + x.shape[1:]. Embedding lookup, mini-batch selection. */
AD_API ad_tensor *ad_index_select(ad_ctx *ctx, ad_tensor *x, ad_tensor *idx);
/** Zeros of [rows] + src.shape[idx.ndim:] with src's rows added at idx (the
 * gradient of index_select). */
AD_API ad_tensor *ad_index_add(ad_ctx *ctx, ad_tensor *src, ad_tensor *idx, int64_t rows);
/** torch.index_select(x, axis, idx) with idx of any shape (torch takes a
 * 1-D one): the slices of x along axis (negative counts from the end)
 * picked by idx (AD_I32, each in 0..x.shape[axis]-1); out shape is
 * x.shape[:axis] + idx.shape + x.shape[axis+1:], each element a copy of
 * one of x's. One pass, split over the library's threads (ad_index_select
 * is axis 0). The gradient is ad_index_add_axis, whose own gradient is
 * this op again. Errors as ad_index_select's, and AD_ERR_ARG for an axis
 * out of range. */
AD_API ad_tensor *ad_index_select_axis(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *idx);
/** The adjoint of ad_index_select_axis: zeros of src's shape with the
 * idx.ndim axes from axis replaced by one of length rows, and each slice
 * of src added at the index idx gives it along that axis (axis of the
 * result, negative counts from its end), in increasing order of the
 * index position, so the bits do not depend on the thread count.
 * ad_index_add is axis 0. Errors as ad_index_add's, and AD_ERR_ARG for an
 * axis out of range. */
AD_API ad_tensor *ad_index_add_axis(ad_ctx *ctx, ad_tensor *src, int axis, ad_tensor *idx,
                                    int64_t rows);
/** ad_index_add_axis(ad_index_select_axis(x, axis, src), axis, dst, rows)
 * in one pass, without the selected slices between them: zeros of x's
 * shape with length rows on axis (negative counts from the end), and for
 * k = 0, 1, ... in order the slice src[k] of x added into the slice dst[k]
 * (src and dst AD_I32 of one size, read flat, src in 0..x.shape[axis]-1,
 * dst in 0..rows-1). The sums of embedding_bag's bags, a segment sum of
 * gathered rows. The bits are the two ops' and do not depend on the thread
 * count. The gradient is this op with src and dst swapped (to any order).
 * Errors (NULL returned): AD_ERR_DTYPE for a non-float x or non-i32
 * indices, AD_ERR_SHAPE for src and dst of other sizes, AD_ERR_ARG for an
 * axis out of range, rows < 0 or an index out of range (naming it). */
AD_API ad_tensor *ad_index_select_add(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *src,
                                      ad_tensor *dst, int64_t rows);
/** A linear map along one axis given by taps (autodiff/op_resample.c):
 * each position i of the result is sum over t of w[t, i] times x's slice
 * idx[t, i] along axis (negative counts from the end). idx (AD_I32) and w
 * (x's dtype) are [T, m] with T >= 1 taps for m positions, each index in
 * 0..x.shape[axis]-1; the result is x's shape with length m on axis. Each
 * product is rounded, then added in order of t, as index_select, mul and
 * add would give: the upsampling layers' linear, bilinear, trilinear and
 * bicubic modes, one axis at a time, in one pass. The bits do not depend
 * on the thread count. Differentiable in x (ad_resample_axis_adjoint) and
 * in w (sums of products over the other axes), to any order; idx gets no
 * gradient. Errors (NULL returned): AD_ERR_NULL, AD_ERR_DTYPE (x not
 * float, idx not AD_I32, w not x's dtype), AD_ERR_SHAPE (idx not [T, m]
 * with T >= 1, w not idx's shape), AD_ERR_ARG (axis out of range, an
 * index out of range, named with its position). */
AD_API ad_tensor *ad_resample_axis(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *idx,
                                   ad_tensor *w);
/** The adjoint (transpose) of ad_resample_axis: zeros of x's shape with
 * length rows on axis, and for i = 0, 1, ... and each tap t in order,
 * w[t, i] times x's slice i added into slice idx[t, i] (the order of
 * PyTorch's upsampling backward). x has length m on axis, idx and w are
 * [T, m], each index in 0..rows-1. The gradient of ad_resample_axis in x,
 * and its gradient in x is ad_resample_axis again. Errors as
 * ad_resample_axis's, AD_ERR_SHAPE when x's length on axis is not m, and
 * AD_ERR_ARG for rows < 0. */
AD_API ad_tensor *ad_resample_axis_adjoint(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *idx,
                                           ad_tensor *w, int64_t rows);
/** torch.gather(x, axis, index) (also torch.take_along_dim with an axis):
 * out has index's shape, and out[i][j] = x[index[i][j]][j] for axis 0,
 * x[i][index[i][j]] for axis 1, and so on for more dims. x is float, index
 * AD_I32 with as many dims as x, each no longer than x's off the axis
 * (shorter is allowed, as in torch.gather); axis negative counts from the
 * end. Differentiable in x, to any order: the gradient is ad_scatter_add
 * of dy into zeros, whose own gradient is gather again. The indices are
 * saved as recorded. Errors (NULL returned): AD_ERR_NULL (an input NULL),
 * AD_ERR_DTYPE (x not float, index not AD_I32), AD_ERR_ARG (axis out of
 * range; an index outside 0..n-1 for x's length n on the axis, negative
 * ones too, named with its coordinates: "gather: index 3 at [1,0] of index
 * [2,2] is outside 0..2 (axis 0 of input [3,4])"), AD_ERR_SHAPE (index of
 * another rank, or longer than x off the axis). Unlike torch, a 0-d x is
 * refused (no axis). */
AD_API ad_tensor *ad_gather(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *index);
/** torch.scatter_add(x, axis, index, src): a copy of x with each src[i]
 * added at the element of x that ad_gather(x, axis, index) reads for i
 * (several adds into one element accumulate, in index order, in x's
 * dtype). index is checked as in ad_gather; src has x's dtype and exactly
 * index's shape (torch also takes a larger src and uses its leading part:
 * refused here, AD_ERR_SHAPE). Differentiable in x (dx = dy) and src
 * (dsrc = ad_gather(dy, axis, index)), to any order. Errors as ad_gather's,
 * named "scatter_add", and AD_ERR_DTYPE for src of another dtype. */
AD_API ad_tensor *ad_scatter_add(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *index,
                                 ad_tensor *src);
/** torch.flip(x, axes): x with the order of its elements reversed along
 * each of the n_axes axes (negative counts from the end), any dtype. One
 * flip op, one copy of x, per axis (its own gradient, to any order);
 * n_axes 0 returns x itself (torch returns a copy). Errors (NULL):
 * AD_ERR_NULL (x NULL, or axes NULL with n_axes > 0), AD_ERR_ARG (n_axes
 * outside 0..ndim, an axis out of range or given twice, as torch's "dims
 * has duplicates"). A 0-d x has no axis, so only n_axes 0 is taken (torch
 * also takes dims 0 and -1 there). */
AD_API ad_tensor *ad_flip(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes);

/** The padding_idx of ad_embedding for none. */
#define AD_NO_PADDING INT64_MIN
/** Embedding lookup, torch.nn.functional.embedding: the rows of weight
 * [num, dim] (float) picked by indices (AD_I32, any shape): y has shape
 * indices.shape + [dim]. The gradient adds dy's rows into the rows they
 * came from (a scatter-add, index_add); the row padding_idx gets none (0,
 * also where dy is NaN), as PyTorch's padding_idx: in -num..num-1, a
 * negative one counting from the end (num + padding_idx), or AD_NO_PADDING.
 * The padding row's values are looked up as they are, as in PyTorch
 * (nn_embedding_new zeroes it at initialisation). Differentiable to any order in
 * weight; the indices are saved as recorded (as index_select's). Errors:
 * AD_ERR_ARG naming the first index outside 0..num-1, its flat position,
 * its coordinates in indices and num ("embedding: index 12 at position 5
 * ([1,2] of indices [2,3]) is outside the vocabulary of 10 (0..9)"), or a
 * padding_idx out of range; AD_ERR_SHAPE (weight not 2-D, indices of more
 * than AD_MAX_DIMS - 1 dims); AD_ERR_DTYPE (weight not float, indices not
 * AD_I32). */
AD_API ad_tensor *ad_embedding(ad_ctx *ctx, ad_tensor *weight, ad_tensor *indices,
                               int64_t padding_idx);
/** Options of ad_embedding_ext; the zero value (or NULL) is ad_embedding
 * without a padding row. */
typedef struct ad_embedding_opts {
  bool padding;            /**< with padding_idx (PyTorch's padding_idx=None: false) */
  int64_t padding_idx;     /**< as ad_embedding's: -num..num-1 */
  bool scale_grad_by_freq; /**< PyTorch's scale_grad_by_freq */
} ad_embedding_opts;
/** ad_embedding with PyTorch's scale_grad_by_freq as well
 * (torch.nn.functional.embedding(..., scale_grad_by_freq=True)): the
 * gradient of each row of weight is divided by the number of times the
 * indices of this call name it (dw = index_add(dy / count(idx), idx)), the
 * padding row's still none. The forward is ad_embedding's, and so are the
 * errors. The gradient is linear in dy, written with the engine's ops, so
 * it is differentiable again (PyTorch's double backward leaves the
 * scaling out; this one keeps it). */
AD_API ad_tensor *ad_embedding_ext(ad_ctx *ctx, ad_tensor *weight, ad_tensor *indices,
                                   const ad_embedding_opts *opts);

/** reductions; axis may be negative; keepdim keeps it with length 1. As in
 * PyTorch, a reduced dim may have length 0: the reduction of no element is
 * 0 for sum, NaN for mean, -inf for logsumexp, and an error for max
 * (AD_ERR_SHAPE, "max: nothing to reduce ..."); an output with no element
 * is an empty tensor, and the gradient of an empty input is empty. A lane
 * holding a NaN reduces to NaN (max, logsumexp, softmax, log_softmax). @{ */
AD_API ad_tensor *ad_sum(ad_ctx *ctx, ad_tensor *x); /**< over everything */
AD_API ad_tensor *ad_sum_axis(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim);
AD_API ad_tensor *ad_mean(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_mean_axis(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim);
/** @} */
/** torch.sum(x, dims, keepdim) and torch.mean: over the n_axes axes
 * (negative counts from the end; n_axes 0: every dim, as dim=None), the
 * reductions above otherwise (a dim of length 0 sums to 0, its mean is
 * NaN). Adjacent axes are one reduction (the mean over H and W of [N, C,
 * H, W] is one pass), each run of them one sum op, so ad_sum_axis's bits
 * for one axis. Errors (NULL), named "sum" or "mean": AD_ERR_NULL (x
 * NULL, axes NULL with n_axes > 0), AD_ERR_DTYPE (not float), AD_ERR_ARG
 * (n_axes outside 0..ndim, an axis out of range or given twice). @{ */
AD_API ad_tensor *ad_sum_axes(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes, bool keepdim);
AD_API ad_tensor *ad_mean_axes(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes,
                               bool keepdim);
/** @} */
/** Ties share the gradient equally; a lane whose maximum is NaN sends NaN
 * to each of its elements (as torch.amax). @{ */
AD_API ad_tensor *ad_max(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_max_axis(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim);
/** @} */
/** The minimum, torch.amin (over everything, or along axis with keepdim):
 * the op min, -max(-x) in one pass (the bits of that composite, NaN
 * payloads included), so ad_max's rules hold: ties share the gradient
 * equally, a lane holding a NaN gives NaN (and NaN to each of its
 * elements' gradients), differentiable to any order. Errors (NULL):
 * AD_ERR_NULL, AD_ERR_DTYPE (not float), AD_ERR_ARG (axis out of range;
 * a 0-d x has none, where torch.amin takes dim 0 or -1), AD_ERR_SHAPE
 * (nothing to reduce: "min: nothing to reduce ..."). @{ */
AD_API ad_tensor *ad_min(ad_ctx *ctx, ad_tensor *x);
AD_API ad_tensor *ad_min_axis(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim);
/** @} */
/** torch.amax(x, dims, keepdim) and torch.amin: over the n_axes axes
 * (negative counts from the end; n_axes 0: every dim), as one reduction:
 * ties anywhere in the reduced dims share the gradient equally, a NaN
 * wins, as ad_max's. Axes that are not adjacent are brought together
 * first (a permuted copy). Errors (NULL), named "max" or "min":
 * AD_ERR_NULL (x NULL, axes NULL with n_axes > 0), AD_ERR_DTYPE (not
 * float), AD_ERR_ARG (n_axes outside 0..ndim, an axis out of range or
 * given twice), AD_ERR_SHAPE (a reduced dim of length 0: "nothing to
 * reduce"). @{ */
AD_API ad_tensor *ad_max_axes(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes, bool keepdim);
AD_API ad_tensor *ad_min_axes(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes, bool keepdim);
/** @} */
/** torch.var(x, dims, correction=c, keepdim) and torch.std: over the
 * n_axes axes (negative counts from the end; n_axes 0: every dim, as
 * dim=None), sum((x - mean)^2) / max(0, n - correction) for the n
 * elements of each lane; std is its square root. PyTorch 1.13's default
 * (unbiased=True) is correction 1; 0 is the population variance. A
 * correction >= n divides by 0 (inf, or NaN for a constant lane), and no
 * element gives NaN, as torch. The sum of squared deviations is one op
 * (sum_sq_dev: two passes per lane in double, whose gradient 2 (x - mean)
 * dy is made of ops in x's dtype, as torch's), then a division (std: and
 * ad_sqrt) on the reduced shape: differentiable to any order; float32 is
 * taken in float64 and rounded at the end (torch also accumulates in a
 * double), so no square or sum overflows before the result would (nor
 * the gradient's mean: a float32 lane whose sum passes FLT_MAX takes it
 * in double, where torch's gradient is inf or NaN). std's
 * gradient for a lane of zero variance is 0, as torch's. Where torch's
 * gradient differs: with correction >= n the gradient here is not finite
 * (NaN; torch: infinities, or a finite value from the divisor
 * n - correction), nor is a second-order gradient that passes through a
 * lane of no element (torch: 0). The divisor is taken in double, so a correction near
 * INT64_MIN divides by about 2^63, where torch's int64 n - correction
 * wraps around (inf).
 * Errors (NULL), named "var" or "std": AD_ERR_NULL (x NULL, axes NULL
 * with n_axes > 0), AD_ERR_DTYPE, AD_ERR_ARG (n_axes outside 0..ndim, an
 * axis out of range or given twice; a 0-d x takes only n_axes 0, where
 * torch also takes dim 0 or -1). @{ */
AD_API ad_tensor *ad_var(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes, int64_t correction,
                         bool keepdim);
AD_API ad_tensor *ad_std(ad_ctx *ctx, ad_tensor *x, int n_axes, const int *axes, int64_t correction,
                         bool keepdim);
/** @} */
/** log(sum(exp(x))) along axis, computed stably. */
AD_API ad_tensor *ad_logsumexp(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim);
/** torch.cumsum(x, axis): y[.., k, ..] = x[.., 0, ..] + ... + x[.., k, ..]
 * along axis (negative counts from the end); y is shaped like x. Each lane
 * is summed in order, k = 0, 1, ..., in a double for float32 too (as
 * PyTorch's CPU kernel), each partial sum rounded to x's dtype; a NaN or
 * inf propagates to the rest of its lane. The gradient is the reversed
 * cumsum, ad_flip(ad_cumsum(ad_flip(dy))) to the bit, recorded as one op
 * (cumsum_reverse, whose gradient is cumsum), differentiable to any order.
 * Errors (NULL): AD_ERR_NULL, AD_ERR_DTYPE (x not float; torch also sums
 * integers), AD_ERR_ARG (axis out of range; a 0-d x has none, where torch
 * takes axis 0 or -1). */
AD_API ad_tensor *ad_cumsum(ad_ctx *ctx, ad_tensor *x, int axis);
/** torch.argmax(x, axis, keepdim) / torch.argmin: the index along axis
 * (negative counts from the end) of each lane's maximum (minimum), an
 * AD_I32 tensor shaped as ad_max_axis's result. Ties give the first index;
 * a NaN counts as the maximum (and as the minimum), so a lane holding one
 * gives its first NaN's index, as PyTorch 1.13. Not differentiable: no
 * gradient flows through it (x may require one; the result never does).
 * Over the whole tensor (torch.argmax(x) with no dim), reshape x to 1-D
 * first. Errors (NULL): AD_ERR_NULL, AD_ERR_DTYPE (x not float),
 * AD_ERR_ARG (axis out of range, a 0-d x, where torch takes dim 0 or -1),
 * AD_ERR_SHAPE (an axis of length 0: "argmax: nothing to reduce", as torch
 * refuses it; an axis longer than INT32_MAX, whose indices an AD_I32 result
 * cannot hold). @{ */
AD_API ad_tensor *ad_argmax(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim);
AD_API ad_tensor *ad_argmin(ad_ctx *ctx, ad_tensor *x, int axis, bool keepdim);
/** @} */
/** PyTorch 1.13's F.cosine_similarity(x1, x2, axis, eps) of two float
 * tensors of one dtype and shape (at least 1-D; broadcast them first with
 * ad_expand): sum(x1 x2) / (c1 c2) along axis, c1 = sqrt(max(sum(x1^2),
 * eps^2)) and c2 likewise, as each vector divided by its own clamped norm
 * (1.13's formula). The clamp gives the norm's value only and passes the
 * gradient of the sum of squares (dc1 = x1 . dx1 / c1; 1.13 clamps under
 * no_grad), so a zero vector has the gradient x2 / (eps c2), not NaN. One pass a lane, the sums in
 * double; a float32 sum of squares past FLT_MAX makes the norm inf and the
 * result 0, as PyTorch's; an axis of length 0 gives 0; NaN propagates. The
 * result has the shape without axis. Its gradient is one op,
 * cosine_similarity_backward, whose own gradient is made of ops (any
 * order). Errors (NULL): AD_ERR_NULL, AD_ERR_DTYPE (not float, dtypes that
 * differ), AD_ERR_SHAPE (shapes that differ), AD_ERR_ARG (axis out of
 * range, a 0-d input, eps negative or not finite). nn_cosine_similarity
 * is this after broadcasting. */
AD_API ad_tensor *ad_cosine_similarity(ad_ctx *ctx, ad_tensor *x1, ad_tensor *x2, int axis,
                                       double eps);
/** Over an axis of length 0: an empty result, and nothing is read. @{ */
AD_API ad_tensor *ad_softmax(ad_ctx *ctx, ad_tensor *x, int axis);
AD_API ad_tensor *ad_log_softmax(ad_ctx *ctx, ad_tensor *x, int axis);
/** @} */

/** Mean over the batch of -log softmax(logits)[label]: logits [N,C] float,
 * labels [N] AD_I32 in [0,C). Stable for large logits; NaN for N = 0 (the
 * mean of nothing) or a NaN logit. A scalar. Errors: AD_ERR_SHAPE (not
 * [N,C] and [N], or C = 0), AD_ERR_ARG (a label out of range). Like every
 * integer input of a recorded op (index_select's indices too), the labels
 * are saved as the forward read them: changing them before backward does
 * not change the gradient. */
AD_API ad_tensor *ad_softmax_cross_entropy(ad_ctx *ctx, ad_tensor *logits, ad_tensor *labels);

/** Options of ad_softmax_cross_entropy_ext; the zero value (or NULL) is
 * the mean over every position, none ignored. */
typedef struct ad_cross_entropy_opts {
  bool ignore;          /**< positions whose label is ignore_index count for nothing */
  int32_t ignore_index; /**< PyTorch's default is -100; any value, 0..C-1 too */
  bool sum;             /**< the sum over the counted positions (reduction='sum') */
} ad_cross_entropy_opts;

/** Softmax cross-entropy as PyTorch's F.cross_entropy with class labels,
 * also for sequences: logits [N, C] with labels [N], or [N, C, d1, ...]
 * (classes in dim 1, e.g. [N, C, T]) with labels [N, d1, ...]. The loss of
 * a position is -log softmax over its C logits at its label; the result is
 * their mean over the positions counted (reduction='mean'), or with sum
 * their sum. With ignore, positions whose label is ignore_index add
 * neither loss nor gradient (their gradient is exactly 0, also for a NaN
 * or infinite dy, and for NaN or infinite logits there, where PyTorch's
 * log_softmax gives NaN) and are not counted in the mean; when every
 * position is ignored the mean is NaN (the sum 0) and every gradient 0, as
 * in PyTorch. The same op as
 * ad_softmax_cross_entropy (which is this with opts NULL, for [N, C]
 * only): stable, differentiable to any order in the logits, labels saved
 * as recorded. Errors: AD_ERR_SHAPE (the shapes above, C = 0), AD_ERR_ARG
 * (a label outside 0..C-1 that is not the ignore_index, named with its
 * position and coordinates), AD_ERR_DTYPE. */
AD_API ad_tensor *ad_softmax_cross_entropy_ext(ad_ctx *ctx, ad_tensor *logits, ad_tensor *labels,
                                               const ad_cross_entropy_opts *opts);

/** Binary cross-entropy of probabilities p and targets t, elementwise with
 * broadcasting, as PyTorch's F.binary_cross_entropy with reduction='none':
 * -(t max(log p, -100) + (1 - t) max(log(1 - p), -100)). Gradients:
 * dp = dy (p - t) / max(p (1 - p), 1e-12) (PyTorch's bound, the float
 * 1e-12 in both dtypes), so a confident wrong p of 0 or 1 gets a large
 * gradient, not 0; dt = dy (log(1 - p) - log p), unclamped (infinite at
 * p = 0 or 1), as in PyTorch 1.13. Both are made of ops, so differentiable
 * again: the second derivative is that of these formulas (dy / 1e-12 in p
 * where the bound holds), not PyTorch's double backward, which uses another
 * formula there (docs/derivatives.md). p is meant to be in [0, 1]; outside
 * it the result is NaN, as log gives (nn_bce_loss refuses such p). Errors:
 * AD_ERR_DTYPE (not one float dtype), AD_ERR_SHAPE (shapes that do not
 * broadcast). */
AD_API ad_tensor *ad_binary_cross_entropy(ad_ctx *ctx, ad_tensor *p, ad_tensor *t);
/** Binary cross-entropy of logits z and targets t per element, with
 * broadcasting, as PyTorch's F.binary_cross_entropy_with_logits with
 * reduction='none' and no pos_weight: -t log sigmoid(z) - (1 - t) log
 * sigmoid(-z), computed as (1 - t) z + softplus(-z) for z > 0 and
 * softplus(z) - t z otherwise (terms of one sign for t in [0, 1]; each
 * side reads z only where it is taken, so z = +inf gives (1 - t) inf and
 * z = -inf gives t inf, where PyTorch's one form gives NaN). Gradients,
 * PyTorch's: dz = dy (sigmoid(z) - t), dt = -dy z; made of ops, so
 * differentiable again. Errors: AD_ERR_DTYPE (not one float dtype),
 * AD_ERR_SHAPE (shapes that do not broadcast). */
AD_API ad_tensor *ad_binary_cross_entropy_logits(ad_ctx *ctx, ad_tensor *z, ad_tensor *t);
/** ad_binary_cross_entropy_logits with a pos_weight pw: PyTorch's
 * F.binary_cross_entropy_with_logits(z, t, pos_weight=pw, reduction='none')
 * per element, -pw t log sigmoid(z) - (1 - t) log sigmoid(-z), the three
 * broadcast together (pw is usually one weight per class, [C] against
 * [N, C]). With w = 1 + (pw - 1) t it is (1 - t) z + w softplus(-z) for z >
 * 0 and w softplus(z) - pw t z otherwise, so infinite logits behave as in
 * ad_binary_cross_entropy_logits. Gradients: dz = dy (w sigmoid(z) - pw t)
 * (PyTorch's), dt = dy (pw softplus(-z) - softplus(z)) (PyTorch's), and
 * dpw = dy t softplus(-z) (PyTorch gives pw none); made of ops, so
 * differentiable again. One op: nn_bce_with_logits_loss_ext's pos_weight.
 * Errors: AD_ERR_NULL, AD_ERR_DTYPE (not one float dtype), AD_ERR_SHAPE
 * (shapes that do not broadcast). */
AD_API ad_tensor *ad_binary_cross_entropy_logits_pw(ad_ctx *ctx, ad_tensor *z, ad_tensor *t,
                                                    ad_tensor *pw);
/** Smooth L1 loss per element of p and t with broadcasting, as PyTorch's
 * F.smooth_l1_loss with reduction='none': with d = p - t, |d| - beta/2
 * where |d| >= beta, else d^2 / (2 beta) (d^2 for beta 0, reached by a
 * NaN d only). Gradients as PyTorch 1.13's kernel: dp = dy g(p - t),
 * dt = dy g(t - p), g(d) = sign(d) where |d| >= beta (the switch point
 * takes this side; sign(0) = -1, so beta 0 gives -1 to both at d = 0),
 * else d / beta; made of ops, so differentiable again (second derivative
 * dy / beta inside, 0 on the linear side). beta is used rounded to the
 * inputs' dtype (in float32 a value beyond float's range is FLT_MAX up to
 * half an ulp above it, infinity from there); any beta is taken
 * (nn_smooth_l1_loss_beta refuses a negative or NaN one). Errors:
 * AD_ERR_DTYPE (not one float dtype), AD_ERR_SHAPE (shapes that do not
 * broadcast). */
AD_API ad_tensor *ad_smooth_l1(ad_ctx *ctx, ad_tensor *p, ad_tensor *t, double beta);
/** Huber loss per element, as PyTorch's F.huber_loss with reduction='none':
 * delta (|d| - delta/2) where |d| >= delta, else d^2 / 2, d = p - t; the
 * gradient g(d) is delta sign(d) on the linear side, d inside, dt = dy
 * g(t - p); otherwise as ad_smooth_l1 (nn_huber_loss_delta refuses a delta
 * that is not positive). */
AD_API ad_tensor *ad_huber(ad_ctx *ctx, ad_tensor *p, ad_tensor *t, double delta);

/** The forward (alpha) recursion of the CTC loss in log space, the op
 * nn_ctc_loss is built on: e [T,N,L] float emissions (log-probabilities of
 * each sample's extended labels), skip [N,L] AD_I32 (nonzero at s >= 2
 * where a path may step from s - 2), start [N,L] of e's dtype (the alphas
 * before the first frame; nn_ctc_loss's is 0 at s = 0 and -1e30
 * elsewhere). Returns alphas [T+1,N,L]: row 0 is start, row t+1 is
 * lse(a_t(s), a_t(s-1), skip(s) ? a_t(s-2) : -1e30) + e_t(s), a missing
 * candidate (s - 1 or s - 2 < 0) -1e30; where every candidate is below
 * -5e29 (a state no path reaches) the row holds the constant -1e30, of
 * gradient 0 (NaN stays NaN). One pass forward and one back; with
 * create_graph the backward is made of ops, so every order exists.
 * Float32 is computed in float. Errors: AD_ERR_DTYPE (e not float, skip
 * not AD_I32, start not e's dtype), AD_ERR_SHAPE (not [T,N,L], [N,L] and
 * [N,L]). */
AD_API ad_tensor *ad_ctc_alpha(ad_ctx *ctx, ad_tensor *e, ad_tensor *skip, ad_tensor *start);

/** Batch normalisation, PyTorch's F.batch_norm: x [N, C, ...] (2-D [N, C]
 * or more dims, e.g. NCHW) normalised per channel (dim 1) over every other
 * dim, then scaled by weight [C] and shifted by bias [C] (either NULL for
 * none). Training mode uses the batch's mean and biased variance and, when
 * running_mean and running_var ([C], both or neither) are given, updates
 * them in place: running = (1 - momentum) running + momentum stat, with the
 * unbiased variance for running_var (PyTorch: momentum 0.1, eps 1e-5).
 * Evaluation mode normalises with the running statistics, which it needs.
 * y = (x - mean) / sqrt(var + eps) * weight + bias; in training mode a
 * channel with var + eps = 0 (eps 0, equal values) takes 0 for 1 / sqrt(var
 * + eps), as PyTorch: its y is its bias, not NaN. An empty batch in
 * training mode gives an empty y and leaves the running statistics as they
 * are (PyTorch too). Training mode is the op batch_norm (the statistics
 * in double, each channel's summed in an order fixed by the shape: the
 * same bits on any number of threads), whose plain backward is one pass
 * for the sums and one for dx; under create_graph that backward is made of
 * ops, and evaluation mode is per channel alpha = weight / sqrt(var +
 * eps) of ops, then y = (x - mean) alpha + bias in one pass (the op
 * channel_affine, whose gradients are ops; weight's takes x - mean, as
 * PyTorch's): differentiable to any
 * order in every float input (the running statistics are buffers, not
 * differentiated). Errors:
 * AD_ERR_NULL (x NULL), AD_ERR_SHAPE (x under 2 dims, a vector not [C],
 * training with exactly one value per channel), AD_ERR_DTYPE (not float,
 * or dtypes differ), AD_ERR_ARG (eps < 0 or not finite, momentum outside
 * [0, 1], one running statistic without the other, evaluation without
 * them, a tensor of another context; in training mode, running
 * statistics that are not persistent tensors, are the same tensor, or are
 * x, weight or bias), AD_ERR_STATE (a freed tensor, or a temporary from a
 * tape that was reset). The running statistics are updated only when the
 * call succeeds. */
AD_API ad_tensor *ad_batch_norm(ad_ctx *ctx, ad_tensor *x, ad_tensor *weight, ad_tensor *bias,
                                ad_tensor *running_mean, ad_tensor *running_var, bool training,
                                double momentum, double eps);

/** Group normalisation, PyTorch's F.group_norm: x [N, C, *] (2 dims or
 * more) has its C channels split into num_groups groups of C / num_groups
 * consecutive channels, each group of each sample normalised with its own
 * mean and biased variance (in double), y = (x - mean) / sqrt(var + eps)
 * * weight + bias, weight and bias [C] (either NULL for none). As
 * ad_layer_norm, var + eps = 0 gives NaN. One op (group_norm, on x seen
 * as [N, G, C / G, prod(*)]), one pass per (n, g) forward, and its plain
 * backward one for the sums and one for dx, dweight and dbias summed over
 * n in an order fixed by the shape (the same bits on any number of
 * threads); under create_graph its backward is made of layer_norm's ops
 * and sums, so it differentiates to any order. Errors: AD_ERR_NULL,
 * AD_ERR_SHAPE (x under 2 dims, C not a multiple of num_groups or
 * num_groups < 1, weight or bias not [C]), AD_ERR_DTYPE (not float, or
 * dtypes differ), AD_ERR_ARG (eps < 0 or not finite). */
AD_API ad_tensor *ad_group_norm(ad_ctx *ctx, ad_tensor *x, int64_t num_groups, ad_tensor *weight,
                                ad_tensor *bias, double eps);

/** Layer normalisation, PyTorch's F.layer_norm: x (float, any rank) is
 * normalised over its last ndim dims, whose lengths must be
 * normalized_shape, with the mean and the biased variance of each such
 * block: y = (x - mean) / sqrt(var + eps) * weight + bias, weight and bias
 * of the normalized shape (either NULL for none; PyTorch's eps is 1e-5).
 * One op, whose gradient in x is the op layer_norm_backward (both a loop
 * per row with the statistics in double), and whose derivatives of any
 * order in x, weight and bias are made of the two and sums. Errors: AD_ERR_SHAPE
 * (normalized_shape is not the last dims of x, "layer_norm:
 * normalized_shape [4] does not match the last 1 dims of x [2,3]"; weight
 * or bias not of the normalized shape), AD_ERR_ARG (ndim outside
 * 1..AD_MAX_DIMS, eps < 0 or not finite), AD_ERR_DTYPE (not float, or
 * dtypes differ), AD_ERR_NULL. */
AD_API ad_tensor *ad_layer_norm(ad_ctx *ctx, ad_tensor *x, int ndim,
                                const int64_t *normalized_shape, ad_tensor *weight, ad_tensor *bias,
                                double eps);

/* ------------------------------------------------------ recurrent cells */

/** One LSTM step's elementwise part, fused (PyTorch's nn.LSTMCell after its
 * two products): gates is [N, 4H], the pre-activations x W_ih^T + b_ih +
 * h W_hh^T + b_hh in PyTorch's gate order i, f, g, o; c is the cell state
 * [N, H]. Returns [N, 7H] = [h' | c' | i f g o | tanh(c')] (narrow it at
 * 0 and H), with i, f, o = sigmoid and g = tanh of their blocks,
 * c' = f c + i g and h' = o tanh(c'). The last 5H are the activations
 * its backward reads, so that it computes no exp or tanh; they are
 * outputs like the others. Differentiable in both inputs to any order: a
 * plain backward runs one loop per row; a recorded one (create_graph)
 * builds the same gradient from ops. A tape temporary. NULL on error:
 * AD_ERR_SHAPE (gates not [N, 4H] or c not [N, H] for the same N, or
 * H = 0, naming both shapes), AD_ERR_DTYPE (not float, or dtypes differ),
 * AD_ERR_NULL. */
AD_API ad_tensor *ad_lstm_cell(ad_ctx *ctx, ad_tensor *gates, ad_tensor *c);
/** One GRU step's elementwise part, fused, with PyTorch's formula: a is
 * [N, 3H] = x W_ih^T + b_ih, b is [N, 3H] = h W_hh^T + b_hh (gate order r,
 * z, n), h the state [N, H]. Returns [N, 4H] = [h' | r z n] (narrow it at
 * 0 for h'), with
 *   r = sigmoid(a_r + b_r), z = sigmoid(a_z + b_z),
 *   n = tanh(a_n + r b_n), h' = (1 - z) n + z h
 * (the activations r, z, n kept for the backward). Differentiable and
 * errors as ad_lstm_cell's (a, b [N, 3H]). */
AD_API ad_tensor *ad_gru_cell(ad_ctx *ctx, ad_tensor *a, ad_tensor *b, ad_tensor *h);
/** A whole LSTM sequence in one op (what nn_rnn_forward runs by default):
 * xp is [T, N, 4H] ([N, T, 4H] with batch_first), every step's x W_ih^T
 * (one product for all steps), w_hh [4H, H], b [4H] the gates' bias
 * (b_ih + b_hh, added in the op's rows), h0 and c0 the initial states
 * [N, H], mask NULL or a constant [T, N] (time first either way) of 0 and
 * 1. Returns Y [T, N, 7H] ([N, T, 7H] with batch_first) whose step t is
 * ad_lstm_cell((xp_t + b) + h_{t-1} w_hh^T, c_{t-1}), h_{t-1} and c_{t-1}
 * being step t-1's first two blocks (h0, c0 at t = 0); where mask[t, n]
 * is 0, row n of step t is [h_{t-1} | c_{t-1} | 0]: the state is kept, no
 * gate is computed and no gradient reaches xp or b there. Only the
 * h_{t-1} w_hh^T products run per step; the backward's weight gradient is
 * one product over all T N rows. Differentiable in xp, w_hh, b, h0, c0
 * (not mask) to any order, as ad_lstm_cell. A tape temporary. NULL on
 * error: AD_ERR_SHAPE (naming the shapes), AD_ERR_DTYPE (not float, or
 * dtypes differ), AD_ERR_ARG (a mask element other than 0 and 1, named
 * with its position), AD_ERR_NULL. */
AD_API ad_tensor *ad_lstm_seq(ad_ctx *ctx, ad_tensor *xp, ad_tensor *w_hh, ad_tensor *b,
                              ad_tensor *h0, ad_tensor *c0, ad_tensor *mask, bool batch_first);
/** A whole GRU sequence in one op: xp [T, N, 3H] ([N, T, 3H] with
 * batch_first) = x W_ih^T of every step, w_hh [3H, H], b_ih and b_hh
 * [3H] (both added in the op's rows), h0 [N, H], mask as ad_lstm_seq's.
 * Returns Y [T, N, 5H] (or [N, T, 5H]) whose step t is [h_t | r z n | b_n]:
 * with b = h_{t-1} w_hh^T + b_hh, [h_t | r z n] = ad_gru_cell(xp_t + b_ih,
 * b, h_{t-1}) and b_n b's last H columns (kept for the backward); h_{t-1}
 * is step t-1's first block (h0 at t = 0), and a row whose mask is 0 is
 * [h_{t-1} | 0]. Differentiable in xp, w_hh, b_ih, b_hh, h0 to any order;
 * errors as ad_lstm_seq's. */
AD_API ad_tensor *ad_gru_seq(ad_ctx *ctx, ad_tensor *xp, ad_tensor *w_hh, ad_tensor *b_ih,
                             ad_tensor *b_hh, ad_tensor *h0, ad_tensor *mask, bool batch_first);

/* ----------------------------------------------------------- attention */

/** Options of ad_scaled_dot_product_attention. The zero value (and a NULL
 * pointer) means: scale 1/sqrt(E), no causal mask, no mask, no dropout. */
typedef struct ad_attention_opts {
  double scale; /**< multiplies q k^T; 0 means 1/sqrt(E) (E = q's last dim), PyTorch's scale=None;
                   PyTorch's scale=0.0 (uniform weights) has no spelling here. With E = 0
                   (q k^T all 0) it is 1, so the weights are uniform, where PyTorch's
                   1/sqrt(0) = inf gives 0 * inf = NaN everywhere */
  bool causal;  /**< query i attends to keys j <= i only */
  ad_tensor *mask;     /**< additive float mask broadcastable to [..., L, S]
                          (-inf entries allowed, also in anomaly mode, which
                          checks the weights, not the masked scores; cast to
                          q's dtype), or NULL */
  double dropout_p;    /**< in [0, 1): zeroes each weight with probability p and
                          scales the rest by 1 / (1 - p) */
  ad_rng *rng;         /**< the dropout draws (one per weight, row-major);
                          needed when dropout_p > 0 */
  ad_tensor **weights; /**< if not NULL, receives the attention weights
                          [..., L, S] (after dropout, as PyTorch's
                          MultiheadAttention returns them; a tape tensor),
                          or NULL on error */
} ad_attention_opts;

/** Scaled dot-product attention, PyTorch's
 * F.scaled_dot_product_attention: q [..., L, E], k [..., S, E],
 * v [..., S, Ev] give [..., L, Ev] =
 *   softmax(q k^T * scale + causal + mask, -1) v
 * A composite of the engine's ops (matmul, mul_scalar, add, softmax,
 * matmul), so a graph dump shows each step and it is differentiable to
 * any order in q, k, v (and in a mask that requires a gradient).
 * q, k and v have the same number of dims (at least 2); their batch dims
 * (all but the last two) broadcast, each equal or 1, as in ad_matmul
 * (e.g. one k, v [1, S, E] shared by a batch of queries). With causal, score (i,
 * j) is kept for j <= i and -inf is added to it otherwise (added, as
 * PyTorch adds its causal mask, so that in a row another mask leaves with
 * no key the gradients are NaN as PyTorch's: for every score of the row,
 * so for every key): for L != S the triangle is aligned at the top
 * left, as PyTorch's is_causal (with L > S the rows past S see all keys;
 * with L < S the keys past L are never seen). A row whose scores are all
 * -inf (every key masked) gives NaN weights and a NaN output row, as in
 * PyTorch; with no key at all (S = 0) the output is zeros (the empty sum). Returns a tape tensor,
 * or NULL with AD_ERR_NULL (q, k or v NULL; dropout without rng), AD_ERR_DTYPE (not float, dtypes
 * differ, a mask not float), AD_ERR_SHAPE (fewer than 2 dims or ranks differ, batch dims that do
 * not broadcast, embedding sizes of q and k differ, source lengths of k and v differ, a mask that
 * does not broadcast to [..., L, S]; the message names the shapes) or AD_ERR_ARG (scale not finite,
 * dropout_p outside [0, 1), dropout with an rng never seeded). */
AD_API ad_tensor *ad_scaled_dot_product_attention(ad_ctx *ctx, ad_tensor *q, ad_tensor *k,
                                                  ad_tensor *v, const ad_attention_opts *opts);

/* ------------------------------------------------------------- pooling
 * 2-D pooling over the last two dims (H, W) of a float tensor, 4-D
 * [N, C, H, W] or 3-D [C, H, W] (as PyTorch's unbatched form), with
 * PyTorch's rules (torch.nn.functional.max_pool2d / avg_pool2d). The
 * output keeps the leading dims; along each axis its length is
 *   floor((in + 2 padding - dilation (kernel - 1) - 1) / stride) + 1,
 * or with ceil_mode the ceiling, less one if the last window would start
 * in the right padding (it must start in the input or the left padding).
 * Errors (AD_ERR_SHAPE, AD_ERR_ARG, AD_ERR_DTYPE, naming the op and the
 * shape): the input is not 3-D or 4-D, not float, or has H or W of 0; a
 * kernel, stride or dilation < 1 (or > 2^30); padding < 0 or more than
 * half the kernel (kernel / 2, rounded down); an output of H or W < 1. N
 * or C may be 0: the output is empty. */

/** The options of a pooling. The zero value (and a NULL pointer) means
 * PyTorch's defaults: stride = the kernel, no padding, dilation 1, floor
 * mode, and for avg_pool2d padding counted in the divisor. */
typedef struct ad_pool2d_opts {
  int64_t stride[2];   /**< (h, w); 0: the kernel's */
  int64_t padding[2];  /**< (h, w) on both sides; at most half the kernel */
  int64_t dilation[2]; /**< (h, w) spacing of a window's taps; 0: 1. max_pool2d only:
                          avg_pool2d refuses any but 1 (AD_ERR_ARG) */
  bool ceil_mode;      /**< count a last, partial window */
  bool exclude_pad;    /**< avg_pool2d: divide by the elements of the window that lie
                          in the input (PyTorch's count_include_pad=False); ignored
                          by max_pool2d, whose padding never wins */
} ad_pool2d_opts;

/** The maximum of each kh x kw window; padding counts as -inf. Gradient:
 * each window sends dy to one element, its argmax: the first maximum in
 * row-major window order (ties: the first, as PyTorch's CPU kernel), and
 * overlapping windows add up. A window holding a NaN gives NaN and sends
 * its gradient to the NaN (the last one, if several). A window with no
 * element of the input (only possible with dilation) gives -inf and no
 * gradient. Differentiable to any order (max_pool2d_backward and
 * max_pool2d_select in docs/derivatives.md). */
AD_API ad_tensor *ad_max_pool2d(ad_ctx *ctx, ad_tensor *x, int64_t kh, int64_t kw,
                                const ad_pool2d_opts *opts);
/** The indices of PyTorch's max_pool2d(..., return_indices=True): for each
 * output of ad_max_pool2d(x, kh, kw, opts), the flat index (h W + w) in its
 * (n, c) plane of the element its gradient goes to (the first maximum, or
 * the last NaN, as above). A window with no element of the input gets
 * PyTorch's index, h0 W + w0 from its first taps at or after 0 (possibly
 * outside the plane). AD_I32 (PyTorch's are int64) and shaped like the
 * pooling's output: a temporary of the tape (ad_tape_reset frees it) that
 * no gradient flows through. Errors: ad_max_pool2d's, naming
 * max_pool2d_indices, and AD_ERR_SHAPE when an index could exceed 2^31 - 1
 * (a plane of more than 2^31 elements). */
AD_API ad_tensor *ad_max_pool2d_indices(ad_ctx *ctx, ad_tensor *x, int64_t kh, int64_t kw,
                                        const ad_pool2d_opts *opts);
/** The mean of each kh x kw window; padding counts as 0. The divisor is the
 * window's size clipped to the padded input (so a partial ceil_mode window
 * divides by fewer), or with exclude_pad the number of its elements in the
 * input. Errors as above, and AD_ERR_ARG for a dilation other than 1. */
AD_API ad_tensor *ad_avg_pool2d(ad_ctx *ctx, ad_tensor *x, int64_t kh, int64_t kw,
                                const ad_pool2d_opts *opts);
/** PyTorch's adaptive_max_pool2d(x, (oh, ow)) and adaptive_avg_pool2d: output
 * (i, j) pools rows [floor(i H / oh), ceil((i + 1) H / oh)) and columns
 * [floor(j W / ow), ceil((j + 1) W / ow)) (windows that overlap when oh does
 * not divide H; oh may exceed H). The maximum's argmax, ties and NaN are
 * ad_max_pool2d's; the mean divides the window's sum (in double) by its
 * size. Differentiable to any order: the mean is avg_pool2d with the
 * attributes' adaptive flag; the maximum is x read at each window's argmax
 * (found once, in the forward) by the op pool_gather, so its gradient is
 * one pool_scatter (dy added at the argmaxes in window order, PyTorch's,
 * written straight into a leaf's gradient), whose gradient is pool_gather.
 * Errors: ad_max_pool2d's for the input, and AD_ERR_ARG naming the
 * function for oh or ow outside [1, 2^30]; the maximum also AD_ERR_SHAPE
 * for a plane of more than 2^31 elements (the int32 indices). @{ */
AD_API ad_tensor *ad_adaptive_max_pool2d(ad_ctx *ctx, ad_tensor *x, int64_t oh, int64_t ow);
AD_API ad_tensor *ad_adaptive_avg_pool2d(ad_ctx *ctx, ad_tensor *x, int64_t oh, int64_t ow);
/** @} */
/** The mean over H, W, keeping them: [N, C, H, W] -> [N, C, 1, 1] ([C, H,
 * W] -> [C, 1, 1]), PyTorch's adaptive_avg_pool2d(x, 1). A composite: a
 * sum over H, W (keepdim) divided by H W. Errors: not 3-D or 4-D, or H or
 * W of 0 (AD_ERR_SHAPE); not float (AD_ERR_DTYPE). */
AD_API ad_tensor *ad_global_avg_pool2d(ad_ctx *ctx, ad_tensor *x);

/* 3-D pooling over the last three dims (D, H, W) of a float tensor, 5-D
 * [N, C, D, H, W] or 4-D [C, D, H, W] (PyTorch's unbatched form), with
 * PyTorch's rules (torch.nn.functional.max_pool3d / avg_pool3d): along
 * each axis the output length, the ceil_mode rule and the padding limit
 * are the 2-D ops' above. Both are composites of the 2-D ops, so they are
 * differentiable to any order: a 2-D pooling over (H, W) of every depth
 * slice (D folded into the planes), then one with a kd x 1 window over D
 * of the [planes, D, OH OW] view. The maximum without dilation (a volume
 * of less than 2^31 elements) instead finds each window's argmax once, by
 * those two stages without a gradient (ad_max_pool3d_indices), and reads x
 * there (the op pool_gather): its gradient is one pool_scatter, as
 * PyTorch's keeps its indices, rather than two backward passes that each
 * search their windows again. Errors (NULL, the message naming
 * max_pool3d or avg_pool3d and the shapes): x NULL (AD_ERR_NULL), freed,
 * of another context or from a reset tape (AD_ERR_STATE, AD_ERR_ARG); not
 * float (AD_ERR_DTYPE); not 4-D or 5-D, or an empty C, D, H or W (only N
 * may be 0, giving an empty output, as PyTorch) (AD_ERR_SHAPE); a kernel,
 * stride or dilation < 1 or > 2^30 (0 in the options means the default),
 * a padding < 0 or more than half the kernel (AD_ERR_ARG); an output
 * length < 1 on some axis (AD_ERR_SHAPE). */

/** The options of a 3-D pooling, per axis (d, h, w). The zero value (and a
 * NULL pointer) means PyTorch's defaults: stride = the kernel, no padding,
 * dilation 1, floor mode, padding counted in the divisor, no divisor
 * override. */
typedef struct ad_pool3d_opts {
  int64_t stride[3];        /**< 0: the kernel's */
  int64_t padding[3];       /**< on both sides; at most half the kernel */
  int64_t dilation[3];      /**< spacing of a window's taps; 0: 1. max_pool3d only:
                               avg_pool3d refuses any but 1 (AD_ERR_ARG) */
  bool ceil_mode;           /**< count a last, partial window */
  bool exclude_pad;         /**< avg_pool3d: PyTorch's count_include_pad=False;
                               ignored by max_pool3d */
  int64_t divisor_override; /**< avg_pool3d: divide every window's sum by this
                               (PyTorch's divisor_override; 0: none, as PyTorch
                               refuses 0); ignored by max_pool3d */
} ad_pool3d_opts;

/** The maximum of each kd x kh x kw window, PyTorch's max_pool3d; padding
 * counts as -inf. Gradient: each window sends dy to its argmax, the first
 * maximum in (d, h, w) order (ties: the first, as PyTorch's CPU kernel); a
 * window holding a NaN gives NaN and sends dy to its last NaN in that
 * order; a window of only -inf sends it to its first element in the input.
 * Overlapping windows add up. */
AD_API ad_tensor *ad_max_pool3d(ad_ctx *ctx, ad_tensor *x, int64_t kd, int64_t kh, int64_t kw,
                                const ad_pool3d_opts *opts);
/** The indices of PyTorch's max_pool3d(..., return_indices=True): for each
 * output of ad_max_pool3d, the flat index (d H W + h W + w) in its (n, c)
 * volume of the element its gradient goes to (see above; a window with
 * no element of the input gets PyTorch's index from its first taps at or
 * after 0). AD_I32, shaped like the output, a temporary of the tape with
 * no gradient. Errors: ad_max_pool3d's, naming max_pool3d_indices, and
 * AD_ERR_SHAPE when an index could exceed 2^31 - 1. */
AD_API ad_tensor *ad_max_pool3d_indices(ad_ctx *ctx, ad_tensor *x, int64_t kd, int64_t kh,
                                        int64_t kw, const ad_pool3d_opts *opts);
/** The mean of each kd x kh x kw window, PyTorch's avg_pool3d; padding
 * counts as 0. The divisor is divisor_override when set, else the window's
 * size clipped per axis to the padded input (a partial ceil_mode window
 * divides by fewer), or with exclude_pad the number of its elements in the
 * input. A sum of sums, divided per stage (or, with divisor_override, a
 * mean times count / divisor_override): within a few ulps of PyTorch's
 * single sum / divisor. Errors as above, and AD_ERR_ARG for a dilation
 * other than 1. */
AD_API ad_tensor *ad_avg_pool3d(ad_ctx *ctx, ad_tensor *x, int64_t kd, int64_t kh, int64_t kw,
                                const ad_pool3d_opts *opts);

/* ---------------------------------------------------------- convolution
 * 2-D convolution over NCHW with PyTorch's layout and cross-correlation, so
 * a PyTorch state dict loads unchanged. Pairs are (height, width). The
 * results are arena tensors; every error is reported (NULL, and a message
 * naming the op, the shapes and the groups):
 *   AD_ERR_SHAPE  x or w of the wrong rank, a channel count that does not
 *                 match the weight (C != w's C/groups x groups), groups not
 *                 dividing the channels, a bias that is not [O], a kernel
 *                 larger than the padded input (no output), an output too
 *                 large for a tensor;
 *   AD_ERR_ARG    a negative stride, dilation, groups or padding (zero
 *                 means the default in the options), one above 2^40,
 *                 'same' with a stride other than 1, a bad output_padding;
 *   AD_ERR_DTYPE  inputs that are not one float dtype.
 * Rounding: f32 3x3 kernels at stride 1 and dilation 1, one group, padding
 * at most 2, with 16 or more channels on each side and an output of at
 * least 4x4 are computed by Winograd's F(4x4, 3x3) (4x fewer
 * multiplications), by all three ops, unless ad_set_conv_winograd turned
 * it off. The transforms mix each 6x6 patch of the input (of dy for the
 * input gradient) into the 4x4 outputs it feeds, so a result's error is
 * relative to that patch: for conv2d, within 1e-5 x the sum over input
 * channels c of (sum of |w| over c's 3x3 kernel) x (the largest |x| of c
 * in the patch) of the exact value. Where neighbouring inputs have similar
 * magnitudes that is within 1e-5 of the sum of the result's own terms'
 * magnitudes (sum |w x|, |w dy| or |x dy|), about 10x the error of the
 * im2col + GEMM path every other shape and f64 take; an input far larger
 * than its neighbours costs the results beside it their accuracy (turn the
 * path off, or use f64, for such data). conv_transpose2d has the same
 * bound, dy for x and output channels for input channels (the sum over o
 * of (sum of |w| over o's kernels) x (the largest |dy| of o in the
 * patch)), where dx needs no more 4x4 tiles than dy (padding 1 or more
 * on each side, 'same' among them): it is then dy's convolution with the
 * flipped kernels. Elsewhere (no padding, where that would cost up to
 * 35% more tiles) it is the adjoint of conv2d's transforms, which rounds
 * alike for data of both signs but up to 10x worse for data of one sign,
 * relative to sum |w dy|: 4.1e-5 measured from 512 channels of [0, 1)
 * data (GEMM 6e-7), growing with the channel count; turn the path off
 * where that matters. conv2d_weight: within 1e-5 of sum |x dy| (1.4e-6
 * measured for 512 channels, either sign). inf and NaN are not spread: when
 * the path's result holds one, the op is recomputed by the GEMM path, so
 * they reach exactly the outputs whose windows hold them, as in PyTorch.
 * Either way the bits do not depend on the number of threads. An op's
 * scratch (one buffer per thread) goes back to the arena when it returns;
 * under an ad_set_arena_limit too tight for every thread's buffer the op
 * runs its images one after another on one buffer, the same bits. One
 * exception remains: where more threads' scratch fit only in a new arena
 * chunk, the chunks the arena then holds differ from one thread's, and a
 * later op near the limit may find no room for its scratch on one thread
 * count and room on the other, and so take a path with other rounding. */

/** Options; the zero value (or NULL) is PyTorch's default: stride 1, no
 * padding, dilation 1, one group. */
typedef struct ad_conv_opts {
  int64_t stride[2];   /**< 0 means 1 */
  int64_t padding[4];  /**< top, bottom, left, right; PyTorch's padding=(p, q) is {p, p, q, q} */
  int64_t dilation[2]; /**< 0 means 1 */
  int64_t groups;      /**< 0 means 1; groups == C is a depthwise convolution */
  /** padding='same' (stride 1 only; conv2d, conv2d_weight): pad for an
   * output as large as the input, the total dilation (k - 1) split as
   * PyTorch does, the odd one at the bottom and right; padding is ignored */
  bool same;
  /** conv_transpose2d only: extra output rows and columns at the bottom and
   * right, each smaller than the stride or the dilation */
  int64_t output_padding[2];
} ad_conv_opts;

/** y = conv2d(x, w) + bias: x [N, C, H, W], w [O, C/groups, kH, kW], bias
 * [O] or NULL for none; y [N, O, Ho, Wo] with Ho = floor((H + top + bottom
 * - dilation (kH - 1) - 1) / stride) + 1 (Wo likewise), as torch.nn.
 * functional.conv2d. A NULL x or w is an error (AD_ERR_NULL); a NULL bias
 * means none. N or C may be 0, H and W may not (AD_ERR_SHAPE, as PyTorch;
 * also for conv_transpose2d and conv1d's L). Differentiable in x, w and bias to any order (the
 * gradients are conv_transpose2d, conv2d_weight and a sum). */
AD_API ad_tensor *ad_conv2d(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *bias,
                            const ad_conv_opts *opts);
/** The transposed convolution (torch.nn.functional.conv_transpose2d), the
 * gradient of conv2d in its input; decoders use it to upsample. x [N, C, H,
 * W], w [C, O/groups, kH, kW], bias [O] or NULL; y [N, O, Ho, Wo] with Ho =
 * (H - 1) stride - top - bottom + dilation (kH - 1) + output_padding + 1.
 * Padding may be asymmetric here too; 'same' is refused (AD_ERR_ARG), and an
 * output smaller than 1x1 is AD_ERR_SHAPE. */
AD_API ad_tensor *ad_conv_transpose2d(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *bias,
                                      const ad_conv_opts *opts);
/** The gradient of conv2d in its weight (torch.nn.grad.conv2d_weight): for x
 * [N, C, H, W] and dy [N, O, Ho, Wo] the output of a kh x kw convolution of
 * x under opts, dw [O, C/groups, kh, kw] = d<conv2d(x, w), dy>/dw. dy of
 * another shape is AD_ERR_SHAPE; kh or kw < 1 is AD_ERR_ARG. Summed over the
 * batch in a fixed order: the same bits for any ad_set_num_threads. */
AD_API ad_tensor *ad_conv2d_weight(ad_ctx *ctx, ad_tensor *x, ad_tensor *dy, int64_t kh, int64_t kw,
                                   const ad_conv_opts *opts);

/** Options of ad_conv1d; the zero value (or NULL) is PyTorch's default. */
typedef struct ad_conv1d_opts {
  int64_t stride;     /**< 0 means 1 */
  int64_t padding[2]; /**< left, right */
  int64_t dilation;   /**< 0 means 1 */
  int64_t groups;     /**< 0 means 1 */
  bool same;          /**< padding='same' (stride 1), odd total's extra on the right */
} ad_conv1d_opts;

/** conv1d (torch.nn.functional.conv1d): x [N, C, L], w [O, C/groups, K],
 * bias [O] or NULL; y [N, O, Lo]. conv2d over H = 1 (reshapes, no copy),
 * with the same errors, reported as conv1d's with the 3-D shapes. */
AD_API ad_tensor *ad_conv1d(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *bias,
                            const ad_conv1d_opts *opts);

/** Options of ad_conv_transpose1d; the zero value (or NULL) is PyTorch's
 * default. */
typedef struct ad_conv_transpose1d_opts {
  int64_t stride;         /**< 0 means 1 */
  int64_t padding[2];     /**< left, right; PyTorch's padding=p is {p, p} */
  int64_t dilation;       /**< 0 means 1 */
  int64_t groups;         /**< 0 means 1 */
  int64_t output_padding; /**< extra outputs on the right, below the stride or dilation */
} ad_conv_transpose1d_opts;

/** conv_transpose1d (torch.nn.functional.conv_transpose1d): x [N, C, L] or
 * unbatched [C, L], w [C, O/groups, K], bias [O] or NULL; y [N, O, Lo] ([O,
 * Lo]) with Lo = (L - 1) stride - left - right + dilation (K - 1) +
 * output_padding + 1. conv_transpose2d over H = 1 (reshapes, no copy), with
 * its errors, reported as conv_transpose1d's with the 3-D shapes; x or w of
 * another rank is AD_ERR_SHAPE, NULL AD_ERR_NULL. Differentiable to any
 * order. */
AD_API ad_tensor *ad_conv_transpose1d(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *bias,
                                      const ad_conv_transpose1d_opts *opts);

/** Options of ad_conv3d and ad_conv_transpose3d; the zero value (or NULL)
 * is PyTorch's default. Triples are (depth, height, width). */
typedef struct ad_conv3d_opts {
  int64_t stride[3];   /**< 0 means 1 */
  int64_t padding[6];  /**< front, back, top, bottom, left, right; PyTorch's
                          padding=(p, q, r) is {p, p, q, q, r, r} */
  int64_t dilation[3]; /**< 0 means 1 */
  int64_t groups;      /**< 0 means 1; groups == C is a depthwise convolution */
  /** padding='same' (conv3d, stride 1 only): the total dilation (k - 1) of
   * each axis split as PyTorch does, the odd one at the back, bottom and
   * right; padding is ignored */
  bool same;
  /** conv_transpose3d only: extra outputs at the back, bottom and right,
   * each smaller than its axis's stride or dilation */
  int64_t output_padding[3];
} ad_conv3d_opts;

/** y = conv3d(x, w) + bias (torch.nn.functional.conv3d): x [N, C, D, H, W]
 * or unbatched [C, D, H, W], w [O, C/groups, kD, kH, kW], bias [O] or NULL
 * for none; y [N, O, Do, Ho, Wo] ([O, Do, Ho, Wo]) with Do = floor((D +
 * front + back - dilation (kD - 1) - 1) / stride) + 1 (Ho, Wo likewise).
 * A composite: for each depth tap kd, the input's depth planes that tap
 * reads, folded into the batch, go through one ad_conv2d with w[:, :, kd]
 * (kD conv2d calls, each over N x (the output planes the tap reaches)
 * images), and the taps' results are summed; so it is differentiable in x,
 * w and bias to any order, and takes conv2d's paths (its Winograd rounding
 * for 3x3 planes included). Errors (NULL returned, the message naming
 * conv3d and the shapes): AD_ERR_NULL (x or w NULL), AD_ERR_ARG (a tensor
 * freed, of another context or from a reset tape; a negative stride,
 * dilation, groups or padding, one above 2^40, 'same' with a stride other
 * than 1, an output_padding), AD_ERR_SHAPE (ranks, a channel count that
 * does not match w, groups not dividing the channels, a bias not [O], an
 * empty kernel or input plane, a kernel larger than the padded input, an
 * output too large for a tensor), AD_ERR_DTYPE (not one float dtype). N
 * and C may be 0, as in PyTorch. */
AD_API ad_tensor *ad_conv3d(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *bias,
                            const ad_conv3d_opts *opts);
/** The transposed 3-D convolution (torch.nn.functional.conv_transpose3d):
 * x [N, C, D, H, W] or [C, D, H, W], w [C, O/groups, kD, kH, kW], bias [O]
 * or NULL; y [N, O, Do, Ho, Wo] with Do = (D - 1) stride - front - back +
 * dilation (kD - 1) + output_padding + 1 (Ho, Wo likewise). A composite:
 * per depth tap one ad_conv_transpose2d with w[:, :, kd] over the input
 * planes whose outputs land inside, spread to their strided depths with
 * pads and reshapes and summed (kD conv_transpose2d calls). Errors as
 * ad_conv3d's; 'same' is AD_ERR_ARG, so is an output_padding not smaller
 * than its stride or dilation; an output smaller than 1x1x1 is
 * AD_ERR_SHAPE. */
AD_API ad_tensor *ad_conv_transpose3d(ad_ctx *ctx, ad_tensor *x, ad_tensor *w, ad_tensor *bias,
                                      const ad_conv3d_opts *opts);

/* ---------------------------------------------------- end of convolution */

/* ------------------------------------------------------------ gradcheck */

/** A function of tensors to check: returns an output of any shape. */
typedef ad_tensor *(*ad_check_fn)(ad_ctx *ctx, int n, ad_tensor *const *in, void *ud);

/** Options of ad_gradcheck and ad_gradgradcheck; zero (or NULL) means the
 * default. eps, atol and rtol must be finite and >= 0 (else AD_ERR_ARG). */
typedef struct ad_check_opts {
  double eps;    /**< central-difference step (default 1e-6) */
  double atol;   /**< pass if |a-n| <= atol + rtol*|n| (defaults 1e-5, 1e-4;
                    1e-3, 1e-2 when an input checked is f32) */
  double rtol;   /**< see atol */
  uint64_t seed; /**< for the random output cotangent */
} ad_check_opts;

/** The outcome of a check, and where it was worst. */
typedef struct ad_check_report {
  bool passed;     /**< every element compared was within tolerance */
  int input;       /**< input holding the worst element, -1 if none */
  int64_t index;   /**< its flat index */
  double analytic; /**< the two values there */
  double numeric;  /**< see analytic */
  double abs_err;  /**< worst |analytic - numeric| */
  double rel_err;  /**< its |analytic - numeric| / max(|numeric|, 1e-12) */
  int64_t checked; /**< elements compared */
} ad_check_report;

/** Compares the analytic gradient of <v, fn(in)> (v a random cotangent)
 * with central differences computed in float64: inputs of another dtype are
 * copied to float64 for the numeric side. Only inputs with requires_grad
 * are checked (AD_ERR_ARG when none has it). A tensor given in more than
 * one slot (f(x, x)) is one variable, as in PyTorch: perturbed in all its
 * slots at once and reported under its first. opts may be NULL. Resets the
 * tape. Returns AD_OK when the check ran (see report->passed) or the error
 * that stopped it. */
AD_API ad_status ad_gradcheck(ad_ctx *ctx, ad_check_fn fn, void *ud, int n, ad_tensor *const *in,
                              const ad_check_opts *opts, ad_check_report *report);

/** The same for second derivatives: checks the gradient (recorded with
 * create_graph) of h(in) = sum_i <r_i, d<v, fn(in)>/d in_i> against central
 * differences of h. */
AD_API ad_status ad_gradgradcheck(ad_ctx *ctx, ad_check_fn fn, void *ud, int n,
                                  ad_tensor *const *in, const ad_check_opts *opts,
                                  ad_check_report *report);

/* ------------------------------------------------------------ threads */

/** Sets how many threads the library uses, process-wide: n = 1 (the
 * default) runs everything in the calling thread; with n > 1, large matrix
 * products are split into n parts, large elementwise ops and reductions are
 * cut into chunks, and callers of ad_parallel_for (the nn optimizers) do
 * likewise, on n - 1 worker threads plus the caller. Workers are started
 * here and kept; idle ones poll briefly, then sleep. When the library is
 * linked with OpenBLAS, this also sets OpenBLAS to one thread (for any n),
 * so BLAS runs no threads of its own beside these (its idle threads, made
 * at load time unless OPENBLAS_NUM_THREADS=1, still spin for about 0.1 s
 * before they sleep). Results are the same bits for any n, except that
 * OpenBLAS may round the parts of a split product differently in the last
 * bits (as under its own threading). n is capped at 64. Returns AD_ERR_ARG
 * for n < 1, AD_ERR_STATE when called from inside an ad_parallel_for,
 * AD_ERR_OOM when a thread cannot be started (the library then uses the
 * threads it has). In a child forked from a process with workers,
 * ad_num_threads() is the parent's setting and the child's first parallel
 * loop starts workers of its own (or uses the threads it can start). @{ */
AD_API ad_status ad_set_num_threads(int n);
AD_API int ad_num_threads(void);
/** @} */

/** Flush-to-zero for subnormal floats (magnitudes below 1.2e-38 in f32,
 * 2.2e-308 in f64) on the calling thread, as PyTorch's set_flush_denormal:
 * with it on, such results and inputs count as 0. Arithmetic on subnormals
 * is many times slower on x86, and training that drives a loss toward 0
 * makes many of them (docs/performance.md measures it); flushing changes
 * only values that small. The engine's worker threads use the mode of the
 * thread that gives them work; OpenBLAS's own threads do not (the library
 * sets OpenBLAS to one thread in ad_set_num_threads, so products the
 * dispatch gives to OpenBLAS then run in the calling thread, in its mode;
 * without that call they may not). nn_fit turns it on while it runs unless
 * nn_fit_opts.keep_denormals is set, and restores the caller's mode.
 * Returns true when the CPU has the mode (x86 SSE, AArch64), false (and
 * nothing changes) otherwise. Off by default. */
AD_API bool ad_set_flush_denormal(bool on);
/** Whether the calling thread flushes subnormals. */
AD_API bool ad_flush_denormal(void);

/** Whether f32 convolutions that allow it take the Winograd path (see
 * ad_conv2d), process-wide; on by default. Off, every convolution takes
 * im2col + GEMM: slower, but each result's rounding error is then relative
 * to its own window's terms, not to the largest values of the input patch
 * its output tile reads (which matters only where neighbouring inputs
 * differ by many orders of magnitude). Affects the ops run after it
 * returns. Returns the previous setting. */
AD_API bool ad_set_conv_winograd(bool on);

/* ------------------------------------------ graph dumps and traces
 * For teaching and debugging: draw the recorded graph with Graphviz and
 * write a backward pass out step by step, the chain rule with numbers.
 * An ad_graph belongs to one context. It holds the names shown for tensors
 * and, while tracing, what each backward step computed. Neither a dump nor
 * a trace runs an op or writes a tensor: values and gradients are
 * bit-identical with and without them.
 *
 *   ad_graph *g = ad_graph_new(ctx);
 *   ad_graph_name(g, W, "W");  ad_graph_name(g, loss, "L");
 *   ad_graph_trace_begin(g, stdout);    (or NULL: record for the dump only)
 *   ad_backward(ctx, loss, NULL);
 *   ad_graph_trace_end(g);
 *   ad_graph_dot(g, file, loss, AD_DOT_BACKWARD);   then: dot -Tsvg
 *   ad_graph_free(g);
 */

/** A graph view of one context, for dumps and traces (see above). Opaque. */
typedef struct ad_graph ad_graph;

/** Creates an empty graph view of ctx through ctx's allocator. Returns NULL
 * (AD_ERR_NULL, AD_ERR_OOM) on failure. Free it with ad_graph_free before
 * the context. */
AD_API ad_graph *ad_graph_new(ad_ctx *ctx);

/** Ends a trace if one runs and frees g. ad_graph_free(NULL) is a no-op. */
AD_API void ad_graph_free(ad_graph *g);

/** Shows t as name (copied) in g's dumps and traces; NULL or "" removes it.
 * This label is g's own; a tensor's name (ad_tensor_set_name) is shown
 * where g gives none, and also appears in error messages. Tensors with
 * neither are shown as "<op>_<tape index>" ("sigmoid_2") or, for
 * leaves, "param1", "input1", "const1" in order of appearance. A name on
 * an op's output lasts until ad_tape_reset; on a persistent tensor until
 * g is freed, so remove it before freeing a tensor that g may outlive (a
 * new tensor could get the same address). Returns AD_ERR_NULL, AD_ERR_ARG
 * (a freed tensor, or one of another context) or AD_ERR_OOM. */
AD_API ad_status ad_graph_name(ad_graph *g, const ad_tensor *t, const char *name);

/** Starts observing backward passes on g's context (ad_backward and
 * ad_grad) through the backward hook, chaining to a hook already installed.
 * For each op differentiated, g keeps its incoming gradient and the
 * gradients it sent (arena pointers, valid until ad_tape_reset) for
 * ad_graph_dot, and when f is not NULL writes to f, in the order backward
 * runs: the op and its output, the scope it was recorded in when it was
 * ("scope      lstm.l0 / t=3"), the op's attributes when it has any that
 * say something ("attrs      stride 1x1 pad 0,0,0,0 dil 1x1 groups 1" for a
 * conv2d, "kernel 2x2 stride 1x1 pad 0x0 dil 1x1" for a pooling), the
 * incoming gradient dL/dout, the op's derivative rule from its definition
 * (ad_op_def.inputs, .grads) with its variables named, for the built-in
 * convolution and pooling ops the rule explained in words ("in words",
 * e.g. conv2d's input gradient as a transposed convolution), and for each
 * input the gradient sent and, where it is exact to show (elementwise ops,
 * one-element outputs), the local derivative.
 * AD_ERR_STATE if g is already tracing. */
AD_API ad_status ad_graph_trace_begin(ad_graph *g, FILE *f);

/** Stops the trace and restores the previous hook. Returns AD_ERR_OOM if a
 * step could not be recorded for ad_graph_dot (the text trace and the
 * computation are unaffected), AD_ERR_IO if writing the trace to f failed,
 * else AD_OK. Records stay for ad_graph_dot until ad_tape_reset. */
AD_API ad_status ad_graph_trace_end(ad_graph *g);

/** ad_graph_dot flags: draw the backward view; draw each scope's ops as
 * one box (see ad_graph_dot). @{ */
#define AD_DOT_BACKWARD 1
#define AD_DOT_COLLAPSE 2
/** @} */

/** Writes the graph that computed root as Graphviz DOT to f: one node per
 * op or leaf, in data-flow order (each leaf just before its first use),
 * labelled with its name, op and inputs, the op's attributes as in the
 * trace (a conv2d's stride, padding, dilation and groups), shape, dtype
 * and value (in full up to 16 elements, else the first values and
 * min/max/mean) and, when known,
 * its gradient (the grad field, or what a traced pass sent it).
 * Parameters (leaves requiring a gradient) are blue boxes, inputs grey
 * notes, constants (unrecorded temporaries) dashed boxes, ops rounded
 * yellow boxes; the root has a double border. Edges run from input to
 * consumer; in a multi-input op they name the input's variable in the op
 * table's math ("a", "b"). With AD_DOT_BACKWARD the same layout is drawn
 * with red arrows pointing against the data flow, each labelled with the
 * consumer's derivative rule for that input and, if a trace recorded the
 * pass, the local derivative (where exact) and the gradient sent. Ops
 * recorded inside scopes (ad_scope_push) are framed by Graphviz clusters
 * ("subgraph cluster_g<id>", labelled with the scope's label) nested as
 * the scopes were. With AD_DOT_COLLAPSE each innermost scope is instead one
 * box ("g<id>") giving its label and how many ops of which kind it holds,
 * with an edge wherever a tensor made in one box (or node) is used in
 * another, labelled "N tensors" when more than one crosses; boxes sit in
 * the clusters of their enclosing scopes. Leaves, constants and ops
 * outside every scope are drawn as usual either way, and a graph without
 * scopes is drawn the same with or without AD_DOT_COLLAPSE. Names, labels
 * and a user op's strings are escaped: a control character or a byte that
 * is not UTF-8 is shown as "\\xNN". g may be NULL (no names, no trace).
 * Returns AD_ERR_NULL, AD_ERR_ARG (not a tensor, another context's graph,
 * or a flag other than these two), AD_ERR_STATE (root from a reset tape),
 * AD_ERR_OOM or AD_ERR_IO (f is flushed, so a write that fails then
 * counts); never changes a tensor. */
AD_API ad_status ad_graph_dot(ad_graph *g, FILE *f, ad_tensor *root, int flags);

/* ---------------------------------- end of graph dumps and traces */

#ifdef __cplusplus
}
#endif
#endif /* AD_H */
