/* The embedding API's site (include/fedtune/fedtune.h: fedtune_site_*), the version,
 * status texts and the log handler. A fedtune_site wraps a fed_site (client/client.h),
 * made from a fedtune_config the way cli/cmd_client.c makes one from its options, and
 * drives it with fed_site_step so that it can tell the caller what happened: after every
 * step the site's counters (fed_site_stats) are compared with the last ones seen, and
 * each change becomes an event. What does not live here: the keys and the data
 * (api/config.c), anything of the round itself (client/). */
#include "api/api_internal.h"
#include "client/client.h"
#include "core/alloc.h"
#include "core/blas.h"
#include "core/log.h"

#include <math.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

/* How long run waits in one step: a stop request is seen within this. */
#define RUN_POLL_MS 100
/* The size of version 0.1's fedtune_metrics, up to its last field: the least a caller
 * may pass. It stays when fields are added. */
#define METRICS_MIN_SIZE (offsetof(fedtune_metrics, finished) + sizeof(int))
/* Rows a data callback is asked for at a time. */
#define SOURCE_ROWS 256

struct fedtune_site {
    fed_site *site;             /* the site */
    fed_base_cache *bases;      /* its store of frozen bases */
    size_t threads;             /* OpenBLAS threads for run */
    volatile sig_atomic_t stop; /* fedtune_site_stop's request */
    fedtune_event_fn on_event;  /* the caller's callback, or NULL */
    void *user;                 /* its argument */
    fed_site_stats seen;        /* the counters when events were last made */
    bool in_session;            /* JOINED was told and LEFT not yet */
    bool in_round;              /* ROUND_STARTED was told and no end of it yet */
    bool finished;              /* the coordinator ended the federation */
    char errmsg[512];           /* the last error of a call on this site */
};

/* ---- version, status texts, logging ---------------------------------------------------- */

const char *fedtune_version(void) {
    return FEDTUNE_VERSION_STRING;
}

int fedtune_version_number(void) {
    return FEDTUNE_VERSION_NUMBER;
}

const char *fedtune_strerror(int status) {
    return fed_strerror((fed_err)status);
}

static fedtune_log_fn log_fn;
static void *log_user;

static void log_line(void *user, fed_log_level level, const char *line) {
    (void)user;
    if (log_fn) log_fn(log_user, (int)level, line);
}

void fedtune_set_log(fedtune_log_fn fn, void *user, int max_level) {
    log_fn = fn;
    log_user = user;
    if (max_level < FEDTUNE_LOG_ERROR) max_level = FEDTUNE_LOG_ERROR;
    if (max_level > FEDTUNE_LOG_DEBUG) max_level = FEDTUNE_LOG_DEBUG;
    fed_log_set_handler(fn ? log_line : NULL, NULL, (fed_log_level)max_level);
}

/* ---- making a site ----------------------------------------------------------------------- */

/* Reads the caller's batches into one data set, checking every label and feature. */
static fed_err read_source(fedtune_config *c, fed_dataset **out) {
    size_t d = c->src_dim, n = 0, cap = 0;
    float *x = NULL;
    int32_t *y = NULL;
    fed_err err = FED_OK;
    for (;;) {
        size_t need, bytes;
        if (!fed_add_ok(n, SOURCE_ROWS, &need) || !fed_mul_ok(need, d, &bytes) ||
            !fed_mul_ok(bytes, sizeof *x, &bytes)) {
            err =
                fed_errorf(FED_ERANGE, "data source: more than %zu examples of %zu features", n, d);
            goto done;
        }
        if (need > cap) {
            size_t ncap = cap ? cap * 2 : SOURCE_ROWS;
            if (ncap < need) ncap = need;
            float *nx = fed_realloc(x, ncap * d * sizeof *x);
            if (nx) x = nx;
            int32_t *ny = nx ? fed_realloc(y, ncap * sizeof *y) : NULL;
            if (!nx || !ny) {
                err = FED_ENOMEM;
                goto done;
            }
            y = ny;
            cap = ncap;
        }
        size_t rows = 0;
        int rc = c->src(c->src_user, x + n * d, y + n, SOURCE_ROWS, &rows);
        if (rc) {
            err = fed_errorf(FED_EIO, "data source: the callback returned %d after %zu examples",
                             rc, n);
            goto done;
        }
        if (rows > SOURCE_ROWS) {
            err = fed_errorf(FED_EINVAL, "data source: the callback wrote %zu rows, at most %d",
                             rows, SOURCE_ROWS);
            goto done;
        }
        if (!rows) break;
        n += rows;
    }
    if (!n) {
        err = fed_errorf(FED_EINVAL, "data source: the callback gave no example");
        goto done;
    }
    if ((err = fed_data_new(out, n, d, c->src_classes))) goto done;
    memcpy((*out)->x, x, n * d * sizeof *x);
    memcpy((*out)->y, y, n * sizeof *y);
done:
    fed_free(x);
    fed_free(y);
    return err;
}

