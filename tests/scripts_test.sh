#!/usr/bin/env bash
# The CI entry points: scripts/test's rule that a test which did not run fails the run
# under CI=true and is listed otherwise (fed the JUnit file of a small CTest project,
# run here by this machine's own ctest, with a test that exits 77, one skipped by a
# regular expression and a disabled one); scripts/setup's package sets (the tests'
# python3-torch and python3-numpy only with --test, which scripts/test uses and
# scripts/run does not); .ci/run calling exactly scripts/test.
# Usage: scripts_test.sh <source dir>
set -u
SRC=$(cd "$1" && pwd)
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1

# project <dir> <extra CMake lines>: a CTest project with one passing test, run; its
# results in <dir>/b/junit.xml.
project() {
  mkdir -p "$1"
  {
    printf '%s\n' 'cmake_minimum_required(VERSION 3.16)' 'project(p NONE)' 'enable_testing()' \
      'add_test(NAME good COMMAND true)'
    printf '%s\n' "$2"
  } >"$1/CMakeLists.txt"
  cmake -S "$1" -B "$1/b" >/dev/null && (cd "$1/b" && ctest --output-junit junit.xml >/dev/null)
}

project skips '
add_test(NAME torch_like COMMAND sh -c "echo SKIP: python3-torch not installed; exit 77")
set_tests_properties(torch_like PROPERTIES SKIP_RETURN_CODE 77)
add_test(NAME regex_skip COMMAND sh -c "echo nothing to do here")
set_tests_properties(regex_skip PROPERTIES SKIP_REGULAR_EXPRESSION "nothing to do")
add_test(NAME off COMMAND true)
set_tests_properties(off PROPERTIES DISABLED ON)'
ok_status "ctest counts the skips as passes" $? 0
project clean ''
ok_status "ctest of a clean project" $? 0

CHECK=("$SRC/scripts/test" --check-skips -Werror)
expect 1 "scripts/test: CI=true: every test must run, but in the -Werror build these did not:" -- \
  env CI=true "${CHECK[@]}" skips/b/junit.xml
expect 1 "  torch_like: SKIP: python3-torch not installed" -- env CI=true "${CHECK[@]}" skips/b/junit.xml
expect 1 "  regex_skip: SKIP_REGULAR_EXPRESSION_MATCHED" -- env CI=true "${CHECK[@]}" skips/b/junit.xml
expect 1 "  off: disabled" -- env CI=true "${CHECK[@]}" skips/b/junit.xml
out=$(env CI=true "${CHECK[@]}" skips/b/junit.xml 2>&1)
ok "the passing test is not listed: $out" test "$(grep -c 'good' <<<"$out")" -eq 0
expect 0 "warning: -Werror build: not run: torch_like: SKIP: python3-torch not installed" -- \
  env -u CI "${CHECK[@]}" skips/b/junit.xml
expect 0 "warning: -Werror build: not run: off: disabled" -- env CI=false "${CHECK[@]}" skips/b/junit.xml
run_status "CI=true, nothing skipped: exit 0" 0 clean.out -- env CI=true "${CHECK[@]}" clean/b/junit.xml
ok "CI=true, nothing skipped: silent" test ! -s clean.out
# No results must not read as "nothing skipped".
expect 1 "scripts/test: cannot read CTest's results none.xml" -- env CI=true "${CHECK[@]}" none.xml
printf '<?xml version="1.0"?>\n<testsuite tests="0">\n</testsuite>\n' >empty.xml
expect 1 "scripts/test: CTest's results empty.xml list no test" -- env -u CI "${CHECK[@]}" empty.xml
expect 2 "usage: scripts/test --check-skips LABEL JUNIT" -- "$SRC/scripts/test" --check-skips x

# scripts/setup: the tests' packages only with --test.
base=$("$SRC/scripts/setup" --list)
with=$("$SRC/scripts/setup" --list --test)
ok "setup --list names the build packages" grep -qx "libopenblas-dev" <<<"$base"
ok "setup --list without --test has no torch" test "$(grep -c 'python3-torch' <<<"$base")" -eq 0
ok "setup --list --test adds python3-torch" grep -qx "python3-torch" <<<"$with"
ok "setup --list --test adds python3-numpy" grep -qx "python3-numpy" <<<"$with"
ok "setup --list --test adds nodejs" grep -qx "nodejs" <<<"$with"
ok "setup --list --test adds openmpi-bin" grep -qx "openmpi-bin" <<<"$with"
ok "setup --list --test adds libopenmpi-dev" grep -qx "libopenmpi-dev" <<<"$with"
ok "setup --list without --test has no MPI" test "$(grep -c 'openmpi' <<<"$base")" -eq 0
ok "setup --list --test adds npm" grep -qx "npm" <<<"$with"
for p in man-db lintian systemd file; do
  ok "setup --list --test adds $p (manual pages, package stage)" grep -qx "$p" <<<"$with"
done
ok "setup --list names libunistring-dev (the tokenizer's NFKC)" grep -qx "libunistring-dev" <<<"$base"
expect 2 "setup: unknown option --tests" -- "$SRC/scripts/setup" --tests
ok "scripts/test installs the test packages" grep -qx 'scripts/setup --deps --test' "$SRC/scripts/test"
ok "scripts/run's setup has no --test" test "$(grep -c 'setup.*--test' "$SRC/scripts/run")" -eq 0
ok_same ".ci/run runs exactly scripts/test" "$(grep -v '^#' "$SRC/.ci/run" | grep -E '^[a-z]' | tr '\n' ';')" \
  'set -euo pipefail;cd "$(dirname "$0")/..";exec scripts/test;'

report
