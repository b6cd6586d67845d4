/* op_elementwise.c: elementwise ops: binary (NumPy broadcasting), scalar
 * forms, unary, and the fused gradients of activations. The machinery they
 * share comes first (the binary kernels' macros are in ops.h, for other
 * families too); then one block per op, in ops.def order: kernel,
 * backward, builders, sample, and last its definition, which holds the
 * math. Backward formulas use the engine's own ops so they can be recorded. */
#include "ops.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "vexp.h"

/* -------------------------------------------------------------- helpers */

/* Elements per chunk when an elementwise op is split over the library's
 * threads (ad_set_num_threads): tens of microseconds of work. */
#define ELEM_GRAIN 32768

/* A binary op's work, cut into ranges of elements (same shapes, or b a
 * scalar) or of rows (broadcasting) for ad_parallel_for. */
typedef struct binary_job {
  const ad_call *c;
  ad_rows_fn f;
  int64_t sb; /* b's stride in the flat case: 1 or 0 */
  ad_bc_rows it;
} binary_job;

static void binary_flat(void *ud, int64_t b, int64_t e) {
  const binary_job *j = ud;
  j->f(j->c, b, 1, j->sb ? b : 0, j->sb, b, e - b);
}

/* Elements [b, e) of a broadcasting binary op, a span of a row at a time
 * (dealt by element offset like binary_flat, see ad_bc_next_span). A walk
 * of one outer dim (nd <= 1 after ad_bc_merge; a bias row is one) finds
 * each row's offsets by adding the outer strides. */
static void binary_rows(void *ud, int64_t b, int64_t e) {
  const binary_job *j = ud;
  const ad_tensor *out = j->c->out;
  int last = out->ndim - 1;
  int64_t sa = last >= 0 ? j->it.st[0][last] : 0, sb = last >= 0 ? j->it.st[1][last] : 0, n;
  if (j->it.nd <= 1 && j->it.len > 0) {
    int64_t L = j->it.len, r = b / L, i0 = b - r * L;
    int64_t ra = j->it.nd ? j->it.st[0][0] : 0, rb = j->it.nd ? j->it.st[1][0] : 0;
    int64_t oa = r * ra + i0 * sa, ob = r * rb + i0 * sb;
    for (int64_t i = b; i < e; i += n) {
      n = L - i0 < e - i ? L - i0 : e - i;
      j->f(j->c, oa, sa, ob, sb, i, n);
      oa += ra - i0 * sa, ob += rb - i0 * sb, i0 = 0; /* the next row's first element */
    }
    return;
  }
  ad_bc_cursor cu = AD_BC_CURSOR_NONE;
  for (int64_t i = b; i < e; i += n) {
    int64_t off[2];
    ad_bc_next_span(&j->it, out, &cu, i, e, off, &n);
    j->f(j->c, off[0], sa, off[1], sb, i, n);
  }
}

/* Rows shorter than SHORT_ROW (a [N,4] minus a column, times a row of 4),
 * or than SHORT_ROW_RUNS where a column is broadcast along them, are not
 * computed a row per call of the rows function but gathered in blocks of
 * at most SHORT_BLOCK elements (short_rows below, short_rows_pay). */
#define SHORT_ROW      16
#define SHORT_ROW_RUNS 128
#define SHORT_BLOCK    512

/* BODY(T) for T an integer type of dtype dt's size that may alias any
 * other (GCC's and clang's may_alias): the short rows' gathers copy
 * elements as bits through it (integer moves, which measured faster than
 * float ones: docs/performance.md, the op scan's sixth round), and the
 * rows functions read them as floats, doubles or int32. */
typedef uint32_t short_u32 __attribute__((may_alias));
typedef uint64_t short_u64 __attribute__((may_alias));
#define SHORT_TYPED(dt, BODY)                                                                      \
  do {                                                                                             \
    if ((dt) == AD_F64) {                                                                          \
      BODY(short_u64)                                                                              \
    } else {                                                                                       \
      BODY(short_u32)                                                                              \
    }                                                                                              \
  } while (0)

/* A walk of out's elements by blocks of whole rows for short rows: the
 * broadcast operands (not laid out as out) gathered into buffers, a block
 * of rows' worth of elements at a time (SHORT_BLOCK rounded down to a
 * multiple of the row length L, so that every block starts at the same
 * place in a row and one table of offsets per operand serves all blocks),
 * each block then computed as one flat row through a copy of the call
 * whose inputs are headers over the buffers. A row operand's buffer (its
 * outer stride 0), the same for every block, is gathered once; a column's
 * (inner stride 0) of rows of SHORT_ROW or more is filled in runs; the
 * others' through a table of offsets made once. Start with
 * short_rows_init at element b, then short_rows_next per block. */
typedef struct short_rows {
  int n;
  int64_t L, blk, r0, i0, p, e, st[3]; /* i0: the blocks' place in a row */
  const void *src[3];                  /* the inputs' data */
  double buf[3][SHORT_BLOCK];          /* doubles: aligned for any dtype */
  int64_t tab[3][SHORT_BLOCK], rs[3];
  bool gat[3];
  ad_tensor h[3];
  ad_tensor *in[3];
  ad_call c2;
  /* more than one outer dim: rows found by an odometer, not a table */
  const ad_bc_rows *it;
  const int64_t *shape;               /* out's */
  int64_t i, idx[AD_MAX_DIMS], ob[3]; /* the place in the current row, its index, offsets */
  /* two outer dims [D0, D1] whose groups of G = D1 L elements and blocks
   * of tblk divide one another: blocks from tstart (a multiple of tblk) by
   * the tables, offsets from group g and row j at g s0 + j s1 */
  int64_t G, tblk, tstart, s0[3], s1[3];
  int64_t tg[3]; /* the group of the block last gathered (by operand), -1: none */
} short_rows;

/* Whether out's walk (it, over c's n inputs) takes short_rows: one outer
 * dim, rows under SHORT_ROW, or under SHORT_ROW_RUNS when a broadcast
 * operand is a column (one value a row: filled in runs) and the others
 * columns or rows (gathered once). Rows alone of SHORT_ROW or more (a
 * bias) keep binary_rows: a call per row costs less than their copies. */
static bool short_rows_pay(const ad_call *c, int n, const ad_bc_rows *it) {
  if (it->rows < 2 || it->len >= SHORT_ROW_RUNS) return false;
  if (it->len < SHORT_ROW) return true;
  if (it->nd > 1) return false;
  int last = c->out->ndim - 1;
  bool column = false;
  for (int k = 0; k < n; k++) {
    if (c->in[k]->size == c->out->size || (it->nd && it->st[k][0] == 0)) continue; /* a row */
    if (it->st[k][last] != 0) return false;
    column = true;
  }
  return column;
}

/* The walk of elements [b, e) of c's output: inputs c->in[0..n), their
 * strides in it. */
static void short_rows_init(short_rows *w, const ad_call *c, int n, const ad_bc_rows *it, int64_t b,
                            int64_t e) {
  const ad_tensor *out = c->out;
  int last = out->ndim - 1;
  w->n = n;
  w->L = it->len, w->blk = SHORT_BLOCK / w->L * w->L;
  w->r0 = b / w->L, w->p = b, w->e = e;
  int64_t i0 = w->i0 = b - w->r0 * w->L;
  w->it = it->nd > 1 ? it : NULL;
  w->tstart = e;     /* no table blocks */
  if (it->nd == 2) { /* blocks of whole groups, or groups of whole blocks */
    int64_t D1 = out->shape[1], G = D1 * w->L, tblk = 0;
    if (G <= SHORT_BLOCK)
      tblk = SHORT_BLOCK / G * G;
    else
      for (int64_t rows = SHORT_BLOCK / w->L; rows * w->L >= SHORT_BLOCK / 4 && !tblk; rows--)
        if (D1 % rows == 0) tblk = rows * w->L;
    if (tblk) {
      w->G = G, w->tblk = tblk;
      w->tstart = (b + tblk - 1) / tblk * tblk;
      if (w->tstart > e) w->tstart = e;
    }
  }
  if (w->it) { /* row r0's index per dim and each input's offset of it */
    w->shape = out->shape, w->i = i0;
    int64_t q = w->r0;
    for (int k = 0; k < n; k++) w->ob[k] = 0;
    for (int d = it->nd - 1; d >= 0; d--) {
      w->idx[d] = q % out->shape[d];
      q /= out->shape[d];
      for (int k = 0; k < n; k++) w->ob[k] += w->idx[d] * it->st[k][d];
    }
  }
  for (int k = 0; k < n; k++) {
    w->gat[k] = c->in[k]->size != out->size; /* else its shape is out's: offset = index */
    w->src[k] = c->in[k]->data;
    w->h[k] = *c->in[k];
    w->h[k].data = w->buf[k];
    w->in[k] = w->gat[k] ? &w->h[k] : c->in[k];
    w->rs[k] = it->nd ? it->st[k][0] : 0;
    int64_t s = w->st[k] = it->st[k][last], m = e - b < w->blk ? e - b : w->blk;
    if (w->gat[k] && w->tstart < e) { /* element q of a table block from its first's */
      w->s0[k] = it->st[k][0], w->s1[k] = it->st[k][1], w->tg[k] = -1;
      for (int64_t q = 0; q < w->tblk; q++)
        w->tab[k][q] = q / w->G * w->s0[k] + q % w->G / w->L * w->s1[k] + q % w->L * s;
    }
    if (!w->gat[k] || w->it || (s == 0 && w->L >= SHORT_ROW && w->rs[k] != 0)) continue;
    if (w->rs[k] == 0) { /* a row (or one value): its buffer gathered here, once */
#define ROW_GATHER(T)                                                                              \
  for (int64_t q = 0, i = i0; q < m; q++) {                                                        \
    ((T *)(void *)w->buf[k])[q] = ((const T *)w->src[k])[i * s];                                   \
    if (++i == w->L) i = 0;                                                                        \
  }
      SHORT_TYPED(c->in[k]->dtype, ROW_GATHER);
#undef ROW_GATHER
      continue;
    }
    for (int64_t q = 0, r = 0, i = i0; q < m; q++) { /* element q's offset from row r0's */
      w->tab[k][q] = r * w->rs[k] + i * s;
      if (++i == w->L) i = 0, r++;
    }
  }
  w->c2 = *c;
  w->c2.in = w->in;
}

/* Fills m elements of dst, of dtype dt, with rows of L copies of one
 * value each, the first row's L - i0 of them: the r-th row's value is at
 * x + r * rstep bytes (a column operand's block). */
#define FILL_RUNS(T)                                                                               \
  for (int64_t q = 0, r = 0, n = L - i0; q < m; q += n, n = L, r++) {                              \
    if (n > m - q) n = m - q;                                                                      \
    T v, *d = (T *)dst + q;                                                                        \
    memcpy(&v, x + r * rstep, sizeof v);                                                           \
    for (int64_t i = 0; i < n; i++) d[i] = v;                                                      \
  }
CELL_CLONES static void fill_runs(void *dst, const char *x, int64_t rstep, int64_t L, int64_t i0,
                                  int64_t m, ad_dtype dt) {
  SHORT_TYPED(dt, FILL_RUNS);
}
#undef FILL_RUNS

/* dst[q] = x[t[q]] for q < m, elements of dtype dt. */
#define GATHER_TAB(T)                                                                              \
  {                                                                                                \
    const T *s = (const T *)(const void *)x;                                                       \
    T *d = dst;                                                                                    \
    for (int64_t q = 0; q < m; q++) d[q] = s[t[q]];                                                \
  }
static inline void gather_tab(void *dst, const char *x, const int64_t *t, int64_t m, ad_dtype dt) {
  SHORT_TYPED(dt, GATHER_TAB);
}
#undef GATHER_TAB

/* n elements of dtype dt from x, stride st (0: one value repeated), to
 * the contiguous dst. */
#define COPY_SPAN(T)                                                                               \
  {                                                                                                \
    const T *s = (const T *)(const void *)x;                                                       \
    T *d = dst;                                                                                    \
    if (st == 1)                                                                                   \
      for (int64_t i = 0; i < n; i++) d[i] = s[i];                                                 \
    else if (st == 0)                                                                              \
      for (int64_t i = 0; i < n; i++) d[i] = s[0];                                                 \
    else                                                                                           \
      for (int64_t i = 0; i < n; i++) d[i] = s[i * st];                                            \
  }
static inline void copy_span(void *dst, const char *x, int64_t st, int64_t n, ad_dtype dt) {
  SHORT_TYPED(dt, COPY_SPAN);
}
#undef COPY_SPAN

/* The next m elements of a walk of more than one outer dim: each gathered
 * operand's spans copied row by row, the rows' offsets carried through
 * the dims as ad_bc_next_span's cursor does. */
static void short_rows_odometer(short_rows *w, int64_t m) {
  const ad_bc_rows *it = w->it;
  const int nd = it->nd;
  const int64_t L = w->L, *shape = w->shape;
  /* in locals, the gathered operands' alone: the copies' stores cannot move them */
  int64_t i = w->i, idx[AD_MAX_DIMS], ob[3], st[3], rst[3][AD_MAX_DIMS];
  char *dst[3];
  const char *src[3];
  size_t es[3];
  ad_dtype dt[3];
  int ng = 0, g[3];
  for (int k = 0; k < w->n; k++)
    if (w->gat[k]) g[ng++] = k;
  for (int t = 0; t < ng; t++) {
    int k = g[t];
    ob[t] = w->ob[k], st[t] = w->st[k], dt[t] = w->h[k].dtype, es[t] = ad_dsize(dt[t]);
    dst[t] = (char *)w->buf[k], src[t] = w->src[k];
    for (int d = 0; d < nd; d++) rst[t][d] = it->st[k][d];
  }
  for (int d = 0; d < nd; d++) idx[d] = w->idx[d];
  for (int64_t q = 0, n; q < m; q += n) {
    n = L - i < m - q ? L - i : m - q;
    for (int t = 0; t < ng; t++)
      copy_span(dst[t] + q * (int64_t)es[t], src[t] + (ob[t] + i * st[t]) * (int64_t)es[t], st[t],
                n, dt[t]);
    if ((i += n) < L) continue;
    i = 0; /* the next row */
    for (int d = nd - 1; d >= 0; d--) {
      for (int t = 0; t < ng; t++) ob[t] += rst[t][d];
      if (++idx[d] < shape[d]) break;
      for (int t = 0; t < ng; t++) ob[t] -= rst[t][d] * shape[d];
      idx[d] = 0;
    }
  }
  w->i = i;
  for (int t = 0; t < ng; t++) w->ob[g[t]] = ob[t];
  for (int d = 0; d < nd; d++) w->idx[d] = idx[d];
}

/* The next block: its first element into *p, its length into *m (false
 * when the walk is done), each gathered operand's values in its buffer;
 * off[k], input k's offset in w->c2.in[k], is 0 for those, *p for the
 * others. Values are copied as bits (SHORT_TYPED). */
static bool short_rows_next(short_rows *w, int64_t *p, int64_t *m, int64_t *off) {
  if (w->p >= w->e) return false;
  *p = w->p;
  *m = w->e - w->p < w->blk ? w->e - w->p : w->blk;
  if (w->it && w->p < w->tstart) { /* up to the first table block: by the odometer */
    if (*m > w->tstart - w->p) *m = w->tstart - w->p;
    short_rows_odometer(w, *m);
    for (int k = 0; k < w->n; k++) off[k] = w->gat[k] ? 0 : *p;
    w->p += *m;
    return true;
  }
  if (w->it) { /* a table block */
    *m = w->e - w->p < w->tblk ? w->e - w->p : w->tblk;
    int64_t g = w->p / w->G, j = w->p % w->G / w->L;
    for (int k = 0; k < w->n; k++) {
      off[k] = w->gat[k] ? 0 : *p;
      /* an operand the same along D1 has the same values in every block
       * of a group (blocks within groups): its buffer stays */
      if (!w->gat[k] || (w->s1[k] == 0 && w->tblk < w->G && w->tg[k] == g)) continue;
      w->tg[k] = g;
      size_t es = ad_dsize(w->h[k].dtype);
      gather_tab(w->buf[k], (const char *)w->src[k] + (g * w->s0[k] + j * w->s1[k]) * (int64_t)es,
                 w->tab[k], *m, w->h[k].dtype);
    }
    w->p += *m;
    return true;
  }
  for (int k = 0; k < w->n; k++) {
    off[k] = w->gat[k] ? 0 : *p;
    if (!w->gat[k] || w->rs[k] == 0) continue; /* a row operand's: gathered by init */
    if (w->st[k] == 0 && w->L >= SHORT_ROW) {  /* a column of long enough rows: in runs */
      size_t es = ad_dsize(w->h[k].dtype);
      fill_runs(w->buf[k], (const char *)w->src[k] + w->r0 * w->rs[k] * (int64_t)es,
                w->rs[k] * (int64_t)es, w->L, w->i0, *m, w->h[k].dtype);
    } else {
      size_t es = ad_dsize(w->h[k].dtype);
      gather_tab(w->buf[k], (const char *)w->src[k] + w->r0 * w->rs[k] * (int64_t)es, w->tab[k], *m,
                 w->h[k].dtype);
    }
  }
  w->p += w->blk, w->r0 += w->blk / w->L;
  return true;
}

/* Elements [b, e) of a broadcasting binary op of short rows (short_rows),
 * each block by the rows function as one flat row: the same expression on
 * the same values as binary_rows, so the same bits. */
static void binary_short(void *ud, int64_t b, int64_t e) {
  const binary_job *j = ud;
  short_rows w;
  short_rows_init(&w, j->c, 2, &j->it, b, e);
  int64_t p, m, off[3];
  while (short_rows_next(&w, &p, &m, off)) j->f(&w.c2, off[0], 1, off[1], 1, p, m);
}

/* A binary op's output of at most this many bytes is computed by its rows
 * compiled for AVX-512 and AVX2 (ad_binary_run's wide), larger ones by the
 * baseline's: on data in the caches (an output of a few MiB, and
 * operands no larger, stay in a core's L2 and the L3) the wide loops'
 * stores and divisions win, while streams from memory (8 MiB outputs and
 * more) ran slower with them than with SSE on a Zen 4 core. A division is bound by its arithmetic
 * and takes the wide rows at every size (DEFINE_BINARY_WIDE). Measurements: docs/performance.md,
 * "Binary ops". A rule of the shape: a run's choice never depends on
 * timing, and both give the same bits. */
#define BINARY_WIDE_MAX (1 << 22)

