/*
 * Objectives: a scalar function f of a vector w of fixed dimension d, with its gradient
 * and Hessian-vector products, behind one refcounted handle. The optimizers and
 * meta-objectives take an objective instead of three loose callbacks.
 *
 * An objective is defined by a table of callbacks (value, and optionally grad and hvp)
 * or made by one of the built-ins (quadratic, least squares, logistic regression). The
 * built-ins are written with the public differentiable operations, and callbacks run
 * with the caller's autodiff levels active, so a tape or forward level sees through
 * every call: differentiating ms_objective_grad with a tape gives the Hessian, and a
 * meta-gradient can flow through an unrolled optimizer that calls the objective.
 *
 * Missing callbacks are derived by the engine:
 *   grad == NULL: reverse mode over value (a tape pushed around one call of value);
 *   hvp  == NULL: forward mode over grad (the tangent of grad(w) along v).
 * A derived callback is only right if what it differentiates is computed with engine
 * operations from w: a grad written with raw loops over ms_tensor_data has no tangent
 * and would give H v = 0. Either write hvp too, or use engine ops.
 *
 * Every ms_objective_value/grad/hvp call checks its arguments (w and v must have shape
 * [d]: MS_ESHAPE "quadratic: w has shape [5], expected [20]") and what the callback
 * returned (value: one element, handed out as a 0-d tensor; grad and hvp: shape [d];
 * a wrong shape is MS_ESHAPE naming the objective and the callback, a callback that
 * returns MS_OK without a tensor is MS_ECALLBACK). A callback's failure status and
 * message propagate unchanged.
 */
#ifndef METASTEP_OBJECTIVE_H
#define METASTEP_OBJECTIVE_H

#include "metastep/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ms_objective ms_objective;

/*
 * Callbacks receive the context, def.ud and the borrowed point w ([dim], possibly
 * tracked by autodiff levels; never to be written in place). They set *out to a new
 * reference and return a status (on failure, after ms_ctx_fail, with *out NULL).
 */
typedef struct ms_objective_def {
  const char *name; /* for messages; copied (at most 63 bytes kept); NULL = "objective" */
  int64_t dim;      /* w has shape [dim]; dim >= 1 */
  /* f(w): a one-element tensor (0-d preferred). Required. */
  int (*value)(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out);
  /* grad f(w), shape [dim]. NULL: reverse-mode autodiff of value. */
  int (*grad)(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out);
  /* H(w) v for v of shape [dim], shape [dim]. NULL: forward-mode derivative of grad along v. */
  int (*hvp)(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *v, ms_tensor **out);
  /* Called once when the last reference is dropped; may be NULL. */
  void (*free_ud)(void *ud);
  void *ud;
  /* Samples (for stochastic optimizers): nsamples >= 1 and grad_batch set, or 0 and NULL.
   * grad_batch sets *out to the gradient of the objective restricted to the samples
   * idx[0..n-1] (0-based, repeats allowed), shape [dim]. */
  int64_t nsamples;
  int (*grad_batch)(ms_ctx *ctx, void *ud, ms_tensor *w, int64_t n, const int64_t *idx,
                    ms_tensor **out);
} ms_objective_def;

/*
 * Makes an objective from callbacks (def is copied). New reference in *out.
 * MS_EARG if value is NULL or dim < 1; then free_ud is not called (the caller still owns ud).
 */
int ms_objective_new(ms_ctx *ctx, const ms_objective_def *def, ms_objective **out);
/*
 * The same for callbacks that compute with raw loops over ms_tensor_data (a host's own C code;
 * w and v arrive contiguous): each callback becomes a custom primitive (autodiff.h) whose
 * derivative is the next callback (value -> grad -> hvp, H taken as symmetric), so reverse and
 * forward mode, meta-gradients through unrolls and meta-training see through them as through a
 * built-in. value and grad are required; without hvp, second derivatives (a meta-gradient
 * through the gradient steps) fail with MS_EARG naming the objective; third derivatives are
 * refused. MS_EARG when value or grad is NULL or dim < 1 (then free_ud is not called).
 */
int ms_objective_new_raw(ms_ctx *ctx, const ms_objective_def *def, ms_objective **out);
/* Adds a reference and returns obj. */
ms_objective *ms_objective_retain(ms_objective *obj);
/* Drops a reference (NULL is ignored); the last one calls free_ud and frees obj. */
void ms_objective_release(ms_objective *obj);

/* The objective's name (borrowed, valid while obj lives) and dimension d. Never fail. */
const char *ms_objective_name(const ms_objective *obj);
int64_t ms_objective_dim(const ms_objective *obj);

/* Which built-in an objective is. */
typedef enum ms_objective_kind {
  MS_OBJECTIVE_CUSTOM = 0,
  MS_OBJECTIVE_QUADRATIC,
  MS_OBJECTIVE_LEAST_SQUARES,
  MS_OBJECTIVE_LOGISTIC
} ms_objective_kind;
ms_objective_kind ms_objective_kind_of(const ms_objective *obj);

