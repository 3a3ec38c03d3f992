/* The site (client/client.h): the object's lifetime (configuration check, fed_site_new,
 * fed_site_destroy), the connection loop with backoff (connect, poll, hand each event to
 * its handler, reconnect or give up) and the small public calls. What deliberately does
 * not live here: the data preparation (site_data.c), the round state machine
 * (site_round.c), the training of a round (site_train.c), secure aggregation
 * (site_secagg.c) and the threading of training: the queue of events polled while
 * training and the external-training jobs (site_worker.c). client/site_internal.h holds
 * struct fed_site and says which thread owns what. Option parsing and signals live in
 * cli/cmd_client.c; nothing here prints, everything goes through core/log.h. */
#include "client/site_internal.h"

#include "core/alloc.h"
#include "core/blas.h"
#include "core/log.h"
#include "core/rng.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef FED_VERSION
#define FED_VERSION "0.0.0"
#endif

/* ------------------------------------------------------------------------------------ */
/* Small helpers                                                                        */

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

bool site_stopped(const fed_site *s) {
    return s->fit.stop && *s->fit.stop;
}

static fed_err site_err(fed_site *s, fed_err e) {
    if (e != FED_OK) snprintf(s->errmsg, sizeof s->errmsg, "%s", fed_errdetail(e));
    return e;
}

