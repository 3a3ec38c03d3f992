/* Differential privacy on the coordinator: the accountant's state in checkpoint
 * metadata, the Gaussian noise added to the round's aggregate (and to the adaptive
 * clipping count), and the epsilon a round would spend. The accounting maths is
 * privacy/dp.c. */
#include "coordinator/internal.h"

/* Epsilon spent at dp_delta (infinite with noise 0: clipping alone guarantees nothing). */
fed_err fed__coord_spent(const fed_coord *c, double *eps) {
    if (c->cfg.dp.noise == 0) {
        *eps = c->rounds_done > 0 ? (double)INFINITY : 0.0;
        return FED_OK;
    }
    return fed_dp_accountant_epsilon(c->dp.acc, c->cfg.dp.delta, FED_DP_IMPROVED, eps, NULL);
}

/* The accountant's state as checkpoint metadata: steps and the RDP vector (%.17g, so the
 * doubles come back exactly). */
fed_err fed__coord_accountant_meta(const fed_dp_accountant *acc, double clip_now, fed_meta *meta) {
    size_t n;
    const double *rdp = fed_dp_accountant_rdp(acc, &n);
    char *buf = fed_malloc(n * 26 + 1), num[32];
    if (!buf) return FED_ENOMEM;
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, 27, "%s%.17g", i ? "," : "", rdp[i]);
    snprintf(num, sizeof num, "%" PRIu64, fed_dp_accountant_steps(acc));
    fed_err err = fed_meta_set(meta, META_DP_STEPS, num);
    if (!err) err = fed_meta_set(meta, META_DP_RDP, buf);
    snprintf(num, sizeof num, "%.17g", clip_now);
    if (!err) err = fed_meta_set(meta, META_DP_CLIP, num);
    fed_free(buf);
    return err;
}

/* Loads the accountant from a checkpoint's metadata. A checkpoint without it was written
 * by a run without DP: its rounds carry no guarantee, so a DP run cannot continue it. */
fed_err fed__coord_restore_accountant(fed_dp_accountant *acc, const fed_meta *meta,
                                      uint64_t round) {
    const char *steps = meta ? fed_meta_get(meta, META_DP_STEPS) : NULL;
    const char *list = meta ? fed_meta_get(meta, META_DP_RDP) : NULL;
    if (!steps || !list)
        return fed_errorf(FED_EINVAL,
                          "checkpoint of round %" PRIu64 " was written without dp-clip: its "
                          "rounds have no privacy guarantee (use another checkpoint-dir)",
                          round);
    size_t n = fed_dp_num_orders(), k = 0;
    double *rdp = fed_mallocarray(n, sizeof *rdp);
    if (!rdp) return FED_ENOMEM;
    char *end;
    errno = 0;
    unsigned long long st = strtoull(steps, &end, 10);
    fed_err err = errno || *end ? FED_EFORMAT : FED_OK;
    for (const char *p = list; !err && *p && k < n; k++) {
        rdp[k] = strtod(p, &end);
        if (end == p || (*end && *end != ',')) err = FED_EFORMAT;
        p = *end ? end + 1 : end;
    }
    if (!err && k != n) err = FED_EFORMAT;
    if (err)
        err = fed_errorf(err, "checkpoint of round %" PRIu64 ": %s/%s malformed", round,
                         META_DP_STEPS, META_DP_RDP);
    else
        err = fed_dp_accountant_load(acc, rdp, n, st);
    fed_free(rdp);
    return err;
}

/* Epsilon after one more round sampled from the clients connected now. */
fed_err fed__coord_next_epsilon(const fed_coord *c, double *eps) {
    size_t n = fed__coord_connected_count(c);
    size_t k = (size_t)ceil(c->cfg.fraction * (double)n - 1e-9);
    if (k < c->cfg.min_fit) k = c->cfg.min_fit;
    if (k > n) k = n;
    size_t norders;
    const double *rdp = fed_dp_accountant_rdp(c->dp.acc, &norders);
    fed_dp_accountant *tmp = NULL;
    fed_err err = fed_dp_accountant_new(&tmp);
    if (!err) err = fed_dp_accountant_load(tmp, rdp, norders, fed_dp_accountant_steps(c->dp.acc));
    if (!err)
        err = fed_dp_accountant_step(tmp, (double)k / (double)(n ? n : 1), c->cfg.dp.noise, 1);
    if (!err) err = fed_dp_accountant_epsilon(tmp, c->cfg.dp.delta, FED_DP_IMPROVED, eps, NULL);
    fed_dp_accountant_destroy(&tmp);
    return err;
}
