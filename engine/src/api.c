/*
 * The public operations: each checks whether autodiff is watching and either calls the
 * raw kernel directly (nothing tracked: no overhead beyond one test) or goes through
 * ms__apply, which records it. An element-wise op is recorded under its family's primitive
 * (P_BINARY, P_UNARY, P_REDUCE) with the op in the attribute, so a new op needs nothing
 * here. Non-differentiable results (comparisons, argmax, sign, rounding: ad.h's
 * ms__*_constant) are constants and never recorded.
 */
#include <string.h>

#include "ad.h"

/* In check mode every op goes through ms__apply, which checks its output for NaN and inf. */
static int tracked(ms_ctx *ctx, int n, const ms_tensor *const *ts) {
  return ctx->check_numerics || (ctx->nlevels > 0 && ms__any_tracked(ctx, n, ts));
}

static ms_attr attr0(void) {
  ms_attr a;
  memset(&a, 0, sizeof a);
  return a;
}

int ms_binary(ms_ctx *ctx, ms_binop op, const ms_tensor *a, const ms_tensor *b, ms_tensor **out) {
  const ms_tensor *in[2] = {a, b};
  if (!tracked(ctx, 2, in) || ms__binop_constant(op)) return ms__binary(ctx, op, a, b, out);
  ms_attr at = attr0();
  at.binop = op;
  return ms__apply(ctx, P_BINARY, &at, 2, (ms_tensor *const *)in, out);
}

int ms_binary_scalar(ms_ctx *ctx, ms_binop op, const ms_tensor *a, double s, int scalar_left,
                     ms_tensor **out) {
  if (!tracked(ctx, 1, &a) || ms__binop_constant(op))
    return ms__binary_scalar(ctx, op, a, s, scalar_left, out);
  ms_tensor *c;
  int st = ms_tensor_scalar(ctx, s, &c);
  if (st) return st;
  st = scalar_left ? ms_binary(ctx, op, c, a, out) : ms_binary(ctx, op, a, c, out);
  ms_tensor_release(c);
  return st;
}

int ms_unary(ms_ctx *ctx, ms_unop op, const ms_tensor *a, ms_tensor **out) {
  if (!tracked(ctx, 1, &a) || ms__unop_constant(op)) return ms__unary(ctx, op, a, out);
  ms_attr at = attr0();
  at.unop = op;
  return ms__apply(ctx, P_UNARY, &at, 1, (ms_tensor *const *)&a, out);
}

int ms_reduce(ms_ctx *ctx, ms_redop op, const ms_tensor *a, int axis, int keepdim,
              ms_tensor **out) {
  if (!tracked(ctx, 1, &a) || ms__redop_constant(op))
    return ms__reduce(ctx, op, a, axis, keepdim, out);
  ms_attr at = attr0();
  at.redop = op;
  at.axis = axis;
  at.keepdim = keepdim;
  return ms__apply(ctx, P_REDUCE, &at, 1, (ms_tensor *const *)&a, out);
}

int ms_where(ms_ctx *ctx, const ms_tensor *cond, const ms_tensor *a, const ms_tensor *b,
             ms_tensor **out) {
  const ms_tensor *in[3] = {cond, a, b};
  if (!tracked(ctx, 2, in + 1)) return ms__where(ctx, cond, a, b, out);
  return ms__apply(ctx, P_WHERE, NULL, 3, (ms_tensor *const *)in, out);
}

int ms_clamp(ms_ctx *ctx, const ms_tensor *a, double lo, double hi, ms_tensor **out) {
  if (!tracked(ctx, 1, &a)) return ms__clamp(ctx, a, lo, hi, out);
  ms_attr at = attr0();
  at.lo = lo;
  at.hi = hi;
  return ms__apply(ctx, P_CLAMP, &at, 1, (ms_tensor *const *)&a, out);
}

