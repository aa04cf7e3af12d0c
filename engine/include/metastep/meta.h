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

#include "metastep/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ms_meta_kind { MS_META_NAIVE, MS_META_LOG, MS_META_SUM, MS_META_LOGSUM } ms_meta_kind;

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
  double value;        /* the meta-objective (may be +-inf when not representable) */
  double log_loss;     /* log f(w_T) (NAIVE, LOG) or log sum_t f(w_t) (SUM, LOGSUM) */
  int nparams;
  double grad[MS_META_MAXPARAMS];         /* d value / d theta_j */
  double log_abs_grad[MS_META_MAXPARAMS]; /* log |d value / d theta_j| */
  int status;          /* ms_meta_status */
  int64_t fail_step;   /* first step where the status arose, -1 if none */
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
 * (lr) or (lr, beta). The state (w - w*, m) is kept as exp(l) * u with |u| = 1, and
 * its tangents as exp(l) * v, renormalized every step, so nothing over- or underflows
 * whatever T and the step size. Checks ms_ctx_check_interrupt every 4096 steps.
 */
int ms_meta_stable_quadratic(ms_ctx *ctx, const ms_tensor *H, const ms_tensor *w0,
                             const ms_tensor *wstar, const ms_meta_optimizer *opt, int64_t T,
                             ms_meta_kind kind, ms_meta_result *res);

#ifdef __cplusplus
}
#endif
#endif
