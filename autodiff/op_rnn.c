/* op_rnn.c: fused recurrent cells, one op per step instead of about
 * fifteen. The gate pre-activations are computed outside (matmul and add),
 * so only the elementwise part of a step is fused:
 *
 *   lstm_cell(a [N, 4H], c [N, H]) = [h' | c' | i f g o | tanh(c')] [N, 7H]
 *     [i f g o] = a's column blocks through sigmoid (i, f, o) and tanh (g)
 *     c' = f c + i g;  h' = o tanh(c')
 *   gru_cell(a [N, 3H], b [N, 3H], h [N, H]) = [h' | r z n] [N, 4H]
 *     (a = x W_ih^T + b_ih, b = h W_hh^T + b_hh; [r z n] blocks)
 *     r = sigmoid(a_r + b_r), z = sigmoid(a_z + b_z), n = tanh(a_n + r b_n)
 *     h' = (h - n) z + n
 *
 * The outputs after h' (and c') are the activations the backward needs,
 * saved so that it computes no exp or tanh; they are outputs like the
 * others (a gradient sent to them is honoured).
 *
 * Backward: in a plain backward (no create_graph) one loop per row writes
 * every input's gradient (lstm_bwd_row, gru_bwd_row). When the backward is itself recorded
 * (create_graph: gradgradcheck, Hessian-vector products) the same formulas
 * are built from the engine's ops (narrow, sigmoid, tanh, mul,
 * sigmoid_backward, tanh_backward, concat), so the gradient differentiates
 * to any order. Both are tested against each other and against the cell
 * composed of ops. */
#include "kernels/kernels.h"
#include "ops.h"

#include <math.h>
#include <string.h>

#include "vexp.h"

/* float64 sigmoid as the sigmoid op computes it (stable on both sides), so
 * that the fused and the composed cell agree to the last bits where they
 * can */
static inline double sig_d(double x) VEXP_INLINE;
static inline double sig_d(double x) { return sigmoid_d(x); } /* vexp.h */

/* What one parallel row loop of a cell reads and writes. */
typedef struct cell_job {
  const void *a, *b, *s; /* lstm: a, -, c; gru: a, b, h */
  const void *y, *dy;    /* backward: the output and its gradient */
  void *out, *ga, *gb, *gs;
  int64_t H;
} cell_job;

/* Rows per range of the parallel loops: about 16k elements of work (H < 1
 * is refused by the shape rules; the guard keeps this a total function). */
static int64_t cell_grain(int64_t H) { return H >= 16384 ? 1 : H < 1 ? 16384 : 16384 / H; }

/* The row loops, written once per element type: a function per row whose
 * arrays are restrict parameters (so that GCC vectorizes it), and the
 * range loop of ad_parallel_for over rows. */
#define DEFINE_CELL_LOOPS(T, SFX, SIG, TANH)                                                       \
  CELL_ROW void lstm_fwd_row_##SFX(int64_t H, const T *restrict a, const T *restrict c,            \
                                   T *restrict h, T *restrict cn, T *restrict act,                 \
                                   T *restrict t) {                                                \
    for (int64_t k = 0; k < H; k++) {                                                              \
      T i = SIG(a[k]), f = SIG(a[H + k]), g = TANH(a[2 * H + k]), o = SIG(a[3 * H + k]);           \
      T fc = f * c[k], ig = i * g;                                                                 \
      cn[k] = fc + ig;                                                                             \
      t[k] = TANH(cn[k]);                                                                          \
      h[k] = o * t[k];                                                                             \
      act[k] = i, act[H + k] = f, act[2 * H + k] = g, act[3 * H + k] = o;                          \
    }                                                                                              \
  }                                                                                                \
  CELL_CLONES static void lstm_fwd_##SFX(void *ud, int64_t r0, int64_t r1) {                       \
    const cell_job *j = ud;                                                                        \
    int64_t H = j->H;                                                                              \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      T *y = (T *)j->out + r * 7 * H;                                                              \
      lstm_fwd_row_##SFX(H, (const T *)j->a + r * 4 * H, (const T *)j->s + r * H, y, y + H,        \
                         y + 2 * H, y + 6 * H);                                                    \
    }                                                                                              \
  }                                                                                                \
  CELL_ROW void lstm_bwd_row_##SFX(int64_t H, const T *restrict c, const T *restrict act,          \
                                   const T *restrict tt, const T *restrict dh,                     \
                                   const T *restrict dcn, const T *restrict dact,                  \
                                   const T *restrict dt, T *restrict ga, T *restrict gc) {         \
    for (int64_t k = 0; k < H; k++) {                                                              \
      T i = act[k], f = act[H + k], g = act[2 * H + k], o = act[3 * H + k], t = tt[k];             \
      T dc = dcn[k] + (dh[k] * o + dt[k]) * (1 - t * t);                                           \
      ga[k] = (dc * g + dact[k]) * i * (1 - i);                                                    \
      ga[H + k] = (dc * c[k] + dact[H + k]) * f * (1 - f);                                         \
      ga[2 * H + k] = (dc * i + dact[2 * H + k]) * (1 - g * g);                                    \
      ga[3 * H + k] = (dh[k] * t + dact[3 * H + k]) * o * (1 - o);                                 \
      gc[k] = dc * f;                                                                              \
    }                                                                                              \
  }                                                                                                \
  CELL_CLONES static void lstm_bwd_##SFX(void *ud, int64_t r0, int64_t r1) {                       \
    const cell_job *j = ud;                                                                        \
    int64_t H = j->H;                                                                              \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      const T *y = (const T *)j->y + r * 7 * H, *dy = (const T *)j->dy + r * 7 * H;                \
      lstm_bwd_row_##SFX(H, (const T *)j->s + r * H, y + 2 * H, y + 6 * H, dy, dy + H, dy + 2 * H, \
                         dy + 6 * H, (T *)j->ga + r * 4 * H, (T *)j->gs + r * H);                  \
    }                                                                                              \
  }                                                                                                \
  CELL_ROW void gru_fwd_row_##SFX(int64_t H, const T *restrict a, const T *restrict b,             \
                                  const T *restrict h, T *restrict y, T *restrict act) {           \
    for (int64_t k = 0; k < H; k++) {                                                              \
      T rr = SIG(a[k] + b[k]), z = SIG(a[H + k] + b[H + k]);                                       \
      T rb = rr * b[2 * H + k];                                                                    \
      T n = TANH(a[2 * H + k] + rb);                                                               \
      T d = (h[k] - n) * z;                                                                        \
      y[k] = d + n;                                                                                \
      act[k] = rr, act[H + k] = z, act[2 * H + k] = n;                                             \
    }                                                                                              \
  }                                                                                                \
  CELL_CLONES static void gru_fwd_##SFX(void *ud, int64_t r0, int64_t r1) {                        \
    const cell_job *j = ud;                                                                        \
    int64_t H = j->H;                                                                              \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      T *y = (T *)j->out + r * 4 * H;                                                              \
      gru_fwd_row_##SFX(H, (const T *)j->a + r * 3 * H, (const T *)j->b + r * 3 * H,               \
                        (const T *)j->s + r * H, y, y + H);                                        \
    }                                                                                              \
  }                                                                                                \
  CELL_ROW void gru_bwd_row_##SFX(int64_t H, const T *restrict b, const T *restrict act,           \
                                  const T *restrict h, const T *restrict dy,                       \
                                  const T *restrict dact, T *restrict ga, T *restrict gb,          \
                                  T *restrict gh) {                                                \
    for (int64_t k = 0; k < H; k++) {                                                              \
      T rr = act[k], z = act[H + k], n = act[2 * H + k];                                           \
      T dn = (dy[k] - dy[k] * z + dact[2 * H + k]) * (1 - n * n);                                  \
      T dr = (dn * b[2 * H + k] + dact[k]) * rr * (1 - rr);                                        \
      T dz = (dy[k] * (h[k] - n) + dact[H + k]) * z * (1 - z);                                     \
      ga[k] = dr, ga[H + k] = dz, ga[2 * H + k] = dn;                                              \
      gb[k] = dr, gb[H + k] = dz, gb[2 * H + k] = dn * rr;                                         \
      gh[k] = dy[k] * z;                                                                           \
    }                                                                                              \
  }                                                                                                \
  CELL_CLONES static void gru_bwd_##SFX(void *ud, int64_t r0, int64_t r1) {                        \
    const cell_job *j = ud;                                                                        \
    int64_t H = j->H;                                                                              \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      const T *y = (const T *)j->y + r * 4 * H, *dy = (const T *)j->dy + r * 4 * H;                \
      gru_bwd_row_##SFX(H, (const T *)j->b + r * 3 * H, y + H, (const T *)j->s + r * H, dy,        \
                        dy + H, (T *)j->ga + r * 3 * H, (T *)j->gb + r * 3 * H,                    \
                        (T *)j->gs + r * H);                                                       \
    }                                                                                              \
  }

DEFINE_CELL_LOOPS(float, f32, sig_v, tanh_v)
DEFINE_CELL_LOOPS(double, f64, sig_d, tanh_d)

/* Runs a row loop over N rows on the library's threads. */
static void cell_run(ad_range_fn f32, ad_range_fn f64, ad_dtype dt, int64_t N, cell_job *j) {
  ad_parallel_for(N, cell_grain(j->H), dt == AD_F32 ? f32 : f64, j);
}

/* A new temporary for input k's gradient (made even when k needs none, so
 * that the row loops have no branch and vectorize); false on OOM. */
static bool grad_buf(const ad_call *c, int k, void **data, ad_tensor **t) {
  const ad_tensor *x = c->in[k];
  if (!(*t = ad_tmp_new(c->ctx, x->dtype, x->ndim, x->shape))) return false;
  *data = (*t)->data;
  return true;
}

/* Checks that in[k] is [N, m * H] for k < n_gates, with the state in[n-1]
 * [N, H]; sets *H. Records an error naming the shapes. */
