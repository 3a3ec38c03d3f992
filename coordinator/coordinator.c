/* The coordinator object and its state machine: configuration defaults and checks,
 * fed_coord_new (model copy, manifest, resume, server), the steps from state to state
 * (fed_coord_step / fed_coord_run), and the end of a federation (export, Bye, lingering
 * after a restart past the last round, giving up). What each state does lives in its
 * own file: registry.c (sites and their messages), collect.c (sampling and the updates),
 * secagg_round.c, stats_round.c, pipeline.c (the round's aggregate to the next model),
 * report.c (evaluation, metrics, checkpoints); all share internal.h. Checkpoint files
 * are checkpoint.c; option parsing and signal handlers cli/cmd_coordinator.c. */
#include "coordinator/internal.h"

static const char *const state_names[] = {"waiting",       "sampling",    "broadcasting",
                                          "collecting",    "aggregating", "evaluating",
                                          "checkpointing", "lingering",   "done"};

const char *fed_coord_state_name(fed_coord_state s) {
    return (unsigned)s <= FED_COORD_DONE ? state_names[s] : "?";
}

fed_coord_config fed_coord_default_config(void) {
    fed_coord_config c;
    memset(&c, 0, sizeof c);
    c.server = fed_server_default_config();
    c.eval_batch = 256;
    c.rounds = 10;
    c.fraction = 1.0;
    c.min_clients = 2;
    c.min_fit = 2;
    c.deadline_ms = 600000;
    c.wait_after_min_ms = 10000;
    c.dp.delta = 1e-5;
    c.secagg.phase_ms = 30000;
    c.dp.clip_lr = 0.2;
    c.train.epochs = 1;
    c.train.batch = 32;
    c.train.optimizer = "adam";
    c.train.lr = 1e-3f;
    c.train.seed = 1;
    c.strategy = fed_strategy_defaults(FED_STRATEGY_FEDAVG);
    c.slots = 1;
    c.ckpt.keep = 3;
    c.seed = 1;
    c.max_examples_per_site = 1000000000;
    c.retry.backoff_ms = 1000;
    c.retry.backoff_max_ms = 60000;
    c.retry.max_failed_attempts = 10;
    c.linger_ms = 60000;
    c.bye_wait_ms = 3000;
    c.input_stats = true;
    return c;
}

/* What a robust rule needs (coordinator.h, fed_robust_rule), checked at start-up. */
static fed_err check_robust(const fed_coord_config *c) {
    const fed_coord_robust_config *r = &c->robust;
    const char *name = fed_robust_name(r->rule);
    size_t f = r->byzantine;
    if ((size_t)r->rule > FED_ROBUST_RFA)
        return fed_errorf(FED_EINVAL, "aggregation %d: no such rule", (int)r->rule);
    if (f > 0 && (r->rule == FED_ROBUST_MEAN || r->rule == FED_ROBUST_NORM))
        return fed_errorf(FED_EINVAL,
                          "byzantine %zu: aggregation %s does not use it (median, trimmed-mean, "
                          "krum, multi-krum and rfa do)",
                          f, name);
    if (!(r->trim >= 0 && r->trim < 0.5))
        return fed_errorf(FED_EINVAL, "trim %g: must be in [0, 0.5)", r->trim);
    if (r->trim > 0 && r->rule != FED_ROBUST_TRIMMED_MEAN)
        return fed_errorf(FED_EINVAL, "trim needs aggregation trimmed-mean, not %s", name);
    if (!(r->norm_bound >= 0 && isfinite(r->norm_bound)))
        return fed_errorf(FED_EINVAL, "norm-bound %g: must be finite and >= 0", r->norm_bound);
    if (r->norm_bound > 0 && r->rule != FED_ROBUST_NORM)
        return fed_errorf(FED_EINVAL, "norm-bound needs aggregation norm, not %s", name);
    if (r->rule == FED_ROBUST_MEAN) return FED_OK;
    if (c->secagg.on)
        return fed_errorf(FED_EINVAL,
                          "aggregation %s with secagg: the coordinator sees only the masked sum, "
                          "never an update; what works is clipping at the sites before masking "
                          "(dp-clip C with dp-noise 0), which a site running modified code can "
                          "skip",
                          name);
    if (c->dp.clip > 0)
        return fed_errorf(FED_EINVAL,
                          "aggregation %s with dp-clip: the DP noise is calibrated to the mean "
                          "of clipped updates, and dp-clip already bounds every update's norm; "
                          "use aggregation mean",
                          name);
    size_t need = fed_robust_min_fit(r);
    if (r->rule == FED_ROBUST_TRIMMED_MEAN && r->trim > 0 &&
        (size_t)floor(r->trim * (double)c->min_fit) < f)
        return fed_errorf(FED_EINVAL,
                          "trim %g cuts %zu of min-fit %zu updates at each end, fewer than "
                          "byzantine %zu",
                          r->trim, (size_t)floor(r->trim * (double)c->min_fit), c->min_fit, f);
    if (c->min_fit < need)
        return fed_errorf(FED_EINVAL,
                          "aggregation %s with byzantine %zu needs min-fit >= %zu (a round "
                          "may close with min-fit updates), not %zu",
                          name, f, need, c->min_fit);
    return FED_OK;
}

