// The reference for fedtune's tokenizer: USE-lite's own JavaScript tokenizer (npm
// @energetic-ai/embeddings 0.2.0). Reads texts, one JSON string a line, and prints the
// ids of each as a JSON array, one line each: what `fedtune data tokenize` prints.
// The Tokenizer class is not exported; EmbeddingsModel builds one from the vocabulary
// and holds it as .tokenizer (the model itself is not needed to tokenize).
// Usage: node use_tokenize.js <node_modules dir> <vocab.json> <texts file>
'use strict';
const fs = require('fs');
const path = require('path');

if (process.argv.length !== 5) {
  console.error('usage: node use_tokenize.js <node_modules dir> <vocab.json> <texts file>');
  process.exit(2);
}
const [modules, vocabPath, input] = process.argv.slice(2);
const pkgDir = path.resolve(modules, '@energetic-ai', 'embeddings');
const version = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version;
if (version !== '0.2.0') {
  console.error(`use_tokenize.js: ${pkgDir} is version ${version}; the reference is 0.2.0`);
  process.exit(1);
}
const { EmbeddingsModel } = require(pkgDir);
const vocabulary = JSON.parse(fs.readFileSync(vocabPath, 'utf8'));
const tokenizer = new EmbeddingsModel({ vocabulary, model: null }).tokenizer;

const lines = fs.readFileSync(input, 'utf8').split('\n');
if (lines.length && lines[lines.length - 1] === '') lines.pop();
const out = [];
lines.forEach((line, i) => {
  const text = JSON.parse(line);
  if (typeof text !== 'string') {
    console.error(`${input}:${i + 1}: not a JSON string`);
    process.exit(1);
  }
  out.push(JSON.stringify(tokenizer.encode(text)));
});
process.stdout.write(out.length ? out.join('\n') + '\n' : '');
