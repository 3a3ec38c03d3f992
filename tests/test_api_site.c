/* libfedtune's public API (include/fedtune/fedtune.h) through the shared library only:
 * the version, status texts, every kind of bad key, value and config file (exact
 * messages naming the key or file:line), bad data from arrays and from a callback
 * (naming the row), the checks fedtune_site_new makes before it reads data (endpoint, TLS
 * files named by their key), and good sites from arrays, a callback and a data file, with
 * their metrics. Certificates come from certs/fedtune-certs in a temporary folder. The
 * whole federation (rounds with a real coordinator) is tests/embed_site.sh. */
#include "tests/test.h"
#include "tests/test_certdir.h"

#include <fedtune/fedtune.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char ini_path[256];

/* Writes text to certdir/site.ini; returns its path. */
static const char *write_ini(const char *text) {
    snprintf(ini_path, sizeof ini_path, "%s/site.ini", certdir);
    FILE *f = fopen(ini_path, "w");
    if (!f) return ini_path;
    fputs(text, f);
    fclose(f);
    return ini_path;
}

/* A config with the coordinator, its name and site-1's TLS files. */
static fedtune_config *good_config(void) {
    fedtune_config *c = NULL;
    if (fedtune_config_new(&c)) return NULL;
    int rc = fedtune_config_set(c, "coordinator", "tcp://127.0.0.1:1");
    rc |= fedtune_config_set(c, "server-name", "localhost");
    rc |= fedtune_config_set(c, "ca", cpath("ca/ca.crt"));
    rc |= fedtune_config_set(c, "cert", cpath("ca/sites/site-1/site-1.crt"));
    rc |= fedtune_config_set(c, "key", cpath("ca/sites/site-1/site-1.key"));
    if (rc) fedtune_config_free(&c);
    return c;
}

/* 20 examples of 3 features, 2 classes: x[i][j] = i + j / 10, y = i % 2. */
static float X[60];
static int32_t Y[20];
static void make_arrays(void) {
    for (int i = 0; i < 20; i++) {
        for (int j = 0; j < 3; j++) X[i * 3 + j] = (float)i + (float)j / 10.0f;
        Y[i] = i % 2;
    }
}

TEST(version_and_texts) {
    CHECK_STR(fedtune_version(), FEDTUNE_VERSION_STRING);
    CHECK_INT(fedtune_version_number(), FEDTUNE_VERSION_NUMBER);
    CHECK_INT(fedtune_version_number(),
              FEDTUNE_VERSION_MAJOR * 10000 + FEDTUNE_VERSION_MINOR * 100 + FEDTUNE_VERSION_PATCH);
    CHECK_STR(fedtune_strerror(FEDTUNE_OK), "success");
    CHECK_STR(fedtune_strerror(FEDTUNE_EINVAL), "invalid argument");
    CHECK_STR(fedtune_strerror(FEDTUNE_ETLS), "TLS error");
    CHECK_STR(fedtune_strerror(FEDTUNE_EINTERNAL), "internal error");
    CHECK_STR(fedtune_strerror(-1), "unknown error");
    CHECK_STR(fedtune_strerror(20), "unknown error");
    CHECK_STR(fedtune_event_name(FEDTUNE_EVENT_JOINED), "joined");
    CHECK_STR(fedtune_event_name(FEDTUNE_EVENT_ROUND_DONE), "round-done");
    CHECK_STR(fedtune_event_name(FEDTUNE_EVENT_ERROR), "error");
    CHECK_STR(fedtune_event_name(0), "unknown");
    CHECK_STR(fedtune_event_name(9), "unknown");
}

/* key, value, status, message. */
static void bad_set(const char *key, const char *value, int want, const char *msg) {
    fedtune_config *c = NULL;
    CHECK_INT(fedtune_config_new(&c), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set(c, key, value), want);
    CHECK_STR(fedtune_config_errmsg(c), msg);
    fedtune_config_free(&c);
    CHECK(c == NULL);
}

