/* GPT-2's byte-level BPE (see bpe.h): the byte table, encoder.json and vocab.bpe with
 * their hash maps (symbol -> id, pair of ids -> rank and result), the pre-tokeniser as a
 * state machine over code points, the merge loop and decoding. The unigram tokenizer of
 * USE-lite is tokenizer.c; data sets of token ids live in text.c. */
#include "dataset/bpe.h"
#include "core/alloc.h"
#include "core/json.h"
#include "core/utf8.h"
#include "dataset/data_internal.h"

#include <cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unictype.h>

/* Characters of the byte table: bytes_to_unicode maps every byte below U+0144. */
#define TABLE_CHARS 0x144u
#define NO_RANK     UINT32_MAX

/* A pair of adjacent symbols that merges. */
typedef struct merge {
    uint64_t key;   /* (first << 24 | second) + 1; 0 = empty slot */
    uint32_t rank;  /* its line in vocab.bpe, from 0 */
    int32_t result; /* the id of first+second */
} merge;

struct fed_bpe {
    /* the encoder, in id order */
    size_t n;             /* symbols */
    char *pool;           /* every symbol, NUL-terminated, back to back */
    size_t *off;          /* (n) start of symbol i in pool */
    uint32_t *slen;       /* (n) bytes of symbol i */
    char *bytes;          /* the bytes each symbol stands for, back to back */
    size_t *boff;         /* (n + 1) symbol i's bytes are bytes[boff[i] .. boff[i + 1]) */
    int32_t *sslot;       /* (scap) symbol -> id, open addressing; -1 = empty */
    size_t scap;          /* slots, a power of two at least twice n */
    int32_t byte_id[256]; /* the id of each byte's symbol */
    /* the merges */
    size_t nmerges;   /* lines of vocab.bpe after the first */
    merge *mslot;     /* (mcap) pairs -> rank, open addressing */
    size_t mcap;      /* slots, a power of two at least twice the merges and their aliases */
    bool comma_keys;  /* the reference's "first,second" aliases are in mslot (see bpe.h) */
    bool json;        /* read from fedtune's JSON form: messages name merges[i], not lines */
    int32_t *mfirst;  /* (nmerges) each merge's first symbol, by rank: for fed_bpe_to_json */
    int32_t *msecond; /* (nmerges) and its second */
};

/* ---- the byte table ---------------------------------------------------------------------- */

/* bytes_to_unicode: the character of each byte, and the byte of each character (-1 for
 * characters that stand for none). */
static void byte_table(uint32_t ch[256], int16_t byte[TABLE_CHARS]) {
    for (uint32_t c = 0; c < TABLE_CHARS; c++) byte[c] = -1;
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        ch[b] = printable ? b : 256 + extra++;
        byte[ch[b]] = (int16_t)b;
    }
}

/* ---- hash maps --------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ h >> 31;
}

/* The id of the symbol s[0..n), or -1. */
static int32_t symbol_id(const fed_bpe *b, const char *s, size_t n) {
    for (size_t i = hash_bytes(s, n) & (b->scap - 1);; i = (i + 1) & (b->scap - 1)) {
        int32_t id = b->sslot[i];
        if (id < 0) return -1;
        if (b->slen[id] == n && memcmp(b->pool + b->off[id], s, n) == 0) return id;
    }
}

static uint64_t pair_key(int32_t first, int32_t second) {
    return ((uint64_t)first << 24 | (uint64_t)second) + 1;
}

static size_t pair_slot(const fed_bpe *b, uint64_t key) {
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    return (size_t)(h ^ h >> 29) & (b->mcap - 1);
}

/* The merge of the pair, or NULL. */
static const merge *find_merge(const fed_bpe *b, int32_t first, int32_t second) {
    uint64_t key = pair_key(first, second);
    for (size_t i = pair_slot(b, key);; i = (i + 1) & (b->mcap - 1)) {
        if (b->mslot[i].key == key) return &b->mslot[i];
        if (b->mslot[i].key == 0) return NULL;
    }
}

