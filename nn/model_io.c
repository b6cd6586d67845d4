/* model_io.c: a model's parameters and its optimizer's state in one
 * safetensors checkpoint (through nn_checkpoint_save / _load). */
#include "nn_internal.h"

/* The model's names and tensors followed by the optimizer's, in arrays of
 * *bytes bytes each from the context's allocator. Returns the count, or -1
 * (AD_ERR_OOM recorded). */
static int gather(const nn_model *m, const nn_optimizer *opt, const char ***names,
                  ad_tensor ***tensors, size_t *bytes) {
  nn_params *params = nn_model_params(m);
  ad_ctx *ctx = nn_model_ctx(m);
  int np = nn_params_count(params), ns = opt ? nn_optimizer_state_count(opt) : 0;
  int n = np + ns;
  *bytes = (size_t)(n ? n : 1) * sizeof(void *);
  *names = ad_malloc(ctx, *bytes);
  *tensors = *names ? ad_malloc(ctx, *bytes) : NULL;
  if (!*tensors) {
    ad_free(ctx, (void *)*names, *bytes);
    return -1;
  }
  for (int i = 0; i < np; i++) {
    (*names)[i] = nn_params_name(params, i);
    (*tensors)[i] = nn_params_tensor(params, i);
  }
  for (int i = 0; i < ns; i++) {
    (*names)[np + i] = nn_optimizer_state_names(opt)[i];
    (*tensors)[np + i] = nn_optimizer_state_tensors(opt)[i];
  }
  return n;
}

/* For a load: drops from names / tensors (n entries, the optimizer's ns
 * state tensors last) the optional state tensors the file at path lacks,
 * marking what it has in present[ns]. Returns the new count, or -1 with the
 * error of reading the header. */
static int drop_missing(ad_ctx *ctx, const nn_optimizer *opt, const char *path, const char **names,
                        ad_tensor **tensors, int n, bool *present) {
  int ns = nn_optimizer_state_count(opt), np = n - ns, k = np;
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
  if (!info) return -1;
  for (int i = 0; i < ns; i++) {
    present[i] =
        !nn_optimizer_state_optional(opt, i) || nn_checkpoint_info_find(info, names[np + i]);
    if (!present[i]) continue;
    names[k] = names[np + i];
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
  const char **names;
  ad_tensor **tensors;
  size_t bytes;
  int n = gather(m, opt, &names, &tensors, &bytes);
  if (n < 0) return AD_ERR_OOM;
  ad_status st = AD_OK;
  int ns = opt ? nn_optimizer_state_count(opt) : 0;
  size_t pbytes = (size_t)(ns ? ns : 1) * sizeof(bool);
  bool *present = NULL;
  if (save) {
    st = nn_checkpoint_save(ctx, path, n, names, tensors);
  } else if (opt && path && !(present = ad_malloc(ctx, pbytes))) {
    st = AD_ERR_OOM;
  } else {
    int k = present ? drop_missing(ctx, opt, path, names, tensors, n, present) : n;
    st = k < 0 ? ad_last_status(ctx) : AD_OK;
    if (st == AD_OK && opt) st = check_scalars(ctx, opt, path, names, tensors, k);
    if (st == AD_OK) st = nn_checkpoint_load(ctx, path, k, names, tensors);
    if (st == AD_OK && present) nn_optimizer_state_restored(opt, present);
  }
  ad_free(ctx, present, pbytes);
  ad_free(ctx, (void *)names, bytes);
  ad_free(ctx, tensors, bytes);
  return st;
}

ad_status nn_model_save(const nn_model *m, const nn_optimizer *opt, const char *path) {
  return model_io((nn_model *)m, (nn_optimizer *)opt, path, true);
}

ad_status nn_model_load(nn_model *m, nn_optimizer *opt, const char *path) {
  return model_io(m, opt, path, false);
}
