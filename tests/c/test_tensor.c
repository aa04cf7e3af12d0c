/*
 * Tensor tests: geometry, constructors, random tensors, views and storage sharing,
 * reshape/permute/slice/select/expand/cat, element access, version stamps, in-place
 * copies (broadcast and overlapping), and argument errors with their messages.
 * Expected values are written out by hand or computed with plain loops in the test.
 */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "metastep/ctx.h"
#include "metastep/ops.h"
#include "metastep/tensor.h"

static ms_ctx *ctx;

/* Clears the last error first, so a stale message cannot satisfy the check. */
#define FAILS(call, st, msg)         \
  do {                               \
    ms_ctx_clear_error(ctx);         \
    CHECK_FAILS(ctx, call, st, msg); \
  } while (0)

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

/* A non-NULL pointer no tensor has: failures must overwrite it with NULL. */
static int sentinel_;
#define SENTINEL ((ms_tensor *)&sentinel_)

/* 1 if t's elements in row-major order are exactly want[0..n). */
static int values_are(const ms_tensor *t, const double *want, int64_t n) {
  double buf[256];
  if (ms_tensor_numel(t) != n || n > 256) return 0;
  if (ms_tensor_read(ctx, t, buf, n) != MS_OK) return 0;
  for (int64_t i = 0; i < n; i++)
    if (buf[i] != want[i]) {
      fprintf(stderr, "  element %lld: got %.17g, want %.17g\n", (long long)i, buf[i], want[i]);
      return 0;
    }
  return 1;
}
#define VALUES(t, ...)                           \
  values_are((t), (const double[]){__VA_ARGS__}, \
             (int64_t)(sizeof((const double[]){__VA_ARGS__}) / sizeof(double)))

static int shape_is(const ms_tensor *t, int ndim, const int64_t *shape) {
  if (ms_tensor_ndim(t) != ndim) return 0;
  for (int i = 0; i < ndim; i++)
    if (ms_tensor_shape(t)[i] != shape[i] || ms_tensor_dim(t, i) != shape[i]) return 0;
  return 1;
}

static int strides_are(const ms_tensor *t, const int64_t *strides) {
  for (int i = 0; i < ms_tensor_ndim(t); i++)
    if (ms_tensor_strides(t)[i] != strides[i]) return 0;
  return 1;
}

static double get(const ms_tensor *t, const int64_t *index) {
  double v = NAN;
  CHECK(ms_tensor_get(ctx, t, index, &v) == MS_OK);
  return v;
}

/* Shape string with spaces removed, so the check holds for "[3,4]" and "[3, 4]". */
static const char *squeezed_shape(int ndim, const int64_t *shape) {
  static char buf[MS_SHAPE_STRLEN], out[MS_SHAPE_STRLEN];
  ms_shape_str(ndim, shape, buf, sizeof buf);
  size_t k = 0;
  for (size_t i = 0; buf[i]; i++)
    if (buf[i] != ' ') out[k++] = buf[i];
  out[k] = '\0';
  return out;
}

static void test_geometry(void) {
  ms_tensor *t, *s, *e;
  CHECK(ms_tensor_zeros(ctx, 3, SHAPE(2, 3, 4), &t) == MS_OK);
  CHECK(shape_is(t, 3, SHAPE(2, 3, 4)));
  CHECK(strides_are(t, SHAPE(12, 4, 1)));
  CHECK(ms_tensor_numel(t) == 24);
  CHECK(ms_tensor_is_contiguous(t));
  CHECK(ms_tensor_ctx(t) == ctx);
  CHECK(ms_tensor_version(t) == 0);
  CHECK(ms_tensor_shares_storage(t, t));
  ms_tensor_release(t);

  CHECK(ms_tensor_scalar(ctx, 2.5, &s) == MS_OK);
  CHECK(ms_tensor_ndim(s) == 0);
  CHECK(ms_tensor_numel(s) == 1);
  CHECK(ms_tensor_is_contiguous(s));
  CHECK(ms_tensor_data(s)[0] == 2.5);
  ms_tensor_release(s);

  /* Empty tensors: zero elements anywhere in the shape; contiguous by definition. */
  const int64_t empties[3][2] = {{0, 3}, {3, 0}, {0, 0}};
  for (int k = 0; k < 3; k++) {
    CHECK(ms_tensor_zeros(ctx, 2, empties[k], &e) == MS_OK);
    CHECK(shape_is(e, 2, empties[k]));
    CHECK(ms_tensor_numel(e) == 0);
    CHECK(ms_tensor_is_contiguous(e));
    ms_tensor *v = SENTINEL, *c = SENTINEL;
    CHECK(ms_tensor_view(ctx, e, 1, SHAPE(0), &v) == MS_OK);
    CHECK(v != NULL && v != SENTINEL && ms_tensor_numel(v) == 0);
    CHECK(ms_tensor_copy(ctx, e, &c) == MS_OK && ms_tensor_numel(c) == 0);
    ms_tensor_release(v);
    ms_tensor_release(c);
    ms_tensor_release(e);
  }

  /* The full MS_MAXDIM dimensions are allowed. */
  int64_t ones8[MS_MAXDIM];
  for (int i = 0; i < MS_MAXDIM; i++) ones8[i] = i % 2 + 1;
  CHECK(ms_tensor_ones(ctx, MS_MAXDIM, ones8, &t) == MS_OK);
  CHECK(ms_tensor_ndim(t) == MS_MAXDIM && ms_tensor_numel(t) == 16);
  ms_tensor_release(t);

  /* Shape strings. */
  char buf[MS_SHAPE_STRLEN];
  CHECK(strcmp(ms_shape_str(0, NULL, buf, sizeof buf), "[]") == 0);
  CHECK(strcmp(squeezed_shape(2, SHAPE(3, 4)), "[3,4]") == 0);
  CHECK(strcmp(squeezed_shape(1, SHAPE(0)), "[0]") == 0);
  int64_t big[MS_MAXDIM];
  for (int i = 0; i < MS_MAXDIM; i++) big[i] = INT64_MIN;
  ms_shape_str(MS_MAXDIM, big, buf, sizeof buf); /* the longest shape fits */
  CHECK(buf[strlen(buf) - 1] == ']');
  char small[8];
  memset(small, '#', sizeof small);
  ms_shape_str(3, SHAPE(123456, 7, 8), small, 5);
  CHECK(strlen(small) < 5);
  CHECK(small[5] == '#' && small[7] == '#'); /* nothing written past size */

  /* Retain/release: the tensor lives until the last reference goes. */
  CHECK(ms_tensor_ones(ctx, 1, SHAPE(3), &t) == MS_OK);
  CHECK(ms_tensor_retain(t) == t);
  ms_tensor_release(t);
  CHECK(VALUES(t, 1, 1, 1));
  ms_tensor_release(t);
  ms_tensor_release(NULL);
  CHECK(ms_ctx_bytes(ctx) == 0);
}

