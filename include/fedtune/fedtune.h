/* libfedtune: a fedtune site inside your own program. The site is the same one
 * `fedtune client` runs: it joins a coordinator over mutually authenticated TLS, and
 * every round it receives the global model, evaluates it on a held-out share of the
 * local data, fine-tunes it on the rest and sends back only the weight delta. Your data
 * never leave the process. docs/EMBED.md has a whole program and how to build it.
 *
 *     fedtune_config *cfg;  fedtune_site *site;
 *     fedtune_config_new(&cfg);
 *     fedtune_config_load(cfg, "site.ini");          // the keys of `fedtune client`
 *     fedtune_config_set_data(cfg, x, y, n, d, k);   // or "data = file.csv" in site.ini
 *     if (fedtune_site_new(&site, cfg)) puts(fedtune_config_errmsg(cfg));
 *     fedtune_site_on_event(site, on_event, NULL);   // joined, round done, ...
 *     fedtune_site_run(site);                        // until the federation ends
 *     fedtune_site_free(&site);  fedtune_config_free(&cfg);
 *
 * Conventions. Every object is opaque and made by a _new function that returns a
 * status (0 = FEDTUNE_OK) and the object in *out; _free is NULL-safe and sets the
 * pointer to NULL. A failed call leaves one line of detail, naming the key, file, line
 * or field at fault, in the errmsg of the object it was called on. Strings passed in
 * are copied. The library never prints: install a log handler to see what it does.
 * A site is used by one thread at a time, except fedtune_site_stop (any thread, or a
 * signal handler).
 *
 * ABI: the library's SONAME is libfedtune.so.<FEDTUNE_VERSION_MAJOR>. A minor release
 * only adds: functions, status codes, event kinds, config keys and, at the end, fields
 * of fedtune_metrics (the caller says in .size how many bytes it has, so old programs
 * keep working with a newer library). Anything else is a new major version, with a new
 * SONAME. Only fedtune_* symbols are exported. */
#ifndef FEDTUNE_FEDTUNE_H
#define FEDTUNE_FEDTUNE_H

#include <fedtune/version.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define FEDTUNE_API __attribute__((visibility("default")))
#else
#define FEDTUNE_API
#endif

/* ---- status codes ------------------------------------------------------------------ */

/* What every call returns. Append-only: a code's number never changes. */
typedef enum fedtune_status {
    FEDTUNE_OK = 0,           /* success */
    FEDTUNE_ENOMEM = 1,       /* out of memory */
    FEDTUNE_EINVAL = 2,       /* invalid argument: a bad key, value or configuration */
    FEDTUNE_EFORMAT = 3,      /* malformed input (a data file, a config file line) */
    FEDTUNE_EIO = 4,          /* a file cannot be read, a data callback failed */
    FEDTUNE_ERANGE = 5,       /* a value out of range */
    FEDTUNE_ENOTFOUND = 6,    /* not found */
    FEDTUNE_ESHAPE = 7,       /* shape mismatch */
    FEDTUNE_EUNSUPPORTED = 8, /* not supported */
    FEDTUNE_ENONFINITE = 9,   /* a NaN or infinite value */
    FEDTUNE_EDIGEST = 10,     /* digest mismatch */
    FEDTUNE_EPROTO = 11,      /* protocol error */
    FEDTUNE_ETLS = 12,        /* TLS error: the coordinator refused this site's certificate,
                                 or its own failed this site's checks; not retried */
    FEDTUNE_EAUTH = 13,       /* authentication failed */
    FEDTUNE_ETIMEOUT = 14,    /* timed out */
    FEDTUNE_ECLOSED = 15,     /* connection closed */
    FEDTUNE_EAGAIN = 16,      /* try again */
    FEDTUNE_ECANCELED = 17,   /* canceled */
    FEDTUNE_EEXIST = 18,      /* already exists */
    FEDTUNE_EINTERNAL = 19,   /* internal error */
} fedtune_status;

/* A static text for a status ("invalid argument"); never NULL. */
FEDTUNE_API const char *fedtune_strerror(int status);

/* ---- version and logging ----------------------------------------------------------- */

/* The version of the library loaded ("0.1.0"), and as a number (FEDTUNE_VERSION_NUMBER
 * of its headers). A program may check at start-up that the major versions agree:
 *     fedtune_version_number() / 10000 == FEDTUNE_VERSION_MAJOR */
FEDTUNE_API const char *fedtune_version(void);
FEDTUNE_API int fedtune_version_number(void);

