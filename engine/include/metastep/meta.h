/*
 * Meta-objectives of optimizers on quadratics, computed without losing the trajectory's
 * scale: the closed form of GD (eigenbasis, log space) and the numerically stable unroll
 * (state carried as a unit vector times exp(log-scale), tangents scaled alike).
 *
 * The quadratic is f(w) = 1/2 (w - w*)^T H (w - w*) with H symmetric positive
 * semi-definite. The meta-objectives over an unroll w_0 .. w_T are
 *   MS_META_NAIVE  F = f(w_T)
 *   MS_META_LOG    G = (1/T) log f(w_T)
 *   MS_META_SUM    S = sum_{t=1..T} f(w_t)
 *   MS_META_LOGSUM L = (1/T) log sum_{t=1..T} f(w_t)
 * The results report, next to the value and the derivatives, the log of the loss part
 * and of |derivative|, so F and S stay meaningful when they overflow a double, and a
 * status saying whether the double results are faithful.
 */
#ifndef METASTEP_META_H
#define METASTEP_META_H

#include "metastep/objective.h"
#include "metastep/optim.h"
#include "metastep/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ms_meta_kind {
  MS_META_NAIVE,
  MS_META_LOG,
  MS_META_SUM,
  MS_META_LOGSUM,
  MS_META_CUSTOM /* a callback of the trajectory (ms_meta_objective.fn) */
} ms_meta_kind;

/* Status of a meta-gradient computation (separate from the call's own status code). */
typedef enum ms_meta_status {
  MS_META_OK = 0,
  MS_META_OVERFLOW,  /* a value or derivative exceeded the double range */
  MS_META_UNDERFLOW, /* a value underflowed to zero (or lost its precision below DBL_MIN) */
  MS_META_NAN        /* a NaN appeared */
} ms_meta_status;

const char *ms_meta_status_name(int status); /* "ok", "overflow", "underflow", "nan" */

#define MS_META_MAXPARAMS 4

typedef struct ms_meta_result {
  double value;    /* the meta-objective (may be +-inf when not representable) */
  double log_loss; /* log f(w_T) (NAIVE, LOG) or log sum_t f(w_t) (SUM, LOGSUM) */
  int nparams;
  double grad[MS_META_MAXPARAMS];         /* d value / d theta_j */
  double log_abs_grad[MS_META_MAXPARAMS]; /* log |d value / d theta_j| */
  int status;                             /* ms_meta_status */
  int64_t fail_step;                      /* first step where the status arose, -1 if none */
} ms_meta_result;

/* The optimizers the stable unroll handles: their update is linear in the state. */
typedef enum ms_meta_opt { MS_META_GD, MS_META_MOMENTUM } ms_meta_opt;

typedef struct ms_meta_optimizer {
  ms_meta_opt kind;
  double lr;   /* theta_0 */
  double beta; /* theta_1, momentum only: m' = beta m + g, w' = w - lr m' */
} ms_meta_optimizer;

/*
 * Closed form for GD with step size eta on the quadratic with eigenvalues lambda ([d])
 * and coordinates c ([d]) of w_0 - w* in the eigenbasis:
 *   f(w_t) = 1/2 sum_i lambda_i c_i^2 (1 - eta lambda_i)^(2t),
 * evaluated with logsumexp, so any T and eta are fine. grad[0] = d value / d eta.
 * kind NAIVE or LOG (SUM and LOGSUM are MS_EARG).
 */
int ms_meta_gd_exact(ms_ctx *ctx, const ms_tensor *lambda, const ms_tensor *c, double eta,
                     int64_t T, ms_meta_kind kind, ms_meta_result *res);

/*
 * Stable unroll of GD or heavy-ball momentum for T steps on the quadratic (H [d,d],
 * w0 [d], wstar [d] or NULL for 0), forward-mode derivatives with respect to
 * (lr) or (lr, beta). The state (w - w*, m) is kept as 2^s * u with |u| in [1/2, 1) and
 * an integer s, and its tangents as 2^s * v, rescaled every step by exact powers of two, so
 * nothing over- or underflows and no rounding accumulates in the scale, whatever T and the
 * step size. The same routine as method "stable" of ms_meta_value_and_grad.
 */
int ms_meta_stable_quadratic(ms_ctx *ctx, const ms_tensor *H, const ms_tensor *w0,
                             const ms_tensor *wstar, const ms_meta_optimizer *opt, int64_t T,
                             ms_meta_kind kind, ms_meta_result *res);

