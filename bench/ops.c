/* ops: per-op throughput at the shapes the models use.
 *
 *   matmul   GFLOPS of C = op(A) op(B) for the products of the seed model
 *            (784-64-64-10, batch 32) and the wide one (784-1024-1024-10,
 *            batch 256), forward and backward, through ad_gemm_f32/f64 (what
 *            the library does), OpenBLAS directly (when built with it), the
 *            built-in kernel (whatever the backend) and ad_matmul; "ratio" is
 *            built-in / OpenBLAS.
 *   elementwise   GB/s of add, mul, relu, tanh, sigmoid, exp, sin, atan,
 *            softplus, x^2 and x^3 (pow_scalar) on 1M elements.
 *   reduce   GB/s of sum, max, softmax, log_softmax and logsumexp along an
 *            axis (input bytes).
 *   softmax_ce    ns per call of softmax cross-entropy, forward and
 *            forward + backward, on [32,10] and [256,10].
 *   optim    µs per nn_optimizer_step (Adam) over the parameters of the
 *            seed and the wide model, and ns per parameter.
 *   gather   µs per nn_batcher_next (shuffled) of a batch of 32 or 256
 *            rows of 784 floats from 8000, and GB/s copied: the batch
 *            gather of bench/mlp, without the training between batches.
 *   conv     GFLOPS (and %peak) of the convolution ops at the shapes of the
 *            MNIST CNN example (batch 64): fwd = ad_conv2d, dx =
 *            ad_conv_transpose2d (conv2d's input gradient), dW =
 *            ad_conv2d_weight (its weight gradient), each 2 N O Ho Wo C kh kw
 *            flops; and a 1x1 convolution.
 *   pool     ms per call of max_pool2d 2x2 (stride 2) on the CNN's
 *            [64,32,24,24] activations: fwd = ad_max_pool2d, fwd+bwd = the
 *            same and ad_backward with a given dy (the gradient scatter of
 *            max_pool2d_backward), and GB/s of x read.
 *
 * First it prints the core's sgemm peak (bench/peak.h: a 1024^3 f32 product
 * on one thread, the best kernel available), and each matmul row gives the
 * public call's GFLOPS as a percentage of it ("%peak").
 *
 * Each figure is the median of --reps samples; a sample repeats the call
 * until it lasts about --sample-ms. The variants of one matmul shape are
 * sampled in turn (interleaved), so their ratio is fair on a noisy machine.
 * Set OPENBLAS_NUM_THREADS=1 for single-thread figures.
 *
 *   ops [--filter SUBSTR] [--reps N] [--sample-ms MS] [--dtype f32|f64|all]
 *       [--clock wall|cpu] [--threads N]
 *
 * --threads N runs the rows with ad_set_num_threads(N): the ops (ad_matmul,
 * the elementwise ops, reductions, softmax cross-entropy, Adam, the batch
 * gather, convolutions, pooling) split over the threads as in training, so
 * a row's ratio to its one-thread run is its scaling. The ad_gemm,
 * openblas and builtin columns are plain calls on one thread whatever N
 * (and "%peak" is ad_gemm's).
 *
 * --clock cpu times with this thread's CPU clock, which ignores time spent
 * descheduled on a busy machine (valid when the work runs in this thread,
 * e.g. OPENBLAS_NUM_THREADS=1; refused with --threads above 1).
 * --filter keeps the rows whose name (e.g. "matmul/f32/seed.fwd1",
 * "elementwise/tanh", "softmax_ce/256x10") contains SUBSTR. */
#include "ad_ext.h"
#include "kernels/kernels.h"
#include "nn.h"
#include "peak.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static clockid_t clock_id = CLOCK_MONOTONIC;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(clock_id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *p, const void *q) {
  double a = *(const double *)p, b = *(const double *)q;
  return (a > b) - (a < b);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static struct {
  const char *filter;
  int reps;
  double sample_s;
  bool f32, f64;
  int threads;
} opt = {NULL, 15, 0.02, true, false, 1};

static int rows_selected;

static bool selected(const char *name) {
  bool on = !opt.filter || strstr(name, opt.filter);
  rows_selected += on;
  return on;
}

/* --------------------------------------------------------------- timing */

typedef void (*bench_fn)(void *ud);

#define MAX_VARIANTS 4
#define MAX_REPS     101

/* Seconds per call of each of nv functions: iterations per sample are set
 * once from a warm-up, then samples of each function are taken in turn. */
static void time_calls(int nv, bench_fn *fn, void **ud, double *sec) {
  long iters[MAX_VARIANTS];
  double samples[MAX_VARIANTS][MAX_REPS];
  for (int v = 0; v < nv; v++) {
    fn[v](ud[v]); /* warm-up: caches, buffers, arena */
    long it = 1;
    for (;;) {
      double t0 = now_s();
      for (long i = 0; i < it; i++) fn[v](ud[v]);
      double dt = now_s() - t0;
      if (dt >= opt.sample_s / 4 || it >= (1L << 30)) {
        double per = dt / (double)it;
        iters[v] = per > 0 ? (long)(opt.sample_s / per) + 1 : it;
        break;
      }
      it *= 2;
    }
  }
  for (int r = 0; r < opt.reps; r++)
    for (int v = 0; v < nv; v++) {
      double t0 = now_s();
      for (long i = 0; i < iters[v]; i++) fn[v](ud[v]);
      samples[v][r] = (now_s() - t0) / (double)iters[v];
    }
  for (int v = 0; v < nv; v++) sec[v] = median(samples[v], opt.reps);
}

