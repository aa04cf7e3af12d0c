/*
 * Element-wise arithmetic with NumPy broadcasting, unary math and reductions.
 *
 * Every element-wise op runs through one loop skeleton (struct loop): the output shape
 * with each input's strides broadcast to it (stride 0 on broadcast axes), after dropping
 * size-1 axes and merging neighbouring axes that are contiguous for every operand. Two
 * contiguous operands of the same shape therefore collapse to a single unit-stride row,
 * which is the fast path; anything else runs an odometer over the outer axes and calls a
 * row kernel on the innermost one. Kernels switch on the op once per row, not per element.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

/* ---- names ---- */

/* Indexed by the op; an entry per enum value (the assertions check the sizes). */
static const char *const binop_names[] = {
    [MS_ADD] = "add", [MS_SUB] = "sub",         [MS_MUL] = "mul",         [MS_DIV] = "div",
    [MS_POW] = "pow", [MS_MAXIMUM] = "maximum", [MS_MINIMUM] = "minimum", [MS_ATAN2] = "atan2",
    [MS_LT] = "lt",   [MS_LE] = "le",           [MS_GT] = "gt",           [MS_GE] = "ge",
    [MS_EQ] = "eq",   [MS_NE] = "ne",
};
_Static_assert(sizeof binop_names / sizeof binop_names[0] == MS_BINOP_COUNT,
               "binop_names needs one entry per ms_binop");

static const char *const unop_names[] = {
    [MS_NEG] = "neg",           [MS_ABS] = "abs",           [MS_EXP] = "exp",
    [MS_LOG] = "log",           [MS_LOG1P] = "log1p",       [MS_EXPM1] = "expm1",
    [MS_SQRT] = "sqrt",         [MS_SQUARE] = "square",     [MS_RECIPROCAL] = "reciprocal",
    [MS_TANH] = "tanh",         [MS_SIGMOID] = "sigmoid",   [MS_RELU] = "relu",
    [MS_SOFTPLUS] = "softplus", [MS_SIN] = "sin",           [MS_COS] = "cos",
    [MS_SIGN] = "sign",         [MS_FLOOR] = "floor",       [MS_CEIL] = "ceil",
    [MS_ROUND] = "round",       [MS_ISFINITE] = "isfinite",
};
_Static_assert(sizeof unop_names / sizeof unop_names[0] == MS_UNOP_COUNT,
               "unop_names needs one entry per ms_unop");

static const char *const redop_names[] = {
    [MS_SUM] = "sum",       [MS_MEAN] = "mean",     [MS_MAX] = "max",
    [MS_MIN] = "min",       [MS_PROD] = "prod",     [MS_NORM] = "norm",
    [MS_ARGMAX] = "argmax", [MS_ARGMIN] = "argmin", [MS_LOGSUMEXP] = "logsumexp",
};
_Static_assert(sizeof redop_names / sizeof redop_names[0] == MS_REDOP_COUNT,
               "redop_names needs one entry per ms_redop");

const char *ms_binop_name(ms_binop op) {
  return (unsigned)op < MS_BINOP_COUNT ? binop_names[op] : "?";
}

const char *ms_unop_name(ms_unop op) { return (unsigned)op < MS_UNOP_COUNT ? unop_names[op] : "?"; }

const char *ms_redop_name(ms_redop op) {
  return (unsigned)op < MS_REDOP_COUNT ? redop_names[op] : "?";
}

/* ---- broadcasting ---- */

/*
 * Broadcast shape of n shapes, right-aligned. One helper for two and three operands so
 * the message lists every shape involved ("where: shapes [2], [3] and [4] do not broadcast").
 */
