/* Tests of the unigram tokenizer on tiny hand-made vocabularies, each expectation checked
 * once against USE-lite's JavaScript tokenizer (tests/tools/use_tokenize.js's package):
 * the Viterbi choice, ties, the "best == 0 is unset" rule, unknown runs, the unknown
 * piece's length as its backtracking step, reserved pieces, the UTF-16 step of pieces
 * above U+FFFF, duplicate pieces, NFKC and the spaces; malformed vocabularies of every
 * kind with their messages; invalid UTF-8 in text; the canonical JSON form; a long text;
 * and everything under fail-the-Nth-allocation. The comparison with the reference on
 * the real vocabulary is tests/tokenizer_ref.sh. */
#include "core/alloc_internal.h"
#include "dataset/tokenizer.h"
#include "tests/test.h"

#include <stdint.h>
#include <stdlib.h>

/* The reserved pieces of USE-lite ("\uFFFD" is the unknown, id 0) and a variant whose
 * unknown piece "<unk>" is five UTF-16 units long. */
#define RESERVED_USE  "[\"\\ufffd\",0],[\"<s>\",0],[\"</s>\",0],[\"r3\",0],[\"r4\",0],[\"r5\",0]"
#define RESERVED_LONG "[\"<unk>\",0],[\"<s>\",0],[\"</s>\",0],[\"r3\",0],[\"r4\",0],[\"r5\",0]"

static fed_tokenizer *tok_of(const char *json) {
    fed_tokenizer *t = NULL;
    fed_err e = fed_tokenizer_parse(&t, json, strlen(json), "vocab.json");
    if (e) fprintf(stderr, "  parse failed: %s\n", fed_errdetail(e));
    return t;
}

/* Encodes text and compares the ids with want[0..n). */
static void check_ids(const fed_tokenizer *t, const char *text, const int32_t *want, size_t n,
                      int line) {
    int32_t got[64];
    size_t k = 0;
    fed_err e = fed_tokenizer_encode(t, text, strlen(text), got, 64, &k);
    if (e) {
        test_fail_(__FILE__, line);
        fprintf(stderr, "encode \"%s\": %s\n", text, fed_errdetail(e));
        return;
    }
    bool same = k == n;
    for (size_t i = 0; same && i < n; i++) same = got[i] == want[i];
    if (same) {
        test_passed_++;
        return;
    }
    test_fail_(__FILE__, line);
    fprintf(stderr, "encode \"%s\": got [", text);
    for (size_t i = 0; i < k && i < 64; i++) fprintf(stderr, i ? ",%d" : "%d", (int)got[i]);
    fprintf(stderr, "], expected [");
    for (size_t i = 0; i < n; i++) fprintf(stderr, i ? ",%d" : "%d", (int)want[i]);
    fprintf(stderr, "]\n");
}

#define CHECK_IDS(t, text, ...)                                                                    \
    do {                                                                                           \
        const int32_t w_[] = {__VA_ARGS__};                                                        \
        check_ids((t), (text), w_, sizeof w_ / sizeof w_[0], __LINE__);                            \
    } while (0)

/* The parse fails with code and a message containing sub. */
#define CHECK_VOCAB_FAILS(json, code, sub)                                                         \
    do {                                                                                           \
        fed_tokenizer *t_ = (fed_tokenizer *)1;                                                    \
        const char *j_ = (json);                                                                   \
        CHECK_ERR(fed_tokenizer_parse(&t_, j_, strlen(j_), "vocab.json"), (code));                 \
        CHECK(t_ == NULL);                                                                         \
        CHECK_CONTAINS(fed_errmsg(), (sub));                                                       \
    } while (0)