static ad_status cell_shape(const ad_call *c, int m, int64_t *H) {
  ad_status st = ad_check_float_same(c->ctx, c->name, c->n, c->in);
  if (st != AD_OK) return st;
  const ad_tensor *s = c->in[c->n - 1];
  bool ok = s->ndim == 2;
  for (int k = 0; ok && k < c->n - 1; k++)
    ok = c->in[k]->ndim == 2 && c->in[k]->shape[0] == s->shape[0] &&
         c->in[k]->shape[1] == m * s->shape[1];
  if (!ok) {
    char a[64], b[64], d[64];
    if (c->n == 2)
      return ad_set_error(c->ctx, AD_ERR_SHAPE,
                          "%s: gates %s and state %s must be [N, %d H] and [N, H]", c->name,
                          ad_shape_str(c->in[0], a, sizeof a), ad_shape_str(s, b, sizeof b), m);
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: gates %s and %s and state %s must be [N, %d H], [N, %d H] and [N, H]",
                        c->name, ad_shape_str(c->in[0], a, sizeof a),
                        ad_shape_str(c->in[1], b, sizeof b), ad_shape_str(s, d, sizeof d), m, m);
  }
  if (s->shape[1] < 1) { /* as seq_shape: an empty state is no cell */
    char a[64], b[64];
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: gates %s and state %s: the state size H is 0; it must be >= 1",
                        c->name, ad_shape_str(c->in[0], a, sizeof a), ad_shape_str(s, b, sizeof b));
  }
  *H = s->shape[1];
  return AD_OK;
}

/* ------------------------------------------------------------ lstm_cell */

static ad_status lstm_cell_shape(const ad_call *c) {
  int64_t H;
  ad_status st = cell_shape(c, 4, &H);
  if (st != AD_OK) return st;
  c->out->dtype = c->in[0]->dtype;
  c->out->ndim = 2;
  c->out->shape[0] = c->in[0]->shape[0];
  c->out->shape[1] = 7 * H;
  return AD_OK;
}

static void lstm_cell_fwd(const ad_call *c) {
  cell_job j = {
      .a = c->in[0]->data, .s = c->in[1]->data, .out = c->out->data, .H = c->in[1]->shape[1]};
  cell_run(lstm_fwd_f32, lstm_fwd_f64, c->out->dtype, c->out->shape[0], &j);
}

/* The gradients built from ops, for a recorded backward: the kernel's
 * formulas, reading the saved activations from y. */
static ad_status lstm_cell_bwd_ops(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *cp = c->in[1], *y = c->out, *dy = c->gout;
  int64_t H = cp->shape[1];
  ad_tensor *i = ad_narrow(ctx, y, 1, 2 * H, H), *f = ad_narrow(ctx, y, 1, 3 * H, H);
  ad_tensor *g = ad_narrow(ctx, y, 1, 4 * H, H), *o = ad_narrow(ctx, y, 1, 5 * H, H);
  ad_tensor *t = ad_narrow(ctx, y, 1, 6 * H, H);
  ad_tensor *dh = ad_narrow(ctx, dy, 1, 0, H);
  ad_tensor *dt = ad_add(ctx, ad_mul(ctx, dh, o), ad_narrow(ctx, dy, 1, 6 * H, H));
  ad_tensor *dc =
      ad_add(ctx, ad_narrow(ctx, dy, 1, H, H), ad_apply2(ctx, AD_OP_TANH_BACKWARD, dt, t, NULL));
  ad_status st = AD_OK;
  if (c->needs[0]) {
    ad_tensor *u[4] = {ad_mul(ctx, dc, g), ad_mul(ctx, dc, cp), ad_mul(ctx, dc, i),
                       ad_mul(ctx, dh, t)};
    ad_tensor *act[4] = {i, f, g, o}, *ga[4];
    for (int k = 0; k < 4; k++) {
      ad_tensor *d = ad_add(ctx, u[k], ad_narrow(ctx, dy, 1, (2 + k) * H, H));
      ga[k] =
          ad_apply2(ctx, k == 2 ? AD_OP_TANH_BACKWARD : AD_OP_SIGMOID_BACKWARD, d, act[k], NULL);
    }
    bool ok = ga[0] && ga[1] && ga[2] && ga[3];
    st = ad_call_set_grad(c, 0, ok ? ad_concat(ctx, 4, ga, 1) : NULL);
  }
  if (st == AD_OK && c->needs[1]) st = ad_call_set_grad(c, 1, ad_mul(ctx, dc, f));
  return st;
}

static ad_status lstm_cell_bwd(const ad_call *c) {
  if (c->ctx->grad_enabled) return lstm_cell_bwd_ops(c);
  cell_job j = {.a = c->in[0]->data,
                .s = c->in[1]->data,
                .y = c->out->data,
                .dy = c->gout->data,
                .H = c->in[1]->shape[1]};
  ad_tensor *ga, *gc;
  if (!grad_buf(c, 0, &j.ga, &ga) || !grad_buf(c, 1, &j.gs, &gc)) return ad_last_status(c->ctx);
  cell_run(lstm_bwd_f32, lstm_bwd_f64, c->out->dtype, c->out->shape[0], &j);
  if (c->needs[0]) c->gin[0] = ga;
  if (c->needs[1]) c->gin[1] = gc;
  return AD_OK;
}

ad_tensor *ad_lstm_cell(ad_ctx *ctx, ad_tensor *gates, ad_tensor *c) {
  return ad_apply2(ctx, AD_OP_LSTM_CELL, gates, c, NULL);
}

/* N = 3, H = 2 and N = 1, H = 5: pre-activations in [-2, 2] */
static int lstm_cell_sample(const ad_sample_call *s) {
  if (s->variant > 1) return 0;
  int64_t n = s->variant ? 1 : 3, h = s->variant ? 5 : 2;
  int64_t sa[2] = {n, 4 * h}, sc[2] = {n, h};
  s->in[0] = ad_sample_tensor(s, 2, sa, -2, 2, true);
  s->in[1] = ad_sample_tensor(s, 2, sc, -2, 2, true);
  return s->in[0] && s->in[1] ? 2 : -1;
}

const ad_op_def ad_def_lstm_cell = {
    .name = "lstm_cell",
    .arity = 2,
    .shape = lstm_cell_shape,
    .forward = lstm_cell_fwd,
    .backward = lstm_cell_bwd,
    .sample = lstm_cell_sample,
    .math = "y = [h' | c' | i f g o | t]: i f g o = sig, sig, tanh, sig of a's four blocks, "
            "c' = f c + i g, t = tanh(c'), h' = o t",
    .inputs = {"a", "c"},
    .grads = {"[(e g + dy_i) i (1 - i) | (e c + dy_f) f (1 - f) | (e i + dy_g) (1 - g^2) | "
              "(dy_h t + dy_o) o (1 - o)], e = dy_c + (dy_h o + dy_t) (1 - t^2), "
              "dy = [dy_h | dy_c | dy_i dy_f dy_g dy_o | dy_t]",
              "e f"},
};

/* ------------------------------------------------------------- gru_cell */

static ad_status gru_cell_shape(const ad_call *c) {
  int64_t H;
  ad_status st = cell_shape(c, 3, &H);
  if (st != AD_OK) return st;
  c->out->dtype = c->in[0]->dtype;
  c->out->ndim = 2;
  c->out->shape[0] = c->in[0]->shape[0];
  c->out->shape[1] = 4 * H;
  return AD_OK;
}

static void gru_cell_fwd(const ad_call *c) {
  cell_job j = {.a = c->in[0]->data,
                .b = c->in[1]->data,
                .s = c->in[2]->data,
                .out = c->out->data,
                .H = c->in[2]->shape[1]};
  cell_run(gru_fwd_f32, gru_fwd_f64, c->out->dtype, c->out->shape[0], &j);
}

static ad_status gru_cell_bwd_ops(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *b = c->in[1], *h = c->in[2], *y = c->out, *g = c->gout;
  int64_t H = h->shape[1];
  ad_tensor *r = ad_narrow(ctx, y, 1, H, H), *z = ad_narrow(ctx, y, 1, 2 * H, H);
  ad_tensor *n = ad_narrow(ctx, y, 1, 3 * H, H), *bn = ad_narrow(ctx, b, 1, 2 * H, H);
  ad_tensor *dy = ad_narrow(ctx, g, 1, 0, H);
  ad_tensor *dn = ad_apply2(
      ctx, AD_OP_TANH_BACKWARD,
      ad_add(ctx, ad_sub(ctx, dy, ad_mul(ctx, dy, z)), ad_narrow(ctx, g, 1, 3 * H, H)), n, NULL);
  ad_tensor *dr = ad_apply2(ctx, AD_OP_SIGMOID_BACKWARD,
                            ad_add(ctx, ad_mul(ctx, dn, bn), ad_narrow(ctx, g, 1, H, H)), r, NULL);
  ad_tensor *dz = ad_apply2(
      ctx, AD_OP_SIGMOID_BACKWARD,
      ad_add(ctx, ad_mul(ctx, dy, ad_sub(ctx, h, n)), ad_narrow(ctx, g, 1, 2 * H, H)), z, NULL);
  ad_status st = AD_OK;
  bool ok = dn && dr && dz;
  if (c->needs[0]) {
    ad_tensor *ga[3] = {dr, dz, dn};
    st = ad_call_set_grad(c, 0, ok ? ad_concat(ctx, 3, ga, 1) : NULL);
  }
  if (st == AD_OK && c->needs[1]) {
    ad_tensor *gb[3] = {dr, dz, ad_mul(ctx, dn, r)};
    st = ad_call_set_grad(c, 1, ok && gb[2] ? ad_concat(ctx, 3, gb, 1) : NULL);
  }
  if (st == AD_OK && c->needs[2]) st = ad_call_set_grad(c, 2, ad_mul(ctx, dy, z));
  return st;
}

