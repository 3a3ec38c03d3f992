/* Tests of data loading: CSV text parsed from memory (every float, label and class name
 * checked), header detection, quoting, CRLF, label columns, missing-value policies, the
 * sklearn flavour, IDX built in memory (plain and gzip), malformed input of every kind
 * with the exact what:line:column prefix, fed_data_load on temporary files, and the
 * parsers under fail-the-Nth-allocation. */
#include "core/alloc_internal.h"
#include "dataset/dataset.h"
#include "tests/test.h"
#include "tests/test_idx.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

static fed_dataset *parse(const char *text, const fed_csv_options *o) {
    fed_dataset *d = NULL;
    fed_err e = fed_data_parse_csv(&d, text, strlen(text), "t.csv", o);
    if (e) fprintf(stderr, "  parse failed: %s\n", fed_errdetail(e));
    return d;
}

/* The parse fails with code and a message containing sub. */
#define CHECK_FAILS(text, o, code, sub)                                                            \
    do {                                                                                           \
        fed_dataset *d_ = (fed_dataset *)1;                                                        \
        CHECK_ERR(fed_data_parse_csv(&d_, (text), strlen(text), "t.csv", (o)), (code));            \
        CHECK(d_ == NULL);                                                                         \
        CHECK_CONTAINS(fed_errmsg(), (sub));                                                       \
    } while (0)

static void check_floats(const float *got, const float *want, size_t n, int line) {
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            test_fail_(__FILE__, line);
            fprintf(stderr, "x[%zu] = %.9g, expected %.9g\n", i, (double)got[i], (double)want[i]);
            return;
        }
    }
    test_passed_++;
}

static void check_labels(const int32_t *got, const int32_t *want, size_t n, int line) {
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            test_fail_(__FILE__, line);
            fprintf(stderr, "y[%zu] = %d, expected %d\n", i, (int)got[i], (int)want[i]);
            return;
        }
    }
    test_passed_++;
}

#define CHECK_X(d, ...)                                                                            \
    do {                                                                                           \
        const float w_[] = {__VA_ARGS__};                                                          \
        CHECK_SIZE((d)->n *(d)->dim, sizeof w_ / sizeof w_[0]);                                    \
        if ((d)->n * (d)->dim == sizeof w_ / sizeof w_[0])                                         \
            check_floats((d)->x, w_, sizeof w_ / sizeof w_[0], __LINE__);                          \
    } while (0)

#define CHECK_Y(d, ...)                                                                            \
    do {                                                                                           \
        const int32_t w_[] = {__VA_ARGS__};                                                        \
        CHECK_SIZE((d)->n, sizeof w_ / sizeof w_[0]);                                              \
        if ((d)->n == sizeof w_ / sizeof w_[0])                                                    \
            check_labels((d)->y, w_, sizeof w_ / sizeof w_[0], __LINE__);                          \
    } while (0)

TEST(csv_numbers_without_header) {
    fed_dataset *d = parse("1,2,0\n3.5,-4e1,1\n-0.25, 7 ,1\n", NULL);
    CHECK(d != NULL);
    if (!d) return;
    CHECK_SIZE(d->n, 3);
    CHECK_SIZE(d->dim, 2);
    CHECK_INT(d->shape.ndim, 1);
    CHECK_SIZE(d->shape.d[0], 2);
    CHECK_X(d, 1.0f, 2.0f, 3.5f, -40.0f, -0.25f, 7.0f);
    CHECK_Y(d, 0, 1, 1);
    CHECK_SIZE(d->num_classes, 2);
    CHECK(d->class_names == NULL);
    CHECK_SIZE(d->stats.rows_read, 3);
    CHECK_SIZE(d->stats.rows_dropped, 0);
    CHECK_SIZE(d->stats.cells_imputed, 0);
    fed_data_destroy(&d);
    CHECK(d == NULL);
    fed_data_destroy(&d); /* NULL-safe */
}

TEST(csv_header_detection) {
    /* A non-numeric feature cell makes the first row a header... */
    fed_dataset *d = parse("a,b,label\n1,2,0\n", NULL);
    CHECK(d && d->n == 1);
    if (d) CHECK_X(d, 1.0f, 2.0f);
    fed_data_destroy(&d);
    /* ...a non-numeric label cell does not: string labels are data. */
    d = parse("1,2,cat\n3,4,dog\n", NULL);
    CHECK(d && d->n == 2);
    if (d) {
        CHECK_X(d, 1.0f, 2.0f, 3.0f, 4.0f);
        CHECK_Y(d, 0, 1);
    }
    fed_data_destroy(&d);
    /* Forced either way. */
    fed_csv_options o = {.header = FED_HEADER_YES};
    d = parse("1,2,3\n4,5,6\n", &o);
    CHECK(d && d->n == 1);
    if (d) {
        CHECK_X(d, 4.0f, 5.0f);
        CHECK_Y(d, 6);
        CHECK_SIZE(d->num_classes, 7);
    }
    fed_data_destroy(&d);
    o.header = FED_HEADER_NO;
    CHECK_FAILS("a,b,c\n1,2,0\n", &o, FED_EFORMAT, "t.csv:1:1: \"a\" is not a number");
    /* Missing-value tokens do not make a header. */
    o = (fed_csv_options){.missing = FED_MISSING_MEAN};
    d = parse("NA,2,0\n4,?,1\n", &o);
    CHECK(d && d->n == 2);
    if (d) CHECK_X(d, 4.0f, 2.0f, 4.0f, 2.0f);
    fed_data_destroy(&d);
}

