/* The embedding API's configuration (include/fedtune/fedtune.h: fedtune_config_*): the
 * keys of `fedtune client` as text, checked when set (the same types, ranges and choices
 * as cli/cmd_client.c's option table, which tests/test_api_site.c holds us to through
 * examples/client.ini), a reader of INI files of them, and the site's data from memory or from
 * a callback. What does not live here: turning the keys into a fed_site_config and making
 * the site (api/site.c). The library cannot use cli/'s option machinery (cli/ is the
 * executable), so the table is a second, smaller copy. */
#include "api/api_internal.h"
#include "core/alloc.h"
#include "core/ini.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

typedef enum key_type { K_STRING, K_INT, K_SIZE, K_FLOAT, K_BOOL, K_CHOICE, K_LIST } key_type;

typedef struct key_spec {
    const char *name;    /* as in client.ini and `fedtune client --NAME` */
    key_type type;       /* how the text is checked */
    const char *def;     /* default text, NULL: none */
    double min, max;     /* numeric range, inclusive */
    const char *choices; /* K_CHOICE: "a|b|c" */
    const char *only;    /* a key the library does not support yet: the one value accepted */
} key_spec;

/* Same order as api_key. */
static const key_spec keys[KEY_COUNT] = {
    {"coordinator", K_STRING, NULL, 0, 0, NULL, NULL},
    {"server-name", K_STRING, NULL, 0, 0, NULL, NULL},
    {"ca", K_STRING, NULL, 0, 0, NULL, NULL},
    {"cert", K_STRING, NULL, 0, 0, NULL, NULL},
    {"key", K_STRING, NULL, 0, 0, NULL, NULL},
    {"data", K_STRING, NULL, 0, 0, NULL, NULL},
    {"crl", K_STRING, NULL, 0, 0, NULL, NULL},
    {"label", K_STRING, NULL, 0, 0, NULL, NULL},
    {"format", K_CHOICE, "auto", 0, 0, "auto|csv|sklearn|idx", NULL},
    {"header", K_CHOICE, "auto", 0, 0, "auto|yes|no", NULL},
    {"missing", K_CHOICE, "error", 0, 0, "error|drop|mean", NULL},
    {"classes", K_LIST, NULL, 0, 0, NULL, NULL},
    {"tokenizer", K_STRING, NULL, 0, 0, NULL, ""},
    {"text-length", K_SIZE, "0", 0, 65536, NULL, "0"},
    {"drop-empty", K_BOOL, "false", 0, 0, NULL, "false"},
    {"test-split", K_FLOAT, "0.2", 0, 0.9, NULL, NULL},
    {"seed", K_INT, "1", 0, 9007199254740991.0, NULL, NULL},
    {"standardize", K_CHOICE, "auto", 0, 0, "auto|off", NULL},
    {"threads", K_SIZE, "1", 1, 256, NULL, NULL},
    {"max-epochs", K_SIZE, "0", 0, 100000, NULL, NULL},
    {"max-batch", K_SIZE, "0", 0, 65536, NULL, NULL},
    {"save-updates", K_STRING, NULL, 0, 0, NULL, NULL},
    {"base-cache", K_STRING, NULL, 0, 0, NULL, NULL},
    {"state-dir", K_STRING, NULL, 0, 0, NULL, NULL},
    {"reconnect-initial", K_FLOAT, "1", 0.01, 3600, NULL, NULL},
    {"reconnect-max", K_FLOAT, "60", 0.01, 86400, NULL, NULL},
    {"reconnect-jitter", K_FLOAT, "0.5", 0, 1, NULL, NULL},
};

int api_config_fail(fedtune_config *c, fed_err err) {
    if (err) snprintf(c->errmsg, sizeof c->errmsg, "%s", fed_errdetail(err));
    return (int)err;
}

const char *api_get(const fedtune_config *c, api_key k) {
    if (c->val[k]) return c->val[k];
    return keys[k].def ? keys[k].def : "";
}

double api_get_double(const fedtune_config *c, api_key k) {
    return strtod(api_get(c, k), NULL);
}

static bool is_choice(const char *text, const char *choices) {
    size_t len = strlen(text);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && len && strncmp(p, text, n) == 0) return true;
        p += n + (bar != NULL);
    }
    return false;
}