static ad_status gru_cell_bwd(const ad_call *c) {
  if (c->ctx->grad_enabled) return gru_cell_bwd_ops(c);
  cell_job j = {.a = c->in[0]->data,
                .b = c->in[1]->data,
                .s = c->in[2]->data,
                .y = c->out->data,
                .dy = c->gout->data,
                .H = c->in[2]->shape[1]};
  ad_tensor *ga, *gb, *gh;
  if (!grad_buf(c, 0, &j.ga, &ga) || !grad_buf(c, 1, &j.gb, &gb) || !grad_buf(c, 2, &j.gs, &gh))
    return ad_last_status(c->ctx);
  cell_run(gru_bwd_f32, gru_bwd_f64, c->out->dtype, c->out->shape[0], &j);
  if (c->needs[0]) c->gin[0] = ga;
  if (c->needs[1]) c->gin[1] = gb;
  if (c->needs[2]) c->gin[2] = gh;
  return AD_OK;
}

ad_tensor *ad_gru_cell(ad_ctx *ctx, ad_tensor *a, ad_tensor *b, ad_tensor *h) {
  ad_tensor *in[3] = {a, b, h};
  return ad_op_apply(ctx, AD_OP_GRU_CELL, 3, in, NULL);
}

static int gru_cell_sample(const ad_sample_call *s) {
  if (s->variant > 1) return 0;
  int64_t n = s->variant ? 1 : 3, h = s->variant ? 5 : 2;
  int64_t sa[2] = {n, 3 * h}, sh[2] = {n, h};
  s->in[0] = ad_sample_tensor(s, 2, sa, -2, 2, true);
  s->in[1] = ad_sample_tensor(s, 2, sa, -2, 2, true);
  s->in[2] = ad_sample_tensor(s, 2, sh, -2, 2, true);
  return s->in[0] && s->in[1] && s->in[2] ? 3 : -1;
}

const ad_op_def ad_def_gru_cell = {
    .name = "gru_cell",
    .arity = 3,
    .shape = gru_cell_shape,
    .forward = gru_cell_fwd,
    .backward = gru_cell_bwd,
    .sample = gru_cell_sample,
    .math = "y = [h' | r z n]: r = sig(a_r + b_r), z = sig(a_z + b_z), n = tanh(a_n + r b_n), "
            "h' = (h - n) z + n",
    .inputs = {"a", "b", "h"},
    .grads = {"[e_r | e_z | e_n], e_n = (dy_h (1 - z) + dy_n) (1 - n^2), "
              "e_r = (e_n b_n + dy_r) r (1 - r), e_z = (dy_h (h - n) + dy_z) z (1 - z), "
              "dy = [dy_h | dy_r dy_z dy_n]",
              "[e_r | e_z | e_n r]", "dy_h z"},
};

/* ------------------------------------------------- whole-sequence ops
 *
 * What nn_rnn_forward runs by default: the recurrence of all T steps in one
 * op, so that the products that do not depend on the previous step are one
 * large GEMM each (the input projection before the op, the weight
 * gradients and the input gradient after it) and only h W_hh^T and its
 * gradient run per step. The input projection x W_ih^T is made outside
 * with matmul, for all steps at once; the LSTM's bias (b_ih + b_hh) is
 * added in the op's rows (no pass over xp for it), and its gradient summed
 * there step by step; the GRU's two (bx = b_ih, b = b_hh) alike.
 *
 *   lstm_seq(xp [T, N, 4H], w [4H, H], b [4H], h0 [N, H], c0 [N, H], mask [T, N]?)
 *     = Y [T, N, 7H], Y_t = lstm_cell((xp_t + b) + h_{t-1} w^T, c_{t-1})
 *   gru_seq(xp [T, N, 3H], w [3H, H], bx [3H], b [3H], h0 [N, H], mask [T, N]?)
 *     = Y [T, N, 5H], Y_t = [h_t | r z n | b_n], with b_t = h_{t-1} w^T + b,
 *     [h_t | r z n] = gru_cell(xp_t + bx, b_t, h_{t-1}) and b_n b_t's last block
 *
 * With the attribute axis = 1, xp (xa) and Y are batch-major, [N, T, .]:
 * a batch_first layer's input product and output need no transposition.
 * h_{t-1}, c_{t-1} are Y_{t-1}'s first blocks (h0, c0 at t = 0). Where
 * mask[t, n] is 0 (a sequence that has ended), row n of Y_t is the state
 * kept, [h_{t-1} | c_{t-1} | 0 ...]: no gate is computed there, and no
 * gradient reaches that step's inputs. The activations saved in Y are
 * outputs like the others (a gradient sent to them is honoured), so the
 * ops' backward built from ops (create_graph) differentiates again.
 *
 * Backward, from the last step: the cell's rule per row (the functions of
 * lstm_cell and gru_cell), dh_{t-1} += dG_t w (the LSTM's db += dG_t's
 * rows, the GRU's dbx and db those of dA_t and dB_t); then dxp = dG of all
 * steps, dw = sum_t dG_t^T h_{t-1} as one product over all T N rows. */

/* Step t's first row in x ([T, N, K] with the time axis tax 0, [N, T, K]
 * with 1); *ld (if not NULL) the distance between its rows, in elements. */
static char *step_ptr(const ad_tensor *x, int tax, int64_t t, int64_t *ld) {
  int64_t K = x->shape[2], off = tax ? t * K : t * x->shape[1] * K;
  if (ld) *ld = tax ? x->shape[1] * K : K;
  return (char *)x->data + (size_t)off * ad_dsize(x->dtype);
}

/* Step t of such an x, as [N, K] (ops: a recorded backward). */
static ad_tensor *step_of(ad_ctx *ctx, ad_tensor *x, int tax, int64_t t) {
  int64_t s[2] = {x->shape[1 - tax], x->shape[2]};
  return ad_reshape(ctx, ad_narrow(ctx, x, tax, t, 1), 2, s);
}

/* Checks the sequence op's inputs: in[0] [T, N, m H] (or [N, T, m H]), w
 * [m H, H], the bias and states, the mask [T, N]; sets *T, *N, *H. */
static ad_status seq_shape(const ad_call *c, int m, int nstate, int nbias, int64_t *T, int64_t *N,
                           int64_t *H) {
  ad_status st = ad_check_float_same(c->ctx, c->name, c->n, c->in);
  if (st != AD_OK) return st;
  int tax = c->attrs->axis;
  if (tax != 0 && tax != 1)
    return ad_set_error(c->ctx, AD_ERR_ARG,
                        "%s: time axis %d; it must be 0 ([T, N, .]) or 1 ([N, T, .])", c->name,
                        tax);
  const ad_tensor *x = c->in[0], *w = c->in[1];
  int s0 = 2 + nbias; /* the first state */
  const ad_tensor *mask = c->n > s0 + nstate ? c->in[s0 + nstate] : NULL;
  /* the first input that does not fit the others, its name and its form */
  const ad_tensor *bad = NULL;
  const char *name = "", *form = "";
  const char *xform =
      tax ? (m == 4 ? "[N, T, 4 H]" : "[N, T, 3 H]") : (m == 4 ? "[T, N, 4 H]" : "[T, N, 3 H]");
  if (w->ndim != 2 || w->shape[0] != m * w->shape[1])
    bad = w, name = "weight", form = m == 4 ? "[4 H, H]" : "[3 H, H]";
  else if (x->ndim != 3 || x->shape[2] != w->shape[0])
    bad = x, name = "inputs", form = xform;
  for (int k = 2; !bad && k < s0; k++) {
    const ad_tensor *b = c->in[k];
    if (b->ndim != 1 || b->shape[0] != w->shape[0])
      bad = b, name = m == 4 ? "b" : k == 2 ? "b_ih" : "b_hh", form = m == 4 ? "[4 H]" : "[3 H]";
  }
  for (int k = 0; !bad && k < nstate; k++) {
    const ad_tensor *st0 = c->in[s0 + k];
    if (st0->ndim != 2 || st0->shape[0] != x->shape[1 - tax] || st0->shape[1] != w->shape[1])
      bad = st0, name = k ? "c0" : "h0", form = "[N, H]";
  }
  if (!bad && mask &&
      (mask->ndim != 2 || mask->shape[0] != x->shape[tax] || mask->shape[1] != x->shape[1 - tax]))
    bad = mask, name = "mask", form = "[T, N]";
  if (bad) {
    char sb[64], sx[64], sw[64];
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: %s %s must be %s for inputs %s (%s) and weight %s ([%d H, H])",
                        c->name, name, ad_shape_str(bad, sb, sizeof sb), form,
                        ad_shape_str(x, sx, sizeof sx), xform, ad_shape_str(w, sw, sizeof sw), m);
  }
  if (x->shape[0] == 0 || x->shape[1] == 0 || w->shape[1] == 0) {
    char sx[64], sw[64];
    return ad_set_error(c->ctx, AD_ERR_SHAPE,
                        "%s: inputs %s, weight %s: an empty sequence, batch or state (T, N and H "
                        "must be >= 1)",
                        c->name, ad_shape_str(x, sx, sizeof sx), ad_shape_str(w, sw, sizeof sw));
  }
  for (int64_t i = 0; mask && i < mask->size; i++) { /* 0 or 1: a fraction is no state */
    double v =
        mask->dtype == AD_F32 ? ((const float *)mask->data)[i] : ((const double *)mask->data)[i];
    if (v != 0 && v != 1) {
      char at[64];
      return ad_set_error(c->ctx, AD_ERR_ARG,
                          "%s: mask element %s is %g; it must be 1 (the step is taken) or 0 (the "
                          "sequence has ended)",
                          c->name, ad_coords_str(mask, i, at, sizeof at), v);
    }
  }
  *T = x->shape[tax], *N = x->shape[1 - tax], *H = w->shape[1];
  return AD_OK;
}

/* Sets the output's shape: [T, N, K H] or [N, T, K H], like in[0]. */
static void seq_out(const ad_call *c, int K, int64_t H) {
  c->out->dtype = c->in[0]->dtype;
  c->out->ndim = 3;
  c->out->shape[0] = c->in[0]->shape[0], c->out->shape[1] = c->in[0]->shape[1];
  c->out->shape[2] = K * H;
}

/* One step's rows for the parallel loops of the sequence ops. Row r of Y_t
 * (and dY_t) is at y + r ldy, of xa_t, dG_t, db_t at + r ldg. */