static void *xmalloc(size_t n) {
  void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);
  if (!p) {
    fprintf(stderr, "ops: out of memory\n");
    exit(1);
  }
  return p;
}

static void fill_uniform(ad_rng *rng, ad_dtype dt, void *p, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    double v = 2 * ad_rng_uniform(rng) - 1;
    if (dt == AD_F32)
      ((float *)p)[i] = (float)v;
    else
      ((double *)p)[i] = v;
  }
}

static void check_ctx(ad_ctx *ctx, const void *t, const char *what) {
  if (!t) {
    fprintf(stderr, "ops: %s: %s\n", what, ad_last_error(ctx));
    exit(1);
  }
}

/* --------------------------------------------------------------- matmul */

typedef struct mm_shape {
  const char *name;
  int64_t m, n, k;
  bool ta, tb;
} mm_shape;

/* nn_dense keeps W as [out, in]: Y = X W^T (trans_b), dW = dY^T X (trans_a),
 * dX = dY W. The ".io" rows are the same products with W as [in, out]:
 * Y = X W, dW = X^T dY (trans_a), dX = dY W^T (trans_b). */
static const mm_shape mm_shapes[] = {
    {"seed.fwd1", 32, 64, 784, false, true},        {"seed.fwd2", 32, 64, 64, false, true},
    {"seed.fwd3", 32, 10, 64, false, true},         {"seed.dW1", 64, 784, 32, true, false},
    {"seed.dW2", 64, 64, 32, true, false},          {"seed.dW3", 10, 64, 32, true, false},
    {"seed.dX2", 32, 64, 64, false, false},         {"seed.dX3", 32, 64, 10, false, false},
    {"seed.io.fwd1", 32, 64, 784, false, false},    {"seed.io.fwd2", 32, 64, 64, false, false},
    {"seed.io.fwd3", 32, 10, 64, false, false},     {"seed.io.dW1", 784, 64, 32, true, false},
    {"seed.io.dW2", 64, 64, 32, true, false},       {"seed.io.dW3", 64, 10, 32, true, false},
    {"seed.io.dX2", 32, 64, 64, false, true},       {"seed.io.dX3", 32, 64, 10, false, true},
    {"wide.fwd1", 256, 1024, 784, false, true},     {"wide.fwd2", 256, 1024, 1024, false, true},
    {"wide.fwd3", 256, 10, 1024, false, true},      {"wide.dW1", 1024, 784, 256, true, false},
    {"wide.dW2", 1024, 1024, 256, true, false},     {"wide.dW3", 10, 1024, 256, true, false},
    {"wide.dX2", 256, 1024, 1024, false, false},    {"wide.dX3", 256, 1024, 10, false, false},
    {"wide.io.fwd1", 256, 1024, 784, false, false}, {"wide.io.fwd2", 256, 1024, 1024, false, false},
    {"wide.io.fwd3", 256, 10, 1024, false, false},  {"wide.io.dW1", 784, 1024, 256, true, false},
    {"wide.io.dW2", 1024, 1024, 256, true, false},  {"wide.io.dW3", 1024, 10, 256, true, false},
    {"wide.io.dX2", 256, 1024, 1024, false, true},  {"wide.io.dX3", 256, 1024, 10, false, true},
};

typedef struct mm_case {
  const mm_shape *s;
  ad_dtype dt;
  void *a, *b, *c;
  int64_t lda, ldb, ldc;
  ad_ctx *ctx;
  ad_tensor *ta, *tb;
} mm_case;

static void run_public(void *ud) {
  mm_case *q = ud;
  const mm_shape *s = q->s;
  if (q->dt == AD_F32)
    ad_gemm_f32(s->ta, s->tb, s->m, s->n, s->k, 1.0f, q->a, q->lda, q->b, q->ldb, 0.0f, q->c,
                q->ldc);
  else
    ad_gemm_f64(s->ta, s->tb, s->m, s->n, s->k, 1.0, q->a, q->lda, q->b, q->ldb, 0.0, q->c, q->ldc);
}

static void run_kernel(mm_case *q, int kernel) {
  const mm_shape *s = q->s;
  ad_gemm_builtin(kernel, q->dt, s->ta, s->tb, s->m, s->n, s->k, 1.0, q->a, q->lda, q->b, q->ldb,
                  0.0, q->c, q->ldc);
}

static void run_blas(void *ud) { run_kernel(ud, -2); }
static void run_builtin(void *ud) { run_kernel(ud, 0); }

static void run_matmul(void *ud) {
  mm_case *q = ud;
  ad_tensor *y = ad_matmul(q->ctx, q->ta, q->tb, q->s->ta, q->s->tb);
  check_ctx(q->ctx, y, "matmul");
  ad_tape_reset(q->ctx);
}

static double peak_gflops; /* of this core, measured in main */

