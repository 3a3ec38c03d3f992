/* Tests of bad peers: raw random bytes on a plain DEALER, a valid handshake followed by
 * garbage, an oversized frame, a frame over ZeroMQ's own limit (which libzmq drops with
 * the connection, seen through the socket monitor), an oversized message, a truncated
 * chunk, chunks out of range or out of order, a transfer whose SHA-256 does not match, a
 * truncated record after the handshake and during it. Each time exactly that peer is
 * dropped at once with one warn line naming it and the reason (never by a timeout),
 * while another client's 8 MiB upload completes with the right digest. The chunk and
 * digest cases run again with every transfer hashed on the digest worker (net/hasher.h).
 * Real sockets, real TLS. */
#include "tests/test_net_common.h"

#include "core/alloc.h"
#include "net/net_internal.h"
#include "net/sock.h"

#include <inttypes.h>

#define MB   (1024u * 1024u)
#define GOOD 0 /* world client index of the well-behaved client, site-1 */
#define BAD  1 /* the misbehaving one, site-3 */

typedef enum scenario {
    RANDOM_DEALER,
    GARBAGE_AFTER_HANDSHAKE,
    OVERSIZED_FRAME,
    OVERSIZED_MESSAGE,
    TRUNCATED_CHUNK,
    CHUNK_OUT_OF_RANGE,
    CHUNK_OUT_OF_ORDER,
    DIGEST_MISMATCH,
    TRUNCATED_RECORD,
    STALLED_HANDSHAKE,
    TRUNCATED_HANDSHAKE,
    HUGE_FRAME,
} scenario;

typedef struct bad {
    scenario sc;
    uint8_t *good_data, good_sha[32], *good_recv; /* the good client's upload */
    size_t good_len;
    uint8_t *bad_data, *bad_recv; /* the bad client's transfer */
    size_t bad_len;
    bool bad_registered; /* the coordinator awaits transfer 20 */
} bad;

static void bad_srv(world *w, const fed_net_event *ev) {
    bad *b = w->user;
    if (ev->type != FED_NET_MESSAGE || ev->msg->type != FED_MSG_UPDATE) return;
    const fed_msg_update *u = &ev->msg->u.update;
    bool good = strcmp(ev->cn, "site-1") == 0;
    CHECK_OK(fed_server_recv_transfer(w->srv, ev->peer, u->transfer_id,
                                      good ? b->good_recv : b->bad_recv, u->total_bytes,
                                      u->sha256));
    if (!good) b->bad_registered = true;
}

static bool both_joined(world *w) {
    return w->s.joined >= 2 && w->c[GOOD].joined >= 1 && w->c[BAD].joined >= 1;
}

static bool bad_registered(world *w) {
    return ((bad *)w->user)->bad_registered;
}

/* The good upload is in, and the bad peer is out (dropped by the coordinator). */
static bool settled(world *w) {
    bad *b = w->user;
    bool raw = b->sc == RANDOM_DEALER || b->sc == STALLED_HANDSHAKE || b->sc == TRUNCATED_HANDSHAKE;
    bool out =
        raw ? log_count("coordinator: dropped", NULL) >= 1 : w->c[BAD].left >= 1 && w->s.left >= 1;
    return w->s.done >= 1 && w->c[GOOD].sent >= 1 && out;
}

static void send_update(world *w, int i, uint64_t id, size_t len, const uint8_t sha[32]) {
    fed_msg m = {.type = FED_MSG_UPDATE};
    m.u.update.round = 1;
    m.u.update.transfer_id = id;
    m.u.update.total_bytes = len;
    memcpy(m.u.update.sha256, sha, 32);
    CHECK_OK(fed_client_send(w->cli[i], &m));
}

/* The coordinator (tcp, small limits), the good client and the bad one, both joined,
 * and the good client's 8 MB upload under way. */
