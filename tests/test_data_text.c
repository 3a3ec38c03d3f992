/* Tests of text classification data (dataset/text.h) with a tiny vocabulary: JSON lines
 * and CSV (RFC 4180 quoting, embedded line breaks counted in error lines, CRLF, blank
 * lines, any column order), padding and truncation bit for bit, the statistics, label
 * mapping (integers, sorted names, known classes), empty texts, malformed input of
 * every kind with its message, files and the text sniffer, JSON strings, and the loader
 * under fail-the-Nth-allocation. */
#include "core/alloc_internal.h"
#include "dataset/text.h"
#include "tests/test.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

/* USE-lite's reserved pieces, then 6 "▁", 7 "a", 8 "b", 9 "▁ab", 10 "c". */
static const char vocab[] =
    "[[\"\\ufffd\",0],[\"<s>\",0],[\"</s>\",0],[\"r3\",0],[\"r4\",0],[\"r5\",0],"
    "[\"\xe2\x96\x81\",-1],[\"a\",-2],[\"b\",-2],[\"\xe2\x96\x81\x61\x62\",-1],[\"c\",-3]]";

static fed_tokenizer *tok;

static fed_dataset *parse(const char *text, const char *what, size_t T, const fed_text_options *o,
                          fed_text_stats *st) {
    fed_dataset *d = NULL;
    fed_err e = fed_data_parse_text(&d, text, strlen(text), what, tok, T, o, st);
    if (e) fprintf(stderr, "  parse failed: %s\n", fed_errdetail(e));
    return d;
}

/* The parse fails with code and exactly the message msg. */
#define CHECK_FAILS(text, what, o, code, msg)                                                      \
    do {                                                                                           \
        fed_dataset *d_ = (fed_dataset *)1;                                                        \
        const char *t_ = (text);                                                                   \
        CHECK_ERR(fed_data_parse_text(&d_, t_, strlen(t_), (what), tok, 4, (o), NULL), (code));    \
        CHECK(d_ == NULL);                                                                         \
        CHECK_STR(fed_errmsg(), (msg));                                                            \
    } while (0)

/* Row i of d is exactly the floats given (bit for bit). */
static void check_row(const fed_dataset *d, size_t i, const float *want, size_t n, int line) {
    if (!d || i >= d->n || d->dim != n) {
        test_fail_(__FILE__, line);
        fprintf(stderr, "row %zu of a set of %zu rows of %zu, expected %zu\n", i, d ? d->n : 0,
                d ? d->dim : 0, n);
        return;
    }
    if (memcmp(d->x + i * d->dim, want, n * sizeof *want) == 0) {
        test_passed_++;
        return;
    }
    test_fail_(__FILE__, line);
    fprintf(stderr, "row %zu:", i);
    for (size_t j = 0; j < n; j++) fprintf(stderr, " %g", (double)d->x[i * d->dim + j]);
    fprintf(stderr, "\n");
}

#define CHECK_ROW(d, i, ...)                                                                       \
    do {                                                                                           \
        const float w_[] = {__VA_ARGS__};                                                          \
        check_row((d), (i), w_, sizeof w_ / sizeof w_[0], __LINE__);                               \
    } while (0)

