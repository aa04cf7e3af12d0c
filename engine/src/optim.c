/*
 * Optimizers (optim.h): the handle, the built-in steps and running an optimizer by hand.
 *
 * Every step is written with the public differentiable operations (ms_binary, ms_unary,
 * ms_where), so whatever levels are active around a step record it, and with none active
 * the same calls run untraced. Built-ins are ordinary ms_optim_def tables whose ud points at
 * the options copied into the handle: nothing distinguishes them from a host's optimizer
 * except their kind, which the stable and exact methods read to know the dynamics.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "meta_internal.h"

struct ms_optim {
  ms_ctx *ctx;
  int refcount;
  ms_optim_kind kind;
  ms_optim_def def; /* params[i].name point into pname, init owned */
  char name[32];
  char pname[MS_OPTIM_MAXPARAMS][32];
  ms_optim_options opts; /* built-ins: their hyper-parameters (lr_init NULL) */
  int64_t nsched;        /* > 0: factors */
  double *sched;
  int (*sched_fn)(ms_ctx *, void *, int64_t, double *);
  void *sched_ud;
  void (*sched_free)(void *);
};

/* ---- handle ---- */

static void drop_schedule(ms_optim *o) {
  if (o->sched) ms_ctx_dealloc(o->ctx, o->sched, (size_t)o->nsched * sizeof(double));
  if (o->sched_free) o->sched_free(o->sched_ud);
  o->sched = NULL;
  o->nsched = 0;
  o->sched_fn = NULL;
  o->sched_ud = NULL;
  o->sched_free = NULL;
}

static void optim_free(ms_optim *o) {
  for (int i = 0; i < o->def.nparams; i++) ms_tensor_release(o->def.params[i].init);
  drop_schedule(o);
  if (o->def.free_ud) o->def.free_ud(o->def.ud);
  ms_ctx_dealloc(o->ctx, o, sizeof *o);
}

ms_optim *ms_optim_retain(ms_optim *opt) {
  if (opt) opt->refcount++;
  return opt;
}

void ms_optim_release(ms_optim *opt) {
  if (opt && --opt->refcount == 0) optim_free(opt);
}

static int check_def(ms_ctx *ctx, const ms_optim_def *def, const char *name) {
  if (def->step == NULL)
    return ms_ctx_fail(ctx, MS_EARG, "optim.new: '%s' has no step callback", name);
  if (def->nparams < 0 || def->nparams > MS_OPTIM_MAXPARAMS)
    return ms_ctx_fail(ctx, MS_EARG, "optim.new: '%s': nparams must be in [0, %d], got %d", name,
                       MS_OPTIM_MAXPARAMS, def->nparams);
  if (def->nstate < 0 || def->nstate > MS_OPTIM_MAXSTATE)
    return ms_ctx_fail(ctx, MS_EARG, "optim.new: '%s': nstate must be in [0, %d], got %d", name,
                       MS_OPTIM_MAXSTATE, def->nstate);
  if (def->batch < 0)
    return ms_ctx_fail(ctx, MS_EARG, "optim.new: '%s': batch must be >= 0, got %lld", name,
                       (long long)def->batch);
  for (int i = 0; i < def->nparams; i++) {
    const ms_optim_param *p = &def->params[i];
    if (p->name == NULL || p->name[0] == '\0' || strlen(p->name) > 31)
      return ms_ctx_fail(
          ctx, MS_EARG, "optim.new: '%s': parameter %d needs a name of 1 to 31 bytes", name, i + 1);
    for (int j = 0; j < i; j++)
      if (strcmp(def->params[j].name, p->name) == 0)
        return ms_ctx_fail(ctx, MS_EARG, "optim.new: '%s': parameter '%s' is declared twice", name,
                           p->name);
    if (p->init == NULL)
      return ms_ctx_fail(ctx, MS_EARG, "optim.new: '%s': parameter '%s' has no initial value", name,
                         p->name);
    if (!ms_tensor_all_finite(p->init))
      return ms_ctx_fail(ctx, MS_EARG,
                         "optim.new: '%s': parameter '%s' has non-finite initial values", name,
                         p->name);
    if (p->map != MS_PARAM_PLAIN && p->map != MS_PARAM_LOG)
      return ms_ctx_fail(ctx, MS_EARG, "optim.new: '%s': parameter '%s' has an unknown map %d",
                         name, p->name, (int)p->map);
    if (isnan(p->lo) || isnan(p->hi) || p->lo > p->hi)
      return ms_ctx_fail(ctx, MS_EARG,
                         "optim.new: '%s': parameter '%s' has an empty domain [%g, %g]", name,
                         p->name, p->lo, p->hi);
  }
  return MS_OK;
}

