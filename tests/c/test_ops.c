/*
 * Element-wise ops, broadcasting, unary math and reductions (engine/src/ops.c).
 *
 * Golden values come from hand-computed cases, closed forms, libm, and plain reference
 * loops that read inputs through ms_tensor_get / ms_tensor_read, never from ops.c.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "metastep/metastep.h"

/* Exact equality, or both NaN, or within tol relative to |b| (no absolute floor). */
static int same_val(double a, double b, double tol) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  if (a == b) return 1;
  return fabs(a - b) <= tol * fabs(b);
}

#define CHECK_SAME(a, b, tol)                                                            \
  do {                                                                                   \
    double same_a_ = (a), same_b_ = (b);                                                 \
    check_record(same_val(same_a_, same_b_, (tol)), __FILE__, __LINE__,                  \
                 "CHECK_SAME failed: %s = %.17g, %s = %.17g", #a, same_a_, #b, same_b_); \
  } while (0)

#define SHAPE(...) \
  (const int64_t[]) { __VA_ARGS__ }
#define DATA(...) \
  (const double[]) { __VA_ARGS__ }

static ms_tensor *mk(ms_ctx *ctx, int nd, const int64_t *shape, const double *data) {
  ms_tensor *t = NULL;
  CHECK(ms_tensor_from_data(ctx, nd, shape, data, &t) == MS_OK);
  return t;
}

static int shape_is(const ms_tensor *t, int nd, const int64_t *shape) {
  if (ms_tensor_ndim(t) != nd) return 0;
  for (int i = 0; i < nd; i++)
    if (ms_tensor_shape(t)[i] != shape[i]) return 0;
  return 1;
}

/* Row-major contents of t in a malloc'ed buffer (at least one slot). */
static double *contents(ms_ctx *ctx, const ms_tensor *t) {
  int64_t n = ms_tensor_numel(t);
  double *buf = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
  CHECK(ms_tensor_read(ctx, t, buf, n) == MS_OK);
  return buf;
}

static double item(ms_ctx *ctx, const ms_tensor *t) {
  double v = NAN;
  CHECK(ms_tensor_item(ctx, t, &v) == MS_OK);
  return v;
}

/* Unravels row-major flat index i of shape (nd, shape) into idx. */
static void unravel(int64_t i, int nd, const int64_t *shape, int64_t *idx) {
  for (int d = nd - 1; d >= 0; d--) {
    idx[d] = i % shape[d];
    i /= shape[d];
  }
}

/* Element of t at an index of the broadcast shape (nd), NumPy-aligned from the right. */
static double get_bcast(ms_ctx *ctx, const ms_tensor *t, int nd, const int64_t *idx) {
  int tnd = ms_tensor_ndim(t);
  int64_t ti[MS_MAXDIM];
  for (int j = 0; j < tnd; j++) {
    int i = j + (nd - tnd);
    ti[j] = ms_tensor_shape(t)[j] == 1 ? 0 : idx[i];
  }
  double v = NAN;
  CHECK(ms_tensor_get(ctx, t, ti, &v) == MS_OK);
  return v;
}

/* ---- reference semantics, written independently of ops.c ---- */

static double ref_binop(ms_binop op, double x, double y) {
  switch (op) {
    case MS_ADD:
      return x + y;
    case MS_SUB:
      return x - y;
    case MS_MUL:
      return x * y;
    case MS_DIV:
      return x / y;
    case MS_POW:
      return pow(x, y);
    case MS_MAXIMUM:
      return (isnan(x) || isnan(y)) ? NAN : fmax(x, y);
    case MS_MINIMUM:
      return (isnan(x) || isnan(y)) ? NAN : fmin(x, y);
    case MS_ATAN2:
      return atan2(x, y);
    case MS_LT:
      return x < y;
    case MS_LE:
      return x <= y;
    case MS_GT:
      return x > y;
    case MS_GE:
      return x >= y;
    case MS_EQ:
      return x == y;
    case MS_NE:
      return x != y;
    default:
      return NAN;
  }
}

/* The unary ops that are one libm function each (rint: the default rounding mode, half to
 * even). */
static double (*const libm_unop[MS_UNOP_COUNT])(double) = {
    [MS_ABS] = fabs,    [MS_EXP] = exp,     [MS_LOG] = log,   [MS_LOG1P] = log1p,
    [MS_EXPM1] = expm1, [MS_SQRT] = sqrt,   [MS_TANH] = tanh, [MS_SIN] = sin,
    [MS_COS] = cos,     [MS_FLOOR] = floor, [MS_CEIL] = ceil, [MS_ROUND] = rint};

static double ref_unop(ms_unop op, double x) {
  if ((int)op >= 0 && op < MS_UNOP_COUNT && libm_unop[op] != NULL) return libm_unop[op](x);
  switch (op) {
    case MS_NEG:
      return -x;
    case MS_SQUARE:
      return pow(x, 2);
    case MS_RECIPROCAL:
      return pow(x, -1);
    /* 1/(1+e^-x) is exact enough everywhere: e^-x = inf just gives 0. */
    case MS_SIGMOID:
      return 1.0 / (1.0 + exp(-x));
    case MS_RELU:
      return isnan(x) ? x : fmax(x, 0.0);
    case MS_SOFTPLUS:
      /* log1p(e^x) where it is accurate; the asymptotes x + e^-x and e^x beyond |x| > 30. */
      if (isnan(x)) return x;
      if (x > 30) return x + exp(-x);
      if (x < -30) return exp(x);
      return log1p(exp(x));
    case MS_SIGN:
      return isnan(x) ? x : (double)((x > 0) - (x < 0));
    case MS_ISFINITE:
      return isfinite(x) ? 1.0 : 0.0;
    default:
      return NAN;
  }
}

/* Reference reduction of n values at stride s (inputs here hold no NaN). */
static double ref_reduce(ms_redop op, const double *x, int64_t n, int64_t s) {
  double acc = 0, best;
  int64_t k = 0;
  switch (op) {
    case MS_SUM:
    case MS_MEAN:
      for (int64_t i = 0; i < n; i++) acc += x[i * s];
      return op == MS_SUM ? acc : acc / (double)n;
    case MS_PROD:
      acc = 1;
      for (int64_t i = 0; i < n; i++) acc *= x[i * s];
      return acc;
    case MS_NORM:
      for (int64_t i = 0; i < n; i++) acc += x[i * s] * x[i * s];
      return sqrt(acc);
    case MS_LOGSUMEXP:
      for (int64_t i = 0; i < n; i++) acc += exp(x[i * s]);
      return log(acc);
    case MS_MAX:
    case MS_ARGMAX:
      best = -INFINITY;
      for (int64_t i = 0; i < n; i++)
        if (x[i * s] > best) best = x[i * s], k = i;
      return op == MS_MAX ? best : (double)k;
    case MS_MIN:
    case MS_ARGMIN:
      best = INFINITY;
      for (int64_t i = 0; i < n; i++)
        if (x[i * s] < best) best = x[i * s], k = i;
      return op == MS_MIN ? best : (double)k;
    default:
      return NAN;
  }
}

/* ---- generic checks against the references ---- */

/* ms_binary(op, a, b) element by element against ref_binop through ms_tensor_get. */
static void check_binary(ms_ctx *ctx, ms_binop op, const ms_tensor *a, const ms_tensor *b, int nd,
                         const int64_t *shape) {
  ms_tensor *r = NULL;
  CHECK(ms_binary(ctx, op, a, b, &r) == MS_OK);
  if (r == NULL) return;
  CHECK(shape_is(r, nd, shape));
  CHECK(ms_tensor_is_contiguous(r));
  double *got = contents(ctx, r);
  int64_t idx[MS_MAXDIM];
  for (int64_t i = 0; i < ms_tensor_numel(r); i++) {
    unravel(i, nd, shape, idx);
    double want = ref_binop(op, get_bcast(ctx, a, nd, idx), get_bcast(ctx, b, nd, idx));
    CHECK_SAME(got[i], want, 1e-15);
  }
  free(got);
  ms_tensor_release(r);
}

/* ms_reduce against ref_reduce on t's row-major contents. */
static void check_reduce(ms_ctx *ctx, ms_redop op, const ms_tensor *t, int axis, int keepdim) {
  int nd = ms_tensor_ndim(t);
  const int64_t *shape = ms_tensor_shape(t);
  ms_tensor *r = NULL;
  CHECK(ms_reduce(ctx, op, t, axis, keepdim, &r) == MS_OK);
  if (r == NULL) return;
  double *x = contents(ctx, t), *got = contents(ctx, r);
  if (axis == MS_ALL) {
    CHECK(ms_tensor_ndim(r) == (keepdim ? nd : 0));
    CHECK(ms_tensor_numel(r) == 1);
    CHECK_SAME(got[0], ref_reduce(op, x, ms_tensor_numel(t), 1), 1e-13);
  } else {
    int ax = axis < 0 ? axis + nd : axis;
    int64_t outer = 1, inner = 1, len = shape[ax], want_shape[MS_MAXDIM];
    int wnd = 0;
    for (int d = 0; d < nd; d++) {
      if (d < ax) outer *= shape[d];
      if (d > ax) inner *= shape[d];
      if (d != ax)
        want_shape[wnd++] = shape[d];
      else if (keepdim)
        want_shape[wnd++] = 1;
    }
    CHECK(shape_is(r, wnd, want_shape));
    for (int64_t o = 0; o < outer; o++)
      for (int64_t j = 0; j < inner; j++)
        CHECK_SAME(got[o * inner + j], ref_reduce(op, x + o * len * inner + j, len, inner), 1e-13);
  }
  free(x);
  free(got);
  ms_tensor_release(r);
}

static void check_all_reductions(ms_ctx *ctx, const ms_tensor *t) {
  int nd = ms_tensor_ndim(t);
  for (int op = 0; op < MS_REDOP_COUNT; op++)
    for (int keepdim = 0; keepdim <= 1; keepdim++) {
      check_reduce(ctx, (ms_redop)op, t, MS_ALL, keepdim);
      for (int axis = -nd; axis < nd; axis++) check_reduce(ctx, (ms_redop)op, t, axis, keepdim);
    }
}

/* ---- tests ---- */

static void test_names(void) {
  CHECK(strcmp(ms_binop_name(MS_ADD), "add") == 0);
  CHECK(strcmp(ms_binop_name(MS_ATAN2), "atan2") == 0);
  CHECK(strcmp(ms_binop_name(MS_NE), "ne") == 0);
  CHECK(strcmp(ms_unop_name(MS_EXP), "exp") == 0);
  CHECK(strcmp(ms_unop_name(MS_SIGMOID), "sigmoid") == 0);
  CHECK(strcmp(ms_unop_name(MS_ISFINITE), "isfinite") == 0);
  CHECK(strcmp(ms_redop_name(MS_SUM), "sum") == 0);
  CHECK(strcmp(ms_redop_name(MS_LOGSUMEXP), "logsumexp") == 0);
  CHECK(strcmp(ms_binop_name(MS_BINOP_COUNT), "?") == 0);
  CHECK(strcmp(ms_unop_name((ms_unop)-1), "?") == 0);
  CHECK(strcmp(ms_redop_name(MS_REDOP_COUNT), "?") == 0);
  /* every op has its own name */
  for (int i = 0; i < MS_BINOP_COUNT; i++)
    for (int j = 0; j < i; j++) CHECK(strcmp(ms_binop_name(i), ms_binop_name(j)) != 0);
  for (int i = 0; i < MS_UNOP_COUNT; i++)
    for (int j = 0; j < i; j++) CHECK(strcmp(ms_unop_name(i), ms_unop_name(j)) != 0);
  for (int i = 0; i < MS_REDOP_COUNT; i++)
    for (int j = 0; j < i; j++) CHECK(strcmp(ms_redop_name(i), ms_redop_name(j)) != 0);
}

static void test_broadcast_shape(ms_ctx *ctx) {
  int nd = -1;
  int64_t s[MS_MAXDIM];
  CHECK(ms_broadcast_shape(ctx, "add", 2, SHAPE(3, 1), 1, SHAPE(4), &nd, s) == MS_OK);
  CHECK(nd == 2 && s[0] == 3 && s[1] == 4);
  CHECK(ms_broadcast_shape(ctx, "add", 0, NULL, 2, SHAPE(2, 3), &nd, s) == MS_OK);
  CHECK(nd == 2 && s[0] == 2 && s[1] == 3);
  CHECK(ms_broadcast_shape(ctx, "add", 0, NULL, 0, NULL, &nd, s) == MS_OK);
  CHECK(nd == 0);
  CHECK(ms_broadcast_shape(ctx, "add", 3, SHAPE(2, 1, 3), 2, SHAPE(4, 1), &nd, s) == MS_OK);
  CHECK(nd == 3 && s[0] == 2 && s[1] == 4 && s[2] == 3);
  CHECK(ms_broadcast_shape(ctx, "add", 2, SHAPE(0, 3), 1, SHAPE(3), &nd, s) == MS_OK);
  CHECK(nd == 2 && s[0] == 0 && s[1] == 3);
  CHECK(ms_broadcast_shape(ctx, "add", 1, SHAPE(1), 1, SHAPE(0), &nd, s) == MS_OK);
  CHECK(nd == 1 && s[0] == 0);

  char want[200], b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  snprintf(want, sizeof want, "add: shapes %s and %s do not broadcast",
           ms_shape_str(2, SHAPE(3, 4), b1, sizeof b1), ms_shape_str(1, SHAPE(5), b2, sizeof b2));
  CHECK_FAILS(ctx, ms_broadcast_shape(ctx, "add", 2, SHAPE(3, 4), 1, SHAPE(5), &nd, s), MS_ESHAPE,
              want);
  CHECK(strcmp(ms_ctx_error(ctx), want) == 0);
  CHECK_FAILS(ctx, ms_broadcast_shape(ctx, "mul", 1, SHAPE(0), 1, SHAPE(2), &nd, s), MS_ESHAPE,
              "mul: shapes");
  CHECK_FAILS(ctx,
              ms_broadcast_shape(ctx, "mul", MS_MAXDIM + 1, SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 1), 1,
                                 SHAPE(2), &nd, s),
              MS_EARG, "mul: expected at most");
  ms_ctx_clear_error(ctx);
}

