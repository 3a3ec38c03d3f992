#!/usr/bin/env bash
# The text data scripts on tiny committed fixtures (tests/data/text/), no network and no
# fetched data:
#   scripts/rdata-text: two real R files from r-cran-janeaustenr (Meta/data.rds, a 6x2
#   character matrix; data/Rdata.rdx, the index of the novels' lazy-load database) dumped
#   value for value; lazy-load databases written by tests/tools/rdata_forge.py in
#   serialisation versions 2 and 3 decoded byte for byte; one malformed database per
#   refusal (exit 1, one line naming the file and what is wrong).
#   scripts/prepare-text: the corpus, SOTU and sentiment parts of fixtures in the fetched
#   sets' layouts, file contents checked exactly; the sentiment split recomputed here
#   with sha256sum; manifests checked against sha256sum; a second run rewrites the same
#   bytes; malformed inputs (exit 1, file:line) write nothing; usage errors exit 2.
# Usage: text_data.sh <source dir>
set -u
SRC=$(cd "$1" && pwd)
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1
[ -n "$PY" ] || skip "python3 not found"
FIX=$SRC/tests/data/text
RT=("$PY" "$SRC/scripts/rdata-text")
PT=("$PY" "$SRC/scripts/prepare-text")

# ---- rdata-text: real R files ----------------------------------------------------------

want='{"type": "character", "value": ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility", "The text of Jane Austen'"'"'s novel \"Emma\"", "The text of Jane Austen'"'"'s novel \"Mansfield Park\"", "The text of Jane Austen'"'"'s novel \"Northanger Abbey\"", "The text of Jane Austen'"'"'s novel \"Persuasion\"", "The text of Jane Austen'"'"'s novel \"Pride and Prejudice\"", "The text of Jane Austen'"'"'s novel \"Sense and Sensibility\""], "attributes": {"dim": {"type": "integer", "value": [6, 2]}}}'
ok_same "dump of janeaustenr's Meta/data.rds (R 4.2, version 3)" \
  "$("${RT[@]}" --dump "$FIX/r/janeaustenr-Meta-data.rds")" "$want"
rdx=$("${RT[@]}" --dump "$FIX/r/janeaustenr-Rdata.rdx")
ok "Rdata.rdx: emma's blob is bytes 0..352043" grep -qF '[{"type": "integer", "value": [0, 352043]}, {"type": "integer", "value": [352043, 351373]}' <<<"$rdx"
ok "Rdata.rdx: the last blob (sensesensibility) is at 1334779, 266556 bytes" \
  grep -qF '{"type": "integer", "value": [1334779, 266556]}], "attributes": {"names": {"type": "character", "value": ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"]}}}' <<<"$rdx"
ok "Rdata.rdx: compressed TRUE, names of the index" grep -qF '{"type": "logical", "value": [true]}], "attributes": {"names": {"type": "character", "value": ["variables", "references", "compressed"]}}}' <<<"$rdx"

# ---- rdata-text: forged databases ------------------------------------------------------

"$PY" "$SRC/tests/tools/rdata_forge.py" forge
ok_status "rdata_forge.py wrote the cases" $? 0
for v in 3 2; do
  run_status "version $v: decoded" 0 "v$v.log" -- "${RT[@]}" "forge/good$v" "out$v"
  ok_same "version $v: emma.txt" "$(od -An -c "out$v/emma.txt" | tr -s ' \n' ' ')" \
    " E M M A \n \n E m m a W o o d h o u s e , h a n d s o m e , c l e v e r , a n d r i c h , \n "
  ok_same "version $v: persuasion.txt (UTF-8 kept)" "$(cat "out$v/persuasion.txt")" \
    "$(printf 'Persuasion\n£10 000 — “Sir Walter”')"
  ok_same "version $v: persuasion.txt bytes" "$(stat -c %s "out$v/persuasion.txt")" 41
  ok_same "version $v: the log" "$(cat "v$v.log")" \
    "$(printf 'rdata-text: emma: 3 lines\nrdata-text: persuasion: 2 lines')"