static void test_constructors(void) {
  ms_tensor *t;
  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(2, 2), &t) == MS_OK);
  CHECK(VALUES(t, 0, 0, 0, 0));
  ms_tensor_release(t);
  CHECK(ms_tensor_ones(ctx, 1, SHAPE(3), &t) == MS_OK);
  CHECK(VALUES(t, 1, 1, 1));
  ms_tensor_release(t);
  CHECK(ms_tensor_full(ctx, 2, SHAPE(1, 3), -0.5, &t) == MS_OK);
  CHECK(shape_is(t, 2, SHAPE(1, 3)) && VALUES(t, -0.5, -0.5, -0.5));
  ms_tensor_release(t);
  CHECK(ms_tensor_full(ctx, 1, SHAPE(2), INFINITY, &t) == MS_OK); /* non-finite is data */
  CHECK(VALUES(t, INFINITY, INFINITY));
  ms_tensor_release(t);
  CHECK(ms_tensor_scalar(ctx, -3.25, &t) == MS_OK);
  double v = 0;
  CHECK(ms_tensor_item(ctx, t, &v) == MS_OK && v == -3.25);
  CHECK(VALUES(t, -3.25));
  ms_tensor_release(t);

  const double d[6] = {1, 2, 3, 4, 5, 6};
  CHECK(ms_tensor_from_data(ctx, 2, SHAPE(2, 3), d, &t) == MS_OK);
  CHECK(VALUES(t, 1, 2, 3, 4, 5, 6));
  CHECK(get(t, SHAPE(1, 0)) == 4 && get(t, SHAPE(0, 2)) == 3);
  ms_tensor_release(t);
  CHECK(ms_tensor_from_data(ctx, 1, SHAPE(0), NULL, &t) == MS_OK); /* nothing to copy */
  CHECK(ms_tensor_numel(t) == 0);
  ms_tensor_release(t);

  /* eye: square, wide, tall, default m, empty. */
  CHECK(ms_tensor_eye(ctx, 3, -1, &t) == MS_OK);
  CHECK(shape_is(t, 2, SHAPE(3, 3)) && VALUES(t, 1, 0, 0, 0, 1, 0, 0, 0, 1));
  ms_tensor_release(t);
  CHECK(ms_tensor_eye(ctx, 2, 4, &t) == MS_OK);
  CHECK(shape_is(t, 2, SHAPE(2, 4)) && VALUES(t, 1, 0, 0, 0, 0, 1, 0, 0));
  ms_tensor_release(t);
  CHECK(ms_tensor_eye(ctx, 4, 2, &t) == MS_OK);
  CHECK(shape_is(t, 2, SHAPE(4, 2)) && VALUES(t, 1, 0, 0, 1, 0, 0, 0, 0));
  ms_tensor_release(t);
  CHECK(ms_tensor_eye(ctx, 0, -1, &t) == MS_OK);
  CHECK(shape_is(t, 2, SHAPE(0, 0)));
  ms_tensor_release(t);
  CHECK(ms_tensor_eye(ctx, 3, 0, &t) == MS_OK);
  CHECK(shape_is(t, 2, SHAPE(3, 0)));
  ms_tensor_release(t);

  /* diag: vector -> matrix, matrix -> vector, including strided inputs. */
  ms_tensor *vec, *m, *mt, *dg, *sl;
  CHECK(ms_tensor_from_data(ctx, 1, SHAPE(3), (double[]){1, 2, 3}, &vec) == MS_OK);
  CHECK(ms_tensor_diag(ctx, vec, &dg) == MS_OK);
  CHECK(shape_is(dg, 2, SHAPE(3, 3)) && VALUES(dg, 1, 0, 0, 0, 2, 0, 0, 0, 3));
  CHECK(!ms_tensor_shares_storage(dg, vec));
  ms_tensor_release(dg);
  CHECK(ms_tensor_from_data(ctx, 2, SHAPE(2, 3), d, &m) == MS_OK);
  CHECK(ms_tensor_diag(ctx, m, &dg) == MS_OK);
  CHECK(shape_is(dg, 1, SHAPE(2)) && VALUES(dg, 1, 5));
  CHECK(!ms_tensor_shares_storage(dg, m));
  ms_tensor_release(dg);
  CHECK(ms_tensor_transpose(ctx, m, 0, 1, &mt) == MS_OK); /* [[1,4],[2,5],[3,6]] */
  CHECK(ms_tensor_diag(ctx, mt, &dg) == MS_OK);
  CHECK(VALUES(dg, 1, 5));
  ms_tensor_release(dg);
  CHECK(ms_tensor_slice(ctx, m, 1, 1, 3, 1, &sl) == MS_OK); /* [[2,3],[5,6]] */
  CHECK(ms_tensor_diag(ctx, sl, &dg) == MS_OK);
  CHECK(VALUES(dg, 2, 6));
  ms_tensor_release(dg);
  ms_tensor_release(sl);
  CHECK(ms_tensor_select(ctx, m, 1, 2, &sl) == MS_OK); /* column [3, 6], stride 3 */
  CHECK(ms_tensor_diag(ctx, sl, &dg) == MS_OK);
  CHECK(VALUES(dg, 3, 0, 0, 6));
  ms_tensor_release(dg);
  ms_tensor_release(sl);
  /* Round trip: diag(diag(v)) == v. */
  CHECK(ms_tensor_diag(ctx, vec, &dg) == MS_OK);
  CHECK(ms_tensor_diag(ctx, dg, &sl) == MS_OK);
  CHECK(VALUES(sl, 1, 2, 3));
  ms_tensor_release(sl);
  ms_tensor_release(dg);
  ms_tensor *cube, *sc;
  CHECK(ms_tensor_zeros(ctx, 3, SHAPE(2, 2, 2), &cube) == MS_OK);
  dg = SENTINEL;
  FAILS(ms_tensor_diag(ctx, cube, &dg), MS_ESHAPE, "diag");
  CHECK(dg == NULL);
  CHECK(strstr(ms_ctx_error(ctx), "2,2,2") || strstr(ms_ctx_error(ctx), "2, 2, 2"));
  CHECK(ms_tensor_scalar(ctx, 1, &sc) == MS_OK);
  FAILS(ms_tensor_diag(ctx, sc, &dg), MS_ESHAPE, "diag");
  ms_tensor_release(sc);
  ms_tensor_release(cube);
  ms_tensor_release(mt);
  ms_tensor_release(m);
  ms_tensor_release(vec);

  /* arange */
  CHECK(ms_tensor_arange(ctx, 0, 5, 1, &t) == MS_OK);
  CHECK(shape_is(t, 1, SHAPE(5)) && VALUES(t, 0, 1, 2, 3, 4));
  ms_tensor_release(t);
  CHECK(ms_tensor_arange(ctx, 5, 0, -1, &t) == MS_OK);
  CHECK(VALUES(t, 5, 4, 3, 2, 1));
  ms_tensor_release(t);
  CHECK(ms_tensor_arange(ctx, 0, -1, -0.25, &t) == MS_OK);
  CHECK(VALUES(t, 0, -0.25, -0.5, -0.75));
  ms_tensor_release(t);
  CHECK(ms_tensor_arange(ctx, 1, 2.5, 0.5, &t) == MS_OK); /* stop excluded */
  CHECK(VALUES(t, 1, 1.5, 2));
  ms_tensor_release(t);
  CHECK(ms_tensor_arange(ctx, 0, 1, 0.3, &t) == MS_OK); /* 0, .3, .6, .9 */
  CHECK(ms_tensor_numel(t) == 4);
  for (int i = 0; i < 4; i++) CHECK_NEAR(get(t, SHAPE(i)), 0.3 * i, 1e-15);
  ms_tensor_release(t);
  CHECK(ms_tensor_arange(ctx, 2, 2, 1, &t) == MS_OK); /* empty */
  CHECK(shape_is(t, 1, SHAPE(0)));
  ms_tensor_release(t);
  CHECK(ms_tensor_arange(ctx, 3, 0, 1, &t) == MS_OK); /* wrong direction: empty */
  CHECK(shape_is(t, 1, SHAPE(0)));
  ms_tensor_release(t);
  CHECK(ms_tensor_arange(ctx, 0, 3, -1, &t) == MS_OK);
  CHECK(shape_is(t, 1, SHAPE(0)));
  ms_tensor_release(t);

  /* linspace: endpoints exact, n = 1 gives the start. */
  CHECK(ms_tensor_linspace(ctx, 0, 1, 5, &t) == MS_OK);
  CHECK(VALUES(t, 0, 0.25, 0.5, 0.75, 1));
  ms_tensor_release(t);
  CHECK(ms_tensor_linspace(ctx, 1, -1, 3, &t) == MS_OK);
  CHECK(VALUES(t, 1, 0, -1));
  ms_tensor_release(t);
  CHECK(ms_tensor_linspace(ctx, 3, 7, 1, &t) == MS_OK);
  CHECK(shape_is(t, 1, SHAPE(1)) && VALUES(t, 3));
  ms_tensor_release(t);
  CHECK(ms_tensor_linspace(ctx, 0.1, 0.7, 7, &t) == MS_OK);
  CHECK(get(t, SHAPE(0)) == 0.1 && get(t, SHAPE(6)) == 0.7);
  for (int i = 0; i < 7; i++) CHECK_NEAR(get(t, SHAPE(i)), 0.1 * (i + 1), 1e-15);
  ms_tensor_release(t);
  CHECK(ms_tensor_linspace(ctx, -1e300, 1e300, 3, &t) == MS_OK); /* wide range */
  CHECK(VALUES(t, -1e300, 0, 1e300));
  ms_tensor_release(t);
  CHECK(ms_tensor_linspace(ctx, -1e308, 1e308, 5, &t) == MS_OK); /* b - a overflows */
  CHECK(VALUES(t, -1e308, -5e307, 0, 5e307, 1e308));
  ms_tensor_release(t);
  CHECK(ms_ctx_bytes(ctx) == 0);
}

