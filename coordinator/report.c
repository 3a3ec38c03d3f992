/* What a closed round leaves behind: the central evaluation of the new global model,
 * the round's metrics line (JSON lines), and its checkpoint (checkpoint.c writes the
 * files). */
#include "coordinator/internal.h"

/* A central evaluation batch's activations stay within this many floats a thread (16 MB):
 * the FedAvg CNN's 256 examples would be 91 MB, for each evaluation thread. The batch
 * changes the last bits of the mean loss, not the accuracy. */
#define EVAL_ACT_FLOATS ((size_t)4 << 20)

size_t fed__coord_eval_batch(const fed_coord *c) {
    size_t b = c->cfg.eval_batch ? c->cfg.eval_batch : 256;
    size_t per = fed_model_activation_floats(c->model);
    if (per && b > EVAL_ACT_FLOATS / per) b = EVAL_ACT_FLOATS / per;
    return b ? b : 1;
}

fed_err fed__coord_evaluate(fed_coord *c) {
    c->cur.central_loss = c->cur.central_acc = (double)NAN;
    if (c->cfg.eval_data) {
        const fed_dataset *d = c->stats.eval_own ? c->stats.eval_own : c->cfg.eval_data;
        double loss, acc;
        fed_err err = fed_evaluate_ce_threads(c->model, d, fed__coord_eval_batch(c),
                                              c->cfg.eval_threads, &loss, &acc);
        if (err) return fed_errprefix(err, "central evaluation");
        c->cur.central_loss = loss;
        c->cur.central_acc = acc;
    }
    c->cur.metric = c->cfg.metric ? c->cfg.metric(c->cfg.metric_user, c->model) : (double)NAN;
    double wsum = 0, l = 0, a = 0, tw = 0, tl = 0;
    for (size_t i = 0; i < c->ncl; i++) {
        const client *k = &c->cl[i];
        if (k->status == ST_ACCEPTED && isfinite(k->tloss)) {
            tw += (double)k->weight;
            tl += (double)k->weight * k->tloss;
        }
        if (k->status != ST_ACCEPTED || !isfinite(k->gloss) || !isfinite(k->gacc)) continue;
        if (k->geval == 0) continue; /* a site without a test split evaluated nothing */
        double w = (double)k->weight;
        if (isfinite(k->geval) && k->geval > 0) w = k->geval;
        wsum += w;
        l += w * k->gloss;
        a += w * k->gacc;
    }
    c->cur.fed_loss = wsum > 0 ? l / wsum : (double)NAN;
    c->cur.fed_acc = wsum > 0 ? a / wsum : (double)NAN;
    c->cur.fed_weight = wsum;
    c->cur.train_loss = tw > 0 ? tl / tw : (double)NAN;
    return FED_OK;
}

static void json_num(FILE *f, const char *key, double v) {
    if (isfinite(v))
        fprintf(f, ",\"%s\":%.9g", key, v);
    else
        fprintf(f, ",\"%s\":null", key);
}

