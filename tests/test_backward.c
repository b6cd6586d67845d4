/* test_backward.c: the backward pass: fan-out, deep chains, which ops are
 * visited, retained and accumulated gradients, no-grad mode, seeds, ad_grad,
 * higher order, closed forms from the teaching material, and the memory
 * steady state of a training loop. */
#include "ad_ext.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

TEST_CTX_SUITE(backward);

static ad_tensor *leaf(ad_dtype dt, int ndim, const int64_t *shape, const double *v) {
  ad_tensor *t = ad_zeros(ctx, dt, ndim, shape);
  cr_assert_not_null(t);
  int64_t n = t->size;
  for (int64_t i = 0; i < n; i++) ad_tensor_set(t, i, v[i]);
  cr_assert_eq(ad_tensor_set_requires_grad(t, true), AD_OK);
  return t;
}

static ad_tensor *vec(const double *v, int64_t n) { return leaf(AD_F64, 1, &n, v); }

/* |got - want| <= tol * max(1, |want|) for every element. */
static void assert_close(const ad_tensor *t, const double *want, int64_t n, double tol) {
  cr_assert_not_null(t, "tensor is NULL (%s)", ad_last_error(ctx));
  cr_assert_eq(t->size, n);
  for (int64_t i = 0; i < n; i++) {
    double g = ad_tensor_get(t, i), w = want[i];
    cr_assert(test_close(g, w, tol * fmax(1.0, fabs(w))), "element %lld: got %.17g, want %.17g",
              (long long)i, g, w);
  }
}

#define OK(expr) cr_assert_eq((expr), AD_OK, "%s", ad_last_error(ctx))

/* --------------------------------------------------------- graph shapes */

Test(backward, fan_out_reuse) {
  double v[4] = {1.5, -2.0, 0.5, 3.0};
  ad_tensor *a = vec(v, 4);
  ad_tensor *b = ad_add(ctx, a, a);
  ad_tensor *c = ad_mul(ctx, b, b);
  ad_tensor *L = ad_sum(ctx, c);
  OK(ad_backward(ctx, L, NULL));
  /* c = 4a^2, dc/da = 8a */
  double want[4];
  for (int i = 0; i < 4; i++) want[i] = 8 * v[i];
  assert_close(a->grad, want, 4, 0);
  cr_assert_eq(ad_tensor_item(L), 4 * (1.5 * 1.5 + 4 + 0.25 + 9));
  ad_tensor_free(a);
}

Test(backward, deep_chain_of_100k_ops) {
  const int n = 100000;
  double v = 0.75;
  ad_tensor *x = vec(&v, 1);
  ad_tensor *y = x;
  double ref = v;
  for (int i = 0; i < n; i++) {
    if (i % 2 == 0) {
      y = ad_mul_scalar(ctx, y, 1.00002);
      ref *= 1.00002;
    } else {
      y = ad_add_scalar(ctx, y, -1e-6);
      ref += -1e-6;
    }
  }
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_tape_size(ctx), (size_t)n);
  cr_assert_eq(ad_tensor_item(y), ref);
  OK(ad_backward(ctx, y, NULL));
  /* only the 50,000 multiplications scale the gradient */
  double want = pow(1.00002, n / 2);
  cr_assert(fabs(ad_tensor_item(x->grad) - want) < 1e-9 * want, "got %.17g want %.17g",
            ad_tensor_item(x->grad), want);
  ad_tensor_free(x);
}

typedef struct visit_log {
  int calls;
  const ad_tensor *outs[16];
  int ops[16];
  double gin0[16];
} visit_log;

static void count_hook(void *ud, const ad_backward_step *st) {
  visit_log *log = ud;
  if (log->calls < 16) {
    log->outs[log->calls] = st->out;
    log->ops[log->calls] = ad_tensor_op(st->out);
    log->gin0[log->calls] = st->n > 0 && st->gin[0] ? ad_tensor_get(st->gin[0], 0) : NAN;
  }
  log->calls++;
}

Test(backward, only_ops_reaching_the_root_are_visited) {
  double va[3] = {0.1, 0.7, -1.2}, vb[3] = {2, 3, 4};
  ad_tensor *a = vec(va, 3), *b = vec(vb, 3);
  ad_tensor *side = ad_exp(ctx, ad_mul(ctx, a, b)); /* not on the root's path */
  ad_tensor *s = ad_sin(ctx, a);
  ad_tensor *root = ad_sum(ctx, s);
  ad_tensor *after = ad_cos(ctx, ad_add(ctx, root, root)); /* recorded after the root */
  cr_assert(side && after);
  cr_assert_eq(ad_tape_size(ctx), 6);
  visit_log log = {0};
  ad_set_backward_hook(ctx, count_hook, &log);
  OK(ad_backward(ctx, root, NULL));
  cr_assert_eq(log.calls, 2, "visited %d ops; only sum and sin reach the root", log.calls);
  cr_assert_eq(log.outs[0], root);
  cr_assert_eq(log.outs[1], s);
  cr_assert_eq(log.ops[0], ad_op_find(ctx, "sum"));
  cr_assert_eq(log.ops[1], ad_op_find(ctx, "sin"));
  cr_assert_eq(log.gin0[0], 1.0);                   /* d sum / d s */
  cr_assert_float_eq(log.gin0[1], cos(0.1), 1e-15); /* d sin / d a */
  cr_assert_null(b->grad, "b only feeds ops off the root's path");
  double want[3] = {cos(0.1), cos(0.7), cos(-1.2)};
  assert_close(a->grad, want, 3, 1e-15);
  /* removing the hook stops the calls and does not change the result */
  ad_set_backward_hook(ctx, NULL, NULL);
  ad_tensor_zero_grad(a);
  OK(ad_backward(ctx, root, NULL));
  cr_assert_eq(log.calls, 2);
  assert_close(a->grad, want, 3, 1e-15);
  ad_tensor_free(a);
  ad_tensor_free(b);
}

Test(backward, ops_without_grad_inputs_are_not_recorded) {
  double v[2] = {1, 2};
  ad_tensor *a = vec(v, 2);
  int64_t n = 2;
  ad_tensor *c = ad_full(ctx, AD_F64, 1, &n, 3.0); /* constant */
  ad_tensor *k = ad_exp(ctx, ad_mul(ctx, c, c));   /* constants only: not recorded */
  cr_assert_eq(ad_tape_size(ctx), 0);
  cr_assert_eq(ad_tensor_inputs(k, NULL, 0), 0);
  ad_tensor *L = ad_sum(ctx, ad_mul(ctx, a, k));
  cr_assert_eq(ad_tape_size(ctx), 2);
  ad_tensor *srcs[2];
  cr_assert_eq(ad_tensor_inputs(L, srcs, 2), 1);
  cr_assert_eq(ad_tensor_op(srcs[0]), ad_op_find(ctx, "mul"));
  cr_assert_eq(ad_tensor_inputs(srcs[0], srcs, 2), 2);
  cr_assert_eq(srcs[0], a);
  cr_assert_eq(srcs[1], k);
  OK(ad_backward(ctx, L, NULL));
  double want[2] = {exp(9.0), exp(9.0)};
  assert_close(a->grad, want, 2, 1e-15);
  cr_assert_null(c->grad);
  ad_tensor_free(a);
  ad_tensor_free(c);
}

Test(backward, retain_grad_on_intermediate) {
  double va[3] = {1, -2, 3}, vb[3] = {0.5, 4, -1};
  ad_tensor *a = vec(va, 3), *b = vec(vb, 3);
  ad_tensor *h = ad_mul(ctx, a, b);
  ad_tensor *u = ad_exp(ctx, h); /* not retained */
  OK(ad_tensor_retain_grad(h));
  ad_tensor *L = ad_sum(ctx, ad_add(ctx, ad_mul(ctx, h, h), u));
  OK(ad_backward(ctx, L, NULL));
  double wh[3], wa[3];
  for (int i = 0; i < 3; i++) {
    double hv = va[i] * vb[i];
    wh[i] = 2 * hv + exp(hv);
    wa[i] = wh[i] * vb[i];
  }
  assert_close(h->grad, wh, 3, 1e-14);
  assert_close(a->grad, wa, 3, 1e-14);
  cr_assert_null(u->grad, "an intermediate keeps no gradient unless retained");
  ad_tensor_free(a);
  ad_tensor_free(b);
}

Test(backward, grads_accumulate_and_zero_grad_resets) {
  double v[3] = {1, 2, -3};
  ad_tensor *a = vec(v, 3);
  ad_tensor *L = ad_sum(ctx, ad_mul(ctx, a, a));
  OK(ad_backward(ctx, L, NULL));
  double w1[3] = {2, 4, -6}, w2[3] = {4, 8, -12};
  assert_close(a->grad, w1, 3, 0);
  ad_tensor *g = a->grad;
  OK(ad_backward(ctx, L, NULL)); /* same graph again: += */
  assert_close(a->grad, w2, 3, 0);
  ad_tensor_zero_grad(a);
  cr_assert_null(a->grad, "zero_grad releases the gradient (PyTorch's set_to_none)");
  /* a fresh graph after a reset stores into the kept buffer */
  ad_tape_reset(ctx);
  L = ad_sum(ctx, ad_mul_scalar(ctx, a, 5.0));
  OK(ad_backward(ctx, L, NULL));
  double w5[3] = {5, 5, 5};
  assert_close(a->grad, w5, 3, 0);
  cr_assert_eq(a->grad, g, "the released buffer is reused");
  /* mul's fast path stores the first contribution and adds the second */
  ad_tensor_zero_grad(a);
  ad_tape_reset(ctx);
  L = ad_sum(ctx, ad_mul(ctx, a, a));
  OK(ad_backward(ctx, L, NULL));
  assert_close(a->grad, w1, 3, 0);
  cr_assert_eq(a->grad, g);
  /* matmul's GEMM stores a new gradient; the second use of the same weight
   * is added by the engine (the GEMM declines beta = 1) */
  int64_t s13[2] = {1, 3};
  ad_tensor *m = ad_from_data(ctx, AD_F64, 2, s13, v);
  OK(ad_tensor_set_requires_grad(m, true));
  for (int pass = 0; pass < 2; pass++) {
    ad_tensor_zero_grad(m);
    ad_tape_reset(ctx);
    L = ad_sum(ctx, ad_matmul(ctx, m, m, false, true)); /* m . m */
    OK(ad_backward(ctx, L, NULL));
    assert_close(m->grad, w1, 3, 0);
  }
  ad_tensor_free(m);
  ad_tensor_free(a);
}

/* W's gradient after backward(sum(W * W)), read as a value g by the next
 * tape (released by zero_grad first, or not): backward(sum(g * W) +
 * sum(W * K)). Returns g. */
static ad_tensor *backward_reading_the_grad(ad_tensor *W, ad_tensor *K, bool zero_first) {
  OK(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, W, W)), NULL));
  ad_tape_reset(ctx);
  ad_tensor *g = W->grad;
  if (zero_first) ad_tensor_zero_grad(W);
  ad_tensor *s1 = ad_sum(ctx, ad_mul(ctx, g, W));
  ad_tensor *s2 = ad_sum(ctx, ad_mul(ctx, W, K));
  OK(ad_backward(ctx, ad_add(ctx, s1, s2), NULL));
  return g;
}

/* g = W->grad, read by the next tape as a value: z = sum(g * W) + sum(W *
 * K), dz/dW = g + K. Released by zero_grad first (PyTorch's set_to_none),
 * W's gradient is g + K; kept, the gradient W had is added: 2 g + K (as
 * PyTorch's AccumulateGrad adds out of place while g is referenced). The
 * backward of W * K runs before the one of g * W reads g: the pass writes
 * elsewhere (a new buffer) and leaves g as the tape read it. Anomaly mode
 * takes the ordinary path, without the ops' direct writes into leaves'
 * grads. */
