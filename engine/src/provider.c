/* Step-size providers: a schedule, a tuned optimizer's settings, hypergradient descent. */
#include "metastep/provider.h"

#include <math.h>
#include <string.h>

#include "internal.h"

typedef enum { P_SCHEDULE, P_OPTIM, P_HYPER } pkind;

struct ms_provider {
  ms_ctx *ctx;
  pkind kind;
  ms_step_params base;
  int64_t next; /* steps answered by ms_provider_next */
  /* P_SCHEDULE */
  int64_t nfactors;
  double *factors;
  /* P_OPTIM */
  ms_optim *opt;
  /* P_HYPER */
  double hyper_lr, lr_min, lr_max;
  int64_t n;    /* length of the observed vectors (0 before the first observation) */
  double *prev; /* the previous step's direction u */
  int has_prev;
};

static int fail_nonfinite(ms_ctx *ctx, const char *fn, const char *what, double v) {
  return ms_ctx_fail(ctx, MS_EARG, "%s: %s must be finite and >= 0, got %g", fn, what, v);
}

static int good(double v) { return v >= 0 && !isinf(v); }

static ms_provider *alloc_provider(ms_ctx *ctx, pkind kind, const ms_step_params *base) {
  ms_provider *p = ms_ctx_alloc(ctx, sizeof *p);
  if (p == NULL) return NULL;
  memset(p, 0, sizeof *p);
  p->ctx = ctx;
  p->kind = kind;
  if (base) p->base = *base;
  return p;
}

int ms_provider_schedule(ms_ctx *ctx, const ms_step_params *base, int64_t n, const double *factors,
                         ms_provider **out) {
  const char *fn = "ms_provider_schedule";
  *out = NULL;
  if (!good(base->lr)) return fail_nonfinite(ctx, fn, "base lr", base->lr);
  if (n < 0 || (n > 0 && factors == NULL))
    return ms_ctx_fail(ctx, MS_EARG, "%s: needs n >= 0 factors, got n = %lld%s", fn, (long long)n,
                       n > 0 ? " and factors NULL" : "");
  for (int64_t i = 0; i < n; i++)
    if (!good(factors[i]))
      return ms_ctx_fail(ctx, MS_EARG,
                         "%s: factors[%lld] (0-based) must be finite and >= 0, got %g", fn,
                         (long long)i, factors[i]);
  ms_provider *p = alloc_provider(ctx, P_SCHEDULE, base);
  if (p == NULL) return MS_ENOMEM;
  if (n > 0) {
    p->factors = ms_ctx_alloc(ctx, (size_t)n * sizeof(double));
    if (p->factors == NULL) {
      ms_ctx_dealloc(ctx, p, sizeof *p);
      return MS_ENOMEM;
    }
    memcpy(p->factors, factors, (size_t)n * sizeof(double));
  }
  p->nfactors = n;
  *out = p;
  return MS_OK;
}

/* The one value of a mapped meta-parameter named name (or log_name), or dflt when absent. */
static int one_value(ms_ctx *ctx, ms_optim *opt, ms_tensor *const *mapped, const char *name,
                     const char *log_name, double dflt, double *v) {
  int i = ms_optim_param_index(opt, name);
  if (i < 0 && log_name) i = ms_optim_param_index(opt, log_name);
  if (i < 0) {
    *v = dflt;
    return MS_OK;
  }
  if (ms_tensor_numel(mapped[i]) != 1)
    return ms_ctx_fail(ctx, MS_EARG,
                       "ms_provider_from_optim: meta-parameter '%s' of '%s' has %lld entries, "
                       "expected 1 (step it with ms_optim_state_step_buffer)",
                       ms_optim_param_at(opt, i)->name, ms_optim_name(opt),
                       (long long)ms_tensor_numel(mapped[i]));
  return ms_tensor_item(ctx, mapped[i], v);
}

int ms_provider_from_optim(ms_ctx *ctx, ms_optim *opt, ms_tensor *const *theta, ms_provider **out) {
  *out = NULL;
  ms_optim_kind kind = ms_optim_kind_of(opt);
  if (kind == MS_OPTIM_CUSTOM)
    return ms_ctx_fail(ctx, MS_EARG,
                       "ms_provider_from_optim: '%s' is a custom optimizer; expected a built-in "
                       "(gd, sgd, momentum, nesterov, rmsprop, adam)",
                       ms_optim_name(opt));
  int st = ms_optim_check_theta(ctx, opt, "ms_provider_from_optim", theta);
  if (st) return st;
  ms_tensor *mapped[MS_OPTIM_MAXPARAMS] = {NULL};
  if ((st = ms_optim_map_theta(ctx, opt, theta, mapped))) return st;
  ms_step_params b;
  memset(&b, 0, sizeof b);
  const ms_optim_options *oo = ms_optim_options_of(opt);
  if (kind == MS_OPTIM_ADAM) {
    b.beta1 = oo->hyper_set ? oo->beta1 : 0.9;
    b.beta2 = oo->hyper_set ? oo->beta2 : 0.999;
    b.eps = oo->hyper_set ? oo->eps : 1e-8;
  } else if (kind == MS_OPTIM_RMSPROP) {
    b.beta2 = oo->hyper_set ? oo->rho : 0.99;
    b.eps = oo->hyper_set ? oo->eps : 1e-8;
  }
  st = one_value(ctx, opt, mapped, "lr", "log_lr", 0.0, &b.lr);
  if (!st) st = one_value(ctx, opt, mapped, "beta", NULL, b.beta1, &b.beta1);
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) ms_tensor_release(mapped[i]);
  if (st) return st;
  ms_provider *p = alloc_provider(ctx, P_OPTIM, &b);
  if (p == NULL) return MS_ENOMEM;
  p->opt = ms_optim_retain(opt);
  *out = p;
  return MS_OK;
}

