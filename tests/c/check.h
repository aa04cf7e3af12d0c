/* Minimal C test harness: CHECK records a failure and goes on; main ends with check_report(). */
#ifndef METASTEP_TEST_CHECK_H
#define METASTEP_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (cond) {                                                                \
      check_passed++;                                                          \
    } else {                                                                   \
      check_failed++;                                                          \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                          \
  } while (0)

/* |a - b| <= tol * max(1, |b|) */
#define CHECK_NEAR(a, b, tol)                                                                   \
  do {                                                                                          \
    double check_a_ = (a), check_b_ = (b);                                                      \
    double check_s_ = fabs(check_b_) > 1 ? fabs(check_b_) : 1;                                  \
    if (fabs(check_a_ - check_b_) <= (tol)*check_s_) {                                          \
      check_passed++;                                                                           \
    } else {                                                                                    \
      check_failed++;                                                                           \
      fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %.17g, %s = %.17g\n", __FILE__, __LINE__, \
              #a, check_a_, #b, check_b_);                                                      \
    }                                                                                           \
  } while (0)

/* The call must return status st, and the context's message must contain substring msg. */
#define CHECK_FAILS(ctx, call, st, msg)                                                   \
  do {                                                                                    \
    int check_st_ = (call);                                                               \
    const char *check_m_ = ms_ctx_error(ctx);                                             \
    if (check_st_ == (st) && strstr(check_m_, (msg)) != NULL) {                           \
      check_passed++;                                                                     \
    } else {                                                                              \
      check_failed++;                                                                     \
      fprintf(stderr, "%s:%d: CHECK_FAILS failed: %s gave %d \"%s\", wanted %d \"%s\"\n", \
              __FILE__, __LINE__, #call, check_st_, check_m_, (int)(st), msg);            \
    }                                                                                     \
  } while (0)

/* The call must return MS_OK; a failure prints the status and the context's message. */
#define CHECK_OK(ctx, call)                                                                  \
  do {                                                                                       \
    int check_st_ = (call);                                                                  \
    if (check_st_ == 0) {                                                                    \
      check_passed++;                                                                        \
    } else {                                                                                 \
      check_failed++;                                                                        \
      fprintf(stderr, "%s:%d: %s failed: %d \"%s\"\n", __FILE__, __LINE__, #call, check_st_, \
              ms_ctx_error(ctx));                                                            \
    }                                                                                        \
  } while (0)

/* An allocator (lua_Alloc contract) that fails its fail_at-th allocation, counting from 0
 * (-1: never), for sweeps over every allocation point; with sticky, every allocation from the
 * fail_at-th on fails. n counts the allocations made since it was last reset. */
typedef struct check_alloc {
  long n, fail_at;
  int sticky;
} check_alloc;

static inline void *check_failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  check_alloc *s = ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (s->fail_at >= 0) {
    long k = s->n++;
    if (k == s->fail_at || (s->sticky && k > s->fail_at)) return NULL;
  }
  return realloc(ptr, nsize);
}

/* Relative error check over n elements: max |a - b| <= tol * max(floor, max |b|), naming the
 * worst element; a NaN counts as the worst. Returns 1 when it holds. */
static inline int check_near_arr(const char *what, const double *a, const double *b, long n,
                                 double tol, double floor) {
  double num = 0, den = floor;
  long worst = 0;
  for (long i = 0; i < n; i++) {
    double d = fabs(a[i] - b[i]);
    if (!(d <= num)) num = d, worst = i;
    if (fabs(b[i]) > den) den = fabs(b[i]);
  }
  if (num <= tol * den) {
    check_passed++;
    return 1;
  }
  check_failed++;
  fprintf(stderr, "%s: relative error %.3g > %.3g (element %ld: %.17g vs %.17g)\n", what, num / den,
          tol, worst, n > 0 ? a[worst] : 0.0, n > 0 ? b[worst] : 0.0);
  return 0;
}

static int check_report(void) {
  printf("%d passed, %d failed\n", check_passed, check_failed);
  return check_failed == 0 ? 0 : 1;
}

#endif