TEST(csv_quotes_crlf_blank_lines) {
    fed_dataset *d = parse("\"x,1\",\"y\"\"q\",label\n\"1.5\", 2 ,\"a \"\"b\"\"\"\n"
                           "  \"-3\"  ,4,\"c,d\"\n",
                           NULL);
    CHECK(d != NULL);
    if (d) {
        CHECK_X(d, 1.5f, 2.0f, -3.0f, 4.0f);
        CHECK_Y(d, 0, 1);
        CHECK_SIZE(d->num_classes, 2);
        CHECK(d->class_names != NULL);
        if (d->class_names) {
            CHECK_STR(d->class_names[0], "a \"b\"");
            CHECK_STR(d->class_names[1], "c,d");
        }
    }
    fed_data_destroy(&d);
    /* CRLF with and without a final line break, blank lines anywhere. */
    const char *texts[] = {"a,b,y\r\n1,2,0\r\n3,4,1\r\n", "a,b,y\r\n1,2,0\r\n3,4,1",
                           "\n\r\na,b,y\n\n1,2,0\n  \n\t\n3,4,1\n\n\n", "1,2,0\n3,4,1"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        d = parse(texts[i], NULL);
        CHECK(d != NULL);
        if (!d) continue;
        CHECK_X(d, 1.0f, 2.0f, 3.0f, 4.0f);
        CHECK_Y(d, 0, 1);
        fed_data_destroy(&d);
    }
    /* Line numbers count blank lines and line breaks inside quotes. */
    CHECK_FAILS("\n1,2,0\n\n1,x,0\n", NULL, FED_EFORMAT, "t.csv:4:2: \"x\" is not a number");
    CHECK_FAILS("1,\"a\nb\"\n2,c\nz,d\n", NULL, FED_EFORMAT, "t.csv:4:1: \"z\" is not a number");
    d = parse("1,\"a\nb\"\n2,c\n", NULL);
    CHECK(d && d->class_names && strcmp(d->class_names[0], "a\nb") == 0);
    fed_data_destroy(&d);
}

TEST(csv_delimiters) {
    fed_csv_options o = {.delimiter = ';'};
    CHECK_FAILS("a;b;y\n1,5;2;0\n", &o, FED_EFORMAT, "t.csv:2:1: \"1,5\" is not a number");
    fed_dataset *d = parse("a;b;y\n1.5;2;0\n", &o);
    CHECK(d && d->n == 1);
    if (d) CHECK_X(d, 1.5f, 2.0f);
    fed_data_destroy(&d);
    o.delimiter = '\t';
    /* An empty cell under FED_MISSING_ERROR. */
    CHECK_FAILS("1\t2\t0\n3\t\t1\n", &o, FED_EFORMAT, "t.csv:2:2: missing value");
    d = parse("1 \t 2\t0\n", &o);
    CHECK(d && d->n == 1);
    if (d) CHECK_X(d, 1.0f, 2.0f);
    fed_data_destroy(&d);
    o.delimiter = '"';
    CHECK_FAILS("1\"2\n", &o, FED_EINVAL, "delimiter");
}

TEST(csv_label_columns) {
    const char *text = "f1,cls,f2\n1,b,2\n3,a,4\n";
    const char *labels[] = {"cls", "1", "-2"};
    for (size_t i = 0; i < 3; i++) {
        fed_csv_options o = {.label = labels[i]};
        fed_dataset *d = parse(text, &o);
        CHECK(d != NULL);
        if (!d) continue;
        CHECK_X(d, 1.0f, 2.0f, 3.0f, 4.0f);
        CHECK_Y(d, 1, 0);
        CHECK(d->class_names && !strcmp(d->class_names[0], "a") && !strcmp(d->class_names[1], "b"));
        fed_data_destroy(&d);
    }
    fed_csv_options o = {.label = "0"};
    fed_dataset *d = parse("2,1.5,7\n0,2.5,8\n", &o);
    CHECK(d != NULL);
    if (d) {
        CHECK_X(d, 1.5f, 7.0f, 2.5f, 8.0f);
        CHECK_Y(d, 2, 0);
        CHECK_SIZE(d->num_classes, 3);
    }
    fed_data_destroy(&d);
    o.label = "zzz";
    CHECK_FAILS(text, &o, FED_EINVAL, "t.csv:1: no column named \"zzz\" for the label");
    CHECK_CONTAINS(fed_errmsg(), "f1, cls, f2");
    o.label = "3";
    CHECK_FAILS(text, &o, FED_EINVAL, "t.csv: label column 3 is out of range (3 columns)");
    o.label = "-4";
    CHECK_FAILS(text, &o, FED_EINVAL, "t.csv: label column -4 is out of range (3 columns)");
    o.label = "99999999999999999999999";
    CHECK_FAILS(text, &o, FED_EINVAL, "out of range");
    o = (fed_csv_options){.label = "cls", .header = FED_HEADER_NO};
    CHECK_FAILS(text, &o, FED_EINVAL, "is a name, but there is no header");
}

