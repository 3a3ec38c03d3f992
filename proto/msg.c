/* The fed_msg codec: fed_msg <-> protobuf-c structs <-> bytes, and the checks that make a
 * decoded message safe to use. This is the only file that includes the generated
 * protobuf-c header. One checker (check_envelope) runs over the protobuf-c form in both
 * directions: after unpacking (FED_EPROTO) and before packing (FED_EINVAL), so the two
 * sides agree on what is valid. Framing, chunk payloads and digests of transfers live in
 * net/, not here.
 *
 * Decoding unpacks through an allocator that goes through fed_malloc (so the
 * fail-the-Nth-allocation hook reaches protobuf-c) and refuses to hand out more than a
 * budget derived from the input length and the limits: protobuf-c sizes its arrays from
 * element counts before we can look at them, and a 2-byte empty entry costs it ~200
 * bytes. A checked envelope is then seen as a borrowed fed_msg (view_of, the mirror of
 * wire_build) of which the decoded message is a fed_msg_copy: one block, measured then
 * carved, holds every string and array it owns, so fed_msg_free is one fed_free.
 * Encoding points protobuf-c structs at the caller's data; only the per-tensor and
 * per-metric structs (and their pointer arrays) are allocated. */
#include "proto/msg.h"

#include "core/alloc.h"
#include "core/utf8.h"
#include "fedtune.pb-c.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <inttypes.h>
#include <string.h>

/* ---- names, limits, sizes ------------------------------------------------------------ */

const char *fed_msg_type_name(fed_msg_type t) {
    switch (t) {
    case FED_MSG_HELLO:
        return "hello";
    case FED_MSG_WELCOME:
        return "welcome";
    case FED_MSG_ROUND_START:
        return "round_start";
    case FED_MSG_CHUNK:
        return "chunk";
    case FED_MSG_UPDATE:
        return "update";
    case FED_MSG_CREDIT:
        return "credit";
    case FED_MSG_ERROR:
        return "error";
    case FED_MSG_HEARTBEAT:
        return "heartbeat";
    case FED_MSG_BYE:
        return "bye";
    case FED_MSG_SECAGG:
        return "secagg";
    case FED_MSG_ADMIN_REQUEST:
        return "admin_request";
    case FED_MSG_ADMIN_REPLY:
        return "admin_reply";
    case FED_MSG_NONE:
        break;
    }
    return "none";
}

static const char *const admin_names[] = {"none", "status",     "pause", "resume",
                                          "stop", "reload-crl", "evict", "readmit"};

const char *fed_admin_action_name(fed_admin_action a) {
    if ((int)a <= 0 || (size_t)a >= sizeof admin_names / sizeof admin_names[0]) return "none";
    return admin_names[a];
}

fed_admin_action fed_admin_action_parse(const char *s) {
    for (size_t i = 1; s && i < sizeof admin_names / sizeof admin_names[0]; i++)
        if (strcmp(s, admin_names[i]) == 0) return (fed_admin_action)i;
    return FED_ADMIN_NONE;
}

fed_msg_limits fed_msg_default_limits(void) {
    fed_msg_limits l = {
        .max_envelope = (size_t)16 << 20,
        .max_string = (size_t)1 << 20,
        .max_tensors = 65536,
        .max_list = 64,
        .max_chunk = (size_t)4 << 20,
    };
    return l;
}

/* Bytes of one element of a wire dtype; 0 for values this build does not know. */
static uint64_t dtype_size(int dtype) {
    switch (dtype) {
    case FEDTUNE__DTYPE__DTYPE_F32:
        return 4;
    case FEDTUNE__DTYPE__DTYPE_F16:
    case FEDTUNE__DTYPE__DTYPE_BF16:
        return 2;
    default:
        return 0;
    }
}

/* numel(shape) * dtype size into *bytes; false on overflow or an unknown dtype. */
static bool shape_bytes(const uint64_t *shape, size_t ndim, int dtype, uint64_t *bytes) {
    uint64_t n = dtype_size(dtype);
    if (n == 0) return false;
    for (size_t i = 0; i < ndim; i++) {
        if (shape[i] != 0 && n > UINT64_MAX / shape[i]) return false;
        n *= shape[i];
    }
    *bytes = n;
    return true;
}

bool fed_msg_tensor_bytes(const fed_msg_tensor *t, uint64_t *bytes) {
    if (t->ndim < 0 || t->ndim > FED_MSG_MAX_DIMS) return false;
    return shape_bytes(t->shape, (size_t)t->ndim, (int)t->dtype, bytes);
}

/* ---- checks over the protobuf-c form --------------------------------------------------- */

/* Records "<path>: <detail>" under code. path is a printf format (paths with indices). */
typedef struct checker {
    const fed_msg_limits *lim;
    fed_err code; /* FED_EPROTO when decoding, FED_EINVAL when encoding */
} checker;

static fed_err check_string(const checker *c, const char *s, const char *path) {
    if (!s) return fed_errorf(c->code, "%s: NULL", path);
    size_t n = strlen(s);
    if (n > c->lim->max_string)
        return fed_errorf(c->code, "%s: %zu bytes, limit %zu", path, n, c->lim->max_string);
    size_t bad = fed_utf8_bad_at(s, n);
    if (bad < n) return fed_errorf(c->code, "%s: not valid UTF-8 (byte %zu)", path, bad);
    return FED_OK;
}

static fed_err check_count(const checker *c, size_t n, const void *array, size_t limit,
                           const char *path) {
    if (n > limit) return fed_errorf(c->code, "%s: %zu entries, limit %zu", path, n, limit);
    if (n && !array) return fed_errorf(c->code, "%s: NULL with %zu entries", path, n);
    return FED_OK;
}

static fed_err check_bytes(const checker *c, const ProtobufCBinaryData *b, size_t want,
                           const char *path) {
    if (b->len != want)
        return fed_errorf(c->code, "%s: %zu bytes (must be %zu)", path, b->len, want);
    return FED_OK;
}

static fed_err check_enum(const checker *c, const ProtobufCEnumDescriptor *d, int v,
                          const char *path) {
    if (!protobuf_c_enum_descriptor_get_value(d, v))
        return fed_errorf(c->code, "%s: unknown value %d", path, v);
    return FED_OK;
}

static fed_err check_finite(const checker *c, double v, const char *path) {
    if (!isfinite(v)) return fed_errorf(c->code, "%s: %g (must be finite)", path, v);
    return FED_OK;
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        fed_err e_ = (expr);                                                                       \
        if (e_ != FED_OK) return e_;                                                               \
    } while (0)

static fed_err check_hello(const checker *c, const Fedtune__Hello *h) {
    TRY(check_string(c, h->software, "hello.software"));
    TRY(check_count(c, h->n_capabilities, h->capabilities, c->lim->max_list, "hello.capabilities"));
    char path[64];
    for (size_t i = 0; i < h->n_capabilities; i++) {
        snprintf(path, sizeof path, "hello.capabilities[%zu]", i);
        TRY(check_string(c, h->capabilities[i], path));
    }
    TRY(check_bytes(c, &h->session_id, FED_SESSION_ID_LEN, "hello.session_id"));
    if (h->n_bases > FED_MSG_MAX_BASES)
        return fed_errorf(c->code, "hello.bases: %zu entries, limit %d", h->n_bases,
                          FED_MSG_MAX_BASES);
    if (h->n_bases && !h->bases) return fed_errorf(c->code, "hello.bases: NULL");
    for (size_t i = 0; i < h->n_bases; i++) {
        snprintf(path, sizeof path, "hello.bases[%zu]", i);
        TRY(check_bytes(c, &h->bases[i], FED_SHA256_LEN, path));
    }
    return FED_OK;
}

