/* Which virtual sites to step next: an epoll set over the sites' ZeroMQ descriptors and
 * the workers' eventfd (sim/wake.h). */
#include "sim/wake.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define DONE_TAG UINT64_MAX /* the eventfd's epoll tag; sites are tagged by index */

struct fed__sim_wake {
    size_t n;
    int ep;            /* epoll set */
    int efd;           /* eventfd the workers write when a job ends */
    uint64_t *conn;    /* (n) connection whose descriptors are watched; 0: none */
    size_t *due, *cur; /* (n each) sites due next sweep; those handed out last */
    size_t ndue;
    uint32_t *stamp; /* (n) the sweep a site was last made due for */
    uint32_t sweep;
    int64_t last_full; /* when every site was last due (fed_now_ms) */
    pthread_mutex_t mu;
    size_t *ended; /* (n) sites whose job ended, from the workers; under mu */
    size_t nended;
};

static void make_due(fed__sim_wake *w, size_t i) {
    if (i >= w->n || w->stamp[i] == w->sweep) return;
    w->stamp[i] = w->sweep;
    w->due[w->ndue++] = i;
}

fed_err fed__sim_wake_new(fed__sim_wake **out, size_t n) {
    *out = NULL;
    fed__sim_wake *w = fed_calloc(1, sizeof *w);
    if (!w) return FED_ENOMEM;
    w->n = n;
    w->ep = w->efd = -1;
    w->sweep = 1;
    w->last_full = INT64_MIN / 2; /* the first sweep steps them all */
    if (pthread_mutex_init(&w->mu, NULL) != 0) {
        fed_free(w);
        return fed_errorf(FED_EINTERNAL, "sim: cannot make the wake set's lock");
    }
    *out = w;
    size_t m = n ? n : 1;
    if (!(w->conn = fed_calloc(m, sizeof *w->conn)) || !(w->due = fed_calloc(m, sizeof *w->due)) ||
        !(w->cur = fed_calloc(m, sizeof *w->cur)) ||
        !(w->stamp = fed_calloc(m, sizeof *w->stamp)) ||
        !(w->ended = fed_calloc(m, sizeof *w->ended)))
        return FED_ENOMEM;
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->ep < 0 || w->efd < 0)
        return fed_errorf(FED_EIO, "sim: cannot make an epoll set: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = DONE_TAG};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, w->efd, &ev) != 0)
        return fed_errorf(FED_EIO, "sim: cannot watch the workers' eventfd: %s", strerror(errno));
    return FED_OK;
}

void fed__sim_wake_destroy(fed__sim_wake **wp) {
    fed__sim_wake *w = *wp;
    if (!w) return;
    *wp = NULL;
    if (w->ep >= 0) close(w->ep);
    if (w->efd >= 0) close(w->efd);
    pthread_mutex_destroy(&w->mu);
    fed_free(w->conn);
    fed_free(w->due);
    fed_free(w->cur);
    fed_free(w->stamp);
    fed_free(w->ended);
    fed_free(w);
}

/* Watches the descriptors of site i's connection conn. A descriptor of an earlier
 * connection leaves the set when libzmq closes it; one that names a site falsely (the
 * number reused) only makes that site due once for nothing. */
static void watch(fed__sim_wake *w, size_t i, const int *fds, int k, uint64_t conn) {
    for (int j = 0; j < k; j++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i};
        int rc = epoll_ctl(w->ep, EPOLL_CTL_ADD, fds[j], &ev);
        if (rc != 0 && errno == EEXIST) rc = epoll_ctl(w->ep, EPOLL_CTL_MOD, fds[j], &ev);
        if (rc != 0) {
            /* Not watched: stepped every sweep instead (fed__sim_wake_after retries). */
            FED_LOG(FED_LOG_DEBUG, "sim: cannot watch site %zu's descriptor: %s", i,
                    strerror(errno));
            return;
        }
    }
    w->conn[i] = conn;
}

void fed__sim_wake_after(fed__sim_wake *w, size_t i, fed_site *s, bool busy) {
    int fds[2];
    uint64_t conn;
    int k = fed_site_wake_fds(s, fds, &conn);
    if (k > 0 && conn != w->conn[i]) watch(w, i, fds, k, conn);
    if (busy || (k > 0 && conn != w->conn[i])) make_due(w, i);
}

void fed__sim_wake_job_done(fed__sim_wake *w, size_t i) {
    pthread_mutex_lock(&w->mu);
    if (w->nended < w->n) w->ended[w->nended++] = i;
    pthread_mutex_unlock(&w->mu);
    uint64_t one = 1;
    if (write(w->efd, &one, sizeof one) != (ssize_t)sizeof one) {
        /* the counter is full (2^64 - 2 writes): it is readable anyway */
    }
}

size_t fed__sim_wake_next(fed__sim_wake *w, int wait_ms, const size_t **list) {
    int64_t now = fed_now_ms();
    int64_t to_full = w->last_full + FED__SIM_SWEEP_MS - now;
    int timeout = w->ndue ? 0 : wait_ms;
    if (to_full < timeout) timeout = to_full > 0 ? (int)to_full : 0;
    struct epoll_event evs[256];
    int k = epoll_wait(w->ep, evs, 256, timeout);
    for (int j = 0; j < k; j++) {
        if (evs[j].data.u64 != DONE_TAG) {
            make_due(w, (size_t)evs[j].data.u64);
            continue;
        }
        uint64_t v;
        if (read(w->efd, &v, sizeof v) < 0) { /* EAGAIN: another read took it */
        }
    }
    pthread_mutex_lock(&w->mu);
    for (size_t j = 0; j < w->nended; j++) make_due(w, w->ended[j]);
    w->nended = 0;
    pthread_mutex_unlock(&w->mu);
    size_t m = w->ndue;
    if (fed_now_ms() - w->last_full >= FED__SIM_SWEEP_MS) {
        w->last_full = fed_now_ms();
        for (size_t i = 0; i < w->n; i++) w->cur[i] = i;
        m = w->n;
    } else {
        memcpy(w->cur, w->due, m * sizeof *w->cur);
    }
    w->ndue = 0;
    if (++w->sweep == 0) w->sweep = 1; /* stamps of 0 mean never */
    *list = w->cur;
    return m;
}
