/* A strict reader of ustar archives in memory (POSIX.1-1988 "ustar\000" and the GNU
 * "ustar  \0" magic), for npm package tarballs once they are inflated. It lists the
 * regular files and their bytes; it extracts nothing to disk.
 *
 * What it accepts: 512-byte headers whose checksum verifies, names of at most 255 bytes
 * (prefix + "/" + name) that are valid UTF-8, relative, and free of "." and ".." parts,
 * sizes in octal that fit the archive, regular files (type '0' or NUL) and directories
 * (type '5', size 0, which carry no bytes and are skipped), each name once, and the end:
 * two zero blocks followed by nothing but zeros. Everything else is FED_EFORMAT naming
 * the archive, the entry's offset and what is wrong (a truncated archive, a bad
 * checksum, a size past the end, a name given twice), or FED_EUNSUPPORTED for entries
 * that are valid tar but not plain files: links, devices, FIFOs, pax and GNU extension
 * headers, base-256 sizes. */
#ifndef FED_MODELS_TAR_H
#define FED_MODELS_TAR_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

/* Longest entry name: the 155-byte prefix, a "/" and the 100-byte name, plus NUL. */
#define FED_TAR_NAME_MAX 257

/* One regular file of an archive. */
typedef struct fed_tar_entry {
    char name[FED_TAR_NAME_MAX]; /* "package/dist/model.json" */
    const uint8_t *data;         /* its bytes, inside the archive's buffer */
    size_t size;                 /* bytes at data */
} fed_tar_entry;

typedef struct fed_tar fed_tar;

/* Reads the archive buf[0..len); what names it in errors. The entries point into buf,
 * which the caller keeps alive and unchanged until fed_tar_destroy. */
fed_err fed_tar_parse(fed_tar **out, const void *buf, size_t len, const char *what) FED_MUST_USE;
/* NULL-safe; sets *t to NULL. */
void fed_tar_destroy(fed_tar **t);

/* Regular files in archive order. */
size_t fed_tar_count(const fed_tar *t);
const fed_tar_entry *fed_tar_at(const fed_tar *t, size_t i);
/* The regular file called name, or NULL. */
const fed_tar_entry *fed_tar_find(const fed_tar *t, const char *name);

#endif
