/* mlp: trains a multilayer perceptron on synthetic data through the nn layer
 * (nn_sequential + nn_fit: the training path users get) and times the
 * training loop.
 *
 *   mlp [--layers 784,64,64,10] [--batch 32] [--epochs 5] [--samples 8000]
 *       [--threads 1] [--optim adam|sgd|rmsprop] [--dtype f32|f64] [--seed 1] [--phases]
 *       [--anomaly] [--keep-denormals] [--grad-norms] [--alpha 0.99] [--profile]
 *
 * Model: Dense layers of the given widths with ReLU between them, softmax
 * cross-entropy on the logits of the last; Adam lr 1e-3 (or SGD lr 0.01, or
 * RMSprop lr 1e-3 with PyTorch's defaults, alpha 0.99 and eps 1e-8: the
 * optimizer KANN has, for bench/compare_kann.py; --alpha sets its smoothing
 * constant, KANN's "decay").
 * Data: --samples rows of uniform [0,1) features and labels from a random
 * linear teacher (argmax of x T), generated from a seeded ad_rng before the
 * clock starts. Training: nn_fit with shuffled mini-batches, silent.
 *
 * --threads sets the engine's threads (ad_set_num_threads: large products
 * are split over them, large elementwise ops and the optimizer sweep are
 * chunked), which also sets OpenBLAS to one thread so that BLAS threads never
 * run beside the engine's; the OpenBLAS count is read back through a weak
 * reference (so builds without OpenBLAS link) and printed. OpenMP's count is
 * set too when the program is linked with it (omp_set_num_threads, weak),
 * and OMP_NUM_THREADS is exported for libraries that read it later.
 *
 * Prints the configuration, the loss of the first and last epoch, a hash of
 * the trained parameters (equal when two runs computed the same bits), samples/s,
 * achieved GFLOPS, the CPU seconds of the loop (all threads; less disturbed
 * than wall time on a busy machine), peak RSS (ru_maxrss, which includes
 * the data set), and last "train_s: S", the wall seconds of the training
 * loop alone (nn_fit; no data generation or setup).
 *
 * GFLOPS counts the multiply-adds of the matrix products, 2 flops each:
 * per sample, 2 W forward (W = weight elements), 2 W for the weight
 * gradients and 2 (W - W_1) for the input gradients (the first layer's
 * input needs none), times samples x epochs. Bias, activation, loss and
 * optimizer work is not counted (it is O(units), not O(weights)).
 *
 * --anomaly trains in anomaly mode (ad_set_anomaly_mode): its cost.
 * --profile runs the op profile (ad_profile_start) over the timed nn_fit
 * and prints its table after the report: which ops the time goes to (and,
 * against train_s, what runs outside ops), at the profile's cost per op.
 * --grad-norms records the gradient norms in the history
 * (nn_fit_opts.grad_norms): its cost.
 * --keep-denormals keeps subnormal floats (nn_fit flushes them by default):
 * their cost, in a long run whose loss approaches 0 (e.g. --layers 16,32,2
 * --samples 256 --batch 256 --epochs 1500 --optim sgd).
 *
 * --phases: after the timed nn_fit (train_s is unchanged), trains as many
 * epochs again in a loop written with the public API, the steps nn_fit
 * takes (batch, reset and zero the gradients, forward, loss, backward,
 * optimizer step), and prints the wall microseconds per step of each phase
 * ("phase_us: NAME US"): where a step's time goes inside training, with the
 * caches in the state training leaves them, to set against bench/ops's
 * figures for each part alone.
 * --alternate K (with --threads 2 or more; implies --phases): that loop
 * runs its steps in blocks of K on one thread and on --threads in turn and
 * prints the speed-up of neighbouring blocks (bench_util.h): a two-thread
 * speed-up measured in the same moments of a shared machine. */
#include "ad_ext.h"
#include "nn.h"
#include "bench_util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS 16

typedef struct options {
  int nl; /* number of widths */
  int64_t widths[MAX_LAYERS + 1];
  int64_t batch, samples;
  int epochs, threads, alternate;
  nn_opt_kind optim;
  double alpha; /* RMSprop's */
  ad_dtype dtype;
  unsigned long long seed;
  bool phases, anomaly, keep_denormals, grad_norms, profile;
} options;

