/* Tests of the secure channel's admission: TLS 1.3 handshakes and Hello/Welcome with
 * several clients at once over inproc:// and tcp://127.0.0.1, message round trips in
 * both directions, and every refusal (another CA, expired, not yet valid, revoked, a
 * site certificate acting as the coordinator, a wrong coordinator name, no client
 * certificate): the peer is kept out, exactly one warn line names it and the reason, and
 * the client's LEFT says in words what the refusal meant and that retrying cannot help
 * (while a busy coordinator or a lost connection are worth another try). Certificates a
 * constructor would refuse at start-up (expired, made for the other side) are presented
 * with fed__net_skip_checks, as a foreign peer could. Also: the start-up checks of the
 * TLS files and endpoints, and a coordinator that vanishes and comes back on the same
 * endpoint, which an idle client notices at once. Real sockets, real TLS, certificates
 * made by certs/fedtune-certs in a temporary folder. */
#include "tests/test_net_common.h"

#include "core/alloc_internal.h"
#include "net/sock.h"

#include <inttypes.h>
#include <poll.h>

static bool all_joined(world *w) {
    for (int i = 0; i < w->ncli; i++)
        if (w->c[i].joined < 1) return false;
    return w->s.joined >= w->ncli;
}

static bool all_got_round(world *w) {
    for (int i = 0; i < w->ncli; i++)
        if (w->c[i].last_round != 7) return false;
    return true;
}

static bool server_got_updates(world *w) {
    for (int i = 0; i < w->ncli; i++)
        if (w->by_peer[i + 1].messages < 1) return false;
    return true;
}

/* Several clients join, a RoundStart goes to each, an Update comes back from each. */
static void round_trip(const char *endpoint) {
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config(endpoint);
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    if (!w.srv) goto done;
    const char *ep = fed_server_endpoint(w.srv);
    CHECK(strncmp(ep, endpoint, 6) == 0);
    w.ncli = 4;
    const char *caps[] = {"delta-f32", "eval"};
    for (int i = 0; i < w.ncli; i++) {
        char name[16];
        snprintf(name, sizeof name, "site-%d", i + 1);
        fed_client_config cc = client_config(ep, "ca", name);
        cc.hello.capabilities = caps;
        cc.hello.num_capabilities = 2;
        cc.hello.train_examples = 100 + (uint64_t)i;
        CHECK_OK(fed_client_new(&w.cli[i], w.zctx, &cc));
        if (!w.cli[i]) goto done;
    }
    CHECK(world_until(&w, all_joined, 15000));
    CHECK_INT(w.s.joined, w.ncli);
    fed_net_stats st;
    fed_server_stats(w.srv, &st);
    CHECK_SIZE(st.sessions, (size_t)w.ncli);
    CHECK_SIZE(st.handshakes, 0);
    /* Each peer handle names the CN of its certificate, not anything it said. */
    for (uint32_t p = 1; p <= (uint32_t)w.ncli; p++) {
        const char *cn = fed_server_peer_cn(w.srv, p);
        CHECK(cn && strncmp(cn, "site-", 5) == 0);
        CHECK(fed_server_peer_connected(w.srv, p));
    }
    for (int i = 0; i < w.ncli; i++) {
        CHECK_STR(w.c[i].cn, "localhost");
        CHECK(fed_client_ready(w.cli[i]));
    }

    /* RoundStart to everyone. */
    for (uint32_t p = 1; p <= (uint32_t)w.ncli; p++) {
        fed_msg m = {.type = FED_MSG_ROUND_START};
        m.u.round_start.round = 7;
        m.u.round_start.model_version = 3;
        m.u.round_start.transfer_id = 70 + p;
        m.u.round_start.config.epochs = 1;
        m.u.round_start.config.batch = 32;
        m.u.round_start.config.optimizer = "sgd";
        m.u.round_start.config.lr = 0.1f;
        CHECK_OK(fed_server_send(w.srv, p, &m));
    }
    CHECK(world_until(&w, all_got_round, 10000));
    /* And an Update back from everyone. */
    for (int i = 0; i < w.ncli; i++) {
        fed_msg m = {.type = FED_MSG_UPDATE};
        m.u.update.round = 7;
        m.u.update.examples = 100;
        CHECK_OK(fed_client_send(w.cli[i], &m));
    }
    CHECK(world_until(&w, server_got_updates, 10000));
    for (uint32_t p = 1; p <= (uint32_t)w.ncli; p++) CHECK_INT(w.by_peer[p].last_round, 7);

    /* The channel keeps its own message types to itself. */
    fed_msg bad = {.type = FED_MSG_CHUNK};
    CHECK_ERR(fed_server_send(w.srv, 1, &bad), FED_EINVAL);
    CHECK_ERR(fed_client_send(w.cli[0], &bad), FED_EINVAL);
    fed_msg hb = {.type = FED_MSG_HEARTBEAT};
    CHECK_ERR(fed_server_send(w.srv, 99, &hb), FED_ENOTFOUND);
    CHECK_INT(log_count("dropped", NULL), 0);
done:
    if (log_count("dropped", NULL)) log_dump();
    world_free(&w);
}

