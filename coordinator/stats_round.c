/* The statistics round (round 0): the federation's input standardisation from the
 * sites' exact moments (dataset/moments.h), summed in the clear or through the secure sum,
 * and the transform it becomes in every manifest and in the central evaluation. */
#include "coordinator/internal.h"

/* Checks an input transform (JSON) against the model's input and makes it the one the
 * manifest carries; what (a file, "the statistics round") names it in errors. */
fed_err fed__coord_set_transform(fed_coord *c, const char *json, const char *what) {
    fed_standardizer *st = NULL;
    fed_err err = fed_std_from_json(&st, json);
    if (!err && st->dim != fed_model_input_size(c->model))
        err = fed_errorf(FED_ESHAPE, "it applies to %zu features, the model takes %zu", st->dim,
                         fed_model_input_size(c->model));
    fed_std_destroy(&st);
    if (err) return fed_errprefix(err, "%s: %s", what, META_STD);
    char *copy = fed_strdup(json);
    if (!copy) return FED_ENOMEM;
    fed_free(c->stats.transform);
    c->stats.transform = copy;
    return FED_OK;
}

/* The central evaluation set with the transform the statistics round computed (a copy:
 * eval_data is borrowed). */
fed_err fed__coord_standardize_eval(fed_coord *c) {
    fed_data_destroy(&c->stats.eval_own);
    if (!c->cfg.eval_data) return FED_OK;
    fed_standardizer *st = NULL;
    fed_err err = fed_data_clone(&c->stats.eval_own, c->cfg.eval_data);
    if (!err) err = fed_std_from_json(&st, c->stats.transform);
    if (!err) err = fed_std_apply(st, c->stats.eval_own);
    fed_std_destroy(&st);
    if (err) fed_data_destroy(&c->stats.eval_own);
    return err ? fed_errprefix(err, "central evaluation set") : FED_OK;
}

/* The statistics round: one site's moments (little-endian floats, as every upload here)
 * into the sum, once they are well-formed limbs counting what its Update claims (the
 * claim itself is bounded by its Hello and max_examples_per_site). */
fed_err fed__coord_add_moments(fed_coord *c, const client *k, const uint8_t *bytes) {
    const float *v = (const float *)(const void *)bytes; /* a malloc'd buffer: aligned */
    uint64_t count = 0;
    fed_err err = fed_mom_count(v, &count);
    if (!err && (double)count != k->weight)
        err = fed_errorf(FED_ERANGE, "moments of %" PRIu64 " examples, the update claims %.0f",
                         count, k->weight);
    return err ? err : fed_mom_sum_add(&c->stats.sum, v);
}

/* Ends the statistics round: the federation's standardizer from the summed moments
 * becomes the manifest's input transform and the central evaluation's. Moments that do
 * not make one (a site that lied inside a secure sum) fail the attempt. */
fed_coord_state fed__coord_finish_stats(fed_coord *c) {
    size_t g = c->stats.groups, dim = fed_model_input_size(c->model), sites = c->stats.sum.sites;
    double *mean = fed_mallocarray(2 * g, sizeof *mean);
    uint64_t n = 0;
    fed_standardizer *st = NULL;
    char *json = NULL;
    fed_err err = mean ? FED_OK : FED_ENOMEM;
    if (!err) err = fed_mom_sum_result(&c->stats.sum, dim, &n, mean, mean + g);
    if (!err) err = fed_std_from_moments(&st, dim, g, mean, mean + g);
    if (!err) err = fed_std_to_json(st, &json);
    fed_free(mean);
    if (err) {
        fed_std_destroy(&st);
        char what[300];
        snprintf(what, sizeof what, "the summed statistics make no standardizer: %s", fed_errmsg());
        return fed__coord_attempt_failed(c, what);
    }
    FED_LOG(FED_LOG_INFO,
            "statistics round: the federation's input standardisation from %" PRIu64
            " examples of %zu sites (%zu %s; first mean %.6g std %.6g)",
            n, sites, g, g == dim ? "features" : "channels", (double)st->mean[0],
            (double)st->std[0]);
    fed_std_destroy(&st);
    fed_free(c->stats.transform);
    c->stats.transform = json;
    c->stats.ours = true;
    fed__coord_end_attempt(c);
    c->stats.active = false;
    c->att.n = 0;
    c->att.same_fails = 0;
    c->att.retry_at = 0;
    fed_mom_sum_free(&c->stats.sum);
    if ((err = fed__coord_standardize_eval(c))) {
        snprintf(c->att.give_up, sizeof c->att.give_up, "%s", fed_errmsg());
        return FED_COORD_DONE;
    }
    return FED_COORD_WAITING;
}
