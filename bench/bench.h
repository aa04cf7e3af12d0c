/*
 * What the C benchmarks share: the clock, the GD step size and the end of a run (the
 * context must hold no bytes once everything is released).
 */
#ifndef METASTEP_BENCH_H
#define METASTEP_BENCH_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metastep/metastep.h"

#define LR 0.01

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Plain GD with step size LR. */
static int make_gd(ms_ctx *ctx, ms_optim **gd) {
  ms_optim_options oo;
  memset(&oo, 0, sizeof oo);
  oo.lr = LR;
  return ms_optim_builtin(ctx, MS_OPTIM_GD, &oo, gd);
}

/* Frees the context; rc, or 1 when it still holds bytes (a leak). */
static int finish(ms_ctx *ctx, const char *bench, int rc) {
  if (ms_ctx_bytes(ctx) != 0) {
    fprintf(stderr, "%s: %zu bytes still held\n", bench, ms_ctx_bytes(ctx));
    rc = 1;
  }
  ms_ctx_free(ctx);
  return rc;
}

#endif
