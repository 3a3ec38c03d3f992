/* Tests of the language-model data side: BPE's one-file JSON form (bpe.h) with every
 * malformed field and its message, and the same file read as a fed_tokenizer of kind
 * "bpe"; the BPE trainer (bpe_train.h) on tiny corpora whose merges are worked out by
 * hand in the comments, its tie rule and its independence from input order; and LM
 * windows (text_lm.h): the cut at T, padding, dropping single ids, JSON lines and plain
 * text, and malformed inputs naming file:line. */
#include "core/alloc.h"
#include "dataset/bpe.h"
#include "dataset/bpe_train.h"
#include "dataset/text_lm.h"
#include "dataset/tokenizer.h"
#include "tests/test.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The JSON a trainer learns from the texts t[0..n) with vocabulary vocab (NULL on error). */
static char *learn(const char *const *t, size_t n, size_t vocab, size_t *merges) {
    fed_bpe_trainer *tr = NULL;
    char *json = NULL;
    fed_err e = fed_bpe_trainer_new(&tr);
    for (size_t i = 0; !e && i < n; i++) e = fed_bpe_trainer_add(tr, t[i], strlen(t[i]));
    if (!e) e = fed_bpe_trainer_learn(tr, vocab, &json, merges);
    if (e) fprintf(stderr, "  learn failed: %s\n", fed_errdetail(e));
    fed_bpe_trainer_destroy(&tr);
    return json;
}

/* The "merges" part of a learned JSON, for comparing with a hand-made list. */
static const char *merges_of(const char *json) {
    const char *m = json ? strstr(json, "\"merges\":") : NULL;
    return m ? m : "";
}

TEST(trainer_known_merges) {
    /* Words "ab", " ab", " ab", " abc" (a space is "Ġ"): pairs (a,b) 4, (Ġ,a) 3, (b,c) 1.
     * Merge 1 "a b" (id 256); then (Ġ,ab) 3, (ab,c) 1: merge 2 "Ġ ab" (257); then only
     * (Ġab,c) once, under the count of 2: learning stops at 258 symbols. */
    const char *t[] = {"ab ab ab abc"};
    size_t m = 0;
    char *js = learn(t, 1, 300, &m);
    CHECK_SIZE(m, 2);
    CHECK_STR(merges_of(js), "\"merges\":[\"a b\",\"\xc4\xa0 ab\"]}");
    CHECK_CONTAINS(js ? js : "", ",\"ab\":256,\"\xc4\xa0"
                                 "ab\":257}");
    /* The 256 byte ids are GPT-2's: '!' 0, 'a' 64, then U+0100 (byte 0) at 188. */
    CHECK_CONTAINS(js ? js : "", "{\"!\":0,");
    CHECK_CONTAINS(js ? js : "", "\"a\":64,");
    CHECK_CONTAINS(js ? js : "", "\"\xc4\x80\":188,");
    fed_bpe *b = NULL;
    CHECK_OK(fed_bpe_parse_json(&b, js, strlen(js), "tok.json"));
    if (b) {
        int32_t ids[8];
        size_t n = 0;
        CHECK_OK(fed_bpe_encode(b, "ab abc", 6, ids, 8, &n));
        CHECK_SIZE(n, 3);
        CHECK_INT(ids[0], 256);
        CHECK_INT(ids[1], 257);
        CHECK_INT(ids[2], 66);
        CHECK_SIZE(fed_bpe_vocab_size(b), 258);
    }
    fed_bpe_destroy(&b);
    free(js);
    /* A vocabulary of 257: the first merge only. */
    js = learn(t, 1, 257, &m);
    CHECK_SIZE(m, 1);
    CHECK_STR(merges_of(js), "\"merges\":[\"a b\"]}");
    free(js);
}

TEST(trainer_ties_and_order) {
    /* "abab" and " cdcd": (a,b) 2 and (c,d) 2 tie; (a,b) has the smaller first id (64 <
     * 66) and goes first. After it "abab" is (ab,ab) once, so (c,d) is next; then no pair
     * is left twice. The other order of the texts learns the same bytes. */
    const char *t1[] = {"abab", " cdcd"}, *t2[] = {" cdcd", "abab"};
    size_t m1 = 0, m2 = 0;
    char *a = learn(t1, 2, 1000, &m1), *b = learn(t2, 2, 1000, &m2);
    CHECK_SIZE(m1, 2);
    CHECK_STR(merges_of(a), "\"merges\":[\"a b\",\"c d\"]}");
    CHECK(a && b && strcmp(a, b) == 0);
    free(a);
    free(b);
    /* Same tie on the second id: (a,b) before (a,c). */
    const char *t3[] = {"acac abab"};
    char *c = learn(t3, 1, 257, &m1);
    CHECK_STR(merges_of(c), "\"merges\":[\"a b\"]}");
    free(c);
}

