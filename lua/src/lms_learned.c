/*
 * Bindings of the learned optimizers (learned.h): constructors, save and load.
 *
 * The Lua front (metastep/optim.lua) checks the options and names; these functions read
 * them raw. As everywhere in the bindings, the result box is created before the engine
 * allocates, and an engine failure is raised as the last act. File failures of save and
 * load are not misuse: they return nil and the message.
 */
#include <string.h>

#include "lms.h"
#include "metastep/learned.h"

static int64_t intopt(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  int64_t v = lua_isnil(L, -1) ? 0 : (int64_t)luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  return v;
}

static double numopt(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  double v = lua_isnil(L, -1) ? 0 : luaL_checknumber(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Reads up to n tensors from the list at idx into ts (borrowed: the list keeps them alive). */
static void tensor_list(lua_State *L, int idx, int n, ms_tensor **ts) {
  for (int i = 0; i < n; i++) {
    lua_geti(L, idx, i + 1);
    ts[i] = lua_isnil(L, -1) ? NULL : lms_checktensor(L, -1);
    lua_pop(L, 1);
  }
}

/* optim_learned("mlp" | "lstm", {seed, hidden, layers, step_scale, exp_scale, batch,
 * batch_seed, theta = {tensors in the engine's order} or nil}) -> Optim */
static int l_optim_learned(lua_State *L) {
  static const char *const kinds[] = {"mlp", "lstm", NULL};
  int kind = luaL_checkoption(L, 1, NULL, kinds);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  ms_learned_options o;
  memset(&o, 0, sizeof o);
  o.seed = (uint64_t)intopt(L, 2, "seed");
  o.hidden = (int)intopt(L, 2, "hidden");
  o.layers = (int)intopt(L, 2, "layers");
  o.step_scale = numopt(L, 2, "step_scale");
  o.exp_scale = numopt(L, 2, "exp_scale");
  o.batch = intopt(L, 2, "batch");
  o.batch_seed = (uint64_t)intopt(L, 2, "batch_seed");
  ms_tensor *theta[MS_OPTIM_MAXPARAMS] = {0};
  lua_getfield(L, 2, "theta"); /* 3: keeps the tensors alive */
  if (!lua_isnil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    tensor_list(L, 3, MS_OPTIM_MAXPARAMS, theta);
    o.theta = theta;
  }
  ms_optim **box = lms_newoptim(L);
  int st = kind == 0 ? ms_optim_learned_mlp(lms_ctx(L), &o, box)
                     : ms_optim_learned_lstm(lms_ctx(L), &o, box);
  if (st) return lms_error(L);
  return 1;
}

/* optim_learned_options(optim) -> {seed, hidden, layers, step_scale, exp_scale, batch,
 * batch_seed}, or nil for an optimizer that is not a learned one */
static int l_optim_learned_options(lua_State *L) {
  const ms_learned_options *o = ms_learned_options_of(lms_checkoptim(L, 1));
  if (o == NULL) return 0;
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, (lua_Integer)o->seed);
  lua_setfield(L, -2, "seed");
  lua_pushinteger(L, o->hidden);
  lua_setfield(L, -2, "hidden");
  lua_pushinteger(L, o->layers);
  lua_setfield(L, -2, "layers");
  lua_pushnumber(L, o->step_scale);
  lua_setfield(L, -2, "step_scale");
  lua_pushnumber(L, o->exp_scale);
  lua_setfield(L, -2, "exp_scale");
  lua_pushinteger(L, (lua_Integer)o->batch);
  lua_setfield(L, -2, "batch");
  lua_pushinteger(L, (lua_Integer)o->batch_seed);
  lua_setfield(L, -2, "batch_seed");
  return 1;
}

/* Pushes nil and the context's message, for file failures (out of memory still raises). */
static int file_failure(lua_State *L) {
  if (ms_ctx_status(lms_ctx(L)) == MS_ENOMEM) return lms_error(L);
  lua_pushnil(L);
  lua_pushstring(L, ms_ctx_error(lms_ctx(L)));
  return 2;
}

/* optim_save(optim, path, theta list or nil) -> true, or nil and a message */
static int l_optim_save(lua_State *L) {
  ms_optim *opt = lms_checkoptim(L, 1);
  const char *path = luaL_checkstring(L, 2);
  ms_tensor *theta[MS_OPTIM_MAXPARAMS] = {0};
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    tensor_list(L, 3, ms_optim_nparams(opt), theta);
  }
  int st = ms_optim_save(lms_ctx(L), opt, theta, path);
  if (st == MS_ESTATE) return file_failure(L); /* the file could not be written */
  if (st) return lms_error(L);                 /* not a learned optimizer, bad theta */
  lua_pushboolean(L, 1);
  return 1;
}

/* optim_load(path) -> Optim, or nil and a message */
static int l_optim_load(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  ms_optim **box = lms_newoptim(L);
  if (ms_optim_load(lms_ctx(L), path, box)) return file_failure(L);
  return 1;
}

static const luaL_Reg functions[] = {{"optim_learned", l_optim_learned},
                                     {"optim_learned_options", l_optim_learned_options},
                                     {"optim_save", l_optim_save},
                                     {"optim_load", l_optim_load},
                                     {NULL, NULL}};

void lms_open_learned(lua_State *L) { luaL_setfuncs(L, functions, 0); }
