/* Text classification data (see text.h): the CSV and JSON-lines readers, which hand each
 * row's text and label to one loader; the loader tokenizes, pads and truncates, counts,
 * and at the end turns the label texts into class ids. Tokenizing is tokenizer.c's;
 * numeric CSV is dataset_csv.c's. */
#include "dataset/text.h"
#include "core/alloc.h"
#include "core/json.h"
#include "core/utf8.h"
#include "dataset/data_internal.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes of a file fed_text_sniff reads to find the CSV header. */
#define SNIFF_BYTES 65536

/* ---- growing buffers ---------------------------------------------------------------- */

/* Makes room for need (>= 1) elements of size bytes in *p (capacity *cap); NULL when out
 * of memory (the old block stays valid). */
static void *grow(void *p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return p;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) {
        if (nc > SIZE_MAX / 2) return NULL;
        nc *= 2;
    }
    size_t bytes;
    if (!fed_mul_ok(nc, size, &bytes)) return NULL;
    void *q = fed_realloc(p, bytes);
    if (q) *cap = nc;
    return q;
}

/* ---- the loader: rows in, a data set out ---------------------------------------------- */

/* A kept row's label: its text in the pool and the line it was found on. */
typedef struct row_label {
    size_t off;  /* offset of the NUL-terminated label text in loader.pool */
    size_t line; /* line the row starts on, for messages */
} row_label;

typedef struct loader {
    const char *what;         /* names the input in messages */
    const fed_tokenizer *tok; /* the tokenizer */
    size_t T;                 /* sequence length */
    fed_text_options o;       /* options, defaults filled in */
    fed_text_stats st;        /* counts */
    float *x;                 /* (n, T) the kept rows */
    size_t cap_x;             /* floats x has room for */
    row_label *lab;           /* (n) their labels */
    size_t cap_lab;           /* entries lab has room for */
    size_t n;                 /* rows kept */
    char *pool;               /* label texts, NUL-terminated */
    size_t pool_len;          /* bytes used */
    size_t pool_cap;          /* bytes allocated */
    int32_t *ids;             /* (cap_ids) scratch for the tokenizer */
    size_t cap_ids;           /* entries of ids */
} loader;

static void loader_free(loader *L) {
    fed_free(L->x);
    fed_free(L->lab);
    fed_free(L->pool);
    fed_free(L->ids);
}

size_t fed_text_hist_bucket(size_t n) {
    size_t k = 0;
    while (k + 1 < FED_TEXT_HIST_BUCKETS && n > ((size_t)8 << k)) k++;
    return k;
}

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* The ids of text[0..len) in L->ids (grown as needed); *n of them. */
static fed_err encode(loader *L, const char *text, size_t len, size_t *n) {
    fed_err err = fed_tokenizer_encode(L->tok, text, len, L->ids, L->cap_ids, n);
    if (err || *n <= L->cap_ids) return err;
    int32_t *ids = grow(L->ids, &L->cap_ids, *n, sizeof *ids);
    if (!ids) return FED_ENOMEM;
    L->ids = ids;
    return fed_tokenizer_encode(L->tok, text, len, L->ids, L->cap_ids, n);
}

/* Room for one more row: its T floats, its label entry and llen + 1 bytes of label. */
static fed_err make_room(loader *L, size_t llen) {
    size_t floats;
    if (!fed_mul_ok(L->n + 1, L->T, &floats)) return FED_ENOMEM;
    float *x = grow(L->x, &L->cap_x, floats, sizeof *x);
    if (!x) return FED_ENOMEM;
    L->x = x;
    row_label *lab = grow(L->lab, &L->cap_lab, L->n + 1, sizeof *lab);
    if (!lab) return FED_ENOMEM;
    L->lab = lab;
    char *pool = grow(L->pool, &L->pool_cap, L->pool_len + llen + 1, 1);
    if (!pool) return FED_ENOMEM;
    L->pool = pool;
    return FED_OK;
}

