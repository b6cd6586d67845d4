/* plot.c: the SVG line-chart writer of plot.h. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* stat, lstat, mkstemp, fchmod */
#endif
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* realpath */
#endif
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Line colours, in series order (then again). */
static const char *const colours[] = {"#1b6ac9", "#d43d1a", "#2a9d3f", "#e69b00", "#7b4bb7",
                                      "#8a5a2b", "#d1458f", "#555555", "#17a2b8", "#9aa51e"};
#define N_COLOURS (int)(sizeof colours / sizeof colours[0])
#define CHAR_W    7.5 /* approximate width of a 12 px sans-serif character */

/* plot_svg_file's temporary name keeps at most this many bytes of the
 * path's last component, so that it fits NAME_MAX (255) whenever that
 * component does: ".XXXXXX" adds 7 (as nn/checkpoint.c's temporaries). */
#define TMP_BASE_MAX 200

/* One axis: the data range mapped to [p0, p1] pixels. */
typedef struct axis {
  bool log;
  double lo, hi; /* in axis units (log10 of the value on a log axis) */
  double step;   /* between ticks, in axis units */
  double p0, p1; /* pixels of lo and hi */
  int decimals;  /* of tick labels on a linear axis; -1: %g */
} axis;

static bool usable(double v, bool log) { return isfinite(v) && (!log || v > 0); }

static double to_axis(const axis *a, double v) { return a->log ? log10(v) : v; }

static double to_px(const axis *a, double v) {
  return a->p0 + (to_axis(a, v) - a->lo) / (a->hi - a->lo) * (a->p1 - a->p0);
}

/* 1, 2 or 5 x 10^k, the first at least raw. */
static double nice_step(double raw) {
  double p = pow(10, floor(log10(raw))), f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

/* Chooses the range and ticks for data in [mn, mx] (axis units); whole
 * numbers (epochs, steps) get ticks at least 1 apart. */
static void axis_fit(axis *a, double mn, double mx, bool whole) {
  if (a->log) {
    a->lo = floor(mn);
    a->hi = ceil(mx);
    if (a->hi <= a->lo) a->hi = a->lo + 1;
    a->step = ceil((a->hi - a->lo) / 8); /* at most 8 decades labelled */
    a->decimals = -1;
    return;
  }
  if (mx <= mn) { /* one value: a range around it */
    double d = mn != 0 ? fabs(mn) * 0.1 : 1;
    mn -= d, mx += d;
  }
  a->step = nice_step((mx - mn) / 6);
  if (whole && a->step < 1) a->step = 1;
  a->lo = floor(mn / a->step) * a->step;
  a->hi = ceil(mx / a->step) * a->step;
  double big = fmax(fabs(a->lo), fabs(a->hi));
  a->decimals = big >= 1e6 || a->step < 1e-4 ? -1 : a->step >= 1 ? 0 : (int)ceil(-log10(a->step));
}

static void tick_label(const axis *a, double t, char *buf, size_t n) {
  if (a->log && fabs(t) >= 5)
    snprintf(buf, n, "1e%d", (int)t);
  else if (a->log)
    snprintf(buf, n, "%g", pow(10, t));
  else if (a->decimals < 0)
    snprintf(buf, n, "%g", t);
  else
    snprintf(buf, n, "%.*f", a->decimals, fabs(t) < a->step * 1e-9 ? 0.0 : t);
}

/* The length of the well-formed UTF-8 character at s (1 to 4 bytes), or 0
 * when s starts none (a stray byte, an overlong form, a surrogate). As
 * autodiff/graph.c's, which plot does not link. */
static int utf8_len(const unsigned char *s) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  int n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
  unsigned hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
  if (!n || s[1] < lo || s[1] > hi) return 0;
  for (int k = 2; k < n; k++)
    if (s[k] < 0x80 || s[k] > 0xBF) return 0;
  return n;
}

/* Text as XML character data: &, <, > and " escaped, and what XML 1.0
 * does not allow in a document (a control character other than tab, LF
 * and CR; U+FFFE and U+FFFF; a byte that is not UTF-8) replaced by U+FFFD,
 * so that the SVG is well-formed whatever a label holds. */
static void put_text(FILE *f, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; p && *p;) {
    int n = utf8_len(p);
    if (!n || (*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r') ||
        (n == 3 && p[0] == 0xEF && p[1] == 0xBF && p[2] >= 0xBE))
      fputs("\xEF\xBF\xBD", f); /* U+FFFD in UTF-8 */
    else if (*p == '&')
      fputs("&amp;", f);
    else if (*p == '<')
      fputs("&lt;", f);
    else if (*p == '>')
      fputs("&gt;", f);
    else if (*p == '"')
      fputs("&quot;", f);
    else
      fwrite(p, 1, (size_t)n, f);
    p += n ? n : 1; /* a stray byte is replaced alone */
  }
}

