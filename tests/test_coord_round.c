/* The coordinator's round engine end to end over real TLS on tcp://127.0.0.1: scripted
 * clients (fed_client, written here) receive RoundStart and the weights, and answer with
 * known constant deltas and example counts. After each round the global model must be
 * the previous one plus the example-weighted mean delta (FedAvg, eta 1), computed here
 * in double and compared within 1e-6 per value (the coordinator sums in float32 in
 * commit order, which the test does not control); frozen tensors must not move at all.
 * Bad updates (NaN, wrong total_bytes, stale round, bad digest) are rejected with an
 * Error and leave the model as the good clients make it; a client vanishing mid-round
 * with min_fit 2 of 3 does not stop the round; a new coordinator object resumes from its
 * checkpoint folder with the same model hash, and falls back to the previous checkpoint
 * when the newest is corrupt; FedAvgM/FedAdam/FedYogi resume with their state; a client
 * that asks for a model it was believed to hold gets it again. One thread drives the coordinator
 * (fed_coord_step) and the clients in turn. */
#include "coordinator/checkpoint.h"
#include "coordinator/coordinator.h"
#include "coordinator/internal.h"
#include "core/alloc.h"
#include "core/arch.h"
#include "training/fit.h"
#include "dataset/moments.h"
#include "core/codec.h"
#include "core/rng.h"
#include "core/train_spec.h"
#include "privacy/dp.h"
#include "privacy/secagg.h"
#include "tests/test_net_common.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

#define MLP                                                                                        \
    "{\"input\":[6],\"layers\":[{\"type\":\"linear\",\"out\":16},{\"type\":\"relu\"},{\"type\":"   \
    "\"linear\",\"out\":3}]}"

/* SILENT: takes the model and never answers (then FORGET); FORGET: answers a RoundStart
 * without weights with the client's "no model version N" Error (then GOOD). */
typedef enum mode {
    GOOD,
    BAD_NAN,
    BAD_SIZE,
    BAD_STALE,
    BAD_DIGEST,
    VANISH,
    SILENT,
    FORGET,
    FAIL,         /* its local training fails: answers with an Error for the round */
    LATE_ATTEMPT, /* answers attempt 1 only once attempt 2 started, then attempt 2 */
    CANCEL,       /* announces its update, then cancels the upload and says so */
    Q8,           /* its delta as a q8 stream (ENCODING_DELTA_Q8) */
    Q8_BIG,       /* ... announced 4 bytes longer than the q8 stream is */
    Q8_NAN_SCALE, /* ... whose first block's step is NaN */
    FP16_AS_Q8    /* an fp16 stream of the q8 stream's size, announced as q8 */
} mode;

/* One scripted client. */
typedef struct sc {
    fed_client *cli;
    float delta;                     /* value of every element of its delta */
    uint64_t examples;               /* its weight */
    mode mode;                       /* what it does in the next round */
    bool hold;                       /* wait for the bad client's Error before sending */
    int64_t late_ms;                 /* sends this long after it could */
    int64_t ready_at;                /* monotonic ms: not before */
    float *model;                    /* received global weights */
    size_t model_len;                /* floats */
    float *dbuf;                     /* its delta, kept until sent */
    uint8_t *wire;                   /* Q8*: its compressed delta, kept until sent */
    bool distinct;                   /* delta[i] = delta x pattern(client, i), not delta */
    fed_dataset *data;               /* the statistics round: its raw training data */
    int moments_lie;                 /* 1: claims one example more; 2: a limb is 0.5 */
    size_t index;                    /* its place in clients[] */
    uint64_t round, version, ntrain; /* of the last RoundStart */
    uint64_t attempt;                /* of the last RoundStart */
    bool have_model, want_send, sent;
    int errors; /* Error messages received */
    uint32_t last_code;
    char last_text[256];
    char texts[1024]; /* every Error text, "; "-separated */
    int byes;         /* Bye messages received */
    int stats_rounds; /* statistics RoundStarts received */
    bool bye_finished;
    char bye_reason[512];
    int round_starts, transfers;
} sc;

static sc clients[4];
static int nclients;
static fed_coord *coord;
static void *zctx; /* the clients' ZeroMQ context */

static fed_model *make_model_of(const char *spec) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    if (fed_arch_parse(&a, spec) || fed_model_new(&m, a)) abort();
    fed_arch_destroy(&a);
    fed_model_init(m, 3);
    return m;
}

static fed_model *make_model(void) {
    return make_model_of(MLP);
}

/* A distinct value in [-1, 1] for each coordinate i of an update (and each client k), so
 * that a chunk put at the wrong offset or coordinates permuted show. */
static double pattern(size_t k, size_t i) {
    uint64_t h = (uint64_t)(i + 1) * 2654435761u + (uint64_t)k * 40503u;
    return (double)((h >> 7) % 2001) / 1000.0 - 1.0;
}

/* The statistics round's answer: the moments of s->data as sites encode them. */
static void send_moments(sc *s, const fed_msg_round_start *rs) {
    fed_shape in = {.ndim = 1, .d = {6}};
    size_t groups = fed_std_groups(&in, 6), n = fed_mom_len(groups);
    fed_free(s->dbuf);
    s->dbuf = fed_mallocarray(n, sizeof(float));
    if (!s->dbuf || fed_mom_encode(s->data, groups, s->dbuf) != FED_OK) abort();
    if (s->moments_lie == 2) s->dbuf[n - 1] = 0.5f;
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_UPDATE;
    fed_msg_update *u = &m.u.update;
    u->round = rs->round;
    u->attempt = rs->attempt;
    u->model_version = rs->model_version;
    u->examples = s->data->n + (s->moments_lie == 1);
    u->encoding = FED_ENCODING_MOMENTS_F32;
    u->transfer_id = rs->attempt; /* round 0 */
    u->total_bytes = n * 4;
    fed_sha256(s->dbuf, n * 4, u->sha256);
    if (fed_client_send(s->cli, &m) != FED_OK ||
        fed_client_send_transfer(s->cli, u->transfer_id, s->dbuf, n * 4) != FED_OK)
        fprintf(stderr, "moments: %s\n", fed_client_errmsg(s->cli));
}

static void send_update(sc *s) {
    size_t n = (size_t)s->ntrain;
    fed_free(s->dbuf);
    s->dbuf = fed_mallocarray(n, sizeof(float));
    if (!s->dbuf) abort();
    for (size_t i = 0; i < n; i++)
        s->dbuf[i] = s->distinct ? (float)((double)s->delta * pattern(s->index, i)) : s->delta;
    if (s->mode == BAD_NAN) s->dbuf[n / 2] = NAN;
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_UPDATE;
    fed_msg_update *u = &m.u.update;
    u->round = s->mode == BAD_STALE ? s->round - 1 : s->round;
    u->model_version = s->version;
    u->attempt = s->attempt;
    u->examples = s->examples;
    fed_msg_metric met[2] = {{"global_loss", 1.0 + (double)s->delta}, {"global_accuracy", 0.5}};
    u->metrics = met;
    u->num_metrics = 2;
    u->encoding = FED_ENCODING_DELTA_F32;
    u->transfer_id = s->round << 16 | s->attempt; /* one per attempt, as sites do */
    u->total_bytes = (uint64_t)n * 4 - (s->mode == BAD_SIZE ? 4 : 0);
    fed_sha256(s->dbuf, n * 4, u->sha256);
    size_t wlen = 0;
    if (s->mode >= Q8) {
        fed_codec q8;
        if (fed_codec_parse(&q8, "q8")) abort();
        wlen = fed_codec_size(&q8, n);
        fed_free(s->wire);
        if (!(s->wire = fed_calloc(wlen + 4, 1)) ||
            fed_codec_encode(&q8, s->dbuf, n, 1, s->wire, wlen, NULL))
            abort();
        if (s->mode == Q8_NAN_SCALE) memcpy(s->wire + 24 + 4, &(float){NAN}, 4);
        if (s->mode == FP16_AS_Q8) { /* a valid fp16 stream's header, the q8 size */
            s->wire[0] = FED_CODEC_F16;
            s->wire[2] = s->wire[3] = 0;
        }
        u->encoding = FED_ENCODING_DELTA_Q8;
        u->total_bytes = wlen + (s->mode == Q8_BIG ? 4 : 0);
        fed_sha256(s->wire, (size_t)u->total_bytes, u->sha256);
    }
    if (s->mode == BAD_DIGEST) u->sha256[0] ^= 1;
    if (fed_client_send(s->cli, &m) != FED_OK)
        fprintf(stderr, "update: %s\n", fed_client_errmsg(s->cli));
    if (s->mode == GOOD || s->mode == BAD_NAN || s->mode == BAD_DIGEST)
        if (fed_client_send_transfer(s->cli, u->transfer_id, s->dbuf, n * 4) != FED_OK)
            fprintf(stderr, "delta: %s\n", fed_client_errmsg(s->cli));
    if (s->mode >= Q8 && s->mode != Q8_BIG)
        if (fed_client_send_transfer(s->cli, u->transfer_id, s->wire, wlen) != FED_OK)
            fprintf(stderr, "compressed delta: %s\n", fed_client_errmsg(s->cli));
    if (s->mode == CANCEL) { /* the site gives its upload up and tells the coordinator */
        fed_msg e;
        memset(&e, 0, sizeof e);
        e.type = FED_MSG_ERROR;
        e.u.error.code = 2;
        e.u.error.text = "upload cancelled: stopping";
        e.u.error.round = s->round;
        e.u.error.attempt = s->attempt;
        if (fed_client_send(s->cli, &e) != FED_OK)
            fprintf(stderr, "error: %s\n", fed_client_errmsg(s->cli));
    }
    s->sent = true;
    s->want_send = false;
}

