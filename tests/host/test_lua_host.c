/*
 * The host API of metastep_lua.h: scripts run under a memory, instruction and time budget
 * and a choice of libraries; results read back; an objective made in C used by a script.
 *
 * Each limit test checks that the run fails with the right status within a bounded time
 * (at most ~1 s past the budget), that the state serves the next script, and (under ASan)
 * that nothing leaks when the state is closed.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "metastep_lua.h"

/* The run must succeed; a failure prints the host's message. */
#define RUN_OK(h, code)                                                                 \
  (void)check_record(ms_lua_run_string((h), (code), NULL) == MS_OK, __FILE__, __LINE__, \
                     "run failed: %s", ms_lua_error(h))

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The run fails with status want within max_s seconds and its message contains msg. */
static void check_fails(ms_lua *h, const char *code, int want, const char *msg, double max_s) {
  double t0 = now();
  int st = ms_lua_run_string(h, code, "=test");
  double dt = now() - t0;
  check_record(st == want && strstr(ms_lua_error(h), msg) != NULL, __FILE__, __LINE__,
               "script %s: status %d (wanted %d), message \"%s\" (wanted \"%s\")", code, st, want,
               ms_lua_error(h), msg);
  check_record(dt <= max_s, __FILE__, __LINE__, "script %s took %.3f s (at most %.3f)", code, dt,
               max_s);
}

/* The state serves a next script: arithmetic, a tensor, a global read back. */
static void check_serves(ms_lua *h) {
  int st = ms_lua_run_string(h, "after = (ms.ones(3) * 2):sum():item()", "=next");
  double x = 0;
  check_record(st == MS_OK, __FILE__, __LINE__, "next script failed: %s", ms_lua_error(h));
  CHECK(ms_lua_get_number(h, "after", &x) == MS_OK && x == 6);
}

static ms_lua *make(size_t mem, int64_t instr, double secs, int sandbox) {
  ms_lua_options o;
  memset(&o, 0, sizeof o);
  o.memory_limit = mem;
  o.instruction_limit = instr;
  o.time_limit = secs;
  o.sandbox = sandbox;
  ms_lua *h = NULL;
  char err[256];
  int st = ms_lua_new(&o, &h, err, sizeof err);
  check_record(st == MS_OK, __FILE__, __LINE__, "ms_lua_new: %s", err);
  return h;
}

