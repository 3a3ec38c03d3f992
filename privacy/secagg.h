/* The secure-aggregation round protocol: SecAgg (Bonawitz et al. 2017) over the sparse
 * neighbour graph of SecAgg+ (Bell et al. 2020), as two network-independent state
 * machines, a client object per participant and one server object for the coordinator,
 * that exchange opaque byte messages with the layouts documented below. Built on
 * secagg_crypto.h. Deliberately nothing about sockets, protobuf, certificates, clocks or
 * threads: the caller moves the bytes (e.g. in protobuf bytes fields), signs and verifies
 * key blocks with its TLS identity, and decides when a phase's waiting time is over (a
 * client that has not sent its message by then has dropped out).
 *
 * One round, client u and the server (messages in capitals):
 *
 *   fed_sa_client_new(&c, &params, u)                 fed_sa_server_new(&s, &params)
 *   fed_sa_client_keys_to_sign -> caller signs
 *   fed_sa_client_advertise       --ADVERTISE-->      fed_sa_server_add_keys
 *                                 <--NEIGHBOURS--     fed_sa_server_keys_for     (ends phase 1)
 *   fed_sa_client_share           --SHARES-->         fed_sa_server_add_shares
 *                                 <--DELIVERY--       fed_sa_server_shares_for   (ends phase 2)
 *   fed_sa_client_mask            --MASKED-->         fed_sa_server_add_masked
 *                                 <--UNMASK_REQUEST-- fed_sa_server_unmask_for   (ends phase 3)
 *   fed_sa_client_unmask          --UNMASK_REPLY-->   fed_sa_server_add_unmask
 *                                                     fed_sa_server_finalize     (ends phase 4)
 *
 * What happens. Each client makes two fresh X25519 pairs per round: c (share
 * encryption) and s (pairwise masks), and a 32-byte self-mask seed b. The neighbour graph
 * is fixed by (n, degree, graph_seed) and computed the same way by everyone. A client
 * Shamir-shares b and s.secret t-of-h among its h holders: itself (it keeps one share, as
 * in Bonawitz et al. and Flower) and each neighbour that advertised keys, sealing each
 * neighbour's pair of shares with AES-GCM under agree(c, "share"), bound to sender,
 * recipient and round. Its masked input is
 *     y_u = quantize(clip(x_u)) + PRG(b_u) + sum_{v > u} PRG(m_uv) - sum_{v < u} PRG(m_uv)
 * mod 2^32 over the neighbours v whose shares it received, m_uv = agree(s, "mask").
 * The server sums the y, then asks each survivor, for each of its neighbours, either the
 * share of b (the neighbour survived) or of s.secret (the neighbour dropped after
 * sharing), never both; it rebuilds the survivors' b and the dropped clients' s.secret,
 * removes their masks and decodes the sum. The server holds the running sum of masked
 * inputs only, never an individual unmasked update.
 *
 * Threshold. t counts shares among the h = degree + 1 holders of a client's secrets.
 * Validation: 1 <= t <= h and 2t > h. With the client's own share, a server that lies to
 * some holders that u dropped and to others that it survived collects at most h - m b
 * shares and m s shares: both reach t only when 2t <= h. For all pairs (degree n - 1)
 * this is Bonawitz et al.'s t > n/2, and every dropout pattern that leaves >= t
 * survivors (who all answer) recovers the sum. For a sparse graph what counts is each
 * neighbourhood: a survivor needs t of its holders to answer, a dropped client with a
 * surviving neighbour needs t of its neighbours to answer.
 *
 * Dropping out and aborting. A client that misses a phase is out for the rest of the
 * round. When a collection phase ends, the server also excludes every client with fewer
 * than t holders left (repeatedly, as exclusions cascade). The round aborts with
 * FED_EAGAIN, and every later server call returns FED_EAGAIN, when fewer than t clients
 * remain in any phase or some secret the unmasking needs has fewer than t shares; the
 * detail names the client and the counts. A client returns FED_EAGAIN when too few of
 * its neighbours advertised or shared for its secrets to be recoverable. FED_EAGAIN
 * means "this round cannot finish; run another": nothing was revealed that the protocol
 * does not allow.
 *
 * Errors. Every ingest checks sizes and counts before use and rejects, leaving the
 * object's state unchanged: FED_EFORMAT for a malformed message (wrong type, version,
 * truncated, oversized, a count beyond the degree, a malformed share), FED_EPROTO for a
 * well-formed message the protocol forbids (wrong round, wrong client, wrong phase, a
 * duplicate, an id that is not a neighbour, a request for both secrets of one
 * neighbour, a second unmasking request), FED_EAUTH for an envelope that does not verify
 * (tampered, replayed from another round, re-addressed) or a signature the caller's
 * verifier refuses, or shares that do not rebuild a consistent secret, FED_EINVAL for bad
 * arguments or parameters, FED_ENOTFOUND when the server is asked for a message to a
 * client that is no longer in the round. The one-line detail (fed_errmsg()) names the
 * client id, the message and the field. Messages from the server to a client carry
 * the recipient's id in their header, messages from a client its own id.
 *
 * Message layouts. All integers little-endian. Every message starts with the header:
 *     u8 type (FED_SA_MSG_*), u8 version (1), u16 reserved (0),
 *     u32 client (sender of client messages, recipient of server messages), u64 round
 * then:
 *   ADVERTISE       c_pub[32] s_pub[32] u32 sig_len sig[sig_len <= FED_SA_SIG_MAX]
 *   NEIGHBOURS      u32 count, count x { u32 id, c_pub[32], s_pub[32], u32 sig_len, sig }
 *                   the recipient's neighbours that advertised, ids ascending
 *   SHARES          u32 count, count x { u32 recipient, envelope[FED_SA_ENVELOPE_LEN] }
 *                   exactly the NEIGHBOURS ids, in that order
 *   DELIVERY        u32 count, count x { u32 sender, envelope[FED_SA_ENVELOPE_LEN] }
 *                   the envelopes addressed to the recipient, senders ascending
 *   MASKED          u32 len, len x u32 y
 *   UNMASK_REQUEST  u32 n_alive, u32 n_dropped, n_alive x u32 id, n_dropped x u32 id
 *                   each list ascending, disjoint, ids the recipient holds shares of
 *   UNMASK_REPLY    u32 count, count x { u32 owner, u32 kind (0 b, 1 s.secret),
 *                   share[FED_SA_SHARE_BYTES] }: first (sender, 0), then (alive, 0) for
 *                   each alive id, then (dropped, 1) for each dropped id, in request order
 * An envelope is fed_sa_seal(agree(c_sender, c_recipient pub, "share"), sender,
 * recipient, round, share of b || share of s.secret) (2 x FED_SA_SHARE_BYTES plaintext).
 * fed_sa_msg_max() gives each message's largest size for given parameters.
 *
 * Ownership: every outgoing message is a new fed_malloc'd buffer that the caller frees
 * with fed_free(); nothing is allocated on error. Input messages are only read. Objects
 * are not thread-safe; different objects are independent. */
