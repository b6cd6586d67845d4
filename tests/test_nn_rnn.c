/* test_nn_rnn.c: the recurrent layers (nn_rnn_new, nn_lstm_new, nn_gru_new,
 * nn_rnn_forward). Against PyTorch (tests/fixtures/torch_rnn.safetensors,
 * tools/gen_rnn_fixtures.py): the state dicts load unchanged under
 * PyTorch's names, and the outputs, final states and the gradients of a
 * scalar loss w.r.t. the input, the initial states and every parameter
 * agree (f64 within 1e-10, f32 within 1e-5) for RNN tanh/relu, LSTM and
 * GRU, one and two layers, batch_first both ways, with and without initial
 * state and bias, and variable lengths; bidirectional LSTM and GRU state
 * dicts from tests/fixtures/torch_rnn_bidir.safetensors, and more
 * bidirectional cases against constants (rnn_bidir_ref.h, at the end).
 * Then gradchecks, PyTorch's names and initialisation, unbatched input,
 * dropout between layers, and bad input. */
#include "nn.h"
#include "test_alloc.h"
#include "test_layer_fd.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TEST_CTX_SUITE(rnn);

#define RNN_FIXTURE       "tests/fixtures/torch_rnn.safetensors"
#define RNN_BIDIR_FIXTURE "tests/fixtures/torch_rnn_bidir.safetensors"

/* tools/gen_rnn_fixtures.py's CASES (and BIDIR_CASES: bidir) */
typedef struct rnn_case {
  const char *name;
  nn_rnn_cell cell;
  int64_t in, hidden;
  int layers;
  bool batch_first, bias;
  int64_t t, n;
  bool state, lengths;
  bool bidir; /* bidirectional=True, in RNN_BIDIR_FIXTURE */
} rnn_case;

static const rnn_case cases[] = {
    {"tanh1", NN_RNN_TANH, 3, 4, 1, false, true, 4, 2, false, false, false},
    {"relu2", NN_RNN_RELU, 3, 4, 2, true, true, 4, 3, true, true, false},
    {"lstm1", NN_RNN_LSTM, 3, 4, 1, false, true, 5, 2, false, false, false},
    {"lstm2", NN_RNN_LSTM, 3, 4, 2, true, true, 5, 3, true, true, false},
    {"lstm2nb", NN_RNN_LSTM, 2, 3, 2, false, false, 4, 3, false, true, false},
    {"gru1", NN_RNN_GRU, 3, 4, 1, true, true, 5, 2, false, false, false},
    {"gru2", NN_RNN_GRU, 3, 4, 2, false, true, 5, 3, true, true, false},
    {"gru2nb", NN_RNN_GRU, 2, 3, 2, true, false, 3, 2, true, false, false},
    {"tanh2_f32", NN_RNN_TANH, 3, 4, 2, false, true, 4, 2, true, true, false},
    {"lstm2_f32", NN_RNN_LSTM, 3, 4, 2, true, true, 5, 3, true, true, false},
    {"gru2_f32", NN_RNN_GRU, 3, 4, 2, false, true, 5, 3, true, true, false},
    {"lstm2bi", NN_RNN_LSTM, 3, 4, 2, true, true, 5, 3, true, true, true},
    {"gru2bi_f32", NN_RNN_GRU, 3, 4, 2, false, true, 5, 3, true, true, true},
};

static const char *case_file(const rnn_case *c) {
  return c->bidir ? RNN_BIDIR_FIXTURE : RNN_FIXTURE;
}

/* The fixture's tensor name (persistent, the file's dtype and shape), or
 * NULL when the file has none. */
static ad_tensor *fixture(const nn_checkpoint_info *info, const rnn_case *c, const char *what) {
  char name[96];
  snprintf(name, sizeof name, "%s.%s", c->name, what);
  const nn_checkpoint_entry *e = nn_checkpoint_info_find(info, name);
  if (!e) return NULL;
  cr_assert(e->has_dtype, "%s: dtype %s", name, e->dtype_name);
  ad_tensor *t = ad_zeros(ctx, e->dtype, e->ndim, e->shape);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  const char *names[1] = {name};
  cr_assert_eq(nn_checkpoint_load(ctx, case_file(c), 1, names, &t), AD_OK, "%s",
               ad_last_error(ctx));
  return t;
}

/* |got - want| <= tol (1 + |want|) element by element, same shapes. */
static void expect_close(const ad_tensor *got, const ad_tensor *want, double tol, const char *cname,
                         const char *what) {
  expect_tensor_close(ctx, got, want, tol, cname, what);
}

/* sum(a * w) */
static ad_tensor *dot(ad_tensor *a, ad_tensor *w) { return ad_sum(ctx, ad_mul(ctx, a, w)); }

static nn_layer *case_layer(const rnn_case *c, ad_dtype dt, ad_rng *rng) {
  nn_rnn_opts o = {.num_layers = c->layers,
                   .no_bias = !c->bias,
                   .batch_first = c->batch_first,
                   .dtype = dt,
                   .bidirectional = c->bidir};
  nn_layer *l = nn_rnn_new(ctx, c->cell, c->in, c->hidden, rng, &o);
  cr_assert_not_null(l, "%s: %s", c->name, ad_last_error(ctx));
  return l;
}

/* Runs case c: the model (one layer named after the case) loads PyTorch's
 * state dict from the fixture; then outputs and gradients are compared. */
static void check_case(const rnn_case *c) {
  bool f32 = strstr(c->name, "_f32") != NULL;
  ad_dtype dt = f32 ? AD_F32 : AD_F64;
  double tol = f32 ? 1e-5 : 1e-10;
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add_named(m, c->name, case_layer(c, dt, &rng)), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(nn_model_load(m, NULL, case_file(c)), AD_OK, "%s: %s", c->name, ad_last_error(ctx));
  nn_layer *l = nn_model_layer(m, 0);
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, case_file(c));
  cr_assert_not_null(info, "%s", ad_last_error(ctx));
  ad_tensor *x = fixture(info, c, "x"), *h0 = fixture(info, c, "h0");
  ad_tensor *c0 = fixture(info, c, "c0"), *len = fixture(info, c, "lengths");
  cr_assert_eq(h0 != NULL, c->state, "%s: h0 in the fixture", c->name);
  cr_assert_eq(len != NULL, c->lengths, "%s: lengths in the fixture", c->name);
  int64_t lengths[8] = {0}, nl = 0;
  for (int64_t i = 0; len && i < len->size; i++) lengths[nl++] = (int64_t)ad_tensor_get(len, i);
  ad_tensor_set_requires_grad(x, true);
  if (h0) ad_tensor_set_requires_grad(h0, true);
  if (c0) ad_tensor_set_requires_grad(c0, true);
  ad_tensor *hn = NULL, *cn = NULL;
  ad_tensor *y = nn_rnn_forward(l, x, h0, c0, len ? lengths : NULL, nl, true, &hn, &cn);
  cr_assert_not_null(y, "%s: %s", c->name, ad_last_error(ctx));
  cr_assert_eq(cn != NULL, c->cell == NN_RNN_LSTM, "%s: c_n", c->name);
  ad_tensor *wy = fixture(info, c, "wy"), *wh = fixture(info, c, "wh");
  ad_tensor *loss = ad_add(ctx, dot(y, wy), dot(hn, wh));
  ad_tensor *wc = cn ? fixture(info, c, "wc") : NULL;
  if (cn) loss = ad_add(ctx, loss, dot(cn, wc));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s: %s", c->name, ad_last_error(ctx));

  ad_tensor *want[3] = {fixture(info, c, "out"), fixture(info, c, "h_n"), fixture(info, c, "c_n")};
  expect_close(y, want[0], tol, c->name, "out");
  expect_close(hn, want[1], tol, c->name, "h_n");
  if (cn) expect_close(cn, want[2], tol, c->name, "c_n");
  ad_tensor *gx = fixture(info, c, "grad.x");
  expect_close(x->grad, gx, tol, c->name, "grad.x");
  ad_tensor *gh = h0 ? fixture(info, c, "grad.h0") : NULL;
  ad_tensor *gc = c0 ? fixture(info, c, "grad.c0") : NULL;
  if (h0) expect_close(h0->grad, gh, tol, c->name, "grad.h0");
  if (c0) expect_close(c0->grad, gc, tol, c->name, "grad.c0");
  nn_params *lp = nn_layer_params(l);
  cr_assert_eq(nn_params_count(lp), c->layers * (c->bias ? 4 : 2) * (c->bidir ? 2 : 1));
  for (int i = 0; i < nn_params_count(lp); i++) {
    char what[64];
    snprintf(what, sizeof what, "grad.%s", nn_params_name(lp, i));
    ad_tensor *g = fixture(info, c, what);
    expect_close(nn_params_tensor(lp, i)->grad, g, tol, c->name, what);
    ad_tensor_free(g);
  }
  /* in a Sequential model: the output sequence from zero state, full length */
  if (!c->state && !c->lengths) {
    ad_tensor *ys = nn_model_forward(m, x);
    expect_close(ys, want[0], tol, c->name, "Sequential out");
  }
  ad_tape_reset(ctx);
  ad_tensor *all[] = {x, h0, c0, len, wy, wh, wc, want[0], want[1], want[2], gx, gh, gc};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ad_tensor_free(all[i]);
  nn_checkpoint_info_free(info);
  nn_model_free(m);
}

Test(rnn, matches_pytorch_f64) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (!strstr(cases[i].name, "_f32")) check_case(&cases[i]);
}

Test(rnn, matches_pytorch_f32) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (strstr(cases[i].name, "_f32")) check_case(&cases[i]);
}

/* The fixture holds every tensor the cases need and nothing the table
 * misses: each case's state dict has PyTorch's names and shapes. */
/* An RNN relu layer (3 -> 2) with lengths {3, 2} and an initial state
 * holding +inf (sample 1, unit 0): PyTorch 1.13's packed sequence (torch
 * printed these, float64 and float32: nn.RNN(3, 2, nonlinearity='relu'),
 * weight_ih [0.1, 0.15, ..., 0.35], weight_hh [0.5, -0.25, 0.3, 0.2],
 * bias_ih [0.1, -0.1], bias_hh [0.05, 0.02], x[i] = ((7 i) % 11 - 5) / 4
 * of [3, 2, 3], h0 [0.5, -0.5, inf, 0.25], gradients of out.sum(); the
 * float64 ones below, float32's within 1e-5 of them) never
 * runs sample 1's padded step. Here that step ran on the carried state and
 * its product with a zero gradient, 0 * inf, made weight_hh's gradient
 * NaN; PyTorch's is inf everywhere. */
