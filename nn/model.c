/* model.c: Sequential and custom models, their parameter lists, summaries
 * and checkpoints. */
#include "nn_internal.h"

struct nn_model {
  ad_ctx *ctx;
  nn_params *params;  /* layers' parameters (borrowed) and the model's own */
  nn_params *buffers; /* layers' buffers (borrowed) */
  nn_layer **layers;  /* owned */
  int nlayers, cap;
  nn_forward_fn forward; /* NULL: Sequential */
  void *ud;
  bool training;
};

static nn_model *model_new(ad_ctx *ctx, nn_forward_fn forward, void *ud) {
  if (!ctx) return NULL;
  nn_model *m = ad_malloc(ctx, sizeof *m);
  if (!m) return NULL;
  memset(m, 0, sizeof *m);
  m->ctx = ctx;
  m->forward = forward;
  m->ud = ud;
  m->training = true;
  if (!(m->params = nn_params_new(ctx)) || !(m->buffers = nn_buffers_new(ctx))) {
    nn_params_release(m->params);
    ad_free(ctx, m, sizeof *m);
    return NULL;
  }
  nn_params_hold(m->params);
  nn_params_hold(m->buffers);
  return m;
}

nn_model *nn_sequential_new(ad_ctx *ctx) { return model_new(ctx, NULL, NULL); }

nn_model *nn_model_new(ad_ctx *ctx, nn_forward_fn forward, void *ud) {
  if (ctx && !forward) {
    ad_set_error(ctx, AD_ERR_NULL, "model_new: forward function is NULL");
    return NULL;
  }
  return model_new(ctx, forward, ud);
}

void nn_model_free(nn_model *m) {
  if (!m) return;
  ad_ctx *ctx = m->ctx;
  nn_params_release(m->params); /* first: they borrow the layers' tensors */
  nn_params_release(m->buffers);
  for (int i = 0; i < m->nlayers; i++) nn_layer_destroy(m->layers[i]);
  ad_free(ctx, m->layers, (size_t)m->cap * sizeof *m->layers);
  ad_free(ctx, m, sizeof *m);
}

/* A layer name: non-empty, under 200 bytes, and, where it has dots, a path
 * of non-empty parts as PyTorch's nested module names ("encoder.0"), so
 * that "<name>.<parameter>" is the name PyTorch's state dict gives. */
static bool dotted_name_ok(const char *name) {
  if (!name || !name[0] || strlen(name) >= 200) return false;
  return name[0] != '.' && name[strlen(name) - 1] != '.' && !strstr(name, "..");
}

