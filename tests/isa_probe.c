/* isa_probe.c: prints one line per check, "<name> <hash>", the FNV-1a
 * hash of the result bits (every NaN as one value: see report) of the
 * engine's row loops: the elementwise ops of vexp.h (float32, and the
 * float64 ones on exp_d), and the others in both float types (forward
 * and first gradient), softmax, log_softmax, logsumexp and cross-entropy rows, the fused LSTM
 * and GRU cells, layer norm, and every optimizer's update over a few
 * steps, in float32 and in float64. Inputs are seeded and hold the
 * special values (zeros of both signs, infinities, NaN, subnormals, the
 * largest numbers, exp's clamp bounds) besides random ones of many scales,
 * made without libm (whose exp, log, sin and cos glibc picks per CPU).
 *
 * These loops are compiled for several instruction sets (GCC's
 * target_clones: AVX-512, AVX2 with FMA, the x86-64 baseline; the
 * optimizers' AVX2 and AVX-512 paths), the CPU's best picked when the
 * library loads, and the engine promises the same bits from each (see
 * vexp.h and nn/kernels/update.c). tests/test_isa_clones.sh runs this
 * program on this CPU and under qemu's user-mode emulation of CPUs
 * without AVX-512 and without AVX2, where the other clones are taken,
 * and compares the lines. No matrix product takes part: which kernel runs
 * a product (the built-in AVX-512, AVX2 or portable one, or OpenBLAS) is
 * the CPU's (docs/performance.md, "GEMM dispatch"), and their sums are not
 * promised to be the same bits.
 *
 * --list prints first, as a comment line, the instruction sets the CPU
 * reports and the GEMM dispatch's decision there ("# cpu: avx512f avx2
 * fma; gemm: the built-in AVX-512 kernel for every product ..."): the
 * test's log then says which kernels each emulated CPU would take. */
#include "ad_ext.h"
#include "nn.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ad_ctx *ctx;
static int failures;
static ad_dtype dt;     /* of this pass: AD_F32, then AD_F64 */
static const char *pre; /* "f32" or "f64", before every name */

static double get(const ad_tensor *t, int64_t i) { return ad_tensor_get(t, i); }
/* (A double past float's range becomes an infinity here, not in an
 * undefined conversion.) */
static void set(ad_tensor *t, int64_t i, double v) {
  if (t->dtype == AD_F32 && isfinite(v) && fabs(v) > FLT_MAX) v = copysign(INFINITY, v);
  ad_tensor_set(t, i, v);
}

static void fail(const char *what) {
  fprintf(stderr, "isa_probe: %s: %s\n", what, ad_last_error(ctx));
  failures++;
}

static uint64_t fnv(const void *p, size_t n, uint64_t h) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* The hash of t's bits, every NaN counted as one value: which of two NaN
 * operands an SSE or AVX instruction returns (the first) is what qemu 7.2
 * does not emulate (it applies the x87 rule, the larger significand), so
 * a NaN's sign and payload cannot be compared under it. Where the NaNs
 * are is compared. */
static void report(const char *name, const ad_tensor *t) {
  if (!t) {
    fail(name);
    return;
  }
  uint64_t h = 1469598103934665603ull;
  for (int64_t i = 0; i < t->size; i++) {
    if (t->dtype == AD_F32) {
      float f = ((const float *)t->data)[i];
      f = isnan(f) ? NAN : f;
      h = fnv(&f, sizeof f, h);
    } else {
      double d = ((const double *)t->data)[i];
      d = isnan(d) ? (double)NAN : d;
      h = fnv(&d, sizeof d, h);
    }
  }
  printf("%s/%s %016llx\n", pre, name, (unsigned long long)h);
}

/* n values of the pass's dtype: the specials first (in float those past
 * its range become infinities or zeros), then random values of many
 * scales; below lo_bound, negated. */