static void test_binary_broadcast(ms_ctx *ctx) {
  ms_tensor *a = mk(ctx, 2, SHAPE(3, 1), DATA(1, 2, 3));
  ms_tensor *b = mk(ctx, 1, SHAPE(4), DATA(10, 20, 30, 40));
  ms_tensor *r = NULL;
  CHECK(ms_binary(ctx, MS_ADD, a, b, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(3, 4)));
  double *got = contents(ctx, r);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++) CHECK(got[i * 4 + j] == (i + 1) + 10.0 * (j + 1));
  free(got);
  ms_tensor_release(r);
  ms_tensor_release(a);
  ms_tensor_release(b);

  /* Every binop over awkward values, broadcast [5,1] x [4], then as full same-shape
   * contiguous operands (the fast path), then with the scalar on either side. */
  const double xs[5] = {-2, 0, 1.5, NAN, INFINITY}, ys[4] = {-1, 0, 2, -INFINITY};
  double full_x[20], full_y[20];
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 4; j++) full_x[i * 4 + j] = xs[i], full_y[i * 4 + j] = ys[j];
  ms_tensor *col = mk(ctx, 2, SHAPE(5, 1), xs), *row = mk(ctx, 1, SHAPE(4), ys);
  ms_tensor *fx = mk(ctx, 2, SHAPE(5, 4), full_x), *fy = mk(ctx, 2, SHAPE(5, 4), full_y);
  for (int op = 0; op < MS_BINOP_COUNT; op++) {
    check_binary(ctx, (ms_binop)op, col, row, 2, SHAPE(5, 4));
    check_binary(ctx, (ms_binop)op, row, col, 2, SHAPE(5, 4));
    check_binary(ctx, (ms_binop)op, fx, fy, 2, SHAPE(5, 4));
    for (int j = 0; j < 4; j++) {
      ms_tensor *s = NULL;
      CHECK(ms_binary_scalar(ctx, (ms_binop)op, col, ys[j], 0, &s) == MS_OK);
      CHECK(shape_is(s, 2, SHAPE(5, 1)));
      double *v = contents(ctx, s);
      for (int i = 0; i < 5; i++) CHECK_SAME(v[i], ref_binop((ms_binop)op, xs[i], ys[j]), 0);
      free(v);
      ms_tensor_release(s);
      CHECK(ms_binary_scalar(ctx, (ms_binop)op, col, ys[j], 1, &s) == MS_OK);
      v = contents(ctx, s);
      for (int i = 0; i < 5; i++) CHECK_SAME(v[i], ref_binop((ms_binop)op, ys[j], xs[i]), 0);
      free(v);
      ms_tensor_release(s);
    }
  }
  CHECK_RELEASE(col, row, fx, fy);
}

