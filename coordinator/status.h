/* Internal to coordinator/: the status and metrics record (status.c) that the engine
 * updates at its natural points (a site joins or leaves, a sample, an update accepted or
 * rejected, an attempt failed, a round closed, each step's byte counters) and that any
 * other thread copies under its mutex to render /status, /metrics and the status page
 * (status_render.c). The engine's own fields are never read from another thread: only
 * this record is. What is not here: HTTP (net/http.h), and the rendering of the page's
 * HTML (status_render.c). */
#ifndef FED_COORDINATOR_STATUS_H
#define FED_COORDINATOR_STATUS_H

#include "coordinator/coordinator.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FED_STATUS_WARNINGS 20   /* last warnings kept */
#define FED_STATUS_HISTORY  1000 /* last rounds kept */
#define FED_STATUS_WARN_LEN 240  /* longest warning text kept (bytes) */

/* A site's state as monitoring shows it. */
typedef enum fed_site_state {
    FED_SITE_CONNECTED = 0, /* joined, not sampled since */
    FED_SITE_TRAINING,      /* sampled in the open attempt, has not answered yet */
    FED_SITE_IDLE,          /* connected, answered or not sampled in the open attempt */
    FED_SITE_LEFT,          /* its session ended */
    FED_SITE_EVICTED,       /* removed by an administrator */
} fed_site_state;

/* Why an update was rejected (the wire code of the Error the site was sent), and why an
 * attempt failed: the label values of the metrics, a fixed set. */
enum {
    REJ_INVALID,
    REJ_FORMAT,
    REJ_RANGE,
    REJ_SHAPE,
    REJ_UNSUPPORTED,
    REJ_DIGEST,
    REJ_PROTOCOL,
    REJ_AUTH,
    REJ_TIMEOUT,
    REJ_OTHER,
    REJ_N
};
enum { FAIL_DEADLINE, FAIL_TOO_FEW, FAIL_SECAGG, FAIL_STATISTICS, FAIL_OTHER, FAIL_N };
extern const char *const fed__coord_reject_names[REJ_N];
extern const char *const fed__coord_fail_names[FAIL_N];

/* Upper bounds (seconds) of the round duration histogram's buckets, then +Inf. */
#define FED_STATUS_BUCKETS 12
extern const double fed__coord_duration_bounds[FED_STATUS_BUCKETS];

typedef struct fed_status_site {
    char name[FED_NET_CN_MAX + 1]; /* certificate CN */
    fed_site_state state;
    int64_t last_seen;   /* unix seconds of its last event */
    uint64_t rounds;     /* updates accepted */
    uint64_t rejections; /* updates rejected */
} fed_status_site;

typedef struct fed_status_round {
    uint64_t round;
    double fed_loss, fed_acc;         /* NaN: none */
    double central_loss, central_acc; /* NaN: none */
    double seconds;
    size_t sampled, returned, rejected;
    int64_t time; /* unix seconds when it closed */
} fed_status_round;

typedef struct fed_status_warning {
    int64_t time;                   /* unix seconds */
    char level[8];                  /* "warn", "error" */
    char text[FED_STATUS_WARN_LEN]; /* truncated */
} fed_status_warning;

/* What a snapshot holds (every field a copy). */
typedef struct fed_status_data {
    fed_coord_state state;
    bool paused;
    char endpoint[160];
    int64_t started;        /* unix seconds */
    uint64_t rounds_done;   /* closed, including those restored from a checkpoint */
    uint64_t rounds_target; /* cfg.rounds */
    uint64_t rounds_total;  /* closed by this process */
    uint64_t model_version;
    uint64_t attempts_total; /* samples drawn */
    uint64_t attempt_failures[FAIL_N];
    uint64_t rejections[REJ_N];
    uint64_t joins_total;         /* sessions admitted */
    uint64_t sampled_total;       /* sites sampled, over every attempt */
    uint64_t accepted_total;      /* updates accepted */
    uint64_t site_failures_total; /* rounds that failed at a site (it sent Error) */
    uint64_t warnings_total;      /* warn and error lines noted */
    uint64_t bytes_in, bytes_out; /* the channel's counters */
    uint64_t duration_buckets[FED_STATUS_BUCKETS + 1]; /* cumulative counts, last +Inf */
    double duration_sum;
    double fed_loss, fed_acc, central_loss, central_acc; /* the last round's; NaN: none */
    double epsilon;                                      /* DP spent; NaN without DP */
    int64_t checkpoint_time; /* unix seconds of the last checkpoint written (0: none) */
    size_t last_sampled, last_returned, last_rejected; /* the last closed round's */
    fed_status_round history[FED_STATUS_HISTORY];      /* ring */
    size_t nhistory, history_next;
    fed_status_warning warnings[FED_STATUS_WARNINGS]; /* ring */
    size_t nwarnings, warnings_next;
    fed_status_site *sites; /* (nsites) in registry order; a snapshot's own copy */
    size_t nsites, capsites;
} fed_status_data;

typedef struct fed_coord_status fed_coord_status;

/* ---- the engine's side (its thread) ------------------------------------------------ */
fed_err fed__coord_status_new(fed_coord_status **out, const fed_coord *c) FED_MUST_USE;
void fed__coord_status_destroy(fed_coord_status **s);
struct client;
/* After an event of site k (joined: counts the join), sets its state, last seen and
 * counters. */
void fed__coord_status_site(fed_coord *c, struct client *k, bool joined);
/* Every site again (after a sample, a failed attempt, a closed round). */
void fed__coord_status_sites(fed_coord *c);
void fed__coord_status_sampled(fed_coord *c, size_t k);
void fed__coord_status_rejected(fed_coord *c, struct client *k, uint32_t wire_code);
void fed__coord_status_accepted(fed_coord *c, struct client *k);
void fed__coord_status_site_failed(fed_coord *c);
void fed__coord_status_attempt_failed(fed_coord *c, const char *what);
/* A closed round (c->cur is its stats; checkpointed: a checkpoint was written). */
void fed__coord_status_round(fed_coord *c, bool checkpointed);
/* Once a step: state, rounds, version and the byte counters. */
void fed__coord_status_step(fed_coord *c);

/* ---- any thread ---------------------------------------------------------------------- */
/* A copy of the record (sites in a fresh array: fed__coord_status_free). */
fed_err fed__coord_status_copy(fed_coord *c, fed_status_data **out) FED_MUST_USE;
void fed__coord_status_free(fed_status_data **d);

/* A bounded text builder (status_render.c): appends fail quietly once the text would pass
 * its limit or memory runs out; sb_done then reports it. */
typedef struct fed_sbuf {
    char *p;
    size_t len, cap, limit; /* limit: the most bytes it may hold, NUL included */
    bool failed;            /* an append failed: out of memory, or */
    bool over;              /* ... past the limit */
} fed_sbuf;
void fed__coord_sb_printf(fed_sbuf *b, const char *fmt, ...) FED_PRINTF(2, 3);
/* s as a JSON string, quotes included. */
void fed__coord_sb_json_str(fed_sbuf *b, const char *s);
/* v as a JSON number, or null when not finite. */
void fed__coord_sb_json_num(fed_sbuf *b, double v);
/* s escaped for HTML text and attributes. */
void fed__coord_sb_html(fed_sbuf *b, const char *s);
/* *out = the text (FED_OK), or FED_ENOMEM / FED_ERANGE past the limit (freed). */
fed_err fed__coord_sb_done(fed_sbuf *b, char **out) FED_MUST_USE;

const char *fed__coord_site_state_name(fed_site_state s);

#endif