static void bench_matmul(ad_ctx *ctx, ad_rng *rng) {
  const char *name32 =
      ad_gemm_builtin(0, AD_F32, false, false, 0, 0, 0, 1, NULL, 1, NULL, 1, 0, NULL, 1);
  const char *name64 =
      ad_gemm_builtin(0, AD_F64, false, false, 0, 0, 0, 1, NULL, 1, NULL, 1, 0, NULL, 1);
  bool have_blas =
      ad_gemm_builtin(-2, AD_F32, false, false, 0, 0, 0, 1, NULL, 1, NULL, 1, 0, NULL, 1) != NULL;
  bool header = false;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d == 0 ? AD_F32 : AD_F64;
    if ((dt == AD_F32 && !opt.f32) || (dt == AD_F64 && !opt.f64)) continue;
    for (size_t i = 0; i < sizeof mm_shapes / sizeof *mm_shapes; i++) {
      const mm_shape *s = &mm_shapes[i];
      char name[96];
      snprintf(name, sizeof name, "matmul/%s/%s", ad_dtype_name(dt), s->name);
      if (!selected(name)) continue;
      if (!header) {
        printf("# matmul GFLOPS. ad_gemm: the public call (%s); openblas: cblas "
               "directly;\n# builtin: %s / %s (f32 / f64); ad_matmul: the op; ratio: builtin / "
               "openblas\n",
               ad_gemm_backend(), name32, name64);
        printf("%-26s %-16s %9s %6s %9s %9s %9s %7s\n", "name", "m x n x k", "ad_gemm", "%peak",
               "openblas", "builtin", "ad_matmul", "ratio");
        header = true;
      }
      mm_case q = {.s = s, .dt = dt, .ctx = ctx};
      size_t es = ad_dtype_size(dt);
      int64_t ar = s->ta ? s->k : s->m, ac = s->ta ? s->m : s->k;
      int64_t br = s->tb ? s->n : s->k, bc = s->tb ? s->k : s->n;
      q.lda = ac, q.ldb = bc, q.ldc = s->n;
      int64_t sa[2] = {ar, ac}, sb[2] = {br, bc};
      q.ta = ad_zeros(ctx, dt, 2, sa);
      q.tb = ad_zeros(ctx, dt, 2, sb);
      check_ctx(ctx, q.ta && q.tb ? q.ta : NULL, "zeros");
      fill_uniform(rng, dt, q.ta->data, q.ta->size);
      fill_uniform(rng, dt, q.tb->data, q.tb->size);
      q.a = q.ta->data, q.b = q.tb->data;
      q.c = xmalloc((size_t)(s->m * s->n) * es);
      /* variants sampled in turn: public, builtin, matmul, openblas (if any) */
      bench_fn fn[4] = {run_public, run_builtin, run_matmul, run_blas};
      void *ud[4] = {&q, &q, &q, &q};
      double sec[4];
      time_calls(have_blas ? 4 : 3, fn, ud, sec);
      double gf = 2.0 * (double)s->m * (double)s->n * (double)s->k * 1e-9;
      char shape[48], blas[16] = "-", ratio[16] = "-";
      snprintf(shape, sizeof shape, "%lldx%lldx%lld%s%s", (long long)s->m, (long long)s->n,
               (long long)s->k, s->ta ? " At" : "", s->tb ? " Bt" : "");
      if (have_blas) {
        snprintf(blas, sizeof blas, "%.1f", gf / sec[3]);
        snprintf(ratio, sizeof ratio, "%.2f", sec[3] / sec[1]);
      }
      printf("%-26s %-16s %9.1f %5.0f%% %9s %9.1f %9.1f %7s\n", name, shape, gf / sec[0],
             100.0 * gf / sec[0] / peak_gflops, blas, gf / sec[1], gf / sec[2], ratio);
      fflush(stdout);
      free(q.c);
      ad_tensor_free(q.ta);
      ad_tensor_free(q.tb);
    }
  }
}

/* ---------------------------------------------------------- elementwise */

typedef struct ew_case {
  ad_ctx *ctx;
  ad_tensor *x, *y, *lab;
  int kind, axis;
} ew_case;

enum {
  EW_ADD,
  EW_MUL,
  EW_RELU,
  EW_TANH,
  EW_SIGMOID,
  EW_EXP,
  EW_SIN,
  EW_ATAN,
  EW_SOFTPLUS,
  EW_POW2,
  EW_POW3,
  RD_SUM,
  RD_MAX,
  RD_SOFTMAX,
  RD_LOG_SOFTMAX,
  RD_LSE,
  SCE_FWD,
  SCE_FWDBWD
};

