/* plot.h: a small dependency-free SVG line-chart writer for the teaching
 * examples and the `plot` tool (CSV -> SVG). Not part of the installed
 * library.
 *
 * One chart: several series of (x, y) points drawn as lines, labelled axes
 * with "nice" ticks (1, 2, 5 x 10^k; decades on a log axis), a legend, an
 * optional title and log scale on either axis. Non-finite points (and,
 * on a log axis, points <= 0) break a line rather than end the chart.
 * Labels and the title are UTF-8: a byte that is not, or a character XML
 * does not allow (a control character other than tab, LF and CR; U+FFFE,
 * U+FFFF), is drawn as U+FFFD, so the SVG is always well-formed. The
 * output depends only on the input: fixed size, fixed colours, numbers
 * printed with a fixed number of decimals, no date or random ids, so a
 * picture regenerated from the same data is the same file. */
#ifndef PLOT_H
#define PLOT_H

#include <stdbool.h>
#include <stdio.h>

typedef struct plot_series {
  const char *label; /* in the legend; NULL or "" for none */
  int n;             /* number of points */
  const double *x;   /* n values; NULL: 1, 2, ..., n */
  const double *y;   /* n values */
} plot_series;

typedef struct plot_opts {
  const char *title, *xlabel, *ylabel; /* NULL: none */
  bool logx, logy;                     /* log10 scale */
  int width, height;                   /* pixels; 0: 640 x 400 */
} plot_opts;

/* Writes the chart of the ns series to f. Returns 0, or -1 when there is
 * no point to draw (every point non-finite or outside a log axis), the
 * values' range cannot be computed in doubles (1e308 and -1e308; a
 * constant subnormal), or writing fails; *why (may be NULL) then gets a static message. */
int plot_svg(FILE *f, const plot_opts *o, int ns, const plot_series *s, const char **why);

/* plot_svg into the file path: written to a temporary file of its own
 * beside it, then renamed over it, so a reader sees the old file or the
 * whole new one (an existing file's mode is kept). A symbolic link is
 * followed and its target written; the link stays (a dangling one is
 * refused). A device or FIFO, such as /dev/stdout, is written to
 * directly. Returns 0 or -1 with a message in *why (may be NULL). */
int plot_svg_file(const char *path, const plot_opts *o, int ns, const plot_series *s,
                  const char **why);

#endif /* PLOT_H */
