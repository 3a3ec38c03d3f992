/* CSV and the scikit-learn CSV flavour. One pass over the text tokenizes fields (RFC 4180
 * quoting with "" escapes, LF or CRLF, blank lines skipped), parses feature cells with
 * strtod straight into the final float matrix (sized from a count of delimiters, so no
 * per-cell or per-row allocation), and interns label cells in a small hash table that is
 * mapped to class ids at the end. Errors name what:line:column and show the cell.
 * Reading files, gzip and IDX live in dataset_io.c; sets, splits, reports and
 * augmentation in dataset.c. */
#include "core/alloc.h"
#include "dataset/dataset.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NUMBER_MAX   127 /* longest cell handed to strtod; longer cells are not numbers */
#define SHOW_MAX     32  /* cell bytes quoted in messages */
#define NAMES_LISTED 8   /* column or class names listed in a message */

/* ---- small helpers ------------------------------------------------------------------- */

/* Grows p (capacity *cap elements of size bytes) to hold need elements, doubling. Returns
 * the new block (and updates *cap) or NULL with p untouched. */
static void *grow(void *p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 16, bytes;
    while (c < need) c = c > SIZE_MAX / 2 ? need : c * 2;
    if (!fed_mul_ok(c, size, &bytes)) {
        fed_errorf(FED_ENOMEM, "out of memory");
        return NULL;
    }
    void *q = fed_realloc(p, bytes);
    if (q) *cap = c;
    return q;
}

/* NUL-terminated strings packed in one buffer, addressed by offset. */
typedef struct strpool {
    char *b;    /* the bytes */
    size_t n;   /* bytes used */
    size_t cap; /* bytes allocated */
} strpool;

static fed_err pool_add(strpool *s, const char *p, size_t n, size_t *off) {
    size_t need;
    if (!fed_add_ok(s->n, n, &need) || !fed_add_ok(need, 1, &need))
        return fed_errorf(FED_ENOMEM, "out of memory");
    char *b = grow(s->b, &s->cap, need, 1);
    if (!b) return FED_ENOMEM;
    s->b = b;
    if (n) memcpy(b + s->n, p, n);
    b[s->n + n] = '\0';
    *off = s->n;
    s->n = need;
    return FED_OK;
}

/* A cell as messages show it: at most SHOW_MAX bytes, control bytes as '?'. */
typedef struct shown {
    char s[SHOW_MAX + 4]; /* text, "..." appended when cut */
} shown;