static void on_client_event(sc *s, const fed_net_event *ev) {
    if (ev->type == FED_NET_MESSAGE && ev->msg->type == FED_MSG_ROUND_START) {
        const fed_msg_round_start *rs = &ev->msg->u.round_start;
        s->round_starts++;
        if (rs->stats) {
            s->stats_rounds++;
            if (s->data) send_moments(s, rs);
            return;
        }
        if (s->mode == LATE_ATTEMPT && s->round_starts == 2) {
            /* Attempt 1's update, trained too late: it comes after attempt 2 started. */
            s->mode = GOOD;
            send_update(s);
        }
        s->round = rs->round;
        s->attempt = rs->attempt;
        s->version = rs->model_version;
        s->sent = false;
        s->ntrain = 0;
        for (size_t i = 0; i < rs->manifest.num_tensors; i++) {
            uint64_t b = 0;
            if (rs->manifest.tensors[i].trainable &&
                fed_msg_tensor_bytes(&rs->manifest.tensors[i], &b))
                s->ntrain += b / 4;
        }
        if (s->mode == VANISH) {
            fed__client_vanish(s->cli);
            return;
        }
        if (s->mode == FORGET && !rs->transfer_id) {
            char text[64];
            snprintf(text, sizeof text, "no model version %" PRIu64, rs->model_version);
            fed_msg e;
            memset(&e, 0, sizeof e);
            e.type = FED_MSG_ERROR;
            e.u.error.code = FED_WIRE_NO_MODEL;
            e.u.error.text = text;
            if (fed_client_send(s->cli, &e) != FED_OK)
                fprintf(stderr, "error: %s\n", fed_client_errmsg(s->cli));
            s->mode = GOOD;
            return;
        }
        if (rs->transfer_id) {
            size_t n = (size_t)(rs->manifest.total_bytes / 4);
            if (n != s->model_len) {
                fed_free(s->model);
                s->model = fed_mallocarray(n, sizeof(float));
                s->model_len = n;
            }
            s->have_model = false;
            if (fed_client_recv_transfer(s->cli, rs->transfer_id, s->model, n * 4,
                                         rs->manifest.sha256) != FED_OK)
                fprintf(stderr, "recv model: %s\n", fed_client_errmsg(s->cli));
        } else {
            s->want_send = true;
            s->ready_at = now_ms() + s->late_ms;
        }
    } else if (ev->type == FED_NET_TRANSFER_DONE) {
        s->transfers++;
        s->have_model = true;
        s->want_send = s->mode != SILENT && s->mode != LATE_ATTEMPT;
        s->ready_at = now_ms() + s->late_ms;
        if (s->mode == SILENT) s->mode = FORGET;
    } else if (ev->type == FED_NET_MESSAGE && ev->msg->type == FED_MSG_BYE) {
        s->byes++;
        s->bye_finished = ev->msg->u.bye.finished;
        snprintf(s->bye_reason, sizeof s->bye_reason, "%s", ev->msg->u.bye.reason);
    } else if (ev->type == FED_NET_MESSAGE && ev->msg->type == FED_MSG_ERROR) {
        s->errors++;
        s->last_code = ev->msg->u.error.code;
        snprintf(s->last_text, sizeof s->last_text, "%s", ev->msg->u.error.text);
        size_t used = strlen(s->texts);
        snprintf(s->texts + used, sizeof s->texts - used, "%s; ", ev->msg->u.error.text);
    }
}

/* Steps the coordinator and every client once. */
static fed_err step(void) {
    fed_err err = fed_coord_step(coord, 1);
    for (int i = 0; i < nclients; i++) {
        sc *s = &clients[i];
        if (!s->cli) continue;
        fed_net_event ev;
        for (int k = 0; k < 32; k++) {
            if (fed_client_poll(s->cli, 0, &ev) != FED_OK || ev.type == FED_NET_NONE) break;
            on_client_event(s, &ev);
        }
    }
    for (int i = 0; i < nclients; i++) {
        sc *s = &clients[i];
        if (!s->want_send || now_ms() < s->ready_at) continue;
        /* Good clients wait until the bad one's update of this round was rejected, so
         * that it is judged while the round is open. */
        if (s->hold && fed_coord_rejected_total(coord) < s->round) continue;
        if (s->mode == FAIL) {
            fed_msg e;
            memset(&e, 0, sizeof e);
            e.type = FED_MSG_ERROR;
            e.u.error.code = 5;
            e.u.error.text = "local training: non-finite value";
            e.u.error.round = s->round;
            e.u.error.attempt = s->attempt;
            if (fed_client_send(s->cli, &e) != FED_OK)
                fprintf(stderr, "error: %s\n", fed_client_errmsg(s->cli));
            s->want_send = false;
            s->sent = true;
            continue;
        }
        send_update(s);
    }
    return err;
}

static size_t client_chunk; /* the scripted clients' chunk size (0: the default) */

static void start_clients(int n, const char *endpoint) {
    nclients = n;
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "site-%d", i + 1);
        fed_client_config cc = client_config(endpoint, "ca", name);
        if (client_chunk) cc.net.chunk_size = client_chunk;
        memset(&clients[i], 0, sizeof clients[i]);
        clients[i].delta = 0.01f * (float)(i + 1);
        clients[i].index = (size_t)i;
        clients[i].examples = (uint64_t)(10 * (i + 1));
        if (fed_client_new(&clients[i].cli, zctx, &cc) != FED_OK)
            fprintf(stderr, "client: %s\n", fed_errmsg());
    }
}

static void stop_clients(void) {
    for (int i = 0; i < nclients; i++) {
        fed_client_destroy(&clients[i].cli);
        fed_free(clients[i].model);
        fed_free(clients[i].dbuf);
        fed_free(clients[i].wire);
        fed_data_destroy(&clients[i].data);
    }
    nclients = 0;
}

static fed_coord_config coord_config(const fed_model *m, const char *dir) {
    fed_coord_config c = fed_coord_default_config();
    c.bye_wait_ms = 100; /* these clients are polled between the coordinator's steps */
    c.server = server_config("tcp://127.0.0.1:0");
    c.model = m;
    c.rounds = 3;
    c.min_clients = 3;
    c.min_fit = 3;
    c.deadline_ms = 10000;
    c.freeze = "0.bias";
    c.ckpt.dir = dir;
    c.seed = 42;
    c.input_stats = false; /* the scripted clients answer the statistics round only when told */
    return c;
}

/* Runs the world until the coordinator closed `round` rounds (or 10 s passed). */
static bool until_round(uint64_t round) {
    int64_t end = now_ms() + 10000;
    while (fed_coord_rounds_done(coord) < round && fed_coord_get_state(coord) != FED_COORD_DONE) {
        if (now_ms() > end) return false;
        if (step() != FED_OK) {
            fprintf(stderr, "coordinator: %s\n", fed_errmsg());
            return false;
        }
    }
    return fed_coord_rounds_done(coord) >= round;
}

/* The expected model: prev + the example-weighted mean of the good clients' deltas over
 * the trainable tensors; frozen tensors exactly prev. */
static void check_round(const float *prev, const fed_model *m, const bool *counted) {
    double wsum = 0, dsum = 0;
    for (int i = 0; i < nclients; i++)
        if (counted[i]) {
            wsum += (double)clients[i].examples;
            dsum += (double)clients[i].examples * (double)clients[i].delta;
        }
    double mean = dsum / wsum;
    const float *w = fed_model_params_const(m);
    size_t bad = 0, frozen_moved = 0;
    double worst = 0;
    for (size_t t = 0; t < fed_model_num_tensors(m); t++) {
        const fed_tensor *tt = fed_model_tensor(m, t);
        for (size_t j = tt->offset; j < tt->offset + tt->numel; j++) {
            if (!tt->trainable) {
                frozen_moved += w[j] != prev[j];
                continue;
            }
            double diff = fabs((double)w[j] - ((double)prev[j] + mean));
            if (diff > worst) worst = diff;
            bad += diff > 1e-6;
        }
    }
    if (bad) fprintf(stderr, "  worst difference %.3g\n", worst);
    CHECK_SIZE(bad, 0);
    CHECK_SIZE(frozen_moved, 0);
}

static char tmpdir[128];

static void snapshot(float *dst) {
    const fed_model *m = fed_coord_model(coord);
    memcpy(dst, fed_model_params_const(m), fed_model_num_params(m) * sizeof(float));
}

/* fedavg_rounds, then the three cases after it, share one checkpoint folder: they run in
 * this order, each starting from what the one before left. */
static char fed_dir[256];                     /* the checkpoint folder */
static uint8_t fed_hashes[4][FED_SHA256_LEN]; /* model digest after rounds 1..3 */
static const bool fed_all[4] = {true, true, true, false};

TEST(fedavg_rounds) {
    fed_model *m0 = make_model();
    snprintf(fed_dir, sizeof fed_dir, "%s/ckpt", tmpdir);
    fed_coord_config cfg = coord_config(m0, fed_dir);
    char metrics[256];
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", tmpdir);
    cfg.metrics_file = metrics;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    start_clients(3, fed_coord_endpoint(coord));
    for (uint64_t r = 1; r <= 3; r++) {
        snapshot(prev);
        CHECK(until_round(r));
        CHECK_INT(fed_coord_model_version(coord), r + 1);
        check_round(prev, fed_coord_model(coord), fed_all);
        fed_coord_round_stats st = fed_coord_last_round(coord);
        CHECK_SIZE(st.returned, 3);
        CHECK_SIZE(st.rejected, 0);
        CHECK_NEAR(st.examples, 60, 0);
        CHECK_NEAR(st.fed_loss, 1.0 + (10 * 0.01 + 20 * 0.02 + 30 * 0.03) / 60.0, 1e-6);
        fed_coord_model_sha256(coord, fed_hashes[r]);
    }
    /* Round 1 sent the model to everyone; later rounds again (a new version each time). */
    for (int i = 0; i < 3; i++) CHECK_INT(clients[i].transfers, 3);
    for (int i = 0; i < 3; i++) CHECK_INT(clients[i].errors, 0);
    for (int k = 0; k < 50 && fed_coord_get_state(coord) != FED_COORD_DONE; k++) (void)step();
    CHECK_INT(fed_coord_get_state(coord), FED_COORD_DONE);
    fed_coord_destroy(&coord);
    stop_clients();

    /* Metrics: one line per round. */
    FILE *f = fopen(metrics, "r");
    int lines = 0;
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        lines++;
        CHECK_CONTAINS(line, "\"sampling_seed\":42");
    }
    if (f) fclose(f);
    CHECK_INT(lines, 3);
    fed_free(prev);
done:
    fed_model_destroy(&m0);
}

/* After fedavg_rounds. Resume: a new object on the same folder is at round 3 with the
 * same model; with every round done it finishes (export, Bye to the sites that come back)
 * from there. */
TEST(fedavg_resume_past_the_end_lingers) {
    fed_model *m0 = make_model();
    size_t np = fed_model_num_params(m0);
    fed_coord_config cfg = coord_config(m0, fed_dir);
    char out[256];
    snprintf(out, sizeof out, "%s/final.safetensors", tmpdir);
    cfg.out = out;
    cfg.linger_ms = 10000;
    remove(out);
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (coord) {
        uint8_t h[FED_SHA256_LEN];
        fed_coord_model_sha256(coord, h);
        CHECK_MEM(h, fed_hashes[3], FED_SHA256_LEN);
        CHECK_INT(fed_coord_rounds_done(coord), 3);
        CHECK_INT(fed_coord_model_version(coord), 4);
        CHECK_INT(fed_coord_get_state(coord), FED_COORD_WAITING);
        CHECK_INT(fed_coord_step(coord, 1), FED_OK);
        CHECK_INT(fed_coord_get_state(coord), FED_COORD_LINGERING);
        fed_model *exported = NULL;
        CHECK_OK(fed_model_load(&exported, out, NULL));
        if (exported)
            CHECK_MEM(fed_model_params_const(exported),
                      fed_model_params_const(fed_coord_model(coord)), np * sizeof(float));
        fed_model_destroy(&exported);
        start_clients(3, fed_coord_endpoint(coord));
        int64_t end = now_ms() + 10000;
        while (fed_coord_get_state(coord) != FED_COORD_DONE && now_ms() < end) (void)step();
        CHECK_INT(fed_coord_get_state(coord), FED_COORD_DONE);
        for (int k = 0; k < 20; k++) (void)step();
        for (int i = 0; i < 3; i++) {
            CHECK_INT(clients[i].byes, 1);
            CHECK(clients[i].bye_finished);
            CHECK_STR(clients[i].bye_reason, "all rounds done");
            CHECK_INT(clients[i].round_starts, 0);
        }
        CHECK_INT(fed_coord_rounds_done(coord), 3);
        fed_coord_destroy(&coord);
        stop_clients();
    }
    cfg.out = NULL;
    fed_model_destroy(&m0);
}

