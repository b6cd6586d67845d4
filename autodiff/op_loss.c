/* op_loss.c: fused softmax cross-entropy with integer class labels,
 * binary cross-entropy of probabilities, and the smooth L1 and Huber
 * losses per element. */
#include "ops.h"
#include "softmax_exp.h"

#include <float.h>
#include <math.h>

/* ------------------------------------------------ softmax_cross_entropy
 *
 *   y = (1/M) sum_p [lse(z_p) - z_p[t_p]]     over the positions p kept
 *   dz_p = dy (softmax(z_p) - onehot(t_p)) / M    (0 at an ignored p)
 *
 * z is [N, C] or, as PyTorch's F.cross_entropy for K-dim inputs,
 * [N, C, d1, ...] with labels [N, d1, ...]: the classes are dim 1, and a
 * position p is a sample n with a point of d1, ... A position whose label is
 * ignore_index (attrs.cross_entropy, when ignore) is left out; M counts the
 * others (M = 1 with sum: the sum in place of the mean). */

/* Elements of z after dim 1 (1 for [N, C]). */
static int64_t trailing(const ad_tensor *z) {
  int64_t t = 1;
  for (int k = 2; k < z->ndim; k++) t *= z->shape[k];
  return t;
}

/* True when label l takes part: it is not the ignored one. */
static inline bool counted(const ad_cross_entropy_attrs *at, int32_t l) {
  return !at->ignore || l != at->ignore_index;
}

/* Checks every label against the C classes (the shape rule). The backward
 * reads the labels the tape saved when it recorded the op (integer inputs
 * are copied then), so they are the ones checked here. */
static ad_status check_labels(const ad_call *c) {
  const ad_tensor *t = c->in[1];
  const ad_cross_entropy_attrs *at = &c->attrs->cross_entropy;
  const int32_t *lab = t->data;
  int64_t C = c->in[0]->shape[1];
  for (int64_t i = 0; i < t->size; i++) {
    if ((lab[i] >= 0 && lab[i] < C) || !counted(at, lab[i])) continue;
    if (t->ndim == 1 && !at->ignore)
      return ad_set_error(c->ctx, AD_ERR_ARG, "%s: label %d of sample %lld is outside 0..%lld",
                          c->name, lab[i], (long long)i, (long long)C - 1);
    char pos[192], sh[64], ign[48] = "";
    if (at->ignore) snprintf(ign, sizeof ign, " and is not ignore_index %d", at->ignore_index);
    return ad_set_error(c->ctx, AD_ERR_ARG,
                        "%s: label %d at position %lld (%s of labels %s) is outside 0..%lld%s",
                        c->name, lab[i], (long long)i, ad_coords_str(t, i, pos, sizeof pos),
                        ad_shape_str(t, sh, sizeof sh), (long long)C - 1, ign);
  }
  return AD_OK;
}

/* N = 0 (or no position kept) is fine: the mean over nothing is NaN, as in
 * PyTorch; C = 0 is not (no label can be valid). */
static ad_status softmax_ce_shape(const ad_call *c) {
  const ad_tensor *z = c->in[0], *t = c->in[1];
  char a[64], b[64];
  if (ad_check_float_same(c->ctx, c->name, 1, c->in) != AD_OK) return ad_last_status(c->ctx);
  if (t->dtype != AD_I32)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: labels must be i32, got %s", c->name,
                        ad_dtype_name(t->dtype));
  bool ok = z->ndim >= 2 && t->ndim == z->ndim - 1 && z->shape[1] > 0;
  for (int k = 0; ok && k < t->ndim; k++) ok = t->shape[k] == z->shape[k ? k + 1 : 0];
  if (!ok)
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: logits %s and labels %s: need [N,C] and [N] (or [N,C,d1,...] and "
                        "[N,d1,...]), C >= 1",
                        c->name, ad_shape_str(z, a, sizeof a), ad_shape_str(t, b, sizeof b));
  ad_status st = check_labels(c);
  if (st != AD_OK) return st;
  c->out->dtype = z->dtype;
  c->out->ndim = 0;
  return AD_OK;
}

/* The mean over kept positions of lse(z_p) - z_p[t_p], lse computed with
 * the max shifted out so large logits do not overflow (a NaN logit makes
 * it NaN); NaN when no position is kept (mean), 0 (sum). The classes of a
 * position are T apart. Each loss is (max - z[t]) + log(sum e), as
 * PyTorch's -log_softmax: (max + log(sum e)) - z[t] would round the log to
 * max's precision first, losing a near-0 loss and all of it for logits
 * beyond ~1e16. Here float64 [N, C] (T = 1); float32 [N, C] takes
 * ce_fwd_f32 and T != 1 (T = 0 too: no position) the position blocks
 * (ce_sp_fwd) below, with the same formula. */
#define CE_FWD(T_)                                                                                 \
  do {                                                                                             \
    const T_ *Z = z->data;                                                                         \
    double total = 0;                                                                              \
    int64_t kept = 0;                                                                              \
    for (int64_t r = 0; r < N; r++)                                                                \
      for (int64_t j = 0; j < T; j++) {                                                            \
        int32_t l = lab[r * T + j];                                                                \
        if (!counted(at, l)) continue;                                                             \
        const T_ *zr = Z + r * C * T + j;                                                          \
        double m = AD_LANE_MAX(zr, T, C), s = exp_sum_d(zr, T, C, m, NULL, 0);                     \
        total += (m - (double)zr[l * T]) + log(s);                                                 \
        kept++;                                                                                    \
      }                                                                                            \
    *(T_ *)out->data = (T_)(at->sum ? total : kept ? total / (double)kept : NAN);                  \
  } while (0)

/* float32 logits whose C classes are contiguous ([P, C]: T = 1, the
 * classifier's and the sequence loss's layout), each position's row as
 * the softmax op takes a last-axis row (exp_row_f32, softmax_exp.h): the
 * forward is (max - z[label]) + log(sum e), the log_softmax op's formula
 * negated and kept in double; the plain backward gives the softmax op's
 * probabilities, then the recorded form's sub and mul, so both forms give
 * the same bits. A NaN logit makes the position's loss and gradients NaN.
 * Rows shorter than EXP_ROWS_SHORT go many at a time (exp_rows_f32). */
enum { CE_ROWS = 64 }; /* positions of a block of the float32 loops */

/* The float32 loops' work in blocks of rows, the blocks shared among the
 * threads (ad_parallel_for): every block's arithmetic is the same wherever
 * it runs, and the forward's sum stays one pass in position order, so the
 * bits do not depend on the number of threads. (Of two NaN losses of
 * different signs, which one the sum keeps is the compiler's choice of
 * operand order, here as in any C sum.) */
typedef struct ce_job {
  const float *z;
  const int32_t *lab;
  int64_t P, C, step; /* positions, classes, positions of a block */
  const ad_cross_entropy_attrs *at;
  double *loss; /* forward: the positions' losses, from position first */
  int64_t first;
  float gs; /* backward: the gradient's scale, and dz */
  float *dz;
} ce_job;

/* Blocks a loop of P positions hands out at least at a time: about 16K
 * logits, so that a small loss stays on the calling thread. */
static int64_t ce_grain(int64_t step, int64_t C) {
  int64_t per = step * (C > 0 ? C : 1);
  return per >= 16384 ? 1 : 16384 / per;
}

/* Forward, blocks [b, e) of the positions from j->first: each counted
 * position's (max - z[label]) + log(sum e) into j->loss. */
CELL_CLONES static void ce_fwd_blocks_f32(void *ud, int64_t b, int64_t e) {
  const ce_job *j = ud;
  double s[CE_ROWS];
  float m[CE_ROWS], ex[256];
  int64_t C = j->C, end = j->first + e * j->step;
  end = end < j->P ? end : j->P;
  for (int64_t r0 = j->first + b * j->step; r0 < end; r0 += j->step) {
    int64_t nr = end - r0 < j->step ? end - r0 : j->step;
    if (C < EXP_ROWS_SHORT)
      exp_rows_f32(j->z + r0 * C, ex, nr, C, m, s);
    else
      s[0] = exp_row_f32(j->z + r0 * C, NULL, C, &m[0]);
    for (int64_t r = 0; r < nr; r++) {
      int32_t l = j->lab[r0 + r];
      if (counted(j->at, l))
        j->loss[r0 + r - j->first] = ((double)m[r] - (double)j->z[(r0 + r) * C + l]) + log(s[r]);
    }
  }
}

static double ce_fwd_f32(const float *z, const int32_t *lab, int64_t P, int64_t C,
                         const ad_cross_entropy_attrs *at, int64_t *kept) {
  enum { CHUNK = 1024 }; /* positions whose losses wait in loss[] for the sum */
  double total = 0, loss[CHUNK];
  int64_t n = 0, step = C < EXP_ROWS_SHORT ? 256 / C : 1; /* rows a block: ex holds them */
  step = step > CE_ROWS ? CE_ROWS : step;
  int64_t chunk = CHUNK / step * step; /* whole blocks, so they start where a serial loop's do */
  ce_job j = {.z = z, .lab = lab, .P = P, .C = C, .step = step, .at = at, .loss = loss};
  for (j.first = 0; j.first < P; j.first += chunk) {
    int64_t rows = P - j.first < chunk ? P - j.first : chunk;
    ad_parallel_for((rows + step - 1) / step, ce_grain(step, C), ce_fwd_blocks_f32, &j);
    for (int64_t r = 0; r < rows; r++)
      if (counted(at, lab[j.first + r])) total += loss[r], n++;
  }
  *kept = n;
  return total;
}

/* Backward, blocks [b, e) of CE_ROWS positions: dz = (e * (1 / sum e) -
 * onehot) gs, 0 gs at an ignored position. */
CELL_CLONES static void ce_bwd_blocks_f32(void *ud, int64_t b, int64_t e) {
  const ce_job *j = ud;
  double s[CE_ROWS];
  float m[CE_ROWS], gs = j->gs;
  int64_t C = j->C, end = e * CE_ROWS < j->P ? e * CE_ROWS : j->P;
  for (int64_t r0 = b * CE_ROWS; r0 < end; r0 += CE_ROWS) {
    int64_t nr = end - r0 < CE_ROWS ? end - r0 : CE_ROWS;
    exp_rows_f32(j->z + r0 * C, j->dz + r0 * C, nr, C, m, s);
    for (int64_t r = 0; r < nr; r++) {
      int32_t l = j->lab[r0 + r];
      float *dr = j->dz + (r0 + r) * C;
      if (!counted(j->at, l)) {
        for (int64_t k = 0; k < C; k++) dr[k] = 0.0f;
        continue;
      }
      double inv = 1 / s[r];
      float pl = (float)((double)dr[l] * inv);
      for (int64_t k = 0; k < C; k++) dr[k] = (float)((double)dr[k] * inv) * gs;
      dr[l] = (pl - 1.0f) * gs;
    }
  }
}

static void ce_bwd_f32(const float *z, const int32_t *lab, int64_t P, int64_t C,
                       const ad_cross_entropy_attrs *at, float gs, float *dz) {
  ce_job j = {.z = z, .lab = lab, .P = P, .C = C, .step = CE_ROWS, .at = at, .gs = gs, .dz = dz};
  if (P > 0)
    ad_parallel_for((P + CE_ROWS - 1) / CE_ROWS, ce_grain(CE_ROWS, C), ce_bwd_blocks_f32, &j);
}

/* Positions that are not contiguous rows (T != 1: logits [N, C, d1, ...],
 * the classes of a position T apart, as in segmentation): CE_LB
 * consecutive positions of a sample at a time, as the softmax op takes
 * its lanes (op_reduce.c): classes outside, the block's positions inside,
 * each class's run of the block read contiguously, so that the loops
 * vectorize across positions. Each position still meets its classes in
 * order through the one-position loops' operations (float64: exp_d summed
 * in order, exp_sum_d's bits; float32: the softmax op's lanes, exp_diff
 * and EXP_FIX, exp_lanes_f32's bits), and a position belongs to one
 * thread, so the thread count changes no bit. A unit is one block: unit
 * u is block u % bpr of sample u / bpr. */
