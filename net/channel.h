/* The secure channel between the coordinator and the clients: mutually authenticated
 * TLS 1.3 (OpenSSL) carried in ZeroMQ frames, with fed_msg messages and chunked bulk
 * transfers on top; for the in-process simulator also a plaintext mode, inproc:// only.
 * This header is all the coordinator, the client and the simulator see of the network;
 * ZeroMQ, OpenSSL and protobuf-c types never appear in it.
 *
 * How it works, in layers:
 *
 *   - The coordinator (fed_server) binds a ZeroMQ ROUTER on tcp:// or inproc://; each
 *     client (fed_client) connects a DEALER. Every ZeroMQ frame starts with a 24-byte
 *     clear header: magic "FEDN", version 1, a frame type (OPEN: first frame of a new
 *     TLS session, DATA, CLOSE), two zero bytes and the 16-byte session id the client
 *     drew at random for this TLS session. The rest of the frame is TLS records.
 *   - Each session has its own OpenSSL SSL object driven through memory BIOs: TLS 1.3
 *     only, certificates on both sides checked against the federation CA (and its CRL
 *     when configured), the coordinator's name checked by the client, extended key usage
 *     enforced both ways (a site certificate cannot act as the coordinator), no session
 *     tickets, no resumption. A peer's identity is the subject CN of its certificate,
 *     never its routing id nor anything it says; so is its role (fed_net_role: a client
 *     certificate that also lists FED_ADMIN_EKU_OID is an admin's, docs/ADMIN.md).
 *   - Plaintext mode (fed_net_config.plaintext; `fedtune sim` without --tls) replaces only
 *     the TLS layer, and only on inproc:// endpoints: the constructors refuse it on any
 *     other (FED_EINVAL). Frame bodies carry the plaintext stream itself, and the TLS
 *     handshake becomes an identity claim. The client's OPEN frame body is exactly
 *         "FEDP" | version u8 = 1 | n u8 | n bytes of name
 *     with the name fed_client_config.identity: 1..FED_NET_CN_MAX printable ASCII
 *     characters without spaces (0x21..0x7e). The coordinator answers with a DATA frame
 *     whose body is exactly "FEDP" | 1 | 0, and Hello/Welcome follow as with TLS. Both
 *     sides are strict: a bad magic (such as a TLS ClientHello), another version, an
 *     empty, oversized or non-printable name, a truncated claim or bytes after it end that
 *     session like a failed handshake; a TLS coordinator recognises a claim and refuses it.
 *     The claimed name is the peer's identity exactly as a CN is (event cn, peer handles,
 *     a second session of a connected identity replaces the first); a client calls the
 *     coordinator by its server_name, or "coordinator". Nothing is authenticated or
 *     encrypted: any code in the process may claim any name. It exists so simulations do
 *     not pay for cryptography; `fedtune sim --tls` keeps TLS to measure what it costs.
 *   - In TLS 1.3 the client finishes its handshake before the coordinator has checked
 *     the client certificate, so admission is an application exchange: the client sends
 *     Hello (with its session id), the coordinator answers Welcome, and only then does
 *     either side report FED_NET_JOINED.
 *   - Inside TLS the plaintext is a stream of [u32 little-endian length][fed_msg
 *     envelope], and a FED_MSG_CHUNK envelope is followed by its `length` raw bytes.
 *     Every frame carries whole TLS records holding whole messages, so a frame that ends
 *     inside a record or a message is an error ("truncated"), detected at once, during
 *     the handshake too (not left to the handshake timeout).
 *   - Bulk bytes (models, deltas) move as transfers: the sender registers (transfer id,
 *     pointer, length) and the receiver registers a buffer of the announced length with
 *     the SHA-256 it expects (both announced by an application message such as
 *     RoundStart or Update). The receiver grants credits (FED_MSG_CREDIT: "send N more
 *     chunks, I have everything before offset X"); the sender encrypts chunks straight
 *     from the caller's buffer only while it holds credit, so a slow receiver never
 *     makes the sender buffer more than N chunks. The receiver checks every chunk's
 *     (offset, length) against its buffer, writes it in place, hashes as it goes and
 *     reports the transfer only once the SHA-256 of the whole matches; it then tells the
 *     sender (Credit with 0 chunks at the end offset), which reports it sent.
 *   - Transfers survive a reconnect: when the same identity (CN) comes back with a new
 *     TLS session, the receiver's first Credit carries the offset to resume from.
 *
 *   - On tcp:// both sides watch their ZeroMQ connection(s) through a socket monitor
 *     (sock.h). A client whose connection goes away ends its session at once (LEFT,
 *     "lost the connection"), since libzmq would otherwise reconnect underneath it,
 *     perhaps to a restarted coordinator that knows nothing of the session, and the
 *     client would learn only at its next keepalive. The coordinator ends the session of
 *     a peer whose connection ended (a crash, or libzmq cutting a frame over its
 *     ZMQ_MAXMSGSIZE limit of twice the largest legitimate frame; libzmq does not say
 *     which, so the log line names both), once what the connection delivered before is
 *     read and unless the peer opens a new session on its routing id within a second
 *     (a reconnect, which replaces the old session quietly). inproc:// has no
 *     connections to watch: a vanished peer is found when a Heartbeat to it fails.
 *   - A client's LEFT says whether retrying can help (fed_net_event.permanent): not when
 *     the coordinator refused its certificate with a fatal TLS alert (revoked, unknown CA,
 *     expired, unsupported purpose, ...; in TLS 1.3 the alert arrives after the client's
 *     handshake is done, and is read then) or when the coordinator's certificate failed
 *     the client's own checks; yes for lost connections, timeouts and a busy coordinator.
 *   - Before anything starts, the constructors check the endpoint (fed_net_check_endpoint)
 *     and the TLS files (fed_net_check_tls): what could never work is FED_EINVAL at once,
 *     not a retry loop or a coordinator nobody can join.
 *
 * Failures are contained: garbage, non-TLS bytes, truncated records, failed handshakes,
 * oversized frames or messages, chunks out of range, digest mismatches and protocol
 * violations end THAT peer's session only, with exactly one warn-level log line (core/
 * log.h) naming the peer (its CN if known, else its routing id in hex) and the reason.
 *
 * Everything is single-threaded and event-driven: one thread owns a fed_server or a
 * fed_client and calls its poll function, which does all the I/O and returns one event
 * at a time. Several objects may share one ZeroMQ context (simulation: a coordinator and
 * many clients over inproc://), each used by one thread. Encrypted outgoing chunks live
 * in a bounded pool of buffers handed to ZeroMQ without copying; nothing allocates a
 * large buffer per message. */