TEST(jsonl_padding_truncation_and_stats) {
    fed_text_stats st;
    fed_dataset *d = parse("{\"text\":\"ab\",\"label\":0}\n"
                           "{\"label\":1,\"text\":\"ab ab ab ab ab\",\"source\":\"x\"}\n"
                           "\n"
                           "{\"text\":\"c\",\"label\":1}",
                           "t.jsonl", 4, NULL, &st);
    CHECK(d != NULL);
    if (!d) return;
    CHECK_SIZE(d->n, 3);
    CHECK_SIZE(d->dim, 4);
    CHECK_INT(d->shape.ndim, 1);
    CHECK_SIZE(d->shape.d[0], 4);
    CHECK_ROW(d, 0, 9.0f, -1.0f, -1.0f, -1.0f);
    CHECK_ROW(d, 1, 9.0f, 9.0f, 9.0f, 9.0f); /* five "▁ab", the first four kept */
    CHECK_ROW(d, 2, 6.0f, 10.0f, -1.0f, -1.0f);
    /* The padding is -1.0f to the bit. */
    uint32_t bits;
    memcpy(&bits, &d->x[1], sizeof bits);
    CHECK_INT(bits, 0xbf800000u);
    CHECK_INT(d->y[0], 0);
    CHECK_INT(d->y[1], 1);
    CHECK_INT(d->y[2], 1);
    CHECK_SIZE(d->num_classes, 2);
    CHECK(d->class_names == NULL);
    CHECK_SIZE(d->stats.rows_read, 3);
    CHECK_SIZE(st.rows, 3);
    CHECK_SIZE(st.examples, 3);
    CHECK_SIZE(st.dropped_empty, 0);
    CHECK_SIZE(st.tokens, 8);
    CHECK_SIZE(st.unknown, 0);
    CHECK_SIZE(st.truncated, 1);
    CHECK_SIZE(st.longest, 5);
    CHECK_SIZE(st.hist[0], 3);
    fed_data_destroy(&d);
    /* Unknown ids are counted over all ids, truncated ones included. */
    d = parse("{\"text\":\"x\",\"label\":0}\n{\"text\":\"c c c c q\",\"label\":0}\n", "u.jsonl", 4,
              NULL, &st);
    CHECK(d != NULL);
    if (d) CHECK_ROW(d, 1, 6.0f, 10.0f, 6.0f, 10.0f);
    CHECK_SIZE(st.tokens, 2 + 10);
    CHECK_SIZE(st.unknown, 2);
    fed_data_destroy(&d);
}

TEST(csv_quoting_and_lines) {
    const char *csv = "id,label,text,other\r\n"
                      "1,neg,\"ab, ab\",x\r\n"
                      "\r\n"
                      "2,pos,\"a \"\"b\"\"\nc\",\"multi\nline\"\n"
                      "3,pos, ab ,\n"
                      "4,neg,\"\",y\n";
    CHECK_FAILS(csv, "t.csv", NULL, FED_EFORMAT, "t.csv:8: empty text");
    fed_text_options o = {FED_TEXT_AUTO, true, NULL, 0};
    fed_text_stats st;
    fed_dataset *d = parse(csv, "t.csv", 6, &o, &st);
    CHECK(d != NULL);
    if (!d) return;
    CHECK_SIZE(d->n, 3);
    CHECK_ROW(d, 0, 9.0f, 0.0f, 9.0f, -1.0f, -1.0f, -1.0f); /* "ab, ab": the comma unknown */
    /* a "b"<LF>c: ▁ a ▁ " b " <LF> c */
    CHECK_ROW(d, 1, 6.0f, 7.0f, 6.0f, 0.0f, 8.0f, 0.0f);
    CHECK_ROW(d, 2, 6.0f, 9.0f, 6.0f, -1.0f, -1.0f, -1.0f); /* spaces kept: "▁▁ab▁" */
    CHECK_SIZE(st.rows, 4);
    CHECK_SIZE(st.dropped_empty, 1);
    CHECK_SIZE(d->stats.rows_dropped, 1);
    CHECK_SIZE(d->num_classes, 2);
    CHECK(d->class_names != NULL);
    if (d->class_names) {
        CHECK_STR(d->class_names[0], "neg");
        CHECK_STR(d->class_names[1], "pos");
    }
    CHECK_INT(d->y[0], 0);
    CHECK_INT(d->y[1], 1);
    CHECK_INT(d->y[2], 1);
    fed_data_destroy(&d);
    /* Lines after a quoted field with line breaks are counted right. */
    CHECK_FAILS("text,label\n\"a\nb\nc\",0\nab\n", "t.csv", NULL, FED_EFORMAT,
                "t.csv:5: 1 fields, the header has 2");
    CHECK_FAILS("text,label\nab,0\n\"a\nb,1\n", "t.csv", NULL, FED_EFORMAT,
                "t.csv:3: the quoted field opened on this line never closes");
    CHECK_FAILS("text,label\n\"ab\" x,0\n", "t.csv", NULL, FED_EFORMAT,
                "t.csv:2: field 1: text after the closing quote (a quote inside a quoted field is "
                "written \"\")");
    /* A byte-order mark and a last line without a break; a quote inside an unquoted field. */
    d = parse("\xef\xbb\xbftext,label\nab,1\na\"b,2", "b.csv", 4, NULL, NULL);
    CHECK(d != NULL);
    if (d) {
        CHECK_SIZE(d->n, 2);
        CHECK_ROW(d, 1, 6.0f, 7.0f, 0.0f, 8.0f);
        CHECK_SIZE(d->num_classes, 3);
    }
    fed_data_destroy(&d);
}

