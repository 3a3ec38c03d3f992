/* Tests of the channel's plaintext mode (inproc:// simulation): messages both ways and
 * multi-chunk transfers checked byte for byte and by SHA-256, the claimed identity as the
 * peer's CN, two identities at once and a duplicate one replacing the first as a
 * duplicate certificate CN does, the configurations refused (tcp://, missing or invalid
 * identity), a plaintext client against a TLS coordinator and the reverse, and malformed
 * identity claims and answers injected as raw frames, each ending only that session with
 * one warn line. The wire form checked here is the one channel.h documents. Real
 * sockets; certificates (for the TLS side of the mismatches) made by certs/fedtune-certs. */
#include "tests/test_net_common.h"

#include "core/alloc_internal.h"
#include "net/sock.h"

#include <inttypes.h>

#define MB (1024u * 1024u)

static fed_server_config plain_server_config(const char *endpoint) {
    fed_server_config c = fed_server_default_config();
    c.endpoint = endpoint;
    c.software = "fedtune-test";
    c.net.plaintext = true;
    return c;
}

static fed_client_config plain_client_config(const char *endpoint, const char *identity) {
    fed_client_config c = fed_client_default_config();
    c.endpoint = endpoint;
    c.identity = identity;
    c.net.plaintext = true;
    c.hello.software = "fedtune-test-client";
    c.hello.train_examples = 1000;
    return c;
}

static bool all_joined(world *w) {
    for (int i = 0; i < w->ncli; i++)
        if (w->cli[i] && w->c[i].joined < 1) return false;
    return w->s.joined >= w->ncli;
}

static bool client_left(world *w) {
    return w->c[0].left >= 1;
}

static bool one_dropped(world *w) {
    (void)w;
    return log_count("coordinator: dropped", NULL) >= 1;
}

/* ------------------------------------------------------------------------------------ */
/* Messages and transfers                                                               */

typedef struct xfer {
    uint8_t *model, *model_recv, model_sha[32]; /* coordinator -> client */
    size_t model_len;
    uint8_t *delta, *delta_recv, delta_sha[32]; /* client -> coordinator */
    size_t delta_len;
    char hello_software[64]; /* what the coordinator's JOINED carried */
    char welcome_id[64];     /* what the client's JOINED carried */
} xfer;

static void xfer_srv(world *w, const fed_net_event *ev) {
    xfer *x = w->user;
    if (ev->type == FED_NET_JOINED)
        snprintf(x->hello_software, sizeof x->hello_software, "%s", ev->msg->u.hello.software);
    if (ev->type == FED_NET_MESSAGE && ev->msg->type == FED_MSG_UPDATE) {
        const fed_msg_update *u = &ev->msg->u.update;
        CHECK_SIZE(u->total_bytes, x->delta_len);
        CHECK_OK(fed_server_recv_transfer(w->srv, ev->peer, u->transfer_id, x->delta_recv,
                                          u->total_bytes, u->sha256));
    }
}

static void xfer_cli(world *w, int i, const fed_net_event *ev) {
    xfer *x = w->user;
    if (ev->type == FED_NET_JOINED)
        snprintf(x->welcome_id, sizeof x->welcome_id, "%s", ev->msg->u.welcome.client_id);
    if (ev->type == FED_NET_MESSAGE && ev->msg->type == FED_MSG_ROUND_START) {
        const fed_msg_round_start *r = &ev->msg->u.round_start;
        CHECK_OK(fed_client_recv_transfer(w->cli[i], r->transfer_id, x->model_recv, x->model_len,
                                          x->model_sha));
    }
    if (ev->type == FED_NET_TRANSFER_DONE && ev->transfer_id == 1) {
        CHECK_OK(fed_client_send_transfer(w->cli[i], 2, x->delta, x->delta_len));
        fed_msg m = {.type = FED_MSG_UPDATE};
        m.u.update.round = 3;
        m.u.update.transfer_id = 2;
        m.u.update.total_bytes = x->delta_len;
        memcpy(m.u.update.sha256, x->delta_sha, 32);
        CHECK_OK(fed_client_send(w->cli[i], &m));
    }
}

static bool xfer_done(world *w) {
    return w->c[0].done >= 1 && w->c[0].sent >= 1 && w->s.done >= 1 && w->s.sent >= 1;
}

