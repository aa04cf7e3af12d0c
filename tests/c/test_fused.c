/*
 * The fused kernels (engine/src/fused.c) and what is built on them: the forward method's fast
 * path (forward_fast.c), the stable method's symmetric kernel, the eigendecomposition cache
 * of a quadratic (objective.c) behind the exact method and the PSD check.
 *
 * Golden values: the kernels against plain loops in long double written here; the forward
 * fast path against the generic forward mode (the tape, forced by freeze_norm = 1e300, which
 * never triggers) and against finite differences; the stable method with the symmetric kernel
 * against the exact method (the closed form in the eigenbasis); the cache against an objective
 * built afresh from the changed H.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/src/fused.h"
#include "../../engine/src/meta_internal.h"
#include "check.h"
#include "metastep/metastep.h"

#define OK(call) CHECK_OK(ctx, call)

typedef long double ld;

static ms_ctx *ctx;

static void randn(ms_rng *rng, double *x, int64_t n, double scale) {
  for (int64_t i = 0; i < n; i++) x[i] = scale * ms_rng_normal(rng);
}

/* |a - b| <= tol * scale */
static int near(double a, ld b, double tol, ld scale) {
  return fabsl((ld)a - b) <= tol * (scale > 1 ? scale : 1);
}

/* ---- the kernels against long double loops ---- */

static void test_gemv(void) {
  ms_rng rng;
  ms_rng_seed(&rng, 11);
  int64_t shapes[][2] = {{1, 1}, {3, 5}, {13, 11}, {17, 40}, {70, 70}};
  for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
    int64_t m = shapes[c][0], n = shapes[c][1], lda = n + 3, ldx = n + 1, ldy = m + 2;
    for (int k = 1; k <= MS_FUSED_MAXK; k++) {
      double *A = malloc(sizeof(double) * (size_t)(m * lda)),
             *X = malloc(sizeof(double) * (size_t)(k * ldx)),
             *Y = malloc(sizeof(double) * (size_t)(k * ldy));
      randn(&rng, A, m * lda, 1.0);
      randn(&rng, X, k * ldx, 1.0);
      for (int64_t i = 0; i < k * ldy; i++) Y[i] = -7.0; /* the gaps must stay as they are */
      ms__fused_gemv(k, m, n, A, lda, X, ldx, Y, ldy);
      int bad = 0;
      for (int r = 0; r < k; r++) {
        for (int64_t i = 0; i < m; i++) {
          ld s = 0, a = 0;
          for (int64_t j = 0; j < n; j++) {
            s += (ld)A[i * lda + j] * X[r * ldx + j];
            a += fabsl((ld)A[i * lda + j] * X[r * ldx + j]);
          }
          bad += !near(Y[r * ldy + i], s, 1e-15, a);
        }
        for (int64_t i = m; i < ldy; i++) bad += Y[r * ldy + i] != -7.0;
      }
      check_record(bad == 0, __FILE__, __LINE__, "gemv m=%lld n=%lld k=%d: %d wrong entries",
                   (long long)m, (long long)n, k, bad);
      free(A), free(X), free(Y);
    }
  }
}

/* The symmetric kernel reads the upper triangle only: the strictly lower one holds NaN. */
static void test_upper(void) {
  ms_rng rng;
  ms_rng_seed(&rng, 12);
  int64_t sizes[] = {1, 2, 5, 8, 13, 70};
  for (size_t c = 0; c < sizeof sizes / sizeof *sizes; c++) {
    int64_t n = sizes[c], ldh = n + 2, ldx = n + 1;
    for (int k = 1; k <= MS_FUSED_MAXK; k++) {
      double *H = malloc(sizeof(double) * (size_t)(n * ldh)),
             *X = malloc(sizeof(double) * (size_t)(k * ldx)),
             *Y = malloc(sizeof(double) * (size_t)(k * n));
      randn(&rng, H, n * ldh, 1.0);
      randn(&rng, X, k * ldx, 1.0);
      for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) H[i * ldh + j] = NAN;
      ms__fused_hmul_upper(k, n, H, ldh, X, ldx, Y, n);
      int bad = 0;
      for (int r = 0; r < k; r++)
        for (int64_t i = 0; i < n; i++) {
          ld s = 0, a = 0;
          for (int64_t j = 0; j < n; j++) {
            ld h = i <= j ? H[i * ldh + j] : H[j * ldh + i];
            s += h * X[r * ldx + j];
            a += fabsl(h * X[r * ldx + j]);
          }
          bad += !near(Y[r * n + i], s, 1e-15, a);
        }
      check_record(bad == 0, __FILE__, __LINE__, "upper n=%lld k=%d: %d wrong entries",
                   (long long)n, k, bad);
      free(H), free(X), free(Y);
    }
  }
}

