/*
 * Linear algebra tests. Golden values come from closed forms, hand-solved systems and
 * plain loops written here; the decompositions are checked through the identities they
 * must satisfy (A v = w v, L L^T = A, Q^T Q = I, Q R = A), never against their own output.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "metastep/metastep.h"

static ms_ctx *ctx;
static ms_rng rng;

#define FAILS(call, st, msg) CHECK_FAILS(ctx, call, st, msg)
#define BAD_SHAPE(call, msg) FAILS(call, MS_ESHAPE, msg)

/* ---- helpers (plain loops, independent of the code under test) ---- */

static double at1(const ms_tensor *t, int64_t i) {
  return ms_tensor_data(t)[i * ms_tensor_strides(t)[0]];
}

static double at2(const ms_tensor *t, int64_t i, int64_t j) {
  const int64_t *s = ms_tensor_strides(t);
  return ms_tensor_data(t)[i * s[0] + j * s[1]];
}

static ms_tensor *mat(int64_t r, int64_t c, const double *data) {
  int64_t shape[2] = {r, c};
  ms_tensor *t = NULL;
  if (ms_tensor_from_data(ctx, 2, shape, data, &t) != MS_OK) abort();
  return t;
}

static ms_tensor *vec(int64_t n, const double *data) {
  ms_tensor *t = NULL;
  if (ms_tensor_from_data(ctx, 1, &n, data, &t) != MS_OK) abort();
  return t;
}

/* Deterministic pseudo-random data in [-1, 1) from a seeded generator. */
static ms_tensor *rnd(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  double *buf = malloc((size_t)(n > 0 ? n : 1) * sizeof *buf);
  for (int64_t i = 0; i < n; i++) buf[i] = 2.0 * ms_rng_uniform(&rng) - 1.0;
  ms_tensor *t = NULL;
  if (ms_tensor_from_data(ctx, ndim, shape, buf, &t) != MS_OK) abort();
  free(buf);
  return t;
}

static ms_tensor *rnd2(int64_t r, int64_t c) {
  int64_t s[2] = {r, c};
  return rnd(2, s);
}

static ms_tensor *rnd1(int64_t n) { return rnd(1, &n); }

static ms_tensor *transposed(const ms_tensor *t) {
  ms_tensor *v = NULL;
  if (ms_tensor_transpose(ctx, t, 0, 1, &v) != MS_OK) abort();
  return v;
}

static ms_tensor *sliced(const ms_tensor *t, int axis, int64_t start, int64_t stop, int64_t step) {
  ms_tensor *v = NULL;
  if (ms_tensor_slice(ctx, t, axis, start, stop, step, &v) != MS_OK) abort();
  return v;
}

/* Largest |got - want| where want = a @ b by a triple loop over strided views (1-D or 2-D). */
static double matmul_err(const ms_tensor *a, const ms_tensor *b, const ms_tensor *got) {
  int na = ms_tensor_ndim(a), nb = ms_tensor_ndim(b);
  int64_t m = na == 2 ? ms_tensor_dim(a, 0) : 1;
  int64_t k = ms_tensor_dim(a, na - 1);
  int64_t n = nb == 2 ? ms_tensor_dim(b, 1) : 1;
  double err = 0;
  for (int64_t i = 0; i < m; i++) {
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int64_t p = 0; p < k; p++) {
        double x = na == 2 ? at2(a, i, p) : at1(a, p);
        double y = nb == 2 ? at2(b, p, j) : at1(b, p);
        s += x * y;
      }
      double g;
      if (na == 2 && nb == 2)
        g = at2(got, i, j);
      else if (na == 2)
        g = at1(got, i);
      else if (nb == 2)
        g = at1(got, j);
      else
        g = ms_tensor_data(got)[0];
      if (fabs(g - s) > err || isnan(g)) err = isnan(g) ? INFINITY : fabs(g - s);
    }
  }
  return err;
}

static int shape_is(const ms_tensor *t, int ndim, int64_t d0, int64_t d1) {
  if (t == NULL || ms_tensor_ndim(t) != ndim) return 0;
  if (ndim >= 1 && ms_tensor_dim(t, 0) != d0) return 0;
  if (ndim >= 2 && ms_tensor_dim(t, 1) != d1) return 0;
  return 1;
}

/* Checks ms_matmul(a, b) against the triple loop and the expected result shape. */
static void check_matmul(const ms_tensor *a, const ms_tensor *b) {
  ms_tensor *c = NULL;
  int st = ms_matmul(ctx, a, b, &c);
  CHECK(st == MS_OK);
  if (st != MS_OK) {
    fprintf(stderr, "  matmul failed: %s\n", ms_ctx_error(ctx));
    return;
  }
  int na = ms_tensor_ndim(a), nb = ms_tensor_ndim(b);
  int nd = (na == 2) + (nb == 2);
  int64_t d0 = na == 2 ? ms_tensor_dim(a, 0) : (nb == 2 ? ms_tensor_dim(b, 1) : 0);
  int64_t d1 = nb == 2 ? ms_tensor_dim(b, 1) : 0;
  CHECK(shape_is(c, nd, d0, d1));
  CHECK(matmul_err(a, b, c) <= 1e-12);
  ms_tensor_release(c);
}