void ad_binary_run(const ad_call *c, ad_rows_fn f, ad_rows_fn wide) {
  const ad_tensor *a = c->in[0], *b = c->in[1], *out = c->out;
  bool same = ad_same_shape(a, b);
  if (wide && (size_t)out->size * ad_dsize(out->dtype) <= BINARY_WIDE_MAX) f = wide;
  if (same || (b->size == 1 && a->size == out->size)) {
    if (out->size <= ELEM_GRAIN) { /* small: no job (the scalar chain's case) */
      f(c, 0, 1, 0, same, 0, out->size);
      return;
    }
    binary_job j = {.c = c, .f = f, .sb = same};
    ad_parallel_for(out->size, ELEM_GRAIN, binary_flat, &j);
    return;
  }
  binary_job j = {.c = c, .f = f};
  ad_bc_init(&j.it, 2, c->in, out);
  ad_bc_merge(&j.it, out);
  void (*run)(void *, int64_t, int64_t) = short_rows_pay(c, 2, &j.it) ? binary_short : binary_rows;
  if (out->size <= ELEM_GRAIN)
    run(&j, 0, out->size);
  else
    ad_parallel_for(out->size, ELEM_GRAIN, run, &j);
}

/* A unary op's work over a range of elements, for ad_parallel_for. */
typedef struct unary_job {
  const ad_tensor *x;
  ad_tensor *y;
  const ad_attrs *at;
} unary_job;

/* Defines NAME_range and NAME_fwd computing y = EXPR32 / EXPR64 of x, a
 * float / a double. S is NO_S, or WITH_S for a kernel that reads the op's
 * scalar attribute as the double s: it keeps or drops that declaration. */
#define NO_S(decl)
#define WITH_S(decl) decl
/* NAME_fwd: a one-element tensor computed here (SCALAR32 or EXPR64 of x,
 * no job, no loop set-up), else NAME_range over the elements, split over
 * the library's threads when there are more than ELEM_GRAIN. */
#define UNARY_FWD(NAME, S, SCALAR32, EXPR64)                                                       \
  static void NAME##_fwd(const ad_call *c) {                                                       \
    if (c->out->size == 1) {                                                                       \
      S(const double s = c->attrs->scalar;)                                                        \
      if (c->out->dtype == AD_F32) {                                                               \
        float x = *(const float *)c->in[0]->data;                                                  \
        *(float *)c->out->data = SCALAR32;                                                         \
      } else {                                                                                     \
        double x = *(const double *)c->in[0]->data;                                                \
        *(double *)c->out->data = (EXPR64);                                                        \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    unary_job j = {c->in[0], c->out, c->attrs};                                                    \
    if (c->out->size <= ELEM_GRAIN)                                                                \
      NAME##_range(&j, 0, c->out->size);                                                           \
    else                                                                                           \
      ad_parallel_for(c->out->size, ELEM_GRAIN, NAME##_range, &j);                                 \
  }
/* The rows of both dtypes are compiled for AVX-512 and AVX2 besides the
 * baseline (CELL_CLONES): EXPR32 and EXPR64 are IEEE operations (a sign,
 * a square root, a product, a comparison), each rounded the same on every
 * instruction set (no contraction into FMA: -ffp-contract=off), so the
 * clones give the same bits, provided that no expression meets two NaNs
 * in one operation (which one x86 returns depends on the operands' order,
 * which the compiler may choose per clone); the baseline's SSE loop ran
 * sqrt and relu in float32 at about half PyTorch's speed, and hardswish,
 * hardsigmoid and softshrink in float64 at 2-3x PyTorch's time. */
#define UNARY_KERNEL(NAME, S, EXPR32, EXPR64)                                                      \
  CELL_CLONES static void NAME##_rows32(const float *X, float *Y, int64_t b, int64_t e,            \
                                        double s_) {                                               \
    S(const double s = s_;)                                                                        \
    (void)s_;                                                                                      \
    for (int64_t i = b; i < e; i++) {                                                              \
      float x = X[i];                                                                              \
      Y[i] = (float)(EXPR32);                                                                      \
    }                                                                                              \
  }                                                                                                \
  CELL_CLONES static void NAME##_rows64(const double *X, double *Y, int64_t b, int64_t e,          \
                                        double s_) {                                               \
    S(const double s = s_;)                                                                        \
    (void)s_;                                                                                      \
    for (int64_t i = b; i < e; i++) {                                                              \
      double x = X[i];                                                                             \
      Y[i] = (EXPR64);                                                                             \
    }                                                                                              \
  }                                                                                                \
  static void NAME##_range(void *ud, int64_t b, int64_t e) {                                       \
    const unary_job *j = ud;                                                                       \
    double s_ = j->at ? j->at->scalar : 0.0;                                                       \
    if (j->y->dtype == AD_F32)                                                                     \
      NAME##_rows32(j->x->data, j->y->data, b, e, s_);                                             \
    else                                                                                           \
      NAME##_rows64(j->x->data, j->y->data, b, e, s_);                                             \
  }                                                                                                \
  UNARY_FWD(NAME, S, (float)(EXPR32), EXPR64)
#define DEFINE_UNARY(NAME, EXPR32, EXPR64) UNARY_KERNEL(NAME, NO_S, EXPR32, EXPR64)

/* A unary op whose float32 form vectorizes: V32(x), an expression without
 * calls or branches (vexp.h), for every x but those where OUT32(x) holds,
 * which take FIX32(x) (libm) instead. The rows are compiled for AVX-512
 * and AVX2 besides the baseline (CELL_CLONES), with the same bits on each;
 * out-of-range elements are found per chunk of 256 and fixed after it. A
 * tensor of one element takes the same values (V32 or FIX32), so a
 * scalar and a vector element agree. Float64 is EXPR64, in rows compiled
 * as the float32 ones (exp_d and the functions on it vectorize there; a
 * libm call stays a call per element). */
#define NEVER_OUT32(x) 0 /* OUT32 of a V32 defined on every float */
/* Y[i] = V(X[i]) for i in [b, e) of element type T, in chunks of 256
 * after each of which the elements where OUT holds are taken again as FIX
 * (the loop over a chunk stays branch-free, so that it vectorizes) */
#define VT_CHUNKS(T, V, OUT, FIX)                                                                  \
  do {                                                                                             \
    for (int64_t c0 = b; c0 < e; c0 += 256) {                                                      \
      int64_t c1 = e - c0 < 256 ? e : c0 + 256;                                                    \
      int out = 0;                                                                                 \
      for (int64_t i = c0; i < c1; i++) {                                                          \
        T x = X[i];                                                                                \
        Y[i] = V(x);                                                                               \
        out |= OUT(x);                                                                             \
      }                                                                                            \
      if (out)                                                                                     \
        for (int64_t i = c0; i < c1; i++)                                                          \
          if (OUT(X[i])) Y[i] = FIX(X[i]);                                                         \
    }                                                                                              \
  } while (0)
#define V32_CHUNKS(V32, OUT32, FIX32) VT_CHUNKS(float, V32, OUT32, FIX32)
#define V64_CHUNKS(V64, OUT64, FIX64) VT_CHUNKS(double, V64, OUT64, FIX64)
/* The range function over NAME_rows32 and NAME_rows64 and the forward
 * (a 1-element tensor takes V32 or FIX32, and SCALAR64) of the kernels
 * below */
#define UNARY_V_RANGE(NAME, V32, OUT32, FIX32, SCALAR64)                                           \
  static void NAME##_range(void *ud, int64_t b, int64_t e) {                                       \
    const unary_job *j = ud;                                                                       \
    if (j->y->dtype == AD_F32)                                                                     \
      NAME##_rows32(j->x->data, j->y->data, b, e);                                                 \
    else                                                                                           \
      NAME##_rows64(j->x->data, j->y->data, b, e);                                                 \
  }                                                                                                \
  UNARY_FWD(NAME, NO_S, (OUT32(x) ? FIX32(x) : V32(x)), SCALAR64)
#define UNARY_KERNEL_V(NAME, V32, OUT32, FIX32, EXPR64)                                            \
  CELL_CLONES static void NAME##_rows32(const float *X, float *Y, int64_t b, int64_t e) {          \
    V32_CHUNKS(V32, OUT32, FIX32);                                                                 \
  }                                                                                                \
  UNARY_KERNEL_V_REST(NAME, V32, OUT32, FIX32, EXPR64)
/* UNARY_KERNEL_V whose float64 form vectorizes too: V64, OUT64 and FIX64
 * as V32, OUT32 and FIX32 */
#define UNARY_KERNEL_VV(NAME, V32, OUT32, FIX32, V64, OUT64, FIX64)                                \
  CELL_CLONES static void NAME##_rows32(const float *X, float *Y, int64_t b, int64_t e) {          \
    V32_CHUNKS(V32, OUT32, FIX32);                                                                 \
  }                                                                                                \
  CELL_CLONES static void NAME##_rows64(const double *X, double *Y, int64_t b, int64_t e) {        \
    V64_CHUNKS(V64, OUT64, FIX64);                                                                 \
  }                                                                                                \
  UNARY_V_RANGE(NAME, V32, OUT32, FIX32, (OUT64(x) ? FIX64(x) : V64(x)))
/* UNARY_KERNEL_V but for NAME_rows32, which the caller defines */
#define UNARY_KERNEL_V_REST(NAME, V32, OUT32, FIX32, EXPR64)                                       \
  CELL_CLONES static void NAME##_rows64(const double *X, double *Y, int64_t b, int64_t e) {        \
    for (int64_t i = b; i < e; i++) {                                                              \
      double x = X[i];                                                                             \
      Y[i] = (EXPR64);                                                                             \
    }                                                                                              \
  }                                                                                                \
  UNARY_V_RANGE(NAME, V32, OUT32, FIX32, EXPR64)
#define DEFINE_UNARY_S(NAME, EXPR32, EXPR64) UNARY_KERNEL(NAME, WITH_S, EXPR32, EXPR64)

/* maximum and minimum send dy to a unless a loses (lose(a, b): ad_lt for
 * maximum, ad_gt for minimum), halved where a = b; likewise to b. This is
 * PyTorch's rule: ties split dy in half, and where a or b is NaN (y is
 * NaN, no comparison holds) both get dy. Zeros are chosen by where, not
 * multiplied in, so they stay zeros when dy is not finite. */
static ad_status minmax_bwd(const ad_call *c,
                            ad_tensor *(*lose)(ad_ctx *, ad_tensor *, ad_tensor *)) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *a = c->in[0], *b = c->in[1], *dy = c->gout;
  ad_tensor *zero = ad_scalar(ctx, dy->dtype, 0.0);
  ad_tensor *shared = ad_where(ctx, ad_eq(ctx, a, b), ad_mul_scalar(ctx, dy, 0.5), dy);
  ad_status st = AD_OK;
  if (c->needs[0]) st = ad_call_set_grad(c, 0, ad_where(ctx, lose(ctx, a, b), zero, shared));
  if (st == AD_OK && c->needs[1])
    st = ad_call_set_grad(c, 1, ad_where(ctx, lose(ctx, b, a), zero, shared));
  return st;
}

/* Builders of the ops that read attrs.scalar. */
static ad_tensor *with_scalar(ad_ctx *ctx, int op, ad_tensor *x, double s) {
  ad_attrs at = {.scalar = s};
  return ad_apply1(ctx, op, x, &at);
}

/* Gradcheck samples shared by several ops. */

/* Values of magnitude in [lo, hi] with random signs. */
static ad_tensor *sample_signed(const ad_sample_call *s, int ndim, const int64_t *shape, double lo,
                                double hi) {
  ad_tensor *t = ad_sample_tensor(s, ndim, shape, lo, hi, true);
  for (int64_t i = 0; t && i < t->size; i++)
    if (ad_rng_uniform(s->rng) < 0.5) ad_tensor_set(t, i, -ad_tensor_get(t, i));
  return t;
}

/* Broadcasting shape pairs that binary samples walk through. */
static const struct {
  int na, nb;
  int64_t a[3], b[3];
} bin_cases[] = {
    {2, 2, {3, 4}, {3, 4}},    /* same shape */
    {2, 1, {3, 4}, {4}},       /* row broadcast */
    {3, 2, {2, 1, 3}, {4, 1}}, /* both sides broadcast */
    {0, 2, {0}, {2, 3}},       /* scalar on the left */
};

static int sample_binary_range(const ad_sample_call *s, double alo, double ahi, double blo,
                               double bhi, bool signed_b) {
  int v = s->variant;
  if (v >= (int)(sizeof bin_cases / sizeof bin_cases[0])) return 0;
  s->in[0] = ad_sample_tensor(s, bin_cases[v].na, bin_cases[v].a, alo, ahi, true);
  s->in[1] = signed_b ? sample_signed(s, bin_cases[v].nb, bin_cases[v].b, blo, bhi)
                      : ad_sample_tensor(s, bin_cases[v].nb, bin_cases[v].b, blo, bhi, true);
  return s->in[0] && s->in[1] ? 2 : -1;
}

static int sample_binary(const ad_sample_call *s) {
  return sample_binary_range(s, -2, 2, -2, 2, false);
}

/* a far from b so that max/min have no ties within the FD step */
static int sample_apart(const ad_sample_call *s) {
  int k = sample_binary_range(s, 1, 2, -0.5, 0.5, false);
  for (int64_t i = 0; k > 0 && i < s->in[0]->size; i++)
    if (ad_rng_uniform(s->rng) < 0.5) ad_tensor_set(s->in[0], i, -ad_tensor_get(s->in[0], i));
  return k;
}

static const struct {
  int n;
  int64_t s[3];
} un_cases[] = {{2, {3, 4}}, {3, {2, 3, 2}}, {0, {0}}};

static int sample_unary_range(const ad_sample_call *s, double lo, double hi, bool sign) {
  int v = s->variant;
  if (v >= (int)(sizeof un_cases / sizeof un_cases[0])) return 0;
  s->in[0] = sign ? sample_signed(s, un_cases[v].n, un_cases[v].s, lo, hi)
                  : ad_sample_tensor(s, un_cases[v].n, un_cases[v].s, lo, hi, true);
  return s->in[0] ? 1 : -1;
}

static int sample_unary(const ad_sample_call *s) {
  s->attrs->scalar = 0.75; /* the scalar of add_scalar / mul_scalar */
  return sample_unary_range(s, -2, 2, false);
}

static int sample_positive(const ad_sample_call *s) { return sample_unary_range(s, 0.5, 2, false); }

/* |x| >= 0.2: away from the kink at 0 */
static int sample_nonzero(const ad_sample_call *s) { return sample_unary_range(s, 0.2, 2, true); }

/* ------------------------------------------------------------------ add */

DEFINE_BINARY(add, x0 + x1)

static ad_status add_bwd(const ad_call *c) {
  if (c->needs[0]) c->gin[0] = c->gout;
  if (c->needs[1]) c->gin[1] = c->gout;
  return AD_OK;
}

ad_tensor *ad_add(ad_ctx *ctx, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(ctx, AD_OP_ADD, a, b, NULL);
}

const ad_op_def ad_def_add = {
    .name = "add",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = add_fwd,
    .backward = add_bwd,
    .sample = sample_binary,
    .math = "y = a + b",
    .inputs = {"a", "b"},
    .grads = {"dy", "dy"},
};

/* ------------------------------------------------------------------ sub */

DEFINE_BINARY(sub, x0 - x1)

static ad_status sub_bwd(const ad_call *c) {
  if (c->needs[0]) c->gin[0] = c->gout;
  return c->needs[1] ? ad_call_set_grad(c, 1, ad_neg(c->ctx, c->gout)) : AD_OK;
}

ad_tensor *ad_sub(ad_ctx *ctx, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(ctx, AD_OP_SUB, a, b, NULL);
}

const ad_op_def ad_def_sub = {
    .name = "sub",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = sub_fwd,
    .backward = sub_bwd,
    .sample = sample_binary,
    .math = "y = a - b",
    .inputs = {"a", "b"},
    .grads = {"dy", "-dy"},
};

/* ------------------------------------------------------------------ mul */

DEFINE_BINARY(mul, x0 *x1)

static ad_status mul_bwd(const ad_call *c) {
  ad_status st = AD_OK;
  if (c->needs[0]) st = ad_call_set_grad(c, 0, ad_mul(c->ctx, c->gout, c->in[1]));
  if (st == AD_OK && c->needs[1]) st = ad_call_set_grad(c, 1, ad_mul(c->ctx, c->gout, c->in[0]));
  return st;
}

/* grad += dy * w, or with overwrite grad = dy * w, over a range of elements. */
typedef struct mul_into_job {
  ad_tensor *grad;
  const ad_tensor *dy, *w;
  bool overwrite;
} mul_into_job;

/* The product is rounded on its own, then added: the bits ad_mul and the
 * engine's accumulation give (C's default: no contraction into an FMA). */
static void mul_into_range(void *ud, int64_t b, int64_t e) {
  const mul_into_job *j = ud;
  if (j->grad->dtype == AD_F32) {
    float *G = j->grad->data;
    const float *D = j->dy->data, *W = j->w->data;
    if (j->overwrite)
      for (int64_t i = b; i < e; i++) G[i] = D[i] * W[i];
    else
      for (int64_t i = b; i < e; i++) {
        float p = D[i] * W[i];
        G[i] += p;
      }
  } else {
    double *G = j->grad->data;
    const double *D = j->dy->data, *W = j->w->data;
    if (j->overwrite)
      for (int64_t i = b; i < e; i++) G[i] = D[i] * W[i];
    else
      for (int64_t i = b; i < e; i++) {
        double p = D[i] * W[i];
        G[i] += p;
      }
  }
}

/* Input k's contribution dy * w (w the other input) straight into grad, as
 * matmul's GEMM does: no temporary, no op applied, no accumulation pass (a
 * scale or a gain in a network, a in bench/scalar_chain). Only when both
 * inputs have dy's shape: a broadcast input's contribution must be summed. */
static bool mul_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  const ad_tensor *dy = c->gout, *w = c->in[1 - k];
  if (!ad_same_shape(c->in[k], dy) || !ad_same_shape(w, dy)) return false;
  if (dy->size != 1) {
    mul_into_job j = {grad, dy, w, overwrite};
    if (dy->size <= ELEM_GRAIN)
      mul_into_range(&j, 0, dy->size);
    else
      ad_parallel_for(dy->size, ELEM_GRAIN, mul_into_range, &j);
  } else if (dy->dtype == AD_F32) { /* a scalar: no job, no loop set-up */
    float p = *(const float *)dy->data * *(const float *)w->data;
    if (overwrite)
      *(float *)grad->data = p;
    else
      *(float *)grad->data += p;
  } else {
    double p = *(const double *)dy->data * *(const double *)w->data;
    if (overwrite)
      *(double *)grad->data = p;
    else
      *(double *)grad->data += p;
  }
  return true;
}

