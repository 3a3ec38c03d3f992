/* Tests of chunked transfers over the secure channel: models out to several clients and
 * deltas back at once with their SHA-256 checked, empty and cancelled transfers, a slow
 * receiver that must not make the sender buffer more than the credit window, and a
 * client that drops its socket in the middle of a 64 MiB transfer and resumes from the
 * offset it credits. The receivers' digests are computed inline or on the digest worker
 * (net/hasher.h), as the channel chooses by size; the same tests run again with one
 * way forced for every transfer, a transfer cancelled while the worker still hashes it
 * lets its buffer go at once, and a transfer whose bytes differ from its digest in one
 * byte of its last chunk is refused whoever hashes it. Real sockets, real TLS, no timing
 * assertions. */
#include "tests/test_net_common.h"

#include "core/alloc.h"
#include "net/net_internal.h"

#include <inttypes.h>

#define MB (1024u * 1024u)

/* ------------------------------------------------------------------------------------ */
/* Both directions, several clients                                                     */

typedef struct both {
    uint8_t *model; /* what the coordinator sends */
    size_t model_len;
    uint8_t model_sha[32];
    uint8_t *recv[WORLD_MAX];  /* where each client receives it */
    uint8_t *delta[WORLD_MAX]; /* what each client sends back */
    size_t delta_len;
    uint8_t delta_sha[WORLD_MAX][32];
    uint8_t *srv_recv[WORLD_MAX + 1]; /* where the coordinator receives, by peer */
} both;

static void both_srv(world *w, const fed_net_event *ev) {
    both *b = w->user;
    if (ev->type == FED_NET_JOINED)
        CHECK_OK(fed_server_send_transfer(w->srv, ev->peer, 1, b->model, b->model_len));
    if (ev->type == FED_NET_MESSAGE && ev->msg->type == FED_MSG_UPDATE) {
        const fed_msg_update *u = &ev->msg->u.update;
        CHECK_SIZE(u->total_bytes, b->delta_len);
        CHECK_OK(fed_server_recv_transfer(w->srv, ev->peer, u->transfer_id, b->srv_recv[ev->peer],
                                          u->total_bytes, u->sha256));
    }
}

static void both_cli(world *w, int i, const fed_net_event *ev) {
    both *b = w->user;
    if (ev->type == FED_NET_JOINED)
        CHECK_OK(fed_client_recv_transfer(w->cli[i], 1, b->recv[i], b->model_len, b->model_sha));
    if (ev->type == FED_NET_TRANSFER_DONE) {
        /* Model in: train (not here) and send the delta back, announced by an Update. */
        CHECK_OK(fed_client_send_transfer(w->cli[i], 2, b->delta[i], b->delta_len));
        fed_msg m = {.type = FED_MSG_UPDATE};
        m.u.update.round = 1;
        m.u.update.transfer_id = 2;
        m.u.update.total_bytes = b->delta_len;
        memcpy(m.u.update.sha256, b->delta_sha[i], 32);
        CHECK_OK(fed_client_send(w->cli[i], &m));
    }
}

static bool both_done(world *w) {
    for (int i = 0; i < w->ncli; i++)
        if (w->c[i].done < 1 || w->c[i].sent < 1) return false;
    return w->s.done >= w->ncli && w->s.sent >= w->ncli;
}