#ifndef FED_PRIVACY_SECAGG_H
#define FED_PRIVACY_SECAGG_H

#include "core/err.h"
#include "privacy/secagg_crypto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FED_SA_CLIENTS_MAX    1024 /* most participants of a round (Shamir holders <= 1024) */
#define FED_SA_LEN_MAX        (UINT32_C(1) << 28) /* longest vector: 1 GiB MASKED message */
#define FED_SA_SIG_MAX        4096 /* longest signature relayed with a key block: bytes */
#define FED_SA_KEYS_LEN       64   /* a key block: c_pub then s_pub */
#define FED_SA_SIGNED_LEN     98   /* what is signed: see fed_sa_signed_block */
#define FED_SA_HEADER_LEN     16   /* every message's header */
#define FED_SA_ENVELOPE_LEN   (2 * FED_SA_SHARE_BYTES + FED_SA_SEAL_OVERHEAD) /* 164 */
#define FED_SA_DEFAULT_CLIP   8.0                 /* Flower's clipping range */
#define FED_SA_DEFAULT_QUANT  (UINT32_C(1) << 22) /* Flower's quantization range */
#define FED_SA_DEFAULT_DEGREE 30                  /* neighbours per client when n is larger */

/* Message types, the first byte of every message. */
enum {
    FED_SA_MSG_ADVERTISE = 1,
    FED_SA_MSG_NEIGHBOURS = 2,
    FED_SA_MSG_SHARES = 3,
    FED_SA_MSG_DELIVERY = 4,
    FED_SA_MSG_MASKED = 5,
    FED_SA_MSG_UNMASK_REQUEST = 6,
    FED_SA_MSG_UNMASK_REPLY = 7,
};

/* The parameters of one round, the same at the server and every client (the coordinator
 * sends them with the round's configuration). */
typedef struct fed_sa_params {
    uint32_t n;             /* participants, ids 0..n-1; 2..FED_SA_CLIENTS_MAX */
    uint32_t degree;        /* k: neighbours per client, >= 1; >= n - 1 means all pairs */
    uint32_t threshold;     /* t: shares that rebuild a secret; see "Threshold" above */
    double clip_range;      /* c: inputs are clipped to [-c, c]; finite, > 0 */
    uint32_t quant_range;   /* q: [-c, c] maps to 0..q; n * q must stay below 2^32 */
    size_t len;             /* values per update, 1..FED_SA_LEN_MAX */
    uint64_t round;         /* round number: bound into every message, key and envelope */
    uint8_t graph_seed[32]; /* chosen by the coordinator per round; fixes the graph */
} fed_sa_params;

