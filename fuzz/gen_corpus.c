/* gen_corpus.c: writes the seed corpus of the fuzz targets, mostly with the
 * project's own writers, so that the seeds are files users really have,
 * and for fuzz_ops and fuzz_nn small programs that run each op family,
 * layer family and loss once:
 *
 *   gen_corpus DIR   writes DIR/idx/, DIR/checkpoint/, DIR/ops/ and DIR/nn/
 *                    (the folders must exist), deterministically
 *
 * `ninja -C build-fuzz fuzz-corpus` rewrites fuzz/corpus/ of the source
 * tree. Each folder gets a few small valid files and a few truncated ones
 * (the fuzzer finds the rest); keep them small, libFuzzer mutates them. */
#include "fuzz_common.h"
#include "fuzz_nn.h"
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
 * counts, the learning rate, the schedule's and the plateau's state), which
 * nn_model_load then sets from the optimizer. */
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
        !strncmp(sn, "adam.schedule.", 14) || !strncmp(sn, "adam.plateau.", 13))
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

/* ----------------------------------------------------------------- nn */

/* Programs of fuzz_nn (fuzz/fuzz_nn.h) are built in prog as fuzz_ops's
 * are; live counts the tensors the program holds (inputs and results,
 * the operand byte k picks the k-th), layers the layers. */
static int layers_made;

/* An input of dtype dt with ndim dims (each 0..6) and the values v (8
 * bytes; NULL: 0.5, -1, 1.5, 0.25, -0.75, 2, -0.5, 1; i32: 0, 1, 2, 0, ...),
 * with requires_grad for a float one. */
static void nn_input(ad_dtype dt, int ndim, const uint8_t *dims, const uint8_t *v) {
  static const uint8_t reals[8] = {136, 112, 152, 132, 116, 160, 120, 144};
  static const uint8_t ints[8] = {0, 1, 2, 0, 1, 2, 0, 1};
  static int inputs; /* of this program: the leaves, for NOP_REQ_GRAD */
  if (live == 0) inputs = 0;
  EMIT(NOP_INPUT, (uint8_t)dt, (uint8_t)ndim);
  emit(dims, (size_t)ndim);
  emit(v ? v : dt == AD_I32 ? ints : reals, 8);
  if (dt != AD_I32) EMIT(NOP_REQ_GRAD, (uint8_t)inputs);
  inputs++;
  live++;
}
#define NN_IN(dt, ...)                                                                             \
  nn_input(dt, sizeof((const uint8_t[]){__VA_ARGS__}), (const uint8_t[]){__VA_ARGS__}, NULL)

/* Values in [0, 1] (probabilities, targets of bce), and +-1 (labels of the
 * margin losses). */
static const uint8_t probs[8] = {136, 132, 140, 128, 144, 134, 138, 130};
static const uint8_t signs[8] = {144, 112, 144, 144, 112, 112, 144, 112};

static void emit_layer(int kind, const uint8_t *args, size_t n) {
  EMIT(NOP_LAYER, (uint8_t)kind, 15); /* nn_layer_describe into 15 bytes */
  emit(args, n);
  layers_made++;
}

static void nn_start(void) {
  plen = 0;
  live = 0;
  layers_made = 0;
}

static void nn_finish(const char *name) {
  char file[64];
  snprintf(file, sizeof file, "%s.bin", name);
  write_bytes(out_path("nn", file), prog, plen);
}

/* One program per layer kind: its inputs, the layer with the arguments
 * fuzz_nn.c's builder reads (byte values: a size s is s - 1, a kernel k
 * k - 1, an option o o, a real r 32 r for r >= 0 (r a multiple of 1/16),
 * an index i i + 1, a dim d d + 3; a byte of 128 or more before the
 * options asks for them), then its own forward in training mode (with the
 * bytes after the operands), backward from the sum of the result, the
 * forward in evaluation mode, the layer in a Sequential run on the same
 * input in both modes, and an MSE loss against a target of the result's
 * shape with backward. */
