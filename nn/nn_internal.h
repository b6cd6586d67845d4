/* nn_internal.h: private structures shared by the nn sources. Only the
 * public ad_ API (ad.h) is used underneath. */
#ifndef NN_INTERNAL_H
#define NN_INTERNAL_H

#include "ad_ext.h"
#include "nn.h"

#include <string.h>

/* The one way nn entry points report a NULL argument: records
 * "<fn>: <what> is NULL" on ctx and returns AD_ERR_NULL. Through
 * ad_set_null_error, so when an error is already recorded the NULL is taken
 * for its consequence (a chain of calls: nn_model_forward(m, ad_relu(...))
 * after a failed op) and that message is kept. ctx may be NULL. */
ad_status nn_null_arg(ad_ctx *ctx, const char *fn, const char *what);

/* Refuses an rng in the all-zero state, which ad_rng_seed never gives (an
 * ad_rng declared "= {0}" and not seeded; its draws are all 0): records
 * "<fn>: rng is not seeded ..." (AD_ERR_ARG) and returns false, as
 * ad_rand does. rng is not NULL. */
static inline bool nn_rng_seeded(ad_ctx *ctx, const char *fn, const ad_rng *rng) {
  if (rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3]) return true;
  ad_set_error(ctx, AD_ERR_ARG,
               "%s: rng is not seeded (its state is all zeros, which draws 0 for ever): "
               "call ad_rng_seed first",
               fn);
  return false;
}

/* Checks a tensor that an nn entry point reads itself (its data, or its
 * shape to build other tensors) before any op sees it: not NULL, live, of
 * ctx, and not a temporary from a tape that was reset; the same errors and
 * messages as an op's inputs get ("<fn>: <what> was freed", "... belongs
 * to another context", "... is from a tape that was reset"). ctx must not
 * be NULL. */
ad_status nn_check_input(ad_ctx *ctx, const char *fn, const char *what, const ad_tensor *t);

/* The one way nn entry points that reset the tape while reading t refuse a
 * temporary (an op's result, freed by the reset): records "<fn>: <what> is
 * a temporary ..." on ctx and returns AD_ERR_ARG; AD_OK for a persistent
 * tensor or NULL t. Checks t with nn_check_input first (a freed tensor
 * would be read as no rows of data). */
ad_status nn_check_persistent(ad_ctx *ctx, const char *fn, const char *what, const ad_tensor *t);

/* Marks p as a layer's or a model's own list: the public nn_params_free
 * then refuses it (AD_ERR_STATE), and its owner frees it with
 * nn_params_release, which frees any list. */
void nn_params_hold(nn_params *p);
void nn_params_release(nn_params *p);
/* Drops the entries of p from index n on (those added since its count was
 * n), freeing the tensors they own: how a caller that added several
 * entries undoes them when a later step fails. */
void nn_params_truncate(nn_params *p, int n);
/* Frees layer l whether or not a model adopted it (nn_model_free's way;
 * the public nn_layer_free refuses an adopted layer). */
void nn_layer_destroy(nn_layer *l);

/* The context of m, else that of opt's parameters; NULL if neither has
 * one (entry points given a NULL model still report to opt's context). */
ad_ctx *nn_ctx_of(const nn_model *m, const nn_optimizer *opt);

/* Copies s into memory from the context's allocator (free with nn_strfree). */
char *nn_strdup(ad_ctx *ctx, const char *s);
void nn_strfree(ad_ctx *ctx, char *s);

/* Grows *arr (elements of size es, capacity *cap) to hold need elements.
 * Returns false (AD_ERR_OOM recorded) on failure. */
bool nn_grow(ad_ctx *ctx, void **arr, int *cap, int need, size_t es);

/* An arena (tape-lifetime) float tensor of shape with uninitialized data
 * that the caller fills; not recorded. NULL on error. */
ad_tensor *nn_tmp_tensor(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape);

/* layers_cnn1d.c: adaptive average pooling of the last two axes of x (3-D
 * or 4-D, float, H and W >= 1) to oh x ow, PyTorch's windows, as a
 * composite of public ops; NULL on error. */
ad_tensor *nn_adaptive_avg2d(ad_ctx *ctx, ad_tensor *x, int64_t oh, int64_t ow);
/* Adaptive max pooling of the last two axes of x (3-D or 4-D) to oh x ow
 * (layers_cnn1d.c), the composite of nn.AdaptiveMaxPool2d. */