static void test_results_and_libs(void) {
  ms_lua *h = make(0, 0, 0, 0);
  if (!h) return;
  RUN_OK(h,
         "x = 1.5 * 2\n"
         "s = 'hello ' .. ms.version\n"
         "t = ms.tensor{{1, 2}, {3, 4}}:t()\n"
         "libs = tostring(os.execute) .. tostring(io.write) .. tostring(debug)"
         " .. tostring(dofile) .. tostring(package.loadlib)");
  double x = 0;
  char s[64], libs[128];
  ms_tensor *t = NULL;
  CHECK(ms_lua_get_number(h, "x", &x) == MS_OK && x == 3.0);
  CHECK(ms_lua_get_string(h, "s", s, sizeof s) == MS_OK &&
        strcmp(s, "hello " METASTEP_VERSION) == 0);
  CHECK(ms_lua_get_string(h, "libs", libs, sizeof libs) == MS_OK &&
        strcmp(libs, "nilnilnilnilnil") == 0);
  CHECK(ms_lua_get_tensor(h, "t", &t) == MS_OK);
  if (t) {
    int64_t idx[2] = {0, 1};
    double v = 0;
    CHECK_OK(ms_lua_ctx(h), ms_tensor_get(ms_lua_ctx(h), t, idx, &v));
    CHECK(v == 3.0); /* the transpose's [0,1] is the original's [1,0] */
  }
  ms_tensor_release(t);
  CHECK(ms_lua_get_number(h, "s", &x) == MS_EARG &&
        strstr(ms_lua_error(h), "global 's' is string, expected a number") != NULL);
  CHECK(ms_lua_get_tensor(h, "nothing", &t) == MS_EARG && t == NULL);
  /* syntax errors and runtime errors: their own statuses, the state goes on */
  check_fails(h, "x = = 1", MS_EARG, "unexpected symbol", 1.0);
  check_fails(h, "error('boom')", MS_ECALLBACK, "boom", 1.0);
  check_fails(h, "require 'os'", MS_ECALLBACK, "module 'os' not found", 1.0);
  check_fails(h, "assert(load(string.dump(function() end)))", MS_ECALLBACK,
              "attempt to load a binary", 1.0);
  /* files, and a tensor given by the host */
  char path[] = "/tmp/metastep_host_XXXXXX";
  int fd = mkstemp(path);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (f) {
    fputs("y = (given * 2):sum():item()\n", f);
    fclose(f);
    ms_tensor *given = NULL;
    int64_t n = 3;
    CHECK_OK(ms_lua_ctx(h), ms_tensor_ones(ms_lua_ctx(h), 1, &n, &given));
    CHECK(ms_lua_set_tensor(h, "given", given) == MS_OK);
    ms_tensor_release(given);
    double y = 0;
    CHECK(ms_lua_run_file(h, path) == MS_OK && ms_lua_get_number(h, "y", &y) == MS_OK && y == 6);
    remove(path);
  }
  CHECK(ms_lua_run_file(h, "/nonexistent/script.lua") == MS_EARG &&
        strstr(ms_lua_error(h), "cannot open /nonexistent/script.lua") != NULL);
  check_fails(h, "require 'debug'", MS_ECALLBACK, "module 'debug' not found", 1.0);
  /* the front library's errors still blame the script's line (it kept debug.getinfo) */
  check_fails(h, "\nms.meta.value_and_grad{objective = 1}", MS_ECALLBACK, "test:2: meta", 1.0);
  /* meta.train's progress goes nowhere without io; its log cannot be opened */
  RUN_OK(h,
         "local obj = ms.objective.random_quadratic{d = 3, eigenvalues = {1, 2}, seed = 1}\n"
         "ms.meta.train{objective = obj, optimizer = ms.optim.gd{lr = 0.1}, w0 = ms.ones(3),\n"
         "  steps = 5, iterations = 3}");
  check_fails(h,
              "local obj = ms.objective.random_quadratic{d = 3, eigenvalues = {1, 2}, seed = 1}\n"
              "ms.meta.train{objective = obj, optimizer = ms.optim.gd{lr = 0.1}, w0 = ms.ones(3),\n"
              "  steps = 5, iterations = 3, log = 'x.csv'}",
              MS_ECALLBACK, "x.csv: no files in this host", 1.0);
  check_serves(h);
  ms_lua_free(h);

  /* the host may give os and io */
  ms_lua_options o;
  memset(&o, 0, sizeof o);
  o.libs = MS_LUA_LIBS_SAFE | MS_LUA_LIB_OS | MS_LUA_LIB_IO;
  char err[128];
  CHECK(ms_lua_new(&o, &h, err, sizeof err) == MS_OK);
  if (h) {
    CHECK(ms_lua_run_string(h, "assert(os.time() > 0 and io.write)", NULL) == MS_OK);
    ms_lua_free(h);
  }
  o.libs = 1u << 20;
  CHECK(ms_lua_new(&o, &h, err, sizeof err) == MS_EARG && strstr(err, "'libs'") != NULL);
  o.libs = 0;
  o.time_limit = -1;
  CHECK(ms_lua_new(&o, &h, err, sizeof err) == MS_EARG && strstr(err, "time_limit") != NULL);
  o.time_limit = 0;
  o.memory_limit = 1000;
  CHECK(ms_lua_new(&o, &h, err, sizeof err) == MS_EARG && h == NULL &&
        strstr(err, "memory_limit 1000 bytes") != NULL);
}

