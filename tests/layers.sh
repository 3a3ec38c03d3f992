#!/usr/bin/env bash
# The layering below the network, as the #include lines show it (docs/DESIGN.md,
# Layers): core/ includes only core/ headers; dataset/ only core/ and dataset/;
# training/ only core/, dataset/ and training/; models/ (the importers) only core/,
# dataset/ and models/. A header included across the line would
# let the numerics depend on the data layer, or the data layer on training; a failure
# names the file and line. The checker itself is tried first on a tree that breaks the
# rule, so that it cannot pass by matching nothing.
# Usage: layers.sh <source dir>
set -u
SRC=$(cd "$1" && pwd)
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"

# violations <folder> <allowed folder>...: the #include "x/..." lines of <folder>/*.[ch]
# whose x is not allowed, as file:line:text.
violations() {
  local dir=$1 allow
  shift
  allow=$(
    IFS='|'
    echo "$*"
  )
  grep -HnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^"/]+/' "$dir"/*.[ch] |
    grep -vE "#[[:space:]]*include[[:space:]]*\"($allow)/"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/core"
printf '#include "core/err.h"\n#include "dataset/dataset.h"\n' >"$tmp/core/bad.c"
got=$(cd "$tmp" && violations core core)
ok_same "the checker finds an include across the line" "$got" \
  'core/bad.c:2:#include "dataset/dataset.h"'

cd "$SRC" || exit 1
shopt -s nullglob
for dir in core dataset training models; do
  files=("$dir"/*.c "$dir"/*.h)
  ok "$dir/ has sources (${#files[@]})" test "${#files[@]}" -ge 2
done
bad=$(violations core core)
ok "core/ includes only core/ headers: $bad" test -z "$bad"
bad=$(violations dataset core dataset)
ok "dataset/ includes only core/ and dataset/ headers: $bad" test -z "$bad"
bad=$(violations training core dataset training)
ok "training/ includes only core/, dataset/ and training/ headers: $bad" test -z "$bad"
bad=$(violations models core dataset models)
ok "models/ includes only core/, dataset/ and models/ headers: $bad" test -z "$bad"
report
