/* test_idx.c: IDX loading (include/autodiff/nn_io.h): the bundled MNIST subset, raw and
 * gzip'd files written here, and every malformed variant. Run from the
 * repository root (meson sets workdir). */
#include "nn_io.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IMAGES "data/mnist10k-images-idx3-ubyte.gz"
#define LABELS "data/mnist10k-labels-idx1-ubyte.gz"

TEST_TMPDIR_SUITE(idx, "nn-idx");

/* ------------------------------------------------------------- helpers */

/* An IDX image: magic 00 00 type ndim, big-endian dims, then the bytes
 * 0, 1, 2, ... (mod 256) for the product of dims. malloc'd; size in *n. */
static unsigned char *make_idx(unsigned type, int ndim, const uint32_t *dims, size_t *n) {
  size_t count = 1;
  for (int i = 0; i < ndim; i++) count *= dims[i];
  size_t head = 4 + 4 * (size_t)ndim;
  unsigned char *b = malloc(head + count + 1);
  b[0] = 0;
  b[1] = 0;
  b[2] = (unsigned char)type;
  b[3] = (unsigned char)ndim;
  for (int i = 0; i < ndim; i++)
    for (int k = 0; k < 4; k++) b[4 + 4 * i + k] = (unsigned char)(dims[i] >> (24 - 8 * k));
  for (size_t i = 0; i < count; i++) b[head + i] = (unsigned char)i;
  *n = head + count;
  return b;
}

/* gzip of in[0..n) (malloc'd; size in *out_n). */
static unsigned char *gzip_bytes(const unsigned char *in, size_t n, size_t *out_n) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  cr_assert_eq(deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  size_t cap = deflateBound(&zs, (uLong)n) + 64;
  unsigned char *out = malloc(cap);
  zs.next_in = (Bytef *)(uintptr_t)in;
  zs.avail_in = (uInt)n;
  zs.next_out = out;
  zs.avail_out = (uInt)cap;
  cr_assert_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
  *out_n = cap - zs.avail_out;
  deflateEnd(&zs);
  return out;
}

/* expect_error(st, "text", ..., NULL): see test_expect_error */
#define expect_error(...) test_expect_error(ctx, __VA_ARGS__)

/* Loads path expecting failure with a message naming it; no leak. */
static void expect_load_fails(const char *path, ad_status st, const char *msg) {
  ad_tensor *t = nn_idx_load(ctx, path, AD_F32, 1.0);
  QUICK_ASSERT(!t, "%s loads", path);
  QUICK_ASSERT(ad_last_status(ctx) == st, "status %s (\"%s\"), expected %s",
               ad_status_str(ad_last_status(ctx)), ad_last_error(ctx), ad_status_str(st));
  QUICK_ASSERT(strstr(ad_last_error(ctx), path), "\"%s\" lacks the path", ad_last_error(ctx));
  if (msg)
    QUICK_ASSERT(strstr(ad_last_error(ctx), msg), "\"%s\" lacks \"%s\"", ad_last_error(ctx), msg);
  QUICK_ASSERT(LIVE_BLOCKS() == live_base, "leak");
  ad_clear_error(ctx);
}

/* ----------------------------------------------------------- bundled data */

