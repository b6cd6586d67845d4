/* layers_rnn.c: recurrent layers, PyTorch's nn.RNN (tanh, relu), nn.LSTM
 * and nn.GRU, built from the engine's ops, so the tape derives
 * backpropagation through time. By default an LSTM or GRU layer is, per
 * layer, one matmul for the input products of all steps and one op for
 * the recurrence (ad_lstm_seq, ad_gru_seq; op_rnn.c: rnn_run_seq below).
 * With opts.per_step each step's products are recorded in its own scope
 * and its elementwise part is one fused op (ad_lstm_cell, ad_gru_cell),
 * with opts.composed the ops of cell_step below, so that a graph dump
 * shows every gate; RNN layers always run step by step (rnn_run). The
 * equations, names and layouts are in nn.h (nn_rnn_new); per step t of
 * layer k, with x_t its input and h, c its state:
 *
 *   RNN   h' = act(x_t W_ih^T + h W_hh^T + (b_ih + b_hh))
 *   LSTM  a = x_t W_ih^T + h W_hh^T + (b_ih + b_hh), [i f g o] = a's column
 *         blocks; c' = sig(f) c + sig(i) tanh(g); h' = sig(o) tanh(c')
 *         (with proj_size: h' = (sig(o) tanh(c')) W_hr^T, run step by step)
 *   GRU   a = x_t W_ih^T + b_ih, b = h W_hh^T + b_hh, [r z n] blocks;
 *         r = sig(a_r + b_r), z = sig(a_z + b_z), n = tanh(a_n + r b_n);
 *         h' = (h - n) z + n   (= (1 - z) n + z h, ATen's order)
 *
 * Variable lengths: at a step some sequence has passed its end, a constant
 * 0/1 mask m [N, 1] keeps its state, h = where(m, h', h) (so the padded
 * step sends it no gradient), its output is where(m, h', 0), and its
 * input row where(m, x_t, 0), so that padding never reaches a value or a
 * gradient (even a NaN in it).
 *
 * Step by step, the sequence is cut into steps by ad_unstack and the
 * steps' outputs (and the layers' final states) are joined by ad_stack;
 * the whole-sequence ops keep padded steps inert with a [T, N] mask.
 *
 * Bidirectional: the reverse direction of a layer is the same machinery
 * run on the layer's input with each sequence's valid prefix reversed
 * (steps len_n - 1 .. 0, padding left in place) by one index_select over
 * the [T N, F] rows (rev_index); the index is its own inverse, so the
 * same gather puts the outputs back in step order, and the last step of
 * the run is the state after step 0 (PyTorch's packed sequences). The two
 * directions' outputs are concatenated on the feature axis. */
#include "nn_internal.h"

#include <limits.h>
#include <math.h>
#include <stddef.h>

typedef struct rnn_state {
  nn_rnn_cell cell;
  int gates; /* G: 1, 4 or 3 */
  int layers;
  int dirs; /* 1, or 2 when bidirectional */
  int64_t in, hidden;
  int64_t proj; /* P, LSTM proj_size; 0 without projections */
  bool batch_first, bias, composed, per_step;
  double dropout;
  ad_rng rng;
  /* 4 per layer and direction, p + 4 (dirs k + d) for direction d of layer
   * k: w_ih, w_hh, b_ih, b_hh (the biases NULL without) */
  ad_tensor **p;
  /* with proj: w_hr [P, H] per layer and direction (kd = dirs k + d), else NULL */
  ad_tensor **hr;
} rnn_state;

/* The width of h: P with projections, else H. */
static int64_t h_size(const rnn_state *s) { return s->proj ? s->proj : s->hidden; }

static const char *const cell_kinds[] = {"rnn_tanh", "rnn_relu", "lstm", "gru"};

/* nn_rnn_opts keeps its layout: one byte of tail padding is left, no room
 * for proj_size (an int64_t), which is in nn_rnn_opts_ext instead */
_Static_assert(sizeof(nn_rnn_opts) == offsetof(nn_rnn_opts, bidirectional) + 2,
               "nn_rnn_opts changed size");

/* ------------------------------------------------------------ the cells */

/* One step of layer k: from input x [N, in_k] and state *h (and *c for
 * LSTM), the new state into *h, *c. bias is b_ih + b_hh (RNN, LSTM) or
 * NULL; the GRU reads its two biases from w. An LSTM with projections
 * (w_hr [P, H], else NULL) projects its h': h' = (o tanh(c')) w_hr^T, so h
 * is [N, P]. NULL on error. */
