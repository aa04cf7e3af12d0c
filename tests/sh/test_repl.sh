#!/usr/bin/env bash
# The metastep REPL driven through a real terminal: tmux on a private socket, a fixed
# window size, keys sent with send-keys and the screen read back with capture-pane.
# Env: METASTEP = path to the executable (default build/metastep). Run from the repo root.
set -u

METASTEP=${METASTEP:-build/metastep}
pass=0
fail=0

. "$(dirname "$0")/lib.sh"

if ! command -v tmux > /dev/null 2>&1; then
  not_ok "tmux is installed"
  finish
fi
if [ ! -x "$METASTEP" ]; then
  not_ok "executable $METASTEP exists"
  finish
fi
case "$METASTEP" in
  /*) exe=$METASTEP ;;
  *) exe=$PWD/$METASTEP ;;
esac

tmp=$(mktemp -d)
target="repl"
# A private server: its socket lives in $tmp, so the cleanup removes it too.
tm() { tmux -S "$tmp/tmux.sock" -f /dev/null "$@"; }
cleanup() {
  tm kill-server > /dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/home"

# Whole pane, scrollback included, wrapped lines joined (trailing blanks kept).
screen() { tm capture-pane -p -J -S - -t "$target" 2> /dev/null; }

# wait_for REGEX [TIMEOUT_S]: polls the screen until a line matches.
wait_for() {
  local re=$1 limit=$((${2:-10} * 20)) i=0
  while [ $i -lt $limit ]; do
    if screen | grep -Eq -- "$re"; then return 0; fi
    sleep 0.05
    i=$((i + 1))
  done
  return 1
}

# wait_prompt [P]: polls until the last non-empty line is the prompt P (default ">",
# trailing blanks dropped since -J keeps them).
wait_prompt() {
  local p=${1:->} i=0
  while [ $i -lt 200 ]; do
    if [ "$(screen | sed -e 's/[[:space:]]*$//' -e '/^$/d' | tail -n 1)" = "$p" ]; then
      return 0
    fi
    sleep 0.05
    i=$((i + 1))
  done
  return 1
}

# type_line TEXT: literal keys (so "end" is not the End key), then Enter.
type_line() {
  tm send-keys -t "$target" -l -- "$1"
  tm send-keys -t "$target" Enter
}

# check NAME REGEX [TIMEOUT_S]
check() {
  if wait_for "$2" "${3:-10}"; then ok "$1"; else not_ok "$1" "$(screen | tail -n 15)"; fi
}

tm new-session -d -s "$target" -x 100 -y 40 -c "$PWD" \
  "env -u LUA_INIT -u LUA_INIT_5_4 HOME='$tmp/home' TERM=xterm '$exe'"

check "banner" "^metastep [0-9.]+ \(Lua 5\.4\.[0-9]+\)  help\(\) lists the modules$"
wait_prompt

type_line "1 + 2"
check "an expression prints its value" "^3$"
wait_prompt

type_line "x = 5"
wait_prompt
type_line "x * 2"
check "a global survives between lines" "^10$"
wait_prompt

type_line "return 'a', nil, 7"
# (the terminal turns the tabs into spaces)
check "several values print on one line" "^a +nil +7$"
wait_prompt

type_line "function f()"
check "an incomplete statement gets the >> prompt" "^>>" 5
wait_prompt ">>"
type_line "return 1"
wait_prompt ">>"
type_line "end"
wait_prompt
type_line "f()"
check "a multi-line function works" "^1$"
wait_prompt

type_line 'error("boom")'
check "an error prints its message" "^stdin:1: boom$"
wait_prompt
type_line "1+1"
check "the prompt comes back after an error" "^2$"
wait_prompt

type_line 'setmetatable({}, {__tostring = function() return "via tostring" end})'
check "values print through tostring" "^via tostring$"
wait_prompt

type_line 'require("metastep").eye(2)'
if wait_for '1\.?,? +0' 10 && wait_for '0\.?,? +1' 1; then
  ok "a tensor pretty-prints with both rows"
else
  not_ok "a tensor pretty-prints with both rows" "$(screen | tail -n 15)"
fi
wait_prompt

type_line "while true do end"
wait_for "^> while true do end$" 5
sleep 0.3
tm send-keys -t "$target" C-c
check "Ctrl-C interrupts a running loop" "interrupted" 5
wait_prompt
type_line 'print("al" .. "ive")'
check "the REPL is alive after Ctrl-C" "^alive$"
wait_prompt

# Issue 14 item 7: the loop runs inside a coroutine, whose hook is not the main thread's.
type_line "co = coroutine.wrap(function() while true do end end); co()"
wait_for "^> co = coroutine.wrap" 5
sleep 0.3
tm send-keys -t "$target" C-c
check "Ctrl-C stops a loop inside a coroutine" "interrupted!" 5
wait_prompt
type_line "c2 = coroutine.create(function() local i = 0 while true do i = i + 1 end end)"
wait_prompt
type_line "coroutine.resume(c2)"
wait_for "^> coroutine.resume\(c2\)$" 5
sleep 0.3
tm send-keys -t "$target" C-c
check "Ctrl-C stops a loop inside coroutine.resume" "in function 'coroutine.resume'" 5
wait_prompt
type_line 'print("co" .. "alive")'
check "the REPL is alive after Ctrl-C in a coroutine" "^coalive$"
wait_prompt

# A second Ctrl-C (the first one pressed while a C call runs) does not kill the REPL.
type_line "while true do end"
wait_for "^> while true do end$" 5
sleep 0.3
tm send-keys -t "$target" C-c
tm send-keys -t "$target" C-c
wait_prompt
type_line 'print("second" .. "alive")'
check "a second Ctrl-C does not kill the REPL" "^secondalive$"
wait_prompt

# Issue 16: ms preloaded, tables printed, Tab completion, help(f), meta results.
type_line "ms.randn{2}:shape()"
check "ms is preloaded and t:shape() prints {2}" "^\\{2\\}$"
wait_prompt
type_line '{1, {2, {3, {4}}}, name = "x"}'
check "a nested table prints with a depth limit" '^\{1, \{2, \{3, \{\.\.\.\}\}\}, name = "x"\}$'
wait_prompt
# ms.me is ambiguous (ms.mean, ms.memory, ms.meta): a second Tab lists them, "t" then Tab completes.
tm send-keys -t "$target" -l -- "ms.me"
tm send-keys -t "$target" Tab
tm send-keys -t "$target" Tab
check "Tab Tab lists the candidates of ms.me" "ms\.mean +ms\.memory +ms\.meta" 5
tm send-keys -t "$target" -l -- "t"
tm send-keys -t "$target" Tab
check "Tab completes ms.me(t) to ms.meta" "^> ms\.meta$" 5
tm send-keys -t "$target" -l -- ".tr"
tm send-keys -t "$target" Tab
tm send-keys -t "$target" Enter
check "Tab completes ms.meta.tr to ms.meta.train" "^> ms\.meta\.train$" 5
wait_prompt
type_line "t = ms.zeros{3}"
wait_prompt
tm send-keys -t "$target" -l -- "t:resh"
tm send-keys -t "$target" Tab
check "Tab completes tensor methods through the metatable" "^> t:reshape$" 5
tm send-keys -t "$target" C-c
wait_prompt
type_line "help(ms.meta.train)"
check "help(ms.meta.train) shows its signature" "ms\.meta\.train\(opts\)"
check "help(ms.meta.train) shows its options with defaults" "iterations.*default 100"
wait_prompt
type_line "r = ms.meta.value_and_grad{objective = ms.objective.quadratic(ms.eye(2)), optimizer = ms.optim.gd{lr = 0.1}, w0 = ms.ones{2}, steps = 3}"
wait_prompt
type_line "r"
check "a meta result prints as a record" "^ +grad\.lr += -?[0-9]"
check "a meta result prints its value" "^ +value += -?[0-9]"
wait_prompt

# On a terminal the meta.train progress line is updated in place: one line on the screen.
type_line "p = ms.meta.train{objective = ms.objective.quadratic(ms.eye(2)), optimizer = ms.optim.gd{lr = 0.1}, w0 = ms.ones{2}, steps = 5, iterations = 40}"
wait_for "^meta 40/40 .* it/s +0s left" 10
wait_prompt
n=$(screen | grep -Ec "^meta [0-9]+/40 ")
if [ "$n" = 1 ] && screen | grep -Eq "^meta 40/40 .*it/s"; then
  ok "meta.train progress is one line updated in place on a terminal"
else
  not_ok "meta.train progress is one line updated in place on a terminal" "$(screen | tail -n 8)"
fi

tm send-keys -t "$target" -l -- "discarded line"
wait_for "discarded line" 5
tm send-keys -t "$target" C-c
wait_prompt
type_line 'print("after" .. "cancel")'
check "Ctrl-C at the prompt discards the line" "^aftercancel$"
wait_prompt

type_line "help()"
check "help() lists the metastep modules" "functions:"
wait_prompt

# Ctrl-D on an empty line ends the session; the history file is written.
tm send-keys -t "$target" C-d
i=0
while tm has-session -t "$target" 2> /dev/null && [ $i -lt 100 ]; do
  sleep 0.05
  i=$((i + 1))
done
if tm has-session -t "$target" 2> /dev/null; then
  not_ok "Ctrl-D exits the REPL" "$(screen | tail -n 15)"
else
  ok "Ctrl-D exits the REPL"
fi
hist="$tmp/home/.metastep_history"
if [ -f "$hist" ] && grep -q "^x = 5$" "$hist" && grep -q "^x \* 2$" "$hist"; then
  ok "history is written to \$HOME/.metastep_history"
else
  not_ok "history is written to \$HOME/.metastep_history" "$(cat "$hist" 2>&1)"
fi

# A second session reads the history back: Up recalls the last line of the first one.
tm new-session -d -s "$target" -x 100 -y 40 -c "$PWD" \
  "env -u LUA_INIT -u LUA_INIT_5_4 HOME='$tmp/home' TERM=xterm '$exe'"
wait_prompt
tm send-keys -t "$target" Up
check "history is read back at start" "^> help\(\)$" 5
tm send-keys -t "$target" C-c
wait_prompt
tm send-keys -t "$target" C-d

finish
