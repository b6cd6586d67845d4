/* optscan: every optimizer kind and option, one update timed per case, as
 * bench/opscan does for the core's ops: an optimizer whose loop falls to a
 * scalar path (a division or libm call per element that does not
 * vectorize, a second sweep) shows beside the others. bench/optscan.py
 * runs it with PyTorch's same optimizers (torch.optim, the loop per
 * parameter PyTorch 1.13 takes on the CPU) and prints the ratios.
 *
 *   build/bench/optscan [--filter SUBSTR] [--reps N] [--threads T] [--dtype f32|f64]
 *
 * Two parameter sets, each the parameters of an MLP of bench/mlp (weights
 * [out,in] and biases): the seed model's, 784-64-64-10 (55,050 values,
 * their state in the caches) and the wide model's, 784-1024-1024-10
 * (1,863,690 values, streamed from memory), with fixed gradients N(0,
 * 0.01) bound once (ad_tensor_set_grad_buffer). Each case makes its
 * optimizer over both sets, takes two steps untimed (state allocated and
 * touched), then of --reps steps (default 15) prints the least time of
 * one step on each set, in microseconds, in the scans' format
 * (bench/scan_util.h; the first column the seed set, the second the wide
 * set):
 *
 *   optscan/NAME fwd_us SEED bwd_us WIDE
 *
 * A case that fails ends the program with its error (exit 1). Not a test:
 * the machine's other load moves the times. */
#include "ad_ext.h"
#include "nn.h"
#include "scan_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ad_ctx *ctx;
static ad_rng rng;
static ad_dtype dtype = AD_F32;

/* One parameter set: an MLP's weights and biases with gradients bound. */
typedef struct pset {
  nn_params *params;
  ad_tensor *t[6], *g[6];
} pset;

static void die(const char *what) {
  fprintf(stderr, "optscan: %s: %s\n", what, ctx ? ad_last_error(ctx) : "no context");
  exit(1);
}

