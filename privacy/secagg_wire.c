/* The secure-aggregation messages on the wire (layouts in secagg.h): writing the header
 * and byte fields, and reading a message strictly, every size checked before use, each
 * error naming the client, the message and the field (with the entry's index in a list).
 * What the fields mean, and which values the protocol allows, is for the client and the
 * server (secagg_client.c, secagg_server.c) to check. */
#include "privacy/secagg_internal.h"

#include "core/endian.h"

#include <string.h>

#define VERSION 1 /* the header's version byte */

static const char *const msg_names[] = {"?",        "ADVERTISE", "NEIGHBOURS",     "SHARES",
                                        "DELIVERY", "MASKED",    "UNMASK_REQUEST", "UNMASK_REPLY"};

/* ---- Writing ------------------------------------------------------------------------ */

uint8_t *fed__sa_put_bytes(uint8_t *p, const void *src, size_t n) {
    if (n > 0) memcpy(p, src, n);
    return p + n;
}

/* The message header (layout in secagg.h); returns the position after it. */
uint8_t *fed__sa_put_header(uint8_t *p, int type, uint32_t client, uint64_t round) {
    p[0] = (uint8_t)type;
    p[1] = VERSION;
    p[2] = 0;
    p[3] = 0;
    return fed_store_le64(fed_store_le32(p + 4, client), round);
}

/* ---- Strict reading of messages ----------------------------------------------------- */

fed__sa_reader fed__sa_reader_of(const uint8_t *msg, size_t len, uint32_t client, int type) {
    static const uint8_t empty[1] = {0}; /* a NULL message reads as an empty one */
    fed__sa_reader r = {msg != NULL ? msg : empty, msg != NULL ? len : 0, 0, client, type};
    return r;
}

/* Always FED_EFORMAT (returned as a constant so static analysis sees it). */
static fed_err truncated(const fed__sa_reader *r, const char *field, size_t idx) {
    if (idx == SA_NO_INDEX) {
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
static const uint8_t *take(fed__sa_reader *r, size_t n) {
    if (r->len - r->at < n) return NULL;
    const uint8_t *p = r->p + r->at;
    r->at += n;
    return p;
}

fed_err fed__sa_rd_bytes(fed__sa_reader *r, const char *field, size_t idx, const uint8_t **out,
                         size_t n) {
    const uint8_t *p = take(r, n);
    if (p == NULL) return truncated(r, field, idx);
    *out = p;
    return FED_OK;
}

fed_err fed__sa_rd_u32(fed__sa_reader *r, const char *field, size_t idx, uint32_t *v) {
    const uint8_t *p = take(r, 4);
    if (p == NULL) return truncated(r, field, idx);
    *v = fed_load_le32(p);
    return FED_OK;
}

fed_err fed__sa_rd_end(const fed__sa_reader *r) {
    if (r->at == r->len) return FED_OK;
    return fed_errorf(FED_EFORMAT, "client %u: %s: %zu trailing bytes after %zu (oversized)",
                      (unsigned)r->client, msg_names[r->type], r->len - r->at, r->at);
}

/* A count field, checked against the most the recipient can accept. */
fed_err fed__sa_rd_count(fed__sa_reader *r, const char *field, uint32_t most, uint32_t *v) {
    fed_err err = fed__sa_rd_u32(r, field, SA_NO_INDEX, v);
    if (err == FED_OK && *v > most)
        err = fed_errorf(FED_EFORMAT, "client %u: %s.%s: %u exceeds the limit %u",
                         (unsigned)r->client, msg_names[r->type], field, (unsigned)*v,
                         (unsigned)most);
    return err;
}

fed_err fed__sa_rd_header(fed__sa_reader *r, uint64_t round) {
    const uint8_t *h = take(r, FED_SA_HEADER_LEN);
    if (h == NULL) return truncated(r, "header", SA_NO_INDEX);
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
