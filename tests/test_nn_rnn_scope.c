/* test_nn_rnn_scope.c: nn_rnn_forward records each layer in a scope
 * ("lstm.l0", or the layer's name) and, when it runs step by step
 * (nn_rnn_opts.per_step here), each step's ops in a scope inside it
 * ("t=3"), so a graph dump draws one cluster per layer and step and
 * AD_DOT_COLLAPSE one box per cell and step; by default the layer's
 * cluster holds its whole-sequence op. The scopes are closed on every exit
 * path. */
#include "nn.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TEST_CTX_SUITE(rnn_scope);

#define OK(expr) cr_assert_eq((expr), AD_OK, "%s", ad_last_error(ctx))
#define STEPS    3

/* How many times what occurs in text. */
static int count(const char *text, const char *what) {
  int n = 0;
  for (const char *p = strstr(text, what); p; p = strstr(p + 1, what)) n++;
  return n;
}

/* The dump of root with flags, as a string (caller frees). */
static char *dump(ad_tensor *root, int flags) {
  ad_graph *g = ad_graph_new(ctx);
  cr_assert_not_null(g);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_not_null(f);
  OK(ad_graph_dot(g, f, root, flags));
  fclose(f);
  ad_graph_free(g);
  return buf;
}

/* sum of a 2-layer LSTM(2 -> 3) over STEPS steps of a batch of 2. */
static ad_tensor *lstm_loss(nn_layer *l) {
  int64_t xs[3] = {STEPS, 2, 2};
  ad_tensor *x = ad_full(ctx, AD_F64, 3, xs, 0.5);
  cr_assert_not_null(x, "%s", ad_last_error(ctx));
  ad_tensor *y = nn_rnn_forward(l, x, NULL, NULL, NULL, 0, false, NULL, NULL);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  return ad_sum(ctx, y);
}

static nn_layer *two_layer_lstm(void) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_rnn_opts o = {.num_layers = 2, .dtype = AD_F64, .per_step = true};
  nn_layer *l = nn_lstm_new(ctx, 2, 3, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  return l;
}

Test(rnn_scope, clusters_per_layer_and_step) {
  nn_layer *l = two_layer_lstm();
  ad_tensor *L = lstm_loss(l);
  cr_assert_eq(ad_scope_depth(ctx), 0);
  char *text = dump(L, 0);
  /* 2 layer clusters, each with STEPS step clusters */
  cr_assert_eq(count(text, "subgraph cluster_"), 2 + 2 * STEPS, "%s", text);
  cr_assert_eq(count(text, "label=\"lstm.l0\""), 1, "%s", text);
  cr_assert_eq(count(text, "label=\"lstm.l1\""), 1, "%s", text);
  for (int t = 0; t < STEPS; t++) {
    char lab[32];
    snprintf(lab, sizeof lab, "label=\"t=%d\"", t);
    cr_assert_eq(count(text, lab), 2, "%s: %s", lab, text);
  }
  free(text);
  nn_layer_free(l);
}

Test(rnn_scope, collapsed_one_box_per_cell_and_step) {
  nn_layer *l = two_layer_lstm();
  ad_tensor *L = lstm_loss(l);
  char *text = dump(L, AD_DOT_COLLAPSE);
  /* the steps are boxes (g<id> nodes labelled "t=k\l..."), in the
   * clusters of their layers; no step is a cluster any more */
  cr_assert_eq(count(text, "subgraph cluster_"), 2, "%s", text);
  for (int t = 0; t < STEPS; t++) {
    char lab[32];
    snprintf(lab, sizeof lab, "label=\"t=%d\\l", t);
    cr_assert_eq(count(text, lab), 2, "%s: %s", lab, text);
  }
  /* an LSTM cell: its fused cell op in each box (nn_rnn_opts.composed
   * would show the gates' sigmoids and tanhs instead) */
  cr_assert_eq(count(text, "lstm_cell"), 2 * STEPS, "%s", text);
  /* the recurrence: an edge from each step's box to the next one's */
  cr_assert_geq(count(text, " -> g"), 2 * STEPS, "%s", text);
  free(text);
  nn_layer_free(l);
}

static ad_tensor *first_layer(nn_model *m, ad_tensor *x, void *ud) {
  (void)ud;
  return nn_layer_forward(nn_model_layer(m, 0), x, false);
}

/* By default a layer is one cluster holding its input product and its
 * whole-sequence op, no step clusters. */