ad_status nn_model_add_named(nn_model *m, const char *name, nn_layer *layer) {
  if (!m) {
    nn_layer_free(layer);
    return AD_ERR_NULL;
  }
  ad_ctx *ctx = m->ctx;
  if (!layer) {
    ad_status st = ad_last_status(ctx);
    return st != AD_OK ? st : ad_set_error(ctx, AD_ERR_NULL, "model_add: layer is NULL");
  }
  ad_status st = AD_OK;
  if (nn_layer_adopted(layer)) /* not ours: do not free it */
    return ad_set_error(ctx, AD_ERR_ARG, "model_add: %s '%s' already belongs to a model",
                        nn_layer_kind(layer), nn_layer_name(layer));
  ad_ctx *lctx = nn_layer_ctx(layer);
  if (lctx != ctx) /* its tensors would be trained and saved through the wrong context */
    st = ad_set_error(ctx, AD_ERR_ARG,
                      "model_add: %s layer was made on context %p and the model on context %p; "
                      "a model takes layers of its own context",
                      nn_layer_kind(layer), (void *)lctx, (void *)ctx);
  else if (!dotted_name_ok(name))
    st = ad_set_error(ctx, AD_ERR_ARG,
                      "model_add: layer name '%.40s' must be non-empty, under 200 bytes, and "
                      "neither start nor end with '.' nor hold '..'",
                      name ? name : "(null)");
  else if (nn_model_find_layer(m, name))
    st = ad_set_error(ctx, AD_ERR_ARG, "model_add: a layer named '%s' exists", name);
  if (st != AD_OK) {
    nn_layer_free(layer);
    return st;
  }
  /* check every parameter and buffer name first, so a failure leaves the
   * model as is; a name is either a parameter or a buffer, as in PyTorch */
  nn_params *lp = nn_layer_params(layer), *lb = nn_layer_buffers(layer);
  int np = nn_params_count(lp), nb = nn_params_count(lb);
  char full[256];
  for (int i = 0; i < np + nb && st == AD_OK; i++) {
    const char *own = i < np ? nn_params_name(lp, i) : nn_params_name(lb, i - np);
    int len = snprintf(full, sizeof full, "%s.%s", name, own);
    if (len < 0 || (size_t)len >= sizeof full) /* cut, it could collide with another */
      st = ad_set_error(ctx, AD_ERR_ARG,
                        "model_add: %s '%.40s...' of the %s layer makes a name of %d bytes, "
                        "'%s.<name>'; at most %d",
                        i < np ? "parameter" : "buffer", own, nn_layer_kind(layer),
                        (int)(strlen(name) + 1 + strlen(own)), name, (int)sizeof full - 1);
    else if (nn_params_find(m->params, full) || nn_params_find(m->buffers, full))
      st = ad_set_error(ctx, AD_ERR_ARG, "model_add: a %s named '%s' exists",
                        nn_params_find(m->params, full) ? "parameter" : "buffer", full);
  }
  if (st == AD_OK && !nn_grow(ctx, (void **)&m->layers, &m->cap, m->nlayers + 1, sizeof *m->layers))
    st = AD_ERR_OOM;
  if (st == AD_OK) st = nn_layer_adopt(layer, name);
  if (st != AD_OK) {
    nn_layer_free(layer);
    return st;
  }
  /* out of memory while listing its tensors: the entries listed so far
   * are dropped and the layer freed, so the model stays as it was (a
   * layer kept with part of its tensors unlisted would be run but neither
   * trained nor saved, and its name would stay taken) */
  int np0 = nn_params_count(m->params), nb0 = nn_params_count(m->buffers);
  for (int i = 0; i < np && st == AD_OK; i++) {
    snprintf(full, sizeof full, "%s.%s", name, nn_params_name(lp, i));
    st = nn_params_add(m->params, full, nn_params_tensor(lp, i), false);
  }
  for (int i = 0; i < nb && st == AD_OK; i++) {
    snprintf(full, sizeof full, "%s.%s", name, nn_params_name(lb, i));
    st = nn_buffers_add(m->buffers, full, nn_params_tensor(lb, i), false, nn_params_store(lb, i));
  }
  if (st != AD_OK) {
    nn_params_truncate(m->params, np0);
    nn_params_truncate(m->buffers, nb0);
    nn_layer_destroy(layer);
    nn_error_prefix(ctx, "model_add: layer '%s'", name);
    return st;
  }
  m->layers[m->nlayers++] = layer;
  return AD_OK;
}

ad_status nn_model_add(nn_model *m, nn_layer *layer) {
  char name[32];
  snprintf(name, sizeof name, "%d", m ? m->nlayers : 0);
  return nn_model_add_named(m, name, layer);
}

ad_tensor *nn_model_add_param(nn_model *m, const char *name, ad_dtype dtype, int ndim,
                              const int64_t *shape, nn_init init, ad_rng *rng) {
  if (!m) return NULL;
  ad_ctx *ctx = m->ctx;
  if (name && nn_params_find(m->buffers, name)) {
    ad_set_error(ctx, AD_ERR_ARG, "model_add_param: a buffer named '%s' exists", name);
    return NULL;
  }
  if (dtype != AD_F32 && dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "model_add_param: '%s' must be float, got %s",
                 name ? name : "(null)", ad_dtype_name(dtype));
    return NULL;
  }
  ad_tensor *t = ad_zeros(ctx, dtype, ndim, shape);
  bool ok = t && (init.kind == NN_INIT_DEFAULT || nn_init_tensor(ctx, t, init, rng) == AD_OK);
  if (!ok)
    ad_tensor_free(t);
  else if (nn_params_add(m->params, name, t, true) == AD_OK)
    return t;
  if (ndim >= 0 && ndim <= AD_MAX_DIMS && (shape || ndim == 0))
    nn_error_tensor(ctx, "nn_model_add_param", NULL, name, ndim, shape);
  else /* no shape to show */
    nn_error_prefix(ctx, "nn_model_add_param");
  return NULL;
}

