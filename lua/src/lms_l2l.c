/*
 * Lua bindings of the learning-to-learn layer: optimizers (metastep/optim.h), unrolls and
 * meta-gradients (metastep/meta.h) and meta-training (metastep/train.h).
 *
 * The front library (lua/metastep/optim.lua, meta.lua) checks options and names things; these
 * bindings translate its normalized tables into the engine's structs, run one engine call and
 * push the result. Lua functions (optimizer steps, schedules, meta-objectives, task samplers,
 * progress callbacks) become engine callbacks through call_lua, lms_callback of lms_aux.c: it
 * runs the function under lua_pcall with a traceback handler on the thread that entered the
 * engine, and turns an error into MS_ECALLBACK with the message and traceback.
 *
 * Ownership: every engine object a spec points to is retained for the duration of the call
 * (a finalizer or a callback may close its Lua box meanwhile) and released before an error is
 * raised; errors are raised as the last act.
 */
#include <math.h>
#include <string.h>

#include "lms.h"

#define LMS_OPTIM "metastep.Optim"
#define LMS_OBJECTIVE "metastep.Objective"

/* ---- calling Lua from engine callbacks ---- */

/* Calls the function under ref (lms_callback) with the arguments push(L, ud) pushes and
 * leaves nres results. A callback's error object is kept: the binding that entered the
 * engine raises it again unchanged (lms_error), while the engine's message, for C callers,
 * carries the traceback. */
static int call_lua(ms_ctx *ctx, lua_State *L, int ref, lms_pushfn push, void *ud, int nres) {
  int st = lms_callback(ctx, L, ref, push, ud, nres, LMS_CB_KEEP, NULL, NULL);
  /* Ctrl-C: the host's hook raised inside the callback; the engine's flag says so. Report an
   * interrupt (meta-training then returns its history) instead of the hook's error. */
  if (st != MS_OK && ms_ctx_check_interrupt(ctx, "callback") == MS_EINTERRUPT) {
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, LMS_CALLBACK_ERROR);
    st = MS_EINTERRUPT;
  }
  return st;
}