Test(rnn, ended_sequence_with_infinite_state) {
  static const double gih[6] = {2.925,   0.6499999999999999, -4.1, 2.4375,
                                -0.5125, -0.7124999999999999};
  static const double gb[2] = {7.5, 2.95};
  static const double whh[4] = {0.5, -0.25, 0.3, 0.2}, h0v[4] = {0.5, -0.5, INFINITY, 0.25};
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    double tol = d ? 1e-12 : 1e-5;
    nn_rnn_opts o = {.dtype = dt};
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_layer *l = nn_rnn_new(ctx, NN_RNN_RELU, 3, 2, &rng, &o);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    nn_params *ps = nn_layer_params(l);
    ad_tensor *wih = nn_params_find(ps, "weight_ih_l0"), *wh = nn_params_find(ps, "weight_hh_l0");
    ad_tensor *bih = nn_params_find(ps, "bias_ih_l0"), *bhh = nn_params_find(ps, "bias_hh_l0");
    for (int i = 0; i < 6; i++) ad_tensor_set(wih, i, 0.1 + 0.05 * i);
    for (int i = 0; i < 4; i++) ad_tensor_set(wh, i, whh[i]);
    ad_tensor_set(bih, 0, 0.1), ad_tensor_set(bih, 1, -0.1);
    ad_tensor_set(bhh, 0, 0.05), ad_tensor_set(bhh, 1, 0.02);
    int64_t xs[3] = {3, 2, 3}, hs[3] = {1, 2, 2}, lens[2] = {3, 2};
    ad_tensor *x = ad_zeros(ctx, dt, 3, xs), *h0 = ad_zeros(ctx, dt, 3, hs);
    for (int i = 0; i < 18; i++) ad_tensor_set(x, i, ((7 * i) % 11 - 5) / 4.0);
    for (int i = 0; i < 4; i++) ad_tensor_set(h0, i, h0v[i]);
    ad_tensor *y = nn_rnn_forward(l, x, h0, NULL, lens, 2, false, NULL, NULL);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    cr_assert(isnan(ad_tensor_get(y, 6)) && isinf(ad_tensor_get(y, 2)));
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
    for (int i = 0; i < 4; i++)
      cr_assert_eq(ad_tensor_get(wh->grad, i), INFINITY, "%s weight_hh grad[%d] %g",
                   ad_dtype_name(dt), i, ad_tensor_get(wh->grad, i));
    for (int i = 0; i < 6; i++)
      cr_assert_float_eq(ad_tensor_get(wih->grad, i), gih[i], tol, "%s weight_ih grad[%d] %.17g",
                         ad_dtype_name(dt), i, ad_tensor_get(wih->grad, i));
    for (int i = 0; i < 2; i++) {
      cr_assert_float_eq(ad_tensor_get(bih->grad, i), gb[i], tol * 4);
      cr_assert_float_eq(ad_tensor_get(bhh->grad, i), gb[i], tol * 4);
    }
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(h0);
    nn_layer_free(l);
  }
}

Test(rnn, fixture_state_dicts_have_pytorch_layouts) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const rnn_case *c = &cases[i];
    nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, case_file(c));
    cr_assert_not_null(info, "%s", ad_last_error(ctx));
    int g = c->cell == NN_RNN_LSTM ? 4 : c->cell == NN_RNN_GRU ? 3 : 1;
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_layer *l = case_layer(c, AD_F64, &rng);
    nn_params *p = nn_layer_params(l);
    for (int k = 0; k < nn_params_count(p); k++) {
      char name[96];
      snprintf(name, sizeof name, "%s.%s", c->name, nn_params_name(p, k));
      const nn_checkpoint_entry *e = nn_checkpoint_info_find(info, name);
      cr_assert_not_null(e, "%s missing", name);
      ad_tensor *t = nn_params_tensor(p, k);
      cr_assert_eq(e->ndim, t->ndim, "%s", name);
      for (int d = 0; d < t->ndim; d++) cr_assert_eq(e->shape[d], t->shape[d], "%s", name);
      cr_assert_eq(t->shape[0], g * c->hidden, "%s: %lld rows", name, (long long)t->shape[0]);
    }
    nn_layer_free(l);
    nn_checkpoint_info_free(info);
  }
}

/* --------------------------------------------------- names and init */

Test(rnn, names_shapes_and_init_are_pytorchs) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  nn_rnn_opts o = {.num_layers = 2};
  nn_layer *l = nn_lstm_new(ctx, 3, 5, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(l), "lstm");
  static const char *const names[8] = {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                                       "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1"};
  static const int64_t cols[8] = {3, 5, 0, 0, 5, 5, 0, 0};
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), 8);
  double bound = 1 / sqrt(5.0), lo = 1, hi = -1;
  for (int i = 0; i < 8; i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    cr_assert_str_eq(nn_params_name(p, i), names[i]);
    cr_assert_eq(t->ndim, cols[i] ? 2 : 1);
    cr_assert_eq(t->shape[0], 20);
    if (cols[i]) cr_assert_eq(t->shape[1], cols[i]);
    cr_assert_eq(t->dtype, AD_F32);
    for (int64_t k = 0; k < t->size; k++) {
      double v = ad_tensor_get(t, k);
      lo = fmin(lo, v);
      hi = fmax(hi, v);
    }
  }
  /* uniform in [-1/sqrt(H), 1/sqrt(H)): inside, and spread over it */
  cr_assert(lo >= -bound && hi < bound, "range [%g, %g], bound %g", lo, hi, bound);
  cr_assert(lo < -0.9 * bound && hi > 0.9 * bound, "range [%g, %g], bound %g", lo, hi, bound);
  nn_layer_free(l);

  nn_rnn_opts nb = {.no_bias = true, .num_layers = 3};
  l = nn_gru_new(ctx, 2, 4, &rng, &nb);
  cr_assert_str_eq(nn_layer_kind(l), "gru");
  p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), 6);
  cr_assert_str_eq(nn_params_name(p, 5), "weight_hh_l2");
  cr_assert_eq(nn_params_tensor(p, 2)->shape[1], 4); /* weight_ih_l1 [12, 4] */
  nn_layer_free(l);
  l = nn_rnn_new(ctx, NN_RNN_RELU, 2, 4, &rng, NULL);
  cr_assert_str_eq(nn_layer_kind(l), "rnn_relu");
  cr_assert_eq(nn_params_tensor(nn_layer_params(l), 0)->shape[0], 4);
  nn_layer_free(l);
}

/* ------------------------------------------------------- gradcheck */

static void gradcheck_cell(nn_rnn_cell cell, bool bidirectional) {
  ad_rng rng;
  ad_rng_seed(&rng, 21);
  nn_rnn_opts o = {
      .num_layers = 2, .batch_first = true, .dtype = AD_F64, .bidirectional = bidirectional};
  nn_layer *l = nn_rnn_new(ctx, cell, 2, 3, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  int64_t sx[3] = {3, 4, 2}, ss[3] = {bidirectional ? 4 : 2, 3, 3}, lengths[3] = {4, 2, 3};
  ad_tensor *in[3] = {ad_rand(ctx, &rng, AD_F64, 3, sx, -1, 1),
                      ad_rand(ctx, &rng, AD_F64, 3, ss, -1, 1),
                      ad_rand(ctx, &rng, AD_F64, 3, ss, -1, 1)};
  int n = cell == NN_RNN_LSTM ? 3 : 2;
  for (int i = 0; i < n; i++) ad_tensor_set_requires_grad(in[i], true);
  for (int lens = 0; lens < 2; lens++)
    for (int out = 0; out < (cell == NN_RNN_LSTM ? 3 : 2); out++) {
      test_rnn_fd u = {l, lens ? lengths : NULL, lens ? 3 : 0, out};
      ad_check_report rep;
      cr_assert_eq(ad_gradcheck(ctx, test_rnn_fd_fn, &u, n, in, NULL, &rep), AD_OK, "%s",
                   ad_last_error(ctx));
      cr_assert(rep.passed, "%s%s output %d lengths %d: input %d [%lld] analytic %g numeric %g",
                nn_layer_kind(l), bidirectional ? " bidirectional" : "", out, lens, rep.input,
                (long long)rep.index, rep.analytic, rep.numeric);
      test_params_fd(ctx, l, test_rnn_fd_fn, &u, n, in);
    }
  for (int i = 0; i < 3; i++) ad_tensor_free(in[i]);
  nn_layer_free(l);
}

Test(rnn, gradcheck_lstm_f64) { gradcheck_cell(NN_RNN_LSTM, false); }
Test(rnn, gradcheck_gru_f64) { gradcheck_cell(NN_RNN_GRU, false); }
/* bidirectional, with and without uneven lengths: input, h0, c0 and every
 * parameter (the reverse direction's too) */
Test(rnn, gradcheck_bidirectional_f64) {
  gradcheck_cell(NN_RNN_TANH, true);
  gradcheck_cell(NN_RNN_LSTM, true);
  gradcheck_cell(NN_RNN_GRU, true);
}

/* ---------------------------------------------------- variable lengths */

/* Padded steps: output exactly 0, no gradient to x there (even when the
 * padding is not finite), and the final state is the one after each
 * sequence's last step (the same as running the sequence alone, cut to its
 * length). */
Test(rnn, padded_steps_are_inert) {
  ad_rng rng;
  ad_rng_seed(&rng, 8);
  nn_rnn_opts o = {.dtype = AD_F64, .num_layers = 2};
  nn_layer *l = nn_lstm_new(ctx, 2, 3, &rng, &o);
  int64_t sx[3] = {5, 2, 2}, lengths[2] = {5, 2};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 3, sx, -1, 1);
  for (int64_t t = 2; t < 5; t++) /* the padding holds NaN and infinity */
    for (int64_t k = 0; k < 2; k++) ad_tensor_set(x, (t * 2 + 1) * 2 + k, k ? INFINITY : NAN);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *hn, *cn;
  ad_tensor *y = nn_rnn_forward(l, x, NULL, NULL, lengths, 2, true, &hn, &cn);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, ad_add(ctx, ad_sum(ctx, y), ad_sum(ctx, hn)), NULL), AD_OK);
  for (int64_t t = 0; t < 5; t++)
    for (int64_t k = 0; k < 3; k++) {
      double v = ad_tensor_get(y, (t * 2 + 1) * 3 + k);
      if (t >= 2)
        cr_assert_eq(v, 0.0, "out[%lld, 1, %lld] = %g", (long long)t, (long long)k, v);
      else
        cr_assert_neq(v, 0.0);
    }
  for (int64_t t = 2; t < 5; t++)
    for (int64_t k = 0; k < 2; k++) cr_assert_eq(ad_tensor_get(x->grad, (t * 2 + 1) * 2 + k), 0.0);
  /* sequence 1 alone, two steps */
  int64_t s1[3] = {2, 1, 2};
  ad_tensor *x1 = ad_zeros(ctx, AD_F64, 3, s1);
  for (int64_t t = 0; t < 2; t++)
    for (int64_t k = 0; k < 2; k++)
      ad_tensor_set(x1, t * 2 + k, ad_tensor_get(x, (t * 2 + 1) * 2 + k));
  ad_tensor *hn1, *cn1;
  cr_assert_not_null(nn_rnn_forward(l, x1, NULL, NULL, NULL, 0, true, &hn1, &cn1));
  for (int k = 0; k < 2; k++)
    for (int64_t j = 0; j < 3; j++) {
      cr_assert_eq(ad_tensor_get(hn, (k * 2 + 1) * 3 + j), ad_tensor_get(hn1, k * 3 + j));
      cr_assert_eq(ad_tensor_get(cn, (k * 2 + 1) * 3 + j), ad_tensor_get(cn1, k * 3 + j));
    }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(x1);
  nn_layer_free(l);
}

/* An unbatched input [T, I] (and states [layers, H]) runs as a batch of
 * one, as in PyTorch: the same values, without the batch axis. */
