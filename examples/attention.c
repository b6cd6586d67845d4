/* attention: a small causal self-attention model learns to reverse a
 * sequence of digits, then shows where it looks.
 *
 * Each example is one sequence of 2n tokens read left to right:
 *
 *   x_1 ... x_n  >  y_1 ... y_n        y = x reversed (y_i = x_{n+1-i})
 *
 * (digits 0-9 and the separator '>'). At every position the model predicts
 * the next token; only the predictions of y_1 .. y_n count. The attention is
 * causal: a position sees itself and the positions before it, never the
 * answer to come. Reversal cannot be done by a model that looks only at
 * nearby tokens: to write y_i the model must find x_{n+1-i}, a distance
 * that changes with i. Attention does exactly that lookup.
 *
 *   h = token_embedding[s] + position_embedding          [N, 2n, D]
 *   twice:  h = h + attention(h)                         (2 heads, causal)
 *           h = h + W2 relu(W1 h)                        (MLP, D -> 4D -> D)
 *   logits = head(h)                                     [N, 2n, 11]
 *
 * (A transformer block also has layer normalisation; this model is small
 * enough to train without it.) Training: fresh random sequences every step,
 * softmax cross-entropy, Adam with the global gradient norm clipped at 1.
 * Evaluation: greedy decoding of 1000 new sequences, each y_i produced
 * from the model's own earlier answers. The table printed at the end shows
 * the attention weights of the last block for one sequence: row y_i is
 * the query writing y_i (at the position before it), each column a token
 * it may look at, in percent (averaged over the heads).
 *
 * Usage: attention [--steps N] [--len N] [--batch N] [--seed N]
 * The last line printed is exactly "accuracy: NN.NN%" (the fraction of
 * test sequences reversed without a mistake). */
#include "args.h"
#include <autodiff/nn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SEP = 10, VOCAB = 11, DIM = 32, HEADS = 2, BLOCKS = 2, TEST = 1000 };

typedef struct model_ud {
  int64_t n; /* digits per sequence */
  nn_layer *attn[BLOCKS], *up[BLOCKS], *down[BLOCKS], *head;
  ad_tensor *tok, *pos;
  ad_tensor *last_weights; /* set by forward when keep_weights */
  bool keep_weights;
} model_ud;

/* Logits for the positions that predict y: [N * n, VOCAB] from tokens
 * s [N, 2n] (AD_I32). */
static ad_tensor *forward(nn_model *m, ad_tensor *s, void *ud) {
  model_ud *u = ud;
  ad_ctx *ctx = nn_model_ctx(m);
  bool training = nn_model_training(m);
  int64_t n = u->n, N = s->shape[0];
  ad_tensor *h = ad_add(ctx, ad_index_select(ctx, u->tok, s), u->pos); /* [N, 2n, D] */
  for (int b = 0; b < BLOCKS; b++) {
    nn_mha_args a = {.causal = true, .training = training};
    ad_tensor **w = u->keep_weights && b == BLOCKS - 1 ? &u->last_weights : NULL;
    h = ad_add(ctx, h, nn_multihead_attention(u->attn[b], h, h, h, &a, w));
    ad_tensor *f = nn_layer_forward(u->up[b], h, training);
    h = ad_add(ctx, h, nn_layer_forward(u->down[b], f, training));
  }
  /* the positions of '>' and y_1 .. y_{n-1} predict y_1 .. y_n */
  ad_tensor *logits = nn_layer_forward(u->head, ad_narrow(ctx, h, 1, n, n), training);
  int64_t shape[2] = {N * n, VOCAB};
  return ad_reshape(ctx, logits, 2, shape);
}

/* Fills rows of s [N, 2n] with random digits, '>' and the reversal, and
 * labels y [N * n] with the reversal. */
static void make_batch(ad_rng *rng, int64_t n, ad_tensor *s, ad_tensor *y) {
  int32_t *sd = s->data, *yd = y->data;
  for (int64_t r = 0; r < s->shape[0]; r++) {
    int32_t *row = sd + r * 2 * n;
    for (int64_t i = 0; i < n; i++) row[i] = (int32_t)ad_rng_below(rng, 10);
    row[n] = SEP;
    for (int64_t i = 0; i < n; i++) {
      int32_t v = row[n - 1 - i];
      yd[r * n + i] = v;
      if (i + 1 < n) row[n + 1 + i] = v;
    }
  }
}