static void test_memory(void) {
  ms_lua *h = make((size_t)8 << 20, 0, 0, 1);
  if (!h) return;
  size_t base = ms_lua_bytes(h);
  CHECK(base > 0 && base < ((size_t)8 << 20));
  /* Lua's own allocations count */
  check_fails(h, "local t = {} for i = 1, 1e9 do t[i] = {i} end", MS_ENOMEM, "not enough memory",
              5.0);
  CHECK(ms_lua_peak_bytes(h) <= ((size_t)8 << 20));
  check_serves(h);
  CHECK(ms_lua_bytes(h) < base + ((size_t)1 << 20)); /* given back after the failed run */
  /* engine allocations count against the same budget */
  check_fails(h, "big = ms.zeros(2000, 1000)", MS_ENOMEM, "out of memory", 1.0);
  /* Lua and engine together: many tensors of 80 kB each */
  check_fails(h, "keep = {} for i = 1, 1000 do keep[i] = ms.ones(10000) end", MS_ENOMEM, "memory",
              5.0);
  CHECK(ms_lua_run_string(h, "keep = nil collectgarbage()", NULL) == MS_OK);
  check_serves(h);
  /* sandbox: the budget cannot be lifted or raised, but may be lowered */
  check_fails(h, "ms.set_memory_limit(0)", MS_ECALLBACK, "sandbox caps the budget at 8388608", 1.0);
  check_fails(h, "ms.set_memory_limit(1 << 40)", MS_ECALLBACK, "sandbox caps", 1.0);
  CHECK(ms_lua_run_string(h, "ms.set_memory_limit(4 << 20)", NULL) == MS_OK);
  check_fails(h, "x = ms.zeros(600, 1000)", MS_ENOMEM, "budget 4194304", 1.0);
  check_serves(h);
  ms_lua_free(h);

  /* without the sandbox a script may lift the engine's part, never the host's allocator */
  h = make((size_t)8 << 20, 0, 0, 0);
  if (!h) return;
  check_fails(h, "ms.set_memory_limit(0) x = ms.zeros(2000, 1000)", MS_ENOMEM, "memory", 1.0);
  check_serves(h);
  ms_lua_free(h);
}

static void test_time_and_instructions(void) {
  ms_lua *h = make((size_t)512 << 20, 0, 0.2, 1);
  if (!h) return;
  check_fails(h, "while true do end", MS_EINTERRUPT, "time budget exceeded", 1.2);
  /* catching the error does not help: every instruction raises once the budget is spent */
  check_fails(h, "while true do pcall(function() while true do end end) end", MS_EINTERRUPT,
              "time budget exceeded", 1.2);
  /* coroutines carry the hook */
  check_fails(h, "coroutine.wrap(function() while true do end end)()", MS_EINTERRUPT,
              "time budget exceeded", 1.2);
  check_serves(h);
  /* engine loops: a huge stable unroll (no Lua runs while it does) */
  check_fails(h,
              "local obj = ms.objective.random_quadratic{d = 50, eigenvalues = {1, 10}, seed = 1}\n"
              "ms.meta.value_and_grad{objective = obj, optimizer = ms.optim.gd{lr = 0.01},\n"
              "  w0 = ms.ones(50), steps = 1e12, meta = 'log', method = 'stable'}",
              MS_EINTERRUPT, "time budget exceeded", 1.2);
  /* a long reverse unroll (checkpointed, so memory stays small) and a huge product */
  check_fails(
      h,
      "local obj = ms.objective.random_quadratic{d = 50, eigenvalues = {1, 10}, seed = 1}\n"
      "ms.meta.value_and_grad{objective = obj, optimizer = ms.optim.gd{lr = 1e-5},\n"
      "  w0 = ms.ones(50), steps = 1e6, checkpoint = 1000, meta = 'log', method = 'reverse'}",
      MS_EINTERRUPT, "time budget exceeded", 1.2);
  check_fails(h, "local a = ms.ones(3000, 3000) for i = 1, 100 do a = a:matmul(a) / 3000 end",
              MS_EINTERRUPT, "time budget exceeded", 1.2);
  /* totable: 2^42 tables are refused up front; 2^22 fit the budget and are interrupted */
  check_fails(h, "ms.zeros{1, 1 << 40, 4, 0}:totable()", MS_ECALLBACK, "past the limit of", 1.2);
  check_fails(h, "ms.zeros{1 << 22, 0}:totable()", MS_EINTERRUPT, "time budget exceeded", 1.2);
  check_serves(h);
  ms_lua_free(h);

  h = make(0, 1000000, 0, 1);
  if (!h) return;
  check_fails(h, "local i = 0 while true do i = i + 1 end", MS_EINTERRUPT,
              "instruction budget exceeded", 5.0);
  /* engine polls are charged too: the stable unroll stops without a clock */
  check_fails(h,
              "local obj = ms.objective.random_quadratic{d = 50, eigenvalues = {1, 10}, seed = 1}\n"
              "ms.meta.value_and_grad{objective = obj, optimizer = ms.optim.gd{lr = 0.01},\n"
              "  w0 = ms.ones(50), steps = 1e12, meta = 'log', method = 'stable'}",
              MS_EINTERRUPT, "instruction budget exceeded", 5.0);
  /* a run under the budget is fine, and every run gets the whole budget */
  for (int i = 0; i < 3; i++)
    CHECK(ms_lua_run_string(h, "local s = 0 for i = 1, 100000 do s = s + i end x = s", NULL) ==
          MS_OK);
  check_serves(h);
  ms_lua_free(h);
}