static int broadcast_n(ms_ctx *ctx, const char *what, int n, const int *nds,
                       const int64_t *const *shapes, int *nd, int64_t *shape) {
  int out_nd = 0;
  for (int k = 0; k < n; k++) {
    if (nds[k] < 0 || nds[k] > MS_MAXDIM)
      return ms_ctx_fail(ctx, MS_EARG, "%s: expected at most %d dimensions, got %d", what,
                         MS_MAXDIM, nds[k]);
    for (int i = 0; i < nds[k]; i++)
      if (shapes[k][i] < 0)
        return ms_ctx_fail(ctx, MS_EARG, "%s: size %lld of dimension %d is negative", what,
                           (long long)shapes[k][i], i + 1);
    if (nds[k] > out_nd) out_nd = nds[k];
  }
  int64_t res[MS_MAXDIM] = {0};
  for (int i = 0; i < out_nd; i++) {
    int64_t size = 1;
    for (int k = 0; k < n; k++) {
      int j = i - (out_nd - nds[k]);
      if (j < 0 || shapes[k][j] == 1) continue;
      if (size == 1) {
        size = shapes[k][j];
      } else if (shapes[k][j] != size) {
        goto mismatch;
      }
    }
    res[i] = size;
  }
  /* [2^40, 1] and [1, 2^40] broadcast to 2^80 elements: the result must be a valid shape */
  int st = ms__shape_numel(ctx, what, out_nd, res, NULL);
  if (st) return st;
  *nd = out_nd;
  if (out_nd > 0) memcpy(shape, res, (size_t)out_nd * sizeof(int64_t));
  return MS_OK;

mismatch : {
  char b[3][MS_SHAPE_STRLEN];
  for (int k = 0; k < n && k < 3; k++) ms_shape_str(nds[k], shapes[k], b[k], sizeof b[k]);
  if (n == 2)
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: shapes %s and %s do not broadcast", what, b[0], b[1]);
  return ms_ctx_fail(ctx, MS_ESHAPE, "%s: shapes %s, %s and %s do not broadcast", what, b[0], b[1],
                     b[2]);
}
}

int ms_broadcast_shape(ms_ctx *ctx, const char *what, int nda, const int64_t *sa, int ndb,
                       const int64_t *sb, int *nd, int64_t *shape) {
  int nds[2] = {nda, ndb};
  const int64_t *shapes[2] = {sa, sb};
  return broadcast_n(ctx, what, 2, nds, shapes, nd, shape);
}

/* Broadcast shape of n tensors (n <= 3). */
static int broadcast_tensors(ms_ctx *ctx, const char *what, int n, const ms_tensor *const *ts,
                             int *nd, int64_t *shape) {
  int nds[3];
  const int64_t *shapes[3];
  for (int k = 0; k < n; k++) {
    nds[k] = ts[k]->ndim;
    shapes[k] = ts[k]->shape;
  }
  return broadcast_n(ctx, what, n, nds, shapes, nd, shape);
}

/* ---- the loop skeleton ---- */

#define MAXIN 3

typedef struct loop {
  int nd; /* >= 1 after loop_init */
  int nin;
  int64_t shape[MS_MAXDIM];
  int64_t st[MAXIN][MS_MAXDIM];
  const double *base[MAXIN];
} loop;

/* t's strides seen through a broadcast to (nd, shape): 0 on new or size-1 axes. */
static void broadcast_strides(const ms_tensor *t, int nd, int64_t *st) {
  for (int i = 0; i < nd; i++) {
    int j = i - (nd - t->ndim);
    st[i] = (j < 0 || t->shape[j] == 1) ? 0 : t->strides[j];
  }
}

/*
 * Builds the loop over an output of shape (nd, shape), given each input's strides already
 * aligned to that shape. Size-1 axes are dropped; axis i merges into the previous kept
 * axis p when st[p] == st[i] * shape[i] for every input (the output, being contiguous,
 * always allows it). The caller handles empty outputs before running the loop.
 */
static void loop_init(loop *lp, int nd, const int64_t *shape, int nin, int64_t (*st)[MS_MAXDIM],
                      const double *const *base) {
  lp->nd = 0;
  lp->nin = nin;
  for (int k = 0; k < nin; k++) lp->base[k] = base[k];
  for (int i = 0; i < nd; i++) {
    if (shape[i] == 1) continue;
    int p = lp->nd - 1, merge = p >= 0;
    for (int k = 0; merge && k < nin; k++)
      if (lp->st[k][p] != st[k][i] * shape[i]) merge = 0;
    if (merge) {
      lp->shape[p] *= shape[i];
      for (int k = 0; k < nin; k++) lp->st[k][p] = st[k][i];
    } else {
      lp->shape[lp->nd] = shape[i];
      for (int k = 0; k < nin; k++) lp->st[k][lp->nd] = st[k][i];
      lp->nd++;
    }
  }
  if (lp->nd == 0) {
    lp->nd = 1;
    lp->shape[0] = 1;
    for (int k = 0; k < nin; k++) lp->st[k][0] = 0;
  }
}