TEST(label_mapping) {
    /* Names in strcmp order; integers and names mixed are all names. */
    fed_dataset *d = parse("{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"a\",\"label\":10}\n"
                           "{\"text\":\"a\",\"label\":\"2\"}\n{\"text\":\"a\",\"label\":1}\n",
                           "m.jsonl", 2, NULL, NULL);
    CHECK(d != NULL);
    if (d && d->class_names) {
        CHECK_SIZE(d->num_classes, 4);
        CHECK_STR(d->class_names[0], "1");
        CHECK_STR(d->class_names[1], "10");
        CHECK_STR(d->class_names[2], "2");
        CHECK_STR(d->class_names[3], "x");
        CHECK_INT(d->y[0], 3);
        CHECK_INT(d->y[1], 1);
        CHECK_INT(d->y[2], 2);
        CHECK_INT(d->y[3], 0);
    }
    fed_data_destroy(&d);
    /* Integers, as numbers or strings: ids, num_classes = largest + 1. */
    d = parse("{\"text\":\"a\",\"label\":\"3\"}\n{\"text\":\"a\",\"label\":3}\n"
              "{\"text\":\"a\",\"label\":0}\n",
              "i.jsonl", 2, NULL, NULL);
    CHECK(d != NULL);
    if (d) {
        CHECK_SIZE(d->num_classes, 4);
        CHECK(d->class_names == NULL);
        CHECK_INT(d->y[0], 3);
        CHECK_INT(d->y[1], 3);
        CHECK_INT(d->y[2], 0);
    }
    fed_data_destroy(&d);
    /* Known classes fix the ids, whatever the order of the file. */
    const char *const classes[] = {"pos", "neg", "mixed"};
    fed_text_options o = {FED_TEXT_AUTO, false, classes, 3};
    d = parse("text,label\nab,neg\nab,pos\n", "k.csv", 2, &o, NULL);
    CHECK(d != NULL);
    if (d && d->class_names) {
        CHECK_SIZE(d->num_classes, 3);
        CHECK_STR(d->class_names[2], "mixed");
        CHECK_INT(d->y[0], 1);
        CHECK_INT(d->y[1], 0);
    }
    fed_data_destroy(&d);
    CHECK_FAILS("text,label\nab,neg\nab,happy\n", "k.csv", &o, FED_EFORMAT,
                "k.csv:3: unknown class \"happy\" (the classes: \"pos\", \"neg\", \"mixed\")");
    CHECK_FAILS("text,label\nab,1\nab,65536\n", "r.csv", NULL, FED_ERANGE,
                "r.csv:3: label 65536 is not below 65536");
    CHECK_FAILS("text,label\nab,1\nab,\n", "e.csv", NULL, FED_EFORMAT, "e.csv:3: empty label");
    static const char *const bad[] = {"-1", "1.5", "true", "null", "[1]", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char line[96];
        snprintf(line, sizeof line, "{\"text\":\"a\",\"label\":0}\n{\"text\":\"a\",\"label\":%s}",
                 bad[i]);
        CHECK_FAILS(line, "l.jsonl", NULL, FED_EFORMAT,
                    "l.jsonl:2: \"label\" must be a string or an integer >= 0");
    }
}

