/* libFuzzer target for the text data loader (CSV and JSON lines) with a small fixed
 * vocabulary. The first byte picks the sequence length (1..16), the format (auto, CSV,
 * JSON lines) and drop_empty; the rest is the file. Any input either loads into rows of
 * ids in [0, vocab size) followed only by -1 padding, with labels below num_classes and
 * consistent statistics, or fails with FED_EFORMAT / FED_ERANGE. */
#include "dataset/text.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char vocab[] = "[[\"\\ufffd\",0],[\"<s>\",0],[\"</s>\",0],[\"r3\",0],[\"r4\",0],"
                            "[\"r5\",0],[\"\xe2\x96\x81\",-1],[\"a\",-2],[\"ab\",-1.5],"
                            "[\"\xe2\x96\x81\x61\x62\",-1],[\",\",-2],[\"\\\"\",-2]]";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static fed_tokenizer *tok;
    if (!tok && fed_tokenizer_parse(&tok, vocab, strlen(vocab), "vocab")) abort();
    if (size < 1) return 0;
    size_t T = (size_t)(data[0] & 15) + 1;
    fed_text_options o = {(fed_text_format)((data[0] >> 4) % 3), (data[0] & 0x40) != 0, NULL, 0};
    fed_dataset *d = NULL;
    fed_text_stats st;
    const char *what = (data[0] & 0x80) ? "fuzz.jsonl" : "fuzz.csv";
    fed_err err = fed_data_parse_text(&d, (const char *)data + 1, size - 1, what, tok, T, &o, &st);
    if (err == FED_OK) {
        size_t vs = fed_tokenizer_vocab_size(tok);
        if (!d || d->n == 0 || d->dim != T || d->num_classes == 0) abort();
        if (st.examples != d->n || st.rows != d->n + st.dropped_empty) abort();
        for (size_t i = 0; i < d->n; i++) {
            const float *row = d->x + i * T;
            size_t j = 0;
            while (j < T && row[j] >= 0.0f) {
                if (row[j] != (float)(size_t)row[j] || (size_t)row[j] >= vs) abort();
                j++;
            }
            if (j == 0) abort(); /* a kept text has at least one id */
            for (; j < T; j++)
                if (row[j] != -1.0f) abort();
            if (d->y[i] < 0 || (size_t)d->y[i] >= d->num_classes) abort();
        }
        fed_data_destroy(&d);
    } else if (d || (err != FED_EFORMAT && err != FED_ERANGE)) {
        abort();
    }
    return 0;
}