typedef struct seq_job {
  const void *hp, *cp; /* the previous state's rows: row r at r ldp */
  int64_t ldp, ldy, ldg;
  void *y;          /* Y_t (forward), read in the backward */
  const void *mask; /* Y_t's row flags, NULL: all live */
  const void *x;    /* xp_t (lstm), xa_t (gru): row r at r ldg */
  const void *bias; /* b (gru: b_hh) */
  const void *bx;   /* gru: b_ih, added to xa */
  const void *dy;   /* backward: dY_t, row r at r lddy; only its h block when hdy */
  int64_t lddy;
  bool hdy;
  void *dg, *db; /* backward: dG_t (lstm: dxp_t; gru: dxa_t), gru: db_t */
  void *dh, *dc; /* backward: the states' gradients carried, [N, H] */
  int64_t H;
} seq_job;

#define DEFINE_SEQ_LOOPS(T, SFX, SIG, TANH)                                                        \
  /* g: h_{t-1} w^T in (the gates' pre-activations less x + bb), the activations out */            \
  CELL_ROW void lstm_seq_row_##SFX(int64_t H, const T *restrict x, const T *restrict bb,           \
                                   T *restrict g, const T *restrict c, T *restrict h,              \
                                   T *restrict cn, T *restrict t) {                                \
    for (int64_t k = 0; k < H; k++) {                                                              \
      T i = SIG(g[k] + (x[k] + bb[k])), f = SIG(g[H + k] + (x[H + k] + bb[H + k]));                \
      T gg = TANH(g[2 * H + k] + (x[2 * H + k] + bb[2 * H + k]));                                  \
      T o = SIG(g[3 * H + k] + (x[3 * H + k] + bb[3 * H + k]));                                    \
      T fc = f * c[k], ig = i * gg;                                                                \
      cn[k] = fc + ig;                                                                             \
      t[k] = TANH(cn[k]);                                                                          \
      h[k] = o * t[k];                                                                             \
      g[k] = i, g[H + k] = f, g[2 * H + k] = gg, g[3 * H + k] = o;                                 \
    }                                                                                              \
  }                                                                                                \
  CELL_CLONES static void lstm_seq_fwd_##SFX(void *ud, int64_t r0, int64_t r1) {                   \
    const seq_job *j = ud;                                                                         \
    int64_t H = j->H;                                                                              \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      T *y = (T *)j->y + r * j->ldy;                                                               \
      const T *hp = (const T *)j->hp + r * j->ldp, *cp = (const T *)j->cp + r * j->ldp;            \
      if (j->mask && ((const T *)j->mask)[r] == 0) {                                               \
        memcpy(y, hp, (size_t)H * sizeof(T));                                                      \
        memcpy(y + H, cp, (size_t)H * sizeof(T));                                                  \
        memset(y + 2 * H, 0, (size_t)(5 * H) * sizeof(T));                                         \
        continue;                                                                                  \
      }                                                                                            \
      lstm_seq_row_##SFX(H, (const T *)j->x + r * j->ldg, (const T *)j->bias, y + 2 * H, cp, y,    \
                         y + H, y + 6 * H);                                                        \
    }                                                                                              \
  }                                                                                                \
  /* lstm_bwd_row with dh_t = dy's h block + dh and dc_t = dy's c block + dc (the gradients        \
   * carried from step t+1) read in place; dc becomes dc_{t-1}, dh 0 for the product */            \
  /* (FULL 0: dy is the h block alone, the others 0) */                                            \
  CELL_ROW void lstm_seq_bwd_row_##SFX(                                                            \
      const int FULL, int64_t H, const T *restrict c, const T *restrict act, const T *restrict tt, \
      const T *restrict dy, T *restrict dh, T *restrict dc, T *restrict ga) {                      \
    for (int64_t k = 0; k < H; k++) {                                                              \
      T i = act[k], f = act[H + k], g = act[2 * H + k], o = act[3 * H + k], t = tt[k];             \
      T th = dy[k] + dh[k], tc = FULL ? dy[H + k] + dc[k] : dc[k];                                 \
      T dt = th * o;                                                                               \
      if (FULL) dt = dt + dy[6 * H + k];                                                           \
      T dcc = tc + dt * (1 - t * t);                                                               \
      T ui = dcc * g, uf = dcc * c[k], ug = dcc * i, uo = th * t;                                  \
      if (FULL)                                                                                    \
        ui = ui + dy[2 * H + k], uf = uf + dy[3 * H + k], ug = ug + dy[4 * H + k],                 \
        uo = uo + dy[5 * H + k];                                                                   \
      ga[k] = ui * i * (1 - i);                                                                    \
      ga[H + k] = uf * f * (1 - f);                                                                \
      ga[2 * H + k] = ug * (1 - g * g);                                                            \
      ga[3 * H + k] = uo * o * (1 - o);                                                            \
      dc[k] = dcc * f;                                                                             \
      dh[k] = 0;                                                                                   \
    }                                                                                              \
  }                                                                                                \
  /* dG_t's rows and dc_{t-1}; dh_{t-1} is left 0 for the product, or the pass-through */          \
  CELL_CLONES static void lstm_seq_bwd_##SFX(void *ud, int64_t r0, int64_t r1) {                   \
    const seq_job *j = ud;                                                                         \
    int64_t H = j->H;                                                                              \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      const T *y = (const T *)j->y + r * j->ldy, *dy = (const T *)j->dy + r * j->lddy;             \
      T *dh = (T *)j->dh + r * H, *dc = (T *)j->dc + r * H, *dg = (T *)j->dg + r * j->ldg;         \
      const T *cp = (const T *)j->cp + r * j->ldp;                                                 \
      if (j->mask && ((const T *)j->mask)[r] == 0) {                                               \
        for (int64_t k = 0; k < H; k++) dh[k] += dy[k];                                            \
        if (!j->hdy)                                                                               \
          for (int64_t k = 0; k < H; k++) dc[k] += dy[H + k];                                      \
        memset(dg, 0, (size_t)(4 * H) * sizeof(T));                                                \
        continue;                                                                                  \
      }                                                                                            \
      if (j->hdy)                                                                                  \
        lstm_seq_bwd_row_##SFX(0, H, cp, y + 2 * H, y + 6 * H, dy, dh, dc, dg);                    \
      else                                                                                         \
        lstm_seq_bwd_row_##SFX(1, H, cp, y + 2 * H, y + 6 * H, dy, dh, dc, dg);                    \
    }                                                                                              \
  }                                                                                                \
  /* g: h_{t-1} w^T in (b_t less the bias bb), r z n out; bn: b_t's last block kept */             \
  CELL_ROW void gru_seq_row_##SFX(int64_t H, const T *restrict x, const T *restrict bx,            \
                                  const T *restrict bb, T *restrict g, const T *restrict h,        \
                                  T *restrict y, T *restrict bn) {                                 \
    for (int64_t k = 0; k < H; k++) {                                                              \
      T ar = x[k] + bx[k], az = x[H + k] + bx[H + k], an = x[2 * H + k] + bx[2 * H + k];           \
      T rr = SIG(ar + (g[k] + bb[k])), z = SIG(az + (g[H + k] + bb[H + k]));                       \
      T b = g[2 * H + k] + bb[2 * H + k], rb = rr * b;                                             \
      T n = TANH(an + rb);                                                                         \
      T d = (h[k] - n) * z;                                                                        \
      y[k] = d + n;                                                                                \
      bn[k] = b, g[k] = rr, g[H + k] = z, g[2 * H + k] = n;                                        \
    }                                                                                              \
  }                                                                                                \
  CELL_CLONES static void gru_seq_fwd_##SFX(void *ud, int64_t r0, int64_t r1) {                    \
    const seq_job *j = ud;                                                                         \
    int64_t H = j->H;                                                                              \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      T *y = (T *)j->y + r * j->ldy;                                                               \
      const T *hp = (const T *)j->hp + r * j->ldp;                                                 \
      if (j->mask && ((const T *)j->mask)[r] == 0) {                                               \
        memcpy(y, hp, (size_t)H * sizeof(T));                                                      \
        memset(y + H, 0, (size_t)(4 * H) * sizeof(T));                                             \
        continue;                                                                                  \
      }                                                                                            \
      gru_seq_row_##SFX(H, (const T *)j->x + r * j->ldg, (const T *)j->bx, (const T *)j->bias,     \
                        y + H, hp, y, y + 4 * H);                                                  \
    }                                                                                              \
  }                                                                                                \
  /* dh holds the gradient carried from step t+1 (dy's h block is added here) and becomes the      \
   * part of dh_{t-1} that is not the product */                                                   \
  CELL_ROW void gru_seq_bwd_row_##SFX(                                                             \
      const int FULL, int64_t H, const T *restrict act, const T *restrict bn, const T *restrict h, \
      const T *restrict dy, T *restrict ga, T *restrict gb, T *restrict dh) {                      \
    for (int64_t k = 0; k < H; k++) {                                                              \
      T rr = act[k], z = act[H + k], n = act[2 * H + k], d = dy[k] + dh[k];                        \
      T un = d - d * z, ur = 0, uz = d * (h[k] - n);                                               \
      if (FULL) un = un + dy[3 * H + k];                                                           \
      T dn = un * (1 - n * n);                                                                     \
      ur = dn * bn[k];                                                                             \
      if (FULL) ur = ur + dy[H + k], uz = uz + dy[2 * H + k];                                      \
      T dr = ur * rr * (1 - rr);                                                                   \
      T dz = uz * z * (1 - z);                                                                     \
      ga[k] = dr, ga[H + k] = dz, ga[2 * H + k] = dn;                                              \
      gb[k] = dr, gb[H + k] = dz, gb[2 * H + k] = FULL ? dn * rr + dy[4 * H + k] : dn * rr;        \
      dh[k] = d * z;                                                                               \
    }                                                                                              \
  }                                                                                                \
  /* dxa_t's and db_t's rows, and the part of dh_{t-1} that is not the product */                  \
  CELL_CLONES static void gru_seq_bwd_##SFX(void *ud, int64_t r0, int64_t r1) {                    \
    const seq_job *j = ud;                                                                         \
    int64_t H = j->H;                                                                              \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      const T *y = (const T *)j->y + r * j->ldy, *dy = (const T *)j->dy + r * j->lddy;             \
      T *dh = (T *)j->dh + r * H, *dg = (T *)j->dg + r * j->ldg, *db = (T *)j->db + r * j->ldg;    \
      if (j->mask && ((const T *)j->mask)[r] == 0) {                                               \
        for (int64_t k = 0; k < H; k++) dh[k] += dy[k];                                            \
        memset(dg, 0, (size_t)(3 * H) * sizeof(T));                                                \
        memset(db, 0, (size_t)(3 * H) * sizeof(T));                                                \
        continue;                                                                                  \
      }                                                                                            \
      const T *hp = (const T *)j->hp + r * j->ldp;                                                 \
      if (j->hdy)                                                                                  \
        gru_seq_bwd_row_##SFX(0, H, y + H, y + 4 * H, hp, dy, dg, db, dh);                         \
      else                                                                                         \
        gru_seq_bwd_row_##SFX(1, H, y + H, y + 4 * H, hp, dy, dg, db, dh);                         \
    }                                                                                              \
  }