static shown show(const char *p, size_t n) {
    shown r;
    size_t k = n < SHOW_MAX ? n : SHOW_MAX;
    for (size_t i = 0; i < k; i++) {
        unsigned char ch = (unsigned char)p[i];
        r.s[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    if (n > SHOW_MAX)
        memcpy(r.s + k, "...", 4);
    else
        r.s[k] = '\0';
    return r;
}

/* Appends ", name" (or "name" first) to buf while there is room. */
static void list_add(char *buf, size_t cap, size_t i, const char *name) {
    size_t used = strlen(buf);
    if (used + 1 >= cap) return;
    if (i == NAMES_LISTED) {
        snprintf(buf + used, cap - used, ", ...");
        return;
    }
    if (i > NAMES_LISTED) return;
    snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", show(name, strlen(name)).s);
}

static bool ieq(const char *p, size_t n, const char *lit) {
    if (strlen(lit) != n) return false;
    for (size_t i = 0; i < n; i++) {
        char a = p[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
        if (a != lit[i]) return false;
    }
    return true;
}

/* Empty, "?", "NA" or "NaN" (any case). */
static bool is_missing(const char *p, size_t n) {
    return n == 0 || (n == 1 && p[0] == '?') || ieq(p, n, "na") || ieq(p, n, "nan");
}

typedef enum numkind {
    NUM_OK,        /* a finite number that fits a float */
    NUM_MISSING,   /* see is_missing */
    NUM_BAD,       /* not a number */
    NUM_NONFINITE, /* "inf", "nan(1)", ... */
    NUM_RANGE,     /* beyond float range */
} numkind;

static numkind parse_number(const char *p, size_t n, double *v) {
    if (is_missing(p, n)) return NUM_MISSING;
    if (n > NUMBER_MAX) return NUM_BAD;
    char buf[NUMBER_MAX + 1];
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (end != buf + n) return NUM_BAD;
    if (errno == ERANGE && fabs(d) > 1.0) return NUM_RANGE; /* underflow to ~0 is fine */
    if (!isfinite(d)) return NUM_NONFINITE;
    if (fabs(d) > (double)FLT_MAX) return NUM_RANGE;
    *v = d;
    return NUM_OK;
}

/* Digits only, >= 1, well below overflow. */
static bool positive_int(const char *s, size_t *v) {
    size_t r = 0;
    if (!*s) return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || r > SIZE_MAX / 16) return false;
        r = r * 10 + (size_t)(*s - '0');
    }
    *v = r;
    return r >= 1;
}

/* ---- tokenizer ----------------------------------------------------------------------- */

typedef struct tok {
    const char *s;    /* the text */
    size_t len;       /* its bytes */
    size_t pos;       /* next byte */
    size_t line;      /* 1-based line of s[pos] */
    char delim;       /* field separator */
    const char *what; /* names the text in messages */
    char *buf;        /* unescaped content of a quoted cell with "" in it */
    size_t cap;       /* bytes of buf */
} tok;

typedef struct cell {
    const char *p; /* content: into the text, or tok.buf until the next cell */
    size_t n;      /* bytes */
    size_t line;   /* 1-based line where the cell starts */
    size_t col;    /* 1-based field number */
} cell;

/* Spaces around fields are ignored, '\r' included (which is what makes CRLF work),
 * unless the delimiter is one of them. */
static bool is_space(const tok *t, char ch) {
    return (ch == ' ' || ch == '\t' || ch == '\r') && ch != t->delim;
}

/* Skips lines holding only spaces; false at the end of the text. */
static bool skip_blank(tok *t) {
    while (t->pos < t->len) {
        size_t p = t->pos;
        while (p < t->len && is_space(t, t->s[p])) p++;
        if (p == t->len) {
            t->pos = p;
            return false;
        }
        if (t->s[p] != '\n') return true;
        t->pos = p + 1;
        t->line++;
    }
    return false;
}

/* Reads field number col starting at t->pos; *eor tells whether it ended the record. */
static fed_err next_cell(tok *t, cell *c, size_t col, bool *eor) {
    const char *s = t->s;
    size_t p = t->pos, len = t->len;
    while (p < len && is_space(t, s[p])) p++;
    c->line = t->line;
    c->col = col;
    if (p < len && s[p] == '"') {
        size_t start = ++p;
        bool escaped = false;
        for (;;) {
            if (p >= len)
                return fed_errorf(FED_EFORMAT, "%s:%zu:%zu: unterminated quoted field", t->what,
                                  c->line, col);
            if (s[p] == '"') {
                if (p + 1 < len && s[p + 1] == '"') {
                    escaped = true;
                    p += 2;
                    continue;
                }
                break;
            }
            if (s[p] == '\n') t->line++;
            p++;
        }
        size_t end = p++;
        if (!escaped) {
            c->p = s + start;
            c->n = end - start;
        } else {
            char *b = grow(t->buf, &t->cap, end - start, 1);
            if (!b) return FED_ENOMEM;
            t->buf = b;
            size_t k = 0;
            for (size_t i = start; i < end; i++) {
                b[k++] = s[i];
                if (s[i] == '"') i++; /* the second quote of "" */
            }
            c->p = b;
            c->n = k;
        }
        while (p < len && is_space(t, s[p])) p++;
        if (p < len && s[p] != t->delim && s[p] != '\n')
            return fed_errorf(FED_EFORMAT, "%s:%zu:%zu: text after the closing quote", t->what,
                              t->line, col);
    } else {
        size_t start = p;
        while (p < len && s[p] != t->delim && s[p] != '\n') p++;
        size_t end = p;
        while (end > start && is_space(t, s[end - 1])) end--;
        c->p = s + start;
        c->n = end - start;
    }
    if (p < len && s[p] == t->delim) {
        *eor = false;
        p++;
    } else {
        *eor = true;
        if (p < len) { /* the '\n' */
            p++;
            t->line++;
        }
    }
    t->pos = p;
    return FED_OK;
}

/* Fields of the record at t->pos without consuming it, and the value of its last field
 * when that is a non-negative integer (else -1); *bad on a quoting error. */
static fed_err peek_record(tok *t, size_t *fields, double *last, bool *bad) {
    size_t pos = t->pos, line = t->line, col = 0;
    bool eor = false;
    fed_err err = FED_OK;
    cell c = {NULL, 0, 0, 0};
    *bad = false;
    while (!eor) {
        if ((err = next_cell(t, &c, ++col, &eor))) break;
    }
    *last = -1.0;
    double v;
    if (!err && parse_number(c.p, c.n, &v) == NUM_OK && v >= 0.0 && v == floor(v)) *last = v;
    if (err == FED_EFORMAT) {
        *bad = true;
        err = FED_OK;
    }
    *fields = col;
    t->pos = pos;
    t->line = line;
    return err;
}

/* ---- labels -------------------------------------------------------------------------- */

typedef struct lab_entry {
    size_t off;    /* text in the pool */
    size_t n;      /* its bytes */
    uint64_t hash; /* of the text */
    size_t line;   /* first occurrence */
    size_t col;    /* its column */
    double value;  /* numeric value when integral */
    bool integral; /* a non-negative, integer-valued number ("3", "3.0", "3e0") */
    int32_t id;    /* final class id */
} lab_entry;

typedef struct labels {
    lab_entry *e;   /* distinct labels in order of first appearance */
    size_t n;       /* entries */
    size_t cap;     /* allocated entries */
    uint32_t *slot; /* open addressing: entry index + 1, 0 = empty; nslot a power of 2 */
    size_t nslot;   /* entries of slot */
    strpool pool;   /* label texts */
} labels;

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
    return fed_mix64(h);
}