ad_tensor *ad_mul(ad_ctx *ctx, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(ctx, AD_OP_MUL, a, b, NULL);
}

const ad_op_def ad_def_mul = {
    .name = "mul",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE | AD_OP_GRAD_INTO_TEMPS,
    .forward = mul_fwd,
    .backward = mul_bwd,
    .grad_into = mul_grad_into,
    .sample = sample_binary,
    .math = "y = a * b",
    .inputs = {"a", "b"},
    .grads = {"dy * b", "dy * a"},
};

/* ------------------------------------------------------------------ div */

DEFINE_BINARY_WIDE(div, x0 / x1)

static ad_status div_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_status st = c->needs[0] ? ad_call_set_grad(c, 0, ad_div(ctx, c->gout, c->in[1])) : AD_OK;
  /* b's is -dy ((a / b) / b), in PyTorch's order: -(dy / b)(a / b) made
   * inf * 0 = NaN where a = 0 and dy / b overflows (b subnormal), and
   * differs from PyTorch in the last bit elsewhere */
  if (st == AD_OK && c->needs[1]) {
    ad_tensor *ab = ad_div(ctx, ad_div(ctx, c->in[0], c->in[1]), c->in[1]);
    st = ad_call_set_grad(c, 1, ad_neg(ctx, ad_mul(ctx, c->gout, ab)));
  }
  return st;
}

ad_tensor *ad_div(ad_ctx *ctx, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(ctx, AD_OP_DIV, a, b, NULL);
}

/* |b| >= 0.5, both signs: away from the pole at 0 */
static int div_sample(const ad_sample_call *s) {
  return sample_binary_range(s, -2, 2, 0.5, 2, true);
}

const ad_op_def ad_def_div = {
    .name = "div",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = div_fwd,
    .backward = div_bwd,
    .sample = div_sample,
    .math = "y = a / b",
    .inputs = {"a", "b"},
    .grads = {"dy / b", "-dy * a / b^2"},
};

/* ------------------------------------------------------------------ pow */

/* Float64: libm's pow. Float32: pow in double rounded to float, which
 * pow_v (vexp.h) computes without calls where a is a positive normal
 * float and b finite (libm's pow in double for the rest: zero, subnormal,
 * negative, infinite or NaN a, infinite or NaN b). */
static inline double pow_d(double a, double b) { return pow(a, b); }
#define POW_OUT32(a, b) (!((a) >= FLT_MIN && (a) <= FLT_MAX && fabsf(b) <= FLT_MAX))
BINARY_KERNEL_V(pow, pow_v(x0, x1), POW_OUT32(x0, x1), (float)pow_d(x0, x1), pow_d(x0, x1))

/* PyTorch's masks at a zero base: d/da is 0 where b = 0 (at a = 0,
 * b a^(b-1) would be 0 * inf), d/db is 0 where a = 0 and b >= 0 (a^b log a
 * would be 0 * -inf). where picks the zeros, so the other branch's NaN
 * never mixes in; for a = 0, b < 0 the formula's inf or NaN stays, as in
 * PyTorch. */
static ad_status pow_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *a = c->in[0], *b = c->in[1], *dy = c->gout;
  ad_tensor *zero = ad_scalar(ctx, dy->dtype, 0.0);
  ad_status st = AD_OK;
  if (c->needs[0]) {
    ad_tensor *d = ad_mul(ctx, dy, ad_mul(ctx, b, ad_pow(ctx, a, ad_add_scalar(ctx, b, -1.0))));
    st = ad_call_set_grad(c, 0, ad_where(ctx, ad_eq(ctx, b, zero), zero, d));
  }
  /* y is recomputed from a and b so the second derivative sees it */
  if (st == AD_OK && c->needs[1]) {
    ad_tensor *at0 = ad_mul(ctx, ad_eq(ctx, a, zero), ad_ge(ctx, b, zero));
    ad_tensor *d = ad_where(ctx, at0, zero, ad_mul(ctx, ad_pow(ctx, a, b), ad_log(ctx, a)));
    st = ad_call_set_grad(c, 1, ad_mul(ctx, dy, d));
  }
  return st;
}

ad_tensor *ad_pow(ad_ctx *ctx, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(ctx, AD_OP_POW, a, b, NULL);
}

/* a in [0.5, 2): log(a) exists */
static int pow_sample(const ad_sample_call *s) {
  return sample_binary_range(s, 0.5, 2, -2, 2, false);
}

const ad_op_def ad_def_pow = {
    .name = "pow",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = pow_fwd,
    .backward = pow_bwd,
    .sample = pow_sample,
    .math = "y = a ^ b",
    .inputs = {"a", "b"},
    .grads = {"dy * b * a^(b-1), 0 where b = 0", "dy * y * log(a), 0 where a = 0 and b >= 0"},
};

/* -------------------------------------------------------------- maximum */

DEFINE_BINARY(maximum, AD_MAX_NAN(x0, x1))

static ad_status maximum_bwd(const ad_call *c) { return minmax_bwd(c, ad_lt); }

ad_tensor *ad_maximum(ad_ctx *ctx, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(ctx, AD_OP_MAXIMUM, a, b, NULL);
}

const ad_op_def ad_def_maximum = {
    .name = "maximum",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = maximum_fwd,
    .backward = maximum_bwd,
    .sample = sample_apart,
    .math = "y = max(a, b)  (NaN if a or b is)",
    .inputs = {"a", "b"},
    .grads = {"dy, dy/2 where a = b, 0 where a < b", "dy, dy/2 where a = b, 0 where b < a"},
};

/* -------------------------------------------------------------- minimum */

DEFINE_BINARY(minimum, AD_MIN_NAN(x0, x1))

static ad_status minimum_bwd(const ad_call *c) { return minmax_bwd(c, ad_gt); }

ad_tensor *ad_minimum(ad_ctx *ctx, ad_tensor *a, ad_tensor *b) {
  return ad_apply2(ctx, AD_OP_MINIMUM, a, b, NULL);
}

const ad_op_def ad_def_minimum = {
    .name = "minimum",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = minimum_fwd,
    .backward = minimum_bwd,
    .sample = sample_apart,
    .math = "y = min(a, b)  (NaN if a or b is)",
    .inputs = {"a", "b"},
    .grads = {"dy, dy/2 where a = b, 0 where a > b", "dy, dy/2 where a = b, 0 where b > a"},
};

/* -------------------------------------------------------------- compare */

/* A loop per comparison: one comparing by c->attrs->cmp read the mode at
 * every element (the output might alias the attributes, so it was not
 * hoisted), a branch per element that kept the loop scalar: 3-5 ns an
 * element, most of maximum's backward. */
DEFINE_BINARY(cmp_eq, x0 == x1)
DEFINE_BINARY(cmp_gt, x0 > x1)
DEFINE_BINARY(cmp_ge, x0 >= x1)
DEFINE_BINARY(cmp_lt, x0 < x1)
DEFINE_BINARY(cmp_le, x0 <= x1)

static void compare_fwd(const ad_call *c) {
  switch (c->attrs->cmp) {
  case AD_CMP_EQ:
    cmp_eq_fwd(c);
    break;
  case AD_CMP_GT:
    cmp_gt_fwd(c);
    break;
  case AD_CMP_GE:
    cmp_ge_fwd(c);
    break;
  case AD_CMP_LT:
    cmp_lt_fwd(c);
    break;
  default:
    cmp_le_fwd(c);
    break;
  }
}

static void error_as(ad_ctx *ctx, uint32_t before, const char *fn);

/* The five are one op, compare; an error names the function called. */
static ad_tensor *compare(ad_ctx *ctx, ad_tensor *a, ad_tensor *b, ad_cmp mode) {
  static const char *const fn[] = {[AD_CMP_EQ] = "eq",
                                   [AD_CMP_GT] = "gt",
                                   [AD_CMP_GE] = "ge",
                                   [AD_CMP_LT] = "lt",
                                   [AD_CMP_LE] = "le"};
  ad_attrs at = {.cmp = mode};
  uint32_t before = ctx ? ctx->nerrors : 0;
  ad_tensor *y = ad_apply2(ctx, AD_OP_CMP, a, b, &at);
  if (!y) error_as(ctx, before, fn[mode]);
  return y;
}
ad_tensor *ad_eq(ad_ctx *ctx, ad_tensor *a, ad_tensor *b) { return compare(ctx, a, b, AD_CMP_EQ); }
ad_tensor *ad_gt(ad_ctx *ctx, ad_tensor *a, ad_tensor *b) { return compare(ctx, a, b, AD_CMP_GT); }
ad_tensor *ad_ge(ad_ctx *ctx, ad_tensor *a, ad_tensor *b) { return compare(ctx, a, b, AD_CMP_GE); }
ad_tensor *ad_lt(ad_ctx *ctx, ad_tensor *a, ad_tensor *b) { return compare(ctx, a, b, AD_CMP_LT); }
ad_tensor *ad_le(ad_ctx *ctx, ad_tensor *a, ad_tensor *b) { return compare(ctx, a, b, AD_CMP_LE); }

/* No backward: the output is piecewise constant, so no gradient flows. */
const ad_op_def ad_def_compare = {
    .name = "compare",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_CMP,
    .forward = compare_fwd,
    .math = "y = [a op b] (op: = > >= < <= by attr cmp), 1 or 0",
    .inputs = {"a", "b"},
};

/* ---------------------------------------------------------------- where */

/* cond may have any dtype; a and b a float one they share. */
static ad_status where_shape(const ad_call *c) {
  ad_tensor *const *in = c->in;
  ad_tensor *out = c->out;
  if (ad_check_float_same(c->ctx, c->name, 2, in + 1) != AD_OK) return ad_last_status(c->ctx);
  int64_t s1[AD_MAX_DIMS];
  int n1;
  if (!ad_broadcast_shape(in[1]->ndim, in[1]->shape, in[2]->ndim, in[2]->shape, &n1, s1) ||
      !ad_broadcast_shape(in[0]->ndim, in[0]->shape, n1, s1, &out->ndim, out->shape)) {
    char sc[64], sa[64], sb[64];
    return ad_set_error(c->ctx, AD_ERR_SHAPE, "%s: shapes do not broadcast: %s, %s, %s", c->name,
                        ad_shape_str(in[0], sc, sizeof sc), ad_shape_str(in[1], sa, sizeof sa),
                        ad_shape_str(in[2], sb, sizeof sb));
  }
  out->dtype = in[1]->dtype;
  return AD_OK;
}

/* where over rows of out, for ad_parallel_for: each row's cond, a and b
 * read with their strides in loops of their types (it read cond through
 * ad_tensor_get, a call and a dtype switch per element, on one thread). A
 * cond that is NaN holds (NaN != 0). */
typedef struct where_job {
  const ad_call *c;
  ad_bc_rows it;
} where_job;

#define WHERE_ROW(TC, T)                                                                           \
  do {                                                                                             \
    const TC *C_ = (const TC *)j->c->in[0]->data + off[0];                                         \
    const T *A_ = (const T *)j->c->in[1]->data + off[1],                                           \
            *B_ = (const T *)j->c->in[2]->data + off[2];                                           \
    T *Y_ = (T *)j->c->out->data + p;                                                              \
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) /* both loads, then a select: it vectorizes */        \
      for (int64_t i = 0; i < len; i++) {                                                          \
        T av = A_[i], bv = B_[i];                                                                  \
        Y_[i] = C_[i] != 0 ? av : bv;                                                              \
      }                                                                                            \
    else if (s[0] == 1 && s[1] == 1 && s[2] == 0)                                                  \
      for (int64_t i = 0; i < len; i++) {                                                          \
        T av = A_[i], bv = B_[0];                                                                  \
        Y_[i] = C_[i] != 0 ? av : bv;                                                              \
      }                                                                                            \
    else if (s[0] == 1 && s[1] == 0 && s[2] == 1) /* where(c, 0, x): backward's zeros */           \
      for (int64_t i = 0; i < len; i++) {                                                          \
        T av = A_[0], bv = B_[i];                                                                  \
        Y_[i] = C_[i] != 0 ? av : bv;                                                              \
      }                                                                                            \
    else /* both loaded here too: a select, not a branch on each condition */                      \
      for (int64_t i = 0; i < len; i++) {                                                          \
        T av = A_[i * s[1]], bv = B_[i * s[2]];                                                    \
        Y_[i] = C_[i * s[0]] != 0 ? av : bv;                                                       \
      }                                                                                            \
  } while (0)
#define WHERE_ROWS_OF(T)                                                                           \
  do {                                                                                             \
    if (cd == AD_F32)                                                                              \
      WHERE_ROW(float, T);                                                                         \
    else if (cd == AD_F64)                                                                         \
      WHERE_ROW(double, T);                                                                        \
    else                                                                                           \
      WHERE_ROW(int32_t, T);                                                                       \
  } while (0)

/* Elements [b, e) of out, a span of a row at a time (ad_bc_next_span). */
static void where_rows(void *ud, int64_t b, int64_t e) {
  const where_job *j = ud;
  const ad_tensor *out = j->c->out;
  ad_dtype cd = j->c->in[0]->dtype;
  int last = out->ndim - 1;
  int64_t s[3], len;
  for (int k = 0; k < 3; k++) s[k] = last >= 0 ? j->it.st[k][last] : 0;
  ad_bc_cursor cu = AD_BC_CURSOR_NONE;
  for (int64_t p = b; p < e; p += len) {
    int64_t off[3];
    ad_bc_next_span(&j->it, out, &cu, p, e, off, &len);
    if (out->dtype == AD_F32)
      WHERE_ROWS_OF(float);
    else
      WHERE_ROWS_OF(double);
  }
}

/* Elements [b, e) of out when its rows are short (short_rows): each block
 * as one row of unit strides. */
static void where_short(void *ud, int64_t b, int64_t e) {
  const where_job *jo = ud;
  short_rows w;
  short_rows_init(&w, jo->c, 3, &jo->it, b, e);
  const where_job jw = {&w.c2, {0}}, *j = &jw; /* WHERE_ROW reads j->c */
  ad_dtype cd = jo->c->in[0]->dtype;
  const int64_t s[3] = {1, 1, 1};
  int64_t p, len, off[3];
  while (short_rows_next(&w, &p, &len, off)) {
    if (w.c2.out->dtype == AD_F32)
      WHERE_ROWS_OF(float);
    else
      WHERE_ROWS_OF(double);
  }
}

static void where_fwd(const ad_call *c) {
  where_job j = {c, {0}};
  ad_bc_init(&j.it, 3, c->in, c->out);
  ad_bc_merge(&j.it, c->out);
  void (*run)(void *, int64_t, int64_t) = short_rows_pay(c, 3, &j.it) ? where_short : where_rows;
  if (c->out->size <= ELEM_GRAIN)
    run(&j, 0, c->out->size);
  else
    ad_parallel_for(c->out->size, ELEM_GRAIN, run, &j);
}

static ad_status where_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *zero = ad_scalar(ctx, c->gout->dtype, 0.0);
  ad_status st = AD_OK;
  if (c->needs[1]) st = ad_call_set_grad(c, 1, ad_where(ctx, c->in[0], c->gout, zero));
  if (st == AD_OK && c->needs[2])
    st = ad_call_set_grad(c, 2, ad_where(ctx, c->in[0], zero, c->gout));
  return st;
}

ad_tensor *ad_where(ad_ctx *ctx, ad_tensor *cond, ad_tensor *a, ad_tensor *b) {
  ad_tensor *in[3] = {cond, a, b};
  return ad_op_apply(ctx, AD_OP_WHERE, 3, in, NULL);
}

/* cond of 0s and 1s, no gradient; b of a's shape, then one row of it */
static int where_sample(const ad_sample_call *s) {
  if (s->variant > 1) return 0;
  int64_t sh[2] = {3, 4}, r[1] = {4};
  s->in[0] = ad_sample_tensor(s, 2, sh, 0, 1, false);
  for (int64_t i = 0; s->in[0] && i < s->in[0]->size; i++)
    ad_tensor_set(s->in[0], i, ad_tensor_get(s->in[0], i) < 0.5);
  s->in[1] = ad_sample_tensor(s, 2, sh, -2, 2, true);
  s->in[2] = ad_sample_tensor(s, s->variant ? 1 : 2, s->variant ? r : sh, -2, 2, true);
  return s->in[0] && s->in[1] && s->in[2] ? 3 : -1;
}

const ad_op_def ad_def_where = {
    .name = "where",
    .arity = 3,
    .flags = AD_OP_ELEMENTWISE,
    .shape = where_shape,
    .forward = where_fwd,
    .backward = where_bwd,
    .sample = where_sample,
    .math = "y = c != 0 ? a : b",
    .inputs = {"c", "a", "b"},
    .grads = {NULL, "where(c, dy, 0)", "where(c, 0, dy)"},
};

/* ---------------------------------------------------------------- prelu */

/* x > 0 ? x : w x, w broadcast (PyTorch's prelu with w read as [1, C, 1,
 * ...]): one pass instead of a comparison, two wheres and a product. A
 * NaN x takes w x (NaN). One product and a select per element, so the
 * clones (CELL_CLONES) of the rows where x is contiguous and w is too or
 * one value (a weight per row of [N, C], one per plane of [N, C, H, W],
 * or a single one) give the same bits; other strides take BINARY_LOOP. */
#define PRELU_ROW(NAME, T)                                                                         \
  CELL_CLONES static void NAME(const T *X, const T *W, T *Y, int64_t len, int64_t sw) {            \
    if (sw == 0) {                                                                                 \
      const T w = W[0];                                                                            \
      for (int64_t i = 0; i < len; i++) {                                                          \
        T x = X[i];                                                                                \
        Y[i] = x > 0 ? x : x * w;                                                                  \
      }                                                                                            \
    } else                                                                                         \
      for (int64_t i = 0; i < len; i++) {                                                          \
        T x = X[i];                                                                                \
        Y[i] = x > 0 ? x : x * W[i];                                                               \
      }                                                                                            \
  }
PRELU_ROW(prelu_row32, float)
PRELU_ROW(prelu_row64, double)

static void prelu_rows(const ad_call *c, int64_t oa, int64_t sa, int64_t ob, int64_t sb, int64_t oy,
                       int64_t len) {
  bool row = len > 1 && sa == 1 && (sb == 0 || sb == 1);
  if (c->out->dtype == AD_F32) {
    if (row)
      prelu_row32((const float *)c->in[0]->data + oa, (const float *)c->in[1]->data + ob,
                  (float *)c->out->data + oy, len, sb);
    else
      BINARY_LOOP(float, x0 > 0 ? x0 : x0 * x1);
  } else {
    if (row)
      prelu_row64((const double *)c->in[0]->data + oa, (const double *)c->in[1]->data + ob,
                  (double *)c->out->data + oy, len, sb);
    else
      BINARY_LOOP(double, x0 > 0 ? x0 : x0 * x1);
  }
}

