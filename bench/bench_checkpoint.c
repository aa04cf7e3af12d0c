/*
 * Peak memory and time of the reverse meta-gradient with and without checkpointing.
 *
 * GD with step size lr = 0.01 unrolled for T steps on a dense quadratic
 * f(w) = 1/2 w^T H w, H = Q diag(linspace(1, 10, d)) Q^T with Q from the QR of a seeded
 * Gaussian matrix, w_0 ~ N(0, I); meta-objective G = (1/T) log f(w_T). The meta-gradient
 * dG/dlr is computed by plain reverse mode (the whole unroll on one tape) and by checkpointed
 * reverse mode (every K-th state kept, segments recomputed while back-propagating).
 *
 * Peak memory is the engine's own count (ms_ctx_peak_bytes after ms_ctx_reset_peak): every
 * byte the engine allocates goes through the context. "extra" is the peak minus what was
 * held before the call (the objective's H and w_0).
 *
 * The requirement it checks: at d = 1000, T = 10000 checkpointed reverse mode uses at most a
 * tenth of the memory of plain reverse mode and gives the identical meta-gradient. The memory
 * compared is "extra", what the method itself allocates: since plain reverse mode of GD on a
 * quadratic runs on buffers (T d doubles, no tape), the problem's own H, which both hold, is
 * about a tenth of plain's peak, and a ratio of peaks would measure H rather than the method.
 *
 * Usage: OPENBLAS_NUM_THREADS=1 build/bench_checkpoint [d] [T] [K]
 *        (defaults d = 1000, T = 10000, K = round(sqrt(T)) = 100)
 * Exit status: 0 when the gradients are bit-identical and the extra-memory ratio is <= 1/10,
 * 1 on an error or a gradient mismatch, 2 when only the memory ratio exceeds 1/10.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

static int fail(ms_ctx *ctx, const char *what) {
  fprintf(stderr, "bench_checkpoint: %s: %s\n", what, ms_ctx_error(ctx));
  return 1;
}

typedef struct run_result {
  double value, grad, seconds;
  size_t peak, extra;
  int status;
} run_result;

static int run(ms_ctx *ctx, ms_meta_spec spec, int64_t K, run_result *r) {
  ms_meta_out out;
  spec.checkpoint = K;
  size_t before = ms_ctx_bytes(ctx);
  ms_ctx_reset_peak(ctx);
  double t0 = now();
  int st = ms_meta_value_and_grad(ctx, &spec, &out);
  r->seconds = now() - t0;
  r->peak = ms_ctx_peak_bytes(ctx);
  r->extra = r->peak - before;
  if (st) return st;
  r->value = out.value;
  r->status = out.status;
  st = ms_tensor_item(ctx, out.grad[0], &r->grad);
  ms_meta_out_clear(&out);
  return st;
}

static void row(const char *name, const run_result *r) {
  printf("%-26s %9.1f %9.1f %9.2f  %-24.17g %.17g%s%s\n", name, r->peak / 1e6, r->extra / 1e6,
         r->seconds, r->value, r->grad, r->status ? "  status " : "",
         r->status ? ms_meta_status_name(r->status) : "");
}

int main(int argc, char **argv) {
  int64_t arg[3] = {1000, 10000, 0}; /* d, T, K (0: round(sqrt(T))) */
  ms_ctx *ctx = start(argc, argv, 3, arg, "bench_checkpoint [d >= 1] [T >= 1] [K >= 1]");
  if (ctx == NULL) return 1;
  int64_t d = arg[0], T = arg[1], K = arg[2] ? arg[2] : (int64_t)llround(sqrt((double)T));
  problem p;
  int rc = 1;
  if (setup(ctx, d, 1, &p)) {
    fail(ctx, "setup");
    goto out;
  }
  ms_meta_spec spec = ms_meta_spec_one(p.gd, &p.task, T, MS_META_LOG, MS_METHOD_REVERSE);

  printf(
      "bench_checkpoint: GD lr = %g, T = %lld steps on a dense quadratic, d = %lld "
      "(eigenvalues 1..10), meta = (1/T) log f(w_T)\n",
      LR, (long long)T, (long long)d);
  printf("held before the runs: %.1f MB\n", ms_ctx_bytes(ctx) / 1e6);
  printf("%-26s %9s %9s %9s  %-24s %s\n", "method", "peak MB", "extra MB", "time s", "G", "dG/dlr");
  run_result plain, ck;
  char name[64];
  if (run(ctx, spec, 0, &plain)) {
    fail(ctx, "plain reverse");
    goto out;
  }
  row("reverse", &plain);
  if (run(ctx, spec, K, &ck)) {
    fail(ctx, "checkpointed reverse");
    goto out;
  }
  snprintf(name, sizeof name, "reverse, checkpoint %lld", (long long)K);
  row(name, &ck);

  double ratio = (double)ck.extra / (double)plain.extra;
  int same = memcmp(&plain.grad, &ck.grad, sizeof plain.grad) == 0 &&
             memcmp(&plain.value, &ck.value, sizeof plain.value) == 0;
  printf("extra memory checkpointed / plain = %.4f (peaks: %.4f); at most 1/10: %s\n", ratio,
         (double)ck.peak / (double)plain.peak, ratio <= 0.1 ? "yes" : "NO");
  printf("meta-gradients bit-identical: %s\n", same ? "yes" : "NO");
  rc = !same || plain.status || ck.status ? 1 : ratio > 0.1 ? 2 : 0;

out:
  return finish(ctx, &p, "bench_checkpoint", rc);
}
