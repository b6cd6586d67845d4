/* test_checkpoint.c: safetensors checkpoints (include/autodiff/nn_io.h).
 *
 * Round trips are bit-exact; a file laid out by PyTorch loads; every corrupt
 * or truncated file, every bad argument and every injected allocation
 * failure gives an error with a message and leaves tensors and existing
 * files untouched. Run from the repository root (meson sets workdir). */
#include "nn_io.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIXTURE "tests/fixtures/torch_small.safetensors"

/* --------------------------------------------------------------- setup */

TEST_TMPDIR_SUITE(checkpoint, "nn-ckpt");

/* ------------------------------------------------------------- helpers */

/* The whole file (malloc'd; caller frees), its size in *n. */
static unsigned char *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *p = malloc((size_t)sz + 1);
  cr_assert_not_null(p);
  cr_assert_eq(fread(p, 1, (size_t)sz, f), (size_t)sz);
  fclose(f);
  *n = (size_t)sz;
  return p;
}

static int count_entries(const char *path) {
  DIR *d = opendir(path);
  cr_assert_not_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

/* A safetensors file from a literal header (not padded) and data bytes. */
static void write_st(const char *path, const char *json, const void *data, size_t dlen) {
  size_t jl = strlen(json);
  unsigned char *b = malloc(8 + jl + dlen + 1);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)jl >> (8 * i));
  memcpy(b + 8, json, jl);
  if (dlen) memcpy(b + 8 + jl, data, dlen);
  test_write_file(path, b, 8 + jl + dlen);
  free(b);
}

/* expect_error(st, "text", ..., NULL): see test_expect_error */
#define expect_error(...) test_expect_error(ctx, __VA_ARGS__)

static ad_tensor *filled(ad_dtype dt, int ndim, const int64_t *shape, uint64_t seed) {
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  ad_tensor *t =
      dt == AD_I32 ? ad_zeros(ctx, dt, ndim, shape) : ad_randn(ctx, &rng, dt, ndim, shape, 0, 3);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  if (dt == AD_I32)
    for (int64_t i = 0; i < t->size; i++)
      ((int32_t *)t->data)[i] = (int32_t)(ad_rng_next(&rng) >> 32);
  return t;
}

static ad_tensor *zeros_like(const ad_tensor *t) {
  ad_tensor *z = ad_zeros(ctx, t->dtype, t->ndim, t->shape);
  cr_assert_not_null(z, "%s", ad_last_error(ctx));
  return z;
}

static bool same_bits(const ad_tensor *a, const ad_tensor *b) {
  if (a->dtype != b->dtype || a->size != b->size || a->ndim != b->ndim) return false;
  size_t nb = (size_t)a->size * ad_dtype_size(a->dtype);
  return nb == 0 || memcmp(a->data, b->data, nb) == 0;
}

static void free_all(int n, ad_tensor **ts) {
  for (int i = 0; i < n; i++) ad_tensor_free(ts[i]);
}

/* ----------------------------------------------------------- round trip */

Test(checkpoint, round_trip_is_bit_exact) {
  int64_t s2[2] = {3, 5}, s1[1] = {7}, s4[4] = {2, 3, 1, 4}, si[2] = {2, 3}, s0[2] = {0, 3};
  const char *names[] = {"w32", "v64", "scalar64", "scalar32", "t4", "labels", "scalar_i", "empty"};
  ad_tensor *src[8] = {filled(AD_F32, 2, s2, 1),   filled(AD_F64, 1, s1, 2),
                       filled(AD_F64, 0, NULL, 3), filled(AD_F32, 0, NULL, 4),
                       filled(AD_F32, 4, s4, 5),   filled(AD_I32, 2, si, 6),
                       filled(AD_I32, 0, NULL, 7), filled(AD_F32, 2, s0, 8)};
  /* values that must survive bit for bit */
  float *w = src[0]->data;
  w[0] = -0.0f;
  w[1] = INFINITY;
  w[2] = -INFINITY;
  w[3] = NAN;
  w[4] = 1e-45f; /* denormal */
  w[5] = 3.4028235e38f;
  double *v = src[1]->data;
  v[0] = -0.0;
  v[1] = 5e-324;
  v[2] = -NAN;
  ((int32_t *)src[5]->data)[0] = INT32_MIN;
  ((int32_t *)src[5]->data)[1] = INT32_MAX;
  const char *path = test_path("model.safetensors");
  cr_assert_eq(nn_checkpoint_save(ctx, path, 8, names, src), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor *dst[8];
  for (int i = 0; i < 8; i++) dst[i] = zeros_like(src[i]);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 8, names, dst), AD_OK, "%s", ad_last_error(ctx));
  for (int i = 0; i < 8; i++) cr_assert(same_bits(src[i], dst[i]), "tensor %s differs", names[i]);
  /* loading a subset in another order works too */
  const char *sub[2] = {"labels", "w32"};
  ad_tensor *dsub[2] = {zeros_like(src[5]), zeros_like(src[0])};
  cr_assert_eq(nn_checkpoint_load(ctx, path, 2, sub, dsub), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(same_bits(dsub[0], src[5]) && same_bits(dsub[1], src[0]));
  free_all(2, dsub);
  free_all(8, src);
  free_all(8, dst);
  cr_assert_eq(count_entries(tmpdir), 1, "no temporary file is left");
  cr_assert_eq(LIVE_BLOCKS(), live_base, "every block is freed");
}

Test(checkpoint, file_layout_follows_the_format) {
  int64_t s[1] = {2};
  ad_tensor *a = ad_from_data(ctx, AD_F32, 1, s, (float[]){1.0f, -2.0f});
  ad_tensor *b = ad_from_data(ctx, AD_I32, 0, NULL, (int32_t[]){-5});
  ad_tensor *c = ad_from_data(ctx, AD_F64, 1, s, (double[]){0.5, 3.0});
  const char *names[3] = {"a", "b", "c"};
  ad_tensor *ts[3] = {a, b, c};
  const char *path = test_path("layout.st");
  cr_assert_eq(nn_checkpoint_save(ctx, path, 3, names, ts), AD_OK, "%s", ad_last_error(ctx));
  size_t n;
  unsigned char *f = read_file(path, &n);
  const char *json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"b\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[8,12]},"
                     "\"c\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[12,28]}}";
  size_t jl = strlen(json), hl = (jl + 7) / 8 * 8;
  uint64_t len = 0;
  for (int i = 7; i >= 0; i--) len = len << 8 | f[i];
  cr_assert_eq(len, hl, "header length %llu, expected %zu", (unsigned long long)len, hl);
  cr_assert_eq(len % 8, 0);
  cr_assert_eq(n, 8 + hl + 28);
  cr_assert(memcmp(f + 8, json, jl) == 0, "header is %.*s", (int)hl, (const char *)f + 8);
  for (size_t i = jl; i < hl; i++) cr_assert_eq(f[8 + i], ' ', "padding is spaces");
  const unsigned char *d = f + 8 + hl;
  static const unsigned char want[28] = {0,    0,    0x80, 0x3f, 0, 0, 0, 0xc0, 0xfb, 0xff,
                                         0xff, 0xff, 0,    0,    0, 0, 0, 0,    0xe0, 0x3f,
                                         0,    0,    0,    0,    0, 0, 8, 0x40};
  cr_assert(memcmp(d, want, 28) == 0, "data is little-endian, in order");
  free(f);
  free_all(3, ts);
}

