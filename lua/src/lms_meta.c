/*
 * Lua bindings of the engine's quadratic meta-objective routines (closed form, stable).
 *
 * As everywhere in the bindings (see lms_tensor.c), the tensors are fetched from their boxes
 * only after the last call that can run Lua code or allocate: the options table may be a
 * proxy whose __index closes a tensor, and converting a number to an option string allocates
 * (which may run a finalizer). So the arguments are type-checked in order first, the scalars
 * and options read, and only then the pointers taken.
 */
#include "lms.h"

static ms_meta_kind checkkind(lua_State *L, int arg) {
  static const char *const kinds[] = {"naive", "log", "sum", "logsum", NULL};
  return (ms_meta_kind)luaL_checkoption(L, arg, NULL, kinds);
}

static int push_result(lua_State *L, const ms_meta_result *r) {
  lua_createtable(L, 0, 6);
  lua_pushnumber(L, r->value);
  lua_setfield(L, -2, "value");
  lua_pushnumber(L, r->log_loss);
  lua_setfield(L, -2, "log_loss");
  lua_pushstring(L, ms_meta_status_name(r->status));
  lua_setfield(L, -2, "status");
  lua_pushinteger(L, (lua_Integer)r->fail_step);
  lua_setfield(L, -2, "fail_step");
  lua_createtable(L, r->nparams, 0);
  lua_createtable(L, r->nparams, 0);
  for (int j = 0; j < r->nparams; j++) {
    lua_pushnumber(L, r->grad[j]);
    lua_rawseti(L, -3, j + 1);
    lua_pushnumber(L, r->log_abs_grad[j]);
    lua_rawseti(L, -2, j + 1);
  }
  lua_setfield(L, -3, "log_abs_grad");
  lua_setfield(L, -2, "grad");
  return 1;
}

static int64_t checksteps(lua_State *L, int arg) {
  lua_Integer T = luaL_checkinteger(L, arg);
  if (T < 1) luaL_argerror(L, arg, lua_pushfstring(L, "steps must be >= 1, got %I", T));
  return T;
}

/* meta_gd_exact(lambda, c, eta, T, kind) */
static int l_meta_gd_exact(lua_State *L) {
  lms_checktensor(L, 1);
  lms_checktensor(L, 2);
  double eta = luaL_checknumber(L, 3);
  int64_t T = checksteps(L, 4);
  ms_meta_kind kind = checkkind(L, 5);
  ms_ctx *ctx = lms_ctx(L);
  ms_tensor *lam = lms_checktensor(L, 1), *c = lms_checktensor(L, 2);
  ms_meta_result r;
  if (ms_meta_gd_exact(ctx, lam, c, eta, T, kind, &r) != MS_OK) return lms_error(L);
  return push_result(L, &r);
}

/* meta_stable(H, w0, wstar|nil, {kind = "gd"|"momentum", lr =, beta =}, T, kind) */
static int l_meta_stable(lua_State *L) {
  lms_checktensor(L, 1);
  lms_checktensor(L, 2);
  int has_ws = !lua_isnoneornil(L, 3);
  if (has_ws) lms_checktensor(L, 3);
  luaL_checktype(L, 4, LUA_TTABLE);
  ms_meta_optimizer opt = {MS_META_GD, 0, 0};
  lua_getfield(L, 4, "kind");
  static const char *const opts[] = {"gd", "momentum", NULL};
  opt.kind = luaL_checkoption(L, -1, "gd", opts) == 0 ? MS_META_GD : MS_META_MOMENTUM;
  lua_getfield(L, 4, "lr");
  if (!lua_isnumber(L, -1)) return luaL_argerror(L, 4, "field 'lr' must be a number");
  opt.lr = lua_tonumber(L, -1);
  lua_getfield(L, 4, "beta");
  opt.beta = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0.0;
  lua_pop(L, 3);
  int64_t T = checksteps(L, 5);
  ms_meta_kind kind = checkkind(L, 6);
  ms_ctx *ctx = lms_ctx(L);
  ms_tensor *H = lms_checktensor(L, 1), *w0 = lms_checktensor(L, 2);
  ms_tensor *ws = has_ws ? lms_checktensor(L, 3) : NULL;
  ms_meta_result r;
  if (ms_meta_stable_quadratic(ctx, H, w0, ws, &opt, T, kind, &r) != MS_OK) return lms_error(L);
  return push_result(L, &r);
}

static const luaL_Reg functions[] = {
  {"meta_gd_exact", l_meta_gd_exact}, {"meta_stable", l_meta_stable}, {NULL, NULL}
};

void lms_open_meta(lua_State *L) { luaL_setfuncs(L, functions, 0); }
