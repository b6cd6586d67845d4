/* test_alloc.h: what the Criterion tests share. Header-only (static
 * functions and macros); it includes ad.h and <criterion/criterion.h>.
 *
 * - test_alloc / test_alloc_fn: an allocator for ad_ctx_new_with_alloc that
 *   counts what the context asks for and can refuse on demand.
 * - QUICK_ASSERT: cr_assert that costs nothing while the condition holds;
 *   expect_status_msg: the last error's status and message;
 *   test_close: a value against a reference, within a bound, infinities
 *   and NaN exactly; expect_tensor_close: a tensor against a fixture's;
 *   test_hash_bytes: a 64-bit hash of bytes (results compared bit for bit
 *   without keeping them); test_uniform: a tensor of uniform values.
 * - TEST_CTX_SUITE: the plain fixture, a fresh ad_ctx_new context per test;
 *   TEST_CTX_SUITE_ALSO gives it to a file's further suites.
 *
 * The allocator's contract (ad_alloc_fn, include/autodiff/ad.h): Lua-style, one
 * function for every operation, blocks 64-byte aligned.
 *   nsize == 0             frees ptr (NULL is fine) and returns NULL;
 *   ptr == NULL, nsize > 0 allocates nsize bytes;
 *   ptr != NULL, nsize > 0 reallocates ptr from osize to nsize bytes,
 *                          keeping min(osize, nsize) of its bytes.
 * A request is a call with nsize > 0. A refused request returns NULL and
 * leaves ptr alone (a refused reallocation keeps the old block, still live).
 * State lives in the test_alloc passed as ud; zero-initialise it
 * (test_alloc ta = {0}) to grant everything and start every count at 0. */
#ifndef TEST_ALLOC_H
#define TEST_ALLOC_H

#include "ad_ext.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* cr_assert without its per-call cost (a message to the runner) when the
 * condition holds: for loops that check thousands of values or files. */
#define QUICK_ASSERT(cond, ...)                                                                    \
  do {                                                                                             \
    if (!(cond)) cr_assert(cond, __VA_ARGS__);                                                     \
  } while (0)

/* A 64-bit hash of n bytes at p (every bit counts: NaN payloads, the sign
 * of a zero), for comparing results bit for bit without keeping them. */
static inline uint64_t test_hash_bytes(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 0x9E3779B97F4A7C15u ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, b + i, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDu;
    h ^= h >> 29;
  }
  for (; i < n; i++) h = (h ^ b[i]) * 0x100000001B3u;
  return h;
}

/* A new float tensor (AD_F32 or AD_F64) uniform in [-1, 1), the same
 * values from the same seed (splitmix64): what ad_rand gives a test that
 * only needs values, without its calls per element, which cost the long
 * sweeps a quarter of their time in the sanitizer build (debug). NULL
 * when the tensor cannot be made. */
