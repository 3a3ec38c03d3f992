/* fed_msg: fedtune's protocol messages as plain C structs, and their encoding to and
 * from protobuf (proto/fedtune.proto) through protobuf-c, which nothing outside this
 * module sees. Decoding never trusts the input: before protobuf-c unpacks anything the
 * envelope's size is checked against fed_msg_limits, and afterwards every count,
 * string, digest and shape is checked again (a valid protobuf can still be absurd).
 * Errors are FED_EPROTO with one line naming the field ("round_start.manifest.tensors
 * [3].shape: 9 dimensions, limit 8"). Encoding runs the same checks against the default
 * limits (FED_EINVAL, same text), so we never send what a peer would reject.
 *
 * Ownership. A fed_msg either borrows everything it points to or owns it, and its
 * `arena` says which; the pointer fields are const either way, because the library only
 * ever reads through them.
 *   - A message you build to send borrows (arena NULL): point its strings and arrays at
 *     your own memory, which must stay valid and unchanged until the call you pass the
 *     message to (fed_msg_encode, fed_msg_pack, net/'s send calls) returns. The library
 *     never frees, changes or keeps them; fed_msg_free on a built message frees nothing.
 *     NULL strings encode as "".
 *   - A message from fed_msg_decode or fed_msg_copy owns: its strings and arrays live in
 *     one block of memory (its arena), which fed_msg_free releases, and nothing else. They
 *     stay valid until then whatever becomes of the bytes it was decoded from; its strings
 *     are never NULL. A struct copy shares the arena: call fed_msg_free on exactly one of
 *     the copies, and use none of them afterwards. To keep a message you were lent (a
 *     net/ event's lives until the next poll), fed_msg_copy it.
 * Protobuf strings are read up to their first NUL byte. */
#ifndef FED_PROTO_MSG_H
#define FED_PROTO_MSG_H

#include "core/err.h"
#include "core/train_spec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FED_PROTOCOL_VERSION   1
#define FED_SHA256_LEN         32
#define FED_SESSION_ID_LEN     16
#define FED_MSG_MAX_DIMS       8
#define FED_MSG_MAX_BASES      8  /* Hello.bases */
#define FED_MSG_ADMIN_SITE_MAX 64 /* AdminRequest.site: a CN (FED_NET_CN_MAX) */
/* Hello.capabilities of a site that keeps the frozen base of a model (Hello.bases) and
 * takes RoundStart.trainable_only transfers. */
#define FED_CAP_BASE_CACHE "base-cache"
/* Hello.capabilities of a site that sends the compressed encodings RoundStart.compress
 * asks for (core/codec.h streams). */
#define FED_CAP_CODEC "codec"
/* Hello.capabilities of a site that keeps the weights of the version it last received and
 * takes RoundStart.delta_from transfers (the change to the next version, compressed). */
#define FED_CAP_DELTA_DOWN "delta-down"

typedef enum fed_msg_type {
    FED_MSG_NONE = 0,
    FED_MSG_HELLO,
    FED_MSG_WELCOME,
    FED_MSG_ROUND_START,
    FED_MSG_CHUNK,
    FED_MSG_UPDATE,
    FED_MSG_CREDIT,
    FED_MSG_ERROR,
    FED_MSG_HEARTBEAT,
    FED_MSG_BYE,
    FED_MSG_SECAGG,        /* field 40: not in field order with the others */
    FED_MSG_ADMIN_REQUEST, /* field 60: admin -> coordinator (docs/ADMIN.md) */
    FED_MSG_ADMIN_REPLY,   /* field 61: the coordinator's answer to one AdminRequest */
} fed_msg_type;

/* "hello", "welcome", ... ("none" for FED_MSG_NONE or unknown values). */
const char *fed_msg_type_name(fed_msg_type t);

/* What a decoder accepts. fed_msg_default_limits() gives values good for models up to
 * FED_MAX_PARAMS: 16 MiB envelopes, 1 MiB strings (architecture JSON), 65 536 tensors,
 * 64 capabilities and metrics, 4 MiB chunks. */
typedef struct fed_msg_limits {
    size_t max_envelope; /* encoded bytes of one envelope */
    size_t max_string;   /* bytes of any string field */
    size_t max_tensors;  /* manifest entries */
    size_t max_list;     /* capabilities, metrics */
    size_t max_chunk;    /* ChunkHeader.length */
} fed_msg_limits;