TEST(viterbi_choice) {
    /* "ab" is "▁ a b": "▁ab" (-2.5) beats "▁a"+"b" (-3) ... */
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"▁a\",-1],[\"b\",-2],[\"▁ab\",-2.5],"
                              "[\"▁\",-3],[\"a\",-4]]");
    CHECK(t != NULL);
    if (t) CHECK_IDS(t, "ab", 8);
    fed_tokenizer_destroy(&t);
    /* ... and loses to them at -3.5. */
    t = tok_of("[" RESERVED_USE ",[\"▁a\",-1],[\"b\",-2],[\"▁ab\",-3.5],[\"▁\",-3],[\"a\",-4]]");
    CHECK(t != NULL);
    if (t) CHECK_IDS(t, "ab", 6, 7);
    CHECK(fed_tokenizer_vocab_size(t) == 11);
    CHECK_SIZE(fed_tokenizer_reserved(t), 6);
    CHECK_INT(fed_tokenizer_unk(t), 0);
    CHECK_STR(fed_tokenizer_piece(t, 8), "▁ab");
    CHECK_STR(fed_tokenizer_piece(t, 0), "\xef\xbf\xbd");
    CHECK(fed_tokenizer_piece(t, 11) == NULL);
    CHECK(fed_tokenizer_piece(t, -1) == NULL);
    fed_tokenizer_destroy(&t);
    fed_tokenizer_destroy(&t); /* NULL-safe */
}

TEST(ties_go_to_the_later_start) {
    /* "▁"+"ab" and "▁a"+"b" both sum to -2 at the end; the candidate from the later start
     * ("b" at 2) replaces the earlier ("ab" at 1). */
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"▁\",-1],[\"▁a\",-1],[\"ab\",-1],[\"b\",-1]]");
    CHECK(t != NULL);
    if (t) CHECK_IDS(t, "ab", 7, 9);
    fed_tokenizer_destroy(&t);
}

TEST(a_best_of_zero_counts_as_unset) {
    /* "▁x" scores 0, so the best at its end is exactly 0 and the worse "▁"+"x" (-2)
     * replaces it, as in the reference. */
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"▁x\",0],[\"x\",-1],[\"▁\",-1]]");
    CHECK(t != NULL);
    if (t) CHECK_IDS(t, "x", 8, 7);
    fed_tokenizer_destroy(&t);
    /* A null score is 0 too. */
    t = tok_of("[" RESERVED_USE ",[\"▁x\",null],[\"x\",-1],[\"▁\",-1]]");
    CHECK(t != NULL);
    if (t) CHECK_IDS(t, "x", 8, 7);
    fed_tokenizer_destroy(&t);
}

TEST(unknown_runs_collapse) {
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"▁\",-1],[\"a\",-1],[\"▁a\",-1.5]]");
    CHECK(t != NULL);
    if (!t) return;
    CHECK_IDS(t, "qq a", 6, 0, 8);
    CHECK_IDS(t, "\xf0\x93\x80\x80\xf0\x93\x80\x81 a", 6, 0, 8); /* two hieroglyphs */
    CHECK_IDS(t, "q\xf0\x93\x80\x80q", 6, 0);
    CHECK_IDS(t, "a q a", 8, 6, 0, 8);
    /* The replacement character is the unknown piece's text, but reserved: unknown. */
    CHECK_IDS(t, "\xef\xbf\xbd", 6, 0);
    fed_tokenizer_destroy(&t);
}

TEST(the_unknown_piece_length_is_its_step) {
    /* With "<unk>" as the unknown piece, backtracking over an unknown steps back five. */
    fed_tokenizer *t = tok_of("[" RESERVED_LONG ",[\"▁\",-1],[\"a\",-1]]");
    CHECK(t != NULL);
    if (!t) return;
    CHECK_IDS(t, "qa", 0, 7);
    CHECK_IDS(t, "aq", 0);
    CHECK_IDS(t, "q", 0);
    fed_tokenizer_destroy(&t);
}