/* Checks text as a value of spec; where names it in the error ("seed", "f.ini:3: seed"). */
static fed_err check_value(const key_spec *o, const char *text, const char *where) {
    char *end = NULL;
    switch (o->type) {
    case K_STRING:
    case K_LIST:
        if (!text[0]) return fed_errorf(FED_EINVAL, "%s: empty value", where);
        break;
    case K_INT:
    case K_SIZE: {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (!text[0] || *end || errno)
            return fed_errorf(FED_EINVAL, "%s: \"%s\" is not an integer", where, text);
        if ((double)v < o->min || (double)v > o->max)
            return fed_errorf(FED_EINVAL, "%s: %lld is outside [%.17g, %.17g]", where, v, o->min,
                              o->max);
        break;
    }
    case K_FLOAT: {
        double v = strtod(text, &end);
        if (!text[0] || *end || !isfinite(v))
            return fed_errorf(FED_EINVAL, "%s: \"%s\" is not a number", where, text);
        if (v < o->min || v > o->max)
            return fed_errorf(FED_EINVAL, "%s: %g is outside [%g, %g]", where, v, o->min, o->max);
        break;
    }
    case K_BOOL:
        if (!is_choice(text, "true|false|yes|no|1|0"))
            return fed_errorf(FED_EINVAL, "%s: \"%s\" is not true or false", where, text);
        break;
    case K_CHOICE:
        if (!is_choice(text, o->choices))
            return fed_errorf(FED_EINVAL, "%s: \"%s\" is not one of %s", where, text, o->choices);
        break;
    }
    if (o->only && strcmp(text, o->only) != 0 &&
        !(o->type == K_BOOL && is_choice(text, "false|no|0")))
        return fed_errorf(FED_EUNSUPPORTED,
                          "%s: text data are not supported by libfedtune %s (use `fedtune "
                          "client`)",
                          where, FEDTUNE_VERSION_STRING);
    return FED_OK;
}

static int find_key(const char *name) {
    for (int k = 0; k < KEY_COUNT; k++)
        if (strcmp(keys[k].name, name) == 0) return k;
    return -1;
}

/* Sets key k to text (appends to a list when append). */
static fed_err store(fedtune_config *c, int k, const char *text, bool append) {
    char *v;
    if (append && c->val[k]) {
        size_t a = strlen(c->val[k]), b = strlen(text);
        v = fed_malloc(a + b + 2);
        if (!v) return FED_ENOMEM;
        memcpy(v, c->val[k], a);
        v[a] = ',';
        memcpy(v + a + 1, text, b + 1);
    } else if (!(v = fed_strdup(text))) {
        return FED_ENOMEM;
    }
    fed_free(c->val[k]);
    c->val[k] = v;
    return FED_OK;
}

/* log-format, every fedtune command's key (the CLI's log lines): the library's lines go to
 * the program's fedtune_set_log callback, so the value is only checked, never kept. */
static fed_err check_log_format(const char *value, const char *where) {
    if (strcmp(value, "text") == 0 || strcmp(value, "json") == 0) return FED_OK;
    return fed_errorf(FED_EINVAL, "%s: \"%s\" is not one of text|json", where, value);
}

int fedtune_config_new(fedtune_config **out) {
    if (!out) return FEDTUNE_EINVAL;
    *out = fed_calloc(1, sizeof **out);
    return *out ? FEDTUNE_OK : FEDTUNE_ENOMEM;
}

void fedtune_config_free(fedtune_config **c) {
    if (!c || !*c) return;
    for (int k = 0; k < KEY_COUNT; k++) fed_free((*c)->val[k]);
    fed_data_destroy(&(*c)->mem);
    fed_free(*c);
    *c = NULL;
}

int fedtune_config_set(fedtune_config *c, const char *key, const char *value) {
    if (!c) return FEDTUNE_EINVAL;
    if (!key || !value)
        return api_config_fail(
            c, fed_errorf(FED_EINVAL, "fedtune_config_set: NULL %s", key ? "value" : "key"));
    if (strcmp(key, "log-format") == 0) return api_config_fail(c, check_log_format(value, key));
    int k = find_key(key);
    if (k < 0) return api_config_fail(c, fed_errorf(FED_EINVAL, "%s: unknown key", key));
    fed_err err = check_value(&keys[k], value, key);
    if (!err) err = store(c, k, value, false);
    return api_config_fail(c, err);
}