static void test_scalar_left(ms_ctx *ctx) {
  ms_tensor *a = mk(ctx, 1, SHAPE(3), DATA(1, 2, 4)), *r = NULL;
  CHECK(ms_binary_scalar(ctx, MS_SUB, a, 10, 1, &r) == MS_OK); /* 10 - a */
  double *v = contents(ctx, r);
  CHECK(v[0] == 9 && v[1] == 8 && v[2] == 6);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_binary_scalar(ctx, MS_SUB, a, 10, 0, &r) == MS_OK); /* a - 10 */
  v = contents(ctx, r);
  CHECK(v[0] == -9 && v[1] == -8 && v[2] == -6);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_binary_scalar(ctx, MS_DIV, a, 1, 1, &r) == MS_OK); /* 1 / a */
  v = contents(ctx, r);
  CHECK(v[0] == 1 && v[1] == 0.5 && v[2] == 0.25);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_binary_scalar(ctx, MS_DIV, a, 2, 0, &r) == MS_OK); /* a / 2 */
  v = contents(ctx, r);
  CHECK(v[0] == 0.5 && v[1] == 1 && v[2] == 2);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_binary_scalar(ctx, MS_POW, a, 2, 1, &r) == MS_OK); /* 2 ^ a */
  v = contents(ctx, r);
  CHECK(v[0] == 2 && v[1] == 4 && v[2] == 16);
  free(v);
  ms_tensor_release(r);

  /* 0-d operand: scalar op scalar is 0-d; scalar op matrix broadcasts. */
  ms_tensor *s = NULL, *m = mk(ctx, 2, SHAPE(2, 2), DATA(1, 2, 3, 4));
  CHECK(ms_tensor_scalar(ctx, 5, &s) == MS_OK);
  CHECK(ms_binary(ctx, MS_MUL, s, s, &r) == MS_OK);
  CHECK(ms_tensor_ndim(r) == 0 && item(ctx, r) == 25);
  ms_tensor_release(r);
  CHECK(ms_binary(ctx, MS_SUB, s, m, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(2, 2)));
  v = contents(ctx, r);
  CHECK(v[0] == 4 && v[1] == 3 && v[2] == 2 && v[3] == 1);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_binary_scalar(ctx, MS_ADD, s, 1, 0, &r) == MS_OK);
  CHECK(ms_tensor_ndim(r) == 0 && item(ctx, r) == 6);
  CHECK_RELEASE(r, s, m, a);
}

