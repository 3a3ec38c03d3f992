#!/usr/bin/env bash
# End-to-end checks of `fedtune init/info/train/pretrain/eval/tune/data info` on small
# fixtures: exit codes, one-line errors naming the flag or file:line, real values
# (accuracy, counts, metadata), determinism, frozen tensors kept bit for bit, and
# nothing written when a command fails.
# Usage: cli_train.sh <path to fedtune> <source dir>
set -u
# Absolute paths: the checks run in a temporary directory.
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
BLOBS=$SRC/tests/data/blobs.csv
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1



# check <description> -- command...: passes when the command exits 0.
check() {
  local what=$1
  shift 2
  if "$@" >/dev/null 2>&1; then pass=$((pass + 1)); else
    echo "FAIL: $what" >&2
    fail=$((fail + 1))
  fi
}

# has <description> <text> <substring>
has() {
  if [[ "$2" == *"$3"* ]]; then pass=$((pass + 1)); else
    echo "FAIL: $1: output lacks \"$3\": $2" >&2
    fail=$((fail + 1))
  fi
}

# A safetensors reader (8-byte little-endian header length, JSON header, data):
#   st.py same A B NAME...    the named tensors' bytes are identical in A and B
#   st.py differ A B NAME...  each named tensor's bytes differ between A and B
cat >st.py <<'EOF'
import json, struct, sys
def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}
mode, a, b, names = sys.argv[1], tensors(sys.argv[2]), tensors(sys.argv[3]), sys.argv[4:]
for k in names:
    if k not in a or k not in b or not a[k]:
        sys.exit("missing tensor " + k)
    if (a[k] == b[k]) != (mode == "same"):
        sys.exit(k + (" differs" if mode == "same" else " is unchanged"))
EOF
# py <description> -- python args...: a python check; skipped without python3.
py() {
  local what=$1
  shift 2
  if [ -z "$PY" ]; then
    echo "note: no python3, skipped: $what" >&2
    return
  fi
  local out
  if out=$("$PY" "$@" 2>&1); then pass=$((pass + 1)); else
    echo "FAIL: $what: $out" >&2
    fail=$((fail + 1))
  fi
}

MLP='{"input":[4],"layers":[{"type":"linear","out":16},{"type":"relu"},{"type":"linear","out":3}]}'
DROP='{"input":[4],"layers":[{"type":"linear","out":16},{"type":"relu"},{"type":"dropout","p":0.1},{"type":"linear","out":3}]}'

# ---- init and info ---------------------------------------------------------------------
expect 0 "init: wrote a.st (131 parameters, seed 1)" -- "$FEDTUNE" init --arch "$MLP" --out a.st
expect 0 "init: wrote p.st (199210 parameters" -- "$FEDTUNE" init --arch fedavg-2nn --out p.st
printf '{"input":[4],"layers":[{"type":"linear","out":3}]}\n' >arch.json
expect 0 "init: wrote f.st (15 parameters" -- "$FEDTUNE" init --arch @arch.json --out f.st
expect 0 "parameters 131, trainable 131, frozen 0" -- "$FEDTUNE" info a.st
expect 0 "input (4) -> output 3" -- "$FEDTUNE" info a.st
info=$("$FEDTUNE" info a.st 2>&1)
for want in "0.weight         [16, 4]                      64  trainable" \
  "2.bias           [3]                           3  trainable" \
  'fedtune.arch = {"input":[4],"layers":[{"type":"linear","out":16' \
  "fedtune.version = fedtune " "fedtune.frozen = []"; do
  has "info a.st" "$info" "$want"
done
expect 0 "parameters 199210, trainable 199210" -- "$FEDTUNE" info --model p.st
expect 0 "parameters 15, trainable 15" -- "$FEDTUNE" info f.st --no-tensors
expect 1 'fedtune init: layer 0 (linear): unknown field "outs"' -- \
  "$FEDTUNE" init --arch '{"input":[4],"layers":[{"type":"linear","outs":3}]}' --out b.st