static ad_tensor *inputs(int64_t n, uint64_t seed, double lo_bound) {
  static const double special[] = {
      0.0,     -0.0,     INFINITY, -INFINITY, NAN,    -NAN,    FLT_MIN, -FLT_MIN, 1e-45,    -1e-45,
      FLT_MAX, -FLT_MAX, 88.72,    88.3,      -87.3,  -87.4,   -103.9,  89.0,     1e-8,     -1e-8,
      0.5,     -0.5,     1.0,      -1.0,      10.0,   -10.0,   20.0,    -20.0,    50.0,     -50.0,
      3.14159, -3.14159, 1e6,      -1e6,      1e30,   -1e30,   DBL_MIN, -DBL_MIN, 4.9e-324, DBL_MAX,
      709.78,  -745.1,   1e300,    -1e-300,   709.79, -745.14, -708.4,  -740.0,   710.0,    -746.0};
  int64_t shape[1] = {n};
  ad_tensor *x = ad_zeros(ctx, dt, 1, shape);
  if (!x) return NULL;
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  int64_t ns = (int64_t)(sizeof special / sizeof special[0]);
  for (int64_t i = 0; i < n; i++) {
    /* no libm here: glibc picks its own exp, log, sin and cos for the CPU
     * (FMA or not), and one last bit of an input would change every hash */
    double u = ad_rng_uniform(&rng), g = 0, f;
    for (int k = 0; k < 4; k++) g += ad_rng_uniform(&rng) - 0.5; /* about normal, sd 0.58 */
    if (i < ns)
      f = special[i];
    else if (i % 4 == 0)
      f = g;
    else if (i % 4 == 1)
      f = g * 10;
    else if (i % 4 == 2)
      f = (u - 0.5) * 200;
    else
      f = ldexp(1.0, (int)(u * 60) - 30) * (g < 0 ? -1 : 1);
    set(x, i, f < lo_bound ? -f : f);
  }
  return x;
}

/* inputs() as an [r, c] matrix, a persistent tensor of its own. */
static ad_tensor *matrix(int64_t r, int64_t c, uint64_t seed) {
  int64_t shape[2] = {r, c};
  ad_tensor *flat = inputs(r * c, seed, -INFINITY);
  ad_tensor *m = flat ? ad_reshape(ctx, flat, 2, shape) : NULL;
  m = m ? ad_tensor_clone(ctx, m) : NULL;
  ad_tape_reset(ctx);
  ad_tensor_free(flat);
  return m;
}

typedef ad_tensor *(*unary_fn)(ad_ctx *, ad_tensor *);

static ad_tensor *leaky(ad_ctx *c, ad_tensor *x) { return ad_leaky_relu(c, x, 0.01); }
static ad_tensor *clamp(ad_ctx *c, ad_tensor *x) { return ad_clamp(c, x, -0.5, 0.75); }
static ad_tensor *hardtanh0(ad_ctx *c, ad_tensor *x) { return ad_hardtanh(c, x, 0.0, 6.0); }
static ad_tensor *pow25(ad_ctx *c, ad_tensor *x) { return ad_pow_scalar(c, x, 2.5); }
static ad_tensor *pow3(ad_ctx *c, ad_tensor *x) { return ad_pow_scalar(c, x, 3); }
static ad_tensor *powm1(ad_ctx *c, ad_tensor *x) { return ad_pow_scalar(c, x, -1); }
static ad_tensor *powm05(ad_ctx *c, ad_tensor *x) { return ad_pow_scalar(c, x, -0.5); }
static ad_tensor *powm15(ad_ctx *c, ad_tensor *x) { return ad_pow_scalar(c, x, -1.5); }
static ad_tensor *adds(ad_ctx *c, ad_tensor *x) { return ad_add_scalar(c, x, 0.3); }
static ad_tensor *muls(ad_ctx *c, ad_tensor *x) { return ad_mul_scalar(c, x, -1.7); }
static ad_tensor *softshrink(ad_ctx *c, ad_tensor *x) { return ad_softshrink(c, x, 0.5); }
static ad_tensor *hardshrink(ad_ctx *c, ad_tensor *x) { return ad_hardshrink(c, x, 0.5); }
static ad_tensor *threshold(ad_ctx *c, ad_tensor *x) { return ad_threshold(c, x, 0.25, -1.5); }
static ad_tensor *elu(ad_ctx *c, ad_tensor *x) { return ad_elu(c, x, 1.3, 1.05, 0.7, 0.7); }