/* One row: its text and label (label[0..llen)), found on line `line`. */
static fed_err add_row(loader *L, size_t line, const char *text, size_t tlen, const char *label,
                       size_t llen) {
    L->st.rows++;
    size_t k = 0;
    while (k < tlen && is_space(text[k])) k++;
    if (k == tlen) {
        if (!L->o.drop_empty) return fed_errorf(FED_EFORMAT, "%s:%zu: empty text", L->what, line);
        L->st.dropped_empty++;
        return FED_OK;
    }
    if (llen == 0) return fed_errorf(FED_EFORMAT, "%s:%zu: empty label", L->what, line);
    if (memchr(label, '\0', llen))
        return fed_errorf(FED_EFORMAT, "%s:%zu: the label holds a NUL byte", L->what, line);
    size_t n = 0;
    fed_err err = encode(L, text, tlen, &n);
    if (err) return fed_errprefix(err, "%s:%zu", L->what, line);
    if ((err = make_room(L, llen))) return err;
    memcpy(L->pool + L->pool_len, label, llen);
    L->pool[L->pool_len + llen] = '\0';
    L->lab[L->n] = (row_label){L->pool_len, line};
    L->pool_len += llen + 1;
    float *row = L->x + L->n * L->T;
    size_t keep = n < L->T ? n : L->T, unk = 0;
    int32_t u = fed_tokenizer_unk(L->tok);
    for (size_t i = 0; i < n; i++) unk += L->ids[i] == u;
    for (size_t i = 0; i < keep; i++) row[i] = (float)L->ids[i];
    for (size_t i = keep; i < L->T; i++) row[i] = -1.0f;
    L->n++;
    L->st.examples++;
    L->st.tokens += n;
    L->st.unknown += unk;
    L->st.truncated += n > L->T;
    if (n > L->st.longest) L->st.longest = n;
    if (n > 0) L->st.hist[fed_text_hist_bucket(n)]++;
    return FED_OK;
}

/* ---- labels to class ids -------------------------------------------------------------- */

/* A label of decimal digits only: an integer label, its value in *v (saturating). */
static bool integer_label(const char *s, size_t *v) {
    if (!*s) return false;
    size_t x = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return false;
        x = x > SIZE_MAX / 10 - 1 ? SIZE_MAX / 10 : x * 10 + (size_t)(*s - '0');
    }
    *v = x;
    return true;
}

/* A label text with an index: a row (sorting rows by label) or a class id. */
typedef struct named {
    const char *s; /* the text */
    size_t i;      /* row or id */
} named;

/* By text, then by index: equal labels stay in row order. */
static int named_cmp(const void *a, const void *b) {
    const named *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(((const named *)a)->s, ((const named *)b)->s);
}

static void names_free(char **names, size_t k) {
    for (size_t i = 0; names && i < k; i++) fed_free(names[i]);
    fed_free(names);
}

/* "a, b, c" (the first few) into buf, for messages. */
static void list_classes(char *buf, size_t cap, const char *const *classes, size_t k) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < k && used + 1 < cap; i++) {
        int w = i == 8 ? snprintf(buf + used, cap - used, ", ...")
                       : snprintf(buf + used, cap - used, "%s\"%s\"", i ? ", " : "", classes[i]);
        if (w < 0 || i == 8) break;
        used += (size_t)w < cap - used ? (size_t)w : cap - used - 1;
    }
}

/* Ids of the sorted rows r[0..n) by the known classes. */
static fed_err ids_by_classes(loader *L, const named *r, int32_t *y) {
    size_t m = L->o.num_classes;
    named *c = fed_mallocarray(m, sizeof *c);
    if (!c) return FED_ENOMEM;
    for (size_t i = 0; i < m; i++) c[i] = (named){L->o.classes[i], i};
    qsort(c, m, sizeof *c, name_cmp);
    fed_err err = FED_OK;
    for (size_t g = 0; g < L->n && !err; g++) {
        const named *hit = bsearch(&r[g], c, m, sizeof *c, name_cmp);
        if (hit) {
            y[r[g].i] = (int32_t)hit->i;
        } else {
            char list[256];
            list_classes(list, sizeof list, L->o.classes, m);
            err = fed_errorf(FED_EFORMAT, "%s:%zu: unknown class \"%.64s\" (the classes: %s)",
                             L->what, L->lab[r[g].i].line, r[g].s, list);
        }
    }
    fed_free(c);
    return err;
}

