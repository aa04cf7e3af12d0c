#!/usr/bin/env bash
# scripts/learned_optimizer.lua: --help, bad arguments, and a --quick run (synthetic data, no
# data set needed) whose report names its figures and CSV files, all present and non-empty,
# with a verdict computed from the criteria.
# Env: METASTEP = path to the executable (default build/metastep). Run from the repo root.
set -u

METASTEP=${METASTEP:-build/metastep}
pass=0
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

. "$(dirname "$0")/lib.sh"

"$METASTEP" scripts/learned_optimizer.lua --help >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" -eq 0 ] && grep -q -- "--quick" "$tmp/out" && grep -q "dataset-fashion-mnist" "$tmp/out"; then
  ok "--help prints the usage"
else
  not_ok "--help prints the usage" "rc=$rc $(cat "$tmp/out" "$tmp/err")"
fi

"$METASTEP" scripts/learned_optimizer.lua --bogus >"$tmp/out" 2>"$tmp/err"
check_err "an unknown argument is refused" 2 $? "unknown argument --bogus" "usage:"

out="$tmp/report"
"$METASTEP" scripts/learned_optimizer.lua --quick --out "$out" >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" -eq 0 ]; then ok "--quick runs"; else not_ok "--quick runs" "rc=$rc $(tail -20 "$tmp/err")"; fi
if grep -qE '^verdict: (REPRODUCED|PARTIAL|NOT REPRODUCED)$' "$tmp/out"; then
  ok "a verdict is computed"
else
  not_ok "a verdict is computed" "$(tail -5 "$tmp/out")"
fi
files=$(grep -oE '\(([A-Za-z0-9_.-]+\.png)\)|`[A-Za-z0-9_.-]+\.csv`' "$out/report.md" 2>/dev/null | tr -d '()`' | sort -u)
[ -n "$files" ] && ok "the report names its files" || not_ok "the report names its files"
for f in $files; do
  if [ -s "$out/$f" ]; then ok "$f exists"; else not_ok "$f exists"; fi
done
for f in exp5_test_acc_p00.png exp5_train_acc_p20.png exp5_grad_norms.png; do
  if head -c 8 "$out/$f" 2>/dev/null | od -An -tx1 | grep -q "89 50 4e 47"; then ok "$f is a PNG"; else
    not_ok "$f is a PNG"; fi
done
# the table has a row per optimizer and noise level
rows=$(tail -n +2 "$out/exp5_table.csv" 2>/dev/null | wc -l)
expect "exp5_table.csv has 10 rows" 10 "$rows"

finish
