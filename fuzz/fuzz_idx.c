/* fuzz_idx.c: libFuzzer target for nn_idx_load (include/autodiff/nn_io.h). The input
 * is the bytes of an IDX file, raw or gzip'd; seeds in fuzz/corpus/idx.
 *
 * Each input is loaded as AD_I32, AD_F64 (scale 1) and AD_F32 (scale
 * 1/255). Besides the sanitizers, the oracles are:
 *   - a failure sets an error status and a message naming the file;
 *   - the three loads agree: all fail, or all give the same shape and the
 *     same byte values (converted and scaled as the contract says);
 *   - a loaded tensor has 1..AD_MAX_DIMS dims whose product is its size;
 *     for a raw (not gzip) input the file is exactly the header and those
 *     bytes, and the elements are the bytes; a gzip input is gzip members
 *     and nothing after them (zlib's gzread would skip trailing bytes),
 *     which inflate to exactly the header and the elements;
 *   - everything allocated through the context is freed. */
#include "fuzz_common.h"

#include <zlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fuzz_ctx_init();
  return 0;
}

/* Checks one loaded tensor against the input and the I32 load. */
static void check_loaded(const ad_tensor *t, ad_dtype dt, const ad_tensor *ref, const uint8_t *data,
                         size_t size) {
  FUZZ_CHECK(t->dtype == dt, "dtype %d, asked for %d", (int)t->dtype, (int)dt);
  FUZZ_CHECK(t->ndim >= 1 && t->ndim <= AD_MAX_DIMS, "ndim %d", t->ndim);
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) {
    FUZZ_CHECK(t->shape[d] >= 0, "dim %d is %lld", d, (long long)t->shape[d]);
    n *= t->shape[d];
  }
  FUZZ_CHECK(n == t->size, "shape product %lld, size %lld", (long long)n, (long long)t->size);
  bool gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  size_t head = 4 + 4 * (size_t)t->ndim;
  if (!gzip) {
    FUZZ_CHECK(size == head + (size_t)t->size,
               "a raw file of %zu bytes gave %d dims and %lld elements", size, t->ndim,
               (long long)t->size);
    FUZZ_CHECK(data[0] == 0 && data[1] == 0 && data[2] == 0x08 && data[3] == t->ndim,
               "a raw file with magic %02x %02x %02x %02x loaded", data[0], data[1], data[2],
               data[3]);
  }
  if (ref) {
    FUZZ_CHECK(ref->ndim == t->ndim && ref->size == t->size, "the loads disagree on the shape");
    for (int d = 0; d < t->ndim; d++)
      FUZZ_CHECK(ref->shape[d] == t->shape[d], "the loads disagree on dim %d", d);
  }
  for (int64_t i = 0; i < t->size; i++) {
    int32_t b = ref ? ((const int32_t *)ref->data)[i] : ((const int32_t *)t->data)[i];
    FUZZ_CHECK(b >= 0 && b <= 255, "element %lld is %d, not a byte", (long long)i, (int)b);
    if (!gzip)
      FUZZ_CHECK(b == data[head + (size_t)i], "element %lld differs from the file", (long long)i);
    if (dt == AD_F64)
      FUZZ_CHECK(((const double *)t->data)[i] == (double)b, "F64 element %lld", (long long)i);
    if (dt == AD_F32)
      FUZZ_CHECK(((const float *)t->data)[i] == (float)((double)b * (1.0 / 255)),
                 "F32 element %lld", (long long)i);
  }
}

/* A gzip input that loaded as t (AD_I32), inflated here on its own. */
static void check_gzip(const ad_tensor *t, const uint8_t *data, size_t size) {
  size_t head = 4 + 4 * (size_t)t->ndim, want = head + (size_t)t->size;
  unsigned char *out = malloc(want + 1);
  FUZZ_CHECK(out != NULL, "out of memory");
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  FUZZ_CHECK(inflateInit2(&zs, 15 + 16) == Z_OK, "inflateInit2");
  zs.next_in = (Bytef *)(uintptr_t)data;
  zs.avail_in = (uInt)size;
  zs.next_out = out;
  zs.avail_out = (uInt)(want + 1); /* room for one byte too many */
  int ret;
  while ((ret = inflate(&zs, Z_NO_FLUSH)) == Z_STREAM_END && zs.avail_in) inflateReset(&zs);
  FUZZ_CHECK(ret == Z_STREAM_END && !zs.avail_in,
             "a gzip input loaded that is not gzip members only (inflate %d, %u bytes left)", ret,
             zs.avail_in);
  size_t n = want + 1 - zs.avail_out;
  FUZZ_CHECK(n == want, "a gzip input of %zu data bytes gave %d dims and %lld elements", n, t->ndim,
             (long long)t->size);
  FUZZ_CHECK(out[0] == 0 && out[1] == 0 && out[2] == 0x08 && out[3] == t->ndim,
             "a gzip input with magic %02x %02x %02x %02x loaded", out[0], out[1], out[2], out[3]);
  for (int64_t i = 0; i < t->size; i++)
    FUZZ_CHECK(((const int32_t *)t->data)[i] == out[head + (size_t)i],
               "element %lld differs from the inflated data", (long long)i);
  inflateEnd(&zs);
  free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_input_write("fuzz_idx", data, size);
  ad_tensor *ti = nn_idx_load(fuzz_ctx, fuzz_path, AD_I32, 0);
  if (ti) {
    check_loaded(ti, AD_I32, NULL, data, size);
    if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) check_gzip(ti, data, size);
  } else
    fuzz_check_error("nn_idx_load(AD_I32)");
  ad_clear_error(fuzz_ctx);
  ad_tensor *td = nn_idx_load(fuzz_ctx, fuzz_path, AD_F64, 1);
  FUZZ_CHECK(!td == !ti, "the AD_F64 load %s, the AD_I32 load %s", td ? "worked" : "failed",
             ti ? "worked" : "failed");
  if (td)
    check_loaded(td, AD_F64, ti, data, size);
  else
    fuzz_check_error("nn_idx_load(AD_F64)");
  ad_clear_error(fuzz_ctx);
  ad_tensor *tf = nn_idx_load(fuzz_ctx, fuzz_path, AD_F32, 1.0 / 255);
  FUZZ_CHECK(!tf == !ti, "the AD_F32 load %s, the AD_I32 load %s", tf ? "worked" : "failed",
             ti ? "worked" : "failed");
  if (tf)
    check_loaded(tf, AD_F32, ti, data, size);
  else
    fuzz_check_error("nn_idx_load(AD_F32)");
  ad_tensor_free(ti);
  ad_tensor_free(td);
  ad_tensor_free(tf);
  fuzz_input_remove();
  fuzz_ctx_check_freed();
  return 0;
}