static void pset_make(pset *s, const int64_t *widths) {
  static const char *names[6] = {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"};
  s->params = nn_params_new(ctx);
  if (!s->params) die("params");
  for (int i = 0; i < 6; i++) {
    int64_t out = widths[i / 2 + 1], in = widths[i / 2];
    int64_t shape[2] = {out, in};
    int nd = i % 2 ? 1 : 2;
    s->t[i] = ad_randn(ctx, &rng, dtype, nd, shape, 0, 0.05);
    s->g[i] = ad_randn(ctx, &rng, dtype, nd, shape, 0, 0.01);
    if (!s->t[i] || !s->g[i] || ad_tensor_set_requires_grad(s->t[i], true) != AD_OK ||
        ad_tensor_set_grad_buffer(s->t[i], s->g[i]->data, false) != AD_OK ||
        nn_params_add(s->params, names[i], s->t[i], false) != AD_OK)
      die("params");
  }
}

/* The least time of one step of cfg's optimizer over s, in seconds. */
static double time_steps(const pset *s, const nn_opt_config_ext *cfg, long long reps) {
  nn_optimizer *opt = nn_optimizer_new_ext(s->params, cfg);
  if (!opt) die("optimizer");
  double best = 1e30;
  for (long long r = -2; r < reps; r++) {
    double t0 = bench_now_s();
    if (nn_optimizer_step(opt) != AD_OK) die("step");
    double t = bench_now_s() - t0;
    if (r >= 0 && t < best) best = t;
  }
  nn_optimizer_free(opt);
  return best;
}

typedef struct opt_case {
  const char *name;
  nn_opt_kind kind;
  void (*set)(nn_opt_config_ext *c); /* the case's options over PyTorch's defaults; NULL: none */
} opt_case;

static void sgd_momentum(nn_opt_config_ext *c) { c->base.momentum = 0.9; }
static void sgd_nesterov_wd(nn_opt_config_ext *c) {
  c->base.momentum = 0.9, c->base.nesterov = true, c->base.weight_decay = 1e-4;
}
static void sgd_dampening_maximize(nn_opt_config_ext *c) {
  c->base.momentum = 0.9, c->base.dampening = 0.1, c->base.maximize = true;
}
static void sgd_clip_value(nn_opt_config_ext *c) { c->base.clip_value = 0.005; }
static void adagrad_decay_wd(nn_opt_config_ext *c) {
  c->base.lr_decay = 1e-3, c->base.weight_decay = 1e-4, c->base.initial_accumulator = 0.1;
}
static void rmsprop_centered_momentum(nn_opt_config_ext *c) {
  c->base.centered = true, c->base.momentum = 0.9;
}
static void adam_amsgrad(nn_opt_config_ext *c) { c->base.amsgrad = true; }
static void adam_wd_maximize(nn_opt_config_ext *c) {
  c->base.weight_decay = 1e-4, c->base.maximize = true;
}
static void adam_clip_norm(nn_opt_config_ext *c) { c->base.clip_norm = 1.0; }
static void adamw_amsgrad(nn_opt_config_ext *c) { c->base.amsgrad = true; }
static void adamax_wd(nn_opt_config_ext *c) { c->base.weight_decay = 1e-4; }
static void nadam_wd(nn_opt_config_ext *c) { c->base.weight_decay = 1e-4; }
static void radam_wd(nn_opt_config_ext *c) { c->base.weight_decay = 1e-4; }
static void adadelta_wd(nn_opt_config_ext *c) { c->base.weight_decay = 1e-4; }
static void asgd_averaging(nn_opt_config_ext *c) { c->t0 = 0; } /* averages from the start */

static const opt_case cases[] = {
    {"sgd", NN_OPT_SGD, NULL},
    {"sgd_momentum", NN_OPT_SGD, sgd_momentum},
    {"sgd_nesterov_wd", NN_OPT_SGD, sgd_nesterov_wd},
    {"sgd_dampening_maximize", NN_OPT_SGD, sgd_dampening_maximize},
    {"sgd_clip_value", NN_OPT_SGD, sgd_clip_value},
    {"adagrad", NN_OPT_ADAGRAD, NULL},
    {"adagrad_decay_wd", NN_OPT_ADAGRAD, adagrad_decay_wd},
    {"rmsprop", NN_OPT_RMSPROP, NULL},
    {"rmsprop_centered_momentum", NN_OPT_RMSPROP, rmsprop_centered_momentum},
    {"adam", NN_OPT_ADAM, NULL},
    {"adam_amsgrad", NN_OPT_ADAM, adam_amsgrad},
    {"adam_wd_maximize", NN_OPT_ADAM, adam_wd_maximize},
    {"adam_clip_norm", NN_OPT_ADAM, adam_clip_norm},
    {"adamw", NN_OPT_ADAMW, NULL},
    {"adamw_amsgrad", NN_OPT_ADAMW, adamw_amsgrad},
    {"adamax", NN_OPT_ADAMAX, NULL},
    {"adamax_wd", NN_OPT_ADAMAX, adamax_wd},
    {"nadam", NN_OPT_NADAM, NULL},
    {"nadam_wd", NN_OPT_NADAM, nadam_wd},
    {"radam", NN_OPT_RADAM, NULL},
    {"radam_wd", NN_OPT_RADAM, radam_wd},
    {"adadelta", NN_OPT_ADADELTA, NULL},
    {"adadelta_wd", NN_OPT_ADADELTA, adadelta_wd},
    {"asgd", NN_OPT_ASGD, NULL},
    {"asgd_averaging", NN_OPT_ASGD, asgd_averaging},
    {"rprop", NN_OPT_RPROP, NULL},
};

int main(int argc, char **argv) {
  scan_opts o;
  if (!scan_parse(argc, argv, "optscan", &o)) return 2;
  dtype = o.dtype;
  ctx = ad_ctx_new();
  if (!ctx || !bench_set_threads((int)o.threads)) {
    fprintf(stderr, "optscan: no context or threads\n");
    return 1;
  }
  ad_rng_seed(&rng, 1);
  pset seed, wide;
  pset_make(&seed, (const int64_t[]){784, 64, 64, 10});
  pset_make(&wide, (const int64_t[]){784, 1024, 1024, 10});
  scan_print_header("optscan", &o);
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    if (o.filter && !strstr(cases[c].name, o.filter)) continue;
    nn_opt_config_ext cfg = nn_opt_defaults_ext(cases[c].kind, 1e-3);
    if (cases[c].set) cases[c].set(&cfg);
    double ts = time_steps(&seed, &cfg, o.reps), tw = time_steps(&wide, &cfg, o.reps);
    printf("optscan/%s fwd_us %.1f bwd_us %.1f\n", cases[c].name, ts * 1e6, tw * 1e6);
    fflush(stdout);
  }
  for (int i = 0; i < 6; i++) {
    ad_tensor_set_grad_buffer(seed.t[i], NULL, true);
    ad_tensor_set_grad_buffer(wide.t[i], NULL, true);
  }
  nn_params_free(seed.params);
  nn_params_free(wide.params);
  for (int i = 0; i < 6; i++) {
    ad_tensor *ts[4] = {seed.t[i], seed.g[i], wide.t[i], wide.g[i]};
    for (int k = 0; k < 4; k++) ad_tensor_free(ts[k]);
  }
  ad_ctx_free(ctx);
  return 0;
}
