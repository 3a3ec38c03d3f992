/* INI files, read line by line with no length limit: the one reader behind `--config
 * FILE` (cli/options.c) and libfedtune's fedtune_config_load (api/config.c). Debian's
 * inih, used before, cut lines at 200 bytes, so the committed sample configs, whose help
 * comments are longer, could not be read back.
 *
 * A file is lines of:
 *   - nothing, or only spaces and tabs;
 *   - a comment: "#" or ";" first (after spaces);
 *   - "[section]";
 *   - "key = value": spaces around both are trimmed, and " ;" or "\t;" after the value
 *     starts a comment (as in inih); the value may be empty.
 * A UTF-8 byte-order mark before the first line and "\r\n" line ends are accepted. A NUL
 * byte, a "[" line without its "]" (or with text after it) and a line without "=" or
 * with an empty key are errors naming the file and the line. */
#ifndef FED_CORE_INI_H
#define FED_CORE_INI_H

#include "core/err.h"

#include <stddef.h>
#include <stdio.h>

/* Called for every "key = value" line with the section it is in ("" before any) and the
 * 1-based line number, and for every "[section]" line with that section, key == NULL and
 * value == NULL (so that a section the reader refuses is named at its own line). The
 * strings live until the callback returns. Anything but FED_OK stops the reading and is
 * returned (with the callback's own fed_errorf detail). */
typedef fed_err (*fed_ini_fn)(void *user, const char *section, const char *key, const char *value,
                              size_t line);

/* Reads f to its end; path names it in errors ("PATH:LINE: not a \"key = value\" line").
 * FED_EFORMAT for a NUL byte, FED_EINVAL for a malformed line, FED_EIO for a read error,
 * FED_ENOMEM, or the callback's error. */
fed_err fed_ini_read(FILE *f, const char *path, fed_ini_fn fn, void *user) FED_MUST_USE;

#endif
