/* Shared by the net tests: certificates made with certs/fedtune-certs in a temporary
 * folder, a log handler that keeps warn lines for assertions, configurations, and a
 * small "world" (one coordinator, several clients, one thread) that polls everyone in
 * turn and records their events, with hooks to react to them. */
#ifndef FED_TEST_NET_COMMON_H
#define FED_TEST_NET_COMMON_H

#include "core/alloc_internal.h"
#include "core/log.h"
#include "net/channel.h"
#include "net/net_internal.h"
#include "tests/test.h"
#include "tests/test_certdir.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef FED_CERTS_SCRIPT
#error "FED_CERTS_SCRIPT must name certs/fedtune-certs"
#endif

/* ------------------------------------------------------------------------------------ */
/* Certificates                                                                         */

/* The federation CA "ca" with the coordinator (localhost, 127.0.0.1), sites site-1..6,
 * an expired, a not-yet-valid and a revoked site, the CRL; a second CA "ca2" with a site
 * "intruder". */
static inline int certs_make(void) {
    snprintf(certdir, sizeof certdir, "/tmp/fednet-test-XXXXXX");
    if (!mkdtemp(certdir)) return -1;
    const char *s = FED_CERTS_SCRIPT;
    const char *q = ">/dev/null 2>&1";
    int rc = sh("%s init-ca %s/ca %s", s, certdir, q);
    rc |= sh("%s coordinator %s/ca localhost --ip 127.0.0.1 %s", s, certdir, q);
    for (int i = 1; i <= 6; i++) rc |= sh("%s site %s/ca site-%d %s", s, certdir, i, q);
    rc |= sh("%s site %s/ca expired --not-before 20200101000000Z --not-after 20210101000000Z %s", s,
             certdir, q);
    /* Valid from two years on (inside the CA's ten years). */
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    int y = tm.tm_year + 1900 + 2;
    rc |= sh("%s site %s/ca future --not-before %d0101000000Z --not-after %d0101000000Z %s", s,
             certdir, y, y + 1, q);
    rc |= sh("%s site %s/ca revoked %s", s, certdir, q);
    rc |= sh("%s revoke %s/ca revoked %s", s, certdir, q);
    rc |= sh("%s init-ca %s/ca2 --name 'other CA' %s", s, certdir, q);
    rc |= sh("%s site %s/ca2 intruder %s", s, certdir, q);
    return rc;
}

static inline void certs_remove(void) {
    if (certdir[0] && sh("rm -rf '%s'", certdir) != 0) fprintf(stderr, "left %s\n", certdir);
}

/* ------------------------------------------------------------------------------------ */
/* Log lines                                                                            */

#define LOG_MAX 256
static char log_lines[LOG_MAX][1024];
static int log_n;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static inline void log_handler(void *user, fed_log_level level, const char *line) {
    (void)user;
    if (getenv("FED_TEST_VERBOSE")) fprintf(stderr, "[%s] %s\n", fed_log_level_name(level), line);
    if (level > FED_LOG_WARN) return;
    pthread_mutex_lock(&log_mu);
    if (log_n < LOG_MAX) snprintf(log_lines[log_n++], sizeof log_lines[0], "%s", line);
    pthread_mutex_unlock(&log_mu);
}

static inline void log_clear(void) {
    pthread_mutex_lock(&log_mu);
    log_n = 0;
    pthread_mutex_unlock(&log_mu);
}

/* Warn lines containing both a and b (b may be NULL). */
static inline int log_count(const char *a, const char *b) {
    int n = 0;
    pthread_mutex_lock(&log_mu);
    for (int i = 0; i < log_n; i++)
        if (strstr(log_lines[i], a) && (!b || strstr(log_lines[i], b))) n++;
    pthread_mutex_unlock(&log_mu);
    return n;
}

static inline void log_dump(void) {
    pthread_mutex_lock(&log_mu);
    for (int i = 0; i < log_n; i++) fprintf(stderr, "  log: %s\n", log_lines[i]);
    pthread_mutex_unlock(&log_mu);
}

