/* Internal to net/ and its tests (the libuv internal.h pattern): the channel's testing
 * hooks, which misbehave on purpose so that tests can show the other side coping. Not
 * for production code; nothing outside net/ and tests/ includes this header (checked by
 * tests/internal_names.sh). The channel's own internal headers are pool.h, sock.h,
 * tls.h and session.h. */
#ifndef FED_NET_INTERNAL_H
#define FED_NET_INTERNAL_H

#include "net/channel.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Writes len arbitrary plaintext bytes into the client's TLS session as one frame. */
fed_err fed__client_send_plain(fed_client *c, const void *data, size_t len) FED_MUST_USE;
/* Sends one DATA frame of the current session whose body is len raw bytes (not TLS). */
fed_err fed__client_send_frame(fed_client *c, const void *data, size_t len) FED_MUST_USE;
/* Closes the socket without a word (no CLOSE, linger 0), as a crashed client would; the
 * client stays unusable until fed_client_reconnect. */
void fed__client_vanish(fed_client *c);
/* Destroys s without a word to its peers (no CLOSE, linger 0), as a killed coordinator
 * process would go; NULL-safe, sets *s to NULL. */
void fed__server_vanish(fed_server **s);
/* Skips fed_net_check_tls in the constructors (on) so that tests can present what a
 * foreign peer could (an expired certificate, one made for the other side) and see the
 * other side refuse it. Process-wide; off again with false. */
void fed__net_skip_checks(bool on);
/* Sends a Chunk message of transfer id at offset declaring `declared` payload bytes but
 * carrying the len bytes at data, credit or not. */
fed_err fed__client_send_chunk(fed_client *c, uint64_t id, uint64_t offset, const void *data,
                               uint32_t len, uint32_t declared) FED_MUST_USE;
/* How received transfers are hashed: -1 as the channel decides (the digest worker for
 * large tcp:// transfers on more than one CPU, session.h), 0 always inline, 1 always on
 * the digest worker (inproc://, plaintext and small transfers too). Process-wide; read when a
 * transfer's first chunk arrives. */
void fed__net_hash_thread(int mode);

#endif