static void gen_nn_layers(void) {
  static const struct {
    int kind;
    uint8_t args[48];
    size_t n;
    uint8_t in[2][7]; /* the inputs: dtype, ndim, dims */
    uint8_t fwd[48];  /* the forward's bytes after the first operand */
    size_t nf;
    bool seq; /* also run in a Sequential */
  } seeds[] = {
#define A(...) {__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})
#define NOF    {0}, 0
      {L_dense, A(2, 1, 0, 0), {{0, 2, 2, 3}}, NOF, true},
      {L_activation, A(3), {{0, 2, 2, 3}}, NOF, true},
      {L_leaky_relu, A(2), {{0, 2, 2, 3}}, NOF, true},
      {L_elu, A(16), {{0, 2, 2, 3}}, NOF, true},
      {L_celu, A(16), {{0, 2, 2, 3}}, NOF, true},
      {L_softshrink, A(16), {{0, 2, 2, 3}}, NOF, true},
      {L_hardshrink, A(16), {{0, 2, 2, 3}}, NOF, true},
      {L_hardtanh, A(33, 32), {{0, 2, 2, 3}}, NOF, true},
      {L_threshold, A(16, 64), {{0, 2, 2, 3}}, NOF, true},
      {L_rrelu, A(4, 10, 0), {{0, 2, 2, 3}}, NOF, true},
      {L_relu6, {0}, 0, {{0, 2, 2, 3}}, NOF, true},
      {L_flatten, {0}, 0, {{0, 3, 2, 3, 2}}, NOF, true},
      {L_identity, {0}, 0, {{0, 2, 2, 3}}, NOF, true},
      {L_global_avg_pool2d, {0}, 0, {{0, 4, 1, 2, 4, 4}}, NOF, true},
      {L_softmax2d, {0}, 0, {{0, 4, 1, 2, 4, 4}}, NOF, true},
      {L_lambda, A(0, 0), {{0, 2, 2, 3}}, NOF, true},
      {L_prelu, A(1, 8, 0), {{0, 3, 2, 2, 3}}, NOF, true},
      {L_dropout, A(184, 0), {{0, 2, 2, 3}}, NOF, true},
      {L_dropout1d, A(184, 0), {{0, 3, 2, 3, 4}}, NOF, true},
      {L_dropout2d, A(184, 0), {{0, 4, 1, 2, 4, 4}}, NOF, true},
      {L_dropout3d, A(184, 0), {{0, 5, 1, 2, 2, 2, 2}}, NOF, true},
      {L_glu, A(2), {{0, 2, 2, 4}}, NOF, true},
      {L_softmin, A(2), {{0, 2, 2, 4}}, NOF, true},
      {L_batch_norm1d, A(2, 0), {{0, 2, 4, 3}}, NOF, true},
      {L_batch_norm2d, A(1, 0), {{0, 4, 2, 2, 3, 3}}, NOF, true},
      {L_batch_norm3d, A(1, 0), {{0, 5, 2, 2, 2, 2, 2}}, NOF, true},
      {L_instance_norm1d, A(1, 200, 0, 0, 3, 0), {{0, 3, 2, 2, 4}}, NOF, true},
      {L_instance_norm2d, A(1, 0), {{0, 4, 2, 2, 3, 3}}, NOF, true},
      {L_instance_norm3d, A(1, 0), {{0, 5, 1, 2, 2, 2, 2}}, NOF, true},
      {L_group_norm, A(1, 3, 0), {{0, 3, 2, 4, 3}}, NOF, true},
      {L_layer_norm, A(0, 2, 0), {{0, 2, 2, 3}}, NOF, true},
      {L_local_response_norm, A(1, 235, 24, 32), {{0, 3, 1, 4, 3}}, NOF, true},
      {L_conv1d, A(1, 2, 2, 0, 0), {{0, 3, 1, 2, 5}}, NOF, true},
      {L_conv1d_ext, A(1, 2, 2, 0, 200, 0, 1, 0, 0, 0, 0, 0, 0, 1), {{0, 3, 1, 2, 5}}, NOF, true},
      {L_conv_transpose1d, A(1, 2, 2, 0, 0), {{0, 3, 1, 2, 4}}, NOF, true},
      {L_conv2d, A(1, 2, 2, 2, 0, 0), {{0, 4, 1, 2, 4, 4}}, NOF, true},
      {L_conv2d_ext,
       A(1, 2, 2, 2, 0, 200, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3),
       {{0, 4, 1, 2, 4, 4}},
       NOF,
       true},
      {L_conv_transpose2d, A(1, 2, 2, 2, 0, 0), {{0, 4, 1, 2, 3, 3}}, NOF, true},
      {L_conv_transpose2d_ext,
       A(1, 2, 2, 2, 0, 200, 2, 2, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0),
       {{0, 4, 1, 2, 3, 3}},
       NOF,
       true},
      {L_conv3d, A(0, 1, 1, 1, 1, 0, 0), {{0, 5, 1, 1, 3, 3, 3}}, NOF, true},
      {L_conv_transpose3d, A(0, 1, 1, 1, 1, 0, 0), {{0, 5, 1, 1, 2, 2, 2}}, NOF, true},
      {L_max_pool1d, A(1, 0), {{0, 3, 1, 2, 6}}, NOF, true},
      {L_avg_pool1d, A(1, 0), {{0, 3, 1, 2, 6}}, NOF, true},
      {L_max_pool2d, A(1, 1, 0), {{0, 4, 1, 2, 4, 4}}, NOF, true},
      {L_avg_pool2d, A(1, 1, 0), {{0, 4, 1, 2, 4, 4}}, NOF, true},
      {L_max_pool3d, A(1, 1, 1, 0), {{0, 5, 1, 1, 4, 4, 4}}, NOF, true},
      {L_avg_pool3d, A(1, 1, 1, 0), {{0, 5, 1, 1, 4, 4, 4}}, NOF, true},
      {L_lp_pool1d, A(64, 1, 0), {{0, 3, 1, 2, 6}}, NOF, true},
      {L_lp_pool2d, A(64, 1, 1, 0), {{0, 4, 1, 2, 4, 4}}, NOF, true},
      {L_adaptive_avg_pool1d, A(2), {{0, 3, 1, 2, 5}}, NOF, true},
      {L_adaptive_avg_pool2d, A(1, 2), {{0, 4, 1, 2, 5, 4}}, NOF, true},
      {L_adaptive_avg_pool3d, A(1, 1, 1), {{0, 5, 1, 1, 3, 4, 5}}, NOF, true},
      {L_adaptive_max_pool1d, A(2), {{0, 3, 1, 2, 5}}, NOF, true},
      {L_adaptive_max_pool2d, A(1, 2), {{0, 4, 1, 2, 5, 4}}, NOF, true},
      {L_adaptive_max_pool3d, A(1, 1, 1), {{0, 5, 1, 1, 3, 4, 5}}, NOF, true},
      {L_upsample, A(0, 0, 0, 0, 200, 64, 0, 0, 0), {{0, 4, 1, 2, 3, 3}}, NOF, true},
      {L_pixel_shuffle, A(1), {{0, 4, 1, 4, 2, 2}}, NOF, true},
      {L_pixel_unshuffle, A(1), {{0, 4, 1, 1, 4, 4}}, NOF, true},
      {L_unfold, A(1, 1, 0, 0, 0, 0, 0, 0, 0), {{0, 4, 1, 2, 4, 4}}, NOF, true},
      {L_fold, A(1, 1, 0, 0, 0, 0, 0, 0, 2, 2, 0), {{0, 3, 1, 4, 4}}, NOF, true},
      {L_unflatten, A(4, 2, 40, 1, 40, 2), {{0, 2, 2, 6}}, NOF, true},
      {L_zero_pad2d, A(2, 2, 1, 1), {{0, 4, 1, 1, 3, 3}}, NOF, true},
      {L_constant_pad1d, A(2, 3, 16), {{0, 3, 1, 2, 4}}, NOF, true},
      {L_constant_pad2d, A(2, 2, 1, 3, 16), {{0, 4, 1, 1, 3, 3}}, NOF, true},
      {L_constant_pad3d, A(2, 2, 1, 1, 2, 0, 16), {{0, 5, 1, 1, 3, 3, 3}}, NOF, true},
      {L_reflection_pad1d, A(2, 3), {{0, 3, 1, 2, 4}}, NOF, true},
      {L_reflection_pad2d, A(2, 2, 1, 3), {{0, 4, 1, 1, 4, 4}}, NOF, true},
      {L_reflection_pad3d, A(2, 2, 2, 2, 2, 2), {{0, 5, 1, 1, 3, 3, 3}}, NOF, true},
      {L_replication_pad1d, A(2, 3), {{0, 3, 1, 2, 4}}, NOF, true},
      {L_replication_pad2d, A(2, 2, 1, 3), {{0, 4, 1, 1, 3, 3}}, NOF, true},
      {L_replication_pad3d, A(2, 2, 2, 2, 2, 2), {{0, 5, 1, 1, 3, 3, 3}}, NOF, true},
      /* two inputs: the second operand is the next input */
      {L_bilinear, A(1, 2, 1, 0, 0, 0), {{0, 2, 4, 2}, {0, 2, 4, 3}}, A(1), false},
      {L_cosine_similarity, A(4, 0), {{0, 2, 3, 4}, {0, 2, 3, 4}}, A(1), false},
      {L_pairwise_distance, A(64, 0, 0), {{0, 2, 3, 4}, {0, 2, 3, 4}}, A(1), false},
      /* h0, c0 none, no lengths */
      {L_rnn, A(0, 2, 3, 0, 0), {{0, 3, 5, 2, 3}}, A(0, 0, 0, 1), true},
      /* bidirectional, 5 and 3 steps */
      {L_lstm, A(2, 3, 0, 200, 1, 16, 0, 0, 0), {{0, 3, 5, 2, 3}}, A(0, 0, 2, 6, 4, 0), true},
      {L_gru, A(2, 3, 0, 0), {{0, 3, 5, 2, 3}}, A(0, 0, 0, 1), true},
      /* an LSTM with proj_size 2 */
      {L_rnn_ext, A(2, 2, 3, 0, 200, 0, 0, 0, 0, 0, 2), {{0, 3, 5, 2, 3}}, A(0, 0, 0, 1), true},
      {L_embedding, A(4, 2, 0, 0), {{2, 2, 2, 3}}, NOF, true},
      {L_embedding_ext, A(4, 2, 0, 200, 1, 1, 0, 0, 16, 64, 1), {{2, 2, 2, 3}}, NOF, true},
      /* bags of a 2-D input, no per-sample weights */
      {L_embedding_bag, A(4, 2, 0, 0), {{2, 2, 2, 3}}, A(0, 0), true},
      /* self-attention, with weights */
      {L_multihead_attention, A(3, 1, 0, 0), {{0, 3, 3, 2, 4}}, A(16, 0, 0), true},
      {L_multihead_attention_ext,
       A(3, 1, 0, 200, 24, 0, 0, 0, 0, 0),
       {{0, 3, 3, 2, 4}},
       A(16, 0, 0),
       true},
      {L_transformer_encoder_layer, A(3, 1, 0, 0), {{0, 3, 3, 2, 4}}, A(0, 0, 0), true},
      /* tgt and memory */
      {L_transformer_decoder_layer,
       A(3, 1, 0, 0),
       {{0, 3, 3, 2, 4}, {0, 3, 2, 2, 4}},
       A(1, 0, 0, 0, 0, 0),
       false},
      {L_transformer_encoder, A(3, 1, 0, 0, 1, 200, 1, 0), {{0, 3, 3, 2, 4}}, A(0, 0, 0), true},
      {L_transformer_decoder,
       A(3, 1, 0, 0, 1, 0),
       {{0, 3, 3, 2, 4}, {0, 3, 2, 2, 4}},
       A(1, 0, 0, 0, 0, 0),
       false},
      /* src and tgt */
      {L_transformer,
       A(0, 3, 1, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0),
       {{0, 3, 3, 2, 4}, {0, 3, 2, 2, 4}},
       A(1, 0, 0, 0, 0, 0, 0),
       false},
#undef NOF
#undef A
  };
  bool seen[LAYER_KINDS] = {false};
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
    nn_start();
    for (int j = 0; j < 2 && seeds[i].in[j][1]; j++)
      nn_input((ad_dtype)seeds[i].in[j][0], seeds[i].in[j][1], seeds[i].in[j] + 2, NULL);
    int x = 0;
    emit_layer(seeds[i].kind, seeds[i].args, seeds[i].n);
    /* max pooling layers: nn_layer_forward (mode 4), not the indices */
    const char *kn = layer_name[seeds[i].kind];
    int plain = strstr(kn, "max_pool") ? 4 : 0;
    /* the results that are x itself (not stored as operands), and the
     * states and weights an own forward stores after its result */
    int k = seeds[i].kind;
    bool dropout = k == L_dropout || k == L_dropout1d || k == L_dropout2d || k == L_dropout3d;
    int extra = k == L_lstm || k == L_rnn_ext                                  ? 2
                : k == L_rnn || k == L_gru                                     ? 1
                : k == L_multihead_attention || k == L_multihead_attention_ext ? 1
                                                                               : 0;
    int y = x;
    for (int mode = 1; mode >= 0; mode--) { /* training, then evaluation */
      EMIT(NOP_FORWARD, 0, (uint8_t)(mode | plain), (uint8_t)x);
      emit(seeds[i].fwd, seeds[i].nf);
      y = k == L_identity || (dropout && !mode) ? x : live;
      if (y != x) live += 1 + extra;
      if (mode) EMIT(NOP_BACKWARD, (uint8_t)y, 200);
    }
    if (seeds[i].seq) {
      EMIT(NOP_SEQ, 0, 0); /* a Sequential of the layer */
      EMIT(NOP_MODEL_FWD, 0, (uint8_t)x);
      y = k == L_identity ? x : live++;
      EMIT(NOP_BACKWARD, (uint8_t)y, 200);
      EMIT(NOP_TRAINING, 0, NOP_MODEL_FWD, 0, (uint8_t)x);
      y = k == L_identity || dropout ? x : live++;
    }
    /* MSE against a target of the last result's shape (an input "like" it) */
    EMIT(NOP_INPUT, 0, 6, (uint8_t)y, 136, 112, 152, 132, 116, 160, 120, 144);
    EMIT(NOP_LOSS, LOSS_mse, 0, (uint8_t)y, (uint8_t)live);
    live += 2;
    EMIT(NOP_BACKWARD, (uint8_t)(live - 1), 0);
    EMIT(NOP_RESET, NOP_FREE, 0, 0, NOP_FREE, 2, 0);
    nn_finish(layer_name[seeds[i].kind]);
    seen[seeds[i].kind] = true;
  }
  for (int k = 0; k < LAYER_KINDS; k++)
    if (!seen[k] && k != L_max_unpool1d && k != L_max_unpool2d && k != L_max_unpool3d)
      FUZZ_CHECK(false, "no seed for layer %s", layer_name[k]);

  /* max unpooling: pool (nn_layer_forward), its indices, then unpool */
  static const struct {
    int pool, unpool;
    uint8_t args[4];
    uint8_t in[7];
  } unpool[] = {{L_max_pool1d, L_max_unpool1d, {1, 0}, {0, 3, 1, 2, 6}},
                {L_max_pool2d, L_max_unpool2d, {1, 1, 0}, {0, 4, 1, 2, 4, 4}},
                {L_max_pool3d, L_max_unpool3d, {1, 1, 1, 0}, {0, 5, 1, 1, 4, 4, 4}}};
  for (int i = 0; i < 3; i++) {
    nn_start();
    nn_input((ad_dtype)unpool[i].in[0], unpool[i].in[1], unpool[i].in + 2, NULL);
    size_t na = (size_t)(i + 2);
    emit_layer(unpool[i].pool, unpool[i].args, na);
    emit_layer(unpool[i].unpool, unpool[i].args, na);
    EMIT(NOP_FORWARD, 0, 4, 0);                /* pooled: 1 */
    EMIT(NOP_FORWARD, 0, 0, 0);                /* indices: 2 */
    EMIT(NOP_FORWARD, 1, 1, 1, 2, 0, 0, 0, 0); /* unpooled: 3 */
    EMIT(NOP_BACKWARD, 3, 200, NOP_RESET);
    nn_finish(layer_name[unpool[i].unpool]);
  }
}

