#!/usr/bin/env bash
# What a site pays with each of the two models, measured on real processes: a coordinator
# and ONE `fedtune client` over TLS on 127.0.0.1, 3 rounds, the site under /usr/bin/time:
#   encoder   USE-lite + LoRA r=4 on attention qkv/out + a new 2-class head, the imdb
#             source's 800 training sentences (1 local epoch a round)
#   gpt       gpt-mini (nextword.sh's pre-trained model) + LoRA r=8, Lincoln's training
#             speeches (1 local epoch a round)
# Prints and writes site-cost.md: the site's peak RSS, seconds per round (from its own
# round lines), bytes it received in round 1 and later rounds (its base cache folder keeps
# the frozen base), and its upload per round.
# Usage: examples/federated-text/site-cost.sh [--out DIR] [--fedtune BIN]
# Needs classify.sh's use-lite.safetensors and nextword.sh's gpt-mini.safetensors in
# results/ (run those first), and scripts/prepare-text's files.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${FEDTUNE_DATA:-$ROOT/data}
FEDTUNE=$ROOT/build/release/bin/fedtune
OUT=$ROOT/examples/federated-text/results
while [ $# -gt 0 ]; do
  case $1 in
  --out) OUT=$2; shift 2 ;;
  --fedtune) FEDTUNE=$2; shift 2 ;;
  *) echo "site-cost.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
ENC=$OUT/classify/use-lite.safetensors
GPT=$OUT/nextword/gpt-mini.safetensors
for f in "$ENC" "$GPT" /usr/bin/time; do
  [ -e "$f" ] || { echo "site-cost.sh: $f missing (run classify.sh and nextword.sh first)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
"$ROOT/certs/fedtune-certs" init-ca ca >/dev/null 2>&1
"$ROOT/certs/fedtune-certs" coordinator ca localhost --ip 127.0.0.1 >/dev/null 2>&1
"$ROOT/certs/fedtune-certs" site ca site-a >/dev/null 2>&1
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

run() { # <name> <model> <site data> <coordinator flags...>
  local name=$1 model=$2 data=$3 p
  shift 3
  p=$(port)
  "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$p" --ca ca/ca.crt \
    --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key --model "$model" \
    --rounds 3 --min-clients 1 --min-fit 1 --epochs 1 --batch 16 --optimizer adam --lr 0.001 \
    --metrics "$name.jsonl" "$@" >"$name.coord.log" 2>&1 &
  local cpid=$!
  /usr/bin/time -v -o "$name.time" "$FEDTUNE" client --coordinator "tcp://127.0.0.1:$p" \
    --server-name localhost --ca ca/ca.crt --cert ca/sites/site-a/site-a.crt \
    --key ca/sites/site-a/site-a.key --data "$data" --tokenizer "$model" --test-split 0.1 \
    --threads 2 --base-cache "bases-$name" >"$name.site.log" 2>&1
  wait "$cpid"
  local rss secs r1 r2 up
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): \([0-9]*\)/\1/p' "$name.time")
  secs=$(sed -n 's/.*site: round [0-9]*: .*, \([0-9.]*\) s$/\1/p' "$name.site.log" |
    awk '{ s += $1; n++ } END { printf "%.1f", s / n }')
  r1=$(sed -n 1p "$name.jsonl" | grep -o '"model_bytes":[0-9]*' | cut -d: -f2)
  r2=$(sed -n 3p "$name.jsonl" | grep -o '"model_bytes":[0-9]*' | cut -d: -f2)
  up=$(sed -n 3p "$name.jsonl" | grep -o '"bytes_in":[0-9]*' | cut -d: -f2)
  echo "| $name | $((rss / 1024)) | $secs | $r1 | $r2 | $up |"
}
{
  echo "| site with | peak RSS (MB) | s / round | model bytes, round 1 | model bytes, round 3 | upload bytes, round 3 |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  run encoder "$ENC" "$DATA/derived/sentiment/imdb.train.jsonl" --new-head 2 --lora-rank 4 \
    --lora-alpha 8 --lora-targets '*.qkv.weight,*.out.weight' --eval-data "$DATA/derived/sentiment/imdb.test.jsonl"
  run gpt "$GPT" "$DATA/derived/sotu/abraham_lincoln.train.jsonl" --lora-rank 8 --lora-alpha 16 \
    --eval-data "$DATA/derived/sotu/abraham_lincoln.test.jsonl"
} | tee "$OUT/site-cost.md"