static bool cell_step(ad_ctx *ctx, const rnn_state *s, ad_tensor *const *w, ad_tensor *bias,
                      ad_tensor *w_hr, ad_tensor *x, ad_tensor **h, ad_tensor **c) {
  int64_t H = s->hidden;
  ad_tensor *a = ad_matmul(ctx, x, w[0], false, true);
  ad_tensor *b = ad_matmul(ctx, *h, w[1], false, true);
  switch (s->cell) {
  case NN_RNN_TANH:
  case NN_RNN_RELU: {
    ad_tensor *z = ad_add(ctx, a, b);
    if (bias) z = ad_add(ctx, z, bias);
    *h = s->cell == NN_RNN_TANH ? ad_tanh(ctx, z) : ad_relu(ctx, z);
    return *h;
  }
  case NN_RNN_LSTM: {
    ad_tensor *z = ad_add(ctx, a, b);
    if (bias) z = ad_add(ctx, z, bias);
    if (!s->composed) {
      ad_tensor *y = ad_lstm_cell(ctx, z, *c);
      *h = ad_narrow(ctx, y, 1, 0, H);
      *c = ad_narrow(ctx, y, 1, H, H);
    } else {
      ad_tensor *i = ad_sigmoid(ctx, ad_narrow(ctx, z, 1, 0, H));
      ad_tensor *f = ad_sigmoid(ctx, ad_narrow(ctx, z, 1, H, H));
      ad_tensor *g = ad_tanh(ctx, ad_narrow(ctx, z, 1, 2 * H, H));
      ad_tensor *o = ad_sigmoid(ctx, ad_narrow(ctx, z, 1, 3 * H, H));
      *c = ad_add(ctx, ad_mul(ctx, f, *c), ad_mul(ctx, i, g));
      *h = ad_mul(ctx, o, ad_tanh(ctx, *c));
    }
    if (w_hr) *h = ad_matmul(ctx, *h, w_hr, false, true);
    return *h && *c;
  }
  case NN_RNN_GRU: {
    if (w[2]) a = ad_add(ctx, a, w[2]);
    if (w[3]) b = ad_add(ctx, b, w[3]);
    if (!s->composed) return (*h = ad_narrow(ctx, ad_gru_cell(ctx, a, b, *h), 1, 0, H)) != NULL;
    ad_tensor *r =
        ad_sigmoid(ctx, ad_add(ctx, ad_narrow(ctx, a, 1, 0, H), ad_narrow(ctx, b, 1, 0, H)));
    ad_tensor *z =
        ad_sigmoid(ctx, ad_add(ctx, ad_narrow(ctx, a, 1, H, H), ad_narrow(ctx, b, 1, H, H)));
    ad_tensor *n = ad_tanh(ctx, ad_add(ctx, ad_narrow(ctx, a, 1, 2 * H, H),
                                       ad_mul(ctx, r, ad_narrow(ctx, b, 1, 2 * H, H))));
    *h = ad_add(ctx, ad_mul(ctx, ad_sub(ctx, *h, n), z), n);
    return *h;
  }
  }
  return false;
}

/* --------------------------------------------------------------- checks */

/* A state (h0 or c0) must be [layers dirs, N, W] of dtype, or [layers
 * dirs, W] for an unbatched input; W is H, but P for h0 with projections. */
static bool check_state(ad_ctx *ctx, const char *who, const char *what, const ad_tensor *t,
                        const rnn_state *s, int64_t n, bool unbatched, ad_dtype dtype) {
  char a[64], lead[48];
  int nd = unbatched ? 2 : 3;
  bool proj = s->proj && what[0] == 'h';
  int64_t w = proj ? s->proj : s->hidden;
  const char *wname = proj ? "proj_size" : "hidden_size";
  if (t->ndim != nd || t->shape[0] != (int64_t)s->layers * s->dirs ||
      (!unbatched && t->shape[1] != n) || t->shape[nd - 1] != w) {
    if (s->dirs == 2)
      snprintf(lead, sizeof lead, "num_layers*2 = %d (bidirectional)", 2 * s->layers);
    else
      snprintf(lead, sizeof lead, "num_layers %d", s->layers);
    if (unbatched)
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: %s %s must be [%s, %s %lld] for an unbatched input", who,
                   what, ad_shape_str(t, a, sizeof a), lead, wname, (long long)w);
    else
      ad_set_error(ctx, AD_ERR_SHAPE, "%s: %s %s must be [%s, batch %lld, %s %lld]", who, what,
                   ad_shape_str(t, a, sizeof a), lead, (long long)n, wname, (long long)w);
    return false;
  }
  if (t->dtype != dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: %s %s is %s, the layer is %s", who, what,
                 ad_shape_str(t, a, sizeof a), ad_dtype_name(t->dtype), ad_dtype_name(dtype));
    return false;
  }
  return true;
}

/* x must be [T, N, in] ([N, T, in] with batch_first) or unbatched [T, in]. */
static bool check_input(ad_ctx *ctx, const char *who, const rnn_state *s, const ad_tensor *x,
                        ad_dtype dtype) {
  char a[64];
  char want[80];
  if (s->batch_first)
    snprintf(want, sizeof want, "[N, T, %lld] (batch_first) or unbatched [T, %lld]",
             (long long)s->in, (long long)s->in);
  else
    snprintf(want, sizeof want, "[T, N, %lld] or unbatched [T, %lld]", (long long)s->in,
             (long long)s->in);
  if (x->ndim != 3 && x->ndim != 2) {
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: input %s has %d dims; the layer expects %s", who,
                 ad_shape_str(x, a, sizeof a), x->ndim, want);
    return false;
  }
  int last = x->ndim - 1;
  if (x->shape[last] != s->in) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input %s has %lld features (dim %d), the layer's input_size is %lld", who,
                 ad_shape_str(x, a, sizeof a), (long long)x->shape[last], last, (long long)s->in);
    return false;
  }
  /* an empty batch (N = 0) is fine, as in PyTorch: rnn_run_empty */
  int64_t t = x->ndim == 2 ? x->shape[0] : x->shape[s->batch_first ? 1 : 0];
  if (t == 0) {
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: input %s is an empty sequence (T = 0); the layer expects %s", who,
                 ad_shape_str(x, a, sizeof a), want);
    return false;
  }
  if (x->dtype != dtype) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: input %s is %s, the layer is %s", who,
                 ad_shape_str(x, a, sizeof a), ad_dtype_name(x->dtype), ad_dtype_name(dtype));
    return false;
  }
  return true;
}

static bool check_lengths(ad_ctx *ctx, const char *who, const int64_t *lengths, int64_t n_lengths,
                          int64_t n, int64_t t) {
  if (n_lengths != n) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: %lld lengths for a batch of %lld sequences", who,
                 (long long)n_lengths, (long long)n);
    return false;
  }
  for (int64_t i = 0; i < n; i++)
    if (lengths[i] < 1 || lengths[i] > t) {
      ad_set_error(ctx, AD_ERR_ARG, "%s: length %lld of sequence %lld is outside 1..%lld (T)", who,
                   (long long)lengths[i], (long long)i, (long long)t);
      return false;
    }
  return true;
}