static fed_err check_welcome(const checker *c, const Fedtune__Welcome *w) {
    TRY(check_string(c, w->client_id, "welcome.client_id"));
    TRY(check_bytes(c, &w->session_id, FED_SESSION_ID_LEN, "welcome.session_id"));
    return check_string(c, w->coordinator, "welcome.coordinator");
}

static fed_err check_config(const checker *c, const Fedtune__TrainConfig *t) {
    if (!t) return FED_OK; /* absent: all defaults */
    TRY(check_string(c, t->optimizer, "round_start.config.optimizer"));
    TRY(check_finite(c, (double)t->lr, "round_start.config.lr"));
    TRY(check_finite(c, (double)t->momentum, "round_start.config.momentum"));
    TRY(check_finite(c, (double)t->weight_decay, "round_start.config.weight_decay"));
    return check_finite(c, (double)t->clip_norm, "round_start.config.clip_norm");
}

static fed_err check_tensor(const checker *c, const Fedtune__TensorInfo *t, size_t i,
                            uint64_t *bytes) {
    char path[96];
    if (!t) return fed_errorf(c->code, "round_start.manifest.tensors[%zu]: NULL", i);
    snprintf(path, sizeof path, "round_start.manifest.tensors[%zu].name", i);
    TRY(check_string(c, t->name, path));
    if (t->n_shape > FED_MSG_MAX_DIMS)
        return fed_errorf(c->code,
                          "round_start.manifest.tensors[%zu].shape: %zu dimensions, limit %d", i,
                          t->n_shape, FED_MSG_MAX_DIMS);
    if (t->n_shape && !t->shape)
        return fed_errorf(c->code, "round_start.manifest.tensors[%zu].shape: NULL", i);
    for (size_t d = 0; d < t->n_shape; d++)
        if (t->shape[d] == 0)
            return fed_errorf(
                c->code, "round_start.manifest.tensors[%zu].shape[%zu]: 0 (must be > 0)", i, d);
    snprintf(path, sizeof path, "round_start.manifest.tensors[%zu].dtype", i);
    TRY(check_enum(c, &fedtune__dtype__descriptor, (int)t->dtype, path));
    if (!shape_bytes(t->shape, t->n_shape, (int)t->dtype, bytes))
        return fed_errorf(c->code, "round_start.manifest.tensors[%zu]: size overflows 64 bits", i);
    return FED_OK;
}

static fed_err check_manifest(const checker *c, const Fedtune__Manifest *m) {
    static const Fedtune__Manifest empty = FEDTUNE__MANIFEST__INIT;
    if (!m) m = &empty; /* absent: all defaults, which fail the digest check below */
    TRY(check_count(c, m->n_tensors, m->tensors, c->lim->max_tensors,
                    "round_start.manifest.tensors"));
    uint64_t sum = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        uint64_t bytes = 0;
        TRY(check_tensor(c, m->tensors[i], i, &bytes));
        if (bytes > UINT64_MAX - sum)
            return fed_errorf(c->code,
                              "round_start.manifest.tensors: total size overflows "
                              "64 bits at tensors[%zu]",
                              i);
        sum += bytes;
    }
    if (m->total_bytes != sum)
        return fed_errorf(c->code,
                          "round_start.manifest.total_bytes: %llu, but the tensors hold %llu "
                          "bytes",
                          (unsigned long long)m->total_bytes, (unsigned long long)sum);
    TRY(check_bytes(c, &m->sha256, FED_SHA256_LEN, "round_start.manifest.sha256"));
    TRY(check_string(c, m->arch, "round_start.manifest.arch"));
    TRY(check_string(c, m->input_transform, "round_start.manifest.input_transform"));
    /* The base is the frozen tensors: its digests (both or neither; a coordinator that
     * does not send trainable-only transfers may leave them out) need one frozen tensor
     * and one trainable, or there would be no base or nothing to train. */
    if (m->tokenizer_sha256.len)
        TRY(check_bytes(c, &m->tokenizer_sha256, FED_SHA256_LEN,
                        "round_start.manifest.tokenizer_sha256"));
    if (!m->base_sha256.len && !m->trainable_sha256.len) return FED_OK;
    TRY(check_bytes(c, &m->base_sha256, FED_SHA256_LEN, "round_start.manifest.base_sha256"));
    TRY(check_bytes(c, &m->trainable_sha256, FED_SHA256_LEN,
                    "round_start.manifest.trainable_sha256"));
    size_t frozen = 0;
    for (size_t i = 0; i < m->n_tensors; i++) frozen += !m->tensors[i]->trainable;
    if (!frozen || frozen == m->n_tensors)
        return fed_errorf(c->code, "round_start.manifest.base_sha256: %s",
                          frozen ? "every tensor is frozen" : "no tensor is frozen");
    return FED_OK;
}

static fed_err check_chunk(const checker *c, const Fedtune__ChunkHeader *h) {
    if (h->length > c->lim->max_chunk)
        return fed_errorf(c->code, "chunk.length: %u bytes, limit %zu", (unsigned)h->length,
                          c->lim->max_chunk);
    if (h->offset > UINT64_MAX - h->length)
        return fed_errorf(c->code, "chunk.offset: %llu + length %u overflows 64 bits",
                          (unsigned long long)h->offset, (unsigned)h->length);
    return FED_OK;
}

static fed_err check_update(const checker *c, const Fedtune__Update *u) {
    TRY(check_count(c, u->n_metrics, u->metrics, c->lim->max_list, "update.metrics"));
    char path[64];
    for (size_t i = 0; i < u->n_metrics; i++) {
        const Fedtune__Metric *m = u->metrics[i];
        if (!m) return fed_errorf(c->code, "update.metrics[%zu]: NULL", i);
        snprintf(path, sizeof path, "update.metrics[%zu].name", i);
        TRY(check_string(c, m->name, path));
        snprintf(path, sizeof path, "update.metrics[%zu].value", i);
        TRY(check_finite(c, m->value, path));
    }
    TRY(check_enum(c, &fedtune__encoding__descriptor, (int)u->encoding, "update.encoding"));
    return check_bytes(c, &u->sha256, FED_SHA256_LEN, "update.sha256");
}

static fed_err check_secagg_params(const checker *c, const Fedtune__SecAggParams *p) {
    if (p->n < 2) return fed_errorf(c->code, "round_start.secagg.n: %u (must be >= 2)", p->n);
    if (p->participant >= p->n)
        return fed_errorf(c->code, "round_start.secagg.participant: %u (must be < n %u)",
                          p->participant, p->n);
    TRY(check_bytes(c, &p->graph_seed, FED_MSG_SEED_LEN, "round_start.secagg.graph_seed"));
    const double v[3] = {p->clip_range, p->dp_clip, p->dp_noise_std};
    const char *const name[3] = {"clip_range", "dp_clip", "dp_noise_std"};
    for (int i = 0; i < 3; i++)
        if (!(isfinite(v[i]) && v[i] >= 0))
            return fed_errorf(c->code, "round_start.secagg.%s: %g (must be finite and >= 0)",
                              name[i], v[i]);
    return FED_OK;
}

static fed_err check_secagg(const checker *c, const Fedtune__SecAgg *s) {
    if (s->msg.len == 0) return fed_errorf(c->code, "secagg.msg: empty");
    if (s->msg.len > c->lim->max_envelope)
        return fed_errorf(c->code, "secagg.msg: %zu bytes, limit %zu", s->msg.len,
                          c->lim->max_envelope);
    return FED_OK;
}