static void labels_free(labels *L) {
    fed_free(L->e);
    fed_free(L->slot);
    fed_free(L->pool.b);
}

static void slot_put(uint32_t *slot, size_t nslot, uint64_t h, uint32_t v) {
    size_t i = (size_t)h & (nslot - 1);
    while (slot[i]) i = (i + 1) & (nslot - 1);
    slot[i] = v;
}

/* The provisional id (order of first appearance) of label text p[0..n). */
static fed_err intern(labels *L, const char *what, const cell *c, const char *p, size_t n,
                      int32_t *id) {
    uint64_t h = hash_bytes(p, n);
    if (L->nslot) {
        for (size_t i = (size_t)h & (L->nslot - 1);; i = (i + 1) & (L->nslot - 1)) {
            uint32_t s = L->slot[i];
            if (!s) break;
            const lab_entry *e = &L->e[s - 1];
            if (e->hash == h && e->n == n && memcmp(L->pool.b + e->off, p, n) == 0) {
                *id = (int32_t)(s - 1);
                return FED_OK;
            }
        }
    }
    if (L->n == FED_DATA_MAX_CLASSES)
        return fed_errorf(FED_ERANGE,
                          "%s:%zu:%zu: more than %d distinct labels (is the label column right?)",
                          what, c->line, c->col, FED_DATA_MAX_CLASSES);
    if ((L->n + 1) * 2 > L->nslot) {
        size_t ns = L->nslot ? L->nslot * 2 : 64;
        uint32_t *slot = fed_calloc(ns, sizeof *slot);
        if (!slot) return FED_ENOMEM;
        for (size_t i = 0; i < L->n; i++) slot_put(slot, ns, L->e[i].hash, (uint32_t)(i + 1));
        fed_free(L->slot);
        L->slot = slot;
        L->nslot = ns;
    }
    lab_entry *e = grow(L->e, &L->cap, L->n + 1, sizeof *e);
    if (!e) return FED_ENOMEM;
    L->e = e;
    lab_entry *nl = &e[L->n];
    memset(nl, 0, sizeof *nl);
    fed_err err = pool_add(&L->pool, p, n, &nl->off);
    if (err) return err;
    nl->n = n;
    nl->hash = h;
    nl->line = c->line;
    nl->col = c->col;
    double v;
    nl->integral = parse_number(p, n, &v) == NUM_OK && v >= 0.0 && v == floor(v);
    nl->value = nl->integral ? v : 0.0;
    slot_put(L->slot, L->nslot, h, (uint32_t)(L->n + 1));
    *id = (int32_t)L->n++;
    return FED_OK;
}

/* For qsort: names with their index. */
typedef struct named {
    const char *s; /* name */
    size_t i;      /* index it came from */
} named;

static int named_cmp(const void *a, const void *b) {
    return strcmp(((const named *)a)->s, ((const named *)b)->s);
}

static char **names_new(size_t k) {
    return fed_calloc(k, sizeof(char *));
}

static void names_free(char **names, size_t k) {
    if (!names) return;
    for (size_t i = 0; i < k; i++) fed_free(names[i]);
    fed_free(names);
}

/* ---- the parser ---------------------------------------------------------------------- */

typedef struct csv {
    const char *what;     /* names the text in messages */
    fed_csv_options o;    /* options with defaults filled in */
    tok t;                /* tokenizer */
    bool sklearn;         /* the sklearn flavour */
    bool header;          /* the first record is a header (or the sklearn line) */
    size_t first_line;    /* line of the first record */
    size_t ncols;         /* fields per record */
    size_t lc;            /* 0-based label column */
    size_t dim;           /* ncols - 1 features */
    strpool first;        /* cells of the first record */
    size_t *first_off;    /* (nfirst) their offsets in first */
    size_t nfirst;        /* cells of the first record */
    size_t first_cap;     /* allocated entries of first_off */
    size_t sk_samples;    /* sklearn: n_samples of line 1 */
    size_t sk_names;      /* sklearn: class names on line 1 */
    size_t sk_classes;    /* sklearn: label limit (0: FED_DATA_MAX_CLASSES) */
    float *x;             /* (cap_rows, dim), fed_aligned_alloc */
    int32_t *y;           /* (cap_rows) provisional ids (CSV) or class ids (sklearn) */
    size_t cap_rows;      /* rows x and y hold */
    size_t n;             /* rows kept */
    labels L;             /* distinct label texts (CSV) */
    double *sum;          /* (dim) FED_MISSING_MEAN: sums of present cells */
    size_t *cnt;          /* (dim) and their counts */
    char *lab;            /* label cell of the current row */
    size_t lab_cap;       /* bytes of lab */
    fed_data_stats stats; /* for the report */
} csv;