static int nticks(const axis *a) { return (int)floor((a->hi - a->lo) / a->step + 1e-9) + 1; }

int plot_svg(FILE *f, const plot_opts *o, int ns, const plot_series *s, const char **why) {
  plot_opts d = {0};
  if (!o) o = &d;
  int W = o->width > 0 ? o->width : 640, H = o->height > 0 ? o->height : 400;
  axis ax = {.log = o->logx}, ay = {.log = o->logy};
  double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
  size_t legend = 0;
  bool xwhole = !ax.log;
  for (int i = 0; i < ns; i++) {
    for (int k = 0; k < s[i].n; k++) {
      double x = s[i].x ? s[i].x[k] : k + 1, y = s[i].y[k];
      if (!usable(x, ax.log) || !usable(y, ay.log)) continue;
      xwhole = xwhole && x == floor(x);
      x = to_axis(&ax, x), y = to_axis(&ay, y);
      xmn = fmin(xmn, x), xmx = fmax(xmx, x), ymn = fmin(ymn, y), ymx = fmax(ymx, y);
    }
    if (s[i].label && strlen(s[i].label) > legend) legend = strlen(s[i].label);
  }
  if (!(xmn <= xmx)) {
    if (why) *why = "no finite point to draw";
    return -1;
  }
  axis_fit(&ax, xmn, xmx, xwhole);
  axis_fit(&ay, ymn, ymx, false);
  if (!(isfinite(ax.hi - ax.lo) && isfinite(ay.hi - ay.lo) && ax.step > 0 && ay.step > 0)) {
    /* else NaN pixels: a span past 1e308, or subnormal values whose
     * range underflows to 0 */
    if (why) *why = "the values' range cannot be drawn in doubles (it overflows or underflows)";
    return -1;
  }

  /* margins: y tick labels on the left, the legend on the right */
  char buf[64];
  size_t ylab = 0;
  for (int t = 0; t < nticks(&ay); t++) {
    tick_label(&ay, ay.lo + t * ay.step, buf, sizeof buf);
    if (strlen(buf) > ylab) ylab = strlen(buf);
  }
  double left = 20 + (o->ylabel ? 18 : 0) + CHAR_W * (double)ylab;
  double right = legend ? 46 + CHAR_W * (double)legend : 20;
  double top = o->title ? 34 : 14, bottom = 34 + (o->xlabel ? 18 : 0);
  ax.p0 = left, ax.p1 = W - right;
  ay.p0 = H - bottom, ay.p1 = top;

  fprintf(f,
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
          "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
          W, H, W, H);
  fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
  if (o->title) {
    fprintf(f, "<text x=\"%.1f\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">",
            (ax.p0 + ax.p1) / 2);
    put_text(f, o->title);
    fputs("</text>\n", f);
  }
  /* grid, ticks and their labels */
  fputs("<g stroke=\"#dddddd\" stroke-width=\"1\">\n", f);
  for (int t = 0; t < nticks(&ax); t++) {
    double px = ax.p0 + t * ax.step / (ax.hi - ax.lo) * (ax.p1 - ax.p0);
    fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"/>\n", px, ay.p0, px, ay.p1);
  }
  for (int t = 0; t < nticks(&ay); t++) {
    double py = ay.p0 + t * ay.step / (ay.hi - ay.lo) * (ay.p1 - ay.p0);
    fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"/>\n", ax.p0, py, ax.p1, py);
  }
  fputs("</g>\n<g text-anchor=\"middle\">\n", f);
  for (int t = 0; t < nticks(&ax); t++) {
    double px = ax.p0 + t * ax.step / (ax.hi - ax.lo) * (ax.p1 - ax.p0);
    tick_label(&ax, ax.lo + t * ax.step, buf, sizeof buf);
    fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"black\"/>", px,
            ay.p0, px, ay.p0 + 5);
    fprintf(f, "<text x=\"%.2f\" y=\"%.2f\">%s</text>\n", px, ay.p0 + 18, buf);
  }
  fputs("</g>\n<g text-anchor=\"end\">\n", f);
  for (int t = 0; t < nticks(&ay); t++) {
    double py = ay.p0 + t * ay.step / (ay.hi - ay.lo) * (ay.p1 - ay.p0);
    tick_label(&ay, ay.lo + t * ay.step, buf, sizeof buf);
    fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"black\"/>",
            ax.p0 - 5, py, ax.p0, py);
    fprintf(f, "<text x=\"%.2f\" y=\"%.2f\">%s</text>\n", ax.p0 - 8, py + 4, buf);
  }
  fputs("</g>\n", f);
  fprintf(f,
          "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" "
          "stroke=\"black\"/>\n",
          ax.p0, ay.p1, ax.p1 - ax.p0, ay.p0 - ay.p1);
  if (o->xlabel) {
    fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">", (ax.p0 + ax.p1) / 2,
            (double)H - 10);
    put_text(f, o->xlabel);
    fputs("</text>\n", f);
  }
  if (o->ylabel) {
    double cy = (ay.p0 + ay.p1) / 2;
    fprintf(f,
            "<text x=\"16\" y=\"%.2f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.2f)\">",
            cy, cy);
    put_text(f, o->ylabel);
    fputs("</text>\n", f);
  }
  /* the series: one path each, a new segment after every unusable point */
  for (int i = 0; i < ns; i++) {
    const char *c = colours[i % N_COLOURS];
    fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\" d=\"", c);
    bool pen = false;
    for (int k = 0; k < s[i].n; k++) {
      double x = s[i].x ? s[i].x[k] : k + 1, y = s[i].y[k];
      if (!usable(x, ax.log) || !usable(y, ay.log)) {
        pen = false;
        continue;
      }
      fprintf(f, "%s%.2f %.2f", pen ? " L" : (k ? " M" : "M"), to_px(&ax, x), to_px(&ay, y));
      pen = true;
    }
    fputs("\"/>\n", f);
    if (s[i].label && *s[i].label) {
      double ly = ay.p1 + 8 + 18 * i;
      fprintf(f,
              "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" "
              "stroke-width=\"2\"/><text x=\"%.2f\" y=\"%.2f\">",
              ax.p1 + 8, ly, ax.p1 + 28, ly, c, ax.p1 + 32, ly + 4);
      put_text(f, s[i].label);
      fputs("</text>\n", f);
    }
  }
  fputs("</svg>\n", f);
  if (ferror(f)) {
    if (why) *why = "write error";
    return -1;
  }
  return 0;
}

