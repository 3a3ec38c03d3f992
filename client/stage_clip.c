/* The "clip" stage: the sites' differential privacy under secure aggregation (the
 * coordinator sees only the sum, so each site bounds its own contribution): the update
 * is scaled to an L2 norm of at most RoundStart.secagg.dp_clip (fed_dp_clip, privacy/dp.h).
 * Runs when the update is sent, after the audit copy of the delta. */
#include "client/site_pipeline.h"

#include "core/alloc.h"
#include "privacy/dp.h"

typedef struct clip_stage {
    site_stage base;
    double bound;
} clip_stage;

static fed_err clip_apply(site_stage *s, site_update *u) {
    return fed_dp_clip(u->v, u->n, ((clip_stage *)s)->bound, NULL, NULL);
}

static const site_stage_type clip_type = {"clip", SITE_STAGE_SENT, clip_apply, NULL};

fed_err site_stage_clip_new(site_stage **chain, double bound) {
    clip_stage *c = fed_calloc(1, sizeof *c);
    if (!c) return FED_ENOMEM;
    c->base.type = &clip_type;
    c->bound = bound;
    site_stage_append(chain, &c->base);
    return FED_OK;
}