/* What a driven coordinator (a relay's) cannot preserve: its round's aggregate must be
 * the plain example-weighted mean, for its caller's server step to apply. */
static fed_err check_driven(const fed_coord_config *c) {
    const char *no = c->strategy.kind != FED_STRATEGY_FEDAVG
                         ? "a server strategy (only the top coordinator steps the model)"
                     : c->robust.rule != FED_ROBUST_MEAN
                         ? "a robust rule (the relay's aggregate must be the weighted mean)"
                     : c->dp.clip > 0 ? "central DP (the top coordinator's applies)"
                     : c->secagg.on   ? "secure aggregation"
                     : c->input_stats ? "input statistics (the top coordinator's apply)"
                     : c->ckpt.dir    ? "checkpoints"
                     : c->compress_down && strcmp(c->compress_down, "none") != 0
                         ? "a downlink codec"
                         : NULL;
    return no ? fed_errorf(FED_EINVAL, "driven rounds: not with %s", no) : FED_OK;
}

static fed_err check_config(const fed_coord_config *c) {
    if (c->rounds < 1) return fed_errorf(FED_EINVAL, "rounds %" PRIu64 ": must be >= 1", c->rounds);
    if (!(c->fraction > 0.0 && c->fraction <= 1.0))
        return fed_errorf(FED_EINVAL, "fraction %g: must be in (0, 1]", c->fraction);
    if (c->min_clients < 1) return fed_errorf(FED_EINVAL, "min-clients 0: must be >= 1");
    if (c->eval_threads > 1024)
        return fed_errorf(FED_EINVAL, "eval-threads %zu: must be at most 1024", c->eval_threads);
    if (c->min_fit < 1 || c->min_fit > c->min_clients)
        return fed_errorf(FED_EINVAL, "min-fit %zu: must be in [1, min-clients %zu]", c->min_fit,
                          c->min_clients);
    if (c->deadline_ms < 1) return fed_errorf(FED_EINVAL, "deadline-ms: must be >= 1");
    if (c->wait_after_min_ms < -1)
        return fed_errorf(FED_EINVAL, "wait-after-min-ms %" PRId64 ": must be >= -1",
                          c->wait_after_min_ms);
    if (c->max_examples_per_site < 1 || (double)c->max_examples_per_site > FED_AGG_WEIGHT_MAX)
        return fed_errorf(FED_EINVAL, "max-examples-per-site %" PRIu64 ": must be in [1, 2^53]",
                          c->max_examples_per_site);
    if (c->retry.backoff_ms < 0 || c->retry.backoff_max_ms < c->retry.backoff_ms)
        return fed_errorf(
            FED_EINVAL, "retry backoff: need 0 <= initial (%" PRId64 " ms) <= max (%" PRId64 " ms)",
            c->retry.backoff_ms, c->retry.backoff_max_ms);
    if (!(c->max_update_norm >= 0.0))
        return fed_errorf(FED_EINVAL, "max-update-norm %g: must be >= 0", c->max_update_norm);
    if (c->ckpt.keep < 1) return fed_errorf(FED_EINVAL, "keep-checkpoints: must be >= 1");
    if (!(c->target_accuracy >= 0.0 && c->target_accuracy <= 1.0))
        return fed_errorf(FED_EINVAL, "target-accuracy %g: must be in [0, 1]", c->target_accuracy);
    if (!(c->dp.clip >= 0.0 && isfinite(c->dp.clip)))
        return fed_errorf(FED_EINVAL, "dp-clip %g: must be finite and >= 0", c->dp.clip);
    if (!(c->dp.noise >= 0.0 && isfinite(c->dp.noise)))
        return fed_errorf(FED_EINVAL, "dp-noise %g: must be finite and >= 0", c->dp.noise);
    if (c->input_stats && c->dp.clip > 0 &&
        !(c->model_meta && fed_meta_get(c->model_meta, META_STD)))
        return fed_errorf(FED_EINVAL,
                          "input-stats releases the federation's feature means and variances "
                          "without differential-privacy noise: turn it off with dp-clip (or "
                          "give the model an input standardisation)");
    if (c->dp.noise > 0 && c->dp.clip == 0)
        return fed_errorf(FED_EINVAL, "dp-noise needs dp-clip (the noise scales with it)");
    if (c->dp.clip > 0 && !(c->dp.delta > 0.0 && c->dp.delta < 1.0))
        return fed_errorf(FED_EINVAL, "dp-delta %g: must be in (0, 1)", c->dp.delta);
    if (!(c->dp.target_epsilon >= 0.0 && isfinite(c->dp.target_epsilon)))
        return fed_errorf(FED_EINVAL, "target-epsilon %g: must be finite and >= 0",
                          c->dp.target_epsilon);
    if (!(c->dp.target_quantile >= 0.0 && c->dp.target_quantile < 1.0))
        return fed_errorf(FED_EINVAL, "dp-target-quantile %g: must be in [0, 1)",
                          c->dp.target_quantile);
    if (c->dp.target_quantile > 0 && c->dp.clip == 0)
        return fed_errorf(FED_EINVAL, "dp-target-quantile needs dp-clip (the initial bound)");
    if (c->dp.target_quantile > 0 && c->secagg.on)
        return fed_errorf(FED_EINVAL, "dp-target-quantile does not combine with secagg yet (the "
                                      "count of clipped updates would need its own secure sum)");
    if (!(c->dp.clip_lr >= 0.0 && isfinite(c->dp.clip_lr)))
        return fed_errorf(FED_EINVAL, "dp-clip-lr %g: must be finite and >= 0", c->dp.clip_lr);
    if (!(c->dp.count_noise >= 0.0 && isfinite(c->dp.count_noise)))
        return fed_errorf(FED_EINVAL, "dp-count-noise %g: must be finite and >= 0",
                          c->dp.count_noise);
    if (c->dp.target_quantile > 0 && c->dp.noise > 0 && c->dp.count_noise > 0 &&
        !(2.0 * c->dp.count_noise > c->dp.noise))
        return fed_errorf(FED_EINVAL,
                          "dp-count-noise %g: must exceed dp-noise / 2 = %g (the count's noise "
                          "is paid from the same budget)",
                          c->dp.count_noise, c->dp.noise / 2.0);
    if (c->dp.target_epsilon > 0 && !(c->dp.clip > 0 && c->dp.noise > 0))
        return fed_errorf(FED_EINVAL, "target-epsilon needs dp-clip and dp-noise > 0");
    /* What every site would refuse must not start a federation: the sites check the
     * round's TrainConfig with this very function. */
    fed_err err = fed_train_spec_check(&c->train);
    if (err) return fed_errprefix(err, "client training (every site would refuse it)");
    if ((err = check_robust(c))) return err; /* first: it says why secagg cannot */
    fed_codec down;
    if ((err = fed_codec_parse(&down, c->compress_down ? c->compress_down : "none")))
        return fed_errprefix(err, "compress-down");
    if (down.id == FED_CODEC_TOPK)
        return fed_errorf(FED_EINVAL,
                          "compress-down %s: the downlink takes a dense codec (fp16, bf16, q8, "
                          "q4): a sparse server step would drop most of each round's change",
                          c->compress_down);
    fed_codec codec;
    if ((err = fed_codec_parse(&codec, c->compress ? c->compress : "none")))
        return fed_errprefix(err, "compress");
    if (c->secagg.on && fed_codec_on(&codec))
        return fed_errorf(FED_EINVAL,
                          "compress %s with secagg: the masked sum must stay exact, and secagg "
                          "already quantizes each update to 32-bit fixed point; drop compress",
                          c->compress);
    if (c->secagg.on) {
        if (c->min_fit < 2)
            return fed_errorf(FED_EINVAL, "secagg needs min-fit >= 2 (the sum of one update is "
                                          "that update)");
        if (c->max_update_norm > 0)
            return fed_errorf(FED_EINVAL, "max-update-norm cannot apply with secagg: the "
                                          "coordinator never sees a single update");
        if (!(c->secagg.clip >= 0.0 && isfinite(c->secagg.clip)))
            return fed_errorf(FED_EINVAL, "secagg-clip %g: must be finite and >= 0",
                              c->secagg.clip);
        if (c->secagg.phase_ms < 1)
            return fed_errorf(FED_EINVAL, "secagg-phase-ms %" PRId64 ": must be >= 1",
                              c->secagg.phase_ms);
    }
    if (c->driven && (err = check_driven(c))) return err;
    return fed_strategy_config_check(&c->strategy);
}