int plot_svg_file(const char *path, const plot_opts *o, int ns, const plot_series *s,
                  const char **why) {
  struct stat sb;
  bool exists = stat(path, &sb) == 0; /* through links */
  if (exists && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)) {
    /* a device or FIFO (-o /dev/stdout): written to, never renamed over */
    FILE *f = fopen(path, "w");
    if (!f) {
      if (why) *why = "cannot open the file";
      return -1;
    }
    int rc = plot_svg(f, o, ns, s, why);
    if (fclose(f) != 0 && rc == 0) {
      rc = -1;
      if (why) *why = "write error";
    }
    return rc;
  }
  char *real = NULL; /* a symbolic link's target: written, the link stays */
  if (lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode)) {
    if (!(real = realpath(path, NULL))) {
      if (why) *why = "cannot follow the symbolic link (dangling, a loop, or no access)";
      return -1;
    }
    path = real;
    exists = stat(path, &sb) == 0;
  }
  /* a temporary of its own beside path, renamed over it once complete:
   * the file is the old one or the whole new one, never a part. Its name
   * keeps at most TMP_BASE_MAX bytes of path's last component. */
  const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
  size_t blen = strlen(base);
  size_t keep = (size_t)(base - path) + (blen > TMP_BASE_MAX ? TMP_BASE_MAX : blen);
  char *tmp = malloc(keep + 8);
  if (!tmp) {
    if (why) *why = "out of memory";
    free(real);
    return -1;
  }
  snprintf(tmp, keep + 8, "%.*s.XXXXXX", (int)keep, path);
  int fd = mkstemp(tmp);
  FILE *f = NULL;
  int rc = -1;
  if (fd < 0) {
    if (why) *why = "cannot create the file";
  } else {
    mode_t mode;
    if (exists && S_ISREG(sb.st_mode)) {
      mode = sb.st_mode & 07777; /* the file's own */
    } else {
      mode_t mask = umask(0); /* (read, then put back) a new file's usual mode */
      umask(mask);
      mode = 0666 & ~mask;
    }
    if (fchmod(fd, mode) != 0 || !(f = fdopen(fd, "w"))) {
      if (why) *why = "cannot create the file";
      close(fd);
    } else {
      rc = plot_svg(f, o, ns, s, why);
      if (fclose(f) != 0 && rc == 0) {
        rc = -1;
        if (why) *why = "write error";
      }
      if (rc == 0 && rename(tmp, path) != 0) {
        rc = -1;
        if (why) *why = "cannot replace the file";
      }
    }
    if (rc != 0) remove(tmp);
  }
  free(tmp);
  free(real);
  return rc;
}
