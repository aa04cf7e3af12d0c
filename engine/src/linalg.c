/*
 * Linear algebra through CBLAS and LAPACKE. This is the only file that includes
 * cblas.h / lapacke.h, so the rest of the engine never depends on their types.
 *
 * BLAS products read strided inputs in place when the layout allows it (a row-major
 * matrix with a padded leading dimension, or a transposed view passed as CblasTrans);
 * anything else is copied to contiguous storage first. LAPACK overwrites its input,
 * so the LAPACK wrappers always work on a fresh copy (ms__copy), never on a
 * retained input.
 */
#include <cblas.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

/* ---- helpers ---- */

/* Two shape strings for messages; each buffer holds one ms_shape_str result. */
typedef struct shapes {
  char a[MS_SHAPE_STRLEN], b[MS_SHAPE_STRLEN];
} shapes;

static const char *sa(shapes *s, const ms_tensor *t) {
  return ms_shape_str(t->ndim, t->shape, s->a, sizeof s->a);
}

static const char *sb(shapes *s, const ms_tensor *t) {
  return ms_shape_str(t->ndim, t->shape, s->b, sizeof s->b);
}

static int64_t max1(int64_t x) { return x > 1 ? x : 1; }

static int fits_int(int64_t x) { return x >= 0 && x <= INT_MAX; }

/* BLAS and LAPACK take int sizes; every dimension (and the leading dimensions derived
 * from them) must fit. */
static int check_int_dims(ms_ctx *ctx, const char *what, const ms_tensor *t) {
  for (int i = 0; i < t->ndim; i++) {
    if (!fits_int(t->shape[i])) {
      shapes s;
      return ms_ctx_fail(ctx, MS_ESHAPE, "%s: shape %s is too large for BLAS/LAPACK (int sizes)",
                         what, sa(&s, t));
    }
  }
  /* A row-major matrix also needs rows * cols addressable by LAPACK's int arithmetic. */
  if (t->ndim == 2 && t->shape[0] > 0 && t->shape[1] > INT_MAX / t->shape[0]) {
    shapes s;
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: shape %s is too large for BLAS/LAPACK (int sizes)",
                       what, sa(&s, t));
  }
  return MS_OK;
}

static int check_not_null(ms_ctx *ctx, const char *what, const ms_tensor *a, const ms_tensor *b) {
  if (a == NULL || b == NULL) return ms_ctx_fail(ctx, MS_EARG, "%s: tensor argument is NULL", what);
  return MS_OK;
}

static int check_square(ms_ctx *ctx, const char *what, const ms_tensor *a) {
  if (a == NULL) return ms_ctx_fail(ctx, MS_EARG, "%s: tensor argument is NULL", what);
  if (a->ndim != 2 || a->shape[0] != a->shape[1]) {
    shapes s;
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: expected a square matrix, got %s", what, sa(&s, a));
  }
  return check_int_dims(ctx, what, a);
}

/*
 * The one symmetry check (eigh, cholesky, the stable unroll): LAPACK's symmetric routines read
 * one triangle, so a non-symmetric matrix would be silently replaced by a symmetric one.
 * Tolerance: 1e-10 * max |a_ij| (rounding in a product like X^T X stays far below it). The
 * message gives the largest asymmetry and where it is. Non-finite entries are left to the
 * caller's finiteness check.
 */
int ms__check_symmetric(ms_ctx *ctx, const char *what, const char *arg, const ms_tensor *a) {
  const double *p = MS_TENSOR_DATA(a);
  int64_t n = a->shape[0], s0 = a->strides[0], s1 = a->strides[1], bi = 0, bj = 0;
  double big = 0, asym = 0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double x = p[i * s0 + j * s1], y = p[j * s0 + i * s1], d = fabs(x - y);
      if (fabs(x) > big) big = fabs(x);
      if (d > asym) asym = d, bi = i, bj = j;
    }
  if (asym > 1e-10 * big)
    return ms_ctx_fail(ctx, MS_EARG,
                       "%s: %s must be symmetric, max |%s - %s^T| = %g at %s[%lld,%lld] (0-based; "
                       "tolerance 1e-10 * max|%s| = %g)",
                       what, arg, arg, arg, asym, arg, (long long)(bi < bj ? bi : bj),
                       (long long)(bi < bj ? bj : bi), arg, 1e-10 * big);
  return MS_OK;
}

