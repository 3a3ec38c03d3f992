/* `fedtune eval`: a model on a labeled data file, transformed as the model was trained
 * (its class names and standardisation from the file's metadata): loss, accuracy,
 * macro-F1, per-class precision/recall/F1 and the confusion matrix, as text or JSON; of a
 * language model, the next-token loss, perplexity and accuracy per predicted token. */
#include "cli/commands.h"
#include "cli/prep.h"
#include "core/alloc.h"
#include "core/blas.h"
#include "training/fit.h"
#include "core/json.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct eval_cfg {
    const char *model; /* model file */
    const char *arch;  /* architecture of a weights-only model file */
    int allow_extra;   /* ignore tensors the architecture lacks */
    const char *data;  /* labeled data */
    data_cfg dc;       /* how to read it */
    size_t batch;      /* evaluation batch */
    int json;          /* print JSON instead of text */
    size_t threads;    /* OpenBLAS threads */
} eval_cfg;

#define F(field) offsetof(eval_cfg, field)
static const opt_spec eval_opts[] = {
    {"model", OPT_STRING, NULL, 1, 0, NULL, F(model), "model file (.safetensors)"},
    {"arch", OPT_STRING, NULL, 1, 0, NULL, F(arch),
     "architecture of a weights-only --model (e.g. exported from PyTorch)"},
    {"allow-extra", OPT_BOOL, "false", 1, 0, NULL, F(allow_extra),
     "ignore tensors of --model that the architecture lacks"},
    {"data", OPT_STRING, NULL, 1, 0, NULL, F(data), "labeled data (CSV, sklearn CSV, IDX)"},
    DATA_OPTS(F(dc)),
    TEXT_OPTS(F(dc)),
    {"batch", OPT_SIZE, "256", 1, 65536, NULL, F(batch), "examples per forward pass"},
    {"json", OPT_BOOL, "false", 1, 0, NULL, F(json), "print the report as one JSON object"},
    {"threads", OPT_SIZE, "1", 1, 256, NULL, F(threads), "OpenBLAS threads"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table eval_table = {
    "eval",
    "Evaluate a model on labeled data: loss, accuracy, macro-F1, per-class precision and "
    "recall, confusion matrix.",
    eval_opts, NULL};

/* Name of class k: the data's names if it has them, else the number. */
static const char *class_name(const fed_dataset *d, size_t k, char *buf, size_t len) {
    if (d->class_names && k < d->num_classes) return d->class_names[k];
    snprintf(buf, len, "%zu", k);
    return buf;
}

static fed_err print_json(const eval_cfg *c, const fed_dataset *d, const fed_eval_result *r) {
    fed_json_hooks();
    cJSON *o = cJSON_CreateObject();
    cJSON *classes = cJSON_CreateArray(), *conf = cJSON_CreateArray();
    bool ok = o && classes && conf;
    ok = ok && cJSON_AddStringToObject(o, "model", c->model);
    ok = ok && cJSON_AddStringToObject(o, "data", c->data);
    ok = ok && cJSON_AddNumberToObject(o, "examples", (double)r->n);
    ok = ok && cJSON_AddNumberToObject(o, "loss", r->loss);
    ok = ok && cJSON_AddNumberToObject(o, "accuracy", r->accuracy);
    if (!isnan(r->perplexity)) { /* a language model: no classes */
        ok = ok && cJSON_AddNumberToObject(o, "tokens", (double)r->predictions);
        ok = ok && cJSON_AddNumberToObject(o, "ppl", r->perplexity);
    } else {
        ok = ok && cJSON_AddNumberToObject(o, "macro_f1", r->macro_f1);
    }
    const size_t K = r->num_classes;
    for (size_t k = 0; ok && k < K; k++) {
        char buf[32];
        cJSON *e = cJSON_CreateObject();
        ok = e && cJSON_AddItemToArray(classes, e);
        if (!ok) {
            cJSON_Delete(e);
            break;
        }
        ok = cJSON_AddStringToObject(e, "class", class_name(d, k, buf, sizeof buf)) &&
             cJSON_AddNumberToObject(e, "precision", r->precision[k]) &&
             cJSON_AddNumberToObject(e, "recall", r->recall[k]) &&
             cJSON_AddNumberToObject(e, "f1", r->f1[k]) &&
             cJSON_AddNumberToObject(e, "support", (double)r->support[k]);
        cJSON *row = cJSON_CreateArray();
        ok = ok && row && cJSON_AddItemToArray(conf, row);
        if (!ok) {
            cJSON_Delete(row);
            break;
        }
        for (size_t j = 0; ok && j < K; j++) {
            cJSON *v = cJSON_CreateNumber((double)r->confusion[k * K + j]);
            ok = v && cJSON_AddItemToArray(row, v);
            if (!ok) cJSON_Delete(v);
        }
    }
    if (ok && isnan(r->perplexity)) {
        ok = cJSON_AddItemToObject(o, "classes", classes);
        if (ok) classes = NULL;
    }
    if (ok && isnan(r->perplexity)) {
        ok = cJSON_AddItemToObject(o, "confusion", conf);
        if (ok) conf = NULL;
    }
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(classes);
    cJSON_Delete(conf);
    cJSON_Delete(o);
    if (!text) return FED_ENOMEM;
    printf("%s\n", text);
    fed_free(text);
    return FED_OK;
}

/* Class k occurs among the labels or the predictions (the classes scikit-learn's
 * classification_report lists); the others are left out of the text report. */
static bool present(const fed_eval_result *r, size_t k) {
    size_t predicted = 0;
    for (size_t j = 0; j < r->num_classes; j++) predicted += r->confusion[j * r->num_classes + k];
    return r->support[k] > 0 || predicted > 0;
}

static void print_text(const eval_cfg *c, const fed_dataset *d, const fed_eval_result *r) {
    if (!isnan(r->perplexity)) {
        printf("eval: %s on %s (%zu texts, %zu predicted tokens)\n", c->model, c->data, r->n,
               r->predictions);
        printf("loss %.4f  ppl %.2f  next-token accuracy %.2f%%\n", r->loss, r->perplexity,
               100.0 * r->accuracy);
        return;
    }
    printf("eval: %s on %s (%zu examples)\n", c->model, c->data, r->n);
    printf("loss %.4f  accuracy %.2f%%  macro-F1 %.4f\n\n", r->loss, 100.0 * r->accuracy,
           r->macro_f1);
    const size_t K = r->num_classes;
    size_t shown = 0;
    printf("%-16s %9s %9s %9s %8s\n", "class", "precision", "recall", "f1", "support");
    for (size_t k = 0; k < K; k++) {
        if (!present(r, k)) continue;
        char buf[32];
        printf("%-16.16s %9.4f %9.4f %9.4f %8zu\n", class_name(d, k, buf, sizeof buf),
               r->precision[k], r->recall[k], r->f1[k], r->support[k]);
        shown++;
    }
    if (shown < K)
        printf("(%zu of the model's %zu classes neither occur nor are predicted)\n", K - shown, K);
    if (shown > 32) {
        printf("\n(confusion matrix of %zu classes: see --json)\n", shown);
        return;
    }
    printf("\nconfusion matrix (rows: true class, columns: predicted)\n%8s", "");
    for (size_t j = 0; j < K; j++)
        if (present(r, j)) printf(" %6zu", j);
    printf("\n");
    for (size_t k = 0; k < K; k++) {
        if (!present(r, k)) continue;
        printf("%8zu", k);
        for (size_t j = 0; j < K; j++)
            if (present(r, j)) printf(" %6zu", r->confusion[k * K + j]);
        printf("\n");
    }
}

static fed_err run_eval(const void *cfg) {
    const eval_cfg *c = cfg;
    if (!c->model) return fed_errorf(FED_EINVAL, "--model is required");
    if (!c->data) return fed_errorf(FED_EINVAL, "--data is required");
    fed_model *m = NULL;
    fed_meta *meta = NULL;
    fed_dataset *d = NULL;
    fed_eval_result r;
    memset(&r, 0, sizeof r);
    prep_text pt;
    memset(&pt, 0, sizeof pt);
    fed_err err = prep_load_model(&m, &meta, c->model, c->arch, c->allow_extra != 0);
    if (err) goto done;
    const char *classes = fed_meta_get(meta, META_CLASSES);
    if ((err = prep_text_open(&pt, &c->dc, meta, m))) goto done;
    if ((err = prep_load_data(&d, c->data, &c->dc, classes, &pt))) goto done;
    if (pt.loaded && fed_meta_get(meta, META_STANDARDIZE)) {
        err = fed_errorf(FED_EINVAL,
                         "%s is text data, but %s standardises its inputs (%s): token ids must "
                         "reach it unchanged",
                         c->data, c->model, META_STANDARDIZE);
        goto done;
    }
    if (!pt.loaded && (err = prep_apply_meta_std(meta, d))) {
        err = fed_errprefix(err, "%s: metadata %s", c->model, META_STANDARDIZE);
        goto done;
    }
    fed_blas_set_threads((int)c->threads);
    fed_loss_config loss = {fed_loss_for_model(m), 0.0f};
    if ((err = fed_evaluate(m, d, c->batch, &loss, &r))) goto done;
    if (c->json) {
        err = print_json(c, d, &r);
    } else {
        if (pt.lm)
            printf("eval: text, %zu documents, %zu tokens: %zu windows of %zu token ids\n",
                   pt.lm_stats.documents, pt.lm_stats.tokens, pt.lm_stats.windows, pt.len);
        else if (pt.loaded)
            printf("eval: text, %zu texts (%zu empty dropped), %zu token ids per example, %.2f%% "
                   "unknown, %zu truncated\n",
                   pt.stats.rows, pt.stats.dropped_empty, pt.len,
                   pt.stats.tokens ? 100.0 * (double)pt.stats.unknown / (double)pt.stats.tokens
                                   : 0.0,
                   pt.stats.truncated);
        print_text(c, d, &r);
    }
done:
    prep_text_close(&pt);
    fed_eval_result_free(&r);
    fed_data_destroy(&d);
    fed_meta_destroy(&meta);
    fed_model_destroy(&m);
    return err;
}

int cmd_eval(int argc, char **argv) {
    eval_cfg c;
    return cli_run(&eval_table, &c, sizeof c, argc, argv, run_eval);
}
