/* optim.c: optimizers (PyTorch's update rules), learning-rate schedules.
 *
 * An update is a plain loop over a parameter's data and its gradient (the
 * gradient itself always comes from the tape): nn/kernels/update.c. State
 * lives in named persistent tensors so that a checkpoint can save and
 * resume it. */
#include "kernels/update.h"
#include "nn_internal.h"
#include "nn_io.h"

#include <float.h>
#include <stddef.h>
#include <math.h>

#define MAX_SLOT_STATE 3

typedef struct slot {
  ad_tensor *p;
  uint64_t serial;              /* p's (ad_tensor_serial): 0 once p is freed */
  ad_tensor *s[MAX_SLOT_STATE]; /* per kind, see state_kinds */
  ad_tensor *t;                 /* 0-d f64: this parameter's steps, if its update uses them */
  int t_index;                  /* t's position among the state tensors */
  ad_tensor *mu;                /* NAdam: 0-d, the parameter's dtype: its mu_product */
  ad_tensor *eta, *amu;         /* ASGD: 0-d f32, the parameter's eta and mu */
  double eta_now, mu_now;       /* ASGD: eta and mu before this step's update of them */
  bool repeat;                  /* p is an earlier slot's (tied weights): no state, no step */
  int group;                    /* its parameter group */
  nn_params *list;              /* the list it came from, and its index there (for its name) */
  int li;
} slot;

/* A parameter group after the first (nn_optimizer_add_param_group): its
 * settings and its rates, as group 0's are the optimizer's cfg, ext, lr
 * and lr0. */
typedef struct group {
  nn_opt_config cfg;     /* the update reads it; lr follows the tensor lr */
  nn_opt_config_ext ext; /* base refreshed by nn_optimizer_group_config_ext */
  ad_tensor *lr, *lr0;   /* 0-d f64 state: "<kind>.group<g>.lr", "...schedule.lr0" */
  nn_params *params;     /* its list (the caller's) */
  ad_tensor *members;    /* 0-d f64 "<kind>.group<g>.params" and ".names" (group_members) */
  ad_tensor *names;
} group;

struct nn_optimizer {
  ad_ctx *ctx;
  nn_params *params;
  nn_opt_config cfg;
  double momentum_decay; /* NAdam's */
  nn_opt_config_ext ext; /* the settings of nn_opt_config_ext (base: see
                            nn_optimizer_config_ext; the update reads cfg) */
  int nslots, slots_cap;
  slot *slots;
  int nts, ts_cap;
  ad_tensor **ts; /* the slots' distinct tensors, which clipping reads */
  int ngroups;    /* 1 + the groups added (nn_optimizer_add_param_group) */
  int more_cap;
  group *more;                  /* groups 1 .. ngroups-1 */
  ad_tensor *groups;            /* 0-d f64 "<kind>.param_groups": ngroups, once a group was added */
  ad_tensor *members0, *names0; /* group 0's "params" and "names", with groups.
                                   A checkpoint must match each group's: see
                                   group_members */
  ad_tensor *step;              /* 0-d f64: steps taken */
  int nstate, names_cap, tensors_cap, optional_cap;
  char **state_names;
  ad_tensor **state_tensors;
  bool *state_optional; /* may be missing from a checkpoint (see nn_optimizer_state_optional) */
  bool has_sched;
  nn_schedule_ext sched;  /* its milestones: the copy below */
  nn_schedule sched_view; /* the members nn_schedule has, for nn_optimizer_schedule */
  int64_t *milestones;    /* owned, sched.n_milestones entries */

  nn_schedule_ext2 sched2; /* the whole schedule: sched and sched_view are views of it */
  nn_schedule_ext2 *kids;  /* owned copy of a sequential's or chained's children, */
  int64_t *kid_ms;         /* and of their milestones (n_kid_ms in all) */
  int n_kid_ms;
  bool has_plateau;
  nn_plateau plateau;
  /* 0-d f64 state tensors, so that checkpoints keep them: the current
   * learning rate (cfg.lr follows it before every use), the schedule's base
   * rate and its epoch; the plateau's best value, bad epochs and cooldown
   * counter */
  ad_tensor *lr, *lr0, *epoch;
  ad_tensor *best, *bad_epochs, *cooldown;
};

/* " (parameter group g)" when o has several, else "": for messages */
static const char *group_label(const nn_optimizer *o, int g, char buf[32]) {
  if (o->ngroups > 1) snprintf(buf, 32, " (parameter group %d)", g);
  return buf;
}

static double scalar_get(const ad_tensor *t) { return ((const double *)t->data)[0]; }
static void scalar_set(ad_tensor *t, double v) { ((double *)t->data)[0] = v; }

/* Group g's settings and rates (0: the optimizer's own; the object itself
 * is never const) */
static nn_opt_config *gcfg(const nn_optimizer *o, int g) {
  nn_optimizer *w = (nn_optimizer *)o;
  return g ? &w->more[g - 1].cfg : &w->cfg;
}
static nn_opt_config_ext *gext(const nn_optimizer *o, int g) {
  nn_optimizer *w = (nn_optimizer *)o;
  return g ? &w->more[g - 1].ext : &w->ext;
}
static ad_tensor *glr(const nn_optimizer *o, int g) { return g ? o->more[g - 1].lr : o->lr; }
static ad_tensor *glr0(const nn_optimizer *o, int g) { return g ? o->more[g - 1].lr0 : o->lr0; }
static ad_tensor *gmembers(const nn_optimizer *o, int g) {
  return g ? o->more[g - 1].members : o->members0;
}
static ad_tensor *gnames(const nn_optimizer *o, int g) {
  return g ? o->more[g - 1].names : o->names0;
}

/* A 0-d state tensor of a parameter's dtype (NAdam's mu_product) */
static double scalar_value(const ad_tensor *t) {
  return t->dtype == AD_F32 ? (double)((const float *)t->data)[0] : ((const double *)t->data)[0];
}

/* NAdam's mu_product *= mu for step t of the parameter, in its dtype as
 * PyTorch's 0-d tensor times a Python number (the number rounded to the
 * tensor's dtype, then one rounded product) */
static void mu_product_step(ad_tensor *mu, const nn_opt_config *c, double momentum_decay,
                            int64_t t) {
  double f = c->beta1 * (1.0 - 0.5 * pow(0.96, (double)t * momentum_decay));
  if (mu->dtype == AD_F32)
    ((float *)mu->data)[0] *= (float)f;
  else
    ((double *)mu->data)[0] *= f;
}

/* ASGD's eta and mu, for step t of the parameter: the loop reads their
 * values before it (eta_now, mu_now; eta is torch.tensor(lr) at the first
 * step, the rate then), the tensors get PyTorch's new ones, computed in
 * double as Python's floats and rounded to float32 as torch.tensor does */
static void asgd_scalars_step(const nn_optimizer *o, slot *sl) {
  double t = ((const double *)sl->t->data)[0], lr = gcfg(o, sl->group)->lr;
  const nn_opt_config_ext *x = gext(o, sl->group);
  float *eta = sl->eta->data, *mu = sl->amu->data;
  if (t == 1) *eta = (float)lr;
  sl->eta_now = *eta;
  sl->mu_now = *mu;
  *eta = (float)(lr / pow(1 + x->lambd * lr * t, x->asgd_alpha));
  double d = t - x->t0; /* Python's max(1, d): 1 unless d > 1 */
  *mu = (float)(d > 1 ? 1 / d : 1.0);
}

/* Notes the writes of the 0-d state tensors a, b and c (NULL: none) before
 * they are made (see step_some). */
static ad_status scalars_noted(ad_tensor *a, ad_tensor *b, ad_tensor *c) {
  ad_status st = ad_tensor_mark_modified(a);
  if (st == AD_OK && b) st = ad_tensor_mark_modified(b);
  if (st == AD_OK && c) st = ad_tensor_mark_modified(c);
  return st;
}

static double rate0(const nn_optimizer *o, double lr0);
static double sched_lr(const nn_schedule_ext2 *s, double lr0, int64_t t);
static const char *momentum_problem(const nn_opt_config *c, const nn_schedule_ext2 *s);
static void sched_momentum(nn_optimizer *o);

static const char *const kind_names[] = {"sgd",   "adagrad", "rmsprop",  "adam", "adamw", "adamax",
                                         "nadam", "radam",   "adadelta", "asgd", "rprop"};
/* PyTorch's class names, for messages */
static const char *const torch_names[] = {"SGD",   "Adagrad", "RMSprop",  "Adam", "AdamW", "Adamax",
                                          "NAdam", "RAdam",   "Adadelta", "ASGD", "Rprop"};
_Static_assert(sizeof kind_names / sizeof *kind_names == NN_OPT_RPROP + 1,
               "a name for every nn_opt_kind");
_Static_assert(sizeof torch_names / sizeof *torch_names == NN_OPT_RPROP + 1,
               "a name for every nn_opt_kind");

nn_opt_config nn_opt_defaults(nn_opt_kind kind, double lr) {
  nn_opt_config c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  c.lr = lr;
  switch (kind) {
  case NN_OPT_ADAGRAD:
    c.eps = 1e-10;
    break;
  case NN_OPT_ADADELTA:
    c.eps = 1e-6;
    break;
  case NN_OPT_RMSPROP:
    c.alpha = 0.99;
    c.eps = 1e-8;
    break;
  case NN_OPT_ADAMW:
    c.weight_decay = 0.01;
    /* fall through */
  case NN_OPT_ADAM:
  case NN_OPT_ADAMAX:
  case NN_OPT_NADAM:
  case NN_OPT_RADAM:
    c.beta1 = 0.9;
    c.beta2 = 0.999;
    c.eps = 1e-8;
    break;
  default:
    break;
  }
  return c;
}

nn_opt_config_ext nn_opt_defaults_ext(nn_opt_kind kind, double lr) {
  nn_opt_config_ext e;
  memset(&e, 0, sizeof e);
  e.base = nn_opt_defaults(kind, lr);
  switch (kind) {
  case NN_OPT_NADAM:
    e.momentum_decay = 4e-3;
    break;
  case NN_OPT_ADADELTA:
    e.rho = 0.9;
    break;
  case NN_OPT_ASGD:
    e.lambd = 1e-4;
    e.asgd_alpha = 0.75;
    e.t0 = 1e6;
    break;
  case NN_OPT_RPROP:
    e.etaminus = 0.5;
    e.etaplus = 1.2;
    e.step_size_min = 1e-6;
    e.step_size_max = 50;
    break;
  default:
    break;
  }
  return e;
}

/* The names of the state tensors of one parameter for the configuration;
 * NULL marks an unused position. */
static void state_kinds(const nn_opt_config *c, const char *names[MAX_SLOT_STATE]) {
  for (int k = 0; k < MAX_SLOT_STATE; k++) names[k] = NULL;
  switch (c->kind) {
  case NN_OPT_SGD:
    if (c->momentum > 0) names[0] = "momentum";
    break;
  case NN_OPT_ADAGRAD:
    names[0] = "sum";
    break;
  case NN_OPT_RMSPROP:
    names[0] = "square_avg";
    if (c->centered) names[1] = "grad_avg";
    if (c->momentum > 0) names[2] = "momentum";
    break;
  case NN_OPT_ADAM:
  case NN_OPT_ADAMW:
    names[0] = "m";
    names[1] = "v";
    if (c->amsgrad) names[2] = "max_exp_avg_sq";
    break;
  case NN_OPT_ADAMAX:
    names[0] = "exp_avg";
    names[1] = "exp_inf";
    break;
  case NN_OPT_NADAM: /* and mu_product, a 0-d tensor: slot.mu */
  case NN_OPT_RADAM:
    names[0] = "exp_avg";
    names[1] = "exp_avg_sq";
    break;
  case NN_OPT_ADADELTA:
    names[0] = "square_avg";
    names[1] = "acc_delta";
    break;
  case NN_OPT_ASGD: /* and eta, mu: 0-d, slot.eta and slot.amu */
    names[0] = "ax";
    break;
  case NN_OPT_RPROP:
    names[0] = "prev";
    names[1] = "step_size";
    break;
  }
}

/* For Adadelta, ASGD and Rprop: the first member of nn_opt_config that
 * kind does not read and that is not 0 or false (PyTorch 1.13's optimizer
 * of that kind has no such option), or NULL. */
static const char *unread_setting(const nn_opt_config *c) {
  nn_opt_kind k = c->kind;
  if (c->momentum != 0) return "momentum";
  if (c->dampening != 0) return "dampening";
  if (c->nesterov) return "nesterov";
  if (c->beta1 != 0 || c->beta2 != 0) return "betas";
  if (c->alpha != 0) return "alpha";
  if (c->centered) return "centered";
  if (c->lr_decay != 0) return "lr_decay";
  if (c->initial_accumulator != 0) return "initial_accumulator";
  if (k != NN_OPT_ADADELTA && c->eps != 0) return "eps";
  if (k == NN_OPT_RPROP && c->weight_decay != 0) return "weight_decay";
  return NULL;
}

/* The settings of nn_opt_config_ext of Adadelta, ASGD and Rprop: why they
 * are bad, or NULL */
