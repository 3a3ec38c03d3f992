/* libFuzzer target for the strict ustar reader (models/tar.h). Any input either parses
 * into regular files whose bytes lie inside the input, with unique non-empty names, or
 * fails with FED_EFORMAT / FED_EUNSUPPORTED. Never a crash, never a read outside it. */
#include "models/tar.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fed_tar *t = NULL;
    fed_err err = fed_tar_parse(&t, data, size, "fuzz");
    if (err == FED_OK) {
        for (size_t i = 0; i < fed_tar_count(t); i++) {
            const fed_tar_entry *e = fed_tar_at(t, i);
            if (!e->name[0] || e->data < data || e->size > size ||
                (size_t)(e->data - data) > size - e->size)
                abort();
            if (fed_tar_find(t, e->name) != e) abort();
        }
        fed_tar_destroy(&t);
    } else if (t || (err != FED_EFORMAT && err != FED_EUNSUPPORTED)) {
        abort();
    }
    return 0;
}
