/* test_nn_attn_ext.c: the multi-head attention layer with PyTorch 1.13's
 * kdim, vdim, add_bias_kv and add_zero_attn (nn_multihead_attention_new_ext)
 * against PyTorch (tests/attn_ext_fixtures.h, written by
 * tools/gen_attn_ext_fixtures.py: outputs, attention weights and the
 * gradients of the inputs and every parameter, in float64), the parameter
 * names, shapes and order of PyTorch's state dict, its initialisation,
 * first and second derivatives by central differences, the description,
 * and the error messages. */
#include "attn_ext_fixtures.h"
#include "nn.h"
#include "test_alloc.h"
#include "test_layer_values.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

TEST_CTX_SUITE(mha_ext);

static nn_mha_opts_ext case_opts(const ax_case *k, ad_dtype dt, bool causal) {
  return (nn_mha_opts_ext){.base = {.batch_first = k->batch_first, .causal = causal, .dtype = dt},
                           .kdim = k->kdim == AX_E ? 0 : k->kdim, /* 0 and E are the same layer */
                           .vdim = k->vdim,
                           .add_bias_kv = k->bias_kv,
                           .add_zero_attn = k->zero_attn};
}

/* The case's layer with PyTorch's state dict loaded under its names, after
 * checking that the layer lists the same names, in the same order, with
 * the same shapes. */
static nn_layer *case_layer(const ax_case *k, ad_dtype dt, bool causal) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_mha_opts_ext o = case_opts(k, dt, causal);
  nn_layer *l = nn_multihead_attention_new_ext(ctx, AX_E, AX_H, &rng, &o);
  cr_assert_not_null(l, "%s: %s", k->name, ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), k->nparams, "%s: %d parameters", k->name,
               (int)nn_params_count(p));
  for (int i = 0; i < k->nparams; i++) {
    const ax_param *q = &k->params[i];
    cr_assert_str_eq(nn_params_name(p, i), q->name, "%s: parameter %d", k->name, i);
    ad_tensor *t = nn_params_find(p, q->name);
    cr_assert_eq(t->ndim, q->ndim, "%s %s: ndim", k->name, q->name);
    for (int d = 0; d < q->ndim; d++)
      cr_assert_eq(t->shape[d], q->shape[d], "%s %s: dim %d", k->name, q->name, d);
    for (int64_t j = 0; j < t->size; j++) ad_tensor_set(t, j, q->value[j]);
  }
  return l;
}

static int64_t prod(int n, const int64_t *s) {
  int64_t p = 1;
  for (int i = 0; i < n; i++) p *= s[i];
  return p;
}

/* How a case's attention mask is given. */
typedef enum { MASK_AS_FIXTURE, MASK_I32, MASK_CAUSAL_FLAG, MASK_LAYER_CAUSAL } mask_way;

/* Runs case k in dtype dt, its masks given as way says (and the key
 * padding mask as float -inf / 0 when float_kpm), and compares the output,
 * the weights and every gradient with PyTorch's. */