static const char *ext_problem(const nn_opt_config_ext *x) {
  switch (x->base.kind) {
  case NN_OPT_ADADELTA:
    return x->rho >= 0 && x->rho <= 1 ? NULL : "rho must be in [0,1]";
  case NN_OPT_ASGD:
    if (!(x->lambd >= 0 && isfinite(x->lambd))) return "lambd must be finite and >= 0";
    if (!isfinite(x->asgd_alpha)) return "asgd_alpha must be finite";
    return isnan(x->t0) ? "t0 must not be NaN" : NULL;
  case NN_OPT_RPROP:
    if (!(x->etaminus > 0 && x->etaminus < 1)) return "etaminus must be in (0,1)";
    if (!(x->etaplus > 1 && isfinite(x->etaplus))) return "etaplus must be finite and > 1";
    if (!(x->step_size_min >= 0 && isfinite(x->step_size_min)))
      return "step_size_min must be finite and >= 0";
    return x->step_size_max >= x->step_size_min ? NULL : "step_size_max must be >= step_size_min";
  default:
    return NULL;
  }
}

static ad_status check_config(ad_ctx *ctx, const nn_opt_config *c, double momentum_decay) {
  if ((unsigned)c->kind > NN_OPT_RPROP)
    return ad_set_error(ctx, AD_ERR_ARG, "optimizer: unknown kind %d", (int)c->kind);
  const char *k = kind_names[c->kind];
#define REQUIRE(cond, what, v)                                                                     \
  if (!(cond)) return ad_set_error(ctx, AD_ERR_ARG, "optimizer %s: %s, got %g", k, what, v)
  REQUIRE(c->lr >= 0 && isfinite(c->lr), "lr must be >= 0", c->lr);
  REQUIRE(c->momentum >= 0 && isfinite(c->momentum), "momentum must be finite and >= 0",
          c->momentum);
  REQUIRE(c->dampening >= 0 && c->dampening <= 1, "dampening must be in [0,1]", c->dampening);
  REQUIRE(c->weight_decay >= 0 && isfinite(c->weight_decay), "weight_decay must be finite and >= 0",
          c->weight_decay);
  REQUIRE(c->eps >= 0 && isfinite(c->eps), "eps must be finite and >= 0", c->eps);
  REQUIRE(c->clip_norm >= 0, "clip_norm must be >= 0", c->clip_norm); /* inf: no clipping */
  REQUIRE(c->clip_value >= 0, "clip_value must be >= 0", c->clip_value);
  bool adams = c->kind >= NN_OPT_ADAM && c->kind <= NN_OPT_RADAM; /* Adam ... RAdam */
  if (adams) {
    REQUIRE(c->beta1 >= 0 && c->beta1 < 1, "beta1 must be in [0,1)", c->beta1);
    REQUIRE(c->beta2 >= 0 && c->beta2 < 1, "beta2 must be in [0,1)", c->beta2);
  }
  REQUIRE(momentum_decay >= 0 && isfinite(momentum_decay), "momentum_decay must be finite and >= 0",
          momentum_decay);
  /* settings PyTorch 1.13's optimizer of this kind does not take: refused
   * rather than ignored, so a ported script does not run another
   * algorithm than it asks for */
  if (c->amsgrad && c->kind != NN_OPT_ADAM && c->kind != NN_OPT_ADAMW)
    return ad_set_error(ctx, AD_ERR_ARG,
                        "optimizer %s: amsgrad is Adam's and AdamW's only (torch.optim's)", k);
  if (c->maximize && (c->kind == NN_OPT_NADAM || c->kind == NN_OPT_RADAM))
    return ad_set_error(ctx, AD_ERR_ARG,
                        "optimizer %s: maximize is not an option of PyTorch 1.13's %s (negate "
                        "the loss instead)",
                        k, c->kind == NN_OPT_NADAM ? "NAdam" : "RAdam");
  if (c->kind >= NN_OPT_ADADELTA) {
    const char *u = unread_setting(c);
    if (u)
      return ad_set_error(ctx, AD_ERR_ARG,
                          "optimizer %s: %s is not an option of PyTorch 1.13's %s (leave it 0 or "
                          "false, as nn_opt_defaults gives it)%s",
                          k, u, torch_names[c->kind],
                          c->kind == NN_OPT_ASGD && strcmp(u, "alpha") == 0
                              ? "; ASGD's alpha is nn_opt_config_ext's asgd_alpha"
                              : "");
  }
  if (c->kind == NN_OPT_RMSPROP)
    REQUIRE(c->alpha >= 0 && c->alpha <= 1, "alpha must be in [0,1]", c->alpha);
  if (c->kind == NN_OPT_ADAGRAD) {
    REQUIRE(c->lr_decay >= 0 && isfinite(c->lr_decay), "lr_decay must be finite and >= 0",
            c->lr_decay);
    REQUIRE(c->initial_accumulator >= 0 && isfinite(c->initial_accumulator),
            "initial_accumulator must be finite and >= 0", c->initial_accumulator);
  }
  if (c->kind == NN_OPT_SGD && c->nesterov)
    REQUIRE(c->momentum > 0 && c->dampening == 0, "nesterov needs momentum > 0 and dampening 0",
            c->momentum);
#undef REQUIRE
  return AD_OK;
}

/* Whether the update of a parameter depends on how many steps it took: the
 * bias corrections of Adam, Adagrad's lr decay, SGD's first momentum step
 * (RMSProp's and plain SGD's do not). */
static bool uses_param_steps(const nn_opt_config *c) {
  return c->kind != NN_OPT_RMSPROP && c->kind != NN_OPT_ADADELTA &&
         (c->kind != NN_OPT_SGD || c->momentum > 0);
}

/* Lists state tensor t (owned by the optimizer from here on, also when
 * this fails) under the name "a.b", or "a.b.c" when c is not NULL: built
 * at its full length, as a parameter name has no bound. */
static ad_status add_state(nn_optimizer *o, ad_tensor *t, bool optional, const char *a,
                           const char *b, const char *c) {
  ad_ctx *ctx = o->ctx;
  if (!t) return ad_last_status(ctx);
  size_t n = strlen(a) + 1 + strlen(b) + (c ? 1 + strlen(c) : 0) + 1; /* freed by nn_strfree */
  char *copy = ad_malloc(ctx, n);
  if (copy) {
    if (c)
      snprintf(copy, n, "%s.%s.%s", a, b, c);
    else
      snprintf(copy, n, "%s.%s", a, b);
  }
  if (!copy ||
      !nn_grow(ctx, (void **)&o->state_names, &o->names_cap, o->nstate + 1, sizeof(char *)) ||
      !nn_grow(ctx, (void **)&o->state_tensors, &o->tensors_cap, o->nstate + 1,
               sizeof(ad_tensor *)) ||
      !nn_grow(ctx, (void **)&o->state_optional, &o->optional_cap, o->nstate + 1, sizeof(bool))) {
    nn_strfree(ctx, copy);
    ad_tensor_free(t);
    return AD_ERR_OOM;
  }
  o->state_names[o->nstate] = copy;
  o->state_optional[o->nstate] = optional;
  o->state_tensors[o->nstate++] = t;
  return AD_OK;
}

/* Appends the slots of the tensors of params to group g (its settings
 * set), with their state tensors, zeros (Adagrad: initial_accumulator;
 * Rprop's step sizes: lr). On failure what was appended stays listed, for
 * the caller to free or roll back. */
static ad_status add_slots(nn_optimizer *o, nn_params *params, int g) {
  ad_ctx *ctx = o->ctx;
  const nn_opt_config *cfg = gcfg(o, g);
  int n = nn_params_count(params);
  if (!nn_grow(ctx, (void **)&o->slots, &o->slots_cap, o->nslots + n, sizeof *o->slots) ||
      !nn_grow(ctx, (void **)&o->ts, &o->ts_cap, o->nts + n, sizeof *o->ts))
    return AD_ERR_OOM;
  const char *kind = kind_names[cfg->kind];
  const char *kinds[MAX_SLOT_STATE];
  state_kinds(cfg, kinds);
  for (int i = 0; i < n; i++) {
    ad_tensor *p = nn_params_tensor(params, i);
    const char *name = nn_params_name(params, i);
    slot *sl = &o->slots[o->nslots++];
    memset(sl, 0, sizeof *sl);
    sl->p = p;
    sl->serial = ad_tensor_serial(p);
    sl->group = g;
    sl->list = params;
    sl->li = i;
    if ((sl->repeat = nn_params_repeat(params, i, p) >= 0)) continue; /* once */
    o->ts[o->nts++] = p;
    ad_status st;
    for (int k = 0; k < MAX_SLOT_STATE; k++) {
      if (!kinds[k]) continue;
      /* Rprop's step sizes start at lr (refilled at the parameter's first
       * step with the rate then, as PyTorch makes its state then) */
      double init = cfg->kind == NN_OPT_ADAGRAD ? cfg->initial_accumulator
                    : cfg->kind == NN_OPT_RPROP && strcmp(kinds[k], "step_size") == 0 ? cfg->lr
                                                                                      : 0.0;
      ad_tensor *s = ad_full(ctx, p->dtype, p->ndim, p->shape, init);
      if (!s) { /* the big one: "adam.m.<name> [shape]" */
        nn_error_prefix(ctx, "%s.%s.%s %s", kind, kinds[k], name,
                        ad_shape_str(p, (char[128]){0}, 128));
        return ad_last_status(ctx);
      }
      if ((st = add_state(o, s, false, kind, kinds[k], name)) != AD_OK) return st;
      sl->s[k] = s;
    }
    if (uses_param_steps(cfg)) {
      sl->t_index = o->nstate;
      sl->t = ad_zeros(ctx, AD_F64, 0, NULL);
      if ((st = add_state(o, sl->t, true, kind, "step", name)) != AD_OK) return st;
    }
    if (cfg->kind == NN_OPT_ASGD) { /* torch.tensor(lr), torch.tensor(1.): float32 */
      sl->eta = ad_full(ctx, AD_F32, 0, NULL, (double)(float)cfg->lr);
      if ((st = add_state(o, sl->eta, false, kind, "eta", name)) != AD_OK) return st;
      sl->amu = ad_full(ctx, AD_F32, 0, NULL, 1.0);
      if ((st = add_state(o, sl->amu, false, kind, "mu", name)) != AD_OK) return st;
    }
    if (cfg->kind == NN_OPT_NADAM) {
      sl->mu = ad_full(ctx, p->dtype, 0, NULL, 1.0);
      if ((st = add_state(o, sl->mu, false, kind, "mu_product", name)) != AD_OK) return st;
    }
  }
  return AD_OK;
}

static nn_optimizer *optimizer_make(nn_params *params, const nn_opt_config_ext *xcfg);

/* optimizer_make (nn_optimizer_new_ext), whose failure to allocate (the
 * state) names the public constructor fn first (nn_error_prefix) */
static nn_optimizer *optimizer_new(nn_params *params, const nn_opt_config_ext *xcfg,
                                   const char *fn) {
  nn_optimizer *o = optimizer_make(params, xcfg);
  ad_ctx *ctx = nn_params_ctx(params);
  if (!o && ad_last_status(ctx) == AD_ERR_OOM) nn_error_prefix(ctx, "%s", fn);
  return o;
}

static nn_optimizer *optimizer_new_base(nn_params *params, const nn_opt_config *cfg,
                                        const char *fn) {
  nn_opt_config_ext e = nn_opt_defaults_ext(cfg->kind, cfg->lr);
  e.base = *cfg;
  return optimizer_new(params, &e, fn);
}

nn_optimizer *nn_optimizer_new(nn_params *params, const nn_opt_config *cfg) {
  if (!cfg) {
    ad_ctx *ctx = nn_params_ctx(params);
    if (ctx) ad_set_error(ctx, AD_ERR_NULL, "optimizer: configuration is NULL");
    return NULL;
  }
  return optimizer_new_base(params, cfg, "nn_optimizer_new");
}

nn_optimizer *nn_optimizer_new_ext(nn_params *params, const nn_opt_config_ext *xcfg) {
  return optimizer_new(params, xcfg, "nn_optimizer_new_ext");
}

