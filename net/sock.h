/* The channel's ZeroMQ sockets, the only place libzmq is used: a ROUTER bound by the
 * coordinator, a DEALER per client, sending and receiving single-frame messages (a
 * ROUTER frame is addressed by the peer's routing id), zero-copy sends of pool buffers,
 * and waiting for input together with one extra file descriptor. Options set here:
 * ZMQ_ROUTER_MANDATORY (a send to a vanished peer fails with FED_ECLOSED instead of
 * disappearing), ZMQ_ROUTER_HANDOVER (a reconnect with the same routing id takes over),
 * heartbeats, ZMQ_MAXMSGSIZE, high-water marks and linger.
 *
 * On tcp:// a socket also watches its own connections through a ZeroMQ socket monitor
 * (an inproc PAIR it reads itself), because libzmq connects, reconnects and drops
 * connections underneath its sockets without a word: a DEALER reports its connection
 * coming up (CONNECTED) or going away (DISCONNECTED: the peer closed it or vanished, or
 * libzmq cut it, e.g. for a frame over ZMQ_MAXMSGSIZE); a ROUTER reports each accepted
 * connection and its end by file descriptor, and every received frame says which
 * descriptor it came from (fed__frame.fd). The monitor's pipe has no high-water mark, so
 * libzmq's I/O thread never blocks on a slow reader; inproc:// sockets have no monitor
 * (nothing to watch). No TLS and no framing here: see session.h. Internal to net/. */
#ifndef FED_NET_SOCK_H
#define FED_NET_SOCK_H

#include "core/err.h"
#include "net/pool.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest ZeroMQ routing id. */
#define FED__RID_MAX 255

typedef struct fed__sock fed__sock;

typedef struct fed__sock_opts {
    int heartbeat_ms;    /* ZMQ_HEARTBEAT_IVL (TIMEOUT and TTL are 3x); 0: off */
    int64_t max_msgsize; /* ZMQ_MAXMSGSIZE: libzmq disconnects a peer sending more; -1 off */
    int hwm;             /* ZMQ_SNDHWM and ZMQ_RCVHWM, in messages */
} fed__sock_opts;

/* One received message. Pointers are valid until the next recv or destroy. */
typedef struct fed__frame {
    const uint8_t *rid; /* ROUTER: the sender's routing id; DEALER: NULL */
    size_t rid_len;
    const uint8_t *data; /* the frame */
    size_t len;
    bool multipart; /* the message had more frames than one (the extra were discarded) */
    int fd;         /* tcp://: descriptor of the connection it came on; -1 otherwise */
} fed__frame;

/* What the monitor of a tcp:// socket reports (fed__sock_event). */
typedef enum fed__conn_event {
    FED__CONN_NONE = 0,     /* nothing (more) to report */
    FED__CONN_CONNECTED,    /* DEALER: the connection to the peer is up (again) */
    FED__CONN_RETRIED,      /* DEALER: a connection attempt failed; libzmq retries */
    FED__CONN_ACCEPTED,     /* ROUTER: a connection came in on descriptor fd */
    FED__CONN_DISCONNECTED, /* the connection on descriptor fd ended */
} fed__conn_event;

fed_err fed__sock_router(fed__sock **out, void *zctx, const char *endpoint,
                         const fed__sock_opts *o) FED_MUST_USE;
/* rid: the routing id to present (1..255 bytes, not starting with 0), or NULL. */
fed_err fed__sock_dealer(fed__sock **out, void *zctx, const char *endpoint, const uint8_t *rid,
                         size_t rid_len, const fed__sock_opts *o) FED_MUST_USE;
/* Closes with the given linger (ms; 0 drops what is unsent). NULL-safe; sets *s NULL. */
void fed__sock_destroy(fed__sock **s, int linger_ms);
/* The endpoint as bound or connected (the real port for tcp://...:0). */
const char *fed__sock_endpoint(const fed__sock *s);

/* Sends b->data[0..b->len) as one frame, to rid on a ROUTER (ignored on a DEALER), never
 * waiting. copy: the bytes are copied and b stays the caller's; otherwise ZeroMQ takes b
 * on success and releases it (fed__buf_release) once sent. FED_EAGAIN: no room now;
 * FED_ECLOSED: no peer with that routing id. On any error b stays the caller's. */
fed_err fed__sock_send(fed__sock *s, const uint8_t *rid, size_t rid_len, fed__buf *b,
                       bool copy) FED_MUST_USE;
/* Sends len bytes (copied) as one frame. Errors as fed__sock_send. */
fed_err fed__sock_send_bytes(fed__sock *s, const uint8_t *rid, size_t rid_len, const void *data,
                             size_t len) FED_MUST_USE;
/* Receives one message without waiting: FED_OK, FED_EAGAIN when there is none. */
fed_err fed__sock_recv(fed__sock *s, fed__frame *f) FED_MUST_USE;
/* The next event of the socket's monitor without waiting: FED_OK with *ev (and *fd, the
 * connection's descriptor, or -1), or FED_EAGAIN when there is none (always on inproc://). */
fed_err fed__sock_event(fed__sock *s, fed__conn_event *ev, int *fd) FED_MUST_USE;
/* Waits up to timeout_ms (-1 forever) until a message can be received, the monitor has
 * an event, or fd (if >= 0) is readable; *in (message or event) / *fd_ready say which. */
fed_err fed__sock_wait(fed__sock *s, int fd, int timeout_ms, bool *in, bool *fd_ready) FED_MUST_USE;

/* The descriptor that becomes readable when something may have happened on the socket
 * or its monitor (ZMQ_FD), into fds[0..1]; returns how many (0 on failure). Edge
 * triggered: after a receive, ask fed__sock_readable before waiting on them again. */
int fed__sock_wake_fds(fed__sock *s, int fds[2]);
/* True when a message or a monitor event can be received now (ZMQ_EVENTS). */
bool fed__sock_readable(fed__sock *s);

void *fed__zmq_ctx_new(void);
/* ZMQ_MAX_SOCKETS of ctx (before its first socket); 0 or -1 as zmq_ctx_set. */
int fed__zmq_ctx_max_sockets(void *ctx, int n);
void fed__zmq_ctx_term(void *ctx);

#endif