TEST(messages_and_transfers) {
    log_clear();
    xfer x = {0};
    x.model_len = 7 * MB / 2; /* 3.5 MiB: four 1 MiB chunks */
    x.delta_len = 3 * MB + 77;
    x.model = fed_malloc(x.model_len);
    x.model_recv = fed_calloc(1, x.model_len);
    x.delta = fed_malloc(x.delta_len);
    x.delta_recv = fed_calloc(1, x.delta_len);
    fill_pattern(x.model, x.model_len, 21);
    fill_pattern(x.delta, x.delta_len, 22);
    fed_sha256(x.model, x.model_len, x.model_sha);
    fed_sha256(x.delta, x.delta_len, x.delta_sha);
    world w = {0};
    w.user = &x;
    w.on_srv = xfer_srv;
    w.on_cli = xfer_cli;
    w.zctx = fed_net_context_new();
    fed_server_config sc = plain_server_config("inproc://fednet-plain-xfer");
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    CHECK_STR(fed_server_endpoint(w.srv), "inproc://fednet-plain-xfer");
    fed_client_config cc = plain_client_config("inproc://fednet-plain-xfer", "sim-0001");
    cc.net.chunk_size = FED_NET_CHUNK_MIN; /* the delta goes in 13 chunks of 256 KiB */
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, all_joined, 10000));
    /* The coordinator knows the client by the name it claimed; the client knows the
     * coordinator as "coordinator" (no server_name given). */
    CHECK_STR(w.s.cn, "sim-0001");
    CHECK_STR(fed_server_peer_cn(w.srv, w.s.peer), "sim-0001");
    CHECK_STR(w.c[0].cn, "coordinator");
    CHECK_STR(x.hello_software, "fedtune-test-client");
    CHECK_STR(x.welcome_id, "sim-0001");

    /* RoundStart announces the model (its size and digest are known to the test here),
     * the client receives it and answers with its delta. */
    CHECK_OK(fed_server_send_transfer(w.srv, w.s.peer, 1, x.model, x.model_len));
    fed_msg m = {.type = FED_MSG_ROUND_START};
    m.u.round_start.round = 3;
    m.u.round_start.transfer_id = 1;
    m.u.round_start.config.optimizer = "adamw";
    CHECK_OK(fed_server_send(w.srv, w.s.peer, &m));
    CHECK(world_until(&w, xfer_done, 30000));
    CHECK_INT(w.c[0].last_round, 3);
    CHECK_INT(w.s.last_round, 3);
    CHECK_INT(w.c[0].last_done, 1);
    CHECK_INT(w.s.last_done, 2);
    CHECK_MEM(x.model_recv, x.model, x.model_len);
    CHECK_MEM(x.delta_recv, x.delta, x.delta_len);
    uint8_t got[32];
    fed_sha256(x.model_recv, x.model_len, got);
    CHECK_MEM(got, x.model_sha, 32);
    fed_sha256(x.delta_recv, x.delta_len, got);
    CHECK_MEM(got, x.delta_sha, 32);
    CHECK_INT(w.c[0].failed + w.s.failed, 0);
    /* No TLS in the frames: what the client received is the model plus a few hundred
     * bytes of headers and envelopes (TLS would add 22 bytes per 16 KiB record, ~4.9 KiB
     * for the model alone, plus the certificates of the handshake). */
    fed_net_stats st;
    fed_client_stats(w.cli[0], &st);
    CHECK(st.bytes_received > x.model_len);
    CHECK(st.bytes_received < x.model_len + 1024);
    fed_server_stats(w.srv, &st);
    CHECK(st.bytes_received > x.delta_len);
    CHECK(st.bytes_received < x.delta_len + 2048);
    CHECK_SIZE(st.sessions, 1);
    CHECK_SIZE(st.queued_frames, 0);
    CHECK_INT(log_count("dropped", NULL), 0);
    world_free(&w);
    fed_free(x.model);
    fed_free(x.model_recv);
    fed_free(x.delta);
    fed_free(x.delta_recv);
}

/* ------------------------------------------------------------------------------------ */
/* Identities                                                                           */

static bool third_joined(world *w) {
    return w->s.joined >= 3 && w->c[2].joined >= 1 && w->c[0].left >= 1;
}

static bool updates_in(world *w) {
    return w->by_peer[1].messages >= 1 && w->by_peer[2].messages >= 1;
}