/* ======================================================================================
 * Unrolls, meta-objectives and meta-gradients of any optimizer on any objective.
 *
 * A run unrolls an optimizer for T steps from w_0 on a task's training objective:
 *   w_t = step(theta, state, w_{t-1}, f(w_{t-1}), grad f(w_{t-1})),  t = 1..T,
 * and a meta-objective reads the trajectory. The built-in meta-objectives read the losses
 * l_t of the training objective (on = MS_META_TRAIN) or of the task's validation objective
 * (on = MS_META_VALID), t = 1..T:
 *   NAIVE l_T,  LOG (1/T) log l_T,  SUM sum_t l_t,  LOGSUM (1/T) log sum_t l_t (stably).
 * A custom one is a callback of the trajectory returning a one-element tensor computed
 * with engine operations from traj->losses, traj->w_T or traj->theta (traj->w, the iterates, is
 * kept only by ms_meta_unroll with keep_iterates; a meta-objective sees NULL there).
 * ====================================================================================== */

typedef enum ms_meta_on { MS_META_TRAIN = 0, MS_META_VALID = 1 } ms_meta_on;

/* One task: the training objective, an optional validation objective, the start point. */
typedef struct ms_task {
  ms_objective *objective; /* borrowed; required */
  ms_objective *valid;     /* borrowed; NULL when the task has no validation set */
  ms_tensor *w0;           /* borrowed; NULL = zeros */
  void *host;              /* for the host (the Lua bindings keep the task table here) */
} ms_task;

/* A trajectory: what a custom meta-objective reads, and what ms_meta_unroll returns.
 * Every tensor is owned by the trajectory (released by ms_traj_clear). */
typedef struct ms_traj {
  int64_t T;                /* steps asked for */
  int64_t done;             /* steps completed (T unless the run stopped on a non-finite value) */
  ms_tensor **losses;       /* losses[t], t = 0..done: f(w_t) as 0-d tensors (training objective) */
  ms_tensor **valid_losses; /* the same on the validation objective, or NULL */
  ms_tensor **w;            /* w[t], t = 0..done when keep_iterates, else NULL */
  ms_tensor *w_T;           /* the last iterate */
  int nparams;
  ms_tensor *theta[MS_OPTIM_MAXPARAMS]; /* stored meta-parameters as the run saw them */
  const ms_task *task;                  /* borrowed */
  int status;                           /* ms_meta_status of the run */
  int64_t fail_step;                    /* first step that was not a faithful double, -1 if none */
} ms_traj;

/* Releases what a trajectory owns and zeroes it. */
void ms_traj_clear(ms_ctx *ctx, ms_traj *traj);

typedef struct ms_meta_objective {
  ms_meta_kind kind;
  ms_meta_on on;
  /* MS_META_CUSTOM: sets *out to a new one-element tensor. Under reverse and forward mode
   * the result must depend on the trajectory: a value cut off from it is an error. */
  int (*fn)(ms_ctx *ctx, void *ud, const ms_traj *traj, ms_tensor **out);
  void *ud;
  const char *name; /* for messages; NULL = "custom" */
} ms_meta_objective;

/* Where a run stands: the iterate, the optimizer's state there and the steps made so far. The
 * tensors are owned by whoever filled it (the engine hands out new, untraced references). */
typedef struct ms_run_state {
  ms_tensor *w;
  ms_tensor *state[MS_OPTIM_MAXSTATE];
  int nstate;
  int64_t t;
} ms_run_state;

/* Releases what a run state holds and zeroes it (safe on a zeroed one). */
void ms_run_state_clear(ms_run_state *rs);

typedef enum ms_meta_method {
  MS_METHOD_REVERSE = 0, /* back-propagation through the unroll (truncate, checkpoint) */
  MS_METHOD_FORWARD,     /* forward mode, one pass per entry of the differentiated theta */
  MS_METHOD_STABLE,      /* affine dynamics in log-scaled homogeneous form (see below) */
  MS_METHOD_EXACT,       /* the closed form of GD on a quadratic */
  MS_METHOD_FD           /* central (or one-sided near a bound) finite differences */
} ms_meta_method;

const char *ms_meta_method_name(ms_meta_method m); /* "reverse", ... */