/* y = f(x) and the gradient of sum(y w) with respect to x. */
static void unary(const char *name, unary_fn f, int64_t n, bool positive) {
  char buf[96];
  ad_tensor *x = inputs(n, 11, positive ? 0.0 : -INFINITY), *w = inputs(n, 12, -INFINITY);
  if (!x || !w) {
    fail(name);
    return;
  }
  for (int64_t i = 0; i < n; i++) /* finite weights: the gradient's own bits, not inf * 0 */
    if (!isfinite(get(w, i))) set(w, i, 0.5);
  ad_tensor_set_requires_grad(x, true);
  ad_tensor *y = f(ctx, x);
  snprintf(buf, sizeof buf, "%s/forward/%lld", name, (long long)n);
  report(buf, y);
  ad_tensor *loss = y ? ad_sum(ctx, ad_mul(ctx, y, w)) : NULL;
  if (!loss || ad_backward(ctx, loss, NULL) != AD_OK)
    fail(name);
  else {
    snprintf(buf, sizeof buf, "%s/grad/%lld", name, (long long)n);
    report(buf, x->grad);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(w);
}

typedef ad_tensor *(*binary_fn)(ad_ctx *, ad_tensor *, ad_tensor *);

/* y = f(a, b) and the gradients of sum(y w) with respect to a and b; b of
 * a's shape, of one element, or a column broadcast along a's rows. Where
 * a holds a NaN, b holds one of the other sign (which of the two a result
 * keeps is not compared: see report). */
static void binary(const char *name, binary_fn f, int64_t n, int bshape) {
  char buf[96];
  int64_t bs[2] = {bshape == 1 ? 1 : n / 8, bshape == 0 ? 8 : 1};
  ad_tensor *a = matrix(n / 8, 8, 51), *w = matrix(n / 8, 8, 53), *b0 = inputs(n, 52, -INFINITY);
  ad_tensor *b = b0 ? ad_zeros(ctx, dt, 2, bs) : NULL;
  if (!a || !b || !w) {
    fail(name);
    return;
  }
  for (int64_t i = 0; i < b->size; i++) set(b, i, get(b0, (i * 7) % n));
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(get(w, i))) set(w, i, 0.5);
    if (i < b->size && isnan(get(a, i))) set(b, i, -get(a, i));
  }
  ad_tensor_set_requires_grad(a, true);
  ad_tensor_set_requires_grad(b, true);
  ad_tensor *y = f(ctx, a, b);
  snprintf(buf, sizeof buf, "%s/forward/%lld/%d", name, (long long)n, bshape);
  report(buf, y);
  ad_tensor *loss = y ? ad_sum(ctx, ad_mul(ctx, y, w)) : NULL;
  if (!loss || ad_backward(ctx, loss, NULL) != AD_OK) {
    fail(name);
  } else {
    snprintf(buf, sizeof buf, "%s/grad_a/%lld/%d", name, (long long)n, bshape);
    report(buf, a->grad);
    snprintf(buf, sizeof buf, "%s/grad_b/%lld/%d", name, (long long)n, bshape);
    report(buf, b->grad);
  }
  ad_tape_reset(ctx);
  ad_tensor_free(a);
  ad_tensor_free(b);
  ad_tensor_free(w);
  ad_tensor_free(b0);
}

/* Row ops over [rows, cols] along the last axis, and their gradients. */
static void rows(int64_t r, int64_t c) {
  char buf[96];
  ad_tensor *x = matrix(r, c, 21), *w2 = matrix(r, c, 22);
  if (!x || !w2) {
    fail("rows");
    return;
  }
  for (int64_t i = 0; i < r * c; i++) { /* finite rows but for a few, of moderate scale */
    if (!isfinite(get(x, i)) || fabs(get(x, i)) > 1e4) set(x, i, (double)(i % 13) - 6);
    if (!isfinite(get(w2, i)) || fabs(get(w2, i)) > 1e4) set(w2, i, 0.25);
  }
  set(x, c, INFINITY), set(x, 2 * c + 1, -INFINITY), set(x, 3 * c + 2, NAN); /* rows 1-3 */
  ad_tensor_set_requires_grad(x, true);
  const char *names[4] = {"softmax", "log_softmax", "logsumexp", "cross_entropy"};
  for (int k = 0; k < 4; k++) {
    ad_tensor *y;
    if (k == 0)
      y = ad_softmax(ctx, x, -1);
    else if (k == 1)
      y = ad_log_softmax(ctx, x, -1);
    else if (k == 2)
      y = ad_logsumexp(ctx, x, -1, false);
    else {
      int64_t ls[1] = {r};
      ad_tensor *labels = ad_zeros(ctx, AD_I32, 1, ls);
      for (int64_t i = 0; labels && i < r; i++) ((int32_t *)labels->data)[i] = (int32_t)(i % c);
      y = labels ? ad_softmax_cross_entropy(ctx, x, labels) : NULL;
      ad_tensor_free(labels);
    }
    snprintf(buf, sizeof buf, "%s/forward/%lldx%lld", names[k], (long long)r, (long long)c);
    report(buf, y);
    ad_tensor *loss = !y ? NULL : k < 2 ? ad_sum(ctx, ad_mul(ctx, y, w2)) : ad_sum(ctx, y);
    if (!loss || ad_backward(ctx, loss, NULL) != AD_OK) {
      fail(names[k]);
    } else {
      snprintf(buf, sizeof buf, "%s/grad/%lldx%lld", names[k], (long long)r, (long long)c);
      report(buf, x->grad);
    }
    ad_tensor_set_requires_grad(x, false); /* drops the gradient */
    ad_tensor_set_requires_grad(x, true);
    ad_tape_reset(ctx);
  }
  ad_tensor_free(x);
  ad_tensor_free(w2);
}