static nn_optimizer *optimizer_make(nn_params *params, const nn_opt_config_ext *xcfg) {
  ad_ctx *ctx = nn_params_ctx(params);
  if (!ctx) return NULL;
  if (!xcfg) {
    ad_set_error(ctx, AD_ERR_NULL, "optimizer: configuration is NULL");
    return NULL;
  }
  const nn_opt_config *cfg = &xcfg->base;
  if (check_config(ctx, cfg, xcfg->momentum_decay) != AD_OK) return NULL;
  const char *why = ext_problem(xcfg);
  if (why) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "optimizer %s: %s (rho %g, lambd %g, asgd_alpha %g, t0 %g, etas "
                 "(%g, %g), step_sizes (%g, %g))",
                 kind_names[cfg->kind], why, xcfg->rho, xcfg->lambd, xcfg->asgd_alpha, xcfg->t0,
                 xcfg->etaminus, xcfg->etaplus, xcfg->step_size_min, xcfg->step_size_max);
    return NULL;
  }
  if (nn_params_is_buffers(params)) {
    ad_set_error(ctx, AD_ERR_ARG,
                 "optimizer %s: the list holds buffers, which are not trained (give it "
                 "nn_model_params)",
                 kind_names[cfg->kind]);
    return NULL;
  }
  int n = nn_params_count(params);
  if (n == 0) {
    ad_set_error(ctx, AD_ERR_ARG, "optimizer %s: the parameter list is empty (add layers first)",
                 kind_names[cfg->kind]);
    return NULL;
  }
  nn_optimizer *o = ad_malloc(ctx, sizeof *o);
  if (!o) return NULL;
  memset(o, 0, sizeof *o);
  o->ctx = ctx;
  o->params = params;
  o->cfg = *cfg;
  o->momentum_decay = xcfg->momentum_decay;
  o->ext = *xcfg;
  o->ngroups = 1;
  const char *kind = kind_names[cfg->kind];
  o->step = ad_zeros(ctx, AD_F64, 0, NULL);
  if (add_state(o, o->step, false, kind, "step", NULL) != AD_OK) {
    o->step = NULL;
    nn_optimizer_free(o);
    return NULL;
  }
  if (add_slots(o, params, 0) != AD_OK) {
    nn_optimizer_free(o);
    return NULL;
  }
  /* last, so that the per-parameter state keeps its positions */
  static const char *const lr_names[6] = {
      "lr",           "schedule.lr0",           "schedule.epoch",
      "plateau.best", "plateau.num_bad_epochs", "plateau.cooldown_counter"};
  ad_tensor **lr_state[6] = {&o->lr, &o->lr0, &o->epoch, &o->best, &o->bad_epochs, &o->cooldown};
  for (int k = 0; k < 6; k++) {
    double init = k < 2 ? cfg->lr : k == 3 ? INFINITY : 0.0;
    ad_tensor *t = ad_full(ctx, AD_F64, 0, NULL, init);
    if (add_state(o, t, true, kind, lr_names[k], NULL) != AD_OK) {
      nn_optimizer_free(o);
      return NULL;
    }
    *lr_state[k] = t;
  }
  return o;
}

nn_optimizer *nn_sgd_new(nn_params *params, double lr, double momentum, bool nesterov,
                         double weight_decay) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_SGD, lr);
  c.momentum = momentum;
  c.nesterov = nesterov;
  c.weight_decay = weight_decay;
  return optimizer_new_base(params, &c, "nn_sgd_new");
}

nn_optimizer *nn_adam_new(nn_params *params, double lr) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_ADAM, lr);
  return optimizer_new_base(params, &c, "nn_adam_new");
}

nn_optimizer *nn_adamw_new(nn_params *params, double lr, double weight_decay) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_ADAMW, lr);
  c.weight_decay = weight_decay;
  return optimizer_new_base(params, &c, "nn_adamw_new");
}

nn_optimizer *nn_rmsprop_new(nn_params *params, double lr) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_RMSPROP, lr);
  return optimizer_new_base(params, &c, "nn_rmsprop_new");
}

nn_optimizer *nn_adagrad_new(nn_params *params, double lr) {
  nn_opt_config c = nn_opt_defaults(NN_OPT_ADAGRAD, lr);
  return optimizer_new_base(params, &c, "nn_adagrad_new");
}

void nn_optimizer_free(nn_optimizer *o) {
  if (!o) return;
  ad_ctx *ctx = o->ctx;
  for (int i = 0; i < o->nstate; i++) {
    nn_strfree(ctx, o->state_names[i]);
    ad_tensor_free(o->state_tensors[i]);
  }
  ad_free(ctx, o->state_names, (size_t)o->names_cap * sizeof(char *));
  ad_free(ctx, o->state_tensors, (size_t)o->tensors_cap * sizeof(ad_tensor *));
  ad_free(ctx, o->state_optional, (size_t)o->optional_cap * sizeof(bool));
  ad_free(ctx, o->slots, (size_t)o->slots_cap * sizeof *o->slots);
  ad_free(ctx, o->ts, (size_t)o->ts_cap * sizeof *o->ts);
  ad_free(ctx, o->more, (size_t)o->more_cap * sizeof *o->more);
  ad_free(ctx, o->milestones, (size_t)o->sched.n_milestones * sizeof *o->milestones);
  ad_free(ctx, o->kids, (size_t)o->sched2.n_schedulers * sizeof *o->kids);
  ad_free(ctx, o->kid_ms, (size_t)o->n_kid_ms * sizeof *o->kid_ms);
  ad_free(ctx, o, sizeof *o);
}

/* One optimizer step as a parallel loop over the concatenated elements of
 * the parameters that take part (every update is elementwise, so any cut
 * gives the same result). t is the optimizer's step, for updates that do
 * not count a parameter's own. */
typedef struct step_job {
  const nn_optimizer *o;
  int64_t t;
  const int64_t *lo, *hi; /* per parameter, the elements updated; NULL: all */
} step_job;

static bool takes_part(const slot *sl) {
  return !sl->repeat && sl->p->grad && ad_tensor_requires_grad(sl->p) && sl->p->size > 0;
}

static void step_range(void *ud, int64_t begin, int64_t end) {
  const step_job *j = ud;
  const nn_optimizer *o = j->o;
  int64_t off = 0;
  for (int i = 0; i < o->nslots && off < end; i++) {
    const slot *sl = &o->slots[i];
    if (!takes_part(sl)) continue;
    int64_t first = j->lo ? j->lo[i] : 0, n = j->lo ? j->hi[i] - j->lo[i] : sl->p->size;
    int64_t lo = begin > off ? begin - off : 0, hi = end - off;
    if (hi > n) hi = n;
    off += n;
    if (lo >= hi) continue;
    lo += first, hi += first;
    size_t es = ad_dtype_size(sl->p->dtype), at = (size_t)lo * es;
    void *st[MAX_SLOT_STATE];
    for (int k = 0; k < MAX_SLOT_STATE; k++) st[k] = sl->s[k] ? (char *)sl->s[k]->data + at : NULL;
    int64_t t = sl->t ? (int64_t)((const double *)sl->t->data)[0] : j->t;
    const nn_opt_config_ext *e = gext(o, sl->group);
    nn_update_aux x = {e->momentum_decay, sl->mu ? scalar_value(sl->mu) : 1.0, e, sl->eta_now,
                       sl->mu_now};
    nn_update(gcfg(o, sl->group), &x, sl->p->dtype, t, hi - lo, (char *)sl->p->data + at,
              (const char *)sl->p->grad->data + at, st[0], st[1], st[2]);
  }
}

/* Elements per chunk of a parallel sweep: a few microseconds of Adam. */
#define SWEEP_GRAIN 16384
/* Sweeps of fewer elements stay on the calling thread: their parameters,
 * gradients and state (under 4 MB in float32 with Adam's moments) are
 * mostly in its caches, and a worker pulling its share across cores takes
 * longer than the update it saves (docs/performance.md, "Threads"). */
#define SWEEP_SPLIT_MIN 262144

/* The step over the elements [lo[i], hi[i]) of each parameter (lo NULL:
 * all of them). */
/* AD_OK when every parameter o steps is still the tensor it was made over;
 * else (its model or list freed it, and perhaps another tensor took its
 * header) an error naming fn, before the list is read: it may be freed. */
static ad_status params_live(const nn_optimizer *o, const char *fn) {
  for (int i = 0; i < o->nslots; i++)
    if (ad_tensor_serial(o->slots[i].p) != o->slots[i].serial)
      return ad_set_error(o->ctx, AD_ERR_STATE,
                          "%s: parameter %d was freed (its model or parameter list must outlive "
                          "the optimizer)",
                          fn, i);
  return AD_OK;
}

static ad_status step_some(nn_optimizer *o, const int64_t *lo, const int64_t *hi) {
  /* the parameters and the state are written through their data: a
   * backward through ops recorded before this step would read the new
   * values (tape.c) */
  ad_status st = ad_tensor_mark_modified(o->step);
  for (int i = 0; i < o->nslots && st == AD_OK; i++) {
    const slot *sl = &o->slots[i];
    if (!takes_part(sl)) continue;
    st = ad_tensor_mark_modified(sl->p);
    for (int k = 0; k < MAX_SLOT_STATE && st == AD_OK; k++)
      if (sl->s[k]) st = ad_tensor_mark_modified(sl->s[k]);
    if (st == AD_OK && sl->t) st = ad_tensor_mark_modified(sl->t);
    if (st == AD_OK && sl->mu) st = ad_tensor_mark_modified(sl->mu);
    if (st == AD_OK && sl->eta) st = ad_tensor_mark_modified(sl->eta);
    if (st == AD_OK && sl->amu) st = ad_tensor_mark_modified(sl->amu);
  }
  if (st != AD_OK) return st;
  /* the tensors it steps: not those added to its list since */
  if (o->cfg.clip_value > 0) st = nn_clip_value_tensors(o->ts, o->nts, o->cfg.clip_value);
  if (st == AD_OK && o->cfg.clip_norm > 0)
    nn_clip_norm_tensors(o->ts, o->nts, false, o->cfg.clip_norm, &st);
  if (st != AD_OK) return st;
  for (int g = 0; g < o->ngroups; g++) /* a loaded checkpoint may have changed them */
    gcfg(o, g)->lr = scalar_get(glr(o, g));
  sched_momentum(o); /* and the step a cycled momentum follows */
  double *steps = o->step->data;
  step_job j = {o, (int64_t)steps[0] + 1, lo, hi};
  int64_t total = 0;
  for (int i = 0; i < o->nslots; i++) {
    slot *sl = &o->slots[i];
    if (!takes_part(sl)) continue;
    total += lo ? hi[i] - lo[i] : sl->p->size;
    if (sl->t) ((double *)sl->t->data)[0] += 1; /* counts only the steps it takes part in */
    /* once per step, not per range: every range (and rank) reads it */
    if (sl->mu)
      mu_product_step(sl->mu, gcfg(o, sl->group), gext(o, sl->group)->momentum_decay,
                      (int64_t)((const double *)sl->t->data)[0]);
    if (sl->eta) asgd_scalars_step(o, sl);
  }
  ad_parallel_for(total, total < SWEEP_SPLIT_MIN ? total : SWEEP_GRAIN, step_range, &j);
  steps[0] = (double)j.t;
  return AD_OK;
}

ad_status nn_optimizer_step(nn_optimizer *o) {
  if (!o) return AD_ERR_NULL;
  ad_status st = params_live(o, "optimizer_step");
  return st != AD_OK ? st : step_some(o, NULL, NULL);
}

ad_status nn_optimizer_step_ranges(nn_optimizer *o, const int64_t *lo, const int64_t *hi) {
  if (!o) return AD_ERR_NULL;
  if (!lo || !hi)
    return ad_set_error(o->ctx, AD_ERR_NULL, "optimizer_step_ranges: %s is NULL",
                        !lo ? "lo" : "hi");
  ad_status st = params_live(o, "optimizer_step_ranges");
  if (st != AD_OK) return st;
  for (int i = 0; i < o->nslots; i++)
    if (lo[i] < 0 || lo[i] > hi[i] || hi[i] > o->slots[i].p->size)
      return ad_set_error(o->ctx, AD_ERR_ARG,
                          "optimizer_step_ranges: parameter %d '%s' of %lld elements: range "
                          "[%lld, %lld)",
                          i, nn_params_name(o->slots[i].list, o->slots[i].li),
                          (long long)o->slots[i].p->size, (long long)lo[i], (long long)hi[i]);
  return step_some(o, lo, hi);
}

int nn_optimizer_state_param(const nn_optimizer *o, int i) {
  if (!o || i < 0 || i >= o->nstate) return -1;
  const ad_tensor *t = o->state_tensors[i];
  for (int k = 0; k < o->nslots; k++)
    for (int s = 0; s < MAX_SLOT_STATE; s++)
      if (o->slots[k].s[s] == t) return k;
  return -1;
}

const char *nn_optimizer_outside(const nn_optimizer *o, const nn_params *p) {
  int n = nn_params_count(p);
  for (int k = 0; o && k < o->nslots; k++) {
    const slot *sl = &o->slots[k];
    bool in = sl->repeat; /* its first entry answers for it */
    for (int i = 0; i < n && !in; i++) in = nn_params_tensor(p, i) == sl->p;
    if (!in) return nn_params_name(sl->list, sl->li);
  }
  return NULL;
}

void nn_optimizer_zero_grad(nn_optimizer *o) {
  for (int i = 0; o && i < o->nslots; i++) ad_tensor_zero_grad(o->slots[i].p);
}

nn_params *nn_optimizer_params(const nn_optimizer *o) { return o ? o->params : NULL; }

const nn_opt_config *nn_optimizer_config(const nn_optimizer *o) {
  if (!o) return NULL;
  ((nn_optimizer *)o)->cfg.lr = scalar_get(o->lr); /* the object itself is never const */
  sched_momentum((nn_optimizer *)o);
  return &o->cfg;
}

const nn_opt_config_ext *nn_optimizer_config_ext(const nn_optimizer *o) {
  if (!o) return NULL;
  nn_optimizer *w = (nn_optimizer *)o; /* the object itself is never const */
  w->ext.base = *nn_optimizer_config(o);
  return &w->ext;
}

double nn_optimizer_lr(const nn_optimizer *o) { return o ? scalar_get(o->lr) : NAN; }