#define PRODUCT(NAME, PRIM)                                                        \
  int NAME(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out) { \
    const ms_tensor *in[2] = {a, b};                                               \
    if (!tracked(ctx, 2, in)) return ms__##NAME##_raw(ctx, a, b, out);             \
    return ms__apply(ctx, PRIM, NULL, 2, (ms_tensor *const *)in, out);             \
  }

#define ms__ms_dot_raw ms__dot
#define ms__ms_matvec_raw ms__matvec
#define ms__ms_matmul_raw ms__matmul
#define ms__ms_outer_raw ms__outer
PRODUCT(ms_dot, P_DOT)
PRODUCT(ms_matvec, P_MATVEC)
PRODUCT(ms_matmul, P_MATMUL)
PRODUCT(ms_outer, P_OUTER)

int ms_tensor_diag(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out) {
  if (!tracked(ctx, 1, &t)) return ms__diag(ctx, t, out);
  return ms__apply(ctx, P_DIAG, NULL, 1, (ms_tensor *const *)&t, out);
}

int ms_tensor_copy(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out) {
  if (!tracked(ctx, 1, &t)) return ms__copy(ctx, t, out);
  return ms__apply(ctx, P_COPY, NULL, 1, (ms_tensor *const *)&t, out);
}

int ms_tensor_contiguous(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out) {
  if (ms_tensor_is_contiguous(t) || !tracked(ctx, 1, &t)) return ms__contiguous(ctx, t, out);
  return ms__apply(ctx, P_COPY, NULL, 1, (ms_tensor *const *)&t, out);
}

static int reshape_like(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape,
                        int is_view, ms_tensor **out) {
  if (!tracked(ctx, 1, &t))
    return is_view ? ms__view(ctx, t, ndim, shape, out) : ms__reshape(ctx, t, ndim, shape, out);
  if (ndim < 0 || ndim > MS_MAXDIM)
    return ms_ctx_fail(ctx, MS_EARG, "%s: expected at most %d dimensions, got %d",
                       is_view ? "view" : "reshape", MS_MAXDIM, ndim);
  ms_attr at = attr0();
  at.reshape = is_view ? RESHAPE_VIEW : RESHAPE;
  at.ndim = ndim;
  if (ndim) memcpy(at.shape, shape, sizeof(int64_t) * (size_t)ndim);
  return ms__apply(ctx, P_RESHAPE, &at, 1, (ms_tensor *const *)&t, out);
}

int ms_tensor_view(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape,
                   ms_tensor **out) {
  return reshape_like(ctx, t, ndim, shape, 1, out);
}

int ms_tensor_reshape(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape,
                      ms_tensor **out) {
  return reshape_like(ctx, t, ndim, shape, 0, out);
}

int ms_tensor_transpose(ms_ctx *ctx, const ms_tensor *t, int axis0, int axis1, ms_tensor **out) {
  if (!tracked(ctx, 1, &t)) return ms__transpose(ctx, t, axis0, axis1, out);
  ms_attr at = attr0();
  at.axis = axis0;
  at.axis2 = axis1;
  return ms__apply(ctx, P_TRANSPOSE, &at, 1, (ms_tensor *const *)&t, out);
}

int ms_tensor_permute(ms_ctx *ctx, const ms_tensor *t, const int *perm, ms_tensor **out) {
  if (!tracked(ctx, 1, &t)) return ms__permute(ctx, t, perm, out);
  ms_attr at = attr0();
  if (t->ndim) memcpy(at.perm, perm, sizeof(int) * (size_t)t->ndim);
  return ms__apply(ctx, P_PERMUTE, &at, 1, (ms_tensor *const *)&t, out);
}

int ms_tensor_slice(ms_ctx *ctx, const ms_tensor *t, int axis, int64_t start, int64_t stop,
                    int64_t step, ms_tensor **out) {
  if (!tracked(ctx, 1, &t)) return ms__slice(ctx, t, axis, start, stop, step, out);
  ms_attr at = attr0();
  at.axis = axis, at.start = start, at.stop = stop, at.step = step;
  return ms__apply(ctx, P_SLICE, &at, 1, (ms_tensor *const *)&t, out);
}

