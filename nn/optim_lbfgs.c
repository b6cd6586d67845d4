/* optim_lbfgs.c: torch.optim.LBFGS (PyTorch 1.13's torch/optim/lbfgs.py),
 * with its strong-Wolfe line search, over the flat vector of the
 * parameters.
 *
 * The code follows lbfgs.py line by line, in its arithmetic order. Vectors
 * are in the parameters' dtype, as PyTorch's flat tensors; x.add_(y,
 * alpha=a) is fma(a, y, x) (PyTorch's AVX2 kernels, see kernels/update.c).
 * Scalars: PyTorch mixes Python floats (double) and 0-d tensors of the
 * parameters' dtype (dot products and what is computed from them), and
 * the difference shows in float32 and, through `number / tensor` (which
 * PyTorch computes as reciprocal(tensor) * number), in float64 too. The
 * line search's scalars therefore carry that distinction (sc below). */
#include "nn_internal.h"

#include <math.h>

struct nn_lbfgs {
  ad_ctx *ctx;
  nn_lbfgs_config cfg;
  int64_t max_eval; /* cfg.max_eval, 0 resolved (max_iter * 5 / 4 may not fit an int) */
  int np;           /* distinct parameters */
  ad_tensor **p;
  uint64_t *serial; /* p's at nn_lbfgs_new (ad_tensor_serial) */
  bool f32;
  int64_t n;  /* elements over all parameters */
  size_t es;  /* bytes per element */
  void *flat; /* the vectors below, one block of NVEC * n elements */
  void *g, *pg, *d, *x0, *gnew, *gprev, *bg[2];
  int cap;         /* history_size + 1 ring slots */
  void **pair;     /* per slot: y then s (2 n elements), allocated when first used */
  double *ro, *al; /* per slot */
  int head, count; /* the history: slots head, head + 1, ... (mod cap) */
  double h_diag;   /* H_diag */
  struct sc {
    double v;
    bool ten;
  } t; /* the last step length (state["t"]) */
  int64_t n_iter, func_evals;
};

#define NVEC 8

typedef struct sc sc;

nn_lbfgs_config nn_lbfgs_defaults(void) {
  nn_lbfgs_config c;
  memset(&c, 0, sizeof c);
  c.lr = 1;
  c.max_iter = 20;
  c.max_eval = 0; /* max_iter * 5 / 4 */
  c.tolerance_grad = 1e-7;
  c.tolerance_change = 1e-9;
  c.history_size = 100;
  c.line_search = NN_LINE_SEARCH_NONE;
  return c;
}

/* ------------------------------------------------------------ scalars
 * A Python float (ten false) or a 0-d tensor of the parameters' dtype
 * (ten true, its value rounded to the dtype). An operation with a tensor
 * operand gives a tensor: the number is rounded to the dtype first, then
 * one rounded operation, as PyTorch's CPU kernels with a wrapped number;
 * number / tensor is reciprocal(tensor) * number (Tensor.__rtruediv__).
 * In float64 only the last differs from plain double arithmetic. */

static double rnd(const nn_lbfgs *o, double v) { return o->f32 ? (double)(float)v : v; }
static sc num(double v) { return (sc){v, false}; }
static sc ten(const nn_lbfgs *o, double v) { return (sc){rnd(o, v), true}; }

static sc s_add(const nn_lbfgs *o, sc a, sc b) {
  return a.ten || b.ten ? ten(o, rnd(o, a.v) + rnd(o, b.v)) : num(a.v + b.v);
}
static sc s_sub(const nn_lbfgs *o, sc a, sc b) {
  return a.ten || b.ten ? ten(o, rnd(o, a.v) - rnd(o, b.v)) : num(a.v - b.v);
}
static sc s_mul(const nn_lbfgs *o, sc a, sc b) {
  return a.ten || b.ten ? ten(o, rnd(o, a.v) * rnd(o, b.v)) : num(a.v * b.v);
}
static sc s_div(const nn_lbfgs *o, sc a, sc b) {
  if (b.ten && !a.ten) return ten(o, rnd(o, 1.0 / b.v) * rnd(o, a.v));
  return a.ten ? ten(o, a.v / rnd(o, b.v)) : num(a.v / b.v);
}
static sc s_abs(sc a) { return (sc){fabs(a.v), a.ten}; }
/* a < b; with a tensor, compared in its dtype */
static bool s_lt(const nn_lbfgs *o, sc a, sc b) {
  return a.ten || b.ten ? rnd(o, a.v) < rnd(o, b.v) : a.v < b.v;
}
static bool s_le(const nn_lbfgs *o, sc a, sc b) {
  return a.ten || b.ten ? rnd(o, a.v) <= rnd(o, b.v) : a.v <= b.v;
}
/* Python's min(a, b) and max(a, b): b only when it compares below
 * (above) a, so a NaN b gives a */
