/*
 * ms_tensor_format tests: exact strings, worked out by hand from NumPy's array2string
 * layout rules (separator ", ", line width 75, summarization) and the engine's number
 * styles ("1." integral, "%.4f" fixed, "%.4e" scientific).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "metastep/metastep.h"

static ms_ctx *ctx;

static ms_tensor *make(int ndim, const int64_t *shape, const double *data) {
  ms_tensor *t = NULL;
  if (ms_tensor_from_data(ctx, ndim, shape, data, &t) != MS_OK) abort();
  return t;
}

static ms_tensor *range(int ndim, const int64_t *shape) {
  ms_tensor *r = NULL, *t = NULL;
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  if (ms_tensor_arange(ctx, 0, (double)n, 1, &r) != MS_OK) abort();
  if (ms_tensor_reshape(ctx, r, ndim, shape, &t) != MS_OK) abort();
  ms_tensor_release(r);
  return t;
}

/* Formats t and compares with want; reports both on mismatch. Releases t. */
static void expect(ms_tensor *t, int64_t threshold, int edge, const char *want, int line) {
  char *s = NULL;
  int st = ms_tensor_format(ctx, t, threshold, edge, &s);
  int ok = st == MS_OK && s != NULL && strcmp(s, want) == 0;
  CHECK(ok);
  if (!ok)
    fprintf(stderr, "  line %d: got (status %d)\n%s\n  want\n%s\n", line, st, s ? s : "(null)",
            want);
  ms_string_free(ctx, s);
  ms_tensor_release(t);
}
#define EXPECT(t, thr, edge, want) expect((t), (thr), (edge), (want), __LINE__)

static ms_tensor *v(int64_t n, const double *d) { return make(1, &n, d); }

static void test_numbers(void) {
  const int64_t s22[2] = {2, 2};
  const double d22[] = {1, 2, 3, 4};
  EXPECT(make(2, s22, d22), 0, 0, "[[1., 2.],\n [3., 4.]]");

  const double ints[] = {1, -2, 3};
  EXPECT(v(3, ints), 0, 0, "[ 1., -2.,  3.]");
  const double negzero[] = {-0.0, 1};
  EXPECT(v(2, negzero), 0, 0, "[-0.,  1.]");
  /* integral data stays integral even across a large range (below 1e15) */
  const double wide[] = {1, 100000};
  EXPECT(v(2, wide), 0, 0, "[     1., 100000.]");

  const double fl[] = {0.5, -1.25, 3};
  EXPECT(v(3, fl), 0, 0, "[ 0.5000, -1.2500,  3.0000]");
  const double withzero[] = {0, 0.5};
  EXPECT(v(2, withzero), 0, 0, "[0.0000, 0.5000]");
  /* max/min = 1000 exactly stays fixed; above it switches to scientific */
  const double r1000[] = {0.5, 500};
  EXPECT(v(2, r1000), 0, 0, "[  0.5000, 500.0000]");
  const double r1200[] = {0.5, 600};
  EXPECT(v(2, r1200), 0, 0, "[5.0000e-01, 6.0000e+02]");
  const double tiny[] = {1e-5, 1};
  EXPECT(v(2, tiny), 0, 0, "[1.0000e-05, 1.0000e+00]");
  const double big[] = {1.5e9, -2.5};
  EXPECT(v(2, big), 0, 0, "[ 1.5000e+09, -2.5000e+00]");
  /* integral but >= 1e15: NumPy's rule applies (max >= 1e8 -> scientific) */
  const double huge[] = {1e15, 1};
  EXPECT(v(2, huge), 0, 0, "[1.0000e+15, 1.0000e+00]");

  const double nf[] = {1, NAN, -INFINITY};
  EXPECT(v(3, nf), 0, 0, "[  1.,  nan, -inf]");
  const double nf2[] = {0.5, INFINITY};
  EXPECT(v(2, nf2), 0, 0, "[0.5000,    inf]");
  const double allnan[] = {NAN, NAN};
  EXPECT(v(2, allnan), 0, 0, "[nan, nan]");
}

