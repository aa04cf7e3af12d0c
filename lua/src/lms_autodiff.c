/*
 * Lua bindings of the autodiff engine: levels (tapes and forward levels) as userdata,
 * custom primitives whose rules are Lua functions, and the loss primitives. The
 * functional API (grad, jvp, vjp, hvp, check_grad) is Lua code in metastep/autodiff.lua.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lms.h"

#define LMS_LEVEL "metastep.Level"
#define LMS_CUSTOM "metastep.Custom"

/* ---- levels ---- */

static ms_level **checklevel(lua_State *L, int arg) {
  ms_level **box = luaL_checkudata(L, arg, LMS_LEVEL);
  if (*box == NULL) luaL_argerror(L, arg, "level has been freed");
  return box;
}

static int level_free(lua_State *L) {
  ms_level **box = luaL_checkudata(L, 1, LMS_LEVEL);
  ms_ad_free(*box);
  *box = NULL;
  return 0;
}

static int l_ad_push(lua_State *L) {
  static const char *const modes[] = {"reverse", "forward", NULL};
  int m = luaL_checkoption(L, 1, "reverse", modes);
  ms_ctx *ctx = lms_ctx(L);
  ms_level **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, LMS_LEVEL);
  if (ms_ad_push(ctx, m == 0 ? MS_AD_REVERSE : MS_AD_FORWARD, box) != MS_OK) return lms_error(L);
  return 1;
}

static int level_pop(lua_State *L) {
  ms_level **box = checklevel(L, 1);
  if (ms_ad_pop(lms_ctx(L), *box) != MS_OK) return lms_error(L);
  return 0;
}

static int level_watch(lua_State *L) {
  ms_level **lv = checklevel(L, 1);
  ms_tensor *x = lms_checktensorish(L, 2);
  ms_tensor *v = lua_isnoneornil(L, 3) ? NULL : lms_checktensor(L, 3);
  ms_tensor **box = lms_newbox(L);
  if (ms_ad_watch(lms_ctx(L), *lv, x, v, box) != MS_OK) return lms_error(L);
  return 1;
}

static int level_is_tracked(lua_State *L) {
  ms_level **lv = checklevel(L, 1);
  lua_pushboolean(L, ms_ad_is_tracked(*lv, lms_checktensor(L, 2)));
  return 1;
}

static int level_size(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ms_ad_size(*checklevel(L, 1)));
  return 1;
}

/* level:gradient(y, {x1, x2, ...} [, seed]) -> {g1, g2, ...} */
static int level_gradient(lua_State *L) {
  ms_level **lv = checklevel(L, 1);
  ms_tensor *y = lms_checktensor(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  ms_tensor *seed = lua_isnoneornil(L, 4) ? NULL : lms_checktensor(L, 4);
  int n = (int)luaL_len(L, 3);
  ms_tensor **xs = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *xs, 0);
  for (int i = 0; i < n; i++) {
    lua_geti(L, 3, i + 1);
    xs[i] = lms_testtensor(L, -1);
    if (xs[i] == NULL)
      return luaL_argerror(L, 3, lua_pushfstring(L, "element %d must be a tensor, got %s", i + 1, luaL_typename(L, -1)));
    lua_pop(L, 1); /* kept alive by the table */
  }
  /* result boxes first, so no tensor is ever unowned when an error is raised */
  lua_createtable(L, n, 0);
  int res = lua_gettop(L);
  ms_tensor ***boxes = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *boxes, 0);
  for (int i = 0; i < n; i++) {
    boxes[i] = lms_newbox(L);
    lua_rawseti(L, res, i + 1);
  }
  ms_tensor **grads = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *grads, 0);
  ms_ctx *ctx = lms_ctx(L);
  void *prev = ms_ctx_userdata(ctx);
  ms_ctx_set_userdata(ctx, L);
  int st = ms_ad_gradient(ctx, *lv, y, seed, n, xs, grads);
  ms_ctx_set_userdata(ctx, prev);
  if (st != MS_OK) return lms_error(L);
  for (int i = 0; i < n; i++) *boxes[i] = grads[i];
  lua_settop(L, res);
  return 1;
}

static int level_tangent(lua_State *L) {
  ms_level **lv = checklevel(L, 1);
  ms_tensor *y = lms_checktensor(L, 2);
  ms_tensor **box = lms_newbox(L);
  if (ms_ad_tangent(lms_ctx(L), *lv, y, box) != MS_OK) return lms_error(L);
  return 1;
}

