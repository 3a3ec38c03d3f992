/* The digest worker (see hasher.h): a ring of queued updates under one mutex, the worker
 * thread taking them in order. A slot stays occupied while the worker hashes it, so the
 * owner never overwrites data in use; the worker hashes without holding the lock. The
 * thread is named "fednet-hash" (top, perf, bench_net's CPU split). */
#define _GNU_SOURCE /* pthread_setname_np */
#include "net/hasher.h"

#include "core/alloc.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

/* Updates queued at most: with 1 MiB chunks the worker trails the receiver by at most
 * this many MiB, which is more than the credit window (8 chunks by default) needs. */
#define QUEUE 32

typedef struct job {
    fed__sha256 *sha;     /* digest to update */
    const uint8_t *data;  /* bytes to add */
    size_t len;           /* their number */
    atomic_uint *pending; /* owner's counter of updates not done yet */
} job;

struct fed__hasher {
    pthread_mutex_t mu;   /* guards the ring and stop */
    pthread_cond_t work;  /* the ring got a job, or stop was set */
    pthread_cond_t done;  /* the worker finished a job */
    pthread_t thread;     /* the worker */
    job ring[QUEUE];      /* queued jobs, the first at head (being hashed while count>0) */
    unsigned head, count; /* ring position and jobs in it */
    bool stop;            /* the owner is done: finish the ring and end */
};

static void *worker(void *arg) {
    fed__hasher *h = arg;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (h->count == 0 && !h->stop) pthread_cond_wait(&h->work, &h->mu);
        if (h->count == 0) break; /* stop, and nothing left */
        job j = h->ring[h->head];
        pthread_mutex_unlock(&h->mu);
        fed__sha256_update(j.sha, j.data, j.len);
        pthread_mutex_lock(&h->mu);
        h->head = (h->head + 1) % QUEUE;
        h->count--;
        atomic_fetch_sub(j.pending, 1);
        pthread_cond_broadcast(&h->done);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

fed_err fed__hasher_new(fed__hasher **out) {
    *out = NULL;
    fed__hasher *h = fed_calloc(1, sizeof *h);
    if (!h) return FED_ENOMEM;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->work, NULL);
    pthread_cond_init(&h->done, NULL);
    int r = pthread_create(&h->thread, NULL, worker, h);
    if (r != 0) {
        pthread_cond_destroy(&h->done);
        pthread_cond_destroy(&h->work);
        pthread_mutex_destroy(&h->mu);
        fed_free(h);
        return fed_errorf(FED_EINTERNAL, "digest thread: pthread_create: %s", strerror(r));
    }
    pthread_setname_np(h->thread, "fednet-hash"); /* for people and profilers only */
    *out = h;
    return FED_OK;
}

void fed__hasher_destroy(fed__hasher **hp) {
    fed__hasher *h = *hp;
    if (!h) return;
    *hp = NULL;
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_cond_signal(&h->work);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    pthread_cond_destroy(&h->done);
    pthread_cond_destroy(&h->work);
    pthread_mutex_destroy(&h->mu);
    fed_free(h);
}

void fed__hasher_add(fed__hasher *h, fed__sha256 *sha, const void *data, size_t len,
                     atomic_uint *pending) {
    pthread_mutex_lock(&h->mu);
    while (h->count == QUEUE) pthread_cond_wait(&h->done, &h->mu);
    h->ring[(h->head + h->count) % QUEUE] = (job){sha, data, len, pending};
    h->count++;
    atomic_fetch_add(pending, 1);
    pthread_cond_signal(&h->work);
    pthread_mutex_unlock(&h->mu);
}

void fed__hasher_wait(fed__hasher *h, atomic_uint *pending) {
    if (atomic_load(pending) == 0) return;
    pthread_mutex_lock(&h->mu);
    while (atomic_load(pending) != 0) pthread_cond_wait(&h->done, &h->mu);
    pthread_mutex_unlock(&h->mu);
}