static void test_random(void) {
  ms_rng r1, r2;
  ms_tensor *a, *b;
  const int64_t n = 100000;
  double *buf = ms_ctx_alloc(ctx, (size_t)n * sizeof(double));

  /* Same seed, same numbers; through an explicit generator and the context's. */
  ms_rng_seed(&r1, 11);
  ms_rng_seed(&r2, 11);
  CHECK(ms_tensor_rand(ctx, &r1, 2, SHAPE(4, 5), -1, 1, &a) == MS_OK);
  CHECK(ms_tensor_rand(ctx, &r2, 2, SHAPE(4, 5), -1, 1, &b) == MS_OK);
  CHECK(shape_is(a, 2, SHAPE(4, 5)));
  double x[20], y[20];
  ms_tensor_read(ctx, a, x, 20);
  ms_tensor_read(ctx, b, y, 20);
  CHECK(memcmp(x, y, sizeof x) == 0);
  CHECK(x[0] != x[1]);
  /* rand(lo, hi) is lo + (hi - lo) * uniform from the same generator. */
  ms_rng_seed(&r1, 11);
  int same = 1;
  for (int i = 0; i < 20; i++) same &= x[i] == -1 + 2 * ms_rng_uniform(&r1);
  CHECK(same);
  ms_tensor_release(a);
  ms_tensor_release(b);
  ms_ctx_seed(ctx, 11);
  CHECK(ms_tensor_rand(ctx, NULL, 1, SHAPE(20), -1, 1, &a) == MS_OK);
  ms_tensor_read(ctx, a, y, 20);
  CHECK(memcmp(x, y, sizeof x) == 0);
  ms_tensor_release(a);

  ms_rng_seed(&r1, 12);
  ms_rng_seed(&r2, 12);
  CHECK(ms_tensor_randn(ctx, &r1, 1, SHAPE(9), 0, 1, &a) == MS_OK);
  CHECK(ms_tensor_randn(ctx, &r2, 1, SHAPE(9), 0, 1, &b) == MS_OK);
  ms_tensor_read(ctx, a, x, 9);
  ms_tensor_read(ctx, b, y, 9);
  CHECK(memcmp(x, y, 9 * sizeof(double)) == 0);
  ms_tensor_release(a);
  ms_tensor_release(b);

  /* Range and moments of uniform [-2, 3): mean 0.5, variance 25/12. */
  CHECK(ms_tensor_rand(ctx, NULL, 1, &n, -2, 3, &a) == MS_OK);
  ms_tensor_read(ctx, a, buf, n);
  double s1 = 0, s2 = 0;
  int in_range = 1;
  for (int64_t i = 0; i < n; i++) {
    in_range &= buf[i] >= -2 && buf[i] < 3;
    s1 += buf[i];
    s2 += buf[i] * buf[i];
  }
  double mean = s1 / n, var = s2 / n - mean * mean;
  CHECK(in_range);
  CHECK(fabs(mean - 0.5) < 0.02);
  CHECK(fabs(var - 25.0 / 12.0) < 0.03);
  ms_tensor_release(a);

  /* normal(1, 2): mean 1, standard deviation 2. */
  CHECK(ms_tensor_randn(ctx, NULL, 2, SHAPE(400, 250), 1, 2, &a) == MS_OK);
  ms_tensor_read(ctx, a, buf, n);
  s1 = s2 = 0;
  for (int64_t i = 0; i < n; i++) {
    s1 += buf[i];
    s2 += buf[i] * buf[i];
  }
  mean = s1 / n;
  var = s2 / n - mean * mean;
  CHECK(fabs(mean - 1) < 0.03);
  CHECK(fabs(sqrt(var) - 2) < 0.02);
  ms_tensor_release(a);

  /* The largest draw stays below hi even where lo + (hi - lo) * u rounds up: the state
   * {0, x, 0, 0} outputs rotl(5x, 7) * 9, so x is chosen to make that UINT64_MAX. */
  {
    const uint64_t inv9 = UINT64_C(0x8E38E38E38E38E39); /* 9 * inv9 == 1 mod 2^64 */
    const uint64_t inv5 = UINT64_C(0xCCCCCCCCCCCCCCCD); /* 5 * inv5 == 1 mod 2^64 */
    uint64_t w = UINT64_MAX * inv9;
    ms_rng top = {{0, ((w >> 7) | (w << 57)) * inv5, 0, 0}, 0, 0}, probe = top;
    CHECK(ms_rng_next(&probe) == UINT64_MAX);
    const double bounds[3][2] = {{0, 1}, {0.9, 1}, {-2, 3}};
    for (int k = 0; k < 3; k++) {
      probe = top;
      CHECK(ms_tensor_rand(ctx, &probe, 0, NULL, bounds[k][0], bounds[k][1], &a) == MS_OK);
      double u = ms_tensor_data(a)[0];
      CHECK(u < bounds[k][1] && u > bounds[k][1] - 1e-14);
      ms_tensor_release(a);
    }
  }

  /* Degenerate but valid: lo == hi, std == 0. */
  CHECK(ms_tensor_rand(ctx, NULL, 1, SHAPE(3), 4, 4, &a) == MS_OK);
  CHECK(VALUES(a, 4, 4, 4));
  ms_tensor_release(a);
  CHECK(ms_tensor_randn(ctx, NULL, 1, SHAPE(3), -1, 0, &a) == MS_OK);
  CHECK(VALUES(a, -1, -1, -1));
  ms_tensor_release(a);

  a = SENTINEL;
  FAILS(ms_tensor_rand(ctx, NULL, 1, SHAPE(3), 1, 0, &a), MS_EARG, "rand");
  CHECK(a == NULL);
  FAILS(ms_tensor_rand(ctx, NULL, 1, SHAPE(3), 0, INFINITY, &a), MS_EARG, "finite");
  FAILS(ms_tensor_randn(ctx, NULL, 1, SHAPE(3), 0, -1, &a), MS_EARG, "std");
  FAILS(ms_tensor_randn(ctx, NULL, 1, SHAPE(3), NAN, 1, &a), MS_EARG, "randn");
  FAILS(ms_tensor_rand(ctx, NULL, 1, SHAPE(-3), 0, 1, &a), MS_EARG, "negative");
  CHECK(a == NULL);
  ms_ctx_dealloc(ctx, buf, (size_t)n * sizeof(double));
  CHECK(ms_ctx_bytes(ctx) == 0);
}