Test(rnn, unbatched_input_is_a_batch_of_one) {
  ad_rng rng;
  ad_rng_seed(&rng, 12);
  for (int bf = 0; bf < 2; bf++) {
    nn_rnn_opts o = {.dtype = AD_F64, .num_layers = 2, .batch_first = bf};
    nn_layer *l = nn_lstm_new(ctx, 2, 3, &rng, &o);
    int64_t su[2] = {4, 2}, sb[3] = {4, 1, 2}, ss[2] = {2, 3}, ssb[3] = {2, 1, 3};
    if (bf) sb[0] = 1, sb[1] = 4;
    ad_tensor *xu = ad_rand(ctx, &rng, AD_F64, 2, su, -1, 1);
    ad_tensor *h0 = ad_rand(ctx, &rng, AD_F64, 2, ss, -1, 1),
              *c0 = ad_rand(ctx, &rng, AD_F64, 2, ss, -1, 1);
    ad_tensor *xb = ad_from_data(ctx, AD_F64, 3, sb, xu->data);
    ad_tensor *h0b = ad_from_data(ctx, AD_F64, 3, ssb, h0->data);
    ad_tensor *c0b = ad_from_data(ctx, AD_F64, 3, ssb, c0->data);
    ad_tensor *hn, *cn, *hnb, *cnb;
    ad_tensor *y = nn_rnn_forward(l, xu, h0, c0, NULL, 0, true, &hn, &cn);
    ad_tensor *yb = nn_rnn_forward(l, xb, h0b, c0b, NULL, 0, true, &hnb, &cnb);
    cr_assert(y && yb, "%s", ad_last_error(ctx));
    cr_assert_eq(y->ndim, 2);
    cr_assert_eq(y->shape[0], 4);
    cr_assert_eq(y->shape[1], 3);
    cr_assert_eq(hn->ndim, 2);
    cr_assert_eq(cn->ndim, 2);
    cr_assert_eq(hn->shape[0], 2);
    for (int64_t i = 0; i < y->size; i++) cr_assert_eq(ad_tensor_get(y, i), ad_tensor_get(yb, i));
    for (int64_t i = 0; i < hn->size; i++) {
      cr_assert_eq(ad_tensor_get(hn, i), ad_tensor_get(hnb, i));
      cr_assert_eq(ad_tensor_get(cn, i), ad_tensor_get(cnb, i));
    }
    ad_tape_reset(ctx);
    ad_tensor *ts[] = {xu, h0, c0, xb, h0b, c0b};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) ad_tensor_free(ts[i]);
    nn_layer_free(l);
  }
}

/* An empty batch (N = 0) runs, as in PyTorch: an empty output [T, 0, D H]
 * and final states [L D, 0, H], and a backward through them gives x, h0,
 * c0 and every parameter zero gradients (not none), on every path (RNN,
 * the fused sequence ops, per step, composed, projections), both layouts,
 * one and two directions, in training mode too. */
Test(rnn, empty_batch_gives_empty_output_and_zero_gradients) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  const struct {
    nn_rnn_cell cell;
    bool per_step, composed;
    int64_t proj;
  } kinds[] = {{NN_RNN_TANH, false, false, 0}, {NN_RNN_RELU, false, false, 0},
               {NN_RNN_LSTM, false, false, 0}, {NN_RNN_LSTM, true, false, 0},
               {NN_RNN_LSTM, false, true, 0},  {NN_RNN_LSTM, false, false, 2},
               {NN_RNN_GRU, false, false, 0},  {NN_RNN_GRU, true, false, 0},
               {NN_RNN_GRU, false, true, 0}};
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
    for (int v = 0; v < 4; v++) {
      bool bf = v & 1, bidir = v & 2, lstm = kinds[k].cell == NN_RNN_LSTM;
      nn_rnn_opts_ext o = {.base = {.dtype = AD_F64,
                                    .num_layers = 2,
                                    .batch_first = bf,
                                    .bidirectional = bidir,
                                    .dropout = 0.5,
                                    .per_step = kinds[k].per_step,
                                    .composed = kinds[k].composed},
                           .proj_size = kinds[k].proj};
      nn_layer *l = nn_rnn_new_ext(ctx, kinds[k].cell, 2, 3, &rng, &o);
      cr_assert_not_null(l, "%s", ad_last_error(ctx));
      int64_t D = bidir ? 2 : 1, R = kinds[k].proj ? kinds[k].proj : 3;
      int64_t sx[3] = {4, 0, 2}, sh[3] = {2 * D, 0, R}, sc[3] = {2 * D, 0, 3};
      int64_t sy[3] = {4, 0, D * R};
      if (bf) sx[0] = sy[0] = 0, sx[1] = sy[1] = 4;
      ad_tensor *x = ad_zeros(ctx, AD_F64, 3, sx), *h0 = ad_zeros(ctx, AD_F64, 3, sh);
      ad_tensor *c0 = lstm ? ad_zeros(ctx, AD_F64, 3, sc) : NULL;
      ad_tensor *in[] = {x, h0, c0};
      for (int i = 0; i < 3; i++)
        if (in[i]) ad_tensor_set_requires_grad(in[i], true);
      ad_tensor *hn = NULL, *cn = NULL;
      ad_tensor *y = nn_rnn_forward(l, x, h0, c0, NULL, 0, true, &hn, lstm ? &cn : NULL);
      test_expect_shape(ctx, y, 3, sy, "y");
      test_expect_shape(ctx, hn, 3, sh, "h_n");
      if (lstm) test_expect_shape(ctx, cn, 3, sc, "c_n");
      int64_t os[AD_MAX_DIMS];
      cr_assert_eq(nn_layer_output_shape(l, os), 3);
      cr_assert_eq(os[bf ? 0 : 1], 0);
      ad_tensor *loss = ad_add(ctx, ad_sum(ctx, y), ad_sum(ctx, hn));
      if (lstm) loss = ad_add(ctx, loss, ad_sum(ctx, cn));
      cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
      for (int i = 0; i < 3; i++)
        if (in[i]) test_expect_shape(ctx, in[i]->grad, 3, in[i]->shape, "input gradient");
      nn_params *ps = nn_layer_params(l);
      for (int i = 0; i < nn_params_count(ps); i++) {
        ad_tensor *g = nn_params_tensor(ps, i)->grad;
        cr_assert_not_null(g, "kind %zu v %d: %s has no gradient", k, v, nn_params_name(ps, i));
        for (int64_t j = 0; j < g->size; j++)
          cr_assert_eq(ad_tensor_get(g, j), 0.0, "%s[%lld]", nn_params_name(ps, i), (long long)j);
      }
      nn_params_zero_grad(ps);
      ad_tape_reset(ctx);
      for (int i = 0; i < 3; i++) ad_tensor_free(in[i]);
      nn_layer_free(l);
    }
}

/* The cell is made of the engine's ops: a graph dump of one LSTM step shows
 * the gates (sigmoid, tanh) fed by narrow slices of the matmuls, and the
 * parameters under PyTorch's names. */
/* opts.composed: the steps are the engine's ops, every gate in the dump;
 * by default one lstm_cell per step */
Test(rnn, graph_dump_shows_the_gates) {
  ad_rng rng;
  ad_rng_seed(&rng, 2);
  nn_model *m = nn_sequential_new(ctx);
  nn_rnn_opts o = {.composed = true};
  cr_assert_eq(nn_model_add(m, nn_lstm_new(ctx, 2, 3, &rng, &o)), AD_OK);
  int64_t sx[3] = {1, 1, 2};
  ad_tensor *x = ad_ones(ctx, AD_F32, 3, sx);
  ad_tensor *loss = ad_sum(ctx, nn_model_forward(m, x));
  cr_assert_not_null(loss, "%s", ad_last_error(ctx));
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_eq(ad_graph_dot(NULL, f, loss, 0), AD_OK, "%s", ad_last_error(ctx));
  fclose(f);
  const char *want[] = {"sigmoid",        "tanh",           "narrow",      "matmul",
                        "0.weight_ih_l0", "0.weight_hh_l0", "0.bias_ih_l0"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    cr_assert(strstr(buf, want[i]), "no %s in the dump:\n%s", want[i], buf);
  free(buf);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  nn_model_free(m);
}

/* ------------------------------------------------- fused vs composed */

/* A persistent copy of t. */
static ad_tensor *keep(const ad_tensor *t) {
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  ad_tensor *k = ad_from_data(ctx, t->dtype, t->ndim, t->shape, t->data);
  cr_assert_not_null(k, "%s", ad_last_error(ctx));
  return k;
}

/* Everything a run of layer l gives: outputs, final states, the gradients
 * of x, h0, c0 and of every parameter, as persistent copies in r[]. */
static int fused_run(nn_layer *l, ad_tensor *const *in, int n, const int64_t *lengths,
                     ad_tensor **r) {
  ad_tensor *hn, *cn;
  nn_params *p = nn_layer_params(l);
  nn_params_zero_grad(p);
  for (int i = 0; i < n; i++) ad_tensor_zero_grad(in[i]);
  ad_tensor *y = nn_rnn_forward(l, in[0], in[1], n > 2 ? in[2] : NULL, lengths, lengths ? 3 : 0,
                                true, &hn, &cn);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  ad_tensor *loss = dot(y, ad_rand(ctx, &rng, y->dtype, y->ndim, y->shape, -1, 1));
  loss = ad_add(ctx, loss, dot(hn, ad_rand(ctx, &rng, y->dtype, hn->ndim, hn->shape, -1, 1)));
  if (cn)
    loss = ad_add(ctx, loss, dot(cn, ad_rand(ctx, &rng, y->dtype, cn->ndim, cn->shape, -1, 1)));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  int k = 0;
  r[k++] = keep(y);
  r[k++] = keep(hn);
  if (cn) r[k++] = keep(cn);
  for (int i = 0; i < n; i++) r[k++] = keep(in[i]->grad);
  for (int i = 0; i < nn_params_count(p); i++) r[k++] = keep(nn_params_tensor(p, i)->grad);
  ad_tape_reset(ctx);
  return k;
}

/* The whole-sequence op (the default) and the fused cells per step
 * (opts.per_step) give the composed cells' (opts.composed) outputs and
 * gradients: f64 within 1e-12 relative, f32 1e-6 (the f32 one relative to
 * the result's largest element for the smaller: the fused float32 cell's
 * own exp and tanh differ from libm's by an ulp or two, which a cancelling
 * sum keeps in absolute terms). Two layers, initial states, full lengths,
 * lengths with a partial step, and lengths that all end before T;
 * batch_first with biases, and time-major without; dropout between the
 * layers (the same masks on every path). */
static void fused_vs_composed(nn_rnn_cell cell, ad_dtype dt, bool bidirectional) {
  double tol = dt == AD_F64 ? 1e-12 : 1e-6;
  ad_tensor *res[3][24];
  int count[3];
  int64_t ss[3] = {bidirectional ? 4 : 2, 3, 6}, lens[2][3] = {{5, 2, 4}, {3, 2, 4}};
  ad_rng rng;
  ad_rng_seed(&rng, 8);
  for (int layout = 0; layout < 2; layout++) {
    int64_t sx[3] = {3, 5, 4};
    if (layout) sx[0] = 5, sx[1] = 3; /* [T, N, I] */
    ad_tensor *in[3] = {ad_rand(ctx, &rng, dt, 3, sx, -2, 2), ad_rand(ctx, &rng, dt, 3, ss, -1, 1),
                        ad_rand(ctx, &rng, dt, 3, ss, -1, 1)};
    int n = cell == NN_RNN_LSTM ? 3 : 2;
    for (int i = 0; i < n; i++) ad_tensor_set_requires_grad(in[i], true);
    for (int l3 = 0; l3 < 3; l3++) {
      for (int mode = 0; mode < 3; mode++) { /* composed, per step, whole sequence */
        nn_rnn_opts o = {.num_layers = 2,
                         .batch_first = !layout,
                         .no_bias = layout == 1,
                         .dtype = dt,
                         .dropout = 0.4,
                         .seed = 3,
                         .composed = mode == 0,
                         .per_step = mode == 1,
                         .bidirectional = bidirectional};
        ad_rng prng;
        ad_rng_seed(&prng, 9); /* the same parameters every time */
        nn_layer *l = nn_rnn_new(ctx, cell, 4, 6, &prng, &o);
        cr_assert_not_null(l, "%s", ad_last_error(ctx));
        count[mode] = fused_run(l, in, n, l3 ? lens[l3 - 1] : NULL, res[mode]);
        nn_layer_free(l);
      }
      for (int mode = 1; mode < 3; mode++) {
        cr_assert_eq(count[mode], count[0]);
        for (int k = 0; k < count[0]; k++) {
          const ad_tensor *a = res[mode][k], *b = res[0][k];
          cr_assert_not_null(a);
          cr_assert_eq(a->size, b->size);
          double scale = 0; /* relative to the largest element for small ones */
          for (int64_t i = 0; i < b->size; i++) scale = fmax(scale, fabs(ad_tensor_get(b, i)));
          for (int64_t i = 0; i < a->size; i++) {
            double x = ad_tensor_get(a, i), y = ad_tensor_get(b, i);
            QUICK_ASSERT(test_close(x, y, tol * fmax(fabs(y), dt == AD_F64 ? 1e-3 * scale : scale)),
                         "%s%s %s layout %d lengths %d %s result %d [%lld]: fused %.17g, "
                         "composed %.17g (scale %g)",
                         cell == NN_RNN_LSTM ? "lstm" : "gru",
                         bidirectional ? " bidirectional" : "", ad_dtype_name(dt), layout, l3,
                         mode == 1 ? "per step" : "sequence", k, (long long)i, x, y, scale);
          }
        }
      }
      for (int c = 0; c < 3; c++)
        for (int k = 0; k < count[c]; k++) ad_tensor_free(res[c][k]);
    }
    for (int i = 0; i < 3; i++) ad_tensor_free(in[i]);
  }
}

Test(rnn, fused_lstm_matches_composed) {
  fused_vs_composed(NN_RNN_LSTM, AD_F64, false);
  fused_vs_composed(NN_RNN_LSTM, AD_F32, false);
}
Test(rnn, fused_gru_matches_composed) {
  fused_vs_composed(NN_RNN_GRU, AD_F64, false);
  fused_vs_composed(NN_RNN_GRU, AD_F32, false);
}
/* bidirectional: the reversal and the concatenated dropout mask agree too */
Test(rnn, fused_bidirectional_matches_composed) {
  for (int cell = NN_RNN_LSTM; cell <= NN_RNN_GRU; cell++) {
    fused_vs_composed((nn_rnn_cell)cell, AD_F64, true);
    fused_vs_composed((nn_rnn_cell)cell, AD_F32, true);
  }
}

/* Second order through the fused layer: its backward is recorded from ops. */
static ad_tensor *gg_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c, (void)n;
  return nn_rnn_forward(ud, in[0], in[1], NULL, NULL, 0, true, NULL, NULL);
}

