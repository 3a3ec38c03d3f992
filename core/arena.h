/* A bump allocator for per-step scratch memory (activations, saved-for-backward
 * buffers, im2col columns). Allocations are FED_ALIGN-aligned and live until the next
 * fed_arena_reset(). The first steps may grow it through extra blocks; a reset then
 * merges them into one block big enough for the whole step, so in steady state a
 * training step performs no allocation at all. */
#ifndef FED_ARENA_H
#define FED_ARENA_H

#include "core/err.h"

#include <stddef.h>

typedef struct fed_arena fed_arena;

/* A new arena whose first block holds at least initial_bytes (0 picks 1 MiB). */
fed_err fed_arena_new(fed_arena **out, size_t initial_bytes) FED_MUST_USE;
/* NULL-safe; sets *a to NULL. */
void fed_arena_destroy(fed_arena **a);
/* count*size bytes, FED_ALIGN-aligned, uninitialised; NULL (with a FED_ENOMEM detail)
 * on overflow or exhaustion. */
void *fed_arena_alloc(fed_arena *a, size_t count, size_t size);
/* As fed_arena_alloc, for floats. */
float *fed_arena_floats(fed_arena *a, size_t count);
/* Frees every allocation at once; keeps (and merges) the memory for reuse. */
void fed_arena_reset(fed_arena *a);
/* Bytes handed out since the last reset. */
size_t fed_arena_used(const fed_arena *a);
/* Bytes held in blocks. */
size_t fed_arena_capacity(const fed_arena *a);

#endif