expect 1 'fedtune init: layer 0 (linear): field "out": must be an integer' -- \
  "$FEDTUNE" init --arch '{"input":[4],"layers":[{"type":"linear","out":-3}]}' --out b.st
expect 1 "fedtune init: architecture: invalid JSON" -- "$FEDTUNE" init --arch '{"input":[4]' --out b.st
expect 1 "fedtune init: --arch: cannot open none.json" -- "$FEDTUNE" init --arch @none.json --out b.st
expect 2 "fedtune init: --out is required" -- "$FEDTUNE" init --arch fedavg-2nn
expect 2 "fedtune init: --arch is required" -- "$FEDTUNE" init --out b.st
check "failed init writes no file" -- test ! -e b.st
expect 2 "fedtune info: a model file is required" -- "$FEDTUNE" info
expect 2 'fedtune info: unexpected argument "f.st"' -- "$FEDTUNE" info a.st f.st

# ---- train from a fresh init -----------------------------------------------------------
expect 0 "test: loss" -- "$FEDTUNE" train --model a.st --data "$BLOBS" --out t.st --epochs 6 \
  --lr 0.02 --test-split 0.2 --metrics m.jsonl
check "--metrics has one line per epoch" -- test "$(grep -c '"epoch"' m.jsonl)" -eq 6
check "--metrics has exactly 6 lines" -- test "$(wc -l <m.jsonl)" -eq 6
py "--metrics lines are JSON with train_loss" -- -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6], rows
assert all(r["command"] == "train" and r["train_loss"] > 0 for r in rows)
assert rows[-1]["train_loss"] < rows[0]["train_loss"], "loss did not fall"
' m.jsonl
info=$("$FEDTUNE" info t.st 2>&1)
has "info t.st" "$info" 'fedtune.classes = ["blue","green","red"]'
has "info t.st" "$info" 'fedtune.standardize = {"dim":4,"mean":['
has "info t.st" "$info" 'fedtune.training = {"command":"train","data":"'
has "info t.st" "$info" '"train_examples":105,"epochs_run":6'

# ---- eval --------------------------------------------------------------------------------
run_status "eval --json exits 0" 0 eval.json -- "$FEDTUNE" eval --model t.st --data "$BLOBS" --json
py "eval --json: accuracy >= 0.85, 3 classes, confusion sums to 150" -- -c '
import json, sys
r = json.load(open(sys.argv[1]))
assert r["accuracy"] >= 0.85, r["accuracy"]
assert r["examples"] == 150
assert [c["class"] for c in r["classes"]] == ["blue", "green", "red"], r["classes"]
assert [c["support"] for c in r["classes"]] == [50, 50, 50]
assert len(r["confusion"]) == 3 and all(len(row) == 3 for row in r["confusion"])
assert sum(map(sum, r["confusion"])) == 150
' eval.json
expect 0 "macro-F1" -- "$FEDTUNE" eval --model t.st --data "$BLOBS"
expect 0 "confusion matrix (rows: true class, columns: predicted)" -- \
  "$FEDTUNE" eval --model t.st --data "$BLOBS"
expect 2 "fedtune eval: --data is required" -- "$FEDTUNE" eval --model t.st
expect 2 "fedtune eval: --model is required" -- "$FEDTUNE" eval --data "$BLOBS"

# ---- determinism -------------------------------------------------------------------------
for i in 1 2; do
  "$FEDTUNE" train --arch "$DROP" --data "$BLOBS" --out "d$i.st" --epochs 3 >/dev/null 2>&1
done
"$FEDTUNE" train --arch "$DROP" --data "$BLOBS" --out d3.st --epochs 3 --seed 2 >/dev/null 2>&1
check "same train command twice: identical model files" -- cmp d1.st d2.st
check "determinism runs wrote their models" -- test -s d3.st -a -s d1.st
check "another --seed: a different model file" -- eval '! cmp -s d1.st d3.st'