#ifndef FED_NET_CHANNEL_H
#define FED_NET_CHANNEL_H

#include "core/err.h"
#include "proto/msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------ */
/* Configuration                                                                        */

/* Chunk sizes a sender may use; the default is FED_NET_CHUNK_DEFAULT. */
#define FED_NET_CHUNK_MIN     (256u * 1024u)
#define FED_NET_CHUNK_MAX     (4u * 1024u * 1024u)
#define FED_NET_CHUNK_DEFAULT (1024u * 1024u)

/* Longest certificate CN (or plaintext identity) we accept, without the NUL. */
#define FED_NET_CN_MAX 64

/* The admin role (docs/ADMIN.md): a client certificate (extended key usage clientAuth)
 * that also lists this extended key usage OID (a UUID OID, ITU-T X.667) is an admin's
 * and nothing else: the coordinator never takes it as a site, and a certificate without
 * it is never an admin. `fedtune-certs admin` makes one. */
#define FED_ADMIN_EKU_OID "2.25.119735425215181750697262863098642166956"

/* What a verified peer certificate makes its holder, as the coordinator sees it. */
typedef enum fed_net_role {
    FED_NET_ROLE_SITE = 0,  /* a site (every plaintext identity is one) */
    FED_NET_ROLE_ADMIN = 1, /* an admin: carries FED_ADMIN_EKU_OID */
} fed_net_role;

/* "site", "admin". */
const char *fed_net_role_name(fed_net_role r);

/* The role a PEM certificate file gives its holder: for a command to refuse the wrong
 * kind of certificate before it connects. FED_EINVAL ("PATH: not a PEM certificate")
 * when the file holds no certificate. */
fed_err fed_net_cert_role(const char *cert_file, fed_net_role *role) FED_MUST_USE;

/* The PEM files of one side. */
typedef struct fed_net_tls {
    const char *ca_file;   /* the federation CA certificate(s) the peer must chain to */
    const char *cert_file; /* this side's certificate (chain); NULL only in tests (no cert) */
    const char *key_file;  /* its private key */
    const char *crl_file;  /* CRL(s) every peer certificate is checked against; NULL: none */
} fed_net_tls;

