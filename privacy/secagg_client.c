/* The client's side of a secure-aggregation round (secagg.h): its keys and self-mask
 * seed, sharing its secrets with its neighbours, masking its input and answering the
 * unmasking request, then wiping every secret. The messages are read and written with
 * secagg_wire.c's helpers; the cryptography is secagg_crypto.c's. */
#include "privacy/secagg_internal.h"

#include "core/alloc.h"
#include "core/endian.h"

#include <stdio.h>
#include <string.h>

#define PLAIN_LEN (2 * FED_SA_SHARE_BYTES) /* an envelope's plaintext */

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
    uint8_t *w = fed__sa_put_header(m, FED_SA_MSG_ADVERTISE, c->id, c->p.round);
    w = fed__sa_put_bytes(w, c->c.pub, FED_SA_KEY_LEN);
    w = fed__sa_put_bytes(w, c->s.pub, FED_SA_KEY_LEN);
    fed__sa_put_bytes(fed_store_le32(w, (uint32_t)sig_len), sig, sig_len);
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
    fed__sa_reader r = fed__sa_reader_of(msg, len, c->id, FED_SA_MSG_NEIGHBOURS);
    fed_err err = fed__sa_rd_header(&r, c->p.round);
    if (err == FED_OK) err = fed__sa_rd_count(&r, "count", c->k, count);
    for (uint32_t i = 0; err == FED_OK && i < *count; i++) {
        uint32_t id = 0, sig_len = 0;
        const uint8_t *sig = NULL;
        err = fed__sa_rd_u32(&r, "id", i, &id);
        if (err == FED_OK) err = fed__sa_rd_bytes(&r, "keys", i, &keys[i], FED_SA_KEYS_LEN);
        if (err == FED_OK) err = fed__sa_rd_u32(&r, "sig_len", i, &sig_len);
        if (err == FED_OK && sig_len > FED_SA_SIG_MAX)
            err = fed_errorf(FED_EFORMAT, "client %u: NEIGHBOURS.entries[%u].sig_len: %u > %d",
                             (unsigned)c->id, (unsigned)i, (unsigned)sig_len, FED_SA_SIG_MAX);
        if (err == FED_OK) err = fed__sa_rd_bytes(&r, "sig", i, &sig, sig_len);
        if (err != FED_OK) break;
        long j = fed__sa_find(c->nb, c->k, id);
        if (j < 0 || (i > 0 && (uint32_t)j <= idx[i - 1]))
            return fed_errorf(FED_EPROTO,
                              "client %u: NEIGHBOURS.entries[%u].id: %u is not a neighbour, "
                              "a duplicate or out of order",
                              (unsigned)c->id, (unsigned)i, (unsigned)id);
        idx[i] = (uint32_t)j;
        char where[64];
        snprintf(where, sizeof where, "client %u: NEIGHBOURS.entries[%u]", (unsigned)c->id,
                 (unsigned)i);
        err = fed__sa_check_signature(verify, verify_ctx, c->p.round, id, keys[i], sig, sig_len,
                                      where);
    }
    if (err == FED_OK) err = fed__sa_rd_end(&r);
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
    n = FED_SA_HEADER_LEN + 4 + (size_t)count * SA_ENV_ENTRY;
    m = fed_malloc(n);
    if (m == NULL) {
        err = FED_ENOMEM;
        goto fail;
    }
    uint8_t *w = fed_store_le32(fed__sa_put_header(m, FED_SA_MSG_SHARES, c->id, c->p.round), count);
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
    fed__sa_reader r = fed__sa_reader_of(msg, len, c->id, FED_SA_MSG_DELIVERY);
    if (err == FED_OK) err = fed__sa_rd_header(&r, c->p.round);
    if (err == FED_OK) err = fed__sa_rd_count(&r, "count", c->k, count);
    long last = -1;
    for (uint32_t i = 0; err == FED_OK && i < *count; i++) {
        uint32_t v = 0;
        const uint8_t *env = NULL;
        err = fed__sa_rd_u32(&r, "sender", i, &v);
        if (err == FED_OK) err = fed__sa_rd_bytes(&r, "envelope", i, &env, FED_SA_ENVELOPE_LEN);
        if (err != FED_OK) break;
        long j = fed__sa_find(c->nb, c->k, v);
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
    if (err == FED_OK) err = fed__sa_rd_end(&r);
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
    uint8_t *w =
        fed_store_le32(fed__sa_put_header(m, FED_SA_MSG_MASKED, c->id, c->p.round), (uint32_t)n);
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
    fed__sa_reader r = fed__sa_reader_of(msg, len, c->id, FED_SA_MSG_UNMASK_REQUEST);
    if (err == FED_OK) err = fed__sa_rd_header(&r, c->p.round);
    if (err == FED_OK) err = fed__sa_rd_count(&r, "n_alive", k, &n_alive);
    if (err == FED_OK) err = fed__sa_rd_count(&r, "n_dropped", k, &n_dropped);
    if (err == FED_OK && n_alive + n_dropped > k)
        err = fed_errorf(FED_EFORMAT,
                         "client %u: UNMASK_REQUEST.n_dropped: %u + %u exceed the %u "
                         "neighbours",
                         (unsigned)c->id, (unsigned)n_alive, (unsigned)n_dropped, (unsigned)k);
    for (uint32_t i = 0; err == FED_OK && i < n_alive + n_dropped; i++) {
        bool alive = i < n_alive;
        const char *list = alive ? "alive" : "dropped";
        uint32_t v = 0;
        err = fed__sa_rd_u32(&r, list, i, &v);
        if (err != FED_OK) break;
        long j = fed__sa_find(c->nb, k, v);
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
    if (err == FED_OK) err = fed__sa_rd_end(&r);
    if (err != FED_OK) goto fail;
    uint32_t count = 1 + n_alive + n_dropped;
    n = FED_SA_HEADER_LEN + 4 + (size_t)count * SA_REPLY_ENTRY;
    m = fed_malloc(n);
    if (m == NULL) {
        err = FED_ENOMEM;
        goto fail;
    }
    uint8_t *w =
        fed_store_le32(fed__sa_put_header(m, FED_SA_MSG_UNMASK_REPLY, c->id, c->p.round), count);
    w = fed_store_le32(fed_store_le32(w, c->id), SA_KIND_SEED);
    fed_sa_share_encode(wire, &c->own[0]);
    w = fed__sa_put_bytes(w, wire, sizeof wire);
    for (uint32_t i = 0; i < n_alive + n_dropped; i++) {
        bool alive = i < n_alive;
        long j = fed__sa_find(c->nb, k, ids[i]);
        w = fed_store_le32(fed_store_le32(w, ids[i]), alive ? SA_KIND_SEED : SA_KIND_KEY);
        fed_sa_share_encode(wire, &c->held[2 * j + (alive ? 0 : 1)]);
        w = fed__sa_put_bytes(w, wire, sizeof wire);
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