/* ---- products ---- */

static void test_matmul_layouts(void) {
  static const int64_t sizes[] = {0, 1, 2, 3, 7};
  for (int im = 0; im < 5; im++)
    for (int ik = 0; ik < 5; ik++)
      for (int in = 0; in < 5; in++) {
        int64_t m = sizes[im], k = sizes[ik], n = sizes[in];
        ms_tensor *a = rnd2(m, k), *b = rnd2(k, n);
        ms_tensor *at = rnd2(k, m), *bt = rnd2(n, k);
        ms_tensor *ta = transposed(at), *tb = transposed(bt); /* [m,k], [k,n] column-major */
        ms_tensor *wa = rnd2(m, k + 3), *wb = rnd2(k, n + 2);
        /* column slices: a padded leading dimension */
        ms_tensor *pa = sliced(wa, 1, 1, 1 + k, 1), *pb = sliced(wb, 1, 2, 2 + n, 1);
        ms_tensor *ua = rnd2(m, 2 * k + 1), *sa_ = sliced(ua, 1, 0, 2 * k, 2); /* column step 2 */
        /* broadcast views (stride 0): a row repeated m times, a column repeated n times */
        ms_tensor *ra = rnd2(1, k), *cb = rnd2(k, 1), *ea = NULL, *eb = NULL;
        int64_t esa[2] = {m, k}, esb[2] = {k, n};
        CHECK(ms_tensor_expand(ctx, ra, 2, esa, &ea) == MS_OK);
        CHECK(ms_tensor_expand(ctx, cb, 2, esb, &eb) == MS_OK);
        const ms_tensor *as[] = {a, ta, pa, sa_, ea};
        const ms_tensor *bs[] = {b, tb, pb, eb};
        for (int x = 0; x < 5; x++)
          for (int y = 0; y < 4; y++) check_matmul(as[x], bs[y]);
        ms_tensor *ts[] = {a, b, at, bt, ta, tb, wa, wb, pa, pb, ua, sa_, ra, cb, ea, eb};
        for (int i = 0; i < 16; i++) ms_tensor_release(ts[i]);
      }
}

static void test_matmul_vectors(void) {
  static const int64_t sizes[] = {0, 1, 4, 9};
  for (int im = 0; im < 4; im++)
    for (int ik = 0; ik < 4; ik++) {
      int64_t m = sizes[im], k = sizes[ik];
      ms_tensor *a = rnd2(m, k), *ta0 = rnd2(k, m), *ta = transposed(ta0);
      ms_tensor *w = rnd2(m + 1, k + 2), *w1 = sliced(w, 0, 1, 1 + m, 1);
      ms_tensor *pa = sliced(w1, 1, 1, 1 + k, 1); /* offset and padded leading dimension */
      ms_tensor *x = rnd1(k);
      ms_tensor *x2 = rnd1(2 * k), *xs = sliced(x2, 0, 0, 2 * k, 2); /* stride 2 */
      /* a stride-0 vector (expanded [1]) and a column of a matrix (stride 3) */
      ms_tensor *one = rnd1(1), *xe = NULL, *wt = rnd2(k, 3), *col = NULL;
      CHECK(ms_tensor_expand(ctx, one, 1, &k, &xe) == MS_OK);
      CHECK(ms_tensor_select(ctx, wt, 1, 1, &col) == MS_OK);
      const ms_tensor *ms[] = {a, ta, pa};
      const ms_tensor *vs[] = {x, xs, xe, col};
      int nv = 4;
      for (int i = 0; i < 3; i++)
        for (int j = 0; j < nv; j++) {
          check_matmul(ms[i], vs[j]);        /* [m,k] x [k] */
          ms_tensor *bt = transposed(ms[i]); /* [k,m] */
          check_matmul(vs[j], bt);           /* [k] x [k,m] */
          ms_tensor_release(bt);
          /* ms_matvec must agree with the same loop */
          ms_tensor *r = NULL;
          CHECK(ms_matvec(ctx, ms[i], vs[j], &r) == MS_OK);
          CHECK(shape_is(r, 1, m, 0) && matmul_err(ms[i], vs[j], r) <= 1e-12);
          ms_tensor_release(r);
        }
      for (int i = 0; i < nv; i++)
        for (int j = 0; j < nv; j++) {
          check_matmul(vs[i], vs[j]); /* [k] x [k] -> 0-d */
          ms_tensor *r = NULL;
          CHECK(ms_dot(ctx, vs[i], vs[j], &r) == MS_OK);
          CHECK(shape_is(r, 0, 0, 0) && matmul_err(vs[i], vs[j], r) <= 1e-12);
          ms_tensor_release(r);
        }
      ms_tensor *ts[] = {a, ta0, ta, w, w1, pa, x, x2, xs, one, xe, wt, col};
      for (int i = 0; i < 13; i++) ms_tensor_release(ts[i]);
    }
}

