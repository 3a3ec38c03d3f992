/* The "secagg-mean" stage: decodes a securely aggregated round. The masked uploads were
 * summed on arrival and the unmask phase left the survivors' exact sum in the
 * coordinator's secure-aggregation state (secagg_round.c); the aggregate is their
 * unweighted mean, and the DP noise the sites added shrinks with the survivors. */
#include "coordinator/internal.h"

typedef struct secagg_stage {
    fed_stage base;
    struct coord_sec *sec; /* borrowed */
} secagg_stage;

static fed_err secagg_close(fed_stage *s, fed_round_agg *r) {
    struct coord_sec *sec = ((secagg_stage *)s)->sec;
    r->mean = sec->sum;
    r->accepted = sec->survivors;
    r->weight = (double)sec->survivors;
    r->clipped = 0; /* the sites clip: the coordinator cannot count */
    for (size_t i = 0; i < r->n; i++) r->mean[i] /= (float)sec->survivors;
    /* Each of the n participants added noise of std z S / sqrt(n): the m summed carry
     * z S sqrt(m / n), a multiplier of z sqrt(m / n) for the sum's sensitivity S. */
    r->z *= sqrt((double)sec->survivors / (double)sec->params.n);
    fed_sa_server_destroy(&sec->sa);
    return FED_OK;
}

static const fed_stage_type secagg_type = {
    .name = "secagg-mean", .close = secagg_close, .destroy = NULL};

fed_err fed_stage_secagg_new(fed_stage **chain, struct coord_sec *sec) {
    secagg_stage *m = fed_calloc(1, sizeof *m);
    if (!m) return FED_ENOMEM;
    m->base.type = &secagg_type;
    m->sec = sec;
    fed_stage_append(chain, &m->base);
    return FED_OK;
}

fed_err fed__coord_stage_secagg(fed_stage **chain, fed_coord *c) {
    return c->cfg.secagg.on ? fed_stage_secagg_new(chain, &c->sec) : FED_OK;
}
