/** @file
 * nn_io.h: file I/O for the nn layer: IDX data sets and safetensors
 * checkpoints.
 *
 * Overview
 *   nn_idx_load reads an IDX file (the format of MNIST), raw or gzip'd, into
 *   a persistent tensor. nn_checkpoint_save / nn_checkpoint_load write and
 *   read named tensors in the safetensors format, which PyTorch, NumPy and
 *   JAX users can read and write with the `safetensors` package:
 *
 *   @code{.unparsed}
 *     8 bytes   N, the header length, little-endian unsigned
 *     N bytes   JSON: {"name": {"dtype": "F32", "shape": [2,3],
 *                                "data_offsets": [begin, end]}, ...,
 *                      "__metadata__": {"key": "value", ...}}  (optional)
 *     the rest  the data buffer: each tensor's elements row-major,
 *               little-endian, at [begin, end) relative to the buffer start
 *   @endcode
 *
 * Worked example: save two parameters, then load them back
 *
 *   @code
 *   const char *names[2] = {"0.weight", "0.bias"};
 *   ad_tensor *params[2] = {w, b};
 *   if (nn_checkpoint_save(ctx, "model.safetensors", 2, names, params) != AD_OK ||
 *       nn_checkpoint_load(ctx, "model.safetensors", 2, names, params) != AD_OK)
 *     fprintf(stderr, "%s\n", ad_last_error(ctx));
 *
 *   ad_tensor *x = nn_idx_load(ctx, "data/mnist10k-images-idx3-ubyte.gz",
 *                              AD_F32, 1.0 / 255);  // [10000,28,28] in [0,1]
 *   @endcode
 *
 * Errors
 *   Every function returns an ad_status (or NULL) and records a message with
 *   ad_set_error that names the file and what is wrong, e.g.
 *   "checkpoint model.st: tensor '0.weight' has shape [64,784], expected
 *   [784,64]". Bad input never crashes, aborts or exits. As everywhere in
 *   the engine, a new failure replaces the message of an earlier one.
 *
 * Portability
 *   POSIX (open, fsync, rename) and flock(2) (Linux, the BSDs, macOS).
 *   Files are little-endian on every host.
 */
#ifndef NN_IO_H
#define NN_IO_H

#include "ad.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef NN_API
#if defined(_WIN32) && defined(NN_BUILDING_DLL)
#define NN_API __declspec(dllexport)
#elif defined(__GNUC__)
#define NN_API __attribute__((visibility("default")))
#else
#define NN_API
#endif
#endif

/* ------------------------------------------------------------------- IDX */

/** Reads an IDX file into a new persistent tensor (free with ad_tensor_free).
 * The file may be raw or gzip'd: gzip is recognized by its magic bytes
 * 1f 8b, not by the name; gzip members one after the other are read as one
 * stream (as gzip -d does), and any other byte after the last member is
 * refused, as bytes after the data of a raw file are. Only unsigned-byte
 * data (type code 0x08) is supported. dtype AD_F32 or AD_F64 gives byte *
 * scale (e.g. 1/255.), AD_I32 the byte values as integers (scale is
 * ignored). The shape is the file's
 * dims (1..AD_MAX_DIMS of them).
 * Returns NULL and records AD_ERR_NULL (NULL path), AD_ERR_ARG (bad dtype,
 * a float dtype with a scale that is not finite),
 * AD_ERR_IO (cannot open or read), AD_ERR_FORMAT (bad magic, unsupported
 * type code, too many dims, dims that overflow or do not match the amount
 * of data, a 0 among dims whose others multiply to more elements than a
 * tensor may have, truncated file, corrupt gzip stream, bytes after the last
 * gzip member) or AD_ERR_OOM. */
NN_API ad_tensor *nn_idx_load(ad_ctx *ctx, const char *path, ad_dtype dtype, double scale);

/* ----------------------------------------------------------- checkpoints */