static sc py_min(const nn_lbfgs *o, sc a, sc b) { return s_lt(o, b, a) ? b : a; }
static sc py_max(const nn_lbfgs *o, sc a, sc b) { return s_lt(o, a, b) ? b : a; }

/* ------------------------------------------------------------ vectors
 * Flat vectors of n elements in the parameters' dtype. */

#define VLOOP(o, ...)                                                                              \
  do {                                                                                             \
    if ((o)->f32) {                                                                                \
      typedef float T;                                                                             \
      __VA_ARGS__;                                                                                 \
    } else {                                                                                       \
      typedef double T;                                                                            \
      __VA_ARGS__;                                                                                 \
    }                                                                                              \
  } while (0)

/* a . b, summed in element order: float64 in float64; float32 as float
 * products summed in double, then rounded (OpenBLAS's sdot, which PyTorch
 * calls, does so below 32 elements; its ddot sums in order below 16) */
static double v_dot(const nn_lbfgs *o, const void *a, const void *b) {
  double s = 0;
  if (o->f32) {
    const float *x = a, *y = b;
    for (int64_t i = 0; i < o->n; i++) s = s + (double)(x[i] * y[i]);
    return (float)s;
  }
  const double *x = a, *y = b;
  for (int64_t i = 0; i < o->n; i++) s = s + x[i] * y[i];
  return s;
}

/* y += alpha x (x.add_(y, alpha=alpha): one fused multiply-add) */
static void v_axpy(const nn_lbfgs *o, void *yv, double alpha, const void *xv) {
  if (o->f32) {
    float *y = yv, a = (float)alpha;
    const float *x = xv;
    for (int64_t i = 0; i < o->n; i++) y[i] = fmaf(a, x[i], y[i]);
  } else {
    double *y = yv;
    const double *x = xv;
    for (int64_t i = 0; i < o->n; i++) y[i] = fma(alpha, x[i], y[i]);
  }
}

/* dst = src * a (a rounded to the dtype) */
static void v_scale(const nn_lbfgs *o, void *dst, const void *src, double a) {
  VLOOP(o, {
    T *y = dst, k = (T)a;
    const T *x = src;
    for (int64_t i = 0; i < o->n; i++) y[i] = x[i] * k;
  });
}

static void v_neg(const nn_lbfgs *o, void *dst, const void *src) {
  VLOOP(o, {
    T *y = dst;
    const T *x = src;
    for (int64_t i = 0; i < o->n; i++) y[i] = -x[i];
  });
}

static void v_sub(const nn_lbfgs *o, void *dst, const void *a, const void *b) {
  VLOOP(o, {
    T *y = dst;
    const T *x = a, *z = b;
    for (int64_t i = 0; i < o->n; i++) y[i] = x[i] - z[i];
  });
}

/* max |v[i] a| (a rounded to the dtype), NaN when any is (torch.max) */
static double v_absmax(const nn_lbfgs *o, const void *v, double a) {
  double r = 0;
  VLOOP(o, {
    const T *x = v, k = (T)a;
    T m = 0;
    for (int64_t i = 0; i < o->n; i++) {
      T e = (T)fabs((double)(x[i] * k));
      if (e != e || e > m) m = e;
      if (m != m) break;
    }
    r = m;
  });
  return r;
}

/* sum |v[i]|, as PyTorch 1.13's sum kernel adds a contiguous vector
 * (SumKernel.cpp, cascade_sum), every addition rounded to the dtype: units
 * of w elements (its 32-byte vectors: 4 float64, 8 float32, of the default
 * and AVX2 kernels; a vector shorter than one unit is summed as units of
 * 1) in 4 accumulators (row_sum), cascaded over 4 levels (multi_row_sum),
 * the accumulators added, then the elements past the last whole unit and
 * then the lanes. PyTorch's AVX-512 kernels (ATEN_CPU_CAPABILITY=avx512)
 * and its reductions split over threads (from 32768 elements) agree to
 * rounding. */
#define SUM_ILP    4
#define SUM_LEVELS 4
#define SUM_WMAX   8