TEST(reserved_pieces_are_never_produced) {
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"<\",-1],[\"s\",-1],[\">\",-1],[\"▁\",-1],"
                              "[\"/\",-1]]");
    CHECK(t != NULL);
    if (!t) return;
    CHECK_IDS(t, "<s>", 9, 6, 7, 8);
    CHECK_IDS(t, "</s>", 9, 6, 10, 7, 8);
    fed_tokenizer_destroy(&t);
}

TEST(pieces_above_the_bmp_step_back_in_utf16_units) {
    /* "😀" is one code point but two UTF-16 units: the walk back skips one symbol more,
     * dropping what stood there, exactly as the reference does. */
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"▁\",-1],[\"x\",-1],[\"😀\",-1]]");
    CHECK(t != NULL);
    if (!t) return;
    CHECK_IDS(t, "x😀", 6, 8);
    CHECK_IDS(t, "😀", 8);
    CHECK_IDS(t, "xx😀x", 6, 7, 8, 7);
    fed_tokenizer_destroy(&t);
}

TEST(duplicate_pieces_the_later_wins) {
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"▁ab\",-1],[\"▁ab\",-3],[\"▁\",-1],"
                              "[\"a\",-5],[\"b\",-5]]");
    CHECK(t != NULL);
    if (t) CHECK_IDS(t, "ab", 7);
    fed_tokenizer_destroy(&t);
    /* Without "a" and "b" the unknown at "b" (score 0 on the unknown "a") beats it. */
    t = tok_of("[" RESERVED_USE ",[\"▁ab\",-1],[\"▁ab\",-3],[\"▁\",-1]]");
    CHECK(t != NULL);
    if (t) CHECK_IDS(t, "ab", 8, 0);
    fed_tokenizer_destroy(&t);
}

TEST(nfkc_and_spaces) {
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"▁\",-1],[\"a\",-1],[\"fi\",-1]]");
    CHECK(t != NULL);
    if (!t) return;
    CHECK_IDS(t, " a", 6, 6, 7);
    CHECK_IDS(t, "a ", 6, 7, 6);
    CHECK_IDS(t,
              "a\xc2\xa0"
              "a",
              6, 7, 6, 7); /* NBSP: NFKC makes it a space */
    CHECK_IDS(t,
              "a\xe3\x80\x80"
              "a",
              6, 7, 6, 7);              /* ideographic space */
    CHECK_IDS(t, "\xef\xbd\x81", 6, 7); /* full-width a */
    /* The ligature becomes "fi"; "fi" ends at the "i", but so does an unknown "i" whose
     * start had no best (0): the unknown wins, as in the reference. */
    CHECK_IDS(t, "\xef\xac\x81", 6, 0);
    CHECK_IDS(t, "a\ta", 6, 7, 0, 7); /* a tab is no space */
    CHECK_IDS(t,
              "a\xe2\x80\x8b"
              "a",
              6, 7, 0, 7); /* nor a zero-width space */
    fed_tokenizer_destroy(&t);
}

TEST(empty_text_and_short_buffers) {
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"▁\",-1],[\"a\",-1]]");
    CHECK(t != NULL);
    if (!t) return;
    size_t n = 99;
    CHECK_OK(fed_tokenizer_encode(t, "", 0, NULL, 0, &n));
    CHECK_SIZE(n, 0);
    n = 99;
    CHECK_OK(fed_tokenizer_encode(t, NULL, 0, NULL, 0, &n));
    CHECK_SIZE(n, 0);
    /* The count of all ids, the first max of them written. */
    int32_t ids[4] = {-5, -5, -5, -5};
    CHECK_OK(fed_tokenizer_encode(t, "a a a", 5, ids, 3, &n));
    CHECK_SIZE(n, 6);
    CHECK_INT(ids[0], 6);
    CHECK_INT(ids[1], 7);
    CHECK_INT(ids[2], 6);
    CHECK_INT(ids[3], -5);
    CHECK_OK(fed_tokenizer_encode(t, "a a a", 5, NULL, 0, &n));
    CHECK_SIZE(n, 6);
    /* A NUL byte is a character like any other (unknown here). */
    CHECK_OK(fed_tokenizer_encode(t, "a\0a", 3, ids, 4, &n));
    CHECK_SIZE(n, 4);
    CHECK_INT(ids[2], 0);
    fed_tokenizer_destroy(&t);
}