static void test_views(void) {
  ms_tensor *base, *m, *mt, *row, *col, *sl, *v;
  CHECK(ms_tensor_arange(ctx, 0, 6, 1, &base) == MS_OK);
  CHECK(ms_tensor_view(ctx, base, 2, SHAPE(2, 3), &m) == MS_OK); /* [[0,1,2],[3,4,5]] */
  CHECK(ms_tensor_shares_storage(m, base));
  CHECK(shape_is(m, 2, SHAPE(2, 3)) && strides_are(m, SHAPE(3, 1)));

  /* Transpose: strides swap, writes reach the base. */
  CHECK(ms_tensor_transpose(ctx, m, 0, 1, &mt) == MS_OK);
  CHECK(shape_is(mt, 2, SHAPE(3, 2)) && strides_are(mt, SHAPE(1, 3)));
  CHECK(!ms_tensor_is_contiguous(mt));
  CHECK(ms_tensor_shares_storage(mt, base));
  CHECK(VALUES(mt, 0, 3, 1, 4, 2, 5));
  CHECK(ms_tensor_set(ctx, mt, SHAPE(2, 0), 20) == MS_OK); /* m[0][2] */
  CHECK(VALUES(base, 0, 1, 20, 3, 4, 5));
  CHECK(ms_tensor_transpose(ctx, m, -1, -2, &v) == MS_OK); /* negative axes */
  CHECK(VALUES(v, 0, 3, 1, 4, 20, 5));
  ms_tensor_release(v);

  /* Select a row and a column. */
  CHECK(ms_tensor_select(ctx, m, 0, 1, &row) == MS_OK);
  CHECK(shape_is(row, 1, SHAPE(3)) && VALUES(row, 3, 4, 5));
  CHECK(ms_tensor_data(row) == ms_tensor_data(base) + 3);
  CHECK(ms_tensor_select(ctx, m, -1, 1, &col) == MS_OK);
  CHECK(shape_is(col, 1, SHAPE(2)) && strides_are(col, SHAPE(3)) && VALUES(col, 1, 4));
  CHECK(ms_tensor_set(ctx, col, SHAPE(1), 40) == MS_OK);
  CHECK(VALUES(base, 0, 1, 20, 3, 40, 5));
  CHECK(ms_tensor_fill_(ctx, row, 7) == MS_OK);
  CHECK(VALUES(base, 0, 1, 20, 7, 7, 7));
  ms_tensor *s0;
  CHECK(ms_tensor_select(ctx, row, 0, 2, &s0) == MS_OK); /* down to 0-d */
  double x = 0;
  CHECK(ms_tensor_ndim(s0) == 0 && ms_tensor_item(ctx, s0, &x) == MS_OK && x == 7);
  CHECK(ms_tensor_fill_(ctx, s0, 6) == MS_OK); /* fill a 0-d view */
  CHECK(VALUES(base, 0, 1, 20, 7, 7, 6));
  CHECK(ms_tensor_set(ctx, s0, NULL, 7) == MS_OK); /* 0-d: empty index */
  CHECK(ms_tensor_get(ctx, s0, NULL, &x) == MS_OK && x == 7);
  ms_tensor_release(s0);

  /* Slice with a step. */
  ms_tensor *r10;
  CHECK(ms_tensor_arange(ctx, 0, 10, 1, &r10) == MS_OK);
  CHECK(ms_tensor_slice(ctx, r10, 0, 1, 8, 3, &sl) == MS_OK);
  CHECK(shape_is(sl, 1, SHAPE(3)) && strides_are(sl, SHAPE(3)) && VALUES(sl, 1, 4, 7));
  CHECK(ms_tensor_slice(ctx, sl, 0, 1, 3, 1, &v) == MS_OK); /* slice of a slice */
  CHECK(VALUES(v, 4, 7));
  CHECK(ms_tensor_set(ctx, v, SHAPE(0), -4) == MS_OK);
  CHECK(VALUES(r10, 0, 1, 2, 3, -4, 5, 6, 7, 8, 9));
  ms_tensor_release(v);
  CHECK(ms_tensor_slice(ctx, r10, 0, 0, 10, 4, &v) == MS_OK); /* 0, 4, 8 */
  CHECK(VALUES(v, 0, -4, 8));
  ms_tensor_release(v);
  CHECK(ms_tensor_slice(ctx, r10, 0, 2, 7, INT64_MAX, &v) == MS_OK); /* huge step: one element */
  CHECK(shape_is(v, 1, SHAPE(1)) && VALUES(v, 2));
  ms_tensor_release(v);
  CHECK(ms_tensor_slice(ctx, r10, 0, 9, 10, 5, &v) == MS_OK);
  CHECK(VALUES(v, 9));
  ms_tensor_release(v);
  CHECK(ms_tensor_slice(ctx, r10, 0, 3, 3, 1, &v) == MS_OK); /* empty */
  CHECK(shape_is(v, 1, SHAPE(0)));
  ms_tensor_release(v);
  CHECK(ms_tensor_slice(ctx, r10, 0, 10, 10, 2, &v) == MS_OK); /* empty at the end */
  CHECK(shape_is(v, 1, SHAPE(0)));
  ms_tensor_release(v);
  CHECK(ms_tensor_slice(ctx, m, 1, 0, 3, 2, &v) == MS_OK); /* columns 0 and 2 */
  CHECK(shape_is(v, 2, SHAPE(2, 2)) && strides_are(v, SHAPE(3, 2)) && VALUES(v, 0, 20, 7, 7));
  ms_tensor_release(v);
  v = SENTINEL;
  FAILS(ms_tensor_slice(ctx, r10, 0, 0, 5, 0, &v), MS_EARG, "step");
  CHECK(v == NULL);
  FAILS(ms_tensor_slice(ctx, r10, 0, 0, 11, 1, &v), MS_EINDEX, "out of bounds");
  FAILS(ms_tensor_slice(ctx, r10, 0, 5, 4, 1, &v), MS_EINDEX, "out of bounds");
  FAILS(ms_tensor_slice(ctx, r10, 0, -1, 4, 1, &v), MS_EINDEX, "out of bounds");
  FAILS(ms_tensor_slice(ctx, r10, 1, 0, 1, 1, &v), MS_EINDEX, "axis 1");
  FAILS(ms_tensor_select(ctx, m, 0, 2, &v), MS_EINDEX, "out of range");
  FAILS(ms_tensor_select(ctx, m, 1, -1, &v), MS_EINDEX, "out of range");
  FAILS(ms_tensor_select(ctx, m, 2, 0, &v), MS_EINDEX, "axis 2");
  CHECK(v == NULL);

  /* The storage outlives the tensor it came from. */
  ms_tensor_release(r10);
  CHECK(VALUES(sl, 1, -4, 7));
  ms_tensor_release(sl);

  /* reshape: a view when contiguous, a copy otherwise; view refuses non-contiguous. */
  ms_tensor *rs;
  CHECK(ms_tensor_reshape(ctx, m, 2, SHAPE(3, 2), &rs) == MS_OK);
  CHECK(ms_tensor_shares_storage(rs, base) && VALUES(rs, 0, 1, 20, 7, 7, 7));
  ms_tensor_release(rs);
  CHECK(ms_tensor_reshape(ctx, mt, 1, SHAPE(6), &rs) == MS_OK);
  CHECK(!ms_tensor_shares_storage(rs, base));
  CHECK(ms_tensor_is_contiguous(rs) && VALUES(rs, 0, 7, 1, 7, 20, 7));
  CHECK(ms_tensor_set(ctx, rs, SHAPE(0), 99) == MS_OK);
  CHECK(get(base, SHAPE(0)) == 0); /* the copy is independent */
  ms_tensor_release(rs);
  v = SENTINEL;
  FAILS(ms_tensor_view(ctx, mt, 1, SHAPE(6), &v), MS_ESTATE, "not contiguous");
  CHECK(v == NULL);
  CHECK(ms_tensor_contiguous(ctx, mt, &v) == MS_OK);
  CHECK(!ms_tensor_shares_storage(v, mt) && VALUES(v, 0, 7, 1, 7, 20, 7));
  ms_tensor_release(v);
  CHECK(ms_tensor_contiguous(ctx, m, &v) == MS_OK);
  CHECK(v == m); /* already contiguous: the same tensor, retained */
  ms_tensor_release(v);
  /* A contiguous slice (rows) is contiguous with an offset, so view works. */
  CHECK(ms_tensor_slice(ctx, m, 0, 1, 2, 1, &sl) == MS_OK);
  CHECK(ms_tensor_is_contiguous(sl));
  CHECK(ms_tensor_view(ctx, sl, 1, SHAPE(-1), &v) == MS_OK);
  CHECK(ms_tensor_shares_storage(v, base) && VALUES(v, 7, 7, 7));
  ms_tensor_release(v);
  ms_tensor_release(sl);

  /* -1 inference. */
  CHECK(ms_tensor_view(ctx, base, 2, SHAPE(-1, 2), &v) == MS_OK);
  CHECK(shape_is(v, 2, SHAPE(3, 2)));
  ms_tensor_release(v);
  CHECK(ms_tensor_view(ctx, base, 3, SHAPE(1, -1, 3), &v) == MS_OK);
  CHECK(shape_is(v, 3, SHAPE(1, 2, 3)));
  ms_tensor_release(v);
  CHECK(ms_tensor_reshape(ctx, mt, 2, SHAPE(2, -1), &v) == MS_OK);
  CHECK(shape_is(v, 2, SHAPE(2, 3)) && VALUES(v, 0, 7, 1, 7, 20, 7));
  ms_tensor_release(v);
  ms_tensor *one;
  CHECK(ms_tensor_ones(ctx, 1, SHAPE(1), &one) == MS_OK);
  CHECK(ms_tensor_view(ctx, one, 0, NULL, &v) == MS_OK); /* [1] -> scalar */
  CHECK(ms_tensor_ndim(v) == 0);
  ms_tensor_release(v);
  ms_tensor_release(one);
  v = SENTINEL;
  FAILS(ms_tensor_view(ctx, base, 2, SHAPE(-1, 4), &v), MS_ESHAPE, "infer");
  FAILS(ms_tensor_view(ctx, base, 2, SHAPE(-1, -1), &v), MS_EARG, "invalid size");
  FAILS(ms_tensor_view(ctx, base, 2, SHAPE(4, 2), &v), MS_ESHAPE, "cannot reshape");
  FAILS(ms_tensor_reshape(ctx, mt, 1, SHAPE(7), &v), MS_ESHAPE, "cannot reshape");
  FAILS(ms_tensor_view(ctx, base, 2, SHAPE(-2, 3), &v), MS_EARG, "-2");
  CHECK(v == NULL);

  ms_tensor_release(row);
  ms_tensor_release(col);
  ms_tensor_release(mt);
  ms_tensor_release(m);
  ms_tensor_release(base);
  CHECK(ms_ctx_bytes(ctx) == 0);
}

