/* test_nn_lstm_proj.c: the LSTM with projections (nn_rnn_new_ext,
 * proj_size). Against PyTorch 1.13 (tests/fixtures/torch_lstm_proj.safetensors,
 * tools/gen_lstm_proj_fixtures.py): its state dicts (with weight_hr_l<k>)
 * load unchanged by name, and the outputs, h_n, c_n and the gradients of a
 * scalar loss w.r.t. the input, h0, c0 and every parameter agree (f64
 * within 1e-10, f32 within 1e-5) for one and two layers, bidirectional,
 * batch_first, without bias, unbatched and with variable lengths, on the
 * fused-cell path and the composed one. Then PyTorch's names, shapes,
 * initialisation and repr, gradchecks (first and second order), dropout
 * between layers, a checkpoint round trip, and bad input. */
#include "nn.h"
#include "test_alloc.h"
#include "test_layer_fd.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TEST_CTX_SUITE(lstm_proj);

#define FIXTURE "tests/fixtures/torch_lstm_proj.safetensors"

/* tools/gen_lstm_proj_fixtures.py's CASES */
typedef struct proj_case {
  const char *name;
  int64_t in, hidden, proj;
  int layers;
  bool batch_first, bias, bidir;
  int64_t t, n; /* n 0: unbatched */
  bool state, lengths;
} proj_case;

static const proj_case cases[] = {
    {"p1", 3, 5, 2, 1, false, true, false, 4, 2, false, false},
    {"p2_bf_len", 3, 5, 3, 2, true, true, false, 5, 3, true, true},
    {"p2bi_len", 3, 4, 2, 2, false, true, true, 5, 3, true, true},
    {"p1bi_bf_nb", 2, 4, 3, 1, true, false, true, 4, 2, true, false},
    {"p2bi_unbatched", 3, 4, 1, 2, false, true, true, 4, 0, true, false},
    {"p2_len_f32", 3, 5, 2, 2, false, true, false, 5, 3, true, true},
    {"p2bi_bf_len_f32", 3, 4, 3, 2, true, true, true, 4, 3, true, true},
};

/* The fixture's tensor "<case>.<what>" (persistent), or NULL when absent. */
static ad_tensor *fixture(const nn_checkpoint_info *info, const proj_case *c, const char *what) {
  char name[96];
  snprintf(name, sizeof name, "%s.%s", c->name, what);
  const nn_checkpoint_entry *e = nn_checkpoint_info_find(info, name);
  if (!e) return NULL;
  cr_assert(e->has_dtype, "%s: dtype %s", name, e->dtype_name);
  ad_tensor *t = ad_zeros(ctx, e->dtype, e->ndim, e->shape);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  const char *names[1] = {name};
  cr_assert_eq(nn_checkpoint_load(ctx, FIXTURE, 1, names, &t), AD_OK, "%s", ad_last_error(ctx));
  return t;
}

/* |got - want| <= tol (1 + |want|) element by element, same shapes. */
static void expect_close(const ad_tensor *got, const ad_tensor *want, double tol, const char *cname,
                         const char *what) {
  expect_tensor_close(ctx, got, want, tol, cname, what);
}

static ad_tensor *dot(ad_tensor *a, ad_tensor *w) { return ad_sum(ctx, ad_mul(ctx, a, w)); }

static nn_layer *case_layer(const proj_case *c, ad_dtype dt, bool composed, ad_rng *rng) {
  nn_rnn_opts_ext o = {.base = {.num_layers = c->layers,
                                .no_bias = !c->bias,
                                .batch_first = c->batch_first,
                                .dtype = dt,
                                .composed = composed,
                                .bidirectional = c->bidir},
                       .proj_size = c->proj};
  nn_layer *l = nn_rnn_new_ext(ctx, NN_RNN_LSTM, c->in, c->hidden, rng, &o);
  cr_assert_not_null(l, "%s: %s", c->name, ad_last_error(ctx));
  return l;
}

/* Case c: a model with one layer named after the case loads PyTorch's
 * state dict from the fixture; outputs and gradients are compared. */
