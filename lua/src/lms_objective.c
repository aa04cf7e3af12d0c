/*
 * Lua bindings of the engine's objectives (metastep/objective.h): the Objective userdata
 * with :value(w), :grad(w), :hvp(w, v), :dim(), :name(), :parts(); the built-in
 * constructors; and objectives whose callbacks are Lua functions.
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
  ms_ctx *ctx;          /* the lobj is allocated in this context (counted in its bytes) */
  lua_State *L0;        /* main thread, used when no binding set the running thread */
  int value, grad, hvp; /* registry references (LUA_NOREF when absent or released) */
  int has_grad, has_hvp; /* given at construction (else the engine derives them with levels) */
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

/* An empty box, safe to collect before it owns anything. */
static objbox *newbox(lua_State *L) {
  objbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->obj = NULL;
  b->lo = NULL;
  luaL_setmetatable(L, LMS_OBJECTIVE);
  return b;
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
    return luaL_error(L, "%s: objective '%s' has no %s callback, and deriving it is not allowed "
                         "inside the forward or jvp rule of a custom primitive applied while "
                         "levels are active", which == CALL_GRAD ? "grad" : "hvp", b->lo->name,
                      which == CALL_GRAD ? "grad" : "hvp");
  void *prev = ms_ctx_userdata(ctx);
  ms_ctx_set_userdata(ctx, L); /* callbacks run on this thread */
  ms_objective_retain(o);
  ms_tensor_retain(w);
  ms_tensor_retain(v);
  int st;
  if (which == CALL_VALUE)
    st = ms_objective_value(ctx, o, w, res);
  else if (which == CALL_GRAD)
    st = ms_objective_grad(ctx, o, w, res);
  else
    st = ms_objective_hvp(ctx, o, w, v, res);
  ms_tensor_release(v);
  ms_tensor_release(w);
  ms_objective_release(o);
  ms_ctx_set_userdata(ctx, prev);
  if (st != MS_OK) return lms_error(L);
  return 1;
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
  return 3;
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
  if (ms_objective_quadratic(lms_ctx(L), H, ws, fstar, &b->obj) != MS_OK) return lms_error(L);
  return 1;
}

/* objective_least_squares(X, y) */
static int l_least_squares(lua_State *L) {
  lua_settop(L, 2);
  objbox *b = newbox(L);
  ms_tensor *X = lms_checktensor(L, 1);
  ms_tensor *y = lms_checktensor(L, 2);
  if (ms_objective_least_squares(lms_ctx(L), X, y, &b->obj) != MS_OK) return lms_error(L);
  return 1;
}

/* objective_logistic(X, y [, l2 = 0]) */
static int l_logistic(lua_State *L) {
  lua_settop(L, 3);
  double l2 = luaL_optnumber(L, 3, 0.0);
  objbox *b = newbox(L);
  ms_tensor *X = lms_checktensor(L, 1);
  ms_tensor *y = lms_checktensor(L, 2);
  if (ms_objective_logistic(lms_ctx(L), X, y, l2, &b->obj) != MS_OK) return lms_error(L);
  return 1;
}

/* ---- objectives with Lua callbacks ---- */

/* Message handler for callbacks: the error message plus a traceback. */
static int callback_msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

typedef struct callargs {
  int ref;
  ms_tensor *w, *v;
} callargs;

/* Pushes t as a Lua tensor (adds a reference). */
static void push_ref(lua_State *L, ms_tensor *t) {
  ms_tensor **box = lms_newbox(L);
  *box = ms_tensor_retain(t);
}

/*
 * Runs under lua_pcall: pushing the function's arguments allocates, and an allocation
 * error must not jump over the engine frames below us.
 */
static int protected_call(lua_State *L) {
  callargs *a = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->ref);
  push_ref(L, a->w);
  if (a->v) push_ref(L, a->v);
  lua_call(L, a->v ? 2 : 1, 1);
  return 1;
}

static int call_lua(ms_ctx *ctx, lobj *lo, int ref, const char *what, ms_tensor *w, ms_tensor *v,
                    ms_tensor **out) {
  *out = NULL;
  lua_State *L = ms_ctx_userdata(ctx);
  if (L == NULL) L = lo->L0;
  if (ref == LUA_NOREF || ref == LUA_REFNIL)
    return ms_ctx_fail(ctx, MS_ESTATE, "%s: objective has been released", lo->name);
  if (!lua_checkstack(L, 8)) return ms_ctx_fail(ctx, MS_ENOMEM, "%s: Lua stack overflow", lo->name);
  int top = lua_gettop(L);
  callargs a = {ref, w, v};
  lua_pushcfunction(L, callback_msgh);
  lua_pushcfunction(L, protected_call);
  lua_pushlightuserdata(L, &a);
  int st = MS_OK;
  if (lua_pcall(L, 1, 1, top + 1) != LUA_OK) {
    st = ms_ctx_fail(ctx, MS_ECALLBACK, "%s: error in %s: %s", lo->name, what,
                     lua_isstring(L, -1) ? lua_tostring(L, -1) : "(error object is not a string)");
  } else {
    ms_tensor *t = lms_testtensor(L, -1);
    if (t != NULL) {
      *out = ms_tensor_retain(t);
    } else if (luaL_testudata(L, -1, LMS_TENSOR)) {
      st = ms_ctx_fail(ctx, MS_ECALLBACK, "%s: %s returned a released tensor", lo->name, what);
    } else {
      st = ms_ctx_fail(ctx, MS_ECALLBACK, "%s: %s must return a tensor, got %s", lo->name, what,
                       luaL_typename(L, -1));
    }
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

/* objective_from_callbacks{name =, dim =, value =, grad = (optional), hvp = (optional)} */
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
  checkfieldfunction(L, 1, "value", 1);                   /* 4 */
  int has_grad = checkfieldfunction(L, 1, "grad", 0);     /* 5 */
  int has_hvp = checkfieldfunction(L, 1, "hvp", 0);       /* 6 */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD); /* 7 */
  lua_State *L0 = lua_tothread(L, 7);
  objbox *b = newbox(L); /* 8 */
  ms_ctx *ctx = lms_ctx(L);
  lobj *lo = ms_ctx_alloc(ctx, sizeof *lo);
  if (lo == NULL) return lms_error(L);
  lo->ctx = ctx;
  lo->L0 = L0;
  lo->value = lo->grad = lo->hvp = LUA_NOREF;
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

static const luaL_Reg methods[] = {{"value", obj_value}, {"grad", obj_grad}, {"hvp", obj_hvp},
                                   {"dim", obj_dim},     {"name", obj_name}, {"parts", obj_parts},
                                   {NULL, NULL}};

static const luaL_Reg functions[] = {{"objective_quadratic", l_quadratic},
                                     {"objective_least_squares", l_least_squares},
                                     {"objective_logistic", l_logistic},
                                     {"objective_from_callbacks", l_from_callbacks},
                                     {NULL, NULL}};

/* Adds the objective constructors to the core table on top of the stack, with
 * core.Objective (the methods table, so Lua code can add methods) and core.Objective_mt
 * (the metatable, for type tests). */
void lms_open_objective(lua_State *L) {
  if (luaL_newmetatable(L, LMS_OBJECTIVE)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, obj_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, obj_gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, obj_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "Objective");
    lua_setfield(L, -2, "__name");
  }
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "Objective");
  lua_setfield(L, -2, "Objective_mt");
  luaL_setfuncs(L, functions, 0);
}
