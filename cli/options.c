/* The option-table machinery (see options.h). Config files are read by core/ini.h (no
 * line-length limit: the sample configs' help comments are long). Parsing is strict: unknown flags
 * and keys, malformed numbers, values out of range and duplicate keys in a file are errors, never
 * silently ignored. */
#include "cli/options.h"
#include "core/alloc.h"
#include "core/ini.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies of config-file values (the reader's buffers do not outlive the callback). */
static char **kept;
static size_t nkept, capkept;

void opt_release(void) {
    for (size_t i = 0; i < nkept; i++) fed_free(kept[i]);
    fed_free(kept);
    kept = NULL;
    nkept = capkept = 0;
}

static const char *keep(const char *s) {
    if (nkept == capkept) {
        size_t cap = capkept ? 2 * capkept : 16;
        char **k = fed_realloc(kept, cap * sizeof *k);
        if (!k) return NULL;
        kept = k;
        capkept = cap;
    }
    char *c = fed_strdup(s);
    if (c) kept[nkept++] = c;
    return c;
}

static const opt_spec *find(const opt_table *t, const char *name, size_t len) {
    for (const opt_spec *o = t->opts; o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) return o;
    return NULL;
}

static bool in_choices(const char *choices, const char *v) {
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

/* Parses text into the field of o in cfg; `where` prefixes errors ("--epochs",
 * "run.ini:3: epochs"). */
static fed_err set_value(const opt_spec *o, void *cfg, const char *text, const char *where) {
    char *field = (char *)cfg + o->offset;
    char *end = NULL;
    bool ranged = o->min <= o->max;
    switch (o->type) {
    case OPT_INT:
    case OPT_SIZE: {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (errno || end == text || *end != '\0')
            return fed_errorf(FED_EINVAL, "%s: \"%s\" is not an integer", where, text);
        if ((ranged && ((double)v < o->min || (double)v > o->max)) ||
            (o->type == OPT_SIZE && v < 0))
            return fed_errorf(FED_EINVAL, "%s: %lld is outside [%.17g, %.17g]", where, v, o->min,
                              o->max);
        if (o->type == OPT_INT)
            *(long *)(void *)field = (long)v;
        else
            *(size_t *)(void *)field = (size_t)v;
        return FED_OK;
    }
    case OPT_FLOAT:
    case OPT_FLOAT_ABOVE: {
        bool above = o->type == OPT_FLOAT_ABOVE;
        errno = 0;
        double v = strtod(text, &end);
        if (errno || end == text || *end != '\0' || !isfinite(v))
            return fed_errorf(FED_EINVAL, "%s: \"%s\" is not a number", where, text);
        if (ranged && ((above ? v <= o->min : v < o->min) || v > o->max))
            return fed_errorf(FED_EINVAL, "%s: %g is outside %c%g, %g]", where, v,
                              above ? '(' : '[', o->min, o->max);
        *(double *)(void *)field = v;
        return FED_OK;
    }
    case OPT_BOOL:
        if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0 || strcmp(text, "yes") == 0) {
            *(int *)(void *)field = 1;
        } else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0 ||
                   strcmp(text, "no") == 0) {
            *(int *)(void *)field = 0;
        } else {
            return fed_errorf(FED_EINVAL, "%s: \"%s\" is not true or false", where, text);
        }
        return FED_OK;
    case OPT_CHOICE:
        if (!in_choices(o->choices, text))
            return fed_errorf(FED_EINVAL, "%s: \"%s\" is not one of %s", where, text, o->choices);
        *(const char **)(void *)field = text;
        return FED_OK;
    case OPT_STRING:
        *(const char **)(void *)field = text;
        return FED_OK;
    case OPT_LIST: {
        const char *old = *(const char **)(void *)field;
        if (!old) {
            *(const char **)(void *)field = text;
            return FED_OK;
        }
        size_t a = strlen(old), b = strlen(text);
        char *joined = fed_malloc(a + b + 2);
        if (!joined) return FED_ENOMEM;
        memcpy(joined, old, a);
        joined[a] = ',';
        memcpy(joined + a + 1, text, b + 1);
        const char *k = keep(joined);
        fed_free(joined);
        if (!k) return FED_ENOMEM;
        *(const char **)(void *)field = k;
        return FED_OK;
    }
    }
    return FED_EINTERNAL;
}

/* ---- the log format: every command's, a flag or a file key ------------------------- */