/* After fedavg_resume_past_the_end_lingers. Corrupt the newest checkpoint's data: the
 * previous one is used, and logged; then only the newest three are kept. */
TEST(fedavg_corrupt_checkpoint_falls_back) {
    fed_model *m0 = make_model();
    float *prev = fed_mallocarray(fed_model_num_params(m0), sizeof(float));
    fed_coord_config cfg = coord_config(m0, fed_dir);
    char path[512];
    fed_ckpt_path(path, sizeof path, fed_dir, 3);
    FILE *g = fopen(path, "r+b");
    CHECK(g != NULL);
    if (g) {
        fseek(g, -8, SEEK_END);
        fputc(0x5a, g);
        fputc(0xa5, g);
        fclose(g);
    }
    log_clear();
    cfg.rounds = 4;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (coord) {
        uint8_t h[FED_SHA256_LEN];
        fed_coord_model_sha256(coord, h);
        CHECK_MEM(h, fed_hashes[2], FED_SHA256_LEN);
        CHECK_INT(fed_coord_rounds_done(coord), 2);
        CHECK_INT(fed_coord_model_version(coord), 3);
        CHECK_INT(log_count("round-000003", "not usable"), 1);
        /* And it goes on: round 3 again, from round 2's model. */
        start_clients(3, fed_coord_endpoint(coord));
        snapshot(prev);
        CHECK(until_round(3));
        check_round(prev, fed_coord_model(coord), fed_all);
        fed_coord_destroy(&coord);
        stop_clients();
    }
    /* Only the newest three are kept. */
    struct stat sb;
    fed_ckpt_path(path, sizeof path, fed_dir, 1);
    CHECK(stat(path, &sb) == 0);
    fed_ckpt_path(path, sizeof path, fed_dir, 3);
    CHECK(stat(path, &sb) == 0);
    fed_free(prev);
    fed_model_destroy(&m0);
}

TEST(bad_updates_rejected) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 4;
    cfg.min_clients = 4;
    cfg.min_fit = 3;
    cfg.wait_after_min_ms = 0; /* the stale round's bad client never answers that round */
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    start_clients(4, fed_coord_endpoint(coord));
    clients[3].delta = 5.0f; /* would move the model a lot if it counted */
    for (int i = 0; i < 3; i++) clients[i].hold = true;
    const mode modes[4] = {BAD_NAN, BAD_SIZE, BAD_STALE, BAD_DIGEST};
    const uint32_t codes[4] = {5, 7, 2, 10};
    const char *texts[4] = {"nan", "total_bytes", "not open", ""};
    bool good[4] = {true, true, true, false};
    log_clear();
    for (uint64_t r = 1; r <= 4; r++) {
        clients[3].mode = modes[r - 1];
        snapshot(prev);
        CHECK(until_round(r));
        check_round(prev, fed_coord_model(coord), good);
        fed_coord_round_stats st = fed_coord_last_round(coord);
        CHECK_SIZE(st.returned, 3);
        if (modes[r - 1] == BAD_DIGEST) {
            CHECK(fed_coord_rejected_total(coord) == 4);
        } else {
            CHECK_SIZE(st.rejected, modes[r - 1] == BAD_STALE ? 0 : 1);
            CHECK_INT(clients[3].errors, (int)r);
            CHECK_INT(clients[3].last_code, codes[r - 1]);
            CHECK_CONTAINS(clients[3].last_text, texts[r - 1]);
            CHECK_INT(log_count("rejected", "site-4"), (int)r);
        }
    }
    for (int i = 0; i < 3; i++) CHECK_INT(clients[i].errors, 0);
    /* Monitoring counted each rejection under its reason (the Error's code), per site. */
    char *js = NULL, *prom = NULL, *page = NULL;
    CHECK_OK(fed_coord_status_json(coord, &js));
    CHECK_OK(fed_coord_metrics_text(coord, &prom));
    CHECK_OK(fed_coord_status_page(coord, &page));
    if (js && prom && page) {
        CHECK_CONTAINS(js, "\"rounds_done\":4,\"rounds_target\":4,\"rounds_run\":4,");
        CHECK_CONTAINS(js, "\"rejections\":{\"invalid\":1,\"format\":0,\"range\":1,\"shape\":1,"
                           "\"unsupported\":0,\"digest\":1,\"protocol\":0,\"auth\":0,"
                           "\"timeout\":0,\"other\":0}");
        CHECK_CONTAINS(js, "\"sites_known\":4,\"joins\":4,\"sampled\":16,\"accepted\":12,");
        CHECK_CONTAINS(js, "\"rounds\":0,\"rejections\":4}");
        CHECK_CONTAINS(js, "{\"name\":\"site-1\",\"state\":\"idle\",");
        CHECK_CONTAINS(js, "\"rounds\":4,\"rejections\":0}");
        CHECK_CONTAINS(js, "\"history\":[{\"round\":1,");
        CHECK_CONTAINS(prom, "\nfedtune_rounds_total 4\n");
        CHECK_CONTAINS(prom, "\nfedtune_updates_rejected_total{reason=\"digest\"} 1\n");
        CHECK_CONTAINS(prom, "\nfedtune_updates_rejected_total{reason=\"range\"} 1\n");
        CHECK_CONTAINS(prom, "\nfedtune_updates_accepted_total 12\n");
        CHECK_CONTAINS(prom, "\nfedtune_sites_sampled_total 16\n");
        CHECK_CONTAINS(prom, "\nfedtune_round_duration_seconds_count 4\n");
        CHECK_CONTAINS(page, "<tr class=\"site idle\"><td class=\"name\">site-1</td>");
        CHECK_CONTAINS(page, "<td class=\"name\">site-4</td>");
        CHECK_CONTAINS(page, "<tr class=\"round\" data-round=\"4\"><td>4</td>");
    }
    free(js);
    free(prom);
    free(page);
    fed_free(prev);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

/* The monitoring text builder: JSON strings and numbers, HTML escaping, its limit. */
TEST(status_text_escaping) {
    fed_sbuf b = {.limit = 1024};
    fed__coord_sb_json_str(&b, "a\"b\\c\n<d>&'");
    fed__coord_sb_printf(&b, " ");
    fed__coord_sb_json_num(&b, (double)NAN);
    fed__coord_sb_printf(&b, " ");
    fed__coord_sb_json_num(&b, 0.25);
    fed__coord_sb_printf(&b, " ");
    fed__coord_sb_html(&b, "a\"b<c>&'\x01"
                           "d");
    char *out = NULL;
    CHECK_OK(fed__coord_sb_done(&b, &out));
    if (out) CHECK_STR(out, "\"a\\\"b\\\\c\\u000a<d>&'\" null 0.25 a&quot;b&lt;c&gt;&amp;&#39;d");
    free(out);
    fed_sbuf small = {.limit = 16};
    for (int i = 0; i < 10; i++) fed__coord_sb_printf(&small, "%d", i);
    CHECK_OK(fed__coord_sb_done(&small, &out));
    if (out) CHECK_STR(out, "0123456789");
    free(out);
    fed__coord_sb_printf(&small, "%s", "0123456789abcdefXYZ"); /* past the limit */
    CHECK_ERR(fed__coord_sb_done(&small, &out), FED_ERANGE);
    CHECK(out == NULL);
    fed_sbuf big = {.limit = 8192};
    fed__coord_sb_printf(&big, "%s", "x");
    fed__coord_sb_printf(&big, "%9000s", "y"); /* one append past the limit */
    CHECK_ERR(fed__coord_sb_done(&big, &out), FED_ERANGE);
    fed_sbuf empty = {.limit = 16};
    CHECK_OK(fed__coord_sb_done(&empty, &out));
    if (out) CHECK_STR(out, "");
    free(out);
}

/* --compress q8: a q8 update (of a constant delta: exact) counts as a plain one, in the
 * same round as f32 updates; one announced beyond the codec's exact size is refused
 * before any byte is received; a NaN scale and a stream of another codec (its header's
 * size is not the announced one) are refused by the decoder, and the model moves by the
 * good updates only. */
TEST(compressed_updates) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 4;
    cfg.min_clients = 4;
    cfg.min_fit = 3;
    cfg.compress = "q8";
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    start_clients(4, fed_coord_endpoint(coord));
    clients[0].mode = Q8; /* clients 1 and 2: f32 */
    clients[3].delta = 5.0f;
    const mode modes[4] = {Q8, Q8_BIG, Q8_NAN_SCALE, FP16_AS_Q8};
    const uint32_t codes[4] = {0, 7, 3, 3};
    const char *texts[4] = {"", "total_bytes 183, expected 179 (q8 147 trainable parameters)",
                            "codec stream: block 0 scale (lo 5, step nan) is not finite",
                            "codec stream: 179 bytes, its header says 318"};
    log_clear();
    for (uint64_t r = 1; r <= 4; r++) {
        bool good[4] = {true, true, true, r == 1};
        clients[3].mode = modes[r - 1];
        snapshot(prev);
        CHECK(until_round(r));
        check_round(prev, fed_coord_model(coord), good);
        fed_coord_round_stats st = fed_coord_last_round(coord);
        CHECK_SIZE(st.returned, r == 1 ? 4 : 3);
        CHECK_SIZE(st.updates_compressed, r == 1 ? 2 : 1);
        CHECK(st.update_bytes == (r == 1 ? 2 * 179 + 2 * 588 : 179 + 2 * 588));
        if (r > 1) { /* its Error may still be on its way */
            for (int i = 0; i < 1000 && clients[3].errors < (int)r - 1; i++)
                if (step() != FED_OK) break;
            CHECK_INT(clients[3].last_code, codes[r - 1]);
            CHECK_CONTAINS(clients[3].last_text, texts[r - 1]);
        }
    }
    CHECK_INT(clients[3].errors, 3);
    for (int i = 0; i < 3; i++) CHECK_INT(clients[i].errors, 0);
    fed_free(prev);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

/* The round-close rule: with min_fit reached the round still waits for the rest of its
 * sample (a late client counts), closes as soon as the whole sample answered (long before
 * the deadline), and with wait_after_min_ms closes that long after min_fit without the
 * silent client. */
