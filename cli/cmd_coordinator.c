/* `fedtune coordinator`: the long-lived daemon that runs federated rounds (coordinator/
 * coordinator.h) in the foreground. This file only maps options (flags or the
 * [coordinator] section of --config) onto fed_coord_config, loads the initial model and
 * the optional evaluation set the way `fedtune eval` does, and installs the signal
 * handlers: SIGINT/SIGTERM stop cleanly, SIGHUP reopens the metrics file. Before any of
 * that, --listen and the TLS files are checked (net/channel.h): a malformed endpoint, a
 * missing or wrong file, an expired certificate or a site's certificate is a usage error
 * naming the option (exit 2), not a coordinator nobody can reach. With --http it also
 * serves /metrics, /status and the status page (net/http.h, docs/MONITORING.md) from the
 * coordinator's status record, on the HTTP server's own thread. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* sigaction */
#endif
#include "cli/commands.h"
#include "cli/prep.h"
#include "coordinator/coordinator.h"
#include "core/blas.h"
#include "net/http.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

typedef struct coord_cfg {
    const char *listen, *ca, *cert, *key, *crl; /* endpoint and TLS files */
    const char *model, *arch;                   /* initial model (and its architecture) */
    int allow_extra;                            /* ignore tensors the architecture lacks */
    size_t new_head;                            /* replace the head (classes; 0: keep) */
    lora_cfg lora;                              /* LoRA adapters and their aggregation */
    coord_shared_cfg sh;                        /* what `sim` maps the same way */
    size_t min_clients, min_fit, slots;         /* round engine */
    long wait_after_min_ms;                     /* wait for the sample after min_fit */
    size_t train_seed;                          /* client seed (+ round) */
    int ordered_uploads;                        /* fold updates in CN order */
    const char *eval_data;                      /* central evaluation set */
    data_cfg dc;                                /* how to read it */
    size_t eval_batch;                          /* its batch */
    const char *checkpoint_dir;                 /* checkpoints, resumed from on start */
    size_t keep_checkpoints;                    /* rounds kept */
    size_t seed;                                /* sampling seed */
    const char *stop_file;                      /* stop when it exists */
    size_t linger_ms;                           /* after a restart past the end */
    size_t threads;                             /* OpenBLAS threads */
    const char *http;                           /* monitoring address, or NULL */
    int http_tls;                               /* HTTPS with admin client certificates */
} coord_cfg;

