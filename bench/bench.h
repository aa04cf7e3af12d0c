/*
 * What the C benchmarks share: the clock, the quadratic problem, GD at step size LR and the
 * end of a run (the context must hold no bytes once everything is released).
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

/* A new context once the n optional arguments (integers >= 1) are read over their defaults in
 * arg; NULL after printing the usage (or when the context cannot be made). */
static ms_ctx *start(int argc, char **argv, int n, int64_t *arg, const char *usage) {
  int ok = argc <= n + 1;
  for (int i = 1; ok && i < argc; i++) ok = (arg[i - 1] = strtoll(argv[i], NULL, 10)) >= 1;
  if (!ok) {
    fprintf(stderr, "usage: %s\n", usage);
    return NULL;
  }
  return ms_ctx_new(NULL, NULL);
}

/* f(w) = 1/2 w^T H w with the eigenvalues linspace(1, 10, d): H = diag(eigenvalues), or when
 * dense Q diag(eigenvalues) Q^T with Q from the QR of a seeded Gaussian matrix, symmetrized
 * exactly; w0 ~ N(0, I) from the same generator. */
static int make_problem(ms_ctx *ctx, int64_t d, int dense, ms_objective **obj, ms_tensor **w0) {
  ms_rng rng;
  ms_rng_seed(&rng, 1);
  int64_t dd[2] = {d, d};
  ms_tensor *lam = NULL, *A = NULL, *Q = NULL, *R = NULL, *L = NULL, *QL = NULL, *Qt = NULL,
            *H = NULL, *Ht = NULL, *S = NULL, *Hs = NULL;
  int st = ms_tensor_linspace(ctx, 1, 10, d, &lam);
  if (!st) st = ms_tensor_diag(ctx, lam, &L);
  if (dense) {
    if (!st) st = ms_tensor_randn(ctx, &rng, 2, dd, 0, 1, &A);
    if (!st) st = ms_qr(ctx, A, &Q, &R);
    if (!st) st = ms_matmul(ctx, Q, L, &QL);
    if (!st) st = ms_tensor_transpose(ctx, Q, 0, 1, &Qt);
    if (!st) st = ms_matmul(ctx, QL, Qt, &H);
    if (!st) st = ms_tensor_transpose(ctx, H, 0, 1, &Ht);
    if (!st) st = ms_binary(ctx, MS_ADD, H, Ht, &S);
    if (!st) st = ms_binary_scalar(ctx, MS_MUL, S, 0.5, 0, &Hs);
  } else {
    Hs = ms_tensor_retain(L);
  }
  if (!st) st = ms_objective_quadratic(ctx, Hs, NULL, 0.0, obj);
  if (!st) st = ms_tensor_randn(ctx, &rng, 1, &d, 0, 1, w0);
  ms_tensor *all[] = {lam, A, Q, R, L, QL, Qt, H, Ht, S, Hs};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ms_tensor_release(all[i]);
  return st;
}

/* What a benchmark runs: GD with step size LR on one task, the quadratic of make_problem. */
typedef struct problem {
  ms_objective *obj;
  ms_tensor *w0;
  ms_optim *gd;
  ms_task task;
} problem;

static int setup(ms_ctx *ctx, int64_t d, int dense, problem *p) {
  memset(p, 0, sizeof *p);
  ms_optim_options oo;
  memset(&oo, 0, sizeof oo);
  oo.lr = LR;
  int st = make_problem(ctx, d, dense, &p->obj, &p->w0);
  if (!st) st = ms_optim_builtin(ctx, MS_OPTIM_GD, &oo, &p->gd);
  p->task = (ms_task){p->obj, NULL, p->w0, NULL};
  return st;
}

/* Releases the problem and frees the context; rc, or 1 when the context still held bytes (a
 * leak). */
static int finish(ms_ctx *ctx, problem *p, const char *bench, int rc) {
  ms_optim_release(p->gd);
  ms_objective_release(p->obj);
  ms_tensor_release(p->w0);
  if (ms_ctx_bytes(ctx) != 0) {
    fprintf(stderr, "%s: %zu bytes still held\n", bench, ms_ctx_bytes(ctx));
    rc = 1;
  }
  ms_ctx_free(ctx);
  return rc;
}

#endif
