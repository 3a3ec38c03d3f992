/* The strict ustar reader (tar.h): one pass over the 512-byte blocks, checking each
 * header before anything in it is used, then a sorted index of the names for lookups
 * and duplicates. Nothing here inflates (gzip is dataset/'s) or writes files. */
#include "models/tar.h"
#include "core/alloc.h"
#include "core/utf8.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 512

struct fed_tar {
    size_t n;                     /* regular files */
    fed_tar_entry *e;             /* (n) in archive order */
    const fed_tar_entry **sorted; /* (n) by name, for fed_tar_find */
};

static bool all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

/* An octal field: optional leading spaces, at least one digit, then NUL or space
 * padding to the end of the field. */
static bool octal(const uint8_t *f, size_t n, uint64_t *out) {
    size_t i = 0;
    uint64_t v = 0;
    while (i < n && f[i] == ' ') i++;
    size_t start = i;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
        if (v >> 60) return false;
        v = v * 8 + (uint64_t)(f[i] - '0');
    }
    if (i == start) return false;
    for (; i < n; i++)
        if (f[i] != '\0' && f[i] != ' ') return false;
    *out = v;
    return true;
}

/* Copies the NUL-terminated (or full-width) field f[0..n) to dst; returns its length. */
static size_t field(char *dst, const uint8_t *f, size_t n) {
    size_t len = 0;
    while (len < n && f[len]) len++;
    memcpy(dst, f, len);
    dst[len] = '\0';
    return len;
}

/* Checks a path; dir allows (and drops) one trailing "/". NULL when fine, else why. */
static const char *bad_name(char *name, bool dir) {
    size_t len = strlen(name);
    if (dir && len > 1 && name[len - 1] == '/') name[--len] = '\0';
    if (len == 0) return "an empty name";
    if (fed_utf8_bad_at(name, len) != len) return "a name that is not UTF-8";
    if (name[0] == '/') return "an absolute name";
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return "a control character in the name";
    const char *p = name;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t k = slash ? (size_t)(slash - p) : strlen(p);
        if (k == 0) return "an empty path component";
        if ((k == 1 && p[0] == '.') || (k == 2 && p[0] == '.' && p[1] == '.'))
            return "a \".\" or \"..\" path component";
        if (!slash) return NULL;
        p = slash + 1;
    }
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp((*(const fed_tar_entry *const *)a)->name,
                  (*(const fed_tar_entry *const *)b)->name);
}

static const char *type_name(uint8_t t) {
    switch (t) {
    case '1':
        return "a hard link";
    case '2':
        return "a symbolic link";
    case '3':
        return "a character device";
    case '4':
        return "a block device";
    case '6':
        return "a FIFO";
    case '7':
        return "a contiguous file";
    case 'x':
        return "a pax extended header";
    case 'g':
        return "a pax global header";
    case 'L':
        return "a GNU long name";
    case 'K':
        return "a GNU long link name";
    default:
        return "an unknown entry type";
    }
}

/* Reads the header at h (offset off): a regular file into *e (*is_file true), or a
 * directory (*is_file false). */
static fed_err header(const uint8_t *h, size_t off, size_t avail, const char *what,
                      fed_tar_entry *e, bool *is_file, size_t *blocks) {
    uint64_t sum = 0, want = 0;
    for (size_t i = 0; i < BLOCK; i++) sum += (i >= 148 && i < 156) ? ' ' : h[i];
    if (!octal(h + 148, 8, &want))
        return fed_errorf(FED_EFORMAT, "%s: header at byte %zu: the checksum field is not octal",
                          what, off);
    if (want != sum)
        return fed_errorf(FED_EFORMAT,
                          "%s: header at byte %zu: checksum %llu, the header sums to %llu "
                          "(corrupt, or not a tar archive)",
                          what, off, (unsigned long long)want, (unsigned long long)sum);
    bool posix = memcmp(h + 257,
                        "ustar\0"
                        "00",
                        8) == 0;
    bool gnu = memcmp(h + 257, "ustar  \0", 8) == 0;
    if (!posix && !gnu)
        return fed_errorf(FED_EFORMAT, "%s: header at byte %zu: no ustar magic", what, off);
    char name[FED_TAR_NAME_MAX];
    size_t plen = posix ? field(name, h + 345, 155) : 0;
    if (plen) name[plen++] = '/';
    field(name + plen, h, 100);
    uint8_t type = h[156];
    if (type != '0' && type != '\0' && type != '5')
        return fed_errorf(FED_EUNSUPPORTED, "%s: \"%s\" is %s (type '%c'); only regular files",
                          what, name, type_name(type), type >= 0x20 && type < 0x7f ? type : '?');
    if (h[124] & 0x80)
        return fed_errorf(FED_EUNSUPPORTED, "%s: \"%s\": base-256 sizes are not supported", what,
                          name);
    uint64_t size = 0;
    if (!octal(h + 124, 12, &size))
        return fed_errorf(FED_EFORMAT, "%s: \"%s\": the size field is not octal", what, name);
    const char *why = bad_name(name, type == '5');
    if (why) return fed_errorf(FED_EFORMAT, "%s: header at byte %zu: %s", what, off, why);
    size_t need = (size_t)((size + BLOCK - 1) / BLOCK);
    if (size > avail || need > avail / BLOCK)
        return fed_errorf(FED_EFORMAT,
                          "%s: \"%s\" holds %llu bytes but the archive ends %zu bytes after "
                          "its header (truncated)",
                          what, name, (unsigned long long)size, avail);
    if (type == '5' && size != 0)
        return fed_errorf(FED_EFORMAT, "%s: directory \"%s\" has a size (%llu)", what, name,
                          (unsigned long long)size);
    *is_file = type != '5';
    *blocks = need;
    memcpy(e->name, name, sizeof name);
    e->data = h + BLOCK;
    e->size = (size_t)size;
    return FED_OK;
}