TEST(csv_labels_and_classes) {
    const char *text = "1,zebra\n2,apple\n3,mango\n4,apple\n";
    fed_dataset *d = parse(text, NULL);
    CHECK(d != NULL);
    if (d) {
        CHECK_Y(d, 2, 0, 1, 0);
        CHECK_SIZE(d->num_classes, 3);
        CHECK(d->class_names != NULL);
        if (d->class_names) {
            CHECK_STR(d->class_names[0], "apple");
            CHECK_STR(d->class_names[1], "mango");
            CHECK_STR(d->class_names[2], "zebra");
        }
    }
    fed_data_destroy(&d);
    /* Known classes keep their ids. */
    const char *known[] = {"zebra", "apple", "mango", "kiwi"};
    fed_csv_options o = {.classes = known, .num_classes = 4};
    d = parse(text, &o);
    CHECK(d != NULL);
    if (d) {
        CHECK_Y(d, 0, 1, 2, 1);
        CHECK_SIZE(d->num_classes, 4);
        CHECK(d->class_names && !strcmp(d->class_names[3], "kiwi"));
    }
    fed_data_destroy(&d);
    o.classes = known + 1;
    o.num_classes = 3;
    CHECK_FAILS(text, &o, FED_EFORMAT,
                "t.csv:1:2: unknown class \"zebra\" (expected: apple, mango");
    o.num_classes = 0;
    CHECK_FAILS(text, &o, FED_EINVAL, "known classes");
    /* Integer labels, also written as floats (numpy's savetxt), are ids. */
    d = parse("1,5\n2,2\n3,0.000000000000000000e+00\n4,1.0\n", NULL);
    CHECK(d != NULL);
    if (d) {
        CHECK_Y(d, 5, 2, 0, 1);
        CHECK_SIZE(d->num_classes, 6);
        CHECK(d->class_names == NULL);
    }
    fed_data_destroy(&d);
    /* Mixed: names, sorted with strcmp. */
    d = parse("1,10\n2,9\n3,-1\n", NULL);
    CHECK(d && d->class_names && d->num_classes == 3);
    if (d && d->class_names) {
        CHECK_STR(d->class_names[0], "-1");
        CHECK_STR(d->class_names[1], "10");
        CHECK_STR(d->class_names[2], "9");
        CHECK_Y(d, 1, 2, 0);
    }
    fed_data_destroy(&d);
    CHECK_FAILS("1,5\n2,70000\n", NULL, FED_ERANGE, "t.csv:2:2: label 70000 is not below 65536");
    CHECK_FAILS("1,2,\n", NULL, FED_EFORMAT, "t.csv:1:3: missing label");
    o = (fed_csv_options){.missing = FED_MISSING_DROP};
    CHECK_FAILS("1,2,0\n3,4,NA\n", &o, FED_EFORMAT, "t.csv:2:3: missing label \"NA\"");
}

TEST(csv_too_many_classes) {
    size_t rows = FED_DATA_MAX_CLASSES + 1, cap = rows * 12;
    char *text = malloc(cap);
    CHECK(text != NULL);
    if (!text) return;
    size_t len = 0;
    for (size_t i = 0; i < rows; i++) len += (size_t)snprintf(text + len, cap - len, "1,c%zu\n", i);
    fed_dataset *d = NULL;
    CHECK_ERR(fed_data_parse_csv(&d, text, len, "t.csv", NULL), FED_ERANGE);
    CHECK_CONTAINS(fed_errmsg(), "t.csv:65537:2: more than 65536 distinct labels");
    free(text);
}

TEST(csv_malformed) {
    CHECK_FAILS("a,b,c,d,e\n1,2,3,4,5\n1,2,3,4,5\n\n1,2,3,4,5\n1,2,3,4,5\n1,2,3\n", NULL,
                FED_EFORMAT, "t.csv:7: 3 fields, expected 5 (as line 1)");
    CHECK_FAILS("1,2,0\n1,2,3,4\n", NULL, FED_EFORMAT, "t.csv:2: 4 fields, expected 3 (as line 1)");
    CHECK_FAILS("1,2,0\n1,abc,1\n", NULL, FED_EFORMAT, "t.csv:2:2: \"abc\" is not a number");
    CHECK_FAILS("1,2,0\n1,2x,1\n", NULL, FED_EFORMAT, "t.csv:2:2: \"2x\" is not a number");
    CHECK_FAILS("1,2,0\n1 2,3,1\n", NULL, FED_EFORMAT, "t.csv:2:1: \"1 2\" is not a number");
    CHECK_FAILS("1,,0\n", NULL, FED_EFORMAT, "t.csv:1:2: missing value \"\"");
    CHECK_CONTAINS(fed_errmsg(), "--missing drop|mean");
    CHECK_FAILS("x,y\n1,0\nNA,1\n", NULL, FED_EFORMAT, "t.csv:3:1: missing value \"NA\"");
    CHECK_FAILS("1,2,0\n?,2,1\n", NULL, FED_EFORMAT, "t.csv:2:1: missing value \"?\"");
    CHECK_FAILS("1,2,0\n1,nan,1\n", NULL, FED_EFORMAT, "t.csv:2:2: missing value \"nan\"");
    CHECK_FAILS("1,inf,0\n", NULL, FED_EFORMAT, "t.csv:1:2: \"inf\" is not a finite number");
    CHECK_FAILS("1,-Infinity,0\n", NULL, FED_EFORMAT, "t.csv:1:2: \"-Infinity\" is not a finite");
    CHECK_FAILS("1,1e999,0\n", NULL, FED_ERANGE, "t.csv:1:2: \"1e999\" is out of float range");
    CHECK_FAILS("1,-1e39,0\n", NULL, FED_ERANGE, "t.csv:1:2: \"-1e39\" is out of float range");
    CHECK_FAILS("", NULL, FED_EFORMAT, "t.csv: empty file");
    CHECK_FAILS("\n  \r\n\n", NULL, FED_EFORMAT, "t.csv: empty file");
    CHECK_FAILS("a,b,c\n", NULL, FED_EFORMAT, "t.csv:1: no data rows after the header");
    CHECK_FAILS("\na,b,c\n\n", NULL, FED_EFORMAT, "t.csv:2: no data rows after the header");
    CHECK_FAILS("1,\"abc\n", NULL, FED_EFORMAT, "t.csv:1:2: unterminated quoted field");
    CHECK_FAILS("1,\"a\"b,0\n", NULL, FED_EFORMAT, "t.csv:1:2: text after the closing quote");
    CHECK_FAILS("1\n2\n", NULL, FED_EFORMAT, "t.csv:1: 1 field; need a label column");
    fed_dataset *d = NULL;
    CHECK_ERR(fed_data_parse_csv(&d, "1,2\n3\0,4\n", 9, "t.csv", NULL), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "t.csv:2: NUL byte");
    /* Long cells are cut to 32 bytes in messages, control bytes shown as '?'. */
    char text[128];
    snprintf(text, sizeof text, "0,0,0\n1,%s\x01,0\n", "xxxxxxxxxxyyyyyyyyyyzzzzzzzzzzwwwwwwwwww");
    CHECK_FAILS(text, NULL, FED_EFORMAT, "t.csv:2:2: \"xxxxxxxxxxyyyyyyyyyyzzzzzzzzzzww...\"");
    CHECK_FAILS("0,0,0\n1,a\x01\x7f b,0\n", NULL, FED_EFORMAT, "\"a?? b\" is not a number");
    fed_csv_options o = {.format = FED_FORMAT_IDX};
    CHECK_FAILS("1,2\n", &o, FED_EINVAL, "IDX");
}

