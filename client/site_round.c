/* The round state machine of the site (client/site_internal.h): idle -> receiving (the
 * global model) -> training -> sending (the delta) -> idle, with the secure-aggregation
 * states shares and unmasking in between. Here: RoundStart (model checks, the model
 * transfer or the model held, the statistics round), the model's arrival, handing the
 * round to training (on this thread, or as a job), the Update and its upload, the
 * coordinator's Error about it, and every way a round ends: done, dropped (cancelling
 * its transfers, telling the coordinator), failed (Error with no detail about the local
 * examples). What deliberately does not live here: the training itself (site_train.c,
 * which never touches the connection), the secagg protocol messages (site_secagg.c) and
 * the connection loop that dispatches events (client.c). Runs on the I/O thread only. */
#include "client/site_internal.h"

#include "core/alloc.h"
#include "core/codec.h"
#include "core/log.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Host floats <-> little-endian F32, in place (nothing to do on little-endian hosts). */
static void swap_le(float *v, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        u = __builtin_bswap32(u);
        memcpy(&v[i], &u, 4);
    }
#else
    (void)v;
    (void)n;
#endif
}

/* Sends m; a failure to send ends the session (a LEFT event follows), so it is only
 * logged. FED_EINVAL (a message we must not send) is returned. */
fed_err site_send_msg(fed_site *s, const fed_msg *m) {
    if (!s->conn.cli) return FED_OK;
    fed_err e = fed_client_send(s->conn.cli, m);
    if (e == FED_EINVAL) return e;
    if (e != FED_OK)
        FED_LOG(FED_LOG_DEBUG, "site: %s not sent: %s", fed_msg_type_name(m->type),
                fed_client_errmsg(s->conn.cli));
    return FED_OK;
}

/* Sends Error{code, text}; about the round in progress (its round and attempt) when
 * about_round, else a request that is about no round. */
void site_send_error(fed_site *s, uint32_t code, const char *text, bool about_round) {
    fed_msg m = {.type = FED_MSG_ERROR};
    m.u.error.code = code;
    m.u.error.text = text;
    if (about_round && s->round.rs) {
        m.u.error.round = s->round.rs->round;
        m.u.error.attempt = s->round.rs->attempt;
    }
    if (site_send_msg(s, &m) != FED_OK)
        FED_LOG(FED_LOG_WARN, "site: could not send Error: %s", fed_errmsg());
}

/* The transfer id of the round's upload: one per attempt, since a channel's transfer ids
 * must never be reused (the attempt wraps after 65 536 retries of one round). */
static uint64_t upload_id(const fed_msg_round_start *rs) {
    return rs->round << 16 | (rs->attempt & 0xffffu);
}

/* Cancels a transfer of ours; one that already ended is no matter. */
static void cancel(fed_site *s, uint64_t id) {
    if (fed_client_cancel_transfer(s->conn.cli, id) != FED_OK)
        FED_LOG(FED_LOG_DEBUG, "site: transfer %" PRIu64 ": nothing to cancel", id);
}

/* Lean sites (simulation) keep no model between rounds: the buffers go, and the next
 * round receives the weights again (every round brings a new version anyway). */
static void release_buffers(fed_site *s) {
    fed_free(s->model.global);
    fed_free(s->model.rx);
    fed_free(s->res.delta);
    s->model.global = s->model.rx = s->res.delta = NULL;
    s->model.global_cap = s->model.rx_cap = s->res.delta_cap = 0;
    s->model.global_n = 0;
}

/* Frees what the round held: its RoundStart, its pipeline, its secure aggregation. */
static void forget_round(fed_site *s) {
    site_base_release(s->bases, &s->round.base);
    site_rs_free(&s->round.rs);
    site_stage_destroy_all(&s->round.pipe);
    site_sa_clear(s);
}

/* Forgets the round in progress, cancelling its transfers. */
static void end_round(fed_site *s) {
    if (s->conn.cli && s->round.rs) {
        if (s->round.state == ROUND_RECEIVING && s->round.rs->transfer_id)
            cancel(s, s->round.rs->transfer_id);
        if (s->round.state == ROUND_SENDING) cancel(s, upload_id(s->round.rs));
    }
    s->round.state = ROUND_IDLE;
    atomic_store(&s->job.state, JOB_NONE);
    forget_round(s);
    if (s->cfg.lean) release_buffers(s);
}