Test(idx, mnist_images) {
  ad_tensor *x = nn_idx_load(ctx, IMAGES, AD_F32, 1.0 / 255);
  cr_assert_not_null(x, "%s", ad_last_error(ctx));
  cr_assert_eq(x->ndim, 3);
  cr_assert_eq(x->shape[0], 10000);
  cr_assert_eq(x->shape[1], 28);
  cr_assert_eq(x->shape[2], 28);
  cr_assert_eq(x->dtype, AD_F32);
  ad_tensor *b = nn_idx_load(ctx, IMAGES, AD_I32, 123.0 /* ignored */);
  cr_assert_not_null(b, "%s", ad_last_error(ctx));
  cr_assert_eq(b->size, 7840000);
  const int32_t *p = b->data;
  const float *f = x->data;
  int64_t sum = 0, nonzero = 0, img0 = 0, last = 0;
  int32_t mx = 0, mn = 255;
  bool exact = true;
  for (int64_t i = 0; i < b->size; i++) {
    sum += p[i];
    nonzero += p[i] != 0;
    mx = p[i] > mx ? p[i] : mx;
    mn = p[i] < mn ? p[i] : mn;
    if (i < 784) img0 += p[i];
    if (i >= b->size - 784) last += p[i];
    exact &= f[i] == (float)(p[i] / 255.0);
  }
  /* computed from the uncompressed payload (sha256 in data/README.md) */
  cr_assert_eq(sum, 262146600);
  cr_assert_eq(nonzero, 1502215);
  cr_assert_eq(img0, 31095);
  cr_assert_eq(last, 14654);
  cr_assert_eq(mn, 0);
  cr_assert_eq(mx, 255);
  cr_assert(exact, "f32 pixels are byte / 255");
  static const int32_t row14[28] = {0, 0, 0, 0, 0, 0, 0,   198, 253, 190, 0, 0, 0, 0,
                                    0, 0, 0, 0, 0, 0, 255, 253, 196, 0,   0, 0, 0, 0};
  cr_assert(memcmp(p + 14 * 28, row14, sizeof row14) == 0, "row 14 of image 0");
  ad_tensor *d = nn_idx_load(ctx, IMAGES, AD_F64, 2.0);
  cr_assert_not_null(d, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tensor_get(d, 14 * 28 + 7), 396.0);
  ad_tensor_free(x);
  ad_tensor_free(b);
  ad_tensor_free(d);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
}

Test(idx, mnist_labels) {
  ad_tensor *y = nn_idx_load(ctx, LABELS, AD_I32, 1.0);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->ndim, 1);
  cr_assert_eq(y->shape[0], 10000);
  const int32_t *l = y->data;
  int counts[10] = {0};
  for (int i = 0; i < 10000; i++) {
    QUICK_ASSERT(l[i] >= 0 && l[i] <= 9, "label %d at %d", l[i], i);
    counts[l[i]]++;
  }
  static const int want[10] = {1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978};
  for (int k = 0; k < 10; k++) cr_assert_eq(counts[k], want[k], "class %d", k);
  for (int i = 0; i < 20; i++) cr_assert_eq(l[i], i % 10, "interleaved order");
  ad_tensor_free(y);
}

/* ------------------------------------------------------------ own files */

Test(idx, raw_file) {
  uint32_t dims[3] = {2, 3, 4};
  size_t n;
  unsigned char *b = make_idx(0x08, 3, dims, &n);
  const char *path = test_path("raw-named.gz"); /* the name does not matter */
  test_write_file(path, b, n);
  ad_tensor *t = nn_idx_load(ctx, path, AD_I32, 0);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  cr_assert_eq(t->ndim, 3);
  cr_assert(t->shape[0] == 2 && t->shape[1] == 3 && t->shape[2] == 4);
  for (int i = 0; i < 24; i++) cr_assert_eq(((int32_t *)t->data)[i], i);
  ad_tensor *d = nn_idx_load(ctx, path, AD_F64, 0.5);
  cr_assert_not_null(d, "%s", ad_last_error(ctx));
  for (int i = 0; i < 24; i++) cr_assert_eq(((double *)d->data)[i], 0.5 * i);
  ad_tensor *s = nn_idx_load(ctx, path, AD_F32, 1.0 / 255);
  cr_assert_not_null(s, "%s", ad_last_error(ctx));
  for (int i = 0; i < 24; i++) cr_assert_eq(((float *)s->data)[i], (float)(i / 255.0));
  /* a scale that is not finite would make every value NaN or infinite */
  cr_assert_null(nn_idx_load(ctx, path, AD_F32, NAN));
  cr_assert(strstr(ad_last_error(ctx), "scale nan is not finite"), "%s", ad_last_error(ctx));
  cr_assert_null(nn_idx_load(ctx, path, AD_F64, INFINITY));
  cr_assert_eq(ad_last_status(ctx), AD_ERR_ARG);
  ad_clear_error(ctx);
  ad_tensor *i = nn_idx_load(ctx, path, AD_I32, NAN); /* ignored for i32 */
  cr_assert_not_null(i, "%s", ad_last_error(ctx));
  ad_tensor_free(i);
  ad_tensor_free(t);
  ad_tensor_free(d);
  ad_tensor_free(s);
  free(b);
}

