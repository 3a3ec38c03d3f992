/* safetensors files: metadata lists, the validating reader, F16/BF16 decoding, the
 * header writer with its atomic file output, and the mapping of files onto a model's
 * tensor table by name. Besides arch.c the only file of core/ that knows cJSON (for
 * reading; headers are written by hand so every byte is under our control). What the
 * architecture means and how parameters are laid out is arch.c's and model.c's job. */
#include "core/safetensors.h"
#include "core/alloc.h"
#include "core/endian.h"
#include "core/json.h"
#include "core/utf8.h"

#include <cJSON.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Integers from the header must be below 2^53: doubles hold them exactly. */
#define JSON_INT_LIMIT 9007199254740992.0

/* ---- dtypes and number decoding ------------------------------------------------------ */

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {{"F32", 4}, {"F16", 2}, {"BF16", 2}};

/* Other dtypes of the reference implementation: valid files fedtune cannot use. */
static const char *const other_dtypes[] = {
    "BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2",
    "I16",  "U16", "I32", "U32",     "F64",     "I64",     "U64", "C64",     NULL};

const char *fed_st_dtype_name(fed_st_dtype d) {
    return (unsigned)d < sizeof dtypes / sizeof dtypes[0] ? dtypes[d].name : "?";
}

static float float_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE binary16 to binary32, exactly: every half is a float. */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f) return float_from_bits(sign | 0x7f800000u | (mant << 13)); /* inf, NaN */
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in float */
        float f = (float)mant * 0x1p-24f;
        return sign ? -f : f;
    }
    return float_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

static bool utf8_valid(const char *str) {
    size_t n = strlen(str);
    return fed_utf8_bad_at(str, n) == n;
}

/* ---- metadata ---------------------------------------------------------------------- */

typedef struct meta_pair {
    char *key;   /* owned */
    char *value; /* owned */
} meta_pair;

struct fed_meta {
    size_t n;         /* pairs in use */
    size_t cap;       /* pairs allocated */
    meta_pair *pairs; /* (cap) in insertion order */
};

fed_err fed_meta_new(fed_meta **out) {
    *out = fed_calloc(1, sizeof **out);
    return *out ? FED_OK : FED_ENOMEM;
}

void fed_meta_destroy(fed_meta **m) {
    if (!m || !*m) return;
    for (size_t i = 0; i < (*m)->n; i++) {
        fed_free((*m)->pairs[i].key);
        fed_free((*m)->pairs[i].value);
    }
    fed_free((*m)->pairs);
    fed_free(*m);
    *m = NULL;
}

/* Appends without looking for key first (callers know it is new). */
static fed_err meta_append(fed_meta *m, const char *key, const char *value) {
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 8, bytes;
        if (!fed_mul_ok(cap, sizeof *m->pairs, &bytes)) return FED_ENOMEM;
        meta_pair *p = fed_realloc(m->pairs, bytes);
        if (!p) return FED_ENOMEM;
        m->pairs = p;
        m->cap = cap;
    }
    char *k = fed_strdup(key), *v = fed_strdup(value);
    if (!k || !v) {
        fed_free(k);
        fed_free(v);
        return FED_ENOMEM;
    }
    m->pairs[m->n].key = k;
    m->pairs[m->n].value = v;
    m->n++;
    return FED_OK;
}

static long meta_index(const fed_meta *m, const char *key) {
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->pairs[i].key, key) == 0) return (long)i;
    return -1;
}

fed_err fed_meta_set(fed_meta *m, const char *key, const char *value) {
    long i = meta_index(m, key);
    if (i < 0) return meta_append(m, key, value);
    char *v = fed_strdup(value);
    if (!v) return FED_ENOMEM;
    fed_free(m->pairs[i].value);
    m->pairs[i].value = v;
    return FED_OK;
}

void fed_meta_unset(fed_meta *m, const char *key) {
    long i = meta_index(m, key);
    if (i < 0) return;
    fed_free(m->pairs[i].key);
    fed_free(m->pairs[i].value);
    memmove(&m->pairs[i], &m->pairs[i + 1], (m->n - (size_t)i - 1) * sizeof m->pairs[0]);
    m->n--;
}

const char *fed_meta_get(const fed_meta *m, const char *key) {
    long i = meta_index(m, key);
    return i < 0 ? NULL : m->pairs[i].value;
}

size_t fed_meta_count(const fed_meta *m) {
    return m->n;
}

const char *fed_meta_key(const fed_meta *m, size_t i) {
    return i < m->n ? m->pairs[i].key : NULL;
}

const char *fed_meta_value(const fed_meta *m, size_t i) {
    return i < m->n ? m->pairs[i].value : NULL;
}

static fed_err meta_clone(fed_meta **out, const fed_meta *src) {
    fed_err err = fed_meta_new(out);
    for (size_t i = 0; !err && i < src->n; i++)
        err = meta_append(*out, src->pairs[i].key, src->pairs[i].value);
    if (err) fed_meta_destroy(out);
    return err;
}

/* ---- the file object ---------------------------------------------------------------- */