TEST(bad_keys_and_values) {
    bad_set("colour", "red", FEDTUNE_EINVAL, "colour: unknown key");
    bad_set("config", "x.ini", FEDTUNE_EINVAL, "config: unknown key");
    bad_set("seed", "x", FEDTUNE_EINVAL, "seed: \"x\" is not an integer");
    bad_set("seed", "-1", FEDTUNE_EINVAL, "seed: -1 is outside [0, 9007199254740991]");
    bad_set("threads", "", FEDTUNE_EINVAL, "threads: \"\" is not an integer");
    bad_set("threads", "0", FEDTUNE_EINVAL, "threads: 0 is outside [1, 256]");
    bad_set("test-split", "0.95", FEDTUNE_EINVAL, "test-split: 0.95 is outside [0, 0.9]");
    bad_set("test-split", "nan", FEDTUNE_EINVAL, "test-split: \"nan\" is not a number");
    bad_set("reconnect-jitter", "1e", FEDTUNE_EINVAL, "reconnect-jitter: \"1e\" is not a number");
    bad_set("format", "xml", FEDTUNE_EINVAL, "format: \"xml\" is not one of auto|csv|sklearn|idx");
    bad_set("standardize", "", FEDTUNE_EINVAL, "standardize: \"\" is not one of auto|off");
    bad_set("coordinator", "", FEDTUNE_EINVAL, "coordinator: empty value");
    bad_set("drop-empty", "maybe", FEDTUNE_EINVAL, "drop-empty: \"maybe\" is not true or false");
    bad_set("tokenizer", "model.safetensors", FEDTUNE_EUNSUPPORTED,
            "tokenizer: text data are not supported by libfedtune " FEDTUNE_VERSION_STRING
            " (use `fedtune client`)");
    bad_set("text-length", "64", FEDTUNE_EUNSUPPORTED,
            "text-length: text data are not supported by libfedtune " FEDTUNE_VERSION_STRING
            " (use `fedtune client`)");
    bad_set("drop-empty", "true", FEDTUNE_EUNSUPPORTED,
            "drop-empty: text data are not supported by libfedtune " FEDTUNE_VERSION_STRING
            " (use `fedtune client`)");

    fedtune_config *c = NULL;
    CHECK_INT(fedtune_config_new(&c), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set(c, "text-length", "0"), FEDTUNE_OK); /* the defaults pass */
    CHECK_INT(fedtune_config_set(c, "drop-empty", "false"), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set(c, "seed", "9007199254740991"), FEDTUNE_OK);
    CHECK_STR(fedtune_config_errmsg(c), "");
    CHECK_INT(fedtune_config_set(c, NULL, "x"), FEDTUNE_EINVAL);
    CHECK_STR(fedtune_config_errmsg(c), "fedtune_config_set: NULL key");
    CHECK_INT(fedtune_config_set(c, "seed", NULL), FEDTUNE_EINVAL);
    CHECK_STR(fedtune_config_errmsg(c), "fedtune_config_set: NULL value");
    CHECK_INT(fedtune_config_set(NULL, "seed", "1"), FEDTUNE_EINVAL);
    CHECK_INT(fedtune_config_new(NULL), FEDTUNE_EINVAL);
    fedtune_config_free(&c);
    fedtune_config_free(&c); /* NULL-safe */
    fedtune_config_free(NULL);
}

/* The file's text, the status and message of loading it. */
static void bad_ini(const char *text, int want, const char *msg) {
    fedtune_config *c = NULL;
    CHECK_INT(fedtune_config_new(&c), FEDTUNE_OK);
    CHECK_INT(fedtune_config_load(c, write_ini(text)), want);
    char full[600];
    snprintf(full, sizeof full, "%s:%s", ini_path, msg);
    CHECK_STR(fedtune_config_errmsg(c), full);
    fedtune_config_free(&c);
}