static void test_ls(void) {
  ms_rng rng;
  ms_rng_seed(&rng, 13);
  int64_t shapes[][2] = {{1, 1}, {5, 12}, {15, 8}, {23, 17}};
  for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
    int64_t m = shapes[c][0], n = shapes[c][1];
    for (int k = 1; k <= MS_FUSED_MAXK; k++)
      for (int mode = 0; mode < 3; mode++) { /* 0: both, 1: S NULL, 2: G NULL */
        double *A = malloc(sizeof(double) * (size_t)(m * n)),
               *S = malloc(sizeof(double) * (size_t)(k * n)),
               *R = malloc(sizeof(double) * (size_t)(k * m)),
               *R0 = malloc(sizeof(double) * (size_t)(k * m)),
               *G = malloc(sizeof(double) * (size_t)(k * n));
        randn(&rng, A, m * n, 1.0);
        randn(&rng, S, k * n, 1.0);
        randn(&rng, R0, k * m, 1.0);
        memcpy(R, R0, sizeof(double) * (size_t)(k * m));
        for (int64_t i = 0; i < k * n; i++) G[i] = -7.0;
        double a = -0.75, alpha = 1.0 / 3.0;
        ms__fused_ls(k, m, n, A, n, a, mode == 1 ? NULL : S, n, R, m, alpha, mode == 2 ? NULL : G,
                     n);
        int bad = 0;
        ld *Rr = malloc(sizeof(ld) * (size_t)(k * m));
        for (int r = 0; r < k; r++)
          for (int64_t i = 0; i < m; i++) {
            ld s = 0, sa = 0;
            for (int64_t j = 0; j < n; j++) {
              s += (ld)A[i * n + j] * S[r * n + j];
              sa += fabsl((ld)A[i * n + j] * S[r * n + j]);
            }
            Rr[r * m + i] = mode == 1 ? (ld)R0[r * m + i] : R0[r * m + i] + (ld)a * s;
            bad += !near(R[r * m + i], Rr[r * m + i], 1e-15, fabsl(R0[r * m + i]) + sa);
          }
        for (int r = 0; r < k; r++)
          for (int64_t j = 0; j < n; j++) {
            if (mode == 2) {
              bad += G[r * n + j] != -7.0;
              continue;
            }
            /* G from the double R the kernel wrote (its rounding is R's, checked above) */
            ld s = 0, sa = 0;
            for (int64_t i = 0; i < m; i++) {
              s += (ld)A[i * n + j] * R[r * m + i];
              sa += fabsl((ld)A[i * n + j] * R[r * m + i]);
            }
            bad += !near(G[r * n + j], (ld)alpha * s, 1e-15, sa);
          }
        check_record(bad == 0, __FILE__, __LINE__, "ls m=%lld n=%lld k=%d mode %d: %d wrong",
                     (long long)m, (long long)n, k, mode, bad);
        free(A), free(S), free(R), free(R0), free(G), free(Rr);
      }
  }
}