/* Defaults for n participants and len values: degree min(n - 1, FED_SA_DEFAULT_DEGREE),
 * the smallest valid threshold (the most dropouts tolerated: floor(h/2) + 1 of the h
 * holders), Flower's clip and quantization ranges, round 0 and an all-zero graph seed.
 * The coordinator sets round and draws graph_seed (fed_sa_random_bytes) itself. */
void fed_sa_params_default(fed_sa_params *p, uint32_t n, size_t len);

/* FED_OK or FED_EINVAL naming the first bad field: n, degree, threshold, clip_range,
 * quant_range (0, or n * quant_range >= 2^32, so a sum could wrap) or len. */
fed_err fed_sa_params_check(const fed_sa_params *p) FED_MUST_USE;

/* The graph's actual degree: min(degree, n - 1), plus one when that is odd and n is odd
 * (no graph on an odd number of nodes has odd regular degree). 0 when n < 2. */
uint32_t fed_sa_degree(const fed_sa_params *p);

/* The neighbours of client id, ascending, into out[0..fed_sa_degree(p)). The graph:
 * clients on a ring in the order of a Fisher-Yates shuffle driven by AES-256-CTR under
 * graph_seed; each is joined to the degree/2 nearest on each side and, for odd degree,
 * to the one opposite. Symmetric, regular, deterministic; all pairs when degree >= n - 1.
 * FED_EINVAL (params, or id >= n); FED_ENOMEM; FED_EINTERNAL if OpenSSL fails. */
fed_err fed_sa_neighbours(uint32_t *out, const fed_sa_params *p, uint32_t id) FED_MUST_USE;

/* The largest size in bytes of a message of type (FED_SA_MSG_*) under p (which must pass
 * fed_sa_params_check), for limits in the transport; 0 for an unknown type. */
size_t fed_sa_msg_max(const fed_sa_params *p, int type);

/* The bytes a client signs with its identity so the coordinator cannot substitute keys:
 * "fedtune/secagg/keys/v1" (22 bytes), round (u64), id (u32), c_pub, s_pub. */
void fed_sa_signed_block(uint8_t out[FED_SA_SIGNED_LEN], uint64_t round, uint32_t id,
                         const uint8_t keys[FED_SA_KEYS_LEN]);

/* The caller's signature check: FED_OK when sig is client id's valid signature of
 * signed_bytes, any error otherwise (ingest then fails with FED_EAUTH, keeping the
 * callback's detail). ctx is passed through. */
typedef fed_err (*fed_sa_verify_fn)(void *ctx, uint32_t id, const uint8_t *signed_bytes,
                                    size_t signed_len, const uint8_t *sig, size_t sig_len);

/* ---- Client ------------------------------------------------------------------------- */

typedef struct fed_sa_client fed_sa_client;

/* A client for round p as participant id: draws its key pairs and self-mask seed.
 * FED_EINVAL (params or id); FED_ENOMEM; FED_EINTERNAL. *out is NULL on error. */
fed_err fed_sa_client_new(fed_sa_client **out, const fed_sa_params *p, uint32_t id) FED_MUST_USE;

/* Wipes every secret and frees. NULL-safe; sets *c = NULL. */
void fed_sa_client_destroy(fed_sa_client **c);

/* The FED_SA_SIGNED_LEN bytes this client's identity must sign for ADVERTISE. */
void fed_sa_client_keys_to_sign(const fed_sa_client *c, uint8_t out[FED_SA_SIGNED_LEN]);

/* Phase 1: ADVERTISE with the signature of fed_sa_client_keys_to_sign (sig_len may be 0
 * when identities are checked otherwise). FED_EINVAL naming sig_len; FED_EPROTO when not
 * the first step; FED_ENOMEM. */
fed_err fed_sa_client_advertise(fed_sa_client *c, const uint8_t *sig, size_t sig_len, uint8_t **out,
                                size_t *out_len) FED_MUST_USE;

/* Phase 2: reads NEIGHBOURS, checks each neighbour's signature with verify (skipped when
 * verify is NULL), and makes SHARES. FED_EAGAIN when fewer than t - 1 neighbours
 * advertised; FED_EAUTH when a signature fails; the errors of the header. */
fed_err fed_sa_client_share(fed_sa_client *c, const uint8_t *msg, size_t len,
                            fed_sa_verify_fn verify, void *verify_ctx, uint8_t **out,
                            size_t *out_len) FED_MUST_USE;

/* Phase 3: opens DELIVERY (FED_EAUTH for any envelope that does not verify), then clips,
 * quantizes and masks x[0..x_len) into MASKED. rounding_key: NULL in production (fresh
 * coins); tests pass a fixed key so fed_sa_quantize(.., rounding_key) reproduces the
 * integers. FED_ESHAPE when x_len != p.len; FED_ENONFINITE; FED_EAGAIN when fewer than
 * t - 1 neighbours shared. The client keeps no copy of x. */