/*
 * LAPACKE rejects NaN inputs as an invalid argument (its NaN check), and an infinity
 * silently turns the factorization into NaNs, so non-finite entries are refused up
 * front with the position of the first one. t is contiguous.
 */
static int check_finite(ms_ctx *ctx, const char *what, const char *arg, const ms_tensor *t) {
  const double *p = MS_TENSOR_DATA(t);
  for (int64_t i = 0; i < t->numel; i++) {
    if (!isfinite(p[i])) {
      int64_t idx[MS_MAXDIM];
      int64_t rest = i;
      for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->shape[d] ? rest % t->shape[d] : 0;
        rest = t->shape[d] ? rest / t->shape[d] : 0;
      }
      char pos[MS_SHAPE_STRLEN];
      ms_shape_str(t->ndim, idx, pos, sizeof pos);
      return ms_ctx_fail(ctx, MS_EARG, "%s: %s has a non-finite element (%s at %s)", what, arg,
                         isnan(p[i]) ? "nan" : (p[i] > 0 ? "inf" : "-inf"), pos);
    }
  }
  return MS_OK;
}

/* Maps a negative LAPACKE info (bad argument or LAPACKE's own allocation failure). */
static int lapack_arg_fail(ms_ctx *ctx, const char *what, const char *routine, lapack_int info) {
  if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR)
    return ms_ctx_fail(ctx, MS_ENOMEM, "%s: %s could not allocate its workspace", what, routine);
  return ms_ctx_fail(ctx, MS_EARG, "%s: %s rejected argument %d", what, routine, (int)-info);
}

/*
 * A 2-D operand as BLAS sees it: element (i, j) at p[i*ld + j] (NoTrans) or
 * p[j*ld + i] (Trans). keep holds the contiguous copy when one was needed (else NULL).
 */
typedef struct blasmat {
  ms_tensor *keep;
  const double *p;
  CBLAS_TRANSPOSE tr;
  int ld;
} blasmat;

static int blas_layout(const ms_tensor *t, blasmat *m) {
  int64_t r = t->shape[0], c = t->shape[1];
  int64_t sr = t->strides[0], sc = t->strides[1];
  /* Row-major, possibly with a padded leading dimension (a column slice). */
  if (sc == 1 || c <= 1) {
    int64_t ld = r <= 1 ? max1(c) : sr;
    if (ld >= max1(c) && fits_int(ld)) {
      m->tr = CblasNoTrans;
      m->ld = (int)ld;
      return 1;
    }
  }
  /* Column-major: a transposed view of a row-major matrix. */
  if (sr == 1 || r <= 1) {
    int64_t ld = c <= 1 ? max1(r) : sc;
    if (ld >= max1(r) && fits_int(ld)) {
      m->tr = CblasTrans;
      m->ld = (int)ld;
      return 1;
    }
  }
  return 0;
}

/* Prepares a 2-D operand for BLAS, copying only if its layout cannot be described. */
static int prep_mat(ms_ctx *ctx, const ms_tensor *t, blasmat *m) {
  m->keep = NULL;
  if (!blas_layout(t, m)) {
    int st = ms__contiguous(ctx, t, &m->keep);
    if (st != MS_OK) return st;
    m->tr = CblasNoTrans;
    m->ld = (int)max1(t->shape[1]);
    m->p = MS_TENSOR_DATA(m->keep);
    return MS_OK;
  }
  m->p = MS_TENSOR_DATA(t);
  return MS_OK;
}

/* A 1-D operand for BLAS: x[i] at p[i*inc]. BLAS needs inc >= 1, so an expanded
 * (stride 0) vector is copied. */
typedef struct blasvec {
  ms_tensor *keep;
  const double *p;
  int inc;
} blasvec;

static int prep_vec(ms_ctx *ctx, const ms_tensor *t, blasvec *v) {
  v->keep = NULL;
  int64_t s = t->strides[0];
  if (t->shape[0] <= 1) s = 1;
  if (s >= 1 && fits_int(s)) {
    v->p = MS_TENSOR_DATA(t);
    v->inc = (int)s;
    return MS_OK;
  }
  int st = ms__contiguous(ctx, t, &v->keep);
  if (st != MS_OK) return st;
  v->p = MS_TENSOR_DATA(v->keep);
  v->inc = 1;
  return MS_OK;
}

