/* Tests of the fed_msg codec (proto/msg.h): every message type survives a round trip
 * field by field; a Heartbeat and a Credit encode to hand-computed protobuf bytes; every
 * malformed, truncated, absurd or over-limit envelope is FED_EPROTO with a detail naming
 * the field; encoding refuses what decoding would; decode and encode survive
 * fail-the-Nth-allocation without leaks; a decoded or copied message owns its strings
 * and arrays until fed_msg_free, a built one only lends them. Malformed envelopes are
 * written with a tiny protobuf writer below, since fed_msg_encode refuses to produce
 * them. */
#include "core/alloc_internal.h"
#include "proto/msg.h"
#include "tests/test.h"

#include <stdint.h>
#include <stdlib.h>

/* ---- a minimal protobuf writer ------------------------------------------------------ */

typedef struct pbw {
    uint8_t *b;
    size_t n, cap;
} pbw;

static void w_raw(pbw *w, const void *p, size_t n) {
    if (w->n + n > w->cap) {
        size_t cap = w->cap ? w->cap : 64;
        while (cap < w->n + n) cap *= 2;
        uint8_t *b = realloc(w->b, cap);
        if (!b) abort();
        w->b = b;
        w->cap = cap;
    }
    if (n) memcpy(w->b + w->n, p, n);
    w->n += n;
}

static void w_varint(pbw *w, uint64_t v) {
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) c |= 0x80;
        w_raw(w, &c, 1);
    } while (v);
}

static void w_tag(pbw *w, unsigned field, unsigned wire_type) {
    w_varint(w, (uint64_t)field << 3 | wire_type);
}

static void w_uint(pbw *w, unsigned field, uint64_t v) {
    w_tag(w, field, 0);
    w_varint(w, v);
}

static void w_bytes(pbw *w, unsigned field, const void *p, size_t n) {
    w_tag(w, field, 2);
    w_varint(w, n);
    w_raw(w, p, n);
}

static void w_str(pbw *w, unsigned field, const char *s) {
    w_bytes(w, field, s, strlen(s));
}

static void w_float(pbw *w, unsigned field, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    w_tag(w, field, 5);
    w_raw(w, b, 4);
}

static void w_double(pbw *w, unsigned field, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(u >> (8 * i));
    w_tag(w, field, 1);
    w_raw(w, b, 8);
}

/* Appends sub as a length-delimited field and frees it. */
static void w_sub(pbw *w, unsigned field, pbw *sub) {
    w_bytes(w, field, sub->b, sub->n);
    free(sub->b);
    memset(sub, 0, sizeof *sub);
}

/* Envelope{version, seq, <body_field>: body}; frees body. */
static pbw w_envelope(uint32_t version, uint64_t seq, unsigned body_field, pbw *body) {
    pbw e = {0};
    if (version) w_uint(&e, 1, version);
    w_uint(&e, 2, seq);
    w_sub(&e, body_field, body);
    return e;
}

enum { F_HELLO = 10, F_WELCOME, F_ROUND_START, F_CHUNK, F_UPDATE, F_CREDIT, F_ERROR, F_HB, F_BYE };

/* ---- sample messages ----------------------------------------------------------------- */

/* The third is 14 bytes of UTF-8 ("\u00fcnic\u00f6de \u2713!"), in octal escapes. */
static const char *caps[] = {"delta-f32", "eval", "\303\274nic\303\266de \342\234\223!"};

static fed_msg sample_hello(void) {
    fed_msg m = {.seq = 1001, .type = FED_MSG_HELLO};
    m.u.hello.software = "fedtune 0.1.0";
    m.u.hello.capabilities = caps;
    m.u.hello.num_capabilities = 3;
    m.u.hello.train_examples = 12345;
    m.u.hello.eval_examples = 678;
    for (int i = 0; i < FED_SESSION_ID_LEN; i++) m.u.hello.session_id[i] = (uint8_t)(i + 1);
    return m;
}

static fed_msg sample_welcome(void) {
    fed_msg m = {.seq = 1002, .type = FED_MSG_WELCOME};
    m.u.welcome.client_id = "site-07";
    for (int i = 0; i < FED_SESSION_ID_LEN; i++) m.u.welcome.session_id[i] = (uint8_t)(0xa0 + i);
    m.u.welcome.max_chunk = 1u << 20;
    m.u.welcome.credits = 8;
    m.u.welcome.coordinator = "fedtune-coordinator 0.1.0";
    return m;
}

static fed_msg_tensor sample_tensors[4];

static fed_msg sample_round_start(void) {
    fed_msg_tensor t[4] = {
        {.name = "0.weight",
         .ndim = 2,
         .shape = {16, 8},
         .dtype = FED_DTYPE_F32,
         .trainable = true},
        {.name = "0.bias", .ndim = 1, .shape = {16}, .dtype = FED_DTYPE_F16},
        {.name = "1.scale", .ndim = 0, .dtype = FED_DTYPE_BF16, .trainable = true},
        {.name = "2.w", .ndim = 8, .shape = {2, 3, 4, 5, 6, 7, 8, 9}, .dtype = FED_DTYPE_F32},
    };
    memcpy(sample_tensors, t, sizeof t);
    fed_msg m = {.seq = 1003, .type = FED_MSG_ROUND_START};
    fed_msg_round_start *r = &m.u.round_start;
    r->round = 3;
    r->model_version = 7;
    r->config = (fed_msg_train_config){.epochs = 2,
                                       .batch = 32,
                                       .optimizer = "adamw",
                                       .lr = 1e-3f,
                                       .momentum = 0.9f,
                                       .weight_decay = 0.01f,
                                       .clip_norm = 1.5f,
                                       .seed = 42,
                                       .max_steps = 1000};
    r->manifest.tensors = sample_tensors;
    r->manifest.num_tensors = 4;
    r->manifest.total_bytes = 16 * 8 * 4 + 16 * 2 + 2 + 362880 * 4;
    for (int i = 0; i < FED_SHA256_LEN; i++) r->manifest.sha256[i] = (uint8_t)(0xff - i);
    r->manifest.arch = "{\"input\":[8],\"layers\":[{\"dense\":16}]}";
    r->manifest.input_transform = "{\"dim\":8,\"mean\":[0],\"std\":[1]}";
    r->transfer_id = 99;
    r->deadline_ms = 60000;
    r->attempt = 4;
    r->stats = true;
    return m;
}

static fed_msg sample_chunk(void) {
    fed_msg m = {.seq = 1004, .type = FED_MSG_CHUNK};
    m.u.chunk.transfer_id = 99;
    m.u.chunk.offset = (uint64_t)1 << 40;
    m.u.chunk.length = 1u << 20;
    return m;
}

static fed_msg_metric sample_metrics[2] = {{"loss", 0.25}, {"accuracy", 0.9375}};

static fed_msg sample_update(void) {
    fed_msg m = {.seq = 1005, .type = FED_MSG_UPDATE};
    fed_msg_update *u = &m.u.update;
    u->round = 3;
    u->model_version = 7;
    u->examples = 1000;
    u->metrics = sample_metrics;
    u->num_metrics = 2;
    u->encoding = FED_ENCODING_DELTA_F32; /* the only value so far */
    u->transfer_id = 100;
    u->total_bytes = 4096;
    for (int i = 0; i < FED_SHA256_LEN; i++) u->sha256[i] = (uint8_t)(3 * i + 1);
    u->attempt = 4;
    return m;
}

static fed_msg sample_credit(void) {
    fed_msg m = {.seq = 1006, .type = FED_MSG_CREDIT};
    m.u.credit.transfer_id = 5;
    m.u.credit.chunks = 8;
    m.u.credit.offset = (uint64_t)3 << 20;
    return m;
}

static fed_msg sample_error(void) {
    fed_msg m = {.seq = 1007, .type = FED_MSG_ERROR};
    m.u.error.code = 100; /* ERR_VERSION */
    m.u.error.text = "version 2, this build speaks 1";
    return m;
}

static fed_msg sample_heartbeat(void) {
    fed_msg m = {.seq = 1008, .type = FED_MSG_HEARTBEAT};
    m.u.heartbeat_ms = 1234567890123ull;
    return m;
}

static fed_msg sample_bye(void) {
    fed_msg m = {.seq = 1009, .type = FED_MSG_BYE};
    m.u.bye.reason = "shutting down";
    m.u.bye.finished = true;
    return m;
}

/* Encodes m and decodes it into *out with the default limits. */
static bool round_trip(const fed_msg *m, fed_msg *out) {
    uint8_t *buf = NULL;
    size_t len = 0;
    fed_err err = fed_msg_encode(m, &buf, &len);
    CHECK_OK(err);
    if (err != FED_OK) return false;
    CHECK_SIZE(len, fed_msg_packed_size(m));
    err = fed_msg_decode(out, buf, len, NULL);
    CHECK_OK(err);
    fed_free(buf);
    if (err != FED_OK) return false;
    CHECK_INT(out->version, FED_PROTOCOL_VERSION);
    CHECK_SIZE(out->seq, m->seq);
    CHECK_INT(out->type, m->type);
    return true;
}

/* ---- names, limits, sizes ------------------------------------------------------------ */

TEST(names_and_limits) {
    CHECK_STR(fed_msg_type_name(FED_MSG_HELLO), "hello");
    CHECK_STR(fed_msg_type_name(FED_MSG_ROUND_START), "round_start");
    CHECK_STR(fed_msg_type_name(FED_MSG_BYE), "bye");
    CHECK_STR(fed_msg_type_name(FED_MSG_NONE), "none");
    CHECK_STR(fed_msg_type_name((fed_msg_type)42), "none");
    fed_msg_limits l = fed_msg_default_limits();
    CHECK_SIZE(l.max_envelope, 16u << 20);
    CHECK_SIZE(l.max_string, 1u << 20);
    CHECK_SIZE(l.max_tensors, 65536);
    CHECK_SIZE(l.max_list, 64);
    CHECK_SIZE(l.max_chunk, 4u << 20);
}

TEST(tensor_bytes) {
    uint64_t b = 0;
    fed_msg_tensor t = {.ndim = 2, .shape = {16, 8}, .dtype = FED_DTYPE_F32};
    CHECK(fed_msg_tensor_bytes(&t, &b));
    CHECK_SIZE(b, 512);
    t.dtype = FED_DTYPE_BF16;
    CHECK(fed_msg_tensor_bytes(&t, &b));
    CHECK_SIZE(b, 256);
    t.ndim = 0; /* a scalar */
    CHECK(fed_msg_tensor_bytes(&t, &b));
    CHECK_SIZE(b, 2);
    fed_msg_tensor big = {.ndim = 2, .shape = {1ull << 32, 1ull << 31}, .dtype = FED_DTYPE_F32};
    CHECK(!fed_msg_tensor_bytes(&big, &b));
    big.shape[1] = 1ull << 29; /* 2^61 elements * 4 bytes = 2^63: fits */
    CHECK(fed_msg_tensor_bytes(&big, &b));
    CHECK_SIZE(b, 1ull << 63);
    fed_msg_tensor bad = {.ndim = 9, .dtype = FED_DTYPE_F32};
    CHECK(!fed_msg_tensor_bytes(&bad, &b));
    bad.ndim = -1;
    CHECK(!fed_msg_tensor_bytes(&bad, &b));
    bad.ndim = 1;
    bad.shape[0] = 4;
    bad.dtype = (fed_dtype)7;
    CHECK(!fed_msg_tensor_bytes(&bad, &b));
}

