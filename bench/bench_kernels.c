/*
 * The fused kernels against the memory-bandwidth floor.
 *
 * A dense SPD quadratic f(w) = 1/2 w^T H w, H = diag(linspace(2, 10, d)) + 0.4 S / sqrt(d)
 * with S a seeded symmetric Gaussian matrix (exactly symmetric; eigenvalues about 1.2..10.8),
 * w0 ~ N(0, I), GD with lr = 0.01 for T steps, meta-objective G = (1/T) log f(w_T).
 * Times per call, the minimum over `reps` rounds; the cases alternate inside each round:
 *   floor dgemv    T dgemv calls with H (the floor of the issue: T dense matrix-vector products)
 *   floor dsymv    T dsymv calls on H's upper triangle
 *   fused k=2      T calls of the fused kernel for [u, v] (state and one tangent), full H
 *   fused upper    the same from H's upper triangle only
 *   stable, forward, exact: dG/dlr through ms_meta_value_and_grad (exact after its first call,
 *                  which is timed once: the eigendecomposition, then cached on the objective)
 * The ratio column divides by the dgemv floor. BLAS threads: OPENBLAS_NUM_THREADS.
 *
 * Usage: OPENBLAS_NUM_THREADS=1 build/bench_kernels [d] [T] [reps]
 *        (defaults d = 1000, T = 1000, reps = 5)
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>

#include "../engine/src/fused.h"
#include "bench.h"

enum { FLOOR_GEMV, FLOOR_SYMV, FUSED, FUSED_UPPER, STABLE, FORWARD, EXACT, NCASES };
static const char *const NAMES[NCASES] = {
    "floor: T dgemv", "floor: T dsymv (upper)", "fused k=2, full H", "fused k=2, upper H", "stable",
    "forward",        "exact (cached)"};

/* H = diag(linspace(2, 10, d)) + 0.4 S / sqrt(d), S symmetric N(0, 1) off the diagonal. */
static int make_dense(ms_ctx *ctx, int64_t d, ms_objective **obj, ms_tensor **w0) {
  ms_rng rng;
  ms_rng_seed(&rng, 7);
  int64_t dd[2] = {d, d};
  ms_tensor *H = NULL;
  int st = ms_tensor_zeros(ctx, 2, dd, &H);
  if (st) return st;
  double *h = ms_tensor_data(H), c = 0.4 / sqrt((double)d);
  for (int64_t i = 0; i < d; i++) {
    h[i * d + i] = d > 1 ? 2.0 + 8.0 * (double)i / (double)(d - 1) : 2.0;
    for (int64_t j = i + 1; j < d; j++) h[i * d + j] = h[j * d + i] = c * ms_rng_normal(&rng);
  }
  st = ms_objective_quadratic(ctx, H, NULL, 0.0, obj);
  ms_tensor_release(H);
  if (!st) st = ms_tensor_randn(ctx, &rng, 1, &d, 0, 1, w0);
  return st;
}

/* One meta-gradient call; its time, value and dG/dlr. */
static int meta_once(ms_ctx *ctx, ms_meta_spec *spec, double *s, double *value, double *grad) {
  ms_meta_out out;
  double t0 = now();
  int st = ms_meta_value_and_grad(ctx, spec, &out);
  *s = now() - t0;
  if (st) return st;
  *value = out.value;
  st = out.status ? ms_ctx_fail(ctx, MS_ENUMERIC, "status %s", ms_meta_status_name(out.status))
                  : ms_tensor_item(ctx, out.grad[0], grad);
  ms_meta_out_clear(&out);
  return st;
}

