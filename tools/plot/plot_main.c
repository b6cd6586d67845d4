/* plot: CSV columns -> an SVG line chart (plot.h).
 *
 *   plot -o OUT.svg [--title T] [--xlabel L] [--ylabel L] [--logx] [--logy]
 *        [--x COLUMN] FILE.csv:COLUMN[=LABEL] ...
 *
 * Each series is a column of a CSV file with a header line (such as
 * nn_history_write_csv writes; RFC 4180: a quoted field may hold commas,
 * line breaks and quotes, doubled); a COLUMN ending in '*' stands for every
 * column starting with what precedes it ("grad_norm/" then a star), each labelled with
 * its name. A file name or column name may hold ':' and '=' (a layer named
 * "enc:1"): FILE is the shortest prefix of the argument before a ':' that
 * names a file that can be opened, and COLUMN[=LABEL] splits at the first
 * '=' whose left side names a column (the whole when it is one). x is the column --x of the same
 * file (default "epoch" when the file has it, else 1, 2, ...). Values that do not parse as numbers
 * ("nan", empty) break the line. Exit status 0, 1 on bad data, 2 on bad usage. */
#include "plot.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_COLS   256
#define MAX_SERIES 64

typedef struct table {
  int ncol, nrow;
  char *names[MAX_COLS];
  double *cols[MAX_COLS];
} table;

static int usage(void) {
  fputs("usage: plot -o OUT.svg [--title T] [--xlabel L] [--ylabel L] [--logx] [--logy]\n"
        "            [--x COLUMN] FILE.csv:COLUMN[=LABEL] ...\n",
        stderr);
  return 2;
}

/* The next field of the record at *p (quotes removed, "" unescaped), in
 * place; *p moves past it and its comma. A quoted field may hold commas
 * and line breaks. */
static char *field(char **p) {
  char *s = *p, *w = s, *start = s;
  bool q = *s == '"';
  if (q) s++;
  for (; *s; s++) {
    if (q && *s == '"') {
      if (s[1] == '"') {
        *w++ = '"', s++;
        continue;
      }
      q = false;
      continue;
    }
    if (!q && *s == ',') break;
    *w++ = *s;
  }
  char *next = *s == ',' ? s + 1 : s;
  *w = 0;
  *p = next;
  return start;
}

/* Reads the next record of f into *buf (of *cap bytes, grown as needed)
 * as RFC 4180 has it: a line, or several when a quoted field holds line
 * breaks (nn_history_write_csv quotes a key with one, such as a layer's
 * name). The record's own line break, LF or CR LF, is dropped. Returns 1,
 * 0 at the end of the file or on a read error (ferror tells), or -1 when
 * out of memory. */
static int read_record(FILE *f, char **buf, size_t *cap) {
  size_t n = 0;
  /* as field() reads it: a quote opens a field's quotes only at its
   * start; inside, a quote closes them, and one right after that ("")
   * reopens them; elsewhere it is a character */
  bool start = true, inq = false, closed = false;
  int c;
  while (true) {
    if (n + 2 > *cap) { /* room for c and the terminator */
      size_t grown_cap = *cap ? 2 * *cap : 256;
      char *grown = realloc(*buf, grown_cap);
      if (!grown) return -1;
      *buf = grown, *cap = grown_cap;
    }
    if ((c = getc(f)) == EOF || (c == '\n' && !inq)) break;
    (*buf)[n++] = (char)c;
    bool toggle = c == '"' && (start || inq || closed);
    if (toggle) inq = !inq;
    closed = toggle && !inq;
    start = c == ',' && !inq;
  }
  if (c == EOF && n == 0) return 0;
  /* a CR before the break is outside quotes: inside, the LF would not
   * have ended the record */
  if (n && (*buf)[n - 1] == '\r') n--;
  (*buf)[n] = 0;
  return 1;
}

/* Reads path into t. Returns 0, or -1 after printing why. */
static int read_csv(const char *path, table *t) {
  FILE *f = fopen(path, "r");
  if (!f) {
    perror(path);
    return -1;
  }
  memset(t, 0, sizeof *t);
  char *line = NULL;
  size_t cap = 0;
  int cap_rows = 0, rc = 0, got;
  for (int ln = 0; (got = read_record(f, &line, &cap)) > 0; ln++) {
    char *p = line;
    if (ln == 0) {
      while (*p || t->ncol == 0) {
        if (t->ncol == MAX_COLS) {
          fprintf(stderr, "%s: more than %d columns\n", path, MAX_COLS);
          rc = -1;
          break;
        }
        if (!(t->names[t->ncol] = strdup(field(&p)))) {
          fprintf(stderr, "%s: out of memory\n", path);
          rc = -1;
          break;
        }
        t->ncol++;
        if (!*p) break;
      }
      if (rc) break;
      continue;
    }
    if (!*line) continue;
    if (t->nrow == cap_rows) {
      if (cap_rows > INT_MAX / 2) {
        fprintf(stderr, "%s: more than %d rows\n", path, cap_rows);
        rc = -1;
        break;
      }
      cap_rows = cap_rows ? 2 * cap_rows : 64;
      for (int c = 0; c < t->ncol && !rc; c++) {
        double *grown = realloc(t->cols[c], (size_t)cap_rows * sizeof(double));
        if (grown)
          t->cols[c] = grown; /* else the old block stays in t, freed with it */
        else
          rc = -1;
      }
      if (rc) {
        fprintf(stderr, "%s: out of memory\n", path);
        break;
      }
    }
    for (int c = 0; c < t->ncol; c++) {
      char *v = field(&p), *end;
      double d = strtod(v, &end);
      t->cols[c][t->nrow] = end != v && *end == 0 ? d : NAN;
    }
    t->nrow++;
  }
  if (rc == 0 && got < 0) {
    fprintf(stderr, "%s: out of memory\n", path);
    rc = -1;
  } else if (rc == 0 && ferror(f)) {
    fprintf(stderr, "%s: read error\n", path);
    rc = -1;
  }
  free(line);
  fclose(f);
  return rc;
}