/* ---- round trips ----------------------------------------------------------------------- */

TEST(round_trip_hello) {
    fed_msg m = sample_hello(), d;
    if (!round_trip(&m, &d)) return;
    CHECK_STR(d.u.hello.software, "fedtune 0.1.0");
    CHECK_SIZE(d.u.hello.num_capabilities, 3);
    for (size_t i = 0; i < 3 && i < d.u.hello.num_capabilities; i++)
        CHECK_STR(d.u.hello.capabilities[i], caps[i]);
    CHECK_SIZE(d.u.hello.train_examples, 12345);
    CHECK_SIZE(d.u.hello.eval_examples, 678);
    CHECK_MEM(d.u.hello.session_id, m.u.hello.session_id, FED_SESSION_ID_LEN);
    fed_msg_free(&d);
    CHECK_INT(d.type, FED_MSG_NONE);
    fed_msg_free(&d); /* twice is harmless */
    fed_msg_free(NULL);
}

TEST(round_trip_welcome) {
    fed_msg m = sample_welcome(), d;
    if (!round_trip(&m, &d)) return;
    CHECK_STR(d.u.welcome.client_id, "site-07");
    CHECK_MEM(d.u.welcome.session_id, m.u.welcome.session_id, FED_SESSION_ID_LEN);
    CHECK_SIZE(d.u.welcome.max_chunk, 1u << 20);
    CHECK_SIZE(d.u.welcome.credits, 8);
    CHECK_STR(d.u.welcome.coordinator, "fedtune-coordinator 0.1.0");
    fed_msg_free(&d);
}

TEST(round_trip_round_start) {
    fed_msg m = sample_round_start(), d;
    if (!round_trip(&m, &d)) return;
    const fed_msg_round_start *r = &d.u.round_start;
    CHECK_SIZE(r->round, 3);
    CHECK_SIZE(r->model_version, 7);
    CHECK_SIZE(r->transfer_id, 99);
    CHECK_SIZE(r->deadline_ms, 60000);
    CHECK_SIZE(r->attempt, 4);
    CHECK(r->stats);
    CHECK_SIZE(r->config.epochs, 2);
    CHECK_SIZE(r->config.batch, 32);
    CHECK_STR(r->config.optimizer, "adamw");
    CHECK_NEAR(r->config.lr, 1e-3f, 0);
    CHECK_NEAR(r->config.momentum, 0.9f, 0);
    CHECK_NEAR(r->config.weight_decay, 0.01f, 0);
    CHECK_NEAR(r->config.clip_norm, 1.5f, 0);
    CHECK_SIZE(r->config.seed, 42);
    CHECK_SIZE(r->config.max_steps, 1000);
    CHECK_SIZE(r->manifest.num_tensors, 4);
    for (size_t i = 0; i < 4 && i < r->manifest.num_tensors; i++) {
        const fed_msg_tensor *a = &r->manifest.tensors[i], *b = &sample_tensors[i];
        CHECK_STR(a->name, b->name);
        CHECK_INT(a->ndim, b->ndim);
        for (int k = 0; k < b->ndim; k++) CHECK_SIZE(a->shape[k], b->shape[k]);
        CHECK_INT(a->dtype, b->dtype);
        CHECK_INT(a->trainable, b->trainable);
    }
    CHECK_SIZE(r->manifest.total_bytes, m.u.round_start.manifest.total_bytes);
    CHECK_MEM(r->manifest.sha256, m.u.round_start.manifest.sha256, FED_SHA256_LEN);
    CHECK_STR(r->manifest.arch, m.u.round_start.manifest.arch);
    CHECK_STR(r->manifest.input_transform, m.u.round_start.manifest.input_transform);
    fed_msg_free(&d);
}

TEST(round_trip_chunk) {
    fed_msg m = sample_chunk(), d;
    if (!round_trip(&m, &d)) return;
    CHECK_SIZE(d.u.chunk.transfer_id, 99);
    CHECK_SIZE(d.u.chunk.offset, (uint64_t)1 << 40);
    CHECK_SIZE(d.u.chunk.length, 1u << 20);
    fed_msg_free(&d);
}

TEST(round_trip_update) {
    fed_msg m = sample_update(), d;
    if (!round_trip(&m, &d)) return;
    const fed_msg_update *u = &d.u.update;
    CHECK_SIZE(u->round, 3);
    CHECK_SIZE(u->model_version, 7);
    CHECK_SIZE(u->examples, 1000);
    CHECK_SIZE(u->num_metrics, 2);
    if (u->num_metrics == 2) {
        CHECK_STR(u->metrics[0].name, "loss");
        CHECK_NEAR(u->metrics[0].value, 0.25, 0);
        CHECK_STR(u->metrics[1].name, "accuracy");
        CHECK_NEAR(u->metrics[1].value, 0.9375, 0);
    }
    CHECK_INT(u->encoding, FED_ENCODING_DELTA_F32);
    CHECK_SIZE(u->transfer_id, 100);
    CHECK_SIZE(u->total_bytes, 4096);
    CHECK_SIZE(u->attempt, 4);
    CHECK_MEM(u->sha256, m.u.update.sha256, FED_SHA256_LEN);
    fed_msg_free(&d);
}

TEST(round_trip_small_bodies) {
    fed_msg m = sample_credit(), d;
    if (round_trip(&m, &d)) {
        CHECK_SIZE(d.u.credit.transfer_id, 5);
        CHECK_SIZE(d.u.credit.chunks, 8);
        CHECK_SIZE(d.u.credit.offset, (uint64_t)3 << 20);
        fed_msg_free(&d);
    }
    m = sample_error();
    if (round_trip(&m, &d)) {
        CHECK_SIZE(d.u.error.code, 100);
        CHECK_STR(d.u.error.text, "version 2, this build speaks 1");
        fed_msg_free(&d);
    }
    m = sample_heartbeat();
    if (round_trip(&m, &d)) {
        CHECK_SIZE(d.u.heartbeat_ms, 1234567890123ull);
        fed_msg_free(&d);
    }
    m = sample_bye();
    if (round_trip(&m, &d)) {
        CHECK_STR(d.u.bye.reason, "shutting down");
        CHECK(d.u.bye.finished);
        fed_msg_free(&d);
    }
}

/* NULL strings encode as ""; decoded strings are never NULL; version is always 1. */
TEST(round_trip_defaults) {
    fed_msg m = {.version = 77, .type = FED_MSG_WELCOME};
    memset(m.u.welcome.session_id, 0x5a, FED_SESSION_ID_LEN);
    fed_msg d;
    if (!round_trip(&m, &d)) return;
    CHECK_STR(d.u.welcome.client_id, "");
    CHECK_STR(d.u.welcome.coordinator, "");
    CHECK_SIZE(d.seq, 0);
    fed_msg_free(&d);

    fed_msg b = {.type = FED_MSG_BYE};
    if (!round_trip(&b, &d)) return;
    CHECK_STR(d.u.bye.reason, "");
    CHECK(!d.u.bye.finished);
    fed_msg_free(&d);
}

/* ---- exact bytes --------------------------------------------------------------------- */

TEST(exact_bytes) {
    /* Envelope{version:1 (08 01), seq:5 (10 05), heartbeat (field 17, LEN: 8a 01, 3 bytes)
     * {time_ms:300 (08, varint 300 = ac 02)}} */
    static const uint8_t hb[] = {0x08, 0x01, 0x10, 0x05, 0x8a, 0x01, 0x03, 0x08, 0xac, 0x02};
    fed_msg m = {.seq = 5, .type = FED_MSG_HEARTBEAT, .u.heartbeat_ms = 300};
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_OK(fed_msg_encode(&m, &buf, &len));
    CHECK_SIZE(len, sizeof hb);
    if (buf && len == sizeof hb) CHECK_MEM(buf, hb, sizeof hb);
    fed_free(buf);

    /* Envelope{version:1, seq:7, credit (field 15, LEN: 7a, 8 bytes){transfer_id:42 (08 2a),
     * chunks:8 (10 08), offset:1048576 (18, varint 2^20 = 80 80 40)}} */
    static const uint8_t cr[] = {0x08, 0x01, 0x10, 0x07, 0x7a, 0x08, 0x08,
                                 0x2a, 0x10, 0x08, 0x18, 0x80, 0x80, 0x40};
    fed_msg c = {.seq = 7, .type = FED_MSG_CREDIT};
    c.u.credit.transfer_id = 42;
    c.u.credit.chunks = 8;
    c.u.credit.offset = 1048576;
    CHECK_SIZE(fed_msg_packed_size(&c), sizeof cr);
    uint8_t out[sizeof cr + 4];
    fed_err err = FED_EINTERNAL;
    CHECK_SIZE(fed_msg_pack(&c, out, &err), sizeof cr);
    CHECK_OK(err);
    CHECK_MEM(out, cr, sizeof cr);

    /* And back. */
    fed_msg d;
    CHECK_OK(fed_msg_decode(&d, hb, sizeof hb, NULL));
    CHECK_INT(d.type, FED_MSG_HEARTBEAT);
    CHECK_SIZE(d.seq, 5);
    CHECK_SIZE(d.u.heartbeat_ms, 300);
    fed_msg_free(&d);
    CHECK_OK(fed_msg_decode(&d, cr, sizeof cr, NULL));
    CHECK_INT(d.type, FED_MSG_CREDIT);
    CHECK_SIZE(d.u.credit.transfer_id, 42);
    CHECK_SIZE(d.u.credit.chunks, 8);
    CHECK_SIZE(d.u.credit.offset, 1048576);
    fed_msg_free(&d);

    /* Envelope{version:1, seq:2, error (field 16, LEN: 82 01, 10 bytes){code:3 (08 03),
     * text:"x" (12 01 78), round:9 (18 09), attempt:300 (20 ac 02)}} */
    static const uint8_t er[] = {0x08, 0x01, 0x10, 0x02, 0x82, 0x01, 0x0a, 0x08, 0x03,
                                 0x12, 0x01, 0x78, 0x18, 0x09, 0x20, 0xac, 0x02};
    fed_msg e = {.seq = 2, .type = FED_MSG_ERROR};
    e.u.error.code = 3;
    e.u.error.text = "x";
    e.u.error.round = 9;
    e.u.error.attempt = 300;
    buf = NULL;
    CHECK_OK(fed_msg_encode(&e, &buf, &len));
    CHECK_SIZE(len, sizeof er);
    if (buf && len == sizeof er) CHECK_MEM(buf, er, sizeof er);
    fed_free(buf);
    CHECK_OK(fed_msg_decode(&d, er, sizeof er, NULL));
    CHECK_SIZE(d.u.error.round, 9);
    CHECK_SIZE(d.u.error.attempt, 300);
    fed_msg_free(&d);

    /* An unknown field inside a known body (a newer peer) is skipped. */
    static const uint8_t hb_extra[] = {0x08, 0x01, 0x10, 0x05, 0x8a, 0x01,
                                       0x05, 0x08, 0xac, 0x02, 0x28, 0x01};
    CHECK_OK(fed_msg_decode(&d, hb_extra, sizeof hb_extra, NULL));
    CHECK_SIZE(d.u.heartbeat_ms, 300);
    fed_msg_free(&d);
}

