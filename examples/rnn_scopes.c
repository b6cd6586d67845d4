/* rnn_scopes: a tanh RNN unrolled over 5 steps, h_t = tanh(h_{t-1} W + x_t),
 * built inside scopes ("rnn", then "t=0" .. "t=4") so that its graph dump
 * groups the ops by time step (docs/tutorial-chain-rule.md, "Graph dumps of
 * unrolled models"; the pictures are docs/img/rnn_scopes_*.svg).
 *
 *   rnn_scopes [--dot FILE] [--dot-collapsed FILE] [--lstm-dot FILE]
 *
 * --dot writes the backward view with one cluster per step, --dot-collapsed
 * the forward view with one box per step. --lstm-dot writes the collapsed
 * forward view of a 2-layer LSTM layer (nn_lstm_new) over 6 steps, run
 * step by step (nn_rnn_opts.per_step), whose nn_rnn_forward opens the
 * scopes itself ("lstm.l0", "t=0", ...; docs/img/rnn_scopes_lstm.svg). Prints the loss and dL/dW;
 * the last line is "dL/dW: a b c d". */
#include <autodiff/nn.h>

#include <stdio.h>
#include <string.h>

#define STEPS 5

static int dump(ad_ctx *ctx, ad_graph *g, ad_tensor *root, const char *path, int flags) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "rnn_scopes: cannot write %s\n", path);
    return 1;
  }
  ad_status st = ad_graph_dot(g, f, root, flags);
  const char *why = st != AD_OK ? ad_last_error(ctx) : "write error";
  if (fclose(f) != 0 && st == AD_OK) st = AD_ERR_IO;
  if (st != AD_OK) fprintf(stderr, "rnn_scopes: %s: %s\n", path, why); /* not silently */
  return st != AD_OK;
}

/* A 2-layer LSTM(3 -> 4) over 6 steps of a batch of 1, its output summed,
 * drawn collapsed to path: one box per layer and step. */
static int lstm_dump(ad_ctx *ctx, const char *path) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_rnn_opts o = {.num_layers = 2, .per_step = true}; /* by default: one op per layer */
  nn_layer *l = nn_lstm_new(ctx, 3, 4, &rng, &o);
  int64_t xs[3] = {6, 1, 3};
  ad_tensor *x = ad_full(ctx, AD_F32, 3, xs, 0.5);
  ad_tensor *y = l && x ? nn_rnn_forward(l, x, NULL, NULL, NULL, 0, false, NULL, NULL) : NULL;
  ad_tensor *L = ad_sum(ctx, y);
  int rc = 1;
  if (!L) {
    fprintf(stderr, "rnn_scopes: %s\n", ad_last_error(ctx));
  } else {
    ad_graph *g = ad_graph_new(ctx);
    ad_graph_name(g, x, "x");
    ad_graph_name(g, L, "L");
    rc = dump(ctx, g, L, path, AD_DOT_COLLAPSE);
    ad_graph_free(g);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  nn_layer_free(l);
  return rc;
}

int main(int argc, char **argv) {
  const char *dot = NULL, *collapsed = NULL, *lstm = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--dot") && i + 1 < argc) {
      dot = argv[++i];
    } else if (!strcmp(argv[i], "--dot-collapsed") && i + 1 < argc) {
      collapsed = argv[++i];
    } else if (!strcmp(argv[i], "--lstm-dot") && i + 1 < argc) {
      lstm = argv[++i];
    } else {
      fprintf(stderr, "usage: rnn_scopes [--dot FILE] [--dot-collapsed FILE] [--lstm-dot FILE]\n");
      return 2;
    }
  }
  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  ad_graph *g = ad_graph_new(ctx);
  int64_t ws[2] = {2, 2}, hs[2] = {1, 2};
  double wv[4] = {0.5, -0.3, 0.2, 0.8}, hv[2] = {0.1, -0.2};
  ad_tensor *W = ad_from_data(ctx, AD_F64, 2, ws, wv);
  ad_tensor *h0 = ad_from_data(ctx, AD_F64, 2, hs, hv);
  ad_tensor *x[STEPS] = {0};
  ad_tensor_set_requires_grad(W, true);
  ad_graph_name(g, W, "W");
  ad_graph_name(g, h0, "h0");

  /* the unrolled recurrence: one scope for the layer, one per step */
  ad_tensor *h = h0;
  ad_scope_push(ctx, "rnn");
  for (int t = 0; t < STEPS; t++) {
    double xv[2] = {0.5 - 0.2 * t, 0.1 * t};
    char label[16];
    x[t] = ad_from_data(ctx, AD_F64, 2, hs, xv);
    snprintf(label, sizeof label, "x%d", t);
    ad_graph_name(g, x[t], label);
    snprintf(label, sizeof label, "t=%d", t);
    ad_scope_push(ctx, label);
    h = ad_tanh(ctx, ad_add(ctx, ad_matmul(ctx, h, W, false, false), x[t]));
    ad_scope_pop(ctx);
  }
  ad_scope_pop(ctx);
  ad_tensor *L = ad_sum(ctx, h); /* outside every scope: drawn as a node */
  ad_graph_name(g, L, "L");

  int rc = 0;
  ad_status st = ad_graph_trace_begin(g, NULL);
  if (st == AD_OK) st = ad_backward(ctx, L, NULL);
  if (st == AD_OK) st = ad_graph_trace_end(g);
  if (st != AD_OK) {
    fprintf(stderr, "rnn_scopes: %s\n", ad_last_error(ctx));
    rc = 1;
  } else {
    if (dot) rc |= dump(ctx, g, L, dot, AD_DOT_BACKWARD);
    if (collapsed) rc |= dump(ctx, g, L, collapsed, AD_DOT_COLLAPSE);
    printf("L = %.6f\n", ad_tensor_get(L, 0));
    printf("dL/dW: %.6f %.6f %.6f %.6f\n", ad_tensor_get(W->grad, 0), ad_tensor_get(W->grad, 1),
           ad_tensor_get(W->grad, 2), ad_tensor_get(W->grad, 3));
  }
  ad_graph_free(g);
  ad_tape_reset(ctx);
  if (lstm && rc == 0) rc = lstm_dump(ctx, lstm);
  for (int t = 0; t < STEPS; t++) ad_tensor_free(x[t]);
  ad_tensor_free(h0);
  ad_tensor_free(W);
  ad_ctx_free(ctx);
  return rc;
}
