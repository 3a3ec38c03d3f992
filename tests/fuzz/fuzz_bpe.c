/* libFuzzer target for GPT-2's BPE: its encoder.json and vocab.bpe parsers, the encoder
 * and the decoder. The first two bytes give the length of a part (modulo what is left)
 * that is parsed twice: as encoder.json (with an empty vocab.bpe) and as vocab.bpe (with
 * a fixed encoder: the 256 byte symbols, id = byte, then "ab", "\",", ",\"", "\",\"",
 * "Ġt", "Ġth"). Each either parses or fails with FED_EFORMAT / FED_ERANGE. The rest is a
 * text, encoded with the merges when they parsed (else with none): either FED_EFORMAT
 * (invalid UTF-8) or at most one id per byte, each in [0, vocab size), that decode back
 * to the text byte for byte. */
#include "core/alloc.h"
#include "dataset/bpe.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char encoder[8192];

/* The fixed encoder.json (built once). */
static void build_encoder(void) {
    size_t at = 0;
    encoder[at++] = '{';
    int extra = 0;
    for (int v = 0; v < 256; v++) {
        bool printable = (v >= '!' && v <= '~') || (v >= 0xa1 && v <= 0xac) || v >= 0xae;
        int c = printable ? v : 256 + extra++;
        at += (size_t)snprintf(encoder + at, sizeof encoder - at, "%s\"\\u%04x\":%d", v ? "," : "",
                               c, v);
    }
    snprintf(encoder + at, sizeof encoder - at,
             ",\"ab\":256,\"\\\",\":257,\",\\\"\":258,\"\\\",\\\"\":259,\"\\u0120t\":260,"
             "\"\\u0120th\":261}");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!encoder[0]) build_encoder();
    if (size < 2) return 0;
    size_t rest = size - 2;
    size_t k = ((size_t)data[0] << 8 | data[1]) % (rest + 1);
    const char *part = (const char *)data + 2, *text = part + k;
    static const char none[] = "#version: 0.2\n";
    fed_bpe *b = NULL;
    fed_err err = fed_bpe_parse(&b, part, k, "fuzz", none, strlen(none), "none");
    if (err != FED_OK && (b || (err != FED_EFORMAT && err != FED_ERANGE))) abort();
    fed_bpe_destroy(&b);
    err = fed_bpe_parse(&b, encoder, strlen(encoder), "encoder", part, k, "fuzz");
    if (err != FED_OK) {
        if (b || (err != FED_EFORMAT && err != FED_ERANGE)) abort();
        if (fed_bpe_parse(&b, encoder, strlen(encoder), "encoder", none, strlen(none), "none"))
            abort();
    }
    size_t n = 0, len = rest - k, vs = fed_bpe_vocab_size(b);
    int32_t *ids = malloc((len + 1) * sizeof *ids);
    if (!ids) abort();
    err = fed_bpe_encode(b, text, len, ids, len + 1, &n);
    if (err == FED_OK) {
        if (n > len) abort();
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || (size_t)ids[i] >= vs) abort();
        char *back = NULL;
        size_t blen = 0;
        if (fed_bpe_decode(b, ids, n, &back, &blen)) abort();
        if (blen != len || memcmp(back, text, len) != 0) abort();
        fed_free(back);
    } else if (err != FED_EFORMAT) {
        abort();
    }
    free(ids);
    fed_bpe_destroy(&b);
    return 0;
}
