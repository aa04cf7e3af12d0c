/*
 * The `metastep` executable: a Lua 5.4 interpreter with the metastep library preloaded.
 *
 * Shaped like the stock lua.c: all of main runs inside lua_pcall with a message handler
 * that appends a traceback; SIGINT during a call sets a hook that raises "interrupted!"
 * and also asks the engine context to stop, so long C loops return MS_EINTERRUPT.
 * Options: -e stat, -l mod, -l g=mod, -i, -v, -E, -W, --, - (see print_usage).
 * The REPL uses readline with history in ~/.metastep_history.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include "lms.h"
#include "metastep/metastep.h"

#define PROGNAME "metastep"
#define VERSION_LINE PROGNAME " " METASTEP_VERSION " (" LUA_RELEASE ")"
#define BANNER VERSION_LINE "  help() lists the modules"
#define INIT_VAR "LUA_INIT"
#define INIT_VAR_VERSION INIT_VAR LUA_VERSUFFIX
#define PROMPT1 "> "
#define PROMPT2 ">> "
#define HISTORY_FILE ".metastep_history"
#define HISTORY_MAX 1000
#define EOFMARK "<eof>"
#define EOFMARK_LEN (sizeof(EOFMARK) - 1)

/*
 * Host statics. The engine keeps no global state, but a signal handler can only reach
 * the running state and its context through statics; they are set before any handler
 * is installed and cleared before the state is closed.
 */
static lua_State *global_L = NULL;
static ms_ctx *global_ctx = NULL;
/* NULL in the REPL, where error messages carry no program name (as in lua.c). */
static const char *progname = PROGNAME;

/* ---------------------------------------------------------------- messages */

#define USAGE_TEXT                                                                   \
  "usage: %s [options] [script [args]]\n"                                            \
  "Available options are:\n"                                                         \
  "  -e stat   execute string 'stat'\n"                                              \
  "  -i        enter interactive mode after executing 'script'\n"                    \
  "  -l mod    require library 'mod' into global 'mod'\n"                            \
  "  -l g=mod  require library 'mod' into global 'g'\n"                              \
  "  -v        show version information\n"                                           \
  "  -E        ignore environment variables\n"                                       \
  "  -W        turn warnings on\n"                                                   \
  "  --help    show this help and exit\n"                                            \
  "  --        stop handling options\n"                                              \
  "  -         stop handling options and execute stdin\n"                            \
  "Without a script, an interactive prompt (when stdin is a terminal) with the\n"    \
  "global ms = require \"metastep\", Tab completion and help(f) for any function.\n" \
  "Environment: LUA_INIT_5_4 / LUA_INIT (code or @file run first), LUA_PATH.\n"

static void print_usage(const char *badoption) {
  fprintf(stderr, "%s: ", PROGNAME);
  if (badoption[1] == 'e' || badoption[1] == 'l')
    fprintf(stderr, "'%s' needs argument\n", badoption);
  else
    fprintf(stderr, "unrecognized option '%s'\n", badoption);
  fprintf(stderr, USAGE_TEXT, PROGNAME);
  fflush(stderr);
}

/* metastep --help: the usage on stdout, exit status 0. */
static void print_help(void) {
  printf("%s\n", VERSION_LINE);
  printf(USAGE_TEXT, PROGNAME);
  fflush(stdout);
}

static void message(const char *pname, const char *msg) {
  if (pname != NULL) fprintf(stderr, "%s: ", pname);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

/* Prints the error message on top of the stack (if status is an error) and pops it. */
static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    message(progname, msg != NULL ? msg : "(error object is not a string)");
    lua_pop(L, 1);
  }
  return status;
}

static void print_version(void) {
  lua_writestring(VERSION_LINE, strlen(VERSION_LINE));
  lua_writeline();
}

/* ---------------------------------------------------------------- SIGINT */

/* Installs a SIGINT action; no SA_RESTART so a blocking select() returns EINTR. */
static void set_sigint(void (*handler)(int)) {
  struct sigaction sa;
  sa.sa_handler = handler;
  sa.sa_flags = 0;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
}