static void free_table(table *t) {
  for (int c = 0; c < t->ncol; c++) free(t->names[c]), free(t->cols[c]);
}

static int find_col(const table *t, const char *name) {
  for (int c = 0; c < t->ncol; c++)
    if (strcmp(t->names[c], name) == 0) return c;
  return -1;
}

/* Whether col (a name, or a prefix ending in '*') selects a column of t. */
static bool selects(const table *t, const char *col) {
  size_t cl = strlen(col);
  if (cl && col[cl - 1] == '*') {
    for (int c = 0; c < t->ncol; c++)
      if (strncmp(t->names[c], col, cl - 1) == 0) return true;
    return false;
  }
  return find_col(t, col) >= 0;
}

/* The ':' of spec that ends its file name: the first whose prefix names a
 * file that opens and is not a directory (fopen opens one: "run" beside
 * "run:1.csv"); else the last (read_csv then says why it fails). */
static char *file_colon(char *spec) {
  for (char *c = strchr(spec, ':'); c; c = strchr(c + 1, ':')) {
    *c = 0;
    struct stat sb;
    FILE *f = stat(spec, &sb) == 0 && !S_ISDIR(sb.st_mode) ? fopen(spec, "r") : NULL;
    *c = ':';
    if (f) {
      fclose(f);
      return c;
    }
  }
  return strrchr(spec, ':');
}

int main(int argc, char **argv) {
  plot_opts o = {0};
  const char *out = NULL, *xcol = NULL;
  plot_series s[MAX_SERIES];
  static table tables[MAX_SERIES];
  static char *specs[MAX_SERIES];
  int ns = 0, nt = 0, rc = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--logx"))
      o.logx = true;
    else if (!strcmp(a, "--logy"))
      o.logy = true;
    else if (!strcmp(a, "-o") && v)
      out = v, i++;
    else if (!strcmp(a, "--title") && v)
      o.title = v, i++;
    else if (!strcmp(a, "--xlabel") && v)
      o.xlabel = v, i++;
    else if (!strcmp(a, "--ylabel") && v)
      o.ylabel = v, i++;
    else if (!strcmp(a, "--x") && v)
      xcol = v, i++;
    else if (a[0] == '-' || nt == MAX_SERIES || !strchr(a, ':')) {
      rc = usage();
      break;
    } else {
      /* FILE:COLUMN[=LABEL] */
      char *spec = specs[nt] = strdup(a), *colon = spec ? file_colon(spec) : NULL;
      if (!spec) {
        fputs("plot: out of memory\n", stderr);
        rc = 1;
        break;
      }
      *colon = 0;
      table *t = &tables[nt++];
      if (read_csv(spec, t) != 0) {
        rc = 1;
        break;
      }
      char *col = colon + 1, *label = NULL;
      for (char *eq = strchr(col, '='); eq && !selects(t, col); eq = strchr(eq + 1, '=')) {
        *eq = 0; /* COLUMN=LABEL, if the left side names a column */
        if (selects(t, col)) {
          label = eq + 1;
          break;
        }
        *eq = '=';
      }
      int xc = find_col(t, xcol ? xcol : "epoch");
      if (xcol && xc < 0) {
        fprintf(stderr, "%s: no column \"%s\"\n", spec, xcol);
        rc = 1;
        break;
      }
      size_t cl = strlen(col);
      bool prefix = cl && col[cl - 1] == '*';
      int found = 0;
      for (int c = 0; c < t->ncol; c++) {
        if (prefix ? strncmp(t->names[c], col, cl - 1) != 0 : strcmp(t->names[c], col) != 0)
          continue;
        if (ns == MAX_SERIES) {
          fprintf(stderr, "plot: more than %d series\n", MAX_SERIES);
          rc = 1;
          break;
        }
        s[ns++] = (plot_series){.label = label && !prefix ? label : t->names[c],
                                .n = t->nrow,
                                .x = xc >= 0 ? t->cols[xc] : NULL,
                                .y = t->cols[c]};
        found++;
      }
      if (!found) {
        fprintf(stderr, "%s: no column \"%s\"\n", spec, col);
        rc = 1;
      }
      if (rc) break;
    }
  }
  const char *why = NULL;
  if (rc == 0 && (!out || ns == 0)) rc = usage();
  if (rc == 0 && plot_svg_file(out, &o, ns, s, &why) != 0) {
    fprintf(stderr, "plot %s: %s\n", out, why);
    rc = 1;
  }
  for (int i = 0; i < nt; i++) free_table(&tables[i]), free(specs[i]);
  return rc;
}