Test(idx, gzip_detected_by_magic) {
  uint32_t dims[2] = {300, 7}; /* several read chunks are not needed, but a few bytes */
  size_t n, zn;
  unsigned char *b = make_idx(0x08, 2, dims, &n);
  unsigned char *z = gzip_bytes(b, n, &zn);
  const char *path = test_path("compressed.idx"); /* no .gz */
  test_write_file(path, z, zn);
  ad_tensor *t = nn_idx_load(ctx, path, AD_I32, 1);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  cr_assert(t->ndim == 2 && t->shape[0] == 300 && t->shape[1] == 7);
  for (int i = 0; i < 2100; i++) QUICK_ASSERT(((int32_t *)t->data)[i] == i % 256, "value %d", i);
  ad_tensor_free(t);
  free(b);
  free(z);
}

Test(idx, large_raw_file_in_chunks) {
  uint32_t dims[1] = {100003}; /* more than one 16 KiB read */
  size_t n;
  unsigned char *b = make_idx(0x08, 1, dims, &n);
  test_write_file(test_path("big"), b, n);
  ad_tensor *t = nn_idx_load(ctx, test_path("big"), AD_F32, 1);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  bool ok = true;
  for (int64_t i = 0; i < t->size; i++) ok &= ((float *)t->data)[i] == (float)(i % 256);
  cr_assert(ok);
  ad_tensor_free(t);
  free(b);
}

Test(idx, zero_sized_dims) {
  uint32_t dims[2] = {0, 5};
  size_t n;
  unsigned char *b = make_idx(0x08, 2, dims, &n);
  test_write_file(test_path("empty"), b, n);
  ad_tensor *t = nn_idx_load(ctx, test_path("empty"), AD_F32, 1);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  cr_assert(t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 5 && t->size == 0);
  ad_tensor_free(t);
  free(b);
}

/* --------------------------------------------------------------- errors */

Test(idx, bad_arguments) {
  cr_assert_null(nn_idx_load(NULL, LABELS, AD_I32, 1));
  cr_assert_null(nn_idx_load(ctx, NULL, AD_I32, 1));
  expect_error(AD_ERR_NULL, "path is NULL", NULL);
  cr_assert_null(nn_idx_load(ctx, LABELS, (ad_dtype)7, 1));
  expect_error(AD_ERR_ARG, LABELS, "dtype 7", NULL);
  cr_assert_null(nn_idx_load(ctx, test_path("missing"), AD_I32, 1));
  expect_error(AD_ERR_IO, "missing", "cannot open", NULL);
  cr_assert_null(nn_idx_load(ctx, tmpdir, AD_I32, 1));
  expect_error(AD_ERR_IO, tmpdir, "not a readable regular file", NULL);
}

Test(idx, fifo_is_refused_without_waiting, .timeout = 20) {
  /* opening a FIFO that has no writer blocked forever */
  const char *path = test_path("fifo");
  cr_assert_eq(mkfifo(path, 0600), 0);
  cr_assert_null(nn_idx_load(ctx, path, AD_I32, 1));
  expect_error(AD_ERR_IO, path, "not a readable regular file", NULL);
}