static void check_case(const proj_case *c, bool composed) {
  bool f32 = strstr(c->name, "_f32") != NULL;
  ad_dtype dt = f32 ? AD_F32 : AD_F64;
  double tol = f32 ? 1e-5 : 1e-10;
  char cname[64];
  snprintf(cname, sizeof cname, "%s%s", c->name, composed ? " (composed)" : "");
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add_named(m, c->name, case_layer(c, dt, composed, &rng)), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(nn_model_load(m, NULL, FIXTURE), AD_OK, "%s: %s", cname, ad_last_error(ctx));
  nn_layer *l = nn_model_layer(m, 0);
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, FIXTURE);
  cr_assert_not_null(info, "%s", ad_last_error(ctx));
  ad_tensor *x = fixture(info, c, "x"), *h0 = fixture(info, c, "h0");
  ad_tensor *c0 = fixture(info, c, "c0"), *len = fixture(info, c, "lengths");
  cr_assert_eq(h0 != NULL, c->state, "%s: h0 in the fixture", cname);
  cr_assert_eq(len != NULL, c->lengths, "%s: lengths in the fixture", cname);
  int64_t lengths[8] = {0}, nl = 0;
  for (int64_t i = 0; len && i < len->size; i++) lengths[nl++] = (int64_t)ad_tensor_get(len, i);
  ad_tensor_set_requires_grad(x, true);
  if (h0) ad_tensor_set_requires_grad(h0, true);
  if (c0) ad_tensor_set_requires_grad(c0, true);
  ad_tensor *hn = NULL, *cn = NULL;
  ad_tensor *y = nn_rnn_forward(l, x, h0, c0, len ? lengths : NULL, nl, true, &hn, &cn);
  cr_assert_not_null(y, "%s: %s", cname, ad_last_error(ctx));
  ad_tensor *wy = fixture(info, c, "wy"), *wh = fixture(info, c, "wh"),
            *wc = fixture(info, c, "wc");
  ad_tensor *loss = ad_add(ctx, ad_add(ctx, dot(y, wy), dot(hn, wh)), dot(cn, wc));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s: %s", cname, ad_last_error(ctx));

  ad_tensor *want[3] = {fixture(info, c, "out"), fixture(info, c, "h_n"), fixture(info, c, "c_n")};
  expect_close(y, want[0], tol, cname, "out");
  expect_close(hn, want[1], tol, cname, "h_n");
  expect_close(cn, want[2], tol, cname, "c_n");
  ad_tensor *gx = fixture(info, c, "grad.x");
  expect_close(x->grad, gx, tol, cname, "grad.x");
  ad_tensor *gh = h0 ? fixture(info, c, "grad.h0") : NULL;
  ad_tensor *gc = c0 ? fixture(info, c, "grad.c0") : NULL;
  if (h0) expect_close(h0->grad, gh, tol, cname, "grad.h0");
  if (c0) expect_close(c0->grad, gc, tol, cname, "grad.c0");
  nn_params *lp = nn_layer_params(l);
  cr_assert_eq(nn_params_count(lp), c->layers * (c->bias ? 5 : 3) * (c->bidir ? 2 : 1));
  for (int i = 0; i < nn_params_count(lp); i++) {
    char what[64];
    snprintf(what, sizeof what, "grad.%s", nn_params_name(lp, i));
    ad_tensor *g = fixture(info, c, what);
    expect_close(nn_params_tensor(lp, i)->grad, g, tol, cname, what);
    ad_tensor_free(g);
  }
  /* in a Sequential model: the output sequence from zero state, full length */
  if (!c->state && !c->lengths) expect_close(nn_model_forward(m, x), want[0], tol, cname, "seq");
  ad_tape_reset(ctx);
  ad_tensor *all[] = {x, h0, c0, len, wy, wh, wc, want[0], want[1], want[2], gx, gh, gc};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ad_tensor_free(all[i]);
  nn_checkpoint_info_free(info);
  nn_model_free(m);
}

Test(lstm_proj, matches_pytorch_f64) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (!strstr(cases[i].name, "_f32"))
      for (int composed = 0; composed < 2; composed++) check_case(&cases[i], composed);
}

Test(lstm_proj, matches_pytorch_f32) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (strstr(cases[i].name, "_f32"))
      for (int composed = 0; composed < 2; composed++) check_case(&cases[i], composed);
}

/* Every parameter the layer lists is in the fixture under its name with
 * PyTorch's shape, and the case's state dict has no parameter more. */
