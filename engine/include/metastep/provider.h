/*
 * Step-size providers, for a host that keeps its own training loop: "which step size (and
 * momentum, ...) at step t", from a tuned schedule, a meta-trained optimizer, or an online
 * tuner that learns the step size from the gradients the host passes in.
 *
 * The answer is a plain struct, the shape of the arguments such loops already take: llm.c's
 *   ms_step_params p;  ms_provider_get(prov, t, &p);
 *   gpt2_update(&model, p.lr, p.beta1, p.beta2, p.eps, p.weight_decay, t);
 * or, for a callback that returns the settings before each step (ggml-opt's get-params
 * callback takes a void *userdata), ms_provider_next(prov), which answers for the next step.
 *
 * A provider belongs to one context and one loop (it keeps the online tuner's state); it is
 * not shared between threads.
 */
#ifndef METASTEP_PROVIDER_H
#define METASTEP_PROVIDER_H

#include "metastep/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ms_step_params {
  double lr;           /* the step size at this step (the schedule's factor applied) */
  double beta1;        /* momentum coefficient (momentum, nesterov) or Adam's beta1 */
  double beta2;        /* Adam's beta2, RMSprop's rho */
  double eps;          /* Adam's and RMSprop's epsilon */
  double weight_decay; /* passed through from the base settings */
  int64_t t;           /* the step these settings are for (1-based) */
} ms_step_params;

typedef struct ms_provider ms_provider;

/*
 * A fixed schedule: step t gets base with lr = base->lr * factors[min(t, n) - 1] (the last
 * factor repeats; n = 0: base->lr at every step). factors are copied; each finite and >= 0,
 * base->lr finite and >= 0 (MS_EARG naming the entry otherwise).
 */
int ms_provider_schedule(ms_ctx *ctx, const ms_step_params *base, int64_t n, const double *factors,
                         ms_provider **out);

/*
 * A tuned optimizer's settings: theta (stored values, e.g. ms_train_result.theta; NULL = the
 * initial values) of a built-in optimizer with one-element meta-parameters, mapped (log_lr ->
 * lr = exp(log_lr)), with the optimizer's schedule factor at step t on lr. beta1 is momentum's
 * beta or Adam's beta1, beta2 Adam's beta2 or RMSprop's rho, eps theirs; weight_decay 0.
 * MS_EARG for a custom optimizer or a meta-parameter with more than one entry (step such an
 * optimizer with ms_optim_state_step_buffer instead). opt is retained.
 */
int ms_provider_from_optim(ms_ctx *ctx, ms_optim *opt, ms_tensor *const *theta, ms_provider **out);

/*
 * Online tuning by hypergradient descent on the step size (Baydin et al., "Online learning
 * rate adaptation with hypergradient descent", 2018). The host steps w_t = w_{t-1} - lr_t u_t
 * along a direction u_t (the gradient for plain gradient descent, Adam's mhat/(sqrt(vhat) +
 * eps) for Adam). d f(w_t) / d lr = -g_{t+1} . u_t, so when the host passes the gradient
 * g_{t+1} at the new point (ms_provider_observe), the step size moves against that derivative:
 *   lr <- clamp(lr + hyper_lr * g_{t+1} . u_t, lr_min, lr_max).
 * base->lr is the first step size (> 0); hyper_lr >= 0 (0: constant); 0 <= lr_min <= lr_max
 * (lr_max = 0: no upper bound).
 */
int ms_provider_hypergradient(ms_ctx *ctx, const ms_step_params *base, double hyper_lr,
                              double lr_min, double lr_max, ms_provider **out);

/*
 * Tells the provider the gradient g (n doubles) at the current point w_t, before asking for
 * this step's settings, with u (n doubles) the direction of the step that led to w_t
 * (w_t = w_{t-1} - lr u; Adam's mhat/(sqrt(vhat) + eps)), or NULL for plain gradient descent,
 * where u is the previous gradient (kept by the provider; nothing happens on the first call).
 * The hypergradient tuner updates lr from g . u; the other providers ignore the call. n must
 * stay the same across calls (MS_ESHAPE); a non-finite entry is MS_EARG naming it, the tuner
 * unchanged.
 */
int ms_provider_observe(ms_provider *p, int64_t n, const double *g, const double *u);

/* The settings for step t >= 1 (MS_EARG otherwise; *out untouched on failure). For the online
 * tuner, the step size after the gradients observed so far, whatever t. */
int ms_provider_get(ms_provider *p, int64_t t, ms_step_params *out);

/* Callback-shaped: the settings for the next step (1, 2, ... per call), through a void *.
 * On a failure (a schedule callback's error) lr is NaN and ms_ctx_error has the message. */
ms_step_params ms_provider_next(void *provider);

/* Steps answered by ms_provider_next so far, and the provider's context. */
int64_t ms_provider_steps(const ms_provider *p);
ms_ctx *ms_provider_ctx(const ms_provider *p);

void ms_provider_free(ms_provider *p);

#ifdef __cplusplus
}
#endif
#endif
