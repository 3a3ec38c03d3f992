/* One secure session and what server.c and client.c share: the 24-byte clear frame
 * header, frames built in place (clear header, then TLS records straight from OpenSSL's
 * sink; in plaintext mode the same sink gets the stream as it is), the plaintext message
 * stream ([u32 length][envelope][chunk bytes]), transfers with credit-based flow control
 * and SHA-256 checks, the queue of frames waiting for room in ZeroMQ, and the event queue
 * poll() returns from. Admission (Hello/Welcome), routing ids, identities and timers
 * belong to server.c and client.c. Internal to net/. */
#ifndef FED_NET_SESSION_H
#define FED_NET_SESSION_H

#include "net/channel.h"
#include "net/hasher.h"
#include "net/pool.h"
#include "net/sock.h"
#include "net/tls.h"

#include <stdbool.h>
#include <stdint.h>

/* The clear header: magic, version, type, two zero bytes, session id. */
#define FED__HDR_LEN     24
#define FED__HDR_VERSION 1
#define FED__FRAME_OPEN  1 /* client -> coordinator: first frame of a new TLS session */
#define FED__FRAME_DATA  2 /* TLS records of the session */
#define FED__FRAME_CLOSE 3 /* the sender ends (or does not know) this session */

/* Frames up to this size are built in a shared buffer and copied into ZeroMQ; larger
 * ones (chunks) are built in pool buffers handed over without copying. */
#define FED__SMALL_FRAME (64u * 1024u)
/* Frames a session may have waiting for room before it is dropped. */
#define FED__QUEUE_MAX 4096
/* Largest message accepted before admission (Hello, Welcome, Error). */
#define FED__ADMIT_MSG_MAX (64u * 1024u)
/* Recent transfer ids remembered: cancelled incoming ones (their stray chunks are
 * discarded quietly) and completed incoming ones (acknowledged again on resume). */
#define FED__RECENT 16
/* Incoming transfers of at least this many bytes over tcp:// are hashed by the digest
 * worker (hasher.h) when more than one CPU is online; smaller ones, and everything over
 * inproc:// (the simulator, whose thousands of sites in one process already fill the
 * cores and must not get a thread each), inline as they are decrypted. */
#define FED__HASH_ASYNC_MIN (4u * 1024u * 1024u)

typedef struct fed__sess fed__sess;
typedef struct fed__net fed__net;

/* A transfer this side sends. */
typedef struct fed__xfer_out {
    uint64_t id;               /* transfer id */
    const uint8_t *data;       /* the caller's bytes */
    uint64_t len;              /* their number */
    uint64_t next;             /* next offset to send */
    uint64_t allowed_end;      /* credit: bytes before this offset may be sent */
    uint64_t credit_base;      /* offset of the last Credit (never goes back in a session) */
    bool resume;               /* waiting for the first Credit of a session */
    struct fed__xfer_out *nxt; /* list */
} fed__xfer_out;

/* A transfer this side receives. */
typedef struct fed__xfer_in {
    uint64_t id;              /* transfer id */
    uint8_t *buf;             /* the caller's buffer */
    uint64_t len;             /* its size, the announced transfer size */
    uint64_t received;        /* bytes [0, received) are in place, hashed or queued */
    uint32_t since_grant;     /* chunks received since the last Credit */
    uint8_t want[32];         /* announced SHA-256 */
    fed__sha256 *sha;         /* running digest of [0, received) (queued updates aside) */
    bool decided;             /* hashing mode chosen (at the first chunk received) */
    fed__hasher *hasher;      /* the digest worker hashing it, or NULL: inline */
    atomic_uint pending;      /* its updates queued there and not done yet */
    struct fed__xfer_in *nxt; /* list */
} fed__xfer_in;