TEST(csv_missing_drop_and_mean) {
    const char *text = "a,b,y\n1,2,0\n3,NA,1\n5,,0\n?,8,1\n";
    fed_csv_options o = {.missing = FED_MISSING_DROP};
    fed_dataset *d = parse(text, &o);
    CHECK(d != NULL);
    if (d) {
        CHECK_X(d, 1.0f, 2.0f);
        CHECK_Y(d, 0);
        CHECK_SIZE(d->num_classes, 1); /* class 1 only occurred in dropped rows */
        CHECK_SIZE(d->stats.rows_read, 4);
        CHECK_SIZE(d->stats.rows_dropped, 3);
        CHECK_SIZE(d->stats.cells_imputed, 0);
    }
    fed_data_destroy(&d);
    o.missing = FED_MISSING_MEAN;
    d = parse(text, &o);
    CHECK(d != NULL);
    if (d) {
        /* Column a: mean of 1, 3, 5 = 3; column b: mean of 2, 8 = 5. */
        CHECK_X(d, 1.0f, 2.0f, 3.0f, 5.0f, 5.0f, 5.0f, 3.0f, 8.0f);
        CHECK_Y(d, 0, 1, 0, 1);
        CHECK_SIZE(d->stats.rows_read, 4);
        CHECK_SIZE(d->stats.rows_dropped, 0);
        CHECK_SIZE(d->stats.cells_imputed, 3);
    }
    fed_data_destroy(&d);
    d = parse("0.1,1\n0.2,0\nNA,1\n", &o);
    CHECK(d != NULL);
    if (d) CHECK_X(d, 0.1f, 0.2f, (float)(((double)0.1f + (double)0.2f) / 2.0));
    fed_data_destroy(&d);
    CHECK_FAILS("a,b,y\nNA,1,0\n,2,1\n", &o, FED_EFORMAT,
                "t.csv: column 1 (\"a\") has no value to impute the mean from");
    CHECK_FAILS("1,NA,0\n2,?,1\n", &o, FED_EFORMAT, "t.csv: column 2 has no value");
    o.missing = FED_MISSING_DROP;
    CHECK_FAILS("1,NA,0\n2,?,1\n", &o, FED_EFORMAT, "t.csv: all 2 rows have missing values");
    /* Dropping never hides other errors in the row. */
    CHECK_FAILS("1,2,3,0\n1,NA,x,0\n", &o, FED_EFORMAT, "t.csv:2:3: \"x\" is not a number");
}