typedef enum fedtune_log_level {
    FEDTUNE_LOG_ERROR = 0,
    FEDTUNE_LOG_WARN = 1,
    FEDTUNE_LOG_INFO = 2, /* a line per connection and per round, as `fedtune client` logs */
    FEDTUNE_LOG_DEBUG = 3,
} fedtune_log_level;

/* Receives one line without a newline; it may be called from the library's threads. */
typedef void (*fedtune_log_fn)(void *user, int level, const char *line);
/* Installs the process-wide log handler and the most verbose level passed to it
 * (fn NULL: discard, the default). Call it before making sites. Log lines never carry
 * keys or training examples. */
FEDTUNE_API void fedtune_set_log(fedtune_log_fn fn, void *user, int max_level);

/* ---- configuration ------------------------------------------------------------------ */

/* What a site is made from: the keys of `fedtune client` (examples/client.ini) and the
 * data. Required: coordinator, server-name, ca, cert, key, and either the key data (a
 * file) or fedtune_config_set_data / fedtune_config_set_data_source. */
typedef struct fedtune_config fedtune_config;

FEDTUNE_API int fedtune_config_new(fedtune_config **out);
FEDTUNE_API void fedtune_config_free(fedtune_config **c);

/* Sets one key as `fedtune client --KEY VALUE` would: coordinator, server-name, ca,
 * cert, key, crl, data, label, format, header, missing, classes, test-split, seed,
 * standardize, threads, max-epochs, max-batch, save-updates, base-cache, state-dir,
 * reconnect-initial, reconnect-max, reconnect-jitter. Text data (tokenizer, text-length,
 * drop-empty) are not supported yet: only their defaults are accepted.
 * FEDTUNE_EINVAL "seed: \"x\" is not an integer", "colour: unknown key". */
FEDTUNE_API int fedtune_config_set(fedtune_config *c, const char *key, const char *value);

/* Reads an INI file of "key = value" lines as `fedtune client --config` does: keys of
 * fedtune_config_set, before any section or in [client]; later keys win over earlier
 * calls. FEDTUNE_EIO when it cannot be opened; FEDTUNE_EINVAL naming file:line for an
 * unknown key, a bad value, another section or a line that is not "key = value". */
FEDTUNE_API int fedtune_config_load(fedtune_config *c, const char *path);

/* The site's data from memory (copied): n examples of d float features, row-major
 * x[i * d + j], with class ids y[i] in [0, classes). Replaces earlier data given this way.
 * FEDTUNE_EINVAL for n, d or classes 0, NULL arrays, or n * d too large; a label out of
 * range or a non-finite feature is reported by fedtune_site_new, naming the row. */
FEDTUNE_API int fedtune_config_set_data(fedtune_config *c, const float *x, const int32_t *y,
                                        size_t n, size_t d, size_t classes);

/* A source of batches: writes up to max_rows examples into x (max_rows * d floats,
 * row-major) and y (max_rows ids), sets *rows to how many it wrote, and returns 0; *rows
 * 0 means there are no more. A non-zero return aborts with FEDTUNE_EIO. */
typedef int (*fedtune_batch_fn)(void *user, float *x, int32_t *y, size_t max_rows, size_t *rows);
/* The site's data from a callback instead of arrays: fedtune_site_new calls fn until it
 * says there are no more rows (a few hundred rows at a time), on the calling thread,
 * and keeps the examples for the site's whole life: the local data are fixed when the
 * site is made, as with a data file (make a new site to train on new data). */
FEDTUNE_API int fedtune_config_set_data_source(fedtune_config *c, size_t d, size_t classes,
                                               fedtune_batch_fn fn, void *user);

/* The last error of a call on c (or of fedtune_site_new with c); "" when none. */
FEDTUNE_API const char *fedtune_config_errmsg(const fedtune_config *c);

/* ---- the site ----------------------------------------------------------------------- */

typedef struct fedtune_site fedtune_site;

/* Checks the configuration (the endpoint and the TLS files first), reads the data, holds
 * out test-split of it for evaluation and fits the standardizer; no connection is made
 * yet. c may be freed afterwards. Errors go to fedtune_config_errmsg(c):
 * "cert ca/site.key: not a PEM certificate (it holds a PRIVATE KEY)". */
FEDTUNE_API int fedtune_site_new(fedtune_site **out, fedtune_config *c);
/* NULL-safe; sets *s to NULL. Closes the connection (without a goodbye: call
 * fedtune_site_stop and let run return for that). */
FEDTUNE_API void fedtune_site_free(fedtune_site **s);