static int l_ad_depth(lua_State *L) {
  lua_pushinteger(L, ms_ad_depth(lms_ctx(L)));
  return 1;
}

/* ---- loss and structural primitives ---- */

static int l_stop_gradient(lua_State *L) {
  ms_tensor *x = lms_checktensor(L, 1);
  ms_tensor **box = lms_newbox(L);
  if (ms_stop_gradient(lms_ctx(L), x, box) != MS_OK) return lms_error(L);
  return 1;
}

static int l_sum_to(lua_State *L) {
  ms_tensor *x = lms_checktensor(L, 1);
  int64_t shape[MS_MAXDIM];
  luaL_checktype(L, 2, LUA_TTABLE);
  int nd = lms_checkshape(L, 2, shape);
  ms_tensor **box = lms_newbox(L);
  if (ms_sum_to(lms_ctx(L), x, nd, shape, box) != MS_OK) return lms_error(L);
  return 1;
}

static int l_log_softmax(lua_State *L) {
  ms_tensor *x = lms_checktensor(L, 1);
  int nd = ms_tensor_ndim(x);
  lua_Integer d = luaL_optinteger(L, 2, -1);
  if (nd == 0) return luaL_argerror(L, 1, "expected at least a 1-d tensor, got a 0-d tensor");
  if (d == 0 || d > nd || d < -nd)
    return luaL_argerror(L, 2, lua_pushfstring(L, "dimension %I out of range for %d-d tensor", d, nd));
  ms_tensor **box = lms_newbox(L);
  if (ms_log_softmax(lms_ctx(L), x, d > 0 ? (int)d - 1 : (int)d, box) != MS_OK) return lms_error(L);
  return 1;
}

/* softmax_xent(logits [n,k], labels [n] holding 1-based class indices) -> losses [n] */
static int l_softmax_xent(lua_State *L) {
  ms_tensor *logits = lms_checktensor(L, 1);
  ms_tensor *labels = lms_checktensor(L, 2);
  ms_ctx *ctx = lms_ctx(L);
  ms_tensor **tmp = lms_newbox(L);
  if (ms_binary_scalar(ctx, MS_SUB, labels, 1.0, 0, tmp) != MS_OK) return lms_error(L);
  ms_tensor **box = lms_newbox(L);
  if (ms_softmax_xent(ctx, logits, *tmp, box) != MS_OK) return lms_error(L);
  return 1;
}

/* ---- custom primitives with Lua rules ---- */

typedef struct lcustom {
  lua_State *L0;          /* the state that owns the references */
  int forward, vjp, jvp;  /* registry references (LUA_NOREF when absent) */
  int nin;
  char name[64];
} lcustom;

/* Message handler for callbacks: the error message plus a traceback. */
static int callback_msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Callbacks run on the thread that called into the engine, kept in the context by the two
 * entry points (custom_call, level_gradient) for the duration of their engine call only:
 * each restores the previous thread before returning, because a rule may apply a custom
 * primitive from a coroutine that is finished and collected by the time the engine calls
 * the next rule. */
static lua_State *current(ms_ctx *ctx, lcustom *c) {
  lua_State *L = ms_ctx_userdata(ctx);
  return L ? L : c->L0;
}

/* Pushes t as a Lua tensor (adds a reference). */
static void push_ref(lua_State *L, ms_tensor *t) {
  ms_tensor **box = lms_newbox(L);
  *box = ms_tensor_retain(t);
}

/* Calls the function below its nargs arguments; on success leaves nres results. */
static int call_rule(ms_ctx *ctx, lua_State *L, lcustom *c, const char *what, int nargs, int nres) {
  int base = lua_gettop(L) - nargs; /* index of the function */
  lua_pushcfunction(L, callback_msgh);
  lua_insert(L, base);
  int st = lua_pcall(L, nargs, nres, base);
  lua_remove(L, base);
  if (st != LUA_OK) {
    ms_ctx_fail(ctx, MS_ECALLBACK, "%s: error in %s: %s", c->name, what, lua_tostring(L, -1));
    lua_pop(L, 1);
    return MS_ECALLBACK;
  }
  return MS_OK;
}

