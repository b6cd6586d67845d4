/* gen_corpus.c: writes the seed corpus of the fuzz targets, mostly with the
 * project's own writers, so that the seeds are files users really have,
 * and for fuzz_ops small programs that run each op family once:
 *
 *   gen_corpus DIR   writes DIR/idx/, DIR/checkpoint/ and DIR/ops/ (the
 *                    folders must exist), deterministically
 *
 * `ninja -C build-fuzz fuzz-corpus` rewrites fuzz/corpus/ of the source
 * tree. Each folder gets a few small valid files and a few truncated ones
 * (the fuzzer finds the rest); keep them small, libFuzzer mutates them. */
#include "fuzz_common.h"
#include "fuzz_ops.h"

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

/* ---------------------------------------------------------------- ops */

/* A program of fuzz_ops (fuzz/fuzz_ops.h), built byte by byte. */
static uint8_t prog[1024];
static size_t plen;
static int live; /* tensors the program holds: the operand byte k picks the k-th */

static void emit(const uint8_t *b, size_t n) {
  FUZZ_CHECK(plen + n <= sizeof prog, "program too long");
  memcpy(prog + plen, b, n);
  plen += n;
}
#define EMIT(...) emit((const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}))

/* A leaf of dtype dt with ndim dims (each 0..6) and the values 0.5, -1,
 * 1.5, 0.25, -0.75, 2, -0.5, 1 repeated (i32: 0, 1, 2, 0, 1, 2, 0, 1), with
 * requires_grad for a float one. */
static void leaf(ad_dtype dt, int ndim, const uint8_t *dims) {
  static const uint8_t reals[8] = {136, 112, 152, 132, 116, 160, 120, 144};
  EMIT(FOP_LEAF, (uint8_t)dt, (uint8_t)ndim);
  emit(dims, (size_t)ndim);
  for (int i = 0; i < 8; i++) {
    if (dt == AD_I32)
      EMIT(0, 0, (uint8_t)(2 + i % 3));
    else
      EMIT(reals[i]);
  }
  if (dt != AD_I32) EMIT(FOP_REQ_GRAD, (uint8_t)live); /* the leaves come first */
  live++;
}
#define LEAF(dt, ...)                                                                              \
  leaf(dt, sizeof((const uint8_t[]){__VA_ARGS__}), (const uint8_t[]){__VA_ARGS__})

/* Starts a program with the leaves most ops take: 0 [2,3], 1 [3], 2 i32
 * [2] (0, 1), 3 [1,2,4,4], 4 [2,2,3,3], 5 [2,4], 6 [2,1], all f64 (a
 * leaf's dims are 0..6). */
static void prelude(void) {
  plen = 0;
  live = 0;
  LEAF(AD_F64, 2, 3);
  LEAF(AD_F64, 3);
  LEAF(AD_I32, 2);
  LEAF(AD_F64, 1, 2, 4, 4);
  LEAF(AD_F64, 2, 2, 3, 3);
  LEAF(AD_F64, 2, 4);
  LEAF(AD_F64, 2, 1);
}

/* Applies op with the operand and argument bytes given (a result is the
 * next operand). */
static void apply_op(int op, const uint8_t *args, size_t n) {
  EMIT(FOP_APPLY, (uint8_t)op);
  emit(args, n);
  live++;
}
#define APPLY(op, ...)                                                                             \
  apply_op(op, (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}))

/* Ends a program: backward from the sum of the last result, ad_grad of it
 * twice (every leaf as an input), a tape reset and a freed leaf. */
static void finish(const char *name) {
  int last = live - 1;
  EMIT(FOP_BACKWARD, (uint8_t)last, 200, 200);
  EMIT(FOP_GRAD2, (uint8_t)last, 0, 0, 0, 0, 200, 0);
  EMIT(FOP_RESET, FOP_FREE, 0, 0);
  char file[64];
  snprintf(file, sizeof file, "%s.bin", name);
  write_bytes(out_path("ops", file), prog, plen);
}

/* One program per op family of FUZZ_OPS (a few more for the ops whose
 * inputs the prelude lacks), and one of misuse. Operand bytes pick the
 * prelude's tensors by number; the argument bytes are those fuzz_ops.c's
 * run_op reads (an axis byte is axis + 5, an integer's value + 1). */