/* Applies the freeze option: the one parser train and sim use too (comma-separated globs,
 * a bare layer index N meaning "N.*", a pattern that matches nothing an error). */
static fed_err apply_freeze(fed_model *m, const char *globs) {
    fed_err err = fed_model_set_trainable_spec(m, globs, false, NULL);
    return err ? fed_errprefix(err, "freeze") : FED_OK;
}

static fed_err build_manifest(fed_coord *c) {
    size_t n = fed_model_num_tensors(c->model);
    c->tensors = fed_calloc(n, sizeof *c->tensors);
    if (!c->tensors) return FED_ENOMEM;
    c->ntensors = n;
    c->ntrainable = 0;
    for (size_t i = 0; i < n; i++) {
        const fed_tensor *t = fed_model_tensor(c->model, i);
        fed_msg_tensor *mt = &c->tensors[i];
        mt->name = t->name;
        mt->ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) mt->shape[d] = t->shape[d];
        mt->dtype = FED_DTYPE_F32;
        mt->trainable = t->trainable;
        if (t->trainable) c->ntrainable += t->numel;
    }
    if (c->ntrainable == 0) return fed_errorf(FED_EINVAL, "freeze: every tensor is frozen");
    return fed_arch_to_json(fed_model_arch(c->model), &c->arch_json);
}

