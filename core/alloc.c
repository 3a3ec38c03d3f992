/* Allocation wrappers and the fail-the-Nth-allocation hook. The hook costs one relaxed
 * atomic increment per allocation, which is noise next to malloc itself. */
#include "core/alloc_internal.h"
#include "core/err.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static atomic_long alloc_counter;
static atomic_long alloc_fail_nth;

void fed_alloc_fail_at(long nth) {
    atomic_store(&alloc_counter, 0);
    atomic_store(&alloc_fail_nth, nth);
}

long fed_alloc_count(void) {
    return atomic_load(&alloc_counter);
}

/* True when this allocation must fail because of the test hook. */
static bool injected_failure(void) {
    long n = atomic_fetch_add_explicit(&alloc_counter, 1, memory_order_relaxed) + 1;
    long nth = atomic_load_explicit(&alloc_fail_nth, memory_order_relaxed);
    return nth > 0 && n == nth;
}

static void *oom(size_t size) {
    fed_errorf(FED_ENOMEM, "out of memory allocating %zu bytes", size);
    return NULL;
}

bool fed_mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}

bool fed_add_ok(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return false;
    *out = a + b;
    return true;
}

void *fed_malloc(size_t size) {
    if (injected_failure()) return oom(size);
    void *p = malloc(size ? size : 1);
    return p ? p : oom(size);
}

void *fed_calloc(size_t count, size_t size) {
    size_t total;
    if (!fed_mul_ok(count, size, &total)) return oom(SIZE_MAX);
    if (injected_failure()) return oom(total);
    void *p = calloc(total ? total : 1, 1);
    return p ? p : oom(total);
}

void *fed_mallocarray(size_t count, size_t size) {
    size_t total;
    if (!fed_mul_ok(count, size, &total)) return oom(SIZE_MAX);
    return fed_malloc(total);
}

void *fed_realloc(void *ptr, size_t size) {
    if (injected_failure()) return oom(size);
    void *p = realloc(ptr, size ? size : 1);
    return p ? p : oom(size);
}

void *fed_aligned_alloc(size_t count, size_t size) {
    size_t total;
    if (!fed_mul_ok(count, size, &total)) return oom(SIZE_MAX);
    if (injected_failure()) return oom(total);
    void *p = NULL;
    if (posix_memalign(&p, FED_ALIGN, total ? total : 1) != 0) return oom(total);
    return p;
}

char *fed_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = fed_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

void fed_free(void *ptr) {
    free(ptr);
}