TEST(invalid_utf8_in_text) {
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"▁\",-1],[\"a\",-1]]");
    CHECK(t != NULL);
    if (!t) return;
    static const struct {
        const char *text;
        const char *msg;
    } bad[] = {
        {"ab\xff"
         "cd",
         "invalid UTF-8 at byte 2"},
        {"\xc0\xaf", "invalid UTF-8 at byte 0"},                   /* overlong "/" */
        {"abc\xe2\x82", "invalid UTF-8 at byte 3"},                /* truncated */
        {"a\xed\xa0\x80", "invalid UTF-8 at byte 1"},              /* a surrogate */
        {"\xf4\x90\x80\x80", "invalid UTF-8 at byte 0"},           /* above U+10FFFF */
        {"ok \xe2\x82\xac then \x80", "invalid UTF-8 at byte 12"}, /* a lone continuation */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = 99;
        int32_t ids[8];
        CHECK_ERR(fed_tokenizer_encode(t, bad[i].text, strlen(bad[i].text), ids, 8, &n),
                  FED_EFORMAT);
        CHECK_STR(fed_errmsg(), bad[i].msg);
        CHECK_SIZE(n, 0);
    }
    fed_tokenizer_destroy(&t);
}

TEST(malformed_vocabularies) {
    CHECK_VOCAB_FAILS("42", FED_EFORMAT, "vocab.json: expected an array of [piece, score]");
    CHECK_VOCAB_FAILS("\"a\"", FED_EFORMAT, "vocab.json: expected an array");
    CHECK_VOCAB_FAILS("[", FED_EFORMAT, "vocab.json: invalid JSON");
    CHECK_VOCAB_FAILS("", FED_EFORMAT, "vocab.json: invalid JSON");
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"a\",-1]] [1]", FED_EFORMAT, "vocab.json: invalid JSON");
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"a\",-1]", FED_EFORMAT, "vocab.json: invalid JSON");
    CHECK_VOCAB_FAILS("[]", FED_EFORMAT, "vocab.json: empty vocabulary");
    CHECK_VOCAB_FAILS("[" RESERVED_USE "]", FED_EFORMAT,
                      "vocab.json: 6 entries, none past the 6 reserved ones");
    /* Entries: arity, types, UTF-8, NUL, length. */
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"a\"]]", FED_EFORMAT,
                      "vocab.json: entry 6: expected [piece, score]");
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"a\",-1,2]]", FED_EFORMAT,
                      "vocab.json: entry 6: expected [piece, score]");
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"a\",-1],\"b\"]", FED_EFORMAT,
                      "vocab.json: entry 7: expected [piece, score]");
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"a\",-1],{\"b\":1}]", FED_EFORMAT,
                      "vocab.json: entry 7: expected [piece, score]");
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"a\",\"-1\"]]", FED_EFORMAT,
                      "vocab.json: entry 6: score must be a finite number or null");
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"a\",true]]", FED_EFORMAT,
                      "vocab.json: entry 6: score must be a finite number or null");
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"a\",1e999]]", FED_EFORMAT,
                      "vocab.json: entry 6: score must be a finite number or null");
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[1,-1]]", FED_EFORMAT,
                      "vocab.json: entry 6: piece must be a string");
    CHECK_VOCAB_FAILS("[[null,0]," RESERVED_USE ",[\"a\",-1]]", FED_EFORMAT,
                      "vocab.json: entry 0: piece must be a string");
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"a\xff"
                      "b\",-1]]",
                      FED_EFORMAT, "vocab.json: entry 6: piece has invalid UTF-8 at byte 1");
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"a\xed\xa0\x80\",-1]]", FED_EFORMAT,
                      "vocab.json: entry 6: piece has invalid UTF-8 at byte 1");
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"\\ud800\",-1]]", FED_EFORMAT,
                      "vocab.json: invalid JSON"); /* a lone surrogate escape */
    CHECK_VOCAB_FAILS("[" RESERVED_USE ",[\"a\\u0000b\",-1]]", FED_EFORMAT,
                      "\\u0000 is not allowed in a piece");
    CHECK_VOCAB_FAILS("[[\"\",0],[\"<s>\",0],[\"</s>\",0],[\"r3\",0],[\"r4\",0],[\"r5\",0],"
                      "[\"a\",-1]]",
                      FED_EFORMAT, "vocab.json: entry 0: the unknown piece must not be empty");
    /* The longest piece allowed, and one byte more. */
    char *big = malloc(2 * FED_TOKENIZER_MAX_PIECE + 256);
    CHECK(big != NULL);
    if (big) {
        size_t k = (size_t)snprintf(big, 256, "[%s,[\"", RESERVED_USE);
        memset(big + k, 'x', FED_TOKENIZER_MAX_PIECE);
        strcpy(big + k + FED_TOKENIZER_MAX_PIECE, "\",-1]]");
        fed_tokenizer *t = tok_of(big);
        CHECK(t != NULL);
        if (t) CHECK_SIZE(strlen(fed_tokenizer_piece(t, 6)), FED_TOKENIZER_MAX_PIECE);
        fed_tokenizer_destroy(&t);
        memset(big + k, 'x', FED_TOKENIZER_MAX_PIECE + 1);
        strcpy(big + k + FED_TOKENIZER_MAX_PIECE + 1, "\",-1]]");
        CHECK_VOCAB_FAILS(big, FED_ERANGE, "vocab.json: entry 6: piece of 1025 bytes; the limit");
        free(big);
    }
    /* An empty piece past the reserved ones is kept (ids stay) but never matched. */
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"\",-1],[\"▁\",-1],[\"a\",-1]]");
    CHECK(t != NULL);
    if (t) CHECK_IDS(t, "a", 7, 8);
    fed_tokenizer_destroy(&t);
}

