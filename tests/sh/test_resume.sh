#!/usr/bin/env bash
# Checkpoint and resume of meta.train (issue 14, item 6): a run killed with SIGKILL mid-way and
# resumed from its last checkpoint ends with the same theta, history, best, generator state and
# CSV log, bit for bit, as an uninterrupted run; for gd and Adam meta-optimizers with sampled
# task batches, and with tasks drawn from the context's generator. The kill comes either at a
# known point (a hanging callback: the log then holds a row past the checkpoint) or as soon as
# the first checkpoint exists (anywhere in the run, also inside a save).
# Env: METASTEP = path to the executable (default build/metastep). Run from the repo root.
set -u

METASTEP=${METASTEP:-build/metastep}
pass=0
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

. "$(dirname "$0")/lib.sh"

if [ ! -x "$METASTEP" ]; then
  not_ok "executable $METASTEP exists"
  finish
fi
unset LUA_INIT LUA_INIT_5_4
run=tests/sh/resume_run.lua
K=12

# wait_for FILE PID: polls until FILE exists (at most ~120 s); 0 when it does, 1 when PID
# ended first or the time ran out.
wait_for() {
  local i
  for ((i = 0; i < 12000; i++)); do
    [ -e "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { [ -e "$1" ]; return; }
    sleep 0.01
  done
  return 1
}

# one VARIANT HANG_AT WAIT_FOR_WHAT: full run, killed run, resume; compare.
one() {
  local v=$1 hang=$2 what=$3 d="$tmp/$1-$3"
  mkdir -p "$d"
  "$METASTEP" "$run" "$v" full "$K" "$d/unused" "$d/full.csv" "$d/full.out" 2>"$d/err.full" ||
    { not_ok "$v/$what: uninterrupted run" "$(cat "$d/err.full")"; return; }
  "$METASTEP" "$run" "$v" ckpt "$K" "$d/run.ckpt" "$d/run.csv" "$d/unused.out" "$hang" "$d/mark" \
    2>"$d/err.ckpt" &
  local pid=$!
  local target="$d/mark"
  [ "$what" = first ] && target="$d/run.ckpt"
  if ! wait_for "$target" "$pid"; then
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    not_ok "$v/$what: the run reached its kill point" "$(cat "$d/err.ckpt")"
    return
  fi
  kill -9 "$pid"
  wait "$pid" 2>/dev/null
  local rc=$?
  expect "$v/$what: the run died of SIGKILL" 137 "$rc"
  if [ "$what" = hang ]; then
    # the log holds the row of the hanging iteration, written after the last checkpoint
    expect "$v/$what: the killed run's log runs past its checkpoint" "$((hang + 1))" \
      "$(wc -l <"$d/run.csv" | tr -d ' ')"
  fi
  "$METASTEP" "$run" "$v" resume "$K" "$d/run.ckpt" "$d/run.csv" "$d/resumed.out" 2>"$d/err.resume" ||
    { not_ok "$v/$what: resume" "$(cat "$d/err.resume")"; return; }
  if cmp -s "$d/full.out" "$d/resumed.out"; then
    ok "$v/$what: theta, history, best and generator equal the uninterrupted run's"
  else
    not_ok "$v/$what: theta, history, best and generator equal the uninterrupted run's" \
      "$(diff "$d/full.out" "$d/resumed.out" | head -5)"
  fi
  if cmp -s "$d/full.csv" "$d/run.csv"; then
    ok "$v/$what: the CSV log equals the uninterrupted run's"
  else
    not_ok "$v/$what: the CSV log equals the uninterrupted run's" \
      "$(diff "$d/full.csv" "$d/run.csv" | head -5)"
  fi
}

one gd 5 hang
one adam 7 hang
one randn 6 hang
one adam $((K - 1)) first
one gd $((K - 1)) first

finish
