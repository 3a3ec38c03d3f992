/* Internal to core/ and the tests: the allocation path's fault-injection hook (alloc.h).
 * tests/test.h drives it (FOR_EACH_ALLOC_FAILURE); no library or program outside core/
 * includes this header (checked by tests/internal_names.sh). */
#ifndef FED_ALLOC_INTERNAL_H
#define FED_ALLOC_INTERNAL_H

#include "core/alloc.h"

/* Test hook: the nth allocation from now fails (1 = the very next one); 0 disables.
 * Counts across all threads. */
void fed_alloc_fail_at(long nth);
/* Allocations attempted since the last fed_alloc_fail_at() call. */
long fed_alloc_count(void);

#endif