TEST(malformed_object_form) {
#define VOCAB "\"vocab\":[[\"<unk>\",0],[\"a\",-1]]"
    fed_tokenizer *t = tok_of("{\"type\":\"unigram\",\"reserved\":1,\"unk\":0," VOCAB "}");
    CHECK(t != NULL);
    if (t) {
        CHECK_SIZE(fed_tokenizer_reserved(t), 1);
        CHECK_IDS(t, "ab", 0); /* "▁" is unknown here, and "<unk>" steps back 5 at once */
    }
    fed_tokenizer_destroy(&t);
    CHECK_VOCAB_FAILS("{\"reserved\":1,\"unk\":0," VOCAB "}", FED_EFORMAT,
                      "vocab.json: \"type\" must be \"unigram\"");
    /* "bpe" is the other kind (bpe.h), whose fields these are not. */
    CHECK_VOCAB_FAILS("{\"type\":\"bpe\",\"reserved\":1,\"unk\":0," VOCAB "}", FED_EFORMAT,
                      "vocab.json: unknown field \"reserved\"");
    CHECK_VOCAB_FAILS("{\"type\":\"wordpiece\",\"reserved\":1,\"unk\":0," VOCAB "}", FED_EFORMAT,
                      "vocab.json: \"type\" must be \"unigram\" or \"bpe\"");
    CHECK_VOCAB_FAILS("{\"type\":\"unigram\",\"reserved\":1,\"unk\":0}", FED_EFORMAT,
                      "vocab.json: \"vocab\" must be an array");
    CHECK_VOCAB_FAILS("{\"type\":\"unigram\",\"unk\":0," VOCAB "}", FED_EFORMAT,
                      "vocab.json: no \"reserved\"");
    CHECK_VOCAB_FAILS("{\"type\":\"unigram\",\"reserved\":0,\"unk\":0," VOCAB "}", FED_EFORMAT,
                      "vocab.json: \"reserved\" must be an integer in [1, 16777216]");
    CHECK_VOCAB_FAILS("{\"type\":\"unigram\",\"reserved\":1.5,\"unk\":0," VOCAB "}", FED_EFORMAT,
                      "\"reserved\" must be an integer");
    CHECK_VOCAB_FAILS("{\"type\":\"unigram\",\"reserved\":\"1\",\"unk\":0," VOCAB "}", FED_EFORMAT,
                      "\"reserved\" must be an integer");
    CHECK_VOCAB_FAILS("{\"type\":\"unigram\",\"reserved\":1,\"unk\":1," VOCAB "}", FED_EFORMAT,
                      "vocab.json: \"unk\" (1) must be one of the 1 reserved ids");
    CHECK_VOCAB_FAILS("{\"type\":\"unigram\",\"reserved\":1,\"unk\":-1," VOCAB "}", FED_EFORMAT,
                      "\"unk\" must be an integer");
    CHECK_VOCAB_FAILS("{\"type\":\"unigram\",\"reserved\":2,\"unk\":0," VOCAB "}", FED_EFORMAT,
                      "vocab.json: 2 entries, none past the 2 reserved ones");
    CHECK_VOCAB_FAILS("{\"type\":\"unigram\",\"reserved\":1,\"unk\":0,\"extra\":1," VOCAB "}",
                      FED_EFORMAT, "vocab.json: unknown field \"extra\"");
    CHECK_VOCAB_FAILS("{\"type\":\"unigram\",\"reserved\":1,\"unk\":0,\"unk\":0," VOCAB "}",
                      FED_EFORMAT, "vocab.json: \"unk\" appears twice");
#undef VOCAB
    CHECK_ERR(fed_tokenizer_load(&t, "/nonexistent/vocab.json"), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "/nonexistent/vocab.json: cannot open");
}