TEST(sklearn_flavour) {
    const char *iris = "3,2,setosa,versicolor,virginica\n5.1,3.5,0\n4.9,3.0,1\n6.2,3.4,2\n";
    fed_dataset *d = parse(iris, NULL);
    CHECK(d != NULL);
    if (d) {
        CHECK_X(d, 5.1f, 3.5f, 4.9f, 3.0f, 6.2f, 3.4f);
        CHECK_Y(d, 0, 1, 2);
        CHECK_SIZE(d->num_classes, 3);
        CHECK(d->class_names && !strcmp(d->class_names[0], "setosa") &&
              !strcmp(d->class_names[2], "virginica"));
        CHECK_SIZE(d->stats.rows_read, 3);
    }
    fed_data_destroy(&d);
    /* Class names fix the class count even when a class is absent. */
    d = parse("2,1,a,b,c\n1,0\n2,0\n", NULL);
    CHECK(d && d->num_classes == 3);
    fed_data_destroy(&d);
    CHECK_FAILS("4,2,a,b,c\n5.1,3.5,0\n4.9,3.0,1\n6.2,3.4,2\n", NULL, FED_EFORMAT,
                "t.csv:1: line 1 announces 4 samples; the file has 3");
    CHECK_FAILS("2,2,a,b,c\n5.1,3.5,0\n4.9,3.0,1\n\n6.2,3.4,2\n", NULL, FED_EFORMAT,
                "t.csv:5: more rows than the 2 of line 1");
    CHECK_FAILS("2,2,a,b,c\n5.1,3.5,0\n4.9,3.0,3\n", NULL, FED_ERANGE,
                "t.csv:3:3: label 3 but there are 3 classes");
    CHECK_FAILS("2,2,a,b,c\n5.1,3.5,0\n4.9,3.0,x\n", NULL, FED_EFORMAT,
                "t.csv:3:3: label \"x\" is not a class number");
    CHECK_FAILS("2,2,a,b,c\n5.1,3.5,0\n4.9,3.0,1,7\n", NULL, FED_EFORMAT,
                "t.csv:3: 4 fields, expected 3 (n_features 2 on line 1, plus the label)");
    /* Without names: integer labels, and the row count must agree for detection. */
    d = parse("2,1\n5,1\n3,0\n", NULL);
    CHECK(d && d->n == 2 && d->dim == 1);
    if (d) {
        CHECK_X(d, 5.0f, 3.0f);
        CHECK_Y(d, 1, 0);
    }
    fed_data_destroy(&d);
    d = parse("5,1\n3,0\n", NULL); /* a two-column table, not the flavour */
    CHECK(d && d->n == 2);
    if (d) {
        CHECK_X(d, 5.0f, 3.0f);
        CHECK_Y(d, 1, 0);
    }
    fed_data_destroy(&d);
    /* Forced: the first line and the second line's fields are checked. */
    fed_csv_options o = {.format = FED_FORMAT_SKLEARN};
    CHECK_FAILS("3,2,a,b\n1,2,3,0\n", &o, FED_EFORMAT,
                "t.csv:2: 4 fields, expected 3 (n_features 2 on line 1, plus the label)");
    CHECK_FAILS("a,b\n1,2\n", &o, FED_EFORMAT, "t.csv:1: the sklearn flavour starts with");
    CHECK_FAILS("1,1,a\n", &o, FED_EFORMAT, "t.csv:1: no data rows after the first line");
    CHECK_FAILS("1,1,a,b,a\n1,0\n", &o, FED_EFORMAT, "t.csv:1:5: class name \"a\" appears twice");
    /* The same text under CSV rules is a table with a header. */
    o.format = FED_FORMAT_CSV;
    /* 5 header fields, 3 in the rows. */
    CHECK_FAILS(iris, &o, FED_EFORMAT, "t.csv:2: 3 fields, expected 5 (as line 1)");
    /* Known classes must match the names. */
    const char *known[] = {"setosa", "versicolor", "virginica"};
    o = (fed_csv_options){.classes = known, .num_classes = 3};
    d = parse(iris, &o);
    CHECK(d && d->num_classes == 3);
    fed_data_destroy(&d);
    o.num_classes = 2;
    CHECK_FAILS(iris, &o, FED_EFORMAT, "t.csv:1: the class names differ");
}

/* ---- IDX ----------------------------------------------------------------------------- */