static bool log_json; /* log-format json */
static bool log_flag; /* --log-format was given: it wins over a file's log-format */

bool opt_log_json(void) {
    return log_json;
}

/* "text" or "json" (where: the flag, or FILE:LINE: log-format, for the error); a file's
 * value is checked but does not replace the flag's. */
static fed_err set_log_format(const char *v, const char *where) {
    if (strcmp(v, "text") != 0 && strcmp(v, "json") != 0)
        return fed_errorf(FED_EINVAL, "%s: \"%s\" is not one of text|json", where, v);
    if (!log_flag || strcmp(where, "--log-format") == 0) log_json = strcmp(v, "json") == 0;
    return FED_OK;
}

/* ---- config files ----------------------------------------------------------------- */

typedef struct ini_ctx {
    const opt_table *t;
    void *cfg;
    const char *path;
    unsigned char *seen; /* (number of options) keys already set by the file */
} ini_ctx;

static fed_err on_ini(void *user, const char *section, const char *name, const char *value,
                      size_t line) {
    ini_ctx *c = user;
    if (section[0] && strcmp(section, c->t->command) != 0)
        return fed_errorf(FED_EINVAL, "%s:%zu: section [%s]: fedtune %s reads only [%s]", c->path,
                          line, section, c->t->command, c->t->command);
    if (!name) return FED_OK; /* the "[command]" line itself */
    char where[512];
    snprintf(where, sizeof where, "%s:%zu: %s", c->path, line, name);
    if (strcmp(name, "log-format") == 0) return set_log_format(value, where);
    const opt_spec *o = find(c->t, name, strlen(name));
    if (!o || strcmp(name, "config") == 0) return fed_errorf(FED_EINVAL, "%s: unknown key", where);
    size_t idx = (size_t)(o - c->t->opts);
    if (c->seen[idx] && o->type != OPT_LIST)
        return fed_errorf(FED_EINVAL, "%s: key given twice", where);
    c->seen[idx] = 1;
    const char *v = keep(value);
    if (!v) return FED_ENOMEM;
    return set_value(o, c->cfg, v, where);
}

static fed_err read_config(const opt_table *t, void *cfg, const char *path) {
    size_t n = 0;
    while (t->opts[n].name) n++;
    FILE *f = fopen(path, "r");
    if (!f) return fed_errorf(FED_EIO, "--config: cannot open %s: %s", path, strerror(errno));
    ini_ctx c = {t, cfg, path, fed_calloc(n + 1, 1)};
    fed_err err = c.seen ? fed_ini_read(f, path, on_ini, &c) : FED_ENOMEM;
    fclose(f);
    fed_free(c.seen);
    return err;
}

/* ---- command line ----------------------------------------------------------------- */

/* --log-format VALUE / --log-format=VALUE at argv[*i] (len: the name's length). */
static fed_err log_format(int argc, char **argv, int *i, const char *eq) {
    const char *v = eq ? eq + 1 : *i + 1 < argc ? argv[++*i] : NULL;
    if (!v) return fed_errorf(FED_EINVAL, "--log-format: missing value");
    return set_log_format(v, "--log-format");
}

