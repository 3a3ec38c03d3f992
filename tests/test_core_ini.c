/* core/ini.h: the INI reader behind --config and fedtune_config_load. Every line kind,
 * long lines (Debian's inih cut them at 200 bytes), and the malformed inputs, each with
 * its exact one-line error naming the file and the line. */
#define _POSIX_C_SOURCE 200809L
#include "core/ini.h"

#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the callback saw: "section|key|value|line" per line, joined by "\n". */
typedef struct seen {
    char text[8192];
    const char *stop_at; /* a key whose line the callback refuses */
} seen;

static fed_err record(void *user, const char *section, const char *key, const char *value,
                      size_t line) {
    seen *s = user;
    if (!key) key = value = "[]"; /* a section line */
    if (s->stop_at && strcmp(key, s->stop_at) == 0)
        return fed_errorf(FED_EINVAL, "line %zu: %s refused", line, key);
    size_t n = strlen(s->text);
    snprintf(s->text + n, sizeof s->text - n, "%s%s|%s|%s|%zu", n ? "\n" : "", section, key, value,
             line);
    return FED_OK;
}

/* Reads the bytes (len of them: NULs allowed) as file "t.ini". */
static fed_err read_bytes(const char *bytes, size_t len, seen *s) {
    FILE *f = fmemopen((void *)bytes, len, "r");
    if (!f) return FED_EIO;
    fed_err e = fed_ini_read(f, "t.ini", record, s);
    fclose(f);
    return e;
}

static fed_err read_text(const char *text, seen *s) {
    return read_bytes(text, strlen(text), s);
}

TEST(line_kinds) {
    seen s = {0};
    CHECK_OK(read_text("# comment\n; comment\n\n  \t\nlr = 0.1\n[client]\n  data=a.csv  \n"
                       "empty =\nx = 1 ; inline comment\ny = a;b\nz = 2\t; tab comment\n"
                       "[ other ]\nk = v = w\n",
                       &s));
    CHECK_STR(s.text, "|lr|0.1|5\nclient|[]|[]|6\nclient|data|a.csv|7\nclient|empty||8\n"
                      "client|x|1|9\nclient|y|a;b|10\nclient|z|2|11\nother|[]|[]|12\n"
                      "other|k|v = w|13");
}

TEST(bom_crlf_and_no_final_newline) {
    seen s = {0};
    CHECK_OK(read_text("\xef\xbb\xbf[demo]\r\nepochs = 3\r\nlr = 0.5", &s));
    CHECK_STR(s.text, "demo|[]|[]|1\ndemo|epochs|3|2\ndemo|lr|0.5|3");
}

TEST(long_lines) {
    /* A 5000-byte comment and a 3000-byte value: inih stopped at 200. */
    static char text[9000];
    char *p = text;
    p += sprintf(p, "# ");
    memset(p, 'c', 5000);
    p += 5000;
    p += sprintf(p, "\narch = ");
    memset(p, 'v', 3000);
    p += 3000;
    sprintf(p, "\nnext = 1\n");
    seen s = {0};
    CHECK_OK(read_text(text, &s));
    CHECK_INT(strlen(s.text), strlen("|arch|") + 3000 + strlen("|2\n|next|1|3"));
    CHECK(strstr(s.text, "|2\n|next|1|3") != NULL);
}

TEST(malformed) {
    seen s = {0};
    CHECK_ERR(read_text("a = 1\njust words\n", &s), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "t.ini:2: not a \"key = value\" line");
    CHECK_ERR(read_text("= 1\n", &s), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "t.ini:1: not a \"key = value\" line");
    CHECK_ERR(read_text("\n[client\nx = 1\n", &s), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "t.ini:2: not a \"[section]\" line");
    CHECK_ERR(read_text("[client] trailing\n", &s), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "t.ini:1: not a \"[section]\" line");
    CHECK_ERR(read_bytes("a = 1\nb = \0x\n", 12, &s), FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "t.ini:2: a NUL byte: not a text file");
    /* A BOM only counts on the first line. */
    CHECK_ERR(read_text("a = 1\n\xef\xbb\xbf"
                        "b = 2\n",
                        &s),
              FED_OK);
}

TEST(callback_stops_reading) {
    seen s = {.stop_at = "b"};
    CHECK_ERR(read_text("a = 1\nb = 2\nc = 3\n", &s), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "line 2: b refused");
    CHECK_STR(s.text, "|a|1|1"); /* c was never read */
}

TEST(alloc_failures) {
    /* The section names are the reader's own allocations: each failing one is ENOMEM. */
    FOR_EACH_ALLOC_FAILURE(f) {
        seen s = {0};
        if (ALLOC_TRY(f, read_text("[a]\nk = v\n[b]\nk = w\n", &s)) == FED_OK)
            CHECK_STR(s.text, "a|[]|[]|1\na|k|v|2\nb|[]|[]|3\nb|k|w|4");
    }
}

int main(void) {
    RUN(line_kinds);
    RUN(bom_crlf_and_no_final_newline);
    RUN(long_lines);
    RUN(malformed);
    RUN(callback_stops_reading);
    RUN(alloc_failures);
    return test_report();
}
