/*
 * System helpers of the front library that stock Lua lacks: a monotonic clock, running a program
 * with an argument vector (never through a shell, so no user string is ever parsed as shell code),
 * asking whether a file handle is a terminal, and reading the embedded front library's
 * sources (help() parses the annotations of metastep/doc.lua from there).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <lualib.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lms.h"

extern char **environ;

/* The same layout as in lms_preload.c and the generated front_lua.c. */
struct lms_embedded {
  const char *name, *chunk, *src;
  size_t len;
};
extern const struct lms_embedded lms_front_lua[];

/* front_source(name) -> the source text of embedded module name, or nil. */
static int l_front_source(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  for (int i = 0; lms_front_lua[i].name != NULL; i++) {
    if (strcmp(lms_front_lua[i].name, name) == 0) {
      lua_pushlstring(L, lms_front_lua[i].src, lms_front_lua[i].len);
      return 1;
    }
  }
  lua_pushnil(L);
  return 1;
}

/* isatty(file) -> true if file is a Lua file handle open on a terminal (false for anything
 * else, such as a table standing in for io.stderr). */
static int l_isatty(lua_State *L) {
  luaL_Stream *p = (luaL_Stream *)luaL_testudata(L, 1, LUA_FILEHANDLE);
  lua_pushboolean(L, p != NULL && p->closef != NULL && p->f != NULL && isatty(fileno(p->f)));
  return 1;
}

/* Field name of the options table at arg: a string or nil. */
static const char *optpath(lua_State *L, int arg, const char *name) {
  if (lua_isnoneornil(L, arg)) return NULL;
  int t = lua_getfield(L, arg, name);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  if (t != LUA_TSTRING)
    luaL_error(L, "spawn: option '%s' must be a file name, got %s", name, lua_typename(L, t));
  return lua_tostring(L, -1); /* stays on the stack, so it stays alive */
}

/*
 * spawn(argv [, {stdin =, stdout =, stderr =}]) -> true | nil, "exit" | "signal", code
 * (os.execute's results) or nil, message when the program cannot be started. argv[1] is
 * looked up in PATH (posix_spawnp); stdin/stdout/stderr name files to redirect from or to
 * (stdout and stderr are truncated). No shell is involved.
 */
static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_Integer n = luaL_len(L, 1);
  luaL_argcheck(L, n >= 1 && n < 4096, 1, "expected a non-empty list of strings");
  const char *in = optpath(L, 2, "stdin");
  const char *out = optpath(L, 2, "stdout");
  const char *err = optpath(L, 2, "stderr");
  /* the vector lives in a userdata (collected on error); its strings are anchored in argv */
  const char **argv = (const char **)lua_newuserdatauv(L, (size_t)(n + 1) * sizeof(char *), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 1, i) != LUA_TSTRING) {
      return luaL_error(L, "spawn: argv[%I] must be a string, got %s", i, luaL_typename(L, -1));
    }
    argv[i - 1] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  argv[n] = NULL;
  posix_spawn_file_actions_t fa;
  if (posix_spawn_file_actions_init(&fa) != 0) return luaL_error(L, "spawn: out of memory");
  int rc = 0;
  if (in != NULL) rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, in, O_RDONLY, 0);
  if (rc == 0 && out != NULL)
    rc = posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out, O_WRONLY | O_CREAT | O_TRUNC,
                                          0666);
  if (rc == 0 && err != NULL)
    rc = posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err, O_WRONLY | O_CREAT | O_TRUNC,
                                          0666);
  pid_t pid = 0;
  if (rc == 0) rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", argv[0], strerror(rc));
    return 2;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      lua_pushnil(L);
      lua_pushfstring(L, "%s: waitpid: %s", argv[0], strerror(errno));
      return 2;
    }
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    lua_pushboolean(L, 1);
  else
    lua_pushnil(L);
  lua_pushstring(L, WIFSIGNALED(status) ? "signal" : "exit");
  lua_pushinteger(L, WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
  return 3;
}

/* clock() -> seconds of a monotonic wall clock (progress rates; os.clock is CPU time). */
static int l_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}

void lms_open_sys(lua_State *L) {
  static const luaL_Reg fns[] = {{"front_source", l_front_source},
                                 {"isatty", l_isatty},
                                 {"spawn", l_spawn},
                                 {"clock", l_clock},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
