/* Tests of the chunk-buffer pool (net/pool.h): a keeping pool hands the same buffers out
 * again and holds them while idle; a releasing pool (fed_net_config.pool_release, the
 * simulator's sites) frees each buffer as it comes back, so an idle pool holds nothing;
 * both stop at max_bufs and wake the owner through the pipe when a buffer returns; a
 * closed pool lives until its last buffer is back. */
#include "tests/test.h"

#include "net/pool.h"

#include <poll.h>

static bool readable(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return fd >= 0 && poll(&p, 1, 0) == 1;
}

static void bounded_and_woken(bool release) {
    fed__pool *p = NULL;
    CHECK_OK(fed__pool_new(&p, 4096, 2, release));
    fed__buf *a = fed__pool_get(p), *b = fed__pool_get(p);
    CHECK(a && b && a != b);
    CHECK_SIZE(a->cap, 4096);
    CHECK_SIZE(fed__pool_allocated(p), 2);
    CHECK(fed__pool_get(p) == NULL); /* max_bufs out */
    CHECK(fed__pool_waiting(p));
    CHECK(fed__pool_fd(p) >= 0);
    CHECK(!readable(fed__pool_fd(p)));
    fed__buf_release(a);
    CHECK(readable(fed__pool_fd(p)));
    CHECK(!fed__pool_waiting(p));
    fed__pool_clear_signal(p);
    CHECK(!readable(fed__pool_fd(p)));
    CHECK_SIZE(fed__pool_allocated(p), release ? 1 : 2);
    fed__buf *c = fed__pool_get(p);
    CHECK(c != NULL);
    if (!release) CHECK(c == a); /* the kept buffer again */
    size_t in_use, peak, max;
    fed__pool_stats(p, &in_use, &peak, &max);
    CHECK_SIZE(in_use, 2);
    CHECK_SIZE(peak, 2);
    CHECK_SIZE(max, 2);
    fed__buf_release(b);
    fed__buf_release(c);
    fed__pool_stats(p, &in_use, &peak, &max);
    CHECK_SIZE(in_use, 0);
    CHECK_SIZE(fed__pool_allocated(p), release ? 0 : 2);
    /* Closed with a buffer out: it is freed when that one returns (ASan: no leak). */
    fed__buf *d = fed__pool_get(p);
    CHECK(d != NULL);
    fed__pool_close(&p);
    CHECK(p == NULL);
    fed__buf_release(d);
}

TEST(keeping_pool) {
    bounded_and_woken(false);
}

TEST(releasing_pool) {
    bounded_and_woken(true);
}

int main(void) {
    RUN(keeping_pool);
    RUN(releasing_pool);
    return test_report();
}
