/* A round's local work (client/site_internal.h): building the model from the manifest's
 * architecture and checking every tensor against it, the federated evaluation of the
 * global model on the local test split, fed_fit with the round's spec, local caps and
 * deadline, the delta = local - global over the trainable tensors, the trainings again on
 * resamples that a simulated LIE attacker's "attack" stage asks for (retrain), and the
 * site's audit copy of the update (save_updates). site_train_round may run on a
 * simulator's worker thread, so it touches the round's RoundStart, the global weights,
 * the data and the results (s->res), never the connection, the round's state or the
 * counters; fed_fit's callbacks pump the channel only when the I/O thread itself trains.
 * What deliberately does not live here: sending, dropping or failing the round
 * (site_round.c) and the job hand-over (site_worker.c). */
#include "client/site_internal.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/train_spec.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void site_trainer_clear(fed_site_trainer *t) {
    fed_model_destroy(&t->model);
    fed_free(t->arch);
    t->arch = NULL;
}

/* "(8, 4)" */
static void shape_str(char *out, size_t len, int ndim, const uint64_t *shape) {
    size_t k = (size_t)snprintf(out, len, "(");
    for (int i = 0; i < ndim && k < len; i++)
        k += (size_t)snprintf(out + k, len - k, "%s%" PRIu64, i ? ", " : "", shape[i]);
    if (k < len) snprintf(out + k, len - k, ")");
}

static void on_step(void *user, size_t done, size_t total) {
    (void)done;
    (void)total;
    fed_site *s = user;
    if (s->cfg.external) return; /* the I/O thread pumps; the worker only reads abort */
    if (site_stopped(s)) site_interrupt(s, "stopping");
    if (atomic_load(&s->fit.abort)) return;
    double t = fed_now_s();
    if (t - s->res.last_pump < PUMP_S) return;
    s->res.last_pump = t;
    site_pump(s);
}

static bool on_epoch(void *user, const fed_epoch_stats *e) {
    fed_site *s = user;
    s->res.last_epoch = *e;
    if (!s->cfg.external && site_stopped(s)) site_interrupt(s, "stopping");
    return !atomic_load(&s->fit.abort);
}

/* Builds the model from the manifest's architecture (when it changed) and checks every
 * tensor of the manifest against it; sets the trainable flags. Errors name the field. */
fed_err site_prepare_model(fed_site *s, fed_site_trainer *tr) {
    const fed_msg_manifest *mf = &s->round.rs->manifest;
    fed_err err;
    if (!tr->model || strcmp(tr->arch, mf->arch) != 0) {
        site_trainer_clear(tr);
        fed_arch *a = NULL;
        if (fed_arch_parse(&a, mf->arch) != FED_OK)
            return fed_errprefix(FED_EFORMAT, "manifest.arch");
        err = fed_model_new(&tr->model, a);
        fed_arch_destroy(&a);
        if (err) return err;
        if (!(tr->arch = fed_strdup(mf->arch))) {
            fed_model_destroy(&tr->model);
            return FED_ENOMEM;
        }
        if (!s->cfg.external)
            FED_LOG(s->cfg.info, "site: model of %zu parameters in %zu tensors",
                    fed_model_num_params(tr->model), fed_model_num_tensors(tr->model));
    }
    fed_model *m = tr->model;
    size_t nt = fed_model_num_tensors(m);
    if (mf->num_tensors != nt)
        return fed_errorf(FED_ESHAPE, "manifest.tensors: %zu tensors; the architecture has %zu",
                          mf->num_tensors, nt);
    size_t ntrain = 0;
    for (size_t i = 0; i < nt; i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        const fed_msg_tensor *mt = &mf->tensors[i];
        if (strcmp(mt->name, t->name) != 0)
            return fed_errorf(FED_ESHAPE,
                              "manifest.tensors[%zu]: \"%s\" where the architecture has \"%s\"", i,
                              mt->name, t->name);
        if (mt->dtype != FED_DTYPE_F32)
            return fed_errorf(FED_EUNSUPPORTED, "manifest.tensors[%zu] (%s): dtype is not F32", i,
                              mt->name);
        uint64_t want[4];
        for (int d = 0; d < t->ndim; d++) want[d] = t->shape[d];
        bool same = mt->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = mt->shape[d] == want[d];
        if (!same) {
            char got[160], exp[160];
            shape_str(got, sizeof got, mt->ndim, mt->shape);
            shape_str(exp, sizeof exp, t->ndim, want);
            return fed_errorf(FED_ESHAPE,
                              "manifest.tensors[%zu] (%s): shape %s; the architecture says %s", i,
                              mt->name, got, exp);
        }
        if (mt->trainable) ntrain++;
    }
    size_t np = fed_model_num_params(m);
    if (mf->total_bytes != (uint64_t)np * 4u)
        return fed_errorf(FED_ESHAPE,
                          "manifest.total_bytes: %" PRIu64 "; the architecture has %zu bytes",
                          mf->total_bytes, np * 4u);
    if (ntrain == 0) return fed_errorf(FED_EINVAL, "manifest.tensors: no trainable tensor");
    for (size_t i = 0; i < nt; i++) fed_model_set_trainable(m, i, mf->tensors[i].trainable);
    return FED_OK;
}

