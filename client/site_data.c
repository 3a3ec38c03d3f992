/* The site's local data (client/site_internal.h): loading (or copying) the examples,
 * the seeded train/test split, the standardizer fitted on the local training split, the
 * model's own input transform once a manifest brings one, and the statistics round's
 * input: the moments of the raw training split in the groups of the model's input. What
 * deliberately does not live here: the messages of the statistics round (site_round.c)
 * and training (site_train.c). Nothing here ever leaves the process but those moments;
 * log lines carry counts only. */
#include "client/site_internal.h"

#include "core/alloc.h"
#include "core/arch.h"
#include "core/log.h"
#include "dataset/moments.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* When the model brings its input standardisation (manifest.input_transform), every
 * site applies that one transform to its raw data instead of a locally fitted one, so
 * all sites and the coordinator's evaluation see one input scale. */
fed_err site_use_transform(fed_site *s, const char *json) {
    if (!json || !json[0] || (s->data.transform && strcmp(s->data.transform, json) == 0))
        return FED_OK;
    fed_standardizer *st = NULL;
    fed_dataset *tr = NULL, *te = NULL;
    char *copy = NULL;
    fed_err err = fed_std_from_json(&st, json);
    if (err) return fed_errprefix(err, "manifest.input_transform");
    const fed_dataset *rtr = s->data.train_raw ? s->data.train_raw : s->data.train;
    const fed_dataset *rte = s->data.train_raw ? s->data.test_raw : s->data.test;
    if ((err = fed_data_clone(&tr, rtr))) goto done;
    if (rte && (err = fed_data_clone(&te, rte))) goto done;
    if ((err = fed_std_apply(st, tr)) || (te && (err = fed_std_apply(st, te)))) {
        err = fed_errprefix(err, "manifest.input_transform");
        goto done;
    }
    if (!(copy = fed_strdup(json))) {
        err = FED_ENOMEM;
        goto done;
    }
    if (!s->data.train_raw) { /* the raw data move aside instead of being copied at start */
        s->data.train_raw = s->data.train;
        s->data.test_raw = s->data.test;
        s->data.train = s->data.test = NULL;
    }
    fed_data_destroy(&s->data.train);
    fed_data_destroy(&s->data.test);
    s->data.train = tr;
    s->data.test = te;
    tr = te = NULL;
    fed_free(s->data.transform);
    s->data.transform = copy;
    FED_LOG(s->cfg.info, "site: using the model's input standardisation (%zu features)", st->dim);
done:
    fed_data_destroy(&tr);
    fed_data_destroy(&te);
    fed_std_destroy(&st);
    return err;
}

/* Loads (or copies), splits and standardises the site's data. */
fed_err site_prepare_data(fed_site *s, const fed_site_config *c) {
    fed_dataset *all = NULL;
    fed_standardizer *st = NULL;
    size_t *idx = NULL;
    fed_err err;
    if (c->data) {
        err = fed_data_load(&all, c->data, &c->data_opts);
    } else {
        size_t n = c->dataset->n;
        idx = fed_mallocarray(n ? n : 1, sizeof *idx);
        if (!idx) return FED_ENOMEM;
        for (size_t i = 0; i < n; i++) idx[i] = i;
        err = fed_data_subset(&all, c->dataset, idx, n);
    }
    if (err) goto done;
    if (c->dataset && c->testset) { /* the caller's own evaluation set: no split */
        if (c->testset->dim != all->dim) {
            err = fed_errorf(FED_EINVAL, "test data: %zu features, the training data %zu",
                             c->testset->dim, all->dim);
            goto done;
        }
        err = fed_data_clone(&s->data.train, all);
        if (!err) err = fed_data_clone(&s->data.test, c->testset);
    } else {
        err = fed_data_split(all, 0.0, c->test_split, c->seed, &s->data.train, NULL,
                             c->test_split > 0.0 ? &s->data.test : NULL);
    }
    if (err) goto done;
    if (s->data.train->n == 0) {
        err = fed_errorf(FED_EINVAL, "%s: no training example left after the test split",
                         c->data ? c->data : "data");
        goto done;
    }
    if (c->standardize) {
        if ((err = fed_data_clone(&s->data.train_raw, s->data.train))) goto done;
        if (s->data.test && (err = fed_data_clone(&s->data.test_raw, s->data.test))) goto done;
        if ((err = fed_std_fit(&st, s->data.train))) goto done;
        if ((err = fed_std_apply(st, s->data.train))) goto done;
        if (s->data.test && (err = fed_std_apply(st, s->data.test))) goto done;
        FED_LOG(s->cfg.info,
                "site: standardised %zu features (%s mean/std fitted on the %zu local training "
                "examples)",
                st->dim, st->len == st->dim ? "per-feature" : "per-channel", s->data.train->n);
    }
    s->stats.train_examples = s->data.train->n;
    s->stats.eval_examples = s->data.test ? s->data.test->n : 0;
    s->stats.features = s->data.train->dim;
    s->stats.classes = all->num_classes;
    FED_LOG(s->cfg.info,
            "site: %s: %zu training + %zu test examples, %zu features, %zu classes (split seed "
            "%" PRIu64 ")",
            c->data ? c->data : "data in memory", s->stats.train_examples, s->stats.eval_examples,
            s->stats.features, s->stats.classes, c->seed);
done:
    fed_std_destroy(&st);
    fed_free(idx);
    fed_data_destroy(&all);
    return err;
}

/* The input groups, inputs and outputs of the manifest's architecture: what the
 * statistics round's moments are taken over (one group per channel of an image input,
 * else per feature, as fed_std_fit does). */
static fed_err manifest_groups(const fed_msg_manifest *mf, size_t *groups, size_t *inputs,
                               size_t *outputs) {
    fed_arch *a = NULL;
    if (fed_arch_parse(&a, mf->arch) != FED_OK) return fed_errprefix(FED_EFORMAT, "manifest.arch");
    fed_shape in = fed_arch_input_shape(a), out = fed_arch_shape_at(a, fed_arch_num_layers(a));
    *inputs = fed_shape_numel(&in);
    *outputs = fed_shape_numel(&out);
    *groups = fed_std_groups(&in, *inputs);
    fed_arch_destroy(&a);
    return FED_OK;
}

/* The statistics round's update (RoundStart.stats): the exact moments of the raw
 * training split in the groups of the model's input (dataset/moments.h) into s->res.delta,
 * with the round's example count. On error *local says whether the local data are at
 * fault (false: the manifest). */
fed_err site_stats_moments(fed_site *s, const fed_msg_manifest *mf, bool *local) {
    size_t groups = 0, inputs = 0, outputs = 0;
    *local = false;
    fed_err err = manifest_groups(mf, &groups, &inputs, &outputs);
    if (err) return err;
    *local = true;
    const fed_dataset *raw = s->data.train_raw ? s->data.train_raw : s->data.train;
    if (raw->dim != inputs) {
        s->res.job_in = inputs;
        s->res.job_out = outputs;
        return fed_errorf(FED_ESHAPE, "statistics: the data have %zu features, the model takes %zu",
                          raw->dim, inputs);
    }
    size_t len = fed_mom_len(groups);
    if ((err = site_reserve(&s->res.delta, &s->res.delta_cap, len))) return err;
    if ((err = fed_mom_encode(raw, groups, s->res.delta))) return err; /* the detail stays here */
    s->res.delta_n = len;
    s->res.examples = raw->n;
    s->res.steps = 0;
    s->res.out_of_time = false;
    FED_LOG(s->cfg.info,
            "site: statistics round: moments of %zu raw training examples in %zu groups", raw->n,
            groups);
    return FED_OK;
}