TEST(trainer_bad_input) {
    fed_bpe_trainer *t = NULL;
    CHECK_OK(fed_bpe_trainer_new(&t));
    if (!t) return;
    CHECK_ERR(fed_bpe_trainer_add(t, "ok \xff", 4), FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "invalid UTF-8 at byte 3");
    char *js = NULL;
    size_t m = 7;
    CHECK_ERR(fed_bpe_trainer_learn(t, 255, &js, &m), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "vocabulary size 255 is not in [256,");
    /* Nothing added: the 256 bytes alone, a valid tokenizer. */
    CHECK_OK(fed_bpe_trainer_learn(t, 512, &js, &m));
    CHECK_SIZE(m, 0);
    CHECK_STR(merges_of(js), "\"merges\":[]}");
    fed_free(js);
    CHECK_ERR(fed_bpe_trainer_learn(t, 512, &js, &m), FED_EINVAL);
    fed_bpe_trainer_destroy(&t);
    CHECK(t == NULL);
}

/* A valid JSON form: the bytes and the merges "a b", "Ġ ab" (from trainer_known_merges). */
static char *valid_json(void) {
    const char *t[] = {"ab ab ab abc"};
    size_t m = 0;
    return learn(t, 1, 300, &m);
}

/* json with the text of `from` replaced by `to` (once). */
static char *replace(const char *json, const char *from, const char *to) {
    const char *at = strstr(json, from);
    if (!at) return NULL;
    size_t n = strlen(json) - strlen(from) + strlen(to) + 1;
    char *s = malloc(n);
    snprintf(s, n, "%.*s%s%s", (int)(at - json), json, to, at + strlen(from));
    return s;
}

static void check_json_fails(const char *json, fed_err code, const char *sub, int line) {
    fed_bpe *b = (fed_bpe *)1;
    fed_err e = json ? fed_bpe_parse_json(&b, json, strlen(json), "tok.json") : FED_OK;
    fed_tokenizer *t = (fed_tokenizer *)1;
    fed_err e2 = json ? fed_tokenizer_parse(&t, json, strlen(json), "tok.json") : FED_OK;
    if (e == code && e2 == code && b == NULL && t == NULL && strstr(fed_errmsg(), sub)) {
        test_passed_++;
        return;
    }
    test_fail_(__FILE__, line);
    fprintf(stderr, "expected %s containing \"%s\", got %s: %s\n", fed_errname(code), sub,
            fed_errname(e2), fed_errmsg());
}
#define CHECK_JSON_FAILS(json, code, sub) check_json_fails((json), (code), (sub), __LINE__)

/* The valid form with one edit, expected to fail. */
#define CHECK_EDIT_FAILS(from, to, code, sub)                                                      \
    do {                                                                                           \
        char *s_ = replace(ok, (from), (to));                                                      \
        CHECK(s_ != NULL);                                                                         \
        if (s_) CHECK_JSON_FAILS(s_, (code), (sub));                                               \
        free(s_);                                                                                  \
    } while (0)

