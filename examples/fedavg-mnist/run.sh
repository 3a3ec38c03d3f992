#!/usr/bin/env bash
# Reproduces the MNIST rounds-to-target experiments of McMahan et al. 2017,
# "Communication-Efficient Learning of Deep Networks from Decentralized Data" (FedAvg),
# with `fedtune sim`: 100 clients, C = 0.1 (10 sampled per round), B = 10, plain SGD,
# FedAvg aggregation weighted by examples, accuracy on the 10 000 MNIST test images
# after every round.
#
#   setting      model       E  partition                      target  paper rounds
#   2nn-iid      fedavg-2nn  1  iid (600 examples a client)     97%     87
#   2nn-noniid   fedavg-2nn  1  shards: 200 x 300, 2 a client   97%     664
#   cnn-iid      fedavg-cnn  5  iid                             99%     18 (20 in the E/B table)
#   cnn-noniid   fedavg-cnn  5  shards: 200 x 300, 2 a client   99%     206 (229 in the E/B table)
#
# Every run stops at the first round whose test accuracy reaches the target, or at its
# round cap. The 2NN settings run a learning-rate grid (the paper tuned the rate per
# setting and reports the best); the CNN settings one rate each (a CNN round costs
# ~25 s on two cores: the non-IID CNN to its target is hours).
#
# Usage: run.sh [options] [FEDTUNE]
#   FEDTUNE                 the fedtune executable (default: $FEDTUNE, else build/bin/fedtune)
#   --quick                 a smoke test of the whole pipeline in ~2 minutes: one rate per
#                           setting, 20 rounds of the 2NN, 2 of the CNN (default output
#                           ${TMPDIR:-/tmp}/fedavg-mnist-quick, so results/ is kept)
#   --out DIR               output folder (default: results/ beside this script)
#   --only LIST             settings to run, comma-separated (default: all four); the
#                           table and plots always cover every run found in DIR
#   --lrs-2nn "A B ..."     the 2NN learning-rate grid (default "0.02 0.05 0.1 0.2"; 0.5 diverges)
#   --lr-cnn X              the CNN learning rate (default 0.05)
#   --cnn-noniid-rounds N   round cap of the non-IID CNN (default 300)
#   --cap-2nn-iid N / --cap-2nn-noniid N / --cap-cnn-iid N   other caps (300, 1500, 60)
#   --workers N             training threads (default 2)
#   --seed N                partition, sampling and training seed (default 1)
#   --table-only            only (re)write table.md and the plots from DIR
#
# Output in DIR: SETTING-lrX.csv (fedtune's per-round CSV), SETTING-lrX.log (its stdout),
# SETTING.png (test accuracy per round, every rate of the setting), table.md.
# Needs MNIST in ${FEDTUNE_DATA:-<repo>/data}/mnist (scripts/fetch-data --only mnist) and,
# for the plots, gnuplot (Debian package gnuplot-nox; without it the plots are skipped).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mnist=${FEDTUNE_DATA:-$root/data}/mnist

quick=0
out=
only=all
lrs_2nn="0.02 0.05 0.1 0.2"
lr_cnn=0.05
cap_2nn_iid=300
cap_2nn_noniid=1500
cap_cnn_iid=60
cap_cnn_noniid=300
workers=2
seed=1
table_only=0
fedtune=${FEDTUNE:-}

usage() { sed -n '/^# Usage:/,/^# for the plots/p' "$0" | sed 's/^# \{0,1\}//'; }
need() { if [ $# -lt 2 ] || [ -z "$2" ]; then echo "run.sh: $1 needs a value" >&2; exit 2; fi; }
while [ $# -gt 0 ]; do
  case $1 in
  --quick) quick=1 ;;
  --out) need "$@"; out=$2; shift ;;
  --only) need "$@"; only=$2; shift ;;
  --lrs-2nn) need "$@"; lrs_2nn=$2; shift ;;
  --lr-cnn) need "$@"; lr_cnn=$2; shift ;;
  --cnn-noniid-rounds) need "$@"; cap_cnn_noniid=$2; shift ;;
  --cap-2nn-iid) need "$@"; cap_2nn_iid=$2; shift ;;
  --cap-2nn-noniid) need "$@"; cap_2nn_noniid=$2; shift ;;
  --cap-cnn-iid) need "$@"; cap_cnn_iid=$2; shift ;;
  --workers) need "$@"; workers=$2; shift ;;
  --seed) need "$@"; seed=$2; shift ;;
  --table-only) table_only=1 ;;
  -h | --help) usage; exit 0 ;;
  -*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  *) fedtune=$1 ;;
  esac
  shift