Test(lstm_proj, fixture_state_dicts_match_the_layers) {
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, FIXTURE);
  cr_assert_not_null(info, "%s", ad_last_error(ctx));
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const proj_case *c = &cases[i];
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_layer *l = case_layer(c, AD_F64, false, &rng);
    nn_params *p = nn_layer_params(l);
    int found = 0;
    for (int k = 0; k < nn_params_count(p); k++) {
      char name[96];
      snprintf(name, sizeof name, "%s.%s", c->name, nn_params_name(p, k));
      const nn_checkpoint_entry *e = nn_checkpoint_info_find(info, name);
      cr_assert_not_null(e, "%s missing", name);
      ad_tensor *t = nn_params_tensor(p, k);
      cr_assert_eq(e->ndim, t->ndim, "%s", name);
      for (int d = 0; d < t->ndim; d++) cr_assert_eq(e->shape[d], t->shape[d], "%s", name);
      found += strncmp(nn_params_name(p, k), "weight_hr", 9) == 0;
    }
    cr_assert_eq(found, c->layers * (c->bidir ? 2 : 1), "%s: %d weight_hr", c->name, found);
    char more[96];
    snprintf(more, sizeof more, "%s.weight_hr_l%d", c->name, c->layers);
    cr_assert_null(nn_checkpoint_info_find(info, more), "%s", more);
    nn_layer_free(l);
  }
  nn_checkpoint_info_free(info);
}

/* ------------------------------------------------ names, init and repr */

/* PyTorch's named_parameters() order for LSTM(3, 5, num_layers=2,
 * proj_size=2, bidirectional=True) (printed by torch 1.13), its shapes, and
 * the draws in that order: a second layer from the same seed without
 * projections draws the same values for its first parameters. */
Test(lstm_proj, names_shapes_and_init_are_pytorchs) {
  static const char *const names[20] = {
      "weight_ih_l0",         "weight_hh_l0",         "bias_ih_l0",
      "bias_hh_l0",           "weight_hr_l0",         "weight_ih_l0_reverse",
      "weight_hh_l0_reverse", "bias_ih_l0_reverse",   "bias_hh_l0_reverse",
      "weight_hr_l0_reverse", "weight_ih_l1",         "weight_hh_l1",
      "bias_ih_l1",           "bias_hh_l1",           "weight_hr_l1",
      "weight_ih_l1_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse",
      "bias_hh_l1_reverse",   "weight_hr_l1_reverse"};
  static const int64_t shapes[5][2] = {{20, 0}, {20, 2}, {20, 0}, {20, 0}, {2, 5}};
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  nn_rnn_opts_ext o = {.base = {.num_layers = 2, .bidirectional = true}, .proj_size = 2};
  nn_layer *l = nn_rnn_new_ext(ctx, NN_RNN_LSTM, 3, 5, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_str_eq(nn_layer_kind(l), "lstm");
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), 20);
  double bound = 1 / sqrt(5.0), lo = 1, hi = -1;
  for (int i = 0; i < 20; i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    cr_assert_str_eq(nn_params_name(p, i), names[i]);
    int j = i % 5;
    int64_t cols = j == 0 ? (i < 10 ? 3 : 4) : shapes[j][1]; /* weight_ih_l1: [20, 2 P] */
    cr_assert_eq(t->ndim, cols ? 2 : 1, "%s", names[i]);
    cr_assert_eq(t->shape[0], shapes[j][0], "%s", names[i]);
    if (cols) cr_assert_eq(t->shape[1], cols, "%s", names[i]);
    for (int64_t k = 0; k < t->size; k++) {
      lo = fmin(lo, ad_tensor_get(t, k));
      hi = fmax(hi, ad_tensor_get(t, k));
    }
  }
  /* uniform in [-1/sqrt(H), 1/sqrt(H)): inside, and spread over it */
  cr_assert(lo >= -bound && hi < bound, "range [%g, %g], bound %g", lo, hi, bound);
  cr_assert(lo < -0.9 * bound && hi > 0.9 * bound, "range [%g, %g], bound %g", lo, hi, bound);
  /* the draws follow the list: weight_hr_l0 is drawn after bias_hh_l0,
   * as the next 10 numbers of the generator */
  ad_rng_seed(&rng, 5);
  int64_t before = 0;
  for (int i = 0; i < 4; i++) before += nn_params_tensor(p, i)->size;
  int64_t sb[1] = {before}, shr[2] = {2, 5};
  ad_tensor *skip = ad_rand(ctx, &rng, AD_F32, 1, sb, -bound, bound);
  ad_tensor *hr = ad_rand(ctx, &rng, AD_F32, 2, shr, -bound, bound);
  ad_tensor *whr = nn_params_find(p, "weight_hr_l0");
  for (int64_t k = 0; k < 10; k++) cr_assert_eq(ad_tensor_get(hr, k), ad_tensor_get(whr, k));
  ad_tensor_free(skip);
  ad_tensor_free(hr);
  char buf[160];
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "lstm(3, 5, proj_size=2, num_layers=2, bidirectional=True)");
  nn_layer_free(l);
  /* without bias: weight_ih, weight_hh, weight_hr */
  nn_rnn_opts_ext nb = {.base = {.no_bias = true}, .proj_size = 1};
  l = nn_rnn_new_ext(ctx, NN_RNN_LSTM, 2, 3, &rng, &nb);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), 3);
  cr_assert_str_eq(nn_params_name(p, 2), "weight_hr_l0");
  cr_assert_eq(nn_params_tensor(p, 1)->shape[1], 1); /* weight_hh_l0 [12, 1] */
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf), "lstm(2, 3, proj_size=1, bias=False)");
  nn_layer_free(l);
  /* proj_size 0 and NULL options: nn_rnn_new's layer */
  l = nn_rnn_new_ext(ctx, NN_RNN_GRU, 2, 3, &rng, NULL);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_params_count(nn_layer_params(l)), 4);
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf), "gru(2, 3)");
  nn_layer_free(l);
}

