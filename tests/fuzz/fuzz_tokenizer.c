/* libFuzzer target for the tokenizer: its vocabulary parser and its encoder. The first
 * two bytes give the length of the vocabulary part (modulo what is left); the rest is a
 * text. A vocabulary either parses or fails with FED_EFORMAT / FED_ERANGE; the text is
 * encoded with it (or, when it did not parse, with a small fixed vocabulary) and either
 * gives ids in [0, vocab size) that are never a reserved id but the unknown, at most
 * one per byte of NFKC text plus one, or fails with FED_EFORMAT (invalid UTF-8). The
 * canonical JSON of a parsed vocabulary parses again to the same JSON. */
#include "core/alloc.h"
#include "dataset/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fixed[] = "[[\"\\ufffd\",0],[\"<s>\",0],[\"</s>\",0],[\"r3\",0],[\"r4\",0],"
                            "[\"r5\",0],[\"\xe2\x96\x81\",-1],[\"a\",-2],[\"ab\",-1.5],"
                            "[\"\xf0\x9f\x98\x80\",-1],[\":)\",null]]";

static void check_roundtrip(const fed_tokenizer *t) {
    char *js = NULL, *js2 = NULL;
    fed_tokenizer *u = NULL;
    if (fed_tokenizer_to_json(t, &js)) abort();
    if (fed_tokenizer_parse(&u, js, strlen(js), "round trip")) abort();
    if (fed_tokenizer_to_json(u, &js2) || strcmp(js, js2) != 0) abort();
    fed_free(js);
    fed_free(js2);
    fed_tokenizer_destroy(&u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t rest = size - 2;
    size_t k = ((size_t)data[0] << 8 | data[1]) % (rest + 1);
    const char *vocab = (const char *)data + 2, *text = vocab + k;
    fed_tokenizer *t = NULL;
    fed_err err = fed_tokenizer_parse(&t, vocab, k, "fuzz");
    if (err == FED_OK) {
        check_roundtrip(t);
    } else {
        if (t || (err != FED_EFORMAT && err != FED_ERANGE)) abort();
        if (fed_tokenizer_parse(&t, fixed, strlen(fixed), "fixed")) abort();
    }
    size_t n = 0, cap = 4 * (rest - k) + 8; /* NFKC may grow text; what fits is checked */
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) abort();
    err = fed_tokenizer_encode(t, text, rest - k, ids, cap, &n);
    if (err == FED_OK) {
        size_t vs = fed_tokenizer_vocab_size(t), res = fed_tokenizer_reserved(t);
        int32_t unk = fed_tokenizer_unk(t);
        for (size_t i = 0; i < n && i < cap; i++)
            if (ids[i] < 0 || (size_t)ids[i] >= vs || ((size_t)ids[i] < res && ids[i] != unk))
                abort();
        for (size_t i = 1; i < n && i < cap; i++)
            if (ids[i] == unk && ids[i - 1] == unk) abort(); /* unknown runs are merged */
        if ((rest - k == 0) != (n == 0)) abort();
    } else if (err != FED_EFORMAT) {
        abort();
    }
    free(ids);
    fed_tokenizer_destroy(&t);
    return 0;
}