/* Greedy decoding: writes y_1 .. y_n of every row of s from the model's
 * own predictions (s holds x and '>' on entry). Returns false on error. */
static bool decode(nn_model *m, ad_tensor *s, int64_t n, int32_t *out) {
  ad_ctx *ctx = nn_model_ctx(m);
  int64_t N = s->shape[0];
  int32_t *sd = s->data;
  for (int64_t r = 0; r < N; r++)
    for (int64_t i = n + 1; i < 2 * n; i++) sd[r * 2 * n + i] = 0;
  for (int64_t i = 0; i < n; i++) {
    ad_tape_reset(ctx);
    ad_tensor *logits = nn_model_forward(m, s); /* [N * n, VOCAB] */
    if (!logits) return false;
    for (int64_t r = 0; r < N; r++) {
      int best = 0;
      for (int c = 1; c < VOCAB; c++)
        if (ad_tensor_get(logits, (r * n + i) * VOCAB + c) >
            ad_tensor_get(logits, (r * n + i) * VOCAB + best))
          best = c;
      out[r * n + i] = best;
      if (i + 1 < n) sd[r * 2 * n + n + 1 + i] = best;
    }
  }
  return true;
}

static int usage(const char *prog) {
  fprintf(stderr, "usage: %s [--steps N] [--len N] [--batch N] [--seed N]\n", prog);
  return 2;
}