TEST(config_files) {
    bad_ini("seed = 3\n\ncolour = red\n", FEDTUNE_EINVAL, "3: colour: unknown key");
    bad_ini("[client]\nseed = 3\n[coordinator]\nrounds = 3\n", FEDTUNE_EINVAL,
            "3: section [coordinator]: a site reads only [client]");
    bad_ini("[client\nseed = 3\n", FEDTUNE_EINVAL, "1: not a \"[section]\" line");
    bad_ini("[client] x\n", FEDTUNE_EINVAL, "1: not a \"[section]\" line");
    bad_ini("seed = 3\n = 4\n", FEDTUNE_EINVAL, "2: not a \"key = value\" line");
    bad_ini("seed = 3\nseed 4\n", FEDTUNE_EINVAL, "2: not a \"key = value\" line");
    bad_ini("seed = \n", FEDTUNE_EINVAL, "1: seed: \"\" is not an integer");
    bad_ini("ca =\n", FEDTUNE_EINVAL, "1: ca: empty value");
    bad_ini("# a comment\nseed\n", FEDTUNE_EINVAL, "2: not a \"key = value\" line");
    bad_ini("seed = 3\nseed = 4\n", FEDTUNE_EINVAL, "2: seed: key given twice");
    bad_ini("[client]\nthreads = 300\n", FEDTUNE_EINVAL, "2: threads: 300 is outside [1, 256]");
    bad_ini("format = xml\n", FEDTUNE_EINVAL,
            "1: format: \"xml\" is not one of auto|csv|sklearn|idx");

    fedtune_config *c = NULL;
    CHECK_INT(fedtune_config_new(&c), FEDTUNE_OK);
    CHECK_INT(fedtune_config_load(c, "/nonexistent/site.ini"), FEDTUNE_EIO);
    CHECK_STR(fedtune_config_errmsg(c), "/nonexistent/site.ini: No such file or directory");
    CHECK_INT(fedtune_config_load(c, NULL), FEDTUNE_EINVAL);
    CHECK_INT(fedtune_config_load(c, certdir), FEDTUNE_EIO); /* a folder */
    CHECK_CONTAINS(fedtune_config_errmsg(c), "Is a directory");
    /* A NUL byte, a BOM, CRLF lines, a 300-byte comment, an inline " ;" comment. */
    FILE *g = fopen(write_ini(""), "wb");
    CHECK(g != NULL);
    if (g) {
        fwrite("seed = 3\nthreads\0 = 2\n", 1, 23, g);
        fclose(g);
    }
    CHECK_INT(fedtune_config_load(c, ini_path), FEDTUNE_EFORMAT);
    char nul[400];
    snprintf(nul, sizeof nul, "%s:2: a NUL byte: not a text file", ini_path);
    CHECK_STR(fedtune_config_errmsg(c), nul);
    char big[600];
    memset(big, 'x', sizeof big);
    memcpy(big, "\xef\xbb\xbf# ", 5);
    snprintf(big + 305, sizeof big - 305, "\r\n[client]\r\nseed = 4 ; the split's\r\n");
    CHECK_INT(fedtune_config_load(c, write_ini(big)), FEDTUNE_OK);
    /* classes may be given on several lines: they add up, as in client.ini */
    CHECK_INT(fedtune_config_load(c, write_ini("[client]\nclasses = a,b\nclasses = c\n")),
              FEDTUNE_OK);
    fedtune_config_free(&c);

    /* The kit's sample config loads as it is. */
    char sample[512];
    snprintf(sample, sizeof sample, "%s/../../examples/client.ini", FED_TEST_DATA);
    CHECK_INT(fedtune_config_new(&c), FEDTUNE_OK);
    CHECK_INT(fedtune_config_load(c, sample), FEDTUNE_OK);
    CHECK_STR(fedtune_config_errmsg(c), "");
    fedtune_config_free(&c);

    /* Every key of `fedtune client` (commented out or not in the sample) is one the library
     * knows: cli/cmd_client.c's table and api/config.c's stay the same. */
    FILE *f = fopen(sample, "r");
    CHECK(f != NULL);
    char line[2048];
    int keys = 0;
    while (f && fgets(line, sizeof line, f)) {
        char key[64];
        const char *p = line[0] == '#' ? line + 2 : line;
        if (sscanf(p, "%63[a-z-]", key) != 1 || strncmp(p + strlen(key), " =", 2) != 0) continue;
        CHECK_INT(fedtune_config_new(&c), FEDTUNE_OK);
        int rc = fedtune_config_set(c, key, "?");
        if (rc && strstr(fedtune_config_errmsg(c), "unknown key")) {
            CHECK_STR(fedtune_config_errmsg(c), "(a key the library knows)");
        }
        keys++;
        fedtune_config_free(&c);
    }
    if (f) fclose(f);
    CHECK_INT(keys, 28); /* fedtune client's 27 and every command's log-format */
    /* log-format is the CLI's: checked, accepted, nothing kept. */
    CHECK_INT(fedtune_config_new(&c), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set(c, "log-format", "json"), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set(c, "log-format", "xml"), FEDTUNE_EINVAL);
    CHECK_STR(fedtune_config_errmsg(c), "log-format: \"xml\" is not one of text|json");
    fedtune_config_free(&c);
}