static void start(world *w, bad *b, scenario sc) {
    b->sc = sc;
    b->good_len = 8 * MB + 3;
    b->good_data = fed_malloc(b->good_len);
    b->good_recv = fed_calloc(1, b->good_len);
    fill_pattern(b->good_data, b->good_len, 7);
    fed_sha256(b->good_data, b->good_len, b->good_sha);
    b->bad_len = 1 * MB;
    b->bad_data = fed_malloc(b->bad_len);
    b->bad_recv = fed_calloc(1, b->bad_len);
    fill_pattern(b->bad_data, b->bad_len, 9);
    w->user = b;
    w->on_srv = bad_srv;
    w->zctx = fed_net_context_new();
    fed_server_config sc_ = server_config("tcp://127.0.0.1:0");
    sc_.net.limits.max_envelope = 64 * 1024;
    sc_.net.limits.max_chunk = 1 * MB;
    sc_.net.handshake_timeout_ms = 300;
    CHECK_OK(fed_server_new(&w->srv, w->zctx, &sc_));
    const char *ep = fed_server_endpoint(w->srv);
    fed_client_config cg = client_config(ep, "ca", "site-1");
    fed_client_config cb = client_config(ep, "ca", "site-3");
    w->ncli = 2;
    CHECK_OK(fed_client_new(&w->cli[GOOD], w->zctx, &cg));
    CHECK_OK(fed_client_new(&w->cli[BAD], w->zctx, &cb));
    CHECK(world_until(w, both_joined, 10000));

    /* The good client starts its upload. */
    CHECK_OK(fed_client_send_transfer(w->cli[GOOD], 10, b->good_data, b->good_len));
    send_update(w, GOOD, 10, b->good_len, b->good_sha);
    world_step(w, 1);
}