static void run_ew(void *ud) {
  ew_case *q = ud;
  ad_ctx *ctx = q->ctx;
  ad_tensor *r = NULL;
  switch (q->kind) {
  case EW_ADD:
    r = ad_add(ctx, q->x, q->y);
    break;
  case EW_MUL:
    r = ad_mul(ctx, q->x, q->y);
    break;
  case EW_RELU:
    r = ad_relu(ctx, q->x);
    break;
  case EW_TANH:
    r = ad_tanh(ctx, q->x);
    break;
  case EW_SIGMOID:
    r = ad_sigmoid(ctx, q->x);
    break;
  case EW_EXP:
    r = ad_exp(ctx, q->x);
    break;
  case EW_SIN:
    r = ad_sin(ctx, q->x);
    break;
  case EW_ATAN:
    r = ad_atan(ctx, q->x);
    break;
  case EW_SOFTPLUS:
    r = ad_softplus(ctx, q->x);
    break;
  case EW_POW2:
    r = ad_pow_scalar(ctx, q->x, 2.0);
    break;
  case EW_POW3:
    r = ad_pow_scalar(ctx, q->x, 3.0);
    break;
  case RD_SUM:
    r = ad_sum_axis(ctx, q->x, q->axis, false);
    break;
  case RD_MAX:
    r = ad_max_axis(ctx, q->x, q->axis, false);
    break;
  case RD_SOFTMAX:
    r = ad_softmax(ctx, q->x, q->axis);
    break;
  case RD_LOG_SOFTMAX:
    r = ad_log_softmax(ctx, q->x, q->axis);
    break;
  case RD_LSE:
    r = ad_logsumexp(ctx, q->x, q->axis, false);
    break;
  case SCE_FWD:
    r = ad_softmax_cross_entropy(ctx, q->x, q->lab);
    break;
  case SCE_FWDBWD:
    r = ad_softmax_cross_entropy(ctx, q->x, q->lab);
    if (r && ad_backward(ctx, r, NULL) != AD_OK) r = NULL;
    break;
  default:
    break;
  }
  check_ctx(ctx, r, "op");
  ad_tape_reset(ctx);
}

static void bench_elementwise(ad_ctx *ctx, ad_rng *rng) {
  static const struct {
    const char *name;
    int kind, inputs;
  } ops[] = {{"add", EW_ADD, 2},   {"mul", EW_MUL, 2},         {"relu", EW_RELU, 1},
             {"tanh", EW_TANH, 1}, {"sigmoid", EW_SIGMOID, 1}, {"exp", EW_EXP, 1},
             {"sin", EW_SIN, 1},   {"atan", EW_ATAN, 1},       {"softplus", EW_SOFTPLUS, 1},
             {"pow2", EW_POW2, 1}, {"pow3", EW_POW3, 1}};
  int64_t n[1] = {1 << 20};
  bool header = false;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d == 0 ? AD_F32 : AD_F64;
    if ((dt == AD_F32 && !opt.f32) || (dt == AD_F64 && !opt.f64)) continue;
    ad_tensor *x = NULL, *y = NULL;
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
      char name[64];
      snprintf(name, sizeof name, "elementwise/%s/%s", ad_dtype_name(dt), ops[i].name);
      if (!selected(name)) continue;
      if (!header) {
        printf("\n# elementwise on %lld elements: GB/s (inputs + output), ns per element\n",
               (long long)n[0]);
        printf("%-26s %9s %9s\n", "name", "GB/s", "ns/elem");
        header = true;
      }
      if (!x) {
        x = ad_randn(ctx, rng, dt, 1, n, 0, 1);
        y = ad_randn(ctx, rng, dt, 1, n, 0, 1);
        check_ctx(ctx, x && y ? x : NULL, "randn");
      }
      ew_case q = {ctx, x, y, NULL, ops[i].kind, 0};
      bench_fn fn[1] = {run_ew};
      void *ud[1] = {&q};
      double sec;
      time_calls(1, fn, ud, &sec);
      double bytes = (double)(ops[i].inputs + 1) * (double)n[0] * (double)ad_dtype_size(dt);
      printf("%-26s %9.2f %9.3f\n", name, bytes / sec * 1e-9, sec / (double)n[0] * 1e9);
      fflush(stdout);
    }
    ad_tensor_free(x);
    ad_tensor_free(y);
  }
}

/* ----------------------------------------------------------- reductions */

static void bench_reduce(ad_ctx *ctx, ad_rng *rng) {
  static const struct { int64_t rows, cols; } shapes[] = {{32, 64}, {256, 1024}, {1024, 1024}};
  static const struct {
    const char *name;
    int kind;
  } ops[] = {{"sum", RD_SUM},
             {"max", RD_MAX},
             {"softmax", RD_SOFTMAX},
             {"log_softmax", RD_LOG_SOFTMAX},
             {"logsumexp", RD_LSE}};
  bool header = false;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d == 0 ? AD_F32 : AD_F64;
    if ((dt == AD_F32 && !opt.f32) || (dt == AD_F64 && !opt.f64)) continue;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
      ad_tensor *x = NULL;
      for (size_t oi = 0; oi < sizeof ops / sizeof *ops; oi++)
        for (int axis = 0; axis < 2; axis++) {
          char name[80];
          snprintf(name, sizeof name, "reduce/%s/%s/%lldx%lld/axis%d", ad_dtype_name(dt),
                   ops[oi].name, (long long)shapes[si].rows, (long long)shapes[si].cols, axis);
          if (!selected(name)) continue;
          if (!header) {
            printf("\n# reductions and softmax along an axis: GB/s (input), ns per call\n");
            printf("%-40s %9s %11s\n", "name", "GB/s", "ns/call");
            header = true;
          }
          if (!x) {
            int64_t sh[2] = {shapes[si].rows, shapes[si].cols};
            x = ad_randn(ctx, rng, dt, 2, sh, 0, 1);
            check_ctx(ctx, x, "randn");
          }
          ew_case q = {ctx, x, NULL, NULL, ops[oi].kind, axis};
          bench_fn fn[1] = {run_ew};
          void *ud[1] = {&q};
          double sec;
          time_calls(1, fn, ud, &sec);
          double bytes = (double)x->size * (double)ad_dtype_size(dt);
          printf("%-40s %9.2f %11.0f\n", name, bytes / sec * 1e-9, sec * 1e9);
          fflush(stdout);
        }
      ad_tensor_free(x);
    }
  }
}