/* A config from good_config() and more; the status and message of fedtune_site_new. */
static void bad_site(fedtune_config *c, int want, const char *msg) {
    fedtune_site *s = (fedtune_site *)&s; /* must become NULL */
    CHECK(c != NULL);
    if (!c) return;
    CHECK_INT(fedtune_site_new(&s, c), want);
    CHECK(s == NULL);
    CHECK_STR(fedtune_config_errmsg(c), msg);
    fedtune_config_free(&c);
}

TEST(site_checks) {
    make_arrays();
    fedtune_config *c = NULL;
    CHECK_INT(fedtune_config_new(&c), FEDTUNE_OK);
    bad_site(c, FEDTUNE_EINVAL, "coordinator: required (fedtune_config_set or the config file)");
    c = good_config();
    bad_site(c, FEDTUNE_EINVAL,
             "data: required: a data file, or fedtune_config_set_data or "
             "fedtune_config_set_data_source");
    c = good_config();
    CHECK_INT(fedtune_config_set(c, "data", "site.csv"), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set_data(c, X, Y, 20, 3, 2), FEDTUNE_OK);
    bad_site(c, FEDTUNE_EINVAL, "data: both a data file (site.csv) and data from memory");
    c = good_config();
    CHECK_INT(fedtune_config_set(c, "classes", "a,b"), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set_data(c, X, Y, 20, 3, 2), FEDTUNE_OK);
    bad_site(c, FEDTUNE_EINVAL,
             "classes: names are for a data file; data from memory have integer class ids");
    c = good_config();
    CHECK_INT(fedtune_config_set(c, "reconnect-max", "0.5"), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set_data(c, X, Y, 20, 3, 2), FEDTUNE_OK);
    bad_site(c, FEDTUNE_EINVAL, "reconnect-max 0.5 is below reconnect-initial 1");
    /* The endpoint and the TLS files, named by their key, before any data are read. */
    c = good_config();
    CHECK_INT(fedtune_config_set(c, "coordinator", "localhost:7443"), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set(c, "data", "/nonexistent.csv"), FEDTUNE_OK);
    bad_site(c, FEDTUNE_EINVAL,
             "coordinator localhost:7443: no transport: write tcp://localhost:7443");
    c = good_config();
    CHECK_INT(fedtune_config_set(c, "cert", cpath("ca/coordinator/localhost.crt")), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set(c, "data", "/nonexistent.csv"), FEDTUNE_OK);
    char want[600];
    snprintf(want, sizeof want,
             "cert %s: the coordinator's certificate (extended key usage serverAuth only), not a "
             "site's (clientAuth; fedtune-certs site makes one)",
             cpath("ca/coordinator/localhost.crt"));
    bad_site(c, FEDTUNE_EINVAL, want);
    c = good_config();
    CHECK_INT(fedtune_config_set(c, "ca", "/x/ca.crt"), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set(c, "data", "/nonexistent.csv"), FEDTUNE_OK);
    bad_site(c, FEDTUNE_EINVAL, "ca /x/ca.crt: No such file or directory");
    /* Then the data file. */
    c = good_config();
    CHECK_INT(fedtune_config_set(c, "data", "/nonexistent.csv"), FEDTUNE_OK);
    CHECK_INT(fedtune_site_new(&(fedtune_site *){NULL}, c), FEDTUNE_EIO);
    CHECK_CONTAINS(fedtune_config_errmsg(c), "/nonexistent.csv");
    fedtune_config_free(&c);
    CHECK_INT(fedtune_site_new(NULL, NULL), FEDTUNE_EINVAL);
}

