/* model_io.c: a model's parameters and buffers (its state dict) and its
 * optimizer's state in one safetensors checkpoint (through
 * nn_checkpoint_save_as / _load_as, which store num_batches_tracked as
 * I64). */
#include "nn_internal.h"

/* The entries of one checkpoint: names, tensors and how each is stored,
 * in arrays of cap entries from the context's allocator. */
typedef struct entries {
  const char **names;
  ad_tensor **tensors;
  nn_store *stores;
  int cap;
} entries;

static void entries_free(ad_ctx *ctx, entries *e) {
  ad_free(ctx, (void *)e->names, (size_t)e->cap * sizeof *e->names);
  ad_free(ctx, e->tensors, (size_t)e->cap * sizeof *e->tensors);
  ad_free(ctx, e->stores, (size_t)e->cap * sizeof *e->stores);
}

/* The model's parameters, then its buffers, then the optimizer's state.
 * Returns the count, or -1 (AD_ERR_OOM recorded). */
static int gather(const nn_model *m, const nn_optimizer *opt, entries *e) {
  nn_params *params = nn_model_params(m), *bufs = nn_model_buffers(m);
  ad_ctx *ctx = nn_model_ctx(m);
  int np = nn_params_count(params), nb = nn_params_count(bufs);
  int ns = opt ? nn_optimizer_state_count(opt) : 0;
  int n = np + nb + ns;
  e->cap = n ? n : 1;
  e->names = ad_malloc(ctx, (size_t)e->cap * sizeof *e->names);
  e->tensors = e->names ? ad_malloc(ctx, (size_t)e->cap * sizeof *e->tensors) : NULL;
  e->stores = e->tensors ? ad_malloc(ctx, (size_t)e->cap * sizeof *e->stores) : NULL;
  if (!e->stores) {
    entries_free(ctx, e);
    return -1;
  }
  for (int i = 0; i < np + nb; i++) {
    nn_params *list = i < np ? params : bufs;
    int j = i < np ? i : i - np;
    e->names[i] = nn_params_name(list, j);
    e->tensors[i] = nn_params_tensor(list, j);
    e->stores[i] = nn_params_store(list, j);
  }
  for (int i = 0; i < ns; i++) {
    e->names[np + nb + i] = nn_optimizer_state_names(opt)[i];
    e->tensors[np + nb + i] = nn_optimizer_state_tensors(opt)[i];
    e->stores[np + nb + i] = NN_STORE_NATIVE;
  }
  return n;
}

/* For a load: drops from e (n entries, the optimizer's ns
 * state tensors last) the optional state tensors the file at path lacks,
 * marking what it has in present[ns]. Returns the new count, or -1 with the
 * error of reading the header. */
static int drop_missing(ad_ctx *ctx, const nn_optimizer *opt, const char *path, entries *e, int n,
                        bool *present) {
  const char **names = e->names;
  ad_tensor **tensors = e->tensors;
  int ns = nn_optimizer_state_count(opt), np = n - ns, k = np;
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
  if (!info) return -1;
  if (nn_optimizer_groups_check(opt, info, path) != AD_OK) {
    nn_checkpoint_info_free(info);
    return -1;
  }
  for (int i = 0; i < ns; i++) {
    present[i] =
        !nn_optimizer_state_optional(opt, i) || nn_checkpoint_info_find(info, names[np + i]);
    if (!present[i]) continue;
    names[k] = names[np + i];
    e->stores[k] = e->stores[np + i];
    tensors[k++] = tensors[np + i];
  }
  nn_checkpoint_info_free(info);
  return k;
}

/* Reads the scalar state tensors (counts, learning rates) among the n
 * entries of names / tensors from path into temporaries and checks their
 * values, so that a bad one fails the load before anything is written. */
static ad_status check_scalars(ad_ctx *ctx, const nn_optimizer *opt, const char *path,
                               const char *const *names, ad_tensor *const *tensors, int n) {
  int ns = nn_optimizer_state_count(opt), m = 0;
  const char *const *snames = nn_optimizer_state_names(opt);
  size_t bytes = (size_t)(n ? n : 1) * sizeof(void *);
  const char **sn = ad_malloc(ctx, bytes);
  ad_tensor **st = sn ? ad_malloc(ctx, bytes) : NULL;
  int *which = st ? ad_malloc(ctx, (size_t)(n ? n : 1) * sizeof(int)) : NULL;
  ad_status s = which ? AD_OK : AD_ERR_OOM;
  for (int i = 0; i < n && s == AD_OK; i++) {
    if (tensors[i]->ndim != 0) continue;
    int k = 0;
    while (k < ns && snames[k] != names[i]) k++;
    if (k == ns) continue; /* a model parameter */
    if (!(st[m] = ad_zeros(ctx, tensors[i]->dtype, 0, NULL))) s = AD_ERR_OOM;
    sn[m] = names[i];
    which[m++] = k;
  }
  if (s == AD_OK) s = nn_checkpoint_load(ctx, path, m, sn, st);
  for (int i = 0; i < m && s == AD_OK; i++)
    s = nn_optimizer_state_check(opt, which[i], ad_tensor_item(st[i]), path);
  for (int i = 0; st && i < m; i++) ad_tensor_free(st[i]);
  ad_free(ctx, which, (size_t)(n ? n : 1) * sizeof(int));
  ad_free(ctx, st, bytes);
  ad_free(ctx, (void *)sn, bytes);
  return s;
}

static ad_status model_io(nn_model *m, nn_optimizer *opt, const char *path, bool save) {
  if (!m) return nn_null_arg(nn_ctx_of(m, opt), save ? "model_save" : "model_load", "model");
  ad_ctx *ctx = nn_model_ctx(m);
  const char *fn = save ? "model_save" : "model_load";
  if (opt && nn_params_ctx(nn_optimizer_params(opt)) != ctx)
    return ad_set_error(ctx, AD_ERR_ARG,
                        "%s: the optimizer is of another context than the model (%p, %p)", fn,
                        (void *)nn_params_ctx(nn_optimizer_params(opt)), (void *)ctx);
  entries e;
  int n = gather(m, opt, &e);
  if (n < 0) return AD_ERR_OOM;
  ad_status st = AD_OK;
  int ns = opt ? nn_optimizer_state_count(opt) : 0;
  size_t pbytes = (size_t)(ns ? ns : 1) * sizeof(bool);
  bool *present = NULL;
  if (save) {
    st = nn_checkpoint_save_as(ctx, path, n, e.names, e.tensors, e.stores, 0, NULL, NULL);
  } else if (opt && path && !(present = ad_malloc(ctx, pbytes))) {
    st = AD_ERR_OOM;
  } else {
    int k = present ? drop_missing(ctx, opt, path, &e, n, present) : n;
    st = k < 0 ? ad_last_status(ctx) : AD_OK;
    if (st == AD_OK && opt) st = check_scalars(ctx, opt, path, e.names, e.tensors, k);
    if (st == AD_OK) st = nn_checkpoint_load_as(ctx, path, k, e.names, e.tensors, e.stores);
    if (st == AD_OK && present) nn_optimizer_state_restored(opt, present);
  }
  ad_free(ctx, present, pbytes);
  entries_free(ctx, &e);
  return st;
}

ad_status nn_model_save(const nn_model *m, const nn_optimizer *opt, const char *path) {
  return model_io((nn_model *)m, (nn_optimizer *)opt, path, true);
}

ad_status nn_model_load(nn_model *m, nn_optimizer *opt, const char *path) {
  return model_io(m, opt, path, false);
}
