#!/usr/bin/env bash
# Federated fine-tuning on Fashion-MNIST: full fine-tuning of a pre-trained model vs a
# frozen backbone with a new head vs training from scratch, with `fedtune sim`.
#
# Federation (every row the same): the 60 000 Fashion-MNIST training images shared out
# to 100 sites by a Dirichlet(alpha = 0.5) label split, 10% of the sites per round,
# FedAvg, local plain SGD (no momentum), B = 10, E = 1, ROUNDS rounds, seed SEED; test
# accuracy on the 10 000 Fashion-MNIST test images after every round. The model is the
# FedAvg paper's 2NN (784-200-200-10, 199 210 parameters).
#
# Rows:
#   scratch          a fresh 2NN (seed 1), everything trained
#   full-f04         pre-trained on Fashion classes 0-4, new 10-class head, everything trained
#   frozen-f04       the same model, layers 0 and 2 frozen (--freeze '0.*' --freeze '2.*'):
#                    only the new head (4.weight, 4.bias) is trained and uploaded
#   full-mnist       pre-trained on MNIST (all 10 digits), new head, everything trained
#   frozen-mnist     the same, only the new head trained
# Pre-training (fedtune pretrain): Adam lr 0.001, batch 32, PRE_EPOCHS epochs, 10% of the
# data held out for validation (best epoch kept), no input standardisation (so every row
# sees the same [0,1] pixels as the from-scratch row), seed PRE_SEED. The new head is
# initialised from sim's --init-seed 1, salted (since commit 5c560ed), so it is a fresh head
# whatever PRE_SEED is; the run `seedcheck-full-f04` (pre-training seed 1 = the head's init
# seed 1) checks that: before 5c560ed it got back the pre-training's initial head.
# Learning rate: a small grid (LRS) on the from-scratch row; the rate with the best mean
# test accuracy over the last 10 rounds is then used for every other row.
# Centralised references: each starting point also trained on the pooled training set
# (fedtune train/pretrain, Adam, 10 epochs), to show what each variant can reach at all.
#
# Usage: run.sh [FEDTUNE] [OUTDIR]
#   FEDTUNE   the fedtune executable (default: <repo>/build/bin/fedtune)
#   OUTDIR    results folder (default: examples/finetune-fashion/results)
# Environment: ROUNDS (200), SEED (1), WORKERS (2), LRS ("0.02 0.05 0.1 0.2"), PRE_EPOCHS (5),
#   PRE_SEED (2), MODELDIR (models, never in OUTDIR; default a fresh folder in /tmp),
#   FEDTUNE_DATA (<repo>/data: needs fashion-mnist/ and mnist/).
# Output in OUTDIR: NAME.csv (fedtune sim's per-round CSV; round 0 = initial model),
#   NAME.log (its stdout and stderr, of the per-round lines only the first and the last:
#   every round is in NAME.csv), pretrain-*.log, central-*.log, table.md, accuracy.png.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
fedtune=${1:-$root/build/bin/fedtune}
out=${2:-$here/results}
rounds=${ROUNDS:-200}
seed=${SEED:-1}
workers=${WORKERS:-2}
lrs=${LRS:-"0.02 0.05 0.1 0.2"}
pre_epochs=${PRE_EPOCHS:-5}
pre_seed=${PRE_SEED:-2}
data=${FEDTUNE_DATA:-$root/data}
fashion=$data/fashion-mnist
mnist=$data/mnist

