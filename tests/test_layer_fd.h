/* test_layer_fd.h: an nn layer's first and second derivatives in its input
 * and its own parameters against central differences, for the Criterion
 * tests of layers. Header-only; includes nn.h and test_alloc.h.
 *
 * ad_gradcheck hands its function float64 copies of the inputs, while a
 * layer reads its own weight and bias; so the check is made here on the
 * layer's tensors themselves: in = {x, parameters...}, F = <v, layer(x)>
 * and, for the second order, H = sum_i <r_i, dF/d in_i> (recorded with
 * create_graph); the gradient of F (or H) in every input is compared with
 * central differences of F (or H), element by element. */
#ifndef TEST_LAYER_FD_H
#define TEST_LAYER_FD_H

#include "nn.h"
#include "test_alloc.h"

#define TEST_FD_MAX_IN 4 /* x and up to three parameters */

typedef struct test_fd {
  ad_ctx *ctx;
  nn_layer *l;
  bool training;
  int n;
  ad_tensor *in[TEST_FD_MAX_IN], *v, *r[TEST_FD_MAX_IN];
} test_fd;

/* F, or H when second; its gradients in the inputs into g when g is not
 * NULL. */
static inline double test_fd_value(test_fd *c, bool second, ad_tensor **g) {
  ad_ctx *ctx = c->ctx;
  ad_tape_reset(ctx);
  ad_tensor *y = nn_layer_forward(c->l, c->in[0], c->training);
  ad_tensor *f = ad_sum(ctx, ad_mul(ctx, y, c->v));
  if (second) {
    ad_tensor *d[TEST_FD_MAX_IN];
    cr_assert_eq(ad_grad(ctx, f, NULL, c->n, c->in, d, true), AD_OK, "%s", ad_last_error(ctx));
    for (int i = 0; i < c->n; i++) {
      ad_tensor *t = ad_sum(ctx, ad_mul(ctx, d[i], c->r[i]));
      f = i ? ad_add(ctx, f, t) : t;
    }
  }
  cr_assert_not_null(f, "%s", ad_last_error(ctx));
  if (g)
    cr_assert_eq(ad_grad(ctx, f, NULL, c->n, c->in, g, false), AD_OK, "%s", ad_last_error(ctx));
  return ad_tensor_item(f);
}

/* The tape's gradient of F (H when second) against central differences
 * (step 1e-6) in every element of every input: |numeric - tape| <= 1e-6 +
 * 1e-5 |numeric|. */
static inline void test_fd_compare(test_fd *c, bool second) {
  ad_ctx *ctx = c->ctx;
  ad_tensor *g[TEST_FD_MAX_IN];
  test_fd_value(c, second, g);
  double *an[TEST_FD_MAX_IN];
  for (int i = 0; i < c->n; i++) {
    an[i] = malloc((size_t)c->in[i]->size * sizeof(double));
    cr_assert_not_null(an[i]);
    for (int64_t j = 0; j < c->in[i]->size; j++) an[i][j] = ad_tensor_get(g[i], j);
  }
  const double eps = 1e-6;
  for (int i = 0; i < c->n; i++) {
    ad_tensor *t = c->in[i];
    for (int64_t j = 0; j < t->size; j++) {
      double orig = ad_tensor_get(t, j), f[2];
      for (int k = 0; k < 2; k++) {
        ad_tape_reset(ctx);
        ad_tensor_set(t, j, orig + (k ? -eps : eps));
        f[k] = test_fd_value(c, second, NULL);
      }
      ad_tape_reset(ctx);
      ad_tensor_set(t, j, orig);
      double num = (f[0] - f[1]) / (2 * eps);
      QUICK_ASSERT(fabs(num - an[i][j]) <= 1e-6 + 1e-5 * fabs(num),
                   "%s order %d, input %d [%lld]: tape %.12g, numeric %.12g", nn_layer_kind(c->l),
                   second ? 2 : 1, i, (long long)j, an[i][j], num);
    }
    free(an[i]);
  }
  ad_tape_reset(ctx);
}

/* How test_layer_derivatives runs. The zero value: training mode, the
 * parameters as they are, first and second order. */
typedef struct test_fd_opts {
  bool eval;          /* the layer's evaluation mode */
  bool first_only;    /* no second order (a layer linear in everything) */
  bool redraw_params; /* parameters drawn from U(0.5, 1.5) first (norm
                         layers, whose default weight 1 and bias 0 would
                         hide mistakes) */
} test_fd_opts;

/* Layer l (float64 parameters) on a random float64 input of shape [nd],
 * in the input and every parameter, with a random cotangent v and random
 * directions r (seeded, so the same every run). */