/* Reductions and the softmax family along the first axis and the last of
 * [r, c] (the first is the lanes loops' case), and binary cross-entropy,
 * with their gradients. */
static void axes(int64_t r, int64_t c) {
  char buf[96];
  int64_t shape[2] = {r, c};
  ad_tensor *x = matrix(r, c, 61), *w = inputs(r * c, 62, -INFINITY);
  if (!x || !w) {
    fail("axes");
    return;
  }
  for (int64_t i = 0; i < r * c; i++) {
    if (i > 8 && (!isfinite(get(x, i)) || fabs(get(x, i)) > 1e4)) set(x, i, (double)(i % 11) - 5);
    if (!isfinite(get(w, i))) set(w, i, 0.5);
  }
  ad_tensor_set_requires_grad(x, true);
  static const char *names[7] = {"sum",     "mean",        "max", "logsumexp",
                                 "softmax", "log_softmax", "bce"};
  for (int k = 0; k < 7; k++)
    for (int axis = 0; axis < (k == 6 ? 1 : 2); axis++) {
      ad_tensor *y = NULL, *target = NULL;
      if (k == 0)
        y = ad_sum_axis(ctx, x, axis, false);
      else if (k == 1)
        y = ad_mean_axis(ctx, x, axis, true);
      else if (k == 2)
        y = ad_max_axis(ctx, x, axis, false);
      else if (k == 3)
        y = ad_logsumexp(ctx, x, axis, false);
      else if (k == 4)
        y = ad_softmax(ctx, x, axis);
      else if (k == 5)
        y = ad_log_softmax(ctx, x, axis);
      else { /* probabilities from x, 0 and 1 among them; targets in [0, 1] */
        ad_tensor *pr = ad_sigmoid(ctx, ad_mul_scalar(ctx, x, 0.3));
        target = ad_zeros(ctx, dt, 2, shape);
        for (int64_t i = 0; target && i < r * c; i++) set(target, i, (double)(i % 5) / 4);
        y = pr && target ? ad_binary_cross_entropy(ctx, pr, target) : NULL;
      }
      snprintf(buf, sizeof buf, "%s/forward/%lldx%lld/axis%d", names[k], (long long)r, (long long)c,
               axis);
      report(buf, y);
      ad_tensor *ww =
          y ? ad_narrow(ctx, ad_reshape(ctx, w, 1, (int64_t[]){r * c}), 0, 0, y->size) : NULL;
      ad_tensor *loss =
          ww ? ad_sum(ctx, ad_mul(ctx, ad_reshape(ctx, y, 1, (int64_t[]){y->size}), ww)) : NULL;
      if (!loss || ad_backward(ctx, loss, NULL) != AD_OK) {
        fail(names[k]);
      } else {
        snprintf(buf, sizeof buf, "%s/grad/%lldx%lld/axis%d", names[k], (long long)r, (long long)c,
                 axis);
        report(buf, x->grad);
      }
      ad_tensor_set_requires_grad(x, false);
      ad_tensor_set_requires_grad(x, true);
      ad_tape_reset(ctx);
      ad_tensor_free(target);
    }
  ad_tensor_free(x);
  ad_tensor_free(w);
}