static void test_views(ms_ctx *ctx) {
  /* transposed [2,3] -> [3,2] plus a contiguous [3,2] */
  ms_tensor *x = mk(ctx, 2, SHAPE(2, 3), DATA(0.5, 1.5, 2.5, 10.5, 11.5, 12.5));
  ms_tensor *xt = NULL, *c = mk(ctx, 2, SHAPE(3, 2), DATA(0, -1, 100, 99, 200, 199)), *r = NULL;
  CHECK(ms_tensor_transpose(ctx, x, 0, 1, &xt) == MS_OK);
  CHECK(ms_binary(ctx, MS_ADD, xt, c, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(3, 2)));
  double *v = contents(ctx, r);
  /* out[j][i] = x[i][j] + c[j][i] = (10 i + j + 0.5) + (100 j - i) */
  for (int j = 0; j < 3; j++)
    for (int i = 0; i < 2; i++) CHECK(v[j * 2 + i] == 10 * i + j + 0.5 + 100 * j - i);
  free(v);
  ms_tensor_release(r);
  for (int op = 0; op < MS_BINOP_COUNT; op++) {
    check_binary(ctx, (ms_binop)op, xt, c, 2, SHAPE(3, 2));
    check_binary(ctx, (ms_binop)op, c, xt, 2, SHAPE(3, 2));
  }

  /* slices with steps on both axes of [4,6] (h = 6 i + j): rows 1,3 and columns 1,3,5 */
  double hd[24];
  for (int i = 0; i < 24; i++) hd[i] = i;
  ms_tensor *h = mk(ctx, 2, SHAPE(4, 6), hd), *h1 = NULL, *hs = NULL;
  CHECK(ms_tensor_slice(ctx, h, 1, 1, 6, 2, &h1) == MS_OK);
  CHECK(ms_tensor_slice(ctx, h1, 0, 1, 4, 2, &hs) == MS_OK);
  const double wv[3] = {1, 10, 100};
  ms_tensor *w = mk(ctx, 1, SHAPE(3), wv);
  CHECK(ms_binary(ctx, MS_MUL, hs, w, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(2, 3)));
  v = contents(ctx, r);
  for (int p = 0; p < 2; p++)
    for (int q = 0; q < 3; q++) CHECK(v[p * 3 + q] == (6 * (1 + 2 * p) + (1 + 2 * q)) * wv[q]);
  free(v);
  ms_tensor_release(r);
  /* the sliced [2,3] against a doubly transposed [2,3] */
  ms_tensor *xtt = NULL;
  CHECK(ms_tensor_transpose(ctx, xt, 0, 1, &xtt) == MS_OK);
  check_binary(ctx, MS_SUB, hs, xtt, 2, SHAPE(2, 3));
  check_binary(ctx, MS_ATAN2, xtt, hs, 2, SHAPE(2, 3));

  /* expanded (stride 0) operands: [3] -> [4,3] against a [4,1] -> [4,3] */
  ms_tensor *e1 = NULL, *e2 = NULL, *col = mk(ctx, 2, SHAPE(4, 1), DATA(1, 2, 3, 4));
  CHECK(ms_tensor_expand(ctx, w, 2, SHAPE(4, 3), &e1) == MS_OK);
  CHECK(ms_tensor_expand(ctx, col, 2, SHAPE(4, 3), &e2) == MS_OK);
  CHECK(ms_binary(ctx, MS_SUB, e1, e2, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(4, 3)));
  v = contents(ctx, r);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++) CHECK(v[i * 3 + j] == wv[j] - (i + 1));
  free(v);
  ms_tensor_release(r);
  check_binary(ctx, MS_MAXIMUM, e1, e2, 2, SHAPE(4, 3));
  check_binary(ctx, MS_DIV, e2, h1, 2, SHAPE(4, 3)); /* h1 is [4,3] with column stride 2 */

  /* 3-d: permuted [2,3,4] -> [4,2,3] plus [2,1] (aligned to the last two axes) */
  double td[24];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++)
      for (int k = 0; k < 4; k++) td[i * 12 + j * 4 + k] = 100 * i + 10 * j + k;
  ms_tensor *t3 = mk(ctx, 3, SHAPE(2, 3, 4), td), *tp = NULL;
  ms_tensor *q = mk(ctx, 2, SHAPE(2, 1), DATA(0.25, -1000));
  CHECK(ms_tensor_permute(ctx, t3, (const int[]){2, 0, 1}, &tp) == MS_OK);
  CHECK(ms_binary(ctx, MS_ADD, tp, q, &r) == MS_OK);
  CHECK(shape_is(r, 3, SHAPE(4, 2, 3)));
  v = contents(ctx, r);
  const double qv[2] = {0.25, -1000};
  for (int k = 0; k < 4; k++)
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 3; j++) CHECK(v[k * 6 + i * 3 + j] == 100 * i + 10 * j + k + qv[i]);
  free(v);
  ms_tensor_release(r);
  for (int op = 0; op < MS_BINOP_COUNT; op++)
    check_binary(ctx, (ms_binop)op, tp, q, 3, SHAPE(4, 2, 3));

  /* random views of a seeded [5,6,7]: permuted and sliced, broadcast against [7,1] and [2] */
  ms_tensor *g = NULL, *gp = NULL, *gs = NULL, *u = NULL, *u1 = NULL, *g2 = NULL;
  CHECK(ms_tensor_randn(ctx, NULL, 3, SHAPE(5, 6, 7), 0, 1, &g) == MS_OK);
  CHECK(ms_tensor_randn(ctx, NULL, 3, SHAPE(6, 7, 5), 0, 1, &g2) == MS_OK);
  CHECK(ms_tensor_permute(ctx, g, (const int[]){1, 2, 0}, &gp) == MS_OK); /* [6,7,5] */
  CHECK(ms_tensor_slice(ctx, gp, 2, 1, 5, 3, &gs) == MS_OK);              /* [6,7,2] */
  CHECK(ms_tensor_randn(ctx, NULL, 2, SHAPE(7, 1), 0, 1, &u) == MS_OK);
  CHECK(ms_tensor_randn(ctx, NULL, 1, SHAPE(2), 0, 1, &u1) == MS_OK);
  for (int op = 0; op < MS_BINOP_COUNT; op++) {
    check_binary(ctx, (ms_binop)op, gs, u, 3, SHAPE(6, 7, 2));
    check_binary(ctx, (ms_binop)op, u1, gs, 3, SHAPE(6, 7, 2));
    check_binary(ctx, (ms_binop)op, gp, g2, 3, SHAPE(6, 7, 5));
  }
  ms_tensor_release(g2);

  CHECK_RELEASE(g, gp, gs, u, u1, t3, tp, q, e1, e2, col, xtt, h, h1, hs, w, x, xt, c);
}

static void test_unary(ms_ctx *ctx) {
  const double xs[] = {-800, -700, -30, -2.5, -1,  -0.5, -0.0,     0,         0.3, 0.5,
                       1.5,  2.5,  3.7, 30,   700, 800,  INFINITY, -INFINITY, NAN};
  const int64_t n = (int64_t)(sizeof xs / sizeof xs[0]);
  ms_tensor *a = mk(ctx, 1, &n, xs);
  for (int op = 0; op < MS_UNOP_COUNT; op++) {
    ms_tensor *r = NULL;
    CHECK(ms_unary(ctx, (ms_unop)op, a, &r) == MS_OK);
    CHECK(shape_is(r, 1, &n));
    double *v = contents(ctx, r);
    for (int64_t i = 0; i < n; i++) {
      double want = ref_unop((ms_unop)op, xs[i]);
      if (!same_val(v[i], want, 1e-14))
        fprintf(stderr, "  %s(%g) = %.17g, want %.17g\n", ms_unop_name(op), xs[i], v[i], want);
      CHECK_SAME(v[i], want, 1e-14);
    }
    free(v);
    ms_tensor_release(r);
  }
  ms_tensor_release(a);

  /* Hand-checked values: libm's NaN for log/sqrt of negatives is data, not an error. */
  ms_tensor *b = mk(ctx, 1, SHAPE(4), DATA(-1, 0, 2.5, -2.5)), *r = NULL;
  CHECK(ms_unary(ctx, MS_LOG, b, &r) == MS_OK);
  double *v = contents(ctx, r);
  CHECK(isnan(v[0]) && v[1] == -INFINITY);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_unary(ctx, MS_SQRT, b, &r) == MS_OK);
  v = contents(ctx, r);
  CHECK(isnan(v[0]) && v[1] == 0);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_unary(ctx, MS_ROUND, b, &r) == MS_OK); /* half to even */
  v = contents(ctx, r);
  CHECK(v[0] == -1 && v[1] == 0 && v[2] == 2 && v[3] == -2);
  free(v);
  ms_tensor_release(r);
  ms_tensor_release(b);

  /* Stable sigmoid and softplus far out: no NaN, no overflow, full relative precision. */
  ms_tensor *f = mk(ctx, 1, SHAPE(5), DATA(800, -800, -30, -700, 40));
  CHECK(ms_unary(ctx, MS_SIGMOID, f, &r) == MS_OK);
  v = contents(ctx, r);
  CHECK(v[0] == 1.0);
  CHECK(v[1] == 0.0);
  CHECK_SAME(v[2], exp(-30) / (1 + exp(-30)), 1e-15);
  CHECK_SAME(v[3], exp(-700), 1e-14); /* 1 + e^-700 == 1 */
  CHECK(v[4] == 1.0);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_unary(ctx, MS_SOFTPLUS, f, &r) == MS_OK);
  v = contents(ctx, r);
  CHECK(v[0] == 800.0);
  CHECK(v[1] == 0.0);
  CHECK_SAME(v[2], exp(-30) - exp(-60) / 2, 1e-15); /* log(1+e) = e - e^2/2 + ... */
  CHECK_SAME(v[3], exp(-700), 1e-14);
  CHECK_SAME(v[4], 40 + exp(-40), 1e-15);
  free(v);
  ms_tensor_release(r);
  ms_tensor_release(f);

  /* A transposed view and a 0-d tensor. */
  ms_tensor *m = mk(ctx, 2, SHAPE(2, 3), DATA(0, 1, 2, 3, 4, 5)), *mt = NULL, *s = NULL;
  CHECK(ms_tensor_transpose(ctx, m, 0, 1, &mt) == MS_OK);
  CHECK(ms_unary(ctx, MS_EXP, mt, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(3, 2)));
  v = contents(ctx, r);
  for (int j = 0; j < 3; j++)
    for (int i = 0; i < 2; i++) CHECK_SAME(v[j * 2 + i], exp(3 * i + j), 0);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_tensor_scalar(ctx, -4, &s) == MS_OK);
  CHECK(ms_unary(ctx, MS_ABS, s, &r) == MS_OK);
  CHECK(ms_tensor_ndim(r) == 0 && item(ctx, r) == 4);
  CHECK_RELEASE(r, s, m, mt);
}

