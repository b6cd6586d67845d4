/* test_buffers.c: caller-provided storage for a persistent tensor's values
 * and gradient (ad_tensor_set_data_buffer, ad_tensor_set_grad_buffer). */
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

TEST_CTX_SUITE(buffers);

/* w = [1, 2, 3] (f64, requires grad); the backward of sum(w * w) gives
 * 2 w. */
static ad_tensor *leaf3(ad_ctx *c) {
  const double v[3] = {1, 2, 3};
  int64_t s = 3;
  ad_tensor *w = ad_from_data(c, AD_F64, 1, &s, v);
  cr_assert_not_null(w);
  cr_assert_eq(ad_tensor_set_requires_grad(w, true), AD_OK);
  return w;
}

/* A context whose allocations ta counts. */
static ad_ctx *counted_ctx(test_alloc *ta) {
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, ta);
  cr_assert_not_null(c);
  return c;
}

static void backward_sq(ad_ctx *c, ad_tensor *w) {
  ad_tape_reset(c);
  cr_assert_eq(ad_backward(c, ad_sum(c, ad_mul(c, w, w)), NULL), AD_OK, "%s", ad_last_error(c));
}

Test(buffers, grad_stored_added_and_rewritten_in_the_buffer) {
  ad_tensor *w = leaf3(ctx);
  double buf[3] = {99, 99, 99}; /* the first contribution is written, not added */
  cr_assert_eq(ad_tensor_set_grad_buffer(w, buf, true), AD_OK);
  cr_assert_null(w->grad, "no gradient yet: none made by binding with copy");
  backward_sq(ctx, w);
  cr_assert_eq(w->grad->data, (void *)buf);
  for (int i = 0; i < 3; i++) cr_assert_eq(buf[i], 2.0 * (i + 1));
  backward_sq(ctx, w); /* accumulates */
  for (int i = 0; i < 3; i++) cr_assert_eq(buf[i], 4.0 * (i + 1));
  ad_tensor_zero_grad(w);
  cr_assert_null(w->grad);
  buf[0] = buf[1] = buf[2] = -7;
  backward_sq(ctx, w);
  cr_assert_eq(w->grad->data, (void *)buf, "zero_grad keeps the binding");
  for (int i = 0; i < 3; i++) cr_assert_eq(buf[i], 2.0 * (i + 1));
  /* back to engine memory: the values move, the buffer is left alone */
  cr_assert_eq(ad_tensor_set_grad_buffer(w, NULL, false), AD_OK);
  cr_assert_neq(w->grad->data, (void *)buf);
  buf[0] = 123;
  backward_sq(ctx, w);
  cr_assert_eq(buf[0], 123);
  for (int i = 0; i < 3; i++) cr_assert_eq(ad_tensor_get(w->grad, i), 4.0 * (i + 1));
  ad_tensor_free(w);
}

Test(buffers, grad_rebound_per_step_and_freed_without_the_buffer) {
  test_alloc ta = {0};
  ad_ctx *c = counted_ctx(&ta);
  ad_tensor *w = leaf3(c);
  double a[3], b[3];
  for (int step = 0; step < 4; step++) {
    double *buf = step % 2 ? b : a;
    ad_tensor_zero_grad(w);
    cr_assert_eq(ad_tensor_set_grad_buffer(w, buf, true), AD_OK, "%s", ad_last_error(c));
    backward_sq(c, w);
    cr_assert_eq(w->grad->data, (void *)buf);
    for (int i = 0; i < 3; i++) cr_assert_eq(buf[i], 2.0 * (i + 1));
  }
  /* a gradient present when bound with copy moves into the new buffer */
  double d[3] = {0};
  cr_assert_eq(ad_tensor_set_grad_buffer(w, d, true), AD_OK);
  cr_assert_eq(w->grad->data, (void *)d);
  for (int i = 0; i < 3; i++) cr_assert_eq(d[i], 2.0 * (i + 1));
  ad_tensor_free(w); /* frees the engine's memory, not d (the allocator counts) */
  ad_tape_reset(c);
  cr_assert_eq(ad_ctx_live_tensors(c), 0);
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0, "%ld blocks left: the engine's gradient memory leaked", ta.live);
}

