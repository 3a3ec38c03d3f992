/* The sites of `fedtune sim --sites FILE` (see sim_sites.h): the TSV's lines, each line's
 * data loaded the way the model expects them, pooled, and dealt to its virtual sites. */
#include "cli/sim_sites.h"
#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 40   /* a site's name: a certificate CN and a metrics key */
#define LINE_MAX_LEN 8192 /* of the TSV */

/* One line of the TSV. */
typedef struct site_line {
    char *name, *train, *test; /* test may be NULL */
    size_t line;               /* 1-based */
} site_line;

static void lines_free(site_line *v, size_t n) {
    for (size_t i = 0; v && i < n; i++) {
        fed_free(v[i].name);
        fed_free(v[i].train);
        fed_free(v[i].test);
    }
    fed_free(v);
}

/* A name is 1..40 of [A-Za-z0-9._-], starting with a letter or digit. */
static bool good_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '.' && ch != '_' && ch != '-'))) return false;
    }
    return true;
}

/* field, or dir/field when field is relative and dir non-empty: a new string. */
static char *resolve(const char *dir, const char *field) {
    if (field[0] == '/' || !dir[0]) return fed_strdup(field);
    size_t a = strlen(dir), b = strlen(field);
    char *p = fed_malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, field, b + 1);
    return p;
}

/* Splits one line (without its newline) into *out; FED_EINVAL naming path:line. */
static fed_err parse_line(char *text, const char *path, size_t ln, const char *dir,
                          site_line *out) {
    char *f[4] = {NULL, NULL, NULL, NULL};
    size_t nf = 0;
    for (char *p = text;; nf++) {
        char *tab = strchr(p, '\t');
        if (nf < 4) f[nf] = p;
        if (!tab) break;
        *tab = '\0';
        p = tab + 1;
    }
    nf++;
    if (nf < 2 || nf > 3)
        return fed_errorf(FED_EINVAL,
                          "%s:%zu: expected name<TAB>training data[<TAB>test data], got %zu "
                          "field%s",
                          path, ln, nf, nf == 1 ? "" : "s");
    if (!good_name(f[0]))
        return fed_errorf(FED_EINVAL,
                          "%s:%zu: site name \"%.60s\": 1 to %d letters, digits, '.', '_' or "
                          "'-', starting with a letter or digit",
                          path, ln, f[0], NAME_MAX_LEN);
    for (size_t i = 1; i < nf; i++)
        if (!f[i][0])
            return fed_errorf(FED_EINVAL, "%s:%zu: site %s: empty %s file name", path, ln, f[0],
                              i == 1 ? "training data" : "test data");
    out->line = ln;
    out->name = fed_strdup(f[0]);
    out->train = resolve(dir, f[1]);
    out->test = nf == 3 ? resolve(dir, f[2]) : NULL;
    if (!out->name || !out->train || (nf == 3 && !out->test)) return FED_ENOMEM;
    return FED_OK;
}

/* Reads the TSV's lines into *out (count *n). */
static fed_err read_tsv(const char *path, site_line **out, size_t *n) {
    *out = NULL;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (!f) return fed_errorf(FED_EIO, "--sites %s: cannot open", path);
    char dir[4096] = "";
    const char *slash = strrchr(path, '/');
    if (slash && (size_t)(slash - path) < sizeof dir) {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
        if (slash == path) snprintf(dir, sizeof dir, "/");
    }
    char *buf = fed_malloc(LINE_MAX_LEN + 2);
    site_line *v = NULL;
    size_t cap = 0, ln = 0;
    fed_err err = buf ? FED_OK : FED_ENOMEM;
    while (!err && fgets(buf, LINE_MAX_LEN + 2, f)) {
        ln++;
        size_t len = strlen(buf);
        if (len > LINE_MAX_LEN) {
            err =
                fed_errorf(FED_EINVAL, "%s:%zu: line longer than %d bytes", path, ln, LINE_MAX_LEN);
            break;
        }
        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = '\0';
        if (len == 0 || buf[0] == '#') continue;
        if (*n == cap) {
            size_t nc = cap ? 2 * cap : 8;
            site_line *nv = fed_realloc(v, nc * sizeof *nv);
            if (!nv) {
                err = FED_ENOMEM;
                break;
            }
            memset(nv + cap, 0, (nc - cap) * sizeof *nv);
            v = nv;
            cap = nc;
        }
        err = parse_line(buf, path, ln, dir, &v[*n]);
        (*n)++;
        for (size_t i = 0; !err && i + 1 < *n; i++)
            if (strcmp(v[i].name, v[*n - 1].name) == 0)
                err = fed_errorf(FED_EINVAL, "%s:%zu: site name \"%s\" already on line %zu", path,
                                 ln, v[i].name, v[i].line);
    }
    if (!err && ferror(f)) err = fed_errorf(FED_EIO, "--sites %s: read error", path);
    if (!err && *n == 0) err = fed_errorf(FED_EINVAL, "--sites %s: no sites listed", path);
    fclose(f);
    fed_free(buf);
    if (err) {
        lines_free(v, *n);
        *n = 0;
        return err;
    }
    *out = v;
    return FED_OK;
}