struct fed_st_file {
    char *what;             /* path or caller's name, for messages */
    unsigned char *buf;     /* (len) the whole file */
    size_t len;             /* bytes in buf */
    size_t data_start;      /* offset of the data section: 8 + header length */
    size_t n;               /* tensors */
    fed_st_tensor *tensors; /* (n) sorted by byte range */
    size_t *by_name;        /* (n) indices into tensors, sorted by name */
    fed_meta *meta;         /* __metadata__, empty when absent */
};

void fed_st_close(fed_st_file **f) {
    if (!f || !*f) return;
    fed_st_file *p = *f;
    for (size_t i = 0; i < p->n; i++) fed_free((char *)p->tensors[i].name);
    fed_free(p->tensors);
    fed_free(p->by_name);
    fed_meta_destroy(&p->meta);
    fed_free(p->buf);
    fed_free(p->what);
    fed_free(p);
    *f = NULL;
}

const char *fed_st_what(const fed_st_file *f) {
    return f->what;
}

size_t fed_st_count(const fed_st_file *f) {
    return f->n;
}

const fed_st_tensor *fed_st_at(const fed_st_file *f, size_t i) {
    return i < f->n ? &f->tensors[i] : NULL;
}

const fed_st_tensor *fed_st_find(const fed_st_file *f, const char *name) {
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const fed_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const fed_meta *fed_st_meta(const fed_st_file *f) {
    return f->meta;
}

void fed_st_copy_f32(const fed_st_file *f, const fed_st_tensor *t, float *dst) {
    assert(t->end <= f->len - f->data_start &&
           t->end - t->begin == t->numel * dtypes[t->dtype].size);
    const unsigned char *p = f->buf + f->data_start + t->begin;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case FED_ST_F32:
        for (size_t i = 0; i < n; i++, p += 4) dst[i] = float_from_bits(fed_load_le32(p));
        break;
    case FED_ST_F16:
        for (size_t i = 0; i < n; i++, p += 2) dst[i] = half_to_float(fed_load_le16(p));
        break;
    case FED_ST_BF16:
        for (size_t i = 0; i < n; i++, p += 2)
            dst[i] = float_from_bits((uint32_t)fed_load_le16(p) << 16);
        break;
    }
}

/* ---- parsing ------------------------------------------------------------------------ */

/* "[4, 8]" into buf. */
static const char *fmt_shape(char *buf, size_t size, int ndim, const uint64_t *shape) {
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i <= ndim && off < size; i++) {
        int k;
        if (i == ndim)
            k = snprintf(buf + off, size - off, "]");
        else
            k = snprintf(buf + off, size - off, "%s%" PRIu64, i ? ", " : "[", shape[i]);
        if (k < 0) break;
        off += (size_t)k;
    }
    if (ndim == 0) snprintf(buf, size, "[]");
    return buf;
}

/* An integer in [0, 2^53) from a JSON number. */
static bool json_u53(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d < JSON_INT_LIMIT) || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

/* The header text must be valid UTF-8 without control characters (JSON allows none
 * unescaped) and without \u0000 inside strings (C strings cannot carry it). Returns the
 * offset of the first offending byte, or n; *why says what is wrong. */
static size_t scan_header(const unsigned char *s, size_t n, const char **why) {
    bool in_string = false;
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c >= 0x80) {
            size_t k = fed_utf8_seq(s + i, n - i);
            if (!k) {
                *why = "invalid UTF-8";
                return i;
            }
            i += k;
            continue;
        }
        if (c < 0x20 && !(!in_string && (c == '\t' || c == '\n' || c == '\r'))) {
            *why = "a control character";
            return i;
        }
        if (in_string && c == '\\' && i + 1 < n) {
            if (s[i + 1] == 'u' && i + 6 <= n && memcmp(s + i + 2, "0000", 4) == 0) {
                *why = "\\u0000";
                return i;
            }
            i += 2; /* the escaped character cannot end the string */
            continue;
        }
        if (c == '"') in_string = !in_string;
        i++;
    }
    return n;
}