/* Class ids y[0..n) of the kept rows and, for names, *names (id order); *k classes. */
static fed_err resolve_labels(loader *L, int32_t *y, char ***names, size_t *k) {
    *names = NULL;
    *k = 0;
    named *r = fed_mallocarray(L->n, sizeof *r);
    if (!r) return FED_ENOMEM;
    for (size_t i = 0; i < L->n; i++) r[i] = (named){L->pool + L->lab[i].off, i};
    qsort(r, L->n, sizeof *r, named_cmp);
    fed_err err = FED_OK;
    size_t v = 0, distinct = 0, top = 0;
    const named *big = NULL; /* the first integer label out of range */
    bool integers = true;
    for (size_t g = 0; g < L->n; g++) {
        if (g > 0 && strcmp(r[g].s, r[g - 1].s) == 0) continue;
        distinct++;
        if (!integer_label(r[g].s, &v))
            integers = false;
        else if (v >= FED_DATA_MAX_CLASSES && !big)
            big = &r[g];
        else if (v + 1 > top)
            top = v + 1;
    }
    if (!L->o.classes && integers && big) {
        err = fed_errorf(FED_ERANGE, "%s:%zu: label %.24s is not below %d", L->what,
                         L->lab[big->i].line, big->s, FED_DATA_MAX_CLASSES);
        goto done;
    }
    if (L->o.classes) {
        if ((err = ids_by_classes(L, r, y))) goto done;
        if (!(*names = fed_calloc(L->o.num_classes, sizeof **names))) goto oom;
        *k = L->o.num_classes;
        for (size_t i = 0; i < *k; i++)
            if (!((*names)[i] = fed_strdup(L->o.classes[i]))) goto oom;
    } else if (integers) {
        for (size_t i = 0; i < L->n; i++) {
            integer_label(L->pool + L->lab[i].off, &v);
            y[i] = (int32_t)v;
        }
        *k = top;
    } else {
        if (distinct > FED_DATA_MAX_CLASSES) {
            err = fed_errorf(FED_ERANGE, "%s: more than %d distinct labels", L->what,
                             FED_DATA_MAX_CLASSES);
            goto done;
        }
        if (!(*names = fed_calloc(distinct, sizeof **names))) goto oom;
        *k = distinct;
        size_t id = 0;
        for (size_t g = 0; g < L->n; g++) {
            if (g > 0 && strcmp(r[g].s, r[g - 1].s) != 0) id++;
            if (!(*names)[id] && !((*names)[id] = fed_strdup(r[g].s))) goto oom;
            y[r[g].i] = (int32_t)id;
        }
    }
    goto done;
oom:
    err = FED_ENOMEM;
done:
    if (err) {
        names_free(*names, *k);
        *names = NULL;
        *k = 0;
    }
    fed_free(r);
    return err;
}

/* The data set of the kept rows. */
static fed_err finish(loader *L, fed_dataset **out) {
    if (L->n == 0) {
        if (L->st.dropped_empty)
            return fed_errorf(FED_EFORMAT, "%s: no rows: all %zu texts are empty", L->what,
                              L->st.dropped_empty);
        return fed_errorf(FED_EFORMAT, "%s: no rows", L->what);
    }
    int32_t *y = fed_mallocarray(L->n, sizeof *y);
    if (!y) return FED_ENOMEM;
    char **names = NULL;
    size_t k = 0;
    fed_dataset *d = NULL;
    fed_err err = resolve_labels(L, y, &names, &k);
    if (!err) err = fed_data_new(&d, L->n, L->T, k);
    if (err) {
        names_free(names, k);
        fed_free(y);
        return err;
    }
    memcpy(d->x, L->x, L->n * L->T * sizeof *d->x);
    memcpy(d->y, y, L->n * sizeof *y);
    fed_free(y);
    d->class_names = names;
    d->stats.rows_read = L->st.rows;
    d->stats.rows_dropped = L->st.dropped_empty;
    *out = d;
    return FED_OK;
}