static void csv_free(csv *c) {
    fed_free(c->t.buf);
    fed_free(c->first.b);
    fed_free(c->first_off);
    fed_free(c->x);
    fed_free(c->y);
    labels_free(&c->L);
    fed_free(c->sum);
    fed_free(c->cnt);
    fed_free(c->lab);
}

static const char *first_cell(const csv *c, size_t i) {
    return c->first.b + c->first_off[i];
}

/* Reads the first record into c->first. */
static fed_err read_first(csv *c) {
    bool eor = false;
    c->first_line = c->t.line;
    while (!eor) {
        cell cl = {NULL, 0, 0, 0};
        fed_err err = next_cell(&c->t, &cl, c->nfirst + 1, &eor);
        if (err) return err;
        size_t *off = grow(c->first_off, &c->first_cap, c->nfirst + 1, sizeof *off);
        if (!off) return FED_ENOMEM;
        c->first_off = off;
        if ((err = pool_add(&c->first, cl.p, cl.n, &off[c->nfirst]))) return err;
        c->nfirst++;
    }
    return FED_OK;
}

/* Optional sign and digits: the label option is a column index. */
static bool index_text(const char *s) {
    if (*s == '-' || *s == '+') s++;
    if (!*s) return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return false;
    return true;
}

/* Label column and header for CSV, from the first record and the options. */
static fed_err resolve_columns(csv *c) {
    const char *label = c->o.label;
    c->ncols = c->nfirst;
    if (c->ncols < 2)
        return fed_errorf(FED_EFORMAT,
                          "%s:%zu: 1 field; need a label column and at least one feature "
                          "(delimiter '%c')",
                          c->what, c->first_line, c->t.delim);
    if (!label) {
        c->lc = c->ncols - 1;
    } else if (index_text(label)) {
        errno = 0;
        long long v = strtoll(label, NULL, 10);
        if (errno == ERANGE || v >= (long long)c->ncols || v < -(long long)c->ncols)
            return fed_errorf(FED_EINVAL, "%s: label column %s is out of range (%zu columns)",
                              c->what, label, c->ncols);
        c->lc = v < 0 ? (size_t)((long long)c->ncols + v) : (size_t)v;
    } else {
        if (c->o.header == FED_HEADER_NO)
            return fed_errorf(FED_EINVAL,
                              "%s: label column \"%s\" is a name, but there is no header "
                              "(give its 0-based index)",
                              c->what, label);
        size_t i = 0;
        while (i < c->ncols && strcmp(first_cell(c, i), label) != 0) i++;
        if (i == c->ncols) {
            char list[320] = "";
            for (size_t k = 0; k < c->ncols && k <= NAMES_LISTED; k++)
                list_add(list, sizeof list, k, first_cell(c, k));
            return fed_errorf(FED_EINVAL,
                              "%s:%zu: no column named \"%s\" for the label (header: %s)", c->what,
                              c->first_line, show(label, strlen(label)).s, list);
        }
        c->lc = i;
        c->header = true;
        return FED_OK;
    }
    if (c->o.header == FED_HEADER_YES) {
        c->header = true;
    } else if (c->o.header == FED_HEADER_AUTO) {
        for (size_t i = 0; i < c->ncols && !c->header; i++) {
            double v;
            const char *s = first_cell(c, i);
            c->header = i != c->lc && parse_number(s, strlen(s), &v) == NUM_BAD;
        }
    }
    return FED_OK;
}

/* The sklearn first line "n_samples,n_features[,class names]" and the field count of the
 * line after it. strict: errors; otherwise *ok says whether the text looks like one. */