/* Number of samples (0 for an objective without samples). */
int64_t ms_objective_nsamples(const ms_objective *obj);
/* Gradient on the samples idx[0..n-1] (0-based; MS_EINDEX naming the entry when one is out
 * of range; MS_EARG when the objective has no samples). New reference, [d]. */
int ms_objective_grad_batch(ms_ctx *ctx, ms_objective *obj, ms_tensor *w, int64_t n,
                            const int64_t *idx, ms_tensor **out);
/* The same kind of objective on the samples idx (a least-squares or logistic objective of
 * n rows). New reference. MS_EARG for an objective that is not least squares or logistic. */
int ms_objective_subset(ms_ctx *ctx, const ms_objective *obj, int64_t n, const int64_t *idx,
                        ms_objective **out);

/*
 * Positive semi-definiteness of a quadratic's H, checked once per version of H (the eigenvalues
 * of ms_objective_quadratic_eigh, cached): MS_EARG "<what>: needs a positive semi-definite H
 * (smallest eigenvalue -3, largest 10)" when the smallest eigenvalue is below -1e-12 max(1,
 * |largest|). Least squares is always fine; other kinds are MS_EARG naming `what` and the kind.
 */
int ms_objective_check_psd(ms_ctx *ctx, ms_objective *obj, const char *what);
/* A quadratic's eigendecomposition, computed once and cached: eigenvalues ascending ([d])
 * and eigenvectors as columns ([d,d]); both BORROWED (valid while obj lives and H, the tensor
 * of ms_objective_quadratic_parts, is not written). Writing H in place (any in-place tensor
 * operation bumps its version) makes the next call, and the next PSD check, recompute it. */
int ms_objective_quadratic_eigh(ms_ctx *ctx, ms_objective *obj, ms_tensor **lambda, ms_tensor **Q);

/* f(w) as a 0-d tensor (new reference). w: [d], borrowed. */
int ms_objective_value(ms_ctx *ctx, ms_objective *obj, ms_tensor *w, ms_tensor **out);
/* grad f(w), [d] (new reference). */
int ms_objective_grad(ms_ctx *ctx, ms_objective *obj, ms_tensor *w, ms_tensor **out);
/* Hessian of f at w times v, [d] (new reference). w, v: [d], borrowed. */
int ms_objective_hvp(ms_ctx *ctx, ms_objective *obj, ms_tensor *w, ms_tensor *v, ms_tensor **out);

/*
 * Built-in objectives. Each keeps private copies of its tensor arguments (borrowed), so
 * later in-place writes to them do not change the objective; the copies are made with
 * the differentiable ms_tensor_copy, so an argument tracked on an active level stays
 * differentiable through the objective while that level is active.
 *
 * quadratic ("quadratic"):  f(w) = 1/2 (w - w*)^T H (w - w*) + fstar,
 *   grad H (w - w*), hvp H v.  H: [d,d], d >= 1, finite and symmetric
 *   (|H_ij - H_ji| <= 1e-10 max|H|, MS_EARG otherwise); wstar: [d] or NULL (= 0);
 *   fstar finite.
 */
int ms_objective_quadratic(ms_ctx *ctx, const ms_tensor *H, const ms_tensor *wstar, double fstar,
                           ms_objective **out);
/*
 * The parts of a quadratic: *H ([d,d]) and *wstar ([d], or NULL when none was given)
 * are BORROWED (valid while obj lives; do not write to them). Any out pointer may be
 * NULL. MS_EARG (message in obj's context) if obj is not a built-in quadratic.
 */
int ms_objective_quadratic_parts(const ms_objective *obj, ms_tensor **H, ms_tensor **wstar,
                                 double *fstar);
/*
 * least squares ("least_squares"):  f(w) = 1/(2n) |X w - y|^2,
 *   grad X^T (X w - y) / n, hvp X^T X v / n.  X: [n,d] with n, d >= 1; y: [n].
 */
int ms_objective_least_squares(ms_ctx *ctx, const ms_tensor *X, const ms_tensor *y,
                               ms_objective **out);
/* X and y of a least-squares or logistic objective (BORROWED; any may be NULL; l2 only for
 * logistic, 0 otherwise). MS_EARG if obj is neither. */
int ms_objective_data_parts(const ms_objective *obj, ms_tensor **X, ms_tensor **y, double *l2);
/*
 * L2-regularized logistic regression ("logistic"), labels y in {0, 1}:
 *   f(w) = mean_i softplus(-(2 y_i - 1) x_i^T w) + l2/2 |w|^2,
 *   grad X^T (-(2y - 1) sigmoid(-(2y - 1) X w)) / n + l2 w,
 *   hvp  X^T (p (1 - p) X v) / n + l2 v with p = sigmoid(X w).
 * X: [n,d] with n, d >= 1; y: [n], every entry exactly 0 or 1; l2 finite and >= 0.
 */
int ms_objective_logistic(ms_ctx *ctx, const ms_tensor *X, const ms_tensor *y, double l2,
                          ms_objective **out);

#ifdef __cplusplus
}
#endif
#endif