static void test_permute_expand(void) {
  ms_tensor *r, *t, *p, *v;
  CHECK(ms_tensor_arange(ctx, 0, 24, 1, &r) == MS_OK);
  CHECK(ms_tensor_view(ctx, r, 3, SHAPE(2, 3, 4), &t) == MS_OK);
  CHECK(ms_tensor_permute(ctx, t, (const int[]){2, 0, 1}, &p) == MS_OK);
  CHECK(shape_is(p, 3, SHAPE(4, 2, 3)) && strides_are(p, SHAPE(1, 12, 4)));
  CHECK(ms_tensor_shares_storage(p, t));
  int ok = 1;
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++)
      for (int k = 0; k < 4; k++) ok &= get(p, SHAPE(k, i, j)) == 12 * i + 4 * j + k;
  CHECK(ok);
  /* Row-major read of the permuted view, computed by loops. */
  double want[24], got[24];
  int n = 0;
  for (int k = 0; k < 4; k++)
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 3; j++) want[n++] = 12 * i + 4 * j + k;
  ms_tensor_read(ctx, p, got, 24);
  CHECK(memcmp(want, got, sizeof want) == 0);
  ms_tensor_release(p);
  CHECK(ms_tensor_permute(ctx, t, (const int[]){-3, -2, -1}, &p) == MS_OK); /* identity */
  CHECK(ms_tensor_is_contiguous(p) && strides_are(p, SHAPE(12, 4, 1)));
  ms_tensor_release(p);
  p = SENTINEL;
  FAILS(ms_tensor_permute(ctx, t, (const int[]){0, 0, 1}, &p), MS_EARG, "repeated");
  FAILS(ms_tensor_permute(ctx, t, (const int[]){0, 3, 1}, &p), MS_EINDEX, "axis 3");
  CHECK(p == NULL);

  /* expand: stride 0 on new and size-1 axes, shares storage. */
  ms_tensor *c;
  CHECK(ms_tensor_from_data(ctx, 2, SHAPE(3, 1), (double[]){1, 2, 3}, &c) == MS_OK);
  CHECK(ms_tensor_expand(ctx, c, 3, SHAPE(2, 3, 4), &v) == MS_OK);
  CHECK(shape_is(v, 3, SHAPE(2, 3, 4)) && strides_are(v, SHAPE(0, 1, 0)));
  CHECK(ms_tensor_shares_storage(v, c) && ms_tensor_numel(v) == 24);
  CHECK(!ms_tensor_is_contiguous(v));
  ok = 1;
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++)
      for (int k = 0; k < 4; k++) ok &= get(v, SHAPE(i, j, k)) == j + 1;
  CHECK(ok);
  ms_tensor_release(v);
  CHECK(ms_tensor_expand(ctx, c, 2, SHAPE(3, 1), &v) == MS_OK); /* same shape */
  CHECK(strides_are(v, SHAPE(1, 1)));
  ms_tensor_release(v);
  CHECK(ms_tensor_expand(ctx, c, 2, SHAPE(3, 0), &v) == MS_OK); /* size 1 -> 0 */
  CHECK(ms_tensor_numel(v) == 0);
  ms_tensor_release(v);
  ms_tensor *s;
  CHECK(ms_tensor_scalar(ctx, 5, &s) == MS_OK);
  CHECK(ms_tensor_expand(ctx, s, 2, SHAPE(2, 2), &v) == MS_OK);
  CHECK(strides_are(v, SHAPE(0, 0)) && VALUES(v, 5, 5, 5, 5));
  ms_tensor *vc;
  CHECK(ms_tensor_copy(ctx, v, &vc) == MS_OK); /* materializes */
  CHECK(strides_are(vc, SHAPE(2, 1)) && VALUES(vc, 5, 5, 5, 5));
  ms_tensor_release(vc);
  ms_tensor_release(v);
  ms_tensor_release(s);
  v = SENTINEL;
  FAILS(ms_tensor_expand(ctx, c, 2, SHAPE(4, 1), &v), MS_ESHAPE, "cannot broadcast");
  FAILS(ms_tensor_expand(ctx, c, 1, SHAPE(3), &v), MS_ESHAPE, "cannot broadcast");
  FAILS(ms_tensor_expand(ctx, c, 2, SHAPE(3, -1), &v), MS_EARG, "negative");
  CHECK(v == NULL);
  ms_tensor_release(c);
  ms_tensor_release(t);
  ms_tensor_release(r);
  CHECK(ms_ctx_bytes(ctx) == 0);
}

