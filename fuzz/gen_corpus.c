/* gen_corpus.c: writes the seed corpus of the fuzz targets, mostly with the
 * project's own writers, so that the seeds are files users really have:
 *
 *   gen_corpus DIR   writes DIR/idx/ and DIR/checkpoint/ (the folders must
 *                    exist), deterministically
 *
 * `ninja -C build-fuzz fuzz-corpus` rewrites fuzz/corpus/ of the source
 * tree. Each folder gets a few small valid files and a few truncated ones
 * (the fuzzer finds the rest); keep them small, libFuzzer mutates them. */
#include "fuzz_common.h"

#include <zlib.h>

static const char *dir;

/* DIR/sub/name, in one of two rotating buffers (two may be used in a call) */
static const char *out_path(const char *sub, const char *name) {
  static char buf[2][1024];
  static int k;
  k = !k;
  snprintf(buf[k], sizeof buf[k], "%s/%s/%s", dir, sub, name);
  return buf[k];
}

static void write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  FUZZ_CHECK(f && fwrite(p, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

/* The first n bytes of file src, as file dst. */
static void write_prefix(const char *src, const char *dst, size_t n) {
  unsigned char buf[65536];
  FILE *f = fopen(src, "rb");
  FUZZ_CHECK(f, "cannot read %s", src);
  size_t got = fread(buf, 1, sizeof buf, f);
  fclose(f);
  FUZZ_CHECK(n < got, "%s has %zu bytes, fewer than %zu", src, got, n);
  write_bytes(dst, buf, n);
}

/* An IDX image of unsigned bytes 0, 7, 14, ... with the given dims. */
static size_t make_idx(unsigned char *b, size_t cap, int ndim, const uint32_t *dims) {
  size_t count = 1, head = 4 + 4 * (size_t)ndim;
  for (int i = 0; i < ndim; i++) count *= dims[i];
  FUZZ_CHECK(head + count <= cap, "IDX image too large");
  b[0] = b[1] = 0;
  b[2] = 0x08;
  b[3] = (unsigned char)ndim;
  for (int i = 0; i < ndim; i++)
    for (int k = 0; k < 4; k++) b[4 + 4 * i + k] = (unsigned char)(dims[i] >> (24 - 8 * k));
  for (size_t i = 0; i < count; i++) b[head + i] = (unsigned char)(7 * i);
  return head + count;
}

static void write_gzip(const char *path, const void *p, size_t n) {
  gzFile g = gzopen(path, "wb9");
  FUZZ_CHECK(g && gzwrite(g, p, (unsigned)n) == (int)n && gzclose(g) == Z_OK, "cannot write %s",
             path);
}

static void gen_idx(void) {
  unsigned char b[256];
  size_t n;
  n = make_idx(b, sizeof b, 1, (const uint32_t[]){6});
  write_bytes(out_path("idx", "labels-1d.idx"), b, n);
  n = make_idx(b, sizeof b, 3, (const uint32_t[]){2, 3, 4});
  write_bytes(out_path("idx", "images-3d.idx"), b, n);
  write_bytes(out_path("idx", "truncated-data.idx"), b, n - 5);
  write_bytes(out_path("idx", "truncated-dims.idx"), b, 10);
  n = make_idx(b, sizeof b, 2, (const uint32_t[]){4, 5});
  write_gzip(out_path("idx", "images-2d.idx.gz"), b, n);
  write_prefix(out_path("idx", "images-2d.idx.gz"), out_path("idx", "truncated.idx.gz"), 30);
  /* an intact member with bytes after it (refused; zlib's gzread skips them) */
  write_gzip(out_path("idx", "gz-trailing-bytes.idx.gz"), b, n);
  FILE *f = fopen(out_path("idx", "gz-trailing-bytes.idx.gz"), "ab");
  FUZZ_CHECK(f && fwrite("junk", 1, 4, f) == 4 && fclose(f) == 0, "cannot append");
  /* Intact gzip files around wrong IDX contents: a mutated gzip file most
   * often fails in inflate or at its CRC; these reach the IDX checks. */
  write_gzip(out_path("idx", "gz-short-data.idx.gz"), b, n - 5);
  b[n] = 0;
  write_gzip(out_path("idx", "gz-extra-data.idx.gz"), b, n + 1);
  n = make_idx(b, sizeof b, 2, (const uint32_t[]){0, 0});
  b[5] = b[9] = 1; /* [65536,65536] and no data */
  write_gzip(out_path("idx", "gz-dims-too-large.idx.gz"), b, n);
}

static ad_tensor *filled(ad_ctx *ctx, ad_dtype dt, int ndim, const int64_t *shape) {
  ad_tensor *t = ad_zeros(ctx, dt, ndim, shape);
  FUZZ_CHECK(t, "%s", ad_last_error(ctx));
  for (int64_t i = 0; i < t->size; i++) ad_tensor_set(t, i, (double)(i % 5) - 1.5);
  return t;
}

/* A header written by hand: dtypes the engine lacks, escapes in names. */
static void write_foreign(const char *path) {
  static const char json[] =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"h\\u00e9\\ud83d\\ude00\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
      "\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[4,12]},"
      "\"w\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[12,16]}}";
  unsigned char b[512];
  size_t jl = sizeof json - 1;
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)jl >> (8 * i));
  memcpy(b + 8, json, jl);
  for (size_t i = 0; i < 16; i++) b[8 + jl + i] = (unsigned char)(i * 17);
  write_bytes(path, b, 8 + jl + 16);
}

