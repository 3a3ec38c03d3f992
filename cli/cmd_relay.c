/* `fedtune relay`: an intermediate aggregator (docs/FEDERATION.md, "Hierarchies"). To the
 * upstream coordinator it is one site (client/client.h with delegated training: its own
 * site certificate, no data); to its own sites it is a coordinator (coordinator/
 * coordinator.h in driven mode: its own server certificate and address). Each upstream
 * round becomes one downstream round with the same number, weights, training spec and
 * input transform, a deadline that ends before the upstream one, and the relay answers
 * upstream with its sites' example-weighted mean delta and their total example count, so
 * that FedAvg through relays equals flat FedAvg. This file maps the options ([relay]
 * section or flags), makes the two halves and alternates their steps on one thread; the
 * downstream coordinator is made at the first upstream round, from its model. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* sigaction */
#endif
#include "cli/commands.h"
#include "cli/options.h"
#include "client/client.h"
#include "coordinator/coordinator.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

typedef struct relay_cfg {
    const char *upstream, *server_name; /* the upstream coordinator */
    const char *ca, *cert, *key, *crl;  /* the federation CA, this relay's site identity */
    const char *listen, *listen_cert, *listen_key; /* its coordinator side */
    size_t announce_examples;                      /* Hello's count: the most an update claims */
    size_t min_clients, min_fit;                   /* its rounds */
    double fraction;
    long wait_after_min_ms;
    size_t deadline_ms;       /* when the upstream round gives none */
    int ordered_uploads;      /* fold its sites' updates in CN order */
    size_t slots;             /* updates received at once */
    size_t max_examples;      /* bound of one site's claim */
    double max_update_norm;   /* L2 bound of one site's delta (0: off) */
    const char *aggregation;  /* only mean: what the relay can preserve */
    double reconnect_initial; /* upstream reconnects, seconds */
    double reconnect_max;
} relay_cfg;