# ---- frozen layers -----------------------------------------------------------------------
expect 0 "51 trainable" -- "$FEDTUNE" train --model t.st --data "$BLOBS" --out fz.st --freeze 0 \
  --epochs 2 --lr 0.01
info=$("$FEDTUNE" info fz.st 2>&1)
has "info fz.st" "$info" "parameters 131, trainable 51, frozen 80"
has "info fz.st" "$info" "0.weight         [16, 4]                      64  frozen"
has "info fz.st" "$info" "0.bias           [16]                         16  frozen"
has "info fz.st" "$info" "2.weight         [3, 16]                      48  trainable"
has "info fz.st" "$info" 'fedtune.frozen = ["0.weight","0.bias"]'
py "--freeze 0: frozen tensors bit for bit unchanged" -- st.py same t.st fz.st 0.weight 0.bias
py "--freeze 0: the head trained" -- st.py differ t.st fz.st 2.weight 2.bias
expect 0 "131 trainable" -- "$FEDTUNE" train --model fz.st --data "$BLOBS" --out uf.st \
  --unfreeze '0.*' --epochs 1
expect 0 "fedtune.frozen = []" -- "$FEDTUNE" info uf.st
# The parser train shares with coordinator and sim: index and glob mixed, spaces trimmed;
# a bad pattern is named and nothing is written.
expect 0 "131 parameters, 16 trainable" -- "$FEDTUNE" train --model t.st --data "$BLOBS" --out fz2.st \
  --freeze ' 0.weight , 2' --epochs 1
expect 0 'fedtune.frozen = ["0.weight","2.weight","2.bias"]' -- "$FEDTUNE" info fz2.st
expect 2 'fedtune train: --freeze: "1" (layer 1, "1.*") matches no tensor of the model' -- \
  "$FEDTUNE" train --model t.st --data "$BLOBS" --out fz3.st --freeze 0,1
expect 2 'fedtune train: --unfreeze: empty pattern in "0.*,"' -- \
  "$FEDTUNE" train --model fz.st --data "$BLOBS" --out fz3.st --unfreeze '0.*,'
check "a refused --freeze writes nothing" -- test ! -e fz3.st

# ---- a new head on a binary task -----------------------------------------------------------
awk -F, 'NR == 1 { print "f1,f2,f3,f4,isred"; next }
         { print $1 "," $2 "," $3 "," $4 "," ($5 == "red" ? "yes" : "no") }' "$BLOBS" >bin.csv
expect 0 "2 classes" -- "$FEDTUNE" train --model t.st --data bin.csv --out nh.st --new-head 2 \
  --epochs 3 --lr 0.01
info=$("$FEDTUNE" info nh.st 2>&1)
has "info nh.st" "$info" "input (4) -> output 2"
has "info nh.st" "$info" "2.weight         [2, 16]"
has "info nh.st" "$info" 'fedtune.classes = ["no","yes"]'
expect 0 "(150 examples)" -- "$FEDTUNE" eval --model nh.st --data bin.csv
expect 1 'bin.csv:2:5: unknown class "yes" (expected: blue, green, red)' -- \
  "$FEDTUNE" eval --model t.st --data bin.csv

# ---- usage errors (exit 2) ---------------------------------------------------------------
expect 2 "fedtune train: --patience needs validation data (--val-split or --val-data)" -- \
  "$FEDTUNE" train --model a.st --data "$BLOBS" --out x.st --patience 3 --val-split 0
expect 2 'fedtune train: --freeze: "nomatch" matches no tensor of the model' -- \
  "$FEDTUNE" train --model a.st --data "$BLOBS" --out x.st --freeze nomatch
expect 1 'fedtune train: a.st: tensor "0.weight"' -- \
  "$FEDTUNE" train --model a.st --arch fedavg-2nn --data "$BLOBS" --out x.st
expect 2 "fedtune train: give --model (fine-tune) or --arch (from scratch)" -- \
  "$FEDTUNE" train --data "$BLOBS" --out x.st