/* What both sides share. fed_net_default_config() fills every field. Keepalive and idle
 * timeout work together: each side sends a Heartbeat when it has sent nothing for
 * keepalive_ms, and ends a session it has heard nothing from for idle_timeout_ms (keep
 * it several keepalives long). The coordinator also learns at once that a client's
 * connection is gone when a Heartbeat to it fails (ZMQ_ROUTER_MANDATORY). A receiver's
 * limits.max_chunk must be at least the sender's chunk_size; Welcome tells clients the
 * coordinator's. */
typedef struct fed_net_config {
    fed_net_tls tls;          /* the PEM files; not read (may be NULL) when plaintext */
    bool plaintext;           /* no TLS, inproc:// endpoints only (false); see above */
    int handshake_timeout_ms; /* TLS handshake + Hello/Welcome must end within (10 000) */
    int keepalive_ms;         /* send a Heartbeat after this long without sending (10 000; 0 off) */
    int idle_timeout_ms;      /* end a session silent for this long (60 000; 0 off) */
    int zmq_heartbeat_ms;     /* ZMQ_HEARTBEAT_IVL; TIMEOUT and TTL are 3x (5 000; 0 off) */
    size_t chunk_size;        /* bytes per chunk this side sends, FED_NET_CHUNK_MIN..MAX */
    uint32_t credits;         /* chunks granted per Credit to a sender, 1..1024 (8) */
    size_t pool_bytes;        /* encrypted outgoing chunks in flight, all peers (32 MiB) */
    bool pool_release;        /* free chunk buffers as they come back instead of keeping
                                 them for the next transfer (false): for many clients in
                                 one process (the simulator), where a kept buffer a site
                                 costs more than malloc reusing one for all of them */
    fed_msg_limits limits;    /* what incoming envelopes and chunks may hold */
} fed_net_config;

fed_net_config fed_net_default_config(void);

/* The PEM files of fed_net_tls, to say which one a check found wrong. */
typedef enum fed_net_file {
    FED_NET_FILE_NONE = 0,
    FED_NET_FILE_CA,   /* ca_file */
    FED_NET_FILE_CERT, /* cert_file */
    FED_NET_FILE_KEY,  /* key_file */
    FED_NET_FILE_CRL,  /* crl_file */
} fed_net_file;

/* Checks one side's TLS files as fed_server_new (coordinator) and fed_client_new do before
 * anything else, so that what would make every handshake fail is refused at start-up:
 * every file given is a readable regular file holding what it should (PEM certificates,
 * at least one a CA valid now; this side's certificate; an unencrypted PEM private key;
 * PEM CRLs); the certificate is valid now (not expired, not before its start), made for
 * this side (extended key usage serverAuth for the coordinator, clientAuth for a site,
 * whose subject must also carry one printable CN: its identity) and matches the key;
 * each CRL is signed by a CA of the CA file and neither expired (past its next update)
 * nor dated in the future. FED_EINVAL with the detail "PATH: what is wrong" (e.g.
 * "/tmp: is a directory, not a PEM certificate") and *which (may be NULL) naming the file;
 * no option or field name, the caller adds its own ("--ca", or fed_net_file_name). */
fed_err fed_net_check_tls(const fed_net_tls *tls, bool coordinator,
                          fed_net_file *which) FED_MUST_USE;
/* The library's words for a file in messages: "CA file", "certificate", "key", "CRL". */
const char *fed_net_file_name(fed_net_file f);

/* Checks an endpoint's syntax before anything starts (fed_server_new and fed_client_new
 * do, and so refuse a bad one with FED_EINVAL instead of retrying it forever). The only
 * forms: "tcp://HOST:PORT" with HOST a DNS name, an IPv4 address or a bracketed IPv6
 * address ("[::1]") and PORT 1..65535, and "inproc://NAME" with NAME 1..255 printable
 * characters. bind (the coordinator's --listen) also allows HOST "*" (every interface) or
 * an interface name, and PORT 0 or "*" (a free port, see fed_server_endpoint).
 * FED_EINVAL with the detail "ENDPOINT: what is wrong" ("localhost:7443: no transport:
 * write tcp://localhost:7443"); the caller names its option or field. */
fed_err fed_net_check_endpoint(const char *endpoint, bool bind) FED_MUST_USE;