/* ---- CSV -------------------------------------------------------------------------------- */

/* A cursor over the input. */
typedef struct cursor {
    const char *s; /* the text */
    size_t n;      /* its length */
    size_t pos;    /* next byte */
    size_t line;   /* line of s[pos], from 1 */
} cursor;

/* A field of a record: where its bytes are in record.buf. */
typedef struct span {
    size_t off; /* start in buf */
    size_t len; /* bytes (a NUL follows them) */
} span;

/* One record's fields, copied (quotes undone) into buf. */
typedef struct record {
    char *buf;   /* field bytes, each followed by a NUL */
    size_t len;  /* bytes used */
    size_t cap;  /* bytes allocated */
    span *f;     /* (nf) the fields */
    size_t nf;   /* fields */
    size_t capf; /* entries of f */
    size_t line; /* line the record starts on */
} record;

static void record_free(record *r) {
    fed_free(r->buf);
    fed_free(r->f);
}

static fed_err put(record *r, const char *p, size_t k) {
    if (k == 0) return FED_OK;
    char *b = grow(r->buf, &r->cap, r->len + k, 1);
    if (!b) return FED_ENOMEM;
    r->buf = b;
    memcpy(b + r->len, p, k);
    r->len += k;
    return FED_OK;
}

static fed_err start_field(record *r) {
    span *f = grow(r->f, &r->capf, r->nf + 1, sizeof *f);
    if (!f) return FED_ENOMEM;
    r->f = f;
    r->f[r->nf] = (span){r->len, 0};
    return FED_OK;
}

/* Ends the field started last: its length, then a NUL after it. */
static fed_err end_field(record *r) {
    r->f[r->nf].len = r->len - r->f[r->nf].off;
    r->nf++;
    return put(r, "", 1);
}

/* The next record at c (blank lines skipped) into r; *got false at the end of input. */
static fed_err next_record(cursor *c, record *r, const char *what, bool *got) {
    *got = false;
    while (c->pos < c->n && (c->s[c->pos] == '\n' || (c->s[c->pos] == '\r' && c->pos + 1 < c->n &&
                                                      c->s[c->pos + 1] == '\n'))) {
        c->pos += c->s[c->pos] == '\r' ? 2 : 1;
        c->line++;
    }
    if (c->pos >= c->n) return FED_OK;
    r->len = r->nf = 0;
    r->line = c->line;
    fed_err err;
    for (;;) {
        if ((err = start_field(r))) return err;
        if (c->pos < c->n && c->s[c->pos] == '"') {
            size_t open = c->line;
            c->pos++;
            for (;;) {
                if (c->pos >= c->n)
                    return fed_errorf(FED_EFORMAT,
                                      "%s:%zu: the quoted field opened on this line never closes",
                                      what, open);
                char ch = c->s[c->pos];
                if (ch == '"') {
                    if (c->pos + 1 < c->n && c->s[c->pos + 1] == '"') {
                        if ((err = put(r, "\"", 1))) return err;
                        c->pos += 2;
                        continue;
                    }
                    c->pos++;
                    break;
                }
                size_t k = c->pos;
                while (k < c->n && c->s[k] != '"') {
                    if (c->s[k] == '\n') c->line++;
                    k++;
                }
                if ((err = put(r, c->s + c->pos, k - c->pos))) return err;
                c->pos = k;
            }
            bool end = c->pos >= c->n || c->s[c->pos] == ',' || c->s[c->pos] == '\n' ||
                       (c->s[c->pos] == '\r' && c->pos + 1 < c->n && c->s[c->pos + 1] == '\n');
            if (!end)
                return fed_errorf(FED_EFORMAT,
                                  "%s:%zu: field %zu: text after the closing quote (a quote "
                                  "inside a quoted field is written \"\")",
                                  what, c->line, r->nf + 1);
        } else {
            size_t k = c->pos;
            while (k < c->n && c->s[k] != ',' && c->s[k] != '\n' &&
                   !(c->s[k] == '\r' && k + 1 < c->n && c->s[k + 1] == '\n'))
                k++;
            if ((err = put(r, c->s + c->pos, k - c->pos))) return err;
            c->pos = k;
        }
        if ((err = end_field(r))) return err;
        if (c->pos < c->n && c->s[c->pos] == ',') {
            c->pos++;
            continue;
        }
        if (c->pos < c->n) { /* "\n" or "\r\n" */
            c->pos += c->s[c->pos] == '\r' ? 2 : 1;
            c->line++;
        }
        *got = true;
        return FED_OK;
    }
}

