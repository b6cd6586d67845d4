/* char_rnn: a character-level LSTM language model of English words.
 *
 * Data: the word list of Debian's wamerican package
 * (/usr/share/dict/american-english; --words FILE for another list, one
 * word a line), without the possessive forms ("dog's": a quarter of the
 * list, each a copy of a word with 's added) and the few hundred words
 * with a letter outside ASCII ("Ångström"), so that every symbol is one
 * printable character. A seeded shuffle of the words
 * keeps its last 10% for validation. Each set is one stream of bytes, every
 * word followed by '\n' (the end-of-word symbol, also the first input), so
 * the model learns where words end; the alphabet is the bytes that occur.
 *
 * Model: Embedding(V -> 32) -> LSTM(32 -> 128) -> Dense(128 -> V), softmax
 * cross-entropy of the next byte (nn_sequence_cross_entropy_loss, logits
 * class last), Adam lr 0.01, gradients clipped to global norm 1.
 *
 * Truncated backpropagation through time: the training stream is cut into
 * --batch (32) contiguous streams read side by side in chunks of --bptt
 * (32) steps. The LSTM's final state h_n, c_n of one chunk is copied into
 * two persistent tensors (ad_tensor_copy_data) that are the next chunk's
 * h0, c0: the state carries over the tape's reset, the gradient does not
 * (ad.h, ad_detach, describes the pattern). Validation reads its stream the
 * same way without gradients.
 *
 * Afterwards it samples words, one byte at a time from the softmax of the
 * logits divided by --temperature (0.8), each starting from the state after
 * '\n', and says which are not in the list.
 *
 * For comparison it prints what two models without context give on the
 * same validation bytes: uniform over the alphabet (log2 V bits per
 * character) and unigram (each byte's frequency in the training stream).
 *
 * Usage: char_rnn [--epochs N] [--hidden H] [--embed E] [--batch B]
 *                 [--bptt L] [--lr X] [--clip X] [--seed N]
 *                 [--temperature X] [--samples N] [--max-words N]
 *                 [--threads N] [--words FILE]
 * --max-words N uses the first N words of the list only (0: all).
 * The last line printed is exactly "validation bits per character: N.NN". */
#include "args.h"
#include <autodiff/ad_ext.h> /* ad_set_error */
#include <autodiff/nn.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORDS_DEFAULT "/usr/share/dict/american-english"

typedef struct options {
  int epochs, threads, samples;
  int64_t hidden, embed, batch, bptt, max_words;
  double lr, clip, temperature;
  unsigned long long seed;
  const char *words;
} options;

static bool parse(int argc, char **argv, options *o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    bool ok = true;
    if (!strcmp(a, "--epochs"))
      ok = arg_int(v, &o->epochs);
    else if (!strcmp(a, "--hidden"))
      ok = arg_i64(v, &o->hidden);
    else if (!strcmp(a, "--embed"))
      ok = arg_i64(v, &o->embed);
    else if (!strcmp(a, "--batch"))
      ok = arg_i64(v, &o->batch);
    else if (!strcmp(a, "--bptt"))
      ok = arg_i64(v, &o->bptt);
    else if (!strcmp(a, "--lr"))
      ok = arg_double(v, &o->lr);
    else if (!strcmp(a, "--clip"))
      ok = arg_double(v, &o->clip);
    else if (!strcmp(a, "--seed"))
      ok = arg_u64(v, &o->seed);
    else if (!strcmp(a, "--temperature"))
      ok = arg_double(v, &o->temperature);
    else if (!strcmp(a, "--samples"))
      ok = arg_int(v, &o->samples);
    else if (!strcmp(a, "--max-words"))
      ok = arg_i64(v, &o->max_words);
    else if (!strcmp(a, "--threads"))
      ok = arg_int(v, &o->threads);
    else if (!strcmp(a, "--words"))
      o->words = v;
    else
      return false;
    if (!ok) return false;
  }
  return argc % 2 == 1 && o->epochs >= 0 && o->hidden >= 1 && o->embed >= 1 && o->batch >= 1 &&
         o->bptt >= 1 && o->lr > 0 && o->clip > 0 && o->temperature > 0 && o->samples >= 0 &&
         o->max_words >= 0 && o->threads >= 1;
}

/* ------------------------------------------------------------------ data */