/* Drops the round in progress. An upload the coordinator may be receiving is cancelled,
 * and the coordinator told so (tell), so that it counts the site out of the attempt
 * instead of waiting for the rest until its deadline. */
static void drop_round_tell(fed_site *s, const char *why, bool tell) {
    if (!s->round.rs) return;
    FED_LOG(s->cfg.info, "site: round %" PRIu64 " dropped: %s", s->round.rs->round, why);
    if (tell && s->round.state == ROUND_SENDING) {
        char text[TEXT_MAX];
        snprintf(text, sizeof text, "upload cancelled: %s", why);
        site_send_error(s, FED_WIRE_INVALID, text, true);
    }
    s->stats.rounds_dropped++;
    end_round(s);
}

void site_drop_round(fed_site *s, const char *why) {
    drop_round_tell(s, why, true);
}

/* A round that cannot be done: one warn line with the local detail, Error{code, text}
 * to the coordinator (text must hold nothing about individual examples). */
static void fail_round(fed_site *s, uint32_t code, const char *text) {
    uint64_t round = s->round.rs ? s->round.rs->round : 0;
    FED_LOG(FED_LOG_WARN, "site: round %" PRIu64 " failed: %s", round, fed_errmsg());
    site_send_error(s, code, text, true);
    s->stats.rounds_failed++;
    end_round(s);
}

/* fail_round for an error whose detail is about the coordinator's own message (safe to
 * send back as it is). */
void site_fail_round_err(fed_site *s, fed_err e) {
    char text[TEXT_MAX];
    snprintf(text, sizeof text, "%s", fed_errdetail(e));
    fail_round(s, fed_wire_err_of(e), text);
}

/* fail_round for an error raised by the local data: only the class of error and the
 * data's shape go back. */
static void fail_round_local(fed_site *s, fed_err e, const char *what) {
    char text[TEXT_MAX];
    if (e == FED_ESHAPE && s->res.job_in)
        snprintf(text, sizeof text,
                 "%s: the local data (%zu features, %zu classes) do not fit the model (%zu "
                 "inputs, %zu outputs)",
                 what, s->stats.features, s->stats.classes, s->res.job_in, s->res.job_out);
    else
        snprintf(text, sizeof text, "%s: %s", what, fed_strerror(e));
    fail_round(s, fed_wire_err_of(e), text);
}

/* Sends the round's Update (the metrics of training and of the global model) announcing
 * `bytes` (len bytes, encoded as enc) as transfer `round`, then the transfer. */
fed_err site_send_update(fed_site *s, fed_encoding enc, const void *bytes, uint64_t len) {
    const fed_msg_round_start *rs = s->round.rs;
    fed_msg_metric metrics[7] = {
        {"train_loss", s->res.train_loss},
        {"train_accuracy", s->res.train_acc},
        {"global_loss", s->res.global_loss},
        {"global_accuracy", s->res.global_acc},
        {"eval_examples", s->cfg.train_fn ? (double)s->res.eval_examples
                                          : (double)(s->data.test ? s->data.test->n : 0)},
        {"steps", (double)s->res.steps},
        {"out_of_time", s->res.out_of_time ? 1.0 : 0.0},
    };
    fed_msg msg = {.type = FED_MSG_UPDATE};
    fed_msg_update *u = &msg.u.update;
    u->round = rs->round;
    u->model_version = rs->model_version;
    u->examples = s->res.examples;
    u->metrics = metrics;
    u->num_metrics = rs->stats ? 0 : 7; /* the statistics round trains nothing */
    if (s->cfg.train_fn) { /* a relay: only the metrics it has (the wire wants finite ones) */
        size_t k = 0;
        for (size_t i = 0; i < u->num_metrics; i++)
            if (isfinite(metrics[i].value)) metrics[k++] = metrics[i];
        u->num_metrics = k;
    }
    u->encoding = enc;
    u->transfer_id = upload_id(rs);
    u->total_bytes = len;
    u->attempt = rs->attempt;
    fed_sha256(bytes, (size_t)len, u->sha256);
    fed_err err = site_send_msg(s, &msg);
    if (!err) err = fed_client_send_transfer(s->conn.cli, u->transfer_id, bytes, len);
    if (!err) s->round.state = ROUND_SENDING;
    if (!err) s->stats.update_bytes += len;
    return err;
}