TEST(identities) {
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = plain_server_config("inproc://fednet-plain-ids");
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config ca = plain_client_config("inproc://fednet-plain-ids", "alpha");
    fed_client_config cb = plain_client_config("inproc://fednet-plain-ids", "beta~2");
    cb.server_name = "hub"; /* what beta calls the coordinator */
    w.ncli = 2;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &ca));
    CHECK_OK(fed_client_new(&w.cli[1], w.zctx, &cb));
    CHECK(world_until(&w, all_joined, 10000));
    fed_net_stats st;
    fed_server_stats(w.srv, &st);
    CHECK_SIZE(st.sessions, 2);
    CHECK_SIZE(st.handshakes, 0);
    /* Two handles, one per claimed name. */
    const char *n1 = fed_server_peer_cn(w.srv, 1), *n2 = fed_server_peer_cn(w.srv, 2);
    CHECK(n1 && n2);
    if (n1 && n2) {
        CHECK((strcmp(n1, "alpha") == 0 && strcmp(n2, "beta~2") == 0) ||
              (strcmp(n1, "beta~2") == 0 && strcmp(n2, "alpha") == 0));
    }
    CHECK_STR(w.c[0].cn, "coordinator");
    CHECK_STR(w.c[1].cn, "hub");
    for (int i = 0; i < 2; i++) {
        fed_msg m = {.type = FED_MSG_UPDATE};
        m.u.update.round = 5;
        CHECK_OK(fed_client_send(w.cli[i], &m));
    }
    CHECK(world_until(&w, updates_in, 10000));
    CHECK_STR(w.by_peer[1].cn, n1);
    CHECK_STR(w.by_peer[2].cn, n2);
    uint32_t alpha = strcmp(n1 ? n1 : "", "alpha") == 0 ? 1 : 2;

    /* A third client claims "alpha" while alpha is connected: as with a second client
     * holding the same certificate, the newer session takes over the identity (same
     * handle) and the older one is closed, with no warn line at the coordinator. */
    log_clear();
    w.ncli = 3;
    CHECK_OK(fed_client_new(&w.cli[2], w.zctx, &ca));
    CHECK(world_until(&w, third_joined, 10000));
    world_run(&w, 30);
    CHECK_INT(w.s.peer, alpha);
    CHECK_INT(w.s.left, 1);
    CHECK_INT(w.by_peer[alpha].left, 1);
    CHECK_INT(w.by_peer[alpha].joined, 2);
    CHECK_STR(w.c[2].cn, "coordinator");
    CHECK(fed_server_peer_connected(w.srv, alpha));
    CHECK(fed_server_peer_connected(w.srv, 3 - alpha));
    CHECK(!fed_client_ready(w.cli[0]));
    CHECK(fed_client_ready(w.cli[1]));
    CHECK(fed_client_ready(w.cli[2]));
    CHECK_CONTAINS(w.c[0].left_reason, "the coordinator closed the session");
    CHECK_INT(w.c[1].left, 0);
    CHECK_INT(log_count("coordinator: dropped", NULL), 0);
    CHECK(fed_server_peer_cn(w.srv, 3) == NULL);
    fed_server_stats(w.srv, &st);
    CHECK_SIZE(st.sessions, 2);
    world_free(&w);
}

/* ------------------------------------------------------------------------------------ */
/* Configurations refused                                                               */