/* The site's own record of what leaves it: the delta of every trainable tensor (host
 * order, before the byte swap), with the round, model version and example count. */
static fed_err save_update(fed_site *s, const fed_model *m, const fed_msg_round_start *rs,
                           const float *delta) {
    size_t n = 0, off = 0;
    for (size_t i = 0; i < fed_model_num_tensors(m); i++) n += fed_model_tensor(m, i)->trainable;
    fed_st_entry *e = fed_calloc(n ? n : 1, sizeof *e);
    fed_meta *meta = NULL;
    fed_err err = FED_ENOMEM;
    if (!e || (err = fed_meta_new(&meta))) goto done;
    n = 0;
    for (size_t i = 0; i < fed_model_num_tensors(m); i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        if (!t->trainable) continue;
        e[n].name = t->name;
        e[n].ndim = t->ndim;
        e[n].shape = t->shape;
        e[n].data = delta + off;
        off += t->numel;
        n++;
    }
    char buf[32], path[4096];
    snprintf(buf, sizeof buf, "%" PRIu64, rs->round);
    if ((err = fed_meta_set(meta, "fedtune.round", buf))) goto done;
    snprintf(buf, sizeof buf, "%" PRIu64, rs->model_version);
    if ((err = fed_meta_set(meta, "fedtune.model_version", buf))) goto done;
    snprintf(buf, sizeof buf, "%zu", s->data.train->n);
    if ((err = fed_meta_set(meta, "fedtune.examples", buf))) goto done;
    snprintf(path, sizeof path, "%s/round-%06" PRIu64 ".safetensors", s->cfg.save_updates,
             rs->round);
    err = fed_st_write(path, e, n, meta);
done:
    fed_meta_destroy(&meta);
    fed_free(e);
    return err;
}

/* What the "attack" stage's LIE trains again with (site_update.retrain). */
typedef struct retrain_ctx {
    fed_site *s;
    fed_model *m;
    const fed_fit_config *fc; /* the round's training, as the honest delta was trained */
} retrain_ctx;

/* A simulated LIE attacker's k-th honest delta: the round's training from the global
 * weights on a bootstrap resample of the training split (as many examples, drawn with
 * replacement under the attack's seed, the round and k; fed_fit seeded afresh by k). */
static fed_err retrain(void *user, size_t k, float *out) {
    const retrain_ctx *c = user;
    fed_site *s = c->s;
    const fed_dataset *d = s->data.train;
    const fed_msg_round_start *rs = s->round.rs;
    size_t *idx = fed_mallocarray(d->n ? d->n : 1, sizeof *idx);
    if (!idx) return FED_ENOMEM;
    fed_rng r = fed_rng_stream(s->cfg.attack.seed ^ fed_mix64(rs->round), k);
    for (size_t i = 0; i < d->n; i++) idx[i] = (size_t)fed_rng_below(&r, d->n);
    fed_dataset *sample = NULL;
    fed_err err = fed_data_subset(&sample, d, idx, d->n);
    fed_free(idx);
    if (err) return err;
    float *w = fed_model_params(c->m);
    memcpy(w, s->model.global, fed_model_num_params(c->m) * sizeof(float));
    fed_fit_config fc = *c->fc;
    fc.seed = fed_mix64(fc.seed ^ (0x6c6965ull + k)); /* "lie" */
    fed_fit_result fr;
    err = fed_fit(c->m, sample, NULL, &fc, &fr);
    fed_data_destroy(&sample);
    if (!err && atomic_load(&s->fit.abort)) err = fed_errorf(FED_EAGAIN, "attack lie: aborted");
    if (!err && !fed_model_delta(c->m, w, s->model.global, out))
        err = fed_errorf(FED_ENONFINITE, "attack lie: resample %zu: a delta is not finite", k);
    return err;
}

