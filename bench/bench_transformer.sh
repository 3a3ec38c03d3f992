#!/usr/bin/env bash
# fedtune against Debian's PyTorch on transformer training steps, in one run on one
# machine: bench_transformer (C) and its twin bench_transformer.py on the same shapes,
# the same initial weights (safetensors files bench_transformer --save writes and the
# torch script loads), the same sentence lengths and token ids. Cases: one encoder block
# (width 512, 4 heads, FFN 1536, T 128, all trainable), USE-lite with only a new head
# trainable, USE-lite all trainable (see bench_transformer.c).
#
# Sentence lengths for the USE-lite cases: the sentiment data (FEDTUNE_DATA/sentiment/
# all.jsonl, scripts/fetch-data) counted as words and punctuation marks, shuffled with a
# fixed seed; without it, a synthetic mix of mean ~15. Each batch runs at the length of
# its longest sentence in both frameworks.
#
# Threads: fedtune runs OpenBLAS on T threads. PyTorch is tried at every setting of its
# two pools for T (torch.set_num_threads/OMP_NUM_THREADS and OPENBLAS_NUM_THREADS: 1/1
# for T=1; 2/1, 1/2 and 2/2 for T=2) and with both attention implementations
# (nn.MultiheadAttention, explicit); the best is compared and every try is printed.
# fedtune runs before and after PyTorch and its better run counts, so a neighbour's burst
# on a shared machine does not decide a row.
#
# Usage: bench/bench_transformer.sh [--cases "block use-head use-all"] [--batches "16 64"]
#                                   [--threads "1 2"] [--seconds S] [--repeats R]
#                                   [--build DIR] [--quick]
# Needs: a build with bench_transformer (default build/release), python3-torch.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cases="block use-head use-all"
batches="16 64"
threads="1 2"
seconds=2
repeats=3
build=$here/build/release
while [ $# -gt 0 ]; do
  case $1 in
    --cases) cases=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --quick) seconds=0.2; repeats=2; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_transformer.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

bench=$build/bench/bench_transformer
py=/usr/bin/python3
data=${FEDTUNE_DATA:-$here/data}
[ -x "$bench" ] || { echo "bench_transformer.sh: no $bench; build it (cmake --build $build)" >&2; exit 1; }
"$py" -c 'import torch' 2>/dev/null ||
  { echo "bench_transformer.sh: $py cannot import torch (apt-get install python3-torch)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bench" --save "$tmp"

# One length a line, the same file for both programs.
"$py" - "$data/sentiment/all.jsonl" >"$tmp/lengths" <<'EOF'
import json, math, random, re, sys
rng = random.Random(20261206)
try:
    with open(sys.argv[1]) as f:
        lengths = [len(re.findall(r"\w+|[^\w\s]", json.loads(line)["text"])) for line in f]
    source = "sentiment/all.jsonl"
except OSError:
    lengths = [1 + int(-14.0 * math.log(1.0 - rng.random())) for _ in range(3000)]
    source = "synthetic"
rng.shuffle(lengths)
lengths = [min(max(n, 1), 128) for n in lengths]
print("\n".join(map(str, lengths)))
print("lengths: %s, %d sentences, mean %.1f, max %d (the first 512 are used)" %
      (source, len(lengths), sum(lengths) / len(lengths), max(lengths)), file=sys.stderr)
EOF

echo "fedtune vs PyTorch, transformer training steps: $(date -u '+%Y-%m-%d %H:%M') UTC," \
  "$(getconf _NPROCESSORS_ONLN) CPUs, load $(cut -d' ' -f1 /proc/loadavg)," \
  "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
[ -n "${OPENBLAS_CORETYPE:-}" ] ||
  echo "note: OPENBLAS_CORETYPE is unset; OpenBLAS may pick a generic kernel on this CPU (both frameworks use it)"
echo "torch $("$py" -c 'import torch; print(torch.__version__)'); best of the PyTorch settings;" \
  "median of $repeats repeats of >= $seconds s"
echo

# torch_settings <threads>: "intra omp blas" lines to try.
torch_settings() {
  if [ "$1" -eq 1 ]; then echo "1 1 1"; else printf '%s\n' "$1 $1 1" "1 1 $1" "$1 $1 $1"; fi
}

field() { "$py" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

rows=()
for t in $threads; do
  g=$("$bench" --json --cases sgemm --threads "$t" --seconds "$seconds" --repeats "$repeats")
  echo "$g"
  rows+=("$(printf '%-9s %5s %7s %12s %12s %7s   %s GFLOP/s (the machine'"'"'s reference in this run)' \
    sgemm - "$t" - - - "$(field "$g" gflops)")")
  for c in $cases; do
    for b in $batches; do
      fed_run() {
        "$bench" --json --cases "$c" --batch "$b" --threads "$t" --seconds "$seconds" \
          --repeats "$repeats" --lengths "$tmp/lengths"
      }
      f=$(fed_run)
      echo "$f"
      best=0 best_line=""
      while read -r intra omp blas; do
        for attn in mha explicit; do
          p=$("$py" "$here/bench/bench_transformer.py" --init "$tmp" --case "$c" --batch "$b" \
            --intra "$intra" --omp "$omp" --blas "$blas" --attention "$attn" \
            --seconds "$seconds" --repeats "$repeats" --lengths "$tmp/lengths")
          echo "$p"
          r=$(field "$p" tokens_per_s)
          if awk -v a="$r" -v b="$best" 'BEGIN {exit !(a > b)}'; then best=$r best_line=$p; fi
        done
      done < <(torch_settings "$t")
      # fedtune again after PyTorch, its best run counts: neighbours come and go.
      f2=$(fed_run)
      echo "$f2"
      fr=$(field "$f" tokens_per_s)
      fr2=$(field "$f2" tokens_per_s)
      if awk -v a="$fr2" -v b="$fr" 'BEGIN {exit !(a > b)}'; then fr=$fr2; fi
      setting=$("$py" -c 'import json,sys; j=json.loads(sys.argv[1])
print("set_num_threads %d, OMP %d, OPENBLAS %d, %s" % (j["intra"], j["omp"], j["blas"], j["attention"]))' "$best_line")
      rows+=("$(printf '%-9s %5s %7s %12.0f %12.0f %7.2f   %s' "$c" "$b" "$t" "$fr" "$best" \
        "$(awk -v a="$fr" -v b="$best" 'BEGIN {print a / b}')" "$setting")")
    done
  done
done

echo
printf '%-9s %5s %7s %12s %12s %7s   %s\n' case batch threads "fedtune t/s" "pytorch t/s" ratio \
  "best PyTorch setting"
printf '%s\n' "${rows[@]}"
echo "load average at end: $(cut -d' ' -f1 /proc/loadavg)"