TEST(config_refused) {
    void *zctx = fed_net_context_new();
    fed_server *s = NULL;
    fed_server_config sc = plain_server_config("tcp://127.0.0.1:0");
    CHECK_ERR(fed_server_new(&s, zctx, &sc), FED_EINVAL);
    CHECK_STR(fed_errmsg(),
              "plaintext is only allowed on inproc:// endpoints, not tcp://127.0.0.1:0");
    CHECK(s == NULL);
    sc = plain_server_config("ipc:///tmp/fednet-plain");
    CHECK_ERR(fed_server_new(&s, zctx, &sc), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "endpoint ipc:///tmp/fednet-plain: transport \"ipc\" not supported: "
                            "tcp://HOST:PORT or inproc://NAME");
    CHECK(s == NULL);

    fed_client *c = NULL;
    fed_client_config cc = plain_client_config("tcp://127.0.0.1:7443", "site-1");
    CHECK_ERR(fed_client_new(&c, zctx, &cc), FED_EINVAL);
    CHECK_STR(fed_errmsg(),
              "plaintext is only allowed on inproc:// endpoints, not tcp://127.0.0.1:7443");
    CHECK(c == NULL);

    /* The identity: required, 1..64 printable ASCII characters without spaces. */
    cc = plain_client_config("inproc://fednet-plain-cfg", NULL);
    CHECK_ERR(fed_client_new(&c, zctx, &cc), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "plaintext client: no identity to claim");
    cc.identity = "";
    CHECK_ERR(fed_client_new(&c, zctx, &cc), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "plaintext client: no identity to claim");
    cc.identity = "site 1";
    CHECK_ERR(fed_client_new(&c, zctx, &cc), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "plaintext client: identity has byte 0x20 at position 4");
    cc.identity = "tab\there";
    CHECK_ERR(fed_client_new(&c, zctx, &cc), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "byte 0x09 at position 3");
    cc.identity = "caf\xc3\xa9";
    CHECK_ERR(fed_client_new(&c, zctx, &cc), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "byte 0xc3 at position 3");
    char longname[80];
    memset(longname, 'x', 65);
    longname[65] = '\0';
    cc.identity = longname;
    CHECK_ERR(fed_client_new(&c, zctx, &cc), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "plaintext client: identity of 65 characters, limit 64");
    CHECK(c == NULL);

    /* 64 characters are fine, TLS files are not read, and no server name is needed
     * (inproc:// may connect before the coordinator binds). */
    longname[64] = '\0';
    cc.identity = longname;
    cc.net.tls.ca_file = "/nonexistent/ca.crt";
    cc.net.tls.cert_file = "/nonexistent/site.crt";
    CHECK_OK(fed_client_new(&c, zctx, &cc));
    CHECK(c != NULL);
    fed_client_destroy(&c);
    sc = plain_server_config("inproc://fednet-plain-cfg");
    sc.net.tls.ca_file = "/nonexistent/ca.crt";
    CHECK_OK(fed_server_new(&s, zctx, &sc));
    fed_server_destroy(&s);

    /* With TLS, identity is ignored and the files are what counts. */
    cc = client_config("inproc://fednet-plain-cfg", "ca", "site-1");
    cc.identity = "not a valid plaintext identity";
    CHECK_OK(fed_client_new(&c, zctx, &cc));
    fed_client_destroy(&c);
    cc.net.tls.ca_file = cpath("nope/ca.crt");
    CHECK_ERR(fed_client_new(&c, zctx, &cc), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "CA file ");
    CHECK_CONTAINS(fed_errmsg(), "nope/ca.crt: No such file or directory");
    fed_net_context_destroy(&zctx);
}

/* ------------------------------------------------------------------------------------ */
/* Mismatched modes                                                                     */

static bool second_joined(world *w) {
    return w->s.joined >= 1 && w->c[1].joined >= 1;
}

/* Runs client 0 (cc) against the coordinator (sc) until it leaves; checks one warn line
 * on each side (the coordinator's with srv_why, the client's with cli_why), then admits
 * a proper client (good) to show the coordinator still serves. */
static void mismatch(const char *label, fed_server_config sc, fed_client_config cc,
                     fed_client_config good, const char *srv_why, const char *cli_who,
                     const char *cli_why) {
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    sc.net.handshake_timeout_ms = 2000;
    cc.net.handshake_timeout_ms = 2000;
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    if (!w.srv) goto done;
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    if (!w.cli[0]) goto done;
    int64_t t0 = now_ms();
    bool left = world_until(&w, client_left, 10000);
    if (!left) fprintf(stderr, "%s: the client never left\n", label);
    CHECK(left);
    /* Ended by the coordinator's CLOSE, not by a timeout. */
    CHECK(now_ms() - t0 < 2000);
    world_run(&w, 50);
    CHECK_INT(w.s.joined, 0);
    CHECK_INT(w.c[0].joined, 0);
    CHECK_INT(w.c[0].left, 1);
    CHECK(!fed_client_ready(w.cli[0]));
    fed_net_stats st;
    fed_server_stats(w.srv, &st);
    CHECK_SIZE(st.sessions, 0);
    CHECK_SIZE(st.handshakes, 0);
    int srv_lines = log_count("coordinator: dropped", NULL);
    int srv_match = log_count("coordinator: dropped peer routing id", srv_why);
    int cli_lines = log_count("client: dropped", NULL);
    int cli_match = log_count(cli_who, cli_why);
    if (srv_lines != 1 || srv_match != 1 || cli_lines != 1 || cli_match != 1) {
        fprintf(stderr, "%s: expected one coordinator line with \"%s\", one client line \"%s\"\n",
                label, srv_why, cli_why);
        log_dump();
    }
    CHECK_INT(srv_lines, 1);
    CHECK_INT(srv_match, 1);
    CHECK_INT(cli_lines, 1);
    CHECK_INT(cli_match, 1);

    /* The coordinator goes on serving. */
    w.ncli = 2;
    CHECK_OK(fed_client_new(&w.cli[1], w.zctx, &good));
    CHECK(world_until(&w, second_joined, 10000));
    CHECK_INT(w.c[1].joined, 1);
    CHECK_INT(w.s.joined, 1);
    CHECK_INT(log_count("dropped", NULL), 2);
done:
    world_free(&w);
}