/* A tracked select is a one-element slice followed by a reshape that drops the axis (as a
 * view: the slice of a column is strided, so it cannot go through ms_tensor_view). */
int ms_tensor_select(ms_ctx *ctx, const ms_tensor *t, int axis, int64_t index, ms_tensor **out) {
  if (!tracked(ctx, 1, &t)) return ms__select(ctx, t, axis, index, out);
  int a;
  *out = NULL;
  int st = ms__axis(ctx, "select", axis, t->ndim, &a);
  if (st) return st;
  if (index < 0 || index >= t->shape[a])
    return ms_ctx_fail(ctx, MS_EINDEX, "select: index %lld out of range for axis %d of size %lld",
                       (long long)index, a, (long long)t->shape[a]);
  ms_tensor *s;
  st = ms_tensor_slice(ctx, t, a, index, index + 1, 1, &s);
  if (st) return st;
  ms_attr at = attr0();
  at.reshape = RESHAPE_DROP_AXIS;
  at.axis = a;
  for (int d = 0; d < t->ndim; d++)
    if (d != a) at.shape[at.ndim++] = t->shape[d];
  st = ms__apply(ctx, P_RESHAPE, &at, 1, &s, out);
  ms_tensor_release(s);
  return st;
}

int ms_tensor_expand(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape,
                     ms_tensor **out) {
  if (!tracked(ctx, 1, &t)) return ms__expand(ctx, t, ndim, shape, out);
  int st = ms__shape_numel(ctx, "expand", ndim, shape, NULL);
  if (st) return st;
  ms_attr at = attr0();
  at.ndim = ndim;
  if (ndim) memcpy(at.shape, shape, sizeof(int64_t) * (size_t)ndim);
  return ms__apply(ctx, P_EXPAND, &at, 1, (ms_tensor *const *)&t, out);
}

int ms_tensor_cat(ms_ctx *ctx, int n, ms_tensor *const *ts, int axis, ms_tensor **out) {
  if (n < 1 || !tracked(ctx, n, (const ms_tensor *const *)ts))
    return ms__cat(ctx, n, ts, axis, out);
  ms_attr at = attr0();
  at.ncat = n;
  at.axis = axis;
  return ms__apply(ctx, P_CAT, &at, n, ts, out);
}

int ms_sum_to(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape, ms_tensor **out) {
  *out = NULL;
  int st = ms__shape_numel(ctx, "sum_to", ndim, shape, NULL);
  if (st) return st;
  ms_attr at = attr0();
  at.ndim = ndim;
  if (ndim) memcpy(at.shape, shape, sizeof(int64_t) * (size_t)ndim);
  return ms__apply(ctx, P_SUM_TO, &at, 1, (ms_tensor *const *)&t, out);
}

int ms_log_softmax(ms_ctx *ctx, const ms_tensor *x, int axis, ms_tensor **out) {
  int a;
  *out = NULL;
  int st = ms__axis(ctx, "log_softmax", axis, x->ndim, &a);
  if (st) return st;
  ms_attr at = attr0();
  at.axis = a;
  return ms__apply(ctx, P_LOG_SOFTMAX, &at, 1, (ms_tensor *const *)&x, out);
}

int ms_softmax_xent(ms_ctx *ctx, const ms_tensor *logits, const ms_tensor *labels,
                    ms_tensor **out) {
  const ms_tensor *in[2] = {logits, labels};
  *out = NULL;
  int st = ms__not_differentiable(ctx, "softmax_xent (labels)", 1, &labels);
  if (st) return st;
  return ms__apply(ctx, P_SOFTMAX_XENT, NULL, 2, (ms_tensor *const *)in, out);
}