static void test_is_symmetric(void) {
  int64_t n = 130;
  double *H = malloc(sizeof(double) * (size_t)(n * n));
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j <= i; j++) H[i * n + j] = H[j * n + i] = sin((double)(i * 7 + j * 3));
  CHECK(ms__fused_is_symmetric(n, H, n));
  CHECK(ms__fused_is_symmetric(1, H, n));
  int64_t where[][2] = {{3, 100}, {0, 1}, {128, 129}, {64, 65}, {100, 3}};
  for (size_t c = 0; c < sizeof where / sizeof *where; c++) {
    double *h = &H[where[c][0] * n + where[c][1]], keep = *h;
    *h = nextafter(keep, INFINITY);
    CHECK(!ms__fused_is_symmetric(n, H, n));
    *h = keep;
  }
  H[5 * n + 5] += 1; /* the diagonal does not matter */
  CHECK(ms__fused_is_symmetric(n, H, n));
  free(H);
}

/* ---- problems ---- */

static ms_tensor *tensor2(int64_t n0, int64_t n1, const double *x) {
  ms_tensor *t = NULL;
  int64_t shape[2] = {n0, n1};
  OK(ms_tensor_from_data(ctx, n1 > 0 ? 2 : 1, shape, x, &t));
  return t;
}

/* SPD H = B B^T / d + 0.5 I (exactly symmetric unless asym != 0: then H[0][1] += asym). */
static ms_objective *quadratic(uint64_t seed, int64_t d, double asym, int with_wstar, double fstar,
                               ms_tensor **w0) {
  ms_rng rng;
  ms_rng_seed(&rng, seed);
  double *B = malloc(sizeof(double) * (size_t)(d * d)),
         *H = malloc(sizeof(double) * (size_t)(d * d)), *v = malloc(sizeof(double) * (size_t)d);
  randn(&rng, B, d * d, 1.0);
  for (int64_t i = 0; i < d; i++)
    for (int64_t j = 0; j <= i; j++) {
      double s = 0;
      for (int64_t l = 0; l < d; l++) s += B[i * d + l] * B[j * d + l];
      H[i * d + j] = H[j * d + i] = s / (double)d + (i == j ? 0.5 : 0.0);
    }
  if (d > 1) H[1] += asym;
  ms_tensor *Ht = tensor2(d, d, H), *ws = NULL;
  if (with_wstar) {
    randn(&rng, v, d, 1.0);
    ws = tensor2(d, 0, v);
  }
  randn(&rng, v, d, 1.0);
  *w0 = tensor2(d, 0, v);
  ms_objective *obj = NULL;
  OK(ms_objective_quadratic(ctx, Ht, ws, fstar, &obj));
  ms_tensor_release(Ht);
  ms_tensor_release(ws);
  free(B), free(H), free(v);
  return obj;
}

static ms_objective *least_squares(uint64_t seed, int64_t n, int64_t d, ms_tensor **w0) {
  ms_rng rng;
  ms_rng_seed(&rng, seed);
  double *X = malloc(sizeof(double) * (size_t)(n * d)), *y = malloc(sizeof(double) * (size_t)n),
         *v = malloc(sizeof(double) * (size_t)d);
  randn(&rng, X, n * d, 1.0);
  randn(&rng, y, n, 1.0);
  randn(&rng, v, d, 1.0);
  ms_tensor *Xt = tensor2(n, d, X), *yt = tensor2(n, 0, y);
  *w0 = tensor2(d, 0, v);
  ms_objective *obj = NULL;
  OK(ms_objective_least_squares(ctx, Xt, yt, &obj));
  ms_tensor_release(Xt);
  ms_tensor_release(yt);
  free(X), free(y), free(v);
  return obj;
}

static ms_optim *make_opt(ms_optim_kind kind, double lr, double beta, int log_lr) {
  ms_optim_options o;
  memset(&o, 0, sizeof o);
  o.lr = lr;
  o.log_lr = log_lr;
  o.beta = beta;
  o.beta_set = 1;
  ms_optim *opt = NULL;
  OK(ms_optim_builtin(ctx, kind, &o, &opt));
  return opt;
}