int ms_optim_new(ms_ctx *ctx, const ms_optim_def *def, ms_optim **out) {
  *out = NULL;
  const char *name = def->name ? def->name : "custom";
  int st = check_def(ctx, def, name);
  if (st) return st;
  ms_optim *o = ms_ctx_alloc(ctx, sizeof *o);
  if (o == NULL) return MS_ENOMEM;
  memset(o, 0, sizeof *o);
  o->ctx = ctx;
  o->refcount = 1;
  o->def = *def;
  snprintf(o->name, sizeof o->name, "%s", name);
  o->def.name = o->name;
  o->def.free_ud = NULL; /* set once the copies succeeded: on failure the caller keeps ud */
  for (int i = 0; i < def->nparams; i++) o->def.params[i].init = NULL;
  for (int i = 0; i < def->nparams; i++) {
    snprintf(o->pname[i], sizeof o->pname[i], "%s", def->params[i].name);
    o->def.params[i].name = o->pname[i];
    if ((st = ms_tensor_copy(ctx, def->params[i].init, &o->def.params[i].init))) {
      optim_free(o);
      return st;
    }
  }
  o->def.free_ud = def->free_ud;
  *out = o;
  return MS_OK;
}

/* ---- schedules ---- */

int ms_optim_set_schedule(ms_ctx *ctx, ms_optim *opt, int64_t n, const double *factors) {
  if (n < 1)
    return ms_ctx_fail(ctx, MS_EARG, "optim: a schedule needs at least one factor, got %lld",
                       (long long)n);
  for (int64_t i = 0; i < n; i++)
    if (!(factors[i] >= 0) || isinf(factors[i]))
      return ms_ctx_fail(ctx, MS_EARG,
                         "optim: schedule factor %lld must be finite and >= 0, got %g",
                         (long long)i + 1, factors[i]);
  double *copy = ms_ctx_alloc(ctx, (size_t)n * sizeof *copy);
  if (copy == NULL) return MS_ENOMEM;
  memcpy(copy, factors, (size_t)n * sizeof *copy);
  drop_schedule(opt);
  opt->sched = copy;
  opt->nsched = n;
  return MS_OK;
}

int ms_optim_set_schedule_fn(ms_ctx *ctx, ms_optim *opt,
                             int (*fn)(ms_ctx *ctx, void *ud, int64_t t, double *factor), void *ud,
                             void (*free_ud)(void *ud)) {
  if (fn == NULL) return ms_ctx_fail(ctx, MS_EARG, "optim: the schedule callback is NULL");
  drop_schedule(opt);
  opt->sched_fn = fn;
  opt->sched_ud = ud;
  opt->sched_free = free_ud;
  return MS_OK;
}

int ms_optim_has_schedule(const ms_optim *opt) { return opt->nsched > 0 || opt->sched_fn != NULL; }