case $fedtune in /*) ;; *) fedtune=$PWD/$fedtune ;; esac
[ -x "$fedtune" ] || { echo "run.sh: no fedtune executable at $fedtune" >&2; exit 1; }
for f in "$fashion/train-images-idx3-ubyte.gz" "$fashion/t10k-images-idx3-ubyte.gz" \
  "$mnist/train-images-idx3-ubyte"; do
  [ -f "$f" ] || { echo "run.sh: missing $f (scripts/fetch-data)" >&2; exit 1; }
done
command -v gnuplot >/dev/null || { echo "run.sh: gnuplot not installed (gnuplot-nox)" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
modeldir=${MODELDIR:-$(mktemp -d "${TMPDIR:-/tmp}/finetune-fashion.XXXXXX")}
mkdir -p "$modeldir"
case $modeldir in "$out"*) echo "run.sh: MODELDIR must not be inside OUTDIR" >&2; exit 2 ;; esac

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Run a fedtune command with its output in LOG; retry a few times if the executable
# cannot be started (126/127: being rebuilt by someone else). Prints the wall seconds.
run_logged() { # log cmd...
  local log=$1 rc tries=0 t0
  shift
  while :; do
    rc=0
    t0=$(now)
    { echo "\$ $*"; "$@"; } >"$log" 2>&1 || rc=$?
    if { [ "$rc" -eq 126 ] || [ "$rc" -eq 127 ] || [ ! -x "$1" ]; } && [ "$tries" -lt 6 ]; then
      tries=$((tries + 1))
      sleep 10
      continue
    fi
    break
  done
  if [ "$rc" -ne 0 ]; then
    echo "run.sh: failed (exit $rc): $*" >&2
    tail -5 "$log" >&2
    exit 1
  fi
  secs "$t0" "$(now)"
}

t_start=$(now)
echo "results: $out   models: $modeldir"

# ---- pre-training -----------------------------------------------------------------------
declare -A pre_model pre_secs
pretrain() { # name data [extra options...]
  local name=$1 d=$2
  shift 2
  pre_model[$name]=$modeldir/pre-$name.safetensors
  pre_secs[$name]=$(run_logged "$out/pretrain-$name.log" "$fedtune" pretrain --arch fedavg-2nn \
    --data "$d" --epochs "$pre_epochs" --standardize off --seed "$pre_seed" \
    --out "${pre_model[$name]}" "$@")
  echo "pretrain $name: $(grep -E '^validation:' "$out/pretrain-$name.log"), ${pre_secs[$name]} s"
}
pretrain f04 "$fashion/train-images-idx3-ubyte.gz" --only-classes 0,1,2,3,4
pretrain mnist "$mnist/train-images-idx3-ubyte"

# ---- federated runs ---------------------------------------------------------------------
declare -A wall
sim() { # name lr [model options...]
  local name=$1 lr=$2
  shift 2
  wall[$name]=$(run_logged "$out/$name.log" "$fedtune" sim \
    --data "$fashion/train-images-idx3-ubyte.gz" --test-data "$fashion/t10k-images-idx3-ubyte.gz" \
    --clients 100 --partition dirichlet --alpha 0.5 --fraction 0.1 --epochs 1 --batch 10 \
    --optimizer sgd --lr "$lr" --strategy fedavg --rounds "$rounds" --seed "$seed" \
    --workers "$workers" --csv "$out/$name.csv.tmp" --out "$modeldir/$name.safetensors" "$@")
  mv "$out/$name.csv.tmp" "$out/$name.csv"
  trim_log "$out/$name.log"
  echo "$name (lr $lr): $(grep '^summary:' "$out/$name.log" | sed 's/^summary: //'), wall ${wall[$name]} s"
}
# Keep a sim log small: drop its per-round lines except the first and the last before any
# other line (the CSV has every round).
trim_log() { # log
  awk '/^round +[0-9]+\/[0-9]+:/ { if (!n++) print; else { last = $0; k++ } next }
    { if (last != "") { if (k > 1) printf "[run.sh: %d more round lines, see the CSV]\n", k - 1
        print last; last = ""; k = 0 }
      print }
    END { if (last != "") print last }' "$1" >"$1.tmp"
  mv "$1.tmp" "$1"
}
# mean test accuracy of the last 10 rounds of a CSV
last10() { awk -F, 'NR > 1 { a[++n] = $6 } END { k = n < 10 ? n : 10; for (i = n - k + 1; i <= n; i++) s += a[i]; printf "%.4f", s / k }' "$1"; }

best_lr='' best_acc=-1
for lr in $lrs; do
  sim "scratch-lr$lr" "$lr" --arch fedavg-2nn
  acc=$(last10 "$out/scratch-lr$lr.csv")
  if awk -v a="$acc" -v b="$best_acc" 'BEGIN { exit !(a > b) }'; then best_lr=$lr best_acc=$acc; fi
done
echo "learning rate: $best_lr (from-scratch mean accuracy of the last 10 rounds $best_acc)"
lr=$best_lr
freeze=(--freeze '0.*' --freeze '2.*')
sim full-f04 "$lr" --model "${pre_model[f04]}" --new-head 10
sim frozen-f04 "$lr" --model "${pre_model[f04]}" --new-head 10 "${freeze[@]}"
sim full-mnist "$lr" --model "${pre_model[mnist]}" --new-head 10
sim frozen-mnist "$lr" --model "${pre_model[mnist]}" --new-head 10 "${freeze[@]}"
# Pre-training seed 1 = the new head's init seed 1: the (salted) new head must still be fresh.
run_logged "$out/pretrain-f04-seed1.log" "$fedtune" pretrain --arch fedavg-2nn \
  --data "$fashion/train-images-idx3-ubyte.gz" --only-classes 0,1,2,3,4 --epochs "$pre_epochs" \
  --standardize off --seed 1 --out "$modeldir/pre-f04-seed1.safetensors" >/dev/null
sim seedcheck-full-f04 "$lr" --model "$modeldir/pre-f04-seed1.safetensors" --new-head 10

# ---- centralised references -----------------------------------------------------------------
# The same starting points trained on all 60 000 images pooled (fedtune train/pretrain: Adam
# 0.001, batch 32, 10 epochs, best epoch on a 10% validation split), evaluated once on the
# test set: what each variant can reach without federation. --standardize off everywhere:
# with auto, train would fit a new input transform in front of a backbone trained on raw
# pixels.
declare -A central
cref() { # name command [options...]
  local name=$1 cmd=$2
  shift 2
  run_logged "$out/central-$name.log" "$fedtune" "$cmd" --data "$fashion/train-images-idx3-ubyte.gz" \
    --test-data "$fashion/t10k-images-idx3-ubyte.gz" --epochs 10 --optimizer adam --lr 0.001 \
    --standardize off --seed "$seed" --out "$modeldir/central-$name.safetensors" "$@" >/dev/null
  central[$name]=$(sed -n 's/^test: .*accuracy *\([0-9.]*\)%.*/\1/p' "$out/central-$name.log")
  echo "central $name: test accuracy ${central[$name]}%"
}
cref scratch pretrain --arch fedavg-2nn
cref full-f04 train --model "${pre_model[f04]}" --new-head 10
cref frozen-f04 train --model "${pre_model[f04]}" --new-head 10 "${freeze[@]}"
cref full-mnist train --model "${pre_model[mnist]}" --new-head 10
cref frozen-mnist train --model "${pre_model[mnist]}" --new-head 10 "${freeze[@]}"

