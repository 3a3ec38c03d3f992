/* The coordinator's side of the channel (fed_server in channel.h): the ROUTER, a table of
 * sessions by routing id, admission (Hello -> Welcome) and the identities behind it,
 * limits, timers, and the one log line per dropped peer.
 *
 * Sessions and identities are separate on purpose. A session is one TLS session on one
 * routing id and dies with it; an identity (a certificate CN, with a stable peer handle)
 * owns the transfers, so they survive reconnects: when the same CN is admitted again,
 * the new session takes over the identity and the transfers resume where the receiver
 * says. A session on a routing id is replaced by an OPEN frame with a new session id; an
 * admitted identity's session is replaced by a newer session admitted with the same CN.
 *
 * Frames from routing ids without a session that are not OPEN frames are answered with
 * CLOSE (the peer's session is gone); garbage from such a routing id is logged once and
 * the routing id ignored until it opens a proper session.
 *
 * Frame sizes have two limits. Up to twice the largest legitimate frame (ZMQ_MAXMSGSIZE)
 * libzmq delivers the frame and we drop the peer with a log line naming it; beyond that
 * libzmq itself closes the connection before we see anything. On tcp:// the ROUTER's
 * monitor reports that end: each session remembers the connection its OPEN frame came on
 * (descriptor, and which of the connections that ever had that descriptor: accepts are
 * counted per descriptor, as descriptors are reused), and when that connection ends
 * while the session lives, the session is dropped with a warn line naming the peer.
 * Not at once: every frame the connection delivered before is read first (a peer that
 * leaves properly has said CLOSE by then), and the peer gets GONE_GRACE_MS to come back
 * with a new session on its routing id, which replaces the old one quietly as always
 * (fed_client_reconnect; with ZMQ_ROUTER_HANDOVER libzmq may discard the CLOSE the old
 * connection still carried). libzmq does not say why a connection ended, so the line
 * names both causes: the peer went away, or it sent a frame over the limit. */
#include "net/net_internal.h"
#include "core/clock.h"
#include "net/session.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/rng.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Routing ids that sent garbage, ignored quietly until they send an OPEN frame. */
#define BAN_SLOTS 64
/* How long a session outlives its connection, waiting for its peer to reconnect. */
#define GONE_GRACE_MS 1000

/* An admitted identity: a certificate CN. Kept for the server's lifetime. */
typedef struct peer {
    uint32_t id;                 /* handle, index + 1 */
    char cn[FED_NET_CN_MAX + 1]; /* certificate subject CN */
    fed__xfers xfers;            /* transfers with it, across sessions */
    fed__sess *sess;             /* its admitted session, or NULL */
    fed_net_role role;           /* as its last admitted session's certificate says */
    struct peer *hnext;          /* CN hash chain */
} peer;

typedef struct ban {
    uint8_t rid[FED__RID_MAX]; /* routing id */
    size_t len;                /* its length; 0: free slot */
} ban;

struct fed_server {
    fed__net net;             /* sockets, TLS, pool, events */
    char software[128];       /* Welcome.coordinator */
    size_t max_peers;         /* admitted sessions at once */
    size_t max_handshakes;    /* sessions not yet admitted at once */
    fed__sess *sessions;      /* every session */
    fed__sess **buckets;      /* sessions by routing id (chained through hnext) */
    size_t nbuckets;          /* power of two */
    size_t nsessions;         /* sessions in the table */
    fed__sess *pending;       /* sessions with frames queued or a transfer to pump */
    peer **peers;             /* identities by handle - 1 */
    size_t npeers, peers_cap; /* used and allocated */
    peer **pbuckets;          /* identities by CN (chained through hnext), peers_cap long */
    size_t admitted;          /* sessions READY */
    size_t handshakes;        /* sessions not READY */
    ban bans[BAN_SLOTS];      /* garbage senders */
    unsigned nbans;           /* next slot to write */
    uint32_t *fd_gen;         /* tcp://: connections accepted so far on each descriptor */
    size_t fd_gen_n;          /* descriptors the table covers */
    char errmsg[512];         /* last error of a call */
};