Test(rnn, fused_cells_gradgradcheck) {
  for (int v = 0; v < 4; v++) { /* LSTM, GRU; one direction, bidirectional */
    int cell = NN_RNN_LSTM + (v & 1);
    bool bi = v & 2;
    ad_rng rng;
    ad_rng_seed(&rng, 12);
    nn_rnn_opts o = {.dtype = AD_F64, .bidirectional = bi};
    nn_layer *l = nn_rnn_new(ctx, (nn_rnn_cell)cell, 2, 3, &rng, &o);
    int64_t sx[3] = {3, 2, 2}, ss[3] = {bi ? 2 : 1, 2, 3};
    ad_tensor *in[2] = {ad_rand(ctx, &rng, AD_F64, 3, sx, -1, 1),
                        ad_rand(ctx, &rng, AD_F64, 3, ss, -1, 1)};
    for (int i = 0; i < 2; i++) ad_tensor_set_requires_grad(in[i], true);
    ad_check_report rep;
    cr_assert_eq(ad_gradgradcheck(ctx, gg_fn, l, 2, in, NULL, &rep), AD_OK, "%s",
                 ad_last_error(ctx));
    cr_assert(rep.passed, "%s%s: input %d [%lld] analytic %g numeric %g", nn_layer_kind(l),
              bi ? " bidirectional" : "", rep.input, (long long)rep.index, rep.analytic,
              rep.numeric);
    for (int i = 0; i < 2; i++) ad_tensor_free(in[i]);
    nn_layer_free(l);
  }
}

/* With per_step the graph dump has one fused op per step. */
Test(rnn, per_step_dump_shows_fused_cells) {
  ad_rng rng;
  ad_rng_seed(&rng, 2);
  nn_rnn_opts o = {.per_step = true};
  nn_layer *l = nn_lstm_new(ctx, 2, 3, &rng, &o);
  int64_t sx[3] = {2, 1, 2};
  ad_tensor *x = ad_ones(ctx, AD_F32, 3, sx);
  ad_tensor *loss = ad_sum(ctx, nn_rnn_forward(l, x, NULL, NULL, NULL, 0, true, NULL, NULL));
  cr_assert_not_null(loss, "%s", ad_last_error(ctx));
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_eq(ad_graph_dot(NULL, f, loss, 0), AD_OK, "%s", ad_last_error(ctx));
  fclose(f);
  cr_assert(strstr(buf, "lstm_cell"), "no lstm_cell in the dump:\n%s", buf);
  cr_assert_null(strstr(buf, "sigmoid"), "a sigmoid in the fused dump:\n%s", buf);
  free(buf);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  nn_layer_free(l);
}

/* The cell ops name bad shapes and dtypes. */
Test(rnn, cell_ops_bad_input_is_named) {
  int64_t s24[2] = {2, 4}, s23[2] = {2, 3}, s36[2] = {3, 6}, s21[2] = {2, 1};
  ad_tensor *a = ad_zeros(ctx, AD_F32, 2, s24), *c = ad_zeros(ctx, AD_F32, 2, s23);
  ad_tensor *c1 = ad_zeros(ctx, AD_F32, 2, s21), *b = ad_zeros(ctx, AD_F32, 2, s36);
  ad_tensor *d = ad_zeros(ctx, AD_F64, 2, s21);
  cr_assert_null(ad_lstm_cell(ctx, a, c));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "lstm_cell: gates [2,4] and state [2,3] must be [N, 4 H] and [N, H]");
  cr_assert_null(ad_lstm_cell(ctx, a, d));
  expect_status_msg(ctx, AD_ERR_DTYPE, "lstm_cell");
  cr_assert_not_null(ad_lstm_cell(ctx, a, c1), "%s", ad_last_error(ctx));
  cr_assert_null(ad_gru_cell(ctx, c, b, c1));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "gru_cell: gates [2,3] and [3,6] and state [2,1] must be [N, 3 H], [N, 3 H] and [N, H]");
  /* a state of size 0 is refused (the parallel loop's grain divided by H:
   * SIGFPE) */
  int64_t s20[2] = {2, 0};
  ad_tensor *z = ad_zeros(ctx, AD_F32, 2, s20);
  cr_assert_null(ad_lstm_cell(ctx, z, z));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "lstm_cell: gates [2,0] and state [2,0]: the state size H is 0; it must be >= 1");
  cr_assert_null(ad_gru_cell(ctx, z, z, z));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "gru_cell: gates [2,0] and state [2,0]: the state size H is 0");
  ad_tape_reset(ctx);
  ad_tensor *all[] = {a, c, c1, b, d, z};
  for (size_t i = 0; i < 6; i++) ad_tensor_free(all[i]);
}

/* The whole-sequence layer gives the same bits on two threads as on one:
 * the batch's rows are cut into blocks that run every step on one thread
 * (the per-step products, 2.1M multiply-adds with W_hh packed once, and
 * the cells, each on its block's rows), and every product stays in the
 * built-in kernel's size class on any CPU (at most 4M multiply-adds). */
Test(rnn, sequence_layer_bits_do_not_depend_on_threads) {
  for (int v = 0; v < 4; v++) { /* LSTM, GRU; one direction, bidirectional */
    int cell = NN_RNN_LSTM + (v & 1);
    bool bidirectional = v & 2;
    ad_tensor *res[2][24];
    int count[2];
    int64_t sx[3] = {2, 32, 16}, ss[3] = {bidirectional ? 2 : 1, 32, 128};
    ad_rng rng;
    ad_rng_seed(&rng, 21);
    ad_tensor *in[3] = {ad_rand(ctx, &rng, AD_F32, 3, sx, -1, 1),
                        ad_rand(ctx, &rng, AD_F32, 3, ss, -1, 1),
                        ad_rand(ctx, &rng, AD_F32, 3, ss, -1, 1)};
    int n = cell == NN_RNN_LSTM ? 3 : 2;
    for (int i = 0; i < n; i++) ad_tensor_set_requires_grad(in[i], true);
    for (int threads = 1; threads <= 2; threads++) {
      cr_assert_eq(ad_set_num_threads(threads), AD_OK);
      ad_rng prng;
      ad_rng_seed(&prng, 22);
      nn_rnn_opts o = {.bidirectional = bidirectional};
      nn_layer *l = nn_rnn_new(ctx, (nn_rnn_cell)cell, 16, 128, &prng, &o);
      cr_assert_not_null(l, "%s", ad_last_error(ctx));
      count[threads - 1] = fused_run(l, in, n, NULL, res[threads - 1]);
      nn_layer_free(l);
    }
    cr_assert_eq(ad_set_num_threads(1), AD_OK);
    cr_assert_eq(count[0], count[1]);
    for (int k = 0; k < count[0]; k++) {
      cr_assert_eq(res[0][k]->size, res[1][k]->size);
      cr_assert_eq(memcmp(res[0][k]->data, res[1][k]->data, (size_t)res[0][k]->size * 4), 0,
                   "%s%s result %d differs on two threads", cell == NN_RNN_LSTM ? "lstm" : "gru",
                   bidirectional ? " bidirectional" : "", k);
      ad_tensor_free(res[0][k]);
      ad_tensor_free(res[1][k]);
    }
    for (int i = 0; i < 3; i++) ad_tensor_free(in[i]);
  }
}

static void no_hook(void *ud, const ad_backward_step *step) { (void)ud, (void)step; }

/* A plain backward sends the layer's output gradient to the sequence op
 * without padding it to the op's [., 7H] (LSTM) or [., 5H] (GRU) output
 * (tape.c: lead_pass): the same bits as the padded gradient, which a
 * backward hook forces. The output alone; with the final states too (a
 * second contribution, which pads the first); with lengths (masked rows);
 * f32 and f64, batch-major and time-major. */