/* Validates one tensor entry of the header into t (name not yet set). */
static fed_err parse_entry(const fed_st_file *f, const cJSON *e, uint64_t data_len,
                           fed_st_tensor *t) {
    const char *w = f->what, *name = e->string;
    if (!cJSON_IsObject(e))
        return fed_errorf(FED_EFORMAT, "%s: tensor \"%.100s\": must be an object", w, name);
    static const char *const keys[] = {"dtype", "shape", "data_offsets"};
    const cJSON *field[3] = {NULL, NULL, NULL};
    for (const cJSON *it = e->child; it; it = it->next) {
        size_t k;
        for (k = 0; k < 3; k++)
            if (strcmp(it->string, keys[k]) == 0) break;
        if (k == 3)
            return fed_errorf(FED_EFORMAT, "%s: tensor \"%.100s\": unknown field \"%.40s\"", w,
                              name, it->string);
        if (field[k])
            return fed_errorf(FED_EFORMAT, "%s: tensor \"%.100s\": duplicate field \"%s\"", w, name,
                              keys[k]);
        field[k] = it;
    }
    for (size_t k = 0; k < 3; k++)
        if (!field[k])
            return fed_errorf(FED_EFORMAT, "%s: tensor \"%.100s\": missing field \"%s\"", w, name,
                              keys[k]);

    /* dtype */
    const cJSON *dt = field[0];
    if (!cJSON_IsString(dt))
        return fed_errorf(FED_EFORMAT, "%s: tensor \"%.100s\": field \"dtype\" must be a string", w,
                          name);
    size_t d;
    for (d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++)
        if (strcmp(dt->valuestring, dtypes[d].name) == 0) break;
    if (d == sizeof dtypes / sizeof dtypes[0]) {
        for (const char *const *o = other_dtypes; *o; o++)
            if (strcmp(dt->valuestring, *o) == 0)
                return fed_errorf(FED_EUNSUPPORTED,
                                  "%s: tensor \"%.100s\": dtype %s is not supported (fedtune "
                                  "reads F32, F16 and BF16)",
                                  w, name, *o);
        return fed_errorf(FED_EFORMAT, "%s: tensor \"%.100s\": unknown dtype \"%.20s\"", w, name,
                          dt->valuestring);
    }
    t->dtype = (fed_st_dtype)d;

    /* shape */
    const cJSON *sh = field[1];
    if (!cJSON_IsArray(sh))
        return fed_errorf(FED_EFORMAT, "%s: tensor \"%.100s\": field \"shape\" must be an array", w,
                          name);
    int ndim = 0;
    for (const cJSON *it = sh->child; it; it = it->next, ndim++) {
        if (ndim == FED_ST_MAX_DIMS)
            return fed_errorf(FED_EUNSUPPORTED,
                              "%s: tensor \"%.100s\": more than %d dimensions are not supported", w,
                              name, FED_ST_MAX_DIMS);
        if (!json_u53(it, &t->shape[ndim]))
            return fed_errorf(FED_EFORMAT,
                              "%s: tensor \"%.100s\": shape dimension %d must be an integer in "
                              "[0, 2^53)",
                              w, name, ndim);
    }
    t->ndim = ndim;
    char sbuf[200];
    uint64_t numel = 1, bytes;
    bool overflow = false;
    for (int i = 0; i < ndim; i++) {
        if (t->shape[i] != 0 && numel > UINT64_MAX / t->shape[i]) overflow = true;
        numel *= t->shape[i];
    }
    if (overflow || numel > UINT64_MAX / dtypes[d].size)
        return fed_errorf(FED_EFORMAT, "%s: tensor \"%.100s\": shape %s overflows 64 bits", w, name,
                          fmt_shape(sbuf, sizeof sbuf, ndim, t->shape));
    t->numel = numel;
    bytes = numel * dtypes[d].size;

    /* data_offsets */
    const cJSON *off = field[2];
    uint64_t be[2];
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_u53(off->child, &be[0]) ||
        !json_u53(off->child->next, &be[1]))
        return fed_errorf(FED_EFORMAT,
                          "%s: tensor \"%.100s\": field \"data_offsets\" must be two integers "
                          "[begin, end]",
                          w, name);
    t->begin = be[0];
    t->end = be[1];
    if (t->begin > t->end)
        return fed_errorf(FED_EFORMAT,
                          "%s: tensor \"%.100s\": data_offsets [%" PRIu64 ", %" PRIu64
                          ") end before they begin",
                          w, name, t->begin, t->end);
    if (t->end > data_len)
        return fed_errorf(FED_EFORMAT,
                          "%s: tensor \"%.100s\": data_offsets [%" PRIu64 ", %" PRIu64
                          ") run past the data section (%" PRIu64 " bytes)",
                          w, name, t->begin, t->end, data_len);
    if (t->end - t->begin != bytes)
        return fed_errorf(FED_EFORMAT,
                          "%s: tensor \"%.100s\": data_offsets [%" PRIu64 ", %" PRIu64
                          ") but shape %s %s needs %" PRIu64 " bytes",
                          w, name, t->begin, t->end, fmt_shape(sbuf, sizeof sbuf, ndim, t->shape),
                          dtypes[d].name, bytes);
    return FED_OK;
}