Test(idx, bad_magic_and_type) {
  const char *path = test_path("bad");
  test_write_file(path, "hello world, not an idx file", 28);
  expect_load_fails(path, AD_ERR_FORMAT, "bad magic 68 65 6c 6c");
  test_write_file(path, "\x01\x00\x08\x01\x00\x00\x00\x01x", 9);
  expect_load_fails(path, AD_ERR_FORMAT, "bad magic 01 00 08 01");
  static const struct {
    unsigned code;
    const char *name;
  } types[] = {{0x09, "signed byte"}, {0x0B, "int16"},   {0x0C, "int32"},
               {0x0D, "float32"},     {0x0E, "float64"}, {0x42, "unknown"}};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    uint32_t dims[1] = {4};
    size_t n;
    unsigned char *b = make_idx(types[i].code, 1, dims, &n);
    test_write_file(path, b, n);
    char want[96];
    snprintf(want, sizeof want, "unsupported type code 0x%02x (%s)", types[i].code, types[i].name);
    expect_load_fails(path, AD_ERR_FORMAT, want);
    free(b);
  }
  test_write_file(path, "\x00\x00\x08\x00", 4);
  expect_load_fails(path, AD_ERR_FORMAT, "0 dims; 1 to 8 are supported");
  unsigned char nine[4 + 36] = {0, 0, 8, 9};
  test_write_file(path, nine, sizeof nine);
  expect_load_fails(path, AD_ERR_FORMAT, "9 dims");
}

Test(idx, dims_and_size_mismatch) {
  uint32_t dims[2] = {3, 5};
  size_t n;
  unsigned char *b = make_idx(0x08, 2, dims, &n);
  const char *path = test_path("mm");
  b = realloc(b, n + 1);
  b[n] = 7;
  test_write_file(path, b, n + 1); /* one byte too many */
  expect_load_fails(path, AD_ERR_FORMAT, "dims [3,5] need 15 data bytes, but the file has 16");
  test_write_file(path, b, n - 1);
  expect_load_fails(path, AD_ERR_FORMAT, "has 14 (truncated)");
  /* gzip'd: too much and too little data */
  size_t zn;
  unsigned char *z = gzip_bytes(b, n + 1, &zn);
  test_write_file(path, z, zn);
  expect_load_fails(path, AD_ERR_FORMAT, "more data than dims [3,5] describe");
  free(z);
  z = gzip_bytes(b, n - 1, &zn);
  test_write_file(path, z, zn);
  expect_load_fails(path, AD_ERR_FORMAT, "truncated: dims [3,5] need 15 data bytes, got 14");
  free(z);
  free(b);
}