static const char *field(const record *r, size_t i) {
    return r->buf + r->f[i].off;
}

/* Columns "text" and "label" of the header record. */
static fed_err header_columns(const record *h, const char *what, size_t *tc, size_t *lc) {
    *tc = *lc = SIZE_MAX;
    for (size_t i = 0; i < h->nf; i++) {
        const char *name = field(h, i);
        size_t *slot = strcmp(name, "text") == 0 ? tc : strcmp(name, "label") == 0 ? lc : NULL;
        if (!slot) continue;
        if (*slot != SIZE_MAX)
            return fed_errorf(FED_EFORMAT, "%s:%zu: two columns named \"%s\"", what, h->line, name);
        *slot = i;
    }
    const char *missing = *tc == SIZE_MAX ? "text" : *lc == SIZE_MAX ? "label" : NULL;
    if (missing)
        return fed_errorf(FED_EFORMAT,
                          "%s:%zu: no \"%s\" column in the header (text data needs the columns "
                          "\"text\" and \"label\")",
                          what, h->line, missing);
    return FED_OK;
}

static fed_err read_csv(loader *L, cursor *c) {
    record h, r;
    memset(&h, 0, sizeof h);
    memset(&r, 0, sizeof r);
    bool got;
    size_t tc, lc;
    fed_err err = next_record(c, &h, L->what, &got);
    if (!err && !got) err = fed_errorf(FED_EFORMAT, "%s: empty file: no header", L->what);
    if (!err) err = header_columns(&h, L->what, &tc, &lc);
    while (!err) {
        if ((err = next_record(c, &r, L->what, &got)) || !got) break;
        if (r.nf != h.nf) {
            err = fed_errorf(FED_EFORMAT, "%s:%zu: %zu fields, the header has %zu", L->what, r.line,
                             r.nf, h.nf);
            break;
        }
        err = add_row(L, r.line, field(&r, tc), r.f[tc].len, field(&r, lc), r.f[lc].len);
    }
    record_free(&h);
    record_free(&r);
    return err;
}

/* ---- JSON lines ------------------------------------------------------------------------- */

/* The label of a JSON line as text into buf (cap bytes): a string as it is, a number
 * that is an integer >= 0 in decimal. NULL when it is neither. */
static const char *json_label(const cJSON *v, char *buf, size_t cap, size_t *len) {
    if (cJSON_IsString(v)) {
        *len = strlen(v->valuestring);
        return v->valuestring;
    }
    if (!cJSON_IsNumber(v)) return NULL;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0 && d == floor(d))) return NULL;
    int w = snprintf(buf, cap, "%.0f", d);
    if (w < 0 || (size_t)w >= cap) return NULL;
    *len = (size_t)w;
    return buf;
}