/* g = w->grad, bound to buf, read by the next tape as a value, released
 * by zero_grad first or not: d/dw (sum(g * w) + sum(w * k)) = g + k, stored
 * (12, 24, 36) or added to g (14, 28, 42). The backward of w * k (recorded
 * second) runs before the one of g * w, and buf, which holds g, is left as
 * the tape reads it; the binding comes back at the next zero_grad. */
Test(buffers, bound_grad_read_by_the_tape_is_left_alone) {
  for (int zero_first = 0; zero_first < 2; zero_first++) {
    ad_tensor *w = leaf3(ctx);
    double buf[3] = {0}, kv[3] = {10, 20, 30};
    int64_t s = 3;
    ad_tensor *k = ad_from_data(ctx, AD_F64, 1, &s, kv);
    cr_assert_eq(ad_tensor_set_grad_buffer(w, buf, true), AD_OK);
    backward_sq(ctx, w);
    ad_tensor *g = w->grad; /* [2, 4, 6] in buf */
    if (zero_first) ad_tensor_zero_grad(w);
    ad_tape_reset(ctx);
    ad_tensor *z = ad_add(ctx, ad_sum(ctx, ad_mul(ctx, g, w)), ad_sum(ctx, ad_mul(ctx, w, k)));
    cr_assert_eq(ad_backward(ctx, z, NULL), AD_OK, "%s", ad_last_error(ctx));
    for (int i = 0; i < 3; i++) {
      cr_assert_eq(ad_tensor_get(w->grad, i), (zero_first ? 12.0 : 14.0) * (i + 1));
      cr_assert_eq(buf[i], 2.0 * (i + 1), "the buffer the tape reads is left alone");
    }
    cr_assert_neq(w->grad->data, (void *)buf);
    ad_tensor_zero_grad(w);
    backward_sq(ctx, w);
    cr_assert_eq(w->grad->data, (void *)buf, "zero_grad keeps the binding");
    for (int i = 0; i < 3; i++) cr_assert_eq(buf[i], 2.0 * (i + 1));
    ad_tensor_free(k);
    ad_tensor_free(w);
  }
}

Test(buffers, grad_without_copy_takes_the_buffers_contents) {
  ad_tensor *w = leaf3(ctx);
  double buf[3] = {5, 6, 7};
  cr_assert_eq(ad_tensor_set_grad_buffer(w, buf, false), AD_OK);
  cr_assert_not_null(w->grad, "the buffer's contents are the gradient now");
  cr_assert_eq(ad_tensor_get(w->grad, 2), 7);
  backward_sq(ctx, w);
  cr_assert_eq(buf[0], 7); /* 5 + 2 */
  double other[3] = {1, 1, 1};
  cr_assert_eq(ad_tensor_set_grad_buffer(w, other, false), AD_OK);
  cr_assert_eq(ad_tensor_get(w->grad, 1), 1, "rebinding without copy: the new contents");
  cr_assert_eq(buf[1], 10, "the old buffer is left as it was");
  /* the optimizer-style fast path (matmul writes the weight gradient
   * straight into the leaf's buffer) reaches the caller's memory too */
  float x[6] = {1, 2, 3, 4, 5, 6}, wv[6] = {1, -1, 0.5f, 2, 0, 1}, g[6], ref[6];
  int64_t sx[2] = {2, 3}, sw[2] = {3, 2};
  for (int round = 0; round < 2; round++) {
    ad_tape_reset(ctx);
    ad_tensor *xx = ad_from_data(ctx, AD_F32, 2, sx, x), *ww = ad_from_data(ctx, AD_F32, 2, sw, wv);
    ad_tensor_set_requires_grad(ww, true);
    if (round) cr_assert_eq(ad_tensor_set_grad_buffer(ww, g, true), AD_OK);
    cr_assert_eq(
        ad_backward(ctx, ad_sum(ctx, ad_tanh(ctx, ad_matmul(ctx, xx, ww, false, false))), NULL),
        AD_OK);
    if (round) {
      cr_assert_eq(ww->grad->data, (void *)g);
      cr_assert_eq(memcmp(g, ref, sizeof g), 0, "the same bits as in engine memory");
    } else {
      memcpy(ref, ww->grad->data, sizeof ref);
    }
    ad_tensor_free(xx);
    ad_tensor_free(ww);
  }
  ad_tensor_free(w);
}