int ms_provider_hypergradient(ms_ctx *ctx, const ms_step_params *base, double hyper_lr,
                              double lr_min, double lr_max, ms_provider **out) {
  const char *fn = "ms_provider_hypergradient";
  *out = NULL;
  if (!(base->lr > 0) || isinf(base->lr))
    return ms_ctx_fail(ctx, MS_EARG, "%s: base lr must be finite and > 0, got %g", fn, base->lr);
  if (!good(hyper_lr)) return fail_nonfinite(ctx, fn, "hyper_lr", hyper_lr);
  if (!good(lr_min)) return fail_nonfinite(ctx, fn, "lr_min", lr_min);
  if (!good(lr_max)) return fail_nonfinite(ctx, fn, "lr_max", lr_max);
  if (lr_max > 0 && lr_max < lr_min)
    return ms_ctx_fail(ctx, MS_EARG, "%s: needs lr_min <= lr_max, got %g > %g", fn, lr_min, lr_max);
  ms_provider *p = alloc_provider(ctx, P_HYPER, base);
  if (p == NULL) return MS_ENOMEM;
  p->hyper_lr = hyper_lr;
  p->lr_min = lr_min;
  p->lr_max = lr_max;
  *out = p;
  return MS_OK;
}

int ms_provider_observe(ms_provider *p, int64_t n, const double *g, const double *u) {
  ms_ctx *ctx = p->ctx;
  const char *fn = "ms_provider_observe";
  if (p->kind != P_HYPER) return MS_OK;
  if (n < 1 || g == NULL)
    return ms_ctx_fail(ctx, MS_EARG, "%s: needs n >= 1 and a gradient, got n = %lld%s", fn,
                       (long long)n, g ? "" : " and g NULL");
  if (p->n != 0 && n != p->n)
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: gradient has %lld entries, the earlier ones had %lld",
                       fn, (long long)n, (long long)p->n);
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(g[i]) || (u && !isfinite(u[i])))
      return ms_ctx_fail(ctx, MS_EARG, "%s: %s[%lld] (0-based) is %g, expected a finite number", fn,
                         isfinite(g[i]) ? "u" : "g", (long long)i, isfinite(g[i]) ? u[i] : g[i]);
  if (p->prev == NULL) {
    p->prev = ms_ctx_alloc(ctx, (size_t)n * sizeof(double));
    if (p->prev == NULL) return MS_ENOMEM;
    p->n = n;
  }
  /* the direction of the step that led here: the host's, or the previous gradient (GD) */
  const double *dir = u ? u : p->has_prev ? p->prev : NULL;
  if (dir) {
    /* d f(w_t) / d lr_{t-1} = -g_t . u_{t-1}: step against it */
    double dot = 0;
    for (int64_t i = 0; i < n; i++) dot += g[i] * dir[i];
    double lr = p->base.lr + p->hyper_lr * dot;
    if (lr < p->lr_min) lr = p->lr_min;
    if (p->lr_max > 0 && lr > p->lr_max) lr = p->lr_max;
    if (isfinite(lr)) p->base.lr = lr;
  }
  memcpy(p->prev, g, (size_t)n * sizeof(double));
  p->has_prev = 1;
  return MS_OK;
}

int ms_provider_get(ms_provider *p, int64_t t, ms_step_params *out) {
  ms_ctx *ctx = p->ctx;
  if (t < 1)
    return ms_ctx_fail(ctx, MS_EARG, "ms_provider_get: step t must be >= 1, got %lld",
                       (long long)t);
  ms_step_params r = p->base;
  r.t = t;
  if (p->kind == P_SCHEDULE && p->nfactors > 0) {
    r.lr *= p->factors[(t < p->nfactors ? t : p->nfactors) - 1];
  } else if (p->kind == P_OPTIM) {
    double f = 1;
    int st = ms_optim_factor(ctx, p->opt, t, &f);
    if (st) return st;
    r.lr *= f;
  }
  *out = r;
  return MS_OK;
}

ms_step_params ms_provider_next(void *provider) {
  ms_provider *p = provider;
  ms_step_params r;
  if (ms_provider_get(p, p->next + 1, &r) != MS_OK) {
    r = p->base;
    r.lr = NAN;
    r.t = p->next + 1;
    return r;
  }
  p->next++;
  return r;
}

int64_t ms_provider_steps(const ms_provider *p) { return p->next; }
ms_ctx *ms_provider_ctx(const ms_provider *p) { return p->ctx; }

void ms_provider_free(ms_provider *p) {
  if (p == NULL) return;
  ms_ctx *ctx = p->ctx;
  if (p->factors) ms_ctx_dealloc(ctx, p->factors, (size_t)p->nfactors * sizeof(double));
  if (p->prev) ms_ctx_dealloc(ctx, p->prev, (size_t)p->n * sizeof(double));
  ms_optim_release(p->opt);
  ms_ctx_dealloc(ctx, p, sizeof *p);
}
