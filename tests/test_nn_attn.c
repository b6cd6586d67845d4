/* test_nn_attn.c: ad_scaled_dot_product_attention and the multi-head
 * attention layer against PyTorch (tests/fixtures/torch_attn.safetensors,
 * written by tools/gen_attn_fixtures.py: outputs, attention weights and
 * gradients in float64), first and second derivatives by central
 * differences, dropout, a PyTorch state dict, and the error messages. */
#include "nn.h"
#include "test_alloc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define ATTN_FIXTURE "tests/fixtures/torch_attn.safetensors"

TEST_CTX_SUITE(sdpa);
TEST_CTX_SUITE_ALSO(mha);

/* The fixture tensor name as a new persistent tensor of dtype dt, or NULL
 * when the file has no such entry. */
static ad_tensor *fx(ad_ctx *c, ad_dtype dt, const char *name) {
  nn_checkpoint_info *info = nn_checkpoint_info_read(c, ATTN_FIXTURE);
  cr_assert_not_null(info, "%s", ad_last_error(c));
  const nn_checkpoint_entry *e = nn_checkpoint_info_find(info, name);
  if (!e) {
    nn_checkpoint_info_free(info);
    return NULL;
  }
  ad_dtype fdt = e->dtype;
  ad_tensor *t = ad_zeros(c, fdt, e->ndim, e->shape);
  nn_checkpoint_info_free(info);
  cr_assert_not_null(t);
  cr_assert_eq(nn_checkpoint_load(c, ATTN_FIXTURE, 1, &name, &t), AD_OK, "%s", ad_last_error(c));
  if (fdt == dt || fdt == AD_I32) return t;
  ad_tensor *u = ad_zeros(c, dt, t->ndim, t->shape);
  cr_assert_not_null(u);
  for (int64_t i = 0; i < t->size; i++) ad_tensor_set(u, i, ad_tensor_get(t, i));
  ad_tensor_free(t);
  return u;
}

/* |got - want| <= tol elementwise (NaN only against NaN, inf against the
 * same inf), shapes equal. */
static void expect_close(const ad_tensor *got, const ad_tensor *want, double tol,
                         const char *what) {
  cr_assert_not_null(got, "%s is NULL", what);
  cr_assert_not_null(want, "%s: no reference", what);
  char a[64], b[64];
  cr_assert_eq(got->ndim, want->ndim, "%s: %s vs PyTorch %s", what, ad_shape_str(got, a, sizeof a),
               ad_shape_str(want, b, sizeof b));
  for (int i = 0; i < got->ndim; i++)
    cr_assert_eq(got->shape[i], want->shape[i], "%s: %s vs PyTorch %s", what,
                 ad_shape_str(got, a, sizeof a), ad_shape_str(want, b, sizeof b));
  for (int64_t i = 0; i < got->size; i++) {
    double g = ad_tensor_get(got, i), w = ad_tensor_get(want, i);
    bool ok = isnan(w) ? isnan(g) : isinf(w) ? g == w : fabs(g - w) <= tol;
    QUICK_ASSERT(ok, "%s[%lld] = %.17g, PyTorch %.17g", what, (long long)i, g, w);
  }
}

/* ------------------------------------------------------------------ SDPA */

static const char *const sdpa_cases[] = {"basic",       "heads", "causal",     "causal_wide",
                                         "causal_tall", "mask",  "mask_bcast", "causal_mask"};

static void sdpa_fixture(ad_dtype dt, double tol) {
  for (size_t ci = 0; ci < sizeof sdpa_cases / sizeof *sdpa_cases; ci++) {
    const char *cs = sdpa_cases[ci];
    char n[96];
#define FX(field) (snprintf(n, sizeof n, "sdpa.%s.%s", cs, field), fx(ctx, dt, n))
    ad_tensor *q = FX("q"), *k = FX("k"), *v = FX("v"), *mask = FX("mask"), *o = FX("opts");
    ad_tensor *gy = FX("gy"), *want = FX("out"), *ww = FX("weights");
    ad_tensor *dq = FX("dq"), *dk = FX("dk"), *dv = FX("dv");
#undef FX
    ad_tensor *in[3] = {q, k, v};
    for (int i = 0; i < 3; i++) ad_tensor_set_requires_grad(in[i], true);
    ad_tensor *w = NULL;
    ad_attention_opts ao = {.scale = ad_tensor_get(o, 0),
                            .causal = ad_tensor_get(o, 1) != 0,
                            .mask = mask,
                            .weights = &w};
    ad_tensor *y = ad_scaled_dot_product_attention(ctx, q, k, v, &ao);
    cr_assert_not_null(y, "%s: %s", cs, ad_last_error(ctx));
    snprintf(n, sizeof n, "%s out", cs);
    expect_close(y, want, tol, n);
    snprintf(n, sizeof n, "%s weights", cs);
    expect_close(w, ww, tol, n);
    cr_assert_eq(ad_backward(ctx, y, gy), AD_OK, "%s", ad_last_error(ctx));
    snprintf(n, sizeof n, "%s dq", cs);
    expect_close(q->grad, dq, tol, n);
    snprintf(n, sizeof n, "%s dk", cs);
    expect_close(k->grad, dk, tol, n);
    snprintf(n, sizeof n, "%s dv", cs);
    expect_close(v->grad, dv, tol, n);
    ad_tape_reset(ctx);
    ad_tensor *all[] = {q, k, v, mask, o, gy, want, ww, dq, dk, dv};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_tensor_free(all[i]);
  }
}