Test(buffers, data_in_the_callers_memory) {
  test_alloc ta = {0};
  ad_ctx *c = counted_ctx(&ta);
  ad_tensor *w = leaf3(c);
  double buf[3] = {0};
  cr_assert_eq(ad_tensor_set_data_buffer(w, buf, true), AD_OK);
  cr_assert_eq(w->data, (void *)buf);
  cr_assert_eq(buf[2], 3, "copy: the values moved into the buffer");
  buf[1] = 10; /* the caller's writes are the tensor's values */
  ad_tensor *s = ad_sum(c, ad_mul(c, w, w));
  cr_assert_eq(ad_tensor_item(s), 1 + 100 + 9);
  /* a tensor in engine memory that the current tape used cannot move: its
   * views would read freed memory */
  double other[3] = {4, 5, 6};
  ad_tensor *e = leaf3(c);
  cr_assert_not_null(ad_reshape(c, e, 1, (int64_t[]){3}));
  cr_assert_eq(ad_tensor_set_data_buffer(e, other, false), AD_ERR_STATE);
  test_expect_error(c, AD_ERR_STATE, "set_data_buffer", "current tape", NULL);
  cr_assert_neq(e->data, (void *)other);
  ad_tensor_free(e);
  cr_assert_eq(ad_backward(c, s, NULL), AD_OK);
  cr_assert_eq(ad_tensor_get(w->grad, 1), 20);
  /* from the caller's memory a used tensor may move: nothing is freed, and
   * the tape's views keep reading the old buffer */
  ad_tensor *view = ad_reshape(c, w, 1, (int64_t[]){3});
  double moved[3];
  cr_assert_eq(ad_tensor_set_data_buffer(w, moved, true), AD_OK);
  cr_assert_eq(w->data, (void *)moved);
  cr_assert_eq(moved[1], 10);
  cr_assert_eq(view->data, (void *)buf, "the view still reads the old buffer");
  cr_assert_eq(ad_tensor_set_data_buffer(w, buf, true), AD_OK);
  ad_tape_reset(c);
  /* without copy: the buffer's contents are the values; two tensors can
   * hold one copy */
  ad_tensor *v = leaf3(c);
  cr_assert_eq(ad_tensor_set_data_buffer(w, other, false), AD_OK);
  cr_assert_eq(ad_tensor_set_data_buffer(v, other, false), AD_OK);
  cr_assert_eq(ad_tensor_get(w, 0), 4);
  other[0] = -1;
  cr_assert_eq(ad_tensor_get(v, 0), -1);
  cr_assert_eq(buf[1], 10, "the old buffer is left alone");
  /* back to engine memory, values kept */
  cr_assert_eq(ad_tensor_set_data_buffer(w, NULL, false), AD_OK);
  other[1] = 0;
  cr_assert_eq(ad_tensor_get(w, 1), 5);
  cr_assert_eq(ad_tensor_get(v, 1), 0);
  ad_tensor_free(w);
  ad_tensor_free(v); /* its data is other's: not freed by the engine */
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0, "%ld blocks left", ta.live);
}

Test(buffers, context_free_leaves_the_callers_memory) {
  test_alloc ta = {0};
  ad_ctx *c = counted_ctx(&ta);
  ad_tensor *w = leaf3(c);
  double data[3], grad[3];
  cr_assert_eq(ad_tensor_set_data_buffer(w, data, true), AD_OK);
  cr_assert_eq(ad_tensor_set_grad_buffer(w, grad, true), AD_OK);
  backward_sq(c, w);
  cr_assert_eq(grad[2], 6);
  ad_ctx_free(c); /* w still live: the context frees it, not the buffers */
  cr_assert_eq(ta.live, 0, "%ld blocks left", ta.live);
  cr_assert_eq(data[0], 1);
}