enum { CE_LB = 64 };

typedef struct ce_sp_job {
  const void *z;
  const int32_t *lab;
  bool f64;
  int64_t C, T, bpr; /* classes, positions of a sample, blocks of a sample */
  const ad_cross_entropy_attrs *at;
  double *loss; /* forward: the losses of units u0 on, CE_LB a unit */
  int64_t u0;
  void *dz;  /* backward: the gradient, of z's shape */
  double gs; /* backward: dy times the mean's scale */
} ce_sp_job;

/* The block of unit u: its width nb, and from its first position the
 * sample's logits X (and gradient D) and labels L. */
#define CE_SP_UNIT(T_, J, u)                                                                       \
  int64_t C = (J)->C, T = (J)->T, r_ = (u) / (J)->bpr, j0 = (u) % (J)->bpr * CE_LB;                \
  int64_t nb = T - j0 < CE_LB ? T - j0 : CE_LB;                                                    \
  const T_ *X = (const T_ *)(J)->z + r_ * C * T + j0;                                              \
  T_ *D = (J)->dz ? (T_ *)(J)->dz + r_ * C * T + j0 : NULL;                                        \
  const int32_t *L = (J)->lab + r_ * T + j0;                                                       \
  (void)D

/* float32: m[j], the block's maxima, and s[j], the sums of e^(x - m) in
 * class order (exp_lanes_f32's), with each e (before EXP_FIX) into E[k T
 * + j] when E is not NULL. */
CELL_ROW void ce_sp_sums_f32(const float *X, float *E, int64_t C, int64_t T, int64_t nb, float *m,
                             double *s) {
  float e[CE_LB], lo[CE_LB];
  for (int64_t j = 0; j < nb; j++) m[j] = -INFINITY, s[j] = 0;
  for (int64_t k = 0; k < C; k++)
    for (int64_t j = 0; j < nb; j++) m[j] = AD_MAX_NAN(X[k * T + j], m[j]);
  for (int64_t k = 0; k < C; k++) {
    exp_diff(X + k * T, m, 1, nb, e, lo);
    for (int64_t j = 0; j < nb; j++) s[j] += EXP_FIX(e[j], lo[j]);
    if (E)
      for (int64_t j = 0; j < nb; j++) E[k * T + j] = e[j];
  }
}

/* float64: the same with exp_d (exp_sum_d's), e itself into E. */
CELL_ROW void ce_sp_sums_f64(const double *X, double *E, int64_t C, int64_t T, int64_t nb,
                             double *m, double *s) {
  for (int64_t j = 0; j < nb; j++) m[j] = -INFINITY, s[j] = 0;
  for (int64_t k = 0; k < C; k++)
    for (int64_t j = 0; j < nb; j++) m[j] = AD_MAX_NAN(X[k * T + j], m[j]);
  for (int64_t k = 0; k < C; k++)
    for (int64_t j = 0; j < nb; j++) {
      double e = exp_d(X[k * T + j] - m[j]);
      if (E) E[k * T + j] = e;
      s[j] += e;
    }
}

/* Forward, units [b, e) from J->u0: each counted position's (m - z[l]) +
 * log(s) into J->loss (the one-position loops' formula). */
CELL_CLONES static void ce_sp_fwd_units(void *ud, int64_t b, int64_t e) {
  const ce_sp_job *J = ud;
  for (int64_t u = b; u < e; u++) {
    double *out = J->loss + u * CE_LB, s[CE_LB];
    if (J->f64) {
      CE_SP_UNIT(double, J, J->u0 + u);
      double m[CE_LB];
      ce_sp_sums_f64(X, NULL, C, T, nb, m, s);
      for (int64_t j = 0; j < nb; j++)
        if (counted(J->at, L[j])) out[j] = (m[j] - X[L[j] * T + j]) + log(s[j]);
    } else {
      CE_SP_UNIT(float, J, J->u0 + u);
      float m[CE_LB];
      ce_sp_sums_f32(X, NULL, C, T, nb, m, s);
      for (int64_t j = 0; j < nb; j++)
        if (counted(J->at, L[j])) out[j] = ((double)m[j] - (double)X[L[j] * T + j]) + log(s[j]);
    }
  }
}

/* Blocks a loop hands out at least at a time: about 16K logits. */
static int64_t ce_sp_grain(int64_t C) {
  int64_t per = CE_LB * (C > 0 ? C : 1);
  return per >= 16384 ? 1 : 16384 / per;
}

/* The sum over counted positions of their losses, in position order, and
 * their count. */
static double ce_sp_fwd(ce_sp_job *J, int64_t N, int64_t *kept) {
  enum { UNITS = 64 }; /* units whose losses wait in loss[] for the sum */
  double total = 0, loss[UNITS * CE_LB];
  int64_t n = 0, units = N * J->bpr;
  J->loss = loss;
  for (J->u0 = 0; J->u0 < units; J->u0 += UNITS) {
    int64_t nu = units - J->u0 < UNITS ? units - J->u0 : UNITS;
    ad_parallel_for(nu, ce_sp_grain(J->C), ce_sp_fwd_units, J);
    for (int64_t u = 0; u < nu; u++) {
      int64_t g = J->u0 + u, r = g / J->bpr, j0 = g % J->bpr * CE_LB;
      int64_t nb = J->T - j0 < CE_LB ? J->T - j0 : CE_LB;
      for (int64_t j = 0; j < nb; j++)
        if (counted(J->at, J->lab[r * J->T + j0 + j])) total += loss[u * CE_LB + j], n++;
    }
  }
  *kept = n;
  return total;
}

/* Backward, units [b, e): dz = (p - onehot) gs with p the softmax op's
 * probability (float32: EXP_FIX(e, lo) times 1 / s, rounded; float64: e
 * / s), 0 at an ignored position (as the one-position loops). */
CELL_CLONES static void ce_sp_bwd_units(void *ud, int64_t b, int64_t e) {
  const ce_sp_job *J = ud;
  for (int64_t u = b; u < e; u++) {
    double s[CE_LB];
    if (J->f64) {
      CE_SP_UNIT(double, J, u);
      double m[CE_LB], gs = J->gs;
      ce_sp_sums_f64(X, D, C, T, nb, m, s);
      for (int64_t k = 0; k < C; k++)
        for (int64_t j = 0; j < nb; j++)
          D[k * T + j] = (D[k * T + j] / s[j] - (double)(k == L[j])) * gs;
      for (int64_t j = 0; j < nb; j++)
        if (!counted(J->at, L[j]))
          for (int64_t k = 0; k < C; k++) D[k * T + j] = 0;
    } else {
      CE_SP_UNIT(float, J, u);
      float m[CE_LB], gs = (float)J->gs;
      ce_sp_sums_f32(X, D, C, T, nb, m, s);
      for (int64_t j = 0; j < nb; j++) s[j] = 1 / s[j];
      for (int64_t k = 0; k < C; k++)
        for (int64_t j = 0; j < nb; j++) {
          float x = X[k * T + j],
                p = (float)(EXP_FIX(D[k * T + j], diff_err(x, m[j], x - m[j])) * s[j]);
          D[k * T + j] = (p - (float)(k == L[j])) * gs;
        }
      for (int64_t j = 0; j < nb; j++)
        if (!counted(J->at, L[j]))
          for (int64_t k = 0; k < C; k++) D[k * T + j] = 0.0f;
    }
  }
}
#undef CE_SP_UNIT

static void softmax_ce_fwd(const ad_call *c) {
  const ad_tensor *z = c->in[0];
  const ad_cross_entropy_attrs *at = &c->attrs->cross_entropy;
  const int32_t *lab = c->in[1]->data;
  ad_tensor *out = c->out;
  int64_t N = z->shape[0], C = z->shape[1], T = trailing(z);
  if (out->dtype == AD_F32 && T == 1) {
    int64_t kept = 0;
    double total = ce_fwd_f32(z->data, lab, N, C, at, &kept);
    *(float *)out->data = (float)(at->sum ? total : kept ? total / (double)kept : NAN);
  } else if (T != 1) { /* (T = 0 too: no position) */
    ce_sp_job j = {.z = z->data,
                   .lab = lab,
                   .f64 = out->dtype == AD_F64,
                   .C = C,
                   .T = T,
                   .bpr = (T + CE_LB - 1) / CE_LB,
                   .at = at};
    int64_t kept = 0;
    double total = ce_sp_fwd(&j, N, &kept), v = at->sum ? total : kept ? total / (double)kept : NAN;
    if (j.f64)
      *(double *)out->data = v;
    else
      *(float *)out->data = (float)v;
  } else {
    CE_FWD(double);
  }
}

/* The labels take no gradient: they are class indices, the tape's copy of
 * those the forward checked. An ignored position gets exactly 0 (where,
 * applied last, so neither a NaN logit there nor a NaN or infinite dy sends
 * anything); with no position kept every gradient is 0, as PyTorch's. */
/* The plain backward (no create_graph) in one pass per position: e =
 * exp(z - max) into dz, then dz = (e / sum e - onehot) * (dy s), each step
 * rounded as the ops of the recorded form round it (softmax, sub,
 * mul_scalar, mul; where then sets an ignored position to 0), so both give
 * the same bits. A position's C logits (and gradients) are T apart; l is its
 * label. */
CELL_CLONES static void ce_bwd_lane_double(const double *zr, double *dr, int64_t T, int64_t C,
                                           int32_t l, double gs) {
  double m = AD_LANE_MAX(zr, T, C), s = exp_sum_d(zr, T, C, m, dr, T);
  for (int64_t k = 0; k < C; k++) dr[k * T] = (dr[k * T] / s - (double)(k == l)) * gs;
}

#define CE_BWD(T_)                                                                                 \
  do {                                                                                             \
    const T_ *Z = z->data;                                                                         \
    T_ *D = dz->data, gs = (T_)(*(const T_ *)c->gout->data * (T_)scale);                           \
    for (int64_t r = 0; r < N; r++)                                                                \
      for (int64_t j = 0; j < T; j++) {                                                            \
        int32_t l = lab[r * T + j];                                                                \
        const T_ *zr = Z + r * C * T + j;                                                          \
        T_ *dr = D + r * C * T + j;                                                                \
        if (!counted(at, l)) {                                                                     \
          for (int64_t k = 0; k < C; k++) dr[k * T] = 0;                                           \
          continue;                                                                                \
        }                                                                                          \
        ce_bwd_lane_##T_(zr, dr, T, C, l, gs);                                                     \
      }                                                                                            \
  } while (0)