Test(backward, grad_read_by_the_tape_is_not_written_in_place) {
  for (int zero_first = 0; zero_first < 2; zero_first++)
    for (int anomaly = 0; anomaly < 2; anomaly++) {
      ad_set_anomaly_mode(ctx, anomaly);
      double wv[3] = {1, 2, 3}, kv[3] = {10, 20, 30}, w2[3] = {2, 4, 6};
      double want[3] = {14, 28, 42}, want0[3] = {12, 24, 36};
      ad_tensor *W = vec(wv, 3);
      int64_t n = 3;
      ad_tensor *K = ad_from_data(ctx, AD_F64, 1, &n, kv);
      size_t live = ad_ctx_live_tensors(ctx);
      ad_tensor *g = backward_reading_the_grad(W, K, zero_first);
      assert_close(W->grad, zero_first ? want0 : want, 3, 0);
      assert_close(g, w2, 3, 0);
      ad_tensor *fresh = W->grad;
      cr_assert_neq(fresh, g);
      if (!zero_first) { /* the training loop's path: after the reset the
                            backward adds into the new buffer in place */
        ad_tape_reset(ctx);
        size_t before = ad_ctx_live_tensors(ctx);
        OK(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, W, W)), NULL));
        double want2[3] = {16, 32, 48};
        assert_close(W->grad, want2, 3, 0);
        cr_assert_eq(W->grad, fresh, "a buffer the tape did not use is added into in place");
        cr_assert_eq(ad_ctx_live_tensors(ctx), before, "no new buffer");
      }
      /* g is kept for W until the next zero_grad keeps one of the two: the
       * newest, which the next step stores into */
      ad_tensor_zero_grad(W);
      ad_tape_reset(ctx);
      cr_assert_eq(ad_ctx_live_tensors(ctx), live + 1, "the replaced buffer is freed");
      OK(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, W, W)), NULL));
      assert_close(W->grad, w2, 3, 0);
      cr_assert_eq(W->grad, fresh, "the kept buffer is reused after the reset");
      ad_tensor_free(W);
      ad_tensor_free(K);
      cr_assert_eq(ad_ctx_live_tensors(ctx), live - 2, "W's buffers go with it");
    }
}

Test(backward, grad_read_by_the_tape_copy_out_of_memory_leaves_it) {
  /* the copy of W->grad that the pass adds into is refused: nothing is
   * written, and once memory comes back the same backward gives 2 g + K */
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  cr_assert_not_null(c);
  double wv[3] = {1, 2, 3}, kv[3] = {10, 20, 30};
  int64_t n = 3;
  ad_tensor *W = ad_from_data(c, AD_F64, 1, &n, wv), *K = ad_from_data(c, AD_F64, 1, &n, kv);
  cr_assert_eq(ad_tensor_set_requires_grad(W, true), AD_OK);
  cr_assert_eq(ad_backward(c, ad_sum(c, ad_mul(c, W, W)), NULL), AD_OK);
  ad_tape_reset(c);
  ad_tensor *g = W->grad;
  ad_tensor *s1 = ad_sum(c, ad_mul(c, g, W));
  ad_tensor *z = ad_add(c, s1, ad_sum(c, ad_mul(c, W, K)));
  cr_assert_not_null(z);
  test_alloc_refuse_after(&ta, 0);
  cr_assert_eq(ad_backward(c, z, NULL), AD_ERR_OOM);
  test_expect_error(c, AD_ERR_OOM, "allocating 24 bytes", NULL); /* the copy's data */
  cr_assert_eq(W->grad, g);
  for (int i = 0; i < 3; i++) cr_assert_eq(ad_tensor_get(g, i), 2.0 * (i + 1));
  test_alloc_grant_all(&ta);
  cr_assert_eq(ad_backward(c, z, NULL), AD_OK, "%s", ad_last_error(c));
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(ad_tensor_get(W->grad, i), 14.0 * (i + 1));
    cr_assert_eq(ad_tensor_get(g, i), 2.0 * (i + 1));
  }
  ad_tensor_free(W);
  ad_tensor_free(K);
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0, "%ld blocks left", ta.live);
}

Test(backward, no_grad_mode_records_nothing) {
  double v[3] = {1, 2, 3};
  ad_tensor *a = vec(v, 3);
  cr_assert(ad_grad_enabled(ctx));
  cr_assert_eq(ad_set_grad_enabled(ctx, false), true, "returns the previous setting");
  cr_assert(!ad_grad_enabled(ctx));
  ad_tensor *L = ad_sum(ctx, ad_exp(ctx, ad_mul(ctx, a, a)));
  cr_assert_not_null(L, "ops still run");
  cr_assert_float_eq(ad_tensor_item(L), exp(1) + exp(4) + exp(9), 1e-9);
  cr_assert_eq(ad_tape_size(ctx), 0);
  cr_assert_eq(ad_backward(ctx, L, NULL), AD_ERR_STATE);
  cr_assert_eq(ad_last_status(ctx), AD_ERR_STATE);
  cr_assert(strstr(ad_last_error(ctx), "backward"), "%s", ad_last_error(ctx));
  cr_assert_null(a->grad);
  ad_clear_error(ctx);
  cr_assert_eq(ad_set_grad_enabled(ctx, true), false);
  L = ad_sum(ctx, ad_exp(ctx, ad_mul(ctx, a, a)));
  cr_assert_eq(ad_tape_size(ctx), 3);
  OK(ad_backward(ctx, L, NULL));
  cr_assert_float_eq(ad_tensor_get(a->grad, 1), 4 * exp(4), 1e-9);
  ad_tensor_free(a);
}

Test(backward, vector_jacobian_product_with_seed) {
  double v[6] = {0.5, -1, 2, 0.25, 3, -0.75};
  int64_t s[2] = {2, 3};
  ad_tensor *a = leaf(AD_F64, 2, s, v);
  ad_tensor *y = ad_add(ctx, ad_mul(ctx, a, a), ad_sin(ctx, a)); /* non-scalar root */
  double sv[6] = {1, 2, -1, 0.5, 0, 3};
  ad_tensor *seed = ad_from_data(ctx, AD_F64, 2, s, sv);
  OK(ad_backward(ctx, y, seed));
  double want[6];
  for (int i = 0; i < 6; i++) want[i] = sv[i] * (2 * v[i] + cos(v[i]));
  assert_close(a->grad, want, 6, 1e-15);
  /* an arena seed works as well */
  ad_tensor_zero_grad(a);
  ad_tensor *seed2 = ad_mul_scalar(ctx, seed, 2.0);
  OK(ad_backward(ctx, y, seed2));
  for (int i = 0; i < 6; i++) want[i] *= 2;
  assert_close(a->grad, want, 6, 1e-15);
  ad_tensor_free(a);
  ad_tensor_free(seed);
}

Test(backward, grad_wrt_intermediate_and_unused_input) {
  double va[3] = {0.3, -0.6, 1.1}, vc[3] = {2, -1, 0.5};
  ad_tensor *a = vec(va, 3);
  int64_t n = 3;
  ad_tensor *c = ad_from_data(ctx, AD_F64, 1, &n, vc);
  ad_tensor *u = vec(vc, 3); /* requires grad, not used */
  ad_tensor *h = ad_tanh(ctx, a);
  ad_tensor *L = ad_sum(ctx, ad_mul(ctx, h, c));
  ad_tensor *in[3] = {h, a, u}, *out[3];
  OK(ad_grad(ctx, L, NULL, 3, in, out, false));
  assert_close(out[0], vc, 3, 0);
  double wa[3], w0[3] = {0};
  for (int i = 0; i < 3; i++) wa[i] = vc[i] * (1 - tanh(va[i]) * tanh(va[i]));
  assert_close(out[1], wa, 3, 1e-15);
  assert_close(out[2], w0, 3, 0);
  cr_assert_eq(out[2]->ndim, 1);
  cr_assert_null(a->grad, "ad_grad leaves the grad fields alone");
  cr_assert_null(h->grad);
  ad_tensor_free(a);
  ad_tensor_free(c);
  ad_tensor_free(u);
}

Test(backward, grad_with_an_input_listed_twice_fills_both_outputs) {
  /* PyTorch's autograd.grad(y, [x, x]) returns dy/dx twice */
  double vx[3] = {1, 2, 3}, w[3] = {2, 4, 6}, wh[3] = {1, 1, 1};
  ad_tensor *x = vec(vx, 3);
  ad_tensor *h = ad_square(ctx, x);
  ad_tensor *L = ad_sum(ctx, h);
  ad_tensor *in[4] = {x, h, x, h}, *out[4];
  OK(ad_grad(ctx, L, NULL, 4, in, out, false));
  assert_close(out[0], w, 3, 0);
  assert_close(out[1], wh, 3, 0);
  assert_close(out[2], w, 3, 0);
  assert_close(out[3], wh, 3, 0);
  cr_assert_null(x->grad, "ad_grad leaves the grad fields alone");
  ad_tensor_free(x);
}

/* ad_grad returned, as an input's gradient, whatever reached it: the
 * caller's persistent seed (the root itself an input; an op that passes dy
 * on, add's or a registered identity's), a view of it (reshape's), or what
 * a registered op's backward gave (its persistent input, a constant it
 * keeps). The caller, told the results are the tape's tensors to use as
 * its own, then wrote into its own tensor through the result, or freed it
 * with ad_tensor_free (x itself, with mode 2 below). Each such result is
 * now a copy; writing into every result and freeing it leaves every
 * tensor of the caller's whole. A retained gradient (ad_backward) that
 * would be a view of the seed is copied as well. */
static ad_tensor *kept_const;
static int pass_mode;
static void passon_fwd(const ad_call *c) {
  memcpy(c->out->data, c->in[0]->data, (size_t)c->out->size * sizeof(double));
}
static ad_status passon_bwd(const ad_call *c) {
  ad_tensor *g[3] = {c->gout, kept_const, c->in[0]};
  return ad_call_set_grad(c, 0, g[pass_mode]);
}

static void expect_whole(ad_tensor *t, const double *v, const char *what) {
  cr_assert(ad_tensor_is_valid(t), "%s was freed through a gradient", what);
  for (int64_t i = 0; i < t->size; i++)
    cr_assert_eq(ad_tensor_get(t, i), v[i], "%s[%lld] is %g, want %g", what, (long long)i,
                 ad_tensor_get(t, i), v[i]);
}

Test(backward, grad_results_are_the_callers_own) {
  const ad_op_def d = {.name = "pass_on",
                       .arity = 1,
                       .flags = AD_OP_ELEMENTWISE,
                       .forward = passon_fwd,
                       .backward = passon_bwd};
  int id = ad_op_register(ctx, &d);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  const double vx[3] = {1, 2, 3}, vs[3] = {7, 8, 9}, vk[3] = {5, 5, 5};
  int64_t n = 3;
  ad_tensor *x = vec(vx, 3);
  ad_tensor *seed = ad_from_data(ctx, AD_F64, 1, &n, vs);
  kept_const = ad_from_data(ctx, AD_F64, 1, &n, vk);
  cr_assert(seed && kept_const);
  for (int c = 0; c < 6; c++) {
    for (int create_graph = 0; create_graph < 2; create_graph++) {
      ad_tensor *y = NULL;
      const double *want = vs;
      if (c == 0) y = x; /* the root is the input */
      if (c == 1) y = ad_add_scalar(ctx, x, 0.0);
      if (c == 2) y = ad_reshape(ctx, x, 1, &n);
      if (c >= 3) {
        pass_mode = c - 3;
        y = ad_op_apply(ctx, id, 1, &x, NULL);
        want = c == 4 ? vk : c == 5 ? vx : vs;
      }
      ad_tensor *g = NULL;
      OK(ad_grad(ctx, y, seed, 1, &x, &g, create_graph));
      assert_close(g, want, 3, 0);
      cr_assert(g != x && g != seed && g != kept_const, "case %d: a caller's tensor returned", c);
      for (int64_t i = 0; i < 3; i++) ((double *)g->data)[i] = -1; /* the result is ours */
      ad_tensor_free(g);
      expect_whole(x, vx, "x");
      expect_whole(seed, vs, "the seed");
      expect_whole(kept_const, vk, "the op's constant");
      if (c == 5 && create_graph) { /* still differentiable: d sum(g)/dx = 1 */
        OK(ad_grad(ctx, y, seed, 1, &x, &g, true));
        ad_tensor *h = NULL;
        OK(ad_grad(ctx, ad_sum(ctx, g), NULL, 1, &x, &h, false));
        assert_close(h, (const double[]){1, 1, 1}, 3, 0);
      }
      ad_tape_reset(ctx);
    }
  }
  /* a retained intermediate whose gradient is a view of the seed */
  ad_tensor *y = ad_mul_scalar(ctx, x, 2.0);
  OK(ad_tensor_retain_grad(y));
  OK(ad_backward(ctx, ad_reshape(ctx, y, 1, &n), seed));
  assert_close(y->grad, vs, 3, 0);
  for (int64_t i = 0; i < 3; i++) ((double *)y->grad->data)[i] = -1;
  expect_whole(seed, vs, "the seed");
  ad_tape_reset(ctx);
  ad_tensor_free(seed);
  ad_tensor_free(kept_const);
  ad_tensor_free(x);
}

/* ---------------------------------------------------------- higher order */

