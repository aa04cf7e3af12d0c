#!/usr/bin/env bash
# Runs the paper reproduction in --quick mode and checks the report: every experiment
# has a computed verdict, and every figure and CSV the report names exists and is non-empty.
set -u
: "${METASTEP:?set by ctest to the metastep executable}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

if "$METASTEP" scripts/reproduce.lua --quick --out "$out" >"$out/stdout" 2>"$out/stderr"; then ok; else
  bad "reproduce.lua --quick exited with $?"; tail -30 "$out/stderr"; fi
[ -s "$out/report.md" ] && ok || bad "no report.md"
[ -s "$out/verdicts.csv" ] && ok || bad "no verdicts.csv"

# the experiments load with require relative to the script, from any working directory
repo=$(pwd)
if (cd "$out" && "$METASTEP" "$repo/scripts/reproduce.lua" --quick --only 5 --out "$out/elsewhere" >/dev/null 2>&1); then ok; else
  bad "reproduce.lua run from another directory failed"; fi
# every experiment is a module of the same shape, and none loads another by path
if "$METASTEP" -e 'package.path = "scripts/experiments/?.lua;" .. package.path
  for _, name in ipairs{"exp1_explosion", "exp2_numerics", "exp3_metagd", "exp4_validation", "exp5_neural"} do
    local m = require(name)
    assert(type(m.title) == "string", name .. ": no title")
    for _, f in ipairs{"measure", "write", "describe"} do
      assert(type(m[f]) == "function", name .. ": no " .. f)
    end
  end' >"$out/shape" 2>&1; then ok; else bad "experiment modules: $(cat "$out/shape")"; fi
if grep -nE 'loadfile|dofile' scripts/experiments/*.lua scripts/experiments/lib/*.lua; then
  bad "an experiment loads code by path"; else ok; fi

# every experiment row has a verdict computed by the script (never ERROR)
rows=$(tail -n +2 "$out/verdicts.csv" | wc -l)
[ "$rows" -eq 5 ] && ok || bad "verdicts.csv has $rows experiments, expected 5"
# titles may hold commas: the verdict is the next-to-last field, the number the first
while IFS=, read -r n verdict; do
  case "$verdict" in
    REPRODUCED|PARTIAL|"NOT REPRODUCED") ok ;;
    "NOT RUN") [ "$n" = 5 ] && ok || bad "experiment $n was not run" ;;
    *) bad "experiment $n has verdict '$verdict'" ;;
  esac
done < <(tail -n +2 "$out/verdicts.csv" | awk -F, '{print $1 "," $(NF-1)}')

# every figure and data file the report names exists and is non-empty
files=$(grep -oE '\(([A-Za-z0-9_.-]+\.png)\)|`[A-Za-z0-9_.-]+\.csv`' "$out/report.md" | tr -d '()`' | sort -u)
[ -n "$files" ] && ok || bad "the report names no figures or CSV files"
for f in $files; do
  if [ -s "$out/$f" ]; then ok; else bad "missing or empty: $f"; fi
  case "$f" in *.png)
    # a real PNG, not an empty placeholder
    head -c 8 "$out/$f" | od -An -tx1 | grep -q "89 50 4e 47" && ok || bad "$f is not a PNG" ;;
  esac
done
# each experiment that ran has at least one figure
for n in 1 2 3 4; do
  ls "$out"/exp${n}_*.png >/dev/null 2>&1 && ok || bad "experiment $n produced no figure"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