/* Loop over tensors broadcast to (nd, shape). */
static void loop_tensors(loop *lp, int nd, const int64_t *shape, int nin,
                         const ms_tensor *const *ts) {
  int64_t st[MAXIN][MS_MAXDIM];
  const double *base[MAXIN];
  for (int k = 0; k < nin; k++) {
    broadcast_strides(ts[k], nd, st[k]);
    base[k] = MS_TENSOR_DATA(ts[k]);
  }
  loop_init(lp, nd, shape, nin, st, base);
}

/*
 * A row kernel processes n elements: input k at p[k][i * s[k]], output (if any) at out[i].
 * arg carries the op and any constants.
 */
typedef void (*row_fn)(void *arg, int64_t n, const double *const *p, const int64_t *s, double *out);

/* Runs fn over every innermost row; out (may be NULL) is contiguous in row-major order. */
static void loop_run(const loop *lp, row_fn fn, void *arg, double *out) {
  int nd = lp->nd, nin = lp->nin;
  int64_t n = lp->shape[nd - 1], rows = 1, idx[MS_MAXDIM] = {0}, s[MAXIN];
  const double *p[MAXIN];
  for (int d = 0; d < nd - 1; d++) rows *= lp->shape[d];
  for (int k = 0; k < nin; k++) {
    p[k] = lp->base[k];
    s[k] = lp->st[k][nd - 1];
  }
  for (int64_t r = 0; r < rows; r++) {
    fn(arg, n, p, s, out);
    if (out) out += n;
    for (int d = nd - 2; d >= 0; d--) {
      for (int k = 0; k < nin; k++) p[k] += lp->st[k][d];
      if (++idx[d] < lp->shape[d]) break;
      for (int k = 0; k < nin; k++) p[k] -= lp->st[k][d] * lp->shape[d];
      idx[d] = 0;
    }
  }
}

/* ---- binary ---- */

/*
 * The body runs with x, y bound to the two inputs. Unit-stride and scalar (stride 0)
 * cases get their own loops so the compiler can vectorize the common shapes.
 */
#define BINLOOP(expr)                        \
  do {                                       \
    if (sa == 1 && sb == 1) {                \
      for (int64_t i = 0; i < n; i++) {      \
        double x = a[i], y = b[i];           \
        o[i] = (expr);                       \
      }                                      \
    } else if (sa == 1 && sb == 0) {         \
      double y = b[0];                       \
      for (int64_t i = 0; i < n; i++) {      \
        double x = a[i];                     \
        o[i] = (expr);                       \
      }                                      \
    } else if (sa == 0 && sb == 1) {         \
      double x = a[0];                       \
      for (int64_t i = 0; i < n; i++) {      \
        double y = b[i];                     \
        o[i] = (expr);                       \
      }                                      \
    } else {                                 \
      for (int64_t i = 0; i < n; i++) {      \
        double x = a[i * sa], y = b[i * sb]; \
        o[i] = (expr);                       \
      }                                      \
    }                                        \
  } while (0)

/* maximum/minimum propagate NaN from either side, as NumPy's do (fmax would drop it). */
static inline double nan_max(double x, double y) { return (x > y || x != x) ? x : y; }
static inline double nan_min(double x, double y) { return (x < y || x != x) ? x : y; }

static void binary_kernel(ms_binop op, int64_t n, const double *a, int64_t sa, const double *b,
                          int64_t sb, double *o) {
  switch (op) {
    case MS_ADD:
      BINLOOP(x + y);
      break;
    case MS_SUB:
      BINLOOP(x - y);
      break;
    case MS_MUL:
      BINLOOP(x * y);
      break;
    case MS_DIV:
      BINLOOP(x / y);
      break;
    case MS_POW:
      BINLOOP(pow(x, y));
      break;
    case MS_MAXIMUM:
      BINLOOP(nan_max(x, y));
      break;
    case MS_MINIMUM:
      BINLOOP(nan_min(x, y));
      break;
    case MS_ATAN2:
      BINLOOP(atan2(x, y));
      break;
    case MS_LT:
      BINLOOP(x < y ? 1.0 : 0.0);
      break;
    case MS_LE:
      BINLOOP(x <= y ? 1.0 : 0.0);
      break;
    case MS_GT:
      BINLOOP(x > y ? 1.0 : 0.0);
      break;
    case MS_GE:
      BINLOOP(x >= y ? 1.0 : 0.0);
      break;
    case MS_EQ:
      BINLOOP(x == y ? 1.0 : 0.0);
      break;
    case MS_NE:
      BINLOOP(x != y ? 1.0 : 0.0);
      break;
    case MS_BINOP_COUNT:
      break; /* rejected by the callers; no default: -Wswitch wants every op */
  }
}