int ms_optim_factor(ms_ctx *ctx, ms_optim *opt, int64_t t, double *factor) {
  *factor = 1.0;
  if (t < 1)
    return ms_ctx_fail(ctx, MS_EARG, "optim: schedule step must be >= 1, got %lld", (long long)t);
  if (opt->nsched > 0) {
    *factor = opt->sched[(t < opt->nsched ? t : opt->nsched) - 1];
    return MS_OK;
  }
  if (opt->sched_fn == NULL) return MS_OK;
  int st = opt->sched_fn(ctx, opt->sched_ud, t, factor);
  if (st) return st;
  if (!(*factor >= 0) || isinf(*factor))
    return ms_ctx_fail(
        ctx, MS_EARG, "optim '%s': the schedule must give finite factors >= 0, got %g at step %lld",
        opt->name, *factor, (long long)t);
  return MS_OK;
}

/* ---- inspection ---- */

const char *ms_optim_name(const ms_optim *opt) { return opt->name; }
ms_optim_kind ms_optim_kind_of(const ms_optim *opt) { return opt->kind; }
int ms_optim_nparams(const ms_optim *opt) { return opt->def.nparams; }
int ms_optim_nstate(const ms_optim *opt) { return opt->def.nstate; }
int64_t ms_optim_batch(const ms_optim *opt) { return opt->def.batch; }
const ms_optim_param *ms_optim_param_at(const ms_optim *opt, int i) {
  return i >= 0 && i < opt->def.nparams ? &opt->def.params[i] : NULL;
}
int ms_optim_param_index(const ms_optim *opt, const char *name) {
  for (int i = 0; i < opt->def.nparams; i++)
    if (strcmp(opt->def.params[i].name, name) == 0) return i;
  return -1;
}
const ms_optim_options *ms_optim_options_of(const ms_optim *opt) { return &opt->opts; }
uint64_t ms__optim_seed(const ms_optim *opt) { return opt->def.seed; }
void *ms__optim_ud_if(const ms_optim *opt, int (*step)(ms_ctx *, void *, const ms_optim_io *,
                                                       ms_tensor **, ms_tensor **)) {
  return opt->def.step == step ? opt->def.ud : NULL;
}

/* ---- theta ---- */

int ms_optim_check_theta(ms_ctx *ctx, const ms_optim *opt, const char *what,
                         ms_tensor *const *theta) {
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  if (theta == NULL) return MS_OK;
  for (int i = 0; i < opt->def.nparams; i++) {
    const ms_optim_param *p = &opt->def.params[i];
    ms_tensor *v = theta[i];
    if (v == NULL) continue;
    int same = v->ndim == p->init->ndim;
    for (int k = 0; same && k < v->ndim; k++) same = v->shape[k] == p->init->shape[k];
    if (!same && !(p->init->numel == 1 && v->numel == 1))
      return ms_ctx_fail(
          ctx, MS_ESHAPE, "%s: meta-parameter '%s' of optimizer '%s' must have shape %s, got %s",
          what, p->name, opt->name, ms_shape_str(p->init->ndim, p->init->shape, b1, sizeof b1),
          ms_shape_str(v->ndim, v->shape, b2, sizeof b2));
    for (int64_t k = 0; k < v->numel; k++) {
      double x = MS_TENSOR_DATA(v)[ms__offset_of(v, k)];
      if (!isfinite(x))
        return ms_ctx_fail(ctx, MS_EARG, "%s: meta-parameter '%s' must be finite, got %s", what,
                           p->name, isnan(x) ? "nan" : (x > 0 ? "inf" : "-inf"));
      if (x < p->lo || x > p->hi)
        return ms_ctx_fail(ctx, MS_EARG, "%s: meta-parameter '%s' must be %s %g, got %g", what,
                           p->name, x < p->lo ? ">=" : "<=", x < p->lo ? p->lo : p->hi, x);
    }
  }
  return MS_OK;
}

int ms_optim_map_theta(ms_ctx *ctx, const ms_optim *opt, ms_tensor *const *theta,
                       ms_tensor **mapped) {
  int n = opt->def.nparams;
  for (int i = 0; i < n; i++) mapped[i] = NULL;
  for (int i = 0; i < n; i++) {
    ms_tensor *v = theta && theta[i] ? theta[i] : opt->def.params[i].init;
    int st = opt->def.params[i].map == MS_PARAM_LOG ? ms_unary(ctx, MS_EXP, v, &mapped[i])
                                                    : (mapped[i] = ms_tensor_retain(v), MS_OK);
    if (st) {
      for (int j = 0; j < i; j++) ms_tensor_release(mapped[j]), mapped[j] = NULL;
      return st;
    }
  }
  return MS_OK;
}

