/* Language-model data (see text_lm.h): documents from JSON lines or plain text, each
 * tokenized whole and cut into windows of T ids. Classification data (a text and a label
 * per row) is text.c's; tokenizing is tokenizer.c's. */
#include "dataset/text_lm.h"
#include "core/alloc.h"
#include "core/json.h"
#include "core/utf8.h"
#include "dataset/data_internal.h"
#include "dataset/text.h"

#include <cJSON.h>
#include <string.h>

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

bool fed_text_lm_is_jsonl(const char *name, const char *text, size_t len) {
    static const char *const ext[] = {".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz"};
    for (size_t i = 0; name && i < sizeof ext / sizeof ext[0]; i++)
        if (ends_with(name, ext[i])) return true;
    size_t k = len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    while (k < len && is_space(text[k])) k++;
    return k < len && text[k] == '{';
}

/* The "text" of one JSON line s[0..n) (not blank) to fn. */
static fed_err json_doc(const char *s, size_t n, size_t line, fed_text_lm_doc_fn fn, void *user) {
    if (fed__data_json_nul(s, n) < n)
        return fed_errorf(FED_EFORMAT, "\\u0000 is not supported in a text");
    if (memchr(s, '\0', n)) return fed_errorf(FED_EFORMAT, "a NUL byte in a JSON line");
    fed_json_hooks();
    cJSON *o = fed__data_json_parse(s, n);
    if (!o) return fed_json_oom() ? FED_ENOMEM : fed_errorf(FED_EFORMAT, "bad JSON");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text");
    fed_err err;
    if (!cJSON_IsObject(o))
        err = fed_errorf(FED_EFORMAT, "not a JSON object {\"text\": ...}");
    else if (!t)
        err = fed_errorf(FED_EFORMAT, "no \"text\"");
    else if (!cJSON_IsString(t))
        err = fed_errorf(FED_EFORMAT, "\"text\" must be a string");
    else
        err = fn(user, t->valuestring, strlen(t->valuestring), line);
    cJSON_Delete(o);
    return err;
}

fed_err fed_text_lm_documents(const char *text, size_t len, const char *what, bool jsonl,
                              fed_text_lm_doc_fn fn, void *user) {
    if (!what) what = "text";
    size_t bad = fed_utf8_bad_at(text, len);
    if (bad < len) {
        size_t line = 1;
        for (size_t i = 0; i < bad; i++) line += text[i] == '\n';
        return fed_errorf(FED_EFORMAT, "%s:%zu: invalid UTF-8 at byte %zu of the file", what, line,
                          bad);
    }
    size_t pos = len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    size_t k = pos;
    while (k < len && is_space(text[k])) k++;
    if (k == len) return fed_errorf(FED_EFORMAT, "%s: empty file: no text", what);
    fed_err err = FED_OK;
    if (!jsonl) {
        err = fn(user, text + pos, len - pos, 1);
        return err ? fed_errprefix(err, "%s:1", what) : FED_OK;
    }
    for (size_t line = 1; !err && pos < len; line++) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        size_t b = 0;
        while (b < n && is_space(s[b])) b++;
        if (b < n && (err = json_doc(s, n, line, fn, user)))
            err = fed_errprefix(err, "%s:%zu", what, line);
        pos += n + (nl ? 1 : 0);
    }
    return err;
}

fed_err fed_text_lm_read_documents(const char *path, fed_text_lm_doc_fn fn, void *user) {
    unsigned char *buf = NULL;
    size_t len = 0;
    fed_err err = fed__data_read_file(path, &buf, &len);
    const char *s = (const char *)buf;
    if (!err)
        err = fed_text_lm_documents(s, len, path, fed_text_lm_is_jsonl(path, s, len), fn, user);
    fed_free(buf);
    return err;
}

/* ---- windows ---------------------------------------------------------------------------- */

typedef struct lm_loader {
    const fed_tokenizer *tok; /* the tokenizer */
    size_t T;                 /* window length */
    fed_text_lm_stats st;     /* counts */
    float *x;                 /* (windows, T) */
    size_t cap_x;             /* windows x has room for */
    int32_t *ids;             /* (cap_ids) scratch for the tokenizer */
    size_t cap_ids;           /* its entries */
} lm_loader;

/* Room for `more` further windows. */
static fed_err room(lm_loader *L, size_t more) {
    size_t need = L->st.windows + more;
    if (need <= L->cap_x) return FED_OK;
    size_t cap = L->cap_x ? L->cap_x : 64, bytes;
    while (cap < need) cap *= 2;
    if (!fed_mul_ok(cap, L->T * sizeof *L->x, &bytes)) return FED_ENOMEM;
    float *x = fed_realloc(L->x, bytes);
    if (!x) return FED_ENOMEM;
    L->x = x;
    L->cap_x = cap;
    return FED_OK;
}