/* Adds a pair (the table never fills: it has room for every line and alias). */
static void add_merge(fed_bpe *b, int32_t first, int32_t second, uint32_t rank, int32_t result) {
    uint64_t key = pair_key(first, second);
    size_t i = pair_slot(b, key);
    while (b->mslot[i].key) i = (i + 1) & (b->mcap - 1);
    b->mslot[i] = (merge){key, rank, result};
}

/* ---- encoder.json ------------------------------------------------------------------------ */

void fed_bpe_destroy(fed_bpe **b) {
    if (!b || !*b) return;
    fed_bpe *p = *b;
    fed_free(p->pool);
    fed_free(p->off);
    fed_free(p->slen);
    fed_free(p->bytes);
    fed_free(p->boff);
    fed_free(p->sslot);
    fed_free(p->mslot);
    fed_free(p->mfirst);
    fed_free(p->msecond);
    fed_free(p);
    *b = NULL;
}

size_t fed_bpe_vocab_size(const fed_bpe *b) {
    return b->n;
}

size_t fed_bpe_merges(const fed_bpe *b) {
    return b->nmerges;
}

/* Checks one entry of encoder.json and stores its symbol under its id. */
static fed_err add_symbol(fed_bpe *b, const cJSON *it, size_t entry, size_t *pool_at,
                          const int16_t *byte, const char *what) {
    const char *s = it->string;
    size_t len = strlen(s);
    double d = cJSON_IsNumber(it) ? it->valuedouble : -1.0;
    if (!(d >= 0 && d < (double)b->n && d == floor(d)))
        return fed_errorf(FED_EFORMAT, "%s: entry %zu: the id must be an integer in [0, %zu)", what,
                          entry, b->n);
    size_t id = (size_t)d;
    if (len == 0) return fed_errorf(FED_EFORMAT, "%s: entry %zu: empty symbol", what, entry);
    if (len > FED_BPE_MAX_SYMBOL)
        return fed_errorf(FED_ERANGE, "%s: entry %zu: symbol longer than %d bytes", what, entry,
                          FED_BPE_MAX_SYMBOL);
    size_t bad = fed_utf8_bad_at(s, len);
    if (bad < len)
        return fed_errorf(FED_EFORMAT, "%s: entry %zu: invalid UTF-8 at byte %zu of the symbol",
                          what, entry, bad);
    size_t chars = 0;
    for (size_t k = 0; k < len; chars++) {
        uint32_t cp;
        k += fed_utf8_decode((const unsigned char *)s + k, &cp);
        if (cp >= TABLE_CHARS || byte[cp] < 0)
            return fed_errorf(FED_EFORMAT,
                              "%s: entry %zu: U+%04X is not a character of the byte table", what,
                              entry, (unsigned)cp);
    }
    if (b->slen[id] != UINT32_MAX)
        return fed_errorf(FED_EFORMAT, "%s: entry %zu: id %zu appears twice", what, entry, id);
    if (symbol_id(b, s, len) >= 0)
        return fed_errorf(FED_EFORMAT, "%s: entry %zu: symbol \"%s\" appears twice", what, entry,
                          s);
    memcpy(b->pool + *pool_at, s, len + 1);
    b->off[id] = *pool_at;
    b->slen[id] = (uint32_t)len;
    b->boff[id + 1] = chars; /* a count for now: prefix sums after the last entry */
    *pool_at += len + 1;
    size_t i = hash_bytes(s, len) & (b->scap - 1);
    while (b->sslot[i] >= 0) i = (i + 1) & (b->scap - 1);
    b->sslot[i] = (int32_t)id;
    return FED_OK;
}

