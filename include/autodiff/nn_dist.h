/* nn_dist.h: data-parallel training across processes on MPI (libnn_dist).
 *
 * Overview
 *   Every process (rank) holds the whole model and the whole data set;
 *   nn_fit trains each rank on its shard of every global batch and this
 *   module averages the gradients with MPI, so every rank takes the same
 *   optimizer step: the one a single process takes on the global batch
 *   (see nn_dist_ops in nn.h). Built only with meson -Dmpi=enabled|auto
 *   and an MPI library (Open MPI is tested; MPICH should build); libnn and
 *   libautodiff never link MPI. Link with pkg-config nn_dist. Guide:
 *   docs/distributed.md.
 *
 *   - Start-up (nn_dist_sync, called by nn_fit): every rank checks that
 *     its parameter, buffer and optimizer-state names, dtypes and shapes
 *     are rank 0's (else every rank fails with a message naming the first
 *     difference), then takes rank 0's values.
 *   - Each step: gradients are scaled by the shard's share of the global
 *     batch and summed in buckets: parameters in reverse order, about
 *     bucket_bytes each, each bucket's reduction launched from the
 *     backward hook (ad_set_backward_hook) as soon as every op that uses
 *     its parameters has been differentiated. The ranks of one machine (a
 *     node) sum through an MPI-3 shared window (MPI_Win_allocate_shared):
 *     the backward writes each rank's gradients straight into its own
 *     segment (ad_tensor_set_grad_buffer), the ranks sum each bucket over
 *     the node's segments in rank order into one reduced buffer of the
 *     node (in chunks they claim as they come free, a rank ahead in its
 *     backward taking more; across nodes, in one slice per rank), and
 *     every rank's gradients then are that buffer (see private_gradients).
 *     Across nodes (of equal rank counts) each
 *     slice is then allreduced among the ranks of that local rank
 *     (MPI_Iallreduce). Without a shared window (MPI cannot give one, its
 *     backing directory has no room for it, no_shm, nodes of unequal size)
 *     each bucket is packed into a flat buffer and allreduced over all
 *     ranks instead.
 *     Non-blocking collectives are driven with MPI_Test while backward goes
 *     on. After the backward the rest is waited for, a status is exchanged
 *     (a rank that failed makes every rank return its message), and the
 *     model's buffers (BatchNorm's running statistics) are broadcast from
 *     rank 0. The sums and rank 0's buffers are written over the rank's
 *     own as nn's clipping writes gradients: a backward through an op
 *     recorded before, which read the rank's own values, returns
 *     AD_ERR_STATE (see ad_tensor_set) instead of using the new ones.
 *     With shard_optimizer, on the shared-memory path, the optimizer step
 *     is then sharded: each rank of a node updates only its slices of the
 *     parameters, which are one copy per node.
 *   - Deterministic mode: on one node the shared-memory sum is already in
 *     rank order; across nodes the buckets are gathered (MPI_Iallgather)
 *     and every rank sums the ranks' contributions in rank order itself,
 *     so the bits depend neither on timing nor on the MPI library's
 *     algorithms (at the cost of size times the memory and traffic).
 *
 * Worked example (run with: mpirun -np 2 ./train)
 *
 *   if (nn_dist_init(&argc, &argv) != AD_OK) return 1;
 *   ad_ctx *ctx = ad_ctx_new();
 *   ... build model m, optimizer opt, data x, y (the same on every rank) ...
 *   nn_dist *d = nn_dist_new(ctx, NULL);
 *   nn_fit_opts fo = {.epochs = 5, .batch_size = 256, .dist = nn_dist_fit_ops(d)};
 *   if (nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, NULL) != AD_OK)
 *     fprintf(stderr, "rank %d: %s\n", nn_dist_rank(d), ad_last_error(ctx));
 *   nn_dist_save(d, m, opt, "model.safetensors");  // rank 0 writes
 *   nn_dist_free(d); ... free the rest ...
 *   nn_dist_finalize();
 *
 * Errors
 *   As in nn.h: an ad_status, the message on the context. A collective
 *   function (marked so) must be called by every rank in the same order;
 *   it returns the same status on every rank.
 *
 * Threading
 *   MPI is initialised with MPI_THREAD_FUNNELED: only the thread that
 *   called nn_dist_init calls MPI; the engine's pool threads never do.
 */