/* One document: its ids, cut into windows. */
static fed_err add_doc(void *user, const char *doc, size_t len, size_t line) {
    (void)line;
    lm_loader *L = user;
    size_t n = 0;
    fed_err err = fed_tokenizer_encode(L->tok, doc, len, L->ids, L->cap_ids, &n);
    if (!err && n > L->cap_ids) {
        int32_t *ids = fed_realloc(L->ids, n * sizeof *ids);
        if (!ids) return FED_ENOMEM;
        L->ids = ids;
        L->cap_ids = n;
        err = fed_tokenizer_encode(L->tok, doc, len, L->ids, L->cap_ids, &n);
    }
    if (err) return err;
    L->st.documents++;
    L->st.tokens += n;
    if ((err = room(L, (n + L->T - 1) / L->T))) return err;
    for (size_t start = 0; start < n; start += L->T) {
        size_t w = n - start < L->T ? n - start : L->T;
        if (w < 2) {
            L->st.dropped++;
            continue;
        }
        float *row = L->x + L->st.windows * L->T;
        for (size_t i = 0; i < w; i++) row[i] = (float)L->ids[start + i];
        for (size_t i = w; i < L->T; i++) row[i] = -1.0f;
        L->st.padded += w < L->T;
        L->st.windows++;
    }
    return FED_OK;
}

static fed_err add_text(lm_loader *L, const char *text, size_t len, const char *what) {
    L->st.files++;
    return fed_text_lm_documents(text, len, what, fed_text_lm_is_jsonl(what, text, len), add_doc,
                                 L);
}

/* The data set of the windows, or the error of having none. */
static fed_err finish(lm_loader *L, fed_dataset **out, const char *what) {
    if (L->st.windows == 0)
        return fed_errorf(FED_EFORMAT,
                          "%s: no window of at least 2 token ids (%zu documents, %zu tokens)", what,
                          L->st.documents, L->st.tokens);
    fed_dataset *d = NULL;
    fed_err err = fed_data_new(&d, L->st.windows, L->T, 1);
    if (err) return err;
    memcpy(d->x, L->x, L->st.windows * L->T * sizeof *d->x);
    memset(d->y, 0, L->st.windows * sizeof *d->y);
    d->stats.rows_read = L->st.documents;
    *out = d;
    return FED_OK;
}

static fed_err check_args(const fed_tokenizer *tok, size_t T, const char *what) {
    if (!tok) return fed_errorf(FED_EINVAL, "%s: no tokenizer", what);
    if (T < 2 || T > FED_TEXT_MAX_LEN)
        return fed_errorf(FED_EINVAL,
                          "%s: sequence length %zu is not in [2, %zu] (a window predicts its "
                          "ids from the ones before)",
                          what, T, FED_TEXT_MAX_LEN);
    return FED_OK;
}

fed_err fed_data_parse_text_lm(fed_dataset **out, const char *text, size_t len, const char *what,
                               const fed_tokenizer *tok, size_t T, fed_text_lm_stats *stats) {
    *out = NULL;
    if (stats) memset(stats, 0, sizeof *stats);
    if (!what) what = "text";
    if (!text && len) return fed_errorf(FED_EINVAL, "%s: no text", what);
    fed_err err = check_args(tok, T, what);
    if (err) return err;
    lm_loader L;
    memset(&L, 0, sizeof L);
    L.tok = tok;
    L.T = T;
    err = add_text(&L, text ? text : "", len, what);
    if (!err) err = finish(&L, out, what);
    if (stats) *stats = L.st;
    fed_free(L.x);
    fed_free(L.ids);
    return err;
}

fed_err fed_data_load_text_lm(fed_dataset **out, const char *const *paths, size_t n,
                              const fed_tokenizer *tok, size_t T, fed_text_lm_stats *stats) {
    *out = NULL;
    if (stats) memset(stats, 0, sizeof *stats);
    if (n == 0) return fed_errorf(FED_EINVAL, "no text files");
    fed_err err = check_args(tok, T, paths[0]);
    if (err) return err;
    lm_loader L;
    memset(&L, 0, sizeof L);
    L.tok = tok;
    L.T = T;
    for (size_t i = 0; i < n && !err; i++) {
        unsigned char *buf = NULL;
        size_t len = 0;
        err = fed__data_read_file(paths[i], &buf, &len);
        if (!err) err = add_text(&L, (const char *)buf, len, paths[i]);
        fed_free(buf);
    }
    if (!err) err = finish(&L, out, n == 1 ? paths[0] : "the text files");
    if (stats) *stats = L.st;
    fed_free(L.x);
    fed_free(L.ids);
    return err;
}
