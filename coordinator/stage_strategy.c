/* The "strategy" stage: the server optimizer (FedAvg, FedAvgM, FedAdam, FedYogi;
 * coordinator/aggregate.h) turns the round's aggregate into the next global weights, tensor by
 * trainable tensor; frozen tensors are not in the aggregate and do not move. */
#include "coordinator/internal.h"

typedef struct strategy_stage {
    fed_stage base;
    fed_model *model;       /* borrowed */
    fed_strategy *strategy; /* borrowed */
} strategy_stage;

static fed_err strategy_close(fed_stage *s, fed_round_agg *r) {
    strategy_stage *g = (strategy_stage *)s;
    if (r->n != fed_model_num_trainable(g->model))
        return fed_errorf(FED_EINVAL, "strategy: an aggregate of %zu values for %zu trainable",
                          r->n, fed_model_num_trainable(g->model));
    fed_strategy_apply_model(g->strategy, g->model, r->mean);
    fed_strategy_end_round(g->strategy);
    return FED_OK;
}

static const fed_stage_type strategy_type = {
    .name = "strategy", .close = strategy_close, .destroy = NULL};

fed_err fed_stage_strategy_new(fed_stage **chain, fed_model *model, fed_strategy *strategy) {
    strategy_stage *g = fed_calloc(1, sizeof *g);
    if (!g) return FED_ENOMEM;
    g->base.type = &strategy_type;
    g->model = model;
    g->strategy = strategy;
    fed_stage_append(chain, &g->base);
    return FED_OK;
}

/* Always but in driven rounds (their caller steps): the last stage. */
fed_err fed__coord_stage_strategy(fed_stage **chain, fed_coord *c) {
    if (c->cfg.driven) return FED_OK;
    return fed_stage_strategy_new(chain, c->model, c->strat);
}
