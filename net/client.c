/* A client's side of the channel (fed_client in channel.h): one DEALER with a routing id
 * drawn once per client, one TLS session at a time with a fresh session id, Hello on
 * handshake completion, admission on Welcome, and the transfers with the coordinator,
 * which outlive sessions so a reconnect resumes them.
 *
 * Frames for another session id than the current one are stale (sent to a session we
 * already left) and are ignored; a CLOSE for the current one ends it.
 *
 * On tcp:// the DEALER's monitor says when its connection goes away. libzmq would
 * reconnect underneath the session on its own, to a coordinator process that knows
 * nothing of it (a restart), or after frames were lost, and the client would learn only
 * at its next keepalive; so a lost connection ends the session at once, as soon as what
 * arrived before it has been read. A session that is never welcomed says whether a
 * connection was ever made, so "refused or unreachable" reads differently from a silent
 * coordinator. A session the coordinator refused with a fatal TLS alert, or whose
 * certificate this side refused, ends with a permanent LEFT (channel.h). */
#include "net/net_internal.h"
#include "net/session.h"

#include "core/alloc.h"
#include "core/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define CLIENT_RID_LEN 16

struct fed_client {
    fed__net net;                /* socket, TLS, pool, events */
    void *zctx;                  /* borrowed ZeroMQ context */
    char *endpoint;              /* the coordinator's address */
    char *server_name;           /* name its certificate must carry (plaintext: its name) */
    fed_msg hello;               /* the Hello to send: an owned copy (fed_msg_copy) */
    fed__sock_opts sopts;        /* socket options, for reconnects */
    uint8_t rid[CLIENT_RID_LEN]; /* our routing id, the same across reconnects */
    fed__sess *sess;             /* current session, or NULL */
    fed__xfers xfers;            /* transfers with the coordinator */
    bool ready;                  /* welcomed */
    bool linked;                 /* tcp://: its connection came up since the socket opened */
    bool lost;                   /* tcp://: it went away; the session ends once drained */
    size_t chunk_cfg;            /* configured chunk size */
    char errmsg[512];            /* last error of a call */
};

static fed_err cli_err(fed_client *c, fed_err e) {
    if (e != FED_OK) snprintf(c->errmsg, sizeof c->errmsg, "%s", fed_errdetail(e));
    return e;
}

/* Ends the current session: one log line (warn for failures), CLOSE to the coordinator
 * unless it closed, a LEFT event (permanent: see channel.h). */
static void end_session(fed_client *c, fed_err err, const char *reason, bool warn, bool tell_peer,
                        bool permanent) {
    fed__sess *x = c->sess;
    if (!x) return;
    const char *who = x->cn[0] ? x->cn : c->server_name;
    if (warn)
        FED_LOG(FED_LOG_WARN, "client: dropped coordinator %s: %s", who, reason);
    else
        FED_LOG(FED_LOG_INFO, "client: coordinator %s: %s", who, reason);
    if (tell_peer) fed__send_close(&c->net, NULL, 0, x->sid);
    fed_net_event *ev = fed__net_event(&c->net, FED_NET_LEFT, 0, x->cn, NULL, 0, err, reason);
    if (ev) ev->permanent = permanent;
    c->ready = false;
    x->state = FED__DEAD;
    c->sess = NULL;
    fed__sess_free(&x);
}

static void drop(fed_client *c, fed_err err) {
    char why[512];
    snprintf(why, sizeof why, "%s", fed_errdetail(err));
    if (err == FED_ECLOSED && strcmp(why, "host unreachable") == 0)
        snprintf(why, sizeof why, "unreachable");
    bool permanent = c->sess && fed__tls_refused(c->sess->tls);
    end_session(c, err, why, true, true, permanent);
}

/* ------------------------------------------------------------------------------------ */
/* Session callbacks                                                                    */

static fed_err cli_on_handshake(void *owner, fed__sess *x) {
    fed_client *c = owner;
    fed_msg m = {.type = FED_MSG_HELLO};
    m.u.hello = c->hello.u.hello;
    memcpy(m.u.hello.session_id, x->sid, FED_SESSION_ID_LEN);
    return fed__sess_send(x, &m);
}

