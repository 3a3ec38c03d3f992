/* The round's aggregate to the next global model: the mean of the accepted updates (or
 * the securely summed one), central DP noise and the adaptive clipping bound, and the
 * server strategy's step over the trainable tensors. */
#include "coordinator/internal.h"

fed_err fed__coord_aggregate(fed_coord *c) {
    /* The weights change: no transfer may still read them. */
    for (size_t i = 0; i < c->ncl; i++) {
        client *k = &c->cl[i];
        if (k->sending) fed__coord_cancel(c, k->peer, k->sending);
        k->sending = 0;
        if (k->status == ST_PENDING || k->status == ST_RECEIVING || k->status == ST_WAITING) {
            fed__coord_drop_update(c, k);
            k->status = ST_IDLE; /* late: its update will find the round closed */
        }
    }
    float *mean = NULL;
    fed_err err = FED_OK;
    fed_agg_stats as;
    double z = c->cfg.dp_noise;
    if (c->cfg.secagg) { /* the decoded sum of the survivors: their mean, unweighted */
        memset(&as, 0, sizeof as);
        as.accepted = c->sec.survivors;
        as.weight = (double)c->sec.survivors;
        mean = c->sec.sum;
        for (size_t i = 0; i < c->ntrainable; i++) mean[i] /= (float)c->sec.survivors;
        /* Each of the n participants added noise of std z S / sqrt(n): the m summed carry
         * z S sqrt(m / n), a multiplier of z sqrt(m / n) for the sum's sensitivity S. */
        z *= sqrt((double)c->sec.survivors / (double)c->sec.params.n);
        fed_sa_server_destroy(&c->sec.sa);
    } else {
        if ((err = fed_agg_result_mut(c->agg, &mean))) return err;
        as = fed_agg_get_stats(c->agg);
    }
    c->cur.clipped = as.clipped;
    c->cur.clip = c->cfg.dp_clip > 0 ? c->dp.clip_now : 0.0;
    c->cur.epsilon = (double)NAN;
    if (c->dp.acc && !c->cfg.secagg) {
        double m = (double)as.accepted, z_update = c->cfg.dp_noise, count_std = 0;
        if (c->cfg.dp_target_quantile > 0) fed__coord_split_noise(c, &count_std, &z_update);
        if ((err = fed__coord_add_noise(c, mean, c->ntrainable, z_update * c->dp.clip_now / m, 0)))
            return err;
        if (c->cfg.dp_target_quantile > 0) { /* the next round's bound */
            float count = (float)(m - (double)as.clipped);
            if ((err = fed__coord_add_noise(c, &count, 1, count_std, 1))) return err;
            double next = 0;
            if ((err = fed_dp_adaptive_clip_update(c->dp.clip_now, (double)count / m,
                                                   c->cfg.dp_target_quantile, c->cfg.dp_clip_lr,
                                                   &next)))
                return err;
            c->dp.clip_now = next;
            fed_agg_set_clip(c->agg, next);
        }
    }
    if (c->dp.acc) {
        double q = (double)c->cur.sampled / (double)(c->att.population ? c->att.population : 1);
        if (z > 0 && (err = fed_dp_accountant_step(c->dp.acc, q, z, 1))) return err;
        c->cur.epsilon = (double)INFINITY; /* clipping alone */
        if (c->cfg.dp_noise > 0 &&
            (err = fed_dp_accountant_epsilon(c->dp.acc, c->cfg.dp_delta, FED_DP_IMPROVED,
                                             &c->cur.epsilon, NULL)))
            return err;
    }
    float *w = fed_model_params(c->model);
    size_t off = 0;
    for (size_t i = 0; i < c->ntensors; i++) {
        const fed_tensor *t = fed_model_tensor(c->model, i);
        if (!t->trainable) continue;
        fed_strategy_apply(c->strat, off, t->numel, w + t->offset, mean + off);
        off += t->numel;
    }
    fed_strategy_end_round(c->strat);
    c->version++;
    fed__coord_update_sha(c);
    c->cur.examples = as.weight;
    return FED_OK;
}
