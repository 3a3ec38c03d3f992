/* The byte-level BPE trainer (see bpe_train.h): distinct words in an open-addressing
 * table, then the merge loop over them with a table of pair counts that is updated, word
 * by word, only where a merge happened. Encoding with the result is bpe.c's. */
#include "dataset/bpe_train.h"
#include "core/alloc.h"
#include "core/json.h"
#include "core/utf8.h"
#include "dataset/data_internal.h"

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct fed_bpe_trainer {
    char *pool;       /* the distinct words' bytes, back to back */
    size_t pool_len;  /* bytes used */
    size_t pool_cap;  /* bytes allocated */
    size_t *woff;     /* (nwords) start of word i in pool */
    uint32_t *wlen;   /* (nwords) its bytes */
    uint64_t *wcount; /* (nwords) how often it was seen */
    size_t nwords;    /* distinct words */
    size_t wcap;      /* entries of woff, wlen, wcount */
    int32_t *slot;    /* (scap) word table, open addressing; -1 = empty */
    size_t scap;      /* slots, a power of two, at least twice nwords */
    size_t seen;      /* words seen, repeats included */
    bool learned;     /* fed_bpe_trainer_learn ran */
};

/* A pair of symbols with its count. */
typedef struct pair {
    uint64_t key;  /* (first << 32 | second) + 1; 0 = empty slot */
    int64_t count; /* occurrences, weighted by word counts */
} pair;

/* The pair table. */
typedef struct pairs {
    pair *slot; /* (cap) */
    size_t cap; /* a power of two */
    size_t n;   /* keys in use */
} pairs;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ h >> 31;
}

fed_err fed_bpe_trainer_new(fed_bpe_trainer **out) {
    *out = NULL;
    fed_bpe_trainer *t = fed_calloc(1, sizeof *t);
    if (!t) return FED_ENOMEM;
    t->scap = 1024;
    t->slot = fed_mallocarray(t->scap, sizeof *t->slot);
    if (!t->slot) {
        fed_free(t);
        return FED_ENOMEM;
    }
    memset(t->slot, 0xff, t->scap * sizeof *t->slot);
    *out = t;
    return FED_OK;
}

void fed_bpe_trainer_destroy(fed_bpe_trainer **t) {
    if (!t || !*t) return;
    fed_bpe_trainer *p = *t;
    fed_free(p->pool);
    fed_free(p->woff);
    fed_free(p->wlen);
    fed_free(p->wcount);
    fed_free(p->slot);
    fed_free(p);
    *t = NULL;
}

size_t fed_bpe_trainer_words(const fed_bpe_trainer *t) {
    return t->seen;
}

size_t fed_bpe_trainer_distinct(const fed_bpe_trainer *t) {
    return t->nwords;
}

/* Doubles the word table. */
static fed_err rehash_words(fed_bpe_trainer *t) {
    size_t cap = t->scap * 2;
    int32_t *s = fed_mallocarray(cap, sizeof *s);
    if (!s) return FED_ENOMEM;
    memset(s, 0xff, cap * sizeof *s);
    for (size_t w = 0; w < t->nwords; w++) {
        size_t i = hash_bytes(t->pool + t->woff[w], t->wlen[w]) & (cap - 1);
        while (s[i] >= 0) i = (i + 1) & (cap - 1);
        s[i] = (int32_t)w;
    }
    fed_free(t->slot);
    t->slot = s;
    t->scap = cap;
    return FED_OK;
}

/* Counts one word w[0..n). */
static fed_err add_word(fed_bpe_trainer *t, const char *w, size_t n) {
    size_t i = hash_bytes(w, n) & (t->scap - 1);
    for (; t->slot[i] >= 0; i = (i + 1) & (t->scap - 1)) {
        int32_t k = t->slot[i];
        if (t->wlen[k] == n && memcmp(t->pool + t->woff[k], w, n) == 0) {
            t->wcount[k]++;
            return FED_OK;
        }
    }
    if (n > UINT32_MAX || t->nwords >= INT32_MAX / 2)
        return fed_errorf(FED_ERANGE, "too many distinct words or too long a word");
    if (t->nwords == t->wcap) {
        size_t cap = t->wcap ? 2 * t->wcap : 1024;
        size_t *o = fed_realloc(t->woff, cap * sizeof *o);
        if (o) t->woff = o;
        uint32_t *l = o ? fed_realloc(t->wlen, cap * sizeof *l) : NULL;
        if (l) t->wlen = l;
        uint64_t *c = l ? fed_realloc(t->wcount, cap * sizeof *c) : NULL;
        if (!c) return FED_ENOMEM;
        t->wcount = c;
        t->wcap = cap;
    }
    if (t->pool_len + n > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 65536;
        while (cap < t->pool_len + n) cap *= 2;
        char *p = fed_realloc(t->pool, cap);
        if (!p) return FED_ENOMEM;
        t->pool = p;
        t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_len, w, n);
    t->woff[t->nwords] = t->pool_len;
    t->wlen[t->nwords] = (uint32_t)n;
    t->wcount[t->nwords] = 1;
    t->pool_len += n;
    t->slot[i] = (int32_t)t->nwords++;
    return 2 * t->nwords > t->scap ? rehash_words(t) : FED_OK;
}

