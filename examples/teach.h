/* teach.h: what the teaching examples (vanishing, optimizers,
 * learning_rate, overfitting, exploding; docs/faq.md) share, header-only:
 * their command line, a CSV writer for tables of columns, the gradient
 * norm of one tensor, a synthetic classification problem, and the chart
 * (tools/plot/plot.h). Each example writes NAME.csv into --out (default
 * "."), and with --plot its pictures NAME*.svg next to it. */
#ifndef TEACH_H
#define TEACH_H

#include <autodiff/nn.h>
#include <plot.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One command-line flag: "--name VALUE" (int, double, string) or "--name"
 * alone (bool). */
typedef struct teach_flag {
  const char *name;
  char kind; /* 'i' int, 'd' double, 's' string, 'b' bool */
  void *val;
} teach_flag;

/* Parses argv into the n flags; prints the usage and returns false on an
 * unknown flag or a missing or bad value. */
static inline bool teach_parse(int argc, char **argv, int n, const teach_flag *f) {
  for (int i = 1; i < argc; i++) {
    int k = 0;
    while (k < n && strcmp(argv[i], f[k].name) != 0) k++;
    char *end = NULL;
    if (k < n && f[k].kind == 'b') {
      *(bool *)f[k].val = true;
      continue;
    }
    if (k == n || i + 1 == argc) goto bad;
    const char *v = argv[++i];
    if (f[k].kind == 'i') *(int *)f[k].val = (int)strtol(v, &end, 10);
    if (f[k].kind == 'd') *(double *)f[k].val = strtod(v, &end);
    if (f[k].kind == 's') *(const char **)f[k].val = v;
    if (end && (end == v || *end)) goto bad;
  }
  return true;
bad:
  fprintf(stderr, "usage: %s", argv[0]);
  for (int k = 0; k < n; k++)
    fprintf(stderr, " [%s%s]", f[k].name,
            f[k].kind == 'b'   ? ""
            : f[k].kind == 's' ? " TEXT"
                               : " N");
  fputc('\n', stderr);
  return false;
}

/* dir/name in one of four rotating buffers. */
static inline const char *teach_path(const char *dir, const char *name) {
  static char buf[4][1024];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

/* Writes ncol columns of nrow values under their names as CSV. Returns
 * false after printing why. */
static inline bool teach_csv(const char *path, int ncol, const char *const *names, int nrow,
                             double *const *cols) {
  FILE *f = fopen(path, "w");
  if (!f) {
    perror(path);
    return false;
  }
  for (int c = 0; c < ncol; c++) fprintf(f, "%s%s", c ? "," : "", names[c]);
  for (int r = 0; r < nrow; r++) {
    fputc('\n', f);
    for (int c = 0; c < ncol; c++) fprintf(f, c ? ",%.9g" : "%.9g", cols[c][r]);
  }
  fputc('\n', f);
  return fclose(f) == 0;
}

/* Draws the ns series into path. Returns false after printing why. */
static inline bool teach_plot(const char *path, const plot_opts *o, int ns, const plot_series *s) {
  const char *why;
  if (plot_svg_file(path, o, ns, s, &why) == 0) return true;
  fprintf(stderr, "%s: %s\n", path, why);
  return false;
}

/* ||grad of t||, the L2 norm of its gradient (0 when it has none). */
static inline double teach_grad_norm(const ad_tensor *t) {
  double sq = 0;
  for (int64_t k = 0; t->grad && k < t->size; k++) {
    double g = ad_tensor_get(t->grad, k);
    sq += g * g;
  }
  return sqrt(sq);
}

/* A synthetic problem: n points of dim normal features, labelled by
 * which of classes random directions they point most along. */
static inline void teach_blobs(ad_ctx *ctx, int64_t n, int64_t dim, int classes, uint64_t seed,
                               ad_tensor **x, ad_tensor **y) {
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  int64_t sx[2] = {n, dim}, sw[2] = {classes, dim};
  ad_tensor *w = ad_zeros(ctx, AD_F32, 2, sw);
  *x = ad_zeros(ctx, AD_F32, 2, sx);
  *y = ad_zeros(ctx, AD_I32, 1, sx);
  for (int64_t k = 0; k < w->size; k++) ad_tensor_set(w, k, ad_rng_normal(&rng));
  for (int64_t i = 0; i < n; i++) {
    int best = 0;
    double best_v = -INFINITY;
    for (int64_t k = 0; k < dim; k++) ad_tensor_set(*x, i * dim + k, ad_rng_normal(&rng));
    for (int c = 0; c < classes; c++) {
      double v = 0;
      for (int64_t k = 0; k < dim; k++)
        v += ad_tensor_get(w, c * dim + k) * ad_tensor_get(*x, i * dim + k);
      if (v > best_v) best_v = v, best = c;
    }
    ad_tensor_set(*y, i, best);
  }
  ad_tensor_free(w);
}

#endif /* TEACH_H */