/* ------------------------------------------------------------------------------------ */
/* Configurations                                                                       */

static inline fed_server_config server_config(const char *endpoint) {
    fed_server_config c = fed_server_default_config();
    c.endpoint = endpoint;
    c.software = "fedtune-test";
    c.net.tls.ca_file = cpath("ca/ca.crt");
    c.net.tls.cert_file = cpath("ca/coordinator/localhost.crt");
    c.net.tls.key_file = cpath("ca/coordinator/localhost.key");
    c.net.tls.crl_file = cpath("ca/crl.pem");
    return c;
}

/* A client with the certificate of site `name` issued by CA folder `ca`. */
static inline fed_client_config client_config(const char *endpoint, const char *ca,
                                              const char *name) {
    static char paths[16][2][320];
    static int next;
    char(*p)[320] = paths[next++ % 16];
    fed_client_config c = fed_client_default_config();
    c.endpoint = endpoint;
    c.server_name = "localhost";
    c.net.tls.ca_file = cpath("ca/ca.crt");
    snprintf(p[0], sizeof p[0], "%s/%s/sites/%s/%s.crt", certdir, ca, name, name);
    snprintf(p[1], sizeof p[1], "%s/%s/sites/%s/%s.key", certdir, ca, name, name);
    c.net.tls.cert_file = p[0];
    c.net.tls.key_file = p[1];
    c.hello.software = "fedtune-test-client";
    c.hello.train_examples = 1000;
    c.hello.eval_examples = 100;
    return c;
}

/* ------------------------------------------------------------------------------------ */
/* A world: one coordinator, clients, polled in turn by one thread                      */

#define WORLD_MAX 8

/* What one side saw. */
typedef struct seen {
    int joined, left, messages, done, sent, failed;
    fed_err left_err;
    bool left_permanent; /* the last LEFT said retrying cannot help */
    char left_reason[256];
    char cn[FED_NET_CN_MAX + 1]; /* from the last JOINED */
    uint32_t peer;               /* server side: handle of the last JOINED */
    uint64_t last_round;         /* last RoundStart/Update round seen */
    uint64_t last_done, last_sent;
} seen;

typedef struct world world;
struct world {
    void *zctx;
    fed_server *srv;
    fed_client *cli[WORLD_MAX];
    int ncli;
    seen s;                                            /* coordinator */
    seen c[WORLD_MAX];                                 /* clients */
    seen by_peer[64];                                  /* coordinator's events per peer handle */
    void (*on_srv)(world *w, const fed_net_event *ev); /* optional reaction */
    void (*on_cli)(world *w, int i, const fed_net_event *ev); /* optional reaction */
    void *user;
};

static inline void record(seen *s, const fed_net_event *ev) {
    switch (ev->type) {
    case FED_NET_JOINED:
        s->joined++;
        snprintf(s->cn, sizeof s->cn, "%s", ev->cn);
        s->peer = ev->peer;
        break;
    case FED_NET_LEFT:
        s->left++;
        s->left_err = ev->err;
        s->left_permanent = ev->permanent;
        snprintf(s->left_reason, sizeof s->left_reason, "%s", ev->reason);
        break;
    case FED_NET_MESSAGE:
        s->messages++;
        if (ev->msg->type == FED_MSG_ROUND_START) s->last_round = ev->msg->u.round_start.round;
        if (ev->msg->type == FED_MSG_UPDATE) s->last_round = ev->msg->u.update.round;
        break;
    case FED_NET_TRANSFER_DONE:
        s->done++;
        s->last_done = ev->transfer_id;
        break;
    case FED_NET_TRANSFER_SENT:
        s->sent++;
        s->last_sent = ev->transfer_id;
        break;
    case FED_NET_TRANSFER_FAILED:
        s->failed++;
        break;
    case FED_NET_NONE:
        break;
    }
}