/* The symbols of encoder.json's root object, their byte strings and the byte ids. */
static fed_err read_encoder(fed_bpe *b, const cJSON *root, const char *what) {
    if (!cJSON_IsObject(root))
        return fed_errorf(FED_EFORMAT, "%s: expected an object of symbol -> id", what);
    size_t n = 0, pool = 0;
    for (const cJSON *it = root->child; it; it = it->next, n++) pool += strlen(it->string) + 1;
    if (n > FED_BPE_MAX_VOCAB)
        return fed_errorf(FED_ERANGE, "%s: more than %zu symbols", what, FED_BPE_MAX_VOCAB);
    if (n < 256) return fed_errorf(FED_EFORMAT, "%s: %zu symbols, fewer than 256 bytes", what, n);
    b->n = n;
    b->scap = 16;
    while (b->scap < 2 * n) b->scap *= 2;
    b->pool = fed_malloc(pool);
    b->off = fed_mallocarray(n, sizeof *b->off);
    b->slen = fed_mallocarray(n, sizeof *b->slen);
    b->boff = fed_calloc(n + 1, sizeof *b->boff);
    b->sslot = fed_mallocarray(b->scap, sizeof *b->sslot);
    if (!b->pool || !b->off || !b->slen || !b->boff || !b->sslot) return FED_ENOMEM;
    memset(b->slen, 0xff, n * sizeof *b->slen);
    memset(b->sslot, 0xff, b->scap * sizeof *b->sslot);
    uint32_t ch[256];
    int16_t byte[TABLE_CHARS];
    byte_table(ch, byte);
    size_t entry = 0, at = 0;
    for (const cJSON *it = root->child; it; it = it->next, entry++) {
        fed_err err = add_symbol(b, it, entry, &at, byte, what);
        if (err) return err;
    }
    for (size_t i = 0; i < n; i++) b->boff[i + 1] += b->boff[i];
    b->bytes = fed_malloc(b->boff[n] + 1);
    if (!b->bytes) return FED_ENOMEM;
    for (size_t id = 0; id < n; id++) {
        const unsigned char *s = (const unsigned char *)b->pool + b->off[id];
        char *o = b->bytes + b->boff[id];
        for (size_t k = 0; s[k];) {
            uint32_t cp;
            k += fed_utf8_decode(s + k, &cp);
            *o++ = (char)byte[cp];
        }
    }
    for (int v = 0; v < 256; v++) {
        char buf[3];
        size_t len = ch[v] < 0x80 ? 1 : 2;
        if (len == 1)
            buf[0] = (char)ch[v];
        else {
            buf[0] = (char)(0xc0 | ch[v] >> 6);
            buf[1] = (char)(0x80 | (ch[v] & 0x3f));
        }
        b->byte_id[v] = symbol_id(b, buf, len);
        if (b->byte_id[v] < 0)
            return fed_errorf(FED_EFORMAT, "%s: no symbol for byte 0x%02x (U+%04X)", what, v,
                              (unsigned)ch[v]);
    }
    return FED_OK;
}

/* ---- vocab.bpe --------------------------------------------------------------------------- */

/* A merge line whose symbols hold a comma, kept for the aliases (see bpe.h). */
typedef struct comma_merge {
    int32_t first, second; /* the ids of its symbols */
    uint32_t rank;         /* its rank */
} comma_merge;

static bool is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Where merge `rank` came from, for messages: "vocab.bpe:7" (file line rank + 2) or, in
 * the JSON form, "tok.json: merges[5]". */
static void merge_loc(const fed_bpe *b, char *loc, size_t cap, const char *what, uint32_t rank) {
    if (b->json)
        snprintf(loc, cap, "%s: merges[%u]", what, (unsigned)rank);
    else
        snprintf(loc, cap, "%s:%zu", what, (size_t)rank + 2);
}

/* Reads one merge line s[0..n) of rank `rank`. */
static fed_err read_merge(fed_bpe *b, const char *s, size_t n, uint32_t rank, const char *what,
                          int32_t *first, int32_t *second) {
    size_t found = 0, at[2] = {0, 0}, len[2] = {0, 0};
    char loc[512];
    merge_loc(b, loc, sizeof loc, what, rank);
    for (size_t k = 0; k < n;) {
        while (k < n && is_blank(s[k])) k++;
        if (k == n) break;
        size_t start = k;
        while (k < n && !is_blank(s[k])) k++;
        if (found < 2) {
            at[found] = start;
            len[found] = k - start;
        }
        found++;
    }
    if (found != 2) return fed_errorf(FED_EFORMAT, "%s: expected 2 symbols, found %zu", loc, found);
    int32_t id[2];
    for (int i = 0; i < 2; i++) {
        id[i] = symbol_id(b, s + at[i], len[i]);
        if (id[i] < 0)
            return fed_errorf(FED_EFORMAT, "%s: \"%.*s\" is not a symbol of the encoder", loc,
                              (int)(len[i] < 64 ? len[i] : 64), s + at[i]);
    }
    char joined[2 * FED_BPE_MAX_SYMBOL];
    memcpy(joined, s + at[0], len[0]);
    memcpy(joined + len[0], s + at[1], len[1]);
    int32_t result = symbol_id(b, joined, len[0] + len[1]);
    if (result < 0)
        return fed_errorf(FED_EFORMAT, "%s: the merge's result \"%.*s\" is not in the encoder", loc,
                          (int)(len[0] + len[1] < 64 ? len[0] + len[1] : 64), joined);
    const merge *dup = find_merge(b, id[0], id[1]);
    if (dup)
        return fed_errorf(FED_EFORMAT, "%s: the pair of %s %u again", loc,
                          b->json ? "merges" : "line", (unsigned)dup->rank + (b->json ? 0 : 2));
    add_merge(b, id[0], id[1], rank, result);
    b->mfirst[rank] = id[0];
    b->msecond[rank] = id[1];
    *first = id[0];
    *second = id[1];
    return FED_OK;
}

