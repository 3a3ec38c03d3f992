#!/usr/bin/env bash
# Self-test of tests/lib.sh, the library every shell test trusts: small child scripts
# source it, exercise one helper (a child process that exits 1, a wrong exit code, a
# missing substring, an empty hash, a stale output file, the unfixable `$?` pattern) and
# end with `report`; this script checks each child's exit status, its totals line and
# its FAIL message. It does not source the library itself, so a broken helper cannot
# vouch for itself. Also checks that lint_status names file:line for planted bad lines
# (single, continued and backtick forms) and leaves the correct idioms alone.
# Usage: lib_selftest.sh <source dir>
set -u
LIB=$(cd "$1" && pwd)/tests/lib.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
# The lint scans this file too: every "$" of a planted line is written as ${D}.
D='$'

bad() {
  echo "FAIL: $*" >&2
  failed=$((failed + 1))
}

# child <name> <body...>: $work/<name>.sh sources the library, runs the body lines (in
# its own temporary folder, $tmp), then report.
child() {
  local name=$1
  shift
  {
    echo '#!/usr/bin/env bash'
    echo ". \"$LIB\""
    printf '%s\n' "$@"
    echo 'report'
  } >"$work/$name.sh"
}

# verdict <child> <exit status> <totals line> [<substring of the output>...]: runs the
# child and checks all three.
verdict() {
  local name=$1 want=$2 totals=$3 out rc last s ok=1
  shift 3
  out=$(bash "$work/$name.sh" 2>&1)
  rc=$?
  last=$(printf '%s\n' "$out" | tail -1)
  if [ "$rc" != "$want" ]; then bad "$name: exit status $rc, expected $want; output: $out"; ok=0; fi
  if [ "$last" != "$totals" ]; then bad "$name: totals \"$last\", expected \"$totals\""; ok=0; fi
  for s in "$@"; do
    if [[ "$out" != *"$s"* ]]; then bad "$name: output lacks \"$s\": $out"; ok=0; fi
  done
  [ "$ok" = 1 ] && passed=$((passed + 1))
}

# ---- exit statuses ------------------------------------------------------------------------
child wait_fail 'echo "the child log line" >"$tmp/c.log"' \
  "bash -c 'exit 1' &" 'wait_status "child exits 0" $! 0 "$tmp/c.log"'
verdict wait_fail 1 "0 passed, 1 failed" "FAIL: child exits 0: exit status 1, expected 0" \
  "  | the child log line"
child wait_ok "bash -c 'exit 0' &" 'wait_status "child exits 0" $! 0' \
  "bash -c 'exit 3' &" 'wait_status "child exits 3" $! 3'
verdict wait_ok 0 "2 passed, 0 failed"
child wait_stranger 'wait_status "not a child" 1 0'
verdict wait_stranger 1 "0 passed, 1 failed" "FAIL: not a child: exit status 127, expected 0"
child status_empty 'ok_status "no status" "" 0' 'ok_status "a word" "x" 0'
verdict status_empty 1 "0 passed, 2 failed" "FAIL: no status: exit status (none), expected 0" \
  "FAIL: a word: exit status x, expected 0"
child run_fail "run_status \"fails\" 0 \"\$tmp/o\" -- sh -c 'echo said this; exit 2'"
verdict run_fail 1 "0 passed, 1 failed" "FAIL: fails: exit status 2, expected 0" "  | said this"
child run_fresh 'echo stale >"$tmp/o"' 'run_status "true exits 0" 0 "$tmp/o" -- true' \
  'ok "the stale output is gone" test ! -s "$tmp/o"'
verdict run_fresh 0 "2 passed, 0 failed"

# ---- expect -------------------------------------------------------------------------------
child expect_code "expect 0 \"\" -- sh -c 'exit 3'"
verdict expect_code 1 "0 passed, 1 failed" "-> exit 3, expected 0"
child expect_text 'expect 0 "hello" -- echo bye'
verdict expect_text 1 "0 passed, 1 failed" '-> output lacks "hello": bye'
child expect_asan 'expect 0 "" -- echo "ERROR: AddressSanitizer: heap-use-after-free"'
verdict expect_asan 1 "0 passed, 1 failed" "sanitizer report"
child expect_ok "expect 3 \"boom\" -- sh -c 'echo boom; exit 3'" 'expect 0 "" -- true'
verdict expect_ok 0 "2 passed, 0 failed"

# ---- ok, comparisons ------------------------------------------------------------------------
child ok_false 'ok "false is false" false' 'ok "true is true" true'
verdict ok_false 1 "1 passed, 1 failed" "FAIL: false is false"
child same 'ok_same "two empty hashes" "" ""' 'ok_same "different" a b' 'ok_same "equal" a a' \
  'ok_differ "empty vs a" "" a' 'ok_differ "equal" a a' 'ok_differ "different" a b'
verdict same 1 "2 passed, 4 failed" 'FAIL: two empty hashes: got "", expected "" (neither may be empty)' \
  'FAIL: empty vs a: "" and "a" should differ'

# ---- the pattern this library exists to stop ------------------------------------------------
# On its own the bad line passes although `false` just failed (its $? is the
# substitution's); sourcing the library lints the script and counts that as a failure.
child planted "false" "ok \"a child that failed: ${D}(echo log)\" test ${D}? -eq 0"
verdict planted 1 "1 passed, 1 failed" "FAIL: lint: $work/planted.sh:4: ${D}? read after a command substitution"

# ---- lint_status on its own -----------------------------------------------------------------
cat >"$work/lint.sh" <<EOF
ok "fine" test -s x
rc=${D}(cmd; echo ${D}?)
out=${D}(cmd)
rc=${D}?
ok "dated \`date\`" test ${D}? -eq 0
ok "x: ${D}(tail -3 x.log)" \\
  test ${D}? -eq 0
# ok "${D}(tail x.log)" test ${D}? -eq 0
echo '${D}(x) ${D}?'
ok "a site exits 0" test ${D}? -eq 0
out=${D}(cmd) || rc=${D}?  # a comment: ${D}(x) ${D}?
x=${D}((1 + 2))
ok_status "right after the command" ${D}? 0
EOF
out=$(bash -c ". \"$LIB\"; lint_status \"$work/lint.sh\"" 2>&1)
rc=$?
lines=$(printf '%s\n' "$out" | sed -n "s|^$work/lint.sh:\([0-9]*\): .*|\1|p" | tr '\n' ' ')
if [ "$rc" = 1 ] && [ "$lines" = "5 6 10 11 " ]; then passed=$((passed + 1)); else
  bad "lint_status: exit $rc, flagged lines \"$lines\", expected 1 and \"5 6 10 11 \": $out"
fi
[[ "$out" == *"lint.sh:10: ${D}? passed to ok/check"* ]] && passed=$((passed + 1)) ||
  bad "lint_status: line 10 not named as \$? passed to ok: $out"
head -4 "$work/lint.sh" >"$work/clean.sh"
out=$(bash -c ". \"$LIB\"; lint_status \"$work/clean.sh\"" 2>&1)
rc=$?
if [ "$rc" = 0 ] && [ -z "$out" ]; then passed=$((passed + 1)); else
  bad "lint_status on correct idioms: exit $rc: $out"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