static void test_products_by_hand(void) {
  const double a[] = {1, 2, 3, 4, 5, 6};    /* [2,3] */
  const double b[] = {7, 8, 9, 10, 11, 12}; /* [3,2] */
  ms_tensor *ta = mat(2, 3, a), *tb = mat(3, 2, b), *c = NULL;
  CHECK(ms_matmul(ctx, ta, tb, &c) == MS_OK);
  /* [[1*7+2*9+3*11, 1*8+2*10+3*12], [4*7+5*9+6*11, 4*8+5*10+6*12]] */
  CHECK(shape_is(c, 2, 2, 2));
  CHECK(at2(c, 0, 0) == 58 && at2(c, 0, 1) == 64 && at2(c, 1, 0) == 139 && at2(c, 1, 1) == 154);
  ms_tensor_release(c);

  const double u[] = {1, 2, 3}, v[] = {4, 5};
  ms_tensor *tu = vec(3, u), *tv = vec(2, v), *o = NULL, *d = NULL;
  CHECK(ms_outer(ctx, tu, tv, &o) == MS_OK);
  CHECK(shape_is(o, 2, 3, 2));
  CHECK(at2(o, 0, 0) == 4 && at2(o, 0, 1) == 5 && at2(o, 2, 0) == 12 && at2(o, 2, 1) == 15);
  ms_tensor_release(o);
  CHECK(ms_dot(ctx, tu, tu, &d) == MS_OK);
  CHECK(d != NULL && ms_tensor_ndim(d) == 0 && ms_tensor_data(d)[0] == 14);
  ms_tensor_release(d);

  /* outer on strided vectors: every other element of [1..6] */
  ms_tensor *s = sliced(ta, 1, 0, 3, 2), *row = NULL;   /* [[1,3],[4,6]] */
  CHECK(ms_tensor_select(ctx, s, 0, 1, &row) == MS_OK); /* [4,6], stride 2 */
  ms_tensor *col = NULL;
  CHECK(ms_tensor_select(ctx, tb, 1, 0, &col) == MS_OK); /* [7,9,11], stride 2 */
  CHECK(ms_outer(ctx, row, col, &o) == MS_OK);
  CHECK(shape_is(o, 2, 2, 3));
  CHECK(at2(o, 0, 0) == 28 && at2(o, 1, 2) == 66 && at2(o, 0, 2) == 44);
  ms_tensor_release(o);
  /* outer with empty vectors */
  ms_tensor *e = rnd1(0);
  CHECK(ms_outer(ctx, e, tu, &o) == MS_OK && shape_is(o, 2, 0, 3));
  ms_tensor_release(o);

  ms_tensor *ts[] = {ta, tb, tu, tv, s, row, col, e};
  for (int i = 0; i < 8; i++) ms_tensor_release(ts[i]);
}

/* ---- eigh ---- */