fed_err fed__coord_update_sha(fed_coord *c) {
    const float *w = fed_model_params_const(c->model);
    fed_sha256(w, fed_model_num_params(c->model) * sizeof(float), c->sha);
    c->base.n = fed_model_num_params(c->model) - c->ntrainable;
    if (!c->base.n) return FED_OK;
    fed_msg_manifest mf = {.tensors = c->tensors, .num_tensors = c->ntensors};
    if (!c->base.hashed) { /* the base never changes: hashed once */
        float *b = fed_mallocarray(c->base.n, sizeof *b);
        if (!b) return FED_ENOMEM;
        fed_manifest_gather(&mf, false, w, b);
        fed_sha256(b, c->base.n * sizeof *b, c->base.sha);
        fed_free(b);
        c->base.hashed = true;
    }
    if (!c->base.train && !(c->base.train = fed_mallocarray(c->ntrainable, sizeof(float))))
        return FED_ENOMEM;
    fed_manifest_gather(&mf, true, w, c->base.train);
    fed_sha256(c->base.train, c->ntrainable * sizeof(float), c->base.train_sha);
    return FED_OK;
}

fed_err fed__coord_open_metrics(fed_coord *c) {
    if (c->metrics) fclose(c->metrics);
    c->metrics = NULL;
    if (!c->cfg.metrics_file) return FED_OK;
    c->metrics = fopen(c->cfg.metrics_file, "a");
    if (!c->metrics) return fed_errorf(FED_EIO, "%s: %s", c->cfg.metrics_file, strerror(errno));
    return FED_OK;
}

/* The uplink and downlink codecs of cfg (checked by check_config) with their names. */
static fed_err parse_codecs(fed_coord *c, const fed_coord_config *cfg) {
    fed_err err = fed_codec_parse(&c->codec, cfg->compress ? cfg->compress : "none");
    if (!err)
        err = fed_codec_parse(&c->down.codec, cfg->compress_down ? cfg->compress_down : "none");
    if (err) return err;
    fed_codec_name(&c->codec, c->codec_name);
    fed_codec_name(&c->down.codec, c->down.name);
    return FED_OK;
}