ad_tensor *nn_adaptive_max2d(ad_ctx *ctx, ad_tensor *x, int64_t oh, int64_t ow);
/* The indices of adaptive max pooling of the last nax (1..3) axes of a
 * checked float x to n[0..nax-1] (PyTorch's return_indices=True): per
 * window the flat index in its plane of the first maximum, or the last
 * NaN, in row-major order; an AD_I32 arena tensor (layers_cnn1d.c). NULL
 * with AD_ERR_SHAPE for a plane above 2^31 elements, or AD_ERR_OOM. */
ad_tensor *nn_adaptive_max_indices(ad_ctx *ctx, ad_tensor *x, int nax, const int64_t *n);
/* The indices of nn_max_pool_indices for a max pooling layer of
 * layers_cnn.c, layers_cnn1d.c and layers_pool3d.c; *mine is false (and
 * NULL returned, nothing recorded) when l is not one of the file's max
 * pooling layers. x is checked (not NULL, live). */
ad_tensor *nn_pool2d_layer_indices(nn_layer *l, ad_tensor *x, bool *mine);
ad_tensor *nn_pool1d_layer_indices(nn_layer *l, ad_tensor *x, bool *mine);
ad_tensor *nn_pool3d_layer_indices(nn_layer *l, ad_tensor *x, bool *mine);

/* checkpoint.c: writes len bytes of buf to path as checkpoints are
 * written (a locked temporary file next to path, fsync, rename over path).
 * Returns AD_OK, or on ctx "<what> <path>: <reason>" with AD_ERR_OOM (the
 * allocator refused) or AD_ERR_IO (path is a device, FIFO or socket, which
 * is not replaced; or a system call's error); path is then left as it
 * was. */
ad_status nn_write_file_atomic(ad_ctx *ctx, const char *what, const char *path, const void *buf,
                               size_t len);

/* fit.c: the context of a history, and the best epoch of early stopping. */
ad_ctx *nn_history_ctx(const nn_history *h);
void nn_history_set_best_epoch(nn_history *h, int epoch);

/* history.c: adds the gradient norm of each of p's parameters to norms[i],
 * their global norm to norms[np] and its maximum into norms[np + 1]
 * (np = nn_params_count(p)). */
void nn_grad_norms_add(const nn_params *p, double *norms);

/* history.c: early stopping in nn_fit (nn_early_stopping). */
typedef struct nn_stopper {
  const char *monitor; /* NULL: off */
  bool max, restore;
  double best, min_delta;
  int patience, wait;
  unsigned char *snap; /* the best epoch's parameters and buffers */
  size_t bytes;
} nn_stopper;

/* Sets s up from es for a run recording h; AD_ERR_ARG (a monitor h does
 * not record, bad numbers) or AD_ERR_OOM (the copy of the weights) with
 * the message on h's context. The caller frees s->snap (s->bytes). */
ad_status nn_stopper_init(nn_stopper *s, nn_model *m, const nn_history *h,
                          const nn_early_stopping *es);

/* After epoch e: notes an improvement (the best epoch in h, and a copy of
 * the weights); true when training should stop. */
bool nn_stopper_update(nn_stopper *s, nn_model *m, nn_history *h, int e);

/* Copies m's parameters and buffers into buf (save) or back from it;
 * returns the bytes they take (buf NULL: only counts). */
size_t nn_model_state_copy(nn_model *m, unsigned char *buf, bool save);

/* Writes buf (nn_model_state_copy's) back into m's parameters and buffers,
 * noting the writes first (ad_tensor_mark_modified: a backward through
 * ops recorded before then refuses); AD_ERR_OOM, nothing written, when a
 * note cannot be kept. */
ad_status nn_model_state_restore(nn_model *m, const unsigned char *buf);

/* Seconds from a monotonic clock. */
double nn_now(void);

/* The context of a parameter list. */
ad_ctx *nn_params_ctx(const nn_params *p);

/* Puts "<prefix>: " (printf-formatted) before the error recorded on ctx,
 * keeping its status: for an entry point that failed in a call it made,
 * whose message names that call only ("zeros: shape ... is too large").
 * Nothing when no error is recorded, or when the message already begins
 * with "<prefix>:" (an inner call said it). The old message is copied
 * before it is rewritten; the result is cut short, NUL-terminated, when it
 * does not fit the context's message; nothing is allocated. ctx may be
 * NULL. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void nn_error_prefix(ad_ctx *ctx, const char *fmt, ...);

/* The prefix of a constructor fn (its public name, "nn_dense_new") that
 * failed making the tensor pfx name (pfx: the path of a submodule,
 * "self_attn.", or NULL) of shape: "<fn>: <pfx><name> [d0, d1]: <message>"
 * (nn_error_prefix). */
