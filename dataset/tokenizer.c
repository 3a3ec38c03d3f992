/* The unigram tokenizer (see tokenizer.h): the vocabulary and its JSON forms, the trie of
 * code points, and encoding (NFKC, the Viterbi pass and the backtracking walk of the
 * reference). libunistring's NFKC is used here (bpe.c uses its character classes). Data
 * sets of token ids live in text.c. */
#include "dataset/tokenizer.h"
#include "core/alloc.h"
#include "dataset/bpe.h"
#include "core/json.h"
#include "core/utf8.h"
#include "dataset/data_internal.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uninorm.h>

/* The reference's bare vocabulary: <unk>, <s>, </s> and three extra ids. */
#define BARE_RESERVED 6
#define BARE_UNK      0

#define SEPARATOR 0x2581u /* "▁" */

/* A trie node: the end of a piece when id >= 0. Node 0 is the root. */
typedef struct node {
    double score; /* the piece's score (null read as 0) */
    int32_t id;   /* its id, or -1 when no piece ends here */
} node;

struct fed_tokenizer {
    fed_bpe *bpe; /* a byte-level BPE tokenizer (then nothing below is used), or NULL */
    /* the vocabulary, in id order */
    size_t n;        /* entries */
    size_t reserved; /* ids [0, reserved) are never matched */
    int32_t unk;     /* the unknown id, < reserved */
    char *pool;      /* every piece, NUL-terminated, back to back */
    size_t *off;     /* (n) start of piece i in pool */
    double *score;   /* (n) scores, null read as 0 */
    uint32_t *u16;   /* (n) length of each piece in UTF-16 code units: the backtracking step */
    /* the trie over pieces [reserved, n) */
    node *nodes;      /* (nnodes) */
    size_t nnodes;    /* nodes in use, root included */
    uint64_t *ekey;   /* (ecap) edge keys: parent << 21 | code point, + 1; 0 = empty slot */
    uint32_t *echild; /* (ecap) the child node of each edge */
    size_t ecap;      /* slots, a power of two at least twice the edges */
    size_t max_depth; /* code points of the longest piece in the trie */
};

/* ---- code points ----------------------------------------------------------------------- */

/* ---- the trie: nodes and an open-addressing table of edges ------------------------------ */

static uint64_t edge_key(size_t parent, uint32_t cp) {
    return ((uint64_t)parent << 21 | cp) + 1;
}

static size_t edge_slot(const fed_tokenizer *t, uint64_t key) {
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    return (size_t)h & (t->ecap - 1);
}

/* The child of parent along cp, or 0 (the root is nobody's child). */
static size_t child(const fed_tokenizer *t, size_t parent, uint32_t cp) {
    uint64_t key = edge_key(parent, cp);
    for (size_t i = edge_slot(t, key);; i = (i + 1) & (t->ecap - 1)) {
        if (t->ekey[i] == key) return t->echild[i];
        if (t->ekey[i] == 0) return 0;
    }
}

/* Builds the trie of pieces [reserved, n). edges bounds the edges (code points of all
 * those pieces), so the tables never grow. */
static fed_err build_trie(fed_tokenizer *t, size_t edges) {
    size_t cap = 16;
    while (cap < 2 * edges + 2) cap *= 2;
    t->ecap = cap;
    t->ekey = fed_calloc(cap, sizeof *t->ekey);
    t->echild = fed_mallocarray(cap, sizeof *t->echild);
    t->nodes = fed_mallocarray(edges + 1, sizeof *t->nodes);
    if (!t->ekey || !t->echild || !t->nodes) return FED_ENOMEM;
    t->nodes[0].id = -1;
    t->nodes[0].score = 0.0;
    t->nnodes = 1;
    for (size_t id = t->reserved; id < t->n; id++) {
        const unsigned char *p = (const unsigned char *)t->pool + t->off[id];
        size_t at = 0, depth = 0;
        for (size_t k = 0; p[k]; depth++) {
            uint32_t cp;
            k += fed_utf8_decode(p + k, &cp);
            size_t next = child(t, at, cp);
            if (!next) {
                uint64_t key = edge_key(at, cp);
                size_t i = edge_slot(t, key);
                while (t->ekey[i]) i = (i + 1) & (t->ecap - 1);
                next = t->nnodes++;
                t->ekey[i] = key;
                t->echild[i] = (uint32_t)next;
                t->nodes[next].id = -1;
                t->nodes[next].score = 0.0;
            }
            at = next;
        }
        if (depth == 0) continue;      /* an empty piece is never inserted */
        t->nodes[at].id = (int32_t)id; /* a duplicate piece: the later one wins */
        t->nodes[at].score = t->score[id];
        if (depth > t->max_depth) t->max_depth = depth;
    }
    return FED_OK;
}

