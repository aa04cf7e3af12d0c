/*
 * Meta-training: (meta-)gradient descent on an optimizer's meta-parameters theta.
 *
 * Each iteration k = 1..iterations takes a batch of tasks (the spec's tasks, or `batch`
 * tasks drawn from a sampler), computes the meta-objective and its meta-gradient with
 * ms_meta_value_and_grad at the current theta, records them, and updates theta with the
 * meta-optimizer:
 *   g    = the meta-gradient; non-finite entries become 0 (a meta-gradient whose status is
 *          ok is finite, so this matters under ZERO); then each entry is clipped to
 *          [-clip, clip] when clip > 0;
 *   lr_k = meta_lr * schedule(k)   (INV_SQRT: 1/sqrt(k), CONSTANT: 1, or a callback);
 *   SGD:     theta -= lr_k g
 *   ADAM:    m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, theta -= lr_k mhat / (sqrt(vhat) + eps)
 *            with the bias corrections counting the updates actually made;
 *   RMSPROP: v = rho v + (1-rho) g^2, theta -= lr_k g / (sqrt(v) + eps);
 *   then each entry is projected onto [lo, hi] (the bounds given for the parameter, which
 *   replace its domain, else its domain: lr >= 0) and the project callback, if any, runs.
 *   Only the selected parameters (spec->select) move; theta is never written in place (an
 *   update makes new tensors). An entry that is not finite after the projection stops the
 *   run with MS_ENUMERIC, theta left at the values before that update.
 * A meta-gradient whose status is not ok is handled by on_failure: SKIP (no update; Adam's
 * state and update count unchanged), ZERO (update with its non-finite entries set to 0, as
 * the paper's authors' code did) or ERROR (stop with MS_ENUMERIC "meta.train: iteration 7:
 * meta-gradient status overflow (step 135)"; that iteration's record is kept and the callback
 * sees it first, so a log holds the failing row).
 * Every option is checked first: MS_EARG "meta.train: option 'clip' must be >= 0, got -1".
 *
 * Ctrl-C (ms_ctx_interrupt) or a callback asking to stop ends the run early: the result
 * still holds the history so far (result->stopped says why), so no work is lost.
 */
#ifndef METASTEP_TRAIN_H
#define METASTEP_TRAIN_H

#include "metastep/archive.h"
#include "metastep/meta.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ms_train_schedule {
  MS_SCHEDULE_INV_SQRT = 0,
  MS_SCHEDULE_CONSTANT = 1
} ms_train_schedule;
typedef enum ms_train_metaopt {
  MS_METAOPT_SGD = 0,
  MS_METAOPT_ADAM = 1,
  MS_METAOPT_RMSPROP = 2
} ms_train_metaopt;
typedef enum ms_train_failure {
  MS_FAIL_SKIP = 0,
  MS_FAIL_ZERO = 1,
  MS_FAIL_ERROR = 2
} ms_train_failure;
typedef enum ms_train_stop {
  MS_STOP_DONE = 0,      /* every iteration ran */
  MS_STOP_CALLBACK = 1,  /* the callback asked to stop */
  MS_STOP_INTERRUPT = 2, /* ms_ctx_interrupt */
  MS_STOP_ERROR = 3      /* a failure (the call's status says which); history kept */
} ms_train_stop;

/* One iteration. theta: the values the meta-gradient was taken at (before the update).
 * The tensors are read-only: they may share storage with other records, result->theta and
 * result->best_theta. */
typedef struct ms_train_record {
  int64_t k;
  double value;
  int status; /* ms_meta_status */
  int64_t fail_step;
  int updated;                          /* 0 when the update was skipped */
  double lr;                            /* lr_k (also recorded when the update is skipped) */
  ms_tensor *theta[MS_OPTIM_MAXPARAMS]; /* stored values (owned by the history) */
  ms_tensor *grad[MS_OPTIM_MAXPARAMS];  /* meta-gradients (NULL where not selected) */
} ms_train_record;