static double abs_at(const nn_lbfgs *o, const void *v, int64_t i) {
  return o->f32 ? fabs((double)((const float *)v)[i]) : fabs(((const double *)v)[i]);
}

static double add_dt(const nn_lbfgs *o, double a, double b) { return rnd(o, a + b); }

/* multi_row_sum: rows of nv values (row i, value k at element i * nv + k
 * of v), size rows, into out[0..nv-1] */
static void sum_rows(const nn_lbfgs *o, const void *v, int nv, int64_t size, double *out) {
  double acc[SUM_LEVELS][SUM_ILP * SUM_WMAX] = {{0}};
  int64_t ceil_log2 = 1; /* c10's CeilLog2: 1 up to 2 */
  while (size > 2 && ((int64_t)1 << ceil_log2) < size) ceil_log2++;
  int64_t power = ceil_log2 / SUM_LEVELS > 4 ? ceil_log2 / SUM_LEVELS : 4;
  int64_t step = (int64_t)1 << power, mask = step - 1, i = 0;
  for (; i + step <= size;) {
    for (int64_t j = 0; j < step; ++j, ++i)
      for (int k = 0; k < nv; k++) acc[0][k] = add_dt(o, acc[0][k], abs_at(o, v, i * nv + k));
    for (int j = 1; j < SUM_LEVELS; j++) {
      for (int k = 0; k < nv; k++) {
        acc[j][k] = add_dt(o, acc[j][k], acc[j - 1][k]);
        acc[j - 1][k] = 0;
      }
      if ((i & (mask << (j * power))) != 0) break;
    }
  }
  for (; i < size; ++i)
    for (int k = 0; k < nv; k++) acc[0][k] = add_dt(o, acc[0][k], abs_at(o, v, i * nv + k));
  for (int j = 1; j < SUM_LEVELS; j++)
    for (int k = 0; k < nv; k++) acc[0][k] = add_dt(o, acc[0][k], acc[j][k]);
  memcpy(out, acc[0], (size_t)nv * sizeof *out);
}

static double v_abssum(const nn_lbfgs *o, const void *v) {
  int w = o->f32 ? 8 : 4;
  if (o->n < w) w = 1;
  int64_t units = o->n / w, rows = units / SUM_ILP;
  double part[SUM_ILP * SUM_WMAX];
  sum_rows(o, v, SUM_ILP * w, rows, part); /* row_sum: 4 accumulators of w lanes */
  for (int64_t i = rows * SUM_ILP; i < units; i++)
    for (int l = 0; l < w; l++) part[l] = add_dt(o, part[l], abs_at(o, v, i * w + l));
  for (int k = 1; k < SUM_ILP; k++)
    for (int l = 0; l < w; l++) part[l] = add_dt(o, part[l], part[k * w + l]);
  if (w == 1) return part[0];
  double s = 0; /* vectorized_inner_sum: the tail, then the lanes */
  for (int64_t i = units * w; i < o->n; i++) s = add_dt(o, s, abs_at(o, v, i));
  for (int l = 0; l < w; l++) s = add_dt(o, s, part[l]);
  return s;
}

static void v_copy(const nn_lbfgs *o, void *dst, const void *src) {
  if (dst != src) memcpy(dst, src, (size_t)o->n * o->es);
}

/* a <= b for a value of the dtype and a setting (rounded to the dtype, as
 * PyTorch compares a tensor with a number) */
static bool le_dt(const nn_lbfgs *o, double a, double b) { return a <= rnd(o, b); }

/* ---------------------------------------------------------- parameters */

/* the parameters' values into x (_clone_param), or back (_set_param) */
static void params_copy(nn_lbfgs *o, void *x, bool save) {
  char *at = x;
  for (int k = 0; k < o->np; k++) {
    size_t b = (size_t)o->p[k]->size * o->es;
    if (save)
      memcpy(at, o->p[k]->data, b);
    else
      memcpy(o->p[k]->data, at, b);
    at += b;
  }
}

/* p += t d for each parameter's slice of d (_add_grad) */
static void params_add(nn_lbfgs *o, double t, const void *d) {
  size_t off = 0;
  for (int k = 0; k < o->np; k++) {
    ad_tensor *p = o->p[k];
    if (o->f32) {
      float *x = p->data, a = (float)t;
      const float *u = (const float *)d + off;
      for (int64_t i = 0; i < p->size; i++) x[i] = fmaf(a, u[i], x[i]);
    } else {
      double *x = p->data;
      const double *u = (const double *)d + off;
      for (int64_t i = 0; i < p->size; i++) x[i] = fma(t, u[i], x[i]);
    }
    off += (size_t)p->size;
  }
}