Test(checkpoint, empty_checkpoint) {
  const char *path = test_path("empty.st");
  cr_assert_eq(nn_checkpoint_save(ctx, path, 0, NULL, NULL), AD_OK, "%s", ad_last_error(ctx));
  size_t n;
  unsigned char *f = read_file(path, &n);
  cr_assert_eq(n, 16);
  cr_assert(memcmp(f + 8, "{}      ", 8) == 0);
  free(f);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 0, NULL, NULL), AD_OK, "%s", ad_last_error(ctx));
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
  cr_assert_not_null(info, "%s", ad_last_error(ctx));
  cr_assert_eq(info->n, 0);
  cr_assert_eq(info->n_meta, 0);
  cr_assert_eq(info->header_bytes, 8);
  cr_assert_eq(info->data_bytes, 0);
  cr_assert_null(nn_checkpoint_info_find(info, "x"));
  nn_checkpoint_info_free(info);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

Test(checkpoint, metadata_and_info) {
  int64_t s[3] = {2, 0, 4}, s2[2] = {4, 6};
  ad_tensor *ts[2] = {filled(AD_F64, 2, s2, 9), ad_zeros(ctx, AD_F32, 3, s)};
  const char *names[2] = {"layer.0.weight", "void"};
  const char *keys[3] = {"format", "epoch", "note"};
  const char *vals[3] = {"nn", "12", "line1\nline2 \"quoted\" \\ \xc3\xa9"};
  const char *path = test_path("meta.st");
  cr_assert_eq(nn_checkpoint_save_meta(ctx, path, 2, names, ts, 3, keys, vals), AD_OK, "%s",
               ad_last_error(ctx));
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
  cr_assert_not_null(info, "%s", ad_last_error(ctx));
  cr_assert_eq(info->n, 2);
  const nn_checkpoint_entry *e = &info->entries[0];
  cr_assert_str_eq(e->name, "layer.0.weight");
  cr_assert_str_eq(e->dtype_name, "F64");
  cr_assert(e->has_dtype);
  cr_assert_eq(e->dtype, AD_F64);
  cr_assert_eq(e->ndim, 2);
  cr_assert_eq(e->shape[0], 4);
  cr_assert_eq(e->shape[1], 6);
  cr_assert_eq(e->offset, 0);
  cr_assert_eq(e->nbytes, 4 * 6 * 8);
  e = nn_checkpoint_info_find(info, "void");
  cr_assert_not_null(e);
  cr_assert_eq(e->ndim, 3);
  cr_assert_eq(e->shape[1], 0);
  cr_assert_eq(e->nbytes, 0);
  cr_assert_eq(e->offset, 192);
  cr_assert_eq(info->data_bytes, 192);
  cr_assert_eq(info->n_meta, 3);
  for (int i = 0; i < 3; i++) {
    cr_assert_str_eq(info->meta[i].key, keys[i]);
    cr_assert_str_eq(info->meta[i].value, vals[i]);
    cr_assert_str_eq(nn_checkpoint_info_meta(info, keys[i]), vals[i]);
  }
  cr_assert_null(nn_checkpoint_info_meta(info, "missing"));
  cr_assert_null(nn_checkpoint_info_meta(NULL, "format"));
  cr_assert_null(nn_checkpoint_info_find(NULL, "void"));
  cr_assert_null(nn_checkpoint_info_find(info, NULL));
  nn_checkpoint_info_free(info);
  nn_checkpoint_info_free(NULL);
  free_all(2, ts);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

Test(checkpoint, names_with_escapes_and_unicode) {
  const char *names[4] = {"quote\"back\\slash", "tab\tnew\nline\x01", "caf\xc3\xa9 \xe2\x98\x83",
                          "emoji \xf0\x9f\x98\x80/"};
  ad_tensor *ts[4], *back[4];
  for (int i = 0; i < 4; i++) {
    int64_t s[1] = {i + 1};
    ts[i] = filled(AD_F32, 1, s, (uint64_t)i);
    back[i] = zeros_like(ts[i]);
  }
  const char *path = test_path("names.st");
  cr_assert_eq(nn_checkpoint_save(ctx, path, 4, names, ts), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(nn_checkpoint_load(ctx, path, 4, names, back), AD_OK, "%s", ad_last_error(ctx));
  for (int i = 0; i < 4; i++) cr_assert(same_bits(ts[i], back[i]));
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
  cr_assert_not_null(info);
  for (int i = 0; i < 4; i++) cr_assert_str_eq(info->entries[i].name, names[i]);
  nn_checkpoint_info_free(info);
  free_all(4, ts);
  free_all(4, back);
}

Test(checkpoint, json_escapes_are_decoded) {
  /* \u escapes (incl. a surrogate pair), \/ and friends as other writers emit them */
  const char *json = "{\"__metadata__\":{\"k\\u00e9y\":\"\\ud83d\\ude00\\/\\b\\f\\r\"},"
                     " \"\\u0061\\u00e9\\u2603\" : { \"shape\" : [ ] , \"data_offsets\":"
                     "[0,4],\t\"dtype\":\"F32\"}\n}\r\n   ";
  float v = 2.5f;
  write_st(test_path("esc.st"), json, &v, 4);
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, test_path("esc.st"));
  cr_assert_not_null(info, "%s", ad_last_error(ctx));
  cr_assert_str_eq(info->entries[0].name, "a\xc3\xa9\xe2\x98\x83");
  cr_assert_str_eq(info->meta[0].key, "k\xc3\xa9y");
  cr_assert_str_eq(info->meta[0].value, "\xf0\x9f\x98\x80/\b\f\r");
  nn_checkpoint_info_free(info);
  ad_tensor *t = ad_zeros(ctx, AD_F32, 0, NULL);
  const char *name = "a\xc3\xa9\xe2\x98\x83";
  cr_assert_eq(nn_checkpoint_load(ctx, test_path("esc.st"), 1, &name, &t), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(ad_tensor_item(t), 2.5);
  ad_tensor_free(t);
}

Test(checkpoint, overwrite_replaces_the_file) {
  int64_t s[1] = {3};
  ad_tensor *a = filled(AD_F32, 1, s, 1), *b = filled(AD_F32, 1, s, 2), *c = zeros_like(a);
  const char *name = "x";
  const char *path = test_path("over.st");
  cr_assert_eq(nn_checkpoint_save(ctx, path, 1, &name, &a), AD_OK);
  cr_assert_eq(nn_checkpoint_save(ctx, path, 1, &name, &b), AD_OK);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &c), AD_OK);
  cr_assert(same_bits(b, c));
  cr_assert_eq(count_entries(tmpdir), 1);
  ad_tensor_free(a);
  ad_tensor_free(b);
  ad_tensor_free(c);
}

/* ------------------------------------------------------ PyTorch fixture */

/* Printed by tools/gen_safetensors_fixture.py (torch 1.13, seed 1234). */
static const float fx_weight[] = {
    0x1.79e6980000000p-5f,  0x1.9c0f7c0000000p-2f, -0x1.02f3920000000p+0f, 0x1.bbe1420000000p-3f,
    -0x1.397bdc0000000p-1f, 0x1.01d9440000000p-1f, 0x1.d905200000000p-3f,  0x1.62db080000000p-1f,
    -0x1.1143e60000000p-2f, 0x1.16d7f80000000p+1f, 0x1.a25ab80000000p-4f,  -0x1.0939d60000000p-2f};