static fed_err sklearn_head(csv *c, bool strict, bool *ok) {
    size_t ns = 0, nf = 0;
    *ok = false;
    bool shape = c->nfirst >= 2 && positive_int(first_cell(c, 0), &ns) &&
                 positive_int(first_cell(c, 1), &nf);
    for (size_t i = 2; shape && i < c->nfirst; i++) {
        const char *s = first_cell(c, i);
        double v;
        shape = *s && (strict || parse_number(s, strlen(s), &v) == NUM_BAD);
    }
    if (!shape) {
        if (!strict) return FED_OK;
        return fed_errorf(FED_EFORMAT,
                          "%s:%zu: the sklearn flavour starts with \"n_samples,n_features"
                          "[,class names...]\"",
                          c->what, c->first_line);
    }
    size_t nn = c->nfirst - 2;
    if (nn > FED_DATA_MAX_CLASSES) {
        if (!strict) return FED_OK;
        return fed_errorf(FED_ERANGE, "%s:%zu: more than %d class names", c->what, c->first_line,
                          FED_DATA_MAX_CLASSES);
    }
    /* The next record must have n_features + 1 fields; to be taken for the flavour without
     * being asked, its label must also be a class number ("1,2,cat" then "3,4,dog" is a
     * table with string labels). */
    size_t fields = 0;
    double label = -1.0;
    bool bad = false, more = skip_blank(&c->t);
    fed_err err = more ? peek_record(&c->t, &fields, &label, &bad) : FED_OK;
    if (err) return err;
    if (!strict && (label < 0.0 || (nn && label >= (double)nn))) return FED_OK;
    if (!more || bad || fields != nf + 1) {
        if (!strict || bad) return FED_OK; /* a quoting error is reported by the parse */
        if (!more)
            return fed_errorf(FED_EFORMAT, "%s:%zu: no data rows after the first line", c->what,
                              c->first_line);
        return fed_errorf(FED_EFORMAT,
                          "%s:%zu: %zu fields, expected %zu (n_features %zu on line %zu, plus "
                          "the label)",
                          c->what, c->t.line, fields, nf + 1, nf, c->first_line);
    }
    if (!strict && nn == 0) {
        /* "5,1" may just as well be a row of a two-column table: insist that the
         * record count agrees too. */
        size_t pos = c->t.pos, line = c->t.line, rows = 0;
        while (!bad && skip_blank(&c->t)) {
            bool eor = false;
            for (size_t col = 1; !eor && !bad; col++) {
                cell cl = {NULL, 0, 0, 0};
                err = next_cell(&c->t, &cl, col, &eor);
                if (err == FED_EFORMAT) {
                    bad = true;
                    err = FED_OK;
                }
                if (err) return err;
            }
            rows++;
        }
        c->t.pos = pos;
        c->t.line = line;
        if (bad || rows != ns) return FED_OK;
    }
    if (nn > 0) {
        /* Names are ids in order; a repeated one would make two classes one name. */
        named *s = fed_mallocarray(nn, sizeof *s);
        if (!s) return FED_ENOMEM;
        for (size_t i = 0; i < nn; i++) s[i] = (named){first_cell(c, i + 2), i};
        qsort(s, nn, sizeof *s, named_cmp);
        for (size_t i = 1; i < nn; i++) {
            if (strcmp(s[i - 1].s, s[i].s) == 0) {
                size_t col = (s[i].i > s[i - 1].i ? s[i].i : s[i - 1].i) + 3;
                fed_free(s);
                if (!strict) return FED_OK;
                const char *dup = first_cell(c, col - 1);
                return fed_errorf(FED_EFORMAT, "%s:%zu:%zu: class name \"%s\" appears twice",
                                  c->what, c->first_line, col, show(dup, strlen(dup)).s);
            }
        }
        fed_free(s);
    }
    c->sklearn = true;
    c->header = true;
    c->sk_samples = ns;
    c->sk_names = nn;
    c->ncols = nf + 1;
    c->lc = nf;
    *ok = true;
    return FED_OK;
}

/* What to call file column j (0-based) in a message. */
static void column_name(const csv *c, size_t j, char *buf, size_t cap) {
    if (c->header && !c->sklearn && j < c->nfirst) {
        const char *s = first_cell(c, j);
        snprintf(buf, cap, "column %zu (\"%s\")", j + 1, show(s, strlen(s)).s);
    } else {
        snprintf(buf, cap, "column %zu", j + 1);
    }
}

static fed_err cell_error(const csv *c, const cell *cl, numkind k) {
    shown v = show(cl->p, cl->n);
    switch (k) {
    case NUM_MISSING:
        return fed_errorf(FED_EFORMAT,
                          "%s:%zu:%zu: missing value \"%s\" (use --missing drop|mean to drop the "
                          "row or impute the column mean)",
                          c->what, cl->line, cl->col, v.s);
    case NUM_NONFINITE:
        return fed_errorf(FED_EFORMAT, "%s:%zu:%zu: \"%s\" is not a finite number", c->what,
                          cl->line, cl->col, v.s);
    case NUM_RANGE:
        return fed_errorf(FED_ERANGE, "%s:%zu:%zu: \"%s\" is out of float range", c->what, cl->line,
                          cl->col, v.s);
    case NUM_OK:
    case NUM_BAD:
        break;
    }
    return fed_errorf(FED_EFORMAT, "%s:%zu:%zu: \"%s\" is not a number", c->what, cl->line, cl->col,
                      v.s);
}

/* The label of a kept sklearn row: an integer below the class count. */
static fed_err sklearn_label(csv *c, const cell *cl, int32_t *id) {
    double v;
    numkind k = parse_number(c->lab, cl->n, &v);
    shown s = show(c->lab, cl->n);
    if (k != NUM_OK || v < 0.0 || v != floor(v))
        return fed_errorf(FED_EFORMAT,
                          "%s:%zu:%zu: label \"%s\" is not a class number (the sklearn flavour "
                          "has integer labels)",
                          c->what, cl->line, cl->col, s.s);
    if (c->sk_classes && v >= (double)c->sk_classes)
        return fed_errorf(FED_ERANGE, "%s:%zu:%zu: label %s but there are %zu classes", c->what,
                          cl->line, cl->col, s.s, c->sk_classes);
    if (v >= (double)FED_DATA_MAX_CLASSES)
        return fed_errorf(FED_ERANGE, "%s:%zu:%zu: label %s is not below %d", c->what, cl->line,
                          cl->col, s.s, FED_DATA_MAX_CLASSES);
    *id = (int32_t)v;
    return FED_OK;
}

