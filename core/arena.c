/* Arena blocks form a singly linked list; the head block is the one being filled. */
#include "core/arena.h"
#include "core/alloc.h"

#include <stdint.h>

typedef struct block {
    struct block *next;  /* older block, or NULL */
    size_t cap;          /* usable bytes in data */
    size_t used;         /* bytes handed out from data */
    unsigned char *data; /* FED_ALIGN-aligned storage */
} block;

struct fed_arena {
    block *head;       /* block being filled */
    size_t used_total; /* bytes handed out since the last reset, across blocks */
    size_t peak;       /* largest used_total seen: target size for the merged block */
};

static block *block_new(size_t cap) {
    block *b = fed_malloc(sizeof *b);
    if (!b) return NULL;
    b->data = fed_aligned_alloc(cap, 1);
    if (!b->data) {
        fed_free(b);
        return NULL;
    }
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    return b;
}

static void blocks_free(block *b) {
    while (b) {
        block *next = b->next;
        fed_free(b->data);
        fed_free(b);
        b = next;
    }
}

fed_err fed_arena_new(fed_arena **out, size_t initial_bytes) {
    *out = NULL;
    fed_arena *a = fed_calloc(1, sizeof *a);
    if (!a) return FED_ENOMEM;
    a->head = block_new(initial_bytes ? initial_bytes : (size_t)1 << 20);
    if (!a->head) {
        fed_free(a);
        return FED_ENOMEM;
    }
    *out = a;
    return FED_OK;
}

void fed_arena_destroy(fed_arena **a) {
    if (!a || !*a) return;
    blocks_free((*a)->head);
    fed_free(*a);
    *a = NULL;
}

static size_t round_up(size_t n) {
    return (n + (FED_ALIGN - 1)) & ~(size_t)(FED_ALIGN - 1);
}

void *fed_arena_alloc(fed_arena *a, size_t count, size_t size) {
    size_t n;
    if (!fed_mul_ok(count, size, &n) || n > SIZE_MAX - FED_ALIGN) {
        fed_errorf(FED_ENOMEM, "arena request of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    n = round_up(n ? n : 1);
    block *b = a->head;
    if (b->cap - b->used < n) {
        size_t cap = b->cap * 2 > n ? b->cap * 2 : n;
        block *nb = block_new(cap);
        if (!nb) return NULL;
        nb->next = b;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    a->used_total += n;
    if (a->used_total > a->peak) a->peak = a->used_total;
    return p;
}

float *fed_arena_floats(fed_arena *a, size_t count) {
    return fed_arena_alloc(a, count, sizeof(float));
}

void fed_arena_reset(fed_arena *a) {
    if (a->head->next) {
        /* Several blocks were needed: replace them by one that holds the peak. If that
         * allocation fails, keep the chain; it still works, just less compactly. */
        block *merged = block_new(a->peak);
        if (merged) {
            blocks_free(a->head);
            a->head = merged;
        } else {
            for (block *b = a->head; b; b = b->next) b->used = 0;
        }
    }
    a->head->used = 0;
    a->used_total = 0;
}

size_t fed_arena_used(const fed_arena *a) {
    return a->used_total;
}

size_t fed_arena_capacity(const fed_arena *a) {
    size_t cap = 0;
    for (const block *b = a->head; b; b = b->next) cap += b->cap;
    return cap;
}