/* The least time kept for sending an update before the round's deadline. */
#define UPLOAD_MARGIN_MIN_S 0.1

/* When training must stop for the update to reach the coordinator before the round's
 * deadline: deadline_ms after the RoundStart arrived, less a margin for the upload of
 * nfloats (twice the last model transfer's time for that many bytes, at least a tenth
 * of the deadline and UPLOAD_MARGIN_MIN_S). 0: the round gives no deadline. */
static double train_deadline(const fed_site *s, size_t nfloats) {
    const fed_msg_round_start *rs = s->round.rs;
    if (!rs->deadline_ms) return 0;
    double window = (double)rs->deadline_ms / 1000.0;
    double margin = 2.0 * s->round.rx_s_per_byte * 4.0 * (double)nfloats;
    if (margin < 0.1 * window) margin = 0.1 * window;
    if (margin < UPLOAD_MARGIN_MIN_S) margin = UPLOAD_MARGIN_MIN_S;
    return s->round.t_round + window - margin;
}

bool fed_site_delegate_pump(fed_site *s) {
    if (site_stopped(s)) site_interrupt(s, "stopping");
    if (!atomic_load(&s->fit.abort)) site_pump(s);
    return atomic_load(&s->fit.abort);
}

/* A relay's round (fed_site_config.train_fn): the callback makes the delta and its
 * weight; the stages after training (none but a simulator's attack) then run as usual. */
static train_result delegated_round(fed_site *s, fed_model *m, fed_err *err, const char **what) {
    const fed_msg_round_start *rs = s->round.rs;
    size_t nd = fed_model_num_trainable(m);
    if ((*err = site_reserve(&s->res.delta, &s->res.delta_cap, nd))) {
        *what = "delta";
        return TR_FAIL_DATA;
    }
    s->res.delta_n = nd;
    fed_site_round_in in = {.site = s, .rs = rs, .global = m, .stop_at = train_deadline(s, nd)};
    fed_site_round_out out = {.delta = s->res.delta,
                              .n = nd,
                              .train_loss = (double)NAN,
                              .global_loss = (double)NAN,
                              .global_acc = (double)NAN};
    *err = s->cfg.train_fn(s->cfg.train_user, &in, &out);
    if (atomic_load(&s->fit.abort)) return TR_ABORTED;
    if (*err) return TR_FAIL_MSG;
    if (out.examples < 1 || out.examples > (uint64_t)s->stats.train_examples) {
        *err = fed_errorf(FED_ERANGE,
                          "relay: %" PRIu64 " examples: outside [1, %zu] (its announced bound)",
                          out.examples, s->stats.train_examples);
        return TR_FAIL_MSG;
    }
    for (size_t i = 0; i < nd; i++)
        if (!isfinite(s->res.delta[i])) return TR_NONFINITE;
    s->res.examples = (size_t)out.examples;
    s->res.steps = 0;
    s->res.out_of_time = false;
    s->res.train_loss = out.train_loss;
    s->res.train_acc = (double)NAN;
    s->res.global_loss = out.global_loss;
    s->res.global_acc = out.global_acc;
    s->res.eval_examples = out.eval_examples;
    site_update u = {
        .round = rs->round, .v = s->res.delta, .n = nd, .model = m, .global = s->model.global};
    if ((*err = site_stage_run(s->round.pipe, SITE_STAGE_TRAINED, &u))) {
        *what = "update";
        return TR_FAIL_DATA;
    }
    return TR_OK;
}

/* Evaluates the global model, trains and computes the delta into s->res.delta (host order):
 * everything of a round but the messages, so that a simulator's worker thread may run
 * it while the site's own thread only pumps the channel. Touches the round's RoundStart,
 * the global weights, the data, the delta and the metrics; never the connection. On
 * TR_FAIL_* *err and *what say what failed (the error detail is on this thread). */