/* Callback states: 0 good (2 batches of 10), 1 fails, 2 writes too many rows, 3 none. */
static int batches(void *user, float *x, int32_t *y, size_t max_rows, size_t *rows) {
    int *st = user;
    *rows = 0;
    if (st[0] == 1) return 5;
    if (st[0] == 2) {
        *rows = max_rows + 1;
        return 0;
    }
    if (st[0] == 3 || st[1] >= 20) return 0;
    for (size_t i = 0; i < 10 && i < max_rows; i++, st[1]++) {
        for (int j = 0; j < 3; j++) x[i * 3 + (size_t)j] = X[st[1] * 3 + j];
        y[i] = Y[st[1]];
        (*rows)++;
    }
    return 0;
}

TEST(bad_data) {
    make_arrays();
    fedtune_config *c = good_config();
    CHECK(c != NULL);
    if (!c) return;
    CHECK_INT(fedtune_config_set_data(c, X, Y, 0, 3, 2), FEDTUNE_EINVAL);
    CHECK_STR(fedtune_config_errmsg(c), "fedtune_config_set_data: n (examples) is 0");
    CHECK_INT(fedtune_config_set_data(c, X, Y, 20, 0, 2), FEDTUNE_EINVAL);
    CHECK_STR(fedtune_config_errmsg(c), "fedtune_config_set_data: d (features) is 0");
    CHECK_INT(fedtune_config_set_data(c, X, Y, 20, 3, 0), FEDTUNE_EINVAL);
    CHECK_STR(fedtune_config_errmsg(c), "fedtune_config_set_data: classes is 0");
    CHECK_INT(fedtune_config_set_data(c, NULL, Y, 20, 3, 2), FEDTUNE_EINVAL);
    CHECK_STR(fedtune_config_errmsg(c), "fedtune_config_set_data: NULL features");
    CHECK_INT(fedtune_config_set_data(c, X, NULL, 20, 3, 2), FEDTUNE_EINVAL);
    CHECK_STR(fedtune_config_errmsg(c), "fedtune_config_set_data: NULL labels");
    CHECK_INT(fedtune_config_set_data(c, X, Y, SIZE_MAX / 2, 3, 2), FEDTUNE_ERANGE);
    CHECK_CONTAINS(fedtune_config_errmsg(c), "too large");
    CHECK_INT(fedtune_config_set_data_source(c, 3, 2, NULL, NULL), FEDTUNE_EINVAL);
    CHECK_STR(fedtune_config_errmsg(c), "fedtune_config_set_data_source: NULL callback");
    fedtune_config_free(&c);

    /* Labels out of range and non-finite features, named by row (from 0). */
    int32_t y[20];
    float x[60];
    memcpy(y, Y, sizeof y);
    memcpy(x, X, sizeof x);
    y[7] = 2;
    c = good_config();
    CHECK_INT(fedtune_config_set_data(c, x, y, 20, 3, 2), FEDTUNE_OK);
    bad_site(c, FEDTUNE_ERANGE, "data row 7: label 2 is outside 0..1");
    y[7] = -1;
    c = good_config();
    CHECK_INT(fedtune_config_set_data(c, x, y, 20, 3, 2), FEDTUNE_OK);
    bad_site(c, FEDTUNE_ERANGE, "data row 7: label -1 is outside 0..1");
    y[7] = 1;
    x[3 * 4 + 2] = NAN;
    c = good_config();
    CHECK_INT(fedtune_config_set_data(c, x, y, 20, 3, 2), FEDTUNE_OK);
    bad_site(c, FEDTUNE_ENONFINITE, "data row 4, feature 2: not a finite number");
    x[3 * 4 + 2] = INFINITY;
    c = good_config();
    CHECK_INT(fedtune_config_set_data(c, x, y, 20, 3, 2), FEDTUNE_OK);
    bad_site(c, FEDTUNE_ENONFINITE, "data row 4, feature 2: not a finite number");

    /* A callback that fails, overflows its buffer, or gives nothing. */
    int st[2] = {1, 0};
    c = good_config();
    CHECK_INT(fedtune_config_set_data_source(c, 3, 2, batches, st), FEDTUNE_OK);
    bad_site(c, FEDTUNE_EIO, "data source: the callback returned 5 after 0 examples");
    st[0] = 2;
    c = good_config();
    CHECK_INT(fedtune_config_set_data_source(c, 3, 2, batches, st), FEDTUNE_OK);
    bad_site(c, FEDTUNE_EINVAL, "data source: the callback wrote 257 rows, at most 256");
    st[0] = 3;
    c = good_config();
    CHECK_INT(fedtune_config_set_data_source(c, 3, 2, batches, st), FEDTUNE_OK);
    bad_site(c, FEDTUNE_EINVAL, "data source: the callback gave no example");
}