#define F(field) offsetof(coord_cfg, field)
#define S(field) COORD_SHARED_AT(coord_cfg, sh, field)
static const opt_spec coord_opts[] = {
    {"listen", OPT_STRING, "tcp://0.0.0.0:7443", 1, 0, NULL, F(listen),
     "endpoint to bind: tcp://HOST:PORT (HOST an address, an interface or *; PORT 1..65535, "
     "or 0 for a free one, logged)"},
    {"ca", OPT_STRING, NULL, 1, 0, NULL, F(ca), "federation CA certificate (PEM)"},
    {"cert", OPT_STRING, NULL, 1, 0, NULL, F(cert), "coordinator certificate (PEM)"},
    {"key", OPT_STRING, NULL, 1, 0, NULL, F(key), "coordinator private key (PEM)"},
    {"crl", OPT_STRING, NULL, 1, 0, NULL, F(crl), "certificate revocation list (PEM), optional"},
    {"model", OPT_STRING, NULL, 1, 0, NULL, F(model), "initial global model (.safetensors)"},
    {"arch", OPT_STRING, NULL, 1, 0, NULL, F(arch),
     "architecture of a weights-only --model (preset, JSON or @FILE)"},
    {"allow-extra", OPT_BOOL, "false", 1, 0, NULL, F(allow_extra),
     "ignore tensors of --model that the architecture lacks"},
    {"new-head", OPT_SIZE, "0", 0, 65536, NULL, F(new_head),
     "replace the model's head by a fresh one with this many classes, drawn from --seed (a "
     "sentence encoder gets one appended; 0: keep)"},
    LORA_OPTS(F(lora)),
    {"rounds", OPT_SIZE, "10", 1, 1e9, NULL, S(rounds), "rounds to run in all"},
    {"fraction", OPT_FLOAT, "1", 1e-6, 1, NULL, S(fraction),
     "fraction of connected clients sampled per round"},
    {"min-clients", OPT_SIZE, "2", 1, 1e6, NULL, F(min_clients),
     "connected clients needed to start a round"},
    {"min-fit", OPT_SIZE, "2", 1, 1e6, NULL, F(min_fit),
     "accepted updates a round needs (<= min-clients)"},
    {"wait-after-min-ms", OPT_INT, "10000", -1, 1e9, NULL, F(wait_after_min_ms),
     "once min-fit updates are in, how long to wait for the rest of the sample (-1: until "
     "the deadline); a round closes at once when the whole sample answered"},
    {"deadline-ms", OPT_SIZE, "600000", 1, 1e9, NULL, S(deadline_ms),
     "round deadline in ms, pushed back while transfers progress"},
    TRAINING_OPTS(S, "1", "32", "adam", "0.001"),
    {"train-seed", OPT_SIZE, "1", 0, 1e18, NULL, F(train_seed),
     "client: training seed (a client uses seed + round)"},
    {"max-steps", OPT_SIZE, "0", 0, 1e12, NULL, S(max_steps),
     "client: most optimizer steps per round (0: no limit)"},
    {"freeze", OPT_LIST, NULL, 1, 0, NULL, S(freeze),
     "tensors kept frozen (globs such as 2.weight or *.bias, or a layer index: 0); only the "
     "others travel"},
    STRATEGY_OPTS(S(sc)),
    DP_OPTS(S(dp)),
    SECAGG_OPTS(S(sa)),
    UPDATE_OPTS(S),
    RETRY_OPTS(S(rc), "1000"),
    INPUT_STATS_OPT(S(input_stats), "auto"),
    {"ordered-uploads", OPT_BOOL, "false", 1, 0, NULL, F(ordered_uploads),
     "receive updates one at a time in site-name order, so that two runs with the same "
     "updates give the same model bytes (no extra memory; a round takes the sum of the "
     "uploads' times)"},
    {"slots", OPT_SIZE, "1", 1, 64, NULL, F(slots),
     "updates received at once (memory: (1 + slots) x trainable parameters; 2 receives "
     "many big uploads ~1.5x faster)"},
    {"eval-data", OPT_STRING, NULL, 1, 0, NULL, F(eval_data),
     "labeled held-out data for central evaluation (optional; text is tokenized by the "
     "model's tokenizer)"},
    DATA_OPTS(F(dc)),
    TEXT_OPTS(F(dc)),
    {"eval-batch", OPT_SIZE, "256", 1, 65536, NULL, F(eval_batch),
     "central evaluation batch (fewer where its activations would pass 16 MB)"},
    {"checkpoint-dir", OPT_STRING, NULL, 1, 0, NULL, F(checkpoint_dir),
     "folder of per-round checkpoints; the newest valid one is resumed on start"},
    {"keep-checkpoints", OPT_SIZE, "3", 1, 1e6, NULL, F(keep_checkpoints),
     "rounds of checkpoints kept"},
    {"metrics", OPT_STRING, NULL, 1, 0, NULL, S(metrics),
     "JSON-lines file of per-round metrics (reopened on SIGHUP)"},
    {"seed", OPT_SIZE, "1", 0, 1e18, NULL, F(seed), "client sampling seed"},
    {"target-accuracy", OPT_FLOAT, "0", 0, 1, NULL, S(target_accuracy),
     "stop when the central accuracy reaches this (0: off)"},
    {"stop-file", OPT_STRING, NULL, 1, 0, NULL, F(stop_file), "stop cleanly when this file exists"},
    {"out", OPT_STRING, NULL, 1, 0, NULL, S(out), "write the final model here"},
    {"linger-ms", OPT_SIZE, "60000", 0, 86400000, NULL, F(linger_ms),
     "restarted after the last round: once the model is exported, how long to stay up "
     "telling reconnecting sites that the federation is over"},
    {"threads", OPT_SIZE, "1", 1, 256, NULL, F(threads), "OpenBLAS threads (central evaluation)"},
    {"http", OPT_STRING, NULL, 1, 0, NULL, F(http),
     "serve monitoring on HOST:PORT (/metrics for Prometheus, /status JSON, / a status page); "
     "a loopback address (127.0.0.1:9464) unless --http-tls"},
    {"http-tls", OPT_BOOL, "false", 1, 0, NULL, F(http_tls),
     "serve --http over HTTPS with --cert and --key: every request needs a client certificate "
     "of the admin role from --ca (checked against --crl); any address may then be used"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef S
#undef F

static const opt_table coord_table = {
    "coordinator",
    "Run the federation coordinator: rounds of sampling, broadcast, aggregation, evaluation "
    "and checkpoints.",
    coord_opts, NULL};

static fed_coord *volatile running; /* for the signal handlers */

/* The HTTP server's routes (its thread): the coordinator's status record rendered. */
static const char *const http_paths[] = {"/", "/metrics", "/status", NULL};

static void http_route(void *user, const char *path, fed_http_reply *r) {
    fed_coord *c = user;
    char *out = NULL;
    fed_err err;
    if (strcmp(path, "/metrics") == 0) {
        err = fed_coord_metrics_text(c, &out);
        r->type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (strcmp(path, "/status") == 0) {
        err = fed_coord_status_json(c, &out);
        r->type = "application/json";
    } else {
        err = fed_coord_status_page(c, &out);
        r->type = "text/html; charset=utf-8";
    }
    if (err) {
        r->status = 500;
        r->type = "text/plain; charset=utf-8";
        out = NULL;
    }
    r->body = out;
    r->len = out ? strlen(out) : 0;
}

static void note_warning(void *user, fed_log_level level, const char *line) {
    fed_coord_note_warning(user, fed_log_level_name(level), line);
}

/* --http: the server on the coordinator c (started after it, stopped before it). */
static fed_err start_http(const coord_cfg *o, fed_coord *c, fed_http **h) {
    fed_http_config hc = {.addr = o->http,
                          .tls = o->http_tls != 0,
                          .cert_file = o->cert,
                          .key_file = o->key,
                          .ca_file = o->ca,
                          .crl_file = o->crl,
                          .paths = http_paths,
                          .route = http_route,
                          .user = c};
    fed_err err = fed_http_start(h, &hc);
    if (err) return fed_errprefix(err, "--http");
    FED_LOG(FED_LOG_INFO, "monitoring on %s://%s (/metrics, /status, /)",
            o->http_tls ? "https" : "http", fed_http_address(*h));
    return FED_OK;
}

static void on_stop(int sig) {
    (void)sig;
    fed_coord *c = running;
    if (c) fed_coord_request_stop(c);
}

static void on_hup(int sig) {
    (void)sig;
    fed_coord *c = running;
    if (c) fed_coord_request_reopen(c);
}

static void install(int sig, void (*fn)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

/* The channel's start-up checks of --listen and the TLS files (cli_check_channel). */
static fed_err check_net(const coord_cfg *o) {
    static const char *const flags[5] = {"--listen", "--ca", "--cert", "--key", "--crl"};
    fed_net_tls tls = {o->ca, o->cert, o->key, o->crl};
    return cli_check_channel(flags, o->listen, true, &tls, false);
}

/* The initial model as the options make it: loaded, a new head, LoRA adapters.
 * *keep_frozen: the model's frozen flags (the LoRA base) go to the federation as they are. */
static fed_err start_model(const coord_cfg *o, fed_model **m, fed_meta **meta, bool *keep_frozen) {
    fed_err err = prep_load_model(m, meta, o->model, o->arch, o->allow_extra != 0);
    if (err) return err;
    if (o->new_head) {
        fed_model *h = NULL;
        if ((err = fed_model_new_head(&h, *m, o->new_head, (uint64_t)o->seed ^ 0x6865616475ull)))
            return fed_errprefix(err, "--new-head");
        fed_model_destroy(m);
        *m = h;
        fed_meta_unset(*meta, META_CLASSES); /* names of outputs that no longer exist */
    }
    return prep_lora(m, &o->lora, o->new_head != 0, (uint64_t)o->seed, keep_frozen);
}

/* --eval-data the way the model expects it: text tokenized (never standardised), numbers
 * through the model's input transform. */
static fed_err load_eval(const coord_cfg *o, const fed_model *m, const fed_meta *meta,
                         fed_dataset **d) {
    const char *classes = fed_meta_get(meta, META_CLASSES);
    prep_text pt;
    fed_err err = prep_text_open(&pt, &o->dc, meta, m);
    if (!err) err = prep_load_data(d, o->eval_data, &o->dc, classes, &pt);
    if (!err && pt.loaded && fed_meta_get(meta, META_STANDARDIZE))
        err = fed_errorf(FED_EINVAL,
                         "%s is text data, but the model standardises its inputs (%s): token ids "
                         "must reach it unchanged",
                         o->eval_data, META_STANDARDIZE);
    else if (!err && !pt.loaded && (err = prep_apply_meta_std(meta, *d)))
        err = fed_errprefix(err, "%s: metadata %s", o->model, META_STANDARDIZE);
    prep_text_close(&pt);
    return err;
}

/* A model that reads text (its first layer an embedding) with a tokenizer in its metadata:
 * out = the digest every site's tokenizer must have (the manifest carries it), *has. */
static fed_err model_tokenizer_sha(const coord_cfg *o, const fed_model *m, const fed_meta *meta,
                                   uint8_t out[32], bool *has) {
    *has = false;
    const char *js = meta ? fed_meta_get(meta, META_TOKENIZER) : NULL;
    if (!js || fed_arch_layer(fed_model_arch(m), 0)->kind != FED_LAYER_EMBEDDING) return FED_OK;
    fed_tokenizer *t = NULL;
    fed_err err = fed_tokenizer_parse(&t, js, strlen(js), "model metadata " META_TOKENIZER);
    if (err) return fed_errprefix(err, "%s", o->model);
    err = prep_tokenizer_sha(t, out);
    fed_tokenizer_destroy(&t);
    *has = !err;
    return err;
}

static fed_err run_coordinator(const void *cfg) {
    const coord_cfg *o = cfg;
    if (!o->model) return fed_errorf(FED_EINVAL, "--model is required");
    if (!o->ca || !o->cert || !o->key)
        return fed_errorf(FED_EINVAL, "--ca, --cert and --key are required");
    fed_err net_err = check_net(o);
    if (!net_err && o->http && fed_http_check_addr(o->http, o->http_tls != 0) != FED_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", fed_errmsg());
        net_err = fed_errorf(FED_EINVAL, "--http %s", why);
    }
    if (!net_err && o->http_tls && !o->http)
        net_err = fed_errorf(FED_EINVAL, "--http-tls: no --http address to serve");
    if (net_err) return net_err;
    fed_model *m = NULL;
    fed_meta *meta = NULL;
    fed_dataset *d = NULL;
    fed_coord *c = NULL;
    fed_http *http = NULL;
    bool keep_frozen = false;
    fed_err err = start_model(o, &m, &meta, &keep_frozen);
    if (err) goto done;
    if (o->eval_data && (err = load_eval(o, m, meta, &d))) goto done;
    fed_blas_set_threads((int)o->threads);
    fed_coord_config cc = fed_coord_default_config();
    cc.server.endpoint = o->listen;
    cc.server.software = "fedtune coordinator";
    cc.server.net.tls.ca_file = o->ca;
    cc.server.net.tls.cert_file = o->cert;
    cc.server.net.tls.key_file = o->key;
    cc.server.net.tls.crl_file = o->crl;
    cc.eval_data = d;
    cc.model_meta = meta;
    cc.eval_batch = o->eval_batch;
    if ((err = prep_coord_shared(&o->sh, &cc))) goto done;
    cc.keep_frozen = keep_frozen;
    if ((err = model_tokenizer_sha(o, m, meta, cc.tokenizer_sha256, &cc.has_tokenizer))) goto done;
    if (fed_arch_layer(fed_model_arch(m), 0)->kind == FED_LAYER_EMBEDDING) {
        if (strcmp(o->sh.input_stats, "on") == 0) {
            err = fed_errorf(FED_EINVAL,
                             "--input-stats on: %s reads token ids (its first layer "
                             "is an embedding), which are never standardised",
                             o->model);
            goto done;
        }
        cc.input_stats = false;
    }
    cc.min_clients = o->min_clients;
    cc.min_fit = o->min_fit;
    cc.wait_after_min_ms = (int64_t)o->wait_after_min_ms;
    cc.train.seed = o->train_seed;
    cc.ordered_uploads = o->ordered_uploads != 0;
    cc.slots = o->slots;
    cc.ckpt.dir = o->checkpoint_dir;
    cc.ckpt.keep = o->keep_checkpoints;
    cc.seed = o->seed;
    cc.stop_file = o->stop_file;
    cc.linger_ms = (int64_t)o->linger_ms;
    if ((err = fed_coord_new_taking(&c, &cc, &m))) goto done; /* m is NULL now */
    cli_set_log_tap(note_warning, c);
    if (o->http && (err = start_http(o, c, &http))) goto done;
    running = c;
    install(SIGINT, on_stop);
    install(SIGTERM, on_stop);
    install(SIGHUP, on_hup);
    signal(SIGPIPE, SIG_IGN);
    err = fed_coord_run(c);
    running = NULL;
    install(SIGINT, SIG_DFL);
    install(SIGTERM, SIG_DFL);
    install(SIGHUP, SIG_DFL);
done:
    fed_http_stop(&http);
    cli_set_log_tap(NULL, NULL);
    fed_coord_destroy(&c);
    fed_data_destroy(&d);
    fed_meta_destroy(&meta);
    fed_model_destroy(&m);
    return err;
}

int cmd_coordinator(int argc, char **argv) {
    coord_cfg c;
    return cli_run(&coord_table, &c, sizeof c, argc, argv, run_coordinator);
}
