/* Tests of GPT-2's byte-level BPE on tiny hand-made vocabularies (the 256 byte symbols
 * with id = byte, then a few merges), each expectation checked once against the
 * reference, gpt-3-encoder 1.1.4's Encoder.js run on the same two files: merge order by
 * rank, repeated merges, the comma-key aliases, contractions, runs of white space
 * (JavaScript's \s: U+00A0, U+FEFF, U+3000, U+2028 are spaces, U+0085 is not), digits,
 * non-ASCII letters; every kind of malformed encoder.json and vocab.bpe with its
 * message; invalid UTF-8 and absurd sizes; decoding and the byte-exact round trip; and
 * everything under fail-the-Nth-allocation. The comparison with the reference on GPT-2's
 * own files is tests/bpe_ref.sh. */
#include "core/alloc_internal.h"
#include "dataset/bpe.h"
#include "tests/test.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Appends the UTF-8 of GPT-2's byte-table character for byte v to o. */
static size_t table_char(int v, char *o) {
    int extra = 0, c = v;
    bool printable = (v >= '!' && v <= '~') || (v >= 0xa1 && v <= 0xac) || v >= 0xae;
    if (!printable) {
        for (int b = 0; b < v; b++)
            extra += !((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae);
        c = 256 + extra;
    }
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    o[0] = (char)(0xc0 | c >> 6);
    o[1] = (char)(0x80 | (c & 0x3f));
    return 2;
}

/* encoder.json: the byte symbols (id = byte, except `skip`, left out when >= 0) and then
 * the JSON-escaped extras (a string of ",\"sym\":id" pieces written by the caller). */
static char *encoder_of(const char *extra, int skip) {
    size_t cap = 8192 + strlen(extra);
    char *s = malloc(cap);
    size_t at = 0;
    s[at++] = '{';
    for (int v = 0; v < 256; v++) {
        if (v == skip) continue;
        if (at > 1) s[at++] = ',';
        s[at++] = '"';
        char ch[2];
        size_t n = table_char(v, ch);
        if (n == 1 && (ch[0] == '"' || ch[0] == '\\')) s[at++] = '\\';
        memcpy(s + at, ch, n);
        at += n;
        at += (size_t)snprintf(s + at, cap - at, "\":%d", v);
    }
    at += (size_t)snprintf(s + at, cap - at, "%s}", extra);
    return s;
}

static fed_bpe *bpe_of(const char *extra, const char *merges) {
    char *enc = encoder_of(extra, -1);
    fed_bpe *b = NULL;
    fed_err e =
        fed_bpe_parse(&b, enc, strlen(enc), "encoder.json", merges, strlen(merges), "vocab.bpe");
    if (e) fprintf(stderr, "  parse failed: %s\n", fed_errdetail(e));
    free(enc);
    return b;
}

/* Encodes text and compares the ids with want[0..n); then decodes them back. */
static void check_ids(const fed_bpe *b, const char *text, const int32_t *want, size_t n, int line) {
    int32_t got[64];
    size_t k = 0, len = strlen(text);
    fed_err e = fed_bpe_encode(b, text, len, got, 64, &k);
    if (e) {
        test_fail_(__FILE__, line);
        fprintf(stderr, "encode \"%s\": %s\n", text, fed_errdetail(e));
        return;
    }
    bool same = k == n;
    for (size_t i = 0; same && i < n; i++) same = got[i] == want[i];
    char *back = NULL;
    size_t blen = 0;
    if (same && fed_bpe_decode(b, got, k, &back, &blen) == FED_OK && blen == len &&
        memcmp(back, text, len) == 0) {
        test_passed_++;
        fed_free(back);
        return;
    }
    fed_free(back);
    test_fail_(__FILE__, line);
    fprintf(stderr, "encode \"%s\": got [", text);
    for (size_t i = 0; i < k && i < 64; i++) fprintf(stderr, i ? ",%d" : "%d", (int)got[i]);
    fprintf(stderr, "], expected [");
    for (size_t i = 0; i < n; i++) fprintf(stderr, i ? ",%d" : "%d", (int)want[i]);
    fprintf(stderr, "]%s\n", same ? " (equal, but the round trip differs)" : "");
}

#define CHECK_IDS(b, text, ...)                                                                    \
    do {                                                                                           \
        const int32_t w_[] = {__VA_ARGS__};                                                        \
        check_ids((b), (text), w_, sizeof w_ / sizeof w_[0], __LINE__);                            \
    } while (0)

#define V "#version: 0.2\n"

TEST(merge_order_by_rank) {
    fed_bpe *b = bpe_of(",\"bc\":256,\"ab\":257", V "b c\na b\n");
    CHECK(b != NULL);
    if (!b) return;
    CHECK_SIZE(fed_bpe_vocab_size(b), 258);
    CHECK_SIZE(fed_bpe_merges(b), 2);
    CHECK_IDS(b, "abc", 97, 256);
    CHECK_IDS(b, "ab", 257);
    CHECK_IDS(b, "cab", 99, 257);
    CHECK_IDS(b, "abab", 257, 257);
    CHECK_IDS(b, "bcbc", 256, 256);
    fed_bpe_destroy(&b);
    CHECK(b == NULL);
    fed_bpe_destroy(&b);
    b = bpe_of(",\"bc\":256,\"ab\":257", V "a b\nb c\n");
    CHECK(b != NULL);
    if (b) CHECK_IDS(b, "abc", 257, 99);
    if (b) CHECK_IDS(b, "aaa", 97, 97, 97);
    fed_bpe_destroy(&b);
}

TEST(repeated_merges) {
    /* "a a" merges left to right without overlaps, then "aa a". */
    fed_bpe *b = bpe_of(",\"aa\":256,\"aaa\":257", V "a a\naa a\n");
    CHECK(b != NULL);
    if (!b) return;
    CHECK_IDS(b, "aaaa", 256, 256);
    CHECK_IDS(b, "aaa", 257);
    CHECK_IDS(b, "aaaaa", 256, 257);
    fed_bpe_destroy(&b);
}

TEST(comma_key_alias) {
    /* ("\",", "\"") has no line, but its key "\",,\"" is that of line 2 ("\"", ",\""). */
    fed_bpe *b = bpe_of(",\"\\\",\":256,\",\\\"\":257,\"\\\",\\\"\":258", V "\" ,\n\" ,\"\n");
    CHECK(b != NULL);
    if (!b) return;
    CHECK_IDS(b, "\",\"", 258);
    CHECK_IDS(b, "\",\",\"", 256, 258);
    fed_bpe_destroy(&b);
}

TEST(contractions) {
    fed_bpe *b = bpe_of(",\"n'\":256,\"'t\":257,\"'S\":258,\"'l\":259,\"'ll\":260",
                        V "n '\n' t\n' S\n' l\n'l l\n");
    CHECK(b != NULL);
    if (!b) return;
    CHECK_IDS(b, "don't", 100, 111, 110, 257);
    CHECK_IDS(b, "I'll", 73, 260);
    CHECK_IDS(b, "'S", 39, 83);
    CHECK_IDS(b, "'st", 39, 115, 116);
    CHECK_IDS(b, "it's'", 105, 116, 39, 115, 39);
    fed_bpe_destroy(&b);
}

TEST(white_space) {
    fed_bpe *b = bpe_of(",\"ĠĠ\":256,\"Ġb\":257,\"Ġy\":258,\"ĠÂ\":259,\"Ġï\":260",
                        V "Ġ Ġ\nĠ b\nĠ y\nĠ Â\nĠ ï\n");
    CHECK(b != NULL);
    if (!b) return;
    CHECK_IDS(b, "a   b", 97, 256, 257); /* a run before a letter leaves it its last space */
    CHECK_IDS(b, "a  ", 97, 256);        /* a run at the end is one word */
    CHECK_IDS(b, "  b", 32, 257);
    CHECK_IDS(b, " ", 32);
    CHECK_IDS(b, "a b", 97, 257);
    CHECK_IDS(b, "\t\n b", 9, 10, 257);
    CHECK_IDS(b, "a \u3000b", 97, 32, 227, 128, 128, 98);
    CHECK_IDS(b, "x\u00a0 y", 120, 194, 160, 258);
    CHECK_IDS(b, "x \xc2\x85", 120, 259, 133);
    CHECK_IDS(b, "x \ufeff", 120, 260, 187, 191);
    CHECK_IDS(b, "x \u00a0", 120, 259, 160);
    CHECK_IDS(b, "x\ufeff", 120, 239, 187, 191);
    CHECK_IDS(b, "x \u00a0b", 120, 32, 194, 160, 98);
    CHECK_IDS(b, "x \ufeffb", 120, 32, 239, 187, 191, 98);
    CHECK_IDS(b,
              "x \xc2\x85"
              "b",
              120, 259, 133, 98); /* U+0085 is not JavaScript's \s */
    CHECK_IDS(b, "x \u3000b", 120, 32, 227, 128, 128, 98);
    CHECK_IDS(b, "x \u2028b", 120, 32, 226, 128, 168, 98);
    fed_bpe_destroy(&b);
}

TEST(digits_and_non_ascii) {
    fed_bpe *b = bpe_of(",\"Ġ1\":256,\"3a\":257,\"12\":258", V "Ġ 1\n3 a\n1 2\n");
    CHECK(b != NULL);
    if (b) {
        CHECK_IDS(b, " 123abc", 256, 50, 51, 97, 98, 99);
        CHECK_IDS(b, "a1", 97, 49);
        CHECK_IDS(b, "12\u06634", 258, 217, 163, 52); /* U+0663 is a digit (Nd) */
    }
    fed_bpe_destroy(&b);
    b = bpe_of(",\"ĠÃ\":256,\"ĠÃ©\":257", V "Ġ Ã\nĠÃ ©\n");
    CHECK(b != NULL);
    if (!b) return;
    CHECK_IDS(b, " \u00e9", 257);
    CHECK_IDS(b, "\u00e9 \u00e9", 195, 169, 257);
    CHECK_IDS(b, "\u4e2d ", 228, 184, 173, 32);
    CHECK_IDS(b, "\U0001F600!", 240, 159, 152, 128, 33);
    /* every byte value, NUL included, goes through and back */
    char all[256];
    for (int v = 0; v < 256; v++) all[v] = (char)(v < 128 ? v : 'a');
    int32_t ids[300];
    size_t n = 0;
    CHECK_OK(fed_bpe_encode(b, all, 128, ids, 300, &n));
    CHECK_SIZE(n, 128);
    for (size_t i = 0; i < n && i < 128; i++) CHECK_INT(ids[i], (int)i);
    int32_t every[256];
    for (int v = 0; v < 256; v++) every[v] = v;
    char *back = NULL;
    size_t blen = 0;
    CHECK_OK(fed_bpe_decode(b, every, 256, &back, &blen));
    CHECK_SIZE(blen, 256);
    for (size_t i = 0; back && i < blen; i++) CHECK_INT((unsigned char)back[i], (int)i);
    fed_free(back);
    fed_bpe_destroy(&b);
}

TEST(encode_limits_and_bad_text) {
    fed_bpe *b = bpe_of(",\"ab\":256", V "a b\n");
    CHECK(b != NULL);
    if (!b) return;
    int32_t ids[2];
    size_t n = 7;
    CHECK_OK(fed_bpe_encode(b, "ab cd ef", 8, ids, 2, &n)); /* 1 + 3 + 3 ids, 2 written */
    CHECK_SIZE(n, 7);
    CHECK_INT(ids[0], 256);
    CHECK_INT(ids[1], 32);
    CHECK_OK(fed_bpe_encode(b, "", 0, NULL, 0, &n));
    CHECK_SIZE(n, 0);
    CHECK_ERR(fed_bpe_encode(b, "ab\xff", 3, ids, 2, &n), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "invalid UTF-8 at byte 2");
    CHECK_ERR(fed_bpe_encode(b, "a\xc3", 2, ids, 2, &n), FED_EFORMAT); /* truncated */
    CHECK_CONTAINS(fed_errmsg(), "at byte 1");
    CHECK_ERR(fed_bpe_encode(b, "\xed\xa0\x80", 3, ids, 2, &n), FED_EFORMAT); /* surrogate */
    CHECK_ERR(fed_bpe_encode(b, "ab", FED_BPE_MAX_TEXT + 1, ids, 2, &n), FED_ERANGE);
    CHECK_SIZE(n, 0);
    /* a long word: the merge loop stays within the word */
    size_t len = 20000;
    char *big = malloc(len);
    memset(big, 'a', len);
    for (size_t i = 1; i < len; i += 2) big[i] = 'b';
    CHECK_OK(fed_bpe_encode(b, big, len, NULL, 0, &n));
    CHECK_SIZE(n, len / 2);
    free(big);
    /* decoding */
    char *text = (char *)1;
    size_t tl = 9;
    const int32_t bad[] = {97, 257};
    CHECK_ERR(fed_bpe_decode(b, bad, 2, &text, &tl), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "id 257 at 1 is not in [0, 257)");
    CHECK(text == NULL);
    const int32_t neg[] = {-1};
    CHECK_ERR(fed_bpe_decode(b, neg, 1, &text, &tl), FED_EINVAL);
    CHECK_OK(fed_bpe_decode(b, NULL, 0, &text, &tl));
    CHECK_SIZE(tl, 0);
    CHECK_STR(text, "");
    fed_free(text);
    fed_bpe_destroy(&b);
}

/* The parse fails with code and a message containing sub. */
static void check_fails(const char *enc, const char *merges, size_t mlen, fed_err code,
                        const char *sub, int line) {
    fed_bpe *b = (fed_bpe *)1;
    fed_err e = fed_bpe_parse(&b, enc, strlen(enc), "encoder.json", merges, mlen, "vocab.bpe");
    const char *msg = fed_errmsg();
    if (e == code && b == NULL && strstr(msg, sub)) {
        test_passed_++;
        return;
    }
    test_fail_(__FILE__, line);
    fprintf(stderr, "expected %s containing \"%s\", got %s: %s\n", fed_errname(code), sub,
            fed_errname(e), msg);
    if (!e) fed_bpe_destroy(&b);
}

#define CHECK_ENC_FAILS(extra, code, sub)                                                          \
    do {                                                                                           \
        char *e_ = encoder_of((extra), -1);                                                        \
        check_fails(e_, V, strlen(V), (code), (sub), __LINE__);                                    \
        free(e_);                                                                                  \
    } while (0)
#define CHECK_MERGES_FAIL(extra, merges, code, sub)                                                \
    do {                                                                                           \
        char *e_ = encoder_of((extra), -1);                                                        \
        check_fails(e_, (merges), strlen(merges), (code), (sub), __LINE__);                        \
        free(e_);                                                                                  \
    } while (0)

TEST(malformed_encoder) {
    check_fails("{", V, strlen(V), FED_EFORMAT, "encoder.json: not valid JSON", __LINE__);
    check_fails("", V, strlen(V), FED_EFORMAT, "encoder.json: not valid JSON", __LINE__);
    check_fails("[1,2]", V, strlen(V), FED_EFORMAT, "expected an object", __LINE__);
    check_fails("{\"a\":0}", V, strlen(V), FED_EFORMAT, "1 symbols, fewer than 256", __LINE__);
    check_fails("{\"a\":0} x", V, strlen(V), FED_EFORMAT, "not valid JSON", __LINE__);
    CHECK_ENC_FAILS(",\"ab\":1.5", FED_EFORMAT, "entry 256: the id must be an integer in [0, 257)");
    CHECK_ENC_FAILS(",\"ab\":\"256\"", FED_EFORMAT, "entry 256: the id must be an integer");
    CHECK_ENC_FAILS(",\"ab\":-1", FED_EFORMAT, "entry 256: the id must be");
    CHECK_ENC_FAILS(",\"ab\":257", FED_EFORMAT, "entry 256: the id must be");
    CHECK_ENC_FAILS(",\"ab\":null", FED_EFORMAT, "entry 256: the id must be");
    CHECK_ENC_FAILS(",\"ab\":5", FED_EFORMAT, "entry 256: id 5 appears twice");
    CHECK_ENC_FAILS(",\"ab\":256,\"ab\":257", FED_EFORMAT,
                    "entry 257: symbol \"ab\" appears twice");
    CHECK_ENC_FAILS(",\"a\":256", FED_EFORMAT, "entry 256: symbol \"a\" appears twice");
    CHECK_ENC_FAILS(",\"\":256", FED_EFORMAT, "entry 256: empty symbol");
    CHECK_ENC_FAILS(",\"a\\u00a0\":256", FED_EFORMAT, "entry 256: U+00A0 is not a character");
    CHECK_ENC_FAILS(",\"a\\u0200\":256", FED_EFORMAT, "entry 256: U+0200 is not a character");
    CHECK_ENC_FAILS(",\"a \":256", FED_EFORMAT, "entry 256: U+0020 is not a character");
    CHECK_ENC_FAILS(",\"a\xff\":256", FED_EFORMAT, "entry 256: invalid UTF-8 at byte 1");
    CHECK_ENC_FAILS(",\"a\xc3\":256", FED_EFORMAT, "entry 256: invalid UTF-8");
    CHECK_ENC_FAILS(",\"a\\u0000\":256", FED_EFORMAT, "\\u0000 at byte");
    char *longsym = malloc(FED_BPE_MAX_SYMBOL + 64);
    memcpy(longsym, ",\"", 2);
    memset(longsym + 2, 'a', FED_BPE_MAX_SYMBOL + 1);
    strcpy(longsym + 3 + FED_BPE_MAX_SYMBOL, "\":256");
    CHECK_ENC_FAILS(longsym, FED_ERANGE, "entry 256: symbol longer than 1024 bytes");
    free(longsym);
    /* a byte without its symbol (its id taken by another symbol) */
    char *e = encoder_of(",\"ab\":65", 'A');
    check_fails(e, V, strlen(V), FED_EFORMAT, "no symbol for byte 0x41 (U+0041)", __LINE__);
    free(e);
    e = encoder_of(",\"ab\":10", 10);
    check_fails(e, V, strlen(V), FED_EFORMAT, "no symbol for byte 0x0a (U+010A)", __LINE__);
    free(e);
}

TEST(malformed_merges) {
    const char *ab = ",\"ab\":256,\"abc\":257";
    CHECK_MERGES_FAIL(ab, "", FED_EFORMAT, "vocab.bpe: must end with a newline");
    CHECK_MERGES_FAIL(ab, V "a b", FED_EFORMAT, "vocab.bpe: must end with a newline");
    CHECK_MERGES_FAIL(ab, V "a\n", FED_EFORMAT, "vocab.bpe:2: expected 2 symbols, found 1");
    CHECK_MERGES_FAIL(ab, V "a b\na b c\n", FED_EFORMAT,
                      "vocab.bpe:3: expected 2 symbols, found 3");
    CHECK_MERGES_FAIL(ab, V "a b\n\n", FED_EFORMAT, "vocab.bpe:3: expected 2 symbols, found 0");
    CHECK_MERGES_FAIL(ab, V "a b\nab zz\n", FED_EFORMAT,
                      "vocab.bpe:3: \"zz\" is not a symbol of the encoder");
    CHECK_MERGES_FAIL(ab, V "b a\n", FED_EFORMAT,
                      "vocab.bpe:2: the merge's result \"ba\" is not in the encoder");
    CHECK_MERGES_FAIL(ab, V "a b\nab c\na  b\n", FED_EFORMAT,
                      "vocab.bpe:4: the pair of line 2 again");
    CHECK_MERGES_FAIL(ab, V "a b\nab\xff c\n", FED_EFORMAT,
                      "vocab.bpe:3: \"ab\xff\" is not a symbol");
    char *e = encoder_of(ab, -1);
    check_fails(e, V "a b\n\0", strlen(V) + 5, FED_EFORMAT, "vocab.bpe: a NUL byte", __LINE__);
    free(e);
    /* Two lines with the same comma key, "x,,,y", in the reference: the later rank would
     * serve both. */
    CHECK_MERGES_FAIL(",\",y\":256,\"x,\":257,\"x,y\":258,\",,y\":259,\"x,,y\":260",
                      V "x ,,y\nx, ,y\n", FED_EFORMAT,
                      "vocab.bpe:2: the reference's key \"x,,,y\" is also that of line 3");
    /* The key "a,b,c" of ("a,b", "c") also splits as ("a", "b,c"), which would make "ab,c". */
    CHECK_MERGES_FAIL(",\"a,b\":256,\"a,bc\":257,\"b,c\":258", V "a,b c\n", FED_EFORMAT,
                      "vocab.bpe:2: the reference's key \"a,b,c\" also merges \"a\" and "
                      "\"b,c\" into a symbol not in the encoder");
    /* ("!", "?,.") has no line but the key "!,?,." of line 2 ("!,?", "."), and its rank. */
    fed_bpe *b = bpe_of(",\"!,?\":256,\"!,?.\":257,\"?,\":258,\"?,.\":259,\"!?,.\":260",
                        V "!,? .\n? ,\n?, .\n");
    CHECK(b != NULL);
    if (b) CHECK_IDS(b, "!?,.", 260); /* without the alias: 33, 259 */
    if (b) CHECK_IDS(b, "!?,.!", 260, 33);
    fed_bpe_destroy(&b);
}

TEST(crlf_and_version_line) {
    /* the first line is skipped whatever it says; \r is white space */
    fed_bpe *b = bpe_of(",\"ab\":256", "anything at all\r\na b\r\n");
    CHECK(b != NULL);
    if (b) CHECK_IDS(b, "ab", 256);
    fed_bpe_destroy(&b);
    b = bpe_of("", V);
    CHECK(b != NULL);
    if (b) CHECK_SIZE(fed_bpe_merges(b), 0);
    if (b) CHECK_IDS(b, "ab", 97, 98);
    fed_bpe_destroy(&b);
}

TEST(allocation_failures) {
    char *enc = encoder_of(",\"ab\":256,\"\\\",\":257,\",\\\"\":258,\"\\\",\\\"\":259", -1);
    const char *merges = V "a b\n\" ,\n\" ,\"\n";
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_bpe *b = NULL;
        ALLOC_TRY(f, fed_bpe_parse(&b, enc, strlen(enc), "encoder.json", merges, strlen(merges),
                                   "vocab.bpe"));
        if (f.failed) CHECK(b == NULL);
        fed_bpe_destroy(&b);
    }
    fed_bpe *b = NULL;
    CHECK_OK(
        fed_bpe_parse(&b, enc, strlen(enc), "encoder.json", merges, strlen(merges), "vocab.bpe"));
    free(enc);
    if (!b) return;
    CHECK_IDS(b, "\",\" ab", 259, 32, 256);
    FOR_EACH_ALLOC_FAILURE(f) {
        int32_t ids[8];
        size_t n = 0;
        ALLOC_TRY(f, fed_bpe_encode(b, "\",\" ab", 6, ids, 8, &n));
        if (!f.failed) CHECK_SIZE(n, 3);
    }
    FOR_EACH_ALLOC_FAILURE(f) {
        const int32_t ids[] = {259, 32, 256};
        char *t = NULL;
        size_t n = 0;
        ALLOC_TRY(f, fed_bpe_decode(b, ids, 3, &t, &n));
        if (f.failed) CHECK(t == NULL);
        if (!f.failed) CHECK_MEM(t, "\",\" ab", 6);
        fed_free(t);
    }
    fed_bpe_destroy(&b);
}

TEST(load_names_the_files) {
    fed_bpe *b = (fed_bpe *)1;
    CHECK_ERR(fed_bpe_load(&b, "/nonexistent/encoder.json", "/nonexistent/vocab.bpe"), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "/nonexistent/encoder.json");
    CHECK(b == NULL);
}

int main(void) {
    RUN(merge_order_by_rank);
    RUN(repeated_merges);
    RUN(comma_key_alias);
    RUN(contractions);
    RUN(white_space);
    RUN(digits_and_non_ascii);
    RUN(encode_limits_and_bad_text);
    RUN(malformed_encoder);
    RUN(malformed_merges);
    RUN(crlf_and_version_line);
    RUN(allocation_failures);
    RUN(load_names_the_files);
    return test_report();
}