static void test_cat(void) {
  ms_tensor *a, *b, *c, *out, *at;
  CHECK(ms_tensor_from_data(ctx, 2, SHAPE(2, 3), (double[]){1, 2, 3, 4, 5, 6}, &a) == MS_OK);
  CHECK(ms_tensor_from_data(ctx, 2, SHAPE(1, 3), (double[]){7, 8, 9}, &b) == MS_OK);
  CHECK(ms_tensor_from_data(ctx, 2, SHAPE(2, 2), (double[]){10, 11, 12, 13}, &c) == MS_OK);

  CHECK(ms_tensor_cat(ctx, 2, (ms_tensor *[]){a, b}, 0, &out) == MS_OK);
  CHECK(shape_is(out, 2, SHAPE(3, 3)) && VALUES(out, 1, 2, 3, 4, 5, 6, 7, 8, 9));
  CHECK(!ms_tensor_shares_storage(out, a) && ms_tensor_is_contiguous(out));
  ms_tensor_release(out);
  CHECK(ms_tensor_cat(ctx, 3, (ms_tensor *[]){b, a, b}, -2, &out) == MS_OK);
  CHECK(shape_is(out, 2, SHAPE(4, 3)) && VALUES(out, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9));
  ms_tensor_release(out);
  CHECK(ms_tensor_cat(ctx, 2, (ms_tensor *[]){a, c}, 1, &out) == MS_OK);
  CHECK(shape_is(out, 2, SHAPE(2, 5)) && VALUES(out, 1, 2, 3, 10, 11, 4, 5, 6, 12, 13));
  ms_tensor_release(out);
  CHECK(ms_tensor_cat(ctx, 2, (ms_tensor *[]){c, a}, -1, &out) == MS_OK);
  CHECK(shape_is(out, 2, SHAPE(2, 5)) && VALUES(out, 10, 11, 1, 2, 3, 12, 13, 4, 5, 6));
  ms_tensor_release(out);
  CHECK(ms_tensor_cat(ctx, 1, (ms_tensor *[]){a}, 0, &out) == MS_OK); /* one input: a copy */
  CHECK(!ms_tensor_shares_storage(out, a) && VALUES(out, 1, 2, 3, 4, 5, 6));
  ms_tensor_release(out);
  /* Non-contiguous inputs. */
  CHECK(ms_tensor_transpose(ctx, a, 0, 1, &at) == MS_OK); /* [[1,4],[2,5],[3,6]] */
  CHECK(ms_tensor_cat(ctx, 2, (ms_tensor *[]){at, at}, 1, &out) == MS_OK);
  CHECK(shape_is(out, 2, SHAPE(3, 4)) && VALUES(out, 1, 4, 1, 4, 2, 5, 2, 5, 3, 6, 3, 6));
  CHECK(ms_tensor_version(out) == 0); /* a fresh tensor */
  ms_tensor_release(out);
  /* Empty pieces. */
  ms_tensor *e;
  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(0, 3), &e) == MS_OK);
  CHECK(ms_tensor_cat(ctx, 3, (ms_tensor *[]){e, b, e}, 0, &out) == MS_OK);
  CHECK(shape_is(out, 2, SHAPE(1, 3)) && VALUES(out, 7, 8, 9));
  ms_tensor_release(out);
  ms_tensor_release(e);
  /* 1-D */
  ms_tensor *v1, *v2;
  CHECK(ms_tensor_arange(ctx, 0, 3, 1, &v1) == MS_OK);
  CHECK(ms_tensor_arange(ctx, 10, 12, 1, &v2) == MS_OK);
  CHECK(ms_tensor_cat(ctx, 2, (ms_tensor *[]){v1, v2}, 0, &out) == MS_OK);
  CHECK(VALUES(out, 0, 1, 2, 10, 11));
  ms_tensor_release(out);

  out = SENTINEL;
  FAILS(ms_tensor_cat(ctx, 2, (ms_tensor *[]){a, c}, 0, &out), MS_ESHAPE, "incompatible");
  CHECK(strstr(ms_ctx_error(ctx), "tensor 2") != NULL);
  FAILS(ms_tensor_cat(ctx, 2, (ms_tensor *[]){a, b}, 1, &out), MS_ESHAPE, "incompatible");
  FAILS(ms_tensor_cat(ctx, 2, (ms_tensor *[]){a, v1}, 0, &out), MS_ESHAPE, "incompatible");
  FAILS(ms_tensor_cat(ctx, 2, (ms_tensor *[]){a, b}, 2, &out), MS_EINDEX, "axis 2");
  FAILS(ms_tensor_cat(ctx, 0, (ms_tensor *[]){a}, 0, &out), MS_EARG, "at least one");
  CHECK(out == NULL);
  CHECK_RELEASE(v1, v2, at, a, b, c);
  CHECK(ms_ctx_bytes(ctx) == 0);
}

static void test_access_and_versions(void) {
  ms_tensor *t, *tt, *cp;
  double x = 0;
  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(2, 3), &t) == MS_OK);
  CHECK(ms_tensor_set(ctx, t, SHAPE(1, 2), 3.5) == MS_OK);
  CHECK(get(t, SHAPE(1, 2)) == 3.5);
  CHECK(VALUES(t, 0, 0, 0, 0, 0, 3.5));

  FAILS(ms_tensor_get(ctx, t, SHAPE(2, 0), &x), MS_EINDEX, "out of range");
  CHECK(strstr(ms_ctx_error(ctx), "size 2") != NULL);
  FAILS(ms_tensor_get(ctx, t, SHAPE(0, 3), &x), MS_EINDEX, "out of range");
  CHECK(strstr(ms_ctx_error(ctx), "size 3") != NULL);
  FAILS(ms_tensor_get(ctx, t, SHAPE(-1, 0), &x), MS_EINDEX, "out of range");
  uint64_t v = ms_tensor_version(t);
  FAILS(ms_tensor_set(ctx, t, SHAPE(0, -1), 1), MS_EINDEX, "out of range");
  FAILS(ms_tensor_set(ctx, t, SHAPE(5, 0), 1), MS_EINDEX, "out of range");
  CHECK(ms_tensor_version(t) == v); /* failed writes do not count */
  CHECK(VALUES(t, 0, 0, 0, 0, 0, 3.5));

  FAILS(ms_tensor_item(ctx, t, &x), MS_ESHAPE, "one element");
  CHECK(strstr(ms_ctx_error(ctx), "2,3") || strstr(ms_ctx_error(ctx), "2, 3"));
  ms_tensor *one;
  CHECK(ms_tensor_full(ctx, 2, SHAPE(1, 1), 9, &one) == MS_OK);
  CHECK(ms_tensor_item(ctx, one, &x) == MS_OK && x == 9);
  ms_tensor_release(one);
  ms_tensor *empty;
  CHECK(ms_tensor_zeros(ctx, 1, SHAPE(0), &empty) == MS_OK);
  FAILS(ms_tensor_item(ctx, empty, &x), MS_ESHAPE, "one element");
  ms_tensor_release(empty);

  double buf[6];
  FAILS(ms_tensor_read(ctx, t, buf, 5), MS_EARG, "buffer");

  /* Version: bumped by set, fill_ and copy_ (also through views), not by reads. */
  v = ms_tensor_version(t);
  CHECK(ms_tensor_get(ctx, t, SHAPE(0, 0), &x) == MS_OK);
  CHECK(ms_tensor_read(ctx, t, buf, 6) == MS_OK);
  CHECK(ms_tensor_transpose(ctx, t, 0, 1, &tt) == MS_OK);
  CHECK(ms_tensor_copy(ctx, tt, &cp) == MS_OK);
  ms_tensor *e1;
  CHECK(ms_tensor_zeros(ctx, 0, NULL, &e1) == MS_OK);
  FAILS(ms_tensor_item(ctx, tt, &x), MS_ESHAPE, "one element");
  CHECK(ms_tensor_version(t) == v && ms_tensor_version(tt) == v);
  CHECK(ms_tensor_version(cp) == 0);

  CHECK(ms_tensor_set(ctx, t, SHAPE(0, 0), 1) == MS_OK);
  uint64_t v1 = ms_tensor_version(t);
  CHECK(v1 > v);
  CHECK(ms_tensor_fill_(ctx, t, 2) == MS_OK);
  uint64_t v2 = ms_tensor_version(t);
  CHECK(v2 > v1);
  CHECK(ms_tensor_copy_(ctx, t, e1) == MS_OK); /* broadcast 0 everywhere */
  uint64_t v3 = ms_tensor_version(t);
  CHECK(v3 > v2);
  CHECK(VALUES(t, 0, 0, 0, 0, 0, 0));
  CHECK(ms_tensor_set(ctx, tt, SHAPE(2, 1), 8) == MS_OK); /* through the view */
  CHECK(ms_tensor_version(t) > v3 && ms_tensor_version(tt) == ms_tensor_version(t));
  CHECK(get(t, SHAPE(1, 2)) == 8);
  CHECK(ms_tensor_version(cp) == 0); /* the copy is separate storage */
  uint64_t v4 = ms_tensor_version(t);
  FAILS(ms_tensor_copy_(ctx, cp, t), MS_ESHAPE, "broadcast"); /* [3,2] <- [2,3] */
  CHECK(ms_tensor_version(t) == v4 && ms_tensor_version(cp) == 0);
  CHECK(ms_tensor_copy_(ctx, cp, tt) == MS_OK); /* the source is only read */
  CHECK(ms_tensor_version(t) == v4 && ms_tensor_version(cp) > 0);
  ms_tensor_release(e1);
  ms_tensor_release(cp);
  ms_tensor_release(tt);
  ms_tensor_release(t);
  CHECK(ms_ctx_bytes(ctx) == 0);
}

