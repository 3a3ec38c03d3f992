/* A round's updates on disk: the store of the rules that need every update at once (a
 * coordinate-wise median, Krum's distances, a geometric median), so that the coordinator
 * holds O(model) + one block in RAM however many updates a round has.
 *
 * The store is one file, created in a folder (the checkpoint folder, or a temporary one)
 * and unlinked at once, so nothing is left behind by a crash; it is mapped shared and
 * grows by doubling. Its disk space is reserved (posix_fallocate) before a row is written
 * into the mapping, so a full disk is an error at fed_spill_add, never a SIGBUS (on a file
 * system without fallocate, such as some network ones, that guard is absent). Each row
 * (one update) starts on a page; after a row is written and after a block is read, its
 * pages are dropped from the mapping (MADV_DONTNEED: the page cache keeps them, the
 * process's resident set does not).
 *
 * Reading is by blocks of coordinates across all rows (fed_spill_gather), which is how
 * the rules work: a median per coordinate, partial dot products for distances. One thread
 * (the coordinator's event loop) drives it. */
#ifndef FED_COORDINATOR_SPILL_H
#define FED_COORDINATOR_SPILL_H

#include "core/err.h"

#include <stddef.h>

typedef struct fed_spill fed_spill;

/* A store of rows of n floats in a new unlinked file in dir (NULL or "": $TMPDIR, else
 * /tmp). FED_EINVAL for n == 0, FED_EIO naming the folder when the file cannot be made. */
fed_err fed_spill_new(fed_spill **out, const char *dir, size_t n) FED_MUST_USE;
/* NULL-safe; closes and unmaps; sets *sp to NULL. */
void fed_spill_destroy(fed_spill **sp);

/* Forgets the rows (the file keeps its size for the next round). */
void fed_spill_reset(fed_spill *sp);
/* Appends row d (n floats) with its weight and norm. FED_EIO when the disk is full
 * (nothing is added), FED_ENOMEM. */
fed_err fed_spill_add(fed_spill *sp, const float *d, double weight, double norm) FED_MUST_USE;

size_t fed_spill_rows(const fed_spill *sp);
size_t fed_spill_size(const fed_spill *sp); /* n */
double fed_spill_weight(const fed_spill *sp, size_t row);
double fed_spill_norm(const fed_spill *sp, size_t row);

/* The block length (in floats, a multiple of a page's floats) that keeps rows x block
 * within about 16 MiB, at least one page's floats and at most n rounded up. */
size_t fed_spill_block(const fed_spill *sp);
/* Copies elements [off, off + cnt) of every row into out (rows x cnt, row-major), then
 * drops the pages they lie on from the mapping (dropping is always safe: a page read again
 * comes back from the page cache or the file). cnt <= n - off. */
void fed_spill_gather(fed_spill *sp, size_t off, size_t cnt, float *out);

#endif