/* out, of the given shape = fn applied row by row to the n tensors ts (of that shape, or
 * broadcast to it). */
static inline int map_rows(ms_ctx *ctx, int nd, const int64_t *shape, int n,
                           const ms_tensor *const *ts, row_fn fn, void *arg, ms_tensor **out) {
  ms_tensor *r;
  int st = ms__tensor_alloc(ctx, nd, shape, &r);
  if (st) return st;
  if (r->numel > 0) {
    loop lp;
    loop_tensors(&lp, nd, shape, n, ts);
    loop_run(&lp, fn, arg, MS_TENSOR_DATA(r));
  }
  *out = r;
  return MS_OK;
}

/* out = fn applied row by row to the n tensors ts broadcast together (what names the op in
 * a shape error). */
static int broadcast_map(ms_ctx *ctx, const char *what, int n, const ms_tensor **ts, row_fn fn,
                         void *arg, ms_tensor **out) {
  int nd;
  int64_t shape[MS_MAXDIM];
  int st = broadcast_tensors(ctx, what, n, ts, &nd, shape);
  if (st) return st;
  return map_rows(ctx, nd, shape, n, ts, fn, arg, out);
}

static void binary_row(void *arg, int64_t n, const double *const *p, const int64_t *s,
                       double *out) {
  binary_kernel(*(const ms_binop *)arg, n, p[0], s[0], p[1], s[1], out);
}

int ms__binary(ms_ctx *ctx, ms_binop op, const ms_tensor *a, const ms_tensor *b, ms_tensor **out) {
  *out = NULL;
  if ((unsigned)op >= MS_BINOP_COUNT)
    return ms_ctx_fail(ctx, MS_EARG, "binary: unknown op %d", (int)op);
  const ms_tensor *ts[2] = {a, b};
  return broadcast_map(ctx, ms_binop_name(op), 2, ts, binary_row, &op, out);
}

typedef struct scalar_arg {
  ms_binop op;
  double s;
  int left;
} scalar_arg;

static void scalar_row(void *arg, int64_t n, const double *const *p, const int64_t *s,
                       double *out) {
  const scalar_arg *sc = arg;
  if (sc->left)
    binary_kernel(sc->op, n, &sc->s, 0, p[0], s[0], out);
  else
    binary_kernel(sc->op, n, p[0], s[0], &sc->s, 0, out);
}

int ms__binary_scalar(ms_ctx *ctx, ms_binop op, const ms_tensor *a, double s, int scalar_left,
                      ms_tensor **out) {
  *out = NULL;
  if ((unsigned)op >= MS_BINOP_COUNT)
    return ms_ctx_fail(ctx, MS_EARG, "binary: unknown op %d", (int)op);
  scalar_arg sc = {op, s, scalar_left != 0};
  return map_rows(ctx, a->ndim, a->shape, 1, &a, scalar_row, &sc, out);
}

/* ---- unary ---- */

/* 1 / (1 + e^-x) without overflow: for x < 0 use e^x / (1 + e^x), where e^x <= 1. */
static inline double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + exp(-x));
  double e = exp(x);
  return e / (1.0 + e);
}

/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow, full precision for x << 0. */
static inline double softplus(double x) { return (x > 0 ? x : 0.0) + log1p(exp(-fabs(x))); }

static inline double sign(double x) { return x > 0 ? 1.0 : x < 0 ? -1.0 : x; /* keeps ±0, NaN */ }

/*
 * Round half to even, as NumPy and PyTorch do. Computed explicitly rather than with rint
 * so the result does not depend on the floating-point rounding mode.
 */
static inline double round_even(double x) {
  double r = round(x); /* half away from zero */
  if (fabs(r - x) == 0.5) r = 2.0 * round(0.5 * x);
  return r;
}

#define UNLOOP(expr)                    \
  do {                                  \
    if (sa == 1) {                      \
      for (int64_t i = 0; i < n; i++) { \
        double x = a[i];                \
        o[i] = (expr);                  \
      }                                 \
    } else {                            \
      for (int64_t i = 0; i < n; i++) { \
        double x = a[i * sa];           \
        o[i] = (expr);                  \
      }                                 \
    }                                   \
  } while (0)