int main(int argc, char **argv) {
  long long steps = 600, n = 8, batch = 64, seed = 1;
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 >= argc) return usage(argv[0]);
    long long v;
    if (!arg_ll(argv[i + 1], 0, LLONG_MAX, &v)) return usage(argv[0]);
    if (strcmp(argv[i], "--steps") == 0)
      steps = v;
    else if (strcmp(argv[i], "--len") == 0)
      n = v;
    else if (strcmp(argv[i], "--batch") == 0)
      batch = v;
    else if (strcmp(argv[i], "--seed") == 0)
      seed = v;
    else
      return usage(argv[0]);
  }
  if (n < 2 || n > 32 || batch < 1) return usage(argv[0]);

  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  ad_rng rng, data;
  ad_rng_seed(&rng, (uint64_t)seed);
  ad_rng_seed(&data, (uint64_t)seed + 1000);

  /* the model: embeddings, BLOCKS x (attention, MLP), a linear head */
  model_ud u = {.n = n};
  nn_model *m = nn_model_new(ctx, forward, &u);
  int64_t ts[2] = {VOCAB, DIM}, ps[2] = {2 * n, DIM};
  u.tok = nn_model_add_param(m, "tok_embedding", AD_F32, 2, ts,
                             nn_init_make(NN_INIT_NORMAL, 0, 0.5), &rng);
  u.pos = nn_model_add_param(m, "pos_embedding", AD_F32, 2, ps,
                             nn_init_make(NN_INIT_NORMAL, 0, 0.5), &rng);
  nn_dense_opts relu = {.activation = NN_ACT_RELU};
  nn_mha_opts mo = {.batch_first = true};
  for (int b = 0; b < BLOCKS; b++) {
    char name[32];
    snprintf(name, sizeof name, "attn%d", b);
    nn_model_add_named(m, name, u.attn[b] = nn_multihead_attention_new(ctx, DIM, HEADS, &rng, &mo));
    snprintf(name, sizeof name, "mlp%d_up", b);
    nn_model_add_named(m, name, u.up[b] = nn_dense_new(ctx, DIM, 4 * DIM, &rng, &relu));
    snprintf(name, sizeof name, "mlp%d_down", b);
    nn_model_add_named(m, name, u.down[b] = nn_dense_new(ctx, 4 * DIM, DIM, &rng, NULL));
  }
  nn_model_add_named(m, "head", u.head = nn_dense_new(ctx, DIM, VOCAB, &rng, NULL));
  nn_opt_config cfg = nn_opt_defaults(NN_OPT_ADAM, 3e-3);
  cfg.clip_norm = 1.0;
  nn_optimizer *opt = nn_optimizer_new(nn_model_params(m), &cfg);
  if (!opt || ad_last_status(ctx) != AD_OK) {
    fprintf(stderr, "attention: %s\n", ad_last_error(ctx));
    return 1;
  }
  printf("attention: reverse %lld digits; %d blocks of %d-head causal self-attention, D = %d, "
         "%lld parameters\n",
         n, BLOCKS, HEADS, DIM, (long long)nn_params_numel(nn_model_params(m)));

  /* training on fresh sequences */
  if (batch > INT64_MAX / (2 * n)) { /* batch * 2n symbols would overflow */
    fprintf(stderr, "attention: --batch %lld is too large\n", batch);
    return 1;
  }
  int64_t ss[2] = {batch, 2 * n}, ys[1] = {batch * n};
  ad_tensor *s = ad_zeros(ctx, AD_I32, 2, ss), *y = ad_zeros(ctx, AD_I32, 1, ys);
  if (!s || !y) {
    fprintf(stderr, "attention: %s\n", ad_last_error(ctx));
    return 1;
  }
  clock_t t0 = clock();
  double avg = 0;
  for (long long step = 1; step <= steps; step++) {
    make_batch(&data, n, s, y);
    double loss;
    if (nn_train_step(m, opt, nn_cross_entropy_loss, s, y, 0, &loss) != AD_OK) {
      fprintf(stderr, "attention: %s\n", ad_last_error(ctx));
      return 1;
    }
    avg = step == 1 ? loss : 0.95 * avg + 0.05 * loss;
    if (step % 100 == 0 || step == steps) printf("step %5lld  loss %.4f\n", step, avg);
  }
  printf("training seconds: %.2f\n", (double)(clock() - t0) / CLOCKS_PER_SEC);

  /* greedy decoding of new sequences */
  nn_model_set_training(m, false);
  bool grad = ad_set_grad_enabled(ctx, false);
  int64_t ts2[2] = {TEST, 2 * n}, ty[1] = {TEST * n};
  ad_tensor *st = ad_zeros(ctx, AD_I32, 2, ts2), *yt = ad_zeros(ctx, AD_I32, 1, ty);
  make_batch(&data, n, st, yt);
  int32_t *pred = malloc((size_t)(TEST * n) * sizeof *pred);
  if (!pred || !decode(m, st, n, pred)) {
    fprintf(stderr, "attention: %s\n", pred ? ad_last_error(ctx) : "out of memory");
    return 1;
  }
  int64_t right_tokens = 0, right_seqs = 0;
  const int32_t *want = yt->data;
  for (int64_t r = 0; r < TEST; r++) {
    int64_t ok = 0;
    for (int64_t i = 0; i < n; i++) ok += pred[r * n + i] == want[r * n + i];
    right_tokens += ok;
    right_seqs += ok == n;
  }

  /* the attention weights of the last block for the first test sequence */
  ad_tape_reset(ctx);
  int64_t one[2] = {1, 2 * n};
  ad_tensor *s1 = ad_from_data(ctx, AD_I32, 2, one, st->data);
  u.keep_weights = true;
  if (!nn_model_forward(m, s1) || !u.last_weights) {
    fprintf(stderr, "attention: %s\n", ad_last_error(ctx));
    return 1;
  }
  const int32_t *tok = s1->data;
  printf("\nattention weights (%%) of block %d, averaged over the heads, for one sequence:\n"
         "each row writes one answer digit; columns are the tokens it can see\n\n       ",
         BLOCKS);
  for (int64_t j = 0; j < 2 * n; j++) printf(" %3c", tok[j] == SEP ? '>' : '0' + tok[j]);
  printf("\n");
  for (int64_t i = 0; i < n; i++) { /* query at position n + i writes y_{i+1} */
    int64_t q = n + i;
    printf("y%-2lld = %d", (long long)(i + 1), pred[i]);
    for (int64_t j = 0; j < 2 * n; j++) {
      if (j > q) {
        printf("   .");
        continue;
      }
      double w = ad_tensor_get(u.last_weights, q * 2 * n + j);
      printf(" %3.0f", 100 * w);
    }
    printf("\n");
  }
  printf("\n(. = a later position, hidden by the causal mask; row y_i should put most of its\n"
         "weight on x_%lld-i, the digit it copies)\n\n",
         n + 1);
  ad_set_grad_enabled(ctx, grad);

  printf("token accuracy: %.2f%%\n", 100.0 * (double)right_tokens / (double)(TEST * n));
  printf("accuracy: %.2f%%\n", 100.0 * (double)right_seqs / TEST);

  free(pred);
  ad_tensor_free(s), ad_tensor_free(y), ad_tensor_free(st), ad_tensor_free(yt);
  ad_tensor_free(s1);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_ctx_free(ctx);
  return 0;
}