Test(sdpa, matches_pytorch_f64) { sdpa_fixture(AD_F64, 1e-10); }

Test(sdpa, matches_pytorch_f32) { sdpa_fixture(AD_F32, 1e-5); }

typedef struct sdpa_fn_ud {
  bool causal;
  ad_tensor *mask;
} sdpa_fn_ud;

static ad_tensor *sdpa_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)n;
  const sdpa_fn_ud *u = ud;
  ad_attention_opts o = {.causal = u->causal, .mask = u->mask};
  return ad_scaled_dot_product_attention(c, in[0], in[1], in[2], &o);
}

static void check_derivatives(ad_dtype dt, int nd, const int64_t *qs, const int64_t *ks,
                              const int64_t *vs, bool causal, bool with_mask) {
  ad_rng rng;
  ad_rng_seed(&rng, 11);
  ad_tensor *in[3] = {ad_rand(ctx, &rng, dt, nd, qs, -1, 1), ad_rand(ctx, &rng, dt, nd, ks, -1, 1),
                      ad_rand(ctx, &rng, dt, nd, vs, -1, 1)};
  for (int i = 0; i < 3; i++) ad_tensor_set_requires_grad(in[i], true);
  sdpa_fn_ud u = {.causal = causal};
  if (with_mask) { /* [L, S] with one -inf per row but never a whole row */
    int64_t ms[2] = {qs[nd - 2], ks[nd - 2]};
    u.mask = ad_rand(ctx, &rng, dt, 2, ms, -1, 1);
    for (int64_t i = 0; i < ms[0]; i++)
      ad_tensor_set(u.mask, i * ms[1] + (i + 1) % ms[1], -INFINITY);
  }
  /* f32: the analytic side rounds to float (the numeric side is float64) */
  ad_check_opts co = {.eps = 1e-6,
                      .atol = dt == AD_F64 ? 1e-7 : 1e-4,
                      .rtol = dt == AD_F64 ? 1e-6 : 1e-3,
                      .seed = 5};
  ad_check_report r;
  cr_assert_eq(ad_gradcheck(ctx, sdpa_fn, &u, 3, in, &co, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed, "gradcheck: input %d [%lld] analytic %g numeric %g", r.input,
            (long long)r.index, r.analytic, r.numeric);
  cr_assert_gt(r.checked, 0);
  cr_assert_eq(ad_gradgradcheck(ctx, sdpa_fn, &u, 3, in, &co, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed, "gradgradcheck: input %d [%lld] analytic %g numeric %g", r.input,
            (long long)r.index, r.analytic, r.numeric);
  for (int i = 0; i < 3; i++) ad_tensor_free(in[i]);
  ad_tensor_free(u.mask);
}

Test(sdpa, first_and_second_derivatives_f64) {
  int64_t q[3] = {2, 3, 4}, k[3] = {2, 5, 4}, v[3] = {2, 5, 3};
  check_derivatives(AD_F64, 3, q, k, v, false, false);
  check_derivatives(AD_F64, 3, q, k, v, true, true);
  int64_t q4[4] = {1, 2, 3, 2}, v4[4] = {1, 2, 3, 2};
  check_derivatives(AD_F64, 4, q4, q4, v4, true, false);
}

Test(sdpa, first_and_second_derivatives_f32) {
  int64_t q[3] = {2, 3, 4}, k[3] = {2, 4, 4}, v[3] = {2, 4, 3};
  check_derivatives(AD_F32, 3, q, k, v, false, false);
  check_derivatives(AD_F32, 3, q, k, v, true, true);
}

Test(sdpa, fully_masked_row_is_nan) {
  int64_t s[2] = {2, 3};
  ad_tensor *q = ad_ones(ctx, AD_F64, 2, s), *k = ad_ones(ctx, AD_F64, 2, s);
  ad_tensor *m = ad_zeros(ctx, AD_F64, 2, (int64_t[]){2, 2});
  ad_tensor_set(m, 2, -INFINITY), ad_tensor_set(m, 3, -INFINITY); /* row 1: every key */
  ad_attention_opts o = {.mask = m};
  ad_tensor *y = ad_scaled_dot_product_attention(ctx, q, k, k, &o);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  for (int j = 0; j < 3; j++) {
    cr_assert_float_eq(ad_tensor_get(y, j), 1.0, 1e-15);
    cr_assert(isnan(ad_tensor_get(y, 3 + j)), "row 1 col %d = %g", j, ad_tensor_get(y, 3 + j));
  }
  ad_tensor_free(q), ad_tensor_free(k), ad_tensor_free(m);
}

/* The causal flag is PyTorch's additive causal mask: with a padding mask
 * that leaves row 2 no key, the values and the gradients of q, k and v are
 * bit for bit those of the explicit mask (0 on and below the diagonal,
 * -inf above), NaN for every key and value as in PyTorch (a select would
 * have kept the keys past row 2 finite). */
Test(sdpa, causal_flag_is_the_added_causal_mask) {
  enum { L = 4, S = 4, E = 3 };
  ad_rng rng;
  ad_rng_seed(&rng, 7);
  ad_tensor *in[2][3];
  for (int i = 0; i < 3; i++) {
    in[0][i] = ad_zeros(ctx, AD_F64, 2, (int64_t[]){i ? S : L, E});
    for (int64_t e = 0; e < in[0][i]->size; e++) ad_tensor_set(in[0][i], e, ad_rng_normal(&rng));
  }
  ad_tensor *pad = ad_zeros(ctx, AD_F64, 2, (int64_t[]){L, S});
  ad_tensor *both = ad_zeros(ctx, AD_F64, 2, (int64_t[]){L, S});
  for (int64_t i = 0; i < L; i++)
    for (int64_t j = 0; j < S; j++) {
      double p = i == 2 && j <= 2 ? -INFINITY : 0.0; /* row 2: keys 0..2, all it sees */
      ad_tensor_set(pad, i * S + j, p);
      ad_tensor_set(both, i * S + j, j > i ? -INFINITY : p);
    }
  ad_tensor *y[2];
  for (int r = 0; r < 2; r++) {
    for (int i = 0; i < 3; i++) {
      if (r) in[1][i] = ad_tensor_clone(ctx, in[0][i]);
      ad_tensor_set_requires_grad(in[r][i], true);
    }
    ad_attention_opts o = {.causal = r == 0, .mask = r == 0 ? pad : both};
    y[r] = ad_scaled_dot_product_attention(ctx, in[r][0], in[r][1], in[r][2], &o);
    cr_assert_not_null(y[r], "%s", ad_last_error(ctx));
    cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y[r]), NULL), AD_OK, "%s", ad_last_error(ctx));
  }
  for (int64_t e = 0; e < y[0]->size; e++) {
    double a = ad_tensor_get(y[0], e), b = ad_tensor_get(y[1], e);
    cr_assert(memcmp(&a, &b, sizeof a) == 0, "y[%lld]: %g against %g", (long long)e, a, b);
  }
  int nan_k = 0;
  for (int i = 0; i < 3; i++)
    for (int64_t e = 0; e < in[0][i]->size; e++) {
      double a = ad_tensor_get(in[0][i]->grad, e), b = ad_tensor_get(in[1][i]->grad, e);
      cr_assert(isnan(a) == isnan(b) && (isnan(a) || a == b), "input %d grad[%lld]: %g against %g",
                i, (long long)e, a, b);
      nan_k += i == 1 && isnan(a);
    }
  cr_assert_eq(nan_k, S * E, "every key's gradient is NaN, as PyTorch's: %d of %d", nan_k, S * E);
  for (int r = 0; r < 2; r++)
    for (int i = 0; i < 3; i++) ad_tensor_free(in[r][i]);
  ad_tensor_free(pad), ad_tensor_free(both);
}