/* The reference's rank key of a pair is "first,second": every other split of that string
 * at a comma into two symbols (x, y) takes the merge's rank, and makes x+y. */
static fed_err add_aliases(fed_bpe *b, const comma_merge *m, const char *what) {
    char loc[512];
    merge_loc(b, loc, sizeof loc, what, m->rank);
    size_t la = b->slen[m->first], lb = b->slen[m->second];
    char key[2 * FED_BPE_MAX_SYMBOL + 1], joined[2 * FED_BPE_MAX_SYMBOL];
    memcpy(key, b->pool + b->off[m->first], la);
    key[la] = ',';
    memcpy(key + la + 1, b->pool + b->off[m->second], lb);
    size_t n = la + 1 + lb;
    for (size_t i = 1; i + 1 < n; i++) {
        if (key[i] != ',' || i == la) continue;
        int32_t x = symbol_id(b, key, i), y = symbol_id(b, key + i + 1, n - i - 1);
        if (x < 0 || y < 0) continue;
        const merge *other = find_merge(b, x, y);
        if (other)
            return fed_errorf(FED_EFORMAT, "%s: the reference's key \"%.*s\" is also that of %s %u",
                              loc, (int)n, key, b->json ? "merges" : "line",
                              (unsigned)other->rank + (b->json ? 0 : 2));
        memcpy(joined, key, i);
        memcpy(joined + i, key + i + 1, n - i - 1);
        int32_t result = symbol_id(b, joined, n - 1);
        if (result < 0)
            return fed_errorf(FED_EFORMAT,
                              "%s: the reference's key \"%.*s\" also merges \"%.*s\" and "
                              "\"%.*s\" into a symbol not in the encoder",
                              loc, (int)n, key, (int)i, key, (int)(n - i - 1), key + i + 1);
        add_merge(b, x, y, m->rank, result);
    }
    return FED_OK;
}

/* Room for `count` merges (and aliases from `commas` commas): the pair table, the
 * merges by rank and the list of merges whose symbols hold a comma (*cm). */
static fed_err merges_begin(fed_bpe *b, size_t count, size_t commas, comma_merge **cm) {
    b->mcap = 16;
    while (b->mcap < 2 * (count + commas + 1)) b->mcap *= 2;
    b->mslot = fed_calloc(b->mcap, sizeof *b->mslot);
    b->mfirst = fed_mallocarray(count + 1, sizeof *b->mfirst);
    b->msecond = fed_mallocarray(count + 1, sizeof *b->msecond);
    *cm = fed_mallocarray(count + 1, sizeof **cm);
    return b->mslot && b->mfirst && b->msecond && *cm ? FED_OK : FED_ENOMEM;
}

/* Merge `rank`, s[0..n) "first second"; remembered in cm when it holds a comma. */
static fed_err take_merge(fed_bpe *b, const char *s, size_t n, uint32_t rank, const char *what,
                          comma_merge *cm, size_t *ncm) {
    int32_t first = 0, second = 0;
    fed_err err = read_merge(b, s, n, rank, what, &first, &second);
    if (!err && memchr(s, ',', n)) cm[(*ncm)++] = (comma_merge){first, second, rank};
    b->nmerges = (size_t)rank + 1;
    return err;
}