/* The transfers with one peer; they outlive its sessions. */
typedef struct fed__xfers {
    fed__xfer_out *out;              /* sending */
    fed__xfer_in *in;                /* receiving */
    uint64_t cancelled[FED__RECENT]; /* ring of cancelled incoming ids */
    unsigned ncancelled;             /* entries written to the ring so far */
    uint64_t done_id[FED__RECENT];   /* ring of transfers received whole, acknowledged */
    uint64_t done_len[FED__RECENT];  /* again after a reconnect (the ack may be lost) */
    unsigned ndone;                  /* entries written to the ring so far */
} fed__xfers;

/* One queued event with the storage its pointers refer to. */
typedef struct fed__ev {
    fed_net_event pub; /* what poll returns */
    fed_msg msg;       /* decoded message pub.msg points to */
    bool has_msg;      /* msg must be freed */
    char cn[FED_NET_CN_MAX + 1];
    char reason[256];
    struct fed__ev *next;
} fed__ev;

typedef enum fed__state {
    FED__HANDSHAKE = 0, /* TLS handshake running */
    FED__ADMIT,         /* server: waiting for Hello; client: waiting for Welcome */
    FED__READY,         /* admitted: messages and transfers */
    FED__DEAD,          /* ended; waiting to be freed */
} fed__state;

/* What the server or client does with a message the session does not handle itself
 * (everything but Chunk, Credit and Heartbeat). Takes ownership of m. A non-OK return
 * ends the session with fed_errmsg() as the reason. */
typedef fed_err (*fed__on_msg)(void *owner, fed__sess *s, fed_msg *m);
/* Called once the TLS handshake of s is complete (s->cn is set); the client sends Hello
 * here. A non-OK return ends the session. */
typedef fed_err (*fed__on_handshake)(void *owner, fed__sess *s);

/* What one fed_server or fed_client holds for all its sessions. */
struct fed__net {
    bool server;                                              /* coordinator side */
    void *owner;                                              /* the fed_server or fed_client */
    fed__on_msg on_msg;                                       /* owner's message handler */
    fed__on_handshake on_handshake;                           /* owner's end-of-handshake handler */
    void (*on_frame)(void *owner, const fed__frame *f);       /* owner's frame dispatcher */
    void (*pump)(void *owner);                                /* owner: send what credit allows */
    void (*timers)(void *owner, int64_t now);                 /* owner: timeouts, keepalives */
    void (*on_conn)(void *owner, fed__conn_event ev, int fd); /* owner: a connection event */
    int64_t next_timer;                                       /* when timers run next */
    fed__sock *sock;                                          /* ROUTER or DEALER */
    fed__tls_ctx *tls;            /* certificates and policy, or plain */
    fed__pool *pool;              /* chunk frame buffers */
    fed__hasher *hasher;          /* digest worker, started by the first large transfer */
    bool hasher_failed;           /* it could not be started: hash inline */
    bool inproc;                  /* the endpoint is inproc:// (set by fed__net_security) */
    fed_net_config cfg;           /* copy of the configuration (strings borrowed) */
    size_t chunk_size;            /* bytes per chunk this side sends */
    size_t max_frame;             /* largest frame accepted from a peer */
    fed__buf *small;              /* shared buffer for small frames */
    fed__sess *small_owner;       /* session building a frame in small, or NULL */
    uint8_t *envbuf;              /* scratch to pack envelopes into */
    size_t envcap;                /* its size */
    uint8_t *discard;             /* sink for the bytes of stray chunks */
    fed__ev *evq_head, *evq_tail; /* events not yet returned */
    fed__ev *current;             /* event returned by the last poll */
    fed_net_stats stats;          /* counters */
    const char *side;             /* "coordinator" or "client" for log lines */
    bool blocked;                 /* a frame waits for room: retry soon */
    bool drained;                 /* the last receive loop emptied the socket: whatever a lost
                                     connection delivered before its end has been handled */
    int64_t zmq_limit;            /* ZMQ_MAXMSGSIZE: libzmq cuts a connection sending more */
};