int main(int argc, char **argv) {
  int64_t arg[3] = {1000, 1000, 5}; /* d, T, reps */
  ms_ctx *ctx = start(argc, argv, 3, arg, "bench_kernels [d >= 1] [T >= 1] [reps >= 1]");
  if (ctx == NULL) return 1;
  int64_t d = arg[0], T = arg[1];
  int reps = (int)arg[2], rc = 1;
  (void)setup; /* bench.h's problem is diagonal or built by a QR: this one is cheaper to make */
  problem p;
  memset(&p, 0, sizeof p);
  double *x = malloc(sizeof(double) * (size_t)(4 * d));
  ms_optim_options oo;
  memset(&oo, 0, sizeof oo);
  oo.lr = LR;
  if (x == NULL || make_dense(ctx, d, &p.obj, &p.w0) ||
      ms_optim_builtin(ctx, MS_OPTIM_GD, &oo, &p.gd)) {
    fprintf(stderr, "bench_kernels: setup: %s\n", ms_ctx_error(ctx));
    goto out;
  }
  p.task = (ms_task){p.obj, NULL, p.w0, NULL};
  ms_tensor *Ht = NULL;
  ms_objective_quadratic_parts(p.obj, &Ht, NULL, NULL);
  const double *H = ms_tensor_data(Ht);
  for (int64_t i = 0; i < 2 * d; i++) x[i] = cos(0.1 * (double)i);
  double *y = x + 2 * d;
  ms_meta_spec spec = ms_meta_spec_one(p.gd, &p.task, T, MS_META_LOG, MS_METHOD_EXACT);
  double first, value[NCASES], grad[NCASES], best[NCASES];
  if (meta_once(ctx, &spec, &first, &value[EXACT], &grad[EXACT])) {
    fprintf(stderr, "bench_kernels: exact: %s\n", ms_ctx_error(ctx));
    goto out;
  }
  for (int c = 0; c < NCASES; c++) best[c] = INFINITY, value[c] = grad[c] = NAN;
  const char *threads = getenv("OPENBLAS_NUM_THREADS");
  printf(
      "bench_kernels: d = %lld, T = %lld, dense SPD H, GD lr = %g, G = (1/T) log f(w_T), "
      "OPENBLAS_NUM_THREADS=%s, min of %d rounds\n",
      (long long)d, (long long)T, LR, threads ? threads : "(unset)", reps);
  for (int r = 0; r < reps; r++) {
    for (int c = 0; c < NCASES; c++) {
      double s = 0, t0 = now();
      int n = (int)d;
      switch (c) {
        case FLOOR_GEMV:
          for (int64_t t = 0; t < T; t++)
            cblas_dgemv(CblasRowMajor, CblasNoTrans, n, n, 1.0, H, n, x, 1, 0.0, y, 1);
          s = now() - t0;
          break;
        case FLOOR_SYMV:
          for (int64_t t = 0; t < T; t++)
            cblas_dsymv(CblasRowMajor, CblasUpper, n, 1.0, H, n, x, 1, 0.0, y, 1);
          s = now() - t0;
          break;
        case FUSED:
          for (int64_t t = 0; t < T; t++) ms__fused_gemv(2, d, d, H, d, x, d, y, d);
          s = now() - t0;
          break;
        case FUSED_UPPER:
          for (int64_t t = 0; t < T; t++) ms__fused_hmul_upper(2, d, H, d, x, d, y, d);
          s = now() - t0;
          break;
        default:
          spec.method = c == STABLE    ? MS_METHOD_STABLE
                        : c == FORWARD ? MS_METHOD_FORWARD
                                       : MS_METHOD_EXACT;
          if (meta_once(ctx, &spec, &s, &value[c], &grad[c])) {
            fprintf(stderr, "bench_kernels: %s: %s\n", NAMES[c], ms_ctx_error(ctx));
            goto out;
          }
      }
      if (s < best[c]) best[c] = s;
    }
  }
  printf("%-24s %11s %9s  %-24s %s\n", "what", "time ms", "/ floor", "value", "dG/dlr");
  for (int c = 0; c < NCASES; c++) {
    printf("%-24s %11.3f %9.3f", NAMES[c], 1e3 * best[c], best[c] / best[FLOOR_GEMV]);
    if (c >= STABLE)
      printf("  %-24.17g %.17g\n", value[c], grad[c]);
    else
      printf("\n");
  }
  printf("%-24s %11.3f %9.3f  (the eigendecomposition, once)\n", "exact (first call)", 1e3 * first,
         first / best[FLOOR_GEMV]);
  rc = 0;
out:
  free(x);
  return finish(ctx, &p, "bench_kernels", rc);
}