/* No key (S = 0): the empty sum, zeros, as the composition in PyTorch;
 * the gradient of q is zeros too. */
/* In anomaly mode the causal mask's -inf (and a mask's) were reported as
 * an anomaly of the add that applies them ("add: input 1 ([3,3]) carries
 * a non-finite value"), so causal attention always failed there; found by
 * fuzz/fuzz_ops. The masked scores are not checked, the weights are: a
 * row left with no key still fails, at softmax. */
Test(sdpa, masks_pass_anomaly_mode) {
  int64_t s[2] = {3, 4};
  ad_tensor *q = ad_ones(ctx, AD_F32, 2, s);
  ad_tensor *mask = ad_zeros(ctx, AD_F64, 2, (int64_t[]){3, 3});
  ad_tensor_set(mask, 1, -INFINITY);
  ad_tensor_set_requires_grad(q, true);
  ad_set_anomaly_mode(ctx, true);
  ad_attention_opts o = {.causal = true, .mask = mask};
  ad_tensor *y = ad_scaled_dot_product_attention(ctx, q, q, q, &o);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_float_eq(ad_tensor_get(y, 0), 1.0, 1e-6);
  ad_tensor_set(mask, 0, -INFINITY); /* row 0: its one key masked */
  ad_tape_reset(ctx);
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, q, q, &o));
  test_expect_error(ctx, AD_ERR_NAN, "softmax", NULL);
  cr_assert(ad_anomaly_mode(ctx), "anomaly mode was left on");
  ad_set_anomaly_mode(ctx, false);
  ad_tensor_free(q), ad_tensor_free(mask);
}