/* One line (s[0..n), not blank) of JSON lines. */
static fed_err json_row(loader *L, size_t line, const char *s, size_t n) {
    size_t nul = fed__data_json_nul(s, n);
    if (nul < n)
        return fed_errorf(FED_EFORMAT, "%s:%zu: \\u0000 is not supported in a text", L->what, line);
    if (memchr(s, '\0', n))
        return fed_errorf(FED_EFORMAT, "%s:%zu: a NUL byte in a JSON line", L->what, line);
    cJSON *o = fed__data_json_parse(s, n);
    if (!o) {
        if (fed_json_oom()) return FED_ENOMEM;
        return fed_errorf(FED_EFORMAT, "%s:%zu: bad JSON", L->what, line);
    }
    fed_err err = FED_OK;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text");
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(o, "label");
    char buf[32];
    size_t llen = 0;
    const char *lab = l ? json_label(l, buf, sizeof buf, &llen) : NULL;
    if (!cJSON_IsObject(o))
        err = fed_errorf(FED_EFORMAT, "%s:%zu: not a JSON object {\"text\": ..., \"label\": ...}",
                         L->what, line);
    else if (!t)
        err = fed_errorf(FED_EFORMAT, "%s:%zu: no \"text\"", L->what, line);
    else if (!cJSON_IsString(t))
        err = fed_errorf(FED_EFORMAT, "%s:%zu: \"text\" must be a string", L->what, line);
    else if (!l)
        err = fed_errorf(FED_EFORMAT, "%s:%zu: no \"label\"", L->what, line);
    else if (!lab)
        err = fed_errorf(FED_EFORMAT, "%s:%zu: \"label\" must be a string or an integer >= 0",
                         L->what, line);
    else
        err = add_row(L, line, t->valuestring, strlen(t->valuestring), lab, llen);
    cJSON_Delete(o);
    return err;
}

static fed_err read_jsonl(loader *L, cursor *c) {
    fed_err err = FED_OK;
    while (!err && c->pos < c->n) {
        const char *s = c->s + c->pos;
        const char *nl = memchr(s, '\n', c->n - c->pos);
        size_t len = nl ? (size_t)(nl - s) : c->n - c->pos;
        size_t k = 0;
        while (k < len && is_space(s[k])) k++;
        if (k < len) err = json_row(L, c->line, s, len);
        c->pos += len + (nl ? 1 : 0);
        c->line++;
    }
    return err;
}

/* ---- entry points ------------------------------------------------------------------------ */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static bool jsonl_name(const char *name) {
    static const char *const ext[] = {".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (ends_with(name, ext[i])) return true;
    return false;
}

/* The first byte of s[0..n) that is no white space is '{'. */
static bool starts_like_json(const char *s, size_t n) {
    size_t k = 0;
    while (k < n && is_space(s[k])) k++;
    return k < n && s[k] == '{';
}

fed_err fed_data_parse_text(fed_dataset **out, const char *text, size_t len, const char *what,
                            const fed_tokenizer *tok, size_t T, const fed_text_options *o,
                            fed_text_stats *stats) {
    *out = NULL;
    if (stats) memset(stats, 0, sizeof *stats);
    if (!what) what = "text data";
    if ((!text && len) || !tok) return fed_errorf(FED_EINVAL, "%s: no text or no tokenizer", what);
    if (T == 0 || T > FED_TEXT_MAX_LEN)
        return fed_errorf(FED_EINVAL, "%s: sequence length %zu is not in [1, %zu]", what, T,
                          FED_TEXT_MAX_LEN);
    loader L;
    memset(&L, 0, sizeof L);
    L.what = what;
    L.tok = tok;
    L.T = T;
    if (o) L.o = *o;
    if ((unsigned)L.o.format > FED_TEXT_JSONL)
        return fed_errorf(FED_EINVAL, "%s: unknown text format %d", what, (int)L.o.format);
    if (L.o.classes && (L.o.num_classes == 0 || L.o.num_classes > FED_DATA_MAX_CLASSES))
        return fed_errorf(FED_EINVAL, "%s: %zu known classes (need 1 to %d)", what, L.o.num_classes,
                          FED_DATA_MAX_CLASSES);
    for (size_t i = 0; L.o.classes && i < L.o.num_classes; i++)
        if (!L.o.classes[i]) return fed_errorf(FED_EINVAL, "%s: known class %zu is NULL", what, i);
    size_t bad = fed_utf8_bad_at(text, len);
    if (bad < len) {
        size_t line = 1;
        for (size_t i = 0; i < bad; i++) line += text[i] == '\n';
        return fed_errorf(FED_EFORMAT, "%s:%zu: invalid UTF-8 at byte %zu of the file", what, line,
                          bad);
    }
    cursor c = {text, len, 0, 1};
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) c.pos = 3; /* a byte-order mark */
    bool jsonl = L.o.format == FED_TEXT_JSONL ||
                 (L.o.format == FED_TEXT_AUTO &&
                  (jsonl_name(what) || starts_like_json(text + c.pos, len - c.pos)));
    fed_err err = jsonl ? read_jsonl(&L, &c) : read_csv(&L, &c);
    if (!err) err = finish(&L, out);
    if (stats) *stats = L.st;
    loader_free(&L);
    return err;
}