Test(backward, hessian_vector_product_diagonal) {
  /* f(w) = sum tanh(w)^3; f' = 3t^2 (1 - t^2); f'' = (6t - 12t^3)(1 - t^2) */
  double vw[5] = {-1.4, -0.3, 0.05, 0.8, 2.1}, vv[5] = {1, -2, 0.5, 3, -1};
  ad_tensor *w = vec(vw, 5);
  int64_t n = 5;
  ad_tensor *v = ad_from_data(ctx, AD_F64, 1, &n, vv);
  ad_tensor *f = ad_sum(ctx, ad_pow_scalar(ctx, ad_tanh(ctx, w), 3.0));
  ad_tensor *g;
  OK(ad_grad(ctx, f, NULL, 1, &w, &g, true));
  double wg[5], hv[5];
  for (int i = 0; i < 5; i++) {
    double t = tanh(vw[i]);
    wg[i] = 3 * t * t * (1 - t * t);
    hv[i] = (6 * t - 12 * t * t * t) * (1 - t * t) * vv[i];
  }
  assert_close(g, wg, 5, 1e-14);
  cr_assert_null(w->grad);
  OK(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, g, v)), NULL));
  assert_close(w->grad, hv, 5, 1e-13);
  ad_tensor_free(w);
  ad_tensor_free(v);
}

Test(backward, hessian_vector_product_dense) {
  /* f(w) = (sum w^2)^2; grad = 4 |w|^2 w; H v = 8 w (w.v) + 4 |w|^2 v */
  double vw[4] = {0.5, -1, 2, 0.25}, vv[4] = {1, 0.5, -1, 2};
  ad_tensor *w = vec(vw, 4);
  int64_t n = 4;
  ad_tensor *v = ad_from_data(ctx, AD_F64, 1, &n, vv);
  ad_tensor *f = ad_square(ctx, ad_sum(ctx, ad_square(ctx, w)));
  ad_tensor *g;
  OK(ad_grad(ctx, f, NULL, 1, &w, &g, true));
  double q = 0, wv = 0, wg[4], hv[4];
  for (int i = 0; i < 4; i++) q += vw[i] * vw[i], wv += vw[i] * vv[i];
  for (int i = 0; i < 4; i++) {
    wg[i] = 4 * q * vw[i];
    hv[i] = 8 * vw[i] * wv + 4 * q * vv[i];
  }
  assert_close(g, wg, 4, 1e-14);
  ad_tensor *hvp;
  OK(ad_grad(ctx, ad_sum(ctx, ad_mul(ctx, g, v)), NULL, 1, &w, &hvp, false));
  assert_close(hvp, hv, 4, 1e-14);
  ad_tensor_free(w);
  ad_tensor_free(v);
}

typedef ad_tensor *(*unary_fn)(ad_ctx *, ad_tensor *);

static ad_tensor *pow3(ad_ctx *c, ad_tensor *x) { return ad_pow_scalar(c, x, 3.0); }
static ad_tensor *pow2(ad_ctx *c, ad_tensor *x) { return ad_pow_scalar(c, x, 2.0); }
static ad_tensor *pow25(ad_ctx *c, ad_tensor *x) { return ad_pow_scalar(c, x, 2.5); }
static ad_tensor *powm15(ad_ctx *c, ad_tensor *x) { return ad_pow_scalar(c, x, -1.5); }

static double sig(double x) { return 1 / (1 + exp(-x)); }
static double npdf(double x) { return exp(-0.5 * x * x) / sqrt(2 * 3.14159265358979323846); }
static double ncdf(double x) { return 0.5 * (1 + erf(x / sqrt(2.0))); }

static double d1(int k, double x) {
  double t = tanh(x), s = sig(x);
  switch (k) {
  case 0:
    return exp(x);
  case 1:
    return 1 / x;
  case 2:
    return cos(x);
  case 3:
    return -sin(x);
  case 4:
    return 1 - t * t;
  case 5:
    return s * (1 - s);
  case 6:
    return 0.5 / sqrt(x);
  case 7:
    return s;
  case 8:
    return ncdf(x) + x * npdf(x);
  case 9:
    return 2 * x;
  case 10:
    return 3 * x * x;
  case 11:
    return 2 * x;
  case 12:
    return 2.5 * pow(x, 1.5);
  default:
    return -1.5 * pow(x, -2.5);
  }
}

static double d2(int k, double x) {
  double t = tanh(x), s = sig(x);
  switch (k) {
  case 0:
    return exp(x);
  case 1:
    return -1 / (x * x);
  case 2:
    return -sin(x);
  case 3:
    return -cos(x);
  case 4:
    return -2 * t * (1 - t * t);
  case 5:
    return s * (1 - s) * (1 - 2 * s);
  case 6:
    return -0.25 * pow(x, -1.5);
  case 7:
    return s * (1 - s);
  case 8:
    return npdf(x) * (2 - x * x);
  case 9:
    return 2;
  case 10:
    return 6 * x;
  case 11:
    return 2;
  case 12:
    return 2.5 * 1.5 * pow(x, 0.5);
  default:
    return -1.5 * -2.5 * pow(x, -3.5);
  }
}

Test(backward, second_derivatives_of_elementwise_ops) {
  static const struct {
    const char *name;
    unary_fn f;
    bool positive; /* domain x > 0 */
  } ops[] = {
      {"exp", ad_exp, false},          {"log", ad_log, true},
      {"sin", ad_sin, false},          {"cos", ad_cos, false},
      {"tanh", ad_tanh, false},        {"sigmoid", ad_sigmoid, false},
      {"sqrt", ad_sqrt, true},         {"softplus", ad_softplus, false},
      {"gelu", ad_gelu, false},        {"square", ad_square, false},
      {"pow_scalar 3", pow3, false},   {"pow_scalar 2", pow2, false},
      {"pow_scalar 2.5", pow25, true}, {"pow_scalar -1.5", powm15, true},
  };
  static const double any[6] = {-2.3, -1.1, -0.2, 0.35, 1.2, 2.6};
  static const double pos[6] = {0.15, 0.5, 0.9, 1.3, 2.2, 4.1};
  for (int k = 0; k < (int)(sizeof ops / sizeof ops[0]); k++) {
    const double *pts = ops[k].positive ? pos : any;
    ad_tensor *x = vec(pts, 6);
    ad_tensor *y = ad_sum(ctx, ops[k].f(ctx, x));
    ad_tensor *g, *h;
    cr_assert_eq(ad_grad(ctx, y, NULL, 1, &x, &g, true), AD_OK, "%s: %s", ops[k].name,
                 ad_last_error(ctx));
    cr_assert_eq(ad_grad(ctx, ad_sum(ctx, g), NULL, 1, &x, &h, false), AD_OK, "%s: %s", ops[k].name,
                 ad_last_error(ctx));
    for (int i = 0; i < 6; i++) {
      double w1 = d1(k, pts[i]), w2 = d2(k, pts[i]);
      double g1 = ad_tensor_get(g, i), g2 = ad_tensor_get(h, i);
      cr_assert(test_close(g1, w1, 1e-12 * fmax(1, fabs(w1))), "%s'(%g) = %.17g, want %.17g",
                ops[k].name, pts[i], g1, w1);
      cr_assert(test_close(g2, w2, 1e-12 * fmax(1, fabs(w2))), "%s''(%g) = %.17g, want %.17g",
                ops[k].name, pts[i], g2, w2);
    }
    ad_tensor_free(x);
    ad_tape_reset(ctx);
  }
}

/* The op prelu at x = [NaN, -2, 3], w = [0.25], by its attr: gradients of
 * sum(y), recorded, then of s = 0.7 sum(dx) + 1.9 dw. Both give dx [0.25,
 * 0.25, 1] (w at the NaN) and a NaN dw; ad_prelu's (attr 0) documented
 * d2/dx dw = dy where x <= 0 or NaN gives ds/dx [1.9, 1.9, 0] and ds/dw
 * 1.4, nn_prelu_new's (attr 1, PyTorch's double backward) none at the NaN:
 * [0, 1.9, 0] and 0.7. */
Test(backward, prelu_cross_term_at_nan_by_attr) {
  static const double xs[3] = {NAN, -2, 3}, w0[1] = {0.25}, gx[3] = {0.25, 0.25, 1};
  static const double hx[2][3] = {{1.9, 1.9, 0}, {0, 1.9, 0}}, hw[2] = {1.4, 0.7};
  int id = ad_op_find(ctx, "prelu");
  cr_assert_geq(id, 0);
  for (int mode = 0; mode < 2; mode++) {
    ad_tensor *x = vec(xs, 3), *w = vec(w0, 1), *in[2] = {x, w}, *g[2], *h[2];
    ad_tensor *y =
        mode ? ad_op_apply(ctx, id, 2, in, &(ad_attrs){.scalar = 1}) : ad_prelu(ctx, x, w);
    OK(ad_grad(ctx, ad_sum(ctx, y), NULL, 2, in, g, true));
    assert_close(g[0], gx, 3, 0);
    cr_assert(isnan(ad_tensor_get(g[1], 0)), "mode %d: dw %g", mode, ad_tensor_get(g[1], 0));
    ad_tensor *s =
        ad_add(ctx, ad_mul_scalar(ctx, ad_sum(ctx, g[0]), 0.7), ad_mul_scalar(ctx, g[1], 1.9));
    OK(ad_grad(ctx, ad_sum(ctx, s), NULL, 2, in, h, false));
    assert_close(h[0], hx[mode], 3, 1e-15);
    assert_close(h[1], &hw[mode], 1, 1e-15);
    ad_tape_reset(ctx);
    ad_tensor_free(x);
    ad_tensor_free(w);
  }
}

/* ------------------------------------------ closed forms, teaching material */

Test(backward, sigmoid_derivative_is_s_times_one_minus_s) {
  double v[7] = {-30, -4, -1, 0, 0.5, 3, 30};
  for (int dt = 0; dt < 2; dt++) {
    int64_t n = 7;
    ad_tensor *x = leaf(dt ? AD_F64 : AD_F32, 1, &n, v);
    ad_tensor *s = ad_sigmoid(ctx, x);
    OK(ad_backward(ctx, ad_sum(ctx, s), NULL));
    for (int i = 0; i < 7; i++) {
      double sv = ad_tensor_get(s, i);
      cr_assert_float_eq(sv, sig(v[i]), dt ? 1e-15 : 1e-7);
      cr_assert_float_eq(ad_tensor_get(x->grad, i), sv * (1 - sv), dt ? 1e-15 : 1e-7, "x = %g",
                         v[i]);
    }
    cr_assert_eq(ad_tensor_get(x->grad, 3), 0.25);
    ad_tensor_free(x);
  }
}

Test(backward, softmax_cross_entropy_gradient) {
  double z[12] = {0.2, -1.0, 3.0, 0.5, 1.5, 1.5, -0.5, 0.0, -2.0, 4.0, 1.0, 100.0};
  int32_t t[3] = {2, 0, 3};
  int64_t s[2] = {3, 4}, n = 3;
  ad_tensor *logits = leaf(AD_F64, 2, s, z);
  ad_tensor *labels = ad_from_data(ctx, AD_I32, 1, &n, t);
  ad_tensor *L = ad_softmax_cross_entropy(ctx, logits, labels);
  cr_assert_not_null(L, "%s", ad_last_error(ctx));
  cr_assert_eq(L->ndim, 0);
  OK(ad_backward(ctx, L, NULL));
  double loss = 0, want[12];
  for (int r = 0; r < 3; r++) {
    double m = -INFINITY, se = 0;
    for (int c = 0; c < 4; c++) m = fmax(m, z[r * 4 + c]);
    for (int c = 0; c < 4; c++) se += exp(z[r * 4 + c] - m);
    loss += m + log(se) - z[r * 4 + t[r]];
    for (int c = 0; c < 4; c++) want[r * 4 + c] = (exp(z[r * 4 + c] - m) / se - (c == t[r])) / 3.0;
  }
  cr_assert_float_eq(ad_tensor_item(L), loss / 3, 1e-13);
  assert_close(logits->grad, want, 12, 1e-15);
  /* the fused op agrees with its composite -mean(sum(onehot * log_softmax)) */
  ad_tensor *in[1] = {logits}, *out[1];
  double oh[12] = {0};
  for (int r = 0; r < 3; r++) oh[r * 4 + t[r]] = 1;
  ad_tensor *onehot = ad_from_data(ctx, AD_F64, 2, s, oh);
  ad_tensor *comp =
      ad_neg(ctx, ad_mean(ctx, ad_sum_axis(ctx, ad_mul(ctx, onehot, ad_log_softmax(ctx, logits, 1)),
                                           1, false)));
  cr_assert_float_eq(ad_tensor_item(comp), loss / 3, 1e-13);
  OK(ad_grad(ctx, comp, NULL, 1, in, out, false));
  assert_close(out[0], want, 12, 1e-15);
  ad_tensor_free(logits);
  ad_tensor_free(labels);
  ad_tensor_free(onehot);
}