TEST(round_trip_inproc) {
    log_clear();
    round_trip("inproc://fednet-test-rt");
}

TEST(round_trip_tcp) {
    log_clear();
    round_trip("tcp://127.0.0.1:0");
}

/* The Hello a client sent arrives intact, and the Welcome names the client's CN. */
static void on_srv_hello(world *w, const fed_net_event *ev) {
    if (ev->type != FED_NET_JOINED) return;
    const fed_msg_hello *h = &ev->msg->u.hello;
    CHECK_STR(h->software, "fedtune-test-client");
    CHECK_SIZE(h->num_capabilities, 1);
    if (h->num_capabilities == 1) CHECK_STR(h->capabilities[0], "secagg");
    CHECK_INT(h->train_examples, 1234);
    CHECK_STR(ev->cn, "site-5");
    w->user = (void *)1;
}

static void on_cli_welcome(world *w, int i, const fed_net_event *ev) {
    (void)w;
    (void)i;
    if (ev->type != FED_NET_JOINED) return;
    CHECK_STR(ev->msg->u.welcome.client_id, "site-5");
    CHECK_STR(ev->msg->u.welcome.coordinator, "fedtune-test");
    CHECK_INT(ev->msg->u.welcome.credits, 8);
}

static bool one_joined(world *w) {
    return w->s.joined >= 1 && w->c[0].joined >= 1;
}

TEST(hello_welcome) {
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("inproc://fednet-test-hello");
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config cc = client_config("inproc://fednet-test-hello", "ca", "site-5");
    const char *caps[] = {"secagg"};
    cc.hello.capabilities = caps;
    cc.hello.num_capabilities = 1;
    cc.hello.train_examples = 1234;
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    w.on_srv = on_srv_hello;
    w.on_cli = on_cli_welcome;
    CHECK(world_until(&w, one_joined, 10000));
    CHECK(w.user == (void *)1);
    world_free(&w);
}

/* ------------------------------------------------------------------------------------ */
/* Refusals                                                                             */

static bool client_left(world *w) {
    return w->c[0].left >= 1;
}

/* Runs one client against a coordinator until the client's session ends; checks that
 * the peer was kept out, that `side` ("coordinator" or "client") logged exactly one
 * warn line containing `who` and `why`, and that the client's LEFT is permanent with
 * `words` in its reason. skip: make the objects without the start-up checks. */
