/* `fedtune train` / `fedtune pretrain` (fine-tune or train a model on a labeled data
 * file) and `fedtune tune` (grid or random search over learning rate, batch size and
 * epochs on the validation split). The loop itself is core's fed_fit, the very loop a
 * federated client runs; this file turns options into its configuration, prepares the
 * data as the model expects it, reports progress, and writes the model file.
 *
 * Honest evaluation: the validation split (or --val-data) drives early stopping and the
 * search; the test split (or --test-data) is evaluated once, at the end, on the final
 * weights. Standardisation is fitted on the training part only. */
#include "cli/commands.h"
#include "cli/prep.h"
#include "core/alloc.h"
#include "core/blas.h"
#include "core/clock.h"
#include "training/fit.h"
#include "core/json.h"
#include "core/model.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct train_cfg {
    const char *model;       /* model file to start from */
    const char *arch;        /* architecture to start fresh, or of --model's weights */
    int allow_extra;         /* --model may hold tensors the architecture lacks */
    const char *data;        /* labeled training data */
    const char *text;        /* or text files for a language model (windows of ids) */
    const char *out;         /* model file to write */
    const char *val_data;    /* separate validation file (instead of val_split) */
    const char *test_data;   /* separate test file (instead of test_split) */
    double val_split;        /* share of data held out for validation */
    double test_split;       /* share of data held out for the final test */
    size_t train_examples;   /* use at most this many training examples (0: all) */
    data_cfg dc;             /* how to read the data files */
    const char *standardize; /* auto | off */
    size_t epochs;           /* passes over the training part */
    size_t batch;            /* examples per step */
    const char *optimizer;   /* sgd | adam | adamw */
    double lr;               /* base learning rate */
    double momentum;         /* SGD momentum */
    int nesterov;            /* SGD Nesterov momentum */
    double beta1, beta2;     /* Adam(W) */
    double weight_decay;     /* L2 (sgd, adam) or decoupled (adamw) */
    int decoupled_wd;        /* decoupled decay for sgd and adam too */
    double clip_norm;        /* global gradient-norm clip, 0 = off */
    const char *schedule;    /* constant | step | cosine */
    size_t warmup;           /* linear warm-up steps */
    double min_lr;           /* cosine floor */
    size_t step_epochs;      /* step schedule: epochs between decays (0: epochs / 3) */
    double gamma;            /* step schedule decay */
    double label_smoothing;  /* cross-entropy label smoothing */
    double dropout;          /* set every dropout layer to this; -1 = keep the model's */
    size_t patience;         /* early stopping patience in epochs, 0 = off */
    double min_delta;        /* improvement that resets the patience */
    const char *freeze;      /* tensor or layer globs to freeze */
    const char *unfreeze;    /* globs to make trainable again (after --freeze) */
    size_t new_head;         /* replace the last linear layer by one with N outputs */
    lora_cfg lora;           /* LoRA adapters and their aggregation (symmetry with sim) */
    double noise;            /* Gaussian noise augmentation, std */
    size_t shift;            /* image shift augmentation, pixels */
    int hflip;               /* image horizontal flip augmentation */
    long seed;               /* split, initialisation, order, dropout, augmentation */
    size_t threads;          /* OpenBLAS threads */
    const char *metrics;     /* JSON-lines metrics file */
    const char *progress;    /* auto | on | off */
    /* tune only */
    const char *lrs;         /* learning rates to try */
    const char *batches;     /* batch sizes to try */
    const char *epochs_grid; /* epoch counts to try */
    const char *search;      /* grid | random */
    size_t trials;           /* random search: trials */
    const char *select;      /* loss | accuracy: how the best trial is chosen */
} train_cfg;

