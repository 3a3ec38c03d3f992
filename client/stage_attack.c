/* The "attack" stage: what a malicious site of `fedtune sim` does to its update (model
 * poisoning) before anything else of the pipeline sees it: a sign flip, a scaling (model
 * replacement) or Gaussian noise. Only the simulator sets fed_site_config.attack; the
 * `client` command has no option for it. Label flipping is data poisoning and lives in
 * sim/, where the malicious site's data are made. */
#include "client/site_pipeline.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/rng.h"
#include "privacy/dp.h"

#include <math.h>
#include <string.h>

typedef struct attack_stage {
    site_stage base;
    fed_site_attack a;
} attack_stage;

/* The noise's 32-byte key from the site's attack seed (the round is the stream). */
static void noise_key(uint64_t seed, uint8_t key[32]) {
    uint64_t h = fed_mix64(seed ^ 0x61747461636bull); /* "attack" */
    for (int i = 0; i < 4; i++) {
        h = fed_mix64(h + (uint64_t)i);
        for (int b = 0; b < 8; b++) key[8 * i + b] = (uint8_t)(h >> (8 * b));
    }
}

static fed_err attack_apply(site_stage *s, site_update *u) {
    const fed_site_attack *a = &((attack_stage *)s)->a;
    switch (a->kind) {
    case FED_ATTACK_SIGN_FLIP:
        for (size_t i = 0; i < u->n; i++) u->v[i] = -u->v[i];
        return FED_OK;
    case FED_ATTACK_SCALE: {
        const float k = (float)a->param;
        for (size_t i = 0; i < u->n; i++) u->v[i] *= k;
        return FED_OK;
    }
    case FED_ATTACK_NOISE: {
        uint8_t key[32];
        noise_key(a->seed, key);
        return fed_dp_add_gaussian(u->v, u->n, a->param, key, u->round);
    }
    default:
        return fed_errorf(FED_EINTERNAL, "attack: kind %d has no stage", (int)a->kind);
    }
}

static const site_stage_type attack_type = {"attack", SITE_STAGE_TRAINED, attack_apply, NULL};

fed_err site_stage_attack_new(site_stage **chain, const fed_site_attack *attack) {
    switch (attack->kind) {
    case FED_ATTACK_SIGN_FLIP:
        break;
    case FED_ATTACK_SCALE:
        if (!isfinite(attack->param) || attack->param == 0.0)
            return fed_errorf(FED_EINVAL, "attack scale: K %g must be finite and not 0",
                              attack->param);
        break;
    case FED_ATTACK_NOISE:
        if (!(isfinite(attack->param) && attack->param > 0.0))
            return fed_errorf(FED_EINVAL, "attack noise: S %g must be finite and > 0",
                              attack->param);
        break;
    default:
        return fed_errorf(FED_EINVAL, "attack: kind %d has no stage", (int)attack->kind);
    }
    attack_stage *as = fed_calloc(1, sizeof *as);
    if (!as) return FED_ENOMEM;
    as->base.type = &attack_type;
    as->a = *attack;
    site_stage_append(chain, &as->base);
    return FED_OK;
}