static void refusal_(const char *label, fed_server_config sc, fed_client_config cc,
                     const char *side, const char *who, const char *why, const char *words,
                     bool skip) {
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed__net_skip_checks(skip);
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    if (!w.srv) goto done;
    cc.endpoint = fed_server_endpoint(w.srv);
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    fed__net_skip_checks(false);
    if (!w.cli[0]) goto done;
    bool left = world_until(&w, client_left, 10000);
    if (!left) fprintf(stderr, "%s: the client never left\n", label);
    CHECK(left);
    world_run(&w, 50); /* let both sides finish */
    CHECK_INT(w.s.joined, 0);
    CHECK_INT(w.c[0].joined, 0);
    CHECK(!fed_client_ready(w.cli[0]));
    fed_net_stats st;
    fed_server_stats(w.srv, &st);
    CHECK_SIZE(st.sessions, 0);
    CHECK_SIZE(st.handshakes, 0);
    char tag[32];
    snprintf(tag, sizeof tag, "%s: dropped", side);
    int lines = log_count(tag, NULL), match = log_count(tag, why), named = log_count(tag, who);
    if (lines != 1 || match != 1 || named != 1) {
        fprintf(stderr, "%s: expected one %s line with \"%s\" and \"%s\"\n", label, side, who, why);
        log_dump();
    }
    CHECK_INT(lines, 1);
    CHECK_INT(match, 1);
    CHECK_INT(named, 1);
    /* The client was told why, in words, and that another try meets the same refusal. */
    if (!strstr(w.c[0].left_reason, words))
        fprintf(stderr, "%s: client's reason \"%s\" lacks \"%s\"\n", label, w.c[0].left_reason,
                words);
    CHECK_CONTAINS(w.c[0].left_reason, words);
    CHECK(w.c[0].left_permanent);
    CHECK_INT(w.c[0].left_err, FED_EAUTH);
done:
    fed__net_skip_checks(false);
    world_free(&w);
}

static void refusal(const char *label, fed_server_config sc, fed_client_config cc, const char *side,
                    const char *who, const char *why, const char *words) {
    refusal_(label, sc, cc, side, who, why, words, false);
}

TEST(refuse_other_ca) {
    refusal("other CA", server_config("tcp://127.0.0.1:0"), client_config(NULL, "ca2", "intruder"),
            "coordinator", "intruder", "unable to get local issuer certificate",
            "the coordinator refused this site's certificate: unknown CA");
}

TEST(refuse_expired) {
    refusal_("expired", server_config("tcp://127.0.0.1:0"), client_config(NULL, "ca", "expired"),
             "coordinator", "expired", "certificate has expired",
             "the coordinator refused this site's certificate: expired", true);
}

TEST(refuse_not_yet_valid) {
    refusal_("not yet valid", server_config("inproc://fednet-test-future"),
             client_config(NULL, "ca", "future"), "coordinator", "future",
             "certificate is not yet valid",
             "the coordinator refused this site's certificate: bad certificate", true);
}

TEST(refuse_revoked) {
    refusal("revoked", server_config("tcp://127.0.0.1:0"), client_config(NULL, "ca", "revoked"),
            "coordinator", "revoked", "certificate revoked",
            "the coordinator refused this site's certificate: revoked (TLS alert 44)");
}

TEST(accept_revoked_without_crl) {
    /* Without a CRL configured, the same certificate is accepted: the CRL is what refuses. */
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("inproc://fednet-test-nocrl");
    sc.net.tls.crl_file = NULL;
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config cc = client_config("inproc://fednet-test-nocrl", "ca", "revoked");
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, one_joined, 10000));
    CHECK_STR(w.s.cn, "revoked");
    world_free(&w);
}

TEST(refuse_coordinator_cert_as_client) {
    fed_client_config cc = client_config(NULL, "ca", "site-1");
    cc.net.tls.cert_file = cpath("ca/coordinator/localhost.crt");
    cc.net.tls.key_file = cpath("ca/coordinator/localhost.key");
    refusal_("coordinator cert as client", server_config("tcp://127.0.0.1:0"), cc, "coordinator",
             "certificate CN localhost", "unsuitable certificate purpose",
             "the coordinator refused this site's certificate: unsupported certificate", true);
}

TEST(refuse_site_cert_as_coordinator) {
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    sc.net.tls.cert_file = cpath("ca/sites/site-6/site-6.crt");
    sc.net.tls.key_file = cpath("ca/sites/site-6/site-6.key");
    fed_client_config cc = client_config(NULL, "ca", "site-1");
    cc.server_name = "site-6"; /* even with the right name: the purpose is wrong */
    refusal_("site cert as coordinator", sc, cc, "client", "site-6",
             "unsuitable certificate purpose",
             "the coordinator's certificate with CN site-6 is refused: unsuitable certificate "
             "purpose",
             true);
}