/* ---- parsing ------------------------------------------------------------------------------ */

void fed_tokenizer_destroy(fed_tokenizer **t) {
    if (!t || !*t) return;
    fed_tokenizer *p = *t;
    fed_bpe_destroy(&p->bpe);
    fed_free(p->pool);
    fed_free(p->off);
    fed_free(p->score);
    fed_free(p->u16);
    fed_free(p->nodes);
    fed_free(p->ekey);
    fed_free(p->echild);
    fed_free(p);
    *t = NULL;
}

/* An integer field of the object form in [lo, hi]. */
static fed_err int_field(const cJSON *root, const char *key, double lo, double hi, const char *what,
                         size_t *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it) return fed_errorf(FED_EFORMAT, "%s: no \"%s\"", what, key);
    double d = cJSON_IsNumber(it) ? it->valuedouble : -1.0;
    if (!(d >= lo && d <= hi && d == floor(d)))
        return fed_errorf(FED_EFORMAT, "%s: \"%s\" must be an integer in [%.0f, %.0f]", what, key,
                          lo, hi);
    *v = (size_t)d;
    return FED_OK;
}

/* The vocabulary array and the reserved/unk numbers of either form. */
static fed_err read_form(const cJSON *root, const char *what, const cJSON **vocab, size_t *reserved,
                         size_t *unk) {
    if (cJSON_IsArray(root)) {
        *vocab = root;
        *reserved = BARE_RESERVED;
        *unk = BARE_UNK;
        return FED_OK;
    }
    if (!cJSON_IsObject(root))
        return fed_errorf(FED_EFORMAT,
                          "%s: expected an array of [piece, score] or an object "
                          "{\"type\":\"unigram\",\"reserved\",\"unk\",\"vocab\"}",
                          what);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "unigram") != 0)
        return fed_errorf(FED_EFORMAT, "%s: \"type\" must be \"unigram\" or \"bpe\"", what);
    static const char *const keys[] = {"type", "reserved", "unk", "vocab"};
    bool seen[4] = {false, false, false, false};
    for (const cJSON *it = root->child; it; it = it->next) {
        size_t k = 0;
        while (k < 4 && strcmp(it->string, keys[k]) != 0) k++;
        if (k == 4) return fed_errorf(FED_EFORMAT, "%s: unknown field \"%s\"", what, it->string);
        if (seen[k]) return fed_errorf(FED_EFORMAT, "%s: \"%s\" appears twice", what, it->string);
        seen[k] = true;
    }
    *vocab = cJSON_GetObjectItemCaseSensitive(root, "vocab");
    if (!cJSON_IsArray(*vocab))
        return fed_errorf(FED_EFORMAT, "%s: \"vocab\" must be an array of [piece, score]", what);
    fed_err err = int_field(root, "reserved", 1, (double)FED_TOKENIZER_MAX_VOCAB, what, reserved);
    if (!err) err = int_field(root, "unk", 0, (double)FED_TOKENIZER_MAX_VOCAB, what, unk);
    if (!err && *unk >= *reserved)
        err = fed_errorf(FED_EFORMAT, "%s: \"unk\" (%zu) must be one of the %zu reserved ids", what,
                         *unk, *reserved);
    return err;
}

/* UTF-16 code units of the valid UTF-8 s[0..n), and its code points. */
static void lengths(const char *s, size_t n, size_t *u16, size_t *cps) {
    *u16 = *cps = 0;
    for (size_t k = 0; k < n;) {
        uint32_t cp;
        k += fed_utf8_decode((const unsigned char *)s + k, &cp);
        *u16 += cp > 0xffff ? 2 : 1;
        (*cps)++;
    }
}

/* Checks every entry and copies pieces and scores into t; *edges gets the code points of
 * the pieces past the reserved ones. */
