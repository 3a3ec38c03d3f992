/* The update pipeline's chain (pipeline.h): which stages a federation's configuration
 * puts in it, the chain operations, and the round's close that runs it: the collection
 * ends (late uploads dropped, transfers of the old weights cancelled), the aggregate
 * goes through the stages, and the new global model gets its version and digest. */
#include "coordinator/internal.h"
#include "core/chain.h"

FED_CHAIN_FUNCTIONS(fed_stage)

fed_err fed_stage_close_round(fed_stage *chain, fed_round_agg *r) {
    for (fed_stage *s = chain; s; s = s->next) {
        if (!s->type->close) continue;
        fed_err err = s->type->close(s, r);
        if (err) return err;
    }
    return FED_OK;
}

fed_err fed_stage_update_all(void *chain, const float *d, size_t n, double w, double norm) {
    for (fed_stage *s = chain; s; s = s->next) {
        if (!s->type->update) continue;
        fed_err err = s->type->update(s, d, n, w, norm);
        if (err) return err;
    }
    return FED_OK;
}

void fed_stage_begin_all(fed_stage *chain) {
    for (fed_stage *s = chain; s; s = s->next)
        if (s->type->begin) s->type->begin(s);
}

bool fed_stage_wants_updates(const fed_stage *chain) {
    for (const fed_stage *s = chain; s; s = s->next)
        if (s->type->update) return true;
    return false;
}

/* The chain for c's configuration: every stage of FED_COORD_STAGES (internal.h) that
 * the configuration wants, in that order. */
fed_err fed__coord_pipeline_build(fed_coord *c) {
    fed_err err = FED_OK;
#define APPEND(name)                                                                               \
    if (!err) err = fed__coord_stage_##name(&c->pipe, c);
    FED_COORD_STAGES(APPEND)
#undef APPEND
    if (!err && fed_stage_wants_updates(c->pipe)) /* the chain is whole: its head stays */
        fed_agg_set_observer(c->agg, fed_stage_update_all, c->pipe);
    if (!err) {
        char d[256];
        fed_stage_describe(c->pipe, d, sizeof d);
        FED_LOG(FED_LOG_DEBUG, "update pipeline: %s", d);
    }
    return err;
}

fed_err fed__coord_aggregate(fed_coord *c) {
    /* The weights change: no transfer may still read them. */
    for (size_t i = 0; i < c->ncl; i++) {
        client *k = &c->cl[i];
        if (k->sending) fed__coord_cancel(c, k->peer, k->sending);
        k->sending = 0;
        if (k->status == ST_PENDING || k->status == ST_RECEIVING || k->status == ST_WAITING) {
            fed__coord_drop_update(c, k);
            k->status = ST_IDLE; /* late: its update will find the round closed */
        }
    }
    fed_round_agg r = {.round = fed__coord_current_round(c),
                       .n = c->ntrainable,
                       .sampled = c->cur.sampled,
                       .population = c->att.population,
                       .z = c->cfg.dp.noise,
                       .epsilon = (double)NAN};
    fed_err err = fed_stage_close_round(c->pipe, &r);
    if (!err && c->cfg.driven) err = fed__coord_drive_keep(c, &r); /* no strategy stage */
    if (err) return err;
    c->cur.clipped = r.clipped;
    c->cur.clip = r.clip;
    c->cur.epsilon = r.epsilon;
    c->cur.examples = r.weight;
    if (c->cfg.driven) return FED_OK; /* the model did not change: its caller steps */
    c->version++;
    return fed__coord_update_sha(c);
}