void nn_error_tensor(ad_ctx *ctx, const char *fn, const char *pfx, const char *name, int ndim,
                     const int64_t *shape);

/* A layer's new parameter: a persistent tensor of dtype and shape, filled
 * by init (NN_INIT_ZEROS leaves it as made, drawing nothing), added to list
 * under name, which owns it from then on (also when adding fails). The
 * tensor, or NULL with the error recorded, named by nn_error_tensor after
 * the constructor fn and pfx name (nn_param_new: no pfx). */
ad_tensor *nn_param_new_at(nn_params *list, const char *fn, const char *pfx, const char *name,
                           ad_dtype dtype, int ndim, const int64_t *shape, nn_init init,
                           ad_rng *rng);
ad_tensor *nn_param_new(nn_params *list, const char *fn, const char *name, ad_dtype dtype, int ndim,
                        const int64_t *shape, nn_init init, ad_rng *rng);

/* An embedding layer's "weight" [num, dim] (nn.Embedding's, EmbeddingBag's):
 * init (NN_INIT_DEFAULT: PyTorch's N(0, 1)) drawn from rng, then row pad
 * zeroed (pad < 0: none) as PyTorch's reset_parameters does; added to list
 * as by nn_param_new for constructor fn. The tensor, or NULL with the error recorded. */
ad_tensor *nn_embedding_weight_new(nn_params *list, const char *fn, int64_t num, int64_t dim,
                                   ad_dtype dtype, nn_init init, int64_t pad, ad_rng *rng);

/* The index of the first entry of p (below i) that holds tensor t, or -1:
 * a tensor listed twice (tied weights) is stepped, clipped, counted and
 * penalised once, as PyTorch's module.parameters() lists it once. Costs
 * nothing for an existing entry i of a list without repeats. */
int nn_params_repeat(const nn_params *p, int i, const ad_tensor *t);

/* nn_clip_grad_norm and nn_clip_grad_value over n tensors (the checks
 * done); with dedupe a tensor met again is skipped. The gradients they
 * change are noted as written (ad_tensor_mark_modified) first; when that
 * fails (AD_ERR_OOM, recorded), nothing is changed: NaN and *st (else
 * AD_OK), or the status. */
double nn_clip_norm_tensors(ad_tensor *const *ts, int n, bool dedupe, double max_norm,
                            ad_status *st);
ad_status nn_clip_value_tensors(ad_tensor *const *ts, int n, double clip);

/* The losses' check of a prediction-like argument x (named first in
 * messages: "prediction", "input") and its target: x float, target of its
 * dtype and shape, or only its size (then viewed with x's shape). Returns
 * the target to use, or NULL with the error recorded (AD_ERR_NULL,
 * AD_ERR_STATE / AD_ERR_ARG from nn_check_input, AD_ERR_DTYPE,
 * AD_ERR_SHAPE), naming fn. */
ad_tensor *nn_loss_target(ad_ctx *ctx, const char *fn, const char *first, ad_tensor *x,
                          ad_tensor *target);

/* A loss's reduction: NN_MEAN, NN_SUM and NN_NONE, and NN_BATCHMEAN if
 * batchmean; any other is AD_ERR_ARG naming fn (NN_BATCHMEAN as
 * kl_div_loss's only). */
bool nn_loss_check_reduction(ad_ctx *ctx, const char *fn, nn_reduction red, bool batchmean);
/* The reduction (checked already) of the per-element losses l (NULL: NULL)
 * of x: l itself for NN_NONE, NN_SUM, NN_MEAN, or NN_BATCHMEAN, the sum
 * over x's first dim (a 0-d x: the sum; an empty batch: NaN). */
ad_tensor *nn_loss_reduce(ad_ctx *ctx, ad_tensor *l, nn_reduction red, const ad_tensor *x);

/* Sets the name of a layer when a model adopts it (copied). */
ad_status nn_layer_adopt(nn_layer *l, const char *name);
bool nn_layer_adopted(const nn_layer *l);

/* Text appended to a caller's buffer of n bytes at position at, cut short
 * when it does not fit (always NUL-terminated; n > 0). */
typedef struct nn_text {
  char *buf;
  size_t n, at;
} nn_text;
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void nn_text_add(nn_text *t, const char *fmt, ...);
/* v as Python's repr writes a float ("0.5", "1e-05", "-1.0", "inf"), so
 * that settings read as PyTorch's module reprs. */
void nn_text_num(nn_text *t, double v);
/* "True" or "False", Python's spelling. */
const char *nn_py_bool(bool b);

