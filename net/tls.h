/* TLS 1.3 for the channel, the only place OpenSSL is used: the per-side context
 * (certificates, CA, CRL, verification policy) and one session per peer driven through
 * an in-memory BIO. Received TLS bytes are handed in with fed__tls_input and consumed by
 * the handshake and read calls; every byte OpenSSL writes goes straight to the owner's
 * sink, which appends it to the frame being built, so records are never copied twice.
 * A context made by fed__tls_ctx_new_plain gives plaintext sessions instead, for
 * inproc:// simulation only: the same calls, the identity claim (channel.h) as the
 * handshake, and bytes passed through unchanged. Also SHA-256 and random bytes. Knows
 * nothing of ZeroMQ or of frames. Internal to net/. */
#ifndef FED_NET_TLS_H
#define FED_NET_TLS_H

#include "core/err.h"
#include "net/channel.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fed__tls_ctx fed__tls_ctx;
typedef struct fed__tls fed__tls;
typedef struct fed__sha256 fed__sha256;

/* Receives bytes OpenSSL writes; returns 0, or -1 when it cannot take them (fatal). */
typedef int (*fed__tls_sink)(void *user, const uint8_t *data, size_t len);

/* Checks the files (fed_net_check_tls; FED_EINVAL, "CA file PATH: what is wrong") unless
 * a test turned that off (fed__net_skip_checks), then loads CA, certificate, key and CRL;
 * FED_ETLS naming the file if OpenSSL still cannot. server: the coordinator side
 * (requires client certificates, purpose sslclient); else a client (purpose sslserver). */
fed_err fed__tls_ctx_new(fed__tls_ctx **out, bool server, const fed_net_tls *files) FED_MUST_USE;
/* A context for plaintext sessions: no files, no OpenSSL. server: the coordinator side
 * (reads identity claims); else a client claiming `identity` (1..FED_NET_CN_MAX printable
 * ASCII characters without spaces; FED_EINVAL otherwise). */
fed_err fed__tls_ctx_new_plain(fed__tls_ctx **out, bool server, const char *identity) FED_MUST_USE;
void fed__tls_ctx_destroy(fed__tls_ctx **c);

/* A session. server_name (clients only): DNS name or IP address the peer certificate
 * must carry; in plaintext, the name the coordinator goes by (NULL or "": "coordinator"). */
fed_err fed__tls_new(fed__tls **out, fed__tls_ctx *c, const char *server_name, fed__tls_sink sink,
                     void *user) FED_MUST_USE;
void fed__tls_destroy(fed__tls **t);

/* The next received bytes; borrowed until consumed (fed__tls_has_leftover false) or the
 * next input. */
void fed__tls_input(fed__tls *t, const uint8_t *data, size_t len);
/* Drives the handshake: FED_OK when complete, FED_EAGAIN when it needs more input,
 * FED_EAUTH (certificate refused) or FED_ETLS with the reason as detail; in plaintext,
 * FED_EPROTO for a malformed identity claim or answer. */
fed_err fed__tls_handshake(fed__tls *t) FED_MUST_USE;
/* True when the session failed for a reason retrying cannot change: this side refused
 * the peer's certificate, or the peer sent a fatal alert refusing ours (revoked, unknown
 * CA, expired, ...) or the handshake itself (no common parameters, version). */
bool fed__tls_refused(const fed__tls *t);
/* Reads up to len plaintext bytes: FED_OK with *got > 0; FED_EAGAIN when the input has
 * no more; FED_ECLOSED (close_notify), FED_EAUTH or FED_ETLS with the reason. */
fed_err fed__tls_read(fed__tls *t, void *buf, size_t len, size_t *got) FED_MUST_USE;
/* Encrypts len bytes into records for the sink (plaintext: hands them over as they are). */
fed_err fed__tls_write(fed__tls *t, const void *buf, size_t len) FED_MUST_USE;
/* True when input is left unread or OpenSSL holds part of a record: after reading
 * until FED_EAGAIN, it means the last frame ended inside a record. */
bool fed__tls_has_leftover(const fed__tls *t);
/* The verified peer's certificate subject CN (set after the handshake), or ""; in
 * plaintext, the identity the client claimed (coordinator side) or the coordinator's
 * name (client side). */
const char *fed__tls_peer_cn(const fed__tls *t);
/* The role test, the only one (docs/ADMIN.md): true when cert's extended key usage lists
 * FED_ADMIN_EKU_OID. OpenSSL's X509 is struct x509_st. */
struct x509_st;
bool fed__cert_is_admin(struct x509_st *cert);
/* Coordinator side: true when the verified peer certificate carries FED_ADMIN_EKU_OID
 * (fed__cert_is_admin); false in plaintext and on the client side. */
bool fed__tls_peer_admin(const fed__tls *t);
/* True when the session's peer certificate is on a CRL the context now holds (after
 * fed__tls_ctx_reload_crl, for sessions admitted before). */
bool fed__tls_revoked(const fed__tls *t);
/* Re-reads files->crl_file, checks it as at start-up (fed_net_check_tls: PEM, in force,
 * signed by a CA of files->ca_file) and installs it for new handshakes, with the CA file
 * re-read too. FED_EINVAL ("PATH: what is wrong") and the old CRL kept when the file is
 * bad or the context had none; FED_ETLS if OpenSSL cannot load it. */
fed_err fed__tls_ctx_reload_crl(fed__tls_ctx *c, const fed_net_tls *files) FED_MUST_USE;
/* The CN of the certificate the peer presented, verified or not, or "": for log lines
 * about refused peers. */
const char *fed__tls_presented_cn(const fed__tls *t);
/* Largest record bytes fed__tls_write can produce for len plaintext bytes (a bound for
 * plaintext sessions too). */
size_t fed__tls_bound(size_t len);

/* Puts what before the calling thread's last detail with a space ("endpoint" + "tcp://x:
 * no port" -> "endpoint tcp://x: no port") and returns err. */
fed_err fed__name_error(fed_err err, const char *what);

/* SHA-256, streaming. */
fed_err fed__sha256_new(fed__sha256 **out) FED_MUST_USE;
void fed__sha256_update(fed__sha256 *h, const void *data, size_t len);
void fed__sha256_final(fed__sha256 *h, uint8_t out[FED_SHA256_LEN]);
void fed__sha256_destroy(fed__sha256 **h);

/* Cryptographically random bytes. */
fed_err fed__random(void *buf, size_t len) FED_MUST_USE;

#endif