TEST(refuse_name_mismatch) {
    fed_client_config cc = client_config(NULL, "ca", "site-1");
    cc.server_name = "fed.example.org";
    refusal("name mismatch", server_config("tcp://127.0.0.1:0"), cc, "client", "fed.example.org",
            "hostname mismatch", "the coordinator's certificate with CN localhost is refused");
    cc.server_name = "10.1.2.3";
    refusal("IP mismatch", server_config("tcp://127.0.0.1:0"), cc, "client", "10.1.2.3",
            "IP address mismatch", "is refused: IP address mismatch");
}

TEST(refuse_unknown_coordinator_ca) {
    /* The site trusts another CA only: the coordinator's certificate is unknown to it. */
    fed_client_config cc = client_config(NULL, "ca2", "intruder");
    cc.net.tls.ca_file = cpath("ca2/ca.crt");
    refusal("unknown coordinator CA", server_config("tcp://127.0.0.1:0"), cc, "client", "localhost",
            "self-signed certificate in certificate chain",
            "the coordinator's certificate with CN localhost is refused: self-signed "
            "certificate in certificate chain");
}

TEST(accept_ip_name) {
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config cc = client_config(fed_server_endpoint(w.srv), "ca", "site-2");
    cc.server_name = "127.0.0.1";
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, one_joined, 10000));
    world_free(&w);
}

TEST(refuse_no_client_cert) {
    fed_client_config cc = client_config(NULL, "ca", "site-1");
    cc.net.tls.cert_file = NULL;
    cc.net.tls.key_file = NULL;
    refusal("no client certificate", server_config("tcp://127.0.0.1:0"), cc, "coordinator",
            "routing id", "peer did not return a certificate",
            "the coordinator refused this site's certificate: certificate required");
}

/* ------------------------------------------------------------------------------------ */
/* Sessions: replacement, limits, liveness                                              */

static bool second_joined(world *w) {
    return w->s.joined >= 2 && w->c[1].joined >= 1 && w->c[0].left >= 1;
}

TEST(same_identity_replaces) {
    /* A second client with the same certificate (a restarted site) takes over the identity:
     * same peer handle, the old session is closed. */
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("inproc://fednet-test-same");
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config cc = client_config("inproc://fednet-test-same", "ca", "site-1");
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, one_joined, 10000));
    uint32_t peer = w.s.peer;
    w.ncli = 2;
    CHECK_OK(fed_client_new(&w.cli[1], w.zctx, &cc));
    CHECK(world_until(&w, second_joined, 10000));
    CHECK_INT(w.s.peer, peer);
    CHECK_INT(w.s.left, 1);
    CHECK(fed_server_peer_connected(w.srv, peer));
    CHECK(!fed_client_ready(w.cli[0]));
    CHECK(fed_client_ready(w.cli[1]));
    CHECK_INT(log_count("coordinator: dropped", NULL), 0);
    world_free(&w);
}

static bool second_left(world *w) {
    return w->c[1].left >= 1;
}

TEST(max_peers) {
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("inproc://fednet-test-maxp");
    sc.max_peers = 1;
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config c1 = client_config("inproc://fednet-test-maxp", "ca", "site-1");
    fed_client_config c2 = client_config("inproc://fednet-test-maxp", "ca", "site-2");
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &c1));
    CHECK(world_until(&w, one_joined, 10000));
    w.ncli = 2;
    CHECK_OK(fed_client_new(&w.cli[1], w.zctx, &c2));
    CHECK(world_until(&w, second_left, 10000));
    world_run(&w, 30);
    CHECK_INT(w.s.joined, 1);
    CHECK_INT(w.c[1].joined, 0);
    CHECK_CONTAINS(w.c[1].left_reason, "refused");
    CHECK(!w.c[1].left_permanent); /* busy now, maybe not later */
    CHECK_INT(log_count("coordinator: dropped", NULL), 1);
    CHECK_INT(log_count("coordinator: dropped peer site-2", "1 peers connected, the limit"), 1);
    CHECK(fed_client_ready(w.cli[0]));
    world_free(&w);
}