Test(rnn_scope, default_layer_is_one_cluster_with_its_sequence_op) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_rnn_opts o = {.num_layers = 2, .dtype = AD_F64};
  nn_layer *l = nn_lstm_new(ctx, 2, 3, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  ad_tensor *L = lstm_loss(l);
  char *text = dump(L, 0);
  cr_assert_eq(count(text, "subgraph cluster_"), 2, "%s", text);
  cr_assert_eq(count(text, "label=\"lstm.l1\""), 1, "%s", text);
  cr_assert_eq(count(text, "= lstm_seq("), 2, "%s", text);
  cr_assert_eq(count(text, "label=\"t=0\""), 0, "%s", text);
  free(text);
  nn_layer_free(l);
}

Test(rnn_scope, named_layer_labels_its_scopes) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_model *m = nn_model_new(ctx, first_layer, NULL);
  nn_rnn_opts o = {.dtype = AD_F64};
  OK(nn_model_add_named(m, "encoder", nn_gru_new(ctx, 2, 3, &rng, &o)));
  nn_layer *l = nn_model_find_layer(m, "encoder");
  ad_tensor *L = lstm_loss(l);
  char *text = dump(L, 0);
  cr_assert_eq(count(text, "label=\"encoder.l0\""), 1, "%s", text);
  free(text);
  nn_model_free(m);
}

Test(rnn_scope, inside_a_users_scope_and_closed_on_error) {
  nn_layer *l = two_layer_lstm();
  OK(ad_scope_push(ctx, "model"));
  ad_tensor *L = lstm_loss(l);
  cr_assert_eq(ad_scope_depth(ctx), 1);
  char *text = dump(L, 0);
  cr_assert_eq(count(text, "subgraph cluster_"), 1 + 2 + 2 * STEPS, "%s", text);
  free(text);
  /* one level short of the deepest: the layer's scope opens, its steps'
   * cannot; the error is returned and every scope it opened is closed */
  for (int d = 1; d < AD_SCOPE_MAX_DEPTH - 1; d++) OK(ad_scope_push(ctx, "deep"));
  int64_t xs[3] = {STEPS, 2, 2};
  ad_tensor *x = ad_full(ctx, AD_F64, 3, xs, 0.5);
  cr_assert_null(nn_rnn_forward(l, x, NULL, NULL, NULL, 0, false, NULL, NULL));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_STATE);
  cr_assert(strstr(ad_last_error(ctx), "'t=0' would be scope 17 deep"), "%s", ad_last_error(ctx));
  cr_assert_eq(ad_scope_depth(ctx), AD_SCOPE_MAX_DEPTH - 1);
  /* at the deepest, not even the layer's scope opens */
  OK(ad_scope_push(ctx, "deep"));
  cr_assert_null(nn_rnn_forward(l, x, NULL, NULL, NULL, 0, false, NULL, NULL));
  cr_assert(strstr(ad_last_error(ctx), "'lstm.l0' would be scope 17 deep"), "%s",
            ad_last_error(ctx));
  cr_assert_eq(ad_scope_depth(ctx), AD_SCOPE_MAX_DEPTH);
  nn_layer_free(l);
}

/* Bidirectional: each direction of each layer is a cluster of its own
 * ("lstm.l0", "lstm.l0_reverse", ...), each with its steps when run step
 * by step, and the reverse one holds the index_select that reverses the
 * sequences; by default each direction holds one lstm_seq. */
Test(rnn_scope, bidirectional_directions_are_clusters) {
  for (int per_step = 0; per_step < 2; per_step++) {
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_rnn_opts o = {.num_layers = 2, .dtype = AD_F64, .per_step = per_step, .bidirectional = true};
    nn_layer *l = nn_lstm_new(ctx, 2, 3, &rng, &o);
    cr_assert_not_null(l, "%s", ad_last_error(ctx));
    ad_tensor *L = lstm_loss(l);
    cr_assert_eq(ad_scope_depth(ctx), 0);
    char *text = dump(L, 0);
    cr_assert_eq(count(text, "subgraph cluster_"), 4 + (per_step ? 4 * STEPS : 0), "%s", text);
    static const char *const labels[4] = {"label=\"lstm.l0\"", "label=\"lstm.l0_reverse\"",
                                          "label=\"lstm.l1\"", "label=\"lstm.l1_reverse\""};
    for (int i = 0; i < 4; i++) cr_assert_eq(count(text, labels[i]), 1, "%s: %s", labels[i], text);
    if (per_step)
      cr_assert_eq(count(text, "= lstm_cell("), 4 * STEPS, "%s", text);
    else
      cr_assert_eq(count(text, "= lstm_seq("), 4, "%s", text);
    cr_assert_geq(count(text, "index_select"), 2, "%s", text);
    free(text);
    ad_tape_reset(ctx);
    nn_layer_free(l);
  }
}
