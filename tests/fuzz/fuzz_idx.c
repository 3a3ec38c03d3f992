/* libFuzzer target for the IDX parser (and gzip inflation). The first two bytes give the
 * length of the images part (modulo what is left); the labels are the rest. Any input
 * either parses into images with pixels in [0, 1] and ids below num_classes <= 256, or
 * fails with FED_EFORMAT / FED_EUNSUPPORTED / FED_ERANGE. Never a crash, never an
 * allocation that the input's size does not justify. */
#include "dataset/dataset.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t rest = size - 2;
    size_t k = ((size_t)data[0] << 8 | data[1]) % (rest + 1);
    fed_dataset *d = NULL;
    fed_err err = fed_data_parse_idx(&d, data + 2, k, data + 2 + k, rest - k, "fuzz");
    if (err == FED_OK) {
        if (!d || d->n == 0 || d->num_classes == 0 || d->num_classes > 256) abort();
        if (d->shape.ndim != 1 && d->shape.ndim != 3) abort();
        for (size_t i = 0; i < d->n * d->dim; i++)
            if (!(d->x[i] >= 0.0f && d->x[i] <= 1.0f)) abort();
        for (size_t i = 0; i < d->n; i++)
            if (d->y[i] < 0 || (size_t)d->y[i] >= d->num_classes) abort();
        fed_data_destroy(&d);
    } else if (d || (err != FED_EFORMAT && err != FED_EUNSUPPORTED && err != FED_ERANGE)) {
        abort();
    }
    return 0;
}