static ad_status softmax_ce_bwd(const ad_call *c) {
  if (!c->needs[0]) return AD_OK;
  ad_ctx *ctx = c->ctx;
  if (!ctx->grad_enabled) {
    const ad_tensor *z = c->in[0];
    const ad_cross_entropy_attrs *at = &c->attrs->cross_entropy;
    const int32_t *lab = c->in[1]->data;
    int64_t N = z->shape[0], C = z->shape[1], T = trailing(z), kept = 0;
    for (int64_t i = 0; i < N * T; i++) kept += counted(at, lab[i]);
    double scale = at->sum ? 1.0 : kept ? 1.0 / (double)kept : N * T != 0 ? 0.0 : NAN;
    ad_tensor *dz = ad_tmp_new(ctx, z->dtype, z->ndim, z->shape);
    if (!dz) return ad_last_status(ctx);
    if (z->dtype == AD_F32 && T == 1) {
      ce_bwd_f32(z->data, lab, N, C, at, *(const float *)c->gout->data * (float)scale, dz->data);
    } else if (T != 1) { /* (T = 0 too: no position) */
      bool f64 = z->dtype == AD_F64;
      ce_sp_job j = {.z = z->data,
                     .lab = lab,
                     .f64 = f64,
                     .C = C,
                     .T = T,
                     .bpr = (T + CE_LB - 1) / CE_LB,
                     .at = at,
                     .dz = dz->data,
                     .gs = f64 ? *(const double *)c->gout->data * scale
                               : (double)(*(const float *)c->gout->data * (float)scale)};
      if (N * j.bpr > 0) ad_parallel_for(N * j.bpr, ce_sp_grain(C), ce_sp_bwd_units, &j);
    } else {
      CE_BWD(double);
    }
    c->gin[0] = dz;
    return AD_OK;
  }
  ad_tensor *z = c->in[0];
  const ad_cross_entropy_attrs *at = &c->attrs->cross_entropy;
  int64_t N = z->shape[0], C = z->shape[1], T = trailing(z), kept = 0;
  ad_tensor *onehot = ad_tmp_full(ctx, z->dtype, z->ndim, z->shape, 0.0);
  if (!onehot) return ad_last_status(ctx);
  const int32_t *lab = c->in[1]->data;
  for (int64_t r = 0; r < N; r++)
    for (int64_t j = 0; j < T; j++)
      if (counted(at, lab[r * T + j])) {
        ad_tensor_set(onehot, (r * C + lab[r * T + j]) * T + j, 1.0);
        kept++;
      }
  ad_tensor *d = ad_sub(ctx, ad_softmax(ctx, z, 1), onehot), *keep = NULL;
  if (kept < N * T) {
    int64_t ks[AD_MAX_DIMS];
    memcpy(ks, z->shape, sizeof(int64_t) * (size_t)z->ndim);
    ks[1] = 1;
    keep = ad_tmp_full(ctx, z->dtype, z->ndim, ks, 1.0);
    if (!keep) return ad_last_status(ctx);
    for (int64_t i = 0; i < N * T; i++)
      if (!counted(at, lab[i])) ad_tensor_set(keep, i, 0.0);
    d = ad_where(ctx, keep, d, ad_scalar(ctx, z->dtype, 0.0));
  }
  double scale = at->sum ? 1.0 : kept ? 1.0 / (double)kept : N * T != 0 ? 0.0 : NAN;
  d = ad_mul(ctx, d, ad_mul_scalar(ctx, c->gout, scale));
  /* where before the product keeps a NaN logit of an ignored position out
   * of it (and, differentiated again, a NaN or infinite dy out of the
   * softmax's gradient); where after it keeps out a NaN or infinite dy, as
   * 0 * dy would be NaN */
  if (keep) d = ad_where(ctx, keep, d, ad_scalar(ctx, z->dtype, 0.0));
  return ad_call_set_grad(c, 0, d);
}

ad_tensor *ad_softmax_cross_entropy(ad_ctx *ctx, ad_tensor *logits, ad_tensor *labels) {
  if (!ctx) return NULL;
  if (!ad_arg_ok(ctx, "softmax_cross_entropy", "logits", logits) ||
      !ad_arg_ok(ctx, "softmax_cross_entropy", "labels", labels))
    return NULL;
  if (logits->ndim != 2 || labels->ndim != 1) {
    char a[64], b[64];
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "softmax_cross_entropy: logits %s and labels %s: need [N,C] and [N], C >= 1",
                 ad_shape_str(logits, a, sizeof a), ad_shape_str(labels, b, sizeof b));
    return NULL;
  }
  return ad_apply2(ctx, AD_OP_SOFTMAX_CE, logits, labels, NULL);
}

ad_tensor *ad_softmax_cross_entropy_ext(ad_ctx *ctx, ad_tensor *logits, ad_tensor *labels,
                                        const ad_cross_entropy_opts *opts) {
  ad_attrs at = {.cross_entropy = {0}};
  if (opts)
    at.cross_entropy = (ad_cross_entropy_attrs){
        .ignore = opts->ignore, .ignore_index = opts->ignore_index, .sum = opts->sum};
  return ad_apply2(ctx, AD_OP_SOFTMAX_CE, logits, labels, &at);
}

/* [4,5] and its labels; [2,3,4] with labels [2,4], some of them the
 * ignored -100; [2,3,2,2] summed, ignoring the label 1 */
static int softmax_ce_sample(const ad_sample_call *s) {
  static const int32_t l1[8] = {0, -100, 2, 1, 2, 2, -100, 0}, l2[8] = {0, 1, 2, 2, 1, 0, 1, 1};
  static const int64_t z0[2] = {4, 5}, z1[3] = {2, 3, 4}, z2[4] = {2, 3, 2, 2};
  static const int64_t t1[2] = {2, 4}, t2[3] = {2, 2, 2};
  int v = s->variant;
  if (v > 2) return 0;
  if (v == 0) {
    s->in[0] = ad_sample_tensor(s, 2, z0, -3, 3, true);
    s->in[1] = ad_zeros(s->ctx, AD_I32, 1, z0);
    for (int64_t i = 0; s->in[1] && i < 4; i++)
      ((int32_t *)s->in[1]->data)[i] = (int32_t)ad_rng_below(s->rng, 5);
  } else {
    s->attrs->cross_entropy =
        (ad_cross_entropy_attrs){.ignore = true, .ignore_index = v == 1 ? -100 : 1, .sum = v == 2};
    s->in[0] = ad_sample_tensor(s, v == 1 ? 3 : 4, v == 1 ? z1 : z2, -3, 3, true);
    s->in[1] = ad_from_data(s->ctx, AD_I32, v == 1 ? 2 : 3, v == 1 ? t1 : t2, v == 1 ? l1 : l2);
  }
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_softmax_cross_entropy = {
    .name = "softmax_cross_entropy",
    .arity = 2,
    .attrs = AD_ATTRS_CROSS_ENTROPY,
    .shape = softmax_ce_shape,
    .forward = softmax_ce_fwd,
    .backward = softmax_ce_bwd,
    .sample = softmax_ce_sample,
    .math = "y = -(1/M) sum_p log softmax(z_p)[t_p], p over the positions with t_p != "
            "ignore_index, M their count (1 with sum), softmax over the classes (dim 1)",
    .inputs = {"z", "t"},
    .grads = {"dy * (softmax(z) - onehot(t)) / M, 0 where t = ignore_index", NULL},
};

/* ------------------------------------------------- binary_cross_entropy
 *
 *   y = -(t max(log p, -100) + (1 - t) max(log(1 - p), -100))
 *   dp = dy (p - t) / max(p (1 - p), eps),   dt = dy (log(1 - p) - log p)
 *
 * PyTorch's F.binary_cross_entropy per element (reduction='none'). The
 * gradient in p is not that of the clamped logs (0 where a log is clamped,
 * so a confident wrong p of 0 or 1 would learn nothing) but PyTorch's:
 * the exact derivative with its denominator bounded below by eps, the
 * float 1e-12 in both dtypes as in PyTorch. The forward computes
 * (t - 1) max(log(1 - p), -100) - t max(log p, -100) in the input's dtype,
 * PyTorch's order; a NaN p stays NaN (the bound keeps a NaN log). */

#define BCE_EPS ((double)1e-12f)

static inline double bce_f64(double p, double t) {
  double lp = log(p), lq = log(1.0 - p);
  lp = lp < -100.0 ? -100.0 : lp;
  lq = lq < -100.0 ? -100.0 : lq;
  return (t - 1.0) * lq - t * lp;
}

static inline float bce_f32(float p, float t) {
  float lp = logf(p), lq = logf(1.0f - p);
  lp = lp < -100.0f ? -100.0f : lp;
  lq = lq < -100.0f ? -100.0f : lq;
  return (t - 1.0f) * lq - t * lp;
}

/* float32 without calls: log_v (vexp.h, within 0.92 ulp) of p and 1 - p
 * where both are normal floats (no log reaches -100 there); bce_f32 (libm
 * and the clamps) for the others: p of 0, 1, a subnormal, outside [0, 1]
 * or NaN. */
static inline float bce_v(float p, float t) VEXP_INLINE;
static inline float bce_v(float p, float t) { return (t - 1.0f) * log_v(1.0f - p) - t * log_v(p); }
#define BCE_OUT32(p) (!((p) >= FLT_MIN && 1.0f - (p) >= FLT_MIN))
BINARY_KERNEL_V(bce, bce_v(x0, x1), BCE_OUT32(x0), bce_f32(x0, x1), bce_f64(x0, x1))

/* The log op's float32 value (op_elementwise.c's log kernel); float64's
 * is vexp.h's log_op_d. */
static inline float bce_log32(float x) VEXP_INLINE;
static inline float bce_log32(float x) { return LOG_V_OUT(x) ? logf(x) : log_v(x); }

/* The plain backward (no create_graph) of p, t and dy of one shape in one
 * pass, each step rounded as the recorded ops below round it (rsub, mul,
 * maximum, sub, div; log as the log op), so both give the same bits, but
 * for the sign of a NaN (C compilers keep no NaN's sign: -p + 1, the
 * recorded rsub, may become 1 - p). */
typedef struct bce_job {
  const ad_call *c;
  void *dp, *dt; /* NULL: not needed */
} bce_job;

#define BCE_BWD_RANGE(T, LOG)                                                                      \
  do {                                                                                             \
    const T *P = c->in[0]->data, *Tt = c->in[1]->data, *G = c->gout->data;                         \
    T *DP = j->dp, *DT = j->dt, eps = (T)BCE_EPS;                                                  \
    if (DP)                                                                                        \
      for (int64_t i = b; i < e; i++) {                                                            \
        T den = ((T)1 - P[i]) * P[i];                                                              \
        DP[i] = G[i] * (P[i] - Tt[i]) / AD_MAX_NAN(den, eps);                                      \
      }                                                                                            \
    if (DT)                                                                                        \
      for (int64_t i = b; i < e; i++) DT[i] = G[i] * (LOG((T)1 - P[i]) - LOG(P[i]));               \
  } while (0)

CELL_CLONES static void bce_bwd_range(void *ud, int64_t b, int64_t e) {
  const bce_job *j = ud;
  const ad_call *c = j->c;
  if (c->out->dtype == AD_F32)
    BCE_BWD_RANGE(float, bce_log32);
  else
    BCE_BWD_RANGE(double, log_op_d);
}

static ad_status bce_bwd_plain(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *dp = c->needs[0] ? ad_tmp_like(ctx, c->in[0]) : NULL;
  ad_tensor *dt = c->needs[1] ? ad_tmp_like(ctx, c->in[1]) : NULL;
  if ((c->needs[0] && !dp) || (c->needs[1] && !dt)) return ad_last_status(ctx);
  bce_job j = {c, dp ? dp->data : NULL, dt ? dt->data : NULL};
  int64_t n = c->out->size;
  if (n <= 16384)
    bce_bwd_range(&j, 0, n);
  else
    ad_parallel_for(n, 16384, bce_bwd_range, &j);
  ad_status st = dp ? ad_call_set_grad(c, 0, dp) : AD_OK;
  return st == AD_OK && dt ? ad_call_set_grad(c, 1, dt) : st;
}

/* Both gradients from ops (so gradgradcheck passes); the engine sums a
 * broadcast input's contribution down. Without create_graph and without
 * broadcasting, bce_bwd_plain instead. */
static ad_status bce_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *p = c->in[0], *t = c->in[1];
  if (!ctx->grad_enabled && ad_same_shape(p, c->out) && ad_same_shape(t, c->out))
    return bce_bwd_plain(c);
  if (c->needs[0]) {
    ad_tensor *den = ad_maximum(ctx, ad_mul(ctx, ad_rsub_scalar(ctx, p, 1.0), p),
                                ad_scalar(ctx, p->dtype, BCE_EPS));
    ad_status st =
        ad_call_set_grad(c, 0, ad_div(ctx, ad_mul(ctx, c->gout, ad_sub(ctx, p, t)), den));
    if (st != AD_OK) return st;
  }
  if (!c->needs[1]) return AD_OK;
  ad_tensor *d = ad_sub(ctx, ad_log(ctx, ad_rsub_scalar(ctx, p, 1.0)), ad_log(ctx, p));
  return ad_call_set_grad(c, 1, ad_mul(ctx, c->gout, d));
}

ad_tensor *ad_binary_cross_entropy(ad_ctx *ctx, ad_tensor *p, ad_tensor *t) {
  return ad_apply2(ctx, AD_OP_BINARY_CE, p, t, NULL);
}

/* p in [0.05, 0.95] (p (1 - p) far above eps), t in [0, 1], in the
 * broadcasting pairs of the binary ops: same shape, a row, both sides, a
 * scalar p */