fed_err fed_bpe_trainer_add(fed_bpe_trainer *t, const char *text, size_t len) {
    if (t->learned) return fed_errorf(FED_EINVAL, "the trainer has learned already");
    size_t bad = fed_utf8_bad_at(text, len);
    if (bad < len) return fed_errorf(FED_EFORMAT, "invalid UTF-8 at byte %zu", bad);
    const unsigned char *s = (const unsigned char *)text;
    for (size_t p = 0; p < len;) {
        size_t e = fed__bpe_word_end(s, len, p);
        fed_err err = add_word(t, text + p, e - p);
        if (err) return err;
        t->seen++;
        p = e;
    }
    return FED_OK;
}

/* ---- the pair table ------------------------------------------------------------------------ */

static size_t pair_slot(uint64_t key, size_t cap) {
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    return (size_t)(h ^ h >> 29) & (cap - 1);
}

/* Adds delta to the count of (a, b), inserting it. */
static fed_err pair_add(pairs *P, int32_t a, int32_t b, int64_t delta) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t i = pair_slot(key, P->cap);
    while (P->slot[i].key && P->slot[i].key != key) i = (i + 1) & (P->cap - 1);
    if (!P->slot[i].key) {
        if (2 * (P->n + 1) > P->cap) {
            size_t cap = 2 * P->cap;
            pair *s = fed_calloc(cap, sizeof *s);
            if (!s) return FED_ENOMEM;
            for (size_t k = 0; k < P->cap; k++) {
                if (!P->slot[k].key) continue;
                size_t j = pair_slot(P->slot[k].key, cap);
                while (s[j].key) j = (j + 1) & (cap - 1);
                s[j] = P->slot[k];
            }
            fed_free(P->slot);
            P->slot = s;
            P->cap = cap;
            return pair_add(P, a, b, delta);
        }
        P->slot[i].key = key;
        P->n++;
    }
    P->slot[i].count += delta;
    return FED_OK;
}

/* Adds sign x count of every adjacent pair of sym[0..n). */
static fed_err word_pairs(pairs *P, const int32_t *sym, size_t n, int64_t count) {
    for (size_t i = 0; i + 1 < n; i++) {
        fed_err err = pair_add(P, sym[i], sym[i + 1], count);
        if (err) return err;
    }
    return FED_OK;
}

/* ---- learning ------------------------------------------------------------------------------ */

/* What the merge loop works on. */
typedef struct learner {
    int32_t *sym;         /* the words' symbols, word w at sym[soff[w] ..] */
    size_t *soff;         /* (nwords) */
    uint32_t *slen;       /* (nwords) current symbols of each word */
    uint32_t *bytes;      /* (vocab) bytes each symbol stands for */
    int32_t *first;       /* (vocab - 256) each merge's first symbol */
    int32_t *second;      /* (vocab - 256) and second */
    int32_t byte_id[256]; /* the id of each byte's symbol */
    int32_t id_byte[256]; /* and the byte of ids 0..255 */
} learner;

static void learner_free(learner *L) {
    fed_free(L->sym);
    fed_free(L->soff);
    fed_free(L->slen);
    fed_free(L->bytes);
    fed_free(L->first);
    fed_free(L->second);
}

/* The pair to merge next: the largest count >= 2 whose symbol stays within the limit, a
 * tie to the smaller key. 0 when none. */
static uint64_t best_pair(const pairs *P, const learner *L) {
    uint64_t best = 0;
    int64_t top = 1;
    for (size_t i = 0; i < P->cap; i++) {
        const pair *p = &P->slot[i];
        if (!p->key || p->count < top || (p->count == top && best && p->key > best)) continue;
        uint64_t k = p->key - 1;
        if (L->bytes[k >> 32] + L->bytes[k & 0xffffffffu] > FED_BPE_TRAIN_MAX_BYTES) continue;
        if (p->count == 1) continue;
        best = p->key;
        top = p->count;
    }
    return best;
}

/* Replaces (a, b) by id in word w, left to right without overlaps, keeping P current. */
static fed_err merge_word(learner *L, pairs *P, size_t w, int64_t count, int32_t a, int32_t b,
                          int32_t id) {
    int32_t *s = L->sym + L->soff[w];
    size_t n = L->slen[w];
    bool has = false;
    for (size_t i = 0; i + 1 < n && !has; i++) has = s[i] == a && s[i + 1] == b;
    if (!has) return FED_OK;
    fed_err err = word_pairs(P, s, n, -count);
    size_t j = 0;
    for (size_t i = 0; i < n; j++) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            s[j] = id;
            i += 2;
        } else {
            s[j] = s[i++];
        }
    }
    L->slen[w] = (uint32_t)j;
    return err ? err : word_pairs(P, s, j, count);
}

/* The byte ids in GPT-2's order: bytes sorted by their table character. */
static void byte_ids(learner *L) {
    uint32_t ch[256];
    fed__bpe_byte_chars(ch);
    for (int b = 0; b < 256; b++) {
        int32_t id = 0;
        for (int c = 0; c < 256; c++) id += ch[c] < ch[b];
        L->byte_id[b] = id;
        L->id_byte[id] = b;
    }
}

