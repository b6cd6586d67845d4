/* fuzz_common.h: what the libFuzzer targets of fuzz/ and the corpus
 * generator share. Header-only (static functions, static state and one
 * hook); include it once per executable.
 *
 * - fuzz_ctx_init / fuzz_ctx_check_freed: one context per process, with an
 *   allocator that counts live blocks, so that each input can be checked to
 *   free everything it allocated through the context (LeakSanitizer sees
 *   the rest).
 * - fuzz_input_write / fuzz_input_remove: the readers take a path, so each
 *   input is written to a fresh file from mkstemp in $TMPDIR (or /tmp),
 *   removed after the input has run; only a crashing input leaves its file.
 * - FUZZ_CHECK: an oracle; on failure it prints what went wrong and aborts,
 *   and libFuzzer saves the input as a crash.
 * - fuzz_model_new: the model (and Adam optimizer) into which
 *   fuzz_checkpoint loads each input; gen_corpus saves it as a seed.
 * - __ubsan_default_options: a UBSan report stops the run (a crash for
 *   libFuzzer) even without UBSAN_OPTIONS. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include "ad_ext.h"
#include "nn.h"
#include "nn_io.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_CHECK(cond, ...)                                                                      \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);                     \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fprintf(stderr, "\n");                                                                       \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

/* ------------------------------------------------------------ context */

static ad_ctx *fuzz_ctx;
static long fuzz_live; /* blocks the context's allocator has outstanding */
/* Larger blocks fuzz_alloc refuses (as out of memory): fuzz_ops keeps huge
 * shapes from reaching the system allocator (libFuzzer's malloc limit). */
static size_t fuzz_alloc_max = SIZE_MAX - 63;
static long fuzz_live_base;
static size_t fuzz_tensors_base;

/* Outstanding blocks less the slabs the context keeps for tensor headers
 * until it is freed (ad_ctx_header_blocks): what must return to its base. */
static inline long fuzz_blocks(void) { return fuzz_live - (long)ad_ctx_header_blocks(fuzz_ctx); }

/* The ad_alloc_fn contract (include/autodiff/ad_ext.h): blocks 64-byte aligned. */
static inline void *fuzz_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    if (ptr) fuzz_live--;
    free(ptr);
    return NULL;
  }
  if (nsize > fuzz_alloc_max) return NULL;
  void *p = aligned_alloc(64, (nsize + 63) & ~(size_t)63);
  if (!p) return NULL;
  if (ptr) {
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    free(ptr);
  } else {
    fuzz_live++;
  }
  return p;
}

static inline void fuzz_ctx_init(void) {
  fuzz_ctx = ad_ctx_new_with_alloc(fuzz_alloc, NULL);
  FUZZ_CHECK(fuzz_ctx, "cannot create a context");
  fuzz_live_base = fuzz_blocks();
  fuzz_tensors_base = ad_ctx_live_tensors(fuzz_ctx);
}

/* After an input: no error left behind is carried over, nothing leaked. */
static inline void fuzz_ctx_check_freed(void) {
  ad_clear_error(fuzz_ctx);
  FUZZ_CHECK(ad_ctx_live_tensors(fuzz_ctx) == fuzz_tensors_base, "%zu tensors leaked",
             ad_ctx_live_tensors(fuzz_ctx) - fuzz_tensors_base);
  FUZZ_CHECK(fuzz_blocks() == fuzz_live_base, "%ld blocks allocated through the context leaked",
             fuzz_blocks() - fuzz_live_base);
}

/* -------------------------------------------------------------- input */

static char fuzz_path[512];

/* Writes the input to a new file whose name is left in fuzz_path. */
static inline void fuzz_input_write(const char *prefix, const uint8_t *data, size_t size) {
  const char *dir = getenv("TMPDIR");
  if (!dir || !*dir) dir = "/tmp";
  int n = snprintf(fuzz_path, sizeof fuzz_path, "%s/%s-XXXXXX", dir, prefix);
  FUZZ_CHECK(n > 0 && (size_t)n < sizeof fuzz_path, "TMPDIR %s is too long", dir);
  int fd = mkstemp(fuzz_path);
  FUZZ_CHECK(fd >= 0, "cannot create %s", fuzz_path);
  for (size_t off = 0; off < size;) {
    ssize_t w = write(fd, data + off, size - off);
    FUZZ_CHECK(w > 0, "cannot write %s", fuzz_path);
    off += (size_t)w;
  }
  FUZZ_CHECK(close(fd) == 0, "cannot write %s", fuzz_path);
}

static inline void fuzz_input_remove(void) { unlink(fuzz_path); }

/* A failed call: an error status and a message naming the file (an
 * allocation failure may be reported by the allocating function). */
static inline void fuzz_check_error(const char *what) {
  ad_status st = ad_last_status(fuzz_ctx);
  const char *msg = ad_last_error(fuzz_ctx);
  FUZZ_CHECK(st != AD_OK, "%s failed without an error status", what);
  FUZZ_CHECK(st == AD_ERR_OOM || strstr(msg, fuzz_path), "%s: message \"%s\" does not name %s",
             what, msg, fuzz_path);
}

/* -------------------------------------------------------------- model */

/* A Sequential 3 -> hidden -> relu -> 2 MLP with an Adam optimizer:
 * parameters "0.weight" [hidden,3], "0.bias" [hidden], "2.weight"
 * [2,hidden], "2.bias" [2] (F32) and Adam's state, "adam.step" (a F64
 * scalar) and two F32 moments per parameter. fuzz_checkpoint loads into
 * the one with FUZZ_HIDDEN units. Returns the model (and *opt), or NULL
 * with the error set. */
#define FUZZ_HIDDEN 4
static inline nn_model *fuzz_model_new(ad_ctx *ctx, int64_t hidden, nn_optimizer **opt) {
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  nn_model *m = nn_sequential_new(ctx);
  if (!m || nn_model_add(m, nn_dense_new(ctx, 3, hidden, &rng, NULL)) != AD_OK ||
      nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU)) != AD_OK ||
      nn_model_add(m, nn_dense_new(ctx, hidden, 2, &rng, NULL)) != AD_OK ||
      !(*opt = nn_adam_new(nn_model_params(m), 1e-3))) {
    nn_model_free(m);
    return NULL;
  }
  return m;
}

/* ------------------------------------------------------------- UBSan */

const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) { return "halt_on_error=1:print_stacktrace=1"; }

#endif