/* A = Q diag(lam) Q^T by loops; Q given row-major n x n. */
static ms_tensor *similar(int n, const double *q, const double *lam) {
  double *a = calloc((size_t)(n * n), sizeof *a);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      for (int p = 0; p < n; p++) a[i * n + j] += q[i * n + p] * lam[p] * q[j * n + p];
  ms_tensor *t = mat(n, n, a);
  free(a);
  return t;
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

/* Eigenvalues vs sorted lam; A v = w v; V^T V = I; each v_i parallel to a column of q. */
static void check_eigh(int n, const double *q, const double *lam, const ms_tensor *a) {
  ms_tensor *w = NULL, *v = NULL;
  CHECK(ms_eigh(ctx, a, &w, &v) == MS_OK);
  if (w == NULL) return;
  CHECK(shape_is(w, 1, n, 0) && shape_is(v, 2, n, n));
  double sorted[8];
  memcpy(sorted, lam, (size_t)n * sizeof *lam);
  qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
  for (int i = 0; i < n; i++) CHECK_NEAR(at1(w, i), sorted[i], 1e-12);
  for (int c = 0; c < n; c++) {
    double res = 0;
    for (int i = 0; i < n; i++) {
      double av = 0;
      for (int p = 0; p < n; p++) av += at2(a, i, p) * at2(v, p, c);
      res = fmax(res, fabs(av - at1(w, c) * at2(v, i, c)));
    }
    CHECK(res <= 1e-12);
    for (int c2 = 0; c2 < n; c2++) {
      double dot = 0;
      for (int i = 0; i < n; i++) dot += at2(v, i, c) * at2(v, i, c2);
      CHECK_NEAR(dot, c == c2 ? 1.0 : 0.0, 1e-12);
    }
    /* distinct eigenvalues: v_c = +-q[:, p] where lam[p] == sorted[c] */
    for (int p = 0; p < n; p++) {
      if (lam[p] != sorted[c]) continue;
      double dot = 0;
      for (int i = 0; i < n; i++) dot += at2(v, i, c) * q[i * n + p];
      CHECK_NEAR(fabs(dot), 1.0, 1e-12);
    }
  }
  ms_tensor_release(w);
  ms_tensor_release(v);
}

static void test_eigh(void) {
  /* Householder reflection H = I - 2 u u^T / (u^T u), u = (1, 2, 3, 4): orthogonal, symmetric. */
  const double u[4] = {1, 2, 3, 4};
  double uu = 30, h[16];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) h[i * 4 + j] = (i == j) - 2 * u[i] * u[j] / uu;
  const double lam[4] = {3, -2, 0.5, 1};
  ms_tensor *a = similar(4, h, lam);
  check_eigh(4, h, lam, a);

  /* A non-symmetric matrix is refused (LAPACK would read one triangle and answer for
   * another matrix), by eigh and by cholesky, with the largest asymmetry and its place. */
  ms_tensor *g = NULL;
  CHECK(ms_tensor_copy(ctx, a, &g) == MS_OK);
  ms_tensor_data(g)[1 * 4 + 3] += 0.5;
  ms_tensor *w = (ms_tensor *)&g, *v = (ms_tensor *)&g;
  CHECK(ms_eigh(ctx, g, &w, &v) == MS_EARG);
  CHECK(w == NULL && v == NULL);
  CHECK(strstr(ms_ctx_error(ctx), "eigh: a must be symmetric, max |a - a^T| = 0.5 at a[1,3]") !=
        NULL);
  CHECK(ms_cholesky(ctx, g, &w) == MS_EARG);
  CHECK(w == NULL);
  CHECK(strstr(ms_ctx_error(ctx), "cholesky: a must be symmetric") != NULL);
  ms_tensor_release(g);

  /* A transposed (column-major) view of a symmetric matrix is the same matrix. */
  ms_tensor *at = transposed(a);
  check_eigh(4, h, lam, at);
  ms_tensor_release(at);
  ms_tensor_release(a);

  /* Givens rotation by 0.3 rad: a 2x2 with eigenvalues 1 and 4. */
  double c = cos(0.3), s = sin(0.3);
  const double gq[4] = {c, -s, s, c}, glam[2] = {4, 1};
  a = similar(2, gq, glam);
  check_eigh(2, gq, glam, a);
  ms_tensor_release(a);

  /* Diagonal and 1x1 and 0x0. */
  const double one[1] = {-7};
  a = mat(1, 1, one);
  CHECK(ms_eigh(ctx, a, &w, &v) == MS_OK);
  CHECK(at1(w, 0) == -7 && fabs(at2(v, 0, 0)) == 1);
  ms_tensor_release(w);
  ms_tensor_release(v);
  ms_tensor_release(a);
  a = rnd2(0, 0);
  CHECK(ms_eigh(ctx, a, &w, &v) == MS_OK);
  CHECK(shape_is(w, 1, 0, 0) && shape_is(v, 2, 0, 0));
  ms_tensor_release(w);
  ms_tensor_release(v);
  ms_tensor_release(a);
}

/* ---- solve ---- */

static double residual(const ms_tensor *a, const ms_tensor *x, const ms_tensor *b) {
  int64_t n = ms_tensor_dim(a, 0);
  int vecb = ms_tensor_ndim(b) == 1;
  int64_t k = vecb ? 1 : ms_tensor_dim(b, 1);
  double r = 0;
  for (int64_t c = 0; c < k; c++)
    for (int64_t i = 0; i < n; i++) {
      double s = 0;
      for (int64_t p = 0; p < n; p++) s += at2(a, i, p) * (vecb ? at1(x, p) : at2(x, p, c));
      r = fmax(r, fabs(s - (vecb ? at1(b, i) : at2(b, i, c))));
    }
  return r;
}

/* Random well-conditioned (diagonally dominant) n x n. */
static ms_tensor *dominant(int64_t n) {
  ms_tensor *a = rnd2(n, n);
  for (int64_t i = 0; i < n; i++) ms_tensor_data(a)[i * n + i] += (double)n + 1;
  return a;
}

