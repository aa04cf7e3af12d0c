/*
 * The floor of the benchmark suite (scripts/bench/run.lua): T plain matrix-vector products with
 * the suite's dense H, straight through CBLAS, as GD steps x <- x - lr H x (dgemv reading all of
 * H, and dsymv reading one triangle). Reads one request per line on standard input,
 *   d T threads [cpu]
 * (cpu = 1: the process's CPU time, every thread counted, instead of wall time) and answers "ok
 * gemv=SECONDS symv=SECONDS" (or "error MESSAGE"); "quit" or the end of input stops it. H is the
 * suite's: diag(1 + 9 i/(d-1)) + u u^T + v v^T with u_i = cos(0.7 (i+1)) / sqrt(d), v_i = sin(1.3
 * (i+1)) / sqrt(d).
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static clockid_t which = CLOCK_MONOTONIC;

static double now(void) {
  struct timespec ts;
  clock_gettime(which, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double *H, *x, *y;
static long dim;

static int build(long d) {
  if (d == dim) return 0;
  free(H), free(x), free(y);
  dim = 0;
  H = malloc((size_t)d * (size_t)d * sizeof *H);
  x = malloc((size_t)d * sizeof *x);
  y = malloc((size_t)d * sizeof *y);
  if (H == NULL || x == NULL || y == NULL) return -1;
  /* u and v first (in x and y), then H row by row */
  for (long i = 0; i < d; i++) {
    x[i] = cos(0.7 * (double)(i + 1)) / sqrt((double)d);
    y[i] = sin(1.3 * (double)(i + 1)) / sqrt((double)d);
  }
  for (long i = 0; i < d; i++)
    for (long j = 0; j < d; j++)
      H[i * d + j] = x[i] * x[j] + y[i] * y[j] +
                     (i == j ? 1 + 9 * (double)i / (double)(d > 1 ? d - 1 : 1) : 0);
  dim = d;
  return 0;
}

/* T GD steps x <- x - 0.1 H x from x = 1; symmetric: dsymv on the lower triangle. */
static double run(long T, int symmetric) {
  int d = (int)dim;
  for (int i = 0; i < d; i++) x[i] = 1;
  double t0 = now();
  for (long t = 0; t < T; t++) {
    cblas_dcopy(d, x, 1, y, 1);
    if (symmetric)
      cblas_dsymv(CblasRowMajor, CblasLower, d, -0.1, H, d, x, 1, 1.0, y, 1);
    else
      cblas_dgemv(CblasRowMajor, CblasNoTrans, d, d, -0.1, H, d, x, 1, 1.0, y, 1);
    double *s = x;
    x = y;
    y = s;
  }
  return now() - t0;
}

int main(void) {
  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    long d, T;
    int threads, cpu = 0;
    if (strncmp(line, "quit", 4) == 0) break;
    int n = sscanf(line, "%ld %ld %d %d", &d, &T, &threads, &cpu);
    if (n < 3 || d < 1 || T < 1 || threads < 1 || d > 46340) {
      printf("error expected 'd T threads [cpu]' (integers >= 1, d <= 46340), got %s", line);
    } else if (build(d) != 0) {
      printf("error cannot allocate H for d = %ld\n", d);
    } else {
      openblas_set_num_threads(threads);
      which = cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC;
      double g = run(T, 0), s = run(T, 1);
      printf("ok gemv=%.9g symv=%.9g\n", g, s);
    }
    fflush(stdout);
  }
  free(H), free(x), free(y);
  return 0;
}