/* One TLS session with one peer. */
struct fed__sess {
    fed__net *net;                   /* shared state */
    fed__state state;                /* see fed__state */
    uint8_t rid[FED__RID_MAX];       /* server: the peer's routing id */
    size_t rid_len;                  /* its length (0 on a client) */
    uint8_t sid[FED_SESSION_ID_LEN]; /* session id from the clear headers */
    fed__tls *tls;                   /* the TLS session */
    char name[96];                   /* the peer in log lines: CN or routing id in hex */
    char cn[FED_NET_CN_MAX + 1];     /* verified CN, once the handshake is done */
    fed__xfers *xfers;               /* transfers with this peer (NULL until admitted) */
    uint32_t peer;                   /* server: the identity's handle */
    bool opened;                     /* client: the OPEN frame went out */
    int fd;                          /* server, tcp://: descriptor of the connection that
                                        opened the session (-1: unknown, inproc://) */
    uint32_t fd_gen;                 /* which connection on fd it was (server.c) */
    int64_t gone_at;                 /* server: when that connection ended (0: it did not) */
    /* output */
    fed__buf *cur;             /* frame being built, or NULL */
    fed__buf *q_head, *q_tail; /* frames waiting for room in ZeroMQ */
    size_t q_len;              /* their number */
    /* input: the plaintext stream parser */
    int pstate;               /* 0 length, 1 envelope, 2 chunk payload */
    uint8_t lenbuf[4];        /* length prefix being read */
    size_t lenhave;           /* bytes of it read */
    uint32_t msglen;          /* envelope length */
    uint8_t *env;             /* envelope bytes */
    size_t envcap, envhave;   /* capacity and bytes read */
    fed__xfer_in *pin;        /* transfer the payload goes to (NULL: discard) */
    uint64_t poff;            /* payload offset within the transfer */
    uint32_t plen, pleft;     /* payload length and bytes still to read */
    uint64_t seq_out, seq_in; /* message counters */
    /* time, in ms of fed_now_ms() */
    int64_t t_start, t_last_in, t_last_out;
    fed__sess *next, *prev;   /* owner's list of sessions */
    fed__sess *hnext;         /* server: routing-id hash chain */
    fed__sess *pnext, *pprev; /* server: the list of sessions with output to move */
    bool pending;             /* server: on that list */
};

/* Sets up what net holds from cfg (pool, buffers, chunk size, frame limit); the owner
 * sets sock and tls. */
fed_err fed__net_init(fed__net *n, const fed_net_config *cfg) FED_MUST_USE;
/* Makes n->tls for n->server from n->cfg: TLS with its files, or with cfg.plaintext
 * plaintext sessions, which only an "inproc://" endpoint may use (FED_EINVAL otherwise).
 * identity: the name a plaintext client claims (ignored otherwise). */
fed_err fed__net_security(fed__net *n, const char *endpoint, const char *identity) FED_MUST_USE;
/* Frees what fed__net_init and the owner set up, and pending events. */
void fed__net_free(fed__net *n);
fed_err fed__config_check(const fed_net_config *cfg) FED_MUST_USE;

/* Appends an event; strings are copied, msg (may be NULL) is moved into the event.
 * Returns the queued event for fields not given here (permanent), NULL if memory ran out. */
fed_net_event *fed__net_event(fed__net *n, fed_net_event_type type, uint32_t peer, const char *cn,
                              fed_msg *msg, uint64_t transfer_id, fed_err err, const char *reason);
/* Reads the socket monitor's pending connection events and hands them to n->on_conn. */
fed_err fed__net_conn_events(fed__net *n) FED_MUST_USE;
/* Frees the event returned last and pops the next one into *ev; false when none. */
bool fed__net_pop(fed__net *n, fed_net_event *ev);
void fed__net_stats(fed__net *n, fed_net_stats *st);
/* The poll loop of both sides: pops an event, receives and dispatches frames, pumps,
 * runs timers, waits; see fed_server_poll. */
fed_err fed__net_poll(fed__net *n, int timeout_ms, fed_net_event *ev) FED_MUST_USE;