# ---- weights-only files (as exported from PyTorch): --arch gives the layout --------------
if [ -n "$PY" ]; then
  # a.st without __metadata__ and with a buffer the architecture lacks.
  "$PY" - a.st w.st <<'EOF'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
data = raw[8 + n:]
hdr.pop("__metadata__", None)
end = max(v["data_offsets"][1] for v in hdr.values())
hdr["9.running_mean"] = {"dtype": "F32", "shape": [2], "data_offsets": [end, end + 8]}
data += struct.pack("<2f", 0.5, 0.25)
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(h)) + h + data)
EOF
  expect 1 "fedtune train: w.st: no fedtune.arch in __metadata__" -- \
    "$FEDTUNE" train --model w.st --data "$BLOBS" --out x.st
  expect 1 '9.running_mean' -- "$FEDTUNE" train --model w.st --arch "$MLP" --data "$BLOBS" --out x.st
  expect 0 "train: wrote wx.st" -- "$FEDTUNE" train --model w.st --arch "$MLP" --allow-extra \
    --data "$BLOBS" --out wx.st --epochs 2
  expect 0 "parameters 131, trainable 131" -- "$FEDTUNE" info w.st --arch "$MLP" --allow-extra
  expect 0 "macro-F1" -- "$FEDTUNE" eval --model wx.st --data "$BLOBS"
  expect 0 "accuracy" -- "$FEDTUNE" eval --model w.st --arch "$MLP" --allow-extra --data "$BLOBS"
fi
expect 2 "fedtune pretrain: pretrain starts from --arch; use train to fine-tune --model" -- \
  "$FEDTUNE" pretrain --model a.st --data "$BLOBS" --out x.st
expect 2 'fedtune train: --optimizer: "lbfgs" is not one of sgd|adam|adamw' -- \
  "$FEDTUNE" train --model a.st --data "$BLOBS" --out x.st --optimizer lbfgs
expect 2 "fedtune train: --out is required" -- "$FEDTUNE" train --model a.st --data "$BLOBS"
expect 2 "fedtune train: --data is required" -- "$FEDTUNE" train --model a.st --out x.st
expect 2 "fedtune train: --momentum and --nesterov apply to --optimizer sgd only" -- \
  "$FEDTUNE" train --model a.st --data "$BLOBS" --out x.st --momentum 0.9
expect 2 "fedtune train: --freeze: every tensor is frozen; nothing would train" -- \
  "$FEDTUNE" train --model a.st --data "$BLOBS" --out x.st --freeze '*'
expect 2 "fedtune train: --val-split + --test-split leave no training data" -- \
  "$FEDTUNE" train --model a.st --data "$BLOBS" --out x.st --val-split 0.5 --test-split 0.5
check "usage errors write no model" -- test ! -e x.st
expect 0 "pretrain: wrote pt.st" -- "$FEDTUNE" pretrain --arch "$MLP" --data "$BLOBS" --out pt.st \
  --epochs 1

# ---- bad data and model files (exit 1, naming file and line) -----------------------------
{
  head -3 "$BLOBS"
  printf '0.56,3.917,3.215,blue\n'
  sed -n 5,6p "$BLOBS"
} >ragged.csv
expect 1 "fedtune train: ragged.csv:4: 4 fields, expected 5 (as line 1)" -- "$FEDTUNE" train --model a.st --data ragged.csv --out x.st
printf 'a,b,c\n1,2,0\n3,4,1\n5,6\n7,8,1\n' >ragged_num.csv
expect 1 "fedtune train: ragged_num.csv:4: 2 fields, expected 3 (as line 1)" -- \
  "$FEDTUNE" train --model f.st --data ragged_num.csv --out x.st
{
  head -3 "$BLOBS"
  printf '0.56,abc,3.215,-2.279,blue\n'
} >nonnum.csv
expect 1 'fedtune train: nonnum.csv:4:2: "abc" is not a number' -- \
  "$FEDTUNE" train --model a.st --data nonnum.csv --out x.st
