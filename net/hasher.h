/* The digest worker: one thread that computes the SHA-256 of received chunks while the
 * receiving thread decrypts the next ones. A receiver's time goes to AES-GCM decryption
 * and to SHA-256 in about equal parts, and SHA-256 cannot be split inside one transfer,
 * so moving it to a second core is what lets decryption run at its own speed. Updates are
 * queued in order (one queue, one thread), so the running digest of a transfer sees its
 * chunks in the order they arrived; a bounded queue makes the receiver wait when hashing
 * falls behind. Each queued update counts in a counter its owner gives (the transfer),
 * which the owner waits on before it reads the digest, frees the digest, or lets the
 * caller's buffer go. No ZeroMQ or OpenSSL here (tls.h hashes). Internal to net/. */
#ifndef FED_NET_HASHER_H
#define FED_NET_HASHER_H

#include "core/err.h"
#include "net/tls.h"

#include <stdatomic.h>
#include <stddef.h>

typedef struct fed__hasher fed__hasher;

/* Starts the worker thread; FED_ENOMEM (or FED_EINTERNAL naming pthread_create) when it
 * cannot. */
fed_err fed__hasher_new(fed__hasher **out) FED_MUST_USE;
/* Finishes every queued update, then stops the thread; NULL-safe, sets *h to NULL. */
void fed__hasher_destroy(fed__hasher **h);
/* Queues fed__sha256_update(sha, data, len) after every update queued before; adds one
 * to *pending now and takes it off once the update is done. data must stay valid and
 * unchanged until then. Waits while the queue is full. Owner thread only. */
void fed__hasher_add(fed__hasher *h, fed__sha256 *sha, const void *data, size_t len,
                     atomic_uint *pending);
/* Returns once *pending is 0: every update counted there is done. */
void fed__hasher_wait(fed__hasher *h, atomic_uint *pending);

#endif