ad_status nn_optimizer_set_lr(nn_optimizer *o, double lr) {
  if (!o) return AD_ERR_NULL;
  if (!(isfinite(lr) && lr >= 0)) /* what a checkpoint may hold (nn_optimizer_state_check) */
    return ad_set_error(o->ctx, AD_ERR_ARG,
                        "optimizer %s: set_lr: lr must be finite and >= 0, got %g",
                        kind_names[o->cfg.kind], lr);
  double rate = rate0(o, lr);
  if (!(isfinite(rate) && rate >= 0)) /* multistep: gamma > 1 at milestones 0; lambda */
    return ad_set_error(o->ctx, AD_ERR_ARG,
                        "optimizer %s: set_lr: the schedule's rate at epoch 0 from lr %g is %g; "
                        "it must be finite and >= 0",
                        kind_names[o->cfg.kind], lr, rate);
  ad_status st = scalars_noted(o->epoch, NULL, NULL);
  for (int g = 0; g < o->ngroups && st == AD_OK; g++)
    st = scalars_noted(glr(o, g), glr0(o, g), NULL);
  if (st != AD_OK) return st;
  for (int g = 0; g < o->ngroups; g++) { /* every group: see nn.h */
    gcfg(o, g)->lr = rate;
    scalar_set(glr(o, g), rate);
    scalar_set(glr0(o, g), lr);
  }
  scalar_set(o->epoch, 0);
  return AD_OK;
}

/* ------------------------------------------------- parameter groups */

/* Drops the state tensors listed from index nstate on, the slots from
 * nslots on and the distinct tensors from nts on: an add_param_group that
 * failed half way */
static void roll_back(nn_optimizer *o, int nstate, int nslots, int nts) {
  for (int i = nstate; i < o->nstate; i++) {
    if (o->state_tensors[i] == o->groups) o->groups = NULL;
    if (o->state_tensors[i] == o->members0) o->members0 = NULL;
    if (o->state_tensors[i] == o->names0) o->names0 = NULL;
    nn_strfree(o->ctx, o->state_names[i]);
    ad_tensor_free(o->state_tensors[i]);
  }
  o->nstate = nstate;
  o->nslots = nslots;
  o->nts = nts;
}

/* Adds group g's membership to o's state, once its slots are listed:
 * "<kind>.group<g>.params", how many tensors it steps (PyTorch's
 * load_state_dict checks each group's size), and "<kind>.group<g>.names",
 * the sum modulo 2^48 of a 64-bit FNV-1a hash of each tensor's name cut to
 * 48 bits: whole numbers a double holds exactly, independent of the
 * tensors' order (their state is found by name). A checkpoint whose groups
 * hold other tensors than o's then fails nn_optimizer_state_check instead
 * of giving each group's rate to the wrong tensors. Optional: files from
 * before lack them. */
static ad_status group_members(nn_optimizer *o, int g) {
  const uint64_t mask = (UINT64_C(1) << 48) - 1;
  uint64_t sum = 0;
  int count = 0;
  for (int i = 0; i < o->nslots; i++) {
    const slot *sl = &o->slots[i];
    if (sl->group != g) continue;
    uint64_t h = UINT64_C(14695981039346656037);
    for (const char *c = nn_params_name(sl->list, sl->li); *c; c++)
      h = (h ^ (unsigned char)*c) * UINT64_C(1099511628211);
    sum = (sum + (h & mask)) & mask;
    count++;
  }
  const char *k = kind_names[o->cfg.kind];
  char label[32];
  snprintf(label, sizeof label, "group%d", g);
  ad_tensor *m = ad_full(o->ctx, AD_F64, 0, NULL, count);
  ad_status st = add_state(o, m, true, k, label, "params");
  ad_tensor *h = st == AD_OK ? ad_full(o->ctx, AD_F64, 0, NULL, (double)sum) : NULL;
  if (st == AD_OK) st = add_state(o, h, true, k, label, "names");
  if (st != AD_OK) return st;
  if (g) {
    o->more[g - 1].members = m;
    o->more[g - 1].names = h;
  } else {
    o->members0 = m;
    o->names0 = h;
  }
  return AD_OK;
}

/* Why group settings x cannot join o, or NULL (AD_ERR_ARG) */
static const char *group_problem(const nn_optimizer *o, const nn_opt_config_ext *x) {
  if (x->base.kind != o->cfg.kind) return "kind";
  if (x->base.clip_norm != o->cfg.clip_norm || x->base.clip_value != o->cfg.clip_value)
    return "clip";
  return NULL;
}

ad_status nn_optimizer_add_param_group(nn_optimizer *o, nn_params *params,
                                       const nn_opt_config_ext *x) {
  static const char fn[] = "optimizer_add_param_group";
  if (!o) return AD_ERR_NULL;
  ad_ctx *ctx = o->ctx;
  if (!params || !x)
    return ad_set_error(ctx, AD_ERR_NULL, "%s: %s is NULL", fn, !params ? "params" : "cfg");
  if (nn_params_ctx(params) != ctx)
    return ad_set_error(ctx, AD_ERR_ARG,
                        "%s: the parameter list is of another context than the optimizer (%p, "
                        "%p)",
                        fn, (void *)nn_params_ctx(params), (void *)ctx);
  ad_status st = params_live(o, fn);
  if (st != AD_OK) return st;
  const char *k = kind_names[o->cfg.kind], *why = group_problem(o, x);
  if (why && why[0] == 'k')
    return ad_set_error(ctx, AD_ERR_ARG,
                        "%s: the group's kind is %s; the optimizer's is %s (every group of an "
                        "optimizer runs its algorithm, as in PyTorch)",
                        fn, (unsigned)x->base.kind <= NN_OPT_RPROP ? kind_names[x->base.kind] : "?",
                        k);
  if (why)
    return ad_set_error(ctx, AD_ERR_ARG,
                        "%s: optimizer %s: clip_norm %g and clip_value %g must be group 0's (%g, "
                        "%g): clipping is over every gradient of the optimizer at once",
                        fn, k, x->base.clip_norm, x->base.clip_value, o->cfg.clip_norm,
                        o->cfg.clip_value);
  if (check_config(ctx, &x->base, x->momentum_decay) != AD_OK) return ad_last_status(ctx);
  if ((why = ext_problem(x)))
    return ad_set_error(ctx, AD_ERR_ARG,
                        "optimizer %s: %s (rho %g, lambd %g, asgd_alpha %g, t0 %g, etas (%g, %g), "
                        "step_sizes (%g, %g))",
                        k, why, x->rho, x->lambd, x->asgd_alpha, x->t0, x->etaminus, x->etaplus,
                        x->step_size_min, x->step_size_max);
  if (nn_params_is_buffers(params))
    return ad_set_error(ctx, AD_ERR_ARG,
                        "%s: optimizer %s: the list holds buffers, which are not trained", fn, k);
  int n = nn_params_count(params);
  if (n == 0)
    return ad_set_error(ctx, AD_ERR_ARG, "%s: optimizer %s: the parameter list is empty", fn, k);
  for (int i = 0; i < n; i++) {
    ad_tensor *p = nn_params_tensor(params, i);
    const char *name = nn_params_name(params, i);
    for (int j = 0; j < o->nslots; j++) {
      const slot *sl = &o->slots[j];
      if (sl->p == p)
        return ad_set_error(ctx, AD_ERR_ARG,
                            "%s: some parameters appear in more than one parameter group: '%s' "
                            "is in group %d ('%s')",
                            fn, name, sl->group, nn_params_name(sl->list, sl->li));
      if (strcmp(nn_params_name(sl->list, sl->li), name) == 0)
        return ad_set_error(ctx, AD_ERR_ARG,
                            "%s: parameter name '%s' is another tensor's of group %d: the "
                            "state names (\"%s.<state>.<name>\") would collide",
                            fn, name, sl->group, k);
    }
  }
  /* its base rate and rate: with a schedule attached, cfg.lr is its base
   * (a onecycle's max_lr) and its rate the schedule's at the current epoch */
  double lr0 = x->base.lr, lr = lr0;
  if (o->has_sched) {
    if ((why = momentum_problem(&x->base, &o->sched2))) /* as set_schedule checks each group */
      return ad_set_error(ctx, AD_ERR_ARG, "%s: optimizer %s: the attached schedule: %s", fn, k,
                          why);
    lr = sched_lr(&o->sched2, lr0, (int64_t)scalar_get(o->epoch));
    if (!(isfinite(lr) && lr >= 0))
      return ad_set_error(ctx, AD_ERR_ARG,
                          "%s: optimizer %s: the schedule's rate at epoch %.0f from lr %g is %g; "
                          "it must be finite and >= 0",
                          fn, k, scalar_get(o->epoch), lr0, lr);
  }
  int nstate = o->nstate, nslots = o->nslots, nts = o->nts, g = o->ngroups;
  if (!nn_grow(ctx, (void **)&o->more, &o->more_cap, g, sizeof *o->more)) return AD_ERR_OOM;
  group *gr = &o->more[g - 1];
  memset(gr, 0, sizeof *gr);
  gr->ext = *x;
  gr->params = params;
  gr->cfg = x->base;
  gr->cfg.lr = lr;
  if (!o->groups) { /* with the second group: its count, which a checkpoint must match */
    ad_tensor *t = ad_full(ctx, AD_F64, 0, NULL, 1.0);
    if ((st = add_state(o, t, false, k, "param_groups", NULL)) != AD_OK) return st;
    o->groups = t;
    if ((st = group_members(o, 0)) != AD_OK) {
      roll_back(o, nstate, nslots, nts);
      return st;
    }
  }
  o->ngroups = g + 1; /* the slots' group, for add_slots */
  st = add_slots(o, params, g);
  char label[32];
  snprintf(label, sizeof label, "group%d", g);
  ad_tensor *r = st == AD_OK ? ad_full(ctx, AD_F64, 0, NULL, lr) : NULL;
  if (st == AD_OK && (st = add_state(o, r, false, k, label, "lr")) == AD_OK) gr->lr = r;
  ad_tensor *r0 = st == AD_OK ? ad_full(ctx, AD_F64, 0, NULL, lr0) : NULL;
  if (st == AD_OK && (st = add_state(o, r0, false, k, label, "schedule.lr0")) == AD_OK)
    gr->lr0 = r0;
  if (st == AD_OK) st = group_members(o, g);
  if (st == AD_OK) st = ad_tensor_mark_modified(o->groups);
  if (st != AD_OK) {
    o->ngroups = g;
    roll_back(o, nstate, nslots, nts);
    return st;
  }
  scalar_set(o->groups, o->ngroups);
  sched_momentum(o);
  return AD_OK;
}

int nn_optimizer_group_count(const nn_optimizer *o) { return o ? o->ngroups : 0; }

/* AD_OK when g is a group of o, else AD_ERR_ARG naming fn */
static ad_status group_index(const nn_optimizer *o, int g, const char *fn) {
  if (g >= 0 && g < o->ngroups) return AD_OK;
  return ad_set_error(o->ctx, AD_ERR_ARG, "%s: parameter group %d out of range [0, %d)", fn, g,
                      o->ngroups);
}

nn_params *nn_optimizer_group_params(const nn_optimizer *o, int g) {
  if (!o || group_index(o, g, "optimizer_group_params") != AD_OK) return NULL;
  return g ? o->more[g - 1].params : o->params;
}

const nn_opt_config_ext *nn_optimizer_group_config_ext(const nn_optimizer *o, int g) {
  if (!o || group_index(o, g, "optimizer_group_config_ext") != AD_OK) return NULL;
  if (g == 0) return nn_optimizer_config_ext(o);
  nn_opt_config *c = gcfg(o, g);
  c->lr = scalar_get(glr(o, g));
  sched_momentum((nn_optimizer *)o);
  gext(o, g)->base = *c;
  return gext(o, g);
}

double nn_optimizer_group_lr(const nn_optimizer *o, int g) {
  if (!o || group_index(o, g, "optimizer_group_lr") != AD_OK) return NAN;
  return scalar_get(glr(o, g));
}

ad_status nn_optimizer_set_group_lr(nn_optimizer *o, int g, double lr) {
  static const char fn[] = "optimizer_set_group_lr";
  if (!o) return AD_ERR_NULL;
  ad_status st = group_index(o, g, fn);
  if (st != AD_OK) return st;
  if (!(isfinite(lr) && lr >= 0))
    return ad_set_error(o->ctx, AD_ERR_ARG, "%s: lr must be finite and >= 0, got %g", fn, lr);
  double rate = o->has_sched ? sched_lr(&o->sched2, lr, (int64_t)scalar_get(o->epoch)) : lr;
  if (!(isfinite(rate) && rate >= 0))
    return ad_set_error(o->ctx, AD_ERR_ARG,
                        "%s: the schedule's rate at epoch %.0f from lr %g is %g; it must be "
                        "finite and >= 0",
                        fn, scalar_get(o->epoch), lr, rate);
  if ((st = scalars_noted(glr(o, g), glr0(o, g), NULL)) != AD_OK) return st;
  gcfg(o, g)->lr = rate;
  scalar_set(glr(o, g), rate);
  scalar_set(glr0(o, g), lr);
  return AD_OK;
}

ad_status nn_optimizer_groups_check(const nn_optimizer *o, const struct nn_checkpoint_info *info,
                                    const char *path) {
  if (!o) return AD_OK;
  const char *k = kind_names[o->cfg.kind];
  char name[64];
  snprintf(name, sizeof name, "%s.param_groups", k);
  bool counted = nn_checkpoint_info_find(info, name) != NULL;
  /* the file's groups: group g > 0 has its rate "<kind>.group<g>.lr" */
  int n = 1;
  for (;; n++) {
    char r[64];
    snprintf(r, sizeof r, "%s.group%d.lr", k, n);
    if (!nn_checkpoint_info_find(info, r)) break;
  }
  if (counted == (o->groups != NULL) && n == o->ngroups)
    return AD_OK; /* the count's value: nn_optimizer_state_check */
  if (!counted)
    return ad_set_error(o->ctx, AD_ERR_FORMAT,
                        "checkpoint %s: it holds one parameter group (no '%s'); the optimizer "
                        "has %d",
                        path, name, o->ngroups);
  return ad_set_error(o->ctx, AD_ERR_FORMAT,
                      "checkpoint %s: it holds %d parameter groups ('%s'); the optimizer has %d",
                      path, n, name, o->ngroups);
}

