/* The "mean" stage: decodes a round's plain updates. They were verified (finite, layout,
 * norm bound) and folded one by one into the streaming aggregator as they arrived
 * (coordinator/aggregate.h); at the close the aggregate is its weighted mean. */
#include "coordinator/internal.h"

typedef struct mean_stage {
    fed_stage base;
    fed_agg *agg; /* borrowed */
} mean_stage;

static fed_err mean_close(fed_stage *s, fed_round_agg *r) {
    mean_stage *m = (mean_stage *)s;
    fed_err err = fed_agg_result_mut(m->agg, &r->mean);
    if (err) return err;
    fed_agg_stats as = fed_agg_get_stats(m->agg);
    r->accepted = as.accepted;
    r->weight = as.weight;
    r->clipped = as.clipped;
    return FED_OK;
}

static const fed_stage_type mean_type = {.name = "mean", .close = mean_close, .destroy = NULL};

fed_err fed_stage_mean_new(fed_stage **chain, fed_agg *agg) {
    mean_stage *m = fed_calloc(1, sizeof *m);
    if (!m) return FED_ENOMEM;
    m->base.type = &mean_type;
    m->agg = agg;
    fed_stage_append(chain, &m->base);
    return FED_OK;
}

/* Plain rounds decode with it; secure aggregation with secagg-mean. */
fed_err fed__coord_stage_mean(fed_stage **chain, fed_coord *c) {
    return c->cfg.secagg.on ? FED_OK : fed_stage_mean_new(chain, c->agg);
}