Test(sdpa, empty_source_gives_zeros) {
  ad_tensor *q = ad_ones(ctx, AD_F32, 3, (int64_t[]){2, 3, 4});
  ad_tensor *k = ad_ones(ctx, AD_F32, 3, (int64_t[]){2, 0, 4});
  ad_tensor *v = ad_ones(ctx, AD_F32, 3, (int64_t[]){2, 0, 5});
  ad_tensor_set_requires_grad(q, true);
  ad_attention_opts o = {.causal = true};
  ad_tensor *y = ad_scaled_dot_product_attention(ctx, q, k, v, &o);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert_eq(y->ndim, 3);
  cr_assert(y->shape[0] == 2 && y->shape[1] == 3 && y->shape[2] == 5);
  for (int64_t i = 0; i < y->size; i++) cr_assert_eq(ad_tensor_get(y, i), 0.0);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  for (int64_t i = 0; q->grad && i < q->grad->size; i++)
    cr_assert_eq(ad_tensor_get(q->grad, i), 0.0);
  ad_tensor_free(q), ad_tensor_free(k), ad_tensor_free(v);
}

Test(sdpa, graph_dump_shows_the_steps) {
  int64_t s[2] = {3, 2};
  ad_tensor *q = ad_ones(ctx, AD_F32, 2, s);
  ad_tensor_set_requires_grad(q, true);
  ad_attention_opts o = {.causal = true};
  ad_tensor *y = ad_scaled_dot_product_attention(ctx, q, q, q, &o);
  cr_assert_not_null(y);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ad_graph *g = ad_graph_new(ctx);
  cr_assert_eq(ad_graph_dot(g, f, y, 0), AD_OK, "%s", ad_last_error(ctx));
  fclose(f);
  const char *steps[] = {"matmul", "mul_scalar", "add", "softmax"};
  for (int i = 0; i < 4; i++) cr_assert(strstr(buf, steps[i]), "no %s in:\n%s", steps[i], buf);
  free(buf);
  ad_graph_free(g);
  ad_tensor_free(q);
}

Test(sdpa, dropout_zeroes_or_scales_the_weights) {
  ad_rng rng, drop;
  ad_rng_seed(&rng, 2);
  ad_rng_seed(&drop, 3);
  int64_t s[3] = {2, 8, 4};
  ad_tensor *q = ad_rand(ctx, &rng, AD_F64, 3, s, -1, 1),
            *k = ad_rand(ctx, &rng, AD_F64, 3, s, -1, 1);
  ad_tensor *w0 = NULL, *w1 = NULL;
  ad_attention_opts plain = {.weights = &w0},
                    dropped = {.dropout_p = 0.25, .rng = &drop, .weights = &w1};
  cr_assert_not_null(ad_scaled_dot_product_attention(ctx, q, k, k, &plain));
  cr_assert_not_null(ad_scaled_dot_product_attention(ctx, q, k, k, &dropped));
  int64_t zeros = 0;
  for (int64_t i = 0; i < w0->size; i++) {
    double a = ad_tensor_get(w0, i), b = ad_tensor_get(w1, i);
    zeros += b == 0;
    cr_assert(b == 0 || fabs(b - a / 0.75) < 1e-15, "[%lld] %g vs %g", (long long)i, b, a);
  }
  cr_assert(zeros > 10 && zeros < 54, "%lld of 128 dropped", (long long)zeros); /* ~32 */
  ad_tensor_free(q), ad_tensor_free(k);
}

/* Batch dims broadcast as in ad_matmul: one k, v [1, S, E] shared by a
 * batch of queries gives the bits of the same k, v copied per batch, and
 * their gradients are summed over the batch. */