static int bce_sample(const ad_sample_call *s) {
  static const struct {
    int np, nt;
    int64_t p[3], t[3];
  } cases[] = {
      {2, 2, {3, 4}, {3, 4}}, {2, 1, {3, 4}, {4}}, {3, 2, {2, 1, 3}, {4, 1}}, {0, 2, {0}, {2, 3}}};
  int v = s->variant;
  if (v >= (int)(sizeof cases / sizeof cases[0])) return 0;
  s->in[0] = ad_sample_tensor(s, cases[v].np, cases[v].p, 0.05, 0.95, true);
  s->in[1] = ad_sample_tensor(s, cases[v].nt, cases[v].t, 0, 1, true);
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_binary_cross_entropy = {
    .name = "binary_cross_entropy",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = bce_fwd,
    .backward = bce_bwd,
    .sample = bce_sample,
    .math = "y = -(t max(log p, -100) + (1 - t) max(log(1 - p), -100))",
    .inputs = {"p", "t"},
    .grads = {"dy (p - t) / max(p (1 - p), 1e-12)", "dy (log(1 - p) - log p)"},
};

/* ----------------------------------------- binary_cross_entropy_logits
 *
 *   y = z > 0 ? (1 - t) z + softplus(-z) : softplus(z) - t z
 *   dz = dy (sigmoid(z) - t),   dt = -dy z
 *
 * PyTorch's F.binary_cross_entropy_with_logits per element (reduction
 * 'none', no pos_weight): -t log sigmoid(z) - (1 - t) log sigmoid(-z), in
 * the form of each side that adds terms of one sign for t in [0, 1], each
 * side reading z only where it is taken: z = +inf gives (1 - t) inf (NaN
 * for t = 1, as PyTorch), z = -inf gives -t (-inf) = t inf (PyTorch's form
 * adds -inf and inf there: NaN). The gradients are PyTorch's formulas,
 * also at +-inf (dz 1 - t and -t, dt -inf and inf). softplus is the
 * softplus op's (max(x, 0) + log1p(exp(-|x|)); float32 softplus_v, libm
 * below EXP_V_MIN; float64 softplus_d), sigmoid the sigmoid op's, so the plain backward gives
 * the bits of the recorded one. */

/* max(x, 0) + log1p(exp(-|x|)), the softplus op's forms (float64:
 * softplus_d, vexp.h) */
static inline float bcel_softplus_f(float x) { return (x > 0 ? x : 0) + log1pf(expf(-fabsf(x))); }

#define BCEL_Y(T, SP, z, t) ((z) > 0 ? ((T)1 - (t)) * (z) + SP(-(z)) : SP(z) - (t) * (z))

static inline float bcel_v(float z, float t) VEXP_INLINE;
static inline float bcel_v(float z, float t) { return BCEL_Y(float, softplus_v, z, t); }
static inline float bcel_f32(float z, float t) { return BCEL_Y(float, bcel_softplus_f, z, t); }
static inline double bcel_f64(double z, double t) VEXP_INLINE;
static inline double bcel_f64(double z, double t) { return BCEL_Y(double, softplus_d, z, t); }
/* softplus_v's argument, -|z|, below its range, or NaN */
#define BCEL_OUT32(z) (!(-fabsf(z) >= EXP_V_MIN))
BINARY_KERNEL_V(bcel, bcel_v(x0, x1), BCEL_OUT32(x0), bcel_f32(x0, x1), bcel_f64(x0, x1))

/* The sigmoid op's values: float32 exp_v's form (vectorized), libm's
 * below EXP_V_MIN and for NaN; float64 stable on both sides. */
static inline float bcel_sig_v(float x) VEXP_INLINE;
static inline float bcel_sig_v(float x) {
  float e = exp_v(-fabsf(x));
  float num = x >= 0 ? 1.0f : e; /* one division in the vector loop (sigmoid_v's form) */
  return num / (1.0f + e);
}
static inline float bcel_sig_f(float x) {
  return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}
static inline double bcel_sig64(double x) VEXP_INLINE;
static inline double bcel_sig64(double x) { return sigmoid_d(x); } /* vexp.h, the op's */

/* The plain backward (no create_graph) of z, t and dy of one shape in one
 * pass, each step rounded as the recorded ops below round it: float32 in
 * chunks of 256, exp_v's sigmoid first, libm's after where z is out of its
 * range (the sigmoid op's rule). */
#define BCEL_BWD_RANGE(T, SIG_V, OUT, SIG_F)                                                       \
  do {                                                                                             \
    const T *Z = c->in[0]->data, *Tt = c->in[1]->data, *G = c->gout->data;                         \
    T *DZ = j->dp, *DT = j->dt;                                                                    \
    for (int64_t c0 = b; DZ && c0 < e; c0 += 256) {                                                \
      int64_t c1 = e - c0 < 256 ? e : c0 + 256;                                                    \
      int out = 0;                                                                                 \
      for (int64_t i = c0; i < c1; i++) {                                                          \
        DZ[i] = G[i] * (SIG_V(Z[i]) - Tt[i]);                                                      \
        out |= OUT(Z[i]);                                                                          \
      }                                                                                            \
      if (out)                                                                                     \
        for (int64_t i = c0; i < c1; i++)                                                          \
          if (OUT(Z[i])) DZ[i] = G[i] * (SIG_F(Z[i]) - Tt[i]);                                     \
    }                                                                                              \
    if (DT)                                                                                        \
      for (int64_t i = b; i < e; i++) DT[i] = G[i] * -Z[i];                                        \
  } while (0)
#define BCEL_SIG_OUT32(x) ((x) < EXP_V_MIN) /* SIGMOID_OUT32 */
#define BCEL_NONE(x)      0

CELL_CLONES static void bcel_bwd_range(void *ud, int64_t b, int64_t e) {
  const bce_job *j = ud;
  const ad_call *c = j->c;
  if (c->out->dtype == AD_F32)
    BCEL_BWD_RANGE(float, bcel_sig_v, BCEL_SIG_OUT32, bcel_sig_f);
  else
    BCEL_BWD_RANGE(double, bcel_sig64, BCEL_NONE, bcel_sig64);
}

/* Both gradients of ops (so differentiable again: dz's in z is dy
 * sigmoid'(z), in t -dy; dt's in z -dy); without create_graph and without
 * broadcasting one pass, bcel_bwd_range. */
static ad_status bcel_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *z = c->in[0], *t = c->in[1];
  if (!ctx->grad_enabled && ad_same_shape(z, c->out) && ad_same_shape(t, c->out)) {
    ad_tensor *dz = c->needs[0] ? ad_tmp_like(ctx, z) : NULL;
    ad_tensor *dt = c->needs[1] ? ad_tmp_like(ctx, t) : NULL;
    if ((c->needs[0] && !dz) || (c->needs[1] && !dt)) return ad_last_status(ctx);
    bce_job j = {c, dz ? dz->data : NULL, dt ? dt->data : NULL};
    int64_t n = c->out->size;
    if (n <= 16384)
      bcel_bwd_range(&j, 0, n);
    else
      ad_parallel_for(n, 16384, bcel_bwd_range, &j);
    ad_status st = dz ? ad_call_set_grad(c, 0, dz) : AD_OK;
    return st == AD_OK && dt ? ad_call_set_grad(c, 1, dt) : st;
  }
  if (c->needs[0]) {
    ad_tensor *g = ad_mul(ctx, c->gout, ad_sub(ctx, ad_sigmoid(ctx, z), t));
    ad_status st = ad_call_set_grad(c, 0, g);
    if (st != AD_OK) return st;
  }
  if (!c->needs[1]) return AD_OK;
  return ad_call_set_grad(c, 1, ad_mul(ctx, c->gout, ad_neg(ctx, z)));
}

ad_tensor *ad_binary_cross_entropy_logits(ad_ctx *ctx, ad_tensor *z, ad_tensor *t) {
  return ad_apply2(ctx, AD_OP_BCE_LOGITS, z, t, NULL);
}

/* z in [-4, 4], t in [0, 1], in the broadcasting pairs of the binary ops */
static int bcel_sample(const ad_sample_call *s) {
  static const struct {
    int nz, nt;
    int64_t z[3], t[3];
  } cases[] = {{2, 2, {3, 4}, {3, 4}}, {2, 1, {3, 4}, {4}}, {3, 2, {2, 1, 3}, {4, 1}}};
  int v = s->variant;
  if (v >= (int)(sizeof cases / sizeof cases[0])) return 0;
  s->in[0] = ad_sample_tensor(s, cases[v].nz, cases[v].z, -4, 4, true);
  s->in[1] = ad_sample_tensor(s, cases[v].nt, cases[v].t, 0, 1, true);
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_binary_cross_entropy_logits = {
    .name = "binary_cross_entropy_logits",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .forward = bcel_fwd,
    .backward = bcel_bwd,
    .sample = bcel_sample,
    .math = "y = z > 0 ? (1 - t) z + softplus(-z) : softplus(z) - t z",
    .inputs = {"z", "t"},
    .grads = {"dy (sigmoid(z) - t)", "-dy z"},
};

/* ------------------------------------- binary_cross_entropy_logits_pw
 *
 *   w = 1 + (pw - 1) t,  s = softplus(-|z|)
 *   y = z > 0 ? (1 - t) z + w s : w s - pw (t z)
 *   dz = dy (w sigmoid(z) - pw t)
 *   dt = dy (pw softplus(-z) - softplus(z)),  dpw = dy t softplus(-z)
 *
 * PyTorch's F.binary_cross_entropy_with_logits with pos_weight pw (one per
 * class, say, broadcast), reduction 'none': -pw t log sigmoid(z) - (1 - t)
 * log sigmoid(-z), in binary_cross_entropy_logits' forms (each side adds
 * terms of one sign for t in [0, 1] and pw >= 0, and reads z only where it
 * is taken: z = +inf gives (1 - t) inf, z = -inf pw t inf). softplus(-|z|)
 * is softplus(-z) where z > 0 and softplus(z) elsewhere, so one softplus
 * an element. Every step is rounded as the ops written out round it
 * (softplus and sigmoid as their ops, then the products and sums in the
 * order above), so the forward gives the bits of the composition of 17
 * ops that nn_bce_with_logits_loss_ext recorded before this op, and the
 * plain backward (one pass) the bits of the recorded one. PyTorch gives
 * pos_weight no gradient; this op gives it dpw, so that it is whole under
 * ad_op_apply. With pw = 1 the values are binary_cross_entropy_logits'
 * but dt: pw softplus(-z) - softplus(z) rounds apart from -z. */

/* The softplus and sigmoid ops' float32 values, element by element:
 * their vectorized forms from EXP_V_MIN up, libm's below and for NaN. */
static inline float bcelpw_sp32(float x) {
  return !(x >= EXP_V_MIN) ? bcel_softplus_f(x) : softplus_v(x);
}
static inline float bcelpw_sig32(float x) { return x < EXP_V_MIN ? bcel_sig_f(x) : bcel_sig_v(x); }

#define BCELPW_W(T, t, pw) (((pw) - (T)1) * (t) + (T)1)
#define BCELPW_Y(T, z, t, pw, s)                                                                   \
  ((z) > 0 ? ((T)1 - (t)) * (z) + BCELPW_W(T, t, pw) * (s)                                         \
           : BCELPW_W(T, t, pw) * (s) - (pw) * ((t) * (z)))

/* y over a run of len elements: z and t from Z and Tt (unit stride), pw
 * from W at stride sw (0 or 1). float32 in chunks of 256, softplus_v
 * first, the op's rule after where -|z| is below EXP_V_MIN or NaN. */
#define BCELPW_FWD32(WI)                                                                           \
  for (int64_t c0 = 0; c0 < len; c0 += 256) {                                                      \
    int64_t c1 = len - c0 < 256 ? len : c0 + 256;                                                  \
    int out = 0;                                                                                   \
    for (int64_t i = c0; i < c1; i++) {                                                            \
      float z = Z[i], t = Tt[i], pw = W[WI];                                                       \
      Y[i] = BCELPW_Y(float, z, t, pw, softplus_v(-fabsf(z)));                                     \
      out |= BCEL_OUT32(z);                                                                        \
    }                                                                                              \
    if (out)                                                                                       \
      for (int64_t i = c0; i < c1; i++)                                                            \
        if (BCEL_OUT32(Z[i])) {                                                                    \
          float z = Z[i], t = Tt[i], pw = W[WI];                                                   \
          Y[i] = BCELPW_Y(float, z, t, pw, bcelpw_sp32(-fabsf(z)));                                \
        }                                                                                          \
  }
CELL_CLONES static void bcelpw_row32(const float *Z, const float *Tt, const float *W, int64_t sw,
                                     float *Y, int64_t len) {
  if (sw)
    BCELPW_FWD32(i)
  else
    BCELPW_FWD32(0)
}
#define BCELPW_FWD64(WI)                                                                           \
  for (int64_t i = 0; i < len; i++) {                                                              \
    double z = Z[i], t = Tt[i], pw = W[WI];                                                        \
    Y[i] = BCELPW_Y(double, z, t, pw, softplus_d(-fabs(z)));                                       \
  }
CELL_CLONES static void bcelpw_row64(const double *Z, const double *Tt, const double *W, int64_t sw,
                                     double *Y, int64_t len) {
  if (sw)
    BCELPW_FWD64(i)
  else
    BCELPW_FWD64(0)
}
#undef BCELPW_FWD64
#undef BCELPW_FWD32

/* Elements [b, e) of the op's call (the forward, or with dz the plain
 * backward, whose z and t are of the output's shape): a run of a row at a
 * time (ad_bc_next_span), strides as the iterator gives them. */
typedef struct bcelpw_job {
  const ad_call *c;
  ad_bc_rows it;
  bool flat;          /* every input of the output's shape */
  int64_t row;        /* > 0: z and t of the output's shape, pw one row of it repeated (a
                         pos_weight per class) of this many elements, short: bcelpw_tile */
  void *dz, *dt, *dw; /* the plain backward's outputs (NULL: not needed) */
} bcelpw_job;

/* The elements of bcelpw_tile's tile; rows of pw shorter than half of it
 * take the tile (bcelpw_run). */
enum { BCELPW_TILE = 512 };

/* pw's row, of j->row elements, repeated from element b of the output on
 * (its place in a row b mod row), as many times as fit in BCELPW_TILE
 * (into tile, whose length in whole rows is returned): blocks of that
 * length from b on all read the same tile at unit stride, instead of a
 * call of the row function per row. The same values: the same bits. */
static int64_t bcelpw_tile(const bcelpw_job *j, int64_t b, double *tile) {
  const ad_tensor *pw = j->c->in[2];
  int64_t L = j->row, blk = BCELPW_TILE / L * L, i = b % L;
  for (int64_t q = 0; q < blk; q++, i = i + 1 == L ? 0 : i + 1) {
    if (pw->dtype == AD_F32)
      ((float *)(void *)tile)[q] = ((const float *)pw->data)[i];
    else
      tile[q] = ((const double *)pw->data)[i];
  }
  return blk;
}

/* The general strides (a broadcast z or t): element by element. */
static void bcelpw_strided(const ad_call *c, const int64_t *off, const int64_t *st, int64_t oy,
                           int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    int64_t a = off[0] + i * st[0], b = off[1] + i * st[1], w = off[2] + i * st[2];
    if (c->out->dtype == AD_F32) {
      float z = ((const float *)c->in[0]->data)[a], t = ((const float *)c->in[1]->data)[b];
      float pw = ((const float *)c->in[2]->data)[w];
      ((float *)c->out->data)[oy + i] = BCELPW_Y(float, z, t, pw, bcelpw_sp32(-fabsf(z)));
    } else {
      double z = ((const double *)c->in[0]->data)[a], t = ((const double *)c->in[1]->data)[b];
      double pw = ((const double *)c->in[2]->data)[w];
      ((double *)c->out->data)[oy + i] = BCELPW_Y(double, z, t, pw, softplus_d(-fabs(z)));
    }
  }
}