TEST(max_handshakes) {
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    sc.max_handshakes = 1;
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    /* A peer that opens a session and says nothing more holds the only handshake slot. */
    fed__sock *raw = NULL;
    fed__sock_opts o = {0, -1, 1000};
    uint8_t open[24] = {'F', 'E', 'D', 'N', 1, 1, 0, 0, 9};
    CHECK_OK(fed__sock_dealer(&raw, w.zctx, fed_server_endpoint(w.srv), NULL, 0, &o));
    if (raw) CHECK_OK(fed__sock_send_bytes(raw, NULL, 0, open, sizeof open));
    fed_net_stats st = {0};
    for (int i = 0; i < 2000 && st.handshakes == 0; i++) {
        world_step(&w, 1);
        fed_server_stats(w.srv, &st);
    }
    CHECK_SIZE(st.handshakes, 1);
    fed_client_config cc = client_config(fed_server_endpoint(w.srv), "ca", "site-2");
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, client_left, 10000));
    CHECK_INT(w.s.joined, 0);
    CHECK_INT(log_count("coordinator: dropped", "1 handshakes in progress, the limit"), 1);
    fed__sock_destroy(&raw, 0);
    world_free(&w);
}

static bool server_left(world *w) {
    return w->s.left >= 1;
}

TEST(keepalive_and_idle) {
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("inproc://fednet-test-idle");
    sc.net.keepalive_ms = 30;
    sc.net.idle_timeout_ms = 800;
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config cc = client_config("inproc://fednet-test-idle", "ca", "site-3");
    cc.net.keepalive_ms = 30;
    cc.net.idle_timeout_ms = 800;
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, one_joined, 10000));
    /* Both alive and polling: heartbeats keep the quiet session up. */
    world_run(&w, 1500);
    CHECK_INT(w.s.left, 0);
    CHECK_INT(w.c[0].left, 0);
    /* The client freezes (stops polling): the coordinator ends its session. */
    fed_client *frozen = w.cli[0];
    w.ncli = 0;
    CHECK(world_until(&w, server_left, 10000));
    CHECK_INT(w.s.left_err, FED_ETIMEOUT);
    CHECK_INT(log_count("coordinator: dropped peer site-3", "silent for 800 ms"), 1);
    w.ncli = 1;
    w.cli[0] = frozen;
    CHECK(world_until(&w, client_left, 10000));
    world_free(&w);
}

static bool rejoined(world *w) {
    return w->s.joined >= 2 && w->c[0].joined >= 2;
}

/* A client disappears without a word (no CLOSE, as a crash would): on tcp:// the
 * coordinator learns at once from its socket monitor that the connection ended; on
 * inproc:// (no monitor) the next keepalive finds nobody (ZMQ_ROUTER_MANDATORY). */
static void vanished(const char *endpoint, const char *why) {
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config(endpoint);
    sc.net.keepalive_ms = strncmp(endpoint, "tcp://", 6) == 0 ? 60000 : 20;
    sc.net.idle_timeout_ms = 0;
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config cc = client_config(fed_server_endpoint(w.srv), "ca", "site-4");
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, one_joined, 10000));
    uint32_t peer = w.s.peer;
    fed__client_vanish(w.cli[0]);
    CHECK(world_until(&w, server_left, 10000));
    CHECK_CONTAINS(w.s.left_reason, why);
    CHECK(!fed_server_peer_connected(w.srv, peer));
    CHECK_INT(log_count("coordinator: dropped peer site-4", why), 1);
    /* It comes back under the same handle. */
    CHECK_OK(fed_client_reconnect(w.cli[0]));
    CHECK(world_until(&w, rejoined, 10000));
    CHECK_INT(w.s.peer, peer);
    world_run(&w, 50);
    CHECK_INT(w.s.left, 1); /* the new session is not taken for the old connection */
    world_free(&w);
}