ad_tensor *nn_model_param(const nn_model *m, const char *name) {
  return m ? nn_params_find(m->params, name) : NULL;
}

int nn_model_layer_count(const nn_model *m) { return m ? m->nlayers : 0; }

nn_layer *nn_model_layer(const nn_model *m, int i) {
  return m && i >= 0 && i < m->nlayers ? m->layers[i] : NULL;
}

nn_layer *nn_model_find_layer(const nn_model *m, const char *name) {
  for (int i = 0; m && name && i < m->nlayers; i++)
    if (strcmp(nn_layer_name(m->layers[i]), name) == 0) return m->layers[i];
  return NULL;
}

nn_params *nn_model_params(const nn_model *m) { return m ? m->params : NULL; }
nn_params *nn_model_buffers(const nn_model *m) { return m ? m->buffers : NULL; }
ad_ctx *nn_model_ctx(const nn_model *m) { return m ? m->ctx : NULL; }

bool nn_model_set_training(nn_model *m, bool training) {
  if (!m) return false;
  bool old = m->training;
  m->training = training;
  return old;
}

bool nn_model_training(const nn_model *m) { return m && m->training; }

ad_tensor *nn_model_forward(nn_model *m, ad_tensor *x) {
  if (!m) return NULL;
  if (!x) {
    nn_null_arg(m->ctx, "model_forward", "x");
    return NULL;
  }
  if (nn_check_input(m->ctx, "model_forward", "x", x) != AD_OK) return NULL;
  if (m->forward) {
    ad_tensor *y = m->forward(m, x, m->ud);
    if (!y && ad_last_status(m->ctx) == AD_OK) /* a NULL must come with a message */
      ad_set_error(m->ctx, AD_ERR_ARG,
                   "model_forward: the forward function returned NULL and recorded no error");
    return y;
  }
  if (m->nlayers == 0) {
    ad_set_error(m->ctx, AD_ERR_STATE, "model_forward: the Sequential model has no layers");
    return NULL;
  }
  for (int i = 0; i < m->nlayers && x; i++) x = nn_layer_forward(m->layers[i], x, m->training);
  return x;
}

/* One row of the summary: measured into w (the columns' widths) on the
 * first pass, printed on the second. */
typedef struct summary_pass {
  FILE *f;     /* NULL: measuring */
  bool shapes; /* some layer has run: the output column is shown */
  int w[5];
} summary_pass;

static void summary_row(summary_pass *p, const char *name, const char *kind, const char *out,
                        const char *item, const char *count) {
  const char *col[5] = {name, kind, out, item, count};
  if (!p->f) {
    for (int k = 0; k < 5; k++) {
      int n = (int)strlen(col[k]);
      if (n > p->w[k]) p->w[k] = n;
    }
    return;
  }
  int last = 4; /* no spaces after the last column that has text */
  while (last > 0 && !*col[last]) last--;
  for (int k = 0; k <= last; k++) {
    if (k == 2 && !p->shapes) continue;
    if (k == 4)
      fprintf(p->f, "%*s", p->w[4], count);
    else if (k == last)
      fputs(col[k], p->f);
    else
      fprintf(p->f, "%-*s  ", p->w[k], col[k]);
  }
  fputc('\n', p->f);
}

/* "[32,64]" from a rank and dims, as ad_shape_str writes a tensor's. */
static const char *dims_str(int nd, const int64_t *d, char *buf, size_t n) {
  nn_text t = {buf, n, 0};
  nn_text_add(&t, "[");
  for (int k = 0; k < nd; k++) nn_text_add(&t, "%s%lld", k ? "," : "", (long long)d[k]);
  nn_text_add(&t, "]");
  return buf;
}

/* A layer's description cut into lines of at most KIND_WIDTH characters
 * (a longer setting stays whole) after the commas between its settings,
 * the later lines indented by two spaces; returns the number of lines. */
enum { KIND_WIDTH = 56, KIND_LINES = 8 };