static double grad_item(const ms_meta_out *o, int i) {
  double v = NAN;
  if (o->grad[i]) OK(ms_tensor_item(ctx, o->grad[i], &v));
  return v;
}

/* ---- forward: fast path against the generic one ---- */

static int64_t nallocs;
static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  nallocs++;
  return realloc(ptr, nsize);
}

/* The fast path's result against the generic forward mode's on the same spec (forced with a
 * freeze_norm that never triggers): value, gradients, status and failing step. */
static void same_as_generic(const char *name, ms_meta_spec spec, double tol) {
  ms_meta_out a, b;
  spec.method = MS_METHOD_FORWARD;
  spec.freeze_norm = 0;
  OK(ms_meta_value_and_grad(ctx, &spec, &a));
  spec.freeze_norm = 1e300;
  OK(ms_meta_value_and_grad(ctx, &spec, &b));
  int ok = a.status == b.status && a.fail_step == b.fail_step &&
           (a.value == b.value ||
            (isnan(b.value) ? isnan(a.value) : near(a.value, b.value, tol, fabs(b.value))));
  for (int i = 0; i < a.nparams; i++) {
    double ga = grad_item(&a, i), gb = grad_item(&b, i);
    ok &= (a.grad[i] == NULL) == (b.grad[i] == NULL);
    if (b.grad[i]) ok &= ga == gb || (isnan(gb) ? isnan(ga) : near(ga, gb, tol, fabs(gb)));
  }
  check_record(ok, __FILE__, __LINE__,
               "%s: fast value %.17g grads %.17g %.17g status %d at %lld; generic %.17g %.17g "
               "%.17g status %d at %lld",
               name, a.value, grad_item(&a, 0), a.nparams > 1 ? grad_item(&a, 1) : 0.0, a.status,
               (long long)a.fail_step, b.value, grad_item(&b, 0),
               b.nparams > 1 ? grad_item(&b, 1) : 0.0, b.status, (long long)b.fail_step);
  ms_meta_out_clear(&a);
  ms_meta_out_clear(&b);
}