TEST(json_form_malformed) {
    char *ok = valid_json();
    if (!ok) return;
    fed_bpe *b = (fed_bpe *)1;
    CHECK_ERR(fed_bpe_parse_json(&b, "[1]", 3, "tok.json"), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "tok.json: expected an object {\"type\":\"bpe\"");
    CHECK(b == NULL);
    CHECK_JSON_FAILS("{\"type\":\"bpe\"", FED_EFORMAT, "tok.json: ");
    CHECK_EDIT_FAILS("{\"type\":\"bpe\",", "{\"type\":\"bpe\",\"vocab\":1,", FED_EFORMAT,
                     "tok.json: unknown field \"vocab\"");
    CHECK_EDIT_FAILS("{\"type\":\"bpe\",", "{\"type\":\"bpe\",\"type\":\"bpe\",", FED_EFORMAT,
                     "tok.json: \"type\" appears twice");
    CHECK_EDIT_FAILS("\"encoder\":", "\"comma_keys\":1,\"encoder\":", FED_EFORMAT,
                     "tok.json: \"comma_keys\" must be true or false");
    CHECK_EDIT_FAILS("\"encoder\":", "\"enc\":", FED_EFORMAT, "tok.json: unknown field \"enc\"");
    CHECK_EDIT_FAILS("\"merges\":[", "\"merges\":{\"a\":[", FED_EFORMAT, "tok.json: ");
    CHECK_EDIT_FAILS("\"merges\":[\"a b\"", "\"merges\":\"a b\",\"x\":[\"a b\"", FED_EFORMAT,
                     "tok.json: unknown field \"x\"");
    CHECK_EDIT_FAILS("\"merges\":[\"a b\"", "\"merges\":[7", FED_EFORMAT,
                     "tok.json: merges[0] must be a string \"first second\"");
    CHECK_EDIT_FAILS("\"merges\":[\"a b\"", "\"merges\":[\"a b c\"", FED_EFORMAT,
                     "tok.json: merges[0]: expected 2 symbols, found 3");
    CHECK_EDIT_FAILS("\"\xc4\xa0 ab\"]", "\"\xc4\xa0 abc\"]", FED_EFORMAT,
                     "tok.json: merges[1]: \"abc\" is not a symbol of the encoder");
    CHECK_EDIT_FAILS("\"\xc4\xa0 ab\"]", "\"a b\"]", FED_EFORMAT,
                     "tok.json: merges[1]: the pair of merges 0 again");
    CHECK_EDIT_FAILS("\"\xc4\xa0 ab\"]", "\"b a\"]", FED_EFORMAT,
                     "tok.json: merges[1]: the merge's result \"ba\" is not in the encoder");
    CHECK_EDIT_FAILS("\"ab\":256", "\"ab\":-1", FED_EFORMAT,
                     "tok.json: encoder: entry 256: the id must be an integer in [0, 258)");
    CHECK_EDIT_FAILS("{\"!\":0,", "{\"!\":0,\"!\":1,", FED_EFORMAT, "tok.json: encoder: entry 1:");
    CHECK_EDIT_FAILS("\"type\":\"bpe\"", "\"type\":\"BPE\"", FED_EFORMAT,
                     "tok.json: \"type\" must be \"unigram\" or \"bpe\"");
    free(ok);
}

TEST(json_form_round_trip_and_kind) {
    char *ok = valid_json();
    if (!ok) return;
    fed_tokenizer *t = NULL;
    CHECK_OK(fed_tokenizer_parse(&t, ok, strlen(ok), "tok.json"));
    if (t) {
        CHECK_STR(fed_tokenizer_kind(t), "bpe");
        CHECK_SIZE(fed_tokenizer_vocab_size(t), 258);
        CHECK_SIZE(fed_tokenizer_reserved(t), 0);
        CHECK_INT(fed_tokenizer_unk(t), -1);
        CHECK_STR(fed_tokenizer_piece(t, 257), "\xc4\xa0"
                                               "ab");
        CHECK(fed_tokenizer_piece(t, 258) == NULL);
        char *back = NULL;
        CHECK_OK(fed_tokenizer_to_json(t, &back));
        CHECK_STR(back ? back : "", ok); /* the trainer writes the canonical form */
        fed_free(back);
        int32_t ids[16];
        size_t n = 0;
        const char *text = "ab abc \xe2\x82\xac!";
        CHECK_OK(fed_tokenizer_encode(t, text, strlen(text), ids, 16, &n));
        CHECK_SIZE(n, 8); /* ab, Ġab, c, Ġ, the euro sign's 3 bytes, ! */
        char *dec = NULL;
        size_t len = 0;
        CHECK_OK(fed_tokenizer_decode(t, ids, n, &dec, &len));
        CHECK_SIZE(len, strlen(text));
        CHECK_STR(dec ? dec : "", text);
        fed_free(dec);
        ids[0] = 258;
        CHECK_ERR(fed_tokenizer_decode(t, ids, 1, &dec, &len), FED_EINVAL);
        CHECK_STR(fed_errmsg(), "id 258 at 0 is not in [0, 258)");
    }
    fed_tokenizer_destroy(&t);
    /* comma_keys: written back when set. */
    char *ck = replace(ok, "\"merges\":", "\"comma_keys\":true,\"merges\":");
    fed_bpe *b = NULL;
    CHECK_OK(fed_bpe_parse_json(&b, ck, strlen(ck), "tok.json"));
    char *back = NULL;
    if (b) CHECK_OK(fed_bpe_to_json(b, &back));
    CHECK_CONTAINS(back ? back : "", "\"merges\":[\"a b\",\"\xc4\xa0 ab\"],\"comma_keys\":true}");
    fed_free(back);
    fed_bpe_destroy(&b);
    free(ck);
    free(ok);
}