DEFINE_SEQ_LOOPS(float, f32, sig_v, tanh_v)
DEFINE_SEQ_LOOPS(double, f64, sig_d, tanh_d)

/* Rows of one step on the library's threads. */
static void seq_run(ad_range_fn f32, ad_range_fn f64, ad_dtype dt, int64_t N, seq_job *j) {
  ad_parallel_for(N, j->H >= 2048 ? 1 : 2048 / j->H, dt == AD_F32 ? f32 : f64, j);
}

/* The per-step product C = A op(w) + beta C (A m x k, lda apart) with w
 * packed once for all steps (pk), or through ad_gemm_split when it could
 * not be (pk NULL): the same bits either way. */
static void step_gemm(ad_dtype dt, const ad_gemm_packed *pk, bool tw, int64_t m, int64_t k,
                      int64_t n, const void *a, int64_t lda, const void *w, int64_t ldw,
                      double beta, void *c, int64_t ldc) {
  if (pk)
    ad_gemm_packed_run(pk, false, m, a, lda, w, ldw, beta, c, ldc);
  else
    ad_gemm_split(dt, false, tw, m, n, k, a, lda, w, ldw, beta, c, ldc);
}

/* Step t's row flags of a mask [T, N]. */
static const void *mask_ptr(const ad_tensor *m, int64_t t) {
  return m ? (const char *)m->data + (size_t)(t * m->shape[1]) * ad_dsize(m->dtype) : NULL;
}

/* A whole sequence on the library's threads. Row r of every step depends
 * only on row r of the step before (the product h_{t-1} w^T, dG_t w, and
 * the cells' rows), so with W packed once (pk) the batch's rows are cut
 * into blocks of whole SEQ_GROUP-row groups (at least 8 rows each) and
 * each block runs all T steps on one thread: one parallel job for the
 * sequence instead of two per step, whose waits the recurrence's small
 * steps could not hide. A row's values do not depend on the rows computed
 * beside it, so the bits are those of one block. Without pk, or with one
 * block, the steps run one after the other, each product and each step's
 * rows split over the threads.
 *
 * The biases' gradients (the sum of every step's gate-gradient rows) are
 * summed per group of SEQ_GROUP rows while each step's rows are in the
 * cache: group g's partial sum part[g] adds its rows step by step (t from
 * T - 1 down, rows in order), and the bias gradient is then the groups'
 * partial sums added in group order. A group never straddles two blocks,
 * so that order, and the bits, are the same on any number of threads. */
#define SEQ_GROUP 8
typedef struct seq_steps seq_steps;
struct seq_steps {
  const ad_call *c;
  const ad_gemm_packed *pk;
  int64_t T, N, H, parts;
  void (*steps)(const seq_steps *s, int64_t r0, int64_t r1); /* all steps of rows r0..r1 */
  ad_tensor *dY, *dG, *dB, *dh, *dc; /* the backward's: dY, the gates', the states' */
  ad_tensor *dbias[2];               /* the biases': lstm b's; gru b_ih's, b_hh's */
  void *part[2];                     /* their groups' partial sums, [groups, len] */
  bool hdy;
};

/* The first row of block p of parts: whole groups, as evenly as they go. */
static int64_t seq_block_row(const seq_steps *s, int64_t p) {
  int64_t groups = (s->N + SEQ_GROUP - 1) / SEQ_GROUP, r = SEQ_GROUP * (groups * p / s->parts);
  return r < s->N ? r : s->N;
}

static void seq_steps_range(void *ud, int64_t p0, int64_t p1) {
  const seq_steps *s = ud;
  for (int64_t p = p0; p < p1; p++) s->steps(s, seq_block_row(s, p), seq_block_row(s, p + 1));
}

static void seq_steps_run(seq_steps *s) {
  int threads = ad_num_threads();
  int64_t most = s->N / 8; /* blocks of at least 8 rows (the last group may be short) */
  s->parts = !s->pk ? 1 : threads < most ? threads : most;
  if (s->parts < 1) s->parts = 1;
  if (s->parts == 1)
    s->steps(s, 0, s->N);
  else
    ad_parallel_for(s->parts, 1, seq_steps_range, s);
}

/* A sequence op's forward: w_hh (in[1], [gates H, H]) packed once, then
 * steps over the row blocks. */
static void seq_fwd_run(const ad_call *c, int gates,
                        void (*steps)(const seq_steps *s, int64_t r0, int64_t r1)) {
  const ad_tensor *x = c->in[0], *w = c->in[1];
  int tax = c->attrs->axis;
  int64_t T = x->shape[tax], N = x->shape[1 - tax], H = w->shape[1];
  seq_steps s = {.c = c, .T = T, .N = N, .H = H, .steps = steps};
  ad_gemm_packed *pk = ad_gemm_pack(x->dtype, true, N, H, gates * H, w->data, H);
  s.pk = pk;
  seq_steps_run(&s);
  ad_gemm_packed_free(pk);
}

/* One step's product C = A op(w) + beta C for rows r0..r1 (a block's, on
 * this thread) or, with one block, for all rows (step_gemm: split over the
 * threads). */
static void seq_product(const seq_steps *s, int64_t r0, int64_t r1, bool tw, int64_t k, int64_t n,
                        const void *a, int64_t lda, const void *w, double beta, void *c,
                        int64_t ldc) {
  if (s->parts > 1)
    ad_gemm_packed_rows(s->pk, false, r0, r1, a, lda, w, s->H, beta, c, ldc);
  else
    step_gemm(s->c->out->dtype, s->pk, tw, s->N, k, n, a, lda, w, s->H, beta, c, ldc);
}

/* One step's cell rows r0..r1 (a block's), or all of them over the threads. */
static void seq_rows(const seq_steps *s, ad_range_fn f32, ad_range_fn f64, seq_job *j, int64_t r0,
                     int64_t r1) {
  ad_dtype dt = s->c->out->dtype;
  if (s->parts > 1)
    (dt == AD_F32 ? f32 : f64)(j, r0, r1);
  else
    seq_run(f32, f64, dt, s->N, j);
}

typedef struct hp_job {
  int tax;
  const ad_tensor *y, *h0;
  ad_tensor *hp;
} hp_job;

/* hp's steps t0..t1: h0, then y's h block one step back. */
static void hp_steps(void *ud, int64_t t0, int64_t t1) {
  const hp_job *j = ud;
  size_t es = ad_dsize(j->hp->dtype);
  int64_t N = j->hp->shape[1 - j->tax], H = j->h0->shape[1];
  for (int64_t t = t0; t < t1; t++) {
    int64_t ldy = H, ldh;
    const char *src = t ? step_ptr(j->y, j->tax, t - 1, &ldy) : (const char *)j->h0->data;
    char *dst = step_ptr(j->hp, j->tax, t, &ldh);
    for (int64_t n = 0; n < N; n++)
      memcpy(dst + (size_t)(n * ldh) * es, src + (size_t)(n * ldy) * es, (size_t)H * es);
  }
}

/* dw = sum_t dG_t^T h_{t-1} (dG like xp, y like Y: the time axis tax, ly
 * elements per row of y), as one product over all rows: the h_{t-1} are
 * gathered into hp first (h0 at t = 0), laid out as dG's rows. */
static void seq_weight_grad(int tax, const ad_tensor *dG, const ad_tensor *y, const ad_tensor *h0,
                            ad_tensor *hp, ad_tensor *dw) {
  ad_dtype dt = dG->dtype;
  int64_t T = dG->shape[tax], N = dG->shape[1 - tax], GH = dG->shape[2], H = h0->shape[1];
  /* the copy on the threads in runs of steps of at least 256 KB (N x H a step) */
  int64_t step_bytes = N * H * (int64_t)ad_dsize(dt);
  hp_job j = {tax, y, h0, hp};
  ad_parallel_for(T, step_bytes >= 262144 ? 1 : 262144 / (step_bytes > 0 ? step_bytes : 1),
                  hp_steps, &j);
  ad_gemm_split(dt, true, false, GH, H, T * N, dG->data, GH, hp->data, H, 0.0, dw->data, H);
}

/* hp's shape for seq_weight_grad: dG's with H columns. */
static ad_tensor *seq_hp_new(ad_ctx *ctx, const ad_tensor *dG, int64_t H) {
  int64_t s[3] = {dG->shape[0], dG->shape[1], H};
  return ad_tmp_new(ctx, dG->dtype, 3, s);
}

/* The h_{t-1} of every step as ops, laid out as Y's steps: h0 and Y's
 * first H columns of steps 0..T-2, joined along the time axis. */
static ad_tensor *seq_hp_ops(ad_ctx *ctx, ad_tensor *Y, ad_tensor *h0, int tax, int64_t H) {
  int64_t T = Y->shape[tax], s3[3] = {1, h0->shape[0], H};
  if (tax) s3[0] = h0->shape[0], s3[1] = 1;
  ad_tensor *parts[2] = {ad_reshape(ctx, h0, 3, s3), NULL};
  if (T == 1) return parts[0];
  parts[1] = ad_narrow(ctx, ad_narrow(ctx, Y, tax, 0, T - 1), 2, 0, H);
  return parts[0] && parts[1] ? ad_concat(ctx, 2, parts, tax) : NULL;
}

