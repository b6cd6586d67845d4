/* fuzz_checkpoint.c: libFuzzer target for the safetensors checkpoint
 * reader (include/autodiff/nn_io.h, include/autodiff/nn.h). The input is the bytes of a checkpoint;
 * seeds in fuzz/corpus/checkpoint.
 *
 * Each input goes through the three ways a user reads a checkpoint:
 *   1. nn_checkpoint_info_read, the "what is in this file" entry: on
 *      success the header accounts for every byte of the file, entries lie
 *      in the data buffer and have the size their dtype and shape need,
 *      and names and metadata keys are found again by lookup;
 *   2. nn_checkpoint_load of every entry the engine has a dtype for, into
 *      tensors of the shapes info reported: it must succeed, and each
 *      tensor must hold the bytes of its data_offsets;
 *   2b. nn_checkpoint_load_as with NN_STORE_I64 of every "I64" entry,
 *      into an AD_F64 and an AD_I32 tensor of its shape, one at a time: it
 *      must succeed exactly when every value fits the dtype exactly
 *      (+-2^53, the int32 range), giving the values; else AD_ERR_FORMAT
 *      and the tensor unchanged;
 *   3. nn_model_load into fuzz_model_new's model and Adam optimizer: it
 *      must succeed exactly when info lists every name with the right
 *      dtype and shape and the optimizer's counts and learning rates hold
 *      values it accepts; on success each tensor holds its bytes of the
 *      file, on failure no tensor changed (all-or-nothing).
 * Every failure must set an error naming the file, and everything
 * allocated through the context must be freed. The byte comparisons assume
 * a little-endian host (the file's byte order). */
#include "fuzz_common.h"

#include <math.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fuzz_ctx_init();
  return 0;
}

static size_t tensor_bytes(const ad_tensor *t) { return (size_t)t->size * ad_dtype_size(t->dtype); }

/* The bytes of entry e in the input. */
static const uint8_t *entry_data(const nn_checkpoint_info *info, const nn_checkpoint_entry *e,
                                 const uint8_t *data) {
  return data + 8 + info->header_bytes + e->offset;
}

static void check_info(const nn_checkpoint_info *info, size_t size) {
  FUZZ_CHECK(info->n >= 0 && info->n_meta >= 0, "n %d, n_meta %d", info->n, info->n_meta);
  FUZZ_CHECK(8 + info->header_bytes + info->data_bytes == size,
             "8 + header %llu + data %llu bytes != file size %zu",
             (unsigned long long)info->header_bytes, (unsigned long long)info->data_bytes, size);
  uint64_t total = 0;
  for (int i = 0; i < info->n; i++) {
    const nn_checkpoint_entry *e = &info->entries[i];
    FUZZ_CHECK(e->name && e->name[0] && e->dtype_name, "entry %d has no name or dtype", i);
    FUZZ_CHECK(nn_checkpoint_info_find(info, e->name) == e, "entry '%s' is not found by name",
               e->name);
    FUZZ_CHECK(e->ndim >= 0 && e->ndim <= AD_MAX_DIMS, "entry '%s' has %d dims", e->name, e->ndim);
    FUZZ_CHECK(e->offset <= info->data_bytes && e->nbytes <= info->data_bytes - e->offset,
               "entry '%s' lies outside the data buffer", e->name);
    total += e->nbytes;
    if (e->has_dtype) {
      FUZZ_CHECK(strcmp(e->dtype_name, e->dtype == AD_F32   ? "F32"
                                       : e->dtype == AD_F64 ? "F64"
                                                            : "I32") == 0 &&
                     (e->dtype == AD_F32 || e->dtype == AD_F64 || e->dtype == AD_I32),
                 "entry '%s': dtype %d for \"%s\"", e->name, (int)e->dtype, e->dtype_name);
      uint64_t need = ad_dtype_size(e->dtype);
      for (int d = 0; d < e->ndim; d++) need *= (uint64_t)e->shape[d];
      FUZZ_CHECK(need == e->nbytes, "entry '%s' holds %llu bytes, its shape needs %llu", e->name,
                 (unsigned long long)e->nbytes, (unsigned long long)need);
    }
  }
  FUZZ_CHECK(total == info->data_bytes, "the tensors hold %llu of the %llu data bytes",
             (unsigned long long)total, (unsigned long long)info->data_bytes);
  for (int i = 0; i < info->n_meta; i++) {
    const nn_checkpoint_meta *m = &info->meta[i];
    FUZZ_CHECK(m->key && m->value, "metadata pair %d has a NULL string", i);
    FUZZ_CHECK(nn_checkpoint_info_meta(info, m->key) == m->value, "metadata key '%s' is not found",
               m->key);
  }
}