static const float fx_bias[] = {-0x1.3d3c6c0000000p-3f, -0x1.5edeea0000000p+0f,
                                -0x1.0e2c4c0000000p-3f};
static const double fx_scale[] = {0x1.925591b4dd974p+1};
static const int32_t fx_counts[] = {52, 365, 58, 606, 66, -933, 351, 515};
static const double fx_odd[] = {0x1.8000000000000p+0, -0x1.2000000000000p+1};
#define FX_ODD_NAME "odd \"name\"\\\xc3\xa9\xe2\x98\x83"

Test(checkpoint, pytorch_fixture_loads) {
  int64_t sw[2] = {3, 4}, sb[1] = {3}, sc[4] = {2, 1, 2, 2}, so[1] = {2}, se[2] = {0, 3};
  const char *names[6] = {"linear.weight", "linear.bias", "scale", "counts", FX_ODD_NAME, "empty"};
  ad_tensor *ts[6] = {ad_zeros(ctx, AD_F32, 2, sw),   ad_zeros(ctx, AD_F32, 1, sb),
                      ad_zeros(ctx, AD_F64, 0, NULL), ad_zeros(ctx, AD_I32, 4, sc),
                      ad_zeros(ctx, AD_F64, 1, so),   ad_zeros(ctx, AD_F32, 2, se)};
  cr_assert_eq(nn_checkpoint_load(ctx, FIXTURE, 6, names, ts), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(memcmp(ts[0]->data, fx_weight, sizeof fx_weight) == 0);
  cr_assert(memcmp(ts[1]->data, fx_bias, sizeof fx_bias) == 0);
  cr_assert(memcmp(ts[2]->data, fx_scale, sizeof fx_scale) == 0);
  cr_assert(memcmp(ts[3]->data, fx_counts, sizeof fx_counts) == 0);
  cr_assert(memcmp(ts[4]->data, fx_odd, sizeof fx_odd) == 0);
  cr_assert_eq(((float *)ts[0]->data)[2], -0x1.02f392p+0f);

  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, FIXTURE);
  cr_assert_not_null(info, "%s", ad_last_error(ctx));
  cr_assert_eq(info->n, 8);
  cr_assert_str_eq(nn_checkpoint_info_meta(info, "format"), "pt");
  const nn_checkpoint_entry *e = nn_checkpoint_info_find(info, "norm.running_var");
  cr_assert_not_null(e);
  cr_assert_str_eq(e->dtype_name, "F16");
  cr_assert_not(e->has_dtype);
  cr_assert_eq(e->nbytes, 8);
  e = nn_checkpoint_info_find(info, "norm.num_batches_tracked");
  cr_assert_not_null(e);
  cr_assert_str_eq(e->dtype_name, "I64");
  cr_assert_eq(e->ndim, 0);
  cr_assert_eq(e->offset, 0); /* 8-byte dtypes first, as safetensors lays them out */
  e = nn_checkpoint_info_find(info, "linear.weight");
  cr_assert(e && e->has_dtype && e->dtype == AD_F32 && e->ndim == 2 && e->nbytes == 48);
  cr_assert_eq(info->header_bytes % 8, 0);
  nn_checkpoint_info_free(info);

  /* the engine's own save of the same tensors loads back identically */
  const char *path = test_path("resaved.st");
  cr_assert_eq(nn_checkpoint_save(ctx, path, 6, names, ts), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor *back[6];
  for (int i = 0; i < 6; i++) back[i] = zeros_like(ts[i]);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 6, names, back), AD_OK, "%s", ad_last_error(ctx));
  for (int i = 0; i < 6; i++) cr_assert(same_bits(ts[i], back[i]));
  free_all(6, ts);
  free_all(6, back);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

/* The fixture's int64 count (BatchNorm's num_batches_tracked, 7) reads
 * into an f64 or i32 tensor with NN_STORE_I64, and only with it. */
