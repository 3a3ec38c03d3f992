/* `fedtune admin ACTION [SITE]`: asks the running coordinator to act, over the same
 * mutually authenticated channel as the sites, with an admin certificate (fedtune-certs
 * admin NAME; docs/ADMIN.md). Actions: status (prints the coordinator's status JSON),
 * pause, resume, stop, reload-crl, evict SITE, readmit SITE. Prints the reply's text on
 * stdout; exit 0 when the coordinator did it, 1 for an error reply or when the
 * coordinator cannot be reached (one line naming it and the reason; a site's certificate
 * is refused by the coordinator), 2 for a usage mistake. Options through the table, [admin] of
 * --config FILE too. */
#include "cli/commands.h"
#include "cli/options.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "net/channel.h"

#include <stdio.h>
#include <string.h>

#ifndef FED_VERSION
#define FED_VERSION "0.0.0"
#endif

typedef struct admin_cfg {
    const char *coordinator; /* the coordinator's endpoint */
    const char *server_name; /* name its certificate must carry */
    const char *ca;          /* federation CA certificate */
    const char *cert;        /* this admin's certificate */
    const char *key;         /* its private key */
    const char *crl;         /* CRL to check the coordinator against, or NULL */
    const char *site;        /* evict, readmit: the site's name */
    double timeout;          /* seconds for the whole exchange */
} admin_cfg;

#define F(field) offsetof(admin_cfg, field)
static const opt_spec admin_opts[] = {
    {"coordinator", OPT_STRING, NULL, 1, 0, NULL, F(coordinator),
     "the coordinator's address (ZeroMQ endpoint): tcp://HOST:PORT"},
    {"server-name", OPT_STRING, NULL, 1, 0, NULL, F(server_name),
     "the name the coordinator's certificate must carry"},
    {"ca", OPT_STRING, NULL, 1, 0, NULL, F(ca),
     "the federation CA certificate: only a coordinator it certified is accepted"},
    {"cert", OPT_STRING, NULL, 1, 0, NULL, F(cert),
     "this admin's certificate (PEM; made by fedtune-certs admin, a site's is refused)"},
    {"key", OPT_STRING, NULL, 1, 0, NULL, F(key), "its private key (PEM, mode 0600)"},
    {"crl", OPT_STRING, NULL, 1, 0, NULL, F(crl),
     "certificate revocation list to check the coordinator against (optional)"},
    {"site", OPT_STRING, NULL, 1, 0, NULL, F(site),
     "evict, readmit: the site's name (its certificate CN); also the bare argument after "
     "ACTION"},
    {"timeout", OPT_FLOAT_ABOVE, "10", 0, 3600, NULL, F(timeout),
     "seconds to connect, ask and get the reply"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table admin_table = {
    "admin",
    "act on the running coordinator with an admin certificate: status, pause, resume, stop, "
    "reload-crl, evict SITE, readmit SITE (fedtune admin ACTION [SITE])",
    admin_opts, "site"};

/* The ACTION argument, taken out of argv by cmd_admin. */
static const char *action_arg;

static fed_err required(const char *value, const char *key) {
    if (value && value[0]) return FED_OK;
    return fed_errorf(FED_EINVAL, "--%s is required (or %s = ... in the [admin] section)", key,
                      key);
}

/* The endpoint and TLS files, as `fedtune client` checks them. The role is the
 * coordinator's to check: a site's certificate meets its refusal (exit 1). */
static fed_err check_setup(const admin_cfg *c, const fed_net_tls *tls) {
    static const char *const flags[5] = {"--coordinator", "--ca", "--cert", "--key", "--crl"};
    return cli_check_channel(flags, c->coordinator, false, tls, false);
}

/* Connects, sends r, waits for the AdminReply; *out is its copy (owned). */
static fed_err exchange(const admin_cfg *c, fed_client_config *cc, const fed_msg *r, fed_msg *out) {
    void *ctx = fed_net_context_new();
    if (!ctx) return FED_ENOMEM;
    fed_client *cl = NULL;
    fed_err e = fed_client_new(&cl, ctx, cc);
    if (e) {
        e = fed_errprefix(e == FED_EINVAL ? FED_EINVAL : FED_ECLOSED, "coordinator %s",
                          c->coordinator);
        fed_net_context_destroy(&ctx);
        return e;
    }
    /* A little past the handshake timeout, so that its reason (no connection, ...) wins. */
    int64_t until = fed_now_ms() + (int64_t)(c->timeout * 1000.0 + 0.5) + 250;
    e = FED_ETIMEOUT;
    for (int64_t now; e == FED_ETIMEOUT && (now = fed_now_ms()) < until;) {
        fed_net_event ev;
        fed_err pe = fed_client_poll(cl, (int)(until - now), &ev);
        if (pe) {
            e = fed_errorf(FED_ECLOSED, "coordinator %s: %s", c->coordinator,
                           fed_client_errmsg(cl));
        } else if (ev.type == FED_NET_JOINED) {
            if (fed_client_send(cl, r) != FED_OK)
                e = fed_errorf(FED_ECLOSED, "coordinator %s: %s", c->coordinator,
                               fed_client_errmsg(cl));
        } else if (ev.type == FED_NET_LEFT) {
            e = fed_errorf(ev.permanent ? FED_EAUTH : FED_ECLOSED, "coordinator %s: %s",
                           c->coordinator, ev.reason);
        } else if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_ADMIN_REPLY) {
            e = fed_msg_copy(out, ev.msg);
        } else if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_ERROR) {
            e = fed_errorf(FED_EAUTH, "coordinator %s: %s", c->coordinator, ev.msg->u.error.text);
        } else if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_BYE) {
            e = fed_errorf(FED_ECLOSED, "coordinator %s: said bye before replying: %s",
                           c->coordinator, ev.msg->u.bye.reason);
        }
    }
    if (e == FED_ETIMEOUT)
        e = fed_errorf(FED_ETIMEOUT, "coordinator %s: no reply within %g s", c->coordinator,
                       c->timeout);
    fed_client_destroy(&cl);
    fed_net_context_destroy(&ctx);
    return e;
}