/* Loads every entry with an engine dtype into a tensor of its shape. */
static void load_all(const nn_checkpoint_info *info, const uint8_t *data) {
  int n = 0;
  const char **names = malloc((size_t)(info->n ? info->n : 1) * sizeof *names);
  ad_tensor **ts = malloc((size_t)(info->n ? info->n : 1) * sizeof *ts);
  const nn_checkpoint_entry **ents = malloc((size_t)(info->n ? info->n : 1) * sizeof *ents);
  FUZZ_CHECK(names && ts && ents, "out of memory");
  for (int i = 0; i < info->n; i++) {
    const nn_checkpoint_entry *e = &info->entries[i];
    if (!e->has_dtype) continue;
    ad_tensor *t = ad_zeros(fuzz_ctx, e->dtype, e->ndim, e->shape);
    if (!t && ad_last_status(fuzz_ctx) == AD_ERR_ARG) {
      /* a 0 among huge dims: valid in the file, but no tensor has it */
      ad_clear_error(fuzz_ctx);
      continue;
    }
    FUZZ_CHECK(t, "entry '%s': ad_zeros: %s", e->name, ad_last_error(fuzz_ctx));
    names[n] = e->name;
    ents[n] = e;
    ts[n++] = t;
  }
  ad_status st = nn_checkpoint_load(fuzz_ctx, fuzz_path, n, names, ts);
  FUZZ_CHECK(st == AD_OK, "info read the file, loading its %d tensors failed: %s", n,
             ad_last_error(fuzz_ctx));
  for (int i = 0; i < n; i++) {
    FUZZ_CHECK(tensor_bytes(ts[i]) == ents[i]->nbytes, "tensor '%s' size", names[i]);
    FUZZ_CHECK(ents[i]->nbytes == 0 ||
                   memcmp(ts[i]->data, entry_data(info, ents[i], data), ents[i]->nbytes) == 0,
               "tensor '%s' does not hold its bytes of the file", names[i]);
    ad_tensor_free(ts[i]);
  }
  free(names);
  free(ts);
  free((void *)ents);
}

/* The int64 at p (little-endian, as the file stores it). */
static int64_t le_i64(const uint8_t *p) {
  uint64_t u = 0;
  for (int k = 7; k >= 0; k--) u = u << 8 | p[k];
  int64_t v;
  memcpy(&v, &u, sizeof v);
  return v;
}

/* Loads each "I64" entry (NN_STORE_I64) into an AD_F64 and an AD_I32
 * tensor of its shape: all values fit exactly, or AD_ERR_FORMAT and the
 * tensor keeps its zeros. */
static void load_i64(const nn_checkpoint_info *info, const uint8_t *data) {
  static const ad_dtype dts[2] = {AD_F64, AD_I32};
  const nn_store store = NN_STORE_I64;
  for (int i = 0; i < info->n; i++) {
    const nn_checkpoint_entry *e = &info->entries[i];
    if (strcmp(e->dtype_name, "I64") != 0) continue;
    for (int k = 0; k < 2; k++) {
      ad_tensor *t = ad_zeros(fuzz_ctx, dts[k], e->ndim, e->shape);
      if (!t && ad_last_status(fuzz_ctx) == AD_ERR_ARG) { /* see load_all */
        ad_clear_error(fuzz_ctx);
        continue;
      }
      FUZZ_CHECK(t, "entry '%s': ad_zeros: %s", e->name, ad_last_error(fuzz_ctx));
      const uint8_t *bytes = entry_data(info, e, data);
      int64_t lo = dts[k] == AD_F64 ? -((int64_t)1 << 53) : INT32_MIN;
      int64_t hi = dts[k] == AD_F64 ? (int64_t)1 << 53 : INT32_MAX;
      bool fits = true;
      for (int64_t j = 0; j < t->size; j++) {
        int64_t v = le_i64(bytes + 8 * j);
        fits = fits && v >= lo && v <= hi;
      }
      ad_status st = nn_checkpoint_load_as(fuzz_ctx, fuzz_path, 1, &e->name, &t, &store);
      FUZZ_CHECK((st == AD_OK) == fits, "I64 entry '%s' into %s: load %s, values %s: %s", e->name,
                 ad_dtype_name(dts[k]), st == AD_OK ? "worked" : "failed",
                 fits ? "fit" : "do not fit", ad_last_error(fuzz_ctx));
      if (st != AD_OK) {
        FUZZ_CHECK(st == AD_ERR_FORMAT, "I64 entry '%s': status %d", e->name, (int)st);
        fuzz_check_error("nn_checkpoint_load_as");
        ad_clear_error(fuzz_ctx);
      }
      for (int64_t j = 0; j < t->size; j++) {
        double want = st == AD_OK ? (double)le_i64(bytes + 8 * j) : 0;
        FUZZ_CHECK(ad_tensor_get(t, j) == want, "I64 entry '%s' element %lld into %s: %g, not %g",
                   e->name, (long long)j, ad_dtype_name(dts[k]), ad_tensor_get(t, j), want);
      }
      ad_tensor_free(t);
    }
  }
}

/* Would nn_model_load find every name with the tensor's dtype and shape? */
static bool model_fits(const nn_checkpoint_info *info, int n, const char *const *names,
                       ad_tensor *const *ts) {
  if (!info) return false;
  for (int i = 0; i < n; i++) {
    const nn_checkpoint_entry *e = nn_checkpoint_info_find(info, names[i]);
    if (!e || !e->has_dtype || e->dtype != ts[i]->dtype || e->ndim != ts[i]->ndim) return false;
    for (int d = 0; d < e->ndim; d++)
      if (e->shape[d] != ts[i]->shape[d]) return false;
  }
  return true;
}