/* Every data record: features into x, labels into y. */
static fed_err read_rows(csv *c) {
    tok *t = &c->t;
    const size_t dim = c->dim;
    while (skip_blank(t)) {
        size_t line = t->line, col = 0, f = 0;
        bool eor = false, missing = false;
        fed_err bad = FED_OK; /* first bad cell, reported once the row has the right width */
        cell lab = {NULL, 0, 0, 0};
        if (c->n >= c->cap_rows) /* cannot happen: cap_rows bounds the rows the text holds */
            return fed_errorf(FED_EINTERNAL, "%s:%zu: row capacity exceeded", c->what, line);
        float *xr = c->x + c->n * dim;
        while (!eor) {
            cell cl = {NULL, 0, 0, 0};
            fed_err err = next_cell(t, &cl, ++col, &eor);
            if (err) return err;
            if (col > c->ncols) continue; /* counted for the message below */
            if (col - 1 == c->lc) {
                char *b = grow(c->lab, &c->lab_cap, cl.n + 1, 1);
                if (!b) return FED_ENOMEM;
                c->lab = b;
                memcpy(b, cl.p, cl.n);
                b[cl.n] = '\0';
                lab = cl;
                lab.p = b;
                continue;
            }
            double v = 0.0;
            numkind k = parse_number(cl.p, cl.n, &v);
            if (k == NUM_MISSING && c->o.missing == FED_MISSING_DROP) {
                missing = true;
            } else if (k == NUM_MISSING && c->o.missing == FED_MISSING_MEAN) {
                xr[f] = NAN;
            } else if (k == NUM_OK) {
                xr[f] = (float)v;
                if (c->sum) {
                    c->sum[f] += (double)xr[f];
                    c->cnt[f]++;
                }
            } else if (!bad) {
                bad = cell_error(c, &cl, k); /* records the message now: cl is transient */
            }
            f++;
        }
        if (col != c->ncols) {
            if (c->sklearn)
                return fed_errorf(FED_EFORMAT,
                                  "%s:%zu: %zu fields, expected %zu (n_features %zu on line %zu, "
                                  "plus the label)",
                                  c->what, line, col, c->ncols, c->dim, c->first_line);
            return fed_errorf(FED_EFORMAT, "%s:%zu: %zu fields, expected %zu (as line %zu)",
                              c->what, line, col, c->ncols, c->first_line);
        }
        if (bad) return bad;
        c->stats.rows_read++;
        if (c->sklearn && c->stats.rows_read > c->sk_samples)
            return fed_errorf(FED_EFORMAT, "%s:%zu: more rows than the %zu of line %zu", c->what,
                              line, c->sk_samples, c->first_line);
        if (is_missing(lab.p, lab.n))
            return fed_errorf(FED_EFORMAT, "%s:%zu:%zu: missing label \"%s\"", c->what, lab.line,
                              lab.col, show(lab.p, lab.n).s);
        if (missing) {
            c->stats.rows_dropped++;
            continue;
        }
        fed_err err = c->sklearn ? sklearn_label(c, &lab, &c->y[c->n])
                                 : intern(&c->L, c->what, &lab, lab.p, lab.n, &c->y[c->n]);
        if (err) return err;
        c->n++;
    }
    return FED_OK;
}

/* FED_MISSING_MEAN: NaN markers become their column's mean. */
static fed_err impute(csv *c) {
    for (size_t f = 0; f < c->dim; f++) {
        if (c->cnt[f] == c->n) continue;
        if (c->cnt[f] == 0) {
            char name[80];
            column_name(c, f < c->lc ? f : f + 1, name, sizeof name);
            return fed_errorf(FED_EFORMAT, "%s: %s has no value to impute the mean from", c->what,
                              name);
        }
        c->sum[f] /= (double)c->cnt[f];
    }
    for (size_t i = 0; i < c->n; i++) {
        float *xr = c->x + i * c->dim;
        for (size_t f = 0; f < c->dim; f++) {
            if (isnan(xr[f])) {
                xr[f] = (float)c->sum[f];
                c->stats.cells_imputed++;
            }
        }
    }
    return FED_OK;
}