/* A confident prediction's loss is tiny next to its logits: PyTorch's
 * (max - z[t]) + log(sum exp(z - max)) keeps it (log(1 + e^-35), 6.7e-16
 * after the sum's rounding), where (max + log(...)) - z[t] rounds it away
 * to 0 at max's precision; and for huge equal logits the loss is still
 * log 2, not 0. Both as softmax_cross_entropy (f64 and f32, the f32 row
 * kernel too) and as log_softmax, which PyTorch computes the same way. */
Test(backward, cross_entropy_and_log_softmax_keep_a_tiny_loss) {
  double z[4] = {35, 0, 1e308, 1e308};
  int32_t t[2] = {0, 1};
  int64_t s[2] = {1, 2}, n = 1;
  double tiny = log(1.0 + exp(-35.0)); /* the sum 1 + 6.3e-16 rounds to 1 + 3 ulp */
  ad_tensor *lab0 = ad_from_data(ctx, AD_I32, 1, &n, t);
  ad_tensor *lab1 = ad_from_data(ctx, AD_I32, 1, &n, t + 1);
  ad_tensor *a = ad_from_data(ctx, AD_F64, 2, s, z);
  for (int f32 = 0; f32 < 2; f32++) {
    ad_dtype dt = f32 ? AD_F32 : AD_F64;
    ad_tensor *conf = ad_zeros(ctx, dt, 2, s);
    ad_tensor_copy_data(conf, a);
    ad_tensor *L = ad_softmax_cross_entropy(ctx, conf, lab0);
    cr_assert_not_null(L, "%s", ad_last_error(ctx));
    cr_assert_float_eq(ad_tensor_item(L), tiny, tiny * 1e-6, "%s loss %g, want %g",
                       ad_dtype_name(dt), ad_tensor_item(L), tiny);
    ad_tensor *ls = ad_log_softmax(ctx, conf, 1);
    cr_assert_not_null(ls, "%s", ad_last_error(ctx));
    cr_assert_float_eq(ad_tensor_get(ls, 0), -tiny, tiny * 1e-6, "%s log_softmax %g, want %g",
                       ad_dtype_name(dt), ad_tensor_get(ls, 0), -tiny);
    ad_tensor_free(conf);
  }
  ad_tensor *big = ad_from_data(ctx, AD_F64, 2, s, z + 2);
  ad_tensor *L = ad_softmax_cross_entropy(ctx, big, lab1);
  cr_assert_not_null(L, "%s", ad_last_error(ctx));
  cr_assert_float_eq(ad_tensor_item(L), log(2.0), 1e-15, "loss %g", ad_tensor_item(L));
  cr_assert_float_eq(ad_tensor_get(ad_log_softmax(ctx, big, 1), 1), -log(2.0), 1e-15);
  ad_tensor_free(a), ad_tensor_free(big), ad_tensor_free(lab0), ad_tensor_free(lab1);
}

Test(backward, mse_derivative) {
  double y[5] = {0.5, -1, 2, 3.5, 0}, t[5] = {1, -1, 0, 4, -2};
  ad_tensor *yt = vec(y, 5);
  int64_t n = 5;
  ad_tensor *tt = ad_from_data(ctx, AD_F64, 1, &n, t);
  ad_tensor *L = ad_mean(ctx, ad_square(ctx, ad_sub(ctx, yt, tt)));
  OK(ad_backward(ctx, L, NULL));
  double want[5], loss = 0;
  for (int i = 0; i < 5; i++) {
    want[i] = 2 * (y[i] - t[i]) / 5;
    loss += (y[i] - t[i]) * (y[i] - t[i]) / 5;
  }
  cr_assert_float_eq(ad_tensor_item(L), loss, 1e-15);
  assert_close(yt->grad, want, 5, 1e-15);
  /* the same through pow_scalar in f32 */
  ad_tensor *y32 = leaf(AD_F32, 1, &n, y);
  ad_tensor *t32 = ad_zeros(ctx, AD_F32, 1, &n);
  ad_tensor_copy_data(t32, tt);
  OK(ad_backward(ctx, ad_mean(ctx, ad_pow_scalar(ctx, ad_sub(ctx, y32, t32), 2.0)), NULL));
  assert_close(y32->grad, want, 5, 1e-7);
  ad_tensor_free(yt);
  ad_tensor_free(tt);
  ad_tensor_free(y32);
  ad_tensor_free(t32);
}

Test(backward, broadcast_gradients_are_summed_into_smaller_input) {
  double va[12], vw[12], vb[4] = {1, 2, 3, 4}, vc[3] = {-1, 0, 1};
  for (int i = 0; i < 12; i++) va[i] = 0.1 * i, vw[i] = (i % 5) - 2.0;
  int64_t s[2] = {3, 4}, sc[2] = {3, 1}, sr[2] = {1, 4}, nb = 4;
  ad_tensor *a = leaf(AD_F64, 2, s, va);
  ad_tensor *b = vec(vb, nb);                 /* [4] against [3,4] */
  ad_tensor *col = leaf(AD_F64, 2, sc, vc);   /* [3,1] */
  ad_tensor *row = leaf(AD_F64, 2, sr, vb);   /* [1,4] */
  ad_tensor *sca = leaf(AD_F64, 0, NULL, vc); /* 0-d */
  ad_tensor *w = ad_from_data(ctx, AD_F64, 2, s, vw);
  ad_tensor *y = ad_add(ctx, ad_add(ctx, ad_add(ctx, a, b), ad_add(ctx, col, row)), sca);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->ndim, 2);
  OK(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, y, w)), NULL));
  double wb[4] = {0}, wc[3] = {0}, ws = 0;
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++) {
      wb[j] += vw[i * 4 + j];
      wc[i] += vw[i * 4 + j];
      ws += vw[i * 4 + j];
    }
  assert_close(a->grad, vw, 12, 0);
  assert_close(b->grad, wb, 4, 0);
  cr_assert_eq(b->grad->ndim, 1);
  assert_close(col->grad, wc, 3, 0);
  cr_assert_eq(col->grad->shape[0], 3);
  cr_assert_eq(col->grad->shape[1], 1);
  assert_close(row->grad, wb, 4, 0);
  assert_close(sca->grad, &ws, 1, 0);
  cr_assert_eq(sca->grad->ndim, 0);
  ad_tensor_free(a);
  ad_tensor_free(b);
  ad_tensor_free(col);
  ad_tensor_free(row);
  ad_tensor_free(sca);
  ad_tensor_free(w);
}

/* --------------------------------------------------------- tape lifetime */

Test(backward, reset_tape_invalidates_old_root) {
  double v[2] = {1, 2};
  ad_tensor *a = vec(v, 2);
  ad_tensor *L = ad_sum(ctx, ad_exp(ctx, a));
  cr_assert_gt(ad_tape_size(ctx), 0);
  ad_tape_reset(ctx);
  cr_assert_eq(ad_tape_size(ctx), 0);
  cr_assert_eq(ad_arena_used(ctx), 0);
  cr_assert_eq(ad_backward(ctx, L, NULL), AD_ERR_STATE);
  cr_assert(strstr(ad_last_error(ctx), "reset"), "%s", ad_last_error(ctx));
  cr_assert_null(a->grad);
  ad_tensor *out;
  ad_clear_error(ctx);
  cr_assert_eq(ad_grad(ctx, L, NULL, 1, &a, &out, false), AD_ERR_STATE);
  ad_tensor_free(a);
}

/* --------------------------------------------- steady state of training */

typedef struct mlp {
  ad_tensor *x, *labels, *w1, *b1, *w2, *b2;
} mlp;

/* One training step: forward, backward, SGD, zero_grad, reset. */
static double train_step(ad_ctx *c, mlp *m, double lr) {
  ad_tensor *h = ad_tanh(c, ad_add(c, ad_matmul(c, m->x, m->w1, false, false), m->b1));
  ad_tensor *logits = ad_add(c, ad_matmul(c, h, m->w2, false, false), m->b2);
  ad_tensor *loss = ad_softmax_cross_entropy(c, logits, m->labels);
  cr_assert_not_null(loss, "%s", ad_last_error(c));
  double value = ad_tensor_item(loss);
  cr_assert_eq(ad_backward(c, loss, NULL), AD_OK, "%s", ad_last_error(c));
  ad_tensor *params[4] = {m->w1, m->b1, m->w2, m->b2};
  for (int k = 0; k < 4; k++) {
    float *p = params[k]->data;
    const float *g = params[k]->grad->data;
    for (int64_t i = 0; i < params[k]->size; i++) p[i] -= (float)lr * g[i];
    ad_tensor_zero_grad(params[k]);
  }
  ad_tape_reset(c);
  return value;
}

Test(backward, training_loop_reaches_allocation_free_steady_state) {
  test_alloc ca = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ca);
  cr_assert_not_null(c);
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  /* big enough that one step outgrows the arena's first chunk */
  int64_t sx[2] = {256, 64}, s1[2] = {64, 256}, n1 = 256, s2[2] = {256, 10}, n2 = 10;
  mlp m;
  m.x = ad_randn(c, &rng, AD_F32, 2, sx, 0, 1);
  m.labels = ad_zeros(c, AD_I32, 1, &sx[0]);
  for (int64_t i = 0; i < 256; i++) ((int32_t *)m.labels->data)[i] = (int32_t)(i % 10);
  m.w1 = ad_randn(c, &rng, AD_F32, 2, s1, 0, 0.125);
  m.b1 = ad_zeros(c, AD_F32, 1, &n1);
  m.w2 = ad_randn(c, &rng, AD_F32, 2, s2, 0, 0.0625);
  m.b2 = ad_zeros(c, AD_F32, 1, &n2);
  ad_tensor *params[4] = {m.w1, m.b1, m.w2, m.b2};
  for (int k = 0; k < 4; k++) cr_assert_eq(ad_tensor_set_requires_grad(params[k], true), AD_OK);

  double first = train_step(c, &m, 0.5);
  long after1 = ca.calls;
  train_step(c, &m, 0.5);
  train_step(c, &m, 0.5);
  cr_assert_gt(ad_arena_capacity(c), (size_t)1 << 20, "the step spans more than 1 MiB");
  long warm = ca.calls;
  size_t cap = ad_arena_capacity(c);
  double last = first;
  for (int step = 0; step < 50; step++) {
    last = train_step(c, &m, 0.5);
    cr_assert_eq(ca.calls, warm, "step %d made %ld allocator calls", step + 4, ca.calls - warm);
    cr_assert_eq(ad_arena_capacity(c), cap, "step %d changed the arena capacity", step + 4);
  }
  cr_assert_gt(after1, 0);
  cr_assert_lt(last, 0.7 * first, "training makes progress: %g -> %g", first, last);
  for (int k = 0; k < 4; k++) ad_tensor_free(params[k]);
  ad_tensor_free(m.x);
  ad_tensor_free(m.labels);
  ad_ctx_free(c);
  cr_assert_eq(ca.live, 0, "%ld blocks leaked", ca.live);
}

/* What a hook saw of a mul node: each input's contribution, read from gin
 * or, when the op stored it straight into the grad, from the grad. */
typedef struct mul_view {
  int seen, ww; /* mul nodes seen; w * w nodes seen */
  double got[2][3];
} mul_view;

static void mul_hook(void *ud, const ad_backward_step *st) {
  mul_view *v = ud;
  if (ad_tensor_op(st->out) != ad_op_find(ad_tensor_ctx(st->out), "mul")) return;
  v->seen++;
  if (st->in[0] != st->in[1] || v->ww++) return; /* keep the first w * w's: a new grad */
  for (int k = 0; k < 2; k++) {
    const ad_tensor *c = st->gin[k] ? st->gin[k] : st->direct[k] ? st->in[k]->grad : NULL;
    for (int i = 0; i < 3; i++) v->got[k][i] = c ? ad_tensor_get(c, i) : NAN;
  }
}

/* The fast paths give the bits of the ordinary path, with and without a
 * hook, for a new gradient and for adding to one; and a hook reads each
 * input's own contribution even when one leaf is both inputs (w * w). */