# ---- table.md -----------------------------------------------------------------------------
# first round (>= 0) whose test accuracy reaches X, or "not reached"
reach() { awk -F, -v x="$2" 'NR > 1 && $6 + 0 >= x { print $1; f = 1; exit } END { if (!f) print "not reached" }' "$1"; }
col() { awk -F, -v r="$2" -v c="$3" 'NR > 1 && $1 == r { print $c }' "$1"; }
lastround() { tail -1 "$1" | cut -d, -f1; }
summary_field() { # log sed-expression
  sed -n "s/^summary: .*$2.*/\\1/p" "$1"
}
trainable() { "$fedtune" info "$1" | sed -n 's/^parameters \([0-9]*\), trainable \([0-9]*\).*/\2/p'; }
mb_round() { awk -F, 'NR == 3 { printf "%.2f", $7 / 1e6 }' "$1"; }

declare -A label=(
  [scratch]="(c) from scratch"
  [full-f04]="(a) full fine-tuning, pre-trained on Fashion 0-4"
  [frozen-f04]="(b) frozen backbone + new head, pre-trained on Fashion 0-4"
  [full-mnist]="(a') full fine-tuning, pre-trained on MNIST"
  [frozen-mnist]="(b') frozen backbone + new head, pre-trained on MNIST"
  [seedcheck-full-f04]="(a) with pre-training seed 1 = head init seed 1"
)
row() { # name csvname
  local name=$1 base=$2 csv="$out/$2.csv" log="$out/$2.log" n
  n=$(lastround "$csv")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${label[$name]}" \
    "$(trainable "$modeldir/$base.safetensors")" "$(col "$csv" 0 6)" \
    "$(reach "$csv" 0.80)" "$(reach "$csv" 0.85)" "$(col "$csv" "$n" 6)" "$(last10 "$csv")" \
    "$(mb_round "$csv")" "$(summary_field "$log" ' \([0-9.]*\) MB moved')" "${wall[$base]}"
}
header() {
  echo "| variant | trainable parameters | start accuracy (round 0) | rounds to 80% | rounds to 85% | accuracy after round $rounds | mean accuracy, last 10 rounds | MB per round | total MB moved | wall time of the sim (s) |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
}
central_pct() { awk -v a="$1" 'BEGIN { printf "%.4f", a / 100 }'; }
{
  echo "# Federated fine-tuning on Fashion-MNIST: measured results"
  echo
  echo "Generated by \`run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') with $("$fedtune" --version 2>&1 | head -1)."
  echo "100 sites, Dirichlet alpha 0.5, 10 sites per round, FedAvg, local SGD lr $lr, B 10, E 1,"
  echo "$rounds rounds, seed $seed, 2NN (199 210 parameters), test accuracy on the 10 000 test"
  echo "images. \"Rounds to X\": first round whose test accuracy is >= X (round 0 = the initial model)."
  echo "Wall time is the whole \`fedtune sim\` process (data loading, partition, rounds, evaluation)"
  echo "with $workers workers on a 2-core machine shared with another job."
  echo
  header
  for name in scratch full-f04 frozen-f04 full-mnist frozen-mnist; do
    base=$name
    [ "$name" = scratch ] && base=scratch-lr$lr
    row "$name" "$base"
  done
  echo
  echo "Pre-training (fedtune pretrain, Adam 0.001, batch 32, $pre_epochs epochs, seed $pre_seed, held-out 10%):"
  for p in f04 mnist; do
    echo "- $p: $(grep -E '^pretrain: [0-9]+ train' "$out/pretrain-$p.log" | sed 's/^pretrain: //');" \
      "$(grep -E '^validation:' "$out/pretrain-$p.log" | sed 's/  */ /g'); ${pre_secs[$p]} s wall"
  done
  echo
  echo "## Centralised reference (no federation)"
  echo
  echo "The same starting points trained on the 60 000 training images pooled: Adam 0.001, batch 32,"
  echo "10 epochs, best epoch on a 10% validation split, test set evaluated once (fedtune pretrain/train)."
  echo
  echo "| variant | centralised test accuracy | federated, mean of the last 10 rounds |"
  echo "| --- | --- | --- |"
  for name in scratch full-f04 frozen-f04 full-mnist frozen-mnist; do
    base=$name
    [ "$name" = scratch ] && base=scratch-lr$lr
    echo "| ${label[$name]} | $(central_pct "${central[$name]}") | $(last10 "$out/$base.csv") |"
  done
  echo
  echo "## Learning-rate grid (from scratch)"
  echo
  echo "| lr | accuracy after round $rounds | mean accuracy, last 10 rounds | rounds to 80% | rounds to 85% |"
  echo "| --- | --- | --- | --- | --- |"
  for l in $lrs; do
    csv=$out/scratch-lr$l.csv
    echo "| $l$([ "$l" = "$lr" ] && echo ' (chosen)') | $(col "$csv" "$(lastround "$csv")" 6) | $(last10 "$csv") | $(reach "$csv" 0.80) | $(reach "$csv" 0.85) |"
  done
  echo
  echo "## Seed check: pre-training seed = the new head's init seed"
  echo
  header
  row full-f04 full-f04
  row seedcheck-full-f04 seedcheck-full-f04
} >"$out/table.md.tmp"
mv "$out/table.md.tmp" "$out/table.md"
cat "$out/table.md"