/* ---- built-in steps ----
 * Each mirrors the Lua front library's former steps operation by operation (the paper
 * reproduction must give the same numbers), with the schedule's factor multiplied into the
 * step size first. A tensor-valued result is built in a chain of temporaries; `T(x)` keeps
 * the chain readable: every temporary is released at the end whatever happened. */

typedef struct chain {
  ms_ctx *ctx;
  int st;
  int n;
  ms_tensor *tmp[24];
} chain;

/* Registers a new reference as a temporary and returns it (NULL once anything failed). */
static ms_tensor *keep(chain *c, int st, ms_tensor *t) {
  if (c->st) {
    ms_tensor_release(t);
    return NULL;
  }
  if (st) {
    c->st = st;
    return NULL;
  }
  c->tmp[c->n++] = t;
  return t;
}
static ms_tensor *bin(chain *c, ms_binop op, ms_tensor *a, ms_tensor *b) {
  ms_tensor *t = NULL;
  if (c->st) return NULL;
  int st = ms_binary(c->ctx, op, a, b, &t);
  return keep(c, st, t);
}
static ms_tensor *bins(chain *c, ms_binop op, ms_tensor *a, double s) {
  ms_tensor *t = NULL;
  if (c->st) return NULL;
  int st = ms_binary_scalar(c->ctx, op, a, s, 0, &t);
  return keep(c, st, t);
}
static ms_tensor *un(chain *c, ms_unop op, ms_tensor *a) {
  ms_tensor *t = NULL;
  if (c->st) return NULL;
  int st = ms_unary(c->ctx, op, a, &t);
  return keep(c, st, t);
}
static ms_tensor *scalar(chain *c, double v) {
  ms_tensor *t = NULL;
  if (c->st) return NULL;
  int st = ms_tensor_scalar(c->ctx, v, &t);
  return keep(c, st, t);
}
static ms_tensor *where(chain *c, ms_tensor *cond, ms_tensor *a, ms_tensor *b) {
  ms_tensor *t = NULL;
  if (c->st) return NULL;
  int st = ms_where(c->ctx, cond, a, b, &t);
  return keep(c, st, t);
}
/* Hands out a temporary as a new reference (NULL after a failure). */
static ms_tensor *take(chain *c, ms_tensor *t) {
  return c->st || t == NULL ? NULL : ms_tensor_retain(t);
}
static int finish(chain *c) {
  for (int i = 0; i < c->n; i++) ms_tensor_release(c->tmp[i]);
  return c->st;
}

/* Ends a step: the temporaries go, and after a failure so do w_next and the step's nstate
 * new states. */
static int finish_step(chain *c, ms_tensor **w_next, ms_tensor **state, int nstate) {
  if (c->st) {
    ms_tensor_release(*w_next), *w_next = NULL;
    for (int i = 0; i < nstate; i++) ms_tensor_release(state[i]), state[i] = NULL;
  }
  return finish(c);
}

/* The step size at this step: lr, times the schedule's factor when there is one. */
static ms_tensor *step_size(chain *c, const ms_optim_io *io, int scheduled) {
  return scheduled ? bins(c, MS_MUL, io->theta[0], io->factor) : io->theta[0];
}

/* sqrt(v) where v > 0, else 0, with a derivative only where v > 0: sqrt's derivative is
 * infinite at 0, and a coordinate whose gradient is exactly 0 would give 0 * inf = NaN. */
static ms_tensor *safe_sqrt(chain *c, ms_tensor *v) {
  ms_tensor *pos = bins(c, MS_GT, v, 0.0);
  ms_tensor *one = scalar(c, 1.0), *zero = scalar(c, 0.0);
  return where(c, pos, un(c, MS_SQRT, where(c, pos, v, one)), zero);
}