TEST(round_waits_for_sample) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 1;
    cfg.min_clients = 4;
    cfg.min_fit = 2;
    cfg.deadline_ms = 60000;
    cfg.wait_after_min_ms = -1;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    start_clients(4, fed_coord_endpoint(coord));
    clients[3].late_ms = 400; /* two updates are in long before it */
    snapshot(prev);
    int64_t t0 = now_ms();
    CHECK(until_round(1));
    CHECK(now_ms() - t0 >= 400);
    bool all[4] = {true, true, true, true};
    check_round(prev, fed_coord_model(coord), all);
    fed_coord_round_stats st = fed_coord_last_round(coord);
    CHECK_SIZE(st.sampled, 4);
    CHECK_SIZE(st.returned, 4);
    fed_coord_destroy(&coord);
    stop_clients();

    /* Client 4 takes the model and never answers: the round closes 300 ms after
     * min_fit with the other three (until_round gives up after 10 s, the deadline is
     * 60 s). */
    cfg.wait_after_min_ms = 300;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto out;
    start_clients(4, fed_coord_endpoint(coord));
    clients[3].mode = SILENT;
    snapshot(prev);
    t0 = now_ms();
    CHECK(until_round(1));
    CHECK(now_ms() - t0 >= 300);
    bool three[4] = {true, true, true, false};
    check_round(prev, fed_coord_model(coord), three);
    st = fed_coord_last_round(coord);
    CHECK_SIZE(st.sampled, 4);
    CHECK_SIZE(st.returned, 3);
    fed_coord_destroy(&coord);
    stop_clients();
out:
    fed_free(prev);
done:
    fed_model_destroy(&m0);
}

/* Trainable floats of m and the largest |w - prev| change of a frozen one. */
static size_t frozen_moved(const float *prev, const fed_model *m) {
    size_t moved = 0;
    for (size_t t = 0; t < fed_model_num_tensors(m); t++) {
        const fed_tensor *tt = fed_model_tensor(m, t);
        for (size_t j = tt->offset; !tt->trainable && j < tt->offset + tt->numel; j++)
            moved += fed_model_params_const(m)[j] != prev[j];
    }
    return moved;
}

/* DP-FedAvg: every update clipped to dp_clip and weighing 1 whatever its example count;
 * with noise 0 the step is exactly the uniform mean of the clipped deltas, and epsilon is
 * infinite (clipping alone guarantees nothing). */
TEST(dp_clipping_uniform_weights) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 1;
    size_t ntrain = fed_model_num_params(m0) - 16; /* 0.bias is frozen */
    /* Deltas 0.01, 0.02, 0.03 per float: the bound lets the first two through and
     * scales the third to 0.02 per float. */
    cfg.dp.clip = 0.02 * sqrt((double)ntrain) * (1 + 1e-9);
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    start_clients(3, fed_coord_endpoint(coord));
    snapshot(prev);
    CHECK(until_round(1));
    const fed_model *m = fed_coord_model(coord);
    double want = (0.01 + 0.02 + 0.02) / 3.0, worst = 0;
    for (size_t t = 0; t < fed_model_num_tensors(m); t++) {
        const fed_tensor *tt = fed_model_tensor(m, t);
        for (size_t j = tt->offset; tt->trainable && j < tt->offset + tt->numel; j++) {
            double d = fabs((double)fed_model_params_const(m)[j] - (double)prev[j] - want);
            if (d > worst) worst = d;
        }
    }
    CHECK(worst < 1e-6);
    CHECK_SIZE(frozen_moved(prev, m), 0);
    fed_coord_round_stats st = fed_coord_last_round(coord);
    CHECK_SIZE(st.clipped, 1);
    CHECK(isinf(st.epsilon));
    CHECK_NEAR(st.examples, 3.0, 0); /* weights 1, not 10 + 20 + 30 */
    fed_free(prev);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

/* Adaptive clipping (noise 0, so the count is exact): deltas of norm 1, 2 and 3 x
 * 0.01 sqrt(n) against a bound just above the middle one: 2 of 3 within, so with target
 * quantile 0.5 and rate 0.2 the bound shrinks by exp(-0.2 (2/3 - 0.5)) per round; the
 * bound survives a restart from the checkpoint. */
TEST(dp_adaptive_clipping) {
    fed_model *m0 = make_model();
    char dir[256];
    snprintf(dir, sizeof dir, "%s/adaptckpt", tmpdir);
    fed_coord_config cfg = coord_config(m0, dir);
    cfg.rounds = 2;
    size_t ntrain = fed_model_num_params(m0) - 16; /* 0.bias is frozen */
    double s0 = 0.02 * sqrt((double)ntrain) * 1.01;
    cfg.dp.clip = s0;
    cfg.dp.target_quantile = 0.5;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    start_clients(3, fed_coord_endpoint(coord));
    CHECK(until_round(1));
    fed_coord_round_stats st = fed_coord_last_round(coord);
    CHECK_NEAR(st.clip, s0, 1e-12);
    CHECK_SIZE(st.clipped, 1);
    CHECK(until_round(2));
    double s1 = s0 * exp(-0.2 * (2.0 / 3.0 - 0.5));
    st = fed_coord_last_round(coord);
    CHECK_NEAR(st.clip, s1, 1e-9 * s1);
    CHECK_SIZE(st.clipped, 2); /* 0.02 sqrt(n) is now above the bound too */
    fed_coord_destroy(&coord);
    stop_clients();
    /* A restart resumes with the bound the last round left: 1 of 3 within. */
    cfg.rounds = 3;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    start_clients(3, fed_coord_endpoint(coord));
    CHECK(until_round(3));
    st = fed_coord_last_round(coord);
    double s2 = s1 * exp(-0.2 * (1.0 / 3.0 - 0.5));
    CHECK_NEAR(st.clip, s2, 1e-9 * s2);
    fed_coord_destroy(&coord);
    stop_clients();
    /* Bad settings are refused, naming the option. */
    cfg = coord_config(m0, NULL);
    cfg.dp.target_quantile = 0.5;
    CHECK_ERR(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "dp-target-quantile needs dp-clip");
    cfg.dp.clip = 1;
    cfg.dp.noise = 2;
    cfg.dp.count_noise = 0.5;
    CHECK_ERR(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "dp-count-noise 0.5: must exceed dp-noise / 2 = 1");
    cfg.dp.count_noise = 0;
    cfg.secagg.on = true;
    CHECK_ERR(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "dp-target-quantile does not combine with secagg");
done:
    fed_model_destroy(&m0);
}

/* Secure aggregation against bad participants: a truncated ADVERTISE and a SHARES out of
 * turn take their senders out of the attempt with an Error; a plain delta in a securely
 * aggregated round is refused, so is any update of an excluded client (site-1's delta is
 * held until its bad ADVERTISE is out, so it always arrives excluded); with nobody
 * advertising valid keys the attempt ends at the phase deadline and the round is
 * retried, the coordinator unharmed. */
TEST(secagg_bad_participants) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 1;
    cfg.secagg.on = true;
    /* site-3's plain delta and site-1's update must arrive inside the key phase: 4 s leaves
     * room on a loaded machine (1.5 s did not, once in a while) */
    cfg.secagg.phase_ms = 4000;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    start_clients(3, fed_coord_endpoint(coord));
    clients[0].late_ms = 600000; /* its delta is held until its bad ADVERTISE is sent */
    int64_t end = now_ms() + 10000;
    while (now_ms() < end &&
           !(clients[0].round_starts && clients[1].round_starts && clients[2].round_starts))
        if (step() != FED_OK) break;
    CHECK(clients[0].round_starts && clients[1].round_starts && clients[2].round_starts);
    uint8_t adv[5] = {FED_SA_MSG_ADVERTISE, 1, 0, 0, 0}, shares[24] = {FED_SA_MSG_SHARES, 1};
    fed_msg m = {.type = FED_MSG_SECAGG};
    m.u.secagg = (fed_msg_secagg){.round = 1, .msg = adv, .len = sizeof adv};
    CHECK_OK(fed_client_send(clients[0].cli, &m));
    clients[0].late_ms = 0; /* the delta now follows the ADVERTISE on the same connection */
    clients[0].ready_at = now_ms();
    m.u.secagg = (fed_msg_secagg){.round = 1, .msg = shares, .len = sizeof shares};
    CHECK_OK(fed_client_send(clients[1].cli, &m));
    end = now_ms() + 20000;
    while (now_ms() < end && clients[2].round_starts < 2)
        if (step() != FED_OK) break;
    CHECK(clients[2].round_starts >= 2); /* attempt 1 abandoned, attempt 2 started */
    CHECK_CONTAINS(clients[0].texts, "ADVERTISE");
    CHECK_CONTAINS(clients[0].texts, "out of round 1's secure aggregation");
    CHECK_CONTAINS(clients[1].texts, "secagg message type 3 out of turn");
    CHECK_CONTAINS(clients[2].texts, "a masked update before the key exchange ended");
    CHECK_SIZE(fed_coord_rounds_done(coord), 0);
    CHECK(fed_coord_get_state(coord) != FED_COORD_DONE);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

/* DP noise: with zero deltas the step is pure noise of std z * S / m; the same noise
 * seed gives the same bytes; epsilon follows the accountant round by round (q = 1 with
 * every client sampled), survives a resume, and target_epsilon stops before a round
 * would spend more. */
/* The DP runs' configuration: 2 rounds, clip 3, z 1.5, seeded noise, checkpoints in dir
 * (NULL: none). */
static fed_coord_config dp_config(const fed_model *m0, const char *dir) {
    fed_coord_config cfg = coord_config(m0, dir);
    cfg.rounds = 2;
    cfg.dp.clip = 3.0;
    cfg.dp.noise = 1.5;
    cfg.dp.noise_seed = 77;
    return cfg;
}