static void write_metrics(fed_coord *c) {
    if (c->signals.reopen) {
        c->signals.reopen = 0;
        if (fed__coord_open_metrics(c) != FED_OK)
            FED_LOG(FED_LOG_ERROR, "metrics: %s", fed_errmsg());
    }
    FILE *f = c->metrics;
    if (!f) return;
    const fed_coord_round_stats *s = &c->cur;
    fprintf(f,
            "{\"time\":%lld,\"round\":%" PRIu64 ",\"model_version\":%" PRIu64
            ",\"attempts\":%" PRIu64 ",\"sampling_seed\":%" PRIu64 ",\"sample_seed\":%" PRIu64
            ",\"strategy\":\"%s\",\"sampled_clients\":[",
            (long long)time(NULL), s->round, s->model_version, s->attempts, c->cfg.seed,
            s->sample_seed, fed_strategy_name(c->cfg.strategy.kind));
    bool first = true;
    for (size_t i = 0; i < c->ncl; i++) {
        const client *k = &c->cl[i];
        if (k->status == ST_IDLE) continue;
        fputs(first ? "\"" : ",\"", f);
        for (const char *p = k->cn; *p; p++) {
            if (*p == '"' || *p == '\\') fputc('\\', f);
            if ((unsigned char)*p >= 0x20) fputc(*p, f);
        }
        fputc('"', f);
        first = false;
    }
    /* The accepted updates in the order they were folded, with their weights: with the
     * sites' own copies of their deltas this replays the aggregate bit for bit. */
    fputs("],\"accepted\":[", f);
    for (size_t seq = 1; seq <= s->returned; seq++) {
        for (size_t i = 0; i < c->ncl; i++) {
            const client *k = &c->cl[i];
            if (k->status != ST_ACCEPTED || k->commit_seq != seq) continue;
            fputs(seq > 1 ? ",{\"cn\":\"" : "{\"cn\":\"", f);
            for (const char *p = k->cn; *p; p++) {
                if (*p == '"' || *p == '\\') fputc('\\', f);
                if ((unsigned char)*p >= 0x20) fputc(*p, f);
            }
            fprintf(f, "\",\"examples\":%.9g}", (double)k->weight);
        }
    }
    fprintf(f, "],\"sampled\":%zu,\"returned\":%zu,\"rejected\":%zu,\"failed\":%zu", s->sampled,
            s->returned, s->rejected, s->failed);
    if (c->cfg.tally && c->cfg.tally_key) {
        size_t n = 0;
        for (size_t i = 0; i < c->ncl; i++)
            if (c->cl[i].status == ST_ACCEPTED && c->cfg.tally(c->cfg.tally_user, c->cl[i].cn)) n++;
        fprintf(f, ",\"%s\":%zu", c->cfg.tally_key, n);
    }
    json_num(f, "examples", s->examples);
    json_num(f, "central_loss", s->central_loss);
    json_num(f, "central_accuracy", s->central_acc);
    if (c->cfg.metric && c->cfg.metric_key) json_num(f, c->cfg.metric_key, s->metric);
    json_num(f, "train_loss", s->train_loss);
    json_num(f, "federated_loss", s->fed_loss);
    json_num(f, "federated_accuracy", s->fed_acc);
    if (fed_loss_for_model(c->model) == FED_LOSS_NEXT_TOKEN) { /* losses per token */
        json_num(f, "central_ppl", exp(s->central_loss));
        json_num(f, "federated_ppl", exp(s->fed_loss));
    }
    fprintf(f, ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64, s->bytes_in, s->bytes_out);
    fprintf(f, ",\"models_full\":%zu,\"models_trainable_only\":%zu,\"model_bytes\":%" PRIu64,
            s->models_full, s->models_trainable, s->model_bytes);
    if (fed_codec_on(&c->down.codec)) fprintf(f, ",\"models_delta\":%zu", s->models_delta);
    fprintf(f, ",\"update_bytes\":%" PRIu64 ",\"updates_compressed\":%zu", s->update_bytes,
            s->updates_compressed);
    json_num(f, "seconds", s->seconds);
    if (c->cfg.secagg.on)
        fprintf(f, ",\"secagg_summed\":%zu,\"secagg_dropped\":%zu", s->returned, s->secagg_dropped);
    if (c->dp.acc) {
        json_num(f, "epsilon", s->epsilon);
        fprintf(f, ",\"dp_delta\":%.17g,\"dp_clipped\":%zu,\"dp_clip\":%.9g", c->cfg.dp.delta,
                s->clipped, s->clip);
    }
    fputs("}\n", f);
    if (fflush(f) != 0)
        FED_LOG(FED_LOG_ERROR, "metrics %s: %s", c->cfg.metrics_file, strerror(errno));
}

