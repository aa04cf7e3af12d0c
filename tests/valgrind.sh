#!/usr/bin/env bash
# Runs every C test under valgrind (memcheck, full leak check): any invalid access,
# uninitialized read or leak fails. Usage: bash tests/valgrind.sh [build-dir [test_name...]]
# (default build/, a Release or Debug build WITHOUT the sanitizers, which valgrind cannot run;
# default: every test_* program there). The whole set takes several minutes.
set -u
cd "$(dirname "$0")/.."
dir=${1:-build}
shift $(($# > 0 ? 1 : 0))
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)"; exit 2; }
ls "$dir"/test_* >/dev/null 2>&1 || { echo "no C tests in $dir: build first (cmake --build $dir)"; exit 2; }
# OpenBLAS's thread pool keeps per-thread buffers until exit: one thread keeps reports clean.
export OPENBLAS_NUM_THREADS=1
failed=0
tests=("$dir"/test_*)
if [ $# -gt 0 ]; then tests=(); for n in "$@"; do tests+=("$dir/$n"); done; fi
for t in "${tests[@]}"; do
  [ -x "$t" ] || continue
  log=$(mktemp)
  valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect "$t" >"$log" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "ok   - $(basename "$t"): $(tail -n 1 "$log")"
  elif [ "$rc" -eq 1 ] && ! grep -q '^==[0-9]*==' "$log"; then
    # The test's own checks failed with no memcheck report: valgrind computes long double in
    # 64 bits (test_stable's long double references then overflow), so only memcheck counts.
    echo "note - $(basename "$t"): no memcheck error; its own checks failed under valgrind" \
      "($(tail -n 1 "$log"); valgrind has no 80-bit long double)"
  else
    failed=$((failed + 1))
    echo "FAIL - $(basename "$t") (status $rc)"
    grep -v '^[0-9]* passed' "$log" | head -n 40 | sed 's/^/       /'
  fi
  rm -f "$log"
done
echo "valgrind: $failed test program(s) failed"
[ "$failed" -eq 0 ]