fed_msg_limits fed_msg_default_limits(void);

typedef enum fed_dtype { FED_DTYPE_F32 = 0, FED_DTYPE_F16 = 1, FED_DTYPE_BF16 = 2 } fed_dtype;
typedef enum fed_encoding {
    FED_ENCODING_DELTA_F32 = 0,
    FED_ENCODING_SECAGG_MASKED = 1,
    FED_ENCODING_MOMENTS_F32 = 2,
    FED_ENCODING_DELTA_FP16 = 3, /* 3..7: a core/codec.h stream of codec (value - 2) */
    FED_ENCODING_DELTA_BF16 = 4,
    FED_ENCODING_DELTA_Q8 = 5,
    FED_ENCODING_DELTA_Q4 = 6,
    FED_ENCODING_DELTA_TOPK = 7,
} fed_encoding;

#define FED_MSG_SEED_LEN 32 /* SecAggParams.graph_seed */

typedef struct fed_msg_hello {
    const char *software;
    const char *const *capabilities;
    size_t num_capabilities;
    uint64_t train_examples, eval_examples;
    uint8_t session_id[FED_SESSION_ID_LEN];           /* exactly 16 bytes on the wire */
    uint8_t bases[FED_MSG_MAX_BASES][FED_SHA256_LEN]; /* frozen bases the site holds */
    size_t num_bases;                                 /* 0..FED_MSG_MAX_BASES */
} fed_msg_hello;

typedef struct fed_msg_welcome {
    const char *client_id;
    uint8_t session_id[FED_SESSION_ID_LEN];
    uint32_t max_chunk, credits;
    const char *coordinator;
} fed_msg_welcome;

typedef struct fed_msg_tensor {
    const char *name;
    int ndim; /* 0..FED_MSG_MAX_DIMS */
    uint64_t shape[FED_MSG_MAX_DIMS];
    fed_dtype dtype;
    bool trainable;
} fed_msg_tensor;

typedef struct fed_msg_manifest {
    const fed_msg_tensor *tensors;
    size_t num_tensors;
    uint64_t total_bytes; /* checked on decode: equals the sum of the tensors' bytes */
    uint8_t sha256[FED_SHA256_LEN];
    const char *arch;
    const char *input_transform; /* the model's standardiser JSON ("" or NULL: none) */
    bool has_base;               /* some tensors are frozen: the two digests below are set */
    uint8_t base_sha256[FED_SHA256_LEN];      /* of the frozen tensors back to back */
    uint8_t trainable_sha256[FED_SHA256_LEN]; /* of the trainable tensors back to back */
    bool has_tokenizer;                       /* the model reads text with this tokenizer: */
    uint8_t tokenizer_sha256[FED_SHA256_LEN]; /* of its canonical JSON */
} fed_msg_manifest;

/* TrainConfig: the round's training configuration, whose limits core/train_spec.h
 * states for every party. */
typedef fed_train_spec fed_msg_train_config;

/* RoundStart.secagg. Decoding checks participant < n, n >= 2, the seed's length and
 * finite, non-negative doubles; the protocol's own rules (privacy/secagg.h
 * fed_sa_params_check) are the client's to apply. */
typedef struct fed_msg_secagg_params {
    uint32_t participant, n, degree, threshold;
    double clip_range;
    uint32_t quant_range;
    uint8_t graph_seed[FED_MSG_SEED_LEN];
    double dp_clip, dp_noise_std;
} fed_msg_secagg_params;

typedef struct fed_msg_round_start {
    uint64_t round, model_version;
    fed_msg_train_config config;
    fed_msg_manifest manifest;
    uint64_t transfer_id, deadline_ms;
    uint64_t attempt;    /* 1-based attempt of the round; Update and Error echo it */
    bool stats;          /* the statistics round (round 0): moments, no training */
    bool trainable_only; /* the transfer holds the trainable tensors only (needs has_base,
                            a transfer_id and a non-empty base and trainable part) */
    bool has_secagg;     /* the round is securely aggregated with these parameters */
    fed_msg_secagg_params secagg;
    const char *compress; /* the uplink codec asked for (core/codec.h names; "" or NULL: none) */
    uint64_t delta_from;  /* non-zero: the transfer is the codec stream of the trainable
                             tensors' change from this version (< model_version, held by the
                             site) to model_version; needs a transfer_id, not trainable_only */
    uint64_t delta_bytes; /* the stream's length (> 0 with delta_from) */
    uint8_t delta_sha256[FED_SHA256_LEN]; /* of the stream */
} fed_msg_round_start;

