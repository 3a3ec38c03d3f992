#!/usr/bin/env bash
# fedtune's text commands end to end on tiny hand-made files (no data sets needed):
# `data tokenize` (JSON lines, --plain, standard input, every error naming file:line);
# `data info` on text data (statistics, the class mapping, --classes, --drop-empty);
# `train` and `eval` of a small embedding model on text, the tokenizer supplied with
# --tokenizer and then carried in the model's metadata; the errors of that wiring.
# Usage: cli_text.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1

# A tiny vocabulary: USE-lite's reserved pieces ("\uFFFD" the unknown), then 6 "▁",
# 7 "a", 8 "b", 9 "▁ab", 10 "c".
printf '%s' '[["\ufffd",0],["<s>",0],["</s>",0],["r3",0],["r4",0],["r5",0],["▁",-1],["a",-2],["b",-2],["▁ab",-1],["c",-3]]' >vocab.json

# ---- data tokenize -------------------------------------------------------------------------
printf '%s\n' '"ab"' '"ab ab"' '" c "' '""' '"x\tab"' >t.jsonl
run_status "tokenize JSON lines" 0 t.out -- "$FEDTUNE" data tokenize --tokenizer vocab.json --input t.jsonl
ok_same "tokenize JSON lines: ids" "$(cat t.out)" "$(printf '%s\n' '[9]' '[9,9]' '[6,6,10,6]' '[]' '[6,0,7,8]')"
run_status "tokenize, the file as a bare argument" 0 t2.out -- "$FEDTUNE" data tokenize --tokenizer vocab.json t.jsonl
ok "the bare argument is --input" cmp -s t.out t2.out
printf 'ab\r\n ab\n\nx\tc\n' >t.txt
run_status "tokenize --plain" 0 p.out -- "$FEDTUNE" data tokenize --tokenizer vocab.json --plain --input t.txt
ok_same "tokenize --plain: each line as it is, CRLF and empty lines included" "$(cat p.out)" \
  "$(printf '%s\n' '[9]' '[6,9]' '[]' '[6,0,10]')"
out=$(printf '"ab"\n"c"\n' | "$FEDTUNE" data tokenize --tokenizer vocab.json --input - 2>&1)
ok_same "tokenize standard input" "$out" "$(printf '%s\n' '[9]' '[6,10]')"
printf '"ab"\n"c"' >nonl.jsonl
out=$("$FEDTUNE" data tokenize --tokenizer vocab.json --input nonl.jsonl 2>&1)
ok_same "tokenize: the last line needs no line break" "$out" "$(printf '%s\n' '[9]' '[6,10]')"

# Errors: one line naming the file and line.
printf '"ab"\n"a\xffb"\n' >badutf.jsonl
expect 1 "fedtune data tokenize: badutf.jsonl:2: invalid UTF-8 at byte 1" -- \
  "$FEDTUNE" data tokenize --tokenizer vocab.json --input badutf.jsonl
printf 'ab\na\xffb\n' >badutf.txt
expect 1 "fedtune data tokenize: badutf.txt:2: invalid UTF-8 at byte 1" -- \
  "$FEDTUNE" data tokenize --tokenizer vocab.json --plain --input badutf.txt
printf '"ab"\n"c"\nab\n' >notjson.jsonl
expect 1 "fedtune data tokenize: notjson.jsonl:3: not a JSON string" -- \
  "$FEDTUNE" data tokenize --tokenizer vocab.json --input notjson.jsonl
printf '"ab"\n\n' >blank.jsonl
expect 1 "fedtune data tokenize: blank.jsonl:2: not a JSON string" -- \
  "$FEDTUNE" data tokenize --tokenizer vocab.json --input blank.jsonl
printf '{"text":"ab"}\n' >object.jsonl
expect 1 "object.jsonl:1: not a JSON string" -- \
  "$FEDTUNE" data tokenize --tokenizer vocab.json --input object.jsonl
printf '"ab" "c"\n' >two.jsonl
expect 1 "two.jsonl:1: not a JSON string" -- "$FEDTUNE" data tokenize --tokenizer vocab.json --input two.jsonl
printf '"a\\u0000b"\n' >nul.jsonl
expect 1 'nul.jsonl:1: byte 2: \u0000 is not supported in a text' -- \
  "$FEDTUNE" data tokenize --tokenizer vocab.json --input nul.jsonl
expect 1 "fedtune data tokenize: missing.jsonl: cannot open" -- \
  "$FEDTUNE" data tokenize --tokenizer vocab.json --input missing.jsonl
expect 1 "fedtune data tokenize: missing.json: cannot open" -- \
  "$FEDTUNE" data tokenize --tokenizer missing.json --input t.jsonl