TEST(plaintext_client_tls_server) {
    mismatch("plaintext client, TLS coordinator", server_config("inproc://fednet-plain-mm1"),
             plain_client_config("inproc://fednet-plain-mm1", "sim-7"),
             client_config("inproc://fednet-plain-mm1", "ca", "site-1"),
             "a plaintext identity claim instead of a TLS handshake",
             "client: dropped coordinator coordinator", "the coordinator closed the session");
}

TEST(tls_client_plaintext_server) {
    mismatch("TLS client, plaintext coordinator", plain_server_config("inproc://fednet-plain-mm2"),
             client_config("inproc://fednet-plain-mm2", "ca", "site-2"),
             plain_client_config("inproc://fednet-plain-mm2", "site-2"),
             "not a plaintext identity claim: bad magic, starts 16030",
             "client: dropped coordinator localhost", "the coordinator closed the session");
    CHECK_INT(log_count("bad magic", "(a TLS handshake: the client speaks TLS)"), 1);
}

static bool both_worlds_joined(world *a, world *b) {
    return all_joined(a) && all_joined(b);
}

TEST(modes_coexist) {
    /* A TLS coordinator and a plaintext one in one process and one ZeroMQ context. */
    log_clear();
    world a = {0}, b = {0};
    a.zctx = fed_net_context_new();
    b.zctx = a.zctx;
    fed_server_config sa = server_config("inproc://fednet-plain-both-tls");
    fed_server_config sb = plain_server_config("inproc://fednet-plain-both-plain");
    CHECK_OK(fed_server_new(&a.srv, a.zctx, &sa));
    CHECK_OK(fed_server_new(&b.srv, b.zctx, &sb));
    fed_client_config ca = client_config("inproc://fednet-plain-both-tls", "ca", "site-4");
    fed_client_config cb = plain_client_config("inproc://fednet-plain-both-plain", "site-4");
    a.ncli = b.ncli = 1;
    CHECK_OK(fed_client_new(&a.cli[0], a.zctx, &ca));
    CHECK_OK(fed_client_new(&b.cli[0], b.zctx, &cb));
    int64_t end = now_ms() + 10000;
    while (!both_worlds_joined(&a, &b) && now_ms() < end) {
        world_step(&a, 1);
        world_step(&b, 1);
    }
    CHECK(both_worlds_joined(&a, &b));
    CHECK_STR(a.s.cn, "site-4");
    CHECK_STR(b.s.cn, "site-4");
    CHECK_STR(a.c[0].cn, "localhost");
    CHECK_STR(b.c[0].cn, "coordinator");
    CHECK_INT(log_count("dropped", NULL), 0);
    b.zctx = NULL; /* a owns the context */
    world_free(&b);
    world_free(&a);
}

/* ------------------------------------------------------------------------------------ */
/* Malformed claims, injected on a raw DEALER                                           */

/* Waits up to timeout_ms for a frame on raw, stepping w meanwhile; copies it into
 * out[cap] and returns its length, or -1. */
static long raw_recv(fed__sock *raw, world *w, uint8_t *out, size_t cap, int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        fed__frame f;
        fed_err e = fed__sock_recv(raw, &f);
        if (e == FED_OK) {
            size_t n = f.len < cap ? f.len : cap;
            memcpy(out, f.data, n);
            return (long)n;
        }
        if (e != FED_EAGAIN) return -1;
        world_step(w, 1);
    }
    return -1;
}