TEST(canonical_json) {
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"▁a\\\"\",-3.28450870514],[\"b\",null],"
                              "[\"c\",-0.0],[\"d\",0.1],[\"e\",-0.30000000000000004],[\"f\",30]]");
    CHECK(t != NULL);
    if (!t) return;
    char *js = NULL;
    CHECK_OK(fed_tokenizer_to_json(t, &js));
    CHECK_STR(js, "{\"type\":\"unigram\",\"reserved\":6,\"unk\":0,\"vocab\":[[\"\xef\xbf\xbd\",0],"
                  "[\"<s>\",0],[\"</s>\",0],[\"r3\",0],[\"r4\",0],[\"r5\",0],"
                  "[\"▁a\\\"\",-3.28450870514],[\"b\",0],[\"c\",0],[\"d\",0.1],"
                  "[\"e\",-0.30000000000000004],[\"f\",30]]}");
    /* Read back, it writes the same text and tokenizes the same. */
    fed_tokenizer *u = js ? tok_of(js) : NULL;
    CHECK(u != NULL);
    char *js2 = NULL;
    if (u) CHECK_OK(fed_tokenizer_to_json(u, &js2));
    if (js2) CHECK_STR(js2, js);
    if (u) CHECK_IDS(u, "a\"bcf", 0, 7, 8, 11);
    CHECK_IDS(t, "a\"bcf", 0, 7, 8, 11);
    fed_free(js);
    fed_free(js2);
    fed_tokenizer_destroy(&u);
    fed_tokenizer_destroy(&t);
}