static void transfers_both_ways(const char *endpoint, size_t model_len) {
    log_clear();
    world w = {0};
    both b = {0};
    w.user = &b;
    w.on_srv = both_srv;
    w.on_cli = both_cli;
    w.ncli = 3;
    b.model_len = model_len;
    b.delta_len = 3 * MB + 77;
    b.model = fed_malloc(b.model_len);
    fill_pattern(b.model, b.model_len, 1);
    fed_sha256(b.model, b.model_len, b.model_sha);
    for (int i = 0; i < w.ncli; i++) {
        b.recv[i] = fed_calloc(1, b.model_len + 1);
        b.delta[i] = fed_malloc(b.delta_len);
        fill_pattern(b.delta[i], b.delta_len, 10 + (uint32_t)i);
        fed_sha256(b.delta[i], b.delta_len, b.delta_sha[i]);
        b.srv_recv[i + 1] = fed_calloc(1, b.delta_len);
    }
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config(endpoint);
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    for (int i = 0; i < w.ncli; i++) {
        char name[16];
        snprintf(name, sizeof name, "site-%d", i + 1);
        fed_client_config cc = client_config(fed_server_endpoint(w.srv), "ca", name);
        cc.net.chunk_size = FED_NET_CHUNK_MIN; /* clients send in 256 KiB chunks */
        CHECK_OK(fed_client_new(&w.cli[i], w.zctx, &cc));
    }
    CHECK(world_until(&w, both_done, 60000));
    for (int i = 0; i < w.ncli; i++) {
        CHECK_MEM(b.recv[i], b.model, b.model_len);
        CHECK_INT(w.c[i].failed, 0);
    }
    for (uint32_t p = 1; p <= (uint32_t)w.ncli; p++) {
        /* Peer p is whichever client joined p-th: find its delta by content. */
        uint8_t got[32];
        fed_sha256(b.srv_recv[p], b.delta_len, got);
        int match = 0;
        for (int i = 0; i < w.ncli; i++) match += memcmp(got, b.delta_sha[i], 32) == 0;
        CHECK_INT(match, 1);
    }
    CHECK_INT(w.s.failed, 0);
    CHECK_INT(log_count("dropped", NULL), 0);
    fed_net_stats st;
    fed_server_stats(w.srv, &st);
    CHECK(st.pool_peak <= st.pool_max);
    CHECK_SIZE(st.queued_frames, 0);
    world_free(&w);
    fed_free(b.model);
    for (int i = 0; i < w.ncli; i++) {
        fed_free(b.recv[i]);
        fed_free(b.delta[i]);
        fed_free(b.srv_recv[i + 1]);
    }
}

TEST(both_ways_tcp) {
    transfers_both_ways("tcp://127.0.0.1:0", 5 * MB + 123);
}

TEST(both_ways_inproc) {
    transfers_both_ways("inproc://fednet-test-both", 2 * MB + 1);
}

/* ------------------------------------------------------------------------------------ */
/* Empty transfers, cancels, duplicates                                                 */

static bool one_joined(world *w) {
    return w->s.joined >= 1 && w->c[0].joined >= 1;
}

static bool empty_done(world *w) {
    return w->c[0].done >= 1 && w->s.sent >= 1;
}

TEST(empty_and_cancel) {
    log_clear();
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("inproc://fednet-test-empty");
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config cc = client_config("inproc://fednet-test-empty", "ca", "site-1");
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, one_joined, 10000));
    uint32_t p = w.s.peer;
    uint8_t sha[32], dummy[1];
    fed_sha256(NULL, 0, sha);
    CHECK_OK(fed_server_send_transfer(w.srv, p, 5, dummy, 0));
    CHECK_OK(fed_client_recv_transfer(w.cli[0], 5, dummy, 0, sha));
    CHECK(world_until(&w, empty_done, 10000));
    CHECK_INT(w.c[0].last_done, 5);
    CHECK_INT(w.s.last_sent, 5);

    uint8_t buf[64];
    CHECK_OK(fed_client_recv_transfer(w.cli[0], 6, buf, sizeof buf, sha));
    CHECK_ERR(fed_client_recv_transfer(w.cli[0], 6, buf, sizeof buf, sha), FED_EEXIST);
    CHECK_OK(fed_client_cancel_transfer(w.cli[0], 6));
    CHECK_ERR(fed_client_cancel_transfer(w.cli[0], 6), FED_ENOTFOUND);
    CHECK_OK(fed_server_send_transfer(w.srv, p, 6, buf, sizeof buf));
    CHECK_ERR(fed_server_send_transfer(w.srv, p, 6, buf, sizeof buf), FED_EEXIST);
    CHECK_OK(fed_server_cancel_transfer(w.srv, p, 6));
    CHECK_ERR(fed_server_recv_transfer(w.srv, 42, 6, buf, sizeof buf, sha), FED_ENOTFOUND);
    world_run(&w, 50);
    CHECK_INT(w.c[0].left, 0);
    CHECK_INT(log_count("dropped", NULL), 0);
    world_free(&w);
}

