#!/usr/bin/env bash
# A small GPT from the command line: `fedtune init` of a decoder with the tied lmhead (and
# of the examples/archs/gpt-mini.json preset), `fedtune info` naming it a language model,
# `fedtune train` with the next-token loss (perplexity in the epoch lines and the metrics
# file, labels ignored), `fedtune eval` printing the perplexity and the predicted tokens,
# LoRA on it, a simulated federation of it, and the errors (a bad tie, label smoothing, a
# new head).
# Usage: cli_lm.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1

# Texts of 2..8 token ids counting up modulo 5 from a random start, -1 padding to T = 8,
# label 0 (a language model ignores it): each text predicts (length - 1) tokens.
awk 'BEGIN { srand(3); for (i = 0; i < 200; i++) { n = 2 + int(rand() * 7); s = int(rand() * 5);
  line = ""; for (t = 0; t < 8; t++) line = line (t < n ? (s + t) % 5 : -1) ","; print line 0 } }' \
  >lm.csv
tokens=$(awk -F, '{ n = 0; for (t = 1; t <= 8; t++) if ($t != -1) n++; s += n - 1 } END { print s }' lm.csv)
cat >gpt.json <<'JSON'
{"input":[8],"layers":[{"type":"embedding","vocab":5,"dim":16,"pad":true,"name":"wte"},
{"type":"positions","kind":"learned","name":"wpe"},
{"type":"residual","name":"h0a","layers":[{"type":"layernorm"},{"type":"attention","heads":2,"causal":true}]},
{"type":"residual","name":"h0m","layers":[{"type":"layernorm"},{"type":"linear","out":64},{"type":"gelu"},{"type":"linear","out":16}]},
{"type":"layernorm","name":"ln_f"},{"type":"lmhead","tie":"wte"}]}
JSON
# wte 5*16, wpe 8*16, attention 4*16*16+4*16, MLP 2*16*64+64+16, three norms 3*2*16.
expect 0 "init: wrote lm.safetensors (3520 parameters" -- \
  "$FEDTUNE" init --arch @gpt.json --out lm.safetensors
out=$("$FEDTUNE" info lm.safetensors 2>&1)
has() { if [[ "$2" == *"$3"* ]]; then pass=$((pass + 1)); else
  echo "FAIL: $1: output lacks \"$3\": $2" >&2
  fail=$((fail + 1))
fi; }
has "info" "$out" "language model: 8 positions each predict the next of 5 tokens (next-token loss)"
has "info" "$out" "lmhead         tied to wte (vocab 5) [5]  -> (8, 5)"
# The preset: V 4096, T 128, D 128, 4 blocks: 4096*128 + 128*128 + 4*(4*128*128+4*128 +
# 2*128*512+512+128 + 4*128) + 2*128.
expect 0 "(1334016 parameters" -- \
  "$FEDTUNE" init --arch @"$SRC/examples/archs/gpt-mini.json" --out mini.safetensors

run_status "train" 0 train.log -- "$FEDTUNE" train --model lm.safetensors --data lm.csv \
  --epochs 6 --lr 0.01 --val-split 0.2 --metrics m.jsonl --out t.safetensors
has "train" "$(cat train.log)" "epoch   1/6   train loss "
ok "the epoch lines carry ppl: $(grep -c ' ppl ' train.log) of 6" \
  test "$(grep -c '^epoch .* train loss [0-9.]* ppl [0-9.]* acc .* val loss [0-9.]* ppl ' train.log)" -eq 6
ok "metrics carry tokens, train_ppl and val_ppl" \
  grep -q '"tokens":[0-9]*,"train_ppl":[0-9.e+-]*,"val_ppl":' m.jsonl
run_status "eval" 0 eval.log -- "$FEDTUNE" eval --model t.safetensors --data lm.csv
has "eval" "$(cat eval.log)" "eval: t.safetensors on lm.csv (200 texts, $tokens predicted tokens)"
ppl=$(sed -n 's/^loss [0-9.]*  ppl \([0-9.]*\)  next-token accuracy .*/\1/p' eval.log)
ok "a counting pattern is learned: ppl ${ppl:-none} < 1.2 (5 tokens: 5 at chance)" \
  awk -v p="${ppl:-9}" 'BEGIN { exit !(p < 1.2) }'
expect 0 "\"tokens\":$tokens,\"ppl\":" -- "$FEDTUNE" eval --model t.safetensors --data lm.csv --json
# LoRA: adapters on the attention and MLP weights; the tied table stays frozen.
expect 0 "LoRA: rank 2, alpha 2 on 4 weights" -- "$FEDTUNE" train --model t.safetensors \
  --data lm.csv --lora-rank 2 --epochs 1 --lr 0.01 --out lora.safetensors
has "info lora" "$("$FEDTUNE" info lora.safetensors 2>&1)" "parameters 4032, trainable 512"

# A federation of 4 simulated sites trains it the same way (nothing new on the wire): the
# round lines and the coordinator's metrics carry the perplexity of the central test set.
run_status "sim" 0 sim.log -- "$FEDTUNE" sim --arch @gpt.json --data lm.csv --test-data lm.csv \
  --clients 4 --rounds 2 --epochs 2 --lr 0.05 --metrics sim.jsonl
ok "sim rounds print ppl" grep -q '^round   2/2: .* test loss [0-9.]* ppl [0-9.]* acc ' sim.log
ok "sim metrics carry central_ppl" grep -q '"central_ppl":[0-9.e+-]*,' sim.jsonl

# Errors: one line naming the layer and field; nothing written.
sed 's/"tie":"wte"/"tie":"wtx"/' gpt.json >bad.json
expect 1 'layer 5 (lmhead): field "tie": no layer is named "wtx"' -- \
  "$FEDTUNE" init --arch @bad.json --out bad.safetensors
expect 2 "label smoothing: not for a language model" -- "$FEDTUNE" train --model lm.safetensors \
  --data lm.csv --label-smoothing 0.1 --out bad.safetensors
expect 2 "new head: the model ends in an lmhead tied to embedding \"wte\"" -- \
  "$FEDTUNE" train --model lm.safetensors --data lm.csv --new-head 3 --out bad.safetensors
ok "nothing written by a failed run" test ! -e bad.safetensors
report