/* -------------------------------------------------------------- forward */

static const nn_layer_ops rnn_ops;

/* A constant (not recorded) arena tensor of shape, all v. */
static ad_tensor *constant(ad_ctx *ctx, ad_dtype dtype, int ndim, const int64_t *shape, double v) {
  ad_tensor *t = nn_tmp_tensor(ctx, dtype, ndim, shape);
  if (t) ad_tensor_fill(t, v);
  return t;
}

/* Layer k's initial state from s0 ([layers, N, H] or NULL: zeros). */
static ad_tensor *state_in(ad_ctx *ctx, ad_tensor *s0, int k, ad_tensor *zeros) {
  if (!s0) return zeros;
  int64_t sh[2] = {s0->shape[1], s0->shape[2]};
  return ad_reshape(ctx, ad_narrow(ctx, s0, 0, k, 1), 2, sh);
}

/* The steps' dropout (inverted, mask drawn per element from s->rng). x is
 * one step [N, H] or a layer's whole output; a batch-major [N, T, H] one
 * (batch_major) draws its mask step by step, in the order the per-step
 * path draws it, so both give the same masks. */
static ad_tensor *drop(ad_ctx *ctx, rnn_state *s, ad_tensor *x, bool batch_major) {
  ad_tensor *m = nn_tmp_tensor(ctx, x->dtype, x->ndim, x->shape);
  if (!m) return NULL;
  double keep = 1.0 / (1.0 - s->dropout);
  int64_t N = batch_major ? x->shape[0] : 1, T = batch_major ? x->shape[1] : 1;
  int64_t row = N * T > 0 ? m->size / (N * T) : 0;
  for (int64_t t = 0; t < T; t++)
    for (int64_t n = 0; n < N; n++) {
      int64_t at = (n * T + t) * row;
      if (m->dtype == AD_F32) {
        float *d = (float *)m->data + at;
        for (int64_t i = 0; i < row; i++)
          d[i] = ad_rng_uniform(&s->rng) >= s->dropout ? (float)keep : 0;
      } else {
        double *d = (double *)m->data + at;
        for (int64_t i = 0; i < row; i++) d[i] = ad_rng_uniform(&s->rng) >= s->dropout ? keep : 0;
      }
    }
  return ad_mul(ctx, x, m);
}

/* The reversal of each sequence's valid prefix, as the index of rows of a
 * [T, N, F] tensor (row t N + n; batch_major: [N, T, F], row n T + t)
 * flattened to [T N, F]: row (t, n) takes row (len_n - 1 - t, n) for t <
 * len_n (len_n = T without lengths) and keeps its own (padding) after. An
 * involution, so the same index reverses the reversed rows back. The
 * caller checked that T N fits an int32. */
static ad_tensor *rev_index(ad_ctx *ctx, int64_t T, int64_t N, const int64_t *lengths,
                            bool batch_major) {
  int64_t rows = T * N;
  ad_tensor *idx = nn_tmp_tensor(ctx, AD_I32, 1, &rows);
  if (!idx) return NULL;
  int32_t *d = idx->data;
  for (int64_t t = 0; t < T; t++)
    for (int64_t n = 0; n < N; n++) {
      int64_t len = lengths ? lengths[n] : T, src = t < len ? len - 1 - t : t;
      d[batch_major ? n * T + t : t * N + n] = (int32_t)(batch_major ? n * T + src : src * N + n);
    }
  return idx;
}

/* x [A, B, F] with its rows (A B of them) gathered by idx (rev_index). */
static ad_tensor *rev_rows(ad_ctx *ctx, ad_tensor *x, ad_tensor *idx) {
  if (!x) return NULL;
  int64_t sh[3] = {x->shape[0], x->shape[1], x->shape[2]}, flat[2] = {sh[0] * sh[1], sh[2]};
  return ad_reshape(ctx, ad_index_select(ctx, ad_reshape(ctx, x, 2, flat), idx), 3, sh);
}

/* The steps a[0 .. t_run) ([N, F] each) in the order idx (time-major
 * rev_index) gives, into b (which may be a). */
static bool rev_steps(ad_ctx *ctx, ad_tensor **a, ad_tensor **b, int64_t t_run, ad_tensor *idx) {
  ad_tensor *r = rev_rows(ctx, ad_stack(ctx, (int)t_run, a, 0), idx);
  return r && ad_unstack(ctx, r, 0, b) == AD_OK;
}

/* The whole-sequence path of LSTM and GRU layers (the default): per
 * layer and direction, the input products of all steps as one matmul [T N,
 * in] x W_ih^T, then one ad_lstm_seq or ad_gru_seq for the recurrence
 * (which adds the biases in its rows), in the input's layout (batch-major
 * with batch_first, so nothing is transposed); the steps that no sequence
 * reaches are not run, as in rnn_run. The reverse direction runs the same
 * on the layer's input with each sequence's valid prefix reversed
 * (rev_rows), and its outputs are reversed back the same way. Values,
 * dropout masks and errors as rnn_run's. fin_h and fin_c hold a pointer
 * per layer and direction. */