/* One program per loss: inputs 0 pred [4,3], 1 target [4,3], 2 labels
 * i32 [4] (0, 1, 2, 0), 3 probabilities [4,3], 4 signs (+-1) [4,3], 5
 * [4], 6 signs [4], then the loss (mean) with the operand and argument
 * bytes of fuzz_nn.c's run_loss, backward, and the same with NN_SUM and
 * NN_NONE. */
static void gen_nn_losses(void) {
  static const struct {
    int loss;
    uint8_t args[48];
    size_t n;
  } seeds[] = {
#define S(l, ...) {l, {__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})}
      S(LOSS_mse, 0, 1),
      S(LOSS_l1, 0, 1),
      S(LOSS_smooth_l1, 0, 1),
      S(LOSS_huber, 0, 1),
      S(LOSS_bce, 3, 3),
      S(LOSS_bce_with_logits, 0, 3),
      S(LOSS_soft_margin, 0, 4),
      S(LOSS_cross_entropy, 0, 2),
      S(LOSS_nll, 0, 2),
      S(LOSS_smooth_l1_beta, 0, 1, 16),
      S(LOSS_huber_delta, 0, 1, 32),
      S(LOSS_kl_div, 0, 3, 0),
      S(LOSS_gaussian_nll, 0, 1, 3, 0, 198),
      S(LOSS_poisson_nll, 0, 3, 1, 198),
      S(LOSS_margin_ranking, 5, 5, 6, 16),
      S(LOSS_hinge_embedding, 0, 4, 32),
      S(LOSS_cosine_embedding, 0, 1, 6, 0),
      S(LOSS_triplet_margin, 0, 1, 3, 32, 64, 198, 0),
      S(LOSS_multilabel_soft_margin, 0, 3, 0),
      S(LOSS_multi_margin, 0, 2, 1, 32, 0),
      S(LOSS_sequence_cross_entropy, 0, 2, 0, 1),
      S(LOSS_cross_entropy_ext, 0, 2, 0, 200, 0, 1),
      S(LOSS_nll_ext, 0, 2, 0, 0, 0, 1),
      S(LOSS_bce_ext, 3, 3, 0, 0),
      S(LOSS_bce_with_logits_ext, 0, 3, 0, 0),
#undef S
  };
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
    for (int red = 0; red < 3; red++) { /* NN_MEAN, NN_SUM, NN_NONE */
      nn_start();
      NN_IN(AD_F32, 4, 3);
      NN_IN(AD_F32, 4, 3);
      NN_IN(AD_I32, 4);
      nn_input(AD_F32, 2, (const uint8_t[]){4, 3}, probs);
      nn_input(AD_F32, 2, (const uint8_t[]){4, 3}, signs);
      NN_IN(AD_F32, 4);
      nn_input(AD_F32, 1, (const uint8_t[]){4}, signs);
      EMIT(NOP_LOSS, (uint8_t)seeds[i].loss, (uint8_t)(red == 2 ? NN_NONE : red));
      emit(seeds[i].args, seeds[i].n);
      EMIT(NOP_BACKWARD, (uint8_t)live, 200, NOP_RESET);
      char name[64];
      snprintf(name, sizeof name, "%s%s", loss_name[seeds[i].loss],
               red == 2   ? "-none"
               : red == 1 ? "-sum"
                          : "");
      nn_finish(name);
    }
  }
  /* CTC: log_probs [5,2,3], targets i32 [2,2] (1, 2, ...), lengths 5 and 2 */
  nn_start();
  NN_IN(AD_F32, 5, 2, 3);
  nn_input(AD_I32, 2, (const uint8_t[]){2, 2}, (const uint8_t[]){1, 2, 2, 1, 1, 2, 2, 1});
  EMIT(NOP_LOSS, LOSS_ctc, 0, 0, 1);
  for (int i = 0; i < 16; i++) EMIT(6, 3);
  EMIT(3, 0);
  EMIT(NOP_BACKWARD, 2, 200);
  nn_finish("ctc");
}