/* ------------------------------------------------------------------------------------ */
/* A slow receiver                                                                      */

static bool slow_done(world *w) {
    return w->c[0].done >= 1 && w->s.sent >= 1;
}

TEST(slow_receiver_window) {
    log_clear();
    const uint32_t credits = 4;
    const size_t len = 16 * MB + 5;
    uint8_t *data = fed_malloc(len), *recv = fed_calloc(1, len), sha[32];
    fill_pattern(data, len, 3);
    fed_sha256(data, len, sha);
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("inproc://fednet-test-slow");
    sc.net.chunk_size = FED_NET_CHUNK_MIN;
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config cc = client_config("inproc://fednet-test-slow", "ca", "site-2");
    cc.net.credits = credits;
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, one_joined, 10000));
    CHECK_OK(fed_server_send_transfer(w.srv, w.s.peer, 9, data, len));
    CHECK_OK(fed_client_recv_transfer(w.cli[0], 9, recv, len, sha));
    fed_net_stats st;
    size_t worst = 0;
    int rounds = 0;
    /* The client reads a little, then the coordinator polls alone for a while. */
    for (; rounds < 2000 && !slow_done(&w); rounds++) {
        world_step(&w, 0);
        fed_net_event ev;
        for (int k = 0; k < 20; k++) {
            CHECK_OK(fed_server_poll(w.srv, 0, &ev));
            if (ev.type == FED_NET_TRANSFER_SENT) w.s.sent++;
        }
        fed_server_stats(w.srv, &st);
        if (st.pool_in_use > worst) worst = st.pool_in_use;
        CHECK_SIZE(st.queued_frames, 0);
    }
    CHECK(slow_done(&w));
    CHECK_MEM(recv, data, len);
    fed_server_stats(w.srv, &st);
    /* In flight: at most `credits` chunks past the last grant, plus the one the receiver
     * is still holding. The transfer is 64 chunks. */
    CHECK(worst <= credits + 1);
    CHECK(st.pool_peak <= credits + 1);
    if (st.pool_peak > credits + 1)
        fprintf(stderr, "pool peak %zu (worst seen %zu), credits %u\n", st.pool_peak, worst,
                credits);
    world_free(&w);
    fed_free(data);
    fed_free(recv);
}

/* ------------------------------------------------------------------------------------ */
/* Reconnect in the middle of a 64 MiB transfer                                         */

typedef struct resume {
    uint8_t *data, *recv, sha[32];
    size_t len;
    bool reconnected;
} resume;

static void resume_srv(world *w, const fed_net_event *ev) {
    resume *r = w->user;
    if (ev->type == FED_NET_JOINED && w->s.joined == 1)
        CHECK_OK(fed_server_send_transfer(w->srv, ev->peer, 64, r->data, r->len));
}

static void resume_cli(world *w, int i, const fed_net_event *ev) {
    resume *r = w->user;
    if (ev->type == FED_NET_JOINED && w->c[i].joined == 1)
        CHECK_OK(fed_client_recv_transfer(w->cli[i], 64, r->recv, r->len, r->sha));
}

static bool past_third(world *w) {
    resume *r = w->user;
    fed_net_stats st;
    fed_client_stats(w->cli[0], &st);
    return st.bytes_received >= r->len / 3 || w->c[0].done;
}

static bool resumed_done(world *w) {
    return w->c[0].done >= 1 && w->s.sent >= 1;
}