static void test_forward_fast(void) {
  ms_tensor *w0[4];
  ms_objective *objs[4] = {
      quadratic(21, MS_FUSED_SYM_MIN_DIM + 3, 0.0, 1, 0.3, &w0[0]), /* exactly symmetric: upper */
      quadratic(22, 9, 1e-13, 1, 0.0, &w0[1]), /* symmetric to rounding: full kernel */
      least_squares(23, 15, 8, &w0[2]),        /* n > d */
      least_squares(24, 5, 12, &w0[3]),        /* n < d */
  };
  const char *onames[] = {"quad_upper", "quad9", "ls15x8", "ls5x12"};
  ms_optim_kind kinds[] = {MS_OPTIM_GD, MS_OPTIM_MOMENTUM, MS_OPTIM_NESTEROV};
  ms_meta_kind metas[] = {MS_META_NAIVE, MS_META_LOG, MS_META_SUM, MS_META_LOGSUM};
  char name[128];
  for (int o = 0; o < 4; o++) {
    ms_task task = {objs[o], NULL, w0[o], NULL};
    for (int k = 0; k < 3; k++)
      for (int log_lr = 0; log_lr < 2; log_lr++) {
        ms_optim *opt = make_opt(kinds[k], 0.05, 0.6, log_lr);
        for (int m = 0; m < 4; m++) {
          ms_meta_spec spec = ms_meta_spec_one(opt, &task, 40, metas[m], MS_METHOD_FORWARD);
          snprintf(name, sizeof name, "%s %s log_lr=%d meta %d", onames[o], ms_optim_name(opt),
                   log_lr, (int)metas[m]);
          same_as_generic(name, spec, 1e-12);
          if (kinds[k] != MS_OPTIM_GD && m == 1) {
            int only_beta = 1;
            spec.select = &only_beta;
            spec.nselect = 1;
            snprintf(name, sizeof name, "%s %s beta only", onames[o], ms_optim_name(opt));
            same_as_generic(name, spec, 1e-12);
          }
        }
        ms_optim_release(opt);
      }
  }
  /* a schedule, against the generic path and against finite differences */
  ms_task task = {objs[0], NULL, w0[0], NULL};
  ms_optim *opt = make_opt(MS_OPTIM_NESTEROV, 0.05, 0.5, 0);
  double factors[] = {1.0, 0.5, 0.25};
  OK(ms_optim_set_schedule(ctx, opt, 3, factors));
  ms_meta_spec spec = ms_meta_spec_one(opt, &task, 30, MS_META_LOGSUM, MS_METHOD_FORWARD);
  same_as_generic("schedule", spec, 1e-12);
  ms_meta_out a, b;
  OK(ms_meta_value_and_grad(ctx, &spec, &a));
  spec.method = MS_METHOD_FD;
  OK(ms_meta_value_and_grad(ctx, &spec, &b));
  for (int i = 0; i < 2; i++) CHECK_NEAR(grad_item(&a, i), grad_item(&b, i), 1e-7);
  ms_meta_out_clear(&a);
  ms_meta_out_clear(&b);
  ms_optim_release(opt);
  /* failures: divergence (w overflows), and a loss of exactly 0 under log */
  opt = make_opt(MS_OPTIM_GD, 50.0, 0.0, 0);
  spec = ms_meta_spec_one(opt, &task, 400, MS_META_LOG, MS_METHOD_FORWARD);
  same_as_generic("divergent", spec, 1e-12);
  ms_optim_release(opt);
  opt = make_opt(MS_OPTIM_MOMENTUM, 0.05, 0.5, 0);
  ms_tensor *ws = NULL;
  OK(ms_objective_quadratic_parts(objs[0], NULL, &ws, NULL));
  ms_task at_min = {objs[1], NULL, NULL, NULL};
  ms_objective_quadratic_parts(objs[1], NULL, &ws, NULL);
  at_min.w0 = ws; /* w0 = w*: every loss is 0 */
  spec = ms_meta_spec_one(opt, &at_min, 5, MS_META_LOG, MS_METHOD_FORWARD);
  same_as_generic("zero loss", spec, 0);
  spec.allow_zero_loss = 1;
  same_as_generic("zero loss allowed", spec, 0);
  ms_optim_release(opt);
  for (int o = 0; o < 4; o++) {
    ms_objective_release(objs[o]);
    ms_tensor_release(w0[o]);
  }
}

/* The fast path allocates per call, not per step: the same count for T = 10 and T = 1000. */
static void test_forward_allocations(void) {
  ms_ctx *c = ms_ctx_new(counting_alloc, NULL);
  ms_ctx *keep = ctx;
  ctx = c;
  ms_tensor *w0 = NULL;
  ms_objective *obj = quadratic(31, 70, 0.0, 1, 0.0, &w0);
  ms_optim *opt = make_opt(MS_OPTIM_MOMENTUM, 0.05, 0.6, 0);
  ms_task task = {obj, NULL, w0, NULL};
  int64_t counts[2];
  int64_t Ts[2] = {10, 1000};
  for (int i = 0; i < 2; i++) {
    ms_meta_spec spec = ms_meta_spec_one(opt, &task, Ts[i], MS_META_LOGSUM, MS_METHOD_FORWARD);
    ms_meta_out out;
    nallocs = 0;
    OK(ms_meta_value_and_grad(ctx, &spec, &out));
    counts[i] = nallocs;
    ms_meta_out_clear(&out);
  }
  check_record(counts[0] == counts[1] && counts[0] < 40, __FILE__, __LINE__,
               "forward fast path: %lld allocations at T = 10, %lld at T = 1000",
               (long long)counts[0], (long long)counts[1]);
  ms_optim_release(opt);
  ms_objective_release(obj);
  ms_tensor_release(w0);
  ctx = keep;
  check_ctx_free(c);
}

/* ---- stable with the symmetric kernel against the closed form ---- */