/* ------------------------------------------------------- gradcheck */

/* Input, h0, c0 and every parameter, each output, with and without
 * uneven lengths; one direction and two, fused cells and composed. */
Test(lstm_proj, gradcheck_f64) {
  for (int v = 0; v < 4; v++) {
    bool bi = v & 1, composed = v & 2;
    ad_rng rng;
    ad_rng_seed(&rng, 21);
    nn_rnn_opts_ext o = {.base = {.num_layers = 2,
                                  .batch_first = true,
                                  .dtype = AD_F64,
                                  .composed = composed,
                                  .bidirectional = bi},
                         .proj_size = 2};
    nn_layer *l = nn_rnn_new_ext(ctx, NN_RNN_LSTM, 2, 3, &rng, &o);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    int64_t sx[3] = {3, 4, 2}, sh[3] = {bi ? 4 : 2, 3, 2}, sc[3] = {bi ? 4 : 2, 3, 3};
    int64_t lengths[3] = {4, 2, 3};
    ad_tensor *in[3] = {ad_rand(ctx, &rng, AD_F64, 3, sx, -1, 1),
                        ad_rand(ctx, &rng, AD_F64, 3, sh, -1, 1),
                        ad_rand(ctx, &rng, AD_F64, 3, sc, -1, 1)};
    for (int i = 0; i < 3; i++) ad_tensor_set_requires_grad(in[i], true);
    for (int lens = 0; lens < 2; lens++)
      for (int out = 0; out < 3; out++) {
        test_rnn_fd u = {l, lens ? lengths : NULL, lens ? 3 : 0, out};
        ad_check_report rep;
        cr_assert_eq(ad_gradcheck(ctx, test_rnn_fd_fn, &u, 3, in, NULL, &rep), AD_OK, "%s",
                     ad_last_error(ctx));
        cr_assert(rep.passed,
                  "variant %d output %d lengths %d: input %d [%lld] analytic %g "
                  "numeric %g",
                  v, out, lens, rep.input, (long long)rep.index, rep.analytic, rep.numeric);
        test_params_fd(ctx, l, test_rnn_fd_fn, &u, 3, in);
      }
    for (int i = 0; i < 3; i++) ad_tensor_free(in[i]);
    nn_layer_free(l);
  }
}

/* Second order: the fused cell's and the projection's backward are
 * recorded from ops. */
Test(lstm_proj, gradgradcheck_f64) {
  for (int v = 0; v < 4; v++) {
    bool bi = v & 1, composed = v & 2;
    ad_rng rng;
    ad_rng_seed(&rng, 12);
    nn_rnn_opts_ext o = {.base = {.dtype = AD_F64, .composed = composed, .bidirectional = bi},
                         .proj_size = 2};
    nn_layer *l = nn_rnn_new_ext(ctx, NN_RNN_LSTM, 2, 3, &rng, &o);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    int64_t sx[3] = {3, 2, 2}, sh[3] = {bi ? 2 : 1, 2, 2}, sc[3] = {bi ? 2 : 1, 2, 3};
    int64_t lengths[2] = {3, 2};
    ad_tensor *in[3] = {ad_rand(ctx, &rng, AD_F64, 3, sx, -1, 1),
                        ad_rand(ctx, &rng, AD_F64, 3, sh, -1, 1),
                        ad_rand(ctx, &rng, AD_F64, 3, sc, -1, 1)};
    for (int i = 0; i < 3; i++) ad_tensor_set_requires_grad(in[i], true);
    for (int out = 0; out < 3; out++) {
      test_rnn_fd u = {l, lengths, 2, out};
      ad_check_report rep;
      cr_assert_eq(ad_gradgradcheck(ctx, test_rnn_fd_fn, &u, 3, in, NULL, &rep), AD_OK, "%s",
                   ad_last_error(ctx));
      cr_assert(rep.passed, "variant %d output %d: input %d [%lld] analytic %g numeric %g", v, out,
                rep.input, (long long)rep.index, rep.analytic, rep.numeric);
    }
    for (int i = 0; i < 3; i++) ad_tensor_free(in[i]);
    nn_layer_free(l);
  }
}