/* The plain backward's output gradient: the whole dY, or (tape.c:
 * lead_pass) only its first len columns, the rest being zero; *hdy is set
 * when they are the h block, which the row loops read alone; another
 * block is padded to dY's shape here. NULL on OOM. */
static ad_tensor *seq_gout(const ad_call *c, int64_t H, bool *hdy) {
  ad_tensor *g = c->gout;
  int64_t len = g->shape[2], K = c->out->shape[2];
  *hdy = len == H && len < K;
  return len == K || *hdy ? g : ad_pad(c->ctx, g, 2, 0, K - len);
}

/* db += the sum of n rows of len elements, ld apart (one after another, in
 * order: the same bits on any number of threads). */
CELL_CLONES static void seq_sum_rows(ad_dtype dt, const void *rows, int64_t ld, int64_t n,
                                     int64_t len, void *db) {
  for (int64_t r = 0; r < n; r++) {
    if (dt == AD_F32) {
      const float *restrict x = (const float *)rows + r * ld;
      float *restrict d = db;
      for (int64_t k = 0; k < len; k++) d[k] += x[k];
    } else {
      const double *restrict x = (const double *)rows + r * ld;
      double *restrict d = db;
      for (int64_t k = 0; k < len; k++) d[k] += x[k];
    }
  }
}

/* Bias k's groups' partial sums += rows r0..r1 of one step (rows, ld
 * apart, len elements each): each row into its group's sum. */
static void seq_sum_groups(const seq_steps *s, int k, const void *rows, int64_t ld, int64_t r0,
                           int64_t r1, int64_t len) {
  ad_dtype dt = s->c->out->dtype;
  size_t es = ad_dsize(dt);
  for (int64_t r = r0; r < r1;) {
    int64_t g = r / SEQ_GROUP, e = (g + 1) * SEQ_GROUP < r1 ? (g + 1) * SEQ_GROUP : r1;
    seq_sum_rows(dt, (const char *)rows + (size_t)(r * ld) * es, ld, e - r, len,
                 (char *)s->part[k] + (size_t)(g * len) * es);
    r = e;
  }
}

/* Zeroed partial sums of len elements for every group of bias k (arena):
 * false when out of memory. */
static bool seq_parts_new(ad_ctx *ctx, seq_steps *s, int k, int64_t len) {
  int64_t groups = (s->N + SEQ_GROUP - 1) / SEQ_GROUP;
  size_t bytes = (size_t)(groups * len) * ad_dsize(s->c->out->dtype);
  if (!(s->part[k] = ad_arena_alloc(ctx, bytes))) return false;
  memset(s->part[k], 0, bytes);
  return true;
}

/* Bias k's gradient (zeroed) += its groups' partial sums, in group order. */
static void seq_parts_sum(const seq_steps *s, int k, int64_t len) {
  if (!s->part[k]) return;
  int64_t groups = (s->N + SEQ_GROUP - 1) / SEQ_GROUP;
  seq_sum_rows(s->c->out->dtype, s->part[k], len, groups, len, s->dbias[k]->data);
}

/* -------------------------------------------------------------- lstm_seq */

static ad_status lstm_seq_shape(const ad_call *c) {
  int64_t T, N, H;
  ad_status st = seq_shape(c, 4, 2, 1, &T, &N, &H);
  if (st == AD_OK) seq_out(c, 7, H);
  return st;
}

static void lstm_fwd_steps(const seq_steps *s, int64_t r0, int64_t r1) {
  const ad_call *c = s->c;
  const ad_tensor *xp = c->in[0], *w = c->in[1], *mask = c->n > 5 ? c->in[5] : NULL;
  int tax = c->attrs->axis;
  size_t es = ad_dsize(xp->dtype);
  int64_t H = s->H;
  for (int64_t t = 0; t < s->T; t++) {
    seq_job j = {.mask = mask_ptr(mask, t), .H = H};
    char *y = j.y = step_ptr(c->out, tax, t, &j.ldy);
    j.x = step_ptr(xp, tax, t, &j.ldg);
    j.bias = c->in[2]->data;
    j.hp = t ? step_ptr(c->out, tax, t - 1, NULL) : c->in[3]->data;
    j.cp = t ? (const char *)j.hp + (size_t)H * es : c->in[4]->data;
    j.ldp = t ? j.ldy : H;
    /* h_{t-1} w^T in Y_t's activation blocks; the rows add xp_t + b */
    seq_product(s, r0, r1, true, H, 4 * H, j.hp, j.ldp, w->data, 0.0, y + (size_t)(2 * H) * es,
                j.ldy);
    seq_rows(s, lstm_seq_fwd_f32, lstm_seq_fwd_f64, &j, r0, r1);
  }
}

static void lstm_seq_fwd(const ad_call *c) { seq_fwd_run(c, 4, lstm_fwd_steps); }

/* The gradients built from ops, for a recorded backward. */
static ad_status lstm_seq_bwd_ops(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *w = c->in[1], *h0 = c->in[3], *c0 = c->in[4], *mask = c->n > 5 ? c->in[5] : NULL;
  ad_tensor *Y = c->out, *dY = c->gout;
  int tax = c->attrs->axis;
  int64_t T = Y->shape[tax], N = Y->shape[1 - tax], H = w->shape[1], n1[2] = {N, 1};
  ad_tensor **dg = ad_arena_alloc(ctx, (size_t)T * sizeof *dg);
  ad_tensor *dh = NULL, *dc = NULL, *zero = ad_scalar(ctx, Y->dtype, 0.0);
  if (!dg || !zero) return ad_last_status(ctx);
  for (int64_t t = T - 1; t >= 0; t--) {
    ad_tensor *y = step_of(ctx, Y, tax, t), *dy = step_of(ctx, dY, tax, t);
    ad_tensor *cp = t ? ad_narrow(ctx, step_of(ctx, Y, tax, t - 1), 1, H, H) : c0;
    ad_tensor *i = ad_narrow(ctx, y, 1, 2 * H, H), *f = ad_narrow(ctx, y, 1, 3 * H, H);
    ad_tensor *g = ad_narrow(ctx, y, 1, 4 * H, H), *o = ad_narrow(ctx, y, 1, 5 * H, H);
    ad_tensor *tt = ad_narrow(ctx, y, 1, 6 * H, H);
    ad_tensor *dht = ad_narrow(ctx, dy, 1, 0, H), *dct = ad_narrow(ctx, dy, 1, H, H);
    if (dh) dht = ad_add(ctx, dht, dh), dct = ad_add(ctx, dct, dc);
    ad_tensor *dtt = ad_add(ctx, ad_mul(ctx, dht, o), ad_narrow(ctx, dy, 1, 6 * H, H));
    ad_tensor *dcc = ad_add(ctx, dct, ad_apply2(ctx, AD_OP_TANH_BACKWARD, dtt, tt, NULL));
    ad_tensor *u[4] = {ad_mul(ctx, dcc, g), ad_mul(ctx, dcc, cp), ad_mul(ctx, dcc, i),
                       ad_mul(ctx, dht, tt)};
    ad_tensor *act[4] = {i, f, g, o}, *ga[4];
    for (int k = 0; k < 4; k++) {
      ad_tensor *d = ad_add(ctx, u[k], ad_narrow(ctx, dy, 1, (2 + k) * H, H));
      ga[k] =
          ad_apply2(ctx, k == 2 ? AD_OP_TANH_BACKWARD : AD_OP_SIGMOID_BACKWARD, d, act[k], NULL);
    }
    ad_tensor *gt = ga[0] && ga[1] && ga[2] && ga[3] ? ad_concat(ctx, 4, ga, 1) : NULL;
    ad_tensor *gc = ad_mul(ctx, dcc, f), *pass = NULL;
    if (mask) { /* ended rows: no gate, the state's gradients pass through */
      ad_tensor *m = ad_reshape(ctx, ad_narrow(ctx, mask, 0, t, 1), 2, n1);
      gt = ad_where(ctx, m, gt, zero);
      gc = ad_where(ctx, m, gc, dct);
      pass = ad_where(ctx, m, zero, dht);
    }
    if (!gt || !gc || (mask && !pass)) return ad_last_status(ctx);
    dg[t] = gt;
    dh = ad_matmul(ctx, gt, w, false, false);
    if (mask) dh = ad_add(ctx, dh, pass);
    dc = gc;
    if (!dh) return ad_last_status(ctx);
  }
  ad_tensor *dG = ad_stack(ctx, (int)T, dg, tax);
  ad_status st = AD_OK;
  int64_t sh[2] = {T * N, H}, sg[2] = {T * N, 4 * H};
  if (c->needs[0]) st = ad_call_set_grad(c, 0, dG);
  if (st == AD_OK && c->needs[1]) {
    ad_tensor *hp = seq_hp_ops(ctx, Y, h0, tax, H);
    st = ad_call_set_grad(
        c, 1, ad_matmul(ctx, ad_reshape(ctx, dG, 2, sg), ad_reshape(ctx, hp, 2, sh), true, false));
  }
  if (st == AD_OK && c->needs[2])
    st = ad_call_set_grad(c, 2, ad_sum_axis(ctx, ad_reshape(ctx, dG, 2, sg), 0, false));
  if (st == AD_OK && c->needs[3]) st = ad_call_set_grad(c, 3, dh);
  if (st == AD_OK && c->needs[4]) st = ad_call_set_grad(c, 4, dc);
  return st;
}