/* Makes *buf hold at least n floats; keeps the block when it is big enough. */
fed_err site_reserve(float **buf, size_t *cap, size_t n) {
    if (*buf && *cap >= n) return FED_OK;
    fed_free(*buf);
    *cap = 0;
    *buf = fed_aligned_alloc(n ? n : 1, sizeof(float));
    if (!*buf) return FED_ENOMEM;
    *cap = n;
    return FED_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Configuration and construction                                                       */

fed_site_config fed_site_default_config(void) {
    fed_site_config c;
    memset(&c, 0, sizeof c);
    c.net = fed_net_default_config();
    c.test_split = 0.2;
    c.seed = 1;
    c.standardize = true;
    c.threads = 1;
    c.backoff_initial_ms = 1000;
    c.backoff_max_ms = 60000;
    c.backoff_jitter = 0.5;
    c.keep_model = true;
    return c;
}

static fed_err check_config(const fed_site_config *c) {
    if (!c->coordinator || !c->coordinator[0])
        return fed_errorf(FED_EINVAL, "coordinator: the coordinator's endpoint is required");
    if (!c->server_name || !c->server_name[0])
        return fed_errorf(FED_EINVAL,
                          "server-name: the coordinator's certificate name is required");
    if (!c->net.plaintext && (!c->net.tls.ca_file || !c->net.tls.cert_file || !c->net.tls.key_file))
        return fed_errorf(FED_EINVAL, "ca, cert and key: the site's TLS files are required");
    if (c->net.plaintext && (!c->identity || !c->identity[0]))
        return fed_errorf(FED_EINVAL, "identity: a plaintext (simulated) site needs a name");
    if (c->train_fn && (c->data || c->dataset))
        return fed_errorf(FED_EINVAL, "data: a site with delegated training (train_fn) has none");
    if (c->train_fn && (c->announce_examples < 1 || c->announce_examples > (1ull << 53)))
        return fed_errorf(FED_EINVAL, "announce-examples %" PRIu64 ": must be in [1, 2^53]",
                          c->announce_examples);
    if (c->train_fn && c->external_training)
        return fed_errorf(FED_EINVAL, "external training: not with delegated training");
    if (!c->train_fn && !c->data && !c->dataset)
        return fed_errorf(FED_EINVAL, "data: the site's labeled data file is required");
    if (!(c->test_split >= 0.0 && c->test_split <= 0.9))
        return fed_errorf(FED_EINVAL, "test-split: %g is not in [0, 0.9]", c->test_split);
    if (c->threads > 256) return fed_errorf(FED_EINVAL, "threads: %zu is above 256", c->threads);
    if (c->backoff_initial_ms < 1 || c->backoff_max_ms < c->backoff_initial_ms)
        return fed_errorf(FED_EINVAL, "reconnect delays: need 1 <= initial (%d ms) <= max (%d ms)",
                          c->backoff_initial_ms, c->backoff_max_ms);
    if (!(c->backoff_jitter >= 0.0 && c->backoff_jitter <= 1.0))
        return fed_errorf(FED_EINVAL, "reconnect jitter: %g is not in [0, 1]", c->backoff_jitter);
    return FED_OK;
}

fed_err fed_site_new(fed_site **out, const fed_site_config *cfg) {
    *out = NULL;
    fed_err err = check_config(cfg);
    if (err) return err;
    /* What would make every connection attempt fail is refused now, before the data are
     * loaded, not retried with backoff forever. */
    if (fed_net_check_endpoint(cfg->coordinator, false))
        return fed_errprefix(FED_EINVAL, "coordinator");
    fed_net_file which;
    if (!cfg->net.plaintext && (err = fed_net_check_tls(&cfg->net.tls, false, &which))) {
        if (err == FED_ENOMEM) return err; /* says nothing about the file */
        char why[512];
        snprintf(why, sizeof why, "%s", fed_errmsg());
        return fed_errorf(FED_EINVAL, "%s %s", fed_net_file_name(which), why);
    }
    fed_site *s = fed_calloc(1, sizeof *s);
    if (!s) return FED_ENOMEM;
    const char *tls[4] = {cfg->net.tls.ca_file, cfg->net.tls.cert_file, cfg->net.tls.key_file,
                          cfg->net.tls.crl_file};
    s->cfg.endpoint = fed_strdup(cfg->coordinator);
    s->cfg.server_name = fed_strdup(cfg->server_name);
    err = FED_ENOMEM;
    if (!s->cfg.endpoint || !s->cfg.server_name) goto fail;
    if (cfg->identity && !(s->cfg.identity = fed_strdup(cfg->identity))) goto fail;
    for (int i = 0; i < 4; i++)
        if (tls[i] && !(s->cfg.tls[i] = fed_strdup(tls[i]))) goto fail;
    s->cfg.net = cfg->net;
    s->cfg.net.tls.ca_file = s->cfg.tls[0];
    s->cfg.net.tls.cert_file = s->cfg.tls[1];
    s->cfg.net.tls.key_file = s->cfg.tls[2];
    s->cfg.net.tls.crl_file = s->cfg.tls[3];
    snprintf(s->cfg.software, sizeof s->cfg.software, "%s",
             cfg->software ? cfg->software : "fedtune " FED_VERSION);
    s->cfg.external = cfg->external_training;
    s->cfg.lean = !cfg->keep_model;
    s->cfg.info = s->cfg.external ? FED_LOG_DEBUG : FED_LOG_INFO; /* a simulator has thousands */
    s->cfg.threads = cfg->threads;
    s->cfg.max_epochs = cfg->max_epochs;
    s->cfg.max_batch = cfg->max_batch;
    s->cfg.attack = cfg->attack;
    s->cfg.codec = !cfg->no_codec;
    s->cfg.codec_seed = fed_mix64(cfg->seed ^ 0x636f646563ull); /* "codec" */
    if (cfg->tokenizer_sha256) {
        s->cfg.has_tok = true;
        memcpy(s->cfg.tok_sha, cfg->tokenizer_sha256, FED_SHA256_LEN);
    }
    if (cfg->save_updates && !(s->cfg.save_updates = fed_strdup(cfg->save_updates))) {
        err = FED_ENOMEM;
        goto fail;
    }
    if (cfg->state_dir) { /* the residual a previous run of this site left */
        if (!(s->cfg.state_dir = fed_strdup(cfg->state_dir))) {
            err = FED_ENOMEM;
            goto fail;
        }
        if ((err = site_resid_load(cfg->state_dir, &s->res.resid, &s->res.resid_n))) goto fail;
    }
    s->cfg.backoff_initial_ms = cfg->backoff_initial_ms;
    s->cfg.backoff_max_ms = cfg->backoff_max_ms;
    s->cfg.backoff_jitter = cfg->backoff_jitter;
    atomic_init(&s->job.state, JOB_NONE);
    atomic_init(&s->fit.abort, false);
    fed_rng_seed(&s->conn.jitter,
                 (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)s);
    s->cfg.train_fn = cfg->train_fn;
    s->cfg.train_user = cfg->train_user;
    if (cfg->train_fn)
        s->stats.train_examples = (size_t)cfg->announce_examples;
    else if ((err = site_prepare_data(s, cfg)))
        goto fail;
    if (cfg->base_cache) {
        s->bases = cfg->base_cache;
    } else {
        if ((err = fed_base_cache_new(&s->bases, cfg->base_dir))) {
            err = fed_errprefix(err, "base_dir");
            goto fail;
        }
        s->own_bases = true;
    }
    if (!s->cfg.net.plaintext &&
        (err = fed_id_new(&s->sa.id, s->cfg.tls[1], s->cfg.tls[2], s->cfg.tls[0], s->cfg.tls[3])))
        goto fail;
    if (cfg->zmq_ctx) {
        s->conn.zctx = cfg->zmq_ctx;
    } else {
        s->conn.zctx = fed_net_context_new();
        if (!s->conn.zctx) {
            err = FED_ENOMEM;
            goto fail;
        }
        s->conn.own_zctx = true;
    }
    *out = s;
    return FED_OK;
fail:
    fed_site_destroy(&s);
    return err;
}

void fed_site_destroy(fed_site **sp) {
    fed_site *s = *sp;
    if (!s) return;
    *sp = NULL;
    site_queue_clear(s);
    fed_client_destroy(&s->conn.cli);
    if (s->conn.own_zctx) fed_net_context_destroy(&s->conn.zctx);
    site_rs_free(&s->round.rs);
    site_stage_destroy_all(&s->round.pipe);
    if (s->bases) site_base_release(s->bases, &s->round.base);
    if (s->own_bases) fed_base_cache_destroy(&s->bases);
    site_trainer_clear(&s->fit.own);
    fed_free(s->model.global_arch);
    fed_free(s->model.global);
    fed_free(s->model.rx);
    fed_free(s->res.delta);
    fed_free(s->res.wire);
    fed_free(s->res.resid);
    fed_sa_client_destroy(&s->sa.client);
    fed_free(s->sa.delivery);
    fed_free(s->sa.masked);
    fed_id_destroy(&s->sa.id);
    fed_data_destroy(&s->data.train);
    fed_data_destroy(&s->data.test);
    fed_data_destroy(&s->data.train_raw);
    fed_data_destroy(&s->data.test_raw);
    fed_free(s->data.transform);
    fed_free(s->cfg.save_updates);
    fed_free(s->cfg.state_dir);
    for (int i = 0; i < 4; i++) fed_free(s->cfg.tls[i]);
    fed_free(s->cfg.endpoint);
    fed_free(s->cfg.server_name);
    fed_free(s->cfg.identity);
    fed_free(s);
}

void fed_site_stats_get(const fed_site *s, fed_site_stats *st) {
    *st = s->stats;
    st->model_version = s->model.global_n ? s->model.global_version : 0;
}

const char *fed_site_errmsg(const fed_site *s) {
    return s->errmsg;
}

/* ------------------------------------------------------------------------------------ */
/* The connection loop                                                                  */

static fed_err connect_now(fed_site *s) {
    fed_client_config cc = fed_client_default_config();
    cc.endpoint = s->cfg.endpoint;
    cc.server_name = s->cfg.server_name;
    cc.net = s->cfg.net;
    cc.identity = s->cfg.identity;
    const char *caps[6] = {FED_SITE_CAP_DELTA, FED_SITE_CAP_EVAL, FED_SITE_CAP_SECAGG,
                           FED_SITE_CAP_BASE};
    size_t ncaps = 4;
    if (s->cfg.codec) caps[ncaps++] = FED_SITE_CAP_CODEC;
    if (!s->cfg.lean) caps[ncaps++] = FED_SITE_CAP_DELTA_DOWN; /* it keeps what it holds */
    cc.hello.software = s->cfg.software;
    cc.hello.capabilities = caps;
    cc.hello.num_capabilities = ncaps;
    cc.hello.num_bases = site_base_list(s->bases, cc.hello.bases, FED_MSG_MAX_BASES);
    cc.hello.train_examples = s->stats.train_examples;
    cc.hello.eval_examples = s->stats.eval_examples;
    s->conn.gen++;
    return fed_client_new(&s->conn.cli, s->conn.zctx, &cc);
}

/* Reconnect delay after `attempt` failures in a row. */
static int backoff_ms(fed_site *s, int attempt) {
    double d = (double)s->cfg.backoff_initial_ms;
    for (int i = 0; i < attempt && d < (double)s->cfg.backoff_max_ms; i++) d *= 2.0;
    if (d > (double)s->cfg.backoff_max_ms) d = (double)s->cfg.backoff_max_ms;
    d *= 1.0 - s->cfg.backoff_jitter * fed_rng_uniform_d(&s->conn.jitter);
    return d < 1.0 ? 1 : (int)d;
}

static void disconnect(fed_site *s) {
    if (s->round.rs) site_drop_round(s, "the connection ended");
    site_queue_clear(s);
    fed_client_destroy(&s->conn.cli);
}

/* Handles one event of the connection; *done on the coordinator's final Bye. */
static void on_event(fed_site *s, site_ev *ev, bool *done) {
    switch (ev->type) {
    case FED_NET_NONE:
        break;
    case FED_NET_JOINED:
        s->conn.attempt = 0;
        s->stats.connects++;
        FED_LOG(s->cfg.info,
                "site: joined the coordinator %s at %s with %zu training / %zu test examples",
                ev->text, s->cfg.endpoint, s->stats.train_examples, s->stats.eval_examples);
        break;
    case FED_NET_LEFT: {
        disconnect(s);
        int ms = backoff_ms(s, s->conn.attempt++);
        FED_LOG(s->cfg.info, "site: connection to %s ended (%s); reconnecting in %.1f s",
                s->cfg.endpoint, ev->text[0] ? ev->text : fed_strerror(ev->err),
                (double)ms / 1000.0);
        s->conn.next_connect = fed_now_s() + (double)ms / 1000.0;
        break;
    }
    case FED_NET_MESSAGE:
        if (ev->msg == FED_MSG_ROUND_START) {
            site_on_round_start(s, ev);
        } else if (ev->msg == FED_MSG_BYE && ev->code) {
            FED_LOG(s->cfg.info, "site: the coordinator says goodbye: %s",
                    ev->text[0] ? ev->text : "(no reason)");
            s->stats.bye = true;
            *done = true;
        } else if (ev->msg == FED_MSG_BYE) {
            /* Only the coordinator process is going away (a restart): come back. */
            disconnect(s);
            int ms = backoff_ms(s, s->conn.attempt++);
            FED_LOG(s->cfg.info, "site: the coordinator is going away (%s); reconnecting in %.1f s",
                    ev->text[0] ? ev->text : "no reason", (double)ms / 1000.0);
            s->conn.next_connect = fed_now_s() + (double)ms / 1000.0;
        } else if (ev->msg == FED_MSG_SECAGG) {
            site_on_secagg(s, ev->sa_round, ev->sa, ev->sa_len);
        } else if (ev->msg == FED_MSG_ERROR) {
            site_on_error(s, ev);
        } else {
            FED_LOG(FED_LOG_DEBUG, "site: ignored a %s message", fed_msg_type_name(ev->msg));
        }
        break;
    case FED_NET_TRANSFER_DONE:
        site_on_transfer_done(s, ev);
        break;
    case FED_NET_TRANSFER_SENT:
        site_on_transfer_sent(s, ev);
        break;
    case FED_NET_TRANSFER_FAILED:
        site_on_transfer_failed(s, ev);
        break;
    }
}

fed_err fed_site_step(fed_site *s, int timeout_ms, bool *done) {
    *done = false;
    int job = atomic_load(&s->job.state);
    if (job == JOB_RUNNING || job == JOB_DONE) {
        /* A worker has the round: only move bytes and queue what arrives. */
        site_pump(s);
        return FED_OK;
    }
    if (!s->conn.cli) {
        double wait = s->conn.next_connect - fed_now_s();
        if (wait > 0.0) {
            int ms = (int)(wait * 1000.0) + 1;
            if (timeout_ms > 0) sleep_ms(ms < timeout_ms ? ms : timeout_ms);
            return FED_OK;
        }
        fed_err err = connect_now(s);
        if (err == FED_EIO) { /* e.g. a name that does not resolve yet */
            int ms = backoff_ms(s, s->conn.attempt++);
            FED_LOG(FED_LOG_WARN, "site: cannot connect to %s: %s; retrying in %.1f s",
                    s->cfg.endpoint, fed_errmsg(), (double)ms / 1000.0);
            s->conn.next_connect = fed_now_s() + (double)ms / 1000.0;
            return FED_OK;
        }
        if (err) return site_err(s, err);
    }
    site_ev ev;
    fed_err err = site_next_event(s, timeout_ms, &ev);
    if (err) return site_err(s, err);
    if (ev.type == FED_NET_LEFT && ev.permanent) {
        /* The coordinator refused our certificate (or we its): the same again next time. */
        disconnect(s);
        err = fed_errorf(ev.err ? ev.err : FED_EAUTH, "%s; not retrying", ev.text);
        site_ev_free(&ev);
        return site_err(s, err);
    }
    on_event(s, &ev, done);
    site_ev_free(&ev);
    return FED_OK;
}

fed_err fed_site_run(fed_site *s, volatile sig_atomic_t *stop) {
    if (s->cfg.external)
        return site_err(s, fed_errorf(FED_EINVAL, "fed_site_run: this site trains externally "
                                                  "(fed_site_step and fed_site_job_*)"));
    s->fit.stop = stop;
    s->stats.bye = false;
    if (s->cfg.threads) fed_blas_set_threads((int)s->cfg.threads);
    s->conn.attempt = 0;
    s->conn.next_connect = 0.0;
    fed_err err = FED_OK;
    for (;;) {
        if (site_stopped(s)) {
            fed_site_say_bye(s);
            FED_LOG(s->cfg.info, "site: stopping");
            break;
        }
        bool done = false;
        if ((err = fed_site_step(s, POLL_MS, &done)) || done) break;
    }
    disconnect(s);
    s->fit.stop = NULL;
    return site_err(s, err);
}

uint64_t fed_site_stats_failed(const fed_site_stats *st) {
    return st->rounds_failed - st->models_asked;
}

void fed_site_set_stop(fed_site *s, volatile sig_atomic_t *stop) {
    s->fit.stop = stop;
}

void fed_site_say_bye(fed_site *s) {
    if (s->conn.cli && fed_client_ready(s->conn.cli)) {
        fed_msg m = {.type = FED_MSG_BYE};
        m.u.bye.reason = "site stopping";
        (void)site_send_msg(s, &m);
    }
}

fed_err fed_site_disconnect(fed_site *s) {
    int job = atomic_load(&s->job.state);
    if (job == JOB_RUNNING)
        return site_err(s, fed_errorf(FED_EAGAIN, "fed_site_disconnect: a worker is training"));
    atomic_store(&s->job.state, JOB_NONE);
    disconnect(s);
    return FED_OK;
}

int fed_site_wake_fds(fed_site *s, int fds[2], uint64_t *conn) {
    *conn = s->conn.gen;
    return s->conn.cli ? fed_client_wake_fds(s->conn.cli, fds) : 0;
}

bool fed_site_busy(fed_site *s) {
    int job = atomic_load(&s->job.state);
    if (job == JOB_READY || job == JOB_DONE || !s->conn.cli) return true;
    if (job != JOB_RUNNING && s->q.len) return true; /* while training the queue waits */
    return fed_client_busy(s->conn.cli);
}

bool fed_site_connected(const fed_site *s) {
    return s->conn.cli && fed_client_ready(s->conn.cli);
}
