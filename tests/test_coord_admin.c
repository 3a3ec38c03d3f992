/* The coordinator's side of administration (coordinator/admin.c, docs/ADMIN.md) over real
 * TLS on tcp://127.0.0.1, with certificates from certs/fedtune-certs and raw channel
 * clients polled between the coordinator's steps in one thread: an admin certificate is
 * refused as a site (a site's Hello, or a site's message) and is never registered; a
 * site's AdminRequest gets an AUTH reply; an admin's status reply is the status JSON;
 * pause keeps the coordinator from sampling and resume lets it; evict closes a connected
 * site's session and refuses its rejoin until readmit; a status too large for a message
 * is an error reply. */
#include "coordinator/coordinator.h"
#include "coordinator/internal.h"
#include "core/arch.h"
#include "tests/test_net_common.h"

#include <stdio.h>

static fed_coord *coord;
static void *zctx;
static char tmpdir[128];

/* A raw client and what it saw. */
typedef struct rc {
    fed_client *cli;
    int joined, left, errors, replies, round_starts;
    bool reply_ok;
    uint32_t reply_code, error_code;
    char text[2048];
} rc;

static void poll_client(rc *r) {
    fed_net_event ev;
    for (int k = 0; r->cli && k < 32; k++) {
        if (fed_client_poll(r->cli, 0, &ev) != FED_OK || ev.type == FED_NET_NONE) break;
        if (ev.type == FED_NET_JOINED) r->joined++;
        if (ev.type == FED_NET_LEFT) r->left++;
        if (ev.type != FED_NET_MESSAGE) continue;
        if (ev.msg->type == FED_MSG_ADMIN_REPLY) {
            r->replies++;
            r->reply_ok = ev.msg->u.admin_reply.ok;
            r->reply_code = ev.msg->u.admin_reply.code;
            snprintf(r->text, sizeof r->text, "%s", ev.msg->u.admin_reply.text);
        } else if (ev.msg->type == FED_MSG_ERROR) {
            r->errors++;
            r->error_code = ev.msg->u.error.code;
            snprintf(r->text, sizeof r->text, "%s", ev.msg->u.error.text);
        } else if (ev.msg->type == FED_MSG_ROUND_START) {
            r->round_starts++;
        }
    }
}

/* Steps the coordinator and the clients until cond(r) or 10 s. */
static bool until(rc *r, int n, bool (*cond)(const rc *r)) {
    int64_t end = now_ms() + 10000;
    while (!cond(r)) {
        if (now_ms() > end) return false;
        if (fed_coord_step(coord, 1) != FED_OK) return false;
        for (int i = 0; i < n; i++) poll_client(&r[i]);
    }
    return true;
}

static bool first_joined_or_left(const rc *r) {
    return r[0].joined || r[0].left;
}
static bool first_left(const rc *r) {
    return r[0].left > 0;
}
static bool first_replied(const rc *r) {
    return r[0].replies > 0;
}
static bool second_joined(const rc *r) {
    return r[1].joined > 0;
}
static bool second_left(const rc *r) {
    return r[1].left > 0;
}

static fed_client_config admin_cfg(const char *ep) {
    static char paths[2][320];
    fed_client_config c = client_config(ep, "ca", "site-1");
    snprintf(paths[0], sizeof paths[0], "%s/ca/admins/ops/ops.crt", certdir);
    snprintf(paths[1], sizeof paths[1], "%s/ca/admins/ops/ops.key", certdir);
    c.net.tls.cert_file = paths[0];
    c.net.tls.key_file = paths[1];
    c.hello.train_examples = 0;
    c.hello.eval_examples = 0;
    return c;
}

static void ask(rc *r, int n, fed_admin_action a, const char *site) {
    fed_msg m = {.type = FED_MSG_ADMIN_REQUEST};
    m.u.admin_request.action = a;
    m.u.admin_request.site = site;
    r[0].replies = 0;
    CHECK_OK(fed_client_send(r[0].cli, &m));
    CHECK(until(r, n, first_replied));
}

