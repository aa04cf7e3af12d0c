/*
 * ms.save(path, value) / ms.load(path): Lua values in the engine's archive format
 * (archive.h, docs/format.md). A table becomes one entry per value, named by its path of
 * keys (string keys percent-escaped, integer keys "#<n>"), plus a table entry for each
 * nested table so empty ones survive. The archive lives in a Lua box (metastep.Archive)
 * from before it is made, so a raise while encoding (a function value, a cycle) frees it.
 * A value that cannot be saved is misuse and raises; a file that cannot be written or read
 * is a runtime failure: nil and a message, as io.open.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lms.h"

#define LMS_ARCHIVE "metastep.Archive"
#define MAXDEPTH 100

typedef struct abox {
  ms_archive *a;
} abox;

static int abox_gc(lua_State *L) {
  abox *b = luaL_checkudata(L, 1, LMS_ARCHIVE);
  ms_archive_free(b->a);
  b->a = NULL;
  return 0;
}

static abox *newabox(lua_State *L) {
  abox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->a = NULL;
  luaL_setmetatable(L, LMS_ARCHIVE);
  return b;
}

/* ---- encoding ---- */

typedef struct path {
  char s[MS_ARCHIVE_MAXNAME + 1];
  size_t n;
} path;

/* Appends "/" (unless at the root) and the key at idx; raises for a key that cannot be one. */
static void push_key(lua_State *L, path *p, int idx, const char *who) {
  char comp[MS_ARCHIVE_MAXNAME + 1];
  size_t n = 0;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    if (!lua_isinteger(L, idx))
      luaL_error(L, "%s: key %s at '%s' is not an integer (keys must be strings or integers)", who,
                 lua_tostring(L, idx), p->s);
    n = (size_t)snprintf(comp, sizeof comp, "#%lld", (long long)lua_tointeger(L, idx));
  } else if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *k = lua_tolstring(L, idx, &len);
    if (len == 0) comp[n++] = '%';
    for (size_t i = 0; i < len && n + 3 < sizeof comp; i++) {
      unsigned char c = (unsigned char)k[i];
      if (c == '%' || c == '/' || c == 0 || (c == '#' && i == 0))
        n += (size_t)snprintf(comp + n, sizeof comp - n, "%%%02X", c);
      else
        comp[n++] = (char)c;
    }
    if (n + 3 >= sizeof comp) luaL_error(L, "%s: key at '%s' is too long", who, p->s);
  } else {
    luaL_error(L, "%s: a %s key at '%s' (keys must be strings or integers)", who,
               luaL_typename(L, idx), p->s);
  }
  size_t need = p->n + (p->n ? 1 : 0) + n;
  if (need > MS_ARCHIVE_MAXNAME)
    luaL_error(L, "%s: the path '%s/...' is longer than %d bytes", who, p->s, MS_ARCHIVE_MAXNAME);
  if (p->n) p->s[p->n++] = '/';
  memcpy(p->s + p->n, comp, n);
  p->n += n;
  p->s[p->n] = '\0';
}

static void put(lua_State *L, int st) {
  if (st) lms_error(L);
}

/* Stores the value at idx under p. seen (a table at index seen) marks the tables being
 * encoded, to refuse cycles. root: the top table of ms.save gets no table entry. */
static void encode(lua_State *L, ms_archive *a, int idx, path *p, int seen, int depth,
                   const char *who) {
  const char *where = p->n ? p->s : "(top)";
  switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
      put(L, ms_archive_put_boolean(a, p->s, lua_toboolean(L, idx)));
      return;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx))
        put(L, ms_archive_put_integer(a, p->s, (int64_t)lua_tointeger(L, idx)));
      else
        put(L, ms_archive_put_number(a, p->s, lua_tonumber(L, idx)));
      return;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      put(L, ms_archive_put_lstring(a, p->s, s, len));
      return;
    }
    case LUA_TUSERDATA: {
      ms_tensor *t = lms_testtensor(L, idx);
      if (t) {
        put(L, ms_archive_put_tensor(a, p->s, t));
        return;
      }
      if (lms_isreleased(L, idx))
        luaL_error(L, "%s: the tensor at '%s' has been released", who, where);
      break;
    }
    case LUA_TTABLE: {
      if (depth >= MAXDEPTH)
        luaL_error(L, "%s: tables nested deeper than %d at '%s'", who, MAXDEPTH, where);
      if (lua_getmetatable(L, idx))
        luaL_error(L, "%s: the table at '%s' has a metatable (only plain tables are saved)", who,
                   where);
      lua_pushvalue(L, idx);
      if (lua_rawget(L, seen) != LUA_TNIL)
        luaL_error(L, "%s: cyclic table at '%s' (it contains itself)", who, where);
      lua_pop(L, 1);
      lua_pushvalue(L, idx);
      lua_pushboolean(L, 1);
      lua_rawset(L, seen);
      if (depth > 0) put(L, ms_archive_put_table(a, p->s));
      luaL_checkstack(L, 4, "ms.save: nesting");
      size_t n0 = p->n;
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        int top = lua_gettop(L);
        push_key(L, p, top - 1, who);
        encode(L, a, top, p, seen, depth + 1, who);
        p->n = n0;
        p->s[n0] = '\0';
        lua_pop(L, 1);
      }
      lua_pushvalue(L, idx);
      lua_pushnil(L);
      lua_rawset(L, seen);
      return;
    }
    default:
      break;
  }
  const char *tn = luaL_typename(L, idx);
  if (lua_type(L, idx) == LUA_TUSERDATA && luaL_getmetafield(L, idx, "__name") == LUA_TSTRING) {
    tn = lua_tostring(L, -1);
  }
  luaL_error(L,
             "%s: the value at '%s' is a %s (expected a tensor, number, string, boolean or "
             "table of these)",
             who, where, tn);
}