static int cmp_range(const void *a, const void *b) {
    const fed_st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* qsort context for sorting indices by name (qsort has none). */
static _Thread_local const fed_st_tensor *sort_tensors;

static int cmp_name_index(const void *a, const void *b) {
    return strcmp(sort_tensors[*(const size_t *)a].name, sort_tensors[*(const size_t *)b].name);
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static fed_err parse_metadata(fed_st_file *f, const cJSON *md) {
    const char *w = f->what;
    if (!cJSON_IsObject(md))
        return fed_errorf(FED_EFORMAT, "%s: \"__metadata__\" must be an object of strings", w);
    size_t n = 0;
    for (const cJSON *it = md->child; it; it = it->next, n++) {
        if (!cJSON_IsString(it))
            return fed_errorf(FED_EFORMAT, "%s: __metadata__ \"%.100s\": value must be a string", w,
                              it->string);
    }
    /* Duplicate keys, found by sorting (the header may hold millions of them). */
    const char **keys = fed_mallocarray(n ? n : 1, sizeof *keys);
    if (!keys) return FED_ENOMEM;
    size_t i = 0;
    for (const cJSON *it = md->child; it; it = it->next) keys[i++] = it->string;
    qsort(keys, n, sizeof *keys, cmp_str_ptr);
    for (i = 1; i < n; i++) {
        if (strcmp(keys[i - 1], keys[i]) == 0) {
            fed_err err =
                fed_errorf(FED_EFORMAT, "%s: __metadata__: duplicate key \"%.100s\"", w, keys[i]);
            fed_free(keys);
            return err;
        }
    }
    fed_free(keys);
    for (const cJSON *it = md->child; it; it = it->next) {
        fed_err err = meta_append(f->meta, it->string, it->valuestring);
        if (err) return err;
    }
    return FED_OK;
}

/* Checks that the sorted ranges tile [0, data_len) exactly. */
static fed_err check_layout(const fed_st_file *f, uint64_t data_len) {
    uint64_t at = 0;
    for (size_t i = 0; i < f->n; i++) {
        const fed_st_tensor *t = &f->tensors[i];
        if (t->begin > at)
            return fed_errorf(FED_EFORMAT,
                              "%s: tensor \"%.100s\": data_offsets [%" PRIu64 ", %" PRIu64
                              ") leave a hole: bytes [%" PRIu64 ", %" PRIu64
                              ") belong to no tensor",
                              f->what, t->name, t->begin, t->end, at, t->begin);
        if (t->begin < at)
            return fed_errorf(FED_EFORMAT,
                              "%s: tensor \"%.100s\": data_offsets [%" PRIu64 ", %" PRIu64
                              ") overlap tensor \"%.100s\" (which ends at %" PRIu64 ")",
                              f->what, t->name, t->begin, t->end, f->tensors[i - 1].name, at);
        at = t->end;
    }
    if (at != data_len)
        return fed_errorf(FED_EFORMAT,
                          "%s: %" PRIu64 " trailing bytes after the last tensor (the data "
                          "section has %" PRIu64 " bytes, the tensors cover %" PRIu64 ")",
                          f->what, data_len - at, data_len, at);
    return FED_OK;
}

/* Parses f->buf (f->len bytes) into f's tensors and metadata. */
static fed_err parse_file(fed_st_file *f) {
    const char *w = f->what;
    if (f->len < 8)
        return fed_errorf(FED_EFORMAT,
                          "%s: %zu bytes, too short for a safetensors file (the header length "
                          "alone takes 8)",
                          w, f->len);
    uint64_t hlen = fed_load_le64(f->buf);
    if (hlen > FED_ST_MAX_HEADER)
        return fed_errorf(FED_EFORMAT,
                          "%s: header length %" PRIu64 " exceeds the limit of %" PRIu64 " bytes", w,
                          hlen, FED_ST_MAX_HEADER);
    if (hlen > f->len - 8)
        return fed_errorf(FED_EFORMAT,
                          "%s: header length %" PRIu64 " runs past the end of the file (%zu "
                          "bytes)",
                          w, hlen, f->len);
    f->data_start = 8 + (size_t)hlen;
    uint64_t data_len = f->len - f->data_start;
    const unsigned char *h = f->buf + 8;
    if (hlen == 0 || h[0] != '{')
        return fed_errorf(FED_EFORMAT, "%s: header is not a JSON object (it must start with '{')",
                          w);
    const char *why = "";
    size_t bad = scan_header(h, (size_t)hlen, &why);
    if (bad < hlen) return fed_errorf(FED_EFORMAT, "%s: header: %s at offset %zu", w, why, bad);

    /* cJSON wants a NUL-terminated string; the copy is bounded by the file size. */
    fed_err err = FED_ENOMEM;
    char *text = fed_malloc((size_t)hlen + 1);
    cJSON *root = NULL;
    if (!text) goto done;
    memcpy(text, h, (size_t)hlen);
    text[hlen] = '\0';
    const char *end = NULL;
    fed_json_hooks();
    root = cJSON_ParseWithOpts(text, &end, 0);
    if (!root) {
        if (fed_json_oom()) {
            err = fed_errorf(FED_ENOMEM, "%s: out of memory parsing the header", w);
        } else {
            size_t at = end && end >= text && end <= text + hlen ? (size_t)(end - text) : 0;
            err = fed_errorf(FED_EFORMAT, "%s: header is not valid JSON (near offset %zu)", w, at);
        }
        goto done;
    }
    err = FED_EFORMAT;
    for (const char *p = end; p < text + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            err = fed_errorf(FED_EFORMAT,
                             "%s: header: characters after the JSON object at offset %zu", w,
                             (size_t)(p - text));
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        err = fed_errorf(FED_EFORMAT, "%s: header is not a JSON object", w);
        goto done;
    }

    /* Metadata first (exactly one), then every other key is a tensor. */
    size_t ntensors = 0;
    const cJSON *md = NULL;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") != 0) {
            ntensors++;
        } else if (md) {
            err = fed_errorf(FED_EFORMAT, "%s: duplicate \"__metadata__\"", w);
            goto done;
        } else {
            md = it;
        }
    }
    if (md && (err = parse_metadata(f, md))) goto done;
    err = FED_ENOMEM;
    f->tensors = fed_calloc(ntensors ? ntensors : 1, sizeof *f->tensors);
    f->by_name = fed_calloc(ntensors ? ntensors : 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) goto done;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (it == md) continue;
        fed_st_tensor *t = &f->tensors[f->n];
        if ((err = parse_entry(f, it, data_len, t))) goto done;
        if (!(t->name = fed_strdup(it->string))) {
            err = FED_ENOMEM;
            goto done;
        }
        f->n++;
    }
    qsort(f->tensors, f->n, sizeof *f->tensors, cmp_range);
    for (size_t i = 0; i < f->n; i++) f->by_name[i] = i;
    sort_tensors = f->tensors;
    qsort(f->by_name, f->n, sizeof *f->by_name, cmp_name_index);
    sort_tensors = NULL;
    for (size_t i = 1; i < f->n; i++) {
        const char *name = f->tensors[f->by_name[i]].name;
        if (strcmp(f->tensors[f->by_name[i - 1]].name, name) == 0) {
            err = fed_errorf(FED_EFORMAT, "%s: duplicate tensor \"%.100s\"", w, name);
            goto done;
        }
    }
    err = check_layout(f, data_len);