/* fed_coord_new with the model copied from cfg->model (taken NULL) or taken over. */
static fed_err coord_new(fed_coord **out, const fed_coord_config *cfg, fed_model *taken) {
    *out = NULL;
    fed_err err = taken || cfg->model ? check_config(cfg)
                                      : fed_errorf(FED_EINVAL, "coordinator: no initial model");
    if (err) {
        fed_model_destroy(&taken);
        return err;
    }
    fed_coord *c = fed_calloc(1, sizeof *c);
    if (!c) {
        fed_model_destroy(&taken);
        return FED_ENOMEM;
    }
    c->cfg = *cfg;
    c->cfg.model = NULL; /* borrowed or taken: not used after this point */
    if ((err = fed__coord_status_new(&c->status, c))) goto fail;
    if ((err = parse_codecs(c, cfg))) goto fail;
    if (taken)
        c->model = taken;
    else if ((err = fed_model_clone(&c->model, cfg->model)))
        goto fail;
    fed_model_drop_grads(c->model); /* the global model is never trained here */
    for (size_t i = 0; i < fed_model_num_tensors(c->model) && !cfg->keep_frozen; i++)
        fed_model_set_trainable(c->model, i, true);
    if ((err = apply_freeze(c->model, cfg->freeze))) goto fail;
    /* Token ids (a first layer that is an embedding) are never standardised. */
    if (fed_arch_layer(fed_model_arch(c->model), 0)->kind == FED_LAYER_EMBEDDING)
        c->cfg.input_stats = false;
    if ((err = build_manifest(c))) goto fail;
    fed_shape in = fed_arch_input_shape(fed_model_arch(c->model));
    c->stats.groups = fed_std_groups(&in, fed_shape_numel(&in));
    const char *mt = cfg->model_meta ? fed_meta_get(cfg->model_meta, META_STD) : NULL;
    if (mt && (err = fed__coord_set_transform(c, mt, "the model's metadata"))) goto fail;
    if ((err = fed_strategy_new(&c->strat, &cfg->strategy, c->ntrainable))) goto fail;
    c->version = 1;
    if (cfg->dp.clip > 0 && (err = fed_dp_accountant_new(&c->dp.acc))) goto fail;
    c->dp.clip_now = cfg->dp.clip;
    if (cfg->ckpt.dir) {
        uint64_t r = 0, v = 1;
        fed_meta *meta = NULL;
        size_t swept = 0;
        if ((err = fed_ckpt_sweep(cfg->ckpt.dir, &swept))) goto fail;
        if ((err = fed_ckpt_resume(cfg->ckpt.dir, c->model, c->strat, &r, &v, &meta))) goto fail;
        if (r > 0 && c->dp.acc) err = fed__coord_restore_accountant(c->dp.acc, meta, r);
        /* The transform an earlier statistics round computed: the rounds since used it. */
        const char *ct = meta && !err && !c->stats.transform ? fed_meta_get(meta, META_STD) : NULL;
        if (ct && !(err = fed__coord_set_transform(c, ct, "checkpoint"))) c->stats.ours = true;
        const char *cn = meta && !err ? fed_meta_get(meta, META_DP_CLIP) : NULL;
        if (cn && cfg->dp.target_quantile > 0) {
            char *end;
            double bound = strtod(cn, &end);
            if (*end || !(bound > 0 && isfinite(bound)))
                err = fed_errorf(FED_EFORMAT, "checkpoint of round %" PRIu64 ": %s malformed", r,
                                 META_DP_CLIP);
            else
                c->dp.clip_now = bound;
        }
        fed_meta_destroy(&meta);
        if (err) goto fail;
        if (r > 0) {
            c->rounds_done = r;
            c->version = v;
        }
    }
    /* After the resume, which holds a second copy of the model while it verifies one: the
     * aggregator's (1 + slots) copies do not add to that peak. */
    if ((err = fed_agg_new(&c->agg, c->ntrainable, cfg->slots))) goto fail;
    fed_agg_set_clip(c->agg, cfg->secagg.on ? 0.0 : c->dp.clip_now); /* secagg: the sites clip */
    if (c->stats.ours && (err = fed__coord_standardize_eval(c))) goto fail;
    size_t nb = cfg->slots ? cfg->slots : 1; /* byte buffers: allocated on first use */
    c->raw.buf = fed_calloc(nb, sizeof *c->raw.buf);
    c->raw.cap = fed_calloc(nb, sizeof *c->raw.cap);
    c->raw.busy = fed_calloc(nb, sizeof *c->raw.busy);
    if (!c->raw.buf || !c->raw.cap || !c->raw.busy) {
        err = FED_ENOMEM;
        goto fail;
    }
    c->raw.n = nb;
    if (cfg->secagg.on) {
        if (!(c->sec.sum = fed_mallocarray(c->ntrainable, sizeof *c->sec.sum))) {
            err = FED_ENOMEM;
            goto fail;
        }
        if (!cfg->server.net.plaintext &&
            (err = fed_id_new(&c->sec.id, cfg->server.net.tls.cert_file, NULL,
                              cfg->server.net.tls.ca_file, cfg->server.net.tls.crl_file)))
            goto fail;
    }
    if ((err = fed__coord_pipeline_build(c))) goto fail;
    if ((err = fed__coord_update_sha(c))) goto fail;
    if ((err = fed__coord_open_metrics(c))) goto fail;
    c->zctx = cfg->zmq_ctx;
    if (!c->zctx) {
        if (!(c->zctx = fed_net_context_new())) {
            err = FED_ENOMEM;
            goto fail;
        }
        c->own_ctx = true;
    }
    if ((err = fed_server_new(&c->srv, c->zctx, &cfg->server))) goto fail;
    /* Even when every round is done: WAITING finishes (export, Bye) from the checkpoint. */
    c->state = FED_COORD_WAITING;
    c->ended_before = c->rounds_done >= cfg->rounds;
    c->last.round = c->rounds_done;
    c->last.model_version = c->version;
    c->last.central_loss = c->last.central_acc = c->last.metric = (double)NAN;
    c->last.fed_loss = c->last.fed_acc = c->last.train_loss = (double)NAN;
    c->last.epsilon = (double)NAN;
    if (c->dp.acc && (err = fed__coord_spent(c, &c->last.epsilon))) goto fail;
    FED_LOG(FED_LOG_INFO,
            "coordinator on %s: %zu tensors, %zu of %zu parameters trainable, %s, round %" PRIu64
            " of %" PRIu64 ", model version %" PRIu64,
            fed_server_endpoint(c->srv), c->ntensors, c->ntrainable, fed_model_num_params(c->model),
            fed_strategy_name(cfg->strategy.kind), c->rounds_done + 1, cfg->rounds, c->version);
    *out = c;
    return FED_OK;
fail:
    fed_coord_destroy(&c);
    return err;
}

fed_err fed_coord_new(fed_coord **out, const fed_coord_config *cfg) {
    return coord_new(out, cfg, NULL);
}

fed_err fed_coord_new_taking(fed_coord **out, const fed_coord_config *cfg, fed_model **model) {
    fed_model *taken = *model;
    *model = NULL;
    if (!taken) {
        *out = NULL;
        return fed_errorf(FED_EINVAL, "coordinator: no initial model");
    }
    return coord_new(out, cfg, taken);
}

/* Sends bye to every connected site not told yet; returns how many were told (those that
 * left since included). */