static int usage(void) {
  fprintf(stderr,
          "usage: mlp [--layers 784,64,64,10] [--batch 32] [--epochs 5] [--samples 8000]\n"
          "           [--threads 1] [--optim adam|sgd|rmsprop] [--dtype f32|f64] [--seed 1]\n"
          "           [--phases] [--anomaly] [--keep-denormals] [--grad-norms] [--alpha 0.99]\n"
          "           [--profile]\n"
          "           [--alternate K (with --threads 2 or more)]\n");
  return 2;
}

static bool parse_layers(const char *v, options *o) {
  o->nl = 0;
  while (v && *v) {
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (end == v || errno || n < 1 || o->nl > MAX_LAYERS) return false;
    o->widths[o->nl++] = n;
    if (*end == ',')
      v = end + 1;
    else if (*end == 0)
      v = end;
    else
      return false;
  }
  return o->nl >= 2;
}

/* v as a number in [0,1] into *out; false if it is not one. */
static bool parse_unit(const char *v, double *out) {
  char *end;
  double x = strtod(v, &end);
  if (!*v || *end || !(x >= 0 && x <= 1)) return false;
  *out = x;
  return true;
}

static bool parse(int argc, char **argv, options *o) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    long long n;
    bool *flag = !strcmp(a, "--phases")           ? &o->phases
                 : !strcmp(a, "--anomaly")        ? &o->anomaly
                 : !strcmp(a, "--keep-denormals") ? &o->keep_denormals
                 : !strcmp(a, "--grad-norms")     ? &o->grad_norms
                 : !strcmp(a, "--profile")        ? &o->profile
                                                  : NULL;
    if (flag) {
      *flag = true;
      continue;
    }
    if (!v) return false;
    if (strcmp(a, "--layers") == 0) {
      if (!parse_layers(v, o)) return false;
    } else if (strcmp(a, "--batch") == 0 && bench_parse_int(v, 1, &n)) {
      o->batch = n;
    } else if (strcmp(a, "--epochs") == 0 && bench_parse_int(v, 1, &n)) {
      o->epochs = (int)n;
    } else if (strcmp(a, "--samples") == 0 && bench_parse_int(v, 1, &n)) {
      o->samples = n;
    } else if (strcmp(a, "--threads") == 0 && bench_parse_int(v, 1, &n)) {
      o->threads = (int)n;
    } else if (strcmp(a, "--alternate") == 0 && bench_parse_int(v, 1, &n) && n <= 1000000) {
      o->alternate = (int)n;
      o->phases = true;
    } else if (strcmp(a, "--seed") == 0 && bench_parse_int(v, 0, &n)) {
      o->seed = (unsigned long long)n;
    } else if (strcmp(a, "--optim") == 0 &&
               (!strcmp(v, "adam") || !strcmp(v, "sgd") || !strcmp(v, "rmsprop"))) {
      o->optim = !strcmp(v, "adam") ? NN_OPT_ADAM : !strcmp(v, "sgd") ? NN_OPT_SGD : NN_OPT_RMSPROP;
    } else if (strcmp(a, "--alpha") == 0 && parse_unit(v, &o->alpha)) {
    } else if (strcmp(a, "--dtype") == 0 && (!strcmp(v, "f32") || !strcmp(v, "f64"))) {
      o->dtype = strcmp(v, "f32") == 0 ? AD_F32 : AD_F64;
    } else {
      return false;
    }
    i++;
  }
  return true;
}

/* Features uniform in [0,1) and labels argmax_c (x T)_c for a random
 * teacher T [in, classes] of normal entries (centred features, so classes
 * are balanced). Written straight into the tensors: no second copy. */