static void test_solve(void) {
  /* 2x + y = 3, x + 3y = 5  ->  x = 4/5, y = 7/5 (Cramer, det 5). */
  const double a2[] = {2, 1, 1, 3}, b2[] = {3, 5};
  ms_tensor *a = mat(2, 2, a2), *b = vec(2, b2), *x = NULL;
  CHECK(ms_solve(ctx, a, b, &x) == MS_OK);
  CHECK(shape_is(x, 1, 2, 0));
  CHECK_NEAR(at1(x, 0), 0.8, 1e-15);
  CHECK_NEAR(at1(x, 1), 1.4, 1e-15);
  /* b is borrowed, not overwritten */
  CHECK(at1(b, 0) == 3 && at1(b, 1) == 5 && at2(a, 0, 0) == 2);
  ms_tensor_release(x);
  ms_tensor_release(a);
  ms_tensor_release(b);

  for (int64_t n = 1; n <= 6; n += 5) {
    a = dominant(n);
    b = rnd1(n);
    CHECK(ms_solve(ctx, a, b, &x) == MS_OK);
    CHECK(shape_is(x, 1, n, 0) && residual(a, x, b) <= 1e-12);
    ms_tensor_release(x);
    ms_tensor_release(b);
    /* matrix right-hand side, and a transposed a */
    b = rnd2(n, 3);
    CHECK(ms_solve(ctx, a, b, &x) == MS_OK);
    CHECK(shape_is(x, 2, n, 3) && residual(a, x, b) <= 1e-12);
    ms_tensor_release(x);
    ms_tensor *at = transposed(a);
    ms_tensor *bs = sliced(b, 1, 0, 3, 2); /* [n,2], strided */
    CHECK(ms_solve(ctx, at, bs, &x) == MS_OK);
    CHECK(shape_is(x, 2, n, 2) && residual(at, x, bs) <= 1e-12);
    ms_tensor_release(x);
    ms_tensor_release(bs);
    ms_tensor_release(at);
    ms_tensor_release(b);
    ms_tensor_release(a);
  }

  /* empty systems */
  a = rnd2(0, 0);
  b = rnd1(0);
  CHECK(ms_solve(ctx, a, b, &x) == MS_OK && shape_is(x, 1, 0, 0));
  ms_tensor_release(x);
  ms_tensor_release(b);
  ms_tensor_release(a);
  a = dominant(3);
  b = rnd2(3, 0);
  CHECK(ms_solve(ctx, a, b, &x) == MS_OK && shape_is(x, 2, 3, 0));
  ms_tensor_release(x);
  ms_tensor_release(b);
  ms_tensor_release(a);
}

/* ---- cholesky ---- */

static void test_cholesky(void) {
  /* [[4,2],[2,3]] = L L^T with L = [[2,0],[1,sqrt 2]] */
  const double a2[] = {4, 2, 2, 3};
  ms_tensor *a = mat(2, 2, a2), *l = NULL;
  CHECK(ms_cholesky(ctx, a, &l) == MS_OK);
  CHECK_NEAR(at2(l, 0, 0), 2, 1e-15);
  CHECK(at2(l, 0, 1) == 0);
  CHECK_NEAR(at2(l, 1, 0), 1, 1e-15);
  CHECK_NEAR(at2(l, 1, 1), sqrt(2.0), 1e-15);
  ms_tensor_release(l);
  ms_tensor_release(a);

  /* A = M M^T + n I */
  int64_t n = 6;
  ms_tensor *m = rnd2(n, n);
  double buf[36];
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = i == j ? (double)n : 0;
      for (int64_t p = 0; p < n; p++) s += at2(m, i, p) * at2(m, j, p);
      buf[i * n + j] = s;
    }
  a = mat(n, n, buf);
  CHECK(ms_cholesky(ctx, a, &l) == MS_OK);
  double err = 0;
  int upper_zero = 1, diag_pos = 1;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int64_t p = 0; p < n; p++) s += at2(l, i, p) * at2(l, j, p);
      err = fmax(err, fabs(s - buf[i * n + j]));
      if (j > i && at2(l, i, j) != 0) upper_zero = 0;
      if (i == j && !(at2(l, i, i) > 0)) diag_pos = 0;
    }
  CHECK(err <= 1e-12);
  CHECK(upper_zero && diag_pos);
  ms_tensor_release(l);
  ms_tensor_release(a);
  ms_tensor_release(m);

  a = rnd2(0, 0);
  CHECK(ms_cholesky(ctx, a, &l) == MS_OK && shape_is(l, 2, 0, 0));
  ms_tensor_release(l);
  ms_tensor_release(a);
}

/* ---- qr ---- */

static void check_qr(int64_t m, int64_t n, int transpose_input) {
  ms_tensor *src = transpose_input ? rnd2(n, m) : rnd2(m, n);
  ms_tensor *a = transpose_input ? transposed(src) : ms_tensor_retain(src);
  ms_tensor *q = NULL, *r = NULL;
  int64_t k = m < n ? m : n;
  CHECK(ms_qr(ctx, a, &q, &r) == MS_OK);
  if (q == NULL) return;
  CHECK(shape_is(q, 2, m, k) && shape_is(r, 2, k, n));
  double orth = 0, rec = 0;
  int upper = 1;
  for (int64_t i = 0; i < k; i++)
    for (int64_t j = 0; j < k; j++) {
      double s = 0;
      for (int64_t p = 0; p < m; p++) s += at2(q, p, i) * at2(q, p, j);
      orth = fmax(orth, fabs(s - (i == j)));
    }
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int64_t p = 0; p < k; p++) s += at2(q, i, p) * at2(r, p, j);
      rec = fmax(rec, fabs(s - at2(a, i, j)));
    }
  for (int64_t i = 0; i < k; i++)
    for (int64_t j = 0; j < i && j < n; j++)
      if (at2(r, i, j) != 0) upper = 0;
  CHECK(orth <= 1e-12);
  CHECK(rec <= 1e-12);
  CHECK(upper);
  ms_tensor_release(q);
  ms_tensor_release(r);
  ms_tensor_release(a);
  ms_tensor_release(src);
}

static void test_qr(void) {
  check_qr(5, 3, 0);
  check_qr(3, 5, 0);
  check_qr(4, 4, 0);
  check_qr(5, 3, 1);
  check_qr(1, 1, 0);
  check_qr(0, 3, 0);
  check_qr(3, 0, 0);
}