Test(backward, fast_paths_same_bits_with_and_without_hook) {
  double v[3] = {0.1, -0.7, 1.3}, s[3] = {0.3, 0.6, -0.9};
  ad_tensor *w[2], *c = vec(s, 3);
  for (int h = 0; h < 2; h++) {
    w[h] = vec(v, 3);
    mul_view view = {0};
    if (h) ad_set_backward_hook(ctx, mul_hook, &view);
    for (int pass = 0; pass < 3; pass++) { /* a new grad, then two adds */
      ad_tape_reset(ctx);
      ad_tensor *L = ad_sum(ctx, ad_add(ctx, ad_mul(ctx, w[h], w[h]), ad_mul(ctx, w[h], c)));
      OK(ad_backward(ctx, L, NULL));
    }
    ad_set_backward_hook(ctx, NULL, NULL);
    if (h) {
      cr_assert_eq(view.seen, 6);
      for (int i = 0; i < 3; i++) /* w * w sends dy * w to each side, dy = 1 */
        cr_assert(view.got[0][i] == v[i] && view.got[1][i] == v[i], "input %d: %g %g, want %g", i,
                  view.got[0][i], view.got[1][i], v[i]);
    }
  }
  cr_assert(memcmp(w[0]->grad->data, w[1]->grad->data, 3 * sizeof(double)) == 0,
            "gradients differ with and without a hook");
  double want[3];
  for (int i = 0; i < 3; i++) want[i] = 3 * (2 * v[i] + s[i]);
  assert_close(w[0]->grad, want, 3, 1e-15);
  ad_tensor_free(w[0]);
  ad_tensor_free(w[1]);
  ad_tensor_free(c);
}

static void quiet_hook(void *ud, const ad_backward_step *st) {
  (void)st;
  ++*(int *)ud;
}

/* The first contribution to an intermediate shaped like its op's output
 * is stored into a new accumulator by the op's grad_into (mul, tanh,
 * sigmoid, relu) when no hook looks: the same bits as the ordinary path,
 * which a hook forces, in both dtypes, for a scalar, a small tensor and
 * one large enough for the threads; with an intermediate that is both
 * inputs of its only consumer (v * v: the first served, the second added),
 * one used twice after another consumer (u * u), a retained one, a
 * broadcast mul (declined: the backward runs) and a second contribution to
 * an intermediate (the ordinary add). */
Test(backward, intermediate_fast_paths_same_bits_as_the_ordinary_path) {
  const int64_t sizes[3] = {1, 7, 100003};
  OK(ad_set_num_threads(2));
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    for (int si = 0; si < 3; si++) {
      int64_t n = sizes[si], one = 1;
      ad_rng rng;
      OK(ad_rng_seed(&rng, 42 + (uint64_t)si));
      ad_tensor *x = ad_rand(ctx, &rng, dt, 1, &n, -2, 2),
                *w = ad_rand(ctx, &rng, dt, 1, &n, -1, 1),
                *b = ad_rand(ctx, &rng, dt, 1, &one, -1, 1);
      cr_assert(x && w && b);
      OK(ad_tensor_set_requires_grad(x, true));
      OK(ad_tensor_set_requires_grad(w, true));
      OK(ad_tensor_set_requires_grad(b, true));
      ad_tensor *got[2][4]; /* [hook][x, w, b grads, the retained h's grad] */
      for (int h = 0; h < 2; h++) {
        int calls = 0;
        ad_tape_reset(ctx);
        ad_tensor_zero_grad(x);
        ad_tensor_zero_grad(w);
        ad_tensor_zero_grad(b);
        if (h) ad_set_backward_hook(ctx, quiet_hook, &calls);
        ad_tensor *u = ad_tanh(ctx, ad_mul(ctx, x, w));     /* mul of two leaves, tanh */
        ad_tensor *hh = ad_sigmoid(ctx, ad_mul(ctx, u, u)); /* u used twice */
        OK(ad_tensor_retain_grad(hh));
        ad_tensor *r = ad_relu(ctx, ad_mul(ctx, hh, b));            /* broadcast: declined */
        ad_tensor *s = ad_add(ctx, ad_mul(ctx, r, x), u);           /* u's second contribution */
        ad_tensor *v = ad_sigmoid(ctx, x), *vv = ad_mul(ctx, v, v); /* v's only use: v * v */
        s = ad_add(ctx, s, vv);
        OK(ad_backward(ctx, ad_sum(ctx, s), NULL));
        ad_set_backward_hook(ctx, NULL, NULL);
        cr_assert_eq(calls > 0, h == 1);
        got[h][0] = ad_tensor_clone(ctx, x->grad);
        got[h][1] = ad_tensor_clone(ctx, w->grad);
        got[h][2] = ad_tensor_clone(ctx, b->grad);
        got[h][3] = ad_tensor_clone(ctx, hh->grad);
      }
      size_t es = dt == AD_F64 ? 8 : 4;
      for (int k = 0; k < 4; k++) {
        cr_assert(got[0][k] && got[1][k]);
        cr_assert(memcmp(got[0][k]->data, got[1][k]->data, (size_t)got[0][k]->size * es) == 0,
                  "%s, size %lld: gradient %d differs from the ordinary path's", ad_dtype_name(dt),
                  (long long)n, k);
        ad_tensor_free(got[0][k]);
        ad_tensor_free(got[1][k]);
      }
      if (n == 1) { /* and the values, by hand */
        double xv = ad_tensor_item(x), wv = ad_tensor_item(w), bv = ad_tensor_item(b);
        double uv = tanh(xv * wv), hv = 1 / (1 + exp(-uv * uv)), pre = hv * bv;
        double dr = pre > 0 ? xv : 0, dh = dr * bv, du = 1 + dh * hv * (1 - hv) * 2 * uv;
        double sv = 1 / (1 + exp(-xv)); /* and v * v, v = sigmoid(x) */
        double dx = (pre > 0 ? pre : 0) + du * (1 - uv * uv) * wv + 2 * sv * sv * (1 - sv);
        double tol = dt == AD_F64 ? 1e-12 : 1e-5;
        assert_close(x->grad, &dx, 1, tol);
      }
      ad_tensor_free(x);
      ad_tensor_free(w);
      ad_tensor_free(b);
    }
  }
  OK(ad_set_num_threads(1));
}

/* logsigmoid's second derivative, -sigmoid(x) sigmoid(-x), keeps its
 * relative accuracy on both sides: it came out 0 at x = -40 in float64
 * (and -20 in float32), as -s (1 - s) with s = sigmoid(-x) rounded to 1;
 * PyTorch's (z - 1) z with z = sigmoid(x) loses the other side. */
Test(backward, logsigmoid_second_derivative_on_both_sides) {
  static const double xs[7] = {-40, -20, -1, 0, 1.5, 20, 40};
  const int64_t n = 7;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F32 : AD_F64;
    ad_tensor *x = ad_from_data(ctx, AD_F64, 1, &n, xs), *one = ad_full(ctx, dt, 1, &n, 1.0);
    cr_assert(x && one);
    if (dt == AD_F32) {
      ad_tensor *xf = ad_full(ctx, AD_F32, 1, &n, 0);
      for (int64_t i = 0; i < n; i++) ad_tensor_set(xf, i, xs[i]);
      ad_tensor_free(x), x = xf;
    }
    OK(ad_tensor_set_requires_grad(x, true));
    ad_tensor *g1, *g2;
    OK(ad_grad(ctx, ad_logsigmoid(ctx, x), one, 1, &x, &g1, true));
    OK(ad_grad(ctx, g1, one, 1, &x, &g2, false));
    for (int64_t i = 0; i < n; i++) {
      double v = (double)(dt == AD_F32 ? (float)xs[i] : xs[i]);
      double want = -1 / ((1 + exp(-v)) * (1 + exp(v))), got = ad_tensor_get(g2, i);
      cr_assert_leq(fabs(got - want), fabs(want) * (d ? 4e-7 : 4e-16),
                    "%s x = %g: %.17g, want %.17g", ad_dtype_name(dt), v, got, want);
    }
    ad_tape_reset(ctx);
    ad_tensor_free(x), ad_tensor_free(one);
  }
}

/* The activations whose gradient of a leaf is their backward kernel run
 * straight into the leaf's grad buffer (grad_into): the backward puts no
 * tensor of x's size in the arena, where the ordinary path makes the
 * backward op's result and then copies it into the grad (a third of
 * logsigmoid's backward in bench/layerscan, two fifths of threshold's). */
Test(backward, activation_gradients_of_a_leaf_take_no_arena) {
  static const char *const names[] = {"relu", "logsigmoid", "threshold", "hardswish"};
  const int64_t n = 4096;
  ad_rng rng;
  OK(ad_rng_seed(&rng, 7));
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 1, &n, -2, 2);
  ad_tensor *seed = ad_full(ctx, AD_F32, 1, &n, 1.0);
  cr_assert(x && seed);
  OK(ad_tensor_set_requires_grad(x, true));
  for (int k = 0; k < 4; k++) {
    for (int pass = 0; pass < 2; pass++) { /* the second reuses the kept grad buffer */
      ad_tape_reset(ctx);
      ad_tensor_zero_grad(x);
      ad_tensor *y = k == 0   ? ad_relu(ctx, x)
                     : k == 1 ? ad_logsigmoid(ctx, x)
                     : k == 2 ? ad_threshold(ctx, x, 0.25, -3.0)
                              : ad_hardswish(ctx, x);
      cr_assert_not_null(y, "%s", ad_last_error(ctx));
      size_t before = ad_arena_used(ctx);
      OK(ad_backward(ctx, y, seed));
      size_t grew = ad_arena_used(ctx) - before;
      cr_assert_lt(grew, (size_t)n * sizeof(float), "%s: the backward took %zu arena bytes",
                   names[k], grew);
      for (int64_t i = 0; i < n; i += 511) { /* and the gradient it wrote */
        double xv = ad_tensor_get(x, i);
        double want = k == 0   ? (xv > 0)
                      : k == 1 ? 1 / (1 + exp(xv))
                      : k == 2 ? (xv > (double)0.25f)
                               : xv / 3 + 0.5; /* hardswish on (-3, 3) */
        cr_assert_float_eq(ad_tensor_get(x->grad, i), want, 1e-6, "%s'(%g)", names[k], xv);
      }
    }
  }
  ad_tape_reset(ctx);
  ad_tensor_free(seed);
  ad_tensor_free(x);
}

/* A grad_into that declines (mul with a broadcast operand) gives back the
 * accumulator it was offered: the pass uses the arena the ordinary path
 * uses, measured against the same pass with a hook (which never offers). */
Test(backward, declined_intermediate_fast_path_takes_no_arena) {
  int64_t n = 4096, one = 1;
  ad_rng rng;
  OK(ad_rng_seed(&rng, 5));
  ad_tensor *p = ad_rand(ctx, &rng, AD_F32, 1, &n, -1, 1),
            *sc = ad_rand(ctx, &rng, AD_F32, 1, &one, 1, 2);
  OK(ad_tensor_set_requires_grad(p, true));
  OK(ad_tensor_set_requires_grad(sc, true));
  size_t used[2];
  for (int h = 0; h < 2; h++) {
    int calls = 0;
    ad_tape_reset(ctx);
    ad_tensor_zero_grad(p);
    ad_tensor_zero_grad(sc);
    if (h) ad_set_backward_hook(ctx, quiet_hook, &calls);
    ad_tensor *y = ad_mul(ctx, ad_tanh(ctx, p), sc); /* tanh(p) broadcast by sc: declined */
    size_t before = ad_arena_used(ctx);
    OK(ad_backward(ctx, ad_sum(ctx, y), NULL));
    used[h] = ad_arena_used(ctx) - before;
    ad_set_backward_hook(ctx, NULL, NULL);
  }
  cr_assert_eq(used[0], used[1], "backward took %zu bytes of arena, %zu with the ordinary path",
               used[0], used[1]);
  ad_tensor_free(p);
  ad_tensor_free(sc);
}

/* One random graph of ops on [6]-vectors, built from rng: chains, fan-out,
 * pass-throughs (add, sub, a reshape there and back, which makes views), an
 * op whose two inputs are one tensor, a leaf without a gradient, retained
 * intermediates (up to 8, returned in kept). Returns the loss. */