/* Labels in [0, classes) and finite features; rows count from 0. */
static fed_err check_data(const fed_dataset *m) {
    for (size_t i = 0; i < m->n; i++) {
        if (m->y[i] < 0 || (size_t)m->y[i] >= m->num_classes)
            return fed_errorf(FED_ERANGE, "data row %zu: label %d is outside 0..%zu", i,
                              (int)m->y[i], m->num_classes - 1);
        for (size_t j = 0; j < m->dim; j++)
            if (!isfinite(m->x[i * m->dim + j]))
                return fed_errorf(FED_ENONFINITE, "data row %zu, feature %zu: not a finite number",
                                  i, j);
    }
    return FED_OK;
}

/* The endpoint and TLS files, the detail prefixed with the key at fault:
 * "cert /tmp: is a directory, not a PEM certificate". */
static fed_err check_net(const char *endpoint, const fed_net_tls *tls) {
    static const char *const key[] = {"", "ca", "cert", "key", "crl"};
    const char *name = "coordinator";
    fed_net_file which = FED_NET_FILE_NONE;
    fed_err err = fed_net_check_endpoint(endpoint, false);
    if (!err) {
        if (!(err = fed_net_check_tls(tls, false, &which))) return FED_OK;
        name = key[which];
    }
    if (err == FED_ENOMEM) return err;
    char why[512];
    snprintf(why, sizeof why, "%s", fed_errmsg());
    return fed_errorf(FED_EINVAL, "%s %s", name, why);
}

static const char *opt(const fedtune_config *c, api_key k) {
    const char *v = api_get(c, k);
    return v[0] ? v : NULL;
}

/* The checks that need more than one key, and the data's origin. */
static fed_err check_config(const fedtune_config *c) {
    static const api_key required[] = {KEY_COORDINATOR, KEY_SERVER_NAME, KEY_CA, KEY_CERT, KEY_KEY};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        if (!opt(c, required[i]))
            return fed_errorf(FED_EINVAL, "%s: required (fedtune_config_set or the config file)",
                              required[i] == KEY_COORDINATOR   ? "coordinator"
                              : required[i] == KEY_SERVER_NAME ? "server-name"
                              : required[i] == KEY_CA          ? "ca"
                              : required[i] == KEY_CERT        ? "cert"
                                                               : "key");
    bool memory = c->mem || c->src;
    if (!opt(c, KEY_DATA) && !memory)
        return fed_errorf(FED_EINVAL, "data: required: a data file, or fedtune_config_set_data "
                                      "or fedtune_config_set_data_source");
    if (opt(c, KEY_DATA) && memory)
        return fed_errorf(FED_EINVAL, "data: both a data file (%s) and data from memory",
                          api_get(c, KEY_DATA));
    if (memory && opt(c, KEY_CLASSES))
        return fed_errorf(FED_EINVAL, "classes: names are for a data file; data from memory "
                                      "have integer class ids");
    double lo = api_get_double(c, KEY_RECONNECT_INITIAL), hi = api_get_double(c, KEY_RECONNECT_MAX);
    if (hi < lo)
        return fed_errorf(FED_EINVAL, "reconnect-max %g is below reconnect-initial %g", hi, lo);
    return FED_OK;
}

static fed_data_format format_of(const char *v) {
    return strcmp(v, "csv") == 0       ? FED_FORMAT_CSV
           : strcmp(v, "sklearn") == 0 ? FED_FORMAT_SKLEARN
           : strcmp(v, "idx") == 0     ? FED_FORMAT_IDX
                                       : FED_FORMAT_AUTO;
}