head -11 "$BLOBS" | sed '4s/^[^,]*,/,/' >miss.csv
expect 1 'fedtune train: miss.csv:4:1: missing value ""' -- \
  "$FEDTUNE" train --model a.st --data miss.csv --out x.st
head -c 100 a.st >trunc.st
expect 1 "fedtune train: trunc.st: header length" -- \
  "$FEDTUNE" train --model trunc.st --data "$BLOBS" --out x.st
printf 'this is not a model file\n' >garbage.st
expect 1 "fedtune train: garbage.st: " -- "$FEDTUNE" train --model garbage.st --data "$BLOBS" --out x.st
expect 1 "fedtune eval: garbage.st: " -- "$FEDTUNE" eval --model garbage.st --data "$BLOBS"
expect 1 "fedtune info: trunc.st: " -- "$FEDTUNE" info trunc.st
expect 1 "fedtune train: none.st" -- "$FEDTUNE" train --model none.st --data "$BLOBS" --out x.st
expect 1 "fedtune train: none.csv" -- "$FEDTUNE" train --model a.st --data none.csv --out x.st
check "failed runs write no model" -- test ! -e x.st

# ---- missing values ------------------------------------------------------------------------
expect 0 "train: wrote md.st" -- "$FEDTUNE" train --model a.st --data miss.csv --out md.st \
  --missing drop --epochs 1 --val-split 0
expect 0 "train: wrote mm.st" -- "$FEDTUNE" train --model a.st --data miss.csv --out mm.st \
  --missing mean --epochs 1 --val-split 0
expect 0 "dropped (missing values) 1, cells imputed 0" -- "$FEDTUNE" data info miss.csv --missing drop
expect 0 "examples 9, features 4" -- "$FEDTUNE" data info miss.csv --missing drop
expect 0 "dropped (missing values) 0, cells imputed 1" -- "$FEDTUNE" data info miss.csv --missing mean
expect 0 "examples 10, features 4" -- "$FEDTUNE" data info miss.csv --missing mean
expect 1 'miss.csv:4:1: missing value ""' -- "$FEDTUNE" data info miss.csv

# ---- nothing written on failure -----------------------------------------------------------
mkdir out
printf 'keep me\n' >out/m.st
expect 1 "ragged.csv:4:" -- "$FEDTUNE" train --model a.st --data ragged.csv --out out/m.st
check "failed train leaves an existing --out unchanged" -- test "$(cat out/m.st)" = "keep me"
expect 1 "trunc.st" -- "$FEDTUNE" train --model trunc.st --data "$BLOBS" --out out/m.st
check "failed train leaves an existing --out unchanged" -- test "$(cat out/m.st)" = "keep me"
expect 1 "ragged.csv:4:" -- "$FEDTUNE" train --model a.st --data ragged.csv --out out/new.st
check "failed train creates no --out" -- test ! -e out/new.st
mkdir out/dir.st
expect 1 "out/dir.st: " -- "$FEDTUNE" train --model a.st --data "$BLOBS" --out out/dir.st --epochs 1
expect 1 "out/none/x.st: " -- "$FEDTUNE" train --model a.st --data "$BLOBS" --out out/none/x.st \
  --epochs 1
check "failed runs leave no temporary files" -- test "$(find out -name '*.tmp.*' | wc -l)" -eq 0
check "failed runs leave only what was there" -- test "$(find out | wc -l)" -eq 3

# ---- tune ----------------------------------------------------------------------------------
out=$("$FEDTUNE" tune --model a.st --data "$BLOBS" --lrs 0.1,0.01 --epochs 3 --out tu.st 2>&1)
rc=$?
check "tune exits 0" -- test "$rc" -eq 0
has "tune" "$out" "tune: 2 trials (grid search)"
has "tune" "$out" "trial         lr  batch epochs   val loss  val acc   best"
check "tune: a table of 2 trials" -- test "$(printf '%s\n' "$out" | grep -cE '^ +[0-9]+ +0\.0?1 +32 +3 ')" -eq 2
has "tune" "$out" "tune: best trial "
has "tune" "$out" "tune: wrote the best trial's model to tu.st"
expect 0 '"command":"tune","trial":' -- "$FEDTUNE" info tu.st
out=$("$FEDTUNE" tune --model a.st --data "$BLOBS" --lrs 0.1,0.01 --epochs 2 --search random \
  --trials 3 2>&1)