printf '[["a",0]]' >few.json
expect 1 "fedtune data tokenize: few.json: 1 entries, none past the 6 reserved ones" -- \
  "$FEDTUNE" data tokenize --tokenizer few.json --input t.jsonl
printf '[["\\ufffd",0],["<s>",0],["</s>",0],["r3",0],["r4",0],["r5",0],["a","x"]]' >badscore.json
expect 1 "fedtune data tokenize: badscore.json: entry 6: score must be a finite number or null" -- \
  "$FEDTUNE" data tokenize --tokenizer badscore.json --input t.jsonl
expect 2 "fedtune data tokenize: one of --tokenizer and --bpe is required" -- "$FEDTUNE" data tokenize --input t.jsonl
expect 2 "fedtune data tokenize: --input is required" -- "$FEDTUNE" data tokenize --tokenizer vocab.json
expect 0 "--plain" -- "$FEDTUNE" data tokenize --help
expect 0 "fedtune data tokenize --tokenizer VOCAB" -- "$FEDTUNE" data --help
expect 2 'fedtune data: unknown subcommand "frob" (try: info, tokenize)' -- "$FEDTUNE" data frob

# ---- data info on text ---------------------------------------------------------------------
# 60 texts of 4 or more ids: "pos" texts start "ab ab ab", "neg" ones "c c".
for i in $(seq 0 29); do
  printf '{"text":"ab ab ab %s","label":"pos"}\n{"text":"c c %s","label":"neg"}\n' \
    "$([ $((i % 3)) -eq 0 ] && echo c || echo ab)" "$([ $((i % 4)) -eq 0 ] && echo ab || echo c)"
done >t60.jsonl
{
  echo 'id,label,text'
  sed 's/^{"text":"\(.*\)","label":"\(.*\)"}$/x,\2,"\1"/' t60.jsonl
} >t60.csv
run_status "data info on JSON lines" 0 info.out -- \
  "$FEDTUNE" data info --tokenizer vocab.json --max-len 4 t60.jsonl
has() { grep -qF -- "$2" info.out || { echo "FAIL: $1: no \"$2\" in: $(cat info.out)" >&2; fail=$((fail + 1)); return; }; pass=$((pass + 1)); }
has "data info" "examples 60, features 4, classes 2"
has "data info" "texts 60, dropped (empty text) 0; 4 token ids per example, padded with -1"
# "ab ab ab ab": 4 ids (20 texts), "ab ab ab c": 5 (10); "c c c": 6 (22), "c c ab": 5 (8):
# "▁" and "c" are two ids, "▁ab" one.
has "data info" "tokens 302 (5.03 per text, longest 6), unknown 0 (0.00%), truncated to 4: 40 texts"
ok "data info: the class mapping, names in sorted order" grep -qE '^0 +neg +30 +50.00%$' info.out
ok "data info: pos is 1" grep -qE '^1 +pos +30 +50.00%$' info.out
ok "data info: all 60 texts have 1 to 8 ids" grep -qE '^1-8 +60 +100.00%$' info.out
run_status "data info on CSV with a text column" 0 csv.out -- \
  "$FEDTUNE" data info --tokenizer vocab.json --max-len 4 t60.csv
ok_same "data info: CSV and JSON lines agree" "$(sed 1d csv.out)" "$(sed 1d info.out)"
run_status "data info --classes" 0 info.out -- \
  "$FEDTUNE" data info --tokenizer vocab.json --max-len 4 --classes pos,neg,maybe t60.jsonl
ok "data info --classes: pos is 0" grep -qE '^0 +pos +30 +50.00%$' info.out
ok "data info --classes: a class without texts" grep -qE '^2 +maybe +0 +0.00%$' info.out
expect 1 't60.jsonl:2: unknown class "neg" (the classes: "pos")' -- \
  "$FEDTUNE" data info --tokenizer vocab.json --classes pos t60.jsonl
expect 2 '--classes pos,pos: "pos" twice' -- \
  "$FEDTUNE" data info --tokenizer vocab.json --classes pos,pos t60.jsonl
printf '{"text":"ab","label":1}\n{"text":"  ","label":0}\n' >empty.jsonl
expect 1 "empty.jsonl:2: empty text" -- "$FEDTUNE" data info --tokenizer vocab.json empty.jsonl
expect 0 "texts 2, dropped (empty text) 1" -- \
  "$FEDTUNE" data info --tokenizer vocab.json --drop-empty empty.jsonl
expect 2 "t60.jsonl is text data (JSON lines, or CSV with a \"text\" column): give --tokenizer VOCAB" -- \
  "$FEDTUNE" data info t60.jsonl
printf 'f1,f2,label\n1,2,a\n3,4,b\n' >num.csv
expect 2 '--tokenizer: num.csv is not text data (JSON lines, or CSV with a "text" column)' -- \
  "$FEDTUNE" data info --tokenizer vocab.json num.csv