static fed_err read_entries(fed_tokenizer *t, const cJSON *vocab, const char *what, size_t *edges) {
    size_t bytes = 0, i = 0;
    *edges = 0;
    for (const cJSON *e = vocab->child; e; e = e->next, i++) {
        const cJSON *p = cJSON_IsArray(e) ? e->child : NULL;
        const cJSON *s = p ? p->next : NULL;
        if (!p || !s || s->next)
            return fed_errorf(FED_EFORMAT, "%s: entry %zu: expected [piece, score]", what, i);
        if (!cJSON_IsString(p))
            return fed_errorf(FED_EFORMAT, "%s: entry %zu: piece must be a string", what, i);
        if (!cJSON_IsNull(s) && !(cJSON_IsNumber(s) && isfinite(s->valuedouble)))
            return fed_errorf(FED_EFORMAT, "%s: entry %zu: score must be a finite number or null",
                              what, i);
        size_t len = strlen(p->valuestring);
        if (len > FED_TOKENIZER_MAX_PIECE)
            return fed_errorf(FED_ERANGE, "%s: entry %zu: piece of %zu bytes; the limit is %d",
                              what, i, len, FED_TOKENIZER_MAX_PIECE);
        size_t bad = fed_utf8_bad_at(p->valuestring, len);
        if (bad < len)
            return fed_errorf(FED_EFORMAT, "%s: entry %zu: piece has invalid UTF-8 at byte %zu",
                              what, i, bad);
        size_t u16, cps;
        lengths(p->valuestring, len, &u16, &cps);
        if (i == (size_t)t->unk && u16 == 0)
            return fed_errorf(FED_EFORMAT, "%s: entry %zu: the unknown piece must not be empty",
                              what, i);
        t->off[i] = bytes;
        memcpy(t->pool + bytes, p->valuestring, len + 1);
        bytes += len + 1;
        t->score[i] = cJSON_IsNull(s) ? 0.0 : s->valuedouble;
        t->u16[i] = (uint32_t)u16;
        if (i >= t->reserved) *edges += cps;
    }
    return FED_OK;
}

/* The tokenizer of a parsed document. */
static fed_err from_json(fed_tokenizer **out, const cJSON *root, const char *what) {
    const cJSON *vocab = NULL;
    size_t reserved = 0, unk = 0;
    fed_err err = read_form(root, what, &vocab, &reserved, &unk);
    if (err) return err;
    size_t n = 0, plen = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        if (++n > FED_TOKENIZER_MAX_VOCAB)
            return fed_errorf(FED_ERANGE, "%s: more than %zu vocabulary entries", what,
                              FED_TOKENIZER_MAX_VOCAB);
        /* Bounded by the JSON text; read_entries checks what these are. */
        const cJSON *p = cJSON_IsArray(e) ? e->child : NULL;
        plen += (cJSON_IsString(p) ? strlen(p->valuestring) : 0) + 1;
    }
    if (n == 0) return fed_errorf(FED_EFORMAT, "%s: empty vocabulary", what);
    if (n <= reserved)
        return fed_errorf(FED_EFORMAT, "%s: %zu entries, none past the %zu reserved ones", what, n,
                          reserved);
    fed_tokenizer *t = fed_calloc(1, sizeof *t);
    if (!t) return FED_ENOMEM;
    t->n = n;
    t->reserved = reserved;
    t->unk = (int32_t)unk;
    t->off = fed_mallocarray(n, sizeof *t->off);
    t->score = fed_mallocarray(n, sizeof *t->score);
    t->u16 = fed_mallocarray(n, sizeof *t->u16);
    t->pool = fed_malloc(plen);
    size_t edges = 0;
    if (!t->off || !t->score || !t->u16 || !t->pool) {
        err = FED_ENOMEM;
        goto fail;
    }
    if ((err = read_entries(t, vocab, what, &edges))) goto fail;
    if (edges > UINT32_MAX - 1) {
        err = fed_errorf(FED_ERANGE, "%s: too many code points in the pieces", what);
        goto fail;
    }
    if ((err = build_trie(t, edges))) goto fail;
    *out = t;
    return FED_OK;
fail:
    fed_tokenizer_destroy(&t);
    return err;
}

fed_err fed_tokenizer_parse(fed_tokenizer **out, const char *json, size_t len, const char *what) {
    *out = NULL;
    if (!what) what = "tokenizer";
    if (!json && len) return fed_errorf(FED_EINVAL, "%s: no text", what);
    if (len > FED_TOKENIZER_MAX_FILE)
        return fed_errorf(FED_ERANGE, "%s: %zu bytes; a vocabulary is at most %zu", what, len,
                          FED_TOKENIZER_MAX_FILE);
    size_t nul = fed__data_json_nul(json, len);
    if (nul < len)
        return fed_errorf(FED_EFORMAT, "%s: byte %zu: \\u0000 is not allowed in a piece", what,
                          nul);
    cJSON *root = fed__data_json_parse(json, len);
    if (!root) {
        if (fed_json_oom()) return fed_errorf(FED_ENOMEM, "%s: out of memory reading JSON", what);
        return fed_errorf(FED_EFORMAT, "%s: invalid JSON", what);
    }
    const cJSON *type =
        cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "type") : NULL;
    fed_err err;
    if (cJSON_IsString(type) && strcmp(type->valuestring, "bpe") == 0) {
        fed_tokenizer *t = fed_calloc(1, sizeof *t);
        err = t ? fed__bpe_from_json(&t->bpe, root, what) : FED_ENOMEM;
        if (err)
            fed_tokenizer_destroy(&t);
        else
            *out = t;
    } else {
        err = from_json(out, root, what);
    }
    cJSON_Delete(root);
    return err;
}

