/*
 * Time of a long GD unroll and of its meta-gradient from C.
 *
 * GD with step size lr = 0.01 unrolled for T steps on f(w) = 1/2 w^T H w with
 * H = diag(linspace(1, 10, d)), w_0 ~ N(0, I), meta-objective G = (1/T) log f(w_T).
 * Times (best of `reps` runs): the unroll alone (ms_meta_unroll, nothing traced), the
 * meta-gradient dG/dlr by reverse mode, checkpointed reverse mode (K = round(sqrt(T))),
 * forward mode and the stable unroll.
 *
 * Usage: OPENBLAS_NUM_THREADS=1 build/bench_unroll [d] [T] [reps]
 *        (defaults d = 10, T = 10000, reps = 5)
 */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

/* One timed call: the unroll alone (grad == NULL) or value and meta-gradient. */
static int once(ms_ctx *ctx, const ms_meta_spec *spec, double *seconds, double *value,
                double *grad) {
  double t0 = now();
  int st;
  if (grad == NULL) {
    ms_traj traj;
    st = ms_meta_unroll(ctx, spec, spec->tasks, 0, &traj);
    *seconds = now() - t0;
    if (!st) st = ms_tensor_item(ctx, traj.losses[traj.done], value);
    ms_traj_clear(ctx, &traj);
    return st;
  }
  ms_meta_out out;
  st = ms_meta_value_and_grad(ctx, spec, &out);
  *seconds = now() - t0;
  if (st) return st;
  *value = out.value;
  st = out.status ? ms_ctx_fail(ctx, MS_ENUMERIC, "status %s", ms_meta_status_name(out.status))
                  : ms_tensor_item(ctx, out.grad[0], grad);
  ms_meta_out_clear(&out);
  return st;
}

int main(int argc, char **argv) {
  int64_t arg[3] = {10, 10000, 5}; /* d, T, reps */
  ms_ctx *ctx = start(argc, argv, 3, arg, "bench_unroll [d >= 1] [T >= 1] [reps >= 1]");
  if (ctx == NULL) return 1;
  int64_t d = arg[0], T = arg[1];
  int reps = (int)arg[2];
  problem p;
  int rc = 1;
  if (setup(ctx, d, 0, &p)) {
    fprintf(stderr, "bench_unroll: setup: %s\n", ms_ctx_error(ctx));
    goto out;
  }
  ms_meta_spec spec = ms_meta_spec_one(p.gd, &p.task, T, MS_META_LOG, MS_METHOD_REVERSE);

  printf(
      "bench_unroll: GD lr = %g, T = %lld steps, d = %lld (diagonal quadratic, eigenvalues "
      "1..10), meta = (1/T) log f(w_T), best of %d\n",
      LR, (long long)T, (long long)d, reps);
  printf("%-26s %10s %12s  %-24s %s\n", "what", "time ms", "us / step", "value", "dG/dlr");
  struct {
    const char *name;
    ms_meta_method method;
    int64_t checkpoint;
    int grad;
  } cases[] = {
      {"unroll (f(w_T), no tape)", MS_METHOD_REVERSE, 0, 0},
      {"reverse", MS_METHOD_REVERSE, 0, 1},
      {"reverse, checkpointed", MS_METHOD_REVERSE, (int64_t)llround(sqrt((double)T)), 1},
      {"forward", MS_METHOD_FORWARD, 0, 1},
      {"stable", MS_METHOD_STABLE, 0, 1},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    spec.method = cases[c].method;
    spec.checkpoint = cases[c].checkpoint;
    double best = INFINITY, value = NAN, grad = NAN;
    for (int r = 0; r < reps; r++) {
      double s;
      if (once(ctx, &spec, &s, &value, cases[c].grad ? &grad : NULL)) {
        fprintf(stderr, "bench_unroll: %s: %s\n", cases[c].name, ms_ctx_error(ctx));
        goto out;
      }
      if (s < best) best = s;
    }
    if (cases[c].grad)
      printf("%-26s %10.2f %12.3f  %-24.17g %.17g\n", cases[c].name, 1e3 * best, 1e6 * best / T,
             value, grad);
    else
      printf("%-26s %10.2f %12.3f  f(w_T) = %.6g\n", cases[c].name, 1e3 * best, 1e6 * best / T,
             value);
  }
  rc = 0;

out:
  return finish(ctx, &p, "bench_unroll", rc);
}
