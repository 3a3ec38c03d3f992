/* The site's update pipeline (site_pipeline.h): the chain operations and which stages a
 * round's RoundStart puts in its chain. */
#include "client/site_pipeline.h"

#include "core/alloc.h"
#include "core/chain.h"

#include <stdio.h>

FED_CHAIN_FUNCTIONS(site_stage)

fed_err site_stage_run(const site_stage *chain, site_stage_when when, site_update *u) {
    for (const site_stage *s = chain; s; s = s->next) {
        if (s->type->when != when || !s->type->apply) continue;
        fed_err err = s->type->apply((site_stage *)(uintptr_t)s, u);
        if (err) return err;
    }
    return FED_OK;
}

/* The attack (a simulated malicious site only) comes right after the delta, before any
 * clipping: what a malicious site sends is its own choice. The sites' differential privacy and the
 * masking come with secure aggregation only: a plainly aggregated round is clipped and noised by
 * the coordinator. */
/* Compression only when the site can and the round asks for a codec it knows; a name it
 * does not know (a newer coordinator's) gets the plain delta, which is always accepted. */
static bool wants_codec(const fed_msg_round_start *rs, const site_compress *cz, fed_codec *c) {
    if (!cz || !cz->able || rs->stats || rs->has_secagg || !rs->compress || !*rs->compress)
        return false;
    if (fed_codec_parse(c, rs->compress) != FED_OK) {
        fed_errclear();
        return false;
    }
    return fed_codec_on(c) != 0;
}

fed_err site_pipe_build(site_stage **chain, const fed_msg_round_start *rs, struct site_secagg *sa,
                        const fed_site_attack *attack, const site_compress *cz, bool delegated) {
    const bool sec = rs->has_secagg;
    fed_err err = FED_OK;
    if (!rs->stats && !delegated) err = site_stage_delta_new(chain);
    if (!err && !rs->stats && attack && attack->kind != FED_ATTACK_NONE &&
        attack->kind != FED_ATTACK_LABEL_FLIP && attack->kind != FED_ATTACK_BACKDOOR)
        err = site_stage_attack_new(chain, attack);
    if (!err && sec && rs->secagg.dp_clip > 0) err = site_stage_clip_new(chain, rs->secagg.dp_clip);
    if (!err && sec && rs->secagg.dp_noise_std > 0)
        err = site_stage_noise_new(chain, rs->secagg.dp_noise_std, NULL);
    fed_codec codec;
    if (!err && wants_codec(rs, cz, &codec)) err = site_stage_compress_new(chain, &codec, cz);
    if (!err && sec) err = site_stage_mask_new(chain, sa, NULL);
    if (err) site_stage_destroy_all(chain);
    return err;
}
