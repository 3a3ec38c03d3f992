/* IDX files built in memory for the data tests (test_data_load.c, test_data_bytes.c): a
 * big-endian header (0, 0, type, rank, the dimensions) and the data bytes. */
#ifndef FED_TEST_IDX_H
#define FED_TEST_IDX_H

#include <stdint.h>
#include <string.h>

typedef struct bytes {
    unsigned char b[512];
    size_t n;
} bytes;

static inline void put_u32(bytes *o, uint32_t v) {
    o->b[o->n++] = (unsigned char)(v >> 24);
    o->b[o->n++] = (unsigned char)(v >> 16);
    o->b[o->n++] = (unsigned char)(v >> 8);
    o->b[o->n++] = (unsigned char)v;
}

static inline bytes idx_bytes(unsigned char type, int rank, const uint32_t *dims,
                              const unsigned char *data, size_t n) {
    bytes o = {{0, 0, type, (unsigned char)rank}, 4};
    for (int i = 0; i < rank; i++) put_u32(&o, dims[i]);
    memcpy(o.b + o.n, data, n);
    o.n += n;
    return o;
}

#endif
