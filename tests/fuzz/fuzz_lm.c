/* libFuzzer target for the language-model data side: the BPE trainer and LM windows. The
 * first byte gives the window length T (2..33) and the vocabulary (256 + 4 x its high
 * bits); the rest is a text file. The trainer either refuses it (FED_EFORMAT: invalid
 * UTF-8) or learns a tokenizer whose JSON parses back as a fed_tokenizer of kind "bpe"
 * and encodes the text to ids that decode to it byte for byte. The text is then read as
 * LM windows (plain text, or JSON lines when it starts with '{'): either FED_EFORMAT /
 * FED_ERANGE, or windows of T floats whose ids lie in [0, vocab) followed by -1 only. */
#include "core/alloc.h"
#include "dataset/bpe_train.h"
#include "dataset/text_lm.h"
#include "dataset/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t T = 2 + (data[0] & 31), vocab = 256 + 4 * (size_t)(data[0] >> 5);
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    fed_bpe_trainer *tr = NULL;
    char *json = NULL;
    size_t merges = 0;
    if (fed_bpe_trainer_new(&tr)) return 0;
    fed_err err = fed_bpe_trainer_add(tr, text, len);
    if (!err) err = fed_bpe_trainer_learn(tr, vocab, &json, &merges);
    fed_bpe_trainer_destroy(&tr);
    if (err) {
        if (err != FED_EFORMAT || json) abort();
        return 0;
    }
    fed_tokenizer *tok = NULL;
    if (fed_tokenizer_parse(&tok, json, strlen(json), "learned") ||
        strcmp(fed_tokenizer_kind(tok), "bpe") != 0 ||
        fed_tokenizer_vocab_size(tok) != 256 + merges)
        abort();
    fed_free(json);
    size_t n = 0;
    int32_t *ids = len ? malloc(len * sizeof *ids) : NULL;
    if (fed_tokenizer_encode(tok, text, len, ids, len, &n) || n > len) abort();
    char *back = NULL;
    size_t blen = 0;
    if (fed_tokenizer_decode(tok, ids, n, &back, &blen) || blen != len ||
        (len && memcmp(back, text, len) != 0))
        abort();
    fed_free(back);
    free(ids);
    fed_dataset *d = NULL;
    err = fed_data_parse_text_lm(&d, text, len, len && text[0] == '{' ? "f.jsonl" : "f.txt", tok, T,
                                 NULL);
    if (!err) {
        if (!d || d->dim != T || d->num_classes != 1) abort();
        for (size_t i = 0; i < d->n; i++) {
            const float *row = d->x + i * T;
            size_t j = 0;
            while (j < T && row[j] >= 0.0f) {
                if (row[j] >= (float)fed_tokenizer_vocab_size(tok)) abort();
                j++;
            }
            if (j < 2) abort();
            for (; j < T; j++)
                if (row[j] != -1.0f) abort();
        }
        fed_data_destroy(&d);
    } else if (d || (err != FED_EFORMAT && err != FED_ERANGE)) {
        abort();
    }
    fed_tokenizer_destroy(&tok);
    return 0;
}