check "tune --search random --trials 3: 3 trials run" -- \
  test "$(printf '%s\n' "$out" | grep -cE '^trial [0-9]+/3: ')" -eq 3
check "tune --search random --trials 3: 3 table rows" -- \
  test "$(printf '%s\n' "$out" | grep -cE '^ +[0-9]+ +[0-9.e-]+ +32 +2 ')" -eq 3
has "tune random" "$out" "tune: best trial "
expect 2 'fedtune tune: --lrs: "0.1,x": expected numbers' -- \
  "$FEDTUNE" tune --model a.st --data "$BLOBS" --lrs 0.1,x --epochs 1
expect 2 "fedtune tune: tune needs validation data" -- \
  "$FEDTUNE" tune --model a.st --data "$BLOBS" --val-split 0 --epochs 1

# ---- data info -----------------------------------------------------------------------------
expect 0 "examples 150, features 4, classes 3" -- "$FEDTUNE" data info "$BLOBS"
out=$("$FEDTUNE" data info --data "$BLOBS" 2>&1)
check "data info: 50 examples per class" -- \
  test "$(printf '%s\n' "$out" | grep -cE '^(red|green|blue) +50 +33\.33%$')" -eq 3
has "data info" "$out" "duplicate rows 0, conflicting rows (same features, other label) 0"
{
  head -6 "$BLOBS"
  sed -n 2p "$BLOBS"
  sed -n 3p "$BLOBS" | sed 's/green$/blue/'
} >dup.csv
out=$("$FEDTUNE" data info dup.csv 2>&1)
has "data info dup.csv" "$out" "duplicate rows 1"
has "data info dup.csv" "$out" "conflicting rows (same features, other label) 1"
expect 2 'fedtune data: unknown subcommand "frob"' -- "$FEDTUNE" data frob
expect 2 "usage: fedtune data info" -- "$FEDTUNE" data

# ---- --help of every subcommand ------------------------------------------------------------
expect 0 "--arch" -- "$FEDTUNE" init --help
expect 0 "--seed N" -- "$FEDTUNE" init --help
expect 0 "--freeze TEXT" -- "$FEDTUNE" train --help
expect 0 "--new-head N" -- "$FEDTUNE" train --help
expect 0 "--patience N" -- "$FEDTUNE" train --help
expect 0 "--metrics TEXT" -- "$FEDTUNE" train --help
expect 0 "--arch TEXT" -- "$FEDTUNE" pretrain --help
expect 0 "--json" -- "$FEDTUNE" eval --help
expect 0 "--lrs TEXT" -- "$FEDTUNE" tune --help
expect 0 "--search grid|random" -- "$FEDTUNE" tune --help
expect 0 "--tensors" -- "$FEDTUNE" info --help
expect 0 "--missing error|drop|mean" -- "$FEDTUNE" data info --help
expect 0 "usage: fedtune data info" -- "$FEDTUNE" data --help
expect 0 "--samples N" -- "$FEDTUNE" demo --help

# The committed sample configs are what --print-config prints, and every one reads back
# (its help comments are longer than the 200 bytes Debian's inih used to cut lines at).
for cmd in coordinator client relay; do
  ok "examples/$cmd.ini is stale: regenerate with fedtune $cmd --print-config" \
    cmp -s <("$FEDTUNE" "$cmd" --print-config) "$SRC/examples/$cmd.ini"
done
for f in "$SRC"/examples/*.ini; do
  cmd=$(basename "$f" .ini)
  expect 0 "[$cmd]" -- "$FEDTUNE" "$cmd" --config "$f" --print-config
done
ok "a sample config has lines over 200 bytes" test "$(awk 'length > 200' "$SRC"/examples/*.ini | wc -l)" -gt 0

report