typedef struct builtin_ud {
  ms_optim_kind kind;
  ms_optim_options o;
  const ms_optim *self;
} builtin_ud;

static int scheduled(const builtin_ud *b) { return ms_optim_has_schedule(b->self); }

static int step_gd(ms_ctx *ctx, void *ud, const ms_optim_io *io, ms_tensor **w_next,
                   ms_tensor **state) {
  chain c = {ctx, MS_OK, 0, {0}};
  ms_tensor *lr = step_size(&c, io, scheduled(ud));
  *w_next = take(&c, bin(&c, MS_SUB, io->w, bin(&c, MS_MUL, io->gw, lr)));
  return finish_step(&c, w_next, state, 0);
}

/* heavy ball: m' = beta m + g, w' = w - lr m';  Nesterov: w' = w - lr (g + beta m') */
static int step_momentum(ms_ctx *ctx, void *ud, const ms_optim_io *io, ms_tensor **w_next,
                         ms_tensor **state) {
  const builtin_ud *b = ud;
  chain c = {ctx, MS_OK, 0, {0}};
  ms_tensor *beta = io->theta[1];
  ms_tensor *m = bin(&c, MS_ADD, bin(&c, MS_MUL, io->state[0], beta), io->gw);
  ms_tensor *lr = step_size(&c, io, scheduled(b));
  ms_tensor *dir =
      b->kind == MS_OPTIM_NESTEROV ? bin(&c, MS_ADD, io->gw, bin(&c, MS_MUL, m, beta)) : m;
  *w_next = take(&c, bin(&c, MS_SUB, io->w, bin(&c, MS_MUL, dir, lr)));
  state[0] = take(&c, m);
  return finish_step(&c, w_next, state, 1);
}

static int step_rmsprop(ms_ctx *ctx, void *ud, const ms_optim_io *io, ms_tensor **w_next,
                        ms_tensor **state) {
  const builtin_ud *b = ud;
  double rho = b->o.rho, eps = b->o.eps;
  chain c = {ctx, MS_OK, 0, {0}};
  ms_tensor *v = bin(&c, MS_ADD, bins(&c, MS_MUL, io->state[0], rho),
                     bins(&c, MS_MUL, un(&c, MS_SQUARE, io->gw), 1 - rho));
  ms_tensor *root = safe_sqrt(&c, v);
  ms_tensor *lr = step_size(&c, io, scheduled(b));
  *w_next =
      take(&c, bin(&c, MS_SUB, io->w,
                   bin(&c, MS_MUL, bin(&c, MS_DIV, io->gw, bins(&c, MS_ADD, root, eps)), lr)));
  state[0] = take(&c, v);
  return finish_step(&c, w_next, state, 1);
}

/* Adam: the bias corrections count the updates made (io->k), not the unroll's steps. */
static int step_adam(ms_ctx *ctx, void *ud, const ms_optim_io *io, ms_tensor **w_next,
                     ms_tensor **state) {
  const builtin_ud *b = ud;
  double b1 = b->o.beta1, b2 = b->o.beta2, eps = b->o.eps, k = (double)io->k;
  chain c = {ctx, MS_OK, 0, {0}};
  ms_tensor *m =
      bin(&c, MS_ADD, bins(&c, MS_MUL, io->state[0], b1), bins(&c, MS_MUL, io->gw, 1 - b1));
  ms_tensor *v = bin(&c, MS_ADD, bins(&c, MS_MUL, io->state[1], b2),
                     bins(&c, MS_MUL, un(&c, MS_SQUARE, io->gw), 1 - b2));
  ms_tensor *mhat = bins(&c, MS_DIV, m, 1 - pow(b1, k));
  ms_tensor *vhat = bins(&c, MS_DIV, v, 1 - pow(b2, k));
  ms_tensor *root = safe_sqrt(&c, vhat);
  ms_tensor *lr = step_size(&c, io, scheduled(b));
  *w_next = take(&c, bin(&c, MS_SUB, io->w,
                         bin(&c, MS_MUL, bin(&c, MS_DIV, mhat, bins(&c, MS_ADD, root, eps)), lr)));
  state[0] = take(&c, m);
  state[1] = take(&c, v);
  return finish_step(&c, w_next, state, 2);
}