static bool make_data(ad_ctx *ctx, const options *o, ad_tensor **x, ad_tensor **y) {
  int64_t in = o->widths[0], classes = o->widths[o->nl - 1];
  int64_t xs[2] = {o->samples, in};
  ad_rng rng;
  ad_rng_seed(&rng, o->seed);
  *x = ad_zeros(ctx, o->dtype, 2, xs);
  *y = ad_zeros(ctx, AD_I32, 1, xs);
  double *teacher = malloc((size_t)(in * classes) * sizeof *teacher);
  double *score = malloc((size_t)classes * sizeof *score);
  if (!*x || !*y || !teacher || !score) {
    free(teacher);
    free(score);
    return false;
  }
  for (int64_t i = 0; i < in * classes; i++) teacher[i] = ad_rng_normal(&rng);
  int32_t *lab = (*y)->data;
  for (int64_t r = 0; r < o->samples; r++) {
    for (int64_t c = 0; c < classes; c++) score[c] = 0;
    for (int64_t k = 0; k < in; k++) {
      double v = ad_rng_uniform(&rng);
      if (o->dtype == AD_F32)
        ((float *)(*x)->data)[r * in + k] = (float)v;
      else
        ((double *)(*x)->data)[r * in + k] = v;
      for (int64_t c = 0; c < classes; c++) score[c] += (v - 0.5) * teacher[k * classes + c];
    }
    int64_t best = 0;
    for (int64_t c = 1; c < classes; c++)
      if (score[c] > score[best]) best = c;
    lab[r] = (int32_t)best;
  }
  free(teacher);
  free(score);
  return true;
}

/* --phases: the steps of nn_fit's loop, each timed; see the top comment.
 * Gradients are zeroed in a pass of their own here (nn_fit clears them in
 * the optimizer's sweep instead). */
static bool time_phases(ad_ctx *ctx, nn_model *m, nn_optimizer *opt, ad_tensor *x, ad_tensor *y,
                        const options *o) {
  static const char *const names[] = {"gather", "reset_zero_grad", "forward",
                                      "loss",   "backward",        "optimizer"};
  enum { NPH = sizeof names / sizeof *names };
  nn_batcher *b = nn_batcher_new(ctx, x, y, o->batch, true, o->seed + 2);
  if (!b) return false;
  double sum[NPH] = {0};
  long steps = 0;
  bool ok = true;
  bench_alt alt = {.k = o->alternate, .threads = o->threads};
  bench_alt_begin(&alt);
  for (int e = 0; e < o->epochs && ok; e++) {
    for (;;) {
      ad_tensor *xb, *yb;
      double t[NPH + 1];
      t[0] = bench_now_s();
      if (!nn_batcher_next(b, &xb, &yb)) break;
      t[1] = bench_now_s();
      ad_tape_reset(ctx);
      nn_params_zero_grad(nn_model_params(m));
      t[2] = bench_now_s();
      ad_tensor *pred = nn_model_forward(m, xb);
      t[3] = bench_now_s();
      ad_tensor *loss = nn_cross_entropy_loss(ctx, pred, yb, NN_MEAN);
      ok = loss && isfinite(ad_tensor_item(loss));
      t[4] = bench_now_s();
      ok = ok && ad_backward(ctx, loss, NULL) == AD_OK;
      t[5] = bench_now_s();
      ok = ok && nn_optimizer_step(opt) == AD_OK;
      t[6] = bench_now_s();
      if (!ok) break;
      for (int i = 0; i < NPH; i++) sum[i] += t[i + 1] - t[i];
      steps++;
      bench_alt_step(&alt, steps);
    }
  }
  ok = bench_alt_report(&alt) && ok;
  nn_batcher_free(b);
  ad_tape_reset(ctx);
  if (!ok || !steps) return false;
  double total = 0;
  for (int i = 0; i < NPH; i++) total += sum[i];
  for (int i = 0; i < NPH; i++)
    printf("phase_us: %-15s %7.1f (%4.1f%%)\n", names[i], sum[i] / (double)steps * 1e6,
           100 * sum[i] / total);
  printf("phase_us: %-15s %7.1f\n", "step", total / (double)steps * 1e6);
  return true;
}

