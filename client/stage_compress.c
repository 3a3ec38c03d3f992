/* The "compress" stage: the update in the uplink codec RoundStart.compress asks for
 * (core/codec.h), with error feedback: what the codec dropped or rounded away last time
 * (the residual e, kept by the site across rounds) is added to the delta before it is
 * encoded, and e becomes what this encoding drops, v + e - sent. Over rounds the sum of
 * what was sent plus the residual equals the sum of the deltas, so top-k loses nothing
 * for good, only late. Runs when the update is sent, after the audit copy of the delta;
 * never with secure aggregation (the coordinator refuses --compress with --secagg). The
 * stochastic rounding's coins come from the site's seed and the round. */
#include "client/site_pipeline.h"

#include "core/alloc.h"
#include "core/rng.h"

#include <string.h>

typedef struct compress_stage {
    site_stage base;
    fed_codec codec;
    site_compress cz; /* the site's seed and residual (borrowed) */
} compress_stage;

/* The Update.encoding of codec c. */
static fed_encoding encoding_of(const fed_codec *c) {
    return (fed_encoding)(FED_ENCODING_DELTA_FP16 + (int)c->id - FED_CODEC_F16);
}

static fed_err compress_apply(site_stage *s, site_update *u) {
    compress_stage *cs = (compress_stage *)s;
    float **e = cs->cz.resid;
    if (*cs->cz.resid_n != u->n) { /* a new model layout: no residual to carry */
        fed_free(*e);
        *cs->cz.resid_n = 0;
        if (!(*e = fed_calloc(u->n ? u->n : 1, sizeof **e))) return FED_ENOMEM;
        *cs->cz.resid_n = u->n;
    }
    size_t len = fed_codec_size(&cs->codec, u->n);
    uint8_t *wire = fed_malloc(len ? len : 1);
    if (!wire) return FED_ENOMEM;
    for (size_t i = 0; i < u->n; i++) u->v[i] += (*e)[i];
    uint64_t seed = fed_mix64(cs->cz.seed ^ fed_mix64(u->round));
    fed_err err = fed_codec_encode(&cs->codec, u->v, u->n, seed, wire, len, *e);
    if (err) { /* nothing was sent: all of v + e is still to send */
        memcpy(*e, u->v, u->n * sizeof **e);
        fed_free(wire);
        return err;
    }
    for (size_t i = 0; i < u->n; i++) (*e)[i] = u->v[i] - (*e)[i]; /* what was not sent */
    u->wire = wire;
    u->wire_len = len;
    u->wire_enc = encoding_of(&cs->codec);
    return FED_OK;
}

static const site_stage_type compress_type = {"compress", SITE_STAGE_SENT, compress_apply, NULL};

fed_err site_stage_compress_new(site_stage **chain, const fed_codec *codec,
                                const site_compress *cz) {
    compress_stage *cs = fed_calloc(1, sizeof *cs);
    if (!cs) return FED_ENOMEM;
    cs->base.type = &compress_type;
    cs->codec = *codec;
    cs->cz = *cz;
    site_stage_append(chain, &cs->base);
    return FED_OK;
}