Test(rnn, narrowed_output_gradient_gives_the_padded_bits) {
  int64_t lens[3] = {5, 2, 4};
  for (int v = 0; v < 16; v++) {
    nn_rnn_cell cell = v & 1 ? NN_RNN_GRU : NN_RNN_LSTM;
    ad_dtype dt = v & 2 ? AD_F32 : AD_F64;
    bool states = v & 4, lengths = v & 8, bf = !(v & 4) || (v & 8);
    int64_t sx[3] = {3, 5, 4}, ss[2] = {3, 6};
    if (!bf) sx[0] = 5, sx[1] = 3;
    ad_rng rng;
    ad_rng_seed(&rng, 30 + v);
    ad_tensor *x = ad_rand(ctx, &rng, dt, 3, sx, -2, 2), *h0 = ad_rand(ctx, &rng, dt, 2, ss, -1, 1);
    ad_tensor_set_requires_grad(x, true);
    ad_tensor_set_requires_grad(h0, true);
    ad_tensor *res[2][8];
    int count = 0;
    for (int hook = 0; hook < 2; hook++) {
      ad_rng prng;
      ad_rng_seed(&prng, 31);
      nn_rnn_opts o = {.batch_first = bf, .dtype = dt};
      nn_layer *l = nn_rnn_new(ctx, cell, 4, 6, &prng, &o);
      cr_assert_not_null(l, "%s", ad_last_error(ctx));
      nn_params *p = nn_layer_params(l);
      ad_tensor *h0s = ad_reshape(ctx, h0, 3, (int64_t[3]){1, 3, 6}), *hn, *cn;
      ad_tensor *y =
          nn_rnn_forward(l, x, h0s, NULL, lengths ? lens : NULL, lengths ? 3 : 0, true, &hn, &cn);
      cr_assert_not_null(y, "%s", ad_last_error(ctx));
      ad_rng_seed(&rng, 5);
      ad_tensor *loss = dot(y, ad_rand(ctx, &rng, dt, y->ndim, y->shape, -1, 1));
      if (states) {
        loss = ad_add(ctx, loss, dot(hn, ad_rand(ctx, &rng, dt, hn->ndim, hn->shape, -1, 1)));
        if (cn)
          loss = ad_add(ctx, loss, dot(cn, ad_rand(ctx, &rng, dt, cn->ndim, cn->shape, -1, 1)));
      }
      if (hook) ad_set_backward_hook(ctx, no_hook, NULL);
      cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
      ad_set_backward_hook(ctx, NULL, NULL);
      count = 0;
      res[hook][count++] = keep(x->grad);
      res[hook][count++] = keep(h0->grad);
      for (int i = 0; i < nn_params_count(p); i++)
        res[hook][count++] = keep(nn_params_tensor(p, i)->grad);
      ad_tensor_zero_grad(x);
      ad_tensor_zero_grad(h0);
      ad_tape_reset(ctx);
      nn_layer_free(l);
    }
    for (int k = 0; k < count; k++) {
      bool nonzero = false;
      for (int64_t i = 0; i < res[0][k]->size; i++) {
        double a = ad_tensor_get(res[0][k], i), b = ad_tensor_get(res[1][k], i);
        QUICK_ASSERT(a == b, "variant %d result %d [%lld]: %.17g, padded %.17g", v, k, (long long)i,
                     a, b);
        nonzero |= a != 0;
      }
      cr_assert(nonzero, "variant %d result %d is all zero", v, k);
      ad_tensor_free(res[0][k]);
      ad_tensor_free(res[1][k]);
    }
    ad_tensor_free(x);
    ad_tensor_free(h0);
  }
}

/* A narrowed gradient that is not the h block alone (h and c: the first
 * 2H columns of lstm_seq's output) is padded by the op's backward: the
 * same bits as the padded path. */
Test(rnn, narrowed_output_gradient_wider_than_h) {
  int64_t sx[3] = {4, 3, 8}, sw[2] = {8, 2}, sb[1] = {8}, sh[2] = {3, 2};
  ad_rng rng;
  ad_rng_seed(&rng, 40);
  ad_tensor *in[5] = {
      ad_rand(ctx, &rng, AD_F64, 3, sx, -2, 2), ad_rand(ctx, &rng, AD_F64, 2, sw, -1, 1),
      ad_rand(ctx, &rng, AD_F64, 1, sb, -1, 1), ad_rand(ctx, &rng, AD_F64, 2, sh, -1, 1),
      ad_rand(ctx, &rng, AD_F64, 2, sh, -1, 1)};
  for (int i = 0; i < 5; i++) ad_tensor_set_requires_grad(in[i], true);
  ad_tensor *res[2][5];
  for (int hook = 0; hook < 2; hook++) {
    ad_tensor *y = ad_lstm_seq(ctx, in[0], in[1], in[2], in[3], in[4], NULL, false);
    ad_tensor *hc = ad_narrow(ctx, y, 2, 0, 4);
    ad_rng_seed(&rng, 41);
    ad_tensor *loss = dot(hc, ad_rand(ctx, &rng, AD_F64, hc->ndim, hc->shape, -1, 1));
    if (hook) ad_set_backward_hook(ctx, no_hook, NULL);
    cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
    ad_set_backward_hook(ctx, NULL, NULL);
    for (int i = 0; i < 5; i++) {
      res[hook][i] = keep(in[i]->grad);
      ad_tensor_zero_grad(in[i]);
    }
    ad_tape_reset(ctx);
  }
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(memcmp(res[0][i]->data, res[1][i]->data, (size_t)res[0][i]->size * 8), 0,
                 "input %d", i);
    ad_tensor_free(res[0][i]);
    ad_tensor_free(res[1][i]);
    ad_tensor_free(in[i]);
  }
}

/* The sequence ops name bad shapes, dtypes and time axes. */
Test(rnn, sequence_ops_bad_input_is_named) {
  int64_t sx[3] = {3, 2, 8}, sw[2] = {8, 2}, sh[2] = {2, 2}, sm[2] = {3, 2}, sb[1] = {6};
  int64_t sx3[3] = {3, 2, 6}, sw3[2] = {6, 2}, s0[3] = {0, 2, 8}, sbad[2] = {2, 3}, sb4[1] = {8};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 3, sx), *w = ad_zeros(ctx, AD_F32, 2, sw);
  ad_tensor *h = ad_zeros(ctx, AD_F32, 2, sh), *m = ad_ones(ctx, AD_F32, 2, sm);
  ad_tensor *hbad = ad_zeros(ctx, AD_F32, 2, sbad), *h64 = ad_zeros(ctx, AD_F64, 2, sh);
  ad_tensor *x3 = ad_zeros(ctx, AD_F32, 3, sx3), *w3 = ad_zeros(ctx, AD_F32, 2, sw3);
  ad_tensor *b = ad_zeros(ctx, AD_F32, 1, sb), *x0 = ad_zeros(ctx, AD_F32, 3, s0);
  ad_tensor *b4 = ad_zeros(ctx, AD_F32, 1, sb4);
  cr_assert_not_null(ad_lstm_seq(ctx, x, w, b4, h, h, m, false), "%s", ad_last_error(ctx));
  cr_assert_not_null(ad_gru_seq(ctx, x3, w3, b, b, h, m, false), "%s", ad_last_error(ctx));
  cr_assert_null(ad_lstm_seq(ctx, x, w, b4, hbad, h, NULL, false));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "lstm_seq: h0 [2,3] must be [N, H] for inputs [3,2,8] ([T, N, 4 H]) and weight "
                    "[8,2] ([4 H, H])");
  cr_assert_null(ad_lstm_seq(ctx, x, w, b4, h, hbad, NULL, false)); /* c0 named, not h0 */
  expect_status_msg(ctx, AD_ERR_SHAPE, "lstm_seq: c0 [2,3] must be [N, H] for inputs [3,2,8]");
  cr_assert_null(ad_lstm_seq(ctx, x, w, b4, h, h, m, true)); /* batch-major: N = 3 */
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "lstm_seq: h0 [2,2] must be [N, H] for inputs [3,2,8] ([N, T, 4 H])");
  cr_assert_null(ad_gru_seq(ctx, x, w, b, b, h, NULL, false));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "gru_seq: weight [8,2] must be [3 H, H] for inputs [3,2,8] ([T, N, 3 H])");
  cr_assert_null(ad_lstm_seq(ctx, x, w, b, h, h, NULL, false)); /* b [6], not [8] */
  expect_status_msg(ctx, AD_ERR_SHAPE, "lstm_seq: b [6] must be [4 H] for inputs [3,2,8]");
  cr_assert_null(ad_lstm_seq(ctx, x, w, NULL, h, h, NULL, false));
  expect_status_msg(ctx, AD_ERR_NULL, "lstm_seq");
  cr_assert_null(ad_gru_seq(ctx, x3, w3, b, b4, h, NULL, false)); /* b_hh [8], not [6] */
  expect_status_msg(ctx, AD_ERR_SHAPE, "gru_seq: b_hh [8] must be [3 H] for inputs [3,2,6]");
  cr_assert_null(ad_gru_seq(ctx, x3, w3, hbad, b, h, NULL, false)); /* b_ih, with its shape */
  expect_status_msg(ctx, AD_ERR_SHAPE, "gru_seq: b_ih [2,3] must be [3 H] for inputs [3,2,6]");
  cr_assert_null(ad_lstm_seq(ctx, x, w, b4, h, h, hbad, false));
  expect_status_msg(ctx, AD_ERR_SHAPE, "lstm_seq: mask [2,3] must be [T, N] for inputs [3,2,8]");
  ad_tensor_set(m, 3, 0.5); /* a mask is 0 or 1: element [1,1] */
  cr_assert_null(ad_lstm_seq(ctx, x, w, b4, h, h, m, false));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "lstm_seq: mask element [1,1] is 0.5; it must be 1 (the step is taken) or 0");
  ad_tensor_set(m, 3, NAN);
  cr_assert_null(ad_gru_seq(ctx, x3, w3, b, b, h, m, false));
  expect_status_msg(ctx, AD_ERR_ARG, "gru_seq: mask element [1,1] is nan");
  ad_tensor_set(m, 3, 0.0);
  cr_assert_not_null(ad_lstm_seq(ctx, x, w, b4, h, h, m, false), "%s", ad_last_error(ctx));
  cr_assert_null(ad_lstm_seq(ctx, x, w, b4, h64, h, NULL, false));
  expect_status_msg(ctx, AD_ERR_DTYPE, "lstm_seq");
  cr_assert_null(ad_lstm_seq(ctx, x0, w, b4, h, h, NULL, false));
  expect_status_msg(ctx, AD_ERR_SHAPE, "lstm_seq: inputs [0,2,8], weight [8,2]: an empty sequence");
  ad_tensor *in[5] = {x, w, b4, h, h};
  ad_attrs at = {.axis = 2};
  cr_assert_null(ad_op_apply(ctx, ad_op_find(ctx, "lstm_seq"), 5, in, &at));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "lstm_seq: time axis 2; it must be 0 ([T, N, .]) or 1 ([N, T, .])");
  ad_tape_reset(ctx);
  ad_tensor *all[] = {x, w, h, m, hbad, h64, x3, w3, b, x0, b4};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ad_tensor_free(all[i]);
}

