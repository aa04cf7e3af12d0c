/*
 * Optimizers: boxes with named meta-parameters theta that map (w, f(w), grad f(w)) to the
 * next point.
 *
 * An optimizer (ms_optim, refcounted, immutable once made) declares
 *   - its meta-parameters: a name, an initial value (a tensor of any shape: one step size,
 *     one per coordinate, later a network's weights), a map and a domain. The value the
 *     meta-gradient is taken against is the STORED value theta; the step sees
 *     map(theta): MS_PARAM_PLAIN is theta itself, MS_PARAM_LOG is exp(theta) (a step size
 *     stored as its log stays positive). The name is the stored one ("log_lr").
 *   - a state: a fixed number of tensors (momentum, second moments), made by init;
 *   - a step, written with the engine's differentiable operations, so a reverse tape or a
 *     forward level active around it sees through it (meta-gradients). When nothing is
 *     traced the same operations run untraced, with no tape bookkeeping.
 *
 * Built-ins: gd, sgd (mini-batch gradients drawn from the objective by the unroll), momentum
 * (heavy ball or Nesterov), rmsprop, adam; every one with an optional step-size schedule
 * (a factor per step multiplying the step size). Hosts add optimizers with ms_optim_new and
 * a table of callbacks; the Lua bindings do the same for optimizers written in Lua.
 *
 * Ownership: ms_optim_* constructors return new references; tensors passed in are borrowed
 * (copied where kept); tensors handed out are new references unless marked borrowed.
 */
#ifndef METASTEP_OPTIM_H
#define METASTEP_OPTIM_H

#include "metastep/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MS_OPTIM_MAXPARAMS 8
#define MS_OPTIM_MAXSTATE 8

typedef struct ms_optim ms_optim;

/* How the step sees a stored meta-parameter theta. */
typedef enum ms_param_map {
  MS_PARAM_PLAIN = 0, /* the step sees theta */
  MS_PARAM_LOG = 1    /* the step sees exp(theta) */
} ms_param_map;

typedef struct ms_optim_param {
  const char *name; /* stored name, e.g. "lr" or "log_lr" (copied, at most 31 bytes) */
  ms_tensor *init;  /* initial stored value, any shape (borrowed; copied) */
  ms_param_map map;
  /* Domain of the stored value, per entry: lo <= theta <= hi (-INFINITY/INFINITY when
   * unbounded). Finite differences stay inside it and meta-training projects onto it. */
  double lo, hi;
} ms_optim_param;

/* What a step reads. Every tensor is borrowed and must not be written in place. */
typedef struct ms_optim_io {
  int64_t t;               /* step number of the unroll, 1-based */
  int64_t k;               /* updates made by this run including this one (t unless steps were
                            * skipped, e.g. frozen by freeze_norm); Adam's bias correction uses k */
  double factor;           /* the schedule's factor at step t (1 without a schedule) */
  ms_tensor *w;            /* current point */
  ms_tensor *fw;           /* f(w), 0-d */
  ms_tensor *gw;           /* gradient at w (a mini-batch gradient for stochastic optimizers) */
  ms_tensor *const *theta; /* mapped meta-parameters, in declaration order */
  ms_tensor *const *state; /* the state before the step (nstate entries) */
} ms_optim_io;

/*
 * A user optimizer. Callbacks return a status (after ms_ctx_fail on failure, with every
 * out entry left NULL or released).
 *   init (may be NULL: every state tensor is zeros shaped like w) sets state[0..nstate-1]
 *     to new references, given the mapped theta and the starting point w.
 *   step sets *w_next (w's shape) and state_out[0..nstate-1] (new references; returning a
 *     retained input is fine) from io.
 */