/* ------------------------------------------------- dropout, checkpoint */

/* Dropout between layers: training mode only, on the D P wide outputs; the
 * fused and the composed paths draw the same masks. */
Test(lstm_proj, dropout_between_layers_in_training_only) {
  nn_layer *l[3];
  for (int i = 0; i < 3; i++) {
    ad_rng rng;
    ad_rng_seed(&rng, 4);
    nn_rnn_opts_ext o = {.base = {.num_layers = 2,
                                  .dropout = i == 1 ? 0 : 0.5,
                                  .seed = 9,
                                  .dtype = AD_F64,
                                  .composed = i == 2,
                                  .bidirectional = true},
                         .proj_size = 2};
    l[i] = nn_rnn_new_ext(ctx, NN_RNN_LSTM, 3, 4, &rng, &o);
    cr_assert_not_null(l[i], "%s", ad_last_error(ctx));
  }
  ad_rng rng;
  ad_rng_seed(&rng, 8);
  int64_t sx[3] = {4, 5, 3};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 3, sx, -1, 1);
  ad_tensor *ye = nn_rnn_forward(l[0], x, NULL, NULL, NULL, 0, false, NULL, NULL);
  ad_tensor *yp = nn_rnn_forward(l[1], x, NULL, NULL, NULL, 0, true, NULL, NULL);
  ad_tensor *yt = nn_rnn_forward(l[0], x, NULL, NULL, NULL, 0, true, NULL, NULL);
  ad_tensor *yc = nn_rnn_forward(l[2], x, NULL, NULL, NULL, 0, true, NULL, NULL);
  cr_assert(ye && yp && yt && yc, "%s", ad_last_error(ctx));
  cr_assert_eq(ye->shape[2], 4);
  int64_t differ = 0;
  for (int64_t i = 0; i < ye->size; i++) {
    cr_assert_eq(ad_tensor_get(ye, i), ad_tensor_get(yp, i), "eval mode has no dropout");
    differ += ad_tensor_get(yt, i) != ad_tensor_get(ye, i);
    cr_assert(fabs(ad_tensor_get(yt, i) - ad_tensor_get(yc, i)) < 1e-12, "fused vs composed [%lld]",
              (long long)i);
  }
  cr_assert_gt(differ, ye->size / 2, "training mode drops: %lld of %lld differ", (long long)differ,
               (long long)ye->size);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  for (int i = 0; i < 3; i++) nn_layer_free(l[i]);
}

/* nn_model_save then nn_model_load into a layer drawn from another seed:
 * the same parameters, weight_hr included, and the same outputs. */