Test(checkpoint, pytorch_int64_reads_with_store) {
  const char *names[2] = {"norm.num_batches_tracked", "scale"};
  ad_tensor *ts[2] = {ad_zeros(ctx, AD_F64, 0, NULL), ad_zeros(ctx, AD_F64, 0, NULL)};
  nn_store st[2] = {NN_STORE_I64, NN_STORE_I64};
  cr_assert_eq(nn_checkpoint_load(ctx, FIXTURE, 1, names, ts), AD_ERR_DTYPE);
  cr_assert(strstr(ad_last_error(ctx), "tensor 'norm.num_batches_tracked' has dtype I64, "
                                       "expected F64"),
            "%s", ad_last_error(ctx));
  cr_assert_eq(nn_checkpoint_load_as(ctx, FIXTURE, 2, names, ts, st), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(ad_tensor_item(ts[0]), 7.0);
  cr_assert(memcmp(ts[1]->data, fx_scale, sizeof fx_scale) == 0); /* its own dtype is fine */
  ad_tensor *i = ad_zeros(ctx, AD_I32, 0, NULL);
  cr_assert_eq(nn_checkpoint_load_as(ctx, FIXTURE, 1, names, &i, st), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(ad_tensor_item(i), 7.0);
  /* an F32 tensor and an F16 entry: the store does not convert other dtypes */
  const char *rv[1] = {"norm.running_var"};
  int64_t four = 4;
  ad_tensor *f = ad_zeros(ctx, AD_F32, 1, &four);
  cr_assert_eq(nn_checkpoint_load_as(ctx, FIXTURE, 1, rv, &f, st), AD_ERR_DTYPE);
  cr_assert(strstr(ad_last_error(ctx), "has dtype F16, expected F32 or I64"), "%s",
            ad_last_error(ctx));
  ad_tensor_free(ts[0]);
  ad_tensor_free(ts[1]);
  ad_tensor_free(i);
  ad_tensor_free(f);
}

/* ------------------------------------------------------- load mismatches */

Test(checkpoint, load_reports_the_first_mismatch) {
  int64_t sw[2] = {3, 4}, swt[2] = {4, 3}, s4[1] = {4};
  ad_tensor *w = ad_full(ctx, AD_F32, 2, sw, 7), *wt = ad_full(ctx, AD_F32, 2, swt, 7);
  ad_tensor *b = ad_full(ctx, AD_F32, 1, (int64_t[]){3}, 7), *h = ad_full(ctx, AD_F32, 1, s4, 7);
  ad_tensor *w64 = ad_full(ctx, AD_F64, 2, sw, 7);

  /* missing name first */
  const char *n1[3] = {"linear.bias", "nope", "linear.weight"};
  ad_tensor *t1[3] = {b, w, wt};
  cr_assert_eq(nn_checkpoint_load(ctx, FIXTURE, 3, n1, t1), AD_ERR_NOTFOUND);
  expect_error(AD_ERR_NOTFOUND, FIXTURE, "tensor 'nope' not found", NULL);

  /* shape mismatch first */
  const char *n2[3] = {"linear.bias", "linear.weight", "nope"};
  ad_tensor *t2[3] = {b, wt, w};
  cr_assert_eq(nn_checkpoint_load(ctx, FIXTURE, 3, n2, t2), AD_ERR_SHAPE);
  expect_error(AD_ERR_SHAPE, FIXTURE, "tensor 'linear.weight' has shape [3,4], expected [4,3]",
               NULL);

  /* dtype: F32 in the file, F64 asked */
  const char *n3[1] = {"linear.weight"};
  cr_assert_eq(nn_checkpoint_load(ctx, FIXTURE, 1, n3, &w64), AD_ERR_DTYPE);
  expect_error(AD_ERR_DTYPE, "tensor 'linear.weight' has dtype F32, expected F64", NULL);

  /* a dtype the engine lacks */
  const char *n4[1] = {"norm.running_var"};
  cr_assert_eq(nn_checkpoint_load(ctx, FIXTURE, 1, n4, &h), AD_ERR_DTYPE);
  expect_error(AD_ERR_DTYPE, "tensor 'norm.running_var' has dtype F16, expected F32", NULL);

  /* rank mismatch: 0-d in the file */
  const char *n5[1] = {"scale"};
  ad_tensor *s1 = ad_zeros(ctx, AD_F64, 1, (int64_t[]){1});
  cr_assert_eq(nn_checkpoint_load(ctx, FIXTURE, 1, n5, &s1), AD_ERR_SHAPE);
  expect_error(AD_ERR_SHAPE, "tensor 'scale' has shape [], expected [1]", NULL);

  /* nothing was written: all-or-nothing */
  ad_tensor *all[5] = {w, wt, b, h, w64};
  for (int i = 0; i < 5; i++)
    for (int64_t k = 0; k < all[i]->size; k++) cr_assert_eq(ad_tensor_get(all[i], k), 7);
  free_all(5, all);
  ad_tensor_free(s1);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

/* ------------------------------------------------------ argument errors */

Test(checkpoint, bad_arguments) {
  int64_t s[1] = {2};
  ad_tensor *a = ad_ones(ctx, AD_F32, 1, s), *b = ad_ones(ctx, AD_F32, 1, s);
  const char *path = test_path("args.st");
  const char *good[2] = {"a", "b"};
  ad_tensor *ts[2] = {a, b};
  cr_assert_eq(nn_checkpoint_save(ctx, path, 2, good, ts), AD_OK);
  size_t n0;
  unsigned char *orig = read_file(path, &n0);

  cr_assert_eq(nn_checkpoint_save(NULL, path, 2, good, ts), AD_ERR_NULL);
  cr_assert_eq(nn_checkpoint_load(NULL, path, 2, good, ts), AD_ERR_NULL);
  cr_assert_null(nn_checkpoint_info_read(NULL, path));
  cr_assert_eq(nn_checkpoint_save(ctx, NULL, 2, good, ts), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, "path is NULL", NULL);
  cr_assert_eq(nn_checkpoint_load(ctx, NULL, 2, good, ts), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, "path is NULL", NULL);
  cr_assert_null(nn_checkpoint_info_read(ctx, NULL));
  expect_error(AD_ERR_NULL, "path is NULL", NULL);
  cr_assert_eq(nn_checkpoint_save(ctx, "", 2, good, ts), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "path is empty", NULL);
  cr_assert_eq(nn_checkpoint_save(ctx, path, -1, good, ts), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, path, "negative", NULL);
  cr_assert_eq(nn_checkpoint_save(ctx, path, 2, NULL, ts), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, path, NULL);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 2, good, NULL), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, path, NULL);

  struct {
    const char *names[2];
    ad_status st;
    const char *msg;
  } cases[] = {
      {{"a", NULL}, AD_ERR_NULL, "names[1] is NULL"},
      {{"a", ""}, AD_ERR_ARG, "names[1] is empty"},
      {{"same", "same"}, AD_ERR_ARG, "duplicate tensor name 'same'"},
      {{"__metadata__", "b"}, AD_ERR_ARG, "reserved"},
      {{"a", "bad\xc3("}, AD_ERR_ARG, "names[1] is not valid UTF-8"},
      {{"a", "\xed\xa0\x80"}, AD_ERR_ARG, "not valid UTF-8"}, /* a surrogate */
      {{"a", "\xc0\xaf"}, AD_ERR_ARG, "not valid UTF-8"},     /* overlong */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cr_assert_eq(nn_checkpoint_save(ctx, path, 2, cases[i].names, ts), cases[i].st, "case %zu", i);
    expect_error(cases[i].st, path, cases[i].msg, NULL);
  }
  ad_tensor *with_null[2] = {a, NULL};
  cr_assert_eq(nn_checkpoint_save(ctx, path, 2, good, with_null), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, "tensor 'b' (tensors[1]) is NULL", NULL);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 2, good, with_null), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, "tensor 'b' (tensors[1]) is NULL", NULL);

  const char *k2[2] = {"k", "k"}, *v2[2] = {"1", "2"}, *ke[1] = {""}, *vn[1] = {NULL};
  cr_assert_eq(nn_checkpoint_save_meta(ctx, path, 2, good, ts, 2, k2, v2), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "duplicate metadata key 'k'", NULL);
  cr_assert_eq(nn_checkpoint_save_meta(ctx, path, 2, good, ts, 1, ke, v2), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "metadata key 0 is empty", NULL);
  cr_assert_eq(nn_checkpoint_save_meta(ctx, path, 2, good, ts, 1, k2, vn), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, "metadata pair 0", NULL);
  cr_assert_eq(nn_checkpoint_save_meta(ctx, path, 2, good, ts, -1, k2, v2), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, "n_meta", NULL);
  cr_assert_eq(nn_checkpoint_save_meta(ctx, path, 2, good, ts, 1, NULL, v2), AD_ERR_NULL);
  expect_error(AD_ERR_NULL, "meta_keys", NULL);

  /* the file is untouched and nothing else was created */
  size_t n1;
  unsigned char *now = read_file(path, &n1);
  cr_assert(n1 == n0 && memcmp(orig, now, n0) == 0);
  cr_assert_eq(count_entries(tmpdir), 1);
  free(orig);
  free(now);
  ad_tensor_free(a);
  ad_tensor_free(b);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

/* ------------------------------------------------------------- atomicity */