#ifndef NN_DIST_H
#define NN_DIST_H

#include "nn.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Initialises MPI (MPI_Init_thread, MPI_THREAD_FUNNELED) unless it is
 * already; argc and argv may be NULL. Returns AD_OK, or AD_ERR_STATE when
 * MPI cannot be initialised or gives less than funneled threading (the
 * reason is printed to stderr: there is no context yet), also once MPI
 * is finalised (it cannot start again). */
NN_API ad_status nn_dist_init(int *argc, char ***argv);

/** Finalises MPI if nn_dist_init initialised it and nothing finalised it
 * since. Free every nn_dist first. */
NN_API void nn_dist_finalize(void);

/** Options of nn_dist_new. All-zero means the defaults. Every rank should
 * pass the same; deterministic, no_shm and private_gradients set on any
 * rank count for every rank, shard_optimizer only when every rank sets it, and the largest
 * ranks_per_node for every rank. */
typedef struct nn_dist_opts {
  size_t bucket_bytes; /**< gradient bytes per allreduce; default 4 MiB. A
                          parameter larger than it is a bucket of its own */
  bool deterministic;  /**< sum in rank order on every rank (see above) */
  bool no_overlap;     /**< launch every bucket after the backward instead of
                          from the hook (for measuring the overlap) */
  bool no_shm;         /**< never sum through shared memory: MPI collectives
                          only, as between machines (for measuring and testing) */
  int ranks_per_node;  /**< testing and tuning: > 0 treats every group of this
                          many ranks of one machine as a node of its own, so
                          that one machine runs the path between nodes;
                          0 (default): the machines as MPI sees them */
  bool shard_optimizer; /**< on the shared-memory path, each rank of a node
                          updates only the elements of its slices (the
                          optimizer's sweep is cut n ways, as ZeRO stage 1)
                          and the ranks then share the parameters; same bits
                          as the whole step. From nn_dist_sync (which nn_fit
                          calls) to nn_dist_free the parameters of the
                          synced model are one copy per node in shared
                          memory (ad_tensor_set_data_buffer; where MPI or
                          the tape does not allow it, the updated slices are
                          exchanged instead. An optimizer over some of the
                          model's parameters, in any order and any number of
                          parameter groups, is sharded too; from a step that
                          cannot be, e.g. of an optimizer over a tensor
                          outside the model (whose steps are whole on every
                          rank), each rank has its own copy
                          again until the next nn_dist_sync): a rank that changes a
                          parameter changes it for every rank of its node,
                          so change them on rank 0 and call nn_dist_sync,
                          or load with nn_dist_load. nn_dist_free gives each
                          rank its own copy back and resets the tape (its
                          views of the parameters read the shared memory). Each rank holds the optimizer
                          state of its slices only until it is gathered: at
                          the end of every epoch of nn_fit and when a step
                          fails (so it is whole when nn_fit returns and in
                          on_epoch_end), and by nn_dist_sync and
                          nn_dist_save with that optimizer. Code that drives
                          nn_dist_fit_ops itself calls nn_dist_sync(d, m,
                          opt) before it reads opt's state, or before it
                          frees opt if it wants that state whole first (an
                          optimizer freed after sharded steps, or its
                          parameters, has its slices dropped: nn_dist
                          knows its state tensors by serial and never
                          reads a freed optimizer): a sync with
                          another optimizer (or NULL) takes the first one
                          for freed and forgets its slices, after which
                          each rank's state is current only in its own.
                          Off by default: with 2 ranks of the
                          wide MLP it measured within noise of the whole step
                          (docs/distributed.md) */
  bool private_gradients; /**< on the shared-memory path with several ranks
                          on a node, the backward writes each gradient
                          straight into the rank's segment of the window and
                          every rank then reads the reduced gradients from
                          one buffer of the node, shared (no packing, no
                          copying back). Until the next step's grad_begin
                          those gradients are then the node's: read them,
                          but do not write them, nor run a backward that
                          reaches the parameters before zeroing them (it
                          would add into them). The optimizer's clip_value
                          and clip_norm work on a private copy made by
                          nn_dist_ops.step. Set this on any rank to give
                          every rank its own copy after each reduction
                          instead, for code that changes gradients in place
                          between grad_end and the step */
} nn_dist_opts;