/* ---- malformed input ------------------------------------------------------------------- */

/* Decodes b[0..n) from an exact-size heap copy (so ASan sees any over-read) and expects
 * FED_EPROTO with needle in the detail. */
static void expect_proto_(const uint8_t *b, size_t n, const fed_msg_limits *lim, const char *needle,
                          int line) {
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) abort();
    if (n) memcpy(copy, b, n);
    fed_msg d;
    memset(&d, 0xa5, sizeof d);
    fed_err err = fed_msg_decode(&d, copy, n, lim);
    free(copy);
    if (err != FED_EPROTO || !strstr(fed_errmsg(), needle)) {
        fprintf(stderr, "  (expect_proto at line %d)\n", line);
    }
    CHECK_ERR(err, FED_EPROTO);
    CHECK_CONTAINS(fed_errmsg(), needle);
    CHECK_INT(d.type, FED_MSG_NONE);
    if (err == FED_OK) fed_msg_free(&d);
}
#define EXPECT_PROTO(b, n, lim, needle) expect_proto_((b), (n), (lim), (needle), __LINE__)
#define EXPECT_PROTO_W(w, lim, needle)                                                             \
    do {                                                                                           \
        EXPECT_PROTO((w).b, (w).n, (lim), (needle));                                               \
        free((w).b);                                                                               \
    } while (0)

TEST(decode_garbage) {
    EXPECT_PROTO(NULL, 0, NULL, "version 0, this build speaks 1");
    static const uint8_t ff[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    EXPECT_PROTO(ff, sizeof ff, NULL, "not a valid protobuf");
    /* heartbeat's length prefix says 127 bytes, 3 follow */
    static const uint8_t beyond[] = {0x08, 0x01, 0x10, 0x05, 0x8a, 0x01, 0x7f, 0x08, 0xac, 0x02};
    EXPECT_PROTO(beyond, sizeof beyond, NULL, "not a valid protobuf");
    /* a length prefix of 2^63: beyond any buffer, must not wrap */
    static const uint8_t huge[] = {0x08, 0x01, 0x8a, 0x01, 0x80, 0x80, 0x80, 0x80,
                                   0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00};
    EXPECT_PROTO(huge, sizeof huge, NULL, "not a valid protobuf");
    static const uint8_t wire7[] = {0x0f, 0x01}; /* wire type 7 does not exist */
    EXPECT_PROTO(wire7, sizeof wire7, NULL, "not a valid protobuf");

    /* Random bytes: never a crash; almost always FED_EPROTO. */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    int proto = 0, ok = 0, other = 0;
    uint8_t buf[96];
    for (int it = 0; it < 20000; it++) {
        size_t n = 1 + (size_t)(it % 95);
        for (size_t i = 0; i < n; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            buf[i] = (uint8_t)s;
        }
        if (it % 3 == 0) buf[0] = 0x08, buf[1] = 0x01; /* get past the version check */
        uint8_t *copy = malloc(n);
        if (!copy) abort();
        memcpy(copy, buf, n);
        fed_msg d;
        fed_err err = fed_msg_decode(&d, copy, n, NULL);
        free(copy);
        if (err == FED_EPROTO)
            proto++;
        else if (err == FED_OK)
            ok++, fed_msg_free(&d);
        else
            other++;
    }
    CHECK_INT(other, 0);
    CHECK(proto > 19000);
    CHECK(ok < 1000);
}

TEST(decode_truncated) {
    fed_msg msgs[3] = {sample_round_start(), sample_hello(), sample_update()};
    for (int k = 0; k < 3; k++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK_OK(fed_msg_encode(&msgs[k], &buf, &len));
        int bad = 0;
        for (size_t n = 0; n < len; n++) {
            uint8_t *copy = malloc(n ? n : 1);
            if (!copy) abort();
            memcpy(copy, buf, n);
            fed_msg d;
            fed_err err = fed_msg_decode(&d, copy, n, NULL);
            free(copy);
            if (err != FED_EPROTO) {
                bad++;
                fprintf(stderr, "  %s truncated to %zu of %zu bytes: %s\n",
                        fed_msg_type_name(msgs[k].type), n, len, fed_errname(err));
                if (err == FED_OK) fed_msg_free(&d);
            }
        }
        CHECK_INT(bad, 0);
        CHECK(len > 100 || k != 0);
        fed_free(buf);
    }
}

TEST(decode_envelope_limits) {
    static const uint8_t hb[] = {0x08, 0x01, 0x10, 0x05, 0x8a, 0x01, 0x03, 0x08, 0xac, 0x02};
    fed_msg_limits lim = fed_msg_default_limits();
    lim.max_envelope = 9;
    EXPECT_PROTO(hb, sizeof hb, &lim, "envelope: 10 bytes, limit 9");
    /* The default limit is checked before protobuf-c sees a byte. */
    size_t n = ((size_t)16 << 20) + 1;
    uint8_t *big = calloc(n, 1);
    if (!big) abort();
    fed_msg d;
    CHECK_ERR(fed_msg_decode(&d, big, n, NULL), FED_EPROTO);
    CHECK_CONTAINS(fed_errmsg(), "envelope: 16777217 bytes, limit 16777216");
    free(big);
}

TEST(decode_version_and_body) {
    static const uint8_t v2[] = {0x08, 0x02, 0x10, 0x05, 0x8a, 0x01, 0x03, 0x08, 0xac, 0x02};
    fed_msg d;
    CHECK_ERR(fed_msg_decode(&d, v2, sizeof v2, NULL), FED_EPROTO);
    CHECK_CONTAINS(fed_errmsg(), "version 2, this build speaks 1");
    CHECK_INT(d.version, 2); /* so the caller can answer ERR_VERSION */
    CHECK_INT(d.type, FED_MSG_NONE);
    static const uint8_t v0[] = {0x10, 0x05, 0x8a, 0x01, 0x03, 0x08, 0xac, 0x02};
    EXPECT_PROTO(v0, sizeof v0, NULL, "version 0, this build speaks 1");
    static const uint8_t nobody[] = {0x08, 0x01, 0x10, 0x05};
    EXPECT_PROTO(nobody, sizeof nobody, NULL, "envelope: no body");
    /* a body from a newer protocol (field 30, reserved for evaluation) */
    static const uint8_t future[] = {0x08, 0x01, 0xf2, 0x01, 0x02, 0x08, 0x01};
    EXPECT_PROTO(future, sizeof future, NULL, "envelope: no body");
}

TEST(decode_digests_and_ids) {
    uint8_t id[40] = {0};
    pbw h = {0};
    w_str(&h, 1, "fedtune");
    w_bytes(&h, 5, id, 15);
    pbw e = w_envelope(1, 1, F_HELLO, &h);
    EXPECT_PROTO_W(e, NULL, "hello.session_id: 15 bytes (must be 16)");

    h = (pbw){0};
    w_str(&h, 1, "fedtune"); /* no session id at all */
    e = w_envelope(1, 1, F_HELLO, &h);
    EXPECT_PROTO_W(e, NULL, "hello.session_id: 0 bytes (must be 16)");

    pbw wl = {0};
    w_bytes(&wl, 2, id, 17);
    e = w_envelope(1, 1, F_WELCOME, &wl);
    EXPECT_PROTO_W(e, NULL, "welcome.session_id: 17 bytes (must be 16)");

    pbw u = {0};
    w_uint(&u, 1, 3);
    w_bytes(&u, 8, id, 31);
    e = w_envelope(1, 1, F_UPDATE, &u);
    EXPECT_PROTO_W(e, NULL, "update.sha256: 31 bytes (must be 32)");

    u = (pbw){0};
    w_bytes(&u, 8, id, 33);
    e = w_envelope(1, 1, F_UPDATE, &u);
    EXPECT_PROTO_W(e, NULL, "update.sha256: 33 bytes (must be 32)");
}

/* A RoundStart written field by field, with one knob per way to break it. */
typedef struct rs_knobs {
    int ndim;            /* dimensions of tensors[1] (each 2) */
    int zero_dim;        /* that dimension of tensors[1] is 0; -1 for none */
    int dtype;           /* of tensors[1] */
    int64_t total_delta; /* added to the correct total_bytes */
    size_t sha_len;
    float lr, momentum;
    const char *name0; /* name of tensors[0] */
    size_t extra_tensors;
    bool no_manifest;
    size_t tokenizer_sha_len; /* Manifest.tokenizer_sha256's bytes (0: absent) */
    uint64_t model_version, transfer_id, delta_from, delta_bytes; /* 0: absent */
    size_t delta_sha_len; /* RoundStart.delta_sha256's bytes (0: absent) */
} rs_knobs;

static rs_knobs good_knobs(void) {
    rs_knobs k = {.ndim = 3,
                  .zero_dim = -1,
                  .dtype = 0,
                  .sha_len = 32,
                  .lr = 0.01f,
                  .momentum = 0.5f,
                  .name0 = "a.weight"};
    return k;
}

static pbw round_start_wire(const rs_knobs *k) {
    pbw cfg = {0}, man = {0}, rs = {0};
    w_uint(&cfg, 1, 1);
    w_uint(&cfg, 2, 8);
    w_str(&cfg, 3, "sgd");
    w_float(&cfg, 4, k->lr);
    w_float(&cfg, 5, k->momentum);
    uint64_t total = 0;
    for (size_t i = 0; i < 2 + k->extra_tensors; i++) {
        pbw t = {0}, shape = {0};
        char name[32];
        snprintf(name, sizeof name, "t%zu", i);
        w_str(&t, 1, i == 0 ? k->name0 : name);
        if (i == 1) {
            for (int d = 0; d < k->ndim; d++) w_varint(&shape, d == k->zero_dim ? 0 : 2);
            w_sub(&t, 2, &shape);
            w_uint(&t, 3, (uint64_t)(int64_t)k->dtype); /* negative: 10-byte varint */
            uint64_t n = 2;                             /* f16 / bf16 */
            for (int d = 0; d < k->ndim; d++) n *= d == k->zero_dim ? 0 : 2;
            total += k->dtype == 0 ? 2 * n : n;
        } else {
            w_varint(&shape, 5);
            w_varint(&shape, 3);
            w_sub(&t, 2, &shape);
            total += 60;
        }
        w_uint(&t, 4, 1);
        w_sub(&man, 1, &t);
    }
    w_uint(&man, 2, (uint64_t)((int64_t)total + k->total_delta));
    uint8_t sha[64] = {0};
    w_bytes(&man, 3, sha, k->sha_len);
    if (k->tokenizer_sha_len) w_bytes(&man, 8, sha, k->tokenizer_sha_len);
    w_str(&man, 4, "{}");
    w_uint(&rs, 1, 9);
    if (k->model_version) w_uint(&rs, 2, k->model_version);
    w_sub(&rs, 3, &cfg);
    if (k->no_manifest)
        free(man.b);
    else
        w_sub(&rs, 4, &man);
    if (k->transfer_id) w_uint(&rs, 5, k->transfer_id);
    if (k->delta_from) w_uint(&rs, 12, k->delta_from);
    if (k->delta_bytes) w_uint(&rs, 13, k->delta_bytes);
    if (k->delta_sha_len) w_bytes(&rs, 14, sha, k->delta_sha_len);
    return w_envelope(1, 77, F_ROUND_START, &rs);
}

TEST(decode_round_start_checks) {
    rs_knobs k = good_knobs();
    pbw e = round_start_wire(&k);
    fed_msg d;
    CHECK_OK(fed_msg_decode(&d, e.b, e.n, NULL)); /* the baseline is valid */
    CHECK_INT(d.type, FED_MSG_ROUND_START);
    CHECK_SIZE(d.seq, 77);
    if (d.type == FED_MSG_ROUND_START) {
        CHECK_SIZE(d.u.round_start.manifest.num_tensors, 2);
        CHECK_INT(d.u.round_start.manifest.tensors[1].ndim, 3);
        CHECK_SIZE(d.u.round_start.manifest.total_bytes, 60 + 32);
        CHECK_NEAR(d.u.round_start.config.lr, 0.01f, 0);
    }
    fed_msg_free(&d);
    free(e.b);

    k = good_knobs();
    k.ndim = 9;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.manifest.tensors[1].shape: 9 dimensions, limit 8");

    k = good_knobs();
    k.ndim = 8; /* the maximum is fine */
    e = round_start_wire(&k);
    CHECK_OK(fed_msg_decode(&d, e.b, e.n, NULL));
    fed_msg_free(&d);
    free(e.b);

    k = good_knobs();
    k.zero_dim = 2;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.manifest.tensors[1].shape[2]: 0 (must be > 0)");

    k = good_knobs();
    k.total_delta = 4;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.manifest.total_bytes: 96, but the tensors hold 92");

    k = good_knobs();
    k.sha_len = 31;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.manifest.sha256: 31 bytes (must be 32)");

    k = good_knobs();
    k.no_manifest = true;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.manifest.sha256: 0 bytes (must be 32)");

    k = good_knobs();
    k.dtype = 3;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.manifest.tensors[1].dtype: unknown value 3");

    k = good_knobs();
    k.dtype = -1;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.manifest.tensors[1].dtype: unknown value -1");

    k = good_knobs();
    k.lr = NAN;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.config.lr: nan (must be finite)");

    k = good_knobs();
    k.momentum = -INFINITY;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.config.momentum: -inf (must be finite)");

    k = good_knobs();
    k.name0 = "ab\xc3"; /* a 2-byte sequence cut short */
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.manifest.tensors[0].name: not valid UTF-8 (byte 2)");

    const char *bad_utf8[] = {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80", "\xfe"};
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof *bad_utf8; i++) {
        k = good_knobs();
        k.name0 = bad_utf8[i];
        e = round_start_wire(&k);
        EXPECT_PROTO_W(e, NULL, "round_start.manifest.tensors[0].name: not valid UTF-8 (byte 0)");
    }

    /* Too many tensors for small custom limits. */
    fed_msg_limits lim = fed_msg_default_limits();
    lim.max_tensors = 3;
    k = good_knobs();
    k.extra_tensors = 2;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, &lim, "round_start.manifest.tensors: 4 entries, limit 3");
    k.extra_tensors = 1;
    e = round_start_wire(&k);
    CHECK_OK(fed_msg_decode(&d, e.b, e.n, &lim));
    fed_msg_free(&d);
    free(e.b);

    lim = fed_msg_default_limits();
    lim.max_string = 7;
    k = good_knobs();
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, &lim, "round_start.manifest.tensors[0].name: 8 bytes, limit 7");
}