/* gzip of p[0..n) into a malloc'ed buffer. */
static unsigned char *gzip_of(const void *p, size_t n, size_t *out_n) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&zs, (uLong)n) + 32;
    unsigned char *out = malloc(cap);
    zs.next_in = (Bytef *)(uintptr_t)p;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    int r = out ? deflate(&zs, Z_FINISH) : Z_MEM_ERROR;
    *out_n = cap - zs.avail_out;
    deflateEnd(&zs);
    if (r != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

static const unsigned char pixels[12] = {0, 255, 51, 102, 1, 2, 3, 4, 200, 100, 50, 25};
static const unsigned char digits[3] = {7, 0, 2};

TEST(idx_in_memory) {
    const uint32_t idim[3] = {3, 2, 2}, ldim[1] = {3};
    bytes im = idx_bytes(0x08, 3, idim, pixels, 12), lb = idx_bytes(0x08, 1, ldim, digits, 3);
    fed_dataset *d = NULL;
    CHECK_OK(fed_data_parse_idx(&d, im.b, im.n, lb.b, lb.n, "mem"));
    if (!d) return;
    CHECK_SIZE(d->n, 3);
    CHECK_SIZE(d->dim, 4);
    CHECK_INT(d->shape.ndim, 3);
    CHECK(d->shape.d[0] == 1 && d->shape.d[1] == 2 && d->shape.d[2] == 2);
    for (size_t i = 0; i < 12; i++) CHECK(d->x[i] == (float)pixels[i] / 255.0f);
    CHECK(d->x[1] == 1.0f && d->x[2] == 0.2f);
    CHECK_Y(d, 7, 0, 2);
    CHECK_SIZE(d->num_classes, 8);
    CHECK(d->class_names == NULL);
    fed_data_destroy(&d);

    /* Rank 2: a table of n x features. */
    const uint32_t tdim[2] = {3, 4};
    bytes tb = idx_bytes(0x08, 2, tdim, pixels, 12);
    CHECK_OK(fed_data_parse_idx(&d, tb.b, tb.n, lb.b, lb.n, "mem"));
    if (d) {
        CHECK_INT(d->shape.ndim, 1);
        CHECK_SIZE(d->shape.d[0], 4);
        CHECK(d->x[11] == 25.0f / 255.0f);
    }
    fed_data_destroy(&d);

    /* gzip, either file or both. */
    size_t gi = 0, gl = 0;
    unsigned char *zi = gzip_of(im.b, im.n, &gi), *zl = gzip_of(lb.b, lb.n, &gl);
    CHECK(zi && zl);
    if (zi && zl) {
        CHECK_OK(fed_data_parse_idx(&d, zi, gi, lb.b, lb.n, "mem"));
        CHECK(d && d->n == 3 && d->x[8] == 200.0f / 255.0f);
        fed_data_destroy(&d);
        CHECK_OK(fed_data_parse_idx(&d, zi, gi, zl, gl, "mem"));
        CHECK(d && d->n == 3 && d->y[0] == 7);
        fed_data_destroy(&d);
        /* Truncated and corrupt gzip. */
        CHECK_ERR(fed_data_parse_idx(&d, zi, gi - 9, lb.b, lb.n, "mem"), FED_EFORMAT);
        CHECK_CONTAINS(fed_errmsg(), "mem: truncated gzip data");
        unsigned char bad[256];
        memcpy(bad, zi, gi);
        bad[12] ^= 0x55;
        bad[13] ^= 0xaa;
        fed_err e = fed_data_parse_idx(&d, bad, gi, lb.b, lb.n, "mem");
        CHECK(e == FED_EFORMAT);
        CHECK_CONTAINS(fed_errmsg(), "mem: ");
        CHECK(d == NULL);
        /* Garbage after the member; a second member is fine. */
        memcpy(bad, zi, gi);
        memcpy(bad + gi, "xyz", 3);
        CHECK_ERR(fed_data_parse_idx(&d, bad, gi + 3, lb.b, lb.n, "mem"), FED_EFORMAT);
        CHECK_CONTAINS(fed_errmsg(), "mem: 3 bytes of garbage after the gzip data");
    }
    free(zi);
    free(zl);
}

TEST(idx_multi_member_gzip) {
    const uint32_t idim[3] = {3, 2, 2}, ldim[1] = {3};
    bytes im = idx_bytes(0x08, 3, idim, pixels, 12), lb = idx_bytes(0x08, 1, ldim, digits, 3);
    size_t g1 = 0, g2 = 0;
    unsigned char *a = gzip_of(im.b, 10, &g1), *b = gzip_of(im.b + 10, im.n - 10, &g2);
    unsigned char *both = malloc(g1 + g2 + 1);
    CHECK(a && b && both);
    if (a && b && both) {
        memcpy(both, a, g1);
        memcpy(both + g1, b, g2);
        fed_dataset *d = NULL;
        CHECK_OK(fed_data_parse_idx(&d, both, g1 + g2, lb.b, lb.n, "mem"));
        CHECK(d && d->x[11] == 25.0f / 255.0f);
        fed_data_destroy(&d);
    }
    free(a);
    free(b);
    free(both);
}

TEST(idx_gzip_grows) {
    /* 200 images of 50 x 50 compress about 500:1; the output buffer must grow from its
     * first guess many times over. */
    const size_t n = 200, hw = 50, body = n * hw * hw;
    unsigned char *raw = calloc(16 + body, 1);
    unsigned char lab[8 + 200] = {0, 0, 8, 1, 0, 0, 0, 200};
    CHECK(raw != NULL);
    if (!raw) return;
    const unsigned char head[16] = {0, 0, 8, 3, 0, 0, 0, 200, 0, 0, 0, 50, 0, 0, 0, 50};
    memcpy(raw, head, 16);
    raw[16 + body - 1] = 255;
    for (size_t i = 0; i < n; i++) lab[8 + i] = (unsigned char)(i % 10);
    size_t gn = 0;
    unsigned char *gz = gzip_of(raw, 16 + body, &gn);
    CHECK(gz && gn < body / 100);
    fed_dataset *d = NULL;
    if (gz) CHECK_OK(fed_data_parse_idx(&d, gz, gn, lab, sizeof lab, "mem"));
    if (d) {
        CHECK_SIZE(d->n, 200);
        CHECK_SIZE(d->num_classes, 10);
        CHECK(d->x[body - 1] == 1.0f && d->x[body - 2] == 0.0f);
    }
    fed_data_destroy(&d);
    free(gz);
    free(raw);
}

#define CHECK_IDX_FAILS(im, lb, code, sub)                                                         \
    do {                                                                                           \
        fed_dataset *d_ = NULL;                                                                    \
        CHECK_ERR(fed_data_parse_idx(&d_, (im).b, (im).n, (lb).b, (lb).n, "mem"), (code));         \
        CHECK(d_ == NULL);                                                                         \
        CHECK_CONTAINS(fed_errmsg(), (sub));                                                       \
    } while (0)

TEST(idx_malformed) {
    const uint32_t idim[3] = {3, 2, 2}, ldim[1] = {3};
    bytes im = idx_bytes(0x08, 3, idim, pixels, 12), lb = idx_bytes(0x08, 1, ldim, digits, 3);
    bytes t = im;
    t.n--;
    CHECK_IDX_FAILS(t, lb, FED_EFORMAT,
                    "mem: truncated: the IDX header promises 12 bytes of data, the file has 11");
    t = im;
    t.b[t.n++] = 9;
    CHECK_IDX_FAILS(t, lb, FED_EFORMAT, "mem: 1 trailing bytes after the IDX data");
    t = lb;
    t.n--;
    CHECK_IDX_FAILS(im, t, FED_EFORMAT, "mem (labels): truncated");
    const uint32_t two[1] = {2};
    t = idx_bytes(0x08, 1, two, digits, 2);
    CHECK_IDX_FAILS(im, t, FED_EFORMAT, "mem (labels): 2 labels for the 3 images of mem");
    t = im;
    t.b[2] = 0x0D;
    CHECK_IDX_FAILS(t, lb, FED_EUNSUPPORTED, "mem: IDX element type 0x0D (float) is not supported");
    t.b[2] = 0x42;
    CHECK_IDX_FAILS(t, lb, FED_EFORMAT, "mem: unknown IDX element type 0x42");
    t = im;
    t.b[0] = 0x1f;
    CHECK_IDX_FAILS(t, lb, FED_EFORMAT, "mem: not an IDX file");
    t = im;
    t.b[3] = 4;
    CHECK_IDX_FAILS(t, lb, FED_EFORMAT, "mem: IDX images have rank 3 (n, rows, cols) or 2");
    CHECK_IDX_FAILS(lb, lb, FED_EFORMAT, "rank 1");
    CHECK_IDX_FAILS(im, im, FED_EFORMAT,
                    "mem (labels): IDX labels have rank 1, this file has rank 3");
    t.n = 3;
    CHECK_IDX_FAILS(t, lb, FED_EFORMAT, "mem: 3 bytes; too short for an IDX file");
    t = im;
    t.n = 10;
    CHECK_IDX_FAILS(t, lb, FED_EFORMAT, "mem: truncated IDX header");
    /* Absurd dimensions are compared with the data before anything is allocated. */
    const uint32_t huge[3] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
    t = idx_bytes(0x08, 3, huge, pixels, 12);
    CHECK_IDX_FAILS(t, lb, FED_EFORMAT, sizeof(size_t) >= 8 ? "overflow" : "mem: ");
    const uint32_t big[3] = {60000, 65535, 65535};
    t = idx_bytes(0x08, 3, big, pixels, 12);
    CHECK_IDX_FAILS(t, lb, FED_EFORMAT, "truncated");
    const uint32_t zero[3] = {3, 0, 2};
    t = idx_bytes(0x08, 3, zero, pixels, 12);
    CHECK_IDX_FAILS(t, lb, FED_EFORMAT, "mem: IDX dimension 1 is 0");
    fed_dataset *d = NULL;
    CHECK_ERR(fed_data_parse_idx(&d, NULL, 0, lb.b, lb.n, "mem"), FED_EFORMAT);
}

/* ---- files --------------------------------------------------------------------------- */

/* fed_data_gunzip: the public face of the gzip reader (the model importer's tarballs). */
TEST(gunzip_public) {
    const char text[] = "package/dist/model.json";
    size_t gn = 0, n = 99;
    unsigned char *gz = gzip_of(text, sizeof text - 1, &gn), *out = NULL;
    CHECK(gz != NULL);
    if (!gz) return;
    CHECK_OK(fed_data_gunzip(gz, gn, "t.tgz", &out, &n));
    CHECK_SIZE(n, sizeof text - 1);
    CHECK(out && memcmp(out, text, n) == 0 && out[n] == '\0');
    fed_free(out);
    CHECK_ERR(fed_data_gunzip(text, sizeof text - 1, "t.tgz", &out, &n), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "t.tgz: not gzip data");
    CHECK(out == NULL && n == 0);
    CHECK_ERR(fed_data_gunzip(gz, gn - 5, "t.tgz", &out, &n), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "t.tgz: truncated gzip data");
    CHECK(out == NULL);
    CHECK_ERR(fed_data_gunzip(gz, 1, "t.tgz", &out, &n), FED_EFORMAT);
    free(gz);
}

static bool write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

TEST(load_files) {
    char dir[] = "/tmp/fedtest_data_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char csv[128], csvgz[128], img[128], lab[128], lone[128];
    snprintf(csv, sizeof csv, "%s/train.csv", dir);
    snprintf(csvgz, sizeof csvgz, "%s/train.csv.gz", dir);
    snprintf(img, sizeof img, "%s/t10k-images-idx3-ubyte.gz", dir);
    snprintf(lab, sizeof lab, "%s/t10k-labels-idx1-ubyte.gz", dir);
    snprintf(lone, sizeof lone, "%s/other-images-idx3-ubyte", dir);

    const char *text = "a,b,y\n1,2,cat\n3,4,dog\n5,x,cat\n";
    CHECK(write_file(csv, text, strlen(text)));
    fed_dataset *d = NULL;
    CHECK_ERR(fed_data_load(&d, csv, NULL), FED_EFORMAT);
    char want[192];
    snprintf(want, sizeof want, "%s:4:2: \"x\" is not a number", csv);
    CHECK_CONTAINS(fed_errmsg(), want);
    fed_csv_options o = {.missing = FED_MISSING_MEAN};
    CHECK_ERR(fed_data_load(&d, csv, &o), FED_EFORMAT); /* "x" is not missing */
    text = "a,b,y\n1,2,cat\n3,4,dog\n";
    size_t gn = 0;
    unsigned char *gz = gzip_of(text, strlen(text), &gn);
    CHECK(gz && write_file(csvgz, gz, gn));
    free(gz);
    CHECK_OK(fed_data_load(&d, csvgz, NULL));
    if (d) {
        CHECK_X(d, 1.0f, 2.0f, 3.0f, 4.0f);
        CHECK_Y(d, 0, 1);
        CHECK(d->class_names && !strcmp(d->class_names[1], "dog"));
    }
    fed_data_destroy(&d);

    const uint32_t idim[3] = {3, 2, 2}, ldim[1] = {3};
    bytes im = idx_bytes(0x08, 3, idim, pixels, 12), lb = idx_bytes(0x08, 1, ldim, digits, 3);
    unsigned char *zi = gzip_of(im.b, im.n, &gn);
    CHECK(zi && write_file(img, zi, gn));
    free(zi);
    CHECK_ERR(fed_data_load(&d, img, NULL), FED_EIO); /* no labels file yet */
    CHECK_CONTAINS(fed_errmsg(), lab);
    CHECK(write_file(lab, lb.b, lb.n)); /* plain bytes under a .gz name: by content */
    CHECK_OK(fed_data_load(&d, img, NULL));
    if (d) {
        CHECK_INT(d->shape.ndim, 3);
        CHECK(d->x[1] == 1.0f);
        CHECK_Y(d, 7, 0, 2);
    }
    fed_data_destroy(&d);
    CHECK_OK(fed_data_load_idx(&d, img, lab));
    CHECK(d && d->n == 3);
    fed_data_destroy(&d);
    CHECK(write_file(lone, im.b, im.n));
    CHECK_ERR(fed_data_load(&d, lone, NULL), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "other-labels-idx1-ubyte: cannot open");
    o = (fed_csv_options){.format = FED_FORMAT_IDX};
    CHECK_ERR(fed_data_load(&d, csv, &o), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "cannot name the IDX labels file");

    char missing[160];
    snprintf(missing, sizeof missing, "%s/nope.csv", dir);
    CHECK_ERR(fed_data_load(&d, missing, NULL), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), missing);
    CHECK_CONTAINS(fed_errmsg(), "cannot open");
    CHECK(d == NULL);
    CHECK_ERR(fed_data_load(&d, dir, NULL), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "is a directory");

    unlink(csv);
    unlink(csvgz);
    unlink(img);
    unlink(lab);
    unlink(lone);
    CHECK_INT(rmdir(dir), 0);
}

