/* libFuzzer target for the update codecs' decoder (core/codec.h). The first two bytes
 * give n, the floats the caller expects (modulo 4 096); the stream is the rest. Any input
 * either decodes into n finite floats, which the codec the header names encodes again
 * into a stream of the same length that decodes, or fails with FED_EFORMAT. Never a
 * crash, never a read outside the stream. */
#include "core/alloc.h"
#include "core/codec.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t n = ((size_t)data[0] << 8 | data[1]) % 4096;
    float *y = fed_mallocarray(n ? n : 1, sizeof *y);
    if (!y) return 0;
    fed_codec c;
    fed_err err = fed_codec_decode(data + 2, size - 2, y, n, &c);
    if (err == FED_OK) {
        for (size_t i = 0; i < n; i++)
            if (!isfinite(y[i])) abort();
        if (c.id != FED_CODEC_TOPK) { /* the same codec makes a stream of the same size */
            size_t len = fed_codec_size(&c, n);
            uint8_t *b = fed_malloc(len);
            if (len != size - 2) abort();
            err = b ? fed_codec_encode(&c, y, n, 1, b, len, NULL) : FED_ENOMEM;
            if (err == FED_OK && fed_codec_decode(b, len, y, n, NULL) != FED_OK) abort();
            if (err != FED_OK && err != FED_ERANGE && err != FED_ENOMEM) abort();
            fed_free(b);
        }
    } else if (err != FED_EFORMAT) {
        abort();
    }
    fed_free(y);
    return 0;
}