static void unary_row(void *arg, int64_t n, const double *const *p, const int64_t *s, double *o) {
  const double *a = p[0];
  int64_t sa = s[0];
  switch (*(const ms_unop *)arg) {
    case MS_NEG:
      UNLOOP(-x);
      break;
    case MS_ABS:
      UNLOOP(fabs(x));
      break;
    case MS_EXP:
      UNLOOP(exp(x));
      break;
    case MS_LOG:
      UNLOOP(log(x));
      break;
    case MS_LOG1P:
      UNLOOP(log1p(x));
      break;
    case MS_EXPM1:
      UNLOOP(expm1(x));
      break;
    case MS_SQRT:
      UNLOOP(sqrt(x));
      break;
    case MS_SQUARE:
      UNLOOP(x * x);
      break;
    case MS_RECIPROCAL:
      UNLOOP(1.0 / x);
      break;
    case MS_TANH:
      UNLOOP(tanh(x));
      break;
    case MS_SIGMOID:
      UNLOOP(sigmoid(x));
      break;
    case MS_RELU:
      UNLOOP(x < 0 ? 0.0 : x);
      break; /* NaN stays NaN */
    case MS_SOFTPLUS:
      UNLOOP(softplus(x));
      break;
    case MS_SIN:
      UNLOOP(sin(x));
      break;
    case MS_COS:
      UNLOOP(cos(x));
      break;
    case MS_SIGN:
      UNLOOP(sign(x));
      break;
    case MS_FLOOR:
      UNLOOP(floor(x));
      break;
    case MS_CEIL:
      UNLOOP(ceil(x));
      break;
    case MS_ROUND:
      UNLOOP(round_even(x));
      break;
    case MS_ISFINITE:
      UNLOOP(isfinite(x) ? 1.0 : 0.0);
      break;
    case MS_UNOP_COUNT:
      break; /* rejected by the caller; no default: -Wswitch wants every op */
  }
}

int ms__unary(ms_ctx *ctx, ms_unop op, const ms_tensor *a, ms_tensor **out) {
  *out = NULL;
  if ((unsigned)op >= MS_UNOP_COUNT)
    return ms_ctx_fail(ctx, MS_EARG, "unary: unknown op %d", (int)op);
  return map_rows(ctx, a->ndim, a->shape, 1, &a, unary_row, &op, out);
}

/* ---- where, clamp ---- */

static void where_row(void *arg, int64_t n, const double *const *p, const int64_t *s, double *o) {
  (void)arg;
  const double *c = p[0], *a = p[1], *b = p[2];
  for (int64_t i = 0; i < n; i++) o[i] = c[i * s[0]] != 0 ? a[i * s[1]] : b[i * s[2]];
}

int ms__where(ms_ctx *ctx, const ms_tensor *cond, const ms_tensor *a, const ms_tensor *b,
              ms_tensor **out) {
  *out = NULL;
  const ms_tensor *ts[3] = {cond, a, b};
  return broadcast_map(ctx, "where", 3, ts, where_row, NULL, out);
}

static void clamp_row(void *arg, int64_t n, const double *const *p, const int64_t *s, double *o) {
  const double *lohi = arg, *a = p[0];
  double lo = lohi[0], hi = lohi[1];
  /* Comparisons rather than fmin/fmax so a NaN element stays NaN. */
  for (int64_t i = 0; i < n; i++) {
    double x = a[i * s[0]];
    o[i] = x < lo ? lo : x > hi ? hi : x;
  }
}

int ms__clamp(ms_ctx *ctx, const ms_tensor *a, double lo, double hi, ms_tensor **out) {
  *out = NULL;
  if (!(lo <= hi)) /* also rejects NaN bounds */
    return ms_ctx_fail(ctx, MS_EARG, "clamp: lo (%g) must be <= hi (%g)", lo, hi);
  double lohi[2] = {lo, hi};
  return map_rows(ctx, a->ndim, a->shape, 1, &a, clamp_row, lohi, out);
}

/* ---- checks and comparisons ---- */

static void finite_row(void *arg, int64_t n, const double *const *p, const int64_t *s, double *o) {
  (void)o;
  int *ok = arg;
  const double *a = p[0];
  for (int64_t i = 0; i < n && *ok; i++)
    if (!isfinite(a[i * s[0]])) *ok = 0;
}