/* ----------------------------------------------------- softmax CE */

static void bench_softmax_ce(ad_ctx *ctx, ad_rng *rng) {
  static const int64_t batches[] = {32, 256};
  bool header = false;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d == 0 ? AD_F32 : AD_F64;
    if ((dt == AD_F32 && !opt.f32) || (dt == AD_F64 && !opt.f64)) continue;
    for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
      char name[64];
      snprintf(name, sizeof name, "softmax_ce/%s/%lldx10", ad_dtype_name(dt),
               (long long)batches[bi]);
      if (!selected(name)) continue;
      if (!header) {
        printf("\n# softmax cross-entropy: ns per call\n");
        printf("%-26s %11s %11s\n", "name", "forward", "fwd+bwd");
        header = true;
      }
      int64_t sh[2] = {batches[bi], 10};
      ad_tensor *x = ad_randn(ctx, rng, dt, 2, sh, 0, 3);
      ad_tensor *lab = ad_zeros(ctx, AD_I32, 1, sh);
      check_ctx(ctx, x && lab ? x : NULL, "tensors");
      for (int64_t i = 0; i < batches[bi]; i++)
        ad_tensor_set(lab, i, (double)ad_rng_below(rng, 10));
      ad_tensor_set_requires_grad(x, true);
      ew_case qf = {ctx, x, NULL, lab, SCE_FWD, 0}, qb = {ctx, x, NULL, lab, SCE_FWDBWD, 0};
      bench_fn fn[2] = {run_ew, run_ew};
      void *ud[2] = {&qf, &qb};
      double sec[2];
      /* no recording for the forward-only figure */
      bool was = ad_set_grad_enabled(ctx, false);
      time_calls(1, fn, ud, sec);
      ad_set_grad_enabled(ctx, was);
      time_calls(1, fn + 1, ud + 1, sec + 1);
      printf("%-26s %11.0f %11.0f\n", name, sec[0] * 1e9, sec[1] * 1e9);
      fflush(stdout);
      ad_tensor_free(x);
      ad_tensor_free(lab);
    }
  }
}

/* ---------------------------------------------- optimizer step, gather */

static void run_optim(void *ud) { nn_optimizer_step(ud); }

typedef struct gather_case {
  nn_batcher *b;
} gather_case;

static void run_gather(void *ud) {
  gather_case *q = ud;
  ad_tensor *xb, *yb;
  if (!nn_batcher_next(q->b, &xb, &yb)) nn_batcher_next(q->b, &xb, &yb); /* new epoch */
}

/* A model's weights and biases (layers[0] -> ... -> layers[nlayers - 1])
 * in dtype dt, each with a gradient (filled at random: an update does the
 * same work whatever its values), as a new parameter list; *total gets
 * their element count. */
static nn_params *model_params(ad_ctx *ctx, ad_rng *rng, ad_dtype dt, int nlayers,
                               const int64_t *layers, int64_t *total) {
  nn_params *ps = nn_params_new(ctx);
  check_ctx(ctx, ps, "params");
  *total = 0;
  for (int l = 0; l + 1 < nlayers; l++) {
    int64_t ws[2] = {layers[l + 1], layers[l]}, bs[1] = {ws[0]};
    ad_tensor *w = ad_randn(ctx, rng, dt, 2, ws, 0, 0.05);
    ad_tensor *b = ad_zeros(ctx, dt, 1, bs);
    check_ctx(ctx, w && b ? w : NULL, "weights");
    ad_tensor *pair[2] = {w, b};
    for (int k = 0; k < 2; k++) {
      /* a backward pass gives the parameter its grad buffer */
      ad_tensor_set_requires_grad(pair[k], true);
      ad_backward(ctx, ad_sum(ctx, pair[k]), NULL);
      ad_tape_reset(ctx);
      check_ctx(ctx, pair[k]->grad, "grad");
      fill_uniform(rng, dt, pair[k]->grad->data, pair[k]->size);
      *total += pair[k]->size;
      char pn[16];
      snprintf(pn, sizeof pn, "%c%d", k ? 'b' : 'w', l + 1);
      check_ctx(ctx, nn_params_add(ps, pn, pair[k], true) == AD_OK ? ps : NULL, "params_add");
    }
  }
  return ps;
}

/* One optimizer's step over ps, timed: a row of name, params, us/step and
 * ns/param. */
static void time_optimizer(ad_ctx *ctx, const char *name, nn_params *ps, int64_t total,
                           const nn_opt_config_ext *cfg) {
  nn_optimizer *o = nn_optimizer_new_ext(ps, cfg);
  check_ctx(ctx, o, "optimizer");
  bench_fn fn[1] = {run_optim};
  void *ud[1] = {o};
  double sec;
  time_calls(1, fn, ud, &sec);
  printf("%-26s %11lld %11.1f %11.3f\n", name, (long long)total, sec * 1e6,
         sec * 1e9 / (double)total);
  fflush(stdout);
  nn_optimizer_free(o);
}