static void prelu_fwd(const ad_call *c) { ad_binary_run(c, prelu_rows, NULL); }

/* dx = dy where x > 0, else w dy (w at 0 and at NaN); dw = dy x where x
 * <= 0 or NaN, a zero chosen where x > 0 (an x of +inf adds 0, not 0 *
 * inf), summed down by the engine where w is broadcast. Of ops, so
 * differentiable again: d2/dx dw = dy where x <= 0 or NaN. With a nonzero
 * attrs.scalar (nn_prelu_new's layer) and a recorded backward
 * (create_graph), PyTorch's double backward instead, whose terms are
 * masked by x > 0 and x <= 0, neither of which a NaN satisfies: no x-w
 * cross term at a NaN x (w and x enter the products detached there, so
 * values and first derivatives are the same). A backward not recorded has
 * no second derivative to mask, so it needs no look for NaN. */
static ad_status prelu_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *x = c->in[0], *w = c->in[1], *dy = c->gout;
  ad_tensor *zero = ad_scalar(ctx, dy->dtype, 0.0), *pos = ad_gt(ctx, x, zero);
  ad_tensor *wx = w, *xw = x;
  if (c->attrs->scalar != 0 && ad_grad_enabled(ctx)) {
    ad_tensor *num = ad_eq(ctx, x, x);
    /* detach by its op id: the file does not call op_shape.c, which calls
     * this one (tools/deps.py, the layering test) */
    if (c->needs[0]) wx = ad_where(ctx, num, w, ad_apply1(ctx, AD_OP_DETACH, w, NULL));
    if (c->needs[1]) xw = ad_where(ctx, num, x, ad_apply1(ctx, AD_OP_DETACH, x, NULL));
  }
  ad_status st = AD_OK;
  if (c->needs[0]) st = ad_call_set_grad(c, 0, ad_where(ctx, pos, dy, ad_mul(ctx, dy, wx)));
  if (st == AD_OK && c->needs[1])
    st = ad_call_set_grad(c, 1, ad_where(ctx, pos, zero, ad_mul(ctx, dy, xw)));
  return st;
}

ad_tensor *ad_prelu(ad_ctx *ctx, ad_tensor *x, ad_tensor *w) {
  return ad_apply2(ctx, AD_OP_PRELU, x, w, NULL);
}

/* x away from the kink at 0 (|x| in [0.2, 2], both signs); w in (-2, 2) */
static int prelu_sample(const ad_sample_call *s) {
  int k = sample_binary_range(s, 0.2, 2, -2, 2, false);
  for (int64_t i = 0; k > 0 && i < s->in[0]->size; i++)
    if (ad_rng_uniform(s->rng) < 0.5) ad_tensor_set(s->in[0], i, -ad_tensor_get(s->in[0], i));
  return k;
}

const ad_op_def ad_def_prelu = {
    .name = "prelu",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = prelu_fwd,
    .backward = prelu_bwd,
    .sample = prelu_sample,
    .math = "y = x > 0 ? x : w x",
    .inputs = {"x", "w"},
    .grads = {"dy where x > 0, else w dy", "dy x where x <= 0 or NaN, else 0"},
};

/* ----------------------------------------------------------- add_scalar */

/* e, or for a NaN x its own NaN (quieted: x + x), whatever the scalar:
 * with both NaN, x + s keeps whichever operand the compiler put first,
 * which differs between the clones of the loop (add_scalar, mul_scalar,
 * leaky_relu). */
#define KEEP_NAN(x, e) ((x) != (x) ? (x) + (x) : (e))

DEFINE_UNARY_S(add_scalar, KEEP_NAN(x, x + (float)s), KEEP_NAN(x, x + s))

static ad_status add_scalar_bwd(const ad_call *c) {
  c->gin[0] = c->gout;
  return AD_OK;
}

ad_tensor *ad_add_scalar(ad_ctx *ctx, ad_tensor *x, double s) {
  return with_scalar(ctx, AD_OP_ADD_SCALAR, x, s);
}
/* The error the ops a composite is built on recorded since before (the
 * context's count of errors), reported as fn's: "add_scalar: input 0 is
 * NULL" becomes "sub_scalar: input 0 is NULL". */
static void error_as(ad_ctx *ctx, uint32_t before, const char *fn) {
  /* none, a NULL input that kept an earlier one, or out of memory (the
   * arena's message names no op) */
  if (!ctx || ctx->nerrors == before || ctx->status == AD_ERR_OOM) return;
  char msg[sizeof ctx->err];
  snprintf(msg, sizeof msg, "%s", ctx->err);
  const char *rest = strstr(msg, ": ");
  ad_set_error(ctx, ctx->status, "%s: %s", fn, rest ? rest + 2 : msg);
}

ad_tensor *ad_sub_scalar(ad_ctx *ctx, ad_tensor *x, double s) {
  uint32_t before = ctx ? ctx->nerrors : 0;
  ad_tensor *y = ad_add_scalar(ctx, x, -s);
  if (!y) error_as(ctx, before, "sub_scalar");
  return y;
}
ad_tensor *ad_rsub_scalar(ad_ctx *ctx, ad_tensor *x, double s) {
  uint32_t before = ctx ? ctx->nerrors : 0;
  ad_tensor *y = ad_add_scalar(ctx, ad_neg(ctx, x), s);
  if (!y) error_as(ctx, before, "rsub_scalar");
  return y;
}

const ad_op_def ad_def_add_scalar = {
    .name = "add_scalar",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = add_scalar_fwd,
    .backward = add_scalar_bwd,
    .sample = sample_unary,
    .math = "y = x + s",
    .inputs = {"x"},
    .grads = {"dy"},
};

/* ----------------------------------------------------------- mul_scalar */

DEFINE_UNARY_S(mul_scalar, KEEP_NAN(x, x *(float)s), KEEP_NAN(x, x *s))

static ad_status mul_scalar_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_mul_scalar(c->ctx, c->gout, c->attrs->scalar));
}

ad_tensor *ad_mul_scalar(ad_ctx *ctx, ad_tensor *x, double s) {
  return with_scalar(ctx, AD_OP_MUL_SCALAR, x, s);
}
ad_tensor *ad_div_scalar(ad_ctx *ctx, ad_tensor *x, double s) {
  if (ctx && s == 0) {
    ad_set_error(ctx, AD_ERR_ARG, "div_scalar: division by zero");
    return NULL;
  }
  /* x / s, as PyTorch divides (by s rounded to x's dtype), not x * (1 / s):
   * the two differ in the last bit of many results (in f32 by more: 1/s
   * rounded to float is not the reciprocal of s rounded to float) */
  if (!ctx || !ad_arg_ok(ctx, "div_scalar", "x", x)) return NULL;
  if (x->dtype != AD_F32 && x->dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "div_scalar: x is %s; a float dtype is needed",
                 ad_dtype_name(x->dtype));
    return NULL;
  }
  return ad_div(ctx, x, ad_scalar(ctx, x->dtype, s));
}

const ad_op_def ad_def_mul_scalar = {
    .name = "mul_scalar",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = mul_scalar_fwd,
    .backward = mul_scalar_bwd,
    .sample = sample_unary,
    .math = "y = x * s",
    .inputs = {"x"},
    .grads = {"dy * s"},
};

/* ----------------------------------------------------------- pow_scalar */

/* x^p with PyTorch's special exponents: 2, 3, -1 and -2 are products and
 * a quotient, 0.5 and -0.5 are sqrt and 1 / sqrt (so sqrt's rules hold,
 * not pow's: -0 gives -0 and -inf, -inf gives NaN, as in PyTorch), 1 is
 * x; any other p is libm's pow. Float32's x^3, x^-2 and sqrt are computed
 * in double and rounded to float at the end (x * x and 1 / x in float are
 * correctly rounded already); its 1 / sqrt is rsqrt_v (vexp.h: within
 * 0.5001 ulp, in float lanes), 1 / sqrt in double where RSQRT_V_OUT. And
 * for float32, -1.5 (1 / sqrt's derivative) is 1 / (x sqrt(x)) in double,
 * pow's value at -inf (+0) chosen apart; float64's -1.5 stays libm's pow.
 * A loop over a tensor takes its exponent's case once (POW_CASES), a
 * single element the same functions. */
#define POW_RSQRT_float(x)  (RSQRT_V_OUT(x) ? (float)(1.0 / sqrt((double)(x))) : rsqrt_v(x))
#define POW_RSQRT_double(x) (1.0 / sqrt(x))
#define POW_M15_float(x)    ((x) == -INFINITY ? 0.0f : (float)(1.0 / ((double)(x)*sqrt((double)(x)))))
#define POW_M15_double(x)   pow(x, -1.5)
#define POW_CASES(T, E)                                                                            \
  E(2.0, T, x *x)                                                                                  \
  E(3.0, T, (T)((double)x * x * x))                                                                \
  E(-1.0, T, (T)1 / x)                                                                             \
  E(-2.0, T, (T)(1.0 / ((double)x * x)))                                                           \
  E(0.5, T, (T)sqrt(x))                                                                            \
  E(-0.5, T, POW_RSQRT_##T(x))                                                                     \
  E(-1.5, T, POW_M15_##T(x))                                                                       \
  E(1.0, T, x)
/* one element: the case's expression, else libm's */
#define POW_ONE(P, T, EXPR)                                                                        \
  if (p == (P)) return (EXPR);
static float pow_scalar_f(float x, double p) {
  POW_CASES(float, POW_ONE)
  return powf(x, (float)p);
}
static double pow_scalar_d(double x, double p) {
  POW_CASES(double, POW_ONE)
  return pow(x, p);
}
/* a loop of elements [b, e) per case */
#define POW_LOOP(P, T, EXPR)                                                                       \
  if (p == (P)) {                                                                                  \
    for (int64_t i = b; i < e; i++) {                                                              \
      T x = X[i];                                                                                  \
      Y[i] = (EXPR);                                                                               \
    }                                                                                              \
    return;                                                                                        \
  }
/* float32's 1 / sqrt: rsqrt_v, the few elements out of its range then
 * taken in double (V32_CHUNKS, as UNARY_KERNEL_V does) */
#define POW_PRE_float()                                                                            \
  do {                                                                                             \
    if (p != -0.5) break;                                                                          \
    V32_CHUNKS(rsqrt_v, RSQRT_V_OUT, POW_RSQRT_float);                                             \
    return;                                                                                        \
  } while (0)
#define POW_PRE_double() ((void)0)
#define POW_ROWS(NAME, T, POWF)                                                                    \
  CELL_CLONES static void NAME(const T *X, T *Y, int64_t b, int64_t e, double p) {                 \
    POW_PRE_##T();                                                                                 \
    POW_CASES(T, POW_LOOP)                                                                         \
    for (int64_t i = b; i < e; i++) Y[i] = POWF(X[i], p);                                          \
  }
POW_ROWS(pow_rows32, float, pow_scalar_f)
POW_ROWS(pow_rows64, double, pow_scalar_d)

static void pow_scalar_range(void *ud, int64_t b, int64_t e) {
  const unary_job *j = ud;
  if (j->y->dtype == AD_F32)
    pow_rows32(j->x->data, j->y->data, b, e, j->at->scalar);
  else
    pow_rows64(j->x->data, j->y->data, b, e, j->at->scalar);
}
UNARY_FWD(pow_scalar, WITH_S, pow_scalar_f(x, s), pow_scalar_d(x, s))

/* p = 0: y = 1 is constant, so x receives zeros, whatever dy holds, also
 * at x = 0 where p x^(p-1) would be 0 * inf: PyTorch's rule (its
 * zeros_like, as sign's: a leaf reached only through x^0 has a zero grad,
 * not none, which an optimizer's weight decay and momentum still see). */
static ad_status pow_scalar_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  double p = c->attrs->scalar;
  if (p == 0.0) return ad_call_set_grad(c, 0, ad_zeros_like(ctx, c->in[0]));
  ad_tensor *d = p == 2.0 ? ad_mul_scalar(ctx, c->in[0], 2.0)
                          : ad_mul_scalar(ctx, ad_pow_scalar(ctx, c->in[0], p - 1.0), p);
  return ad_call_set_grad(c, 0, ad_mul(ctx, c->gout, d));
}

ad_tensor *ad_pow_scalar(ad_ctx *ctx, ad_tensor *x, double p) {
  return with_scalar(ctx, AD_OP_POW_SCALAR, x, p);
}

/* x in [0.5, 2): every power exists */
static int pow_scalar_sample(const ad_sample_call *s) {
  static const double p[] = {2.0, -1.5, 3.5};
  if (s->variant >= 3) return 0;
  s->attrs->scalar = p[s->variant];
  return sample_unary_range(s, 0.5, 2, false);
}

const ad_op_def ad_def_pow_scalar = {
    .name = "pow_scalar",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = pow_scalar_fwd,
    .backward = pow_scalar_bwd,
    .sample = pow_scalar_sample,
    .math = "y = x ^ p",
    .inputs = {"x"},
    .grads = {"dy * p * x^(p-1), zeros for p = 0"},
};

/* ------------------------------------------------------------------ neg */

DEFINE_UNARY(neg, -x, -x)

static ad_status neg_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_neg(c->ctx, c->gout));
}

ad_tensor *ad_neg(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_NEG, x, NULL); }

const ad_op_def ad_def_neg = {
    .name = "neg",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = neg_fwd,
    .backward = neg_bwd,
    .sample = sample_unary,
    .math = "y = -x",
    .inputs = {"x"},
    .grads = {"-dy"},
};

/* ------------------------------------------------------------------ exp */

/* float32: exp_v (vexp.h, within 1.02 ulp of e^x; glibc's expf is
 * correctly rounded but a call per element, which does not vectorize),
 * libm where exp_v clamps: below -87.3 (results near FLT_MIN and
 * below: subnormals and 0) and above 88.3 (up to overflow to inf); NaN
 * stays NaN either way. float64: exp_d (vexp.h, within 0.68 ulp, 0.78
 * where the result is subnormal; glibc's exp is a call per element), on
 * every double. */
UNARY_KERNEL_V(exp, exp_v, EXP_V_OUT, expf, exp_d(x))

static ad_status exp_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_mul(c->ctx, c->gout, c->out));
}

ad_tensor *ad_exp(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_EXP, x, NULL); }

const ad_op_def ad_def_exp = {
    .name = "exp",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = exp_fwd,
    .backward = exp_bwd,
    .sample = sample_unary,
    .math = "y = exp(x)",
    .inputs = {"x"},
    .grads = {"dy * y"},
};

/* ------------------------------------------------------------------ log */

/* float32: log_v (vexp.h, within 0.92 ulp of ln x on every positive
 * normal float); glibc's logf, a call per element, where x is 0, a
 * subnormal, negative, infinite or NaN. float64: log_d (within 0.55 ulp)
 * likewise, where the build's FMA_D rounds once, else libm's. */
#ifdef VEXP_FMA_D_FUSED
#define LOG_OUT64(x) LOG_D_OUT(x)
#define LOG64        log_d
#else
#define LOG_OUT64(x) 0
#define LOG64        log
#endif
UNARY_KERNEL_VV(log, log_v, LOG_V_OUT, logf, LOG64, LOG_OUT64, log)

static ad_status log_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_div(c->ctx, c->gout, c->in[0]));
}

ad_tensor *ad_log(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_LOG, x, NULL); }

const ad_op_def ad_def_log = {
    .name = "log",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = log_fwd,
    .backward = log_bwd,
    .sample = sample_positive,
    .math = "y = log(x)",
    .inputs = {"x"},
    .grads = {"dy / x"},
};

/* ----------------------------------------------------------------- sqrt */

DEFINE_UNARY(sqrt, sqrtf(x), sqrt(x))

static ad_status sqrt_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_div(c->ctx, c->gout, ad_mul_scalar(c->ctx, c->out, 2.0)));
}

ad_tensor *ad_sqrt(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_SQRT, x, NULL); }

const ad_op_def ad_def_sqrt = {
    .name = "sqrt",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = sqrt_fwd,
    .backward = sqrt_bwd,
    .sample = sample_positive,
    .math = "y = sqrt(x)",
    .inputs = {"x"},
    .grads = {"dy / (2 y)"},
};

/* ------------------------------------------------------------------ abs */

DEFINE_UNARY(abs, fabsf(x), fabs(x))

static ad_status abs_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_apply2(c->ctx, AD_OP_ABS_BACKWARD, c->gout, c->in[0], NULL));
}

ad_tensor *ad_abs(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_ABS, x, NULL); }

const ad_op_def ad_def_abs = {
    .name = "abs",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = abs_fwd,
    .backward = abs_bwd,
    .sample = sample_nonzero,
    .math = "y = |x|",
    .inputs = {"x"},
    .grads = {"abs_backward(dy, x) = dy * sign(x)  (sign(0) = 0)"},
};

/* ------------------------------------------------------------------ sin */

/* float32: trig_v (vexp.h, within 0.5001 ulp) for |x| <= 2^20, libm's
 * beyond and for infinities and NaN; float64: trig_d (within 0.77 ulp) for
 * |x| <= 2^20 where the build's FMA_D rounds once, else libm's. */
#define TRIG_OUT32(x) (!(fabsf(x) <= TRIG_V_MAX))
#ifdef VEXP_FMA_D_FUSED
#define TRIG_OUT64(x) (!(fabs(x) <= TRIG_D_MAX))
#define SIN64         sin_d
#define COS64         cos_d
#else
#define TRIG_OUT64(x) 0
#define SIN64         sin
#define COS64         cos
#endif
UNARY_KERNEL_VV(sin, sin_v, TRIG_OUT32, sinf, SIN64, TRIG_OUT64, sin)

static ad_status sin_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_mul(c->ctx, c->gout, ad_cos(c->ctx, c->in[0])));
}

ad_tensor *ad_sin(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_SIN, x, NULL); }

const ad_op_def ad_def_sin = {
    .name = "sin",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = sin_fwd,
    .backward = sin_bwd,
    .sample = sample_unary,
    .math = "y = sin(x)",
    .inputs = {"x"},
    .grads = {"dy * cos(x)"},
};

/* ------------------------------------------------------------------ cos */

UNARY_KERNEL_VV(cos, cos_v, TRIG_OUT32, cosf, COS64, TRIG_OUT64, cos)

static ad_status cos_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  return ad_call_set_grad(c, 0, ad_mul(ctx, c->gout, ad_neg(ctx, ad_sin(ctx, c->in[0]))));
}

ad_tensor *ad_cos(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_COS, x, NULL); }