static void lstm_bwd_steps(const seq_steps *s, int64_t r0, int64_t r1) {
  const ad_call *c = s->c;
  const ad_tensor *w = c->in[1], *mask = c->n > 5 ? c->in[5] : NULL;
  int tax = c->attrs->axis;
  ad_dtype dt = w->dtype;
  size_t es = ad_dsize(dt);
  int64_t H = s->H;
  for (int64_t t = s->T - 1; t >= 0; t--) {
    seq_job j = {
        .mask = mask_ptr(mask, t), .dh = s->dh->data, .dc = s->dc->data, .hdy = s->hdy, .H = H};
    j.y = step_ptr(c->out, tax, t, &j.ldy);
    j.dy = step_ptr(s->dY, tax, t, &j.lddy);
    j.dg = step_ptr(s->dG, tax, t, &j.ldg);
    j.cp = t ? step_ptr(c->out, tax, t - 1, NULL) + (size_t)H * es : c->in[4]->data;
    j.ldp = t ? j.ldy : H;
    seq_rows(s, lstm_seq_bwd_f32, lstm_seq_bwd_f64, &j, r0, r1);
    if (s->part[0]) /* db's groups += dG_t's rows, while they are in the cache */
      seq_sum_groups(s, 0, j.dg, j.ldg, r0, r1, 4 * H);
    if (t > 0 || c->needs[3]) /* dh_{t-1} += dG_t w */
      seq_product(s, r0, r1, false, 4 * H, H, j.dg, j.ldg, w->data, 1.0, s->dh->data, H);
  }
}

static ad_status lstm_seq_bwd(const ad_call *c) {
  if (c->ctx->grad_enabled) return lstm_seq_bwd_ops(c);
  ad_ctx *ctx = c->ctx;
  const ad_tensor *w = c->in[1], *h0 = c->in[3];
  int tax = c->attrs->axis;
  ad_dtype dt = w->dtype;
  size_t es = ad_dsize(dt);
  int64_t T = c->out->shape[tax], N = c->out->shape[1 - tax], H = w->shape[1], sN[2] = {N, H};
  ad_tensor *dG = ad_tmp_new(ctx, dt, 3, c->in[0]->shape);
  ad_tensor *dh = ad_tmp_new(ctx, dt, 2, sN), *dc = ad_tmp_new(ctx, dt, 2, sN);
  bool hdy;
  ad_tensor *dY = seq_gout(c, H, &hdy);
  if (!dG || !dh || !dc || !dY) return ad_last_status(ctx);
  ad_tensor *db = c->needs[2] ? ad_tmp_new(ctx, dt, 1, c->in[2]->shape) : NULL;
  if (c->needs[2] && !db) return ad_last_status(ctx);
  memset(dh->data, 0, (size_t)(N * H) * es);
  memset(dc->data, 0, (size_t)(N * H) * es);
  if (db) memset(db->data, 0, (size_t)(4 * H) * es);
  ad_gemm_packed *pk = ad_gemm_pack(dt, false, N, 4 * H, H, w->data, H);
  seq_steps s = {.c = c, .pk = pk, .T = T, .N = N, .H = H, .steps = lstm_bwd_steps};
  s.dY = dY, s.dG = dG, s.dh = dh, s.dc = dc, s.dbias[0] = db, s.hdy = hdy;
  if (db && !seq_parts_new(ctx, &s, 0, 4 * H)) {
    ad_gemm_packed_free(pk);
    return ad_last_status(ctx);
  }
  seq_steps_run(&s);
  ad_gemm_packed_free(pk);
  seq_parts_sum(&s, 0, 4 * H);
  if (c->needs[1]) {
    ad_tensor *dw = ad_tmp_new(ctx, dt, 2, w->shape), *hp = seq_hp_new(ctx, dG, H);
    if (!dw || !hp) return ad_last_status(ctx);
    seq_weight_grad(tax, dG, c->out, h0, hp, dw);
    c->gin[1] = dw;
  }
  if (c->needs[0]) c->gin[0] = dG;
  if (c->needs[2]) c->gin[2] = db;
  if (c->needs[3]) c->gin[3] = dh;
  if (c->needs[4]) c->gin[4] = dc;
  return AD_OK;
}

ad_tensor *ad_lstm_seq(ad_ctx *ctx, ad_tensor *xp, ad_tensor *w_hh, ad_tensor *b, ad_tensor *h0,
                       ad_tensor *c0, ad_tensor *mask, bool batch_first) {
  ad_tensor *in[6] = {xp, w_hh, b, h0, c0, mask};
  ad_attrs at = {.axis = batch_first ? 1 : 0};
  return ad_op_apply(ctx, AD_OP_LSTM_SEQ, mask ? 6 : 5, in, &at);
}

/* A [T, N] mask of 0/1 where sequence n has lengths[n] steps (a constant). */
static ad_tensor *sample_mask(const ad_sample_call *s, int64_t T, int64_t N,
                              const int64_t *lengths) {
  int64_t sm[2] = {T, N};
  ad_tensor *m = ad_sample_tensor(s, 2, sm, 0, 1, false);
  for (int64_t t = 0; m && t < T; t++)
    for (int64_t n = 0; n < N; n++) ad_tensor_set(m, t * N + n, lengths[n] > t);
  return m;
}

/* The sequence ops' gradcheck cases: T = 3, N = 2, H = 2 time-major; N = 3
 * with lengths 3, 1, 2, time-major and batch-major. in[k] for k < nx are
 * shaped by the table (the time and batch dims of in[0] set here), the
 * states [N, H]. */
static int seq_sample(const ad_sample_call *s, int G, int nbias) {
  if (s->variant > 2) return 0;
  int64_t T = 3, N = s->variant ? 3 : 2, H = 2, lengths[3] = {3, 1, 2};
  int tax = s->variant == 2;
  int64_t sx[3] = {T, N, G * H}, sw[2] = {G * H, H}, sb[1] = {G * H}, sh[2] = {N, H};
  if (tax) sx[0] = N, sx[1] = T;
  s->attrs->axis = tax;
  int k = 0;
  s->in[k++] = ad_sample_tensor(s, 3, sx, -2, 2, true);
  s->in[k++] = ad_sample_tensor(s, 2, sw, -1, 1, true);
  for (int b = 0; b < nbias; b++) s->in[k++] = ad_sample_tensor(s, 1, sb, -1, 1, true);
  s->in[k++] = ad_sample_tensor(s, 2, sh, -1, 1, true);
  if (G == 4) s->in[k++] = ad_sample_tensor(s, 2, sh, -1, 1, true);
  for (int i = 0; i < k; i++)
    if (!s->in[i]) return -1;
  if (!s->variant) return k;
  return (s->in[k] = sample_mask(s, T, N, lengths)) ? k + 1 : -1;
}

static int lstm_seq_sample(const ad_sample_call *s) { return seq_sample(s, 4, 1); }

const ad_op_def ad_def_lstm_seq = {
    .name = "lstm_seq",
    .arity = 6,
    .min_arity = 5,
    .attrs = AD_ATTRS_AXIS,
    .shape = lstm_seq_shape,
    .forward = lstm_seq_fwd,
    .backward = lstm_seq_bwd,
    .sample = lstm_seq_sample,
    .math = "Y_t = lstm_cell((xp_t + b) + h_{t-1} w^T, c_{t-1}) for t = 0..T-1 (the time axis: "
            "axis), "
            "h_{t-1} and c_{t-1} Y_{t-1}'s first blocks (h0, c0 at t = 0); where mask_t is 0, "
            "Y_t = [h_{t-1} | c_{t-1} | 0]",
    .inputs = {"xp", "w", "b", "h0", "c0", "mask"},
    .grads = {"dG_t: lstm_cell's rule per step from the last, with dh_t += dG_{t+1} w; "
              "dG_t = 0 where mask_t is 0 (dh_t, dc_t pass on to step t - 1)",
              "sum_t dG_t^T h_{t-1}", "sum_t dG_t's rows", "dh_{-1} of the rule",
              "dc_{-1} of the rule", NULL},
};

/* --------------------------------------------------------------- gru_seq */

static ad_status gru_seq_shape(const ad_call *c) {
  int64_t T, N, H;
  ad_status st = seq_shape(c, 3, 1, 2, &T, &N, &H);
  if (st == AD_OK) seq_out(c, 5, H);
  return st;
}

static void gru_fwd_steps(const seq_steps *s, int64_t r0, int64_t r1) {
  const ad_call *c = s->c;
  const ad_tensor *xa = c->in[0], *w = c->in[1], *bx = c->in[2], *b = c->in[3];
  const ad_tensor *mask = c->n > 5 ? c->in[5] : NULL;
  int tax = c->attrs->axis;
  size_t es = ad_dsize(xa->dtype);
  int64_t H = s->H;
  for (int64_t t = 0; t < s->T; t++) {
    seq_job j = {.mask = mask_ptr(mask, t), .H = H};
    char *y = j.y = step_ptr(c->out, tax, t, &j.ldy);
    j.x = step_ptr(xa, tax, t, &j.ldg);
    j.bias = b->data, j.bx = bx->data;
    j.hp = t ? step_ptr(c->out, tax, t - 1, NULL) : c->in[4]->data;
    j.ldp = t ? j.ldy : H;
    /* h_{t-1} w^T in Y_t's activation blocks; the rows add b, and b_ih to xp_t */
    seq_product(s, r0, r1, true, H, 3 * H, j.hp, j.ldp, w->data, 0.0, y + (size_t)H * es, j.ldy);
    seq_rows(s, gru_seq_fwd_f32, gru_seq_fwd_f64, &j, r0, r1);
  }
}

static void gru_seq_fwd(const ad_call *c) { seq_fwd_run(c, 3, gru_fwd_steps); }