static void fill_zero(ms_tensor *t) {
  if (t->numel > 0) memset(MS_TENSOR_DATA(t), 0, (size_t)t->numel * sizeof(double));
}

/* ---- threads ---- */

/*
 * Below this much work (multiply-adds of one product; m k for a [m,k] matrix times a vector) a
 * product runs on one OpenBLAS thread. OpenBLAS 0.3.21 splits a dgemv over its threads from
 * m k >= 9216 on, and at d = 100 the second thread's wake-up costs more than it saves (the
 * issue measured d <= 100 20-40% slower with two threads, d >= 1000 up to 1.9x faster).
 * Measured here (2 cores, load average 8 from other jobs; best of 5): a d x d dgemv takes
 *   d = 100: 2.1 us on one thread, 9.5 us on two;  d = 200: 8.4 / 15.3;  d = 300: 17.7 / 21.3;
 *   d = 400: 30 / 36;  d = 600: 72 / 72;  d = 1000: 197 / 198,
 * so two threads lose below d = 500 and break even above it on a busy machine; on an idle one
 * they win at d >= 1000. Products of at least 512 x 512 multiply-adds use every core.
 */
#define MIN_THREADED_WORK ((int64_t)512 * 512)

int ms_linalg_threads(const ms_ctx *ctx, int64_t work) {
  if (ctx->threads > 0) return ctx->threads;
  if (ctx->threads_env) return openblas_get_num_threads();
  return work < MIN_THREADED_WORK ? 1 : openblas_get_num_procs();
}

/* Sets OpenBLAS's (process-wide) thread count for this much work (LAPACK: its BLAS-3 calls
 * inside run on it too). */
static void use_threads(ms_ctx *ctx, int64_t work) {
  int n = ms_linalg_threads(ctx, work);
  if (n != openblas_get_num_threads()) openblas_set_num_threads(n);
}

/* use_threads for a product, counted. */
static void before_product(ms_ctx *ctx, int64_t work) {
  use_threads(ctx, work);
  ctx->products++;
}

/* ---- products ---- */

/* [k] . [k] -> 0-d. Shapes already checked. */
static int dot_impl(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out) {
  ms_tensor *r = NULL;
  blasvec va = {0}, vb = {0};
  int st = ms__tensor_alloc(ctx, 0, NULL, &r);
  if (st == MS_OK) st = prep_vec(ctx, a, &va);
  if (st == MS_OK) st = prep_vec(ctx, b, &vb);
  if (st == MS_OK) {
    int n = (int)a->shape[0];
    *MS_TENSOR_DATA(r) = n > 0 ? cblas_ddot(n, va.p, va.inc, vb.p, vb.inc) : 0.0;
    *out = r;
    r = NULL;
  }
  ms_tensor_release(va.keep);
  ms_tensor_release(vb.keep);
  ms_tensor_release(r);
  return st;
}

/*
 * y = op(A) x through dgemv, where the [m,k] matrix is `a` itself (a_is_lhs) or the
 * transpose of a [k,m] `a` (a vector on the left: x^T a == a^T x). Shapes already checked.
 */
static int gemv_impl(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *x, int a_is_lhs,
                     ms_tensor **out) {
  int64_t m = a_is_lhs ? a->shape[0] : a->shape[1];
  int64_t k = a_is_lhs ? a->shape[1] : a->shape[0];
  ms_tensor *r = NULL;
  blasmat ma = {0};
  blasvec vx = {0};
  int st = ms__tensor_alloc(ctx, 1, &m, &r);
  if (st != MS_OK) return st;
  if (m == 0 || k == 0) {
    /* Nothing for BLAS to do (and it would reject the zero leading dimensions). */
    fill_zero(r);
    *out = r;
    return MS_OK;
  }
  st = prep_mat(ctx, a, &ma);
  if (st == MS_OK) st = prep_vec(ctx, x, &vx);
  if (st == MS_OK) {
    /* Storage of `a` is [rows, cols] in BLAS row-major terms; the op flips for a left vector. */
    int rows = (int)a->shape[0], cols = (int)a->shape[1];
    CBLAS_TRANSPOSE tr = ma.tr;
    if (!a_is_lhs) tr = tr == CblasNoTrans ? CblasTrans : CblasNoTrans;
    /* cblas_dgemv's m, n describe the stored matrix, which is [cols, rows] when Trans. */
    int sm = ma.tr == CblasNoTrans ? rows : cols;
    int sn = ma.tr == CblasNoTrans ? cols : rows;
    before_product(ctx, m * k);
    cblas_dgemv(CblasRowMajor, tr, sm, sn, 1.0, ma.p, ma.ld, vx.p, vx.inc, 0.0, MS_TENSOR_DATA(r),
                1);
    *out = r;
    r = NULL;
  }
  ms_tensor_release(ma.keep);
  ms_tensor_release(vx.keep);
  ms_tensor_release(r);
  return st;
}

