/* The secure-aggregation round protocol (see secagg.h): parameter checks, the neighbour
 * graph, message encoding and strict decoding, and the client and server state machines.
 * All cryptography is in secagg_crypto.c; this file never includes OpenSSL. Nothing here
 * does I/O or keeps an individual unmasked update: the server adds each masked input to
 * its running sum and forgets it. */
#include "privacy/secagg.h"

#include "core/alloc.h"
#include "core/endian.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERSION     1
#define PLAIN_LEN   (2 * FED_SA_SHARE_BYTES)  /* an envelope's plaintext */
#define ENV_ENTRY   (4 + FED_SA_ENVELOPE_LEN) /* SHARES / DELIVERY entry */
#define REPLY_ENTRY (8 + FED_SA_SHARE_BYTES)  /* UNMASK_REPLY entry */
#define KEY_ENTRY   (4 + FED_SA_KEYS_LEN + 4) /* NEIGHBOURS entry without its signature */
#define NO_INDEX    SIZE_MAX                  /* a field that is not in a list */
#define KIND_SEED   0                         /* UNMASK_REPLY: share of b */
#define KIND_KEY    1                         /* UNMASK_REPLY: share of s.secret */

static const char signed_label[] = "fedtune/secagg/keys/v1";
static const char graph_label[] = "fedtune/sa-graph"; /* 16 bytes: the shuffle's IV */

_Static_assert(sizeof signed_label - 1 + 8 + 4 + FED_SA_KEYS_LEN == FED_SA_SIGNED_LEN,
               "signed block size");
_Static_assert(sizeof graph_label - 1 == FED_SA_IV_LEN, "graph IV is one block");
_Static_assert(FED_SA_KEYS_LEN == 2 * FED_SA_KEY_LEN, "key block is c_pub || s_pub");

static const char *const msg_names[] = {"?",        "ADVERTISE", "NEIGHBOURS",     "SHARES",
                                        "DELIVERY", "MASKED",    "UNMASK_REQUEST", "UNMASK_REPLY"};

/* ---- Little helpers ----------------------------------------------------------------- */

static uint8_t *put_bytes(uint8_t *p, const void *src, size_t n) {
    if (n > 0) memcpy(p, src, n);
    return p + n;
}

/* The message header (layout in secagg.h); returns the position after it. */
static uint8_t *put_header(uint8_t *p, int type, uint32_t client, uint64_t round) {
    p[0] = (uint8_t)type;
    p[1] = VERSION;
    p[2] = 0;
    p[3] = 0;
    return fed_store_le64(fed_store_le32(p + 4, client), round);
}