/* Whether the optimizer's scalar state in the file (names[np..n), 0-d
 * F64) holds what nn_model_load accepts: a learning rate ("adam.lr",
 * "adam.schedule.lr0") finite and >= 0, a count (every other scalar: the
 * steps, the schedule's epoch) a whole number in [0, 2^53]. */
static bool scalars_valid(const nn_checkpoint_info *info, const uint8_t *data, int np, int n,
                          const char *const *names, ad_tensor *const *ts) {
  for (int i = np; i < n; i++) {
    const nn_checkpoint_entry *e = nn_checkpoint_info_find(info, names[i]);
    if (!e || ts[i]->ndim != 0 || !e->has_dtype || e->dtype != AD_F64 || e->ndim != 0) continue;
    double v;
    memcpy(&v, entry_data(info, e, data), sizeof v);
    bool lr = !strcmp(names[i], "adam.lr") || !strcmp(names[i], "adam.schedule.lr0");
    if (lr ? !(isfinite(v) && v >= 0) : !(v >= 0 && v <= 9007199254740992.0 && v == floor(v)))
      return false;
  }
  return true;
}

/* The model's parameters followed by the optimizer's state. */
static int model_tensors(nn_model *m, nn_optimizer *opt, const char **names, ad_tensor **ts,
                         int cap) {
  nn_params *p = nn_model_params(m);
  int np = nn_params_count(p), ns = nn_optimizer_state_count(opt);
  FUZZ_CHECK(np + ns <= cap, "the model has %d tensors", np + ns);
  for (int i = 0; i < np; i++) {
    names[i] = nn_params_name(p, i);
    ts[i] = nn_params_tensor(p, i);
  }
  for (int i = 0; i < ns; i++) {
    names[np + i] = nn_optimizer_state_names(opt)[i];
    ts[np + i] = nn_optimizer_state_tensors(opt)[i];
  }
  return np + ns;
}

static void load_model(const nn_checkpoint_info *info, const uint8_t *data) {
  enum { CAP = 32 };
  nn_optimizer *opt = NULL;
  nn_model *m = fuzz_model_new(fuzz_ctx, FUZZ_HIDDEN, &opt);
  FUZZ_CHECK(m, "fuzz_model_new: %s", ad_last_error(fuzz_ctx));
  const char *names[CAP];
  ad_tensor *ts[CAP];
  void *before[CAP];
  int n = model_tensors(m, opt, names, ts, CAP);
  for (int i = 0; i < n; i++) {
    before[i] = malloc(tensor_bytes(ts[i]) + 1);
    FUZZ_CHECK(before[i], "out of memory");
    memcpy(before[i], ts[i]->data, tensor_bytes(ts[i]));
  }
  ad_status st = nn_model_load(m, opt, fuzz_path);
  /* The parameters must all be there; some optimizer state may be missing
   * (checkpoints of earlier versions lack per-parameter step counts and the
   * schedule's state), and state values that cannot be one (a negative
   * count) fail the load with AD_ERR_FORMAT even when every shape fits. */
  int np = nn_params_count(nn_model_params(m));
  bool params_fit = model_fits(info, np, names, ts), all_fit = model_fits(info, n, names, ts);
  FUZZ_CHECK(st != AD_OK || params_fit, "nn_model_load worked, but a parameter does not fit");
  FUZZ_CHECK(
      st == AD_OK || !all_fit ||
          (st == AD_ERR_FORMAT && !scalars_valid(info, data, np, n, names, ts)),
      "nn_model_load failed (%s) although every tensor fits and every count and rate is valid",
      ad_last_error(fuzz_ctx));
  if (st != AD_OK) fuzz_check_error("nn_model_load");
  for (int i = 0; i < n; i++) {
    const void *want = before[i];
    const nn_checkpoint_entry *e = info ? nn_checkpoint_info_find(info, names[i]) : NULL;
    if (st == AD_OK && !e) { /* optional state the file lacks: set from the optimizer */
      free(before[i]);
      continue;
    }
    if (st == AD_OK) want = entry_data(info, e, data);
    FUZZ_CHECK(memcmp(ts[i]->data, want, tensor_bytes(ts[i])) == 0,
               "tensor '%s' %s after nn_model_load %s", names[i],
               st == AD_OK ? "does not hold its bytes of the file" : "changed",
               st == AD_OK ? "worked" : "failed");
    free(before[i]);
  }
  nn_optimizer_free(opt);
  nn_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_input_write("fuzz_checkpoint", data, size);
  nn_checkpoint_info *info = nn_checkpoint_info_read(fuzz_ctx, fuzz_path);
  if (info) {
    check_info(info, size);
    load_all(info, data);
    load_i64(info, data);
  } else {
    fuzz_check_error("nn_checkpoint_info_read");
  }
  ad_clear_error(fuzz_ctx);
  load_model(info, data);
  nn_checkpoint_info_free(info);
  fuzz_input_remove();
  fuzz_ctx_check_freed();
  return 0;
}
