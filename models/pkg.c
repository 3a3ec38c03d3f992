/* npm packages as file sets (pkg.h): a tarball inflated through dataset/'s gzip reader
 * and listed by models/tar.c, or a folder whose files are read on first use and kept.
 * The one file of models/ that touches the file system. */
#include "models/pkg.h"
#include "core/alloc.h"
#include "dataset/dataset.h"
#include "models/tar.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* A folder's file, read once. */
typedef struct pkg_file {
    struct pkg_file *next; /* the next file read */
    char *name;            /* package-relative name */
    uint8_t *data;         /* (len) bytes, owned */
    size_t len;            /* bytes */
} pkg_file;

struct fed_pkg {
    char *path; /* as given */
    /* a tarball */
    uint8_t *raw;   /* the file's bytes, owned (NULL for a folder) */
    size_t raw_len; /* bytes at raw */
    uint8_t *tar;   /* inflated archive, owned */
    fed_tar *index; /* its regular files */
    /* a folder */
    char *root;      /* the package root: path or path/.. */
    bool at_dist;    /* path is the dist/ folder itself */
    pkg_file *files; /* files read so far */
};

#define TAR_ROOT "package/"

/* Reads a whole regular file (at most FED_PKG_MAX_FILE bytes) into *out (+1 NUL). */
static fed_err read_whole(const char *path, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return fed_errorf(FED_ENOTFOUND, "%s: no such file", path);
        return fed_errorf(FED_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    fed_err err = FED_OK;
    uint8_t *buf = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        err = fed_errorf(FED_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        err = fed_errorf(FED_EIO, "%s: not a regular file", path);
        goto done;
    }
    if ((uint64_t)st.st_size > FED_PKG_MAX_FILE) {
        err =
            fed_errorf(FED_ERANGE, "%s: %lld bytes, more than the %zu MiB a package file may have",
                       path, (long long)st.st_size, FED_PKG_MAX_FILE >> 20);
        goto done;
    }
    size_t n = (size_t)st.st_size;
    if (!(buf = fed_malloc(n + 1))) {
        err = FED_ENOMEM;
        goto done;
    }
    size_t got = fread(buf, 1, n, f);
    if (got != n || ferror(f)) {
        err = fed_errorf(FED_EIO, "%s: read %zu of %zu bytes: %s", path, got, n,
                         ferror(f) ? strerror(errno) : "the file shrank");
        goto done;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    buf = NULL;
done:
    fed_free(buf);
    fclose(f);
    return err;
}

/* path + "/" + a + b, or NULL. */
static char *join(const char *path, const char *a, const char *b) {
    size_t n = strlen(path) + strlen(a) + strlen(b) + 2;
    char *s = fed_malloc(n);
    if (s) snprintf(s, n, "%s/%s%s", path, a, b);
    return s;
}

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* p->raw holds the tarball: inflate and list it. */
static fed_err index_tarball(fed_pkg *p) {
    size_t n = 0;
    fed_err err;
    if (p->raw_len >= 2 && p->raw[0] == 0x1f && p->raw[1] == 0x8b) {
        if ((err = fed_data_gunzip(p->raw, p->raw_len, p->path, &p->tar, &n))) return err;
        return fed_tar_parse(&p->index, p->tar, n, p->path);
    }
    return fed_tar_parse(&p->index, p->raw, p->raw_len, p->path);
}

static fed_err open_tarball(fed_pkg *p) {
    fed_err err = read_whole(p->path, &p->raw, &p->raw_len);
    return err ? err : index_tarball(p);
}

static fed_err open_folder(fed_pkg *p) {
    char *dist_model = join(p->path, "", "model.json");
    char *root_model = join(p->path, "dist/", "model.json");
    fed_err err = FED_OK;
    if (!dist_model || !root_model) {
        err = FED_ENOMEM;
    } else if (is_file(dist_model)) {
        p->at_dist = true;
        p->root = join(p->path, "..", "");
        if (!p->root) err = FED_ENOMEM;
    } else if (is_file(root_model)) {
        p->root = fed_strdup(p->path);
        if (!p->root) err = FED_ENOMEM;
    } else {
        err = fed_errorf(FED_ENOTFOUND,
                         "%s: no model.json in it nor in its dist/ folder (give the npm tarball, "
                         "the package folder or its dist/ folder)",
                         p->path);
    }
    fed_free(dist_model);
    fed_free(root_model);
    return err;
}

fed_err fed_pkg_open(fed_pkg **out, const char *path) {
    *out = NULL;
    fed_pkg *p = fed_calloc(1, sizeof *p);
    if (!p) return FED_ENOMEM;
    fed_err err = FED_OK;
    struct stat st;
    if (!(p->path = fed_strdup(path))) {
        err = FED_ENOMEM;
    } else if (stat(path, &st) != 0) {
        err = fed_errorf(FED_EIO, "%s: %s", path, strerror(errno));
    } else if (S_ISDIR(st.st_mode)) {
        err = open_folder(p);
    } else {
        err = open_tarball(p);
    }
    if (err) {
        fed_pkg_destroy(&p);
        return err;
    }
    *out = p;
    return FED_OK;
}

fed_err fed_pkg_from_memory(fed_pkg **out, const void *buf, size_t len, const char *what) {
    *out = NULL;
    fed_pkg *p = fed_calloc(1, sizeof *p);
    if (!p) return FED_ENOMEM;
    fed_err err = FED_ENOMEM;
    if ((p->path = fed_strdup(what)) && (p->raw = fed_malloc(len ? len : 1))) {
        if (len) memcpy(p->raw, buf, len);
        p->raw_len = len;
        err = index_tarball(p);
    }
    if (err) {
        fed_pkg_destroy(&p);
        return err;
    }
    *out = p;
    return FED_OK;
}

void fed_pkg_destroy(fed_pkg **p) {
    if (!p || !*p) return;
    fed_pkg *k = *p;
    for (pkg_file *f = k->files, *next; f; f = next) {
        next = f->next;
        fed_free(f->name);
        fed_free(f->data);
        fed_free(f);
    }
    fed_tar_destroy(&k->index);
    fed_free(k->tar);
    fed_free(k->raw);
    fed_free(k->root);
    fed_free(k->path);
    fed_free(k);
    *p = NULL;
}

static bool name_ok(const char *name) {
    if (!name[0] || name[0] == '/') return false;
    for (const char *s = name; *s;) {
        const char *slash = strchr(s, '/');
        size_t k = slash ? (size_t)(slash - s) : strlen(s);
        if (k == 0 || (k == 1 && s[0] == '.') || (k == 2 && s[0] == '.' && s[1] == '.'))
            return false;
        s += k + (slash ? 1 : 0);
    }
    return true;
}

const char *fed_pkg_file_path(const fed_pkg *p, const char *name, char *buf, size_t cap) {
    if (p->index)
        snprintf(buf, cap, "%s:" TAR_ROOT "%s", p->path, name);
    else if (p->at_dist && strncmp(name, "dist/", 5) == 0)
        snprintf(buf, cap, "%s/%s", p->path, name + 5);
    else
        snprintf(buf, cap, "%s/%s", p->root, name);
    return buf;
}

fed_err fed_pkg_read(fed_pkg *p, const char *name, const uint8_t **data, size_t *len) {
    *data = NULL;
    *len = 0;
    if (!name_ok(name))
        return fed_errorf(FED_EINVAL, "%s: \"%s\" is not a file name inside the package", p->path,
                          name);
    if (p->index) {
        char full[FED_TAR_NAME_MAX + 16];
        snprintf(full, sizeof full, TAR_ROOT "%s", name);
        const fed_tar_entry *e = fed_tar_find(p->index, full);
        if (!e) return fed_errorf(FED_ENOTFOUND, "%s: no %s in the tarball", p->path, full);
        *data = e->data;
        *len = e->size;
        return FED_OK;
    }
    for (pkg_file *f = p->files; f; f = f->next)
        if (strcmp(f->name, name) == 0) {
            *data = f->data;
            *len = f->len;
            return FED_OK;
        }
    bool in_dist = p->at_dist && strncmp(name, "dist/", 5) == 0;
    char *path = in_dist ? join(p->path, "", name + 5) : join(p->root, "", name);
    pkg_file *f = fed_calloc(1, sizeof *f);
    fed_err err = FED_ENOMEM;
    if (!path || !f || !(f->name = fed_strdup(name))) goto fail;
    if ((err = read_whole(path, &f->data, &f->len))) goto fail;
    fed_free(path);
    f->next = p->files;
    p->files = f;
    *data = f->data;
    *len = f->len;
    return FED_OK;
fail:
    if (f) fed_free(f->name);
    fed_free(f);
    fed_free(path);
    return err;
}

const char *fed_pkg_path(const fed_pkg *p) {
    return p->path;
}

const uint8_t *fed_pkg_tarball(const fed_pkg *p, size_t *len) {
    *len = p->index ? p->raw_len : 0;
    return p->index ? p->raw : NULL;
}