Test(sdpa, batch_dims_broadcast) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  int64_t qs[3] = {3, 4, 6}, ks[3] = {1, 5, 6}, kx[3] = {3, 5, 6};
  ad_tensor *q = ad_randn(ctx, &rng, AD_F64, 3, qs, 0, 1);
  ad_tensor *k = ad_randn(ctx, &rng, AD_F64, 3, ks, 0, 1);
  ad_tensor *v = ad_randn(ctx, &rng, AD_F64, 3, ks, 0, 1);
  ad_tensor_set_requires_grad(k, true);
  ad_attention_opts o = {.causal = true};
  ad_tensor *y = ad_scaled_dot_product_attention(ctx, q, k, v, &o);
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  cr_assert(y->ndim == 3 && y->shape[0] == 3 && y->shape[1] == 4 && y->shape[2] == 6);
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y), NULL), AD_OK, "%s", ad_last_error(ctx));
  ad_tensor *gk = ad_tensor_clone(ctx, k->grad), *y1 = ad_tensor_clone(ctx, y);
  ad_tape_reset(ctx);
  /* the same with k and v expanded to the batch, k's copy a leaf of its own */
  ad_tensor *ke = ad_tensor_clone(ctx, ad_expand(ctx, k, 3, kx));
  ad_tensor *ve = ad_expand(ctx, v, 3, kx);
  ad_tensor_set_requires_grad(ke, true);
  ad_tensor *y2 = ad_scaled_dot_product_attention(ctx, q, ke, ve, &o);
  cr_assert_not_null(y2, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_backward(ctx, ad_sum(ctx, y2), NULL), AD_OK);
  for (int64_t i = 0; i < y2->size; i++)
    cr_assert_eq(ad_tensor_get(y1, i), ad_tensor_get(y2, i), "y[%lld]", (long long)i);
  for (int64_t i = 0; i < gk->size; i++) {
    double want = 0;
    for (int b = 0; b < 3; b++) want += ad_tensor_get(ke->grad, b * gk->size + i);
    cr_assert(test_close(ad_tensor_get(gk, i), want, 1e-12 * (1 + fabs(want))), "dk[%lld] %g vs %g",
              (long long)i, ad_tensor_get(gk, i), want);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(q), ad_tensor_free(k), ad_tensor_free(v), ad_tensor_free(ke);
  ad_tensor_free(gk), ad_tensor_free(y1);
}

Test(sdpa, bad_input) {
  int64_t qs[3] = {2, 3, 4}, ks[3] = {2, 5, 6}, vs[3] = {2, 4, 6}, bs[3] = {3, 5, 4};
  ad_tensor *q = ad_ones(ctx, AD_F32, 3, qs), *k6 = ad_ones(ctx, AD_F32, 3, ks);
  ad_tensor *v4 = ad_ones(ctx, AD_F32, 3, vs), *kb = ad_ones(ctx, AD_F32, 3, bs);
  ad_tensor *k = ad_ones(ctx, AD_F32, 3, (int64_t[]){2, 5, 4});
  ad_tensor *v = ad_ones(ctx, AD_F32, 3, (int64_t[]){2, 5, 6});
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, k6, k6, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "q [2,3,4] and k [2,5,6] have different embedding sizes");
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, k, v4, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "k [2,5,4] and v [2,4,6] have different source lengths");
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, kb, kb, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "batch dimensions do not broadcast: q [2,3,4], k [3,5,4], v [3,5,4]");
  ad_tensor *m = ad_zeros(ctx, AD_F32, 2, (int64_t[]){3, 4});
  ad_attention_opts o = {.mask = m};
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, k, v, &o));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "mask [3,4] does not broadcast to the scores' shape [2,3,5]");
  ad_tensor *md = ad_zeros(ctx, AD_I32, 2, (int64_t[]){3, 5});
  o.mask = md;
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, k, v, &o));
  expect_status_msg(ctx, AD_ERR_DTYPE, "mask [3,5] is i32; an additive float mask is needed");
  ad_attention_opts od = {.dropout_p = 0.5};
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, k, v, &od));
  expect_status_msg(ctx, AD_ERR_NULL, "needs an rng");
  od.dropout_p = 1.0;
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, k, v, &od));
  expect_status_msg(ctx, AD_ERR_ARG, "dropout_p 1 is outside [0, 1)");
  ad_attention_opts os = {.scale = INFINITY};
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, k, v, &os));
  expect_status_msg(ctx, AD_ERR_ARG, "scale inf must be finite");
  ad_tensor *w = q;
  ad_attention_opts ow = {.weights = &w};
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q, NULL, v, &ow));
  cr_assert_null(w);
  expect_status_msg(ctx, AD_ERR_NULL, "scaled_dot_product_attention: k is NULL");
  ad_tensor *q2 = ad_ones(ctx, AD_F32, 2, (int64_t[]){3, 4});
  cr_assert_null(ad_scaled_dot_product_attention(ctx, q2, k, v, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "must have the same number of dims");
  ad_tensor *all[] = {q, k6, v4, kb, k, v, m, md, q2};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_tensor_free(all[i]);
}

/* ------------------------------------------------------------------- MHA */

enum { E = 6, H = 2 };
static const char *const mha_param_names[4] = {"in_proj_weight", "in_proj_bias", "out_proj.weight",
                                               "out_proj.bias"};