TEST(dp_noise_accountant_budget) {
    fed_model *m0 = make_model();
    char dir[256];
    snprintf(dir, sizeof dir, "%s/dpckpt", tmpdir);
    fed_coord_config cfg = dp_config(m0, dir);
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    uint8_t h2[FED_SHA256_LEN];
    start_clients(3, fed_coord_endpoint(coord));
    for (int i = 0; i < 3; i++) clients[i].delta = 0.0f;
    snapshot(prev);
    CHECK(until_round(1));
    const fed_model *m = fed_coord_model(coord);
    double s2 = 0;
    size_t cnt = 0;
    for (size_t t = 0; t < fed_model_num_tensors(m); t++) {
        const fed_tensor *tt = fed_model_tensor(m, t);
        for (size_t j = tt->offset; tt->trainable && j < tt->offset + tt->numel; j++, cnt++) {
            double d = (double)fed_model_params_const(m)[j] - (double)prev[j];
            s2 += d * d;
        }
    }
    double sd = sqrt(s2 / (double)cnt), want = 1.5 * 3.0 / 3.0;
    CHECK(sd > 0.8 * want && sd < 1.2 * want); /* 147 draws: +-20% is > 3 sigma */
    CHECK_SIZE(frozen_moved(prev, m), 0);
    double e1 = 0, e2 = 0, e3 = 0;
    CHECK_OK(fed_dp_epsilon(1.0, 1.5, 1, 1e-5, FED_DP_IMPROVED, &e1, NULL));
    CHECK_OK(fed_dp_epsilon(1.0, 1.5, 2, 1e-5, FED_DP_IMPROVED, &e2, NULL));
    CHECK_OK(fed_dp_epsilon(1.0, 1.5, 3, 1e-5, FED_DP_IMPROVED, &e3, NULL));
    CHECK_NEAR(fed_coord_last_round(coord).epsilon, e1, 1e-12);
    CHECK(until_round(2));
    CHECK_NEAR(fed_coord_last_round(coord).epsilon, e2, 1e-12);
    fed_coord_model_sha256(coord, h2);
    fed_coord_destroy(&coord);
    stop_clients();

    /* The same run again from scratch: the same noise, the same bytes. */
    char dir2[256];
    snprintf(dir2, sizeof dir2, "%s/dpckpt2", tmpdir);
    cfg.ckpt.dir = dir2;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto out;
    start_clients(3, fed_coord_endpoint(coord));
    for (int i = 0; i < 3; i++) clients[i].delta = 0.0f;
    CHECK(until_round(2));
    uint8_t again[FED_SHA256_LEN];
    fed_coord_model_sha256(coord, again);
    CHECK_MEM(again, h2, FED_SHA256_LEN);
    fed_coord_destroy(&coord);
    stop_clients();

    /* Resume the first run for up to 5 rounds with a budget between eps(3) and eps(4):
     * the accountant comes back from the checkpoint, round 3 runs, round 4 does not. */
    cfg.ckpt.dir = dir;
    cfg.rounds = 5;
    cfg.dp.target_epsilon = 0.5 * (e3 + (e3 + (e3 - e2)));
    double e4 = 0;
    CHECK_OK(fed_dp_epsilon(1.0, 1.5, 4, 1e-5, FED_DP_IMPROVED, &e4, NULL));
    CHECK(cfg.dp.target_epsilon > e3 && cfg.dp.target_epsilon < e4);
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto out;
    CHECK_NEAR(fed_coord_last_round(coord).epsilon, e2, 1e-12);
    start_clients(3, fed_coord_endpoint(coord));
    for (int i = 0; i < 3; i++) clients[i].delta = 0.0f;
    int64_t end = now_ms() + 10000;
    while (fed_coord_get_state(coord) != FED_COORD_DONE && now_ms() < end)
        if (step() != FED_OK) break;
    CHECK_INT(fed_coord_get_state(coord), FED_COORD_DONE);
    CHECK_INT(fed_coord_rounds_done(coord), 3);
    CHECK_NEAR(fed_coord_last_round(coord).epsilon, e3, 1e-12);
    fed_coord_destroy(&coord);
    stop_clients();

out:
    fed_free(prev);
done:
    fed_model_destroy(&m0);
}

/* A checkpoint written without DP cannot be continued with it. */
TEST(dp_refuses_a_checkpoint_without_dp) {
    fed_model *m0 = make_model();
    char dir2[256];
    snprintf(dir2, sizeof dir2, "%s/plainckpt", tmpdir);
    fed_coord_config cfg = dp_config(m0, dir2);
    cfg.dp.clip = cfg.dp.noise = cfg.dp.target_epsilon = 0;
    cfg.rounds = 1;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    start_clients(3, fed_coord_endpoint(coord));
    CHECK(until_round(1));
    fed_coord_destroy(&coord);
    stop_clients();
    cfg.dp.clip = 1.0;
    cfg.rounds = 2;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "without dp-clip");
done:
    fed_model_destroy(&m0);
}

/* A DP checkpoint whose accountant state is malformed is refused, naming it. */
TEST(dp_refuses_a_malformed_accountant) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = dp_config(m0, NULL);
    char dir3[256];
    snprintf(dir3, sizeof dir3, "%s/badrdp", tmpdir);
    static const char *const bad_rdp[] = {"1,2,x", "1,2", "", "-1"};
    for (int b = 0; b < 4; b++) {
        char sub[300];
        snprintf(sub, sizeof sub, "%s-%d", dir3, b);
        fed_strategy *st = NULL;
        fed_meta *extra = NULL;
        size_t ntr = fed_model_num_params(m0) - 16; /* 0.bias frozen */
        CHECK_OK(fed_strategy_new(&st, &cfg.strategy, ntr));
        CHECK_OK(fed_meta_new(&extra));
        CHECK_OK(fed_meta_set(extra, "fedtune.dp_steps", "1"));
        CHECK_OK(fed_meta_set(extra, "fedtune.dp_rdp", bad_rdp[b]));
        fed_model *fm = NULL;
        CHECK_OK(fed_model_clone(&fm, m0));
        if (fm) fed_model_set_trainable_glob(fm, "0.bias", false);
        if (st && extra && fm) CHECK_OK(fed_ckpt_write(sub, 1, 2, fm, st, 42, 3, extra));
        cfg.ckpt.dir = sub;
        cfg.dp.clip = 1.0;
        CHECK(fed_coord_new(&coord, &cfg) != FED_OK);
        CHECK(coord == NULL);
        CHECK_CONTAINS(fed_errmsg(), "dp_rdp");
        fed_model_destroy(&fm);
        fed_meta_destroy(&extra);
        fed_strategy_destroy(&st);
    }
    fed_model_destroy(&m0);
}

/* Bad DP settings name the field. */
TEST(dp_bad_settings_named) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = dp_config(m0, NULL);
    cfg.dp.clip = -1;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "dp-clip");
    cfg.dp.clip = 0;
    cfg.dp.noise = 1;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "dp-noise needs dp-clip");
    cfg.dp.clip = 1;
    cfg.dp.delta = 1;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "dp-delta");
    cfg.dp.delta = 1e-5;
    cfg.dp.noise = 0;
    cfg.dp.target_epsilon = 1;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "target-epsilon needs");
    fed_model_destroy(&m0);
}

/* compress: an unknown codec, and any codec with secagg (the masked sum must stay exact),
 * are refused at start-up with one line. */
TEST(compress_bad_settings_named) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.compress = "q3";
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "compress: unknown compression codec \"q3\"");
    cfg.compress = "topk:0.01";
    cfg.secagg.on = true;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "compress topk:0.01 with secagg: the masked sum must stay exact, and "
                            "secagg already quantizes each update to 32-bit fixed point; drop "
                            "compress");
    cfg.compress = "none";
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK); /* "none" is no compression */
    fed_coord_destroy(&coord);
    fed_model_destroy(&m0);
}

/* A site whose round fails answers with an Error for that round: the round does not wait
 * for it, not even with ordered uploads where it is first in line (it used to stall there
 * until the deadline, throwing the others' updates away). */
TEST(failed_client_does_not_stall) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 1;
    cfg.min_fit = 2;
    cfg.deadline_ms = 60000;
    cfg.wait_after_min_ms = -1;
    cfg.ordered_uploads = true;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    start_clients(3, fed_coord_endpoint(coord));
    clients[0].mode = FAIL; /* site-1: first in CN order */
    snapshot(prev);
    CHECK(until_round(1));
    bool counted[3] = {false, true, true};
    check_round(prev, fed_coord_model(coord), counted);
    fed_coord_round_stats st = fed_coord_last_round(coord);
    CHECK_SIZE(st.sampled, 3);
    CHECK_SIZE(st.returned, 2);
    CHECK_SIZE(st.failed, 1);
    CHECK_SIZE(st.rejected, 0);
    fed_free(prev);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

TEST(client_vanishes_mid_round) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 1;
    cfg.min_clients = 3;
    cfg.min_fit = 2;
    cfg.deadline_ms = 1500; /* the round waits for the vanished client until then */
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    start_clients(3, fed_coord_endpoint(coord));
    clients[1].mode = VANISH;
    snapshot(prev);
    CHECK(until_round(1));
    bool counted[3] = {true, false, true};
    check_round(prev, fed_coord_model(coord), counted);
    fed_coord_round_stats st = fed_coord_last_round(coord);
    CHECK_SIZE(st.sampled, 3);
    CHECK_SIZE(st.returned, 2);
    fed_free(prev);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

static bool exists(const char *dir, const char *name) {
    char path[512];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &sb) == 0;
}

/* Temporary files that a crash mid-checkpoint left are removed at start-up: only those of
 * the coordinator's own pattern. */
TEST(crash_leftovers_swept) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/sweep", tmpdir);
    mkdir(dir, 0755);
    const char *ours[] = {"round-000003.safetensors.tmp.Ab12Zz",
                          "round-000003.strategy.safetensors.tmp.x9y8z7",
                          "round-1234567.safetensors.tmp.QQQQQQ"};
    const char *theirs[] = {"round-000003.safetensors",         /* a checkpoint */
                            "round-000003.safetensors.tmp.abc", /* not mkstemp's 6 */
                            "round-03.safetensors.tmp.abcdef",  /* too few digits */
                            "notes.safetensors.tmp.abcdef",     /* not ours */
                            "round-000004.safetensors.tmp.abcdef.keep"};
    for (size_t i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, ours[i]);
        FILE *f = fopen(path, "w");
        if (f) fputs("half a checkpoint", f), fclose(f);
    }
    for (size_t i = 0; i < 5; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, theirs[i]);
        FILE *f = fopen(path, "w");
        if (f) fputs("x", f), fclose(f);
    }
    log_clear();
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, dir);
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK); /* the bad round-000003 is skipped */
    fed_coord_destroy(&coord);
    for (size_t i = 0; i < 3; i++) CHECK(!exists(dir, ours[i]));
    for (size_t i = 0; i < 5; i++) CHECK(exists(dir, theirs[i]));
    CHECK_INT(log_count("removed 3 temporary files (51 bytes) of an interrupted checkpoint", NULL),
              1);
    size_t n = 9;
    CHECK_OK(fed_ckpt_sweep(dir, &n));
    CHECK_SIZE(n, 0);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none", dir);
    CHECK_OK(fed_ckpt_sweep(missing, &n));
    CHECK_SIZE(n, 0);
    fed_model_destroy(&m0);
}

/* Updates of several chunks with a distinct value at every coordinate, over a model whose
 * trainable tensors are not one contiguous run: the model must move by exactly the
 * weighted mean at every coordinate (a chunk at a wrong offset, or a trainable range
 * mapped to the wrong place, would show), with several slots receiving at once. */
