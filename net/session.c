/* Sessions, frames, the message stream and transfers (see session.h).
 *
 * Output. A frame is built in place: the 24-byte clear header, then whatever OpenSSL's
 * sink hands us. Before a message is encrypted we reserve the largest size its records
 * can take (fed__tls_bound), so a message never straddles two frames. Small frames
 * (control messages, handshake flights) are built in one shared buffer and copied into
 * ZeroMQ; a chunk gets a pool buffer that ZeroMQ takes without copying; an unusually big
 * control message gets a one-off buffer. Frames that find no room in ZeroMQ wait in the
 * session's queue, in order.
 *
 * Input. A frame's TLS records are decrypted and the plaintext parsed as it comes: the
 * length prefix and the envelope into small buffers, a chunk's payload straight into
 * the receiving transfer's buffer at its offset. Every frame must end on a message
 * boundary; anything else is a truncated record or message. The payload is hashed
 * record by record right after it is decrypted, while it is in the cache, or, for a
 * large transfer over tcp://, chunk by chunk on the digest worker (hasher.h) while the
 * next chunks decrypt; either way the whole digest is complete and compared before the
 * transfer is reported done, and a transfer's memory is never let go while the worker
 * may still read it.
 *
 * Flow control. The receiver of a transfer grants `credits` chunks at its current offset;
 * after half of them arrived it grants again. The sender may send while its next offset
 * is below offset + credits * chunk_size of the latest grant, so at most `credits`
 * chunks are ever in flight per transfer. Chunks must arrive in order, which lets the
 * receiver hash as it goes and makes "resume from offset X" exact. */
#include "net/session.h"
#include "net/net_internal.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/endian.h"
#include "core/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DISCARD_SIZE (64u * 1024u)
/* Upper bound of a packed Chunk envelope (version, seq, three varints). */
#define CHUNK_ENV_MAX 128

static const uint8_t magic[4] = {'F', 'E', 'D', 'N'};

void fed__hex(const uint8_t *data, size_t len, char *out) {
    static const char digits[] = "0123456789abcdef";
    size_t n = len > 16 ? 16 : len, j = 0;
    for (size_t i = 0; i < n; i++) {
        out[j++] = digits[data[i] >> 4];
        out[j++] = digits[data[i] & 15];
    }
    if (n < len) {
        memcpy(out + j, "...", 3);
        j += 3;
    }
    out[j] = '\0';
}