Test(buffers, bad_arguments) {
  cr_assert_eq(ad_tensor_set_data_buffer(NULL, NULL, true), AD_ERR_NULL);
  cr_assert_eq(ad_tensor_set_grad_buffer(NULL, NULL, true), AD_ERR_NULL);
  ad_tensor *w = leaf3(ctx);
  char raw[64];
  cr_assert_eq(ad_tensor_set_data_buffer(w, raw + 1, true), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "set_data_buffer", "not aligned", "f64", NULL);
  cr_assert_eq(ad_tensor_set_grad_buffer(w, raw + 4, true), AD_ERR_ARG);
  test_expect_error(ctx, AD_ERR_ARG, "set_grad_buffer", "not aligned", NULL);
  ad_tensor *tmp = ad_mul(ctx, w, w);
  double buf[3];
  cr_assert_eq(ad_tensor_set_data_buffer(tmp, buf, true), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "set_data_buffer", "temporary", NULL);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, tmp), NULL), AD_OK);
  cr_assert_eq(ad_tensor_set_data_buffer(w->grad, buf, true), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "another tensor's gradient", NULL);
  int64_t s = 3;
  ad_tensor *idx = ad_zeros(ctx, AD_I32, 1, &s);
  int32_t ib[3];
  cr_assert_eq(ad_tensor_set_grad_buffer(idx, ib, true), AD_ERR_DTYPE);
  test_expect_error(ctx, AD_ERR_DTYPE, "set_grad_buffer", "i32", NULL);
  cr_assert_eq(ad_tensor_set_data_buffer(idx, ib, true), AD_OK, "values of any dtype");
  /* a gradient an op of the current tape read cannot move */
  ad_tape_reset(ctx);
  ad_tensor *n2 = ad_sum(ctx, ad_mul(ctx, w->grad, w->grad));
  cr_assert_not_null(n2);
  cr_assert_eq(ad_tensor_set_grad_buffer(w, buf, true), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "set_grad_buffer", "current tape", NULL);
  ad_tape_reset(ctx);
  cr_assert_eq(ad_tensor_set_grad_buffer(w, buf, true), AD_OK);
  /* from the caller's memory it may move, used or not */
  cr_assert_not_null(ad_sum(ctx, w->grad));
  double buf2[3];
  cr_assert_eq(ad_tensor_set_grad_buffer(w, buf2, true), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(w->grad->data, (void *)buf2);
  cr_assert_eq(buf2[0], buf[0]);
  ad_tape_reset(ctx);
  ad_tensor_free(idx);
  ad_tensor_free(w);
  cr_assert_eq(ad_tensor_set_grad_buffer(w, buf, true), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "freed", NULL);
}

/* The engine's own memory of the tensor given back as buf: binding it
 * would free it and keep using it (the tensor's values, or gradient, in
 * freed memory). Refused; the tensor is unchanged. */
Test(buffers, the_engines_own_memory_is_refused) {
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  cr_assert_not_null(c);
  ad_tensor *w = leaf3(c);
  void *mine = w->data;
  cr_assert_eq(ad_tensor_set_data_buffer(w, mine, true), AD_ERR_ARG);
  test_expect_error(c, AD_ERR_ARG, "set_data_buffer", "engine", NULL);
  cr_assert_eq(w->data, mine);
  for (int i = 0; i < 3; i++) cr_assert_eq(ad_tensor_get(w, i), i + 1.0);
  backward_sq(c, w);
  void *g = w->grad->data;
  cr_assert_eq(ad_tensor_set_grad_buffer(w, g, false), AD_ERR_ARG);
  test_expect_error(c, AD_ERR_ARG, "set_grad_buffer", "engine", NULL);
  cr_assert_eq(w->grad->data, g);
  for (int i = 0; i < 3; i++) cr_assert_eq(ad_tensor_get(w->grad, i), 2.0 * (i + 1));
  /* a caller's buffer bound twice is fine (a no-op) */
  double buf[3];
  ad_tape_reset(c);
  cr_assert_eq(ad_tensor_set_data_buffer(w, buf, true), AD_OK);
  cr_assert_eq(ad_tensor_set_data_buffer(w, buf, true), AD_OK);
  for (int i = 0; i < 3; i++) cr_assert_eq(buf[i], i + 1.0);
  ad_tensor_free(w);
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0, "every byte returned (%zu live)", (size_t)ta.live);
}