done:
    cJSON_Delete(root);
    fed_free(text);
    return err;
}

/* A file object for what; takes ownership of buf (freed on any failure too). */
static fed_err parse_owned(fed_st_file **out, unsigned char *buf, size_t len, const char *what) {
    *out = NULL;
    fed_err err = FED_ENOMEM;
    fed_st_file *f = fed_calloc(1, sizeof *f);
    if (!f) {
        fed_free(buf);
        return err;
    }
    f->buf = buf;
    f->len = len;
    f->what = fed_strdup(what);
    if (!f->what || (err = fed_meta_new(&f->meta))) goto fail;
    if ((err = parse_file(f))) goto fail;
    *out = f;
    return FED_OK;
fail:
    fed_st_close(&f);
    return err;
}

fed_err fed_st_parse(fed_st_file **out, const void *buf, size_t len, const char *what) {
    *out = NULL;
    unsigned char *copy = fed_malloc(len ? len : 1);
    if (!copy) return FED_ENOMEM;
    if (len) memcpy(copy, buf, len);
    return parse_owned(out, copy, len, what);
}

fed_err fed_st_read(fed_st_file **out, const char *path) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return fed_errorf(FED_EIO, "%s: cannot open: %s", path, strerror(errno));
    fed_err err = FED_EIO;
    unsigned char *buf = NULL;
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        err = fed_errorf(FED_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        err = fed_errorf(FED_EIO, "%s: not a regular file", path);
        goto fail;
    }
    if (st.st_size < 0 || (uintmax_t)st.st_size >= SIZE_MAX) {
        err = fed_errorf(FED_EIO, "%s: file too large to read", path);
        goto fail;
    }
    size_t size = (size_t)st.st_size;
    if (!(buf = fed_malloc(size ? size : 1))) {
        err = FED_ENOMEM;
        goto fail;
    }
    if (fread(buf, 1, size, fp) != size) {
        err = ferror(fp) ? fed_errorf(FED_EIO, "%s: read error: %s", path, strerror(errno))
                         : fed_errorf(FED_EIO, "%s: file shrank while being read", path);
        goto fail;
    }
    fclose(fp);
    return parse_owned(out, buf, size, path);
fail:
    fed_free(buf);
    fclose(fp);
    return err;
}

/* ---- writing ------------------------------------------------------------------------ */

/* A growing byte string; oom is sticky, so appends can be chained and checked once. */
typedef struct strbuf {
    char *p;    /* (cap) bytes */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
    bool oom;   /* an append failed */
} strbuf;