/* The coordinator's side. */
typedef struct fed_server_config {
    const char *endpoint;  /* "tcp://0.0.0.0:7443", "tcp://127.0.0.1:0" (a free port), ... */
    fed_net_config net;    /* TLS files, timeouts, chunking, limits */
    const char *software;  /* sent in Welcome.coordinator ("fedtune 0.1.0") */
    size_t max_peers;      /* admitted sessions at once (1024) */
    size_t max_handshakes; /* sessions not yet admitted at once (64) */
} fed_server_config;

fed_server_config fed_server_default_config(void);

/* A client's side. */
typedef struct fed_client_config {
    const char *endpoint;    /* the coordinator: "tcp://fed.example.org:7443", "inproc://x" */
    const char *server_name; /* name (or IP) the coordinator's certificate must carry;
                                plaintext: what to call it (NULL: "coordinator") */
    const char *identity;    /* plaintext only: the name claimed, 1..FED_NET_CN_MAX printable
                                ASCII characters without spaces; ignored with TLS, where the
                                certificate CN is the identity */
    fed_net_config net;      /* TLS files, timeouts, chunking, limits */
    fed_msg_hello hello;     /* what Hello says; session_id is filled in by the channel */
} fed_client_config;

fed_client_config fed_client_default_config(void);

/* ------------------------------------------------------------------------------------ */
/* Events                                                                               */

typedef enum fed_net_event_type {
    FED_NET_NONE = 0,        /* the timeout passed with nothing to report */
    FED_NET_JOINED,          /* server: a peer was admitted; client: the coordinator welcomed us */
    FED_NET_MESSAGE,         /* a message arrived (never Hello/Welcome/Chunk/Credit/Heartbeat) */
    FED_NET_TRANSFER_DONE,   /* a transfer registered with *_recv_transfer arrived whole and
                                matched its SHA-256; its buffer is the caller's again */
    FED_NET_TRANSFER_SENT,   /* the receiver confirmed a transfer sent with *_send_transfer;
                                its buffer is the caller's again */
    FED_NET_TRANSFER_FAILED, /* a received transfer did not match its SHA-256; buffer released */
    FED_NET_LEFT,            /* server: an admitted session ended; client: the session ended or
                                was refused (err, reason). Transfers wait for the same identity
                                to come back (server) or for fed_client_reconnect (client) */
} fed_net_event_type;

/* One event. Pointers stay valid until the next poll or destroy of the object. */
typedef struct fed_net_event {
    fed_net_event_type type;
    uint32_t peer;        /* server: the peer's handle, the same across its reconnects; client: 0 */
    const char *cn;       /* the peer's certificate CN (client: the coordinator's); never NULL */
    const fed_msg *msg;   /* JOINED: Hello (server) / Welcome (client); MESSAGE: it; else NULL */
    uint64_t transfer_id; /* TRANSFER_*: which transfer */
    fed_err err;          /* LEFT, TRANSFER_FAILED: why, as a code; FED_OK otherwise */
    const char *reason;   /* LEFT, TRANSFER_FAILED: why, one line; "" otherwise */
    fed_net_role role;    /* server: the peer's role, from its verified certificate (JOINED
                             and after); client: FED_NET_ROLE_SITE */
    bool permanent;       /* LEFT: reconnecting cannot help, the same configuration meets the
                             same refusal: a certificate refused by either side (the peer's
                             fatal alert: revoked, unknown CA, expired, unsupported purpose,
                             access denied, ...; or this side's verification: wrong name,
                             unknown CA) or a TLS handshake with nothing in common. False for
                             network trouble (lost connections, timeouts, a restarting peer),
                             which a later attempt may overcome. */
} fed_net_event;

/* "none", "joined", "message", ... */
const char *fed_net_event_name(fed_net_event_type t);

/* Counters for tests, benchmarks and status pages. */
typedef struct fed_net_stats {
    uint64_t frames_sent, frames_received; /* ZeroMQ frames */
    uint64_t bytes_sent, bytes_received;   /* frame bytes, clear header and TLS included */
    size_t pool_in_use;                    /* chunk buffers now owned by ZeroMQ or queued */
    size_t pool_peak;                      /* most chunk buffers ever out at once */
    size_t pool_max;                       /* the pool's bound, in buffers */
    size_t pool_buffer_bytes;              /* bytes of one chunk buffer */
    size_t queued_frames;                  /* frames waiting for room in ZeroMQ */
    size_t sessions;                       /* server: admitted sessions; client: 0 or 1 */
    size_t handshakes;                     /* server: sessions not yet admitted */
} fed_net_stats;

