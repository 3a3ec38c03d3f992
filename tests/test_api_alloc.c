/* libfedtune's constructors under fail-the-Nth-allocation (tests/test.h): a config, its
 * keys from calls and from a file, data from arrays and from a callback, and a site made
 * from them. Every failure is FEDTUNE_ENOMEM (never another code, never ignored) and leaves
 * no object behind; ASan catches the leaks of the failure paths. The API's objects are
 * linked in directly (api/CMakeLists.txt: fedapi), since the shared library hides core's
 * allocation hook. */
#include "tests/test.h"
#include "tests/test_certdir.h"

#include <fedtune/fedtune.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static float X[60];
static int32_t Y[20];

static int batches(void *user, float *x, int32_t *y, size_t max_rows, size_t *rows) {
    size_t *next = user;
    *rows = 0;
    for (; *next < 20 && *rows < max_rows && *rows < 8; (*next)++, (*rows)++) {
        for (size_t j = 0; j < 3; j++) x[*rows * 3 + j] = X[*next * 3 + j];
        y[*rows] = Y[*next];
    }
    return 0;
}

/* A config with site-1's keys from a file and the data from arrays (source 0) or a
 * callback (1); NULL when a step failed (its status in *rc). */
static fedtune_config *make_config(const char *ini, int source, size_t *next, int *rc) {
    fedtune_config *c = NULL;
    if ((*rc = fedtune_config_new(&c))) return NULL;
    if (!(*rc = fedtune_config_load(c, ini)))
        *rc = source ? fedtune_config_set_data_source(c, 3, 2, batches, next)
                     : fedtune_config_set_data(c, X, Y, 20, 3, 2);
    if (!*rc) *rc = fedtune_config_set(c, "test-split", "0.25");
    if (*rc) fedtune_config_free(&c);
    return c;
}

TEST(config_under_failures) {
    char ini[300];
    snprintf(ini, sizeof ini, "%s/site.ini", certdir);
    FOR_EACH_ALLOC_FAILURE(f) {
        int rc = 0;
        fedtune_config *c = NULL;
        ALLOC_TRY_ANY(f, c = make_config(ini, 0, NULL, &rc));
        if (f.failed) {
            CHECK_INT(rc, FEDTUNE_ENOMEM);
            CHECK(c == NULL);
        } else {
            CHECK_INT(rc, FEDTUNE_OK);
        }
        fedtune_config_free(&c);
    }
}

TEST(site_under_failures) {
    char ini[300];
    snprintf(ini, sizeof ini, "%s/site.ini", certdir);
    for (int source = 0; source < 2; source++) {
        size_t next = 0;
        int rc = 0;
        fedtune_config *c = make_config(ini, source, &next, &rc);
        CHECK_INT(rc, FEDTUNE_OK);
        if (!c) return;
        FOR_EACH_ALLOC_FAILURE(f) {
            fedtune_site *s = NULL;
            next = 0;
            fed_err e = ALLOC_TRY(f, (fed_err)fedtune_site_new(&s, c));
            if (f.failed) {
                CHECK(s == NULL);
                CHECK(fedtune_config_errmsg(c)[0] != '\0');
            } else if (e == FED_OK) {
                fedtune_metrics m = {.size = sizeof m};
                CHECK_INT(fedtune_site_metrics(s, &m), FEDTUNE_OK);
                CHECK_INT(m.train_examples + m.eval_examples, 20);
            }
            fedtune_site_free(&s);
        }
        fedtune_config_free(&c);
    }
}

int main(void) {
    for (int i = 0; i < 20; i++) {
        for (int j = 0; j < 3; j++) X[i * 3 + j] = (float)(i % 2) + (float)j / 10.0f;
        Y[i] = i % 2;
    }
    snprintf(certdir, sizeof certdir, "/tmp/fedtune-api-alloc-XXXXXX");
    if (!mkdtemp(certdir)) return 1;
    const char *q = ">/dev/null 2>&1";
    int rc = sh("%s init-ca %s/ca %s", FED_CERTS_SCRIPT, certdir, q);
    rc |= sh("%s site %s/ca site-1 %s", FED_CERTS_SCRIPT, certdir, q);
    CHECK_INT(rc, 0);
    FILE *f = fopen(cpath("site.ini"), "w");
    CHECK(f != NULL);
    if (!f) return test_report();
    fprintf(f,
            "[client]\ncoordinator = tcp://127.0.0.1:1\nserver-name = localhost\nca = %s\n"
            "cert = %s\nkey = %s\nbase-cache = %s\nseed = 7\n",
            cpath("ca/ca.crt"), cpath("ca/sites/site-1/site-1.crt"),
            cpath("ca/sites/site-1/site-1.key"), cpath("bases"));
    fclose(f);
    RUN(config_under_failures);
    RUN(site_under_failures);
    sh("rm -rf %s", certdir);
    return test_report();
}