/*
 * Threads running now, outermost first: the main thread's call, then each coroutine resumed
 * through the host's coroutine.resume / coroutine.wrap (see co_resume). Lua hooks are per
 * thread, so a Ctrl-C must arm the hook of the coroutine that is looping, not only the main
 * thread's; arming the whole chain also stops a resumer that ignores the error and resumes
 * again. Written only outside the handler, read by it: the count is published last.
 */
#define MAX_RUNNING 256
static lua_State *running[MAX_RUNNING];
static volatile sig_atomic_t nrunning = 0;
/* Ctrl-C presses since the current call started (0 = no interrupt pending). */
static volatile sig_atomic_t interrupts = 0;

static int msghandler(lua_State *L);

/*
 * Hook installed by the signal handler: runs at the next safe point of the Lua code.
 * If that point is the call of the message handler, an error (typically the engine's
 * "...: interrupted") is already on its way out: let it through instead of replacing it.
 */
static void lstop(lua_State *L, lua_Debug *ar) {
  int in_handler = 0;
  if (ar->event == LUA_HOOKCALL && lua_getinfo(L, "f", ar)) {
    in_handler = lua_tocfunction(L, -1) == msghandler;
    lua_pop(L, 1);
  }
  lua_sethook(L, NULL, 0, 0);
  if (!in_handler) luaL_error(L, "interrupted!");
}