/* One evaluation: the closure on an empty tape with gradients released
 * and enabled, then the flat gradient into g (0 where a parameter has
 * none: _gather_flat_grad). The tape is reset again after it, so that
 * the parameters are written (through their data) on a tape no op reads
 * them from. On the closure's error g is unchanged. */
static ad_status evaluate(nn_lbfgs *o, nn_lbfgs_closure fn, void *ud, double *loss, void *g) {
  ad_tape_reset(o->ctx);
  for (int k = 0; k < o->np; k++) ad_tensor_zero_grad(o->p[k]);
  bool old = ad_set_grad_enabled(o->ctx, true);
  double l = NAN;
  ad_status st = fn(ud, &l);
  ad_set_grad_enabled(o->ctx, old);
  if ((int)st < 0 || (int)st >= AD_STATUS_COUNT) /* a code of the user's own */
    st = ad_set_error(o->ctx, AD_ERR_ARG,
                      "lbfgs_step: the closure returned %d, which is not an ad_status (AD_OK or "
                      "an AD_ERR_ code)",
                      (int)st);
  if (st == AD_OK) {
    char *at = g;
    for (int k = 0; k < o->np; k++) {
      const ad_tensor *p = o->p[k];
      size_t b = (size_t)p->size * o->es;
      if (p->grad && p->grad->size == p->size)
        memcpy(at, p->grad->data, b);
      else
        memset(at, 0, b); /* +0.0 in both dtypes */
      at += b;
    }
    *loss = l;
  }
  ad_tape_reset(o->ctx);
  /* no op of the empty tape reads them: this only keeps the rule that
   * every write through data is announced */
  for (int k = 0; k < o->np && st == AD_OK; k++) st = ad_tensor_mark_modified(o->p[k]);
  return st;
}

/* _directional_evaluate: the objective at x0 + t d (the parameters are at
 * x0 before and after, also on error) */
static ad_status dir_evaluate(nn_lbfgs *o, nn_lbfgs_closure fn, void *ud, sc t, double *loss,
                              void *g) {
  params_add(o, t.v, o->d);
  ad_status st = evaluate(o, fn, ud, loss, g);
  params_copy(o, o->x0, false);
  return st;
}

/* ------------------------------------------------------- line search */

/* _cubic_interpolate: the minimum of the cubic through (x1, f1, g1) and
 * (x2, f2, g2), clamped to the bounds (lo, hi; NULL: [min, max] of x1, x2) */
static sc cubic(const nn_lbfgs *o, sc x1, double f1, sc g1, sc x2, double f2, sc g2,
                const sc *bounds) {
  sc lo, hi;
  if (bounds)
    lo = bounds[0], hi = bounds[1];
  else if (s_le(o, x1, x2))
    lo = x1, hi = x2;
  else
    lo = x2, hi = x1;
  /* d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2) */
  sc d1 = s_sub(o, s_add(o, g1, g2), s_div(o, num(3 * (f1 - f2)), s_sub(o, x1, x2)));
  sc d2sq = s_sub(o, s_mul(o, d1, d1), s_mul(o, g1, g2)); /* d1**2 - g1 * g2 */
  if (s_le(o, num(0), d2sq)) {
    sc d2 = ten(o, sqrt(d2sq.v)); /* a tensor: d1 is */
    sc min_pos;
    if (s_le(o, x1, x2)) /* x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)) */
      min_pos = s_sub(o, x2,
                      s_mul(o, s_sub(o, x2, x1),
                            s_div(o, s_sub(o, s_add(o, g2, d2), d1),
                                  s_add(o, s_sub(o, g2, g1), s_mul(o, num(2), d2)))));
    else
      min_pos = s_sub(o, x1,
                      s_mul(o, s_sub(o, x1, x2),
                            s_div(o, s_sub(o, s_add(o, g1, d2), d1),
                                  s_add(o, s_sub(o, g1, g2), s_mul(o, num(2), d2)))));
    return py_min(o, py_max(o, min_pos, lo), hi);
  }
  return s_div(o, s_add(o, lo, hi), num(2.0));
}

/* f_new > f + c1 t gtd (Armijo's condition fails) */
static bool armijo_fails(const nn_lbfgs *o, double f_new, double f, sc t, sc gtd) {
  return s_lt(o, s_add(o, num(f), s_mul(o, s_mul(o, num(1e-4), t), gtd)), num(f_new));
}