TEST(empty_texts) {
    CHECK_FAILS("{\"text\":\"a\",\"label\":0}\n{\"text\":\" \\t\\n \",\"label\":0}\n", "e.jsonl",
                NULL, FED_EFORMAT, "e.jsonl:2: empty text");
    CHECK_FAILS("{\"text\":\"\",\"label\":0}\n", "e.jsonl", NULL, FED_EFORMAT,
                "e.jsonl:1: empty text");
    fed_text_options o = {FED_TEXT_AUTO, true, NULL, 0};
    CHECK_FAILS("{\"text\":\"\",\"label\":0}\n{\"text\":\" \",\"label\":1}\n", "e.jsonl", &o,
                FED_EFORMAT, "e.jsonl: no rows: all 2 texts are empty");
    fed_text_stats st;
    fed_dataset *d =
        parse("{\"text\":\"\",\"label\":0}\n{\"text\":\"c\",\"label\":1}\n", "e.jsonl", 2, &o, &st);
    CHECK(d != NULL);
    CHECK_SIZE(st.rows, 2);
    CHECK_SIZE(st.dropped_empty, 1);
    CHECK_SIZE(st.examples, 1);
    /* Classes come from the kept rows only. */
    if (d) CHECK_SIZE(d->num_classes, 2);
    fed_data_destroy(&d);
}

TEST(malformed_jsonl) {
    const char *ok = "{\"text\":\"a\",\"label\":0}\n";
    char buf[256];
#define LINE2(second, msg)                                                                         \
    do {                                                                                           \
        snprintf(buf, sizeof buf, "%s%s\n", ok, second);                                           \
        CHECK_FAILS(buf, "j.jsonl", NULL, FED_EFORMAT, msg);                                       \
    } while (0)
    LINE2("{\"text\":\"a\",\"label\":0", "j.jsonl:2: bad JSON");
    LINE2("{\"text\":\"a\",\"label\":0} x", "j.jsonl:2: bad JSON");
    LINE2("{\"text\":\"a\\ud800\",\"label\":0}", "j.jsonl:2: bad JSON");
    LINE2("[\"a\",0]", "j.jsonl:2: not a JSON object {\"text\": ..., \"label\": ...}");
    LINE2("\"a\"", "j.jsonl:2: not a JSON object {\"text\": ..., \"label\": ...}");
    LINE2("{\"label\":0}", "j.jsonl:2: no \"text\"");
    LINE2("{\"text\":5,\"label\":0}", "j.jsonl:2: \"text\" must be a string");
    LINE2("{\"text\":null,\"label\":0}", "j.jsonl:2: \"text\" must be a string");
    LINE2("{\"text\":\"a\"}", "j.jsonl:2: no \"label\"");
    LINE2("{\"text\":\"a\\u0000b\",\"label\":0}", "j.jsonl:2: \\u0000 is not supported in a text");
#undef LINE2
    const char nul[] = "{\"text\":\"a\",\"label\":0}\n{\"text\":\"a\0b\",\"label\":0}\n";
    fed_dataset *d = (fed_dataset *)1;
    CHECK_ERR(fed_data_parse_text(&d, nul, sizeof nul - 1, "n.jsonl", tok, 4, NULL, NULL),
              FED_EFORMAT);
    CHECK(d == NULL);
    CHECK_STR(fed_errmsg(), "n.jsonl:2: a NUL byte in a JSON line");
    CHECK_FAILS("\n\n", "j.jsonl", NULL, FED_EFORMAT, "j.jsonl: no rows");
    CHECK_FAILS("", "j.jsonl", NULL, FED_EFORMAT, "j.jsonl: no rows");
}