static void arm(lua_State *L) {
  lua_sethook(L, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

#define STILL_RUNNING \
  "\n" PROGNAME ": still running (a C call that does not poll?); Ctrl-C once more kills it\n"

/*
 * SIGINT during a protected call. lua_sethook, ms_ctx_interrupt and write are
 * async-signal-safe: the hooks stop Lua code (on every running thread), the engine flag
 * stops C loops that never reach a hook. The handler stays installed, so a second Ctrl-C
 * (an impatient user) does not kill the REPL: it re-arms the hooks, warns and restores the
 * default action, so a third one during the same call kills a process stuck in C.
 */
static void laction(int sig) {
  int i, n = nrunning;
  (void)sig;
  interrupts = interrupts + 1;
  if (interrupts >= 2) {
    ssize_t w = write(STDERR_FILENO, STILL_RUNNING, sizeof(STILL_RUNNING) - 1);
    (void)w;
    set_sigint(SIG_DFL);
  }
  if (global_ctx != NULL) ms_ctx_interrupt(global_ctx);
  if (global_L != NULL) arm(global_L);
  for (i = 0; i < n && i < MAX_RUNNING; i++) arm(running[i]);
}

/* ---------------------------------------------------------------- coroutines */

/*
 * Resumes co with the narg values on top of L (lcorolib's auxresume), with co pushed on
 * the running stack meanwhile. Returns the number of results moved to L, or -1 with the
 * error message on top of L.
 */
static int co_auxresume(lua_State *L, lua_State *co, int narg) {
  int status, nres, n = nrunning;
  lua_Debug ar;
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  if (lua_status(co) == LUA_OK && !lua_getstack(co, 0, &ar) && lua_gettop(co) == 0) {
    lua_pushliteral(L, "cannot resume dead coroutine");
    return -1;
  }
  /* a hook armed by a Ctrl-C of an earlier call, left on a coroutine suspended since */
  if (interrupts == 0 && lua_gethook(co) == lstop) lua_sethook(co, NULL, 0, 0);
  lua_xmove(L, co, narg);
  if (n < MAX_RUNNING) running[n] = co;
  nrunning = n + 1;
  if (interrupts > 0) arm(co); /* the Ctrl-C came while resuming */
  status = lua_resume(co, L, narg, &nres);
  nrunning = n;
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1);
  return -1;
}

static lua_State *co_check(lua_State *L, int arg) {
  lua_State *co = lua_tothread(L, arg);
  luaL_argexpected(L, co != NULL, arg, "coroutine");
  return co;
}

/* coroutine.resume(co, ...) */
static int co_resume(lua_State *L) {
  lua_State *co = co_check(L, 1);
  int r = co_auxresume(L, co, lua_gettop(L) - 1);
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

/* The function returned by coroutine.wrap (lcorolib's auxwrap). */
static int co_auxwrap(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  int r = co_auxresume(L, co, lua_gettop(L));
  if (r < 0) {
    int stat = lua_status(co);
    if (stat != LUA_OK && stat != LUA_YIELD) { /* an error in the coroutine: close it */
#if LUA_VERSION_RELEASE_NUM >= 50406
      stat = lua_closethread(co, L);
#else
      stat = lua_resetthread(co);
#endif
      lua_xmove(co, L, 1);
    }
    if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    return lua_error(L);
  }
  return r;
}

/* coroutine.wrap(f) */
static int co_wrap(lua_State *L) {
  lua_State *co;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, co_auxwrap, 1);
  return 1;
}

/* Replaces coroutine.resume and coroutine.wrap by the tracked versions above. */
static void set_coroutines(lua_State *L) {
  if (lua_getglobal(L, "coroutine") == LUA_TTABLE) {
    lua_pushcfunction(L, co_resume);
    lua_setfield(L, -2, "resume");
    lua_pushcfunction(L, co_wrap);
    lua_setfield(L, -2, "wrap");
  }
  lua_pop(L, 1);
}

/* ---------------------------------------------------------------- protected calls */

/* Message handler: turns the error object into a string and appends a traceback. */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/*
 * Calls the function under narg arguments with the traceback handler, with SIGINT
 * armed only for the duration of the call (as lua.c does). The engine's interrupt
 * flag is cleared first so a Ctrl-C that arrived between calls does not stop the
 * next one, and a hook left behind by a late signal is removed afterwards.
 */
static int docall(lua_State *L, int narg, int nres) {
  int status;
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  global_L = L;
  if (global_ctx != NULL) ms_ctx_clear_interrupt(global_ctx);
  interrupts = 0;
  nrunning = 0;
  set_sigint(laction);
  status = lua_pcall(L, narg, nres, base);
  set_sigint(SIG_DFL);
  interrupts = 0;
  nrunning = 0;
  if (lua_gethook(L) == lstop) lua_sethook(L, NULL, 0, 0);
  lua_remove(L, base);
  return status;
}

static int dochunk(lua_State *L, int status) {
  if (status == LUA_OK) status = docall(L, 0, 0);
  return report(L, status);
}

/* name == NULL reads stdin. */
static int dofile(lua_State *L, const char *name) { return dochunk(L, luaL_loadfile(L, name)); }

static int dostring(lua_State *L, const char *s, const char *name) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l mod or -l g=mod: global g = require(mod). */
static int dolibrary(lua_State *L, const char *spec) {
  int status;
  const char *eq = strchr(spec, '=');
  const char *modname = eq != NULL ? eq + 1 : spec;
  lua_getglobal(L, "require");
  lua_pushstring(L, modname);
  status = docall(L, 1, 1);
  if (status == LUA_OK) {
    if (eq != NULL)
      lua_pushlstring(L, spec, (size_t)(eq - spec));
    else
      lua_pushstring(L, spec);
    lua_insert(L, -2);
    lua_setglobal(L, lua_tostring(L, -2));
    lua_pop(L, 1);
  }
  return report(L, status);
}

/*
 * The global `ms` = require "metastep" (as th preloads torch), and the REPL's printer
 * module. A failure is reported and the interpreter goes on without them.
 */
static void preload_ms(lua_State *L) {
  if (dolibrary(L, "ms=metastep") == LUA_OK) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "metastep.repl");
    report(L, docall(L, 1, 0));
  }
}

/* ---------------------------------------------------------------- arguments */

/* Bits returned by collectargs. */
#define HAS_ERROR 1
#define HAS_I 2
#define HAS_V 4
#define HAS_E 8
#define HAS_BIGE 16
#define HAS_HELP 32

/*
 * Scans the options. *first gets the index of the script name (argc when there is
 * none), or of the bad option when HAS_ERROR is returned.
 */