/* Sends the Update and the delta of a trained round (securely aggregated: the masked
 * update, once the neighbours' shares are here). */
static void send_round(fed_site *s) {
    fed_msg_round_start *rs = s->round.rs;
    if (rs->has_secagg) {
        if (!s->sa.client) { /* the key exchange failed while we trained: reported then */
            site_drop_round(s, "secure aggregation failed");
            return;
        }
        if (!s->sa.delivery) {
            s->round.state = ROUND_SHARES; /* site_on_secagg sends it when DELIVERY comes */
            return;
        }
        fed_err err = site_sa_send_masked(s);
        if (err) site_fail_round_err(s, err);
        return;
    }
    /* The stages that run when sending ("compress"): the stream replaces the delta. */
    site_update u = {.round = rs->round, .v = s->res.delta, .n = s->res.delta_n};
    fed_free(s->res.wire);
    s->res.wire = NULL;
    fed_err err = rs->stats ? FED_OK : site_stage_run(s->round.pipe, SITE_STAGE_SENT, &u);
    s->res.wire = u.wire;
    s->res.wire_len = u.wire_len;
    if (!err && u.wire && s->cfg.state_dir) /* the residual survives a restart */
        err = site_resid_save(s->cfg.state_dir, s->res.resid, s->res.resid_n);
    if (!err && u.wire) {
        err = site_send_update(s, u.wire_enc, u.wire, u.wire_len);
    } else if (!err) {
        swap_le(s->res.delta, s->res.delta_n);
        err = site_send_update(s, rs->stats ? FED_ENCODING_MOMENTS_F32 : FED_ENCODING_DELTA_F32,
                               s->res.delta, (uint64_t)s->res.delta_n * 4u);
    }
    if (err) site_fail_round_err(s, err);
}

/* On the site's own thread, after site_train_round: send, drop or fail the round. */
void site_conclude_round(fed_site *s, train_result r, fed_err err, const char *what) {
    switch (r) {
    case TR_OK:
        if (s->cfg.lean) { /* the delta is made: the weights are not needed again */
            fed_free(s->model.global);
            fed_free(s->model.rx);
            s->model.global = s->model.rx = NULL;
            s->model.global_cap = s->model.rx_cap = 0;
            s->model.global_n = 0;
        }
        send_round(s);
        return;
    case TR_ABORTED:
        site_drop_round(s, s->fit.abort_why[0] ? s->fit.abort_why : "interrupted");
        return;
    case TR_FAIL_MSG:
        site_fail_round_err(s, err);
        return;
    case TR_FAIL_DATA:
        fail_round_local(s, err, what);
        return;
    case TR_NONFINITE:
        fail_round(s, FED_WIRE_RANGE, "local training: the update is not finite");
        return;
    case TR_DEADLINE:
        site_fail_round_err(s, err); /* skips the round: the detail says why */
        return;
    }
}

/* Trains the round on this thread with the site's own model, then concludes it. */
static void run_round(fed_site *s) {
    atomic_store(&s->fit.abort, false);
    s->fit.abort_why[0] = '\0';
    const char *what = "";
    fed_err err = FED_OK;
    s->fit.in_fit = true;
    train_result r = site_train_round(s, &s->fit.own, &err, &what);
    s->fit.in_fit = false;
    site_conclude_round(s, r, err, what);
}

/* A full model transfer arrived: the received buffer becomes the global model (the old one
 * receives next), and its frozen base goes to the store, checked against the manifest,
 * unless the store has it already. */