/* The aliases of the comma merges when b->comma_keys; frees cm. */
static fed_err merges_end(fed_bpe *b, fed_err err, comma_merge *cm, size_t ncm, const char *what) {
    for (size_t i = 0; !err && b->comma_keys && i < ncm; i++) err = add_aliases(b, &cm[i], what);
    fed_free(cm);
    return err;
}

/* The merges of vocab.bpe, after its first line. */
static fed_err read_merges(fed_bpe *b, const char *s, size_t n, const char *what) {
    if (n == 0 || s[n - 1] != '\n')
        return fed_errorf(
            FED_EFORMAT, "%s: must end with a newline (the reference ignores the last line)", what);
    size_t lines = 0, commas = 0;
    for (size_t i = 0; i < n; i++) {
        lines += s[i] == '\n';
        commas += s[i] == ',';
    }
    if (lines - 1 > UINT32_MAX / 4)
        return fed_errorf(FED_ERANGE, "%s: more than %u merges", what, UINT32_MAX / 4);
    comma_merge *cm = NULL;
    size_t ncm = 0;
    fed_err err = merges_begin(b, lines, commas, &cm);
    const char *p = (const char *)memchr(s, '\n', n) + 1, *end = s + n;
    for (uint32_t rank = 0; !err && p < end; rank++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        err = take_merge(b, p, (size_t)(nl - p), rank, what, cm, &ncm);
        p = nl + 1;
    }
    return merges_end(b, err, cm, ncm, what);
}

/* The "merges" array of the JSON form: strings "first second", by rank. */
static fed_err read_merges_json(fed_bpe *b, const cJSON *arr, const char *what) {
    size_t count = 0, commas = 0;
    for (const cJSON *it = arr->child; it; it = it->next, count++) {
        if (!cJSON_IsString(it))
            return fed_errorf(FED_EFORMAT, "%s: merges[%zu] must be a string \"first second\"",
                              what, count);
        for (const char *c = it->valuestring; *c; c++) commas += *c == ',';
    }
    if (count > UINT32_MAX / 4)
        return fed_errorf(FED_ERANGE, "%s: more than %u merges", what, UINT32_MAX / 4);
    comma_merge *cm = NULL;
    size_t ncm = 0;
    fed_err err = merges_begin(b, count, commas, &cm);
    uint32_t rank = 0;
    for (const cJSON *it = arr->child; !err && it; it = it->next, rank++)
        err = take_merge(b, it->valuestring, strlen(it->valuestring), rank, what, cm, &ncm);
    return merges_end(b, err, cm, ncm, what);
}

fed_err fed_bpe_parse(fed_bpe **out, const char *enc, size_t elen, const char *enc_what,
                      const char *merges, size_t mlen, const char *merges_what) {
    *out = NULL;
    size_t nul = fed__data_json_nul(enc, elen);
    if (nul < elen)
        return fed_errorf(FED_EFORMAT, "%s: \\u0000 at byte %zu: symbols cannot hold NUL", enc_what,
                          nul);
    if (memchr(merges, '\0', mlen)) return fed_errorf(FED_EFORMAT, "%s: a NUL byte", merges_what);
    fed_json_hooks();
    cJSON *root = fed__data_json_parse(enc, elen);
    if (!root) {
        if (fed_json_oom())
            return fed_errorf(FED_ENOMEM, "%s: out of memory reading JSON", enc_what);
        return fed_errorf(FED_EFORMAT, "%s: not valid JSON", enc_what);
    }
    fed_bpe *b = fed_calloc(1, sizeof *b);
    if (b) b->comma_keys = true; /* GPT-2's own files: the reference's quirk */
    fed_err err = b ? read_encoder(b, root, enc_what) : FED_ENOMEM;
    cJSON_Delete(root);
    if (!err) err = read_merges(b, merges, mlen, merges_what);
    if (err) {
        if (err == FED_ENOMEM) fed_errorf(FED_ENOMEM, "%s: out of memory", merges_what);
        fed_bpe_destroy(&b);
        return err;
    }
    *out = b;
    return FED_OK;
}