/* Sends an OPEN frame for session id {sid,...} whose body is body[0..len). */
static void raw_open(fed__sock *raw, uint8_t sid, const void *body, size_t len) {
    uint8_t frame[256] = {'F', 'E', 'D', 'N', 1, 1, 0, 0, sid};
    memcpy(frame + 24, body, len);
    CHECK_OK(fed__sock_send_bytes(raw, NULL, 0, frame, 24 + len));
}

static bool good_got_round(world *w) {
    return w->c[0].last_round == 9;
}

TEST(malformed_claims) {
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = plain_server_config("inproc://fednet-plain-bad");
    sc.net.handshake_timeout_ms = 300;
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config cc = plain_client_config("inproc://fednet-plain-bad", "good");
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, all_joined, 10000));
    uint32_t good = w.s.peer;

    uint8_t name65[6 + 65] = {'F', 'E', 'D', 'P', 1, 65};
    memset(name65 + 6, 'n', 65);
    static const struct {
        const char *label, *body;
        size_t len;
        const char *why;
    } cases[] = {
        {"bad magic",
         "XEDP\x01\x03"
         "abc",
         9, "not a plaintext identity claim: bad magic, starts 5845445001036162..."},
        {"other version",
         "FEDP\x02\x03"
         "abc",
         9, "plaintext identity claim of version 2, expected 1"},
        {"zero length", "FEDP\x01\x00", 6, "plaintext identity claim with an empty name"},
        {"oversized", NULL, 0, "plaintext identity claim of a 65-byte name, limit 64"},
        {"truncated",
         "FEDP\x01\x0a"
         "abcde",
         11, "truncated plaintext identity claim: 11 of 16 bytes"},
        {"truncated header", "FEDP\x01", 5, "truncated plaintext identity claim: 5 bytes"},
        {"space",
         "FEDP\x01\x03"
         "a b",
         9, "claim with byte 0x20 at position 1 of the name"},
        {"control",
         "FEDP\x01\x02"
         "a\x7f",
         8, "claim with byte 0x7f at position 1 of the name"},
        {"trailing bytes",
         "FEDP\x01\x03"
         "abc"
         "zz",
         11, "followed by 2 more bytes in its frame"},
        {"empty OPEN", "", 0, "not admitted within 300 ms"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        log_clear();
        fed__sock *raw = NULL;
        fed__sock_opts o = {0, -1, 1000};
        uint8_t rid[] = {'r', 'a', 'w', (uint8_t)(k + 1)};
        CHECK_OK(fed__sock_dealer(&raw, w.zctx, "inproc://fednet-plain-bad", rid, sizeof rid, &o));
        if (!raw) break;
        if (cases[k].body)
            raw_open(raw, (uint8_t)(k + 1), cases[k].body, cases[k].len);
        else
            raw_open(raw, (uint8_t)(k + 1), name65, sizeof name65);
        bool dropped = world_until(&w, one_dropped, 5000);
        world_run(&w, 20);
        char who[64];
        snprintf(who, sizeof who, "coordinator: dropped peer routing id 726177%02x", (int)(k + 1));
        int lines = log_count("dropped", NULL), match = log_count(who, cases[k].why);
        if (!dropped || lines != 1 || match != 1) {
            fprintf(stderr, "%s: expected one line \"%s: ... %s\"\n", cases[k].label, who,
                    cases[k].why);
            log_dump();
        }
        CHECK(dropped);
        CHECK_INT(lines, 1);
        CHECK_INT(match, 1);
        /* The raw peer hears nothing but CLOSE for its session. */
        uint8_t got[64];
        long n = raw_recv(raw, &w, got, sizeof got, 200);
        CHECK_INT(n, 24);
        if (n == 24) {
            CHECK_INT(got[5], 3);
            CHECK_INT(got[8], k + 1);
        }
        /* The good client is untouched. */
        fed_net_stats st;
        fed_server_stats(w.srv, &st);
        CHECK_SIZE(st.sessions, 1);
        CHECK_SIZE(st.handshakes, 0);
        CHECK(fed_client_ready(w.cli[0]));
        fed__sock_destroy(&raw, 0);
    }
    fed_msg m = {.type = FED_MSG_ROUND_START};
    m.u.round_start.round = 9;
    CHECK_OK(fed_server_send(w.srv, good, &m));
    CHECK(world_until(&w, good_got_round, 5000));
    CHECK_INT(w.s.left, 0);
    CHECK_INT(w.c[0].left, 0);
    world_free(&w);
}

