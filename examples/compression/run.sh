#!/usr/bin/env bash
# Compressed uplink (--compress): each codec against none, on two federations.
#
#   default   fedtune sim's default scenario (a 2NN pre-trained on MNIST digits,
#             fine-tuned on Fashion-MNIST by 100 sites, Dirichlet 0.5, 10 a round,
#             200 rounds); target 85% test accuracy
#   cnn       the FedAvg CNN on the paper's pathological non-IID MNIST (shards, 2 a
#             client), 100 clients, 10 a round, B 10, E 1 (the paper: 5; shortened for 2
#             shared cores), lr 0.1, 40 rounds; target 90%
#
# Every run has --seed 1 (same partition, sample and training for every codec: only the
# uplink codec differs). Per run: the uplink and downlink bytes of a round (the metrics'
# update_bytes and model_bytes), the final test accuracy, the mean of the last 10
# rounds' (the final round's alone is noisy) and the first round reaching the target, all
# read from the round lines of the run's log.
#
# Usage: run.sh [--only default|cnn] [--codecs "none q8 ..."] [--cnn-rounds N] [--out DIR]
#        [--table-only] [FEDTUNE]
#   FEDTUNE defaults to $FEDTUNE, else build/release/bin/fedtune; output in
#   results/ beside this script: SCENARIO-CODEC.log (stdout), .csv (per round), table.md.
# Needs ${FEDTUNE_DATA:-<repo>/data} with mnist and fashion-mnist (scripts/fetch-data).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$HERE/results
ONLY="default cnn"
CODECS="none fp16 q8 q4 topk:0.02 topk:0.02+q8 topk:0.01 topk:0.01+q8"
CNN_ROUNDS=40
TABLE_ONLY=0
FEDTUNE=${FEDTUNE:-$ROOT/build/release/bin/fedtune}
while [ $# -gt 0 ]; do
  case $1 in
  --only) ONLY=$2; shift 2 ;;
  --codecs) CODECS=$2; shift 2 ;;
  --cnn-rounds) CNN_ROUNDS=$2; shift 2 ;;
  --out) OUT=$2; shift 2 ;;
  --table-only) TABLE_ONLY=1; shift ;;
  -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  *) FEDTUNE=$1; shift ;;
  esac
done
DATA=${FEDTUNE_DATA:-$ROOT/data}
export FEDTUNE_DATA=$DATA OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
mkdir -p "$OUT"

run() { # scenario codec
  local name=$1-${2//[:+]/_}
  case $1 in
  default)
    (cd "$OUT" && "$FEDTUNE" sim --compress "$2" --seed 1 --workers 2 --csv "$name.csv" \
      --plot "$name.png" >"$name.log" 2>&1) ;;
  cnn)
    "$FEDTUNE" sim --compress "$2" --seed 1 --workers 2 --arch fedavg-cnn \
      --data "$DATA/mnist/train-images-idx3-ubyte" --test-data "$DATA/mnist/t10k-images-idx3-ubyte" \
      --clients 100 --partition shards --shards-per-client 2 --fraction 0.1 --batch 10 \
      --epochs 1 --lr 0.1 --rounds "$CNN_ROUNDS" --deadline-ms 600000 \
      --csv "$OUT/$name.csv" >"$OUT/$name.log" 2>&1 ;;
  esac
}

if [ "$TABLE_ONLY" = 0 ]; then
  for s in $ONLY; do
    for c in $CODECS; do
      echo "$s $c ..." >&2
      run "$s" "$c"
    done
  done
fi

# One row per run, from its log's round lines ("... acc 0.8514, ..., up 2054660 B (10
# compressed), down 7968400 B"): bytes averaged over the rounds.
row() { # scenario codec target none_up
  awk -v codec="$2" -v target="$3" -v base="$4" '
    /^round +[0-9]+\/[0-9]+:/ {
      n++; r = $2; sub(/\/.*/, "", r)
      a = $0; sub(/.* acc /, "", a); sub(/,.*/, "", a); acc[n] = a + 0
      u = $0; sub(/.*, up /, "", u); sub(/ B.*/, "", u); up += u
      d = $0; sub(/.*, down /, "", d); sub(/ B.*/, "", d); down += d
      if (!hit && acc[n] >= target) hit = r }
    END {
      if (!n) exit
      last = 0; k = (n < 10 ? n : 10)
      for (i = n - k + 1; i <= n; i++) last += acc[i]
      printf "| %s | %.0f | %s | %.0f | %.4f | %.4f | %s |\n", codec, up / n,
        (base > 0 ? sprintf("%.1fx", base / (up / n)) : "-"), down / n, acc[n], last / k,
        (hit ? hit : "not in " n) }' "$OUT/$1-${2//[:+]/_}.log"
}
uplink() { awk '/^round +[0-9]+\/[0-9]+:/ { u = $0; sub(/.*, up /, "", u); sub(/ B.*/, "", u); s += u; n++ }
  END { if (n) printf "%.0f", s / n; else print 0 }' "$1"; }

{
  echo "# Compressed uplink: results ($(date -u +%Y-%m-%d), $(nproc) cores)"
  for s in default cnn; do
    [ -f "$OUT/$s-none.log" ] || continue
    target=0.85; [ "$s" = cnn ] && target=0.90
    echo
    echo "## $s (target $target)"
    echo
    echo "| codec | up B/round | fewer | down B/round | final acc | mean acc, last 10 | round >= target |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    base=$(uplink "$OUT/$s-none.log")
    for c in $CODECS; do
      [ -f "$OUT/$s-${c//[:+]/_}.log" ] && row "$s" "$c" "$target" "$base"
    done
  done
} >"$OUT/table.md"
cat "$OUT/table.md"