static void reconnect_resume(const char *endpoint, size_t len) {
    log_clear();
    resume r = {0};
    r.len = len;
    r.data = fed_malloc(r.len);
    r.recv = fed_calloc(1, r.len);
    fill_pattern(r.data, r.len, 64);
    fed_sha256(r.data, r.len, r.sha);
    world w = {0};
    w.user = &r;
    w.on_srv = resume_srv;
    w.on_cli = resume_cli;
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config(endpoint);
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config cc = client_config(fed_server_endpoint(w.srv), "ca", "site-4");
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, past_third, 30000));
    CHECK_INT(w.c[0].done, 0); /* still in the middle */
    uint32_t peer = w.s.peer;
    /* Drop the socket and the TLS session; connect again with a new one. */
    CHECK_OK(fed_client_reconnect(w.cli[0]));
    CHECK(world_until(&w, resumed_done, 60000));
    CHECK_INT(w.c[0].done, 1);
    CHECK_INT(w.c[0].failed, 0);
    CHECK_MEM(r.recv, r.data, r.len);
    /* The coordinator saw the same identity leave and come back under the same handle. */
    CHECK_INT(w.s.joined, 2);
    CHECK_INT(w.s.left, 1);
    CHECK_INT(w.s.peer, peer);
    CHECK_INT(w.c[0].joined, 2);
    CHECK_INT(w.c[0].left, 0); /* a reconnect asked for is not reported as a loss */
    /* It resumed: the client received much less than the transfer and a third again
     * (what a restart from zero would take), whatever was in flight at the break. */
    fed_net_stats st;
    fed_client_stats(w.cli[0], &st);
    CHECK(st.bytes_received < r.len + r.len / 3);
    CHECK_INT(log_count("dropped", NULL), 0);
    if (log_count("dropped", NULL)) log_dump();
    world_free(&w);
    fed_free(r.data);
    fed_free(r.recv);
}

TEST(reconnect_resume_64mib_tcp) {
    reconnect_resume("tcp://127.0.0.1:0", 64 * MB);
}

TEST(reconnect_resume_inproc) {
    reconnect_resume("inproc://fednet-test-resume", 24 * MB);
}

/* ------------------------------------------------------------------------------------ */
/* The digest worker                                                                    */

static bool got_bytes(world *w) {
    fed_net_stats st;
    fed_client_stats(w->cli[0], &st);
    return st.bytes_received >= 3 * MB || w->c[0].done;
}

/* The client cancels a 32 MiB transfer whose chunks the worker is hashing and frees the
 * buffer at once (ASan sees any read of it after the cancel returned); the session goes
 * on, and the next transfer arrives whole with its digest checked. */
TEST(cancel_while_hashing) {
    log_clear();
    fed__net_hash_thread(1);
    const size_t len = 32 * MB, len2 = 2 * MB + 3;
    uint8_t *data = fed_malloc(len), *recv = fed_calloc(1, len), sha[32];
    uint8_t *data2 = fed_malloc(len2), *recv2 = fed_calloc(1, len2), sha2[32];
    fill_pattern(data, len, 5);
    fed_sha256(data, len, sha);
    fill_pattern(data2, len2, 6);
    fed_sha256(data2, len2, sha2);
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("inproc://fednet-test-cancel-hash");
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config cc = client_config("inproc://fednet-test-cancel-hash", "ca", "site-2");
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, one_joined, 10000));
    CHECK_OK(fed_server_send_transfer(w.srv, w.s.peer, 11, data, len));
    CHECK_OK(fed_client_recv_transfer(w.cli[0], 11, recv, len, sha));
    CHECK(world_until(&w, got_bytes, 20000));
    CHECK_INT(w.c[0].done, 0); /* still in the middle */
    CHECK_OK(fed_client_cancel_transfer(w.cli[0], 11));
    fed_free(recv);
    CHECK_OK(fed_server_cancel_transfer(w.srv, w.s.peer, 11));
    CHECK_OK(fed_server_send_transfer(w.srv, w.s.peer, 12, data2, len2));
    CHECK_OK(fed_client_recv_transfer(w.cli[0], 12, recv2, len2, sha2));
    CHECK(world_until(&w, slow_done, 20000));
    CHECK_INT(w.c[0].last_done, 12);
    CHECK_INT(w.c[0].failed, 0);
    CHECK_INT(w.c[0].left, 0);
    CHECK_MEM(recv2, data2, len2);
    CHECK_INT(log_count("dropped", NULL), 0);
    world_free(&w);
    fed_free(data);
    fed_free(data2);
    fed_free(recv2);
    fed__net_hash_thread(-1);
}