/* ------------------------------------------------------------------------------------ */
/* ZeroMQ context                                                                       */

/* A ZeroMQ context for fed_server_new/fed_client_new, so callers need not include zmq.h.
 * NULL on failure (FED_ENOMEM detail). */
void *fed_net_context_new(void);
/* Terminates it once every object using it is destroyed; NULL-safe, sets *ctx to NULL. */
/* Lets ctx hold n sockets (ZeroMQ's default is 1023; a simulation with thousands of
 * virtual sites needs more). Call before the context's first socket. */
fed_err fed_net_context_set_max_sockets(void *ctx, size_t n) FED_MUST_USE;
void fed_net_context_destroy(void **ctx);

/* ------------------------------------------------------------------------------------ */
/* The coordinator                                                                      */

typedef struct fed_server fed_server;

/* Checks and loads the certificates, binds cfg->endpoint on zmq_ctx (borrowed; must
 * outlive the server). FED_EINVAL for a bad config: a malformed endpoint ("endpoint
 * tcp://x:99999: port 99999 is outside 0..65535 ..."), plaintext on an endpoint not
 * inproc://, TLS files that fail fed_net_check_tls ("certificate PATH: a site
 * certificate ..."); FED_ETLS if OpenSSL still cannot load them; FED_EIO when the
 * endpoint cannot be bound (a port in use, an address not of this machine). */
fed_err fed_server_new(fed_server **out, void *zmq_ctx, const fed_server_config *cfg) FED_MUST_USE;
/* Closes every session (peers see CLOSE) and the socket. NULL-safe; sets *s to NULL. */
void fed_server_destroy(fed_server **s);
/* The endpoint really bound ("tcp://127.0.0.1:41234" for port 0). */
const char *fed_server_endpoint(const fed_server *s);

/* Does all pending I/O and returns the next event in *ev, waiting up to timeout_ms
 * (0: do not wait, -1: forever) for one; FED_NET_NONE when the time ran out. Errors are
 * for the server as a whole (the socket failed); a bad peer is never an error here. */
fed_err fed_server_poll(fed_server *s, int timeout_ms, fed_net_event *ev) FED_MUST_USE;

/* Queues m (ROUND_START, UPDATE, ERROR, HEARTBEAT or BYE; the channel sets version and
 * seq) for an admitted peer. FED_ENOTFOUND for an unknown handle, FED_ECLOSED when the
 * peer has no session now, FED_EINVAL for a type the channel reserves. */
fed_err fed_server_send(fed_server *s, uint32_t peer, const fed_msg *m) FED_MUST_USE;
/* Sends len bytes from data as transfer id to peer, chunk by chunk as the peer grants
 * credit. data is borrowed until FED_NET_TRANSFER_SENT or a cancel; the transfer waits
 * across reconnects of the peer. FED_EEXIST when id is already being sent to peer.
 * Transfer ids name one transfer with one peer for the life of the objects: never reuse
 * one (a receiver acknowledges recent ids again after a reconnect). */
fed_err fed_server_send_transfer(fed_server *s, uint32_t peer, uint64_t id, const void *data,
                                 uint64_t len) FED_MUST_USE;
/* Receives transfer id from peer into buf (len bytes, the announced size), expecting
 * SHA-256 sha256; grants credit at once if the peer is connected. buf is borrowed until
 * FED_NET_TRANSFER_DONE/FAILED or a cancel. */
fed_err fed_server_recv_transfer(fed_server *s, uint32_t peer, uint64_t id, void *buf, uint64_t len,
                                 const uint8_t sha256[FED_SHA256_LEN]) FED_MUST_USE;
/* Forgets transfer id of peer in both directions; its buffer is the caller's again at
 * return. FED_ENOTFOUND if there was none. */
fed_err fed_server_cancel_transfer(fed_server *s, uint32_t peer, uint64_t id) FED_MUST_USE;
/* Ends the peer's session (it sees CLOSE) and cancels its transfers; a FED_NET_LEFT
 * event follows. The identity may connect again. FED_ENOTFOUND for an unknown handle. */
