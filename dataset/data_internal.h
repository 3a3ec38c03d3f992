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
struct fed_dataset;
struct fed_standardizer;

/* Byte sets (dataset_bytes.c). A new byte set of n rows of dim bytes copied from src
 * (labels zero, shape (dim), the loader's table b / 255.0f). */
fed_err fed__bytes_new(struct fed_dataset **out, const uint8_t *src, size_t n, size_t dim,
                       size_t num_classes) FED_MUST_USE;
/* Frees d's rows and table and drops its reference to the store. */
void fed__bytes_release(struct fed_dataset *d);
/* s (x NULL) takes rows idx[0..k) of the byte set d, its table and a reference to its
 * store. */
fed_err fed__bytes_share(struct fed_dataset *s, const struct fed_dataset *d, const size_t *idx,
                         size_t k) FED_MUST_USE;
/* fed_data_gather's features for a byte set. */
void fed__bytes_gather(const struct fed_dataset *d, const size_t *idx, size_t k, float *x);
/* fed_std_apply on a byte set: the table composed with s (or floats when the groups do
 * not nest). */
fed_err fed__bytes_std(const struct fed_standardizer *s, struct fed_dataset *d) FED_MUST_USE;

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