/* Misuse: a forward given NULL and a foreign tensor, an unknown reduction,
 * a layer added to a second model, freeing a model's layer, an empty
 * Sequential's forward, bad options, a freed input, training toggles. */
static void gen_nn_misuse(void) {
  nn_start();
  NN_IN(AD_F32, 2, 3);
  emit_layer(L_dense, (const uint8_t[]){2, 1, 0, 0}, 4);
  EMIT(NOP_FORWARD, 0, 1, 248);        /* NULL input */
  EMIT(NOP_FORWARD, 0, 1, 252);        /* another context's */
  EMIT(NOP_LOSS, LOSS_mse, 240, 0, 0); /* reduction 4 */
  EMIT(NOP_LOSS, LOSS_l1, 2, 0, 0);    /* batchmean */
  EMIT(NOP_SEQ, 0, 0, NOP_SEQ, 0, 0);  /* the layer in two models */
  EMIT(NOP_MODEL_FWD, 1, 0);           /* the empty one */
  EMIT(NOP_FREE, 0, 0);                /* a model's layer */
  EMIT(NOP_TRAINING, 0, NOP_TRAINING, 0);
  emit_layer(L_conv2d,
             (const uint8_t[]){1, 2, 252, 1, 0, 200, 0, 0, 0, 0, 0, 0, 3, 0, 0, 1, 0, 0, 0, 0},
             20); /* kernel of 2^31, 3 groups of 2 channels, same */
  emit_layer(L_batch_norm1d, (const uint8_t[]){2, 200, 240, 240, 0, 0}, 6); /* eps, momentum NaN */
  EMIT(NOP_FREE, 2, 0, NOP_FORWARD, 0, 2, 250);                             /* a freed input */
  EMIT(NOP_GRAD_MODE, NOP_MODEL_FWD, 0, 0, NOP_GRAD_MODE);
  nn_finish("misuse");
}

static void gen_nn(void) {
  gen_nn_layers();
  gen_nn_losses();
  gen_nn_misuse();
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr,
            "usage: gen_corpus DIR (writes DIR/idx/, DIR/checkpoint/, DIR/ops/ and DIR/nn/)\n");
    return 2;
  }
  dir = argv[1];
  fuzz_ctx_init();
  gen_idx();
  gen_checkpoint(fuzz_ctx);
  gen_ops();
  gen_nn();
  fuzz_ctx_check_freed();
  return 0;
}
