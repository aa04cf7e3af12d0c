/* Registers the C core and the embedded Lua front library in package.preload. */
#include "lms.h"

struct lms_embedded {
  const char *name, *chunk, *src;
  size_t len;
};
extern const struct lms_embedded lms_front_lua[];

/* Loader for an embedded module; upvalue 1 is its index in lms_front_lua. */
static int load_embedded(lua_State *L) {
  const struct lms_embedded *e = &lms_front_lua[lua_tointeger(L, lua_upvalueindex(1))];
  if (luaL_loadbuffer(L, e->src, e->len, e->chunk) != LUA_OK) return lua_error(L);
  lua_pushstring(L, e->name);
  lua_call(L, 1, 1);
  return 1;
}

void lms_preload(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_metastep_core);
  lua_setfield(L, -2, "metastep.core");
  for (int i = 0; lms_front_lua[i].name != NULL; i++) {
    lua_pushinteger(L, i);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, -2, lms_front_lua[i].name);
  }
  lua_pop(L, 1);
}