/* ---- inv / det ---- */

static double det_of(const ms_tensor *a) {
  ms_tensor *d = NULL;
  double v = NAN;
  CHECK(ms_det(ctx, a, &d) == MS_OK);
  if (d != NULL) {
    CHECK(ms_tensor_ndim(d) == 0);
    v = ms_tensor_data(d)[0];
  }
  ms_tensor_release(d);
  return v;
}

static void test_inv_det(void) {
  /* [[4,7],[2,6]]^-1 = [[0.6,-0.7],[-0.2,0.4]] (det 10) */
  const double a2[] = {4, 7, 2, 6};
  ms_tensor *a = mat(2, 2, a2), *ai = NULL;
  CHECK(ms_inv(ctx, a, &ai) == MS_OK);
  CHECK_NEAR(at2(ai, 0, 0), 0.6, 1e-15);
  CHECK_NEAR(at2(ai, 0, 1), -0.7, 1e-15);
  CHECK_NEAR(at2(ai, 1, 0), -0.2, 1e-15);
  CHECK_NEAR(at2(ai, 1, 1), 0.4, 1e-15);
  CHECK_NEAR(det_of(a), 10, 1e-14);
  ms_tensor_release(ai);
  ms_tensor *at = transposed(a); /* det(A^T) = det A; inv(A^T) = inv(A)^T */
  CHECK_NEAR(det_of(at), 10, 1e-14);
  CHECK(ms_inv(ctx, at, &ai) == MS_OK);
  CHECK_NEAR(at2(ai, 1, 0), -0.7, 1e-15);
  ms_tensor_release(ai);
  ms_tensor_release(at);
  ms_tensor_release(a);

  const double a3[] = {2, -3, 1, 2, 0, -1, 1, 4, 5}; /* cofactor expansion: 8 + 33 + 8 = 49 */
  a = mat(3, 3, a3);
  CHECK_NEAR(det_of(a), 49, 1e-13);
  ms_tensor_release(a);
  const double perm[] = {0, 1, 1, 0};
  a = mat(2, 2, perm);
  CHECK(det_of(a) == -1);
  ms_tensor_release(a);
  const double sing[] = {1, 2, 2, 4};
  a = mat(2, 2, sing);
  CHECK(det_of(a) == 0);
  ms_tensor_release(a);
  const double diag[] = {2, 0, 0, 0, 3, 0, 0, 0, -4};
  a = mat(3, 3, diag);
  CHECK(det_of(a) == -24);
  ms_tensor_release(a);
  a = rnd2(0, 0);
  CHECK(det_of(a) == 1);
  CHECK(ms_inv(ctx, a, &ai) == MS_OK && shape_is(ai, 2, 0, 0));
  ms_tensor_release(ai);
  ms_tensor_release(a);

  /* A A^-1 = I for a random well-conditioned 5x5 */
  a = dominant(5);
  CHECK(ms_inv(ctx, a, &ai) == MS_OK);
  double err = 0;
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 5; j++) {
      double s = 0;
      for (int p = 0; p < 5; p++) s += at2(a, i, p) * at2(ai, p, j);
      err = fmax(err, fabs(s - (i == j)));
    }
  CHECK(err <= 1e-12);
  ms_tensor_release(ai);
  ms_tensor_release(a);
}

/* ---- errors ---- */

