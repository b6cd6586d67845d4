/* gen_derivatives: writes docs/derivatives.md from the op table.
 *
 *   gen_derivatives              print the markdown on stdout
 *   gen_derivatives -o FILE      write it to FILE
 *   gen_derivatives --check FILE exit 1 (with a hint) when FILE differs
 *
 * It includes autodiff/ops.def with its own AD_OP macro that keeps only the
 * name, arity, flags, whether there is a backward, and the two math strings,
 * so it needs none of the op functions and links against nothing. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad.h" /* AD_MAX_SRC */

typedef struct op_row {
  const char *name;
  int arity;
  const char *flags;    /* the flags expression, e.g. "0" or "AD_OP_VIEW" */
  const char *backward; /* the backward function's name */
  const char *math, *dmath;
} op_row;

static const op_row rows[] = {
#define AD_OP(E, nm, ar, fl, sh, fw, bw, sa, m, dm) {nm, ar, #fl, #bw, m, dm},
#include "ops.def"
#undef AD_OP
};
#define NROWS (sizeof rows / sizeof rows[0])

/* A growable text buffer, so --check can compare without a temporary file. */
typedef struct buf {
  char *p;
  size_t len, cap;
} buf;

static void put(buf *b, const char *s) {
  size_t n = strlen(s);
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      fprintf(stderr, "gen_derivatives: out of memory\n");
      exit(1);
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n + 1);
  b->len += n;
}

/* s inside a markdown table cell as a code span: '|' must be escaped. */
static void put_code_cell(buf *b, const char *s) {
  char tmp[2] = {0, 0};
  put(b, "`");
  for (; *s; s++) {
    if (*s == '|') {
      put(b, "\\|");
    } else {
      tmp[0] = *s;
      put(b, tmp);
    }
  }
  put(b, "`");
}

static void generate(buf *b) {
  char line[256];
  put(b, "# Derivatives of the built-in ops\n"
         "\n"
         "Generated from `autodiff/ops.def` by `tools/gen_derivatives.c`; do not edit by hand.\n"
         "After changing the op table, regenerate with\n"
         "`ninja -C build tools/derivatives.md && cp build/tools/derivatives.md docs/`.\n"
         "The test `meson test -C build --suite docs` fails while this file is out of date.\n"
         "\n"
         "Notation: `x`, `a`, `b` are inputs, `y` the output, `dy` = dL/dy the incoming\n"
         "gradient, and `dx += ...` adds into the input's gradient. `[P]` is 1 where P holds\n"
         "and 0 elsewhere. `i0`, `i1`, ... are the op's integer attributes (`ad_attrs.i`);\n"
         "`s`, `p` and `alpha` its real attribute `f[0]`. Binary ops broadcast like NumPy and\n"
         "the gradient of a broadcast input is summed back to its shape (`sum_to`).\n"
         "\n"
         "Backward formulas are written with the engine's own ops, so a recorded backward pass\n"
         "(`ad_grad` with `create_graph`) can be differentiated again. `ad-gradcheck` checks\n"
         "every op with a backward against central differences, first and second order, in\n"
         "f64 and f32. Composites such as `mean`, `sub_scalar`, `div_scalar` and `transpose`\n"
         "have no row: their derivatives follow from the ops they are built from.\n"
         "\n");
  snprintf(line, sizeof line, "## Ops (%zu)\n\n", (size_t)NROWS);
  put(b, line);
  put(b, "| op | arity | forward | backward | notes |\n"
         "|----|-------|---------|----------|-------|\n");
  for (size_t i = 0; i < NROWS; i++) {
    const op_row *r = &rows[i];
    put(b, "| `");
    put(b, r->name);
    put(b, "` | ");
    if (r->arity < 0)
      snprintf(line, sizeof line, "1..%d", AD_MAX_SRC);
    else
      snprintf(line, sizeof line, "%d", r->arity);
    put(b, line);
    put(b, " | ");
    put_code_cell(b, r->math);
    put(b, " | ");
    put_code_cell(b, r->dmath);
    put(b, " | ");
    bool sep = false;
    if (strcmp(r->backward, "AD_NO_BACKWARD") == 0) {
      put(b, "no gradient flows");
      sep = true;
    }
    if (strstr(r->flags, "AD_OP_VIEW")) {
      put(b, sep ? "; " : "");
      put(b, "view: shares the input's data");
    }
    put(b, " |\n");
  }
  put(b, "\n"
         "## Subgradient conventions\n"
         "\n"
         "Where a function is not differentiable, the engine picks one subgradient:\n"
         "\n"
         "- `relu'(0) = 0`: the mask is `[x > 0]`.\n"
         "- `abs'(0) = 0`: `sign(0) = 0`.\n"
         "- `leaky_relu` has slope `alpha` at 0: the slope is `1` only for `x > 0`.\n"
         "- `max` (reduction): tied maxima share the gradient equally, each receiving\n"
         "  `dy / count(x = y)`.\n"
         "- `maximum` / `minimum` (elementwise): on a tie `a = b` each side receives `dy / 2`.\n"
         "- Comparisons (`compare`) are piecewise constant and carry no gradient; `where`\n"
         "  sends none to its condition, `index_select`, `index_add` and\n"
         "  `softmax_cross_entropy` none to their integer indices or labels.\n");
}

/* Runs the command line against the generated text; returns the exit code. */
static int run(int argc, char **argv, const buf *b) {
  if (argc == 1) {
    fputs(b->p, stdout);
  } else if (argc == 3 && strcmp(argv[1], "-o") == 0) {
    FILE *f = fopen(argv[2], "wb");
    bool ok = f && fputs(b->p, f) != EOF;
    if (f && fclose(f) != 0) ok = false;
    if (!ok) {
      fprintf(stderr, "gen_derivatives: cannot write %s\n", argv[2]);
      return 1;
    }
  } else if (argc == 3 && strcmp(argv[1], "--check") == 0) {
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
      fprintf(stderr, "gen_derivatives: cannot read %s\n", argv[2]);
      return 1;
    }
    size_t i = 0, line = 1;
    int c;
    while ((c = getc(f)) != EOF && i < b->len && c == (unsigned char)b->p[i]) {
      if (c == '\n') line++;
      i++;
    }
    bool same = c == EOF && i == b->len;
    fclose(f);
    if (!same) {
      fprintf(stderr,
              "%s is out of date with autodiff/ops.def (first difference on line %zu).\n"
              "Regenerate it: ninja -C build tools/derivatives.md && "
              "cp build/tools/derivatives.md docs/\n",
              argv[2], line);
      return 1;
    }
    printf("%s is up to date (%zu ops)\n", argv[2], (size_t)NROWS);
  } else {
    fprintf(stderr, "usage: gen_derivatives [-o FILE | --check FILE]\n");
    return 2;
  }
  return 0;
}

int main(int argc, char **argv) {
  buf b = {0};
  generate(&b);
  int rc = run(argc, argv, &b);
  free(b.p);
  return rc;
}