/* ---- allocation failure -------------------------------------------------------------- */

static bool same_set(const fed_dataset *a, const fed_dataset *b) {
    if (a->n != b->n || a->dim != b->dim || a->num_classes != b->num_classes) return false;
    if (memcmp(a->x, b->x, a->n * a->dim * sizeof(float)) != 0) return false;
    if (memcmp(a->y, b->y, a->n * sizeof(int32_t)) != 0) return false;
    if (!a->class_names != !b->class_names) return false;
    for (size_t i = 0; a->class_names && i < a->num_classes; i++)
        if (strcmp(a->class_names[i], b->class_names[i]) != 0) return false;
    return true;
}

TEST(parsers_under_allocation_failure) {
    static const char *texts[] = {
        "a,\"b\"\"\",y\n1,2,\"ca\"\"t\"\n3,NA,dog\n5,6,cat\n7,8,emu\n",
        "3,2,setosa,versicolor,virginica\n5.1,3.5,0\n4.9,3.0,1\n6.2,3.4,2\n",
        "1,2,0\n3,?,1\n",
    };
    const fed_missing_policy pol[] = {FED_MISSING_MEAN, FED_MISSING_ERROR, FED_MISSING_DROP};
    const char *known[] = {"emu", "dog", "cat", "ca\"t"};
    for (size_t t = 0; t < 4; t++) {
        fed_csv_options o = {.missing = pol[t % 3]};
        if (t == 3) {
            o.classes = known;
            o.num_classes = 4;
        }
        const char *text = texts[t % 3];
        fed_dataset *ref = NULL;
        CHECK_OK(fed_data_parse_csv(&ref, text, strlen(text), "t.csv", &o));
        if (!ref) continue;
        FOR_EACH_ALLOC_FAILURE(f) {
            fed_dataset *d = NULL;
            ALLOC_TRY(f, fed_data_parse_csv(&d, text, strlen(text), "t.csv", &o));
            if (f.failed)
                CHECK(d == NULL);
            else
                CHECK(same_set(d, ref));
            fed_data_destroy(&d);
        }
        fed_data_destroy(&ref);
    }
    /* IDX with gzip: zlib allocates through fed_malloc too. */
    const uint32_t idim[3] = {3, 2, 2}, ldim[1] = {3};
    bytes im = idx_bytes(0x08, 3, idim, pixels, 12), lb = idx_bytes(0x08, 1, ldim, digits, 3);
    size_t gn = 0;
    unsigned char *zi = gzip_of(im.b, im.n, &gn);
    CHECK(zi != NULL);
    if (zi) {
        FOR_EACH_ALLOC_FAILURE(f) {
            fed_dataset *d = NULL;
            ALLOC_TRY(f, fed_data_parse_idx(&d, zi, gn, lb.b, lb.n, "mem"));
            if (f.failed)
                CHECK(d == NULL);
            else
                CHECK(d && d->x[1] == 1.0f);
            fed_data_destroy(&d);
        }
    }
    free(zi);
}

