/* Internal to privacy/: what the files of the secure-aggregation protocol share (redis's
 * server.h for aof.c and rdb.c): secagg.c (parameters, the neighbour graph, key blocks),
 * secagg_wire.c (message encoding and strict decoding), secagg_client.c and
 * secagg_server.c (the two state machines). The sizes of the messages' list entries, the
 * cursor that reads a message, and the functions one file calls in another, named
 * fed__sa_*. Only those files, and tests that look inside, include it; the protocol's
 * public face is secagg.h. */
#ifndef FED_PRIVACY_SECAGG_INTERNAL_H
#define FED_PRIVACY_SECAGG_INTERNAL_H

#include "core/err.h"
#include "privacy/secagg.h"

#include <stddef.h>
#include <stdint.h>

#define SA_ENV_ENTRY   (4 + FED_SA_ENVELOPE_LEN) /* SHARES / DELIVERY entry */
#define SA_REPLY_ENTRY (8 + FED_SA_SHARE_BYTES)  /* UNMASK_REPLY entry */
#define SA_KEY_ENTRY   (4 + FED_SA_KEYS_LEN + 4) /* NEIGHBOURS entry without its signature */
#define SA_NO_INDEX    SIZE_MAX                  /* a field that is not in a list */
#define SA_KIND_SEED   0                         /* UNMASK_REPLY: share of b */
#define SA_KIND_KEY    1                         /* UNMASK_REPLY: share of s.secret */

/* ---- The graph and key blocks (secagg.c) -------------------------------------------- */

/* order[0..n): the ring, a Fisher-Yates shuffle of 0..n-1 driven by AES-256-CTR under the
 * graph seed. FED_ENOMEM; FED_EINTERNAL if OpenSSL fails. */
fed_err fed__sa_ring_order(uint32_t *order, const fed_sa_params *p) FED_MUST_USE;

/* row[0..k): the neighbours of the client at ring position at, ascending. */
void fed__sa_ring_row(uint32_t *row, const uint32_t *order, uint32_t n, uint32_t k, uint32_t at);

/* Index of id in the ascending row[0..k), or -1. */
long fed__sa_find(const uint32_t *row, uint32_t k, uint32_t id);

/* Runs verify (nothing when NULL) on client id's key block; FED_EAUTH with the callback's
 * detail, prefixed with where, on refusal. */
fed_err fed__sa_check_signature(fed_sa_verify_fn verify, void *ctx, uint64_t round, uint32_t id,
                                const uint8_t *keys, const uint8_t *sig, uint32_t sig_len,
                                const char *where) FED_MUST_USE;

/* ---- Writing messages (secagg_wire.c) ----------------------------------------------- */

/* Copies n bytes of src to p; returns p + n. */
uint8_t *fed__sa_put_bytes(uint8_t *p, const void *src, size_t n);

/* The message header (layout in secagg.h); returns the position after it. */
uint8_t *fed__sa_put_header(uint8_t *p, int type, uint32_t client, uint64_t round);

/* ---- Reading messages strictly (secagg_wire.c) -------------------------------------- */

/* A cursor over one incoming message; errors name the client and the message. */
typedef struct fed__sa_reader {
    const uint8_t *p; /* the message */
    size_t len;       /* its length */
    size_t at;        /* bytes consumed */
    uint32_t client;  /* the client the message is from or for */
    int type;         /* FED_SA_MSG_* */
} fed__sa_reader;

/* A cursor at the start of msg (NULL reads as empty) from or for client, of type. */
fed__sa_reader fed__sa_reader_of(const uint8_t *msg, size_t len, uint32_t client, int type);

/* The next n bytes into *out; FED_EFORMAT naming field (and entry idx unless
 * SA_NO_INDEX) when fewer remain. */
fed_err fed__sa_rd_bytes(fed__sa_reader *r, const char *field, size_t idx, const uint8_t **out,
                         size_t n) FED_MUST_USE;

/* The next little-endian u32; as fed__sa_rd_bytes. */
fed_err fed__sa_rd_u32(fed__sa_reader *r, const char *field, size_t idx, uint32_t *v) FED_MUST_USE;

/* FED_EFORMAT (oversized) unless the whole message was read. */
fed_err fed__sa_rd_end(const fed__sa_reader *r) FED_MUST_USE;

/* A count field, FED_EFORMAT when it exceeds most (what the recipient can accept). */
fed_err fed__sa_rd_count(fed__sa_reader *r, const char *field, uint32_t most,
                         uint32_t *v) FED_MUST_USE;

/* The header: FED_EFORMAT for a wrong type, version or reserved bytes, FED_EPROTO for
 * another client's id or another round. */
fed_err fed__sa_rd_header(fed__sa_reader *r, uint64_t round) FED_MUST_USE;

#endif
