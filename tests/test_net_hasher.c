/* Tests of the digest worker (net/hasher.h): updates of several digests queued
 * interleaved, many more than its queue holds, give the digests of the bytes in the order
 * they were queued; waiting on one transfer's counter returns with all of its updates
 * done, other transfers' work may still run; destroying the worker finishes what is
 * queued; empty updates count too. The channel tests run whole transfers with the worker
 * forced on and off (test_net_transfer, test_net_badpeer). */
#include "tests/test.h"

#include "core/alloc.h"
#include "net/hasher.h"

#include <stdint.h>

#define PARTS 200 /* updates per digest: far more than the queue holds */
#define PART  4099

static void fill(uint8_t *buf, size_t n, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        buf[i] = (uint8_t)(x >> 24);
    }
}

static void final_of(fed__sha256 *h, uint8_t out[FED_SHA256_LEN]) {
    fed__sha256_final(h, out);
}

TEST(interleaved_digests_in_order) {
    enum { N = 3 };
    size_t len = (size_t)PARTS * PART;
    uint8_t *data[N], want[N][FED_SHA256_LEN], got[FED_SHA256_LEN];
    fed__sha256 *sha[N];
    atomic_uint pending[N];
    fed__hasher *h = NULL;
    CHECK_OK(fed__hasher_new(&h));
    for (int k = 0; k < N; k++) {
        data[k] = fed_malloc(len);
        fill(data[k], len, (uint32_t)k + 1);
        fed_sha256(data[k], len, want[k]);
        CHECK_OK(fed__sha256_new(&sha[k]));
        atomic_init(&pending[k], 0);
    }
    /* Uneven pieces (one of them empty) so order matters: a swap changes the digest. */
    for (int i = 0; i < PARTS; i++)
        for (int k = 0; k < N; k++) {
            size_t off = (size_t)i * PART, n = PART;
            if (k == 1 && i % 2 == 0) n = PART - 1000;
            if (k == 1 && i % 2 == 1) {
                off -= 1000;
                n = PART + 1000;
            }
            if (k == 2 && i == 7) fed__hasher_add(h, sha[k], data[k] + off, 0, &pending[k]);
            fed__hasher_add(h, sha[k], data[k] + off, n, &pending[k]);
        }
    fed__hasher_wait(h, &pending[0]);
    CHECK_INT(atomic_load(&pending[0]), 0);
    final_of(sha[0], got);
    CHECK_MEM(got, want[0], FED_SHA256_LEN);
    fed__hasher_wait(h, &pending[1]);
    CHECK_INT(atomic_load(&pending[1]), 0);
    final_of(sha[1], got);
    CHECK_MEM(got, want[1], FED_SHA256_LEN);
    /* Destroying the worker finishes digest 2's queued updates first. */
    fed__hasher_destroy(&h);
    CHECK(h == NULL);
    CHECK_INT(atomic_load(&pending[2]), 0);
    final_of(sha[2], got);
    CHECK_MEM(got, want[2], FED_SHA256_LEN);
    fed__hasher_destroy(&h); /* NULL-safe */
    for (int k = 0; k < N; k++) {
        fed__sha256_destroy(&sha[k]);
        fed_free(data[k]);
    }
}

TEST(wrong_order_gives_another_digest) {
    /* What the in-order guarantee protects: the same parts swapped hash differently. */
    uint8_t buf[2 * PART], want[FED_SHA256_LEN], got[FED_SHA256_LEN];
    fill(buf, sizeof buf, 9);
    fed_sha256(buf, sizeof buf, want);
    fed__hasher *h = NULL;
    fed__sha256 *sha = NULL;
    atomic_uint pending;
    atomic_init(&pending, 0);
    CHECK_OK(fed__hasher_new(&h));
    CHECK_OK(fed__sha256_new(&sha));
    fed__hasher_add(h, sha, buf + PART, PART, &pending);
    fed__hasher_add(h, sha, buf, PART, &pending);
    fed__hasher_wait(h, &pending);
    final_of(sha, got);
    CHECK(memcmp(got, want, sizeof got) != 0);
    fed__sha256_destroy(&sha);
    CHECK_OK(fed__sha256_new(&sha));
    fed__hasher_add(h, sha, buf, PART, &pending);
    fed__hasher_add(h, sha, buf + PART, PART, &pending);
    fed__hasher_wait(h, &pending);
    final_of(sha, got);
    CHECK_MEM(got, want, sizeof got);
    fed__hasher_wait(h, &pending); /* nothing pending: returns at once */
    fed__sha256_destroy(&sha);
    fed__hasher_destroy(&h);
}

TEST(constructor_under_alloc_failures) {
    FOR_EACH_ALLOC_FAILURE(f) {
        fed__hasher *h = NULL;
        ALLOC_TRY(f, fed__hasher_new(&h));
        CHECK(f.failed ? h == NULL : h != NULL);
        fed__hasher_destroy(&h);
    }
}

int main(void) {
    RUN(interleaved_digests_in_order);
    RUN(wrong_order_gives_another_digest);
    RUN(constructor_under_alloc_failures);
    return test_report();
}