TEST(multi_chunk_distinct_deltas) {
    /* 300*512 + 512 + 512*64 + 64 = 186 944 floats; 0.bias frozen in the middle: 186 432
     * trainable floats, 745 728 bytes, three 256 KiB chunks. */
    fed_model *m0 = make_model_of("{\"input\":[300],\"layers\":[{\"type\":\"linear\",\"out\":"
                                  "512},{\"type\":\"relu\"},{\"type\":\"linear\",\"out\":64}]}");
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 2;
    cfg.slots = 2;
    cfg.server.net.chunk_size = FED_NET_CHUNK_MIN;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    client_chunk = FED_NET_CHUNK_MIN;
    start_clients(3, fed_coord_endpoint(coord));
    client_chunk = 0;
    for (int i = 0; i < 3; i++) {
        clients[i].distinct = true;
        clients[i].examples = (uint64_t)(7 + 13 * i);
    }
    for (uint64_t r = 1; r <= 2; r++) {
        snapshot(prev);
        CHECK(until_round(r));
        fed_coord_round_stats st = fed_coord_last_round(coord);
        CHECK_SIZE(st.returned, 3);
        CHECK_SIZE(clients[0].ntrain, 186432);
        CHECK(clients[0].ntrain * 4 > 2 * FED_NET_CHUNK_MIN); /* three chunks at least */
        const fed_model *m = fed_coord_model(coord);
        const float *w = fed_model_params_const(m);
        double W = 0;
        for (int k = 0; k < 3; k++) W += (double)clients[k].examples;
        size_t bad = 0, frozen_moved = 0, j = 0;
        double worst = 0;
        for (size_t t = 0; t < fed_model_num_tensors(m); t++) {
            const fed_tensor *tt = fed_model_tensor(m, t);
            for (size_t x = tt->offset; x < tt->offset + tt->numel; x++) {
                if (!tt->trainable) {
                    frozen_moved += w[x] != prev[x];
                    continue;
                }
                double want = prev[x];
                for (int k = 0; k < 3; k++)
                    want += (double)clients[k].examples *
                            (double)(float)((double)clients[k].delta * pattern((size_t)k, j)) / W;
                double diff = fabs((double)w[x] - want);
                if (diff > worst) worst = diff;
                bad += diff > 1e-6;
                j++;
            }
        }
        if (bad) fprintf(stderr, "  %zu coordinates off, worst %.3g\n", bad, worst);
        CHECK_SIZE(bad, 0);
        CHECK_SIZE(frozen_moved, 0);
        CHECK_SIZE(j, 186432);
    }
    fed_free(prev);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

/* An update answers one attempt: one that comes after its attempt failed is refused as
 * over, and leaves the site free to answer the open attempt. */
TEST(updates_match_their_attempt) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 1;
    cfg.deadline_ms = 400; /* attempt 1 ends without site-3 */
    cfg.retry.backoff_ms = 20;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    start_clients(3, fed_coord_endpoint(coord));
    clients[2].mode = LATE_ATTEMPT;
    snapshot(prev);
    log_clear();
    CHECK(until_round(1));
    bool all[4] = {true, true, true, false};
    check_round(prev, fed_coord_model(coord), all);
    fed_coord_round_stats st = fed_coord_last_round(coord);
    CHECK_SIZE(st.attempts, 2);
    CHECK_SIZE(st.returned, 3);
    CHECK_SIZE(st.rejected, 0);
    CHECK_INT(clients[2].errors, 1);
    CHECK_STR(clients[2].last_text, "attempt 1 of round 1 is over (attempt 2 is open)");
    CHECK_INT(log_count("attempt 1: deadline passed with 2 of 3 updates accepted",
                        "1x \"no update before the deadline\" (site-3)"),
              1);
    CHECK_INT(log_count("a second update", NULL), 0);
    fed_free(prev);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

/* A site that cancels its upload says so: it counts as failed at once, and the round
 * does not wait for the rest of that upload until its deadline. */
TEST(cancelled_upload_is_failed) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 1;
    cfg.min_fit = 2;
    cfg.deadline_ms = 600000; /* far beyond until_round's 10 s */
    cfg.wait_after_min_ms = -1;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    start_clients(3, fed_coord_endpoint(coord));
    clients[1].mode = CANCEL;
    snapshot(prev);
    log_clear();
    CHECK(until_round(1));
    bool counted[4] = {true, false, true, false};
    check_round(prev, fed_coord_model(coord), counted);
    fed_coord_round_stats st = fed_coord_last_round(coord);
    CHECK_SIZE(st.returned, 2);
    CHECK_SIZE(st.failed, 1);
    CHECK_INT(log_count("site-2 failed: upload cancelled: stopping", NULL), 1);
    fed_free(prev);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

/* n examples of 6 features, feature j ~ offset + scale x N(j, 1). */
static fed_dataset *site_data(size_t n, double offset, double scale, uint64_t seed) {
    fed_dataset *d = NULL;
    if (fed_data_new(&d, n, 6, 3) != FED_OK) abort();
    fed_rng r;
    fed_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < 6; j++)
            d->x[i * 6 + j] = (float)(offset + scale * ((double)j + (double)fed_rng_normal(&r)));
        d->y[i] = (int32_t)(i % 3);
    }
    return d;
}

/* The statistics round before round 1 of a model without an input transform: every
 * connected client is asked, the transform is the pooled data's (to float precision),
 * goes into the manifest of round 1, the checkpoint, the export and the central
 * evaluation; a resumed coordinator keeps it without asking again. Moments that count
 * other than the Update claims, or that are not limbs, are refused. */
TEST(statistics_round) {
    fed_model *m0 = make_model();
    char dir[256], out[256];
    snprintf(dir, sizeof dir, "%s/stats", tmpdir);
    snprintf(out, sizeof out, "%s/stats.safetensors", tmpdir);
    fed_coord_config cfg = coord_config(m0, dir);
    cfg.input_stats = true;
    cfg.rounds = 1;
    cfg.out = out;
    cfg.retry.backoff_ms = 10;
    cfg.min_clients = 4; /* every attempt samples all four (min_fit 3) */
    fed_dataset *ev = site_data(20, 0, 1, 9);
    cfg.eval_data = ev;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    start_clients(4, fed_coord_endpoint(coord));
    const size_t ns[4] = {30, 5, 17, 40};
    const double off[4] = {0.0, 1000.0, -3.0, 0.5}, scl[4] = {1.0, 50.0, 0.1, 2.0};
    for (int i = 0; i < 4; i++)
        clients[i].data = site_data(ns[i], off[i], scl[i], 11 + (uint64_t)i);
    clients[1].moments_lie = 1; /* attempt 1: refused, the attempt fails (min_fit 3 of 4) */
    clients[2].moments_lie = 2;
    clients[0].examples = clients[1].examples = clients[2].examples = clients[3].examples = 10;
    log_clear();
    int64_t end = now_ms() + 10000;
    while (clients[1].stats_rounds < 1 && now_ms() < end) (void)step();
    /* Let attempt 1 fail, then make the liars honest for attempt 2. */
    while (log_count("statistics round attempt 1:", "retrying") == 0 && now_ms() < end)
        (void)step();
    CHECK_INT(
        log_count("update from site-2 rejected", "moments of 6 examples, the update claims 7"),
        0); /* it claims 5 + 1 = 6 with 5 examples */
    CHECK_INT(
        log_count("update from site-2 rejected", "moments of 5 examples, the update claims 6"), 1);
    CHECK_INT(log_count("update from site-3 rejected", "not a limb in [0, 2^21)"), 1);
    clients[1].moments_lie = clients[2].moments_lie = 0;
    CHECK(until_round(1));
    for (int i = 0; i < 4; i++) {
        CHECK_INT(clients[i].stats_rounds, 2);
        CHECK_INT(clients[i].round_starts, 3); /* two statistics attempts, round 1 */
    }
    /* The pooled data's moments, fitted here the way fed_std_fit does. */
    fed_dataset *all = NULL;
    CHECK_OK(fed_data_new(&all, 92, 6, 3));
    size_t at = 0;
    for (int i = 0; i < 4; i++) {
        memcpy(all->x + at * 6, clients[i].data->x, ns[i] * 6 * sizeof(float));
        at += ns[i];
    }
    fed_standardizer *want = NULL;
    CHECK_OK(fed_std_fit(&want, all));
    fed_meta *meta = NULL;
    fed_model *exported = NULL;
    CHECK_INT(fed_coord_get_state(coord), FED_COORD_DONE);
    CHECK_OK(fed_model_load(&exported, out, &meta));
    const char *json = meta ? fed_meta_get(meta, "fedtune.standardize") : NULL;
    CHECK(json != NULL);
    fed_standardizer *got = NULL;
    if (json) CHECK_OK(fed_std_from_json(&got, json));
    if (got && want) {
        CHECK_SIZE(got->len, 6);
        for (size_t j = 0; j < 6; j++) {
            CHECK_NEAR(got->mean[j], want->mean[j], 1e-6 * fabs((double)want->mean[j]) + 1e-6);
            CHECK_NEAR(got->std[j], want->std[j], 1e-6 * (double)want->std[j]);
        }
    }
    CHECK_INT(log_count("update from site-", "rejected"), 2); /* only attempt 1's liars */
    /* The central evaluation saw the standardised set: loss of the exported model on it. */
    fed_coord_round_stats st = fed_coord_last_round(coord);
    if (got && exported) {
        fed_dataset *evs = NULL;
        size_t idx[20];
        for (size_t i = 0; i < 20; i++) idx[i] = i;
        CHECK_OK(fed_data_subset(&evs, ev, idx, 20));
        CHECK_OK(fed_std_apply(got, evs));
        fed_loss_config loss = {FED_LOSS_SOFTMAX_CE, 0.0f};
        fed_eval_result r;
        memset(&r, 0, sizeof r);
        CHECK_OK(fed_evaluate(exported, evs, 0, &loss, &r));
        CHECK_NEAR(st.central_loss, r.loss, 1e-9);
        fed_eval_result_free(&r);
        fed_data_destroy(&evs);
    }
    fed_coord_destroy(&coord);
    stop_clients();
    /* Resumed (one more round): the checkpoint's transform, no statistics round. */
    cfg.rounds = 2;
    cfg.out = NULL;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (coord) {
        start_clients(4, fed_coord_endpoint(coord));
        CHECK(until_round(2));
        for (int i = 0; i < 4; i++) CHECK_INT(clients[i].stats_rounds, 0);
        fed_coord_destroy(&coord);
        stop_clients();
    }
    /* DP would release the statistics without noise. */
    cfg.dp.clip = 1.0;
    CHECK_ERR(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "input-stats releases the federation's feature means");
    fed_std_destroy(&got);
    fed_std_destroy(&want);
    fed_meta_destroy(&meta);
    fed_model_destroy(&exported);
    fed_data_destroy(&all);
done:
    fed_data_destroy(&ev);
    fed_model_destroy(&m0);
}