fed_err fed_server_drop(fed_server *s, uint32_t peer, const char *reason) FED_MUST_USE;
/* The CN of a peer handle, or NULL. */
const char *fed_server_peer_cn(const fed_server *s, uint32_t peer);
/* The role of a peer handle as its last admitted session's certificate says. */
fed_net_role fed_server_peer_role(const fed_server *s, uint32_t peer);
/* Re-reads the CRL file the server was made with, checks it as fed_net_check_tls does at
 * start-up and installs it for every new handshake; then ends at once (one warn line
 * each, LEFT events follow) every admitted session whose certificate it revokes, and sets
 * *closed (may be NULL) to their number. FED_EINVAL when the server has no CRL file
 * (or runs plaintext) or the file is bad ("PATH: expired on ..."): the CRL in force stays. */
fed_err fed_server_reload_crl(fed_server *s, size_t *closed) FED_MUST_USE;
/* True when the peer has an admitted session now. */
bool fed_server_peer_connected(const fed_server *s, uint32_t peer);
void fed_server_stats(const fed_server *s, fed_net_stats *st);
/* The last error of a call on s, naming the file, peer or field at fault. */
const char *fed_server_errmsg(const fed_server *s);

/* ------------------------------------------------------------------------------------ */
/* A client                                                                             */

typedef struct fed_client fed_client;

/* Checks and loads the certificates, connects to cfg->endpoint on zmq_ctx (borrowed)
 * and starts the handshake; FED_NET_JOINED (or FED_NET_LEFT with the reason) follows
 * from poll. cfg->hello is copied. Errors as fed_server_new (the endpoint must name a
 * host and a port 1..65535); plaintext without a valid identity is FED_EINVAL. */
fed_err fed_client_new(fed_client **out, void *zmq_ctx, const fed_client_config *cfg) FED_MUST_USE;
/* Says CLOSE to the coordinator and closes the socket. NULL-safe; sets *c to NULL. */
void fed_client_destroy(fed_client **c);

/* As fed_server_poll. After FED_NET_LEFT nothing more happens until fed_client_reconnect;
 * a permanent LEFT will meet the same refusal again. */
fed_err fed_client_poll(fed_client *c, int timeout_ms, fed_net_event *ev) FED_MUST_USE;
/* True between FED_NET_JOINED and FED_NET_LEFT. */
bool fed_client_ready(const fed_client *c);
/* For callers that drive many clients from one thread (the simulator): the descriptors
 * that become readable when something may have arrived for c (ZeroMQ's ZMQ_FD; 1 or 2,
 * stored in fds, 0 without a socket), and whether a fed_client_poll with timeout 0 could
 * do something now (an event queued, frames or chunks to send, a frame waiting). When
 * fed_client_busy is false, nothing happens until one of the descriptors is readable or
 * a timer of the configuration (keepalive, idle, handshake timeout) is due. The
 * descriptors are edge triggered: ask fed_client_busy after every poll before waiting on
 * them. */
int fed_client_wake_fds(fed_client *c, int fds[2]);
bool fed_client_busy(fed_client *c);
/* As fed_server_send, to the coordinator; FED_ECLOSED when not ready. */
fed_err fed_client_send(fed_client *c, const fed_msg *m) FED_MUST_USE;
/* As fed_server_send_transfer / recv_transfer / cancel_transfer, with the coordinator. */
fed_err fed_client_send_transfer(fed_client *c, uint64_t id, const void *data,
                                 uint64_t len) FED_MUST_USE;
fed_err fed_client_recv_transfer(fed_client *c, uint64_t id, void *buf, uint64_t len,
                                 const uint8_t sha256[FED_SHA256_LEN]) FED_MUST_USE;
fed_err fed_client_cancel_transfer(fed_client *c, uint64_t id) FED_MUST_USE;
/* Ends the current session (if any), closes the socket and connects a new one with the
 * same routing id and a new TLS session; transfers resume once welcomed. No LEFT event
 * is reported for the session closed here. */
fed_err fed_client_reconnect(fed_client *c) FED_MUST_USE;
void fed_client_stats(const fed_client *c, fed_net_stats *st);
const char *fed_client_errmsg(const fed_client *c);

/* ------------------------------------------------------------------------------------ */
/* Helpers                                                                              */

/* SHA-256 of len bytes (OpenSSL EVP), e.g. for the digest a RoundStart announces. */
void fed_sha256(const void *data, size_t len, uint8_t out[FED_SHA256_LEN]);

#endif