/* A made site's metrics before any connection. */
static void check_new_site(fedtune_site *s, uint64_t train, uint64_t eval) {
    fedtune_metrics m;
    memset(&m, 0xff, sizeof m);
    m.size = sizeof m - 1;
    CHECK_INT(fedtune_site_metrics(s, &m), FEDTUNE_EINVAL);
    m.size = sizeof m;
    CHECK_INT(fedtune_site_metrics(s, &m), FEDTUNE_OK);
    CHECK_SIZE(m.size, sizeof m);
    CHECK_INT(m.train_examples, train);
    CHECK_INT(m.eval_examples, eval);
    CHECK_INT(m.features, 3);
    CHECK_INT(m.classes, 2);
    CHECK_INT(m.connects + m.rounds_done + m.rounds_failed + m.rounds_dropped, 0);
    CHECK_INT(m.last_round + m.model_version + m.bytes_received + m.bytes_sent + m.examples, 0);
    CHECK(m.train_loss == 0.0 && m.global_accuracy == 0.0);
    CHECK_INT(m.connected, 0);
    CHECK_INT(m.finished, 0);
    CHECK_INT(fedtune_site_metrics(s, NULL), FEDTUNE_EINVAL);
    /* A program built against a newer header, whose struct has more fields: those bytes
     * are left alone, the known ones filled. */
    struct {
        fedtune_metrics m;
        uint64_t later;
    } newer;
    memset(&newer, 0xab, sizeof newer);
    newer.m.size = sizeof newer;
    CHECK_INT(fedtune_site_metrics(s, &newer.m), FEDTUNE_OK);
    CHECK_SIZE(newer.m.size, sizeof newer);
    CHECK_INT(newer.m.train_examples, train);
    CHECK(newer.later == UINT64_C(0xabababababababab));
    CHECK_STR(fedtune_site_errmsg(s), "");
}