#define F(field) offsetof(train_cfg, field)
/* clang-format off */
#define TRAIN_OPTS                                                                              \
    {"model", OPT_STRING, NULL, 1, 0, NULL, F(model), "model file to fine-tune (.safetensors)"}, \
    {"arch", OPT_STRING, NULL, 1, 0, NULL, F(arch),                                             \
     "architecture (preset, JSON, @FILE): alone, train from scratch; with --model, the "        \
     "layout of a weights-only file (e.g. from PyTorch)"},                                      \
    {"allow-extra", OPT_BOOL, "false", 1, 0, NULL, F(allow_extra),                              \
     "ignore tensors of --model that the architecture lacks"},                                  \
    {"data", OPT_STRING, NULL, 1, 0, NULL, F(data),                                             \
     "labeled training data (CSV, sklearn CSV, IDX)"},                                          \
    {"text", OPT_LIST, NULL, 1, 0, NULL, F(text),                                               \
     "instead of --data: a language model's text files (JSON lines or plain), in T-id windows"}, \
    {"out", OPT_STRING, NULL, 1, 0, NULL, F(out), "model file to write (.safetensors)"},        \
    {"val-data", OPT_STRING, NULL, 1, 0, NULL, F(val_data),                                     \
     "validation data file (default: --val-split of --data)"},                                  \
    {"test-data", OPT_STRING, NULL, 1, 0, NULL, F(test_data),                                   \
     "test data file, evaluated once at the end (default: --test-split of --data)"},            \
    {"val-split", OPT_FLOAT, "0.1", 0, 0.9, NULL, F(val_split),                                 \
     "share of --data held out for validation (stratified)"},                                   \
    {"test-split", OPT_FLOAT, "0", 0, 0.9, NULL, F(test_split),                                 \
     "share of --data held out for the final test (stratified)"},                               \
    {"train-examples", OPT_SIZE, "0", 0, 1e12, NULL, F(train_examples),                         \
     "train on a stratified sample of at most N examples of the training part (0: all)"},       \
    DATA_OPTS(F(dc)),                                                                           \
    TEXT_OPTS(F(dc)),                                                                           \
    {"standardize", OPT_CHOICE, "auto", 1, 0, "auto|off", F(standardize),                       \
     "auto: the model's input transform, else one fitted on the training part"},                \
    TRAINING_OPTS(F, "10", "32", "adam", "0.001"),                                              \
    {"nesterov", OPT_BOOL, "false", 1, 0, NULL, F(nesterov), "SGD Nesterov momentum"},          \
    {"beta1", OPT_FLOAT, "0.9", 0, 0.9999, NULL, F(beta1), "Adam first-moment decay"},          \
    {"beta2", OPT_FLOAT, "0.999", 0, 0.99999, NULL, F(beta2), "Adam second-moment decay"},      \
    {"decoupled-wd", OPT_BOOL, "false", 1, 0, NULL, F(decoupled_wd),                            \
     "decoupled weight decay for sgd and adam too (SGDW/AdamW style)"},                         \
    {"schedule", OPT_CHOICE, "constant", 1, 0, "constant|step|cosine", F(schedule),             \
     "learning-rate schedule over all steps"},                                                  \
    {"warmup", OPT_SIZE, "0", 0, 10000000, NULL, F(warmup), "linear warm-up steps"},            \
    {"min-lr", OPT_FLOAT, "0", 0, 10, NULL, F(min_lr), "cosine schedule floor"},                \
    {"step-epochs", OPT_SIZE, "0", 0, 100000, NULL, F(step_epochs),                             \
     "step schedule: epochs between decays (0: a third of --epochs)"},                          \
    {"gamma", OPT_FLOAT, "0.1", 0.0001, 1, NULL, F(gamma), "step schedule decay factor"},       \
    {"label-smoothing", OPT_FLOAT, "0", 0, 0.99, NULL, F(label_smoothing),                      \
     "cross-entropy label smoothing"},                                                          \
    {"dropout", OPT_FLOAT, "-1", -1, 0.95, NULL, F(dropout),                                    \
     "set every dropout layer's p (-1: keep the model's)"},                                     \
    {"patience", OPT_SIZE, "0", 0, 100000, NULL, F(patience),                                   \
     "stop after N epochs without a better validation loss; 0 = off"},                          \
    {"min-delta", OPT_FLOAT, "0", 0, 1e9, NULL, F(min_delta),                                   \
     "validation-loss improvement that counts"},                                                \
    {"freeze", OPT_LIST, NULL, 1, 0, NULL, F(freeze),                                           \
     "freeze tensors matching a glob (\"0.*\", \"2.weight\") or a layer index (\"0\")"},        \
    {"unfreeze", OPT_LIST, NULL, 1, 0, NULL, F(unfreeze),                                       \
     "make matching tensors trainable again (applied after --freeze)"},                         \
    {"new-head", OPT_SIZE, "0", 0, 1000000, NULL, F(new_head),                                  \
     "replace the last linear layer by a fresh one with N outputs (a sentence encoder gets " \
     "one appended); 0 = keep"},                                                               \
    LORA_OPTS(F(lora)),                                                                         \
    {"noise", OPT_FLOAT, "0", 0, 100, NULL, F(noise), "augment: Gaussian noise std"},           \
    {"shift", OPT_SIZE, "0", 0, 64, NULL, F(shift), "augment images: random shift, pixels"},    \
    {"hflip", OPT_BOOL, "false", 1, 0, NULL, F(hflip), "augment images: random horizontal flip"}, \
    {"seed", OPT_INT, "1", 0, 9007199254740991.0, NULL, F(seed),                                \
     "seed of split, init, order, dropout, augmentation"},                                      \
    {"threads", OPT_SIZE, "1", 1, 256, NULL, F(threads), "OpenBLAS threads"},                   \
    {"metrics", OPT_STRING, NULL, 1, 0, NULL, F(metrics),                                       \
     "write per-epoch metrics as JSON lines to this file"},                                     \
    { "progress", OPT_CHOICE, "auto", 1, 0, "auto|on|off", F(progress), "progress bar on stderr (auto: when it is a terminal)" }
/* clang-format on */

static const opt_spec train_opts[] = {
    TRAIN_OPTS,
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};