/* ---- INI files ------------------------------------------------------------------------ */

/* The reader is core/ini.h's, the CLI's --config reader: the same lines, the same
 * errors. A site reads only the [client] section (or keys before any section). */

typedef struct ini_read {
    fedtune_config *c;
    const char *path;
    unsigned char seen[KEY_COUNT];
} ini_read;

static fed_err on_ini(void *user, const char *section, const char *name, const char *value,
                      size_t line) {
    ini_read *r = user;
    if (section[0] && strcmp(section, "client") != 0)
        return fed_errorf(FED_EINVAL, "%s:%zu: section [%s]: a site reads only [client]", r->path,
                          line, section);
    if (!name) return FED_OK; /* the "[client]" line itself */
    char where[600];
    snprintf(where, sizeof where, "%s:%zu: %s", r->path, line, name);
    if (strcmp(name, "log-format") == 0) return check_log_format(value, where);
    int k = find_key(name);
    if (k < 0) return fed_errorf(FED_EINVAL, "%s: unknown key", where);
    if (r->seen[k] && keys[k].type != K_LIST)
        return fed_errorf(FED_EINVAL, "%s: key given twice", where);
    fed_err err = check_value(&keys[k], value, where);
    if (!err) err = store(r->c, k, value, r->seen[k] != 0);
    r->seen[k] = 1;
    return err;
}

int api_config_read(fedtune_config *c, FILE *f, const char *path) {
    ini_read r = {.c = c, .path = path};
    return api_config_fail(c, fed_ini_read(f, path, on_ini, &r));
}

int fedtune_config_load(fedtune_config *c, const char *path) {
    if (!c) return FEDTUNE_EINVAL;
    if (!path) return api_config_fail(c, fed_errorf(FED_EINVAL, "fedtune_config_load: NULL path"));
    FILE *f = fopen(path, "r");
    if (!f) return api_config_fail(c, fed_errorf(FED_EIO, "%s: %s", path, strerror(errno)));
    int rc = api_config_read(c, f, path);
    fclose(f);
    return rc;
}

/* ---- data ------------------------------------------------------------------------------- */

int fedtune_config_set_data(fedtune_config *c, const float *x, const int32_t *y, size_t n, size_t d,
                            size_t classes) {
    if (!c) return FEDTUNE_EINVAL;
    size_t cells;
    if (!x || !y)
        return api_config_fail(c, fed_errorf(FED_EINVAL, "fedtune_config_set_data: NULL %s",
                                             x ? "labels" : "features"));
    if (!n || !d || !classes)
        return api_config_fail(c, fed_errorf(FED_EINVAL, "fedtune_config_set_data: %s is 0",
                                             !n   ? "n (examples)"
                                             : !d ? "d (features)"
                                                  : "classes"));
    if (classes > FED_DATA_MAX_CLASSES || !fed_mul_ok(n, d, &cells) ||
        !fed_mul_ok(cells, sizeof(float), &cells))
        return api_config_fail(c, fed_errorf(FED_ERANGE,
                                             "fedtune_config_set_data: %zu x %zu features, %zu "
                                             "classes: too large",
                                             n, d, classes));
    fed_dataset *m = NULL;
    fed_err err = fed_data_new(&m, n, d, classes);
    if (err) return api_config_fail(c, err);
    memcpy(m->x, x, n * d * sizeof(float));
    memcpy(m->y, y, n * sizeof(int32_t));
    fed_data_destroy(&c->mem);
    c->mem = m;
    c->src = NULL;
    return FEDTUNE_OK;
}

int fedtune_config_set_data_source(fedtune_config *c, size_t d, size_t classes, fedtune_batch_fn fn,
                                   void *user) {
    if (!c) return FEDTUNE_EINVAL;
    if (!fn || !d || !classes || classes > FED_DATA_MAX_CLASSES)
        return api_config_fail(c, fed_errorf(FED_EINVAL, "fedtune_config_set_data_source: %s",
                                             !fn  ? "NULL callback"
                                             : !d ? "d (features) is 0"
                                                  : "classes is 0 or above 65536"));
    fed_data_destroy(&c->mem);
    c->src = fn;
    c->src_user = user;
    c->src_dim = d;
    c->src_classes = classes;
    return FEDTUNE_OK;
}

const char *fedtune_config_errmsg(const fedtune_config *c) {
    return c ? c->errmsg : "";
}