/* A training configuration every site would refuse stops the coordinator at start-up. */
TEST(config_sites_refuse_is_refused) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    struct {
        const char *field;
        float lr, momentum, wd, clip;
        uint32_t epochs, batch;
        const char *opt;
        const char *msg;
    } cases[] = {
        {"lr 0", 0.0f, 0, 0, 0, 1, 32, "adam", "config.lr 0: must be in (0, 10]"},
        {"lr -1", -1.0f, 0, 0, 0, 1, 32, "adam", "config.lr -1: must be in (0, 10]"},
        {"lr nan", NAN, 0, 0, 0, 1, 32, "adam", "config.lr nan: must be in (0, 10]"},
        {"lr 11", 11.0f, 0, 0, 0, 1, 32, "adam", "config.lr 11: must be in (0, 10]"},
        {"momentum 1", 0.1f, 1.0f, 0, 0, 1, 32, "sgd", "config.momentum 1: must be in [0, 0.9999]"},
        {"weight decay", 0.1f, 0, -0.5f, 0, 1, 32, "sgd", "config.weight_decay -0.5"},
        {"clip", 0.1f, 0, 0, INFINITY, 1, 32, "sgd", "config.clip_norm inf"},
        {"epochs 0", 0.1f, 0, 0, 0, 0, 32, "sgd", "config.epochs 0: must be in [1, 1000000]"},
        {"batch 0", 0.1f, 0, 0, 0, 1, 0, "sgd", "config.batch 0: must be in [1, 65536]"},
        {"batch big", 0.1f, 0, 0, 0, 1, 65537, "sgd", "config.batch 65537"},
        {"optimizer", 0.1f, 0, 0, 0, 1, 32, "rmsprop", "config.optimizer \"rmsprop\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cfg.train.lr = cases[i].lr;
        cfg.train.momentum = cases[i].momentum;
        cfg.train.weight_decay = cases[i].wd;
        cfg.train.clip_norm = cases[i].clip;
        cfg.train.epochs = cases[i].epochs;
        cfg.train.batch = cases[i].batch;
        cfg.train.optimizer = cases[i].opt;
        CHECK_ERR(fed_coord_new(&coord, &cfg), FED_EINVAL);
        CHECK_CONTAINS(fed_errmsg(), cases[i].msg);
        CHECK_CONTAINS(fed_errmsg(), "every site would refuse it");
        CHECK(coord == NULL);
        fed_coord_destroy(&coord);
        /* ... and a site refuses it with the same words. */
        fed_fit_config f;
        CHECK_ERR(fed_train_spec_fit(&cfg.train, 1, 0, 0, &f), FED_EINVAL);
        CHECK_CONTAINS(fed_errmsg(), cases[i].msg);
    }
    cfg.max_examples_per_site = 0;
    cfg.train = fed_coord_default_config().train;
    CHECK_ERR(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "max-examples-per-site 0");
    cfg.max_examples_per_site = 1000;
    cfg.retry.backoff_ms = 500;
    cfg.retry.backoff_max_ms = 100;
    CHECK_ERR(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "retry backoff");
    fed_model_destroy(&m0);
}

/* Every sampled site fails its round the same way: the attempts back off (doubling) and
 * after max_failed_attempts the federation stops with that reason; the sites are told
 * it is over. Nothing is aggregated. */
TEST(failing_rounds_back_off_and_stop) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 2;
    cfg.retry.backoff_ms = 50;
    cfg.retry.backoff_max_ms = 120;
    cfg.retry.max_failed_attempts = 4;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    uint8_t h0[FED_SHA256_LEN], h1[FED_SHA256_LEN];
    fed_coord_model_sha256(coord, h0);
    start_clients(3, fed_coord_endpoint(coord));
    for (int i = 0; i < 3; i++) clients[i].mode = FAIL;
    log_clear();
    fed_err err = FED_OK;
    int64_t t0 = now_ms(), end = t0 + 20000;
    while (err == FED_OK && now_ms() < end) err = step();
    int64_t took = now_ms() - t0;
    CHECK_ERR(err, FED_ECANCELED);
    CHECK_STR(fed_errmsg(), "round 1 failed 4 attempts in a row for the same reason: "
                            "local training: non-finite value");
    CHECK_INT(fed_coord_get_state(coord), FED_COORD_DONE);
    CHECK_INT(fed_coord_rounds_done(coord), 0);
    fed_coord_model_sha256(coord, h1);
    CHECK_MEM(h1, h0, FED_SHA256_LEN);
    /* One line per failed attempt, with the sites' reason; the waits 50, 100, 120 ms. */
    CHECK_INT(log_count("attempt 1: no update can still come with 0 of 3 updates accepted",
                        "3 of 3 sampled gave no update: 3x \"local training: non-finite "
                        "value\" (site-1, site-2, site-3); retrying in 0.05 s"),
              1);
    CHECK_INT(log_count("attempt 2: ", "retrying in 0.1 s"), 1);
    CHECK_INT(log_count("attempt 3: ", "retrying in 0.12 s"), 1);
    CHECK_INT(log_count("retrying in", NULL), 3);
    CHECK(took >= 50 + 100 + 120);
    for (int k = 0; k < 20; k++) (void)step(); /* the Byes arrive */
    for (int i = 0; i < 3; i++) {
        CHECK_INT(clients[i].byes, 1);
        CHECK(clients[i].bye_finished);
        CHECK_CONTAINS(clients[i].bye_reason, "federation stopped: round 1 failed 4 attempts");
        CHECK_INT(clients[i].round_starts, 4);
    }
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

/* A site's example count is its FedAvg weight: it may not exceed what its Hello said, nor
 * max_examples_per_site; such an update is refused and the others make the round. */
TEST(example_counts_bounded) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 2;
    cfg.min_clients = 4;
    cfg.min_fit = 3;
    cfg.wait_after_min_ms = -1;
    cfg.max_examples_per_site = 500; /* below the scripted Hello's 1000 */
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    start_clients(4, fed_coord_endpoint(coord));
    clients[3].delta = 5.0f;
    clients[3].examples = UINT64_MAX; /* 2^64 - 1: would be the whole mean */
    bool good[4] = {true, true, true, false};
    log_clear();
    snapshot(prev);
    CHECK(until_round(1));
    check_round(prev, fed_coord_model(coord), good);
    fed_coord_round_stats st = fed_coord_last_round(coord);
    CHECK_SIZE(st.returned, 3);
    CHECK_SIZE(st.rejected, 1);
    CHECK_NEAR(st.examples, 60, 0);
    CHECK_INT(clients[3].last_code, 5); /* ERR_RANGE */
    CHECK_CONTAINS(clients[3].last_text, "examples 18446744073709551615: more than the 1000 "
                                         "training examples its Hello announced");
    CHECK_INT(log_count("update from site-4 rejected", "more than the 1000"), 1);
    clients[3].examples = 700; /* within its Hello, above the coordinator's bound */
    snapshot(prev);
    CHECK(until_round(2));
    check_round(prev, fed_coord_model(coord), good);
    CHECK_CONTAINS(clients[3].last_text, "examples 700: above max-examples-per-site 500");
    fed_free(prev);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

/* A client that the coordinator believes holds the model but does not (it says "no model
 * version N") gets the weights again in the same attempt. Round 1, attempt 1: client 2
 * takes the model and stays silent; the short deadline makes the coordinator retry, and
 * attempt 2 sends no weights (everyone holds version 1); client 2 asks for them. */
TEST(model_resent_on_request) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.rounds = 1;
    cfg.deadline_ms = 300;
    log_clear();
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    size_t np = fed_model_num_params(m0);
    float *prev = fed_mallocarray(np, sizeof(float));
    start_clients(3, fed_coord_endpoint(coord));
    clients[1].mode = SILENT;
    snapshot(prev);
    CHECK(until_round(1));
    bool all[3] = {true, true, true};
    check_round(prev, fed_coord_model(coord), all);
    fed_coord_round_stats st = fed_coord_last_round(coord);
    CHECK_SIZE(st.attempts, 2);
    CHECK_SIZE(st.returned, 3);
    CHECK_INT(clients[0].transfers, 1); /* attempt 2 sent them no weights */
    CHECK_INT(clients[1].transfers, 2); /* but resent them to client 2 */
    CHECK_INT(clients[1].round_starts, 3);
    CHECK_INT(log_count("reports error", NULL), 0); /* understood, not just logged */
    fed_free(prev);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

/* Server optimizers resume with their state: 2 rounds, a new coordinator object on the
 * same checkpoint folder, a third round. Every client's delta is one constant, so every
 * trainable value follows the same scalar recurrence: a 1-value fed_strategy stepped
 * with the example-weighted mean gives the expected displacement after each round. The
 * same recurrence with the state lost at the restart lands measurably elsewhere, so the
 * check can fail. */
static void check_strategy_resume(fed_strategy_kind kind, const char *name) {
    fed_model *m0 = make_model();
    char dir[256];
    snprintf(dir, sizeof dir, "%s/ckpt-%s", tmpdir, name);
    fed_coord_config cfg = coord_config(m0, dir);
    cfg.strategy = fed_strategy_defaults(kind);
    cfg.rounds = 2;
    const float mean = (float)((10 * 0.01 + 20 * 0.02 + 30 * 0.03) / 60.0);
    /* Expected displacements: kept state (x) and state lost after round 2 (lost). */
    fed_strategy *ref = NULL, *fresh = NULL;
    float x = 0, lost = 0;
    CHECK_INT(fed_strategy_new(&ref, &cfg.strategy, 1), FED_OK);
    CHECK_INT(fed_strategy_new(&fresh, &cfg.strategy, 1), FED_OK);
    if (!ref || !fresh) goto done;
    fed_strategy_step(ref, &x, &mean);
    fed_strategy_step(ref, &x, &mean);
    lost = x;
    fed_strategy_step(fresh, &lost, &mean);
    fed_strategy_step(ref, &x, &mean);
    CHECK(fabsf(x - lost) > 1e-4f);

    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    start_clients(3, fed_coord_endpoint(coord));
    CHECK(until_round(2));
    fed_coord_destroy(&coord);
    stop_clients();
    cfg.rounds = 3;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    CHECK_INT(fed_coord_rounds_done(coord), 2);
    start_clients(3, fed_coord_endpoint(coord));
    CHECK(until_round(3));
    const fed_model *m = fed_coord_model(coord);
    const float *w = fed_model_params_const(m), *w0 = fed_model_params_const(m0);
    size_t bad = 0, frozen_moved = 0;
    for (size_t t = 0; t < fed_model_num_tensors(m); t++) {
        const fed_tensor *tt = fed_model_tensor(m, t);
        for (size_t j = tt->offset; j < tt->offset + tt->numel; j++) {
            if (!tt->trainable)
                frozen_moved += w[j] != w0[j];
            else
                bad += fabs((double)w[j] - ((double)w0[j] + (double)x)) > 1e-6;
        }
    }
    if (bad)
        fprintf(stderr, "  %s: %zu values off the expected displacement %g\n", name, bad,
                (double)x);
    CHECK_SIZE(bad, 0);
    CHECK_SIZE(frozen_moved, 0);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_strategy_destroy(&ref);
    fed_strategy_destroy(&fresh);
    fed_model_destroy(&m0);
}

TEST(server_optimizers_resume_with_state) {
    check_strategy_resume(FED_STRATEGY_FEDAVGM, "fedavgm");
    check_strategy_resume(FED_STRATEGY_FEDADAM, "fedadam");
    check_strategy_resume(FED_STRATEGY_FEDYOGI, "fedyogi");
}

/* fed_coord_new_taking: the coordinator adopts the caller's model instead of copying it (one copy
 * fewer of a big model at start-up) and frees it on every path, errors included (the
 * sanitizer build's leak check sees a leak or a double free). */