typedef struct fed_msg_chunk {
    uint64_t transfer_id, offset;
    uint32_t length; /* raw bytes following the envelope, <= limits.max_chunk */
} fed_msg_chunk;

typedef struct fed_msg_metric {
    const char *name;
    double value;
} fed_msg_metric;

typedef struct fed_msg_update {
    uint64_t round, model_version, examples;
    const fed_msg_metric *metrics;
    size_t num_metrics;
    fed_encoding encoding;
    uint64_t transfer_id, total_bytes;
    uint8_t sha256[FED_SHA256_LEN];
    uint64_t attempt; /* RoundStart.attempt it answers */
} fed_msg_update;

typedef struct fed_msg_credit {
    uint64_t transfer_id;
    uint32_t chunks;
    uint64_t offset;
} fed_msg_credit;

/* fedtune.ErrorCode: what an Error message says went wrong, one table for both sides.
 * The codes that mirror a fed_err have its number. */
typedef enum fed_wire_err {
    FED_WIRE_NONE = 0,
    FED_WIRE_INVALID = 2,     /* not acceptable now (wrong round, attempt, state) */
    FED_WIRE_FORMAT = 3,      /* malformed */
    FED_WIRE_RANGE = 5,       /* a value out of range, or not finite */
    FED_WIRE_SHAPE = 7,       /* sizes do not match the model */
    FED_WIRE_UNSUPPORTED = 8, /* an encoding or feature this side lacks */
    FED_WIRE_DIGEST = 10,     /* bytes do not match their SHA-256 */
    FED_WIRE_PROTO = 11,      /* the protocol was not followed */
    FED_WIRE_AUTH = 13,       /* not allowed */
    FED_WIRE_TIMEOUT = 14,    /* too late (a site's deadline) */
    FED_WIRE_VERSION = 100,   /* another protocol version */
    FED_WIRE_BUSY = 101,      /* cannot now (memory, I/O): a later round may work */
    FED_WIRE_NO_MODEL = 102,  /* the site lacks the model version RoundStart names */
} fed_wire_err;

/* The code an Error carries for a local error e: its fed_err number where the protocol
 * has one, BUSY for resource trouble (memory, I/O, try again), INVALID otherwise. */
fed_wire_err fed_wire_err_of(fed_err e);

typedef struct fed_msg_error {
    uint32_t code; /* fed_wire_err */
    const char *text;
    uint64_t round;   /* a site's failed round (0: not about a round) */
    uint64_t attempt; /* with round: the attempt it is about */
} fed_msg_error;

/* SecAgg: one privacy/secagg.h message (1..max_envelope bytes). */
typedef struct fed_msg_secagg {
    uint64_t round;
    const uint8_t *msg;
    size_t len;
} fed_msg_secagg;

/* Bye: why the sender leaves; finished says the federation is over (a site exits)
 * rather than this coordinator process going away (a site reconnects). */
typedef struct fed_msg_bye {
    const char *reason;
    bool finished;
} fed_msg_bye;

/* AdminRequest: what an admin asks the running coordinator to do (fedtune.AdminAction). */
typedef enum fed_admin_action {
    FED_ADMIN_NONE = 0,
    FED_ADMIN_STATUS = 1,
    FED_ADMIN_PAUSE = 2,
    FED_ADMIN_RESUME = 3,
    FED_ADMIN_STOP = 4,
    FED_ADMIN_RELOAD_CRL = 5,
    FED_ADMIN_EVICT = 6,   /* site: its CN */
    FED_ADMIN_READMIT = 7, /* site: its CN */
} fed_admin_action;

/* "status", "pause", "resume", "stop", "reload-crl", "evict", "readmit" ("none" else). */
const char *fed_admin_action_name(fed_admin_action a);
/* The action named s (the names above), or FED_ADMIN_NONE. */
fed_admin_action fed_admin_action_parse(const char *s);

/* Decoding checks: action one of the values above but NONE; site 1..64 printable ASCII
 * characters (a CN) with EVICT and READMIT, empty with the others. */
typedef struct fed_msg_admin_request {
    fed_admin_action action;
    const char *site;
} fed_msg_admin_request;