/* A layer kind defined outside layers.c (e.g. layers_norm.c): forward runs
 * it (x is not NULL); free, if not NULL, releases the state (called first
 * by nn_layer_free, while the layer's parameters and buffers still exist);
 * describe appends the layer's settings as PyTorch's extra_repr writes
 * them ("1, 32, kernel_size=(3, 3), stride=(1, 1)"), for
 * nn_layer_describe. */
typedef struct nn_layer_ops {
  ad_tensor *(*forward)(nn_layer *l, ad_tensor *x, bool training);
  void (*free)(nn_layer *l);
  void (*describe)(const nn_layer *l, nn_text *t);
} nn_layer_ops;

/* layers_embbag.c: max_norm's renormalisation (nn_embedding_renorm) of
 * the rows of w [num, dim] named by idx[0..n) (checked: in 0..num-1),
 * undoable: the changed rows' old values are kept in *u until
 * nn_renorm_finish, which puts them back when restore (a caller whose
 * later step failed) and frees them. On an error nothing was written
 * (*u is then empty; finishing it is a no-op). */
typedef struct nn_renorm_undo {
  ad_ctx *ctx;
  ad_tensor *w;
  int32_t *row; /* the changed rows */
  size_t row_bytes;
  void *old; /* their old values, rows * dim of w's dtype */
  size_t old_bytes;
  int64_t rows;
} nn_renorm_undo;
ad_status nn_renorm_apply(ad_ctx *ctx, ad_tensor *w, const int32_t *idx, int64_t n, double max_norm,
                          double p, nn_renorm_undo *u);
void nn_renorm_finish(nn_renorm_undo *u, bool restore);

/* layers.c: inverted dropout with probability p (in [0, 1); 0 returns x)
 * on float x, its mask drawn as nn_dropout_new documents from one draw of
 * rng; a call that fails takes no draw. NULL with the error recorded. */
ad_tensor *nn_dropout_apply(ad_ctx *ctx, ad_tensor *x, double p, ad_rng *rng);

/* layers_attn.c: nn_multihead_attention_new_ext for constructor fn, its
 * failures naming its tensors pfx name (a submodule's path, "self_attn.",
 * or NULL) as nn_param_new_at does. */
nn_layer *nn_mha_new_at(ad_ctx *ctx, const char *fn, const char *pfx, int64_t embed_dim,
                        int64_t num_heads, ad_rng *rng, const nn_mha_opts_ext *opts);

/* layers_attn.c: the generator of a multi-head attention layer's dropout
 * draws (for a layer built on it that must undo a failed call's draws);
 * NULL for another kind of layer. */
ad_rng *nn_mha_rng(nn_layer *l);

/* Records y's shape as the layer's last output (nn_layer_output_shape);
 * for the entry points that run a layer without nn_layer_forward. */
void nn_layer_note_output(nn_layer *l, const ad_tensor *y);

/* A new layer of kind (copied) run by ops (static storage) with state.
 * NULL on OOM, and then the caller still owns state. */
nn_layer *nn_layer_new_ext(ad_ctx *ctx, const char *kind, const nn_layer_ops *ops, void *state);
/* nn_layer_new_ext with a state of size bytes copied from init into the
 * context's memory (ops' free releases it with ad_free and that size).
 * NULL on OOM, nothing then allocated. */
nn_layer *nn_layer_new_copy(ad_ctx *ctx, const char *kind, const nn_layer_ops *ops,
                            const void *init, size_t size);
void *nn_layer_state(const nn_layer *l);
/* True when l is a layer run by ops (e.g. to tell a recurrent layer). */
bool nn_layer_runs(const nn_layer *l, const nn_layer_ops *ops);
ad_ctx *nn_layer_ctx(const nn_layer *l);

/* padding.c: x's last sp axes padded in mode, in F.pad's order: pad[2k]
 * before and pad[2k + 1] after axis ndim - 1 - k, amounts >= 0 (the
 * caller's check). NULL for a NULL x; AD_ERR_SHAPE "<who>: input ..." for
 * a reflect amount not below the axis length, a circular one above it, an
 * empty axis to replicate, or an axis above 2^31 - 1 (nothing recorded on
 * the tape then); else the ops' errors. */
ad_tensor *nn_pad_spatial(ad_ctx *ctx, const char *who, ad_tensor *x, int sp, const int64_t *pad,
                          nn_padding_mode mode);
/* padding.c: x with axis axis replaced by the rows idx (an AD_I32
 * vector) of it: ad_index_select on x with axis swapped to the front, so
 * the gradient adds up at a row taken twice. NULL on error. */
