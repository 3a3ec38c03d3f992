#!/usr/bin/env bash
# Pre-train on public data, fine-tune on private data, evaluate: the path fedtune's
# clients will follow, run centrally on real MNIST.
#
#   public  = MNIST digits 0-4, all 30 596 training images (anyone may have them)
#   private = MNIST digits 5-9, only 1 000 labeled images (a site's own, small set)
#
# 1. pretrain the FedAvg 2NN (784-200-200-10) on the public digits;
# 2. fine-tune it on the private digits with a fresh head (--new-head 10), early
#    stopping on a validation split;
# 3. the control: the same architecture trained from scratch on the same 1 000 images;
# 4. evaluate both on the held-out private test digits (4 861 images of 5-9).
#
# Usage: examples/pretrain_finetune.sh [output dir]   (needs scripts/fetch-data --only mnist)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fedtune=${FEDTUNE:-$root/build/release/bin/fedtune}
mnist=${FEDTUNE_DATA:-$root/data}/mnist
out=${1:-$root/build/example}
mkdir -p "$out"
train=$mnist/train-images-idx3-ubyte
test=$mnist/t10k-images-idx3-ubyte
[ -f "$train" ] || { echo "no MNIST in $mnist: run scripts/fetch-data --only mnist" >&2; exit 1; }

step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "1. pre-train on the public digits 0-4" \
  "$fedtune" pretrain --arch fedavg-2nn --data "$train" --test-data "$test" \
  --only-classes 0,1,2,3,4 --epochs 3 --lr 0.001 --progress off --out "$out/public.safetensors"

step "   what the pre-trained model file holds" \
  "$fedtune" info "$out/public.safetensors" --no-tensors

private=(--data "$train" --test-data "$test" --only-classes 5,6,7,8,9 --train-examples 1000
  --val-split 0.1 --epochs 60 --lr 0.001 --patience 8 --progress off)

step "2. fine-tune on 1 000 private digits 5-9 (new head, early stopping)" \
  "$fedtune" train --model "$out/public.safetensors" --new-head 10 "${private[@]}" \
  --out "$out/finetuned.safetensors"

step "3. control: the same network from scratch on the same 1 000 digits" \
  "$fedtune" train --arch fedavg-2nn "${private[@]}" --out "$out/scratch.safetensors"

step "4. evaluate the fine-tuned model on the private test digits" \
  "$fedtune" eval --model "$out/finetuned.safetensors" --data "$test" --only-classes 5,6,7,8,9

acc() { "$fedtune" eval --model "$1" --data "$test" --only-classes 5,6,7,8,9 --json |
  sed 's/.*"accuracy":\([0-9.e-]*\).*/\1/'; }
a_ft=$(acc "$out/finetuned.safetensors")
a_sc=$(acc "$out/scratch.safetensors")
awk -v f="$a_ft" -v s="$a_sc" 'BEGIN {
  printf "\nsummary: test accuracy on private digits 5-9: fine-tuned %.2f%%, from scratch %.2f%% (%+.2f points)\n",
    100 * f, 100 * s, 100 * (f - s) }'
echo "models written to $out"