#define F(field) offsetof(relay_cfg, field)
static const opt_spec relay_opts[] = {
    {"upstream", OPT_STRING, NULL, 1, 0, NULL, F(upstream),
     "the upstream coordinator's address: tcp://HOST:PORT"},
    {"server-name", OPT_STRING, NULL, 1, 0, NULL, F(server_name),
     "the name the upstream coordinator's certificate must carry"},
    {"ca", OPT_STRING, NULL, 1, 0, NULL, F(ca),
     "the federation CA certificate (PEM): checks the upstream coordinator and this relay's "
     "sites"},
    {"cert", OPT_STRING, NULL, 1, 0, NULL, F(cert),
     "this relay's site certificate (fedtune-certs site NAME): its identity upstream"},
    {"key", OPT_STRING, NULL, 1, 0, NULL, F(key), "its private key (PEM, mode 0600)"},
    {"crl", OPT_STRING, NULL, 1, 0, NULL, F(crl),
     "certificate revocation list, upstream and downstream (optional)"},
    {"listen", OPT_STRING, "tcp://0.0.0.0:7444", 1, 0, NULL, F(listen),
     "endpoint this relay's sites connect to: tcp://HOST:PORT (PORT 0: a free one, logged)"},
    {"listen-cert", OPT_STRING, NULL, 1, 0, NULL, F(listen_cert),
     "this relay's coordinator certificate (fedtune-certs coordinator NAME): its identity to "
     "its sites, who check it with --server-name NAME"},
    {"listen-key", OPT_STRING, NULL, 1, 0, NULL, F(listen_key), "its private key (PEM)"},
    {"announce-examples", OPT_SIZE, "1000000000", 1, 9007199254740992.0, NULL, F(announce_examples),
     "the training examples the relay announces upstream: the most one of its updates may "
     "claim (its weight is its sites' total; the upstream --max-examples-per-site must allow it)"},
    {"min-clients", OPT_SIZE, "1", 1, 1e6, NULL, F(min_clients),
     "connected sites a relayed round needs"},
    {"min-fit", OPT_SIZE, "1", 1, 1e6, NULL, F(min_fit),
     "accepted updates a relayed round needs (<= min-clients)"},
    {"fraction", OPT_FLOAT, "1", 1e-6, 1, NULL, F(fraction),
     "fraction of the connected sites sampled per round"},
    {"wait-after-min-ms", OPT_INT, "10000", -1, 1e9, NULL, F(wait_after_min_ms),
     "once min-fit updates are in, how long to wait for the rest of the sample (-1: until "
     "the deadline)"},
    {"deadline-ms", OPT_SIZE, "600000", 1, 1e9, NULL, F(deadline_ms),
     "round deadline when the upstream round has none; otherwise the upstream deadline less "
     "the upload's margin"},
    {"ordered-uploads", OPT_BOOL, "false", 1, 0, NULL, F(ordered_uploads),
     "receive the sites' updates one at a time in site-name order (the same bytes every run)"},
    {"slots", OPT_SIZE, "1", 1, 64, NULL, F(slots), "updates received at once"},
    {"max-examples-per-site", OPT_SIZE, "1000000000", 1, 9007199254740992.0, NULL, F(max_examples),
     "bound of the example count one site's update claims"},
    {"max-update-norm", OPT_FLOAT, "0", 0, 1e30, NULL, F(max_update_norm),
     "reject a site's delta whose L2 norm is above this (0: off)"},
    {"aggregation", OPT_CHOICE, "mean", 1, 0, "mean|median|trimmed-mean|krum|multi-krum|norm|rfa",
     F(aggregation),
     "only mean: a relay's update must be its sites' weighted mean for FedAvg through relays "
     "to equal flat FedAvg; robust rules belong on the top coordinator"},
    {"reconnect-initial", OPT_FLOAT, "1", 0.01, 3600, NULL, F(reconnect_initial),
     "seconds before the first upstream reconnect attempt; doubles after each failure"},
    {"reconnect-max", OPT_FLOAT, "60", 0.01, 86400, NULL, F(reconnect_max),
     "longest wait between upstream reconnect attempts, seconds"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table relay_table = {
    "relay",
    "Aggregate a group of sites for an upstream coordinator: a coordinator to them, one site "
    "to it.",
    relay_opts, NULL};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* The relay while it runs. */
typedef struct relay {
    const relay_cfg *o;
    fed_coord *coord;   /* downstream, made at the first upstream round */
    char *arch;         /* the architecture it was made for */
    fed_site *site;     /* upstream */
    uint64_t relayed;   /* rounds answered */
    bool listen_logged; /* its address was logged */
} relay;

/* The downstream coordinator for the upstream model m (its trainable flags the
 * manifest's) and round rs. */
static fed_err make_coord(relay *r, const fed_site_round_in *in) {
    const relay_cfg *o = r->o;
    const fed_msg_round_start *rs = in->rs;
    fed_coord_config cc = fed_coord_default_config();
    cc.server.endpoint = o->listen;
    cc.server.software = "fedtune relay";
    cc.server.net.tls.ca_file = o->ca;
    cc.server.net.tls.cert_file = o->listen_cert;
    cc.server.net.tls.key_file = o->listen_key;
    cc.server.net.tls.crl_file = o->crl;
    cc.model = in->global;
    cc.keep_frozen = true; /* the manifest's trainable flags, as upstream */
    cc.has_tokenizer = rs->manifest.has_tokenizer;
    memcpy(cc.tokenizer_sha256, rs->manifest.tokenizer_sha256, sizeof cc.tokenizer_sha256);
    cc.driven = true;
    cc.input_stats = false;
    cc.rounds = 1000000000;
    cc.fraction = o->fraction;
    cc.min_clients = o->min_clients;
    cc.min_fit = o->min_fit;
    cc.wait_after_min_ms = o->wait_after_min_ms;
    cc.deadline_ms = (int64_t)o->deadline_ms;
    cc.ordered_uploads = o->ordered_uploads != 0;
    cc.slots = o->slots;
    cc.max_examples_per_site = o->max_examples;
    cc.max_update_norm = o->max_update_norm;
    cc.train = rs->config; /* replaced by every drive */
    cc.linger_ms = 0;
    fed_err err = fed_coord_new(&r->coord, &cc);
    if (err) return fed_errprefix(err, "relay");
    if (!(r->arch = fed_strdup(rs->manifest.arch))) return FED_ENOMEM;
    FED_LOG(FED_LOG_INFO, "relay: coordinator for its sites on %s", fed_coord_endpoint(r->coord));
    return FED_OK;
}

/* The site's train_fn: one downstream round for the upstream round in->rs. */
static fed_err relay_round(void *user, const fed_site_round_in *in, fed_site_round_out *out) {
    relay *r = user;
    const fed_msg_round_start *rs = in->rs;
    fed_err err;
    if (!r->coord && (err = make_coord(r, in))) return err;
    if (strcmp(r->arch, rs->manifest.arch) != 0)
        return fed_errorf(FED_EUNSUPPORTED,
                          "relay: the model's architecture changed; restart the relay");
    double left =
        in->stop_at > 0 ? (in->stop_at - fed_now_s()) * 1000.0 : (double)r->o->deadline_ms;
    if (left < 1)
        return fed_errorf(FED_ETIMEOUT, "relay: no time left before the round's deadline");
    fed_coord_drive d = {.round = rs->round,
                         .params = fed_model_params_const(in->global),
                         .train = &rs->config,
                         .input_transform =
                             rs->manifest.input_transform && rs->manifest.input_transform[0]
                                 ? rs->manifest.input_transform
                                 : NULL,
                         .deadline_ms = (int64_t)left};
    if ((err = fed_coord_drive_round(r->coord, &d))) return fed_errprefix(err, "relay");
    FED_LOG(FED_LOG_INFO, "relay: round %" PRIu64 ": relaying to its sites (deadline %.3g s)",
            rs->round, left / 1000.0);
    const float *mean = NULL;
    size_t n = 0;
    double weight = 0;
    const char *why = "";
    fed_coord_drive_state st;
    while ((st = fed_coord_drive_result(r->coord, &mean, &n, &weight, &why)) == FED_DRIVE_RUNNING) {
        if ((err = fed_coord_step(r->coord, 20))) return fed_errprefix(err, "relay");
        if (fed_site_delegate_pump(in->site)) {
            fed_coord_drive_cancel(r->coord, "the upstream round ended");
            return fed_errorf(FED_ECANCELED, "relay: the upstream round ended");
        }
    }
    if (st != FED_DRIVE_DONE)
        return fed_errorf(FED_ETIMEOUT, "relay: round %" PRIu64 ": %s", rs->round, why);
    if (n != out->n)
        return fed_errorf(FED_ESHAPE, "relay: %zu trainable floats, upstream %zu", n, out->n);
    memcpy(out->delta, mean, n * sizeof *mean);
    out->examples = (uint64_t)llround(weight);
    fed_coord_round_stats rst = fed_coord_last_round(r->coord);
    out->train_loss = rst.train_loss;
    /* Its sites' federated evaluation with their eval-example weight, so that the top
     * coordinator's federated loss and accuracy are the flat federation's. */
    if (isfinite(rst.fed_loss) && isfinite(rst.fed_acc) && rst.fed_weight >= 1) {
        out->global_loss = rst.fed_loss;
        out->global_acc = rst.fed_acc;
        out->eval_examples = (uint64_t)llround(rst.fed_weight);
    }
    r->relayed++;
    FED_LOG(FED_LOG_INFO,
            "relay: round %" PRIu64 ": %zu of %zu sites' updates, %" PRIu64
            " examples, sent upstream",
            rs->round, rst.returned, rst.sampled, out->examples);
    return FED_OK;
}

/* --listen, --listen-cert/--listen-key and --ca as a coordinator's, named by option. */
static fed_err check_listen(const relay_cfg *o) {
    static const char *const flags[5] = {"--listen", "--ca", "--listen-cert", "--listen-key",
                                         "--crl"};
    fed_net_tls tls = {o->ca, o->listen_cert, o->listen_key, o->crl};
    return cli_check_channel(flags, o->listen, true, &tls, false);
}

/* --upstream and the site identity (--ca, --cert, --key, --crl) as a client's. */
static fed_err check_upstream(const relay_cfg *o) {
    static const char *const flags[5] = {"--upstream", "--ca", "--cert", "--key", "--crl"};
    fed_net_tls tls = {o->ca, o->cert, o->key, o->crl};
    return cli_check_channel(flags, o->upstream, false, &tls, true);
}

/* What a relay cannot preserve is refused before anything starts (exit 2). */
static fed_err check_options(const relay_cfg *o) {
    const char *need[][2] = {{o->upstream, "upstream"},
                             {o->server_name, "server-name"},
                             {o->ca, "ca"},
                             {o->cert, "cert"},
                             {o->key, "key"},
                             {o->listen_cert, "listen-cert"},
                             {o->listen_key, "listen-key"}};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!need[i][0] || !need[i][0][0])
            return fed_errorf(FED_EINVAL, "--%s is required (or %s = ... in relay.ini)", need[i][1],
                              need[i][1]);
    if (strcmp(o->aggregation, "mean") != 0)
        return fed_errorf(FED_EINVAL,
                          "--aggregation %s: a relay sends its sites' weighted mean upstream, so "
                          "that FedAvg through relays equals flat FedAvg; a robust rule applied "
                          "per relay would weigh a group, not a site: run --aggregation %s on "
                          "the top coordinator (each relay then counts as one update)",
                          o->aggregation, o->aggregation);
    if (o->min_fit > o->min_clients)
        return fed_errorf(FED_EINVAL, "--min-fit %zu: must be at most --min-clients %zu",
                          o->min_fit, o->min_clients);
    if (o->reconnect_max < o->reconnect_initial)
        return fed_errorf(FED_EINVAL, "--reconnect-max %g is below --reconnect-initial %g",
                          o->reconnect_max, o->reconnect_initial);
    if (o->max_examples > o->announce_examples)
        FED_LOG(FED_LOG_WARN,
                "relay: --max-examples-per-site %zu is above --announce-examples %zu: one "
                "site could claim more than the relay may pass on",
                o->max_examples, o->announce_examples);
    fed_err err = check_upstream(o);
    return err ? err : check_listen(o);
}

static fed_err run_relay(const void *cfg) {
    const relay_cfg *o = cfg;
    fed_err err = check_options(o);
    if (err) return err;
    relay r = {.o = o};
    fed_site_config sc = fed_site_default_config();
    sc.coordinator = o->upstream;
    sc.server_name = o->server_name;
    sc.net.tls.ca_file = o->ca;
    sc.net.tls.cert_file = o->cert;
    sc.net.tls.key_file = o->key;
    sc.net.tls.crl_file = o->crl;
    sc.software = "fedtune relay";
    sc.train_fn = relay_round;
    sc.train_user = &r;
    sc.announce_examples = o->announce_examples;
    sc.backoff_initial_ms = (int)(o->reconnect_initial * 1000.0 + 0.5);
    sc.backoff_max_ms = (int)(o->reconnect_max * 1000.0 + 0.5);
    if ((err = fed_site_new(&r.site, &sc))) {
        char why[512];
        snprintf(why, sizeof why, "%s", fed_errmsg());
        return fed_errorf(err, "upstream side: %s", why);
    }
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    stop_requested = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    fed_site_set_stop(r.site, &stop_requested);
    bool done = false;
    while (!err && !done && !stop_requested) {
        err = fed_site_step(r.site, r.coord ? 20 : 100, &done);
        if (err) err = fed_errorf(err, "upstream: %s", fed_site_errmsg(r.site));
        if (!err && r.coord) err = fed_coord_step(r.coord, 20);
    }
    if (stop_requested) fed_site_say_bye(r.site);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    fed_site_set_stop(r.site, NULL);
    if (!err)
        FED_LOG(FED_LOG_INFO, "relay: %s after relaying %" PRIu64 " rounds",
                done ? "the upstream coordinator ended the federation" : "stopped", r.relayed);
    if (done && r.coord && fed_coord_finish(r.coord, "the upstream federation is over"))
        FED_LOG(FED_LOG_WARN, "relay: %s", fed_errmsg());
    fed_coord_destroy(&r.coord); /* else Bye{not finished}: its sites reconnect */
    fed_site_destroy(&r.site);
    fed_free(r.arch);
    return err;
}

int cmd_relay(int argc, char **argv) {
    relay_cfg c;
    return cli_run(&relay_table, &c, sizeof c, argc, argv, run_relay);
}
