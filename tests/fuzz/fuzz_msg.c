/* libFuzzer target for the protocol decoder (proto/msg.h): any bytes either decode, with
 * the default limits, into a message that re-encodes and decodes again to the same type
 * and sequence number (and the re-encoding is then stable byte for byte), or fail with
 * FED_EPROTO. Never a crash, never a leak, never an over-read. */
#include "core/alloc.h"
#include "proto/msg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fed_msg a, b, c;
    fed_err err = fed_msg_decode(&a, data, size, NULL);
    if (err != FED_OK) {
        if (err != FED_EPROTO || a.type != FED_MSG_NONE) abort();
        return 0;
    }
    uint8_t *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;
    if (fed_msg_encode(&a, &buf, &len) != FED_OK) abort();
    if (fed_msg_packed_size(&a) != len) abort();
    if (fed_msg_decode(&b, buf, len, NULL) != FED_OK) abort();
    if (b.type != a.type || b.seq != a.seq || b.version != a.version) abort();
    if (fed_msg_encode(&b, &buf2, &len2) != FED_OK) abort();
    if (len2 != len || memcmp(buf, buf2, len) != 0) abort();
    if (fed_msg_decode(&c, buf2, len2, NULL) != FED_OK || c.type != a.type) abort();
    fed_msg_free(&a);
    fed_msg_free(&b);
    fed_msg_free(&c);
    fed_free(buf);
    fed_free(buf2);
    return 0;
}