/* The bad peer's misbehaviour: a raw DEALER (kept in *raw) or the bad client's hooks. */
static void misbehave(world *w, bad *b, scenario sc, fed__sock **raw) {
    const char *ep = fed_server_endpoint(w->srv);
    uint8_t junk[4096];
    fill_pattern(junk, sizeof junk, 99);
    uint8_t sha[32];
    fed_sha256(b->bad_data, b->bad_len, sha);
    switch (sc) {
    case RANDOM_DEALER: {
        fed__sock_opts o = {0, -1, 1000};
        uint8_t rid[] = {'r', 'a', 'w', 1, 2, 3};
        CHECK_OK(fed__sock_dealer(raw, w->zctx, ep, rid, sizeof rid, &o));
        for (int k = 0; *raw && k < 3; k++)
            CHECK_OK(fed__sock_send_bytes(*raw, NULL, 0, junk + 100 * k, 1000));
        break;
    }
    case STALLED_HANDSHAKE: {
        /* An OPEN frame without its ClientHello, then silence. */
        fed__sock_opts o = {0, -1, 1000};
        uint8_t rid[] = {'s', 't', 'a', 'l', 'l'};
        uint8_t open[24] = {'F', 'E', 'D', 'N', 1, 1, 0, 0, 7, 7, 7, 7};
        CHECK_OK(fed__sock_dealer(raw, w->zctx, ep, rid, sizeof rid, &o));
        if (*raw) CHECK_OK(fed__sock_send_bytes(*raw, NULL, 0, open, sizeof open));
        break;
    }
    case TRUNCATED_HANDSHAKE: {
        /* An OPEN frame whose first record, a handshake record announcing 1000 bytes,
         * holds only 500: it cannot be completed by any later frame. */
        fed__sock_opts o = {0, -1, 1000};
        uint8_t rid[] = {'t', 'r', 'u', 'n', 'c'};
        uint8_t open[24 + 505] = {'F', 'E', 'D', 'N', 1, 1, 0, 0, 5, 5, 5, 5};
        uint8_t rec[5] = {22, 3, 1, 1000 >> 8, 1000 & 255};
        memcpy(open + 24, rec, sizeof rec);
        CHECK_OK(fed__sock_dealer(raw, w->zctx, ep, rid, sizeof rid, &o));
        if (*raw) CHECK_OK(fed__sock_send_bytes(*raw, NULL, 0, open, sizeof open));
        break;
    }
    case HUGE_FRAME: {
        /* Beyond ZMQ_MAXMSGSIZE (twice the largest frame): libzmq itself cuts it off. */
        size_t n = 3 * MB;
        uint8_t *big = fed_calloc(1, n);
        CHECK_OK(fed__client_send_frame(w->cli[BAD], big, n));
        fed_free(big);
        break;
    }
    case TRUNCATED_RECORD: {
        /* An application-data record header announcing 1000 bytes, and only 500 of them. */
        uint8_t rec[505] = {23, 3, 3, 1000 >> 8, 1000 & 255};
        CHECK_OK(fed__client_send_frame(w->cli[BAD], rec, sizeof rec));
        break;
    }
    case GARBAGE_AFTER_HANDSHAKE:
        CHECK_OK(fed__client_send_frame(w->cli[BAD], junk, 2000));
        break;
    case OVERSIZED_FRAME: {
        size_t n = 3 * MB / 2;
        uint8_t *big = fed_calloc(1, n);
        CHECK_OK(fed__client_send_frame(w->cli[BAD], big, n));
        fed_free(big);
        break;
    }
    case OVERSIZED_MESSAGE: {
        uint8_t len[4] = {0, 0, 16, 0}; /* 1 MiB envelope announced */
        CHECK_OK(fed__client_send_plain(w->cli[BAD], len, sizeof len));
        break;
    }
    case TRUNCATED_CHUNK:
    case CHUNK_OUT_OF_RANGE:
    case CHUNK_OUT_OF_ORDER:
    case DIGEST_MISMATCH:
        if (sc == DIGEST_MISMATCH) {
            uint8_t wrong[32] = {0};
            CHECK_OK(fed_client_send_transfer(w->cli[BAD], 20, b->bad_data, b->bad_len));
            send_update(w, BAD, 20, b->bad_len, wrong);
            break;
        }
        send_update(w, BAD, 20, b->bad_len, sha);
        CHECK(world_until(w, bad_registered, 10000));
        if (sc == TRUNCATED_CHUNK)
            CHECK_OK(fed__client_send_chunk(w->cli[BAD], 20, 0, junk, 1000, 4000));
        else if (sc == CHUNK_OUT_OF_RANGE)
            CHECK_OK(fed__client_send_chunk(w->cli[BAD], 20, b->bad_len - 10, junk, 100, 100));
        else
            CHECK_OK(fed__client_send_chunk(w->cli[BAD], 20, 4096, junk, 100, 100));
        break;
    }
}

static void run(scenario sc, const char *label, const char *who, const char *why) {
    log_clear();
    bad b = {0};
    world w = {0};
    start(&w, &b, sc);
    fed__sock *raw = NULL;
    misbehave(&w, &b, sc, &raw);

    bool ok = world_until(&w, settled, 20000);
    if (!ok) fprintf(stderr, "%s: did not settle\n", label);
    CHECK(ok);
    world_run(&w, 30);
    /* The good client is untouched and its upload arrived whole. */
    CHECK_INT(w.c[GOOD].left, 0);
    CHECK(fed_client_ready(w.cli[GOOD]));
    CHECK_INT(w.s.done, 1);
    CHECK_MEM(b.good_recv, b.good_data, b.good_len);
    /* The bad one is out, and exactly one line says who and why. */
    bool raw_peer = sc == RANDOM_DEALER || sc == STALLED_HANDSHAKE || sc == TRUNCATED_HANDSHAKE;
    if (!raw_peer) {
        CHECK(!fed_client_ready(w.cli[BAD]));
        CHECK_INT(w.s.left, 1);
    }
    int lines = log_count("coordinator: dropped", NULL);
    int match = log_count("coordinator: dropped", why);
    int named = log_count("coordinator: dropped", who);
    if (lines != 1 || match != 1 || named != 1) {
        fprintf(stderr, "%s: expected one coordinator line with \"%s\" and \"%s\"\n", label, who,
                why);
        log_dump();
    }
    CHECK_INT(lines, 1);
    CHECK_INT(match, 1);
    CHECK_INT(named, 1);
    if (sc == DIGEST_MISMATCH) CHECK_INT(w.s.failed, 1);
    fed_net_stats st;
    fed_server_stats(w.srv, &st);
    CHECK_SIZE(st.sessions, raw_peer ? 2 : 1);
    CHECK_SIZE(st.handshakes, 0);
    fed__sock_destroy(&raw, 0);
    world_free(&w);
    fed_free(b.good_data);
    fed_free(b.good_recv);
    fed_free(b.bad_data);
    fed_free(b.bad_recv);
}