done
fedtune=${fedtune:-$root/build/bin/fedtune}

if [ "$quick" = 1 ]; then
  out=${out:-${TMPDIR:-/tmp}/fedavg-mnist-quick}
  lrs_2nn=0.1
  cap_2nn_iid=20 cap_2nn_noniid=20 cap_cnn_iid=2 cap_cnn_noniid=2
else
  out=${out:-$here/results}
fi
mkdir -p "$out"

# setting -> arch, epochs, partition flags, target, paper rounds (E/B table), cap, rates
declare -A arch epochs part target paper paper_eb cap rates title
for s in 2nn-iid 2nn-noniid; do arch[$s]=fedavg-2nn epochs[$s]=1 target[$s]=0.97 rates[$s]=$lrs_2nn; done
for s in cnn-iid cnn-noniid; do arch[$s]=fedavg-cnn epochs[$s]=5 target[$s]=0.99 rates[$s]=$lr_cnn; done
for s in 2nn-iid cnn-iid; do part[$s]="--partition iid"; done
for s in 2nn-noniid cnn-noniid; do part[$s]="--partition shards --shards-per-client 2"; done
paper=([2nn-iid]=87 [2nn-noniid]=664 [cnn-iid]=18 [cnn-noniid]=206)
paper_eb=([2nn-iid]="" [2nn-noniid]="" [cnn-iid]=20 [cnn-noniid]=229)
cap=([2nn-iid]=$cap_2nn_iid [2nn-noniid]=$cap_2nn_noniid [cnn-iid]=$cap_cnn_iid
  [cnn-noniid]=$cap_cnn_noniid)
title=([2nn-iid]="2NN, E=1, IID" [2nn-noniid]="2NN, E=1, non-IID (2 shards)"
  [cnn-iid]="CNN, E=5, IID" [cnn-noniid]="CNN, E=5, non-IID (2 shards)")