typedef struct ms_meta_spec {
  ms_optim *optimizer; /* borrowed; required */
  int ntasks;          /* >= 1; values and meta-gradients are averaged over the tasks */
  const ms_task *tasks;
  int64_t steps; /* T >= 1 */
  ms_meta_objective meta;
  ms_meta_method method;
  /* Stored meta-parameter values, one per optimizer parameter (NULL, or NULL entries: the
   * optimizer's initial values). */
  ms_tensor *const *theta;
  /* Which parameters to differentiate (0-based indices; NULL: all of them). */
  int nselect;
  const int *select;
  /* reverse and forward: K >= 1 differentiates through the last K steps only: w_{T-K}, its loss
   * and the optimizer state are held constant; losses l_t, t <= T - K, that the
   * meta-objective reads keep their full derivatives. 0 = off. */
  int64_t truncate;
  /* reverse only: K >= 1 stores every K-th state and recomputes the steps between them
   * while back-propagating: memory O((T/K + K) d) instead of O(T d) (plus O(T) scalars for
   * SUM, LOGSUM and custom meta-objectives, which read every loss), the same result bit for
   * bit. First order only: refused when theta or w0 is traced by an outer level. 0 = off. */
  int64_t checkpoint;
  /* > 0: once |w_t| >= freeze_norm the iterate is projected to that norm and frozen. */
  double freeze_norm;
  /* fd only: the step (0 = relative: 1e-4 |theta_i|, or 1e-6 where theta_i = 0). */
  double fd_step;
  /* A loss of exactly 0 is a status "underflow" for LOG and LOGSUM; nonzero: accept it. */
  int allow_zero_loss;
  /* Continuing longer runs (truncated back-propagation through a long inner run, one segment
   * per unroll). start: NULL, or ntasks entries (borrowed); an entry with w != NULL starts task
   * i's run there, with the optimizer's state start[i].state (nstate tensors) and start[i].t
   * steps already made (the optimizer sees steps t + 1 .. t + T, its update count continues
   * from t, and mini-batches are drawn for those steps), instead of w0 with a fresh init.
   * stop: NULL, or ntasks entries receiving where each run stopped (earlier contents
   * released); it must not be the start array. With several passes (forward, fd) stop is the
   * run at the unperturbed theta. The stable and exact methods refuse start and stop;
   * ms_meta_unroll reads start for a task of spec->tasks (by address). */
  const ms_run_state *start;
  ms_run_state *stop;
} ms_meta_spec;

/* Result of ms_meta_value_and_grad. */
typedef struct ms_meta_out {
  double value;    /* the meta-objective (mean over the tasks) */
  double log_loss; /* stable/exact only: log of the loss part (see ms_meta_result); NaN else */
  int nparams;     /* the optimizer's parameter count */
  /* grad[i]: d value / d theta_i, theta_i's shape (new references; NULL where not selected) */
  ms_tensor *grad[MS_OPTIM_MAXPARAMS];
  /* stable/exact with one-element parameters: log |grad|; NaN otherwise */
  double log_abs_grad[MS_OPTIM_MAXPARAMS];
  int status;        /* ms_meta_status: ok, or where a double stopped being faithful */
  int64_t fail_step; /* first step where the status arose, -1 if none */
  int task;          /* 0-based index of the first task whose status was not ok, -1 if none */
} ms_meta_out;

/* A spec for one task and a built-in meta-objective on the training loss, every other field
 * zero (no truncation, checkpointing, freezing; all parameters at their initial values, all
 * differentiated): the usual start of a host's spec. The task is borrowed. */
ms_meta_spec ms_meta_spec_one(ms_optim *opt, const ms_task *task, int64_t steps, ms_meta_kind kind,
                              ms_meta_method method);

/* Releases the gradients of a result (safe on a zeroed or already cleared result). */
void ms_meta_out_clear(ms_meta_out *out);

/*
 * The meta-objective and its meta-gradient by spec->method. Returns MS_OK whenever the
 * computation ran, with out->status telling whether the numbers are faithful doubles
 * (a run that overflows is MS_OK with status overflow and fail_step set); returns an
 * error status for bad specs (MS_EARG / MS_ESHAPE naming the field), callback failures,
 * MS_ENOMEM and MS_EINTERRUPT.
 *
 * The stable method covers every case whose dynamics are affine in the state: GD,
 * momentum and Nesterov (constant or scheduled step sizes, one-element lr and beta) on
 * a quadratic or on a full-batch least-squares objective, with NAIVE, LOG, SUM or LOGSUM on
 * the training or the validation objective (a quadratic or least squares too). Elsewhere
 * it fails with MS_EARG saying what it does not cover. The exact method covers GD on a
 * quadratic with NAIVE or LOG on the training loss. Both need a positive semi-definite H.
 */
int ms_meta_value_and_grad(ms_ctx *ctx, const ms_meta_spec *spec, ms_meta_out *out);
/* The value only (through the stable method where it applies, else a plain unroll). */
int ms_meta_value(ms_ctx *ctx, const ms_meta_spec *spec, double *value, int *status);
/* Unrolls spec's optimizer on one task with stored values theta (spec->theta) and no
 * level pushed: the trajectory (losses and, when keep_iterates, every iterate). */
int ms_meta_unroll(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task, int keep_iterates,
                   ms_traj *traj);

/* Checks a spec without running it (what ms_meta_value_and_grad checks first). */
int ms_meta_check_spec(ms_ctx *ctx, const ms_meta_spec *spec);

#ifdef __cplusplus
}
#endif
#endif