TEST(long_text_is_linear) {
    /* 4 MiB of text through pieces up to 16 code points long: the trie walk is bounded
     * by the longest piece, so this takes well under a second (quadratic would not end). */
    fed_tokenizer *t = tok_of("[" RESERVED_USE ",[\"▁\",-1],[\"a\",-2],[\"aaaa\",-3],"
                              "[\"aaaaaaaaaaaaaaaa\",-4],[\"▁ab\",-1],[\"b\",-1]]");
    CHECK(t != NULL);
    size_t len = (size_t)4 << 20;
    char *text = malloc(len);
    CHECK(text != NULL);
    if (t && text) {
        memset(text, 'a', len);
        size_t n = 0;
        CHECK_OK(fed_tokenizer_encode(t, text, len, NULL, 0, &n));
        CHECK_SIZE(n, 1 + len / 16); /* "▁", then sixteen a's at a time */
        for (size_t i = 0; i + 3 <= len; i += 3) memcpy(text + i, "ab ", 3);
        CHECK_OK(fed_tokenizer_encode(t, text, len / 3 * 3, NULL, 0, &n));
        CHECK_SIZE(n, len / 3 + 1); /* "▁ab" each time, a final "▁" */
        int32_t ids[4];
        CHECK_OK(fed_tokenizer_encode(t, text, 9, ids, 4, &n));
        CHECK_SIZE(n, 4);
        CHECK(ids[0] == 10 && ids[1] == 10 && ids[2] == 10 && ids[3] == 6);
    }
    free(text);
    fed_tokenizer_destroy(&t);
    size_t n = 0;
    char one = 'a';
    t = tok_of("[" RESERVED_USE ",[\"a\",-1]]");
    CHECK(t != NULL);
    if (t) {
        CHECK_ERR(fed_tokenizer_encode(t, &one, FED_TOKENIZER_MAX_TEXT + 1, NULL, 0, &n),
                  FED_ERANGE);
        CHECK_CONTAINS(fed_errmsg(), "the limit is 16777216");
    }
    fed_tokenizer_destroy(&t);
}

TEST(under_allocation_failure) {
    const char *json = "[" RESERVED_USE ",[\"▁\",-1],[\"a\",-1],[\"▁a\",-1.5],[\"bc\",null]]";
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_tokenizer *t = NULL;
        ALLOC_TRY(f, fed_tokenizer_parse(&t, json, strlen(json), "vocab.json"));
        if (f.failed) CHECK(t == NULL);
        fed_tokenizer_destroy(&t);
    }
    fed_tokenizer *t = tok_of(json);
    CHECK(t != NULL);
    if (!t) return;
    FOR_EACH_ALLOC_FAILURE(f) {
        int32_t ids[8];
        size_t n = 0;
        ALLOC_TRY(f, fed_tokenizer_encode(t, "qq abc a", 8, ids, 8, &n));
        if (!f.failed) CHECK_SIZE(n, 5);
    }
    FOR_EACH_ALLOC_FAILURE(f) {
        char *js = NULL;
        ALLOC_TRY(f, fed_tokenizer_to_json(t, &js));
        if (f.failed) CHECK(js == NULL);
        fed_free(js);
    }
    fed_tokenizer_destroy(&t);
}

int main(void) {
    RUN(viterbi_choice);
    RUN(ties_go_to_the_later_start);
    RUN(a_best_of_zero_counts_as_unset);
    RUN(unknown_runs_collapse);
    RUN(the_unknown_piece_length_is_its_step);
    RUN(reserved_pieces_are_never_produced);
    RUN(pieces_above_the_bmp_step_back_in_utf16_units);
    RUN(duplicate_pieces_the_later_wins);
    RUN(nfkc_and_spaces);
    RUN(empty_text_and_short_buffers);
    RUN(invalid_utf8_in_text);
    RUN(malformed_vocabularies);
    RUN(malformed_object_form);
    RUN(canonical_json);
    RUN(long_text_is_linear);
    RUN(under_allocation_failure);
    return test_report();
}