static size_t tell_bye(fed_coord *c, const fed_msg *bye, bool log) {
    size_t told = 0;
    for (size_t i = 0; i < c->ncl; i++) {
        client *k = &c->cl[i];
        if (k->connected && !k->told && fed_server_send(c->srv, k->peer, bye) == FED_OK) {
            k->told = true;
            if (log) FED_LOG(FED_LOG_INFO, "%s told the federation is over", k->cn);
        }
        told += k->told;
    }
    return told;
}

static bool bye_unconfirmed(const fed_coord *c) {
    for (size_t i = 0; i < c->ncl; i++)
        if (c->cl[i].told && c->cl[i].connected) return true;
    return false;
}

/* After Byes: waits up to bye_wait_ms until every site told has closed its session, so
 * the socket is not closed under a Bye still queued (a site that misses a final Bye
 * reconnects until its own limit). A site joining meanwhile hears bye too; other
 * messages are dropped. Then no site counts as connected. */
static void let_byes_leave(fed_coord *c, const fed_msg *bye) {
    int64_t end = fed_now_ms() + c->cfg.bye_wait_ms;
    fed_net_event ev;
    while (bye_unconfirmed(c) && fed_now_ms() < end) {
        if (fed_server_poll(c->srv, 20, &ev) != FED_OK) break;
        if (ev.type != FED_NET_JOINED && ev.type != FED_NET_LEFT) continue;
        (void)fed__coord_on_event(c, &ev);
        tell_bye(c, bye, bye->u.bye.finished);
    }
    for (size_t i = 0; i < c->ncl; i++) c->cl[i].connected = false;
}

static void say_bye(fed_coord *c, const char *reason, bool finished) {
    if (!c->srv) return;
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_BYE;
    m.u.bye.reason = reason;
    m.u.bye.finished = finished;
    tell_bye(c, &m, false);
    let_byes_leave(c, &m);
}

void fed_coord_destroy(fed_coord **pc) {
    if (!pc || !*pc) return;
    fed_coord *c = *pc;
    say_bye(c, "coordinator shutting down", false);
    fed_server_destroy(&c->srv);
    if (c->own_ctx) fed_net_context_destroy(&c->zctx);
    if (c->metrics) fclose(c->metrics);
    fed_stage_destroy_all(&c->pipe);
    fed_agg_destroy(&c->agg);
    fed_strategy_destroy(&c->strat);
    fed_dp_accountant_destroy(&c->dp.acc);
    fed_sa_server_destroy(&c->sec.sa);
    fed_id_destroy(&c->sec.id);
    for (size_t i = 0; c->raw.buf && i < c->raw.n; i++) fed_free(c->raw.buf[i]);
    fed_free(c->raw.buf);
    fed_free(c->raw.cap);
    fed_free(c->raw.busy);
    fed_free(c->stats.transform);
    fed_mom_sum_free(&c->stats.sum);
    fed_data_destroy(&c->stats.eval_own);
    fed_free(c->sec.cl);
    fed_free(c->sec.sum);
    fed_free(c->att.order);
    fed_free(c->arch_json);
    fed_free(c->tensors);
    fed_free(c->base.train);
    fed_free(c->cl);
    fed_free(c->reg.by_cn);
    fed_free(c->reg.by_peer);
    fed_free(c->admin.evicted);
    fed__coord_drive_free(c);
    fed_model_destroy(&c->model);
    fed__coord_status_destroy(&c->status);
    fed_free(c);
    *pc = NULL;
}

const char *fed_coord_endpoint(const fed_coord *c) {
    return fed_server_endpoint(c->srv);
}

void fed_coord_request_stop(fed_coord *c) {
    c->signals.stop = 1;
}

void fed_coord_request_reopen(fed_coord *c) {
    c->signals.reopen = 1;
}

void fed_coord_server_stats(const fed_coord *c, fed_net_stats *st) {
    memset(st, 0, sizeof *st);
    if (c->srv) fed_server_stats(c->srv, st);
}

fed_coord_state fed_coord_get_state(const fed_coord *c) {
    return c->state;
}

uint64_t fed_coord_rounds_done(const fed_coord *c) {
    return c->rounds_done;
}

uint64_t fed_coord_model_version(const fed_coord *c) {
    return c->version;
}

const fed_model *fed_coord_model(const fed_coord *c) {
    return c->model;
}

void fed_coord_model_sha256(const fed_coord *c, uint8_t out[FED_SHA256_LEN]) {
    memcpy(out, c->sha, FED_SHA256_LEN);
}

fed_coord_round_stats fed_coord_last_round(const fed_coord *c) {
    return c->last;
}

uint64_t fed_coord_rejected_total(const fed_coord *c) {
    return c->rejected_total;
}

/* The end of the coordinator's work: the open attempt dropped, no model transfer left. */
static void abandon(fed_coord *c) {
    fed__coord_end_attempt(c);
    for (size_t i = 0; i < c->ncl; i++) {
        client *k = &c->cl[i];
        if (k->sending) fed__coord_cancel(c, k->peer, k->sending);
        k->sending = 0;
    }
    c->state = FED_COORD_DONE;
}