typedef struct ms_optim_def {
  const char *name; /* copied (at most 31 bytes); NULL = "custom" */
  int nparams;      /* 0..MS_OPTIM_MAXPARAMS */
  ms_optim_param params[MS_OPTIM_MAXPARAMS];
  int nstate; /* 0..MS_OPTIM_MAXSTATE */
  int (*init)(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *const *theta, ms_tensor **state);
  int (*step)(ms_ctx *ctx, void *ud, const ms_optim_io *io, ms_tensor **w_next,
              ms_tensor **state_out);
  /* > 0: stochastic. The unroll hands the step the gradient of a mini-batch of `batch`
   * samples drawn uniformly with replacement (seeded by seed and t) instead of the full
   * gradient; the objective must have samples (ms_objective_nsamples > 0). */
  int64_t batch;
  uint64_t seed;
  void (*free_ud)(void *ud); /* called when the last reference goes; may be NULL */
  void *ud;
} ms_optim_def;

/* Makes an optimizer from callbacks (def and its param inits are copied). New reference.
 * MS_EARG naming the field when step is NULL, counts are out of range, a name is empty or
 * repeated, or an init is non-finite; then free_ud is not called. */
int ms_optim_new(ms_ctx *ctx, const ms_optim_def *def, ms_optim **out);
ms_optim *ms_optim_retain(ms_optim *opt);
void ms_optim_release(ms_optim *opt);

/* ---- built-ins ---- */

/* Which built-in an optimizer is (MS_OPTIM_CUSTOM for ms_optim_new). */
typedef enum ms_optim_kind {
  MS_OPTIM_CUSTOM = 0,
  MS_OPTIM_GD,
  MS_OPTIM_SGD,
  MS_OPTIM_MOMENTUM,
  MS_OPTIM_NESTEROV,
  MS_OPTIM_RMSPROP,
  MS_OPTIM_ADAM
} ms_optim_kind;

/*
 * Options of the built-ins; fields a kind does not use are ignored. Zero-initialize and set
 * what you need: the defaults below apply to fields left 0.
 *   lr       step size (required > 0 with log_lr; >= 0 otherwise). lr_init, when not NULL,
 *            gives it as a tensor instead (any shape broadcasting against w: one step size
 *            per coordinate is shape [d]); lr is then ignored.
 *   log_lr   nonzero: the meta-parameter is "log_lr" = log(lr) (MS_PARAM_LOG), else "lr".
 *   beta     momentum coefficient, a meta-parameter "beta" >= 0 (momentum, nesterov;
 *            default 0.9 when beta_set is 0).
 *   beta1, beta2, eps   adam; rho, eps rmsprop: taken as given when hyper_set is nonzero,
 *            else the defaults 0.9, 0.999, 1e-8 (adam) and 0.99, 1e-8 (rmsprop). These are
 *            fixed hyper-parameters, not meta-parameters.
 *   batch, seed          sgd (batch >= 1, default 1).
 * Updates (g the gradient, lr_t = lr * factor_t):
 *   gd, sgd:   w' = w - lr_t g
 *   momentum:  m' = beta m + g,  w' = w - lr_t m'
 *   nesterov:  m' = beta m + g,  w' = w - lr_t (g + beta m')
 *   rmsprop:   v' = rho v + (1 - rho) g^2,  w' = w - lr_t g / (sqrt(v') + eps)
 *   adam:      m' = b1 m + (1 - b1) g, v' = b2 v + (1 - b2) g^2, k = updates made so far,
 *              w' = w - lr_t mhat / (sqrt(vhat) + eps), mhat = m'/(1 - b1^k), vhat = v'/(1 - b2^k)
 * The square roots take their derivative only where v > 0 (0 elsewhere), so a coordinate
 * whose gradient is exactly 0 gives finite first and second meta-derivatives.
 */
typedef struct ms_optim_options {
  double lr;
  ms_tensor *lr_init;
  int log_lr;
  double beta;
  int beta_set;
  double beta1, beta2, eps, rho;
  int hyper_set;
  int64_t batch;
  uint64_t seed;
} ms_optim_options;

int ms_optim_builtin(ms_ctx *ctx, ms_optim_kind kind, const ms_optim_options *opts, ms_optim **out);