typedef struct corpus {
  char **words; /* the list as read (possessives dropped), then shuffled */
  int64_t n, n_train;
  int vocab;              /* V: the bytes that occur, '\n' included */
  int id[256];            /* byte -> symbol (-1: absent) */
  unsigned char sym[256]; /* symbol -> byte */
  int32_t *train, *valid; /* the streams as symbols */
  int64_t train_len, valid_len;
} corpus;

static void corpus_free(corpus *c) {
  for (int64_t i = 0; i < c->n; i++) free(c->words[i]);
  free(c->words);
  free(c->train);
  free(c->valid);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The stream of words[from..to) as symbols: '\n' w1 '\n' w2 '\n' ... */
static int32_t *stream(const corpus *c, int64_t from, int64_t to, int64_t *len) {
  int64_t n = 1;
  for (int64_t i = from; i < to; i++) n += (int64_t)strlen(c->words[i]) + 1;
  int32_t *s = malloc((size_t)n * sizeof *s);
  if (!s) return NULL;
  int64_t k = 0;
  s[k++] = c->id['\n'];
  for (int64_t i = from; i < to; i++) {
    for (const unsigned char *p = (const unsigned char *)c->words[i]; *p; p++) s[k++] = c->id[*p];
    s[k++] = c->id['\n'];
  }
  *len = n;
  return s;
}

/* Reads the list, shuffles it with seed and builds the streams. false with
 * a message on stderr. */
static bool corpus_load(corpus *c, const char *path, int64_t max_words, unsigned long long seed) {
  memset(c, 0, sizeof *c);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr,
            "char_rnn: cannot open the word list %s: install Debian's wamerican package "
            "(apt-get install wamerican) or pass --words FILE\n",
            path);
    return false;
  }
  char line[256];
  int64_t cap = 0;
  bool ok = true;
  while (ok && fgets(line, sizeof line, f) && (!max_words || c->n < max_words)) {
    size_t len = strcspn(line, "\r\n");
    if (!line[len] && !feof(f)) { /* a line longer than the buffer: no word; skip all of it */
      int ch;
      while ((ch = fgetc(f)) != EOF && ch != '\n') continue;
      continue;
    }
    line[len] = 0;
    bool ascii = true;
    for (size_t i = 0; i < len; i++) ascii &= line[i] > ' ' && line[i] <= '~';
    if (len == 0 || !ascii || (len >= 2 && !strcmp(line + len - 2, "'s"))) continue;
    if (c->n == cap) {
      cap = cap ? 2 * cap : 1024;
      char **w = realloc(c->words, (size_t)cap * sizeof *w);
      if (!w)
        ok = false;
      else
        c->words = w;
    }
    if (ok && !(c->words[c->n] = strdup(line))) ok = false;
    if (ok) c->n++;
  }
  fclose(f);
  if (ok && c->n < 20) {
    fprintf(stderr, "char_rnn: %s has %lld words; at least 20 are needed\n", path, (long long)c->n);
    corpus_free(c);
    return false;
  }
  /* the alphabet, in byte order; '\n' ends every word */
  bool seen[256] = {false};
  seen['\n'] = true;
  for (int64_t i = 0; ok && i < c->n; i++)
    for (const unsigned char *p = (const unsigned char *)c->words[i]; *p; p++) seen[*p] = true;
  for (int b = 0; b < 256; b++) {
    c->id[b] = seen[b] ? c->vocab : -1;
    if (seen[b]) c->sym[c->vocab++] = (unsigned char)b;
  }
  /* a seeded Fisher-Yates shuffle; the last 10% is validation */
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  for (int64_t i = c->n - 1; ok && i > 0; i--) {
    int64_t j = (int64_t)ad_rng_below(&rng, (uint64_t)i + 1);
    char *t = c->words[i];
    c->words[i] = c->words[j];
    c->words[j] = t;
  }
  c->n_train = c->n - c->n / 10;
  ok = ok && (c->train = stream(c, 0, c->n_train, &c->train_len)) &&
       (c->valid = stream(c, c->n_train, c->n, &c->valid_len));
  if (!ok) {
    fprintf(stderr, "char_rnn: out of memory reading %s\n", path);
    corpus_free(c);
  }
  return ok;
}

/* ----------------------------------------------------------------- model */

typedef struct model {
  nn_layer *embed, *lstm, *fc;
  nn_params *params; /* all three layers' parameters, under PyTorch-like names */
} model;