static fed_err take_full(fed_site *s) {
    const fed_msg_manifest *mf = &s->round.rs->manifest;
    float *t = s->model.global;
    size_t c = s->model.global_cap;
    s->model.global = s->model.rx;
    s->model.global_cap = s->model.rx_cap;
    s->model.rx = t;
    s->model.rx_cap = c;
    s->model.global_n = (size_t)(mf->total_bytes / 4u);
    swap_le(s->model.global, s->model.global_n);
    if (!mf->has_base) return FED_OK;
    size_t n = fed_manifest_part_floats(mf, false);
    site_base *b = NULL;
    fed_err err = site_base_get(s->bases, mf->base_sha256, n, &b);
    if (err || b) {
        site_base_release(s->bases, &b);
        return err;
    }
    float *part = fed_mallocarray(n, sizeof *part);
    if (!part) return FED_ENOMEM;
    fed_manifest_gather(mf, false, s->model.global, part);
    uint8_t sha[FED_SHA256_LEN];
    fed_sha256(part, n * sizeof *part, sha);
    if (memcmp(sha, mf->base_sha256, FED_SHA256_LEN) != 0) {
        fed_free(part);
        return fed_errorf(FED_EDIGEST, "manifest.base_sha256 does not match the model's frozen "
                                       "tensors");
    }
    err = site_base_put(s->bases, sha, part, n, &b);
    site_base_release(s->bases, &b);
    return err;
}

/* A trainable-only transfer arrived: the global model is the base the round holds with
 * the received trainable tensors. */
static fed_err take_part(fed_site *s) {
    const fed_msg_manifest *mf = &s->round.rs->manifest;
    size_t n = (size_t)(mf->total_bytes / 4u);
    fed_err err = site_reserve(&s->model.global, &s->model.global_cap, n);
    if (err) return err;
    swap_le(s->model.rx, fed_manifest_part_floats(mf, true));
    fed_manifest_scatter(mf, false, site_base_data(s->round.base), s->model.global);
    fed_manifest_scatter(mf, true, s->model.rx, s->model.global);
    s->model.global_n = n;
    return FED_OK;
}

static void ask_model(fed_site *s, const char *what);

/* A downlink delta arrived (RoundStart.delta_from): the global model is the held one with
 * the decoded change added to its trainable tensors, as the coordinator added it; its
 * SHA-256 must then be the manifest's. FED_EDIGEST otherwise (the caller asks for the
 * weights), FED_EFORMAT for a stream that does not decode. */
static fed_err take_delta(fed_site *s) {
    const fed_msg_round_start *rs = s->round.rs;
    const fed_msg_manifest *mf = &rs->manifest;
    size_t n = fed_manifest_part_floats(mf, true);
    float *part = fed_mallocarray(n, sizeof *part), *d = fed_mallocarray(n, sizeof *d);
    fed_err err = part && d ? FED_OK : FED_ENOMEM;
    if (!err)
        err = fed_codec_decode((const uint8_t *)s->model.rx, (size_t)rs->delta_bytes, d, n, NULL);
    if (!err) {
        fed_manifest_gather(mf, true, s->model.global, part);
        for (size_t i = 0; i < n; i++) part[i] += d[i];
        fed_manifest_scatter(mf, true, part, s->model.global);
        uint8_t sha[FED_SHA256_LEN];
        swap_le(s->model.global, s->model.global_n); /* the digest is of the wire's bytes */
        fed_sha256(s->model.global, s->model.global_n * sizeof(float), sha);
        swap_le(s->model.global, s->model.global_n);
        if (memcmp(sha, mf->sha256, FED_SHA256_LEN) != 0)
            err = fed_errorf(FED_EDIGEST,
                             "the delta from version %" PRIu64 " did not rebuild "
                             "version %" PRIu64 " (manifest.sha256)",
                             rs->delta_from, rs->model_version);
    }
    fed_free(part);
    fed_free(d);
    return err;
}