static void test_stable_upper(void) {
  ms_tensor *w0 = NULL;
  ms_objective *obj = quadratic(41, MS_FUSED_SYM_MIN_DIM + 5, 0.0, 1, 0.0, &w0);
  ms_task task = {obj, NULL, w0, NULL};
  ms_optim *opt = make_opt(MS_OPTIM_GD, 0.1, 0.0, 0);
  ms_meta_spec spec = ms_meta_spec_one(opt, &task, 300, MS_META_LOG, MS_METHOD_STABLE);
  ms_meta_out a, b;
  OK(ms_meta_value_and_grad(ctx, &spec, &a));
  spec.method = MS_METHOD_EXACT;
  OK(ms_meta_value_and_grad(ctx, &spec, &b));
  CHECK(a.status == MS_META_OK && b.status == MS_META_OK);
  CHECK_NEAR(a.value, b.value, 1e-11);
  CHECK_NEAR(grad_item(&a, 0), grad_item(&b, 0), 1e-10);
  ms_meta_out_clear(&a);
  ms_meta_out_clear(&b);
  ms_optim_release(opt);
  /* momentum, both tangents, against the generic forward mode */
  opt = make_opt(MS_OPTIM_MOMENTUM, 0.05, 0.7, 1);
  spec = ms_meta_spec_one(opt, &task, 60, MS_META_LOGSUM, MS_METHOD_STABLE);
  OK(ms_meta_value_and_grad(ctx, &spec, &a));
  spec.method = MS_METHOD_FORWARD;
  spec.freeze_norm = 1e300;
  OK(ms_meta_value_and_grad(ctx, &spec, &b));
  CHECK_NEAR(a.value, b.value, 1e-12);
  for (int i = 0; i < 2; i++) CHECK_NEAR(grad_item(&a, i), grad_item(&b, i), 1e-11);
  ms_meta_out_clear(&a);
  ms_meta_out_clear(&b);
  ms_optim_release(opt);
  ms_objective_release(obj);
  ms_tensor_release(w0);
}

/* ---- the eigendecomposition cache ---- */

static void test_eigh_cache(void) {
  ms_tensor *w0 = NULL, *w0b = NULL;
  ms_objective *obj = quadratic(51, 30, 0.0, 1, 0.0, &w0), *fresh = NULL;
  ms_task task = {obj, NULL, w0, NULL};
  ms_optim *opt = make_opt(MS_OPTIM_GD, 0.1, 0.0, 0);
  ms_meta_spec spec = ms_meta_spec_one(opt, &task, 50, MS_META_LOG, MS_METHOD_EXACT);
  ms_meta_out a, b, c;
  CHECK(ms__objective_eigh_count(obj) == 0);
  OK(ms_meta_value_and_grad(ctx, &spec, &a));
  CHECK(ms__objective_eigh_count(obj) == 1); /* the PSD check and the closed form share it */
  ms_meta_out_clear(&a);
  OK(ms_meta_value_and_grad(ctx, &spec, &a));
  spec.method = MS_METHOD_STABLE;
  OK(ms_meta_value_and_grad(ctx, &spec, &b));
  ms_meta_out_clear(&b);
  CHECK(ms__objective_eigh_count(obj) == 1);
  /* H written in place (kept symmetric): the next call decomposes the new H */
  ms_tensor *H = NULL;
  OK(ms_objective_quadratic_parts(obj, &H, NULL, NULL));
  int64_t i01[2] = {0, 1}, i10[2] = {1, 0}, i00[2] = {0, 0};
  double h00;
  OK(ms_tensor_get(ctx, H, i00, &h00));
  OK(ms_tensor_set(ctx, H, i00, h00 + 2.0));
  OK(ms_tensor_set(ctx, H, i01, 0.25));
  OK(ms_tensor_set(ctx, H, i10, 0.25));
  spec.method = MS_METHOD_EXACT;
  OK(ms_meta_value_and_grad(ctx, &spec, &b));
  CHECK(ms__objective_eigh_count(obj) == 2);
  CHECK(fabs(b.value - a.value) > 1e-6); /* the objective did change */
  /* the same as an objective built from the changed H */
  ms_tensor *ws = NULL;
  OK(ms_objective_quadratic_parts(obj, NULL, &ws, NULL));
  OK(ms_objective_quadratic(ctx, H, ws, 0.0, &fresh));
  ms_task t2 = {fresh, NULL, w0, NULL};
  spec.tasks = &t2;
  OK(ms_meta_value_and_grad(ctx, &spec, &c));
  CHECK_NEAR(b.value, c.value, 1e-13);
  CHECK_NEAR(grad_item(&b, 0), grad_item(&c, 0), 1e-12);
  CHECK(ms__objective_eigh_count(fresh) == 1);
  ms_meta_out_clear(&a);
  ms_meta_out_clear(&b);
  ms_meta_out_clear(&c);
  ms_optim_release(opt);
  ms_objective_release(obj);
  ms_objective_release(fresh);
  ms_tensor_release(w0);
  ms_tensor_release(w0b);
}