/* One data file as the model expects it. */
static fed_err load_one(fed_dataset **d, const char *file, const char *classes,
                        const sim_sites_read *rd) {
    fed_err err = prep_load_data(d, file, rd->dc, classes, rd->pt);
    if (!err && !rd->pt->loaded) err = prep_apply_meta_std(rd->meta, *d);
    if (err) fed_data_destroy(d);
    return err;
}

/* The lines' training sets one after another in ss->train. */
static fed_err pool(sim_sites *ss, fed_dataset **parts, size_t k) {
    size_t n = 0, classes = 1, dim = parts[0]->dim;
    for (size_t i = 0; i < k; i++) {
        n += parts[i]->n;
        if (parts[i]->num_classes > classes) classes = parts[i]->num_classes;
    }
    fed_err err = fed_data_new(&ss->train, n, dim, classes);
    if (err) return err;
    ss->train->shape = parts[0]->shape;
    size_t at = 0;
    for (size_t i = 0; i < k; i++) {
        memcpy(ss->train->x + at * dim, parts[i]->x, parts[i]->n * dim * sizeof(float));
        memcpy(ss->train->y + at, parts[i]->y, parts[i]->n * sizeof(int32_t));
        at += parts[i]->n;
    }
    const fed_dataset *first = parts[0];
    if (first->class_names && first->num_classes == classes) {
        if (!(ss->train->class_names = fed_calloc(classes, sizeof(char *)))) return FED_ENOMEM;
        for (size_t c = 0; c < classes; c++)
            if (!(ss->train->class_names[c] = fed_strdup(first->class_names[c]))) return FED_ENOMEM;
    }
    return FED_OK;
}

/* Deals each line's rows (offsets off[i] .. off[i+1] of the pooled set) to split sites. */
static fed_err deal(sim_sites *ss, const size_t *off, size_t split, const fed_part_config *pc,
                    const site_line *v) {
    size_t n = ss->lines * split;
    fed_partition *p = fed_calloc(1, sizeof *p);
    if (!p) return FED_ENOMEM;
    ss->part = p;
    p->clients = n;
    p->n = ss->train->n;
    if (!(p->offsets = fed_calloc(n + 1, sizeof *p->offsets)) ||
        !(p->index = fed_mallocarray(p->n ? p->n : 1, sizeof *p->index)))
        return FED_ENOMEM;
    size_t at = 0;
    for (size_t i = 0; i < ss->lines; i++) {
        size_t rows = off[i + 1] - off[i];
        if (split > rows)
            return fed_errorf(FED_EINVAL, "--site-split %zu: site %s (line %zu) has %zu examples",
                              split, v[i].name, v[i].line, rows);
        fed_part_config c = *pc;
        c.clients = split;
        c.seed = pc->seed + i;
        fed_partition *q = NULL;
        fed_err err = split > 1 ? fed_partition_make(&q, ss->train->y + off[i], rows,
                                                     ss->train->num_classes, &c)
                                : FED_OK;
        if (err) return fed_errprefix(err, "site %s (line %zu)", v[i].name, v[i].line);
        for (size_t s = 0; s < split; s++) {
            size_t a = q ? q->offsets[s] : 0, b = q ? q->offsets[s + 1] : rows;
            for (size_t j = a; j < b; j++)
                p->index[at++] = (uint32_t)(off[i] + (q ? q->index[j] : j));
            p->offsets[i * split + s + 1] = at;
        }
        fed_partition_destroy(&q);
    }
    return FED_OK;
}