static ad_tensor *random_graph(ad_rng *rng, ad_tensor *const *leaves, int nleaves, ad_tensor **kept,
                               int *nkept) {
  ad_tensor *pool[64];
  int np = 0;
  for (int i = 0; i < nleaves; i++) pool[np++] = leaves[i];
  int nops = 4 + (int)ad_rng_below(rng, 40);
  *nkept = 0;
  for (int o = 0; o < nops && np < 64; o++) {
    /* mostly one of the last few made (chains), at times any */
    int recent = np < 3 ? np : 3;
    ad_tensor *p = ad_rng_below(rng, 4) ? pool[np - 1 - (int)ad_rng_below(rng, (uint64_t)recent)]
                                        : pool[ad_rng_below(rng, (uint64_t)np)];
    ad_tensor *q = pool[ad_rng_below(rng, (uint64_t)np)], *y = NULL;
    int64_t mat[2] = {2, 3}, flat = 6;
    switch (ad_rng_below(rng, 10)) {
    case 0:
      y = ad_tanh(ctx, p);
      break;
    case 1:
      y = ad_sigmoid(ctx, p);
      break;
    case 2:
      y = ad_relu(ctx, p);
      break;
    case 3:
      y = ad_add(ctx, p, q);
      break;
    case 4:
      y = ad_mul(ctx, p, q);
      break;
    case 5:
      y = ad_sub(ctx, p, q);
      break;
    case 6:
      y = ad_reshape(ctx, ad_reshape(ctx, p, 2, mat), 1, &flat);
      break;
    case 7:
      y = ad_rng_below(rng, 2) ? ad_mul(ctx, p, p) : ad_add(ctx, p, p);
      break;
    case 8:
      y = ad_neg(ctx, p);
      break;
    default:
      y = ad_mul(ctx, ad_tanh(ctx, p), q);
      break;
    }
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    pool[np++] = y;
    if (*nkept < 8 && ad_rng_below(rng, 8) == 0 && ad_tensor_op(y) >= 0) {
      OK(ad_tensor_retain_grad(y));
      kept[(*nkept)++] = y;
    }
  }
  ad_tensor *s = ad_add(ctx, pool[np - 1], ad_tanh(ctx, leaves[0])); /* needs a gradient */
  for (int k = 1 + (int)ad_rng_below(rng, 3); k > 0; k--)
    s = ad_add(ctx, s, ad_tanh(ctx, pool[ad_rng_below(rng, (uint64_t)np)]));
  return ad_sum(ctx, s);
}

/* The sweep reuses an accumulator that grad_into made once its node's
 * backward is done and nothing else holds it (also after a pass-through
 * such as add's hands it to a single input): 300 random graphs (two dtypes)
 * give the bits of the ordinary path, which a hook forces, for every
 * leaf's and retained intermediate's gradient. A reuse of a gradient that
 * another node still holds (add sending one to both inputs, a reshape's
 * view of it, x + x) would change them. */
Test(backward, reused_accumulators_same_bits_as_the_ordinary_path) {
  int64_t n = 6;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    size_t es = d ? 8 : 4;
    for (uint64_t gi = 0; gi < 150; gi++) {
      ad_rng rng;
      OK(ad_rng_seed(&rng, 1000 + gi));
      ad_tensor *leaves[4];
      for (int i = 0; i < 4; i++) {
        leaves[i] = ad_rand(ctx, &rng, dt, 1, &n, -1.5, 1.5);
        cr_assert_not_null(leaves[i]);
        if (i < 3) OK(ad_tensor_set_requires_grad(leaves[i], true)); /* the 4th: a constant */
      }
      ad_tensor *got[2][11];
      int nkept[2];
      for (int h = 0; h < 2; h++) {
        int calls = 0;
        ad_rng g = rng; /* the same graph twice */
        ad_tape_reset(ctx);
        for (int i = 0; i < 3; i++) ad_tensor_zero_grad(leaves[i]);
        ad_tensor *kept[8];
        ad_tensor *L = random_graph(&g, leaves, 4, kept, &nkept[h]);
        if (h) ad_set_backward_hook(ctx, quiet_hook, &calls);
        OK(ad_backward(ctx, L, NULL));
        ad_set_backward_hook(ctx, NULL, NULL);
        for (int i = 0; i < 3; i++)
          got[h][i] = leaves[i]->grad ? ad_tensor_clone(ctx, leaves[i]->grad) : NULL;
        for (int i = 0; i < nkept[h]; i++)
          got[h][3 + i] = kept[i]->grad ? ad_tensor_clone(ctx, kept[i]->grad) : NULL;
      }
      cr_assert_eq(nkept[0], nkept[1]);
      for (int k = 0; k < 3 + nkept[0]; k++) {
        cr_assert_eq(got[0][k] == NULL, got[1][k] == NULL, "graph %llu: gradient %d",
                     (unsigned long long)gi, k);
        if (got[0][k])
          cr_assert(memcmp(got[0][k]->data, got[1][k]->data, (size_t)n * es) == 0,
                    "%s, graph %llu: gradient %d differs from the ordinary path's",
                    ad_dtype_name(dt), (unsigned long long)gi, k);
        ad_tensor_free(got[0][k]);
        ad_tensor_free(got[1][k]);
      }
      ad_tape_reset(ctx);
      for (int i = 0; i < 4; i++) ad_tensor_free(leaves[i]);
    }
  }
}

/* A chain's backward takes no arena per op: each node's accumulator is
 * reused for the next first contribution (the pass-through of add
 * included), where it took a block per op before. */
Test(backward, chain_backward_reuses_its_accumulators) {
  double one = 0.5;
  ad_tensor *x0 = vec(&one, 1), *a = vec(&one, 1), *b = vec(&one, 1);
  for (int len = 300; len <= 3000; len *= 10) {
    ad_tape_reset(ctx);
    ad_tensor *x = x0;
    for (int k = 0; k < len; k++) x = ad_tanh(ctx, ad_add(ctx, ad_mul(ctx, x, a), b));
    size_t before = ad_arena_used(ctx);
    OK(ad_backward(ctx, ad_sum(ctx, x), NULL));
    size_t used = ad_arena_used(ctx) - before;
    cr_assert(used <= 2048, "a chain of %d ops took %zu bytes of arena in backward", 3 * len, used);
  }
  ad_tensor_free(x0);
  ad_tensor_free(a);
  ad_tensor_free(b);
}

static void noop_fwd(const ad_call *c) { (void)c; }

/* AD_OP_GRAD_INTO_TEMPS promises a grad_into: a definition without one is
 * refused, naming the op. */
Test(backward, grad_into_temps_flag_needs_a_grad_into) {
  ad_op_def d = {.name = "no_into",
                 .arity = 1,
                 .flags = AD_OP_ELEMENTWISE | AD_OP_GRAD_INTO_TEMPS,
                 .forward = noop_fwd};
  cr_assert_eq(ad_op_register(ctx, &d), -1);
  cr_assert(strstr(ad_last_error(ctx), "no_into") && strstr(ad_last_error(ctx), "grad_into"), "%s",
            ad_last_error(ctx));
}

/* A seed that is a leaf's own gradient buffer: the pass stores w's
 * gradient into that buffer while x's step still reads the seed. It wrote
 * into the seed (x's gradient came out of the seed's new values); the seed
 * is now stamped as used, so w's store forks the buffer, and x.grad is
 * seed * w, as PyTorch gives, with or without zero_grad. */
Test(backward, a_seed_that_is_a_leafs_gradient_is_not_overwritten) {
  int64_t s[1] = {3};
  for (int zero = 0; zero < 2; zero++) {
    ad_tensor *w = ad_from_data(ctx, AD_F64, 1, s, (const double[]){1, 2, 3});
    ad_tensor *x = ad_from_data(ctx, AD_F64, 1, s, (const double[]){10, 20, 30});
    ad_tensor_set_requires_grad(w, true), ad_tensor_set_requires_grad(x, true);
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, w), NULL), AD_OK, "%s", ad_last_error(ctx));
    ad_tensor *g = w->grad;
    for (int64_t i = 0; i < 3; i++) ad_tensor_set(g, i, (double)(i + 1));
    if (zero) ad_tensor_zero_grad(w);
    cr_assert_eq(ad_backward(ctx, ad_mul(ctx, w, x), g), AD_OK, "%s", ad_last_error(ctx));
    for (int64_t i = 0; i < 3; i++) { /* seed (i + 1) times w (i + 1); w's adds seed x */
      double want = (double)((i + 1) * (i + 1)), ww = (double)(i + 1) * (10.0 * (double)(i + 1));
      cr_assert_eq(ad_tensor_get(x->grad, i), want, "zero %d: x.grad[%lld] %g", zero, (long long)i,
                   ad_tensor_get(x->grad, i));
      cr_assert_eq(ad_tensor_get(w->grad, i), ww + (zero ? 0.0 : (double)(i + 1)),
                   "zero %d: w.grad[%lld] %g", zero, (long long)i, ad_tensor_get(w->grad, i));
      cr_assert_eq(ad_tensor_get(g, i), (double)(i + 1), "the seed changed");
    }
    ad_tape_reset(ctx);
    ad_tensor_free(w), ad_tensor_free(x);
  }
}

/* A registered op that reads attributes but whose definition names none
 * (attrs AD_ATTRS_NONE): the forward saw the caller's, the backward saw
 * zeros (they were not kept), so y = 2.5 x got the gradient 0 with AD_OK.
 * The backward now sees what the forward saw; one that declares the
 * member (AD_ATTRS_USER) sees the same. */
static void scale_fwd(const ad_call *c) {
  for (int64_t i = 0; i < c->out->size; i++)
    ad_tensor_set(c->out, i, c->attrs->user.f[0] * ad_tensor_get(c->in[0], i));
}
static ad_status scale_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_mul_scalar(c->ctx, c->gout, c->attrs->user.f[0]));
}

Test(backward, a_user_op_sees_the_same_attrs_in_forward_and_backward) {
  for (int declared = 0; declared < 2; declared++) {
    ad_op_def d = {.name = declared ? "scale_user_attrs" : "scale_no_attrs",
                   .arity = 1,
                   .flags = AD_OP_ELEMENTWISE,
                   .attrs = declared ? AD_ATTRS_USER : AD_ATTRS_NONE,
                   .forward = scale_fwd,
                   .backward = scale_bwd};
    int id = ad_op_register(ctx, &d);
    cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
    int64_t s = 3;
    ad_tensor *x = ad_from_data(ctx, AD_F64, 1, &s, (const double[]){1, -2, 4});
    ad_tensor_set_requires_grad(x, true);
    ad_attrs at = {.user = {.f = {2.5}}};
    ad_tensor *y = ad_op_apply(ctx, id, 1, &x, &at);
    cr_assert_not_null(y, "%s", ad_last_error(ctx));
    cr_assert_eq(ad_tensor_get(y, 2), 10.0);
    OK(ad_backward(ctx, ad_sum(ctx, y), NULL));
    for (int64_t i = 0; i < 3; i++)
      cr_assert_eq(ad_tensor_get(x->grad, i), 2.5, "%s: dx[%lld] = %g", d.name, (long long)i,
                   ad_tensor_get(x->grad, i));
    ad_tape_reset(ctx);
    ad_tensor_free(x);
  }
}

/* A registered op with a backward whose shape rule makes an AD_I32 output
 * (a rounding, say): the output was recorded and required a gradient,
 * which ad_tensor_set_requires_grad refuses any integer tensor, and a
 * backward from it sent an i32 gradient into the op's backward, which
 * failed in whatever op it ran first ("cast: input 0 is i32"). The output
 * now requires no gradient, as in PyTorch, and a backward from it says so. */
static ad_status round_shape(const ad_call *c) {
  c->out->dtype = AD_I32;
  c->out->ndim = c->in[0]->ndim;
  memcpy(c->out->shape, c->in[0]->shape, sizeof(int64_t) * (size_t)c->in[0]->ndim);
  return AD_OK;
}
static void round_fwd(const ad_call *c) {
  for (int64_t i = 0; i < c->out->size; i++)
    ad_tensor_set(c->out, i, round(ad_tensor_get(c->in[0], i)));
}
static ad_status round_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_mul_scalar(c->ctx, ad_cast(c->ctx, c->gout, AD_F64), 0.0));
}

Test(backward, an_integer_output_of_a_user_op_requires_no_gradient) {
  ad_op_def d = {.name = "round_i32",
                 .arity = 1,
                 .shape = round_shape,
                 .forward = round_fwd,
                 .backward = round_bwd};
  int id = ad_op_register(ctx, &d);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  int64_t s = 3;
  ad_tensor *x = ad_from_data(ctx, AD_F64, 1, &s, (const double[]){1.25, -2.5, 3.75});
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = ad_op_apply(ctx, id, 1, &x, NULL);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->dtype, AD_I32);
  cr_assert_eq(ad_tensor_get(y, 2), 4.0);
  cr_assert(!ad_tensor_requires_grad(y));
  cr_assert_eq(ad_tensor_op(y), id);
  ad_tensor *seed = ad_ones(ctx, AD_I32, 1, &s);
  cr_assert_eq(ad_backward(ctx, y, seed), AD_ERR_STATE);
  cr_assert(strstr(ad_last_error(ctx), "the root does not require grad"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tape_reset(ctx);
  ad_tensor_free(seed);
  ad_tensor_free(x);
}

/* A registered op's backward must give each input a gradient of its dtype
 * and of its shape (or one it broadcasts to). An f32 gradient for an f64
 * input was read as f64 past its end, and a [3,2] one for a [2,3] input
 * was reshaped: both went into the gradient without an error. */
static void copy_fwd(const ad_call *c) {
  memcpy(c->out->data, c->in[0]->data, (size_t)c->out->size * ad_dtype_size(c->out->dtype));
}
static ad_status cast_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_cast(c->ctx, c->gout, AD_F32));
}
static ad_status transposed_bwd(const ad_call *c) {
  return ad_call_set_grad(c, 0, ad_transpose(c->ctx, c->gout, 0, 1));
}

