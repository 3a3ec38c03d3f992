/* INI files without a line-length limit (see ini.h). */
#define _POSIX_C_SOURCE 200809L
#include "core/ini.h"

#include "core/alloc.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/* One trimmed line that is neither blank nor a comment. */
static fed_err one_line(char *p, const char *path, size_t line, char **section, fed_ini_fn fn,
                        void *user) {
    if (*p == '[') {
        char *e = strchr(p, ']');
        if (!e || *trim(e + 1))
            return fed_errorf(FED_EINVAL, "%s:%zu: not a \"[section]\" line", path, line);
        *e = '\0';
        char *name = fed_strdup(trim(p + 1));
        if (!name) return FED_ENOMEM;
        fed_free(*section);
        *section = name;
        return fn(user, name, NULL, NULL, line);
    }
    char *eq = strchr(p, '=');
    if (!eq) return fed_errorf(FED_EINVAL, "%s:%zu: not a \"key = value\" line", path, line);
    *eq = '\0';
    char *key = trim(p), *value = trim(eq + 1);
    for (char *c = value; *c; c++)
        if (*c == ';' && c > value && (c[-1] == ' ' || c[-1] == '\t')) {
            *c = '\0';
            break;
        }
    value = trim(value);
    if (!*key) return fed_errorf(FED_EINVAL, "%s:%zu: not a \"key = value\" line", path, line);
    return fn(user, *section ? *section : "", key, value, line);
}

fed_err fed_ini_read(FILE *f, const char *path, fed_ini_fn fn, void *user) {
    char *text = NULL, *section = NULL;
    size_t cap = 0, line = 0;
    fed_err err = FED_OK;
    ssize_t len;
    for (;;) {
        errno = 0;
        if ((len = getline(&text, &cap, f)) < 0) break;
        line++;
        char *p = text;
        if (strlen(text) != (size_t)len) {
            err = fed_errorf(FED_EFORMAT, "%s:%zu: a NUL byte: not a text file", path, line);
            break;
        }
        if (line == 1 && strncmp(p, "\xef\xbb\xbf", 3) == 0) p += 3; /* a UTF-8 BOM */
        p = trim(p);
        if (*p && *p != '#' && *p != ';' && (err = one_line(p, path, line, &section, fn, user)))
            break;
    }
    if (!err && len < 0 && errno == ENOMEM) err = FED_ENOMEM;
    if (!err && ferror(f)) err = fed_errorf(FED_EIO, "%s: %s", path, strerror(errno));
    free(text); /* getline's buffer is libc's */
    fed_free(section);
    return err;
}
