#!/usr/bin/env bash
# fedtune's tokenizer against the reference, USE-lite's own JavaScript tokenizer (npm
# @energetic-ai/embeddings 0.2.0, run by tests/tools/use_tokenize.js under node), on
# every sentence of tests/data/sentences.jsonl with USE-lite's vocab.json: the ids of
# `fedtune data tokenize` must equal the reference's, line by line. The same again with
# the vocabulary in fedtune's object form (null scores written as 0), on the 3 000
# sentences of the sentiment set, and for the empty text. Needs node and the data sets
# use-lite, use-lite-ref and sentiment (scripts/fetch-data --only
# use-lite,use-lite-ref,sentiment): without them the test is skipped (exit 77), and
# under CI=true it fails instead.
# Usage: tokenizer_ref.sh <path to fedtune> <source dir>
#   data: $FEDTUNE_DATA or <src>/data; the reference's node_modules: $FEDTUNE_USE_REF or
#   <data>/use-lite-ref/node_modules
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
DATA=${FEDTUNE_DATA:-$SRC/data}
REF=${FEDTUNE_USE_REF:-$DATA/use-lite-ref/node_modules}
VOCAB=$DATA/use-lite/dist/vocab.json
SENTENCES=$SRC/tests/data/sentences.jsonl

# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
command -v node >/dev/null || skip "node not found (scripts/setup --test installs nodejs)"
[ -f "$REF/@energetic-ai/embeddings/dist/index.js" ] ||
  skip "$REF/@energetic-ai/embeddings not found: run scripts/fetch-data --only use-lite-ref"
[ -f "$VOCAB" ] || skip "$VOCAB not found: run scripts/fetch-data --only use-lite"
SENTIMENT=$DATA/sentiment/all.jsonl
[ -f "$SENTIMENT" ] || skip "$SENTIMENT not found: run scripts/fetch-data --only sentiment"
SENTIMENT=$(cd "$(dirname "$SENTIMENT")" && pwd)/all.jsonl
VOCAB=$(cd "$(dirname "$VOCAB")" && pwd)/vocab.json
REF=$(cd "$REF" && pwd)
cd "$tmp" || exit 1

# compare <label> <reference ids file> <fedtune ids file> <texts file>: equal line by
# line; mismatches show the text and both sides (the first ten).
compare() {
  local label=$1 want=$2 got=$3 texts=$4 n same
  n=$(wc -l <"$texts")
  same=$(paste -d '\n' "$want" "$got" | awk 'NR % 2 { w = $0; next } $0 == w { s++ } END { print s + 0 }')
  echo "$label: $same of $n texts tokenized exactly as the reference does"
  paste -d '\t' "$texts" "$want" "$got" | awk -F '\t' '$2 != $3 { print "  " $1 "\n    reference " $2 "\n    fedtune   " $3 }' | head -30
  ok "$label: the reference gave one line per text" test "$(wc -l <"$want")" -eq "$n"
  ok "$label: fedtune gave one line per text" test "$(wc -l <"$got")" -eq "$n"
  ok_same "$label: texts with the reference's ids" "$same" "$n"
}

node "$SRC/tests/tools/use_tokenize.js" "$REF" "$VOCAB" "$SENTENCES" >ref.txt 2>ref.err
rc=$?
ok_status "the reference tokenizes the fixture" "$rc" 0 ref.err
run_status "fedtune data tokenize on the fixture" 0 c.txt -- \
  "$FEDTUNE" data tokenize --tokenizer "$VOCAB" --input "$SENTENCES"
compare "vocab.json" ref.txt c.txt "$SENTENCES"
total=$(wc -l <"$SENTENCES")
ok "the fixture has at least 300 texts ($total)" test "$total" -ge 300
over=$(awk -F , '$0 != "[]" && NF > 128' ref.txt | wc -l)
ok "some texts are longer than 128 tokens ($over)" test "$over" -ge 3
unk=$(grep -cE '[[,]0[],]' ref.txt)
ok "some texts have unknown pieces ($unk)" test "$unk" -ge 20

# fedtune's object form of the same vocabulary tokenizes the same.
node -e '
const v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
process.stdout.write(JSON.stringify({type: "unigram", reserved: 6, unk: 0,
  vocab: v.map(([p, s]) => [p, s === null ? 0 : s])}));' "$VOCAB" >object.json
run_status "fedtune data tokenize with the object form" 0 o.txt -- \
  "$FEDTUNE" data tokenize --tokenizer object.json --input "$SENTENCES"
compare "object form" ref.txt o.txt "$SENTENCES"

# The sentiment set's 3 000 texts, as JSON strings.
node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter((l) => l);
process.stdout.write(lines.map((l) => JSON.stringify(JSON.parse(l).text)).join("\n") + "\n");' \
  "$SENTIMENT" >sentiment.txt
ok "the sentiment texts: 3000" test "$(wc -l <sentiment.txt)" -eq 3000
node "$SRC/tests/tools/use_tokenize.js" "$REF" "$VOCAB" sentiment.txt >sref.txt 2>sref.err
rc=$?
ok_status "the reference tokenizes the sentiment texts" "$rc" 0 sref.err
run_status "fedtune data tokenize on the sentiment texts" 0 s.txt -- \
  "$FEDTUNE" data tokenize --tokenizer "$VOCAB" --input sentiment.txt
compare "sentiment" sref.txt s.txt sentiment.txt

# The empty text: no ids from either (the reference's model would throw on it; what an
# empty text means is the caller's business).
printf '""\n" "\n' >empty.jsonl
node "$SRC/tests/tools/use_tokenize.js" "$REF" "$VOCAB" empty.jsonl >empty.ref 2>&1
rc=$?
ok_status "the reference tokenizes the empty text" "$rc" 0 empty.ref
ok_same "the reference gives [] for the empty text" "$(head -1 empty.ref)" "[]"
run_status "fedtune tokenizes the empty text" 0 empty.out -- \
  "$FEDTUNE" data tokenize --tokenizer "$VOCAB" --input empty.jsonl
ok_same "fedtune gives [] for the empty text and what the reference gives for a space" \
  "$(cat empty.out)" "$(cat empty.ref)"
report