/* The two parts of a training step that are neither products nor ops:
 * Adam's sweep over every parameter (gradients held fixed: the sweep does
 * the same work whatever their values) and the gather of a shuffled batch.
 * Then every optimizer kind's sweep over the seed model in each dtype
 * (optim/KIND/DTYPE, PyTorch's defaults; rmsprop_cm centered with
 * momentum 0.9, sgd_m with momentum 0.9): a kind whose loop the compiler
 * left unvectorized shows as a multiple of the others' ns per param. */
static void bench_nn(ad_ctx *ctx, ad_rng *rng) {
  static const struct {
    const char *name;
    int nlayers;
    int64_t layers[4], batch;
  } models[] = {{"seed", 4, {784, 64, 64, 10}, 32}, {"wide", 4, {784, 1024, 1024, 10}, 256}};
  bool header = false;
  for (size_t mi = 0; opt.f32 && mi < sizeof models / sizeof *models; mi++) {
    char name[64];
    snprintf(name, sizeof name, "optim/adam/f32/%s", models[mi].name);
    if (!selected(name)) continue;
    if (!header) {
      printf("\n# optimizer step: Adam (lr 1e-3) over a model's weights and biases\n");
      printf("%-26s %11s %11s %11s\n", "name", "params", "us/step", "ns/param");
      header = true;
    }
    int64_t total;
    nn_params *ps = model_params(ctx, rng, AD_F32, models[mi].nlayers, models[mi].layers, &total);
    time_optimizer(ctx, name, ps, total,
                   &(nn_opt_config_ext){.base = nn_opt_defaults(NN_OPT_ADAM, 1e-3)});
    nn_params_free(ps);
  }
  static const char *const kinds[] = {"sgd",      "sgd_m", "adagrad", "rmsprop", "rmsprop_cm",
                                      "adam",     "adamw", "adamax",  "nadam",   "radam",
                                      "adadelta", "asgd",  "rprop"};
  static const nn_opt_kind kind_of[] = {
      NN_OPT_SGD,      NN_OPT_SGD,   NN_OPT_ADAGRAD, NN_OPT_RMSPROP, NN_OPT_RMSPROP,
      NN_OPT_ADAM,     NN_OPT_ADAMW, NN_OPT_ADAMAX,  NN_OPT_NADAM,   NN_OPT_RADAM,
      NN_OPT_ADADELTA, NN_OPT_ASGD,  NN_OPT_RPROP};
  header = false;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d ? AD_F64 : AD_F32;
    if ((dt == AD_F32 && !opt.f32) || (dt == AD_F64 && !opt.f64)) continue;
    nn_params *ps = NULL;
    int64_t total = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
      char name[64];
      snprintf(name, sizeof name, "optim/%s/%s", kinds[k], dt == AD_F32 ? "f32" : "f64");
      if (!selected(name)) continue;
      if (!header) {
        printf("\n# optimizer step of every kind over the seed model (784-64-64-10)\n");
        printf("%-26s %11s %11s %11s\n", "name", "params", "us/step", "ns/param");
        header = true;
      }
      if (!ps) ps = model_params(ctx, rng, dt, models[0].nlayers, models[0].layers, &total);
      nn_opt_config_ext cfg = nn_opt_defaults_ext(kind_of[k], 1e-3);
      if (!strcmp(kinds[k], "sgd_m") || !strcmp(kinds[k], "rmsprop_cm")) cfg.base.momentum = 0.9;
      if (!strcmp(kinds[k], "rmsprop_cm")) cfg.base.centered = true;
      time_optimizer(ctx, name, ps, total, &cfg);
    }
    nn_params_free(ps);
  }
  header = false;
  for (size_t mi = 0; mi < sizeof models / sizeof *models; mi++) {
    char name[64];
    snprintf(name, sizeof name, "gather/f32/%s", models[mi].name);
    if (!selected(name)) continue;
    if (!header) {
      printf("\n# batch gather: shuffled batches of 784-float rows out of 8000 (25 MB)\n");
      printf("%-26s %11s %11s %11s\n", "name", "rows", "us/batch", "GB/s");
      header = true;
    }
    int64_t xs[2] = {8000, 784}, ys[1] = {8000};
    ad_tensor *x = ad_rand(ctx, rng, AD_F32, 2, xs, 0, 1);
    ad_tensor *y = ad_zeros(ctx, AD_I32, 1, ys);
    check_ctx(ctx, x && y ? x : NULL, "data set");
    gather_case q = {nn_batcher_new(ctx, x, y, models[mi].batch, true, 7)};
    check_ctx(ctx, q.b, "batcher");
    bench_fn fn[1] = {run_gather};
    void *ud[1] = {&q};
    double sec;
    time_calls(1, fn, ud, &sec);
    /* bytes per call on average: an epoch's last batch may be short */
    double bytes =
        (double)nn_batcher_rows(q.b) / (double)nn_batcher_batches(q.b) * 784 * sizeof(float);
    printf("%-26s %11lld %11.1f %11.2f\n", name, (long long)models[mi].batch, sec * 1e6,
           bytes / sec * 1e-9);
    fflush(stdout);
    nn_batcher_free(q.b);
    ad_tensor_free(x);
    ad_tensor_free(y);
  }
}