/* Stops: abandons an open round, exports the model, says Bye; finished tells the sites
 * whether the federation is over (they exit) or only this process stops (a signal: they
 * reconnect and rejoin the restarted coordinator). */
fed_err fed__coord_finish(fed_coord *c, const char *why, bool finished) {
    abandon(c);
    FED_LOG(FED_LOG_INFO, "stopping after %" PRIu64 " rounds: %s", c->rounds_done, why);
    fed_err err = FED_OK;
    if (c->cfg.out) {
        fed_meta *meta = NULL;
        char buf[32];
        err = fed_meta_new(&meta);
        /* What the initial model's file said of its inputs and classes still holds. */
        for (size_t i = 0; !err && c->cfg.model_meta && i < fed_meta_count(c->cfg.model_meta); i++)
            err = fed_meta_set(meta, fed_meta_key(c->cfg.model_meta, i),
                               fed_meta_value(c->cfg.model_meta, i));
        if (!err && c->stats.ours) err = fed_meta_set(meta, META_STD, c->stats.transform);
        snprintf(buf, sizeof buf, "%" PRIu64, c->rounds_done);
        if (!err) err = fed_meta_set(meta, "fedtune.round", buf);
        snprintf(buf, sizeof buf, "%" PRIu64, c->version);
        if (!err) err = fed_meta_set(meta, "fedtune.model_version", buf);
        if (!err)
            err = fed_meta_set(meta, "fedtune.strategy", fed_strategy_name(c->cfg.strategy.kind));
        if (!err && c->dp.acc) {
            char dp[256];
            double eps = 0;
            if (!(err = fed__coord_spent(c, &eps))) {
                char e[32] = "null"; /* infinite: no noise */
                if (isfinite(eps)) snprintf(e, sizeof e, "%.17g", eps);
                snprintf(dp, sizeof dp,
                         "{\"clip\":%.17g,\"noise_multiplier\":%.17g,\"delta\":%.17g,"
                         "\"epsilon\":%s,\"rounds\":%" PRIu64 ",\"accountant\":\"rdp, "
                         "sampled gaussian, improved conversion\"}",
                         c->cfg.dp.clip, c->cfg.dp.noise, c->cfg.dp.delta, e, c->rounds_done);
                err = fed_meta_set(meta, "fedtune.dp", dp);
            }
        }
        if (!err && c->cfg.secagg.on) {
            char sa[256];
            const fed_sa_params *p = &c->sec.params; /* of the last attempt */
            snprintf(sa, sizeof sa,
                     "{\"protocol\":\"secagg+\",\"participants\":%u,\"degree\":%u,"
                     "\"threshold\":%u,\"clip_range\":%.17g,\"quant_range\":%u,"
                     "\"weights\":\"uniform\"}",
                     (unsigned)p->n, (unsigned)fed_sa_degree(p), (unsigned)p->threshold,
                     p->clip_range, (unsigned)p->quant_range);
            err = fed_meta_set(meta, "fedtune.secagg", sa);
        }
        if (!err) err = fed_model_save(c->model, c->cfg.out, meta);
        fed_meta_destroy(&meta);
        if (err)
            err = fed_errprefix(err, "export");
        else
            FED_LOG(FED_LOG_INFO, "final model written to %s", c->cfg.out);
    }
    say_bye(c, why, finished);
    if (!err && finished && c->ended_before && c->cfg.linger_ms > 0) {
        c->state = FED_COORD_LINGERING;
        c->linger_until = fed_now_ms() + c->cfg.linger_ms;
        FED_LOG(FED_LOG_INFO,
                "the last round was done before this start: telling reconnecting sites for up "
                "to %.3g s",
                (double)c->cfg.linger_ms / 1000.0);
    }
    return err;
}

/* LINGERING: every site that (re)joins hears Bye{finished}; done when min_clients were
 * told or the time is up. */
static void linger(fed_coord *c) {
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_BYE;
    m.u.bye.reason = "all rounds done";
    m.u.bye.finished = true;
    size_t told = tell_bye(c, &m, true);
    if (told < c->cfg.min_clients && fed_now_ms() < c->linger_until) return;
    let_byes_leave(c, &m);
    c->state = FED_COORD_DONE;
}

/* Ends the federation because its rounds cannot succeed: no export (the checkpoints hold
 * the last good model), the sites are told it is over, and the caller gets the reason. */
fed_err fed__coord_give_up(fed_coord *c) {
    abandon(c);
    FED_LOG(FED_LOG_ERROR, "stopping after %" PRIu64 " rounds: %s", c->rounds_done, c->att.give_up);
    char bye[sizeof c->att.give_up + 32];
    snprintf(bye, sizeof bye, "federation stopped: %s", c->att.give_up);
    say_bye(c, bye, true);
    return fed_errorf(FED_ECANCELED, "%s", c->att.give_up);
}

