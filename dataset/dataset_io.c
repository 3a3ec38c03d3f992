/* Data files: reading a whole file, gzip inflation from memory (never trusting the sizes
 * a gzip stream claims: the buffer grows and stops at FED_DATA_MAX_INFLATE), the IDX
 * format of MNIST, fed_data_load, which picks the parser by content, and the strict
 * JSON reading the tokenizer and the text loader share. The only file of fedtune that
 * includes zlib.h for data. CSV text parsing lives in dataset_csv.c. */
#include "core/alloc.h"
#include "core/json.h"
#include "dataset/data_internal.h"
#include "dataset/dataset.h"

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* Decompressed data larger than this is refused: a data set, not a gzip bomb. */
#define FED_DATA_MAX_INFLATE ((size_t)4 << 30)

/* ---- whole files and gzip -------------------------------------------------------------- */

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
    (void)opaque;
    return fed_mallocarray(items, size);
}

static void z_free(voidpf opaque, voidpf p) {
    (void)opaque;
    fed_free(p);
}

static bool is_gzip(const unsigned char *b, size_t n) {
    return n >= 2 && b[0] == 0x1f && b[1] == 0x8b;
}

static fed_err gunzip(const unsigned char *src, size_t n, const char *what, unsigned char **out,
                      size_t *outn);

fed_err fed_data_gunzip(const void *src, size_t n, const char *what, unsigned char **out,
                        size_t *outn) {
    if (!is_gzip(src, n)) {
        *out = NULL;
        *outn = 0;
        return fed_errorf(FED_EFORMAT, "%s: not gzip data", what);
    }
    return gunzip(src, n, what, out, outn);
}

/* Inflates the gzip data src[0..n) (one or more members) into a new buffer *out of *outn
 * bytes (plus a NUL byte after them, not counted). */
static fed_err gunzip(const unsigned char *src, size_t n, const char *what, unsigned char **out,
                      size_t *outn) {
    *out = NULL;
    *outn = 0;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    zs.zalloc = z_alloc;
    zs.zfree = z_free;
    int r = inflateInit2(&zs, 16 + MAX_WBITS); /* gzip wrapper only */
    if (r != Z_OK) return fed_errorf(FED_ENOMEM, "%s: out of memory starting to inflate", what);
    fed_err err = FED_OK;
    size_t cap = n < 1024 ? 4096 : (n > FED_DATA_MAX_INFLATE / 4 ? FED_DATA_MAX_INFLATE : n * 4);
    size_t in = 0, got = 0;
    unsigned char *buf = fed_malloc(cap + 1);
    if (!buf) {
        err = FED_ENOMEM;
        goto done;
    }
    for (;;) {
        if (got == cap) {
            if (cap == FED_DATA_MAX_INFLATE) {
                err = fed_errorf(FED_ERANGE,
                                 "%s: decompresses to more than %zu MiB; refusing (gzip bomb?)",
                                 what, FED_DATA_MAX_INFLATE >> 20);
                goto done;
            }
            size_t nc = cap > FED_DATA_MAX_INFLATE / 2 ? FED_DATA_MAX_INFLATE : cap * 2;
            unsigned char *nb = fed_realloc(buf, nc + 1);
            if (!nb) {
                err = FED_ENOMEM;
                goto done;
            }
            buf = nb;
            cap = nc;
        }
        size_t ain = n - in < UINT_MAX ? n - in : UINT_MAX;
        size_t aout = cap - got < UINT_MAX ? cap - got : UINT_MAX;
        zs.next_in = (Bytef *)(src + in); /* zlib's API is not const; it only reads */
        zs.avail_in = (uInt)ain;
        zs.next_out = buf + got;
        zs.avail_out = (uInt)aout;
        r = inflate(&zs, Z_NO_FLUSH);
        in += ain - zs.avail_in;
        got += aout - zs.avail_out;
        if (r == Z_STREAM_END) {
            if (in == n) break;
            if (!is_gzip(src + in, n - in)) {
                err = fed_errorf(FED_EFORMAT, "%s: %zu bytes of garbage after the gzip data", what,
                                 n - in);
                goto done;
            }
            if (inflateReset(&zs) != Z_OK) {
                err = fed_errorf(FED_EFORMAT, "%s: corrupt gzip data", what);
                goto done;
            }
        } else if (r == Z_MEM_ERROR) {
            err = fed_errorf(FED_ENOMEM, "%s: out of memory inflating", what);
            goto done;
        } else if (r == Z_OK || r == Z_BUF_ERROR) {
            if (zs.avail_out == 0) continue; /* grow */
            if (in == n) {
                err = fed_errorf(FED_EFORMAT, "%s: truncated gzip data", what);
                goto done;
            }
        } else {
            err = fed_errorf(FED_EFORMAT, "%s: corrupt gzip data (%s)", what,
                             zs.msg ? zs.msg : "bad stream");
            goto done;
        }
    }
    buf[got] = '\0';
    *out = buf;
    *outn = got;
    buf = NULL;
done:
    inflateEnd(&zs);
    fed_free(buf);
    return err;
}

