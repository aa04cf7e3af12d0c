#!/usr/bin/env bash
# The benchmark suite in --quick mode: it writes its report with every section and table (the
# timings themselves are not checked), the methods agree, and without PyTorch it says so and
# reports metastep alone; a bad option is refused with the usage.
set -u
: "${METASTEP:?set by ctest to the metastep executable}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
. tests/sh/lib.sh

# rows_of FILE: the method rows of workload (1)
rows_of() { grep -cE '^\| [0-9]+ \| [0-9]+ \| (reverse|forward|stable|exact|checkpoint) \|' "$1"; }

if "$METASTEP" scripts/bench/run.lua --quick --out "$tmp/r.md" >"$tmp/stdout" 2>"$tmp/err"; then
  ok "run.lua --quick runs"
else
  not_ok "run.lua --quick runs" "$(tail -20 "$tmp/err")"
fi
r=$tmp/r.md
[ -s "$r" ] && ok "the report is written" || not_ok "the report is written"
cmp -s "$r" "$tmp/stdout" && ok "the report is printed too" || not_ok "the report is printed too"
for h in "## (1) dG/dη" "## (2) Train-by-validation" "## (3) GD steps at d = 10" \
  "## (4) Learned-optimizer" "## Targets (issue 12)"; do
  grep -qF "$h" "$r" && ok "section: $h" || not_ok "section: $h"
done
expect "workload (1): 2 sizes x 5 methods" 10 "$(rows_of "$r")"
# every row of (1) has a metastep time and a floor time
n=$(grep -E '^\| [0-9]+ \| [0-9]+ \| [a-z]+ \|' "$r" | awk -F'|' '$5 ~ /[0-9]/ && $10 ~ /[0-9]/' | wc -l)
expect "workload (1): metastep and floor times" 10 "$n"
grep -qE '^\| every method agrees with exact \(relative\) \| ≤ 1e-10 \| [0-9.e+-]+ \| PASS \|$' "$r" &&
  ok "the methods agree" || not_ok "the methods agree" "$(grep agrees "$r")"
n=$(sed -n '/^## Targets/,$p' "$r" | grep -cE '\| (PASS|MISS|not run) \|$')
expect "every target has a verdict" 13 "$n"
if grep -q '^Peer: PyTorch [0-9]' "$r"; then
  expect "with PyTorch: its column is filled" 10 \
    "$(grep -E '^\| [0-9]+ \| [0-9]+ \| [a-z]+ \|' "$r" | awk -F'|' '$7 ~ /[0-9]/' | wc -l)"
else
  grep -q 'PyTorch is not available' "$r" && ok "without PyTorch: said so" || not_ok "peer line" "$(grep ^Peer "$r")"
fi

# without the peer: metastep alone, said so
if "$METASTEP" scripts/bench/run.lua --quick --only quad --python /nonexistent/python3 \
  --out "$tmp/alone.md" >/dev/null 2>"$tmp/err"; then ok "runs without PyTorch"; else
  not_ok "runs without PyTorch" "$(tail -20 "$tmp/err")"; fi
grep -q "^Peer: PyTorch is not available (/nonexistent/python3: spawn_pipes: cannot start" "$tmp/alone.md" &&
  ok "says PyTorch is not available" || not_ok "says PyTorch is not available" "$(grep ^Peer "$tmp/alone.md")"
expect "metastep alone: its rows" 10 "$(rows_of "$tmp/alone.md")"
expect "metastep alone: no PyTorch times" 0 \
  "$(grep -E '^\| [0-9]+ \| [0-9]+ \| [a-z]+ \|' "$tmp/alone.md" | awk -F'|' '$7 ~ /[0-9]/' | wc -l)"
grep -q "## (2)" "$tmp/alone.md" && not_ok "--only quad skips (2)" || ok "--only quad skips (2)"
"$METASTEP" scripts/bench/run.lua --quick --only quad --d 20 --python /nonexistent/python3 \
  --out "$tmp/d20.md" >/dev/null 2>&1
expect "--d 20: its rows only" "5 5" "$(rows_of "$tmp/d20.md") $(grep -cE '^\| 20 \| 50 \| [a-z]+ \|' "$tmp/d20.md")"

"$METASTEP" scripts/bench/run.lua --rounds 0 >/dev/null 2>"$tmp/err"
check_err "bad --rounds" 2 $? "option --rounds must be an integer >= 1, got '0'" "usage: metastep scripts/bench/run.lua"
"$METASTEP" scripts/bench/run.lua --only quad,nope >/dev/null 2>"$tmp/err"
check_err "bad --only" 2 $? "--only: unknown workload 'nope'"
"$METASTEP" scripts/bench/run.lua --clock sundial >/dev/null 2>"$tmp/err"
check_err "bad --clock" 2 $? "--clock: expected wall or cpu, got 'sundial'"
finish