/* ---- LM windows ------------------------------------------------------------------------ */

/* A BPE tokenizer without merges: one id per byte (GPT-2's byte ids). */
static fed_tokenizer *bytes_tokenizer(void) {
    fed_bpe_trainer *tr = NULL;
    char *js = NULL;
    size_t m = 0;
    fed_tokenizer *t = NULL;
    if (!fed_bpe_trainer_new(&tr) && !fed_bpe_trainer_learn(tr, 256, &js, &m) &&
        !fed_tokenizer_parse(&t, js, strlen(js), "bytes"))
        test_passed_++;
    fed_free(js);
    fed_bpe_trainer_destroy(&tr);
    return t;
}

TEST(lm_windows) {
    fed_tokenizer *t = bytes_tokenizer();
    if (!t) return;
    /* "abcdefghi" is 9 ids: windows abcd, efgh; "i" alone is dropped. "0123456789" is 10:
     * 0123, 4567, then 89 padded. Byte ids: 'a' 64, '0' 15. Label ignored. */
    const char *jl = "{\"text\":\"abcdefghi\",\"label\":3}\n\n{\"text\":\"0123456789\"}\n";
    fed_dataset *d = NULL;
    fed_text_lm_stats st;
    CHECK_OK(fed_data_parse_text_lm(&d, jl, strlen(jl), "w.jsonl", t, 4, &st));
    CHECK_SIZE(st.documents, 2);
    CHECK_SIZE(st.tokens, 19);
    CHECK_SIZE(st.windows, 5);
    CHECK_SIZE(st.padded, 1);
    CHECK_SIZE(st.dropped, 1);
    if (d) {
        CHECK_SIZE(d->n, 5);
        CHECK_SIZE(d->dim, 4);
        CHECK_SIZE(d->num_classes, 1);
        const float want[] = {64, 65, 66, 67, 68, 69, 70, 71, 15, 16,
                              17, 18, 19, 20, 21, 22, 23, 24, -1, -1};
        bool same = true;
        for (size_t i = 0; i < 20; i++) same = same && d->x[i] == want[i];
        CHECK(same);
        for (size_t i = 0; i < 5; i++) CHECK_INT(d->y[i], 0);
    }
    fed_data_destroy(&d);
    /* Plain text: one document, the whole file (line breaks included). */
    const char *txt = "ab\ncd\n";
    CHECK_OK(fed_data_parse_text_lm(&d, txt, strlen(txt), "w.txt", t, 4, &st));
    CHECK_SIZE(st.documents, 1);
    CHECK_SIZE(st.windows, 2);
    /* a b \n c | d \n -1 -1 ("\n" is 'Ċ', 198) */
    if (d) CHECK(d->x[2] == 198.0f && d->x[3] == 66.0f && d->x[4] == 67.0f && d->x[6] == -1.0f);
    fed_data_destroy(&d);
    fed_tokenizer_destroy(&t);
}

static void check_lm_fails(const fed_tokenizer *t, const char *text, const char *what, size_t T,
                           fed_err code, const char *msg, int line) {
    fed_dataset *d = (fed_dataset *)1;
    fed_err e = fed_data_parse_text_lm(&d, text, strlen(text), what, t, T, NULL);
    if (e == code && d == NULL && strcmp(fed_errmsg(), msg) == 0) {
        test_passed_++;
        return;
    }
    test_fail_(__FILE__, line);
    fprintf(stderr, "expected %s \"%s\", got %s: \"%s\"\n", fed_errname(code), msg, fed_errname(e),
            fed_errmsg());
}
#define CHECK_LM_FAILS(text, what, T, code, msg)                                                   \
    check_lm_fails(t, (text), (what), (T), (code), (msg), __LINE__)