static fed_err cli_on_msg(void *owner, fed__sess *x, fed_msg *m) {
    fed_client *c = owner;
    fed_msg_type t = m->type;
    if (x->state == FED__ADMIT) {
        if (t == FED_MSG_ERROR) {
            fed_err e = fed_errorf(FED_EAUTH, "the coordinator refused us: %s (code %" PRIu32 ")",
                                   m->u.error.text, m->u.error.code);
            fed_msg_free(m);
            return e;
        }
        if (t != FED_MSG_WELCOME) {
            fed_msg_free(m);
            return fed_errorf(FED_EPROTO, "expected Welcome, got %s", fed_msg_type_name(t));
        }
        if (memcmp(m->u.welcome.session_id, x->sid, FED_SESSION_ID_LEN) != 0) {
            fed_msg_free(m);
            return fed_errorf(FED_EPROTO, "Welcome for another session");
        }
        /* Send chunks the coordinator accepts. */
        size_t max = m->u.welcome.max_chunk;
        c->net.chunk_size = c->chunk_cfg;
        if (max >= FED_NET_CHUNK_MIN && max < c->net.chunk_size) c->net.chunk_size = max;
        x->xfers = &c->xfers;
        x->state = FED__READY;
        c->ready = true;
        FED_LOG(FED_LOG_INFO, "client: welcomed by coordinator %s as %s", x->cn,
                m->u.welcome.client_id);
        fed__net_event(&c->net, FED_NET_JOINED, 0, x->cn, m, 0, FED_OK, NULL);
        return fed__sess_resume(x);
    }
    if (t == FED_MSG_HELLO || t == FED_MSG_WELCOME) {
        fed_msg_free(m);
        return fed_errorf(FED_EPROTO, "unexpected %s", fed_msg_type_name(t));
    }
    fed__net_event(&c->net, FED_NET_MESSAGE, 0, x->cn, m, 0, FED_OK, NULL);
    return FED_OK;
}

static void cli_on_frame(void *owner, const fed__frame *f) {
    fed_client *c = owner;
    fed__sess *x = c->sess;
    if (!x) return; /* no session: nothing to hear */
    char why[128];
    int type = 0;
    uint8_t sid[FED_SESSION_ID_LEN];
    const char *bad = fed__frame_check(f, c->net.max_frame, &type, sid, why, sizeof why);
    if (bad) {
        fed_errorf(FED_EPROTO, "%s", bad);
        drop(c, FED_EPROTO);
        return;
    }
    if (memcmp(sid, x->sid, FED_SESSION_ID_LEN) != 0) return; /* stale */
    if (type == FED__FRAME_CLOSE) {
        end_session(c, FED_ECLOSED, "the coordinator closed the session", true, false, false);
        return;
    }
    if (type == FED__FRAME_OPEN) {
        fed_errorf(FED_EPROTO, "OPEN frame from the coordinator");
        drop(c, FED_EPROTO);
        return;
    }
    fed_err e = fed__sess_input(x, f->data + FED__HDR_LEN, f->len - FED__HDR_LEN);
    if (e != FED_OK) drop(c, e);
}

static void cli_pump(void *owner) {
    fed_client *c = owner;
    fed__sess *x = c->sess;
    if (!x) return;
    fed_err e = FED_OK;
    if (x->q_head) e = fed__sess_flush(x);
    for (size_t sent = 1; e == FED_OK && sent && fed__sess_wants_pump(x);)
        e = fed__sess_pump(x, &sent);
    if (e != FED_OK) drop(c, e);
}

static void cli_timers(void *owner, int64_t now) {
    fed_client *c = owner;
    fed__sess *x = c->sess;
    if (!x) return;
    const fed_net_config *cf = &c->net.cfg;
    fed_err e = FED_OK;
    if (c->lost) {
        if (!c->net.drained) return; /* read what came before the end first */
        c->lost = false;
        char why[256];
        snprintf(why, sizeof why,
                 "lost the connection: the coordinator went away, or ZeroMQ cut it for a frame "
                 "over %lld bytes",
                 (long long)c->net.zmq_limit);
        end_session(c, FED_ECLOSED, why, true, false, false);
        return;
    }
    if (x->state != FED__READY) {
        if (now - x->t_start > cf->handshake_timeout_ms && c->linked)
            e = fed_errorf(FED_ETIMEOUT, "not welcomed within %d ms", cf->handshake_timeout_ms);
        else if (now - x->t_start > cf->handshake_timeout_ms)
            e = fed_errorf(FED_ETIMEOUT,
                           "not welcomed within %d ms: no connection to %s (refused, "
                           "unreachable or not resolved; ZeroMQ kept trying)",
                           cf->handshake_timeout_ms, c->endpoint);
    } else if (cf->idle_timeout_ms && now - x->t_last_in > cf->idle_timeout_ms) {
        e = fed_errorf(FED_ETIMEOUT, "silent for %d ms", cf->idle_timeout_ms);
    } else if (cf->keepalive_ms && now - x->t_last_out >= cf->keepalive_ms) {
        fed_msg m = {.type = FED_MSG_HEARTBEAT};
        m.u.heartbeat_ms = (uint64_t)now;
        e = fed__sess_send(x, &m);
        if (e == FED_OK) e = fed__sess_flush(x);
    }
    if (e != FED_OK) drop(c, e);
}