TEST(admin_role) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    if (fed_arch_parse(&a, "{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":3}]}") ||
        fed_model_new(&m, a))
        abort();
    fed_arch_destroy(&a);
    fed_model_init(m, 3);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/ckpt", tmpdir);
    fed_coord_config cfg = fed_coord_default_config();
    cfg.bye_wait_ms = 100;
    cfg.server = server_config("tcp://127.0.0.1:0");
    cfg.zmq_ctx = zctx;
    cfg.model = m;
    cfg.rounds = 5;
    cfg.min_clients = 1;
    cfg.min_fit = 1;
    cfg.ckpt.dir = dir;
    cfg.input_stats = false;
    CHECK_OK(fed_coord_new(&coord, &cfg));
    if (!coord) goto done;
    const char *ep = fed_coord_endpoint(coord);
    rc r[2];
    memset(r, 0, sizeof r);

    /* An admin certificate with a site's Hello: Error, session closed, not registered. */
    fed_client_config c = admin_cfg(ep);
    c.hello.train_examples = 100;
    log_clear();
    CHECK_OK(fed_client_new(&r[0].cli, zctx, &c));
    CHECK(until(r, 1, first_left));
    CHECK_INT(r[0].errors, 1);
    CHECK_INT(r[0].error_code, FED_WIRE_AUTH);
    CHECK_STR(r[0].text, "an admin certificate cannot take part as a site");
    CHECK_INT(log_count("admin ops refused as a site (its Hello is a site's)", NULL), 1);
    CHECK_SIZE(coord->ncl, 0);
    CHECK_INT(fed_coord_get_state(coord), FED_COORD_WAITING);
    fed_client_destroy(&r[0].cli);

    /* An admin's session: never a site; a site's message closes it. */
    memset(r, 0, sizeof r);
    c = admin_cfg(ep);
    CHECK_OK(fed_client_new(&r[0].cli, zctx, &c));
    CHECK(until(r, 1, first_joined_or_left));
    CHECK_INT(r[0].joined, 1);
    for (int i = 0; i < 50; i++) CHECK_OK(fed_coord_step(coord, 1));
    CHECK_SIZE(coord->ncl, 0);
    CHECK_INT(fed_coord_get_state(coord), FED_COORD_WAITING); /* min_clients 1: not met */
    ask(r, 1, FED_ADMIN_STATUS, NULL);
    CHECK(r[0].reply_ok);
    /* The status JSON (coordinator/status.c): the admin is not among the sites. */
    CHECK(strncmp(r[0].text, "{\"state\":\"waiting\",\"paused\":false,", 30) == 0);
    CHECK(strstr(r[0].text, ",\"rounds_done\":0,") != NULL);
    CHECK(strstr(r[0].text, ",\"model_version\":1,") != NULL);
    CHECK(strstr(r[0].text, ",\"sites_connected\":0,\"sites_known\":0,") != NULL);
    CHECK(strstr(r[0].text, ",\"sites\":[],") != NULL);
    fed_msg hb = {.type = FED_MSG_BYE};
    hb.u.bye.reason = "x";
    CHECK_OK(fed_client_send(r[0].cli, &hb)); /* a Bye is harmless */
    fed_msg up = {.type = FED_MSG_ERROR};
    up.u.error.code = FED_WIRE_INVALID;
    up.u.error.text = "pretending to be a site";
    log_clear();
    CHECK_OK(fed_client_send(r[0].cli, &up));
    CHECK(until(r, 1, first_left));
    CHECK_INT(log_count("admin ops refused as a site (it sent error)", NULL), 1);
    fed_client_destroy(&r[0].cli);

    /* Pause before any site: a site joins, nothing is sampled; resume starts round 1. */
    memset(r, 0, sizeof r);
    c = admin_cfg(ep);
    CHECK_OK(fed_client_new(&r[0].cli, zctx, &c));
    CHECK(until(r, 1, first_joined_or_left));
    ask(r, 1, FED_ADMIN_PAUSE, NULL);
    CHECK(r[0].reply_ok);
    CHECK_STR(r[0].text, "paused: no new round starts");
    fed_client_config s1 = client_config(ep, "ca", "site-1");
    CHECK_OK(fed_client_new(&r[1].cli, zctx, &s1));
    CHECK(until(r, 2, second_joined));
    for (int i = 0; i < 50; i++) {
        CHECK_OK(fed_coord_step(coord, 1));
        poll_client(&r[1]);
    }
    CHECK_INT(fed_coord_get_state(coord), FED_COORD_WAITING);
    CHECK_INT(r[1].round_starts, 0);
    CHECK_SIZE(fed__coord_connected_count(coord), 1);
    ask(r, 2, FED_ADMIN_RESUME, NULL);
    CHECK_STR(r[0].text, "resumed");
    for (int i = 0; i < 200 && r[1].round_starts == 0; i++) {
        CHECK_OK(fed_coord_step(coord, 1));
        poll_client(&r[1]);
    }
    CHECK_INT(r[1].round_starts, 1);

    /* A site's AdminRequest: AUTH reply, the site stays. */
    fed_msg q = {.type = FED_MSG_ADMIN_REQUEST};
    q.u.admin_request.action = FED_ADMIN_STOP;
    r[1].replies = 0;
    CHECK_OK(fed_client_send(r[1].cli, &q));
    for (int i = 0; i < 200 && r[1].replies == 0; i++) {
        CHECK_OK(fed_coord_step(coord, 1));
        poll_client(&r[1]);
    }
    CHECK_INT(r[1].replies, 1);
    CHECK(!r[1].reply_ok);
    CHECK_INT(r[1].reply_code, FED_WIRE_AUTH);
    CHECK_STR(r[1].text, "refused: site-1 holds a site certificate, not an admin's");
    CHECK(fed_client_ready(r[1].cli));
    CHECK(fed_coord_get_state(coord) != FED_COORD_DONE);

    /* Evict the connected site mid-round: its session closes and its part of the round
     * is dropped (its update would not count); its rejoin is refused. */
    log_clear();
    ask(r, 2, FED_ADMIN_EVICT, "site-1");
    CHECK(r[0].reply_ok);
    CHECK_STR(r[0].text,
              "evicted site-1: its session is closed; its rejoin is refused until readmit");
    CHECK(until(r, 2, second_left));
    CHECK_SIZE(fed__coord_connected_count(coord), 0);
    CHECK_INT(log_count("round 1: site-1 left mid-round", "evicted by admin ops"), 1);
    r[1].left = 0;
    r[1].errors = 0;
    log_clear();
    CHECK_OK(fed_client_reconnect(r[1].cli));
    CHECK(until(r, 2, second_left));
    CHECK_INT(r[1].errors, 1);
    CHECK_STR(r[1].text, "evicted by the federation's admin");
    CHECK_INT(log_count("site-1 refused: evicted by an admin", NULL), 1);
    CHECK_SIZE(fed__coord_connected_count(coord), 0);
    ask(r, 2, FED_ADMIN_EVICT, "nobody");
    CHECK(!r[0].reply_ok);
    CHECK_INT(r[0].reply_code, FED_WIRE_INVALID);
    ask(r, 2, FED_ADMIN_READMIT, "site-1");
    CHECK_STR(r[0].text, "readmitted site-1: it may join again");
    r[1].joined = 0;
    CHECK_OK(fed_client_reconnect(r[1].cli));
    CHECK(until(r, 2, second_joined));
    for (int i = 0; i < 20; i++) CHECK_OK(fed_coord_step(coord, 1));
    CHECK_SIZE(fed__coord_connected_count(coord), 1);

    /* A status too large for one message (over 1 MiB of JSON): an error reply saying
     * so, not silence. Thousands of sites joined as far as the registry knows (paused,
     * so none is sampled). */
    ask(r, 2, FED_ADMIN_PAUSE, NULL);
    fed_err worst = FED_OK;
    for (uint32_t i = 0; i < 9000; i++) {
        char cn[FED_NET_CN_MAX + 1];
        snprintf(cn, sizeof cn, "registry-only-site-%05u-%s", i,
                 "...................................");
        fed_net_event j = {.type = FED_NET_JOINED, .peer = 1000 + i, .cn = cn, .reason = ""};
        fed_err e = fed__coord_on_event(coord, &j);
        if (e) worst = e;
    }
    CHECK_OK(worst);
    CHECK_SIZE(fed__coord_connected_count(coord), 9001);
    ask(r, 2, FED_ADMIN_STATUS, NULL);
    CHECK(!r[0].reply_ok);
    CHECK_INT(r[0].reply_code, FED_WIRE_RANGE);
    CHECK_CONTAINS(r[0].text, "status: the reply does not fit in a message (admin_reply.text: ");
    CHECK_CONTAINS(r[0].text, "bytes, limit 1048576)");
    fed_client_destroy(&r[1].cli);
    fed_client_destroy(&r[0].cli);
done:
    fed_coord_destroy(&coord);
    fed_model_destroy(&m);
}

int main(void) {
    fed_log_set_handler(log_handler, NULL, FED_LOG_DEBUG);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fedcoord-admin-XXXXXX");
    if (certs_make() != 0 || !mkdtemp(tmpdir) ||
        sh("%s admin %s/ca ops >/dev/null 2>&1", FED_CERTS_SCRIPT, certdir) != 0) {
        fprintf(stderr, "cannot make certificates\n");
        certs_remove();
        return 1;
    }
    zctx = fed_net_context_new();
    if (!zctx) return 1;
    RUN(admin_role);
    fed_net_context_destroy(&zctx);
    certs_remove();
    if (sh("rm -rf '%s'", tmpdir) != 0) fprintf(stderr, "left %s\n", tmpdir);
    return test_report();
}