/* The fused recurrent cells and layer norm, forward and gradients. */
static void cells(int64_t n, int64_t h) {
  char buf[96];
  ad_rng rng;
  ad_rng_seed(&rng, 31);
  int64_t s4[2] = {n, 4 * h}, s3[2] = {n, 3 * h}, s1[2] = {n, h}, sh[1] = {h};
  ad_tensor *gates = ad_rand(ctx, &rng, dt, 2, s4, -6, 6);
  ad_tensor *c = ad_rand(ctx, &rng, dt, 2, s1, -2, 2);
  ad_tensor *a = ad_rand(ctx, &rng, dt, 2, s3, -6, 6);
  ad_tensor *b = ad_rand(ctx, &rng, dt, 2, s3, -6, 6);
  ad_tensor *hs = ad_rand(ctx, &rng, dt, 2, s1, -2, 2);
  ad_tensor *lw = ad_rand(ctx, &rng, dt, 1, sh, 0.6, 1.4);
  ad_tensor *lb = ad_rand(ctx, &rng, dt, 1, sh, -0.4, 0.4);
  ad_tensor *all[7] = {gates, c, a, b, hs, lw, lb};
  for (int i = 0; i < 7; i++) {
    if (!all[i]) {
      fail("cells");
      return;
    }
    ad_tensor_set_requires_grad(all[i], true);
  }
  set(gates, 1, 40), set(gates, 2, -40); /* saturated gates */
  set(a, 0, 60), set(b, 1, -60);
  for (int k = 0; k < 3; k++) {
    const char *name = k == 0 ? "lstm_cell" : k == 1 ? "gru_cell" : "layer_norm";
    ad_tensor *y = k == 0   ? ad_lstm_cell(ctx, gates, c)
                   : k == 1 ? ad_gru_cell(ctx, a, b, hs)
                            : ad_layer_norm(ctx, hs, 1, sh, lw, lb, 1e-5);
    snprintf(buf, sizeof buf, "%s/forward/%lldx%lld", name, (long long)n, (long long)h);
    report(buf, y);
    ad_tensor *loss = y ? ad_sum(ctx, ad_mul(ctx, y, ad_sin(ctx, y))) : NULL;
    if (!loss || ad_backward(ctx, loss, NULL) != AD_OK) {
      fail(name);
    } else {
      for (int i = 0; i < 7; i++) {
        if (!all[i]->grad) continue;
        snprintf(buf, sizeof buf, "%s/grad%d/%lldx%lld", name, i, (long long)n, (long long)h);
        report(buf, all[i]->grad);
        ad_tensor_set_requires_grad(all[i], false);
        ad_tensor_set_requires_grad(all[i], true);
      }
    }
    ad_tape_reset(ctx);
  }
  for (int i = 0; i < 7; i++) ad_tensor_free(all[i]);
}

/* Five steps of each optimizer (weight decay, momentum and the other
 * options on) over parameters whose gradients are set by a backward of
 * sum(p w): w itself, changed every step. */
