/* Little-endian integers in byte buffers, whatever the host's byte order: the one set of
 * helpers every wire and file format of the project uses (safetensors' header length and
 * tensors, the network's frame lengths, the secure-aggregation messages and their key
 * derivation, the identity blob). Loads read exactly n bytes at p; stores write them and
 * return p + n so a writer can chain them. No alignment is assumed. Big-endian formats
 * (the IDX files of MNIST) read their own bytes where they are parsed. */
#ifndef FED_ENDIAN_H
#define FED_ENDIAN_H

#include <stdint.h>

static inline uint16_t fed_load_le16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t fed_load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t fed_load_le64(const uint8_t *p) {
    return (uint64_t)fed_load_le32(p) | (uint64_t)fed_load_le32(p + 4) << 32;
}

static inline uint8_t *fed_store_le16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static inline uint8_t *fed_store_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
    return p + 4;
}

static inline uint8_t *fed_store_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}

#endif
