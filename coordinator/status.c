/* The status and metrics record (status.h): the engine's updates, on its own thread, and
 * the copy any other thread takes, both under the record's mutex. fed_coord_status_json
 * lives here too, since `fedtune admin status` calls it without the HTTP server. What is
 * not here: the Prometheus text and the HTML page (status_render.c). */
#include "coordinator/internal.h"
#include "coordinator/status.h"

struct fed_coord_status {
    pthread_mutex_t mu;
    fed_status_data d;
};

const char *const fed__coord_reject_names[REJ_N] = {"invalid",     "format", "range",    "shape",
                                                    "unsupported", "digest", "protocol", "auth",
                                                    "timeout",     "other"};
const char *const fed__coord_fail_names[FAIL_N] = {"deadline", "too_few_updates", "secagg",
                                                   "statistics", "other"};
const double fed__coord_duration_bounds[FED_STATUS_BUCKETS] = {0.1, 0.5, 1,   2.5, 5,   10,
                                                               30,  60,  120, 300, 900, 3600};

const char *fed__coord_site_state_name(fed_site_state s) {
    switch (s) {
    case FED_SITE_CONNECTED:
        return "connected";
    case FED_SITE_TRAINING:
        return "training";
    case FED_SITE_IDLE:
        return "idle";
    case FED_SITE_LEFT:
        return "left";
    case FED_SITE_EVICTED:
        return "evicted";
    }
    return "?";
}

fed_err fed__coord_status_new(fed_coord_status **out, const fed_coord *c) {
    fed_coord_status *s = fed_calloc(1, sizeof *s);
    if (!s) return FED_ENOMEM;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        fed_free(s);
        return fed_errorf(FED_EINTERNAL, "status: no mutex");
    }
    fed_status_data *d = &s->d;
    d->started = (int64_t)time(NULL);
    d->rounds_target = c->cfg.rounds;
    d->fed_loss = d->fed_acc = d->central_loss = d->central_acc = d->epsilon = (double)NAN;
    *out = s;
    return FED_OK;
}

void fed__coord_status_destroy(fed_coord_status **ps) {
    if (!ps || !*ps) return;
    pthread_mutex_destroy(&(*ps)->mu);
    fed_free((*ps)->d.sites);
    fed_free(*ps);
    *ps = NULL;
}

static fed_site_state site_state(const fed_coord *c, const client *k) {
    if (fed__coord_is_evicted(c, k->cn)) return FED_SITE_EVICTED;
    if (!k->connected) return FED_SITE_LEFT;
    if (k->status == ST_WAITING || k->status == ST_PENDING || k->status == ST_RECEIVING)
        return FED_SITE_TRAINING;
    return k->sampled_since_join ? FED_SITE_IDLE : FED_SITE_CONNECTED;
}

/* With the mutex held: k's entry (index k - c->cl), the array grown to it. */
static void put_site(fed_coord *c, const client *k) {
    fed_status_data *d = &c->status->d;
    size_t i = (size_t)(k - c->cl);
    if (i >= d->capsites) {
        size_t cap = d->capsites ? 2 * d->capsites : 16;
        while (cap <= i) cap *= 2;
        fed_status_site *p = fed_realloc(d->sites, cap * sizeof *p);
        if (!p) return; /* monitoring misses the site; the federation goes on */
        d->sites = p;
        d->capsites = cap;
    }
    while (d->nsites <= i) memset(&d->sites[d->nsites++], 0, sizeof *d->sites);
    fed_status_site *e = &d->sites[i];
    snprintf(e->name, sizeof e->name, "%s", k->cn);
    e->state = site_state(c, k);
    e->last_seen = k->last_seen;
    e->rounds = k->accepted_total;
    e->rejections = k->rejections_total;
}

void fed__coord_status_site(fed_coord *c, client *k, bool joined) {
    if (!c->status) return;
    k->last_seen = (int64_t)time(NULL);
    if (joined) k->sampled_since_join = false;
    pthread_mutex_lock(&c->status->mu);
    if (joined) c->status->d.joins_total++;
    put_site(c, k);
    pthread_mutex_unlock(&c->status->mu);
}

void fed__coord_status_sites(fed_coord *c) {
    if (!c->status) return;
    pthread_mutex_lock(&c->status->mu);
    for (size_t i = 0; i < c->ncl; i++) put_site(c, &c->cl[i]);
    pthread_mutex_unlock(&c->status->mu);
}