fed_err fed_tokenizer_load(fed_tokenizer **out, const char *path) {
    *out = NULL;
    unsigned char *buf = NULL;
    size_t n = 0;
    fed_err err = fed__data_read_file(path, &buf, &n);
    if (!err) err = fed_tokenizer_parse(out, (const char *)buf, n, path);
    fed_free(buf);
    return err;
}

/* ---- the object form ----------------------------------------------------------------- */

/* The shortest of %.15g..%.17g that reads back as v. */
static void format_double(char *buf, size_t cap, double v) {
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

fed_err fed_tokenizer_to_json(const fed_tokenizer *t, char **json) {
    *json = NULL;
    if (t->bpe) return fed_bpe_to_json(t->bpe, json);
    fed_err err = FED_ENOMEM;
    char *text = NULL;
    fed_json_hooks();
    cJSON *root = cJSON_CreateObject();
    cJSON *vocab = NULL;
    if (!root || !cJSON_AddStringToObject(root, "type", "unigram") ||
        !cJSON_AddNumberToObject(root, "reserved", (double)t->reserved) ||
        !cJSON_AddNumberToObject(root, "unk", (double)t->unk) ||
        !(vocab = cJSON_AddArrayToObject(root, "vocab")))
        goto fail;
    for (size_t i = 0; i < t->n; i++) {
        char num[40];
        format_double(num, sizeof num, t->score[i] == 0.0 ? 0.0 : t->score[i]);
        cJSON *e = cJSON_CreateArray();
        if (!e || !cJSON_AddItemToArray(vocab, e)) {
            cJSON_Delete(e);
            goto fail;
        }
        cJSON *p = cJSON_CreateString(t->pool + t->off[i]);
        if (!p || !cJSON_AddItemToArray(e, p)) {
            cJSON_Delete(p);
            goto fail;
        }
        cJSON *s = cJSON_CreateRaw(num);
        if (!s || !cJSON_AddItemToArray(e, s)) {
            cJSON_Delete(s);
            goto fail;
        }
    }
    if (!(text = cJSON_PrintUnformatted(root))) goto fail;
    if ((*json = fed_strdup(text))) err = FED_OK;
fail:
    if (err) fed_errorf(err, "out of memory writing the tokenizer as JSON");
    cJSON_free(text);
    cJSON_Delete(root);
    return err;
}

/* ---- queries ------------------------------------------------------------------------------- */

const char *fed_tokenizer_kind(const fed_tokenizer *t) {
    return t->bpe ? "bpe" : "unigram";
}

size_t fed_tokenizer_vocab_size(const fed_tokenizer *t) {
    return t->bpe ? fed_bpe_vocab_size(t->bpe) : t->n;
}

size_t fed_tokenizer_reserved(const fed_tokenizer *t) {
    return t->bpe ? 0 : t->reserved;
}

int32_t fed_tokenizer_unk(const fed_tokenizer *t) {
    return t->bpe ? -1 : t->unk;
}

const char *fed_tokenizer_piece(const fed_tokenizer *t, int32_t id) {
    if (t->bpe) return fed_bpe_symbol(t->bpe, id);
    if (id < 0 || (size_t)id >= t->n) return NULL;
    return t->pool + t->off[id];
}

/* ---- encoding ------------------------------------------------------------------------------ */

/* The code points of the reference's processed input: "▁" and then the normal form with
 * every U+0020 replaced by "▁". *cps is fed_malloc'd (NULL with *n = 0 for empty text). */
static fed_err symbols(const char *text, size_t len, uint32_t **cps, size_t *n) {
    *cps = NULL;
    *n = 0;
    if (len == 0) return FED_OK;
    size_t nlen = 0;
    uint8_t *norm = u8_normalize(UNINORM_NFKC, (const uint8_t *)text, len, NULL, &nlen);
    if (!norm) {
        if (errno == ENOMEM) return fed_errorf(FED_ENOMEM, "out of memory normalising text");
        return fed_errorf(FED_EFORMAT, "text cannot be normalised to NFKC");
    }
    fed_err err = FED_OK;
    if (nlen == 0) goto done;
    /* At most one code point per byte, plus the separator in front. */
    uint32_t *out = fed_mallocarray(nlen + 1, sizeof *out);
    if (!out) {
        err = FED_ENOMEM;
        goto done;
    }
    size_t k = 0;
    out[k++] = SEPARATOR;
    for (size_t i = 0; i < nlen;) {
        uint32_t cp;
        i += fed_utf8_decode(norm + i, &cp);
        out[k++] = cp == 0x20 ? SEPARATOR : cp;
    }
    *cps = out;
    *n = k;
done:
    free(norm); /* libunistring allocates with malloc */
    return err;
}

/* The reference's relaxation of the best path ending at `end` by a piece starting at
 * `start`: an unset (exactly 0) best takes anything, otherwise ties go to the later. */
static void relax(double *best, int32_t *words, size_t start, size_t end, double score,
                  int32_t id) {
    double s = score + best[start];
    if (best[end] == 0.0 || s >= best[end]) {
        best[end] = s;
        words[end] = id;
    }
}

fed_err fed_tokenizer_encode(const fed_tokenizer *t, const char *text, size_t len, int32_t *ids,
                             size_t max, size_t *n) {
    *n = 0;
    if (!text && len) return fed_errorf(FED_EINVAL, "no text");
    if (t->bpe) return fed_bpe_encode(t->bpe, text, len, ids, max, n);
    if (len > FED_TOKENIZER_MAX_TEXT)
        return fed_errorf(FED_ERANGE, "text of %zu bytes; the limit is %zu", len,
                          FED_TOKENIZER_MAX_TEXT);
    size_t bad = fed_utf8_bad_at(text, len);
    if (bad < len) return fed_errorf(FED_EFORMAT, "invalid UTF-8 at byte %zu", bad);
    uint32_t *cps = NULL;
    size_t m = 0;
    fed_err err = symbols(text, len, &cps, &m);
    if (err || m == 0) return err;
    double *best = fed_calloc(m + 1, sizeof *best);
    int32_t *words = fed_mallocarray(m + 1, sizeof *words);
    int32_t *out = fed_mallocarray(m, sizeof *out);
    if (!best || !words || !out) {
        err = FED_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i <= m; i++) words[i] = t->unk;
    /* Pushing from each start in ascending order hands every end position its candidates
     * in the order the reference pulls them (start ascending), with best[start] final. */
    for (size_t i = 0; i < m; i++) {
        bool matched = false;
        size_t at = 0;
        for (size_t j = i; j < m && j - i < t->max_depth; j++) {
            if (!(at = child(t, at, cps[j]))) break;
            if (t->nodes[at].id >= 0) {
                relax(best, words, i, j + 1, t->nodes[at].score, t->nodes[at].id);
                matched = true;
            }
        }
        if (!matched) relax(best, words, i, i + 1, 0.0, t->unk);
    }
    /* Back from the end by each piece's UTF-16 length; unknown runs collapse. */
    size_t k = 0;
    bool prev_unk = false;
    for (size_t it = m; it > 0;) {
        int32_t id = words[it];
        if (!(prev_unk && id == t->unk)) out[k++] = id;
        prev_unk = id == t->unk;
        size_t step = t->u16[id];
        it = step >= it ? 0 : it - step;
    }
    for (size_t i = 0; i < k && i < max; i++) ids[i] = out[k - 1 - i];
    *n = k;
done:
    fed_free(cps);
    fed_free(best);
    fed_free(words);
    fed_free(out);
    return err;
}

/* ---- decoding ------------------------------------------------------------------------------ */

fed_err fed_tokenizer_decode(const fed_tokenizer *t, const int32_t *ids, size_t n, char **text,
                             size_t *len) {
    *text = NULL;
    *len = 0;
    if (t->bpe) return fed_bpe_decode(t->bpe, ids, n, text, len);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n)
            return fed_errorf(FED_EINVAL, "id %ld at %zu is not in [0, %zu)", (long)ids[i], i,
                              t->n);
        if ((size_t)ids[i] >= t->reserved || ids[i] == t->unk)
            total += strlen(t->pool + t->off[ids[i]]);
    }
    char *o = fed_malloc(total + 1);
    if (!o) return fed_errorf(FED_ENOMEM, "out of memory decoding %zu ids", n);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if ((size_t)ids[i] < t->reserved && ids[i] != t->unk) continue;
        for (const char *p = t->pool + t->off[ids[i]]; *p;) {
            if (memcmp(p, "\xe2\x96\x81", 3) == 0) { /* "▁": a space, none at the start */
                if (at) o[at++] = ' ';
                p += 3;
            } else {
                o[at++] = *p++;
            }
        }
    }
    o[at] = '\0';
    *text = o;
    *len = at;
    return FED_OK;
}