/*
 * A step-size schedule: factor_t = factors[min(t, n) - 1] (the last one repeats), or a
 * callback returning a status and setting *factor (finite, >= 0) for step t. Replaces any
 * schedule set before; applies to unrolls started afterwards. A schedule is part of the
 * optimizer: set it before sharing the optimizer.
 */
int ms_optim_set_schedule(ms_ctx *ctx, ms_optim *opt, int64_t n, const double *factors);
int ms_optim_set_schedule_fn(ms_ctx *ctx, ms_optim *opt,
                             int (*fn)(ms_ctx *ctx, void *ud, int64_t t, double *factor), void *ud,
                             void (*free_ud)(void *ud));
/* Nonzero if a schedule is set. */
int ms_optim_has_schedule(const ms_optim *opt);
/* The factor at step t (1 without a schedule). */
int ms_optim_factor(ms_ctx *ctx, ms_optim *opt, int64_t t, double *factor);

/* ---- inspection (never fail) ---- */
const char *ms_optim_name(const ms_optim *opt);
ms_optim_kind ms_optim_kind_of(const ms_optim *opt);
int ms_optim_nparams(const ms_optim *opt);
int ms_optim_nstate(const ms_optim *opt);
int64_t ms_optim_batch(const ms_optim *opt);
/* Parameter i (0-based): name, map, domain; its initial stored value (borrowed). */
const ms_optim_param *ms_optim_param_at(const ms_optim *opt, int i);
/* Index of the parameter with this stored name, or -1. */
int ms_optim_param_index(const ms_optim *opt, const char *name);
/* A built-in's fixed hyper-parameters (the options it was made with; zeros for custom). */
const ms_optim_options *ms_optim_options_of(const ms_optim *opt);

/*
 * Checks a full set of stored values: theta[i] must have parameter i's shape... or, for a
 * parameter whose initial value has one element, any one-element shape; finite; inside the
 * domain. MS_ESHAPE / MS_EARG naming `what`, the parameter, expected and actual.
 * theta == NULL or theta[i] == NULL means the initial value.
 */
int ms_optim_check_theta(ms_ctx *ctx, const ms_optim *opt, const char *what,
                         ms_tensor *const *theta);

/* Mapped values (what the step sees) of stored values theta: new references in mapped[]. */
int ms_optim_map_theta(ms_ctx *ctx, const ms_optim *opt, ms_tensor *const *theta,
                       ms_tensor **mapped);

/* ---- running an optimizer by hand (a host's own training loop) ---- */

typedef struct ms_optim_state ms_optim_state;

/* Starts a run at w with stored values theta (NULL = initial values): calls init. */
int ms_optim_start(ms_ctx *ctx, ms_optim *opt, ms_tensor *const *theta, ms_tensor *w,
                   ms_optim_state **out);
/* One step: *w_next (new reference) from w, f(w) (0-d or NULL = not needed by the built-ins)
 * and the gradient g; advances the step count. */
int ms_optim_state_step(ms_ctx *ctx, ms_optim_state *s, ms_tensor *w, ms_tensor *fw, ms_tensor *g,
                        ms_tensor **w_next);
/*
 * One step on the host's own buffers: w (n doubles, the point, updated in place to the next
 * point) and g (n doubles, the gradient at w); fw is f(w) (NaN when unknown: the built-ins do
 * not read it). The run must have started at a point of shape [n]. w and g are wrapped
 * (ms_tensor_wrap), not copied; the step computes the next point into engine memory and copies
 * it back into w, the one copy (a step reads w while it makes w'). Momentum, Adam's moments
 * and the step count stay in s. On failure w is unchanged.
 */
int ms_optim_state_step_buffer(ms_ctx *ctx, ms_optim_state *s, int64_t n, double *w, double fw,
                               const double *g);
/* Steps taken so far. */
int64_t ms_optim_state_steps(const ms_optim_state *s);
void ms_optim_state_free(ms_optim_state *s);

#ifdef __cplusplus
}
#endif
#endif
