/* `fedtune embed`: sentence embeddings from a model that carries its tokenizer (an
 * imported Universal Sentence Encoder lite, `fedtune import`). The input has one JSON
 * string per line; the output one JSON array of the model's outputs (%.9g) per line, or
 * with --ids {"ids": [token ids], "vec": [...]}, the form tests/tools/use_ref.js prints.
 *
 * Each text becomes the model's input row: its token ids, truncated to the input length,
 * then -1 (padding) to the end; rows go through fed_model_forward in eval mode in
 * batches, up to EMBED_CHUNK sentences at a time sorted by length so that a batch (which
 * runs at its longest sentence) holds sentences of similar length; the output keeps the
 * input order. An empty text is an error naming its line (the reference embedder throws on
 * one; fedtune refuses it clearly instead), as is a line that is not one JSON string of
 * valid UTF-8 without NUL characters. --out is written through a temporary file and a
 * rename: a failed run leaves no partial file. */
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/prep.h"
#include "core/alloc.h"
#include "core/arena.h"
#include "core/blas.h"
#include "core/utf8.h"
#include "dataset/tokenizer.h"
#include "models/use_lite.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct embed_cfg {
    const char *model; /* model file with fedtune.tokenizer */
    const char *input; /* one JSON string per line */
    const char *out;   /* output file (default: stdout) */
    size_t batch;      /* sentences per forward pass */
    int ids;           /* print {"ids", "vec"} objects */
    size_t threads;    /* OpenBLAS threads */
} embed_cfg;

#define F(field) offsetof(embed_cfg, field)
static const opt_spec embed_opts[] = {
    {"model", OPT_STRING, NULL, 1, 0, NULL, F(model),
     "model file with a tokenizer (.safetensors from fedtune import)"},
    {"input", OPT_STRING, NULL, 1, 0, NULL, F(input), "sentences: one JSON string per line"},
    {"out", OPT_STRING, NULL, 1, 0, NULL, F(out), "output file (default: standard output)"},
    {"batch", OPT_SIZE, "64", 1, 4096, NULL, F(batch), "sentences per forward pass"},
    {"ids", OPT_BOOL, "false", 1, 0, NULL, F(ids),
     "print {\"ids\": [the token ids the model reads], \"vec\": [...]} per line"},
    {"threads", OPT_SIZE, "1", 1, 256, NULL, F(threads), "OpenBLAS threads"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table embed_table = {
    "embed",
    "Embed sentences (one JSON string per line) with a model that carries its tokenizer; one "
    "JSON array per line out.",
    embed_opts, "model"};

/* Longest input line accepted. */
#define LINE_MAX_BYTES ((size_t)1 << 20)

/* ---- input lines ------------------------------------------------------------------------ */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s[i]);
        if (h < 0) return false;
        v = v * 16 + (unsigned)h;
    }
    *out = v;
    return true;
}