/* The DEALER's monitor (tcp:// only). */
static void cli_on_conn(void *owner, fed__conn_event ev, int fd) {
    fed_client *c = owner;
    (void)fd;
    if (ev == FED__CONN_CONNECTED) {
        c->linked = true;
    } else if (ev == FED__CONN_DISCONNECTED) {
        if (c->sess) {
            c->lost = true;
            c->net.next_timer = 0; /* act in this poll, once the frames are read */
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* Connecting                                                                           */

static fed_err start_session(fed_client *c) {
    uint8_t sid[FED_SESSION_ID_LEN];
    fed_err e = fed__random(sid, sizeof sid);
    if (e != FED_OK) return e;
    fed__sess *x;
    if ((e = fed__sess_new(&x, &c->net, NULL, 0, sid, c->server_name)) != FED_OK) return e;
    snprintf(x->name, sizeof x->name, "%s", c->server_name);
    c->sess = x;
    if ((e = fed__sess_start(x)) != FED_OK) {
        c->sess = NULL;
        fed__sess_free(&x);
    }
    return e;
}

static fed_err connect_socket(fed_client *c) {
    c->linked = c->lost = false;
    return fed__sock_dealer(&c->net.sock, c->zctx, c->endpoint, c->rid, sizeof c->rid, &c->sopts);
}

fed_err fed_client_new(fed_client **out, void *zmq_ctx, const fed_client_config *cfg) {
    *out = NULL;
    /* A plaintext client names the coordinator "coordinator" unless told otherwise. */
    const char *server_name = !cfg                                      ? NULL
                              : cfg->server_name && cfg->server_name[0] ? cfg->server_name
                              : cfg->net.plaintext                      ? "coordinator"
                                                                        : NULL;
    if (!cfg || !cfg->endpoint || !server_name)
        return fed_errorf(FED_EINVAL, "client: endpoint and server name are required");
    if (fed_net_check_endpoint(cfg->endpoint, false) != FED_OK)
        return fed__name_error(FED_EINVAL, "endpoint");
    fed_client *c = fed_calloc(1, sizeof *c);
    if (!c) return FED_ENOMEM;
    fed_err e;
    c->net.owner = c;
    c->net.side = "client";
    c->net.on_msg = cli_on_msg;
    c->net.on_handshake = cli_on_handshake;
    c->net.on_frame = cli_on_frame;
    c->net.pump = cli_pump;
    c->net.timers = cli_timers;
    c->net.on_conn = cli_on_conn;
    c->zctx = zmq_ctx;
    c->endpoint = fed_strdup(cfg->endpoint);
    c->server_name = fed_strdup(server_name);
    if (!c->endpoint || !c->server_name) {
        e = FED_ENOMEM;
        goto fail;
    }
    fed_msg hello = {.type = FED_MSG_HELLO, .u.hello = cfg->hello};
    if ((e = fed_msg_copy(&c->hello, &hello)) != FED_OK) goto fail;
    if ((e = fed__net_init(&c->net, &cfg->net)) != FED_OK) goto fail;
    c->chunk_cfg = c->net.chunk_size;
    if ((e = fed__net_security(&c->net, cfg->endpoint, cfg->identity)) != FED_OK) goto fail;
    if ((e = fed__random(c->rid, sizeof c->rid)) != FED_OK) goto fail;
    c->rid[0] = 'c'; /* routing ids must not start with a zero byte */
    c->sopts = (fed__sock_opts){cfg->net.zmq_heartbeat_ms, (int64_t)(2 * c->net.max_frame), 1000};
    c->net.zmq_limit = c->sopts.max_msgsize;
    if ((e = connect_socket(c)) != FED_OK) goto fail;
    if ((e = start_session(c)) != FED_OK) goto fail;
    *out = c;
    return FED_OK;
fail:
    fed_client_destroy(&c);
    return e;
}

void fed_client_destroy(fed_client **cp) {
    fed_client *c = *cp;
    if (!c) return;
    *cp = NULL;
    if (c->sess) {
        if (c->net.sock) fed__send_close(&c->net, NULL, 0, c->sess->sid);
        fed__sess_free(&c->sess);
    }
    fed__xfers_clear(&c->xfers);
    fed__sock_destroy(&c->net.sock, 100); /* let the CLOSE frame out */
    fed__net_free(&c->net);
    fed_msg_free(&c->hello);
    fed_free(c->endpoint);
    fed_free(c->server_name);
    fed_free(c);
}

fed_err fed_client_reconnect(fed_client *c) {
    if (c->sess) {
        fed__send_close(&c->net, NULL, 0, c->sess->sid);
        fed__sess_free(&c->sess);
    }
    c->ready = false;
    fed__sock_destroy(&c->net.sock, 100);
    fed_err e = connect_socket(c);
    if (e == FED_OK) e = start_session(c);
    return cli_err(c, e);
}

/* ------------------------------------------------------------------------------------ */
/* API                                                                                  */

fed_err fed_client_poll(fed_client *c, int timeout_ms, fed_net_event *ev) {
    return cli_err(c, fed__net_poll(&c->net, timeout_ms, ev));
}

bool fed_client_ready(const fed_client *c) {
    return c->ready;
}

int fed_client_wake_fds(fed_client *c, int fds[2]) {
    return c->net.sock ? fed__sock_wake_fds(c->net.sock, fds) : 0;
}

bool fed_client_busy(fed_client *c) {
    const fed__net *n = &c->net;
    if (!n->sock || n->evq_head || n->blocked || c->lost) return true;
    const fed__sess *x = c->sess;
    if (x && (x->q_head || fed__sess_wants_pump(x))) return true;
    return fed__sock_readable(n->sock);
}

static fed_err ready_sess(fed_client *c) {
    if (!c->sess || !c->ready) return fed_errorf(FED_ECLOSED, "not connected to the coordinator");
    return FED_OK;
}

fed_err fed_client_send(fed_client *c, const fed_msg *m) {
    if (!m ||
        !(m->type == FED_MSG_ROUND_START || m->type == FED_MSG_UPDATE || m->type == FED_MSG_ERROR ||
          m->type == FED_MSG_HEARTBEAT || m->type == FED_MSG_BYE || m->type == FED_MSG_SECAGG ||
          m->type == FED_MSG_ADMIN_REQUEST))
        return cli_err(c, fed_errorf(FED_EINVAL, "cannot send a %s message",
                                     fed_msg_type_name(m ? m->type : FED_MSG_NONE)));
    fed_err e = ready_sess(c);
    if (e != FED_OK) return cli_err(c, e);
    e = fed__sess_send(c->sess, m);
    if (e == FED_EINVAL) return cli_err(c, e);
    if (e == FED_OK) e = fed__sess_flush(c->sess);
    if (e != FED_OK) {
        cli_err(c, e);
        drop(c, e);
    }
    return e;
}

fed_err fed_client_send_transfer(fed_client *c, uint64_t id, const void *data, uint64_t len) {
    return cli_err(c, fed__xfer_send(&c->xfers, id, data, len));
}

fed_err fed_client_recv_transfer(fed_client *c, uint64_t id, void *buf, uint64_t len,
                                 const uint8_t sha256[FED_SHA256_LEN]) {
    fed__xfer_in *t;
    fed_err e = fed__xfer_recv(&c->xfers, id, buf, len, sha256, &t);
    if (e != FED_OK) return cli_err(c, e);
    if (c->sess && c->ready && (e = fed__sess_grant(c->sess, t)) != FED_OK) drop(c, e);
    return FED_OK;
}

fed_err fed_client_cancel_transfer(fed_client *c, uint64_t id) {
    return cli_err(c, fed__xfer_cancel(&c->xfers, id));
}

void fed_client_stats(const fed_client *c, fed_net_stats *st) {
    fed__net_stats((fed__net *)&c->net, st);
    st->sessions = c->ready ? 1 : 0;
    st->handshakes = c->sess && !c->ready ? 1 : 0;
    st->queued_frames = c->sess ? c->sess->q_len : 0;
}

const char *fed_client_errmsg(const fed_client *c) {
    return c->errmsg;
}

/* ------------------------------------------------------------------------------------ */
/* Testing hooks                                                                        */

fed_err fed__client_send_plain(fed_client *c, const void *data, size_t len) {
    fed_err e = ready_sess(c);
    return e != FED_OK ? e : fed__sess_send_plain(c->sess, data, len);
}

fed_err fed__client_send_frame(fed_client *c, const void *data, size_t len) {
    if (!c->sess) return fed_errorf(FED_ECLOSED, "no session");
    size_t total = FED__HDR_LEN + len;
    fed__buf *b = fed__buf_new(total);
    if (!b) return FED_ENOMEM;
    fed_err e = fed__sess_flush(c->sess);
    if (e == FED_OK) {
        /* the clear header of the current session, then the raw bytes */
        fed__hdr_write(b->data, FED__FRAME_DATA, c->sess->sid);
        if (len) memcpy(b->data + FED__HDR_LEN, data, len);
        b->len = total;
        e = fed__sock_send(c->net.sock, NULL, 0, b, true);
    }
    fed__buf_release(b);
    return e;
}

void fed__client_vanish(fed_client *c) {
    fed__sess_free(&c->sess);
    c->ready = false;
    fed__sock_destroy(&c->net.sock, 0);
}

fed_err fed__client_send_chunk(fed_client *c, uint64_t id, uint64_t offset, const void *data,
                               uint32_t len, uint32_t declared) {
    fed_err e = ready_sess(c);
    return e != FED_OK ? e : fed__sess_send_chunk(c->sess, id, offset, data, len, declared);
}