fed_err fed_tar_parse(fed_tar **out, const void *buf, size_t len, const char *what) {
    *out = NULL;
    const uint8_t *b = buf;
    fed_tar *t = fed_calloc(1, sizeof *t);
    if (!t) return FED_ENOMEM;
    fed_err err = FED_OK;
    size_t cap = 0, off = 0;
    bool ended = false;
    while (off + BLOCK <= len) {
        const uint8_t *h = b + off;
        if (all_zero(h, BLOCK)) {
            if (off + 2 * BLOCK > len || !all_zero(h + BLOCK, BLOCK)) {
                err = fed_errorf(FED_EFORMAT,
                                 "%s: a zero block at byte %zu not followed by a second one "
                                 "(truncated or corrupt)",
                                 what, off);
                goto fail;
            }
            if (!all_zero(h + 2 * BLOCK, len - off - 2 * BLOCK)) {
                err = fed_errorf(FED_EFORMAT, "%s: data after the end of the archive (byte %zu)",
                                 what, off + 2 * BLOCK);
                goto fail;
            }
            ended = true;
            break;
        }
        if (t->n == cap) {
            size_t nc = cap ? 2 * cap : 16;
            fed_tar_entry *ne = fed_realloc(t->e, nc * sizeof *ne);
            if (!ne) {
                err = FED_ENOMEM;
                goto fail;
            }
            t->e = ne;
            cap = nc;
        }
        bool is_file = false;
        size_t blocks = 0;
        err = header(h, off, len - off - BLOCK, what, &t->e[t->n], &is_file, &blocks);
        if (err) goto fail;
        if (is_file) t->n++;
        off += BLOCK + blocks * BLOCK;
    }
    if (!ended) {
        err = fed_errorf(FED_EFORMAT,
                         "%s: no end-of-archive blocks after %zu bytes (truncated, or not a tar "
                         "archive)",
                         what, off);
        goto fail;
    }
    t->sorted = fed_calloc(t->n ? t->n : 1, sizeof *t->sorted);
    if (!t->sorted) {
        err = FED_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < t->n; i++) t->sorted[i] = &t->e[i];
    qsort(t->sorted, t->n, sizeof *t->sorted, cmp_entry);
    for (size_t i = 1; i < t->n; i++)
        if (strcmp(t->sorted[i - 1]->name, t->sorted[i]->name) == 0) {
            err = fed_errorf(FED_EFORMAT, "%s: \"%s\" is in the archive twice", what,
                             t->sorted[i]->name);
            goto fail;
        }
    *out = t;
    return FED_OK;
fail:
    fed_tar_destroy(&t);
    return err;
}

void fed_tar_destroy(fed_tar **t) {
    if (!t || !*t) return;
    fed_free((*t)->e);
    fed_free((*t)->sorted);
    fed_free(*t);
    *t = NULL;
}

size_t fed_tar_count(const fed_tar *t) {
    return t->n;
}

const fed_tar_entry *fed_tar_at(const fed_tar *t, size_t i) {
    return i < t->n ? &t->e[i] : NULL;
}

const fed_tar_entry *fed_tar_find(const fed_tar *t, const char *name) {
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(t->sorted[mid]->name, name);
        if (c == 0) return t->sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