int64_t nn_optimizer_steps(const nn_optimizer *o) {
  return o ? (int64_t)((const double *)o->step->data)[0] : 0;
}

int nn_optimizer_state_count(const nn_optimizer *o) { return o ? o->nstate : 0; }

const char *const *nn_optimizer_state_names(const nn_optimizer *o) {
  return o ? (const char *const *)o->state_names : NULL;
}

ad_tensor *const *nn_optimizer_state_tensors(const nn_optimizer *o) {
  return o ? o->state_tensors : NULL;
}

bool nn_optimizer_state_optional(const nn_optimizer *o, int i) {
  return o && i >= 0 && i < o->nstate && o->state_optional[i];
}

ad_status nn_optimizer_state_check(const nn_optimizer *o, int i, double v, const char *path) {
  if (!o || i < 0 || i >= o->nstate || o->state_tensors[i]->ndim != 0) return AD_OK;
  const ad_tensor *t = o->state_tensors[i];
  /* the counts: the optimizer's steps, the schedule's epoch and each
   * parameter's steps; a 0-d parameter's moments are values, any double */
  bool count = t == o->step || t == o->epoch || t == o->bad_epochs || t == o->cooldown;
  for (int k = 0; k < o->nslots && !count; k++) count = o->slots[k].t == t;
  bool rate = false;
  for (int g = 0; g < o->ngroups && !rate; g++) rate = t == glr(o, g) || t == glr0(o, g);
  for (int g = 0; g < o->ngroups; g++) { /* group g's membership (group_members) */
    if ((t != gmembers(o, g) && t != gnames(o, g)) || v == scalar_get(t)) continue;
    if (t == gmembers(o, g))
      return ad_set_error(o->ctx, AD_ERR_FORMAT,
                          "checkpoint %s: its parameter group %d holds %g tensors ('%s'); the "
                          "optimizer's holds %g",
                          path, g, v, o->state_names[i], scalar_get(t));
    return ad_set_error(o->ctx, AD_ERR_FORMAT,
                        "checkpoint %s: its parameter group %d holds other tensors than the "
                        "optimizer's (their names differ: '%s'), so the group's rates would "
                        "reach the wrong tensors",
                        path, g, o->state_names[i]);
  }
  if (t == o->groups && v != o->ngroups) {
    return ad_set_error(o->ctx, AD_ERR_FORMAT,
                        "checkpoint %s: it holds %g parameter groups ('%s'); the optimizer has %d",
                        path, v, o->state_names[i], o->ngroups);
  } else if (rate) {
    if (!(isfinite(v) && v >= 0))
      return ad_set_error(o->ctx, AD_ERR_FORMAT,
                          "checkpoint %s: learning rate '%s' is %g; it must be finite and >= 0",
                          path, o->state_names[i], v);
  } else if (t == o->best && isnan(v)) { /* +-inf: none yet */
    return ad_set_error(o->ctx, AD_ERR_FORMAT, "checkpoint %s: '%s' is NaN", path,
                        o->state_names[i]);
  } else if (count && !(v >= 0 && v <= 9007199254740992.0 && v == floor(v))) { /* <= 2^53 */
    return ad_set_error(o->ctx, AD_ERR_FORMAT,
                        "checkpoint %s: '%s' is %g; a count must be a whole number >= 0", path,
                        o->state_names[i], v);
  }
  return AD_OK;
}

void nn_optimizer_state_restored(nn_optimizer *o, const bool *present) {
  if (!o || !present) return;
  /* a checkpoint without a parameter's step count comes from a version that
   * counted the optimizer's steps for every parameter */
  for (int i = 0; i < o->nslots; i++)
    if (o->slots[i].t && !present[o->slots[i].t_index])
      ((double *)o->slots[i].t->data)[0] = ((const double *)o->step->data)[0];
}

/* -------------------------------------------------------------- schedules */

/* The kinds whose rate at epoch 0 is not lr0 itself, or may round it */
static bool ext_only(nn_sched_kind k) {
  return k == NN_SCHED_MULTISTEP || k == NN_SCHED_LINEAR || k == NN_SCHED_WARMUP_COSINE;
}

/* The kinds of nn_schedule_ext2 only */
static bool ext2_only(nn_sched_kind k) {
  return k == NN_SCHED_ONECYCLE || k == NN_SCHED_COSINE_RESTARTS || k == NN_SCHED_CONSTANT_FACTOR ||
         k == NN_SCHED_POLYNOMIAL || k == NN_SCHED_LAMBDA || k == NN_SCHED_MULTIPLICATIVE ||
         k == NN_SCHED_CYCLIC || k == NN_SCHED_SEQUENTIAL || k == NN_SCHED_CHAINED;
}

/* The size of nn_schedule_ext2 before cyclic, sequential and chained: it
 * ended at lambda_ud */
#define EXT2_V1_SIZE offsetof(nn_schedule_ext2, base_lr)
_Static_assert(offsetof(nn_schedule_ext2, lambda_ud) + sizeof(void *) == EXT2_V1_SIZE,
               "base_lr follows lambda_ud");

/* s read by its size (see nn.h): *out the whole struct, or false for a
 * size this version does not know */
static bool ext2_read(const nn_schedule_ext2 *s, nn_schedule_ext2 *out) {
  if (s->size != sizeof *s && s->size != EXT2_V1_SIZE) return false;
  memset(out, 0, sizeof *out);
  memcpy(out, s, s->size);
  out->size = sizeof *out;
  return true;
}

static nn_schedule_ext2 ext2_of(const nn_schedule_ext *s) {
  nn_schedule_ext2 e;
  memset(&e, 0, sizeof e);
  e.kind = s->kind;
  e.step_size = s->step_size;
  e.gamma = s->gamma;
  e.t_max = s->t_max;
  e.eta_min = s->eta_min;
  e.milestones = s->milestones;
  e.n_milestones = s->n_milestones;
  e.start_factor = s->start_factor;
  e.end_factor = s->end_factor;
  e.total_iters = s->total_iters;
  e.size = sizeof e;
  return e;
}

static nn_schedule_ext ext_of(const nn_schedule *s) {
  nn_schedule_ext e;
  memset(&e, 0, sizeof e);
  e.kind = s->kind;
  e.step_size = s->step_size;
  e.gamma = s->gamma;
  e.t_max = s->t_max;
  e.eta_min = s->eta_min;
  return e;
}

nn_schedule_ext2 nn_schedule_ext2_defaults(nn_sched_kind kind) {
  nn_schedule_ext2 e;
  memset(&e, 0, sizeof e);
  e.size = sizeof e;
  e.kind = kind;
  switch (kind) {
  case NN_SCHED_STEP:
  case NN_SCHED_MULTISTEP:
    e.gamma = 0.1;
    break;
  case NN_SCHED_LINEAR:
    e.start_factor = 1.0 / 3;
    e.end_factor = 1;
    e.total_iters = 5;
    break;
  case NN_SCHED_ONECYCLE:
    e.step_per_batch = true;
    e.cycle_momentum = true;
    e.anneal = NN_ANNEAL_COS;
    e.max_lr = NAN;
    e.pct_start = 0.3;
    e.div_factor = 25;
    e.final_div_factor = 1e4;
    e.base_momentum = 0.85;
    e.max_momentum = 0.95;
    break;
  case NN_SCHED_COSINE_RESTARTS:
    e.t_mult = 1;
    break;
  case NN_SCHED_CONSTANT_FACTOR:
    e.factor = 1.0 / 3;
    e.total_iters = 5;
    break;
  case NN_SCHED_POLYNOMIAL:
    e.total_iters = 5;
    e.power = 1;
    break;
  case NN_SCHED_CYCLIC:
    e.step_per_batch = true;
    e.cycle_momentum = true;
    e.base_lr = NAN;
    e.max_lr = NAN;
    e.step_size_up = 2000;
    e.gamma = 1;
    e.base_momentum = 0.8;
    e.max_momentum = 0.9;
    break;
  default:
    break;
  }
  return e;
}

static bool finite_pos(double v) { return isfinite(v) && v > 0; }

/* ---- OneCycleLR: PyTorch's phases and arithmetic (get_lr) */

/* The phases' end steps; returns their number */
static int onecycle_ends(const nn_schedule_ext2 *s, double e[3]) {
  double T = (double)s->total_steps;
  e[0] = s->pct_start * T - 1;
  if (!s->three_phase) {
    e[1] = T - 1;
    return 2;
  }
  e[1] = 2 * s->pct_start * T - 2;
  e[2] = T - 1;
  return 3;
}

/* The phase step t anneals in, and its pct; -1 where PyTorch divides by 0 */
static int onecycle_phase(const nn_schedule_ext2 *s, int64_t t, double *pct) {
  double e[3], start = 0;
  int n = onecycle_ends(s, e);
  for (int i = 0; i < n; i++) {
    if ((double)t <= e[i] || i == n - 1) {
      if (e[i] == start) return -1;
      *pct = ((double)t - start) / (e[i] - start);
      return i;
    }
    start = e[i];
  }
  return -1; /* not reached */
}

/* The first step in [0, total_steps] that lands in a phase of length 0
 * (PyTorch: ZeroDivisionError), or -1 */
static int64_t onecycle_zero_phase(const nn_schedule_ext2 *s) {
  double e[3], start = 0, before = -INFINITY; /* t must exceed the ends before */
  int n = onecycle_ends(s, e);
  for (int i = 0; i < n; i++) {
    double lo = before < 0 ? 0 : floor(before) + 1; /* the smallest such t */
    if (e[i] == start && lo <= (double)s->total_steps && (i == n - 1 || lo <= e[i]))
      return (int64_t)lo;
    before = fmax(before, e[i]);
    start = e[i];
  }
  return -1;
}

static double anneal(nn_anneal a, double from, double to, double pct) {
  if (a == NN_ANNEAL_LINEAR) return (to - from) * pct + from;
  double c = cos(3.141592653589793 * pct) + 1;
  return to + (from - to) / 2.0 * c;
}

/* the rate at step t <= total_steps, lr0 the maximum */
static double onecycle_lr(const nn_schedule_ext2 *s, double lr0, int64_t t) {
  double pct, initial = lr0 / s->div_factor, min = initial / s->final_div_factor;
  int i = onecycle_phase(s, t, &pct);
  if (i < 0) return NAN;
  double from = i == 1 ? lr0 : initial, to = i == 0                      ? lr0
                                             : i == 1 && !s->three_phase ? min
                                             : i == 1                    ? initial
                                                                         : min;
  double lr = anneal(s->anneal, from, to, pct);
  return lr < 0 ? 0 : lr; /* linear overshoots at t = total_steps (see nn.h) */
}

static double onecycle_momentum(const nn_schedule_ext2 *s, int64_t t) {
  double pct, lo = s->base_momentum, hi = s->max_momentum;
  int i = onecycle_phase(s, t, &pct);
  if (i < 0) return NAN;
  return anneal(s->anneal, i == 1 ? lo : hi, i == 0 ? lo : hi, pct);
}

/* ---- CyclicLR: PyTorch's get_lr */

/* f * scale at step t (PyTorch's scale_factor times scale_fn) */
static double cyclic_height(const nn_schedule_ext2 *s, int64_t t, double *f) {
  double up = (double)s->step_size_up,
         down = s->step_size_down ? (double)s->step_size_down : (double)s->step_size_up;
  double total = up + down, ratio = up / total;
  double cycle = floor(1 + (double)t / total), x = 1. + (double)t / total - cycle;
  *f = x <= ratio ? x / ratio : (x - 1) / (ratio - 1);
  bool by_cycle = s->scale_fn ? s->scale_mode == NN_SCALE_CYCLE : s->mode != NN_CYCLIC_EXP_RANGE;
  int64_t at = by_cycle ? (int64_t)cycle : t;
  if (s->scale_fn) return s->scale_fn(at, s->scale_ud);
  switch (s->mode) {
  case NN_CYCLIC_TRIANGULAR:
    return 1.;
  case NN_CYCLIC_TRIANGULAR2:
    return 1 / pow(2., (double)(at - 1));
  default:
    return pow(s->gamma, (double)at);
  }
}

/* group base lr0's maximum (see nn.h) */
static double cyclic_max(const nn_schedule_ext2 *s, double lr0) {
  return s->base_lr > 0 ? s->max_lr * (lr0 / s->base_lr) : s->max_lr;
}

static double cyclic_lr(const nn_schedule_ext2 *s, double lr0, int64_t t) {
  double f, scale = cyclic_height(s, t, &f);
  double base_height = (cyclic_max(s, lr0) - lr0) * f;
  return lr0 + base_height * scale;
}

static double cyclic_momentum(const nn_schedule_ext2 *s, int64_t t) {
  double f, scale = cyclic_height(s, t, &f);
  double base_height = (s->max_momentum - s->base_momentum) * f;
  return s->max_momentum - base_height * scale;
}

static const char *sched_problem(const nn_schedule_ext2 *s);

