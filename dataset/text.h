/* Text classification data: texts and labels from a CSV file or JSON lines, turned into
 * token ids by a fed_tokenizer and held in a fed_dataset like any other data.
 *
 * An example is T floats (T = the model's sequence length, 128 for USE-lite): the text's
 * ids, then -1.0f up to T. A text of more than T ids keeps its first T (as USE-lite's
 * reference clips at 128); nothing else travels with it: the model derives its mask and
 * lengths from the -1 padding. The set's shape is (T), its classes as in dataset.h.
 *
 * Formats:
 *   CSV         a header row names the columns; one must be "text", one "label" (exact
 *               names, any order, other columns ignored). Fields are RFC 4180: a field
 *               in double quotes may hold commas, line breaks and "" for a quote; after
 *               its closing quote only the delimiter or the end of the line may follow.
 *               Unquoted fields are kept as they are, spaces included. Records end in
 *               "\n" or "\r\n"; blank lines are skipped. Every record has the header's
 *               number of fields.
 *   JSON lines  one object a line, {"text": "...", "label": ...}, other keys ignored;
 *               blank lines are skipped. The escape \u0000 is refused.
 * A UTF-8 byte-order mark at the start is skipped. The whole file must be valid UTF-8.
 *
 * Labels: a JSON label is a string or an integer >= 0 (written as its decimal text); a
 * CSV label is the cell's text. Then, as for CSV data (dataset.h): when every label is a
 * non-negative integer ("3", 3) the ids are those integers and num_classes is the
 * largest + 1; otherwise labels are names and map to ids in sorted (strcmp) order, kept
 * in class_names. Known classes (o->classes: a model's names, --classes) fix the ids
 * instead; a label that is not among them is an error.
 *
 * Errors are FED_EFORMAT (FED_ERANGE for sizes over a limit) with one line naming
 * what:line, the line where the record starts: "train.csv:17: empty text",
 * "train.jsonl:3: \"label\" must be a string or an integer >= 0". An empty text (nothing
 * but ASCII white space) is an error unless o->drop_empty drops it, counted. */
#ifndef FED_TEXT_H
#define FED_TEXT_H

#include "core/err.h"
#include "dataset/dataset.h"
#include "dataset/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>

/* Longest sequence length T. */
#define FED_TEXT_MAX_LEN ((size_t)1 << 20)
/* Buckets of the length histogram: bucket k counts texts of (4 << k, 8 << k] ids
 * (bucket 0: 1 to 8), the last one everything above 512. */
#define FED_TEXT_HIST_BUCKETS 8

typedef enum fed_text_format {
    FED_TEXT_AUTO = 0,  /* JSON lines for names ending in .jsonl or .ndjson (also .gz) or a
                           first non-blank byte '{'; CSV otherwise */
    FED_TEXT_CSV = 1,   /* see above */
    FED_TEXT_JSONL = 2, /* see above */
} fed_text_format;

typedef struct fed_text_options {
    fed_text_format format;     /* AUTO by default */
    bool drop_empty;            /* drop empty texts (counted) instead of failing */
    const char *const *classes; /* known class names in id order, or NULL */
    size_t num_classes;         /* entries of classes */
} fed_text_options;

/* What the loader saw. Token counts are before truncation. */
typedef struct fed_text_stats {
    size_t rows;                        /* data rows read (header and blank lines excluded) */
    size_t dropped_empty;               /* rows dropped for an empty text (drop_empty) */
    size_t examples;                    /* rows kept */
    size_t tokens;                      /* ids of the kept texts, all of them */
    size_t unknown;                     /* of those, the unknown id */
    size_t truncated;                   /* texts of more than T ids, cut to T */
    size_t longest;                     /* ids of the longest text */
    size_t hist[FED_TEXT_HIST_BUCKETS]; /* texts by their number of ids */
} fed_text_stats;

/* Bucket of the length histogram for a text of n >= 1 ids. */
size_t fed_text_hist_bucket(size_t n);

/* Loads a text data set from path (gzip allowed) with tokenizer tok and sequence length
 * T (1..FED_TEXT_MAX_LEN). o may be NULL (defaults), stats too. Errors name the path. */
fed_err fed_data_load_text(fed_dataset **out, const char *path, const fed_tokenizer *tok, size_t T,
                           const fed_text_options *o, fed_text_stats *stats) FED_MUST_USE;
/* The same for text already in memory (need not be NUL-terminated); what names it in
 * errors and, for FED_TEXT_AUTO, by its extension. */
fed_err fed_data_parse_text(fed_dataset **out, const char *text, size_t len, const char *what,
                            const fed_tokenizer *tok, size_t T, const fed_text_options *o,
                            fed_text_stats *stats) FED_MUST_USE;

/* Whether path holds text data: a name ending in .jsonl or .ndjson (also .gz), a first
 * byte '{' (after white space), or a first non-blank line that is a CSV header with a
 * "text" column. Reads at most 64 KiB (a gzip file is inflated whole). A file that cannot
 * be read is no text (whoever loads it next reports why); only FED_ENOMEM fails. */
fed_err fed_text_sniff(const char *path, bool *is_text) FED_MUST_USE;

/* Decodes s[0..n), which must hold one JSON string (spaces around it allowed), into a
 * new fed_malloc'd buffer *out of *len bytes plus a NUL byte. The escape \u0000 is
 * refused (FED_EFORMAT "\u0000 is not supported"): C strings end there. The bytes are
 * not checked for UTF-8 (the tokenizer does that). */
fed_err fed_text_json_string(char **out, size_t *len, const char *s, size_t n) FED_MUST_USE;

#endif