int ms_tensor_all_finite(const ms_tensor *t) {
  if (t->numel == 0) return 1;
  int ok = 1;
  loop lp;
  loop_tensors(&lp, t->ndim, t->shape, 1, &t);
  loop_run(&lp, finite_row, &ok, NULL);
  return ok;
}

static void diff_row(void *arg, int64_t n, const double *const *p, const int64_t *s, double *o) {
  (void)o;
  double *m = arg;
  const double *a = p[0], *b = p[1];
  for (int64_t i = 0; i < n; i++) {
    double x = a[i * s[0]], y = b[i * s[1]];
    double d = x == y ? 0.0 : fabs(x - y); /* equal infinities differ by 0, not NaN */
    if (d > *m || d != d) *m = d;
  }
}

int ms_max_abs_diff(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, double *out) {
  const ms_tensor *ts[2] = {a, b};
  int nd;
  int64_t shape[MS_MAXDIM];
  int st = broadcast_tensors(ctx, "max_abs_diff", 2, ts, &nd, shape);
  if (st) return st;
  double m = 0.0;
  int64_t numel = 0;
  st = ms__shape_numel(ctx, "max_abs_diff", nd, shape, &numel);
  if (st) return st;
  if (numel > 0) {
    loop lp;
    loop_tensors(&lp, nd, shape, 2, ts);
    loop_run(&lp, diff_row, &m, NULL);
  }
  *out = m;
  return MS_OK;
}

/* ---- reductions ---- */

/* Pairwise summation: error grows like log n instead of n, at no extra cost. */
static double sum_row(const double *x, int64_t n, int64_t s) {
  if (n <= 128) {
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) acc += x[i * s];
    return acc;
  }
  int64_t h = n / 2;
  return sum_row(x, h, s) + sum_row(x + h * s, n - h, s);
}

/* NaN-propagating max/min of a nonempty row. */
static double max_row(const double *x, int64_t n, int64_t s) {
  double m = x[0];
  for (int64_t i = 1; i < n && m == m; i++) m = nan_max(x[i * s], m);
  return m;
}

static double min_row(const double *x, int64_t n, int64_t s) {
  double m = x[0];
  for (int64_t i = 1; i < n && m == m; i++) m = nan_min(x[i * s], m);
  return m;
}

/* First index of the max (min); a NaN counts as the extreme, so its first index wins. */
static double argext_row(const double *x, int64_t n, int64_t s, int want_max) {
  int64_t k = 0;
  double m = x[0];
  if (m != m) return 0.0;
  for (int64_t i = 1; i < n; i++) {
    double v = x[i * s];
    if (v != v) return (double)i;
    if (want_max ? v > m : v < m) {
      m = v;
      k = i;
    }
  }
  return (double)k;
}

/*
 * 2-norm. The plain sum of squares is exact enough unless it overflowed, underflowed
 * into the subnormals, or met an inf/NaN; only then rescale by the largest magnitude.
 */
static double norm_row(const double *x, int64_t n, int64_t s) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; i++) ss += x[i * s] * x[i * s];
  if (ss >= 0x1p-900 && ss <= DBL_MAX) return sqrt(ss);
  double m = 0.0;
  for (int64_t i = 0; i < n; i++) m = nan_max(fabs(x[i * s]), m);
  if (m == 0.0 || isinf(m) || isnan(m)) return m;
  ss = 0.0;
  for (int64_t i = 0; i < n; i++) {
    double t = x[i * s] / m;
    ss += t * t;
  }
  return m * sqrt(ss);
}

/*
 * log(sum(exp(x))) = m + log(sum(exp(x - m))) with m the max, so the largest term is
 * exp(0) = 1 and nothing overflows. m = -inf (all -inf, or empty) gives -inf; m = +inf
 * gives +inf (x - m would be inf - inf = NaN); a NaN anywhere gives NaN.
 */
static double logsumexp_row(const double *x, int64_t n, int64_t s) {
  if (n == 0) return -INFINITY;
  double m = max_row(x, n, s);
  if (isnan(m) || isinf(m)) return m;
  double acc = 0.0;
  for (int64_t i = 0; i < n; i++) acc += exp(x[i * s] - m);
  return m + log(acc);
}