/* A layer with the fixture's parameters. */
static nn_layer *mha_layer(ad_dtype dt, bool batch_first, bool causal) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_mha_opts o = {.batch_first = batch_first, .causal = causal, .dtype = dt};
  nn_layer *l = nn_multihead_attention_new(ctx, E, H, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), 4);
  for (int i = 0; i < 4; i++) {
    cr_assert_str_eq(nn_params_name(p, i), mha_param_names[i]);
    char n[64];
    snprintf(n, sizeof n, "mha.%s", mha_param_names[i]);
    ad_tensor *t = fx(ctx, dt, n);
    cr_assert_eq(ad_tensor_copy_data(nn_params_tensor(p, i), t), AD_OK, "%s", ad_last_error(ctx));
    ad_tensor_free(t);
  }
  return l;
}

static void mha_fixture(ad_dtype dt, const char *cs, bool batch_first, bool per_head, double tol) {
  char n[96];
#define FX(field) (snprintf(n, sizeof n, "mha.%s.%s", cs, field), fx(ctx, dt, n))
  ad_tensor *q = FX("query"), *k = FX("key"), *v = FX("value"), *am = FX("attn_mask");
  ad_tensor *kpm = FX("key_padding_mask"), *gy = FX("gy"), *gw = FX("gw"), *want = FX("out");
  ad_tensor *ww = FX("weights"), *dq = FX("dquery"), *dk = FX("dkey"), *dv = FX("dvalue");
  ad_tensor *dp[4];
  for (int i = 0; i < 4; i++) {
    char f[48];
    snprintf(f, sizeof f, "d.%s", mha_param_names[i]);
    dp[i] = FX(f);
  }
#undef FX
  nn_layer *l = mha_layer(dt, batch_first, false);
  bool self = !k;
  ad_tensor_set_requires_grad(q, true);
  if (!self) ad_tensor_set_requires_grad(k, true), ad_tensor_set_requires_grad(v, true);
  nn_mha_args a = {
      .attn_mask = am, .key_padding_mask = kpm, .per_head_weights = per_head, .training = true};
  ad_tensor *w = NULL;
  ad_tensor *y = nn_multihead_attention(l, q, self ? q : k, self ? q : v, &a, &w);
  cr_assert_not_null(y, "%s: %s", cs, ad_last_error(ctx));
  snprintf(n, sizeof n, "%s out", cs);
  expect_close(y, want, tol, n);
  snprintf(n, sizeof n, "%s weights", cs);
  expect_close(w, ww, tol, n);
  ad_tensor *loss = ad_add(ctx, ad_sum(ctx, ad_mul(ctx, y, gy)), ad_sum(ctx, ad_mul(ctx, w, gw)));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  snprintf(n, sizeof n, "%s dquery", cs);
  expect_close(q->grad, dq, tol, n);
  if (!self) {
    snprintf(n, sizeof n, "%s dkey", cs);
    expect_close(k->grad, dk, tol, n);
    snprintf(n, sizeof n, "%s dvalue", cs);
    expect_close(v->grad, dv, tol, n);
  }
  for (int i = 0; i < 4; i++) {
    snprintf(n, sizeof n, "%s d%s", cs, mha_param_names[i]);
    expect_close(nn_params_tensor(nn_layer_params(l), i)->grad, dp[i], tol, n);
  }
  ad_tape_reset(ctx);
  nn_layer_free(l);
  ad_tensor *all[] = {q, k, v, am, kpm, gy, gw, want, ww, dq, dk, dv, dp[0], dp[1], dp[2], dp[3]};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_tensor_free(all[i]);
}

static void mha_all(ad_dtype dt, double tol) {
  mha_fixture(dt, "cross", false, false, tol);
  mha_fixture(dt, "causal", true, true, tol);
  mha_fixture(dt, "mask3d", true, false, tol);
  mha_fixture(dt, "unbatched", false, false, tol);
}

Test(mha, matches_pytorch_f64) { mha_all(AD_F64, 1e-10); }

Test(mha, matches_pytorch_f32) { mha_all(AD_F32, 1e-5); }

/* The causal case again, through the layer's causal flag in a Sequential
 * model (self-attention) instead of PyTorch's -inf mask. */
Test(mha, causal_self_attention_in_sequential) {
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, mha_layer(AD_F64, true, true)), AD_OK, "%s", ad_last_error(ctx));
  cr_assert_not_null(nn_model_param(m, "0.in_proj_weight"));
  cr_assert_not_null(nn_model_param(m, "0.out_proj.bias"));
  ad_tensor *x = fx(ctx, AD_F64, "mha.causal.query"), *want = fx(ctx, AD_F64, "mha.causal.out");
  ad_tensor *y = nn_model_forward(m, x);
  expect_close(y, want, 1e-10, "sequential causal out");
  ad_tensor_free(x), ad_tensor_free(want);
  nn_model_free(m);
}