TEST(claim_and_answer_on_the_wire) {
    /* A well-formed claim from a raw DEALER is answered with exactly "FEDP" 1 0 in a DATA
     * frame of the same session; a CLOSE then ends it quietly. */
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = plain_server_config("inproc://fednet-plain-wire");
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed__sock *raw = NULL;
    fed__sock_opts o = {0, -1, 1000};
    CHECK_OK(fed__sock_dealer(&raw, w.zctx, "inproc://fednet-plain-wire", NULL, 0, &o));
    if (!raw) goto done;
    raw_open(raw, 0x5a, "FEDP\x01\x04wire", 10);
    uint8_t got[64];
    long n = raw_recv(raw, &w, got, sizeof got, 2000);
    CHECK_INT(n, 30);
    const uint8_t want[30] = {'F', 'E', 'D', 'N', 1, 2, 0, 0, 0x5a, 0,   0,   0,   0,   0, 0,
                              0,   0,   0,   0,   0, 0, 0, 0, 0,    'F', 'E', 'D', 'P', 1, 0};
    if (n == 30) CHECK_MEM(got, want, 30);
    fed_net_stats st;
    fed_server_stats(w.srv, &st);
    CHECK_SIZE(st.handshakes, 1); /* waiting for Hello */
    uint8_t close[24] = {'F', 'E', 'D', 'N', 1, 3, 0, 0, 0x5a};
    CHECK_OK(fed__sock_send_bytes(raw, NULL, 0, close, sizeof close));
    for (int i = 0; i < 2000 && st.handshakes; i++) {
        world_step(&w, 1);
        fed_server_stats(w.srv, &st);
    }
    CHECK_SIZE(st.handshakes, 0);
    CHECK_INT(w.s.joined, 0);
    CHECK_INT(log_count("dropped", NULL), 0);
done:
    fed__sock_destroy(&raw, 0);
    world_free(&w);
}

/* ------------------------------------------------------------------------------------ */
/* The client's side of the wire, against a raw ROUTER                                  */

typedef struct router_peer {
    uint8_t rid[FED__RID_MAX];
    size_t rid_len;
    uint8_t sid[16];
} router_peer;

/* Waits for the client's OPEN frame on the raw ROUTER; checks that its body is exactly
 * the claim of `identity` and notes who sent it. */
static bool expect_claim(fed__sock *router, world *w, const char *identity, router_peer *p) {
    int64_t end = now_ms() + 5000;
    while (now_ms() < end) {
        fed__frame f;
        fed_err e = fed__sock_recv(router, &f);
        if (e == FED_EAGAIN) {
            world_step(w, 1);
            continue;
        }
        CHECK_OK(e);
        if (e != FED_OK) return false;
        if (f.len >= 24 && f.data[5] != 1) continue; /* the CLOSE of the session before */
        size_t n = strlen(identity);
        CHECK_SIZE(f.len, 24 + 6 + n);
        if (f.len != 24 + 6 + n) return false;
        const uint8_t hdr[8] = {'F', 'E', 'D', 'N', 1, 1, 0, 0};
        CHECK_MEM(f.data, hdr, 8);
        const uint8_t claim[6] = {'F', 'E', 'D', 'P', 1, (uint8_t)n};
        CHECK_MEM(f.data + 24, claim, 6);
        CHECK_MEM(f.data + 30, identity, n);
        memcpy(p->rid, f.rid, f.rid_len);
        p->rid_len = f.rid_len;
        memcpy(p->sid, f.data + 8, 16);
        return true;
    }
    CHECK(0);
    return false;
}

static void router_send(fed__sock *router, const router_peer *p, const void *body, size_t len) {
    uint8_t frame[128] = {'F', 'E', 'D', 'N', 1, 2, 0, 0};
    memcpy(frame + 8, p->sid, 16);
    memcpy(frame + 24, body, len);
    CHECK_OK(fed__sock_send_bytes(router, p->rid, p->rid_len, frame, 24 + len));
}