expect 0 "examples 2, features 2, classes 2" -- "$FEDTUNE" data info num.csv
expect 0 "--tokenizer" -- "$FEDTUNE" data info --help

# ---- train and eval on text ------------------------------------------------------------------
# Embedding (11 ids x 3) -> flatten -> linear: every text fills the 4 positions, since the
# embedding layer takes no -1 padding.
ARCH='{"input":[4],"layers":[{"type":"embedding","vocab":11,"dim":3},{"type":"flatten"},{"type":"linear","out":2}]}'
run_status "train on text with --tokenizer" 0 train.out -- \
  "$FEDTUNE" train --arch "$ARCH" --tokenizer vocab.json --data t60.jsonl --out m.st \
  --epochs 30 --lr 0.05 --val-split 0.2 --progress off
ok "train reports the text" grep -qF "train: text, 60 texts (0 empty dropped), 4 token ids per example; 302 tokens, 0.00% unknown, 40 texts truncated" train.out
ok "train: no standardisation of token ids" test "$(grep -c 'fedtune.standardize' <("$FEDTUNE" info m.st))" -eq 0
run_status "info on the text model" 0 minfo.out -- "$FEDTUNE" info m.st
ok "the model carries the tokenizer" grep -qF 'fedtune.tokenizer = {"type":"unigram","reserved":6,"unk":0,"vocab":[' minfo.out
ok "the model carries the class names" grep -qF 'fedtune.classes = ["neg","pos"]' minfo.out
# eval takes the tokenizer from the model, on CSV as well as JSON lines.
run_status "eval on CSV text, the tokenizer from the model" 0 eval.out -- "$FEDTUNE" eval --model m.st --data t60.csv
ok "eval reports the text" grep -qF "eval: text, 60 texts (0 empty dropped), 4 token ids per example, 0.00% unknown, 40 truncated" eval.out
ok "eval: the model separates the two kinds of text" grep -qF "accuracy 100.00%" eval.out
expect 0 '"accuracy":1' -- "$FEDTUNE" eval --model m.st --data t60.jsonl --json
# Labels the other way round: the model's class names map them, the file's order does not.
sed -e 's/"pos"/"tmp"/; s/"neg"/"pos"/; s/"tmp"/"neg"/' t60.jsonl >swapped.jsonl
expect 0 "accuracy 0.00%" -- "$FEDTUNE" eval --model m.st --data swapped.jsonl
expect 2 '--classes pos,neg: the model'"'"'s classes are ["neg","pos"]' -- \
  "$FEDTUNE" eval --model m.st --data t60.jsonl --classes pos,neg
# Fine-tuning the text model keeps its tokenizer without --tokenizer.
run_status "train from the text model" 0 train2.out -- \
  "$FEDTUNE" train --model m.st --data t60.csv --out m2.st --epochs 1 --progress off
ok "the fine-tuned model keeps the tokenizer" grep -qF 'fedtune.tokenizer = {"type":"unigram"' <("$FEDTUNE" info m2.st)
# Errors.
expect 2 "--noise, --shift and --hflip do not apply to text data" -- \
  "$FEDTUNE" train --arch "$ARCH" --tokenizer vocab.json --data t60.jsonl --out x.st --noise 0.1
expect 2 "t60.jsonl is text data, but the model's input is not one sequence of token ids (its input shape must be [T])" -- \
  "$FEDTUNE" train --arch '{"input":[2,2],"layers":[{"type":"flatten"},{"type":"linear","out":2}]}' \
  --tokenizer vocab.json --data t60.jsonl --out x.st
expect 2 "t60.jsonl is text data (JSON lines, or CSV with a \"text\" column): give --tokenizer VOCAB, or a model whose metadata has fedtune.tokenizer" -- \
  "$FEDTUNE" train --arch "$ARCH" --data t60.jsonl --out x.st
expect 2 "--tokenizer: num.csv is not text data" -- \
  "$FEDTUNE" eval --model m.st --data num.csv --tokenizer vocab.json
expect 1 "--tokenizer: missing.json: cannot open" -- \
  "$FEDTUNE" train --arch "$ARCH" --tokenizer missing.json --data t60.jsonl --out x.st
# A text shorter than the model's length is padded with -1, which the embedding layer
# refuses: a clear error, not a crash (a padding-aware embedding is the model layer's).
printf '{"text":"ab","label":"pos"}\n' >short.jsonl
expect 1 "token id -1" -- "$FEDTUNE" eval --model m.st --data short.jsonl
expect 0 "--tokenizer" -- "$FEDTUNE" train --help
expect 0 "--drop-empty" -- "$FEDTUNE" eval --help
report