Test(backward, a_contribution_of_another_dtype_or_shape_is_refused) {
  ad_op_def d = {.name = "bad_cast",
                 .arity = 1,
                 .flags = AD_OP_ELEMENTWISE,
                 .forward = copy_fwd,
                 .backward = cast_bwd};
  int cast_id = ad_op_register(ctx, &d);
  d.name = "bad_shape", d.backward = transposed_bwd;
  int shape_id = ad_op_register(ctx, &d);
  cr_assert(cast_id >= 0 && shape_id >= 0, "%s", ad_last_error(ctx));
  int64_t s[2] = {2, 3};
  ad_tensor *x = ad_ones(ctx, AD_F64, 2, s);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = ad_op_apply(ctx, cast_id, 1, &x, NULL);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_ERR_DTYPE);
  cr_assert(strstr(ad_last_error(ctx), "the backward of bad_cast gave input 0 a f32 gradient"),
            "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tape_reset(ctx);
  y = ad_op_apply(ctx, shape_id, 1, &x, NULL);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_ERR_SHAPE);
  cr_assert(strstr(ad_last_error(ctx), "gave input 0 a gradient [3,2]; the input is [2,3]"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
}

/* A hook that, at its first call, resets the tape or starts a second
 * backward: both would pull the running pass's nodes from under it. */
typedef struct reentry {
  ad_tensor *root;
  int calls;
  ad_status nested;
  size_t tape_after;
} reentry;
static void reset_hook(void *ud, const ad_backward_step *step) {
  (void)step;
  reentry *r = ud;
  if (r->calls++) return;
  ad_tape_reset(ctx);
  r->tape_after = ad_tape_size(ctx);
}
static void nested_hook(void *ud, const ad_backward_step *step) {
  (void)step;
  reentry *r = ud;
  if (!r->calls++) r->nested = ad_backward(ctx, r->root, NULL);
}

Test(backward, a_hook_cannot_reset_the_tape_or_start_another_pass) {
  double v[3] = {0.3, -0.5, 0.9};
  ad_tensor *w = vec(v, 3);
  ad_tensor *y = w;
  for (int i = 0; i < 4; i++) y = ad_tanh(ctx, ad_mul(ctx, y, w));
  ad_tensor *root = ad_sum(ctx, y);
  cr_assert_not_null(root);
  OK(ad_backward(ctx, root, NULL)); /* the gradient without any hook */
  double want[3];
  for (int i = 0; i < 3; i++) want[i] = ad_tensor_get(w->grad, i);
  size_t len = ad_tape_size(ctx);

  reentry r = {.root = root};
  ad_tensor_zero_grad(w);
  ad_set_backward_hook(ctx, reset_hook, &r);
  OK(ad_backward(ctx, root, NULL));
  cr_assert_eq(r.tape_after, len, "the reset was refused: the tape keeps its %zu ops", len);
  cr_assert(strstr(ad_last_error(ctx), "tape_reset: called during a backward pass"), "%s",
            ad_last_error(ctx));
  assert_close(w->grad, want, 3, 0); /* the pass ran to the end, unchanged */
  ad_clear_error(ctx);

  r = (reentry){.root = root};
  ad_tensor_zero_grad(w);
  ad_set_backward_hook(ctx, nested_hook, &r);
  OK(ad_backward(ctx, root, NULL));
  cr_assert_eq(r.nested, AD_ERR_STATE);
  cr_assert(strstr(ad_last_error(ctx), "backward: called during a backward pass"), "%s",
            ad_last_error(ctx));
  assert_close(w->grad, want, 3, 0); /* counted once, not twice */
  ad_set_backward_hook(ctx, NULL, NULL);
  ad_clear_error(ctx);
  ad_tape_reset(ctx);
  ad_tensor_free(w);
}

/* ------------------------------------------ writes into tensors in use */

/* Writing a tensor that a recorded op took as input, or an op's result,
 * after the op was recorded: a backward through that op refuses before it
 * changes any gradient (PyTorch's version counters refuse the same). */
Test(backward, writes_into_tensors_the_tape_used_are_refused) {
  double wv[3] = {0.5, -1.0, 2.0}, xv[3] = {1, 2, 3};
  int64_t n = 3;
  ad_tensor *w = vec(wv, 3), *x = ad_from_data(ctx, AD_F64, 1, &n, xv);
  ad_tensor_set_name(x, "x");
  /* an input, with each writer */
  for (int k = 0; k < 4; k++) {
    ad_tensor *root = ad_sum(ctx, ad_mul(ctx, x, w));
    cr_assert_not_null(root);
    if (k == 0) OK(ad_tensor_set(x, 0, 5));
    if (k == 1) OK(ad_tensor_fill(x, 5));
    if (k == 2) OK(ad_tensor_copy_data(x, w));
    if (k == 3) { /* through the data, announced */
      ((double *)x->data)[1] = 7;
      OK(ad_tensor_mark_modified(x));
    }
    cr_assert_eq(ad_backward(ctx, root, NULL), AD_ERR_STATE, "writer %d", k);
    cr_assert(strstr(ad_last_error(ctx), "backward: input 0 of mul ('x' [3]) was written "
                                         "after the op was recorded"),
              "writer %d: %s", k, ad_last_error(ctx));
    cr_assert_null(w->grad, "writer %d: no gradient was changed", k);
    ad_tensor *out[1];
    cr_assert_eq(ad_grad(ctx, root, NULL, 1, &w, out, false), AD_ERR_STATE);
    ad_clear_error(ctx);
    ad_tape_reset(ctx); /* forgets the writes */
    OK(ad_tensor_copy_data(x, ad_from_data(ctx, AD_F64, 1, &n, xv)));
  }
  /* written before the ops that use it: the gradient of the new values */
  OK(ad_tensor_set(x, 0, 4));
  ad_tensor *root = ad_sum(ctx, ad_mul(ctx, x, w));
  OK(ad_backward(ctx, root, NULL));
  assert_close(w->grad, (double[]){4, 2, 3}, 3, 0);
  /* written, then used again: only the ops recorded since are reached */
  OK(ad_tensor_set(x, 0, 1));
  ad_tensor_zero_grad(w);
  OK(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, x, w)), NULL));
  assert_close(w->grad, (double[]){1, 2, 3}, 3, 0);
  /* ops off the root's path may have read it: nothing to refuse */
  ad_tensor *side = ad_exp(ctx, ad_mul(ctx, x, w));
  root = ad_sum(ctx, ad_sin(ctx, w));
  cr_assert(side && root);
  OK(ad_tensor_set(x, 2, 0));
  OK(ad_backward(ctx, root, NULL));
  ad_tape_reset(ctx);
  ad_tensor_zero_grad(w);
  /* an op's result, written after it was recorded: the tape no longer
   * computes what the program does (refused at its first consumer) */
  ad_tensor *e = ad_exp(ctx, w);
  root = ad_sum(ctx, e);
  OK(ad_tensor_set(e, 1, 0));
  cr_assert_eq(ad_backward(ctx, root, NULL), AD_ERR_STATE);
  cr_assert(strstr(ad_last_error(ctx), "backward: input 0 of sum ([3]) was written after the op "
                                       "was recorded"),
            "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
  /* the root itself */
  root = ad_sum(ctx, ad_exp(ctx, w));
  OK(ad_tensor_set(root, 0, 1));
  cr_assert_eq(ad_backward(ctx, root, NULL), AD_ERR_STATE);
  cr_assert(strstr(ad_last_error(ctx), "backward: the result of sum ("), "%s", ad_last_error(ctx));
  cr_assert(strstr(ad_last_error(ctx), ") was written after the op was recorded"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tape_reset(ctx);
  /* a temporary no op records (x needs no gradient), read by a recorded
   * op, then written */
  ad_tensor *c = ad_exp(ctx, x);
  root = ad_sum(ctx, ad_mul(ctx, c, w));
  OK(ad_tensor_fill(c, 1));
  cr_assert_eq(ad_backward(ctx, root, NULL), AD_ERR_STATE);
  cr_assert(strstr(ad_last_error(ctx), "input 0 of mul ([3]) was written"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tape_reset(ctx);
  /* a temporary written as soon as it is made (a mask built by hand) */
  c = ad_exp(ctx, x);
  for (int i = 0; i < 3; i++) OK(ad_tensor_set(c, i, i));
  OK(ad_backward(ctx, ad_sum(ctx, ad_mul(ctx, c, w)), NULL));
  assert_close(w->grad, (double[]){0, 1, 2}, 3, 0);
  cr_assert_eq(ad_tensor_mark_modified(NULL), AD_ERR_NULL);
  ad_tape_reset(ctx);
  ad_tensor_free(w);
  ad_tensor_free(x);
}

/* The note of a write is refused memory: the write is refused too (t
 * unchanged), so that no write goes unnoted. */
Test(backward, a_write_that_cannot_be_noted_is_refused) {
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  cr_assert_not_null(c);
  int64_t n = 3;
  ad_tensor *w = ad_ones(c, AD_F64, 1, &n);
  ad_tensor_set_requires_grad(w, true);
  ad_tensor *root = ad_sum(c, ad_mul(c, w, w));
  cr_assert_not_null(root);
  test_alloc_refuse_after(&ta, 0);
  cr_assert_eq(ad_tensor_set(w, 0, 3), AD_ERR_OOM);
  test_expect_error(c, AD_ERR_OOM, "tensor_set: out of memory", NULL);
  cr_assert_eq(ad_tensor_get(w, 0), 1.0);
  test_alloc_grant_all(&ta);

  cr_assert_eq(ad_backward(c, root, NULL), AD_OK, "%s", ad_last_error(c));
  cr_assert_eq(ad_tensor_get(w->grad, 0), 2.0);
  ad_tensor_free(w);
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0, "%ld blocks left", ta.live);
}

/* Writes into more tensors in turn than the notes' short scan sees (a
 * hand-written update, element by element across a dozen parameters):
 * the notes grow with the tensors written, not with the writes (they grew
 * by 40 bytes a write, and the backward's check then sorted them all), and
 * the check still finds every write, the early ones included. */
Test(backward, notes_of_many_writes_stay_as_many_as_the_tensors) {
  test_alloc ta = {0};
  ad_ctx *c = ad_ctx_new_with_alloc(test_alloc_fn, &ta);
  cr_assert_not_null(c);
  enum { P = 12 };
  int64_t n = 1;
  ad_tensor *x = ad_ones(c, AD_F64, 1, &n), *p[P], *sum = NULL, *early = ad_ones(c, AD_F64, 1, &n);
  ad_tensor_set_requires_grad(x, true);
  cr_assert_eq(ad_tensor_set_name(early, "early"), AD_OK);
  ad_tensor *first = ad_sum(c, ad_mul(c, early, x));
  for (int i = 0; i < P; i++) {
    p[i] = ad_ones(c, AD_F64, 1, &n);
    ad_tensor *t = ad_mul(c, p[i], x);
    sum = sum ? ad_add(c, sum, t) : t;
  }
  ad_tensor *other = ad_sum(c, ad_mul(c, x, x));
  cr_assert_eq(ad_tensor_set(early, 0, 2), AD_OK);
  long long before = ta.live_bytes;
  for (int r = 0; r < 20000; r++)
    for (int i = 0; i < P; i++) QUICK_ASSERT(ad_tensor_set(p[i], 0, r) == AD_OK, "write %d", r);
  cr_assert_lt(ta.live_bytes - before, 4096, "the notes took %lld bytes", ta.live_bytes - before);
  cr_assert_eq(ad_backward(c, other, NULL), AD_OK, "%s", ad_last_error(c));
  cr_assert_eq(ad_backward(c, first, NULL), AD_ERR_STATE);
  test_expect_error(c, AD_ERR_STATE, "input 0 of mul ('early' [1]) was written after the op", NULL);
  cr_assert_eq(ad_backward(c, ad_sum(c, sum), NULL), AD_ERR_STATE);
  test_expect_error(c, AD_ERR_STATE, "input 0 of mul ([1]) was written after the op", NULL);
  ad_tape_reset(c);
  ad_tensor_free(x), ad_tensor_free(early);
  for (int i = 0; i < P; i++) ad_tensor_free(p[i]);
  ad_ctx_free(c);
  cr_assert_eq(ta.live, 0, "%ld blocks left", ta.live);
}

/* A write is matched by memory: an op that reads a data input through a
 * view no op recorded (a reshape of a tensor that needs no gradient, as
 * conv1d and a dense layer on 3-D input make) is refused as well, and so
 * is a write through such a view into a tensor an op read. */
Test(backward, writes_are_matched_through_views) {
  int64_t s2[2] = {2, 3}, s1[1] = {6}, sw[2] = {3, 2};
  ad_tensor *x = ad_ones(ctx, AD_F64, 2, s2), *w = ad_ones(ctx, AD_F64, 2, sw);
  ad_tensor_set_requires_grad(w, true);
  ad_tensor *v = ad_reshape(ctx, x, 1, s1); /* a view of x, made before any op is recorded */
  ad_tensor *root = ad_sum(ctx, ad_matmul(ctx, ad_reshape(ctx, v, 2, s2), w, false, false));
  cr_assert_not_null(root, "%s", ad_last_error(ctx));
  OK(ad_tensor_fill(x, 100)); /* x itself; the product read it through two views */
  cr_assert_eq(ad_backward(ctx, root, NULL), AD_ERR_STATE);
  cr_assert(strstr(ad_last_error(ctx), "input 0 of matmul ([2,3]) was written"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tape_reset(ctx);
  root = ad_sum(ctx, ad_matmul(ctx, x, w, false, false));
  v = ad_reshape(ctx, x, 1, s1);
  OK(ad_tensor_set(v, 5, 7)); /* through a view made after the product was recorded */
  cr_assert_eq(ad_backward(ctx, root, NULL), AD_ERR_STATE);
  cr_assert(strstr(ad_last_error(ctx), "input 0 of matmul ([2,3]) was written"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
  ad_tape_reset(ctx);
  /* other memory is not matched: a tensor beside x, written */
  ad_tensor *other = ad_ones(ctx, AD_F64, 2, s2);
  root = ad_sum(ctx, ad_matmul(ctx, x, w, false, false));
  ad_tensor *side = ad_exp(ctx, other);
  OK(ad_tensor_fill(other, 2));
  OK(ad_backward(ctx, root, NULL));
  cr_assert_not_null(side);
  ad_tape_reset(ctx);
  ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(other);
}

/* ------------------------------------ what a registered op's backward returns */

static void user_copy_fwd(const ad_call *c) {
  for (int64_t i = 0; i < c->out->size; i++) ad_tensor_set(c->out, i, ad_tensor_get(c->in[0], i));
}

/* stores the NULL of a failed op and returns AD_OK (the 0.1 idiom without
 * its check) */
static ad_status silent_fail_bwd(const ad_call *c) {
  int64_t seven = 7;
  ad_tensor *bad = ad_zeros(c->ctx, c->gout->dtype, 1, &seven);
  c->gin[0] = ad_mul(c->ctx, c->gout, bad); /* [2,3] * [7]: NULL */
  ad_tensor_free(bad);
  return AD_OK;
}

static ad_status freed_bwd(const ad_call *c) {
  ad_tensor *g = ad_full(c->ctx, c->in[0]->dtype, c->in[0]->ndim, c->in[0]->shape, 3.0);
  ad_tensor_free(g); /* freed too early */
  return ad_call_set_grad(c, 0, g);
}

static ad_ctx *other_ctx;
static ad_status other_ctx_bwd(const ad_call *c) { /* a temporary of another context */
  ad_tensor *t = ad_full(other_ctx, c->in[0]->dtype, c->in[0]->ndim, c->in[0]->shape, 1.0);
  ad_tensor *g = ad_mul_scalar(other_ctx, t, 2.0);
  ad_tensor_free(t);
  return ad_call_set_grad(c, 0, g);
}

static ad_status run_user_op(ad_backward_fn bwd, const char *name, bool grad) {
  ad_op_def d = {.name = name,
                 .arity = 1,
                 .flags = AD_OP_ELEMENTWISE,
                 .forward = user_copy_fwd,
                 .backward = bwd};
  int id = ad_op_register(ctx, &d);
  cr_assert_geq(id, 0, "%s", ad_last_error(ctx));
  int64_t s[2] = {2, 3};
  ad_tensor *x = ad_full(ctx, AD_F64, 2, s, 0.5);
  cr_assert_not_null(x);
  OK(ad_tensor_set_requires_grad(x, true));
  ad_tensor *L = ad_sum(ctx, ad_op_apply(ctx, id, 1, &x, NULL));
  cr_assert_not_null(L, "%s", ad_last_error(ctx));
  ad_tensor *gx = NULL;
  ad_status st = grad ? ad_grad(ctx, L, NULL, 1, &x, &gx, false) : ad_backward(ctx, L, NULL);
  cr_assert_null(x->grad, "a failed pass leaves no gradient");
  cr_assert_null(gx);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  return st;
}

Test(backward, a_backward_that_stored_a_failed_ops_null_fails_the_pass) {
  ad_status st = run_user_op(silent_fail_bwd, "silent_fail", false);
  cr_assert_eq(st, AD_ERR_SHAPE, "%s", ad_status_str(st));
  cr_assert(strstr(ad_last_error(ctx), "mul: shapes do not broadcast"), "%s", ad_last_error(ctx));
  ad_clear_error(ctx);
}

Test(backward, a_backward_that_returns_a_freed_or_foreign_tensor_fails_the_pass) {
  for (int grad = 0; grad <= 1; grad++) {
    ad_status st = run_user_op(freed_bwd, grad ? "freed_g" : "freed_b", grad);
    cr_assert_eq(st, AD_ERR_ARG, "%s", ad_status_str(st));
    cr_assert(strstr(ad_last_error(ctx), "gave input 0 a freed tensor"), "%s", ad_last_error(ctx));
    other_ctx = ad_ctx_new();
    cr_assert_not_null(other_ctx);
    st = run_user_op(other_ctx_bwd, grad ? "other_g" : "other_b", grad);
    ad_ctx_free(other_ctx);
    cr_assert_eq(st, AD_ERR_ARG, "%s", ad_status_str(st));
    cr_assert(strstr(ad_last_error(ctx), "gave input 0 a tensor of another context"), "%s",
              ad_last_error(ctx));
    ad_clear_error(ctx);
  }
}

/* A backward that registers its partner ops on first use grows the op
 * table, which moves it: the sweep read the op's definition before the
 * call and named the op from the freed table when reporting a bad
 * gradient (a use after free under -Db_sanitize=address). */
static ad_status lazy_bwd(const ad_call *c) {
  if (ad_op_find(c->ctx, "lazy_partner0") < 0)
    for (int i = 0; i < 200; i++) {
      char name[32];
      snprintf(name, sizeof name, "lazy_partner%d", i);
      ad_op_def d = {
          .name = name, .arity = 1, .flags = AD_OP_ELEMENTWISE, .forward = user_copy_fwd};
      if (ad_op_register(c->ctx, &d) < 0) return ad_last_status(c->ctx);
    }
  int64_t seven = 7; /* a wrong shape, which the engine reports naming the op */
  return ad_call_set_grad(c, 0, ad_zeros(c->ctx, c->in[0]->dtype, 1, &seven));
}

Test(backward, a_backward_that_registers_ops_is_reported_by_its_name) {
  ad_status st = run_user_op(lazy_bwd, "lazy", false);
  cr_assert_eq(st, AD_ERR_SHAPE, "%s", ad_status_str(st));
  cr_assert(strstr(ad_last_error(ctx), "the backward of lazy gave input 0 a gradient [7]"), "%s",
            ad_last_error(ctx));
  ad_clear_error(ctx);
}

/* The same from an op's grad_into (the fast path into a leaf's grad): one
 * that registers ops and then declines moved the table under the sweep,
 * which then called the backward through the freed table. Freed blocks
 * are poisoned here, so the stale read calls a garbage pointer. */
/* Freed blocks are poisoned and kept (quarantine) until the test ends, so
 * that no later allocation reuses one and hides a stale read. */
static void *quarantine[4096];
static size_t nquarantine;

static void quarantine_free(void) {
  while (nquarantine) free(quarantine[--nquarantine]);
}

static void *poison_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  void *p = NULL;
  if (nsize) {
    if (!(p = aligned_alloc(64, (nsize + 63) & ~(size_t)63))) return NULL;
    if (ptr) memcpy(p, ptr, osize < nsize ? osize : nsize);
  }
  if (ptr) {
    memset(ptr, 0x5A, osize); /* what was there is gone */
    if (nquarantine < sizeof quarantine / sizeof *quarantine)
      quarantine[nquarantine++] = ptr;
    else
      free(ptr);
  }
  return p;
}

static bool lazy_grad_into(const ad_call *c, int k, ad_tensor *g, bool overwrite) {
  (void)k, (void)g, (void)overwrite;
  if (ad_op_find(c->ctx, "gi_partner0") < 0)
    for (int i = 0; i < 200; i++) {
      char name[32];
      snprintf(name, sizeof name, "gi_partner%d", i);
      ad_op_def d = {
          .name = name, .arity = 1, .flags = AD_OP_ELEMENTWISE, .forward = user_copy_fwd};
      if (ad_op_register(c->ctx, &d) < 0) return false;
    }
  return false; /* declined: the backward runs */
}

static ad_status pass_bwd(const ad_call *c) { return ad_call_set_grad(c, 0, c->gout); }

Test(backward, a_grad_into_that_registers_ops_leaves_the_sweep_a_live_definition) {
  ad_ctx *c = ad_ctx_new_with_alloc(poison_alloc, NULL);
  cr_assert_not_null(c);
  ad_op_def d = {.name = "lazy_into",
                 .arity = 1,
                 .flags = AD_OP_ELEMENTWISE,
                 .forward = user_copy_fwd,
                 .backward = pass_bwd,
                 .grad_into = lazy_grad_into};
  int id = ad_op_register(c, &d);
  cr_assert_geq(id, 0, "%s", ad_last_error(c));
  int64_t s[1] = {3};
  ad_tensor *x = ad_full(c, AD_F64, 1, s, 0.5);
  cr_assert_not_null(x);
  cr_assert_eq(ad_tensor_set_requires_grad(x, true), AD_OK);
  ad_tensor *L = ad_sum(c, ad_op_apply(c, id, 1, &x, NULL));
  cr_assert_not_null(L, "%s", ad_last_error(c));
  cr_assert_eq(ad_backward(c, L, NULL), AD_OK, "%s", ad_last_error(c));
  cr_assert_not_null(x->grad);
  for (int64_t i = 0; i < 3; i++) cr_assert_eq(ad_tensor_get(x->grad, i), 1.0);
  ad_tensor_free(x);
  ad_ctx_free(c);
  quarantine_free();
}

/* And from an op's shape rule: ad_op_apply then read the op's flags and
 * called its forward through the freed table. */
static ad_status lazy_shape(const ad_call *c) {
  if (ad_op_find(c->ctx, "sh_partner0") < 0)
    for (int i = 0; i < 200; i++) {
      char name[32];
      snprintf(name, sizeof name, "sh_partner%d", i);
      ad_op_def d = {
          .name = name, .arity = 1, .flags = AD_OP_ELEMENTWISE, .forward = user_copy_fwd};
      if (ad_op_register(c->ctx, &d) < 0) return ad_last_status(c->ctx);
    }
  c->out->ndim = c->in[0]->ndim;
  for (int i = 0; i < c->in[0]->ndim; i++) c->out->shape[i] = c->in[0]->shape[i];
  return AD_OK;
}

Test(backward, a_shape_rule_that_registers_ops_leaves_apply_a_live_definition) {
  ad_ctx *c = ad_ctx_new_with_alloc(poison_alloc, NULL);
  cr_assert_not_null(c);
  ad_op_def d = {.name = "lazy_shape", .arity = 1, .shape = lazy_shape, .forward = user_copy_fwd};
  int id = ad_op_register(c, &d);
  cr_assert_geq(id, 0, "%s", ad_last_error(c));
  int64_t s[1] = {3};
  ad_tensor *x = ad_full(c, AD_F64, 1, s, 0.5);
  cr_assert_not_null(x);
  ad_tensor *y = ad_op_apply(c, id, 1, &x, NULL);
  cr_assert_not_null(y, "%s", ad_last_error(c));
  for (int64_t i = 0; i < 3; i++) cr_assert_eq(ad_tensor_get(y, i), 0.5);
  ad_tensor_free(x);
  ad_ctx_free(c);
  quarantine_free();
}