/* Reduces n elements at stride s. n == 0 only for ops that allow an empty input. */
static double reduce_row(ms_redop op, const double *x, int64_t n, int64_t s) {
  switch (op) {
    case MS_SUM:
      return sum_row(x, n, s);
    case MS_MEAN:
      return sum_row(x, n, s) / (double)n; /* empty: 0/0 = NaN, as NumPy */
    case MS_MAX:
      return max_row(x, n, s);
    case MS_MIN:
      return min_row(x, n, s);
    case MS_PROD: {
      double p = 1.0;
      for (int64_t i = 0; i < n; i++) p *= x[i * s];
      return p;
    }
    case MS_NORM:
      return norm_row(x, n, s);
    case MS_ARGMAX:
      return argext_row(x, n, s, 1);
    case MS_ARGMIN:
      return argext_row(x, n, s, 0);
    case MS_LOGSUMEXP:
      return logsumexp_row(x, n, s);
    case MS_REDOP_COUNT:
      break; /* rejected by the caller; no default: -Wswitch wants every op */
  }
  return NAN;
}

typedef struct reduce_arg {
  ms_redop op;
  int64_t len, stride; /* the reduced axis */
} reduce_arg;

/* The loop runs over the kept axes; each output element reduces one strided row. */
static void reduce_kernel(void *arg, int64_t n, const double *const *p, const int64_t *s,
                          double *o) {
  const reduce_arg *ra = arg;
  for (int64_t i = 0; i < n; i++) o[i] = reduce_row(ra->op, p[0] + i * s[0], ra->len, ra->stride);
}

static void copy_row(void *arg, int64_t n, const double *const *p, const int64_t *s, double *o) {
  (void)arg;
  for (int64_t i = 0; i < n; i++) o[i] = p[0][i * s[0]];
}

/*
 * Reduction of a dense [outer, len, inner] block along the middle axis with inner > 1:
 * accumulate whole unit-stride rows into the output instead of walking each column at
 * stride inner, so memory is read once, in order. Only for ops with a one-pass combine.
 */
static int dense_reducible(ms_redop op) {
  return op == MS_SUM || op == MS_MEAN || op == MS_PROD || op == MS_MAX || op == MS_MIN;
}

static void reduce_dense(ms_redop op, const double *x, int64_t outer, int64_t len, int64_t inner,
                         double *o) {
  for (int64_t ob = 0; ob < outer; ob++, x += len * inner, o += inner) {
    memcpy(o, x, (size_t)inner * sizeof(double));
    for (int64_t l = 1; l < len; l++) {
      const double *row = x + l * inner;
      switch (op) {
        case MS_SUM:
        case MS_MEAN:
          for (int64_t j = 0; j < inner; j++) o[j] += row[j];
          break;
        case MS_PROD:
          for (int64_t j = 0; j < inner; j++) o[j] *= row[j];
          break;
        case MS_MAX:
          for (int64_t j = 0; j < inner; j++) o[j] = nan_max(row[j], o[j]);
          break;
        case MS_MIN:
          for (int64_t j = 0; j < inner; j++) o[j] = nan_min(row[j], o[j]);
          break;
        default:
          break;
      }
    }
    if (op == MS_MEAN)
      for (int64_t j = 0; j < inner; j++) o[j] /= (double)len;
  }
}

static int needs_nonempty(ms_redop op) {
  return op == MS_MAX || op == MS_MIN || op == MS_ARGMAX || op == MS_ARGMIN;
}