fed_err fed_data_load_text(fed_dataset **out, const char *path, const fed_tokenizer *tok, size_t T,
                           const fed_text_options *o, fed_text_stats *stats) {
    *out = NULL;
    if (stats) memset(stats, 0, sizeof *stats);
    unsigned char *buf = NULL;
    size_t n = 0;
    fed_err err = fed__data_read_file(path, &buf, &n);
    if (!err) err = fed_data_parse_text(out, (const char *)buf, n, path, tok, T, o, stats);
    fed_free(buf);
    return err;
}

fed_err fed_text_sniff(const char *path, bool *is_text) {
    *is_text = false;
    if (jsonl_name(path)) {
        *is_text = true;
        return FED_OK;
    }
    /* What cannot be read is no text: the loader that follows says why. */
    FILE *f = fopen(path, "rb");
    if (!f) return FED_OK;
    char head[SNIFF_BYTES];
    size_t n = fread(head, 1, sizeof head, f);
    bool failed = ferror(f) != 0;
    fclose(f);
    if (failed) return FED_OK;
    unsigned char *whole = NULL;
    const char *s = head;
    if (n >= 2 && (unsigned char)head[0] == 0x1f && (unsigned char)head[1] == 0x8b) {
        fed_err err = fed__data_read_file(path, &whole, &n); /* gzip: inflate it all */
        if (err == FED_ENOMEM) return err;
        fed_errclear();
        if (err) return FED_OK;
        s = (const char *)whole;
        if (n > SNIFF_BYTES) n = SNIFF_BYTES;
    }
    cursor c = {s, n, 0, 1};
    if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) c.pos = 3;
    if (starts_like_json(s + c.pos, n - c.pos)) {
        *is_text = true;
    } else {
        /* Only the first line: a quoted field across lines is no header of ours. */
        const char *nl = memchr(s + c.pos, '\n', n - c.pos);
        if (nl) c.n = (size_t)(nl - s);
        record r;
        memset(&r, 0, sizeof r);
        bool got = false;
        fed_err err = next_record(&c, &r, path, &got);
        for (size_t i = 0; !err && got && i < r.nf && !*is_text; i++)
            *is_text = strcmp(field(&r, i), "text") == 0;
        record_free(&r);
        fed_errclear();
        if (err == FED_ENOMEM) {
            fed_free(whole);
            return err;
        }
    }
    fed_free(whole);
    return FED_OK;
}

/* ---- JSON strings ------------------------------------------------------------------------ */

fed_err fed_text_json_string(char **out, size_t *len, const char *s, size_t n) {
    *out = NULL;
    *len = 0;
    size_t nul = fed__data_json_nul(s, n);
    if (nul < n)
        return fed_errorf(FED_EFORMAT, "byte %zu: \\u0000 is not supported in a text", nul);
    cJSON *v = fed__data_json_parse(s, n);
    if (!v) {
        if (fed_json_oom()) return fed_errorf(FED_ENOMEM, "out of memory reading JSON");
        return fed_errorf(FED_EFORMAT, "not a JSON string");
    }
    fed_err err = FED_OK;
    if (!cJSON_IsString(v)) {
        err = fed_errorf(FED_EFORMAT, "not a JSON string");
    } else if (!(*out = fed_strdup(v->valuestring))) {
        err = FED_ENOMEM;
    } else {
        *len = strlen(*out);
    }
    cJSON_Delete(v);
    return err;
}