static void gen_ops(void) {
  static const struct {
    int op;
    uint8_t args[40];
    size_t n;
  } simple[] = {
#define S(op, ...) {op, {__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})}
      S(OP_add, 0, 1),
      S(OP_sub, 1, 0),
      S(OP_mul, 0, 1),
      S(OP_div, 0, 1),
      S(OP_pow, 0, 1),
      S(OP_maximum, 0, 1),
      S(OP_minimum, 0, 1),
      S(OP_compare, 1, 0, 1),
      S(OP_where, 0, 0, 1),
      S(OP_scalar_op, 0, 0, 160),
      S(OP_unary, 7, 0),
      S(OP_clamp, 0, 112, 144, 1),
      S(OP_cast, 0, 0),
      S(OP_matmul, 0, 0, 2),
      S(OP_reshape, 0, 2, 30, 3, 30, 2, 100),
      S(OP_permute, 0, 0, 200),
      S(OP_transpose, 3, 4, 3),
      S(OP_expand, 1, 2, 30, 2, 30, 3),
      S(OP_sum_to, 0, 1, 30, 3),
      S(OP_narrow, 0, 6, 2, 3),
      S(OP_pad, 0, 6, 2, 3),
      S(OP_concat, 2, 0, 0, 5),
      S(OP_stack, 2, 0, 0, 5),
      S(OP_unstack, 0, 5, 1),
      S(OP_detach, 0),
      S(OP_index_select, 0, 2),
      S(OP_index_add, 0, 2, 4),
      S(OP_embedding, 0, 2, 1, 0),
      S(OP_reduce, 0, 0),
      S(OP_reduce_axis, 3, 0, 6, 1),
      S(OP_softmax, 0, 4, 1),
      S(OP_cross_entropy, 0, 2, 1),
      S(OP_binary_cross_entropy, 0, 0),
      S(OP_batch_norm, 0, 200, 1, 200, 1, 0, 0, 1, 130, 236),
      S(OP_layer_norm, 0, 200, 1, 0, 0, 0, 0, 0),
      S(OP_lstm_cell, 5, 6),
      S(OP_gru_cell, 0, 0, 6),
      S(OP_attention, 0, 0, 0, 0, 0, 1, 0, 0, 200, 1, 200),
      S(OP_pool2d, 3, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 200, 0),
      S(OP_global_avg_pool2d, 3),
      S(OP_pool3d, 3, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 2),
      S(OP_conv2d, 3, 4, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 200, 0, 0, 200),
      S(OP_conv_transpose2d, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 200),
      S(OP_like, 0, 1),
      S(OP_op_apply, 20, 0, 1, 0), /* id 19 (tanh), one input */
      S(OP_gather, 1, 2, 5),       /* [3] at the i32 [2] (0, 1), axis 0 */
      S(OP_flip, 2, 200, 0, 5, 6, 5, 5, 200),
      S(OP_cumsum, 0, 6),
      S(OP_argmax, 0, 6, 0, 1),
      S(OP_min_var_std, 2, 1, 200, 0, 6, 5, 5, 5, 200, 0, 1, 0), /* var over axis 1, correction 1 */
#undef S
  };
  for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++) {
    prelude();
    apply_op(simple[i].op, simple[i].args, simple[i].n);
    finish(op_name[simple[i].op]);
  }

  /* the ops whose inputs the prelude lacks */
  prelude();
  APPLY(OP_conv2d, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 200); /* [1,2,2,2] */
  APPLY(OP_conv2d_weight, 3, 7, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 200);
  finish("conv2d_weight");
  prelude();
  LEAF(AD_F64, 1, 2, 5);
  LEAF(AD_F64, 2, 2, 3);
  APPLY(OP_conv1d, 7, 8, 0, 0, 0, 0, 0, 0, 200, 200);
  finish("conv1d");
  prelude();
  LEAF(AD_F64, 1, 2, 5);
  LEAF(AD_F64, 2, 2, 3);
  APPLY(OP_conv_transpose1d, 7, 8, 0, 0, 0, 0, 0, 0, 0, 200);
  finish("conv_transpose1d");
  for (int k = 0; k < 2; k++) {
    prelude();
    LEAF(AD_F64, 2, 3, 3, 3);
    LEAF(AD_F64, 4, 4, 2);
    APPLY(OP_reshape, 8, 5, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 100); /* [2,2,2,2,2] */
    APPLY(k ? OP_conv_transpose3d : OP_conv3d, 7, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200,
          0, 0, 0, 200);
    finish(k ? "conv_transpose3d" : "conv3d");
  }
  prelude();
  LEAF(AD_F64, 1, 2, 4);
  LEAF(AD_F64, 4, 1);
  LEAF(AD_F64, 4);
  APPLY(OP_lstm_seq, 7, 8, 9, 6, 6, 0, 0);
  finish("lstm_seq");
  prelude();
  LEAF(AD_F64, 1, 2, 3);
  LEAF(AD_F64, 3, 1);
  LEAF(AD_F64, 3);
  APPLY(OP_gru_seq, 7, 8, 9, 9, 6, 0, 0);
  finish("gru_seq");
  prelude();
  LEAF(AD_F64, 2);
  APPLY(OP_scatter_add, 1, 2, 7, 5); /* into [3] at (0, 1), axis 0 */
  finish("scatter_add");
  prelude();
  APPLY(OP_min_var_std, 3, 0, 200, 4, 5, 5, 5, 5, 200, 0, 0, 1); /* std of everything, keepdim */
  finish("std");
  prelude();
  APPLY(OP_min_var_std, 1, 0, 200, 3, 7, 5, 5, 5, 200, 0, 0, 0); /* min along axis 2 */
  finish("min_axis");

  /* misuse: NULL, a tensor of another context, a freed leaf, anomaly mode
   * and no-grad mode, a write into a leaf the tape used */
  prelude();
  APPLY(OP_add, 0, 248);
  APPLY(OP_matmul, 252, 0, 0);
  EMIT(FOP_FREE, 0, 1);
  APPLY(OP_mul, 250, 0);
  EMIT(FOP_ANOMALY);
  APPLY(OP_unary, 2, 0); /* log of negative values: NaN */
  EMIT(FOP_ANOMALY, FOP_GRAD_MODE);
  APPLY(OP_unary, 7, 0);
  EMIT(FOP_GRAD_MODE);
  APPLY(OP_mul, 0, 0);
  EMIT(FOP_WRITE, 0, 0, 128);
  finish("misuse");
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: gen_corpus DIR (writes DIR/idx/, DIR/checkpoint/ and DIR/ops/)\n");
    return 2;
  }
  dir = argv[1];
  fuzz_ctx_init();
  gen_idx();
  gen_checkpoint(fuzz_ctx);
  gen_ops();
  fuzz_ctx_check_freed();
  return 0;
}