void lms_archive_encode(lua_State *L, int idx, ms_archive *a, const char *prefix, const char *who) {
  idx = lua_absindex(L, idx);
  path *p = lua_newuserdatauv(L, sizeof *p, 0);
  snprintf(p->s, sizeof p->s, "%s", prefix);
  p->n = strlen(p->s);
  lua_newtable(L);
  int seen = lua_gettop(L);
  /* under a prefix a table is marked like any nested one (depth 1) */
  encode(L, a, idx, p, seen, p->n ? 1 : 0, who);
  lua_pop(L, 2);
}

/* ---- decoding ---- */

/* Pushes the key that component c (n bytes) encodes; raises on a malformed one. */
static void push_component(lua_State *L, const char *c, size_t n, const char *name,
                           const char *who) {
  if (n > 0 && c[0] == '#') {
    char buf[32];
    char *end;
    if (n < 2 || n > 21) goto bad;
    memcpy(buf, c + 1, n - 1);
    buf[n - 1] = '\0';
    if (!(buf[0] == '-' || (buf[0] >= '0' && buf[0] <= '9'))) goto bad;
    long long v = strtoll(buf, &end, 10);
    if (*end != '\0') goto bad;
    lua_pushinteger(L, (lua_Integer)v);
    return;
  }
  if (n == 1 && c[0] == '%') {
    lua_pushliteral(L, "");
    return;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i++) {
    if (c[i] != '%') {
      luaL_addchar(&b, c[i]);
      continue;
    }
    char hex[3] = {0, 0, 0};
    if (i + 2 >= n) goto bad;
    hex[0] = c[i + 1];
    hex[1] = c[i + 2];
    char *end;
    long v = strtol(hex, &end, 16);
    if (*end != '\0' || hex[0] == '-' || hex[0] == '+' || hex[0] == ' ') goto bad;
    luaL_addchar(&b, (char)v);
    i += 2;
  }
  luaL_pushresult(&b);
  return;
bad:
  luaL_error(L, "%s: entry '%s' has a malformed path component '%.*s'", who, name, (int)n, c);
}

/* Pushes the value of entry name (not a table entry). */
static void push_entry(lua_State *L, const ms_archive *a, const char *name, ms_archive_kind kind) {
  int st = MS_OK;
  switch (kind) {
    case MS_ARCHIVE_TENSOR: {
      ms_tensor **box = lms_newbox(L);
      st = ms_archive_get_tensor(a, name, box);
      break;
    }
    case MS_ARCHIVE_NUMBER: {
      double v = 0;
      st = ms_archive_get_number(a, name, &v);
      lua_pushnumber(L, v);
      break;
    }
    case MS_ARCHIVE_INTEGER: {
      int64_t v = 0;
      st = ms_archive_get_integer(a, name, &v);
      lua_pushinteger(L, (lua_Integer)v);
      break;
    }
    case MS_ARCHIVE_STRING: {
      const char *s = "";
      size_t len = 0;
      st = ms_archive_get_string(a, name, &s, &len);
      lua_pushlstring(L, s, len);
      break;
    }
    case MS_ARCHIVE_BOOLEAN: {
      int v = 0;
      st = ms_archive_get_boolean(a, name, &v);
      lua_pushboolean(L, v);
      break;
    }
    default:
      lua_newtable(L);
      break;
  }
  if (st) lms_error(L);
}