/* ------------------------------------------------------------- dropout */

Test(rnn, dropout_between_layers_in_training_only) {
  ad_rng rng;
  ad_rng_seed(&rng, 4);
  nn_rnn_opts o = {.num_layers = 2, .dropout = 0.5, .seed = 9, .dtype = AD_F64};
  nn_layer *l = nn_gru_new(ctx, 3, 6, &rng, &o);
  ad_rng_seed(&rng, 4);
  o.dropout = 0;
  nn_layer *plain = nn_gru_new(ctx, 3, 6, &rng, &o); /* the same weights */
  o.num_layers = 1;
  o.dropout = 0.5;
  ad_rng_seed(&rng, 4);
  nn_layer *one = nn_gru_new(ctx, 3, 6, &rng, &o);
  cr_assert(l && plain && one, "%s", ad_last_error(ctx));
  int64_t sx[3] = {4, 5, 3};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 3, sx, -1, 1);
  ad_tensor *ye = nn_rnn_forward(l, x, NULL, NULL, NULL, 0, false, NULL, NULL);
  ad_tensor *yp = nn_rnn_forward(plain, x, NULL, NULL, NULL, 0, true, NULL, NULL);
  ad_tensor *yt = nn_rnn_forward(l, x, NULL, NULL, NULL, 0, true, NULL, NULL);
  cr_assert(ye && yp && yt, "%s", ad_last_error(ctx));
  int64_t differ = 0;
  for (int64_t i = 0; i < ye->size; i++) {
    cr_assert_eq(ad_tensor_get(ye, i), ad_tensor_get(yp, i), "eval mode has no dropout");
    differ += ad_tensor_get(yt, i) != ad_tensor_get(ye, i);
  }
  cr_assert_gt(differ, ye->size / 2, "training mode drops: %lld of %lld differ", (long long)differ,
               (long long)ye->size);
  /* one layer: nothing between layers, so no dropout */
  ad_tensor *y1t = nn_rnn_forward(one, x, NULL, NULL, NULL, 0, true, NULL, NULL);
  ad_tensor *y1e = nn_rnn_forward(one, x, NULL, NULL, NULL, 0, false, NULL, NULL);
  for (int64_t i = 0; i < y1t->size; i++)
    cr_assert_eq(ad_tensor_get(y1t, i), ad_tensor_get(y1e, i));
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  nn_layer_free(l);
  nn_layer_free(plain);
  nn_layer_free(one);
}

/* ----------------------------------------------------------- bad input */

