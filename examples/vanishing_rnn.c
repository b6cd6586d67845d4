/* vanishing_rnn: why a plain tanh RNN cannot learn the adding problem
 * (examples/adding) and an LSTM can, measured: the norm of dL/dh_t, how
 * much the loss at the last step still depends on the hidden state of step
 * t, for every t, for both cells on the same task.
 *
 * Each cell (hidden 32) first trains on the adding problem with sequences
 * of --len steps (Adam, clipping, --train steps (800) of --batch (64) sequences, as
 * examples/adding). Then one batch of fresh sequences runs one step at a
 * time through the same layer, nn_rnn_forward with T = 1, the state of one
 * step passed as h0 (and c0) of the next, so every h_t is a tensor of the
 * tape, and ad_grad gives dL/dh_t for all of them in one backward pass.
 * Through a tanh RNN, dL/dh_t = dL/dh_{t+1} diag(1 - h_{t+1}^2) W_hh: each
 * step back multiplies by a matrix of norm below one, and the gradient
 * decays geometrically with the distance T - t; the LSTM's cell state
 * carries it back through the forget gate's products instead, which a
 * trained LSTM keeps near 1.
 *
 * Usage: vanishing_rnn [--len T] [--hidden H] [--train N] [--batch N]
 *                      [--lr X] [--seed N] [--check X] [--out DIR] [--plot]
 * Prints the table of |dL/dh_t| (Frobenius norm over the batch) for t = 1
 * .. T and ends with the line
 *   "|dL/dh_1| / |dL/dh_T|: rnn 1.2e-09 lstm 3.4e-01"
 * With --check X it exits non-zero unless the LSTM's ratio is at least X
 * times the RNN's. It writes the table as DIR/vanishing_rnn.csv (--out,
 * default "."), and with --plot draws both columns |dL/dh_t| / |dL/dh_T|
 * against t on a log scale as DIR/vanishing_rnn.svg (tools/plot; the
 * picture of docs/tutorial-rnn.md, redrawn by `ninja -C build plots`). */
#include <autodiff/nn.h>
#include <plot.h>

#include "args.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct options {
  int64_t len, hidden, train, batch;
  double lr, check;
  unsigned long long seed;
  const char *out; /* the directory of the CSV and the SVG */
  bool plot;       /* draw the SVG */
} options;

static bool parse(int argc, char **argv, options *o) {
  for (int i = 1; i < argc; i += 2) {
    if (!strcmp(argv[i], "--plot")) { /* the one flag without a value */
      o->plot = true;
      i--;
      continue;
    }
    if (i + 1 >= argc) return false;
    const char *a = argv[i], *v = argv[i + 1];
    bool ok; /* numbers read strictly (args.h) */
    if (!strcmp(a, "--len"))
      ok = arg_i64(v, &o->len);
    else if (!strcmp(a, "--hidden"))
      ok = arg_i64(v, &o->hidden);
    else if (!strcmp(a, "--batch"))
      ok = arg_i64(v, &o->batch);
    else if (!strcmp(a, "--train"))
      ok = arg_i64(v, &o->train);
    else if (!strcmp(a, "--lr"))
      ok = arg_double(v, &o->lr);
    else if (!strcmp(a, "--seed"))
      ok = arg_u64(v, &o->seed);
    else if (!strcmp(a, "--check"))
      ok = arg_double(v, &o->check);
    else if (!strcmp(a, "--out"))
      ok = (o->out = v) != NULL;
    else
      return false;
    if (!ok) return false;
  }
  return o->len >= 2 && o->len <= 100000 && o->hidden >= 1 && o->batch >= 1 && o->train >= 0 &&
         o->lr > 0 && o->check >= 0;
}

/* x [T, n, 2] (time first) and y [n, 1]: n sequences of the adding
 * problem (a value in [0, 1) and a marker at two steps; y their sum). */
static void make_batch(ad_rng *rng, ad_tensor *x, ad_tensor *y) {
  int64_t T = x->shape[0], n = x->shape[1];
  float *xd = x->data, *yd = y->data;
  for (int64_t i = 0; i < n; i++) {
    for (int64_t t = 0; t < T; t++) {
      xd[(t * n + i) * 2] = (float)ad_rng_uniform(rng);
      xd[(t * n + i) * 2 + 1] = 0;
    }
    int64_t a = (int64_t)ad_rng_below(rng, (uint64_t)(T / 2));
    int64_t b = T / 2 + (int64_t)ad_rng_below(rng, (uint64_t)(T - T / 2));
    xd[(a * n + i) * 2 + 1] = xd[(b * n + i) * 2 + 1] = 1;
    yd[i] = xd[(a * n + i) * 2] + xd[(b * n + i) * 2];
  }
}

/* The prediction [n, 1] from the final state h_n [1, n, H]. */
static ad_tensor *head(ad_ctx *ctx, nn_layer *fc, ad_tensor *h_n) {
  int64_t s[2] = {h_n->shape[1], h_n->shape[2]};
  return nn_layer_forward(fc, ad_reshape(ctx, h_n, 2, s), false);
}