static ad_tensor *rnn_run_seq(ad_ctx *ctx, rnn_state *s, const char *name, ad_tensor *x,
                              ad_tensor *h0, ad_tensor *c0, const int64_t *lengths, bool training,
                              ad_tensor **h_n, ad_tensor **c_n, ad_tensor **fin_h,
                              ad_tensor **fin_c) {
  int tax = s->batch_first ? 1 : 0;
  int64_t T = x->shape[tax], N = x->shape[1 - tax], H = s->hidden, NH[2] = {N, H};
  int64_t GH = s->gates * H;
  bool lstm = s->cell == NN_RNN_LSTM;
  ad_dtype dt = x->dtype;
  ad_tensor *zeros = constant(ctx, dt, 2, NH, 0.0), *zero = ad_scalar(ctx, dt, 0.0);
  if (!zeros || !zero) return NULL;
  /* t_run: the steps that some sequence reaches; a mask [t_run, N] for
   * the op, and m3 for x's layout, when some of them are partial */
  int64_t t_run = T;
  bool partial = false;
  for (int64_t t = 0; lengths && t < T; t++) {
    int64_t live = N;
    for (int64_t i = 0; i < N; i++) live -= lengths[i] <= t;
    if (live == 0) {
      t_run = t;
      break;
    }
    partial = partial || live < N;
  }
  ad_tensor *seq = t_run < T ? ad_narrow(ctx, x, tax, 0, t_run) : x, *mask = NULL, *m3 = NULL;
  if (partial) {
    int64_t sm[2] = {t_run, N}, s3[3] = {t_run, N, 1};
    if (tax) s3[0] = N, s3[1] = t_run;
    if (!(mask = constant(ctx, dt, 2, sm, 0.0)) || !(m3 = constant(ctx, dt, 3, s3, 0.0)))
      return NULL;
    for (int64_t t = 0; t < t_run; t++)
      for (int64_t i = 0; i < N; i++) {
        ad_tensor_set(mask, t * N + i, lengths[i] > t);
        ad_tensor_set(m3, tax ? i * t_run + t : t * N + i, lengths[i] > t);
      }
    /* padded input rows are zeroed: whatever they hold (NaN included)
     * reaches neither the state nor a gradient */
    seq = ad_where(ctx, m3, seq, zero);
  }
  ad_tensor *idx = s->dirs == 2 ? rev_index(ctx, t_run, N, lengths, tax == 1) : NULL;
  ad_tensor *out = NULL;
  bool ok = seq != NULL && (s->dirs == 1 || idx);
  for (int k = 0; k < s->layers && ok; k++) {
    ad_tensor *outs[2] = {NULL, NULL};
    bool open = false; /* one direction: its scope holds the dropout too */
    for (int d = 0; d < s->dirs && ok; d++) {
      int kd = k * s->dirs + d;
      char label[96];
      snprintf(label, sizeof label, "%s.l%d%s", name, k, d ? "_reverse" : "");
      if (!(ok = ad_scope_push(ctx, label) == AD_OK)) break;
      ad_tensor *const *w = s->p + 4 * kd;
      ad_tensor *src = d ? rev_rows(ctx, seq, idx) : seq, *y = NULL;
      if (src) {
        int64_t flat[2] = {t_run * N, src->shape[2]}, s3[3] = {src->shape[0], src->shape[1], GH};
        ad_tensor *xp = ad_matmul(ctx, ad_reshape(ctx, src, 2, flat), w[0], false, true);
        ad_tensor *h = state_in(ctx, h0, kd, zeros);
        if (lstm) { /* the bias is added in the op's rows */
          ad_tensor *b = w[2] ? ad_add(ctx, w[2], w[3]) : constant(ctx, dt, 1, &GH, 0.0);
          y = ad_lstm_seq(ctx, ad_reshape(ctx, xp, 3, s3), w[1], b, h, state_in(ctx, c0, kd, zeros),
                          mask, tax == 1);
        } else { /* b_ih and b_hh are added in the op's rows */
          ad_tensor *zb = w[2] && w[3] ? NULL : constant(ctx, dt, 1, &GH, 0.0);
          y = ad_gru_seq(ctx, ad_reshape(ctx, xp, 3, s3), w[1], w[2] ? w[2] : zb, w[3] ? w[3] : zb,
                         h, mask, tax == 1);
        }
      }
      if (y) { /* the outputs, and the final states: the last step's (kept where a sequence
                  ended); the reverse direction's last step is each sequence's step 0 */
        int64_t sl[2] = {N, y->shape[2]};
        ad_tensor *last = ad_reshape(ctx, ad_narrow(ctx, y, tax, t_run - 1, 1), 2, sl);
        ad_tensor *o = ad_narrow(ctx, y, 2, 0, H);
        if (d) o = rev_rows(ctx, o, idx);
        if (m3) o = ad_where(ctx, m3, o, zero);
        outs[d] = o;
        fin_h[kd] = ad_narrow(ctx, last, 1, 0, H);
        fin_c[kd] = lstm ? ad_narrow(ctx, last, 1, H, H) : NULL;
        ok = o && fin_h[kd] && (!lstm || fin_c[kd]);
      } else {
        ok = false;
      }
      if (!(open = s->dirs == 1)) ad_scope_pop(ctx);
    }
    /* the directions' outputs side by side: [., ., dirs H] */
    if (ok) ok = (out = s->dirs == 2 ? ad_concat(ctx, 2, outs, 2) : outs[0]) != NULL;
    if (ok && k + 1 < s->layers)
      ok = (seq = training && s->dropout > 0 ? drop(ctx, s, out, tax == 1) : out) != NULL;
    if (open) ad_scope_pop(ctx);
  }
  if (!ok) return NULL;
  int nfin = s->layers * s->dirs;
  if (t_run < T) { /* the steps no sequence reaches give 0 */
    int64_t sz[3] = {T - t_run, N, s->dirs * H};
    if (tax) sz[0] = N, sz[1] = T - t_run;
    ad_tensor *parts[2] = {out, constant(ctx, dt, 3, sz, 0.0)};
    out = parts[1] ? ad_concat(ctx, 2, parts, tax) : NULL;
  }
  if (out && h_n && !(*h_n = ad_stack(ctx, nfin, fin_h, 0))) out = NULL;
  if (out && c_n && lstm && !(*c_n = ad_stack(ctx, nfin, fin_c, 0))) out = NULL;
  return out;
}