void ms__gemv_raw(ms_ctx *ctx, const ms_tensor *a, int trans, double alpha, const double *x,
                  double beta, double *y) {
  int m = (int)a->shape[0], n = (int)a->shape[1];
  before_product(ctx, (int64_t)m * n);
  cblas_dgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, m, n, alpha, MS_TENSOR_DATA(a),
              n > 1 ? n : 1, x, 1, beta, y, 1);
}

void ms__symv_raw(ms_ctx *ctx, const ms_tensor *a, double alpha, const double *x, double beta,
                  double *y) {
  int n = (int)a->shape[0];
  before_product(ctx, (int64_t)n * n);
  cblas_dsymv(CblasRowMajor, CblasLower, n, alpha, MS_TENSOR_DATA(a), n > 1 ? n : 1, x, 1, beta, y,
              1);
}

double ms__dot_raw(int64_t n, const double *x, const double *y) {
  return n > 0 ? cblas_ddot((int)n, x, 1, y, 1) : 0.0;
}

/* [m,k] x [k,n] -> [m,n] through dgemm. Shapes already checked. */
static int gemm_impl(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out) {
  int64_t shape[2] = {a->shape[0], b->shape[1]};
  int64_t k = a->shape[1];
  ms_tensor *r = NULL;
  blasmat ma = {0}, mb = {0};
  int st = ms__tensor_alloc(ctx, 2, shape, &r);
  if (st != MS_OK) return st;
  if (shape[0] == 0 || shape[1] == 0 || k == 0) {
    fill_zero(r);
    *out = r;
    return MS_OK;
  }
  st = prep_mat(ctx, a, &ma);
  if (st == MS_OK) st = prep_mat(ctx, b, &mb);
  /* In blocks of rows of about 2^24 multiply-adds, polling the interrupt flag (and a host's
   * budget) between them, so a huge product stops within milliseconds of a request. */
  int64_t m = shape[0], n = shape[1], nk = n * k;
  int64_t rb = nk >= ((int64_t)1 << 24) ? 1 : ((int64_t)1 << 24) / nk;
  if (st == MS_OK) before_product(ctx, m * nk);
  for (int64_t i = 0; st == MS_OK && i < m; i += rb) {
    if (i > 0 && (st = ms_ctx_check_interrupt(ctx, "matmul"))) break;
    int64_t mi = m - i < rb ? m - i : rb;
    const double *pa = ma.p + (ma.tr == CblasNoTrans ? i * ma.ld : i);
    cblas_dgemm(CblasRowMajor, ma.tr, mb.tr, (int)mi, (int)n, (int)k, 1.0, pa, ma.ld, mb.p, mb.ld,
                0.0, MS_TENSOR_DATA(r) + i * n, (int)n);
  }
  if (st == MS_OK) {
    *out = r;
    r = NULL;
  }
  ms_tensor_release(ma.keep);
  ms_tensor_release(mb.keep);
  ms_tensor_release(r);
  return st;
}

int ms__dot(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out) {
  *out = NULL;
  int st = check_not_null(ctx, "dot", a, b);
  if (st != MS_OK) return st;
  shapes s;
  if (a->ndim != 1 || b->ndim != 1)
    return ms_ctx_fail(ctx, MS_ESHAPE, "dot: expected two vectors, got %s and %s", sa(&s, a),
                       sb(&s, b));
  if (a->shape[0] != b->shape[0])
    return ms_ctx_fail(ctx, MS_ESHAPE, "dot: shapes %s and %s are not aligned (%lld != %lld)",
                       sa(&s, a), sb(&s, b), (long long)a->shape[0], (long long)b->shape[0]);
  if ((st = check_int_dims(ctx, "dot", a)) != MS_OK) return st;
  return dot_impl(ctx, a, b, out);
}