fed_err fed_bpe_load(fed_bpe **out, const char *encoder_json, const char *vocab_bpe) {
    *out = NULL;
    unsigned char *e = NULL, *m = NULL;
    size_t en = 0, mn = 0;
    fed_err err = fed__data_read_file(encoder_json, &e, &en);
    if (!err) err = fed__data_read_file(vocab_bpe, &m, &mn);
    if (!err)
        err = fed_bpe_parse(out, (const char *)e, en, encoder_json, (const char *)m, mn, vocab_bpe);
    fed_free(e);
    fed_free(m);
    return err;
}

/* ---- fedtune's JSON form ------------------------------------------------------------------ */

fed_err fed__bpe_from_json(fed_bpe **out, const cJSON *root, const char *what) {
    *out = NULL;
    static const char *const keys[] = {"type", "encoder", "merges", "comma_keys"};
    for (const cJSON *it = root->child; it; it = it->next) {
        size_t k = 0;
        while (k < 4 && strcmp(it->string, keys[k]) != 0) k++;
        if (k == 4) return fed_errorf(FED_EFORMAT, "%s: unknown field \"%s\"", what, it->string);
        if (cJSON_GetObjectItemCaseSensitive(root, keys[k]) != it)
            return fed_errorf(FED_EFORMAT, "%s: \"%s\" appears twice", what, it->string);
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    const cJSON *enc = cJSON_GetObjectItemCaseSensitive(root, "encoder");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(root, "merges");
    const cJSON *ck = cJSON_GetObjectItemCaseSensitive(root, "comma_keys");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "bpe") != 0)
        return fed_errorf(FED_EFORMAT, "%s: \"type\" must be \"bpe\"", what);
    if (!enc) return fed_errorf(FED_EFORMAT, "%s: no \"encoder\"", what);
    if (!cJSON_IsArray(merges))
        return fed_errorf(FED_EFORMAT, "%s: \"merges\" must be an array of \"first second\"", what);
    if (ck && !cJSON_IsBool(ck))
        return fed_errorf(FED_EFORMAT, "%s: \"comma_keys\" must be true or false", what);
    char ewhat[512];
    snprintf(ewhat, sizeof ewhat, "%s: encoder", what);
    fed_bpe *b = fed_calloc(1, sizeof *b);
    if (!b) return FED_ENOMEM;
    b->json = true;
    b->comma_keys = cJSON_IsTrue(ck);
    fed_err err = read_encoder(b, enc, ewhat);
    if (!err) err = read_merges_json(b, merges, what);
    if (err) {
        if (err == FED_ENOMEM) fed_errorf(FED_ENOMEM, "%s: out of memory", what);
        fed_bpe_destroy(&b);
        return err;
    }
    *out = b;
    return FED_OK;
}

fed_err fed_bpe_parse_json(fed_bpe **out, const char *json, size_t len, const char *what) {
    *out = NULL;
    if (!what) what = "tokenizer";
    size_t nul = fed__data_json_nul(json, len);
    if (nul < len)
        return fed_errorf(FED_EFORMAT, "%s: \\u0000 at byte %zu: symbols cannot hold NUL", what,
                          nul);
    fed_json_hooks();
    cJSON *root = fed__data_json_parse(json, len);
    if (!root) {
        if (fed_json_oom()) return fed_errorf(FED_ENOMEM, "%s: out of memory reading JSON", what);
        return fed_errorf(FED_EFORMAT, "%s: not valid JSON", what);
    }
    fed_err err = cJSON_IsObject(root) ? fed__bpe_from_json(out, root, what)
                                       : fed_errorf(FED_EFORMAT,
                                                    "%s: expected an object {\"type\":\"bpe\", "
                                                    "\"encoder\", \"merges\"}",
                                                    what);
    cJSON_Delete(root);
    return err;
}

const char *fed_bpe_symbol(const fed_bpe *b, int32_t id) {
    if (id < 0 || (size_t)id >= b->n) return NULL;
    return b->pool + b->off[id];
}