void lms_archive_decode(lua_State *L, const ms_archive *a, const char *prefix, const char *who) {
  size_t plen = strlen(prefix);
  ms_archive_kind k0 = ms_archive_find(a, prefix);
  if (k0 != MS_ARCHIVE_NONE && k0 != MS_ARCHIVE_TABLE) {
    push_entry(L, a, prefix, k0);
    return;
  }
  int64_t count = ms_archive_count(a);
  lua_newtable(L);
  int root = lua_gettop(L);
  int any = k0 == MS_ARCHIVE_TABLE;
  luaL_checkstack(L, MAXDEPTH + 8, "ms.load: nesting");
  for (int64_t i = 0; i < count; i++) {
    const char *name;
    ms_archive_kind kind;
    ms_archive_entry(a, i, &name, &kind);
    const char *rest;
    if (plen == 0) {
      if (name[0] == '\0') {
        if (kind == MS_ARCHIVE_TABLE) continue; /* the top table itself */
        luaL_error(L, "%s: the top-level value '' appears beside other entries", who);
      }
      rest = name;
    } else {
      if (strncmp(name, prefix, plen) != 0 || name[plen] != '/') continue;
      rest = name + plen + 1;
    }
    any = 1;
    /* walk the components, creating tables, up to the last one */
    lua_pushvalue(L, root);
    int depth = 0;
    for (;;) {
      const char *slash = strchr(rest, '/');
      size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
      if (++depth > MAXDEPTH) luaL_error(L, "%s: entry '%s' is nested too deeply", who, name);
      push_component(L, rest, n, name, who);
      if (!slash) break;
      lua_pushvalue(L, -1);
      int t = lua_rawget(L, -3);
      if (t == LUA_TNIL) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        lua_rawset(L, -5);
      } else if (t != LUA_TTABLE) {
        luaL_error(L, "%s: entry '%s' lies below an entry that is not a table", who, name);
      }
      lua_remove(L, -2); /* the key */
      lua_remove(L, -2); /* the parent */
      rest = slash + 1;
    }
    /* stack: parent, key */
    lua_pushvalue(L, -1);
    int t = lua_rawget(L, -3);
    lua_pop(L, 1);
    if (kind == MS_ARCHIVE_TABLE) {
      if (t == LUA_TNIL) {
        lua_newtable(L);
        lua_rawset(L, -3);
      } else if (t != LUA_TTABLE) {
        luaL_error(L, "%s: entry '%s' is stored twice", who, name);
      } else {
        lua_pop(L, 1);
      }
    } else {
      if (t != LUA_TNIL)
        luaL_error(L, "%s: entry '%s' clashes with a table of the same path", who, name);
      push_entry(L, a, name, kind);
      lua_rawset(L, -3);
    }
    lua_pop(L, 1); /* parent */
  }
  if (!any && plen > 0) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
}

/* ---- ms.save / ms.load ---- */

/* The engine's "ms_archive_save: " / "ms_archive_load: " prefix becomes the Lua name. */
static void push_file_error(lua_State *L, const char *who) {
  const char *m = ms_ctx_error(lms_ctx(L));
  const char *colon = strstr(m, ": ");
  if (strncmp(m, "ms_archive_", 11) == 0 && colon) m = colon + 2;
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", who, m);
}

/* save(path, value) -> true, or nil and a message when the file cannot be written. */
static int l_save(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  luaL_checkany(L, 2);
  if (lua_isnil(L, 2)) luaL_argerror(L, 2, "a value to save expected, got nil");
  lua_settop(L, 2);
  abox *b = newabox(L);
  if (ms_archive_new(lms_ctx(L), &b->a)) return lms_error(L);
  lms_archive_encode(L, 2, b->a, "", "ms.save");
  int st = ms_archive_save(b->a, p);
  ms_archive_free(b->a);
  b->a = NULL;
  if (st) {
    push_file_error(L, "ms.save");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int decode_k(lua_State *L) {
  const ms_archive *a = lua_touserdata(L, 1);
  lms_archive_decode(L, a, "", "ms.load");
  return 1;
}

/* load(path) -> value, or nil and a message when the file cannot be read or is not valid. */
static int l_load(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  abox *b = newabox(L);
  if (ms_archive_load(lms_ctx(L), p, &b->a)) {
    if (ms_ctx_status(lms_ctx(L)) == MS_ENOMEM) return lms_error(L);
    push_file_error(L, "ms.load");
    return 2;
  }
  lua_pushcfunction(L, decode_k);
  lua_pushlightuserdata(L, b->a);
  int st = lua_pcall(L, 1, 1, 0);
  ms_archive_free(b->a);
  b->a = NULL;
  if (st != LUA_OK) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s ('%s')", lua_tostring(L, -2), p);
    return 2;
  }
  return 1;
}

static const luaL_Reg functions[] = {{"save", l_save}, {"load", l_load}, {NULL, NULL}};

void lms_open_archive(lua_State *L) {
  if (luaL_newmetatable(L, LMS_ARCHIVE)) {
    lua_pushcfunction(L, abox_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, abox_gc);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, functions, 0);
}