done
ok_same "--list" "$("${RT[@]}" --list forge/good3)" "$(printf 'emma\tcharacter\t3\npersuasion\tcharacter\t2')"
run_status "a character vector with names (attributes)" 0 attrs.log -- "${RT[@]}" forge/attrs attrs
ok_same "its text" "$(cat attrs/one.txt)" "x"

bad() { # <case> <message>
  expect 1 "rdata-text: forge/$1.$2" -- "${RT[@]}" "forge/$1" "bad-$1"
  ok "$1: nothing written" test ! -e "bad-$1"
}
bad na 'rdb: variable emma: element 2 is NA'
bad notchar 'rdb: variable emma is of type integer, not character'
bad newline 'rdb: variable emma: an element holds a line break'
bad closure 'rdb: variable emma (blob at 0): byte 23 of the serialisation: unsupported SEXP type 3 (flags 0x3)'
bad version4 'rdx: byte 2: serialisation version 4, not 2 or 3'
bad trailing 'rdb: variable emma (blob at 0): byte 102 of the serialisation: 4 bytes after the object'
bad truncated 'rdb: variable emma (blob at 0): byte 59 of the serialisation: truncated: string needs 43 bytes, 38 left'
bad badzlib 'rdb: variable emma: blob at 0: zlib: Error -3 while decompressing data'
bad badlength 'rdb: variable emma: blob at 0 inflates to 102 bytes, not the 109 its header says'
bad hugelength 'rdb: variable emma (blob at 0): byte 27 of the serialisation: character: length 2147483632 exceeds the 0 bytes left'
bad badutf8 'rdb: variable emma (blob at 0): byte 42 of the serialisation: string is not UTF-8'
bad badref 'rdb: variable emma (blob at 0): byte 44 of the serialisation: reference 9 to nothing (0 known)'
bad bzip2 'rdx: compression [2] is not zlib (TRUE or 1)'
bad noindex 'rdx: not a named list'
bad deep 'rdb: variable emma (blob at 0): byte 1631 of the serialisation: nested deeper than 200'
bad deepattrs 'rdb: variable emma (blob at 0): byte 3810 of the serialisation: nested deeper than 200'
bad outside 'rdb: variable persuasion: blob at 94, 87 bytes, lies outside the 178-byte file'
expect 1 'rdata-text: forge/xdr-not.rds: byte 0: format' -- "${RT[@]}" --dump forge/xdr-not.rds
expect 1 'rdata-text: forge/badgzip.rds: byte 0: gzip: Compressed file ended' -- "${RT[@]}" --dump forge/badgzip.rds
expect 1 'rdata-text: forge/none.rdx: No such file or directory' -- "${RT[@]}" forge/none out
expect 2 'usage: scripts/rdata-text DB OUT | --list DB | --dump FILE' -- "${RT[@]}" forge/good3

# ---- prepare-text ----------------------------------------------------------------------

run_status "prepare-text on the fixtures" 0 prep.log -- "${PT[@]}" --data "$FIX" --out out --valid-every 5
ok "counts: kjv" grep -qx 'corpus: kjv: 3 documents, 165 bytes of text' prep.log
ok "counts: moby-dick" grep -qx 'corpus: moby-dick: 3 documents, 80 bytes of text' prep.log
ok "counts: austen" grep -qx 'corpus: austen: 7 documents, 427 bytes of text' prep.log
ok "counts: sotu" grep -qx 'sotu: 5 speeches, 3 presidents; one speech: zachary_taylor (4 of 6 sentences to train), millard_fillmore (4 of 5 paragraphs to train)' prep.log
ok "counts: sentiment" grep -qx 'sentiment: yelp: 8 train, 2 test' prep.log