static int collectargs(char **argv, int argc, int *first) {
  int args = 0;
  int i;
  for (i = 1; i < argc; i++) {
    *first = i;
    if (argv[i][0] != '-') return args; /* the script */
    switch (argv[i][1]) {
      case '-': /* "--" or "--help" */
        if (strcmp(argv[i], "--help") == 0) return HAS_HELP;
        if (argv[i][2] != '\0') return HAS_ERROR;
        *first = i + 1;
        return args;
      case '\0': /* "-": the script is stdin */
        return args;
      case 'E':
        if (argv[i][2] != '\0') return HAS_ERROR;
        args |= HAS_BIGE;
        break;
      case 'W':
        if (argv[i][2] != '\0') return HAS_ERROR;
        break;
      case 'i':
        /* Unlike lua.c, -i does not imply -v: the REPL prints its own banner. */
        if (argv[i][2] != '\0') return HAS_ERROR;
        args |= HAS_I;
        break;
      case 'v':
        if (argv[i][2] != '\0') return HAS_ERROR;
        args |= HAS_V;
        break;
      case 'e':
        args |= HAS_E;
        /* fallthrough */
      case 'l':
        if (argv[i][2] == '\0') {
          i++;
          if (i >= argc || argv[i][0] == '-') {
            *first = i - 1;
            return HAS_ERROR;
          }
        }
        break;
      default:
        return HAS_ERROR;
    }
  }
  *first = argc;
  return args;
}

/* Runs -e and -l (and -W) in order; returns 0 if one failed. */
static int runargs(lua_State *L, char **argv, int n) {
  int i;
  for (i = 1; i < n; i++) {
    int option = argv[i][1];
    if (option == 'e' || option == 'l') {
      const char *extra = argv[i] + 2;
      int status;
      if (*extra == '\0') extra = argv[++i];
      status = option == 'e' ? dostring(L, extra, "=(command line)") : dolibrary(L, extra);
      if (status != LUA_OK) return 0;
    } else if (option == 'W') {
      lua_warning(L, "@on", 0);
    }
  }
  return 1;
}

/*
 * The global `arg`: arg[0] is the script, its arguments are at 1.., the interpreter
 * and its options at negative indices. Without a script everything is at 0.. (lua.c).
 */
static void createargtable(lua_State *L, char **argv, int argc, int script) {
  int i;
  if (script == argc) script = 0;
  lua_createtable(L, argc - (script + 1), script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* Pushes arg[1..#arg] as the script's varargs. */
static int pushargs(lua_State *L) {
  int i, n;
  if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
  n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -i);
  return n;
}

static int handle_script(lua_State *L, char **argv) {
  int status;
  const char *fname = argv[0];
  /* "-" is stdin, unless it came after "--" */
  if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL;
  status = luaL_loadfile(L, fname);
  if (status == LUA_OK) {
    int n = pushargs(L);
    status = docall(L, n, LUA_MULTRET);
  }
  return report(L, status);
}

/* LUA_INIT_5_4, else LUA_INIT: "@file" runs a file, anything else is code. */
static int handle_luainit(lua_State *L) {
  const char *name = "=" INIT_VAR_VERSION;
  const char *init = getenv(name + 1);
  if (init == NULL) {
    name = "=" INIT_VAR;
    init = getenv(name + 1);
  }
  if (init == NULL) return LUA_OK;
  if (init[0] == '@') return dofile(L, init + 1);
  return dostring(L, init, name);
}

/* ---------------------------------------------------------------- help */

/*
 * The global `help`: the front library's help (lua/metastep/init.lua), the one place
 * help text lives; help(...) passes its arguments on.
 */
static int l_help(lua_State *L) {
  int n = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "metastep");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stdout, "help: cannot load metastep: %s\n", luaL_tolstring(L, -1, NULL));
    fflush(stdout);
    return 0;
  }
  if (!lua_istable(L, -1) || lua_getfield(L, -1, "help") != LUA_TFUNCTION) {
    fprintf(stdout, "help: require \"metastep\" has no help function\n");
    fflush(stdout);
    return 0;
  }
  lua_insert(L, 1);
  lua_settop(L, n + 1);
  lua_call(L, n, 0);
  return 0;
}

static void sethelp(lua_State *L) {
  lua_pushcfunction(L, l_help);
  lua_setglobal(L, "help");
}

/* ---------------------------------------------------------------- REPL: line input */

static char *history_path = NULL;
static int history_added = 0; /* entries added this session, appended at exit */

static void history_start(void) {
  const char *home = getenv("HOME");
  using_history();
  if (home == NULL || home[0] == '\0') return;
  history_path = malloc(strlen(home) + sizeof(HISTORY_FILE) + 1);
  if (history_path == NULL) return;
  sprintf(history_path, "%s/%s", home, HISTORY_FILE);
  read_history(history_path); /* a missing file is fine */
}