static void test_scalars_and_empty(void) {
  ms_tensor *t = NULL;
  CHECK(ms_tensor_scalar(ctx, 3.5, &t) == MS_OK);
  EXPECT(t, 0, 0, "3.5000");
  CHECK(ms_tensor_scalar(ctx, -2, &t) == MS_OK);
  EXPECT(t, 0, 0, "-2.");
  CHECK(ms_tensor_scalar(ctx, NAN, &t) == MS_OK);
  EXPECT(t, 0, 0, "nan");
  CHECK(ms_tensor_scalar(ctx, 1e-7, &t) == MS_OK);
  EXPECT(t, 0, 0, "1.0000e-07");

  int64_t s0 = 0, s20[2] = {2, 0};
  CHECK(ms_tensor_zeros(ctx, 1, &s0, &t) == MS_OK);
  EXPECT(t, 0, 0, "[]");
  CHECK(ms_tensor_zeros(ctx, 2, s20, &t) == MS_OK);
  EXPECT(t, 0, 0, "[]");

  int64_t s1 = 1, s111[3] = {1, 1, 1};
  const double one[] = {7};
  EXPECT(make(1, &s1, one), 0, 0, "[7.]");
  EXPECT(make(3, s111, one), 0, 0, "[[[7.]]]");
}

static void test_layout(void) {
  const int64_t s222[3] = {2, 2, 2};
  EXPECT(range(3, s222), 0, 0, "[[[0., 1.],\n  [2., 3.]],\n\n [[4., 5.],\n  [6., 7.]]]");

  /* 4-d: two blank lines between the outermost blocks */
  const int64_t s2111[4] = {2, 1, 1, 1};
  EXPECT(range(4, s2111), 0, 0, "[[[[0.]]],\n\n\n [[[1.]]]]");

  /* a transposed (strided) view prints in its logical order */
  const int64_t s23[2] = {2, 3};
  ms_tensor *a = range(2, s23), *at = NULL;
  CHECK(ms_tensor_transpose(ctx, a, 0, 1, &at) == MS_OK);
  EXPECT(at, 0, 0, "[[0., 3.],\n [1., 4.],\n [2., 5.]]");
  ms_tensor_release(a);

  /* rows wrap at 75 columns with a hanging indent */
  int64_t n30 = 30;
  EXPECT(range(1, &n30), 0, 0,
         "[ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13., 14.,\n"
         " 15., 16., 17., 18., 19., 20., 21., 22., 23., 24., 25., 26., 27., 28., 29.]");
  const int64_t s220[2] = {2, 20};
  EXPECT(range(2, s220), 0, 0,
         "[[ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.,\n"
         "  14., 15., 16., 17., 18., 19.],\n"
         " [20., 21., 22., 23., 24., 25., 26., 27., 28., 29., 30., 31., 32., 33.,\n"
         "  34., 35., 36., 37., 38., 39.]]");
}

/* Appends start, n elements "1." separated by ", ", then end. */
static void ones_line(char *buf, const char *start, int n, const char *end) {
  strcat(buf, start);
  for (int i = 0; i < n; i++) strcat(buf, i + 1 < n ? "1., " : "1.");
  strcat(buf, end);
}

/*
 * Exact wrap boundaries: with "1." elements (4 columns each with ", ") a top-level row
 * fits 18 per line (the 18th ends at column 74, the 19th would end at 76 > 74) and a row
 * three levels deep fits 17 (line width shrinks by one per level, as NumPy's does).
 */
static void test_wrap_boundaries(void) {
  char want[512] = "";
  int64_t n40 = 40, s1140[3] = {1, 1, 40};
  ms_tensor *t = NULL;
  ones_line(want, "[", 18, ",\n");
  ones_line(want, " ", 18, ",\n");
  ones_line(want, " ", 4, "]");
  CHECK(ms_tensor_ones(ctx, 1, &n40, &t) == MS_OK);
  EXPECT(t, 0, 0, want);
  want[0] = '\0';
  ones_line(want, "[[[", 17, ",\n");
  ones_line(want, "   ", 17, ",\n");
  ones_line(want, "   ", 6, "]]]");
  CHECK(ms_tensor_ones(ctx, 3, s1140, &t) == MS_OK);
  EXPECT(t, 0, 0, want);
}