ok_same "corpus: valid.jsonl is documents 5 and 10" "$(cat out/corpus/valid.jsonl)" \
  '{"text":"I stuffed a shirt.","id":"moby-dick/chapter_2"}
{"text":"Emma Woodhouse, handsome, clever, and rich.\nSecond paragraph.","id":"austen/emma/1"}'
ok_same "corpus: train.jsonl has the other 11" "$(wc -l <out/corpus/train.jsonl)" 11
ok_same "corpus: a KJV chapter is its verses joined by a space" "$(head -1 out/corpus/train.jsonl)" \
  '{"text":"In the beginning God created the heaven and the earth. And the earth was without form, and void.","id":"kjv/Ge 1"}'
ok "corpus: a Moby Dick chapter: no heading, a paragraph a line" grep -qxF \
  '{"text":"Call me Ishmael.\nSome years ago—never mind.","id":"moby-dick/chapter_1"}' out/corpus/train.jsonl
ok "corpus: the epilogue" grep -qxF '{"text":"The drama'"'"'s done.","id":"moby-dick/epilogue"}' out/corpus/train.jsonl
ok "corpus: Austen's second chapter, FINIS dropped" grep -qxF \
  '{"text":"Mr. Weston was a native.","id":"austen/emma/2"}' out/corpus/train.jsonl
ok "corpus: hard-wrapped lines joined" grep -qxF \
  '{"text":"It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.","id":"austen/prideprejudice/1"}' out/corpus/train.jsonl
ok "corpus: front matter before the first chapter dropped" test "$(grep -c 'ADVERTISEMENT\|1803\|EMMA\|VOLUME' out/corpus/train.jsonl)" -eq 0
ok_same "corpus: the order of the books" "$(grep -o '"id":"austen/[a-z]*' out/corpus/train.jsonl | cut -d/ -f2 | uniq | tr '\n' ' ')" \
  "sensesensibility prideprejudice mansfieldpark emma northangerabbey persuasion "

ok_same "sotu: sites.tsv" "$(cat out/sotu/sites.tsv)" "$(printf '%s\t%s.train.jsonl\t%s.test.jsonl\n' \
  george_washington george_washington george_washington zachary_taylor zachary_taylor zachary_taylor \
  millard_fillmore millard_fillmore millard_fillmore)"
ok_same "sotu: the last speech is the test" "$(cat out/sotu/george_washington.test.jsonl)" \
  '{"text":"Fellow-Citizens: the last.","id":"1792_george_washington_n"}'
ok_same "sotu: the others train, in order" "$(cut -c1-60 out/sotu/george_washington.train.jsonl)" \
  "$(printf '%s\n' '{"text":"Fellow-Citizens: I am glad.","id":"1790_george_washington_n"}' \
    '{"text":"Fellow-Citizens: peace holds.","id":"1791_george_washington_n"}' | cut -c1-60)"
ok_same "sotu: one speech, one line: 4 of 6 sentences (not at Mr. or Gen.)" \
  "$(cat out/sotu/zachary_taylor.train.jsonl out/sotu/zachary_taylor.test.jsonl)" \
  '{"text":"We are at peace. Our trade grows. \"Let us be just.\" Mr. Clay agrees.","id":"1849_zachary_taylor_w/1"}
{"text":"Gen. Scott too. The end is near.","id":"1849_zachary_taylor_w/2"}'
ok_same "sotu: one speech of lines: 4 of 5 paragraphs" \
  "$(cat out/sotu/millard_fillmore.train.jsonl out/sotu/millard_fillmore.test.jsonl)" \
  '{"text":"One.\nTwo.\nThree.\nFour.","id":"1850_millard_fillmore_w/1"}
{"text":"Five.","id":"1850_millard_fillmore_w/2"}'