static void test_reduce_small(ms_ctx *ctx) {
  /* X = [[1, -2, 3], [4, 5, -6]], by hand */
  ms_tensor *x = mk(ctx, 2, SHAPE(2, 3), DATA(1, -2, 3, 4, 5, -6)), *r = NULL;
  CHECK(ms_reduce(ctx, MS_SUM, x, 0, 0, &r) == MS_OK);
  CHECK(shape_is(r, 1, SHAPE(3)));
  double *v = contents(ctx, r);
  CHECK(v[0] == 5 && v[1] == 3 && v[2] == -3);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_SUM, x, 1, 1, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(2, 1)));
  v = contents(ctx, r);
  CHECK(v[0] == 2 && v[1] == 3);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_PROD, x, MS_ALL, 0, &r) == MS_OK);
  CHECK(ms_tensor_ndim(r) == 0 && item(ctx, r) == 720);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_ARGMAX, x, -1, 0, &r) == MS_OK);
  v = contents(ctx, r);
  CHECK(v[0] == 2 && v[1] == 1);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_ARGMIN, x, MS_ALL, 1, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(1, 1)) && item(ctx, r) == 5);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_MEAN, x, -2, 0, &r) == MS_OK);
  v = contents(ctx, r);
  CHECK(v[0] == 2.5 && v[1] == 1.5 && v[2] == -1.5);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_NORM, x, 1, 0, &r) == MS_OK);
  v = contents(ctx, r);
  CHECK_SAME(v[0], sqrt(14), 1e-15);
  CHECK_SAME(v[1], sqrt(77), 1e-15);
  free(v);
  ms_tensor_release(r);
  ms_tensor_release(x);

  /* argmax/argmin take the first of ties */
  ms_tensor *t = mk(ctx, 1, SHAPE(3), DATA(3, 1, 3)), *u = mk(ctx, 1, SHAPE(3), DATA(2, 1, 1));
  CHECK(ms_reduce(ctx, MS_ARGMAX, t, 0, 0, &r) == MS_OK);
  CHECK(item(ctx, r) == 0);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_ARGMIN, u, 0, 0, &r) == MS_OK);
  CHECK(item(ctx, r) == 1);
  ms_tensor_release(r);
  ms_tensor_release(t);
  ms_tensor_release(u);

  /* 0-d input: MS_ALL works, an axis does not */
  ms_tensor *s = NULL;
  CHECK(ms_tensor_scalar(ctx, 7, &s) == MS_OK);
  CHECK(ms_reduce(ctx, MS_MAX, s, MS_ALL, 1, &r) == MS_OK);
  CHECK(ms_tensor_ndim(r) == 0 && item(ctx, r) == 7);
  ms_tensor_release(r);
  r = (ms_tensor *)&r; /* poison: a failure must reset it */
  CHECK_FAILS(ctx, ms_reduce(ctx, MS_SUM, s, 0, 0, &r), MS_EINDEX,
              "sum: axis 0 out of range for 0-d tensor");
  CHECK(r == NULL);
  ms_tensor_release(s);
  ms_ctx_clear_error(ctx);
}

static void test_reduce_views(ms_ctx *ctx) {
  ms_tensor *x = mk(ctx, 2, SHAPE(2, 3), DATA(1, -2, 3, 4, 5, -6)), *xt = NULL;
  CHECK(ms_tensor_transpose(ctx, x, 0, 1, &xt) == MS_OK);
  check_all_reductions(ctx, x);
  check_all_reductions(ctx, xt);

  /* distinct values in [-11.5, 11.5] so argmax/argmin are unambiguous */
  double d[24];
  for (int i = 0; i < 24; i++) d[i] = (double)((i * 7) % 24) - 11.5;
  ms_tensor *t = mk(ctx, 3, SHAPE(2, 3, 4), d), *tp = NULL, *ts = NULL, *t1 = NULL;
  CHECK(ms_tensor_permute(ctx, t, (const int[]){2, 0, 1}, &tp) == MS_OK);
  CHECK(ms_tensor_slice(ctx, t, 2, 0, 4, 2, &ts) == MS_OK);
  CHECK(ms_tensor_slice(ctx, t, 1, 1, 2, 1, &t1) == MS_OK); /* [2,1,4]: a size-1 axis */
  check_all_reductions(ctx, t);
  check_all_reductions(ctx, tp);
  check_all_reductions(ctx, ts);
  check_all_reductions(ctx, t1);

  /* stride-0 expanded view */
  ms_tensor *w = mk(ctx, 1, SHAPE(3), DATA(0.5, -1, 2)), *we = NULL;
  CHECK(ms_tensor_expand(ctx, w, 2, SHAPE(4, 3), &we) == MS_OK);
  check_all_reductions(ctx, we);

  /* long rows (pairwise summation) against closed forms: sum_{k<10000} k */
  ms_tensor *ar = NULL, *sq = NULL, *r = NULL;
  CHECK(ms_tensor_arange(ctx, 0, 10000, 1, &ar) == MS_OK);
  CHECK(ms_reduce(ctx, MS_SUM, ar, MS_ALL, 0, &r) == MS_OK);
  CHECK(item(ctx, r) == 49995000.0);
  ms_tensor_release(r);
  CHECK(ms_tensor_view(ctx, ar, 2, SHAPE(100, 100), &sq) == MS_OK);
  CHECK(ms_reduce(ctx, MS_SUM, sq, 0, 0, &r) == MS_OK); /* column j: 100*4950 + 100 j */
  double *v = contents(ctx, r);
  for (int j = 0; j < 100; j++) CHECK(v[j] == 495000.0 + 100.0 * j);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_MEAN, sq, 1, 0, &r) == MS_OK); /* row i: 100 i + 49.5 */
  v = contents(ctx, r);
  for (int i = 0; i < 100; i++) CHECK(v[i] == 100.0 * i + 49.5);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_MAX, sq, 0, 1, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(1, 100)));
  v = contents(ctx, r);
  for (int j = 0; j < 100; j++) CHECK(v[j] == 9900.0 + j);
  free(v);
  ms_tensor_release(r);

  CHECK_RELEASE(ar, sq, w, we, t, tp, ts, t1, x, xt);
}

/* Reduces a 1-d tensor of the given values over everything; returns the 0-d result. */
static double reduce_vals(ms_ctx *ctx, ms_redop op, int64_t n, const double *vals) {
  ms_tensor *t = mk(ctx, 1, &n, vals), *r = NULL;
  double v = NAN;
  CHECK(ms_reduce(ctx, op, t, MS_ALL, 0, &r) == MS_OK);
  if (r) v = item(ctx, r);
  ms_tensor_release(r);
  ms_tensor_release(t);
  return v;
}