Test(mha, pytorch_state_dict_loads_unchanged) {
  ad_rng rng;
  ad_rng_seed(&rng, 4);
  nn_mha_opts o = {.dtype = AD_F64};
  nn_layer *l = nn_multihead_attention_new(ctx, E, H, &rng, &o);
  cr_assert_not_null(l);
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_checkpoint_load(ctx, ATTN_FIXTURE, 4, nn_params_names(p), nn_params_tensors(p)),
               AD_OK, "%s", ad_last_error(ctx));
  ad_tensor *want = fx(ctx, AD_F64, "in_proj_bias");
  expect_close(nn_params_find(p, "in_proj_bias"), want, 0, "in_proj_bias");
  ad_tensor_free(want);
  nn_layer_free(l);
}

Test(mha, pytorch_initialisation) {
  ad_rng rng;
  ad_rng_seed(&rng, 9);
  const int64_t e = 16;
  nn_layer *l = nn_multihead_attention_new(ctx, e, 4, &rng, NULL);
  cr_assert_not_null(l);
  nn_params *p = nn_layer_params(l);
  double lim_in = sqrt(6.0 / (double)(e + 3 * e)), lim_out = 1.0 / sqrt((double)e);
  const double lims[4] = {lim_in, 0, lim_out, 0};
  for (int i = 0; i < 4; i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    cr_assert_eq(t->dtype, AD_F32);
    double mx = 0;
    for (int64_t j = 0; j < t->size; j++) mx = fmax(mx, fabs(ad_tensor_get(t, j)));
    cr_assert(mx <= lims[i], "%s: max |w| %g > %g", nn_params_name(p, i), mx, lims[i]);
    if (lims[i] > 0) /* 256 or 768 draws reach beyond 90% of the bound */
      cr_assert(mx > 0.9 * lims[i], "%s: max |w| %g of %g", nn_params_name(p, i), mx, lims[i]);
  }
  cr_assert_eq(nn_params_tensor(p, 0)->shape[0], 3 * e);
  nn_layer_free(l);
}

Test(mha, dropout_in_training_only) {
  ad_rng rng;
  ad_rng_seed(&rng, 9);
  nn_mha_opts o = {.batch_first = true, .dropout = 0.5, .seed = 7, .dtype = AD_F64};
  nn_layer *l = nn_multihead_attention_new(ctx, E, H, &rng, &o);
  int64_t s[3] = {2, 5, E};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 3, s, -1, 1);
  ad_tensor *w_eval = NULL, *w_train = NULL, *w_eval2 = NULL;
  nn_mha_args ev = {.per_head_weights = true}, tr = {.per_head_weights = true, .training = true};
  ad_tensor *y0 = nn_multihead_attention(l, x, x, x, &ev, &w_eval);
  ad_tensor *y1 = nn_multihead_attention(l, x, x, x, &tr, &w_train);
  ad_tensor *y2 = nn_multihead_attention(l, x, x, x, &ev, &w_eval2);
  cr_assert(y0 && y1 && y2, "%s", ad_last_error(ctx));
  int64_t zeros = 0;
  for (int64_t i = 0; i < w_eval->size; i++) {
    double a = ad_tensor_get(w_eval, i), b = ad_tensor_get(w_train, i);
    zeros += b == 0;
    cr_assert(b == 0 || fabs(b - 2 * a) < 1e-15, "[%lld] %g vs %g", (long long)i, b, a);
    cr_assert_eq(ad_tensor_get(w_eval2, i), a);
  }
  cr_assert(zeros > 20 && zeros < 80, "%lld of 100 dropped", (long long)zeros);
  ad_tensor_free(x);
  nn_layer_free(l);
}

static ad_tensor *ident(ad_ctx *c, ad_tensor *x, bool training, void *ud) {
  (void)c, (void)training, (void)ud;
  return x;
}