# The sentiment split recomputed: in each label, the lines ordered by the SHA-256 of
# "<src>:<line>", the first 20% (here 1 of 5) is the test.
for src in imdb yelp amazon; do
  want=""
  for label in 0 1; do
    first=$(grep -n "\"label\":$label}" "$FIX/sentiment/$src.jsonl" | cut -d: -f1 | while read -r n; do
      printf '%s %s\n' "$(printf '%s:%s' "$src" "$n" | sha256sum | cut -c1-64)" "$n"
    done | sort | head -1 | cut -d' ' -f2)
    want+="$first "
  done
  got=""
  while read -r line; do
    got+="$(grep -nxF "${line%,\"source\":*}}" "$FIX/sentiment/$src.jsonl" | cut -d: -f1) "
  done < <(sort -t: -k3 out/sentiment/$src.test.jsonl)
  ok_same "sentiment: $src: the test lines by SHA-256 order" "$(tr ' ' '\n' <<<"$got" | sort -n | tr '\n' ' ')" \
    "$(tr ' ' '\n' <<<"$want" | sort -n | tr '\n' ' ')"
  ok_same "sentiment: $src: train + test = the source" \
    "$(cat out/sentiment/$src.train.jsonl out/sentiment/$src.test.jsonl | sed 's/,"source":"[a-z]*"}$/}/' | sort)" \
    "$(sort "$FIX/sentiment/$src.jsonl")"
  ok_same "sentiment: $src: labels in test" "$(grep -o '"label":[01]' out/sentiment/$src.test.jsonl | sort | tr '\n' ' ')" \
    '"label":0 "label":1 '
done
ok_same "sentiment: pooled train" "$(cat out/sentiment/{imdb,yelp,amazon}.train.jsonl | sha256sum)" \
  "$(sha256sum <out/sentiment/train.jsonl)"
ok_same "sentiment: pooled test" "$(cat out/sentiment/{imdb,yelp,amazon}.test.jsonl | sha256sum)" \
  "$(sha256sum <out/sentiment/test.jsonl)"
ok_same "sentiment: a row" "$(head -1 out/sentiment/yelp.train.jsonl)" '{"text":"yelp sentence 1 é","label":1,"source":"yelp"}'

for part in corpus sotu sentiment; do
  bad_rows=$(awk -F'\t' -v d="out/$part" 'NR > 1 {
      cmd = "sha256sum < \"" d "/" $1 "\""; cmd | getline h; close(cmd)
      if (substr(h, 1, 64) != $4) print $1 }' "out/$part/manifest.tsv")
  ok "$part: manifest.tsv's hashes are sha256sum's ($bad_rows)" test -z "$bad_rows"
done
ok_same "corpus: manifest.tsv" "$(cut -f1-3 out/corpus/manifest.tsv)" \
  "$(printf 'file\trecords\tbytes\ntrain.jsonl\t11\t%s\nvalid.jsonl\t2\t%s' \
    "$(stat -c %s out/corpus/train.jsonl)" "$(stat -c %s out/corpus/valid.jsonl)")"
ok_same "sotu: manifest.tsv lists 6 files and sites.tsv" "$(wc -l <out/sotu/manifest.tsv)" 8

cp -r out again
run_status "a second run" 0 prep2.log -- "${PT[@]}" --data "$FIX" --out again --valid-every 5
ok "a second run writes the same bytes" diff -r out again
ok "no temporary file left" test -z "$(find out again -name '*.tmp')"
run_status "--only sotu" 0 only.log -- "${PT[@]}" --data "$FIX" --out only --only sotu
ok_same "--only sotu: only sotu/" "$(ls only)" sotu
run_status "the default: one in 20 held out" 0 d20.log -- "${PT[@]}" --data "$FIX" --out d20 --only corpus
ok_same "one in 20: no valid document among 13" "$(wc -c <d20/corpus/valid.jsonl) $(wc -l <d20/corpus/train.jsonl)" "0 13"
FEDTUNE_DATA=$FIX run_status "\$FEDTUNE_DATA as the data folder" 0 env.log -- "${PT[@]}" --out envout --only sentiment
ok "\$FEDTUNE_DATA: same files" diff -r out/sentiment envout/sentiment