Test(rnn, bad_input_is_named) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_model *m = nn_sequential_new(ctx);
  nn_rnn_opts o = {.num_layers = 2};
  cr_assert_eq(nn_model_add(m, nn_lstm_new(ctx, 3, 4, &rng, &o)), AD_OK);
  nn_layer *l = nn_model_layer(m, 0);
  int64_t s4[4] = {5, 2, 1, 3}, s3[3] = {5, 2, 3}, s3b[3] = {5, 2, 7}, s0[3] = {0, 2, 3};
  ad_tensor *x4 = ad_zeros(ctx, AD_F32, 4, s4), *x = ad_zeros(ctx, AD_F32, 3, s3);
  ad_tensor *xb = ad_zeros(ctx, AD_F32, 3, s3b), *x0 = ad_zeros(ctx, AD_F32, 3, s0);
  ad_tensor *xd = ad_zeros(ctx, AD_F64, 3, s3);
  cr_assert_null(nn_model_forward(m, x4));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "lstm '0': input [5,2,1,3] has 4 dims; the layer expects [T, N, 3] or unbatched "
      "[T, 3]");
  cr_assert_null(nn_model_forward(m, xb));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "lstm '0': input [5,2,7] has 7 features (dim 2), the layer's input_size is 3");
  cr_assert_null(nn_model_forward(m, x0));
  expect_status_msg(ctx, AD_ERR_SHAPE, "lstm '0': input [0,2,3] is an empty sequence (T = 0)");
  cr_assert_null(nn_model_forward(m, xd));
  expect_status_msg(ctx, AD_ERR_DTYPE, "lstm '0': input [5,2,3] is f64, the layer is f32");

  int64_t sh_bad[3] = {2, 2, 5}, sh_l[3] = {1, 2, 4}, sh_n[3] = {2, 3, 4};
  ad_tensor *hb = ad_zeros(ctx, AD_F32, 3, sh_bad), *hl = ad_zeros(ctx, AD_F32, 3, sh_l);
  ad_tensor *hnb = ad_zeros(ctx, AD_F32, 3, sh_n);
  cr_assert_null(nn_rnn_forward(l, x, hb, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "lstm '0': h0 [2,2,5] must be [num_layers 2, batch 2, hidden_size 4]");
  cr_assert_null(nn_rnn_forward(l, x, NULL, hl, NULL, 0, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "c0 [1,2,4] must be [num_layers 2, batch 2, hidden_size 4]");
  cr_assert_null(nn_rnn_forward(l, x, hnb, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "h0 [2,3,4] must be [num_layers 2, batch 2, hidden_size 4]");

  int64_t zero[2] = {0, 3}, over[2] = {3, 6}, ok[2] = {5, 1};
  cr_assert_null(nn_rnn_forward(l, x, NULL, NULL, zero, 2, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "lstm '0': length 0 of sequence 0 is outside 1..5 (T)");
  cr_assert_null(nn_rnn_forward(l, x, NULL, NULL, over, 2, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "length 6 of sequence 1 is outside 1..5 (T)");
  cr_assert_null(nn_rnn_forward(l, x, NULL, NULL, ok, 3, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "lstm '0': 3 lengths for a batch of 2 sequences");
  cr_assert_null(nn_rnn_forward(l, x, NULL, NULL, NULL, 2, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "lengths is NULL but n_lengths is 2");
  ad_tensor *hn = (ad_tensor *)1;
  cr_assert_not_null(nn_rnn_forward(l, x, NULL, NULL, ok, 2, true, &hn, NULL));
  cr_assert_not_null(hn);

  /* a GRU has no cell state; a dense layer is not recurrent */
  nn_rnn_opts bf = {.batch_first = true};
  nn_layer *g = nn_gru_new(ctx, 3, 4, &rng, &bf);
  int64_t sg[3] = {2, 1, 4};
  ad_tensor *cg = ad_zeros(ctx, AD_F32, 3, sg), *cnp = (ad_tensor *)1;
  cr_assert_null(nn_rnn_forward(g, x, NULL, cg, NULL, 0, true, NULL, &cnp));
  expect_status_msg(ctx, AD_ERR_ARG, "gru: c0 is given, but only an LSTM has a cell state");
  cr_assert_null(cnp, "c_n is cleared on error");
  int64_t s1[1] = {3}, s2[2] = {5, 2};
  ad_tensor *x1 = ad_zeros(ctx, AD_F32, 1, s1), *x2 = ad_zeros(ctx, AD_F32, 2, s2);
  cr_assert_null(nn_rnn_forward(g, x1, NULL, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "gru: input [3] has 1 dims; the layer expects [N, T, 3] (batch_first) or unbatched "
      "[T, 3]");
  cr_assert_null(nn_rnn_forward(g, x2, NULL, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "gru: input [5,2] has 2 features (dim 1), the layer's input_size is 3");
  int64_t sh2[2] = {1, 4}, s5[2] = {5, 3};
  ad_tensor *hu = ad_zeros(ctx, AD_F32, 2, sh2), *xu = ad_zeros(ctx, AD_F32, 2, s5);
  cr_assert_null(nn_rnn_forward(l, xu, hu, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "lstm '0': h0 [1,4] must be [num_layers 2, hidden_size 4] for an unbatched input");
  cr_assert_null(nn_rnn_forward(l, xu, hb, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "h0 [2,2,5] must be [num_layers 2, hidden_size 4]");
  /* batch_first: [N, T, I]; an empty batch runs (as PyTorch), no steps do not */
  int64_t sbn[3] = {0, 4, 3}, sbt[3] = {4, 0, 3};
  ad_tensor *xn0 = ad_zeros(ctx, AD_F32, 3, sbn), *xt0 = ad_zeros(ctx, AD_F32, 3, sbt);
  test_expect_shape(ctx, nn_rnn_forward(g, xn0, NULL, NULL, NULL, 0, true, NULL, NULL), 3,
                    (int64_t[3]){0, 4, 4}, "empty batch");
  cr_assert_null(nn_rnn_forward(g, xt0, NULL, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "gru: input [4,0,3] is an empty sequence (T = 0)");
  nn_layer *d = nn_dense_new(ctx, 3, 4, &rng, NULL);
  cr_assert_null(nn_rnn_forward(d, x, NULL, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "rnn_forward: dense is not a recurrent layer");
  cr_assert_null(nn_rnn_forward(g, NULL, NULL, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "rnn_forward: x is NULL");
  cr_assert_null(nn_rnn_forward(NULL, x, NULL, NULL, NULL, 0, true, NULL, NULL));

  /* constructors */
  cr_assert_null(nn_lstm_new(ctx, 3, 0, &rng, NULL));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "lstm: input_size 3, hidden_size 0 and num_layers 1 must each be >= 1");
  nn_rnn_opts neg = {.num_layers = -1};
  cr_assert_null(nn_gru_new(ctx, 3, 2, &rng, &neg));
  expect_status_msg(ctx, AD_ERR_ARG, "gru: input_size 3, hidden_size 2 and num_layers -1");
  nn_rnn_opts dp = {.dropout = 1};
  cr_assert_null(nn_rnn_new(ctx, NN_RNN_TANH, 3, 2, &rng, &dp));
  expect_status_msg(ctx, AD_ERR_ARG, "rnn_tanh: dropout 1 is outside [0, 1)");
  nn_rnn_opts di = {.dtype = AD_I32};
  cr_assert_null(nn_rnn_new(ctx, NN_RNN_RELU, 3, 2, &rng, &di));
  expect_status_msg(ctx, AD_ERR_DTYPE, "rnn_relu: parameters must be float, got i32");
  cr_assert_null(nn_rnn_new(ctx, (nn_rnn_cell)9, 3, 2, &rng, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "rnn_new: unknown cell 9");
  cr_assert_null(nn_lstm_new(ctx, 3, 2, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "lstm: rng is NULL");
  cr_assert_null(nn_lstm_new(NULL, 3, 2, &rng, NULL));

  ad_tape_reset(ctx);
  ad_tensor *ts[] = {x4, x, xb, x0, xd, hb, hl, hnb, cg, xn0, xt0, x1, x2, hu, xu};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) ad_tensor_free(ts[i]);
  nn_layer_free(g);
  nn_layer_free(d);
  nn_model_free(m);
}

/* The sequence ops' plain backward (one loop per row, W_hh's gradient as
 * one product over all steps) against
 * their backward built from ops (create_graph: the same rules through
 * matmul, stack, sum), on shapes that are not multiples of the kernels'
 * vector widths or block sizes: batches of 1, 5 and 33, hidden sizes 7, 20,
 * 37 and 16, one step to four, both layouts, with a mask in one case; every
 * input's gradient, f64 within 1e-12 and f32 within 1e-5 of the largest
 * element. */
Test(rnn, sequence_op_gradients_odd_shapes) {
  static const int64_t shapes[][3] = {{1, 7, 3}, {5, 20, 4}, {33, 37, 2}, {3, 16, 1}}; /* N H T */
  for (int cell = 0; cell < 2; cell++)
    for (ad_dtype dt = AD_F32; dt <= AD_F64; dt++)
      for (int tax = 0; tax < 2; tax++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
          int64_t N = shapes[s][0], H = shapes[s][1], T = shapes[s][2], G = cell ? 3 : 4;
          ad_rng rng;
          ad_rng_seed(&rng, 40 + s);
          int64_t sx[3] = {tax ? N : T, tax ? T : N, G * H}, sw[2] = {G * H, H}, sb[1] = {G * H};
          int64_t sh[2] = {N, H}, sm[2] = {T, N};
          ad_tensor *in[6] = {ad_rand(ctx, &rng, dt, 3, sx, -1, 1),
                              ad_rand(ctx, &rng, dt, 2, sw, -0.5, 0.5),
                              ad_rand(ctx, &rng, dt, 1, sb, -0.5, 0.5),
                              ad_rand(ctx, &rng, dt, cell ? 1 : 2, cell ? sb : sh, -0.5, 0.5),
                              ad_rand(ctx, &rng, dt, 2, sh, -1, 1),
                              NULL};
          int n = 5;
          ad_tensor *mask = NULL;
          if (s == 1) { /* sequence 0 ends after two steps */
            mask = ad_ones(ctx, dt, 2, sm);
            cr_assert_not_null(mask);
            for (int64_t t = 2; t < T; t++) ad_tensor_set(mask, t * N, 0.0);
          }
          for (int i = 0; i < n; i++) {
            cr_assert_not_null(in[i], "%s", ad_last_error(ctx));
            ad_tensor_set_requires_grad(in[i], true);
          }
          ad_tensor *y = cell ? ad_gru_seq(ctx, in[0], in[1], in[2], in[3], in[4], mask, tax)
                              : ad_lstm_seq(ctx, in[0], in[1], in[2], in[4], in[3], mask, tax);
          cr_assert_not_null(y, "%s", ad_last_error(ctx));
          ad_tensor *loss = dot(y, ad_rand(ctx, &rng, dt, y->ndim, y->shape, -1, 1));
          ad_tensor *plain[6], *graph[6];
          cr_assert_eq(ad_grad(ctx, loss, NULL, n, in, plain, false), AD_OK, "%s",
                       ad_last_error(ctx));
          cr_assert_eq(ad_grad(ctx, loss, NULL, n, in, graph, true), AD_OK, "%s",
                       ad_last_error(ctx));
          double tol = dt == AD_F64 ? 1e-12 : 1e-5;
          for (int i = 0; i < n; i++) {
            const ad_tensor *a = plain[i], *b = graph[i];
            cr_assert_eq(a->size, b->size);
            double scale = 0;
            for (int64_t k = 0; k < b->size; k++) scale = fmax(scale, fabs(ad_tensor_get(b, k)));
            for (int64_t k = 0; k < a->size; k++)
              QUICK_ASSERT(fabs(ad_tensor_get(a, k) - ad_tensor_get(b, k)) <= tol * scale,
                           "%s %s axis %d N %lld H %lld T %lld: gradient %d [%lld]: plain %.17g, "
                           "from ops %.17g",
                           cell ? "gru" : "lstm", ad_dtype_name(dt), tax, (long long)N,
                           (long long)H, (long long)T, i, (long long)k, ad_tensor_get(a, k),
                           ad_tensor_get(b, k));
          }
          ad_tape_reset(ctx);
          for (int i = 0; i < n; i++) ad_tensor_free(in[i]);
          ad_tensor_free(mask);
        }
}

/* A saturated float32 gate is 0, as PyTorch's float sigmoid gives below
 * -88.7: with a forget-gate pre-activation of -1000, an infinite cell
 * state gives NaN (0 * inf) in every mode and dtype, as in PyTorch, and a
 * state of 1e38 with -100 gives c' = 0 on the fused paths (a gate of
 * 1.2e-38, the fused exp's clamp, gave inf and a finite h', or c' about
 * 0.45). Likewise a GRU whose reset gate saturates on an infinite b_hn. */
Test(rnn, saturated_float32_gates_are_zero) {
  for (int cell = 0; cell < 2; cell++)
    for (int mode = 0; mode < 3; mode++)
      for (int big = 0; big < 2 - cell; big++) {
        ad_rng rng;
        ad_rng_seed(&rng, 1);
        nn_rnn_opts o = {.dtype = AD_F32, .per_step = mode == 1, .composed = mode == 2};
        nn_layer *l = cell ? nn_gru_new(ctx, 1, 1, &rng, &o) : nn_lstm_new(ctx, 1, 1, &rng, &o);
        nn_params *p = nn_layer_params(l);
        for (int i = 0; i < nn_params_count(p); i++) ad_tensor_fill(nn_params_tensor(p, i), 0);
        /* LSTM: row 1 is the forget gate; GRU: row 0 the reset gate, b_hn row 2 */
        ad_tensor_set(nn_params_find(p, "weight_ih_l0"), cell ? 0 : 1, big ? -100.0 : -1000.0);
        if (cell) ad_tensor_set(nn_params_find(p, "bias_hh_l0"), 2, INFINITY);
        int64_t s[3] = {1, 1, 1};
        ad_tensor *x = ad_full(ctx, AD_F32, 3, s, 1.0), *h0 = ad_zeros(ctx, AD_F32, 3, s);
        ad_tensor *c0 = cell ? NULL : ad_full(ctx, AD_F32, 3, s, big ? 1e38 : INFINITY);
        ad_tensor *hn, *cn = NULL;
        ad_tensor *y = nn_rnn_forward(l, x, h0, c0, NULL, 0, false, &hn, cell ? NULL : &cn);
        cr_assert_not_null(y, "%s", ad_last_error(ctx));
        double h = ad_tensor_get(y, 0), c = cn ? ad_tensor_get(cn, 0) : NAN;
        if (!big)
          cr_assert(isnan(h) && (cell || isnan(c)), "%s mode %d: h' = %g, c' = %g (want NaN)",
                    cell ? "gru" : "lstm", mode, h, c);
        else /* composed: the sigmoid op, a subnormal 3.8e-44 */
          cr_assert(fabs(c) < 1e-5 && fabs(h) < 1e-5, "lstm mode %d: h' = %g, c' = %g (want ~0)",
                    mode, h, c);
        ad_tape_reset(ctx);
        ad_tensor_free(x), ad_tensor_free(h0), ad_tensor_free(c0);
        nn_layer_free(l);
      }
}

/* ------------------------------------------------------ bidirectional */

/* PyTorch 1.13's bidirectional=True, two layers, float64: tools/
 * gen_rnn_bidir_ref.py built each case's module and tensors from formulas
 * (bidir_fill below writes the same ones), ran it in PyTorch (with lengths
 * through pack_padded_sequence / pad_packed_sequence) and wrote the
 * outputs and the gradients of L = sum(out wy) + sum(h_n wh) [+ sum(c_n
 * wc)] w.r.t. x, h0, c0 and every parameter into rnn_bidir_ref.h. */
#include "rnn_bidir_ref.h"

#define REF(a) a, (int64_t)(sizeof(a) / sizeof *(a))

typedef struct bidir_case {
  const char *name;
  nn_rnn_cell cell;
  int64_t in, hidden;
  bool batch_first, bias;
  int64_t t, n; /* n = 0: an unbatched input [T, I] */
  bool state;
  const int64_t *lengths;
  const double *out;
  int64_t n_out;
  const double *hn;
  int64_t n_hn;
  const double *cn;
  int64_t n_cn;
  const double *gx;
  int64_t n_gx;
  const double *gh0;
  int64_t n_gh0;
  const double *gc0;
  int64_t n_gc0;
  const double *gp;
  int64_t n_gp;
} bidir_case;

static const int64_t len_tanh[3] = {4, 2, 3}, len_lstm[3] = {2, 4, 1}, len_gru[2] = {2, 3},
                     len_grunb[3] = {3, 1, 2};

/* tools/gen_rnn_bidir_ref.py's CASES */
static const bidir_case bidir_cases[] = {
    {"tanh_len", NN_RNN_TANH, 3, 2, false, true, 4, 3, true, len_tanh, REF(ref_tanh_len_out),
     REF(ref_tanh_len_hn), NULL, 0, REF(ref_tanh_len_gx), REF(ref_tanh_len_gh0), NULL, 0,
     REF(ref_tanh_len_gp)},
    {"lstm", NN_RNN_LSTM, 3, 2, false, true, 3, 2, false, NULL, REF(ref_lstm_out), REF(ref_lstm_hn),
     REF(ref_lstm_cn), REF(ref_lstm_gx), NULL, 0, NULL, 0, REF(ref_lstm_gp)},
    {"lstm_bf_len", NN_RNN_LSTM, 3, 2, true, true, 4, 3, true, len_lstm, REF(ref_lstm_bf_len_out),
     REF(ref_lstm_bf_len_hn), REF(ref_lstm_bf_len_cn), REF(ref_lstm_bf_len_gx),
     REF(ref_lstm_bf_len_gh0), REF(ref_lstm_bf_len_gc0), REF(ref_lstm_bf_len_gp)},
    {"gru_bf", NN_RNN_GRU, 3, 2, true, true, 3, 2, true, NULL, REF(ref_gru_bf_out),
     REF(ref_gru_bf_hn), NULL, 0, REF(ref_gru_bf_gx), REF(ref_gru_bf_gh0), NULL, 0,
     REF(ref_gru_bf_gp)},
    {"gru_len_short", NN_RNN_GRU, 2, 3, false, true, 4, 2, true, len_gru,
     REF(ref_gru_len_short_out), REF(ref_gru_len_short_hn), NULL, 0, REF(ref_gru_len_short_gx),
     REF(ref_gru_len_short_gh0), NULL, 0, REF(ref_gru_len_short_gp)},
    {"gru_nb_bf_len",
     NN_RNN_GRU,
     2,
     2,
     true,
     false,
     3,
     3,
     false,
     len_grunb,
     REF(ref_gru_nb_bf_len_out),
     REF(ref_gru_nb_bf_len_hn),
     NULL,
     0,
     REF(ref_gru_nb_bf_len_gx),
     NULL,
     0,
     NULL,
     0,
     REF(ref_gru_nb_bf_len_gp)},
    {"lstm_unbatched", NN_RNN_LSTM, 3, 2, false, true, 3, 0, true, NULL,
     REF(ref_lstm_unbatched_out), REF(ref_lstm_unbatched_hn), REF(ref_lstm_unbatched_cn),
     REF(ref_lstm_unbatched_gx), REF(ref_lstm_unbatched_gh0), REF(ref_lstm_unbatched_gc0),
     REF(ref_lstm_unbatched_gp)},
    {"tanh_unbatched_bf",
     NN_RNN_TANH,
     2,
     3,
     true,
     true,
     3,
     0,
     false,
     NULL,
     REF(ref_tanh_unbatched_bf_out),
     REF(ref_tanh_unbatched_bf_hn),
     NULL,
     0,
     REF(ref_tanh_unbatched_bf_gx),
     NULL,
     0,
     NULL,
     0,
     REF(ref_tanh_unbatched_bf_gp)},
};

/* A persistent tensor of shape whose flat element e is a sin(b e + c)
 * (cosine: cosine). */
static ad_tensor *bidir_fill(int ndim, const int64_t *shape, double a, double b, double c,
                             bool cosine) {
  ad_tensor *t = ad_zeros(ctx, AD_F64, ndim, shape);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  for (int64_t e = 0; e < t->size; e++)
    ad_tensor_set(t, e, a * (cosine ? cos(b * (double)e + c) : sin(b * (double)e + c)));
  return t;
}

/* got (n elements) against PyTorch's want (nw), within 1e-12 (1 + |want|). */
static void expect_ref(const ad_tensor *got, const double *want, int64_t nw, const char *cname,
                       const char *mode, const char *what) {
  cr_assert_not_null(got, "%s %s %s: NULL (%s)", cname, mode, what, ad_last_error(ctx));
  cr_assert_eq(got->size, nw, "%s %s %s: %lld elements, PyTorch %lld", cname, mode, what,
               (long long)got->size, (long long)nw);
  for (int64_t i = 0; i < nw; i++) {
    double g = ad_tensor_get(got, i);
    QUICK_ASSERT(test_close(g, want[i], 1e-12 * (1 + fabs(want[i]))),
                 "%s %s %s[%lld]: %.17g, PyTorch %.17g", cname, mode, what, (long long)i, g,
                 want[i]);
  }
}

/* Case c on one path (0: default, 1: composed, 2: per_step). */
static void check_bidir(const bidir_case *c, int mode) {
  static const char *const modes[3] = {"default", "composed", "per_step"};
  const char *mn = modes[mode];
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_rnn_opts o = {.num_layers = 2,
                   .no_bias = !c->bias,
                   .batch_first = c->batch_first,
                   .dtype = AD_F64,
                   .composed = mode == 1,
                   .per_step = mode == 2,
                   .bidirectional = true};
  nn_layer *l = nn_rnn_new(ctx, c->cell, c->in, c->hidden, &rng, &o);
  cr_assert_not_null(l, "%s: %s", c->name, ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), c->bias ? 16 : 8);
  for (int i = 0; i < nn_params_count(p); i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    for (int64_t e = 0; e < t->size; e++)
      ad_tensor_set(t, e, 0.4 * sin(1.7 * (i + 1) + 0.31 * (double)e));
  }
  bool ub = c->n == 0;
  int64_t sx[3] = {c->t, c->n, c->in}, ss[3] = {4, c->n, c->hidden};
  if (c->batch_first) sx[0] = c->n, sx[1] = c->t;
  if (ub) sx[0] = c->t, sx[1] = c->in, ss[1] = c->hidden;
  int nd = ub ? 2 : 3;
  ad_tensor *x = bidir_fill(nd, sx, 1, 0.5, 0.2, false);
  for (int64_t n = 0; c->lengths && n < c->n; n++) /* the padding is NaN: it must not matter */
    for (int64_t t = c->lengths[n]; t < c->t; t++)
      for (int64_t k = 0; k < c->in; k++)
        ad_tensor_set(x, ((c->batch_first ? n * c->t + t : t * c->n + n) * c->in) + k, NAN);
  ad_tensor *h0 = c->state ? bidir_fill(nd, ss, 0.5, 0.3, 0.1, true) : NULL;
  ad_tensor *c0 =
      c->state && c->cell == NN_RNN_LSTM ? bidir_fill(nd, ss, 0.5, 0.7, 0.4, false) : NULL;
  ad_tensor_set_requires_grad(x, true);
  if (h0) ad_tensor_set_requires_grad(h0, true);
  if (c0) ad_tensor_set_requires_grad(c0, true);
  ad_tensor *hn, *cn;
  ad_tensor *y = nn_rnn_forward(l, x, h0, c0, c->lengths, c->lengths ? c->n : 0, true, &hn, &cn);
  cr_assert_not_null(y, "%s %s: %s", c->name, mn, ad_last_error(ctx));
  /* [T, N, 2H] ([N, T, 2H], unbatched [T, 2H]); states [4, N, H] ([4, H]) */
  cr_assert_eq(y->ndim, nd);
  cr_assert_eq(y->shape[nd - 1], 2 * c->hidden, "%s: output width", c->name);
  for (int d = 0; d < nd - 1; d++)
    cr_assert_eq(y->shape[d], sx[d], "%s: output dim %d", c->name, d);
  cr_assert_eq(hn->ndim, nd);
  for (int d = 0; d < nd; d++) cr_assert_eq(hn->shape[d], ss[d], "%s: h_n dim %d", c->name, d);
  ad_tensor *wy = bidir_fill(y->ndim, y->shape, 1, 0.37, 0.5, true);
  ad_tensor *wh = bidir_fill(hn->ndim, hn->shape, 1, 0.23, 0.9, false);
  ad_tensor *wc = cn ? bidir_fill(cn->ndim, cn->shape, 1, 0.41, 1.1, true) : NULL;
  ad_tensor *loss = ad_add(ctx, dot(y, wy), dot(hn, wh));
  if (cn) loss = ad_add(ctx, loss, dot(cn, wc));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s: %s", c->name, ad_last_error(ctx));
  expect_ref(y, c->out, c->n_out, c->name, mn, "out");
  expect_ref(hn, c->hn, c->n_hn, c->name, mn, "h_n");
  if (c->cn) expect_ref(cn, c->cn, c->n_cn, c->name, mn, "c_n");
  expect_ref(x->grad, c->gx, c->n_gx, c->name, mn, "grad.x");
  if (h0) expect_ref(h0->grad, c->gh0, c->n_gh0, c->name, mn, "grad.h0");
  if (c0) expect_ref(c0->grad, c->gc0, c->n_gc0, c->name, mn, "grad.c0");
  int64_t at = 0;
  for (int i = 0; i < nn_params_count(p); i++) {
    ad_tensor *g = nn_params_tensor(p, i)->grad;
    cr_assert_not_null(g, "%s: %s has no gradient", c->name, nn_params_name(p, i));
    cr_assert_leq(at + g->size, c->n_gp);
    char what[64];
    snprintf(what, sizeof what, "grad.%s", nn_params_name(p, i));
    expect_ref(g, c->gp + at, g->size, c->name, mn, what);
    at += g->size;
  }
  cr_assert_eq(at, c->n_gp, "%s: %lld parameter gradients, PyTorch %lld", c->name, (long long)at,
               (long long)c->n_gp);
  ad_tape_reset(ctx);
  ad_tensor *all[] = {x, h0, c0, wy, wh, wc};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ad_tensor_free(all[i]);
  nn_layer_free(l);
}

/* Every case on every path: the values and gradients of PyTorch. */
Test(rnn, bidirectional_matches_pytorch_f64) {
  for (size_t i = 0; i < sizeof bidir_cases / sizeof bidir_cases[0]; i++)
    for (int mode = 0; mode < 3; mode++) check_bidir(&bidir_cases[i], mode);
}

/* PyTorch's state-dict names, shapes and init order: torch.nn.LSTM(3, 5,
 * num_layers=2, bidirectional=True).state_dict() lists these names, the
 * second layer's weight_ih [20, 10] (its input is both directions of the
 * first), and reset_parameters draws them in this order. */
Test(rnn, bidirectional_names_shapes_and_init_are_pytorchs) {
  static const char *const names[16] = {
      "weight_ih_l0",         "weight_hh_l0",         "bias_ih_l0",         "bias_hh_l0",
      "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse",
      "weight_ih_l1",         "weight_hh_l1",         "bias_ih_l1",         "bias_hh_l1",
      "weight_ih_l1_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse", "bias_hh_l1_reverse"};
  static const int64_t cols[16] = {3, 5, 0, 0, 3, 5, 0, 0, 10, 5, 0, 0, 10, 5, 0, 0};
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  nn_rnn_opts o = {.num_layers = 2, .bidirectional = true, .dtype = AD_F64};
  nn_layer *l = nn_lstm_new(ctx, 3, 5, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), 16);
  ad_rng_seed(&rng, 5); /* the same draws, parameter by parameter */
  double bound = 1 / sqrt(5.0);
  for (int i = 0; i < 16; i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    cr_assert_str_eq(nn_params_name(p, i), names[i]);
    cr_assert_eq(t->ndim, cols[i] ? 2 : 1, "%s", names[i]);
    cr_assert_eq(t->shape[0], 20, "%s", names[i]);
    if (cols[i]) cr_assert_eq(t->shape[1], cols[i], "%s", names[i]);
    ad_tensor *want = ad_rand(ctx, &rng, AD_F64, t->ndim, t->shape, -bound, bound);
    cr_assert_eq(memcmp(t->data, want->data, (size_t)t->size * sizeof(double)), 0,
                 "%s is not the %d-th draw", names[i], i);
    ad_tensor_free(want);
  }
  nn_layer_free(l);
  /* without bias: the weights only, in the same order */
  nn_rnn_opts nb = {.bidirectional = true, .no_bias = true};
  l = nn_gru_new(ctx, 2, 4, &rng, &nb);
  p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), 4);
  cr_assert_str_eq(nn_params_name(p, 2), "weight_ih_l0_reverse");
  cr_assert_str_eq(nn_params_name(p, 3), "weight_hh_l0_reverse");
  nn_layer_free(l);
}

/* h0 and c0 of a bidirectional layer have num_layers*2 rows; others are
 * refused, naming that shape. */
Test(rnn, bidirectional_bad_state_is_named) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_rnn_opts o = {.num_layers = 2, .bidirectional = true};
  nn_layer *l = nn_lstm_new(ctx, 3, 4, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  int64_t s3[3] = {5, 2, 3}, s2[2] = {5, 3}, sl[3] = {2, 2, 4}, sok[3] = {4, 2, 4},
          sn[3] = {4, 3, 4}, su[2] = {2, 4};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 3, s3), *xu = ad_zeros(ctx, AD_F32, 2, s2);
  ad_tensor *hl = ad_zeros(ctx, AD_F32, 3, sl), *hok = ad_zeros(ctx, AD_F32, 3, sok);
  ad_tensor *hn3 = ad_zeros(ctx, AD_F32, 3, sn), *hu = ad_zeros(ctx, AD_F32, 2, su);
  cr_assert_null(nn_rnn_forward(l, x, hl, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "lstm: h0 [2,2,4] must be [num_layers*2 = 4 (bidirectional), batch 2, hidden_size "
      "4]");
  cr_assert_null(nn_rnn_forward(l, x, hok, hn3, NULL, 0, true, NULL, NULL));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "lstm: c0 [4,3,4] must be [num_layers*2 = 4 (bidirectional), batch 2, hidden_size "
      "4]");
  cr_assert_null(nn_rnn_forward(l, xu, hu, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "lstm: h0 [2,4] must be [num_layers*2 = 4 (bidirectional), hidden_size 4] for an "
      "unbatched input");
  ad_tensor *hn, *cn;
  ad_tensor *y = nn_rnn_forward(l, x, hok, hok, NULL, 0, true, &hn, &cn);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->shape[2], 8);
  cr_assert_eq(hn->shape[0], 4);
  cr_assert_eq(cn->shape[0], 4);
  ad_tape_reset(ctx);
  ad_tensor *ts[] = {x, xu, hl, hok, hn3, hu};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) ad_tensor_free(ts[i]);
  nn_layer_free(l);
}