/* The work of nn_rnn_forward once the arguments are checked. scratch
 * holds 4 T + 2 layers dirs pointers. */
static ad_tensor *rnn_run(ad_ctx *ctx, rnn_state *s, const char *name, ad_tensor *x, ad_tensor *h0,
                          ad_tensor *c0, const int64_t *lengths, bool training, ad_tensor **h_n,
                          ad_tensor **c_n, ad_tensor **scratch) {
  int tax = s->batch_first ? 1 : 0;
  int64_t T = x->shape[tax], N = x->shape[1 - tax], NH[2] = {N, s->hidden}, N1[2] = {N, 1};
  int nfin = s->layers * s->dirs;
  ad_tensor **in = scratch, **out = scratch + T, **mask = scratch + 2 * T, **rev = scratch + 3 * T;
  ad_tensor **fin_h = scratch + 4 * T, **fin_c = fin_h + nfin; /* per layer and direction */
  /* an LSTM with projections runs step by step (the whole-sequence op has
   * no projection) */
  if ((s->cell == NN_RNN_LSTM || s->cell == NN_RNN_GRU) && !s->composed && !s->per_step && !s->proj)
    return rnn_run_seq(ctx, s, name, x, h0, c0, lengths, training, h_n, c_n, fin_h, fin_c);
  ad_dtype dt = x->dtype;
  int64_t NR[2] = {N, h_size(s)}, NDR[2] = {N, s->dirs * h_size(s)};
  /* zero states: zeros for h [N, R] (R = P with projections, else H), zeros_c for c [N, H] */
  ad_tensor *zeros = constant(ctx, dt, 2, NR, 0.0), *zero = ad_scalar(ctx, dt, 0.0);
  ad_tensor *zeros_c = s->proj ? constant(ctx, dt, 2, NH, 0.0) : zeros;
  ad_tensor *zeros_out = s->dirs == 2 ? constant(ctx, dt, 2, NDR, 0.0) : zeros;
  bool ok = zeros && zero && zeros_c && zeros_out;
  /* mask[t]: 1 for the sequences that reach step t, NULL when all do;
   * t_run: the steps that some sequence reaches */
  int64_t t_run = T;
  for (int64_t t = 0; t < T && ok; t++) {
    int64_t live = N;
    for (int64_t i = 0; lengths && i < N; i++) live -= lengths[i] <= t;
    mask[t] = NULL;
    if (live == 0 && t_run == T) t_run = t;
    if (live == N || live == 0) continue;
    ok = (mask[t] = constant(ctx, dt, 2, N1, 0.0)) != NULL;
    for (int64_t i = 0; ok && i < N; i++) ad_tensor_set(mask[t], i, lengths[i] > t);
  }
  /* the reverse direction's steps: each sequence's first lengths[n] ones
   * reversed (time-major, as the steps are stacked) */
  ad_tensor *idx = NULL;
  if (ok && s->dirs == 2) ok = (idx = rev_index(ctx, t_run, N, lengths, false)) != NULL;
  /* the input's padded steps are zeroed, so that whatever they hold (NaN
   * included) reaches neither the state nor a gradient */
  ok = ok && ad_unstack(ctx, x, tax, in) == AD_OK;
  for (int64_t t = 0; t < t_run && ok; t++)
    if (mask[t]) ok = (in[t] = ad_where(ctx, mask[t], in[t], zero)) != NULL;
  for (int k = 0; k < s->layers && ok; k++) {
    bool open = false; /* one direction: its scope holds the dropout too */
    for (int d = 0; d < s->dirs && ok; d++) {
      /* graph dumps group the layer's ops ("lstm.l0", "lstm.l0_reverse")
       * and each step's ("t=3", of the reversed sequence in the latter) */
      int kd = k * s->dirs + d;
      char label[96];
      snprintf(label, sizeof label, "%s.l%d%s", name, k, d ? "_reverse" : "");
      if (!(ok = ad_scope_push(ctx, label) == AD_OK)) break;
      /* the reverse direction reads and writes rev[] (reversed in place) */
      ad_tensor **src = d ? rev : in, **dst = d ? rev : out;
      if (d) ok = rev_steps(ctx, in, rev, t_run, idx);
      ad_tensor *const *w = s->p + 4 * kd;
      ad_tensor *bias = NULL; /* b_ih + b_hh, added once per step (RNN, LSTM) */
      if (ok && s->cell != NN_RNN_GRU && w[2]) ok = (bias = ad_add(ctx, w[2], w[3])) != NULL;
      ad_tensor *h = state_in(ctx, h0, kd, zeros);
      ad_tensor *c = s->cell == NN_RNN_LSTM ? state_in(ctx, c0, kd, zeros_c) : NULL;
      ok = ok && h && (s->cell != NN_RNN_LSTM || c);
      for (int64_t t = 0; t < t_run && ok; t++) {
        ad_tensor *hp = h, *cp = c;
        snprintf(label, sizeof label, "t=%lld", (long long)t);
        if (!(ok = ad_scope_push(ctx, label) == AD_OK)) break;
        if (mask[t]) { /* an ended sequence's state is carried below, not stepped: the
                        * step reads 0 for it, so that an infinite state sends no
                        * 0 * inf = NaN to the weights' gradients (PyTorch's packed
                        * sequences never run those steps) */
          h = ad_where(ctx, mask[t], hp, zero);
          if (cp) c = ad_where(ctx, mask[t], cp, zero);
          ok = h && (!cp || c);
        }
        ok = ok && cell_step(ctx, s, w, bias, s->hr ? s->hr[kd] : NULL, src[t], &h, &c);
        if (ok && mask[t]) { /* some sequence has ended: it keeps its state */
          dst[t] = ad_where(ctx, mask[t], h, zero);
          h = ad_where(ctx, mask[t], h, hp);
          if (cp) c = ad_where(ctx, mask[t], c, cp);
        } else {
          dst[t] = h;
        }
        ok = ok && dst[t] && h && (!cp || c);
        ad_scope_pop(ctx);
      }
      fin_h[kd] = h;
      fin_c[kd] = c;
      if (ok && d) ok = rev_steps(ctx, rev, rev, t_run, idx);
      if (!(open = s->dirs == 1)) ad_scope_pop(ctx);
    }
    for (int64_t t = 0; s->dirs == 2 && t < t_run && ok; t++) { /* [N, 2 H] per step */
      ad_tensor *pair[2] = {out[t], rev[t]};
      ok = (out[t] = ad_concat(ctx, 2, pair, 1)) != NULL;
    }
    for (int64_t t = t_run; t < T; t++) out[t] = zeros_out;
    for (int64_t t = 0; k + 1 < s->layers && t < t_run && ok; t++)
      ok = (in[t] = training && s->dropout > 0 ? drop(ctx, s, out[t], false) : out[t]) != NULL;
    if (open) ad_scope_pop(ctx);
  }
  /* T fits an int: nn_rnn_forward checked it */
  ad_tensor *y = ok ? ad_stack(ctx, (int)T, out, tax) : NULL;
  if (y && h_n && !(*h_n = ad_stack(ctx, nfin, fin_h, 0))) y = NULL;
  if (y && c_n && s->cell == NN_RNN_LSTM && !(*c_n = ad_stack(ctx, nfin, fin_c, 0))) y = NULL;
  return y;
}