static void test_errors(void) {
  ms_tensor *a34 = rnd2(3, 4), *a52 = rnd2(5, 2), *v3 = rnd1(3), *v4 = rnd1(4), *s = NULL;
  ms_tensor *o = (ms_tensor *)1, *o2 = (ms_tensor *)1;
  int64_t sh3[3] = {2, 2, 2};
  ms_tensor *t3 = rnd(3, sh3);
  CHECK(ms_tensor_scalar(ctx, 2.0, &s) == MS_OK);

  BAD_SHAPE(ms_matmul(ctx, a34, a52, &o),
            "matmul: shapes [3,4] and [5,2] are not aligned (4 != 5)");
  CHECK(o == NULL);
  BAD_SHAPE(ms_matmul(ctx, a34, v3, &o), "matmul: shapes [3,4] and [3] are not aligned (4 != 3)");
  BAD_SHAPE(ms_matmul(ctx, v3, v4, &o), "matmul: shapes [3] and [4] are not aligned (3 != 4)");
  FAILS(ms_matmul(ctx, v3, a34, &o), MS_OK, ""); /* [3] x [3,4] is fine */
  ms_tensor_release(o);
  BAD_SHAPE(ms_matmul(ctx, v4, a34, &o), "matmul: shapes [4] and [3,4] are not aligned (4 != 3)");
  BAD_SHAPE(ms_matmul(ctx, s, v3, &o),
            "matmul: expected 1-D or 2-D operands, got shapes [] and [3]");
  BAD_SHAPE(ms_matmul(ctx, a34, t3, &o),
            "matmul: expected 1-D or 2-D operands, got shapes [3,4] and [2,2,2]");
  CHECK(o == NULL);
  FAILS(ms_matmul(ctx, a34, NULL, &o), MS_EARG, "matmul: tensor argument is NULL");

  BAD_SHAPE(ms_dot(ctx, v3, v4, &o), "dot: shapes [3] and [4] are not aligned (3 != 4)");
  BAD_SHAPE(ms_dot(ctx, a34, v4, &o), "dot: expected two vectors, got [3,4] and [4]");
  BAD_SHAPE(ms_matvec(ctx, a34, v3, &o), "matvec: shapes [3,4] and [3] are not aligned (4 != 3)");
  BAD_SHAPE(ms_matvec(ctx, v3, v3, &o), "matvec: expected a matrix and a vector, got [3] and [3]");
  BAD_SHAPE(ms_outer(ctx, a34, v3, &o), "outer: expected two vectors, got [3,4] and [3]");
  CHECK(o == NULL);

  BAD_SHAPE(ms_eigh(ctx, a34, &o, &o2), "eigh: expected a square matrix, got [3,4]");
  CHECK(o == NULL && o2 == NULL);
  BAD_SHAPE(ms_eigh(ctx, v3, &o, &o2), "eigh: expected a square matrix, got [3]");
  BAD_SHAPE(ms_cholesky(ctx, a34, &o), "cholesky: expected a square matrix, got [3,4]");
  BAD_SHAPE(ms_inv(ctx, a52, &o), "inv: expected a square matrix, got [5,2]");
  BAD_SHAPE(ms_det(ctx, t3, &o), "det: expected a square matrix, got [2,2,2]");
  BAD_SHAPE(ms_qr(ctx, v3, &o, &o2), "qr: expected a matrix, got [3]");
  CHECK(o == NULL && o2 == NULL);
  BAD_SHAPE(ms_solve(ctx, a34, v3, &o), "solve: expected a square matrix, got [3,4]");
  ms_tensor *a33 = dominant(3);
  BAD_SHAPE(ms_solve(ctx, a33, v4, &o), "solve: shapes [3,3] and [4] are not aligned (3 != 4)");
  BAD_SHAPE(ms_solve(ctx, a33, a52, &o), "solve: shapes [3,3] and [5,2] are not aligned (3 != 5)");
  BAD_SHAPE(ms_solve(ctx, a33, t3, &o),
            "solve: right-hand side must be 1-D or 2-D, got shapes [3,3] and [2,2,2]");
  CHECK(o == NULL);

  /* numerical failures */
  const double sing[] = {1, 2, 3, 2, 4, 6, 1, 1, 1}; /* row 2 = 2 * row 1 */
  ms_tensor *as = mat(3, 3, sing);
  FAILS(ms_solve(ctx, as, v3, &o), MS_ENUMERIC, "solve: matrix is singular (U[");
  CHECK(o == NULL);
  FAILS(ms_inv(ctx, as, &o), MS_ENUMERIC, "inv: matrix is singular (U[");
  CHECK(o == NULL);
  const double zero22[] = {0, 0, 0, 0};
  ms_tensor *z = mat(2, 2, zero22);
  ms_tensor *v2 = rnd1(2);
  FAILS(ms_solve(ctx, z, v2, &o), MS_ENUMERIC, "solve: matrix is singular (U[0,0] = 0)");
  FAILS(ms_inv(ctx, z, &o), MS_ENUMERIC, "inv: matrix is singular (U[0,0] = 0)");
  const double npd[] = {1, 0, 0, 0, 1, 0, 0, 0, -1}; /* minors 1, 1, -1 */
  ms_tensor *an = mat(3, 3, npd);
  FAILS(ms_cholesky(ctx, an, &o), MS_ENUMERIC,
        "cholesky: matrix is not positive definite (leading minor 3)");
  CHECK(o == NULL);

  /* non-finite input */
  ms_tensor *nanm = NULL;
  CHECK(ms_tensor_copy(ctx, a33, &nanm) == MS_OK);
  ms_tensor_data(nanm)[5] = NAN;
  FAILS(ms_eigh(ctx, nanm, &o, &o2), MS_EARG,
        "eigh: matrix has a non-finite element (nan at [1,2])");
  FAILS(ms_det(ctx, nanm, &o), MS_EARG, "det: matrix has a non-finite element");
  ms_tensor_data(nanm)[5] = -INFINITY;
  FAILS(ms_cholesky(ctx, nanm, &o), MS_EARG,
        "cholesky: matrix has a non-finite element (-inf at [1,2])");
  ms_tensor *binf = NULL;
  CHECK(ms_tensor_copy(ctx, v3, &binf) == MS_OK);
  ms_tensor_data(binf)[2] = INFINITY;
  FAILS(ms_solve(ctx, a33, binf, &o), MS_EARG,
        "solve: right-hand side has a non-finite element (inf at [2])");
  CHECK(o == NULL && o2 == NULL);
  /* non-finite values are data for the products */
  CHECK(ms_matvec(ctx, nanm, v3, &o) == MS_OK && isinf(at1(o, 1)) && isfinite(at1(o, 0)));
  ms_tensor_release(o);

  ms_tensor *ts[] = {a34, a52, v3, v4, s, t3, a33, as, z, v2, an, nanm, binf};
  for (int i = 0; i < 13; i++) ms_tensor_release(ts[i]);
}