static fed_err check_admin_request(const checker *c, const Fedtune__AdminRequest *r) {
    TRY(check_enum(c, &fedtune__admin_action__descriptor, (int)r->action, "admin_request.action"));
    if (r->action == FEDTUNE__ADMIN_ACTION__ADMIN_NONE)
        return fed_errorf(c->code, "admin_request.action: none");
    TRY(check_string(c, r->site, "admin_request.site"));
    size_t n = strlen(r->site);
    bool needs = r->action == FEDTUNE__ADMIN_ACTION__ADMIN_EVICT ||
                 r->action == FEDTUNE__ADMIN_ACTION__ADMIN_READMIT;
    if (needs && (n == 0 || n > FED_MSG_ADMIN_SITE_MAX))
        return fed_errorf(c->code, "admin_request.site: %zu bytes (1..%d for %s)", n,
                          FED_MSG_ADMIN_SITE_MAX, admin_names[r->action]);
    if (!needs && n)
        return fed_errorf(c->code, "admin_request.site: set for %s, which takes no site",
                          admin_names[r->action]);
    for (size_t i = 0; i < n; i++) /* a CN: printable ASCII (it goes into log lines) */
        if ((unsigned char)r->site[i] < 0x20 || (unsigned char)r->site[i] > 0x7e)
            return fed_errorf(c->code,
                              "admin_request.site: byte 0x%02x at %zu is not printable ASCII",
                              (unsigned char)r->site[i], i);
    return FED_OK;
}

static fed_err check_admin_reply(const checker *c, const Fedtune__AdminReply *r) {
    TRY(check_enum(c, &fedtune__error_code__descriptor, (int)r->code, "admin_reply.code"));
    if (r->ok != (r->code == FEDTUNE__ERROR_CODE__ERR_NONE))
        return fed_errorf(c->code, "admin_reply.code: %d with ok %s", (int)r->code,
                          r->ok ? "true" : "false");
    return check_string(c, r->text, "admin_reply.text");
}

static fed_err check_error(const checker *c, const Fedtune__Error *e) {
    TRY(check_enum(c, &fedtune__error_code__descriptor, (int)e->code, "error.code"));
    return check_string(c, e->text, "error.text");
}

/* Everything a peer must not be sent or trusted with: version, body, then the body's
 * strings, counts, digests, shapes, enums and floats, in field order. */
static fed_err check_envelope(const Fedtune__Envelope *e, const fed_msg_limits *lim, fed_err code) {
    checker c = {lim, code};
    if (e->version != FED_PROTOCOL_VERSION)
        return fed_errorf(code, "version %u, this build speaks %d", (unsigned)e->version,
                          FED_PROTOCOL_VERSION);
    switch (e->body_case) {
    case FEDTUNE__ENVELOPE__BODY_HELLO:
        if (e->hello) return check_hello(&c, e->hello);
        break;
    case FEDTUNE__ENVELOPE__BODY_WELCOME:
        if (e->welcome) return check_welcome(&c, e->welcome);
        break;
    case FEDTUNE__ENVELOPE__BODY_ROUND_START:
        if (e->round_start) {
            const Fedtune__RoundStart *r = e->round_start;
            TRY(check_config(&c, r->config));
            TRY(check_manifest(&c, r->manifest));
            TRY(check_string(&c, r->compress, "round_start.compress"));
            if (r->trainable_only && (!r->transfer_id || !r->manifest->base_sha256.len))
                return fed_errorf(code, "round_start.trainable_only: %s",
                                  r->transfer_id ? "the manifest has no frozen base"
                                                 : "no transfer (transfer_id 0)");
            if (r->delta_from) {
                if (!r->transfer_id || r->trainable_only || r->delta_from >= r->model_version ||
                    !r->delta_bytes)
                    return fed_errorf(code,
                                      "round_start.delta_from %" PRIu64 ": needs a transfer, not "
                                      "trainable_only, a version below model_version %" PRIu64
                                      " and delta_bytes > 0",
                                      r->delta_from, r->model_version);
                TRY(check_bytes(&c, &r->delta_sha256, FED_SHA256_LEN, "round_start.delta_sha256"));
            } else if (r->delta_bytes || r->delta_sha256.len) {
                return fed_errorf(code, "round_start.delta_bytes: set without delta_from");
            }
            if (e->round_start->secagg) return check_secagg_params(&c, e->round_start->secagg);
            return FED_OK;
        }
        break;
    case FEDTUNE__ENVELOPE__BODY_CHUNK:
        if (e->chunk) return check_chunk(&c, e->chunk);
        break;
    case FEDTUNE__ENVELOPE__BODY_UPDATE:
        if (e->update) return check_update(&c, e->update);
        break;
    case FEDTUNE__ENVELOPE__BODY_CREDIT:
        if (e->credit) return FED_OK;
        break;
    case FEDTUNE__ENVELOPE__BODY_ERROR:
        if (e->error) return check_error(&c, e->error);
        break;
    case FEDTUNE__ENVELOPE__BODY_HEARTBEAT:
        if (e->heartbeat) return FED_OK;
        break;
    case FEDTUNE__ENVELOPE__BODY_BYE:
        if (e->bye) return check_string(&c, e->bye->reason, "bye.reason");
        break;
    case FEDTUNE__ENVELOPE__BODY_SECAGG:
        if (e->secagg) return check_secagg(&c, e->secagg);
        break;
    case FEDTUNE__ENVELOPE__BODY_ADMIN_REQUEST:
        if (e->admin_request) return check_admin_request(&c, e->admin_request);
        break;
    case FEDTUNE__ENVELOPE__BODY_ADMIN_REPLY:
        if (e->admin_reply) return check_admin_reply(&c, e->admin_reply);
        break;
    default:
        break;
    }
    return fed_errorf(code, "envelope: no body (missing, or a kind this build does not know)");
}

/* ---- encoding ---------------------------------------------------------------------------- */

/* A fed_msg seen as protobuf-c structs. Everything points into the fed_msg except the
 * TensorInfo/Metric structs and their pointer arrays, which live in elems. */
typedef struct wire {
    Fedtune__Envelope env;
    union {
        Fedtune__Hello hello;
        Fedtune__Welcome welcome;
        Fedtune__RoundStart round_start;
        Fedtune__ChunkHeader chunk;
        Fedtune__Update update;
        Fedtune__Credit credit;
        Fedtune__Error error;
        Fedtune__Heartbeat heartbeat;
        Fedtune__Bye bye;
        Fedtune__SecAgg secagg;
        Fedtune__AdminRequest admin_request;
        Fedtune__AdminReply admin_reply;
    } body;
    Fedtune__TrainConfig config;
    Fedtune__SecAggParams secagg_params;
    Fedtune__Manifest manifest;
    ProtobufCBinaryData bases[FED_MSG_MAX_BASES]; /* Hello.bases */
    void *elems; /* fed_malloc'd: n structs, then n pointers to them */
} wire;

/* protobuf-c's structs are not const-correct; packing only reads through them, so
 * dropping the const of the fed_msg's borrowed data (here, and a tensor's shape below) is
 * safe. */
static char *str(const char *s) {
    static char empty[1];
    return s ? (char *)s : empty;
}

static char **strs(const char *const *s) {
    return (char **)s;
}

static ProtobufCBinaryData bin(const uint8_t *data, size_t len) {
    ProtobufCBinaryData b = {len, (uint8_t *)data};
    return b;
}