static void builtin_free(void *ud) {
  builtin_ud *b = ud;
  ms_ctx_dealloc(b->self->ctx, b, sizeof *b);
}

static int checkopt(ms_ctx *ctx, const char *fname, const char *key, double v, double lo,
                    int lo_open, double hi, int hi_open) {
  if (!isfinite(v))
    return ms_ctx_fail(ctx, MS_EARG, "%s: option '%s' must be finite, got %s", fname, key,
                       isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf"));
  if (v < lo || (lo_open && v == lo))
    return ms_ctx_fail(ctx, MS_EARG, "%s: option '%s' must be %s %g, got %g", fname, key,
                       lo_open ? ">" : ">=", lo, v);
  if (v > hi || (hi_open && v == hi))
    return ms_ctx_fail(ctx, MS_EARG, "%s: option '%s' must be %s %g, got %g", fname, key,
                       hi_open ? "<" : "<=", hi, v);
  return MS_OK;
}

int ms_optim_builtin(ms_ctx *ctx, ms_optim_kind kind, const ms_optim_options *opts,
                     ms_optim **out) {
  static const char *const names[] = {"custom",   "gd",      "sgd", "momentum",
                                      "nesterov", "rmsprop", "adam"};
  *out = NULL;
  if (kind <= MS_OPTIM_CUSTOM || kind > MS_OPTIM_ADAM)
    return ms_ctx_fail(ctx, MS_EARG, "optim: unknown built-in optimizer %d", (int)kind);
  char fname[32];
  snprintf(fname, sizeof fname, "optim.%s", names[kind]);
  ms_optim_options o = *opts;
  int st;
  if (o.lr_init == NULL) {
    if ((st = checkopt(ctx, fname, "lr", o.lr, 0, o.log_lr, INFINITY, 0))) return st;
  } else {
    if (!ms_tensor_all_finite(o.lr_init))
      return ms_ctx_fail(ctx, MS_EARG, "%s: option 'lr' has non-finite entries", fname);
    for (int64_t i = 0; i < o.lr_init->numel; i++) {
      double x = MS_TENSOR_DATA(o.lr_init)[ms__offset_of(o.lr_init, i)];
      if (x < 0 || (o.log_lr && x == 0))
        return ms_ctx_fail(ctx, MS_EARG,
                           "%s: option 'lr' must be %s 0 in every entry, got %g at entry %lld",
                           fname, o.log_lr ? ">" : ">=", x, (long long)i + 1);
    }
  }
  int mom = kind == MS_OPTIM_MOMENTUM || kind == MS_OPTIM_NESTEROV;
  if (mom) {
    if (!o.beta_set) o.beta = 0.9;
    if ((st = checkopt(ctx, fname, "beta", o.beta, 0, 0, INFINITY, 0))) return st;
  }
  if (kind == MS_OPTIM_ADAM) {
    if (!o.hyper_set) o.beta1 = 0.9, o.beta2 = 0.999, o.eps = 1e-8;
    if ((st = checkopt(ctx, fname, "beta1", o.beta1, 0, 0, 1, 1)) ||
        (st = checkopt(ctx, fname, "beta2", o.beta2, 0, 0, 1, 1)) ||
        (st = checkopt(ctx, fname, "eps", o.eps, 0, 1, INFINITY, 0)))
      return st;
  }
  if (kind == MS_OPTIM_RMSPROP) {
    if (!o.hyper_set) o.rho = 0.99, o.eps = 1e-8;
    if ((st = checkopt(ctx, fname, "rho", o.rho, 0, 0, 1, 1)) ||
        (st = checkopt(ctx, fname, "eps", o.eps, 0, 1, INFINITY, 0)))
      return st;
  }
  if (kind == MS_OPTIM_SGD) {
    if (o.batch == 0) o.batch = 1;
    if (o.batch < 1)
      return ms_ctx_fail(ctx, MS_EARG, "%s: option 'batch' must be >= 1, got %lld", fname,
                         (long long)o.batch);
  }

  ms_tensor *lr0 = NULL, *beta0 = NULL;
  if (o.lr_init) {
    st = o.log_lr ? ms_unary(ctx, MS_LOG, o.lr_init, &lr0) : ms_tensor_copy(ctx, o.lr_init, &lr0);
  } else {
    st = ms_tensor_scalar(ctx, o.log_lr ? log(o.lr) : o.lr, &lr0);
  }
  if (!st && mom) st = ms_tensor_scalar(ctx, o.beta, &beta0);
  builtin_ud *b = st ? NULL : ms_ctx_alloc(ctx, sizeof *b);
  if (!st && b == NULL) st = MS_ENOMEM;
  if (st) {
    ms_tensor_release(lr0);
    ms_tensor_release(beta0);
    return st;
  }
  ms_optim_def def;
  memset(&def, 0, sizeof def);
  def.name = names[kind];
  def.nparams = mom ? 2 : 1;
  def.params[0] =
      (ms_optim_param){o.log_lr ? "log_lr" : "lr", lr0, o.log_lr ? MS_PARAM_LOG : MS_PARAM_PLAIN,
                       o.log_lr ? -INFINITY : 0.0, INFINITY};
  if (mom) def.params[1] = (ms_optim_param){"beta", beta0, MS_PARAM_PLAIN, 0.0, INFINITY};
  def.nstate = kind == MS_OPTIM_ADAM ? 2 : (mom || kind == MS_OPTIM_RMSPROP) ? 1 : 0;
  def.step = mom                        ? step_momentum
             : kind == MS_OPTIM_RMSPROP ? step_rmsprop
             : kind == MS_OPTIM_ADAM    ? step_adam
                                        : step_gd;
  def.batch = kind == MS_OPTIM_SGD ? o.batch : 0;
  def.seed = o.seed;
  def.free_ud = builtin_free;
  def.ud = b;
  o.lr_init = NULL;
  b->kind = kind;
  b->o = o;
  b->self = NULL;
  st = ms_optim_new(ctx, &def, out);
  ms_tensor_release(lr0);
  ms_tensor_release(beta0);
  if (st) {
    ms_ctx_dealloc(ctx, b, sizeof *b);
    return st;
  }
  b->self = *out;
  (*out)->kind = kind;
  (*out)->opts = o;
  return MS_OK;
}

/* ---- one step, shared by ms_optim_state_step and the unroll ---- */

int ms__optim_init(ms_ctx *ctx, ms_optim *opt, ms_tensor *w, ms_tensor *const *mapped,
                   ms_tensor **state) {
  int n = opt->def.nstate;
  for (int i = 0; i < n; i++) state[i] = NULL;
  int st;
  if (opt->def.init) {
    st = opt->def.init(ctx, opt->def.ud, w, mapped, state);
    for (int i = 0; !st && i < n; i++)
      if (state[i] == NULL)
        st = ms_ctx_fail(ctx, MS_ECALLBACK, "optimizer '%s': init left state entry %d unset",
                         opt->name, i + 1);
  } else {
    st = MS_OK;
    for (int i = 0; !st && i < n; i++) st = ms_tensor_zeros(ctx, w->ndim, w->shape, &state[i]);
  }
  if (st)
    for (int i = 0; i < n; i++) ms_tensor_release(state[i]), state[i] = NULL;
  return st;
}

/* Runs the step, checks what it returned and replaces state[] (old entries released). */
int ms__optim_step(ms_ctx *ctx, ms_optim *opt, const ms_optim_io *io, ms_tensor **state,
                   ms_tensor **w_next) {
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  int n = opt->def.nstate;
  ms_tensor *next[MS_OPTIM_MAXSTATE] = {0};
  *w_next = NULL;
  int st = opt->def.step(ctx, opt->def.ud, io, w_next, next);
  if (!st && *w_next == NULL)
    st = ms_ctx_fail(ctx, MS_ECALLBACK, "optimizer '%s': the step returned no point", opt->name);
  if (!st && (*w_next)->ndim == io->w->ndim) {
    for (int k = 0; k < io->w->ndim; k++)
      if ((*w_next)->shape[k] != io->w->shape[k]) st = MS_ESHAPE;
  } else if (!st) {
    st = MS_ESHAPE;
  }
  if (st == MS_ESHAPE && *w_next)
    ms_ctx_fail(ctx, MS_ESHAPE,
                "optimizer '%s': the step returned a point of shape %s for w of shape %s",
                opt->name, ms_shape_str((*w_next)->ndim, (*w_next)->shape, b1, sizeof b1),
                ms_shape_str(io->w->ndim, io->w->shape, b2, sizeof b2));
  for (int i = 0; !st && i < n; i++)
    if (next[i] == NULL)
      st = ms_ctx_fail(ctx, MS_ECALLBACK, "optimizer '%s': the step left state entry %d unset",
                       opt->name, i + 1);
  if (st) {
    ms_tensor_release(*w_next);
    *w_next = NULL;
    for (int i = 0; i < n; i++) ms_tensor_release(next[i]);
    return st;
  }
  for (int i = 0; i < n; i++) {
    ms_tensor_release(state[i]);
    state[i] = next[i];
  }
  return MS_OK;
}

/* ---- running by hand ---- */

struct ms_optim_state {
  ms_ctx *ctx;
  ms_optim *opt;
  ms_tensor *mapped[MS_OPTIM_MAXPARAMS];
  ms_tensor *state[MS_OPTIM_MAXSTATE];
  int64_t steps;
};

void ms_optim_state_free(ms_optim_state *s) {
  if (s == NULL) return;
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) ms_tensor_release(s->mapped[i]);
  for (int i = 0; i < MS_OPTIM_MAXSTATE; i++) ms_tensor_release(s->state[i]);
  ms_optim_release(s->opt);
  ms_ctx_dealloc(s->ctx, s, sizeof *s);
}