/* Makes s->site from c (everything checked first; c's data read last). */
static fed_err make_site(fedtune_site *s, fedtune_config *c) {
    fed_err err = check_config(c);
    if (err) return err;
    fed_site_config sc = fed_site_default_config();
    sc.coordinator = api_get(c, KEY_COORDINATOR);
    sc.server_name = api_get(c, KEY_SERVER_NAME);
    sc.net.tls.ca_file = api_get(c, KEY_CA);
    sc.net.tls.cert_file = api_get(c, KEY_CERT);
    sc.net.tls.key_file = api_get(c, KEY_KEY);
    sc.net.tls.crl_file = opt(c, KEY_CRL);
    if ((err = check_net(sc.coordinator, &sc.net.tls))) return err;
    sc.data_opts.format = format_of(api_get(c, KEY_FORMAT));
    const char *h = api_get(c, KEY_HEADER), *m = api_get(c, KEY_MISSING);
    sc.data_opts.header = strcmp(h, "yes") == 0  ? FED_HEADER_YES
                          : strcmp(h, "no") == 0 ? FED_HEADER_NO
                                                 : FED_HEADER_AUTO;
    sc.data_opts.missing = strcmp(m, "drop") == 0   ? FED_MISSING_DROP
                           : strcmp(m, "mean") == 0 ? FED_MISSING_MEAN
                                                    : FED_MISSING_ERROR;
    sc.data_opts.label = opt(c, KEY_LABEL);
    sc.test_split = api_get_double(c, KEY_TEST_SPLIT);
    sc.seed = (uint64_t)api_get_double(c, KEY_SEED);
    sc.standardize = strcmp(api_get(c, KEY_STANDARDIZE), "off") != 0;
    s->threads = sc.threads = (size_t)api_get_double(c, KEY_THREADS);
    sc.max_epochs = (size_t)api_get_double(c, KEY_MAX_EPOCHS);
    sc.max_batch = (size_t)api_get_double(c, KEY_MAX_BATCH);
    sc.save_updates = opt(c, KEY_SAVE_UPDATES);
    sc.state_dir = opt(c, KEY_STATE_DIR);
    sc.backoff_initial_ms = (int)(api_get_double(c, KEY_RECONNECT_INITIAL) * 1000.0 + 0.5);
    sc.backoff_max_ms = (int)(api_get_double(c, KEY_RECONNECT_MAX) * 1000.0 + 0.5);
    sc.backoff_jitter = api_get_double(c, KEY_RECONNECT_JITTER);
    sc.software = "libfedtune " FEDTUNE_VERSION_STRING;
    if ((err = fed_base_cache_new(&s->bases, opt(c, KEY_BASE_CACHE)))) {
        if (err == FED_ENOMEM) return err;
        char why[512];
        snprintf(why, sizeof why, "%s", fed_errmsg());
        return fed_errorf(FED_EINVAL, "base-cache %s", why);
    }
    sc.base_cache = s->bases;

    char **classes = NULL;
    fed_dataset *src = NULL;
    if (opt(c, KEY_CLASSES) && (err = fed_data_split_names(api_get(c, KEY_CLASSES), "classes",
                                                           &classes, &sc.data_opts.num_classes)))
        return err;
    sc.data_opts.classes = (const char *const *)classes;
    if (c->src && (err = read_source(c, &src))) goto done;
    sc.dataset = c->mem ? c->mem : src;
    sc.data = sc.dataset ? NULL : api_get(c, KEY_DATA);
    if (sc.dataset && (err = check_data(sc.dataset))) goto done;
    err = fed_site_new(&s->site, &sc);
done:
    fed_data_destroy(&src);
    fed_free(classes);
    return err;
}

int fedtune_site_new(fedtune_site **out, fedtune_config *c) {
    if (!out) return FEDTUNE_EINVAL;
    *out = NULL;
    if (!c) return FEDTUNE_EINVAL;
    fedtune_site *s = fed_calloc(1, sizeof *s);
    if (!s) return api_config_fail(c, fed_errorf(FED_ENOMEM, "out of memory"));
    fed_errclear();
    fed_err err = make_site(s, c);
    if (err) {
        fedtune_site_free(&s);
        return api_config_fail(c, err);
    }
    fed_site_set_stop(s->site, &s->stop);
    c->errmsg[0] = '\0';
    *out = s;
    return FEDTUNE_OK;
}

void fedtune_site_free(fedtune_site **s) {
    if (!s || !*s) return;
    fed_site_destroy(&(*s)->site);
    fed_base_cache_destroy(&(*s)->bases);
    fed_free(*s);
    *s = NULL;
}

/* ---- running ---------------------------------------------------------------------------- */

static void tell(fedtune_site *s, fedtune_event ev, uint64_t round) {
    if (s->on_event) s->on_event(s->user, s, (int)ev, round);
}

/* Turns what changed in the site's counters since the last call into events, in the
 * order they happened: a round's end before the start of a newer one (or of a new attempt
 * of it) that replaced it. The RoundStart a model request brings is the same attempt:
 * no new start. */