/* A shape whose byte count overflows 64 bits. */
TEST(decode_size_overflow) {
    pbw t = {0}, shape = {0}, man = {0}, rs = {0};
    w_str(&t, 1, "huge");
    w_varint(&shape, 1ull << 32);
    w_varint(&shape, 1ull << 32);
    w_sub(&t, 2, &shape);
    w_sub(&man, 1, &t);
    w_uint(&man, 2, 0);
    w_sub(&rs, 4, &man);
    pbw e = w_envelope(1, 1, F_ROUND_START, &rs);
    EXPECT_PROTO_W(e, NULL, "round_start.manifest.tensors[0]: size overflows 64 bits");
}

TEST(decode_other_bodies) {
    pbw b = {0};
    w_uint(&b, 2, 0);
    w_uint(&b, 3, 1u << 20);
    pbw e = w_envelope(1, 1, F_CHUNK, &b);
    fed_msg_limits lim = fed_msg_default_limits();
    lim.max_chunk = 65536;
    EXPECT_PROTO_W(e, &lim, "chunk.length: 1048576 bytes, limit 65536");

    b = (pbw){0};
    w_uint(&b, 3, 0xffffffffu);
    e = w_envelope(1, 1, F_CHUNK, &b);
    EXPECT_PROTO_W(e, NULL, "chunk.length: 4294967295 bytes, limit 4194304");

    b = (pbw){0};
    w_uint(&b, 2, UINT64_MAX);
    w_uint(&b, 3, 1);
    e = w_envelope(1, 1, F_CHUNK, &b);
    EXPECT_PROTO_W(e, NULL, "chunk.offset: 18446744073709551615 + length 1 overflows");

    b = (pbw){0};
    w_uint(&b, 1, 99);
    w_str(&b, 2, "?");
    e = w_envelope(1, 1, F_ERROR, &b);
    EXPECT_PROTO_W(e, NULL, "error.code: unknown value 99");

    b = (pbw){0};
    w_str(&b, 2, "ok \xe2\x82");
    e = w_envelope(1, 1, F_ERROR, &b);
    EXPECT_PROTO_W(e, NULL, "error.text: not valid UTF-8 (byte 3)");

    b = (pbw){0};
    w_str(&b, 1, "\xff");
    e = w_envelope(1, 1, F_BYE, &b);
    EXPECT_PROTO_W(e, NULL, "bye.reason: not valid UTF-8 (byte 0)");

    uint8_t sha[32] = {0};
    b = (pbw){0};
    w_uint(&b, 5, 8);
    w_bytes(&b, 8, sha, 32);
    e = w_envelope(1, 1, F_UPDATE, &b);
    EXPECT_PROTO_W(e, NULL, "update.encoding: unknown value 8");

    b = (pbw){0};
    for (int i = 0; i < 2; i++) {
        pbw met = {0};
        w_str(&met, 1, i ? "loss" : "acc");
        w_double(&met, 2, i ? (double)NAN : 0.5);
        w_sub(&b, 4, &met);
    }
    w_bytes(&b, 8, sha, 32);
    e = w_envelope(1, 1, F_UPDATE, &b);
    EXPECT_PROTO_W(e, NULL, "update.metrics[1].value: nan (must be finite)");

    fed_msg m = sample_update();
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_OK(fed_msg_encode(&m, &buf, &len));
    lim = fed_msg_default_limits();
    lim.max_list = 1;
    EXPECT_PROTO(buf, len, &lim, "update.metrics: 2 entries, limit 1");
    fed_free(buf);

    m = sample_hello();
    CHECK_OK(fed_msg_encode(&m, &buf, &len));
    lim = fed_msg_default_limits();
    lim.max_list = 2;
    EXPECT_PROTO(buf, len, &lim, "hello.capabilities: 3 entries, limit 2");
    lim = fed_msg_default_limits();
    lim.max_string = 12;
    EXPECT_PROTO(buf, len, &lim, "hello.software: 13 bytes, limit 12");
    lim.max_string = 13;
    EXPECT_PROTO(buf, len, &lim, "hello.capabilities[2]: 14 bytes, limit 13");
    fed_free(buf);
}

/* Many empty entries: protobuf-c would spend ~100x the envelope on them; the budget
 * refuses long before. */
TEST(decode_memory_budget) {
    fed_msg_limits lim = fed_msg_default_limits();
    lim.max_tensors = 4;
    pbw man = {0}, rs = {0};
    for (int i = 0; i < 20000; i++) w_bytes(&man, 1, "", 0);
    w_sub(&rs, 4, &man);
    pbw e = w_envelope(1, 1, F_ROUND_START, &rs);
    EXPECT_PROTO_W(e, &lim, "would need more than");

    /* Default limits, 8 MiB of empty tensors (4M entries). */
    man = (pbw){0};
    rs = (pbw){0};
    for (int i = 0; i < (4 << 20); i++) w_bytes(&man, 1, "", 0);
    w_sub(&rs, 4, &man);
    e = w_envelope(1, 1, F_ROUND_START, &rs);
    EXPECT_PROTO_W(e, NULL, "would need more than");

    /* Unknown fields are budgeted too: 1M of them at the top level. */
    pbw u = {0};
    w_uint(&u, 1, 1);
    for (int i = 0; i < (1 << 20); i++) w_uint(&u, 5, 0);
    EXPECT_PROTO_W(u, NULL, "would need more than");
}

/* ---- secure aggregation: RoundStart.secagg and SecAgg ------------------------------------ */

