/*
 * Entry point of metastep.so for the stock lua5.4 interpreter: `require "metastep"`
 * finds this file through LUA_CPATH, registers the core and the embedded front library
 * in package.preload, then returns the front library.
 */
#include "lms.h"

LUALIB_API int luaopen_metastep(lua_State *L);

LUALIB_API int luaopen_metastep(lua_State *L) {
  lms_preload(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_getfield(L, -1, "metastep");
  lua_pushliteral(L, "metastep");
  lua_call(L, 1, 1);
  return 1;
}