/* Class ids for the interned CSV labels; fills *names (or leaves NULL) and *k. */
static fed_err resolve_labels(csv *c, char ***names, size_t *k) {
    labels *L = &c->L;
    named *s = NULL;
    fed_err err = FED_ENOMEM;
    *names = NULL;
    *k = 0;
    if (c->o.classes) {
        /* Given classes: look each label up among them. */
        size_t m = c->o.num_classes;
        if (!(s = fed_mallocarray(m, sizeof *s))) goto fail;
        for (size_t i = 0; i < m; i++) s[i] = (named){c->o.classes[i], i};
        qsort(s, m, sizeof *s, named_cmp);
        for (size_t i = 0; i < L->n; i++) {
            named key = {L->pool.b + L->e[i].off, 0};
            const named *hit = bsearch(&key, s, m, sizeof *s, named_cmp);
            if (!hit) {
                char list[320] = "";
                for (size_t j = 0; j < m && j <= NAMES_LISTED; j++)
                    list_add(list, sizeof list, j, c->o.classes[j]);
                err =
                    fed_errorf(FED_EFORMAT, "%s:%zu:%zu: unknown class \"%s\" (expected: %s)",
                               c->what, L->e[i].line, L->e[i].col, show(key.s, L->e[i].n).s, list);
                goto fail;
            }
            L->e[i].id = (int32_t)hit->i;
        }
        if (!(*names = names_new(m))) goto fail;
        for (size_t i = 0; i < m; i++)
            if (!((*names)[i] = fed_strdup(c->o.classes[i]))) goto fail;
        *k = m;
    } else {
        bool integral = true;
        for (size_t i = 0; i < L->n && integral; i++) integral = L->e[i].integral;
        if (integral) {
            size_t m = 0;
            for (size_t i = 0; i < L->n; i++) {
                const lab_entry *e = &L->e[i];
                if (e->value >= (double)FED_DATA_MAX_CLASSES) {
                    err = fed_errorf(FED_ERANGE, "%s:%zu:%zu: label %s is not below %d", c->what,
                                     e->line, e->col, show(L->pool.b + e->off, e->n).s,
                                     FED_DATA_MAX_CLASSES);
                    goto fail;
                }
                L->e[i].id = (int32_t)e->value;
                if ((size_t)e->value + 1 > m) m = (size_t)e->value + 1;
            }
            *k = m;
        } else {
            if (!(s = fed_mallocarray(L->n, sizeof *s))) goto fail;
            for (size_t i = 0; i < L->n; i++) s[i] = (named){L->pool.b + L->e[i].off, i};
            qsort(s, L->n, sizeof *s, named_cmp);
            if (!(*names = names_new(L->n))) goto fail;
            *k = L->n;
            for (size_t r = 0; r < L->n; r++) {
                L->e[s[r].i].id = (int32_t)r;
                if (!((*names)[r] = fed_strdup(s[r].s))) goto fail;
            }
        }
    }
    for (size_t i = 0; i < c->n; i++) c->y[i] = L->e[c->y[i]].id;
    fed_free(s);
    return FED_OK;
fail:
    names_free(*names, c->o.classes ? c->o.num_classes : L->n);
    *names = NULL;
    fed_free(s);
    return err;
}

/* Class names and count for the sklearn flavour. */
static fed_err sklearn_classes(csv *c, char ***names, size_t *k) {
    *names = NULL;
    size_t m = c->o.classes ? c->o.num_classes : c->sk_names; /* checked to agree */
    if (m == 0) {
        int32_t top = 0;
        for (size_t i = 0; i < c->n; i++)
            if (c->y[i] > top) top = c->y[i];
        *k = (size_t)top + 1;
        return FED_OK;
    }
    char **nm = names_new(m);
    if (!nm) return FED_ENOMEM;
    for (size_t i = 0; i < m; i++) {
        nm[i] = fed_strdup(c->o.classes ? c->o.classes[i] : first_cell(c, i + 2));
        if (!nm[i]) {
            names_free(nm, m);
            return FED_ENOMEM;
        }
    }
    *names = nm;
    *k = m;
    return FED_OK;
}

/* Checks options that do not depend on the text. */
static fed_err check_options(const fed_csv_options *o, const char *what) {
    char d = o->delimiter;
    if (d == '"' || d == '\n' || d == '\r')
        return fed_errorf(FED_EINVAL, "%s: the delimiter cannot be a quote or a line break", what);
    if (o->format == FED_FORMAT_IDX)
        return fed_errorf(FED_EINVAL, "%s: IDX is binary; use fed_data_parse_idx", what);
    if ((unsigned)o->format > FED_FORMAT_IDX || (unsigned)o->header > FED_HEADER_NO ||
        (unsigned)o->missing > FED_MISSING_MEAN)
        return fed_errorf(FED_EINVAL, "%s: unknown format, header or missing policy", what);
    if (o->classes && (o->num_classes == 0 || o->num_classes > FED_DATA_MAX_CLASSES))
        return fed_errorf(FED_EINVAL, "%s: %zu known classes (need 1 to %d)", what, o->num_classes,
                          FED_DATA_MAX_CLASSES);
    for (size_t i = 0; o->classes && i < o->num_classes; i++)
        if (!o->classes[i]) return fed_errorf(FED_EINVAL, "%s: known class %zu is NULL", what, i);
    return FED_OK;
}