/* |gtd_new| <= -c2 gtd (the curvature condition) */
static bool curvature_ok(const nn_lbfgs *o, sc gtd_new, sc gtd) {
  return s_le(o, s_abs(gtd_new), s_mul(o, num(-0.9), gtd));
}

/* _strong_wolfe from x0 (the parameters' values) along d, starting at
 * step *t with loss f, gradient o->g and directional derivative gtd.
 * Leaves the step in *t, its loss in *f_out and gradient in o->g, and
 * the evaluations in *evals; on the closure's error, the parameters at
 * x0 and o->g unchanged. */
static ad_status strong_wolfe(nn_lbfgs *o, nn_lbfgs_closure fn, void *ud, sc *t_io, double f,
                              sc gtd, double *f_out, int *evals) {
  const int max_ls = 25;
  /* _strong_wolfe's own default: LBFGS.step does not pass its
   * tolerance_change to the line search */
  const double tol = 1e-9;
  sc d_norm = ten(o, v_absmax(o, o->d, 1.0));
  sc t = *t_io;
  double f_new;
  ad_status st = dir_evaluate(o, fn, ud, t, &f_new, o->gnew);
  if (st != AD_OK) return st;
  *evals = 1;
  sc gtd_new = ten(o, v_dot(o, o->gnew, o->d));
  sc t_prev = num(0), gtd_prev = gtd;
  double f_prev = f;
  const void *g_prev = o->g;
  bool done = false;
  int ls_iter = 0, nbr = 0;
  sc br[2], bgtd[2] = {num(0), num(0)};
  double bf[2];
  while (ls_iter < max_ls) {
    /* check conditions: a bracket [t_prev, t], or t itself */
    bool bracket = armijo_fails(o, f_new, f, t, gtd) || (ls_iter > 1 && f_new >= f_prev);
    if (!bracket && curvature_ok(o, gtd_new, gtd)) {
      br[0] = t, bf[0] = f_new;
      v_copy(o, o->bg[0], o->gnew);
      nbr = 1;
      done = true;
      break;
    }
    if (bracket || s_le(o, num(0), gtd_new)) {
      br[0] = t_prev, br[1] = t, bf[0] = f_prev, bf[1] = f_new;
      v_copy(o, o->bg[0], g_prev);
      v_copy(o, o->bg[1], o->gnew);
      bgtd[0] = gtd_prev, bgtd[1] = gtd_new;
      nbr = 2;
      break;
    }
    /* interpolate */
    sc bounds[2] = {s_add(o, t, s_mul(o, num(0.01), s_sub(o, t, t_prev))), s_mul(o, t, num(10))};
    sc tmp = t;
    t = cubic(o, t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds);
    t_prev = tmp;
    f_prev = f_new;
    v_copy(o, o->gprev, o->gnew);
    g_prev = o->gprev;
    gtd_prev = gtd_new;
    if ((st = dir_evaluate(o, fn, ud, t, &f_new, o->gnew)) != AD_OK) return st;
    ++*evals;
    gtd_new = ten(o, v_dot(o, o->gnew, o->d));
    ls_iter++;
  }
  if (ls_iter == max_ls) {
    br[0] = num(0), br[1] = t, bf[0] = f, bf[1] = f_new;
    v_copy(o, o->bg[0], o->g);
    v_copy(o, o->bg[1], o->gnew);
    nbr = 2;
  }
  /* zoom. One point (done): PyTorch's bracket_f[0] <= bracket_f[-1]
   * compares it with itself, and fails for a NaN loss (then indexes past
   * the bracket and raises); here it is the point. */
  bool insuf = false;
  int lo = nbr == 1 || bf[0] <= bf[1] ? 0 : 1, hi = 1 - lo;
  while (!done && ls_iter < max_ls) {
    if (s_lt(o, s_mul(o, s_abs(s_sub(o, br[1], br[0])), d_norm), num(tol))) break;
    t = cubic(o, br[0], bf[0], bgtd[0], br[1], bf[1], bgtd[1], NULL);
    sc bmax = py_max(o, br[0], br[1]), bmin = py_min(o, br[0], br[1]);
    sc eps = s_mul(o, num(0.1), s_sub(o, bmax, bmin));
    if (s_lt(o, py_min(o, s_sub(o, bmax, t), s_sub(o, t, bmin)), eps)) {
      /* interpolation close to boundary */
      if (insuf || s_le(o, bmax, t) || s_le(o, t, bmin)) {
        if (s_lt(o, s_abs(s_sub(o, t, bmax)), s_abs(s_sub(o, t, bmin))))
          t = s_sub(o, bmax, eps);
        else
          t = s_add(o, bmin, eps);
        insuf = false;
      } else {
        insuf = true;
      }
    } else {
      insuf = false;
    }
    if ((st = dir_evaluate(o, fn, ud, t, &f_new, o->gnew)) != AD_OK) return st;
    ++*evals;
    gtd_new = ten(o, v_dot(o, o->gnew, o->d));
    ls_iter++;
    if (armijo_fails(o, f_new, f, t, gtd) || f_new >= bf[lo]) {
      br[hi] = t, bf[hi] = f_new, bgtd[hi] = gtd_new;
      v_copy(o, o->bg[hi], o->gnew);
      lo = bf[0] <= bf[1] ? 0 : 1, hi = 1 - lo;
    } else {
      if (curvature_ok(o, gtd_new, gtd)) {
        done = true;
      } else if (s_le(o, num(0), s_mul(o, gtd_new, s_sub(o, br[hi], br[lo])))) {
        /* old high becomes new low */
        br[hi] = br[lo], bf[hi] = bf[lo], bgtd[hi] = bgtd[lo];
        v_copy(o, o->bg[hi], o->bg[lo]);
      }
      /* new point becomes new low */
      br[lo] = t, bf[lo] = f_new, bgtd[lo] = gtd_new;
      v_copy(o, o->bg[lo], o->gnew);
    }
  }
  *t_io = br[lo];
  *f_out = bf[lo];
  v_copy(o, o->g, o->bg[lo]);
  return AD_OK;
}

