/* Frame buffers for the channel: a bounded pool of equal-sized buffers for encrypted
 * chunks, and one-off buffers for the rare frame that does not fit one. A buffer is
 * handed to ZeroMQ without copying (zmq_msg_init_data) and comes back through
 * fed__buf_release, which libzmq may call from its I/O thread or from the receiving
 * thread of an inproc:// peer: releasing is thread-safe, everything else belongs to the
 * pool's owner thread. When the pool is exhausted the owner waits on fed__pool_fd, which
 * becomes readable as soon as a buffer comes back. Memory is allocated once per buffer
 * and reused (unless the pool releases them); a closed pool is freed when its last buffer
 * returns. No ZeroMQ or OpenSSL
 * here. Internal to net/. */
#ifndef FED_NET_POOL_H
#define FED_NET_POOL_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct fed__pool fed__pool;

/* One frame buffer. */
typedef struct fed__buf {
    fed__pool *pool;       /* owning pool; NULL for a one-off buffer, freed on release */
    struct fed__buf *next; /* free list, or the owner's queue of frames to send */
    size_t cap;            /* bytes available at data */
    size_t len;            /* bytes in use */
    int keep;              /* 1: the next release is a no-op (a send failed, we keep it) */
    unsigned char data[];  /* the frame */
} fed__buf;

/* A pool of at most max_bufs buffers of buf_size bytes each, allocated on demand; with
 * release, a buffer that comes back is freed rather than kept for reuse. */
fed_err fed__pool_new(fed__pool **out, size_t buf_size, size_t max_bufs, bool release) FED_MUST_USE;
/* The owner's reference: free buffers go now, buffers still out when they return. */
void fed__pool_close(fed__pool **p);

/* A buffer (len 0), or NULL when max_bufs are out (or memory ran out); then the pool's fd
 * turns readable when one comes back. Owner thread only. */
fed__buf *fed__pool_get(fed__pool *p);
/* A one-off buffer of cap bytes, NULL on allocation failure. */
fed__buf *fed__buf_new(size_t cap);
/* Gives b back to its pool (or frees a one-off); thread-safe; NULL-safe. */
void fed__buf_release(fed__buf *b);

size_t fed__pool_buf_size(const fed__pool *p);
/* Read end of the wake-up pipe, and clearing it after it fired. -1 until the pool first
 * ran dry (the pipe is made then; if no descriptor is left, the owner wakes at its poll
 * timeout instead). */
int fed__pool_fd(const fed__pool *p);
void fed__pool_clear_signal(fed__pool *p);
/* True when a get failed since the last buffer came back. */
bool fed__pool_waiting(fed__pool *p);
void fed__pool_stats(fed__pool *p, size_t *in_use, size_t *peak, size_t *max_bufs);
/* Buffers allocated now: out, plus those kept free for reuse. */
size_t fed__pool_allocated(fed__pool *p);

#endif