/* Index of id in the ascending row[0..k), or -1. */
static long find(const uint32_t *row, uint32_t k, uint32_t id) {
    uint32_t lo = 0, hi = k;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (row[mid] == id) return (long)mid;
        if (row[mid] < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return -1;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* ---- Strict reading of messages ----------------------------------------------------- */

/* A cursor over one incoming message; errors name the client and the message. */
typedef struct reader {
    const uint8_t *p; /* the message */
    size_t len;       /* its length */
    size_t at;        /* bytes consumed */
    uint32_t client;  /* the client the message is from or for */
    int type;         /* FED_SA_MSG_* */
} reader;

static reader reader_of(const uint8_t *msg, size_t len, uint32_t client, int type) {
    static const uint8_t empty[1] = {0}; /* a NULL message reads as an empty one */
    reader r = {msg != NULL ? msg : empty, msg != NULL ? len : 0, 0, client, type};
    return r;
}

/* Always FED_EFORMAT (returned as a constant so static analysis sees it). */
static fed_err truncated(const reader *r, const char *field, size_t idx) {
    if (idx == NO_INDEX) {
        (void)fed_errorf(FED_EFORMAT, "client %u: %s.%s: truncated (message has %zu bytes)",
                         (unsigned)r->client, msg_names[r->type], field, r->len);
    } else {
        (void)fed_errorf(FED_EFORMAT,
                         "client %u: %s.entries[%zu].%s: truncated (message has %zu bytes)",
                         (unsigned)r->client, msg_names[r->type], idx, field, r->len);
    }
    return FED_EFORMAT;
}

/* The next n bytes, or NULL when fewer remain. */
static const uint8_t *take(reader *r, size_t n) {
    if (r->len - r->at < n) return NULL;
    const uint8_t *p = r->p + r->at;
    r->at += n;
    return p;
}

static fed_err rd_bytes(reader *r, const char *field, size_t idx, const uint8_t **out, size_t n) {
    const uint8_t *p = take(r, n);
    if (p == NULL) return truncated(r, field, idx);
    *out = p;
    return FED_OK;
}

static fed_err rd_u32(reader *r, const char *field, size_t idx, uint32_t *v) {
    const uint8_t *p = take(r, 4);
    if (p == NULL) return truncated(r, field, idx);
    *v = fed_load_le32(p);
    return FED_OK;
}

static fed_err rd_end(const reader *r) {
    if (r->at == r->len) return FED_OK;
    return fed_errorf(FED_EFORMAT, "client %u: %s: %zu trailing bytes after %zu (oversized)",
                      (unsigned)r->client, msg_names[r->type], r->len - r->at, r->at);
}

/* A count field, checked against the most the recipient can accept. */
static fed_err rd_count(reader *r, const char *field, uint32_t most, uint32_t *v) {
    fed_err err = rd_u32(r, field, NO_INDEX, v);
    if (err == FED_OK && *v > most)
        err = fed_errorf(FED_EFORMAT, "client %u: %s.%s: %u exceeds the limit %u",
                         (unsigned)r->client, msg_names[r->type], field, (unsigned)*v,
                         (unsigned)most);
    return err;
}

static fed_err rd_header(reader *r, uint64_t round) {
    const uint8_t *h = take(r, FED_SA_HEADER_LEN);
    if (h == NULL) return truncated(r, "header", NO_INDEX);
    const char *name = msg_names[r->type];
    unsigned who = (unsigned)r->client;
    if (h[0] != r->type)
        return fed_errorf(FED_EFORMAT, "client %u: %s.type: %u, expected %d", who, name,
                          (unsigned)h[0], r->type);
    if (h[1] != VERSION)
        return fed_errorf(FED_EFORMAT, "client %u: %s.version: %u, expected %d", who, name,
                          (unsigned)h[1], VERSION);
    if (h[2] != 0 || h[3] != 0)
        return fed_errorf(FED_EFORMAT, "client %u: %s.reserved: not zero", who, name);
    if (fed_load_le32(h + 4) != r->client)
        return fed_errorf(FED_EPROTO, "client %u: %s.client: names client %u", who, name,
                          (unsigned)fed_load_le32(h + 4));
    if (fed_load_le64(h + 8) != round)
        return fed_errorf(FED_EPROTO, "client %u: %s.round: %llu, this round is %llu", who, name,
                          (unsigned long long)fed_load_le64(h + 8), (unsigned long long)round);
    return FED_OK;
}

/* ---- Parameters and the graph ------------------------------------------------------- */

void fed_sa_params_default(fed_sa_params *p, uint32_t n, size_t len) {
    memset(p, 0, sizeof *p);
    p->n = n;
    p->degree = n > 1 && n - 1 < FED_SA_DEFAULT_DEGREE ? n - 1 : FED_SA_DEFAULT_DEGREE;
    p->threshold = (fed_sa_degree(p) + 1) / 2 + 1;
    p->clip_range = FED_SA_DEFAULT_CLIP;
    p->quant_range = FED_SA_DEFAULT_QUANT;
    p->len = len;
}

uint32_t fed_sa_degree(const fed_sa_params *p) {
    if (p->n < 2) return 0;
    uint32_t k = p->degree < p->n - 1 ? p->degree : p->n - 1;
    if (k % 2 == 1 && p->n % 2 == 1) k++;
    return k;
}

fed_err fed_sa_params_check(const fed_sa_params *p) {
    if (p == NULL) return fed_errorf(FED_EINVAL, "params: NULL");
    if (p->n < 2 || p->n > FED_SA_CLIENTS_MAX)
        return fed_errorf(FED_EINVAL, "n: %u, expected 2..%d", (unsigned)p->n, FED_SA_CLIENTS_MAX);
    if (p->degree < 1) return fed_errorf(FED_EINVAL, "degree: 0, expected >= 1");
    uint32_t h = fed_sa_degree(p) + 1; /* holders: the neighbours and the client */
    if (p->threshold < 1 || p->threshold > h)
        return fed_errorf(FED_EINVAL, "threshold: %u, expected 1..%u (degree %u + 1 holders)",
                          (unsigned)p->threshold, (unsigned)h, (unsigned)(h - 1));
    if (2 * (uint64_t)p->threshold <= h)
        return fed_errorf(FED_EINVAL,
                          "threshold: %u must exceed half of the %u share holders (degree %u "
                          "+ the client itself)",
                          (unsigned)p->threshold, (unsigned)h, (unsigned)(h - 1));
    if (!isfinite(p->clip_range) || p->clip_range <= 0)
        return fed_errorf(FED_EINVAL, "clip_range: %g, expected finite and > 0", p->clip_range);
    if (p->quant_range == 0) return fed_errorf(FED_EINVAL, "quant_range: 0, expected >= 1");
    if ((uint64_t)p->n * p->quant_range > UINT32_MAX)
        return fed_errorf(FED_EINVAL,
                          "quant_range: %u for n = %u clients: sums reach %llu and wrap "
                          "modulo 2^32",
                          (unsigned)p->quant_range, (unsigned)p->n,
                          (unsigned long long)p->n * p->quant_range);
    if (p->len < 1 || p->len > FED_SA_LEN_MAX)
        return fed_errorf(FED_EINVAL, "len: %zu, expected 1..%u", p->len, (unsigned)FED_SA_LEN_MAX);
    return FED_OK;
}

/* order[0..n): the ring, a Fisher-Yates shuffle of 0..n-1 driven by AES-256-CTR under the
 * graph seed (64-bit draws reduced modulo i + 1: bias below 2^-53 for n <= 1024). */
static fed_err ring_order(uint32_t *order, const fed_sa_params *p) {
    uint32_t n = p->n;
    uint8_t *ks = fed_mallocarray(n, 8);
    if (ks == NULL) return FED_ENOMEM;
    fed_err err = fed_sa_keystream(ks, (size_t)n * 8, p->graph_seed, (const uint8_t *)graph_label);
    for (uint32_t i = 0; i < n; i++) order[i] = i;
    for (uint32_t i = n - 1; err == FED_OK && i > 0; i--) {
        uint32_t j = (uint32_t)(fed_load_le64(ks + 8 * (size_t)i) % ((uint64_t)i + 1));
        uint32_t tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    fed_free(ks);
    return err;
}

/* row[0..k): the neighbours of the client at ring position at, ascending. */
static void ring_row(uint32_t *row, const uint32_t *order, uint32_t n, uint32_t k, uint32_t at) {
    uint32_t m = 0;
    for (uint32_t d = 1; d <= k / 2; d++) {
        row[m++] = order[(at + d) % n];
        row[m++] = order[(at + n - d) % n];
    }
    if (k % 2 == 1) row[m++] = order[(at + n / 2) % n];
    qsort(row, m, sizeof *row, cmp_u32);
}

fed_err fed_sa_neighbours(uint32_t *out, const fed_sa_params *p, uint32_t id) {
    fed_err err = fed_sa_params_check(p);
    if (err != FED_OK) return err;
    if (id >= p->n) return fed_errorf(FED_EINVAL, "id: %u, expected < n = %u", id, p->n);
    uint32_t *order = fed_mallocarray(p->n, sizeof *order);
    if (order == NULL) return FED_ENOMEM;
    err = ring_order(order, p);
    for (uint32_t at = 0; err == FED_OK && at < p->n; at++)
        if (order[at] == id) ring_row(out, order, p->n, fed_sa_degree(p), at);
    fed_free(order);
    return err;
}

size_t fed_sa_msg_max(const fed_sa_params *p, int type) {
    size_t k = fed_sa_degree(p), h = FED_SA_HEADER_LEN;
    switch (type) {
    case FED_SA_MSG_ADVERTISE:
        return h + FED_SA_KEYS_LEN + 4 + FED_SA_SIG_MAX;
    case FED_SA_MSG_NEIGHBOURS:
        return h + 4 + k * (KEY_ENTRY + FED_SA_SIG_MAX);
    case FED_SA_MSG_SHARES:
    case FED_SA_MSG_DELIVERY:
        return h + 4 + k * ENV_ENTRY;
    case FED_SA_MSG_MASKED:
        return h + 4 + 4 * p->len;
    case FED_SA_MSG_UNMASK_REQUEST:
        return h + 8 + 4 * k;
    case FED_SA_MSG_UNMASK_REPLY:
        return h + 4 + (k + 1) * REPLY_ENTRY;
    default:
        return 0;
    }
}

void fed_sa_signed_block(uint8_t out[FED_SA_SIGNED_LEN], uint64_t round, uint32_t id,
                         const uint8_t keys[FED_SA_KEYS_LEN]) {
    uint8_t *w = put_bytes(out, signed_label, sizeof signed_label - 1);
    put_bytes(fed_store_le32(fed_store_le64(w, round), id), keys, FED_SA_KEYS_LEN);
}

/* Runs verify on client id's key block; FED_EAUTH with the callback's detail on refusal. */
static fed_err check_signature(fed_sa_verify_fn verify, void *ctx, uint64_t round, uint32_t id,
                               const uint8_t *keys, const uint8_t *sig, uint32_t sig_len,
                               const char *where) {
    if (verify == NULL) return FED_OK;
    uint8_t block[FED_SA_SIGNED_LEN];
    fed_sa_signed_block(block, round, id, keys);
    fed_errclear();
    if (verify(ctx, id, block, sizeof block, sig, sig_len) == FED_OK) return FED_OK;
    return fed_errprefix(FED_EAUTH, "%s: signature of client %u's keys refused", where,
                         (unsigned)id);
}

/* ---- Client ------------------------------------------------------------------------- */

enum { C_NEW, C_ADVERTISED, C_SHARED, C_MASKED, C_DONE };

struct fed_sa_client {
    fed_sa_params p;     /* the round */
    uint32_t id;         /* this client */
    uint32_t k;          /* graph degree */
    int state;           /* C_*: the next step allowed */
    fed_sa_keypair c;    /* share-encryption key pair */
    fed_sa_keypair s;    /* mask key pair; its secret is Shamir-shared */
    uint8_t b[32];       /* self-mask seed; Shamir-shared */
    fed_sa_share own[2]; /* this client's own shares of b and s.secret */
    uint32_t *nb;        /* (k) graph neighbours, ascending */
    uint8_t *peer_keys;  /* (k, 64) neighbour j's c_pub || s_pub, if it advertised */
    uint8_t *share_key;  /* (k, 32) sealing key with neighbour j, if it advertised */
    uint8_t *advertised; /* (k) neighbour j was in NEIGHBOURS */
    uint8_t *holding;    /* (k) neighbour j's shares were delivered (it is in U2) */
    fed_sa_share *held;  /* (k, 2) neighbour j's shares of its b and s.secret */
};

/* Wipes every secret the client holds (keys, seed, shares, derived keys). */
static void client_wipe(fed_sa_client *c) {
    size_t k = c->k;
    fed_sa_wipe(&c->c, sizeof c->c);
    fed_sa_wipe(&c->s, sizeof c->s);
    fed_sa_wipe(c->b, sizeof c->b);
    fed_sa_wipe(c->own, sizeof c->own);
    if (c->share_key != NULL) fed_sa_wipe(c->share_key, k * FED_SA_KEY_LEN);
    if (c->held != NULL) fed_sa_wipe(c->held, 2 * k * sizeof *c->held);
}

void fed_sa_client_destroy(fed_sa_client **cp) {
    if (cp == NULL || *cp == NULL) return;
    fed_sa_client *c = *cp;
    client_wipe(c);
    fed_free(c->nb);
    fed_free(c->peer_keys);
    fed_free(c->share_key);
    fed_free(c->advertised);
    fed_free(c->holding);
    fed_free(c->held);
    fed_sa_wipe(c, sizeof *c);
    fed_free(c);
    *cp = NULL;
}

fed_err fed_sa_client_new(fed_sa_client **out, const fed_sa_params *p, uint32_t id) {
    *out = NULL;
    fed_err err = fed_sa_params_check(p);
    if (err != FED_OK) return err;
    if (id >= p->n) return fed_errorf(FED_EINVAL, "id: %u, expected < n = %u", id, p->n);
    fed_sa_client *c = fed_calloc(1, sizeof *c);
    if (c == NULL) return FED_ENOMEM;
    c->p = *p;
    c->id = id;
    c->k = fed_sa_degree(p);
    c->state = C_NEW;
    c->nb = fed_mallocarray(c->k, sizeof *c->nb);
    c->peer_keys = fed_calloc(c->k, FED_SA_KEYS_LEN);
    c->share_key = fed_calloc(c->k, FED_SA_KEY_LEN);
    c->advertised = fed_calloc(c->k, 1);
    c->holding = fed_calloc(c->k, 1);
    c->held = fed_calloc(2 * (size_t)c->k, sizeof *c->held);
    if (c->nb == NULL || c->peer_keys == NULL || c->share_key == NULL || c->advertised == NULL ||
        c->holding == NULL || c->held == NULL) {
        err = FED_ENOMEM;
        goto fail;
    }
    err = fed_sa_neighbours(c->nb, p, id);
    if (err == FED_OK) err = fed_sa_keypair_new(&c->c);
    if (err == FED_OK) err = fed_sa_keypair_new(&c->s);
    if (err == FED_OK) err = fed_sa_random_bytes(c->b, sizeof c->b);
    if (err != FED_OK) goto fail;
    *out = c;
    return FED_OK;
fail:
    fed_sa_client_destroy(&c);
    return err;
}

static fed_err wrong_step(const fed_sa_client *c, const char *what) {
    static const char *const expected[] = {"ADVERTISE", "SHARES", "MASKED", "UNMASK_REPLY",
                                           "nothing (its unmasking request was answered)"};
    return fed_errorf(FED_EPROTO, "client %u: asked for %s, but its next step is %s",
                      (unsigned)c->id, what, expected[c->state]);
}

void fed_sa_client_keys_to_sign(const fed_sa_client *c, uint8_t out[FED_SA_SIGNED_LEN]) {
    uint8_t keys[FED_SA_KEYS_LEN];
    memcpy(keys, c->c.pub, FED_SA_KEY_LEN);
    memcpy(keys + FED_SA_KEY_LEN, c->s.pub, FED_SA_KEY_LEN);
    fed_sa_signed_block(out, c->p.round, c->id, keys);
}

fed_err fed_sa_client_advertise(fed_sa_client *c, const uint8_t *sig, size_t sig_len, uint8_t **out,
                                size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (c->state != C_NEW) return wrong_step(c, "ADVERTISE");
    if (sig_len > FED_SA_SIG_MAX || (sig == NULL && sig_len > 0))
        return fed_errorf(FED_EINVAL, "client %u: sig_len: %zu, expected <= %d with a signature",
                          (unsigned)c->id, sig_len, FED_SA_SIG_MAX);
    size_t n = FED_SA_HEADER_LEN + FED_SA_KEYS_LEN + 4 + sig_len;
    uint8_t *m = fed_malloc(n);
    if (m == NULL) return FED_ENOMEM;
    uint8_t *w = put_header(m, FED_SA_MSG_ADVERTISE, c->id, c->p.round);
    w = put_bytes(w, c->c.pub, FED_SA_KEY_LEN);
    w = put_bytes(w, c->s.pub, FED_SA_KEY_LEN);
    put_bytes(fed_store_le32(w, (uint32_t)sig_len), sig, sig_len);
    c->state = C_ADVERTISED;
    *out = m;
    *out_len = n;
    return FED_OK;
}

/* Reads NEIGHBOURS into idx[0..*count) (positions in c->nb) and the key and signature
 * pointers; checks ids, order and signatures. */
static fed_err read_neighbours(fed_sa_client *c, const uint8_t *msg, size_t len, uint32_t *idx,
                               const uint8_t **keys, uint32_t *count, fed_sa_verify_fn verify,
                               void *verify_ctx) {
    reader r = reader_of(msg, len, c->id, FED_SA_MSG_NEIGHBOURS);
    fed_err err = rd_header(&r, c->p.round);
    if (err == FED_OK) err = rd_count(&r, "count", c->k, count);
    for (uint32_t i = 0; err == FED_OK && i < *count; i++) {
        uint32_t id = 0, sig_len = 0;
        const uint8_t *sig = NULL;
        err = rd_u32(&r, "id", i, &id);
        if (err == FED_OK) err = rd_bytes(&r, "keys", i, &keys[i], FED_SA_KEYS_LEN);
        if (err == FED_OK) err = rd_u32(&r, "sig_len", i, &sig_len);
        if (err == FED_OK && sig_len > FED_SA_SIG_MAX)
            err = fed_errorf(FED_EFORMAT, "client %u: NEIGHBOURS.entries[%u].sig_len: %u > %d",
                             (unsigned)c->id, (unsigned)i, (unsigned)sig_len, FED_SA_SIG_MAX);
        if (err == FED_OK) err = rd_bytes(&r, "sig", i, &sig, sig_len);
        if (err != FED_OK) break;
        long j = find(c->nb, c->k, id);
        if (j < 0 || (i > 0 && (uint32_t)j <= idx[i - 1]))
            return fed_errorf(FED_EPROTO,
                              "client %u: NEIGHBOURS.entries[%u].id: %u is not a neighbour, "
                              "a duplicate or out of order",
                              (unsigned)c->id, (unsigned)i, (unsigned)id);
        idx[i] = (uint32_t)j;
        char where[64];
        snprintf(where, sizeof where, "client %u: NEIGHBOURS.entries[%u]", (unsigned)c->id,
                 (unsigned)i);
        err = check_signature(verify, verify_ctx, c->p.round, id, keys[i], sig, sig_len, where);
    }
    if (err == FED_OK) err = rd_end(&r);
    return err;
}

fed_err fed_sa_client_share(fed_sa_client *c, const uint8_t *msg, size_t len,
                            fed_sa_verify_fn verify, void *verify_ctx, uint8_t **out,
                            size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (c->state != C_ADVERTISED) return wrong_step(c, "SHARES");
    const size_t k = c->k;
    uint32_t count = 0, *idx = fed_mallocarray(k + 1, sizeof *idx);
    uint32_t *xs = fed_mallocarray(k + 1, sizeof *xs); /* holders' x: itself, neighbours */
    const uint8_t **keys = fed_calloc(k + 1, sizeof *keys);
    fed_sa_share *sh = fed_calloc(2 * (k + 1), sizeof *sh); /* b shares, then s shares */
    uint8_t *m = NULL, plain[PLAIN_LEN];
    size_t n = 0;
    fed_err err = FED_OK;
    if (idx == NULL || xs == NULL || keys == NULL || sh == NULL) {
        err = FED_ENOMEM;
        goto fail;
    }
    err = read_neighbours(c, msg, len, idx, keys, &count, verify, verify_ctx);
    if (err != FED_OK) goto fail;
    if (count + 1 < c->p.threshold) {
        err = fed_errorf(FED_EAGAIN,
                         "client %u: only %u of its %zu neighbours advertised keys; threshold "
                         "%u needs %u",
                         (unsigned)c->id, (unsigned)count, k, (unsigned)c->p.threshold,
                         (unsigned)c->p.threshold - 1);
        goto fail;
    }
    memset(c->advertised, 0, k);
    for (uint32_t i = 0; err == FED_OK && i < count; i++) {
        uint32_t j = idx[i], v = c->nb[j];
        fed_sa_context ctx = {c->p.round, c->id, v, "share"};
        memcpy(c->peer_keys + (size_t)j * FED_SA_KEYS_LEN, keys[i], FED_SA_KEYS_LEN);
        err = fed_sa_agree(c->share_key + (size_t)j * FED_SA_KEY_LEN, c->c.secret, keys[i], &ctx);
        if (err != FED_OK)
            err = fed_errprefix(err, "client %u: NEIGHBOURS.entries[%u].keys (client %u)",
                                (unsigned)c->id, (unsigned)i, (unsigned)v);
        c->advertised[j] = 1;
    }
    if (err != FED_OK) goto fail;
    xs[0] = c->id + 1;
    for (uint32_t i = 0; i < count; i++) xs[i + 1] = c->nb[idx[i]] + 1;
    err = fed_sa_shamir_split(sh, c->b, c->p.threshold, count + 1, xs);
    if (err == FED_OK)
        err = fed_sa_shamir_split(sh + k + 1, c->s.secret, c->p.threshold, count + 1, xs);
    if (err != FED_OK) goto fail;
    n = FED_SA_HEADER_LEN + 4 + (size_t)count * ENV_ENTRY;
    m = fed_malloc(n);
    if (m == NULL) {
        err = FED_ENOMEM;
        goto fail;
    }
    uint8_t *w = fed_store_le32(put_header(m, FED_SA_MSG_SHARES, c->id, c->p.round), count);
    for (uint32_t i = 0; err == FED_OK && i < count; i++) {
        uint32_t j = idx[i], v = c->nb[j];
        fed_sa_share_encode(plain, &sh[i + 1]);
        fed_sa_share_encode(plain + FED_SA_SHARE_BYTES, &sh[k + 1 + i + 1]);
        w = fed_store_le32(w, v);
        err = fed_sa_seal(w, FED_SA_ENVELOPE_LEN, c->share_key + (size_t)j * FED_SA_KEY_LEN, c->id,
                          v, c->p.round, plain, sizeof plain);
        w += FED_SA_ENVELOPE_LEN;
    }
    if (err != FED_OK) goto fail;
    c->own[0] = sh[0];
    c->own[1] = sh[k + 1];
    c->state = C_SHARED;
    *out = m;
    *out_len = n;
    m = NULL;
fail:
    if (err != FED_OK) {
        memset(c->advertised, 0, k);
        fed_sa_wipe(c->share_key, k * FED_SA_KEY_LEN);
    }
    fed_sa_wipe(plain, sizeof plain);
    if (sh != NULL) fed_sa_wipe(sh, 2 * (k + 1) * sizeof *sh);
    fed_free(sh);
    fed_free(m);
    fed_free(keys);
    fed_free(xs);
    fed_free(idx);
    return err;
}

/* Opens DELIVERY into c->held / c->holding (all or nothing); *count = envelopes. */
static fed_err read_delivery(fed_sa_client *c, const uint8_t *msg, size_t len, uint32_t *count) {
    const size_t k = c->k;
    uint8_t *holding = fed_calloc(k, 1), plain[PLAIN_LEN];
    fed_sa_share *held = fed_calloc(2 * k, sizeof *held);
    fed_err err = holding != NULL && held != NULL ? FED_OK : FED_ENOMEM;
    reader r = reader_of(msg, len, c->id, FED_SA_MSG_DELIVERY);
    if (err == FED_OK) err = rd_header(&r, c->p.round);
    if (err == FED_OK) err = rd_count(&r, "count", c->k, count);
    long last = -1;
    for (uint32_t i = 0; err == FED_OK && i < *count; i++) {
        uint32_t v = 0;
        const uint8_t *env = NULL;
        err = rd_u32(&r, "sender", i, &v);
        if (err == FED_OK) err = rd_bytes(&r, "envelope", i, &env, FED_SA_ENVELOPE_LEN);
        if (err != FED_OK) break;
        long j = find(c->nb, c->k, v);
        if (j < 0 || j <= last || !c->advertised[j]) {
            err = fed_errorf(FED_EPROTO,
                             "client %u: DELIVERY.entries[%u].sender: %u is not a neighbour "
                             "that advertised, a duplicate or out of order",
                             (unsigned)c->id, (unsigned)i, (unsigned)v);
            break;
        }
        last = j;
        err = fed_sa_open(plain, sizeof plain, c->share_key + (size_t)j * FED_SA_KEY_LEN, v, c->id,
                          c->p.round, env, FED_SA_ENVELOPE_LEN);
        if (err == FED_OK) err = fed_sa_share_decode(&held[2 * j], plain);
        if (err == FED_OK) err = fed_sa_share_decode(&held[2 * j + 1], plain + FED_SA_SHARE_BYTES);
        if (err == FED_OK && (held[2 * j].x != c->id + 1 || held[2 * j + 1].x != c->id + 1))
            err = fed_errorf(FED_EFORMAT, "share x %u, expected %u", (unsigned)held[2 * j].x,
                             (unsigned)c->id + 1);
        if (err != FED_OK) {
            err = fed_errprefix(err, "client %u: DELIVERY.entries[%u].envelope (from client %u)",
                                (unsigned)c->id, (unsigned)i, (unsigned)v);
            break;
        }
        holding[j] = 1;
    }
    if (err == FED_OK) err = rd_end(&r);
    if (err == FED_OK) {
        memcpy(c->holding, holding, k);
        memcpy(c->held, held, 2 * k * sizeof *held);
    }
    fed_sa_wipe(plain, sizeof plain);
    if (held != NULL) fed_sa_wipe(held, 2 * k * sizeof *held);
    fed_free(held);
    fed_free(holding);
    return err;
}

fed_err fed_sa_client_mask(fed_sa_client *c, const uint8_t *msg, size_t len, const float *x,
                           size_t x_len, const uint8_t *rounding_key, uint8_t **out,
                           size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (c->state != C_SHARED) return wrong_step(c, "MASKED");
    if (x_len != c->p.len)
        return fed_errorf(FED_ESHAPE, "client %u: x has %zu values, the round expects %zu",
                          (unsigned)c->id, x_len, c->p.len);
    uint32_t count = 0;
    fed_err err = read_delivery(c, msg, len, &count);
    if (err != FED_OK) return err;
    if (count + 1 < c->p.threshold) {
        memset(c->holding, 0, c->k);
        return fed_errorf(FED_EAGAIN,
                          "client %u: only %u of its neighbours shared; threshold %u needs %u",
                          (unsigned)c->id, (unsigned)count, (unsigned)c->p.threshold,
                          (unsigned)c->p.threshold - 1);
    }
    const size_t n = c->p.len, bytes = FED_SA_HEADER_LEN + 4 + 4 * n;
    uint32_t *y = fed_mallocarray(n, sizeof *y);
    uint8_t *m = fed_malloc(bytes), key[FED_SA_KEY_LEN];
    if (y == NULL || m == NULL) {
        err = FED_ENOMEM;
        goto fail;
    }
    err = fed_sa_quantize(y, x, n, c->p.clip_range, c->p.quant_range, rounding_key);
    if (err != FED_OK) {
        err = fed_errprefix(err, "client %u", (unsigned)c->id);
        goto fail;
    }
    err = fed_sa_mask_add(y, n, c->b, c->p.round, +1);
    for (uint32_t j = 0; err == FED_OK && j < c->k; j++) {
        if (!c->holding[j]) continue;
        uint32_t v = c->nb[j];
        fed_sa_context ctx = {c->p.round, c->id, v, "mask"};
        err = fed_sa_agree(key, c->s.secret,
                           c->peer_keys + (size_t)j * FED_SA_KEYS_LEN + FED_SA_KEY_LEN, &ctx);
        if (err == FED_OK) err = fed_sa_mask_add(y, n, key, c->p.round, c->id < v ? +1 : -1);
        if (err != FED_OK) err = fed_errprefix(err, "client %u: mask with %u", c->id, v);
    }
    if (err != FED_OK) goto fail;
    uint8_t *w = fed_store_le32(put_header(m, FED_SA_MSG_MASKED, c->id, c->p.round), (uint32_t)n);
    for (size_t i = 0; i < n; i++) w = fed_store_le32(w, y[i]);
    c->state = C_MASKED;
    *out = m;
    *out_len = bytes;
    m = NULL;
fail:
    if (err != FED_OK) memset(c->holding, 0, c->k);
    fed_sa_wipe(key, sizeof key);
    if (y != NULL) fed_sa_wipe(y, n * sizeof *y);
    fed_free(y);
    fed_free(m);
    return err;
}

fed_err fed_sa_client_unmask(fed_sa_client *c, const uint8_t *msg, size_t len, uint8_t **out,
                             size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (c->state != C_MASKED) return wrong_step(c, "UNMASK_REPLY");
    const uint32_t k = c->k;
    uint32_t n_alive = 0, n_dropped = 0;
    uint32_t *ids = fed_mallocarray(k, sizeof *ids);
    uint8_t *kind = fed_calloc(k, 1); /* 0 not asked, 1 alive (b), 2 dropped (s) */
    uint8_t *m = NULL, wire[FED_SA_SHARE_BYTES];
    size_t n = 0;
    fed_err err = ids != NULL && kind != NULL ? FED_OK : FED_ENOMEM;
    reader r = reader_of(msg, len, c->id, FED_SA_MSG_UNMASK_REQUEST);
    if (err == FED_OK) err = rd_header(&r, c->p.round);
    if (err == FED_OK) err = rd_count(&r, "n_alive", k, &n_alive);
    if (err == FED_OK) err = rd_count(&r, "n_dropped", k, &n_dropped);
    if (err == FED_OK && n_alive + n_dropped > k)
        err = fed_errorf(FED_EFORMAT,
                         "client %u: UNMASK_REQUEST.n_dropped: %u + %u exceed the %u "
                         "neighbours",
                         (unsigned)c->id, (unsigned)n_alive, (unsigned)n_dropped, (unsigned)k);
    for (uint32_t i = 0; err == FED_OK && i < n_alive + n_dropped; i++) {
        bool alive = i < n_alive;
        const char *list = alive ? "alive" : "dropped";
        uint32_t v = 0;
        err = rd_u32(&r, list, i, &v);
        if (err != FED_OK) break;
        long j = find(c->nb, k, v);
        if (j < 0 || !c->holding[j]) {
            err = fed_errorf(FED_EPROTO,
                             "client %u: UNMASK_REQUEST.%s: client %u is not a neighbour whose "
                             "shares it holds",
                             (unsigned)c->id, list, (unsigned)v);
        } else if (kind[j] != 0 && (kind[j] == 1) != alive) {
            err = fed_errorf(FED_EPROTO,
                             "client %u: UNMASK_REQUEST names neighbour %u both alive and "
                             "dropped: refusing to reveal both its self-mask seed and its mask "
                             "key",
                             (unsigned)c->id, (unsigned)v);
        } else if (i != 0 && i != n_alive && v <= ids[i - 1]) {
            err = fed_errorf(FED_EPROTO,
                             "client %u: UNMASK_REQUEST.%s: client %u duplicate or out of order",
                             (unsigned)c->id, list, (unsigned)v);
        } else {
            kind[j] = alive ? 1 : 2;
            ids[i] = v;
        }
    }
    if (err == FED_OK) err = rd_end(&r);
    if (err != FED_OK) goto fail;
    uint32_t count = 1 + n_alive + n_dropped;
    n = FED_SA_HEADER_LEN + 4 + (size_t)count * REPLY_ENTRY;
    m = fed_malloc(n);
    if (m == NULL) {
        err = FED_ENOMEM;
        goto fail;
    }
    uint8_t *w = fed_store_le32(put_header(m, FED_SA_MSG_UNMASK_REPLY, c->id, c->p.round), count);
    w = fed_store_le32(fed_store_le32(w, c->id), KIND_SEED);
    fed_sa_share_encode(wire, &c->own[0]);
    w = put_bytes(w, wire, sizeof wire);
    for (uint32_t i = 0; i < n_alive + n_dropped; i++) {
        bool alive = i < n_alive;
        long j = find(c->nb, k, ids[i]);
        w = fed_store_le32(fed_store_le32(w, ids[i]), alive ? KIND_SEED : KIND_KEY);
        fed_sa_share_encode(wire, &c->held[2 * j + (alive ? 0 : 1)]);
        w = put_bytes(w, wire, sizeof wire);
    }
    c->state = C_DONE;
    client_wipe(c); /* the round is over for this client */
    *out = m;
    *out_len = n;
    m = NULL;
fail:
    fed_sa_wipe(wire, sizeof wire);
    fed_free(m);
    fed_free(kind);
    fed_free(ids);
    return err;
}

/* ---- Server ------------------------------------------------------------------------- */

/* Collection phases; a client's level is the number of phases whose message it sent (and
 * was not excluded from): U1 = level >= 1 (advertised), U2 >= 2 (shared), U3 >= 3
 * (masked input: the survivors), U4 >= 4 (answered the unmasking). */
enum { S_KEYS = 1, S_SHARES, S_MASKED, S_UNMASK, S_DONE, S_ABORTED };

struct fed_sa_server {
    fed_sa_params p;     /* the round */
    uint32_t n;          /* participants */
    uint32_t k;          /* graph degree */
    int phase;           /* S_*: which messages are being collected */
    uint32_t *nb;        /* (n, k) neighbours of each client, ascending */
    uint8_t *level;      /* (n) phases completed, see above */
    uint8_t *keys;       /* (n, 64) advertised c_pub || s_pub */
    uint8_t **sig;       /* (n) relayed signatures (NULL when empty) */
    uint32_t *sig_len;   /* (n) their lengths */
    uint8_t *env;        /* (n, k, FED_SA_ENVELOPE_LEN): from client u to its j-th neighbour */
    uint32_t *sum;       /* (len) running sum of masked inputs mod 2^32 */
    fed_sa_share *reply; /* (n, k + 1): responder r's share of its own secret (slot 0) or
                            of its j-th neighbour's (slot j + 1) */
};

void fed_sa_server_destroy(fed_sa_server **sp) {
    if (sp == NULL || *sp == NULL) return;
    fed_sa_server *s = *sp;
    if (s->sig != NULL)
        for (uint32_t u = 0; u < s->n; u++) fed_free(s->sig[u]);
    if (s->reply != NULL) fed_sa_wipe(s->reply, (size_t)s->n * (s->k + 1) * sizeof *s->reply);
    fed_free(s->nb);
    fed_free(s->level);
    fed_free(s->keys);
    fed_free(s->sig);
    fed_free(s->sig_len);
    fed_free(s->env);
    fed_free(s->sum);
    fed_free(s->reply);
    fed_free(s);
    *sp = NULL;
}

fed_err fed_sa_server_new(fed_sa_server **out, const fed_sa_params *p) {
    *out = NULL;
    fed_err err = fed_sa_params_check(p);
    if (err != FED_OK) return err;
    fed_sa_server *s = fed_calloc(1, sizeof *s);
    if (s == NULL) return FED_ENOMEM;
    s->p = *p;
    s->n = p->n;
    s->k = fed_sa_degree(p);
    s->phase = S_KEYS;
    size_t nk = (size_t)s->n * s->k, env_bytes = 0;
    uint32_t *order = fed_mallocarray(s->n, sizeof *order);
    s->nb = fed_mallocarray(nk, sizeof *s->nb);
    s->level = fed_calloc(s->n, 1);
    s->keys = fed_calloc(s->n, FED_SA_KEYS_LEN);
    s->sig = fed_calloc(s->n, sizeof *s->sig);
    s->sig_len = fed_calloc(s->n, sizeof *s->sig_len);
    if (fed_mul_ok(nk, FED_SA_ENVELOPE_LEN, &env_bytes)) s->env = fed_malloc(env_bytes);
    s->sum = fed_calloc(p->len, sizeof *s->sum);
    s->reply = fed_calloc((size_t)s->n * (s->k + 1), sizeof *s->reply);
    if (order == NULL || s->nb == NULL || s->level == NULL || s->keys == NULL || s->sig == NULL ||
        s->sig_len == NULL || s->env == NULL || s->sum == NULL || s->reply == NULL) {
        err = FED_ENOMEM;
        goto fail;
    }
    err = ring_order(order, p);
    if (err != FED_OK) goto fail;
    for (uint32_t at = 0; at < s->n; at++)
        ring_row(s->nb + (size_t)order[at] * s->k, order, s->n, s->k, at);
    fed_free(order);
    *out = s;
    return FED_OK;
fail:
    fed_free(order);
    fed_sa_server_destroy(&s);
    return err;
}

static const uint32_t *row_of(const fed_sa_server *s, uint32_t u) {
    return s->nb + (size_t)u * s->k;
}

bool fed_sa_server_active(const fed_sa_server *s, uint32_t id) {
    if (s == NULL || id >= s->n || s->phase == S_ABORTED) return false;
    int done = s->phase == S_DONE ? S_UNMASK : s->phase - 1; /* phases that have ended */
    return s->level[id] >= done;
}

static fed_err aborted(const fed_sa_server *s) {
    (void)s;
    return fed_errorf(FED_EAGAIN, "secure aggregation round aborted earlier");
}

/* Checks that a message of phase `phase` from client id is expected now. */
static fed_err expect(const fed_sa_server *s, uint32_t id, int phase, const char *what) {
    if (s->phase == S_ABORTED) return aborted(s);
    if (id >= s->n)
        return fed_errorf(FED_EINVAL, "id: %u, expected < n = %u", (unsigned)id, (unsigned)s->n);
    if (s->phase != phase)
        return fed_errorf(FED_EPROTO, "client %u: %s outside its phase (late or early)",
                          (unsigned)id, what);
    if (s->level[id] >= phase)
        return fed_errorf(FED_EPROTO, "client %u: %s already received", (unsigned)id, what);
    if (s->level[id] < phase - 1)
        return fed_errorf(FED_EPROTO, "client %u: %s from a client no longer in the round",
                          (unsigned)id, what);
    return FED_OK;
}

/* Neighbours of u at level >= lv. */
static uint32_t count_at(const fed_sa_server *s, uint32_t u, uint8_t lv) {
    const uint32_t *row = row_of(s, u);
    uint32_t m = 0;
    for (uint32_t j = 0; j < s->k; j++) m += s->level[row[j]] >= lv;
    return m;
}

/* Ends the collection of phase lv (1 keys, 2 shares): excludes, until none is left, every
 * client at level lv whose holders at level lv (itself included) are fewer than t; aborts
 * when fewer than t clients remain. */
static fed_err end_collection(fed_sa_server *s, uint8_t lv) {
    bool changed = true;
    while (changed) {
        changed = false;
        for (uint32_t u = 0; u < s->n; u++) {
            if (s->level[u] >= lv && count_at(s, u, lv) + 1 < s->p.threshold) {
                s->level[u] = (uint8_t)(lv - 1);
                changed = true;
            }
        }
    }
    uint32_t in = 0;
    for (uint32_t u = 0; u < s->n; u++) in += s->level[u] >= lv;
    s->phase = lv + 1;
    if (in < s->p.threshold) {
        s->phase = S_ABORTED;
        return fed_errorf(FED_EAGAIN, "only %u clients %s; threshold %u", (unsigned)in,
                          lv == 1 ? "advertised keys" : "shared their secrets",
                          (unsigned)s->p.threshold);
    }
    return FED_OK;
}

/* Whether the unmasking can succeed when the clients at level >= lv answer: at least t
 * survivors, t answering holders of each survivor's b, t answering neighbours of each
 * dropped client whose masks are in the sum. */
static fed_err recoverable(const fed_sa_server *s, uint8_t lv) {
    const uint32_t t = s->p.threshold;
    uint32_t alive = 0;
    for (uint32_t u = 0; u < s->n; u++) alive += s->level[u] >= S_MASKED;
    if (alive < t)
        return fed_errorf(FED_EAGAIN, "only %u clients sent masked input; threshold %u",
                          (unsigned)alive, (unsigned)t);
    for (uint32_t u = 0; u < s->n; u++) {
        uint32_t have = count_at(s, u, lv);
        if (s->level[u] >= S_MASKED && have + (s->level[u] >= lv) < t)
            return fed_errorf(FED_EAGAIN,
                              "client %u: only %u holders of its self-mask seed %s; threshold %u",
                              (unsigned)u, (unsigned)(have + (s->level[u] >= lv)),
                              lv == S_MASKED ? "survive" : "answered", (unsigned)t);
        if (s->level[u] == S_SHARES && count_at(s, u, S_MASKED) > 0 && have < t)
            return fed_errorf(FED_EAGAIN,
                              "client %u dropped: only %u holders of its mask key %s; "
                              "threshold %u",
                              (unsigned)u, (unsigned)have, lv == S_MASKED ? "survive" : "answered",
                              (unsigned)t);
    }
    return FED_OK;
}

/* Starts the phase that sends messages of kind `what` (S_SHARES for NEIGHBOURS etc.):
 * ends the previous collection on the first call; checks that id is still in. */
static fed_err begin_send(fed_sa_server *s, uint32_t id, int phase, const char *what) {
    if (s->phase == S_ABORTED) return aborted(s);
    if (id >= s->n)
        return fed_errorf(FED_EINVAL, "id: %u, expected < n = %u", (unsigned)id, (unsigned)s->n);
    fed_err err = FED_OK;
    if (s->phase == phase - 1) {
        if (phase == S_UNMASK) {
            err = recoverable(s, S_MASKED);
            s->phase = err == FED_OK ? S_UNMASK : S_ABORTED;
        } else {
            err = end_collection(s, (uint8_t)(phase - 1));
        }
        if (err != FED_OK) return err;
    }
    if (s->phase != phase)
        return fed_errorf(FED_EPROTO, "client %u: %s asked outside its phase", (unsigned)id, what);
    if (s->level[id] < phase - 1)
        return fed_errorf(FED_ENOTFOUND, "client %u: no %s: the client is no longer in the round",
                          (unsigned)id, what);
    return FED_OK;
}

/* The all-zero output of a low-order point: such a key would break every peer's step. */
static fed_err check_point(const uint8_t pub[FED_SA_KEY_LEN], uint32_t id, const char *field) {
    static const uint8_t probe[FED_SA_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9}; /* any scalar */
    uint8_t shared[FED_SA_KEY_LEN];
    fed_err err = fed_sa_x25519(shared, probe, pub);
    fed_sa_wipe(shared, sizeof shared);
    if (err != FED_OK) err = fed_errprefix(err, "client %u: ADVERTISE.%s", (unsigned)id, field);
    return err;
}

fed_err fed_sa_server_add_keys(fed_sa_server *s, uint32_t id, const uint8_t *msg, size_t len,
                               fed_sa_verify_fn verify, void *verify_ctx) {
    fed_err err = expect(s, id, S_KEYS, "ADVERTISE");
    if (err != FED_OK) return err;
    reader r = reader_of(msg, len, id, FED_SA_MSG_ADVERTISE);
    const uint8_t *keys = NULL, *sig = NULL;
    uint32_t sig_len = 0;
    err = rd_header(&r, s->p.round);
    if (err == FED_OK) err = rd_bytes(&r, "keys", NO_INDEX, &keys, FED_SA_KEYS_LEN);
    if (err == FED_OK) err = rd_count(&r, "sig_len", FED_SA_SIG_MAX, &sig_len);
    if (err == FED_OK) err = rd_bytes(&r, "sig", NO_INDEX, &sig, sig_len);
    if (err == FED_OK) err = rd_end(&r);
    if (err == FED_OK) err = check_point(keys, id, "c_pub");
    if (err == FED_OK) err = check_point(keys + FED_SA_KEY_LEN, id, "s_pub");
    if (err == FED_OK) {
        char where[48];
        snprintf(where, sizeof where, "client %u: ADVERTISE", (unsigned)id);
        err = check_signature(verify, verify_ctx, s->p.round, id, keys, sig, sig_len, where);
    }
    if (err != FED_OK) return err;
    if (sig_len > 0) {
        s->sig[id] = fed_malloc(sig_len);
        if (s->sig[id] == NULL) return FED_ENOMEM;
        memcpy(s->sig[id], sig, sig_len);
    }
    s->sig_len[id] = sig_len;
    memcpy(s->keys + (size_t)id * FED_SA_KEYS_LEN, keys, FED_SA_KEYS_LEN);
    s->level[id] = 1;
    return FED_OK;
}

fed_err fed_sa_server_keys_for(fed_sa_server *s, uint32_t id, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    fed_err err = begin_send(s, id, S_SHARES, "NEIGHBOURS");
    if (err != FED_OK) return err;
    const uint32_t *row = row_of(s, id);
    size_t n = FED_SA_HEADER_LEN + 4;
    uint32_t count = 0;
    for (uint32_t j = 0; j < s->k; j++) {
        if (s->level[row[j]] < 1) continue;
        n += KEY_ENTRY + s->sig_len[row[j]];
        count++;
    }
    uint8_t *m = fed_malloc(n);
    if (m == NULL) return FED_ENOMEM;
    uint8_t *w = fed_store_le32(put_header(m, FED_SA_MSG_NEIGHBOURS, id, s->p.round), count);
    for (uint32_t j = 0; j < s->k; j++) {
        uint32_t v = row[j];
        if (s->level[v] < 1) continue;
        w = put_bytes(fed_store_le32(w, v), s->keys + (size_t)v * FED_SA_KEYS_LEN, FED_SA_KEYS_LEN);
        w = put_bytes(fed_store_le32(w, s->sig_len[v]), s->sig[v], s->sig_len[v]);
    }
    *out = m;
    *out_len = n;
    return FED_OK;
}

fed_err fed_sa_server_add_shares(fed_sa_server *s, uint32_t id, const uint8_t *msg, size_t len) {
    fed_err err = expect(s, id, S_SHARES, "SHARES");
    if (err != FED_OK) return err;
    const uint32_t *row = row_of(s, id);
    uint32_t want = count_at(s, id, 1), count = 0;
    reader r = reader_of(msg, len, id, FED_SA_MSG_SHARES);
    err = rd_header(&r, s->p.round);
    if (err == FED_OK) err = rd_count(&r, "count", s->k, &count);
    if (err == FED_OK && count != want)
        err = fed_errorf(FED_EPROTO, "client %u: SHARES.count: %u, expected %u (its neighbours)",
                         (unsigned)id, (unsigned)count, (unsigned)want);
    /* First pass: validate everything; second: store. */
    size_t body = r.at;
    for (uint32_t j = 0, i = 0; err == FED_OK && j < s->k; j++) {
        if (s->level[row[j]] < 1) continue;
        uint32_t v = 0;
        const uint8_t *env = NULL;
        err = rd_u32(&r, "recipient", i, &v);
        if (err == FED_OK) err = rd_bytes(&r, "envelope", i, &env, FED_SA_ENVELOPE_LEN);
        if (err == FED_OK && v != row[j])
            err = fed_errorf(FED_EPROTO, "client %u: SHARES.entries[%u].recipient: %u, expected %u",
                             (unsigned)id, (unsigned)i, (unsigned)v, (unsigned)row[j]);
        i++;
    }
    if (err == FED_OK) err = rd_end(&r);
    if (err != FED_OK) return err;
    const uint8_t *p = msg + body;
    for (uint32_t j = 0; j < s->k; j++) {
        if (s->level[row[j]] < 1) continue;
        memcpy(s->env + ((size_t)id * s->k + j) * FED_SA_ENVELOPE_LEN, p + 4, FED_SA_ENVELOPE_LEN);
        p += ENV_ENTRY;
    }
    s->level[id] = 2;
    return FED_OK;
}

fed_err fed_sa_server_shares_for(fed_sa_server *s, uint32_t id, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    fed_err err = begin_send(s, id, S_MASKED, "DELIVERY");
    if (err != FED_OK) return err;
    const uint32_t *row = row_of(s, id);
    uint32_t count = count_at(s, id, 2);
    size_t n = FED_SA_HEADER_LEN + 4 + (size_t)count * ENV_ENTRY;
    uint8_t *m = fed_malloc(n);
    if (m == NULL) return FED_ENOMEM;
    uint8_t *w = fed_store_le32(put_header(m, FED_SA_MSG_DELIVERY, id, s->p.round), count);
    for (uint32_t j = 0; j < s->k; j++) {
        uint32_t v = row[j];
        if (s->level[v] < 2) continue;
        long slot = find(row_of(s, v), s->k, id); /* v's envelope to id */
        w = fed_store_le32(w, v);
        w = put_bytes(w, s->env + ((size_t)v * s->k + (size_t)slot) * FED_SA_ENVELOPE_LEN,
                      FED_SA_ENVELOPE_LEN);
    }
    *out = m;
    *out_len = n;
    return FED_OK;
}

fed_err fed_sa_server_add_masked(fed_sa_server *s, uint32_t id, const uint8_t *msg, size_t len) {
    fed_err err = expect(s, id, S_MASKED, "MASKED");
    if (err != FED_OK) return err;
    reader r = reader_of(msg, len, id, FED_SA_MSG_MASKED);
    uint32_t n = 0;
    const uint8_t *y = NULL;
    err = rd_header(&r, s->p.round);
    if (err == FED_OK) err = rd_u32(&r, "len", NO_INDEX, &n);
    if (err == FED_OK && n != s->p.len)
        err = fed_errorf(FED_EFORMAT, "client %u: MASKED.len: %u, the round has %zu values",
                         (unsigned)id, (unsigned)n, s->p.len);
    if (err == FED_OK) err = rd_bytes(&r, "y", NO_INDEX, &y, 4 * (size_t)n);
    if (err == FED_OK) err = rd_end(&r);
    if (err != FED_OK) return err;
    for (size_t i = 0; i < n; i++) s->sum[i] += fed_load_le32(y + 4 * i);
    s->level[id] = 3;
    return FED_OK;
}

fed_err fed_sa_server_unmask_for(fed_sa_server *s, uint32_t id, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    fed_err err = begin_send(s, id, S_UNMASK, "UNMASK_REQUEST");
    if (err != FED_OK) return err;
    const uint32_t *row = row_of(s, id);
    uint32_t alive = count_at(s, id, 3), shared = count_at(s, id, 2);
    size_t n = FED_SA_HEADER_LEN + 8 + 4 * (size_t)shared;
    uint8_t *m = fed_malloc(n);
    if (m == NULL) return FED_ENOMEM;
    uint8_t *w = put_header(m, FED_SA_MSG_UNMASK_REQUEST, id, s->p.round);
    w = fed_store_le32(fed_store_le32(w, alive), shared - alive);
    for (uint32_t j = 0; j < s->k; j++)
        if (s->level[row[j]] >= 3) w = fed_store_le32(w, row[j]);
    for (uint32_t j = 0; j < s->k; j++)
        if (s->level[row[j]] == 2) w = fed_store_le32(w, row[j]);
    *out = m;
    *out_len = n;
    return FED_OK;
}

fed_err fed_sa_server_add_unmask(fed_sa_server *s, uint32_t id, const uint8_t *msg, size_t len) {
    fed_err err = expect(s, id, S_UNMASK, "UNMASK_REPLY");
    if (err != FED_OK) return err;
    const uint32_t *row = row_of(s, id);
    const size_t k = s->k;
    uint32_t count = 0, want = 1 + count_at(s, id, 2);
    fed_sa_share *got = fed_calloc(k + 1, sizeof *got);
    if (got == NULL) return FED_ENOMEM;
    reader r = reader_of(msg, len, id, FED_SA_MSG_UNMASK_REPLY);
    err = rd_header(&r, s->p.round);
    if (err == FED_OK) err = rd_count(&r, "count", s->k + 1, &count);
    if (err == FED_OK && count != want)
        err = fed_errorf(FED_EPROTO, "client %u: UNMASK_REPLY.count: %u, expected %u", (unsigned)id,
                         (unsigned)count, (unsigned)want);
    /* Expected order: itself, the alive neighbours, the dropped ones (as requested). */
    for (uint32_t i = 0, pass = 0; err == FED_OK && pass < 3; pass++) {
        for (uint32_t j = 0; err == FED_OK && j < (pass == 0 ? 1 : k); j++) {
            uint32_t owner = pass == 0 ? id : row[j], kind = pass == 2 ? KIND_KEY : KIND_SEED;
            if (pass == 1 && s->level[owner] < 3) continue;
            if (pass == 2 && s->level[owner] != 2) continue;
            uint32_t o = 0, kd = 0;
            const uint8_t *wire = NULL;
            size_t slot = pass == 0 ? 0 : j + 1;
            err = rd_u32(&r, "owner", i, &o);
            if (err == FED_OK) err = rd_u32(&r, "kind", i, &kd);
            if (err == FED_OK) err = rd_bytes(&r, "share", i, &wire, FED_SA_SHARE_BYTES);
            if (err == FED_OK && (o != owner || kd != kind))
                err = fed_errorf(FED_EPROTO,
                                 "client %u: UNMASK_REPLY.entries[%u]: owner %u kind %u, "
                                 "expected owner %u kind %u",
                                 (unsigned)id, (unsigned)i, (unsigned)o, (unsigned)kd,
                                 (unsigned)owner, (unsigned)kind);
            if (err == FED_OK) {
                err = fed_sa_share_decode(&got[slot], wire);
                if (err != FED_OK)
                    err = fed_errprefix(err, "client %u: UNMASK_REPLY.entries[%u].share",
                                        (unsigned)id, (unsigned)i);
            }
            if (err == FED_OK && got[slot].x != id + 1)
                err =
                    fed_errorf(FED_EPROTO,
                               "client %u: UNMASK_REPLY.entries[%u].share: x %u, "
                               "expected %u",
                               (unsigned)id, (unsigned)i, (unsigned)got[slot].x, (unsigned)id + 1);
            i++;
        }
    }
    if (err == FED_OK) err = rd_end(&r);
    if (err == FED_OK) {
        memcpy(s->reply + (size_t)id * (k + 1), got, (k + 1) * sizeof *got);
        s->level[id] = 4;
    }
    fed_sa_wipe(got, (k + 1) * sizeof *got);
    fed_free(got);
    return err;
}

/* Rebuilds client u's secret from the answering holders' shares: its own (when it
 * answered and own is set) and its neighbours'. */
static fed_err rebuild(const fed_sa_server *s, uint32_t u, bool own, fed_sa_share *buf,
                       uint8_t secret[FED_SA_SECRET_LEN]) {
    const uint32_t *row = row_of(s, u);
    size_t m = 0;
    if (own && s->level[u] >= 4) buf[m++] = s->reply[(size_t)u * (s->k + 1)];
    for (uint32_t j = 0; j < s->k; j++) {
        uint32_t r = row[j];
        if (s->level[r] < 4) continue;
        long slot = find(row_of(s, r), s->k, u);
        buf[m++] = s->reply[(size_t)r * (s->k + 1) + (size_t)slot + 1];
    }
    return fed_sa_shamir_combine(secret, buf, m, s->p.threshold);
}

/* Removes survivor u's self mask, or dropped client u's pairwise masks with its
 * surviving neighbours. */
static fed_err unmask_one(fed_sa_server *s, uint32_t u, fed_sa_share *buf) {
    uint8_t secret[FED_SA_SECRET_LEN], key[FED_SA_KEY_LEN];
    fed_sa_keypair kp;
    bool alive = s->level[u] >= 3;
    fed_err err = rebuild(s, u, alive, buf, secret);
    if (err != FED_OK) {
        err = fed_errprefix(err, "client %u's %s", (unsigned)u,
                            alive ? "self-mask seed" : "mask key");
    } else if (alive) {
        err = fed_sa_mask_add(s->sum, s->p.len, secret, s->p.round, -1);
    } else {
        err = fed_sa_keypair_from_secret(&kp, secret);
        const uint8_t *s_pub = s->keys + (size_t)u * FED_SA_KEYS_LEN + FED_SA_KEY_LEN;
        if (err == FED_OK && memcmp(kp.pub, s_pub, FED_SA_KEY_LEN) != 0)
            err = fed_errorf(FED_EAUTH,
                             "client %u: the mask key rebuilt from shares is not the "
                             "one it advertised",
                             (unsigned)u);
        const uint32_t *row = row_of(s, u);
        for (uint32_t j = 0; err == FED_OK && j < s->k; j++) {
            uint32_t v = row[j];
            if (s->level[v] < 3) continue;
            fed_sa_context ctx = {s->p.round, u, v, "mask"};
            err = fed_sa_agree(key, secret, s->keys + (size_t)v * FED_SA_KEYS_LEN + FED_SA_KEY_LEN,
                               &ctx);
            /* v added +mask when v < u, -mask otherwise: take it back out. */
            if (err == FED_OK)
                err = fed_sa_mask_add(s->sum, s->p.len, key, s->p.round, v < u ? -1 : +1);
        }
        fed_sa_wipe(&kp, sizeof kp);
    }
    fed_sa_wipe(secret, sizeof secret);
    fed_sa_wipe(key, sizeof key);
    return err;
}

fed_err fed_sa_server_finalize(fed_sa_server *s, float *sum, uint32_t *fixed, size_t len,
                               size_t *survivors) {
    *survivors = 0;
    if (s->phase == S_ABORTED) return aborted(s);
    if (s->phase != S_MASKED && s->phase != S_UNMASK)
        return fed_errorf(FED_EPROTO, "finalize: the round has not reached its masked inputs");
    if (len != s->p.len)
        return fed_errorf(FED_ESHAPE, "len: %zu, the round has %zu values", len, s->p.len);
    fed_err err = recoverable(s, 4); /* always fails in phase 3: no answers yet */
    s->phase = err == FED_OK ? S_DONE : S_ABORTED;
    if (err != FED_OK) return err;
    fed_sa_share *buf = fed_calloc(s->k + 1, sizeof *buf);
    if (buf == NULL) return FED_ENOMEM;
    size_t alive = 0;
    for (uint32_t u = 0; err == FED_OK && u < s->n; u++) {
        if (s->level[u] >= 3) alive++;
        if (s->level[u] >= 3 || (s->level[u] == 2 && count_at(s, u, 3) > 0))
            err = unmask_one(s, u, buf);
    }
    fed_sa_wipe(buf, (s->k + 1) * sizeof *buf);
    fed_free(buf);
    if (err == FED_OK)
        err = fed_sa_dequantize_sum(sum, s->sum, len, alive, s->p.clip_range, s->p.quant_range);
    if (err != FED_OK) {
        s->phase = S_ABORTED;
        return err;
    }
    if (fixed != NULL) memcpy(fixed, s->sum, len * sizeof *fixed);
    *survivors = alive;
    return FED_OK;
}