int main(int argc, char **argv) {
  options o = {.nl = 4,
               .widths = {784, 64, 64, 10},
               .batch = 32,
               .samples = 8000,
               .epochs = 5,
               .threads = 1,
               .optim = NN_OPT_ADAM,
               .alpha = 0.99,
               .dtype = AD_F32,
               .seed = 1};
  if (!parse(argc, argv, &o) || (o.alternate && o.threads < 2)) return usage();
  if (!bench_set_threads(o.threads)) {
    fprintf(stderr, "mlp: cannot start %d threads\n", o.threads);
    return 1;
  }

  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  ad_set_anomaly_mode(ctx, o.anomaly);
  ad_tensor *x = NULL, *y = NULL;
  if (!make_data(ctx, &o, &x, &y)) {
    fprintf(stderr, "mlp: %s\n", ad_last_error(ctx)[0] ? ad_last_error(ctx) : "out of memory");
    return 1;
  }

  ad_rng rng;
  ad_rng_seed(&rng, o.seed + 1);
  nn_model *m = nn_sequential_new(ctx);
  nn_dense_opts dopts = {.dtype = o.dtype};
  int64_t weights = 0, first = o.widths[0] * o.widths[1];
  for (int l = 0; l + 1 < o.nl; l++) {
    nn_model_add(m, nn_dense_new(ctx, o.widths[l], o.widths[l + 1], &rng, &dopts));
    if (l + 2 < o.nl) nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
    weights += o.widths[l] * o.widths[l + 1];
  }
  nn_opt_config cfg = nn_opt_defaults(o.optim, o.optim == NN_OPT_SGD ? 1e-2 : 1e-3);
  if (o.optim == NN_OPT_RMSPROP) cfg.alpha = o.alpha;
  nn_optimizer *opt = nn_optimizer_new(nn_model_params(m), &cfg);
  if (!opt) {
    fprintf(stderr, "mlp: %s\n", ad_last_error(ctx));
    return 1;
  }

  printf("mlp: layers");
  for (int l = 0; l < o.nl; l++) printf("%c%lld", l ? ',' : ' ', (long long)o.widths[l]);
  printf(", batch %lld, %d epochs x %lld samples, %s, %s, ", (long long)o.batch, o.epochs,
         (long long)o.samples,
         o.optim == NN_OPT_ADAM  ? "adam"
         : o.optim == NN_OPT_SGD ? "sgd"
                                 : "rmsprop",
         ad_dtype_name(o.dtype));
  bench_print_threads();
  printf("parameters: %lld\n", (long long)nn_params_numel(nn_model_params(m)));

  nn_fit_opts fo = {.epochs = o.epochs,
                    .batch_size = o.batch,
                    .seed = o.seed,
                    .verbose = -1,
                    .keep_denormals = o.keep_denormals,
                    .grad_norms = o.grad_norms};
  nn_history *h = NULL;
  double c0 = bench_cpu_s(), t0 = bench_now_s();
  bench_threads_begin();
  ad_status st = o.profile ? ad_profile_start(ctx) : AD_OK;
  if (st == AD_OK) st = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, &h);
  if (st == AD_OK && o.profile) st = ad_profile_stop(ctx);
  double secs = bench_now_s() - t0, cpu = bench_cpu_s() - c0;
  bench_threads_end(secs, o.threads, false);
  if (st != AD_OK) {
    fprintf(stderr, "mlp: %s\n", ad_last_error(ctx));
    return 1;
  }

  if (o.phases) { /* the report's hash is of the parameters nn_fit trained */
    printf("params_hash after nn_fit: %016llx\n", bench_params_hash(nn_model_params(m)));
    if (!time_phases(ctx, m, opt, x, y, &o)) {
      fprintf(stderr, "mlp: phases: %s\n", ad_last_error(ctx));
      return 1;
    }
  }
  double total = (double)o.samples * o.epochs;
  bench_report(h, o.epochs, nn_model_params(m), total,
               total * (6.0 * (double)weights - 2.0 * (double)first), "matmul", secs, cpu,
               o.threads);
  if (o.profile && ad_profile_print(ctx, stdout) != AD_OK) {
    fprintf(stderr, "mlp: profile: %s\n", ad_last_error(ctx));
    return 1;
  }

  nn_history_free(h);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
  ad_ctx_free(ctx);
  return 0;
}
