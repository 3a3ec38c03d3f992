#!/usr/bin/env bash
# Quality check on real data: an MLP (64-128-10 with dropout) trained by `fedtune train`
# on scikit-learn's digits reaches >= 95% accuracy on a held-out test split, and a
# frozen-backbone fine-tune from it (--freeze 0) leaves the frozen tensors bit for bit
# unchanged. Skipped (exit 77) when the data has not been fetched.
# Usage: quality_digits.sh <path to fedtune> <source dir>   (data: $FEDTUNE_DATA or <src>/data)
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
DATA=${FEDTUNE_DATA:-$SRC/data}
DIGITS=$DATA/sklearn/digits.csv.gz
if [ ! -f "$DIGITS" ]; then
  echo "SKIP: $DIGITS not found: run scripts/fetch-data --only sklearn"
  exit 77
fi
DIGITS=$(cd "$(dirname "$DIGITS")" && pwd)/$(basename "$DIGITS")
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1

# Test accuracy (percent) from a train log's "test: loss L  accuracy X%  ..." line.
test_acc() { printf '%s\n' "$1" | awk '/^test: /{for(i=1;i<NF;i++) if($i=="accuracy"){v=$(i+1); sub("%","",v); print v}}'; }
at_least() { [ -n "$1" ] && awk -v a="$1" -v b="$2" 'BEGIN{exit !(a >= b)}'; }

ARCH='{"input":[64],"layers":[{"type":"linear","out":128},{"type":"relu"},{"type":"dropout","p":0.2},{"type":"linear","out":10}]}'
out=$("$FEDTUNE" train --arch "$ARCH" --data "$DIGITS" --out d.safetensors --epochs 40 \
  --val-split 0.15 --test-split 0.2 --lr 0.003 --patience 8 2>&1)
rc=$?
ok "train exits 0 (got $rc): $out" test "$rc" -eq 0
acc=$(test_acc "$out")
echo "digits MLP: test accuracy ${acc:-?}%"
ok "digits MLP test accuracy ${acc:-?}% >= 95%" at_least "$acc" 95

# Frozen backbone: only the head trains; layer 0 stays bit for bit what it was.
out=$("$FEDTUNE" train --model d.safetensors --data "$DIGITS" --out f.safetensors --freeze 0 \
  --epochs 5 --val-split 0.15 --test-split 0.2 --lr 0.001 2>&1)
rc=$?
ok "fine-tune exits 0 (got $rc): $out" test "$rc" -eq 0
acc2=$(test_acc "$out")
echo "digits frozen-backbone fine-tune: test accuracy ${acc2:-?}%"
ok "fine-tuned test accuracy ${acc2:-?}% >= 95%" at_least "$acc2" 95
info=$("$FEDTUNE" info f.safetensors 2>&1)
ok "info shows 0.* frozen: $info" grep -q 'fedtune.frozen = \["0.weight","0.bias"\]' <<<"$info"
if [ -n "$PY" ]; then
  # safetensors: 8-byte little-endian header length, JSON header, then the data.
  cmpout=$("$PY" - d.safetensors f.safetensors <<'EOF' 2>&1
import json, struct, sys
def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
for k in ("0.weight", "0.bias"):
    if not a.get(k) or a[k] != b.get(k):
        sys.exit("frozen tensor " + k + " changed")
if a["3.weight"] == b["3.weight"]:
    sys.exit("the head 3.weight did not train")
EOF
  )
  prc=$?
  ok "frozen bytes unchanged, head trained: $cmpout" test "$prc" -eq 0
else
  echo "note: no python3: the frozen-bytes comparison was skipped" >&2
fi

report