fed_err fed_data_parse_csv(fed_dataset **out, const char *text, size_t len, const char *what,
                           const fed_csv_options *o) {
    *out = NULL;
    csv c;
    memset(&c, 0, sizeof c);
    c.what = what ? what : "input";
    if (o) c.o = *o;
    if (!c.o.delimiter) c.o.delimiter = ',';
    fed_err err = check_options(&c.o, c.what);
    if (err) return err;
    if (!text && len) return fed_errorf(FED_EINVAL, "%s: no text", c.what);
    c.t = (tok){text, len, 0, 1, c.o.delimiter, c.what, NULL, 0};

    /* Bound the rows by the delimiters: a row of dim features has dim of them. */
    size_t nl = 0, nd = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n') {
            nl++;
        } else if (text[i] == c.o.delimiter) {
            nd++;
        } else if (text[i] == '\0') {
            return fed_errorf(FED_EFORMAT, "%s:%zu: NUL byte (is this a binary file?)", c.what,
                              nl + 1);
        }
    }
    if (!skip_blank(&c.t)) return fed_errorf(FED_EFORMAT, "%s: empty file", c.what);
    size_t first_pos = c.t.pos;
    if ((err = read_first(&c))) goto fail;

    bool sk = false;
    if (c.o.format == FED_FORMAT_SKLEARN || c.o.format == FED_FORMAT_AUTO) {
        if ((err = sklearn_head(&c, c.o.format == FED_FORMAT_SKLEARN, &sk))) goto fail;
    }
    if (!sk) {
        if ((err = resolve_columns(&c))) goto fail;
        if (!c.header) { /* the first record is data: read it again */
            c.t.pos = first_pos;
            c.t.line = c.first_line;
        }
    }
    if (c.sklearn && c.o.classes && c.sk_names) {
        bool same = c.sk_names == c.o.num_classes;
        for (size_t i = 0; same && i < c.sk_names; i++)
            same = strcmp(first_cell(&c, i + 2), c.o.classes[i]) == 0;
        if (!same) {
            err = fed_errorf(FED_EFORMAT, "%s:%zu: the class names differ from the expected ones",
                             c.what, c.first_line);
            goto fail;
        }
    }
    c.sk_classes = c.o.classes ? c.o.num_classes : c.sk_names;
    c.dim = c.ncols - 1; /* >= 1: both paths above insist on a feature */
    if (c.dim == 0) {
        err = fed_errorf(FED_EINTERNAL, "%s: no feature column", c.what);
        goto fail;
    }
    size_t rows = nd / c.dim < nl + 1 ? nd / c.dim : nl + 1;
    c.cap_rows = rows + 1;
    size_t cells;
    if (!fed_mul_ok(c.cap_rows, c.dim, &cells)) {
        err = fed_errorf(FED_ENOMEM, "%s: too large", c.what);
        goto fail;
    }
    err = FED_ENOMEM;
    if (!(c.x = fed_aligned_alloc(cells, sizeof(float)))) goto fail;
    if (!(c.y = fed_mallocarray(c.cap_rows, sizeof(int32_t)))) goto fail;
    if (c.o.missing == FED_MISSING_MEAN) {
        if (!(c.sum = fed_calloc(c.dim, sizeof *c.sum))) goto fail;
        if (!(c.cnt = fed_calloc(c.dim, sizeof *c.cnt))) goto fail;
    }

    if ((err = read_rows(&c))) goto fail;
    err = FED_EFORMAT;
    if (c.stats.rows_read == 0) {
        fed_errorf(err, "%s:%zu: no data rows after the header", c.what, c.first_line);
        goto fail;
    }
    if (c.sklearn && c.stats.rows_read != c.sk_samples) {
        fed_errorf(err, "%s:%zu: line %zu announces %zu samples; the file has %zu", c.what,
                   c.first_line, c.first_line, c.sk_samples, c.stats.rows_read);
        goto fail;
    }
    if (c.n == 0) {
        fed_errorf(err, "%s: all %zu rows have missing values (nothing left to drop to)", c.what,
                   c.stats.rows_read);
        goto fail;
    }
    if (c.sum && (err = impute(&c))) goto fail;

    char **names = NULL;
    size_t k = 0;
    err = c.sklearn ? sklearn_classes(&c, &names, &k) : resolve_labels(&c, &names, &k);
    if (err) goto fail;
    fed_dataset *d = fed_calloc(1, sizeof *d);
    if (!d) {
        names_free(names, k);
        err = FED_ENOMEM;
        goto fail;
    }
    d->n = c.n;
    d->dim = c.dim;
    d->shape.ndim = 1;
    d->shape.d[0] = c.dim;
    d->x = c.x;
    d->y = c.y;
    d->num_classes = k;
    d->class_names = names;
    d->stats = c.stats;
    c.x = NULL;
    c.y = NULL;
    csv_free(&c);
    *out = d;
    return FED_OK;
fail:
    csv_free(&c);
    return err;
}
