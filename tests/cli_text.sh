#!/usr/bin/env bash
# fedtune's text commands end to end on tiny hand-made files (no data sets needed):
# `data tokenize` (JSON lines, --plain, standard input, every error naming file:line).
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
expect 2 "fedtune data tokenize: --tokenizer is required" -- "$FEDTUNE" data tokenize --input t.jsonl
expect 2 "fedtune data tokenize: --input is required" -- "$FEDTUNE" data tokenize --tokenizer vocab.json
expect 0 "--plain" -- "$FEDTUNE" data tokenize --help
expect 0 "fedtune data tokenize --tokenizer VOCAB" -- "$FEDTUNE" data --help
expect 2 'fedtune data: unknown subcommand "frob" (try: info, tokenize)' -- "$FEDTUNE" data frob
report