/* ---------------------------------------------------------------- API */

void nn_lbfgs_free(nn_lbfgs *o) {
  if (!o) return;
  ad_ctx *ctx = o->ctx;
  size_t pb = 2 * (size_t)o->n * o->es;
  for (int i = 0; o->pair && i < o->cap; i++) ad_free(ctx, o->pair[i], pb);
  ad_free(ctx, o->pair, (size_t)o->cap * sizeof *o->pair);
  ad_free(ctx, o->ro, (size_t)o->cap * sizeof *o->ro);
  ad_free(ctx, o->al, (size_t)o->cap * sizeof *o->al);
  ad_free(ctx, o->flat, NVEC * (size_t)o->n * o->es);
  ad_free(ctx, o->p, (size_t)o->np * sizeof *o->p);
  ad_free(ctx, o->serial, (size_t)o->np * sizeof *o->serial);
  ad_free(ctx, o, sizeof *o);
}

static ad_status check_config(ad_ctx *ctx, const nn_lbfgs_config *c) {
#define REQUIRE(cond, what, v)                                                                     \
  if (!(cond)) return ad_set_error(ctx, AD_ERR_ARG, "lbfgs: %s, got %g", what, (double)(v))
  REQUIRE(c->lr >= 0 && isfinite(c->lr), "lr must be finite and >= 0", c->lr);
  REQUIRE(c->max_iter >= 0, "max_iter must be >= 0", c->max_iter);
  REQUIRE(c->max_eval >= 0, "max_eval must be >= 0 (0: max_iter * 5 / 4)", c->max_eval);
  REQUIRE(c->tolerance_grad >= 0, "tolerance_grad must be >= 0", c->tolerance_grad);
  REQUIRE(c->tolerance_change >= 0, "tolerance_change must be >= 0", c->tolerance_change);
  REQUIRE(c->history_size >= 1 && c->history_size < INT32_MAX, "history_size must be >= 1",
          c->history_size);
#undef REQUIRE
  if (c->line_search != NN_LINE_SEARCH_NONE && c->line_search != NN_LINE_SEARCH_STRONG_WOLFE)
    return ad_set_error(ctx, AD_ERR_ARG,
                        "lbfgs: unknown line_search %d (NN_LINE_SEARCH_NONE or "
                        "NN_LINE_SEARCH_STRONG_WOLFE)",
                        (int)c->line_search);
  return AD_OK;
}