static void test_reduce_special(ms_ctx *ctx) {
  /* logsumexp: max subtraction, infinite maxima, NaN */
  CHECK_SAME(reduce_vals(ctx, MS_LOGSUMEXP, 2, DATA(1000, 1000)), 1000 + log(2), 1e-15);
  CHECK_SAME(reduce_vals(ctx, MS_LOGSUMEXP, 2, DATA(-1000, -1000)), -1000 + log(2), 1e-15);
  CHECK_SAME(reduce_vals(ctx, MS_LOGSUMEXP, 3, DATA(1000, 0, -INFINITY)), 1000, 1e-15);
  CHECK(reduce_vals(ctx, MS_LOGSUMEXP, 2, DATA(-INFINITY, -INFINITY)) == -INFINITY);
  CHECK(reduce_vals(ctx, MS_LOGSUMEXP, 2, DATA(-INFINITY, 0)) == 0);
  CHECK(reduce_vals(ctx, MS_LOGSUMEXP, 2, DATA(INFINITY, 1)) == INFINITY);
  CHECK(reduce_vals(ctx, MS_LOGSUMEXP, 2, DATA(INFINITY, INFINITY)) == INFINITY);
  CHECK(isnan(reduce_vals(ctx, MS_LOGSUMEXP, 2, DATA(NAN, 1))));
  CHECK(isnan(reduce_vals(ctx, MS_LOGSUMEXP, 2, DATA(INFINITY, NAN))));
  {
    ms_tensor *m = mk(ctx, 2, SHAPE(2, 2), DATA(1000, 1000, -INFINITY, -INFINITY)), *r = NULL;
    CHECK(ms_reduce(ctx, MS_LOGSUMEXP, m, 1, 0, &r) == MS_OK);
    double *v = contents(ctx, r);
    CHECK_SAME(v[0], 1000 + log(2), 1e-15);
    CHECK(v[1] == -INFINITY);
    free(v);
    ms_tensor_release(r);
    ms_tensor_release(m);
  }

  /* NaN propagates through max/min wherever it sits; argmax/argmin point at it */
  CHECK(isnan(reduce_vals(ctx, MS_MAX, 3, DATA(1, NAN, 3))));
  CHECK(isnan(reduce_vals(ctx, MS_MAX, 3, DATA(NAN, 1, 3))));
  CHECK(isnan(reduce_vals(ctx, MS_MAX, 3, DATA(1, 3, NAN))));
  CHECK(isnan(reduce_vals(ctx, MS_MIN, 2, DATA(NAN, -1))));
  CHECK(isnan(reduce_vals(ctx, MS_MIN, 2, DATA(-1, NAN))));
  CHECK(reduce_vals(ctx, MS_ARGMAX, 4, DATA(1, 5, NAN, 7)) == 2);
  CHECK(reduce_vals(ctx, MS_ARGMIN, 4, DATA(1, -5, NAN, NAN)) == 2);
  CHECK(isnan(reduce_vals(ctx, MS_SUM, 2, DATA(1, NAN))));
  {
    /* along axis 0: the dense row-accumulating path and, transposed, the strided one */
    ms_tensor *m = mk(ctx, 2, SHAPE(3, 2), DATA(1, 2, NAN, 0, 5, 1)), *mt = NULL, *r = NULL;
    CHECK(ms_reduce(ctx, MS_MAX, m, 0, 0, &r) == MS_OK);
    double *v = contents(ctx, r);
    CHECK(isnan(v[0]) && v[1] == 2);
    free(v);
    ms_tensor_release(r);
    CHECK(ms_reduce(ctx, MS_MIN, m, 0, 0, &r) == MS_OK);
    v = contents(ctx, r);
    CHECK(isnan(v[0]) && v[1] == 0);
    free(v);
    ms_tensor_release(r);
    CHECK(ms_tensor_transpose(ctx, m, 0, 1, &mt) == MS_OK);
    CHECK(ms_reduce(ctx, MS_MAX, mt, 1, 0, &r) == MS_OK);
    v = contents(ctx, r);
    CHECK(isnan(v[0]) && v[1] == 2);
    free(v);
    ms_tensor_release(r);
    ms_tensor_release(mt);
    ms_tensor_release(m);
  }

  /* 2-norm without overflow or underflow */
  CHECK_SAME(reduce_vals(ctx, MS_NORM, 2, DATA(3e200, 4e200)), 5e200, 1e-15);
  CHECK_SAME(reduce_vals(ctx, MS_NORM, 2, DATA(3e-200, -4e-200)), 5e-200, 1e-15);
  CHECK(reduce_vals(ctx, MS_NORM, 2, DATA(0, -0.0)) == 0);
  CHECK(reduce_vals(ctx, MS_NORM, 2, DATA(-INFINITY, 1)) == INFINITY);
  CHECK(isnan(reduce_vals(ctx, MS_NORM, 2, DATA(INFINITY, NAN))));
  CHECK(isnan(reduce_vals(ctx, MS_NORM, 2, DATA(NAN, INFINITY))));

  /* empty inputs: identities where they exist, MS_EARG where they do not */
  ms_tensor *e = NULL, *r = NULL;
  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(0, 3), &e) == MS_OK);
  CHECK(ms_reduce(ctx, MS_SUM, e, 0, 0, &r) == MS_OK);
  CHECK(shape_is(r, 1, SHAPE(3)));
  double *v = contents(ctx, r);
  CHECK(v[0] == 0 && v[1] == 0 && v[2] == 0);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_PROD, e, 0, 1, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(1, 3)));
  v = contents(ctx, r);
  CHECK(v[0] == 1 && v[1] == 1 && v[2] == 1);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_MAX, e, 1, 0, &r) == MS_OK); /* nothing to reduce: [0] */
  CHECK(shape_is(r, 1, SHAPE(0)));
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_SUM, e, MS_ALL, 0, &r) == MS_OK);
  CHECK(item(ctx, r) == 0);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_NORM, e, MS_ALL, 0, &r) == MS_OK);
  CHECK(item(ctx, r) == 0);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_LOGSUMEXP, e, MS_ALL, 0, &r) == MS_OK);
  CHECK(item(ctx, r) == -INFINITY);
  ms_tensor_release(r);
  CHECK(ms_reduce(ctx, MS_MEAN, e, MS_ALL, 0, &r) == MS_OK); /* 0/0, as NumPy */
  CHECK(isnan(item(ctx, r)));
  ms_tensor_release(r);
  r = (ms_tensor *)&r;
  CHECK_FAILS(ctx, ms_reduce(ctx, MS_MAX, e, MS_ALL, 0, &r), MS_EARG,
              "max: cannot reduce empty tensor of shape [0,3]");
  CHECK(r == NULL);
  r = (ms_tensor *)&r;
  CHECK_FAILS(ctx, ms_reduce(ctx, MS_ARGMAX, e, 0, 0, &r), MS_EARG,
              "argmax: cannot reduce empty axis 0 of shape [0,3]");
  CHECK(r == NULL);
  CHECK_FAILS(ctx, ms_reduce(ctx, MS_MIN, e, -2, 1, &r), MS_EARG, "min: cannot reduce empty axis");
  CHECK_FAILS(ctx, ms_reduce(ctx, MS_ARGMIN, e, MS_ALL, 1, &r), MS_EARG, "argmin: cannot reduce");
  ms_tensor_release(e);
  ms_ctx_clear_error(ctx);
}