static inline void test_layer_derivatives(ad_ctx *ctx, nn_layer *l, int nd, const int64_t *shape,
                                          const test_fd_opts *opts) {
  test_fd_opts o = {0};
  if (opts) o = *opts;
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  test_fd c = {.ctx = ctx, .l = l, .training = !o.eval, .n = 1};
  c.in[0] = ad_rand(ctx, &rng, AD_F64, nd, shape, -2, 2);
  cr_assert_not_null(c.in[0], "%s", ad_last_error(ctx));
  ad_tensor_set_requires_grad(c.in[0], true);
  nn_params *p = nn_layer_params(l);
  cr_assert_leq(nn_params_count(p), TEST_FD_MAX_IN - 1);
  for (int i = 0; i < nn_params_count(p); i++) {
    ad_tensor *t = c.in[c.n++] = nn_params_tensor(p, i);
    for (int64_t j = 0; o.redraw_params && j < t->size; j++)
      ad_tensor_set(t, j, ad_rng_uniform(&rng) + 0.5);
  }
  ad_tensor *y = nn_layer_forward(l, c.in[0], c.training);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  c.v = ad_rand(ctx, &rng, AD_F64, y->ndim, y->shape, -1, 1);
  for (int i = 0; i < c.n; i++)
    c.r[i] = ad_rand(ctx, &rng, AD_F64, c.in[i]->ndim, c.in[i]->shape, -1, 1);
  test_fd_compare(&c, false);
  if (!o.first_only) test_fd_compare(&c, true);
  ad_tensor_free(c.in[0]);
  ad_tensor_free(c.v);
  for (int i = 0; i < c.n; i++) ad_tensor_free(c.r[i]);
}

/* For a layer whose function fn (an ad_check_fn on in[0 .. n-1], ud its
 * state) reads the layer's own parameters: the gradient of L = <v, fn>,
 * v uniform in [-1, 1) from seed 11, in every element of every parameter
 * of l, the tape's against central differences (steps of 1e-6), within
 * 1e-6 + 1e-5 |numeric|. */
static inline void test_params_fd(ad_ctx *ctx, nn_layer *l, ad_check_fn fn, void *ud, int n,
                                  ad_tensor *const *in) {
  ad_tensor *y = fn(ctx, n, in, ud);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  ad_tensor *v = ad_rand(ctx, &rng, AD_F64, y->ndim, y->shape, -1, 1);
  nn_params *p = nn_layer_params(l);
  nn_params_zero_grad(p);
  cr_assert_eq(ad_backward(ctx, y, v), AD_OK, "%s", ad_last_error(ctx));
  for (int i = 0; i < nn_params_count(p); i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    cr_assert_not_null(t->grad, "%s has no gradient", nn_params_name(p, i));
    for (int64_t k = 0; k < t->size; k++) {
      double orig = ad_tensor_get(t, k), f[2];
      for (int s = 0; s < 2; s++) {
        ad_tensor_set(t, k, orig + (s ? -1e-6 : 1e-6));
        ad_tape_reset(ctx);
        f[s] = ad_tensor_item(ad_sum(ctx, ad_mul(ctx, fn(ctx, n, in, ud), v)));
      }
      ad_tensor_set(t, k, orig);
      double num = (f[0] - f[1]) / 2e-6, an = ad_tensor_get(t->grad, k);
      QUICK_ASSERT(fabs(num - an) <= 1e-6 + 1e-5 * fabs(num), "%s[%lld]: tape %.12g, numeric %.12g",
                   nn_params_name(p, i), (long long)k, an, num);
    }
  }
  ad_tape_reset(ctx);
  ad_tensor_free(v);
}

/* A recurrent layer as an ad_check_fn (for ad_gradcheck, ad_gradgradcheck
 * and test_params_fd): in = {x, h0, c0 (when n > 2)} through
 * nn_rnn_forward of the test_rnn_fd's layer l in training mode (lengths:
 * its nl sequence lengths, or NULL), giving the output sequence, h_n or
 * c_n (output 0, 1, 2). */
typedef struct test_rnn_fd {
  nn_layer *l;
  const int64_t *lengths;
  int64_t nl;
  int output; /* 0: output sequence, 1: h_n, 2: c_n */
} test_rnn_fd;

static inline ad_tensor *test_rnn_fd_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c;
  test_rnn_fd *u = ud;
  ad_tensor *hn, *cn;
  ad_tensor *y =
      nn_rnn_forward(u->l, in[0], in[1], n > 2 ? in[2] : NULL, u->lengths, u->nl, true, &hn, &cn);
  return u->output == 0 ? y : u->output == 1 ? hn : cn;
}

#endif
