#!/usr/bin/env bash
# fedtune against Debian's PyTorch on MNIST, in one run on one machine: the FedAvg 2NN
# and CNN, the same initial weights (a safetensors file fedtune writes and the torch
# script loads), the same optimizer (plain SGD), learning rate, batch size, epochs,
# thread count and input standardisation. The data order differs (each framework
# shuffles with its own seeded generator). Prints, per model, both training times
# (the training loop only, data loading excluded), examples/s, final test accuracy and
# the ratio fedtune/PyTorch of examples/s.
#
# Usage: bench/bench_vs_torch.sh [--models "2nn cnn"] [--epochs N] [--batch N]
#                                [--threads N] [--lr X] [--repeats N]
# Needs: scripts/fetch-data --only mnist, a release build (scripts/setup), python3-torch.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
models="2nn cnn"
epochs=1
batch=64
threads=1
lr=0.05
repeats=1
while [ $# -gt 0 ]; do
  case $1 in
    --models) models=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_vs_torch: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

fedtune=$here/build/release/bin/fedtune
data=${FEDTUNE_DATA:-$here/data}
mnist=$data/mnist
py=/usr/bin/python3
[ -x "$fedtune" ] || { echo "bench_vs_torch: no $fedtune; run scripts/setup first" >&2; exit 1; }
[ -f "$mnist/train-images-idx3-ubyte" ] ||
  { echo "bench_vs_torch: no MNIST in $mnist; run scripts/fetch-data --only mnist" >&2; exit 1; }
"$py" -c 'import torch' 2>/dev/null ||
  { echo "bench_vs_torch: $py cannot import torch (apt-get install python3-torch)" >&2; exit 1; }

# Both frameworks on the same BLAS thread count; numpy/torch read these at import.
export OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "fedtune vs PyTorch on MNIST: $(date -u '+%Y-%m-%d %H:%M') UTC, $(getconf _NPROCESSORS_ONLN) CPUs," \
  "load $(cut -d' ' -f1 /proc/loadavg), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo "$("$fedtune" --version | head -1); torch $("$py" -c 'import torch; print(torch.__version__)')"
echo "SGD lr $lr, batch $batch, $epochs epoch(s), $threads thread(s), same initial weights; best of $repeats"
echo
printf '%-5s %-8s %10s %12s %10s\n' model framework "train s" "examples/s" "test acc"

for m in $models; do
  "$fedtune" init --arch "fedavg-$m" --seed 1 --out "$tmp/init-$m.safetensors" >/dev/null
  best_f=0 best_t=0
  for _ in $(seq "$repeats"); do
    "$fedtune" train --model "$tmp/init-$m.safetensors" \
      --data "$mnist/train-images-idx3-ubyte" --test-data "$mnist/t10k-images-idx3-ubyte" \
      --val-split 0 --optimizer sgd --lr "$lr" --batch "$batch" --epochs "$epochs" \
      --threads "$threads" --seed 1 --progress off --metrics "$tmp/f.jsonl" \
      --out "$tmp/out-$m.safetensors" >"$tmp/f.out"
    f_secs=$(awk -F'"seconds":' '{split($2, a, ","); s += a[1]} END {printf "%.3f", s}' "$tmp/f.jsonl")
    f_eps=$(awk -v s="$f_secs" -v n="$epochs" 'BEGIN {printf "%.0f", 60000 * n / s}')
    f_acc=$(sed -n 's/^test: loss [0-9.]*  accuracy \([0-9.]*\)%.*/\1/p' "$tmp/f.out")
    if awk -v a="$f_eps" -v b="$best_f" 'BEGIN {exit !(a > b)}'; then
      best_f=$f_eps fs=$f_secs fa=$f_acc
    fi
    "$py" "$here/bench/bench_torch.py" --data "$data" --model "$m" --batch "$batch" \
      --epochs "$epochs" --lr "$lr" --threads "$threads" --seed 1 \
      --init "$tmp/init-$m.safetensors" >"$tmp/t.json"
    read -r t_secs t_eps t_acc < <("$py" -c 'import json,sys; j=json.load(open(sys.argv[1]));
print("%.3f %.0f %.2f" % (j["train_seconds"], j["examples_per_s"], 100*j["test_accuracy"]))' "$tmp/t.json")
    if awk -v a="$t_eps" -v b="$best_t" 'BEGIN {exit !(a > b)}'; then
      best_t=$t_eps ts=$t_secs ta=$t_acc
    fi
  done
  printf '%-5s %-8s %10s %12s %9s%%\n' "$m" fedtune "$fs" "$best_f" "$fa"
  printf '%-5s %-8s %10s %12s %9s%%\n' "$m" pytorch "$ts" "$best_t" "$ta"
  awk -v a="$best_f" -v b="$best_t" -v fa="$fa" -v ta="$ta" -v m="$m" 'BEGIN {
    printf "%-5s ratio fedtune/pytorch examples/s: %.2f   accuracy difference: %+.2f points\n\n",
      m, a / b, fa - ta }'
done