ad_tensor *nn_take_axis(ad_ctx *ctx, ad_tensor *x, int axis, ad_tensor *idx);
/* losses_pair.c: torch's pairwise_distance over the last dim of a - b +
 * eps (a and b broadcast), p > 0 finite, its gradient 0 where the norm is
 * 0. NULL on error. */
ad_tensor *nn_pdist(ad_ctx *ctx, ad_tensor *a, ad_tensor *b, double p, double eps);
/* PyTorch's name of mode ("zeros", ...), NULL for a value outside the enum. */
const char *nn_padding_mode_name(nn_padding_mode mode);

/* For an f32 x, a finite setting v (named what) beyond float32's range is
 * refused with AD_ERR_ARG naming fn, as PyTorch refuses to convert it
 * ("value cannot be converted to type float without overflow"), where the
 * function would give inf or NaN; infinities and NaN pass, as PyTorch
 * converts them (the callers refuse those they must). True when v fits. */
bool nn_f32_setting_ok(ad_ctx *ctx, const char *fn, const ad_tensor *x, const char *what, double v);

/* True when x is f32 or f64; else records AD_ERR_DTYPE naming layer l
 * and x's shape ("<who>: input [2,3] must be float, got i32"). */
bool nn_layer_float_input(nn_layer *l, const ad_tensor *x);

/* "dense '2'" (kind and name) or "dense" (not in a model) into buf, for
 * error messages. */
const char *nn_layer_who(const nn_layer *l, char *buf, size_t n);

/* Whether state tensor i of opt is one that checkpoints written by earlier
 * versions lack (a parameter's step count), so nn_model_load may find it
 * missing. */
bool nn_optimizer_state_optional(const nn_optimizer *opt, int i);

/* Checks the value v of 0-d state tensor i of opt read from the checkpoint
 * at path: a step count or epoch is a whole number in [0, 2^53], a learning
 * rate finite and >= 0. AD_OK, or AD_ERR_FORMAT naming the tensor. */
ad_status nn_optimizer_state_check(const nn_optimizer *opt, int i, double v, const char *path);

/* After a load that found state tensor i only where present[i] is true
 * (nn_optimizer_state_count entries): sets each missing one as the earlier
 * versions behaved (a parameter's step count = the optimizer's). */
void nn_optimizer_state_restored(nn_optimizer *opt, const bool *present);

/* The name of the first tensor opt steps (in any of its parameter groups)
 * that is not in p, or NULL when every one is: nn_fit under data
 * parallelism sums the model's gradients only. */
const char *nn_optimizer_outside(const nn_optimizer *opt, const nn_params *p);

/* For a load from path whose header is info: AD_ERR_FORMAT, naming both
 * counts, when the checkpoint holds another number of parameter groups
 * than opt (found from the groups' rate tensors; the value of
 * "<kind>.param_groups" is checked by nn_optimizer_state_check). */
struct nn_checkpoint_info;
ad_status nn_optimizer_groups_check(const nn_optimizer *opt, const struct nn_checkpoint_info *info,
                                    const char *path);

/* Accuracy threshold nn_fit and nn_evaluate use for loss. */
double nn_loss_threshold(nn_loss_fn loss);

/* nn_batcher_next telling the epoch's end from an error: AD_OK with the
 * batch in *xb and *yb (NULL without y), AD_OK with both NULL at the
 * epoch's end, or AD_ERR_OOM (the write could not be noted; the batch
 * not taken, both NULL), AD_ERR_STATE (x or y was freed) or AD_ERR_NULL
 * (b NULL). */
ad_status nn_batcher_fetch(nn_batcher *b, ad_tensor **xb, ad_tensor **yb);

/* nn_fit_loader's sharding (nn_dist_ops): from the next epoch, l loads
 * only rows [n rank / size, n (rank + 1) / size) of each batch of n rows,
 * and nn_loader_global_rows gives the last batch's n. Ends the epoch;
 * AD_ERR_OOM for the shard's tensors (then l hands out no batch until a
 * call succeeds). */
ad_status nn_loader_shard(nn_loader *l, int rank, int size);
int64_t nn_loader_global_rows(const nn_loader *l);
/* The batch size asked for (the option's; 0 is 1), as nn_fit would use
 * it: the ranks compare it, and validation runs in batches of it. */
int64_t nn_loader_batch_size(const nn_loader *l);
/* The options it was made with, and its context. */
const nn_loader_opts *nn_loader_options(const nn_loader *l);
ad_ctx *nn_loader_ctx(const nn_loader *l);

#endif