TEST(malformed_csv) {
    CHECK_FAILS("", "c.csv", NULL, FED_EFORMAT, "c.csv: empty file: no header");
    CHECK_FAILS("\n\r\n", "c.csv", NULL, FED_EFORMAT, "c.csv: empty file: no header");
    CHECK_FAILS("text,label\n", "c.csv", NULL, FED_EFORMAT, "c.csv: no rows");
    CHECK_FAILS("sentence,label\nab,0\n", "c.csv", NULL, FED_EFORMAT,
                "c.csv:1: no \"text\" column in the header (text data needs the columns \"text\" "
                "and \"label\")");
    CHECK_FAILS("\n\ntext,class\nab,0\n", "c.csv", NULL, FED_EFORMAT,
                "c.csv:3: no \"label\" column in the header (text data needs the columns \"text\" "
                "and \"label\")");
    /* Empty fields anywhere (fuzz_text found these failing for lack of memory). */
    CHECK_FAILS(",text,label\n,,1\n", "c.csv", NULL, FED_EFORMAT, "c.csv:2: empty text");
    CHECK_FAILS("\n,,t2ab", "c.csv", NULL, FED_EFORMAT,
                "c.csv:2: no \"text\" column in the header (text data needs the columns \"text\" "
                "and \"label\")");
    fed_dataset *e = parse(",text,label,\n,ab,1,\n", "c.csv", 2, NULL, NULL);
    CHECK(e != NULL);
    if (e) CHECK_ROW(e, 0, 9.0f, -1.0f);
    fed_data_destroy(&e);
    CHECK_FAILS("text,label,text\nab,0,b\n", "c.csv", NULL, FED_EFORMAT,
                "c.csv:1: two columns named \"text\"");
    CHECK_FAILS("text,label\nab,0\nab,0,extra\n", "c.csv", NULL, FED_EFORMAT,
                "c.csv:3: 3 fields, the header has 2");
    CHECK_FAILS("text,label\nab,0\n\xe2\x82,0\n", "c.csv", NULL, FED_EFORMAT,
                "c.csv:3: invalid UTF-8 at byte 16 of the file");
    const char nul[] = "text,label\nab,\"n\0o\"\n";
    fed_dataset *d = (fed_dataset *)1;
    CHECK_ERR(fed_data_parse_text(&d, nul, sizeof nul - 1, "n.csv", tok, 4, NULL, NULL),
              FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "n.csv:2: the label holds a NUL byte");
    /* JSON content read as CSV on request. */
    fed_text_options o = {FED_TEXT_CSV, false, NULL, 0};
    CHECK_FAILS("{\"text\":\"a\",\"label\":0}\n", "x.jsonl", &o, FED_EFORMAT,
                "x.jsonl:1: field 2: text after the closing quote (a quote inside a quoted field "
                "is written \"\")");
    /* Arguments. */
    CHECK_ERR(fed_data_parse_text(&d, "text,label\na,0\n", 15, "c.csv", tok, 0, NULL, NULL),
              FED_EINVAL);
    CHECK_STR(fed_errmsg(), "c.csv: sequence length 0 is not in [1, 1048576]");
    CHECK_ERR(fed_data_parse_text(&d, "text,label\na,0\n", 15, "c.csv", tok, FED_TEXT_MAX_LEN + 1,
                                  NULL, NULL),
              FED_EINVAL);
    CHECK_ERR(fed_data_parse_text(&d, "text,label\na,0\n", 15, "c.csv", NULL, 4, NULL, NULL),
              FED_EINVAL);
    const char *const none[] = {"a"};
    fed_text_options z = {FED_TEXT_AUTO, false, none, 0};
    CHECK_ERR(fed_data_parse_text(&d, "text,label\na,0\n", 15, "c.csv", tok, 4, &z, NULL),
              FED_EINVAL);
}

TEST(format_detection_and_long_texts) {
    /* By content: '{' first (after white space) is JSON lines whatever the name. */
    fed_dataset *d = parse("  \n{\"text\":\"ab\",\"label\":0}\n", "data.txt", 2, NULL, NULL);
    CHECK(d != NULL);
    if (d) CHECK_ROW(d, 0, 9.0f, -1.0f);
    fed_data_destroy(&d);
    /* A text past the tokenizer's limit names its line. */
    size_t big = FED_TOKENIZER_MAX_TEXT + 1;
    char *text = malloc(big + 64);
    CHECK(text != NULL);
    if (!text) return;
    memcpy(text, "text,label\nab,0\n", 16);
    memset(text + 16, 'a', big);
    memcpy(text + 16 + big, ",1\n", 4);
    CHECK_ERR(fed_data_parse_text(&d, text, strlen(text), "big.csv", tok, 4, NULL, NULL),
              FED_ERANGE);
    CHECK_STR(fed_errmsg(), "big.csv:3: text of 16777217 bytes; the limit is 16777216");
    /* 20 000 rows of a long text each: sizes add up. */
    size_t rows = 20000;
    char *many = malloc(rows * 40 + 16);
    CHECK(many != NULL);
    if (many) {
        size_t k = (size_t)sprintf(many, "text,label\n");
        for (size_t i = 0; i < rows; i++)
            k += (size_t)sprintf(many + k, "ab ab ab ab ab ab ab ab ab ab,%zu\n", i % 3);
        fed_text_stats st;
        d = parse(many, "many.csv", 8, NULL, &st);
        CHECK(d != NULL);
        CHECK_SIZE(st.examples, rows);
        CHECK_SIZE(st.tokens, rows * 10);
        CHECK_SIZE(st.truncated, rows);
        CHECK_SIZE(st.hist[1], rows);
        if (d) {
            CHECK_SIZE(d->num_classes, 3);
            CHECK_ROW(d, rows - 1, 9.0f, 9.0f, 9.0f, 9.0f, 9.0f, 9.0f, 9.0f, 9.0f);
            CHECK_INT(d->y[rows - 1], (int)((rows - 1) % 3));
        }
        fed_data_destroy(&d);
        free(many);
    }
    free(text);
}