TEST(vanished_peer_tcp) {
    /* The keepalive is a minute away: only the monitor can be this quick. */
    vanished("tcp://127.0.0.1:0", "its connection ended: the peer went away");
}

TEST(vanished_peer_inproc) {
    vanished("inproc://fednet-test-vanish", "unreachable");
}

static bool welcomed_again(world *w) {
    return w->c[0].joined >= 2 && w->s.joined >= 1;
}

TEST(coordinator_restart) {
    /* An idle client whose coordinator is killed (no CLOSE, no Bye) and started again on
     * the same endpoint: libzmq reconnects underneath; the client must not wait for its
     * next keepalive (30 s here) to learn that its session is gone. */
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    sc.net.keepalive_ms = 30000;
    sc.net.idle_timeout_ms = 0;
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    if (!w.srv) goto done;
    char ep[128];
    snprintf(ep, sizeof ep, "%s", fed_server_endpoint(w.srv));
    fed_client_config cc = client_config(ep, "ca", "site-5");
    cc.net.keepalive_ms = 30000;
    cc.net.idle_timeout_ms = 0;
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, one_joined, 10000));
    int64_t t0 = now_ms();
    fed__server_vanish(&w.srv);
    /* libzmq closes the old listener asynchronously: a few tries, backing off. */
    sc.endpoint = ep;
    for (int i = 0, ms = 5; i < 12 && !w.srv; i++, ms *= 2)
        if (fed_server_new(&w.srv, w.zctx, &sc) != FED_OK) {
            struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    CHECK(w.srv != NULL);
    if (!w.srv) goto done;
    memset(&w.s, 0, sizeof w.s);
    /* The client ends the stale session by itself, as a lost connection (retry-worthy). */
    CHECK(world_until(&w, client_left, 15000));
    CHECK_INT(w.c[0].joined, 1);
    CHECK_CONTAINS(w.c[0].left_reason, "lost the connection: the coordinator went away");
    CHECK_INT(w.c[0].left_err, FED_ECLOSED);
    CHECK(!w.c[0].left_permanent);
    CHECK_INT(log_count("client: dropped coordinator localhost", "lost the connection"), 1);
    /* A new session is welcomed by the new coordinator, long before any keepalive. */
    CHECK_OK(fed_client_reconnect(w.cli[0]));
    CHECK(world_until(&w, welcomed_again, 10000));
    CHECK(now_ms() - t0 < 30000);
    CHECK_STR(w.s.cn, "site-5");
    CHECK_INT(w.s.left, 0);
    CHECK_INT(log_count("coordinator: dropped", NULL), 0); /* nothing stale reached it */
done:
    world_free(&w);
}

/* ------------------------------------------------------------------------------------ */
/* Configuration errors                                                                 */