Test(idx, dims_overflow) {
  const char *path = test_path("ov");
  /* 2^32-1 cubed overflows int64 */
  unsigned char h[16] = {0,    0,    8,    3,    0xff, 0xff, 0xff, 0xff,
                         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  test_write_file(path, h, sizeof h);
  expect_load_fails(path, AD_ERR_FORMAT, "dims [4294967295,4294967295,4294967295] overflow");
  /* large but not overflowing: a raw file must match exactly */
  unsigned char h2[12] = {0, 0, 8, 2, 0, 1, 0, 0, 0, 1, 0, 0};
  test_write_file(path, h2, sizeof h2);
  expect_load_fails(path, AD_ERR_FORMAT, "dims [65536,65536] need 4294967296 data bytes");
  /* and a gzip file cannot claim more than deflate can expand to */
  size_t zn;
  unsigned char *z = gzip_bytes(h2, sizeof h2, &zn);
  test_write_file(path, z, zn);
  expect_load_fails(path, AD_ERR_FORMAT, "gzip file can hold");
  free(z);
}

/* Found by fuzz/fuzz_idx: a 0 among the dims makes the data empty and the
 * product 0, but the other dims can still multiply to more elements than a
 * tensor may have. The error is the file's (AD_ERR_FORMAT, naming it), not
 * the tensor constructor's. */
Test(idx, empty_dims_no_tensor_can_have) {
  const char *path = test_path("huge-empty");
  unsigned char h[16] = {0, 0, 8, 3, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  test_write_file(path, h, sizeof h);
  expect_load_fails(path, AD_ERR_FORMAT, "dims [0,4294967295,4294967295]: no tensor can have");
  /* the same through gzip */
  size_t zn;
  unsigned char *z = gzip_bytes(h, sizeof h, &zn);
  test_write_file(path, z, zn);
  expect_load_fails(path, AD_ERR_FORMAT, "dims [0,4294967295,4294967295]: no tensor can have");
  free(z);
  /* dims a tensor can have still load, empty */
  unsigned char ok[16] = {0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff};
  test_write_file(path, ok, sizeof ok);
  ad_tensor *t = nn_idx_load(ctx, path, AD_I32, 1);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  cr_assert(t->size == 0 && t->shape[1] == 65535 && t->shape[2] == 65535);
  ad_tensor_free(t);
}

Test(idx, truncated_everywhere) {
  uint32_t dims[3] = {4, 6, 5};
  size_t n, zn;
  unsigned char *b = make_idx(0x08, 3, dims, &n);
  unsigned char *z = gzip_bytes(b, n, &zn);
  const char *path = test_path("tr");
  for (size_t len = 0; len < n; len++) {
    test_write_file(path, b, len);
    expect_load_fails(path, AD_ERR_FORMAT, len < 16 ? "truncated" : "(truncated)");
  }
  /* gzip cut anywhere: a short stream, a missing trailer, or too short to
   * be recognized at all */
  for (size_t len = 0; len < zn; len++) {
    test_write_file(path, z, len);
    expect_load_fails(path, AD_ERR_FORMAT, NULL);
  }
  /* the full files load */
  test_write_file(path, z, zn);
  ad_tensor *t = nn_idx_load(ctx, path, AD_I32, 1);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  ad_tensor_free(t);
  free(b);
  free(z);
}

/* A raw file with bytes after the data is refused (dims_and_size_mismatch),
 * and so is a gzip file with bytes after its last member, which zlib's
 * gzread skips: junk of any length, even one that starts like a member. */
Test(idx, gzip_trailing_bytes) {
  uint32_t dims[2] = {3, 5};
  size_t n, zn;
  unsigned char *b = make_idx(0x08, 2, dims, &n);
  unsigned char *z = gzip_bytes(b, n, &zn);
  const char *path = test_path("junk.gz");
  const char junk[] = "\x1f\x8b?junk after the stream\n";
  unsigned char *zj = malloc(zn + sizeof junk);
  memcpy(zj, z, zn);
  memcpy(zj + zn, junk, sizeof junk);
  test_write_file(path, zj, zn + sizeof junk);
  expect_load_fails(path, AD_ERR_FORMAT, "corrupt gzip stream"); /* a bad member header */
  for (size_t len = 1; len <= sizeof junk - 2; len++) {
    memcpy(zj + zn, junk + 2, len); /* "?junk...": not a member */
    test_write_file(path, zj, zn + len);
    char want[80];
    snprintf(want, sizeof want, "%zu bytes after the end of the gzip stream", len);
    expect_load_fails(path, AD_ERR_FORMAT, want);
  }
  zj[zn] = 0x1f; /* the first byte of a member, alone */
  test_write_file(path, zj, zn + 1);
  expect_load_fails(path, AD_ERR_FORMAT, "1 bytes after the end of the gzip stream");
  /* members one after the other are one stream (gzip -d reads them so): the
   * data split over two loads, and so does an empty member after the data */
  size_t z1n, z2n;
  unsigned char *z1 = gzip_bytes(b, 10, &z1n), *z2 = gzip_bytes(b + 10, n - 10, &z2n);
  unsigned char *two = malloc(z1n + z2n);
  memcpy(two, z1, z1n);
  memcpy(two + z1n, z2, z2n);
  test_write_file(path, two, z1n + z2n);
  ad_tensor *t = nn_idx_load(ctx, path, AD_I32, 1);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  for (int i = 0; i < 15; i++) cr_assert_eq(((int32_t *)t->data)[i], i);
  ad_tensor_free(t);
  free(z2);
  z2 = gzip_bytes(b, 0, &z2n);
  memcpy(zj + zn, z2, z2n);
  test_write_file(path, zj, zn + z2n);
  t = nn_idx_load(ctx, path, AD_I32, 1);
  cr_assert_not_null(t, "%s", ad_last_error(ctx));
  ad_tensor_free(t);
  /* a member with data after the full data: too much data, as before */
  free(two);
  two = malloc(zn + z1n);
  memcpy(two, z, zn);
  memcpy(two + zn, z1, z1n);
  test_write_file(path, two, zn + z1n);
  expect_load_fails(path, AD_ERR_FORMAT, "more data than dims [3,5] describe");
  free(two);
  free(z1);
  free(z2);
  free(zj);
  free(z);
  free(b);
}

Test(idx, gzip_corrupt) {
  uint32_t dims[2] = {20, 20};
  size_t n, zn;
  unsigned char *b = make_idx(0x08, 2, dims, &n);
  unsigned char *z = gzip_bytes(b, n, &zn);
  const char *path = test_path("gz");
  /* the CRC-32 of the trailer */
  z[zn - 8] ^= 0x55;
  test_write_file(path, z, zn);
  expect_load_fails(path, AD_ERR_FORMAT, "corrupt gzip stream: incorrect data check");
  z[zn - 8] ^= 0x55;
  /* the length of the trailer */
  z[zn - 2] ^= 0x01;
  test_write_file(path, z, zn);
  expect_load_fails(path, AD_ERR_FORMAT, "corrupt gzip stream");
  z[zn - 2] ^= 0x01;
  /* every byte of the deflate data and header: an error or, rarely, the
   * same values; never a crash */
  int rejected = 0, total = 0;
  for (size_t at = 2; at < zn - 8; at++) {
    z[at] ^= 0xa5;
    test_write_file(path, z, zn);
    ad_tensor *t = nn_idx_load(ctx, path, AD_I32, 1);
    if (t) {
      bool same = t->size == 400;
      for (int64_t i = 0; same && i < t->size; i++) same = ((int32_t *)t->data)[i] == i % 256;
      QUICK_ASSERT(same, "a corrupt file at byte %zu gave other values", at);
      ad_tensor_free(t);
    } else {
      QUICK_ASSERT(strstr(ad_last_error(ctx), path), "no path in \"%s\"", ad_last_error(ctx));
      ad_clear_error(ctx);
      rejected++;
    }
    z[at] ^= 0xa5;
    total++;
  }
  cr_log_info("%d of %d corrupt gzip files rejected", rejected, total);
  cr_assert_gt(rejected, total / 2);
  cr_assert_eq(LIVE_BLOCKS(), live_base);
  free(b);
  free(z);
}

/* zlib's state (request 0) and window (1) come from the context's
 * allocator too, then the tensor. */
Test(idx, out_of_memory) {
  long base = LIVE_BLOCKS();
  static const char *what[3] = {"out of memory opening the file",
                                "out of memory inflating the gzip stream",
                                "out of memory for dims [10000]"};
  for (long k = 0; k < 3; k++) {
    test_alloc_refuse_after(&alloc_state, k);
    cr_assert_null(nn_idx_load(ctx, LABELS, AD_I32, 1));
    test_alloc_grant_all(&alloc_state);
    expect_error(AD_ERR_OOM, LABELS, what[k], NULL);
    cr_assert_eq(LIVE_BLOCKS(), base);
  }
}