fed_err opt_parse(const opt_table *t, void *cfg, int argc, char **argv) {
    fed_err err;
    for (const opt_spec *o = t->opts; o->name; o++) {
        if (!o->def) continue;
        char where[128];
        snprintf(where, sizeof where, "default of --%s", o->name);
        if ((err = set_value(o, cfg, o->def, where))) return err;
    }
    /* --log-format before anything else: the lines of a config file's errors too. */
    log_flag = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--log-format") != 0 && strncmp(a, "--log-format=", 13) != 0) continue;
        if ((err = log_format(argc, argv, &i, a[12] == '=' ? a + 12 : NULL))) return err;
        log_flag = true;
    }
    /* The config file first, so that flags override it wherever they appear. */
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            opt_print_help(t);
            return FED_ECANCELED;
        }
        if (strcmp(a, "--print-config") == 0) {
            opt_print_config(t);
            return FED_ECANCELED;
        }
        if (strcmp(a, "--man") == 0) {
            opt_print_man(t->command, t->summary, &t, 1);
            return FED_ECANCELED;
        }
        const char *path = NULL;
        if (strncmp(a, "--config=", 9) == 0) path = a + 9;
        if (strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) return fed_errorf(FED_EINVAL, "--config: missing file name");
            path = argv[i + 1];
        }
        if (path && (err = read_config(t, cfg, path))) return err;
    }
    bool positional_used = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            const opt_spec *p =
                t->positional ? find(t, t->positional, strlen(t->positional)) : NULL;
            if (!p || positional_used)
                return fed_errorf(FED_EINVAL, "unexpected argument \"%s\" (see fedtune %s --help)",
                                  a, t->command);
            positional_used = true;
            char where[128];
            snprintf(where, sizeof where, "argument \"%s\"", a);
            if ((err = set_value(p, cfg, a, where))) return err;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (len == 6 && strncmp(name, "config", 6) == 0) {
            if (!eq) i++;
            continue;
        }
        if (len == 10 && strncmp(name, "log-format", 10) == 0) {
            if ((err = log_format(argc, argv, &i, eq))) return err;
            continue;
        }
        const opt_spec *o = find(t, name, len);
        bool negated = false;
        if (!o && len > 3 && strncmp(name, "no-", 3) == 0) {
            o = find(t, name + 3, len - 3);
            negated = o && o->type == OPT_BOOL;
            if (!negated) o = NULL;
        }
        if (!o)
            return fed_errorf(FED_EINVAL, "unknown option --%.*s (see fedtune %s --help)", (int)len,
                              name, t->command);
        char where[128];
        snprintf(where, sizeof where, "--%s", o->name);
        const char *value;
        if (o->type == OPT_BOOL && !eq) {
            value = negated ? "false" : "true";
        } else if (negated) {
            return fed_errorf(FED_EINVAL, "--no-%s takes no value", o->name);
        } else if (eq) {
            value = eq + 1;
        } else {
            if (i + 1 >= argc) return fed_errorf(FED_EINVAL, "%s: missing value", where);
            value = argv[++i];
        }
        if ((err = set_value(o, cfg, value, where))) return err;
    }
    return FED_OK;
}

/* ---- help and sample config ------------------------------------------------------- */

const char *opt_value_word(const opt_spec *o) {
    switch (o->type) {
    case OPT_INT:
    case OPT_SIZE:
        return "N";
    case OPT_FLOAT:
    case OPT_FLOAT_ABOVE:
        return "X";
    case OPT_BOOL:
        return "";
    case OPT_STRING:
    case OPT_LIST:
        return "TEXT";
    case OPT_CHOICE:
        return o->choices;
    }
    return "";
}

void opt_print_help(const opt_table *t) {
    if (t->positional)
        printf("usage: fedtune %s [--config FILE] [options] [%s]\n\n%s\n\noptions:\n", t->command,
               t->positional, t->summary);
    else
        printf("usage: fedtune %s [--config FILE] [options]\n\n%s\n\noptions:\n", t->command,
               t->summary);
    for (const opt_spec *o = t->opts; o->name; o++) {
        char flag[96];
        snprintf(flag, sizeof flag, "--%s%s%s", o->name, o->type == OPT_BOOL ? "" : " ",
                 opt_value_word(o));
        printf("  %-28s %s", flag, o->help);
        if (o->type == OPT_LIST) printf(" (repeatable)");
        if (o->def) printf(" [%s]", o->def);
        printf("\n");
    }
    printf("  %-28s %s\n", "--config FILE", "read options from an INI file; flags win");
    printf("  %-28s %s\n", "--log-format text|json",
           "log lines on stderr as text, or one JSON object a line (journald, log shippers) "
           "[text]");
    printf("  %-28s %s\n", "--print-config", "print a sample config file with every option");
    printf("  %-28s %s\n", "--help", "show this help");
}

void opt_print_config(const opt_table *t) {
    printf("# fedtune %s: %s\n# Every key is also a flag (--key value); flags override this "
           "file.\n\n[%s]\n",
           t->command, t->summary, t->command);
    for (const opt_spec *o = t->opts; o->name; o++) {
        printf("# %s", o->help);
        if (o->type == OPT_CHOICE) printf(" (%s)", o->choices);
        if (o->min <= o->max && o->type != OPT_BOOL)
            printf(" %c%g..%g]", o->type == OPT_FLOAT_ABOVE ? '(' : '[', o->min, o->max);
        printf("\n");
        if (o->def)
            printf("%s = %s\n\n", o->name, o->def);
        else
            printf("# %s =\n\n", o->name);
    }
    printf("# log lines on stderr as text, or one JSON object a line (journald, log shippers); "
           "every command's (text|json)\nlog-format = text\n");
}
