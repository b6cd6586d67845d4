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
#include "ops.h"

#include <math.h>
#include <string.h>

/* The row loops vectorize only when GCC may evaluate a comparison's both
 * sides (its selects could otherwise raise a floating-point exception);
 * the values are the same. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

/* float64 sigmoid as the sigmoid op computes it (stable on both sides), so
 * that the fused and the composed cell agree to the last bits where they
 * can */
static inline double sig_d(double x) {
  return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

/* float32 exp, sigmoid and tanh without calls or branches, so that a row
 * loop vectorizes: exp as 2^n e^r with |r| <= ln2/2 and a degree-6
 * polynomial (about 1 ulp; inputs clamped to [-87.3, 88.3], NaN kept),
 * tanh as (1 - e^-2|x|) / (1 + e^-2|x|), or its Taylor series to x^9 for
 * |x| < 0.25 where that would cancel (about 3 ulp either way). The fused
 * cells agree with the composed ones (libm's expf and tanhf) within 1e-6
 * relative; float64 uses libm. */
static inline float exp_v(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest */
  float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
static inline float sig_v(float x) { return 1.0f / (1.0f + exp_v(-x)); }
static inline float tanh_v(float x) {
  float a = fabsf(x), x2 = x * x;
  float e = exp_v(-2.0f * a);
  float big = (1.0f - e) / (1.0f + e);
  float small =
      a * (1.0f + x2 * (-1.0f / 3 + x2 * (2.0f / 15 + x2 * (-17.0f / 315 + x2 * (62.0f / 2835)))));
  return copysignf(a < 0.25f ? small : big, x);
}

/* What one parallel row loop of a cell reads and writes. */
typedef struct cell_job {
  const void *a, *b, *s; /* lstm: a, -, c; gru: a, b, h */
  const void *y, *dy;    /* backward: the output and its gradient */
  void *out, *ga, *gb, *gs;
  int64_t H;
} cell_job;

/* Rows per range of the parallel loops: about 16k elements of work. */
static int64_t cell_grain(int64_t H) { return H >= 16384 ? 1 : 16384 / H; }

/* The row loops, written once per element type: a function per row whose
 * arrays are restrict parameters (so that GCC vectorizes it), and the
 * range loop of ad_parallel_for over rows. */
#define DEFINE_CELL_LOOPS(T, SFX, SIG, TANH)                                                       \
  static void lstm_fwd_row_##SFX(int64_t H, const T *restrict a, const T *restrict c,              \
                                 T *restrict h, T *restrict cn, T *restrict act, T *restrict t) {  \
    for (int64_t k = 0; k < H; k++) {                                                              \
      T i = SIG(a[k]), f = SIG(a[H + k]), g = TANH(a[2 * H + k]), o = SIG(a[3 * H + k]);           \
      T fc = f * c[k], ig = i * g;                                                                 \
      cn[k] = fc + ig;                                                                             \
      t[k] = TANH(cn[k]);                                                                          \
      h[k] = o * t[k];                                                                             \
      act[k] = i, act[H + k] = f, act[2 * H + k] = g, act[3 * H + k] = o;                          \
    }                                                                                              \
  }                                                                                                \
  static void lstm_fwd_##SFX(void *ud, int64_t r0, int64_t r1) {                                   \
    const cell_job *j = ud;                                                                        \
    int64_t H = j->H;                                                                              \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      T *y = (T *)j->out + r * 7 * H;                                                              \
      lstm_fwd_row_##SFX(H, (const T *)j->a + r * 4 * H, (const T *)j->s + r * H, y, y + H,        \
                         y + 2 * H, y + 6 * H);                                                    \
    }                                                                                              \
  }                                                                                                \
  static void lstm_bwd_row_##SFX(int64_t H, const T *restrict c, const T *restrict act,            \
                                 const T *restrict tt, const T *restrict dh,                       \
                                 const T *restrict dcn, const T *restrict dact,                    \
                                 const T *restrict dt, T *restrict ga, T *restrict gc) {           \
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
  static void lstm_bwd_##SFX(void *ud, int64_t r0, int64_t r1) {                                   \
    const cell_job *j = ud;                                                                        \
    int64_t H = j->H;                                                                              \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      const T *y = (const T *)j->y + r * 7 * H, *dy = (const T *)j->dy + r * 7 * H;                \
      lstm_bwd_row_##SFX(H, (const T *)j->s + r * H, y + 2 * H, y + 6 * H, dy, dy + H, dy + 2 * H, \
                         dy + 6 * H, (T *)j->ga + r * 4 * H, (T *)j->gs + r * H);                  \
    }                                                                                              \
  }                                                                                                \
  static void gru_fwd_row_##SFX(int64_t H, const T *restrict a, const T *restrict b,               \
                                const T *restrict h, T *restrict y, T *restrict act) {             \
    for (int64_t k = 0; k < H; k++) {                                                              \
      T rr = SIG(a[k] + b[k]), z = SIG(a[H + k] + b[H + k]);                                       \
      T rb = rr * b[2 * H + k];                                                                    \
      T n = TANH(a[2 * H + k] + rb);                                                               \
      T d = (h[k] - n) * z;                                                                        \
      y[k] = d + n;                                                                                \
      act[k] = rr, act[H + k] = z, act[2 * H + k] = n;                                             \
    }                                                                                              \
  }                                                                                                \
  static void gru_fwd_##SFX(void *ud, int64_t r0, int64_t r1) {                                    \
    const cell_job *j = ud;                                                                        \
    int64_t H = j->H;                                                                              \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      T *y = (T *)j->out + r * 4 * H;                                                              \
      gru_fwd_row_##SFX(H, (const T *)j->a + r * 3 * H, (const T *)j->b + r * 3 * H,               \
                        (const T *)j->s + r * H, y, y + H);                                        \
    }                                                                                              \
  }                                                                                                \
  static void gru_bwd_row_##SFX(int64_t H, const T *restrict b, const T *restrict act,             \
                                const T *restrict h, const T *restrict dy, const T *restrict dact, \
                                T *restrict ga, T *restrict gb, T *restrict gh) {                  \
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
  static void gru_bwd_##SFX(void *ud, int64_t r0, int64_t r1) {                                    \
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
DEFINE_CELL_LOOPS(double, f64, sig_d, tanh)

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
    .math = "[i f g o] = sig, sig, tanh, sig of a's blocks; c' = f c + i g; "
            "y = [o tanh(c') | c' | i f g o | tanh(c')]",
    .inputs = {"a", "c"},
    .grads = {"[(dc g + di) sig'(i) | (dc c + df) sig'(f) | (dc i + dg) tanh'(g) | "
              "(dh t + do) sig'(o)], dc = dc' + (dh o + dt) tanh'(c')",
              "dc f"},
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
    .math = "r = sig(a_r + b_r), z = sig(a_z + b_z), n = tanh(a_n + r b_n); "
            "y = [(h - n) z + n | r z n]",
    .inputs = {"a", "b", "h"},
    .grads = {"[dr | dz | dn], dn = (dh (1 - z) + dn') tanh'(n), dr = (dn b_n + dr') sig'(r), "
              "dz = (dh (h - n) + dz') sig'(z)",
              "[dr | dz | dn r]", "dh z"},
};
