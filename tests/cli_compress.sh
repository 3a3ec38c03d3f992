#!/usr/bin/env bash
# `fedtune sim --compress CODEC` on tests/data/blobs.csv (515 trainable floats, 6 sites,
# 3 rounds): the uplink bytes per round are exact (a q8 stream is 24 + 3 x 8 + 515 = 563
# bytes, f32 2 060: 3.66x fewer), the accuracy holds, the run repeats byte for byte under
# its seed; sites without the capability "codec" (--no-codec-sites) send f32 in the same
# rounds and are accepted; the metrics carry update_bytes; --compress with --secagg and
# unknown codecs are refused with one line (exit 2).
# Usage: cli_compress.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$1
SRC=$2
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"

DATA="$SRC/tests/data/blobs.csv"
ARCH='{"input":[4],"layers":[{"type":"linear","out":64},{"type":"relu"},{"type":"linear","out":3}]}'
SIM=("$FEDTUNE" sim --data "$DATA" --test-data "$DATA" --arch "$ARCH" --clients 6
  --partition iid --fraction 1 --rounds 3 --epochs 2 --batch 10 --lr 0.1 --workers 2 --seed 3)

# up_of <file>: the uplink bytes of every round line, space-separated.
up_of() { sed -n 's/^round .*, up \([0-9]*\) B.*/\1/p' "$1" | tr '\n' ' ' | sed 's/ $//'; }

"${SIM[@]}" >"$tmp/none.out" 2>&1
ok "none: 6 x 2 060 bytes up a round" test "$(up_of "$tmp/none.out")" = "12360 12360 12360"
ok "none: down is the same (6 full models)" grep -q ", down 12360 B$" "$tmp/none.out"
ok "none: final accuracy 0.8867" test "$(acc_of "$tmp/none.out")" = "0.8867"

# Each codec's exact stream size: header 24, q8/q4 (lo, step) 8 per block of 256,
# top-k 0.1 keeps ceil(51.5) = 52 indices.
check_codec() { # codec bytes_per_site accuracy
  "${SIM[@]}" --compress "$1" --metrics "$tmp/$1.jsonl" >"$tmp/$1.out" 2>&1
  local up=$(($2 * 6))
  ok "$1: 6 x $2 bytes up a round" test "$(up_of "$tmp/$1.out")" = "$up $up $up"
  ok "$1: all 6 compressed" grep -q "up $up B (6 compressed)" "$tmp/$1.out"
  ok "$1: final accuracy $3" test "$(acc_of "$tmp/$1.out")" = "$3"
  ok "$1: metrics update_bytes" grep -q "\"update_bytes\":$up,\"updates_compressed\":6," \
    "$tmp/$1.jsonl"
}
check_codec q8 563 0.8867
check_codec q4 306 0.8867
check_codec fp16 1054 0.8867
check_codec bf16 1054 0.8867
check_codec topk:0.1 440 0.8800
check_codec topk:0.1+q8 292 0.8800

"${SIM[@]}" --compress q8 >"$tmp/q8b.out" 2>&1
ok_same "q8: the same seed, the same bytes (seeded stochastic rounding)" \
  "$(hash_of "$tmp/q8b.out")" "$(hash_of "$tmp/q8.out")"
ok_differ "q8: other bytes than f32" "$(hash_of "$tmp/q8.out")" "$(hash_of "$tmp/none.out")"

# Two older sites (no capability "codec") in the same rounds: 4 x 563 + 2 x 2 060.
"${SIM[@]}" --compress q8 --no-codec-sites 2 >"$tmp/mixed.out" 2>&1
ok "mixed: 4 q8 and 2 f32 updates accepted each round" \
  test "$(up_of "$tmp/mixed.out")" = "6372 6372 6372"
ok "mixed: returned 6 of 6" test "$(grep -c 'sampled 6, returned 6, .* (4 compressed)' \
  "$tmp/mixed.out")" -eq 3