/* Appends this session's lines (or writes a new file); failures are silent. */
static void history_save(void) {
  if (history_path == NULL) return;
  if (history_added > 0) {
    if (access(history_path, F_OK) == 0) {
      int n = history_added < history_length ? history_added : history_length;
      append_history(n, history_path);
    } else {
      write_history(history_path);
    }
    history_truncate_file(history_path, HISTORY_MAX);
  }
  history_added = 0;
  free(history_path);
  history_path = NULL;
}

static void history_add(const char *line) {
  if (line[0] == '\0') return;
  add_history(line);
  history_added++;
}

/*
 * Line input uses readline's callback interface so Ctrl-C at the prompt can discard
 * the line (instead of killing the process, as lua.c does): SIGINT sets a flag that
 * interrupts select().
 */
#define LINE_EOF 0
#define LINE_OK 1
#define LINE_CANCEL 2

static volatile sig_atomic_t prompt_interrupted = 0;
static char *line_result = NULL;
static int line_done = 0;

static void prompt_sigint(int sig) {
  (void)sig;
  prompt_interrupted = 1;
}

static void on_line(char *line) {
  line_result = line;
  line_done = 1;
  rl_callback_handler_remove();
}

/* Reads one line into *out (malloc'ed, free with free()). */
static int read_line(const char *prompt, char **out) {
  int fd = fileno(rl_instream != NULL ? rl_instream : stdin);
  *out = NULL;
  line_result = NULL;
  line_done = 0;
  prompt_interrupted = 0;
  set_sigint(prompt_sigint);
  rl_callback_handler_install(prompt, on_line);
  while (!line_done) {
    fd_set fds;
    int ready;
    if (prompt_interrupted) {
      rl_echo_signal_char(SIGINT);
      rl_free_line_state();
      rl_callback_sigcleanup();
      rl_cleanup_after_signal();
      rl_callback_handler_remove();
      fputs("\n", rl_outstream != NULL ? rl_outstream : stdout);
      fflush(rl_outstream != NULL ? rl_outstream : stdout);
      set_sigint(SIG_DFL);
      return LINE_CANCEL;
    }
    FD_ZERO(&fds);
    FD_SET(fd, &fds);
    ready = select(fd + 1, &fds, NULL, NULL, NULL);
    if (ready < 0) {
      if (errno == EINTR) continue;
      rl_callback_handler_remove();
      break; /* treat a broken input as end of file */
    }
    if (ready > 0) rl_callback_read_char();
  }
  set_sigint(SIG_DFL);
  if (!line_done || line_result == NULL) return LINE_EOF;
  *out = line_result;
  return LINE_OK;
}

/* The prompt: _PROMPT / _PROMPT2 if set (through tostring, as lua.c), else the defaults. */
static const char *get_prompt(lua_State *L, int firstline) {
  if (lua_getglobal(L, firstline ? "_PROMPT" : "_PROMPT2") == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushstring(L, firstline ? PROMPT1 : PROMPT2);
    return lua_tostring(L, -1);
  }
  {
    const char *p = luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);
    return p;
  }
}

/*
 * The last line read. It is freed at the next read rather than right after being
 * pushed, so a memory error raised while pushing it cannot leak it.
 */
static char *last_line = NULL;

/* Reads a line and pushes it; returns a LINE_* code (nothing pushed unless LINE_OK). */
static int pushline(lua_State *L, int firstline) {
  const char *prompt = get_prompt(L, firstline);
  int rc;
  free(last_line);
  last_line = NULL;
  rc = read_line(prompt, &last_line);
  lua_pop(L, 1); /* the prompt */
  if (rc != LINE_OK) return rc;
  if (firstline && last_line[0] == '=') /* "=expr", kept for compatibility with Lua 5.2 */
    lua_pushfstring(L, "return %s", last_line + 1);
  else
    lua_pushstring(L, last_line);
  return LINE_OK;
}

/* A syntax error ending in "<eof>" means the statement is incomplete: pop it, return 1. */
static int incomplete(lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t lmsg;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    if (lmsg >= EOFMARK_LEN && strcmp(msg + lmsg - EOFMARK_LEN, EOFMARK) == 0) {
      lua_pop(L, 1);
      return 1;
    }
  }
  return 0;
}