static fed_err srv_err(fed_server *s, fed_err e) {
    if (e != FED_OK) snprintf(s->errmsg, sizeof s->errmsg, "%s", fed_errdetail(e));
    return e;
}

/* ------------------------------------------------------------------------------------ */
/* Tables                                                                               */

static size_t rid_hash(const uint8_t *rid, size_t len) {
    return (size_t)fed_hash_bytes(rid, len);
}

static fed__sess *lookup(fed_server *s, const uint8_t *rid, size_t len) {
    for (fed__sess *x = s->buckets[rid_hash(rid, len) & (s->nbuckets - 1)]; x; x = x->hnext)
        if (x->rid_len == len && memcmp(x->rid, rid, len) == 0) return x;
    return NULL;
}

static fed_err table_add(fed_server *s, fed__sess *x) {
    if (s->nsessions + 1 > s->nbuckets) {
        size_t nb = s->nbuckets * 2;
        fed__sess **b = fed_calloc(nb, sizeof(fed__sess *));
        if (!b) return FED_ENOMEM;
        for (size_t i = 0; i < s->nbuckets; i++)
            for (fed__sess *y = s->buckets[i], *nx; y; y = nx) {
                nx = y->hnext;
                size_t h = rid_hash(y->rid, y->rid_len) & (nb - 1);
                y->hnext = b[h];
                b[h] = y;
            }
        fed_free(s->buckets);
        s->buckets = b;
        s->nbuckets = nb;
    }
    size_t h = rid_hash(x->rid, x->rid_len) & (s->nbuckets - 1);
    x->hnext = s->buckets[h];
    s->buckets[h] = x;
    s->nsessions++;
    x->next = s->sessions;
    x->prev = NULL;
    if (s->sessions) s->sessions->prev = x;
    s->sessions = x;
    return FED_OK;
}

static void table_remove(fed_server *s, fed__sess *x) {
    for (fed__sess **pp = &s->buckets[rid_hash(x->rid, x->rid_len) & (s->nbuckets - 1)]; *pp;
         pp = &(*pp)->hnext)
        if (*pp == x) {
            *pp = x->hnext;
            s->nsessions--;
            break;
        }
    if (x->prev)
        x->prev->next = x->next;
    else
        s->sessions = x->next;
    if (x->next) x->next->prev = x->prev;
}

static peer *peer_get(const fed_server *s, uint32_t id) {
    return id >= 1 && id <= s->npeers ? s->peers[id - 1] : NULL;
}

static size_t cn_bucket(const fed_server *s, const char *cn) {
    return rid_hash((const uint8_t *)cn, strlen(cn)) & (s->peers_cap - 1);
}

static peer *peer_by_cn(fed_server *s, const char *cn) {
    if (!s->pbuckets) return NULL;
    for (peer *p = s->pbuckets[cn_bucket(s, cn)]; p; p = p->hnext)
        if (strcmp(p->cn, cn) == 0) return p;
    return NULL;
}

/* Doubles the identity table and its CN hash (as many buckets as slots: a power of two). */
static fed_err peers_grow(fed_server *s) {
    size_t cap = s->peers_cap ? 2 * s->peers_cap : 16;
    peer **p = fed_realloc(s->peers, cap * sizeof(peer *));
    if (!p) return FED_ENOMEM;
    s->peers = p;
    peer **b = fed_calloc(cap, sizeof(peer *));
    if (!b) return FED_ENOMEM;
    fed_free(s->pbuckets);
    s->pbuckets = b;
    s->peers_cap = cap;
    for (size_t i = 0; i < s->npeers; i++) {
        size_t h = cn_bucket(s, s->peers[i]->cn);
        s->peers[i]->hnext = b[h];
        b[h] = s->peers[i];
    }
    return FED_OK;
}

static fed_err peer_new(fed_server *s, const char *cn, peer **out) {
    fed_err e;
    if (s->npeers == s->peers_cap && (e = peers_grow(s)) != FED_OK) return e;
    peer *p = fed_calloc(1, sizeof *p);
    if (!p) return FED_ENOMEM;
    p->id = (uint32_t)s->npeers + 1;
    snprintf(p->cn, sizeof p->cn, "%s", cn);
    s->peers[s->npeers++] = p;
    size_t h = cn_bucket(s, p->cn);
    p->hnext = s->pbuckets[h];
    s->pbuckets[h] = p;
    *out = p;
    return FED_OK;
}