/* The kinds a sequential or chained may hold (see nn.h) */
static bool kid_kind(nn_sched_kind k) {
  switch (k) {
  case NN_SCHED_STEP:
  case NN_SCHED_EXPONENTIAL:
  case NN_SCHED_COSINE:
  case NN_SCHED_MULTISTEP:
  case NN_SCHED_LINEAR:
  case NN_SCHED_CONSTANT_FACTOR:
  case NN_SCHED_POLYNOMIAL:
  case NN_SCHED_LAMBDA:
  case NN_SCHED_MULTIPLICATIVE:
  case NN_SCHED_COSINE_RESTARTS:
    return true;
  default:
    return false;
  }
}

/* Why a sequential's or chained's children or milestones are bad, or NULL */
static const char *kids_problem(const nn_schedule_ext2 *s) {
  static _Thread_local char why[256];
  if (s->n_schedulers < 1) return "n_schedulers must be >= 1";
  if (!s->schedulers) return "schedulers is NULL";
  if (s->kind == NN_SCHED_CHAINED && s->n_milestones != 0)
    return "chained takes no milestones (n_milestones must be 0)";
  if (s->kind == NN_SCHED_SEQUENTIAL) {
    if (s->n_milestones != s->n_schedulers - 1) {
      snprintf(why, sizeof why,
               "Sequential Schedulers expects number of schedulers provided to be one more than "
               "the number of milestone points, but got number of schedulers %d and the number "
               "of milestones to be equal to %d",
               s->n_schedulers, s->n_milestones);
      return why;
    }
    if (s->n_milestones > 0 && !s->milestones) return "milestones is NULL";
    for (int i = 0; i < s->n_milestones; i++)
      if (i ? s->milestones[i] <= s->milestones[i - 1] : s->milestones[i] < 1)
        return "milestones must be >= 1 and increasing";
  }
  for (int i = 0; i < s->n_schedulers; i++) {
    nn_schedule_ext2 c;
    const char *w = NULL;
    if (!ext2_read(&s->schedulers[i], &c))
      w = "size must be sizeof(nn_schedule_ext2) (start from nn_schedule_ext2_defaults)";
    else if (!kid_kind(c.kind))
      w = "this kind cannot be a child of sequential or chained (constant, warmup_cosine, "
          "onecycle, cyclic, sequential and chained cannot)";
    else
      w = sched_problem(&c);
    if (w) {
      snprintf(why, sizeof why, "schedulers[%d] (kind %d): %s", i, (int)s->schedulers[i].kind, w);
      return why;
    }
  }
  return NULL;
}

/* Why s's settings are bad, or NULL when they are good: every rate they
 * give from a base rate that is finite and >= 0 is >= 0 (and finite unless
 * gamma > 1 overflows it). */
static const char *sched_problem(const nn_schedule_ext2 *s) {
  if (s->size != sizeof *s)
    return "size must be sizeof(nn_schedule_ext2) (start from nn_schedule_ext2_defaults)";
  switch (s->kind) {
  case NN_SCHED_CONSTANT:
    return NULL;
  case NN_SCHED_STEP:
    if (s->step_size < 1) return "step_size must be >= 1";
    /* fall through */
  case NN_SCHED_EXPONENTIAL:
    return finite_pos(s->gamma) ? NULL : "gamma must be finite and > 0";
  case NN_SCHED_MULTISTEP:
    if (!finite_pos(s->gamma)) return "gamma must be finite and > 0";
    if (s->n_milestones < 0) return "n_milestones must be >= 0";
    if (s->n_milestones > 0 && !s->milestones) return "milestones is NULL";
    for (int i = 0; i < s->n_milestones; i++)
      if (s->milestones[i] < 0) return "milestones must be >= 0";
    return NULL;
  case NN_SCHED_LINEAR:
  case NN_SCHED_WARMUP_COSINE:
    if (!(s->start_factor > 0 && s->start_factor <= 1)) return "start_factor must be in (0, 1]";
    if (s->kind == NN_SCHED_LINEAR && !(s->end_factor >= 0 && s->end_factor <= 1))
      return "end_factor must be in [0, 1]";
    if (s->total_iters < 1) return "total_iters must be >= 1";
    if (s->kind == NN_SCHED_LINEAR) return NULL;
    /* fall through */
  case NN_SCHED_COSINE:
    if (s->t_max < 1) return "t_max must be >= 1";
    return isfinite(s->eta_min) && s->eta_min >= 0 ? NULL : "eta_min must be finite and >= 0";
  case NN_SCHED_ONECYCLE:
    if (!(isfinite(s->max_lr) && s->max_lr >= 0)) return "max_lr must be finite and >= 0";
    if (s->total_steps < 1) return "total_steps must be >= 1";
    if (!(s->pct_start >= 0 && s->pct_start <= 1)) return "pct_start must be in [0, 1]";
    if (s->anneal != NN_ANNEAL_COS && s->anneal != NN_ANNEAL_LINEAR)
      return "anneal must be NN_ANNEAL_COS or NN_ANNEAL_LINEAR";
    if (!finite_pos(s->div_factor)) return "div_factor must be finite and > 0";
    if (!finite_pos(s->final_div_factor)) return "final_div_factor must be finite and > 0";
    if (s->cycle_momentum && !(isfinite(s->base_momentum) && isfinite(s->max_momentum)))
      return "base_momentum and max_momentum must be finite";
    if (onecycle_zero_phase(s) >= 0)
      return "a step lands in a phase of length 0 (PyTorch divides by zero): pct_start "
             "total_steps must not be 1, and pct_start 1 leaves the last phase no step";
    return NULL;
  case NN_SCHED_COSINE_RESTARTS:
    if (s->t_0 < 1) return "t_0 must be >= 1";
    if (s->t_mult < 1) return "t_mult must be >= 1";
    return isfinite(s->eta_min) && s->eta_min >= 0 ? NULL : "eta_min must be finite and >= 0";
  case NN_SCHED_CONSTANT_FACTOR:
    if (!(s->factor > 0 && s->factor <= 1)) return "factor must be in (0, 1]";
    return s->total_iters >= 1 ? NULL : "total_iters must be >= 1";
  case NN_SCHED_POLYNOMIAL:
    if (s->total_iters < 1) return "total_iters must be >= 1";
    return isfinite(s->power) && s->power >= 0 ? NULL : "power must be finite and >= 0";
  case NN_SCHED_LAMBDA:
  case NN_SCHED_MULTIPLICATIVE:
    return s->lr_lambda ? NULL : "lr_lambda is NULL";
  case NN_SCHED_CYCLIC:
    if (!(isfinite(s->base_lr) && s->base_lr >= 0)) return "base_lr must be finite and >= 0";
    if (!(isfinite(s->max_lr) && s->max_lr >= 0)) return "max_lr must be finite and >= 0";
    if (s->step_size_up < 1) return "step_size_up must be >= 1";
    if (s->step_size_down < 0) return "step_size_down must be >= 1, or 0 for step_size_up";
    if (!s->scale_fn && s->mode != NN_CYCLIC_TRIANGULAR && s->mode != NN_CYCLIC_TRIANGULAR2 &&
        s->mode != NN_CYCLIC_EXP_RANGE)
      return "mode is invalid and scale_fn is NULL";
    if (s->scale_fn && s->scale_mode != NN_SCALE_CYCLE && s->scale_mode != NN_SCALE_ITERATIONS)
      return "scale_mode must be NN_SCALE_CYCLE or NN_SCALE_ITERATIONS";
    if (!s->scale_fn && s->mode == NN_CYCLIC_EXP_RANGE && !finite_pos(s->gamma))
      return "gamma must be finite and > 0";
    if (s->cycle_momentum && !(isfinite(s->base_momentum) && isfinite(s->max_momentum)))
      return "base_momentum and max_momentum must be finite";
    return NULL;
  case NN_SCHED_SEQUENTIAL:
  case NN_SCHED_CHAINED:
    return kids_problem(s);
  }
  return "unknown kind";
}

static double cosine_lr(const nn_schedule_ext2 *s, double lr0, int64_t t) {
  if (t >= s->t_max) return s->eta_min;
  return s->eta_min +
         (lr0 - s->eta_min) * (1 + cos(3.141592653589793 * (double)t / (double)s->t_max)) / 2;
}

/* CosineAnnealingWarmRestarts stepped t times: its T_cur and T_i walked
 * in whole numbers as PyTorch's step() walks them, then its get_lr */
static double restarts_lr(const nn_schedule_ext2 *s, double lr0, int64_t t) {
  int64_t cur = t, len = s->t_0;
  if (s->t_mult == 1) {
    cur = t % len;
  } else {
    while (cur >= len) {
      cur -= len;
      len = len > INT64_MAX / s->t_mult ? INT64_MAX : len * s->t_mult;
    }
  }
  return s->eta_min +
         (lr0 - s->eta_min) * (1 + cos(3.141592653589793 * (double)cur / (double)len)) / 2;
}

/* PolynomialLR's step t from rate lr (its chained get_lr) */
static double poly_next(const nn_schedule_ext2 *s, double lr, int64_t t) {
  if (t > s->total_iters) return lr;
  double n = (double)s->total_iters;
  return lr * pow((1.0 - (double)t / n) / (1.0 - (double)(t - 1) / n), s->power);
}

/* ---- SequentialLR and ChainedScheduler: PyTorch's recursive get_lr of
 * each child, from the current rate lr and the base lr0 */

/* PyTorch's (t - 1 - T) % (2 T) == 0 for t, T >= 1 (a negative t - 1 - T
 * is > -2 T: never 0 mod 2 T), without 2 T overflowing */
static bool cos_peak(int64_t t, int64_t T) {
  int64_t d = t - 1 - T;
  if (d < 0) return false;
  return T > INT64_MAX / 2 ? d == 0 : d % (2 * T) == 0;
}

/* child c's get_lr at its step t (0: its first) from rate lr */
static double kid_next(const nn_schedule_ext2 *c, double lr, double lr0, int64_t t) {
  const double pi = 3.141592653589793;
  switch (c->kind) {
  case NN_SCHED_STEP:
    return t == 0 || t % c->step_size ? lr : lr * c->gamma;
  case NN_SCHED_EXPONENTIAL:
    return t == 0 ? lr : lr * c->gamma;
  case NN_SCHED_MULTISTEP: {
    int k = 0;
    for (int i = 0; i < c->n_milestones; i++) k += c->milestones[i] == t;
    return k ? lr * pow(c->gamma, (double)k) : lr;
  }
  case NN_SCHED_LINEAR: {
    double a = c->start_factor, b = c->end_factor;
    if (t == 0) return lr * a;
    if (t > c->total_iters) return lr;
    /* the ratio of two closed forms >= 0; PyTorch's rounds to -1e-17 at
     * total_iters for end_factor 0 (start_factor 1/3, 0.2, ...), which the
     * step would refuse as a rate < 0 */
    double f = 1. + (b - a) / ((double)c->total_iters * a + (double)(t - 1) * (b - a));
    return lr * (f > 0 ? f : 0);
  }
  case NN_SCHED_CONSTANT_FACTOR:
    if (t == 0) return lr * c->factor;
    return t != c->total_iters ? lr : lr * (1.0 / c->factor);
  case NN_SCHED_POLYNOMIAL:
    return t == 0 ? lr : poly_next(c, lr, t);
  case NN_SCHED_COSINE: {
    double T = (double)c->t_max, m = c->eta_min;
    if (t == 0) return lr;
    if (cos_peak(t, c->t_max)) return lr + (lr0 - m) * (1 - cos(pi / T)) / 2;
    return (1 + cos(pi * (double)t / T)) / (1 + cos(pi * (double)(t - 1) / T)) * (lr - m) + m;
  }
  case NN_SCHED_MULTIPLICATIVE:
    return t > 0 ? lr * c->lr_lambda(t, c->lambda_ud) : lr;
  case NN_SCHED_LAMBDA:
    return lr0 * c->lr_lambda(t, c->lambda_ud);
  case NN_SCHED_COSINE_RESTARTS:
    return restarts_lr(c, lr0, t);
  default:
    return NAN; /* refused by kids_problem */
  }
}

/* child c's step(0) at its milestone: its closed form at 0, or (no
 * closed form) its get_lr at 0 */
static double kid_restart(const nn_schedule_ext2 *c, double lr, double lr0) {
  if (c->kind == NN_SCHED_COSINE) return cosine_lr(c, lr0, 0);
  if (c->kind == NN_SCHED_MULTIPLICATIVE) return lr;
  return kid_next(c, lr0, lr0, 0);
}

/* a sequential's or chained's rate at step t from the rate lr at t - 1 (at
 * t = 0: lr0) */
static double kids_next(const nn_schedule_ext2 *s, double lr, double lr0, int64_t t) {
  nn_schedule_ext2 c;
  if (s->kind == NN_SCHED_CHAINED) {
    for (int i = 0; i < s->n_schedulers; i++) {
      ext2_read(&s->schedulers[i], &c);
      lr = kid_next(&c, lr, lr0, t);
    }
    return lr;
  }
  int i = 0; /* PyTorch's bisect_right */
  while (i < s->n_milestones && s->milestones[i] <= t) i++;
  ext2_read(&s->schedulers[i], &c);
  if (i > 0 && s->milestones[i - 1] == t) return kid_restart(&c, lr, lr0);
  return kid_next(&c, lr, lr0, i ? t - s->milestones[i - 1] : t);
}

