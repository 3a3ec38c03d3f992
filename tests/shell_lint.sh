#!/usr/bin/env bash
# lint_status (tests/lib.sh) over every shell script of the source tree: tests, scripts/,
# .ci/run, examples and benchmarks. No line may read $? after a command substitution on
# the same line, or pass $? to ok/check: such a check reports the substitution's status
# and passes whatever the command did.
# Usage: shell_lint.sh <source dir>
set -u
SRC=$(cd "$1" && pwd)
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$SRC" || exit 1
shopt -s nullglob
files=(tests/*.sh scripts/* .ci/run examples/*.sh examples/*/*.sh bench/*.sh)
ok "found the scripts (${#files[@]})" test "${#files[@]}" -ge 10
out=$(lint_status "${files[@]}" 2>&1)
rc=$?
ok_status "no exit status read after a command substitution: $out" "$rc" 0
report