static void sb_put(strbuf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (n > cap - b->len) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        char *p = fed_realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_puts(strbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

static void sb_u64(strbuf *b, uint64_t v) {
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    sb_puts(b, tmp);
}

/* s as a JSON string literal; s is valid UTF-8. */
static void sb_json_string(strbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp((*(const fed_st_entry *const *)a)->name, (*(const fed_st_entry *const *)b)->name);
}

/* Checks the entries and metadata; *data_len receives the data section's size. */
static fed_err check_entries(const char *what, const fed_st_entry *t, size_t n,
                             const fed_meta *meta, uint64_t *data_len) {
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = t[i].name;
        if (!name || !*name) return fed_errorf(FED_EINVAL, "%s: tensor %zu: empty name", what, i);
        if (strcmp(name, "__metadata__") == 0 || !utf8_valid(name))
            return fed_errorf(FED_EINVAL, "%s: tensor %zu: name \"%.100s\" %s", what, i, name,
                              utf8_valid(name) ? "is reserved" : "is not valid UTF-8");
        if (t[i].ndim < 0 || t[i].ndim > FED_ST_MAX_DIMS || (t[i].ndim > 0 && !t[i].shape))
            return fed_errorf(FED_EINVAL, "%s: tensor \"%.100s\": %d dimensions (0 to %d allowed)",
                              what, name, t[i].ndim, FED_ST_MAX_DIMS);
        uint64_t numel = 1;
        bool overflow = false;
        for (int d = 0; d < t[i].ndim; d++) {
            uint64_t s = (uint64_t)t[i].shape[d];
            if ((double)s >= JSON_INT_LIMIT || (s != 0 && numel > UINT64_MAX / s)) overflow = true;
            numel *= s;
        }
        if (overflow || numel > (UINT64_MAX - total) / 4 || numel > SIZE_MAX / 4)
            return fed_errorf(FED_EINVAL, "%s: tensor \"%.100s\": shape too large", what, name);
        if (numel && !t[i].data)
            return fed_errorf(FED_EINVAL, "%s: tensor \"%.100s\": no data", what, name);
        total += numel * 4;
    }
    if ((double)total >= JSON_INT_LIMIT)
        return fed_errorf(FED_EINVAL, "%s: tensors too large for one file", what);
    if (n > 1) {
        const fed_st_entry **order = fed_mallocarray(n, sizeof *order);
        if (!order) return FED_ENOMEM;
        for (size_t i = 0; i < n; i++) order[i] = &t[i];
        qsort(order, n, sizeof *order, cmp_entry_name);
        for (size_t i = 1; i < n; i++) {
            if (strcmp(order[i - 1]->name, order[i]->name) == 0) {
                fed_err err = fed_errorf(FED_EINVAL, "%s: duplicate tensor name \"%.100s\"", what,
                                         order[i]->name);
                fed_free(order);
                return err;
            }
        }
        fed_free(order);
    }
    for (size_t i = 0; meta && i < meta->n; i++) {
        if (!utf8_valid(meta->pairs[i].key) || !utf8_valid(meta->pairs[i].value))
            return fed_errorf(FED_EINVAL, "%s: metadata \"%.100s\": not valid UTF-8", what,
                              meta->pairs[i].key);
    }
    *data_len = total;
    return FED_OK;
}

/* The 8-byte length and the padded JSON header into b. */
static fed_err build_header(strbuf *b, const char *what, const fed_st_entry *t, size_t n,
                            const fed_meta *meta, uint64_t *data_len) {
    fed_err err = check_entries(what, t, n, meta, data_len);
    if (err) return err;
    sb_put(b, "\0\0\0\0\0\0\0\0{", 9);
    bool first = true;
    if (meta && meta->n) {
        sb_puts(b, "\"__metadata__\":{");
        for (size_t i = 0; i < meta->n; i++) {
            if (i) sb_puts(b, ",");
            sb_json_string(b, meta->pairs[i].key);
            sb_puts(b, ":");
            sb_json_string(b, meta->pairs[i].value);
        }
        sb_puts(b, "}");
        first = false;
    }
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= t[i].shape[d];
        if (!first) sb_puts(b, ",");
        first = false;
        sb_json_string(b, t[i].name);
        sb_puts(b, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++) {
            if (d) sb_puts(b, ",");
            sb_u64(b, t[i].shape[d]);
        }
        sb_puts(b, "],\"data_offsets\":[");
        sb_u64(b, at);
        sb_puts(b, ",");
        sb_u64(b, at + 4 * numel);
        sb_puts(b, "]}");
        at += 4 * numel;
    }
    sb_puts(b, "}");
    while (!b->oom && b->len % 8) sb_puts(b, " "); /* data starts 8-byte aligned */
    if (b->oom) return fed_errorf(FED_ENOMEM, "%s: out of memory writing the header", what);
    fed_store_le64((uint8_t *)b->p, b->len - 8);
    return FED_OK;
}

/* Floats as little-endian bytes, whatever the host order. */
static void floats_to_le(unsigned char *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], sizeof u);
        fed_store_le32(dst + 4 * i, u);
    }
}