TEST(client_strict_about_the_answer) {
    world w = {0};
    w.zctx = fed_net_context_new();
    fed__sock *router = NULL;
    fed__sock_opts o = {0, -1, 1000};
    CHECK_OK(fed__sock_router(&router, w.zctx, "inproc://fednet-plain-router", &o));
    if (!router) goto done;
    fed_client_config cc = plain_client_config("inproc://fednet-plain-router", "sim-wire");
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    if (!w.cli[0]) goto done;
    static const struct {
        const char *body;
        size_t len;
        const char *why;
    } cases[] = {
        {"\x16\x03\x03\x00\x02xx", 7,
         "did not answer in plaintext: bad magic, starts 16030300027878 (a TLS record: the "
         "coordinator "
         "speaks TLS)"},
        {"FEDP\x01", 5, "malformed plaintext answer from the coordinator: 4645445001"},
        {"FEDP\x02\x00", 6, "malformed plaintext answer from the coordinator: 464544500200"},
        {"FEDP\x01\x00z", 7, "malformed plaintext answer from the coordinator: 4645445001007a"},
    };
    router_peer p;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        log_clear();
        if (k > 0) CHECK_OK(fed_client_reconnect(w.cli[0]));
        if (!expect_claim(router, &w, "sim-wire", &p)) break;
        router_send(router, &p, cases[k].body, cases[k].len);
        int left = w.c[0].left;
        int64_t end = now_ms() + 5000;
        while (w.c[0].left == left && now_ms() < end) world_step(&w, 1);
        CHECK_INT(w.c[0].left, left + 1);
        CHECK_INT(w.c[0].left_err, FED_EPROTO);
        CHECK_CONTAINS(w.c[0].left_reason, cases[k].why);
        int lines = log_count("dropped", NULL);
        int match = log_count("client: dropped coordinator coordinator", cases[k].why);
        if (lines != 1 || match != 1) log_dump();
        CHECK_INT(lines, 1);
        CHECK_INT(match, 1);
    }
    /* The right answer: the client says Hello in the next DATA frame, as [u32 length]
     * [envelope] in the clear, with the session id of its frames. */
    log_clear();
    CHECK_OK(fed_client_reconnect(w.cli[0]));
    if (!expect_claim(router, &w, "sim-wire", &p)) goto done;
    router_send(router, &p, "FEDP\x01\x00", 6);
    uint8_t got[1024];
    long n = raw_recv(router, &w, got, sizeof got, 2000);
    CHECK(n > 28);
    if (n > 28) {
        CHECK_INT(got[5], 2);
        CHECK_MEM(got + 8, p.sid, 16);
        uint32_t len = (uint32_t)got[24] | (uint32_t)got[25] << 8 | (uint32_t)got[26] << 16 |
                       (uint32_t)got[27] << 24;
        CHECK_INT(len, n - 28);
        fed_msg m;
        CHECK_OK(fed_msg_decode(&m, got + 28, (size_t)(n - 28), NULL));
        CHECK_INT(m.type, FED_MSG_HELLO);
        CHECK_STR(m.u.hello.software, "fedtune-test-client");
        CHECK_MEM(m.u.hello.session_id, p.sid, 16);
        fed_msg_free(&m);
    }
    CHECK_INT(log_count("dropped", NULL), 0);
done:
    fed__sock_destroy(&router, 0);
    world_free(&w);
}

/* ------------------------------------------------------------------------------------ */
/* Allocation failures                                                                  */

TEST(alloc_failures) {
    /* The nth allocation fails in the constructors, then in the plaintext handshake and
     * admission: nothing crashes or leaks, and with enough n everyone joins. */
    fed_server_config sc = plain_server_config("inproc://fednet-plain-alloc");
    fed_client_config cc = plain_client_config("inproc://fednet-plain-alloc", "sim-1");
    constructors_under_alloc_failures(&sc, &cc);
    fed_server_config sc2 = plain_server_config("inproc://fednet-plain-alloc2");
    fed_client_config cc2 = plain_client_config("inproc://fednet-plain-alloc2", "sim-2");
    CHECK(joins_despite_alloc_failures(&sc2, &cc2));
    log_clear();
}

int main(void) {
    fed_log_set_handler(log_handler, NULL, FED_LOG_DEBUG);
    if (certs_make() != 0) {
        fprintf(stderr, "cannot make test certificates with %s\n", FED_CERTS_SCRIPT);
        certs_remove();
        return 1;
    }
    RUN(messages_and_transfers);
    RUN(identities);
    RUN(config_refused);
    RUN(plaintext_client_tls_server);
    RUN(tls_client_plaintext_server);
    RUN(modes_coexist);
    RUN(malformed_claims);
    RUN(claim_and_answer_on_the_wire);
    RUN(client_strict_about_the_answer);
    RUN(alloc_failures);
    certs_remove();
    return test_report();
}