const ad_op_def ad_def_cos = {
    .name = "cos",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = cos_fwd,
    .backward = cos_bwd,
    .sample = sample_unary,
    .math = "y = cos(x)",
    .inputs = {"x"},
    .grads = {"-dy * sin(x)"},
};

/* The activations' grad_into (tanh, sigmoid, relu): a new gradient is the
 * kernel of their backward op (declared here, defined in its own block
 * below) run on (dy, second) straight into grad, the same bits as the
 * backward's op; adding to an existing one is declined (the ordinary path
 * adds the op's result). */
static void tanh_backward_fwd(const ad_call *c);
static void sigmoid_backward_fwd(const ad_call *c);
static void relu_backward_fwd(const ad_call *c);
static void gelu_backward_fwd(const ad_call *c);

static bool activation_grad_into(const ad_call *c, ad_forward_fn kernel, ad_tensor *second,
                                 ad_tensor *grad, bool overwrite) {
  if (!overwrite) return false;
  ad_tensor *in[2] = {c->gout, second};
  ad_call k = {.ctx = c->ctx, .name = c->name, .n = 2, .in = in, .attrs = c->attrs, .out = grad};
  kernel(&k);
  return true;
}

/* ----------------------------------------------------------------- tanh */

/* float32: tanh_v (vexp.h: at most 1.46 ulp; glibc's tanhf 2.16, and a
 * call per element), defined on every float. */
UNARY_KERNEL_V(tanh, tanh_v, NEVER_OUT32, tanhf, tanh_d(x))

static ad_status tanh_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_apply2(c->ctx, AD_OP_TANH_BACKWARD, c->gout, c->out, NULL));
}

static bool tanh_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  (void)k;
  return activation_grad_into(c, tanh_backward_fwd, c->out, grad, overwrite);
}

ad_tensor *ad_tanh(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_TANH, x, NULL); }

const ad_op_def ad_def_tanh = {
    .name = "tanh",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE | AD_OP_GRAD_INTO_TEMPS,
    .forward = tanh_fwd,
    .backward = tanh_bwd,
    .grad_into = tanh_grad_into,
    .sample = sample_unary,
    .math = "y = tanh(x)",
    .inputs = {"x"},
    .grads = {"tanh_backward(dy, y) = dy * (1 - y^2)"},
};

/* -------------------------------------------------------------- sigmoid */

/* Stable on both sides: exp never overflows. float64: sigmoid_d (vexp.h,
 * on exp_d, e = e^-|x|, the numerator chosen before the division, as
 * float32's sigmoid_v below, and the quotient corrected). */
static inline float sigmoid_f(float x) {
  return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}
/* float32 in the loops: the same form on exp_v, e = e^-|x| in (0, 1];
 * below -87.3, where exp_v clamps (the result is near FLT_MIN or below:
 * subnormal or 0), libm's form. The numerator is chosen before the one
 * division (the same quotients): written as two quotients, the vectorized
 * loop ran both divisions, a third of logsigmoid_backward's time. */
static inline float sigmoid_v(float x) VEXP_INLINE;
static inline float sigmoid_v(float x) {
  float e = exp_v(-fabsf(x));
  float num = x >= 0 ? 1.0f : e;
  return num / (1.0f + e);
}
#define SIGMOID_OUT32(x) ((x) < EXP_V_MIN)

UNARY_KERNEL_V(sigmoid, sigmoid_v, SIGMOID_OUT32, sigmoid_f, sigmoid_d(x))

static ad_status sigmoid_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_apply2(c->ctx, AD_OP_SIGMOID_BACKWARD, c->gout, c->out, NULL));
}

static bool sigmoid_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  (void)k;
  return activation_grad_into(c, sigmoid_backward_fwd, c->out, grad, overwrite);
}

ad_tensor *ad_sigmoid(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_SIGMOID, x, NULL); }

const ad_op_def ad_def_sigmoid = {
    .name = "sigmoid",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE | AD_OP_GRAD_INTO_TEMPS,
    .forward = sigmoid_fwd,
    .backward = sigmoid_bwd,
    .grad_into = sigmoid_grad_into,
    .sample = sample_unary,
    .math = "y = 1 / (1 + exp(-x))",
    .inputs = {"x"},
    .grads = {"sigmoid_backward(dy, y) = dy * y * (1 - y)"},
};

/* ----------------------------------------------------------------- relu */

DEFINE_UNARY(relu, AD_MAX_NAN(x, 0.0f), AD_MAX_NAN(x, 0.0))

static ad_status relu_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_apply2(c->ctx, AD_OP_RELU_BACKWARD, c->gout, c->in[0], NULL));
}

static bool relu_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  (void)k;
  return activation_grad_into(c, relu_backward_fwd, c->in[0], grad, overwrite);
}

ad_tensor *ad_relu(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_RELU, x, NULL); }

const ad_op_def ad_def_relu = {
    .name = "relu",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE | AD_OP_GRAD_INTO_TEMPS,
    .forward = relu_fwd,
    .backward = relu_bwd,
    .grad_into = relu_grad_into,
    .sample = sample_nonzero,
    .math = "y = max(x, 0)  (NaN for NaN)",
    .inputs = {"x"},
    .grads = {"relu_backward(dy, x) = dy, 0 where x <= 0  (relu'(0) = 0; dy at NaN)"},
};

/* ----------------------------------------------------------- leaky_relu */

/* The float64 form in statements: written as one nested choice, GCC
 * branched on x > 0 at every element of a float64 row (3x PyTorch's time
 * on random signs); the float32 rows are vectorized clones either way. */
static inline double leaky_relu64(double x, double s) {
  double neg = s * x;
  neg = x != x ? x + x : neg;
  return x > 0 ? x : neg;
}

DEFINE_UNARY_S(leaky_relu, x > 0 ? x : KEEP_NAN(x, (float)s *x), leaky_relu64(x, s))

static ad_status leaky_relu_bwd(const ad_call *c) {
  return ad_call_set_grad(
      c, 0, ad_apply2(c->ctx, AD_OP_LEAKY_RELU_BACKWARD, c->gout, c->in[0], c->attrs));
}

ad_tensor *ad_leaky_relu(ad_ctx *ctx, ad_tensor *x, double alpha) {
  return with_scalar(ctx, AD_OP_LEAKY_RELU, x, alpha);
}

/* |x| >= 0.2: away from the kink at 0 */
static int leaky_relu_sample(const ad_sample_call *s) {
  s->attrs->scalar = 0.1;
  return sample_unary_range(s, 0.2, 2, true);
}

const ad_op_def ad_def_leaky_relu = {
    .name = "leaky_relu",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = leaky_relu_fwd,
    .backward = leaky_relu_bwd,
    .sample = leaky_relu_sample,
    .math = "y = x > 0 ? x : alpha x",
    .inputs = {"x"},
    .grads = {"leaky_relu_backward(dy, x) = dy * (x > 0 ? 1 : alpha)  (alpha at 0)"},
};

/* ----------------------------------------------------------------- gelu */

#define SQRT1_2 0.70710678118654752440

/* float32: gelu_v (vexp.h) for |x| <= 13, whose negative tail is computed
 * as erfc, not 1 + erf (which lost every digit below about -6, as
 * PyTorch's form does); beyond and for NaN the same tail form in double
 * (libm's erfc; in float the rounding of x / sqrt 2 alone costs 177 ulp
 * at -13). float64: libm's erf (its tail cancels as before). */
static inline float gelu_f(float x) { return (float)(0.5 * x * erfc(-x * SQRT1_2)); }
#define GELU_OUT32(x) (!((x) >= -13.0f && (x) <= 13.0f))
/* gelu's AVX-512 and AVX2 loops (below): where the row loops are cloned
 * (vexp.h) */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__ELF__) &&         \
    !defined(__SANITIZE_THREAD__)
#define GELU_SPLIT 1
#include <immintrin.h>
#else
#define GELU_SPLIT 0
#endif
CELL_CLONES static void gelu_rows32_whole(const float *X, float *Y, int64_t b, int64_t e) {
  V32_CHUNKS(gelu_v, GELU_OUT32, gelu_f);
}
#if GELU_SPLIT
/* gelu_v evaluates both halves of erf for every element (selects, so that
 * the loop vectorizes), though an element needs one: the series near 0,
 * the erfc tail beyond |x| = 1.27 (a fifth of standard normal values).
 * With AVX-512 or AVX2, each chunk of 256 takes the series (gelu_near_v)
 * for all its elements, packs the others into a buffer that the tail
 * (gelu_far_v) runs over, and puts their values back in place: the same
 * operations per element as gelu_v's, so the same bits
 * (parallel::gelu_split_same_bits_as_whole on this CPU's form, isa_clones
 * on the others under qemu), in about half the time. Elements beyond +-13
 * and NaN take gelu_f after the chunk, as in V32_CHUNKS; a tail of fewer
 * than a vector takes gelu_rows32_whole.
 *
 * The loop of both forms, vectors of W lanes: PACK(v) appends vector v's
 * elements beyond the series' range to tail (k of them so far: at most n,
 * and the last vector's store ends at n) and keeps their lanes in
 * mask[v]; UNPACK(v) puts their values from tail + o back into y. NEAR and
 * FAR are the halves; after them POST(i) runs on each element (gelu's
 * backward: the product by dy, G[i]) and FIX(i) on those beyond +-13 and
 * NaN; REST(c0) takes the elements from c0 on, fewer than a vector. */
#define GELU_SPLIT_ROWS(W, PACK, UNPACK, NEAR, FAR, POST, FIX, REST)                               \
  float tail[256] = {0}; /* (UNPACK's loads reach past kr, up to n) */                             \
  int mask[256 / W];                                                                               \
  int64_t c0 = b;                                                                                  \
  for (; e - c0 >= W; c0 += 256) {                                                                 \
    int64_t n = e - c0 < 256 ? (e - c0) / W * W : 256;                                             \
    const float *x = X + c0;                                                                       \
    float *y = Y + c0;                                                                             \
    int out = 0, k = 0;                                                                            \
    for (int64_t i = 0; i < n; i++) {                                                              \
      y[i] = NEAR(x[i]);                                                                           \
      out |= GELU_OUT32(x[i]);                                                                     \
    }                                                                                              \
    for (int v = 0; v < n / W; v++) PACK(v);                                                       \
    int kr = (k + W - 1) / W * W; /* whole vectors: no scalar epilogue */                          \
    for (int i = k; i < kr; i++) tail[i] = 2.0f;                                                   \
    for (int v = 0; v < kr; v += W)                                                                \
      for (int j = 0; j < W; j++) tail[v + j] = FAR(tail[v + j]);                                  \
    for (int v = 0, o = 0; v < n / W; v++) UNPACK(v);                                              \
    for (int64_t i = 0; i < n; i++) POST(c0 + i);                                                  \
    if (out)                                                                                       \
      for (int64_t i = 0; i < n; i++)                                                              \
        if (GELU_OUT32(x[i])) FIX(c0 + i);                                                         \
    if (n < 256) {                                                                                 \
      c0 += n;                                                                                     \
      break;                                                                                       \
    }                                                                                              \
  }                                                                                                \
  if (c0 < e) REST(c0);
/* gelu's forward in these terms */
#define GELU_NO_POST(i)
#define GELU_FIX(i)  Y[i] = gelu_f(X[i])
#define GELU_REST(c) gelu_rows32_whole(X, Y, c, e)

/* AVX-512: vcompressps and vexpandps */
#define GELU_PACK16(v)                                                                             \
  do {                                                                                             \
    __m512 xv = _mm512_loadu_ps(x + 16 * (v));                                                     \
    __mmask16 m = _mm512_cmp_ps_mask(                                                              \
        _mm512_mul_ps(_mm512_abs_ps(xv), _mm512_set1_ps(0.70710677f)), _mm512_set1_ps(0.9f),       \
        _CMP_NLT_UQ); /* not GELU_NEAR: NaN too (fixed after) */                                   \
    mask[v] = m;                                                                                   \
    _mm512_storeu_ps(tail + k, _mm512_maskz_compress_ps(m, xv));                                   \
    k += __builtin_popcount(m);                                                                    \
  } while (0)
#define GELU_UNPACK16(v)                                                                           \
  do {                                                                                             \
    __mmask16 m = (__mmask16)mask[v];                                                              \
    _mm512_storeu_ps(y + 16 * (v), _mm512_mask_expand_ps(_mm512_loadu_ps(y + 16 * (v)), m,         \
                                                         _mm512_loadu_ps(tail + o)));              \
    o += __builtin_popcount(m);                                                                    \
  } while (0)
__attribute__((target("avx512f,fma"))) static void gelu_rows32_split16(const float *X, float *Y,
                                                                       int64_t b, int64_t e) {
  GELU_SPLIT_ROWS(16, GELU_PACK16, GELU_UNPACK16, gelu_near_v, gelu_far_v, GELU_NO_POST, GELU_FIX,
                  GELU_REST)
}

/* The same with AVX2 (no compress instruction): each vector's lanes are
 * packed and put back through a permutation picked by the lanes' mask
 * from tables made when the library loads. */
static int32_t gelu_pack[256][8], gelu_unpack[256][8];
__attribute__((constructor)) static void gelu_tables(void) {
  for (int m = 0; m < 256; m++)
    for (int l = 0, k = 0; l < 8; l++) {
      gelu_pack[m][l] = 0;
      if (m >> l & 1) gelu_pack[m][k++] = l; /* lane k of the packed vector: lane l */
      gelu_unpack[m][l] = k - (m >> l & 1);  /* lane l: its rank among the set lanes */
    }
}
#define GELU_PACK8(v)                                                                              \
  do {                                                                                             \
    __m256 xv = _mm256_loadu_ps(x + 8 * (v));                                                      \
    __m256 a =                                                                                     \
        _mm256_mul_ps(_mm256_and_ps(xv, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))),       \
                      _mm256_set1_ps(0.70710677f));                                                \
    int m = _mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(0.9f), _CMP_NLT_UQ));               \
    mask[v] = m;                                                                                   \
    _mm256_storeu_ps(tail + k,                                                                     \
                     _mm256_permutevar8x32_ps(                                                     \
                         xv, _mm256_loadu_si256((const __m256i *)(const void *)gelu_pack[m])));    \
    k += __builtin_popcount((unsigned)m);                                                          \
  } while (0)
#define GELU_UNPACK8(v)                                                                            \
  do {                                                                                             \
    int m = mask[v];                                                                               \
    __m256 t = _mm256_permutevar8x32_ps(                                                           \
        _mm256_loadu_ps(tail + o),                                                                 \
        _mm256_loadu_si256((const __m256i *)(const void *)gelu_unpack[m]));                        \
    __m256i set = _mm256_cmpgt_epi32(                                                              \
        _mm256_and_si256(_mm256_set1_epi32(m), _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128)),    \
        _mm256_setzero_si256());                                                                   \
    _mm256_storeu_ps(y + 8 * (v),                                                                  \
                     _mm256_blendv_ps(_mm256_loadu_ps(y + 8 * (v)), t, _mm256_castsi256_ps(set))); \
    o += __builtin_popcount((unsigned)m);                                                          \
  } while (0)
__attribute__((target("avx2,fma"))) static void gelu_rows32_split8(const float *X, float *Y,
                                                                   int64_t b, int64_t e) {
  GELU_SPLIT_ROWS(8, GELU_PACK8, GELU_UNPACK8, gelu_near_v, gelu_far_v, GELU_NO_POST, GELU_FIX,
                  GELU_REST)
}
#endif
static void gelu_rows32(const float *X, float *Y, int64_t b, int64_t e) {
#if GELU_SPLIT
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) {
    gelu_rows32_split16(X, Y, b, e);
    return;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    gelu_rows32_split8(X, Y, b, e);
    return;
  }
#endif
  gelu_rows32_whole(X, Y, b, e);
}
UNARY_KERNEL_V_REST(gelu, gelu_v, GELU_OUT32, gelu_f, 0.5 * x * (1.0 + erf(x * SQRT1_2)))

static ad_status gelu_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_apply2(c->ctx, AD_OP_GELU_BACKWARD, c->gout, c->in[0], NULL));
}

static bool gelu_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  (void)k;
  return activation_grad_into(c, gelu_backward_fwd, c->in[0], grad, overwrite);
}

ad_tensor *ad_gelu(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_GELU, x, NULL); }

const ad_op_def ad_def_gelu = {
    .name = "gelu",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE | AD_OP_GRAD_INTO_TEMPS,
    .forward = gelu_fwd,
    .backward = gelu_bwd,
    .grad_into = gelu_grad_into,
    .sample = sample_unary,
    .math = "y = x Phi(x), Phi(x) = (1 + erf(x/sqrt 2))/2",
    .inputs = {"x"},
    .grads = {"gelu_backward(dy, x) = dy * (Phi(x) + x phi(x)), phi = Phi' = "
              "e^(-x^2/2)/sqrt(2 pi)"},
};

/* ------------------------------------------------------------- softplus */

/* max(x, 0) + log1p(exp(-|x|)): exp never overflows. float64: softplus_d
 * (vexp.h). */
static inline float softplus_f(float x) { return (x > 0 ? x : 0) + log1pf(expf(-fabsf(x))); }

/* float32: softplus_v (vexp.h) from EXP_V_MIN up, libm below and for NaN */
#define SOFTPLUS_OUT32(x) (!((x) >= EXP_V_MIN))
UNARY_KERNEL_V(softplus, softplus_v, SOFTPLUS_OUT32, softplus_f, softplus_d(x))

static ad_status softplus_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_mul(c->ctx, c->gout, ad_sigmoid(c->ctx, c->in[0])));
}

ad_tensor *ad_softplus(ad_ctx *ctx, ad_tensor *x) {
  return ad_apply1(ctx, AD_OP_SOFTPLUS, x, NULL);
}

const ad_op_def ad_def_softplus = {
    .name = "softplus",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = softplus_fwd,
    .backward = softplus_bwd,
    .sample = sample_unary,
    .math = "y = log(1 + exp(x)) = max(x,0) + log1p(exp(-|x|))",
    .inputs = {"x"},
    .grads = {"dy * sigmoid(x)"},
};

/* ------------------------------------------------------------------ erf */

/* float32: erf_v (vexp.h, within 1.07 ulp) for |x| <= 9; libm's erff
 * beyond (where erf is +-1 in float) and for NaN. */
#define ERF_OUT32(x) (!((x) >= -9.0f && (x) <= 9.0f))
UNARY_KERNEL_V(erf, erf_v, ERF_OUT32, erff, erf(x))

static ad_status erf_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *d =
      ad_mul_scalar(ctx, ad_exp(ctx, ad_neg(ctx, ad_square(ctx, c->in[0]))), 1.1283791670955126);
  return ad_call_set_grad(c, 0, ad_mul(ctx, c->gout, d));
}

