/* Internal to dataset/: what one file of the data layer calls in another. Reading a
 * whole file (gzip inflated) lives in dataset_io.c, beside the other file formats; the
 * JSON readers of tokenizer.c and text.c share the check for an escaped NUL, which cJSON
 * would silently turn into the end of the string. */
#ifndef FED_DATA_INTERNAL_H
#define FED_DATA_INTERNAL_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;
struct fed_bpe;

/* The bytes of path, inflated when they are gzip (FED_ERANGE beyond 4 GiB inflated), in
 * a new buffer *out of *outn bytes (a NUL byte follows them, not counted). FED_EIO names
 * the path. */
fed_err fed__data_read_file(const char *path, unsigned char **out, size_t *outn) FED_MUST_USE;

/* Offset of the first "\u0000" escape in the JSON text s[0..n) (every backslash of
 * valid JSON starts an escape, so counting them from the start is exact), or n when
 * there is none. */
size_t fed__data_json_nul(const char *s, size_t n);

/* Parses s[0..n) as one JSON value followed by nothing but white space (cJSON alone
 * stops after the value and ignores the rest). NULL when it is not JSON or memory ran
 * out: fed_json_oom() tells which. Raw control characters inside strings pass, as cJSON
 * lets them. */
struct cJSON *fed__data_json_parse(const char *s, size_t n);

/* The BPE tokenizer of fedtune's JSON form (bpe.h) from its parsed object root, for
 * tokenizer.c, which reads either kind of tokenizer file. */
fed_err fed__bpe_from_json(struct fed_bpe **out, const struct cJSON *root,
                           const char *what) FED_MUST_USE;
/* GPT-2's pre-tokeniser (bpe.h, step 1), for the trainer: the end of the word that starts
 * at p < n in the valid UTF-8 s[0..n). */
size_t fed__bpe_word_end(const unsigned char *s, size_t n, size_t p);
/* GPT-2's byte table (bpe.h, step 2): the code point that stands for each byte. */
void fed__bpe_byte_chars(uint32_t ch[256]);
/* Writes symbol id's text into buf (FED_BPE_MAX_SYMBOL + 1 bytes), NUL-terminated, and
 * returns it. */
typedef const char *(*fed__bpe_symbol_fn)(const void *user, size_t id, char *buf);
/* The one-file JSON form (bpe.h) of n symbols, whose texts sym gives in id order, and m
 * merges, by rank the symbol ids first[r] and second[r]; "comma_keys": true when set, and
 * FED_ENOMEM naming what. The one writer of fed_bpe_to_json and the trainer. */
fed_err fed__bpe_write_json(size_t n, size_t m, const int32_t *first, const int32_t *second,
                            bool comma_keys, fed__bpe_symbol_fn sym, const void *user,
                            const char *what, char **json) FED_MUST_USE;

#endif