/* Trains layer and fc for o->train steps on the adding problem. */
static ad_status train(ad_ctx *ctx, nn_layer *rnn, nn_layer *fc, const options *o, ad_rng *rng,
                       ad_tensor *x, ad_tensor *y, double *last_loss) {
  nn_params *p = nn_params_new(ctx);
  ad_status st = p ? AD_OK : ad_last_status(ctx);
  nn_layer *ls[2] = {rnn, fc};
  for (int k = 0; k < 2 && st == AD_OK; k++) {
    nn_params *lp = nn_layer_params(ls[k]);
    for (int i = 0; i < nn_params_count(lp) && st == AD_OK; i++)
      st = nn_params_add(p, nn_params_name(lp, i), nn_params_tensor(lp, i), false);
  }
  nn_optimizer *opt = st == AD_OK ? nn_adam_new(p, o->lr) : NULL;
  if (!opt) st = ad_last_status(ctx);
  double sum = 0;
  for (int64_t s = 0; s < o->train && st == AD_OK; s++) {
    make_batch(rng, x, y);
    ad_tape_reset(ctx);
    nn_optimizer_zero_grad(opt);
    ad_tensor *h_n = NULL;
    ad_tensor *out = nn_rnn_forward(rnn, x, NULL, NULL, NULL, 0, true, &h_n, NULL);
    ad_tensor *l = out ? nn_mse_loss(ctx, head(ctx, fc, h_n), y, NN_MEAN) : NULL;
    if (!l || ad_backward(ctx, l, NULL) != AD_OK) {
      st = ad_last_status(ctx);
      break;
    }
    nn_clip_grad_norm(p, 1.0);
    nn_optimizer_step(opt);
    if (s >= o->train - 100) sum += ad_tensor_item(l);
  }
  *last_loss = o->train ? sum / (double)(o->train < 100 ? o->train : 100) : NAN;
  ad_tape_reset(ctx);
  nn_optimizer_free(opt);
  nn_params_free(p);
  return st;
}

/* |dL/dh_t| for t = 0..T-1 into norm, running x one step at a time. */
static ad_status grad_norms(ad_ctx *ctx, nn_layer *rnn, nn_layer *fc, bool lstm, ad_tensor *x,
                            ad_tensor *y, double *norm, double *loss) {
  int64_t T = x->shape[0];
  size_t bytes = 2 * (size_t)T * sizeof(ad_tensor *);
  ad_tensor **h = malloc(bytes), **g = malloc(bytes);
  ad_status st = h && g ? AD_OK : AD_ERR_OOM;
  ad_tensor *hs = NULL, *cs = NULL; /* the state, [1, N, H] */
  for (int64_t t = 0; t < T && st == AD_OK; t++) {
    ad_tensor *xt = ad_narrow(ctx, x, 0, t, 1); /* [1, N, 2] */
    ad_tensor *h_n = NULL, *c_n = NULL;
    if (!nn_rnn_forward(rnn, xt, hs, cs, NULL, 0, false, &h_n, lstm ? &c_n : NULL))
      st = ad_last_status(ctx);
    h[t] = hs = h_n;
    cs = c_n;
  }
  ad_tensor *l = st == AD_OK ? nn_mse_loss(ctx, head(ctx, fc, hs), y, NN_MEAN) : NULL;
  if (st == AD_OK && !l) st = ad_last_status(ctx);
  if (st == AD_OK) st = ad_grad(ctx, l, NULL, (int)T, h, g, false);
  for (int64_t t = 0; t < T && st == AD_OK; t++) {
    double s = 0;
    for (int64_t i = 0; i < g[t]->size; i++) s += ad_tensor_get(g[t], i) * ad_tensor_get(g[t], i);
    norm[t] = sqrt(s);
  }
  if (st == AD_OK) *loss = ad_tensor_item(l);
  ad_tape_reset(ctx);
  free(h);
  free(g);
  return st;
}