static void model_free(model *m) {
  nn_params_free(m->params);
  nn_layer_free(m->embed);
  nn_layer_free(m->lstm);
  nn_layer_free(m->fc);
}

static ad_status model_new(ad_ctx *ctx, model *m, int vocab, const options *o, ad_rng *rng) {
  memset(m, 0, sizeof *m);
  m->embed = nn_embedding_new(ctx, vocab, o->embed, rng, NULL);
  m->lstm = nn_lstm_new(ctx, o->embed, o->hidden, rng, &(nn_rnn_opts){.batch_first = true});
  double bound = 1 / sqrt((double)o->hidden); /* PyTorch's nn.Linear init */
  nn_dense_opts fo = {.weight_init = nn_init_make(NN_INIT_UNIFORM, -bound, bound),
                      .bias_init = nn_init_make(NN_INIT_UNIFORM, -bound, bound)};
  m->fc = nn_dense_new(ctx, o->hidden, vocab, rng, &fo);
  m->params = nn_params_new(ctx);
  if (!m->embed || !m->lstm || !m->fc || !m->params) return ad_last_status(ctx);
  nn_layer *ls[3] = {m->embed, m->lstm, m->fc};
  const char *prefix[3] = {"embed", "lstm", "fc"};
  for (int k = 0; k < 3; k++) {
    nn_params *lp = nn_layer_params(ls[k]);
    for (int i = 0; i < nn_params_count(lp); i++) {
      char name[64];
      snprintf(name, sizeof name, "%s.%s", prefix[k], nn_params_name(lp, i));
      if (nn_params_add(m->params, name, nn_params_tensor(lp, i), false) != AD_OK)
        return ad_last_status(ctx);
    }
  }
  return AD_OK;
}

/* Logits [B, L, V] of the symbols x [B, L] (AD_I32) from the state h, c
 * [1, B, H]; the final state into *h_n, *c_n. */
static ad_tensor *model_forward(ad_ctx *ctx, const model *m, ad_tensor *x, ad_tensor *h,
                                ad_tensor *c, ad_tensor **h_n, ad_tensor **c_n) {
  (void)ctx; /* the layers record on their own context */
  ad_tensor *e = nn_layer_forward(m->embed, x, true);
  ad_tensor *y = e ? nn_rnn_forward(m->lstm, e, h, c, NULL, 0, true, h_n, c_n) : NULL;
  return y ? nn_layer_forward(m->fc, y, true) : NULL;
}

/* One pass over the stream s (len symbols) as B streams side by side in
 * chunks of L, the state carried from chunk to chunk. With opt, trains
 * (backward, clipping, a step per chunk); the mean loss per predicted
 * symbol (nats) into *loss. */
static ad_status pass(ad_ctx *ctx, const model *m, nn_optimizer *opt, const options *o,
                      const int32_t *s, int64_t len, double *loss) {
  int64_t B = o->batch, seg = (len - 1) / B; /* inputs of stream b: s[b seg .. b seg + seg) */
  if (seg < 1) B = 1, seg = len - 1;
  int64_t sh[3] = {1, B, o->hidden};
  ad_tensor *h = ad_zeros(ctx, AD_F32, 3, sh), *c = ad_zeros(ctx, AD_F32, 3, sh);
  /* a chunk is at most seg symbols long: B * chunk <= len, whatever --bptt is */
  int64_t chunk = o->bptt < seg ? o->bptt : seg;
  int32_t *buf = malloc(2 * (size_t)(B * chunk) * sizeof *buf);
  ad_status st = h && c ? AD_OK : AD_ERR_OOM;
  if (st == AD_OK && !buf)
    st = ad_set_error(ctx, AD_ERR_OOM, "out of memory for %lld x %lld symbols", (long long)B,
                      (long long)chunk);
  double sum = 0;
  int64_t count = 0;
  nn_sequence_ce_opts ce = {.class_last = true};
  for (int64_t pos = 0; pos < seg && st == AD_OK; pos += o->bptt) {
    int64_t L = seg - pos < o->bptt ? seg - pos : o->bptt, xs[2] = {B, L};
    for (int64_t b = 0; b < B; b++)
      for (int64_t t = 0; t < L; t++) {
        buf[b * L + t] = s[b * seg + pos + t];
        buf[B * L + b * L + t] = s[b * seg + pos + t + 1];
      }
    ad_tensor *x = ad_from_data(ctx, AD_I32, 2, xs, buf);
    ad_tensor *y = ad_from_data(ctx, AD_I32, 2, xs, buf + B * L);
    ad_tensor *h_n = NULL, *c_n = NULL;
    if (opt) nn_optimizer_zero_grad(opt);
    ad_tensor *logits = x && y ? model_forward(ctx, m, x, h, c, &h_n, &c_n) : NULL;
    ad_tensor *l = logits ? nn_sequence_cross_entropy_loss(ctx, logits, y, NN_MEAN, &ce) : NULL;
    if (!l || (opt && ad_backward(ctx, l, NULL) != AD_OK)) st = ad_last_status(ctx);
    if (st == AD_OK && opt) {
      nn_clip_grad_norm(m->params, o->clip);
      nn_optimizer_step(opt);
    }
    if (st == AD_OK) {
      sum += ad_tensor_item(l) * (double)(B * L);
      count += B * L;
      /* the state goes on to the next chunk; its gradient does not */
      st = ad_tensor_copy_data(h, h_n);
      if (st == AD_OK) st = ad_tensor_copy_data(c, c_n);
    }
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    ad_tensor_free(y);
  }
  *loss = count ? sum / (double)count : NAN;
  free(buf);
  ad_tensor_free(h);
  ad_tensor_free(c);
  return st;
}