/* n structs of elem_size bytes followed by n pointers to them, in w->elems. */
static fed_err alloc_elems(wire *w, size_t n, size_t elem_size, void ***ptrs, char **structs) {
    *ptrs = NULL;
    *structs = NULL;
    if (n == 0) return FED_OK;
    w->elems = fed_mallocarray(n, elem_size + sizeof(void *));
    if (!w->elems) return FED_ENOMEM;
    *structs = w->elems;
    *ptrs = (void **)(void *)(*structs + n * elem_size); /* elem_size is pointer-aligned */
    return FED_OK;
}

static fed_err build_round_start(wire *w, const fed_msg_round_start *r) {
    Fedtune__RoundStart *p = &w->body.round_start;
    fedtune__round_start__init(p);
    p->round = r->round;
    p->model_version = r->model_version;
    p->transfer_id = r->transfer_id;
    p->deadline_ms = r->deadline_ms;
    p->attempt = r->attempt;
    p->stats = r->stats;
    p->trainable_only = r->trainable_only;
    p->compress = str(r->compress);
    p->delta_from = r->delta_from;
    p->delta_bytes = r->delta_bytes; /* checked with the rest: only with delta_from */
    if (r->delta_from) p->delta_sha256 = bin(r->delta_sha256, FED_SHA256_LEN);

    const fed_msg_train_config *tc = &r->config;
    fedtune__train_config__init(&w->config);
    w->config.epochs = tc->epochs;
    w->config.batch = tc->batch;
    w->config.optimizer = str(tc->optimizer);
    w->config.lr = tc->lr;
    w->config.momentum = tc->momentum;
    w->config.weight_decay = tc->weight_decay;
    w->config.clip_norm = tc->clip_norm;
    w->config.seed = tc->seed;
    w->config.max_steps = tc->max_steps;
    p->config = &w->config;

    const fed_msg_manifest *m = &r->manifest;
    Fedtune__Manifest *pm = &w->manifest;
    fedtune__manifest__init(pm);
    pm->total_bytes = m->total_bytes;
    pm->sha256 = bin(m->sha256, FED_SHA256_LEN);
    pm->arch = str(m->arch);
    pm->input_transform = str(m->input_transform);
    if (m->has_tokenizer) pm->tokenizer_sha256 = bin(m->tokenizer_sha256, FED_SHA256_LEN);
    if (m->has_base) {
        pm->base_sha256 = bin(m->base_sha256, FED_SHA256_LEN);
        pm->trainable_sha256 = bin(m->trainable_sha256, FED_SHA256_LEN);
    }
    p->manifest = pm;
    if (m->num_tensors > fed_msg_default_limits().max_tensors)
        return fed_errorf(FED_EINVAL, "round_start.manifest.tensors: %zu entries, limit %zu",
                          m->num_tensors, fed_msg_default_limits().max_tensors);
    if (m->num_tensors && !m->tensors)
        return fed_errorf(FED_EINVAL, "round_start.manifest.tensors: NULL with %zu entries",
                          m->num_tensors);
    void **ptrs;
    char *structs;
    TRY(alloc_elems(w, m->num_tensors, sizeof(Fedtune__TensorInfo), &ptrs, &structs));
    for (size_t i = 0; i < m->num_tensors; i++) {
        const fed_msg_tensor *t = &m->tensors[i];
        Fedtune__TensorInfo *pt = (Fedtune__TensorInfo *)(void *)structs + i;
        fedtune__tensor_info__init(pt);
        if (t->ndim < 0 || t->ndim > FED_MSG_MAX_DIMS)
            return fed_errorf(FED_EINVAL,
                              "round_start.manifest.tensors[%zu].shape: %d dimensions, limit %d", i,
                              t->ndim, FED_MSG_MAX_DIMS);
        pt->name = str(t->name);
        pt->n_shape = (size_t)t->ndim;
        pt->shape = (uint64_t *)t->shape;
        pt->dtype = (Fedtune__Dtype)t->dtype;
        pt->trainable = t->trainable;
        ptrs[i] = pt;
    }
    pm->n_tensors = m->num_tensors;
    pm->tensors = (Fedtune__TensorInfo **)ptrs;
    if (r->has_secagg) {
        const fed_msg_secagg_params *sa = &r->secagg;
        Fedtune__SecAggParams *ps = &w->secagg_params;
        fedtune__sec_agg_params__init(ps);
        ps->participant = sa->participant;
        ps->n = sa->n;
        ps->degree = sa->degree;
        ps->threshold = sa->threshold;
        ps->clip_range = sa->clip_range;
        ps->quant_range = sa->quant_range;
        ps->graph_seed = bin(sa->graph_seed, FED_MSG_SEED_LEN);
        ps->dp_clip = sa->dp_clip;
        ps->dp_noise_std = sa->dp_noise_std;
        p->secagg = ps;
    }
    w->env.round_start = p;
    return FED_OK;
}

static fed_err build_update(wire *w, const fed_msg_update *u) {
    Fedtune__Update *p = &w->body.update;
    fedtune__update__init(p);
    p->round = u->round;
    p->model_version = u->model_version;
    p->examples = u->examples;
    p->encoding = (Fedtune__Encoding)u->encoding;
    p->transfer_id = u->transfer_id;
    p->attempt = u->attempt;
    p->total_bytes = u->total_bytes;
    p->sha256 = bin(u->sha256, FED_SHA256_LEN);
    w->env.update = p;
    if (u->num_metrics > fed_msg_default_limits().max_list)
        return fed_errorf(FED_EINVAL, "update.metrics: %zu entries, limit %zu", u->num_metrics,
                          fed_msg_default_limits().max_list);
    if (u->num_metrics && !u->metrics)
        return fed_errorf(FED_EINVAL, "update.metrics: NULL with %zu entries", u->num_metrics);
    void **ptrs;
    char *structs;
    TRY(alloc_elems(w, u->num_metrics, sizeof(Fedtune__Metric), &ptrs, &structs));
    for (size_t i = 0; i < u->num_metrics; i++) {
        Fedtune__Metric *pm = (Fedtune__Metric *)(void *)structs + i;
        fedtune__metric__init(pm);
        pm->name = str(u->metrics[i].name);
        pm->value = u->metrics[i].value;
        ptrs[i] = pm;
    }
    p->n_metrics = u->num_metrics;
    p->metrics = (Fedtune__Metric **)ptrs;
    return FED_OK;
}

/* The oneof case numbers are the field numbers: in fed_msg_type order from 10 up to Bye,
 * then SecAgg at 40, AdminRequest and AdminReply at 60 and 61. */
static Fedtune__Envelope__BodyCase body_case_of(fed_msg_type t) {
    if (t == FED_MSG_SECAGG) return FEDTUNE__ENVELOPE__BODY_SECAGG;
    if (t == FED_MSG_ADMIN_REQUEST) return FEDTUNE__ENVELOPE__BODY_ADMIN_REQUEST;
    if (t == FED_MSG_ADMIN_REPLY) return FEDTUNE__ENVELOPE__BODY_ADMIN_REPLY;
    return (Fedtune__Envelope__BodyCase)(FEDTUNE__ENVELOPE__BODY_HELLO + ((int)t - FED_MSG_HELLO));
}

static fed_msg_type type_of(Fedtune__Envelope__BodyCase c) {
    if (c == FEDTUNE__ENVELOPE__BODY_SECAGG) return FED_MSG_SECAGG;
    if (c == FEDTUNE__ENVELOPE__BODY_ADMIN_REQUEST) return FED_MSG_ADMIN_REQUEST;
    if (c == FEDTUNE__ENVELOPE__BODY_ADMIN_REPLY) return FED_MSG_ADMIN_REPLY;
    return (fed_msg_type)(FED_MSG_HELLO + ((int)c - FEDTUNE__ENVELOPE__BODY_HELLO));
}