void fed__coord_status_sampled(fed_coord *c, size_t k) {
    if (!c->status) return;
    for (size_t i = 0; i < c->ncl; i++)
        if (c->cl[i].status == ST_WAITING) c->cl[i].sampled_since_join = true;
    pthread_mutex_lock(&c->status->mu);
    c->status->d.attempts_total++;
    c->status->d.sampled_total += k;
    pthread_mutex_unlock(&c->status->mu);
    fed__coord_status_sites(c);
}

void fed__coord_status_rejected(fed_coord *c, client *k, uint32_t code) {
    k->rejections_total++;
    if (!c->status) return;
    size_t r;
    switch (code) {
    case FED_WIRE_INVALID:
        r = REJ_INVALID;
        break;
    case FED_WIRE_FORMAT:
        r = REJ_FORMAT;
        break;
    case FED_WIRE_RANGE:
        r = REJ_RANGE;
        break;
    case FED_WIRE_SHAPE:
        r = REJ_SHAPE;
        break;
    case FED_WIRE_UNSUPPORTED:
        r = REJ_UNSUPPORTED;
        break;
    case FED_WIRE_DIGEST:
        r = REJ_DIGEST;
        break;
    case FED_WIRE_PROTO:
        r = REJ_PROTOCOL;
        break;
    case FED_WIRE_AUTH:
        r = REJ_AUTH;
        break;
    case FED_WIRE_TIMEOUT:
        r = REJ_TIMEOUT;
        break;
    default:
        r = REJ_OTHER;
        break;
    }
    pthread_mutex_lock(&c->status->mu);
    c->status->d.rejections[r]++;
    put_site(c, k);
    pthread_mutex_unlock(&c->status->mu);
}

void fed__coord_status_accepted(fed_coord *c, client *k) {
    k->accepted_total++;
    if (!c->status) return;
    pthread_mutex_lock(&c->status->mu);
    c->status->d.accepted_total++;
    put_site(c, k);
    pthread_mutex_unlock(&c->status->mu);
}

void fed__coord_status_site_failed(fed_coord *c) {
    if (!c->status) return;
    pthread_mutex_lock(&c->status->mu);
    c->status->d.site_failures_total++;
    pthread_mutex_unlock(&c->status->mu);
}

void fed__coord_status_attempt_failed(fed_coord *c, const char *what) {
    if (!c->status) return;
    size_t r = FAIL_OTHER;
    if (strncmp(what, "deadline passed", 15) == 0)
        r = FAIL_DEADLINE;
    else if (strncmp(what, "no update can still come", 24) == 0)
        r = FAIL_TOO_FEW;
    else if (strncmp(what, "secure aggregation", 18) == 0)
        r = FAIL_SECAGG;
    else if (strncmp(what, "the summed statistics", 21) == 0)
        r = FAIL_STATISTICS;
    pthread_mutex_lock(&c->status->mu);
    c->status->d.attempt_failures[r]++;
    pthread_mutex_unlock(&c->status->mu);
    fed__coord_status_sites(c);
}

void fed__coord_status_round(fed_coord *c, bool checkpointed) {
    if (!c->status) return;
    const fed_coord_round_stats *s = &c->cur;
    pthread_mutex_lock(&c->status->mu);
    fed_status_data *d = &c->status->d;
    d->rounds_total++;
    d->rounds_done = c->rounds_done;
    d->model_version = c->version;
    for (size_t b = 0; b < FED_STATUS_BUCKETS; b++)
        if (s->seconds <= fed__coord_duration_bounds[b]) d->duration_buckets[b]++;
    d->duration_buckets[FED_STATUS_BUCKETS]++;
    d->duration_sum += s->seconds;
    d->fed_loss = s->fed_loss;
    d->fed_acc = s->fed_acc;
    d->central_loss = s->central_loss;
    d->central_acc = s->central_acc;
    d->epsilon = s->epsilon;
    d->last_sampled = s->sampled;
    d->last_returned = s->returned;
    d->last_rejected = s->rejected;
    if (checkpointed) d->checkpoint_time = (int64_t)time(NULL);
    fed_status_round *h = &d->history[d->history_next];
    *h = (fed_status_round){s->round,       s->fed_loss,        s->fed_acc, s->central_loss,
                            s->central_acc, s->seconds,         s->sampled, s->returned,
                            s->rejected,    (int64_t)time(NULL)};
    d->history_next = (d->history_next + 1) % FED_STATUS_HISTORY;
    if (d->nhistory < FED_STATUS_HISTORY) d->nhistory++;
    pthread_mutex_unlock(&c->status->mu);
    fed__coord_status_sites(c);
}