/* ------------------------------------------------------------ convolution */

typedef struct conv_case {
  ad_ctx *ctx;
  ad_tensor *x, *w, *dy;
  int kind; /* 0 fwd, 1 dx, 2 dW */
} conv_case;

static void run_conv(void *ud) {
  conv_case *q = ud;
  ad_tensor *r = q->kind == 0 ? ad_conv2d(q->ctx, q->x, q->w, NULL, NULL)
                 : q->kind == 1
                     ? ad_conv_transpose2d(q->ctx, q->dy, q->w, NULL, NULL)
                     : ad_conv2d_weight(q->ctx, q->x, q->dy, q->w->shape[2], q->w->shape[3], NULL);
  check_ctx(q->ctx, r, "conv");
  ad_tape_reset(q->ctx);
}

static void bench_conv(ad_ctx *ctx, ad_rng *rng) {
  /* gemm: with the Winograd path off (ad_conv_winograd_mode), im2col +
   * GEMM as every shape without it */
  static const struct {
    const char *name;
    int64_t n, c, h, w, o, k;
    bool gemm;
  } shapes[] = {{"mnist.conv1", 64, 1, 28, 28, 32, 3, false},
                {"mnist.conv2", 64, 32, 26, 26, 32, 3, false},
                {"mnist.conv2.gemm", 64, 32, 26, 26, 32, 3, true},
                {"1x1", 64, 64, 14, 14, 128, 1, false}};
  static const char *const kinds[3] = {"fwd", "dx", "dW"};
  bool header = false;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d == 0 ? AD_F32 : AD_F64;
    if ((dt == AD_F32 && !opt.f32) || (dt == AD_F64 && !opt.f64)) continue;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
      for (int kind = 0; kind < 3; kind++) {
        char name[80];
        snprintf(name, sizeof name, "conv/%s/%s.%s", ad_dtype_name(dt), shapes[si].name,
                 kinds[kind]);
        if (!selected(name)) continue;
        if (!header) {
          printf("\n# convolution (NCHW, stride 1, no padding): GFLOPS (the direct method's "
                 "flops), %% of the sgemm peak, ms per call\n");
          printf("%-30s %-22s %9s %6s %9s\n", "name", "x * w", "GFLOPS", "%peak", "ms");
          header = true;
        }
        int64_t xs[4] = {shapes[si].n, shapes[si].c, shapes[si].h, shapes[si].w};
        int64_t ws[4] = {shapes[si].o, shapes[si].c, shapes[si].k, shapes[si].k};
        int64_t oh = shapes[si].h - shapes[si].k + 1, ow = shapes[si].w - shapes[si].k + 1;
        int64_t ys[4] = {shapes[si].n, shapes[si].o, oh, ow};
        conv_case q = {ctx, ad_rand(ctx, rng, dt, 4, xs, -1, 1),
                       ad_rand(ctx, rng, dt, 4, ws, -1, 1), ad_rand(ctx, rng, dt, 4, ys, -1, 1),
                       kind};
        check_ctx(ctx, q.x && q.w && q.dy ? q.x : NULL, "rand");
        bench_fn fn[1] = {run_conv};
        void *ud[1] = {&q};
        double sec;
        int mode = ad_conv_winograd_mode(shapes[si].gemm ? -1 : 0);
        time_calls(1, fn, ud, &sec);
        ad_conv_winograd_mode(mode);
        double gf = 2.0 * (double)(shapes[si].n * shapes[si].o * oh * ow) *
                    (double)(shapes[si].c * shapes[si].k * shapes[si].k) * 1e-9;
        char shape[48];
        snprintf(shape, sizeof shape, "%lldx%lldx%lldx%lld*%lldx%lld", (long long)xs[0],
                 (long long)xs[1], (long long)xs[2], (long long)xs[3], (long long)ws[0],
                 (long long)ws[2]);
        printf("%-30s %-22s %9.1f %5.0f%% %9.3f\n", name, shape, gf / sec,
               100.0 * gf / sec / peak_gflops, sec * 1e3);
        fflush(stdout);
        ad_tensor_free(q.x);
        ad_tensor_free(q.w);
        ad_tensor_free(q.dy);
      }
  }
}

/* ---------------------------------------------------------------- pooling */

typedef struct pool_case {
  ad_ctx *ctx;
  ad_tensor *x, *dy;
  bool backward;
} pool_case;

static void run_pool(void *ud) {
  pool_case *q = ud;
  ad_tensor *y = ad_max_pool2d(q->ctx, q->x, 2, 2, NULL);
  check_ctx(q->ctx, y, "max_pool2d");
  if (q->backward) {
    check_ctx(q->ctx, ad_backward(q->ctx, y, q->dy) == AD_OK ? y : NULL, "backward");
    ad_tensor_zero_grad(q->x);
  }
  ad_tape_reset(q->ctx);
}