/* The tensor result at idx, retained into *out, or an MS_ECALLBACK error. */
static int take_result(ms_ctx *ctx, lua_State *L, lcustom *c, int idx, const char *what, int k,
                       int allow_nil, ms_tensor **out) {
  *out = NULL;
  if (allow_nil && lua_isnil(L, idx)) return MS_OK;
  ms_tensor *t = lms_testtensor(L, idx);
  if (t == NULL)
    return ms_ctx_fail(ctx, MS_ECALLBACK, "%s: %s must return a tensor%s (result %d), got %s",
                       c->name, what, allow_nil ? " or nil" : "", k, luaL_typename(L, idx));
  *out = ms_tensor_retain(t);
  return MS_OK;
}

static int c_forward(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor **out) {
  lcustom *c = ud;
  lua_State *L = current(ctx, c);
  int top = lua_gettop(L);
  if (c->forward < 0) return ms_ctx_fail(ctx, MS_ESTATE, "%s: custom primitive was released", c->name);
  if (!lua_checkstack(L, c->nin + 8)) return ms_ctx_fail(ctx, MS_ENOMEM, "%s: Lua stack overflow", c->name);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->forward);
  for (int i = 0; i < c->nin; i++) push_ref(L, in[i]);
  int st = call_rule(ctx, L, c, "forward", c->nin, 1);
  if (st == MS_OK) st = take_result(ctx, L, c, -1, "forward", 1, 0, out);
  lua_settop(L, top);
  return st;
}

/* vjp(g, out, x1, ..., xn) -> g1, ..., gn (nil for zero) */
static int c_vjp(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *out, ms_tensor *gout,
                 const int *need, ms_tensor **gin) {
  lcustom *c = ud;
  lua_State *L = current(ctx, c);
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 2 * c->nin + 8)) return ms_ctx_fail(ctx, MS_ENOMEM, "%s: Lua stack overflow", c->name);
  if (c->vjp < 0) return ms_ctx_fail(ctx, MS_EARG, "%s: custom primitive has no vjp rule", c->name);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->vjp);
  push_ref(L, gout);
  push_ref(L, out);
  for (int i = 0; i < c->nin; i++) push_ref(L, in[i]);
  int st = call_rule(ctx, L, c, "vjp", c->nin + 2, c->nin);
  for (int i = 0; st == MS_OK && i < c->nin; i++)
    if (need[i]) st = take_result(ctx, L, c, top + 1 + i, "vjp", i + 1, 1, &gin[i]);
  lua_settop(L, top);
  return st;
}

/* jvp(t1, ..., tn, out, x1, ..., xn) -> tangent of out; zero tangents are passed as zeros */
static int c_jvp(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *const *tin,
                 ms_tensor *out, ms_tensor **tout) {
  lcustom *c = ud;
  lua_State *L = current(ctx, c);
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 2 * c->nin + 8)) return ms_ctx_fail(ctx, MS_ENOMEM, "%s: Lua stack overflow", c->name);
  if (c->jvp < 0) return ms_ctx_fail(ctx, MS_EARG, "%s: custom primitive has no jvp rule", c->name);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->jvp);
  for (int i = 0; i < c->nin; i++) {
    if (tin[i]) {
      push_ref(L, tin[i]);
    } else {
      ms_tensor **box = lms_newbox(L);
      if (ms_tensor_zeros(ctx, ms_tensor_ndim(in[i]), ms_tensor_shape(in[i]), box) != MS_OK) {
        lua_settop(L, top);
        return ms_ctx_status(ctx);
      }
    }
  }
  push_ref(L, out);
  for (int i = 0; i < c->nin; i++) push_ref(L, in[i]);
  int st = call_rule(ctx, L, c, "jvp", 2 * c->nin + 1, 1);
  if (st == MS_OK) st = take_result(ctx, L, c, -1, "jvp", 1, 1, tout);
  lua_settop(L, top);
  return st;
}

typedef struct custom_box {
  ms_custom *op;
  lcustom *lc; /* owned by op (free_ud) */
} custom_box;

static void lcustom_free(void *p) {
  lcustom *c = p;
  /* References are dropped by the box's __gc, while the registry still exists. */
  free(c);
}

