/* libFuzzer target: libfedtune's config file reader (api/config.c) on arbitrary bytes:
 * any outcome but a crash, a leak or a sanitizer report is fine; a file it accepts must
 * also be accepted when read a second time into the same config. */
#define _POSIX_C_SOURCE 200809L /* fmemopen */

#include "api/api_internal.h"

#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fedtune_config *c = NULL;
    if (fedtune_config_new(&c)) return 0;
    FILE *f = size ? fmemopen((void *)data, size, "r") : NULL;
    if (f) {
        int rc = api_config_read(c, f, "fuzz.ini");
        if (rc == FEDTUNE_OK) {
            rewind(f);
            /* keys given twice across two reads are fine: each read has its own "seen" */
            if (api_config_read(c, f, "fuzz.ini") != FEDTUNE_OK) __builtin_trap();
        }
        fclose(f);
    }
    fedtune_config_free(&c);
    return 0;
}
