/* Text classification data: texts and labels from CSV or JSON lines, turned into token
 * ids by a fed_tokenizer and held in a fed_dataset like any other data. */
#ifndef FED_TEXT_H
#define FED_TEXT_H

#include "core/err.h"

#include <stddef.h>

/* Decodes s[0..n), which must hold one JSON string (spaces around it allowed), into a
 * new fed_malloc'd buffer *out of *len bytes plus a NUL byte. The escape \u0000 is
 * refused (FED_EFORMAT "\u0000 is not supported"): C strings end there. The bytes are
 * not checked for UTF-8 (the tokenizer does that). */
fed_err fed_text_json_string(char **out, size_t *len, const char *s, size_t n) FED_MUST_USE;

#endif