ad_tensor *ad_erf(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_ERF, x, NULL); }

const ad_op_def ad_def_erf = {
    .name = "erf",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = erf_fwd,
    .backward = erf_bwd,
    .sample = sample_unary,
    .math = "y = erf(x)",
    .inputs = {"x"},
    .grads = {"dy * 2/sqrt(pi) * exp(-x^2)"},
};

/* --------------------------------------------------------------- square */

DEFINE_UNARY(square, x *x, x *x)

static ad_status square_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_mul(c->ctx, c->gout, ad_mul_scalar(c->ctx, c->in[0], 2.0)));
}

ad_tensor *ad_square(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_SQUARE, x, NULL); }

const ad_op_def ad_def_square = {
    .name = "square",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = square_fwd,
    .backward = square_bwd,
    .sample = sample_unary,
    .math = "y = x^2",
    .inputs = {"x"},
    .grads = {"dy * 2 x"},
};

/* ----------------------------------------------------------------- atan */

/* float32: atan_v (vexp.h, within 0.5001 ulp) but for NaN, which libm's
 * atanf returns as it came; float64: atan_d (within 0.542 ulp) but for
 * infinities and NaN where the build's FMA_D rounds once, else libm's */
#define NAN_OUT32(x) ((x) != (x))
#ifdef VEXP_FMA_D_FUSED
#define ATAN_OUT64(x) (!(fabs(x) <= DBL_MAX))
#define ATAN64        atan_d
#else
#define ATAN_OUT64(x) 0
#define ATAN64        atan
#endif
UNARY_KERNEL_VV(atan, atan_v, NAN_OUT32, atanf, ATAN64, ATAN_OUT64, atan)

static ad_status atan_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *d = ad_add_scalar(ctx, ad_square(ctx, c->in[0]), 1.0);
  return ad_call_set_grad(c, 0, ad_div(ctx, c->gout, d));
}

ad_tensor *ad_atan(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_ATAN, x, NULL); }

const ad_op_def ad_def_atan = {
    .name = "atan",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = atan_fwd,
    .backward = atan_bwd,
    .sample = sample_unary,
    .math = "y = atan(x)",
    .inputs = {"x"},
    .grads = {"dy / (1 + x^2)"},
};

/* ---------------------------------------------------------------- clamp */

/* min(max(x, lo), hi) as PyTorch's kernel computes it (std::min of
 * std::max): x where it equals a bound (-0.0 stays -0.0 at a bound 0), a
 * NaN x itself, hi everywhere when lo > hi; the bounds rounded to the
 * dtype. Comparisons and selects only (maxps / minps in the clones), so
 * every clone and thread count gives the same bits. A NaN bound makes
 * every element NaN, as torch fills its result then. */
#define CLAMP_ROWS(NAME, T)                                                                        \
  CELL_CLONES static void NAME(const T *X, T *Y, int64_t b, int64_t e, T lo, T hi) {               \
    for (int64_t i = b; i < e; i++) {                                                              \
      T x = X[i], t = x < lo ? lo : x;                                                             \
      Y[i] = hi < t ? hi : t;                                                                      \
    }                                                                                              \
  }
CLAMP_ROWS(clamp_rows32, float)
CLAMP_ROWS(clamp_rows64, double)

static void clamp_range(void *ud, int64_t b, int64_t e) {
  const unary_job *j = ud;
  const ad_clamp_attrs *a = &j->at->clamp;
  if (j->y->dtype == AD_F32)
    clamp_rows32(j->x->data, j->y->data, b, e, (float)a->lo, (float)a->hi);
  else
    clamp_rows64(j->x->data, j->y->data, b, e, a->lo, a->hi);
}

static void clamp_fwd(const ad_call *c) {
  const ad_clamp_attrs *a = &c->attrs->clamp;
  ad_tensor *out = c->out;
  if (isnan(a->lo) || isnan(a->hi)) {
    for (int64_t i = 0; i < out->size; i++)
      if (out->dtype == AD_F32)
        ((float *)out->data)[i] = NAN;
      else
        ((double *)out->data)[i] = NAN;
    return;
  }
  unary_job j = {c->in[0], out, c->attrs};
  if (out->size <= ELEM_GRAIN)
    clamp_range(&j, 0, out->size);
  else
    ad_parallel_for(out->size, ELEM_GRAIN, clamp_range, &j);
}

static ad_status clamp_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0,
                          ad_apply2(c->ctx, AD_OP_CLAMP_BACKWARD, c->gout, c->in[0], c->attrs));
}

/* A finite bound beyond float32's range is refused for an f32 x, as torch
 * refuses to convert it ("value cannot be converted to type float without
 * overflow"); infinities and NaN pass. */
static bool clamp_bound_ok(ad_ctx *ctx, const char *fn, const ad_tensor *x, const char *which,
                           double v) {
  if (x->dtype != AD_F32 || !isfinite(v) || fabs(v) <= FLT_MAX) return true;
  /* %.9g: 3.4028235e+38 (refused) reads apart from FLT_MAX (taken) */
  ad_set_error(ctx, AD_ERR_ARG, "%s: %s %.9g is outside float32's range (x is f32)", fn, which, v);
  return false;
}

/* The errors name the builder called (ad_hardtanh's too, though the op
 * that runs is clamp). */
static ad_tensor *clamp_op(ad_ctx *ctx, ad_tensor *x, double lo, double hi, bool inner) {
  const char *fn = inner ? "hardtanh" : "clamp";
  if (!ctx || !ad_arg_ok(ctx, fn, "x", x) || ad_check_float_same(ctx, fn, 1, &x) != AD_OK)
    return NULL;
  if (!clamp_bound_ok(ctx, fn, x, "min", lo) || !clamp_bound_ok(ctx, fn, x, "max", hi)) return NULL;
  ad_attrs at = {.clamp = {lo, hi, inner}};
  return ad_apply1(ctx, AD_OP_CLAMP, x, &at);
}

ad_tensor *ad_clamp(ad_ctx *ctx, ad_tensor *x, double lo, double hi) {
  return clamp_op(ctx, x, lo, hi, false);
}

ad_tensor *ad_hardtanh(ad_ctx *ctx, ad_tensor *x, double lo, double hi) {
  return clamp_op(ctx, x, lo, hi, true);
}

/* Moves the elements of t within 0.1 of a finite bound 0.25 away from it,
 * so that no central difference straddles a jump of the gradient. */
static void clamp_sample_away(ad_tensor *t, double lo, double hi) {
  for (int64_t i = 0; t && i < t->size; i++) {
    double v = ad_tensor_get(t, i);
    if (fabs(v - lo) < 0.1) v = lo + (v < lo ? -0.25 : 0.25);
    if (fabs(v - hi) < 0.1) v = hi + (v < hi ? -0.25 : 0.25);
    ad_tensor_set(t, i, v);
  }
}

/* both bounds; a missing lower one (-inf); lo > hi (no gradient at all);
 * hardtanh's gradient */
static const ad_clamp_attrs clamp_cases[] = {
    {-1.0, 1.0, false}, {-INFINITY, 0.5, false}, {1.0, -1.0, false}, {0.0, 6.0, true}};

static int clamp_sample(const ad_sample_call *s) {
  if (s->variant >= 4) return 0;
  s->attrs->clamp = clamp_cases[s->variant];
  int n = sample_unary_range(s, 0.2, 2, true);
  if (n > 0) clamp_sample_away(s->in[0], s->attrs->clamp.lo, s->attrs->clamp.hi);
  return n;
}

const ad_op_def ad_def_clamp = {
    .name = "clamp",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_CLAMP,
    .forward = clamp_fwd,
    .backward = clamp_bwd,
    .sample = clamp_sample,
    .math = "y = min(max(x, lo), hi)  (hi where lo > hi; NaN for a NaN bound)",
    .inputs = {"x"},
    .grads = {"clamp_backward(dy, x) = dy where lo <= x <= hi, else 0  (dy at a bound; "
              "hardtanh: where lo < x < hi)"},
};

/* ----------------------------------------------------------------- sign */

/* [x > 0] - [x < 0]: -1, 0 or 1; +0 for -0.0 and for NaN, as PyTorch 1.13
 * (not NumPy's NaN). Each bracket a select of two constants: as ints
 * converted to double, GCC branched on each element of a float64 row
 * (1.3 ns an element, 14x float32's). */
DEFINE_UNARY(sign, (x > 0 ? 1.0f : 0.0f) - (x < 0 ? 1.0f : 0.0f),
             (x > 0 ? 1.0 : 0.0) - (x < 0 ? 1.0 : 0.0))

/* piecewise constant: x receives zeros, whatever dy holds (NaN and
 * infinities included), as torch's zeros_like: a leaf reached only through
 * sign then has a zero grad, not none, so an optimizer still applies its
 * weight decay and momentum to it as torch's does */
static ad_status sign_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(c, 0, ad_zeros_like(c->ctx, c->in[0]));
}

ad_tensor *ad_sign(ad_ctx *ctx, ad_tensor *x) { return ad_apply1(ctx, AD_OP_SIGN, x, NULL); }

const ad_op_def ad_def_sign = {
    .name = "sign",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = sign_fwd,
    .backward = sign_bwd,
    .sample = sample_nonzero,
    .math = "y = sign(x)  (sign(0) = sign(NaN) = 0)",
    .inputs = {"x"},
    .grads = {"0 (zeros, whatever dy holds)"},
};

/* ------------------------------------------------------------ hardswish */

/* x min(max(x + 3, 0), 6) / 6, PyTorch's kernel's arithmetic in x's
 * dtype (-0 for x <= -3, NaN at -inf as its 0 * -inf); a NaN x gives its
 * own NaN (quieted), so that no operation meets two NaNs (KEEP_NAN). One
 * pass instead of the fifteen ops of its composition with PyTorch's
 * slopes at the kinks. */
#define HARDSWISH_OF(T, x)                                                                         \
  ((x) * ((x) + (T)3 < 0 ? (T)0 : (T)6 < (x) + (T)3 ? (T)6 : (x) + (T)3) / (T)6)
DEFINE_UNARY(hardswish, KEEP_NAN(x, HARDSWISH_OF(float, x)), KEEP_NAN(x, HARDSWISH_OF(double, x)))

static ad_status hardswish_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0,
                          ad_apply2(c->ctx, AD_OP_HARDSWISH_BACKWARD, c->gout, c->in[0], NULL));
}

/* as relu's: a new gradient is hardswish_backward's kernel run straight
 * into grad (its bits), not a new tensor copied there */
static void hardswish_backward_fwd(const ad_call *c);
static bool hardswish_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  (void)k;
  return activation_grad_into(c, hardswish_backward_fwd, c->in[0], grad, overwrite);
}

ad_tensor *ad_hardswish(ad_ctx *ctx, ad_tensor *x) {
  return ad_apply1(ctx, AD_OP_HARDSWISH, x, NULL);
}

/* Moves the elements of t within 0.1 of a finite bound 0.25 away from it,
 * so that no central difference straddles a jump of the gradient. */
static void clamp_sample_away(ad_tensor *t, double lo, double hi);

/* |x| in [0.2, 5], both signs, away from the kinks at -3 and 3: every piece */
static int sample_hard(const ad_sample_call *s) {
  int n = sample_unary_range(s, 0.2, 5, true);
  if (n > 0) clamp_sample_away(s->in[0], -3, 3);
  return n;
}

const ad_op_def ad_def_hardswish = {
    .name = "hardswish",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE | AD_OP_GRAD_INTO_TEMPS,
    .forward = hardswish_fwd,
    .backward = hardswish_bwd,
    .grad_into = hardswish_grad_into,
    .sample = sample_hard,
    .math = "y = x min(max(x + 3, 0), 6) / 6",
    .inputs = {"x"},
    .grads =
        {"hardswish_backward(dy, x) = 0 below -3, dy (x/3 + 1/2) on [-3, 3], dy above and at NaN"},
};

/* ---------------------------------------------------------- hardsigmoid */

/* min(max(x + 3, 0), 6) / 6, PyTorch's arithmetic (NaN for a NaN x: its
 * own, quieted). Its slope is 1/6 on (-3, 3) only, which PyTorch 1.13
 * takes as 1.0f / 6.0f, float32's 1/6, also for float64
 * (0.1666666716337204): hardtanh's gradient (clamp_backward, 0 at -3, 3
 * and NaN) times that. */
#define HARDSIGMOID_OF(T, x)                                                                       \
  (((x) + (T)3 < 0 ? (T)0 : (T)6 < (x) + (T)3 ? (T)6 : (x) + (T)3) / (T)6)
DEFINE_UNARY(hardsigmoid, KEEP_NAN(x, HARDSIGMOID_OF(float, x)),
             KEEP_NAN(x, HARDSIGMOID_OF(double, x)))

static ad_status hardsigmoid_bwd(const ad_call *c) {
  ad_attrs at = {.clamp = {-3, 3, true}};
  ad_tensor *d = ad_apply2(c->ctx, AD_OP_CLAMP_BACKWARD, c->gout, c->in[0], &at);
  return ad_call_set_grad(c, 0, ad_mul_scalar(c->ctx, d, (double)(1.0f / 6.0f)));
}

ad_tensor *ad_hardsigmoid(ad_ctx *ctx, ad_tensor *x) {
  return ad_apply1(ctx, AD_OP_HARDSIGMOID, x, NULL);
}

const ad_op_def ad_def_hardsigmoid = {
    .name = "hardsigmoid",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .forward = hardsigmoid_fwd,
    .backward = hardsigmoid_bwd,
    .sample = sample_hard,
    .math = "y = min(max(x + 3, 0), 6) / 6",
    .inputs = {"x"},
    .grads = {"dy * float32(1/6) where -3 < x < 3, else 0"},
};

/* ----------------------------------------------------------- softshrink */

/* x > l ? x - l : x < -l ? x + l : 0 (l = attrs.scalar, lambd, rounded to
 * x's dtype), PyTorch 1.13's kernel: 0 at a NaN x. One pass instead of
 * six ops. */
DEFINE_UNARY_S(softshrink, x > (float)s ? x - (float)s : (x < -(float)s ? x + (float)s : 0.0f),
               x > s ? x - s : (x < -s ? x + s : 0.0))

static ad_status softshrink_bwd(const ad_call *c) {
  return ad_call_set_grad(
      c, 0, ad_apply2(c->ctx, AD_OP_SOFTSHRINK_BACKWARD, c->gout, c->in[0], c->attrs));
}

ad_tensor *ad_softshrink(ad_ctx *ctx, ad_tensor *x, double lambd) {
  return with_scalar(ctx, AD_OP_SOFTSHRINK, x, lambd);
}

/* lambd 0.5; |x| in [0.2, 2], both signs, away from the kinks at +-0.5 */
static int sample_shrink(const ad_sample_call *s) {
  s->attrs->scalar = 0.5;
  int n = sample_unary_range(s, 0.2, 2, true);
  if (n > 0) clamp_sample_away(s->in[0], -0.5, 0.5);
  return n;
}

const ad_op_def ad_def_softshrink = {
    .name = "softshrink",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = softshrink_fwd,
    .backward = softshrink_bwd,
    .sample = sample_shrink,
    .math = "y = x > l ? x - l : x < -l ? x + l : 0  (l = lambd; 0 at NaN)",
    .inputs = {"x"},
    .grads = {"softshrink_backward(dy, x) = dy where x < -l or x > l, else 0 (NaN too)"},
};

/* ----------------------------------------------------------- hardshrink */

/* -l <= x <= l ? 0 : x (l = attrs.scalar, lambd, rounded to x's dtype),
 * PyTorch 1.13's kernel: a NaN x stays (itself), any l taken (none inside
 * for l < 0). One pass instead of four ops. */
DEFINE_UNARY_S(hardshrink, x >= -(float)s && x <= (float)s ? 0.0f : x, x >= -s && x <= s ? 0.0 : x)

static ad_status hardshrink_bwd(const ad_call *c) {
  return ad_call_set_grad(
      c, 0, ad_apply2(c->ctx, AD_OP_HARDSHRINK_BACKWARD, c->gout, c->in[0], c->attrs));
}

ad_tensor *ad_hardshrink(ad_ctx *ctx, ad_tensor *x, double lambd) {
  return with_scalar(ctx, AD_OP_HARDSHRINK, x, lambd);
}

const ad_op_def ad_def_hardshrink = {
    .name = "hardshrink",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = hardshrink_fwd,
    .backward = hardshrink_bwd,
    .sample = sample_shrink,
    .math = "y = -l <= x <= l ? 0 : x  (l = lambd)",
    .inputs = {"x"},
    .grads = {"hardshrink_backward(dy, x) = 0 where -l <= x <= l, else dy (NaN too)"},
};

/* ----------------------------------------------------------- logsigmoid */

/* 0 - softplus(-x) = min(x, 0) - log1p(e^-|x|) on softplus's kernels
 * (+0 at large x): the values of the composite it replaces, in one pass. */
#define LOGSIGMOID_V(x)     (0.0f - softplus_v(-(x)))
#define LOGSIGMOID_OUT32(x) SOFTPLUS_OUT32(-(x))
#define LOGSIGMOID_F(x)     (0.0f - softplus_f(-(x)))
UNARY_KERNEL_V(logsigmoid, LOGSIGMOID_V, LOGSIGMOID_OUT32, LOGSIGMOID_F, 0.0 - softplus_d(-x))

static ad_status logsigmoid_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0,
                          ad_apply2(c->ctx, AD_OP_LOGSIGMOID_BACKWARD, c->gout, c->in[0], NULL));
}

/* as relu's: a new gradient is logsigmoid_backward's kernel run straight
 * into grad (its bits), not a new tensor copied there */
static void logsigmoid_backward_fwd(const ad_call *c);
static bool logsigmoid_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  (void)k;
  return activation_grad_into(c, logsigmoid_backward_fwd, c->in[0], grad, overwrite);
}

ad_tensor *ad_logsigmoid(ad_ctx *ctx, ad_tensor *x) {
  return ad_apply1(ctx, AD_OP_LOGSIGMOID, x, NULL);
}

const ad_op_def ad_def_logsigmoid = {
    .name = "logsigmoid",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE | AD_OP_GRAD_INTO_TEMPS,
    .forward = logsigmoid_fwd,
    .backward = logsigmoid_bwd,
    .grad_into = logsigmoid_grad_into,
    .sample = sample_unary,
    .math = "y = log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))",
    .inputs = {"x"},
    .grads = {"logsigmoid_backward(dy, x) = dy * sigmoid(-x)"},
};

/* ------------------------------------------------------------------ elu */