int ms__matvec(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *x, ms_tensor **out) {
  *out = NULL;
  int st = check_not_null(ctx, "matvec", a, x);
  if (st != MS_OK) return st;
  shapes s;
  if (a->ndim != 2 || x->ndim != 1)
    return ms_ctx_fail(ctx, MS_ESHAPE, "matvec: expected a matrix and a vector, got %s and %s",
                       sa(&s, a), sb(&s, x));
  if (a->shape[1] != x->shape[0])
    return ms_ctx_fail(ctx, MS_ESHAPE, "matvec: shapes %s and %s are not aligned (%lld != %lld)",
                       sa(&s, a), sb(&s, x), (long long)a->shape[1], (long long)x->shape[0]);
  if ((st = check_int_dims(ctx, "matvec", a)) != MS_OK) return st;
  return gemv_impl(ctx, a, x, 1, out);
}

int ms__matmul(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out) {
  *out = NULL;
  int st = check_not_null(ctx, "matmul", a, b);
  if (st != MS_OK) return st;
  shapes s;
  if (a->ndim < 1 || a->ndim > 2 || b->ndim < 1 || b->ndim > 2)
    return ms_ctx_fail(ctx, MS_ESHAPE, "matmul: expected 1-D or 2-D operands, got shapes %s and %s",
                       sa(&s, a), sb(&s, b));
  /* The contracted axes: the last of a, the first of b (NumPy promotes 1-D to [1,k] / [k,1]). */
  int64_t ka = a->shape[a->ndim - 1], kb = b->shape[0];
  if (ka != kb)
    return ms_ctx_fail(ctx, MS_ESHAPE, "matmul: shapes %s and %s are not aligned (%lld != %lld)",
                       sa(&s, a), sb(&s, b), (long long)ka, (long long)kb);
  if ((st = check_int_dims(ctx, "matmul", a)) != MS_OK) return st;
  if ((st = check_int_dims(ctx, "matmul", b)) != MS_OK) return st;
  if (a->ndim == 1 && b->ndim == 1) return dot_impl(ctx, a, b, out);
  if (a->ndim == 2 && b->ndim == 1) return gemv_impl(ctx, a, b, 1, out);
  if (a->ndim == 1 && b->ndim == 2) return gemv_impl(ctx, b, a, 0, out);
  return gemm_impl(ctx, a, b, out);
}

int ms__outer(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out) {
  *out = NULL;
  int st = check_not_null(ctx, "outer", a, b);
  if (st != MS_OK) return st;
  if (a->ndim != 1 || b->ndim != 1) {
    shapes s;
    return ms_ctx_fail(ctx, MS_ESHAPE, "outer: expected two vectors, got %s and %s", sa(&s, a),
                       sb(&s, b));
  }
  /* A plain loop: exact products, strided reads, and no zero-fill as dger would need. */
  int64_t m = a->shape[0], n = b->shape[0];
  int64_t shape[2] = {m, n};
  ms_tensor *r = NULL;
  if ((st = ms__tensor_alloc(ctx, 2, shape, &r)) != MS_OK) return st;
  const double *pa = MS_TENSOR_DATA(a), *pb = MS_TENSOR_DATA(b);
  double *pr = MS_TENSOR_DATA(r);
  for (int64_t i = 0; i < m; i++) {
    double ai = pa[i * a->strides[0]];
    for (int64_t j = 0; j < n; j++) pr[i * n + j] = ai * pb[j * b->strides[0]];
  }
  *out = r;
  return MS_OK;
}

/* ---- factorizations ---- */

/* A fresh contiguous copy of a square matrix for LAPACK to overwrite, checked finite. */
static int lapack_copy(ms_ctx *ctx, const char *what, const char *arg, const ms_tensor *a,
                       ms_tensor **out) {
  ms_tensor *c = NULL;
  int st = ms__copy(ctx, a, &c);
  if (st == MS_OK) st = check_finite(ctx, what, arg, c);
  if (st != MS_OK) {
    ms_tensor_release(c);
    return st;
  }
  *out = c;
  return MS_OK;
}