typedef struct ms_train_options {
  int64_t iterations; /* >= 0 */
  double meta_lr;     /* >= 0 */
  ms_train_schedule schedule;
  /* When not NULL, replaces schedule: sets *factor (finite, >= 0) for iteration k. Called once
   * per iteration, after its meta-gradient and before on_failure is looked at (so skipped
   * iterations too); a failure status it returns stops the run. */
  int (*schedule_fn)(ms_ctx *ctx, void *ud, int64_t k, double *factor);
  ms_train_metaopt meta_optimizer;
  double beta1, beta2, eps, rho; /* 0 = defaults 0.9, 0.999, 1e-8, 0.9 */
  double clip;                   /* > 0: clip each entry to [-clip, clip]; 0 = off */
  ms_train_failure on_failure;
  /* Bounds per parameter (0-based as the optimizer declares them): has_bounds[i] projects
   * parameter i onto [lo[i], hi[i]] INSTEAD of its domain (as the Lua bounds table replaces
   * the default {lr = {0, inf}}); has_bounds[i] = 0 projects onto the domain. A bound outside
   * the domain lets theta leave it, and the next meta-gradient's theta check then fails.
   * Setting has_bounds[i] for i >= the optimizer's parameter count is MS_EARG. */
  int has_bounds[MS_OPTIM_MAXPARAMS];
  double lo[MS_OPTIM_MAXPARAMS], hi[MS_OPTIM_MAXPARAMS];
  /* Optional projection after the bounds, run after each update made (not on skipped
   * iterations): may write into theta[i] in place (those tensors are new) or replace it
   * (release the old, store a new reference). The result must keep each parameter's number
   * of entries and pass ms_optim_check_theta (shape, finite, domain). */
  int (*project)(ms_ctx *ctx, void *ud, int nparams, ms_tensor **theta);
  /* Task sampler: when not NULL, each iteration draws `batch` tasks (batch >= 1) by calling
   * sample(ctx, ud, k, i, &task) for i = 0..batch-1; the tasks' objectives and w0 are
   * retained by the callee's host until release_task is called with the same task (may be
   * NULL when the host keeps them alive otherwise). */
  int (*sample)(ms_ctx *ctx, void *ud, int64_t k, int i, ms_task *task);
  void (*release_task)(ms_ctx *ctx, void *ud, ms_task *task);
  int batch;
  /* Called after each iteration's update (or skip), and with the record that an ERROR stop
   * stops at (its return value then ignored). Return 0 to go
   * on, 1 to stop early (MS_OK, stopped = MS_STOP_CALLBACK), or a failure status (after
   * ms_ctx_fail) to stop with it. 1 is also MS_ENOMEM's value and always means "stop": report
   * an allocation failure inside the callback as another status (e.g. MS_ECALLBACK). Any
   * other value is MS_ECALLBACK. rec and theta are read-only (theta[i] is the very tensor
   * rec->theta[i] for a parameter that did not move). */
  int (*callback)(ms_ctx *ctx, void *ud, const ms_train_record *rec, ms_tensor *const *theta);
  void *ud;         /* passed to every callback above */
  int keep_history; /* nonzero: keep every record (0: the callback still gets
                     * each record, and result->n counts them) */
  /* Truncated back-propagation through a long inner run: > 1 continues each task's run over
   * `segments` consecutive iterations. Iteration k unrolls spec->steps more steps from where
   * the previous one stopped (point, optimizer state and step count carried over through
   * spec->start and spec->stop, which the driver sets itself), the meta-gradient taken
   * through that segment only; every `segments` iterations fresh tasks are drawn (or the
   * spec's tasks start again from w0). An iteration whose status is not ok restarts the runs
   * at the next one. With a sampler, a task is kept (release_task not called) until its run
   * ends. 0 or 1: every iteration starts from the tasks' w0. */
  int64_t segments;
  /* Checkpoints (one archive, docs/format.md). When checkpoint is not NULL, the whole state of
   * the run is saved there after every `every`-th iteration (0 = every iteration), after the
   * last one and after a callback's stop: theta, the meta-optimizer's moments and update count,
   * the context's generator, the iteration count, the best theta so far, the history kept so
   * far, the options that shape the trajectory, and what save_state (if not NULL) adds under
   * names starting "host/" (a task sampler's position, say). Each save writes a temporary file
   * and renames it, so a run killed at any instant leaves the last complete checkpoint.
   * A failed save stops the run with its error (the result keeps the history so far).
   * When resume is not NULL, the run continues from that checkpoint: everything above is
   * restored (the generator too) and load_state (if not NULL) gets the archive and the
   * iteration the checkpoint was made at, before the first new iteration; with the same spec
   * and options the rest of the run, its history and its result equal those of an
   * uninterrupted run bit for bit. The checkpoint is validated completely (file, optimizer,
   * shapes, options) before anything changes: a bad one is MS_EARG ("meta.train: cannot
   * resume from 'run.ckpt': checksum mismatch ...") with the context's generator untouched.
   * resume may equal checkpoint. */
  const char *checkpoint;
  int64_t every;
  const char *resume;
  int (*save_state)(ms_ctx *ctx, void *ud, ms_archive *a);
  int (*load_state)(ms_ctx *ctx, void *ud, const ms_archive *a, int64_t k);
} ms_train_options;

typedef struct ms_train_result {
  int nparams;
  ms_tensor *theta[MS_OPTIM_MAXPARAMS]; /* final stored values */
  /* values with the lowest ok meta-objective (the earliest on ties; NULL if none was ok) */
  ms_tensor *best_theta[MS_OPTIM_MAXPARAMS];
  double best_value;        /* NaN if no iteration was ok */
  int64_t best_k;           /* 0 if none */
  int64_t n;                /* iterations recorded */
  ms_train_record *history; /* n records when keep_history, else NULL */
  ms_train_stop stopped;
} ms_train_result;

/*
 * Runs meta-training from spec->theta (NULL = the optimizer's initial values). spec holds
 * the unroll (optimizer, steps, meta, method, select, ...) and, without a sampler, the
 * tasks; without a sampler the whole spec is checked (ms_meta_check_spec) before the first
 * iteration, with one theta and select are, and the rest when the first batch arrives.
 * result is overwritten (not released) on entry and filled even when the call fails
 * part-way (history so far, theta reached; theta entries are NULL only when the call failed
 * before the run started); release it with ms_train_result_clear, which is safe on a zeroed
 * or already cleared result.
 */
int ms_meta_train(ms_ctx *ctx, const ms_meta_spec *spec, const ms_train_options *opts,
                  ms_train_result *result);
void ms_train_result_clear(ms_ctx *ctx, ms_train_result *result);

#ifdef __cplusplus
}
#endif
#endif