/* The sites' names: the lines' names, or name-1 .. name-K. */
static fed_err name_sites(sim_sites *ss, size_t split, const site_line *v) {
    int w = 1;
    for (size_t k = split; k >= 10; k /= 10) w++;
    for (size_t i = 0; i < ss->lines; i++)
        for (size_t s = 0; s < split; s++) {
            char name[NAME_MAX_LEN + 24];
            if (split == 1)
                snprintf(name, sizeof name, "%s", v[i].name);
            else
                snprintf(name, sizeof name, "%s-%0*zu", v[i].name, w, s + 1);
            if (!(ss->names[i * split + s] = fed_strdup(name))) return FED_ENOMEM;
            ss->tests[i * split + s] = ss->owned[i];
        }
    return FED_OK;
}

fed_err sim_sites_load(sim_sites *ss, const char *path, size_t split, const fed_part_config *pc,
                       const sim_sites_read *rd) {
    memset(ss, 0, sizeof *ss);
    site_line *v = NULL;
    size_t k = 0, *off = NULL;
    fed_dataset **parts = NULL;
    fed_err err = read_tsv(path, &v, &k);
    if (err) return err;
    if (split < 1) split = 1;
    ss->lines = k;
    ss->n = k * split;
    if (!(parts = fed_calloc(k, sizeof *parts)) || !(off = fed_calloc(k + 1, sizeof *off)) ||
        !(ss->owned = fed_calloc(k, sizeof *ss->owned)) ||
        !(ss->names = fed_calloc(ss->n, sizeof *ss->names)) ||
        !(ss->tests = fed_calloc(ss->n, sizeof *ss->tests))) {
        err = FED_ENOMEM;
        goto done;
    }
    /* Class names of the first file fix the ids of the others (string labels). */
    const char *classes = rd->classes;
    for (size_t i = 0; i < k && !err; i++) {
        err = load_one(&parts[i], v[i].train, classes, rd);
        if (!err && i > 0 && parts[i]->dim != parts[0]->dim)
            err = fed_errorf(FED_EINVAL, "%zu features, line %zu's data %zu", parts[i]->dim,
                             v[0].line, parts[0]->dim);
        if (!err && i == 0 && !classes && (err = prep_classes_json(parts[0], &ss->classes)) == 0)
            classes = ss->classes;
        if (!err && v[i].test) err = load_one(&ss->owned[i], v[i].test, classes, rd);
        if (!err && ss->owned[i] && ss->owned[i]->dim != parts[0]->dim)
            err = fed_errorf(FED_EINVAL, "test data %s: %zu features, the training data %zu",
                             v[i].test, ss->owned[i]->dim, parts[0]->dim);
        if (err) err = fed_errprefix(err, "%s:%zu: site %s", path, v[i].line, v[i].name);
        if (!err) off[i + 1] = off[i] + parts[i]->n;
    }
    if (!err) err = pool(ss, parts, k);
    if (!err) err = deal(ss, off, split, pc, v);
    if (!err) err = name_sites(ss, split, v);
done:
    for (size_t i = 0; parts && i < k; i++) fed_data_destroy(&parts[i]);
    fed_free(parts);
    fed_free(off);
    lines_free(v, k);
    if (err) sim_sites_free(ss);
    return err;
}

void sim_sites_free(sim_sites *ss) {
    for (size_t i = 0; ss->names && i < ss->n; i++) fed_free(ss->names[i]);
    fed_free(ss->names);
    for (size_t i = 0; ss->owned && i < ss->lines; i++) fed_data_destroy(&ss->owned[i]);
    fed_free(ss->owned);
    fed_free(ss->tests);
    fed_data_destroy(&ss->train);
    fed_partition_destroy(&ss->part);
    fed_free(ss->classes);
    memset(ss, 0, sizeof *ss);
}