/* s's rate, its settings good and t >= 0 (NAN past a onecycle's end) */
static double sched_lr(const nn_schedule_ext2 *s, double lr0, int64_t t) {
  switch (s->kind) {
  case NN_SCHED_CONSTANT:
    return lr0;
  case NN_SCHED_STEP:
    return lr0 * pow(s->gamma, (double)(t / s->step_size));
  case NN_SCHED_EXPONENTIAL:
    return lr0 * pow(s->gamma, (double)t);
  case NN_SCHED_COSINE:
    return cosine_lr(s, lr0, t);
  case NN_SCHED_MULTISTEP: {
    int k = 0; /* milestones passed, each as often as listed */
    for (int i = 0; i < s->n_milestones; i++) k += s->milestones[i] <= t;
    return lr0 * pow(s->gamma, (double)k);
  }
  case NN_SCHED_LINEAR: {
    int64_t n = t < s->total_iters ? t : s->total_iters;
    return lr0 * (s->start_factor +
                  (s->end_factor - s->start_factor) * (double)n / (double)s->total_iters);
  }
  case NN_SCHED_WARMUP_COSINE:
    if (t >= s->total_iters) return cosine_lr(s, lr0, t - s->total_iters);
    return lr0 * (s->start_factor + (1 - s->start_factor) * (double)t / (double)s->total_iters);
  case NN_SCHED_ONECYCLE:
    return t > s->total_steps ? NAN : onecycle_lr(s, lr0, t);
  case NN_SCHED_COSINE_RESTARTS:
    return restarts_lr(s, lr0, t);
  case NN_SCHED_CONSTANT_FACTOR: /* PyTorch's chain: lr0 factor, then times 1 / factor */
    return t < s->total_iters ? lr0 * s->factor : lr0 * s->factor * (1.0 / s->factor);
  case NN_SCHED_POLYNOMIAL: {
    double lr = lr0;
    for (int64_t k = 1; k <= t && k <= s->total_iters; k++) lr = poly_next(s, lr, k);
    return lr;
  }
  case NN_SCHED_LAMBDA:
    return lr0 * s->lr_lambda(t, s->lambda_ud);
  case NN_SCHED_MULTIPLICATIVE: {
    double lr = lr0;
    for (int64_t k = 1; k <= t; k++) lr *= s->lr_lambda(k, s->lambda_ud);
    return lr;
  }
  case NN_SCHED_CYCLIC:
    return cyclic_lr(s, lr0, t);
  case NN_SCHED_SEQUENTIAL:
  case NN_SCHED_CHAINED: {
    double lr = lr0;
    for (int64_t k = 0; k <= t; k++) lr = kids_next(s, lr, lr0, k);
    return lr;
  }
  }
  return NAN;
}

double nn_schedule_lr(const nn_schedule *s, double lr0, int64_t t) {
  if (!s || ext_only(s->kind) || ext2_only(s->kind)) return NAN;
  nn_schedule_ext e = ext_of(s);
  return nn_schedule_ext_lr(&e, lr0, t);
}

double nn_schedule_ext_lr(const nn_schedule_ext *s, double lr0, int64_t t) {
  if (!s || ext2_only(s->kind)) return NAN;
  nn_schedule_ext2 e = ext2_of(s);
  return nn_schedule_ext2_lr(&e, lr0, t);
}

double nn_schedule_ext2_lr(const nn_schedule_ext2 *s, double lr0, int64_t t) {
  nn_schedule_ext2 e;
  if (!s || t < 0 || !ext2_read(s, &e) || sched_problem(&e)) return NAN;
  return sched_lr(&e, lr0, t);
}

double nn_schedule_ext2_momentum(const nn_schedule_ext2 *s, int64_t t) {
  nn_schedule_ext2 e;
  if (!s || t < 0 || !ext2_read(s, &e) || sched_problem(&e) || !e.cycle_momentum) return NAN;
  if (e.kind == NN_SCHED_CYCLIC) return cyclic_momentum(&e, t);
  if (e.kind != NN_SCHED_ONECYCLE || t > e.total_steps) return NAN;
  return onecycle_momentum(&e, t);
}

/* The momentum a schedule with a cycled one sets at step t (NAN: none) */
static double sched_cycled(const nn_schedule_ext2 *s, int64_t t) {
  if (!s->cycle_momentum) return NAN;
  if (s->kind == NN_SCHED_CYCLIC) return cyclic_momentum(s, t);
  return s->kind == NN_SCHED_ONECYCLE ? onecycle_momentum(s, t) : NAN;
}

/* Whether s cycles the momentum */
static bool cycles_momentum(const nn_schedule_ext2 *s) {
  return s->cycle_momentum && (s->kind == NN_SCHED_ONECYCLE || s->kind == NN_SCHED_CYCLIC);
}

/* The rate at epoch 0 for base lr0: lr0 itself for the kinds of
 * nn_schedule (as before; cosine's formula may round it) */
static double rate0(const nn_optimizer *o, double lr0) {
  return o->has_sched && (ext_only(o->sched2.kind) || ext2_only(o->sched2.kind))
             ? sched_lr(&o->sched2, lr0, 0)
             : lr0;
}

/* Group g's setting a onecycle cycles: beta1 or momentum; NULL for one
 * without (see nn_optimizer_set_schedule_ext2) */
static double *cycled_setting(nn_opt_config *c) {
  switch (c->kind) {
  case NN_OPT_SGD:
  case NN_OPT_RMSPROP:
    return c->momentum > 0 ? &c->momentum : NULL;
  case NN_OPT_ADAM:
  case NN_OPT_ADAMW:
  case NN_OPT_ADAMAX:
  case NN_OPT_NADAM:
  case NN_OPT_RADAM:
    return &c->beta1;
  default:
    return NULL;
  }
}

/* A cycled momentum follows the schedule's step (which a checkpoint may
 * have changed), in every group; past the cycle's end it stays */
static void sched_momentum(nn_optimizer *o) {
  if (!o->has_sched || !cycles_momentum(&o->sched2)) return;
  double m = sched_cycled(&o->sched2, (int64_t)scalar_get(o->epoch));
  for (int g = 0; g < o->ngroups; g++) {
    double *to = cycled_setting(gcfg(o, g));
    if (to && !isnan(m)) *to = m;
  }
}

/* Why a onecycle cannot cycle the momentum of a group with settings c,
 * or NULL */
static const char *momentum_problem(const nn_opt_config *c, const nn_schedule_ext2 *s) {
  if (!cycles_momentum(s)) return NULL;
  nn_opt_config w = *c;
  if (s->kind == NN_SCHED_CYCLIC && c->kind != NN_OPT_SGD && c->kind != NN_OPT_RMSPROP)
    return "optimizer must support momentum with `cycle_momentum` option enabled (PyTorch 1.13's "
           "CyclicLR cycles 'momentum' only: SGD, RMSProp)";
  if (c->kind == NN_OPT_SGD || c->kind == NN_OPT_RMSPROP) {
    if (!cycled_setting(&w))
      return "cycle_momentum needs momentum > 0 when the optimizer is made (it has no momentum "
             "buffer)";
    if (!(s->base_momentum > 0 && s->max_momentum > 0))
      return "base_momentum and max_momentum must be > 0 for a momentum";
    return NULL;
  }
  if (!cycled_setting(&w))
    return "optimizer must support momentum with `cycle_momentum` option enabled";
  if (!(s->base_momentum >= 0 && s->base_momentum < 1 && s->max_momentum >= 0 &&
        s->max_momentum < 1))
    return "base_momentum and max_momentum must be in [0, 1) for beta1";
  return NULL;
}

/* Group g's base rate under s, r its rate and rate0 group 0's: a
 * onecycle's max_lr and a cyclic's base_lr are group 0's, the other
 * groups' in proportion to their rates (see nn.h) */
static double sched_base(const nn_schedule_ext2 *s, int g, double r, double rate0) {
  if (s->kind == NN_SCHED_ONECYCLE) return g ? s->max_lr * (r / rate0) : s->max_lr;
  if (s->kind == NN_SCHED_CYCLIC) return g ? s->base_lr * (r / rate0) : s->base_lr;
  return r;
}

static void free_kids(nn_optimizer *o) {
  ad_free(o->ctx, o->kids, (size_t)o->sched2.n_schedulers * sizeof *o->kids);
  ad_free(o->ctx, o->kid_ms, (size_t)o->n_kid_ms * sizeof *o->kid_ms);
  o->kids = NULL, o->kid_ms = NULL, o->n_kid_ms = 0;
}

static ad_status set_schedule(nn_optimizer *o, const nn_schedule_ext2 *s) {
  const char *why = sched_problem(s);
  if (why && s->size == sizeof *s && !ext2_only(s->kind))
    return ad_set_error(o->ctx, AD_ERR_ARG,
                        "optimizer: bad schedule: %s (kind %d, step_size %lld, gamma %g, t_max "
                        "%lld, eta_min %g, %d milestones, start_factor %g, end_factor %g, "
                        "total_iters %lld)",
                        why, (int)s->kind, (long long)s->step_size, s->gamma, (long long)s->t_max,
                        s->eta_min, s->n_milestones, s->start_factor, s->end_factor,
                        (long long)s->total_iters);
  if (why)
    return ad_set_error(o->ctx, AD_ERR_ARG, "optimizer: bad schedule: %s (kind %d)", why,
                        (int)s->kind);
  for (int g = 0; g < o->ngroups; g++)
    if ((why = momentum_problem(gcfg(o, g), s)))
      return ad_set_error(o->ctx, AD_ERR_ARG, "optimizer %s: bad schedule: %s%s",
                          kind_names[o->cfg.kind], why, group_label(o, g, (char[32]){0}));
  /* each group's base: its rate; a onecycle's max_lr is group 0's, the
   * other groups' in proportion to their rates (see nn.h) */
  double rate0 = scalar_get(o->lr);
  bool scaled = s->kind == NN_SCHED_ONECYCLE || s->kind == NN_SCHED_CYCLIC;
  if (scaled && o->ngroups > 1 && !(rate0 > 0))
    return ad_set_error(o->ctx, AD_ERR_ARG,
                        "optimizer %s: bad schedule: %s over %d parameter groups scales %s by "
                        "each group's rate / group 0's, and group 0's rate is %g",
                        kind_names[o->cfg.kind], s->kind == NN_SCHED_CYCLIC ? "cyclic" : "onecycle",
                        o->ngroups, s->kind == NN_SCHED_CYCLIC ? "base_lr and max_lr" : "max_lr",
                        rate0);
  if (s->kind == NN_SCHED_CYCLIC && o->ngroups > 1 && !(s->base_lr > 0))
    return ad_set_error(o->ctx, AD_ERR_ARG,
                        "optimizer %s: bad schedule: cyclic over %d parameter groups scales "
                        "max_lr by each group's base / base_lr, and base_lr is 0",
                        kind_names[o->cfg.kind], o->ngroups);
  for (int g = 0; g < o->ngroups; g++) {
    double r = scalar_get(glr(o, g));
    double lr0 = sched_base(s, g, r, rate0);
    double lr = ext_only(s->kind) || ext2_only(s->kind) ? sched_lr(s, lr0, 0) : lr0;
    if (!(isfinite(lr0) && isfinite(lr) && lr >= 0)) /* multistep: gamma > 1 at milestones 0
                                                        overflowing; lambda */
      return ad_set_error(o->ctx, AD_ERR_ARG,
                          "optimizer: bad schedule: its rate at epoch 0 from lr %g is %g; it "
                          "must be finite and >= 0",
                          lr0, lr);
  }
  int64_t *ms = NULL, *kms = NULL;
  nn_schedule_ext2 *kids = NULL;
  int n = s->kind == NN_SCHED_MULTISTEP || s->kind == NN_SCHED_SEQUENTIAL ? s->n_milestones : 0;
  int nk = s->kind == NN_SCHED_SEQUENTIAL || s->kind == NN_SCHED_CHAINED ? s->n_schedulers : 0;
  int nkm = 0; /* the children's milestones */
  for (int i = 0; i < nk; i++)
    if (s->schedulers[i].kind == NN_SCHED_MULTISTEP) nkm += s->schedulers[i].n_milestones;
  ad_status st = AD_OK;
  if (n > 0 && !(ms = ad_malloc(o->ctx, (size_t)n * sizeof *ms))) st = AD_ERR_OOM;
  if (st == AD_OK && nk > 0 && !(kids = ad_malloc(o->ctx, (size_t)nk * sizeof *kids)))
    st = AD_ERR_OOM;
  if (st == AD_OK && nkm > 0 && !(kms = ad_malloc(o->ctx, (size_t)nkm * sizeof *kms)))
    st = AD_ERR_OOM;
  if (st == AD_OK) st = scalars_noted(o->epoch, NULL, NULL);
  for (int g = 0; g < o->ngroups && st == AD_OK; g++)
    st = scalars_noted(glr(o, g), glr0(o, g), NULL);
  if (st != AD_OK) {
    ad_free(o->ctx, ms, (size_t)n * sizeof *ms);
    ad_free(o->ctx, kids, (size_t)nk * sizeof *kids);
    ad_free(o->ctx, kms, (size_t)nkm * sizeof *kms);
    return st;
  }
  if (n > 0) memcpy(ms, s->milestones, (size_t)n * sizeof *ms);
  for (int i = 0, at = 0; i < nk; i++) { /* each child whole, its milestones in kms */
    ext2_read(&s->schedulers[i], &kids[i]);
    if (kids[i].kind != NN_SCHED_MULTISTEP) {
      kids[i].milestones = NULL, kids[i].n_milestones = 0;
      continue;
    }
    if (kids[i].n_milestones > 0)
      memcpy(kms + at, kids[i].milestones, (size_t)kids[i].n_milestones * sizeof *kms);
    kids[i].milestones = kids[i].n_milestones > 0 ? kms + at : NULL;
    at += kids[i].n_milestones;
  }
  free_kids(o);
  if (o->milestones)
    ad_free(o->ctx, o->milestones, (size_t)o->sched.n_milestones * sizeof *o->milestones);
  o->sched2 = *s;
  o->sched2.milestones = o->milestones = ms;
  o->sched2.n_milestones = n;
  o->sched2.schedulers = o->kids = kids;
  o->sched2.n_schedulers = nk;
  o->kid_ms = kms;
  o->n_kid_ms = nkm;
  o->sched =
      (nn_schedule_ext){s->kind, s->step_size,    s->gamma,      s->t_max,      s->eta_min, ms,
                        n,       s->start_factor, s->end_factor, s->total_iters};
  o->sched_view = (nn_schedule){s->kind, s->step_size, s->gamma, s->t_max, s->eta_min};
  o->has_sched = true;
  scalar_set(o->epoch, 0);
  s = &o->sched2; /* s's children may have been the copies just freed (s a
                     copy of nn_optimizer_schedule_ext2's) */
  for (int g = 0; g < o->ngroups; g++) {
    double r = scalar_get(glr(o, g));
    double lr0 = sched_base(s, g, r, rate0);
    double lr = ext_only(s->kind) || ext2_only(s->kind) ? sched_lr(s, lr0, 0) : lr0;
    scalar_set(glr0(o, g), lr0);
    gcfg(o, g)->lr = lr;
    scalar_set(glr(o, g), lr);
  }
  sched_momentum(o);
  return AD_OK;
}