TEST(round_trip_secagg) {
    fed_msg m = sample_round_start(), d;
    fed_msg_round_start *r = &m.u.round_start;
    r->has_secagg = true;
    r->secagg = (fed_msg_secagg_params){.participant = 4,
                                        .n = 9,
                                        .degree = 6,
                                        .threshold = 4,
                                        .clip_range = 8.0,
                                        .quant_range = 1u << 22,
                                        .dp_clip = 1.5,
                                        .dp_noise_std = 0.125};
    for (int i = 0; i < FED_MSG_SEED_LEN; i++) r->secagg.graph_seed[i] = (uint8_t)(3 * i + 1);
    if (round_trip(&m, &d)) {
        const fed_msg_round_start *o = &d.u.round_start;
        CHECK(o->has_secagg);
        CHECK_INT(o->secagg.participant, 4);
        CHECK_INT(o->secagg.n, 9);
        CHECK_INT(o->secagg.degree, 6);
        CHECK_INT(o->secagg.threshold, 4);
        CHECK_NEAR(o->secagg.clip_range, 8.0, 0);
        CHECK_INT(o->secagg.quant_range, 1u << 22);
        CHECK_MEM(o->secagg.graph_seed, r->secagg.graph_seed, FED_MSG_SEED_LEN);
        CHECK_NEAR(o->secagg.dp_clip, 1.5, 0);
        CHECK_NEAR(o->secagg.dp_noise_std, 0.125, 0);
        CHECK_SIZE(o->manifest.num_tensors, 4); /* the rest is intact */
    }
    fed_msg_free(&d);
    /* Without secagg nothing says so. */
    fed_msg plain = sample_round_start();
    if (round_trip(&plain, &d)) CHECK(!d.u.round_start.has_secagg);
    fed_msg_free(&d);

    uint8_t bytes[300];
    for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (uint8_t)(i * 7);
    fed_msg s = {.seq = 12, .type = FED_MSG_SECAGG};
    s.u.secagg = (fed_msg_secagg){.round = 17, .msg = bytes, .len = sizeof bytes};
    if (round_trip(&s, &d)) {
        CHECK_SIZE(d.u.secagg.round, 17);
        CHECK_SIZE(d.u.secagg.len, sizeof bytes);
        CHECK_MEM(d.u.secagg.msg, bytes, sizeof bytes);
        CHECK(d.u.secagg.msg != bytes);
    }
    fed_msg_free(&d);
    CHECK_STR(fed_msg_type_name(FED_MSG_SECAGG), "secagg");
    /* A SecAgg envelope is field 40 of the oneof: tag 40 << 3 | 2 = 0xc2 0x02. */
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_OK(fed_msg_encode(&s, &buf, &len));
    const uint8_t want[] = {0x08, 0x01, 0x10, 0x0c, 0xc2, 0x02};
    CHECK(len > sizeof want && memcmp(buf, want, sizeof want) == 0);
    fed_free(buf);

    fed_msg u = sample_update();
    u.u.update.encoding = FED_ENCODING_SECAGG_MASKED;
    if (round_trip(&u, &d)) CHECK_INT(d.u.update.encoding, FED_ENCODING_SECAGG_MASKED);
    fed_msg_free(&d);
    u.u.update.encoding = FED_ENCODING_MOMENTS_F32;
    if (round_trip(&u, &d)) CHECK_INT(d.u.update.encoding, FED_ENCODING_MOMENTS_F32);
    fed_msg_free(&d);
}

/* RoundStart with a SecAggParams body built field by field. */
static pbw secagg_rs_wire(uint64_t participant, uint64_t n, size_t seed_len, double clip,
                          double dp_clip, double noise) {
    rs_knobs k = good_knobs();
    pbw e = round_start_wire(&k), sa = {0}, rs = {0};
    /* round_start_wire's envelope: version, seq, then the RoundStart as field 12. Rebuild
     * it with the secagg field appended to the body. */
    free(e.b);
    pbw cfg = {0}, man = {0};
    w_uint(&cfg, 1, 1);
    w_uint(&cfg, 2, 8);
    w_str(&cfg, 3, "sgd");
    pbw t = {0}, shape = {0};
    w_str(&t, 1, "w");
    w_varint(&shape, 4);
    w_sub(&t, 2, &shape);
    w_sub(&man, 1, &t);
    w_uint(&man, 2, 16);
    uint8_t zero[64] = {0};
    w_bytes(&man, 3, zero, 32);
    w_str(&man, 4, "{}");
    w_uint(&rs, 1, 9);
    w_sub(&rs, 3, &cfg);
    w_sub(&rs, 4, &man);
    w_uint(&sa, 1, participant);
    w_uint(&sa, 2, n);
    w_uint(&sa, 3, 2);
    w_uint(&sa, 4, 2);
    w_double(&sa, 5, clip);
    w_uint(&sa, 6, 1000);
    w_bytes(&sa, 7, zero, seed_len);
    w_double(&sa, 8, dp_clip);
    w_double(&sa, 9, noise);
    w_sub(&rs, 7, &sa);
    return w_envelope(1, 5, F_ROUND_START, &rs);
}

TEST(decode_secagg_checks) {
    pbw e = secagg_rs_wire(2, 3, 32, 8.0, 0, 0);
    fed_msg d;
    CHECK_OK(fed_msg_decode(&d, e.b, e.n, NULL)); /* the baseline is valid */
    if (d.type == FED_MSG_ROUND_START) {
        CHECK(d.u.round_start.has_secagg);
        CHECK_INT(d.u.round_start.secagg.participant, 2);
        CHECK_INT(d.u.round_start.secagg.quant_range, 1000);
    }
    fed_msg_free(&d);
    free(e.b);
    e = secagg_rs_wire(3, 3, 32, 8.0, 0, 0);
    EXPECT_PROTO_W(e, NULL, "round_start.secagg.participant: 3 (must be < n 3)");
    e = secagg_rs_wire(0, 1, 32, 8.0, 0, 0);
    EXPECT_PROTO_W(e, NULL, "round_start.secagg.n: 1 (must be >= 2)");
    e = secagg_rs_wire(0, 3, 31, 8.0, 0, 0);
    EXPECT_PROTO_W(e, NULL, "round_start.secagg.graph_seed: 31 bytes (must be 32)");
    e = secagg_rs_wire(0, 3, 0, 8.0, 0, 0);
    EXPECT_PROTO_W(e, NULL, "round_start.secagg.graph_seed: 0 bytes (must be 32)");
    e = secagg_rs_wire(0, 3, 32, (double)NAN, 0, 0);
    EXPECT_PROTO_W(e, NULL, "round_start.secagg.clip_range: nan (must be finite and >= 0)");
    e = secagg_rs_wire(0, 3, 32, 8.0, -1.0, 0);
    EXPECT_PROTO_W(e, NULL, "round_start.secagg.dp_clip: -1 (must be finite and >= 0)");
    e = secagg_rs_wire(0, 3, 32, 8.0, 0, (double)INFINITY);
    EXPECT_PROTO_W(e, NULL, "round_start.secagg.dp_noise_std: inf (must be finite and >= 0)");

    /* SecAgg bodies: an empty message, and one past the envelope limit. */
    pbw b = {0};
    w_uint(&b, 1, 4);
    e = w_envelope(1, 1, 40, &b);
    EXPECT_PROTO_W(e, NULL, "secagg.msg: empty");
    b = (pbw){0};
    w_uint(&b, 1, 4);
    uint8_t msg[600] = {1};
    w_bytes(&b, 2, msg, sizeof msg);
    e = w_envelope(1, 1, 40, &b);
    fed_msg_limits lim = fed_msg_default_limits();
    lim.max_envelope = 500;
    EXPECT_PROTO_W(e, &lim, "envelope: 6");
    /* An envelope just big enough, with a message within it. */
    b = (pbw){0};
    w_uint(&b, 1, 4);
    w_bytes(&b, 2, msg, 400);
    e = w_envelope(1, 1, 40, &b);
    CHECK_OK(fed_msg_decode(&d, e.b, e.n, &lim));
    CHECK_INT(d.type, FED_MSG_SECAGG);
    CHECK_SIZE(d.u.secagg.len, 400);
    CHECK_SIZE(d.u.secagg.round, 4);
    CHECK_INT(d.u.secagg.msg[0], 1);
    fed_msg_free(&d);
    free(e.b);
    /* Truncating a SecAgg envelope anywhere is refused. */
    fed_msg s = {.type = FED_MSG_SECAGG};
    s.u.secagg = (fed_msg_secagg){.round = 3, .msg = msg, .len = 40};
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_OK(fed_msg_encode(&s, &buf, &len));
    size_t refused = 0;
    for (size_t n = 0; n < len; n++) {
        fed_err err = fed_msg_decode(&d, buf, n, NULL);
        if (err == FED_EPROTO) refused++;
        if (err == FED_OK) fed_msg_free(&d);
    }
    CHECK_SIZE(refused, len); /* every prefix: garbage, no body, or an empty message */
    fed_free(buf);
    /* Encoding refuses an empty message and a NULL one with a length. */
    s.u.secagg.len = 0;
    buf = NULL;
    CHECK_ERR(fed_msg_encode(&s, &buf, &len), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "secagg.msg: empty");
    s.u.secagg = (fed_msg_secagg){.round = 3, .msg = NULL, .len = 5};
    CHECK_ERR(fed_msg_encode(&s, &buf, &len), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "secagg.msg: NULL with 5 bytes");
}

/* ---- encoding refuses what decoding would ---------------------------------------------- */

static void expect_einval_(const fed_msg *m, const char *needle, int line) {
    static uint8_t sentinel;
    uint8_t *buf = &sentinel;
    size_t len = 1;
    fed_err err = fed_msg_encode(m, &buf, &len);
    if (err != FED_EINVAL || !strstr(fed_errmsg(), needle))
        fprintf(stderr, "  (expect_einval at line %d)\n", line);
    CHECK_ERR(err, FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), needle);
    CHECK(buf == NULL);
    CHECK_SIZE(len, 0);
    CHECK_SIZE(fed_msg_packed_size(m), 0);
    uint8_t out[8];
    err = FED_OK;
    CHECK_SIZE(fed_msg_pack(m, out, &err), 0);
    CHECK_ERR(err, FED_EINVAL);
    if (buf != &sentinel) fed_free(buf);
}
#define EXPECT_EINVAL(m, needle) expect_einval_((m), (needle), __LINE__)

