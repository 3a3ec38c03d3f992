/* The chunk-buffer pool (see pool.h). A mutex guards the free list and the counters
 * because ZeroMQ releases buffers from its own threads; a pipe wakes the owner, which
 * sleeps in zmq_poll, when a buffer comes back to an exhausted pool. The pipe is made
 * the first time the pool runs dry: most connections never need it, and a simulator
 * with ten thousand sites in one process cannot spend two descriptors on each. */
#include "net/pool.h"

#include "core/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

struct fed__pool {
    pthread_mutex_t mu; /* guards everything below but the constants */
    size_t buf_size;    /* constant: bytes per buffer */
    size_t max_bufs;    /* constant: bound on buffers allocated */
    fed__buf *free;     /* buffers ready for reuse */
    size_t allocated;   /* buffers allocated (free + out) */
    size_t out;         /* buffers not in the free list */
    size_t peak;        /* most buffers out at once */
    bool waiting;       /* a get failed: the next release writes to the pipe */
    bool closed;        /* the owner let go: free everything once out reaches 0 */
    bool release;       /* constant: free buffers as they come back */
    int pipe_rd;        /* wake-up pipe, read end (owner polls it) */
    int pipe_wr;        /* write end (releasers) */
};

static void pool_free_all(fed__pool *p) {
    for (fed__buf *b = p->free, *n; b; b = n) {
        n = b->next;
        fed_free(b);
    }
    if (p->pipe_rd >= 0) close(p->pipe_rd);
    if (p->pipe_wr >= 0) close(p->pipe_wr);
    pthread_mutex_destroy(&p->mu);
    fed_free(p);
}

static int set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
    return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

fed_err fed__pool_new(fed__pool **out, size_t buf_size, size_t max_bufs, bool release) {
    *out = NULL;
    if (buf_size == 0 || max_bufs == 0) return fed_errorf(FED_EINVAL, "pool: empty");
    fed__pool *p = fed_calloc(1, sizeof *p);
    if (!p) return FED_ENOMEM;
    p->buf_size = buf_size;
    p->max_bufs = max_bufs;
    p->release = release;
    p->pipe_rd = p->pipe_wr = -1;
    pthread_mutex_init(&p->mu, NULL);
    *out = p;
    return FED_OK;
}

/* Under the lock: makes the wake-up pipe if there is none yet. Without one (no
 * descriptor left) the owner still wakes at its poll timeout. */
static void make_pipe(fed__pool *p) {
    if (p->pipe_rd >= 0) return;
    int fds[2];
    if (pipe(fds) != 0) return;
    if (set_nonblock(fds[0]) != 0 || set_nonblock(fds[1]) != 0) {
        close(fds[0]);
        close(fds[1]);
        return;
    }
    p->pipe_rd = fds[0];
    p->pipe_wr = fds[1];
}

void fed__pool_close(fed__pool **pp) {
    fed__pool *p = *pp;
    if (!p) return;
    *pp = NULL;
    pthread_mutex_lock(&p->mu);
    p->closed = true;
    for (fed__buf *b = p->free, *n; b; b = n) {
        n = b->next;
        fed_free(b);
        p->allocated--;
    }
    p->free = NULL;
    bool last = p->out == 0;
    pthread_mutex_unlock(&p->mu);
    if (last) pool_free_all(p);
}

fed__buf *fed__pool_get(fed__pool *p) {
    pthread_mutex_lock(&p->mu);
    fed__buf *b = p->free;
    if (b) {
        p->free = b->next;
    } else if (p->allocated < p->max_bufs) {
        /* Allocate outside the lock would be nicer, but this happens max_bufs times. */
        b = fed_malloc(sizeof *b + p->buf_size);
        if (b) {
            b->pool = p;
            b->cap = p->buf_size;
            p->allocated++;
        }
    }
    if (b) {
        b->next = NULL;
        b->len = 0;
        b->keep = 0;
        if (++p->out > p->peak) p->peak = p->out;
    } else {
        make_pipe(p);
        p->waiting = true;
    }
    pthread_mutex_unlock(&p->mu);
    return b;
}

fed__buf *fed__buf_new(size_t cap) {
    size_t total;
    if (!fed_add_ok(sizeof(fed__buf), cap, &total)) return NULL;
    fed__buf *b = fed_malloc(total);
    if (!b) return NULL;
    b->pool = NULL;
    b->next = NULL;
    b->cap = cap;
    b->len = 0;
    b->keep = 0;
    return b;
}

void fed__buf_release(fed__buf *b) {
    if (!b) return;
    if (b->keep) {
        b->keep = 0;
        return;
    }
    fed__pool *p = b->pool;
    if (!p) {
        fed_free(b);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->out--;
    bool last = false;
    if (p->closed || p->release) {
        fed_free(b);
        p->allocated--;
        last = p->closed && p->out == 0;
    } else {
        b->next = p->free;
        p->free = b;
    }
    if (!p->closed) {
        if (p->waiting) {
            p->waiting = false;
            /* A full pipe already wakes the owner: a failed write changes nothing. */
            if (p->pipe_wr >= 0) {
                ssize_t w = write(p->pipe_wr, "", 1);
                (void)w;
            }
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (last) pool_free_all(p);
}

size_t fed__pool_buf_size(const fed__pool *p) {
    return p->buf_size;
}

int fed__pool_fd(const fed__pool *p) {
    return p->pipe_rd;
}

void fed__pool_clear_signal(fed__pool *p) {
    char tmp[64];
    if (p->pipe_rd < 0) return;
    while (read(p->pipe_rd, tmp, sizeof tmp) > 0) {
    }
}

bool fed__pool_waiting(fed__pool *p) {
    pthread_mutex_lock(&p->mu);
    bool w = p->waiting;
    pthread_mutex_unlock(&p->mu);
    return w;
}

void fed__pool_stats(fed__pool *p, size_t *in_use, size_t *peak, size_t *max_bufs) {
    pthread_mutex_lock(&p->mu);
    *in_use = p->out;
    *peak = p->peak;
    *max_bufs = p->max_bufs;
    pthread_mutex_unlock(&p->mu);
}

size_t fed__pool_allocated(fed__pool *p) {
    pthread_mutex_lock(&p->mu);
    size_t n = p->allocated;
    pthread_mutex_unlock(&p->mu);
    return n;
}
