/* Minimal C test harness: CHECK records a failure and goes on; main ends with check_report(). */
#ifndef METASTEP_TEST_CHECK_H
#define METASTEP_TEST_CHECK_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metastep/autodiff.h"
#include "metastep/ctx.h"
#include "metastep/tensor.h"

static int check_passed, check_failed;

/* Counts one check; a failed one prints "file:line: " and the message (a printf format and its
 * arguments) on stderr. Returns ok. */
static inline int check_record(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int check_record(int ok, const char *file, int line, const char *fmt, ...) {
  if (ok) {
    check_passed++;
    return 1;
  }
  check_failed++;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s:%d: ", file, line);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return 0;
}

#define CHECK(cond) \
  (void)check_record((cond) ? 1 : 0, __FILE__, __LINE__, "CHECK failed: %s", #cond)

/* |a - b| <= tol * max(1, |b|) */
#define CHECK_NEAR(a, b, tol)                                                              \
  do {                                                                                     \
    double check_a_ = (a), check_b_ = (b);                                                 \
    double check_s_ = fabs(check_b_) > 1 ? fabs(check_b_) : 1;                             \
    check_record(fabs(check_a_ - check_b_) <= (tol)*check_s_, __FILE__, __LINE__,          \
                 "CHECK_NEAR failed: %s = %.17g, %s = %.17g", #a, check_a_, #b, check_b_); \
  } while (0)

/* The call must return status st, and the context's message must contain substring msg. */
#define CHECK_FAILS(ctx, call, st, msg)                                                       \
  do {                                                                                        \
    int check_st_ = (call);                                                                   \
    const char *check_m_ = ms_ctx_error(ctx);                                                 \
    check_record(check_st_ == (st) && strstr(check_m_, (msg)) != NULL, __FILE__, __LINE__,    \
                 "CHECK_FAILS failed: %s gave %d \"%s\", wanted %d \"%s\"", #call, check_st_, \
                 check_m_, (int)(st), msg);                                                   \
  } while (0)

/* The call must return MS_OK; a failure prints the status and the context's message. */
#define CHECK_OK(ctx, call)                                                                    \
  do {                                                                                         \
    int check_st_ = (call);                                                                    \
    check_record(check_st_ == 0, __FILE__, __LINE__, "%s failed: %d \"%s\"", #call, check_st_, \
                 ms_ctx_error(ctx));                                                           \
  } while (0)

/* A call that must succeed: on failure records it like CHECK_OK (a success is not counted) and
 * jumps to the enclosing function's `out` label, where everything is released. */
#define CHECK_OK_OR_OUT(ctx, call)                                                  \
  do {                                                                              \
    int check_st_ = (call);                                                         \
    if (check_st_ != 0) {                                                           \
      check_record(0, __FILE__, __LINE__, "%s failed: %d \"%s\"", #call, check_st_, \
                   ms_ctx_error(ctx));                                              \
      goto out;                                                                     \
    }                                                                               \
  } while (0)

/* Releases every tensor of the list (NULL ones too, as ms_tensor_release does). */
#define CHECK_RELEASE(...)                      \
  check_release_n((ms_tensor *[]){__VA_ARGS__}, \
                  sizeof((ms_tensor *[]){__VA_ARGS__}) / sizeof(ms_tensor *))

static inline void check_release_n(ms_tensor **ts, size_t n) {
  for (size_t i = 0; i < n; i++) ms_tensor_release(ts[i]);
}

/* Releases the tensors the pointers point to and sets them to NULL, ready for the next use. */
#define CHECK_DROP(...)                       \
  check_drop_n((ms_tensor **[]){__VA_ARGS__}, \
               sizeof((ms_tensor **[]){__VA_ARGS__}) / sizeof(ms_tensor **))

static inline void check_drop_n(ms_tensor ***ps, size_t n) {
  for (size_t i = 0; i < n; i++) {
    ms_tensor_release(*ps[i]);
    *ps[i] = NULL;
  }
}

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

/* In an allocation sweep, after the run whose allocation k failed: when ctx holds more than base
 * bytes or a level is still pushed, counts a leak in *leaks, says so (naming the sweep's variant)
 * and returns 1. */
static inline int check_sweep_leaked(ms_ctx *ctx, size_t base, int variant, long k, int *leaks) {
  if (ms_ctx_bytes(ctx) == base && ms_ad_depth(ctx) == 0) return 0;
  fprintf(stderr, "[alloc %d] failing allocation %ld: %zu bytes leaked, depth %d\n", variant, k,
          ms_ctx_bytes(ctx) - base, ms_ad_depth(ctx));
  (*leaks)++;
  return 1;
}

/* The end of a context's life: it must hold no memory any more; then it is freed. */
static inline void check_ctx_free(ms_ctx *ctx) {
  CHECK(ms_ctx_bytes(ctx) == 0);
  if (ms_ctx_bytes(ctx) != 0) fprintf(stderr, "leaked %zu bytes\n", ms_ctx_bytes(ctx));
  ms_ctx_free(ctx);
}

typedef void (*check_test)(void);

/* A test program's main where each test makes its own contexts: runs the tests up to the NULL
 * that ends the list and reports. */
static inline int check_run(const check_test *tests) {
  for (; *tests != NULL; tests++) (*tests)();
  return check_report();
}

/* A test program's main with one shared context: creates *ctx (exit status 1 when it cannot),
 * runs the tests up to the NULL that ends the list, frees the context by check_ctx_free and
 * reports. */
static inline int check_main(ms_ctx **ctx, const check_test *tests) {
  *ctx = ms_ctx_new(NULL, NULL);
  if (*ctx == NULL) return 1;
  for (; *tests != NULL; tests++) (*tests)();
  check_ctx_free(*ctx);
  return check_report();
}

#endif