static void bcelpw_fwd_range(void *ud, int64_t b, int64_t e) {
  const bcelpw_job *j = ud;
  const ad_call *c = j->c;
  if (j->row) {
    double tile[BCELPW_TILE];
    for (int64_t i = b, blk = bcelpw_tile(j, b, tile), n; i < e; i += n) {
      n = e - i < blk ? e - i : blk;
      if (c->out->dtype == AD_F32)
        bcelpw_row32((const float *)c->in[0]->data + i, (const float *)c->in[1]->data + i,
                     (const float *)(const void *)tile, 1, (float *)c->out->data + i, n);
      else
        bcelpw_row64((const double *)c->in[0]->data + i, (const double *)c->in[1]->data + i, tile,
                     1, (double *)c->out->data + i, n);
    }
    return;
  }
  int last = c->out->ndim - 1;
  int64_t st[3], off[3], n;
  ad_bc_cursor cu = AD_BC_CURSOR_NONE;
  for (int k = 0; k < 3; k++) st[k] = j->flat ? 1 : last >= 0 ? j->it.st[k][last] : 0;
  for (int64_t i = b; i < e; i += n) {
    if (j->flat)
      off[0] = off[1] = off[2] = i, n = e - i;
    else
      ad_bc_next_span(&j->it, c->out, &cu, i, e, off, &n);
    if (n > 1 && (st[0] != 1 || st[1] != 1 || (st[2] != 0 && st[2] != 1)))
      bcelpw_strided(c, off, st, i, n);
    else if (c->out->dtype == AD_F32)
      bcelpw_row32((const float *)c->in[0]->data + off[0], (const float *)c->in[1]->data + off[1],
                   (const float *)c->in[2]->data + off[2], n > 1 ? st[2] : 0,
                   (float *)c->out->data + i, n);
    else
      bcelpw_row64((const double *)c->in[0]->data + off[0], (const double *)c->in[1]->data + off[1],
                   (const double *)c->in[2]->data + off[2], n > 1 ? st[2] : 0,
                   (double *)c->out->data + i, n);
  }
}

/* Sets up j over the call's three inputs and runs fn over the output's
 * elements, split over the library's threads when there are many. */
static void bcelpw_run(bcelpw_job *j, void (*fn)(void *, int64_t, int64_t)) {
  const ad_call *c = j->c;
  j->flat = ad_same_shape(c->in[0], c->out) && ad_same_shape(c->in[1], c->out) &&
            ad_same_shape(c->in[2], c->out);
  if (!j->flat) {
    ad_bc_init(&j->it, 3, c->in, c->out);
    ad_bc_merge(&j->it, c->out);
    int last = c->out->ndim - 1;
    if (ad_same_shape(c->in[0], c->out) && ad_same_shape(c->in[1], c->out) && last >= 0 &&
        j->it.nd <= 1 && j->it.len > 1 && j->it.len < BCELPW_TILE / 2 &&
        c->in[2]->size == j->it.len && j->it.st[2][last] == 1 &&
        (j->it.nd == 0 || j->it.st[2][0] == 0))
      j->row = j->it.len;
  }
  int64_t n = c->out->size;
  if (n <= 16384)
    fn(j, 0, n);
  else
    ad_parallel_for(n, 16384, fn, j);
}

static void bcelpw_fwd(const ad_call *c) {
  bcelpw_job j = {.c = c};
  bcelpw_run(&j, bcelpw_fwd_range);
}

/* The plain backward over a run: z, t, dy and the outputs at unit stride
 * (of the output's shape), pw at stride sw (0 or 1); each output only
 * where asked for. float32 in chunks of 256 as the forward, sigmoid and
 * softplus by the ops' rules after where z is out of exp_v's range. */
#define BCELPW_LOOP(T, WI, LO, HI, BODY)                                                           \
  for (int64_t i = (LO); i < (HI); i++) {                                                          \
    T z = Z[i], t = Tt[i], pw = W[WI], g = G[i];                                                   \
    BODY                                                                                           \
  }
/* one loop for each set of outputs, without branches (so that it vectorizes) */
#define BCELPW_BWD(T, SIG, SPN, SPP, WI, LO, HI)                                                   \
  do {                                                                                             \
    if (DZ) BCELPW_LOOP(T, WI, LO, HI, DZ[i] = g * (BCELPW_W(T, t, pw) * SIG(z) - pw * t);)        \
    if (DT && DW)                                                                                  \
      BCELPW_LOOP(T, WI, LO, HI, T sn = SPN(-z); DT[i] = g * (pw * sn - SPP(z));                   \
                  DW[i] = g * (t * sn);)                                                           \
    else if (DT)                                                                                   \
      BCELPW_LOOP(T, WI, LO, HI, (void)t; DT[i] = g * (pw * SPN(-z) - SPP(z));)                    \
    else if (DW)                                                                                   \
      BCELPW_LOOP(T, WI, LO, HI, (void)pw; DW[i] = g * (t * SPN(-z));)                             \
  } while (0);
#define BCELPW_BWD32(WI)                                                                           \
  for (int64_t c0 = 0; c0 < len; c0 += 256) {                                                      \
    int64_t c1 = len - c0 < 256 ? len : c0 + 256;                                                  \
    int out = 0;                                                                                   \
    for (int64_t i = c0; i < c1; i++) out |= BCEL_OUT32(Z[i]);                                     \
    BCELPW_BWD(float, bcel_sig_v, softplus_v, softplus_v, WI, c0, c1)                              \
    if (out)                                                                                       \
      for (int64_t k = c0; k < c1; k++)                                                            \
        if (BCEL_OUT32(Z[k]))                                                                      \
          BCELPW_BWD(float, bcelpw_sig32, bcelpw_sp32, bcelpw_sp32, WI, k, k + 1)                  \
  }
CELL_CLONES static void bcelpw_bwd_row32(const float *Z, const float *Tt, const float *W,
                                         int64_t sw, const float *G, float *DZ, float *DT,
                                         float *DW, int64_t len) {
  if (sw)
    BCELPW_BWD32(i)
  else
    BCELPW_BWD32(0)
}
CELL_CLONES static void bcelpw_bwd_row64(const double *Z, const double *Tt, const double *W,
                                         int64_t sw, const double *G, double *DZ, double *DT,
                                         double *DW, int64_t len) {
  if (sw)
    BCELPW_BWD(double, sigmoid_d, softplus_d, softplus_d, i, 0, len)
  else
    BCELPW_BWD(double, sigmoid_d, softplus_d, softplus_d, 0, 0, len)
}
#undef BCELPW_BWD32
#undef BCELPW_BWD
#undef BCELPW_LOOP

/* (pw at a stride other than 0 or 1 takes one element a call) */
static void bcelpw_bwd_range(void *ud, int64_t b, int64_t e) {
  const bcelpw_job *j = ud;
  const ad_call *c = j->c;
  int last = c->out->ndim - 1;
  int64_t sw = j->flat ? 1 : last >= 0 ? j->it.st[2][last] : 0, off[3], n;
  ad_bc_cursor cu = AD_BC_CURSOR_NONE;
  double tile[BCELPW_TILE];
  int64_t blk = j->row ? bcelpw_tile(j, b, tile) : 0;
  for (int64_t i = b; i < e; i += n) {
    const void *w;
    if (j->row) { /* a tile of pw's rows */
      n = e - i < blk ? e - i : blk, w = tile, sw = 1;
    } else {
      if (j->flat)
        off[2] = i, n = e - i;
      else
        ad_bc_next_span(&j->it, c->out, &cu, i, e, off, &n);
      w = (const char *)c->in[2]->data + off[2] * (int64_t)ad_dsize(c->out->dtype);
    }
    if (n > 1 && sw != 0 && sw != 1) n = 1;
    int64_t s = n > 1 ? sw : 0;
#define ROW(T, fn)                                                                                 \
  fn((const T *)c->in[0]->data + i, (const T *)c->in[1]->data + i, (const T *)w, s,                \
     (const T *)c->gout->data + i, j->dz ? (T *)j->dz + i : NULL, j->dt ? (T *)j->dt + i : NULL,   \
     j->dw ? (T *)j->dw + i : NULL, n)
    if (c->out->dtype == AD_F32)
      ROW(float, bcelpw_bwd_row32);
    else
      ROW(double, bcelpw_bwd_row64);
#undef ROW
  }
}