void fed__coord_status_step(fed_coord *c) {
    if (!c->status) return;
    fed_net_stats st;
    fed_server_stats(c->srv, &st);
    pthread_mutex_lock(&c->status->mu);
    fed_status_data *d = &c->status->d;
    d->state = c->state;
    d->paused = c->admin.paused;
    d->rounds_done = c->rounds_done;
    d->model_version = c->version;
    d->bytes_in = st.bytes_received;
    d->bytes_out = st.bytes_sent;
    if (!d->endpoint[0]) snprintf(d->endpoint, sizeof d->endpoint, "%s", fed_coord_endpoint(c));
    pthread_mutex_unlock(&c->status->mu);
}

void fed_coord_note_warning(fed_coord *c, const char *level, const char *line) {
    if (!c || !c->status) return;
    pthread_mutex_lock(&c->status->mu);
    fed_status_data *d = &c->status->d;
    fed_status_warning *w = &d->warnings[d->warnings_next];
    w->time = (int64_t)time(NULL);
    snprintf(w->level, sizeof w->level, "%s", level);
    snprintf(w->text, sizeof w->text, "%s", line);
    d->warnings_next = (d->warnings_next + 1) % FED_STATUS_WARNINGS;
    if (d->nwarnings < FED_STATUS_WARNINGS) d->nwarnings++;
    d->warnings_total++;
    pthread_mutex_unlock(&c->status->mu);
}

fed_err fed__coord_status_copy(fed_coord *c, fed_status_data **out) {
    *out = NULL;
    fed_status_data *d = fed_malloc(sizeof *d);
    if (!d) return FED_ENOMEM;
    pthread_mutex_lock(&c->status->mu);
    *d = c->status->d;
    d->sites = d->nsites ? fed_mallocarray(d->nsites, sizeof *d->sites) : NULL;
    if (d->sites) memcpy(d->sites, c->status->d.sites, d->nsites * sizeof *d->sites);
    pthread_mutex_unlock(&c->status->mu);
    if (d->nsites && !d->sites) {
        fed_free(d);
        return FED_ENOMEM;
    }
    d->capsites = d->nsites;
    *out = d;
    return FED_OK;
}

void fed__coord_status_free(fed_status_data **pd) {
    if (!pd || !*pd) return;
    fed_free((*pd)->sites);
    fed_free(*pd);
    *pd = NULL;
}