/* f(w) = 1/2 sum_i a_i w_i^2, written in C with raw loops and its own gradient and hvp */
static int q_value(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  const double *a = ud, *x = ms_tensor_data(w);
  double s = 0;
  for (int i = 0; i < 3; i++) s += 0.5 * a[i] * x[i] * x[i];
  return ms_tensor_scalar(ctx, s, out);
}
static int q_grad(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  const double *a = ud, *x = ms_tensor_data(w);
  double g[3];
  int64_t d = 3;
  for (int i = 0; i < 3; i++) g[i] = a[i] * x[i];
  return ms_tensor_from_data(ctx, 1, &d, g, out);
}
static int q_hvp(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *v, ms_tensor **out) {
  (void)w;
  const double *a = ud, *x = ms_tensor_data(v);
  double g[3];
  int64_t d = 3;
  for (int i = 0; i < 3; i++) g[i] = a[i] * x[i];
  return ms_tensor_from_data(ctx, 1, &d, g, out);
}

static void test_c_objective(void) {
  ms_lua *h = make(0, 0, 2.0, 1);
  if (!h) return;
  ms_ctx *ctx = ms_lua_ctx(h);
  double a[3] = {1, 2, 4};
  ms_objective_def def;
  memset(&def, 0, sizeof def);
  def.name = "host_quadratic";
  def.dim = 3;
  def.value = q_value;
  def.grad = q_grad;
  def.hvp = q_hvp;
  def.ud = a;
  ms_objective *obj = NULL;
  CHECK_OK(ctx, ms_objective_new_raw(ctx, &def, &obj));
  CHECK_OK(ctx, ms_lua_set_objective(h, "hostobj", obj));
  ms_objective_release(obj); /* the script's box keeps it alive */
  /* GD with lr 0.1 from w0 = 1: w_T,i = (1 - 0.1 a_i)^T, so f(w_T) in closed form */
  RUN_OK(h,
         "name = hostobj:name()\n"
         "v = hostobj:value(ms.tensor{1, 1, 1}):item()\n"
         "hv = hostobj:hvp(ms.ones(3), ms.tensor{1, 0, 1})\n"
         "local traj = ms.meta.unroll{objective = hostobj,\n"
         "  optimizer = ms.optim.gd{lr = 0.1}, w0 = ms.ones(3), steps = 10}\n"
         "fT = traj.losses[#traj.losses]:item()\n"
         "local r = ms.meta.value_and_grad{objective = hostobj,\n"
         "  optimizer = ms.optim.gd{lr = 0.1}, w0 = ms.ones(3), steps = 10,\n"
         "  meta = 'naive'}\n"
         "F, dF = r.value, r.grad.lr");
  char name[64];
  double v = 0, fT = 0, F = 0, dF = 0, f = 0, df = 0;
  CHECK(ms_lua_get_string(h, "name", name, sizeof name) == MS_OK &&
        strcmp(name, "host_quadratic") == 0);
  CHECK(ms_lua_get_number(h, "v", &v) == MS_OK && v == 3.5);
  ms_tensor *hv = NULL;
  CHECK(ms_lua_get_tensor(h, "hv", &hv) == MS_OK);
  if (hv)
    CHECK(ms_tensor_data(hv)[0] == 1 && ms_tensor_data(hv)[1] == 0 && ms_tensor_data(hv)[2] == 4);
  ms_tensor_release(hv);
  for (int i = 0; i < 3; i++) {
    double r = pow(1 - 0.1 * a[i], 10);
    f += 0.5 * a[i] * r * r;
    /* d/dlr of 1/2 a r^2 with r = (1 - lr a)^T: a r * T (1 - lr a)^(T-1) * (-a) */
    df += a[i] * r * 10 * pow(1 - 0.1 * a[i], 9) * (-a[i]);
  }
  CHECK(ms_lua_get_number(h, "fT", &fT) == MS_OK);
  CHECK_NEAR(fT, f, 1e-13);
  CHECK(ms_lua_get_number(h, "F", &F) == MS_OK && ms_lua_get_number(h, "dF", &dF) == MS_OK);
  CHECK_NEAR(F, f, 1e-13);
  CHECK_NEAR(dF, df, 1e-12);
  ms_lua_free(h);
}

