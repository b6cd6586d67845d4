/* test_tmpdir.h: the fixture of the tests that write files. Header-only
 * (static functions, one static buffer and a macro); it includes
 * test_alloc.h.
 *
 * - TEST_TMPDIR_SUITE(suite, prefix): every test of `suite` gets a context
 *   whose allocations test_alloc counts, and a fresh, empty folder
 *   /tmp/<prefix>-XXXXXX; after the test the context is freed and the folder
 *   removed with everything in it. Use once per file, in place of
 *   TestSuite(suite, ...). It defines, at file scope:
 *     ctx          the context;
 *     alloc_state  its allocator's counts (test_alloc);
 *     live_base    the blocks the fresh context itself holds, so that
 *                  alloc_state.live == live_base means nothing leaked.
 * - tmpdir: the current test's folder.
 * - test_path(name): tmpdir/name.
 * - test_write_file(path, data, n): writes n bytes or fails the test.
 * - test_read_file(path, &n): the file's bytes (malloc'd) or fails the test.
 * - test_remove_tree(path): removes a file or a folder and all it holds. */
#ifndef TEST_TMPDIR_H
#define TEST_TMPDIR_H

#include "test_alloc.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The current test's folder (set by TEST_TMPDIR_SUITE's setup). */
static char tmpdir[64];

/* Creates the empty folder /tmp/<prefix>-XXXXXX in tmpdir. */
static inline void test_tmpdir_make(const char *prefix) {
  int n = snprintf(tmpdir, sizeof tmpdir, "/tmp/%s-XXXXXX", prefix);
  cr_assert(n > 0 && (size_t)n < sizeof tmpdir, "prefix \"%s\" is too long", prefix);
  cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp %s", tmpdir);
}

/* Removes path: a file, or a folder with everything below it (read-only
 * folders included). A path that does not exist is fine. */
static inline void test_remove_tree(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) != 0) return;
  if (!S_ISDIR(sb.st_mode)) {
    unlink(path);
    return;
  }
  chmod(path, 0700);
  DIR *d = opendir(path);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      char sub[512];
      int n = snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
      if (n > 0 && (size_t)n < sizeof sub) test_remove_tree(sub); /* never a cut path */
    }
    closedir(d);
  }
  rmdir(path);
}

/* tmpdir/name, in one of four rotating buffers (so up to four may be used
 * in one call). */
static inline const char *test_path(const char *name) {
  static char buf[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
  return buf[k];
}

/* Creates or truncates path and writes the n bytes at data (data may be
 * NULL when n == 0); fails the test if anything goes wrong. */
static inline void test_write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  QUICK_ASSERT(f, "cannot create %s", path);
  bool ok = n == 0 || fwrite(data, 1, n, f) == n;
  ok = fclose(f) == 0 && ok;
  QUICK_ASSERT(ok, "cannot write %s", path);
}

/* The whole of the file at path in a new malloc'd buffer (the caller frees
 * it), its size in *n; fails the test if anything goes wrong. */
static inline unsigned char *test_read_file(const char *path, long *n) {
  FILE *f = fopen(path, "rb");
  QUICK_ASSERT(f, "cannot open %s", path);
  bool ok = fseek(f, 0, SEEK_END) == 0 && (*n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0;
  unsigned char *data = ok ? malloc(*n ? (size_t)*n : 1) : NULL;
  ok = data && fread(data, 1, (size_t)*n, f) == (size_t)*n;
  fclose(f);
  QUICK_ASSERT(ok, "cannot read %s", path);
  return data;
}

/* The allocator's live blocks in a TEST_TMPDIR_SUITE test, less the slabs
 * the context keeps for tensor headers until it is freed: what a leak
 * check compares with live_base. */
#define LIVE_BLOCKS() (alloc_state.live - (long)ad_ctx_header_blocks(ctx))

#define TEST_TMPDIR_SUITE(suite, prefix)                                                           \
  static test_alloc alloc_state;                                                                   \
  static ad_ctx *ctx;                                                                              \
  static long live_base;                                                                           \
  static void test_tmpdir_setup(void) {                                                            \
    alloc_state = (test_alloc){0};                                                                 \
    ctx = ad_ctx_new_with_alloc(test_alloc_fn, &alloc_state);                                      \
    cr_assert_not_null(ctx);                                                                       \
    live_base = LIVE_BLOCKS();                                                                     \
    test_tmpdir_make(prefix);                                                                      \
  }                                                                                                \
  static void test_tmpdir_teardown(void) {                                                         \
    ad_ctx_free(ctx);                                                                              \
    test_remove_tree(tmpdir);                                                                      \
  }                                                                                                \
  TestSuite(suite, .init = test_tmpdir_setup, .fini = test_tmpdir_teardown)

#endif