static void test_copy_(void) {
  ms_tensor *d, *s, *dt;
  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(2, 3), &d) == MS_OK);
  /* Row broadcast. */
  CHECK(ms_tensor_from_data(ctx, 1, SHAPE(3), (double[]){1, 2, 3}, &s) == MS_OK);
  CHECK(ms_tensor_copy_(ctx, d, s) == MS_OK);
  CHECK(VALUES(d, 1, 2, 3, 1, 2, 3));
  ms_tensor_release(s);
  /* Column broadcast. */
  CHECK(ms_tensor_from_data(ctx, 2, SHAPE(2, 1), (double[]){-1, -2}, &s) == MS_OK);
  CHECK(ms_tensor_copy_(ctx, d, s) == MS_OK);
  CHECK(VALUES(d, -1, -1, -1, -2, -2, -2));
  ms_tensor_release(s);
  /* Same shape into a transposed (non-contiguous) destination. */
  CHECK(ms_tensor_transpose(ctx, d, 0, 1, &dt) == MS_OK);
  CHECK(ms_tensor_from_data(ctx, 2, SHAPE(3, 2), (double[]){1, 2, 3, 4, 5, 6}, &s) == MS_OK);
  CHECK(ms_tensor_copy_(ctx, dt, s) == MS_OK);
  CHECK(VALUES(d, 1, 3, 5, 2, 4, 6));
  ms_tensor_release(s);
  /* Mismatch. */
  CHECK(ms_tensor_from_data(ctx, 1, SHAPE(2), (double[]){1, 2}, &s) == MS_OK);
  uint64_t v = ms_tensor_version(d);
  FAILS(ms_tensor_copy_(ctx, d, s), MS_ESHAPE, "broadcast");
  CHECK(ms_tensor_version(d) == v && VALUES(d, 1, 3, 5, 2, 4, 6));
  ms_tensor_release(s);

  /* Overlapping views of one vector behave like memmove, in both directions. */
  ms_tensor *r, *lo, *hi;
  CHECK(ms_tensor_arange(ctx, 0, 10, 1, &r) == MS_OK);
  CHECK(ms_tensor_slice(ctx, r, 0, 0, 9, 1, &lo) == MS_OK);
  CHECK(ms_tensor_slice(ctx, r, 0, 1, 10, 1, &hi) == MS_OK);
  CHECK(ms_tensor_copy_(ctx, hi, lo) == MS_OK); /* shift right */
  {
    double ref[10];
    for (int i = 0; i < 10; i++) ref[i] = i;
    memmove(ref + 1, ref, 9 * sizeof(double));
    CHECK(values_are(r, ref, 10));
    CHECK(VALUES(r, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8));
  }
  ms_tensor_release(lo);
  ms_tensor_release(hi);
  ms_tensor_release(r);
  CHECK(ms_tensor_arange(ctx, 0, 10, 1, &r) == MS_OK);
  CHECK(ms_tensor_slice(ctx, r, 0, 0, 7, 1, &lo) == MS_OK);
  CHECK(ms_tensor_slice(ctx, r, 0, 3, 10, 1, &hi) == MS_OK);
  CHECK(ms_tensor_copy_(ctx, lo, hi) == MS_OK); /* shift left by 3 */
  {
    double ref[10];
    for (int i = 0; i < 10; i++) ref[i] = i;
    memmove(ref, ref + 3, 7 * sizeof(double));
    CHECK(values_are(r, ref, 10));
  }
  ms_tensor_release(lo);
  ms_tensor_release(hi);
  /* Strided overlap: even positions <- odd positions shifted. */
  CHECK(ms_tensor_fill_(ctx, r, 0) == MS_OK);
  ms_tensor *rr;
  CHECK(ms_tensor_arange(ctx, 0, 10, 1, &rr) == MS_OK);
  CHECK(ms_tensor_copy_(ctx, r, rr) == MS_OK);
  ms_tensor_release(rr);
  CHECK(ms_tensor_slice(ctx, r, 0, 0, 10, 2, &lo) == MS_OK); /* 0 2 4 6 8 */
  CHECK(ms_tensor_slice(ctx, r, 0, 1, 10, 2, &hi) == MS_OK); /* 1 3 5 7 9 */
  CHECK(ms_tensor_copy_(ctx, lo, hi) == MS_OK);
  CHECK(VALUES(r, 1, 1, 3, 3, 5, 5, 7, 7, 9, 9));
  ms_tensor_release(lo);
  ms_tensor_release(hi);
  ms_tensor_release(r);

  /* In-place transpose of a square matrix through a self view. */
  ms_tensor *m, *mt;
  CHECK(ms_tensor_from_data(ctx, 2, SHAPE(3, 3), (double[]){1, 2, 3, 4, 5, 6, 7, 8, 9}, &m) ==
        MS_OK);
  CHECK(ms_tensor_transpose(ctx, m, 0, 1, &mt) == MS_OK);
  CHECK(ms_tensor_copy_(ctx, m, mt) == MS_OK);
  CHECK(VALUES(m, 1, 4, 7, 2, 5, 8, 3, 6, 9));
  ms_tensor_release(mt);
  /* Self copy with broadcasting from its own first row. */
  ms_tensor *row0;
  CHECK(ms_tensor_select(ctx, m, 0, 0, &row0) == MS_OK);
  CHECK(ms_tensor_copy_(ctx, m, row0) == MS_OK);
  CHECK(VALUES(m, 1, 4, 7, 1, 4, 7, 1, 4, 7));
  ms_tensor_release(row0);
  ms_tensor_release(m);

  /* Empty copies are fine. */
  ms_tensor *e1, *e2;
  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(0, 2), &e1) == MS_OK);
  CHECK(ms_tensor_zeros(ctx, 1, SHAPE(2), &e2) == MS_OK);
  CHECK(ms_tensor_copy_(ctx, e1, e2) == MS_OK);
  ms_tensor_release(e1);
  ms_tensor_release(e2);

  ms_tensor_release(dt);
  ms_tensor_release(d);
  CHECK(ms_ctx_bytes(ctx) == 0);
}

