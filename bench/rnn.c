/* rnn: trains a recurrent language model on synthetic token sequences
 * through the nn layer and times the training loop.
 *
 *   rnn [--cell lstm|gru|rnn] [--hidden 256] [--seq 64] [--batch 32]
 *       [--steps 50] [--threads 1] [--seed 1] [--composed 0|1] [--per-step 0|1]
 *       [--alternate K]
 *
 * Model: Embedding(64 -> 64), a one-layer recurrent layer (LSTM by default,
 * 64 -> hidden, batch first), Dense(hidden -> 64) at every step; softmax
 * cross-entropy of the next token at every step, Adam lr 1e-3, gradients
 * clipped to a global norm of 1 (bench/compare.py trains the same in
 * PyTorch). Data: 1024 sequences of seq + 1 tokens from a fixed random
 * Markov chain (each token has four likely successors, so the loss falls
 * from ln 64 = 4.16 towards ln 4 = 1.39), generated before the clock
 * starts; step s trains on the s-th batch of them (in turn). By default the
 * LSTM and GRU run as one op per sequence (ad_lstm_seq, ad_gru_seq);
 * --per-step 1 records each step's products and fused cell op instead
 * (nn_rnn_opts.per_step), and --composed 1
 * builds the LSTM and GRU cells from ops (nn_rnn_opts.composed) instead of
 * the fused cell ops, to measure what the fusion buys.
 *
 * GFLOPS counts the multiply-adds of the gate products (input and hidden
 * weights) and the output layer, 2 flops each: forward, the weight
 * gradients alike, and the input gradients (of the hidden state, of the
 * output layer's input, and of the embedded input, which the embedding's
 * scatter then adds into its rows). The report is bench_util.h's, last
 * line "train_s: S". --alternate K (with --threads 2 or more) runs the steps
 * in blocks of K on one thread and on --threads in turn and prints the
 * speed-up of neighbouring blocks (bench_util.h); train_s then covers both. */
#include "bench_util.h"

#include <string.h>

enum { VOCAB = 64, EMBED = 64, SEQS = 1024 };

typedef struct options {
  const char *cell;
  int64_t hidden, seq, batch;
  int steps, threads, alternate;
  bool composed, per_step;
  unsigned long long seed;
} options;

static bool parse(int argc, char **argv, options *o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    long long n;
    if (!strcmp(a, "--cell")) {
      if (strcmp(v, "lstm") && strcmp(v, "gru") && strcmp(v, "rnn")) return false;
      o->cell = v;
      continue;
    }
    if (!bench_parse_int(v,
                         !strcmp(a, "--seed") || !strcmp(a, "--composed") ||
                                 !strcmp(a, "--per-step") || !strcmp(a, "--alternate")
                             ? 0
                             : 1,
                         &n))
      return false;
    if (!strcmp(a, "--hidden"))
      o->hidden = n;
    else if (!strcmp(a, "--seq"))
      o->seq = n;
    else if (!strcmp(a, "--batch"))
      o->batch = n;
    else if (!strcmp(a, "--steps"))
      o->steps = (int)n;
    else if (!strcmp(a, "--threads"))
      o->threads = (int)n;
    else if (!strcmp(a, "--alternate") && n <= 1000000)
      o->alternate = (int)n;
    else if (!strcmp(a, "--seed"))
      o->seed = (unsigned long long)n;
    else if (!strcmp(a, "--composed") && n <= 1)
      o->composed = n == 1;
    else if (!strcmp(a, "--per-step") && n <= 1)
      o->per_step = n == 1;
    else
      return false;
  }
  return argc % 2 == 1;
}

/* SEQS sequences of seq + 1 tokens: x the first seq, y the last seq. */
static bool make_data(ad_ctx *ctx, const options *o, ad_tensor **x, ad_tensor **y) {
  int64_t shape[2] = {SEQS, o->seq};
  *x = ad_zeros(ctx, AD_I32, 2, shape);
  *y = ad_zeros(ctx, AD_I32, 2, shape);
  if (!*x || !*y) return false;
  ad_rng rng;
  ad_rng_seed(&rng, o->seed);
  int next[VOCAB][4];
  for (int v = 0; v < VOCAB; v++)
    for (int k = 0; k < 4; k++) next[v][k] = (int)(ad_rng_uniform(&rng) * VOCAB) % VOCAB;
  int32_t *px = (*x)->data, *py = (*y)->data;
  for (int64_t s = 0; s < SEQS; s++) {
    int tok = (int)(ad_rng_uniform(&rng) * VOCAB) % VOCAB;
    for (int64_t t = 0; t <= o->seq; t++) {
      if (t < o->seq) px[s * o->seq + t] = tok;
      if (t > 0) py[s * o->seq + t - 1] = tok;
      /* a likely successor 90% of the time, else any token */
      tok = ad_rng_uniform(&rng) < 0.9 ? next[tok][(int)(ad_rng_uniform(&rng) * 4) % 4]
                                       : (int)(ad_rng_uniform(&rng) * VOCAB) % VOCAB;
    }
  }
  return true;
}