static const opt_spec tune_opts[] = {
    TRAIN_OPTS,
    {"lrs", OPT_LIST, NULL, 1, 0, NULL, F(lrs),
     "learning rates to try, comma-separated [0.1,0.01,0.001]"},
    {"batches", OPT_LIST, NULL, 1, 0, NULL, F(batches), "batch sizes to try [--batch]"},
    {"epochs-grid", OPT_LIST, NULL, 1, 0, NULL, F(epochs_grid), "epoch counts to try [--epochs]"},
    {"search", OPT_CHOICE, "grid", 1, 0, "grid|random", F(search),
     "every combination, or --trials random draws (log-uniform lr between the extremes)"},
    {"trials", OPT_SIZE, "8", 1, 10000, NULL, F(trials), "random search: number of trials"},
    {"select", OPT_CHOICE, "loss", 1, 0, "loss|accuracy", F(select),
     "pick the trial with the lowest validation loss or the highest accuracy"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table train_table = {
    "train", "Fine-tune a model (or train one from --arch) on labeled data; write the result.",
    train_opts, NULL};
static const opt_table pretrain_table = {
    "pretrain",
    "Train a fresh model from --arch on (public) labeled data, or a language model on --text: "
    "the first half of \"pre-train, then fine-tune\".",
    train_opts, NULL};
static const opt_table tune_table = {
    "tune",
    "Search learning rate, batch size and epochs on the validation split; report every "
    "trial, test the best once.",
    tune_opts, NULL};

/* ---- preparing a run ----------------------------------------------------------------- */

/* Everything a run trains and tests with. */
typedef struct session {
    fed_model *m;        /* the starting model */
    fed_meta *meta;      /* metadata to write with it */
    fed_dataset *train;  /* training part, transformed */
    fed_dataset *val;    /* validation part or NULL */
    fed_dataset *test;   /* test part or NULL */
    fed_fit_config fit;  /* from the options */
    FILE *metrics;       /* JSON lines, or NULL */
    bool progress;       /* draw a progress bar on stderr */
    double last_draw;    /* time of the last progress update */
    size_t trial;        /* tune: current trial (1-based), 0 in train */
    const char *command; /* "train", "pretrain", "tune" */
    prep_text text;      /* the tokenizer and length of text data */
    bool is_text;        /* --data is text: token ids, never standardised */
    bool lm;             /* a language model: losses per token, perplexity printed */
} session;

static void session_free(session *s) {
    fed_model_destroy(&s->m);
    fed_meta_destroy(&s->meta);
    fed_data_destroy(&s->train);
    fed_data_destroy(&s->val);
    fed_data_destroy(&s->test);
    prep_text_close(&s->text);
    if (s->metrics) fclose(s->metrics);
    s->metrics = NULL;
}

/* Applies --freeze or --unfreeze (fed_model_set_trainable_spec: comma-separated globs, a
 * bare layer index "3" meaning "3.*", a pattern matching nothing an error). */
static fed_err apply_globs(fed_model *m, const char *list, bool trainable, const char *flag) {
    fed_err err = fed_model_set_trainable_spec(m, list, trainable, NULL);
    return err ? fed_errprefix(err, "%s", flag) : FED_OK;
}

static fed_err fit_config(const train_cfg *c, fed_fit_config *f) {
    *f = fed_fit_defaults();
    fed_opt_kind kind;
    fed_err err = fed_opt_parse(c->optimizer, &kind);
    if (err) return err;
    f->optim = fed_optim_defaults(kind);
    if (kind == FED_OPT_SGD) {
        f->optim.momentum = (float)c->momentum;
        f->optim.nesterov = c->nesterov != 0;
    } else if (c->nesterov || c->momentum != 0.0) {
        return fed_errorf(FED_EINVAL, "--momentum and --nesterov apply to --optimizer sgd only");
    }
    f->optim.beta1 = (float)c->beta1;
    f->optim.beta2 = (float)c->beta2;
    f->optim.weight_decay = (float)c->weight_decay;
    if (c->decoupled_wd) f->optim.decoupled_wd = true;
    f->optim.clip_norm = (float)c->clip_norm;
    if (f->optim.nesterov && f->optim.momentum <= 0.0f)
        return fed_errorf(FED_EINVAL, "--nesterov needs --momentum > 0");
    fed_sched_kind sk;
    if ((err = fed_sched_parse(c->schedule, &sk))) return err;
    f->schedule = fed_fit_schedule(sk, (float)c->lr);
    f->schedule.warmup = c->warmup;
    f->schedule.min_lr = (float)c->min_lr;
    f->schedule.gamma = (float)c->gamma;
    if (c->min_lr > c->lr)
        return fed_errorf(FED_EINVAL, "--min-lr %g exceeds --lr %g", c->min_lr, c->lr);
    f->epochs = c->epochs;
    f->batch = c->batch;
    f->loss.kind = FED_LOSS_SOFTMAX_CE;
    f->loss.label_smoothing = (float)c->label_smoothing;
    f->patience = c->patience;
    f->min_delta = c->min_delta;
    f->augment.noise_std = (float)c->noise;
    f->augment.shift = c->shift;
    f->augment.hflip = c->hflip != 0;
    f->seed = (uint64_t)c->seed;
    return FED_OK;
}

/* Step-schedule decay interval in steps, from --step-epochs. */
static void fill_step_size(const train_cfg *c, const session *s, fed_fit_config *f) {
    if (f->schedule.kind != FED_SCHED_STEP || c->step_epochs == 0) return;
    size_t b = f->batch < s->train->n ? f->batch : s->train->n;
    f->schedule.step_size = c->step_epochs * ((s->train->n + b - 1) / b);
}

static fed_err load_start_model(const train_cfg *c, session *s, bool pretrain) {
    fed_err err;
    if (pretrain && c->model)
        return fed_errorf(FED_EINVAL,
                          "pretrain starts from --arch; use train to fine-tune --model");
    if (!c->model && !c->arch)
        return fed_errorf(FED_EINVAL, "give --model (fine-tune) or --arch (from scratch)");
    if (c->model) {
        err = prep_load_model(&s->m, &s->meta, c->model, c->arch, c->allow_extra != 0);
        if (err) return err;
    } else {
        fed_arch *arch = NULL;
        if ((err = cli_read_arch(&arch, c->arch))) return err;
        err = fed_model_new(&s->m, arch);
        fed_arch_destroy(&arch);
        if (err) return err;
        fed_model_init(s->m, (uint64_t)c->seed);
        if ((err = fed_meta_new(&s->meta))) return err;
    }
    if (c->new_head) {
        fed_model *n = NULL;
        if ((err = fed_model_new_head(&n, s->m, c->new_head, (uint64_t)c->seed ^ 0x6865616475ull)))
            return err;
        fed_model_destroy(&s->m);
        s->m = n;
        /* The old head's class names describe outputs that no longer exist. */
        fed_meta_unset(s->meta, META_CLASSES);
    }
    if ((err = prep_lora(&s->m, &c->lora, c->new_head != 0, (uint64_t)c->seed, NULL))) return err;
    if (c->dropout >= 0.0) fed_model_set_dropout(s->m, (float)c->dropout);
    if ((err = apply_globs(s->m, c->freeze, false, "--freeze"))) return err;
    if ((err = apply_globs(s->m, c->unfreeze, true, "--unfreeze"))) return err;
    if (fed_model_num_trainable(s->m) == 0)
        return fed_errorf(FED_EINVAL, "--freeze: every tensor is frozen; nothing would train");
    return FED_OK;
}

/* Loads --data (and --val-data, --test-data), splits, standardises. */
static fed_err load_data(const train_cfg *c, session *s) {
    const char *classes = fed_meta_get(s->meta, META_CLASSES);
    fed_dataset *all = NULL;
    char *names = NULL;
    fed_err err = prep_text_open(&s->text, &c->dc, s->meta, s->m);
    if (!err && c->text && !fed_arch_is_lm(fed_model_arch(s->m)))
        err = fed_errorf(FED_EINVAL, "--text trains a language model: its first layer an "
                                     "embedding, its last an lmhead tied to it");
    if (!err && c->text) err = prep_load_lm(&all, c->text, &s->text);
    if (!err && !c->text) err = prep_load_data(&all, c->data, &c->dc, classes, &s->text);
    if (err) return err;
    s->is_text = s->text.loaded;
    bool augment = c->noise > 0 || c->shift || c->hflip;
    if (s->is_text && (err = prep_text_report(&s->text, s->meta, s->command,
                                              c->data ? c->data : c->text, augment)))
        goto done;
    if ((err = prep_classes_json(all, &names))) goto done;
    double vf = c->val_data ? 0.0 : c->val_split, tf = c->test_data ? 0.0 : c->test_split;
    if (vf + tf >= 0.95) {
        err = fed_errorf(FED_EINVAL, "--val-split + --test-split leave no training data");
        goto done;
    }
    err = fed_data_split(all, vf, tf, (uint64_t)c->seed, &s->train, vf > 0 ? &s->val : NULL,
                         tf > 0 ? &s->test : NULL);
    if (err) goto done;
    if (c->train_examples && c->train_examples < s->train->n) {
        fed_dataset *small = NULL, *rest = NULL;
        double drop = 1.0 - (double)c->train_examples / (double)s->train->n;
        err = fed_data_split(s->train, drop, 0.0, (uint64_t)c->seed + 1, &small, &rest, NULL);
        fed_data_destroy(&rest);
        if (err) goto done;
        fed_data_destroy(&s->train);
        s->train = small;
    }
    if (c->val_data) {
        err = c->text
                  ? prep_load_lm(&s->val, c->val_data, &s->text)
                  : prep_load_data(&s->val, c->val_data, &c->dc, names ? names : classes, &s->text);
        if (err) goto done;
    }
    if (c->test_data) {
        err = c->text ? prep_load_lm(&s->test, c->test_data, &s->text)
                      : prep_load_data(&s->test, c->test_data, &c->dc, names ? names : classes,
                                       &s->text);
        if (err) goto done;
    }
    if (names && (err = fed_meta_set(s->meta, META_CLASSES, names))) goto done;
    if (s->is_text) goto done; /* token ids: no standardisation */

    /* Standardisation: the model's own transform, else fitted on the training part;
     * never for token ids (a model that starts with an embedding). */
    if (fed_arch_layer(fed_model_arch(s->m), 0)->kind == FED_LAYER_EMBEDDING) goto done;
    const char *have = fed_meta_get(s->meta, META_STANDARDIZE);
    if (strcmp(c->standardize, "off") == 0) {
        if (have) {
            err = fed_errorf(FED_EINVAL,
                             "--standardize off: %s was trained on standardised "
                             "inputs and needs its transform",
                             c->model);
        }
        goto done;
    }
    fed_standardizer *st = NULL;
    if (have) {
        err = fed_std_from_json(&st, have);
        if (err) err = fed_errprefix(err, "%s: metadata %s", c->model, META_STANDARDIZE);
    } else {
        err = fed_std_fit(&st, s->train);
        char *js = NULL;
        if (!err) err = fed_std_to_json(st, &js);
        if (!err) err = fed_meta_set(s->meta, META_STANDARDIZE, js);
        fed_free(js);
    }
    if (!err) err = fed_std_apply(st, s->train);
    if (!err && s->val) err = fed_std_apply(st, s->val);
    if (!err && s->test) err = fed_std_apply(st, s->test);
    fed_std_destroy(&st);
done:
    fed_free(names);
    fed_data_destroy(&all);
    return err;
}

/* ---- reporting ------------------------------------------------------------------------ */

static void on_step(void *user, size_t done, size_t total) {
    session *s = user;
    if (!s->progress) return;
    double t = fed_now_s();
    if (done < total && t - s->last_draw < 0.1) return;
    s->last_draw = t;
    char bar[41];
    size_t fill = total ? 40 * done / total : 40;
    for (size_t i = 0; i < 40; i++) bar[i] = i < fill ? '#' : '.';
    bar[40] = '\0';
    fprintf(stderr, "\r  [%s] %zu/%zu steps", bar, done, total);
    if (done == total) fprintf(stderr, "\r\033[K");
    fflush(stderr);
}

static bool on_epoch(void *user, const fed_epoch_stats *e) {
    session *s = user;
    char val[96] = "", tppl[32] = "", vppl[32] = "";
    if (s->lm) snprintf(tppl, sizeof tppl, " ppl %.2f", exp(e->train_loss)); /* per token */
    if (s->lm) snprintf(vppl, sizeof vppl, " ppl %.2f", exp(e->val_loss));
    if (!isnan(e->val_loss))
        snprintf(val, sizeof val, "  val loss %.4f%s acc %5.1f%%%s", e->val_loss, vppl,
                 100.0 * e->val_acc, e->best ? " *" : "  ");
    if (s->trial) printf("  trial %zu ", s->trial);
    printf("epoch %3zu/%-3zu train loss %.4f%s acc %5.1f%%%s  lr %.2e  %6.2f s  %8.0f ex/s\n",
           e->epoch, e->epochs, e->train_loss, tppl, 100.0 * e->train_acc, val, e->lr, e->seconds,
           e->examples_per_s);
    fflush(stdout);
    if (s->metrics) {
        fprintf(s->metrics,
                "{\"command\":\"%s\",\"trial\":%zu,\"epoch\":%zu,\"train_loss\":%.9g,"
                "\"train_acc\":%.9g,",
                s->command, s->trial, e->epoch, e->train_loss, e->train_acc);
        if (s->lm)
            fprintf(s->metrics, "\"tokens\":%zu,\"train_ppl\":%.9g,", e->predictions,
                    exp(e->train_loss));
        if (s->lm && !isnan(e->val_loss))
            fprintf(s->metrics, "\"val_ppl\":%.9g,", exp(e->val_loss));
        if (isnan(e->val_loss))
            fprintf(s->metrics, "\"val_loss\":null,\"val_acc\":null,");
        else
            fprintf(s->metrics, "\"val_loss\":%.9g,\"val_acc\":%.9g,", e->val_loss, e->val_acc);
        fprintf(s->metrics, "\"lr\":%.9g,\"seconds\":%.6f,\"examples_per_s\":%.1f,\"best\":%s}\n",
                e->lr, e->seconds, e->examples_per_s, e->best ? "true" : "false");
        fflush(s->metrics);
    }
    return true;
}

static fed_err session_open(const train_cfg *c, session *s, const char *command) {
    memset(s, 0, sizeof *s);
    s->command = command;
    fed_err err;
    if (!c->data == !c->text)
        return fed_errorf(FED_EINVAL, "%s",
                          c->data ? "give --data or --text, not both"
                                  : "--data is required (or --text for an LM)");
    if (!c->out && strcmp(command, "tune") != 0) return fed_errorf(FED_EINVAL, "--out is required");
    if ((err = fit_config(c, &s->fit))) return err;
    if ((err = load_start_model(c, s, strcmp(command, "pretrain") == 0))) return err;
    if ((err = load_data(c, s))) return err;
    s->lm = fed_loss_for_model(s->m) == FED_LOSS_NEXT_TOKEN;
    if (s->fit.patience && !s->val)
        return fed_errorf(FED_EINVAL,
                          "--patience needs validation data (--val-split or --val-data)");
    fill_step_size(c, s, &s->fit);
    s->fit.on_epoch = on_epoch;
    s->fit.on_step = on_step;
    s->fit.user = s;
    s->progress = strcmp(c->progress, "on") == 0 ||
                  (strcmp(c->progress, "auto") == 0 && isatty(STDERR_FILENO));
    if (c->metrics) {
        s->metrics = fopen(c->metrics, "w");
        if (!s->metrics) return fed_errorf(FED_EIO, "--metrics: cannot write %s", c->metrics);
    }
    fed_blas_set_threads((int)c->threads);
    printf("%s: %zu train / %zu val / %zu test examples of %zu features, %zu classes (%s)\n",
           command, s->train->n, s->val ? s->val->n : 0, s->test ? s->test->n : 0, s->train->dim,
           s->train->num_classes, c->data ? c->data : c->text);
    printf("%s: model %zu parameters, %zu trainable; %s lr %g %s, batch %zu, %zu epochs\n", command,
           fed_model_num_params(s->m), fed_model_num_trainable(s->m), c->optimizer, c->lr,
           c->schedule, c->batch, c->epochs);
    fflush(stdout);
    return FED_OK;
}

static void print_eval(const char *what, const fed_eval_result *r) {
    if (!isnan(r->perplexity))
        printf("%s: loss %.4f  ppl %.2f  accuracy %.2f%%  (%zu texts, %zu tokens)\n", what, r->loss,
               r->perplexity, 100.0 * r->accuracy, r->n, r->predictions);
    else
        printf("%s: loss %.4f  accuracy %.2f%%  macro-F1 %.4f  (%zu examples)\n", what, r->loss,
               100.0 * r->accuracy, r->macro_f1, r->n);
}

/* Summary of a run for the model's metadata. */
static fed_err training_meta(session *s, const train_cfg *c, const fed_fit_result *r,
                             const fed_eval_result *test) {
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "{\"command\":\"%s\",\"data\":\"%s\",\"train_examples\":%zu,"
                     "\"epochs_run\":%zu,\"best_epoch\":%zu,\"steps\":%zu,\"optimizer\":\"%s\","
                     "\"lr\":%.9g,\"batch\":%zu,\"seed\":%ld",
                     s->command, c->data ? c->data : c->text, s->train->n, r->epochs_run,
                     r->best_epoch, r->steps, c->optimizer, c->lr, s->fit.batch, c->seed);
    if (!isnan(r->best_val_loss) && n > 0 && (size_t)n < sizeof buf)
        n += snprintf(buf + n, sizeof buf - (size_t)n, ",\"best_val_loss\":%.9g", r->best_val_loss);
    if (test && n > 0 && (size_t)n < sizeof buf)
        n += snprintf(buf + n, sizeof buf - (size_t)n, ",\"test_accuracy\":%.9g,\"test_loss\":%.9g",
                      test->accuracy, test->loss);
    if (n < 0 || (size_t)n + 2 > sizeof buf) return FED_OK; /* an absurd path: skip it */
    memcpy(buf + n, "}", 2);
    return fed_meta_set(s->meta, META_TRAINING, buf);
}

/* Reports the end of a fit. */
static void print_fit_end(const session *s, const fed_fit_result *r) {
    if (r->stopped_early)
        printf("%s: early stop after epoch %zu: no better validation loss for %zu epochs\n",
               s->command, r->epochs_run, s->fit.patience);
    if (r->best_epoch && s->fit.restore_best && r->best_epoch != r->epochs_run)
        printf("%s: restored the weights of epoch %zu (val loss %.4f)\n", s->command, r->best_epoch,
               r->best_val_loss);
    printf("%s: %zu epochs, %zu steps in %.2f s\n", s->command, r->epochs_run, r->steps,
           r->seconds);
}

static fed_err run_train(const train_cfg *c, const char *command) {
    session s;
    fed_err err = session_open(c, &s, command);
    fed_fit_result r;
    fed_eval_result test;
    memset(&test, 0, sizeof test);
    if (err) goto done;
    if ((err = fed_fit(s.m, s.train, s.val, &s.fit, &r))) goto done;
    print_fit_end(&s, &r);
    if (s.val) {
        fed_eval_result v;
        if ((err = fed_evaluate(s.m, s.val, 0, &s.fit.loss, &v))) goto done;
        print_eval("validation", &v);
        fed_eval_result_free(&v);
    }
    if (s.test) {
        if ((err = fed_evaluate(s.m, s.test, 0, &s.fit.loss, &test))) goto done;
        print_eval("test", &test);
    }
    if ((err = training_meta(&s, c, &r, s.test ? &test : NULL))) goto done;
    if ((err = fed_model_save(s.m, c->out, s.meta))) goto done;
    printf("%s: wrote %s\n", command, c->out);
done:
    fed_eval_result_free(&test);
    session_free(&s);
    return err;
}

/* ---- tune ------------------------------------------------------------------------------ */

/* Parses a comma-separated list of numbers into v (at most cap); FED_EINVAL naming flag. */
static fed_err parse_list(const char *list, const char *flag, double lo, double hi, bool integer,
                          double *v, size_t cap, size_t *n) {
    *n = 0;
    for (const char *p = list; *p;) {
        char *end;
        double x = strtod(p, &end);
        if (end == p || (*end && *end != ',') || !(x >= lo && x <= hi) ||
            (integer && x != floor(x)))
            return fed_errorf(FED_EINVAL, "%s: \"%s\": expected %s in [%g, %g], comma-separated",
                              flag, list, integer ? "integers" : "numbers", lo, hi);
        if (*n == cap) return fed_errorf(FED_EINVAL, "%s: more than %zu values", flag, cap);
        v[(*n)++] = x;
        p = *end ? end + 1 : end;
    }
    if (*n == 0) return fed_errorf(FED_EINVAL, "%s: empty list", flag);
    return FED_OK;
}

#define MAX_GRID 32

typedef struct trial {
    double lr;
    size_t batch, epochs;
    double val_loss, val_acc; /* of the restored best epoch */
    size_t best_epoch;
    double seconds;
} trial;

/* The trials' settings: the grid in order (learning rates fastest), or ntrials random
 * draws (log-uniform learning rate between the extremes of lrs) from the seed's own
 * stream. */
static void plan_trials(trial *trials, size_t ntrials, bool grid, uint64_t seed, const double *lrs,
                        size_t nl, const double *bs, size_t nb, const double *eps, size_t ne) {
    /* Draws of the random search come from their own stream of the seed. */
    fed_rng pick = fed_rng_stream(seed, 77);
    double lmin = lrs[0], lmax = lrs[0];
    for (size_t i = 1; i < nl; i++) {
        lmin = fmin(lmin, lrs[i]);
        lmax = fmax(lmax, lrs[i]);
    }
    for (size_t t = 0; t < ntrials; t++) {
        trial *tr = &trials[t];
        if (grid) {
            tr->lr = lrs[t % nl];
            tr->batch = (size_t)bs[(t / nl) % nb];
            tr->epochs = (size_t)eps[t / (nl * nb)];
        } else {
            double u = (double)fed_rng_uniform(&pick);
            tr->lr = nl > 1 ? exp(log(lmin) + u * (log(lmax) - log(lmin))) : lrs[0];
            tr->batch = (size_t)bs[fed_rng_below(&pick, nb)];
            tr->epochs = (size_t)eps[fed_rng_below(&pick, ne)];
        }
    }
}

/* Trial t of ntrials: trains a copy of the session's model (*work, the caller's to free)
 * with tr's settings, records its validation loss and accuracy in tr, and its metrics
 * line. Every trial starts from the same weights and trainable flags. */
static fed_err run_trial(const train_cfg *c, session *s, trial *tr, size_t t, size_t ntrials,
                         fed_model **work) {
    fed_err err;
    if ((err = fed_model_clone(work, s->m))) return err;
    fed_fit_config f = s->fit;
    f.schedule.lr = (float)tr->lr;
    f.batch = tr->batch;
    f.epochs = tr->epochs;
    f.schedule.total = 0;
    f.schedule.step_size = 0;
    fill_step_size(c, s, &f);
    s->trial = t + 1;
    printf("trial %zu/%zu: lr %.3g batch %zu epochs %zu\n", t + 1, ntrials, tr->lr, tr->batch,
           tr->epochs);
    fed_fit_result r;
    if ((err = fed_fit(*work, s->train, s->val, &f, &r))) return err;
    fed_eval_result v;
    if ((err = fed_evaluate(*work, s->val, 0, &f.loss, &v))) return err;
    tr->val_loss = v.loss;
    tr->val_acc = v.accuracy;
    tr->best_epoch = r.best_epoch;
    tr->seconds = r.seconds;
    fed_eval_result_free(&v);
    if (s->metrics) {
        fprintf(s->metrics,
                "{\"command\":\"tune\",\"trial\":%zu,\"lr\":%.9g,\"batch\":%zu,\"epochs\":%zu,"
                "\"val_loss\":%.9g,\"val_acc\":%.9g,\"best_epoch\":%zu,\"seconds\":%.3f}\n",
                t + 1, tr->lr, tr->batch, tr->epochs, tr->val_loss, tr->val_acc, tr->best_epoch,
                tr->seconds);
        fflush(s->metrics);
    }
    return FED_OK;
}

/* The table of every trial, the winner marked. */
static void print_trials(const trial *trials, size_t ntrials, size_t winner) {
    printf("\n%5s %10s %6s %6s %10s %8s %6s\n", "trial", "lr", "batch", "epochs", "val loss",
           "val acc", "best");
    for (size_t t = 0; t < ntrials; t++) {
        const trial *tr = &trials[t];
        printf("%5zu %10.3g %6zu %6zu %10.4f %7.2f%% %6zu%s\n", t + 1, tr->lr, tr->batch,
               tr->epochs, tr->val_loss, 100.0 * tr->val_acc, tr->best_epoch,
               t == winner ? "  <- best" : "");
    }
}

static fed_err run_tune(const train_cfg *c) {
    session s;
    memset(&s, 0, sizeof s);
    fed_model *work = NULL, *best = NULL;
    trial *trials = NULL;
    fed_eval_result ev;
    memset(&ev, 0, sizeof ev);
    /* The search space first: a typo fails before any data is read. */
    double lrs[MAX_GRID], bs[MAX_GRID], eps[MAX_GRID];
    size_t nl, nb, ne;
    fed_err err = parse_list(c->lrs ? c->lrs : "0.1,0.01,0.001", "--lrs", 1e-9, 10, false, lrs,
                             MAX_GRID, &nl);
    if (err) return err;
    if (c->batches) {
        if ((err = parse_list(c->batches, "--batches", 1, 65536, true, bs, MAX_GRID, &nb)))
            return err;
    } else {
        bs[0] = (double)c->batch;
        nb = 1;
    }
    if (c->epochs_grid) {
        if ((err =
                 parse_list(c->epochs_grid, "--epochs-grid", 1, 100000, true, eps, MAX_GRID, &ne)))
            return err;
    } else {
        eps[0] = (double)c->epochs;
        ne = 1;
    }
    if (c->val_split <= 0.0 && !c->val_data)
        return fed_errorf(FED_EINVAL, "tune needs validation data (--val-split > 0 or --val-data)");
    if ((err = session_open(c, &s, "tune"))) goto done;
    const bool grid = strcmp(c->search, "grid") == 0;
    size_t ntrials = grid ? nl * nb * ne : c->trials;
    trials = fed_calloc(ntrials, sizeof *trials);
    if (!trials) {
        err = FED_ENOMEM;
        goto done;
    }
    plan_trials(trials, ntrials, grid, (uint64_t)c->seed, lrs, nl, bs, nb, eps, ne);
    printf("tune: %zu trials (%s search), selecting by validation %s\n", ntrials, c->search,
           c->select);

    bool by_acc = strcmp(c->select, "accuracy") == 0;
    size_t winner = 0;
    for (size_t t = 0; t < ntrials; t++) {
        trial *tr = &trials[t];
        fed_model_destroy(&work);
        if ((err = run_trial(c, &s, tr, t, ntrials, &work))) goto done;
        bool better =
            by_acc ? tr->val_acc > trials[winner].val_acc : tr->val_loss < trials[winner].val_loss;
        if (t == 0 || better) {
            winner = t;
            fed_model_destroy(&best);
            best = work;
            work = NULL;
        }
    }
    print_trials(trials, ntrials, winner);
    const trial *w = &trials[winner];
    printf("tune: best trial %zu: lr %.3g batch %zu epochs %zu (val loss %.4f, acc %.2f%%)\n",
           winner + 1, w->lr, w->batch, w->epochs, w->val_loss, 100.0 * w->val_acc);
    if (s.test) {
        if ((err = fed_evaluate(best, s.test, 0, &s.fit.loss, &ev))) goto done;
        print_eval("test (best trial, evaluated once)", &ev);
    }
    if (c->out) {
        char js[256];
        snprintf(js, sizeof js,
                 "{\"command\":\"tune\",\"trial\":%zu,\"lr\":%.9g,\"batch\":%zu,\"epochs\":%zu,"
                 "\"val_loss\":%.9g,\"val_acc\":%.9g}",
                 winner + 1, w->lr, w->batch, w->epochs, w->val_loss, w->val_acc);
        if ((err = fed_meta_set(s.meta, META_TRAINING, js))) goto done;
        if ((err = fed_model_save(best, c->out, s.meta))) goto done;
        printf("tune: wrote the best trial's model to %s\n", c->out);
    }
done:
    fed_eval_result_free(&ev);
    fed_free(trials);
    fed_model_destroy(&work);
    fed_model_destroy(&best);
    session_free(&s);
    return err;
}

/* ---- entry points --------------------------------------------------------------------- */

static fed_err run_train_cmd(const void *cfg) {
    return run_train(cfg, "train");
}

static fed_err run_pretrain_cmd(const void *cfg) {
    return run_train(cfg, "pretrain");
}

static fed_err run_tune_cmd(const void *cfg) {
    return run_tune(cfg);
}

int cmd_train(int argc, char **argv) {
    train_cfg c;
    return cli_run(&train_table, &c, sizeof c, argc, argv, run_train_cmd);
}

int cmd_pretrain(int argc, char **argv) {
    train_cfg c;
    return cli_run(&pretrain_table, &c, sizeof c, argc, argv, run_pretrain_cmd);
}

int cmd_tune(int argc, char **argv) {
    train_cfg c;
    return cli_run(&tune_table, &c, sizeof c, argc, argv, run_tune_cmd);
}