/* The pending list: sessions that may have output to move (queued frames, a transfer
 * with credit). srv_pump walks it instead of every session, so a poll costs O(active) at
 * 10 000 peers. A session is put on it by whatever can give it output (a frame it sent,
 * a call of the API for its peer, a heartbeat) and taken off by srv_pump once it has
 * none; srv_timers' sweep puts back any it finds wanting, as a safety net. */
static void mark(fed_server *s, fed__sess *x) {
    if (!x || x->pending) return;
    x->pending = true;
    x->pprev = NULL;
    x->pnext = s->pending;
    if (s->pending) s->pending->pprev = x;
    s->pending = x;
}

static void unmark(fed_server *s, fed__sess *x) {
    if (!x->pending) return;
    x->pending = false;
    if (x->pprev)
        x->pprev->pnext = x->pnext;
    else
        s->pending = x->pnext;
    if (x->pnext) x->pnext->pprev = x->pprev;
    x->pnext = x->pprev = NULL;
}

static bool banned(const fed_server *s, const uint8_t *rid, size_t len) {
    for (unsigned i = 0; i < BAN_SLOTS; i++)
        if (s->bans[i].len == len && memcmp(s->bans[i].rid, rid, len) == 0) return true;
    return false;
}

static void ban_add(fed_server *s, const uint8_t *rid, size_t len) {
    ban *b = &s->bans[s->nbans++ % BAN_SLOTS];
    memcpy(b->rid, rid, len);
    b->len = len;
}

static void ban_lift(fed_server *s, const uint8_t *rid, size_t len) {
    for (unsigned i = 0; i < BAN_SLOTS; i++)
        if (s->bans[i].len == len && memcmp(s->bans[i].rid, rid, len) == 0) s->bans[i].len = 0;
}

/* ------------------------------------------------------------------------------------ */
/* Ending sessions                                                                      */

/* The peer as log lines name it: its CN once verified, else its routing id (and the CN
 * its certificate claims, if it showed one). */
static void peer_name(const fed__sess *x, char *out, size_t size) {
    if (x->cn[0]) {
        snprintf(out, size, "%s", x->cn);
        return;
    }
    char hex[40];
    fed__hex(x->rid, x->rid_len, hex);
    const char *shown = x->tls ? fed__tls_presented_cn(x->tls) : "";
    if (shown[0])
        snprintf(out, size, "routing id %s (certificate CN %s)", hex, shown);
    else
        snprintf(out, size, "routing id %s", hex);
}

enum { QUIET = 0, INFO = 1, WARN = 2 };

/* Ends session x: one log line at level how, CLOSE to the peer unless it closed, LEFT
 * for an admitted session. */
static void end_session(fed_server *s, fed__sess *x, fed_err err, const char *reason, int how,
                        bool tell_peer) {
    char name[160];
    peer_name(x, name, sizeof name);
    if (how == WARN)
        FED_LOG(FED_LOG_WARN, "coordinator: dropped peer %s: %s", name, reason);
    else if (how == INFO)
        FED_LOG(FED_LOG_INFO, "coordinator: peer %s left: %s", name, reason);
    if (tell_peer) fed__send_close(&s->net, x->rid, x->rid_len, x->sid);
    peer *p = peer_get(s, x->peer);
    if (x->state == FED__READY && p && p->sess == x) {
        p->sess = NULL;
        s->admitted--;
        fed__net_event(&s->net, FED_NET_LEFT, p->id, p->cn, NULL, 0, err, reason);
    } else if (x->state != FED__READY) {
        s->handshakes--;
    }
    x->state = FED__DEAD;
    unmark(s, x);
    table_remove(s, x);
    fed__sess_free(&x);
}

static void drop(fed_server *s, fed__sess *x, fed_err err) {
    char why[512];
    snprintf(why, sizeof why, "%s", fed_errdetail(err));
    if (err == FED_ECLOSED && strcmp(why, "host unreachable") == 0)
        snprintf(why, sizeof why, "unreachable: its connection is gone");
    end_session(s, x, err, why, WARN, err != FED_ECLOSED);
}

