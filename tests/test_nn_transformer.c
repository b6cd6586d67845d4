/* test_nn_transformer.c: the transformer encoder layer against PyTorch
 * 1.13's nn.TransformerEncoderLayer (tests/transformer_fixtures.h, written
 * by tools/gen_transformer_fixtures.py: outputs and the gradients of src
 * and of every parameter in float64, post-norm and pre-norm, relu and gelu,
 * both layouts, masks), first and second derivatives by central
 * differences, dropout draws, a checkpoint round trip under PyTorch's
 * names, the description, and the error messages. */
#include "nn.h"
#include "nn_io.h"
#include "test_layer_values.h"
#include "test_tmpdir.h"
#include "transformer_fixtures.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TEST_TMPDIR_SUITE(xf, "xf");

/* Sets the parameters named prefix + PyTorch's names in p to the
 * fixture's state dict. */
static void load_state(nn_params *p, const char *prefix) {
  for (int i = 0; i < XF_NPARAMS; i++) {
    char name[96];
    snprintf(name, sizeof name, "%s%s", prefix, xf_param_names[i]);
    ad_tensor *t = nn_params_find(p, name);
    cr_assert_not_null(t, "no parameter %s", name);
    cr_assert_eq(t->size, xf_param_sizes[i], "%s: %lld values", name, (long long)t->size);
    for (int64_t j = 0; j < t->size; j++) ad_tensor_set(t, j, xf_params[i][j]);
  }
}

static nn_transformer_opts case_opts(const xf_case *k, ad_dtype dt) {
  return (nn_transformer_opts){.dim_feedforward = XF_F,
                               .activation = k->gelu ? NN_ACT_GELU : NN_ACT_RELU,
                               .batch_first = k->batch_first,
                               .norm_first = k->norm_first,
                               .seed = 3,
                               .dtype = dt};
}

static nn_layer *case_layer(const xf_case *k, ad_dtype dt, bool causal) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_transformer_opts o = case_opts(k, dt);
  o.causal = causal;
  nn_layer *l = nn_transformer_encoder_layer_new(ctx, XF_E, XF_H, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  load_state(nn_layer_params(l), "");
  return l;
}

/* How a case's attention mask is given. */
typedef enum { MASK_AS_FIXTURE, MASK_CAUSAL_FLAG, MASK_I32, MASK_LAYER_CAUSAL } mask_way;

