/* Learning a byte-level BPE tokenizer from text, in GPT-2's manner, so that a small model
 * can have a small vocabulary: GPT-2's 50 257 symbols make the output layer of a small
 * GPT many times the cost of the rest. What is learned is what bpe.h encodes with.
 *
 *   1. Each text is cut into words by GPT-2's pre-tokeniser (bpe.h, step 1) and the
 *      distinct words are counted (a word's bytes, with its leading space).
 *   2. Every word starts as its bytes, each byte the symbol of GPT-2's byte table; ids
 *      0..255 are the 256 byte symbols in GPT-2's own order (encoder.json's first 256
 *      ids: '!'..'~', '¡'..'¬', '®'..'ÿ', then the other bytes ascending).
 *   3. Then, until the vocabulary is full: the adjacent pair of symbols that occurs most
 *      often (summed over the words, each word weighted by its count) becomes a merge,
 *      its joined symbol the next id, and every word replaces the pair left to right
 *      without overlaps (as encoding does). A tie in count goes to the pair of smaller
 *      first id, then smaller second id: the result depends on the texts alone, not on
 *      the order they came in or on hashing. A pair is a candidate only when it occurs
 *      at least twice and its joined symbol stands for at most FED_BPE_TRAIN_MAX_BYTES
 *      bytes; when no pair is left, learning stops early, with a smaller vocabulary.
 *
 * No special symbols (no <|endoftext|>): every id is a byte string. The result is the
 * JSON form of bpe.h, {"type":"bpe","encoder":{...},"merges":[...]}, canonical, so the
 * same texts give the same bytes. */
#ifndef FED_BPE_TRAIN_H
#define FED_BPE_TRAIN_H

#include "core/err.h"

#include <stddef.h>

/* Bytes one learned symbol may stand for at most. */
#define FED_BPE_TRAIN_MAX_BYTES 128
/* Vocabulary size bounds: the 256 bytes, and ids exact as float32 with room to spare. */
#define FED_BPE_TRAIN_MIN_VOCAB 256
#define FED_BPE_TRAIN_MAX_VOCAB ((size_t)1 << 20)

typedef struct fed_bpe_trainer fed_bpe_trainer;

fed_err fed_bpe_trainer_new(fed_bpe_trainer **out) FED_MUST_USE;
void fed_bpe_trainer_destroy(fed_bpe_trainer **t);

/* Counts the words of UTF-8 text[0..len). FED_EFORMAT "invalid UTF-8 at byte B". */
fed_err fed_bpe_trainer_add(fed_bpe_trainer *t, const char *text, size_t len) FED_MUST_USE;
/* Words seen (with repeats) and distinct words. */
size_t fed_bpe_trainer_words(const fed_bpe_trainer *t);
size_t fed_bpe_trainer_distinct(const fed_bpe_trainer *t);

/* Learns merges until the vocabulary has `vocab` symbols (in [FED_BPE_TRAIN_MIN_VOCAB,
 * FED_BPE_TRAIN_MAX_VOCAB], FED_EINVAL otherwise) or no pair is left, and writes the
 * JSON form into a new fed_malloc'd *json; *merges is the number learned. The trainer's
 * words are consumed (a second call learns nothing new: FED_EINVAL). */
fed_err fed_bpe_trainer_learn(fed_bpe_trainer *t, size_t vocab, char **json,
                              size_t *merges) FED_MUST_USE;

#endif
