/* The one allocation path of fedtune, with overflow-checked sizes and a test hook that
 * makes the Nth allocation fail (core/alloc_internal.h, for tests only), so constructors
 * can be proven leak-free and crash-free under memory exhaustion (as curl and sqlite do).
 *
 * Every allocation in fedtune libraries goes through these functions; memory from any of
 * them is released with fed_free(). A failed allocation returns NULL and records a
 * FED_ENOMEM detail (see err.h). Nothing here is a pool or an arena: see arena.h. */
#ifndef FED_ALLOC_H
#define FED_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

/* Alignment of fed_aligned_alloc blocks: a cache line, enough for AVX-512 loads. */
#define FED_ALIGN 64

void *fed_malloc(size_t size);
/* Zeroed; NULL if count*size overflows. */
void *fed_calloc(size_t count, size_t size);
/* Uninitialised count*size bytes; NULL if the product overflows. */
void *fed_mallocarray(size_t count, size_t size);
/* As realloc(); on failure the old block is untouched and still owned by the caller. */
void *fed_realloc(void *ptr, size_t size);
/* FED_ALIGN-aligned, uninitialised count*size bytes; NULL if the product overflows. */
void *fed_aligned_alloc(size_t count, size_t size);
char *fed_strdup(const char *s);
/* NULL-safe. */
void fed_free(void *ptr);

/* a*b into *out; false (and *out untouched) if it overflows size_t. */
bool fed_mul_ok(size_t a, size_t b, size_t *out);
/* a+b into *out; false (and *out untouched) if it overflows size_t. */
bool fed_add_ok(size_t a, size_t b, size_t *out);

#endif