static void detach_schedule(nn_optimizer *o) {
  if (o->milestones)
    ad_free(o->ctx, o->milestones, (size_t)o->sched.n_milestones * sizeof *o->milestones);
  o->milestones = NULL;
  free_kids(o);
  memset(&o->sched, 0, sizeof o->sched);
  memset(&o->sched2, 0, sizeof o->sched2);
  o->has_sched = false;
}

ad_status nn_optimizer_set_schedule(nn_optimizer *o, const nn_schedule *s) {
  if (!o) return AD_ERR_NULL;
  if (!s) {
    detach_schedule(o);
    return AD_OK;
  }
  if (ext_only(s->kind) || ext2_only(s->kind))
    return ad_set_error(o->ctx, AD_ERR_ARG,
                        "optimizer: bad schedule: kind %d needs settings nn_schedule has no room "
                        "for: use nn_optimizer_set_schedule_ext%s",
                        (int)s->kind, ext2_only(s->kind) ? "2" : "");
  nn_schedule_ext e = ext_of(s);
  nn_schedule_ext2 e2 = ext2_of(&e);
  return set_schedule(o, &e2);
}

ad_status nn_optimizer_set_schedule_ext(nn_optimizer *o, const nn_schedule_ext *s) {
  if (!o) return AD_ERR_NULL;
  if (!s) {
    detach_schedule(o);
    return AD_OK;
  }
  if (ext2_only(s->kind))
    return ad_set_error(o->ctx, AD_ERR_ARG,
                        "optimizer: bad schedule: kind %d needs settings nn_schedule_ext has no "
                        "room for: use nn_optimizer_set_schedule_ext2",
                        (int)s->kind);
  nn_schedule_ext2 e = ext2_of(s);
  return set_schedule(o, &e);
}

ad_status nn_optimizer_set_schedule_ext2(nn_optimizer *o, const nn_schedule_ext2 *s) {
  if (!o) return AD_ERR_NULL;
  if (!s) {
    detach_schedule(o);
    return AD_OK;
  }
  nn_schedule_ext2 e; /* read by its size (see nn.h) */
  return set_schedule(o, ext2_read(s, &e) ? &e : s);
}

const nn_schedule *nn_optimizer_schedule(const nn_optimizer *o) {
  return o && o->has_sched ? &o->sched_view : NULL;
}

const nn_schedule_ext *nn_optimizer_schedule_ext(const nn_optimizer *o) {
  return o && o->has_sched ? &o->sched : NULL;
}

const nn_schedule_ext2 *nn_optimizer_schedule_ext2(const nn_optimizer *o) {
  return o && o->has_sched ? &o->sched2 : NULL;
}

ad_status nn_optimizer_schedule_step(nn_optimizer *o) {
  if (!o) return AD_ERR_NULL;
  if (!o->has_sched) return AD_OK;
  double epoch = scalar_get(o->epoch) + 1;
  if (o->sched2.kind == NN_SCHED_ONECYCLE && epoch > (double)o->sched2.total_steps)
    return ad_set_error(o->ctx, AD_ERR_STATE,
                        "optimizer %s: onecycle: tried to step %.0f times; the specified number "
                        "of total steps is %lld",
                        kind_names[o->cfg.kind], epoch + 1, (long long)o->sched2.total_steps);
  const nn_schedule_ext2 *s = &o->sched2;
  /* every group's rate from its own base, as PyTorch's schedulers keep a
   * base rate per group; checked for all before any changes */
  double mult = s->kind == NN_SCHED_MULTIPLICATIVE ? s->lr_lambda((int64_t)epoch, s->lambda_ud)
                                                   : 1.0; /* once per step, as PyTorch calls it */
  /* a cycled momentum the optimizer's constructor would refuse (a cyclic's
   * scale above 1 drives it to 0 or below): refused as a rate below 0 */
  double mom = sched_cycled(s, (int64_t)epoch);
  for (int g = 0; g < o->ngroups && cycles_momentum(s); g++) {
    nn_opt_config *c = gcfg(o, g);
    bool sgd = c->kind == NN_OPT_SGD || c->kind == NN_OPT_RMSPROP;
    if (cycled_setting(c) && !(sgd ? isfinite(mom) && mom > 0 : mom >= 0 && mom < 1))
      return ad_set_error(o->ctx, AD_ERR_NAN,
                          "optimizer %s: the schedule's momentum at epoch %.0f is %g%s; it must "
                          "be %s",
                          kind_names[o->cfg.kind], epoch, mom, group_label(o, g, (char[32]){0}),
                          sgd ? "finite and > 0" : "in [0, 1)");
  }
  for (int pass = 0; pass < 2; pass++) {
    for (int g = 0; g < o->ngroups; g++) {
      double cur = scalar_get(glr(o, g)), lr0 = scalar_get(glr0(o, g));
      double lr = s->kind == NN_SCHED_POLYNOMIAL /* chained: from the current rate */
                      ? poly_next(s, cur, (int64_t)epoch)
                      : s->kind == NN_SCHED_MULTIPLICATIVE ? cur * mult
                        : s->kind == NN_SCHED_SEQUENTIAL || s->kind == NN_SCHED_CHAINED
                            ? kids_next(s, cur, lr0, (int64_t)epoch)
                            : sched_lr(s, lr0, (int64_t)epoch);
      if (pass == 0 && !(isfinite(lr) && lr >= 0)) /* gamma > 1 overflowing: keep a rate that
                                                      can be saved */
        return ad_set_error(o->ctx, AD_ERR_NAN,
                            "optimizer %s: the schedule's learning rate at epoch %.0f is %g (base "
                            "rate %g)%s; it must be finite and >= 0",
                            kind_names[o->cfg.kind], epoch, lr, scalar_get(glr0(o, g)),
                            group_label(o, g, (char[32]){0}));
      if (pass == 1) {
        gcfg(o, g)->lr = lr;
        scalar_set(glr(o, g), lr);
      }
    }
    if (pass == 0) {
      ad_status st = scalars_noted(o->epoch, NULL, NULL);
      for (int g = 0; g < o->ngroups && st == AD_OK; g++) st = scalars_noted(glr(o, g), NULL, NULL);
      if (st != AD_OK) return st;
    }
  }
  scalar_set(o->epoch, epoch);
  sched_momentum(o);
  return AD_OK;
}

/* ------------------------------------------------- reduce on plateau */

nn_plateau nn_plateau_defaults(void) {
  nn_plateau p;
  memset(&p, 0, sizeof p);
  p.mode = NN_MODE_MIN;
  p.factor = 0.1;
  p.patience = 10;
  p.threshold = 1e-4;
  p.threshold_mode = NN_THRESHOLD_REL;
  p.min_lr = 0;
  p.eps = 1e-8;
  return p;
}

static const char *plateau_problem(const nn_plateau *p) {
  if (p->mode != NN_MODE_MIN && p->mode != NN_MODE_MAX)
    return "mode must be NN_MODE_MIN or NN_MODE_MAX";
  if (!(p->factor >= 0 && p->factor < 1)) return "factor must be >= 0 and < 1";
  if (p->patience < 0) return "patience must be >= 0";
  if (!(isfinite(p->threshold) && p->threshold >= 0)) return "threshold must be finite and >= 0";
  if (p->threshold_mode != NN_THRESHOLD_REL && p->threshold_mode != NN_THRESHOLD_ABS)
    return "threshold_mode must be NN_THRESHOLD_REL or NN_THRESHOLD_ABS";
  if (p->cooldown < 0) return "cooldown must be >= 0";
  if (!(isfinite(p->min_lr) && p->min_lr >= 0)) return "min_lr must be finite and >= 0";
  if (!(isfinite(p->eps) && p->eps >= 0)) return "eps must be finite and >= 0";
  return NULL;
}

ad_status nn_optimizer_set_plateau(nn_optimizer *o, const nn_plateau *p) {
  if (!o) return AD_ERR_NULL;
  if (!p) {
    o->has_plateau = false;
    return AD_OK;
  }
  const char *why = plateau_problem(p);
  if (why)
    return ad_set_error(o->ctx, AD_ERR_ARG,
                        "optimizer: bad plateau settings: %s (mode %d, factor %g, patience %d, "
                        "threshold %g, threshold_mode %d, cooldown %d, min_lr %g, eps %g)",
                        why, (int)p->mode, p->factor, p->patience, p->threshold,
                        (int)p->threshold_mode, p->cooldown, p->min_lr, p->eps);
  ad_status st = scalars_noted(o->best, o->bad_epochs, o->cooldown);
  if (st != AD_OK) return st;
  o->plateau = *p;
  o->has_plateau = true;
  scalar_set(o->best, p->mode == NN_MODE_MAX ? -INFINITY : INFINITY);
  scalar_set(o->bad_epochs, 0);
  scalar_set(o->cooldown, 0);
  return AD_OK;
}

const nn_plateau *nn_optimizer_plateau(const nn_optimizer *o) {
  return o && o->has_plateau ? &o->plateau : NULL;
}

/* PyTorch's is_better */
static bool plateau_better(const nn_plateau *p, double a, double best) {
  bool rel = p->threshold_mode == NN_THRESHOLD_REL;
  if (p->mode == NN_MODE_MIN) return rel ? a < best * (1 - p->threshold) : a < best - p->threshold;
  return rel ? a > best * (1 + p->threshold) : a > best + p->threshold;
}

ad_status nn_optimizer_plateau_step(nn_optimizer *o, double metric) {
  if (!o) return AD_ERR_NULL;
  if (!o->has_plateau)
    return ad_set_error(o->ctx, AD_ERR_STATE,
                        "optimizer %s: plateau_step: no plateau attached "
                        "(nn_optimizer_set_plateau)",
                        kind_names[o->cfg.kind]);
  const nn_plateau *p = &o->plateau;
  double best = scalar_get(o->best), bad = scalar_get(o->bad_epochs),
         cool = scalar_get(o->cooldown);
  if (plateau_better(p, metric, best)) {
    best = metric;
    bad = 0;
  } else {
    bad += 1;
  }
  if (cool > 0) { /* bad epochs in cooldown are ignored */
    cool -= 1;
    bad = 0;
  }
  bool reduce = bad > p->patience;
  if (reduce) {
    cool = p->cooldown;
    bad = 0;
  }
  /* each group's rate reduced on its own (PyTorch's _reduce_lr); the
   * rate's writes noted only when it changes: a tape that read it stays
   * usable after a step that does not reduce */
  ad_status st = scalars_noted(o->best, o->bad_epochs, o->cooldown);
  for (int pass = 0; pass < 2 && st == AD_OK; pass++)
    for (int g = 0; g < o->ngroups && st == AD_OK && reduce; g++) {
      double old = scalar_get(glr(o, g)), r = fmax(old * p->factor, p->min_lr);
      if (!(old - r > p->eps)) continue; /* so old > 0 */
      if (pass == 0) {
        st = scalars_noted(glr(o, g), glr0(o, g), NULL);
        continue;
      }
      double lr0 = scalar_get(glr0(o, g));
      scalar_set(glr0(o, g), lr0 == old ? r : lr0 * (r / old)); /* r / old <= 1: no overflow */
      gcfg(o, g)->lr = r;
      scalar_set(glr(o, g), r);
    }
  if (st != AD_OK) return st;
  scalar_set(o->best, best);
  scalar_set(o->bad_epochs, bad);
  scalar_set(o->cooldown, cool);
  return AD_OK;
}
