/* The "mask" stage: secure aggregation's encoding of the update (privacy/secagg.h phase
 * 3): clipped to the protocol's range, quantized and masked with the pairwise and self
 * masks agreed with the neighbours, whose shares came in the DELIVERY message. The
 * result is the MASKED message, the round's Update; the update itself is wiped. Runs
 * when the update is sent (the I/O thread, once the DELIVERY is here). */
#include "client/site_internal.h"
#include "client/site_pipeline.h"

#include "core/alloc.h"
#include "privacy/secagg_crypto.h"

#include <string.h>

typedef struct mask_stage {
    site_stage base;
    site_secagg *sa; /* borrowed: the round's client and DELIVERY, read when run */
    bool fixed;      /* tests: the rounding coins are fixed */
    uint8_t key[32]; /* when fixed */
} mask_stage;

static fed_err mask_apply(site_stage *s, site_update *u) {
    mask_stage *m = (mask_stage *)s;
    uint8_t *out = NULL;
    size_t len = 0;
    fed_err err = fed_sa_client_mask(m->sa->client, m->sa->delivery, m->sa->delivery_len, u->v,
                                     u->n, m->fixed ? m->key : NULL, &out, &len);
    fed_sa_wipe(u->v, u->n * sizeof(float)); /* only the masked form stays */
    if (err) return err;
    fed_free(u->wire);
    u->wire = out;
    u->wire_len = len;
    return FED_OK;
}

static const site_stage_type mask_type = {"mask", SITE_STAGE_SENT, mask_apply, NULL};

fed_err site_stage_mask_new(site_stage **chain, site_secagg *sa, const uint8_t *rounding_key) {
    mask_stage *m = fed_calloc(1, sizeof *m);
    if (!m) return FED_ENOMEM;
    m->base.type = &mask_type;
    m->sa = sa;
    m->fixed = rounding_key != NULL;
    if (rounding_key) memcpy(m->key, rounding_key, sizeof m->key);
    site_stage_append(chain, &m->base);
    return FED_OK;
}