int main(int argc, char **argv) {
  options o = {
      .cell = "lstm", .hidden = 256, .seq = 64, .batch = 32, .steps = 50, .threads = 1, .seed = 1};
  if (!parse(argc, argv, &o) || o.batch > SEQS || (o.alternate && o.threads < 2)) {
    fprintf(stderr, "usage: rnn [--cell lstm|gru|rnn] [--hidden 256] [--seq 64] [--batch 32 "
                    "(at most 1024)] [--steps 50] [--threads 1] [--seed 1] [--composed 0|1] "
                    "[--per-step 0|1] [--alternate K (with --threads 2 or more)]\n");
    return 2;
  }
  if (!bench_set_threads(o.threads)) {
    fprintf(stderr, "rnn: cannot start %d threads\n", o.threads);
    return 1;
  }
  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  ad_tensor *x = NULL, *y = NULL;
  if (!make_data(ctx, &o, &x, &y)) {
    fprintf(stderr, "rnn: %s\n", ad_last_error(ctx)[0] ? ad_last_error(ctx) : "out of memory");
    return 1;
  }
  ad_rng rng;
  ad_rng_seed(&rng, o.seed + 1);
  nn_rnn_cell cell = !strcmp(o.cell, "lstm")  ? NN_RNN_LSTM
                     : !strcmp(o.cell, "gru") ? NN_RNN_GRU
                                              : NN_RNN_TANH;
  int gates = cell == NN_RNN_LSTM ? 4 : cell == NN_RNN_GRU ? 3 : 1;
  nn_rnn_opts ro = {.batch_first = true, .composed = o.composed, .per_step = o.per_step};
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_embedding_new(ctx, VOCAB, EMBED, &rng, NULL));
  nn_model_add(m, nn_rnn_new(ctx, cell, EMBED, o.hidden, &rng, &ro));
  nn_model_add(m, nn_dense_new(ctx, o.hidden, VOCAB, &rng, NULL));
  nn_params *params = nn_model_params(m);
  nn_optimizer *opt = nn_adam_new(params, 1e-3);
  if (!opt) {
    fprintf(stderr, "rnn: %s\n", ad_last_error(ctx));
    return 1;
  }
  printf("rnn: embedding(%d -> %d), %s(%d -> %lld), dense(%lld -> %d), seq %lld, batch %lld, "
         "%d steps, adam, clip 1, f32, ",
         VOCAB, EMBED, o.cell, EMBED, (long long)o.hidden, (long long)o.hidden, VOCAB,
         (long long)o.seq, (long long)o.batch, o.steps);
  bench_print_threads();
  printf("parameters: %lld\n", (long long)nn_params_numel(params));

  nn_sequence_ce_opts ce = {.class_last = true};
  bench_alt alt = {.k = o.alternate, .threads = o.threads};
  double first = 0, last = 0, c0 = bench_cpu_s(), t0 = bench_now_s();
  bench_threads_begin();
  bench_alt_begin(&alt);
  for (int s = 0; s < o.steps; s++) {
    int64_t row = (int64_t)s * o.batch % (SEQS - o.batch + 1);
    ad_tensor *xb = ad_narrow(ctx, x, 0, row, o.batch), *yb = ad_narrow(ctx, y, 0, row, o.batch);
    ad_tensor *loss =
        nn_sequence_cross_entropy_loss(ctx, nn_model_forward(m, xb), yb, NN_MEAN, &ce);
    if (!loss || ad_backward(ctx, loss, NULL) != AD_OK) break;
    last = ad_tensor_item(loss);
    if (s == 0) first = last;
    nn_clip_grad_norm(params, 1.0);
    if (nn_optimizer_step(opt) != AD_OK) break;
    ad_tape_reset(ctx);
    bench_alt_step(&alt, s + 1);
  }
  double secs = bench_now_s() - t0, cpu = bench_cpu_s() - c0;
  bench_threads_end(secs, o.threads, o.alternate > 0);
  if (!bench_alt_report(&alt)) return 1;
  if (ad_last_status(ctx) != AD_OK) {
    fprintf(stderr, "rnn: %s\n", ad_last_error(ctx));
    return 1;
  }
  printf("loss: step 1 %.4f, step %d %.4f\n", first, o.steps, last);
  /* multiply-adds per step: gates x W_ih^T (T N I G H), h W_hh^T (T N H G H),
   * the output layer (T N H V); each again for the weight gradients and for
   * the input gradients */
  double tn = (double)o.seq * (double)o.batch, gh = gates * (double)o.hidden;
  double ih = tn * EMBED * gh, hh = tn * (double)o.hidden * gh, out = tn * (double)o.hidden * VOCAB;
  double flops = 2.0 * o.steps * 3 * (ih + hh + out);
  bench_report(NULL, 0, params, (double)o.steps * (double)o.batch, flops, "gate and output", secs,
               cpu, o.threads);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
  ad_ctx_free(ctx);
  return 0;
}