/* Fills *w from m and checks it against the default limits; FED_EINVAL naming the field,
 * FED_ENOMEM. Release w with wire_release() whatever the result. */
static fed_err wire_build(wire *w, const fed_msg *m) {
    memset(w, 0, sizeof *w);
    fedtune__envelope__init(&w->env);
    w->env.version = FED_PROTOCOL_VERSION;
    w->env.seq = m->seq;
    switch (m->type) {
    case FED_MSG_HELLO: {
        const fed_msg_hello *h = &m->u.hello;
        Fedtune__Hello *p = &w->body.hello;
        fedtune__hello__init(p);
        p->software = str(h->software);
        p->n_capabilities = h->num_capabilities;
        p->capabilities = strs(h->capabilities);
        p->train_examples = h->train_examples;
        p->eval_examples = h->eval_examples;
        p->session_id = bin(h->session_id, FED_SESSION_ID_LEN);
        if (h->num_bases > FED_MSG_MAX_BASES)
            return fed_errorf(FED_EINVAL, "hello.bases: %zu entries, limit %d", h->num_bases,
                              FED_MSG_MAX_BASES);
        for (size_t i = 0; i < h->num_bases; i++) w->bases[i] = bin(h->bases[i], FED_SHA256_LEN);
        p->n_bases = h->num_bases;
        p->bases = h->num_bases ? w->bases : NULL;
        w->env.hello = p;
        break;
    }
    case FED_MSG_WELCOME: {
        const fed_msg_welcome *h = &m->u.welcome;
        Fedtune__Welcome *p = &w->body.welcome;
        fedtune__welcome__init(p);
        p->client_id = str(h->client_id);
        p->session_id = bin(h->session_id, FED_SESSION_ID_LEN);
        p->max_chunk = h->max_chunk;
        p->credits = h->credits;
        p->coordinator = str(h->coordinator);
        w->env.welcome = p;
        break;
    }
    case FED_MSG_ROUND_START:
        TRY(build_round_start(w, &m->u.round_start));
        break;
    case FED_MSG_CHUNK: {
        Fedtune__ChunkHeader *p = &w->body.chunk;
        fedtune__chunk_header__init(p);
        p->transfer_id = m->u.chunk.transfer_id;
        p->offset = m->u.chunk.offset;
        p->length = m->u.chunk.length;
        w->env.chunk = p;
        break;
    }
    case FED_MSG_UPDATE:
        TRY(build_update(w, &m->u.update));
        break;
    case FED_MSG_CREDIT: {
        Fedtune__Credit *p = &w->body.credit;
        fedtune__credit__init(p);
        p->transfer_id = m->u.credit.transfer_id;
        p->chunks = m->u.credit.chunks;
        p->offset = m->u.credit.offset;
        w->env.credit = p;
        break;
    }
    case FED_MSG_ERROR: {
        Fedtune__Error *p = &w->body.error;
        fedtune__error__init(p);
        if (m->u.error.code > INT32_MAX)
            return fed_errorf(FED_EINVAL, "error.code: unknown value %u",
                              (unsigned)m->u.error.code);
        p->code = (Fedtune__ErrorCode)m->u.error.code;
        p->text = str(m->u.error.text);
        p->round = m->u.error.round;
        p->attempt = m->u.error.attempt;
        w->env.error = p;
        break;
    }
    case FED_MSG_HEARTBEAT: {
        Fedtune__Heartbeat *p = &w->body.heartbeat;
        fedtune__heartbeat__init(p);
        p->time_ms = m->u.heartbeat_ms;
        w->env.heartbeat = p;
        break;
    }
    case FED_MSG_BYE: {
        Fedtune__Bye *p = &w->body.bye;
        fedtune__bye__init(p);
        p->reason = str(m->u.bye.reason);
        p->finished = m->u.bye.finished;
        w->env.bye = p;
        break;
    }
    case FED_MSG_SECAGG: {
        Fedtune__SecAgg *p = &w->body.secagg;
        fedtune__sec_agg__init(p);
        p->round = m->u.secagg.round;
        if (m->u.secagg.len && !m->u.secagg.msg)
            return fed_errorf(FED_EINVAL, "secagg.msg: NULL with %zu bytes", m->u.secagg.len);
        p->msg = bin(m->u.secagg.msg, m->u.secagg.len);
        w->env.secagg = p;
        break;
    }
    case FED_MSG_ADMIN_REQUEST: {
        Fedtune__AdminRequest *p = &w->body.admin_request;
        fedtune__admin_request__init(p);
        p->action = (Fedtune__AdminAction)m->u.admin_request.action;
        p->site = str(m->u.admin_request.site);
        w->env.admin_request = p;
        break;
    }
    case FED_MSG_ADMIN_REPLY: {
        Fedtune__AdminReply *p = &w->body.admin_reply;
        fedtune__admin_reply__init(p);
        p->ok = m->u.admin_reply.ok;
        p->code = (Fedtune__ErrorCode)m->u.admin_reply.code;
        p->text = str(m->u.admin_reply.text);
        w->env.admin_reply = p;
        break;
    }
    default:
        return fed_errorf(FED_EINVAL, "type: %d is not a message type (%s)", (int)m->type,
                          fed_msg_type_name(m->type));
    }
    w->env.body_case = body_case_of(m->type);
    fed_msg_limits lim = fed_msg_default_limits();
    return check_envelope(&w->env, &lim, FED_EINVAL);
}

static void wire_release(wire *w) {
    fed_free(w->elems);
    w->elems = NULL;
}

size_t fed_msg_packed_size(const fed_msg *m) {
    wire w;
    size_t n = 0;
    if (wire_build(&w, m) == FED_OK) n = protobuf_c_message_get_packed_size(&w.env.base);
    wire_release(&w);
    return n;
}

size_t fed_msg_pack(const fed_msg *m, uint8_t *buf, fed_err *err) {
    wire w;
    size_t n = 0;
    fed_err e = wire_build(&w, m);
    if (e == FED_OK) n = protobuf_c_message_pack(&w.env.base, buf);
    wire_release(&w);
    if (err) *err = e;
    return n;
}

fed_err fed_msg_encode(const fed_msg *m, uint8_t **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    wire w;
    fed_err err = wire_build(&w, m);
    if (err == FED_OK) {
        size_t n = protobuf_c_message_get_packed_size(&w.env.base);
        *buf = fed_malloc(n);
        if (*buf)
            *len = protobuf_c_message_pack(&w.env.base, *buf);
        else
            err = FED_ENOMEM;
    }
    wire_release(&w);
    return err;
}

/* ---- decoding ---------------------------------------------------------------------------- */

/* protobuf-c's allocator for one unpack: fed_malloc under a byte budget. */
typedef struct budget {
    size_t left; /* bytes protobuf-c may still be given (frees are not credited back) */
    bool over;   /* an allocation was refused for exceeding the budget */
    bool oom;    /* fed_malloc failed */
} budget;

static void *budget_alloc(void *data, size_t size) {
    budget *b = data;
    if (size > b->left) {
        b->over = true;
        return NULL;
    }
    void *p = fed_malloc(size);
    if (!p) {
        b->oom = true;
        return NULL;
    }
    b->left -= size;
    return p;
}

static void budget_free(void *data, void *p) {
    fed_free(p);
}

static size_t sat_add(size_t a, size_t b) {
    return b > SIZE_MAX - a ? SIZE_MAX : a + b;
}

static size_t sat_mul(size_t a, size_t b) {
    return b && a > SIZE_MAX / b ? SIZE_MAX : a * b;
}