int main(int argc, char **argv) {
  options o = {
      .len = 50, .hidden = 32, .train = 800, .batch = 64, .lr = 0.005, .seed = 1, .out = "."};
  if (!parse(argc, argv, &o)) {
    fprintf(stderr,
            "usage: %s [--len T] [--hidden H] [--train N] [--batch N] [--lr X] [--seed N] [--check "
            "X] [--out DIR] [--plot]\n",
            argv[0]);
    return 2;
  }
  ad_set_flush_denormal(true);
  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  int64_t T = o.len, xs[3] = {T, o.batch, 2}, ys[2] = {o.batch, 1};
  ad_tensor *x = ad_zeros(ctx, AD_F32, 3, xs), *y = ad_zeros(ctx, AD_F32, 2, ys);
  double *norm[2] = {calloc((size_t)T, sizeof(double)), calloc((size_t)T, sizeof(double))};
  double train_loss[2], loss[2];
  ad_status st = x && y && norm[0] && norm[1] ? AD_OK : AD_ERR_OOM;
  printf("vanishing_rnn: adding problem with %lld steps, hidden %lld, %lld training steps, "
         "seed %llu\n",
         (long long)T, (long long)o.hidden, (long long)o.train, o.seed);
  for (int k = 0; k < 2 && st == AD_OK; k++) {
    ad_rng rng;
    ad_rng_seed(&rng, o.seed);
    nn_layer *rnn = nn_rnn_new(ctx, k ? NN_RNN_LSTM : NN_RNN_TANH, 2, o.hidden, &rng, NULL);
    double bound = 1 / sqrt((double)o.hidden);
    nn_dense_opts fo = {.weight_init = nn_init_make(NN_INIT_UNIFORM, -bound, bound),
                        .bias_init = nn_init_make(NN_INIT_UNIFORM, -bound, bound)};
    nn_layer *fc = rnn ? nn_dense_new(ctx, o.hidden, 1, &rng, &fo) : NULL;
    st = fc ? train(ctx, rnn, fc, &o, &rng, x, y, &train_loss[k]) : ad_last_status(ctx);
    if (st == AD_OK) {
      ad_rng_seed(&rng, o.seed + 1000); /* the same batch for both cells */
      make_batch(&rng, x, y);
      st = grad_norms(ctx, rnn, fc, k == 1, x, y, norm[k], &loss[k]);
    }
    nn_layer_free(fc);
    nn_layer_free(rnn);
  }
  if (st != AD_OK) {
    fprintf(stderr, "vanishing_rnn: %s\n", ad_last_error(ctx));
    return 1;
  }
  printf("after training: mse on the batch below: rnn %.4f, lstm %.4f (answering 1.0: 0.167)\n\n",
         loss[0], loss[1]);
  printf("|  t | T - t | rnn |dL/dh_t| | / at T   | lstm |dL/dh_t| | / at T   |\n");
  printf("|---:|------:|--------------:|---------:|---------------:|---------:|\n");
  for (int64_t t = 0; t < T; t++)
    printf("| %2lld | %5lld | %13.3e | %8.2e | %14.3e | %8.2e |\n", (long long)t + 1,
           (long long)(T - 1 - t), norm[0][t], norm[0][t] / norm[0][T - 1], norm[1][t],
           norm[1][t] / norm[1][T - 1]);
  double r_rnn = norm[0][0] / norm[0][T - 1], r_lstm = norm[1][0] / norm[1][T - 1];
  printf("\n|dL/dh_1| / |dL/dh_T|: rnn %.1e lstm %.1e\n", r_rnn, r_lstm);
  int rc = o.check > 0 && !(r_lstm >= o.check * r_rnn);
  /* each column relative to its last step, against t: the CSV, and the
   * picture with --plot */
  double *rel[2] = {calloc((size_t)T, sizeof(double)), calloc((size_t)T, sizeof(double))};
  double *t_axis = calloc((size_t)T, sizeof(double));
  bool written = rel[0] && rel[1] && t_axis;
  for (int64_t t = 0; written && t < T; t++) {
    t_axis[t] = (double)(t + 1);
    rel[0][t] = norm[0][t] / norm[0][T - 1];
    rel[1][t] = norm[1][t] / norm[1][T - 1];
  }
  char path[1024];
  snprintf(path, sizeof path, "%s/vanishing_rnn.csv", o.out);
  FILE *f = written ? fopen(path, "w") : NULL;
  if (f) {
    fprintf(f, "t,rnn_grad_norm,rnn_relative,lstm_grad_norm,lstm_relative\n");
    for (int64_t t = 0; t < T; t++)
      fprintf(f, "%lld,%.9g,%.9g,%.9g,%.9g\n", (long long)t + 1, norm[0][t], rel[0][t], norm[1][t],
              rel[1][t]);
    written = fclose(f) == 0;
  } else {
    written = false;
  }
  if (!written) fprintf(stderr, "vanishing_rnn: cannot write %s\n", path);
  if (written && o.plot) {
    plot_series s[2] = {{"tanh RNN", (int)T, t_axis, rel[0]}, {"LSTM", (int)T, t_axis, rel[1]}};
    plot_opts po = {.title = "How much the last step's loss depends on h_t",
                    .xlabel = "time step t",
                    .ylabel = "|dL/dh_t| / |dL/dh_T|",
                    .logy = true};
    const char *why = "";
    snprintf(path, sizeof path, "%s/vanishing_rnn.svg", o.out);
    written = plot_svg_file(path, &po, 2, s, &why) == 0;
    if (!written) fprintf(stderr, "vanishing_rnn: %s: %s\n", path, why);
  }
  rc |= !written;
  free(rel[0]), free(rel[1]), free(t_axis);
  ad_tensor_free(x);
  ad_tensor_free(y);
  free(norm[0]);
  free(norm[1]);
  ad_ctx_free(ctx);
  return rc;
}
