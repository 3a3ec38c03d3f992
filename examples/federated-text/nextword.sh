#!/usr/bin/env bash
# Next-word prediction on devices, the canonical cross-device job: a small GPT
# (examples/archs/gpt-mini.json, 1.3 M parameters) pre-trained centrally on public-domain
# English (KJV chapters, Moby Dick, Jane Austen's six novels: scripts/prepare-text's
# corpus) with a byte-level BPE of 4 096 ids learned from the same text, then fine-tuned
# with LoRA adapters by 43 simulated writers, the presidents of the State of the Union
# addresses (each holds their speeches but the last, which is their held-out test).
# Measures each writer's perplexity on their held-out speech for
#   pre-trained      the central model as it is
#   fed factors      federated LoRA, A and B averaged separately (FedIT)
#   fed frozen-a     federated LoRA, A frozen from the shared seed (FFA-LoRA)
#   local-only       each writer fine-tunes the same adapters on their own speeches alone
# and writes nextword.md: the table, the token-weighted mean over all writers, and bytes
# per round of adapters against the whole model. The pre-trained checkpoint is an
# artefact of this script: its command, seed and SHA-256 are in nextword.md.
# Usage: examples/federated-text/nextword.sh [--rounds N] [--pretrain-epochs N] [--tls]
#        [--out DIR] [--fedtune BIN]
#   --tls: the sites talk to the coordinator over the full TLS channel (same results)
# Needs scripts/fetch-data --only kjv,moby-dick,austen,sotu && scripts/prepare-text
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${FEDTUNE_DATA:-$ROOT/data}
FEDTUNE=$ROOT/build/release/bin/fedtune
OUT=$ROOT/examples/federated-text/results
ROUNDS=8
PRE_EPOCHS=4
TLS=()
while [ $# -gt 0 ]; do
  case $1 in
  --rounds) ROUNDS=$2; shift 2 ;;
  --pretrain-epochs) PRE_EPOCHS=$2; shift 2 ;;
  --out) OUT=$2; shift 2 ;;
  --fedtune) FEDTUNE=$2; shift 2 ;;
  --tls) TLS=(--tls); shift ;;
  *) echo "nextword.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} # bench/README.md: misdetected otherwise
C=$DATA/derived/corpus
S=$DATA/derived/sotu
if [ ! -f "$C/train.jsonl" ] || [ ! -f "$S/sites.tsv" ]; then
  echo "nextword.sh: needs scripts/fetch-data --only kjv,moby-dick,austen,sotu and scripts/prepare-text" >&2
  exit 1
fi
mkdir -p "$OUT/nextword"
cd "$OUT/nextword"

# ---- the pre-trained model (skipped when this tokenizer and model are already here) -------
PRE=(pretrain --arch @"$ROOT/examples/archs/gpt-mini.json" --text "$C/train.jsonl"
  --val-data "$C/valid.jsonl" --tokenizer gpt-tok.json --epochs "$PRE_EPOCHS" --batch 16
  --optimizer adamw --lr 0.003 --weight-decay 0.1 --schedule cosine --warmup 200
  --min-lr 0.0003 --threads 2 --seed 1 --metrics pretrain.metrics.jsonl --progress off
  --out gpt-mini.safetensors)
if [ ! -f gpt-mini.safetensors ]; then
  "$FEDTUNE" tokenizer train --text "$C/train.jsonl" --vocab 4096 --out gpt-tok.json
  "$FEDTUNE" "${PRE[@]}" | tee pretrain.log
fi
"$FEDTUNE" generate --model gpt-mini.safetensors --prompt "It is a truth universally" \
  --temperature 0.8 --top-k 40 --max-tokens 40 --seed 1 >sample.txt

# ---- federations and local-only fine-tuning -------------------------------------------
LORA=(--lora-rank 8 --lora-alpha 16)
TRAIN=(--optimizer adam --lr 0.002 --batch 16 --seed 1)
sim() { # <name> <aggregation>
  echo "== $1"
  [ -f "$1.safetensors" ] && return
  rm -f "$1.jsonl" # the metrics file is appended to
  "$FEDTUNE" sim --model gpt-mini.safetensors "${LORA[@]}" --lora-aggregation "$2" "${TRAIN[@]}" \
    --sites "$S/sites.tsv" --rounds "$ROUNDS" --fraction 0.2 --epochs 1 --workers 2 \
    --metrics "$1.jsonl" --csv "$1.csv" --out "$1.safetensors" "${TLS[@]}" >"$1.log"
}
sim fed-factors factors
sim fed-frozen-a frozen-a
mkdir -p local
while IFS=$'\t' read -r name train _; do
  [ -f "local/$name.safetensors" ] && continue
  "$FEDTUNE" train --model gpt-mini.safetensors "${LORA[@]}" "${TRAIN[@]}" --data "$S/$train" \
    --val-split 0 --test-split 0 --epochs 2 --threads 2 --progress off \
    --out "local/$name.safetensors" >"local/$name.log"