/* A session with a fresh TLS object (server_name: clients only). */
fed_err fed__sess_new(fed__sess **out, fed__net *n, const uint8_t *rid, size_t rid_len,
                      const uint8_t sid[FED_SESSION_ID_LEN], const char *server_name) FED_MUST_USE;
void fed__sess_free(fed__sess **s);

/* Processes one received frame body (after the clear header). On error the session is
 * unusable; the caller ends it with fed_errmsg() as reason. */
fed_err fed__sess_input(fed__sess *s, const uint8_t *data, size_t len) FED_MUST_USE;
/* Starts the handshake (client: writes ClientHello). */
fed_err fed__sess_start(fed__sess *s) FED_MUST_USE;
/* Writes m (version and seq set here) into the current frame. */
fed_err fed__sess_send(fed__sess *s, const fed_msg *m) FED_MUST_USE;
/* Hands the current frame and any queued ones to ZeroMQ. FED_ECLOSED: peer vanished. */
fed_err fed__sess_flush(fed__sess *s) FED_MUST_USE;
/* Sends chunks while credit and pool buffers last; *sent counts them. */
fed_err fed__sess_pump(fed__sess *s, size_t *sent) FED_MUST_USE;
/* Sends a clear CLOSE frame for sid to rid (best effort). */
void fed__send_close(fed__net *n, const uint8_t *rid, size_t rid_len,
                     const uint8_t sid[FED_SESSION_ID_LEN]);
/* Called once a session is READY with its xfers: grants credit for every incoming
 * transfer at its offset and marks every outgoing one as waiting for its resume offset. */
fed_err fed__sess_resume(fed__sess *s) FED_MUST_USE;
/* True when the session has an outgoing transfer it could send a chunk of now. */
bool fed__sess_wants_pump(const fed__sess *s);

/* Transfers: registering one (the owner then grants credit if the peer is connected). */
fed_err fed__xfer_send(fed__xfers *x, uint64_t id, const void *data, uint64_t len) FED_MUST_USE;
fed_err fed__xfer_recv(fed__xfers *x, uint64_t id, void *buf, uint64_t len,
                       const uint8_t sha256[FED_SHA256_LEN], fed__xfer_in **out) FED_MUST_USE;
/* Grants credit for a new incoming transfer on a READY session and flushes (an empty
 * transfer finishes at once: t is freed). */
fed_err fed__sess_grant(fed__sess *s, fed__xfer_in *t) FED_MUST_USE;
fed_err fed__xfer_cancel(fed__xfers *x, uint64_t id) FED_MUST_USE;
/* Frees every transfer. */
void fed__xfers_clear(fed__xfers *x);

/* Testing hooks: len plaintext bytes into TLS as one frame; a Chunk message declaring
 * `declared` payload bytes but carrying len. */
fed_err fed__sess_send_plain(fed__sess *s, const void *data, size_t len) FED_MUST_USE;
fed_err fed__sess_send_chunk(fed__sess *s, uint64_t id, uint64_t offset, const void *data,
                             uint32_t len, uint32_t declared) FED_MUST_USE;

/* Parses a clear header: type and session id; false when it is not one of ours. */
bool fed__hdr_parse(const uint8_t *data, size_t len, int *type, uint8_t sid[FED_SESSION_ID_LEN],
                    const char **why);
/* Checks one received ZeroMQ frame (single part, at most max_frame bytes, a clear
 * header of ours) and parses its header. Returns NULL, or why the frame is bad (a
 * static text or one written into why[why_len]). */
const char *fed__frame_check(const fed__frame *f, size_t max_frame, int *type,
                             uint8_t sid[FED_SESSION_ID_LEN], char *why, size_t why_len);
/* Writes a clear header of the given type for sid at p (FED__HDR_LEN bytes). */
void fed__hdr_write(uint8_t *p, int type, const uint8_t sid[FED_SESSION_ID_LEN]);
/* Writes "0a1b2c..." (at most 32 hex digits, then "...") into out (size >= 40). */
void fed__hex(const uint8_t *data, size_t len, char *out);

#endif
