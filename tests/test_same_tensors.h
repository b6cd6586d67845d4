/* test_same_tensors.h: whether two safetensors files hold the same tensors
 * (a checkpoint saved here against PyTorch's). Header-only; include after
 * nn.h and test_tmpdir.h. */
#ifndef TEST_SAME_TENSORS_H
#define TEST_SAME_TENSORS_H

#include "nn.h"
#include "test_tmpdir.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* Fails the test unless the file got holds exactly the tensors of want:
 * the same number, and for each of want's names one of got's with the same
 * dtype, shape and bytes. Returns how many of them are I64 (the
 * num_batches_tracked buffers PyTorch stores). */
static inline int test_expect_same_tensors(ad_ctx *c, const char *want, const char *got) {
  nn_checkpoint_info *theirs = nn_checkpoint_info_read(c, want);
  nn_checkpoint_info *ours = nn_checkpoint_info_read(c, got);
  cr_assert(theirs && ours, "%s", ad_last_error(c));
  cr_assert_eq(ours->n, theirs->n, "%s holds %d tensors, %s %d", got, ours->n, want, theirs->n);
  long na, nb;
  unsigned char *a = test_read_file(want, &na), *b = test_read_file(got, &nb);
  int i64 = 0;
  for (int i = 0; i < theirs->n; i++) {
    const nn_checkpoint_entry *t = &theirs->entries[i];
    const nn_checkpoint_entry *o = nn_checkpoint_info_find(ours, t->name);
    cr_assert_not_null(o, "we lack %s", t->name);
    cr_assert_str_eq(o->dtype_name, t->dtype_name, "%s", t->name);
    i64 += strcmp(t->dtype_name, "I64") == 0;
    cr_assert_eq(o->ndim, t->ndim, "%s", t->name);
    for (int d = 0; d < t->ndim; d++) cr_assert_eq(o->shape[d], t->shape[d], "%s", t->name);
    cr_assert_eq(o->nbytes, t->nbytes, "%s", t->name);
    cr_assert(memcmp(a + 8 + theirs->header_bytes + t->offset,
                     b + 8 + ours->header_bytes + o->offset, (size_t)t->nbytes) == 0,
              "%s differs", t->name);
  }
  free(a);
  free(b);
  nn_checkpoint_info_free(theirs);
  nn_checkpoint_info_free(ours);
  return i64;
}

#endif