fed_err fed__bpe_write_json(size_t n, size_t m, const int32_t *first, const int32_t *second,
                            bool comma_keys, fed__bpe_symbol_fn sym, const void *user,
                            const char *what, char **json) {
    *json = NULL;
    fed_err err = FED_ENOMEM;
    char *text = NULL, x[FED_BPE_MAX_SYMBOL + 1], y[FED_BPE_MAX_SYMBOL + 1];
    char pair[2 * FED_BPE_MAX_SYMBOL + 2];
    fed_json_hooks();
    cJSON *root = cJSON_CreateObject(), *enc = NULL, *merges = NULL;
    if (!root || !cJSON_AddStringToObject(root, "type", "bpe") ||
        !(enc = cJSON_AddObjectToObject(root, "encoder")) ||
        !(merges = cJSON_AddArrayToObject(root, "merges")) ||
        (comma_keys && !cJSON_AddTrueToObject(root, "comma_keys")))
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (!cJSON_AddNumberToObject(enc, sym(user, i, x), (double)i)) goto fail;
    for (size_t r = 0; r < m; r++) {
        snprintf(pair, sizeof pair, "%s %s", sym(user, (size_t)first[r], x),
                 sym(user, (size_t)second[r], y));
        cJSON *s = cJSON_CreateString(pair);
        if (!s || !cJSON_AddItemToArray(merges, s)) {
            cJSON_Delete(s);
            goto fail;
        }
    }
    if (!(text = cJSON_PrintUnformatted(root))) goto fail;
    if ((*json = fed_strdup(text))) err = FED_OK;
fail:
    if (err) fed_errorf(err, "out of memory writing %s", what);
    cJSON_free(text);
    cJSON_Delete(root);
    return err;
}

static const char *pool_symbol(const void *user, size_t id, char *buf) {
    (void)buf; /* the pool holds them NUL-terminated already */
    const fed_bpe *b = user;
    return b->pool + b->off[id];
}

fed_err fed_bpe_to_json(const fed_bpe *b, char **json) {
    return fed__bpe_write_json(b->n, b->nmerges, b->mfirst, b->msecond, b->comma_keys, pool_symbol,
                               b, "the BPE tokenizer as JSON", json);
}

/* ---- encoding ---------------------------------------------------------------------------- */

/* The classes of the pre-tokeniser's regular expression. */
enum { C_SPACE, C_LETTER, C_NUMBER, C_OTHER };

/* JavaScript's \s, \p{L}, \p{N}, or none of them. */
static int class_of(uint32_t cp) {
    if (cp < 0x80) {
        if (cp == ' ' || (cp >= '\t' && cp <= '\r')) return C_SPACE;
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return C_LETTER;
        if (cp >= '0' && cp <= '9') return C_NUMBER;
        return C_OTHER;
    }
    if (cp == 0xfeff || cp == 0x2028 || cp == 0x2029 || uc_is_general_category(cp, UC_CATEGORY_Zs))
        return C_SPACE;
    if (uc_is_general_category(cp, UC_CATEGORY_L)) return C_LETTER;
    if (uc_is_general_category(cp, UC_CATEGORY_N)) return C_NUMBER;
    return C_OTHER;
}

/* The class of the character at s[p] (p < n) and its length in *len. */
static int class_at(const unsigned char *s, size_t p, size_t *len) {
    uint32_t cp;
    *len = fed_utf8_decode(s + p, &cp);
    return class_of(cp);
}

/* The end of the run of class c from p. */
static size_t run_end(const unsigned char *s, size_t n, size_t p, int c) {
    size_t len;
    while (p < n && class_at(s, p, &len) == c) p += len;
    return p;
}

/* The end of the word that starts at p < n (valid UTF-8): the regular expression of
 * bpe.h, alternative by alternative. */
static size_t word_end(const unsigned char *s, size_t n, size_t p) {
    if (s[p] == '\'' && p + 1 < n) {
        unsigned char c = s[p + 1], d = p + 2 < n ? s[p + 2] : 0;
        if (c == 's' || c == 't' || c == 'm' || c == 'd') return p + 2;
        if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l'))
            return p + 3;
    }
    size_t len, len2;
    int c = class_at(s, p, &len);
    if (s[p] == ' ' && p + 1 < n) {
        int next = class_at(s, p + 1, &len2);
        if (next != C_SPACE) return run_end(s, n, p + 1, next); /* " ?" took the space */
    }
    if (c != C_SPACE) return run_end(s, n, p, c);
    /* \s+(?!\S): all of a run that ends the text; else all but its last character,
     * when that leaves one; else \s+, the single character. */
    size_t e = p, last = p;
    while (e < n && class_at(s, e, &len) == C_SPACE) {
        last = e;
        e += len;
    }
    return e == n || last == p ? e : last;
}