/* dz, dt and dpw (of the output's shape: the engine sums a broadcast pw's
 * down) in one pass. */
static ad_status bcelpw_bwd_plain(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *g[3] = {NULL, NULL, NULL};
  for (int k = 0; k < 3; k++)
    if (c->needs[k] && !(g[k] = ad_tmp_like(ctx, k == 2 ? c->out : c->in[k])))
      return ad_last_status(ctx);
  bcelpw_job j = {.c = c,
                  .dz = g[0] ? g[0]->data : NULL,
                  .dt = g[1] ? g[1]->data : NULL,
                  .dw = g[2] ? g[2]->data : NULL};
  bcelpw_run(&j, bcelpw_bwd_range);
  ad_status st = AD_OK;
  for (int k = 0; k < 3 && st == AD_OK; k++)
    if (g[k]) st = ad_call_set_grad(c, k, g[k]);
  return st;
}

/* The gradients of ops (differentiable again); without create_graph, and
 * z and t of the output's shape, bcelpw_bwd_plain: the same bits. */
static ad_status bcelpw_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *z = c->in[0], *t = c->in[1], *pw = c->in[2];
  if (!ctx->grad_enabled && ad_same_shape(z, c->out) && ad_same_shape(t, c->out))
    return bcelpw_bwd_plain(c);
  ad_status st = AD_OK;
  if (c->needs[0]) {
    ad_tensor *w = ad_add_scalar(ctx, ad_mul(ctx, ad_sub_scalar(ctx, pw, 1.0), t), 1.0);
    ad_tensor *d = ad_sub(ctx, ad_mul(ctx, w, ad_sigmoid(ctx, z)), ad_mul(ctx, pw, t));
    st = ad_call_set_grad(c, 0, ad_mul(ctx, c->gout, d));
  }
  if (st != AD_OK || !(c->needs[1] || c->needs[2])) return st;
  ad_tensor *sn = ad_softplus(ctx, ad_neg(ctx, z));
  if (c->needs[1]) {
    ad_tensor *d = ad_sub(ctx, ad_mul(ctx, pw, sn), ad_softplus(ctx, z));
    st = ad_call_set_grad(c, 1, ad_mul(ctx, c->gout, d));
  }
  if (st == AD_OK && c->needs[2])
    st = ad_call_set_grad(c, 2, ad_mul(ctx, c->gout, ad_mul(ctx, t, sn)));
  return st;
}

ad_tensor *ad_binary_cross_entropy_logits_pw(ad_ctx *ctx, ad_tensor *z, ad_tensor *t,
                                             ad_tensor *pw) {
  ad_tensor *in[3] = {z, t, pw};
  return ad_op_apply(ctx, AD_OP_BCE_LOGITS_PW, 3, in, NULL);
}

/* z in [-4, 4], t in [0, 1], pw in [0.5, 2]: all of one shape, pw a row
 * (a weight per class), every input broadcast */
static int bcelpw_sample(const ad_sample_call *s) {
  static const struct {
    int nz, nt, nw;
    int64_t z[3], t[3], w[3];
  } cases[] = {{2, 2, 2, {3, 4}, {3, 4}, {3, 4}},
               {2, 2, 1, {3, 4}, {3, 4}, {4}},
               {3, 2, 1, {2, 1, 3}, {4, 1}, {3}}};
  int v = s->variant;
  if (v >= (int)(sizeof cases / sizeof cases[0])) return 0;
  s->in[0] = ad_sample_tensor(s, cases[v].nz, cases[v].z, -4, 4, true);
  s->in[1] = ad_sample_tensor(s, cases[v].nt, cases[v].t, 0, 1, true);
  s->in[2] = ad_sample_tensor(s, cases[v].nw, cases[v].w, 0.5, 2, true);
  return s->in[0] && s->in[1] && s->in[2] ? 3 : -1;
}

const ad_op_def ad_def_binary_cross_entropy_logits_pw = {
    .name = "binary_cross_entropy_logits_pw",
    .arity = 3,
    .flags = AD_OP_ELEMENTWISE,
    .forward = bcelpw_fwd,
    .backward = bcelpw_bwd,
    .sample = bcelpw_sample,
    .math = "y = z > 0 ? (1 - t) z + w softplus(-z) : w softplus(z) - pw t z, w = 1 + (pw - 1) t",
    .inputs = {"z", "t", "pw"},
    .grads = {"dy (w sigmoid(z) - pw t)", "dy (pw softplus(-z) - softplus(z))",
              "dy t softplus(-z)"},
};

/* ---------------------------------------------------- smooth_l1, huber
 *
 *   d = p - t,  s = d > 0 ? 1 : -1,  k = beta (smooth_l1) or delta (huber)
 *   smooth_l1  y = |d| >= k ? s d - k/2     : d^2 / 2 / k
 *   huber      y = |d| >= k ? k (s d - k/2) : d^2 / 2
 *   dp = dy g(p - t),  dt = dy g(t - p)
 *   g(d) = |d| >= k ? s (huber: s k) : d / k (huber: d)
 *
 * PyTorch 1.13's smooth_l1_loss and huber_loss per element (reduction
 * 'none'), with the choices of its kernels: the switch point |d| = k takes
 * the linear side (gradient +-1 or +-k, second derivative 0), a NaN d the
 * quadratic one (NaN), and t's gradient is the kernel's on t - p, so that
 * smooth L1 with k = 0 gives -1 at d = 0 to both p and t (g(0) = s = -1).
 * With k = 0 the quadratic side is reached by a NaN d only: d^2 there
 * (gradient 2d), no 0/0. k is used rounded to the inputs' dtype (for f32
 * beyond float's range: FLT_MAX up to half an ulp above, infinity from
 * there), as PyTorch converts it; the ops take any k (the nn losses refuse
 * what PyTorch refuses). The forward rounds each step in the dtype as the
 * composite of ops it replaced (nn/losses_reg.c) did. */

/* k as the dtype holds it (no undefined float conversion out of range). */
static double sl1_k(double k, ad_dtype dt) {
  if (dt != AD_F32 || isnan(k)) return k;
  double a = fabs(k), r = a > FLT_MAX ? (a < 0x1.ffffffp127 ? FLT_MAX : INFINITY) : (float)a;
  return k < 0 ? -r : r;
}

#define SL1_Y(T, d, k, HUB)                                                                        \
  do {                                                                                             \
    T s_ = (d) > 0 ? (T)1 : (T)-1, a_ = s_ * (d) + ((T)-0.5 * (k) + (T)0), q_ = (d) * (d);         \
    if (HUB)                                                                                       \
      a_ = a_ * (k), q_ = q_ * (T)0.5;                                                             \
    else if ((k) > 0)                                                                              \
      q_ = q_ * (T)0.5 / (k);                                                                      \
    y_ = AD_ABS_T(T, d) >= (k) ? a_ : q_;                                                          \
  } while (0)

/* g(d) of the block's comment */
#define SL1_G(T, d, k, HUB)                                                                        \
  (AD_ABS_T(T, d) >= (k) ? ((d) > 0 ? (T)1 : (T)-1) * ((HUB) ? (k) : (T)1)                         \
   : (HUB)               ? (d)                                                                     \
   : (k) > 0             ? (d) / (k)                                                               \
                         : (d) * (T)2)

#define AD_ABS_T(T, x) (sizeof(T) == sizeof(float) ? (T)fabsf((float)(x)) : (T)fabs((double)(x)))

/* One contiguous row of either dtype, vectorised: its selects become
 * blends (a strided loop branches on each element's side, which random
 * data mispredicts half the time: 7 ns an element in float64). */
#define SL1_ROW(T, HUB)                                                                            \
  for (int64_t i = 0; i < n; i++) {                                                                \
    T d = P[i] - Tt[i], y_;                                                                        \
    SL1_Y(T, d, k, HUB);                                                                           \
    Y[i] = y_;                                                                                     \
  }

CELL_CLONES static void sl1_row32(const float *P, const float *Tt, float *Y, int64_t n, float k,
                                  bool hub) {
  if (hub)
    SL1_ROW(float, true)
  else
    SL1_ROW(float, false)
}

CELL_CLONES static void sl1_row64(const double *P, const double *Tt, double *Y, int64_t n, double k,
                                  bool hub) {
  if (hub)
    SL1_ROW(double, true)
  else
    SL1_ROW(double, false)
}

static void sl1_rows(const ad_call *c, int64_t oa, int64_t sa, int64_t ob, int64_t sb, int64_t oy,
                     int64_t len, bool hub) {
  double k = sl1_k(c->attrs->scalar, c->out->dtype);
  if (c->out->dtype == AD_F32 && sa == 1 && sb == 1) {
    sl1_row32((const float *)c->in[0]->data + oa, (const float *)c->in[1]->data + ob,
              (float *)c->out->data + oy, len, (float)k, hub);
  } else if (sa == 1 && sb == 1) {
    sl1_row64((const double *)c->in[0]->data + oa, (const double *)c->in[1]->data + ob,
              (double *)c->out->data + oy, len, k, hub);
  } else if (c->out->dtype == AD_F32) {
    const float *A = (const float *)c->in[0]->data + oa, *B = (const float *)c->in[1]->data + ob;
    float *Y = (float *)c->out->data + oy, kf = (float)k;
    for (int64_t i = 0; i < len; i++) {
      float d = A[i * sa] - B[i * sb], y_;
      SL1_Y(float, d, kf, hub);
      Y[i] = y_;
    }
  } else {
    const double *A = (const double *)c->in[0]->data + oa, *B = (const double *)c->in[1]->data + ob;
    double *Y = (double *)c->out->data + oy;
    for (int64_t i = 0; i < len; i++) {
      double d = A[i * sa] - B[i * sb], y_;
      SL1_Y(double, d, k, hub);
      Y[i] = y_;
    }
  }
}

static void smooth_l1_rows(const ad_call *c, int64_t oa, int64_t sa, int64_t ob, int64_t sb,
                           int64_t oy, int64_t len) {
  sl1_rows(c, oa, sa, ob, sb, oy, len, false);
}
static void huber_rows(const ad_call *c, int64_t oa, int64_t sa, int64_t ob, int64_t sb, int64_t oy,
                       int64_t len) {
  sl1_rows(c, oa, sa, ob, sb, oy, len, true);
}
static void smooth_l1_fwd(const ad_call *c) { ad_binary_run(c, smooth_l1_rows, NULL); }
static void huber_fwd(const ad_call *c) { ad_binary_run(c, huber_rows, NULL); }

/* The plain backward (no create_graph) of p, t and dy of one shape in one
 * pass: the recorded form's bits (dy g, g as sl1_g rounds it). */
typedef struct sl1_job {
  const ad_call *c;
  void *dp, *dt; /* NULL: not needed */
  double k;
  bool hub;
} sl1_job;

#define SL1_BWD_RANGE(T, k, HUB)                                                                   \
  do {                                                                                             \
    const T *P = c->in[0]->data, *Tt = c->in[1]->data, *G = c->gout->data;                         \
    T *DP = j->dp, *DT = j->dt;                                                                    \
    if (DP)                                                                                        \
      for (int64_t i = b; i < e; i++) {                                                            \
        T d = P[i] - Tt[i];                                                                        \
        DP[i] = G[i] * SL1_G(T, d, k, HUB);                                                        \
      }                                                                                            \
    if (DT)                                                                                        \
      for (int64_t i = b; i < e; i++) {                                                            \
        T d = Tt[i] - P[i];                                                                        \
        DT[i] = G[i] * SL1_G(T, d, k, HUB);                                                        \
      }                                                                                            \
  } while (0)

CELL_CLONES static void sl1_bwd_range(void *ud, int64_t b, int64_t e) {
  const sl1_job *j = ud;
  const ad_call *c = j->c;
  if (c->out->dtype == AD_F32) {
    float k = (float)j->k;
    if (j->hub)
      SL1_BWD_RANGE(float, k, true);
    else
      SL1_BWD_RANGE(float, k, false);
  } else {
    double k = j->k;
    if (j->hub)
      SL1_BWD_RANGE(double, k, true);
    else
      SL1_BWD_RANGE(double, k, false);
  }
}