static void make_events(fedtune_site *s) {
    fed_site_stats st;
    fed_site_stats_get(s->site, &st);
    const fed_site_stats *o = &s->seen;
    if (st.connects > o->connects) {
        s->in_session = true;
        tell(s, FEDTUNE_EVENT_JOINED, 0);
    }
    /* A request for the model is not a failed round (the round goes on). */
    uint64_t done = st.rounds_done - o->rounds_done,
             failed = fed_site_stats_failed(&st) - fed_site_stats_failed(o),
             dropped = st.rounds_dropped - o->rounds_dropped;
    if (st.last_round != o->last_round || st.last_attempt != o->last_attempt) {
        if (s->in_round && (done || failed || dropped)) { /* the older round ended first */
            fedtune_event ev = dropped  ? FEDTUNE_EVENT_ROUND_DROPPED
                               : failed ? FEDTUNE_EVENT_ROUND_FAILED
                                        : FEDTUNE_EVENT_ROUND_DONE;
            dropped -= ev == FEDTUNE_EVENT_ROUND_DROPPED;
            failed -= ev == FEDTUNE_EVENT_ROUND_FAILED;
            done -= ev == FEDTUNE_EVENT_ROUND_DONE;
            tell(s, ev, o->last_round);
        }
        s->in_round = true;
        tell(s, FEDTUNE_EVENT_ROUND_STARTED, st.last_round);
    }
    for (; done; done--) tell(s, FEDTUNE_EVENT_ROUND_DONE, st.last_round);
    for (; failed; failed--) tell(s, FEDTUNE_EVENT_ROUND_FAILED, st.last_round);
    for (; dropped; dropped--) tell(s, FEDTUNE_EVENT_ROUND_DROPPED, st.last_round);
    if (st.rounds_done + fed_site_stats_failed(&st) + st.rounds_dropped !=
        o->rounds_done + fed_site_stats_failed(o) + o->rounds_dropped)
        s->in_round = false;
    s->seen = st;
    if (s->in_session && !fed_site_connected(s->site)) {
        s->in_session = false;
        tell(s, FEDTUNE_EVENT_LEFT, 0);
    }
}

static int site_fail(fedtune_site *s, fed_err err) {
    if (!err) return FEDTUNE_OK;
    snprintf(s->errmsg, sizeof s->errmsg, "%s", fed_site_errmsg(s->site));
    tell(s, FEDTUNE_EVENT_ERROR, 0);
    return (int)err;
}

int fedtune_site_step(fedtune_site *s, int timeout_ms, int *finished) {
    if (!s) return FEDTUNE_EINVAL;
    if (finished) *finished = 0;
    bool done = false;
    fed_err err = fed_site_step(s->site, timeout_ms < 0 ? 0 : timeout_ms, &done);
    make_events(s);
    if (done) {
        s->finished = true;
        if (finished) *finished = 1;
        tell(s, FEDTUNE_EVENT_FINISHED, 0);
    }
    return site_fail(s, err);
}

int fedtune_site_run(fedtune_site *s) {
    if (!s) return FEDTUNE_EINVAL;
    if (s->threads) fed_blas_set_threads((int)s->threads);
    s->finished = false;
    int rc = FEDTUNE_OK, finished = 0;
    while (!s->stop && !finished && !rc) rc = fedtune_site_step(s, RUN_POLL_MS, &finished);
    if (s->stop) fed_site_say_bye(s->site);
    fed_err derr = fed_site_disconnect(s->site); /* no worker thread: never refused */
    (void)derr;
    make_events(s);
    s->stop = 0;
    return rc;
}

void fedtune_site_stop(fedtune_site *s) {
    if (s) s->stop = 1;
}

void fedtune_site_on_event(fedtune_site *s, fedtune_event_fn fn, void *user) {
    if (!s) return;
    s->on_event = fn;
    s->user = user;
}

const char *fedtune_event_name(int event) {
    static const char *const names[] = {"unknown",    "joined",       "round-started",
                                        "round-done", "round-failed", "round-dropped",
                                        "left",       "finished",     "error"};
    return event >= 1 && event <= FEDTUNE_EVENT_ERROR ? names[event] : names[0];
}

int fedtune_site_metrics(const fedtune_site *s, fedtune_metrics *m) {
    if (!s || !m || m->size < METRICS_MIN_SIZE) return FEDTUNE_EINVAL;
    fed_site_stats st;
    fed_site_stats_get(s->site, &st);
    fedtune_metrics v;
    memset(&v, 0, sizeof v);
    v.size = m->size;
    v.train_examples = st.train_examples;
    v.eval_examples = st.eval_examples;
    v.features = st.features;
    v.classes = st.classes;
    v.connects = st.connects;
    v.rounds_done = st.rounds_done;
    v.rounds_failed = fed_site_stats_failed(&st);
    v.rounds_dropped = st.rounds_dropped;
    v.last_round = st.last_round;
    v.model_version = st.model_version;
    v.bytes_received = st.model_bytes;
    v.bytes_sent = st.update_bytes;
    v.examples = st.last_examples;
    v.train_loss = st.last_train_loss;
    v.train_accuracy = st.last_train_acc;
    v.global_loss = st.last_global_loss;
    v.global_accuracy = st.last_global_acc;
    v.connected = fed_site_connected(s->site);
    v.finished = s->finished;
    /* An older caller's struct gets the fields it knows; a newer one's extra bytes stay. */
    memcpy(m, &v, m->size < sizeof v ? m->size : sizeof v);
    return FEDTUNE_OK;
}

const char *fedtune_site_errmsg(const fedtune_site *s) {
    return s ? s->errmsg : "";
}