static void bench_pool(ad_ctx *ctx, ad_rng *rng) {
  static const char *const kinds[2] = {"fwd", "fwd+bwd"};
  bool header = false;
  for (int d = 0; d < 2; d++) {
    ad_dtype dt = d == 0 ? AD_F32 : AD_F64;
    if ((dt == AD_F32 && !opt.f32) || (dt == AD_F64 && !opt.f64)) continue;
    for (int kind = 0; kind < 2; kind++) {
      char name[80];
      snprintf(name, sizeof name, "pool/%s/max2x2.%s", ad_dtype_name(dt), kinds[kind]);
      if (!selected(name)) continue;
      if (!header) {
        printf("\n# max_pool2d 2x2 stride 2 on the MNIST CNN's activations: ms per call, GB/s of "
               "x read\n");
        printf("%-26s %-22s %9s %9s\n", "name", "x", "ms", "GB/s");
        header = true;
      }
      int64_t xs[4] = {64, 32, 24, 24}, ys[4] = {64, 32, 12, 12};
      pool_case q = {ctx, ad_rand(ctx, rng, dt, 4, xs, -1, 1), ad_rand(ctx, rng, dt, 4, ys, -1, 1),
                     kind == 1};
      check_ctx(ctx, q.x && q.dy ? q.x : NULL, "rand");
      if (q.backward) ad_tensor_set_requires_grad(q.x, true);
      bench_fn fn[1] = {run_pool};
      void *ud[1] = {&q};
      double sec;
      time_calls(1, fn, ud, &sec);
      printf("%-26s %-22s %9.3f %9.2f\n", name, "64x32x24x24", sec * 1e3,
             (double)q.x->size * (dt == AD_F64 ? 8.0 : 4.0) / sec * 1e-9);
      fflush(stdout);
      ad_tensor_free(q.x);
      ad_tensor_free(q.dy);
    }
  }
}

/* ----------------------------------------------------------------- main */

static long parse_long(const char *s, const char *flag, long lo, long hi) {
  char *end;
  errno = 0;
  long v = strtol(s ? s : "", &end, 10);
  if (!s || errno || *end || v < lo || v > hi) {
    fprintf(stderr, "ops: %s wants an integer in [%ld, %ld]\n", flag, lo, hi);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--filter") && v)
      opt.filter = v, i++;
    else if (!strcmp(a, "--reps"))
      opt.reps = (int)parse_long(v, a, 1, MAX_REPS), i++;
    else if (!strcmp(a, "--sample-ms"))
      opt.sample_s = (double)parse_long(v, a, 1, 10000) * 1e-3, i++;
    else if (!strcmp(a, "--threads"))
      opt.threads = (int)parse_long(v, a, 1, 256), i++;
    else if (!strcmp(a, "--clock") && v && (!strcmp(v, "wall") || !strcmp(v, "cpu")))
      clock_id = !strcmp(v, "cpu") ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, i++;
    else if (!strcmp(a, "--dtype") && v) {
      opt.f32 = !strcmp(v, "f32") || !strcmp(v, "all");
      opt.f64 = !strcmp(v, "f64") || !strcmp(v, "all");
      if (!opt.f32 && !opt.f64) {
        fprintf(stderr, "ops: --dtype wants f32, f64 or all\n");
        return 2;
      }
      i++;
    } else {
      fprintf(stderr,
              "usage: ops [--filter SUBSTR] [--reps N] [--sample-ms MS] [--dtype f32|f64|all] "
              "[--clock wall|cpu] [--threads N]\n");
      return strcmp(a, "--help") && strcmp(a, "-h") ? 2 : 0;
    }
  }
  if (opt.threads > 1 && clock_id != CLOCK_MONOTONIC) {
    fprintf(stderr, "ops: --clock cpu counts this thread's time alone: it needs --threads 1\n");
    return 2;
  }
  const char *th = getenv("OPENBLAS_NUM_THREADS");
  printf("# ops: median of %d samples of ~%.0f ms (%s clock); engine threads %d; "
         "OPENBLAS_NUM_THREADS=%s\n",
         opt.reps, opt.sample_s * 1e3, clock_id == CLOCK_MONOTONIC ? "wall" : "thread CPU",
         opt.threads, th ? th : "(unset)");
  bench_peak pk = bench_sgemm_peak(5);
  peak_gflops = pk.gflops > 0 ? pk.gflops : 1;
  printf("# sgemm peak of one core: %.1f GFLOPS (1024^3 f32, %s); GEMM dispatch: %s\n", pk.gflops,
         pk.kernel, ad_gemm_backend());
  if (opt.threads > 1 && ad_set_num_threads(opt.threads) != AD_OK) {
    fprintf(stderr, "ops: cannot start %d threads\n", opt.threads);
    return 1;
  }
  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  ad_rng rng;
  ad_rng_seed(&rng, 42);
  bench_matmul(ctx, &rng);
  bench_elementwise(ctx, &rng);
  bench_reduce(ctx, &rng);
  bench_softmax_ce(ctx, &rng);
  bench_nn(ctx, &rng);
  bench_conv(ctx, &rng);
  bench_pool(ctx, &rng);
  if (!rows_selected)
    fprintf(stderr, "ops: no row matches --filter %s (f64 rows need --dtype f64 or all)\n",
            opt.filter);
  ad_ctx_free(ctx);
  return 0;
}