/* fuzz_model_new(hidden)'s model and optimizer saved as file name. */
static void save_model(ad_ctx *ctx, int64_t hidden, const char *name) {
  nn_optimizer *opt = NULL;
  nn_model *m = fuzz_model_new(ctx, hidden, &opt);
  FUZZ_CHECK(m, "%s", ad_last_error(ctx));
  FUZZ_CHECK(nn_model_save(m, opt, out_path("checkpoint", name)) == AD_OK, "%s",
             ad_last_error(ctx));
  nn_optimizer_free(opt);
  nn_model_free(m);
}

/* fuzz_model_new(FUZZ_HIDDEN)'s model and optimizer as checkpoints of
 * earlier versions were: without the optional state (per-parameter step
 * counts, the learning rate and the schedule's state), which nn_model_load
 * then sets from the optimizer. */
static void save_model_legacy(ad_ctx *ctx, const char *name) {
  enum { CAP = 32 };
  nn_optimizer *opt = NULL;
  nn_model *m = fuzz_model_new(ctx, FUZZ_HIDDEN, &opt);
  FUZZ_CHECK(m, "%s", ad_last_error(ctx));
  nn_params *p = nn_model_params(m);
  const char *names[CAP];
  ad_tensor *ts[CAP];
  int n = 0;
  for (int i = 0; i < nn_params_count(p); i++, n++)
    names[n] = nn_params_name(p, i), ts[n] = nn_params_tensor(p, i);
  for (int i = 0; i < nn_optimizer_state_count(opt); i++) {
    const char *sn = nn_optimizer_state_names(opt)[i];
    if (!strncmp(sn, "adam.step.", 10) || !strcmp(sn, "adam.lr") ||
        !strncmp(sn, "adam.schedule.", 14))
      continue;
    FUZZ_CHECK(n < CAP, "too many tensors");
    names[n] = nn_optimizer_state_names(opt)[i], ts[n++] = nn_optimizer_state_tensors(opt)[i];
  }
  FUZZ_CHECK(nn_checkpoint_save(ctx, out_path("checkpoint", name), n, names, ts) == AD_OK, "%s",
             ad_last_error(ctx));
  nn_optimizer_free(opt);
  nn_model_free(m);
}

/* A header written by hand: a tensor with more dims than the engine has. */
static void write_nine_dims(const char *path) {
  static const char json[] =
      "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}";
  unsigned char b[128];
  size_t jl = sizeof json - 1;
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)jl >> (8 * i));
  memcpy(b + 8, json, jl);
  memset(b + 8 + jl, 0, 4);
  write_bytes(path, b, 8 + jl + 4);
}