/* An empty batch (N = 0), as PyTorch runs it: the output [T, 0, D R] ([0,
 * T, D R] with batch_first), h_n [L D, 0, R] and c_n [L D, 0, H], all
 * empty, each the product of a constant of its shape and a 0-d link, the
 * sum of x, h0, c0 and every parameter: a backward through them gives
 * those the zero gradients PyTorch's does (its kernels run on no rows),
 * and takes no dropout draws. */
static ad_tensor *rnn_run_empty(ad_ctx *ctx, const rnn_state *s, ad_tensor *x, ad_tensor *h0,
                                ad_tensor *c0, ad_tensor **h_n, ad_tensor **c_n) {
  int64_t T = x->shape[s->batch_first ? 1 : 0], R = h_size(s), LD = s->layers * s->dirs;
  int64_t ys[3] = {T, 0, s->dirs * R}, hs[3] = {LD, 0, R}, cs[3] = {LD, 0, s->hidden};
  if (s->batch_first) ys[0] = 0, ys[1] = T;
  ad_tensor *link = ad_sum(ctx, x);
  if (h0) link = ad_add(ctx, link, ad_sum(ctx, h0));
  if (c0) link = ad_add(ctx, link, ad_sum(ctx, c0));
  for (int i = 0; i < 4 * LD; i++)
    if (s->p[i]) link = ad_add(ctx, link, ad_sum(ctx, s->p[i]));
  for (int i = 0; s->hr && i < LD; i++) link = ad_add(ctx, link, ad_sum(ctx, s->hr[i]));
  if (!link) return NULL;
  ad_dtype dt = x->dtype;
  if (h_n && !(*h_n = ad_mul(ctx, constant(ctx, dt, 3, hs, 0.0), link))) return NULL;
  if (c_n && s->cell == NN_RNN_LSTM && !(*c_n = ad_mul(ctx, constant(ctx, dt, 3, cs, 0.0), link)))
    return NULL;
  return ad_mul(ctx, constant(ctx, dt, 3, ys, 0.0), link);
}

