/* history.c: nn_fit's helpers for the training history (the history
 * itself lives in fit.c): gradient norms, CSV output, early stopping. */
#include "kernels/update.h"
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>

/* --------------------------------------------------------- gradient norms */

void nn_grad_norms_add(const nn_params *p, double *norms) {
  int np = nn_params_count(p);
  double total = 0;
  for (int i = 0; i < np; i++) {
    const ad_tensor *g = nn_params_tensor(p, i)->grad;
    double sq = g ? nn_sum_squares(g->dtype, g->size, g->data) : 0;
    norms[i] += sqrt(sq);
    total += sq;
  }
  total = sqrt(total);
  norms[np] += total;
  /* NaN propagates: a NaN kept, and one taken */
  if (!isnan(norms[np + 1]) && !(norms[np + 1] >= total)) norms[np + 1] = total;
}

/* ------------------------------------------------------------------- CSV */

/* Appends s to the CSV line at *w, quoted (RFC 4180) when it holds a
 * comma, a quote or a line break. The caller reserved 2 strlen(s) + 3. */
static char *csv_field(char *w, const char *s) {
  bool q = strpbrk(s, ",\"\r\n") != NULL;
  if (q) *w++ = '"';
  for (; *s; s++) {
    if (*s == '"') *w++ = '"';
    *w++ = *s;
  }
  if (q) *w++ = '"';
  return w;
}

ad_status nn_history_write_csv(const nn_history *h, const char *path) {
  if (!h) return AD_ERR_NULL;
  ad_ctx *ctx = nn_history_ctx(h);
  if (!path) return ad_set_error(ctx, AD_ERR_NULL, "history_write_csv: path is NULL");
  if (!*path) return ad_set_error(ctx, AD_ERR_ARG, "history_write_csv: path is empty");
  int nk = nn_history_key_count(h);
  size_t cap = 16; /* "epoch", line ends, the terminator */
  for (int i = 0; i < nk; i++) cap += 2 * strlen(nn_history_key(h, i)) + 3;
  cap += (size_t)nn_history_epochs(h) * (16 + (size_t)nk * 32); /* %.17g takes at most 24 bytes */
  char *buf = ad_malloc(ctx, cap), *w = buf;
  if (!buf) return ad_last_status(ctx) != AD_OK ? ad_last_status(ctx) : AD_ERR_OOM;
  w += sprintf(w, "epoch");
  for (int i = 0; i < nk; i++) {
    *w++ = ',';
    w = csv_field(w, nn_history_key(h, i));
  }
  *w++ = '\n';
  for (int e = 0; e < nn_history_epochs(h); e++) {
    w += sprintf(w, "%d", e + 1);
    for (int i = 0; i < nk; i++) {
      double v = nn_history_values(h, nn_history_key(h, i))[e];
      w += isnan(v) ? sprintf(w, ",nan") : sprintf(w, ",%.17g", v);
    }
    *w++ = '\n';
  }
  ad_status st = nn_write_file_atomic(ctx, "history_write_csv", path, buf, (size_t)(w - buf));
  ad_free(ctx, buf, cap);
  return st;
}

/* --------------------------------------------------------- early stopping */

ad_status nn_model_state_restore(nn_model *m, const unsigned char *buf) {
  nn_params *lists[2] = {nn_model_params(m), nn_model_buffers(m)};
  for (int l = 0; l < 2; l++) /* every note first: all written, or none */
    for (int i = 0; i < nn_params_count(lists[l]); i++) {
      ad_status st = ad_tensor_mark_modified(nn_params_tensor(lists[l], i));
      if (st != AD_OK) return st;
    }
  nn_model_state_copy(m, (unsigned char *)buf, false);
  return AD_OK;
}

size_t nn_model_state_copy(nn_model *m, unsigned char *buf, bool save) {
  nn_params *lists[2] = {nn_model_params(m), nn_model_buffers(m)};
  size_t off = 0;
  for (int l = 0; l < 2; l++)
    for (int i = 0; i < nn_params_count(lists[l]); i++) {
      ad_tensor *t = nn_params_tensor(lists[l], i);
      size_t n = (size_t)t->size * ad_dtype_size(t->dtype);
      if (buf && n) save ? memcpy(buf + off, t->data, n) : memcpy(t->data, buf + off, n);
      off += n;
    }
  return off;
}

ad_status nn_stopper_init(nn_stopper *s, nn_model *m, const nn_history *h,
                          const nn_early_stopping *es) {
  memset(s, 0, sizeof *s);
  if (!es->monitor) return AD_OK;
  if (!nn_history_values(h, es->monitor))
    return ad_set_error(nn_history_ctx(h), AD_ERR_ARG,
                        "fit: early stopping monitors \"%s\", which this run does not record",
                        es->monitor);
  if (!(es->min_delta >= 0 && isfinite(es->min_delta)) || es->patience < 0 ||
      (unsigned)es->mode > NN_MODE_MAX)
    return ad_set_error(nn_history_ctx(h), AD_ERR_ARG,
                        "fit: early stopping with min_delta %g, patience %d, mode %d",
                        es->min_delta, es->patience, (int)es->mode);
  s->monitor = es->monitor;
  s->max = es->mode == NN_MODE_MAX || (es->mode == NN_MODE_AUTO && strstr(es->monitor, "acc"));
  s->best = s->max ? -INFINITY : INFINITY;
  s->min_delta = es->min_delta;
  s->patience = es->patience;
  s->restore = es->restore_best_weights;
  if (s->restore) {
    s->bytes = nn_model_state_copy(m, NULL, true);
    if (s->bytes && !(s->snap = ad_malloc(nn_history_ctx(h), s->bytes))) return AD_ERR_OOM;
  }
  return AD_OK;
}

bool nn_stopper_update(nn_stopper *s, nn_model *m, nn_history *h, int e) {
  if (!s->monitor) return false;
  double v = nn_history_values(h, s->monitor)[e];
  bool better = s->max ? v - s->min_delta > s->best : v + s->min_delta < s->best;
  if (better) {
    s->best = v;
    s->wait = 0;
    nn_history_set_best_epoch(h, e);
    if (s->snap) nn_model_state_copy(m, s->snap, true);
    return false;
  }
  return ++s->wait >= s->patience && e > 0; /* as Keras */
}