/** Saves n tensors under names (unique, non-empty, valid UTF-8, not
 * "__metadata__") to path in the safetensors format: AD_F32, AD_F64 and
 * AD_I32 are written as "F32", "F64" and "I32", in the given order, with
 * the header padded with spaces to a multiple of 8 bytes.
 * The save is atomic: everything is validated first, then written to a
 * temporary file in path's directory, "<path>.tmp.<pid>.<16 hex digits>"
 * (path's last component cut to its first 200 bytes, so that any name of
 * up to 255 bytes can be saved), flushed, fsync'ed and renamed over path.
 * On any failure the temporary file is removed and an existing file at
 * path is left untouched; the new file gets the permission bits of the
 * file it replaces. n may be 0 (an empty checkpoint). A path that is a
 * symbolic link is written through, as torch.save writes through one: the
 * file the link points to (through further links; a name not there yet is
 * created) is the one replaced, its temporary file made in its folder, and
 * the link stays (a loop of links is AD_ERR_IO; messages name both,
 * "x.st (a link to runs/3/x.st)"). Unlike torch.save, which overwrites
 * the file in place, a save replaces it with a new file: it needs write
 * permission on the file's folder, a hard link to the old file keeps the
 * old contents, only the permission bits carry over (not the owner, ACLs
 * or extended attributes), and a link changed while the save runs may
 * leave the new file at its old target. A path that is (or links to) a
 * device, FIFO or socket is AD_ERR_IO: it is never replaced by a file.
 * The writer holds an exclusive flock(2) on its temporary file until the
 * rename. A process killed while saving leaves its file behind, unlocked:
 * the next save or load of the same path removes every such file of path
 * whose lock it can take (best effort, silently), and leaves those of live
 * writers (lock held) and those named with the caller's own process id.
 * Returns AD_OK, or AD_ERR_NULL / AD_ERR_ARG (bad arguments: nothing is
 * written), AD_ERR_IO (could not create, write or rename the file) or
 * AD_ERR_OOM. */
NN_API ad_status nn_checkpoint_save(ad_ctx *ctx, const char *path, int n, const char *const *names,
                                    ad_tensor *const *tensors);

/** nn_checkpoint_save plus n_meta string pairs stored in the header's
 * "__metadata__" object (keys unique and non-empty; keys and values valid
 * UTF-8). With n_meta == 0 no "__metadata__" is written. */
NN_API ad_status nn_checkpoint_save_meta(ad_ctx *ctx, const char *path, int n,
                                         const char *const *names, ad_tensor *const *tensors,
                                         int n_meta, const char *const *meta_keys,
                                         const char *const *meta_values);

/** How a tensor is stored in a checkpoint file. */
typedef enum nn_store {
  NN_STORE_NATIVE = 0, /**< as its own dtype: "F32", "F64" or "I32" */
  NN_STORE_I64 = 1     /**< as "I64" (PyTorch's int64, e.g. BatchNorm's
                          num_batches_tracked), which the engine lacks: the
                          tensor (any dtype) holds whole numbers */
} nn_store;

/** nn_checkpoint_save_meta with a storage choice per tensor: stores[i] (the
 * array may be NULL: all native) says how tensors[i] is written. With
 * NN_STORE_I64 each element must be a whole number in the int64 range
 * (always true of an AD_I32 tensor), else AD_ERR_ARG naming the tensor,
 * the element and its value, and nothing is written. An unknown store is
 * AD_ERR_ARG. */
NN_API ad_status nn_checkpoint_save_as(ad_ctx *ctx, const char *path, int n,
                                       const char *const *names, ad_tensor *const *tensors,
                                       const nn_store *stores, int n_meta,
                                       const char *const *meta_keys,
                                       const char *const *meta_values);

/** nn_checkpoint_load with a storage choice per tensor (stores may be NULL:
 * all native). A tensor with NN_STORE_I64 accepts an "I64" entry, whose
 * values are converted to its dtype, or an entry of its own dtype (read as
 * nn_checkpoint_load does). The conversion is exact or refused: a value
 * outside [-2^53, 2^53] for AD_F64, [-2^24, 2^24] for AD_F32, or the int32
 * range for AD_I32 fails the whole load with AD_ERR_FORMAT naming the file,
 * the tensor, the element and the value. An unknown store is AD_ERR_ARG. */