/* A tensor in the caller's memory that an op of the current tape used
 * moves only with its values: the backward of that op reads the tensor's
 * values where they are now, so other values (copy false) would give it
 * the gradient of another function. */
Test(buffers, a_used_tensor_moves_only_with_its_values) {
  double a[3] = {1, 2, 3}, b[3] = {10, 20, 30};
  int64_t s = 3;
  ad_tensor *w = ad_zeros(ctx, AD_F64, 1, &s);
  cr_assert_eq(ad_tensor_set_requires_grad(w, true), AD_OK);
  cr_assert_eq(ad_tensor_set_data_buffer(w, a, false), AD_OK);
  ad_tensor *l = ad_sum(ctx, ad_mul(ctx, w, w));
  cr_assert_eq(ad_tensor_set_data_buffer(w, b, false), AD_ERR_STATE);
  test_expect_error(ctx, AD_ERR_STATE, "set_data_buffer", "current tape", "copy", NULL);
  cr_assert_eq(w->data, (void *)a);
  cr_assert_eq(ad_tensor_set_data_buffer(w, a, false), AD_OK, "the same buffer: nothing moves");
  cr_assert_eq(ad_tensor_set_data_buffer(w, b, true), AD_OK);
  cr_assert_eq(ad_backward(ctx, l, NULL), AD_OK);
  for (int i = 0; i < 3; i++) cr_assert_eq(ad_tensor_get(w->grad, i), 2.0 * (i + 1));
  ad_tape_reset(ctx);
  ad_tensor_free(w);
}

/* The binding ends with set_grad_buffer(w, NULL), or moves to another
 * buffer, also while a backward that read w->grad as a value left buf kept
 * aside for the next pass (w->grad then in the engine's memory): the
 * passes after it never store into buf again, so the caller may free it. */
Test(buffers, unbinding_releases_the_kept_buffer) {
  for (int v = 0; v < 8; v++) {
    int zero_first = v & 1, reset = v & 2;               /* reset: the tape that read buf is gone */
    double other[3] = {0}, *next = v & 4 ? other : NULL; /* bound elsewhere, or unbound */
    ad_tensor *w = leaf3(ctx);
    double buf[3] = {0}, kv[3] = {10, 20, 30};
    int64_t s = 3;
    ad_tensor *k = ad_from_data(ctx, AD_F64, 1, &s, kv);
    cr_assert_eq(ad_tensor_set_grad_buffer(w, buf, true), AD_OK);
    backward_sq(ctx, w);
    ad_tensor *g = w->grad;
    if (zero_first) ad_tensor_zero_grad(w);
    ad_tape_reset(ctx);
    ad_tensor *z = ad_add(ctx, ad_sum(ctx, ad_mul(ctx, g, w)), ad_sum(ctx, ad_mul(ctx, w, k)));
    cr_assert_eq(ad_backward(ctx, z, NULL), AD_OK, "%s", ad_last_error(ctx));
    cr_assert_neq(w->grad->data, (void *)buf);
    if (reset) ad_tape_reset(ctx);
    cr_assert_eq(ad_tensor_set_grad_buffer(w, next, true), AD_OK, "%s", ad_last_error(ctx));
    for (int i = 0; i < 3; i++)
      cr_assert_eq(ad_tensor_get(w->grad, i), (zero_first ? 12.0 : 14.0) * (i + 1));
    buf[0] = buf[1] = buf[2] = -1;
    ad_tensor_zero_grad(w);
    backward_sq(ctx, w);
    if (next)
      cr_assert_eq(w->grad->data, (void *)other, "bound to the other buffer");
    else
      cr_assert_neq(w->grad->data, (void *)buf, "unbound: the gradient is the engine's");
    for (int i = 0; i < 3; i++) {
      cr_assert_eq(ad_tensor_get(w->grad, i), 2.0 * (i + 1));
      cr_assert_eq(buf[i], -1, "unbound: the buffer is left alone");
    }
    ad_tensor_free(k);
    ad_tensor_free(w);
  }
}