/* The global model is in s->model.global: check nothing more, train. */
static void have_model(fed_site *s) {
    if (s->round.rs->transfer_id) {
        const fed_msg_round_start *rs = s->round.rs;
        fed_err err = rs->delta_from       ? take_delta(s)
                      : rs->trainable_only ? take_part(s)
                                           : take_full(s);
        if (err == FED_EDIGEST && rs->delta_from) {
            s->model.global_n = 0;
            s->round.state = ROUND_IDLE;
            ask_model(s, "no model rebuilt from the delta for");
            return;
        }
        if (err) {
            s->model.global_n = 0;       /* holds no model it can vouch for */
            s->round.state = ROUND_IDLE; /* the transfer is over: nothing to cancel */
            site_fail_round_err(s, err);
            return;
        }
        uint64_t bytes = rs->delta_from ? rs->delta_bytes
                         : rs->trainable_only
                             ? (uint64_t)fed_manifest_part_floats(&rs->manifest, true) * 4u
                             : rs->manifest.total_bytes;
        if (bytes) s->round.rx_s_per_byte = (fed_now_s() - s->round.t_rx) / (double)bytes;
        s->stats.model_bytes += bytes;
        if (rs->delta_from)
            s->stats.models_delta++;
        else if (rs->trainable_only)
            s->stats.models_trainable++;
        else
            s->stats.models_full++;
        s->model.global_version = s->round.rs->model_version;
        memcpy(s->model.global_sha, s->round.rs->manifest.sha256, FED_SHA256_LEN);
        fed_free(s->model.global_arch);
        s->model.global_arch = fed_strdup(s->round.rs->manifest.arch);
        if (!s->model.global_arch) s->model.global_n = 0; /* cannot describe it: do not claim it */
        FED_LOG(FED_LOG_DEBUG, "site: received model version %" PRIu64 " (%zu parameters)",
                s->model.global_version, s->model.global_n);
    }
    if (s->cfg.external) { /* a worker trains it: fed_site_job_* */
        s->round.state = ROUND_TRAINING;
        atomic_store(&s->fit.abort, false);
        s->fit.abort_why[0] = '\0';
        atomic_store(&s->job.state, JOB_READY);
        return;
    }
    s->round.state = ROUND_IDLE;
    run_round(s);
}

/* The statistics round (RoundStart.stats, before round 1 of a model without an input
 * transform): the exact moments of the raw training split in the groups of the model's
 * input (dataset/moments.h) are the round's update, plain or masked when securely
 * aggregated. No weights, no training: the coordinator fits one standardizer for the
 * whole federation from the sum. */
static void stats_round(fed_site *s) {
    const fed_msg_round_start *rs = s->round.rs;
    bool local = false;
    fed_err err = site_stats_moments(s, &rs->manifest, &local);
    if (err) {
        if (local)
            fail_round_local(s, err, "statistics");
        else
            site_fail_round_err(s, err);
        return;
    }
    if (rs->has_secagg && (err = site_sa_start(s))) {
        site_fail_round_err(s, err);
        return;
    }
    send_round(s);
}

/* Whether the site holds version v of rs's model: its weights, in the layout of rs. */
static bool holds(const fed_site *s, const fed_msg_round_start *rs, uint64_t v) {
    return s->model.global_n && s->model.global_version == v &&
           (uint64_t)s->model.global_n * 4u == rs->manifest.total_bytes && s->model.global_arch &&
           strcmp(s->model.global_arch, rs->manifest.arch) == 0;
}

/* The round needs what this site does not hold (what: "no model", "no frozen base"): ask
 * the coordinator for everything, which answers with a second RoundStart. */
static void ask_model(fed_site *s, const char *what) {
    const fed_msg_round_start *rs = s->round.rs;
    char text[64];
    snprintf(text, sizeof text, "%s version %" PRIu64, what, rs->model_version);
    FED_LOG(s->cfg.info, "site: round %" PRIu64 ": %s held; asking for it", rs->round, text);
    site_send_error(s, FED_WIRE_NO_MODEL, text, false); /* a request, not a failed round */
    s->stats.rounds_failed++;
    s->stats.models_asked++;
    end_round(s);
}