train_result site_train_round(fed_site *s, fed_site_trainer *t, fed_err *err, const char **what) {
    fed_msg_round_start *rs = s->round.rs;
    *what = "";
    if ((*err = site_prepare_model(s, t))) return TR_FAIL_MSG;
    fed_model *m = t->model;
    s->res.job_in = fed_model_input_size(m);
    s->res.job_out = fed_model_output_size(m);
    const size_t np = fed_model_num_params(m);
    memcpy(fed_model_params(m), s->model.global, np * sizeof(float));
    if (s->cfg.train_fn) return delegated_round(s, m, err, what);
    if ((*err = site_use_transform(s, rs->manifest.input_transform))) {
        *what = "input transform";
        return TR_FAIL_DATA;
    }

    /* Federated evaluation of the global model, on the local test split. */
    s->res.global_loss = s->res.global_acc = 0.0;
    size_t neval = s->data.test ? s->data.test->n : 0;
    if (neval) {
        *err = fed_evaluate_ce(m, s->data.test, 0, &s->res.global_loss, &s->res.global_acc);
        if (*err) {
            *what = "evaluating the global model";
            return TR_FAIL_DATA;
        }
    }

    fed_fit_config fc;
    if ((*err =
             fed_train_spec_fit(&rs->config, rs->round, s->cfg.max_epochs, s->cfg.max_batch, &fc)))
        return TR_FAIL_MSG;
    if (fc.epochs != rs->config.epochs || fc.batch != rs->config.batch)
        FED_LOG(s->cfg.info,
                "site: round %" PRIu64 ": local caps: epochs %" PRIu32 " -> %zu, batch %" PRIu32
                " -> %zu",
                rs->round, rs->config.epochs, fc.epochs, rs->config.batch, fc.batch);
    fc.on_step = on_step;
    fc.on_epoch = on_epoch;
    fc.user = s;
    fc.stop_at = train_deadline(s, fed_model_num_trainable(m));
    s->res.last_pump = fed_now_s();
    memset(&s->res.last_epoch, 0, sizeof s->res.last_epoch);
    fed_fit_result fr;
    *err = fed_fit(m, s->data.train, NULL, &fc, &fr);
    if (atomic_load(&s->fit.abort)) return TR_ABORTED;
    if (*err) {
        *what = "local training";
        return TR_FAIL_DATA;
    }
    s->res.steps = fr.steps;
    s->res.out_of_time = fr.out_of_time;
    s->res.examples = fr.examples < s->data.train->n ? fr.examples : s->data.train->n;
    if (fr.out_of_time && fr.steps == 0) {
        *err = fed_errorf(FED_ETIMEOUT,
                          "deadline: no training step fitted in the %.3g s the round allows "
                          "(less the upload's margin)",
                          (double)rs->deadline_ms / 1000.0);
        return TR_DEADLINE;
    }
    if (fr.out_of_time)
        FED_LOG(s->cfg.info,
                "site: round %" PRIu64 ": training stopped at the deadline after %zu steps "
                "(%zu examples); sending what it has",
                rs->round, fr.steps, s->res.examples);
    s->res.train_loss = fr.final_train_loss;
    s->res.train_acc = s->res.last_epoch.train_acc;

    /* The update: the stages of the round's pipeline that run after training ("delta":
     * local - global over the trainable tensors, in manifest order). */
    size_t nd = fed_model_num_trainable(m);
    if ((*err = site_reserve(&s->res.delta, &s->res.delta_cap, nd))) {
        *what = "delta";
        return TR_FAIL_DATA;
    }
    s->res.delta_n = nd;
    retrain_ctx rc = {s, m, &fc};
    site_update u = {.round = rs->round,
                     .v = s->res.delta,
                     .n = nd,
                     .model = m,
                     .global = s->model.global,
                     .retrain = retrain,
                     .retrain_user = &rc};
    if ((*err = site_stage_run(s->round.pipe, SITE_STAGE_TRAINED, &u))) {
        if (atomic_load(&s->fit.abort)) return TR_ABORTED;
        *what = "update";
        return *err == FED_ENONFINITE ? TR_NONFINITE : TR_FAIL_DATA;
    }
    if (s->cfg.save_updates && (*err = save_update(s, m, rs, s->res.delta))) {
        *what = "saving the update";
        return TR_FAIL_DATA;
    }
    return TR_OK;
}