/* ad_tensor_adopt_data and ad_tensor_adopt_grad move out of the caller's
 * memory into blocks allocated beforehand: with every later allocation
 * refused they still succeed (where the setters with a NULL buffer run out
 * of memory), the engine takes the blocks and frees them with the tensor,
 * and where there is nothing to move the block stays the caller's. */
Test(buffers, adopt_moves_into_memory_allocated_before) {
  test_alloc ta = {0};
  ad_ctx *c = counted_ctx(&ta);
  ad_tensor *w = leaf3(c);
  double dbuf[3], gbuf[3];
  cr_assert_eq(ad_tensor_set_data_buffer(w, dbuf, true), AD_OK);
  cr_assert_eq(ad_tensor_set_grad_buffer(w, gbuf, true), AD_OK);
  backward_sq(c, w);
  ad_tape_reset(c);
  void *hd = ad_malloc(c, 3 * sizeof(double)), *hg = ad_malloc(c, 3 * sizeof(double));
  cr_assert(hd && hg);
  ta.refuse = TEST_ALLOC_REFUSE_FROM, ta.fail_at = ta.requests; /* no more memory */
  cr_assert_eq(ad_tensor_set_data_buffer(w, NULL, false), AD_ERR_OOM, "the setter allocates");
  cr_assert_eq(w->data, (void *)dbuf);
  cr_assert_eq(ad_tensor_adopt_data(w, &hd), AD_OK, "%s", ad_last_error(c));
  cr_assert_eq(ad_tensor_adopt_grad(w, &hg), AD_OK, "%s", ad_last_error(c));
  cr_assert(!hd && !hg, "the engine took both blocks");
  cr_assert(w->data != (void *)dbuf && w->grad->data != (void *)gbuf);
  dbuf[0] = gbuf[0] = -9;
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(ad_tensor_get(w, i), i + 1.0, "the values moved");
    cr_assert_eq(ad_tensor_get(w->grad, i), 2.0 * (i + 1), "the gradient moved");
  }
  /* nothing left to move: the blocks stay the caller's */
  void *more = NULL;
  ta.refuse = TEST_ALLOC_GRANT;
  more = ad_malloc(c, 3 * sizeof(double));
  cr_assert_not_null(more);
  void *kept = more;
  cr_assert_eq(ad_tensor_adopt_data(w, &more), AD_OK);
  cr_assert_eq(ad_tensor_adopt_grad(w, &more), AD_OK);
  cr_assert_eq(more, kept, "already the engine's: the block is left to the caller");
  ad_tensor *fresh = leaf3(c); /* no gradient yet */
  cr_assert_eq(ad_tensor_adopt_grad(fresh, &more), AD_OK);
  cr_assert_eq(more, kept);
  /* errors: the block stays the caller's */
  void *none = NULL, *odd = (char *)more + 1;
  cr_assert_eq(ad_tensor_adopt_data(NULL, &more), AD_ERR_NULL);
  cr_assert_eq(ad_tensor_adopt_data(w, NULL), AD_ERR_NULL);
  cr_assert_eq(ad_tensor_adopt_grad(w, &none), AD_ERR_NULL);
  cr_assert_eq(ad_tensor_adopt_data(w, &odd), AD_ERR_ARG);
  test_expect_error(c, AD_ERR_ARG, "adopt_data", "not aligned", NULL);
  ad_tensor *tmp = ad_mul(c, w, w);
  cr_assert_eq(ad_tensor_adopt_data(tmp, &more), AD_ERR_STATE);
  test_expect_error(c, AD_ERR_STATE, "adopt_data", "temporary", NULL);
  int64_t s = 2;
  ad_tensor *idx = ad_zeros(c, AD_I32, 1, &s);
  cr_assert_eq(ad_tensor_adopt_grad(idx, &more), AD_ERR_DTYPE);
  test_expect_error(c, AD_ERR_DTYPE, "adopt_grad", "i32", NULL);
  cr_assert_eq(more, kept);
  ad_free(c, more, 3 * sizeof(double));
  ad_tensor_free(idx);
  ad_tensor_free(fresh);
  ad_tensor_free(w);
  ad_tape_reset(c);
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0, "%ld blocks left: an adopted block leaked", ta.live);
}

