/* The server's side of a secure-aggregation round (secagg.h), the coordinator's: who is
 * still in the round phase by phase, relaying keys and sealed shares between neighbours,
 * the running sum of masked inputs, the unmasking requests and, at the end, rebuilding the
 * secrets it needs from the answers to remove the masks and decode the sum. It never holds
 * an individual unmasked update. */
#include "privacy/secagg_internal.h"

#include "core/alloc.h"
#include "core/endian.h"

#include <stdio.h>
#include <string.h>

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
    err = fed__sa_ring_order(order, p);
    if (err != FED_OK) goto fail;
    for (uint32_t at = 0; at < s->n; at++)
        fed__sa_ring_row(s->nb + (size_t)order[at] * s->k, order, s->n, s->k, at);
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
    fed__sa_reader r = fed__sa_reader_of(msg, len, id, FED_SA_MSG_ADVERTISE);
    const uint8_t *keys = NULL, *sig = NULL;
    uint32_t sig_len = 0;
    err = fed__sa_rd_header(&r, s->p.round);
    if (err == FED_OK) err = fed__sa_rd_bytes(&r, "keys", SA_NO_INDEX, &keys, FED_SA_KEYS_LEN);
    if (err == FED_OK) err = fed__sa_rd_count(&r, "sig_len", FED_SA_SIG_MAX, &sig_len);
    if (err == FED_OK) err = fed__sa_rd_bytes(&r, "sig", SA_NO_INDEX, &sig, sig_len);
    if (err == FED_OK) err = fed__sa_rd_end(&r);
    if (err == FED_OK) err = check_point(keys, id, "c_pub");
    if (err == FED_OK) err = check_point(keys + FED_SA_KEY_LEN, id, "s_pub");
    if (err == FED_OK) {
        char where[48];
        snprintf(where, sizeof where, "client %u: ADVERTISE", (unsigned)id);
        err =
            fed__sa_check_signature(verify, verify_ctx, s->p.round, id, keys, sig, sig_len, where);
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
        n += SA_KEY_ENTRY + s->sig_len[row[j]];
        count++;
    }
    uint8_t *m = fed_malloc(n);
    if (m == NULL) return FED_ENOMEM;
    uint8_t *w =
        fed_store_le32(fed__sa_put_header(m, FED_SA_MSG_NEIGHBOURS, id, s->p.round), count);
    for (uint32_t j = 0; j < s->k; j++) {
        uint32_t v = row[j];
        if (s->level[v] < 1) continue;
        w = fed__sa_put_bytes(fed_store_le32(w, v), s->keys + (size_t)v * FED_SA_KEYS_LEN,
                              FED_SA_KEYS_LEN);
        w = fed__sa_put_bytes(fed_store_le32(w, s->sig_len[v]), s->sig[v], s->sig_len[v]);
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
    fed__sa_reader r = fed__sa_reader_of(msg, len, id, FED_SA_MSG_SHARES);
    err = fed__sa_rd_header(&r, s->p.round);
    if (err == FED_OK) err = fed__sa_rd_count(&r, "count", s->k, &count);
    if (err == FED_OK && count != want)
        err = fed_errorf(FED_EPROTO, "client %u: SHARES.count: %u, expected %u (its neighbours)",
                         (unsigned)id, (unsigned)count, (unsigned)want);
    /* First pass: validate everything; second: store. */
    size_t body = r.at;
    for (uint32_t j = 0, i = 0; err == FED_OK && j < s->k; j++) {
        if (s->level[row[j]] < 1) continue;
        uint32_t v = 0;
        const uint8_t *env = NULL;
        err = fed__sa_rd_u32(&r, "recipient", i, &v);
        if (err == FED_OK) err = fed__sa_rd_bytes(&r, "envelope", i, &env, FED_SA_ENVELOPE_LEN);
        if (err == FED_OK && v != row[j])
            err = fed_errorf(FED_EPROTO, "client %u: SHARES.entries[%u].recipient: %u, expected %u",
                             (unsigned)id, (unsigned)i, (unsigned)v, (unsigned)row[j]);
        i++;
    }
    if (err == FED_OK) err = fed__sa_rd_end(&r);
    if (err != FED_OK) return err;
    const uint8_t *p = msg + body;
    for (uint32_t j = 0; j < s->k; j++) {
        if (s->level[row[j]] < 1) continue;
        memcpy(s->env + ((size_t)id * s->k + j) * FED_SA_ENVELOPE_LEN, p + 4, FED_SA_ENVELOPE_LEN);
        p += SA_ENV_ENTRY;
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
    size_t n = FED_SA_HEADER_LEN + 4 + (size_t)count * SA_ENV_ENTRY;
    uint8_t *m = fed_malloc(n);
    if (m == NULL) return FED_ENOMEM;
    uint8_t *w = fed_store_le32(fed__sa_put_header(m, FED_SA_MSG_DELIVERY, id, s->p.round), count);
    for (uint32_t j = 0; j < s->k; j++) {
        uint32_t v = row[j];
        if (s->level[v] < 2) continue;
        long slot = fed__sa_find(row_of(s, v), s->k, id); /* v's envelope to id */
        w = fed_store_le32(w, v);
        w = fed__sa_put_bytes(w, s->env + ((size_t)v * s->k + (size_t)slot) * FED_SA_ENVELOPE_LEN,
                              FED_SA_ENVELOPE_LEN);
    }
    *out = m;
    *out_len = n;
    return FED_OK;
}

fed_err fed_sa_server_add_masked(fed_sa_server *s, uint32_t id, const uint8_t *msg, size_t len) {
    fed_err err = expect(s, id, S_MASKED, "MASKED");
    if (err != FED_OK) return err;
    fed__sa_reader r = fed__sa_reader_of(msg, len, id, FED_SA_MSG_MASKED);
    uint32_t n = 0;
    const uint8_t *y = NULL;
    err = fed__sa_rd_header(&r, s->p.round);
    if (err == FED_OK) err = fed__sa_rd_u32(&r, "len", SA_NO_INDEX, &n);
    if (err == FED_OK && n != s->p.len)
        err = fed_errorf(FED_EFORMAT, "client %u: MASKED.len: %u, the round has %zu values",
                         (unsigned)id, (unsigned)n, s->p.len);
    if (err == FED_OK) err = fed__sa_rd_bytes(&r, "y", SA_NO_INDEX, &y, 4 * (size_t)n);
    if (err == FED_OK) err = fed__sa_rd_end(&r);
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
    uint8_t *w = fed__sa_put_header(m, FED_SA_MSG_UNMASK_REQUEST, id, s->p.round);
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
    fed__sa_reader r = fed__sa_reader_of(msg, len, id, FED_SA_MSG_UNMASK_REPLY);
    err = fed__sa_rd_header(&r, s->p.round);
    if (err == FED_OK) err = fed__sa_rd_count(&r, "count", s->k + 1, &count);
    if (err == FED_OK && count != want)
        err = fed_errorf(FED_EPROTO, "client %u: UNMASK_REPLY.count: %u, expected %u", (unsigned)id,
                         (unsigned)count, (unsigned)want);
    /* Expected order: itself, the alive neighbours, the dropped ones (as requested). */
    for (uint32_t i = 0, pass = 0; err == FED_OK && pass < 3; pass++) {
        for (uint32_t j = 0; err == FED_OK && j < (pass == 0 ? 1 : k); j++) {
            uint32_t owner = pass == 0 ? id : row[j], kind = pass == 2 ? SA_KIND_KEY : SA_KIND_SEED;
            if (pass == 1 && s->level[owner] < 3) continue;
            if (pass == 2 && s->level[owner] != 2) continue;
            uint32_t o = 0, kd = 0;
            const uint8_t *wire = NULL;
            size_t slot = pass == 0 ? 0 : j + 1;
            err = fed__sa_rd_u32(&r, "owner", i, &o);
            if (err == FED_OK) err = fed__sa_rd_u32(&r, "kind", i, &kd);
            if (err == FED_OK) err = fed__sa_rd_bytes(&r, "share", i, &wire, FED_SA_SHARE_BYTES);
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
    if (err == FED_OK) err = fed__sa_rd_end(&r);
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
        long slot = fed__sa_find(row_of(s, r), s->k, u);
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