/* Every allocation failure leaves no output and no leak. */
static void test_out_of_memory(void) {
  ms_tensor *a = dominant(4), *b = rnd2(4, 3), *at = transposed(a), *v = rnd1(4);
  ms_tensor *xs = sliced(b, 1, 0, 3, 2), *sym = NULL;
  /* eigh and cholesky need a symmetric matrix: a + a^T, diagonally dominant */
  CHECK(ms_binary(ctx, MS_ADD, a, at, &sym) == MS_OK);
  size_t base = ms_ctx_bytes(ctx);
  int failures = 0, clean = 1;
  for (size_t extra = 1; extra < 4096; extra += 16) {
    ms_ctx_set_limit(ctx, base + extra);
    for (int which = 0; which < 10; which++) {
      /* Outputs start non-NULL (o2 only for eigh and qr): a failure must set them to NULL. */
      ms_tensor *o = (ms_tensor *)1, *o2 = which == 2 || which == 3 ? (ms_tensor *)1 : NULL;
      int st = which == 0   ? ms_matmul(ctx, at, xs, &o)
               : which == 1 ? ms_solve(ctx, at, xs, &o)
               : which == 2 ? ms_eigh(ctx, sym, &o, &o2)
               : which == 3 ? ms_qr(ctx, b, &o, &o2)
               : which == 4 ? ms_inv(ctx, at, &o)
               : which == 5 ? ms_det(ctx, at, &o)
               : which == 6 ? ms_cholesky(ctx, sym, &o)
               : which == 7 ? ms_matvec(ctx, at, v, &o)
               : which == 8 ? ms_dot(ctx, v, v, &o)
                            : ms_outer(ctx, v, v, &o);
      if (st != MS_OK) {
        failures++;
        if (st != MS_ENOMEM || o != NULL || o2 != NULL || ms_ctx_bytes(ctx) != base) clean = 0;
      } else {
        ms_tensor_release(o);
        ms_tensor_release(o2);
        if (ms_ctx_bytes(ctx) != base) clean = 0;
      }
    }
  }
  ms_ctx_set_limit(ctx, 0);
  CHECK(failures > 0);
  CHECK(clean);
  ms_tensor *ts[] = {a, b, at, v, xs, sym};
  for (int i = 0; i < 6; i++) ms_tensor_release(ts[i]);
}

/* The BLAS thread setting: a fixed count wins; by size, a small product gets one thread (unless
 * the environment set OpenBLAS's count, which is then left as it is) and a large one at least
 * one; a negative count is refused. Products are counted: a matvec is one, a dot none. */
static void test_threads(void) {
  CHECK(ms_ctx_threads(ctx) == 0);
  CHECK(ms_ctx_set_threads(ctx, 3) == MS_OK);
  CHECK(ms_linalg_threads(ctx, 10) == 3 && ms_linalg_threads(ctx, (int64_t)1 << 30) == 3);
  CHECK_FAILS(ctx, ms_ctx_set_threads(ctx, -1), MS_EARG, "set_threads: n must be >= 1");
  CHECK(ms_ctx_threads(ctx) == 3);
  CHECK(ms_ctx_set_threads(ctx, 0) == MS_OK);
  int env = getenv("OPENBLAS_NUM_THREADS") != NULL || getenv("OMP_NUM_THREADS") != NULL;
  ms_ctx *fresh = ms_ctx_new(NULL, NULL);
  int small = ms_linalg_threads(fresh, 100 * 100), large = ms_linalg_threads(fresh, 4000 * 4000);
  CHECK(env ? small == large : small == 1);
  CHECK(large >= 1);
  ms_ctx_free(fresh);
  int64_t n = 3, sh[2] = {3, 3};
  ms_tensor *a = NULL, *x = NULL, *y = NULL, *d = NULL;
  CHECK_OK(ctx, ms_tensor_ones(ctx, 2, sh, &a));
  CHECK_OK(ctx, ms_tensor_ones(ctx, 1, &n, &x));
  uint64_t before = ms_ctx_products(ctx);
  CHECK_OK(ctx, ms_matvec(ctx, a, x, &y));
  CHECK_OK(ctx, ms_dot(ctx, x, y, &d));
  CHECK(ms_ctx_products(ctx) == before + 1);
  CHECK_NEAR(ms_tensor_data(d)[0], 9, 0); /* ones(3,3) ones(3) = 3s; dot with ones */
  ms_tensor_release(a), ms_tensor_release(x), ms_tensor_release(y), ms_tensor_release(d);
}

int main(void) {
  ms_rng_seed(&rng, 12345);
  return check_main(
      &ctx, (const check_test[]){test_matmul_layouts, test_matmul_vectors, test_products_by_hand,
                                 test_eigh, test_solve, test_cholesky, test_qr, test_inv_det,
                                 test_errors, test_out_of_memory, test_threads, NULL});
}