/* adopt_grad in the state a backward that read w->grad as a value leaves
 * (w->grad the engine's, the caller's buffer kept aside): nothing to move,
 * the block stays the caller's, and the kept buffer is released. */
Test(buffers, adopt_grad_releases_the_kept_buffer) {
  ad_tensor *w = leaf3(ctx);
  double buf[3] = {0}, kv[3] = {10, 20, 30};
  int64_t s = 3;
  ad_tensor *k = ad_from_data(ctx, AD_F64, 1, &s, kv);
  cr_assert_eq(ad_tensor_set_grad_buffer(w, buf, true), AD_OK);
  backward_sq(ctx, w);
  ad_tensor *g = w->grad;
  ad_tape_reset(ctx);
  ad_tensor *z = ad_add(ctx, ad_sum(ctx, ad_mul(ctx, g, w)), ad_sum(ctx, ad_mul(ctx, w, k)));
  cr_assert_eq(ad_backward(ctx, z, NULL), AD_OK, "%s", ad_last_error(ctx));
  void *home = ad_malloc(ctx, sizeof buf), *was = home;
  cr_assert_eq(ad_tensor_adopt_grad(w, &home), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_eq(home, was, "w->grad was the engine's already");
  ad_free(ctx, home, sizeof buf);
  buf[0] = buf[1] = buf[2] = -1;
  ad_tensor_zero_grad(w);
  backward_sq(ctx, w);
  cr_assert_neq(w->grad->data, (void *)buf);
  for (int i = 0; i < 3; i++) cr_assert_eq(buf[i], -1, "the kept buffer was released");
  ad_tensor_free(k);
  ad_tensor_free(w);
}

/* g = w->grad (bound to buf), released by zero_grad and read by the
 * current tape as a value: moving the binding keeps the values where the
 * tape reads them (unbound, adopted or bound elsewhere with copy), and
 * binding another buffer without copy, which would change them under the
 * tape, is refused. d/dw sum(g * w) = g = (2, 4, 6). */
Test(buffers, kept_buffer_read_by_the_tape_keeps_its_values) {
  for (int v = 0; v < 4; v++) {
    ad_tensor *w = leaf3(ctx);
    double buf[3] = {0}, other[3] = {-5, -5, -5};
    cr_assert_eq(ad_tensor_set_grad_buffer(w, buf, true), AD_OK);
    backward_sq(ctx, w);
    ad_tensor *g = w->grad;
    ad_tensor_zero_grad(w); /* g kept aside, w->grad NULL */
    ad_tape_reset(ctx);
    ad_tensor *z = ad_sum(ctx, ad_mul(ctx, g, w));
    cr_assert_not_null(z);
    cr_assert_eq(ad_tensor_set_grad_buffer(w, other, false), AD_ERR_STATE,
                 "the tape reads g's values: not replaced by other's");
    test_expect_error(ctx, AD_ERR_STATE, "set_grad_buffer", "current tape", NULL);
    void *home = ad_malloc(ctx, sizeof buf);
    ad_status st = v == 0   ? ad_tensor_set_grad_buffer(w, NULL, false)
                   : v == 1 ? ad_tensor_adopt_grad(w, &home)
                   : v == 2 ? ad_tensor_set_grad_buffer(w, other, true)
                            : AD_OK;
    cr_assert_eq(st, AD_OK, "%s", ad_last_error(ctx));
    if (home) ad_free(ctx, home, sizeof buf);
    cr_assert_eq(ad_backward(ctx, z, NULL), AD_OK, "%s", ad_last_error(ctx));
    for (int i = 0; i < 3; i++)
      cr_assert_eq(ad_tensor_get(w->grad, i), 2.0 * (i + 1), "move %d: the tape read g's values",
                   v);
    ad_tensor_free(w);
  }
}
