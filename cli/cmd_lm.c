/* Language-model commands: `fedtune tokenizer train|count|convert` (learn a byte-level
 * BPE from text, measure a tokenizer on text, put GPT-2's two files into fedtune's one)
 * and `fedtune generate` (continue a prompt with a model that carries its tokenizer).
 * The trainer is dataset/bpe_train.c, the sampler training/generate.c; pre-training a
 * language model is `fedtune pretrain --text` (cmd_train.c). */
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/prep.h"
#include "core/alloc.h"
#include "core/blas.h"
#include "core/model.h"
#include "dataset/bpe.h"
#include "dataset/bpe_train.h"
#include "dataset/text_lm.h"
#include "dataset/tokenizer.h"
#include "training/generate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Writes data[0..len) to path through a temporary file renamed over it. */
static fed_err write_atomic(const char *path, const char *data, size_t len) {
    size_t n = strlen(path) + 16;
    char *tmp = fed_malloc(n);
    if (!tmp) return FED_ENOMEM;
    snprintf(tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    fed_err err = FED_OK;
    if (!f) {
        err = fed_errorf(FED_EIO, "--out: cannot create %s: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd);
    } else {
        bool bad = fwrite(data, 1, len, f) != len || fflush(f) != 0 || fsync(fileno(f)) != 0;
        bad = fclose(f) != 0 || bad;
        if (bad) err = fed_errorf(FED_EIO, "--out: cannot write %s: %s", tmp, strerror(errno));
        if (!err && rename(tmp, path) != 0)
            err = fed_errorf(FED_EIO, "--out: cannot rename %s to %s: %s", tmp, path,
                             strerror(errno));
    }
    if (err && fd >= 0) unlink(tmp);
    fed_free(tmp);
    return err;
}

/* Calls fn for every document of the comma-separated files of list; *files counts them. */
static fed_err each_document(const char *list, fed_text_lm_doc_fn fn, void *user, size_t *files) {
    *files = 0;
    char *copy = fed_strdup(list);
    if (!copy) return FED_ENOMEM;
    fed_err err = FED_OK;
    for (char *p = copy, *next; p && !err; p = next) {
        next = strchr(p, ',');
        if (next) *next++ = '\0';
        if (!*p) continue;
        err = fed_text_lm_read_documents(p, fn, user);
        ++*files;
    }
    fed_free(copy);
    return err;
}

/* ---- tokenizer train --------------------------------------------------------------------- */

typedef struct tok_cfg {
    const char *text;      /* text files (JSON lines or plain) */
    size_t vocab;          /* train: symbols wanted */
    const char *out;       /* train, convert: the JSON file to write */
    const char *tokenizer; /* count: the tokenizer's JSON */
    const char *bpe;       /* count, convert: GPT-2's encoder.json and vocab.bpe folder */
} tok_cfg;

#define F(field) offsetof(tok_cfg, field)
static const opt_spec tok_train_opts[] = {
    {"text", OPT_LIST, NULL, 1, 0, NULL, F(text),
     "text files, comma-separated or repeated: JSON lines {\"text\": ...} or plain text"},
    {"vocab", OPT_SIZE, "4096", FED_BPE_TRAIN_MIN_VOCAB, (double)FED_BPE_TRAIN_MAX_VOCAB, NULL,
     F(vocab), "symbols in the vocabulary: the 256 bytes and vocab - 256 merges"},
    {"out", OPT_STRING, NULL, 1, 0, NULL, F(out), "the tokenizer to write (JSON)"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
static const opt_spec tok_count_opts[] = {
    {"text", OPT_LIST, NULL, 1, 0, NULL, F(text), "text files (JSON lines or plain text)"},
    {"tokenizer", OPT_STRING, NULL, 1, 0, NULL, F(tokenizer),
     "the tokenizer: fedtune's JSON (bpe or unigram) or USE-lite's vocab.json"},
    {"bpe", OPT_STRING, NULL, 1, 0, NULL, F(bpe),
     "instead: a folder with GPT-2's encoder.json and vocab.bpe"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
static const opt_spec tok_convert_opts[] = {
    {"bpe", OPT_STRING, NULL, 1, 0, NULL, F(bpe), "a folder with encoder.json and vocab.bpe"},
    {"out", OPT_STRING, NULL, 1, 0, NULL, F(out), "the tokenizer to write (JSON)"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table tok_train_table = {
    "tokenizer train",
    "Learn a byte-level BPE tokenizer (GPT-2's pre-tokenisation and byte table) from text.",
    tok_train_opts, NULL};
static const opt_table tok_count_table = {
    "tokenizer count", "Tokenize text files and report tokens per white-space word.",
    tok_count_opts, NULL};
static const opt_table tok_convert_table = {
    "tokenizer convert",
    "Write GPT-2's encoder.json and vocab.bpe as one fedtune tokenizer file (same ids).",
    tok_convert_opts, NULL};

static fed_err train_doc(void *user, const char *doc, size_t len, size_t line) {
    (void)line;
    return fed_bpe_trainer_add(user, doc, len);
}

static fed_err run_tok_train(const void *cfg) {
    const tok_cfg *c = cfg;
    if (!c->text) return fed_errorf(FED_EINVAL, "--text is required");
    if (!c->out) return fed_errorf(FED_EINVAL, "--out is required");
    fed_bpe_trainer *t = NULL;
    char *json = NULL;
    size_t files = 0, merges = 0;
    fed_err err = fed_bpe_trainer_new(&t);
    if (!err) err = each_document(c->text, train_doc, t, &files);
    if (!err) {
        printf("tokenizer train: %zu files, %zu words, %zu distinct\n", files,
               fed_bpe_trainer_words(t), fed_bpe_trainer_distinct(t));
        fflush(stdout);
        err = fed_bpe_trainer_learn(t, c->vocab, &json, &merges);
    }
    if (!err) err = write_atomic(c->out, json, strlen(json));
    if (!err) {
        printf("tokenizer train: %zu merges, vocabulary %zu%s; wrote %s\n", merges, 256 + merges,
               256 + merges < c->vocab ? " (no pair left to merge)" : "", c->out);
    }
    fed_free(json);
    fed_bpe_trainer_destroy(&t);
    return err;
}

/* ---- tokenizer count and convert --------------------------------------------------------- */

/* The counts of `tokenizer count`. */
typedef struct counter {
    const fed_tokenizer *tok; /* fedtune's, or NULL */
    const fed_bpe *bpe;       /* GPT-2's, or NULL */
    size_t docs, words, tokens, bytes;
} counter;

static fed_err count_doc(void *user, const char *doc, size_t len, size_t line) {
    (void)line;
    counter *k = user;
    size_t n = 0;
    fed_err err = k->tok ? fed_tokenizer_encode(k->tok, doc, len, NULL, 0, &n)
                         : fed_bpe_encode(k->bpe, doc, len, NULL, 0, &n);
    if (err) return err;
    k->docs++;
    k->tokens += n;
    k->bytes += len;
    for (size_t i = 0; i < len; i++) {
        bool space = doc[i] == ' ' || (doc[i] >= '\t' && doc[i] <= '\r');
        bool prev = i == 0 || doc[i - 1] == ' ' || (doc[i - 1] >= '\t' && doc[i - 1] <= '\r');
        k->words += !space && prev;
    }
    return FED_OK;
}

/* GPT-2's files in folder dir. */
static fed_err load_gpt2(fed_bpe **b, const char *dir) {
    char enc[4096], merges[4096];
    int x = snprintf(enc, sizeof enc, "%s/encoder.json", dir);
    int y = snprintf(merges, sizeof merges, "%s/vocab.bpe", dir);
    if (x < 0 || y < 0 || (size_t)x >= sizeof enc || (size_t)y >= sizeof merges)
        return fed_errorf(FED_EINVAL, "--bpe: path too long");
    return fed_bpe_load(b, enc, merges);
}

static fed_err run_tok_count(const void *cfg) {
    const tok_cfg *c = cfg;
    if (!c->text) return fed_errorf(FED_EINVAL, "--text is required");
    if (!c->tokenizer == !c->bpe)
        return fed_errorf(FED_EINVAL, "one of --tokenizer and --bpe is required");
    fed_tokenizer *tok = NULL;
    fed_bpe *bpe = NULL;
    fed_err err = c->tokenizer ? fed_tokenizer_load(&tok, c->tokenizer) : load_gpt2(&bpe, c->bpe);
    counter k = {tok, bpe, 0, 0, 0, 0};
    size_t files = 0;
    if (!err) err = each_document(c->text, count_doc, &k, &files);
    if (!err) {
        size_t v = tok ? fed_tokenizer_vocab_size(tok) : fed_bpe_vocab_size(bpe);
        printf("tokenizer count: %zu files, %zu documents, %zu bytes, %zu words, %zu tokens "
               "(vocabulary %zu): %.4f tokens per word, %.3f bytes per token\n",
               files, k.docs, k.bytes, k.words, k.tokens, v,
               k.words ? (double)k.tokens / (double)k.words : 0.0,
               k.tokens ? (double)k.bytes / (double)k.tokens : 0.0);
    }
    fed_tokenizer_destroy(&tok);
    fed_bpe_destroy(&bpe);
    return err;
}

static fed_err run_tok_convert(const void *cfg) {
    const tok_cfg *c = cfg;
    if (!c->bpe || !c->out) return fed_errorf(FED_EINVAL, "--bpe and --out are required");
    fed_bpe *b = NULL;
    char *json = NULL;
    fed_err err = load_gpt2(&b, c->bpe);
    if (!err) err = fed_bpe_to_json(b, &json);
    if (!err) err = write_atomic(c->out, json, strlen(json));
    if (!err)
        printf("tokenizer convert: %zu symbols, %zu merges; wrote %s\n", fed_bpe_vocab_size(b),
               fed_bpe_merges(b), c->out);
    fed_free(json);
    fed_bpe_destroy(&b);
    return err;
}

int cmd_tokenizer(int argc, char **argv) {
    static const char usage[] = "usage: fedtune tokenizer train --text FILES --vocab N --out TOK\n"
                                "       fedtune tokenizer count --text FILES --tokenizer TOK\n"
                                "       fedtune tokenizer convert --bpe DIR --out TOK\n"
                                "(fedtune tokenizer train --help, ...)\n";
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        fputs(usage, argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    if (strcmp(argv[0], "--man") == 0) {
        const opt_table *const tables[] = {&tok_train_table, &tok_count_table, &tok_convert_table};
        opt_print_man("tokenizer", "learn, apply and convert byte-level BPE tokenizers", tables, 3);
        return 0;
    }
    tok_cfg c;
    if (strcmp(argv[0], "train") == 0)
        return cli_run(&tok_train_table, &c, sizeof c, argc - 1, argv + 1, run_tok_train);
    if (strcmp(argv[0], "count") == 0)
        return cli_run(&tok_count_table, &c, sizeof c, argc - 1, argv + 1, run_tok_count);
    if (strcmp(argv[0], "convert") == 0)
        return cli_run(&tok_convert_table, &c, sizeof c, argc - 1, argv + 1, run_tok_convert);
    fprintf(stderr, "fedtune tokenizer: unknown subcommand \"%s\" (try: train, count, convert)\n",
            argv[0]);
    return 2;
}

/* ---- generate ------------------------------------------------------------------------------ */

typedef struct gen_cfg {
    const char *model;     /* the language model */
    const char *prompt;    /* text to continue */
    const char *tokenizer; /* instead of the model's */
    size_t max_tokens;     /* ids to generate */
    double temperature;    /* 0: greedy */
    size_t top_k;          /* 0: all */
    long seed;             /* of the draws */
    size_t threads;        /* OpenBLAS threads */
} gen_cfg;

#define F(field) offsetof(gen_cfg, field)
static const opt_spec gen_opts[] = {
    {"model", OPT_STRING, NULL, 1, 0, NULL, F(model),
     "language model (.safetensors) with its tokenizer in " META_TOKENIZER},
    {"prompt", OPT_STRING, NULL, 1, 0, NULL, F(prompt), "the text to continue"},
    {"tokenizer", OPT_STRING, NULL, 1, 0, NULL, F(tokenizer),
     "tokenizer JSON to use instead of the model's"},
    {"max-tokens", OPT_SIZE, "50", 0, 1000000, NULL, F(max_tokens), "token ids to generate"},
    {"temperature", OPT_FLOAT, "1", 0, 100, NULL, F(temperature),
     "divide the logits by this before the softmax; 0 = greedy (always the likeliest id)"},
    {"top-k", OPT_SIZE, "40", 0, FED_GEN_MAX_TOP_K, NULL, F(top_k),
     "draw among the k likeliest ids only (0: all)"},
    {"seed", OPT_INT, "1", 0, 9007199254740991.0, NULL, F(seed),
     "seed of the draws: same seed, same text"},
    {"threads", OPT_SIZE, "1", 1, 256, NULL, F(threads), "OpenBLAS threads"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table gen_table = {
    "generate",
    "Continue a prompt with a language model: prints the prompt and the generated text.", gen_opts,
    NULL};

static fed_err run_generate(const void *cfg) {
    const gen_cfg *c = cfg;
    if (!c->model) return fed_errorf(FED_EINVAL, "--model is required");
    if (!c->prompt) return fed_errorf(FED_EINVAL, "--prompt is required");
    fed_blas_set_threads((int)c->threads);
    fed_model *m = NULL;
    fed_meta *meta = NULL;
    int32_t *ids = NULL, *gen = NULL;
    char *text = NULL;
    size_t n = 0, ngen = 0, len = 0;
    data_cfg dc;
    memset(&dc, 0, sizeof dc);
    dc.tokenizer = c->tokenizer;
    prep_text pt;
    memset(&pt, 0, sizeof pt);
    fed_err err = prep_load_model(&m, &meta, c->model, NULL, false);
    if (!err) err = prep_text_open(&pt, &dc, meta, m);
    if (!err && !pt.tok)
        err = fed_errorf(FED_EINVAL, "%s: no %s in its metadata: give --tokenizer", c->model,
                         META_TOKENIZER);
    size_t plen = strlen(c->prompt);
    if (!err) err = fed_tokenizer_encode(pt.tok, c->prompt, plen, NULL, 0, &n);
    if (!err && n == 0) err = fed_errorf(FED_EINVAL, "--prompt: no tokens: nothing to continue");
    if (!err && !(ids = fed_mallocarray(n, sizeof *ids))) err = FED_ENOMEM;
    if (!err) err = fed_tokenizer_encode(pt.tok, c->prompt, plen, ids, n, &n);
    if (err) goto done;
    fed_gen_config g = {c->max_tokens, c->temperature, c->top_k, fed_tokenizer_vocab_size(pt.tok),
                        (uint64_t)c->seed};
    if ((err = fed_gen_run(m, ids, n, &g, &gen, &ngen))) goto done;
    if ((err = fed_tokenizer_decode(pt.tok, gen, ngen, &text, &len))) goto done;
    fwrite(c->prompt, 1, plen, stdout);
    fwrite(text, 1, len, stdout);
    putchar('\n');
    if (fflush(stdout) != 0) err = fed_errorf(FED_EIO, "standard output: write error");
done:
    fed_free(text);
    fed_free(gen);
    fed_free(ids);
    prep_text_close(&pt);
    fed_meta_destroy(&meta);
    fed_model_destroy(&m);
    return err;
}

int cmd_generate(int argc, char **argv) {
    gen_cfg c;
    return cli_run(&gen_table, &c, sizeof c, argc, argv, run_generate);
}
