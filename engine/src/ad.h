/*
 * Autodiff internals: the primitive table, the attributes a node keeps, and the raw
 * (never recorded) kernels that primitives' forward functions call.
 */
#ifndef METASTEP_AD_H
#define METASTEP_AD_H

#include "internal.h"
#include "metastep/autodiff.h"

/* ---- raw kernels (ops.c, linalg.c, tensor.c): compute only, never record ---- */
int ms__binary(ms_ctx *ctx, ms_binop op, const ms_tensor *a, const ms_tensor *b, ms_tensor **out);
int ms__binary_scalar(ms_ctx *ctx, ms_binop op, const ms_tensor *a, double s, int scalar_left,
                      ms_tensor **out);
int ms__unary(ms_ctx *ctx, ms_unop op, const ms_tensor *a, ms_tensor **out);
int ms__reduce(ms_ctx *ctx, ms_redop op, const ms_tensor *a, int axis, int keepdim,
               ms_tensor **out);
int ms__where(ms_ctx *ctx, const ms_tensor *cond, const ms_tensor *a, const ms_tensor *b,
              ms_tensor **out);
int ms__clamp(ms_ctx *ctx, const ms_tensor *a, double lo, double hi, ms_tensor **out);
int ms__dot(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out);
int ms__matvec(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *x, ms_tensor **out);
int ms__matmul(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out);
int ms__outer(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out);
int ms__diag(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out);
int ms__copy(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out);
int ms__contiguous(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out);
int ms__view(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape, ms_tensor **out);
int ms__reshape(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape, ms_tensor **out);
int ms__transpose(ms_ctx *ctx, const ms_tensor *t, int axis0, int axis1, ms_tensor **out);
int ms__permute(ms_ctx *ctx, const ms_tensor *t, const int *perm, ms_tensor **out);
int ms__slice(ms_ctx *ctx, const ms_tensor *t, int axis, int64_t start, int64_t stop,
              int64_t step, ms_tensor **out);
int ms__select(ms_ctx *ctx, const ms_tensor *t, int axis, int64_t index, ms_tensor **out);
int ms__expand(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape, ms_tensor **out);
int ms__cat(ms_ctx *ctx, int n, ms_tensor *const *ts, int axis, ms_tensor **out);

/* ---- primitives ---- */
typedef enum ms_prim {
  P_LEAF, P_IDENTITY, P_COPY,
  /* element-wise binary, broadcasting (attr.code = ms_binop) */
  P_ADD, P_SUB, P_MUL, P_DIV, P_POW, P_MAXIMUM, P_MINIMUM, P_ATAN2,
  /* element-wise unary (attr.code = ms_unop) */
  P_NEG, P_ABS, P_EXP, P_LOG, P_LOG1P, P_EXPM1, P_SQRT, P_SQUARE, P_RECIPROCAL, P_TANH,
  P_SIGMOID, P_RELU, P_SOFTPLUS, P_SIN, P_COS,
  /* reductions (attr.code = ms_redop, attr.axis, attr.keepdim) */
  P_SUM, P_MEAN, P_MAX, P_MIN, P_PROD, P_NORM, P_LOGSUMEXP,
  P_WHERE, P_CLAMP,
  P_DOT, P_MATVEC, P_MATMUL, P_OUTER, P_DIAG,
  P_RESHAPE, P_TRANSPOSE, P_PERMUTE, P_SLICE, P_UNSLICE, P_EXPAND, P_SUM_TO, P_CAT,
  P_LOG_SOFTMAX, P_SOFTMAX_XENT,
  P_CUSTOM,
  P_COUNT
} ms_prim;

/* What a node needs besides its inputs to re-run or differentiate its primitive. */
typedef struct ms_attr {
  int code;          /* ms_binop / ms_unop / ms_redop for families */
  int axis, axis2, keepdim;
  int64_t start, stop, step, index;
  double lo, hi;
  int ndim;          /* target shape (reshape, expand, sum_to) */
  int64_t shape[MS_MAXDIM];
  int perm[MS_MAXDIM];
  ms_custom *custom; /* retained by the node */
} ms_attr;

typedef int (*ms_forward_fn)(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in,
                             ms_tensor **out);
/* Sets gin[i] (new reference or NULL = zero) for every i with need[i]. */
typedef int (*ms_vjp_fn)(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                         ms_tensor *gout, const int *need, ms_tensor **gin);
/* Sets *tout (new reference, or NULL = zero) from input tangents tin[i] (NULL = zero). */
typedef int (*ms_jvp_fn)(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in,
                         ms_tensor *const *tin, ms_tensor *out, ms_tensor **tout);

typedef struct ms_prim_def {
  const char *name;
  int nin;      /* -1: variable (cat, custom) */
  int code;     /* family code passed in attr.code */
  ms_forward_fn forward;
  ms_vjp_fn vjp;
  ms_jvp_fn jvp;
} ms_prim_def;

/* The one table declaring every primitive (ad_rules.c). */
extern const ms_prim_def ms__prims[P_COUNT];

/*
 * Runs primitive p on nin inputs: forward with raw kernels, then records on every
 * active level where an input is tracked. *out is a new reference.
 */
int ms__apply(ms_ctx *ctx, ms_prim p, const ms_attr *attr, int nin, ms_tensor *const *in,
              ms_tensor **out);
/* Nonzero if any of the tensors is tracked on an active level. */
int ms__any_tracked(ms_ctx *ctx, int n, const ms_tensor *const *ts);
/* Fails with MS_EARG if t is tracked on an active level (for non-differentiable ops). */
int ms__not_differentiable(ms_ctx *ctx, const char *what, int n, const ms_tensor *const *ts);
/* Custom primitive hooks (ad.c), used by the P_CUSTOM row of the table. */
const char *ms__custom_name(const ms_custom *op);
int ms__custom_forward(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out);
int ms__custom_vjp(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                   ms_tensor *gout, const int *need, ms_tensor **gin);
int ms__custom_jvp(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                   ms_tensor *out, ms_tensor **tout);
/* Releases a tensor's autodiff tracking (tangents). Called by ms_tensor_release. */
void ms__track_clear(ms_tensor *t);

#endif