/* Two states run alternately give what each gives alone (same seeds): nothing is shared. */
static void test_two_states(void) {
  static const char *const step =
      "ms.seed(seed) local obj = ms.objective.random_quadratic{d = 5, eigenvalues = {1, 9},\n"
      "  seed = seed}\n"
      "local run = ms.meta.train{objective = obj, optimizer = ms.optim.gd{lr = lr or 0.01},\n"
      "  w0 = ms.randn{5}, steps = 10, iterations = 3, progress = false}\n"
      "lr = run.theta.lr";
  double alone[2] = {0, 0}, mixed[2] = {0, 0};
  for (int k = 0; k < 2; k++) {
    ms_lua *h = make(0, 0, 0, 0);
    if (!h) return;
    CHECK(ms_lua_set_number(h, "seed", 3 + k) == MS_OK);
    for (int r = 0; r < 4; r++) RUN_OK(h, step);
    CHECK(ms_lua_get_number(h, "lr", &alone[k]) == MS_OK);
    ms_lua_free(h);
  }
  ms_lua *a = make(0, 0, 0, 0), *b = make(0, 0, 0, 0);
  if (!a || !b) return;
  CHECK(ms_lua_set_number(a, "seed", 3) == MS_OK && ms_lua_set_number(b, "seed", 4) == MS_OK);
  for (int r = 0; r < 4; r++) {
    RUN_OK(a, step);
    RUN_OK(b, step);
  }
  CHECK(ms_lua_get_number(a, "lr", &mixed[0]) == MS_OK);
  CHECK(ms_lua_get_number(b, "lr", &mixed[1]) == MS_OK);
  CHECK(memcmp(alone, mixed, sizeof alone) == 0 && alone[0] != alone[1] && alone[0] != 0.01);
  ms_lua_free(a);
  ms_lua_free(b);
}

int main(void) {
  test_results_and_libs();
  test_memory();
  test_time_and_instructions();
  test_c_objective();
  test_two_states();
  return check_report();
}