static int custom_gc(lua_State *L) {
  custom_box *b = luaL_checkudata(L, 1, LMS_CUSTOM);
  if (b->op) {
    /* Drop the Lua references now; tapes that still hold the op keep the C side alive
     * and report a clear error if its rules are needed after the state let go of them. */
    luaL_unref(L, LUA_REGISTRYINDEX, b->lc->forward);
    luaL_unref(L, LUA_REGISTRYINDEX, b->lc->vjp);
    luaL_unref(L, LUA_REGISTRYINDEX, b->lc->jvp);
    b->lc->forward = b->lc->vjp = b->lc->jvp = LUA_NOREF;
    ms_custom_release(b->op);
    b->op = NULL;
  }
  return 0;
}

static int fieldref(lua_State *L, int arg, const char *field, int required) {
  int t = lua_getfield(L, arg, field);
  if (t == LUA_TNIL && !required) {
    lua_pop(L, 1);
    return LUA_NOREF;
  }
  if (t != LUA_TFUNCTION)
    luaL_argerror(L, arg, lua_pushfstring(L, "field '%s' must be a function, got %s", field, luaL_typename(L, -1)));
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* custom{name =, nin =, forward =, vjp =, jvp =} -> a callable primitive */
static int l_custom(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "name");
  const char *name = luaL_optstring(L, -1, "custom");
  lua_getfield(L, 1, "nin");
  lua_Integer nin = luaL_optinteger(L, -1, 1);
  if (nin < 1 || nin > 16)
    return luaL_argerror(L, 1, lua_pushfstring(L, "field 'nin' must be in 1..16, got %I", nin));
  custom_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->op = NULL;
  b->lc = NULL;
  luaL_setmetatable(L, LMS_CUSTOM);
  lcustom *lc = malloc(sizeof *lc);
  if (lc == NULL) return luaL_error(L, "custom: out of memory");
  lc->L0 = L;
  lc->forward = lc->vjp = lc->jvp = LUA_NOREF;
  lc->nin = (int)nin;
  snprintf(lc->name, sizeof lc->name, "%s", name);
  ms_custom_op def = {lc->name, (int)nin, c_forward, c_vjp, c_jvp, lcustom_free, lc};
  if (ms_custom_new(lms_ctx(L), &def, &b->op) != MS_OK) {
    free(lc);
    return lms_error(L);
  }
  b->lc = lc;
  /* refs taken after the box owns lc, so an error here leaks nothing */
  lc->forward = fieldref(L, 1, "forward", 1);
  lc->vjp = fieldref(L, 1, "vjp", 0);
  lc->jvp = fieldref(L, 1, "jvp", 0);
  return 1;
}

/* op(x1, ..., xn) */
static int custom_call(lua_State *L) {
  custom_box *b = luaL_checkudata(L, 1, LMS_CUSTOM);
  if (b->op == NULL) return luaL_error(L, "custom primitive has been released");
  int nin = b->lc->nin;
  ms_tensor *in[16];
  for (int i = 0; i < nin; i++) in[i] = lms_checktensorish(L, i + 2);
  ms_tensor **box = lms_newbox(L);
  ms_ctx *ctx = lms_ctx(L);
  void *prev = ms_ctx_userdata(ctx);
  ms_ctx_set_userdata(ctx, L);
  int st = ms_custom_apply(ctx, b->op, in, box);
  ms_ctx_set_userdata(ctx, prev);
  if (st != MS_OK) return lms_error(L);
  return 1;
}

static const luaL_Reg level_methods[] = {
  {"pop", level_pop}, {"watch", level_watch}, {"gradient", level_gradient},
  {"tangent", level_tangent}, {"is_tracked", level_is_tracked}, {"size", level_size},
  {"free", level_free}, {NULL, NULL}
};

static const luaL_Reg functions[] = {
  {"ad_push", l_ad_push}, {"ad_depth", l_ad_depth}, {"stop_gradient", l_stop_gradient},
  {"sum_to", l_sum_to}, {"log_softmax", l_log_softmax}, {"softmax_xent", l_softmax_xent},
  {"custom", l_custom}, {NULL, NULL}
};

/* Adds the autodiff functions to the core table on top of the stack. */
void lms_open_autodiff(lua_State *L) {
  if (luaL_newmetatable(L, LMS_LEVEL)) {
    luaL_newlib(L, level_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, level_free);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, level_free);
    lua_setfield(L, -2, "__close");
    lua_pushliteral(L, "Level");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LMS_CUSTOM)) {
    lua_pushcfunction(L, custom_call);
    lua_setfield(L, -2, "__call");
    lua_pushcfunction(L, custom_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "Custom");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, functions, 0);
}