static void test_where(ms_ctx *ctx) {
  ms_tensor *c = mk(ctx, 2, SHAPE(3, 1), DATA(1, 0, NAN));
  ms_tensor *a = mk(ctx, 1, SHAPE(4), DATA(1, 2, 3, 4));
  ms_tensor *b = NULL, *r = NULL;
  CHECK(ms_tensor_scalar(ctx, -1, &b) == MS_OK);
  CHECK(ms_where(ctx, c, a, b, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(3, 4)));
  double *v = contents(ctx, r);
  for (int j = 0; j < 4; j++) {
    CHECK(v[j] == j + 1);
    CHECK(v[4 + j] == -1);
    CHECK(v[8 + j] == j + 1); /* NaN != 0 counts as true, like bool(nan) */
  }
  free(v);
  ms_tensor_release(r);

  /* transposed condition */
  ms_tensor *m = mk(ctx, 2, SHAPE(2, 3), DATA(1, 0, 0, 0, 1, 1)), *mt = NULL;
  ms_tensor *p = mk(ctx, 2, SHAPE(3, 2), DATA(10, 11, 12, 13, 14, 15));
  CHECK(ms_tensor_transpose(ctx, m, 0, 1, &mt) == MS_OK); /* [[1,0],[0,1],[0,1]] */
  CHECK(ms_where(ctx, mt, p, b, &r) == MS_OK);
  v = contents(ctx, r);
  CHECK(v[0] == 10 && v[1] == -1 && v[2] == -1 && v[3] == 13 && v[4] == -1 && v[5] == 15);
  free(v);
  ms_tensor_release(r);

  ms_tensor *s2 = mk(ctx, 1, SHAPE(2), DATA(1, 1)), *s3 = mk(ctx, 1, SHAPE(3), DATA(1, 1, 1));
  r = (ms_tensor *)&r;
  CHECK_FAILS(ctx, ms_where(ctx, s2, s3, a, &r), MS_ESHAPE,
              "where: shapes [2], [3] and [4] do not broadcast");
  CHECK(r == NULL);
  CHECK_RELEASE(s2, s3, m, mt, p, a, b, c);
  ms_ctx_clear_error(ctx);
}

static void test_clamp(ms_ctx *ctx) {
  ms_tensor *a = mk(ctx, 1, SHAPE(6), DATA(-2, 0.5, 3, NAN, INFINITY, -INFINITY)), *r = NULL;
  CHECK(ms_clamp(ctx, a, -1, 1, &r) == MS_OK);
  double *v = contents(ctx, r);
  CHECK(v[0] == -1 && v[1] == 0.5 && v[2] == 1 && isnan(v[3]) && v[4] == 1 && v[5] == -1);
  free(v);
  ms_tensor_release(r);
  CHECK(ms_clamp(ctx, a, 0.5, 0.5, &r) == MS_OK); /* lo == hi is allowed */
  v = contents(ctx, r);
  CHECK(v[0] == 0.5 && v[2] == 0.5 && isnan(v[3]));
  free(v);
  ms_tensor_release(r);
  CHECK(ms_clamp(ctx, a, -INFINITY, 0, &r) == MS_OK);
  v = contents(ctx, r);
  CHECK(v[0] == -2 && v[1] == 0 && v[4] == 0 && v[5] == -INFINITY);
  free(v);
  ms_tensor_release(r);

  ms_tensor *m = mk(ctx, 2, SHAPE(2, 2), DATA(-5, 5, 0.25, -0.25)), *mt = NULL;
  CHECK(ms_tensor_transpose(ctx, m, 0, 1, &mt) == MS_OK);
  CHECK(ms_clamp(ctx, mt, 0, 1, &r) == MS_OK);
  v = contents(ctx, r);
  CHECK(v[0] == 0 && v[1] == 0.25 && v[2] == 1 && v[3] == 0);
  free(v);
  ms_tensor_release(r);

  r = (ms_tensor *)&r;
  CHECK_FAILS(ctx, ms_clamp(ctx, a, 2, 1, &r), MS_EARG, "clamp: lo (2) must be <= hi (1)");
  CHECK(r == NULL);
  CHECK_FAILS(ctx, ms_clamp(ctx, a, NAN, 1, &r), MS_EARG, "clamp: lo (nan)");
  ms_tensor_release(m);
  ms_tensor_release(mt);
  ms_tensor_release(a);
  ms_ctx_clear_error(ctx);
}

static void test_all_finite(ms_ctx *ctx) {
  ms_tensor *a = mk(ctx, 2, SHAPE(2, 3), DATA(1, 2, 3, 4, 5, INFINITY)), *sl = NULL, *at = NULL;
  CHECK(ms_tensor_all_finite(a) == 0);
  CHECK(ms_tensor_slice(ctx, a, 1, 0, 2, 1, &sl) == MS_OK); /* drops the inf column */
  CHECK(ms_tensor_all_finite(sl) == 1);
  CHECK(ms_tensor_transpose(ctx, a, 0, 1, &at) == MS_OK);
  CHECK(ms_tensor_all_finite(at) == 0);
  ms_tensor *n = mk(ctx, 1, SHAPE(3), DATA(0, NAN, 0)), *e = NULL, *s = NULL;
  CHECK(ms_tensor_all_finite(n) == 0);
  CHECK(ms_tensor_zeros(ctx, 1, SHAPE(0), &e) == MS_OK);
  CHECK(ms_tensor_all_finite(e) == 1);
  CHECK(ms_tensor_scalar(ctx, -INFINITY, &s) == MS_OK);
  CHECK(ms_tensor_all_finite(s) == 0);
  ms_tensor_release(s);
  CHECK(ms_tensor_scalar(ctx, 1e308, &s) == MS_OK);
  CHECK(ms_tensor_all_finite(s) == 1);
  CHECK_RELEASE(s, a, sl, at, n, e);
}

static void test_max_abs_diff(ms_ctx *ctx) {
  ms_tensor *a = mk(ctx, 2, SHAPE(2, 3), DATA(1, 2, 3, 4, 5, 6));
  ms_tensor *b = mk(ctx, 1, SHAPE(3), DATA(1, 0, 10));
  double d = -1;
  CHECK(ms_max_abs_diff(ctx, a, b, &d) == MS_OK);
  CHECK(d == 7); /* |3 - 10| */
  CHECK(ms_max_abs_diff(ctx, b, a, &d) == MS_OK);
  CHECK(d == 7);
  ms_tensor *at = NULL, *c = mk(ctx, 2, SHAPE(3, 2), DATA(1, 4, 2, 5, 3, 6.5));
  CHECK(ms_tensor_transpose(ctx, a, 0, 1, &at) == MS_OK);
  CHECK(ms_max_abs_diff(ctx, at, c, &d) == MS_OK);
  CHECK(d == 0.5);
  ms_tensor *n = mk(ctx, 1, SHAPE(3), DATA(1, NAN, 3));
  ms_tensor *i1 = mk(ctx, 1, SHAPE(2), DATA(INFINITY, 1));
  ms_tensor *i2 = mk(ctx, 1, SHAPE(2), DATA(INFINITY, 1)), *i3 = mk(ctx, 1, SHAPE(2), DATA(1, 1));
  CHECK(ms_max_abs_diff(ctx, a, n, &d) == MS_OK);
  CHECK(isnan(d));
  CHECK(ms_max_abs_diff(ctx, i1, i2, &d) == MS_OK);
  CHECK(d == 0); /* equal infinities */
  CHECK(ms_max_abs_diff(ctx, i1, i3, &d) == MS_OK);
  CHECK(d == INFINITY);
  ms_tensor *e = NULL;
  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(0, 3), &e) == MS_OK);
  CHECK(ms_max_abs_diff(ctx, e, b, &d) == MS_OK);
  CHECK(d == 0);
  CHECK_FAILS(ctx, ms_max_abs_diff(ctx, a, i1, &d), MS_ESHAPE,
              "max_abs_diff: shapes [2,3] and [2] do not broadcast");
  CHECK_RELEASE(a, b, at, c, n, i1, i2, i3, e);
  ms_ctx_clear_error(ctx);
}