/* fed_data_split_names: a --classes list into names; every malformed list refused. */
TEST(split_names) {
    char **v = NULL;
    size_t n = 0;
    CHECK_OK(fed_data_split_names("blue,green,red", "--classes", &v, &n));
    CHECK_SIZE(n, 3);
    if (n == 3) {
        CHECK_STR(v[0], "blue");
        CHECK_STR(v[1], "green");
        CHECK_STR(v[2], "red");
    }
    fed_free(v);
    CHECK_OK(fed_data_split_names("only", "--classes", &v, &n));
    CHECK_SIZE(n, 1);
    fed_free(v);
    const char *bad[] = {"", ",a", "a,", "a,,b", ","};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_ERR(fed_data_split_names(bad[i], "classes", &v, &n), FED_EINVAL);
        char want[64];
        snprintf(want, sizeof want, "classes: empty name in \"%s\"", bad[i]);
        CHECK_STR(fed_errmsg(), want);
        CHECK(v == NULL && n == 0);
    }
}

int main(void) {
    RUN(split_names);
    RUN(csv_numbers_without_header);
    RUN(csv_header_detection);
    RUN(csv_quotes_crlf_blank_lines);
    RUN(csv_delimiters);
    RUN(csv_label_columns);
    RUN(csv_labels_and_classes);
    RUN(csv_too_many_classes);
    RUN(csv_malformed);
    RUN(csv_missing_drop_and_mean);
    RUN(sklearn_flavour);
    RUN(idx_in_memory);
    RUN(idx_multi_member_gzip);
    RUN(idx_gzip_grows);
    RUN(idx_malformed);
    RUN(gunzip_public);
    RUN(load_files);
    RUN(parsers_under_allocation_failure);
    return test_report();
}
