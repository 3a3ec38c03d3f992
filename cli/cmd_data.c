/* `fedtune data info FILE`: what a labeled data file holds and what is wrong with it
 * before any training: shape, label counts, class imbalance, duplicate and conflicting
 * rows, constant features, and what the missing-value policy did. `fedtune data
 * tokenize`: the token ids a tokenizer gives each line of a file. */
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/prep.h"
#include "core/alloc.h"
#include "dataset/text.h"
#include "dataset/bpe.h"
#include "dataset/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct data_info_cfg {
    const char *data; /* labeled data file */
    data_cfg dc;      /* how to read it */
    size_t max_len;   /* text data: sequence length T */
} data_info_cfg;

#define F(field) offsetof(data_info_cfg, field)
static const opt_spec data_info_opts[] = {
    {"data", OPT_STRING, NULL, 1, 0, NULL, F(data),
     "labeled data (CSV, sklearn CSV, IDX; text: JSON lines, CSV with a text column)"},
    DATA_OPTS(F(dc)),
    TEXT_OPTS(F(dc)),
    {"max-len", OPT_SIZE, "128", 1, 1048576, NULL, F(max_len),
     "text data: token ids per example (longer texts are truncated)"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table data_info_table = {
    "data info",
    "Report on a labeled data file: size, label counts, imbalance, duplicates, conflicts, "
    "constant features.",
    data_info_opts, "data"};

/* The text lines of the report: texts, ids, unknown ids, truncation. */
static void print_text_stats(const fed_dataset *d, const fed_text_stats *st, size_t T) {
    printf("texts %zu, dropped (empty text) %zu; %zu token ids per example, padded with -1\n",
           st->rows, st->dropped_empty, T);
    printf("tokens %zu (%.2f per text, longest %zu), unknown %zu (%.2f%%), truncated to %zu: %zu "
           "texts\n",
           st->tokens, d->n ? (double)st->tokens / (double)d->n : 0.0, st->longest, st->unknown,
           st->tokens ? 100.0 * (double)st->unknown / (double)st->tokens : 0.0, T, st->truncated);
}

/* The length histogram of text data. */
static void print_lengths(const fed_dataset *d, const fed_text_stats *st) {
    printf("\n\n%-20s %8s %7s\n", "length (token ids)", "texts", "share");
    for (size_t k = 0; k < FED_TEXT_HIST_BUCKETS; k++) {
        char range[32];
        if (k + 1 == FED_TEXT_HIST_BUCKETS)
            snprintf(range, sizeof range, "> %zu", (size_t)4 << k);
        else
            snprintf(range, sizeof range, "%zu-%zu", k ? ((size_t)4 << k) + 1 : 1, (size_t)8 << k);
        printf("%-20s %8zu %6.2f%%\n", range, st->hist[k],
               d->n ? 100.0 * (double)st->hist[k] / (double)d->n : 0.0);
    }
}

/* The classes with their counts; for text data with their ids, the mapping train and
 * eval must share. */
static void print_classes(const fed_dataset *d, const fed_data_report *r, bool ids) {
    if (ids)
        printf("\n%-6s %-20s %8s %7s\n", "id", "class", "count", "share");
    else
        printf("\n%-20s %8s %7s\n", "class", "count", "share");
    for (size_t k = 0; k < d->num_classes; k++) {
        char buf[32];
        const char *name = d->class_names ? d->class_names[k] : buf;
        if (!d->class_names) snprintf(buf, sizeof buf, "%zu", k);
        if (ids) printf("%-6zu ", k);
        printf("%-20.20s %8zu %6.2f%%\n", name, r->class_counts[k],
               d->n ? 100.0 * (double)r->class_counts[k] / (double)d->n : 0.0);
    }
}

static fed_err run_info(const void *cfg) {
    const data_info_cfg *c = cfg;
    if (!c->data) return fed_errorf(FED_EINVAL, "a data file is required (fedtune data info FILE)");
    fed_dataset *d = NULL;
    fed_data_report r;
    memset(&r, 0, sizeof r);
    prep_text pt;
    fed_err err = prep_text_open(&pt, &c->dc, NULL, NULL);
    pt.len = c->max_len;
    if (!err) err = prep_load_data(&d, c->data, &c->dc, NULL, &pt);
    if (!err) err = fed_data_report_new(&r, d);
    if (err) goto done;
    printf("data %s\n", c->data);
    printf("examples %zu, features %zu", d->n, d->dim);
    if (d->shape.ndim == 3)
        printf(" (images %zu x %zu x %zu)", d->shape.d[0], d->shape.d[1], d->shape.d[2]);
    printf(", classes %zu\n", d->num_classes);
    if (pt.loaded) {
        print_text_stats(d, &pt.stats, c->max_len);
    } else {
        printf("rows read %zu, dropped (missing values) %zu, cells imputed %zu\n",
               d->stats.rows_read, d->stats.rows_dropped, d->stats.cells_imputed);
    }
    printf("duplicate rows %zu, conflicting rows (same features, other label) %zu\n", r.duplicates,
           r.conflicts);
    if (!pt.loaded) printf("constant features %zu\n", r.constant_features);
    printf("class imbalance (largest / smallest class) %.2f", r.imbalance);
    if (r.empty_classes) printf(", %zu classes without examples", r.empty_classes);
    if (pt.loaded)
        print_lengths(d, &pt.stats);
    else
        printf("\n");
    print_classes(d, &r, pt.loaded);
done:
    prep_text_close(&pt);
    fed_data_report_free(&r);
    fed_data_destroy(&d);
    return err;
}

/* ---- data tokenize ---------------------------------------------------------------------- */

typedef struct data_tokenize_cfg {
    const char *tokenizer; /* vocabulary file */
    const char *bpe;       /* folder of GPT-2's encoder.json and vocab.bpe */
    int roundtrip;         /* check decode(encode(text)) == text (--bpe only) */
    const char *input;     /* texts, one a line; "-": standard input */
    int plain;             /* lines are raw text, not JSON strings */
} data_tokenize_cfg;

#define T(field) offsetof(data_tokenize_cfg, field)
static const opt_spec data_tokenize_opts[] = {
    {"tokenizer", OPT_STRING, NULL, 1, 0, NULL, T(tokenizer),
     "tokenizer: USE-lite's vocab.json or fedtune's JSON ({\"type\":\"unigram\"} or "
     "{\"type\":\"bpe\"}, from fedtune tokenizer train)"},
    {"bpe", OPT_STRING, NULL, 1, 0, NULL, T(bpe),
     "instead of --tokenizer: GPT-2's byte-level BPE, a folder with encoder.json and vocab.bpe"},
    {"roundtrip", OPT_BOOL, "false", 1, 0, NULL, T(roundtrip),
     "byte-level BPE only: check that decoding each line's ids gives its text back byte for "
     "byte"},
    {"input", OPT_STRING, NULL, 1, 0, NULL, T(input),
     "texts, one JSON string a line (\"-\": standard input)"},
    {"plain", OPT_BOOL, "false", 1, 0, NULL, T(plain),
     "each line is the text itself (without its line break), not a JSON string"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef T

static const opt_table data_tokenize_table = {
    "data tokenize",
    "Print the token ids of each line of a file as a JSON array, one line each (as USE-lite's "
    "JavaScript tokenizer gives them, or GPT-2's BPE as the npm package gpt-3-encoder does).",
    data_tokenize_opts, "input"};

/* One of the two tokenizers. */
typedef struct any_tok {
    fed_tokenizer *unigram; /* --tokenizer */
    fed_bpe *bpe;           /* --bpe */
    bool roundtrip;         /* --roundtrip */
} any_tok;

static fed_err encode_any(const any_tok *t, const char *text, size_t len, int32_t *ids, size_t cap,
                          size_t *n) {
    if (t->bpe) return fed_bpe_encode(t->bpe, text, len, ids, cap, n);
    return fed_tokenizer_encode(t->unigram, text, len, ids, cap, n);
}

/* decode(ids) == text[0..len), byte for byte. */
static fed_err check_roundtrip(const any_tok *t, const int32_t *ids, size_t n, const char *text,
                               size_t len) {
    char *back = NULL;
    size_t blen = 0;
    fed_err err = t->bpe ? fed_bpe_decode(t->bpe, ids, n, &back, &blen)
                         : fed_tokenizer_decode(t->unigram, ids, n, &back, &blen);
    if (err) return err;
    if (blen != len || memcmp(back, text, len) != 0) {
        size_t at = 0;
        while (at < len && at < blen && back[at] == text[at]) at++;
        err = fed_errorf(FED_EFORMAT,
                         "decoding the ids gives %zu bytes, not the %zu of the text "
                         "(first difference at byte %zu)",
                         blen, len, at);
    }
    fed_free(back);
    return err;
}

/* Prints the ids of text[0..len) as one JSON array line; *ids grows as needed. */
static fed_err print_ids(const any_tok *tok, const char *text, size_t len, int32_t **ids,
                         size_t *cap) {
    size_t n = 0;
    fed_err err = encode_any(tok, text, len, *ids, *cap, &n);
    if (!err && n > *cap) {
        int32_t *bigger = fed_mallocarray(n, sizeof *bigger);
        if (!bigger) return FED_ENOMEM;
        fed_free(*ids);
        *ids = bigger;
        *cap = n;
        err = encode_any(tok, text, len, *ids, *cap, &n);
    }
    if (!err && tok->roundtrip) err = check_roundtrip(tok, *ids, n, text, len);
    if (err) return err;
    putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", (int)(*ids)[i]);
    putchar(']');
    putchar('\n');
    return FED_OK;
}

/* The tokenizer of --tokenizer or --bpe (exactly one of them). */
static fed_err load_any(any_tok *t, const data_tokenize_cfg *c) {
    if (!c->tokenizer == !c->bpe)
        return fed_errorf(FED_EINVAL, "one of --tokenizer and --bpe is required");
    t->roundtrip = c->roundtrip;
    if (c->tokenizer) {
        fed_err err = fed_tokenizer_load(&t->unigram, c->tokenizer);
        if (!err && c->roundtrip && strcmp(fed_tokenizer_kind(t->unigram), "bpe") != 0)
            err = fed_errorf(FED_EINVAL, "--roundtrip needs a byte-level BPE (--bpe, or a "
                                         "--tokenizer of type bpe)");
        return err;
    }
    char enc[4096], merges[4096];
    int a = snprintf(enc, sizeof enc, "%s/encoder.json", c->bpe);
    int b = snprintf(merges, sizeof merges, "%s/vocab.bpe", c->bpe);
    if (a < 0 || b < 0 || (size_t)a >= sizeof enc || (size_t)b >= sizeof merges)
        return fed_errorf(FED_EINVAL, "--bpe: path too long");
    return fed_bpe_load(&t->bpe, enc, merges);
}

static void destroy_any(any_tok *t) {
    fed_tokenizer_destroy(&t->unigram);
    fed_bpe_destroy(&t->bpe);
}

static fed_err run_tokenize(const void *cfg) {
    const data_tokenize_cfg *c = cfg;
    if (!c->input) return fed_errorf(FED_EINVAL, "--input is required (\"-\": standard input)");
    any_tok tok = {NULL, NULL, false};
    fed_err err = load_any(&tok, c);
    if (err) {
        destroy_any(&tok);
        return err;
    }
    bool std_in = strcmp(c->input, "-") == 0;
    FILE *f = std_in ? stdin : fopen(c->input, "rb");
    if (!f) {
        err = fed_errorf(FED_EIO, "%s: cannot open: %s", c->input, strerror(errno));
        destroy_any(&tok);
        return err;
    }
    char *line = NULL, *text = NULL;
    size_t lcap = 0, cap = 0, lineno = 0;
    int32_t *ids = NULL;
    ssize_t got;
    while ((got = getline(&line, &lcap, f)) >= 0) {
        size_t len = (size_t)got;
        lineno++;
        if (len && line[len - 1] == '\n') len--;
        if (c->plain && len && line[len - 1] == '\r') len--;
        const char *p = line;
        if (!c->plain) {
            fed_free(text);
            if ((err = fed_text_json_string(&text, &len, line, len))) break;
            p = text;
        }
        if ((err = print_ids(&tok, p, len, &ids, &cap))) break;
    }
    if (err) {
        err = fed_errprefix(err, "%s:%zu", c->input, lineno);
    } else if (ferror(f)) {
        err = fed_errorf(FED_EIO, "%s: read error: %s", c->input, strerror(errno));
    } else if (fflush(stdout) != 0) {
        err = fed_errorf(FED_EIO, "standard output: %s", strerror(errno));
    }
    free(line); /* getline's */
    fed_free(text);
    fed_free(ids);
    if (!std_in) fclose(f);
    destroy_any(&tok);
    return err;
}

/* ---- dispatch -------------------------------------------------------------------------------- */

int cmd_data(int argc, char **argv) {
    static const char usage[] =
        "usage: fedtune data info [options] FILE\n"
        "       fedtune data tokenize --tokenizer VOCAB [--plain] FILE\n"
        "       fedtune data tokenize --bpe DIR [--roundtrip] [--plain] FILE\n"
        "(fedtune data info --help, fedtune data tokenize --help)\n";
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        fputs(usage, argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    if (strcmp(argv[0], "--man") == 0) {
        const opt_table *const tables[] = {&data_info_table, &data_tokenize_table};
        opt_print_man("data", "labeled and text data files: report, tokenize", tables, 2);
        return 0;
    }
    if (strcmp(argv[0], "info") == 0) {
        data_info_cfg c;
        return cli_run(&data_info_table, &c, sizeof c, argc - 1, argv + 1, run_info);
    }
    if (strcmp(argv[0], "tokenize") == 0) {
        data_tokenize_cfg c;
        return cli_run(&data_tokenize_table, &c, sizeof c, argc - 1, argv + 1, run_tokenize);
    }
    fprintf(stderr, "fedtune data: unknown subcommand \"%s\" (try: info, tokenize)\n", argv[0]);
    return 2;
}