/* A small model with a BatchNorm (its num_batches_tracked stored as I64)
 * and a weight listed twice (tied), trained by optimizer cfg with a step
 * schedule for two steps, saved as file name: every kind of state a
 * checkpoint of nn_model_save holds. On a context of its own (training
 * leaves blocks in the context for the next tape). */
static void save_model_opt(const nn_opt_config *cfg, const char *name) {
  ad_ctx *ctx = ad_ctx_new();
  FUZZ_CHECK(ctx, "cannot create a context");
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  nn_model *m = nn_sequential_new(ctx);
  FUZZ_CHECK(m && nn_model_add(m, nn_dense_new(ctx, 3, 2, &rng, NULL)) == AD_OK &&
                 nn_model_add(m, nn_batch_norm1d_new(ctx, 2, NULL)) == AD_OK,
             "%s", ad_last_error(ctx));
  nn_params *p = nn_model_params(m);
  FUZZ_CHECK(nn_params_add(p, "tied.weight", nn_params_find(p, "0.weight"), false) == AD_OK, "%s",
             ad_last_error(ctx));
  nn_optimizer *opt = nn_optimizer_new(p, cfg);
  const nn_schedule sched = {.kind = NN_SCHED_STEP, .step_size = 1, .gamma = 0.5};
  FUZZ_CHECK(opt && nn_optimizer_set_schedule(opt, &sched) == AD_OK, "%s", ad_last_error(ctx));
  ad_tensor *x = ad_zeros(ctx, AD_F32, 2, (const int64_t[]){4, 3});
  FUZZ_CHECK(x, "%s", ad_last_error(ctx));
  for (int64_t i = 0; i < x->size; i++) ad_tensor_set(x, i, (double)(i % 7) - 3);
  for (int s = 0; s < 2; s++) {
    ad_tensor *y = nn_model_forward(m, x);
    ad_tensor *l = y ? ad_sum(ctx, ad_mul(ctx, y, y)) : NULL;
    FUZZ_CHECK(l && ad_backward(ctx, l, NULL) == AD_OK && nn_optimizer_step(opt) == AD_OK &&
                   nn_optimizer_schedule_step(opt) == AD_OK,
               "%s", ad_last_error(ctx));
    nn_optimizer_zero_grad(opt);
    ad_tape_reset(ctx);
  }
  FUZZ_CHECK(nn_model_save(m, opt, out_path("checkpoint", name)) == AD_OK, "%s",
             ad_last_error(ctx));
  /* what the library writes, it loads */
  FUZZ_CHECK(nn_model_load(m, opt, out_path("checkpoint", name)) == AD_OK, "%s",
             ad_last_error(ctx));
  ad_tensor_free(x);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_ctx_free(ctx);
}

/* Tensors stored as I64 (nn_checkpoint_save_as), with the values at the
 * edges of what AD_F64 and AD_I32 hold exactly. */
static void write_i64(ad_ctx *ctx, const char *path) {
  ad_tensor *t[2] = {ad_zeros(ctx, AD_F64, 1, (const int64_t[]){4}),
                     ad_zeros(ctx, AD_I32, 2, (const int64_t[]){1, 2})};
  FUZZ_CHECK(t[0] && t[1], "%s", ad_last_error(ctx));
  const double f[4] = {0, -1, 9007199254740992.0, -9007199254740992.0};
  for (int i = 0; i < 4; i++) ad_tensor_set(t[0], i, f[i]);
  ad_tensor_set(t[1], 0, INT32_MIN), ad_tensor_set(t[1], 1, INT32_MAX);
  const char *names[2] = {"counts", "ids"};
  const nn_store stores[2] = {NN_STORE_I64, NN_STORE_I64};
  FUZZ_CHECK(nn_checkpoint_save_as(ctx, path, 2, names, t, stores, 0, NULL, NULL) == AD_OK, "%s",
             ad_last_error(ctx));
  ad_tensor_free(t[0]);
  ad_tensor_free(t[1]);
}