static void test_argument_errors(void) {
  ms_tensor *t = SENTINEL, *a;
  FAILS(ms_tensor_zeros(ctx, 2, SHAPE(2, -1), &t), MS_EARG, "negative");
  CHECK(t == NULL);
  CHECK(strstr(ms_ctx_error(ctx), "-1") != NULL);
  t = SENTINEL;
  FAILS(ms_tensor_ones(ctx, 1, SHAPE(-5), &t), MS_EARG, "negative");
  CHECK(t == NULL);
  int64_t nine[MS_MAXDIM + 1] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  t = SENTINEL;
  FAILS(ms_tensor_zeros(ctx, MS_MAXDIM + 1, nine, &t), MS_EARG, "dimensions");
  CHECK(t == NULL);
  CHECK(strstr(ms_ctx_error(ctx), "9") != NULL);
  FAILS(ms_tensor_full(ctx, -1, nine, 0, &t), MS_EARG, "dimensions");
  FAILS(ms_tensor_empty(ctx, 2, SHAPE(INT64_C(1) << 30, INT64_C(1) << 30), &t), MS_EARG, "2^50");
  FAILS(ms_tensor_from_data(ctx, 1, SHAPE(-2), NULL, &t), MS_EARG, "negative");
  FAILS(ms_tensor_eye(ctx, -2, 3, &t), MS_EARG, "negative");
  CHECK(t == NULL);

  t = SENTINEL;
  FAILS(ms_tensor_arange(ctx, 0, 5, 0, &t), MS_EARG, "step");
  CHECK(t == NULL);
  FAILS(ms_tensor_arange(ctx, 0, INFINITY, 1, &t), MS_EARG, "finite");
  FAILS(ms_tensor_arange(ctx, NAN, 1, 1, &t), MS_EARG, "finite");
  FAILS(ms_tensor_arange(ctx, 0, 1e300, 1e-300, &t), MS_EARG, "too many");
  t = SENTINEL;
  FAILS(ms_tensor_linspace(ctx, 0, 1, 0, &t), MS_EARG, "linspace");
  CHECK(t == NULL);
  CHECK(strstr(ms_ctx_error(ctx), "0") != NULL);
  FAILS(ms_tensor_linspace(ctx, 0, 1, -3, &t), MS_EARG, ">= 1");
  FAILS(ms_tensor_linspace(ctx, 0, NAN, 3, &t), MS_EARG, "finite");

  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(2, 3), &a) == MS_OK);
  t = SENTINEL;
  FAILS(ms_tensor_transpose(ctx, a, 0, 2, &t), MS_EINDEX, "axis 2 out of range");
  CHECK(t == NULL);
  FAILS(ms_tensor_transpose(ctx, a, -3, 0, &t), MS_EINDEX, "axis -3");
  FAILS(ms_tensor_transpose(ctx, a, 0, 5, &t), MS_EINDEX, "transpose");
  FAILS(ms_tensor_select(ctx, a, 7, 0, &t), MS_EINDEX, "select");
  FAILS(ms_tensor_slice(ctx, a, -3, 0, 1, 1, &t), MS_EINDEX, "slice");
  FAILS(ms_tensor_view(ctx, a, MS_MAXDIM + 1, nine, &t), MS_EARG, "dimensions");
  FAILS(ms_tensor_expand(ctx, a, MS_MAXDIM + 1, nine, &t), MS_EARG, "dimensions");
  CHECK(t == NULL);
  ms_tensor_release(a);

  /* Scalars have no axes. */
  CHECK(ms_tensor_scalar(ctx, 1, &a) == MS_OK);
  FAILS(ms_tensor_transpose(ctx, a, 0, 0, &t), MS_EINDEX, "axis 0");
  FAILS(ms_tensor_cat(ctx, 1, (ms_tensor *[]){a}, 0, &t), MS_ESHAPE, "0-d");
  CHECK(t == NULL);
  ms_tensor_release(a);
  CHECK(ms_ctx_bytes(ctx) == 0);
}

/*
 * Shape arithmetic with a zero size next to huge ones (issue 14, item 1): numel is 0, but
 * contiguous strides, expand, permute, reshape, cat and broadcasting compute with the other
 * sizes, and 2^62 * 2 overflowed int64 (undefined behaviour; UBSan aborts in CI). Every such
 * shape is refused by the one check (the nonzero sizes multiply to more than 2^50).
 */
static void test_overflowing_shapes(void) {
  const int64_t big = INT64_C(1) << 62, half = INT64_C(1) << 49;
  ms_tensor *t = SENTINEL, *a, *b;
  FAILS(ms_tensor_zeros(ctx, 3, SHAPE(0, big, 2), &t), MS_EARG, "nonzero sizes");
  CHECK(t == NULL);
  CHECK(strstr(ms_ctx_error(ctx), "[0,4611686018427387904,2]") != NULL);
  FAILS(ms_tensor_empty(ctx, 3, SHAPE(0, 1, big), &t), MS_EARG, "2^50");
  FAILS(ms_tensor_zeros(ctx, 2, SHAPE(big, 0), &t), MS_EARG, "2^50");
  /* a valid empty tensor: 2^49 fits, and so do its strides */
  CHECK(ms_tensor_zeros(ctx, 3, SHAPE(0, 1, half), &a) == MS_OK);
  CHECK(ms_tensor_numel(a) == 0);
  CHECK(ms_tensor_strides(a)[0] == half && ms_tensor_strides(a)[2] == 1);
  /* expand grows the sizes: 2 * 2^49 = 2^50 is the largest, 4 * 2^49 is refused */
  CHECK(ms_tensor_expand(ctx, a, 3, SHAPE(0, 2, half), &b) == MS_OK);
  int perm[3] = {2, 1, 0};
  ms_tensor *p = NULL;
  CHECK(ms_tensor_permute(ctx, b, perm, &p) == MS_OK);
  CHECK(ms_tensor_numel(p) == 0 && ms_tensor_dim(p, 0) == half);
  ms_tensor_release(p);
  ms_tensor_release(b);
  FAILS(ms_tensor_expand(ctx, a, 3, SHAPE(0, 4, half), &t), MS_EARG, "nonzero sizes");
  FAILS(ms_tensor_expand(ctx, a, 4, SHAPE(3, 0, 1, half), &t), MS_EARG, "2^50");
  /* reshape and view of an empty tensor to a shape whose other sizes overflow */
  FAILS(ms_tensor_reshape(ctx, a, 3, SHAPE(0, 2, big), &t), MS_EARG, "2^50");
  FAILS(ms_tensor_view(ctx, a, 2, SHAPE(big, 0), &t), MS_EARG, "2^50");
  FAILS(ms_tensor_view(ctx, a, 2, SHAPE(-1, big), &t), MS_EARG, "2^50");
  /* cat: the sizes along the axis add up past 2^50 (2^49 + 2^49 + 2^49) */
  ms_tensor *e;
  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(0, half), &e) == MS_OK);
  FAILS(ms_tensor_cat(ctx, 3, (ms_tensor *[]){e, e, e}, 1, &t), MS_EARG, "add up");
  CHECK(t == NULL);
  CHECK(ms_tensor_cat(ctx, 2, (ms_tensor *[]){e, e}, 1, &b) == MS_OK);
  CHECK(ms_tensor_dim(b, 1) == 2 * half && ms_tensor_numel(b) == 0);
  ms_tensor_release(b);
  ms_tensor_release(e);
  /* broadcasting [2^25, 1] with [1, 2^26]: 2^51 elements */
  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(INT64_C(1) << 25, 1), &e) == MS_OK);
  CHECK(ms_tensor_zeros(ctx, 2, SHAPE(1, INT64_C(1) << 26), &b) == MS_OK);
  FAILS(ms_binary(ctx, MS_ADD, e, b, &t), MS_EARG, "more than 2^50 elements");
  double d = 0;
  FAILS(ms_max_abs_diff(ctx, e, b, &d), MS_EARG, "2^50");
  ms_tensor_release(b);
  ms_tensor_release(e);
  /* a slice step far past the axis leaves one element and a bounded stride */
  CHECK(ms_tensor_zeros(ctx, 1, SHAPE(5), &e) == MS_OK);
  CHECK(ms_tensor_slice(ctx, e, 0, 1, 5, INT64_MAX, &b) == MS_OK);
  CHECK(ms_tensor_dim(b, 0) == 1 && ms_tensor_strides(b)[0] == 1);
  ms_tensor_release(b);
  ms_tensor_release(e);
  ms_tensor_release(a);
  CHECK(ms_ctx_bytes(ctx) == 0);
}

int main(void) {
  return check_main(
      &ctx, (const check_test[]){test_geometry, test_constructors, test_random, test_views,
                                 test_permute_expand, test_cat, test_access_and_versions,
                                 test_copy_, test_argument_errors, test_overflowing_shapes, NULL});
}