static void check_case(const ax_case *k, ad_dtype dt, double tol, mask_way way, bool float_kpm) {
  char cs[96];
  snprintf(cs, sizeof cs, "%s/%s/%d/%d", k->name, ad_dtype_name(dt), (int)way, (int)float_kpm);
  nn_layer *l = case_layer(k, dt, way == MASK_LAYER_CAUSAL);
  int nd = k->unbatched ? 2 : 3;
  int64_t qs[3], ks[3], vs[3];
  int64_t n = AX_N, L = k->L, S = k->S;
  if (k->unbatched) {
    qs[0] = L, qs[1] = AX_E, ks[0] = vs[0] = S, ks[1] = k->kdim, vs[1] = k->vdim;
  } else if (k->batch_first) {
    qs[0] = ks[0] = vs[0] = n, qs[1] = L, ks[1] = vs[1] = S;
    qs[2] = AX_E, ks[2] = k->kdim, vs[2] = k->vdim;
  } else {
    qs[1] = ks[1] = vs[1] = n, qs[0] = L, ks[0] = vs[0] = S;
    qs[2] = AX_E, ks[2] = k->kdim, vs[2] = k->vdim;
  }
  ad_tensor *q = test_tensor_from(ctx, dt, nd, qs, k->query), *key = q, *val = q;
  ad_tensor_set_requires_grad(q, true);
  if (!k->self_attn) {
    key = test_tensor_from(ctx, dt, nd, ks, k->key),
    val = test_tensor_from(ctx, dt, nd, vs, k->value);
    ad_tensor_set_requires_grad(key, true), ad_tensor_set_requires_grad(val, true);
  }
  ad_tensor *mask = NULL, *kpm = NULL;
  bool bool_mask = k->mask_bool || (k->causal && way == MASK_I32);
  if (k->mask && (way == MASK_AS_FIXTURE || way == MASK_I32)) {
    mask = bool_mask ? ad_zeros(ctx, AD_I32, k->mask_ndim, k->mask_shape)
                     : test_tensor_from(ctx, dt, k->mask_ndim, k->mask_shape, k->mask);
    cr_assert_not_null(mask);
    if (bool_mask) /* nonzero where PyTorch's bool is True or its float -inf */
      for (int64_t i = 0; i < mask->size; i++)
        ad_tensor_set(mask, i, k->mask_bool ? k->mask[i] != 0 : isinf(k->mask[i]));
  }
  if (k->kpm) {
    int64_t kp[2] = {n, S};
    int knd = k->unbatched ? 1 : 2;
    kpm = ad_zeros(ctx, float_kpm ? dt : AD_I32, knd, kp + (2 - knd));
    for (int64_t i = 0; i < kpm->size; i++)
      ad_tensor_set(kpm, i, float_kpm ? (k->kpm[i] != 0 ? -INFINITY : 0.0) : k->kpm[i]);
  }
  nn_mha_args a = {.attn_mask = mask,
                   .key_padding_mask = kpm,
                   .causal = way == MASK_CAUSAL_FLAG,
                   .training = true,
                   .per_head_weights = !k->average};
  ad_tensor *w = NULL;
  ad_tensor *y = nn_multihead_attention(l, q, key, val, &a, &w);
  test_expect_case_close(ctx, y, k->out, y ? y->size : 0, tol, "out", cs);
  for (int i = 0; i < nd; i++) cr_assert_eq(y->shape[i], qs[i], "%s: out shape", cs);
  cr_assert_not_null(w);
  cr_assert_eq(w->ndim, k->w_ndim, "%s: weights ndim %d", cs, w->ndim);
  for (int i = 0; i < k->w_ndim; i++)
    cr_assert_eq(w->shape[i], k->w_shape[i], "%s: weights dim %d %lld", cs, i,
                 (long long)w->shape[i]);
  test_expect_case_close(ctx, w, k->weights, prod(k->w_ndim, k->w_shape), tol, "weights", cs);
  ad_tensor *gy = test_tensor_from(ctx, dt, nd, qs, k->gy),
            *gw = test_tensor_from(ctx, dt, k->w_ndim, k->w_shape, k->gw);
  ad_tensor *loss = ad_add(ctx, ad_sum(ctx, ad_mul(ctx, y, gy)), ad_sum(ctx, ad_mul(ctx, w, gw)));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  test_expect_case_close(ctx, q->grad, k->dquery, q->size, tol, "dquery", cs);
  if (!k->self_attn) {
    test_expect_case_close(ctx, key->grad, k->dkey, key->size, tol, "dkey", cs);
    test_expect_case_close(ctx, val->grad, k->dvalue, val->size, tol, "dvalue", cs);
  }
  nn_params *p = nn_layer_params(l);
  for (int i = 0; i < k->nparams; i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    test_expect_case_close(ctx, t->grad, k->params[i].grad, t->size, tol, k->params[i].name, cs);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(q), ad_tensor_free(gy), ad_tensor_free(gw);
  ad_tensor_free(mask), ad_tensor_free(kpm);
  if (!k->self_attn) ad_tensor_free(key), ad_tensor_free(val);
  nn_layer_free(l);
}

static void check_all(ad_dtype dt, double tol) {
  for (size_t i = 0; i < sizeof ax_cases / sizeof *ax_cases; i++) {
    const ax_case *k = &ax_cases[i];
    check_case(k, dt, tol, MASK_AS_FIXTURE, false);
    if (k->kpm) check_case(k, dt, tol, MASK_AS_FIXTURE, true);
    if (k->causal) { /* the -inf mask as i32, the call's flag, the layer's */
      check_case(k, dt, tol, MASK_I32, false);
      check_case(k, dt, tol, MASK_CAUSAL_FLAG, false);
      check_case(k, dt, tol, MASK_LAYER_CAUSAL, false);
    }
  }
}

Test(mha_ext, matches_pytorch_f64) { check_all(AD_F64, 1e-12); }

Test(mha_ext, matches_pytorch_f32) { check_all(AD_F32, 1e-5); }

/* nn_multihead_attention_new is _ext with the rest zero: the same
 * parameters (names and draws) and the same outputs; kdim = vdim = E
 * given explicitly is that layer too. */
Test(mha_ext, defaults_are_the_plain_layer) {
  ad_rng r1, r2, r3;
  ad_rng_seed(&r1, 3), ad_rng_seed(&r2, 3), ad_rng_seed(&r3, 3);
  nn_mha_opts o = {.batch_first = true, .dtype = AD_F64};
  nn_layer *a = nn_multihead_attention_new(ctx, 4, 2, &r1, &o);
  nn_layer *b = nn_multihead_attention_new_ext(ctx, 4, 2, &r2, &(nn_mha_opts_ext){.base = o});
  nn_layer *c = nn_multihead_attention_new_ext(ctx, 4, 2, &r3,
                                               &(nn_mha_opts_ext){.base = o, .kdim = 4, .vdim = 4});
  cr_assert(a && b && c, "%s", ad_last_error(ctx));
  nn_layer *ls[2] = {b, c};
  for (int j = 0; j < 2; j++) {
    nn_params *pa = nn_layer_params(a), *pb = nn_layer_params(ls[j]);
    cr_assert_eq(nn_params_count(pb), 4);
    for (int i = 0; i < 4; i++) {
      cr_assert_str_eq(nn_params_name(pa, i), nn_params_name(pb, i));
      ad_tensor *ta = nn_params_tensor(pa, i), *tb = nn_params_tensor(pb, i);
      for (int64_t e = 0; e < ta->size; e++)
        cr_assert_eq(ad_tensor_get(ta, e), ad_tensor_get(tb, e), "%s", nn_params_name(pa, i));
    }
  }
  ad_tensor *x = ad_rand(ctx, &r1, AD_F64, 3, (int64_t[]){2, 3, 4}, -1, 1);
  ad_tensor *ya = nn_multihead_attention(a, x, x, x, NULL, NULL);
  ad_tensor *yb = nn_multihead_attention(b, x, x, x, NULL, NULL);
  cr_assert(ya && yb);
  for (int64_t e = 0; e < ya->size; e++) cr_assert_eq(ad_tensor_get(ya, e), ad_tensor_get(yb, e));
  ad_tensor_free(x);
  nn_layer_free(a), nn_layer_free(b), nn_layer_free(c);
}

/* PyTorch's _reset_parameters: q, k, v_proj_weight Xavier uniform (their
 * own fans), bias_k and bias_v Xavier normal (std 1/sqrt(E)), the in-
 * projection bias zero, out_proj.weight within 1/sqrt(E). */
Test(mha_ext, pytorch_initialisation) {
  ad_rng rng;
  ad_rng_seed(&rng, 9);
  const int64_t e = 256, kd = 64, vd = 128;
  nn_mha_opts_ext o = {.kdim = kd, .vdim = vd, .add_bias_kv = true};
  nn_layer *l = nn_multihead_attention_new_ext(ctx, e, 4, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  const double lims[] = {sqrt(6.0 / (double)(e + e)),
                         sqrt(6.0 / (double)(e + kd)),
                         sqrt(6.0 / (double)(e + vd)),
                         0,
                         0,
                         0,
                         1 / sqrt((double)e),
                         0};
  cr_assert_eq(nn_params_count(p), 8);
  for (int i = 0; i < 8; i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    double mx = 0, ss = 0;
    for (int64_t j = 0; j < t->size; j++) {
      double v = ad_tensor_get(t, j);
      mx = fmax(mx, fabs(v)), ss += v * v;
    }
    const char *name = nn_params_name(p, i);
    if (i == 4 || i == 5) { /* bias_k, bias_v: 256 normal draws */
      double sd = sqrt(ss / (double)t->size), want = 1 / sqrt((double)e);
      cr_assert(fabs(sd - want) < 0.2 * want, "%s: std %g, want %g", name, sd, want);
      continue;
    }
    cr_assert(mx <= lims[i], "%s: max |w| %g > %g", name, mx, lims[i]);
    if (lims[i] > 0) cr_assert(mx > 0.9 * lims[i], "%s: max |w| %g of %g", name, mx, lims[i]);
  }
  nn_layer_free(l);
}

typedef struct grad_ud {
  nn_layer *l;
  ad_tensor *mask, *kpm;
} grad_ud;

static ad_tensor *mha_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c, (void)n;
  const grad_ud *u = ud;
  nn_mha_args a = {.attn_mask = u->mask, .key_padding_mask = u->kpm, .causal = true};
  ad_tensor *w = NULL;
  ad_tensor *y = nn_multihead_attention(u->l, in[0], in[1], in[2], &a, &w);
  return y && w ? ad_add(c, ad_sum(c, y), ad_sum(c, ad_mul(c, w, w))) : NULL;
}

/* The inputs of a tiny layer with all four options, masks and the causal
 * flag, by central differences (first and second order, ad_gradcheck),
 * and its parameters by central differences here (ad_gradcheck perturbs
 * the tensors it is given, which the layer does not read). */
Test(mha_ext, gradcheck_f64) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  nn_mha_opts_ext o = {.base = {.batch_first = true, .dtype = AD_F64},
                       .kdim = 3,
                       .vdim = 5,
                       .add_bias_kv = true,
                       .add_zero_attn = true};
  grad_ud u = {.l = nn_multihead_attention_new_ext(ctx, 4, 2, &rng, &o)};
  cr_assert_not_null(u.l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(u.l);
  ad_tensor *b = nn_params_find(p, "in_proj_bias");
  for (int64_t i = 0; i < b->size; i++) ad_tensor_set(b, i, 0.1 * (double)(i % 5) - 0.2);
  ad_tensor *in[3] = {ad_rand(ctx, &rng, AD_F64, 3, (int64_t[]){2, 3, 4}, -1, 1),
                      ad_rand(ctx, &rng, AD_F64, 3, (int64_t[]){2, 2, 3}, -1, 1),
                      ad_rand(ctx, &rng, AD_F64, 3, (int64_t[]){2, 2, 5}, -1, 1)};
  for (int i = 0; i < 3; i++) ad_tensor_set_requires_grad(in[i], true);
  u.mask = ad_rand(ctx, &rng, AD_F64, 2, (int64_t[]){3, 2}, -1, 1);
  u.kpm = ad_zeros(ctx, AD_I32, 2, (int64_t[]){2, 2});
  ad_tensor_set(u.kpm, 2, 1), ad_tensor_set(u.kpm, 3, 1); /* batch 1: every key */
  ad_check_opts co = {.eps = 1e-6, .atol = 1e-7, .rtol = 1e-6, .seed = 5};
  ad_check_report r;
  cr_assert_eq(ad_gradcheck(ctx, mha_fn, &u, 3, in, &co, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed, "gradcheck: input %d [%lld] analytic %g numeric %g", r.input,
            (long long)r.index, r.analytic, r.numeric);
  cr_assert_eq(r.checked, 6 * 4 + 2 * 2 * 3 + 2 * 2 * 5);
  cr_assert_eq(ad_gradgradcheck(ctx, mha_fn, &u, 3, in, &co, &r), AD_OK, "%s", ad_last_error(ctx));
  cr_assert(r.passed, "gradgradcheck: input %d [%lld] analytic %g numeric %g", r.input,
            (long long)r.index, r.analytic, r.numeric);
  /* the parameters: the loss's gradient against its central differences */
  ad_tensor *loss = mha_fn(ctx, 3, in, &u);
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  int np = (int)nn_params_count(p);
  cr_assert_eq(np, 8);
  ad_tensor *g[8];
  for (int i = 0; i < np; i++) g[i] = ad_tensor_clone(ctx, nn_params_tensor(p, i)->grad);
  ad_tape_reset(ctx);
  int64_t checked = 0;
  for (int i = 0; i < np; i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    for (int64_t j = 0; j < t->size; j++) {
      double x0 = ad_tensor_get(t, j), h = 1e-6, f[2];
      for (int sgn = 0; sgn < 2; sgn++) {
        ad_tensor_set(t, j, x0 + (sgn ? -h : h));
        ad_tensor *y = mha_fn(ctx, 3, in, &u);
        cr_assert_not_null(y, "%s", ad_last_error(ctx));
        f[sgn] = ad_tensor_get(y, 0);
        ad_tape_reset(ctx);
      }
      ad_tensor_set(t, j, x0);
      double num = (f[0] - f[1]) / (2 * h), an = ad_tensor_get(g[i], j);
      cr_assert(fabs(num - an) <= 1e-7 + 1e-6 * fabs(num), "%s[%lld]: analytic %.12g numeric %.12g",
                nn_params_name(p, i), (long long)j, an, num);
      checked++;
    }
    ad_tensor_free(g[i]);
  }
  cr_assert_eq(checked, 4 * 4 + 4 * 3 + 4 * 5 + 12 + 4 + 4 + 4 * 4 + 4);
  for (int i = 0; i < 3; i++) ad_tensor_free(in[i]);
  ad_tensor_free(u.mask), ad_tensor_free(u.kpm);
  nn_layer_free(u.l);
}

Test(mha_ext, describe_names_the_options) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_mha_opts_ext o = {.base = {.batch_first = true},
                       .kdim = 4,
                       .vdim = 5,
                       .add_bias_kv = true,
                       .add_zero_attn = true};
  nn_layer *l = nn_multihead_attention_new_ext(ctx, 6, 2, &rng, &o);
  cr_assert_not_null(l);
  char buf[256];
  nn_layer_describe(l, buf, sizeof buf);
  cr_assert_str_eq(buf, "multihead_attention(embed_dim=6, num_heads=2, add_bias_kv=True, "
                        "add_zero_attn=True, kdim=4, vdim=5, batch_first=True)");
  nn_layer_free(l);
  l = nn_multihead_attention_new_ext(ctx, 6, 2, &rng, &(nn_mha_opts_ext){.vdim = 6});
  nn_layer_describe(l, buf, sizeof buf);
  cr_assert_str_eq(buf, "multihead_attention(embed_dim=6, num_heads=2)");
  nn_layer_free(l);
}

/* A float key padding mask is added beside an i32 attn_mask too (as
 * PyTorch documents; its 1.13 or's it in as a bool there:
 * docs/porting-from-pytorch.md): the same as one float [N*H, L, S] mask
 * holding both, and not the same as its nonzero entries masking. */
Test(mha_ext, float_key_padding_mask_is_added_beside_an_attn_mask) {
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  nn_mha_opts_ext o = {.base = {.dtype = AD_F64}, .add_bias_kv = true, .add_zero_attn = true};
  nn_layer *l = nn_multihead_attention_new_ext(ctx, 4, 2, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  int64_t qs[3] = {3, 2, 4}, ks[3] = {5, 2, 4}, ms[2] = {3, 5}, ps[2] = {2, 5}, fs[3] = {4, 3, 5};
  ad_tensor *q = ad_rand(ctx, &rng, AD_F64, 3, qs, -1, 1),
            *k = ad_rand(ctx, &rng, AD_F64, 3, ks, -1, 1);
  ad_tensor *am = ad_zeros(ctx, AD_I32, 2, ms), *kpm = ad_zeros(ctx, AD_F64, 2, ps);
  ad_tensor *bkpm = ad_zeros(ctx, AD_I32, 2, ps), *both = ad_zeros(ctx, AD_F64, 3, fs);
  const double pad[10] = {-1.5, 0.25, 0, 2, -INFINITY, 0, 0.5, -3, 0, 1};
  for (int i = 0; i < 10; i++) ad_tensor_set(kpm, i, pad[i]), ad_tensor_set(bkpm, i, pad[i] != 0);
  for (int i = 0; i < 15; i++) ad_tensor_set(am, i, i % 4 == 1);
  for (int b = 0; b < 4; b++) /* batch b / H, head b % H */
    for (int i = 0; i < 15; i++)
      ad_tensor_set(both, b * 15 + i, (i % 4 == 1 ? -INFINITY : 0) + pad[(b / 2) * 5 + i % 5]);
  ad_tensor *y[3];
  nn_mha_args a[3] = {{.attn_mask = am, .key_padding_mask = kpm},
                      {.attn_mask = both},
                      {.attn_mask = am, .key_padding_mask = bkpm}};
  for (int j = 0; j < 3; j++) {
    y[j] = nn_multihead_attention(l, q, k, k, &a[j], NULL);
    cr_assert_not_null(y[j], "%d: %s", j, ad_last_error(ctx));
  }
  double most = 0;
  for (int64_t i = 0; i < y[0]->size; i++) {
    double g = ad_tensor_get(y[0], i), w = ad_tensor_get(y[1], i);
    cr_assert(test_close(g, w, 1e-12 * (1 + fabs(w))), "[%lld] %.17g vs one mask %.17g",
              (long long)i, g, w);
    most = fmax(most, fabs(g - ad_tensor_get(y[2], i)));
  }
  cr_assert_gt(most, 1e-3, "the padding mask's values were not added");
  nn_layer_free(l);
  ad_tensor *own[] = {q, k, am, kpm, bkpm, both};
  for (size_t i = 0; i < sizeof own / sizeof *own; i++) ad_tensor_free(own[i]);
}

Test(mha_ext, bad_input) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  cr_assert_null(nn_multihead_attention_new_ext(ctx, 6, 2, &rng, &(nn_mha_opts_ext){.kdim = -1}));
  expect_status_msg(ctx, AD_ERR_ARG, "multihead_attention: kdim -1 and vdim 0 must be >= 1");
  cr_assert_null(
      nn_multihead_attention_new_ext(ctx, 6, 2, &rng, &(nn_mha_opts_ext){.vdim = INT64_MIN}));
  expect_status_msg(ctx, AD_ERR_ARG, "must be >= 1 (or 0: embed_dim) and at most 2^32");
  cr_assert_null(nn_multihead_attention_new_ext(ctx, 6, 2, &rng,
                                                &(nn_mha_opts_ext){.kdim = INT64_C(1) << 33}));
  expect_status_msg(ctx, AD_ERR_ARG, "kdim 8589934592 and vdim 0");
  cr_assert_null(nn_multihead_attention_new_ext(
      ctx, 6, 4, &rng, &(nn_mha_opts_ext){.kdim = 4, .add_bias_kv = true}));
  expect_status_msg(ctx, AD_ERR_ARG, "embed_dim 6 and num_heads 4");
  cr_assert_null(nn_multihead_attention_new_ext(
      ctx, 6, 2, &rng, &(nn_mha_opts_ext){.base = {.dtype = AD_I32}, .add_zero_attn = true}));
  expect_status_msg(ctx, AD_ERR_DTYPE, "parameters must be float, got i32");
  cr_assert_null(nn_multihead_attention_new_ext(ctx, 6, 2, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "rng");
  cr_assert_null(nn_multihead_attention_new_ext(NULL, 6, 2, &rng, NULL));

  nn_model *m = nn_sequential_new(ctx);
  nn_mha_opts_ext o = {.kdim = 4, .vdim = 5, .add_bias_kv = true, .add_zero_attn = true};
  cr_assert_eq(nn_model_add(m, nn_multihead_attention_new_ext(ctx, 6, 2, &rng, &o)), AD_OK);
  nn_layer *l = nn_model_layer(m, 0);
  ad_tensor *q = ad_ones(ctx, AD_F32, 3, (int64_t[]){3, 2, 6});
  ad_tensor *k = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, 4});
  ad_tensor *v = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, 5});
  ad_tensor *w = q;
  cr_assert_not_null(nn_multihead_attention(l, q, k, v, NULL, &w), "%s", ad_last_error(ctx));
  cr_assert(w->ndim == 3 && w->shape[0] == 2 && w->shape[1] == 3 && w->shape[2] == 6);
  /* key of embed_dim's last dim, value of kdim's */
  cr_assert_null(nn_multihead_attention(l, q, q, v, NULL, &w));
  cr_assert_null(w);
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "multihead_attention '0': query [3,2,6], key [3,2,6] and value [4,2,5] must be "
      "[L, N, E] or [L, E] with E = embed_dim 6 (key's last dim kdim 4, value's vdim 5)");
  cr_assert_null(nn_multihead_attention(l, q, k, k, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "value [4,2,4] must be");
  /* self-attention in a Sequential needs kdim = vdim = E */
  cr_assert_null(nn_model_forward(m, q));
  expect_status_msg(ctx, AD_ERR_SHAPE, "key's last dim kdim 4, value's vdim 5");
  ad_tensor *k3 = ad_ones(ctx, AD_F32, 3, (int64_t[]){3, 2, 4});
  cr_assert_null(nn_multihead_attention(l, q, k3, v, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "key and value must have the same length");
  /* masks are for the S keys given, not the S + 2 the layer attends to */
  ad_tensor *am = ad_zeros(ctx, AD_F32, 2, (int64_t[]){3, 6});
  cr_assert_null(nn_multihead_attention(l, q, k, v, &(nn_mha_args){.attn_mask = am}, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE,
                    "attn_mask [3,6] must be [L, S] = [3,4] or [N*num_heads, L, S] = [4,3,4]");
  ad_tensor *kpm = ad_zeros(ctx, AD_I32, 2, (int64_t[]){2, 6});
  cr_assert_null(nn_multihead_attention(l, q, k, v, &(nn_mha_args){.key_padding_mask = kpm}, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "key_padding_mask [2,6] must be [N, S] = [2,4]");
  ad_tensor *kd = ad_ones(ctx, AD_F64, 3, (int64_t[]){4, 2, 4});
  cr_assert_null(nn_multihead_attention(l, q, kd, v, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_DTYPE,
                    "query, key and value are f32, f64 and f32; the layer is f32");
  ad_tensor *all[] = {q, k, v, k3, am, kpm, kd};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_tensor_free(all[i]);
  nn_model_free(m);
}
