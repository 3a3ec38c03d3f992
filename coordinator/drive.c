/* Driven rounds (cfg.driven, coordinator.h): a coordinator that starts a round only when
 * its caller asks (`fedtune relay`, for each round of its upstream coordinator), with the
 * caller's weights, round number, training spec and deadline, and whose round's close
 * keeps the aggregate (the example-weighted mean of the deltas, before any server step)
 * for the caller instead of applying it. What does not live here: the relay's upstream
 * side (cli/cmd_relay.c) and everything a round does between its start and its close,
 * which is the engine's as for any round. */
#include "coordinator/internal.h"

static void set_failed(fed_coord *c, const char *fmt, ...) FED_PRINTF(2, 3);
static void set_failed(fed_coord *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->drive.why, sizeof c->drive.why, fmt, ap);
    va_end(ap);
    c->drive.state = FED_DRIVE_FAILED;
}

fed_err fed_coord_drive_round(fed_coord *c, const fed_coord_drive *d) {
    if (!c->cfg.driven) return fed_errorf(FED_EINVAL, "drive: the coordinator is not driven");
    if (c->drive.state == FED_DRIVE_RUNNING || c->state != FED_COORD_WAITING)
        return fed_errorf(FED_EINVAL, "drive: round %" PRIu64 " is still running",
                          fed__coord_current_round(c));
    if (d->round < 1) return fed_errorf(FED_EINVAL, "drive: round 0");
    if (d->deadline_ms < 1)
        return fed_errorf(FED_EINVAL, "drive: deadline %" PRId64 " ms: must be >= 1",
                          d->deadline_ms);
    fed_err err = fed_train_spec_check(d->train);
    if (err) return fed_errprefix(err, "training spec");
    if (d->input_transform &&
        !(c->stats.transform && strcmp(c->stats.transform, d->input_transform) == 0) &&
        (err = fed__coord_set_transform(c, d->input_transform, "the upstream manifest")))
        return err;
    char *opt = fed_strdup(d->train->optimizer ? d->train->optimizer : "");
    if (!opt) return FED_ENOMEM;
    fed_free(c->drive.optimizer);
    c->drive.optimizer = opt;
    c->cfg.train = *d->train;
    c->cfg.train.optimizer = opt;
    c->cfg.deadline_ms = d->deadline_ms;
    for (size_t i = 0; i < c->ncl; i++) { /* no transfer may still read the old weights */
        client *k = &c->cl[i];
        if (k->sending) fed__coord_cancel(c, k->peer, k->sending);
        k->sending = 0;
    }
    memcpy(fed_model_params(c->model), d->params, fed_model_num_params(c->model) * sizeof(float));
    c->version++;
    if ((err = fed__coord_update_sha(c))) return err;
    /* The sites see the upstream round's number, as they would without the relay. */
    c->rounds_done = d->round - 1;
    c->att.n = 0;
    c->att.same_fails = 0;
    c->att.retry_at = 0;
    c->drive.until = fed_now_ms() + d->deadline_ms;
    c->drive.why[0] = '\0';
    c->drive.state = FED_DRIVE_RUNNING;
    return FED_OK;
}

fed_coord_drive_state fed_coord_drive_result(const fed_coord *c, const float **mean, size_t *n,
                                             double *weight, const char **why) {
    if (mean) *mean = c->drive.mean;
    if (n) *n = c->ntrainable;
    if (weight) *weight = c->drive.weight;
    if (why) *why = c->drive.why;
    return c->drive.state;
}

void fed_coord_drive_cancel(fed_coord *c, const char *why) {
    if (c->drive.state != FED_DRIVE_RUNNING) return;
    fed__coord_end_attempt(c);
    if (c->state != FED_COORD_DONE && c->state != FED_COORD_LINGERING) c->state = FED_COORD_WAITING;
    set_failed(c, "%s", why);
}

fed_err fed_coord_finish(fed_coord *c, const char *why) {
    if (c->state == FED_COORD_DONE) return FED_OK;
    return fed__coord_finish(c, why, true);
}

bool fed__coord_drive_may_start(fed_coord *c) {
    if (c->drive.state != FED_DRIVE_RUNNING) return false;
    size_t n = fed__coord_connected_count(c);
    if (n >= c->cfg.min_clients) return true;
    if (fed_now_ms() >= c->drive.until)
        set_failed(c, "deadline passed with %zu of min-clients %zu sites connected to the relay", n,
                   c->cfg.min_clients);
    return false;
}

fed_err fed__coord_drive_keep(fed_coord *c, const fed_round_agg *r) {
    if (!c->drive.mean && !(c->drive.mean = fed_mallocarray(c->ntrainable, sizeof(float))))
        return FED_ENOMEM;
    memcpy(c->drive.mean, r->mean, c->ntrainable * sizeof(float));
    c->drive.weight = r->weight;
    return FED_OK;
}

void fed__coord_drive_closed(fed_coord *c) {
    if (c->drive.state == FED_DRIVE_RUNNING) c->drive.state = FED_DRIVE_DONE;
}

void fed__coord_drive_failed(fed_coord *c, const char *what) {
    set_failed(c, "%s", what);
}

void fed__coord_drive_free(fed_coord *c) {
    fed_free(c->drive.mean);
    fed_free(c->drive.optimizer);
    c->drive.mean = NULL;
    c->drive.optimizer = NULL;
}