/* The PSD check of stable runs without an eigendecomposition (a Cholesky factorization of
 * H + tau I); an indefinite H written in place is still refused with its eigenvalues, and a
 * singular PSD H (rank 1) is accepted. */
static void test_psd_check(void) {
  enum { D = 30 };
  int64_t dd[2] = {D, D}, d1 = D;
  double h[D * D], u[D];
  for (int i = 0; i < D; i++) u[i] = cos(0.7 * (i + 1));
  for (int i = 0; i < D; i++)
    for (int j = 0; j < D; j++) h[i * D + j] = (i == j ? 1.0 + i : 0.0) + u[i] * u[j];
  ms_tensor *H = NULL, *w0 = NULL;
  ms_objective *obj = NULL;
  OK(ms_tensor_from_data(ctx, 2, dd, h, &H));
  OK(ms_tensor_ones(ctx, 1, &d1, &w0));
  OK(ms_objective_quadratic(ctx, H, NULL, 0.0, &obj));
  ms_task task = {obj, NULL, w0, NULL};
  ms_optim *opt = make_opt(MS_OPTIM_GD, 0.01, 0.0, 0);
  ms_meta_spec spec = ms_meta_spec_one(opt, &task, 20, MS_META_LOG, MS_METHOD_STABLE);
  ms_meta_out a;
  OK(ms_meta_value_and_grad(ctx, &spec, &a));
  ms_meta_out_clear(&a);
  CHECK(ms__objective_eigh_count(obj) == 0);
  /* indefinite, written in place: the eigenvalues refuse it */
  ms_tensor *Hq = NULL;
  OK(ms_objective_quadratic_parts(obj, &Hq, NULL, NULL));
  int64_t i00[2] = {0, 0};
  OK(ms_tensor_set(ctx, Hq, i00, -5.0));
  CHECK(ms_meta_value_and_grad(ctx, &spec, &a) == MS_EARG);
  CHECK(strstr(ms_ctx_error(ctx), "positive semi-definite") != NULL);
  CHECK(ms__objective_eigh_count(obj) == 1);
  ms_objective_release(obj);
  ms_tensor_release(H);
  /* rank 1: PSD and singular */
  for (int i = 0; i < D; i++)
    for (int j = 0; j < D; j++) h[i * D + j] = u[i] * u[j];
  OK(ms_tensor_from_data(ctx, 2, dd, h, &H));
  OK(ms_objective_quadratic(ctx, H, NULL, 0.0, &obj));
  task.objective = obj;
  OK(ms_meta_value_and_grad(ctx, &spec, &a));
  ms_meta_out_clear(&a);
  ms_objective_release(obj);
  ms_tensor_release(H);
  ms_tensor_release(w0);
  ms_optim_release(opt);
}

int main(void) {
  return check_main(
      &ctx, (const check_test[]){test_gemv, test_upper, test_ls, test_is_symmetric,
                                 test_forward_fast, test_forward_allocations, test_stable_upper,
                                 test_eigh_cache, test_psd_check, NULL});
}
