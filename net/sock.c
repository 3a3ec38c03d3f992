/* ZeroMQ sockets for the channel (see sock.h). The only file that includes zmq.h. */
#include "net/sock.h"

#include "core/alloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

struct fed__sock {
    void *z;                   /* the ZeroMQ socket */
    void *mon;                 /* PAIR reading z's monitor (tcp:// only), or NULL */
    bool router;               /* ROUTER (coordinator) or DEALER (client) */
    zmq_msg_t msg;             /* the last received frame, closed at the next recv */
    bool have_msg;             /* msg holds a frame */
    uint8_t rid[FED__RID_MAX]; /* the last received routing id */
    char endpoint[256];        /* as bound or connected */
};

static fed_err zerr(const char *what) {
    int e = zmq_errno();
    if (e == EAGAIN) return FED_EAGAIN;
    return fed_errorf(FED_EIO, "zmq %s: %s", what, zmq_strerror(e));
}

static int setopt_int(void *z, int opt, int v) {
    return zmq_setsockopt(z, opt, &v, sizeof v);
}

static fed_err apply_opts(fed__sock *s, const fed__sock_opts *o) {
    int64_t maxmsg = o->max_msgsize;
    if (setopt_int(s->z, ZMQ_LINGER, 0) != 0 || setopt_int(s->z, ZMQ_SNDHWM, o->hwm) != 0 ||
        setopt_int(s->z, ZMQ_RCVHWM, o->hwm) != 0 ||
        zmq_setsockopt(s->z, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0)
        return zerr("setsockopt");
    if (o->heartbeat_ms > 0) {
        int t = o->heartbeat_ms > 2000000 ? 6000000 : 3 * o->heartbeat_ms;
        if (setopt_int(s->z, ZMQ_HEARTBEAT_IVL, o->heartbeat_ms) != 0 ||
            setopt_int(s->z, ZMQ_HEARTBEAT_TIMEOUT, t) != 0 ||
            setopt_int(s->z, ZMQ_HEARTBEAT_TTL, t) != 0)
            return zerr("setsockopt heartbeat");
    }
    return FED_OK;
}

/* Watches z's connections (see sock.h): libzmq publishes the events on an inproc PAIR
 * it binds; ours connects to it before z binds or connects, so no event is emitted
 * before a reader exists (libzmq's I/O thread would block on it). */
static fed_err monitor_start(fed__sock *s, void *zctx, int events) {
    static atomic_ulong seq;
    char name[96];
    snprintf(name, sizeof name, "inproc://fednet-monitor-%lu-%p",
             (unsigned long)atomic_fetch_add(&seq, 1), s->z);
    if (zmq_socket_monitor(s->z, name, events) != 0) return zerr("socket_monitor");
    s->mon = zmq_socket(zctx, ZMQ_PAIR);
    /* No high-water mark: the monitor's sender is libzmq's I/O thread, which blocks
     * when the pipe is full; events are few and we drain them at every poll. */
    if (!s->mon || setopt_int(s->mon, ZMQ_RCVHWM, 0) != 0 ||
        setopt_int(s->mon, ZMQ_LINGER, 0) != 0 || zmq_connect(s->mon, name) != 0)
        return zerr("monitor");
    return FED_OK;
}

/* libzmq receives every frame larger than its 8 KiB batch into a buffer of its own from
 * malloc, in its I/O thread, and we free it after reading. With glibc's adaptive
 * defaults those chunk-sized buffers come from the I/O thread's arena, whose free top is
 * handed back to the kernel (MADV_DONTNEED) once it passes about twice the frame size, so
 * the next frames are received into never-touched pages: page faults cost a receiver
 * about 15% of its CPU per byte in bench_net. Fixed thresholds keep the memory: blocks
 * up to 8 MiB come from the heap (a chunk frame is at most 4 MiB and a bit), and up to
 * 32 MiB free at the top of a heap stays for the next frames (the credit window is 8 MiB
 * by default). Process-wide, once, when the first tcp:// socket is made (inproc://
 * frames are handed over, never received into new buffers), and not when the user tuned
 * malloc through GLIBC_TUNABLES. */
static pthread_once_t malloc_once = PTHREAD_ONCE_INIT;

static void tune_malloc(void) {
#ifdef __GLIBC__
    const char *t = getenv("GLIBC_TUNABLES");
    if (t && strstr(t, "glibc.malloc.")) return;
    mallopt(M_MMAP_THRESHOLD, 8 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif
}

static fed_err sock_new(fed__sock **out, void *zctx, int type, const fed__sock_opts *o) {
    *out = NULL;
    if (!zctx) return fed_errorf(FED_EINVAL, "no ZeroMQ context");
    fed__sock *s = fed_calloc(1, sizeof *s);
    if (!s) return FED_ENOMEM;
    s->router = type == ZMQ_ROUTER;
    s->z = zmq_socket(zctx, type);
    if (!s->z) {
        fed_err e = zerr("socket");
        fed_free(s);
        return e;
    }
    fed_err e = apply_opts(s, o);
    if (e != FED_OK) {
        zmq_close(s->z);
        fed_free(s);
        return e;
    }
    *out = s;
    return FED_OK;
}

fed_err fed__sock_router(fed__sock **out, void *zctx, const char *endpoint,
                         const fed__sock_opts *o) {
    fed__sock *s = NULL;
    fed_err e = sock_new(&s, zctx, ZMQ_ROUTER, o);
    if (e != FED_OK || !s) return e != FED_OK ? e : FED_EINTERNAL;
    if (setopt_int(s->z, ZMQ_ROUTER_MANDATORY, 1) != 0 ||
        setopt_int(s->z, ZMQ_ROUTER_HANDOVER, 1) != 0) {
        e = zerr("setsockopt router");
        goto fail;
    }
    if (strncmp(endpoint, "tcp://", 6) == 0) pthread_once(&malloc_once, tune_malloc);
    if (strncmp(endpoint, "tcp://", 6) == 0 &&
        (e = monitor_start(s, zctx, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED)) != FED_OK)
        goto fail;
    if (zmq_bind(s->z, endpoint) != 0) {
        e = fed_errorf(FED_EIO, "cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    size_t n = sizeof s->endpoint;
    if (zmq_getsockopt(s->z, ZMQ_LAST_ENDPOINT, s->endpoint, &n) != 0)
        snprintf(s->endpoint, sizeof s->endpoint, "%s", endpoint);
    *out = s;
    return FED_OK;
fail:
    fed__sock_destroy(&s, 0);
    return e;
}

fed_err fed__sock_dealer(fed__sock **out, void *zctx, const char *endpoint, const uint8_t *rid,
                         size_t rid_len, const fed__sock_opts *o) {
    fed__sock *s = NULL;
    fed_err e = sock_new(&s, zctx, ZMQ_DEALER, o);
    if (e != FED_OK || !s) return e != FED_OK ? e : FED_EINTERNAL;
    if (rid && zmq_setsockopt(s->z, ZMQ_ROUTING_ID, rid, rid_len) != 0) {
        e = zerr("setsockopt routing id");
        goto fail;
    }
    if (strncmp(endpoint, "tcp://", 6) == 0) pthread_once(&malloc_once, tune_malloc);
    if (strncmp(endpoint, "tcp://", 6) == 0 &&
        (e = monitor_start(
             s, zctx, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_DISCONNECTED)) !=
            FED_OK)
        goto fail;
    if (zmq_connect(s->z, endpoint) != 0) {
        e = fed_errorf(FED_EIO, "cannot connect to %s: %s", endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    snprintf(s->endpoint, sizeof s->endpoint, "%s", endpoint);
    *out = s;
    return FED_OK;
fail:
    fed__sock_destroy(&s, 0);
    return e;
}

void fed__sock_destroy(fed__sock **sp, int linger_ms) {
    fed__sock *s = *sp;
    if (!s) return;
    *sp = NULL;
    if (s->have_msg) zmq_msg_close(&s->msg);
    if (s->mon) {
        /* Stop the events before the socket closes, then close our end. */
        zmq_socket_monitor(s->z, NULL, 0);
        zmq_close(s->mon);
    }
    if (s->z) {
        setopt_int(s->z, ZMQ_LINGER, linger_ms);
        zmq_close(s->z);
    }
    fed_free(s);
}

const char *fed__sock_endpoint(const fed__sock *s) {
    return s->endpoint;
}

/* libzmq calls this once it is done with a zero-copy frame. */
static void zfree(void *data, void *hint) {
    (void)data;
    fed__buf_release(hint);
}

static fed_err send_rid(fed__sock *s, const uint8_t *rid, size_t rid_len) {
    if (!s->router) return FED_OK;
    if (zmq_send(s->z, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) return FED_OK;
    if (zmq_errno() == EHOSTUNREACH) return fed_errorf(FED_ECLOSED, "host unreachable");
    return zerr("send");
}

fed_err fed__sock_send(fed__sock *s, const uint8_t *rid, size_t rid_len, fed__buf *b, bool copy) {
    if (copy) return fed__sock_send_bytes(s, rid, rid_len, b->data, b->len);
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, b->data, b->len, zfree, b) != 0) return zerr("msg_init_data");
    fed_err e = send_rid(s, rid, rid_len);
    if (e == FED_OK && zmq_msg_send(&m, s->z, ZMQ_DONTWAIT) >= 0) return FED_OK;
    if (e == FED_OK) e = zerr("send");
    /* Not sent: closing the message must not give b back, the caller keeps it. */
    b->keep = 1;
    zmq_msg_close(&m);
    b->keep = 0;
    return e;
}

fed_err fed__sock_send_bytes(fed__sock *s, const uint8_t *rid, size_t rid_len, const void *data,
                             size_t len) {
    fed_err e = send_rid(s, rid, rid_len);
    if (e != FED_OK) return e;
    if (zmq_send(s->z, data, len, ZMQ_DONTWAIT) >= 0) return FED_OK;
    return zerr("send");
}

/* Receives and throws away the remaining frames of a multipart message. */
static void drain_more(fed__sock *s, zmq_msg_t *m) {
    while (zmq_msg_more(m)) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        if (zmq_msg_recv(&extra, s->z, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&extra);
            return;
        }
        int more = zmq_msg_more(&extra);
        zmq_msg_close(&extra);
        if (!more) return;
    }
}

fed_err fed__sock_recv(fed__sock *s, fed__frame *f) {
    memset(f, 0, sizeof *f);
    if (s->have_msg) {
        zmq_msg_close(&s->msg);
        s->have_msg = false;
    }
    if (s->router) {
        zmq_msg_t r;
        zmq_msg_init(&r);
        if (zmq_msg_recv(&r, s->z, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&r);
            return zerr("recv");
        }
        size_t n = zmq_msg_size(&r);
        if (n > FED__RID_MAX) n = FED__RID_MAX;
        memcpy(s->rid, zmq_msg_data(&r), n);
        int more = zmq_msg_more(&r);
        zmq_msg_close(&r);
        f->rid = s->rid;
        f->rid_len = n;
        if (!more) return FED_OK; /* ROUTER always adds the id: cannot happen */
    }
    zmq_msg_init(&s->msg);
    if (zmq_msg_recv(&s->msg, s->z, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&s->msg);
        return zerr("recv");
    }
    s->have_msg = true;
    f->data = zmq_msg_data(&s->msg);
    f->len = zmq_msg_size(&s->msg);
    /* ZMQ_SRCFD is deprecated but the only way to tie a frame to a connection. */
    f->fd = s->mon ? zmq_msg_get(&s->msg, ZMQ_SRCFD) : -1;
    if (zmq_msg_more(&s->msg)) {
        f->multipart = true;
        drain_more(s, &s->msg);
    }
    return FED_OK;
}

fed_err fed__sock_event(fed__sock *s, fed__conn_event *ev, int *fd) {
    *ev = FED__CONN_NONE;
    *fd = -1;
    for (;;) {
        if (!s->mon) return FED_EAGAIN;
        /* Two frames: event (u16) and value (u32), then the endpoint, which we skip. */
        uint8_t head[6];
        int n = zmq_recv(s->mon, head, sizeof head, ZMQ_DONTWAIT);
        if (n < 0) return zerr("monitor recv");
        int more = 0;
        size_t ml = sizeof more;
        while (zmq_getsockopt(s->mon, ZMQ_RCVMORE, &more, &ml) == 0 && more) {
            char skip[8];
            if (zmq_recv(s->mon, skip, sizeof skip, ZMQ_DONTWAIT) < 0) break;
        }
        if (n != (int)sizeof head) continue;
        uint16_t type;
        uint32_t value;
        memcpy(&type, head, sizeof type);
        memcpy(&value, head + sizeof type, sizeof value);
        switch (type) {
        case ZMQ_EVENT_CONNECTED:
            *ev = FED__CONN_CONNECTED;
            break;
        case ZMQ_EVENT_CONNECT_RETRIED:
            *ev = FED__CONN_RETRIED;
            return FED_OK; /* the value is an interval, not a descriptor */
        case ZMQ_EVENT_ACCEPTED:
            *ev = FED__CONN_ACCEPTED;
            break;
        case ZMQ_EVENT_DISCONNECTED:
            *ev = FED__CONN_DISCONNECTED;
            break;
        default:
            continue; /* MONITOR_STOPPED and the like */
        }
        *fd = (int)value;
        return FED_OK;
    }
}

fed_err fed__sock_wait(fed__sock *s, int fd, int timeout_ms, bool *in, bool *fd_ready) {
    zmq_pollitem_t items[3] = {{s->z, 0, ZMQ_POLLIN, 0}, {s->mon, 0, ZMQ_POLLIN, 0}, {0}};
    int n = s->mon ? 2 : 1;
    int fdi = n;
    if (fd >= 0) items[n++] = (zmq_pollitem_t){NULL, fd, ZMQ_POLLIN, 0};
    *in = *fd_ready = false;
    int rc = zmq_poll(items, n, timeout_ms);
    if (rc < 0) {
        if (zmq_errno() == EINTR) return FED_OK;
        return zerr("poll");
    }
    *in = (items[0].revents & ZMQ_POLLIN) != 0 || (s->mon && (items[1].revents & ZMQ_POLLIN));
    *fd_ready = fd >= 0 && (items[fdi].revents & ZMQ_POLLIN) != 0;
    return FED_OK;
}

int fed__sock_wake_fds(fed__sock *s, int fds[2]) {
    int n = 0;
    void *socks[2] = {s->z, s->mon};
    for (int i = 0; i < 2; i++) {
        if (!socks[i]) continue;
        int fd = -1;
        size_t len = sizeof fd;
        if (zmq_getsockopt(socks[i], ZMQ_FD, &fd, &len) == 0 && fd >= 0) fds[n++] = fd;
    }
    return n;
}

bool fed__sock_readable(fed__sock *s) {
    void *socks[2] = {s->z, s->mon};
    for (int i = 0; i < 2; i++) {
        if (!socks[i]) continue;
        int ev = 0;
        size_t len = sizeof ev;
        if (zmq_getsockopt(socks[i], ZMQ_EVENTS, &ev, &len) != 0 || (ev & ZMQ_POLLIN)) return true;
    }
    return false;
}

void *fed__zmq_ctx_new(void) {
    return zmq_ctx_new();
}

int fed__zmq_ctx_max_sockets(void *ctx, int n) {
    return zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, n);
}

void fed__zmq_ctx_term(void *ctx) {
    if (ctx) zmq_ctx_term(ctx);
}