/* Saves the reference file old.st and returns its bytes. */
static unsigned char *make_old(const char *path, size_t *n) {
  int64_t s[1] = {4};
  ad_tensor *t = ad_full(ctx, AD_F32, 1, s, 42);
  const char *name = "old";
  cr_assert_eq(nn_checkpoint_save(ctx, path, 1, &name, &t), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor_free(t);
  return read_file(path, n);
}

static void expect_unchanged(const char *path, const unsigned char *old, size_t n) {
  size_t m;
  unsigned char *now = read_file(path, &m);
  cr_assert(m == n && memcmp(now, old, n) == 0, "%s was changed", path);
  free(now);
}

Test(checkpoint, failed_validation_keeps_the_old_file) {
  size_t n;
  const char *path = test_path("old.st");
  unsigned char *old = make_old(path, &n);
  int64_t s[1] = {1000};
  ad_tensor *ts[3] = {ad_ones(ctx, AD_F32, 1, s), ad_ones(ctx, AD_F32, 1, s),
                      ad_ones(ctx, AD_F32, 1, s)};
  const char *names[3] = {"first", "", "third"}; /* invalid name in the middle */
  cr_assert_eq(nn_checkpoint_save(ctx, path, 3, names, ts), AD_ERR_ARG);
  expect_error(AD_ERR_ARG, path, "names[1] is empty", NULL);
  expect_unchanged(path, old, n);
  cr_assert_eq(count_entries(tmpdir), 1);
  free_all(3, ts);
  free(old);
}

Test(checkpoint, failed_write_keeps_the_old_file) {
  size_t n;
  const char *path = test_path("old.st");
  unsigned char *old = make_old(path, &n);
  int64_t s[1] = {1 << 16};
  ad_tensor *big = ad_ones(ctx, AD_F64, 1, s);
  const char *name = "big";
  /* a file size limit makes the write fail half way, even for root */
  struct rlimit saved, lim;
  cr_assert_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
  lim = saved;
  lim.rlim_cur = 8192;
  signal(SIGXFSZ, SIG_IGN);
  cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
  ad_status st = nn_checkpoint_save(ctx, path, 1, &name, &big);
  setrlimit(RLIMIT_FSIZE, &saved);
  cr_assert_eq(st, AD_ERR_IO);
  expect_error(AD_ERR_IO, path, "cannot write", NULL);
  expect_unchanged(path, old, n);
  cr_assert_eq(count_entries(tmpdir), 1, "the temporary file is removed");
  ad_tensor_free(big);
  free(old);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

Test(checkpoint, failed_rename_removes_the_temporary) {
  /* the target is a non-empty directory: rename fails after the write */
  const char *target = test_path("target");
  cr_assert_eq(mkdir(target, 0700), 0);
  test_write_file(test_path("target/keep"), "x", 1);
  int64_t s[1] = {3};
  ad_tensor *t = ad_ones(ctx, AD_F32, 1, s);
  const char *name = "t";
  cr_assert_eq(nn_checkpoint_save(ctx, target, 1, &name, &t), AD_ERR_IO);
  expect_error(AD_ERR_IO, target, "cannot replace", NULL);
  cr_assert_eq(count_entries(tmpdir), 1);
  cr_assert_eq(count_entries(target), 1);
  ad_tensor_free(t);
}

Test(checkpoint, unwritable_directory) {
  int64_t s[1] = {3};
  ad_tensor *t = ad_ones(ctx, AD_F32, 1, s);
  const char *name = "t";
  cr_assert_eq(nn_checkpoint_save(ctx, test_path("no/such/dir/x.st"), 1, &name, &t), AD_ERR_IO);
  expect_error(AD_ERR_IO, "no/such/dir/x.st", "cannot create a temporary file", NULL);
  /* /proc refuses new files even to root */
  cr_assert_eq(nn_checkpoint_save(ctx, "/proc/nn-test.st", 1, &name, &t), AD_ERR_IO);
  expect_error(AD_ERR_IO, "/proc/nn-test.st", "cannot create a temporary file", NULL);
  /* a read-only directory (root ignores the mode, so only check as a user) */
  size_t n;
  const char *sub = test_path("ro");
  cr_assert_eq(mkdir(sub, 0700), 0);
  const char *path = test_path("ro/old.st");
  unsigned char *old = make_old(path, &n);
  chmod(sub, 0500);
  ad_status st = nn_checkpoint_save(ctx, path, 1, &name, &t);
  if (geteuid() != 0) {
    cr_assert_eq(st, AD_ERR_IO);
    expect_error(AD_ERR_IO, path, "cannot create a temporary file", NULL);
    expect_unchanged(path, old, n);
  }
  chmod(sub, 0700);
  cr_assert_eq(count_entries(sub), 1);
  free(old);
  ad_tensor_free(t);
}

Test(checkpoint, longest_file_name) {
  /* a 255-byte name: "<name>.tmp.<pid>.<hex>" was too long to create */
  char base[256], stale[600];
  memset(base, 'n', 255);
  base[255] = 0;
  char path[512];
  snprintf(path, sizeof path, "%s", test_path(base));
  /* a killed save's file: the name's first 200 bytes, unlocked */
  snprintf(stale, sizeof stale, "%s/%.200s.tmp.999999.0123456789abcdef", tmpdir, base);
  test_write_file(stale, "x", 1);
  int64_t s[1] = {3};
  ad_tensor *t = filled(AD_F64, 1, s, 5), *back = zeros_like(t);
  const char *name = "t";
  cr_assert_eq(nn_checkpoint_save(ctx, path, 1, &name, &t), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(count_entries(tmpdir), 1, "the save and the stale file's removal leave one file");
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &back), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(same_bits(t, back));
  ad_tensor_free(t);
  ad_tensor_free(back);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

Test(checkpoint, overwrite_keeps_the_mode) {
  /* the new file had the umask's default mode (0644), so a save made a
   * private checkpoint readable by everyone */
  const char *path = test_path("private.st");
  int64_t s[1] = {3};
  ad_tensor *t = ad_ones(ctx, AD_F32, 1, s);
  const char *name = "t";
  mode_t old_mask = umask(022);
  cr_assert_eq(nn_checkpoint_save(ctx, path, 1, &name, &t), AD_OK, "%s", ad_last_error(ctx));
  struct stat sb;
  cr_assert_eq(stat(path, &sb), 0);
  cr_assert_eq(sb.st_mode & 0777, 0644, "a new file gets the umask's mode");
  cr_assert_eq(chmod(path, 0600), 0);
  cr_assert_eq(nn_checkpoint_save(ctx, path, 1, &name, &t), AD_OK, "%s", ad_last_error(ctx));
  umask(old_mask);
  cr_assert_eq(stat(path, &sb), 0);
  cr_assert_eq(sb.st_mode & 0777, 0600, "mode %o after the save", (unsigned)(sb.st_mode & 0777));
  ad_tensor_free(t);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

Test(checkpoint, special_file_target_is_not_replaced) {
  /* a FIFO, and a symlink to it, stand for any device (/dev/null): the
   * rename replaced the node itself with a regular file */
  const char *fifo = test_path("fifo"), *link = test_path("link");
  cr_assert_eq(mkfifo(fifo, 0600), 0);
  cr_assert_eq(symlink("fifo", link), 0);
  int64_t s[1] = {3};
  ad_tensor *t = ad_ones(ctx, AD_F32, 1, s);
  const char *name = "t";
  const char *targets[2] = {fifo, link};
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(nn_checkpoint_save(ctx, targets[i], 1, &name, &t), AD_ERR_IO);
    expect_error(AD_ERR_IO, targets[i], "not a regular file", NULL);
    struct stat sb;
    cr_assert_eq(stat(targets[i], &sb), 0);
    cr_assert(S_ISFIFO(sb.st_mode), "%s was replaced", targets[i]);
    cr_assert_eq(lstat(link, &sb), 0);
    cr_assert(S_ISLNK(sb.st_mode), "the link was replaced");
  }
  cr_assert_eq(count_entries(tmpdir), 2, "no temporary file is left");
  ad_tensor_free(t);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

Test(checkpoint, saves_write_through_symbolic_links) {
  /* as torch.save does: the link stays, its target gets the new file (a
   * save replaced the link itself with a regular file, next to it) */
  cr_assert_eq(mkdir(test_path("sub"), 0700), 0);
  char target[512], link[512], chain[512], dangling[512], loop1[512], loop2[512];
  snprintf(target, sizeof target, "%s", test_path("sub/target.st"));
  snprintf(link, sizeof link, "%s", test_path("link.st"));
  snprintf(chain, sizeof chain, "%s", test_path("chain.st"));
  snprintf(dangling, sizeof dangling, "%s", test_path("dangling.st"));
  snprintf(loop1, sizeof loop1, "%s", test_path("loop1"));
  snprintf(loop2, sizeof loop2, "%s", test_path("loop2"));
  cr_assert_eq(symlink("sub/target.st", link), 0);
  cr_assert_eq(symlink("link.st", chain), 0); /* a link to a link, both relative */
  cr_assert_eq(symlink("sub/new.st", dangling), 0);
  cr_assert_eq(symlink("loop2", loop1), 0);
  cr_assert_eq(symlink("loop1", loop2), 0);
  int64_t s[1] = {3};
  ad_tensor *t = filled(AD_F32, 1, s, 1), *u = filled(AD_F32, 1, s, 2), *back = zeros_like(t);
  const char *name = "t";
  cr_assert_eq(nn_checkpoint_save(ctx, target, 1, &name, &t), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(chmod(target, 0600), 0);
  const char *through[2] = {link, chain};
  for (int i = 0; i < 2; i++) {
    ad_tensor *w = i ? t : u;
    cr_assert_eq(nn_checkpoint_save(ctx, through[i], 1, &name, &w), AD_OK, "%s",
                 ad_last_error(ctx));
    struct stat sb;
    cr_assert_eq(lstat(through[i], &sb), 0);
    cr_assert(S_ISLNK(sb.st_mode), "%s was replaced by a file", through[i]);
    cr_assert_eq(lstat(link, &sb), 0);
    cr_assert(S_ISLNK(sb.st_mode), "the inner link was replaced by a file");
    cr_assert_eq(stat(target, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600, "the target's mode is kept");
    cr_assert_eq(nn_checkpoint_load(ctx, target, 1, &name, &back), AD_OK, "%s", ad_last_error(ctx));
    cr_assert(same_bits(w, back), "save %d did not reach the target", i);
  }
  /* a link to a name not there yet: the file is created there */
  cr_assert_eq(nn_checkpoint_save(ctx, dangling, 1, &name, &u), AD_OK, "%s", ad_last_error(ctx));
  struct stat sb;
  cr_assert_eq(lstat(dangling, &sb), 0);
  cr_assert(S_ISLNK(sb.st_mode));
  cr_assert_eq(nn_checkpoint_load(ctx, test_path("sub/new.st"), 1, &name, &back), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(same_bits(u, back));
  /* a loop: an error, nothing written */
  cr_assert_eq(nn_checkpoint_save(ctx, loop1, 1, &name, &u), AD_ERR_IO);
  expect_error(AD_ERR_IO, loop1, "symbolic links", NULL);
  cr_assert_eq(count_entries(tmpdir), 6, "the 5 links, sub and nothing else");
  cr_assert_eq(count_entries(test_path("sub")), 2, "the two files, no temporary");
  ad_tensor_free(t);
  ad_tensor_free(u);
  ad_tensor_free(back);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

Test(checkpoint, symbolic_link_edge_cases) {
  /* a target up a folder, 40 links followed and 41 refused (as open(2)),
   * a link to a folder or into a missing one: errors name the target */
  cr_assert_eq(mkdir(test_path("sub"), 0700), 0);
  cr_assert_eq(mkdir(test_path("dir"), 0700), 0);
  cr_assert_eq(symlink("../up.st", test_path("sub/up")), 0);
  cr_assert_eq(symlink("dir", test_path("todir")), 0);
  cr_assert_eq(symlink("nodir/x.st", test_path("tonowhere")), 0);
  for (int i = 0; i < 41; i++) { /* c0 -> c1 -> ... -> c41, which is not there */
    char from[32], to[32];
    snprintf(from, sizeof from, "c%d", i);
    snprintf(to, sizeof to, "c%d", i + 1);
    cr_assert_eq(symlink(to, test_path(from)), 0);
  }
  int64_t s[1] = {3};
  ad_tensor *t = filled(AD_F64, 1, s, 3), *back = zeros_like(t);
  const char *name = "t";
  cr_assert_eq(nn_checkpoint_save(ctx, test_path("sub/up"), 1, &name, &t), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(nn_checkpoint_load(ctx, test_path("up.st"), 1, &name, &back), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(same_bits(t, back));
  cr_assert_eq(nn_checkpoint_save(ctx, test_path("c1"), 1, &name, &t), AD_OK, "40 links: %s",
               ad_last_error(ctx));
  cr_assert_eq(nn_checkpoint_load(ctx, test_path("c41"), 1, &name, &back), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert_eq(nn_checkpoint_save(ctx, test_path("c0"), 1, &name, &t), AD_ERR_IO);
  expect_error(AD_ERR_IO, "Too many levels of symbolic links", NULL);
  cr_assert_eq(nn_checkpoint_save(ctx, test_path("todir"), 1, &name, &t), AD_ERR_IO);
  expect_error(AD_ERR_IO, "(a link to ", "/dir)", NULL);
  cr_assert_eq(nn_checkpoint_save(ctx, test_path("tonowhere"), 1, &name, &t), AD_ERR_IO);
  expect_error(AD_ERR_IO, "tonowhere (a link to ", "nodir/x.st): cannot create", NULL);
  cr_assert_eq(count_entries(test_path("dir")), 0, "no temporary file in the folder");
  cr_assert_eq(count_entries(tmpdir), 47, "sub, dir, todir, tonowhere, up.st, c0-c41");
  ad_tensor_free(t);
  ad_tensor_free(back);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

Test(checkpoint, out_of_memory_everywhere) {
  /* save, load and info with the allocator failing from request k on, for
   * every k up to success: errors are OOM, nothing leaks, the old file and
   * the tensors are unchanged, no temporary is left */
  size_t n;
  const char *path = test_path("old.st");
  unsigned char *old = make_old(path, &n);
  int64_t s[2] = {3, 3};
  ad_tensor *ts[3] = {ad_full(ctx, AD_F32, 2, s, 1), ad_full(ctx, AD_F64, 0, NULL, 2),
                      ad_full(ctx, AD_I32, 1, s, 3)};
  const char *names[3] = {"a", "b", "c"};
  const char *keys[2] = {"k1", "k2"}, *vals[2] = {"v1", "v2"};
  long base = LIVE_BLOCKS();
  bool saved = false;
  for (long k = 0; k < 100 && !saved; k++) {
    test_alloc_refuse_after(&alloc_state, k);
    ad_status st = nn_checkpoint_save_meta(ctx, path, 3, names, ts, 2, keys, vals);
    test_alloc_grant_all(&alloc_state);
    cr_assert_eq(LIVE_BLOCKS(), base, "k=%ld: leak", k);
    if (st == AD_OK) {
      saved = true;
      break;
    }
    expect_error(AD_ERR_OOM, NULL);
    expect_unchanged(path, old, n);
    cr_assert_eq(count_entries(tmpdir), 1);
  }
  cr_assert(saved);
  ad_tensor *back[3] = {ad_full(ctx, AD_F32, 2, s, -1), ad_full(ctx, AD_F64, 0, NULL, -1),
                        ad_full(ctx, AD_I32, 1, s, -1)};
  base = LIVE_BLOCKS();
  bool loaded = false;
  for (long k = 0; k < 100 && !loaded; k++) {
    test_alloc_refuse_after(&alloc_state, k);
    ad_status st = nn_checkpoint_load(ctx, path, 3, names, back);
    test_alloc_grant_all(&alloc_state);
    cr_assert_eq(LIVE_BLOCKS(), base, "k=%ld: leak", k);
    if (st == AD_OK) {
      loaded = true;
      break;
    }
    expect_error(AD_ERR_OOM, NULL);
    for (int i = 0; i < 3; i++) cr_assert_eq(ad_tensor_get(back[i], 0), -1);
  }
  cr_assert(loaded);
  for (int i = 0; i < 3; i++) cr_assert(same_bits(ts[i], back[i]));
  bool got_info = false;
  for (long k = 0; k < 100 && !got_info; k++) {
    test_alloc_refuse_after(&alloc_state, k);
    nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
    test_alloc_grant_all(&alloc_state);
    if (info) {
      got_info = true;
      cr_assert_eq(info->n, 3);
      cr_assert_eq(info->n_meta, 2);
      nn_checkpoint_info_free(info);
    } else {
      expect_error(AD_ERR_OOM, NULL);
    }
    cr_assert_eq(LIVE_BLOCKS(), base, "k=%ld: leak", k);
  }
  cr_assert(got_info);
  free_all(3, ts);
  free_all(3, back);
  free(old);
}

/* ------------------------------------------------------ corrupt files */

/* Loads three tensors of the fixture from path. On failure checks that the
 * error names the file and nothing was written; on success that the values
 * are the fixture's. Returns the status. */
static ad_status load_fixture_like(const char *path) {
  int64_t sw[2] = {3, 4}, sc[4] = {2, 1, 2, 2};
  const char *names[3] = {"linear.weight", "counts", "scale"};
  ad_tensor *ts[3] = {ad_full(ctx, AD_F32, 2, sw, -7), ad_full(ctx, AD_I32, 4, sc, -7),
                      ad_full(ctx, AD_F64, 0, NULL, -7)};
  long base = LIVE_BLOCKS();
  ad_status st = nn_checkpoint_load(ctx, path, 3, names, ts);
  QUICK_ASSERT(LIVE_BLOCKS() == base, "leak");
  if (st != AD_OK) {
    const char *msg = ad_last_error(ctx);
    QUICK_ASSERT(strstr(msg, path), "message \"%s\" lacks the path", msg);
    bool untouched = true;
    for (int i = 0; i < 3; i++)
      for (int64_t k = 0; k < ts[i]->size; k++) untouched &= ad_tensor_get(ts[i], k) == -7;
    QUICK_ASSERT(untouched, "a failed load wrote into a tensor");
    ad_clear_error(ctx);
    /* may succeed when only a loaded tensor's dtype or shape broke */
    nn_checkpoint_info_free(nn_checkpoint_info_read(ctx, path));
    ad_clear_error(ctx);
  } else {
    QUICK_ASSERT(memcmp(ts[0]->data, fx_weight, sizeof fx_weight) == 0 &&
                     memcmp(ts[1]->data, fx_counts, sizeof fx_counts) == 0 &&
                     memcmp(ts[2]->data, fx_scale, sizeof fx_scale) == 0,
                 "a load that succeeds gives the fixture's values");
  }
  QUICK_ASSERT(LIVE_BLOCKS() == base, "leak");
  free_all(3, ts);
  return st;
}

Test(checkpoint, truncated_at_every_byte) {
  size_t n;
  unsigned char *fx = read_file(FIXTURE, &n);
  const char *path = test_path("trunc.st");
  cr_assert_eq(load_fixture_like(FIXTURE), AD_OK);
  /* shrink one file in place, from n - 1 bytes down to 0 (rewriting a
   * truncated file each time is slow on some file systems) */
  test_write_file(path, fx, n);
  int fd = open(path, O_WRONLY);
  cr_assert_geq(fd, 0);
  for (size_t len = n; len-- > 0;) {
    QUICK_ASSERT(ftruncate(fd, (off_t)len) == 0, "ftruncate");
    ad_status st = load_fixture_like(path);
    QUICK_ASSERT(st != AD_OK, "truncated to %zu of %zu bytes loads", len, n);
    nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
    QUICK_ASSERT(!info, "truncated to %zu bytes: info reads", len);
    QUICK_ASSERT(ad_last_error(ctx)[0], "no message at %zu bytes", len);
    ad_clear_error(ctx);
  }
  close(fd);
  /* one extra byte at the end is rejected too */
  unsigned char *longer = malloc(n + 1);
  memcpy(longer, fx, n);
  longer[n] = 0;
  test_write_file(path, longer, n + 1);
  cr_assert_neq(load_fixture_like(path), AD_OK);
  free(longer);
  free(fx);
}

Test(checkpoint, header_bytes_flipped) {
  size_t n;
  unsigned char *fx = read_file(FIXTURE, &n);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = hl << 8 | fx[i];
  const char *path = test_path("flip.st");
  static const unsigned char masks[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff};
  int failures = 0, runs = 0;
  test_write_file(path, fx, n);
  int fd = open(path, O_WRONLY);
  cr_assert_geq(fd, 0);
  for (size_t at = 0; at < 8 + hl; at++)
    for (size_t m = 0; m < sizeof masks; m++) {
      unsigned char c = fx[at] ^ masks[m];
      QUICK_ASSERT(pwrite(fd, &c, 1, (off_t)at) == 1, "pwrite");
      if (load_fixture_like(path) != AD_OK) failures++;
      QUICK_ASSERT(pwrite(fd, &fx[at], 1, (off_t)at) == 1, "pwrite");
      runs++;
    }
  close(fd);
  cr_log_info("%d of %d flipped files rejected", failures, runs);
  cr_assert_gt(failures, runs / 2);
  free(fx);
}

Test(checkpoint, corrupt_headers) {
  float d3[3] = {1, 2, 3};
  unsigned char zeros[64] = {0};
  struct {
    const char *json;
    size_t dlen;
    const char *msg;
  } cases[] = {
      /* JSON syntax */
      {"", 0, "header length 0"},
      {"[]", 0, "expected '{'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}", 12, "end of header"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},}", 12,
       "expected a string"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3,],\"data_offsets\":[0,12]}}", 12,
       "expected an integer"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3.0],\"data_offsets\":[0,12]}}", 12, "only integers"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3e0],\"data_offsets\":[0,12]}}", 12, "only integers"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-3],\"data_offsets\":[0,12]}}", 12, "negative"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[03],\"data_offsets\":[0,12]}}", 12, "leading zero"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":null,\"data_offsets\":[0,12]}}", 12, "expected '['"},
      {"{\"a\":{\"dtype\":true,\"shape\":[3],\"data_offsets\":[0,12]}}", 12, "expected a string"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12],\"x\":1}}", 12,
       "unknown key 'x'"},
      {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12,
       "duplicate key 'dtype'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3]}}", 12, "lacks \"data_offsets\""},
      {"{\"a\":{}}", 12, "lacks \"dtype\""},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12,12]}}", 12, "needs 2"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0]}}", 12, "needs 2"},
      {"{\"a\":{\"dtype\":\"F32\" \"shape\":[3],\"data_offsets\":[0,12]}}", 12,
       "expected ',' or '}'"},
      {"{\"a\" {\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12, "expected ':'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}} x", 12,
       "unexpected data after"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}{}", 12,
       "unexpected data after"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,99999999999999999999]}}", 12,
       "too large"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,3],\"data_offsets\":[0,12]}}", 12,
       "more than 8 dimensions"},
      {"{\"a\x01\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12,
       "control character"},
      {"{\"a\\x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12,
       "invalid escape"},
      {"{\"a\\u12\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12,
       "bad \\u escape"},
      {"{\"a\\udc00\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12,
       "lone low surrogate"},
      {"{\"a\\ud800x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12,
       "high surrogate"},
      {"{\"a\\u0000\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12, "\\u0000"},
      {"{\"a\xc0\x80\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12,
       "invalid UTF-8"},
      {"{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12,
       "invalid UTF-8"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}, "
       "\"__metadata__\":{\"k\":1}}",
       12, "value of 'k' is not a string"},
      {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate \"__metadata__\""},
      {"{\"a", 0, "unterminated string"},
      /* structure */
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,800]}}", 12,
       "beyond the data buffer"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[12,0]}}", 12, "reversed"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "need 12 bytes"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,12]}}",
       12, "need more than"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
       12, "'a' and 'b' overlap"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
       20, "4 unused bytes in the data buffer before tensor 'b'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12,
       "4 unused bytes after the last tensor"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
       8, "duplicate tensor name 'a'"},
      {"{\"__metadata__\":{\"k\":\"1\",\"j\":\"2\",\"k\":\"3\"}}", 0,
       "duplicate __metadata__ key 'k'"},
  };
  const char *path = test_path("bad.st");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_st(path, cases[i].json, cases[i].dlen <= 12 ? (const void *)d3 : zeros, cases[i].dlen);
    nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
    cr_assert_null(info, "case %zu (%s) was accepted", i, cases[i].json);
    cr_assert_eq(ad_last_status(ctx), AD_ERR_FORMAT, "case %zu: %s", i, ad_last_error(ctx));
    cr_assert_not_null(strstr(ad_last_error(ctx), cases[i].msg), "case %zu: \"%s\" lacks \"%s\"", i,
                       ad_last_error(ctx), cases[i].msg);
    cr_assert_not_null(strstr(ad_last_error(ctx), path));
    ad_clear_error(ctx);
    /* load fails the same way */
    ad_tensor *t = ad_full(ctx, AD_F32, 1, (int64_t[]){3}, 5);
    const char *name = "a";
    cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &t), AD_ERR_FORMAT, "case %zu", i);
    expect_error(AD_ERR_FORMAT, cases[i].msg, NULL);
    for (int k = 0; k < 3; k++) cr_assert_eq(ad_tensor_get(t, k), 5);
    ad_tensor_free(t);
  }
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