TEST(histogram_buckets) {
    CHECK_SIZE(fed_text_hist_bucket(1), 0);
    CHECK_SIZE(fed_text_hist_bucket(8), 0);
    CHECK_SIZE(fed_text_hist_bucket(9), 1);
    CHECK_SIZE(fed_text_hist_bucket(16), 1);
    CHECK_SIZE(fed_text_hist_bucket(17), 2);
    CHECK_SIZE(fed_text_hist_bucket(128), 4);
    CHECK_SIZE(fed_text_hist_bucket(129), 5);
    CHECK_SIZE(fed_text_hist_bucket(512), 6);
    CHECK_SIZE(fed_text_hist_bucket(513), 7);
    CHECK_SIZE(fed_text_hist_bucket(1000000), 7);
}

static bool write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

TEST(files_and_sniffing) {
    char dir[] = "/tmp/fedtune-text-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char p1[64], p2[64], p3[64], p4[64], p5[64];
    snprintf(p1, sizeof p1, "%s/a.jsonl", dir);
    snprintf(p2, sizeof p2, "%s/b.csv", dir);
    snprintf(p3, sizeof p3, "%s/c.csv", dir);
    snprintf(p4, sizeof p4, "%s/d.txt", dir);
    snprintf(p5, sizeof p5, "%s/e.csv.gz", dir);
    const char *csv = "\"id\",\"text\",label\nx,ab,1\n";
    const char *j1 = "{\"text\":\"c\",\"label\":0}\n", *j4 = " {\"text\":\"c\",\"label\":0}\n";
    CHECK(write_file(p1, j1, strlen(j1)));
    CHECK(write_file(p2, csv, strlen(csv)));
    CHECK(write_file(p3, "f1,f2,label\n1,2,0\n", strlen("f1,f2,label\n1,2,0\n")));
    CHECK(write_file(p4, j4, strlen(j4)));
    gzFile gz = gzopen(p5, "wb");
    CHECK(gz != NULL);
    if (gz) {
        CHECK_INT(gzwrite(gz, csv, (unsigned)strlen(csv)), (int)strlen(csv));
        gzclose(gz);
    }
    bool is = false;
    CHECK_OK(fed_text_sniff(p1, &is));
    CHECK(is);
    CHECK_OK(fed_text_sniff(p2, &is));
    CHECK(is);
    CHECK_OK(fed_text_sniff(p3, &is));
    CHECK(!is);
    CHECK_OK(fed_text_sniff(p4, &is));
    CHECK(is);
    CHECK_OK(fed_text_sniff(p5, &is));
    CHECK(is);
    CHECK_OK(fed_text_sniff("/nonexistent/x.csv", &is)); /* the loader will say why */
    CHECK(!is);
    CHECK_OK(fed_text_sniff(dir, &is)); /* a directory */
    CHECK(!is);
    CHECK_OK(fed_text_sniff("/nonexistent/x.jsonl", &is)); /* by name alone */
    CHECK(is);
    fed_dataset *d = NULL;
    fed_text_stats st;
    CHECK_OK(fed_data_load_text(&d, p5, tok, 3, NULL, &st));
    if (d) {
        CHECK_ROW(d, 0, 9.0f, -1.0f, -1.0f);
        CHECK_SIZE(st.examples, 1);
    }
    fed_data_destroy(&d);
    CHECK_OK(fed_data_load_text(&d, p1, tok, 3, NULL, NULL));
    if (d) CHECK_ROW(d, 0, 6.0f, 10.0f, -1.0f);
    fed_data_destroy(&d);
    CHECK_ERR(fed_data_load_text(&d, p3, tok, 3, NULL, NULL), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "/c.csv:1: no \"text\" column in the header");
    CHECK_ERR(fed_data_load_text(&d, "/nonexistent/x.csv", tok, 3, NULL, NULL), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "/nonexistent/x.csv: cannot open");
    unlink(p1);
    unlink(p2);
    unlink(p3);
    unlink(p4);
    unlink(p5);
    rmdir(dir);
}