static void gen_checkpoint(ad_ctx *ctx) {
  /* every optimizer's state, schedules, tied weights, an I64 buffer */
  static const struct {
    nn_opt_kind kind;
    const char *file;
  } opts[] = {{NN_OPT_SGD, "model-bn-sgd.safetensors"},
              {NN_OPT_ADAGRAD, "model-bn-adagrad.safetensors"},
              {NN_OPT_RMSPROP, "model-bn-rmsprop.safetensors"},
              {NN_OPT_ADAMW, "model-bn-adamw.safetensors"}};
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
    nn_opt_config cfg = nn_opt_defaults(opts[i].kind, 0.1);
    if (opts[i].kind != NN_OPT_ADAGRAD && opts[i].kind != NN_OPT_ADAMW) cfg.momentum = 0.9;
    cfg.centered = true;
    save_model_opt(&cfg, opts[i].file);
  }
  write_i64(ctx, out_path("checkpoint", "i64.safetensors"));

  /* the model fuzz_checkpoint loads into, whole and cut; and one with
   * the same names but other shapes (another architecture's checkpoint) */
  save_model(ctx, FUZZ_HIDDEN, "model-adam.safetensors");
  char model[1024];
  snprintf(model, sizeof model, "%s", out_path("checkpoint", "model-adam.safetensors"));
  write_prefix(model, out_path("checkpoint", "truncated-data.safetensors"), 1100);
  write_prefix(model, out_path("checkpoint", "truncated-header.safetensors"), 300);
  save_model(ctx, 1, "model-other-shapes.safetensors");
  save_model_legacy(ctx, "model-adam-legacy.safetensors");

  ad_tensor *t[4] = {
      filled(ctx, AD_F64, 2, (const int64_t[]){2, 2}),
      filled(ctx, AD_I32, 1, (const int64_t[]){3}),
      filled(ctx, AD_F32, 0, NULL),
      filled(ctx, AD_F32, 2, (const int64_t[]){0, 3}),
  };
  const char *names[4] = {"a.f64", "b\"i32\"", "scalar", "empty"};
  const char *keys[2] = {"epoch", "note"}, *values[2] = {"3", "caf\xc3\xa9\n"};
  FUZZ_CHECK(nn_checkpoint_save_meta(ctx, out_path("checkpoint", "dtypes-meta.safetensors"), 4,
                                     names, t, 2, keys, values) == AD_OK,
             "%s", ad_last_error(ctx));
  FUZZ_CHECK(nn_checkpoint_save(ctx, out_path("checkpoint", "empty.safetensors"), 0, NULL, NULL) ==
                 AD_OK,
             "%s", ad_last_error(ctx));
  for (int i = 0; i < 4; i++) ad_tensor_free(t[i]);
  write_foreign(out_path("checkpoint", "foreign-dtypes.safetensors"));
  write_nine_dims(out_path("checkpoint", "nine-dims.safetensors"));

  /* more entries than the reader's first table holds (16) */
  enum { MANY = 20 };
  ad_tensor *many[MANY];
  const char *many_names[MANY];
  char name_buf[MANY][8];
  for (int i = 0; i < MANY; i++) {
    snprintf(name_buf[i], sizeof name_buf[i], "t%d", i);
    many_names[i] = name_buf[i];
    many[i] = filled(ctx, i % 3 == 0 ? AD_I32 : AD_F32, 1, (const int64_t[]){i % 2});
  }
  FUZZ_CHECK(nn_checkpoint_save(ctx, out_path("checkpoint", "many-tensors.safetensors"), MANY,
                                many_names, many) == AD_OK,
             "%s", ad_last_error(ctx));
  for (int i = 0; i < MANY; i++) ad_tensor_free(many[i]);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: gen_corpus DIR (writes DIR/idx/ and DIR/checkpoint/)\n");
    return 2;
  }
  dir = argv[1];
  fuzz_ctx_init();
  gen_idx();
  gen_checkpoint(fuzz_ctx);
  fuzz_ctx_check_freed();
  return 0;
}
