#!/usr/bin/env bash
# CLI checks for `fedtune` and `fedtune demo`: exit codes, one-line errors naming the
# flag or file:line, config files, and the committed sample config staying in sync.
# Usage: cli_demo.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$1
SRC=$2
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"

expect 0 "fedtune 0.1.0" -- "$FEDTUNE" --version
expect 0 "OpenBLAS" -- "$FEDTUNE" --version
expect 0 "demo" -- "$FEDTUNE" --help
expect 2 "usage: fedtune <command>" -- "$FEDTUNE"
expect 2 'fedtune: unknown command "frobnicate"' -- "$FEDTUNE" frobnicate
expect 0 "--optimizer sgd|adam|adamw" -- "$FEDTUNE" demo --help
expect 2 "fedtune demo: unknown option --epoch (see fedtune demo --help)" -- "$FEDTUNE" demo --epoch 3
expect 2 'fedtune demo: --epochs: "three" is not an integer' -- "$FEDTUNE" demo --epochs three
expect 2 "fedtune demo: --epochs: 0 is outside [1, 100000]" -- "$FEDTUNE" demo --epochs 0
expect 2 'fedtune demo: --lr: "1e" is not a number' -- "$FEDTUNE" demo --lr=1e
expect 2 'fedtune demo: --optimizer: "lbfgs" is not one of sgd|adam|adamw' -- "$FEDTUNE" demo --optimizer lbfgs
expect 2 "fedtune demo: --batch: missing value" -- "$FEDTUNE" demo --batch
expect 2 'unexpected argument "extra"' -- "$FEDTUNE" demo extra
expect 2 "--no-lr" -- "$FEDTUNE" demo --no-lr
expect 1 "fedtune demo: --config: cannot open $tmp/none.ini" -- "$FEDTUNE" demo --config "$tmp/none.ini"

# Config files: errors name file and line; flags override the file.
printf '[demo]\nepochs = 2\nsamples = 200\nbogus = 1\n' >"$tmp/bad.ini"
expect 2 "fedtune demo: $tmp/bad.ini:4: bogus: unknown key" -- "$FEDTUNE" demo --config "$tmp/bad.ini"
printf '[demo]\nepochs = 2\nepochs = 3\n' >"$tmp/dup.ini"
expect 2 "$tmp/dup.ini:3: epochs: key given twice" -- "$FEDTUNE" demo --config "$tmp/dup.ini"
printf '[train]\nepochs = 2\n' >"$tmp/sect.ini"
expect 2 "$tmp/sect.ini:1: section [train]: fedtune demo reads only [demo]" -- "$FEDTUNE" demo --config "$tmp/sect.ini"
# log-format is every command's key too: JSON lines from the file, the flag wins.
printf '[demo]\nlog-format = json\nepochs = x\n' >"$tmp/logjson.ini"
expect 2 '{"time":' -- "$FEDTUNE" demo --config "$tmp/logjson.ini"
expect 2 '"level":"error","command":"demo","message":"'"$tmp"'/logjson.ini:3: epochs: \"x\" is not an integer"}' \
  -- "$FEDTUNE" demo --config "$tmp/logjson.ini"
expect 2 "fedtune demo: $tmp/logjson.ini:3: epochs" -- "$FEDTUNE" demo --config "$tmp/logjson.ini" --log-format text
printf '[demo]\nlog-format = xml\n' >"$tmp/logxml.ini"
expect 2 "fedtune demo: $tmp/logxml.ini:2: log-format: \"xml\" is not one of text|json" -- "$FEDTUNE" demo --config "$tmp/logxml.ini"
printf '[demo]\nthis line has no equals sign\n' >"$tmp/syntax.ini"
expect 2 "$tmp/syntax.ini:2: not a \"key = value\" line" -- "$FEDTUNE" demo --config "$tmp/syntax.ini"
printf '[demo]\nnoise = lots\n' >"$tmp/val.ini"
expect 2 "$tmp/val.ini:2: noise: \"lots\" is not a number" -- "$FEDTUNE" demo --config "$tmp/val.ini"
printf '[demo]\nepochs = 2\nsamples = 300\n' >"$tmp/ok.ini"
expect 0 "in 2 epochs" -- "$FEDTUNE" demo --config "$tmp/ok.ini"
expect 0 "in 3 epochs" -- "$FEDTUNE" demo --config "$tmp/ok.ini" --epochs 3
expect 0 "240 train / 60 test" -- "$FEDTUNE" demo --epochs=1 --samples 300

# A real run: the loss falls and accuracy ends high (fixed seed, deterministic).
out=$("$FEDTUNE" demo 2>&1)
first=$(printf '%s\n' "$out" | awk '/^epoch +1 /{print $5}')
last=$(printf '%s\n' "$out" | awk '/^epoch +30 /{print $5}')
acc=$(printf '%s\n' "$out" | awk '/^epoch +30 /{sub("%","",$11); print $11}')
if awk -v a="$first" -v b="$last" -v c="$acc" 'BEGIN{exit !(b < a / 10 && c >= 99.0)}'; then
  pass=$((pass + 1))
else
  echo "FAIL: demo loss $first -> $last, accuracy $acc%" >&2
  fail=$((fail + 1))
fi
# Same seed, same output numbers (timings aside).
out2=$("$FEDTUNE" demo 2>&1)
strip() { printf '%s\n' "$1" | sed -E 's/ +[0-9.]+ s +[0-9]+ ex\/s//; s/, [0-9.]+ s$//'; }
if [ "$(strip "$out")" = "$(strip "$out2")" ]; then pass=$((pass + 1)); else
  echo "FAIL: two demo runs with the same seed differ" >&2
  fail=$((fail + 1))
fi

# The committed sample config is what --print-config prints, and it parses.
if "$FEDTUNE" demo --print-config | cmp -s - "$SRC/examples/demo.ini"; then pass=$((pass + 1)); else
  echo "FAIL: examples/demo.ini is stale: regenerate with fedtune demo --print-config" >&2
  fail=$((fail + 1))
fi
expect 0 "in 1 epochs" -- "$FEDTUNE" demo --config "$SRC/examples/demo.ini" --epochs 1

report
