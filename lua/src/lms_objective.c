/*
 * Lua bindings of the engine's objectives (metastep/objective.h): the Objective userdata,
 * THE objective type of the Lua API (ms.objective.* return it), with :value(w), :grad(w),
 * :hvp(w, v), :dim(), :name(), :parts(), :minibatch(idx), :grad_batch(w, idx), :eigh(),
 * :check_psd([what]); the built-in constructors; and objectives whose callbacks are Lua
 * functions.
 *
 * Fields: obj.kind ("quadratic", "least_squares", "logistic", or "function" for any other
 * objective), obj.H, obj.wstar, obj.fstar (quadratic), obj.X, obj.y, obj.n, obj.l2 (least
 * squares: X, y, n; logistic: X, y, n, l2; obj.n is also set for any objective with
 * samples) are read-only and derived from the C objective; the tensors are copies made on
 * first access and kept (writing to them does not change the objective). Any other field
 * can be set and read back: it lives in the userdata's user value (a table). Setting a
 * method or a built-in field name is an error. The metatable is private: getmetatable(obj)
 * returns core.Objective_mt, a table with __index = core.Objective (the methods table, to
 * which Lua code can add methods), __close, __gc and __tostring.
 *
 * A Lua-callback objective is an engine objective whose C callbacks are trampolines: they
 * push the point as a tensor, run the Lua function through lua_pcall with a traceback
 * handler, and hand the returned tensor back to the engine, which checks its shape. A
 * missing grad (or hvp) is derived by the engine with a tape (or a forward level) around
 * the Lua function; inside it the function's tensor operations are recorded as usual.
 *
 * Rules kept (see lms_tensor.c): result boxes are created before the engine allocates;
 * raw pointers are fetched from their boxes after the last Lua allocation; and since a
 * callback may run any Lua code (even close the objective or the point it was given),
 * the objective and the tensors are retained for the duration of each engine call and
 * released before an error is raised. Inside a custom primitive's forward or jvp rule, where
 * the engine hides its levels (see lms_autodiff.c), a grad or hvp the engine would derive by
 * pushing a level of its own is refused.
 */
#include <stdio.h>
#include <string.h>

#include "lms.h"
#include "metastep/objective.h"

#define LMS_OBJECTIVE "metastep.Objective"

typedef struct lobj {
  ms_ctx *ctx;           /* the lobj is allocated in this context (counted in its bytes) */
  int value, grad, hvp;  /* registry references (LUA_NOREF when absent or released) */
  int has_grad, has_hvp; /* given at construction (else the engine derives them with levels) */
  /* propagate_errors: an error raised by a callback is kept as it is (lms_error raises it
   * again) and becomes the context's message without the objective's name or a traceback */
  int raw;
  char name[64];
} lobj;

typedef struct objbox {
  ms_objective *obj;
  lobj *lo; /* Lua-callback objectives only; owned by obj (free_ud) */
} objbox;

/* ---- the userdata ---- */

static objbox *checkbox(lua_State *L, int arg) {
  objbox *b = luaL_checkudata(L, arg, LMS_OBJECTIVE);
  if (b->obj == NULL) luaL_argerror(L, arg, "objective has been released");
  return b;
}

/* An empty box, safe to collect before it owns anything; one user value (the table of
 * extra fields, created on first use). */
static objbox *newbox(lua_State *L) {
  objbox *b = lua_newuserdatauv(L, sizeof *b, 1);
  b->obj = NULL;
  b->lo = NULL;
  luaL_setmetatable(L, LMS_OBJECTIVE);
  return b;
}

void lms_pushobjective(lua_State *L, ms_objective *obj) {
  if (luaL_getmetatable(L, LMS_OBJECTIVE) != LUA_TTABLE)
    luaL_error(L, "metastep is not loaded in this state (require \"metastep\" first)");
  lua_pop(L, 1);
  objbox *b = newbox(L);
  b->obj = ms_objective_retain(obj);
}