static void push_list(lua_State *L, int n, ms_tensor *const *ts) {
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lms_pushref(L, ts[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

/* The tensor at idx (retained into *out), or MS_ECALLBACK naming `what`. */
static int take_tensor(ms_ctx *ctx, lua_State *L, int idx, const char *what, ms_tensor **out) {
  ms_tensor *t = lms_testtensor(L, idx);
  if (t == NULL)
    return ms_ctx_fail(ctx, MS_ECALLBACK, "%s must return a tensor, got %s", what,
                       luaL_typename(L, idx));
  *out = ms_tensor_retain(t);
  return MS_OK;
}

/* ---- optimizers ---- */

typedef struct optbox {
  ms_optim *opt;
} optbox;

typedef struct lopt {
  lua_State *L0;
  int step, init, sched;
  int nstate, nparams;
  char name[32];
} lopt;

static ms_optim *checkoptim(lua_State *L, int arg) {
  optbox *b = luaL_checkudata(L, arg, LMS_OPTIM);
  if (b->opt == NULL) luaL_argerror(L, arg, "optimizer has been released");
  return b->opt;
}

static optbox *newoptbox(lua_State *L) {
  optbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->opt = NULL;
  luaL_setmetatable(L, LMS_OPTIM);
  return b;
}

static int optim_gc(lua_State *L) {
  optbox *b = luaL_checkudata(L, 1, LMS_OPTIM);
  ms_optim_release(b->opt);
  b->opt = NULL;
  return 0;
}

static double numfield(lua_State *L, int t, const char *k, double def) {
  lua_getfield(L, t, k);
  double v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
  lua_pop(L, 1);
  return v;
}

static int boolfield(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* optim_builtin(kind, {lr =, lr_init = tensor, log_lr =, beta =, beta1 =, beta2 =, eps =, rho =,
 *                      batch =, seed =}) */
static int l_optim_builtin(lua_State *L) {
  static const char *const kinds[] = {"gd", "sgd", "momentum", "nesterov", "rmsprop", "adam", NULL};
  lua_settop(L, 2);
  ms_optim_kind kind = (ms_optim_kind)(luaL_checkoption(L, 1, NULL, kinds) + 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  ms_optim_options o;
  memset(&o, 0, sizeof o);
  o.lr = numfield(L, 2, "lr", 0);
  o.log_lr = boolfield(L, 2, "log_lr");
  lua_getfield(L, 2, "beta");
  o.beta_set = !lua_isnil(L, -1);
  lua_pop(L, 1);
  o.beta = numfield(L, 2, "beta", 0.9);
  o.hyper_set = 1;
  o.beta1 = numfield(L, 2, "beta1", 0.9);
  o.beta2 = numfield(L, 2, "beta2", 0.999);
  o.eps = numfield(L, 2, "eps", 1e-8);
  o.rho = numfield(L, 2, "rho", 0.99);
  o.batch = (int64_t)numfield(L, 2, "batch", 1);
  o.seed = (uint64_t)(lua_Integer)numfield(L, 2, "seed", 0);
  lua_getfield(L, 2, "lr_init"); /* slot 3 keeps it alive */
  optbox *b = newoptbox(L);
  o.lr_init = lua_isnil(L, 3) ? NULL : lms_checktensor(L, 3);
  if (ms_optim_builtin(lms_ctx(L), kind, &o, &b->opt) != MS_OK) return lms_error(L);
  return 1;
}

static void lopt_free(void *ud) {
  lopt *lo = ud;
  luaL_unref(lo->L0, LUA_REGISTRYINDEX, lo->step);
  luaL_unref(lo->L0, LUA_REGISTRYINDEX, lo->init);
  luaL_unref(lo->L0, LUA_REGISTRYINDEX, lo->sched);
  ms_ctx_dealloc(lms_ctx(lo->L0), lo, sizeof *lo);
}

/* Reads a list of nstate tensors at idx into state[] (new references). */
static int take_state(ms_ctx *ctx, lua_State *L, int idx, const lopt *lo, const char *what,
                      ms_tensor **state) {
  if (!lua_istable(L, idx))
    return ms_ctx_fail(ctx, MS_ECALLBACK,
                       "optimizer '%s': %s must return the state as a table, got %s", lo->name,
                       what, luaL_typename(L, idx));
  int st = MS_OK;
  for (int i = 0; !st && i < lo->nstate; i++) {
    lua_rawgeti(L, idx, i + 1);
    st = take_tensor(ctx, L, -1, what, &state[i]);
    lua_pop(L, 1);
  }
  if (st)
    for (int i = 0; i < lo->nstate; i++) ms_tensor_release(state[i]), state[i] = NULL;
  return st;
}

typedef struct initargs {
  ms_tensor *w;
  ms_tensor *const *theta;
  int n;
} initargs;

static int push_init(lua_State *L, void *ud) {
  const initargs *a = ud;
  lms_pushref(L, a->w);
  push_list(L, a->n, a->theta);
  return 2;
}

static int lopt_init(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *const *theta,
                     ms_tensor **state) {
  lopt *lo = ud;
  lua_State *L = lms_running(ctx);
  /* init(w, theta_list) -> state_list */
  initargs a = {w, theta, lo->nparams};
  int st = call_lua(ctx, L, lo->init, push_init, &a, 1);
  if (st) return st;
  st = take_state(ctx, L, -1, lo, "init", state);
  lua_pop(L, 1);
  return st;
}

typedef struct stepargs {
  const ms_optim_io *io;
  const lopt *lo;
} stepargs;

static int push_step(lua_State *L, void *ud) {
  const stepargs *a = ud;
  const ms_optim_io *io = a->io;
  lua_pushinteger(L, io->t);
  lua_pushinteger(L, io->k);
  lua_pushnumber(L, io->factor);
  lms_pushref(L, io->w);
  lms_pushref(L, io->fw);
  lms_pushref(L, io->gw);
  push_list(L, a->lo->nparams, io->theta);
  push_list(L, a->lo->nstate, io->state);
  return 8;
}

static int lopt_step(ms_ctx *ctx, void *ud, const ms_optim_io *io, ms_tensor **w_next,
                     ms_tensor **state) {
  lopt *lo = ud;
  lua_State *L = lms_running(ctx);
  /* step(t, k, factor, w, fw, gw, theta_list, state_list) -> w', state_list' */
  stepargs a = {io, lo};
  int st = call_lua(ctx, L, lo->step, push_step, &a, 2);
  if (st) return st;
  st = take_tensor(ctx, L, -2, "the step", w_next);
  if (!st) st = take_state(ctx, L, -1, lo, "the step", state);
  if (st) ms_tensor_release(*w_next), *w_next = NULL;
  lua_pop(L, 2);
  return st;
}

/* optim_new{name =, params = {{name =, init = tensor, map = "plain"|"log", lo =, hi =}, ...},
 *           nstate =, init = f(w, theta_list) -> state_list, step = f(...)} */
static int l_optim_new(lua_State *L) {
  lua_settop(L, 1);
  luaL_checktype(L, 1, LUA_TTABLE);
  ms_ctx *ctx = lms_ctx(L);
  lua_getfield(L, 1, "params"); /* 2 */
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer nparams = luaL_len(L, 2); /* checked before narrowing: __len may say 2^32 + 1 */
  if (nparams < 0 || nparams > MS_OPTIM_MAXPARAMS)
    return luaL_error(L, "optim.new: at most %d meta-parameters, got %I", MS_OPTIM_MAXPARAMS,
                      nparams);
  int np = (int)nparams;
  lua_getfield(L, 1, "step"); /* 3 */
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_getfield(L, 1, "init"); /* 4 */
  luaL_checktype(L, 4, LUA_TFUNCTION);
  lua_getfield(L, 1, "name"); /* 5 */
  luaL_checkstack(L, 3 * np + 8, "optim.new: too many meta-parameters");
  int nstate = (int)numfield(L, 1, "nstate", 0);
  if (nstate < 0 || nstate > MS_OPTIM_MAXSTATE)
    return luaL_error(L, "optim.new: the state holds at most %d entries, got %d", MS_OPTIM_MAXSTATE,
                      nstate);
  for (int i = 1; i <= np; i++) lua_geti(L, 2, i); /* 6 .. 5+np: param tables, kept on the stack */
  for (int i = 1; i <= np; i++) lua_getfield(L, 5 + i, "init"); /* 6+np .. 5+2np */
  for (int i = 1; i <= np; i++) lua_getfield(L, 5 + i, "name");
  optbox *b = newoptbox(L);
  lopt *lo = ms_ctx_alloc(ctx, sizeof *lo);
  if (lo == NULL) return lms_error(L);
  memset(lo, 0, sizeof *lo);
  lo->L0 = lms_mainthread(L);
  lo->step = lo->init = lo->sched = LUA_NOREF;
  lo->nstate = nstate;
  lo->nparams = np;
  snprintf(lo->name, sizeof lo->name, "%s", lua_isstring(L, 5) ? lua_tostring(L, 5) : "custom");
  ms_optim_def def;
  memset(&def, 0, sizeof def);
  def.name = lo->name;
  def.nparams = np;
  def.nstate = nstate;
  def.init = lopt_init;
  def.step = lopt_step;
  def.free_ud = lopt_free;
  def.ud = lo;
  for (int i = 0; i < np; i++) {
    int pt = 6 + i;
    def.params[i].name = lua_tostring(L, 6 + 2 * np + i);
    def.params[i].init = lms_testtensor(L, 6 + np + i);
    lua_getfield(L, pt, "map");
    def.params[i].map = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "log") == 0
                            ? MS_PARAM_LOG
                            : MS_PARAM_PLAIN;
    lua_pop(L, 1);
    def.params[i].lo = numfield(L, pt, "lo", -INFINITY);
    def.params[i].hi = numfield(L, pt, "hi", INFINITY);
  }
  if (ms_optim_new(ctx, &def, &b->opt) != MS_OK) {
    ms_ctx_dealloc(ctx, lo, sizeof *lo);
    return lms_error(L);
  }
  /* references once the optimizer owns lo: an error now leaks nothing */
  lua_pushvalue(L, 3);
  lo->step = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 4);
  lo->init = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

typedef struct lsched {
  lua_State *L0;
  int ref;
} lsched;

/* Pushes the one or two integers of ud (an int64_t[2]; a second of 0 is not pushed). */
static int push_ints(lua_State *L, void *ud) {
  const int64_t *k = ud;
  lua_pushinteger(L, k[0]);
  if (k[1] == 0) return 1;
  lua_pushinteger(L, k[1]);
  return 2;
}

static int lsched_call(ms_ctx *ctx, void *ud, int64_t t, double *factor) {
  lsched *s = ud;
  lua_State *L = lms_running(ctx);
  int64_t args[2] = {t, 0};
  int st = call_lua(ctx, L, s->ref, push_ints, args, 1);
  if (st) return st;
  int isnum;
  *factor = lua_tonumberx(L, -1, &isnum);
  if (!isnum)
    st = ms_ctx_fail(ctx, MS_ECALLBACK, "schedule: the function must return a number, got %s",
                     luaL_typename(L, -1));
  lua_pop(L, 1);
  return st;
}

static void lsched_free(void *ud) {
  lsched *s = ud;
  luaL_unref(s->L0, LUA_REGISTRYINDEX, s->ref);
  ms_ctx_dealloc(lms_ctx(s->L0), s, sizeof *s);
}

/* opt:set_schedule(table of factors | function(t) -> factor) */
static int optim_set_schedule(lua_State *L) {
  lua_settop(L, 2);
  ms_ctx *ctx = lms_ctx(L);
  checkoptim(L, 1);
  if (lua_isfunction(L, 2)) {
    lsched *s = ms_ctx_alloc(ctx, sizeof *s);
    if (s == NULL) return lms_error(L);
    s->L0 = lms_mainthread(L);
    lua_pushvalue(L, 2);
    s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (ms_optim_set_schedule_fn(ctx, checkoptim(L, 1), lsched_call, s, lsched_free) != MS_OK) {
      lsched_free(s);
      return lms_error(L);
    }
    return 0;
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 2);
  if (n < 1) return luaL_argerror(L, 2, "a schedule needs at least one factor");
  double *f = lua_newuserdatauv(L, (size_t)n * sizeof *f, 0); /* scratch owned by Lua */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, 2, i);
    f[i - 1] = luaL_checknumber(L, -1);
    lua_pop(L, 1);
  }
  if (ms_optim_set_schedule(ctx, checkoptim(L, 1), (int64_t)n, f) != MS_OK) return lms_error(L);
  return 0;
}

/* t[k] = v for the table on top of the stack */
static void setnumber(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

static void setinteger(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

/* Fields results, trajectories and training records share: status and, after a failure,
 * fail_step. */
static void setstatus(lua_State *L, int status, int64_t fail_step) {
  lua_pushstring(L, ms_meta_status_name(status));
  lua_setfield(L, -2, "status");
  if (fail_step >= 0) setinteger(L, "fail_step", fail_step);
}

/* opt:params() -> {{name =, init = tensor, map =, lo =, hi =}, ...} */
static int optim_params(lua_State *L) {
  ms_optim *o = checkoptim(L, 1);
  int n = ms_optim_nparams(o);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    const ms_optim_param *p = ms_optim_param_at(o, i);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, p->name);
    lua_setfield(L, -2, "name");
    lms_pushref(L, p->init);
    lua_setfield(L, -2, "init");
    lua_pushstring(L, p->map == MS_PARAM_LOG ? "log" : "plain");
    lua_setfield(L, -2, "map");
    setnumber(L, "lo", p->lo);
    setnumber(L, "hi", p->hi);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int optim_name(lua_State *L) {
  lua_pushstring(L, ms_optim_name(checkoptim(L, 1)));
  return 1;
}

static int optim_tostring(lua_State *L) {
  optbox *b = luaL_checkudata(L, 1, LMS_OPTIM);
  if (b->opt == NULL)
    lua_pushliteral(L, "optimizer (released)");
  else
    lua_pushfstring(L, "optimizer %s", ms_optim_name(b->opt));
  return 1;
}

/* ---- specs ----
 * core.meta_run(what, spec [, task_index, keep_iterates]) with spec =
 *   {optimizer = Optim, tasks = {{objective =, valid =, w0 =, host =}, ...}, steps =,
 *    kind = "naive"|"log"|"sum"|"logsum"|"custom", on = "train"|"valid", fn = f(traj), name =,
 *    method = "reverse"|..., theta = {[i] = tensor}, select = {i, ...} (1-based),
 *    truncate =, checkpoint =, freeze_norm =, fd_step =, allow_zero_loss =}
 * The front library has checked the option names and types; values are checked by the engine.
 */

typedef struct lmeta {
  int fn;    /* registry reference of the Lua meta-objective */
  int tasks; /* registry reference of the spec's task list (for traj.task) */
  int nparams;
} lmeta;

/* Everything a spec points to, retained for the call. */
typedef struct cspec {
  ms_meta_spec s;
  ms_ctx *ctx;
  ms_task *tasks; /* ntalloc entries from the context's allocator */
  int ntalloc;
  ms_tensor *theta[MS_OPTIM_MAXPARAMS];
  int select[MS_OPTIM_MAXPARAMS];
  lmeta meta;
} cspec;

static void cspec_release(cspec *c) {
  for (int i = 0; c->tasks && i < c->s.ntasks; i++) {
    ms_objective_release(c->tasks[i].objective);
    ms_objective_release(c->tasks[i].valid);
    ms_tensor_release(c->tasks[i].w0);
  }
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) ms_tensor_release(c->theta[i]);
  ms_optim_release(c->s.optimizer);
  if (c->tasks) ms_ctx_dealloc(c->ctx, c->tasks, (size_t)c->ntalloc * sizeof *c->tasks);
  c->tasks = NULL;
  c->s.tasks = NULL;
  c->s.ntasks = 0;
  c->s.optimizer = NULL;
  memset(c->theta, 0, sizeof c->theta);
}

static ms_objective *testobjective(lua_State *L, int idx) {
  /* the Objective box's first field is the handle (lms_objective.c) */
  ms_objective **box = luaL_testudata(L, idx, LMS_OBJECTIVE);
  return box ? *box : NULL;
}

/* Integer field k of table t, def when absent. */
static int64_t intfield(lua_State *L, int t, const char *k, int64_t def) {
  lua_getfield(L, t, k);
  int64_t v = lua_isnil(L, -1) ? def : (int64_t)luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Traj -> Lua table for a Lua meta-objective. */
static void push_traj(lua_State *L, const lmeta *m, const ms_traj *traj) {
  lua_createtable(L, 0, 8);
  setinteger(L, "T", traj->T);
  lua_createtable(L, (int)traj->T, 1);
  for (int64_t t = 0; t <= traj->done; t++) {
    lms_pushref(L, traj->losses[t]);
    lua_rawseti(L, -2, t);
  }
  lua_setfield(L, -2, "losses");
  lms_pushref(L, traj->losses[0]);
  lua_setfield(L, -2, "loss0");
  lms_pushref(L, traj->w_T);
  lua_setfield(L, -2, "w_T");
  push_list(L, m->nparams, traj->theta);
  lua_setfield(L, -2, "theta_list");
  lua_pushstring(L, ms_meta_status_name(traj->status));
  lua_setfield(L, -2, "status");
}

typedef struct trajargs {
  const lmeta *m;
  const ms_traj *traj;
} trajargs;

static int push_trajarg(lua_State *L, void *ud) {
  const trajargs *a = ud;
  push_traj(L, a->m, a->traj);
  /* the task's host value: tasks are numbered by their host pointer (an integer index) */
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->m->tasks);
  lua_rawgeti(L, -1, (lua_Integer)(intptr_t)a->traj->task->host);
  lua_setfield(L, -3, "task");
  lua_pop(L, 1);
  return 1;
}

static int lmeta_call(ms_ctx *ctx, void *ud, const ms_traj *traj, ms_tensor **out) {
  lmeta *m = ud;
  lua_State *L = lms_running(ctx);
  *out = NULL;
  trajargs a = {m, traj};
  int st = call_lua(ctx, L, m->fn, push_trajarg, &a, 1);
  if (st) return st;
  st = take_tensor(ctx, L, -1, "the meta-objective", out);
  lua_pop(L, 1);
  return st;
}

/* Fills c from the spec table at idx. Raises on malformed input (nothing retained yet
 * is leaked: c is released by the caller's error path through cspec_release). */
static void read_spec(lua_State *L, int idx, cspec *c) {
  static const char *const kinds[] = {"naive", "log", "sum", "logsum", "custom", NULL};
  static const char *const ons[] = {"train", "valid", NULL};
  static const char *const methods[] = {"reverse", "forward", "stable", "exact", "fd", NULL};
  ms_meta_spec *s = &c->s;
  lua_getfield(L, idx, "optimizer");
  optbox *ob = luaL_testudata(L, -1, LMS_OPTIM);
  if (ob == NULL)
    luaL_error(L, "meta: 'optimizer' must be an optimizer, got %s", luaL_typename(L, -1));
  if (ob->opt == NULL) luaL_error(L, "meta: the optimizer has been released");
  s->optimizer = ms_optim_retain(ob->opt);
  lua_pop(L, 1);
  int np = ms_optim_nparams(s->optimizer);
  s->steps = intfield(L, idx, "steps", 0);
  lua_getfield(L, idx, "kind");
  s->meta.kind = (ms_meta_kind)luaL_checkoption(L, -1, "log", kinds);
  lua_getfield(L, idx, "on");
  s->meta.on = (ms_meta_on)luaL_checkoption(L, -1, "train", ons);
  lua_getfield(L, idx, "method");
  s->method = (ms_meta_method)luaL_checkoption(L, -1, "reverse", methods);
  lua_pop(L, 3);
  s->truncate = intfield(L, idx, "truncate", 0);
  s->checkpoint = intfield(L, idx, "checkpoint", 0);
  s->freeze_norm = numfield(L, idx, "freeze_norm", 0);
  s->fd_step = numfield(L, idx, "fd_step", 0);
  s->allow_zero_loss = boolfield(L, idx, "allow_zero_loss");
  lua_getfield(L, idx, "theta");
  if (lua_istable(L, -1)) {
    for (int i = 0; i < np; i++) {
      lua_geti(L, -1, i + 1);
      if (!lua_isnil(L, -1)) c->theta[i] = ms_tensor_retain(lms_checktensor(L, -1));
      lua_pop(L, 1);
    }
    s->theta = c->theta;
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "select");
  if (lua_istable(L, -1)) {
    lua_Integer nsel = luaL_len(L, -1);
    if (nsel < 0 || nsel > np)
      luaL_error(L, "meta: 'params' names %I parameters, the optimizer has %d", nsel, np);
    int n = (int)nsel;
    for (int i = 0; i < n; i++) {
      lua_geti(L, -1, i + 1);
      lua_Integer k = luaL_checkinteger(L, -1);
      if (k < 1 || k > np) /* checked here to name it as Lua numbers it (the engine's is 0-based) */
        luaL_error(L, "meta: 'select' entry %d is %I, expected 1..%d", i + 1, k, np);
      c->select[i] = (int)k - 1;
      lua_pop(L, 1);
    }
    s->nselect = n;
    s->select = c->select;
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "tasks");
  luaL_checktype(L, -1, LUA_TTABLE);
  lua_Integer ntasks = luaL_len(L, -1);
  if (ntasks < 0 || ntasks > INT_MAX / (lua_Integer)sizeof(ms_task))
    luaL_error(L, "meta: 'tasks' has %I entries", ntasks);
  int nt = (int)ntasks;
  c->ctx = lms_ctx(L);
  c->tasks = ms_ctx_alloc(c->ctx, (size_t)(nt > 0 ? nt : 1) * sizeof(ms_task));
  if (c->tasks == NULL) lms_error(L);
  c->ntalloc = nt > 0 ? nt : 1;
  memset(c->tasks, 0, (size_t)c->ntalloc * sizeof(ms_task));
  s->tasks = c->tasks;
  for (int i = 0; i < nt; i++) {
    lua_geti(L, -1, i + 1);
    int t = lua_gettop(L);
    lua_getfield(L, t, "objective");
    ms_objective *o = testobjective(L, -1);
    if (o == NULL && luaL_testudata(L, -1, LMS_OBJECTIVE))
      luaL_error(L, "meta: task %d: the objective has been released", i + 1);
    if (o == NULL)
      luaL_error(L, "meta: task %d: 'objective' must be an objective, got %s", i + 1,
                 luaL_typename(L, -1));
    lua_getfield(L, t, "valid");
    ms_objective *v = lua_isnil(L, -1) ? NULL : testobjective(L, -1);
    if (!lua_isnil(L, -1) && v == NULL)
      luaL_error(L, "meta: task %d: 'valid_objective' must be an objective", i + 1);
    lua_getfield(L, t, "w0");
    ms_tensor *w0 = lua_isnil(L, -1) ? NULL : lms_checktensor(L, -1);
    c->tasks[i].objective = ms_objective_retain(o);
    c->tasks[i].valid = ms_objective_retain(v);
    c->tasks[i].w0 = ms_tensor_retain(w0);
    c->tasks[i].host = (void *)(intptr_t)(i + 1);
    s->ntasks = i + 1;
    lua_settop(L, t - 1);
  }
  lua_pop(L, 1);
  c->meta.fn = c->meta.tasks = LUA_NOREF;
  c->meta.nparams = np;
  if (s->meta.kind == MS_META_CUSTOM) {
    lua_getfield(L, idx, "fn");
    luaL_checktype(L, -1, LUA_TFUNCTION);
    c->meta.fn = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, idx, "hosts");
    c->meta.tasks = luaL_ref(L, LUA_REGISTRYINDEX);
    s->meta.fn = lmeta_call;
    s->meta.ud = &c->meta;
    lua_getfield(L, idx, "name");
    s->meta.name = lua_tostring(L, -1); /* kept alive by the spec table */
    lua_pop(L, 1);
  }
}

static void cspec_unref(lua_State *L, cspec *c) {
  luaL_unref(L, LUA_REGISTRYINDEX, c->meta.fn);
  luaL_unref(L, LUA_REGISTRYINDEX, c->meta.tasks);
  c->meta.fn = c->meta.tasks = LUA_NOREF;
}

static void push_result(lua_State *L, const ms_meta_out *r) {
  lua_createtable(L, 0, 8);
  setnumber(L, "value", r->value);
  setnumber(L, "log_loss", r->log_loss);
  setstatus(L, r->status, r->fail_step);
  if (r->task >= 0) setinteger(L, "task", r->task + 1);
  lua_createtable(L, r->nparams, 0);
  lua_createtable(L, r->nparams, 0);
  for (int i = 0; i < r->nparams; i++) {
    lms_pushref(L, r->grad[i]);
    lua_rawseti(L, -3, i + 1);
    lua_pushnumber(L, r->log_abs_grad[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -3, "log_abs_grad");
  lua_setfield(L, -2, "grad");
}

static int cspec_gc(lua_State *L) {
  cspec *c = luaL_checkudata(L, 1, "metastep.Spec");
  cspec_unref(L, c);
  cspec_release(c);
  return 0;
}

/* A spec box, safe to collect at any point of read_spec (its finalizer releases what it holds). */
static cspec *newspec(lua_State *L) {
  cspec *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->meta.fn = c->meta.tasks = LUA_NOREF;
  luaL_setmetatable(L, "metastep.Spec");
  return c;
}

/* meta_value_and_grad(spec) -> result table */
static int l_meta_value_and_grad(lua_State *L) {
  lua_settop(L, 1);
  luaL_checktype(L, 1, LUA_TTABLE);
  cspec *c = newspec(L); /* 2 */
  read_spec(L, 1, c);
  lua_settop(L, 2);
  lms_entry e;
  lms_enter(L, &e);
  ms_meta_out r;
  int st = ms_meta_value_and_grad(e.ctx, &c->s, &r);
  lms_leave(&e);
  cspec_unref(L, c);
  cspec_release(c);
  if (st != MS_OK) return lms_error(L);
  push_result(L, &r);
  ms_meta_out_clear(&r);
  return lms_result(L, MS_OK, 1);
}

/* meta_value(spec) -> value, status */
static int l_meta_value(lua_State *L) {
  lua_settop(L, 1);
  luaL_checktype(L, 1, LUA_TTABLE);
  cspec *c = newspec(L);
  read_spec(L, 1, c);
  lua_settop(L, 2);
  lms_entry e;
  lms_enter(L, &e);
  double v;
  int status;
  int st = ms_meta_value(e.ctx, &c->s, &v, &status);
  lms_leave(&e);
  cspec_unref(L, c);
  cspec_release(c);
  if (st != MS_OK) return lms_error(L);
  lua_pushnumber(L, v);
  lua_pushstring(L, ms_meta_status_name(status));
  return 2;
}

/* meta_unroll(spec, task_index, keep_iterates) -> traj table */
/* Reads a run state {w =, state = {tensors}, t =} at idx into rs (borrowed: the table keeps
 * the tensors alive). */
static void read_run_state(lua_State *L, int idx, int nstate, ms_run_state *rs) {
  memset(rs, 0, sizeof *rs);
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_getfield(L, idx, "w");
  rs->w = lms_checktensor(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, idx, "t");
  rs->t = (int64_t)luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, idx, "state");
  luaL_checktype(L, -1, LUA_TTABLE);
  for (int i = 0; i < nstate && i < MS_OPTIM_MAXSTATE; i++) {
    lua_geti(L, -1, i + 1);
    rs->state[i] = lms_checktensor(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  rs->nstate = nstate;
}

/* Pushes a run state as {w =, state = {...}, t =}. */
static void push_run_state(lua_State *L, const ms_run_state *rs) {
  lua_createtable(L, 0, 3);
  lms_pushref(L, rs->w);
  lua_setfield(L, -2, "w");
  setinteger(L, "t", rs->t);
  lua_createtable(L, rs->nstate, 0);
  for (int i = 0; i < rs->nstate; i++) {
    lms_pushref(L, rs->state[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "state");
}

/* meta_unroll(spec, k, keep_iterates, start) -> trajectory; start (optional): a run state
 * {w, state, t} (a trajectory's `stop`) that task k's run continues from. The trajectory's
 * `stop` is where the run stopped. */
static int l_meta_unroll(lua_State *L) {
  lua_settop(L, 4);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer k = luaL_optinteger(L, 2, 1);
  int keep = lua_toboolean(L, 3);
  cspec *c = newspec(L); /* 5 */
  read_spec(L, 1, c);
  lua_settop(L, 5);
  if (k < 1 || k > c->s.ntasks) {
    cspec_unref(L, c);
    cspec_release(c);
    return luaL_argerror(L, 2, "task index out of range");
  }
  /* one entry per task (the engine finds a task's entry by its position); only k's is set */
  size_t bytes = (size_t)c->s.ntasks * sizeof(ms_run_state);
  ms_run_state *start = lua_newuserdatauv(L, bytes, 0); /* 6 */
  ms_run_state *stop = lua_newuserdatauv(L, bytes, 0);  /* 7 */
  memset(start, 0, bytes);
  memset(stop, 0, bytes);
  if (!lua_isnil(L, 4)) {
    read_run_state(L, 4, ms_optim_nstate(c->s.optimizer), &start[k - 1]);
    c->s.start = start;
  }
  c->s.stop = stop;
  lms_entry e;
  lms_enter(L, &e);
  ms_traj traj;
  int st = ms_meta_unroll(e.ctx, &c->s, &c->tasks[k - 1], keep, &traj);
  lms_leave(&e);
  if (st != MS_OK) {
    ms_run_state_clear(&stop[k - 1]);
    cspec_unref(L, c);
    cspec_release(c);
    return lms_error(L);
  }
  lua_createtable(L, 0, 8);
  setinteger(L, "T", traj.T);
  lua_createtable(L, (int)traj.done, 0);
  for (int64_t t = 1; t <= traj.done; t++) {
    lms_pushref(L, traj.losses[t]);
    lua_rawseti(L, -2, t);
  }
  lua_setfield(L, -2, "losses");
  lms_pushref(L, traj.losses[0]);
  lua_setfield(L, -2, "loss0");
  lms_pushref(L, traj.w_T);
  lua_setfield(L, -2, "w_T");
  if (traj.w) {
    lua_createtable(L, (int)traj.done, 1);
    for (int64_t t = 0; t <= traj.done; t++) {
      lms_pushref(L, traj.w[t]);
      lua_rawseti(L, -2, t);
    }
    lua_setfield(L, -2, "w");
  }
  setstatus(L, traj.status, traj.fail_step);
  push_run_state(L, &stop[k - 1]);
  lua_setfield(L, -2, "stop");
  ms_run_state_clear(&stop[k - 1]);
  ms_traj_clear(e.ctx, &traj);
  cspec_unref(L, c);
  cspec_release(c);
  return lms_result(L, MS_OK, 1);
}

/* ---- meta-training ----
 * meta_train(spec, opts) with opts = {iterations =, meta_lr =, schedule = "inv_sqrt"|"constant"
 * | f(k), meta_optimizer = "gd"|"adam"|"rmsprop", clip =, on_failure = "skip"|"zero"|"error",
 * bounds = {[i] = {lo, hi}}, sample = f(k, i) -> task table, batch =, callback = f(rec, theta_list)
 * -> true to stop, checkpoint = "file", every =, resume = "file", save_state = f() -> value
 * (stored under "host/"), load_state = f(value, k)}. Returns {theta =, best_theta =,
 * best_value =, best_k =, stopped =, history = {{k, value, status, fail_step, updated, lr,
 * theta = {...}, grad = {...}}}}. */

typedef struct ltrain {
  int sched, sample, callback; /* registry references or LUA_NOREF */
  int save_state, load_state;  /* checkpoints: the front's functions, or LUA_NOREF */
  int save_k, load_k;          /* host_save / host_load below, when those are set */
  int hosts;                   /* the spec's task table list (borrowed reference) */
  int nparams;
} ltrain;

static int lt_schedule(ms_ctx *ctx, void *ud, int64_t k, double *factor) {
  ltrain *t = ud;
  lua_State *L = lms_running(ctx);
  int64_t args[2] = {k, 0};
  int st = call_lua(ctx, L, t->sched, push_ints, args, 1);
  if (st) return st;
  int isnum;
  *factor = lua_tonumberx(L, -1, &isnum);
  lua_pop(L, 1);
  if (!isnum)
    return ms_ctx_fail(ctx, MS_ECALLBACK, "meta.train: the schedule must return a number");
  return MS_OK;
}

static int lt_sample(ms_ctx *ctx, void *ud, int64_t k, int i, ms_task *task) {
  ltrain *t = ud;
  lua_State *L = lms_running(ctx);
  memset(task, 0, sizeof *task);
  int64_t args[2] = {k, i + 1};
  int st = call_lua(ctx, L, t->sample, push_ints, args, 1);
  if (st) return st;
  int top = lua_gettop(L);
  if (!lua_istable(L, top)) {
    st = ms_ctx_fail(ctx, MS_ECALLBACK, "meta.train: the sampler must return a task table, got %s",
                     luaL_typename(L, top));
  } else {
    /* raw reads: a metamethod raising here would jump over the engine's frames (the front
     * library hands over a plain copy of the task) */
    lua_pushliteral(L, "objective");
    lua_rawget(L, top);
    lua_pushliteral(L, "valid_objective");
    lua_rawget(L, top);
    lua_pushliteral(L, "w0");
    lua_rawget(L, top);
    ms_objective *o = testobjective(L, top + 1),
                 *v = lua_isnil(L, top + 2) ? NULL : testobjective(L, top + 2);
    ms_tensor *w0 = lua_isnil(L, top + 3) ? NULL : lms_testtensor(L, top + 3);
    if (o == NULL)
      st = ms_ctx_fail(ctx, MS_ECALLBACK, "meta.train: the sampler's task has no objective");
    else if (!lua_isnil(L, top + 2) && v == NULL)
      st = ms_ctx_fail(ctx, MS_ECALLBACK,
                       "meta.train: the task's valid_objective is not an objective");
    else if (!lua_isnil(L, top + 3) && w0 == NULL)
      st = ms_ctx_fail(ctx, MS_ECALLBACK, "meta.train: the task's w0 is not a tensor");
    if (!st) {
      task->objective = ms_objective_retain(o);
      task->valid = ms_objective_retain(v);
      task->w0 = ms_tensor_retain(w0);
      /* a custom meta-objective sees the task table as traj.task: slot i of the batch */
      if (t->hosts != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->hosts);
        lua_pushvalue(L, top);
        lua_rawseti(L, -2, i + 1);
        lua_pop(L, 1);
        task->host = (void *)(intptr_t)(i + 1);
      }
    }
  }
  lua_settop(L, top - 1);
  return st;
}

static void lt_release(ms_ctx *ctx, void *ud, ms_task *task) {
  (void)ctx;
  (void)ud;
  ms_objective_release(task->objective);
  ms_objective_release(task->valid);
  ms_tensor_release(task->w0);
  memset(task, 0, sizeof *task);
}

static void push_record(lua_State *L, const ms_train_record *r, int np) {
  lua_createtable(L, 0, 8);
  setinteger(L, "k", r->k);
  setnumber(L, "value", r->value);
  setstatus(L, r->status, r->fail_step);
  lua_pushboolean(L, r->updated);
  lua_setfield(L, -2, "updated");
  setnumber(L, "lr", r->lr);
  push_list(L, np, r->theta);
  lua_setfield(L, -2, "theta");
  push_list(L, np, r->grad);
  lua_setfield(L, -2, "grad");
}

typedef struct recargs {
  const ms_train_record *rec;
  ms_tensor *const *theta;
  int n;
} recargs;

static int push_rec(lua_State *L, void *ud) {
  const recargs *a = ud;
  push_record(L, a->rec, a->n);
  push_list(L, a->n, a->theta);
  return 2;
}

static int lt_callback(ms_ctx *ctx, void *ud, const ms_train_record *rec, ms_tensor *const *theta) {
  ltrain *t = ud;
  lua_State *L = lms_running(ctx);
  recargs a = {rec, theta, t->nparams};
  int st = call_lua(ctx, L, t->callback, push_rec, &a, 1);
  if (st) return st;
  int stop = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return stop ? 1 : 0;
}

/* Checkpoints: the front library's save_state() -> value is stored under "host/" of the
 * checkpoint, and load_state(value, k) gets it back on resume. Both run inside one protected
 * call (lms_callback) with the encoding or decoding, which may raise. */
typedef struct hostargs {
  int fn;
  void *a;
  int64_t k;
} hostargs;

static int push_host(lua_State *L, void *ud) {
  const hostargs *h = ud;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->fn);
  lua_pushlightuserdata(L, h->a);
  lua_pushinteger(L, h->k);
  return 3;
}

/* host_save(save_state, archive) */
static int host_save(lua_State *L) {
  lua_settop(L, 2);
  ms_archive *a = lua_touserdata(L, 2);
  lua_pushvalue(L, 1);
  lua_call(L, 0, 1);
  lms_archive_encode(L, 3, a, "host", "meta.train: checkpoint");
  return 0;
}

/* host_load(load_state, archive, k) */
static int host_load(lua_State *L) {
  lua_settop(L, 3);
  const ms_archive *a = lua_touserdata(L, 2);
  lua_pushvalue(L, 1);
  lms_archive_decode(L, a, "host", "meta.train: resume");
  lua_pushvalue(L, 3);
  lua_call(L, 2, 0);
  return 0;
}

static int lt_save_state(ms_ctx *ctx, void *ud, ms_archive *a) {
  ltrain *t = ud;
  hostargs h = {t->save_state, a, 0};
  return call_lua(ctx, lms_running(ctx), t->save_k, push_host, &h, 0);
}

static int lt_load_state(ms_ctx *ctx, void *ud, const ms_archive *a, int64_t k) {
  ltrain *t = ud;
  hostargs h = {t->load_state, (void *)a, k};
  return call_lua(ctx, lms_running(ctx), t->load_k, push_host, &h, 0);
}

static int funcref(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return LUA_NOREF;
  }
  luaL_checktype(L, -1, LUA_TFUNCTION);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

typedef struct trainbox {
  ltrain t;
  ms_train_result res;
  ms_ctx *ctx;
  int has_res;
} trainbox;

static int trainbox_gc(lua_State *L) {
  trainbox *b = luaL_checkudata(L, 1, "metastep.TrainRun");
  luaL_unref(L, LUA_REGISTRYINDEX, b->t.sched);
  luaL_unref(L, LUA_REGISTRYINDEX, b->t.sample);
  luaL_unref(L, LUA_REGISTRYINDEX, b->t.callback);
  b->t.sched = b->t.sample = b->t.callback = LUA_NOREF;
  luaL_unref(L, LUA_REGISTRYINDEX, b->t.save_state);
  luaL_unref(L, LUA_REGISTRYINDEX, b->t.load_state);
  luaL_unref(L, LUA_REGISTRYINDEX, b->t.save_k);
  luaL_unref(L, LUA_REGISTRYINDEX, b->t.load_k);
  b->t.save_state = b->t.load_state = b->t.save_k = b->t.load_k = LUA_NOREF;
  if (b->has_res) ms_train_result_clear(b->ctx, &b->res);
  b->has_res = 0;
  return 0;
}

static int l_meta_train(lua_State *L) {
  static const char *const scheds[] = {"inv_sqrt", "constant", NULL};
  static const char *const metaopts[] = {"gd", "adam", "rmsprop", NULL};
  static const char *const failures[] = {"skip", "zero", "error", NULL};
  static const char *const stops[] = {"done", "callback", "interrupt", "error"};
  lua_settop(L, 2);
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  cspec *c = newspec(L); /* 3 */
  read_spec(L, 1, c);
  trainbox *b = lua_newuserdatauv(L, sizeof *b, 0); /* 4 */
  memset(b, 0, sizeof *b);
  b->t.sched = b->t.sample = b->t.callback = LUA_NOREF;
  b->t.save_state = b->t.load_state = b->t.save_k = b->t.load_k = LUA_NOREF;
  b->ctx = lms_ctx(L);
  luaL_setmetatable(L, "metastep.TrainRun");
  ms_train_options o;
  memset(&o, 0, sizeof o);
  o.iterations = intfield(L, 2, "iterations", 100);
  o.meta_lr = numfield(L, 2, "meta_lr", 0.01);
  lua_getfield(L, 2, "schedule");
  if (lua_isfunction(L, -1)) {
    b->t.sched = luaL_ref(L, LUA_REGISTRYINDEX);
    o.schedule_fn = lt_schedule;
  } else {
    o.schedule = (ms_train_schedule)luaL_checkoption(L, -1, "inv_sqrt", scheds);
    lua_pop(L, 1);
  }
  lua_getfield(L, 2, "meta_optimizer");
  o.meta_optimizer = (ms_train_metaopt)luaL_checkoption(L, -1, "gd", metaopts);
  lua_getfield(L, 2, "on_failure");
  o.on_failure = (ms_train_failure)luaL_checkoption(L, -1, "skip", failures);
  lua_pop(L, 2);
  o.clip = numfield(L, 2, "clip", 0);
  o.batch = (int)intfield(L, 2, "batch", 1);
  lua_getfield(L, 2, "bounds");
  if (lua_istable(L, -1)) {
    for (int i = 0; i < c->meta.nparams; i++) {
      if (lua_geti(L, -1, i + 1) == LUA_TTABLE) {
        o.has_bounds[i] = 1;
        lua_geti(L, -1, 1);
        lua_geti(L, -2, 2);
        o.lo[i] = luaL_checknumber(L, -2);
        o.hi[i] = luaL_checknumber(L, -1);
        lua_pop(L, 2);
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  b->t.nparams = c->meta.nparams;
  b->t.hosts = c->meta.tasks;
  b->t.sample = funcref(L, 2, "sample");
  b->t.callback = funcref(L, 2, "callback");
  if (b->t.sample != LUA_NOREF) {
    o.sample = lt_sample;
    o.release_task = lt_release;
  }
  if (b->t.callback != LUA_NOREF) o.callback = lt_callback;
  /* checkpoints: the paths stay alive in the options table (argument 2) */
  lua_getfield(L, 2, "checkpoint");
  o.checkpoint = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
  lua_getfield(L, 2, "resume");
  o.resume = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
  lua_pop(L, 2);
  o.every = intfield(L, 2, "every", 0);
  o.segments = intfield(L, 2, "segments", 0);
  b->t.save_state = funcref(L, 2, "save_state");
  b->t.load_state = funcref(L, 2, "load_state");
  if (b->t.save_state != LUA_NOREF) {
    lua_pushcfunction(L, host_save);
    b->t.save_k = luaL_ref(L, LUA_REGISTRYINDEX);
    o.save_state = lt_save_state;
  }
  if (b->t.load_state != LUA_NOREF) {
    lua_pushcfunction(L, host_load);
    b->t.load_k = luaL_ref(L, LUA_REGISTRYINDEX);
    o.load_state = lt_load_state;
  }
  o.ud = &b->t;
  o.keep_history = 1;
  lms_entry e;
  lms_enter(L, &e);
  int st = ms_meta_train(e.ctx, &c->s, &o, &b->res);
  lms_leave(&e);
  b->has_res = 1;
  cspec_unref(L, c);
  cspec_release(c);
  if (st != MS_OK && st != MS_EINTERRUPT) {
    ms_train_result_clear(b->ctx, &b->res);
    b->has_res = 0;
    return lms_error(L);
  }
  int np = b->res.nparams;
  lua_createtable(L, 0, 8);
  push_list(L, np, b->res.theta);
  lua_setfield(L, -2, "theta");
  push_list(L, np, b->res.best_theta);
  lua_setfield(L, -2, "best_theta");
  setnumber(L, "best_value", b->res.best_value);
  setinteger(L, "best_k", b->res.best_k);
  lua_pushstring(L, stops[b->res.stopped]);
  lua_setfield(L, -2, "stopped");
  if (st == MS_EINTERRUPT) {
    lua_pushstring(L, ms_ctx_error(e.ctx));
    lua_setfield(L, -2, "error");
    ms_ctx_clear_error(e.ctx);
  }
  lua_createtable(L, (int)b->res.n, 0);
  for (int64_t i = 0; b->res.history && i < b->res.n; i++) {
    push_record(L, &b->res.history[i], np);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "history");
  ms_train_result_clear(b->ctx, &b->res);
  b->has_res = 0;
  /* kept until taken: a Ctrl-C hook that fires as this function returns must not lose it */
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "metastep.train_last");
  return lms_result(L, MS_OK, 1);
}

/* meta_train_last() -> the last result of meta_train (once), or nil */
static int l_meta_train_last(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "metastep.train_last");
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "metastep.train_last");
  return 1;
}

static const luaL_Reg optim_methods[] = {{"set_schedule", optim_set_schedule},
                                         {"params", optim_params},
                                         {"name", optim_name},
                                         {NULL, NULL}};

static const luaL_Reg functions[] = {{"optim_builtin", l_optim_builtin},
                                     {"optim_new", l_optim_new},
                                     {"meta_value_and_grad", l_meta_value_and_grad},
                                     {"meta_value", l_meta_value},
                                     {"meta_unroll", l_meta_unroll},
                                     {"meta_train", l_meta_train},
                                     {"meta_train_last", l_meta_train_last},
                                     {NULL, NULL}};

static const luaL_Reg optim_meta[] = {
    {"__gc", optim_gc}, {"__close", optim_gc}, {"__tostring", optim_tostring}, {NULL, NULL}};

void lms_open_l2l(lua_State *L) {
  luaL_newmetatable(L, "metastep.TrainRun");
  lua_pushcfunction(L, trainbox_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, "metastep.Spec");
  lua_pushcfunction(L, cspec_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, LMS_OPTIM);
  luaL_newlib(L, optim_methods);
  lua_setfield(L, -2, "__index");
  luaL_setfuncs(L, optim_meta, 0);
  lua_pop(L, 1);
  luaL_setfuncs(L, functions, 0);
}

ms_optim *lms_checkoptim(lua_State *L, int arg) { return checkoptim(L, arg); }
ms_optim **lms_newoptim(lua_State *L) { return &newoptbox(L)->opt; }