nn_lbfgs *nn_lbfgs_new(nn_params *params, const nn_lbfgs_config *cfg) {
  ad_ctx *ctx = nn_params_ctx(params);
  if (!ctx) return NULL;
  nn_lbfgs_config c = cfg ? *cfg : nn_lbfgs_defaults();
  if (check_config(ctx, &c) != AD_OK) return NULL;
  if (nn_params_is_buffers(params)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "lbfgs: the list holds buffers, which are not trained (give it "
                 "nn_model_params)");
    return NULL;
  }
  int count = nn_params_count(params), np = 0;
  int64_t n = 0;
  ad_tensor *first = NULL;
  for (int i = 0; i < count; i++) {
    ad_tensor *p = nn_params_tensor(params, i);
    if (nn_params_repeat(params, i, p) >= 0) continue;
    if (!first) first = p;
    if (p->dtype != first->dtype) {
      ad_set_error(ctx, AD_ERR_DTYPE,
                   "lbfgs: parameter '%s' is %s, '%s' is %s: the flat vector takes one dtype",
                   nn_params_name(params, i), ad_dtype_name(p->dtype), nn_params_name(params, 0),
                   ad_dtype_name(first->dtype));
      return NULL;
    }
    np++;
    n += p->size;
  }
  if (n == 0) {
    ad_set_error(ctx, AD_ERR_ARG, "lbfgs: the parameter list has no elements (add layers first)");
    return NULL;
  }
  nn_lbfgs *o = ad_malloc(ctx, sizeof *o);
  if (!o) return NULL;
  memset(o, 0, sizeof *o);
  o->ctx = ctx;
  o->cfg = c;
  o->max_eval = c.max_eval ? c.max_eval : (int64_t)c.max_iter * 5 / 4;
  o->f32 = first->dtype == AD_F32;
  o->es = ad_dtype_size(first->dtype);
  o->n = n;
  o->h_diag = 1;
  o->t = num(c.lr);
  o->cap = c.history_size + 1;
  if ((size_t)n > SIZE_MAX / NVEC / o->es) {
    ad_set_error(ctx, AD_ERR_OOM, "lbfgs: out of memory (%lld elements)", (long long)n);
    ad_free(ctx, o, sizeof *o);
    return NULL;
  }
  o->np = np;
  o->p = ad_malloc(ctx, (size_t)np * sizeof *o->p);
  o->serial = o->p ? ad_malloc(ctx, (size_t)np * sizeof *o->serial) : NULL;
  o->flat = o->serial ? ad_malloc(ctx, NVEC * (size_t)n * o->es) : NULL;
  o->pair = o->flat ? ad_malloc(ctx, (size_t)o->cap * sizeof *o->pair) : NULL;
  o->ro = o->pair ? ad_malloc(ctx, (size_t)o->cap * sizeof *o->ro) : NULL;
  o->al = o->ro ? ad_malloc(ctx, (size_t)o->cap * sizeof *o->al) : NULL;
  if (!o->al) {
    if (o->pair) memset(o->pair, 0, (size_t)o->cap * sizeof *o->pair);
    nn_lbfgs_free(o);
    return NULL;
  }
  memset(o->pair, 0, (size_t)o->cap * sizeof *o->pair);
  memset(o->flat, 0, NVEC * (size_t)n * o->es);
  void **vec[NVEC] = {&o->g, &o->pg, &o->d, &o->x0, &o->gnew, &o->gprev, &o->bg[0], &o->bg[1]};
  for (int k = 0; k < NVEC; k++) *vec[k] = (char *)o->flat + (size_t)k * (size_t)n * o->es;
  for (int i = 0, k = 0; i < count; i++) {
    ad_tensor *p = nn_params_tensor(params, i);
    if (nn_params_repeat(params, i, p) >= 0) continue;
    o->p[k] = p;
    o->serial[k++] = ad_tensor_serial(p);
  }
  return o;
}

static void *ring_y(const nn_lbfgs *o, int slot) { return o->pair[slot]; }
static void *ring_s(const nn_lbfgs *o, int slot) {
  return (char *)o->pair[slot] + (size_t)o->n * o->es;
}