int ms_eigh(ms_ctx *ctx, const ms_tensor *a, ms_tensor **w, ms_tensor **v) {
  *w = NULL;
  *v = NULL;
  int st = check_square(ctx, "eigh", a);
  if (st != MS_OK) return st;
  if ((st = ms__not_differentiable(ctx, "eigh", 1, &a))) return st;
  int64_t n = a->shape[0];
  ms_tensor *vec = NULL, *val = NULL;
  st = lapack_copy(ctx, "eigh", "matrix", a, &vec);
  if (st == MS_OK) st = ms__check_symmetric(ctx, "eigh", "a", vec);
  if (st == MS_OK) st = ms__tensor_alloc(ctx, 1, &n, &val);
  if (st == MS_OK && n > 0) {
    /* Row-major 'L' reads the lower triangle of the matrix as the caller sees it. */
    use_threads(ctx, n * n * n);
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'L', (lapack_int)n, MS_TENSOR_DATA(vec),
                                     (lapack_int)n, MS_TENSOR_DATA(val));
    if (info < 0)
      st = lapack_arg_fail(ctx, "eigh", "dsyevd", info);
    else if (info > 0)
      st = ms_ctx_fail(ctx, MS_ENUMERIC, "eigh: dsyevd failed to converge (info = %d)", (int)info);
  }
  if (st != MS_OK) {
    ms_tensor_release(vec);
    ms_tensor_release(val);
    return st;
  }
  *w = val;
  *v = vec;
  return MS_OK;
}

int ms_solve(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **x) {
  *x = NULL;
  int st = check_not_null(ctx, "solve", a, b);
  if (st != MS_OK) return st;
  const ms_tensor *ab[2] = {a, b};
  if ((st = ms__not_differentiable(ctx, "solve", 2, ab))) return st;
  shapes s;
  if (a->ndim != 2 || a->shape[0] != a->shape[1])
    return ms_ctx_fail(ctx, MS_ESHAPE, "solve: expected a square matrix, got %s", sa(&s, a));
  if (b->ndim != 1 && b->ndim != 2)
    return ms_ctx_fail(ctx, MS_ESHAPE,
                       "solve: right-hand side must be 1-D or 2-D, got shapes %s and %s", sa(&s, a),
                       sb(&s, b));
  if (b->shape[0] != a->shape[0])
    return ms_ctx_fail(ctx, MS_ESHAPE, "solve: shapes %s and %s are not aligned (%lld != %lld)",
                       sa(&s, a), sb(&s, b), (long long)a->shape[1], (long long)b->shape[0]);
  if ((st = check_int_dims(ctx, "solve", a)) != MS_OK) return st;
  if ((st = check_int_dims(ctx, "solve", b)) != MS_OK) return st;
  int64_t n = a->shape[0];
  int64_t nrhs = b->ndim == 2 ? b->shape[1] : 1;
  ms_tensor *lu = NULL, *r = NULL;
  lapack_int *ipiv = NULL;
  size_t ipiv_bytes = (size_t)max1(n) * sizeof *ipiv;
  st = lapack_copy(ctx, "solve", "matrix", a, &lu);
  if (st == MS_OK) st = lapack_copy(ctx, "solve", "right-hand side", b, &r);
  if (st == MS_OK && n > 0 && nrhs > 0) {
    ipiv = ms_ctx_alloc(ctx, ipiv_bytes);
    if (ipiv == NULL) {
      st = MS_ENOMEM; /* ms_ctx_alloc recorded the message */
    } else {
      use_threads(ctx, n * n * n);
      lapack_int info =
          LAPACKE_dgesv(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)nrhs, MS_TENSOR_DATA(lu),
                        (lapack_int)n, ipiv, MS_TENSOR_DATA(r), (lapack_int)nrhs);
      if (info < 0)
        st = lapack_arg_fail(ctx, "solve", "dgesv", info);
      else if (info > 0)
        st = ms_ctx_fail(ctx, MS_ENUMERIC, "solve: matrix is singular (U[%d,%d] = 0)",
                         (int)info - 1, (int)info - 1);
    }
  }
  if (ipiv != NULL) ms_ctx_dealloc(ctx, ipiv, ipiv_bytes);
  ms_tensor_release(lu);
  if (st != MS_OK) {
    ms_tensor_release(r);
    return st;
  }
  *x = r;
  return MS_OK;
}