TEST(good_sites) {
    make_arrays();
    fedtune_site *s = NULL;
    fedtune_config *c = good_config();
    CHECK(c != NULL);
    if (!c) return;
    CHECK_INT(fedtune_config_set(c, "test-split", "0.25"), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set_data(c, X, Y, 20, 3, 2), FEDTUNE_OK);
    CHECK_INT(fedtune_site_new(&s, c), FEDTUNE_OK);
    CHECK_STR(fedtune_config_errmsg(c), "");
    fedtune_config_free(&c); /* the site keeps its own copy */
    CHECK(s != NULL);
    if (s) check_new_site(s, 14, 6); /* 3 of each class's 10 held out */
    fedtune_site_free(&s);
    CHECK(s == NULL);
    fedtune_site_free(&s);

    /* From a callback: the same examples in batches of 10. */
    int st[2] = {0, 0};
    c = good_config();
    CHECK_INT(fedtune_config_set(c, "test-split", "0"), FEDTUNE_OK);
    CHECK_INT(fedtune_config_set_data_source(c, 3, 2, batches, st), FEDTUNE_OK);
    CHECK_INT(fedtune_site_new(&s, c), FEDTUNE_OK);
    CHECK_INT(st[1], 20);
    if (s) check_new_site(s, 20, 0);
    fedtune_site_free(&s);
    fedtune_config_free(&c);

    /* From a data file named in a config file (relative to the current folder). */
    char csv[300], ini[1500];
    snprintf(csv, sizeof csv, "%s/site.csv", certdir);
    FILE *f = fopen(csv, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("f1,f2,f3,label\n", f);
    for (int i = 0; i < 20; i++)
        fprintf(f, "%g,%g,%g,%d\n", (double)X[i * 3], (double)X[i * 3 + 1], (double)X[i * 3 + 2],
                (int)Y[i]);
    fclose(f);
    snprintf(ini, sizeof ini,
             "[client]\ncoordinator = tcp://127.0.0.1:1\nserver-name = localhost\nca = %s\n"
             "cert = %s\nkey = %s\ndata = %s\ntest-split = 0.5\nstandardize = off\n",
             cpath("ca/ca.crt"), cpath("ca/sites/site-1/site-1.crt"),
             cpath("ca/sites/site-1/site-1.key"), csv);
    CHECK_INT(fedtune_config_new(&c), FEDTUNE_OK);
    CHECK_INT(fedtune_config_load(c, write_ini(ini)), FEDTUNE_OK);
    CHECK_INT(fedtune_site_new(&s, c), FEDTUNE_OK);
    if (s) check_new_site(s, 10, 10);
    /* stop before run: run returns at once, having done nothing */
    fedtune_site_stop(s);
    CHECK_INT(fedtune_site_run(s), FEDTUNE_OK);
    fedtune_metrics m = {.size = sizeof m};
    CHECK_INT(fedtune_site_metrics(s, &m), FEDTUNE_OK);
    CHECK_INT(m.connects, 0);
    fedtune_site_free(&s);
    fedtune_config_free(&c);
    CHECK_INT(fedtune_site_run(NULL), FEDTUNE_EINVAL);
    CHECK_INT(fedtune_site_step(NULL, 0, NULL), FEDTUNE_EINVAL);
    CHECK_STR(fedtune_site_errmsg(NULL), "");
    CHECK_STR(fedtune_config_errmsg(NULL), "");
}

/* The log handler receives the site's lines at the level asked for. */
static int log_lines;
static char log_all[4096];
static void on_log(void *user, int level, const char *line) {
    (void)level;
    (*(int *)user)++;
    size_t n = strlen(log_all);
    snprintf(log_all + n, sizeof log_all - n, "%s\n", line);
}

TEST(logging) {
    make_arrays();
    fedtune_set_log(on_log, &log_lines, FEDTUNE_LOG_INFO);
    fedtune_config *c = good_config();
    fedtune_site *s = NULL;
    CHECK(c != NULL);
    if (!c) return;
    CHECK_INT(fedtune_config_set_data(c, X, Y, 20, 3, 2), FEDTUNE_OK);
    CHECK_INT(fedtune_site_new(&s, c), FEDTUNE_OK);
    CHECK(log_lines >= 1);
    CHECK_CONTAINS(log_all, "site: data in memory: 16 training + 4 test examples, 3 features, 2 "
                            "classes");
    int before = log_lines;
    fedtune_set_log(NULL, NULL, FEDTUNE_LOG_DEBUG);
    fedtune_site_free(&s);
    CHECK_INT(fedtune_site_new(&s, c), FEDTUNE_OK);
    CHECK_INT(log_lines, before);
    fedtune_site_free(&s);
    fedtune_config_free(&c);
}

int main(void) {
    snprintf(certdir, sizeof certdir, "/tmp/fedtune-api-test-XXXXXX");
    if (!mkdtemp(certdir)) return 1;
    const char *q = ">/dev/null 2>&1";
    int rc = sh("%s init-ca %s/ca %s", FED_CERTS_SCRIPT, certdir, q);
    rc |= sh("%s coordinator %s/ca localhost --ip 127.0.0.1 %s", FED_CERTS_SCRIPT, certdir, q);
    rc |= sh("%s site %s/ca site-1 %s", FED_CERTS_SCRIPT, certdir, q);
    CHECK_INT(rc, 0);
    RUN(version_and_texts);
    RUN(bad_keys_and_values);
    RUN(config_files);
    RUN(site_checks);
    RUN(bad_data);
    RUN(good_sites);
    RUN(logging);
    sh("rm -rf %s", certdir);
    return test_report();
}