static void test_errors(ms_ctx *ctx) {
  ms_tensor *a = NULL, *b = NULL, *r = NULL;
  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(3, 4), &a) == MS_OK);
  CHECK(ms_tensor_zeros(ctx, 1, SHAPE(5), &b) == MS_OK);
  size_t before = ms_ctx_bytes(ctx);

  char want[200], b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  snprintf(want, sizeof want, "add: shapes %s and %s do not broadcast",
           ms_shape_str(2, SHAPE(3, 4), b1, sizeof b1), ms_shape_str(1, SHAPE(5), b2, sizeof b2));
  r = (ms_tensor *)&r;
  CHECK_FAILS(ctx, ms_binary(ctx, MS_ADD, a, b, &r), MS_ESHAPE, want);
  CHECK(strcmp(ms_ctx_error(ctx), "add: shapes [3,4] and [5] do not broadcast") == 0);
  CHECK(r == NULL);
  CHECK_FAILS(ctx, ms_binary(ctx, MS_ATAN2, b, a, &r), MS_ESHAPE,
              "atan2: shapes [5] and [3,4] do not broadcast");
  CHECK_FAILS(ctx, ms_binary(ctx, (ms_binop)99, a, a, &r), MS_EARG, "binary: unknown op 99");
  CHECK(r == NULL);
  CHECK_FAILS(ctx, ms_binary_scalar(ctx, MS_BINOP_COUNT, a, 1, 0, &r), MS_EARG, "unknown op");
  CHECK_FAILS(ctx, ms_unary(ctx, (ms_unop)-1, a, &r), MS_EARG, "unary: unknown op -1");
  CHECK_FAILS(ctx, ms_reduce(ctx, (ms_redop)42, a, 0, 0, &r), MS_EARG, "reduce: unknown op 42");
  CHECK(r == NULL);

  /* axis errors come from the shared axis check, naming the op and the values */
  CHECK_FAILS(ctx, ms_reduce(ctx, MS_SUM, a, 3, 0, &r), MS_EINDEX,
              "sum: axis 3 out of range for 2-d tensor");
  CHECK_FAILS(ctx, ms_reduce(ctx, MS_LOGSUMEXP, a, -3, 1, &r), MS_EINDEX,
              "logsumexp: axis -3 out of range for 2-d tensor");
  CHECK(r == NULL);
  CHECK(ms_ctx_bytes(ctx) == before);
  ms_tensor_release(a);
  ms_tensor_release(b);
  ms_ctx_clear_error(ctx);
}

/* Runs op with the k-th allocation failing for k = 0, 1, ... until it succeeds. */
#define CHECK_ALLOC_FAILURES(ctx, f, call, r)                                        \
  do {                                                                               \
    size_t base_ = ms_ctx_bytes(ctx);                                                \
    int st_ = MS_ENOMEM, k_;                                                         \
    for (k_ = 0; k_ < 10 && st_ != MS_OK; k_++) {                                    \
      (f)->n = 0, (f)->fail_at = k_; /* k_ allocations pass, then every one fails */ \
      r = (ms_tensor *)&r;                                                           \
      st_ = (call);                                                                  \
      (f)->fail_at = -1;                                                             \
      if (st_ != MS_OK) {                                                            \
        CHECK(st_ == MS_ENOMEM && r == NULL && ms_ctx_bytes(ctx) == base_);          \
        CHECK(strstr(ms_ctx_error(ctx), "out of memory") != NULL);                   \
      }                                                                              \
    }                                                                                \
    CHECK(st_ == MS_OK && k_ > 1);                                                   \
    ms_tensor_release(st_ == MS_OK ? r : NULL);                                      \
    CHECK(ms_ctx_bytes(ctx) == base_);                                               \
  } while (0)

static void test_alloc_failures(void) {
  check_alloc f = {0, -1, 1};
  ms_ctx *ctx = ms_ctx_new(check_failing_alloc, &f);
  CHECK(ctx != NULL);
  if (ctx == NULL) return;
  ms_tensor *a = mk(ctx, 2, SHAPE(2, 3), DATA(1, 2, 3, 4, 5, 6)), *at = NULL, *r = NULL;
  ms_tensor *b = mk(ctx, 1, SHAPE(3), DATA(1, 2, 3));
  CHECK(ms_tensor_transpose(ctx, a, 0, 1, &at) == MS_OK);
  CHECK_ALLOC_FAILURES(ctx, &f, ms_binary(ctx, MS_ADD, a, b, &r), r);
  CHECK_ALLOC_FAILURES(ctx, &f, ms_binary_scalar(ctx, MS_MUL, at, 2, 1, &r), r);
  CHECK_ALLOC_FAILURES(ctx, &f, ms_unary(ctx, MS_EXP, at, &r), r);
  CHECK_ALLOC_FAILURES(ctx, &f, ms_reduce(ctx, MS_SUM, at, 0, 1, &r), r);
  CHECK_ALLOC_FAILURES(ctx, &f, ms_reduce(ctx, MS_ARGMAX, at, MS_ALL, 0, &r), r); /* + scratch */
  CHECK_ALLOC_FAILURES(ctx, &f, ms_where(ctx, b, a, b, &r), r);
  CHECK_ALLOC_FAILURES(ctx, &f, ms_clamp(ctx, at, 0, 1, &r), r);

  /* the context budget fails the same way, with its message */
  ms_ctx_set_limit(ctx, ms_ctx_bytes(ctx) + 16);
  r = (ms_tensor *)&r;
  CHECK_FAILS(ctx, ms_binary(ctx, MS_ADD, a, b, &r), MS_ENOMEM, "out of memory");
  CHECK(r == NULL);
  ms_ctx_set_limit(ctx, 0);

  ms_tensor_release(a);
  ms_tensor_release(at);
  ms_tensor_release(b);
  check_ctx_free(ctx);
}

static void test_empty_elementwise(ms_ctx *ctx) {
  ms_tensor *e = NULL, *b = mk(ctx, 1, SHAPE(3), DATA(1, 2, 3)), *r = NULL;
  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(0, 3), &e) == MS_OK);
  CHECK(ms_binary(ctx, MS_ADD, e, b, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(0, 3)));
  ms_tensor_release(r);
  CHECK(ms_binary_scalar(ctx, MS_DIV, e, 2, 1, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(0, 3)));
  ms_tensor_release(r);
  CHECK(ms_unary(ctx, MS_LOG, e, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(0, 3)));
  ms_tensor_release(r);
  CHECK(ms_where(ctx, b, e, b, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(0, 3)));
  ms_tensor_release(r);
  CHECK(ms_clamp(ctx, e, 0, 1, &r) == MS_OK);
  CHECK(shape_is(r, 2, SHAPE(0, 3)));
  ms_tensor_release(r);
  ms_tensor_release(e);
  ms_tensor_release(b);
}

int main(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  if (ctx == NULL) return 1;
  test_names();
  test_broadcast_shape(ctx);
  test_binary_broadcast(ctx);
  test_scalar_left(ctx);
  test_views(ctx);
  test_empty_elementwise(ctx);
  test_unary(ctx);
  test_reduce_small(ctx);
  test_reduce_views(ctx);
  test_reduce_special(ctx);
  test_where(ctx);
  test_clamp(ctx);
  test_all_finite(ctx);
  test_max_abs_diff(ctx);
  test_errors(ctx);
  test_alloc_failures();
  check_ctx_free(ctx);
  return check_report();
}