static size_t entry_numel(const fed_st_entry *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

fed_err fed_st_encode(void **out, size_t *len, const fed_st_entry *t, size_t n,
                      const fed_meta *meta) {
    *out = NULL;
    *len = 0;
    strbuf b = {0};
    uint64_t data_len;
    fed_err err = build_header(&b, "safetensors", t, n, meta, &data_len);
    if (err) goto fail;
    size_t total;
    unsigned char *p;
    err = FED_ENOMEM;
    if (!fed_add_ok(b.len, (size_t)data_len, &total) || !(p = fed_realloc(b.p, total ? total : 1)))
        goto fail;
    b.p = (char *)p;
    size_t at = b.len;
    for (size_t i = 0; i < n; i++) {
        size_t k = entry_numel(&t[i]);
        floats_to_le(p + at, t[i].data, k);
        at += 4 * k;
    }
    *out = p;
    *len = total;
    return FED_OK;
fail:
    fed_free(b.p);
    return err;
}

static fed_err io_error(const char *path, const char *doing, int errnum) {
    return fed_errorf(FED_EIO, "%s: %s: %s", path, doing, strerror(errnum));
}

fed_err fed_st_write(const char *path, const fed_st_entry *t, size_t n, const fed_meta *meta) {
    strbuf b = {0};
    uint64_t data_len;
    char *tmp = NULL;
    FILE *fp = NULL;
    bool created = false;
    fed_err err = build_header(&b, path, t, n, meta, &data_len);
    if (err) goto fail;
    size_t plen = strlen(path);
    static const char suffix[] = ".tmp.XXXXXX";
    err = FED_ENOMEM;
    if (plen > SIZE_MAX - sizeof suffix || !(tmp = fed_malloc(plen + sizeof suffix))) goto fail;
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, suffix, sizeof suffix);

    int fd = mkstemp(tmp);
    if (fd < 0) {
        err = io_error(path, "cannot create a temporary file", errno);
        goto fail;
    }
    created = true;
    /* mkstemp makes the file 0600; a model file is not a secret. Keep the mode of a file
     * we replace. */
    struct stat st;
    mode_t mode = stat(path, &st) == 0 ? (st.st_mode & 07777) : 0644;
    if (fchmod(fd, mode) != 0 || !(fp = fdopen(fd, "wb"))) {
        err = io_error(path, "cannot prepare the temporary file", errno);
        close(fd);
        goto fail;
    }
    if (fwrite(b.p, 1, b.len, fp) != b.len) goto write_error;
    unsigned char chunk[16384];
    for (size_t i = 0; i < n; i++) {
        const float *src = t[i].data;
        for (size_t left = entry_numel(&t[i]); left > 0;) {
            size_t k = left < sizeof chunk / 4 ? left : sizeof chunk / 4;
            floats_to_le(chunk, src, k);
            if (fwrite(chunk, 4, k, fp) != k) goto write_error;
            src += k;
            left -= k;
        }
    }
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) goto write_error;
    int rc = fclose(fp);
    fp = NULL;
    if (rc != 0) goto write_error;
    if (rename(tmp, path) != 0) {
        err = io_error(path, "cannot rename the temporary file into place", errno);
        goto fail;
    }
    fed_free(tmp);
    fed_free(b.p);
    return FED_OK;
write_error:
    err = io_error(path, "cannot write", errno);
fail:
    if (fp) fclose(fp);
    if (created) unlink(tmp);
    fed_free(tmp);
    fed_free(b.p);
    return err;
}

/* ---- models ------------------------------------------------------------------------- */

fed_err fed_model_save(const fed_model *m, const char *path, const fed_meta *extra) {
    size_t n = fed_model_num_tensors(m);
    fed_err err = FED_ENOMEM;
    fed_st_entry *e = fed_calloc(n ? n : 1, sizeof *e);
    fed_meta *meta = NULL;
    char *arch = NULL;
    strbuf frozen = {0};
    if (!e || fed_meta_new(&meta)) goto fail;
    const float *params = fed_model_params_const(m);
    sb_puts(&frozen, "[");
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        e[i].name = t->name;
        e[i].ndim = t->ndim;
        e[i].shape = t->shape;
        e[i].data = params + t->offset;
        if (!t->trainable) {
            if (!first) sb_puts(&frozen, ",");
            sb_json_string(&frozen, t->name);
            first = false;
        }
    }
    sb_put(&frozen, "]", 2); /* with the terminating NUL */
    if (frozen.oom) goto fail;
    if ((err = fed_arch_to_json(fed_model_arch(m), &arch)) ||
        (err = meta_append(meta, FED_META_ARCH, arch)) ||
#ifdef FED_VERSION
        (err = meta_append(meta, FED_META_VERSION, "fedtune " FED_VERSION)) ||
#else
        (err = meta_append(meta, FED_META_VERSION, "fedtune")) ||
#endif
        (err = meta_append(meta, FED_META_FROZEN, frozen.p)))
        goto fail;
    for (size_t i = 0; extra && i < extra->n; i++) {
        const char *k = extra->pairs[i].key;
        if (strcmp(k, FED_META_ARCH) == 0 || strcmp(k, FED_META_VERSION) == 0 ||
            strcmp(k, FED_META_FROZEN) == 0)
            continue;
        if ((err = fed_meta_set(meta, k, extra->pairs[i].value))) goto fail;
    }
    err = fed_st_write(path, e, n, meta);
fail:
    if (err == FED_ENOMEM && !strstr(fed_errmsg(), path))
        fed_errorf(FED_ENOMEM, "%s: out of memory saving the model", path);
    fed_free(frozen.p);
    fed_free(arch);
    fed_meta_destroy(&meta);
    fed_free(e);
    return err;
}

static bool same_shape(const fed_tensor *mt, const fed_st_tensor *ft) {
    if (mt->ndim != ft->ndim) return false;
    for (int d = 0; d < mt->ndim; d++)
        if ((uint64_t)mt->shape[d] != ft->shape[d]) return false;
    return true;
}