/* AdminReply: ok with code 0, or not ok with a non-zero fed_wire_err. */
typedef struct fed_msg_admin_reply {
    bool ok;
    uint32_t code; /* fed_wire_err */
    const char *text;
} fed_msg_admin_reply;

typedef struct fed_msg {
    uint32_t version; /* as received; encoding always writes FED_PROTOCOL_VERSION */
    uint64_t seq;
    fed_msg_type type;
    union {
        fed_msg_hello hello;
        fed_msg_welcome welcome;
        fed_msg_round_start round_start;
        fed_msg_chunk chunk;
        fed_msg_update update;
        fed_msg_credit credit;
        fed_msg_error error;
        uint64_t heartbeat_ms;
        fed_msg_bye bye;
        fed_msg_secagg secagg;
        fed_msg_admin_request admin_request;
        fed_msg_admin_reply admin_reply;
    } u;
    /* The one block holding every string and array of a decoded or copied message, which
     * fed_msg_free releases; NULL in a built message (it borrows). Never set by hand. */
    void *arena;
} fed_msg;

/* Bytes fed_msg_pack will write for m; 0 when m would not pack (the reason is in
 * fed_errmsg(): see fed_msg_pack). An encoded envelope is never empty. */
size_t fed_msg_packed_size(const fed_msg *m);
/* Encodes m into buf (at least fed_msg_packed_size bytes); returns bytes written, or 0
 * with *err set (err may be NULL): FED_EINVAL for type NONE or a message that violates
 * the default limits, FED_ENOMEM (a manifest or metric list needs a small index). */
size_t fed_msg_pack(const fed_msg *m, uint8_t *buf, fed_err *err);
/* Encodes into a fresh fed_malloc'd buffer (*buf NULL and *len 0 on error); errors as
 * fed_msg_pack. */
fed_err fed_msg_encode(const fed_msg *m, uint8_t **buf, size_t *len) FED_MUST_USE;

/* Decodes len bytes into *out (zeroed first), which then owns its strings and arrays
 * (nothing points into buf); limits NULL means the defaults. FED_EPROTO
 * with a detail naming the field for anything malformed, over a limit, or of an unknown
 * version; FED_ENOMEM. On error *out holds nothing to free; on a version mismatch only
 * out->version is set (the peer's), so the caller can answer Error{ERR_VERSION}.
 * protobuf-c's own allocations are capped in proportion to len and the limits, so a
 * small envelope of many empty entries cannot make it allocate gigabytes. */
fed_err fed_msg_decode(fed_msg *out, const uint8_t *buf, size_t len,
                       const fed_msg_limits *limits) FED_MUST_USE;
/* Copies src into *dst, which then owns copies of every string and array src points to
 * (dst may be src: a borrowed message becomes an owned one). NULL strings become "".
 * FED_EINVAL for an array that is NULL with entries, FED_ENOMEM; on error *dst is zeroed.
 * Checks nothing else: what may be sent is fed_msg_encode's to say. */
fed_err fed_msg_copy(fed_msg *dst, const fed_msg *src) FED_MUST_USE;
/* Releases what m owns (the arena of a decoded or copied message; nothing for a built
 * one) and zeroes m. NULL-safe; harmless twice. */
void fed_msg_free(fed_msg *m);

/* Bytes of one tensor of the manifest (numel x dtype size; 1 element when ndim is 0);
 * false on overflow, an unknown dtype or ndim outside 0..FED_MSG_MAX_DIMS. */
bool fed_msg_tensor_bytes(const fed_msg_tensor *t, uint64_t *bytes);

/* ---- the parts of a manifest's buffer -------------------------------------------------
 * A model's flat buffer (float32 tensors back to back in manifest order) splits into its
 * frozen part, the base, which no round changes, and its trainable part, which every
 * round's update and, once a site holds the base, every model transfer carry: each part
 * is its tensors back to back in manifest order. The manifest must be all float32
 * (what a coordinator sends). */

/* Floats of the trainable (or frozen) tensors of m. */
size_t fed_manifest_part_floats(const fed_msg_manifest *m, bool trainable);
/* part (fed_manifest_part_floats(m, trainable)) = those tensors of full, back to back. */
void fed_manifest_gather(const fed_msg_manifest *m, bool trainable, const float *full, float *part);
/* The inverse: writes the trainable (or frozen) tensors of full from part. */
void fed_manifest_scatter(const fed_msg_manifest *m, bool trainable, const float *part,
                          float *full);

#endif
