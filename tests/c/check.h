/* Minimal C test harness: CHECK records a failure and goes on; main ends with check_report(). */
#ifndef METASTEP_TEST_CHECK_H
#define METASTEP_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (cond) {                                                                     \
      check_passed++;                                                               \
    } else {                                                                        \
      check_failed++;                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
    }                                                                               \
  } while (0)

/* |a - b| <= tol * max(1, |b|) */
#define CHECK_NEAR(a, b, tol)                                                       \
  do {                                                                              \
    double check_a_ = (a), check_b_ = (b);                                          \
    double check_s_ = fabs(check_b_) > 1 ? fabs(check_b_) : 1;                      \
    if (fabs(check_a_ - check_b_) <= (tol) * check_s_) {                            \
      check_passed++;                                                               \
    } else {                                                                        \
      check_failed++;                                                               \
      fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %.17g, %s = %.17g\n", __FILE__, \
              __LINE__, #a, check_a_, #b, check_b_);                                \
    }                                                                               \
  } while (0)

/* The call must return status st, and the context's message must contain substring msg. */
#define CHECK_FAILS(ctx, call, st, msg)                                             \
  do {                                                                              \
    int check_st_ = (call);                                                         \
    const char *check_m_ = ms_ctx_error(ctx);                                       \
    if (check_st_ == (st) && strstr(check_m_, (msg)) != NULL) {                     \
      check_passed++;                                                               \
    } else {                                                                        \
      check_failed++;                                                               \
      fprintf(stderr, "%s:%d: CHECK_FAILS failed: %s gave %d \"%s\", wanted %d \"%s\"\n", \
              __FILE__, __LINE__, #call, check_st_, check_m_, (int)(st), msg);      \
    }                                                                               \
  } while (0)

static int check_report(void) {
  printf("%d passed, %d failed\n", check_passed, check_failed);
  return check_failed == 0 ? 0 : 1;
}

#endif