settings="2nn-iid 2nn-noniid cnn-iid cnn-noniid"
[ "$only" = all ] && only=${settings// /,}
for s in ${only//,/ }; do
  [ -n "${arch[$s]:-}" ] || { echo "run.sh: --only: unknown setting $s ($settings)" >&2; exit 2; }
done

# One run: fedtune sim with the paper's set-up; CSV and stdout into $out.
# Keeps a log small: every line but the per-round ones (the CSV has those), plus the
# first and last three round lines.
trim_log() { # file
  local n
  n=$(grep -c '^round ' "$1" || true)
  awk -v n="$n" '/^round / { k++; if (k <= 3 || k > n - 3) print; else if (k == 4)
                   printf "(%d more round lines: see the CSV)\n", n - 6; next } { print }' \
    "$1" >"$1.tmp" && mv "$1.tmp" "$1"
}

run_one() { # setting lr
  local s=$1 lr=$2 name="$1-lr$2" rc tries=0
  local cmd=("$fedtune" sim --arch "${arch[$s]}" --data "$mnist/train-images-idx3-ubyte"
    --test-data "$mnist/t10k-images-idx3-ubyte" --clients 100 --fraction 0.1 --batch 10
    --epochs "${epochs[$s]}" --optimizer sgd --lr "$lr" --rounds "${cap[$s]}"
    --target-accuracy "${target[$s]}" --workers "$workers" --seed "$seed"
    --csv "$out/$name.csv")
  # shellcheck disable=SC2206 # the partition flags split on purpose
  cmd+=(${part[$s]})
  echo "== $name: ${title[$s]}, lr $lr, target ${target[$s]}, cap ${cap[$s]} rounds"
  echo "\$ ${cmd[*]}"
  while :; do
    rc=0
    { echo "\$ ${cmd[*]}"; "${cmd[@]}"; } >"$out/$name.log" 2>&1 || rc=$?
    # 126/127: the executable could not be started (e.g. being rebuilt): retry a little.
    if [ "$rc" -eq 126 ] || [ "$rc" -eq 127 ] && [ "$tries" -lt 5 ]; then
      tries=$((tries + 1)) && sleep 10 && continue
    fi
    break
  done
  grep -E '^(summary|target accuracy)' "$out/$name.log" || true
  trim_log "$out/$name.log"
  if [ "$rc" -ne 0 ]; then
    echo "run.sh: $name failed (exit $rc); last lines of $out/$name.log:" >&2
    tail -5 "$out/$name.log" >&2
    exit 1
  fi
}

if [ "$table_only" = 0 ]; then
  [ -x "$fedtune" ] || { echo "run.sh: no fedtune executable at $fedtune" >&2; exit 1; }
  if [ ! -f "$mnist/train-images-idx3-ubyte" ] || [ ! -f "$mnist/t10k-images-idx3-ubyte" ]; then
    echo "run.sh: no MNIST in $mnist (scripts/fetch-data --only mnist)" >&2
    exit 1
  fi
  for s in ${only//,/ }; do
    for lr in ${rates[$s]}; do run_one "$s" "$lr"; done
  done
fi

# ---- table.md and plots from every run found in $out ----------------------------------

# One run's facts from its log and CSV, tab-separated: lr, reached round (or ""), rounds
# run, best accuracy, its round, wall seconds of the rounds, set-up seconds.
facts() { # name
  local log="$out/$1.log" csv="$out/$1.csv"
  awk -F, 'NR > 1 && $6 + 0 > best { best = $6 + 0; at = $1 } NR > 1 { n = $1 }
           END { printf "%d;%.4f;%d", n, best, at }' "$csv" >"$out/.facts.tmp"
  local reached
  reached=$(sed -n 's/^target accuracy .* first reached in round \([0-9]*\)$/\1/p' "$log")
  local secs setup
  secs=$(sed -n 's/^summary: [0-9]* rounds in \([0-9.]*\) s (+\([0-9.]*\) s set-up).*/\1/p' "$log")
  setup=$(sed -n 's/^summary: [0-9]* rounds in \([0-9.]*\) s (+\([0-9.]*\) s set-up).*/\2/p' "$log")
  printf '%s;%s;%s;%s\n' "$reached" "$(cat "$out/.facts.tmp")" "${secs:-?}" "${setup:-?}"
  rm -f "$out/.facts.tmp"
}

mmss() { awk -v s="$1" 'BEGIN { if (s == "?") { print "?"; exit }
  s = int(s + 0.5); if (s < 60) printf "%d s", s; else printf "%d min %02d s", s / 60, s % 60 }'; }

# Rounds-to-target cell, ratio and verdict for one run. The paper gives two counts for the
# CNN (Table 1 and the E/B table, each at its own tuned rate): the ratio is against the
# first, and "within" means inside 0.7x the smaller .. 1.3x the larger.
verdict() { # reached n best at paper [paper_eb]
  awk -v r="$1" -v n="$2" -v best="$3" -v at="$4" -v p="$5" -v q="${6:-}" 'BEGIN {
    lo = p; hi = p
    if (q != "") { if (q < lo) lo = q; if (q > hi) hi = q }
    if (r != "") {
      ratio = r / p
      ok = (r >= 0.7 * lo && r <= 1.3 * hi) ? "yes" : "no"
      if (q != "") printf "%d;%.2f (%.2f of %d);%s (%+.1f%% / %+.1f%%)\n", r, ratio, r / q, q, ok, 100 * (ratio - 1), 100 * (r / q - 1)
      else printf "%d;%.2f;%s (%+.1f%%)\n", r, ratio, ok, 100 * (ratio - 1)
    } else {
      cell = sprintf("not reached in %d (best %.2f%% at round %d)", n, 100 * best, at)
      if (n > 1.3 * hi) printf "%s;> %.2f;no\n", cell, n / p
      else printf "%s;>= %.2f (lower bound);unknown: stopped before 1.3x the paper\n", cell, n / p
    }
  }'
}

{
  echo "# FedAvg on MNIST: rounds to target test accuracy, fedtune sim vs McMahan et al. 2017"
  echo
  echo "100 clients, C = 0.1, B = 10, plain SGD (no momentum, no decay), FedAvg; test accuracy"
  echo "on the 10 000 MNIST test images after every round; seed $seed. Ratio = ours / paper;"
  echo "\"within ±30%\" means 0.7 <= ratio <= 1.3; for the CNN, whose paper count is 18 or 20 (IID)"
  echo "and 206 or 229 (non-IID) depending on the table, it means 0.7x the smaller to 1.3x the larger."
  echo "Generated by run.sh on $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo
  echo "## Best learning rate per setting"
  echo
  echo "| setting | target | lr | rounds to target (ours) | paper | ours / paper | within ±30% |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for s in $settings; do
    # best run: fewest rounds among those that reached the target, else highest accuracy
    bestline=
    for csv in "$out/$s"-lr*.csv; do
      [ -f "$csv" ] || continue
      name=$(basename "$csv" .csv) lr=${name#"$s"-lr}
      IFS=';' read -r reached n best at _ _ < <(facts "$name")
      if [ -n "$reached" ]; then key="0;$reached"
      else key=$(awk -v b="$best" 'BEGIN { printf "1;%d", 1e6 * (1 - b) }'); fi
      line="$key;$lr;$reached;$n;$best;$at"
      if [ -z "$bestline" ] || [ "$(printf '%s\n%s\n' "$line" "$bestline" | sort -t';' -k1,1n -k2,2n | head -1)" = "$line" ]; then
        bestline=$line
      fi
    done
    pp=${paper[$s]}${paper_eb[$s]:+ (${paper_eb[$s]} in the E/B table)}
    if [ -z "$bestline" ]; then
      echo "| ${title[$s]} | ${target[$s]} | - | not run | $pp | - | - |"
      continue
    fi
    IFS=';' read -r _ _ lr reached n best at <<<"$bestline"
    IFS=';' read -r cell ratio ok < <(verdict "$reached" "$n" "$best" "$at" "${paper[$s]}" "${paper_eb[$s]}")
    echo "| ${title[$s]} | ${target[$s]} | $lr | $cell | $pp | $ratio | $ok |"
  done
  echo
  echo "## Every run"
  echo
  echo "| setting | lr | rounds to target | paper | ours / paper | within ±30% | rounds run | best accuracy (round) | wall time (rounds + set-up) |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for s in $settings; do
    for csv in "$out/$s"-lr*.csv; do
      [ -f "$csv" ] || continue
      name=$(basename "$csv" .csv) lr=${name#"$s"-lr}
      IFS=';' read -r reached n best at secs setup < <(facts "$name")
      IFS=';' read -r cell ratio ok < <(verdict "$reached" "$n" "$best" "$at" "${paper[$s]}" "${paper_eb[$s]}")
      printf '| %s | %s | %s | %s | %s | %s | %d | %.2f%% (%d) | %s + %s |\n' "${title[$s]}" "$lr" \
        "$cell" "${paper[$s]}" "$ratio" "$ok" "$n" "$(awk -v b="$best" 'BEGIN { print 100 * b }')" \
        "$at" "$(mmss "$secs")" "$(mmss "$setup")"
    done
  done
} >"$out/table.md.tmp"
mv "$out/table.md.tmp" "$out/table.md"
echo
cat "$out/table.md"

# One plot per setting: test accuracy per round, one line per learning rate, the target
# as a horizontal line and the paper's rounds as a vertical one.
if command -v gnuplot >/dev/null 2>&1; then
  for s in $settings; do
    files=()
    for csv in "$out/$s"-lr*.csv; do [ -f "$csv" ] && files+=("$csv"); done
    [ ${#files[@]} -gt 0 ] || continue
    case $s in *noniid) ymin=0.80 ;; *) ymin=0.90 ;; esac
    plots=
    for csv in "${files[@]}"; do
      lr=$(basename "$csv" .csv) lr=${lr#"$s"-lr}
      plots+="${plots:+, }'$csv' using 1:6 with lines lw 2 title 'lr $lr'"
    done
    maxr=$(cat "${files[@]}" | awk -F, '$1 ~ /^[0-9]+$/ && $1 > m { m = $1 } END { print m }')
    xmax=$(awk -v a="$maxr" -v b="${paper[$s]}" 'BEGIN { m = a > b ? a : b; print int(m * 1.05) + 1 }')
    gnuplot <<EOF
set terminal pngcairo size 900,500 noenhanced
set output '$out/$s.png.tmp'
set datafile separator ','
set title "FedAvg on MNIST, ${title[$s]}: test accuracy per round\\nfedtune sim, 100 clients, C=0.1, B=10, SGD"
set xlabel 'communication round'
set ylabel 'test accuracy'
set xrange [0:$xmax]
set yrange [$ymin:1]
set grid
set key outside right top
set arrow from 0,${target[$s]} to $xmax,${target[$s]} nohead dashtype 2 lc rgb 'black'
set label 'target ${target[$s]}' at $((xmax / 50 + 1)),${target[$s]} offset 0,0.6
set arrow from ${paper[$s]},$ymin to ${paper[$s]},1 nohead dashtype 3 lc rgb 'red'
set label 'paper: ${paper[$s]} rounds' at ${paper[$s]},$ymin right offset -0.5,1 textcolor rgb 'red'
plot $plots
EOF
    mv "$out/$s.png.tmp" "$out/$s.png"
    echo "plot: $out/$s.png"
  done
else
  echo "run.sh: gnuplot not installed (Debian package gnuplot-nox): no plots" >&2
fi
