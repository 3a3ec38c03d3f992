/* The "noise" stage: the sites' share of the Gaussian mechanism under secure aggregation
 * (each of n sites adds std z S / sqrt(n), so that the sum carries z S; the coordinator
 * computes the std and sends it as RoundStart.secagg.dp_noise_std). The key is drawn
 * afresh for every update and wiped after use: nobody, the site included, can predict or
 * remove the noise. Tests fix the key to check the values. */
#include "client/site_pipeline.h"

#include "core/alloc.h"
#include "privacy/dp.h"
#include "privacy/secagg_crypto.h"

#include <string.h>

typedef struct noise_stage {
    site_stage base;
    double std;
    bool fixed;                  /* key is the caller's (tests), not drawn per update */
    uint8_t key[FED_SA_KEY_LEN]; /* when fixed */
} noise_stage;

static fed_err noise_apply(site_stage *s, site_update *u) {
    noise_stage *ns = (noise_stage *)s;
    uint8_t key[FED_SA_KEY_LEN];
    fed_err err = FED_OK;
    if (ns->fixed)
        memcpy(key, ns->key, sizeof key);
    else
        err = fed_sa_random_bytes(key, sizeof key);
    if (!err) err = fed_dp_add_gaussian(u->v, u->n, ns->std, key, u->round);
    fed_sa_wipe(key, sizeof key);
    return err;
}

static void noise_destroy(site_stage *s) {
    fed_sa_wipe(((noise_stage *)s)->key, FED_SA_KEY_LEN);
}

static const site_stage_type noise_type = {"noise", SITE_STAGE_SENT, noise_apply, noise_destroy};

fed_err site_stage_noise_new(site_stage **chain, double std, const uint8_t *key) {
    noise_stage *ns = fed_calloc(1, sizeof *ns);
    if (!ns) return FED_ENOMEM;
    ns->base.type = &noise_type;
    ns->std = std;
    ns->fixed = key != NULL;
    if (key) memcpy(ns->key, key, sizeof ns->key);
    site_stage_append(chain, &ns->base);
    return FED_OK;
}