TEST(encode_refuses) {
    fed_msg none = {0};
    EXPECT_EINVAL(&none, "type: 0 is not a message type");

    fed_msg m = sample_round_start();
    sample_tensors[1].ndim = 9;
    EXPECT_EINVAL(&m, "round_start.manifest.tensors[1].shape: 9 dimensions, limit 8");
    sample_tensors[1].ndim = -1;
    EXPECT_EINVAL(&m, "round_start.manifest.tensors[1].shape: -1 dimensions, limit 8");
    m = sample_round_start();
    sample_tensors[3].shape[5] = 0;
    EXPECT_EINVAL(&m, "round_start.manifest.tensors[3].shape[5]: 0 (must be > 0)");
    m = sample_round_start();
    m.u.round_start.manifest.total_bytes++;
    EXPECT_EINVAL(&m, "round_start.manifest.total_bytes");
    m = sample_round_start();
    sample_tensors[2].dtype = (fed_dtype)5;
    EXPECT_EINVAL(&m, "round_start.manifest.tensors[2].dtype: unknown value 5");
    m = sample_round_start();
    m.u.round_start.config.clip_norm = INFINITY;
    EXPECT_EINVAL(&m, "round_start.config.clip_norm: inf (must be finite)");
    m = sample_round_start();
    m.u.round_start.manifest.tensors = NULL;
    EXPECT_EINVAL(&m, "round_start.manifest.tensors: NULL with 4 entries");
    m = sample_round_start();
    m.u.round_start.config.optimizer = "sg\xe4";
    EXPECT_EINVAL(&m, "round_start.config.optimizer: not valid UTF-8 (byte 2)");

    m = sample_hello();
    const char *with_null[] = {"a", NULL};
    m.u.hello.capabilities = with_null;
    m.u.hello.num_capabilities = 2;
    EXPECT_EINVAL(&m, "hello.capabilities[1]: NULL");
    m.u.hello.num_capabilities = 65;
    EXPECT_EINVAL(&m, "hello.capabilities: 65 entries, limit 64");

    m = sample_chunk();
    m.u.chunk.length = (4u << 20) + 1;
    EXPECT_EINVAL(&m, "chunk.length: 4194305 bytes, limit 4194304");

    m = sample_error();
    m.u.error.code = 12;
    EXPECT_EINVAL(&m, "error.code: unknown value 12");
    m.u.error.code = 0x80000000u;
    EXPECT_EINVAL(&m, "error.code: unknown value 2147483648");

    m = sample_update();
    m.u.update.encoding = (fed_encoding)8;
    EXPECT_EINVAL(&m, "update.encoding: unknown value 8");
    fed_msg_metric nan_metric = {"loss", (double)NAN};
    m = sample_update();
    m.u.update.metrics = &nan_metric;
    m.u.update.num_metrics = 1;
    EXPECT_EINVAL(&m, "update.metrics[0].value: nan (must be finite)");
}

/* ---- allocation failure ------------------------------------------------------------- */

TEST(fail_nth_allocation) {
    /* A RoundStart with 64 tensors, every string set. */
    enum { NT = 64 };
    static fed_msg_tensor tensors[NT];
    static char names[NT][32];
    uint64_t total = 0;
    for (int i = 0; i < NT; i++) {
        snprintf(names[i], sizeof names[i], "layers.%d.%s", i / 2, i % 2 ? "bias" : "weight");
        tensors[i] = (fed_msg_tensor){.name = names[i],
                                      .ndim = 2 - i % 2,
                                      .shape = {(uint64_t)(8 + i), 4},
                                      .trainable = i % 3 != 0};
        uint64_t b = 0;
        if (!fed_msg_tensor_bytes(&tensors[i], &b)) abort();
        total += b;
    }
    fed_msg m = sample_round_start();
    m.u.round_start.manifest.tensors = tensors;
    m.u.round_start.manifest.num_tensors = NT;
    m.u.round_start.manifest.total_bytes = total;
    uint8_t *buf = NULL;
    size_t len = 0;

    /* Encoding allocates the tensor index and the output. */
    FOR_EACH_ALLOC_FAILURE(f) {
        if (ALLOC_TRY(f, fed_msg_encode(&m, &buf, &len)) != FED_OK) CHECK(buf == NULL);
    }
    if (!buf) return;

    fed_msg d;
    long failures = 0;
    FOR_EACH_ALLOC_FAILURE(f) {
        ALLOC_TRY(f, fed_msg_decode(&d, buf, len, NULL));
        if (f.failed) CHECK_INT(d.type, FED_MSG_NONE);
        failures += f.failed;
    }
    CHECK(failures > 3 * NT); /* protobuf-c's (3 per tensor), the view's list, the arena */
    CHECK_INT(d.type, FED_MSG_ROUND_START);
    if (d.type == FED_MSG_ROUND_START) {
        CHECK_SIZE(d.u.round_start.manifest.num_tensors, NT);
        CHECK_STR(d.u.round_start.manifest.tensors[NT - 1].name, "layers.31.bias");
        CHECK_SIZE(d.u.round_start.manifest.total_bytes, total);
    }
    fed_msg_free(&d);
    fed_free(buf);

    /* The same for a Hello (string list) and an Update (metric list). */
    fed_msg small[2] = {sample_hello(), sample_update()};
    for (int k = 0; k < 2; k++) {
        CHECK_OK(fed_msg_encode(&small[k], &buf, &len));
        FOR_EACH_ALLOC_FAILURE(f) {
            ALLOC_TRY(f, fed_msg_decode(&d, buf, len, NULL));
        }
        CHECK_INT(d.type, small[k].type);
        fed_msg_free(&d);
        fed_free(buf);
    }
}

/* ---- ownership --------------------------------------------------------------------- */

/* A decoded message owns its strings and arrays, in its arena: they do not point into
 * the bytes it came from (overwritten and freed here, so ASan would see any read of
 * them) and stay valid, untouched by other messages' lives, until fed_msg_free, which
 * releases the arena and zeroes the message. */
/* A downlink delta (RoundStart.delta_from, delta_bytes, delta_sha256) round trips; what
 * a site could not apply is refused. */
TEST(delta_fields) {
    fed_msg m = sample_round_start(), d; /* version 7, transfer 99 */
    fed_msg_round_start *r = &m.u.round_start;
    r->delta_from = 6;
    r->delta_bytes = 1234;
    memset(r->delta_sha256, 0x6d, FED_SHA256_LEN);
    if (round_trip(&m, &d)) {
        CHECK_INT(d.u.round_start.delta_from, 6);
        CHECK_INT(d.u.round_start.delta_bytes, 1234);
        CHECK_MEM(d.u.round_start.delta_sha256, r->delta_sha256, FED_SHA256_LEN);
        fed_msg_free(&d);
    }
    r->delta_from = 7;
    EXPECT_EINVAL(&m, "round_start.delta_from 7: needs a transfer, not trainable_only, a "
                      "version below model_version 7 and delta_bytes > 0");
    r->delta_from = 6;
    r->delta_bytes = 0;
    EXPECT_EINVAL(&m, "round_start.delta_from 6: needs a transfer");
    r->delta_bytes = 1234;
    r->transfer_id = 0;
    EXPECT_EINVAL(&m, "round_start.delta_from 6: needs a transfer");
    r->transfer_id = 99;
    r->delta_from = 0;
    EXPECT_EINVAL(&m, "round_start.delta_bytes: set without delta_from");
    r->delta_bytes = 0;
    if (round_trip(&m, &d)) { /* none: an older coordinator's */
        CHECK_INT(d.u.round_start.delta_from, 0);
        CHECK_INT(d.u.round_start.delta_bytes, 0);
        fed_msg_free(&d);
    }
    /* The same refusals when decoding a peer's bytes. */
    rs_knobs k = good_knobs();
    k.model_version = 7;
    k.transfer_id = 99;
    k.delta_from = 6;
    k.delta_bytes = 1234;
    k.delta_sha_len = 32;
    pbw e = round_start_wire(&k);
    if (!fed_msg_decode(&d, e.b, e.n, NULL)) {
        CHECK_INT(d.u.round_start.delta_from, 6);
        CHECK_INT(d.u.round_start.delta_bytes, 1234);
        fed_msg_free(&d);
    } else {
        CHECK(!"the baseline delta RoundStart decodes");
    }
    free(e.b);
    k.delta_sha_len = 31;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.delta_sha256: 31 bytes (must be 32)");
    k.delta_sha_len = 32;
    k.transfer_id = 0;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.delta_from 6: needs a transfer");
    k.transfer_id = 99;
    k.delta_from = 9;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL,
                   "round_start.delta_from 9: needs a transfer, not trainable_only, a "
                   "version below model_version 7");
    k.delta_from = 0;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.delta_bytes: set without delta_from");
}

/* The frozen base: Hello.bases, the manifest's two digests and trainable_only round trip;
 * what would make a site add the wrong base is refused on both sides; the manifest's
 * parts gather and scatter the tensors with a given flag back to back. */