TEST(config_errors) {
    void *zctx = fed_net_context_new();
    fed_server *s = NULL;
    /* The TLS files: refused before anything starts, naming the file (more in
     * test_net_checks.c). */
    fed_server_config sc = server_config("inproc://fednet-test-cfg");
    sc.net.tls.key_file = cpath("ca/sites/site-1/site-1.key");
    CHECK_ERR(fed_server_new(&s, zctx, &sc), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "key ");
    CHECK_CONTAINS(fed_errmsg(), "site-1.key: does not match the certificate");
    sc = server_config("inproc://fednet-test-cfg");
    sc.net.tls.ca_file = cpath("nope/ca.crt");
    CHECK_ERR(fed_server_new(&s, zctx, &sc), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "CA file ");
    CHECK_CONTAINS(fed_errmsg(), "nope/ca.crt: No such file or directory");
    sc = server_config("inproc://fednet-test-cfg");
    sc.net.tls.crl_file = cpath("ca/ca.crt");
    CHECK_ERR(fed_server_new(&s, zctx, &sc), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "no CRL in the file");
    sc = server_config("inproc://fednet-test-cfg");
    sc.net.chunk_size = 1000;
    CHECK_ERR(fed_server_new(&s, zctx, &sc), FED_EINVAL);
    /* A malformed endpoint is a bad configuration; one that cannot be bound is not. */
    sc = server_config("tcp://256.1.1.1:1");
    CHECK_ERR(fed_server_new(&s, zctx, &sc), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "endpoint tcp://256.1.1.1:1: the host is not a valid IPv4 address");
    sc = server_config("tcp://127.0.0.1:99999");
    CHECK_ERR(fed_server_new(&s, zctx, &sc), FED_EINVAL);
    CHECK_STR(fed_errmsg(),
              "endpoint tcp://127.0.0.1:99999: port 99999 is outside 0..65535 (0: a free port)");
    CHECK(s == NULL);
    fed_server *first = NULL;
    sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&first, zctx, &sc));
    if (first) {
        sc.endpoint = fed_server_endpoint(first); /* that port is taken */
        CHECK_ERR(fed_server_new(&s, zctx, &sc), FED_EIO);
        CHECK_CONTAINS(fed_errmsg(), "cannot bind");
    }
    fed_server_destroy(&first);
    fed_client *c = NULL;
    fed_client_config cc = client_config("inproc://x", "ca", "site-1");
    cc.server_name = NULL;
    CHECK_ERR(fed_client_new(&c, zctx, &cc), FED_EINVAL);
    cc = client_config("localhost:7443", "ca", "site-1");
    CHECK_ERR(fed_client_new(&c, zctx, &cc), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "endpoint localhost:7443: no transport: write tcp://localhost:7443");
    cc = client_config("tcp://127.0.0.1:0", "ca", "site-1");
    CHECK_ERR(fed_client_new(&c, zctx, &cc), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "endpoint tcp://127.0.0.1:0: port 0 is outside 1..65535");
    cc = client_config("tcp://127.0.0.1:7443", "ca", "site-1");
    cc.net.tls.cert_file = cpath("ca/coordinator/localhost.crt");
    cc.net.tls.key_file = cpath("ca/coordinator/localhost.key");
    CHECK_ERR(fed_client_new(&c, zctx, &cc), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "certificate ");
    CHECK_CONTAINS(fed_errmsg(), "localhost.crt: the coordinator's certificate (extended key "
                                 "usage serverAuth only), not a site's");
    CHECK(c == NULL);
    fed_net_context_destroy(&zctx);
}

/* ------------------------------------------------------------------------------------ */
/* Allocation failures                                                                  */

TEST(alloc_failures_constructors) {
    fed_server_config sc = server_config("inproc://fednet-test-alloc");
    fed_client_config cc = client_config("inproc://fednet-test-alloc", "ca", "site-1");
    constructors_under_alloc_failures(&sc, &cc);
}

TEST(alloc_failures_admission) {
    /* The nth allocation after both objects exist fails, somewhere in the handshake,
     * admission or events: nothing crashes or leaks, and with enough n everyone joins. */
    fed_server_config sc2 = server_config("inproc://fednet-test-alloc2");
    fed_client_config cc2 = client_config("inproc://fednet-test-alloc2", "ca", "site-2");
    CHECK(joins_despite_alloc_failures(&sc2, &cc2));
    log_clear();
}

/* ------------------------------------------------------------------------------------ */
/* Waking a thread that drives many clients (the simulator)                              */

/* Polls client i until it says it has nothing to do; returns the polls it took. */
static int settle(world *w, int i) {
    int polls = 0;
    fed_net_event ev;
    while (fed_client_busy(w->cli[i]) && polls < 1000) {
        CHECK_OK(fed_client_poll(w->cli[i], 0, &ev));
        if (ev.type != FED_NET_NONE) record(&w->c[i], &ev);
        polls++;
    }
    return polls;
}

static bool fd_readable(int fd, int wait_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, wait_ms) == 1 && (p.revents & POLLIN);
}

