/* The "dp" stage: central differential privacy on a round's aggregate (McMahan et al.
 * 2018, DP-FedAvg; Andrew et al. 2021 for the adaptive bound). The clipping itself
 * happens per update in the aggregator (fed_agg_set_clip); here the mean of m clipped
 * updates gets Gaussian noise of std z clip / m, the adaptive bound moves towards the
 * target quantile of update norms from a noised count of unclipped updates, and the
 * accountant takes one step. With secure aggregation the sites added the noise: the
 * stage only accounts. The accounting maths is privacy/dp.c. */
#include "coordinator/internal.h"

typedef struct dp_stage {
    fed_stage base;
    fed_coord_dp_config cfg; /* clip: the bound of round 1; *clip_now: of this round */
    bool sites_add_noise;    /* secagg: the sites noised their updates; only account */
    fed_dp_accountant *acc;  /* borrowed */
    double *clip_now;        /* borrowed: the bound of the next round */
    fed_agg *agg;            /* borrowed: clips with *clip_now */
} dp_stage;

/* Gaussian noise of std `std` on v[0..n); what (0: the update, 1: the count) picks an
 * independent stream of the round when the noise is seeded. */
static fed_err add_noise(const dp_stage *d, uint64_t round, float *v, size_t n, double std,
                         uint64_t what) {
    uint8_t key[FED_SA_KEY_LEN];
    fed_err err = FED_OK;
    if (d->cfg.noise_seed) {
        uint64_t w[3] = {d->cfg.noise_seed, round, what};
        fed_sha256(w, what ? sizeof w : 2 * sizeof w[0], key); /* what 0: as before */
    } else if ((err = fed_sa_random_bytes(key, sizeof key))) {
        return err;
    }
    err = fed_dp_add_gaussian(v, n, std, key, round);
    fed_sa_wipe(key, sizeof key);
    return err;
}

/* Adaptive clipping spends part of the budget on the count: z_update such that
 * 1 / z^2 = 1 / z_update^2 + 1 / (2 count_std)^2 (Andrew et al., Theorem 1). */
static void split_noise(const dp_stage *d, size_t sampled, double *count_std, double *z_update) {
    double z = d->cfg.noise, sb = d->cfg.count_noise;
    if (sb == 0 && z > 0) sb = fmax((double)sampled / 20.0, z);
    *count_std = sb;
    *z_update = z > 0 ? 1.0 / sqrt(1.0 / (z * z) - 1.0 / (4.0 * sb * sb)) : 0.0;
}

/* Noise on the mean and the next round's bound. */
static fed_err perturb(dp_stage *d, fed_round_agg *r) {
    double m = (double)r->accepted, z_update = d->cfg.noise, count_std = 0;
    bool adaptive = d->cfg.target_quantile > 0;
    if (adaptive) split_noise(d, r->sampled, &count_std, &z_update);
    fed_err err = add_noise(d, r->round, r->mean, r->n, z_update * *d->clip_now / m, 0);
    if (err || !adaptive) return err;
    float count = (float)(m - (double)r->clipped);
    if ((err = add_noise(d, r->round, &count, 1, count_std, 1))) return err;
    double next = 0;
    if ((err = fed_dp_adaptive_clip_update(*d->clip_now, (double)count / m, d->cfg.target_quantile,
                                           d->cfg.clip_lr, &next)))
        return err;
    *d->clip_now = next;
    fed_agg_set_clip(d->agg, next);
    return FED_OK;
}

static fed_err dp_close(fed_stage *s, fed_round_agg *r) {
    dp_stage *d = (dp_stage *)s;
    r->clip = *d->clip_now;
    fed_err err = d->sites_add_noise ? FED_OK : perturb(d, r);
    if (err) return err;
    double q = (double)r->sampled / (double)(r->population ? r->population : 1);
    if (r->z > 0 && (err = fed_dp_accountant_step(d->acc, q, r->z, 1))) return err;
    r->epsilon = (double)INFINITY; /* clipping alone */
    if (d->cfg.noise > 0 &&
        (err = fed_dp_accountant_epsilon(d->acc, d->cfg.delta, FED_DP_IMPROVED, &r->epsilon, NULL)))
        return err;
    return FED_OK;
}

static const fed_stage_type dp_type = {.name = "dp", .close = dp_close, .destroy = NULL};

fed_err fed_stage_dp_new(fed_stage **chain, const fed_coord_dp_config *cfg, bool sites_add_noise,
                         fed_dp_accountant *acc, double *clip_now, fed_agg *agg) {
    dp_stage *d = fed_calloc(1, sizeof *d);
    if (!d) return FED_ENOMEM;
    d->base.type = &dp_type;
    d->cfg = *cfg;
    d->sites_add_noise = sites_add_noise;
    d->acc = acc;
    d->clip_now = clip_now;
    d->agg = agg;
    fed_stage_append(chain, &d->base);
    return FED_OK;
}

/* With DP (dp.clip > 0: the accountant exists). */
fed_err fed__coord_stage_dp(fed_stage **chain, fed_coord *c) {
    if (!c->dp.acc) return FED_OK;
    return fed_stage_dp_new(chain, &c->cfg.dp, c->cfg.secagg.on, c->dp.acc, &c->dp.clip_now,
                            c->agg);
}