/* Appends the table characters of symbol id's bytes to buf (UTF-8) at *at. */
static void symbol_text(const learner *L, int32_t id, const uint32_t *ch, char *buf, size_t *at) {
    if (id < 256) {
        uint32_t c = ch[L->id_byte[id]];
        if (c < 0x80) {
            buf[(*at)++] = (char)c;
        } else {
            buf[(*at)++] = (char)(0xc0 | c >> 6);
            buf[(*at)++] = (char)(0x80 | (c & 0x3f));
        }
        return;
    }
    symbol_text(L, L->first[id - 256], ch, buf, at);
    symbol_text(L, L->second[id - 256], ch, buf, at);
}

/* A learned symbol's text for fed__bpe_write_json (at most 2 FED_BPE_TRAIN_MAX_BYTES
 * bytes of UTF-8, well inside FED_BPE_MAX_SYMBOL). */
typedef struct symbol_src {
    const learner *L;
    uint32_t ch[256]; /* GPT-2's byte table */
} symbol_src;

static const char *learned_symbol(const void *user, size_t id, char *buf) {
    const symbol_src *src = user;
    size_t at = 0;
    symbol_text(src->L, (int32_t)id, src->ch, buf, &at);
    buf[at] = '\0';
    return buf;
}

/* The JSON form of the 256 bytes and m merges. */
static fed_err write_json(const learner *L, size_t m, char **json) {
    symbol_src src = {.L = L};
    fed__bpe_byte_chars(src.ch);
    return fed__bpe_write_json(256 + m, m, L->first, L->second, false, learned_symbol, &src,
                               "the learned tokenizer", json);
}

/* Sets up L: every word as its byte ids, and the pair counts in P. */
static fed_err learner_start(learner *L, pairs *P, const fed_bpe_trainer *t, size_t vocab) {
    byte_ids(L);
    L->sym = fed_mallocarray(t->pool_len ? t->pool_len : 1, sizeof *L->sym);
    L->soff = fed_mallocarray(t->nwords ? t->nwords : 1, sizeof *L->soff);
    L->slen = fed_mallocarray(t->nwords ? t->nwords : 1, sizeof *L->slen);
    L->bytes = fed_mallocarray(vocab, sizeof *L->bytes);
    L->first = fed_mallocarray(vocab - 255, sizeof *L->first);
    L->second = fed_mallocarray(vocab - 255, sizeof *L->second);
    P->cap = 1024;
    P->slot = fed_calloc(P->cap, sizeof *P->slot);
    if (!L->sym || !L->soff || !L->slen || !L->bytes || !L->first || !L->second || !P->slot)
        return FED_ENOMEM;
    for (size_t i = 0; i < 256; i++) L->bytes[i] = 1;
    for (size_t w = 0; w < t->nwords; w++) {
        L->soff[w] = t->woff[w];
        L->slen[w] = t->wlen[w];
        const unsigned char *s = (const unsigned char *)t->pool + t->woff[w];
        for (size_t i = 0; i < t->wlen[w]; i++) L->sym[t->woff[w] + i] = L->byte_id[s[i]];
        fed_err err = word_pairs(P, L->sym + L->soff[w], L->slen[w], (int64_t)t->wcount[w]);
        if (err) return err;
    }
    return FED_OK;
}

fed_err fed_bpe_trainer_learn(fed_bpe_trainer *t, size_t vocab, char **json, size_t *merges) {
    *json = NULL;
    *merges = 0;
    if (vocab < FED_BPE_TRAIN_MIN_VOCAB || vocab > FED_BPE_TRAIN_MAX_VOCAB)
        return fed_errorf(FED_EINVAL, "vocabulary size %zu is not in [%d, %zu]", vocab,
                          FED_BPE_TRAIN_MIN_VOCAB, FED_BPE_TRAIN_MAX_VOCAB);
    if (t->learned) return fed_errorf(FED_EINVAL, "the trainer has learned already");
    t->learned = true;
    learner L;
    memset(&L, 0, sizeof L);
    pairs P = {NULL, 0, 0};
    fed_err err = learner_start(&L, &P, t, vocab);
    size_t m = 0;
    while (!err && 256 + m < vocab) {
        uint64_t key = best_pair(&P, &L);
        if (!key) break;
        int32_t a = (int32_t)((key - 1) >> 32), b = (int32_t)((key - 1) & 0xffffffffu);
        int32_t id = (int32_t)(256 + m);
        L.first[m] = a;
        L.second[m] = b;
        L.bytes[id] = L.bytes[a] + L.bytes[b];
        for (size_t w = 0; !err && w < t->nwords; w++)
            err = merge_word(&L, &P, w, (int64_t)t->wcount[w], a, b, id);
        m++;
    }
    if (!err) err = write_json(&L, m, json);
    if (!err) *merges = m;
    if (err == FED_ENOMEM) fed_errorf(FED_ENOMEM, "out of memory learning the tokenizer");
    fed_free(P.slot);
    learner_free(&L);
    return err;
}
