/*
 * Element-wise arithmetic with NumPy broadcasting, unary math and reductions.
 * All results are fresh, contiguous tensors (new references); inputs are borrowed.
 * Broadcasting aligns shapes from the right; sizes must match or be 1
 * ("add: shapes [3,4] and [5] do not broadcast").
 */
#ifndef METASTEP_OPS_H
#define METASTEP_OPS_H

#include "metastep/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Adding an op to one of these enums: see the top of engine/src/kernels.h (its name, its
 * kernel and, if differentiable, its derivative rule; nothing else). */
typedef enum ms_binop {
  MS_ADD,
  MS_SUB,
  MS_MUL,
  MS_DIV,
  MS_POW,
  MS_MAXIMUM,
  MS_MINIMUM,
  MS_ATAN2,
  MS_LT,
  MS_LE,
  MS_GT,
  MS_GE,
  MS_EQ,
  MS_NE, /* comparisons give 1.0 or 0.0 */
  MS_BINOP_COUNT
} ms_binop;

typedef enum ms_unop {
  MS_NEG,
  MS_ABS,
  MS_EXP,
  MS_LOG,
  MS_LOG1P,
  MS_EXPM1,
  MS_SQRT,
  MS_SQUARE,
  MS_RECIPROCAL,
  MS_TANH,
  MS_SIGMOID,
  MS_RELU,
  MS_SOFTPLUS,
  MS_SIN,
  MS_COS,
  MS_SIGN,
  MS_FLOOR,
  MS_CEIL,
  MS_ROUND,
  MS_ISFINITE, /* 1.0 where finite */
  MS_UNOP_COUNT
} ms_unop;

typedef enum ms_redop {
  MS_SUM,
  MS_MEAN,
  MS_MAX,
  MS_MIN,
  MS_PROD,
  MS_NORM, /* 2-norm */
  MS_ARGMAX,
  MS_ARGMIN,    /* 0-based index as a double */
  MS_LOGSUMEXP, /* log(sum(exp(x))), computed stably */
  MS_REDOP_COUNT
} ms_redop;

/* Static names ("add", "exp", "sum"), for messages and bindings. */
const char *ms_binop_name(ms_binop op);
const char *ms_unop_name(ms_unop op);
const char *ms_redop_name(ms_redop op);

/* Broadcast shape of two shapes; MS_ESHAPE (message names `what`) if they do not broadcast. */
int ms_broadcast_shape(ms_ctx *ctx, const char *what, int nda, const int64_t *sa, int ndb,
                       const int64_t *sb, int *nd, int64_t *shape);

int ms_binary(ms_ctx *ctx, ms_binop op, const ms_tensor *a, const ms_tensor *b, ms_tensor **out);
/* a op s (or s op a when scalar_left) without materializing the scalar. */
int ms_binary_scalar(ms_ctx *ctx, ms_binop op, const ms_tensor *a, double s, int scalar_left,
                     ms_tensor **out);
int ms_unary(ms_ctx *ctx, ms_unop op, const ms_tensor *a, ms_tensor **out);
/* Reduces along axis (keepdim keeps it with size 1), or over all elements when axis == MS_ALL. */
#define MS_ALL (-1000)
int ms_reduce(ms_ctx *ctx, ms_redop op, const ms_tensor *a, int axis, int keepdim, ms_tensor **out);
/* cond != 0 ? a : b, all three broadcast together. */
int ms_where(ms_ctx *ctx, const ms_tensor *cond, const ms_tensor *a, const ms_tensor *b,
             ms_tensor **out);
/* min(max(a, lo), hi). */
int ms_clamp(ms_ctx *ctx, const ms_tensor *a, double lo, double hi, ms_tensor **out);

/* 1 if every element is finite, 0 otherwise (never fails). */
int ms_tensor_all_finite(const ms_tensor *t);
/* Largest |a - b| over broadcast elements (NaN if any pair has a NaN). */
int ms_max_abs_diff(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, double *out);

#ifdef __cplusplus
}
#endif
#endif