/* Runs case k in dtype dt and compares the output and every gradient. */
static void check_case(const xf_case *k, ad_dtype dt, double tol, mask_way way) {
  char cs[96];
  snprintf(cs, sizeof cs, "%s/%s/%d", k->name, ad_dtype_name(dt), (int)way);
  nn_layer *l = case_layer(k, dt, way == MASK_LAYER_CAUSAL);
  ad_tensor *src = test_tensor_from(ctx, dt, k->ndim, k->shape, k->src);
  ad_tensor_set_requires_grad(src, true);
  nn_transformer_args a = {0};
  ad_tensor *mask = NULL, *kpm = NULL;
  int64_t ms[2] = {XF_S, XF_S};
  if (k->mask && way == MASK_I32) { /* nonzero where PyTorch's float mask is -inf */
    mask = ad_zeros(ctx, AD_I32, 2, ms);
    for (int64_t i = 0; i < mask->size; i++) ad_tensor_set(mask, i, isinf(k->mask[i]));
  } else if (k->mask && way == MASK_AS_FIXTURE)
    mask = test_tensor_from(ctx, dt, 2, ms, k->mask);
  a.src_mask = mask;
  a.causal = way == MASK_CAUSAL_FLAG;
  if (k->kpm) {
    int64_t ks[2] = {XF_N, XF_S};
    int nd = k->unbatched ? 1 : 2;
    kpm = ad_zeros(ctx, AD_I32, nd, ks + (2 - nd));
    for (int64_t i = 0; i < kpm->size; i++) ad_tensor_set(kpm, i, k->kpm[i]);
    a.src_key_padding_mask = kpm;
  }
  ad_tensor *y = way == MASK_LAYER_CAUSAL ? nn_layer_forward(l, src, false)
                                          : nn_transformer_encoder_layer(l, src, &a);
  test_expect_case_close(ctx, y, k->out, y ? y->size : 0, tol, "out", cs);
  for (int i = 0; i < k->ndim; i++) cr_assert_eq(y->shape[i], k->shape[i], "%s: out shape", cs);
  ad_tensor *gy = test_tensor_from(ctx, dt, k->ndim, k->shape, k->gy);
  ad_tensor *loss = ad_sum(ctx, ad_mul(ctx, y, gy));
  cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
  test_expect_case_close(ctx, src->grad, k->dsrc, src->size, tol, "dsrc", cs);
  nn_params *p = nn_layer_params(l);
  for (int i = 0; i < XF_NPARAMS; i++) {
    ad_tensor *t = nn_params_find(p, xf_param_names[i]);
    test_expect_case_close(ctx, t->grad, k->d[i], xf_param_sizes[i], tol, xf_param_names[i], cs);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(src), ad_tensor_free(gy), ad_tensor_free(mask), ad_tensor_free(kpm);
  nn_layer_free(l);
}

static void check_all(ad_dtype dt, double tol) {
  for (size_t i = 0; i < sizeof xf_cases / sizeof *xf_cases; i++) {
    const xf_case *k = &xf_cases[i];
    if (!k->causal) {
      check_case(k, dt, tol, MASK_AS_FIXTURE);
      continue;
    }
    /* PyTorch's causal float mask, the flag, an i32 mask and the layer's option */
    check_case(k, dt, tol, MASK_AS_FIXTURE);
    check_case(k, dt, tol, MASK_CAUSAL_FLAG);
    check_case(k, dt, tol, MASK_I32);
    check_case(k, dt, tol, MASK_LAYER_CAUSAL);
  }
}

Test(xf, matches_pytorch_f64) { check_all(AD_F64, 1e-12); }

Test(xf, matches_pytorch_f32) { check_all(AD_F32, 1e-5); }

Test(xf, float_mask_without_inf_is_not_an_i32_mask) {
  /* pre_gelu_mask_kpm's float mask has no -inf: as i32 it masks every
   * nonzero entry, which must change the output (the test above would not
   * tell the two apart otherwise) */
  const xf_case *k = &xf_cases[3];
  cr_assert(k->mask && !k->causal);
  nn_layer *l = case_layer(k, AD_F64, false);
  ad_tensor *src = test_tensor_from(ctx, AD_F64, k->ndim, k->shape, k->src);
  int64_t ms[2] = {XF_S, XF_S};
  ad_tensor *fm = test_tensor_from(ctx, AD_F64, 2, ms, k->mask), *im = ad_zeros(ctx, AD_I32, 2, ms);
  for (int64_t i = 0; i < XF_S; i++) ad_tensor_set(im, i * XF_S + (i + 1) % XF_S, 1);
  ad_tensor *a = nn_transformer_encoder_layer(l, src, &(nn_transformer_args){.src_mask = fm});
  ad_tensor *b = nn_transformer_encoder_layer(l, src, &(nn_transformer_args){.src_mask = im});
  cr_assert(a && b, "%s", ad_last_error(ctx));
  double diff = 0;
  for (int64_t i = 0; i < a->size; i++)
    diff = fmax(diff, fabs(ad_tensor_get(a, i) - ad_tensor_get(b, i)));
  cr_assert_gt(diff, 1e-3);
  ad_tensor_free(src), ad_tensor_free(fm), ad_tensor_free(im);
  nn_layer_free(l);
}

/* ---------------------------------------------------------- derivatives */

typedef struct grad_ud {
  nn_layer *l;
  ad_tensor *kpm;
  bool causal;
  const char *names[XF_NPARAMS]; /* of in[1..] */
} grad_ud;

/* The layer on in[0] with its parameters taken from in[1..]: gradcheck
 * gives the parameters themselves on its analytic side and float64 copies
 * (perturbed) on its numeric side, whose values are copied in. */
static ad_tensor *layer_fn(ad_ctx *c, int n, ad_tensor *const *in, void *ud) {
  (void)c;
  const grad_ud *u = ud;
  nn_params *p = nn_layer_params(u->l);
  for (int i = 1; i < n; i++) {
    ad_tensor *t = nn_params_find(p, u->names[i - 1]);
    if (in[i] != t)
      for (int64_t j = 0; j < t->size; j++) ad_tensor_set(t, j, ad_tensor_get(in[i], j));
  }
  return nn_transformer_encoder_layer(
      u->l, in[0], &(nn_transformer_args){.src_key_padding_mask = u->kpm, .causal = u->causal});
}

/* s = sum_i <r_i, dL/dw_i> with L = <v, layer(w[0])>, recorded with graph. */
static ad_tensor *second_order_s(grad_ud *u, ad_tensor *v, int n, ad_tensor *const *w,
                                 ad_tensor *const *r, bool graph) {
  ad_tensor *g[1 + XF_NPARAMS];
  ad_tensor *y = nn_transformer_encoder_layer(
      u->l, w[0], &(nn_transformer_args){.src_key_padding_mask = u->kpm, .causal = u->causal});
  ad_tensor *loss = ad_sum(ctx, ad_mul(ctx, y, v));
  if (!loss || ad_grad(ctx, loss, NULL, n, w, g, graph) != AD_OK) return NULL;
  ad_tensor *s = NULL;
  for (int i = 0; i < n; i++) {
    ad_tensor *t = ad_sum(ctx, ad_mul(ctx, g[i], r[i]));
    s = s ? ad_add(ctx, s, t) : t;
  }
  return s;
}

/* d_model 4, nhead 2, dim_feedforward 6 in float64: src and the parameters
 * against central differences, and second derivatives through src and
 * the parameters named by check2. */
static void check_derivatives(bool norm_first, nn_act act, const char *const *check2, int n2) {
  ad_rng rng;
  ad_rng_seed(&rng, 21);
  nn_transformer_opts o = {.dim_feedforward = 6,
                           .activation = act,
                           .norm_first = norm_first,
                           .batch_first = true,
                           .dtype = AD_F64};
  nn_layer *l = nn_transformer_encoder_layer_new(ctx, 4, 2, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  for (int i = 0; i < nn_params_count(p); i++) { /* biases and norms away from 0 and 1 */
    ad_tensor *t = nn_params_tensor(p, i);
    bool nw = strstr(nn_params_name(p, i), "norm") && strstr(nn_params_name(p, i), "weight");
    if (t->ndim == 1)
      for (int64_t j = 0; j < t->size; j++)
        ad_tensor_set(t, j, (nw ? 1 : 0) + 0.3 * (ad_rng_uniform(&rng) - 0.5));
  }
  int64_t xs[3] = {2, 3, 4}, ks[2] = {2, 3};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F64, 3, xs, -1.5, 1.5);
  ad_tensor_set_requires_grad(x, true);
  grad_ud u = {.l = l, .kpm = ad_zeros(ctx, AD_I32, 2, ks), .causal = true};
  ad_tensor_set(u.kpm, 4, 1); /* sequence 1 key 1; with causal no row is empty */
  ad_tensor *in[1 + XF_NPARAMS] = {x};
  for (int i = 0; i < nn_params_count(p); i++) {
    in[1 + i] = nn_params_tensor(p, i);
    u.names[i] = nn_params_name(p, i);
  }
  ad_check_opts co = {.eps = 1e-6, .atol = 1e-7, .rtol = 1e-6, .seed = 5};
  ad_check_report r;
  cr_assert_eq(ad_gradcheck(ctx, layer_fn, &u, 1 + nn_params_count(p), in, &co, &r), AD_OK, "%s",
               ad_last_error(ctx));
  cr_assert(r.passed, "gradcheck: input %d [%lld] analytic %g numeric %g", r.input,
            (long long)r.index, r.analytic, r.numeric);
  cr_assert_eq(r.checked, x->size + nn_params_numel(p));
  /* second order, by hand (ad_gradgradcheck would differentiate its
   * float64 copies, which the layer does not read): the gradient of
   * s = sum_i <r_i, dL/dw_i>, L = <v, layer(x)>, over w = x and check2,
   * from the recorded backward pass against central differences of s */
  ad_tensor *w[1 + XF_NPARAMS] = {x}, *dir[1 + XF_NPARAMS], *h[1 + XF_NPARAMS];
  for (int i = 0; i < n2; i++) w[1 + i] = nn_params_find(p, check2[i]);
  for (int i = 0; i <= n2; i++) dir[i] = ad_rand(ctx, &rng, AD_F64, w[i]->ndim, w[i]->shape, -1, 1);
  ad_tensor *v = ad_rand(ctx, &rng, AD_F64, 3, xs, -1, 1);
  ad_tensor *sa = second_order_s(&u, v, 1 + n2, w, dir, true);
  cr_assert_not_null(sa, "%s", ad_last_error(ctx));
  cr_assert_eq(ad_grad(ctx, sa, NULL, 1 + n2, w, h, false), AD_OK, "%s", ad_last_error(ctx));
  int64_t total = 0;
  for (int i = 0; i <= n2; i++) total += w[i]->size;
  double *an = malloc((size_t)total * sizeof *an), *a = an;
  cr_assert_not_null(an);
  for (int i = 0; i <= n2; i++)
    for (int64_t j = 0; j < w[i]->size; j++) *a++ = ad_tensor_get(h[i], j);
  ad_tape_reset(ctx);
  a = an;
  const double eps = 1e-6;
  for (int i = 0; i <= n2; i++)
    for (int64_t j = 0; j < w[i]->size; j++, a++) {
      double w0 = ad_tensor_get(w[i], j);
      ad_tensor_set(w[i], j, w0 + eps);
      double sp = ad_tensor_get(second_order_s(&u, v, 1 + n2, w, dir, false), 0);
      ad_tape_reset(ctx);
      ad_tensor_set(w[i], j, w0 - eps);
      double sm = ad_tensor_get(second_order_s(&u, v, 1 + n2, w, dir, false), 0);
      ad_tape_reset(ctx);
      ad_tensor_set(w[i], j, w0);
      double num = (sp - sm) / (2 * eps);
      QUICK_ASSERT(fabs(*a - num) <= 1e-6 + 1e-5 * fabs(num),
                   "second order: %s[%lld] analytic %.10g numeric %.10g", i ? check2[i - 1] : "src",
                   (long long)j, *a, num);
    }
  free(an);
  for (int i = 0; i <= n2; i++) ad_tensor_free(dir[i]);
  ad_tensor_free(v);
  ad_tensor_free(x), ad_tensor_free(u.kpm);
  nn_layer_free(l);
}

Test(xf, gradcheck_post_norm_relu) {
  static const char *const second[] = {"linear1.weight", "self_attn.in_proj_weight"};
  check_derivatives(false, NN_ACT_RELU, second, 2);
}

Test(xf, gradcheck_pre_norm_gelu) {
  static const char *const second[] = {"self_attn.in_proj_weight", "norm2.weight",
                                       "linear2.weight"};
  check_derivatives(true, NN_ACT_GELU, second, 3);
}

/* -------------------------------------------------------------- dropout */

/* The layer of case 0 (post-norm, relu, [S, N, E]) with dropout p and seed. */
static nn_layer *drop_layer(double p, uint64_t seed) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_transformer_opts o = case_opts(&xf_cases[0], AD_F64);
  o.dropout = p, o.no_dropout = p == 0, o.seed = seed;
  nn_layer *l = nn_transformer_encoder_layer_new(ctx, XF_E, XF_H, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  load_state(nn_layer_params(l), "");
  return l;
}

Test(xf, dropout_draws_reproducible_with_the_seed) {
  const xf_case *k = &xf_cases[0];
  nn_layer *a = drop_layer(0.3, 7), *b = drop_layer(0.3, 7), *c = drop_layer(0.3, 8);
  ad_tensor *src = test_tensor_from(ctx, AD_F64, k->ndim, k->shape, k->src);
  nn_transformer_args tr = {.training = true};
  /* evaluation mode: PyTorch's values, no draws */
  test_expect_case_close(ctx, nn_transformer_encoder_layer(a, src, NULL), k->out, src->size, 1e-12,
                         "eval", "a");
  ad_tensor *ya = nn_transformer_encoder_layer(a, src, &tr);
  ad_tensor *yb = nn_transformer_encoder_layer(b, src, &tr);
  ad_tensor *yc = nn_transformer_encoder_layer(c, src, &tr);
  cr_assert_eq(test_max_diff(ctx, ya, yb), 0, "same seed, same masks");
  cr_assert_gt(test_max_diff(ctx, ya, yc), 1e-3, "another seed");
  ad_tensor *eval = nn_transformer_encoder_layer(a, src, NULL);
  cr_assert_gt(test_max_diff(ctx, ya, eval), 1e-3, "training differs from evaluation");
  /* the next call draws new masks, the same in a and b */
  ad_tensor *ya2 = nn_transformer_encoder_layer(a, src, &tr);
  cr_assert_gt(test_max_diff(ctx, ya, ya2), 1e-3);
  /* a call that fails takes no draws: b's next training call is a's */
  int64_t bad[2] = {3, 3};
  ad_tensor *m = ad_zeros(ctx, AD_I32, 2, bad);
  cr_assert_null(nn_transformer_encoder_layer(
      b, src, &(nn_transformer_args){.src_mask = m, .training = true}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "attn_mask");
  cr_assert_eq(test_max_diff(ctx, ya2, nn_transformer_encoder_layer(b, src, &tr)), 0);
  /* no_dropout: training mode is evaluation mode */
  nn_layer *z = drop_layer(0, 7);
  cr_assert_eq(test_max_diff(ctx, nn_transformer_encoder_layer(z, src, &tr), eval), 0);
  ad_tensor_free(src), ad_tensor_free(m);
  nn_layer_free(a), nn_layer_free(b), nn_layer_free(c), nn_layer_free(z);
}

Test(xf, dropout_rate_close_to_p) {
  /* pre-norm with out_proj.weight, linear2 and x zero and out_proj.bias
   * one: y = dropout1(1), each element 0 or 1 / (1 - p), about half of them
   * kept with p = 0.5 */
  ad_rng rng;
  ad_rng_seed(&rng, 2);
  nn_transformer_opts o = {.dropout = 0.5, .norm_first = true, .seed = 11, .dtype = AD_F64};
  nn_layer *l = nn_transformer_encoder_layer_new(ctx, 8, 2, &rng, &o);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  ad_tensor *zero[] = {nn_params_find(p, "self_attn.out_proj.weight"),
                       nn_params_find(p, "linear2.weight"), nn_params_find(p, "linear2.bias")};
  for (int i = 0; i < 3; i++)
    for (int64_t j = 0; j < zero[i]->size; j++) ad_tensor_set(zero[i], j, 0);
  ad_tensor *ob = nn_params_find(p, "self_attn.out_proj.bias");
  for (int64_t j = 0; j < ob->size; j++) ad_tensor_set(ob, j, 1);
  int64_t xs[3] = {50, 4, 8};
  ad_tensor *x = ad_zeros(ctx, AD_F64, 3, xs);
  ad_tensor *y = nn_transformer_encoder_layer(l, x, &(nn_transformer_args){.training = true});
  cr_assert_not_null(y, "%s", ad_last_error(ctx));
  int64_t kept = 0;
  for (int64_t i = 0; i < y->size; i++) {
    double v = ad_tensor_get(y, i);
    cr_assert(v == 0 || v == 2, "y[%lld] = %g: 0 or 1 / (1 - p)", (long long)i, v);
    kept += v == 2;
  }
  cr_assert(kept > 0.45 * (double)y->size && kept < 0.55 * (double)y->size, "kept %lld of %lld",
            (long long)kept, (long long)y->size);
  ad_tensor_free(x);
  nn_layer_free(l);
}

/* ---------------------------------------------------- names, checkpoints */

Test(xf, pytorch_names_layouts_and_initialisation) {
  ad_rng rng;
  ad_rng_seed(&rng, 9);
  const int64_t e = 16;
  nn_layer *l = nn_transformer_encoder_layer_new(ctx, e, 4, &rng, NULL);
  cr_assert_not_null(l, "%s", ad_last_error(ctx));
  nn_params *p = nn_layer_params(l);
  cr_assert_eq(nn_params_count(p), XF_NPARAMS);
  /* PyTorch's state_dict order, shapes and bounds (the default width 2048) */
  const int64_t rows[XF_NPARAMS] = {3 * e, 3 * e, e, e, 2048, 2048, e, e, e, e, e, e};
  const int64_t cols[XF_NPARAMS] = {e, 0, e, 0, e, 0, 2048, 0, 0, 0, 0, 0};
  const double lim[XF_NPARAMS] = {sqrt(6.0 / (double)(4 * e)),
                                  0,
                                  1 / sqrt((double)e),
                                  0,
                                  1 / sqrt((double)e),
                                  1 / sqrt((double)e),
                                  1 / sqrt(2048.0),
                                  1 / sqrt(2048.0),
                                  0,
                                  0,
                                  0,
                                  0};
  for (int i = 0; i < XF_NPARAMS; i++) {
    ad_tensor *t = nn_params_tensor(p, i);
    cr_assert_str_eq(nn_params_name(p, i), xf_param_names[i]);
    cr_assert_eq(t->dtype, AD_F32);
    cr_assert_eq(t->ndim, cols[i] ? 2 : 1, "%s", xf_param_names[i]);
    cr_assert_eq(t->shape[0], rows[i], "%s", xf_param_names[i]);
    if (cols[i]) cr_assert_eq(t->shape[1], cols[i], "%s", xf_param_names[i]);
    double mx = 0, mn = INFINITY;
    for (int64_t j = 0; j < t->size; j++) {
      mx = fmax(mx, fabs(ad_tensor_get(t, j)));
      mn = fmin(mn, ad_tensor_get(t, j));
    }
    bool norm_w = i == 8 || i == 10;
    if (lim[i] > 0) /* at least 16 draws: some beyond 75% of the bound */
      cr_assert(mx <= lim[i] && mx > 0.75 * lim[i], "%s: max |w| %g of %g", xf_param_names[i], mx,
                lim[i]);
    else
      cr_assert(mx == (norm_w ? 1 : 0) && mn == mx, "%s: %g..%g", xf_param_names[i], mn, mx);
  }
  /* the same draws from the same seed; the attention's come first */
  ad_rng_seed(&rng, 9);
  nn_layer *m = nn_multihead_attention_new(ctx, e, 4, &rng, NULL);
  ad_tensor *w = nn_params_find(nn_layer_params(m), "in_proj_weight");
  ad_tensor *v = nn_params_find(p, "self_attn.in_proj_weight");
  for (int64_t j = 0; j < w->size; j++)
    QUICK_ASSERT(ad_tensor_get(w, j) == ad_tensor_get(v, j), "[%lld]", (long long)j);
  nn_layer_free(m);
  nn_layer_free(l);
}

Test(xf, checkpoint_round_trip_with_pytorch_names) {
  const xf_case *k = &xf_cases[2]; /* pre-norm, batch_first, causal */
  nn_model *m = nn_sequential_new(ctx);
  ad_rng rng;
  ad_rng_seed(&rng, 5);
  nn_transformer_opts o = case_opts(k, AD_F32);
  o.causal = true;
  cr_assert_eq(nn_model_add(m, nn_transformer_encoder_layer_new(ctx, XF_E, XF_H, &rng, &o)), AD_OK,
               "%s", ad_last_error(ctx));
  load_state(nn_model_params(m), "0.");
  nn_model_set_training(m, false);
  const char *path = test_path("xf.safetensors");
  cr_assert_eq(nn_model_save(m, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  /* the file holds PyTorch's state_dict names, prefixed as in nn.Sequential */
  nn_checkpoint_info *info = nn_checkpoint_info_read(ctx, path);
  cr_assert_not_null(info, "%s", ad_last_error(ctx));
  cr_assert_eq(info->n, XF_NPARAMS);
  for (int i = 0; i < XF_NPARAMS; i++) {
    char name[96];
    snprintf(name, sizeof name, "0.%s", xf_param_names[i]);
    const nn_checkpoint_entry *en = nn_checkpoint_info_find(info, name);
    cr_assert_not_null(en, "%s missing", name);
    int64_t n = 1;
    for (int d = 0; d < en->ndim; d++) n *= en->shape[d];
    cr_assert_eq(n, xf_param_sizes[i], "%s", name);
  }
  nn_checkpoint_info_free(info);
  /* a fresh model of other draws loads it and computes PyTorch's values */
  nn_model *m2 = nn_sequential_new(ctx);
  ad_rng_seed(&rng, 6);
  cr_assert_eq(nn_model_add(m2, nn_transformer_encoder_layer_new(ctx, XF_E, XF_H, &rng, &o)),
               AD_OK);
  cr_assert_eq(nn_model_load(m2, NULL, path), AD_OK, "%s", ad_last_error(ctx));
  nn_model_set_training(m2, false);
  ad_tensor *src = test_tensor_from(ctx, AD_F32, k->ndim, k->shape, k->src);
  test_expect_case_close(ctx, nn_model_forward(m2, src), k->out, src->size, 1e-5, "out", "loaded");
  /* a bare layer loads a PyTorch state dict saved without the prefix */
  const char *path2 = test_path("layer.safetensors");
  nn_params *p = nn_layer_params(nn_model_layer(m, 0));
  cr_assert_eq(nn_checkpoint_save(ctx, path2, XF_NPARAMS, xf_param_names, nn_params_tensors(p)),
               AD_OK, "%s", ad_last_error(ctx));
  ad_rng_seed(&rng, 7);
  nn_layer *l = nn_transformer_encoder_layer_new(ctx, XF_E, XF_H, &rng, &o);
  nn_params *lp = nn_layer_params(l);
  cr_assert_eq(
      nn_checkpoint_load(ctx, path2, XF_NPARAMS, nn_params_names(lp), nn_params_tensors(lp)), AD_OK,
      "%s", ad_last_error(ctx));
  test_expect_case_close(ctx, nn_layer_forward(l, src, false), k->out, src->size, 1e-5, "out",
                         "layer");
  ad_tensor_free(src);
  nn_layer_free(l);
  nn_model_free(m), nn_model_free(m2);
}

Test(xf, describe_in_torch_style) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  char buf[256];
  nn_layer *l = nn_transformer_encoder_layer_new(ctx, 8, 2, &rng, NULL);
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "transformer_encoder_layer(d_model=8, nhead=2)");
  nn_layer_free(l);
  nn_transformer_opts o = {.dim_feedforward = 16,
                           .no_dropout = true,
                           .activation = NN_ACT_GELU,
                           .layer_norm_eps = 1e-6,
                           .batch_first = true,
                           .norm_first = true,
                           .causal = true};
  l = nn_transformer_encoder_layer_new(ctx, 8, 2, &rng, &o);
  cr_assert_str_eq(nn_layer_describe(l, buf, sizeof buf),
                   "transformer_encoder_layer(d_model=8, nhead=2, dim_feedforward=16, "
                   "dropout=0.0, activation=gelu, layer_norm_eps=1e-06, batch_first=True, "
                   "norm_first=True, causal=True)");
  cr_assert_str_eq(nn_layer_kind(l), "transformer_encoder_layer");
  nn_layer_free(l);
}

/* --------------------------------------------------------------- misuse */

Test(xf, bad_construction) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  const struct {
    int64_t e, h;
    nn_transformer_opts o;
    ad_status st;
    const char *msg;
  } bad[] = {
      {0, 1, {0}, AD_ERR_ARG, "d_model 0 and nhead 1 must be >= 1"},
      {8, 0, {0}, AD_ERR_ARG, "nhead must divide d_model"},
      {8, 3, {0}, AD_ERR_ARG, "nhead must divide d_model"},
      {-4, 2, {0}, AD_ERR_ARG, "d_model -4"},
      {(INT64_C(1) << 33), 2, {0}, AD_ERR_ARG, "at most 2^32"},
      {8, 2, {.dim_feedforward = -1}, AD_ERR_ARG, "dim_feedforward -1"},
      {8, 2, {.dropout = 1.0}, AD_ERR_ARG, "dropout 1 is outside [0, 1)"},
      {8, 2, {.dropout = -0.1}, AD_ERR_ARG, "dropout -0.1 is outside"},
      {8, 2, {.dropout = NAN}, AD_ERR_ARG, "dropout nan is outside"},
      {8, 2, {.dropout = 0.2, .no_dropout = true}, AD_ERR_ARG, "given with no_dropout"},
      {8, 2, {.layer_norm_eps = -1e-5}, AD_ERR_ARG, "layer_norm_eps -1e-05 must be > 0"},
      {8, 2, {.layer_norm_eps = NAN}, AD_ERR_ARG, "layer_norm_eps nan"},
      {8, 2, {.layer_norm_eps = INFINITY}, AD_ERR_ARG, "layer_norm_eps inf"},
      {8, 2, {.activation = NN_ACT_TANH}, AD_ERR_ARG, "activation tanh must be relu or gelu"},
      {8, 2, {.activation = (nn_act)999}, AD_ERR_ARG, "must be relu or gelu"},
      {8, 2, {.dtype = AD_I32}, AD_ERR_DTYPE, "parameters must be float"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    cr_assert_null(nn_transformer_encoder_layer_new(ctx, bad[i].e, bad[i].h, &rng, &bad[i].o),
                   "case %zu", i);
    expect_status_msg(ctx, bad[i].st, bad[i].msg);
  }
  cr_assert_null(nn_transformer_encoder_layer_new(ctx, 8, 2, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "transformer_encoder_layer: rng is NULL");
  cr_assert_null(nn_transformer_encoder_layer_new(NULL, 8, 2, &rng, NULL));
  cr_assert_eq(LIVE_BLOCKS(), live_base, "a refused layer leaks nothing");
}

Test(xf, bad_input) {
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  nn_model *m = nn_sequential_new(ctx);
  cr_assert_eq(nn_model_add(m, nn_transformer_encoder_layer_new(ctx, 6, 2, &rng, NULL)), AD_OK);
  nn_layer *l = nn_model_layer(m, 0);
  ad_tensor *x1 = ad_ones(ctx, AD_F32, 1, (int64_t[]){6});
  cr_assert_null(nn_model_forward(m, x1));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "transformer_encoder_layer '0': src [6] must be [S, N, E] or [S, E], S >= 1, E = "
      "d_model 6");
  ad_tensor *x5 = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, 5});
  cr_assert_null(nn_transformer_encoder_layer(l, x5, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "src [4,2,5] must be");
  ad_tensor *x0 = ad_ones(ctx, AD_F32, 3, (int64_t[]){0, 2, 6}); /* an empty batch runs */
  cr_assert_null(nn_transformer_encoder_layer(l, x0, NULL));
  expect_status_msg(ctx, AD_ERR_SHAPE, "src [0,2,6] must be [S, N, E] or [S, E], S >= 1");
  ad_tensor *xd = ad_ones(ctx, AD_F64, 3, (int64_t[]){4, 2, 6});
  cr_assert_null(nn_transformer_encoder_layer(l, xd, NULL));
  expect_status_msg(ctx, AD_ERR_DTYPE,
                    "transformer_encoder_layer '0': src is f64; the layer is f32");
  cr_assert_null(nn_transformer_encoder_layer(l, NULL, NULL));
  expect_status_msg(ctx, AD_ERR_NULL, "src is NULL");
  ad_tensor *x = ad_ones(ctx, AD_F32, 3, (int64_t[]){4, 2, 6});
  ad_tensor *am = ad_zeros(ctx, AD_I32, 2, (int64_t[]){4, 3});
  cr_assert_null(nn_transformer_encoder_layer(l, x, &(nn_transformer_args){.src_mask = am}));
  expect_status_msg(
      ctx, AD_ERR_SHAPE,
      "transformer_encoder_layer '0': multihead_attention 'self_attn': attn_mask [4,3] "
      "must be [L, S]");
  ad_tensor *kpm = ad_zeros(ctx, AD_I32, 2, (int64_t[]){4, 2}); /* [S, N]: transposed */
  cr_assert_null(
      nn_transformer_encoder_layer(l, x, &(nn_transformer_args){.src_key_padding_mask = kpm}));
  expect_status_msg(ctx, AD_ERR_SHAPE, "key_padding_mask [4,2] must be [N, S] = [2,4]");
  ad_tensor *fm = ad_zeros(ctx, AD_F64, 2, (int64_t[]){4, 4});
  cr_assert_null(nn_transformer_encoder_layer(l, x, &(nn_transformer_args){.src_mask = fm}));
  expect_status_msg(ctx, AD_ERR_DTYPE, "attn_mask is f64");
  ad_tensor_free(fm);
  cr_assert_null(nn_transformer_encoder_layer(l, x, &(nn_transformer_args){.src_mask = fm}));
  expect_status_msg(ctx, AD_ERR_STATE, "was freed");
  nn_layer *other = nn_flatten_new(ctx);
  cr_assert_null(nn_transformer_encoder_layer(other, x, NULL));
  cr_assert_str_eq(ad_last_error(ctx), /* not renamed "flatten: ..." */
                   "transformer_encoder_layer: layer flatten is not a transformer_encoder_layer");
  expect_status_msg(ctx, AD_ERR_ARG, "layer flatten is not a transformer_encoder_layer");
  nn_layer_free(other);
  /* a NULL src (an earlier failure) keeps that failure's message as it is */
  cr_assert_null(ad_matmul(ctx, x, x, false, false));
  char earlier[256];
  snprintf(earlier, sizeof earlier, "%s", ad_last_error(ctx));
  cr_assert_null(nn_transformer_encoder_layer(l, NULL, NULL));
  cr_assert_str_eq(ad_last_error(ctx), earlier);
  expect_status_msg(ctx, AD_ERR_SHAPE, "matmul");
  cr_assert_null(nn_transformer_encoder_layer(NULL, x, NULL));
  /* the attention inside is not reachable as a layer, and the layer is sane after errors */
  cr_assert_not_null(nn_model_forward(m, x), "%s", ad_last_error(ctx));
  ad_tensor *all[] = {x1, x5, x0, xd, x, am, kpm};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_tensor_free(all[i]);
  nn_model_free(m);
}

/* An empty batch (N = 0) runs, as in PyTorch: the encoder and decoder
 * layers (post- and pre-norm, both layouts), the stacks and the whole
 * transformer give an empty output of the input's shape, and a backward
 * through it zero gradients for every parameter. */
static void expect_zero_grads(nn_layer *l) {
  nn_params *ps = nn_layer_params(l);
  for (int i = 0; i < nn_params_count(ps); i++) {
    ad_tensor *g = nn_params_tensor(ps, i)->grad;
    cr_assert_not_null(g, "%s: %s has no gradient", nn_layer_kind(l), nn_params_name(ps, i));
    for (int64_t j = 0; j < g->size; j++)
      cr_assert_eq(ad_tensor_get(g, j), 0.0, "%s: %s[%lld]", nn_layer_kind(l),
                   nn_params_name(ps, i), (long long)j);
  }
  nn_params_zero_grad(ps);
}

Test(xf, empty_batch_gives_empty_output_and_zero_gradients) {
  ad_rng rng;
  ad_rng_seed(&rng, 3);
  for (int v = 0; v < 4; v++) {
    bool bf = v & 1;
    nn_transformer_opts o = {
        .dim_feedforward = 8, .batch_first = bf, .norm_first = v & 2, .dtype = AD_F64};
    int64_t ss[3] = {3, 0, 4}, ts[3] = {2, 0, 4};
    if (bf) ss[0] = ts[0] = 0, ss[1] = 3, ts[1] = 2;
    ad_tensor *src = ad_ones(ctx, AD_F64, 3, ss), *tgt = ad_ones(ctx, AD_F64, 3, ts);
    ad_tensor_set_requires_grad(src, true);
    nn_layer *enc = nn_transformer_encoder_layer_new(ctx, 4, 2, &rng, &o);
    nn_layer *dec = nn_transformer_decoder_layer_new(ctx, 4, 2, &rng, &o);
    nn_layer *stack =
        nn_transformer_encoder_new(nn_transformer_encoder_layer_new(ctx, 4, 2, &rng, &o), 2,
                                   &(nn_transformer_stack_opts){.norm = true});
    nn_transformer_model_opts mo = {.d_model = 4,
                                    .nhead = 2,
                                    .num_encoder_layers = 1,
                                    .num_decoder_layers = 1,
                                    .dim_feedforward = 8,
                                    .batch_first = bf,
                                    .dtype = AD_F64};
    nn_layer *whole = nn_transformer_new(ctx, &rng, &mo);
    cr_assert(enc && dec && stack && whole, "%s", ad_last_error(ctx));
    nn_transformer_args ta = {.training = true};
    ad_tensor *ys[4] = {
        nn_transformer_encoder_layer(enc, src, &ta),
        nn_transformer_decoder_layer(dec, tgt, src, NULL), nn_transformer_encoder(stack, src, NULL),
        nn_transformer_forward(whole, src, tgt, NULL, NULL, NULL, NULL, NULL, NULL, false)};
    test_expect_shape(ctx, ys[0], 3, ss, "encoder layer");
    test_expect_shape(ctx, ys[1], 3, ts, "decoder layer");
    test_expect_shape(ctx, ys[2], 3, ss, "encoder stack");
    test_expect_shape(ctx, ys[3], 3, ts, "transformer");
    ad_tensor *loss = ad_sum(ctx, ys[0]);
    for (int i = 1; i < 4; i++) loss = ad_add(ctx, loss, ad_sum(ctx, ys[i]));
    cr_assert_eq(ad_backward(ctx, loss, NULL), AD_OK, "%s", ad_last_error(ctx));
    test_expect_shape(ctx, src->grad, 3, ss, "src gradient");
    nn_layer *ls[] = {enc, dec, stack, whole};
    for (int i = 0; i < 4; i++) expect_zero_grads(ls[i]);
    ad_tape_reset(ctx);
    ad_tensor_free(src), ad_tensor_free(tgt);
    for (int i = 0; i < 4; i++) nn_layer_free(ls[i]);
  }
}

Test(xf, unbatched_is_a_batch_of_one) {
  const xf_case *k = &xf_cases[0]; /* post-norm, [S, N, E] */
  nn_layer *l = case_layer(k, AD_F64, false);
  ad_tensor *src = test_tensor_from(ctx, AD_F64, k->ndim, k->shape, k->src);
  ad_tensor *y = nn_transformer_encoder_layer(l, src, NULL);
  /* sequence 1 alone, [S, E] */
  int64_t us[2] = {XF_S, XF_E};
  ad_tensor *u = ad_zeros(ctx, AD_F64, 2, us);
  for (int64_t s = 0; s < XF_S; s++)
    for (int64_t e = 0; e < XF_E; e++)
      ad_tensor_set(u, s * XF_E + e, ad_tensor_get(src, (s * XF_N + 1) * XF_E + e));
  ad_tensor *yu = nn_transformer_encoder_layer(l, u, NULL);
  cr_assert(y && yu, "%s", ad_last_error(ctx));
  cr_assert_eq(yu->ndim, 2);
  for (int64_t s = 0; s < XF_S; s++)
    for (int64_t e = 0; e < XF_E; e++)
      cr_assert_float_eq(ad_tensor_get(yu, s * XF_E + e),
                         ad_tensor_get(y, (s * XF_N + 1) * XF_E + e), 1e-14);
  int64_t shape[AD_MAX_DIMS];
  cr_assert_eq(nn_layer_output_shape(l, shape), 2);
  ad_tensor_free(src), ad_tensor_free(u);
  nn_layer_free(l);
}