int ms_optim_start(ms_ctx *ctx, ms_optim *opt, ms_tensor *const *theta, ms_tensor *w,
                   ms_optim_state **out) {
  *out = NULL;
  int st = ms_optim_check_theta(ctx, opt, "optim.start", theta);
  if (st) return st;
  ms_optim_state *s = ms_ctx_alloc(ctx, sizeof *s);
  if (s == NULL) return MS_ENOMEM;
  memset(s, 0, sizeof *s);
  s->ctx = ctx;
  s->opt = ms_optim_retain(opt);
  if ((st = ms_optim_map_theta(ctx, opt, theta, s->mapped)) ||
      (st = ms__optim_init(ctx, opt, w, s->mapped, s->state))) {
    ms_optim_state_free(s);
    return st;
  }
  *out = s;
  return MS_OK;
}

int ms_optim_state_step(ms_ctx *ctx, ms_optim_state *s, ms_tensor *w, ms_tensor *fw, ms_tensor *g,
                        ms_tensor **w_next) {
  *w_next = NULL;
  ms_tensor *zero = NULL;
  int st = MS_OK;
  if (fw == NULL && (st = ms_tensor_scalar(ctx, NAN, &zero))) return st;
  ms_optim_io io = {s->steps + 1, s->steps + 1, 1.0, w, fw ? fw : zero, g, s->mapped, s->state};
  if (!(st = ms_optim_factor(ctx, s->opt, io.t, &io.factor)) &&
      !(st = ms__optim_step(ctx, s->opt, &io, s->state, w_next)))
    s->steps++;
  ms_tensor_release(zero);
  return st;
}

int64_t ms_optim_state_steps(const ms_optim_state *s) { return s->steps; }
