/*
 * Automatic differentiation: nested reverse-mode tapes and forward-mode levels.
 *
 * Levels live on a stack in the context (no global current tape). While a level is
 * active, every differentiable engine operation whose inputs are tracked on that
 * level is recorded: on a reverse tape as a node of a Wengert list appended in
 * execution order; on a forward level by computing the output's tangent at once.
 * Backward rules and tangent rules are written with the same differentiable
 * operations, so derivatives of derivatives work to any order: a backward pass runs
 * with its own tape already popped, and what it computes is recorded on the levels
 * outside it.
 *
 * Saved tensors carry their storage's version stamp; a backward pass that finds a
 * saved tensor modified in place fails with MS_ESTATE instead of returning a wrong
 * number.
 *
 * Typical reverse-mode use (grad of y = f(x)):
 *   ms_level *tape; ms_tensor *xw, *y, *g;
 *   ms_ad_push(ctx, MS_AD_REVERSE, &tape);
 *   ms_ad_watch(ctx, tape, x, NULL, &xw);   // xw: x tracked as a leaf
 *   f(ctx, xw, &y);                          // any engine ops
 *   ms_ad_pop(ctx, tape);
 *   ms_ad_gradient(ctx, tape, y, NULL, 1, &xw, &g);
 *   ms_ad_free(tape); release xw, y, g.
 */
#ifndef METASTEP_AUTODIFF_H
#define METASTEP_AUTODIFF_H

#include "metastep/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MS_AD_MAXLEVELS 8

typedef enum ms_ad_mode { MS_AD_REVERSE = 1, MS_AD_FORWARD = 2 } ms_ad_mode;

typedef struct ms_level ms_level;

/* Pushes a new innermost level (new reference in *out, freed with ms_ad_free). */
int ms_ad_push(ms_ctx *ctx, ms_ad_mode mode, ms_level **out);
/* Pops level, which must be the innermost active one. Its recorded nodes are kept. */
int ms_ad_pop(ms_ctx *ctx, ms_level *level);
/* Frees a level (popping it first if still active, with everything inside it). */
void ms_ad_free(ms_level *level);
/* Number of active levels. */
int ms_ad_depth(const ms_ctx *ctx);
/* Number of nodes recorded on a reverse tape. */
int64_t ms_ad_size(const ms_level *level);

/*
 * Starts tracking x on the active level: *out is a new tensor sharing x's storage,
 * tracked as a leaf of level (and as an identity of x on the levels outside it).
 * For a forward level, tangent (same shape as x; NULL = zeros) is its tangent.
 */
int ms_ad_watch(ms_ctx *ctx, ms_level *level, ms_tensor *x, ms_tensor *tangent, ms_tensor **out);
/* Nonzero if t is tracked on level. */
int ms_ad_is_tracked(const ms_level *level, const ms_tensor *t);
/* Nonzero if t is tracked on any active level (its derivative matters right now). */
int ms_ad_is_traced(ms_ctx *ctx, const ms_tensor *t);

/*
 * Reverse mode, after ms_ad_pop: gradients of y with respect to xs[0..n-1] (tensors
 * returned by ms_ad_watch on this tape, or any tensor recorded on it). seed is dy
 * (NULL: y must have one element and dy = 1). grads[i] is a new reference, zeros for
 * an x that y does not depend on. Runs with the outer levels active, so the
 * gradients are themselves differentiable.
 */
int ms_ad_gradient(ms_ctx *ctx, ms_level *tape, ms_tensor *y, ms_tensor *seed, int n,
                   ms_tensor *const *xs, ms_tensor **grads);

/* Forward mode: the tangent of y on level (new reference; zeros if y is untracked). */
int ms_ad_tangent(ms_ctx *ctx, ms_level *level, ms_tensor *y, ms_tensor **out);

/* A copy of x that no level tracks (gradient zero through it). New reference. */
int ms_stop_gradient(ms_ctx *ctx, ms_tensor *x, ms_tensor **out);

/*
 * Custom primitives. forward computes outputs from inputs with any engine ops (it runs
 * with no level active, so it is not recorded). vjp receives the inputs, the output and
 * the output's cotangent and sets gin[i] (new references, NULL = zero) for the inputs
 * where need[i] is nonzero. jvp receives input tangents (NULL = zero) and sets the
 * output tangent. vjp and jvp must use engine ops (they are recorded on outer levels).
 * A rule returning a wrong shape is caught: MS_ESHAPE naming the primitive and input.
 * A callback's failure status and message propagate.
 * Limitation: forward and jvp run with the active levels hidden (the context's level count
 * is lowered for the call), so they must not push, pop or free levels while levels are
 * active; the Lua bindings refuse that with an error. (A save/restore of the hidden
 * levels would lift this; not done yet.)
 */
typedef struct ms_custom_op {
  const char *name;
  int nin; /* number of inputs, 1..16 */
  int (*forward)(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor **out);
  int (*vjp)(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *out, ms_tensor *gout,
             const int *need, ms_tensor **gin);
  int (*jvp)(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *const *tin, ms_tensor *out,
             ms_tensor **tout);
  void (*free_ud)(void *ud); /* called when the registration is dropped; may be NULL */
  void *ud;
} ms_custom_op;

typedef struct ms_custom ms_custom;
/* Registers a custom primitive (the struct is copied; name is copied). New reference. */
int ms_custom_new(ms_ctx *ctx, const ms_custom_op *def, ms_custom **out);
ms_custom *ms_custom_retain(ms_custom *op);
void ms_custom_release(ms_custom *op);
/* Applies the primitive to op->nin inputs; recorded on active levels like a built-in. */
int ms_custom_apply(ms_ctx *ctx, ms_custom *op, ms_tensor *const *in, ms_tensor **out);

/*
 * Differentiable structural and loss primitives (the element-wise, reduction, view and
 * product operations of ops.h, linalg.h and tensor.h are all differentiable too).
 */
/* Sums t over broadcast axes down to shape (inverse of ms_tensor_expand). */
int ms_sum_to(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape, ms_tensor **out);
/* log(softmax(x)) along axis, computed stably. */
int ms_log_softmax(ms_ctx *ctx, const ms_tensor *x, int axis, ms_tensor **out);
/* Softmax cross-entropy: logits [n,k] and labels [n] holding class indices 0..k-1
 * (as doubles) -> per-example losses [n]. A label out of range is MS_EINDEX. */
int ms_softmax_xent(ms_ctx *ctx, const ms_tensor *logits, const ms_tensor *labels, ms_tensor **out);

/*
 * One-call gradient of a scalar C function f(x) (a host's convenience): runs f once on a
 * tape around x and back-propagates. *value (0-d, may be NULL) and *grad (x's shape) are new
 * references. f sets *y to a new one-element tensor computed with engine ops from x.
 * Works inside outer levels too (the result is then differentiable again).
 */
int ms_grad(ms_ctx *ctx, int (*f)(ms_ctx *ctx, void *ud, ms_tensor *x, ms_tensor **y), void *ud,
            ms_tensor *x, ms_tensor **value, ms_tensor **grad);

/* Central-difference gradient check of a scalar function: see ms_check_grad in Lua. */

#ifdef __cplusplus
}
#endif
#endif