fed_err fed__data_read_file(const char *path, unsigned char **out, size_t *outn) {
    *out = NULL;
    *outn = 0;
    fed_err err = FED_OK;
    unsigned char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return fed_errorf(FED_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        err = fed_errorf(FED_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        err = fed_errorf(FED_EIO, "%s: is a directory", path);
        goto done;
    }
    size_t cap = S_ISREG(st.st_mode) && st.st_size > 0 ? (size_t)st.st_size + 1 : 65536, n = 0;
    if (!(buf = fed_malloc(cap))) {
        err = FED_ENOMEM;
        goto done;
    }
    for (;;) {
        if (n == cap) {
            size_t nc = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
            unsigned char *nb = nc > cap ? fed_realloc(buf, nc) : NULL;
            if (!nb) {
                err = FED_ENOMEM;
                goto done;
            }
            buf = nb;
            cap = nc;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    if (ferror(f)) {
        err = fed_errorf(FED_EIO, "%s: read error: %s", path, strerror(errno));
        goto done;
    }
    buf[n] = '\0'; /* n < cap: the last read found room and returned nothing */
    if (is_gzip(buf, n)) {
        unsigned char *raw = NULL;
        size_t rn = 0;
        if ((err = gunzip(buf, n, path, &raw, &rn))) goto done;
        fed_free(buf);
        buf = raw;
        n = rn;
    }
    *out = buf;
    *outn = n;
    buf = NULL;
done:
    fed_free(buf);
    fclose(f);
    return err;
}

/* ---- IDX ------------------------------------------------------------------------------ */

typedef struct idx {
    const unsigned char *data; /* the elements */
    int rank;                  /* dimensions */
    size_t dims[3];            /* sizes, outermost first */
} idx;

static const char *idx_type_name(unsigned t) {
    switch (t) {
    case 0x09:
        return "signed byte";
    case 0x0B:
        return "short";
    case 0x0C:
        return "int";
    case 0x0D:
        return "float";
    case 0x0E:
        return "double";
    default:
        return NULL;
    }
}

/* Checks the header of an IDX buffer of rank lo..hi against its actual length. */
static fed_err idx_parse(const unsigned char *b, size_t n, const char *what, int lo, int hi,
                         idx *out) {
    if (n < 4) return fed_errorf(FED_EFORMAT, "%s: %zu bytes; too short for an IDX file", what, n);
    if (b[0] != 0 || b[1] != 0)
        return fed_errorf(FED_EFORMAT, "%s: not an IDX file (no 00 00 magic)", what);
    if (b[2] != 0x08) {
        const char *tn = idx_type_name(b[2]);
        if (tn)
            return fed_errorf(FED_EUNSUPPORTED,
                              "%s: IDX element type 0x%02X (%s) is not supported; only unsigned "
                              "bytes (0x08)",
                              what, b[2], tn);
        return fed_errorf(FED_EFORMAT, "%s: unknown IDX element type 0x%02X", what, b[2]);
    }
    int rank = b[3];
    if (rank < lo || rank > hi) {
        if (lo == 1)
            return fed_errorf(FED_EFORMAT, "%s: IDX labels have rank 1, this file has rank %d",
                              what, rank);
        return fed_errorf(FED_EFORMAT,
                          "%s: IDX images have rank 3 (n, rows, cols) or 2 (n, features), this "
                          "file has rank %d",
                          what, rank);
    }
    size_t hdr = 4 + 4 * (size_t)rank;
    if (n < hdr) return fed_errorf(FED_EFORMAT, "%s: truncated IDX header", what);
    size_t numel = 1;
    for (int i = 0; i < rank; i++) {
        const unsigned char *p = b + 4 + 4 * i;
        size_t d = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | (size_t)p[3];
        if (d == 0) return fed_errorf(FED_EFORMAT, "%s: IDX dimension %d is 0", what, i);
        out->dims[i] = d;
        if (!fed_mul_ok(numel, d, &numel))
            return fed_errorf(FED_EFORMAT, "%s: IDX dimensions overflow", what);
    }
    size_t body = n - hdr;
    if (numel > body)
        return fed_errorf(FED_EFORMAT,
                          "%s: truncated: the IDX header promises %zu bytes of data, the file has "
                          "%zu",
                          what, numel, body);
    if (numel < body)
        return fed_errorf(FED_EFORMAT, "%s: %zu trailing bytes after the IDX data", what,
                          body - numel);
    out->data = b + hdr;
    out->rank = rank;
    return FED_OK;
}

/* Images and labels, each possibly gzip, named separately in messages; a byte set when
 * bytes. */
static fed_err parse_idx_named(fed_dataset **out, const unsigned char *ib, size_t ilen,
                               const char *iwhat, const unsigned char *lb, size_t llen,
                               const char *lwhat, bool bytes) {
    *out = NULL;
    unsigned char *iraw = NULL, *lraw = NULL;
    fed_dataset *d = NULL;
    fed_err err = FED_OK;
    if (is_gzip(ib, ilen)) {
        if ((err = gunzip(ib, ilen, iwhat, &iraw, &ilen))) goto done;
        ib = iraw;
    }
    if (is_gzip(lb, llen)) {
        if ((err = gunzip(lb, llen, lwhat, &lraw, &llen))) goto done;
        lb = lraw;
    }
    idx im = {NULL, 0, {0, 0, 0}}, lab = im;
    if ((err = idx_parse(ib, ilen, iwhat, 2, 3, &im))) goto done;
    if ((err = idx_parse(lb, llen, lwhat, 1, 1, &lab))) goto done;
    size_t n = im.dims[0], dim = im.rank == 3 ? im.dims[1] * im.dims[2] : im.dims[1];
    if (lab.dims[0] != n) {
        err = fed_errorf(FED_EFORMAT, "%s: %zu labels for the %zu images of %s", lwhat, lab.dims[0],
                         n, iwhat);
        goto done;
    }
    unsigned top = 0;
    for (size_t i = 0; i < n; i++)
        if (lab.data[i] > top) top = lab.data[i];
    if ((err = bytes ? fed__bytes_new(&d, im.data, n, dim, (size_t)top + 1)
                     : fed_data_new(&d, n, dim, (size_t)top + 1)))
        goto done;
    if (im.rank == 3) {
        d->shape.ndim = 3;
        d->shape.d[0] = 1;
        d->shape.d[1] = im.dims[1];
        d->shape.d[2] = im.dims[2];
    }
    if (!bytes) /* the expression of the byte sets' table (dataset_bytes.c) */
        for (size_t i = 0; i < n * dim; i++) d->x[i] = (float)im.data[i] / 255.0f;
    for (size_t i = 0; i < n; i++) d->y[i] = lab.data[i];
    d->stats.rows_read = n;
    *out = d;
done:
    fed_free(iraw);
    fed_free(lraw);
    return err;
}

static fed_err parse_idx(fed_dataset **out, const void *images, size_t ilen, const void *labels,
                         size_t llen, const char *what, bool bytes) {
    *out = NULL;
    if (!what) what = "input";
    if ((!images && ilen) || (!labels && llen))
        return fed_errorf(FED_EINVAL, "%s: no images or labels", what);
    char lwhat[512];
    snprintf(lwhat, sizeof lwhat, "%s (labels)", what);
    return parse_idx_named(out, images, ilen, what, labels, llen, lwhat, bytes);
}

fed_err fed_data_parse_idx(fed_dataset **out, const void *images, size_t ilen, const void *labels,
                           size_t llen, const char *what) {
    return parse_idx(out, images, ilen, labels, llen, what, false);
}

fed_err fed_data_parse_idx_bytes(fed_dataset **out, const void *images, size_t ilen,
                                 const void *labels, size_t llen, const char *what) {
    return parse_idx(out, images, ilen, labels, llen, what, true);
}

fed_err fed_data_load_idx(fed_dataset **out, const char *images, const char *labels) {
    *out = NULL;
    unsigned char *ib = NULL, *lb = NULL;
    size_t il = 0, ll = 0;
    fed_err err = fed__data_read_file(images, &ib, &il);
    if (!err) err = fed__data_read_file(labels, &lb, &ll);
    if (!err) err = parse_idx_named(out, ib, il, images, lb, ll, labels, false);
    fed_free(ib);
    fed_free(lb);
    return err;
}

/* The labels file next to an images file: "images-idx3" -> "labels-idx1" in the name
 * (also "images.idx3" -> "labels.idx1", as some mirrors spell it). */
static fed_err labels_path(const char *images, char **out) {
    *out = NULL;
    const char *slash = strrchr(images, '/');
    const char *base = slash ? slash + 1 : images;
    const char *hit = strstr(base, "images-idx3");
    const char *rep = "labels-idx1";
    if (!hit) {
        hit = strstr(base, "images.idx3");
        rep = "labels.idx1";
    }
    if (!hit)
        return fed_errorf(FED_EINVAL,
                          "%s: cannot name the IDX labels file (no \"images-idx3\" in the file "
                          "name); give it explicitly",
                          images);
    size_t len = strlen(images) + 1;
    char *p = fed_malloc(len);
    if (!p) return FED_ENOMEM;
    snprintf(p, len, "%.*s%s%s", (int)(hit - images), images, rep, hit + strlen(rep));
    *out = p;
    return FED_OK;
}

fed_err fed_data_load(fed_dataset **out, const char *path, const fed_csv_options *o) {
    *out = NULL;
    fed_csv_options def;
    memset(&def, 0, sizeof def);
    if (!o) o = &def;
    unsigned char *buf = NULL, *lb = NULL;
    char *lpath = NULL;
    size_t n = 0, ll = 0;
    fed_err err = fed__data_read_file(path, &buf, &n);
    if (err) return err;
    bool is_idx = o->format == FED_FORMAT_IDX ||
                  (o->format == FED_FORMAT_AUTO && n >= 4 && buf[0] == 0 && buf[1] == 0);
    if (is_idx) {
        if (!(err = labels_path(path, &lpath)) && !(err = fed__data_read_file(lpath, &lb, &ll)))
            err = parse_idx_named(out, buf, n, path, lb, ll, lpath, o->keep_bytes);
    } else {
        err = fed_data_parse_csv(out, (const char *)buf, n, path, o);
    }
    fed_free(buf);
    fed_free(lb);
    fed_free(lpath);
    return err;
}

/* ---- JSON ------------------------------------------------------------------------------ */

size_t fed__data_json_nul(const char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && n - i >= 6 && memcmp(s + i + 2, "0000", 4) == 0) return i;
        i++; /* the escaped character */
    }
    return n;
}

cJSON *fed__data_json_parse(const char *s, size_t n) {
    fed_json_hooks();
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(s, n, &end, false);
    if (!v) return NULL;
    for (size_t i = (size_t)(end - s); i < n; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
            cJSON_Delete(v);
            return NULL;
        }
    }
    return v;
}