NN_API ad_status nn_checkpoint_load_as(ad_ctx *ctx, const char *path, int n,
                                       const char *const *names, ad_tensor *const *tensors,
                                       const nn_store *stores);

/** Loads the n named tensors of the file at path into the existing tensors
 * tensors[i] (persistent, any shape). For each, in order, the entry must be
 * present and have the tensor's dtype and shape; the first mismatch is
 * reported. Entries of the file that are not asked for are ignored (they
 * may have dtypes this engine lacks, such as "F16" or "I64"; to read an
 * "I64" entry, see nn_checkpoint_load_as).
 * The whole file structure is checked: header length, strict JSON, known
 * keys, data_offsets inside the data buffer and consistent with dtype and
 * shape, no overlaps or gaps between tensors, no duplicate names, no empty
 * tensor name or metadata key (nn_checkpoint_save writes none either; the
 * message names the file and the tensor's position in the header).
 * All-or-nothing: every check and every read happens before any tensor is
 * written, so on error all tensors keep their old values.
 * First removes the temporary files that killed saves of path left (see
 * nn_checkpoint_save).
 * Returns AD_OK, or AD_ERR_NULL / AD_ERR_ARG (bad arguments), AD_ERR_IO
 * (cannot open or read), AD_ERR_FORMAT (corrupt or truncated file),
 * AD_ERR_NOTFOUND (a name is missing), AD_ERR_DTYPE, AD_ERR_SHAPE or
 * AD_ERR_OOM. */
NN_API ad_status nn_checkpoint_load(ad_ctx *ctx, const char *path, int n, const char *const *names,
                                    ad_tensor *const *tensors);

/** One tensor entry of a checkpoint header. */
typedef struct nn_checkpoint_entry {
  const char *name;           /**< the tensor's name */
  const char *dtype_name;     /**< as in the file: "F32", "I64", "BF16", ... */
  bool has_dtype;             /**< true when dtype_name is F32, F64 or I32 */
  ad_dtype dtype;             /**< valid when has_dtype */
  int ndim;                   /**< the number of dimensions */
  int64_t shape[AD_MAX_DIMS]; /**< the first ndim entries are the shape */
  uint64_t offset;            /**< data_offsets[0], relative to the data buffer */
  uint64_t nbytes;            /**< data_offsets[1] - data_offsets[0] */
} nn_checkpoint_entry;

/** One "__metadata__" pair. */
typedef struct nn_checkpoint_meta {
  const char *key;   /**< the key */
  const char *value; /**< its value */
} nn_checkpoint_meta;

/** The parsed header of a checkpoint: entries and metadata in file order. */
typedef struct nn_checkpoint_info {
  int n;                              /**< the number of entries */
  const nn_checkpoint_entry *entries; /**< n tensor entries */
  int n_meta;                         /**< the number of metadata pairs */
  const nn_checkpoint_meta *meta;     /**< n_meta pairs */
  uint64_t header_bytes;              /**< N, the JSON header length */
  uint64_t data_bytes;                /**< length of the data buffer */
} nn_checkpoint_info;

/** Reads and validates the header of the checkpoint at path (the same checks
 * as nn_checkpoint_load, without reading any tensor). Returns a new info,
 * owned by the caller and freed with nn_checkpoint_info_free (the context
 * must outlive it), or NULL with the error recorded. */
NN_API nn_checkpoint_info *nn_checkpoint_info_read(ad_ctx *ctx, const char *path);

/** Frees an info and every string in it. NULL is a no-op. */
NN_API void nn_checkpoint_info_free(nn_checkpoint_info *info);

/** The entry named name, or NULL. */
NN_API const nn_checkpoint_entry *nn_checkpoint_info_find(const nn_checkpoint_info *info,
                                                          const char *name);

/** The metadata value for key, or NULL. */
NN_API const char *nn_checkpoint_info_meta(const nn_checkpoint_info *info, const char *key);

#ifdef __cplusplus
}
#endif
#endif /* NN_IO_H */