size_t fed__bpe_word_end(const unsigned char *s, size_t n, size_t p) {
    return word_end(s, n, p);
}

void fed__bpe_byte_chars(uint32_t ch[256]) {
    int16_t byte[TABLE_CHARS];
    byte_table(ch, byte);
}

/* Buffers of one encode call. */
typedef struct scratch {
    int32_t *sym; /* (cap) the symbols of the current word */
    size_t cap;   /* its room */
} scratch;

/* BPE on the bytes s[0..n) of one word; appends its ids at out[*k..] (those below max). */
static fed_err encode_word(const fed_bpe *b, scratch *w, const unsigned char *s, size_t n,
                           int32_t *out, size_t max, size_t *k) {
    if (n > w->cap) {
        size_t cap = w->cap ? w->cap : 64;
        while (cap < n) cap *= 2;
        int32_t *p = fed_realloc(w->sym, cap * sizeof *p);
        if (!p) return fed_errorf(FED_ENOMEM, "out of memory encoding text");
        w->sym = p;
        w->cap = cap;
    }
    int32_t *sym = w->sym;
    for (size_t i = 0; i < n; i++) sym[i] = b->byte_id[s[i]];
    while (n >= 2) {
        const merge *best = NULL;
        for (size_t i = 0; i + 1 < n; i++) {
            const merge *m = find_merge(b, sym[i], sym[i + 1]);
            if (m && (!best || m->rank <= best->rank)) best = m; /* a tie: the last pair */
        }
        if (!best) break;
        int32_t first = (int32_t)((best->key - 1) >> 24),
                second = (int32_t)((best->key - 1) & 0xffffff);
        size_t j = 0;
        for (size_t i = 0; i < n; j++) {
            if (i + 1 < n && sym[i] == first && sym[i + 1] == second) {
                sym[j] = best->result;
                i += 2;
            } else
                sym[j] = sym[i++];
        }
        n = j;
    }
    for (size_t i = 0; i < n; i++, (*k)++)
        if (*k < max) out[*k] = sym[i];
    return FED_OK;
}

fed_err fed_bpe_encode(const fed_bpe *b, const char *text, size_t len, int32_t *ids, size_t max,
                       size_t *n) {
    *n = 0;
    if (len > FED_BPE_MAX_TEXT)
        return fed_errorf(FED_ERANGE, "text of %zu bytes, more than %zu", len, FED_BPE_MAX_TEXT);
    size_t bad = fed_utf8_bad_at(text, len);
    if (bad < len) return fed_errorf(FED_EFORMAT, "invalid UTF-8 at byte %zu", bad);
    const unsigned char *s = (const unsigned char *)text;
    scratch w = {NULL, 0};
    fed_err err = FED_OK;
    size_t k = 0;
    for (size_t p = 0; !err && p < len;) {
        size_t e = word_end(s, len, p);
        err = encode_word(b, &w, s + p, e - p, ids, max, &k);
        p = e;
    }
    fed_free(w.sym);
    if (!err) *n = k;
    return err;
}

/* ---- decoding ---------------------------------------------------------------------------- */

fed_err fed_bpe_decode(const fed_bpe *b, const int32_t *ids, size_t n, char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= b->n)
            return fed_errorf(FED_EINVAL, "id %ld at %zu is not in [0, %zu)", (long)ids[i], i,
                              b->n);
        if (!fed_add_ok(total, b->boff[ids[i] + 1] - b->boff[ids[i]], &total))
            return fed_errorf(FED_ERANGE, "decoding %zu ids: too many bytes", n);
    }
    char *o = fed_malloc(total + 1);
    if (!o) return fed_errorf(FED_ENOMEM, "out of memory decoding %zu ids", n);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t from = b->boff[ids[i]], to = b->boff[ids[i] + 1];
        memcpy(o + at, b->bytes + from, to - from);
        at += to - from;
    }
    o[at] = '\0';
    *text = o;
    *len = at;
    return FED_OK;
}