static int wrap_desc(const char *desc, char lines[KIND_LINES][256]) {
  int n = 0, depth = 0;
  size_t len = 0, start = 0, at = strlen(desc);
  lines[0][0] = '\0';
  for (size_t i = 0; i <= at; i++) {
    char c = desc[i];
    if (c == '(') depth++;
    if (c == ')') depth--;
    if (!(c == '\0' || (c == ',' && depth == 1 && desc[i + 1] == ' '))) continue;
    /* the setting desc[start..i], with its comma */
    size_t piece = i - start + (c == ',');
    if (len > 2 && len + 1 + piece > KIND_WIDTH && n + 1 < KIND_LINES) {
      lines[++n][0] = '\0';
      len = (size_t)snprintf(lines[n], 256, "  ");
    } else if (len > 0 && len < 255) {
      lines[n][len++] = ' ', lines[n][len] = '\0';
    }
    int k = snprintf(lines[n] + len, 256 - len, "%.*s", (int)piece, desc + start);
    len += k >= 0 && (size_t)k < 256 - len ? (size_t)k : 255 - len;
    start = i + 2;
  }
  return n + 1;
}

static void summary_rows(const nn_model *m, summary_pass *p) {
  char buf[64], item[128], desc[256], out[160], count[32], kind[KIND_LINES][256];
  summary_row(p, "layer", "kind", "output", "parameters", "count");
  for (int i = 0; i < m->nlayers; i++) {
    nn_layer *l = m->layers[i];
    nn_params *lp = nn_layer_params(l), *lb = nn_layer_buffers(l);
    int np = nn_params_count(lp), nb = nn_params_count(lb);
    int64_t d[AD_MAX_DIMS];
    int nd = nn_layer_output_shape(l, d);
    int nk = wrap_desc(nn_layer_describe(l, desc, sizeof desc), kind);
    if (nd < 0)
      snprintf(out, sizeof out, "-");
    else
      dims_str(nd, d, out, sizeof out);
    int rows = np + nb > nk ? np + nb : nk;
    for (int k = 0; k < rows; k++) {
      if (k < np + nb) {
        nn_params *list = k < np ? lp : lb;
        int j = k < np ? k : k - np;
        snprintf(item, sizeof item, "%s %s%s", nn_params_name(list, j),
                 ad_shape_str(nn_params_tensor(list, j), buf, sizeof buf),
                 k < np ? "" : " (buffer)");
        snprintf(count, sizeof count, "%lld", (long long)nn_params_tensor(list, j)->size);
      } else {
        snprintf(item, sizeof item, "%s", k ? "" : "-");
        snprintf(count, sizeof count, "%s", k ? "" : "0");
      }
      summary_row(p, k ? "" : nn_layer_name(l), k < nk ? kind[k] : "", k ? "" : out, item, count);
    }
  }
  /* parameters the model owns directly (custom models) */
  for (int i = 0; i < nn_params_count(m->params); i++) {
    const char *name = nn_params_name(m->params, i);
    ad_tensor *t = nn_params_tensor(m->params, i);
    bool in_layer = false; /* by the tensor: the model may own "enc.scale" beside layer "enc" */
    for (int k = 0; k < m->nlayers && !in_layer; k++) {
      nn_params *lp = nn_layer_params(m->layers[k]);
      for (int j = 0; j < nn_params_count(lp) && !in_layer; j++)
        in_layer = nn_params_tensor(lp, j) == t;
    }
    if (in_layer) continue;
    snprintf(count, sizeof count, "%lld", (long long)t->size);
    summary_row(p, name, "param", "-", ad_shape_str(t, buf, sizeof buf), count);
  }
}

void nn_model_summary(const nn_model *m, FILE *f) {
  if (!m || !f) return;
  summary_pass p = {0};
  for (int i = 0; i < m->nlayers; i++) p.shapes |= nn_layer_output_shape(m->layers[i], NULL) >= 0;
  summary_rows(m, &p);
  p.f = f;
  summary_rows(m, &p);
  fprintf(f, "total parameters: %lld\n", (long long)nn_params_numel(m->params));
  if (nn_params_count(m->buffers) > 0)
    fprintf(f, "non-trainable buffers: %lld\n", (long long)nn_params_numel(m->buffers));
}