done <"$S/sites.tsv"

# ---- per-writer perplexity ----------------------------------------------------------------
ev() { # <model> <data>: "loss tokens ppl"
  "$FEDTUNE" eval --model "$1" --data "$2" --json --threads 2 |
    sed -n 's/.*"loss":\([0-9.e+-]*\).*"tokens":\([0-9]*\),"ppl":\([0-9.e+-]*\).*/\1 \2 \3/p'
}
rm -f losses.txt
{
  echo "| writer | test tokens | pre-trained | fed factors | fed frozen-a | local-only |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  while IFS=$'\t' read -r name _ test; do
    read -r l0 tok p0 <<<"$(ev gpt-mini.safetensors "$S/$test")"
    read -r l1 _ p1 <<<"$(ev fed-factors.safetensors "$S/$test")"
    read -r l2 _ p2 <<<"$(ev fed-frozen-a.safetensors "$S/$test")"
    read -r l3 _ p3 <<<"$(ev "local/$name.safetensors" "$S/$test")"
    printf '| %s | %s | %.1f | %.1f | %.1f | %.1f |\n' "$name" "$tok" "$p0" "$p1" "$p2" "$p3"
    echo "$tok $l0 $l1 $l2 $l3" >>losses.txt
  done <"$S/sites.tsv"
} >writers.md
overall=$(awk '{ n += $1; for (i = 2; i <= 5; i++) s[i] += $1 * $i }
  END { printf "| all writers (token-weighted) | %d | %.1f | %.1f | %.1f | %.1f |", n,
        exp(s[2] / n), exp(s[3] / n), exp(s[4] / n), exp(s[5] / n) }' losses.txt)
rm -f losses.txt
{
  echo "Perplexity on each writer's held-out speech (their last State of the Union address)."
  echo
  pre="fedtune ${PRE[*]}"
  pre=${pre//$ROOT\//}
  pre=${pre//$DATA\//data\/}
  echo "Pre-trained: \`$pre\` (tokenizer: \`fedtune tokenizer train --text"
  echo "corpus/train.jsonl --vocab 4096\`), SHA-256 $(sha256sum gpt-mini.safetensors | cut -c1-64);"
  echo "validation perplexity $(tail -1 pretrain.metrics.jsonl | grep -o '"val_ppl":[0-9.]*' | cut -d: -f2)."
  echo "Federated: $ROUNDS rounds, 20% of the 43 writers a round, 1 local epoch, LoRA r=8 (alpha 16)"
  echo "on every linear and attention weight, Adam lr 0.002, batch 16. Local-only: 2 epochs."
  echo
  head -2 writers.md
  echo "$overall"
  tail -n +3 writers.md
  echo
  echo "| federation | trainable floats | upload bytes / round | model bytes / round (last) | whole model bytes | s / round |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  for n in fed-factors fed-frozen-a; do
    first=$(head -1 "$n.jsonl") # round 1: every site gets the whole model (with its adapters)
    whole=$(($(grep -o '"model_bytes":[0-9]*' <<<"$first" | cut -d: -f2) / $(grep -o '"models_full":[0-9]*' <<<"$first" | cut -d: -f2)))
    last=$(tail -1 "$n.jsonl")
    up=$(grep -o '"bytes_in":[0-9]*' <<<"$last" | cut -d: -f2)
    down=$(grep -o '"model_bytes":[0-9]*' <<<"$last" | cut -d: -f2)
    sent=$(grep -o '"models_trainable_only":[0-9]*' <<<"$last" | cut -d: -f2)
    full=$(grep -o '"models_full":[0-9]*' <<<"$last" | cut -d: -f2)
    spr=$(awk -F, 'NR > 1 { s += $8; n++ } END { printf "%.1f", s / n }' "$n.csv")
    echo "| $n | $(((down - full * whole) / sent / 4)) | $up | $down | $whole | $spr |"
  done
  echo
  echo "A sample (temperature 0.8, top-k 40, seed 1):"
  echo
  echo '```'
  cat sample.txt
  echo '```'
} >nextword.md
cat nextword.md