static void optimizers(int64_t n) {
  static const char *kinds[5] = {"sgd", "adagrad", "rmsprop", "adam", "adamw"};
  for (int kind = 0; kind < 5; kind++)
    for (int variant = 0; variant < 2; variant++) {
      char buf[96];
      ad_rng rng;
      ad_rng_seed(&rng, 41);
      int64_t shape[1] = {n};
      ad_tensor *p = ad_rand(ctx, &rng, dt, 1, shape, -2, 2);
      nn_params *ps = nn_params_new(ctx);
      nn_opt_config cfg = nn_opt_defaults((nn_opt_kind)kind, 1e-2);
      if (variant) {
        cfg.weight_decay = 0.01, cfg.momentum = kind == 0 || kind == 2 ? 0.9 : 0;
        cfg.nesterov = kind == 0, cfg.centered = kind == 2, cfg.lr_decay = kind == 1 ? 0.1 : 0;
        cfg.clip_norm = 5;
      }
      if (!p || !ps || nn_params_add(ps, "p", p, false) != AD_OK) {
        fail("optimizer set-up");
        return;
      }
      ad_tensor_set_requires_grad(p, true);
      nn_optimizer *o = nn_optimizer_new(ps, &cfg);
      for (int step = 0; o && step < 5; step++) {
        ad_tensor *w =
            ad_rand(ctx, &rng, dt, 1, shape, step == 3 ? -2e-3 : -2, step == 3 ? 2e-3 : 2);
        if (w && step == 2) set(w, 0, 0), set(w, 1, dt == AD_F32 ? 1e-42 : 1e-320);
        nn_optimizer_zero_grad(o);
        ad_tensor *loss = w ? ad_sum(ctx, ad_mul(ctx, p, w)) : NULL;
        if (!loss || ad_backward(ctx, loss, NULL) != AD_OK || nn_optimizer_step(o) != AD_OK)
          fail(kinds[kind]);
        ad_tape_reset(ctx);
        ad_tensor_free(w);
      }
      if (!o) fail(kinds[kind]);
      snprintf(buf, sizeof buf, "%s%s/params/%lld", kinds[kind], variant ? "+options" : "",
               (long long)n);
      report(buf, p);
      int ns = o ? nn_optimizer_state_count(o) : 0;
      ad_tensor *const *st = o ? nn_optimizer_state_tensors(o) : NULL;
      for (int i = 0; i < ns; i++) {
        snprintf(buf, sizeof buf, "%s%s/%s", kinds[kind], variant ? "+options" : "",
                 nn_optimizer_state_names(o)[i]);
        report(buf, st[i]);
      }
      nn_optimizer_free(o);
      nn_params_free(ps);
      ad_tensor_free(p);
    }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--list") == 0) {
    __builtin_cpu_init();
    printf("# cpu:%s%s%s; gemm: %s\n", __builtin_cpu_supports("avx512f") ? " avx512f" : "",
           __builtin_cpu_supports("avx2") ? " avx2" : "",
           __builtin_cpu_supports("fma") ? " fma" : "", ad_gemm_backend());
  }
  ctx = ad_ctx_new();
  if (!ctx) return 1;
  static const struct {
    const char *name;
    unary_fn f;
    bool positive;
  } ops[] = {{"exp", ad_exp, false},
             {"log", ad_log, true},
             {"sqrt", ad_sqrt, true},
             {"tanh", ad_tanh, false},
             {"sigmoid", ad_sigmoid, false},
             {"relu", ad_relu, false},
             {"leaky_relu", leaky, false},
             {"gelu", ad_gelu, false},
             {"clamp", clamp, false},
             {"hardtanh", hardtanh0, false},
             {"sign", ad_sign, false},
             {"softplus", ad_softplus, false},
             {"erf", ad_erf, false},
             {"sin", ad_sin, false},
             {"cos", ad_cos, false},
             {"atan", ad_atan, false},
             {"abs", ad_abs, false},
             {"square", ad_square, false},
             {"neg", ad_neg, false},
             {"pow2.5", pow25, true},
             {"pow3", pow3, false},
             {"pow-1", powm1, false},
             {"pow-0.5", powm05, true},
             {"pow-1.5", powm15, true},
             {"add_scalar", adds, false},
             {"mul_scalar", muls, false},
             {"hardswish", ad_hardswish, false},
             {"hardsigmoid", ad_hardsigmoid, false},
             {"softshrink", softshrink, false},
             {"hardshrink", hardshrink, false},
             {"threshold", threshold, false},
             {"elu", elu, false},
             {"logsigmoid", ad_logsigmoid, false}};
  for (int d = 0; d < 2; d++) {
    dt = d ? AD_F64 : AD_F32;
    pre = d ? "f64" : "f32";
    int64_t lens[3] = {1, 37, 5003}; /* one element, a short tail, the vector loop */
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
      for (int l = 0; l < 3; l++) unary(ops[i].name, ops[i].f, lens[l], ops[i].positive);
    static const struct {
      const char *name;
      binary_fn f;
    } bops[] = {{"add", ad_add},         {"sub", ad_sub},    {"mul", ad_mul},
                {"div", ad_div},         {"pow", ad_pow},    {"maximum", ad_maximum},
                {"minimum", ad_minimum}, {"prelu", ad_prelu}};
    for (size_t i = 0; i < sizeof bops / sizeof bops[0]; i++)
      for (int l = 0; l < 2; l++)
        for (int bshape = 0; bshape < 3; bshape++)
          binary(bops[i].name, bops[i].f, l ? 5000 : 40, bshape);
    rows(8, 10);
    rows(40, 1000);
    cells(3, 5);
    cells(32, 64);
    optimizers(37);
    optimizers(5003);
    axes(8, 10);
    axes(300, 70);
  }
  ad_ctx_free(ctx);
  return failures ? 1 : 0;
}