Test(lstm_proj, checkpoint_round_trip) {
  char path[] = "/tmp/test_lstm_proj_XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  close(fd);
  nn_model *m[2];
  for (int i = 0; i < 2; i++) {
    ad_rng rng;
    ad_rng_seed(&rng, 30 + i);
    nn_rnn_opts_ext o = {.base = {.num_layers = 2, .batch_first = true, .bidirectional = true},
                         .proj_size = 3};
    m[i] = nn_sequential_new(ctx);
    cr_assert_eq(nn_model_add_named(m[i], "lstm", nn_rnn_new_ext(ctx, NN_RNN_LSTM, 4, 5, &rng, &o)),
                 AD_OK, "%s", ad_last_error(ctx));
  }
  nn_params *p0 = nn_model_params(m[0]), *p1 = nn_model_params(m[1]);
  cr_assert_neq(ad_tensor_get(nn_params_find(p0, "lstm.weight_hr_l1_reverse"), 0),
                ad_tensor_get(nn_params_find(p1, "lstm.weight_hr_l1_reverse"), 0));
  cr_assert_eq(nn_model_save(m[0], NULL, path), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_model_load(m[1], NULL, path), AD_OK, "%s", ad_last_error(ctx));
  remove(path);
  cr_assert_eq(nn_params_count(p0), 20);
  for (int i = 0; i < nn_params_count(p0); i++) {
    ad_tensor *a = nn_params_tensor(p0, i), *b = nn_params_find(p1, nn_params_name(p0, i));
    cr_assert_not_null(b, "%s", nn_params_name(p0, i));
    for (int64_t k = 0; k < a->size; k++)
      cr_assert_eq(ad_tensor_get(a, k), ad_tensor_get(b, k), "%s[%lld]", nn_params_name(p0, i),
                   (long long)k);
  }
  ad_rng rng;
  ad_rng_seed(&rng, 2);
  int64_t sx[3] = {2, 3, 4};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 3, sx, -1, 1);
  ad_tensor *y0 = nn_model_forward(m[0], x), *y1 = nn_model_forward(m[1], x);
  cr_assert(y0 && y1, "%s", ad_last_error(ctx));
  cr_assert_eq(y0->shape[2], 6); /* 2 directions x proj_size 3 */
  for (int64_t k = 0; k < y0->size; k++) cr_assert_eq(ad_tensor_get(y0, k), ad_tensor_get(y1, k));
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  for (int i = 0; i < 2; i++) nn_model_free(m[i]);
}

/* ----------------------------------------------------------- bad input */

Test(lstm_proj, bad_options_are_named) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_rnn_opts_ext o = {.proj_size = 4};
  cr_assert_null(nn_rnn_new_ext(ctx, NN_RNN_LSTM, 3, 4, &rng, &o));
  expect_status_msg(ctx, AD_ERR_ARG,
                    "lstm: proj_size 4 must be 0 (no projections) or in 1..hidden_size - 1 = 3");
  o.proj_size = 9;
  cr_assert_null(nn_rnn_new_ext(ctx, NN_RNN_LSTM, 3, 4, &rng, &o));
  expect_status_msg(ctx, AD_ERR_ARG, "lstm: proj_size 9 must be 0 (no projections) or in 1..");
  o.proj_size = -1;
  cr_assert_null(nn_rnn_new_ext(ctx, NN_RNN_LSTM, 3, 4, &rng, &o));
  expect_status_msg(ctx, AD_ERR_ARG, "lstm: proj_size -1 must be 0");
  o.proj_size = 2;
  cr_assert_null(nn_rnn_new_ext(ctx, NN_RNN_GRU, 3, 4, &rng, &o));
  expect_status_msg(ctx, AD_ERR_ARG, "gru: proj_size 2 is for an LSTM only");
  cr_assert_null(nn_rnn_new_ext(ctx, NN_RNN_TANH, 3, 4, &rng, &o));
  expect_status_msg(ctx, AD_ERR_ARG, "rnn_tanh: proj_size 2 is for an LSTM only");
  /* hidden_size 1 leaves no room for a projection */
  o.proj_size = 1;
  cr_assert_null(nn_rnn_new_ext(ctx, NN_RNN_LSTM, 3, 1, &rng, &o));
  expect_status_msg(ctx, AD_ERR_ARG, "1..hidden_size - 1 = 0");
  /* nn_rnn_new's checks come first, naming the same things */
  o.base.dropout = 2;
  cr_assert_null(nn_rnn_new_ext(ctx, NN_RNN_LSTM, 3, 4, &rng, &o));
  expect_status_msg(ctx, AD_ERR_ARG, "lstm: dropout 2 is outside [0, 1)");
  cr_assert_null(nn_rnn_new_ext(ctx, NN_RNN_LSTM, 3, 4, NULL, &o));
  cr_assert_neq(ad_last_status(ctx), AD_OK);
  ad_clear_error(ctx);
  o.base.dropout = 0;
  cr_assert_null(nn_rnn_new_ext(ctx, NN_RNN_LSTM, 3, 4, NULL, &o));
  expect_status_msg(ctx, AD_ERR_NULL, "lstm: rng is NULL");
  cr_assert_null(nn_rnn_new_ext(NULL, NN_RNN_LSTM, 3, 4, &rng, &o));
}

