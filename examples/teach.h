/* teach.h: what the teaching examples (vanishing, exploding, optimizers,
 * learning_rate, overfitting, gradient_descent; docs/faq.md) share,
 * header-only, so that each example's file holds only its experiment:
 *
 *   teach_parse   the command line: the example's own flags, and --seed N,
 *                 --out DIR (default ".") and --plot, which every example has
 *   teach_table   columns of numbers by name, saved as DIR/NAME.csv
 *   teach_chart   some columns against one, drawn as DIR/NAME.svg with
 *                 --plot (the chart writer of tools/plot/plot.h)
 *   teach_mlp     a Sequential of Dense layers with one activation between
 *   teach_blobs   a synthetic classification problem
 *   teach_first_rows  the first rows of a data set
 *   teach_grad_norm  the L2 norm of a tensor's gradient
 *
 * Running out of memory ends the example with a message (exit status 1). */
#ifndef TEACH_H
#define TEACH_H

#include <autodiff/nn.h>
#include <plot.h>

#include "args.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One command-line flag: "--name VALUE" (int, double, string) or "--name"
 * alone (bool). An int must lie in [lo, hi] (hi 0: up to INT_MAX), so
 * that a flag left at {name, 'i', &v} takes only numbers >= 0. */
typedef struct teach_flag {
  const char *name;
  char kind; /* 'i' int, 'd' double, 's' string, 'b' bool */
  void *val;
  int lo, hi;
} teach_flag;

/* The flags every example has. */
typedef struct teach_opts {
  int seed;        /* --seed N, default 1 */
  const char *out; /* --out DIR, default ".": where the CSV and SVG files go */
  bool plot;       /* --plot: draw the pictures too */
} teach_opts;

static inline void *teach_alloc(size_t n) {
  void *p = calloc(1, n);
  if (!p) {
    fputs("out of memory\n", stderr);
    exit(1);
  }
  return p;
}

/* Parses argv into the n flags f and the common flags o. On an unknown
 * flag or a missing or bad value, says which and prints the usage, then
 * returns false. */
static inline bool teach_parse(int argc, char **argv, int n, const teach_flag *f, teach_opts *o) {
  *o = (teach_opts){1, ".", false};
  teach_flag all[24] = {{"--seed", 'i', &o->seed, 0, 0},
                        {"--out", 's', &o->out, 0, 0},
                        {"--plot", 'b', &o->plot, 0, 0}};
  int na = 3;
  for (int k = 0; k < n && na < 24; k++) all[na++] = f[k];
  for (int i = 1; i < argc; i++) {
    int k = 0;
    while (k < na && strcmp(argv[i], all[k].name) != 0) k++;
    if (k == na) {
      fprintf(stderr, "%s: unknown flag %s\n", argv[0], argv[i]);
      goto bad;
    }
    if (all[k].kind == 'b') {
      *(bool *)all[k].val = true;
      continue;
    }
    if (i + 1 == argc) {
      fprintf(stderr, "%s: %s needs a value\n", argv[0], argv[i]);
      goto bad;
    }
    const char *v = argv[++i]; /* numbers read strictly (args.h) */
    long long x, hi = all[k].hi ? all[k].hi : INT_MAX;
    if (all[k].kind == 'i') {
      if (!arg_ll(v, all[k].lo, hi, &x)) {
        fprintf(stderr, "%s: %s '%s': want an integer in [%d, %lld]\n", argv[0], all[k].name, v,
                all[k].lo, hi);
        goto bad;
      }
      *(int *)all[k].val = (int)x;
    }
    if (all[k].kind == 'd' && !arg_double(v, all[k].val)) {
      fprintf(stderr, "%s: %s '%s': want a finite number\n", argv[0], all[k].name, v);
      goto bad;
    }
    if (all[k].kind == 's') *(const char **)all[k].val = v;
  }
  return true;
bad:
  fprintf(stderr, "usage: %s", argv[0]);
  for (int k = 0; k < na; k++)
    fprintf(stderr, " [%s%s]", all[k].name,
            all[k].kind == 'b'   ? ""
            : all[k].kind == 's' ? " TEXT"
                                 : " N");
  fputc('\n', stderr);
  return false;
}

/* A table: up to TEACH_COLS named columns of nrow numbers each. */
#define TEACH_COLS 32
typedef struct teach_table {
  int ncol, nrow; /* nrow may be lowered before saving: only those rows are written */
  char name[TEACH_COLS][48];
  double *col[TEACH_COLS];
} teach_table;

/* A table of nrow rows and no columns yet; teach_table_free frees it. */
static inline teach_table *teach_table_new(int nrow) {
  teach_table *t = teach_alloc(sizeof *t);
  t->nrow = nrow;
  return t;
}

static inline void teach_table_free(teach_table *t) {
  for (int c = 0; c < t->ncol; c++) free(t->col[c]);
  free(t);
}

/* The index of the column called name, or -1. */
static inline int teach_find(const teach_table *t, const char *name) {
  for (int c = 0; c < t->ncol; c++)
    if (!strcmp(t->name[c], name)) return c;
  return -1;
}

/* The column whose name is the printf-style fmt: an existing one, or a
 * new one filled with NaN (a point that is never set is not drawn and
 * reads "nan" in the CSV). */