Test(mha, bad_input) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  cr_assert_null(nn_multihead_attention_new(ctx, 6, 4, &rng, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "embed_dim 6 and num_heads 4");
  /* sizes past nn_rnn_new's bound are refused before 3 * embed_dim (which
   * overflowed int64 for the last two) */
  const int64_t huge[] = {(INT64_C(1) << 32) + 1, INT64_C(1) << 40, INT64_C(1) << 62, INT64_MAX};
  for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
    cr_assert_null(nn_multihead_attention_new(ctx, huge[i], 1, &rng, NULL));
    char want[96];
    snprintf(want, sizeof want, "embed_dim %lld and num_heads 1", (long long)huge[i]);
    cr_assert(strstr(ad_last_error(ctx), want), "%s", ad_last_error(ctx));
    expect_status_msg(ctx, AD_ERR_ARG, "embed_dim at most 2^32");
  }
  nn_mha_opts od = {.dropout = 1.5};
  cr_assert_null(nn_multihead_attention_new(ctx, 6, 2, &rng, &od));
  expect_status_msg(ctx, AD_ERR_ARG, "dropout 1.5 is outside [0, 1)");
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_multihead_attention_new(ctx, E, H, &rng, NULL)), AD_OK);
  nn_layer *l = nn_model_layer(m, 0);
  ad_tensor *x = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, E});
  ad_tensor *x5 = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, 5});
  cr_assert_null(nn_model_forward(m, x5));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "multihead_attention '0': query [4,2,5], key [4,2,5] and value "
                    "[4,2,5] must be [L, N, E] or [L, E] with E = embed_dim 6");
  ad_tensor *am = ad_zeros(ctx, AD_F32, 2, (int64_t[]){4, 3});
  nn_mha_args a = {.attn_mask = am};
  cr_assert_null(nn_multihead_attention(l, x, x, x, &a, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "attn_mask [4,3] must be [L, S] = [4,4] or [N*num_heads, L, S] = [4,4,4]");
  ad_tensor *kpm = ad_zeros(ctx, AD_I32, 2, (int64_t[]){4, 2});
  nn_mha_args b = {.key_padding_mask = kpm};
  cr_assert_null(nn_multihead_attention(l, x, x, x, &b, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "key_padding_mask [4,2] must be [N, S] = [2,4]");
  ad_tensor *k3 = ad_ones(ctx, AD_F32, 3, (int64_t[]){3, 2, E});
  ad_tensor *v4 = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, E});
  cr_assert_null(nn_multihead_attention(l, x, k3, v4, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "key and value must have the same length");
  ad_tensor *xd = ad_ones(ctx, AD_F64, 3, (int64_t[]){4, 2, E});
  cr_assert_null(nn_multihead_attention(l, xd, xd, xd, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_DTYPE, "the layer is f32");
  nn_layer *other = nn_flatten_new(ctx);
  cr_assert_null(nn_multihead_attention(other, x, x, x, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "is not a multihead_attention");
  nn_layer_free(other);
  /* a lambda may take the kind's name; it has no attention state to read */
  other = nn_lambda_new(ctx, "multihead_attention", ident, NULL);
  cr_assert_null(nn_multihead_attention(other, x, x, x, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_ARG, "is not a multihead_attention");
  nn_layer_free(other);
  ad_tensor *all[] = {x, x5, am, kpm, k3, v4, xd};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_tensor_free(all[i]);
  nn_model_free(m);
}

/* The masks in their other dtypes: PyTorch's bool attn_mask as AD_I32
 * (nonzero = not allowed) in place of the causal case's -inf mask, and a
 * float key_padding_mask (added) in place of the cross case's bool one. */
Test(mha, i32_attn_mask_and_float_key_padding_mask) {
  ad_tensor *x = fx(ctx, AD_F64, "mha.causal.query"), *want = fx(ctx, AD_F64, "mha.causal.out");
  ad_tensor *fm = fx(ctx, AD_F64, "mha.causal.attn_mask");
  ad_tensor *im = ad_zeros(ctx, AD_I32, 2, fm->shape);
  for (int64_t i = 0; i < fm->size; i++) ad_tensor_set(im, i, isinf(ad_tensor_get(fm, i)));
  nn_layer *l = mha_layer(AD_F64, true, false);
  nn_mha_args a = {.attn_mask = im};
  expect_close(nn_multihead_attention(l, x, x, x, &a, NULL), want, 1e-10, "i32 attn_mask");
  nn_layer_free(l);
  ad_tensor *q = fx(ctx, AD_F64, "mha.cross.query"), *k = fx(ctx, AD_F64, "mha.cross.key");
  ad_tensor *v = fx(ctx, AD_F64, "mha.cross.value"), *am = fx(ctx, AD_F64, "mha.cross.attn_mask");
  ad_tensor *ik = fx(ctx, AD_F64, "mha.cross.key_padding_mask");
  ad_tensor *wc = fx(ctx, AD_F64, "mha.cross.out");
  ad_tensor *fk = ad_zeros(ctx, AD_F64, 2, ik->shape);
  for (int64_t i = 0; i < ik->size; i++)
    ad_tensor_set(fk, i, ad_tensor_get(ik, i) != 0 ? -INFINITY : 0.0);
  l = mha_layer(AD_F64, false, false);
  nn_mha_args b = {.attn_mask = am, .key_padding_mask = fk};
  expect_close(nn_multihead_attention(l, q, k, v, &b, NULL), wc, 1e-10, "float key_padding_mask");
  nn_layer_free(l);
  ad_tensor *all[] = {x, want, fm, im, q, k, v, am, ik, wc, fk};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_tensor_free(all[i]);
}