TEST(base_fields) {
    fed_msg m = sample_hello(), d;
    m.u.hello.num_bases = 2;
    memset(m.u.hello.bases[0], 0xab, FED_SHA256_LEN);
    memset(m.u.hello.bases[1], 0x01, FED_SHA256_LEN);
    if (round_trip(&m, &d)) {
        CHECK_SIZE(d.u.hello.num_bases, 2);
        CHECK_MEM(d.u.hello.bases[0], m.u.hello.bases[0], FED_SHA256_LEN);
        CHECK_MEM(d.u.hello.bases[1], m.u.hello.bases[1], FED_SHA256_LEN);
        fed_msg_free(&d);
    }
    m.u.hello.num_bases = FED_MSG_MAX_BASES + 1;
    EXPECT_EINVAL(&m, "hello.bases: 9 entries, limit 8");

    uint8_t id[40] = {0};
    pbw h = {0};
    w_bytes(&h, 5, id, 16);
    w_bytes(&h, 6, id, 31);
    pbw e = w_envelope(1, 1, F_HELLO, &h);
    EXPECT_PROTO_W(e, NULL, "hello.bases[0]: 31 bytes (must be 32)");
    h = (pbw){0};
    w_bytes(&h, 5, id, 16);
    for (int i = 0; i < 9; i++) w_bytes(&h, 6, id, 32);
    e = w_envelope(1, 1, F_HELLO, &h);
    EXPECT_PROTO_W(e, NULL, "hello.bases: 9 entries, limit 8");
    rs_knobs k = good_knobs();
    k.tokenizer_sha_len = 31;
    e = round_start_wire(&k);
    EXPECT_PROTO_W(e, NULL, "round_start.manifest.tokenizer_sha256: 31 bytes (must be 32)");

    m = sample_round_start(); /* tensors 0 and 2 trainable, 1 and 3 frozen */
    fed_msg_round_start *r = &m.u.round_start;
    r->manifest.has_base = true;
    memset(r->manifest.base_sha256, 0x5a, FED_SHA256_LEN);
    memset(r->manifest.trainable_sha256, 0xa5, FED_SHA256_LEN);
    r->trainable_only = true;
    if (round_trip(&m, &d)) {
        CHECK(d.u.round_start.manifest.has_base);
        CHECK(d.u.round_start.trainable_only);
        CHECK_MEM(d.u.round_start.manifest.base_sha256, r->manifest.base_sha256, FED_SHA256_LEN);
        CHECK_MEM(d.u.round_start.manifest.trainable_sha256, r->manifest.trainable_sha256,
                  FED_SHA256_LEN);
        fed_msg_free(&d);
    }
    r->manifest.has_tokenizer = true;
    memset(r->manifest.tokenizer_sha256, 0x3c, FED_SHA256_LEN);
    if (round_trip(&m, &d)) {
        CHECK(d.u.round_start.manifest.has_tokenizer);
        CHECK_MEM(d.u.round_start.manifest.tokenizer_sha256, r->manifest.tokenizer_sha256,
                  FED_SHA256_LEN);
        fed_msg_free(&d);
    }
    r->manifest.has_tokenizer = false;
    if (round_trip(&m, &d)) {
        CHECK(!d.u.round_start.manifest.has_tokenizer);
        fed_msg_free(&d);
    }
    r->transfer_id = 0;
    EXPECT_EINVAL(&m, "round_start.trainable_only: no transfer (transfer_id 0)");
    r->transfer_id = 99;
    r->manifest.has_base = false;
    EXPECT_EINVAL(&m, "round_start.trainable_only: the manifest has no frozen base");
    r->trainable_only = false;
    if (round_trip(&m, &d)) { /* no base, no trainable_only: an older coordinator's */
        CHECK(!d.u.round_start.manifest.has_base);
        CHECK(!d.u.round_start.trainable_only);
        fed_msg_free(&d);
    }
    r->manifest.has_base = true;
    for (int i = 0; i < 4; i++) sample_tensors[i].trainable = true;
    EXPECT_EINVAL(&m, "round_start.manifest.base_sha256: no tensor is frozen");
    for (int i = 0; i < 4; i++) sample_tensors[i].trainable = false;
    EXPECT_EINVAL(&m, "round_start.manifest.base_sha256: every tensor is frozen");

    /* Parts: three float tensors, the middle one frozen. */
    fed_msg_tensor t[3] = {{.name = "a", .ndim = 1, .shape = {2}, .trainable = true},
                           {.name = "b", .ndim = 2, .shape = {1, 3}},
                           {.name = "c", .ndim = 0, .trainable = true}};
    fed_msg_manifest mf = {.tensors = t, .num_tensors = 3};
    CHECK_SIZE(fed_manifest_part_floats(&mf, true), 3);
    CHECK_SIZE(fed_manifest_part_floats(&mf, false), 3);
    const float full[6] = {1, 2, 3, 4, 5, 6};
    float tr[3], fr[3], back[6] = {0};
    fed_manifest_gather(&mf, true, full, tr);
    fed_manifest_gather(&mf, false, full, fr);
    CHECK_NEAR(tr[0], 1, 0);
    CHECK_NEAR(tr[1], 2, 0);
    CHECK_NEAR(tr[2], 6, 0);
    CHECK_NEAR(fr[0], 3, 0);
    CHECK_NEAR(fr[2], 5, 0);
    fed_manifest_scatter(&mf, false, fr, back);
    fed_manifest_scatter(&mf, true, tr, back);
    CHECK_MEM(back, full, sizeof full);
}

TEST(decoded_owns_until_free) {
    fed_msg m = sample_round_start(), d;
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_OK(fed_msg_encode(&m, &buf, &len));
    if (!buf) return;
    CHECK_OK(fed_msg_decode(&d, buf, len, NULL));
    memset(buf, 0xff, len);
    fed_free(buf);
    if (d.type != FED_MSG_ROUND_START) return;
    CHECK(d.arena != NULL);
    fed_msg h = sample_hello(), dh;
    if (round_trip(&h, &dh)) fed_msg_free(&dh); /* another arena, come and gone */
    const fed_msg_round_start *r = &d.u.round_start;
    CHECK_STR(r->config.optimizer, "adamw");
    CHECK_STR(r->manifest.arch, m.u.round_start.manifest.arch);
    CHECK(r->manifest.arch != m.u.round_start.manifest.arch);
    CHECK_STR(r->manifest.input_transform, m.u.round_start.manifest.input_transform);
    CHECK_SIZE(r->manifest.num_tensors, 4);
    CHECK(r->manifest.tensors != sample_tensors);
    for (size_t i = 0; i < 4 && i < r->manifest.num_tensors; i++) {
        CHECK_STR(r->manifest.tensors[i].name, sample_tensors[i].name);
        CHECK_INT(r->manifest.tensors[i].ndim, sample_tensors[i].ndim);
    }
    fed_msg_free(&d);
    CHECK(d.arena == NULL);
    CHECK(d.u.round_start.manifest.tensors == NULL);
    CHECK(d.u.round_start.config.optimizer == NULL);
    CHECK_INT(d.type, FED_MSG_NONE);
}

/* A built message borrows: encoding only reads its buffers, and fed_msg_free on it frees
 * none of them. They are fed_malloc'd here and freed by the test afterwards, so a free
 * by the library would be a double free, which ASan (and glibc) abort on. */
TEST(built_borrows) {
    char *text = fed_strdup("upload cancelled: stopping");
    char *name = fed_strdup("loss");
    fed_msg_metric *met = fed_calloc(1, sizeof *met);
    uint8_t *payload = fed_malloc(5);
    if (!text || !name || !met || !payload) abort();
    memcpy(payload, "\x01\x02\x03\x04\x05", 5);
    met->name = name;
    met->value = 0.5;
    fed_msg b[3] = {{.type = FED_MSG_ERROR}, sample_update(), {.type = FED_MSG_SECAGG}};
    b[0].u.error.text = text;
    b[1].u.update.metrics = met;
    b[1].u.update.num_metrics = 1;
    b[2].u.secagg.round = 3;
    b[2].u.secagg.msg = payload;
    b[2].u.secagg.len = 5;
    for (int k = 0; k < 3; k++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK_OK(fed_msg_encode(&b[k], &buf, &len));
        fed_free(buf);
        CHECK(b[k].arena == NULL);
        fed_msg_free(&b[k]);
        CHECK_INT(b[k].type, FED_MSG_NONE);
    }
    CHECK_STR(text, "upload cancelled: stopping");
    CHECK_STR(name, "loss");
    CHECK_MEM(payload, "\x01\x02\x03\x04\x05", 5);
    fed_free(text);
    fed_free(name);
    fed_free(met);
    fed_free(payload);
}

/* fed_msg_copy: the copy owns copies (changing the original's buffers changes nothing
 * in it) and encodes to the same bytes; in place, a borrowed message becomes owned; a
 * message that points nowhere needs no arena and keeps no pointer of the original; a NULL list with
 * entries is refused; an allocation failure leaves nothing. */
TEST(copy_owns) {
    char software[] = "fedtune 0.1.0";
    fed_msg m = sample_hello(), c;
    m.u.hello.software = software;
    uint8_t *want = NULL, *got = NULL;
    size_t want_len = 0, got_len = 0;
    CHECK_OK(fed_msg_encode(&m, &want, &want_len));
    CHECK_OK(fed_msg_copy(&c, &m));
    software[0] = 'X';
    CHECK(c.arena != NULL);
    CHECK_STR(c.u.hello.software, "fedtune 0.1.0");
    CHECK(c.u.hello.capabilities != caps);
    for (size_t i = 0; i < 3 && i < c.u.hello.num_capabilities; i++) {
        CHECK_STR(c.u.hello.capabilities[i], caps[i]);
        CHECK(c.u.hello.capabilities[i] != caps[i]);
    }
    CHECK_OK(fed_msg_encode(&c, &got, &got_len));
    CHECK_SIZE(got_len, want_len);
    if (want && got && got_len == want_len) CHECK_MEM(got, want, want_len);
    fed_free(want);
    fed_free(got);
    fed_msg_free(&c);

    fed_msg r = sample_round_start();
    CHECK_OK(fed_msg_copy(&r, &r));
    CHECK(r.arena != NULL);
    CHECK(r.u.round_start.manifest.tensors != sample_tensors);
    CHECK_STR(r.u.round_start.manifest.tensors[3].name, "2.w");
    CHECK_SIZE(r.u.round_start.manifest.tensors[3].shape[7], 9);
    CHECK_STR(r.u.round_start.config.optimizer, "adamw");
    CHECK_SIZE(r.u.round_start.attempt, 4);
    fed_msg_free(&r);

    fed_msg k = sample_chunk();
    CHECK_OK(fed_msg_copy(&c, &k));
    CHECK(c.arena == NULL);
    CHECK_SIZE(c.u.chunk.offset, (uint64_t)1 << 40);
    fed_msg_free(&c);
    k = sample_update(); /* an empty list: nothing of the original stays in the copy */
    k.u.update.num_metrics = 0;
    CHECK_OK(fed_msg_copy(&c, &k));
    CHECK(c.arena == NULL && c.u.update.metrics == NULL);
    CHECK_SIZE(c.u.update.examples, 1000);
    fed_msg_free(&c);

    fed_msg bad = sample_update();
    bad.u.update.metrics = NULL;
    CHECK_ERR(fed_msg_copy(&c, &bad), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "update.metrics: NULL with 2 entries");
    CHECK(c.arena == NULL);

    m.u.hello.software = "fedtune 0.1.0";
    FOR_EACH_ALLOC_FAILURE(f) {
        ALLOC_TRY(f, fed_msg_copy(&c, &m));
        if (f.failed) CHECK(c.arena == NULL && c.type == FED_MSG_NONE);
    }
    CHECK_STR(c.u.hello.capabilities[2], caps[2]);
    fed_msg_free(&c);
}

/* One table of protocol error codes: what each local error travels as, and the code a
 * site uses for "send me the model" on the wire (102, 0x66). */