/* What unpacking a len-byte envelope that respects lim may allocate: copies of its
 * strings and unknown fields (len), the fixed structs, and per repeated entry its struct,
 * pointer, packed shape, NUL, an unknown-field record and protobuf-c's scan records
 * (32 bytes per field, in slabs that double). Generous for every valid envelope; a
 * flood of empty entries or unknown fields runs out long before gigabytes. */
static size_t unpack_budget(size_t len, const fed_msg_limits *lim) {
    const size_t scan = 128 + sizeof(ProtobufCMessageUnknownField);
    const size_t per_tensor = sizeof(Fedtune__TensorInfo) + sizeof(void *) +
                              FED_MSG_MAX_DIMS * sizeof(uint64_t) + 1 + scan;
    const size_t per_list = sizeof(Fedtune__Metric) + 2 * sizeof(void *) + 2 + 2 * scan;
    size_t b = sat_add(sat_mul(len, 2), (size_t)64 << 10);
    b = sat_add(b, sat_mul(lim->max_tensors, per_tensor));
    return sat_add(b, sat_mul(lim->max_list, per_list));
}

static void copy_bin(uint8_t *dst, const ProtobufCBinaryData *b, size_t len) {
    memcpy(dst, b->data, len); /* len checked by check_envelope */
}

/* A checked envelope seen as a borrowed fed_msg (already typed): its strings and the
 * SecAgg payload point into e, its tensor and metric lists into *tmp (fed_malloc'd, the
 * caller frees it); fed_msg_copy then makes the decoded message its owned copy. Only
 * FED_ENOMEM. The mirror of wire_build. */
static fed_err view_of(fed_msg *m, const Fedtune__Envelope *e, void **tmp) {
    *tmp = NULL;
    switch (m->type) {
    case FED_MSG_HELLO: {
        const Fedtune__Hello *p = e->hello;
        fed_msg_hello *h = &m->u.hello;
        h->software = p->software;
        h->capabilities = (const char *const *)p->capabilities;
        h->num_capabilities = p->n_capabilities;
        h->train_examples = p->train_examples;
        h->eval_examples = p->eval_examples;
        copy_bin(h->session_id, &p->session_id, FED_SESSION_ID_LEN);
        h->num_bases = p->n_bases; /* checked: at most FED_MSG_MAX_BASES of 32 bytes */
        for (size_t i = 0; i < p->n_bases; i++) copy_bin(h->bases[i], &p->bases[i], FED_SHA256_LEN);
        return FED_OK;
    }
    case FED_MSG_WELCOME: {
        const Fedtune__Welcome *p = e->welcome;
        fed_msg_welcome *w = &m->u.welcome;
        w->client_id = p->client_id;
        copy_bin(w->session_id, &p->session_id, FED_SESSION_ID_LEN);
        w->max_chunk = p->max_chunk;
        w->credits = p->credits;
        w->coordinator = p->coordinator;
        return FED_OK;
    }
    case FED_MSG_ROUND_START: {
        const Fedtune__RoundStart *p = e->round_start;
        fed_msg_round_start *r = &m->u.round_start;
        r->round = p->round;
        r->model_version = p->model_version;
        r->transfer_id = p->transfer_id;
        r->deadline_ms = p->deadline_ms;
        r->attempt = p->attempt;
        r->stats = p->stats != 0;
        r->trainable_only = p->trainable_only != 0;
        r->compress = p->compress;
        r->delta_from = p->delta_from;
        r->delta_bytes = p->delta_bytes;
        if (p->delta_from) copy_bin(r->delta_sha256, &p->delta_sha256, FED_SHA256_LEN);
        const Fedtune__TrainConfig *pc = p->config; /* absent: all defaults, optimizer "" */
        if (pc) {
            r->config.epochs = pc->epochs;
            r->config.batch = pc->batch;
            r->config.optimizer = pc->optimizer;
            r->config.lr = pc->lr;
            r->config.momentum = pc->momentum;
            r->config.weight_decay = pc->weight_decay;
            r->config.clip_norm = pc->clip_norm;
            r->config.seed = pc->seed;
            r->config.max_steps = pc->max_steps;
        }
        const Fedtune__Manifest *pm = p->manifest; /* present: its digest was checked */
        fed_msg_manifest *mf = &r->manifest;
        mf->total_bytes = pm->total_bytes;
        copy_bin(mf->sha256, &pm->sha256, FED_SHA256_LEN);
        mf->arch = pm->arch;
        mf->input_transform = pm->input_transform;
        mf->has_tokenizer = pm->tokenizer_sha256.len != 0; /* checked: 0 or 32 */
        if (mf->has_tokenizer)
            copy_bin(mf->tokenizer_sha256, &pm->tokenizer_sha256, FED_SHA256_LEN);
        mf->has_base = pm->base_sha256.len != 0; /* checked: 0 or 32, with trainable_sha256 */
        if (mf->has_base) {
            copy_bin(mf->base_sha256, &pm->base_sha256, FED_SHA256_LEN);
            copy_bin(mf->trainable_sha256, &pm->trainable_sha256, FED_SHA256_LEN);
        }
        if (pm->n_tensors) {
            fed_msg_tensor *t = *tmp = fed_calloc(pm->n_tensors, sizeof *t);
            if (!t) return FED_ENOMEM;
            for (size_t i = 0; i < pm->n_tensors; i++) {
                const Fedtune__TensorInfo *pt = pm->tensors[i];
                t[i].name = pt->name;
                t[i].ndim = (int)pt->n_shape;
                if (pt->n_shape) memcpy(t[i].shape, pt->shape, pt->n_shape * sizeof *pt->shape);
                t[i].dtype = (fed_dtype)pt->dtype;
                t[i].trainable = pt->trainable != 0;
            }
            mf->tensors = t;
            mf->num_tensors = pm->n_tensors;
        }
        if (p->secagg) {
            const Fedtune__SecAggParams *ps = p->secagg;
            fed_msg_secagg_params *sa = &r->secagg;
            r->has_secagg = true;
            sa->participant = ps->participant;
            sa->n = ps->n;
            sa->degree = ps->degree;
            sa->threshold = ps->threshold;
            sa->clip_range = ps->clip_range;
            sa->quant_range = ps->quant_range;
            copy_bin(sa->graph_seed, &ps->graph_seed, FED_MSG_SEED_LEN);
            sa->dp_clip = ps->dp_clip;
            sa->dp_noise_std = ps->dp_noise_std;
        }
        return FED_OK;
    }
    case FED_MSG_CHUNK:
        m->u.chunk.transfer_id = e->chunk->transfer_id;
        m->u.chunk.offset = e->chunk->offset;
        m->u.chunk.length = e->chunk->length;
        return FED_OK;
    case FED_MSG_UPDATE: {
        const Fedtune__Update *p = e->update;
        fed_msg_update *u = &m->u.update;
        u->round = p->round;
        u->model_version = p->model_version;
        u->examples = p->examples;
        u->encoding = (fed_encoding)p->encoding;
        u->transfer_id = p->transfer_id;
        u->attempt = p->attempt;
        u->total_bytes = p->total_bytes;
        copy_bin(u->sha256, &p->sha256, FED_SHA256_LEN);
        if (p->n_metrics) {
            fed_msg_metric *mt = *tmp = fed_calloc(p->n_metrics, sizeof *mt);
            if (!mt) return FED_ENOMEM;
            for (size_t i = 0; i < p->n_metrics; i++) {
                mt[i].name = p->metrics[i]->name;
                mt[i].value = p->metrics[i]->value;
            }
            u->metrics = mt;
            u->num_metrics = p->n_metrics;
        }
        return FED_OK;
    }
    case FED_MSG_CREDIT:
        m->u.credit.transfer_id = e->credit->transfer_id;
        m->u.credit.chunks = e->credit->chunks;
        m->u.credit.offset = e->credit->offset;
        return FED_OK;
    case FED_MSG_ERROR:
        m->u.error.code = (uint32_t)e->error->code; /* a known value, so >= 0 */
        m->u.error.text = e->error->text;
        m->u.error.round = e->error->round;
        m->u.error.attempt = e->error->attempt;
        return FED_OK;
    case FED_MSG_HEARTBEAT:
        m->u.heartbeat_ms = e->heartbeat->time_ms;
        return FED_OK;
    case FED_MSG_BYE:
        m->u.bye.reason = e->bye->reason;
        m->u.bye.finished = e->bye->finished != 0;
        return FED_OK;
    case FED_MSG_SECAGG:
        m->u.secagg.round = e->secagg->round;
        m->u.secagg.msg = e->secagg->msg.data;
        m->u.secagg.len = e->secagg->msg.len;
        return FED_OK;
    case FED_MSG_ADMIN_REQUEST:
        m->u.admin_request.action = (fed_admin_action)e->admin_request->action;
        m->u.admin_request.site = e->admin_request->site;
        return FED_OK;
    case FED_MSG_ADMIN_REPLY:
        m->u.admin_reply.ok = e->admin_reply->ok != 0;
        m->u.admin_reply.code = (uint32_t)e->admin_reply->code;
        m->u.admin_reply.text = e->admin_reply->text;
        return FED_OK;
    case FED_MSG_NONE:
        break;
    }
    return fed_errorf(FED_EINTERNAL, "msg: view of type %d", (int)m->type);
}