/* ------------------------------------------------------------------------------------ */
/* Admission                                                                            */

static fed_err srv_on_handshake(void *owner, fed__sess *x) {
    (void)owner;
    (void)x; /* s->cn is set; the client speaks next (Hello) */
    return FED_OK;
}

static fed_err refuse(fed__sess *x, uint32_t code, const char *text) {
    fed_msg m = {.type = FED_MSG_ERROR};
    m.u.error.code = code;
    m.u.error.text = text;
    if (fed__sess_send(x, &m) == FED_OK && fed__sess_flush(x) != FED_OK) {
        /* best effort: the session ends anyway */
    }
    return fed_errorf(FED_EAUTH, "refused: %s", text);
}

static fed_err admit(fed_server *s, fed__sess *x, fed_msg *m) {
    if (memcmp(m->u.hello.session_id, x->sid, FED_SESSION_ID_LEN) != 0) {
        fed_msg_free(m);
        return fed_errorf(FED_EPROTO, "Hello carries another session id than its frames");
    }
    peer *p = peer_by_cn(s, x->cn);
    if (p && p->sess)
        end_session(s, p->sess, FED_ECLOSED, "replaced by a newer session of the same identity",
                    INFO, true);
    if (s->admitted >= s->max_peers) {
        fed_msg_free(m);
        char text[96];
        snprintf(text, sizeof text, "%zu peers connected, the limit", s->admitted);
        return refuse(x, 101 /* ERR_BUSY */, text);
    }
    fed_err e;
    if (!p && (e = peer_new(s, x->cn, &p)) != FED_OK) {
        fed_msg_free(m);
        return e;
    }
    p->sess = x;
    p->role = x->tls && fed__tls_peer_admin(x->tls) ? FED_NET_ROLE_ADMIN : FED_NET_ROLE_SITE;
    x->xfers = &p->xfers;
    x->peer = p->id;
    x->state = FED__READY;
    s->handshakes--;
    s->admitted++;
    fed_msg w = {.type = FED_MSG_WELCOME};
    w.u.welcome.client_id = p->cn;
    memcpy(w.u.welcome.session_id, x->sid, FED_SESSION_ID_LEN);
    w.u.welcome.max_chunk = (uint32_t)s->net.cfg.limits.max_chunk;
    w.u.welcome.credits = s->net.cfg.credits;
    w.u.welcome.coordinator = s->software;
    e = fed__sess_send(x, &w);
    FED_LOG(FED_LOG_INFO, "coordinator: peer %s joined (peer %" PRIu32 "%s)", p->cn, p->id,
            p->role == FED_NET_ROLE_ADMIN ? ", admin" : "");
    fed__net_event(&s->net, FED_NET_JOINED, p->id, p->cn, m, 0, FED_OK, NULL);
    if (e != FED_OK) return e;
    return fed__sess_resume(x);
}