fed_err fed_model_load_weights(fed_model *m, const fed_st_file *f, unsigned flags) {
    const char *w = f->what;
    size_t n = fed_model_num_tensors(m);
    /* Everything is checked before the first byte is copied: m is untouched on error. */
    for (size_t i = 0; i < n; i++) {
        const fed_tensor *mt = fed_model_tensor(m, i);
        const fed_st_tensor *ft = fed_st_find(f, mt->name);
        if (!ft) {
            if (flags & FED_LOAD_ALLOW_MISSING) continue;
            const fed_layer_spec *ls = fed_arch_layer(fed_model_arch(m), mt->layer);
            return fed_errorf(FED_ENOTFOUND,
                              "%s: tensor \"%s\" missing (layer %zu (%s) of the model expects it)",
                              w, mt->name, mt->layer, ls ? fed_layer_kind_name(ls->kind) : "?");
        }
        if (!same_shape(mt, ft)) {
            uint64_t ms[4];
            char a[200], b[200];
            for (int d = 0; d < mt->ndim; d++) ms[d] = mt->shape[d];
            return fed_errorf(FED_ESHAPE, "%s: tensor \"%s\": the file has shape %s, the model %s",
                              w, mt->name, fmt_shape(a, sizeof a, ft->ndim, ft->shape),
                              fmt_shape(b, sizeof b, mt->ndim, ms));
        }
    }
    if (!(flags & FED_LOAD_ALLOW_EXTRA)) {
        for (size_t i = 0; i < f->n; i++) {
            const char *name = f->tensors[i].name;
            if (!fed_model_find(m, name))
                return fed_errorf(FED_EFORMAT,
                                  "%s: tensor \"%.100s\" is not part of the model (%zu tensors)", w,
                                  name, n);
        }
    }
    float *params = fed_model_params(m);
    for (size_t i = 0; i < n; i++) {
        const fed_tensor *mt = fed_model_tensor(m, i);
        const fed_st_tensor *ft = fed_st_find(f, mt->name);
        if (ft) fed_st_copy_f32(f, ft, params + mt->offset);
    }
    return FED_OK;
}

/* Applies FED_META_FROZEN (a JSON array of tensor names) to m. */
static fed_err apply_frozen(fed_model *m, const char *json, const char *w) {
    fed_json_hooks();
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        if (fed_json_oom()) return fed_errorf(FED_ENOMEM, "%s: out of memory", w);
        return fed_errorf(FED_EFORMAT, "%s: %s is not valid JSON", w, FED_META_FROZEN);
    }
    fed_err err = FED_OK;
    if (!cJSON_IsArray(root)) {
        err = fed_errorf(FED_EFORMAT, "%s: %s must be a JSON array of tensor names", w,
                         FED_META_FROZEN);
        goto done;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!cJSON_IsString(it) || !fed_model_find(m, it->valuestring)) {
            err = fed_errorf(FED_EFORMAT, "%s: %s: \"%.100s\" is not a tensor of the model", w,
                             FED_META_FROZEN,
                             cJSON_IsString(it) ? it->valuestring : "(not a string)");
            goto done;
        }
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        for (size_t i = 0; i < fed_model_num_tensors(m); i++)
            if (strcmp(fed_model_tensor(m, i)->name, it->valuestring) == 0)
                fed_model_set_trainable(m, i, false);
    }
done:
    cJSON_Delete(root);
    return err;
}

fed_err fed_model_load(fed_model **out, const char *path, fed_meta **meta_out) {
    *out = NULL;
    if (meta_out) *meta_out = NULL;
    fed_st_file *f = NULL;
    fed_arch *arch = NULL;
    fed_model *m = NULL;
    fed_err err = fed_st_read(&f, path);
    if (err) return err;
    const char *spec = fed_meta_get(f->meta, FED_META_ARCH);
    if (!spec) {
        err = fed_errorf(FED_EFORMAT, "%s: no %s in __metadata__; pass an architecture", path,
                         FED_META_ARCH);
        goto fail;
    }
    if ((err = fed_arch_parse(&arch, spec))) {
        if (err != FED_ENOMEM) err = fed_errprefix(err, "%s: %s", path, FED_META_ARCH);
        goto fail;
    }
    /* The model's buffers are sized by the architecture: never beyond what the file can
     * fill (a strict load needs a value in the file for every parameter). */
    uint64_t values = 0;
    for (size_t i = 0; i < f->n; i++) values += f->tensors[i].numel;
    if ((uint64_t)fed_arch_num_params(arch) > values) {
        err = fed_errorf(FED_EFORMAT,
                         "%s: the architecture in %s has %zu parameters but the file holds only "
                         "%" PRIu64 " values",
                         path, FED_META_ARCH, fed_arch_num_params(arch), values);
        goto fail;
    }
    if ((err = fed_model_new(&m, arch)) || (err = fed_model_load_weights(m, f, FED_LOAD_STRICT)))
        goto fail;
    const char *frozen = fed_meta_get(f->meta, FED_META_FROZEN);
    if (frozen && (err = apply_frozen(m, frozen, path))) goto fail;
    if (meta_out && (err = meta_clone(meta_out, f->meta))) goto fail;
    fed_arch_destroy(&arch);
    fed_st_close(&f);
    *out = m;
    return FED_OK;
fail:
    fed_model_destroy(&m);
    fed_arch_destroy(&arch);
    fed_st_close(&f);
    return err;
}