static bool failed_once(world *w) {
    return w->c[0].failed >= 1 || w->c[0].done >= 1;
}

/* A 6 MiB transfer over tcp:// announced with the digest of the same bytes but one, in
 * its last chunk: every byte arrives in place, and the transfer is still refused, with
 * the worker (mode 1, and -1 where more than one CPU is online) and inline (0). */
static void corrupt_byte_refused(int mode) {
    log_clear();
    fed__net_hash_thread(mode);
    const size_t len = 6 * MB + 11;
    uint8_t *data = fed_malloc(len), *recv = fed_calloc(1, len), sha[32];
    fill_pattern(data, len, 7);
    data[len - 10] ^= 0x40;
    fed_sha256(data, len, sha); /* the digest of what the receiver expects */
    data[len - 10] ^= 0x40;     /* and what is sent */
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    fed_client_config cc = client_config(fed_server_endpoint(w.srv), "ca", "site-3");
    w.ncli = 1;
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &cc));
    CHECK(world_until(&w, one_joined, 10000));
    CHECK_OK(fed_server_send_transfer(w.srv, w.s.peer, 13, data, len));
    CHECK_OK(fed_client_recv_transfer(w.cli[0], 13, recv, len, sha));
    CHECK(world_until(&w, failed_once, 20000));
    CHECK_INT(w.c[0].failed, 1);
    CHECK_INT(w.c[0].done, 0);
    CHECK_MEM(recv, data, len); /* all there: the digest alone refused it */
    CHECK_INT(log_count("SHA-256 of the 6291467 bytes received differs", NULL), 1);
    if (log_count("SHA-256 of the 6291467 bytes received differs", NULL) != 1) log_dump();
    world_free(&w);
    fed_free(data);
    fed_free(recv);
    fed__net_hash_thread(-1);
}

TEST(corrupt_byte_refused_worker) {
    corrupt_byte_refused(1);
}

TEST(corrupt_byte_refused_auto) {
    corrupt_byte_refused(-1);
}

TEST(corrupt_byte_refused_inline) {
    corrupt_byte_refused(0);
}

int main(void) {
    fed_log_set_handler(log_handler, NULL, FED_LOG_DEBUG);
    if (certs_make() != 0) {
        fprintf(stderr, "cannot make test certificates with %s\n", FED_CERTS_SCRIPT);
        certs_remove();
        return 1;
    }
    RUN(both_ways_tcp);
    RUN(both_ways_inproc);
    RUN(empty_and_cancel);
    RUN(slow_receiver_window);
    RUN(reconnect_resume_64mib_tcp);
    RUN(reconnect_resume_inproc);
    RUN(cancel_while_hashing);
    RUN(corrupt_byte_refused_worker);
    RUN(corrupt_byte_refused_auto);
    RUN(corrupt_byte_refused_inline);
    /* Every transfer hashed on the worker (small ones and plaintext included), then
     * every transfer inline (the 5 and 64 MiB tcp ones would use the worker). */
    fed__net_hash_thread(1);
    RUN(both_ways_inproc);
    RUN(slow_receiver_window);
    RUN(reconnect_resume_inproc);
    fed__net_hash_thread(0);
    RUN(both_ways_tcp);
    RUN(reconnect_resume_64mib_tcp);
    fed__net_hash_thread(-1);
    certs_remove();
    return test_report();
}