static size_t put_utf8(char *dst, unsigned cp) {
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xc0 | cp >> 6);
        dst[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (char)(0xe0 | cp >> 12);
        dst[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        dst[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    dst[0] = (char)(0xf0 | cp >> 18);
    dst[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    dst[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decodes the line s (valid UTF-8, NUL-terminated) holding one JSON string, with white
 * space around it, into dst (at least strlen(s) + 1 bytes). NULL when fine, else why. */
static const char *json_string(const char *s, char *dst) {
    while (*s == ' ' || *s == '\t' || *s == '\r') s++;
    if (*s++ != '"') return "not a JSON string";
    size_t k = 0;
    for (;;) {
        unsigned char c = (unsigned char)*s++;
        if (c == '"') break;
        if (c == '\0') return "the JSON string does not end";
        if (c < 0x20) return "a control character inside the JSON string";
        if (c != '\\') {
            dst[k++] = (char)c;
            continue;
        }
        unsigned cp = 0, lo = 0;
        switch (*s++) {
        case '"':
            dst[k++] = '"';
            break;
        case '\\':
            dst[k++] = '\\';
            break;
        case '/':
            dst[k++] = '/';
            break;
        case 'b':
            dst[k++] = '\b';
            break;
        case 'f':
            dst[k++] = '\f';
            break;
        case 'n':
            dst[k++] = '\n';
            break;
        case 'r':
            dst[k++] = '\r';
            break;
        case 't':
            dst[k++] = '\t';
            break;
        case 'u':
            if (!hex4(s, &cp)) return "a bad \\u escape";
            s += 4;
            if (cp >= 0xdc00 && cp <= 0xdfff) return "a lone low surrogate";
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (s[0] != '\\' || s[1] != 'u' || !hex4(s + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
                    return "a high surrogate without its low half";
                s += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (cp == 0) return "a NUL character (\\u0000) in the text";
            k += put_utf8(dst + k, cp);
            break;
        default:
            return "a bad escape";
        }
    }
    while (*s == ' ' || *s == '\t' || *s == '\r') s++;
    if (*s) return "more after the JSON string";
    dst[k] = '\0';
    return NULL;
}

/* ---- output ----------------------------------------------------------------------------- */

typedef struct sink {
    FILE *f;        /* where lines go */
    char *tmp;      /* --out's temporary file (NULL: stdout) */
    const char *to; /* --out */
} sink;

static fed_err sink_open(sink *o, const char *path) {
    memset(o, 0, sizeof *o);
    if (!path) {
        o->f = stdout;
        return FED_OK;
    }
    size_t n = strlen(path) + 16;
    if (!(o->tmp = fed_malloc(n))) return FED_ENOMEM;
    snprintf(o->tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(o->tmp);
    if (fd < 0 || !(o->f = fdopen(fd, "w"))) {
        fed_err err = fed_errorf(FED_EIO, "--out: cannot create %s: %s", o->tmp, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(o->tmp);
        }
        fed_free(o->tmp);
        o->tmp = NULL;
        return err;
    }
    o->to = path;
    return FED_OK;
}

/* Finishes the output: on success renames the temporary file over --out, on failure
 * removes it. */
static fed_err sink_close(sink *o, fed_err err) {
    if (!o->tmp) {
        if (!err && fflush(stdout) != 0) err = fed_errorf(FED_EIO, "standard output: write error");
        return err;
    }
    bool bad = ferror(o->f) || fflush(o->f) != 0 || fsync(fileno(o->f)) != 0;
    bad = fclose(o->f) != 0 || bad;
    if (!err && bad)
        err = fed_errorf(FED_EIO, "--out: cannot write %s: %s", o->tmp, strerror(errno));
    if (!err && rename(o->tmp, o->to) != 0)
        err = fed_errorf(FED_EIO, "--out: cannot rename %s to %s: %s", o->tmp, o->to,
                         strerror(errno));
    if (err) unlink(o->tmp);
    fed_free(o->tmp);
    return err;
}

static void print_row(FILE *f, const int32_t *ids, size_t nids, const float *v, size_t dim) {
    if (ids) {
        fputs("{\"ids\":[", f);
        for (size_t i = 0; i < nids; i++) fprintf(f, i ? ",%d" : "%d", (int)ids[i]);
        fputs("],\"vec\":", f);
    }
    fputc('[', f);
    for (size_t i = 0; i < dim; i++) fprintf(f, i ? ",%.9g" : "%.9g", (double)v[i]);
    fputs(ids ? "]}\n" : "]\n", f);
}

/* ---- the run ---------------------------------------------------------------------------- */

/* Sentences read before they are sorted by length into batches. */
#define EMBED_CHUNK 1024

/* What a run holds. */
typedef struct embed_run {
    const embed_cfg *c;
    fed_model *m;       /* the model */
    fed_tokenizer *tok; /* its tokenizer (dataset/tokenizer.h) */
    fed_arena *arena;   /* forward scratch */
    size_t len;         /* tokens per input row */
    size_t dim;         /* floats per output row */
    float *x;           /* (batch, len) inputs of one forward pass */
    int32_t *ids;       /* (EMBED_CHUNK, len) token ids as the model reads them (truncated) */
    size_t *nids;       /* (EMBED_CHUNK) ids per sentence */
    size_t *order;      /* (EMBED_CHUNK) sentence indices, shortest first */
    float *y;           /* (EMBED_CHUNK, dim) the embeddings, input order */
    char *text;         /* a decoded line */
} embed_run;

static bool grow_text(embed_run *r, size_t n) {
    char *t = fed_realloc(r->text, n);
    if (t) r->text = t;
    return t != NULL;
}

static _Thread_local const size_t *sort_nids;

static int by_length(const void *a, const void *b) {
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    if (sort_nids[i] != sort_nids[j]) return sort_nids[i] < sort_nids[j] ? -1 : 1;
    return i < j ? -1 : (i > j);
}

/* Embeds the rows sentences read so far and prints them in input order. A batch runs at
 * the length of its longest sentence, so sentences of similar length go together. */
static fed_err run_chunk(embed_run *r, size_t rows, FILE *f) {
    for (size_t i = 0; i < rows; i++) r->order[i] = i;
    sort_nids = r->nids;
    qsort(r->order, rows, sizeof *r->order, by_length);
    for (size_t b = 0; b < rows; b += r->c->batch) {
        size_t nb = rows - b < r->c->batch ? rows - b : r->c->batch;
        for (size_t i = 0; i < nb; i++) {
            size_t s = r->order[b + i];
            for (size_t t = 0; t < r->len; t++)
                r->x[i * r->len + t] =
                    t < r->nids[s] ? (float)r->ids[s * r->len + t] : FED_USE_LITE_PAD;
        }
        const float *y = NULL;
        fed_arena_reset(r->arena);
        fed_err err = fed_model_forward(r->m, r->arena, r->x, nb, FED_MODE_EVAL, NULL, &y);
        if (err) return err;
        for (size_t i = 0; i < nb; i++)
            memcpy(r->y + r->order[b + i] * r->dim, y + i * r->dim, r->dim * sizeof *y);
    }
    for (size_t i = 0; i < rows; i++)
        print_row(f, r->c->ids ? r->ids + i * r->len : NULL, r->nids[i], r->y + i * r->dim, r->dim);
    return FED_OK;
}

/* Checks and decodes one input line into r->text; NULL when fine, else why not. */
static const char *decode_line(embed_run *r, char *line, size_t n, fed_err *err) {
    if (n > LINE_MAX_BYTES) return "longer than 1 MiB";
    if (memchr(line, 0, n)) return "a NUL byte";
    if (fed_utf8_bad_at(line, n) != n) return "not valid UTF-8";
    if (!grow_text(r, n + 1)) {
        *err = FED_ENOMEM;
        return NULL;
    }
    const char *why = json_string(line, r->text);
    if (!why && !r->text[0]) why = "empty text (fedtune embeds no empty sentence)";
    return why;
}

/* Reads, tokenizes and embeds every line of the input. */
static fed_err embed_lines(embed_run *r, FILE *in, FILE *out) {
    const embed_cfg *c = r->c;
    char *line = NULL;
    size_t cap = 0, rows = 0, lineno = 0;
    fed_err err = FED_OK;
    ssize_t got;
    while (!err && (got = getline(&line, &cap, in)) >= 0) {
        lineno++;
        size_t n = (size_t)got;
        if (n && line[n - 1] == '\n') line[--n] = '\0';
        const char *why = decode_line(r, line, n, &err);
        if (err) break;
        if (why) {
            err = fed_errorf(FED_EFORMAT, "%s:%zu: %s", c->input, lineno, why);
            break;
        }
        size_t total = 0;
        err = fed_tokenizer_encode(r->tok, r->text, strlen(r->text), r->ids + rows * r->len, r->len,
                                   &total);
        if (err) {
            err = fed_errprefix(err, "%s:%zu", c->input, lineno);
            break;
        }
        if (total == 0) {
            err = fed_errorf(FED_EFORMAT, "%s:%zu: the text has no tokens", c->input, lineno);
            break;
        }
        r->nids[rows] = total < r->len ? total : r->len;
        if (++rows == EMBED_CHUNK) {
            err = run_chunk(r, rows, out);
            rows = 0;
        }
    }
    if (!err && ferror(in)) err = fed_errorf(FED_EIO, "%s: read error", c->input);
    if (!err && lineno == 0) err = fed_errorf(FED_EFORMAT, "%s: no sentences", c->input);
    if (!err && rows) err = run_chunk(r, rows, out);
    free(line);
    return err;
}

static fed_err run_embed(const void *cfg) {
    const embed_cfg *c = cfg;
    if (!c->model) return fed_errorf(FED_EINVAL, "--model is required");
    if (!c->input) return fed_errorf(FED_EINVAL, "--input is required");
    fed_blas_set_threads((int)c->threads);
    embed_run r = {.c = c};
    fed_meta *meta = NULL;
    FILE *in = NULL;
    sink out = {0};
    bool opened = false;
    fed_err err = prep_load_model(&r.m, &meta, c->model, NULL, false);
    if (err) goto done;
    const char *tj = fed_meta_get(meta, FED_META_TOKENIZER);
    if (!tj) {
        err = fed_errorf(FED_EFORMAT,
                         "%s: no %s in its metadata (a model from fedtune import has one)",
                         c->model, FED_META_TOKENIZER);
        goto done;
    }
    if ((err = fed_tokenizer_parse(&r.tok, tj, strlen(tj), FED_META_TOKENIZER))) {
        err = fed_errprefix(err, "%s", c->model);
        goto done;
    }
    r.len = fed_model_input_size(r.m);
    r.dim = fed_model_output_size(r.m);
    size_t cells = 0, ids = 0, outs = 0;
    err = FED_ENOMEM;
    if (!fed_mul_ok(c->batch, r.len, &cells) || !fed_mul_ok(EMBED_CHUNK, r.len, &ids) ||
        !fed_mul_ok(EMBED_CHUNK, r.dim, &outs) || !(r.x = fed_mallocarray(cells, sizeof *r.x)) ||
        !(r.ids = fed_mallocarray(ids, sizeof *r.ids)) ||
        !(r.nids = fed_calloc(EMBED_CHUNK, sizeof *r.nids)) ||
        !(r.order = fed_calloc(EMBED_CHUNK, sizeof *r.order)) ||
        !(r.y = fed_mallocarray(outs, sizeof *r.y)) || (err = fed_arena_new(&r.arena, 0)))
        goto done;
    if (!(in = fopen(c->input, "r"))) {
        err = fed_errorf(FED_EIO, "--input: cannot open %s: %s", c->input, strerror(errno));
        goto done;
    }
    if ((err = sink_open(&out, c->out))) goto done;
    opened = true;
    err = embed_lines(&r, in, out.f);
done:
    if (opened) err = sink_close(&out, err);
    if (in) fclose(in);
    fed_free(r.text);
    fed_free(r.x);
    fed_free(r.ids);
    fed_free(r.nids);
    fed_free(r.order);
    fed_free(r.y);
    fed_arena_destroy(&r.arena);
    fed_tokenizer_destroy(&r.tok);
    fed_meta_destroy(&meta);
    fed_model_destroy(&r.m);
    return err;
}

int cmd_embed(int argc, char **argv) {
    embed_cfg c;
    return cli_run(&embed_table, &c, sizeof c, argc, argv, run_embed);
}