static fed_err run_admin(const void *cfg) {
    const admin_cfg *c = cfg;
    fed_err err;
    fed_admin_action act = fed_admin_action_parse(action_arg);
    if (!action_arg)
        return fed_errorf(FED_EINVAL, "missing ACTION: status, pause, resume, stop, reload-crl, "
                                      "evict SITE or readmit SITE");
    if (act == FED_ADMIN_NONE)
        return fed_errorf(FED_EINVAL,
                          "ACTION \"%s\": not one of status, pause, resume, stop, reload-crl, "
                          "evict, readmit",
                          action_arg);
    bool needs_site = act == FED_ADMIN_EVICT || act == FED_ADMIN_READMIT;
    if (needs_site && (!c->site || !c->site[0]))
        return fed_errorf(FED_EINVAL, "%s needs a SITE (the site's certificate CN)",
                          fed_admin_action_name(act));
    if (!needs_site && c->site)
        return fed_errorf(FED_EINVAL, "%s takes no SITE (got \"%s\")", fed_admin_action_name(act),
                          c->site);
    if (c->site && strlen(c->site) > FED_NET_CN_MAX)
        return fed_errorf(FED_EINVAL, "SITE: %zu characters, a site's name has at most %d",
                          strlen(c->site), FED_NET_CN_MAX);
    for (const char *p = c->site; p && *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            return fed_errorf(FED_EINVAL, "SITE \"%s\": a site's name is printable ASCII", c->site);
    if ((err = required(c->coordinator, "coordinator"))) return err;
    if ((err = required(c->server_name, "server-name"))) return err;
    if ((err = required(c->ca, "ca"))) return err;
    if ((err = required(c->cert, "cert"))) return err;
    if ((err = required(c->key, "key"))) return err;

    fed_client_config cc = fed_client_default_config();
    cc.endpoint = c->coordinator;
    cc.server_name = c->server_name;
    cc.net.tls.ca_file = c->ca;
    cc.net.tls.cert_file = c->cert;
    cc.net.tls.key_file = c->key;
    cc.net.tls.crl_file = c->crl;
    int ms = (int)(c->timeout * 1000.0 + 0.5);
    cc.net.handshake_timeout_ms = ms;
    cc.hello.software = "fedtune " FED_VERSION " admin";
    if ((err = check_setup(c, &cc.net.tls))) return err;

    fed_msg r = {.type = FED_MSG_ADMIN_REQUEST};
    r.u.admin_request.action = act;
    r.u.admin_request.site = c->site;
    fed_msg rep;
    memset(&rep, 0, sizeof rep);
    if ((err = exchange(c, &cc, &r, &rep))) return err;
    const fed_msg_admin_reply *a = &rep.u.admin_reply;
    if (a->ok) {
        printf("%s\n", a->text);
        fflush(stdout);
    } else {
        err = fed_errorf(a->code == FED_WIRE_AUTH ? FED_EAUTH : FED_ECANCELED,
                         "coordinator %s: %s: %s", c->coordinator, fed_admin_action_name(act),
                         a->text);
    }
    fed_msg_free(&rep);
    return err;
}

int cmd_admin(int argc, char **argv) {
    /* ACTION is the first bare argument (every option takes a value). */
    char **rest = fed_calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) return cli_fail("admin", FED_ENOMEM);
    int n = 0;
    action_arg = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] == '-' && a[1] == '-') {
            rest[n++] = argv[i];
            bool value =
                !strchr(a, '=') && strcmp(a, "--help") != 0 && strcmp(a, "--print-config") != 0;
            if (value && i + 1 < argc) rest[n++] = argv[++i];
        } else if (!action_arg && a[0] != '-') {
            action_arg = a;
        } else {
            rest[n++] = argv[i];
        }
    }
    /* The reply, or one error line, is the output: not the channel's own log lines. */
    fed_log_set_level(FED_LOG_ERROR);
    admin_cfg c;
    int rc = cli_run(&admin_table, &c, sizeof c, n, rest, run_admin);
    fed_free(rest);
    return rc;
}