static fed_err srv_on_msg(void *owner, fed__sess *x, fed_msg *m) {
    fed_server *s = owner;
    fed_msg_type t = m->type;
    if (x->state == FED__ADMIT) {
        if (t == FED_MSG_HELLO) return admit(s, x, m);
        fed_msg_free(m);
        return fed_errorf(FED_EPROTO, "expected Hello, got %s", fed_msg_type_name(t));
    }
    if (t == FED_MSG_HELLO || t == FED_MSG_WELCOME) {
        fed_msg_free(m);
        return fed_errorf(FED_EPROTO, "unexpected %s", fed_msg_type_name(t));
    }
    fed__net_event(&s->net, FED_NET_MESSAGE, x->peer, x->cn, m, 0, FED_OK, NULL);
    return FED_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Frames                                                                               */

static void garbage(fed_server *s, fed__sess *x, const uint8_t *rid, size_t rid_len,
                    const char *why) {
    if (x) {
        fed_errorf(FED_EPROTO, "%s", why);
        drop(s, x, FED_EPROTO);
        return;
    }
    if (banned(s, rid, rid_len)) return;
    ban_add(s, rid, rid_len);
    char hex[40];
    fed__hex(rid, rid_len, hex);
    FED_LOG(FED_LOG_WARN, "coordinator: dropped peer routing id %s: %s", hex, why);
}

/* Which connection on descriptor fd is the current one (0 for none seen). */
static uint32_t fd_gen_of(const fed_server *s, int fd) {
    return fd >= 0 && (size_t)fd < s->fd_gen_n ? s->fd_gen[fd] : 0;
}

/* The ROUTER's monitor (tcp:// only): counts accepts per descriptor and marks the
 * sessions whose connection ended; srv_timers drops them after their grace. */
static void srv_on_conn(void *owner, fed__conn_event ev, int fd) {
    fed_server *s = owner;
    if (fd < 0 || fd >= (1 << 20)) return;
    if (ev == FED__CONN_ACCEPTED) {
        if ((size_t)fd >= s->fd_gen_n) {
            size_t n = (size_t)fd + 64;
            uint32_t *g = fed_realloc(s->fd_gen, n * sizeof *g);
            if (!g) return; /* such a session is then found by its timeouts */
            memset(g + s->fd_gen_n, 0, (n - s->fd_gen_n) * sizeof *g);
            s->fd_gen = g;
            s->fd_gen_n = n;
        }
        s->fd_gen[fd]++;
    } else if (ev == FED__CONN_DISCONNECTED) {
        uint32_t gen = fd_gen_of(s, fd);
        for (fed__sess *x = s->sessions; x; x = x->next)
            if (x->fd == fd && x->fd_gen == gen && gen != 0 && !x->gone_at)
                x->gone_at = fed_now_ms();
    }
}

static void open_session(fed_server *s, const fed__frame *f, const uint8_t *sid) {
    ban_lift(s, f->rid, f->rid_len);
    /* The accept of this frame's connection is reported before the frame: count it now,
     * so the session is tied to the right connection on a reused descriptor. */
    if (fed__net_conn_events(&s->net) != FED_OK) { /* then by its timeouts */
    }
    if (s->handshakes >= s->max_handshakes) {
        char hex[40];
        fed__hex(f->rid, f->rid_len, hex);
        FED_LOG(FED_LOG_WARN,
                "coordinator: dropped peer routing id %s: %zu handshakes in progress, the limit",
                hex, s->handshakes);
        fed__send_close(&s->net, f->rid, f->rid_len, sid);
        return;
    }
    fed__sess *x;
    fed_err e = fed__sess_new(&x, &s->net, f->rid, f->rid_len, sid, NULL);
    if (e == FED_OK && (e = table_add(s, x)) != FED_OK) fed__sess_free(&x);
    if (e != FED_OK) {
        FED_LOG(FED_LOG_ERROR, "coordinator: cannot open a session: %s", fed_errdetail(e));
        return;
    }
    s->handshakes++;
    x->fd = f->fd;
    x->fd_gen = fd_gen_of(s, f->fd);
    e = fed__sess_input(x, f->data + FED__HDR_LEN, f->len - FED__HDR_LEN);
    if (e != FED_OK)
        drop(s, x, e);
    else
        mark(s, x);
}

static void srv_on_frame(void *owner, const fed__frame *f) {
    fed_server *s = owner;
    fed__sess *x = lookup(s, f->rid, f->rid_len);
    char why[128];
    int type = 0;
    uint8_t sid[FED_SESSION_ID_LEN];
    const char *bad = fed__frame_check(f, s->net.max_frame, &type, sid, why, sizeof why);
    if (bad) {
        garbage(s, x, f->rid, f->rid_len, bad);
        return;
    }
    bool same = x && memcmp(x->sid, sid, FED_SESSION_ID_LEN) == 0;
    switch (type) {
    case FED__FRAME_OPEN:
        if (same) {
            garbage(s, x, f->rid, f->rid_len, "second OPEN frame for one session");
            return;
        }
        if (x)
            end_session(s, x, FED_ECLOSED, "replaced by a new session on its connection", INFO,
                        false);
        open_session(s, f, sid);
        return;
    case FED__FRAME_DATA:
        if (!same) {
            /* A session we ended or never had: tell the sender, once per frame. */
            if (!banned(s, f->rid, f->rid_len)) fed__send_close(&s->net, f->rid, f->rid_len, sid);
            return;
        }
        fed_err e = fed__sess_input(x, f->data + FED__HDR_LEN, f->len - FED__HDR_LEN);
        if (e != FED_OK)
            drop(s, x, e);
        else
            mark(s, x);
        return;
    default: /* CLOSE */
        if (same) end_session(s, x, FED_ECLOSED, "closed by the peer", INFO, false);
        return;
    }
}

/* ------------------------------------------------------------------------------------ */
/* Pump and timers                                                                      */

static void srv_pump(void *owner) {
    fed_server *s = owner;
    for (fed__sess *x = s->pending, *nx; x; x = nx) {
        nx = x->pnext;
        if (x->q_head) {
            fed_err e = fed__sess_flush(x);
            if (e != FED_OK) drop(s, x, e);
        }
    }
    /* One chunk per transfer per round, so peers share the pool fairly. */
    for (bool progress = true; progress;) {
        progress = false;
        for (fed__sess *x = s->pending, *nx; x; x = nx) {
            nx = x->pnext;
            if (!fed__sess_wants_pump(x)) continue;
            size_t sent;
            fed_err e = fed__sess_pump(x, &sent);
            if (e != FED_OK)
                drop(s, x, e);
            else if (sent)
                progress = true;
        }
    }
    for (fed__sess *x = s->pending, *nx; x; x = nx) {
        nx = x->pnext;
        if (!x->q_head && !fed__sess_wants_pump(x)) unmark(s, x);
    }
}

static void srv_timers(void *owner, int64_t now) {
    fed_server *s = owner;
    const fed_net_config *c = &s->net.cfg;
    for (fed__sess *x = s->sessions, *nx; x; x = nx) {
        nx = x->next;
        fed_err e = FED_OK;
        if (x->gone_at) {
            /* Nothing to send on a closed connection; read what came before its end and
             * give the peer its grace to reconnect first. */
            if (!s->net.drained || now - x->gone_at < GONE_GRACE_MS) continue;
            char why[256];
            snprintf(why, sizeof why,
                     "its connection ended: the peer went away, or ZeroMQ cut it for a frame "
                     "over %lld bytes (ZMQ_MAXMSGSIZE)",
                     (long long)s->net.zmq_limit);
            end_session(s, x, FED_ECLOSED, why, WARN, false);
            continue;
        }
        if (x->state != FED__READY) {
            if (now - x->t_start > c->handshake_timeout_ms)
                e = fed_errorf(FED_ETIMEOUT, "not admitted within %d ms", c->handshake_timeout_ms);
        } else if (c->idle_timeout_ms && now - x->t_last_in > c->idle_timeout_ms) {
            e = fed_errorf(FED_ETIMEOUT, "silent for %d ms", c->idle_timeout_ms);
        } else if (c->keepalive_ms && now - x->t_last_out >= c->keepalive_ms) {
            fed_msg m = {.type = FED_MSG_HEARTBEAT};
            m.u.heartbeat_ms = (uint64_t)now;
            e = fed__sess_send(x, &m);
            if (e == FED_OK) e = fed__sess_flush(x);
        }
        if (e != FED_OK)
            drop(s, x, e);
        else if (x->q_head || fed__sess_wants_pump(x))
            mark(s, x);
    }
}

/* ------------------------------------------------------------------------------------ */
/* API                                                                                  */

fed_err fed_server_new(fed_server **out, void *zmq_ctx, const fed_server_config *cfg) {
    *out = NULL;
    if (!cfg || !cfg->endpoint) return fed_errorf(FED_EINVAL, "coordinator: no endpoint");
    if (cfg->max_peers < 1 || cfg->max_handshakes < 1)
        return fed_errorf(FED_EINVAL, "coordinator: max_peers and max_handshakes must be >= 1");
    if (fed_net_check_endpoint(cfg->endpoint, true) != FED_OK)
        return fed__name_error(FED_EINVAL, "endpoint");
    fed_server *s = fed_calloc(1, sizeof *s);
    if (!s) return FED_ENOMEM;
    fed_err e;
    s->net.server = true;
    s->net.owner = s;
    s->net.side = "coordinator";
    s->net.on_msg = srv_on_msg;
    s->net.on_handshake = srv_on_handshake;
    s->net.on_frame = srv_on_frame;
    s->net.pump = srv_pump;
    s->net.timers = srv_timers;
    s->net.on_conn = srv_on_conn;
    snprintf(s->software, sizeof s->software, "%s", cfg->software ? cfg->software : "");
    s->max_peers = cfg->max_peers;
    s->max_handshakes = cfg->max_handshakes;
    s->nbuckets = 64;
    s->buckets = fed_calloc(s->nbuckets, sizeof(fed__sess *));
    if (!s->buckets) {
        e = FED_ENOMEM;
        goto fail;
    }
    if ((e = fed__net_init(&s->net, &cfg->net)) != FED_OK) goto fail;
    if ((e = fed__net_security(&s->net, cfg->endpoint, NULL)) != FED_OK) goto fail;
    fed__sock_opts o = {cfg->net.zmq_heartbeat_ms, (int64_t)(2 * s->net.max_frame), 1000};
    s->net.zmq_limit = o.max_msgsize;
    if ((e = fed__sock_router(&s->net.sock, zmq_ctx, cfg->endpoint, &o)) != FED_OK) goto fail;
    *out = s;
    return FED_OK;
fail:
    fed_server_destroy(&s);
    return e;
}

void fed_server_destroy(fed_server **sp) {
    fed_server *s = *sp;
    if (!s) return;
    *sp = NULL;
    for (fed__sess *x = s->sessions, *nx; x; x = nx) {
        nx = x->next;
        if (s->net.sock) fed__send_close(&s->net, x->rid, x->rid_len, x->sid);
        fed__sess_free(&x);
    }
    for (size_t i = 0; i < s->npeers; i++) {
        fed__xfers_clear(&s->peers[i]->xfers);
        fed_free(s->peers[i]);
    }
    fed_free(s->peers);
    fed_free(s->pbuckets);
    fed_free(s->buckets);
    fed_free(s->fd_gen);
    fed__sock_destroy(&s->net.sock, 100); /* let the CLOSE frames out */
    fed__net_free(&s->net);
    fed_free(s);
}

const char *fed_server_endpoint(const fed_server *s) {
    return fed__sock_endpoint(s->net.sock);
}

fed_err fed_server_poll(fed_server *s, int timeout_ms, fed_net_event *ev) {
    fed_err e = fed__net_poll(&s->net, timeout_ms, ev);
    if (e == FED_OK && ev->type != FED_NET_NONE) ev->role = fed_server_peer_role(s, ev->peer);
    return srv_err(s, e);
}

/* The admitted session of peer, or an error. */
static fed_err ready_peer(fed_server *s, uint32_t id, peer **p) {
    *p = peer_get(s, id);
    if (!*p) return fed_errorf(FED_ENOTFOUND, "no peer %" PRIu32, id);
    if (!(*p)->sess) return fed_errorf(FED_ECLOSED, "peer %s is not connected", (*p)->cn);
    return FED_OK;
}

static bool app_type(fed_msg_type t) {
    return t == FED_MSG_ROUND_START || t == FED_MSG_UPDATE || t == FED_MSG_ERROR ||
           t == FED_MSG_HEARTBEAT || t == FED_MSG_BYE || t == FED_MSG_SECAGG ||
           t == FED_MSG_ADMIN_REPLY;
}

fed_err fed_server_send(fed_server *s, uint32_t id, const fed_msg *m) {
    if (!m || !app_type(m->type))
        return srv_err(s, fed_errorf(FED_EINVAL, "cannot send a %s message",
                                     fed_msg_type_name(m ? m->type : FED_MSG_NONE)));
    peer *p;
    fed_err e = ready_peer(s, id, &p);
    if (e != FED_OK) return srv_err(s, e);
    fed__sess *x = p->sess;
    e = fed__sess_send(x, m);
    if (e == FED_EINVAL) return srv_err(s, e); /* the message, not the session */
    if (e == FED_OK) e = fed__sess_flush(x);
    if (e != FED_OK) {
        srv_err(s, e);
        drop(s, x, e);
    } else {
        mark(s, x);
    }
    return e;
}

fed_err fed_server_send_transfer(fed_server *s, uint32_t id, uint64_t tid, const void *data,
                                 uint64_t len) {
    peer *p = peer_get(s, id);
    if (!p) return srv_err(s, fed_errorf(FED_ENOTFOUND, "no peer %" PRIu32, id));
    mark(s, p->sess);
    return srv_err(s, fed__xfer_send(&p->xfers, tid, data, len));
}

fed_err fed_server_recv_transfer(fed_server *s, uint32_t id, uint64_t tid, void *buf, uint64_t len,
                                 const uint8_t sha256[FED_SHA256_LEN]) {
    peer *p = peer_get(s, id);
    if (!p) return srv_err(s, fed_errorf(FED_ENOTFOUND, "no peer %" PRIu32, id));
    fed__xfer_in *t;
    fed_err e = fed__xfer_recv(&p->xfers, tid, buf, len, sha256, &t);
    if (e != FED_OK) return srv_err(s, e);
    if (p->sess && (e = fed__sess_grant(p->sess, t)) != FED_OK)
        drop(s, p->sess, e);
    else
        mark(s, p->sess);
    return FED_OK;
}

fed_err fed_server_cancel_transfer(fed_server *s, uint32_t id, uint64_t tid) {
    peer *p = peer_get(s, id);
    if (!p) return srv_err(s, fed_errorf(FED_ENOTFOUND, "no peer %" PRIu32, id));
    mark(s, p->sess);
    return srv_err(s, fed__xfer_cancel(&p->xfers, tid));
}

fed_err fed_server_drop(fed_server *s, uint32_t id, const char *reason) {
    peer *p = peer_get(s, id);
    if (!p) return srv_err(s, fed_errorf(FED_ENOTFOUND, "no peer %" PRIu32, id));
    fed__xfers_clear(&p->xfers);
    if (p->sess) {
        char why[256];
        snprintf(why, sizeof why, "dropped by the coordinator: %s", reason ? reason : "");
        end_session(s, p->sess, FED_ECANCELED, why, INFO, true);
    }
    return FED_OK;
}

const char *fed_server_peer_cn(const fed_server *s, uint32_t id) {
    peer *p = peer_get(s, id);
    return p ? p->cn : NULL;
}

fed_net_role fed_server_peer_role(const fed_server *s, uint32_t id) {
    peer *p = peer_get(s, id);
    return p ? p->role : FED_NET_ROLE_SITE;
}

fed_err fed_server_reload_crl(fed_server *s, size_t *closed) {
    if (closed) *closed = 0;
    if (s->net.cfg.plaintext)
        return srv_err(s, fed_errorf(FED_EINVAL, "reload CRL: plaintext mode has no CRL"));
    fed_err e = fed__tls_ctx_reload_crl(s->net.tls, &s->net.cfg.tls);
    if (e != FED_OK) return srv_err(s, fed_errprefix(e, "reload CRL"));
    size_t n = 0;
    for (fed__sess *x = s->sessions, *nx; x; x = nx) {
        nx = x->next;
        if (x->tls && x->state != FED__DEAD && fed__tls_revoked(x->tls)) {
            end_session(s, x, FED_EAUTH, "certificate revoked (CRL reloaded)", WARN, true);
            n++;
        }
    }
    if (closed) *closed = n;
    return FED_OK;
}

bool fed_server_peer_connected(const fed_server *s, uint32_t id) {
    peer *p = peer_get(s, id);
    return p && p->sess;
}

void fed_server_stats(const fed_server *s, fed_net_stats *st) {
    fed__net_stats((fed__net *)&s->net, st);
    st->sessions = s->admitted;
    st->handshakes = s->handshakes;
    st->queued_frames = 0; /* a session with queued frames is on the pending list */
    for (const fed__sess *x = s->pending; x; x = x->pnext) st->queued_frames += x->q_len;
}

const char *fed_server_errmsg(const fed_server *s) {
    return s->errmsg;
}

/* ------------------------------------------------------------------------------------ */
/* Testing hooks                                                                        */

void fed__server_vanish(fed_server **sp) {
    if (!*sp) return;
    fed__sock_destroy(&(*sp)->net.sock, 0); /* no socket: destroy sends no CLOSE */
    fed_server_destroy(sp);
}
