#!/usr/bin/env bash
# LoRA fine-tuning from the command line on a small padded-sequence encoder: `fedtune
# train --new-head --lora-rank` trains only the adapters and the head (the base tensors
# stay bit for bit), `fedtune merge` folds the adapters in and the merged model
# evaluates exactly as the adapted one; the errors name the flag.
# Usage: cli_lora.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1

# Token-id sequences (ids then -1 padding to 16) and a label that depends on which
# tokens occur: class 1 when ids 3 and 5 outnumber ids 4 and 6.
awk 'BEGIN { srand(7); for (i = 0; i < 400; i++) { n = 1 + int(rand() * 12); a = 0; b = 0; line = "";
  for (t = 0; t < 16; t++) { if (t < n) { v = int(rand() * 20); if (v == 3 || v == 5) a++;
      if (v == 4 || v == 6) b++ } else v = -1; line = line v "," }
  print line (a > b ? 1 : 0) } }' >tok.csv
cat >enc.json <<'JSON'
{"input":[16],"layers":[{"type":"embedding","vocab":20,"dim":16,"pad":true},{"type":"positions"},
{"type":"residual","name":"b0","layers":[{"type":"layernorm"},{"type":"attention","heads":2}]},
{"type":"residual","name":"f0","layers":[{"type":"layernorm"},{"type":"linear","out":32},
{"type":"relu"},{"type":"linear","out":16}]},
{"type":"meanpool"},{"type":"linear","out":16},{"type":"tanh"},{"type":"l2norm"}]}
JSON
expect 0 "2816 parameters" -- "$FEDTUNE" init --arch @enc.json --out enc.safetensors
# Adapters on the attention and feed-forward weights, pre-train the encoder a little
# first so the base is not random.
expect 0 "train: wrote" -- "$FEDTUNE" train --model enc.safetensors --data tok.csv --new-head 2 \
  --epochs 3 --lr 0.01 --out base.safetensors
expect 0 "LoRA: rank 4, alpha 8 on 4 weights" -- "$FEDTUNE" train --model base.safetensors \
  --data tok.csv --lora-rank 4 --lora-alpha 8 --lora-targets '*.qkv.weight,*.out.weight,f0.*' \
  --epochs 12 --lr 0.01 --out lora.safetensors
out=$("$FEDTUNE" info lora.safetensors 2>&1)
# qkv 4*(16+48), out 4*(16+16), f0.1 4*(16+32), f0.3 4*(32+16): 768 trainable.
has() { if [[ "$2" == *"$3"* ]]; then pass=$((pass + 1)); else
  echo "FAIL: $1: output lacks \"$3\": $2" >&2
  fail=$((fail + 1))
fi; }
has "info lora" "$out" "parameters 3618, trainable 768, frozen 2850"
has "info lora" "$out" "b0.1.qkv.lora_B  [48, 4]"
# The frozen base did not move: every tensor of base.safetensors is bit-identical.
cat >same.py <<'PY'
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]
            for k, v in h.items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
moved = [k for k in a if a[k] != b[k]]
print("base tensors", len(a), "moved", len(moved), "adapters", len(set(b) - set(a)))
sys.exit(1 if moved else 0)
PY
expect 0 "base tensors 17 moved 0 adapters 8" -- python3 same.py base.safetensors lora.safetensors
# Merged: the same predictions, the same loss to the printed digits, no adapter left.
expect 0 "merge: 4 adapters folded; wrote merged.safetensors (2850 parameters, 3618 before)" -- \
  "$FEDTUNE" merge --model lora.safetensors --out merged.safetensors
e1=$("$FEDTUNE" eval --model lora.safetensors --data tok.csv 2>&1 | grep '^loss')
e2=$("$FEDTUNE" eval --model merged.safetensors --data tok.csv 2>&1 | grep '^loss')
ok "merged evaluates as adapted: '$e1' vs '$e2'" test -n "$e1" -a "$e1" = "$e2"
acc=$(sed -n 's/.*accuracy \([0-9.]*\)%.*/\1/p' <<<"$e1")
ok "LoRA-tuned accuracy $acc% >= 80%" awk -v a="${acc:-0}" 'BEGIN { exit !(a >= 80) }'
expect 2 "merged.safetensors has no LoRA adapters to merge" -- \
  "$FEDTUNE" merge --model merged.safetensors --out again.safetensors
ok "nothing written by a failed merge" test ! -e again.safetensors
# Errors name the flag.
expect 2 '--lora-targets: LoRA: "*.qvk.weight" matches no weight that takes adapters' -- \
  "$FEDTUNE" train --model base.safetensors --data tok.csv --lora-rank 2 \
  --lora-targets '*.qvk.weight' --out x.safetensors
expect 2 "--lora-targets and --lora-alpha need --lora-rank" -- \
  "$FEDTUNE" train --model base.safetensors --data tok.csv --lora-alpha 4 --out x.safetensors
ok "nothing written by a failed train" test ! -e x.safetensors
report