static int obj_gc(lua_State *L) {
  objbox *b = luaL_checkudata(L, 1, LMS_OBJECTIVE);
  if (b->obj) {
    if (b->lo) {
      /* Drop the Lua references now, while the registry exists; an engine call still
       * holding the objective then gets a clear "released" error from the trampolines. */
      luaL_unref(L, LUA_REGISTRYINDEX, b->lo->value);
      luaL_unref(L, LUA_REGISTRYINDEX, b->lo->grad);
      luaL_unref(L, LUA_REGISTRYINDEX, b->lo->hvp);
      b->lo->value = b->lo->grad = b->lo->hvp = LUA_NOREF;
    }
    ms_objective *o = b->obj;
    b->obj = NULL;
    b->lo = NULL;
    ms_objective_release(o);
  }
  return 0;
}

/* obj:value(w), obj:grad(w), obj:hvp(w, v) */
enum { CALL_VALUE, CALL_GRAD, CALL_HVP };

static int run(lua_State *L, int which) {
  lua_settop(L, which == CALL_HVP ? 3 : 2);
  ms_tensor **res = lms_newbox(L);
  ms_ctx *ctx = lms_ctx(L);
  objbox *b = checkbox(L, 1);
  ms_objective *o = b->obj;
  ms_tensor *w = lms_checktensor(L, 2);
  ms_tensor *v = which == CALL_HVP ? lms_checktensor(L, 3) : NULL;
  if (b->lo != NULL && lms_ad_hiding(L) &&
      ((which == CALL_GRAD && !b->lo->has_grad) || (which == CALL_HVP && !b->lo->has_hvp)))
    return luaL_error(L,
                      "%s: objective '%s' has no %s callback, and deriving it is not allowed "
                      "inside the forward or jvp rule of a custom primitive applied while "
                      "levels are active",
                      which == CALL_GRAD ? "grad" : "hvp", b->lo->name,
                      which == CALL_GRAD ? "grad" : "hvp");
  lms_entry e;
  lms_enter(L, &e);          /* callbacks run on this thread */
  lms_hold_objective(&e, o); /* keeps lo alive too (freed with o) */
  lms_hold_tensor(&e, w);
  lms_hold_tensor(&e, v);
  int st;
  if (which == CALL_VALUE)
    st = ms_objective_value(ctx, o, w, res);
  else if (which == CALL_GRAD)
    st = ms_objective_grad(ctx, o, w, res);
  else
    st = ms_objective_hvp(ctx, o, w, v, res);
  lms_leave(&e);
  return lms_result(L, st, 1);
}

static int obj_value(lua_State *L) { return run(L, CALL_VALUE); }
static int obj_grad(lua_State *L) { return run(L, CALL_GRAD); }
static int obj_hvp(lua_State *L) { return run(L, CALL_HVP); }

static int obj_dim(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ms_objective_dim(checkbox(L, 1)->obj));
  return 1;
}

static int obj_name(lua_State *L) {
  lua_pushstring(L, ms_objective_name(checkbox(L, 1)->obj));
  return 1;
}

/* obj:parts() -> H, wstar (or nil), fstar: copies, so writing to them cannot break the
 * objective (whose H was checked symmetric). */
static int obj_parts(lua_State *L) {
  lua_settop(L, 1);
  ms_tensor **hb = lms_newbox(L);
  ms_tensor **wb = lms_newbox(L);
  ms_objective *o = checkbox(L, 1)->obj;
  ms_ctx *ctx = lms_ctx(L);
  ms_tensor *H = NULL, *ws = NULL;
  double fstar = 0;
  if (ms_objective_quadratic_parts(o, &H, &ws, &fstar) != MS_OK) return lms_error(L);
  if (ms_tensor_copy(ctx, H, hb) != MS_OK) return lms_error(L);
  if (ws == NULL) {
    lua_pushnil(L);
    lua_replace(L, 3);
  } else if (ms_tensor_copy(ctx, ws, wb) != MS_OK) {
    return lms_error(L);
  }
  lua_pushnumber(L, fstar);
  return lms_result(L, MS_OK, 3);
}

static int obj_tostring(lua_State *L) {
  objbox *b = luaL_checkudata(L, 1, LMS_OBJECTIVE);
  if (b->obj == NULL) {
    lua_pushliteral(L, "Objective (released)");
  } else {
    lua_pushfstring(L, "Objective(%s, dim %I)", ms_objective_name(b->obj),
                    (lua_Integer)ms_objective_dim(b->obj));
  }
  return 1;
}