fed_err fed__coord_checkpoint(fed_coord *c) {
    fed_coord_round_stats *s = &c->cur;
    s->round = fed__coord_current_round(c);
    s->model_version = c->version;
    s->attempts = c->att.n;
    s->sample_seed = c->att.sample_seed;
    fed_net_stats st;
    fed_server_stats(c->srv, &st);
    s->bytes_in = st.bytes_received - c->att.rx0;
    s->bytes_out = st.bytes_sent - c->att.tx0;
    s->seconds = (double)(fed_now_ms() - c->att.t0) / 1000.0;
    if (c->cfg.ckpt.dir) {
        fed_meta *extra = NULL;
        fed_err err = c->dp.acc || c->stats.ours ? fed_meta_new(&extra) : FED_OK;
        if (!err && c->dp.acc) err = fed__coord_accountant_meta(c->dp.acc, c->dp.clip_now, extra);
        if (!err && c->stats.ours) err = fed_meta_set(extra, META_STD, c->stats.transform);
        if (!err)
            err = fed_ckpt_write(c->cfg.ckpt.dir, s->round, c->version, c->model, c->strat,
                                 c->cfg.seed, c->cfg.ckpt.keep, extra);
        fed_meta_destroy(&extra);
        if (err) return fed_errprefix(err, "checkpoint of round %" PRIu64, s->round);
    }
    char dp[96] = "", sa[96] = "";
    if (c->dp.acc && c->cfg.secagg.on)
        snprintf(dp, sizeof dp, "; DP epsilon %.4g at delta %g (clipped and noised at the sites)",
                 s->epsilon, c->cfg.dp.delta);
    else if (c->dp.acc)
        snprintf(dp, sizeof dp, "; DP epsilon %.4g at delta %g (%zu of %zu clipped at %.4g)",
                 s->epsilon, c->cfg.dp.delta, s->clipped, s->returned, s->clip);
    if (c->cfg.secagg.on)
        snprintf(sa, sizeof sa, "; secure sum of %zu (%zu dropped after sharing keys)", s->returned,
                 s->secagg_dropped);
    char models[128] = "";
    if (fed_codec_on(&c->down.codec))
        snprintf(models, sizeof models,
                 " (models: %zu full, %zu trainable-only, %zu %s deltas, %" PRIu64 " bytes)",
                 s->models_full, s->models_trainable, s->models_delta, c->down.name,
                 s->model_bytes);
    else if (s->models_full || s->models_trainable)
        snprintf(models, sizeof models,
                 " (models: %zu full, %zu trainable-only, %" PRIu64 " bytes)", s->models_full,
                 s->models_trainable, s->model_bytes);
    char ups[128] = ""; /* the uplink's payload, and how much of it the codec carried */
    if (fed_codec_on(&c->codec))
        snprintf(ups, sizeof ups, " (updates: %zu %s, %zu f32, %" PRIu64 " bytes)",
                 s->updates_compressed, c->codec_name, s->returned - s->updates_compressed,
                 s->update_bytes);
    char central[64] = "central -";
    if (!isnan(s->central_loss))
        snprintf(central, sizeof central, "central loss %.4f acc %.4f", s->central_loss,
                 s->central_acc);
    if (!isnan(s->central_loss) && fed_loss_for_model(c->model) == FED_LOSS_NEXT_TOKEN)
        snprintf(central, sizeof central, "central loss %.4f ppl %.2f acc %.4f", s->central_loss,
                 exp(s->central_loss), s->central_acc);
    FED_LOG(FED_LOG_INFO,
            "round %" PRIu64 "/%" PRIu64 ": clients %zu sampled, %zu returned, %zu rejected, "
            "%zu failed; "
            "%.0f examples; train loss %.4f; %s; federated loss %.4f acc %.4f; "
            "bytes in %" PRIu64 "%s out %" PRIu64 "%s; %.2f s%s%s",
            s->round, c->cfg.rounds, s->sampled, s->returned, s->rejected, s->failed, s->examples,
            s->train_loss, central, s->fed_loss, s->fed_acc, s->bytes_in, ups, s->bytes_out, models,
            s->seconds, sa, dp);
    write_metrics(c);
    c->last = *s;
    if (c->cfg.on_round) c->cfg.on_round(c->cfg.on_round_user, s);
    c->rounds_done++;
    c->att.n = 0;
    c->att.same_fails = 0;
    c->att.retry_at = 0;
    fed__coord_end_attempt(c);
    fed__coord_status_round(c, c->cfg.ckpt.dir != NULL);
    return FED_OK;
}