Test(checkpoint, dtype_strings) {
  float d[3] = {1, 2, 3};
  const char *path = test_path("dt.st");
  const char *name = "a";
  ad_tensor *t = ad_zeros(ctx, AD_F32, 1, (int64_t[]){3});
  /* an unknown dtype on the tensor asked for is an error */
  write_st(path, "{\"a\":{\"dtype\":\"F3X\",\"shape\":[3],\"data_offsets\":[0,12]}}", d, 12);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &t), AD_ERR_FORMAT);
  expect_error(AD_ERR_FORMAT, path, "tensor 'a' has unknown dtype 'F3X'", NULL);
  /* dtype names are case-sensitive */
  write_st(path, "{\"a\":{\"dtype\":\"f32\",\"shape\":[3],\"data_offsets\":[0,12]}}", d, 12);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &t), AD_ERR_FORMAT);
  expect_error(AD_ERR_FORMAT, "unknown dtype 'f32'", NULL);
  /* a known dtype of another size is a size mismatch */
  write_st(path, "{\"a\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[0,12]}}", d, 12);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &t), AD_ERR_FORMAT);
  expect_error(AD_ERR_FORMAT, "dtype F64 and shape [3], which need 24 bytes", NULL);
  /* I32 data into an F32 tensor */
  write_st(path, "{\"a\":{\"dtype\":\"I32\",\"shape\":[3],\"data_offsets\":[0,12]}}", d, 12);
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &t), AD_ERR_DTYPE);
  expect_error(AD_ERR_DTYPE, "has dtype I32, expected F32", NULL);
  /* an unknown dtype on a tensor not asked for is skipped */
  write_st(path,
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"future\":{\"dtype\":\"F4\",\"shape\":[8],\"data_offsets\":[8,12]}}",
           d, 12);
  ad_tensor *t2 = ad_zeros(ctx, AD_F32, 1, (int64_t[]){2});
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &t2), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(t2, 1), 2);
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
  cr_assert_not_null(info);
  cr_assert_str_eq(nn_checkpoint_info_find(info, "future")->dtype_name, "F4");
  nn_checkpoint_info_free(info);
  ad_tensor_free(t);
  ad_tensor_free(t2);
}