TEST(random_bytes_dealer) {
    run(RANDOM_DEALER, "random bytes", "routing id 726177010203", "not a fednet frame");
}

TEST(garbage_after_handshake) {
    run(GARBAGE_AFTER_HANDSHAKE, "garbage after handshake", "site-3", "TLS error");
}

TEST(oversized_frame) {
    run(OVERSIZED_FRAME, "oversized frame", "site-3", "frame of 1572888 bytes, limit");
}

TEST(oversized_message) {
    run(OVERSIZED_MESSAGE, "oversized message", "site-3", "message of 1048576 bytes, limit 65536");
}

TEST(truncated_chunk) {
    run(TRUNCATED_CHUNK, "truncated chunk", "site-3", "truncated chunk");
}

TEST(chunk_out_of_range) {
    run(CHUNK_OUT_OF_RANGE, "chunk out of range", "site-3", "outside its 1048576 bytes");
}

TEST(chunk_out_of_order) {
    run(CHUNK_OUT_OF_ORDER, "chunk out of order", "site-3", "chunk at offset 4096, expected 0");
}

TEST(digest_mismatch) {
    run(DIGEST_MISMATCH, "digest mismatch", "site-3", "SHA-256");
}

TEST(chunks_and_digest_on_the_worker) {
    fed__net_hash_thread(1);
    run(TRUNCATED_CHUNK, "truncated chunk (worker)", "site-3", "truncated chunk");
    run(CHUNK_OUT_OF_ORDER, "chunk out of order (worker)", "site-3",
        "chunk at offset 4096, expected 0");
    run(DIGEST_MISMATCH, "digest mismatch (worker)", "site-3", "SHA-256");
    fed__net_hash_thread(-1);
}

TEST(truncated_record) {
    run(TRUNCATED_RECORD, "truncated record", "site-3", "truncated record");
}

TEST(truncated_handshake) {
    /* At once, not after the 300 ms handshake timeout. */
    run(TRUNCATED_HANDSHAKE, "truncated handshake", "routing id 7472756e63",
        "frame ends inside a TLS record (truncated record)");
}

TEST(huge_frame) {
    run(HUGE_FRAME, "frame over the ZeroMQ limit", "site-3",
        "its connection ended: the peer went away, or ZeroMQ cut it for a frame over");
}

TEST(stalled_handshake) {
    run(STALLED_HANDSHAKE, "stalled handshake", "routing id 7374616c6c",
        "not admitted within 300 ms");
}

int main(void) {
    fed_log_set_handler(log_handler, NULL, FED_LOG_DEBUG);
    if (certs_make() != 0) {
        fprintf(stderr, "cannot make test certificates with %s\n", FED_CERTS_SCRIPT);
        certs_remove();
        return 1;
    }
    RUN(random_bytes_dealer);
    RUN(garbage_after_handshake);
    RUN(oversized_frame);
    RUN(oversized_message);
    RUN(truncated_chunk);
    RUN(chunk_out_of_range);
    RUN(chunk_out_of_order);
    RUN(digest_mismatch);
    RUN(chunks_and_digest_on_the_worker);
    RUN(truncated_record);
    RUN(stalled_handshake);
    RUN(truncated_handshake);
    RUN(huge_frame);
    certs_remove();
    return test_report();
}