/* The JSON object; the page and the tests read the same keys. */
static void status_json(fed_sbuf *b, const fed_status_data *d) {
    int64_t now = (int64_t)time(NULL);
    size_t connected = 0;
    for (size_t i = 0; i < d->nsites; i++)
        connected += d->sites[i].state != FED_SITE_LEFT && d->sites[i].state != FED_SITE_EVICTED;
    fed__coord_sb_printf(b, "{\"state\":\"%s\",\"paused\":%s,\"endpoint\":",
                         fed_coord_state_name(d->state), d->paused ? "true" : "false");
    fed__coord_sb_json_str(b, d->endpoint);
    fed__coord_sb_printf(b,
                         ",\"time\":%lld,\"started\":%lld,\"rounds_done\":%" PRIu64
                         ",\"rounds_target\":%" PRIu64 ",\"rounds_run\":%" PRIu64
                         ",\"model_version\":%" PRIu64 ",\"attempts\":%" PRIu64,
                         (long long)now, (long long)d->started, d->rounds_done, d->rounds_target,
                         d->rounds_total, d->model_version, d->attempts_total);
    fed__coord_sb_printf(b, ",\"attempt_failures\":{");
    for (size_t r = 0; r < FAIL_N; r++)
        fed__coord_sb_printf(b, "%s\"%s\":%" PRIu64, r ? "," : "", fed__coord_fail_names[r],
                             d->attempt_failures[r]);
    fed__coord_sb_printf(b, "},\"rejections\":{");
    for (size_t r = 0; r < REJ_N; r++)
        fed__coord_sb_printf(b, "%s\"%s\":%" PRIu64, r ? "," : "", fed__coord_reject_names[r],
                             d->rejections[r]);
    fed__coord_sb_printf(b,
                         "},\"sites_connected\":%zu,\"sites_known\":%zu,\"joins\":%" PRIu64
                         ",\"sampled\":%" PRIu64 ",\"accepted\":%" PRIu64
                         ",\"site_failures\":%" PRIu64 ",\"bytes_in\":%" PRIu64
                         ",\"bytes_out\":%" PRIu64,
                         connected, d->nsites, d->joins_total, d->sampled_total, d->accepted_total,
                         d->site_failures_total, d->bytes_in, d->bytes_out);
    fed__coord_sb_printf(b, ",\"last_round\":{\"sampled\":%zu,\"returned\":%zu,\"rejected\":%zu",
                         d->last_sampled, d->last_returned, d->last_rejected);
    const char *keys[] = {"federated_loss", "federated_accuracy", "central_loss",
                          "central_accuracy", "epsilon"};
    double vals[] = {d->fed_loss, d->fed_acc, d->central_loss, d->central_acc, d->epsilon};
    for (size_t i = 0; i < 5; i++) {
        fed__coord_sb_printf(b, ",\"%s\":", keys[i]);
        fed__coord_sb_json_num(b, vals[i]);
    }
    fed__coord_sb_printf(b, "},\"checkpoint_age\":");
    fed__coord_sb_json_num(b,
                           d->checkpoint_time ? (double)(now - d->checkpoint_time) : (double)NAN);
    fed__coord_sb_printf(b, ",\"sites\":[");
    for (size_t i = 0; i < d->nsites; i++) {
        const fed_status_site *e = &d->sites[i];
        fed__coord_sb_printf(b, "%s{\"name\":", i ? "," : "");
        fed__coord_sb_json_str(b, e->name);
        fed__coord_sb_printf(b,
                             ",\"state\":\"%s\",\"last_seen\":%lld,\"rounds\":%" PRIu64
                             ",\"rejections\":%" PRIu64 "}",
                             fed__coord_site_state_name(e->state), (long long)e->last_seen,
                             e->rounds, e->rejections);
    }
    fed__coord_sb_printf(b, "],\"history\":[");
    size_t first = (d->history_next + FED_STATUS_HISTORY - d->nhistory) % FED_STATUS_HISTORY;
    for (size_t j = 0; j < d->nhistory; j++) {
        const fed_status_round *h = &d->history[(first + j) % FED_STATUS_HISTORY];
        fed__coord_sb_printf(b, "%s{\"round\":%" PRIu64 ",\"time\":%lld", j ? "," : "", h->round,
                             (long long)h->time);
        const char *hk[] = {"federated_loss", "federated_accuracy", "central_loss",
                            "central_accuracy", "seconds"};
        double hv[] = {h->fed_loss, h->fed_acc, h->central_loss, h->central_acc, h->seconds};
        for (size_t i = 0; i < 5; i++) {
            fed__coord_sb_printf(b, ",\"%s\":", hk[i]);
            fed__coord_sb_json_num(b, hv[i]);
        }
        fed__coord_sb_printf(b, ",\"sampled\":%zu,\"returned\":%zu,\"rejected\":%zu}", h->sampled,
                             h->returned, h->rejected);
    }
    fed__coord_sb_printf(b, "],\"warnings\":[");
    size_t w0 = (d->warnings_next + FED_STATUS_WARNINGS - d->nwarnings) % FED_STATUS_WARNINGS;
    for (size_t j = 0; j < d->nwarnings; j++) {
        const fed_status_warning *w = &d->warnings[(w0 + j) % FED_STATUS_WARNINGS];
        fed__coord_sb_printf(b, "%s{\"time\":%lld,\"level\":\"%s\",\"message\":", j ? "," : "",
                             (long long)w->time, w->level);
        fed__coord_sb_json_str(b, w->text);
        fed__coord_sb_printf(b, "}");
    }
    fed__coord_sb_printf(b, "]}\n");
}

fed_err fed_coord_status_json(fed_coord *c, char **out) {
    *out = NULL;
    fed_status_data *d = NULL;
    fed_err err = fed__coord_status_copy(c, &d);
    if (err) return err;
    fed_sbuf b = {.limit = (size_t)64 << 20};
    status_json(&b, d);
    fed__coord_status_free(&d);
    return fed__coord_sb_done(&b, out);
}