ad_tensor *nn_rnn_forward(nn_layer *l, ad_tensor *x, ad_tensor *h0, ad_tensor *c0,
                          const int64_t *lengths, int64_t n_lengths, bool training, ad_tensor **h_n,
                          ad_tensor **c_n) {
  if (h_n) *h_n = NULL;
  if (c_n) *c_n = NULL;
  if (!l) return NULL;
  ad_ctx *ctx = nn_layer_ctx(l);
  char who[96];
  nn_layer_who(l, who, sizeof who);
  if (!nn_layer_runs(l, &rnn_ops)) {
    ad_set_error(ctx, AD_ERR_ARG, "rnn_forward: %s is not a recurrent layer", who);
    return NULL;
  }
  if (!x) {
    nn_null_arg(ctx, "rnn_forward", "x");
    return NULL;
  }
  /* the shapes are read before any op sees the tensors */
  if (nn_check_input(ctx, who, "x", x) != AD_OK ||
      (h0 && nn_check_input(ctx, who, "h0", h0) != AD_OK) ||
      (c0 && nn_check_input(ctx, who, "c0", c0) != AD_OK))
    return NULL;
  rnn_state *s = nn_layer_state(l);
  ad_dtype dt = s->p[0]->dtype;
  if (!check_input(ctx, who, s, x, dt)) return NULL;
  bool unbatched = x->ndim == 2; /* a batch of one, without its axis */
  int64_t T = unbatched ? x->shape[0] : x->shape[s->batch_first ? 1 : 0];
  int64_t N = unbatched ? 1 : x->shape[s->batch_first ? 0 : 1];
  if (h0 && !check_state(ctx, who, "h0", h0, s, N, unbatched, dt)) return NULL;
  if (c0 && s->cell != NN_RNN_LSTM) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: c0 is given, but only an LSTM has a cell state", who);
    return NULL;
  }
  if (c0 && !check_state(ctx, who, "c0", c0, s, N, unbatched, dt)) return NULL;
  if (!lengths && n_lengths != 0) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: lengths is NULL but n_lengths is %lld", who,
                 (long long)n_lengths);
    return NULL;
  }
  if (lengths && !check_lengths(ctx, who, lengths, n_lengths, N, T)) return NULL;
  if (T > INT_MAX) { /* ad_stack joins an int's worth */
    ad_set_error(ctx, AD_ERR_SHAPE, "%s: %lld steps; at most %d", who, (long long)T, INT_MAX);
    return NULL;
  }
  if (s->dirs == 2 && T * N > INT32_MAX) { /* the reversal's row index is int32 */
    ad_set_error(ctx, AD_ERR_SHAPE,
                 "%s: %lld steps of %lld sequences, %lld rows in all; a bidirectional layer "
                 "takes at most %lld",
                 who, (long long)T, (long long)N, (long long)(T * N), (long long)INT32_MAX);
    return NULL;
  }
  size_t bytes = (size_t)(4 * T + 2 * s->layers * s->dirs) * sizeof(ad_tensor *);
  ad_tensor **scratch = ad_malloc(ctx, bytes);
  if (!scratch) return NULL;
  ad_tensor *hn = NULL, *cn = NULL, *y = NULL;
  ad_rng before = s->rng; /* a call that fails takes no dropout draws */
  int64_t LD = s->layers * s->dirs, R = h_size(s);
  if (unbatched) { /* add the batch axis, and take it away from the results */
    int64_t xs[3] = {T, 1, s->in}, hs[3] = {LD, 1, R}, cs[3] = {LD, 1, s->hidden};
    if (s->batch_first) xs[0] = 1, xs[1] = T;
    x = ad_reshape(ctx, x, 3, xs);
    if (!(x && (!h0 || (h0 = ad_reshape(ctx, h0, 3, hs))) &&
          (!c0 || (c0 = ad_reshape(ctx, c0, 3, cs)))))
      x = NULL;
  }
  if (x && N == 0)
    y = rnn_run_empty(ctx, s, x, h0, c0, h_n ? &hn : NULL, c_n ? &cn : NULL);
  else if (x)
    y = rnn_run(ctx, s, *nn_layer_name(l) ? nn_layer_name(l) : nn_layer_kind(l), x, h0, c0, lengths,
                training, h_n ? &hn : NULL, c_n ? &cn : NULL, scratch);
  ad_free(ctx, scratch, bytes);
  if (y && unbatched) {
    int64_t ys[2] = {T, s->dirs * R}, hs[2] = {LD, R}, cs[2] = {LD, s->hidden};
    y = ad_reshape(ctx, y, 2, ys);
    if (hn) hn = ad_reshape(ctx, hn, 2, hs);
    if (cn) cn = ad_reshape(ctx, cn, 2, cs);
    if ((h_n && !hn) || (c_n && s->cell == NN_RNN_LSTM && !cn)) y = NULL;
  }
  if (!y) s->rng = before;
  nn_layer_note_output(l, y);
  if (y && h_n) *h_n = hn;
  if (y && c_n) *c_n = cn;
  return y;
}

static ad_tensor *rnn_forward(nn_layer *l, ad_tensor *x, bool training) {
  return nn_rnn_forward(l, x, NULL, NULL, NULL, 0, training, NULL, NULL);
}

static void rnn_free(nn_layer *l) {
  rnn_state *s = nn_layer_state(l);
  if (!s) return;
  ad_ctx *ctx = nn_layer_ctx(l);
  ad_free(ctx, s->p, (size_t)(4 * s->layers * s->dirs) * sizeof *s->p);
  if (s->hr) ad_free(ctx, s->hr, (size_t)(s->layers * s->dirs) * sizeof *s->hr);
  ad_free(ctx, s, sizeof *s);
}

/* PyTorch's RNNBase extra_repr: the sizes, then what is not the default
 * (an RNN's nonlinearity is in the kind's name). */
static void rnn_describe(const nn_layer *l, nn_text *t) {
  const rnn_state *s = nn_layer_state(l);
  nn_text_add(t, "%lld, %lld", (long long)s->in, (long long)s->hidden);
  if (s->proj) nn_text_add(t, ", proj_size=%lld", (long long)s->proj);
  if (s->layers != 1) nn_text_add(t, ", num_layers=%d", s->layers);
  if (!s->bias) nn_text_add(t, ", bias=False");
  if (s->batch_first) nn_text_add(t, ", batch_first=True");
  if (s->dropout != 0) {
    nn_text_add(t, ", dropout=");
    nn_text_num(t, s->dropout);
  }
  if (s->dirs == 2) nn_text_add(t, ", bidirectional=True");
}

static const nn_layer_ops rnn_ops = {rnn_forward, rnn_free, rnn_describe};

/* ------------------------------------------------------------ the layer */

/* nn_rnn_new_ext called as fn (its name in the messages that name a
 * weight). */