/* g(d) of ops: a select of the linear side's constant and the quadratic
 * side's dq / k (dq = where(linear, 0, d), so that an infinite d, on the
 * linear side, sends no 0 * inf = NaN back and makes nothing infinite) */
static ad_tensor *sl1_g(ad_ctx *ctx, ad_tensor *d, double k, bool hub) {
  ad_dtype dt = d->dtype;
  ad_tensor *zero = ad_scalar(ctx, dt, 0.0);
  ad_tensor *lin = ad_ge(ctx, ad_abs(ctx, d), ad_scalar(ctx, dt, k));
  ad_tensor *s = ad_where(ctx, ad_gt(ctx, d, zero), ad_scalar(ctx, dt, hub ? k : 1.0),
                          ad_scalar(ctx, dt, hub ? -k : -1.0));
  ad_tensor *dq = ad_where(ctx, lin, zero, d);
  ad_tensor *q = hub     ? dq
                 : k > 0 ? ad_div(ctx, dq, ad_scalar(ctx, dt, k))
                         : ad_mul_scalar(ctx, dq, 2.0);
  return ad_where(ctx, lin, s, q);
}

static ad_status sl1_bwd(const ad_call *c, bool hub) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *p = c->in[0], *t = c->in[1];
  double k = sl1_k(c->attrs->scalar, c->out->dtype);
  if (!ctx->grad_enabled && ad_same_shape(p, c->out) && ad_same_shape(t, c->out)) {
    ad_tensor *dp = c->needs[0] ? ad_tmp_like(ctx, p) : NULL;
    ad_tensor *dt = c->needs[1] ? ad_tmp_like(ctx, t) : NULL;
    if ((c->needs[0] && !dp) || (c->needs[1] && !dt)) return ad_last_status(ctx);
    sl1_job j = {c, dp ? dp->data : NULL, dt ? dt->data : NULL, k, hub};
    int64_t n = c->out->size;
    if (n <= 16384)
      sl1_bwd_range(&j, 0, n);
    else
      ad_parallel_for(n, 16384, sl1_bwd_range, &j);
    ad_status st = dp ? ad_call_set_grad(c, 0, dp) : AD_OK;
    return st == AD_OK && dt ? ad_call_set_grad(c, 1, dt) : st;
  }
  if (c->needs[0]) {
    ad_tensor *g = sl1_g(ctx, ad_sub(ctx, p, t), k, hub);
    ad_status st = ad_call_set_grad(c, 0, ad_mul(ctx, c->gout, g));
    if (st != AD_OK) return st;
  }
  if (!c->needs[1]) return AD_OK;
  ad_tensor *g = sl1_g(ctx, ad_sub(ctx, t, p), k, hub);
  return ad_call_set_grad(c, 1, ad_mul(ctx, c->gout, g));
}

static ad_status smooth_l1_bwd(const ad_call *c) { return sl1_bwd(c, false); }
static ad_status huber_bwd(const ad_call *c) { return sl1_bwd(c, true); }

/* p [3,4] and t in [-2, 2], t broadcast or not (same shape, a row, a
 * column), each d = p - t moved off the kinks (0 and +-k) by more than the
 * checks' step; k = 0 for smooth_l1 only */
static int sl1_sample(const ad_sample_call *s, bool hub) {
  static const struct {
    int nt;
    int64_t t[2];
    double k;
  } cases[] = {{2, {3, 4}, 1.0}, {1, {4}, 0.5}, {2, {3, 1}, 2.0}, {2, {3, 4}, 0.0}};
  static const int64_t sp[2] = {3, 4};
  int v = s->variant;
  if (v >= (int)(sizeof cases / sizeof cases[0]) - hub) return 0; /* huber: k > 0 */
  s->attrs->scalar = cases[v].k;
  ad_tensor *p = s->in[0] = ad_sample_tensor(s, 2, sp, -2, 2, true);
  ad_tensor *t = s->in[1] = ad_sample_tensor(s, cases[v].nt, cases[v].t, -2, 2, true);
  if (!p || !t) return -1;
  double k = cases[v].k;
  for (int64_t i = 0; i < p->size; i++) {
    int64_t ti = t->size == p->size ? i : t->ndim == 1 ? i % 4 : i / 4;
    double pv = ad_tensor_get(p, i), tv = ad_tensor_get(t, ti);
    for (int r = 0; r < 8; r++) {
      double d = pv - tv;
      if (fabs(d) > 0.1 && fabs(fabs(d) - k) > 0.1) break;
      pv += 0.25;
    }
    ad_tensor_set(p, i, pv);
  }
  return 2;
}
static int smooth_l1_sample(const ad_sample_call *s) { return sl1_sample(s, false); }
static int huber_sample(const ad_sample_call *s) { return sl1_sample(s, true); }

static ad_tensor *sl1_op(ad_ctx *ctx, int op, ad_tensor *p, ad_tensor *t, double k) {
  ad_attrs at = {.scalar = k};
  return ad_apply2(ctx, op, p, t, &at);
}

ad_tensor *ad_smooth_l1(ad_ctx *ctx, ad_tensor *p, ad_tensor *t, double beta) {
  return sl1_op(ctx, AD_OP_SMOOTH_L1, p, t, beta);
}

ad_tensor *ad_huber(ad_ctx *ctx, ad_tensor *p, ad_tensor *t, double delta) {
  return sl1_op(ctx, AD_OP_HUBER, p, t, delta);
}

const ad_op_def ad_def_smooth_l1 = {
    .name = "smooth_l1",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = smooth_l1_fwd,
    .backward = smooth_l1_bwd,
    .sample = smooth_l1_sample,
    .math = "y = |p - t| >= s ? |p - t| - s/2 : (p - t)^2 / (2 s)  (s = beta)",
    .inputs = {"p", "t"},
    .grads = {"dy g(p - t), g(d) = |d| >= s ? sign(d) : d / s  (sign(0) = -1)", "dy g(t - p)"},
};

const ad_op_def ad_def_huber = {
    .name = "huber",
    .arity = 2,
    .flags = AD_OP_ELEMENTWISE,
    .attrs = AD_ATTRS_SCALAR,
    .forward = huber_fwd,
    .backward = huber_bwd,
    .sample = huber_sample,
    .math = "y = |p - t| >= s ? s (|p - t| - s/2) : (p - t)^2 / 2  (s = delta)",
    .inputs = {"p", "t"},
    .grads = {"dy g(p - t), g(d) = |d| >= s ? s sign(d) : d", "dy g(t - p)"},
};

/* ------------------------------------------------------------ ctc_alpha
 *
 * The forward (alpha) recursion of the CTC loss (nn_ctc_loss), in log
 * space, over a batch: e [T,N,L] the emissions (log_probs[t, n, l'_s] of
 * the extended labels l'), skip [N,L] (i32, 1 where the step from s - 2 is
 * allowed), a [N,L] the start (nn_ctc_loss's: 0 at s = 0, NEG elsewhere),
 * out [T+1,N,L] with
 *   y_0 = a
 *   y_{t+1}(s) = lse(c(s)) + e_t(s),
 *   c(s) = (y_t(s), y_t(s-1), skip(s) ? y_t(s-2) : NEG)
 * (a missing candidate, s - 1 < 0 or s - 2 < 0, is NEG = -1e30), and
 * y_{t+1}(s) = NEG, a constant, where every candidate is below NEG/2: a
 * state no path reaches (NaN stays NaN). Backward: with the weights
 * w_j(s) = exp(c_j(s) - lse(c(s))) (logsumexp's),
 *   r_T = dy_T,  de_t = r_{t+1} (0 at an unreached state),
 *   r_t(s) = dy_t(s) + sum_j r_{t+1}(s+j) w_j(s+j) (reached states),
 *   da = r_0
 * one pass back over the rows in the plain backward; with create_graph the
 * same recursion made of ops (the candidates from out's rows; in float64
 * for float32), so every order exists. Float32 is otherwise computed in
 * float, as PyTorch's ctc_loss. */

#define CTC_NEG (-1e30)
/* below it the weights are exp(c - y) with y = m + log(sum) rounded, as
 * the composite's logsumexp had them (where y's rounding drops log(sum),
 * a state no path reaches, they are not the softmax: 1 for each of three
 * equal candidates); above it the same weights as exp(c - m) / sum */
#define CTC_FAR (-1e4)

static ad_status ctc_alpha_shape(const ad_call *c) {
  const ad_tensor *e = c->in[0], *k = c->in[1];
  char a[64], b[64];
  if (e->dtype != AD_F32 && e->dtype != AD_F64)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: emissions %s are %s; a float dtype is needed",
                        c->name, ad_shape_str(e, a, sizeof a), ad_dtype_name(e->dtype));
  if (k->dtype != AD_I32)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: skip mask %s is %s; it must be i32", c->name,
                        ad_shape_str(k, a, sizeof a), ad_dtype_name(k->dtype));
  const ad_tensor *a0 = c->in[2];
  char d[64];
  if (e->ndim != 3 || k->ndim != 2 || k->shape[0] != e->shape[1] || k->shape[1] != e->shape[2] ||
      a0->ndim != 2 || a0->shape[0] != e->shape[1] || a0->shape[1] != e->shape[2])
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: emissions %s, skip mask %s and start %s: need [T,N,L], [N,L] and "
                        "[N,L]",
                        c->name, ad_shape_str(e, a, sizeof a), ad_shape_str(k, b, sizeof b),
                        ad_shape_str(a0, d, sizeof d));
  if (a0->dtype != e->dtype)
    return ad_set_error(c->ctx, AD_ERR_DTYPE, "%s: start %s is %s, emissions %s", c->name,
                        ad_shape_str(a0, a, sizeof a), ad_dtype_name(a0->dtype),
                        ad_dtype_name(e->dtype));
  c->out->dtype = e->dtype;
  c->out->ndim = 3;
  c->out->shape[0] = e->shape[0] + 1;
  c->out->shape[1] = e->shape[1];
  c->out->shape[2] = e->shape[2];
  return AD_OK;
}

/* exp(d) for d <= 0, 0 below where it underflows to 0 anyway (without
 * libm's slow underflow path: a candidate of -1e30 is common) */
#define CTC_EXP(TY, EXP, d)                                                                        \
  ((d) == 0 ? (TY)1 : (d) < (sizeof(TY) == 4 ? (TY)-104 : (TY)-746) ? (TY)0 : EXP(d))

/* a state no path reaches: its candidates all about NEG (none NaN) */
#define CTC_GONE(TY, m, sum) ((m) < (TY)(CTC_NEG / 2) && (sum) == (sum))

/* One row of candidates at s: c[0..2], their max m and sum of exp(c - m). */
#define CTC_CANDS(TY, EXP, a, sk, s, c, m, sum)                                                    \
  do {                                                                                             \
    c[0] = a[s];                                                                                   \
    c[1] = s >= 1 ? a[s - 1] : (TY)CTC_NEG;                                                        \
    c[2] = s >= 2 && sk[s] ? a[s - 2] : (TY)CTC_NEG;                                               \
    m = c[0] > c[1] ? c[0] : c[1];                                                                 \
    if (c[2] > m) m = c[2];                                                                        \
    sum = 0;                                                                                       \
    for (int k_ = 0; k_ < 3; k_++) sum += CTC_EXP(TY, EXP, c[k_] - m);                             \
  } while (0)

#define CTC_FWD(TY, EXP, LOG)                                                                      \
  static void ctc_fwd_##TY(const TY *e, const int32_t *skip, const TY *a0, TY *out, int64_t T,     \
                           int64_t N, int64_t L) {                                                 \
    memcpy(out, a0, (size_t)(N * L) * sizeof(TY));                                                 \
    for (int64_t t = 0; t < T; t++)                                                                \
      for (int64_t n = 0; n < N; n++) {                                                            \
        const TY *a = out + (t * N + n) * L, *et = e + (t * N + n) * L;                            \
        const int32_t *sk = skip + n * L;                                                          \
        TY *o = out + ((t + 1) * N + n) * L;                                                       \
        for (int64_t s = 0; s < L; s++) {                                                          \
          TY cd[3], m, sum;                                                                        \
          CTC_CANDS(TY, EXP, a, sk, s, cd, m, sum);                                                \
          if (CTC_GONE(TY, m, sum))                                                                \
            o[s] = (TY)CTC_NEG + (et[s] - et[s]); /* NaN kept */                                   \
          else                                                                                     \
            o[s] = (isinf(m) ? m : m + LOG(sum)) + et[s];                                          \
        }                                                                                          \
      }                                                                                            \
  }