TEST(take_model) {
    fed_model *m0 = make_model();
    fed_model *m1 = NULL;
    CHECK_INT(fed_model_clone(&m1, m0), FED_OK);
    fed_coord_config cfg = coord_config(NULL, NULL);
    cfg.rounds = 0; /* invalid: m1 is freed by the failed call */
    CHECK_INT(fed_coord_new_taking(&coord, &cfg, &m1), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "rounds 0");
    CHECK(coord == NULL);
    CHECK(m1 == NULL);
    CHECK_INT(fed_coord_new_taking(&coord, &cfg, &m1), FED_EINVAL); /* NULL: nothing to take */
    CHECK_CONTAINS(fed_errmsg(), "no initial model");
    CHECK_INT(fed_model_clone(&m1, m0), FED_OK);
    fed_model *keep = m1;
    cfg = coord_config(NULL, NULL);
    CHECK_INT(fed_coord_new_taking(&coord, &cfg, &m1), FED_OK);
    CHECK(m1 == NULL);
    if (coord) {
        CHECK(fed_coord_model(coord) == keep); /* adopted, not copied */
        CHECK_MEM(fed_model_params_const(fed_coord_model(coord)), fed_model_params_const(m0),
                  fed_model_num_params(m0) * sizeof(float));
        fed_coord_destroy(&coord);
    }
    fed_model_destroy(&m0);
}

/* The central evaluation's batch keeps a thread's activations within 16 MB: the FedAvg
 * CNN's 88 842 floats an example allow 47 of --eval-batch 256; a smaller batch and a
 * small model keep theirs. */
TEST(eval_batch_bounded_by_activations) {
    fed_model *cnn = make_model_of("fedavg-cnn"), *mlp = make_model();
    char dir[256];
    snprintf(dir, sizeof dir, "%s/evalbatch", tmpdir);
    const struct {
        const fed_model *m;
        size_t asked, want;
    } cases[] = {{cnn, 256, 47}, {cnn, 16, 16}, {cnn, 0, 47}, {mlp, 256, 256}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fed_coord_config cfg = coord_config(cases[i].m, dir);
        cfg.eval_batch = cases[i].asked;
        fed_coord *c = NULL;
        CHECK_INT(fed_coord_new(&c, &cfg), FED_OK);
        if (c) CHECK_SIZE(fed__coord_eval_batch(c), cases[i].want);
        fed_coord_destroy(&c);
    }
    fed_model_destroy(&cnn);
    fed_model_destroy(&mlp);
}

/* Steps the world until the driven round is no longer running (or 10 s passed). */
static fed_coord_drive_state until_drive(void) {
    int64_t end = now_ms() + 10000;
    fed_coord_drive_state st;
    while ((st = fed_coord_drive_result(coord, NULL, NULL, NULL, NULL)) == FED_DRIVE_RUNNING) {
        if (now_ms() > end || step() != FED_OK) break;
    }
    return st;
}

/* Driven rounds (a relay's): no round without a drive; a drive's round has the asked
 * number, weights and spec, and closes by keeping the example-weighted mean of the deltas
 * and the total examples, the model untouched (no server step); a second drive runs the
 * next round from new weights (a new version). */
TEST(driven_rounds_keep_the_mean) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.driven = true;
    cfg.ordered_uploads = true;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    start_clients(3, fed_coord_endpoint(coord));
    for (int i = 0; i < 50; i++) CHECK_INT(step(), FED_OK);
    CHECK_INT(fed_coord_drive_result(coord, NULL, NULL, NULL, NULL), FED_DRIVE_IDLE);
    CHECK_INT(clients[0].round_starts, 0); /* nobody asked: no round */
    size_t np = fed_model_num_params(m0);
    float *w = fed_mallocarray(np, sizeof(float));
    for (size_t i = 0; i < np; i++) w[i] = 0.001f * (float)(i % 97);
    fed_msg_train_config spec = cfg.train;
    spec.epochs = 3;
    spec.optimizer = "sgd";
    fed_coord_drive d = {.round = 7, .params = w, .train = &spec, .deadline_ms = 10000};
    CHECK_INT(fed_coord_drive_round(coord, &d), FED_OK);
    CHECK_INT(fed_coord_drive_round(coord, &d), FED_EINVAL); /* one at a time */
    CHECK_CONTAINS(fed_errmsg(), "drive: round 7 is still running");
    CHECK_INT(until_drive(), FED_DRIVE_DONE);
    const float *mean = NULL;
    size_t n = 0;
    double weight = 0;
    CHECK_INT(fed_coord_drive_result(coord, &mean, &n, &weight, NULL), FED_DRIVE_DONE);
    CHECK_SIZE(n, (size_t)clients[0].ntrain);
    CHECK(weight == 60.0); /* 10 + 20 + 30 examples */
    double want = (0.01 * 10 + 0.02 * 20 + 0.03 * 30) / 60.0;
    size_t bad = 0;
    for (size_t i = 0; mean && i < n; i++) bad += fabs((double)mean[i] - want) > 1e-7;
    CHECK_SIZE(bad, 0);
    CHECK(memcmp(fed_model_params_const(fed_coord_model(coord)), w, np * sizeof(float)) == 0);
    CHECK_INT((int)clients[0].round, 7);
    CHECK_INT((int)fed_coord_rounds_done(coord), 7);
    uint64_t v1 = clients[0].version;
    for (size_t i = 0; i < np; i++) w[i] += 0.5f;
    d.round = 8;
    clients[1].delta = 0.05f;
    CHECK_INT(fed_coord_drive_round(coord, &d), FED_OK);
    CHECK_INT(until_drive(), FED_DRIVE_DONE);
    CHECK_INT(fed_coord_drive_result(coord, &mean, &n, &weight, NULL), FED_DRIVE_DONE);
    want = (0.01 * 10 + 0.05 * 20 + 0.03 * 30) / 60.0;
    CHECK(mean && fabs((double)mean[0] - want) < 1e-7);
    CHECK_INT((int)clients[0].round, 8);
    CHECK(clients[0].version > v1);
    fed_free(w);
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

/* A driven round that cannot close fails at once, with its reasons (no retry: the caller
 * answers its own coordinator); one that waits for sites past its deadline fails too. */
TEST(driven_round_fails_with_reasons) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.driven = true;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    if (!coord) goto done;
    fed_msg_train_config spec = cfg.train;
    fed_coord_drive d = {
        .round = 1, .params = fed_model_params_const(m0), .train = &spec, .deadline_ms = 50};
    CHECK_INT(fed_coord_drive_round(coord, &d), FED_OK); /* no site connected */
    const char *why = "";
    int64_t end = now_ms() + 5000;
    while (fed_coord_drive_result(coord, NULL, NULL, NULL, &why) == FED_DRIVE_RUNNING &&
           now_ms() < end)
        CHECK_INT(step(), FED_OK);
    CHECK_INT(fed_coord_drive_result(coord, NULL, NULL, NULL, &why), FED_DRIVE_FAILED);
    CHECK_STR(why, "deadline passed with 0 of min-clients 3 sites connected to the relay");
    start_clients(3, fed_coord_endpoint(coord));
    clients[1].mode = FAIL;
    d.deadline_ms = 10000;
    CHECK_INT(fed_coord_drive_round(coord, &d), FED_OK);
    CHECK_INT(until_drive(), FED_DRIVE_FAILED);
    CHECK_INT(fed_coord_drive_result(coord, NULL, NULL, NULL, &why), FED_DRIVE_FAILED);
    CHECK_CONTAINS(why, "no update can still come with 2 of 3 updates accepted (min_fit 3)");
    CHECK_CONTAINS(why, "1x \"local training: non-finite value\" (site-2)");
    spec.lr = 0; /* what every site would refuse */
    d.train = &spec;
    CHECK_INT(fed_coord_drive_round(coord, &d), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "training spec");
    fed_coord_destroy(&coord);
    stop_clients();
done:
    fed_model_destroy(&m0);
}

/* What a driven coordinator cannot preserve is refused at start-up, one line each; a
 * coordinator that is not driven takes no drive. */
TEST(driven_refusals) {
    fed_model *m0 = make_model();
    fed_coord_config cfg = coord_config(m0, NULL);
    cfg.driven = true;
    cfg.strategy = fed_strategy_defaults(FED_STRATEGY_FEDADAM);
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_STR(fed_errmsg(),
              "driven rounds: not with a server strategy (only the top coordinator steps the "
              "model)");
    cfg.strategy = fed_strategy_defaults(FED_STRATEGY_FEDAVG);
    cfg.robust.rule = FED_ROBUST_MEDIAN;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "driven rounds: not with a robust rule (the relay's aggregate must "
                            "be the weighted mean)");
    cfg.robust.rule = FED_ROBUST_MEAN;
    cfg.input_stats = true;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "driven rounds: not with input statistics");
    cfg.input_stats = false;
    cfg.ckpt.dir = tmpdir;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "driven rounds: not with checkpoints");
    cfg.ckpt.dir = NULL;
    cfg.compress_down = "q8";
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "driven rounds: not with a downlink codec");
    cfg.compress_down = NULL;
    cfg.driven = false;
    CHECK_INT(fed_coord_new(&coord, &cfg), FED_OK);
    fed_msg_train_config spec = cfg.train;
    fed_coord_drive d = {
        .round = 1, .params = fed_model_params_const(m0), .train = &spec, .deadline_ms = 100};
    if (coord) CHECK_INT(fed_coord_drive_round(coord, &d), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "drive: the coordinator is not driven");
    fed_coord_destroy(&coord);
    fed_model_destroy(&m0);
}

int main(void) {
    fed_log_set_handler(log_handler, NULL, FED_LOG_DEBUG);
    if (certs_make() != 0) {
        fprintf(stderr, "cannot make certificates\n");
        return 1;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fedcoord-test-XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    zctx = fed_net_context_new();
    if (!zctx) return 1;
    RUN(eval_batch_bounded_by_activations);
    RUN(fedavg_rounds); /* these three in this order: */
    RUN(fedavg_resume_past_the_end_lingers);
    RUN(fedavg_corrupt_checkpoint_falls_back);
    RUN(bad_updates_rejected);
    RUN(status_text_escaping);
    RUN(compressed_updates);
    RUN(compress_bad_settings_named);
    RUN(round_waits_for_sample);
    RUN(dp_clipping_uniform_weights);
    RUN(dp_noise_accountant_budget);
    RUN(dp_refuses_a_checkpoint_without_dp);
    RUN(dp_refuses_a_malformed_accountant);
    RUN(dp_bad_settings_named);
    RUN(dp_adaptive_clipping);
    RUN(secagg_bad_participants);
    RUN(failed_client_does_not_stall);
    RUN(config_sites_refuse_is_refused);
    RUN(statistics_round);
    RUN(updates_match_their_attempt);
    RUN(multi_chunk_distinct_deltas);
    RUN(cancelled_upload_is_failed);
    RUN(crash_leftovers_swept);
    RUN(failing_rounds_back_off_and_stop);
    RUN(example_counts_bounded);
    RUN(client_vanishes_mid_round);
    RUN(model_resent_on_request);
    RUN(server_optimizers_resume_with_state);
    RUN(take_model);
    RUN(driven_refusals);
    RUN(driven_rounds_keep_the_mean);
    RUN(driven_round_fails_with_reasons);
    fed_net_context_destroy(&zctx);
    certs_remove();
    if (sh("rm -rf '%s'", tmpdir) != 0) fprintf(stderr, "left %s\n", tmpdir);
    return test_report();
}
