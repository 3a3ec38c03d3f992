/* Language-model data: text files cut into fixed windows of token ids, for next-token
 * training (the model learns to predict each id of a window from the ones before it;
 * core/ derives the targets by shifting, so an example carries nothing but its ids).
 *
 * A file holds documents:
 *   JSON lines  (a name ending in .jsonl or .ndjson, also .gz, or a first non-blank byte
 *               '{') one object a line, {"text": "..."}, each one document; "label" and
 *               other keys are ignored; blank lines are skipped;
 *   plain text  anything else: the whole file is one document (a UTF-8 byte-order mark
 *               at the start is skipped).
 * Each document is tokenized in full (ids only: no special symbols, nothing between
 * documents; at most the tokenizers' 16 MiB a document) and cut into windows of T ids, stride T:
 * ids [0, T), [T, 2T), ...; the last partial window is padded with -1.0f up to T, and a window of
 * fewer than 2 ids (nothing to predict) is dropped. One example per window, label 0, one class; the
 * set's shape is (T). Documents never share a window.
 *
 * Errors are FED_EFORMAT with one line naming what:line: "kjv.txt:12: invalid UTF-8 at
 * byte 4410 of the file", "sotu.jsonl:3: \"text\" must be a string"; an empty file (no
 * text at all) and files that give no window are errors too. */
#ifndef FED_TEXT_LM_H
#define FED_TEXT_LM_H

#include "core/err.h"
#include "dataset/dataset.h"
#include "dataset/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>

/* What the loader saw, summed over its files. */
typedef struct fed_text_lm_stats {
    size_t files;     /* files read */
    size_t documents; /* documents (records, or whole files) */
    size_t tokens;    /* ids of all documents */
    size_t windows;   /* windows kept: the examples */
    size_t padded;    /* of those, partial windows padded with -1 */
    size_t dropped;   /* windows of a single id, dropped */
} fed_text_lm_stats;

/* Calls fn(user, doc, len, line) for every document of text[0..len) (see above; jsonl
 * picks the format, what names the input in messages), line being where it starts. A
 * non-zero return of fn stops the walk and is returned, prefixed with what:line. */
typedef fed_err (*fed_text_lm_doc_fn)(void *user, const char *doc, size_t len, size_t line);
fed_err fed_text_lm_documents(const char *text, size_t len, const char *what, bool jsonl,
                              fed_text_lm_doc_fn fn, void *user) FED_MUST_USE;
/* The same over the file at path (gzip allowed; JSON lines by fed_text_lm_is_jsonl),
 * messages naming the path. */
fed_err fed_text_lm_read_documents(const char *path, fed_text_lm_doc_fn fn,
                                   void *user) FED_MUST_USE;
/* Whether a file called name whose bytes start with text[0..len) is JSON lines. */
bool fed_text_lm_is_jsonl(const char *name, const char *text, size_t len);

/* The windows of text[0..len) (named what), tokenized with tok, T in [2,
 * FED_TEXT_MAX_LEN]. stats may be NULL. */
fed_err fed_data_parse_text_lm(fed_dataset **out, const char *text, size_t len, const char *what,
                               const fed_tokenizer *tok, size_t T,
                               fed_text_lm_stats *stats) FED_MUST_USE;
/* The windows of the files paths[0..n) (gzip allowed), in order, in one data set. */
fed_err fed_data_load_text_lm(fed_dataset **out, const char *const *paths, size_t n,
                              const fed_tokenizer *tok, size_t T,
                              fed_text_lm_stats *stats) FED_MUST_USE;

#endif