/* dy [T+1,N,L] -> de [T,N,L]; adj [2,L] scratch */
#define CTC_BWD(TY, EXP, LOG)                                                                      \
  static void ctc_bwd_##TY(const TY *out, const int32_t *skip, const TY *dy, TY *de, TY *da0,      \
                           TY *adj, int64_t T, int64_t N, int64_t L) {                             \
    for (int64_t n = 0; n < N; n++) {                                                              \
      const int32_t *sk = skip + n * L;                                                            \
      TY *A = adj, *B = adj + L; /* A: adjoint of row t + 1, B: of row t */                        \
      for (int64_t s = 0; s < L; s++) A[s] = dy[(T * N + n) * L + s];                              \
      for (int64_t t = T - 1; t >= 0; t--) {                                                       \
        const TY *a = out + (t * N + n) * L, *g = dy + (t * N + n) * L;                            \
        TY *d = de + (t * N + n) * L;                                                              \
        for (int64_t s = 0; s < L; s++) B[s] = g[s];                                               \
        for (int64_t s = 0; s < L; s++) {                                                          \
          TY cd[3], m, sum;                                                                        \
          CTC_CANDS(TY, EXP, a, sk, s, cd, m, sum);                                                \
          d[s] = A[s];                                                                             \
          if (CTC_GONE(TY, m, sum)) { /* a constant: no gradient */                                \
            d[s] = 0;                                                                              \
            continue;                                                                              \
          }                                                                                        \
          TY r = A[s] / sum;                                                                       \
          if (m < (TY)CTC_FAR) { /* logsumexp's exp(c - y), y rounded as its output */             \
            TY y = m + LOG(sum);                                                                   \
            r = A[s], m = y;                                                                       \
          }                                                                                        \
          B[s] += r * CTC_EXP(TY, EXP, cd[0] - m);                                                 \
          if (s >= 1) B[s - 1] += r * CTC_EXP(TY, EXP, cd[1] - m);                                 \
          if (s >= 2 && sk[s]) B[s - 2] += r * CTC_EXP(TY, EXP, cd[2] - m);                        \
        }                                                                                          \
        TY *x = A;                                                                                 \
        A = B, B = x;                                                                              \
      }                                                                                            \
      memcpy(da0 + n * L, A, (size_t)L * sizeof(TY));                                              \
    }                                                                                              \
  }

CTC_FWD(float, expf, logf)
CTC_FWD(double, exp, log)
CTC_BWD(float, expf, logf)
CTC_BWD(double, exp, log)

static void ctc_alpha_fwd(const ad_call *c) {
  const ad_tensor *e = c->in[0];
  int64_t T = e->shape[0], N = e->shape[1], L = e->shape[2];
  if (e->dtype == AD_F32)
    ctc_fwd_float(e->data, c->in[1]->data, c->in[2]->data, c->out->data, T, N, L);
  else
    ctc_fwd_double(e->data, c->in[1]->data, c->in[2]->data, c->out->data, T, N, L);
}

/* The backward made of ops (create_graph): the recursion above, step by
 * step, the candidates' softmax from out's rows. */
static ad_status ctc_alpha_bwd_ops(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *e = c->in[0], *out = c->out, *dy = c->gout;
  ad_dtype dt = AD_F64, t32 = e->dtype; /* float64 for float32, as batch_norm's */
  out = ad_cast(ctx, out, dt), dy = ad_cast(ctx, dy, dt);
  int64_t T = e->shape[0], N = e->shape[1], L = e->shape[2], nl[2] = {N, L}, nl1[3] = {N, L, 1};
  int64_t n2[2] = {N, 2};
  ad_tensor **de = ad_arena_alloc(ctx, (size_t)T * sizeof *de);
  ad_tensor *skip = ad_tmp_new(ctx, dt, 2, nl), *neg = ad_scalar(ctx, dt, CTC_NEG);
  /* the constants on the tape (ad_full / ad_zeros would be persistent,
   * one pair more per recorded backward until the context is freed) */
  ad_tensor *shift = ad_tmp_full(ctx, dt, 2, n2, CTC_NEG), *zero = ad_tmp_full(ctx, dt, 2, n2, 0.0);
  ad_tensor *zero1 = ad_scalar(ctx, dt, 0.0);
  if (!out || !dy || !de || !skip || !neg || !shift || !zero || !zero1) return ad_last_status(ctx);
  const int32_t *sk = c->in[1]->data;
  for (int64_t i = 0; i < N * L; i++) ad_tensor_set(skip, i, sk[i] != 0 && i % L >= 2);
  /* live[t] = 1 where y_{t+1} is reached (not the constant NEG) */
  ad_tensor *live = ad_tmp_new(ctx, dt, 3, e->shape);
  if (!live) return ad_last_status(ctx);
  for (int64_t t = 0; t < T; t++)
    for (int64_t i = 0; i < N * L; i++) {
      int64_t s = i % L, r = t * N * L + i;
      double cd[3] = {ad_tensor_get(out, r), s >= 1 ? ad_tensor_get(out, r - 1) : CTC_NEG,
                      s >= 2 && sk[i] ? ad_tensor_get(out, r - 2) : CTC_NEG};
      double m = fmax(fmax(cd[0], cd[1]), cd[2]);
      bool nan = isnan(cd[0]) || isnan(cd[1]) || isnan(cd[2]) || isinf(m);
      ad_tensor_set(live, r, nan || !(m < CTC_NEG / 2));
    }
  /* the rows of out and dy, each split once (narrowing each row from the
   * whole would make the second order's gradient O(T^2)) */
  ad_tensor **ro = ad_arena_alloc(ctx, 2 * (size_t)(T + 1) * sizeof *ro),
            **rd = ro ? ro + T + 1 : NULL;
  if (!ro || ad_unstack(ctx, out, 0, ro) != AD_OK || ad_unstack(ctx, dy, 0, rd) != AD_OK)
    return ad_last_status(ctx);
  ad_tensor *A = rd[T];
  for (int64_t t = T - 1; t >= 0; t--) {
    A = ad_where(ctx, ad_reshape(ctx, ad_narrow(ctx, live, 0, t, 1), 2, nl), A,
                 zero1); /* a constant */
    de[t] = A;
    ad_tensor *a = ro[t];
    ad_tensor *p = ad_concat(ctx, 2, (ad_tensor *[]){shift, a}, 1);
    ad_tensor *a2 = ad_where(ctx, skip, ad_narrow(ctx, p, 1, 0, L), neg);
    ad_tensor *cd = ad_stack(ctx, 3, (ad_tensor *[]){a, ad_narrow(ctx, p, 1, 1, L), a2}, 2);
    ad_tensor *w = ad_exp(ctx, ad_sub(ctx, cd, ad_logsumexp(ctx, cd, 2, true)));
    ad_tensor *b = ad_mul(ctx, w, ad_reshape(ctx, A, 3, nl1));
    ad_tensor *g = rd[t];
    ad_tensor *acc = ad_add(ctx, g, ad_reshape(ctx, ad_narrow(ctx, b, 2, 0, 1), 2, nl));
    for (int64_t k = 1; k <= 2 && k < L; k++) { /* b_k at s lands on s - k */
      ad_tensor *bk = ad_reshape(ctx, ad_narrow(ctx, b, 2, k, 1), 2, nl);
      ad_tensor *z = ad_narrow(ctx, zero, 1, 0, k);
      acc = ad_add(ctx, acc,
                   ad_concat(ctx, 2, (ad_tensor *[]){ad_narrow(ctx, bk, 1, k, L - k), z}, 1));
    }
    if (!acc) return ad_last_status(ctx);
    A = acc;
  }
  /* no frames: e [0, N, L] gets an empty gradient (a stack needs a row) */
  ad_status st = AD_OK;
  if (c->needs[0])
    st = ad_call_set_grad(
        c, 0, T ? ad_cast(ctx, ad_stack(ctx, (int)T, de, 0), t32) : ad_zeros_like(ctx, e));
  return st == AD_OK && c->needs[2] ? ad_call_set_grad(c, 2, ad_cast(ctx, A, t32)) : st;
}

static ad_status ctc_alpha_bwd(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  if (!c->needs[0] && !c->needs[2]) return AD_OK;
  if (ctx->grad_enabled) return ctc_alpha_bwd_ops(c);
  const ad_tensor *e = c->in[0];
  int64_t T = e->shape[0], N = e->shape[1], L = e->shape[2], two_l = 2 * L;
  ad_tensor *de = ad_tmp_like(ctx, e), *da0 = ad_tmp_like(ctx, c->in[2]);
  ad_tensor *adj = ad_tmp_new(ctx, e->dtype, 1, &two_l);
  if (!de || !da0 || !adj) return ad_last_status(ctx);
  if (e->dtype == AD_F32)
    ctc_bwd_float(c->out->data, c->in[1]->data, c->gout->data, de->data, da0->data, adj->data, T, N,
                  L);
  else
    ctc_bwd_double(c->out->data, c->in[1]->data, c->gout->data, de->data, da0->data, adj->data, T,
                   N, L);
  ad_status st = c->needs[0] ? ad_call_set_grad(c, 0, de) : AD_OK;
  return st == AD_OK && c->needs[2] ? ad_call_set_grad(c, 2, da0) : st;
}

ad_tensor *ad_ctc_alpha(ad_ctx *ctx, ad_tensor *e, ad_tensor *skip, ad_tensor *start) {
  ad_tensor *in[3] = {e, skip, start};
  return ad_op_apply(ctx, AD_OP_CTC_ALPHA, 3, in, NULL);
}

/* e [4,2,5] with skips on some odd states, one sample's left out; [3,1,1]
 * (an empty target); [6,3,7]; each with a finite start, so that every
 * state is reached (a start of -1e30, nn_ctc_loss's, leaves the outputs
 * about -1e30, where central differences see nothing) */
static int ctc_alpha_sample(const ad_sample_call *s) {
  static const int64_t e0[3] = {4, 2, 5}, e1[3] = {3, 1, 1}, e2[3] = {6, 3, 7};
  const int64_t *es = s->variant == 0 ? e0 : s->variant == 1 ? e1 : e2;
  if (s->variant > 2) return 0;
  s->in[0] = ad_sample_tensor(s, 3, es, -3, 0, true);
  s->in[1] = ad_zeros(s->ctx, AD_I32, 2, es + 1);
  s->in[2] = ad_sample_tensor(s, 2, es + 1, -4, 0, true);
  if (!s->in[0] || !s->in[1] || !s->in[2]) return -1;
  int32_t *k = s->in[1]->data;
  for (int64_t i = 0; i < es[1] * es[2]; i++) k[i] = i % es[2] % 2 == 1 && i % 3 != 0;
  return 3;
}

const ad_op_def ad_def_ctc_alpha = {
    .name = "ctc_alpha",
    .arity = 3,
    .shape = ctc_alpha_shape,
    .forward = ctc_alpha_fwd,
    .backward = ctc_alpha_bwd,
    .sample = ctc_alpha_sample,
    .math = "y_0 = a, y_{t+1}(s) = lse(c(s)) + e_t(s), c(s) = (y_t(s), y_t(s-1), k(s) ? "
            "y_t(s-2) : NEG), NEG = -1e30 (also for s-1, s-2 < 0); y_{t+1}(s) = NEG where every "
            "candidate is below NEG/2 (unreached)",
    .inputs = {"e", "k", "a"},
    .grads = {"r_{t+1} (0 where y_{t+1} is unreached), r_T = dy_T, r_t(s) = dy_t(s) + sum_j "
              "r_{t+1}(s+j) exp(c_j(s+j) - lse(c(s+j)))",
              NULL, "r_0"},
};