void site_on_round_start(fed_site *s, site_ev *ev) {
    if (s->round.rs) {
        char why[64];
        snprintf(why, sizeof why, "round %" PRIu64 " started", ev->rs->round);
        site_drop_round(s, why);
    }
    s->round.rs = ev->rs;
    ev->rs = NULL;
    s->round.t_round = s->round.t_rx = fed_now_s();
    s->stats.last_round = s->round.rs->round;
    s->stats.last_attempt = s->round.rs->attempt;
    const fed_msg_round_start *rs = s->round.rs;
    FED_LOG(FED_LOG_DEBUG, "site: round %" PRIu64 " starts from model version %" PRIu64, rs->round,
            rs->model_version);
    site_compress cz = {s->cfg.codec, s->cfg.codec_seed, &s->res.resid, &s->res.resid_n};
    fed_err err =
        site_pipe_build(&s->round.pipe, rs, &s->sa, &s->cfg.attack, &cz, s->cfg.train_fn != NULL);
    if (err) {
        site_fail_round_err(s, err);
        return;
    }
    if (s->cfg.train_fn && (rs->stats || rs->has_secagg)) { /* a relay cannot preserve them */
        const char *text =
            rs->stats ? "relay: the statistics round is not relayed (a relay holds no data): run "
                        "the top coordinator with --input-stats off, or give its model an input "
                        "standardisation"
                      : "relay: secure aggregation is not relayed (the relay would see its "
                        "sites' updates in the clear): run the top coordinator without --secagg";
        fed_errorf(FED_EUNSUPPORTED, "%s", text);
        fail_round(s, FED_WIRE_UNSUPPORTED, text);
        return;
    }
    if (rs->stats) {
        stats_round(s);
        return;
    }
    if (s->cfg.has_tok && rs->manifest.has_tokenizer &&
        memcmp(s->cfg.tok_sha, rs->manifest.tokenizer_sha256, FED_SHA256_LEN) != 0) {
        char ours[13], theirs[13];
        for (int i = 0; i < 6; i++) {
            snprintf(ours + 2 * i, 3, "%02x", s->cfg.tok_sha[i]);
            snprintf(theirs + 2 * i, 3, "%02x", rs->manifest.tokenizer_sha256[i]);
        }
        fed_errorf(FED_EINVAL, "tokenizer %s...", ours);
        char text[TEXT_MAX];
        snprintf(text, sizeof text,
                 "the model reads text with tokenizer %s..., the site's data were tokenized with "
                 "%s...: give the site the federation's model file (--tokenizer MODEL)",
                 theirs, ours);
        fail_round(s, FED_WIRE_UNSUPPORTED, text);
        return;
    }
    if (!s->cfg.external &&
        (err = site_prepare_model(s, &s->fit.own))) { /* external: when trained */
        site_fail_round_err(s, err);
        return;
    }
    if (rs->transfer_id && rs->trainable_only) {
        err = site_base_get(s->bases, rs->manifest.base_sha256,
                            fed_manifest_part_floats(&rs->manifest, false), &s->round.base);
        if (err) {
            site_fail_round_err(s, err);
            return;
        }
        if (!s->round.base) {
            ask_model(s, "no frozen base");
            return;
        }
    }
    if (rs->transfer_id && rs->delta_from && !holds(s, rs, rs->delta_from)) {
        ask_model(s, "no held model for the delta to"); /* the coordinator sends the weights */
        return;
    }
    if (rs->transfer_id && rs->delta_from && rs->delta_bytes > rs->manifest.total_bytes) {
        fail_round(s, FED_WIRE_INVALID, "round_start.delta_bytes exceeds the model's size");
        return;
    }
    if (rs->transfer_id) {
        uint64_t bytes = rs->delta_from       ? rs->delta_bytes
                         : rs->trainable_only ? fed_manifest_part_floats(&rs->manifest, true) * 4u
                                              : rs->manifest.total_bytes;
        if ((err = site_reserve(&s->model.rx, &s->model.rx_cap, (size_t)(bytes + 3) / 4))) {
            site_fail_round_err(s, err);
            return;
        }
        err = fed_client_recv_transfer(s->conn.cli, rs->transfer_id, s->model.rx, bytes,
                                       rs->delta_from       ? rs->delta_sha256
                                       : rs->trainable_only ? rs->manifest.trainable_sha256
                                                            : rs->manifest.sha256);
        if (!err && rs->has_secagg) err = site_sa_start(s); /* overlaps the transfer */
        if (err) {
            site_fail_round_err(s, err);
            return;
        }
        s->round.state = ROUND_RECEIVING;
        return;
    }
    if (!s->model.global_n || /* the weights of the manifest's digest, in its layout */
        memcmp(s->model.global_sha, rs->manifest.sha256, FED_SHA256_LEN) != 0 ||
        (uint64_t)s->model.global_n * 4u != rs->manifest.total_bytes ||
        strcmp(s->model.global_arch, rs->manifest.arch) != 0) {
        ask_model(s, "no model");
        return;
    }
    /* Keys only now: a site asking for the model again gets a second RoundStart. */
    if (rs->has_secagg && (err = site_sa_start(s))) {
        site_fail_round_err(s, err);
        return;
    }
    have_model(s);
}