/* PyTorch's elu kernel: x <= 0 ? (e^(x is) - 1) nc : x pc, nc = alpha
 * scale, pc = scale, is = input_scale, each rounded to x's dtype (nc the
 * product in it); e^t on exp's kernels (exp_v, libm's expf outside its
 * range), so the values are those of the composite exp, sub_scalar,
 * mul_scalar it replaces, in one pass. A NaN x takes the linear side. */
typedef struct elu_coef {
  double nc, pc, is, bs; /* bs: the gradient's input_scale */
} elu_coef;

static elu_coef elu_coefs(const ad_elu_attrs *a, ad_dtype dt) {
  if (dt == AD_F32)
    return (elu_coef){(float)a->alpha * (float)a->scale, (float)a->scale, (float)a->input_scale,
                      (float)a->grad_input_scale};
  return (elu_coef){a->alpha * a->scale, a->scale, a->input_scale, a->grad_input_scale};
}

CELL_CLONES static void elu_rows32(const float *X, float *Y, int64_t b, int64_t e, float nc,
                                   float pc, float is) {
  for (int64_t c0 = b; c0 < e; c0 += 256) {
    int64_t c1 = e - c0 < 256 ? e : c0 + 256;
    int out = 0;
    for (int64_t i = c0; i < c1; i++) {
      float x = X[i], t = x * is;
      float neg = (exp_v(t) - 1.0f) * nc, pos = x * pc;
      int left = x <= 0;
      Y[i] = left ? neg : pos;
      out |= left & EXP_V_OUT(t);
    }
    if (out)
      for (int64_t i = c0; i < c1; i++) {
        float x = X[i], t = x * is;
        if (x <= 0 && EXP_V_OUT(t)) Y[i] = (expf(t) - 1.0f) * nc;
      }
  }
}

CELL_CLONES static void elu_rows64(const double *X, double *Y, int64_t b, int64_t e, double nc,
                                   double pc, double is) {
  for (int64_t i = b; i < e; i++) {
    double x = X[i];
    double neg = (exp_d(x * is) - 1.0) * nc, pos = x * pc;
    Y[i] = x <= 0 ? neg : pos;
  }
}

static void elu_range(void *ud, int64_t b, int64_t e) {
  const unary_job *j = ud;
  elu_coef k = elu_coefs(&j->at->elu, j->y->dtype);
  if (j->y->dtype == AD_F32)
    elu_rows32(j->x->data, j->y->data, b, e, (float)k.nc, (float)k.pc, (float)k.is);
  else
    elu_rows64(j->x->data, j->y->data, b, e, k.nc, k.pc, k.is);
}

static void elu_fwd(const ad_call *c) {
  unary_job j = {c->in[0], c->out, c->attrs};
  if (c->out->size <= ELEM_GRAIN)
    elu_range(&j, 0, c->out->size);
  else
    ad_parallel_for(c->out->size, ELEM_GRAIN, elu_range, &j);
}

static ad_status elu_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_apply2(c->ctx, AD_OP_ELU_BACKWARD, c->gout, c->in[0], c->attrs));
}

ad_tensor *ad_elu(ad_ctx *ctx, ad_tensor *x, double alpha, double scale, double input_scale,
                  double grad_input_scale) {
  ad_attrs at = {.elu = {alpha, scale, input_scale, grad_input_scale}};
  return ad_apply1(ctx, AD_OP_ELU, x, &at);
}

/* |x| >= 0.2: away from the kink at 0; selu-like coefficients */
static int elu_sample(const ad_sample_call *s) {
  s->attrs->elu = (ad_elu_attrs){1.25, 1.0507009873554805, 0.75, 0.75};
  return sample_unary_range(s, 0.2, 2, true);
}

const ad_op_def ad_def_elu = {
    .name = "elu",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_ELU,
    .forward = elu_fwd,
    .backward = elu_bwd,
    .sample = elu_sample,
    .math = "y = x <= 0 ? (exp(x input_scale) - 1) alpha scale : x scale",
    .inputs = {"x"},
    .grads = {"elu_backward(dy, x) = x <= 0 ? dy grad_input_scale alpha scale "
              "exp(x grad_input_scale) : dy scale"},
};

/* ------------------------------------------------------------ threshold */

/* PyTorch's threshold kernel: x <= t ? v : x, t and v (attrs.threshold)
 * rounded to x's dtype; a NaN x fails the comparison and stays, itself.
 * One pass instead of le and where (a mask written, then read). */
#define THRESHOLD_ROWS(NAME, T)                                                                    \
  CELL_CLONES static void NAME(const T *X, T *Y, int64_t b, int64_t e, T t, T v) {                 \
    for (int64_t i = b; i < e; i++) {                                                              \
      T x = X[i];                                                                                  \
      Y[i] = x <= t ? v : x;                                                                       \
    }                                                                                              \
  }
THRESHOLD_ROWS(threshold_rows32, float)
THRESHOLD_ROWS(threshold_rows64, double)

static void threshold_range(void *ud, int64_t b, int64_t e) {
  const unary_job *j = ud;
  const ad_threshold_attrs *a = &j->at->threshold;
  if (j->y->dtype == AD_F32) {
    threshold_rows32(j->x->data, j->y->data, b, e, (float)a->threshold, (float)a->value);
  } else {
    threshold_rows64(j->x->data, j->y->data, b, e, a->threshold, a->value);
  }
}

static void threshold_fwd(const ad_call *c) {
  unary_job j = {c->in[0], c->out, c->attrs};
  if (c->out->size <= ELEM_GRAIN)
    threshold_range(&j, 0, c->out->size);
  else
    ad_parallel_for(c->out->size, ELEM_GRAIN, threshold_range, &j);
}

static ad_status threshold_bwd(const ad_call *c) {
  ad_attrs at = {.scalar = c->attrs->threshold.threshold};
  return ad_call_set_grad(c, 0,
                          ad_apply2(c->ctx, AD_OP_THRESHOLD_BACKWARD, c->gout, c->in[0], &at));
}

/* as relu's: a new gradient is threshold_backward's kernel run straight
 * into grad (its bits); adding to one is left to the backward */
static void threshold_backward_fwd(const ad_call *c);
static bool threshold_grad_into(const ad_call *c, int k, ad_tensor *grad, bool overwrite) {
  (void)k;
  if (!overwrite) return false;
  ad_attrs at = {.scalar = c->attrs->threshold.threshold};
  ad_tensor *in[2] = {c->gout, c->in[0]};
  ad_call b = {.ctx = c->ctx, .name = c->name, .n = 2, .in = in, .attrs = &at, .out = grad};
  threshold_backward_fwd(&b);
  return true;
}

ad_tensor *ad_threshold(ad_ctx *ctx, ad_tensor *x, double threshold, double value) {
  ad_attrs at = {.threshold = {threshold, value}};
  return ad_apply1(ctx, AD_OP_THRESHOLD, x, &at);
}

/* threshold 0.25, value -1.5; x of either sign, away from the kink */
static int threshold_sample(const ad_sample_call *s) {
  s->attrs->threshold = (ad_threshold_attrs){0.25, -1.5};
  int n = sample_unary_range(s, 0.2, 2, true);
  if (n > 0) clamp_sample_away(s->in[0], 0.25, 0.25);
  return n;
}

const ad_op_def ad_def_threshold = {
    .name = "threshold",
    .arity = 1,
    .flags = AD_OP_ELEMENTWISE | AD_OP_GRAD_INTO_TEMPS,
    .attrs = AD_ATTRS_THRESHOLD,
    .forward = threshold_fwd,
    .backward = threshold_bwd,
    .grad_into = threshold_grad_into,
    .sample = threshold_sample,
    .math = "y = x <= threshold ? value : x  (NaN for NaN)",
    .inputs = {"x"},
    .grads = {"threshold_backward(dy, x) = dy, 0 where x <= threshold  (dy at NaN)"},
};

/* -------------------------------------------------------- tanh_backward */

DEFINE_BINARY(tanh_backward, x0 *(1 - x1 * x1))

static ad_status tanh_backward_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *g = c->in[0], *t = c->in[1];
  ad_status st = AD_OK;
  if (c->needs[0])
    st = ad_call_set_grad(c, 0, ad_apply2(ctx, AD_OP_TANH_BACKWARD, c->gout, t, NULL));
  if (st == AD_OK && c->needs[1])
    st = ad_call_set_grad(c, 1, ad_mul(ctx, ad_mul(ctx, c->gout, g), ad_mul_scalar(ctx, t, -2.0)));
  return st;
}

const ad_op_def ad_def_tanh_backward = {
    .name = "tanh_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = tanh_backward_fwd,
    .backward = tanh_backward_bwd,
    .sample = sample_binary,
    .math = "y = g * (1 - t^2)  (g incoming gradient, t = tanh(x))",
    .inputs = {"g", "t"},
    .grads = {"dy * (1 - t^2)", "-2 dy g t"},
};

/* ----------------------------------------------------- sigmoid_backward */

DEFINE_BINARY(sigmoid_backward, x0 *x1 *(1 - x1))

static ad_status sigmoid_backward_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *g = c->in[0], *s = c->in[1];
  ad_status st = AD_OK;
  if (c->needs[0])
    st = ad_call_set_grad(c, 0, ad_apply2(ctx, AD_OP_SIGMOID_BACKWARD, c->gout, s, NULL));
  if (st == AD_OK && c->needs[1])
    st = ad_call_set_grad(
        c, 1,
        ad_mul(ctx, ad_mul(ctx, c->gout, g), ad_add_scalar(ctx, ad_mul_scalar(ctx, s, -2.0), 1.0)));
  return st;
}

const ad_op_def ad_def_sigmoid_backward = {
    .name = "sigmoid_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = sigmoid_backward_fwd,
    .backward = sigmoid_backward_bwd,
    .sample = sample_binary,
    .math = "y = g * s (1 - s)  (s = sigmoid(x))",
    .inputs = {"g", "s"},
    .grads = {"dy * s (1 - s)", "dy g (1 - 2 s)"},
};

/* -------------------------------------------------------- relu_backward */

/* !(x <= 0) rather than x > 0: a NaN x passes g, as PyTorch's
 * threshold_backward does (relu's NaN output already carries the NaN). */
DEFINE_BINARY(relu_backward, x1 <= 0 ? 0 : x0)

/* x gets no gradient: the mask is piecewise constant. */
static ad_status relu_backward_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(c, 0, ad_apply2(c->ctx, AD_OP_RELU_BACKWARD, c->gout, c->in[1], NULL));
}

/* x (the second input) kept away from the kink at 0 */
static int relu_backward_sample(const ad_sample_call *s) {
  return sample_binary_range(s, -2, 2, 0.2, 2, true);
}

const ad_op_def ad_def_relu_backward = {
    .name = "relu_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = relu_backward_fwd,
    .backward = relu_backward_bwd,
    .sample = relu_backward_sample,
    .math = "y = g, 0 where x <= 0",
    .inputs = {"g", "x"},
    .grads = {"dy, 0 where x <= 0", NULL},
};

/* -------------------------------------------------------- gelu_backward */

/* g GELU'(x), GELU'(x) = Phi(x) + x phi(x) with phi(x) = e^(-x^2/2) /
 * sqrt(2 pi) the standard normal density: one pass instead of the eleven
 * ops of its composition. Float64: Phi's tail as erfc (libm), accurate
 * where 1 + erf cancels. Float32: gelu_grad_v (vexp.h, within 4.5 ulp of
 * the larger term) for |x| <= 13, beyond it and for NaN the float64 form
 * rounded once. */
static inline double gelu_grad_d(double x) {
  return 0.5 * erfc(-x * SQRT1_2) + x * exp(-0.5 * x * x) * 0.3989422804014327;
}
#define GELU_GRAD_OUT32(x) (!((x) >= -13.0f && (x) <= 13.0f))
BINARY_ROW32_V(gelu_backward_row32_whole, x0 *gelu_grad_v(x1), GELU_GRAD_OUT32(x1),
               (float)((double)x0 *gelu_grad_d(x1)))
#if GELU_SPLIT
/* gelu_grad_v evaluates both halves of erf for every element, as gelu_v
 * does: with AVX-512 or AVX2, the same split as gelu's (GELU_SPLIT_ROWS:
 * the series' half for all, the tail's for the elements beyond it, packed
 * and put back), then the product by dy: the same operations per element,
 * so the same bits (parallel::gelu_split_same_bits_as_whole). X is the
 * input x (B), G the gradient dy (A), elements [0, len). */
#define GELU_GRAD_POST(i) Y[i] = G[i] * Y[i]
#define GELU_GRAD_FIX(i)  Y[i] = (float)((double)G[i] * gelu_grad_d(X[i]))
#define GELU_GRAD_REST(c) gelu_backward_row32_whole(G + (c), X + (c), Y + (c), e - (c))
__attribute__((target("avx512f,fma"))) static void
gelu_backward_split16(const float *G, const float *X, float *Y, int64_t len) {
  int64_t b = 0, e = len;
  GELU_SPLIT_ROWS(16, GELU_PACK16, GELU_UNPACK16, gelu_grad_near_v, gelu_grad_far_v, GELU_GRAD_POST,
                  GELU_GRAD_FIX, GELU_GRAD_REST)
}
__attribute__((target("avx2,fma"))) static void gelu_backward_split8(const float *G, const float *X,
                                                                     float *Y, int64_t len) {
  int64_t b = 0, e = len;
  GELU_SPLIT_ROWS(8, GELU_PACK8, GELU_UNPACK8, gelu_grad_near_v, gelu_grad_far_v, GELU_GRAD_POST,
                  GELU_GRAD_FIX, GELU_GRAD_REST)
}
#endif
static void gelu_backward_row32(const float *A, const float *B, float *Y, int64_t len) {
#if GELU_SPLIT
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) {
    gelu_backward_split16(A, B, Y, len);
    return;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    gelu_backward_split8(A, B, Y, len);
    return;
  }
#endif
  gelu_backward_row32_whole(A, B, Y, len);
}
BINARY_KERNEL_V_REST(gelu_backward, x0 *gelu_grad_d(x1))

/* dg = dy GELU'(x), this op again; dx = dy g GELU''(x), GELU''(x) =
 * phi(x) (2 - x^2), of ops. */
static ad_status gelu_backward_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *g = c->in[0], *x = c->in[1];
  ad_status st = AD_OK;
  if (c->needs[0])
    st = ad_call_set_grad(c, 0, ad_apply2(ctx, AD_OP_GELU_BACKWARD, c->gout, x, NULL));
  if (st == AD_OK && c->needs[1]) {
    ad_tensor *x2 = ad_square(ctx, x);
    ad_tensor *phi =
        ad_mul_scalar(ctx, ad_exp(ctx, ad_mul_scalar(ctx, x2, -0.5)), 0.3989422804014327);
    ad_tensor *d2 = ad_mul(ctx, phi, ad_add_scalar(ctx, ad_neg(ctx, x2), 2.0));
    st = ad_call_set_grad(c, 1, ad_mul(ctx, ad_mul(ctx, c->gout, g), d2));
  }
  return st;
}

const ad_op_def ad_def_gelu_backward = {
    .name = "gelu_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = gelu_backward_fwd,
    .backward = gelu_backward_bwd,
    .sample = sample_binary,
    .math = "y = g (Phi(x) + x phi(x))  (g incoming gradient; phi = e^(-x^2/2)/sqrt(2 pi))",
    .inputs = {"g", "x"},
    .grads = {"dy (Phi(x) + x phi(x))", "dy g phi(x) (2 - x^2)"},
};

/* --------------------------------------------------------- abs_backward */

/* g sign(x), sign(x) = [x > 0] - [x < 0] in x's dtype (0 at 0 and NaN): the
 * same arithmetic as the comparisons, difference and product it replaces,
 * one pass instead of four. x gets no gradient (sign is piecewise
 * constant). */
DEFINE_BINARY(abs_backward, x0 *((x1 > 0) - (x1 < 0)))

static ad_status abs_backward_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(c, 0, ad_apply2(c->ctx, AD_OP_ABS_BACKWARD, c->gout, c->in[1], NULL));
}

const ad_op_def ad_def_abs_backward = {
    .name = "abs_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = abs_backward_fwd,
    .backward = abs_backward_bwd,
    .sample = relu_backward_sample,
    .math = "y = g * sign(x)  (sign(0) = 0, sign(NaN) = 0)",
    .inputs = {"g", "x"},
    .grads = {"dy * sign(x)", NULL},
};

/* -------------------------------------------------- leaky_relu_backward */

/* x > 0 ? g : alpha g (alpha = attrs.scalar, rounded to the dtype as
 * leaky_relu rounds it), as PyTorch's: a slope alpha + (1 - alpha) [x > 0]
 * would be NaN for x > 0 when alpha is infinite or NaN. NaN x takes alpha
 * g. One pass instead of a comparison, a product and a where. x gets no
 * gradient. */
static void leaky_relu_backward_rows(const ad_call *c, int64_t oa, int64_t sa, int64_t ob,
                                     int64_t sb, int64_t oy, int64_t len) {
  const double s = c->attrs->scalar;
  if (c->out->dtype == AD_F32) {
    const float a = (float)s;
    BINARY_LOOP(float, x1 > 0 ? x0 : x0 * a);
  } else {
    BINARY_LOOP(double, x1 > 0 ? x0 : x0 * s);
  }
}

static void leaky_relu_backward_fwd(const ad_call *c) {
  ad_binary_run(c, leaky_relu_backward_rows, NULL);
}

static ad_status leaky_relu_backward_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(
      c, 0, ad_apply2(c->ctx, AD_OP_LEAKY_RELU_BACKWARD, c->gout, c->in[1], c->attrs));
}

static int leaky_relu_backward_sample(const ad_sample_call *s) {
  s->attrs->scalar = 0.2;
  return relu_backward_sample(s);
}

const ad_op_def ad_def_leaky_relu_backward = {
    .name = "leaky_relu_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = leaky_relu_backward_fwd,
    .backward = leaky_relu_backward_bwd,
    .sample = leaky_relu_backward_sample,
    .math = "y = x > 0 ? g : alpha g",
    .inputs = {"g", "x"},
    .grads = {"dy, alpha dy where x <= 0 or NaN", NULL},
};

/* ------------------------------------------------------- clamp_backward */

/* lo <= x <= hi ? g : 0 (the bounds rounded to the dtype, as clamp rounds
 * them; PyTorch's clamp_backward, a where): inclusive at both bounds, 0 at
 * NaN x or a NaN bound, and a zero chosen, not multiplied in, so a NaN or
 * infinite g outside stays out. With inner, hardtanh's lo < x < hi ? g : 0
 * (PyTorch's hardtanh_backward, whose vectorised loop also gives a NaN x
 * 0). x gets no gradient. */
