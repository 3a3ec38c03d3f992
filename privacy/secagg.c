/* The secure-aggregation round protocol (see secagg.h), its shared ground: parameter
 * checks, the neighbour graph and the signed key blocks. The message encoding and strict
 * decoding are in secagg_wire.c, the client's state machine in secagg_client.c, the
 * server's in secagg_server.c; they share secagg_internal.h. All cryptography is in
 * secagg_crypto.c; none of these files includes OpenSSL. Nothing here does I/O or keeps an
 * individual unmasked update: the server adds each masked input to its running sum and
 * forgets it. */
#include "privacy/secagg_internal.h"

#include "core/alloc.h"
#include "core/endian.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char signed_label[] = "fedtune/secagg/keys/v1";
static const char graph_label[] = "fedtune/sa-graph"; /* 16 bytes: the shuffle's IV */

_Static_assert(sizeof signed_label - 1 + 8 + 4 + FED_SA_KEYS_LEN == FED_SA_SIGNED_LEN,
               "signed block size");
_Static_assert(sizeof graph_label - 1 == FED_SA_IV_LEN, "graph IV is one block");
_Static_assert(FED_SA_KEYS_LEN == 2 * FED_SA_KEY_LEN, "key block is c_pub || s_pub");

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

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* order[0..n): the ring, a Fisher-Yates shuffle of 0..n-1 driven by AES-256-CTR under the
 * graph seed (64-bit draws reduced modulo i + 1: bias below 2^-53 for n <= 1024). */
fed_err fed__sa_ring_order(uint32_t *order, const fed_sa_params *p) {
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
void fed__sa_ring_row(uint32_t *row, const uint32_t *order, uint32_t n, uint32_t k, uint32_t at) {
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
    err = fed__sa_ring_order(order, p);
    for (uint32_t at = 0; err == FED_OK && at < p->n; at++)
        if (order[at] == id) fed__sa_ring_row(out, order, p->n, fed_sa_degree(p), at);
    fed_free(order);
    return err;
}

size_t fed_sa_msg_max(const fed_sa_params *p, int type) {
    size_t k = fed_sa_degree(p), h = FED_SA_HEADER_LEN;
    switch (type) {
    case FED_SA_MSG_ADVERTISE:
        return h + FED_SA_KEYS_LEN + 4 + FED_SA_SIG_MAX;
    case FED_SA_MSG_NEIGHBOURS:
        return h + 4 + k * (SA_KEY_ENTRY + FED_SA_SIG_MAX);
    case FED_SA_MSG_SHARES:
    case FED_SA_MSG_DELIVERY:
        return h + 4 + k * SA_ENV_ENTRY;
    case FED_SA_MSG_MASKED:
        return h + 4 + 4 * p->len;
    case FED_SA_MSG_UNMASK_REQUEST:
        return h + 8 + 4 * k;
    case FED_SA_MSG_UNMASK_REPLY:
        return h + 4 + (k + 1) * SA_REPLY_ENTRY;
    default:
        return 0;
    }
}

void fed_sa_signed_block(uint8_t out[FED_SA_SIGNED_LEN], uint64_t round, uint32_t id,
                         const uint8_t keys[FED_SA_KEYS_LEN]) {
    uint8_t *w = fed__sa_put_bytes(out, signed_label, sizeof signed_label - 1);
    fed__sa_put_bytes(fed_store_le32(fed_store_le64(w, round), id), keys, FED_SA_KEYS_LEN);
}

fed_err fed__sa_check_signature(fed_sa_verify_fn verify, void *ctx, uint64_t round, uint32_t id,
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

/* Index of id in the ascending row[0..k), or -1. */
long fed__sa_find(const uint32_t *row, uint32_t k, uint32_t id) {
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