/* An Error from the coordinator. About the Update being sent: the round is abandoned
 * (the coordinator rejected it), without telling it back. */
void site_on_error(fed_site *s, const site_ev *ev) {
    if (ev->err_round && (!s->round.rs || ev->err_round != s->round.rs->round ||
                          ev->err_attempt != s->round.rs->attempt)) {
        /* About an attempt that is over here too (an old Update, refused late). */
        FED_LOG(FED_LOG_DEBUG,
                "site: error about round %" PRIu64 " attempt %" PRIu64 " ignored: %s",
                ev->err_round, ev->err_attempt, ev->text);
        return;
    }
    FED_LOG(FED_LOG_WARN, "site: the coordinator reports error %" PRIu32 ": %s", ev->code,
            ev->text);
    if (s->round.state == ROUND_SENDING)
        drop_round_tell(s, "the coordinator rejected the update", false);
}

void site_on_transfer_done(fed_site *s, const site_ev *ev) {
    if (s->round.state != ROUND_RECEIVING || !s->round.rs ||
        ev->transfer_id != s->round.rs->transfer_id) {
        FED_LOG(FED_LOG_DEBUG, "site: transfer %" PRIu64 " arrived unasked", ev->transfer_id);
        return;
    }
    have_model(s);
}

void site_on_transfer_failed(fed_site *s, const site_ev *ev) {
    if (s->round.state != ROUND_RECEIVING || !s->round.rs ||
        ev->transfer_id != s->round.rs->transfer_id)
        return;
    fed_errorf(FED_EDIGEST, "the model transfer failed: %s", ev->text);
    s->round.state = ROUND_IDLE; /* the channel released the buffer: nothing to cancel */
    fail_round(s, FED_WIRE_DIGEST, "the model transfer did not match manifest.sha256");
}

void site_on_transfer_sent(fed_site *s, const site_ev *ev) {
    if (s->round.state != ROUND_SENDING || !s->round.rs ||
        ev->transfer_id != upload_id(s->round.rs))
        return;
    if (s->sa.client) { /* securely aggregated: the round ends once we helped unmask the sum */
        fed_free(s->sa.masked);
        s->sa.masked = NULL;
        s->round.state = ROUND_UNMASKING;
        return;
    }
    site_round_done(s);
}

/* The round's contribution is complete: its log line, and back to idle. */
void site_round_done(fed_site *s) {
    const fed_msg_round_start *rs = s->round.rs;
    if (rs->stats) {
        FED_LOG(s->cfg.info, "site: statistics of %zu training examples sent", s->res.examples);
        s->round.state = ROUND_IDLE;
        forget_round(s);
        return;
    }
    char global[128];
    if (s->data.test && s->data.test->n)
        snprintf(global, sizeof global, "global loss %.4f acc %.1f%% on %zu local test examples",
                 s->res.global_loss, 100.0 * s->res.global_acc, s->data.test->n);
    else
        snprintf(global, sizeof global, "no local test split");
    FED_LOG(s->cfg.info,
            "site: round %" PRIu64 ": %zu examples, train loss %.4f acc %.1f%%, %s, %.2f s",
            rs->round, s->data.train ? s->data.train->n : s->res.examples, s->res.train_loss,
            100.0 * s->res.train_acc, global, fed_now_s() - s->round.t_round);
    s->stats.rounds_done++;
    s->stats.last_examples = s->res.examples;
    s->stats.last_train_loss = s->res.train_loss;
    s->stats.last_train_acc = s->res.train_acc;
    s->stats.last_global_loss = s->res.global_loss;
    s->stats.last_global_acc = s->res.global_acc;
    s->round.state = ROUND_IDLE;
    forget_round(s);
    if (s->cfg.lean) release_buffers(s);
}
