/* embed-site: a program that is a site of a fedtune federation through libfedtune
 * (include/fedtune/fedtune.h). It reads the site's settings from an INI file (the keys of
 * `fedtune client`, e.g. the kit's client.ini), overrides any of them with KEY=VALUE
 * arguments, reads its labeled examples from a CSV file itself (numbers, the class id in
 * the last column, an optional header line) and hands them to the library through a
 * batch callback; then it takes part in rounds until the coordinator ends the federation
 * (or Ctrl-C), printing a line per event and the metrics of every round.
 *
 *   usage: embed-site SITE.ini DATA.csv [KEY=VALUE...]
 *
 * Exit status: 0 when the federation ended or Ctrl-C stopped the site, 1 on an error
 * (the message names the key, file or line at fault), 2 for bad usage. */
#include <fedtune/fedtune.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FEATURES 4096

/* The CSV reader the batch callback draws from. */
typedef struct csv_source {
    FILE *f;
    const char *path;
    size_t line;     /* lines read */
    size_t features; /* per row (the columns before the label) */
    int failed;      /* a line was bad (the message was printed) */
} csv_source;

/* Splits one CSV line into numbers; returns how many, or -1 when a cell is not one. */
static int parse_row(char *text, double *v, int max) {
    int n = 0;
    for (char *p = text;;) {
        char *end;
        errno = 0;
        double d = strtod(p, &end);
        if (end == p || errno || n == max) return -1;
        v[n++] = d;
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') end++;
        if (*end == '\0') return n;
        if (*end != ',') return -1;
        p = end + 1;
    }
}

/* fedtune_batch_fn: up to max_rows examples of the file, *rows 0 at its end. */
static int next_batch(void *user, float *x, int32_t *y, size_t max_rows, size_t *rows) {
    csv_source *src = user;
    static char text[65536];
    static double v[MAX_FEATURES + 1];
    *rows = 0;
    while (*rows < max_rows && fgets(text, sizeof text, src->f)) {
        src->line++;
        if (text[strspn(text, " \t\r\n")] == '\0') continue; /* a blank line */
        int n = parse_row(text, v, MAX_FEATURES + 1);
        if (n < 0 && src->line == 1) continue; /* a header */
        if (n != (int)src->features + 1 || v[n - 1] < 0 || v[n - 1] != (double)(int32_t)v[n - 1]) {
            fprintf(stderr, "embed-site: %s:%zu: expected %zu numbers and a class id\n", src->path,
                    src->line, src->features);
            src->failed = 1;
            return 1;
        }
        for (size_t j = 0; j < src->features; j++) x[*rows * src->features + j] = (float)v[j];
        y[*rows] = (int32_t)v[n - 1];
        (*rows)++;
    }
    return 0;
}

/* The features (columns minus one) and classes (largest id + 1) of the file: one pass. */
static int scan(const char *path, size_t *features, size_t *classes) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "embed-site: %s: %s\n", path, strerror(errno));
        return 1;
    }
    static char text[65536];
    static double v[MAX_FEATURES + 1];
    size_t line = 0;
    *features = *classes = 0;
    while (fgets(text, sizeof text, f)) {
        int n = parse_row(text, v, MAX_FEATURES + 1);
        if (++line == 1 && n < 0) continue;
        if (n >= 2 && !*features) *features = (size_t)n - 1;
        if (n >= 2 && v[n - 1] >= 0 && v[n - 1] < 65536 && (size_t)v[n - 1] + 1 > *classes)
            *classes = (size_t)v[n - 1] + 1;
    }
    fclose(f);
    if (!*features || !*classes) {
        fprintf(stderr, "embed-site: %s: no row of numbers with a class id\n", path);
        return 1;
    }
    return 0;
}

static fedtune_site *the_site; /* for the signal handler */

static void on_signal(int sig) {
    (void)sig;
    fedtune_site_stop(the_site);
}

static void on_log(void *user, int level, const char *line) {
    (void)user;
    if (level <= FEDTUNE_LOG_WARN) fprintf(stderr, "embed-site: libfedtune: %s\n", line);
}

/* Prints every event; a round's metrics when it is done. */
static void on_event(void *user, fedtune_site *s, int event, uint64_t round) {
    (void)user;
    fedtune_metrics m = {.size = sizeof m};
    if (fedtune_site_metrics(s, &m)) return;
    switch (event) {
    case FEDTUNE_EVENT_JOINED:
        printf("joined the coordinator with %" PRIu64 " training and %" PRIu64 " test examples\n",
               m.train_examples, m.eval_examples);
        break;
    case FEDTUNE_EVENT_ROUND_DONE:
        printf("round %" PRIu64 " done: %" PRIu64 " examples, train loss %.4f acc %.1f%%, "
               "global model loss %.4f acc %.1f%%, %" PRIu64 " bytes in, %" PRIu64 " out\n",
               round, m.examples, m.train_loss, 100.0 * m.train_accuracy, m.global_loss,
               100.0 * m.global_accuracy, m.bytes_received, m.bytes_sent);
        break;
    case FEDTUNE_EVENT_FINISHED:
        printf("the coordinator ended the federation after %" PRIu64 " rounds of this site\n",
               m.rounds_done);
        break;
    default:
        printf("%s%s", fedtune_event_name(event), round ? "" : "\n");
        if (round) printf(" (round %" PRIu64 ")\n", round);
    }
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: embed-site SITE.ini DATA.csv [KEY=VALUE...]\n");
        return 2;
    }
    if (fedtune_version_number() / 10000 != FEDTUNE_VERSION_MAJOR) {
        fprintf(stderr, "embed-site: built for libfedtune %s, found %s\n", FEDTUNE_VERSION_STRING,
                fedtune_version());
        return 1;
    }
    fedtune_set_log(on_log, NULL, FEDTUNE_LOG_WARN);
    csv_source src = {NULL, argv[2], 0, 0, 0};
    size_t classes = 0;
    fedtune_config *cfg = NULL;
    fedtune_site *site = NULL;
    int rc = 1;
    if (scan(argv[2], &src.features, &classes)) return 1;
    if (fedtune_config_new(&cfg)) return 1;
    if (fedtune_config_load(cfg, argv[1])) goto fail;
    for (int i = 3; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "embed-site: \"%s\" is not KEY=VALUE\n", argv[i]);
            rc = 2;
            goto done;
        }
        *eq = '\0';
        if (fedtune_config_set(cfg, argv[i], eq + 1)) goto fail;
    }
    if (!(src.f = fopen(src.path, "r"))) {
        fprintf(stderr, "embed-site: %s: %s\n", src.path, strerror(errno));
        goto done;
    }
    if (fedtune_config_set_data_source(cfg, src.features, classes, next_batch, &src)) goto fail;
    int err = fedtune_site_new(&site, cfg);
    fclose(src.f);
    if (err) goto fail;
    printf("libfedtune %s: a site with %zu features, %zu classes\n", fedtune_version(),
           src.features, classes);
    fedtune_site_on_event(site, on_event, NULL);
    the_site = site;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (fedtune_site_run(site)) {
        fprintf(stderr, "embed-site: %s\n", fedtune_site_errmsg(site));
        goto done;
    }
    rc = 0;
    goto done;
fail:
    if (!src.failed) fprintf(stderr, "embed-site: %s\n", fedtune_config_errmsg(cfg));
done:
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    fedtune_site_free(&site);
    fedtune_config_free(&cfg);
    return rc;
}