static inline ad_tensor *test_uniform(ad_ctx *c, uint64_t seed, ad_dtype dt, int ndim,
                                      const int64_t *shape) {
  ad_tensor *t = ad_zeros(c, dt, ndim, shape);
  for (int64_t i = 0; t && i < t->size; i++) {
    uint64_t z = (seed += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    double u = (double)((z ^ (z >> 31)) >> 11) * 0x1p-52 - 1;
    if (dt == AD_F64)
      ((double *)t->data)[i] = u;
    else
      ((float *)t->data)[i] = (float)u;
  }
  return t;
}

/* Whether got matches the reference want within bound: a NaN want wants
 * a NaN, an infinite want or got wants the same infinity, and otherwise
 * |got - want| <= bound (so a NaN got fails). Each caller keeps its own
 * bound; this only keeps that bound out of the cases where it means
 * nothing: tol * |want| (or tol (1 + |want|)) is inf for an infinite want
 * and took any got, and a bound that grows with |got| took an infinite
 * got. */
static inline bool test_close(double got, double want, double bound) {
  if (isnan(want)) return isnan(got);
  if (isinf(want) || isinf(got)) return got == want;
  return fabs(got - want) <= bound;
}

/* c's last error has status st and a message containing needle; clears
 * it. */
static inline void expect_status_msg(ad_ctx *c, ad_status st, const char *needle) {
  cr_assert_eq(ad_last_status(c), st, "status %s: %s", ad_status_str(ad_last_status(c)),
               ad_last_error(c));
  cr_assert(strstr(ad_last_error(c), needle), "message: %s", ad_last_error(c));
  ad_clear_error(c);
}

/* got matches a fixture's want, of the same shape, element by element
 * (test_close) to |got - want| <= tol (1 + |want|); the messages name the
 * case cname and the quantity what, and c's last error when got is NULL. */
static inline void expect_tensor_close(ad_ctx *c, const ad_tensor *got, const ad_tensor *want,
                                       double tol, const char *cname, const char *what) {
  cr_assert_not_null(got, "%s %s: NULL (%s)", cname, what, ad_last_error(c));
  cr_assert_not_null(want, "%s %s: not in the fixture", cname, what);
  cr_assert_eq(got->ndim, want->ndim, "%s %s: %d dims, want %d", cname, what, got->ndim,
               want->ndim);
  for (int d = 0; d < got->ndim; d++)
    cr_assert_eq(got->shape[d], want->shape[d], "%s %s: dim %d is %lld, want %lld", cname, what, d,
                 (long long)got->shape[d], (long long)want->shape[d]);
  for (int64_t i = 0; i < got->size; i++) {
    double g = ad_tensor_get(got, i), w = ad_tensor_get(want, i);
    QUICK_ASSERT(test_close(g, w, tol * (1 + fabs(w))), "%s %s[%lld]: %.17g, PyTorch %.17g", cname,
                 what, (long long)i, g, w);
  }
}

/* The plain fixture: every test of `suite` gets a fresh context from
 * ad_ctx_new in the file-scope `ctx`, freed after the test. Use once per
 * file, in place of TestSuite(suite, ...). Criterion runs .init and .fini
 * around every test, so no test sees another's context. Helpers in such a
 * file call their context parameter c (or cx where c is taken), not ctx,
 * which -Wshadow would reject. */
#define TEST_CTX_SUITE(suite)                                                                      \
  static ad_ctx *ctx;                                                                              \
  static void test_ctx_setup(void) {                                                               \
    ctx = ad_ctx_new();                                                                            \
    cr_assert_not_null(ctx);                                                                       \
  }                                                                                                \
  static void test_ctx_teardown(void) { ad_ctx_free(ctx); }                                        \
  TEST_CTX_SUITE_ALSO(suite)

/* The same fixture for a further suite of a file that already has
 * TEST_CTX_SUITE (one line per extra suite, after it). */
#define TEST_CTX_SUITE_ALSO(suite)                                                                 \
  TestSuite(suite, .init = test_ctx_setup, .fini = test_ctx_teardown)

/* Which requests test_alloc_fn refuses. */
typedef enum test_alloc_refusal {
  TEST_ALLOC_GRANT = 0,   /* none (the zero value) */
  TEST_ALLOC_REFUSE_FROM, /* request fail_at and every later one */
  TEST_ALLOC_REFUSE_ONLY, /* request fail_at only; the later ones are granted */
} test_alloc_refusal;

typedef struct test_alloc {
  /* settings: set them directly or with the helpers below */
  test_alloc_refusal refuse;
  long fail_at; /* index of the refused request, counted like `requests` */
  /* counts since the state was zeroed */
  long calls;           /* every call: requests and frees, free(NULL) included */
  long requests;        /* calls with nsize > 0, refused ones included */
  long refused;         /* requests refused on purpose (not by the system) */
  long live;            /* blocks outstanding */
  long long live_bytes; /* bytes outstanding, as asked for (not rounded up) */
} test_alloc;

/* The ad_alloc_fn; ud is a test_alloc *. */
static inline void *test_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize) {
  test_alloc *ta = ud;
  ta->calls++;
  if (nsize == 0) {
    if (ptr) {
      ta->live--;
      ta->live_bytes -= (long long)osize;
    }
    free(ptr);
    return NULL;
  }
  long k = ta->requests++;
  if ((ta->refuse == TEST_ALLOC_REFUSE_FROM && k >= ta->fail_at) ||
      (ta->refuse == TEST_ALLOC_REFUSE_ONLY && k == ta->fail_at)) {
    ta->refused++;
    return NULL; /* a refused reallocation leaves ptr alone */
  }
  if (nsize > SIZE_MAX - 63) return NULL;
  void *p = aligned_alloc(64, (nsize + 63) & ~(size_t)63);
  if (!p) return NULL;
  if (ptr) {
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    free(ptr);
    ta->live_bytes -= (long long)osize;
  } else {
    ta->live++;
  }
  ta->live_bytes += (long long)nsize;
  return p;
}

/* Grants the next k requests and refuses every one after them (a budget of
 * k allocations from here on); k = 0 refuses from the next request on. */
static inline void test_alloc_refuse_after(test_alloc *ta, long k) {
  ta->refuse = TEST_ALLOC_REFUSE_FROM;
  ta->fail_at = ta->requests + k;
}

/* Stops refusing: every later request is granted. */
static inline void test_alloc_grant_all(test_alloc *ta) { ta->refuse = TEST_ALLOC_GRANT; }

/* Asserts that c's sticky error has status st and that its message contains
 * each of the NULL-terminated strings s1, ...; then clears it. */
static inline void test_expect_error(ad_ctx *c, ad_status st, const char *s1, ...) {
  const char *msg = ad_last_error(c);
  cr_assert_eq(ad_last_status(c), st, "status %s (\"%s\"), expected %s",
               ad_status_str(ad_last_status(c)), msg, ad_status_str(st));
  va_list ap;
  va_start(ap, s1);
  for (const char *s = s1; s; s = va_arg(ap, const char *))
    cr_assert_not_null(strstr(msg, s), "message \"%s\" lacks \"%s\"", msg, s);
  va_end(ap);
  ad_clear_error(c);
  cr_assert_eq(ad_last_status(c), AD_OK);
  cr_assert_str_eq(ad_last_error(c), "");
}

/* A persistent f64 tensor on c with values v (NULL: zeros), requiring
 * grad; fails the test if it cannot be made. */
static inline ad_tensor *test_param(ad_ctx *c, int ndim, const int64_t *shape, const double *v) {
  ad_tensor *t = ad_from_data(c, AD_F64, ndim, shape, v);
  cr_assert_not_null(t, "%s", ad_last_error(c));
  cr_assert_eq(ad_tensor_set_requires_grad(t, true), AD_OK);
  return t;
}

/* Asserts that t (made on c; NULL fails with c's error) has shape. */
static inline void test_expect_shape(ad_ctx *c, const ad_tensor *t, int ndim, const int64_t *shape,
                                     const char *what) {
  cr_assert_not_null(t, "%s: no tensor (%s)", what, ad_last_error(c));
  cr_assert_eq(t->ndim, ndim, "%s: ndim %d, want %d", what, t->ndim, ndim);
  for (int k = 0; k < ndim; k++)
    cr_assert_eq(t->shape[k], shape[k], "%s: dim %d is %lld, want %lld", what, k,
                 (long long)t->shape[k], (long long)shape[k]);
}

#endif