/* Bits per symbol on the validation stream's predicted symbols (those pass
 * reads with the same B) of the unigram model of the training stream. */
static double unigram_bits(const corpus *c, int64_t B) {
  double count[256] = {0}, total = 0, bits = 0;
  for (int64_t i = 1; i < c->train_len; i++) count[c->train[i]] += 1, total += 1;
  int64_t seg = (c->valid_len - 1) / B, n = 0;
  if (seg < 1) B = 1, seg = c->valid_len - 1;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < seg; t++, n++) /* add-one: no symbol has probability 0 */
      bits -= log2((count[c->valid[b * seg + t + 1]] + 1) / (total + c->vocab));
  return bits / (double)n;
}

/* Samples one word into out (at most cap - 1 bytes): bytes from the
 * softmax of logits / temperature until '\n'. */
static ad_status sample_word(ad_ctx *ctx, const model *m, const corpus *c, double temperature,
                             ad_rng *rng, char *out, int cap) {
  int64_t sh[3] = {1, 1, nn_params_tensor(nn_layer_params(m->lstm), 1)->shape[1]}, xs[2] = {1, 1};
  ad_tensor *h = ad_zeros(ctx, AD_F32, 3, sh), *cs = ad_zeros(ctx, AD_F32, 3, sh);
  ad_tensor *x = ad_zeros(ctx, AD_I32, 2, xs);
  double *p = malloc((size_t)c->vocab * sizeof *p);
  ad_status st = h && cs && x && p ? AD_OK : AD_ERR_OOM;
  int n = 0, sym = c->id['\n'];
  while (st == AD_OK && n < cap - 1) {
    ad_tensor_set(x, 0, sym);
    ad_tensor *h_n = NULL, *c_n = NULL;
    ad_tensor *logits = model_forward(ctx, m, x, h, cs, &h_n, &c_n);
    if (!logits) {
      st = ad_last_status(ctx);
      break;
    }
    double mx = -INFINITY, z = 0;
    for (int v = 0; v < c->vocab; v++)
      if (ad_tensor_get(logits, v) > mx) mx = ad_tensor_get(logits, v);
    for (int v = 0; v < c->vocab; v++)
      z += p[v] = exp((ad_tensor_get(logits, v) - mx) / temperature);
    double u = ad_rng_uniform(rng) * z;
    for (sym = 0; sym < c->vocab - 1 && (u -= p[sym]) > 0; sym++) {
    }
    ad_tensor_copy_data(h, h_n);
    ad_tensor_copy_data(cs, c_n);
    ad_tape_reset(ctx);
    if (sym == c->id['\n']) break;
    out[n++] = (char)c->sym[sym];
  }
  out[n] = 0;
  free(p);
  ad_tensor_free(x);
  ad_tensor_free(h);
  ad_tensor_free(cs);
  return st;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  options o = {.epochs = 3,
               .threads = 1,
               .samples = 12,
               .hidden = 128,
               .embed = 32,
               .batch = 32,
               .bptt = 32,
               .lr = 0.01,
               .clip = 1,
               .temperature = 0.8,
               .seed = 1,
               .words = WORDS_DEFAULT};
  if (!parse(argc, argv, &o)) {
    fprintf(stderr,
            "usage: %s [--epochs N] [--hidden H] [--embed E] [--batch B] [--bptt L] [--lr X] "
            "[--clip X] [--seed N] [--temperature X] [--samples N] [--max-words N] "
            "[--threads N] [--words FILE]\n",
            argv[0]);
    return 2;
  }
  corpus c;
  if (!corpus_load(&c, o.words, o.max_words, o.seed)) return 1;
  if (ad_set_num_threads(o.threads) != AD_OK) {
    fprintf(stderr, "char_rnn: cannot start %d threads\n", o.threads);
    return 1;
  }
  ad_set_flush_denormal(true);
  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  ad_rng rng;
  ad_rng_seed(&rng, o.seed);
  model m;
  ad_status st = model_new(ctx, &m, c.vocab, &o, &rng);
  nn_optimizer *opt = st == AD_OK ? nn_adam_new(m.params, o.lr) : NULL;
  if (!opt) {
    fprintf(stderr, "char_rnn: %s\n", ad_last_error(ctx));
    return 1;
  }
  printf("char_rnn: %lld words from %s (%lld training, %lld validation; %lld and %lld "
         "characters with the ends of words), %d symbols, seed %llu\n",
         (long long)c.n, o.words, (long long)c.n_train, (long long)(c.n - c.n_train),
         (long long)c.train_len - 1, (long long)c.valid_len - 1, c.vocab, o.seed);
  printf("model: embedding %d -> %lld, LSTM %lld, dense -> %d; batch %lld, bptt %lld, Adam lr %g, "
         "clip %g\n",
         c.vocab, (long long)o.embed, (long long)o.hidden, c.vocab, (long long)o.batch,
         (long long)o.bptt, o.lr, o.clip);
  const double ln2 = log(2.0);
  double valid = NAN, secs = 0;
  for (int e = 0; e < o.epochs && st == AD_OK; e++) {
    double t0 = now(), train = 0;
    st = pass(ctx, &m, opt, &o, c.train, c.train_len, &train);
    secs += now() - t0;
    if (st == AD_OK) st = pass(ctx, &m, NULL, &o, c.valid, c.valid_len, &valid);
    if (st == AD_OK)
      printf("epoch %d/%d: training loss %.4f nats/char (%.3f bits), validation %.3f bits/char, "
             "%.1f s\n",
             e + 1, o.epochs, train, train / ln2, valid / ln2, now() - t0);
  }
  if (st == AD_OK && o.epochs == 0) st = pass(ctx, &m, NULL, &o, c.valid, c.valid_len, &valid);
  if (st == AD_OK && o.samples > 0) {
    qsort(c.words, (size_t)c.n, sizeof *c.words, cmp_str); /* for bsearch */
    printf("%d words sampled at temperature %g (* = not in the word list):\n", o.samples,
           o.temperature);
    ad_rng srng;
    ad_rng_seed(&srng, o.seed + 7);
    for (int i = 0; i < o.samples && st == AD_OK; i++) {
      char w[64];
      st = sample_word(ctx, &m, &c, o.temperature, &srng, w, sizeof w);
      const char *key = w;
      bool known = bsearch(&key, c.words, (size_t)c.n, sizeof *c.words, cmp_str) != NULL;
      if (st == AD_OK) printf("  %s%s\n", w, known ? "" : " *");
    }
  }
  if (st != AD_OK) {
    fprintf(stderr, "char_rnn: %s\n", ad_last_error(ctx));
    return 1;
  }
  printf("training seconds: %.1f\n", secs);
  printf("uniform over the %d symbols: %.2f bits per character (log2 %d)\n", c.vocab,
         log2((double)c.vocab), c.vocab);
  printf("unigram (training frequencies): %.2f bits per character\n", unigram_bits(&c, o.batch));
  printf("validation bits per character: %.2f\n", valid / ln2);
  nn_optimizer_free(opt);
  model_free(&m);
  corpus_free(&c);
  ad_ctx_free(ctx);
  return 0;
}