TEST(lm_malformed) {
    fed_tokenizer *t = bytes_tokenizer();
    if (!t) return;
    CHECK_LM_FAILS("", "e.txt", 4, FED_EFORMAT, "e.txt: empty file: no text");
    CHECK_LM_FAILS(" \n\n", "e.jsonl", 4, FED_EFORMAT, "e.jsonl: empty file: no text");
    CHECK_LM_FAILS("abc", "t.txt", 1, FED_EINVAL,
                   "t.txt: sequence length 1 is not in [2, 1048576] (a window predicts its ids "
                   "from the ones before)");
    CHECK_LM_FAILS("{\"text\":\"ok\"}\n{\"text\":\"x\"}\n{\"text\":\"b\xc3(\"}\n", "u.jsonl", 4,
                   FED_EFORMAT, "u.jsonl:3: invalid UTF-8 at byte 37 of the file");
    CHECK_LM_FAILS("line one\nline \xff two\n", "u.txt", 4, FED_EFORMAT,
                   "u.txt:2: invalid UTF-8 at byte 14 of the file");
    CHECK_LM_FAILS("{\"text\":\"ok\"}\n{\"label\":1}\n", "m.jsonl", 4, FED_EFORMAT,
                   "m.jsonl:2: no \"text\"");
    CHECK_LM_FAILS("{\"text\":5}\n", "m.jsonl", 4, FED_EFORMAT,
                   "m.jsonl:1: \"text\" must be a string");
    CHECK_LM_FAILS("{\"text\":\"ok\"}\n[1]\n", "m.jsonl", 4, FED_EFORMAT,
                   "m.jsonl:2: not a JSON object {\"text\": ...}");
    CHECK_LM_FAILS("{\"text\":\"ok\"\n", "m.jsonl", 4, FED_EFORMAT, "m.jsonl:1: bad JSON");
    CHECK_LM_FAILS("{\"text\":\"a\\u0000b\"}\n", "m.jsonl", 4, FED_EFORMAT,
                   "m.jsonl:1: \\u0000 is not supported in a text");
    CHECK_LM_FAILS("{\"text\":\"a\"}\n{\"text\":\"\"}\n", "s.jsonl", 4, FED_EFORMAT,
                   "s.jsonl: no window of at least 2 token ids (2 documents, 1 tokens)");
    fed_dataset *d = (fed_dataset *)1;
    const char *paths[] = {"/nonexistent/a.txt"};
    CHECK_ERR(fed_data_load_text_lm(&d, paths, 1, t, 4, NULL), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "/nonexistent/a.txt");
    CHECK(d == NULL);
    fed_tokenizer_destroy(&t);
}

/* The whole trainer on "ab ab ab abc" (vocabulary 300), for allocation failures. */
static fed_err train_all(char **js, size_t *m) {
    fed_bpe_trainer *tr = NULL;
    fed_err e = fed_bpe_trainer_new(&tr);
    if (!e) e = fed_bpe_trainer_add(tr, "ab ab ab abc", 12);
    if (!e) e = fed_bpe_trainer_learn(tr, 300, js, m);
    fed_bpe_trainer_destroy(&tr);
    return e;
}

TEST(lm_under_allocation_failure) {
    fed_tokenizer *t = bytes_tokenizer();
    if (!t) return;
    const char *jl = "{\"text\":\"abcdefghi\"}\n{\"text\":\"0123456789\"}\n";
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_dataset *d = NULL;
        ALLOC_TRY(f, fed_data_parse_text_lm(&d, jl, strlen(jl), "w.jsonl", t, 4, NULL));
        if (f.failed) CHECK(d == NULL);
        if (!f.failed && d) CHECK_SIZE(d->n, 5);
        fed_data_destroy(&d);
    }
    FOR_EACH_ALLOC_FAILURE(f) {
        char *js = NULL;
        size_t m = 0;
        ALLOC_TRY(f, train_all(&js, &m));
        if (f.failed) CHECK(js == NULL);
        if (!f.failed) CHECK_SIZE(m, 2);
        fed_free(js);
    }
    fed_tokenizer_destroy(&t);
}

int main(void) {
    RUN(trainer_known_merges);
    RUN(trainer_ties_and_order);
    RUN(trainer_bad_input);
    RUN(json_form_malformed);
    RUN(json_form_round_trip_and_kind);
    RUN(lm_windows);
    RUN(lm_malformed);
    RUN(lm_under_allocation_failure);
    return test_report();
}