fed_err fed_msg_decode(fed_msg *out, const uint8_t *buf, size_t len, const fed_msg_limits *limits) {
    static const uint8_t empty[1];
    memset(out, 0, sizeof *out);
    fed_msg_limits def = fed_msg_default_limits();
    const fed_msg_limits *lim = limits ? limits : &def;
    if (len > lim->max_envelope)
        return fed_errorf(FED_EPROTO, "envelope: %zu bytes, limit %zu", len, lim->max_envelope);

    budget b = {unpack_budget(len, lim), false, false};
    ProtobufCAllocator alloc = {budget_alloc, budget_free, &b};
    Fedtune__Envelope *e = fedtune__envelope__unpack(&alloc, len, len ? buf : empty);
    if (!e) {
        if (b.oom) return FED_ENOMEM; /* fed_malloc recorded the detail */
        if (b.over)
            return fed_errorf(FED_EPROTO,
                              "envelope: decoding %zu bytes would need more than %zu bytes of "
                              "memory (too many entries or unknown fields)",
                              len, unpack_budget(len, lim));
        return fed_errorf(FED_EPROTO,
                          "envelope: %zu bytes are not a valid protobuf "
                          "fedtune.Envelope (truncated or corrupt)",
                          len);
    }
    fed_err err = check_envelope(e, lim, FED_EPROTO);
    if (err != FED_OK) {
        if (e->version != FED_PROTOCOL_VERSION) out->version = e->version;
        goto done;
    }
    fed_msg view = {.version = e->version, .seq = e->seq, .type = type_of(e->body_case)};
    void *tmp = NULL;
    err = view_of(&view, e, &tmp);
    if (err == FED_OK) err = fed_msg_copy(out, &view);
    fed_free(tmp);
done:
    protobuf_c_message_free_unpacked(&e->base, &alloc);
    return err;
}

/* ---- owned copies ------------------------------------------------------------------------ */

/* Carves an owned message's strings and arrays out of its one block, in two passes over
 * the same code: measuring (base NULL: only adds up sizes, returns NULL) and filling. */
typedef struct carver {
    char *base;
    size_t used;
    bool over; /* the sizes overflow size_t */
} carver;

/* size bytes aligned to align (a power of two up to the block's alignment). */
static void *carve(carver *c, size_t size, size_t align) {
    size_t at = (c->used + align - 1) & ~(align - 1);
    if (c->over || at < c->used || size > SIZE_MAX - at) {
        c->over = true;
        return NULL;
    }
    c->used = at + size;
    return c->base ? c->base + at : NULL;
}

static void *carve_array(carver *c, size_t n, size_t size, size_t align) {
    if (n > SIZE_MAX / size) {
        c->over = true;
        return NULL;
    }
    return carve(c, n * size, align);
}

/* An owned copy of s ("" for NULL); NULL while measuring. */
static const char *carve_str(carver *c, const char *s) {
    if (!s) s = "";
    size_t n = strlen(s) + 1;
    char *p = carve(c, n, 1);
    if (p) memcpy(p, s, n);
    return p;
}

#define CARVE_ARRAY(c, n, type) ((type *)carve_array((c), (n), sizeof(type), _Alignof(type)))

/* Points d's strings and arrays (d is a struct copy of s) at owned copies carved from c;
 * while measuring, d's pointers become NULL and only c->used matters. s's lists were
 * checked to be non-NULL when they have entries. */
static void carve_body(carver *c, fed_msg *d, const fed_msg *s) {
    switch (s->type) {
    case FED_MSG_HELLO: {
        const fed_msg_hello *h = &s->u.hello;
        const char **caps = CARVE_ARRAY(c, h->num_capabilities, const char *);
        for (size_t i = 0; i < h->num_capabilities; i++) {
            const char *cap = carve_str(c, h->capabilities[i]);
            if (caps) caps[i] = cap;
        }
        d->u.hello.capabilities = h->num_capabilities ? caps : NULL;
        d->u.hello.software = carve_str(c, h->software);
        return;
    }
    case FED_MSG_WELCOME:
        d->u.welcome.client_id = carve_str(c, s->u.welcome.client_id);
        d->u.welcome.coordinator = carve_str(c, s->u.welcome.coordinator);
        return;
    case FED_MSG_ROUND_START: {
        const fed_msg_round_start *r = &s->u.round_start;
        size_t n = r->manifest.num_tensors;
        fed_msg_tensor *t = CARVE_ARRAY(c, n, fed_msg_tensor);
        for (size_t i = 0; i < n; i++) {
            const char *name = carve_str(c, r->manifest.tensors[i].name);
            if (t) {
                t[i] = r->manifest.tensors[i];
                t[i].name = name;
            }
        }
        fed_msg_round_start *dr = &d->u.round_start;
        dr->manifest.tensors = n ? t : NULL;
        dr->manifest.arch = carve_str(c, r->manifest.arch);
        dr->manifest.input_transform = carve_str(c, r->manifest.input_transform);
        dr->config.optimizer = carve_str(c, r->config.optimizer);
        dr->compress = carve_str(c, r->compress);
        return;
    }
    case FED_MSG_UPDATE: {
        const fed_msg_update *u = &s->u.update;
        fed_msg_metric *mt = CARVE_ARRAY(c, u->num_metrics, fed_msg_metric);
        for (size_t i = 0; i < u->num_metrics; i++) {
            const char *name = carve_str(c, u->metrics[i].name);
            if (mt) {
                mt[i].name = name;
                mt[i].value = u->metrics[i].value;
            }
        }
        d->u.update.metrics = u->num_metrics ? mt : NULL;
        return;
    }
    case FED_MSG_ERROR:
        d->u.error.text = carve_str(c, s->u.error.text);
        return;
    case FED_MSG_BYE:
        d->u.bye.reason = carve_str(c, s->u.bye.reason);
        return;
    case FED_MSG_SECAGG: {
        uint8_t *p = CARVE_ARRAY(c, s->u.secagg.len, uint8_t);
        if (p) memcpy(p, s->u.secagg.msg, s->u.secagg.len);
        d->u.secagg.msg = p;
        return;
    }
    case FED_MSG_ADMIN_REQUEST:
        d->u.admin_request.site = carve_str(c, s->u.admin_request.site);
        return;
    case FED_MSG_ADMIN_REPLY:
        d->u.admin_reply.text = carve_str(c, s->u.admin_reply.text);
        return;
    case FED_MSG_CHUNK:
    case FED_MSG_CREDIT:
    case FED_MSG_HEARTBEAT:
    case FED_MSG_NONE:
        return; /* nothing pointed to */
    }
}

