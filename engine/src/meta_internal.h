/* Engine-internal contract between the unroll (unroll.c), the stable and exact methods
 * (stable.c) and meta-training (train.c). Not installed. */
#ifndef METASTEP_META_INTERNAL_H
#define METASTEP_META_INTERNAL_H

#include "internal.h"

/*
 * One task's result of a method. The caller (ms_meta_value_and_grad in unroll.c) has
 * already checked the spec (ms_meta_check_spec) and resolved theta: theta[i] is the stored
 * value of parameter i (borrowed, never NULL). out is zeroed by the caller except
 * out->fail_step = -1, out->task = -1, out->log_loss and out->log_abs_grad[] = NaN;
 * the method sets value, status, fail_step, log_loss, log_abs_grad[i] (one-element
 * parameters) and grad[i] (new references, theta[i]'s shape) for each selected i
 * (sel[i] != 0), in terms of the STORED parameter (chain rule through MS_PARAM_LOG done).
 */
int ms__meta_stable(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                    ms_tensor *const *theta, const int *sel, ms_meta_out *out);
int ms__meta_exact(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                   ms_tensor *const *theta, const int *sel, ms_meta_out *out);

/*
 * Whether the stable method covers (spec, task) (1) or not (0). Never fails and leaves the
 * context's error untouched; when why != NULL and it does not apply, writes the reason
 * ("method 'stable' handles gd, momentum and nesterov, got adam") into why[0..size-1].
 * Includes the positive semi-definiteness check of a quadratic (cached on the objective).
 */
int ms__meta_stable_applies(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task, char *why,
                            size_t size);

/*
 * Whether the optimizer of spec is gd, momentum or nesterov with one-element parameters 'lr' or
 * 'log_lr' (and 'beta'), as the stable method and the forward fast path need (1), with the
 * parameters' indices (beta: -1 for gd) and whether the step size is stored as its log; 0 if
 * not. theta may be NULL (the spec's values are read).
 */
int ms__meta_linear_params(const ms_meta_spec *spec, ms_tensor *const *theta, int *lr, int *beta,
                           int *log_lr);

/*
 * The forward method's fast path (forward_fast.c): gd, momentum or nesterov (ms__meta_linear_
 * params) on an untraced quadratic or least-squares objective, a built-in meta-objective on the
 * training loss, no truncation, no freeze_norm, at least one selected parameter, nothing traced
 * by an outer level. Sets *handled to 1 and returns the method's status (out filled as the
 * generic forward mode fills it) when it covers (spec, task); else *handled = 0 and MS_OK with
 * out untouched.
 */
int ms__meta_forward_fast(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                          ms_tensor *const *theta, const int *sel, ms_meta_out *out, int *handled);

/* objective.c: how many eigendecompositions of the quadratic obj's H were computed (the cache
 * behind ms_objective_quadratic_eigh and ms_objective_check_psd: one per version of H). */
int64_t ms__objective_eigh_count(const ms_objective *obj);

/* optim.c: the optimizer's init (zeros like w when it has none) and one checked step that
 * replaces state[] (old entries released); the seed of a stochastic optimizer. */
int ms__optim_init(ms_ctx *ctx, ms_optim *opt, ms_tensor *w, ms_tensor *const *mapped,
                   ms_tensor **state);
int ms__optim_step(ms_ctx *ctx, ms_optim *opt, const ms_optim_io *io, ms_tensor **state,
                   ms_tensor **w_next);
uint64_t ms__optim_seed(const ms_optim *opt);
/* The optimizer's callback data when its step is `step` (how learned.c recognises its own
 * optimizers), else NULL. */
void *ms__optim_ud_if(const ms_optim *opt, int (*step)(ms_ctx *, void *, const ms_optim_io *,
                                                       ms_tensor **, ms_tensor **));

#endif