fed_err fed_sa_client_mask(fed_sa_client *c, const uint8_t *msg, size_t len, const float *x,
                           size_t x_len, const uint8_t *rounding_key, uint8_t **out,
                           size_t *out_len) FED_MUST_USE;

/* Phase 4: answers one UNMASK_REQUEST with UNMASK_REPLY, then wipes its secrets. Refuses
 * (FED_EPROTO) a request naming one neighbour both alive and dropped, a non-neighbour,
 * and any request after the first answered one. */
fed_err fed_sa_client_unmask(fed_sa_client *c, const uint8_t *msg, size_t len, uint8_t **out,
                             size_t *out_len) FED_MUST_USE;

/* ---- Server ------------------------------------------------------------------------- */

typedef struct fed_sa_server fed_sa_server;

/* The coordinator's side of round p. FED_EINVAL (params); FED_ENOMEM; FED_EINTERNAL.
 * Memory: about n * degree * 240 bytes plus 4 * len. */
fed_err fed_sa_server_new(fed_sa_server **out, const fed_sa_params *p) FED_MUST_USE;

/* Frees (and wipes the collected shares). NULL-safe; sets *s = NULL. */
void fed_sa_server_destroy(fed_sa_server **s);

/* True while client id is still in the round: it sent every message of the phases that
 * have ended and was not excluded. False for ids out of range and after an abort. */
bool fed_sa_server_active(const fed_sa_server *s, uint32_t id);

/* Phase 1: ADVERTISE from client id, its signature checked with verify unless NULL.
 * FED_EINVAL for a low-order public key; FED_EAUTH when verify refuses. */
fed_err fed_sa_server_add_keys(fed_sa_server *s, uint32_t id, const uint8_t *msg, size_t len,
                               fed_sa_verify_fn verify, void *verify_ctx) FED_MUST_USE;

/* NEIGHBOURS for client id. The first call ends phase 1. FED_ENOTFOUND when id is not
 * in the round; FED_EAGAIN when the round aborts. */
fed_err fed_sa_server_keys_for(fed_sa_server *s, uint32_t id, uint8_t **out,
                               size_t *out_len) FED_MUST_USE;

/* Phase 2: SHARES from client id (the envelopes are stored for their recipients). */
fed_err fed_sa_server_add_shares(fed_sa_server *s, uint32_t id, const uint8_t *msg,
                                 size_t len) FED_MUST_USE;

/* DELIVERY for client id. The first call ends phase 2. As fed_sa_server_keys_for. */
fed_err fed_sa_server_shares_for(fed_sa_server *s, uint32_t id, uint8_t **out,
                                 size_t *out_len) FED_MUST_USE;

/* Phase 3: MASKED from client id, added to the running sum and not kept. */
fed_err fed_sa_server_add_masked(fed_sa_server *s, uint32_t id, const uint8_t *msg,
                                 size_t len) FED_MUST_USE;

/* UNMASK_REQUEST for client id. The first call ends phase 3 and aborts the round
 * (FED_EAGAIN) unless, with every survivor answering, each needed secret would have t
 * shares. As fed_sa_server_keys_for. */
fed_err fed_sa_server_unmask_for(fed_sa_server *s, uint32_t id, uint8_t **out,
                                 size_t *out_len) FED_MUST_USE;

/* Phase 4: UNMASK_REPLY from client id; checked against the request it answers. */
fed_err fed_sa_server_add_unmask(fed_sa_server *s, uint32_t id, const uint8_t *msg,
                                 size_t len) FED_MUST_USE;

/* Ends the round: rebuilds the survivors' self-mask seeds and the dropped clients' mask
 * keys, removes their masks and decodes sum[0..len) = the sum of the survivors' clipped
 * updates (up to one rounding step 2c/q per survivor), *survivors = their number, and,
 * when fixed is not NULL, fixed[0..len) = the unmasked fixed-point sum mod 2^32.
 * FED_EAGAIN when a needed secret has fewer than t shares (the round aborts); FED_EAUTH
 * when shares are inconsistent or rebuild a key other than the one advertised;
 * FED_ESHAPE when len != p.len; FED_EPROTO before phase 3 (masked inputs) has begun or
 * when called twice. Called while phase 3 is still collecting (no UNMASK_REQUEST sent),
 * it ends it and succeeds only if nothing needs unmasking, which never happens: with no
 * survivors or no answers it returns FED_EAGAIN. One call only, whatever its outcome. */
fed_err fed_sa_server_finalize(fed_sa_server *s, float *sum, uint32_t *fixed, size_t len,
                               size_t *survivors) FED_MUST_USE;

#endif