static uint64_t add_sat(uint64_t a, uint64_t b) {
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ------------------------------------------------------------------------------------ */
/* Shared state                                                                         */

fed_err fed__config_check(const fed_net_config *c) {
    if (c->chunk_size < FED_NET_CHUNK_MIN || c->chunk_size > FED_NET_CHUNK_MAX)
        return fed_errorf(FED_EINVAL, "chunk size %zu outside %u..%u", c->chunk_size,
                          FED_NET_CHUNK_MIN, FED_NET_CHUNK_MAX);
    if (c->credits < 1 || c->credits > 1024)
        return fed_errorf(FED_EINVAL, "credits %" PRIu32 " outside 1..1024", c->credits);
    if (c->handshake_timeout_ms <= 0 || c->keepalive_ms < 0 || c->idle_timeout_ms < 0 ||
        c->zmq_heartbeat_ms < 0)
        return fed_errorf(FED_EINVAL, "negative or zero timeout");
    if (c->limits.max_chunk < c->chunk_size || c->limits.max_chunk > FED_NET_CHUNK_MAX)
        return fed_errorf(FED_EINVAL, "limits.max_chunk %zu must lie in chunk size..%u",
                          c->limits.max_chunk, FED_NET_CHUNK_MAX);
    if (c->limits.max_envelope < 1024 || c->limits.max_envelope > ((size_t)1 << 30))
        return fed_errorf(FED_EINVAL, "limits.max_envelope %zu outside 1 KiB..1 GiB",
                          c->limits.max_envelope);
    return FED_OK;
}

fed_err fed__net_init(fed__net *n, const fed_net_config *cfg) {
    fed_err e = fed__config_check(cfg);
    if (e != FED_OK) return e;
    n->cfg = *cfg;
    n->chunk_size = cfg->chunk_size;
    size_t buf_size =
        FED__HDR_LEN + fed__tls_bound(4 + CHUNK_ENV_MAX) + fed__tls_bound(n->chunk_size);
    size_t max_bufs = cfg->pool_bytes / buf_size;
    if (max_bufs < 2) max_bufs = 2;
    if ((e = fed__pool_new(&n->pool, buf_size, max_bufs, cfg->pool_release)) != FED_OK) return e;
    size_t big = fed__tls_bound(4 + cfg->limits.max_envelope);
    size_t chunk = fed__tls_bound(4 + CHUNK_ENV_MAX) + fed__tls_bound(cfg->limits.max_chunk);
    n->max_frame = FED__HDR_LEN + (big > chunk ? big : chunk);
    if (n->max_frame < FED__SMALL_FRAME) n->max_frame = FED__SMALL_FRAME;
    n->small = fed__buf_new(FED__SMALL_FRAME);
    n->discard = fed_malloc(DISCARD_SIZE);
    if (!n->small || !n->discard) return FED_ENOMEM;
    return FED_OK;
}

fed_err fed__net_security(fed__net *n, const char *endpoint, const char *identity) {
    n->inproc = strncmp(endpoint, "inproc://", 9) == 0;
    if (!n->cfg.plaintext) return fed__tls_ctx_new(&n->tls, n->server, &n->cfg.tls);
    if (strncmp(endpoint, "inproc://", 9) != 0)
        return fed_errorf(FED_EINVAL, "plaintext is only allowed on inproc:// endpoints, not %s",
                          endpoint);
    return fed__tls_ctx_new_plain(&n->tls, n->server, identity);
}

static void ev_free(fed__ev *ev) {
    if (!ev) return;
    if (ev->has_msg) fed_msg_free(&ev->msg);
    fed_free(ev);
}

void fed__net_free(fed__net *n) {
    ev_free(n->current);
    n->current = NULL;
    for (fed__ev *ev = n->evq_head, *nx; ev; ev = nx) {
        nx = ev->next;
        ev_free(ev);
    }
    n->evq_head = n->evq_tail = NULL;
    fed__sock_destroy(&n->sock, 0);
    fed__tls_ctx_destroy(&n->tls);
    fed__hasher_destroy(&n->hasher); /* the owner cleared its transfers: nothing is queued */
    fed__pool_close(&n->pool);
    fed__buf_release(n->small);
    n->small = NULL;
    fed_free(n->envbuf);
    n->envbuf = NULL;
    fed_free(n->discard);
    n->discard = NULL;
}

fed_net_event *fed__net_event(fed__net *n, fed_net_event_type type, uint32_t peer, const char *cn,
                              fed_msg *msg, uint64_t transfer_id, fed_err err, const char *reason) {
    fed__ev *ev = fed_calloc(1, sizeof *ev);
    if (!ev) {
        FED_LOG(FED_LOG_ERROR, "%s: out of memory: lost a %s event", n->side,
                fed_net_event_name(type));
        if (msg) fed_msg_free(msg);
        return NULL;
    }
    snprintf(ev->cn, sizeof ev->cn, "%s", cn ? cn : "");
    snprintf(ev->reason, sizeof ev->reason, "%s", reason ? reason : "");
    if (msg) {
        ev->msg = *msg;
        memset(msg, 0, sizeof *msg);
        ev->has_msg = true;
    }
    ev->pub.type = type;
    ev->pub.peer = peer;
    ev->pub.transfer_id = transfer_id;
    ev->pub.err = err;
    if (n->evq_tail)
        n->evq_tail->next = ev;
    else
        n->evq_head = ev;
    n->evq_tail = ev;
    return &ev->pub;
}

bool fed__net_pop(fed__net *n, fed_net_event *out) {
    ev_free(n->current);
    n->current = NULL;
    fed__ev *ev = n->evq_head;
    if (!ev) return false;
    n->evq_head = ev->next;
    if (!n->evq_head) n->evq_tail = NULL;
    ev->next = NULL;
    n->current = ev;
    *out = ev->pub;
    out->cn = ev->cn;
    out->reason = ev->reason;
    out->msg = ev->has_msg ? &ev->msg : NULL;
    return true;
}

void fed__net_stats(fed__net *n, fed_net_stats *st) {
    *st = n->stats;
    fed__pool_stats(n->pool, &st->pool_in_use, &st->pool_peak, &st->pool_max);
    st->pool_buffer_bytes = fed__pool_buf_size(n->pool);
}

/* ------------------------------------------------------------------------------------ */
/* Clear headers                                                                        */

void fed__hdr_write(uint8_t *p, int type, const uint8_t sid[FED_SESSION_ID_LEN]) {
    memcpy(p, magic, 4);
    p[4] = FED__HDR_VERSION;
    p[5] = (uint8_t)type;
    p[6] = p[7] = 0;
    memcpy(p + 8, sid, FED_SESSION_ID_LEN);
}

const char *fed__frame_check(const fed__frame *f, size_t max_frame, int *type,
                             uint8_t sid[FED_SESSION_ID_LEN], char *why, size_t why_len) {
    const char *bad = NULL;
    if (f->multipart) return "multipart ZeroMQ message";
    if (f->len > max_frame) {
        snprintf(why, why_len, "frame of %zu bytes, limit %zu", f->len, max_frame);
        return why;
    }
    fed__hdr_parse(f->data, f->len, type, sid, &bad);
    return bad;
}

bool fed__hdr_parse(const uint8_t *d, size_t len, int *type, uint8_t sid[FED_SESSION_ID_LEN],
                    const char **why) {
    if (len < FED__HDR_LEN) {
        *why = "not a fednet frame (shorter than its header)";
        return false;
    }
    if (memcmp(d, magic, 4) != 0) {
        *why = "not a fednet frame (bad magic)";
        return false;
    }
    if (d[4] != FED__HDR_VERSION || d[6] || d[7]) {
        *why = "fednet frame of an unknown version";
        return false;
    }
    if (d[5] < FED__FRAME_OPEN || d[5] > FED__FRAME_CLOSE) {
        *why = "fednet frame of an unknown type";
        return false;
    }
    *type = d[5];
    memcpy(sid, d + 8, FED_SESSION_ID_LEN);
    return true;
}

void fed__send_close(fed__net *n, const uint8_t *rid, size_t rid_len,
                     const uint8_t sid[FED_SESSION_ID_LEN]) {
    uint8_t h[FED__HDR_LEN];
    fed__hdr_write(h, FED__FRAME_CLOSE, sid);
    if (fed__sock_send_bytes(n->sock, rid, rid_len, h, sizeof h) == FED_OK) {
        n->stats.frames_sent++;
        n->stats.bytes_sent += sizeof h;
    }
}

/* ------------------------------------------------------------------------------------ */
/* Output                                                                               */

static void enqueue(fed__sess *s, fed__buf *b) {
    b->next = NULL;
    if (s->q_tail)
        s->q_tail->next = b;
    else
        s->q_head = b;
    s->q_tail = b;
    s->q_len++;
}

/* Moves the current frame to the back of the queue (a copy if it is the shared buffer). */
static fed_err queue_cur(fed__sess *s) {
    fed__net *n = s->net;
    fed__buf *b = s->cur;
    if (!b) return FED_OK;
    s->cur = NULL;
    if (b == n->small) {
        n->small_owner = NULL;
        fed__buf *copy = fed__buf_new(b->len);
        if (!copy) return FED_ENOMEM;
        memcpy(copy->data, b->data, b->len);
        copy->len = b->len;
        b = copy;
    }
    if (s->q_len >= FED__QUEUE_MAX) {
        fed__buf_release(b);
        /* Fatal for the session (a frame of its TLS stream is lost), never FED_EAGAIN. */
        return fed_errorf(FED_ERANGE, "%zu frames waiting for room: the peer is not reading",
                          s->q_len);
    }
    enqueue(s, b);
    return FED_OK;
}

static void count_sent(fed__sess *s, size_t len) {
    s->net->stats.frames_sent++;
    s->net->stats.bytes_sent += len;
}

fed_err fed__sess_flush(fed__sess *s) {
    fed__net *n = s->net;
    fed_err e;
    if (s->cur && !s->q_head) {
        fed__buf *b = s->cur;
        size_t len = b->len;
        bool small = b == n->small;
        e = fed__sock_send(n->sock, s->rid, s->rid_len, b, small);
        if (e == FED_OK) {
            s->cur = NULL;
            if (small) n->small_owner = NULL;
            count_sent(s, len);
        } else if (e != FED_EAGAIN) {
            return e;
        }
    }
    if (s->cur && (e = queue_cur(s)) != FED_OK) return e;
    while (s->q_head) {
        fed__buf *b = s->q_head;
        size_t len = b->len;
        fed__buf *next = b->next;
        e = fed__sock_send(n->sock, s->rid, s->rid_len, b, false);
        if (e == FED_EAGAIN) {
            n->blocked = true;
            return FED_OK;
        }
        if (e != FED_OK) return e;
        s->q_head = next;
        if (!s->q_head) s->q_tail = NULL;
        s->q_len--;
        count_sent(s, len);
    }
    return FED_OK;
}

/* Makes s->cur a frame with room for need more bytes. chunk: a chunk frame of its own
 * (pool buffer; FED_EAGAIN when the pool is exhausted). */
static fed_err frame_begin(fed__sess *s, size_t need, bool chunk) {
    fed__net *n = s->net;
    fed_err e;
    if (s->cur && !chunk && s->cur->len + need <= s->cur->cap) return FED_OK;
    /* The current frame goes first, in order (sent, or queued behind earlier ones). */
    if (s->cur && (e = fed__sess_flush(s)) != FED_OK) return e;
    size_t total;
    if (!fed_add_ok(FED__HDR_LEN, need, &total)) return fed_errorf(FED_ERANGE, "frame too big");
    fed__buf *b;
    if (chunk) {
        if (total > fed__pool_buf_size(n->pool)) return fed_errorf(FED_EINTERNAL, "chunk frame");
        b = fed__pool_get(n->pool);
        if (!b) return FED_EAGAIN;
    } else if (total <= n->small->cap) {
        /* Another session's frame in the shared buffer: queue it (cannot happen while every
         * operation ends with a flush; kept for safety). */
        if (n->small_owner && n->small_owner != s && (e = queue_cur(n->small_owner)) != FED_OK)
            return e;
        b = n->small;
        n->small_owner = s;
    } else {
        b = fed__buf_new(total);
        if (!b) return FED_ENOMEM;
    }
    b->len = FED__HDR_LEN;
    int type = FED__FRAME_DATA;
    if (!n->server && !s->opened) {
        type = FED__FRAME_OPEN;
        s->opened = true;
    }
    fed__hdr_write(b->data, type, s->sid);
    s->cur = b;
    return FED_OK;
}

/* OpenSSL's output. Room was reserved before every write we start; the handshake and
 * alerts get the shared buffer, grown if a certificate chain is long. */
static int tls_sink(void *user, const uint8_t *data, size_t len) {
    fed__sess *s = user;
    fed__net *n = s->net;
    if (!s->cur && frame_begin(s, len, false) != FED_OK) return -1;
    fed__buf *b = s->cur;
    if (!b) return -1;
    if (b->len + len > b->cap) {
        if (b == n->small) {
            size_t cap = 2 * b->cap > b->len + len ? 2 * b->cap : b->len + len;
            fed__buf *g = fed_realloc(b, sizeof *b + cap);
            if (!g) return -1;
            g->cap = cap;
            n->small = s->cur = b = g;
        } else if (frame_begin(s, len, false) != FED_OK) {
            return -1;
        } else {
            b = s->cur;
            if (b->len + len > b->cap) return -1;
        }
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* Encrypts [u32 length][envelope of m][payload] into the current frame. */
static fed_err write_msg(fed__sess *s, const fed_msg *m, const uint8_t *payload, size_t plen,
                         bool chunk) {
    fed__net *n = s->net;
    fed_msg copy = *m;
    copy.version = FED_PROTOCOL_VERSION;
    copy.seq = s->seq_out + 1;
    size_t envlen = fed_msg_packed_size(&copy);
    if (envlen == 0) return FED_EINVAL; /* fed_msg_packed_size set the detail */
    if (envlen > UINT32_MAX - 4) return fed_errorf(FED_ERANGE, "message too big");
    if (envlen + 4 > n->envcap) {
        size_t cap = envlen + 4 > 4096 ? envlen + 4 : 4096;
        uint8_t *p = fed_realloc(n->envbuf, cap);
        if (!p) return FED_ENOMEM;
        n->envbuf = p;
        n->envcap = cap;
    }
    fed_err e = FED_OK;
    if (fed_msg_pack(&copy, n->envbuf + 4, &e) != envlen)
        return e != FED_OK ? e : fed_errorf(FED_EINTERNAL, "envelope size changed");
    uint32_t l = (uint32_t)envlen;
    fed_store_le32(n->envbuf, l);
    size_t need = fed__tls_bound(envlen + 4) + (plen ? fed__tls_bound(plen) : 0);
    if ((e = frame_begin(s, need, chunk)) != FED_OK) return e;
    s->seq_out++;
    if ((e = fed__tls_write(s->tls, n->envbuf, envlen + 4)) != FED_OK) return e;
    if (plen && (e = fed__tls_write(s->tls, payload, plen)) != FED_OK) return e;
    s->t_last_out = fed_now_ms();
    return FED_OK;
}

fed_err fed__sess_send(fed__sess *s, const fed_msg *m) {
    return write_msg(s, m, NULL, 0, false);
}

/* ------------------------------------------------------------------------------------ */
/* Transfers                                                                            */

static fed__xfer_in *find_in(fed__xfers *x, uint64_t id) {
    for (fed__xfer_in *t = x ? x->in : NULL; t; t = t->nxt)
        if (t->id == id) return t;
    return NULL;
}

static fed__xfer_out *find_out(fed__xfers *x, uint64_t id) {
    for (fed__xfer_out *t = x ? x->out : NULL; t; t = t->nxt)
        if (t->id == id) return t;
    return NULL;
}

static void remove_in(fed__xfers *x, fed__xfer_in *t) {
    for (fed__xfer_in **pp = &x->in; *pp; pp = &(*pp)->nxt)
        if (*pp == t) {
            *pp = t->nxt;
            break;
        }
    /* The worker may still be reading the caller's buffer into this digest. */
    if (t->hasher) fed__hasher_wait(t->hasher, &t->pending);
    fed__sha256_destroy(&t->sha);
    fed_free(t);
}

static void remove_out(fed__xfers *x, fed__xfer_out *t) {
    for (fed__xfer_out **pp = &x->out; *pp; pp = &(*pp)->nxt)
        if (*pp == t) {
            *pp = t->nxt;
            break;
        }
    fed_free(t);
}

void fed__xfers_clear(fed__xfers *x) {
    while (x->in) remove_in(x, x->in);
    while (x->out) remove_out(x, x->out);
}

static bool was_cancelled(const fed__xfers *x, uint64_t id) {
    unsigned n = x->ncancelled < FED__RECENT ? x->ncancelled : FED__RECENT;
    for (unsigned i = 0; i < n; i++)
        if (x->cancelled[i] == id) return true;
    return false;
}

static fed_err send_credit(fed__sess *s, uint64_t id, uint32_t chunks, uint64_t offset) {
    fed_msg m = {.type = FED_MSG_CREDIT};
    m.u.credit.transfer_id = id;
    m.u.credit.chunks = chunks;
    m.u.credit.offset = offset;
    return write_msg(s, &m, NULL, 0, false);
}

/* The whole transfer is in: check its digest, acknowledge it, report it. */
static fed_err finish_in(fed__sess *s, fed__xfer_in *t) {
    fed__net *n = s->net;
    uint8_t got[FED_SHA256_LEN];
    if (t->hasher) fed__hasher_wait(t->hasher, &t->pending);
    fed__sha256_final(t->sha, got);
    uint64_t id = t->id, len = t->len;
    if (memcmp(got, t->want, sizeof got) != 0) {
        char why[160];
        snprintf(why, sizeof why,
                 "transfer %" PRIu64 ": SHA-256 of the %" PRIu64
                 " bytes received differs from the announced digest",
                 id, len);
        remove_in(s->xfers, t);
        fed__net_event(n, FED_NET_TRANSFER_FAILED, s->peer, s->cn, NULL, id, FED_EDIGEST, why);
        return fed_errorf(FED_EDIGEST, "%s", why);
    }
    remove_in(s->xfers, t);
    unsigned k = s->xfers->ndone++ % FED__RECENT;
    s->xfers->done_id[k] = id;
    s->xfers->done_len[k] = len;
    fed__net_event(n, FED_NET_TRANSFER_DONE, s->peer, s->cn, NULL, id, FED_OK, NULL);
    return send_credit(s, id, 0, len);
}

/* Grants credit for t at its current offset (or finishes an empty transfer). */
static fed_err grant(fed__sess *s, fed__xfer_in *t) {
    if (t->received == t->len) return finish_in(s, t);
    t->since_grant = 0;
    return send_credit(s, t->id, s->net->cfg.credits, t->received);
}

fed_err fed__sess_resume(fed__sess *s) {
    fed_err e;
    fed__xfers *x = s->xfers;
    for (fed__xfer_out *t = x->out; t; t = t->nxt) t->resume = true;
    /* Acknowledge recent transfers again: the last ack may have died with the session. A
     * sender that already had it ignores an ack for a transfer it no longer knows. */
    unsigned nd = x->ndone < FED__RECENT ? x->ndone : FED__RECENT;
    for (unsigned i = 0; i < nd; i++)
        if ((e = send_credit(s, x->done_id[i], 0, x->done_len[i])) != FED_OK) return e;
    for (fed__xfer_in *t = x->in, *nx; t; t = nx) {
        nx = t->nxt; /* grant() may finish and free t */
        if ((e = grant(s, t)) != FED_OK) return e;
    }
    return FED_OK;
}

fed_err fed__xfer_send(fed__xfers *x, uint64_t id, const void *data, uint64_t len) {
    if (!data && len) return fed_errorf(FED_EINVAL, "transfer %" PRIu64 ": no data", id);
    if (find_out(x, id)) return fed_errorf(FED_EEXIST, "transfer %" PRIu64 " already sending", id);
    fed__xfer_out *t = fed_calloc(1, sizeof *t);
    if (!t) return FED_ENOMEM;
    t->id = id;
    t->data = data;
    t->len = len;
    t->resume = true; /* nothing goes out before the receiver's first Credit */
    fed__xfer_out **pp = &x->out;
    while (*pp) pp = &(*pp)->nxt;
    *pp = t;
    return FED_OK;
}

fed_err fed__xfer_recv(fed__xfers *x, uint64_t id, void *buf, uint64_t len,
                       const uint8_t sha256[FED_SHA256_LEN], fed__xfer_in **out) {
    *out = NULL;
    if ((!buf && len) || !sha256)
        return fed_errorf(FED_EINVAL, "transfer %" PRIu64 ": no buffer or digest", id);
    if (find_in(x, id)) return fed_errorf(FED_EEXIST, "transfer %" PRIu64 " already receiving", id);
    fed__xfer_in *t = fed_calloc(1, sizeof *t);
    if (!t) return FED_ENOMEM;
    fed_err e = fed__sha256_new(&t->sha);
    if (e != FED_OK) {
        fed_free(t);
        return e;
    }
    t->id = id;
    t->buf = buf;
    t->len = len;
    atomic_init(&t->pending, 0);
    memcpy(t->want, sha256, FED_SHA256_LEN);
    fed__xfer_in **pp = &x->in;
    while (*pp) pp = &(*pp)->nxt;
    *pp = t;
    *out = t;
    return FED_OK;
}

fed_err fed__sess_grant(fed__sess *s, fed__xfer_in *t) {
    fed_err e = grant(s, t);
    return e != FED_OK ? e : fed__sess_flush(s);
}

fed_err fed__xfer_cancel(fed__xfers *x, uint64_t id) {
    bool found = false;
    fed__xfer_in *in = find_in(x, id);
    if (in) {
        x->cancelled[x->ncancelled++ % FED__RECENT] = id;
        remove_in(x, in);
        found = true;
    }
    fed__xfer_out *out = find_out(x, id);
    if (out) {
        remove_out(x, out);
        found = true;
    }
    return found ? FED_OK : fed_errorf(FED_ENOTFOUND, "no transfer %" PRIu64, id);
}

bool fed__sess_wants_pump(const fed__sess *s) {
    if (s->state != FED__READY || !s->xfers || s->q_head) return false;
    for (const fed__xfer_out *t = s->xfers->out; t; t = t->nxt)
        if (!t->resume && t->next < t->len && t->next < t->allowed_end) return true;
    return false;
}

fed_err fed__sess_pump(fed__sess *s, size_t *sent) {
    *sent = 0;
    if (!fed__sess_wants_pump(s)) return FED_OK;
    fed__net *n = s->net;
    for (fed__xfer_out *t = s->xfers->out; t; t = t->nxt) {
        if (t->resume || t->next >= t->len || t->next >= t->allowed_end) continue;
        uint64_t left = t->len - t->next;
        uint32_t len = (uint32_t)(left < n->chunk_size ? left : n->chunk_size);
        fed_msg m = {.type = FED_MSG_CHUNK};
        m.u.chunk.transfer_id = t->id;
        m.u.chunk.offset = t->next;
        m.u.chunk.length = len;
        fed_err e = write_msg(s, &m, t->data + t->next, len, true);
        if (e == FED_EAGAIN) break; /* pool exhausted: its fd wakes us */
        if (e != FED_OK) return e;
        t->next += len;
        (*sent)++;
        if ((e = fed__sess_flush(s)) != FED_OK) return e;
        if (s->q_head) break;
    }
    return FED_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Input                                                                                */

static fed_err on_credit(fed__sess *s, const fed_msg_credit *c) {
    fed__xfer_out *t = find_out(s->xfers, c->transfer_id);
    if (!t) return FED_OK; /* finished or cancelled here: a late grant */
    if (c->offset > t->len)
        return fed_errorf(FED_EPROTO,
                          "credit for transfer %" PRIu64 " at offset %" PRIu64
                          " beyond its %" PRIu64 " bytes",
                          t->id, c->offset, t->len);
    if (c->chunks == 0) {
        if (c->offset == t->len) {
            uint64_t id = t->id;
            remove_out(s->xfers, t);
            fed__net_event(s->net, FED_NET_TRANSFER_SENT, s->peer, s->cn, NULL, id, FED_OK, NULL);
        }
        return FED_OK;
    }
    uint64_t end = add_sat(c->offset, (uint64_t)c->chunks * s->net->chunk_size);
    if (t->resume) {
        t->next = t->credit_base = c->offset;
        t->allowed_end = end;
        t->resume = false;
        return FED_OK;
    }
    if (c->offset < t->credit_base || c->offset > t->next)
        return fed_errorf(FED_EPROTO,
                          "credit for transfer %" PRIu64 " at offset %" PRIu64 " outside [%" PRIu64
                          ", %" PRIu64 "]",
                          t->id, c->offset, t->credit_base, t->next);
    t->credit_base = c->offset;
    if (end > t->allowed_end) t->allowed_end = end;
    return FED_OK;
}

/* Testing hook: fed__net_hash_thread (net_internal.h). */
static int hash_mode = -1;

void fed__net_hash_thread(int mode) {
    hash_mode = mode;
}

/* Chooses, at t's first chunk, who hashes it: the digest worker (started now if need be)
 * when it pays (session.h), else the receiving thread as it decrypts. */
static void choose_hashing(fed__net *n, fed__xfer_in *t) {
    t->decided = true;
    bool async = hash_mode == 1 || (hash_mode < 0 && !n->inproc && t->len >= FED__HASH_ASYNC_MIN &&
                                    sysconf(_SC_NPROCESSORS_ONLN) > 1);
    if (!async || n->hasher_failed) return;
    if (!n->hasher && fed__hasher_new(&n->hasher) != FED_OK) {
        n->hasher_failed = true;
        FED_LOG(FED_LOG_WARN, "%s: %s; transfers are hashed inline", n->side, fed_errmsg());
        return;
    }
    t->hasher = n->hasher;
}

static fed_err on_chunk(fed__sess *s, const fed_msg_chunk *c) {
    fed__xfer_in *t = find_in(s->xfers, c->transfer_id);
    if (c->length == 0)
        return fed_errorf(FED_EPROTO, "empty chunk of transfer %" PRIu64, c->transfer_id);
    s->pin = t;
    s->poff = c->offset;
    s->plen = s->pleft = c->length;
    s->pstate = 2;
    if (!t) {
        if (was_cancelled(s->xfers, c->transfer_id)) return FED_OK; /* discard */
        return fed_errorf(FED_EPROTO, "chunk of unknown transfer %" PRIu64, c->transfer_id);
    }
    if (c->offset > t->len || c->length > t->len - c->offset)
        return fed_errorf(FED_ERANGE,
                          "transfer %" PRIu64 ": chunk [%" PRIu64 ", +%" PRIu32
                          ") outside its %" PRIu64 " bytes",
                          t->id, c->offset, c->length, t->len);
    if (c->offset != t->received)
        return fed_errorf(FED_EPROTO,
                          "transfer %" PRIu64 ": chunk at offset %" PRIu64 ", expected %" PRIu64,
                          t->id, c->offset, t->received);
    if (t->since_grant >= s->net->cfg.credits)
        return fed_errorf(FED_EPROTO, "transfer %" PRIu64 ": chunk beyond the credit granted",
                          t->id);
    if (!t->decided) choose_hashing(s->net, t);
    return FED_OK;
}

static fed_err chunk_done(fed__sess *s) {
    fed__xfer_in *t = s->pin;
    s->pin = NULL;
    if (!t) return FED_OK;
    /* Inline, read_loop hashed the payload as it was decrypted. */
    if (t->hasher) fed__hasher_add(t->hasher, t->sha, t->buf + s->poff, s->plen, &t->pending);
    t->received += s->plen;
    t->since_grant++;
    if (t->received == t->len) return finish_in(s, t);
    uint32_t half = s->net->cfg.credits / 2;
    if (t->since_grant >= (half ? half : 1)) return grant(s, t);
    return FED_OK;
}

static fed_err on_envelope(fed__sess *s) {
    fed__net *n = s->net;
    fed_msg m;
    fed_err e = fed_msg_decode(&m, s->env, s->msglen, &n->cfg.limits);
    if (e != FED_OK) {
        if (m.version != 0 && m.version != FED_PROTOCOL_VERSION) {
            char why[128];
            snprintf(why, sizeof why, "protocol version %" PRIu32 " not spoken (this is %d)",
                     m.version, FED_PROTOCOL_VERSION);
            fed_msg err = {.type = FED_MSG_ERROR};
            err.u.error.code = 100; /* ERR_VERSION */
            err.u.error.text = why;
            if (write_msg(s, &err, NULL, 0, false) == FED_OK && fed__sess_flush(s) != FED_OK) {
                /* best effort: the session ends anyway */
            }
            return fed_errorf(FED_EPROTO, "%s", why);
        }
        return fed_errprefix(FED_EPROTO, "bad message");
    }
    if (m.seq != s->seq_in + 1) {
        uint64_t got = m.seq;
        fed_msg_free(&m);
        return fed_errorf(FED_EPROTO, "message %" PRIu64 " out of sequence, expected %" PRIu64, got,
                          s->seq_in + 1);
    }
    s->seq_in = m.seq;
    switch (m.type) {
    case FED_MSG_CHUNK:
    case FED_MSG_CREDIT:
        if (s->state != FED__READY) {
            fed_msg_type t = m.type;
            fed_msg_free(&m);
            return fed_errorf(FED_EPROTO, "%s before admission", fed_msg_type_name(t));
        }
        e = m.type == FED_MSG_CHUNK ? on_chunk(s, &m.u.chunk) : on_credit(s, &m.u.credit);
        fed_msg_free(&m);
        return e;
    case FED_MSG_HEARTBEAT:
        fed_msg_free(&m);
        return FED_OK;
    default:
        return n->on_msg(n->owner, s, &m);
    }
}

/* Reads and parses plaintext until the input is used up. */
static fed_err read_loop(fed__sess *s) {
    fed__net *n = s->net;
    for (;;) {
        if (s->state == FED__DEAD) return FED_OK;
        size_t got = 0;
        fed_err e;
        if (s->pstate == 0) {
            e = fed__tls_read(s->tls, s->lenbuf + s->lenhave, 4 - s->lenhave, &got);
            if (e == FED_EAGAIN) return FED_OK;
            if (e != FED_OK) return e;
            s->lenhave += got;
            if (s->lenhave < 4) continue;
            s->lenhave = 0;
            s->msglen = fed_load_le32(s->lenbuf);
            /* Before admission only Hello, Welcome or Error may come: keep them small. */
            size_t limit = n->cfg.limits.max_envelope;
            if (s->state != FED__READY && limit > FED__ADMIT_MSG_MAX) limit = FED__ADMIT_MSG_MAX;
            if (s->msglen == 0 || s->msglen > limit)
                return fed_errorf(FED_EPROTO, "message of %" PRIu32 " bytes, limit %zu", s->msglen,
                                  limit);
            if (s->msglen > s->envcap) {
                size_t cap = s->msglen > 1024 ? s->msglen : 1024;
                uint8_t *p = fed_realloc(s->env, cap);
                if (!p) return FED_ENOMEM;
                s->env = p;
                s->envcap = cap;
            }
            s->envhave = 0;
            s->pstate = 1;
        } else if (s->pstate == 1) {
            e = fed__tls_read(s->tls, s->env + s->envhave, s->msglen - s->envhave, &got);
            if (e == FED_EAGAIN) return FED_OK;
            if (e != FED_OK) return e;
            s->envhave += got;
            if (s->envhave < s->msglen) continue;
            s->pstate = 0;
            if ((e = on_envelope(s)) != FED_OK) return e;
        } else {
            uint8_t *dst = n->discard;
            size_t want = s->pleft < DISCARD_SIZE ? s->pleft : DISCARD_SIZE;
            if (s->pin) {
                dst = s->pin->buf + s->poff + (s->plen - s->pleft);
                want = s->pleft;
            }
            e = fed__tls_read(s->tls, dst, want, &got);
            if (e == FED_EAGAIN) return FED_OK;
            if (e != FED_OK) return e;
            /* One record at a time: hashed while it is still in the cache. */
            if (s->pin && !s->pin->hasher) fed__sha256_update(s->pin->sha, dst, got);
            s->pleft -= (uint32_t)got;
            if (s->pleft > 0) continue;
            s->pstate = 0;
            if ((e = chunk_done(s)) != FED_OK) return e;
        }
    }
}

/* Flushes what OpenSSL wrote (an alert) and returns err with its detail unchanged. */
static fed_err fail_flush(fed__sess *s, fed_err err) {
    char why[512];
    snprintf(why, sizeof why, "%s", fed_errdetail(err));
    if (fed__sess_flush(s) != FED_OK) { /* the peer may be gone: nothing to tell */
    }
    return fed_errorf(err, "%s", why);
}

fed_err fed__sess_input(fed__sess *s, const uint8_t *data, size_t len) {
    fed__net *n = s->net;
    fed_err e;
    s->t_last_in = fed_now_ms();
    fed__tls_input(s->tls, data, len);
    if (s->state == FED__HANDSHAKE) {
        e = fed__tls_handshake(s->tls);
        if (e == FED_EAGAIN) {
            /* Waiting for the peer's next flight is fine; waiting for the rest of a record
             * is not: every frame carries whole records, during the handshake too. */
            if (fed__tls_has_leftover(s->tls))
                return fed_errorf(FED_EPROTO, "frame ends inside a TLS record (truncated record)");
            return fed__sess_flush(s);
        }
        if (e != FED_OK) return fail_flush(s, e);
        snprintf(s->cn, sizeof s->cn, "%s", fed__tls_peer_cn(s->tls));
        s->state = FED__ADMIT;
        if (n->on_handshake && (e = n->on_handshake(n->owner, s)) != FED_OK)
            return fail_flush(s, e);
    }
    if ((e = read_loop(s)) != FED_OK) return fail_flush(s, e);
    if (s->state == FED__DEAD) return FED_OK;
    if (fed__tls_has_leftover(s->tls))
        return fed_errorf(FED_EPROTO, "frame ends inside a TLS record (truncated record)");
    if (s->pstate == 2)
        return fed_errorf(FED_EPROTO,
                          "frame ends inside a chunk of transfer %" PRIu64
                          " (truncated chunk: %" PRIu32 " of %" PRIu32 " bytes missing)",
                          s->pin ? s->pin->id : 0, s->pleft, s->plen);
    if (s->pstate != 0 || s->lenhave != 0)
        return fed_errorf(FED_EPROTO, "frame ends inside a message (truncated message)");
    return fed__sess_flush(s);
}

fed_err fed__sess_start(fed__sess *s) {
    fed_err e = fed__tls_handshake(s->tls);
    if (e != FED_EAGAIN && e != FED_OK) return e;
    return fed__sess_flush(s);
}

/* ------------------------------------------------------------------------------------ */
/* Life cycle                                                                           */

fed_err fed__sess_new(fed__sess **out, fed__net *n, const uint8_t *rid, size_t rid_len,
                      const uint8_t sid[FED_SESSION_ID_LEN], const char *server_name) {
    *out = NULL;
    fed__sess *s = fed_calloc(1, sizeof *s);
    if (!s) return FED_ENOMEM;
    s->net = n;
    s->fd = -1;
    if (rid_len > FED__RID_MAX) rid_len = FED__RID_MAX;
    if (rid_len) memcpy(s->rid, rid, rid_len);
    s->rid_len = rid_len;
    memcpy(s->sid, sid, FED_SESSION_ID_LEN);
    s->t_start = s->t_last_in = s->t_last_out = fed_now_ms();
    fed_err e = fed__tls_new(&s->tls, n->tls, server_name, tls_sink, s);
    if (e != FED_OK) {
        fed_free(s);
        return e;
    }
    *out = s;
    return FED_OK;
}

void fed__sess_free(fed__sess **sp) {
    fed__sess *s = *sp;
    if (!s) return;
    *sp = NULL;
    fed__net *n = s->net;
    if (s->cur) {
        if (s->cur == n->small)
            n->small_owner = NULL;
        else
            fed__buf_release(s->cur);
    }
    for (fed__buf *b = s->q_head, *nx; b; b = nx) {
        nx = b->next;
        fed__buf_release(b);
    }
    fed__tls_destroy(&s->tls);
    fed_free(s->env);
    fed_free(s);
}

/* ------------------------------------------------------------------------------------ */
/* The poll loop of both sides                                                          */

fed_err fed__net_conn_events(fed__net *n) {
    for (int i = 0; n->sock && i < 256; i++) {
        fed__conn_event ce;
        int fd;
        fed_err e = fed__sock_event(n->sock, &ce, &fd);
        if (e == FED_EAGAIN) return FED_OK;
        if (e != FED_OK) return e;
        if (n->on_conn) n->on_conn(n->owner, ce, fd);
    }
    return FED_OK;
}

fed_err fed__net_poll(fed__net *n, int timeout_ms, fed_net_event *ev) {
    memset(ev, 0, sizeof *ev);
    ev->cn = "";
    ev->reason = "";
    int64_t now = fed_now_ms();
    int64_t end = timeout_ms < 0 ? INT64_MAX : now + timeout_ms;
    for (;;) {
        if (fed__net_pop(n, ev)) return FED_OK;
        if (!n->sock) { /* a client whose reconnect failed: nothing can happen */
            if (timeout_ms > 0) {
                struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
                nanosleep(&ts, NULL);
            }
            return FED_OK;
        }
        /* Connection events before frames: whatever a connection delivered before it
         * ended is read below, before the owner acts on its end (in its timers, once
         * drained). */
        fed_err ce = fed__net_conn_events(n);
        if (ce != FED_OK) return ce;
        n->drained = false;
        for (int i = 0; i < 256; i++) {
            fed__frame f;
            fed_err e = fed__sock_recv(n->sock, &f);
            if (e == FED_EAGAIN) {
                n->drained = true;
                break;
            }
            if (e != FED_OK) return e;
            n->stats.frames_received++;
            n->stats.bytes_received += f.len;
            n->on_frame(n->owner, &f);
        }
        n->blocked = false;
        n->pump(n->owner);
        now = fed_now_ms();
        if (now >= n->next_timer) {
            n->timers(n->owner, now);
            n->next_timer = now + 20;
        }
        if (n->evq_head) continue;
        if (now >= end) return FED_OK;
        int64_t wait = end - now;
        if (wait > 100) wait = 100; /* timers */
        if (n->blocked) wait = 1;   /* a frame waits for room in ZeroMQ */
        bool in, woke;
        fed_err e = fed__sock_wait(n->sock, fed__pool_fd(n->pool), (int)wait, &in, &woke);
        if (e != FED_OK) return e;
        if (woke) fed__pool_clear_signal(n->pool);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Testing hooks                                                                        */

fed_err fed__sess_send_plain(fed__sess *s, const void *data, size_t len) {
    fed_err e = frame_begin(s, fed__tls_bound(len), false);
    if (e == FED_OK) e = fed__tls_write(s->tls, data, len);
    return e != FED_OK ? e : fed__sess_flush(s);
}

fed_err fed__sess_send_chunk(fed__sess *s, uint64_t id, uint64_t offset, const void *data,
                             uint32_t len, uint32_t declared) {
    fed_msg m = {.type = FED_MSG_CHUNK};
    m.u.chunk.transfer_id = id;
    m.u.chunk.offset = offset;
    m.u.chunk.length = declared;
    fed_err e = write_msg(s, &m, data, len, false);
    return e != FED_OK ? e : fed__sess_flush(s);
}