"${SIM[@]}" --no-codec-sites 6 --compress topk:0.1 >"$tmp/old.out" 2>&1
ok_same "all sites old: the plain run's bytes" "$(hash_of "$tmp/old.out")" \
  "$(hash_of "$tmp/none.out")"

expect 2 "fedtune sim: --compress q8 with --secagg: the masked sum must stay exact, and secagg \
already quantizes each update to 32-bit fixed point; drop --compress" -- \
  "${SIM[@]}" --compress q8 --secagg
expect 2 'fedtune sim: --compress: unknown compression codec "q3"; the codecs are none, fp16, bf16, q8, q4, topk:F or topk:F+fp16|bf16|q8|q4 with F in (0, 1]' -- \
  "${SIM[@]}" --compress q3
expect 2 'fedtune sim: --compress: compression codec "topk:2": fraction "2" is not in (0, 1]' -- \
  "${SIM[@]}" --compress topk:2
expect 2 'fedtune sim: --compress: compression codec "topk:0.1+q2": unknown value codec "q2"' -- \
  "${SIM[@]}" --compress topk:0.1+q2
expect 0 "--compress TEXT" -- "$FEDTUNE" coordinator --help

# The downlink (--compress-down): from round 2 a site that kept version v (--keep-models)
# gets the q8 change to v + 1 (563 bytes, as an update) instead of 2 060, and rebuilds the
# weights exactly (a site whose rebuilt weights missed the manifest's SHA-256 would ask
# for the whole model: a full transfer in that round). Lean sites get whole models of the
# same versions: the same final bytes.
down_of() { sed -n 's/^round .*, down \([0-9]*\) B.*/\1/p' "$1" | tr '\n' ' ' | sed 's/ $//'; }
"${SIM[@]}" --keep-models --compress-down q8 --metrics "$tmp/down.jsonl" >"$tmp/down.out" 2>&1
"${SIM[@]}" --compress-down q8 >"$tmp/down-lean.out" 2>&1
ok "compress-down q8: 12 360 bytes down, then 6 x 563" test "$(down_of "$tmp/down.out")" = "12360 3378 3378"
ok "compress-down q8: rounds 2 and 3 send no whole model" \
  test "$(grep -c "models 0 full + 6 deltas$" "$tmp/down.out")" -eq 2
ok "compress-down q8: metrics models_delta" grep -q '"model_bytes":3378,"models_delta":6' "$tmp/down.jsonl"
ok "compress-down q8: lean sites get whole models" test "$(down_of "$tmp/down-lean.out")" = "12360 12360 12360"
ok_same "compress-down q8: lean sites, the same versions" "$(hash_of "$tmp/down-lean.out")" \
  "$(hash_of "$tmp/down.out")"
ok_differ "compress-down q8: the server's step is quantized" "$(hash_of "$tmp/down.out")" \
  "$(hash_of "$tmp/none.out")"
ok "compress-down q8: final accuracy 0.8867" test "$(acc_of "$tmp/down.out")" = "0.8867"
"${SIM[@]}" --keep-models --compress-down fp16 >"$tmp/down16.out" 2>&1
ok "compress-down fp16: 6 x 1 054 bytes" test "$(down_of "$tmp/down16.out")" = "12360 6324 6324"
"${SIM[@]}" --keep-models >"$tmp/keep.out" 2>&1
ok_same "--keep-models alone: the plain run's bytes" "$(hash_of "$tmp/keep.out")" "$(hash_of "$tmp/none.out")"
expect 2 "fedtune sim: compress-down topk:0.1: the downlink takes a dense codec (fp16, bf16, q8, q4): a sparse server step would drop most of each round's change" -- \
  "${SIM[@]}" --compress-down topk:0.1
expect 2 'fedtune sim: compress-down: unknown compression codec "q3"' -- "${SIM[@]}" --compress-down q3
for f in "$tmp"/*.out; do
  ok "$f: no sanitizer report" test "$(grep -c -e Sanitizer -e 'runtime error:' "$f")" -eq 0
done

report