/* Tries "return <line>;" so an expression prints its value(s). */
static int addreturn(lua_State *L) {
  const char *line = lua_tostring(L, -1);
  const char *retline = lua_pushfstring(L, "return %s;", line);
  int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
  if (status == LUA_OK) {
    lua_remove(L, -2);
    history_add(line);
  } else {
    lua_pop(L, 2);
  }
  return status;
}

/* Status codes of loadline beyond the Lua ones. */
#define LOAD_EOF (-1)
#define LOAD_CANCEL (-2)

/* Compiles the line at index 1 as a statement, reading continuation lines while incomplete. */
static int multiline(lua_State *L) {
  for (;;) {
    size_t len;
    const char *line = lua_tolstring(L, 1, &len);
    int status = luaL_loadbuffer(L, line, len, "=stdin");
    int rc;
    if (!incomplete(L, status)) {
      history_add(line);
      return status;
    }
    rc = pushline(L, 0);
    if (rc == LINE_CANCEL) {
      history_add(line);
      return LOAD_CANCEL;
    }
    if (rc == LINE_EOF) {
      /* end of input inside a statement: report the incomplete-statement error */
      history_add(line);
      return luaL_loadbuffer(L, line, len, "=stdin");
    }
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3);
  }
}

/* Leaves the compiled chunk (or an error message) alone on the stack. */
static int loadline(lua_State *L) {
  int status;
  int rc;
  lua_settop(L, 0);
  rc = pushline(L, 1);
  if (rc == LINE_EOF) return LOAD_EOF;
  if (rc == LINE_CANCEL) return LOAD_CANCEL;
  if ((status = addreturn(L)) != LUA_OK) status = multiline(L);
  lua_remove(L, 1);
  return status;
}

/* Prints its arguments through the global tostring, separated by tabs. */
static int print_values(lua_State *L) {
  int n = lua_gettop(L);
  int i;
  lua_getglobal(L, "tostring");
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *s;
    lua_pushvalue(L, -1);
    lua_pushvalue(L, i);
    lua_call(L, 1, 1);
    s = lua_tolstring(L, -1, &len);
    if (s == NULL) return luaL_error(L, "'tostring' must return a string");
    if (i > 1) lua_writestring("\t", 1);
    lua_writestring(s, len);
    lua_pop(L, 1);
  }
  lua_writeline();
  return 0;
}

/*
 * Prints the results of a line: through metastep.repl's printer (tables as constructors with
 * a depth limit, meta results as records) when the front library loads, else through
 * tostring like lua.c.
 */
static void repl_print(lua_State *L) {
  int n = lua_gettop(L);
  if (n > 0) {
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_pushcfunction(L, print_values);
    lua_getglobal(L, "package");
    if (lua_istable(L, -1) && lua_getfield(L, -1, "loaded") == LUA_TTABLE &&
        lua_getfield(L, -1, "metastep.repl") == LUA_TTABLE &&
        lua_getfield(L, -1, "print") == LUA_TFUNCTION) {
      lua_replace(L, n + 1);
    }
    lua_settop(L, n + 1);
    lua_insert(L, 1);
    report(L, docall(L, n, 0));
  }
}

/* ---------------------------------------------------------------- REPL: Tab completion */

static lua_State *complete_L = NULL;
static char **complete_list = NULL; /* the candidates of the current word, NULL-terminated */
static size_t complete_next = 0;

static void complete_free(void) {
  size_t i;
  if (complete_list == NULL) return;
  for (i = 0; complete_list[i] != NULL; i++) free(complete_list[i]);
  free(complete_list);
  complete_list = NULL;
}

/* Calls metastep.repl.complete(word) (protected) and keeps a C copy of its list. */
static int complete_lua(lua_State *L) {
  const char *word = (const char *)lua_touserdata(L, 1);
  lua_Integer i, n;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "metastep.repl");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "complete");
  lua_pushstring(L, word);
  lua_call(L, 1, 1);
  luaL_checktype(L, -1, LUA_TTABLE);
  n = luaL_len(L, -1);
  complete_list = calloc((size_t)n + 1, sizeof(char *));
  if (complete_list == NULL) return 0;
  for (i = 1; i <= n; i++) {
    const char *c;
    lua_rawgeti(L, -1, i);
    c = lua_tostring(L, -1);
    complete_list[i - 1] = c != NULL ? strdup(c) : NULL;
    if (complete_list[i - 1] == NULL) break;
    lua_pop(L, 1);
  }
  return 0;
}