/* ---- built-in constructors ---- */

/* Field `name` of the options table at arg: a live tensor, or nil (pushed either way). */
static void checkfieldtensor(lua_State *L, int arg, const char *name) {
  lua_getfield(L, arg, name);
  if (lua_isnil(L, -1)) return;
  ms_tensor **box = luaL_testudata(L, -1, LMS_TENSOR);
  if (box == NULL)
    luaL_argerror(
        L, arg,
        lua_pushfstring(L, "field '%s' must be a tensor, got %s", name, luaL_typename(L, -1)));
  if (*box == NULL)
    luaL_argerror(L, arg, lua_pushfstring(L, "field '%s': tensor has been released", name));
}

/* objective_quadratic(H [, {wstar =, fstar =}]) */
static int l_quadratic(lua_State *L) {
  lua_settop(L, 2);
  double fstar = 0;
  if (lua_isnil(L, 2)) {
    lua_pushnil(L); /* 3: wstar */
  } else {
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const known[] = {"wstar", "fstar", NULL};
    lms_checkoptions(L, 2, known);
    checkfieldtensor(L, 2, "wstar"); /* 3 */
    int t = lua_getfield(L, 2, "fstar");
    if (t != LUA_TNIL && t != LUA_TNUMBER)
      return luaL_argerror(
          L, 2, lua_pushfstring(L, "field 'fstar' must be a number, got %s", luaL_typename(L, -1)));
    fstar = t == LUA_TNIL ? 0.0 : lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  objbox *b = newbox(L);
  ms_tensor *H = lms_checktensor(L, 1);
  ms_tensor *ws = lua_isnil(L, 3) ? NULL : lms_testtensor(L, 3);
  if (!lua_isnil(L, 3) && ws == NULL) /* released by a finalizer since the check */
    return luaL_argerror(L, 2, "field 'wstar': tensor has been released");
  return lms_result(L, ms_objective_quadratic(lms_ctx(L), H, ws, fstar, &b->obj), 1);
}

/* objective_least_squares(X, y) */
static int l_least_squares(lua_State *L) {
  lua_settop(L, 2);
  objbox *b = newbox(L);
  ms_tensor *X = lms_checktensor(L, 1);
  ms_tensor *y = lms_checktensor(L, 2);
  return lms_result(L, ms_objective_least_squares(lms_ctx(L), X, y, &b->obj), 1);
}

/* objective_logistic(X, y [, l2 = 0]) */
static int l_logistic(lua_State *L) {
  lua_settop(L, 3);
  double l2 = luaL_optnumber(L, 3, 0.0);
  objbox *b = newbox(L);
  ms_tensor *X = lms_checktensor(L, 1);
  ms_tensor *y = lms_checktensor(L, 2);
  return lms_result(L, ms_objective_logistic(lms_ctx(L), X, y, l2, &b->obj), 1);
}

ms_objective **lms_newobjective(lua_State *L) { return &newbox(L)->obj; }

/* ---- objectives with Lua callbacks ---- */

typedef struct callargs {
  ms_tensor *w, *v;
} callargs;

/* Pushes the point (and the direction): run protected by lms_callback. */
static int push_point(lua_State *L, void *ud) {
  const callargs *a = ud;
  lms_pushref(L, a->w);
  if (a->v) lms_pushref(L, a->v);
  return a->v ? 2 : 1;
}

/* Runs callback ref on the thread that entered the engine. With propagate_errors (raw) the
 * error object is kept for lms_error and the message is its text alone. */
static int call_lua(ms_ctx *ctx, lobj *lo, int ref, const char *what, ms_tensor *w, ms_tensor *v,
                    ms_tensor **out) {
  *out = NULL;
  lua_State *L = lms_running(ctx);
  if (ref == LUA_NOREF || ref == LUA_REFNIL)
    return ms_ctx_fail(ctx, MS_ESTATE, "%s: objective has been released", lo->name);
  int top = lua_gettop(L);
  callargs a = {w, v};
  int st = lms_callback(ctx, L, ref, push_point, &a, 1, lo->raw ? LMS_CB_PLAIN : 0,
                        lo->raw ? NULL : lo->name, what);
  if (st != MS_OK) return st;
  ms_tensor *t = lms_testtensor(L, -1);
  if (t != NULL) {
    *out = ms_tensor_retain(t);
  } else if (luaL_testudata(L, -1, LMS_TENSOR)) {
    st = ms_ctx_fail(ctx, MS_ECALLBACK, "%s: %s returned a released tensor", lo->name, what);
  } else {
    st = ms_ctx_fail(ctx, MS_ECALLBACK, "%s: %s must return a tensor, got %s", lo->name, what,
                     luaL_typename(L, -1));
  }
  lua_settop(L, top);
  return st;
}

static int cb_value(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  lobj *lo = ud;
  return call_lua(ctx, lo, lo->value, "value", w, NULL, out);
}

static int cb_grad(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  lobj *lo = ud;
  return call_lua(ctx, lo, lo->grad, "grad", w, NULL, out);
}

static int cb_hvp(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *v, ms_tensor **out) {
  lobj *lo = ud;
  return call_lua(ctx, lo, lo->hvp, "hvp", w, v, out);
}

static void lobj_free(void *ud) {
  lobj *lo = ud; /* its Lua references were dropped by the box's __gc */
  ms_ctx_dealloc(lo->ctx, lo, sizeof *lo);
}

/* Field `name` of the table at arg must be a function (or absent when optional). */
static int checkfieldfunction(lua_State *L, int arg, const char *name, int required) {
  int t = lua_getfield(L, arg, name);
  if (t == LUA_TFUNCTION) return 1;
  if (t == LUA_TNIL && !required) return 0;
  return luaL_argerror(
      L, arg,
      lua_pushfstring(L, "field '%s' must be a function, got %s", name, luaL_typename(L, -1)));
}

/* objective_from_callbacks{name =, dim =, value =, grad = (optional), hvp = (optional),
 *   propagate_errors = (optional boolean)}: with propagate_errors, an error a callback raises
 *   reaches the caller of obj:value/grad/hvp as it was raised (no "<name>: error in value: "
 *   prefix, no traceback); other bindings that run the objective report its text. */
static int l_from_callbacks(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  int t = lua_getfield(L, 1, "name"); /* 2 */
  if (t != LUA_TNIL && t != LUA_TSTRING)
    return luaL_argerror(
        L, 1, lua_pushfstring(L, "field 'name' must be a string, got %s", luaL_typename(L, 2)));
  t = lua_getfield(L, 1, "dim"); /* 3 */
  int isint = 0;
  lua_Integer dim = lua_tointegerx(L, 3, &isint);
  if (t != LUA_TNUMBER || !isint || dim < 1)
    return luaL_argerror(
        L, 1,
        lua_pushfstring(L, "field 'dim' must be an integer >= 1, got %s",
                        t == LUA_TNUMBER ? lua_tostring(L, 3) : luaL_typename(L, 3)));
  checkfieldfunction(L, 1, "value", 1);               /* 4 */
  int has_grad = checkfieldfunction(L, 1, "grad", 0); /* 5 */
  int has_hvp = checkfieldfunction(L, 1, "hvp", 0);   /* 6 */
  lua_getfield(L, 1, "propagate_errors");             /* 7 */
  int raw = lua_toboolean(L, 7);
  objbox *b = newbox(L); /* 8 */
  ms_ctx *ctx = lms_ctx(L);
  lobj *lo = ms_ctx_alloc(ctx, sizeof *lo);
  if (lo == NULL) return lms_error(L);
  lo->ctx = ctx;
  lo->value = lo->grad = lo->hvp = LUA_NOREF;
  lo->raw = raw;
  lo->has_grad = has_grad;
  lo->has_hvp = has_hvp;
  snprintf(lo->name, sizeof lo->name, "%s", lua_isstring(L, 2) ? lua_tostring(L, 2) : "objective");
  ms_objective_def def = {lo->name,
                          (int64_t)dim,
                          cb_value,
                          has_grad ? cb_grad : NULL,
                          has_hvp ? cb_hvp : NULL,
                          lobj_free,
                          lo,
                          0,
                          NULL};
  if (ms_objective_new(ctx, &def, &b->obj) != MS_OK) {
    ms_ctx_dealloc(ctx, lo, sizeof *lo);
    return lms_error(L);
  }
  b->lo = lo;
  /* references taken once the box owns lo: an error here leaks nothing */
  lua_pushvalue(L, 4);
  lo->value = luaL_ref(L, LUA_REGISTRYINDEX);
  if (has_grad) {
    lua_pushvalue(L, 5);
    lo->grad = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  if (has_hvp) {
    lua_pushvalue(L, 6);
    lo->hvp = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 1;
}

/* ---- samples, spectrum ---- */

/*
 * The table of 1-based sample indices at arg into a buffer of 0-based ones (a userdata
 * pushed on the stack, so nothing leaks on an error); *n gets the count.
 */
static int64_t *checkindices(lua_State *L, int arg, const ms_objective *o, int64_t *n) {
  luaL_checktype(L, arg, LUA_TTABLE);
  lua_Integer len = (lua_Integer)luaL_len(L, arg);
  if (len < 1) luaL_argerror(L, arg, "expected a non-empty table of sample indices");
  size_t budget = ms_ctx_limit(lms_ctx(L));
  /* (size_t)len * 8 below must not wrap, nor pass the memory budget */
  if (len > ((lua_Integer)1 << 40) || (budget > 0 && (size_t)len > budget / sizeof(int64_t)))
    luaL_argerror(L, arg, lua_pushfstring(L, "too many sample indices (%I)", len));
  int64_t ns = ms_objective_nsamples(o);
  int64_t *idx = lua_newuserdatauv(L, (size_t)len * sizeof *idx, 0);
  for (lua_Integer k = 1; k <= len; k++) {
    lua_geti(L, arg, k);
    int isint = 0;
    lua_Integer i = lua_tointegerx(L, -1, &isint);
    if (!isint)
      luaL_argerror(L, arg,
                    lua_pushfstring(L, "entry %I must be an integer, got %s", k,
                                    lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1)
                                                                   : luaL_typename(L, -1)));
    if (i < 1 || i > ns)
      luaL_argerror(L, arg,
                    lua_pushfstring(L, "entry %I: sample index %I out of range [1, %I]", k, i,
                                    (lua_Integer)ns));
    idx[k - 1] = (int64_t)(i - 1);
    lua_pop(L, 1);
  }
  *n = (int64_t)len;
  return idx;
}

/* The objective at 1 must have samples. */
static ms_objective *checksamples(lua_State *L, const char *what) {
  ms_objective *o = checkbox(L, 1)->obj;
  if (ms_objective_nsamples(o) == 0)
    luaL_error(L, "%s.%s: the objective has no samples (least squares and logistic have)",
               ms_objective_name(o), what);
  return o;
}

/* obj:minibatch(idx): the same kind of objective on the samples idx (1-based). */
static int obj_minibatch(lua_State *L) {
  lua_settop(L, 2);
  objbox *out = newbox(L); /* 3 */
  ms_objective *o = checksamples(L, "minibatch");
  int64_t n = 0;
  int64_t *idx = checkindices(L, 2, o, &n);
  o = checkbox(L, 1)->obj; /* indexing the table may run Lua code (even close obj) */
  int st = ms_objective_subset(lms_ctx(L), o, n, idx, &out->obj);
  lua_settop(L, 3);
  return lms_result(L, st, 1);
}

/* obj:grad_batch(w, idx): the gradient on the samples idx (1-based, repeats allowed). */
static int obj_grad_batch(lua_State *L) {
  lua_settop(L, 3);
  ms_tensor **res = lms_newbox(L); /* 4 */
  ms_objective *o = checksamples(L, "grad_batch");
  lms_checktensor(L, 2);
  int64_t n = 0;
  int64_t *idx = checkindices(L, 3, o, &n);
  ms_ctx *ctx = lms_ctx(L);
  o = checkbox(L, 1)->obj;
  ms_tensor *w = lms_checktensor(L, 2); /* after the last Lua allocation */
  lms_entry e;
  lms_enter(L, &e);
  lms_hold_objective(&e, o);
  lms_hold_tensor(&e, w);
  int st = ms_objective_grad_batch(ctx, o, w, n, idx, res);
  lms_leave(&e);
  lua_settop(L, 4);
  return lms_result(L, st, 1);
}

/* obj:eigh() -> lambda (ascending), Q (eigenvectors as columns) of a quadratic's H: copies
 * of the spectrum the objective computes once and keeps. */
static int obj_eigh(lua_State *L) {
  lua_settop(L, 1);
  ms_tensor **lb = lms_newbox(L);
  ms_tensor **qb = lms_newbox(L);
  ms_objective *o = checkbox(L, 1)->obj;
  ms_ctx *ctx = lms_ctx(L);
  ms_tensor *lam = NULL, *Q = NULL;
  if (ms_objective_quadratic_eigh(ctx, o, &lam, &Q) != MS_OK) return lms_error(L);
  int st = ms_tensor_copy(ctx, lam, lb);
  if (st == MS_OK) st = ms_tensor_copy(ctx, Q, qb);
  return lms_result(L, st, 2);
}

/* obj:check_psd([what]) -> true, or raises "<what>: needs a positive semi-definite H ..." */
static int obj_check_psd(lua_State *L) {
  ms_objective *o = checkbox(L, 1)->obj;
  const char *what = luaL_optstring(L, 2, "check_psd");
  if (ms_objective_check_psd(lms_ctx(L), o, what) != MS_OK) return lms_error(L);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- fields ---- */

static const char *const builtin_fields[] = {"kind", "H", "wstar", "fstar", "X",
                                             "y",    "n", "l2",    NULL};

static int builtin_field(const char *k) {
  for (int i = 0; builtin_fields[i]; i++)
    if (strcmp(k, builtin_fields[i]) == 0) return i;
  return -1;
}

/* Pushes the table of extra fields of the box at idx (absolute), creating it if needed. */
static void push_extras(lua_State *L, int idx) {
  if (lua_getiuservalue(L, idx, 1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, idx, 1);
  }
}

static const char *kind_str(ms_objective_kind k) {
  switch (k) {
    case MS_OBJECTIVE_QUADRATIC:
      return "quadratic";
    case MS_OBJECTIVE_LEAST_SQUARES:
      return "least_squares";
    case MS_OBJECTIVE_LOGISTIC:
      return "logistic";
    default:
      return "function";
  }
}

/* A tensor field (H, wstar, X, y): a copy made on first access and kept in the extras. */
static int push_tensor_field(lua_State *L, const char *k) {
  push_extras(L, 1); /* 3 */
  if (lua_getfield(L, 3, k) != LUA_TNIL) return 1;
  ms_tensor **box = lms_newbox(L); /* 5 */
  ms_objective *o = checkbox(L, 1)->obj;
  ms_objective_kind kind = ms_objective_kind_of(o);
  ms_tensor *t = NULL;
  if (kind == MS_OBJECTIVE_QUADRATIC && (k[0] == 'H' || k[0] == 'w')) {
    ms_tensor *H = NULL, *ws = NULL;
    ms_objective_quadratic_parts(o, &H, &ws, NULL);
    t = k[0] == 'H' ? H : ws;
  } else if ((kind == MS_OBJECTIVE_LEAST_SQUARES || kind == MS_OBJECTIVE_LOGISTIC) &&
             (k[0] == 'X' || k[0] == 'y')) {
    ms_tensor *X = NULL, *y = NULL;
    ms_objective_data_parts(o, &X, &y, NULL);
    t = k[0] == 'X' ? X : y;
  }
  if (t == NULL) {
    lua_pushnil(L);
    return 1;
  }
  if (ms_tensor_copy(lms_ctx(L), t, box) != MS_OK) return lms_error(L);
  lua_pushvalue(L, 5);
  lua_setfield(L, 3, k);
  return lms_result(L, MS_OK, 1);
}

/* The read-only field number f of the objective at 1. */
static int push_field(lua_State *L, int f) {
  const char *k = builtin_fields[f];
  objbox *b = luaL_checkudata(L, 1, LMS_OBJECTIVE);
  if (b->obj == NULL) return luaL_error(L, "objective has been released (reading field '%s')", k);
  ms_objective *o = b->obj;
  ms_objective_kind kind = ms_objective_kind_of(o);
  double x = 0;
  switch (k[0]) {
    case 'k':
      lua_pushstring(L, kind_str(kind));
      return 1;
    case 'f':
      if (kind != MS_OBJECTIVE_QUADRATIC) break;
      ms_objective_quadratic_parts(o, NULL, NULL, &x);
      lua_pushnumber(L, x);
      return 1;
    case 'n':
      if (ms_objective_nsamples(o) == 0) break;
      lua_pushinteger(L, (lua_Integer)ms_objective_nsamples(o));
      return 1;
    case 'l':
      if (kind != MS_OBJECTIVE_LOGISTIC) break;
      ms_objective_data_parts(o, NULL, NULL, &x);
      lua_pushnumber(L, x);
      return 1;
    default:
      return push_tensor_field(L, k);
  }
  lua_pushnil(L);
  return 1;
}

/* __index(obj, key): the methods (upvalue 1), then the built-in fields, then the extras. */
static int obj_index(lua_State *L) {
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  if (lua_type(L, 2) == LUA_TSTRING) {
    int f = builtin_field(lua_tostring(L, 2));
    if (f >= 0) return push_field(L, f);
  }
  if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

/* __newindex(obj, key, value): extras only; methods and built-in fields are refused. */
static int obj_newindex(lua_State *L) {
  lua_settop(L, 3);
  if (lua_type(L, 2) == LUA_TSTRING) {
    const char *k = lua_tostring(L, 2);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
      return luaL_error(L, "objective: cannot set field '%s' (a method of objectives)", k);
    if (builtin_field(k) >= 0)
      return luaL_error(L, "objective: cannot set field '%s' (a read-only field of objectives)", k);
    lua_pop(L, 1);
  }
  push_extras(L, 1);
  lua_insert(L, 2);
  lua_rawset(L, 2); /* raises for a nil or NaN key */
  return 0;
}

static const luaL_Reg methods[] = {{"value", obj_value},
                                   {"grad", obj_grad},
                                   {"hvp", obj_hvp},
                                   {"dim", obj_dim},
                                   {"name", obj_name},
                                   {"parts", obj_parts},
                                   {"minibatch", obj_minibatch},
                                   {"grad_batch", obj_grad_batch},
                                   {"eigh", obj_eigh},
                                   {"check_psd", obj_check_psd},
                                   {NULL, NULL}};

static const luaL_Reg functions[] = {{"objective_quadratic", l_quadratic},
                                     {"objective_least_squares", l_least_squares},
                                     {"objective_logistic", l_logistic},
                                     {"objective_from_callbacks", l_from_callbacks},
                                     {NULL, NULL}};

/* Sets __gc, __close, __tostring and __name in the table on top of the stack. */
static void set_common(lua_State *L) {
  lua_pushcfunction(L, obj_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, obj_gc);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, obj_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "Objective");
  lua_setfield(L, -2, "__name");
}

/*
 * Adds the objective constructors to the core table on top of the stack, with
 * core.Objective (the methods table, so Lua code can add methods) and core.Objective_mt
 * (what getmetatable(obj) returns, for type tests). The real metatable (registry
 * LMS_OBJECTIVE) has __index and __newindex functions and hides behind __metatable.
 */
void lms_open_objective(lua_State *L) {
  if (luaL_newmetatable(L, LMS_OBJECTIVE)) { /* mt */
    set_common(L);
    luaL_newlib(L, methods); /* mt, methods */
    lua_newtable(L);         /* mt, methods, public */
    set_common(L);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "__index");
    lua_setfield(L, -3, "__metatable"); /* mt, methods */
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, obj_index, 1);
    lua_setfield(L, -3, "__index");
    lua_pushcclosure(L, obj_newindex, 1);
    lua_setfield(L, -2, "__newindex"); /* mt */
  }
  lua_getfield(L, -1, "__metatable"); /* core, mt, public */
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -4, "Objective");
  lua_setfield(L, -3, "Objective_mt");
  lua_pop(L, 1);
  luaL_setfuncs(L, functions, 0);
}