/* One round of polling everyone; wait_ms for the coordinator's poll. */
static inline void world_step(world *w, int wait_ms) {
    fed_net_event ev;
    if (w->srv) {
        for (int k = 0; k < 64; k++) {
            if (fed_server_poll(w->srv, k == 0 ? wait_ms : 0, &ev) != FED_OK) {
                fprintf(stderr, "server poll: %s\n", fed_server_errmsg(w->srv));
                break;
            }
            if (ev.type == FED_NET_NONE) break;
            record(&w->s, &ev);
            if (ev.peer < 64) record(&w->by_peer[ev.peer], &ev);
            if (w->on_srv) w->on_srv(w, &ev);
        }
    }
    for (int i = 0; i < w->ncli; i++) {
        if (!w->cli[i]) continue;
        for (int k = 0; k < 64; k++) {
            if (fed_client_poll(w->cli[i], 0, &ev) != FED_OK) {
                fprintf(stderr, "client poll: %s\n", fed_client_errmsg(w->cli[i]));
                break;
            }
            if (ev.type == FED_NET_NONE) break;
            record(&w->c[i], &ev);
            if (w->on_cli) w->on_cli(w, i, &ev);
        }
    }
}

static inline int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Steps the world until cond holds or timeout_ms passed; returns cond. */
static inline bool world_until(world *w, bool (*cond)(world *w), int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    while (!cond(w)) {
        if (now_ms() > end) return false;
        world_step(w, 1);
    }
    return true;
}

/* Steps the world for ms milliseconds. */
static inline void world_run(world *w, int ms) {
    int64_t end = now_ms() + ms;
    while (now_ms() < end) world_step(w, 1);
}

static inline void world_free(world *w) {
    for (int i = 0; i < w->ncli; i++) fed_client_destroy(&w->cli[i]);
    fed_server_destroy(&w->srv);
    fed_net_context_destroy(&w->zctx);
}

static inline bool first_joined(world *w) {
    return w->s.joined >= 1 && w->c[0].joined >= 1;
}

/* Fails the nth allocation (n = 1, 2, ...) after a server (sc) and one client (cc) exist,
 * somewhere in the handshake, admission or events, until an n is reached that the join
 * does not touch: nothing may crash or leak on the way. True when that client joined
 * with no allocation failing; false if it never did (or the objects could not be made). */
static inline bool joins_despite_alloc_failures(const fed_server_config *sc,
                                                const fed_client_config *cc) {
    bool joined = false;
    FOR_EACH_ALLOC_FAILURE(f) {
        world w = {0};
        w.zctx = fed_net_context_new();
        w.ncli = 1;
        if (fed_server_new(&w.srv, w.zctx, sc) != FED_OK ||
            fed_client_new(&w.cli[0], w.zctx, cc) != FED_OK) {
            world_free(&w);
            return false;
        }
        ALLOC_TRY_ANY(f, joined = world_until(&w, first_joined, 200));
        world_free(&w);
    }
    return joined; /* in the run where no allocation failed */
}

/* fed_server_new, then fed_client_new (connecting to the server made), under
 * FOR_EACH_ALLOC_FAILURE: every failed run FED_ENOMEM with no object, nothing leaked. */
static inline void constructors_under_alloc_failures(const fed_server_config *sc,
                                                     const fed_client_config *cc) {
    void *zctx = fed_net_context_new();
    fed_server *s = NULL; /* the one made with no allocation failing, kept */
    FOR_EACH_ALLOC_FAILURE(f) {
        ALLOC_TRY(f, fed_server_new(&s, zctx, sc));
        CHECK(f.failed ? s == NULL : s != NULL);
    }
    /* The clients connect to that server, as in a federation. */
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_client *c = NULL;
        ALLOC_TRY(f, fed_client_new(&c, zctx, cc));
        CHECK(f.failed ? c == NULL : c != NULL);
        fed_client_destroy(&c);
    }
    fed_server_destroy(&s);
    fed_net_context_destroy(&zctx);
}

/* Fills buf with a deterministic pattern. */
static inline void fill_pattern(uint8_t *buf, size_t n, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 1;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        memcpy(buf + i, &x, 4);
    }
    for (; i < n; i++) buf[i] = (uint8_t)i;
}

#endif