/* readline's generator: state 0 computes the list, then hands out one malloc'ed copy per call. */
static char *complete_generator(const char *text, int state) {
  if (state == 0) {
    lua_State *L = complete_L;
    int top = lua_gettop(L);
    complete_free();
    complete_next = 0;
    lua_pushcfunction(L, complete_lua);
    lua_pushlightuserdata(L, (void *)text);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) complete_free(); /* no candidates rather than an error */
    lua_settop(L, top);
  }
  if (complete_list == NULL || complete_list[complete_next] == NULL) return NULL;
  return strdup(complete_list[complete_next++]);
}

static char word_breaks[] = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#[]})";

/* Completes Lua names (never file names): globals, fields after '.', methods after ':'. */
static char **complete(const char *text, int start, int end) {
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1;
  rl_completion_append_character = '\0';
  return rl_completion_matches(text, complete_generator);
}

static void doREPL(lua_State *L) {
  int status;
  const char *oldprogname = progname;
  progname = NULL;
  rl_readline_name = PROGNAME;
  complete_L = L;
  rl_attempted_completion_function = complete;
  /* a Lua name path such as ms.meta.tr or t:sh is one word */
  rl_completer_word_break_characters = word_breaks;
  /* Readline must leave SIGINT to us; it may still track window size changes. */
  rl_catch_signals = 0;
  rl_persistent_signal_handlers = 1;
  history_start();
  atexit(history_save); /* os.exit() from the prompt keeps the history too */
  lua_writestring(BANNER, sizeof(BANNER) - 1);
  lua_writeline();
  for (;;) {
    if (global_ctx != NULL) ms_ctx_clear_interrupt(global_ctx);
    status = loadline(L);
    if (status == LOAD_EOF) break;
    if (status == LOAD_CANCEL) continue;
    if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET);
    if (status == LUA_OK)
      repl_print(L);
    else
      report(L, status);
  }
  lua_settop(L, 0);
  lua_writeline();
  free(last_line);
  last_line = NULL;
  history_save();
  complete_free();
  complete_L = NULL;
  progname = oldprogname;
}

static int stdin_is_tty(void) { return isatty(STDIN_FILENO); }

/* ---------------------------------------------------------------- main */

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int script = argc;
  int args = collectargs(argv, argc, &script);
  int optlim = script;
  luaL_checkversion(L);
  if (args == HAS_ERROR) {
    print_usage(argv[script]);
    return 0;
  }
  if (args == HAS_HELP) {
    print_help();
    lua_pushboolean(L, 1);
    return 1;
  }
  if (args & HAS_V) print_version();
  if (args & HAS_BIGE) { /* tell the package library to ignore LUA_PATH and friends */
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  luaL_openlibs(L);
  set_coroutines(L);
  lms_preload(L);
  global_ctx = lms_ctx(L);
  sethelp(L);
  preload_ms(L);
  createargtable(L, argv, argc, script);
  lua_gc(L, LUA_GCRESTART);
  lua_gc(L, LUA_GCGEN, 0, 0);
  if (!(args & HAS_BIGE) && handle_luainit(L) != LUA_OK) return 0;
  if (!runargs(L, argv, optlim)) return 0;
  if (script < argc && handle_script(L, argv + script) != LUA_OK) return 0;
  if (args & HAS_I) {
    doREPL(L);
  } else if (script == argc && !(args & (HAS_E | HAS_V))) {
    if (stdin_is_tty())
      doREPL(L);
    else if (dofile(L, NULL) != LUA_OK)
      return 0;
  }
  lua_pushboolean(L, 1);
  return 1;
}

int main(int argc, char **argv) {
  int status, result;
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    message(PROGNAME, "cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  lua_gc(L, LUA_GCSTOP); /* no collection while the state is being built */
  lua_pushcfunction(L, msghandler);
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  status = lua_pcall(L, 2, 1, 1);
  result = lua_toboolean(L, -1);
  report(L, status);
  global_ctx = NULL; /* the context dies with the state */
  global_L = NULL;
  lua_close(L);
  return (result && status == LUA_OK) ? EXIT_SUCCESS : EXIT_FAILURE;
}