static nn_layer *rnn_new(ad_ctx *ctx, const char *fn, nn_rnn_cell cell, int64_t input_size,
                         int64_t hidden_size, ad_rng *rng, const nn_rnn_opts_ext *opts) {
  if (!ctx) return NULL;
  nn_rnn_opts o = {0};
  int64_t proj = 0;
  if (opts) o = opts->base, proj = opts->proj_size;
  int layers = o.num_layers ? o.num_layers : 1;
  if ((unsigned)cell > NN_RNN_GRU) {
    ad_set_error(ctx, AD_ERR_ARG, "rnn_new: unknown cell %d", (int)cell);
    return NULL;
  }
  const char *kind = cell_kinds[cell];
  int gates = cell == NN_RNN_LSTM ? 4 : cell == NN_RNN_GRU ? 3 : 1;
  if (input_size < 1 || hidden_size < 1 || layers < 1 || hidden_size > (INT64_C(1) << 32) ||
      input_size > (INT64_C(1) << 32) || layers > (1 << 16)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: input_size %lld, hidden_size %lld and num_layers %d must each be >= 1 (and "
                 "sizes at most 2^32, layers at most 65536)",
                 kind, (long long)input_size, (long long)hidden_size, layers);
    return NULL;
  }
  if (proj != 0 && cell != NN_RNN_LSTM) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: proj_size %lld is for an LSTM only", kind, (long long)proj);
    return NULL;
  }
  if (proj < 0 || proj >= hidden_size) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "%s: proj_size %lld must be 0 (no projections) or in 1..hidden_size - 1 = %lld",
                 kind, (long long)proj, (long long)(hidden_size - 1));
    return NULL;
  }
  if (!(o.dropout >= 0 && o.dropout < 1)) {
    ad_set_error(ctx, AD_ERR_ARG, "%s: dropout %g is outside [0, 1)", kind, o.dropout);
    return NULL;
  }
  if (o.dtype != AD_F32 && o.dtype != AD_F64) {
    ad_set_error(ctx, AD_ERR_DTYPE, "%s: parameters must be float, got %s", kind,
                 ad_dtype_name(o.dtype));
    return NULL;
  }
  if (!rng) {
    nn_null_arg(ctx, kind, "rng");
    return NULL;
  }
  rnn_state *s = ad_malloc(ctx, sizeof *s);
  if (!s) return NULL;
  *s = (rnn_state){.cell = cell,
                   .gates = gates,
                   .layers = layers,
                   .dirs = o.bidirectional ? 2 : 1,
                   .in = input_size,
                   .hidden = hidden_size,
                   .proj = proj,
                   .batch_first = o.batch_first,
                   .bias = !o.no_bias,
                   .composed = o.composed,
                   .per_step = o.per_step,
                   .dropout = o.dropout};
  ad_rng_seed(&s->rng, o.seed);
  size_t pbytes = (size_t)(4 * layers * s->dirs) * sizeof *s->p;
  if (!(s->p = ad_malloc(ctx, pbytes))) {
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  memset(s->p, 0, pbytes);
  size_t hrbytes = (size_t)(layers * s->dirs) * sizeof *s->hr;
  if (proj && !(s->hr = ad_malloc(ctx, hrbytes))) {
    ad_free(ctx, s->p, pbytes);
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  if (s->hr) memset(s->hr, 0, hrbytes);
  nn_layer *l = nn_layer_new_ext(ctx, kind, &rnn_ops, s);
  if (!l) {
    if (s->hr) ad_free(ctx, s->hr, hrbytes);
    ad_free(ctx, s->p, pbytes);
    ad_free(ctx, s, sizeof *s);
    return NULL;
  }
  double bound = 1.0 / sqrt((double)hidden_size);
  nn_params *list = nn_layer_params(l);
  static const char *const pname[5] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"};
  /* PyTorch's order: per layer, the forward direction's four (then
   * weight_hr with projections), then the reverse direction's
   * ("_reverse"); above the first layer the input is the directions'
   * outputs side by side, dirs R wide (R = h's width, P or H) */
  int64_t R = h_size(s);
  for (int k = 0; k < layers; k++)
    for (int d = 0; d < s->dirs; d++)
      for (int j = 0; j < 5; j++) {
        if ((j >= 2 && j < 4 && !s->bias) || (j == 4 && !proj)) continue;
        int64_t sh[2] = {gates * hidden_size, j == 0 ? (k ? s->dirs * R : input_size) : R};
        if (j == 4) sh[0] = proj, sh[1] = hidden_size; /* weight_hr [P, H] */
        ad_tensor *t = ad_rand(ctx, rng, o.dtype, j < 2 || j == 4 ? 2 : 1, sh, -bound, bound);
        char name[48];
        snprintf(name, sizeof name, "%s_l%d%s", pname[j], k, d ? "_reverse" : "");
        if (!t || nn_params_add(list, name, t, true) != AD_OK) {
          nn_error_tensor(ctx, fn, NULL, name, j < 2 || j == 4 ? 2 : 1, sh);
          nn_layer_free(l);
          return NULL;
        }
        if (j == 4)
          s->hr[k * s->dirs + d] = t;
        else
          s->p[4 * (k * s->dirs + d) + j] = t;
      }
  return l;
}

nn_layer *nn_rnn_new_ext(ad_ctx *ctx, nn_rnn_cell cell, int64_t input_size, int64_t hidden_size,
                         ad_rng *rng, const nn_rnn_opts_ext *opts) {
  return rnn_new(ctx, "nn_rnn_new_ext", cell, input_size, hidden_size, rng, opts);
}

/* nn_rnn_new called as fn. */
static nn_layer *rnn_new_base(ad_ctx *ctx, const char *fn, nn_rnn_cell cell, int64_t input_size,
                              int64_t hidden_size, ad_rng *rng, const nn_rnn_opts *opts) {
  nn_rnn_opts_ext o = {0};
  if (opts) o.base = *opts;
  return rnn_new(ctx, fn, cell, input_size, hidden_size, rng, &o);
}

nn_layer *nn_rnn_new(ad_ctx *ctx, nn_rnn_cell cell, int64_t input_size, int64_t hidden_size,
                     ad_rng *rng, const nn_rnn_opts *opts) {
  return rnn_new_base(ctx, "nn_rnn_new", cell, input_size, hidden_size, rng, opts);
}

nn_layer *nn_lstm_new(ad_ctx *ctx, int64_t input_size, int64_t hidden_size, ad_rng *rng,
                      const nn_rnn_opts *opts) {
  return rnn_new_base(ctx, "nn_lstm_new", NN_RNN_LSTM, input_size, hidden_size, rng, opts);
}

nn_layer *nn_gru_new(ad_ctx *ctx, int64_t input_size, int64_t hidden_size, ad_rng *rng,
                     const nn_rnn_opts *opts) {
  return rnn_new_base(ctx, "nn_gru_new", NN_RNN_GRU, input_size, hidden_size, rng, opts);
}
