/* A SentencePiece unigram tokenizer that reproduces, id for id, the JavaScript tokenizer
 * that ships with Universal Sentence Encoder lite (npm @energetic-ai/embeddings 0.2.0,
 * lib/trie.ts and lib/tokenizer.ts; the same code as tfjs-models' universal-sentence-
 * encoder). What it does, quirks included, because a model's ids must be the ids it was
 * trained on:
 *
 *   1. The text is normalised to NFKC (libunistring; JavaScript's String.normalize). A
 *      non-empty result gets U+2581 "▁" put in front, and every U+0020 space (no other
 *      space) becomes "▁".
 *   2. Pieces 0 .. reserved-1 are reserved (<unk>, <s>, </s>, ...) and never matched;
 *      the rest sit in a trie of code points with their scores. At each code point the
 *      pieces that start there are found, shortest first; when none does, the single
 *      code point is the unknown piece with score 0.
 *   3. Viterbi over code points, in the reference's order (end positions ascending,
 *      start positions ascending within one): a candidate's score is its piece's score
 *      plus the best score at its start; it replaces the best at its end when that best
 *      is exactly 0 ("unset", even when 0 is a real sum of scores) or when it is >= (a
 *      tie goes to the later candidate).
 *   4. Backtracking from the end steps back by the length of the chosen piece in UTF-16
 *      code units, not in code points (the reference's vocabulary[id][0].length). For
 *      pieces inside the Basic Multilingual Plane the two agree; a piece holding a
 *      character above U+FFFF steps back too far, and the walk goes on from wherever it
 *      lands (where no piece ends, the unknown id), as the reference does. An unknown
 *      input character steps back by the unknown piece's length ("\uFFFD" in USE-lite:
 *      1), whatever the character.
 *   5. Runs of unknown ids collapse into one.
 *
 * A score of null in the vocabulary counts as 0 (JavaScript's null + x == x; USE-lite's
 * vocab.json has seven such entries, all with ':'). When a piece appears twice the
 * later entry wins, as in the reference's trie, and the earlier ids are never produced
 * (USE-lite has "”5" three times). Empty pieces past the reserved ones are never
 * matched. NFKC follows the Unicode version of the installed libunistring (Debian 12:
 * 1.0, Unicode 14): characters assigned later that decompose or combine may normalise
 * differently from a newer JavaScript engine. */
#ifndef FED_TOKENIZER_H
#define FED_TOKENIZER_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

/* Vocabulary entries at most: ids travel as float32 in a data set, exact up to 2^24. */
#define FED_TOKENIZER_MAX_VOCAB ((size_t)1 << 24)
/* Bytes of UTF-8 in one piece at most (SentencePiece's own pieces are <= 16 code points). */
#define FED_TOKENIZER_MAX_PIECE 1024
/* Bytes of one text at most, before normalisation. */
#define FED_TOKENIZER_MAX_TEXT ((size_t)16 << 20)
/* Bytes of a vocabulary file at most. */
#define FED_TOKENIZER_MAX_FILE ((size_t)1 << 30)

typedef struct fed_tokenizer fed_tokenizer;

/* A fed_tokenizer is of one of two kinds: this unigram tokenizer, or a byte-level BPE one
 * (bpe.h: GPT-2's encoder, with a vocabulary of its own learned by bpe_train.h or GPT-2's
 * converted), so that a model file's "fedtune.tokenizer" and every --tokenizer may hold
 * either. The kind is the JSON form's "type": "unigram" (or the bare array) or "bpe".
 * For a BPE tokenizer there are no reserved ids and no unknown id (-1): every byte has
 * a symbol.
 *
 * json[0..len) is either a bare vocabulary, the vocab.json of USE-lite:
 *     [[piece, score], ...]            (6 reserved pieces, the unknown is id 0)
 * or fedtune's own object, what fed_tokenizer_to_json writes:
 *     {"type":"unigram","reserved":R,"unk":U,"vocab":[[piece,score],...]}
 * or the BPE object of bpe.h, {"type":"bpe","encoder":{...},"merges":[...]} (errors as
 * fed_bpe_parse_json's).
 * with 1 <= R < entries and 0 <= U < R; no other keys. A piece is a string of valid
 * UTF-8 without U+0000, at most FED_TOKENIZER_MAX_PIECE bytes; a score a finite number
 * or null (0); the unknown piece is not empty. Errors are FED_EFORMAT naming `what` and
 * the entry: "vocab.json: entry 17: score must be a number or null" (FED_ERANGE for too
 * many entries or too long a piece). */
fed_err fed_tokenizer_parse(fed_tokenizer **out, const char *json, size_t len,
                            const char *what) FED_MUST_USE;
/* Reads and parses a file (gzip allowed); errors name the path. */
fed_err fed_tokenizer_load(fed_tokenizer **out, const char *path) FED_MUST_USE;
/* The object form above, canonical: keys in that order, no spaces, null scores as 0,
 * every score the shortest "%.15g".."%.17g" that reads back to the same double. For
 * model-file metadata ("fedtune.tokenizer"); *json is fed_malloc'd. */
fed_err fed_tokenizer_to_json(const fed_tokenizer *t, char **json) FED_MUST_USE;
void fed_tokenizer_destroy(fed_tokenizer **t);

/* "unigram" or "bpe". */
const char *fed_tokenizer_kind(const fed_tokenizer *t);
/* Entries of the vocabulary, reserved ones included: ids are in [0, vocab_size). */
size_t fed_tokenizer_vocab_size(const fed_tokenizer *t);
size_t fed_tokenizer_reserved(const fed_tokenizer *t);
int32_t fed_tokenizer_unk(const fed_tokenizer *t);
/* The piece of id (NUL-terminated UTF-8, owned by t), or NULL when id is out of range. */
const char *fed_tokenizer_piece(const fed_tokenizer *t, int32_t id);

/* UTF-8 text[0..len) -> ids. Writes the first min(total, max) ids to ids (which may be
 * NULL when max is 0) and sets *n = total. Empty text (or text whose normal form is
 * empty) gives 0 ids; what that means is the caller's business. FED_EFORMAT "invalid
 * UTF-8 at byte B" (B from the start of text), FED_ERANGE beyond FED_TOKENIZER_MAX_TEXT.
 * Time O(code points x longest piece); t is only read, so threads may share it. */
fed_err fed_tokenizer_encode(const fed_tokenizer *t, const char *text, size_t len, int32_t *ids,
                             size_t max, size_t *n) FED_MUST_USE;

/* ids[0..n) -> text, in a new fed_malloc'd *text of *len bytes (a NUL follows). BPE:
 * byte-exact (bpe.h). Unigram: the pieces joined, reserved ids but the unknown one left
 * out, each "▁" a space except at the very start (NFKC is not undone). FED_EINVAL "id 7
 * at 3 is not in [0, V)". */
fed_err fed_tokenizer_decode(const fed_tokenizer *t, const int32_t *ids, size_t n, char **text,
                             size_t *len) FED_MUST_USE;

#endif