#define JSTR(out, n, lit) fed_text_json_string((out), (n), (lit), strlen(lit))

TEST(json_strings) {
    char *s = NULL;
    size_t n = 0;
    CHECK_OK(JSTR(&s, &n, " \"a\\tb\\u00e9\\ud83d\\ude00\" "));
    CHECK_STR(s, "a\tb\xc3\xa9\xf0\x9f\x98\x80");
    CHECK_SIZE(n, 9);
    fed_free(s);
    CHECK_ERR(JSTR(&s, &n, "\"a\" \"b\""), FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "not a JSON string");
    CHECK(s == NULL);
    CHECK_ERR(JSTR(&s, &n, "5"), FED_EFORMAT);
    CHECK_ERR(JSTR(&s, &n, ""), FED_EFORMAT);
    CHECK_ERR(JSTR(&s, &n, "\"a"), FED_EFORMAT);
    CHECK_ERR(JSTR(&s, &n, "\"a\\u0000\""), FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "byte 2: \\u0000 is not supported in a text");
    /* An escaped backslash before "u0000" is no NUL. */
    CHECK_OK(JSTR(&s, &n, "\"\\\\u0000\""));
    CHECK_STR(s, "\\u0000");
    CHECK_SIZE(n, 6);
    fed_free(s);
}

TEST(under_allocation_failure) {
    const char *jsonl = "{\"text\":\"ab c\",\"label\":\"x\"}\n{\"text\":\"c\",\"label\":\"y\"}\n"
                        "{\"text\":\"\",\"label\":\"y\"}\n";
    const char *csv = "label,text\nx,\"ab\nc\"\ny,c\n";
    fed_text_options o = {FED_TEXT_AUTO, true, NULL, 0};
    const char *const classes[] = {"y", "x"};
    fed_text_options k = {FED_TEXT_AUTO, false, classes, 2};
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_dataset *d = NULL;
        ALLOC_TRY(f, fed_data_parse_text(&d, jsonl, strlen(jsonl), "a.jsonl", tok, 4, &o, NULL));
        if (f.failed)
            CHECK(d == NULL);
        else if (d)
            CHECK(d->n == 2 && d->class_names && strcmp(d->class_names[1], "y") == 0);
        fed_data_destroy(&d);
    }
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_dataset *d = NULL;
        ALLOC_TRY(f, fed_data_parse_text(&d, csv, strlen(csv), "a.csv", tok, 4, &k, NULL));
        if (f.failed)
            CHECK(d == NULL);
        else if (d)
            CHECK(d->n == 2 && d->y[0] == 1 && d->y[1] == 0);
        fed_data_destroy(&d);
    }
}

int main(void) {
    fed_err e = fed_tokenizer_parse(&tok, vocab, strlen(vocab), "vocab");
    if (e) {
        fprintf(stderr, "the test vocabulary: %s\n", fed_errdetail(e));
        return 1;
    }
    RUN(jsonl_padding_truncation_and_stats);
    RUN(csv_quoting_and_lines);
    RUN(label_mapping);
    RUN(empty_texts);
    RUN(malformed_jsonl);
    RUN(malformed_csv);
    RUN(format_detection_and_long_texts);
    RUN(histogram_buckets);
    RUN(files_and_sniffing);
    RUN(json_strings);
    RUN(under_allocation_failure);
    fed_tokenizer_destroy(&tok);
    return test_report();
}
