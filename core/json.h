/* cJSON through fedtune's allocation path, for every module that uses cJSON (core's
 * readers, the CLI's JSON output): routes cJSON's allocations through fed_malloc, so
 * JSON parsing is covered by the fail-the-Nth-allocation tests like everything else,
 * and tells a parse that failed for lack of memory from one that failed on bad input
 * (cJSON returns NULL for both). */
#ifndef FED_JSON_H
#define FED_JSON_H

#include <stdbool.h>

/* Installs the hooks once per process and clears this thread's out-of-memory flag;
 * call before each cJSON operation whose failure must be classified. */
void fed_json_hooks(void);
/* True if a cJSON allocation on this thread failed since the last fed_json_hooks. */
bool fed_json_oom(void);

#endif
