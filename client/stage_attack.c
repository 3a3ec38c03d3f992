/* The "attack" stage: what a malicious site of `fedtune sim` does to its update (model
 * poisoning) before anything else of the pipeline sees it: a sign flip, a scaling (model
 * replacement), Gaussian noise, or LIE ("a little is enough", Baruch et al. 2019: mu - Z
 * sigma of the honest updates, which this attacker estimates from its own data alone: the
 * sites train in parallel and do not collude, so it trains FED_SITE_LIE_K times from the
 * global model on bootstrap resamples of its share, u->retrain). Only the simulator sets
 * fed_site_config.attack; the `client` command has no option for it. Label flipping is data
 * poisoning and lives in sim/, where the malicious site's data are made. */
#include "client/site_pipeline.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/rng.h"
#include "privacy/dp.h"

#include <math.h>
#include <stdint.h>
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

/* Phi^-1(p) by bisection of Phi(x) = erfc(-x / sqrt 2) / 2 down to the doubles' spacing:
 * slow but exact enough and the same on every machine with a correct erfc. */
static double probit(double p) {
    double lo = -40, hi = 40;
    for (int i = 0; i < 200; i++) {
        double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) break;
        if (0.5 * erfc(-mid / sqrt(2.0)) < p)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

double fed_site_lie_z(size_t n, size_t f) {
    double s = floor((double)n / 2.0 + 1.0) - (double)f;
    double p = ((double)n - s) / (double)n;
    return n > 0 && p > 0 && p < 1 ? probit(p) : (double)NAN;
}

void site_lie_combine(float *out, const float *d, size_t k, size_t n, double z) {
    for (size_t j = 0; j < n; j++) {
        double mu = 0, ss = 0;
        for (size_t i = 0; i < k; i++) mu += (double)d[i * n + j];
        mu /= (double)k;
        for (size_t i = 0; i < k; i++) {
            double e = (double)d[i * n + j] - mu;
            ss += e * e;
        }
        out[j] = (float)(mu - z * sqrt(ss / (double)(k - 1)));
    }
}

/* LIE: FED_SITE_LIE_K deltas trained on resamples, then mu - Z sigma into u->v. */
static fed_err lie_apply(double z, site_update *u) {
    if (!u->retrain) return fed_errorf(FED_EINTERNAL, "attack lie: no way to train again");
    const size_t k = FED_SITE_LIE_K;
    if (u->n > SIZE_MAX / k) return FED_ENOMEM;
    float *d = fed_mallocarray(k * u->n, sizeof *d);
    if (!d) return FED_ENOMEM;
    fed_err err = FED_OK;
    for (size_t i = 0; i < k && !err; i++) err = u->retrain(u->retrain_user, i, d + i * u->n);
    if (!err) site_lie_combine(u->v, d, k, u->n, z);
    fed_free(d);
    return err;
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
    case FED_ATTACK_LIE:
        return lie_apply(a->param, u);
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
    case FED_ATTACK_LIE:
        if (!(isfinite(attack->param) && attack->param >= 0.0))
            return fed_errorf(FED_EINVAL, "attack lie: Z %g must be finite and >= 0",
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