static ad_status gru_seq_bwd_ops(const ad_call *c) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *w = c->in[1], *h0 = c->in[4], *mask = c->n > 5 ? c->in[5] : NULL;
  ad_tensor *Y = c->out, *dY = c->gout;
  int tax = c->attrs->axis;
  int64_t T = Y->shape[tax], N = Y->shape[1 - tax], H = w->shape[1], n1[2] = {N, 1};
  ad_tensor **da = ad_arena_alloc(ctx, (size_t)(2 * T) * sizeof *da), **db = da + T;
  ad_tensor *dh = NULL, *zero = ad_scalar(ctx, Y->dtype, 0.0);
  if (!da || !zero) return ad_last_status(ctx);
  for (int64_t t = T - 1; t >= 0; t--) {
    ad_tensor *y = step_of(ctx, Y, tax, t), *dy = step_of(ctx, dY, tax, t);
    ad_tensor *hp = t ? ad_narrow(ctx, step_of(ctx, Y, tax, t - 1), 1, 0, H) : h0;
    ad_tensor *r = ad_narrow(ctx, y, 1, H, H), *z = ad_narrow(ctx, y, 1, 2 * H, H);
    ad_tensor *n = ad_narrow(ctx, y, 1, 3 * H, H), *bn = ad_narrow(ctx, y, 1, 4 * H, H);
    ad_tensor *dht = ad_narrow(ctx, dy, 1, 0, H);
    if (dh) dht = ad_add(ctx, dht, dh);
    ad_tensor *dn = ad_apply2(
        ctx, AD_OP_TANH_BACKWARD,
        ad_add(ctx, ad_sub(ctx, dht, ad_mul(ctx, dht, z)), ad_narrow(ctx, dy, 1, 3 * H, H)), n,
        NULL);
    ad_tensor *dr =
        ad_apply2(ctx, AD_OP_SIGMOID_BACKWARD,
                  ad_add(ctx, ad_mul(ctx, dn, bn), ad_narrow(ctx, dy, 1, H, H)), r, NULL);
    ad_tensor *dz = ad_apply2(
        ctx, AD_OP_SIGMOID_BACKWARD,
        ad_add(ctx, ad_mul(ctx, dht, ad_sub(ctx, hp, n)), ad_narrow(ctx, dy, 1, 2 * H, H)), z,
        NULL);
    if (!dn || !dr || !dz) return ad_last_status(ctx);
    ad_tensor *ga[3] = {dr, dz, dn};
    ad_tensor *gb[3] = {dr, dz, ad_add(ctx, ad_mul(ctx, dn, r), ad_narrow(ctx, dy, 1, 4 * H, H))};
    ad_tensor *at = ad_concat(ctx, 3, ga, 1), *bt = gb[2] ? ad_concat(ctx, 3, gb, 1) : NULL;
    ad_tensor *part = ad_mul(ctx, dht, z);
    if (mask) {
      ad_tensor *m = ad_reshape(ctx, ad_narrow(ctx, mask, 0, t, 1), 2, n1);
      at = ad_where(ctx, m, at, zero);
      bt = ad_where(ctx, m, bt, zero);
      part = ad_where(ctx, m, part, dht);
    }
    if (!at || !bt || !part) return ad_last_status(ctx);
    da[t] = at, db[t] = bt;
    if (!(dh = ad_add(ctx, part, ad_matmul(ctx, bt, w, false, false)))) return ad_last_status(ctx);
  }
  ad_status st = AD_OK;
  ad_tensor *dA = NULL, *dB = NULL;
  int64_t sg[2] = {T * N, 3 * H};
  if (c->needs[0] || c->needs[2]) dA = ad_stack(ctx, (int)T, da, tax);
  if (c->needs[0]) st = ad_call_set_grad(c, 0, dA);
  if (st == AD_OK && c->needs[2])
    st = ad_call_set_grad(c, 2, ad_sum_axis(ctx, ad_reshape(ctx, dA, 2, sg), 0, false));
  if (st == AD_OK && (c->needs[1] || c->needs[3]))
    st =
        (dB = ad_reshape(ctx, ad_stack(ctx, (int)T, db, tax), 2, sg)) ? AD_OK : ad_last_status(ctx);
  if (st == AD_OK && c->needs[1]) {
    int64_t sh[2] = {T * N, H};
    ad_tensor *hp = seq_hp_ops(ctx, Y, h0, tax, H);
    st = ad_call_set_grad(c, 1, ad_matmul(ctx, dB, ad_reshape(ctx, hp, 2, sh), true, false));
  }
  if (st == AD_OK && c->needs[3]) st = ad_call_set_grad(c, 3, ad_sum_axis(ctx, dB, 0, false));
  if (st == AD_OK && c->needs[4]) st = ad_call_set_grad(c, 4, dh);
  return st;
}

static void gru_bwd_steps(const seq_steps *s, int64_t r0, int64_t r1) {
  const ad_call *c = s->c;
  const ad_tensor *w = c->in[1], *h0 = c->in[4], *mask = c->n > 5 ? c->in[5] : NULL;
  int tax = c->attrs->axis;
  int64_t H = s->H;
  for (int64_t t = s->T - 1; t >= 0; t--) {
    seq_job j = {.mask = mask_ptr(mask, t), .dh = s->dh->data, .hdy = s->hdy, .H = H};
    j.y = step_ptr(c->out, tax, t, &j.ldy);
    j.dy = step_ptr(s->dY, tax, t, &j.lddy);
    j.dg = step_ptr(s->dG, tax, t, &j.ldg);
    j.db = step_ptr(s->dB, tax, t, NULL);
    j.hp = t ? step_ptr(c->out, tax, t - 1, NULL) : h0->data;
    j.ldp = t ? j.ldy : H;
    seq_rows(s, gru_seq_bwd_f32, gru_seq_bwd_f64, &j, r0, r1);
    if (s->part[0]) seq_sum_groups(s, 0, j.dg, j.ldg, r0, r1, 3 * H);
    if (s->part[1]) seq_sum_groups(s, 1, j.db, j.ldg, r0, r1, 3 * H);
    if (t > 0 || c->needs[4]) /* dh_{t-1} += db_t w */
      seq_product(s, r0, r1, false, 3 * H, H, j.db, j.ldg, w->data, 1.0, s->dh->data, H);
  }
}

static ad_status gru_seq_bwd(const ad_call *c) {
  if (c->ctx->grad_enabled) return gru_seq_bwd_ops(c);
  ad_ctx *ctx = c->ctx;
  const ad_tensor *w = c->in[1], *h0 = c->in[4];
  int tax = c->attrs->axis;
  ad_dtype dt = w->dtype;
  size_t es = ad_dsize(dt);
  int64_t T = c->out->shape[tax], N = c->out->shape[1 - tax], H = w->shape[1], sN[2] = {N, H};
  ad_tensor *dA = ad_tmp_new(ctx, dt, 3, c->in[0]->shape);
  ad_tensor *dB = ad_tmp_new(ctx, dt, 3, c->in[0]->shape);
  ad_tensor *dh = ad_tmp_new(ctx, dt, 2, sN);
  /* the biases' gradients, summed step by step while dA_t and dB_t are in the cache */
  ad_tensor *dbx = c->needs[2] ? ad_tmp_new(ctx, dt, 1, c->in[2]->shape) : NULL;
  ad_tensor *dbh = c->needs[3] ? ad_tmp_new(ctx, dt, 1, c->in[3]->shape) : NULL;
  bool hdy;
  ad_tensor *dY = seq_gout(c, H, &hdy);
  if (!dA || !dB || !dh || !dY || (c->needs[2] && !dbx) || (c->needs[3] && !dbh))
    return ad_last_status(ctx);
  memset(dh->data, 0, (size_t)(N * H) * es);
  if (dbx) memset(dbx->data, 0, (size_t)(3 * H) * es);
  if (dbh) memset(dbh->data, 0, (size_t)(3 * H) * es);
  ad_gemm_packed *pk = ad_gemm_pack(dt, false, N, 3 * H, H, w->data, H);
  seq_steps s = {.c = c, .pk = pk, .T = T, .N = N, .H = H, .steps = gru_bwd_steps};
  s.dY = dY, s.dG = dA, s.dB = dB, s.dh = dh, s.dbias[0] = dbx, s.dbias[1] = dbh, s.hdy = hdy;
  if ((dbx && !seq_parts_new(ctx, &s, 0, 3 * H)) || (dbh && !seq_parts_new(ctx, &s, 1, 3 * H))) {
    ad_gemm_packed_free(pk);
    return ad_last_status(ctx);
  }
  seq_steps_run(&s);
  ad_gemm_packed_free(pk);
  seq_parts_sum(&s, 0, 3 * H);
  seq_parts_sum(&s, 1, 3 * H);
  if (c->needs[1]) {
    ad_tensor *dw = ad_tmp_new(ctx, dt, 2, w->shape), *hp = seq_hp_new(ctx, dB, H);
    if (!dw || !hp) return ad_last_status(ctx);
    seq_weight_grad(tax, dB, c->out, h0, hp, dw);
    c->gin[1] = dw;
  }
  if (c->needs[0]) c->gin[0] = dA;
  if (c->needs[2]) c->gin[2] = dbx;
  if (c->needs[3]) c->gin[3] = dbh;
  if (c->needs[4]) c->gin[4] = dh;
  return AD_OK;
}

ad_tensor *ad_gru_seq(ad_ctx *ctx, ad_tensor *xp, ad_tensor *w_hh, ad_tensor *b_ih, ad_tensor *b_hh,
                      ad_tensor *h0, ad_tensor *mask, bool batch_first) {
  ad_tensor *in[6] = {xp, w_hh, b_ih, b_hh, h0, mask};
  ad_attrs at = {.axis = batch_first ? 1 : 0};
  return ad_op_apply(ctx, AD_OP_GRU_SEQ, mask ? 6 : 5, in, &at);
}

static int gru_seq_sample(const ad_sample_call *s) { return seq_sample(s, 3, 2); }

const ad_op_def ad_def_gru_seq = {
    .name = "gru_seq",
    .arity = 6,
    .min_arity = 5,
    .attrs = AD_ATTRS_AXIS,
    .shape = gru_seq_shape,
    .forward = gru_seq_fwd,
    .backward = gru_seq_bwd,
    .sample = gru_seq_sample,
    .math = "Y_t = [gru_cell(xp_t + bx, b_t, h_{t-1}) | b_t's last block], b_t = h_{t-1} w^T + b, "
            "for t = 0..T-1 (the time axis: axis), h_{t-1} Y_{t-1}'s first block (h0 at t = 0); "
            "where mask_t is 0, Y_t = [h_{t-1} | 0]",
    .inputs = {"xp", "w", "bx", "b", "h0", "mask"},
    .grads = {"dA_t: gru_cell's rule per step from the last, with dh_t += dB_{t+1} w; "
              "dA_t = dB_t = 0 where mask_t is 0 (dh_t passes on to step t - 1)",
              "sum_t dB_t^T h_{t-1}", "sum_t dA_t's rows", "sum_t dB_t's rows",
              "dh_{-1} of the rule", NULL},
};