ad_status nn_lbfgs_step(nn_lbfgs *o, nn_lbfgs_closure fn, void *ud, double *loss_out) {
  if (!o) return AD_ERR_NULL;
  if (!fn) return nn_null_arg(o->ctx, "lbfgs_step", "closure");
  for (int k = 0; k < o->np; k++)
    if (ad_tensor_serial(o->p[k]) != o->serial[k])
      return ad_set_error(o->ctx, AD_ERR_STATE,
                          "lbfgs_step: parameter %d was freed (its model or parameter list must "
                          "outlive the optimizer)",
                          k);
  const nn_lbfgs_config *c = &o->cfg;
  double orig_loss, loss;
  ad_status st = evaluate(o, fn, ud, &orig_loss, o->g);
  if (st != AD_OK) return st;
  if (loss_out) *loss_out = orig_loss;
  loss = orig_loss;
  int64_t current_evals = 1;
  o->func_evals++;
  bool opt_cond = le_dt(o, v_absmax(o, o->g, 1.0), c->tolerance_grad);
  if (opt_cond) return AD_OK;
  int n_iter = 0;
  while (n_iter < c->max_iter) {
    /* the history pair this iteration may keep, before anything changes */
    int slot = (o->head + o->count) % o->cap;
    if (o->n_iter >= 1 && !o->pair[slot] &&
        !(o->pair[slot] = ad_malloc(o->ctx, 2 * (size_t)o->n * o->es)))
      return AD_ERR_OOM;
    n_iter++;
    o->n_iter++;
    /* ---- the descent direction */
    if (o->n_iter == 1) {
      v_neg(o, o->d, o->g);
      o->head = o->count = 0;
      o->h_diag = 1;
    } else {
      void *y = ring_y(o, slot), *s = ring_s(o, slot);
      v_sub(o, y, o->g, o->pg);    /* y = flat_grad - prev_flat_grad */
      v_scale(o, s, o->d, o->t.v); /* s = d t */
      double ys = v_dot(o, y, s);
      if (ys > rnd(o, 1e-10)) {
        if (o->count == c->history_size) { /* drop the oldest pair */
          o->head = (o->head + 1) % o->cap;
          o->count--;
        }
        o->ro[slot] = rnd(o, 1.0 / ys);
        o->count++;
        o->h_diag = rnd(o, ys / v_dot(o, y, y));
      }
      /* the two-loop recursion, q and then r in d */
      v_neg(o, o->d, o->g);
      for (int i = o->count - 1; i >= 0; i--) {
        int k = (o->head + i) % o->cap;
        o->al[k] = rnd(o, v_dot(o, ring_s(o, k), o->d) * o->ro[k]);
        v_axpy(o, o->d, -o->al[k], ring_y(o, k));
      }
      v_scale(o, o->d, o->d, o->h_diag);
      for (int i = 0; i < o->count; i++) {
        int k = (o->head + i) % o->cap;
        double be = rnd(o, v_dot(o, ring_y(o, k), o->d) * o->ro[k]);
        v_axpy(o, o->d, rnd(o, o->al[k] - be), ring_s(o, k));
      }
    }
    v_copy(o, o->pg, o->g);
    double prev_loss = loss;
    /* ---- the step length */
    if (o->n_iter == 1)
      o->t = s_mul(o, py_min(o, num(1.0), ten(o, 1.0 / v_abssum(o, o->g))), num(c->lr));
    else
      o->t = num(c->lr);
    sc gtd = ten(o, v_dot(o, o->g, o->d));
    if (s_lt(o, num(-c->tolerance_change), gtd)) break;
    int ls_evals = 0;
    params_copy(o, o->x0, true);
    if (c->line_search == NN_LINE_SEARCH_STRONG_WOLFE) {
      if ((st = strong_wolfe(o, fn, ud, &o->t, loss, gtd, &loss, &ls_evals)) != AD_OK) return st;
      params_add(o, o->t.v, o->d);
      opt_cond = le_dt(o, v_absmax(o, o->g, 1.0), c->tolerance_grad);
    } else {
      params_add(o, o->t.v, o->d);
      if (n_iter != c->max_iter) {
        if ((st = evaluate(o, fn, ud, &loss, o->g)) != AD_OK) {
          params_copy(o, o->x0, false);
          return st;
        }
        opt_cond = le_dt(o, v_absmax(o, o->g, 1.0), c->tolerance_grad);
        ls_evals = 1;
      }
    }
    current_evals += ls_evals;
    o->func_evals += ls_evals;
    /* ---- the stopping tests */
    if (n_iter == c->max_iter) break;
    if (current_evals >= o->max_eval) break;
    if (opt_cond) break;
    if (le_dt(o, v_absmax(o, o->d, o->t.v), c->tolerance_change)) break; /* lack of progress */
    if (fabs(loss - prev_loss) < c->tolerance_change) break;
  }
  return AD_OK;
}

int64_t nn_lbfgs_iters(const nn_lbfgs *o) { return o ? o->n_iter : 0; }
int64_t nn_lbfgs_evals(const nn_lbfgs *o) { return o ? o->func_evals : 0; }