typedef struct nn_dist nn_dist;

/** A handle over all the processes of MPI_COMM_WORLD (a duplicate of it),
 * reporting errors on ctx. Collective: it also finds the nodes (ranks that
 * share memory, MPI_COMM_TYPE_SHARED). opts may be NULL. NULL with
 * AD_ERR_STATE (MPI not initialised: call nn_dist_init; or finalised) or
 * AD_ERR_OOM; a rank out of memory (or with a NULL ctx) makes it NULL on
 * every rank, the others' message "dist: rank R failed: nn_dist_new: out
 * of memory".
 * Free with nn_dist_free before nn_dist_finalize. */
NN_API nn_dist *nn_dist_new(ad_ctx *ctx, const nn_dist_opts *opts);

/** Frees the handle (collective: frees its communicator and windows). The
 * gradients, and with shard_optimizer the parameters, that lived in its
 * shared memory move back to each rank's own (values kept), into memory
 * set aside when they moved in: it allocates nothing and cannot fail. When
 * any moved, the context's tape is reset (its views of them read that
 * memory). NULL is a no-op. */
NN_API void nn_dist_free(nn_dist *d);

/** This process's rank and the number of processes; 0 and 1 for NULL. */
NN_API int nn_dist_rank(const nn_dist *d);
NN_API int nn_dist_size(const nn_dist *d);

/** The interface nn_fit uses (nn_fit_opts.dist), owned by d. Code that
 * drives it itself calls grad_end after every grad_begin, also after an
 * error (grad_end is where the ranks agree on the step's status); a
 * grad_begin before the last one's grad_end is AD_ERR_STATE. With more
 * than one rank (one has nothing to reduce: its steps do not look at the
 * list), a step over a list holding a tensor of another context than d's
 * (AD_ERR_ARG) or a freed one (AD_ERR_STATE, as long as the freed header
 * is told apart: see ad_tensor_free) fails on every rank, that rank's
 * message naming the parameter ("dist: parameter 0 'W' is on another
 * context than the nn_dist"). */
NN_API const nn_dist_ops *nn_dist_fit_ops(nn_dist *d);

