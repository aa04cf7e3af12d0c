/*
 * System helpers of the front library that stock Lua lacks: running a program with an argument
 * vector (never through a shell, so no user string is ever parsed as shell code), to completion
 * with redirections (spawn) or with pipes to talk to it (spawn_pipes, wait); asking whether a
 * file handle is a terminal; reading the embedded front library's sources (help() parses the
 * annotations of metastep/doc.lua from there); a monotonic clock; the thread setting of the
 * context's matrix products and their counter.
 */
#define _POSIX_C_SOURCE 200809L
#define _GNU_SOURCE /* pipe2 */

#include <errno.h>
#include <fcntl.h>
#include <lualib.h>
#include <signal.h>
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

/* The argument vector of the list of strings at index 1, NULL-terminated, in a userdata pushed
 * on the stack (collected on error); its strings stay anchored in the list. Raises "<who>:
 * argv[i] must be a string" for anything else. */
static char **check_argv(lua_State *L, const char *who) {
  lua_Integer n = luaL_len(L, 1);
  luaL_argcheck(L, n >= 1 && n < 4096, 1, "expected a non-empty list of strings");
  char **argv = (char **)lua_newuserdatauv(L, (size_t)(n + 1) * sizeof(char *), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 1, i) != LUA_TSTRING)
      luaL_error(L, "%s: argv[%I] must be a string, got %s", who, i, luaL_typename(L, -1));
    argv[i - 1] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  argv[n] = NULL;
  return argv;
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
  const char *in = optpath(L, 2, "stdin");
  const char *out = optpath(L, 2, "stdout");
  const char *err = optpath(L, 2, "stderr");
  const char **argv = (const char **)check_argv(L, "spawn");
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

/* ms.core.clock(): seconds on the monotonic clock (wall time, for benchmarks; os.clock is CPU
 * time, which counts every BLAS thread). */
static int sys_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + 1e-9 * (lua_Number)ts.tv_nsec);
  return 1;
}

/* ms.core.set_threads(n): n >= 1 threads for every matrix product, 0 = by size. */
static int sys_set_threads(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= 4096, 1, "expected a thread count >= 1, or 0 = by size");
  ms_ctx_set_threads(lms_ctx(L), (int)n);
  return 0;
}

/* ms.core.threads([work]): the setting (0 = by size), or the threads a product of `work`
 * multiply-adds gets. */
static int sys_threads(lua_State *L) {
  ms_ctx *ctx = lms_ctx(L);
  if (lua_isnoneornil(L, 1)) {
    lua_pushinteger(L, ms_ctx_threads(ctx));
  } else {
    lua_Integer work = luaL_checkinteger(L, 1);
    luaL_argcheck(L, work >= 0, 1, "expected a number of multiply-adds >= 0");
    lua_pushinteger(L, ms_linalg_threads(ctx, (int64_t)work));
  }
  return 1;
}

/* ms.core.products(): matrix products made so far (ms_ctx_products). */
static int sys_products(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ms_ctx_products(lms_ctx(L)));
  return 1;
}

static int file_close(lua_State *L) {
  luaL_Stream *p = (luaL_Stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  return luaL_fileresult(L, fclose(p->f) == 0, NULL);
}

/* A closed io file handle (closef NULL), to be opened once the process runs. */
static luaL_Stream *new_file(lua_State *L) {
  luaL_Stream *p = (luaL_Stream *)lua_newuserdatauv(L, sizeof *p, 0);
  p->f = NULL;
  p->closef = NULL;
  luaL_setmetatable(L, LUA_FILEHANDLE);
  return p;
}

static void close_fds(int *fds, int n) {
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) close(fds[i]);
}

/*
 * ms.core.spawn_pipes(argv): starts argv[1] (searched in PATH) with arguments argv[2..] and returns
 * {pid = n, stdin = file, stdout = file}, the child's standard input and output as io files
 * (its standard error is ours); nil and a message when the process cannot be started.
 * Everything that can raise runs before a descriptor exists.
 */
static int sys_spawn_pipes(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  char **argv = check_argv(L, "spawn_pipes");
  luaL_Stream *in = new_file(L), *out = new_file(L);
  lua_createtable(L, 0, 3);
  int fds[4] = {-1, -1, -1, -1}; /* to the child: read, write; from it: read, write */
  posix_spawn_file_actions_t fa;
  if (pipe2(fds, O_CLOEXEC) != 0 || pipe2(fds + 2, O_CLOEXEC) != 0) {
    int e = errno;
    close_fds(fds, 4);
    lua_pushnil(L);
    lua_pushfstring(L, "spawn_pipes: cannot make a pipe: %s", strerror(e));
    return 2;
  }
  /* a child that exits early must not kill us with SIGPIPE: writes get EPIPE instead (and the
   * child gets the default action back) */
  signal(SIGPIPE, SIG_IGN);
  posix_spawnattr_t at;
  sigset_t def;
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);
  int e_at = posix_spawnattr_init(&at), e_fa = posix_spawn_file_actions_init(&fa);
  int e = e_at ? e_at : e_fa;
  if (!e) e = posix_spawnattr_setsigdefault(&at, &def);
  if (!e) e = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF);
  if (!e) e = posix_spawn_file_actions_adddup2(&fa, fds[0], 0);
  if (!e) e = posix_spawn_file_actions_adddup2(&fa, fds[3], 1);
  pid_t pid = -1;
  if (!e) e = posix_spawnp(&pid, argv[0], &fa, &at, argv, environ);
  if (!e_fa) posix_spawn_file_actions_destroy(&fa);
  if (!e_at) posix_spawnattr_destroy(&at);
  close(fds[0]);
  close(fds[3]);
  if (e) {
    close(fds[1]);
    close(fds[2]);
    lua_pushnil(L);
    lua_pushfstring(L, "spawn_pipes: cannot start '%s': %s", argv[0], strerror(e));
    return 2;
  }
  in->f = fdopen(fds[1], "w");
  out->f = fdopen(fds[2], "r");
  if (in->f) in->closef = file_close;
  if (out->f) out->closef = file_close;
  if (!in->f) close(fds[1]);
  if (!out->f) close(fds[2]);
  lua_pushinteger(L, (lua_Integer)pid);
  lua_setfield(L, -2, "pid");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "stdin");
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "stdout");
  return 1;
}

/* ms.core.wait(pid): waits for a spawned process; its exit status (128 + n for signal n). */
static int sys_wait(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int status = 0;
  pid_t r;
  do {
    r = waitpid((pid_t)pid, &status, 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return luaL_fileresult(L, 0, "wait");
  lua_pushinteger(L, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  return 1;
}

static const luaL_Reg sys_functions[] = {{"front_source", l_front_source},
                                         {"isatty", l_isatty},
                                         {"spawn", l_spawn},
                                         {"clock", sys_clock},
                                         {"set_threads", sys_set_threads},
                                         {"threads", sys_threads},
                                         {"products", sys_products},
                                         {"spawn_pipes", sys_spawn_pipes},
                                         {"wait", sys_wait},
                                         {NULL, NULL}};

void lms_open_sys(lua_State *L) { luaL_setfuncs(L, sys_functions, 0); }