/* Connects (retrying with backoff while the coordinator is not there) and answers rounds
 * until the coordinator ends the federation or fedtune_site_stop is called; then says
 * goodbye and returns FEDTUNE_OK (fedtune_metrics.finished tells which). Lost
 * connections and failed rounds are not errors (they are events). Errors are for the
 * site as a whole, e.g. FEDTUNE_ETLS "the coordinator refused this site's certificate:
 * revoked (TLS alert 44); not retrying". May be called again. */
FEDTUNE_API int fedtune_site_run(fedtune_site *s);
/* One step of what run repeats, for a program with its own loop: connects when it is
 * time, waits up to timeout_ms for one thing to happen and handles it (a round's
 * training happens inside a step). *finished becomes 1 when the coordinator ended the
 * federation. Events are delivered before it returns. */
FEDTUNE_API int fedtune_site_step(fedtune_site *s, int timeout_ms, int *finished);
/* Asks run to return (training in progress ends after its current epoch and the round is
 * dropped). Any thread, or a signal handler; the request stays until run returns. */
FEDTUNE_API void fedtune_site_stop(fedtune_site *s);

/* What happened; delivered on the thread calling run / step, in order. */
typedef enum fedtune_event {
    FEDTUNE_EVENT_JOINED = 1,        /* a session with the coordinator began */
    FEDTUNE_EVENT_ROUND_STARTED = 2, /* the coordinator asked for round `round` (again for
                                        each retried attempt of it) */
    FEDTUNE_EVENT_ROUND_DONE = 3,    /* its update was sent and taken: the metrics hold the
                                        round's losses and accuracies */
    FEDTUNE_EVENT_ROUND_FAILED = 4,  /* the round failed here (data that do not fit the
                                        model, ...): the site waits for the next one */
    FEDTUNE_EVENT_ROUND_DROPPED = 5, /* the round was abandoned (connection lost, a newer
                                        round, the update refused) */
    FEDTUNE_EVENT_LEFT = 6,          /* the session ended; the site reconnects */
    FEDTUNE_EVENT_FINISHED = 7,      /* the coordinator ended the federation */
    FEDTUNE_EVENT_ERROR = 8,         /* run / step is about to return an error (errmsg) */
} fedtune_event;

/* round: the round the event concerns (0 for JOINED, LEFT, FINISHED, ERROR). The
 * callback may read the metrics and call fedtune_site_stop, nothing else of s. */
typedef void (*fedtune_event_fn)(void *user, fedtune_site *s, int event, uint64_t round);
/* Installs the event callback (fn NULL: none). */
FEDTUNE_API void fedtune_site_on_event(fedtune_site *s, fedtune_event_fn fn, void *user);
/* "joined", "round-started", "round-done", "round-failed", "round-dropped", "left",
 * "finished", "error"; "unknown" otherwise. */
FEDTUNE_API const char *fedtune_event_name(int event);

/* What the site did so far. Set .size = sizeof(fedtune_metrics) before the call: the
 * library fills only that many bytes, so the struct may grow at the end. */
typedef struct fedtune_metrics {
    size_t size;             /* set by the caller: sizeof(fedtune_metrics) */
    uint64_t train_examples; /* the local training split */
    uint64_t eval_examples;  /* the local test split (the global model is scored on it) */
    uint64_t features;       /* per example */
    uint64_t classes;        /* in the local data */
    uint64_t connects;       /* sessions the coordinator welcomed */
    uint64_t rounds_done;    /* rounds whose update the coordinator took */
    uint64_t rounds_failed;  /* rounds that failed here */
    uint64_t rounds_dropped; /* rounds abandoned */
    uint64_t last_round;     /* the last round the coordinator started (0: none) */
    uint64_t model_version;  /* the global model held (0: none) */
    uint64_t bytes_received; /* model bytes received */
    uint64_t bytes_sent;     /* update bytes sent */
    uint64_t examples;       /* the last done round: examples trained on (its weight) */
    double train_loss;       /* ... its final training loss */
    double train_accuracy;   /* ... its training accuracy, [0, 1] */
    double global_loss;      /* ... the global model's loss on the local test split */
    double global_accuracy;  /* ... and accuracy, [0, 1] (0 without a test split) */
    int connected;           /* 1 while a session is established */
    int finished;            /* 1 once the coordinator ended the federation */
} fedtune_metrics;

/* FEDTUNE_EINVAL when m is NULL or m->size is below the size of version 0.1's struct
 * (this one: the first). */
FEDTUNE_API int fedtune_site_metrics(const fedtune_site *s, fedtune_metrics *m);

/* The last error of a call on s; "" when none. */
FEDTUNE_API const char *fedtune_site_errmsg(const fedtune_site *s);

#ifdef __cplusplus
}
#endif

#endif