static void test_summarization(void) {
  int64_t n = 2000;
  /* default threshold 1000, edge 3; the width comes from the shown elements only */
  EXPECT(range(1, &n), 0, 0, "[   0.,    1.,    2., ..., 1997., 1998., 1999.]");

  int64_t n7 = 7;
  EXPECT(range(1, &n7), 6, 3, "[0., 1., 2., ..., 4., 5., 6.]");
  EXPECT(range(1, &n7), 7, 3, "[0., 1., 2., 3., 4., 5., 6.]");
  EXPECT(range(1, &n7), 1, 4, "[0., 1., 2., 3., 4., 5., 6.]"); /* 2*edge >= 7 */

  const int64_t s1010[2] = {10, 10};
  EXPECT(range(2, s1010), 50, 2,
         "[[ 0.,  1., ...,  8.,  9.],\n"
         " [10., 11., ..., 18., 19.],\n"
         " ...,\n"
         " [80., 81., ..., 88., 89.],\n"
         " [90., 91., ..., 98., 99.]]");

  const int64_t s522[3] = {5, 2, 2};
  EXPECT(range(3, s522), 10, 1,
         "[[[ 0.,  1.],\n"
         "  [ 2.,  3.]],\n"
         "\n"
         " ...,\n"
         "\n"
         " [[16., 17.],\n"
         "  [18., 19.]]]");

  /* fixed-point values, elided (filled by hand: ops.c is not linked into this test) */
  ms_tensor *r = NULL, *h = NULL;
  CHECK(ms_tensor_arange(ctx, 0, 100, 1, &r) == MS_OK);
  CHECK(ms_tensor_copy(ctx, r, &h) == MS_OK);
  for (int i = 0; i < 100; i++) ms_tensor_data(h)[i] = i + 0.5;
  EXPECT(h, 10, 2, "[ 0.5000,  1.5000, ..., 98.5000, 99.5000]");
  ms_tensor_release(r);
}

static void test_errors_and_memory(void) {
  char *s = (char *)1;
  CHECK_FAILS(ctx, ms_tensor_format(ctx, NULL, 0, 0, &s), MS_EARG,
              "format: tensor argument is NULL");
  CHECK(s == NULL);
  ms_string_free(ctx, NULL); /* ignored */

  /* every allocation failure reports MS_ENOMEM, leaves *out NULL and leaks nothing */
  const int64_t s1010[2] = {10, 10};
  ms_tensor *t = range(2, s1010);
  size_t base = ms_ctx_bytes(ctx);
  int failures = 0, clean = 1, successes = 0;
  for (size_t extra = 1; extra < 2048; extra += 7) {
    ms_ctx_set_limit(ctx, base + extra);
    s = (char *)1;
    int st = ms_tensor_format(ctx, t, 0, 0, &s);
    if (st != MS_OK) {
      failures++;
      if (st != MS_ENOMEM || s != NULL || ms_ctx_bytes(ctx) != base) clean = 0;
    } else {
      successes++;
      if (s == NULL || strncmp(s, "[[ 0.,  1.,", 11) != 0) clean = 0;
      ms_string_free(ctx, s);
      if (ms_ctx_bytes(ctx) != base) clean = 0;
    }
  }
  ms_ctx_set_limit(ctx, 0);
  CHECK(failures > 0 && successes > 0);
  CHECK(clean);
  ms_tensor_release(t);
}

int main(void) {
  return check_main(&ctx, (const check_test[]){test_numbers, test_scalars_and_empty, test_layout,
                                               test_wrap_boundaries, test_summarization,
                                               test_errors_and_memory, NULL});
}