/* An idle client's descriptors stay quiet and fed_client_busy is false; a message for it
 * makes its descriptor readable and it busy, and not the other client's; polling it
 * takes the message and it is quiet again. On tcp:// the monitor's descriptor is the
 * second one. */
static void wake_fds(const char *endpoint, int nfds) {
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config(endpoint);
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    if (!w.srv) goto done;
    w.ncli = 2;
    for (int i = 0; i < w.ncli; i++) {
        char name[16];
        snprintf(name, sizeof name, "site-%d", i + 1);
        fed_client_config cc = client_config(fed_server_endpoint(w.srv), "ca", name);
        CHECK_OK(fed_client_new(&w.cli[i], w.zctx, &cc));
        if (!w.cli[i]) goto done;
    }
    CHECK(world_until(&w, all_joined, 15000));
    int fds[2][2];
    for (int i = 0; i < w.ncli; i++) {
        CHECK_INT(fed_client_wake_fds(w.cli[i], fds[i]), nfds);
        CHECK(settle(&w, i) < 1000);
        CHECK(!fed_client_busy(w.cli[i]));
        CHECK(!fd_readable(fds[i][0], 0));
    }
    fed_msg m = {.type = FED_MSG_ROUND_START};
    m.u.round_start.round = 9;
    m.u.round_start.config.epochs = 1;
    m.u.round_start.config.batch = 8;
    m.u.round_start.config.optimizer = "sgd";
    m.u.round_start.config.lr = 0.1f;
    uint32_t peer = 0;
    for (uint32_t p = 1; p <= 2; p++)
        if (strcmp(fed_server_peer_cn(w.srv, p), "site-1") == 0) peer = p;
    CHECK(peer != 0);
    CHECK_OK(fed_server_send(w.srv, peer, &m));
    CHECK(fd_readable(fds[0][0], 5000));
    CHECK(fed_client_busy(w.cli[0]));
    CHECK(!fed_client_busy(w.cli[1]));
    CHECK(!fd_readable(fds[1][0], 0));
    CHECK_INT(w.c[0].last_round, 0);
    CHECK(settle(&w, 0) >= 1);
    CHECK_INT(w.c[0].last_round, 9);
    CHECK_INT(w.c[1].last_round, 0);
    CHECK(!fed_client_busy(w.cli[0]));
    CHECK(!fd_readable(fds[0][0], 0));
    fed_net_stats st;
    fed_server_stats(w.srv, &st);
    CHECK_SIZE(st.queued_frames, 0);
done:
    world_free(&w);
}

TEST(wake_fds_inproc) {
    log_clear();
    wake_fds("inproc://fednet-test-wake", 1);
}

TEST(wake_fds_tcp) {
    log_clear();
    wake_fds("tcp://127.0.0.1:0", 2);
}

int main(void) {
    fed_log_set_handler(log_handler, NULL, FED_LOG_DEBUG);
    if (certs_make() != 0) {
        fprintf(stderr, "cannot make test certificates with %s\n", FED_CERTS_SCRIPT);
        certs_remove();
        return 1;
    }
    RUN(round_trip_inproc);
    RUN(round_trip_tcp);
    RUN(wake_fds_inproc);
    RUN(wake_fds_tcp);
    RUN(hello_welcome);
    RUN(refuse_other_ca);
    RUN(refuse_expired);
    RUN(refuse_not_yet_valid);
    RUN(refuse_revoked);
    RUN(accept_revoked_without_crl);
    RUN(refuse_coordinator_cert_as_client);
    RUN(refuse_site_cert_as_coordinator);
    RUN(refuse_name_mismatch);
    RUN(refuse_unknown_coordinator_ca);
    RUN(accept_ip_name);
    RUN(refuse_no_client_cert);
    RUN(same_identity_replaces);
    RUN(max_peers);
    RUN(max_handshakes);
    RUN(keepalive_and_idle);
    RUN(vanished_peer_tcp);
    RUN(vanished_peer_inproc);
    RUN(coordinator_restart);
    RUN(config_errors);
    RUN(alloc_failures_constructors);
    RUN(alloc_failures_admission);
    certs_remove();
    return test_report();
}