#if defined(__GNUC__)
#define TEACH_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TEACH_PRINTF(f, a)
#endif
static inline TEACH_PRINTF(2, 3) double *teach_col(teach_table *t, const char *fmt, ...) {
  char name[48];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  int c = teach_find(t, name);
  if (c >= 0) return t->col[c];
  if (t->ncol == TEACH_COLS) {
    fprintf(stderr, "teach_col: more than %d columns\n", TEACH_COLS);
    exit(1);
  }
  double *v = teach_alloc((size_t)(t->nrow > 0 ? t->nrow : 1) * sizeof *v);
  for (int r = 0; r < t->nrow; r++) v[r] = NAN;
  strcpy(t->name[t->ncol], name);
  return t->col[t->ncol++] = v;
}

/* dir/file; the path lives until the next call. */
static inline const char *teach_path(const teach_opts *o, const char *file) {
  static char buf[1024];
  snprintf(buf, sizeof buf, "%s/%s", o->out, file);
  return buf;
}

/* Writes the table's columns, in the order they were made, as the CSV
 * file o->out/file. Returns false after printing why. */
static inline bool teach_save(const teach_table *t, const teach_opts *o, const char *file) {
  const char *path = teach_path(o, file);
  FILE *f = fopen(path, "w");
  if (!f) {
    perror(path);
    return false;
  }
  for (int c = 0; c < t->ncol; c++) fprintf(f, "%s%s", c ? "," : "", t->name[c]);
  for (int r = 0; r < t->nrow; r++) {
    fputc('\n', f);
    for (int c = 0; c < t->ncol; c++) fprintf(f, c ? ",%.9g" : "%.9g", t->col[c][r]);
  }
  fputc('\n', f);
  if (fclose(f) == 0) return true;
  perror(path);
  return false;
}

/* With --plot, draws the ns series as the SVG file o->out/file (for
 * series that teach_chart cannot make: each with its own x). Returns false
 * after printing why. */
static inline bool teach_plot(const teach_opts *o, const char *file, const plot_opts *po, int ns,
                              const plot_series *s) {
  const char *why, *path = teach_path(o, file);
  if (!o->plot || plot_svg_file(path, po, ns, s, &why) == 0) return true;
  fprintf(stderr, "%s: %s\n", path, why);
  return false;
}

/* Whether name matches pattern, where one '*' stands for any text. */
static inline bool teach_match(const char *pattern, const char *name) {
  const char *star = strchr(pattern, '*');
  if (!star) return !strcmp(pattern, name);
  size_t pre = (size_t)(star - pattern), post = strlen(star + 1), n = strlen(name);
  return n >= pre + post && !strncmp(name, pattern, pre) && !strcmp(name + n - post, star + 1);
}

/* With --plot, draws columns of t against its column x as the SVG file
 * o->out/file (nothing without --plot). The arguments after x, ended by
 * NULL, name the columns: "name" (the legend says name), "name=label"
 * when name is a column, or a pattern with one '*' for every column it
 * matches ("*_val_loss"), in the table's order. Returns false after
 * printing why (a name that matches no column, a picture with no point). */
static inline bool teach_chart(teach_table *t, const teach_opts *o, const char *file, plot_opts po,
                               const char *x, ...) {
  if (!o->plot) return true;
  plot_series s[TEACH_COLS];
  char label[TEACH_COLS][48];
  int n = 0, cx = teach_find(t, x), found = cx >= 0;
  va_list ap;
  va_start(ap, x);
  for (const char *spec; found && (spec = va_arg(ap, const char *));) {
    const char *eq = strchr(spec, '=');
    char name[48];
    snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - spec) : (int)strlen(spec), spec);
    if (!eq || teach_find(t, name) < 0) snprintf(name, sizeof name, "%s", spec), eq = NULL;
    found = 0;
    for (int c = 0; c < t->ncol && n < TEACH_COLS; c++)
      if (c != cx && teach_match(name, t->name[c])) {
        snprintf(label[n], sizeof label[n], "%s", eq ? eq + 1 : t->name[c]);
        s[n] = (plot_series){label[n], t->nrow, t->col[cx], t->col[c]}, n++, found = 1;
      }
  }
  va_end(ap);
  if (found) return teach_plot(o, file, &po, n, s);
  fprintf(stderr, "%s: a column named there is not in the table\n", teach_path(o, file));
  return false;
}

/* A Sequential of n Dense layers, sizes[0] -> sizes[1] -> ... -> sizes[n],
 * with the activation act between two layers (not after the last), drawn
 * from seed; o (NULL: the defaults) sets every layer's init. */
static inline nn_model *teach_mlp(ad_ctx *ctx, uint64_t seed, nn_act act, const nn_dense_opts *o,
                                  int n, const int64_t *sizes) {
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  nn_model *m = nn_sequential_new(ctx);
  for (int l = 0; l < n; l++) {
    nn_model_add(m, nn_dense_new(ctx, sizes[l], sizes[l + 1], &rng, o));
    if (l < n - 1) nn_model_add(m, nn_activation_new(ctx, act));
  }
  return m;
}

/* The first n rows of t as a new tensor (ad_tensor_free frees it). */
static inline ad_tensor *teach_first_rows(ad_ctx *ctx, const ad_tensor *t, int64_t n) {
  int64_t *rows = teach_alloc((size_t)n * sizeof *rows);
  for (int64_t i = 0; i < n; i++) rows[i] = i;
  ad_tensor *r = nn_take_rows(ctx, t, n, rows);
  free(rows);
  return r;
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