# ---- accuracy.png -------------------------------------------------------------------------
plots=
i=1
for name in scratch full-f04 frozen-f04 full-mnist frozen-mnist; do
  base=$name
  [ "$name" = scratch ] && base=scratch-lr$lr
  plots+="${plots:+, }'$out/$base.csv' using 1:6 with lines lw 2 lc $i title \"${label[$name]}\""
  i=$((i + 1))
done
gnuplot <<EOF
set terminal pngcairo size 900,540 noenhanced font ',8'
set output '$out/accuracy.png.tmp'
set datafile separator ','
set multiplot layout 1,2 title 'Fashion-MNIST, 100 sites, Dirichlet 0.5, 10 per round, FedAvg, SGD lr $lr, B 10, E 1, 2NN (fedtune sim, seed $seed)'
set xlabel 'round'
set ylabel 'test accuracy'
set grid
set key bottom right
set xrange [0:60]
set yrange [0:1]
set arrow 1 from 0,0.8 to 60,0.8 nohead dashtype 2 lc rgb 'gray40'
set arrow 2 from 0,0.85 to 60,0.85 nohead dashtype 2 lc rgb 'gray40'
set title 'first 60 rounds (dashed: 80% and 85%)'
plot $plots
set xrange [0:$rounds]
set yrange [0.70:0.90]
set arrow 1 from 0,0.8 to $rounds,0.8 nohead dashtype 2 lc rgb 'gray40'
set arrow 2 from 0,0.85 to $rounds,0.85 nohead dashtype 2 lc rgb 'gray40'
set title 'all $rounds rounds, accuracy 0.70 to 0.90'
unset key
plot $plots
unset multiplot
EOF
mv "$out/accuracy.png.tmp" "$out/accuracy.png"
echo "plot: $out/accuracy.png"
echo "total wall time: $(secs "$t_start" "$(now)") s (models left in $modeldir)"
