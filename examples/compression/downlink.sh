#!/usr/bin/env bash
# Compressed downlink (--compress-down): each dense codec against none, in a cross-silo
# federation where every site takes part in every round and keeps the model between
# rounds (as `fedtune client` daemons do: sim --keep-models), so from round 2 every site
# holds the last version and receives the change instead of the weights.
#
#   fedtune sim's default scenario data and model (a 2NN pre-trained on MNIST digits,
#   new head, fine-tuned on Fashion-MNIST, Dirichlet 0.5) with 10 sites, all 10 every
#   round, 30 rounds, --seed 1
#
# Per codec: downlink bytes of round 1 and of a later round, downlink bytes in all, the
# final accuracy, the mean of the last 10 rounds and the first round at 85%, from the
# metrics (model_bytes, models_delta, central_accuracy). Writes results/downlink.md.
# Usage: downlink.sh [--codecs "none q8 fp16"] [--rounds N] [FEDTUNE]
# Needs ${FEDTUNE_DATA:-<repo>/data} with mnist and fashion-mnist (scripts/fetch-data).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$HERE/results
CODECS="none q8 q4 fp16 bf16"
ROUNDS=30
FEDTUNE=${FEDTUNE:-$ROOT/build/release/bin/fedtune}
while [ $# -gt 0 ]; do
  case $1 in
  --codecs) CODECS=$2; shift 2 ;;
  --rounds) ROUNDS=$2; shift 2 ;;
  -*) echo "downlink.sh: unknown option $1" >&2; exit 2 ;;
  *) FEDTUNE=$1; shift ;;
  esac
done
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} # bench/README.md: misdetected otherwise
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for c in $CODECS; do
  (cd "$work" && "$FEDTUNE" sim --clients 10 --fraction 1 --rounds "$ROUNDS" --keep-models \
    --compress-down "$c" --seed 1 --metrics "$OUT/down-$c.jsonl.tmp" >"$OUT/down-$c.log.tmp" 2>&1)
  mv "$OUT/down-$c.jsonl.tmp" "$OUT/down-$c.jsonl"
  mv "$OUT/down-$c.log.tmp" "$OUT/down-$c.log"
  echo "down-$c: $(grep '^summary' "$OUT/down-$c.log")"
done
{
  echo "| codec | down B, round 1 | down B, round $ROUNDS | fewer | deltas, round $ROUNDS | down B in all | final acc | mean acc, last 10 | round >= 85% |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for c in $CODECS; do
    awk -v c="$c" '
      { r = $0; sub(/.*"round":/, "", r); r += 0
        b = $0; sub(/.*"model_bytes":/, "", b); b += 0
        a = $0; sub(/.*"central_accuracy":/, "", a); a += 0
        d = 0; if ($0 ~ /"models_delta":/) { d = $0; sub(/.*"models_delta":/, "", d); d += 0 }
        bytes[r] = b; acc[r] = a; deltas[r] = d; total += b; if (r > last) last = r
        if (!hit && a >= 0.85) hit = r }
      END {
        m = 0; for (i = last - 9; i <= last; i++) m += acc[i]
        if (c == "none") base = bytes[last]
        printf "| %s | %d | %d | %.2fx | %d | %d | %.4f | %.4f | %s |\n", c, bytes[1], bytes[last],
               bytes[1] / bytes[last], deltas[last], total, acc[last], m / 10, hit ? hit : "-"
      }' "$OUT/down-$c.jsonl"
  done
} >"$OUT/downlink.md"
cat "$OUT/downlink.md"