int ms_cholesky(ms_ctx *ctx, const ms_tensor *a, ms_tensor **l) {
  *l = NULL;
  int st = check_square(ctx, "cholesky", a);
  if (st != MS_OK) return st;
  if ((st = ms__not_differentiable(ctx, "cholesky", 1, &a))) return st;
  int64_t n = a->shape[0];
  ms_tensor *r = NULL;
  if ((st = lapack_copy(ctx, "cholesky", "matrix", a, &r)) != MS_OK) return st;
  if ((st = ms__check_symmetric(ctx, "cholesky", "a", r)) != MS_OK) {
    ms_tensor_release(r);
    return st;
  }
  if (n > 0) {
    use_threads(ctx, n * n * n);
    lapack_int info =
        LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, MS_TENSOR_DATA(r), (lapack_int)n);
    if (info < 0)
      st = lapack_arg_fail(ctx, "cholesky", "dpotrf", info);
    else if (info > 0)
      st = ms_ctx_fail(ctx, MS_ENUMERIC,
                       "cholesky: matrix is not positive definite (leading minor %d)", (int)info);
    if (st != MS_OK) {
      ms_tensor_release(r);
      return st;
    }
  }
  /* dpotrf leaves the upper triangle untouched (still a's entries). */
  double *p = MS_TENSOR_DATA(r);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = i + 1; j < n; j++) p[i * n + j] = 0.0;
  *l = r;
  return MS_OK;
}

int ms_qr(ms_ctx *ctx, const ms_tensor *a, ms_tensor **q, ms_tensor **r) {
  *q = NULL;
  *r = NULL;
  if (a == NULL) return ms_ctx_fail(ctx, MS_EARG, "qr: tensor argument is NULL");
  int nd_st = ms__not_differentiable(ctx, "qr", 1, &a);
  if (nd_st) return nd_st;
  if (a->ndim != 2) {
    shapes s;
    return ms_ctx_fail(ctx, MS_ESHAPE, "qr: expected a matrix, got %s", sa(&s, a));
  }
  int st = check_int_dims(ctx, "qr", a);
  if (st != MS_OK) return st;
  int64_t m = a->shape[0], n = a->shape[1], k = m < n ? m : n;
  int64_t qshape[2] = {m, k}, rshape[2] = {k, n};
  ms_tensor *fac = NULL, *tau = NULL, *qt = NULL, *rt = NULL;
  st = lapack_copy(ctx, "qr", "matrix", a, &fac);
  if (st == MS_OK) st = ms__tensor_alloc(ctx, 1, &k, &tau);
  if (st == MS_OK) st = ms__tensor_alloc(ctx, 2, qshape, &qt);
  if (st == MS_OK) st = ms__tensor_alloc(ctx, 2, rshape, &rt);
  if (st == MS_OK && k > 0) {
    use_threads(ctx, m * n * k);
    lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)n,
                                     MS_TENSOR_DATA(fac), (lapack_int)n, MS_TENSOR_DATA(tau));
    if (info != 0) st = lapack_arg_fail(ctx, "qr", "dgeqrf", info);
  }
  if (st == MS_OK && k > 0) {
    const double *f = MS_TENSOR_DATA(fac);
    double *pq = MS_TENSOR_DATA(qt), *pr = MS_TENSOR_DATA(rt);
    /* R: the upper triangle of the first k rows. */
    for (int64_t i = 0; i < k; i++)
      for (int64_t j = 0; j < n; j++) pr[i * n + j] = j >= i ? f[i * n + j] : 0.0;
    /* Q: the reflectors in the first k columns, expanded in place by dorgqr. */
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < k; j++) pq[i * k + j] = f[i * n + j];
    lapack_int info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)k, (lapack_int)k,
                                     pq, (lapack_int)k, MS_TENSOR_DATA(tau));
    if (info != 0) st = lapack_arg_fail(ctx, "qr", "dorgqr", info);
  }
  ms_tensor_release(fac);
  ms_tensor_release(tau);
  if (st != MS_OK) {
    ms_tensor_release(qt);
    ms_tensor_release(rt);
    return st;
  }
  *q = qt;
  *r = rt;
  return MS_OK;
}