TEST(wire_error_codes) {
    CHECK_INT(fed_wire_err_of(FED_EINVAL), FED_WIRE_INVALID);
    CHECK_INT(fed_wire_err_of(FED_ENOTFOUND), FED_WIRE_INVALID);
    CHECK_INT(fed_wire_err_of(FED_ECANCELED), FED_WIRE_INVALID);
    CHECK_INT(fed_wire_err_of(FED_EFORMAT), 3);
    CHECK_INT(fed_wire_err_of(FED_ERANGE), 5);
    CHECK_INT(fed_wire_err_of(FED_ENONFINITE), 5);
    CHECK_INT(fed_wire_err_of(FED_ESHAPE), 7);
    CHECK_INT(fed_wire_err_of(FED_EUNSUPPORTED), 8);
    CHECK_INT(fed_wire_err_of(FED_EDIGEST), 10);
    CHECK_INT(fed_wire_err_of(FED_EPROTO), 11);
    CHECK_INT(fed_wire_err_of(FED_EAUTH), 13);
    CHECK_INT(fed_wire_err_of(FED_ETIMEOUT), 14);
    CHECK_INT(fed_wire_err_of(FED_ENOMEM), FED_WIRE_BUSY);
    CHECK_INT(fed_wire_err_of(FED_EIO), 101);
    CHECK_INT(fed_wire_err_of(FED_EAGAIN), 101);
    fed_msg e = {.seq = 2, .type = FED_MSG_ERROR}, d;
    e.u.error.code = FED_WIRE_NO_MODEL;
    e.u.error.text = "";
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_OK(fed_msg_encode(&e, &buf, &len));
    /* Envelope{version:1, seq:2, error{code:102}} */
    static const uint8_t want[] = {0x08, 0x01, 0x10, 0x02, 0x82, 0x01, 0x02, 0x08, 0x66};
    CHECK_SIZE(len, sizeof want);
    if (buf && len == sizeof want) CHECK_MEM(buf, want, sizeof want);
    CHECK_OK(fed_msg_decode(&d, want, sizeof want, NULL));
    CHECK_INT(d.u.error.code, FED_WIRE_NO_MODEL);
    fed_msg_free(&d);
    fed_free(buf);
    /* A code the table lacks is refused by the decoder. */
    static const uint8_t bad[] = {0x08, 0x01, 0x10, 0x02, 0x82, 0x01, 0x02, 0x08, 0x67};
    CHECK_ERR(fed_msg_decode(&d, bad, sizeof bad, NULL), FED_EPROTO);
    CHECK_CONTAINS(fed_errmsg(), "error.code");
}

/* RoundStart.compress (the uplink codec) round trips, and fed_msg_copy owns it; absent
 * (an older coordinator) it decodes as ""; the compressed encodings are valid values. */
TEST(round_trip_compress) {
    fed_msg m = sample_round_start(), d, c;
    if (round_trip(&m, &d)) {
        CHECK_STR(d.u.round_start.compress, "");
        fed_msg_free(&d);
    }
    m.u.round_start.compress = "topk:0.01+q8";
    if (round_trip(&m, &d)) {
        CHECK_STR(d.u.round_start.compress, "topk:0.01+q8");
        CHECK_OK(fed_msg_copy(&c, &d));
        fed_msg_free(&d);
        CHECK_STR(c.u.round_start.compress, "topk:0.01+q8");
        fed_msg_free(&c);
    }
    m.u.round_start.compress = "q8\xff";
    EXPECT_EINVAL(&m, "round_start.compress: not valid UTF-8 (byte 2)");
    m = sample_update();
    for (int e = FED_ENCODING_DELTA_FP16; e <= FED_ENCODING_DELTA_TOPK; e++) {
        m.u.update.encoding = (fed_encoding)e;
        if (round_trip(&m, &d)) {
            CHECK_INT(d.u.update.encoding, e);
            fed_msg_free(&d);
        }
    }
}

/* ---- administration (AdminRequest 60, AdminReply 61) ---------------------------------- */

TEST(admin_messages) {
    CHECK_STR(fed_msg_type_name(FED_MSG_ADMIN_REQUEST), "admin_request");
    CHECK_STR(fed_msg_type_name(FED_MSG_ADMIN_REPLY), "admin_reply");
    CHECK_STR(fed_admin_action_name(FED_ADMIN_RELOAD_CRL), "reload-crl");
    CHECK_STR(fed_admin_action_name((fed_admin_action)99), "none");
    CHECK_INT(fed_admin_action_parse("evict"), FED_ADMIN_EVICT);
    CHECK_INT(fed_admin_action_parse("readmit"), FED_ADMIN_READMIT);
    CHECK_INT(fed_admin_action_parse("none"), FED_ADMIN_NONE);
    CHECK_INT(fed_admin_action_parse("Evict"), FED_ADMIN_NONE);
    CHECK_INT(fed_admin_action_parse(NULL), FED_ADMIN_NONE);

    fed_msg m = {.type = FED_MSG_ADMIN_REQUEST, .seq = 3};
    m.u.admin_request.action = FED_ADMIN_EVICT;
    m.u.admin_request.site = "site-2";
    fed_msg d;
    if (round_trip(&m, &d)) {
        CHECK_INT(d.u.admin_request.action, FED_ADMIN_EVICT);
        CHECK_STR(d.u.admin_request.site, "site-2");
        fed_msg_free(&d);
    }
    m.u.admin_request.action = FED_ADMIN_STATUS;
    m.u.admin_request.site = NULL;
    if (round_trip(&m, &d)) {
        CHECK_INT(d.u.admin_request.action, FED_ADMIN_STATUS);
        CHECK_STR(d.u.admin_request.site, "");
        fed_msg_free(&d);
    }
    /* Exact bytes: envelope {version 1, seq 3, field 60 {action 6, site "ab"}}. */
    m.u.admin_request.action = FED_ADMIN_EVICT;
    m.u.admin_request.site = "ab";
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_OK(fed_msg_encode(&m, &buf, &len));
    static const uint8_t want[] = {0x08, 0x01, 0x10, 0x03, 0xe2, 0x03, 0x06,
                                   0x08, 0x06, 0x12, 0x02, 'a',  'b'};
    CHECK_SIZE(len, sizeof want);
    CHECK(buf && len == sizeof want && memcmp(buf, want, sizeof want) == 0);
    fed_free(buf);

    fed_msg r = {.type = FED_MSG_ADMIN_REPLY, .seq = 4};
    r.u.admin_reply.ok = false;
    r.u.admin_reply.code = FED_WIRE_AUTH;
    r.u.admin_reply.text = "refused";
    if (round_trip(&r, &d)) {
        CHECK(!d.u.admin_reply.ok);
        CHECK_INT(d.u.admin_reply.code, FED_WIRE_AUTH);
        CHECK_STR(d.u.admin_reply.text, "refused");
        fed_msg_free(&d);
    }
    r.u.admin_reply.ok = true;
    r.u.admin_reply.code = 0;
    r.u.admin_reply.text = "{\"state\":\"waiting\"}";
    if (round_trip(&r, &d)) {
        CHECK(d.u.admin_reply.ok);
        CHECK_STR(d.u.admin_reply.text, "{\"state\":\"waiting\"}");
        fed_msg_free(&d);
    }
    fed_msg c;
    CHECK_OK(fed_msg_copy(&c, &r));
    CHECK(c.arena != NULL && c.u.admin_reply.text != r.u.admin_reply.text);
    CHECK_STR(c.u.admin_reply.text, r.u.admin_reply.text);
    fed_msg_free(&c);

    /* Encoding refuses what decoding would. */
    m.u.admin_request.action = FED_ADMIN_NONE;
    expect_einval_(&m, "admin_request.action: none", __LINE__);
    m.u.admin_request.action = (fed_admin_action)8;
    expect_einval_(&m, "admin_request.action", __LINE__);
    m.u.admin_request.action = FED_ADMIN_EVICT;
    m.u.admin_request.site = "";
    expect_einval_(&m, "admin_request.site: 0 bytes (1..64 for evict)", __LINE__);
    m.u.admin_request.action = FED_ADMIN_PAUSE;
    m.u.admin_request.site = "x";
    expect_einval_(&m, "admin_request.site: set for pause, which takes no site", __LINE__);
    r.u.admin_reply.ok = true;
    r.u.admin_reply.code = FED_WIRE_AUTH;
    expect_einval_(&r, "admin_reply.code: 13 with ok true", __LINE__);
    r.u.admin_reply.ok = false;
    r.u.admin_reply.code = 0;
    expect_einval_(&r, "admin_reply.code: 0 with ok false", __LINE__);

    /* Malformed input. */
    pbw b = {0};
    w_uint(&b, 1, 9); /* no such action */
    pbw e = w_envelope(1, 1, 60, &b);
    EXPECT_PROTO_W(e, NULL, "admin_request.action");
    pbw b2 = {0};
    w_uint(&b2, 1, 7);
    char site[70];
    memset(site, 's', 65);
    site[65] = '\0';
    w_str(&b2, 2, site);
    e = w_envelope(1, 1, 60, &b2);
    EXPECT_PROTO_W(e, NULL, "admin_request.site: 65 bytes (1..64 for readmit)");
    pbw b3 = {0};
    w_uint(&b3, 1, 1);
    w_bytes(&b3, 2, "\xff\xfe", 2);
    e = w_envelope(1, 1, 60, &b3);
    EXPECT_PROTO_W(e, NULL, "admin_request.site: not valid UTF-8");
    pbw b6 = {0};
    w_uint(&b6, 1, 6);
    w_str(&b6, 2, "site-1\nfake log line");
    e = w_envelope(1, 1, 60, &b6);
    EXPECT_PROTO_W(e, NULL, "admin_request.site: byte 0x0a at 6 is not printable ASCII");
    m.u.admin_request.action = FED_ADMIN_EVICT;
    m.u.admin_request.site = "caf\xc3\xa9";
    expect_einval_(&m, "admin_request.site: byte 0xc3 at 3 is not printable ASCII", __LINE__);
    pbw b4 = {0};
    w_uint(&b4, 1, 1); /* ok */
    w_uint(&b4, 2, 13);
    e = w_envelope(1, 1, 61, &b4);
    EXPECT_PROTO_W(e, NULL, "admin_reply.code: 13 with ok true");
    pbw b5 = {0};
    w_uint(&b5, 2, 77); /* no such code */
    e = w_envelope(1, 1, 61, &b5);
    EXPECT_PROTO_W(e, NULL, "admin_reply.code");
    static const uint8_t cut[] = {0x08, 0x01, 0x10, 0x03, 0xe2, 0x03,
                                  0x06, 0x08, 0x06, 0x12, 0x05, 'a'};
    EXPECT_PROTO(cut, sizeof cut, NULL, "not a valid protobuf");
}

int main(void) {
    RUN(names_and_limits);
    RUN(admin_messages);
    RUN(wire_error_codes);
    RUN(tensor_bytes);
    RUN(round_trip_hello);
    RUN(round_trip_welcome);
    RUN(base_fields);
    RUN(delta_fields);
    RUN(round_trip_round_start);
    RUN(round_trip_chunk);
    RUN(round_trip_update);
    RUN(round_trip_small_bodies);
    RUN(round_trip_defaults);
    RUN(exact_bytes);
    RUN(decode_garbage);
    RUN(decode_truncated);
    RUN(decode_envelope_limits);
    RUN(decode_version_and_body);
    RUN(decode_digests_and_ids);
    RUN(decode_round_start_checks);
    RUN(decode_size_overflow);
    RUN(decode_other_bodies);
    RUN(decode_memory_budget);
    RUN(encode_refuses);
    RUN(fail_nth_allocation);
    RUN(round_trip_secagg);
    RUN(decode_secagg_checks);
    RUN(decoded_owns_until_free);
    RUN(built_borrows);
    RUN(copy_owns);
    RUN(round_trip_compress);
    return test_report();
}
