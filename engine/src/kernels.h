/*
 * The raw compute layer: kernels that compute a result and nothing else. They never record
 * on an autodiff level and never look at one; the public operations (api.c) and the
 * primitives' forward functions (ad_rules.c) call them.
 *
 * Headers, each including the one before: internal.h (context, tensor) < kernels.h (this
 * file) < ad.h (autodiff: primitives, attributes, recording) < api.c (the public ops).
 *
 * Adding a differentiable element-wise op takes three edits:
 *   1. its enum entry in metastep/ops.h (ms_binop, ms_unop or ms_redop) and its name in the
 *      matching name table in ops.c ([MS_FOO] = "foo"; a static assertion checks the size);
 *   2. its kernel: a case in ops.c's binary_kernel, unary_row or reduce_row (a reduction
 *      with no value on an empty input also goes in needs_nonempty);
 *   3. its derivative rule: a case in ad_rules.c's binary_partials, unary_deriv or
 *      reduce_weights.
 * Nothing else: the public op (api.c) records it under its family's primitive (P_BINARY,
 * P_UNARY, P_REDUCE) with the op in the attribute (attr.binop, attr.unop, attr.redop).
 * An op whose result is a constant (a comparison, a rounding) takes, instead of a rule, its
 * case in ad.h's ms__binop_constant, ms__unop_constant or ms__redop_constant: the
 * public op then never records it. The kernel switches have no default, so -Wswitch
 * (an error under -Werror) reports an op without a kernel; an op without a rule fails
 * with "<name>: no derivative" when differentiated. (The Lua binding registers every op by
 * its name, ms.core.foo and t:foo(); lua/metastep/init.lua re-exports a list of them.)
 */
#ifndef METASTEP_KERNELS_H
#define METASTEP_KERNELS_H

#include "internal.h"

/* ---- element-wise and reductions (ops.c) ---- */
int ms__binary(ms_ctx *ctx, ms_binop op, const ms_tensor *a, const ms_tensor *b, ms_tensor **out);
int ms__binary_scalar(ms_ctx *ctx, ms_binop op, const ms_tensor *a, double s, int scalar_left,
                      ms_tensor **out);
int ms__unary(ms_ctx *ctx, ms_unop op, const ms_tensor *a, ms_tensor **out);
int ms__reduce(ms_ctx *ctx, ms_redop op, const ms_tensor *a, int axis, int keepdim,
               ms_tensor **out);
int ms__where(ms_ctx *ctx, const ms_tensor *cond, const ms_tensor *a, const ms_tensor *b,
              ms_tensor **out);
int ms__clamp(ms_ctx *ctx, const ms_tensor *a, double lo, double hi, ms_tensor **out);

/* ---- products (linalg.c) ---- */
int ms__dot(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out);
int ms__matvec(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *x, ms_tensor **out);
int ms__matmul(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out);
int ms__outer(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out);
/* For loops that keep their own buffers (unroll.c's reverse mode on a quadratic): y = alpha
 * op(a) x + beta y through dgemv, op(a) = a or (trans) a^T, with a a contiguous [m,n] matrix
 * (m, n <= INT_MAX) and x, y contiguous; counted and threaded as every product. And x . y. */
void ms__gemv_raw(ms_ctx *ctx, const ms_tensor *a, int trans, double alpha, const double *x,
                  double beta, double *y);
double ms__dot_raw(int64_t n, const double *x, const double *y);
/* y = alpha a x + beta y through dsymv for a contiguous [n,n] a that equals its transpose
 * exactly (reads its lower triangle: half the bytes of ms__gemv_raw); counted and threaded as
 * every product. */
void ms__symv_raw(ms_ctx *ctx, const ms_tensor *a, double alpha, const double *x, double beta,
                  double *y);

/* ---- copies and views (tensor.c) ---- */
int ms__diag(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out);
int ms__copy(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out);
int ms__contiguous(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out);
int ms__view(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape, ms_tensor **out);
int ms__reshape(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape, ms_tensor **out);
int ms__transpose(ms_ctx *ctx, const ms_tensor *t, int axis0, int axis1, ms_tensor **out);
int ms__permute(ms_ctx *ctx, const ms_tensor *t, const int *perm, ms_tensor **out);
int ms__slice(ms_ctx *ctx, const ms_tensor *t, int axis, int64_t start, int64_t stop, int64_t step,
              ms_tensor **out);
int ms__select(ms_ctx *ctx, const ms_tensor *t, int axis, int64_t index, ms_tensor **out);
int ms__expand(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape, ms_tensor **out);
int ms__cat(ms_ctx *ctx, int n, ms_tensor *const *ts, int axis, ms_tensor **out);

#endif
