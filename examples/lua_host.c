/*
 * A C host running a metastep Lua script in a sandbox (metastep_lua.h): the script sees an
 * objective the host wrote in C, tunes a step size on it and hands the result back; a runaway
 * script is stopped by the time budget and the state serves the next script.
 *
 * Build: cc lua_host.c $(pkg-config --cflags --libs metastep-lua), or CMake's
 * metastep::metastep_lua. Exits nonzero on any unexpected result.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "metastep_lua.h"

/* f(w) = 1/2 sum_i (i + 1) w_i^2 in plain C */
static int value(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  (void)ud;
  const double *x = ms_tensor_data(w);
  double s = 0;
  for (int i = 0; i < 4; i++) s += 0.5 * (i + 1) * x[i] * x[i];
  return ms_tensor_scalar(ctx, s, out);
}

static int grad(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  (void)ud;
  const double *x = ms_tensor_data(w);
  double g[4];
  int64_t d = 4;
  for (int i = 0; i < 4; i++) g[i] = (i + 1) * x[i];
  return ms_tensor_from_data(ctx, 1, &d, g, out);
}

static int hvp(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *v, ms_tensor **out) {
  (void)w;
  return grad(ctx, ud, v, out); /* H = diag(1, 2, 3, 4) */
}

static const char *const SCRIPT =
    "local run = ms.meta.train{objective = hostobj, optimizer = ms.optim.gd{lr = 0.05},\n"
    "  w0 = ms.ones(4), steps = 20, meta = 'log', iterations = 200, meta_lr = 0.01,\n"
    "  progress = false}\n"
    "lr = run.theta.lr\n";

int main(void) {
  ms_lua_options o;
  memset(&o, 0, sizeof o);
  o.memory_limit = (size_t)64 << 20;
  o.time_limit = 2.0;
  o.sandbox = 1;
  ms_lua *h = NULL;
  char err[256];
  if (ms_lua_new(&o, &h, err, sizeof err) != MS_OK) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  ms_ctx *ctx = ms_lua_ctx(h);
  ms_objective_def def;
  memset(&def, 0, sizeof def);
  def.name = "hostobj";
  def.dim = 4;
  def.value = value;
  def.grad = grad;
  def.hvp = hvp;
  ms_objective *obj = NULL;
  int fail = ms_objective_new_raw(ctx, &def, &obj) || ms_lua_set_objective(h, "hostobj", obj);
  ms_objective_release(obj); /* the script's global keeps it */
  double lr = NAN;
  if (!fail && (ms_lua_run_string(h, SCRIPT, "=tune") || ms_lua_get_number(h, "lr", &lr))) fail = 1;
  printf("tuned lr: %.5f (from 0.05)%s%s\n", lr, fail ? ": " : "", fail ? ms_lua_error(h) : "");
  /* GD on diag(1..4) contracts fastest near lr = 2 / (1 + 4) = 0.4 */
  if (!(lr > 0.05 && lr < 0.5)) fail = 1;
  int st = ms_lua_run_string(h, "while true do end", "=runaway");
  printf("runaway script: %s (%s)\n", ms_status_name(st), ms_lua_error(h));
  if (st != MS_EINTERRUPT) fail = 1;
  if (ms_lua_run_string(h, "x = ms.ones(3):sum():item()", "=next") != MS_OK) fail = 1;
  ms_lua_free(h);
  return fail;
}