/* The lists of a message that must not be NULL with entries (what carve_body reads). */
static fed_err check_lists(const fed_msg *m) {
    const char *what = NULL, *unit = "entries";
    size_t n = 0;
    if (m->type == FED_MSG_HELLO && m->u.hello.num_capabilities && !m->u.hello.capabilities)
        what = "hello.capabilities", n = m->u.hello.num_capabilities;
    else if (m->type == FED_MSG_ROUND_START && m->u.round_start.manifest.num_tensors &&
             !m->u.round_start.manifest.tensors)
        what = "round_start.manifest.tensors", n = m->u.round_start.manifest.num_tensors;
    else if (m->type == FED_MSG_UPDATE && m->u.update.num_metrics && !m->u.update.metrics)
        what = "update.metrics", n = m->u.update.num_metrics;
    else if (m->type == FED_MSG_SECAGG && m->u.secagg.len && !m->u.secagg.msg)
        what = "secagg.msg", n = m->u.secagg.len, unit = "bytes";
    if (what) return fed_errorf(FED_EINVAL, "%s: NULL with %zu %s", what, n, unit);
    return FED_OK;
}

fed_err fed_msg_copy(fed_msg *dst, const fed_msg *src) {
    const fed_msg s = *src; /* dst may be src */
    memset(dst, 0, sizeof *dst);
    fed_err err = check_lists(&s);
    if (err) return err;
    fed_msg d = s;
    carver c = {NULL, 0, false};
    carve_body(&c, &d, &s);
    if (c.over)
        return fed_errorf(FED_ENOMEM, "msg: copy of a %s: size overflows",
                          fed_msg_type_name(s.type));
    /* Filling runs even with nothing to carve, so that no pointer of s (an empty list's)
     * is left in the copy. */
    size_t size = c.used;
    c = (carver){size ? fed_malloc(size) : NULL, 0, false};
    if (size && !c.base) return FED_ENOMEM;
    d = s;
    carve_body(&c, &d, &s);
    d.arena = c.base;
    *dst = d;
    return FED_OK;
}

void fed_msg_free(fed_msg *m) {
    if (!m) return;
    fed_free(m->arena);
    memset(m, 0, sizeof *m);
}

/* fed_wire_err is fedtune.ErrorCode. */
_Static_assert((int)FED_WIRE_INVALID == (int)FEDTUNE__ERROR_CODE__ERR_INVALID &&
                   (int)FED_WIRE_FORMAT == (int)FEDTUNE__ERROR_CODE__ERR_FORMAT &&
                   (int)FED_WIRE_RANGE == (int)FEDTUNE__ERROR_CODE__ERR_RANGE &&
                   (int)FED_WIRE_SHAPE == (int)FEDTUNE__ERROR_CODE__ERR_SHAPE &&
                   (int)FED_WIRE_UNSUPPORTED == (int)FEDTUNE__ERROR_CODE__ERR_UNSUPPORTED &&
                   (int)FED_WIRE_DIGEST == (int)FEDTUNE__ERROR_CODE__ERR_DIGEST &&
                   (int)FED_WIRE_PROTO == (int)FEDTUNE__ERROR_CODE__ERR_PROTO &&
                   (int)FED_WIRE_AUTH == (int)FEDTUNE__ERROR_CODE__ERR_AUTH &&
                   (int)FED_WIRE_TIMEOUT == (int)FEDTUNE__ERROR_CODE__ERR_TIMEOUT &&
                   (int)FED_WIRE_VERSION == (int)FEDTUNE__ERROR_CODE__ERR_VERSION &&
                   (int)FED_WIRE_BUSY == (int)FEDTUNE__ERROR_CODE__ERR_BUSY &&
                   (int)FED_WIRE_NO_MODEL == (int)FEDTUNE__ERROR_CODE__ERR_NO_MODEL,
               "fed_wire_err and fedtune.ErrorCode disagree");

fed_wire_err fed_wire_err_of(fed_err e) {
    switch (e) {
    case FED_EFORMAT:
        return FED_WIRE_FORMAT;
    case FED_ERANGE:
    case FED_ENONFINITE:
        return FED_WIRE_RANGE;
    case FED_ESHAPE:
        return FED_WIRE_SHAPE;
    case FED_EUNSUPPORTED:
        return FED_WIRE_UNSUPPORTED;
    case FED_EDIGEST:
        return FED_WIRE_DIGEST;
    case FED_EPROTO:
        return FED_WIRE_PROTO;
    case FED_EAUTH:
        return FED_WIRE_AUTH;
    case FED_ETIMEOUT:
        return FED_WIRE_TIMEOUT;
    case FED_ENOMEM:
    case FED_EIO:
    case FED_EAGAIN:
        return FED_WIRE_BUSY;
    default:
        return FED_WIRE_INVALID;
    }
}

/* ---- the parts of a manifest's buffer ------------------------------------------------ */

static size_t tensor_floats(const fed_msg_tensor *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d]; /* bounded by total_bytes */
    return n;
}

size_t fed_manifest_part_floats(const fed_msg_manifest *m, bool trainable) {
    size_t n = 0;
    for (size_t i = 0; i < m->num_tensors; i++)
        if (m->tensors[i].trainable == trainable) n += tensor_floats(&m->tensors[i]);
    return n;
}

void fed_manifest_gather(const fed_msg_manifest *m, bool trainable, const float *full,
                         float *part) {
    for (size_t i = 0; i < m->num_tensors; i++) {
        size_t n = tensor_floats(&m->tensors[i]);
        if (m->tensors[i].trainable == trainable) {
            memcpy(part, full, n * sizeof *part);
            part += n;
        }
        full += n;
    }
}

void fed_manifest_scatter(const fed_msg_manifest *m, bool trainable, const float *part,
                          float *full) {
    for (size_t i = 0; i < m->num_tensors; i++) {
        size_t n = tensor_floats(&m->tensors[i]);
        if (m->tensors[i].trainable == trainable) {
            memcpy(full, part, n * sizeof *part);
            part += n;
        }
        full += n;
    }
}
_Static_assert((int)FED_ADMIN_STATUS == (int)FEDTUNE__ADMIN_ACTION__ADMIN_STATUS &&
                   (int)FED_ADMIN_PAUSE == (int)FEDTUNE__ADMIN_ACTION__ADMIN_PAUSE &&
                   (int)FED_ADMIN_RESUME == (int)FEDTUNE__ADMIN_ACTION__ADMIN_RESUME &&
                   (int)FED_ADMIN_STOP == (int)FEDTUNE__ADMIN_ACTION__ADMIN_STOP &&
                   (int)FED_ADMIN_RELOAD_CRL == (int)FEDTUNE__ADMIN_ACTION__ADMIN_RELOAD_CRL &&
                   (int)FED_ADMIN_EVICT == (int)FEDTUNE__ADMIN_ACTION__ADMIN_EVICT &&
                   (int)FED_ADMIN_READMIT == (int)FEDTUNE__ADMIN_ACTION__ADMIN_READMIT,
               "fed_admin_action mirrors fedtune.AdminAction");