/* Runs the states that need no event until one waits for the network. */
static fed_err advance(fed_coord *c) {
    for (;;) {
        fed_err err;
        switch (c->state) {
        case FED_COORD_WAITING:
            if (!c->cfg.driven && c->rounds_done >= c->cfg.rounds)
                return fed__coord_finish(c, "all rounds done", true);
            if (c->admin.paused) return FED_OK; /* fedtune admin pause */
            if (c->cfg.driven && !fed__coord_drive_may_start(c)) return FED_OK; /* drive.c */
            if (fed__coord_connected_count(c) < c->cfg.min_clients) return FED_OK;
            if (c->att.retry_at && fed_now_ms() < c->att.retry_at) return FED_OK; /* backing off */
            if (c->rounds_done == 0 && c->cfg.input_stats && !c->stats.transform)
                c->stats.active = true;
            if (c->cfg.dp.target_epsilon > 0) {
                double next = 0;
                if ((err = fed__coord_next_epsilon(c, &next))) return err;
                if (next > c->cfg.dp.target_epsilon) {
                    char why[160];
                    snprintf(why, sizeof why,
                             "privacy budget: another round would spend epsilon %.4g > %.4g", next,
                             c->cfg.dp.target_epsilon);
                    return fed__coord_finish(c, why, true);
                }
            }
            c->state = FED_COORD_SAMPLING;
            break;
        case FED_COORD_SAMPLING:
            if ((err = fed__coord_do_sample(c))) return err;
            c->state = FED_COORD_BROADCASTING;
            break;
        case FED_COORD_BROADCASTING:
            fed__coord_do_broadcast(c);
            c->state = FED_COORD_COLLECTING;
            break;
        case FED_COORD_COLLECTING: {
            fed_coord_state next = fed__coord_collect(c);
            if (c->att.give_up[0]) return fed__coord_give_up(c);
            if (next == FED_COORD_COLLECTING) return FED_OK;
            c->state = next;
            if (next == FED_COORD_WAITING) return FED_OK;
            break;
        }
        case FED_COORD_AGGREGATING:
            if (c->stats.active) { /* round 0: the transform, then round 1 */
                c->state = fed__coord_finish_stats(c);
                if (c->att.give_up[0]) return fed__coord_give_up(c);
                break;
            }
            if ((err = fed__coord_aggregate(c))) return err;
            c->state = FED_COORD_EVALUATING;
            break;
        case FED_COORD_EVALUATING:
            if ((err = fed__coord_evaluate(c))) return err;
            c->state = FED_COORD_CHECKPOINTING;
            break;
        case FED_COORD_CHECKPOINTING:
            if ((err = fed__coord_checkpoint(c))) return err;
            if (c->cfg.driven) fed__coord_drive_closed(c);
            if (c->cfg.target_accuracy > 0 && c->cur.central_acc >= c->cfg.target_accuracy)
                return fed__coord_finish(c, "target accuracy reached", true);
            c->state = FED_COORD_WAITING;
            break;
        case FED_COORD_LINGERING:
            linger(c);
            return FED_OK;
        case FED_COORD_DONE:
            return FED_OK;
        }
    }
}

fed_err fed_coord_step(fed_coord *c, int timeout_ms) {
    if (c->signals.stop && c->state == FED_COORD_LINGERING) c->state = FED_COORD_DONE;
    if (c->state == FED_COORD_DONE) return FED_OK;
    if (c->signals.stop) return fed__coord_finish(c, "stop requested", false);
    int64_t now = fed_now_ms();
    if (c->cfg.stop_file && now >= c->next_stop_check && c->state != FED_COORD_LINGERING) {
        c->next_stop_check = now + 500;
        if (access(c->cfg.stop_file, F_OK) == 0)
            return fed__coord_finish(c, "stop file present", true);
    }
    if (c->signals.reopen && c->state != FED_COORD_CHECKPOINTING) {
        c->signals.reopen = 0;
        fed_err err = fed__coord_open_metrics(c);
        if (err)
            FED_LOG(FED_LOG_ERROR, "metrics: %s", fed_errmsg());
        else
            FED_LOG(FED_LOG_INFO, "metrics file reopened");
    }
    if (timeout_ms < 0 || timeout_ms > 100) timeout_ms = 100;
    fed_net_event ev;
    fed_err err = fed_server_poll(c->srv, timeout_ms, &ev);
    if (err) return fed_errorf(err, "server: %s", fed_server_errmsg(c->srv));
    if ((err = fed__coord_on_event(c, &ev))) return err;
    /* Drain what is already there without waiting. */
    for (int i = 0; i < 64 && ev.type != FED_NET_NONE; i++) {
        if ((err = fed_server_poll(c->srv, 0, &ev)))
            return fed_errorf(err, "server: %s", fed_server_errmsg(c->srv));
        if ((err = fed__coord_on_event(c, &ev))) return err;
    }
    err = advance(c);
    fed__coord_status_step(c);
    return err;
}

fed_err fed_coord_run(fed_coord *c) {
    while (c->state != FED_COORD_DONE) {
        fed_err err = fed_coord_step(c, 100);
        if (err) return err;
    }
    return FED_OK;
}