# Malformed inputs: a copy of the fixtures with one thing broken each time.
broken() { # <message> <command changing the copy in folder b...>
  local want=$1
  shift
  rm -rf b bout
  cp -r "$FIX" b
  "$@"
  expect 1 "prepare-text: $want" -- "${PT[@]}" --data b --out bout
  ok "nothing written ($want)" test ! -e bout
}
sed_b() { sed -i "$1" "b/$2"; }
broken 'b/kjv/verses.txt:2: not "Book C:V<TAB>text"' sed_b '2s/1:2/1:x/' kjv/verses.txt
broken 'b/kjv/verses.txt:5: chapter Ge 1 again after others' sed_b '$a Ge 1:9\tAgain.' kjv/verses.txt
broken "b/moby-dick/chapter_2.txt:1: the heading does not start with 'CHAPTER 2. '" sed_b '1s/2/3/' moby-dick/chapter_2.txt
broken 'b/moby-dick/chapter_2.txt: No such file or directory' rm b/moby-dick/chapter_2.txt
broken 'b/moby-dick/manifest.tsv:3: 2 fields, not 3' sed_b '3s/\t[0-9]*$//' moby-dick/manifest.tsv
broken 'b/austen/persuasion.txt: no chapter heading' sed_b 's/^Chapter 1$/Part 1/' austen/persuasion.txt
broken 'b/austen/emma.txt:17: an empty chapter' sed_b 's/^Mr. Weston.*//' austen/emma.txt
broken 'b/sotu/manifest.tsv:1: header is not year president party bytes' sed_b '1s/year/yr/' sotu/manifest.tsv
broken 'b/sotu/manifest.tsv:3: bad year, president or party' sed_b '3s/^1791/17x1/' sotu/manifest.tsv
broken 'b/sotu/1849_zachary_taylor_w.txt: one speech of one sentence: no test part' \
  sed_b 's/.*/All is well./' sotu/1849_zachary_taylor_w.txt
broken 'b/sotu/1790_george_washington_n.txt: empty' truncate -s 0 b/sotu/1790_george_washington_n.txt
broken 'b/sentiment/yelp.jsonl:3: bad JSON' sed_b '3s/}$//' sentiment/yelp.jsonl
broken 'b/sentiment/amazon.jsonl:4: "label" is not 0 or 1' sed_b '4s/"label":0/"label":2/' sentiment/amazon.jsonl
broken 'b/sentiment/yelp.jsonl:5: "label" is not 0 or 1' sed_b '5s/"label":1/"label":1.0/' sentiment/yelp.jsonl
broken 'b/sentiment/imdb.jsonl:2: no non-empty "text" string' sed_b '2s/"text":"[^"]*"/"text":" "/' sentiment/imdb.jsonl
one_zero() { awk '!/"label":0/ || !seen++' "$FIX/sentiment/imdb.jsonl" >b/sentiment/imdb.jsonl; }
broken 'b/sentiment/imdb.jsonl: label 0 has 1 row: too few to split' one_zero
broken 'b/kjv/verses.txt:3: not UTF-8' sed_b '3s/Thus/Th\xffus/' kjv/verses.txt
broken 'b/austen/emma.txt:2: a NUL character' sed_b '2s/^$/\x00/' austen/emma.txt

expect 2 'prepare-text: unknown part "bible" (corpus, sotu, sentiment)' -- "${PT[@]}" --data "$FIX" --out x --only bible
expect 2 'prepare-text: --valid-every 1: not an integer >= 2' -- "${PT[@]}" --data "$FIX" --out x --valid-every 1
expect 2 'prepare-text: --out needs a value' -- "${PT[@]}" --out
expect 2 'prepare-text: unknown argument "--bogus" (see --help)' -- "${PT[@]}" --bogus
ok "usage errors wrote nothing" test ! -e x
expect 0 "scripts/prepare-text [--data DIR] [--out DIR]" -- "${PT[@]}" --help

report