static void clamp_backward_rows(const ad_call *c, int64_t oa, int64_t sa, int64_t ob, int64_t sb,
                                int64_t oy, int64_t len) {
  const ad_clamp_attrs *at = &c->attrs->clamp;
  if (c->out->dtype == AD_F32) {
    const float lo = (float)at->lo, hi = (float)at->hi;
    if (at->inner)
      BINARY_LOOP(float, x1 > lo && x1 < hi ? x0 : 0.0f);
    else
      BINARY_LOOP(float, x1 >= lo && x1 <= hi ? x0 : 0.0f);
  } else {
    const double lo = at->lo, hi = at->hi;
    if (at->inner)
      BINARY_LOOP(double, x1 > lo && x1 < hi ? x0 : 0.0);
    else
      BINARY_LOOP(double, x1 >= lo && x1 <= hi ? x0 : 0.0);
  }
}

static void clamp_backward_fwd(const ad_call *c) { ad_binary_run(c, clamp_backward_rows, NULL); }

static ad_status clamp_backward_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(c, 0,
                          ad_apply2(c->ctx, AD_OP_CLAMP_BACKWARD, c->gout, c->in[1], c->attrs));
}

static int clamp_backward_sample(const ad_sample_call *s) {
  static const int cases[] = {0, 1, 3}; /* (lo > hi has no gradient to check) */
  if (s->variant >= 3) return 0;
  s->attrs->clamp = clamp_cases[cases[s->variant]];
  int n = sample_binary_range(s, -2, 2, 0.2, 2, true);
  if (n > 0) clamp_sample_away(s->in[1], s->attrs->clamp.lo, s->attrs->clamp.hi);
  return n;
}

const ad_op_def ad_def_clamp_backward = {
    .name = "clamp_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_CLAMP,
    .forward = clamp_backward_fwd,
    .backward = clamp_backward_bwd,
    .sample = clamp_backward_sample,
    .math = "y = lo <= x <= hi ? g : 0  (hardtanh's: lo < x < hi ? g : 0)",
    .inputs = {"g", "x"},
    .grads = {"dy where lo <= x <= hi (hardtanh: lo < x < hi), else 0", NULL},
};

/* --------------------------------------------------- hardswish_backward */

/* PyTorch's hardswish_backward (its scalar kernel): 0 below -3 (chosen, so
 * a NaN or infinite g there stays out), g (x/3 + 1/2) on [-3, 3] (-g/2
 * at -3, 3g/2 at 3), g above 3 and at a NaN x, in x's dtype. */
DEFINE_BINARY(hardswish_backward, x1 < -3 ? 0 : x1 <= 3 ? x0 * (x1 / 3 + 0.5f) : x0)

/* dg = dy HARDSWISH'(x), this op again; dx = dy g / 3 on (-3, 3) only, as
 * PyTorch's double backward (hardtanh's gradient: clamp_backward, 0 at NaN) */
static ad_status hardswish_backward_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *g = c->in[0], *x = c->in[1];
  ad_status st = AD_OK;
  if (c->needs[0])
    st = ad_call_set_grad(c, 0, ad_apply2(ctx, AD_OP_HARDSWISH_BACKWARD, c->gout, x, NULL));
  if (st == AD_OK && c->needs[1]) {
    ad_attrs at = {.clamp = {-3, 3, true}};
    ad_tensor *d = ad_div_scalar(ctx, ad_mul(ctx, c->gout, g), 3);
    st = ad_call_set_grad(c, 1, ad_apply2(ctx, AD_OP_CLAMP_BACKWARD, d, x, &at));
  }
  return st;
}

/* x (the second input) of every piece, away from the kinks at -3 and 3 */
static int hardswish_backward_sample(const ad_sample_call *s) {
  int n = sample_binary_range(s, -2, 2, 0.2, 5, true);
  if (n > 0) clamp_sample_away(s->in[1], -3, 3);
  return n;
}

const ad_op_def ad_def_hardswish_backward = {
    .name = "hardswish_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = hardswish_backward_fwd,
    .backward = hardswish_backward_bwd,
    .sample = hardswish_backward_sample,
    .math = "y = x < -3 ? 0 : x <= 3 ? g (x/3 + 1/2) : g  (g for a NaN x)",
    .inputs = {"g", "x"},
    .grads = {"hardswish_backward(dy, x)", "dy g / 3 where -3 < x < 3, else 0"},
};

/* ------------------------------ softshrink_backward, hardshrink_backward */

/* PyTorch's softshrink_backward and hardshrink_backward, l = attrs.scalar
 * rounded to the dtype: g outside [-l, l], 0 on it (a zero chosen, so a
 * NaN or infinite g there stays out). At a NaN x softshrink's gives 0 (its
 * vectorized kernel), hardshrink's g (its scalar code): nn_softshrink's
 * documented slopes. x gets no gradient. */
#define SHRINK_BACKWARD_ROWS(NAME, PASS)                                                           \
  static void NAME##_rows(const ad_call *c, int64_t oa, int64_t sa, int64_t ob, int64_t sb,        \
                          int64_t oy, int64_t len) {                                               \
    const double s = c->attrs->scalar;                                                             \
    if (c->out->dtype == AD_F32) {                                                                 \
      const float l = (float)s;                                                                    \
      BINARY_LOOP(float, PASS(x1, l) ? x0 : 0.0f);                                                 \
    } else {                                                                                       \
      const double l = s;                                                                          \
      BINARY_LOOP(double, PASS(x1, l) ? x0 : 0.0);                                                 \
    }                                                                                              \
  }                                                                                                \
  static void NAME##_fwd(const ad_call *c) { ad_binary_run(c, NAME##_rows, NULL); }
#define SOFTSHRINK_PASS(x, l) ((x) < -(l) || (x) > (l))
#define HARDSHRINK_PASS(x, l) (!((x) >= -(l) && (x) <= (l)))
SHRINK_BACKWARD_ROWS(softshrink_backward, SOFTSHRINK_PASS)
SHRINK_BACKWARD_ROWS(hardshrink_backward, HARDSHRINK_PASS)

/* dg = this op again; x gets none (the mask is piecewise constant) */
static ad_status softshrink_backward_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(
      c, 0, ad_apply2(c->ctx, AD_OP_SOFTSHRINK_BACKWARD, c->gout, c->in[1], c->attrs));
}

static ad_status hardshrink_backward_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(
      c, 0, ad_apply2(c->ctx, AD_OP_HARDSHRINK_BACKWARD, c->gout, c->in[1], c->attrs));
}

/* lambd 0.5; x (the second input) away from +-0.5 */
static int shrink_backward_sample(const ad_sample_call *s) {
  s->attrs->scalar = 0.5;
  int n = sample_binary_range(s, -2, 2, 0.2, 2, true);
  if (n > 0) clamp_sample_away(s->in[1], -0.5, 0.5);
  return n;
}

const ad_op_def ad_def_softshrink_backward = {
    .name = "softshrink_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = softshrink_backward_fwd,
    .backward = softshrink_backward_bwd,
    .sample = shrink_backward_sample,
    .math = "y = x < -l or x > l ? g : 0  (l = lambd; 0 for a NaN x)",
    .inputs = {"g", "x"},
    .grads = {"dy where x < -l or x > l, else 0", NULL},
};

const ad_op_def ad_def_hardshrink_backward = {
    .name = "hardshrink_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = hardshrink_backward_fwd,
    .backward = hardshrink_backward_bwd,
    .sample = shrink_backward_sample,
    .math = "y = -l <= x <= l ? 0 : g  (l = lambd; g for a NaN x)",
    .inputs = {"g", "x"},
    .grads = {"dy, 0 where -l <= x <= l", NULL},
};

/* -------------------------------------------------- logsigmoid_backward */

/* g sigmoid(-x) on sigmoid's kernels: the bits of the product and sigmoid
 * of -x it replaces, one pass instead of four (two negations among them). */
BINARY_KERNEL_V(logsigmoid_backward, x0 *sigmoid_v(-x1), SIGMOID_OUT32(-x1), x0 *sigmoid_f(-x1),
                x0 *sigmoid_d(-x1))

/* dg = this op again; dx = -dy g sigmoid(-x) sigmoid(x), of ops. Both
 * sigmoids, not s (1 - s) of one: 1 - s cancels where s is near 1 (s =
 * sigmoid(-x) at x = -40 rounds to 1, and the second derivative came out
 * 0 for 4.2e-18), and PyTorch's (z - 1) z with z = sigmoid(x) cancels on
 * the other side. */
static ad_status logsigmoid_backward_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *g = c->in[0], *x = c->in[1];
  ad_status st = AD_OK;
  if (c->needs[0])
    st = ad_call_set_grad(c, 0, ad_apply2(ctx, AD_OP_LOGSIGMOID_BACKWARD, c->gout, x, NULL));
  if (st == AD_OK && c->needs[1]) {
    ad_tensor *s = ad_mul(ctx, ad_sigmoid(ctx, ad_neg(ctx, x)), ad_sigmoid(ctx, x));
    st = ad_call_set_grad(c, 1, ad_neg(ctx, ad_mul(ctx, ad_mul(ctx, c->gout, g), s)));
  }
  return st;
}

const ad_op_def ad_def_logsigmoid_backward = {
    .name = "logsigmoid_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = logsigmoid_backward_fwd,
    .backward = logsigmoid_backward_bwd,
    .sample = sample_binary,
    .math = "y = g sigmoid(-x)",
    .inputs = {"g", "x"},
    .grads = {"dy sigmoid(-x)", "-dy g sigmoid(-x) sigmoid(x)"},
};

/* --------------------------------------------------------- elu_backward */

/* PyTorch's elu_backward (is_result false), in its order of operations:
 * x <= 0 ? g bs nc e^(x bs) : g pc, bs the gradient's input_scale; a NaN
 * x takes the linear side (its scalar code). */
CELL_CLONES static void elu_backward_row32(const float *G, const float *X, float *Y, int64_t len,
                                           float nc, float pc, float bs) {
  for (int64_t c0 = 0; c0 < len; c0 += 256) {
    int64_t c1 = len - c0 < 256 ? len : c0 + 256;
    int out = 0;
    for (int64_t i = c0; i < c1; i++) {
      float g = G[i], x = X[i], t = x * bs;
      float neg = g * bs * nc * exp_v(t), pos = g * pc;
      int left = x <= 0;
      Y[i] = left ? neg : pos;
      out |= left & EXP_V_OUT(t);
    }
    if (out)
      for (int64_t i = c0; i < c1; i++) {
        float x = X[i], t = x * bs;
        if (x <= 0 && EXP_V_OUT(t)) Y[i] = G[i] * bs * nc * expf(t);
      }
  }
}

#define ELU_BACKWARD_OF(T, EXP, g, x) ((x) <= 0 ? (g)*bs * nc * EXP((x)*bs) : (g)*pc)

CELL_CLONES static void elu_backward_row64(const double *G, int64_t sa, const double *X, int64_t sb,
                                           double *Y, int64_t len, double nc, double pc,
                                           double bs) {
  if (sa == 1 && sb == 1)
    for (int64_t i = 0; i < len; i++) Y[i] = ELU_BACKWARD_OF(double, exp_d, G[i], X[i]);
  else
    for (int64_t i = 0; i < len; i++) Y[i] = ELU_BACKWARD_OF(double, exp_d, G[i * sa], X[i * sb]);
}

static void elu_backward_rows(const ad_call *c, int64_t oa, int64_t sa, int64_t ob, int64_t sb,
                              int64_t oy, int64_t len) {
  elu_coef k = elu_coefs(&c->attrs->elu, c->out->dtype);
  if (c->out->dtype == AD_F32) {
    float nc = (float)k.nc, pc = (float)k.pc, bs = (float)k.bs;
    if (sa == 1 && sb == 1) {
      elu_backward_row32((const float *)c->in[0]->data + oa, (const float *)c->in[1]->data + ob,
                         (float *)c->out->data + oy, len, nc, pc, bs);
      return;
    }
    /* a broadcast operand: its values gathered into rows of the unit
     * stride's, so that every layout takes exp_v (the same bits) */
    const float *G = (const float *)c->in[0]->data + oa, *X = (const float *)c->in[1]->data + ob;
    float *Y = (float *)c->out->data + oy, tg[256], tx[256];
    for (int64_t c0 = 0; c0 < len; c0 += 256) {
      int64_t n = len - c0 < 256 ? len - c0 : 256;
      for (int64_t i = 0; i < n; i++) tg[i] = G[(c0 + i) * sa], tx[i] = X[(c0 + i) * sb];
      elu_backward_row32(tg, tx, Y + c0, n, nc, pc, bs);
    }
  } else {
    double nc = k.nc, pc = k.pc, bs = k.bs;
    const double *G = (const double *)c->in[0]->data + oa, *X = (const double *)c->in[1]->data + ob;
    double *Y = (double *)c->out->data + oy;
    elu_backward_row64(G, sa, X, sb, Y, len, nc, pc, bs);
  }
}

static void elu_backward_fwd(const ad_call *c) { ad_binary_run(c, elu_backward_rows, NULL); }

/* PyTorch's elu double backward: dg = this op again; dx = this op of
 * dy g bs, masked to x < 0 (0 at 0 and at a NaN x), of ops */
static ad_status elu_backward_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *g = c->in[0], *x = c->in[1];
  ad_status st = AD_OK;
  if (c->needs[0])
    st = ad_call_set_grad(c, 0, ad_apply2(ctx, AD_OP_ELU_BACKWARD, c->gout, x, c->attrs));
  if (st == AD_OK && c->needs[1]) {
    ad_tensor *zero = ad_scalar(ctx, x->dtype, 0);
    ad_tensor *u = ad_mul_scalar(ctx, ad_mul(ctx, c->gout, g), c->attrs->elu.grad_input_scale);
    ad_tensor *d = ad_apply2(ctx, AD_OP_ELU_BACKWARD, u, x, c->attrs);
    st = ad_call_set_grad(c, 1, ad_where(ctx, ad_lt(ctx, x, zero), d, zero));
  }
  return st;
}

/* g of either sign, |x| >= 0.2: away from the kink at 0 */
static int elu_backward_sample(const ad_sample_call *s) {
  s->attrs->elu = (ad_elu_attrs){1.25, 1.0507009873554805, 0.75, 0.75};
  int k = sample_binary_range(s, -2, 2, 0.2, 2, true);
  return k;
}

const ad_op_def ad_def_elu_backward = {
    .name = "elu_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_ELU,
    .forward = elu_backward_fwd,
    .backward = elu_backward_bwd,
    .sample = elu_backward_sample,
    .math = "y = x <= 0 ? g grad_input_scale alpha scale exp(x grad_input_scale) : g scale",
    .inputs = {"g", "x"},
    .grads = {"elu_backward(dy, x)", "x < 0 ? elu_backward(dy g grad_input_scale, x) : 0"},
};

/* --------------------------------------------------- threshold_backward */

/* PyTorch's threshold_backward(g, x, t), t = attrs.scalar rounded to the
 * dtype: x <= t ? 0 : g (a zero chosen, so a NaN or infinite g there stays
 * out); a NaN x passes g. x gets no gradient. */
static void threshold_backward_rows(const ad_call *c, int64_t oa, int64_t sa, int64_t ob,
                                    int64_t sb, int64_t oy, int64_t len) {
  if (c->out->dtype == AD_F32) {
    const float t = (float)c->attrs->scalar;
    BINARY_LOOP(float, x1 <= t ? 0.0f : x0);
  } else {
    const double t = c->attrs->scalar;
    BINARY_LOOP(double, x1 <= t ? 0.0 : x0);
  }
}

static void threshold_backward_fwd(const ad_call *c) {
  ad_binary_run(c, threshold_backward_rows, NULL);
}

/* dg = this op again; x gets none (the mask is piecewise constant) */
static ad_status threshold_backward_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  return ad_call_set_grad(c, 0,
                          ad_apply2(c->ctx, AD_OP_THRESHOLD_BACKWARD, c->gout, c->in[1], c->attrs));
}

/* threshold 0.25; x (the second input) away from it */
static int threshold_backward_sample(const ad_sample_call *s) {
  s->attrs->scalar = 0.25;
  int n = sample_binary_range(s, -2, 2, 0.2, 2, true);
  if (n > 0) clamp_sample_away(s->in[1], 0.25, 0.25);
  return n;
}

const ad_op_def ad_def_threshold_backward = {
    .name = "threshold_backward",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = threshold_backward_fwd,
    .backward = threshold_backward_bwd,
    .sample = threshold_backward_sample,
    .math = "y = x <= t ? 0 : g  (t = threshold; g for a NaN x)",
    .inputs = {"g", "x"},
    .grads = {"dy, 0 where x <= t", NULL},
};

/* ----------------------------------------------------------------- cast */

/* A float input, and a float target dtype. */
static ad_status cast_shape(const ad_call *c) {
  const ad_tensor *x = c->in[0];
  if (ad_check_float_same(c->ctx, c->name, 1, c->in) != AD_OK) return ad_last_status(c->ctx);
  ad_dtype dt = c->attrs->dtype;
  if (dt != AD_F32 && dt != AD_F64)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: target dtype %lld is not a float dtype", c->name,
                        (long long)dt);
  c->out->dtype = dt;
  c->out->ndim = x->ndim;
  memcpy(c->out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  return AD_OK;
}

static void cast_fwd(const ad_call *c) { ad_tensor_copy_data(c->out, c->in[0]); }

static ad_status cast_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_cast(c->ctx, c->gout, c->in[0]->dtype));
}

ad_tensor *ad_cast(ad_ctx *ctx, ad_tensor *x, ad_dtype dtype) {
  if (x && x->dtype == dtype) { /* x itself, once it passes the checks of the op */
    if (!ctx || !ad_arg_ok(ctx, "cast", "input 0", x)) return NULL;
    if (!ad_is_float(dtype)) {
      ad_set_error(ctx, AD_ERR_DTYPE, "cast: input 0 is %s; a float dtype is needed",
                   ad_dtype_name(dtype));
      return NULL;
    }
    return x;
  }
  ad_attrs at = {.dtype = dtype};
  return ad_apply1(ctx, AD_OP_CAST, x, &at);
}

/* checked toward float64, where central differences are exact enough */
static int cast_sample(const ad_sample_call *s) {
  s->attrs->dtype = AD_F64;
  return sample_unary_range(s, -2, 2, false);
}

const ad_op_def ad_def_cast = {
    .name = "cast",
    .arity = 1,
    .attrs = AD_ATTRS_DTYPE,
    .shape = cast_shape,
    .forward = cast_fwd,
    .backward = cast_bwd,
    .sample = cast_sample,
    .math = "y = (dtype) x",
    .inputs = {"x"},
    .grads = {"(dtype of x) dy"},
};