/* LU factorization of a fresh copy of square a; *ipiv has max(1,n) entries. On success
 * *info holds dgetrf's info (> 0: U[info-1,info-1] is exactly zero). */
static int lu_factor(ms_ctx *ctx, const char *what, const ms_tensor *a, ms_tensor **lu,
                     lapack_int **ipiv, size_t *ipiv_bytes, lapack_int *info) {
  int64_t n = a->shape[0];
  *lu = NULL;
  *ipiv = NULL;
  *ipiv_bytes = (size_t)max1(n) * sizeof **ipiv;
  *info = 0;
  int st = lapack_copy(ctx, what, "matrix", a, lu);
  if (st != MS_OK) return st;
  *ipiv = ms_ctx_alloc(ctx, *ipiv_bytes);
  if (*ipiv == NULL) {
    ms_tensor_release(*lu);
    *lu = NULL;
    return MS_ENOMEM; /* ms_ctx_alloc recorded the message */
  }
  if (n == 0) return MS_OK;
  use_threads(ctx, n * n * n);
  lapack_int i = LAPACKE_dgetrf(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)n, MS_TENSOR_DATA(*lu),
                                (lapack_int)n, *ipiv);
  if (i < 0) {
    ms_ctx_dealloc(ctx, *ipiv, *ipiv_bytes);
    *ipiv = NULL;
    ms_tensor_release(*lu);
    *lu = NULL;
    return lapack_arg_fail(ctx, what, "dgetrf", i);
  }
  *info = i;
  return MS_OK;
}

int ms_inv(ms_ctx *ctx, const ms_tensor *a, ms_tensor **out) {
  *out = NULL;
  int st = check_square(ctx, "inv", a);
  if (st != MS_OK) return st;
  if ((st = ms__not_differentiable(ctx, "inv", 1, &a))) return st;
  int64_t n = a->shape[0];
  ms_tensor *lu = NULL;
  lapack_int *ipiv = NULL, info = 0;
  size_t ipiv_bytes = 0;
  if ((st = lu_factor(ctx, "inv", a, &lu, &ipiv, &ipiv_bytes, &info)) != MS_OK) return st;
  if (info == 0 && n > 0)
    info = LAPACKE_dgetri(LAPACK_ROW_MAJOR, (lapack_int)n, MS_TENSOR_DATA(lu), (lapack_int)n, ipiv);
  if (info < 0)
    st = lapack_arg_fail(ctx, "inv", "dgetri", info);
  else if (info > 0)
    st = ms_ctx_fail(ctx, MS_ENUMERIC, "inv: matrix is singular (U[%d,%d] = 0)", (int)info - 1,
                     (int)info - 1);
  ms_ctx_dealloc(ctx, ipiv, ipiv_bytes);
  if (st != MS_OK) {
    ms_tensor_release(lu);
    return st;
  }
  *out = lu;
  return MS_OK;
}

int ms_det(ms_ctx *ctx, const ms_tensor *a, ms_tensor **out) {
  *out = NULL;
  int st = check_square(ctx, "det", a);
  if (st != MS_OK) return st;
  if ((st = ms__not_differentiable(ctx, "det", 1, &a))) return st;
  int64_t n = a->shape[0];
  ms_tensor *lu = NULL, *r = NULL;
  lapack_int *ipiv = NULL, info = 0;
  size_t ipiv_bytes = 0;
  if ((st = lu_factor(ctx, "det", a, &lu, &ipiv, &ipiv_bytes, &info)) != MS_OK) return st;
  /* info > 0 means an exact zero on U's diagonal: the product below is then 0, which is
   * the right determinant, so a singular matrix is not an error here. */
  double d = 1.0;
  const double *p = MS_TENSOR_DATA(lu);
  for (int64_t i = 0; i < n; i++) {
    d *= p[i * n + i];
    if (ipiv[i] != (lapack_int)(i + 1)) d = -d; /* ipiv is 1-based */
  }
  ms_ctx_dealloc(ctx, ipiv, ipiv_bytes);
  ms_tensor_release(lu);
  if ((st = ms_tensor_scalar(ctx, d, &r)) != MS_OK) return st;
  *out = r;
  return MS_OK;
}