Test(checkpoint, bad_header_lengths) {
  const char *path = test_path("len.st");
  /* shorter than the length field */
  test_write_file(path, "\x10\0\0", 3);
  cr_assert_null(nn_checkpoint_info_read(ctx, path));
  expect_error(AD_ERR_FORMAT, path, "too short", NULL);
  test_write_file(path, "", 0);
  cr_assert_null(nn_checkpoint_info_read(ctx, path));
  expect_error(AD_ERR_FORMAT, "0 bytes", NULL);
  /* huge */
  unsigned char b[16];
  memset(b, 0xff, 8);
  memcpy(b + 8, "{}      ", 8);
  test_write_file(path, b, 16);
  cr_assert_null(nn_checkpoint_info_read(ctx, path));
  expect_error(AD_ERR_FORMAT, "header length 18446744073709551615 exceeds", NULL);
  /* larger than the file by one */
  memset(b, 0, 8);
  b[0] = 9;
  test_write_file(path, b, 16);
  cr_assert_null(nn_checkpoint_info_read(ctx, path));
  expect_error(AD_ERR_FORMAT, "header length 9 exceeds the 8 bytes", NULL);
  /* a big header length in a big enough file is refused by the limit */
  /* (a sparse file: no disk is used) */
  FILE *f = fopen(path, "wb");
  b[0] = 0;
  b[3] = 0x10; /* 256 MiB */
  fwrite(b, 1, 16, f);
  fseek(f, 300L << 20, SEEK_SET);
  fputc(' ', f);
  fclose(f);
  cr_assert_null(nn_checkpoint_info_read(ctx, path));
  expect_error(AD_ERR_FORMAT, "header length 268435456 is not in [2, 100000000]", NULL);
  /* not a file */
  cr_assert_null(nn_checkpoint_info_read(ctx, tmpdir));
  expect_error(AD_ERR_IO, tmpdir, "not a regular file", NULL);
  cr_assert_null(nn_checkpoint_info_read(ctx, test_path("missing.st")));
  expect_error(AD_ERR_IO, "missing.st", "cannot open", NULL);
  ad_tensor *t = ad_zeros(ctx, AD_F32, 0, NULL);
  const char *name = "x";
  cr_assert_eq(nn_checkpoint_load(ctx, test_path("missing.st"), 1, &name, &t), AD_ERR_IO);
  expect_error(AD_ERR_IO, "cannot open", NULL);
  ad_tensor_free(t);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

Test(checkpoint, fifo_is_refused_without_waiting, .timeout = 20) {
  /* opening a FIFO that has no writer blocked forever */
  const char *path = test_path("fifo.st");
  cr_assert_eq(mkfifo(path, 0600), 0);
  cr_assert_null(nn_checkpoint_info_read(ctx, path));
  expect_error(AD_ERR_IO, path, "not a regular file", NULL);
  ad_tensor *t = ad_zeros(ctx, AD_F32, 0, NULL);
  const char *name = "x";
  cr_assert_eq(nn_checkpoint_load(ctx, path, 1, &name, &t), AD_ERR_IO);
  expect_error(AD_ERR_IO, path, "not a regular file", NULL);
  ad_tensor_free(t);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}