/* Reduction over every element; argmax/argmin give the flat row-major index. */
static int reduce_all(ms_ctx *ctx, ms_redop op, const ms_tensor *a, int keepdim, ms_tensor **out) {
  const char *name = ms_redop_name(op);
  char b[MS_SHAPE_STRLEN];
  if (a->numel == 0 && needs_nonempty(op))
    return ms_ctx_fail(ctx, MS_EARG, "%s: cannot reduce empty tensor of shape %s", name,
                       ms_shape_str(a->ndim, a->shape, b, sizeof b));
  int64_t ones[MS_MAXDIM];
  for (int i = 0; i < a->ndim; i++) ones[i] = 1;
  ms_tensor *r;
  int st = ms__tensor_alloc(ctx, keepdim ? a->ndim : 0, ones, &r);
  if (st) return st;
  double v;
  if (a->numel == 0) {
    v = reduce_row(op, NULL, 0, 1);
  } else {
    /*
     * Only argmax/argmin care about row-major order. The other ops may visit elements in
     * memory order, so sort the axes by decreasing stride first: a transposed or permuted
     * contiguous tensor then merges into one unit-stride row.
     */
    int nd = a->ndim;
    int64_t shape[MS_MAXDIM], strides[1][MS_MAXDIM];
    const double *base = MS_TENSOR_DATA(a);
    for (int i = 0; i < nd; i++) {
      shape[i] = a->shape[i];
      strides[0][i] = a->strides[i];
    }
    if (op != MS_ARGMAX && op != MS_ARGMIN) {
      for (int i = 1; i < nd; i++)
        for (int j = i; j > 0 && strides[0][j - 1] < strides[0][j]; j--) {
          int64_t ts = strides[0][j], tn = shape[j];
          strides[0][j] = strides[0][j - 1], shape[j] = shape[j - 1];
          strides[0][j - 1] = ts, shape[j - 1] = tn;
        }
    }
    loop lp;
    loop_init(&lp, nd, shape, 1, strides, &base);
    if (lp.nd == 1) {
      /* One strided row covers everything (contiguous, or a slice, or a transposed vector). */
      v = reduce_row(op, lp.base[0], lp.shape[0], lp.st[0][0]);
    } else {
      /* Axes that still do not merge (a slice of a transpose, ...): gather them once. */
      size_t nbytes = (size_t)a->numel * sizeof(double);
      double *tmp = ms_ctx_alloc(ctx, nbytes);
      if (tmp == NULL) {
        ms_tensor_release(r);
        return MS_ENOMEM;
      }
      loop_run(&lp, copy_row, NULL, tmp);
      v = reduce_row(op, tmp, a->numel, 1);
      ms_ctx_dealloc(ctx, tmp, nbytes);
    }
  }
  MS_TENSOR_DATA(r)[0] = v;
  *out = r;
  return MS_OK;
}

int ms__reduce(ms_ctx *ctx, ms_redop op, const ms_tensor *a, int axis, int keepdim,
               ms_tensor **out) {
  *out = NULL;
  if ((unsigned)op >= MS_REDOP_COUNT)
    return ms_ctx_fail(ctx, MS_EARG, "reduce: unknown op %d", (int)op);
  if (axis == MS_ALL) return reduce_all(ctx, op, a, keepdim, out);
  const char *name = ms_redop_name(op);
  int ax;
  int st = ms__axis(ctx, name, axis, a->ndim, &ax);
  if (st) return st;
  int64_t len = a->shape[ax];
  if (len == 0 && needs_nonempty(op)) {
    char b[MS_SHAPE_STRLEN];
    return ms_ctx_fail(ctx, MS_EARG, "%s: cannot reduce empty axis %d of shape %s", name, axis,
                       ms_shape_str(a->ndim, a->shape, b, sizeof b));
  }

  /* Kept geometry: a's shape and strides without the reduced axis. */
  int knd = 0;
  int64_t kshape[MS_MAXDIM], kst[1][MS_MAXDIM], oshape[MS_MAXDIM], inner = 1;
  for (int d = ax + 1; d < a->ndim; d++) inner *= a->shape[d];
  for (int d = 0; d < a->ndim; d++) {
    oshape[d] = d == ax ? 1 : a->shape[d];
    if (d == ax) continue;
    kshape[knd] = a->shape[d];
    kst[0][knd++] = a->strides[d];
  }
  ms_tensor *r;
  st =
      keepdim ? ms__tensor_alloc(ctx, a->ndim, oshape, &r) : ms__tensor_alloc(ctx, knd, kshape, &r);
  if (st) return st;
  double *o = MS_TENSOR_DATA(r);
  if (r->numel == 0) {
    /* nothing to compute */
  } else if (len == 0) {
    double v = reduce_row(op, NULL, 0, 1);
    for (int64_t i = 0; i < r->numel; i++) o[i] = v;
  } else if (dense_reducible(op) && len > 1 && inner > 1 && ms_tensor_is_contiguous(a)) {
    /* the axis is not innermost: accumulate unit-stride rows instead of strided columns */
    reduce_dense(op, MS_TENSOR_DATA(a), r->numel / inner, len, inner, o);
  } else {
    const double *base = MS_TENSOR_DATA(a);
    reduce_arg ra = {op, len, a->strides[ax]};
    loop lp;
    loop_init(&lp, knd, kshape, 1, kst, &base);
    loop_run(&lp, reduce_kernel, &ra, o);
  }
  *out = r;
  return MS_OK;
}