/* h0 is P wide and c0 H wide: each other's width is refused, naming it. */
Test(lstm_proj, bad_states_are_named) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_rnn_opts_ext o = {.base = {.num_layers = 2}, .proj_size = 2};
  nn_layer *l = nn_rnn_new_ext(ctx, NN_RNN_LSTM, 3, 4, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  int64_t sx[3] = {5, 3, 3}, sp[3] = {2, 3, 2}, sh[3] = {2, 3, 4};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 3, sx), *hp = ad_zeros(ctx, AD_F32, 3, sp);
  ad_tensor *hh = ad_zeros(ctx, AD_F32, 3, sh), *hd = ad_zeros(ctx, AD_F64, 3, sp);
  cr_assert_null(nn_rnn_forward(l, x, hh, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "lstm: h0 [2,3,4] must be [num_layers 2, batch 3, proj_size 2]");
  cr_assert_null(nn_rnn_forward(l, x, hp, hp, NULL, 0, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "lstm: c0 [2,3,2] must be [num_layers 2, batch 3, hidden_size 4]");
  cr_assert_null(nn_rnn_forward(l, x, hd, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_DTYPE, "lstm: h0 [2,3,2] is f64, the layer is f32");
  int64_t su[2] = {5, 3}, shu[2] = {2, 4};
  ad_tensor *xu = ad_zeros(ctx, AD_F32, 2, su), *hu = ad_zeros(ctx, AD_F32, 2, shu);
  cr_assert_null(nn_rnn_forward(l, xu, hu, NULL, NULL, 0, true, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "lstm: h0 [2,4] must be [num_layers 2, proj_size 2] for an unbatched input");
  /* the right widths run, giving h_n [2, 3, P] and c_n [2, 3, H] */
  ad_tensor *hn = NULL, *cn = NULL;
  ad_tensor *y = nn_rnn_forward(l, x, hp, hh, NULL, 0, false, &hn, &cn);
  cr_assert(y && hn && cn, "%s", ad_last_error(ctx));
  cr_assert_eq(y->shape[2], 2);
  cr_assert_eq(hn->shape[2], 2);
  cr_assert_eq(cn->shape[2], 4);
  ad_tape_reset(ctx);
  ad_tensor *ts[] = {x, hp, hh, hd, xu, hu};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) ad_tensor_free(ts[i]);
  nn_layer_free(l);
}

/* A freed state and another context's are refused by name. */
Test(lstm_proj, freed_and_foreign_tensors_are_refused) {
  ad_ctx *other = ad_ctx_new();
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_rnn_opts_ext o = {.proj_size = 2};
  nn_layer *l = nn_rnn_new_ext(ctx, NN_RNN_LSTM, 3, 4, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  int64_t sx[3] = {2, 1, 3}, sh[3] = {1, 1, 2}, sc[3] = {1, 1, 4};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 3, sx), *gone = ad_zeros(ctx, AD_F32, 3, sh);
  ad_tensor *far_c = ad_zeros(other, AD_F32, 3, sc), *far_x = ad_zeros(other, AD_F32, 3, sx);
  ad_tensor_free(gone);
  cr_assert_null(nn_rnn_forward(l, x, gone, NULL, NULL, 0, true, NULL, NULL));
  test_expect_error(ctx, AD_ERR_STATE, "lstm: h0 was freed", NULL);
  cr_assert_null(nn_rnn_forward(l, x, NULL, far_c, NULL, 0, true, NULL, NULL));
  test_expect_error(ctx, AD_ERR_ARG, "lstm: c0 belongs to another context", NULL);
  cr_assert_null(nn_rnn_forward(l, far_x, NULL, NULL, NULL, 0, true, NULL, NULL));
  test_expect_error(ctx, AD_ERR_ARG, "lstm: x belongs to another context", NULL);
  /* a temporary from a tape that was reset */
  ad_tensor *tmp = ad_add(ctx, x, x);
  ad_tape_reset(ctx);
  cr_assert_null(nn_rnn_forward(l, tmp, NULL, NULL, NULL, 0, true, NULL, NULL));
  test_expect_error(ctx, AD_ERR_STATE, "lstm: x is from a tape that was reset", NULL);
  ad_tape_reset(ctx);
  ad_tensor_free(x), ad_tensor_free(far_c), ad_tensor_free(far_x);
  nn_layer_free(l);
  ad_ctx_free(other);
}

/* Padded steps (holding NaN and infinity) give output 0 and no gradient,
 * and the final states are those of the sequence run alone to its length,
 * both directions. */
Test(lstm_proj, padded_steps_are_inert) {
  ad_rng rng;
  ad_rng_seed(&rng, 8);
  nn_rnn_opts_ext o = {.base = {.dtype = AD_F64, .num_layers = 2, .bidirectional = true},
                       .proj_size = 2};
  nn_layer *l = nn_rnn_new_ext(ctx, NN_RNN_LSTM, 2, 3, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  int64_t sx[3] = {5, 2, 2}, lengths[2] = {5, 2};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 3, sx, -1, 1);
  for (int64_t t = 2; t < 5; t++)
    for (int64_t k = 0; k < 2; k++) ad_tensor_set(x, (t * 2 + 1) * 2 + k, k ? INFINITY : NAN);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *hn, *cn;
  ad_tensor *y = nn_rnn_forward(l, x, NULL, NULL, lengths, 2, true, &hn, &cn);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->shape[2], 4);
  cr_assert_eq(ad_backward(ctx, ad_add(ctx, ad_sum(ctx, y), ad_sum(ctx, hn)), NULL), AD_OK);
  for (int64_t t = 0; t < 5; t++)
    for (int64_t k = 0; k < 4; k++) {
      double v = ad_tensor_get(y, (t * 2 + 1) * 4 + k);
      if (t >= 2)
        cr_assert_eq(v, 0.0, "out[%lld, 1, %lld] = %g", (long long)t, (long long)k, v);
      else
        cr_assert(isfinite(v) && v != 0.0, "out[%lld, 1, %lld] = %g", (long long)t, (long long)k,
                  v);
    }
  for (int64_t i = 0; i < x->size; i++) {
    double g = ad_tensor_get(x->grad, i);
    int64_t t = i / 4, n = (i / 2) % 2;
    if (n == 1 && t >= 2)
      cr_assert_eq(g, 0.0, "grad x[%lld] = %g", (long long)i, g);
    else
      cr_assert(isfinite(g), "grad x[%lld] = %g", (long long)i, g);
  }
  /* sequence 1 alone, two steps */
  int64_t s1[3] = {2, 1, 2};
  ad_tensor *x1 = ad_zeros(ctx, AD_F64, 3, s1);
  for (int64_t t = 0; t < 2; t++)
    for (int64_t k = 0; k < 2; k++)
      ad_tensor_set(x1, t * 2 + k, ad_tensor_get(x, (t * 2 + 1) * 2 + k));
  ad_tensor *hn1, *cn1;
  cr_assert_not_null(nn_rnn_forward(l, x1, NULL, NULL, NULL, 0, true, &hn1, &cn1));
  for (int k = 0; k < 4; k++) { /* layer and direction */
    for (int64_t j = 0; j < 2; j++)
      cr_assert(fabs(ad_tensor_get(hn, (k * 2 + 1) * 2 + j) - ad_tensor_get(hn1, k * 2 + j)) <
                1e-14);
    for (int64_t j = 0; j < 3; j++)
      cr_assert(fabs(ad_tensor_get(cn, (k * 2 + 1) * 3 + j) - ad_tensor_get(cn1, k * 3 + j)) <
                1e-14);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(x1);
  nn_layer_free(l);
}

/* A projected LSTM runs step by step: the dump has a fused lstm_cell per
 * step, weight_hr, and no whole-sequence op. */
Test(lstm_proj, graph_dump_shows_the_steps) {
  ad_rng rng;
  ad_rng_seed(&rng, 2);
  nn_model *m = nn_sequential_new(ctx);
  nn_rnn_opts_ext o = {.proj_size = 2};
  cr_assert_eq(nn_model_add(m, nn_rnn_new_ext(ctx, NN_RNN_LSTM, 2, 3, &rng, &o)), AD_OK);
  int64_t sx[3] = {2, 1, 2};
  ad_tensor *x = ad_ones(ctx, AD_F32, 3, sx);
  ad_tensor *loss = ad_sum(ctx, nn_model_forward(m, x));
  cr_assert_not_null(loss, "%s", ad_last_error(ctx));
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_eq(ad_graph_dot(NULL, f, loss, 0), AD_OK, "%s", ad_last_error(ctx));
  fclose(f);
  int cells = 0;
  for (const char *at = buf; (at = strstr(at, "= lstm_cell(")) != NULL; at++) cells++;
  cr_assert_eq(cells, 2, "%d lstm_cell ops for 2 steps:\n%s", cells, buf);
  cr_assert(strstr(buf, "0.weight_hr_l0"), "no weight_hr in the dump:\n%s", buf);
  cr_assert_null(strstr(buf, "lstm_seq"), "a whole-sequence op in the dump:\n%s", buf);
  free(buf);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  nn_model_free(m);
}