/** Checks that every rank's model m (parameters and buffers) and optimizer
 * opt (may be NULL on every rank) have the same names, dtypes and shapes
 * in the same order as rank 0's, and the same parameters frozen (no
 * requires_grad: "... [10,64] frozen on rank R") and the same entries
 * tied (one tensor listed twice: "... [4,4] tied to parameter 0"), and
 * opt the same settings (nn_optimizer_config but lr, which is state, and
 * the momentum or beta1 a onecycle cycles, which follows its step; those
 * of every parameter group, nn_optimizer_add_param_group: "parameter
 * group 1: momentum 0, ..."; the groups' rates are state) and
 * schedule (nn_optimizer_schedule_ext2 but lr_lambda, an address that
 * cannot be compared between processes), then broadcasts rank 0's values of all
 * of them (the learning rate and the schedule's epoch included).
 * Collective. On a difference every rank returns AD_ERR_SHAPE with the
 * first one, of the lowest rank that differs: "dist: rank R differs
 * from rank 0: parameter 2 '1.weight' f32 [10,64] on rank R, parameter 2
 * '1.weight' f32 [10,32] on rank 0" (or the counts, "3 parameters, 0
 * buffers, 7 optimizer state tensors", a buffer, an optimizer state
 * tensor, "optimizer settings: momentum 0.5, ..." or "learning-rate
 * schedule: ..."). A NULL m on some rank: every rank fails, the others with "dist:
 * rank R failed: dist_sync: model is NULL"; so with a model on another
 * context than d's (AD_ERR_ARG, the message also on the model's context).
 * nn_fit calls it first. Steps through nn_dist_fit_ops over m's
 * parameters then broadcast m's buffers from rank 0 (none once m is
 * freed). With
 * the parameters in shared memory (nn_dist_opts.shard_optimizer) it gives
 * them back before receiving, and so resets the context's tape, whose
 * views of them read that memory (as nn_dist_free). The next step builds
 * the gradient buckets again on every rank. Code that drives
 * nn_dist_fit_ops itself may step over any list object: each rank judges
 * alone whether a step's parameters are its last step's, by the tensors
 * themselves (ad_tensor_serial, so a tensor made in a freed one's header
 * is another; which list object holds them does not matter) with their
 * sizes and dtypes, so ranks that run the same code judge alike. A model
 * freed (with its optimizer) and another made in its place without
 * nn_dist_sync has its steps reduced and applied alike on every rank,
 * each rank with its own copy of the parameters (with shard_optimizer, the
 * sharded state of the freed optimizer is dropped, not gathered); but its
 * parameters do not
 * take rank 0's values, nor are its buffers broadcast, until nn_dist_sync:
 * ranks that made it differently stay different. Ranks that step over
 * different tensors (replaced on some ranks only) disagree and may wait
 * for each other for ever. */
NN_API ad_status nn_dist_sync(nn_dist *d, nn_model *m, nn_optimizer *opt);

/** Sums n doubles over the ranks, in place (in rank order in the
 * deterministic mode). Collective, also with n = 0 (which sums nothing).
 * Every rank must pass the same n: where they differ, every rank returns
 * AD_ERR_SHAPE ("dist_sum: the ranks pass different n (from 2 to 3) ...")
 * and v is unchanged. A NULL v (with n > 0) on some rank: AD_ERR_NULL on
 * every rank, the others' message "dist: rank R failed: dist_sum: v is
 * NULL"; a negative n so, with AD_ERR_ARG. */
NN_API ad_status nn_dist_sum(nn_dist *d, double *v, int n);

/** nn_model_save on rank 0 only (atomically, as nn_model_save), its status
 * and message then given to every rank. Collective. */
NN_API ad_status nn_dist_save(nn_dist *d, const nn_model *m, const nn_optimizer *opt,
                              const char *path);

/** nn_model_load on rank 0 (so the file need only be on rank 0's machine),
 * then rank 0's state broadcast as by nn_dist_sync. Collective; every
 * rank returns rank 0's status and message. */
NN_API ad_status nn_dist_load(nn_dist *d, nn_model *m, nn_optimizer *opt, const char *path);

/** What the gradient reductions did since nn_dist_new (or the last reset). */
typedef struct nn_dist_stats {
  int64_t steps;       /**< reductions (grad_end calls) */
  int64_t buckets;     /**< buckets per step (the last step's) */
  int64_t bytes;       /**< gradient bytes each rank reduced, in total */
  int64_t overlapped;  /**< buckets launched from the backward hook */
  double wait_seconds; /**< time spent in grad_end: communication that
                          backward did not hide, plus the status exchange */
  int nodes;           /**< nodes the ranks span (machines, or groups of
                          nn_dist_opts.ranks_per_node) */
  bool shared_memory;  /**< the last step summed the ranks of each node
                          through an MPI-3 shared window (else MPI collectives) */
  int64_t sharded_steps; /**< optimizer steps cut between the ranks of a node
                          (nn_dist_opts.shard_optimizer) */
  bool shared_params;    /**< with shard_optimizer on a node of several
                          ranks: the parameters are one copy per node in
                          shared memory, now (see nn_dist_opts) */
} nn_dist_stats;

/** The counters; reset zeroes them after reading (stats may be NULL). */
NN_API void nn_dist_get_stats(nn_dist *d, nn_dist_stats *stats, bool reset);

#ifdef __cplusplus
}
#endif
#endif /* NN_DIST_H */
